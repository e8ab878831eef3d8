//! The `vtid` command line: argument definitions and one handler per subcommand.
//!
//! `main.rs` only parses and dispatches. Handlers return the process exit code so they stay
//! testable; the daemon-facing ones (`show`, `up`, `down`, `reload`, `debug`) are placeholders
//! until the daemon exists, and will become `control::request` calls.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, LoadOptions};
use crate::control::{ClearTarget, CryptoView, RekeyTarget, Request, Response, SaSelector, Target};

/// vtid: route-based IPsec VPN agent (IKEv2, XFRM, VTIs).
#[derive(Debug, Parser)]
#[command(name = "vtid", version, about, propagate_version = true)]
pub struct Cli {
    /// Control socket of the running daemon.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/run/vtid/vtid.sock"
    )]
    pub socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file.
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Stay in the foreground and log to stderr (systemd runs it this way too).
        #[arg(long)]
        foreground: bool,
        /// Leave tunnels and SAs in the kernel when stopping (traffic keeps flowing until
        /// the SAs expire).
        #[arg(long)]
        keep_on_exit: bool,
    },
    /// Check a configuration file and report every error; changes nothing.
    Check {
        /// Configuration file.
        #[arg(value_name = "CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Do not read key and certificate files (check a file written for another machine).
        #[arg(long)]
        no_files: bool,
        /// The other end's configuration: also check that the two ends' crypto maps mirror
        /// each other (ACLs, transform sets, peers; seed F-B7).
        #[arg(long, value_name = "OTHER_FILE")]
        peer_config: Option<PathBuf>,
    },
    /// Show runtime state.
    Show {
        /// What to show.
        #[command(subcommand)]
        what: ShowWhat,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Delete SAs with their peers, in IOS's words (`clear crypto ...`).
    Clear {
        /// What to clear.
        #[command(subcommand)]
        what: ClearWhat,
    },
    /// Rekey one IKE SA or Child SA now, as VICI's `rekey` (make-before-break: the new SA
    /// is installed before the old one is deleted, RFC 7296 §1.3.2, §2.8).
    Rekey {
        /// Which SA.
        #[command(subcommand)]
        what: RekeyWhat,
    },
    /// Bring a tunnel up now.
    Up(Target),
    /// Take a tunnel down (delete its SAs; it stays configured and on-demand traffic does
    /// not restart it until `vtid up`), or disconnect one dynamic VTI peer.
    Down(Target),
    /// Re-read the configuration and apply only what changed.
    Reload,
    /// Restart the daemon without dropping a tunnel: it saves its IKE SAs, leaves the kernel
    /// as it is and re-executes its binary (an upgraded one after a package upgrade), which
    /// adopts them. Waits until the new process answers.
    Restart,
    /// Translate a Cisco IOS running-config into vtid configuration (TOML on stdout, a
    /// remark on stderr for each line not imported).
    #[command(name = "import-ios")]
    ImportIos {
        /// The IOS configuration (`show running-config` output, or the crypto and tunnel
        /// part of one); `-` reads standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Linux name of an IOS interface, e.g. `--map Gi0/0=eth0` (repeatable; IOS
        /// abbreviations are understood).
        #[arg(long = "map", value_name = "IOS=LINUX")]
        maps: Vec<String>,
        /// Write the pre-shared keys found (clear or type 7) into files in this directory
        /// (created 0700, files 0600; an existing different file is never overwritten). The
        /// TOML names files in this directory; without it, /etc/vtid/psk is named and no key
        /// is written.
        #[arg(long, value_name = "DIR")]
        key_dir: Option<PathBuf>,
        /// Convert IKEv1 (ISAKMP policies and profiles) to IKEv2 with the same algorithms.
        /// Without it IKEv1 stays IKEv1 (`version = 1`), so the routers that keep the old
        /// configuration still talk to the import.
        #[arg(long)]
        ikev2: bool,
    },
    /// Conditional debugging for one peer, SPI or tunnel.
    Debug {
        /// What `value` is.
        kind: DebugKind,
        /// The peer address, SPI (hex) or tunnel name.
        value: String,
        /// Turn it off again.
        #[arg(long)]
        off: bool,
    },
}

/// `vtid show` targets.
#[derive(Clone, Debug, Subcommand)]
pub enum ShowWhat {
    /// IKE sessions (`show crypto session`).
    Sessions,
    /// Child SAs with counters and lifetimes (`show crypto ipsec sa`).
    Sa,
    /// Tunnel interfaces (`show interface tunnel`).
    Tunnels,
    /// IOS's `show crypto ...` commands, laid out as IOS prints them.
    Crypto {
        /// Which view.
        #[command(subcommand)]
        what: CryptoWhat,
    },
}

