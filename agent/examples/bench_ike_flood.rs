//! Benchmark (not a test): the IKE front door under a flood. A hub's UDP 500 receives a flood
//! of well-formed, never-completed IKE_SA_INIT requests from many spoofed sources while 20
//! legitimate spokes connect; the same run measures a vtid hub and a strongSwan hub (charon +
//! swanctl with strongswan.conf's default limits: cookie_threshold 30, block_threshold 5,
//! no init_limit_*), each with and without the flood, and prints them side by side:
//!
//! - legitimate handshakes completed, and their setup time p50/p99 (the spoke's Initiate to
//!   its IKE_AUTH response installing the Child SA; a COOKIE round trip, RFC 7296 §2.6, or a
//!   lost request retransmitted, §2.1, is part of it);
//! - datagrams the hub read per second and the datagrams the kernel dropped because the hub's
//!   socket buffer was full (`Udp: InDatagrams` and `RcvbufErrors` of `/proc/net/snmp` in the
//!   hub's namespace: a neutral measure for both daemons; InDatagrams counts datagrams a
//!   process read, so it is the hub's processing rate);
//! - the hub's CPU time (utime + stime from `/proc/PID/stat`) and peak RSS (`VmHWM`);
//! - what the attacker got back (half-open SAs granted, COOKIEs, nothing).
//!
//! Runs inside the VM, as root:
//!
//! ```text
//! cargo build -p nstest --bins
//! cargo build --release -p vtid --bin vtid --example bench_ike_flood
//! ./target/debug/nstest vm -- ./target/release/examples/bench_ike_flood \
//!     [--spokes 20] [--sources 1000] [--rate 5000] [--flood-secs 30] [--only vtid|strongswan]
//! ```
//!
//! Topology: `hub` (172.16.0.1/16 towards the spokes' namespace `lg`, 198.51.100.1/24 towards
//! the attacker `att`). The attacker sends from 10.99.0.0/16 through an AnyIP route
//! (`nstest::flood`) to 172.16.0.1:500, the address the spokes use, so flood and spokes share
//! the hub's one front door. Each spoke is an in-process `ike` engine with its own UDP socket
//! on 172.16.1.i:500 (PSK, AES-GCM-256/SHA-256/X25519, TSi its inside /32), all started at
//! once, 3 s into the flood; spokes retransmit at 1, 2, 4, 8, 16, 32 s (RFC 7296 §2.1) and a
//! spoke that never gets through is counted as not connected. Nothing is installed in the
//! spokes' kernel: the handshake is what is measured. The hubs do different work per spoke
//! once authenticated: vtid clones an xfrm interface from its virtual template and routes the
//! spoke into it, charon only installs the SAs and policies (no updown script), so setup times
//! compare each hub with itself (flood / no flood) more than the two hubs with each other.

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bench_common::{HUB_UNDERLAY, pct, spoke_underlay};
use ike::{ConnId, Endpoint, EndpointConfig, Event, Output, RetransmitConfig};
use nstest::flood::{Flood, FloodReport, FloodSpec};
use nstest::strongswan::Strongswan;
use nstest::vtid::Vtid;
use nstest::{Netns, TopoSpec};

const PSK: &str = "benchmark-front-door-key";
const SPOOFED: &str = "10.99.0.0/16";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Vtid,
    Strongswan,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Vtid => "vtid",
            Kind::Strongswan => "strongSwan",
        }
    }
}

struct Args {
    spokes: usize,
    sources: u32,
    rate: u32,
    flood: Duration,
    only: Option<Kind>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        spokes: 20,
        sources: 1000,
        rate: 5000,
        flood: Duration::from_secs(30),
        only: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut it = v.iter();
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--spokes" => a.spokes = val()?.parse().context("--spokes")?,
            "--sources" => a.sources = val()?.parse().context("--sources")?,
            "--rate" => a.rate = val()?.parse().context("--rate")?,
            "--flood-secs" => a.flood = Duration::from_secs(val()?.parse()?),
            "--only" => {
                a.only = Some(match val()?.as_str() {
                    "vtid" => Kind::Vtid,
                    "strongswan" => Kind::Strongswan,
                    o => bail!("--only vtid|strongswan, not {o}"),
                })
            }
            o => bail!(
                "unknown argument {o}; usage: bench_ike_flood [--spokes N] [--sources N] \
                 [--rate PER_S] [--flood-secs S] [--only vtid|strongswan]"
            ),
        }
    }
    ensure!((1..=250).contains(&a.spokes), "--spokes 1..=250");
    ensure!((1..=60_000).contains(&a.sources), "--sources 1..=60000");
    ensure!(
        a.flood <= Duration::from_secs(300),
        "--flood-secs at most 300"
    );
    Ok(a)
}

