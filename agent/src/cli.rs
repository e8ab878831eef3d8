//! The `vtid` command line: argument definitions and one handler per subcommand.
//!
//! `main.rs` only parses and dispatches. Handlers return the process exit code so they stay
//! testable; the daemon-facing ones (`show`, `up`, `down`, `reload`, `debug`) are placeholders
//! until the daemon exists, and will become `control::request` calls.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, LoadOptions};
use crate::control::{Request, Response, Target};

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
    /// Bring a tunnel up now.
    Up(Target),
    /// Take a tunnel down (delete its SAs; it stays configured and on-demand traffic does
    /// not restart it until `vtid up`), or disconnect one dynamic VTI peer.
    Down(Target),
    /// Re-read the configuration and apply only what changed.
    Reload,
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
#[derive(Clone, Copy, Debug, Subcommand)]
pub enum ShowWhat {
    /// IKE sessions (`show crypto session`).
    Sessions,
    /// Child SAs with counters and lifetimes (`show crypto ipsec sa`).
    Sa,
    /// Tunnel interfaces (`show interface tunnel`).
    Tunnels,
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
        Command::Check { config, no_files } => Ok(check(&config, no_files)),
        Command::Run {
            config,
            keep_on_exit,
            ..
        } => run(config, cli.socket, keep_on_exit),
        Command::Show { what, json } => {
            let req = match what {
                ShowWhat::Sessions => Request::ShowSessions,
                ShowWhat::Sa => Request::ShowSa,
                ShowWhat::Tunnels => Request::ShowTunnels,
            };
            let body = ask(&cli.socket, &req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", render(what, &body));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportIos {
            file,
            maps,
            key_dir,
        } => import_ios(&file, &maps, key_dir.as_deref()),
        Command::Up(t) => print_ok(ask(&cli.socket, &Request::Up(t))?),
        Command::Down(t) => print_ok(ask(&cli.socket, &Request::Down(t))?),
        Command::Reload => print_ok(ask(&cli.socket, &Request::Reload)?),
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
fn render(what: ShowWhat, body: &serde_json::Value) -> String {
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
                "{:<12} {:<14} {:<22} {:<22} {:>8} {:>6}",
                "TUNNEL", "STATE", "LOCAL", "REMOTE", "UPTIME", "CHILD"
            );
            for r in &rows {
                let _ = writeln!(
                    out,
                    "{:<12} {:<14} {:<22} {:<22} {:>8} {:>6}",
                    s(&r["tunnel"]),
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
                let _ = writeln!(
                    out,
                    "interface: {}  peer: {}",
                    s(&r["tunnel"]),
                    s(&r["peer"])
                );
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
fn import_ios(file: &Path, maps: &[String], key_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    use crate::import_ios::{Options, Why, import, parse_map};
    use anyhow::Context as _;
    let src = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let mut opts = Options {
        input_name: file.display().to_string(),
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

    #[test]
    fn check_defaults_to_etc() {
        let cli = Cli::try_parse_from(["vtid", "--socket", "/tmp/s", "check"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Check { ref config, no_files: false } if config == Path::new("/etc/vtid/vtid.toml"))
        );
        assert_eq!(cli.socket, PathBuf::from("/tmp/s"));
    }

    #[test]
    fn show_sa_text_has_the_udp_encap_ports_when_there_are_any() {
        let row = |encap: serde_json::Value| serde_json::json!([{ "tunnel": "tun0", "peer": "198.51.100.1", "udp_encap": encap }]);
        let natted = render(
            ShowWhat::Sa,
            &row(serde_json::json!({ "local_port": 4500, "remote_port": 40057 })),
        );
        assert!(
            natted.contains("  udp encap: local port 4500, remote port 40057\n"),
            "{natted}"
        );
        let plain = render(ShowWhat::Sa, &row(serde_json::Value::Null));
        assert!(!plain.contains("udp encap"), "{plain}");
    }
}