/// `vtid show crypto ...`.
#[derive(Clone, Debug, Subcommand)]
pub enum CryptoWhat {
    /// `isakmp sa`: IKEv1 (ISAKMP) SAs of profiles with `version = 1`, as IOS lists them.
    Isakmp {
        /// `sa`.
        #[command(subcommand)]
        what: IsakmpWhat,
    },
    /// `ikev2 sa` (IKE SAs: addresses, VRFs, status, negotiated algorithms, life/active
    /// time) or `ikev2 proposal` (the configured IKEv2 proposals).
    Ikev2 {
        /// `sa` or `proposal`.
        #[command(subcommand)]
        what: Ikev2What,
    },
    /// `ipsec sa [peer ADDR | interface NAME]` (Child SAs with kernel counters),
    /// `ipsec transform-set`, `ipsec profile` (the configuration).
    Ipsec {
        /// `sa`, `transform-set` or `profile`.
        #[command(subcommand)]
        what: IpsecWhat,
    },
    /// `session [detail]`: each peer's session, its IKE SA and IPsec flows; `detail` adds the
    /// negotiated algorithms, identities, PFS group, per-direction counters and errors.
    Session {
        /// `detail`.
        #[command(subcommand)]
        detail: Option<Detail>,
    },
    /// `map`: vtid has no crypto maps; lists the entries IOS would create internally for
    /// each tunnel's protection (`Tunnel0-head-0`), from its IPsec profile.
    Map,
    /// `debug-condition`: the conditions set with `vtid debug`.
    DebugCondition,
}

/// `isakmp ...`.
#[derive(Clone, Copy, Debug, Subcommand)]
pub enum IsakmpWhat {
    /// IKEv1 SAs.
    Sa,
}

/// `ikev2 ...`.
#[derive(Clone, Copy, Debug, Subcommand)]
pub enum Ikev2What {
    /// IKEv2 SAs.
    Sa,
    /// Configured IKEv2 proposals.
    Proposal,
}

/// `ipsec ...`.
#[derive(Clone, Debug, Subcommand)]
pub enum IpsecWhat {
    /// Child SAs, all or those of one peer or interface.
    Sa {
        /// `peer ADDR` or `interface NAME`.
        #[command(subcommand)]
        filter: Option<SaFilter>,
    },
    /// Configured transform sets.
    TransformSet,
    /// Configured IPsec profiles.
    Profile,
}

/// `ipsec sa` filters.
#[derive(Clone, Debug, Subcommand)]
pub enum SaFilter {
    /// The Child SAs with one peer.
    Peer {
        /// The peer's underlay address.
        addr: std::net::IpAddr,
    },
    /// The Child SAs on one tunnel interface.
    Interface {
        /// The interface (e.g. Tunnel0, or a clone's name).
        name: String,
    },
}

/// The `detail` keyword.
#[derive(Clone, Copy, Debug, Subcommand)]
pub enum Detail {
    /// More per session.
    Detail,
}

/// `vtid clear ...`.
#[derive(Clone, Debug, Subcommand)]
pub enum ClearWhat {
    /// IOS's `clear crypto ...`.
    Crypto {
        /// What to clear.
        #[command(subcommand)]
        what: ClearCrypto,
    },
}

/// `vtid clear crypto ...`. A selector that matches nothing is an error and changes nothing.
#[derive(Clone, Debug, Subcommand)]
pub enum ClearCrypto {
    /// Delete the IKE SA of every session, or of the sessions with one peer, and with it
    /// their Child SAs; the peer is told (INFORMATIONAL Delete, RFC 7296 §1.4.1). A static
    /// tunnel with `initiate = true` negotiates again at once (new IKE SA, new Child SA);
    /// others wait for their peer (or for `vtid up`).
    Session {
        /// `remote ADDR`.
        #[command(subcommand)]
        remote: Option<Remote>,
    },
    /// Delete Child SAs only (all, one peer's, or the one with an SPI); the peer is told and
    /// the IKE SA stays. An initiating static tunnel negotiates a new Child SA on it at once.
    Sa {
        /// `peer ADDR` or `spi SPI`.
        #[command(subcommand)]
        filter: Option<ClearSaFilter>,
    },
    /// `isakmp [CONN-ID]`: delete the ISAKMP (IKEv1) SAs, all or the one `show crypto isakmp
    /// sa` lists with this conn-id; the peer is told (ISAKMP Delete, RFC 2408 §3.15). Unlike
    /// IOS, their IPsec SAs go with them (vtid keeps an IKEv1 Child SA only under its ISAKMP
    /// SA); an initiating static tunnel negotiates again at once.
    Isakmp {
        /// IOS's conn-id (1001 and up).
        conn_id: Option<u64>,
    },
    /// `ikev2 sa [remote ADDR]`: IKEv2 has nothing else, so this is `clear crypto session`
    /// (deleting an IKE SA deletes its Child SAs, RFC 7296 §1.4.1).
    Ikev2 {
        /// `sa`.
        #[command(subcommand)]
        what: ClearIkev2,
    },
}