/// What one run (one hub, with or without the flood) measured.
struct Figures {
    kind: Kind,
    flood: bool,
    spokes: usize,
    connected: usize,
    /// Setup times of the spokes that connected, ms.
    setup_ms: Vec<f64>,
    /// Failed attempts by reason (a spoke retries up to three times).
    failures: BTreeMap<&'static str, usize>,
    window: Duration,
    in_datagrams: u64,
    rcvbuf_errors: u64,
    cpu_secs: f64,
    rss_peak_kib: u64,
    attack: Option<FloodReport>,
}

fn main() -> Result<()> {
    let a = args()?;
    ensure!(
        nstest::vm::in_vm(),
        "run inside the VM: ./target/debug/nstest vm -- {}",
        std::env::current_exe()?.display()
    );
    // One socket per spoofed source in the attacker: lift the default 1024 open files.
    nstest::cmd::run_args(&[
        "prlimit",
        "--pid",
        &std::process::id().to_string(),
        "--nofile=1048576:1048576",
    ])
    .context("raise RLIMIT_NOFILE")?;
    warm_up_crypto()?;
    let kinds: Vec<Kind> = match a.only {
        Some(k) => vec![k],
        None => vec![Kind::Vtid, Kind::Strongswan],
    };
    let mut all = Vec::new();
    for k in kinds {
        for flood in [false, true] {
            eprintln!(
                "== {} hub, {} spokes, {}",
                k.label(),
                a.spokes,
                if flood { "under the flood" } else { "no flood" }
            );
            let f = run(k, flood, &a)?;
            eprintln!(
                "   {}/{} connected, p99 {:.0} ms",
                f.connected,
                f.spokes,
                pct(&f.setup_ms, 99.0).unwrap_or(f64::NAN)
            );
            all.push(f);
        }
    }
    print_table(&a, &all);
    Ok(())
}

/// The kernel's AES-GCM modules loaded before anything is timed, in a scratch namespace.
fn warm_up_crypto() -> Result<()> {
    nstest::kernel::warm_up_aes_gcm(&Netns::new("warmup")?)
}

/// `Udp:` InDatagrams and RcvbufErrors of the namespace `ns` (`/proc/net/snmp` shows the
/// reader's namespace, so it is read by a `cat` inside it).
fn udp_snmp(ns: &Netns) -> Result<(u64, u64)> {
    let text = ns.exec(&["cat", "/proc/net/snmp"])?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        udp.next().context("Udp header")?,
        udp.next().context("Udp values")?,
    );
    let get = |want: &str| -> Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == want)
            .with_context(|| format!("no {want} in {names}"))?;
        Ok(values
            .split_whitespace()
            .nth(i)
            .context("short Udp line")?
            .parse()?)
    };
    Ok((get("InDatagrams")?, get("RcvbufErrors")?))
}

/// utime + stime of `pid` in seconds (`/proc/PID/stat` fields 14 and 15, in clock ticks).
fn cpu_secs(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let rest = s.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(ticks as f64 / hz)
}

fn rss_peak_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmHWM")
}

fn hub_pid(ns: &Netns, kind: Kind) -> Result<u32> {
    let want = match kind {
        Kind::Vtid => "vtid",
        Kind::Strongswan => "charon",
    };
    let pids = nstest::cmd::run_args(&["ip", "netns", "pids", ns.name()])?;
    for p in pids.split_whitespace() {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if comm.trim() == want {
            return Ok(p.parse()?);
        }
    }
    bail!("no {want} process in {} (pids {pids})", ns.name())
}

enum HubProc {
    Vtid(Vtid),
    Swan(Strongswan),
}