/// `clear crypto ikev2 ...`.
#[derive(Clone, Debug, Subcommand)]
pub enum ClearIkev2 {
    /// IKEv2 SAs.
    Sa {
        /// `remote ADDR`.
        #[command(subcommand)]
        remote: Option<Remote>,
    },
}

/// `remote ADDR`.
#[derive(Clone, Debug, Subcommand)]
pub enum Remote {
    /// Only the sessions with this peer.
    Remote {
        /// The peer's underlay address.
        addr: std::net::IpAddr,
    },
}

/// `clear crypto sa` filters.
#[derive(Clone, Debug, Subcommand)]
pub enum ClearSaFilter {
    /// The Child SAs with one peer.
    Peer {
        /// The peer's underlay address.
        addr: std::net::IpAddr,
    },
    /// The Child SA one of whose SAs (inbound or outbound) has this SPI.
    Spi {
        /// The SPI in hex, as `show crypto ipsec sa` and `ip xfrm state` show it
        /// (`0xC0FFEE01` or `c0ffee01`).
        #[arg(value_parser = parse_spi)]
        spi: u32,
    },
}

/// `vtid rekey ...`.
#[derive(Clone, Debug, Subcommand)]
pub enum RekeyWhat {
    /// Rekey the IKE SA (CREATE_CHILD_SA, RFC 7296 §1.3.2): new IKE SPIs and keys, the Child
    /// SAs move over unchanged.
    Ike {
        /// `tunnel NAME` or `peer ADDR`.
        #[command(subcommand)]
        by: IkeSelector,
    },
    /// Rekey Child SAs (RFC 7296 §1.3.3): new SPIs and keys, the IKE SA stays.
    Child {
        /// `tunnel NAME`, `peer ADDR` or `spi SPI`.
        #[command(subcommand)]
        by: ChildSelector,
    },
}

/// Which IKE SA.
#[derive(Clone, Debug, Subcommand)]
pub enum IkeSelector {
    /// The IKE SA of a tunnel (static, or a dynamic VTI clone).
    Tunnel {
        /// Tunnel name.
        name: String,
    },
    /// The IKE SA with a peer.
    Peer {
        /// The peer's underlay address.
        addr: std::net::IpAddr,
    },
}

/// Which Child SAs.
#[derive(Clone, Debug, Subcommand)]
pub enum ChildSelector {
    /// Every Child SA of a tunnel.
    Tunnel {
        /// Tunnel name.
        name: String,
    },
    /// Every Child SA with a peer.
    Peer {
        /// The peer's underlay address.
        addr: std::net::IpAddr,
    },
    /// The Child SA one of whose SAs has this SPI.
    Spi {
        /// The SPI in hex (`0xC0FFEE01` or `c0ffee01`).
        #[arg(value_parser = parse_spi)]
        spi: u32,
    },
}

/// An SPI as vtid shows it everywhere: hex, with or without `0x`.
fn parse_spi(s: &str) -> Result<u32, String> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    match u32::from_str_radix(h, 16) {
        Ok(0) => Err("SPI 0 is never an SA's (RFC 4303 §2.1)".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!(
            "{s:?} is not a 32-bit hex SPI (e.g. 0xC0FFEE01, as `show crypto ipsec sa` shows it)"
        )),
    }
}

impl CryptoWhat {
    /// The request's view.
    pub fn view(&self) -> CryptoView {
        match self {
            Self::Isakmp { .. } => CryptoView::IsakmpSa,
            Self::Ikev2 {
                what: Ikev2What::Sa,
            } => CryptoView::Ikev2Sa,
            Self::Ikev2 {
                what: Ikev2What::Proposal,
            } => CryptoView::Ikev2Proposal,
            Self::Ipsec {
                what: IpsecWhat::Sa { filter },
            } => CryptoView::IpsecSa {
                peer: match filter {
                    Some(SaFilter::Peer { addr }) => Some(*addr),
                    _ => None,
                },
                interface: match filter {
                    Some(SaFilter::Interface { name }) => Some(name.clone()),
                    _ => None,
                },
            },
            Self::Ipsec {
                what: IpsecWhat::TransformSet,
            } => CryptoView::TransformSet,
            Self::Ipsec {
                what: IpsecWhat::Profile,
            } => CryptoView::IpsecProfile,
            Self::Session { detail } => CryptoView::Session {
                detail: detail.is_some(),
            },
            Self::Map => CryptoView::Map,
            Self::DebugCondition => CryptoView::DebugCondition,
        }
    }
}

impl ClearCrypto {
    /// The request's target.
    pub fn target(&self) -> ClearTarget {
        match self {
            Self::Session { remote }
            | Self::Ikev2 {
                what: ClearIkev2::Sa { remote },
            } => ClearTarget::Session {
                remote: remote.as_ref().map(|Remote::Remote { addr }| *addr),
            },
            Self::Isakmp { conn_id } => ClearTarget::Isakmp { conn_id: *conn_id },
            Self::Sa { filter } => ClearTarget::Sa {
                peer: match filter {
                    Some(ClearSaFilter::Peer { addr }) => Some(*addr),
                    _ => None,
                },
                spi: match filter {
                    Some(ClearSaFilter::Spi { spi }) => Some(*spi),
                    _ => None,
                },
            },
        }
    }
}

impl RekeyWhat {
    /// The request's target.
    pub fn target(&self) -> RekeyTarget {
        match self {
            Self::Ike { by } => RekeyTarget::Ike {
                target: match by {
                    IkeSelector::Tunnel { name } => SaSelector::Tunnel(name.clone()),
                    IkeSelector::Peer { addr } => SaSelector::Peer(*addr),
                },
            },
            Self::Child { by } => RekeyTarget::Child {
                target: match by {
                    ChildSelector::Tunnel { name } => SaSelector::Tunnel(name.clone()),
                    ChildSelector::Peer { addr } => SaSelector::Peer(*addr),
                    ChildSelector::Spi { spi } => SaSelector::Spi(*spi),
                },
            },
        }
    }
}

/// `vtid debug` selectors (`debug crypto condition ...`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DebugKind {
    /// A peer's underlay address.
    Peer,
    /// An SA by SPI.
    Spi,
    /// A tunnel by name.
    Tunnel,
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check {
            config,
            no_files,
            peer_config: None,
        } => Ok(check(&config, no_files)),
        Command::Check {
            config,
            no_files,
            peer_config: Some(other),
        } => Ok(check_pair(&config, &other, no_files)),
        Command::Run {
            config,
            keep_on_exit,
            ..
        } => run(config, cli.socket, keep_on_exit),
        Command::Show { what, json } => {
            // The request, and how its answer is printed without --json: the older views as
            // vtid's tables, `crypto ...` as IOS lays it out.
            let (req, view) = match &what {
                ShowWhat::Sessions => (Request::ShowSessions, None),
                ShowWhat::Sa => (Request::ShowSa, None),
                ShowWhat::Tunnels => (Request::ShowTunnels, None),
                ShowWhat::Crypto { what } => {
                    let view = what.view();
                    (Request::ShowCrypto { view: view.clone() }, Some(view))
                }
            };
            let body = ask(&cli.socket, &req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else if let Some(view) = view {
                print!("{}", crate::ios::render(&view, &body));
            } else {
                print!("{}", render(&what, &body));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportIos {
            file,
            maps,
            key_dir,
            ikev2,
        } => import_ios(&file, &maps, key_dir.as_deref(), ikev2),
        Command::Clear {
            what: ClearWhat::Crypto { what },
        } => print_ok(ask(
            &cli.socket,
            &Request::ClearCrypto {
                what: what.target(),
            },
        )?),
        Command::Rekey { what } => print_ok(ask(
            &cli.socket,
            &Request::Rekey {
                what: what.target(),
            },
        )?),
        Command::Up(t) => print_ok(ask(&cli.socket, &Request::Up(t))?),
        Command::Down(t) => print_ok(ask(&cli.socket, &Request::Down(t))?),
        Command::Reload => print_ok(ask(&cli.socket, &Request::Reload)?),
        Command::Restart => restart(&cli.socket),
        Command::Debug { kind, value, off } => {
            let kind = match kind {
                DebugKind::Peer => "peer",
                DebugKind::Spi => "spi",
                DebugKind::Tunnel => "tunnel",
            };
            let req = Request::Debug {
                kind: kind.into(),
                value,
                on: !off,
            };
            print_ok(ask(&cli.socket, &req)?)
        }
    }
}

fn run(config: PathBuf, socket: PathBuf, keep_on_exit: bool) -> anyhow::Result<ExitCode> {
    // RUST_LOG plus the `vtid debug` conditions (crate::debug).
    crate::debug::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let opts = crate::daemon::RunOptions {
        config,
        socket: Some(socket),
        keep_on_exit,
    };
    rt.block_on(crate::daemon::run(opts))?;
    Ok(ExitCode::SUCCESS)
}

/// `vtid restart`: asks for it, then waits for the new process to answer on the socket
/// (the old one removes the socket before it re-executes; a request only the new one can
/// answer succeeds).
fn restart(socket: &Path) -> anyhow::Result<ExitCode> {
    let saved = ask(socket, &Request::Restart)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let short = std::time::Duration::from_secs(5);
        if let Ok(Response::Ok(_)) = crate::control::request(socket, &Request::ShowTunnels, short) {
            break;
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the restarted daemon did not answer on {} within 60 s",
                socket.display()
            );
        }
    }
    print_ok(saved)
}