fn start_hub(kind: Kind, ns: &Netns, dir: &std::path::Path) -> Result<HubProc> {
    match kind {
        // vtid's defaults for every front-door limit; any address may start IKE (a hub for
        // spokes on dynamic addresses), so the flood is made of requests to consider.
        Kind::Vtid => Ok(HubProc::Vtid(nstest::hub::start_psk_template_hub(
            ns,
            dir,
            PSK,
            "0.0.0.0/0",
            "",
        )?)),
        Kind::Strongswan => {
            // One connection any address may start, per-peer xfrm interface ids; the
            // strongswan.conf limits are charon's defaults (nothing about cookies, blocking
            // or half-open SAs is set), logging at level 1.
            let swanctl = format!(
                "connections {{\n  spokes {{\n    version = 2\n    local_addrs = {HUB_UNDERLAY}\n    \
                 remote_addrs = %any\n    proposals = aes256gcm16-prfsha256-x25519\n    \
                 local {{\n      auth = psk\n      id = {HUB_UNDERLAY}\n    }}\n    \
                 remote {{\n      auth = psk\n      id = %any\n    }}\n    children {{\n      c {{\n        \
                 local_ts = 10.0.0.0/24\n        remote_ts = 10.128.0.0/16\n        \
                 esp_proposals = aes256gcm16\n        mode = tunnel\n        start_action = none\n        \
                 if_id_in = %unique\n        if_id_out = %unique\n      }}\n    }}\n  }}\n}}\n\
                 secrets {{\n  ike-spokes {{\n    secret = \"{PSK}\"\n  }}\n}}\n"
            );
            let extra = "  filelog {\n    stderr {\n      default = 1\n      ike = 1\n      \
                         cfg = 1\n      knl = 1\n    }\n  }\n";
            Ok(HubProc::Swan(Strongswan::start_conf_tuned(
                ns, dir, &swanctl, extra,
            )?))
        }
    }
}