/// Sends one request to the daemon; a daemon-side error becomes this command's error.
fn ask(socket: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    match crate::control::request(socket, req, std::time::Duration::from_secs(30))? {
        Response::Ok(v) => Ok(v),
        Response::Error { kind, message } => anyhow::bail!("{kind}: {message}"),
    }
}

fn print_ok(v: serde_json::Value) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string(&v)?);
    Ok(ExitCode::SUCCESS)
}

/// Plain-text tables for people; `--json` gives the same data for programs.
fn render(what: &ShowWhat, body: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let rows = body.as_array().cloned().unwrap_or_default();
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    match what {
        ShowWhat::Sessions => {
            let _ = writeln!(
                out,
                "{:<12} {:<3} {:<14} {:<22} {:<22} {:>8} {:>6}",
                "TUNNEL", "VER", "STATE", "LOCAL", "REMOTE", "UPTIME", "CHILD"
            );
            for r in &rows {
                let _ = writeln!(
                    out,
                    "{:<12} {:<3} {:<14} {:<22} {:<22} {:>8} {:>6}",
                    s(&r["tunnel"]),
                    format!("v{}", s(&r["version"])),
                    s(&r["state"]),
                    s(&r["local"]),
                    s(&r["remote"]),
                    s(&r["uptime_secs"]),
                    s(&r["child_sas"])
                );
            }
        }
        ShowWhat::Sa => {
            for r in &rows {
                if r["crypto_map"].is_string() {
                    let _ = writeln!(
                        out,
                        "crypto map: {} {}  peer: {}",
                        s(&r["crypto_map"]),
                        s(&r["seq"]),
                        s(&r["peer"])
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "interface: {}  peer: {}",
                        s(&r["tunnel"]),
                        s(&r["peer"])
                    );
                }
                let _ = writeln!(
                    out,
                    "  transform: {}, {}, plaintext mtu {}, path mtu {}",
                    s(&r["transform"]),
                    s(&r["mode"]),
                    s(&r["plaintext_mtu"]),
                    s(&r["path_mtu"])
                );
                if r["udp_encap"].is_object() {
                    let _ = writeln!(
                        out,
                        "  udp encap: local port {}, remote port {}",
                        s(&r["udp_encap"]["local_port"]),
                        s(&r["udp_encap"]["remote_port"])
                    );
                }
                let _ = writeln!(
                    out,
                    "  inbound spi 0x{}: #pkts decaps {}, bytes {}",
                    s(&r["spi_in"]),
                    s(&r["in"]["packets"]),
                    s(&r["in"]["bytes"])
                );
                let _ = writeln!(
                    out,
                    "  outbound spi 0x{}: #pkts encaps {}, bytes {}",
                    s(&r["spi_out"]),
                    s(&r["out"]["packets"]),
                    s(&r["out"]["bytes"])
                );
                let _ = writeln!(
                    out,
                    "  errors: replay {}, integrity {}",
                    s(&r["replay_errors"]),
                    s(&r["integrity_errors"])
                );
                let _ = writeln!(
                    out,
                    "  remaining key lifetime (k/sec): ({}/{})",
                    s(&r["lifetime_remaining_kb"]),
                    s(&r["lifetime_remaining_secs"])
                );
            }
        }
        // Rendered by `crate::ios`.
        ShowWhat::Crypto { .. } => {}
        ShowWhat::Tunnels => {
            let _ = writeln!(
                out,
                "{:<12} {:<6} {:>10} {:<16} {:<16} {:<20} {:>5} {:<5} {:<5} WHY",
                "NAME", "MODE", "IF_ID", "LOCAL", "REMOTE", "ADDRESS", "MTU", "ADMIN", "LINE",
            );
            for r in &rows {
                let _ = writeln!(
                    out,
                    "{:<12} {:<6} {:>10} {:<16} {:<16} {:<20} {:>5} {:<5} {:<5} {}",
                    s(&r["name"]),
                    s(&r["mode"]),
                    s(&r["if_id"]),
                    s(&r["local"]),
                    s(&r["remote"]),
                    s(&r["address"]),
                    s(&r["mtu"]),
                    // A clone has no admin state of its own.
                    r.get("admin").map_or("up".into(), s),
                    s(&r["state"]),
                    r.get("line_reason").map_or("-".into(), s)
                );
            }
        }
    }
    out
}

/// `vtid import-ios`: the TOML on stdout; on stderr one `FILE:LINE: kind: text` line per
/// line not imported and a summary. Exits 0 when the input held IOS configuration.
fn import_ios(
    file: &Path,
    maps: &[String],
    key_dir: Option<&Path>,
    ikev2: bool,
) -> anyhow::Result<ExitCode> {
    use crate::import_ios::{Options, Why, import, parse_map};
    use anyhow::Context as _;
    let src = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let mut opts = Options {
        input_name: file.display().to_string(),
        ikev2,
        ..Options::default()
    };
    for m in maps {
        opts.maps.push(parse_map(m)?);
    }
    if let Some(d) = key_dir {
        opts.key_dir = d.to_owned();
    }
    let imported = import(&src, &opts).with_context(|| format!("{}", file.display()))?;
    if let Some(dir) = key_dir {
        write_keys(dir, &imported.keys)?;
    }
    print!("{}", imported.toml);
    let shown = file.display();
    let mut counts = std::collections::BTreeMap::new();
    for n in &imported.notes {
        *counts.entry(n.why).or_insert(0usize) += 1;
        if matches!(n.why, Why::Unsupported | Why::Unknown) {
            eprintln!("{shown}:{}: {}: {}", n.line, n.why, n.text);
        }
    }
    let count = |w| counts.get(&w).copied().unwrap_or(0);
    eprintln!(
        "{shown}: imported; {} decision(s) to read in the output, {} line(s) not supported, \
         {} not understood, {} dropped as not needed on Linux",
        count(Why::Decided),
        count(Why::Unsupported),
        count(Why::Unknown),
        count(Why::Dropped)
    );
    match key_dir {
        Some(d) => eprintln!(
            "{shown}: {} key file(s) in {}",
            imported.keys.len(),
            d.display()
        ),
        None if !imported.keys.is_empty() => eprintln!(
            "{shown}: {} key(s) found and not written: run again with --key-dir /etc/vtid/psk \
             (as root) to write them where the output expects them",
            imported.keys.len()
        ),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes each key into its file, mode 0600, in a directory made 0700 if it is new. A file
/// that exists with other content is an error: a key is never silently replaced.
fn write_keys(dir: &Path, keys: &[crate::import_ios::KeyFile]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    for k in keys {
        let content = zeroize::Zeroizing::new(format!("{}\n", k.key.as_str()));
        if let Ok(old) = std::fs::read(&k.path).map(zeroize::Zeroizing::new) {
            anyhow::ensure!(
                old.as_slice() == content.as_bytes(),
                "{} exists with another key; not overwritten (move it away first)",
                k.path.display()
            );
            continue;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&k.path)
            .with_context(|| format!("creating {}", k.path.display()))?;
        f.write_all(content.as_bytes())
            .with_context(|| format!("writing {}", k.path.display()))?;
    }
    Ok(())
}

/// `vtid check`: prints `PATH: ok (summary)` and exits 0, or every error (one per line,
/// `PATH:LINE:COLUMN: error: ...`) on stderr and exits 1.
pub fn check(path: &Path, no_files: bool) -> ExitCode {
    let opts = LoadOptions {
        read_files: !no_files,
        ..LoadOptions::default()
    };
    match Config::load_with(path, &opts) {
        // Loading runs every check `vtid run` makes before it touches the kernel (certificate
        // and key files included), so what passes here starts, unless an interface it names
        // has no address at that moment.
        Ok(c) => {
            // A stale CRL is no error (it stays in force), but the operator must replace it.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for (_, line) in config::crl_report(&c, now).iter().filter(|(s, _)| *s) {
                eprintln!("{}: warning: {line}", path.display());
            }
            for line in c.warnings() {
                eprintln!("{}: warning: {line}", path.display());
            }
            println!("{}: ok ({})", path.display(), c.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.len();
            eprintln!(
                "{}: {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// `vtid check FILE --peer-config OTHER`: both files checked, then FILE's crypto map entries
/// toward OTHER compared with OTHER's entries toward FILE. Warnings (mirrors that work only
/// when one end initiates) keep exit 0; errors (flows that never negotiate) exit 1.
pub fn check_pair(path: &Path, other: &Path, no_files: bool) -> ExitCode {
    let opts = LoadOptions {
        read_files: !no_files,
        ..LoadOptions::default()
    };
    let mine = check(path, no_files);
    let theirs = check(other, no_files);
    if mine != ExitCode::SUCCESS || theirs != ExitCode::SUCCESS {
        return ExitCode::FAILURE;
    }
    let (Ok(a), Ok(b)) = (
        Config::load_with(path, &opts),
        Config::load_with(other, &opts),
    ) else {
        return ExitCode::FAILURE;
    };
    let findings = crate::mirror::compare(&a, &b);
    let shown = path.display();
    let mut errors = 0;
    for f in &findings {
        let what = match f.severity {
            crate::mirror::Severity::Note => "note",
            crate::mirror::Severity::Warning => "warning",
            crate::mirror::Severity::Error => {
                errors += 1;
                "error"
            }
        };
        eprintln!("{shown}: {what}: {}", f.text);
    }
    if errors > 0 {
        eprintln!(
            "{shown}: {errors} error{} against {}",
            if errors == 1 { "" } else { "s" },
            other.display()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{shown}: crypto maps mirror {} ({} warning(s))",
        other.display(),
        findings
            .iter()
            .filter(|f| f.severity == crate::mirror::Severity::Warning)
            .count()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn show_json_after_target() {
        let cli = Cli::try_parse_from(["vtid", "show", "sessions", "--json"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Show {
                what: ShowWhat::Sessions,
                json: true
            }
        ));
        assert_eq!(cli.socket, PathBuf::from("/run/vtid/vtid.sock"));
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vtid").chain(args.iter().copied()))
    }

    fn view(args: &[&str]) -> (CryptoView, bool) {
        match parse(args).expect("parses").command {
            Command::Show {
                what: ShowWhat::Crypto { what },
                json,
            } => (what.view(), json),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn show_crypto_in_the_ios_words() {
        let v = |a: &[&str]| view(a).0;
        assert_eq!(v(&["show", "crypto", "isakmp", "sa"]), CryptoView::IsakmpSa);
        assert_eq!(v(&["show", "crypto", "ikev2", "sa"]), CryptoView::Ikev2Sa);
        assert_eq!(
            v(&["show", "crypto", "ikev2", "proposal"]),
            CryptoView::Ikev2Proposal
        );
        assert_eq!(
            v(&["show", "crypto", "ipsec", "sa"]),
            CryptoView::IpsecSa {
                peer: None,
                interface: None
            }
        );
        assert_eq!(
            v(&["show", "crypto", "ipsec", "sa", "peer", "192.0.2.2"]),
            CryptoView::IpsecSa {
                peer: Some("192.0.2.2".parse().unwrap()),
                interface: None
            }
        );
        assert_eq!(
            v(&["show", "crypto", "ipsec", "sa", "interface", "Tunnel0"]),
            CryptoView::IpsecSa {
                peer: None,
                interface: Some("Tunnel0".into())
            }
        );
        assert_eq!(
            v(&["show", "crypto", "session"]),
            CryptoView::Session { detail: false }
        );
        assert_eq!(
            v(&["show", "crypto", "session", "detail"]),
            CryptoView::Session { detail: true }
        );
        assert_eq!(v(&["show", "crypto", "map"]), CryptoView::Map);
        assert_eq!(
            v(&["show", "crypto", "ipsec", "transform-set"]),
            CryptoView::TransformSet
        );
        assert_eq!(
            v(&["show", "crypto", "ipsec", "profile"]),
            CryptoView::IpsecProfile
        );
        assert_eq!(
            v(&["show", "crypto", "debug-condition"]),
            CryptoView::DebugCondition
        );
        // --json anywhere after `show`, as for the older views.
        assert!(view(&["show", "crypto", "session", "detail", "--json"]).1);
        assert!(view(&["show", "--json", "crypto", "ikev2", "sa"]).1);
        // The older views are unchanged.
        assert!(matches!(
            parse(&["show", "tunnels"]).unwrap().command,
            Command::Show {
                what: ShowWhat::Tunnels,
                json: false
            }
        ));
    }

    #[test]
    fn bad_show_crypto_input_is_refused_by_the_parser() {
        for bad in [
            &["show", "crypto", "ipsec", "sa", "peer", "not-an-address"][..],
            &["show", "crypto", "ipsec", "sa", "peer"],
            &["show", "crypto", "session", "verbose"],
            &["show", "crypto", "ikev2"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    fn clear(args: &[&str]) -> ClearTarget {
        match parse(args).expect("parses").command {
            Command::Clear {
                what: ClearWhat::Crypto { what },
            } => what.target(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clear_crypto_in_the_ios_words() {
        let peer: std::net::IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(
            clear(&["clear", "crypto", "session"]),
            ClearTarget::Session { remote: None }
        );
        assert_eq!(
            clear(&["clear", "crypto", "session", "remote", "198.51.100.2"]),
            ClearTarget::Session { remote: Some(peer) }
        );
        assert_eq!(
            clear(&["clear", "crypto", "isakmp"]),
            ClearTarget::Isakmp { conn_id: None }
        );
        assert_eq!(
            clear(&["clear", "crypto", "isakmp", "1002"]),
            ClearTarget::Isakmp {
                conn_id: Some(1002)
            }
        );
        // IKEv2 has only IKE SAs and Child SAs: `ikev2 sa` is `session`.
        assert_eq!(
            clear(&["clear", "crypto", "ikev2", "sa", "remote", "198.51.100.2"]),
            ClearTarget::Session { remote: Some(peer) }
        );
        assert_eq!(
            clear(&["clear", "crypto", "sa"]),
            ClearTarget::Sa {
                peer: None,
                spi: None
            }
        );
        assert_eq!(
            clear(&["clear", "crypto", "sa", "peer", "198.51.100.2"]),
            ClearTarget::Sa {
                peer: Some(peer),
                spi: None
            }
        );
        for spi in ["0xC0FFEE01", "c0ffee01", "0Xc0ffee01"] {
            assert_eq!(
                clear(&["clear", "crypto", "sa", "spi", spi]),
                ClearTarget::Sa {
                    peer: None,
                    spi: Some(0xc0ff_ee01)
                }
            );
        }
    }

    #[test]
    fn malformed_addresses_and_spis_are_specific_errors() {
        let e = parse(&["clear", "crypto", "sa", "spi", "0xZZ"]).unwrap_err();
        assert!(e.to_string().contains("not a 32-bit hex SPI"), "{e}");
        let e = parse(&["clear", "crypto", "sa", "spi", "123456789"]).unwrap_err();
        assert!(e.to_string().contains("not a 32-bit hex SPI"), "{e}");
        let e = parse(&["clear", "crypto", "sa", "spi", "0"]).unwrap_err();
        assert!(e.to_string().contains("SPI 0"), "{e}");
        let e = parse(&["clear", "crypto", "session", "remote", "10.0.0"]).unwrap_err();
        assert!(e.to_string().contains("invalid IP address syntax"), "{e}");
        assert!(parse(&["rekey", "child", "spi", "nope"]).is_err());
        assert!(parse(&["rekey", "ike", "peer", "nope"]).is_err());
        assert!(parse(&["rekey", "ike"]).is_err());
    }

    #[test]
    fn rekey_ike_or_child() {
        let target = |a: &[&str]| match parse(a).expect("parses").command {
            Command::Rekey { what } => what.target(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            target(&["rekey", "ike", "tunnel", "Tunnel0"]),
            RekeyTarget::Ike {
                target: SaSelector::Tunnel("Tunnel0".into())
            }
        );
        assert_eq!(
            target(&["rekey", "ike", "peer", "192.0.2.2"]),
            RekeyTarget::Ike {
                target: SaSelector::Peer("192.0.2.2".parse().unwrap())
            }
        );
        assert_eq!(
            target(&["rekey", "child", "spi", "0xc0ffee01"]),
            RekeyTarget::Child {
                target: SaSelector::Spi(0xc0ff_ee01)
            }
        );
        assert_eq!(
            target(&["rekey", "child", "tunnel", "Tunnel0"]),
            RekeyTarget::Child {
                target: SaSelector::Tunnel("Tunnel0".into())
            }
        );
    }

    #[test]
    fn check_defaults_to_etc() {
        let cli = Cli::try_parse_from(["vtid", "--socket", "/tmp/s", "check"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Check { ref config, no_files: false, peer_config: None } if config == Path::new("/etc/vtid/vtid.toml"))
        );
        assert_eq!(cli.socket, PathBuf::from("/tmp/s"));
    }

    #[test]
    fn show_sa_text_has_the_udp_encap_ports_when_there_are_any() {
        let row = |encap: serde_json::Value| serde_json::json!([{ "tunnel": "tun0", "peer": "198.51.100.1", "udp_encap": encap }]);
        let natted = render(
            &ShowWhat::Sa,
            &row(serde_json::json!({ "local_port": 4500, "remote_port": 40057 })),
        );
        assert!(
            natted.contains("  udp encap: local port 4500, remote port 40057\n"),
            "{natted}"
        );
        let plain = render(&ShowWhat::Sa, &row(serde_json::Value::Null));
        assert!(!plain.contains("udp encap"), "{plain}");
    }
}