fn run(kind: Kind, flood: bool, a: &Args) -> Result<Figures> {
    let topo = TopoSpec::new()
        .link("hub", "172.16.0.1/16", "lg", "172.16.0.2/16")
        .link("hub", "198.51.100.1/24", "att", "198.51.100.2/24")
        .lan("hub", "10.0.0.1/24")
        .route("att", "172.16.0.0/16", "via 198.51.100.1")
        .build()?;
    let (hub_ns, lg_ns, att_ns) = (topo.host("hub"), topo.host("lg"), topo.host("att"));
    let tag = if flood { "flood" } else { "calm" };
    let dir = std::env::temp_dir().join(format!(
        "bench-ike-flood-{}-{kind:?}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let mut batch = String::new();
    for i in 0..a.spokes {
        batch.push_str(&format!("addr add {}/16 dev e-hub\n", spoke_underlay(i)));
    }
    let bf = dir.join("lg.batch");
    std::fs::write(&bf, batch)?;
    lg_ns.ip(&["-batch", &bf.to_string_lossy()])?;
    nstest::flood::prepare(att_ns, hub_ns, SPOOFED, "198.51.100.2")?;

    let hub = start_hub(kind, hub_ns, &dir)?;
    let pid = hub_pid(hub_ns, kind)?;
    std::thread::sleep(Duration::from_secs(2));
    let (in0, err0) = udp_snmp(hub_ns)?;
    let cpu0 = cpu_secs(pid)?;
    let t0 = Instant::now();
    let attacker = if flood {
        let mut spec = FloodSpec::new(
            std::net::SocketAddrV4::new(HUB_UNDERLAY, 500),
            "10.99.0.1".parse()?,
            a.sources,
            nstest::flood::Mode::Init,
        );
        spec.rate = a.rate;
        spec.count = u64::from(a.rate) * a.flood.as_secs();
        spec.duration = a.flood;
        spec.linger = Duration::from_secs(1);
        let f = Flood::start(att_ns, &dir, &spec)?;
        // Let the flood fill the hub's half-open table and queues first.
        std::thread::sleep(Duration::from_secs(3));
        Some(f)
    } else {
        None
    };
    let lg = spokes(lg_ns.name(), a.spokes)?;
    let attack = attacker.map(Flood::wait).transpose()?;
    let window = t0.elapsed();
    let (in1, err1) = udp_snmp(hub_ns)?;
    let cpu1 = cpu_secs(pid)?;
    let rss = rss_peak_kib(pid)?;
    if lg.connected < a.spokes {
        let log = match &hub {
            HubProc::Vtid(v) => v.log(),
            HubProc::Swan(s) => s.log(),
        };
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "   not all spokes connected; hub log tail:\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    drop(hub);
    drop(topo);
    Ok(Figures {
        kind,
        flood,
        spokes: a.spokes,
        connected: lg.connected,
        setup_ms: lg.setup_ms,
        failures: lg.failures,
        window,
        in_datagrams: in1 - in0,
        rcvbuf_errors: err1 - err0,
        cpu_secs: cpu1 - cpu0,
        rss_peak_kib: rss,
        attack,
    })
}

struct Spokes {
    connected: usize,
    setup_ms: Vec<f64>,
    failures: BTreeMap<&'static str, usize>,
}

/// RFC 7296 §2.1: 1, 2, 4, 8, 16, 32 s, then the attempt has failed (63 s).
fn spoke_config(i: usize) -> Arc<EndpointConfig> {
    bench_common::spoke_config(
        i,
        PSK,
        RetransmitConfig {
            initial: Duration::from_secs(1),
            tries: 6,
        },
    )
}

/// The spokes, on a thread inside the `lg` namespace (their sockets are made there).
fn spokes(ns_name: &str, n: usize) -> Result<Spokes> {
    let path = format!("/run/netns/{ns_name}");
    std::thread::spawn(move || -> Result<Spokes> {
        let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns lg")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(spokes_async(n))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("spokes panicked"))?
}

async fn spokes_async(n: usize) -> Result<Spokes> {
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Vec<u8>, SocketAddr, Instant)>();
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let s = Arc::new(
            tokio::net::UdpSocket::bind((spoke_underlay(i), 500))
                .await
                .with_context(|| format!("bind {}:500", spoke_underlay(i)))?,
        );
        let (s2, tx) = (s.clone(), tx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, from)) = s2.recv_from(&mut buf).await {
                if tx
                    .send((i, buf[..len].to_vec(), from, Instant::now()))
                    .is_err()
                {
                    break;
                }
            }
        });
        socks.push(s);
    }
    let mut eng: Vec<Endpoint> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            seed[8] = 0xf1;
            Endpoint::new(spoke_config(i), seed)
        })
        .collect();
    // Per spoke: when its current attempt started, attempts so far, done.
    let mut started: Vec<Instant> = vec![Instant::now(); n];
    let mut first_start: Vec<Instant> = vec![Instant::now(); n];
    let mut attempts = vec![0u32; n];
    let mut done: Vec<Option<Instant>> = vec![None; n];
    let mut gave_up = vec![false; n];
    let mut failures: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut pending = Vec::new();
    for i in 0..n {
        let now = Instant::now();
        started[i] = now;
        first_start[i] = now;
        attempts[i] = 1;
        eng[i].handle_command(now, ike::Command::Initiate { conn: ConnId(1) });
        pending.push(i);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        // Outputs of every engine touched since the last round.
        let mut failed = Vec::new();
        for i in pending.drain(..) {
            while let Some(o) = eng[i].poll_output() {
                match o {
                    Output::Transmit(t) => {
                        let _ = socks[i].send_to(&t.bytes, t.remote).await;
                    }
                    Output::InstallChildSa(inst) => {
                        eng[i].handle_install_result(Instant::now(), inst.child, Ok(()));
                        if done[i].is_none() {
                            done[i] = Some(Instant::now());
                        }
                    }
                    Output::Event(Event::AuthFailed { reason, .. }) => failed.push((i, reason)),
                    Output::Event(Event::PeerDead { .. }) => failed.push((i, "no answer")),
                    Output::Event(Event::IkeSaDown { .. }) => failed.push((i, "IKE SA down")),
                    _ => {}
                }
            }
        }
        for (i, why) in failed {
            if done[i].is_some() || gave_up[i] {
                continue;
            }
            *failures.entry(why).or_default() += 1;
            if attempts[i] < 3 {
                attempts[i] += 1;
                started[i] = Instant::now();
                eng[i].handle_command(Instant::now(), ike::Command::Initiate { conn: ConnId(1) });
                pending.push(i);
            } else {
                gave_up[i] = true;
            }
        }
        let open = (0..n).filter(|&i| done[i].is_none() && !gave_up[i]).count();
        if open == 0 || Instant::now() >= deadline {
            break;
        }
        let now = Instant::now();
        let wake = (0..n)
            .filter_map(|i| eng[i].poll_timeout())
            .min()
            .unwrap_or(now + Duration::from_millis(200))
            .clamp(now, now + Duration::from_millis(200));
        tokio::select! {
            m = rx.recv() => {
                let (i, bytes, from, at) = m.context("udp channel")?;
                let mut batch = vec![(i, bytes, from, at)];
                while let Ok(m) = rx.try_recv() {
                    batch.push(m);
                }
                for (i, bytes, from, at) in batch {
                    let local = SocketAddr::new(IpAddr::V4(spoke_underlay(i)), 500);
                    eng[i].handle_datagram(at, ike::Datagram { local, remote: from, bytes: &bytes });
                    pending.push(i);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                for (i, e) in eng.iter_mut().enumerate() {
                    if e.poll_timeout().is_some_and(|t| t <= now) {
                        e.handle_timeout(now);
                        pending.push(i);
                    }
                }
            }
        }
    }
    // Setup time: from the spoke's first attempt, so failed attempts count against it.
    let setup_ms: Vec<f64> = (0..n)
        .filter_map(|i| done[i].map(|d| d.duration_since(first_start[i]).as_secs_f64() * 1e3))
        .collect();
    Ok(Spokes {
        connected: setup_ms.len(),
        setup_ms,
        failures,
    })
}

fn print_table(a: &Args, all: &[Figures]) {
    let get = |k: Kind, flood: bool| all.iter().find(|f| f.kind == k && f.flood == flood);
    let cols = [
        get(Kind::Vtid, false),
        get(Kind::Vtid, true),
        get(Kind::Strongswan, false),
        get(Kind::Strongswan, true),
    ];
    println!(
        "IKE front door: {} legitimate spokes connecting; flood of well-formed IKE_SA_INITs from \
         {} spoofed sources at {}/s for {} s (one run, PSK, X25519, AES-GCM-256):",
        a.spokes,
        a.sources,
        a.rate,
        a.flood.as_secs()
    );
    println!(
        "  {:<34} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7} {:>9}",
        "", "vtid", "vtid+flood", "ratio", "strongSwan", "sS+flood", "ratio", "vtid/sS"
    );
    // A row: the four cells, flood/no-flood ratio per hub, and vtid/strongSwan under flood.
    let row = |name: &str, f: &dyn Fn(&Figures) -> Option<f64>, prec: usize| {
        let v: Vec<Option<f64>> = cols.iter().map(|c| c.and_then(f)).collect();
        let cell = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.prec$}"));
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if x > 0.0 => format!("{:.2}x", y / x),
            _ => "-".to_string(),
        };
        println!(
            "  {name:<34} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7} {:>9}",
            cell(v[0]),
            cell(v[1]),
            ratio(v[0], v[1]),
            cell(v[2]),
            cell(v[3]),
            ratio(v[2], v[3]),
            ratio(v[3], v[1]),
        );
    };
    row("spokes connected", &|f| Some(f.connected as f64), 0);
    row("setup p50 (ms)", &|f| pct(&f.setup_ms, 50.0), 0);
    row("setup p99 (ms)", &|f| pct(&f.setup_ms, 99.0), 0);
    row(
        "hub datagrams read per s",
        &|f| Some(f.in_datagrams as f64 / f.window.as_secs_f64()),
        0,
    );
    row("hub datagrams read", &|f| Some(f.in_datagrams as f64), 0);
    row(
        "dropped, hub socket full",
        &|f| Some(f.rcvbuf_errors as f64),
        0,
    );
    row("hub CPU time (s)", &|f| Some(f.cpu_secs), 2);
    row(
        "hub peak RSS (MiB)",
        &|f| Some(f.rss_peak_kib as f64 / 1024.0),
        1,
    );
    row("measured window (s)", &|f| Some(f.window.as_secs_f64()), 1);
    fn att(f: fn(&FloodReport) -> u64) -> impl Fn(&Figures) -> Option<f64> {
        move |x: &Figures| x.attack.as_ref().map(|r| f(r) as f64)
    }
    row("attacker: requests sent", &att(|r| r.sent), 0);
    row("attacker: half-open SAs granted", &att(|r| r.sa_init), 0);
    row("attacker: COOKIEs received", &att(|r| r.cookie), 0);
    row(
        "attacker: unanswered",
        &att(|r| r.sent.saturating_sub(r.replies())),
        0,
    );
    for f in all {
        if !f.failures.is_empty() {
            println!(
                "  {} {}: failed attempts {:?}",
                f.kind.label(),
                if f.flood { "flood" } else { "no flood" },
                f.failures
            );
        }
    }
    println!("  (ratio: flood / no flood of the same hub; vtid/sS: vtid+flood / strongSwan+flood)");
}
