//! Benchmark (not a test): a dynamic-VTI hub with N spokes, vtid against two strongSwan hubs,
//! one run per N of a sweep. Prints, for each N and hub side by side: how many tunnels came up
//! and passed a ping, the wall time from the first IKE_SA_INIT to the last tunnel passing its
//! ping (and to 95% of them: the spokes' retransmit tail apart), the time per tunnel, the
//! share up on the first try without a retransmission, IKE_SA_INIT -> ping reply under the
//! window and for spokes brought up one at a time once the N are up (window 1: the latency
//! of one handshake, not window ÷ throughput), p50/p99 from IKE_AUTH to the hub's per-peer
//! interface being up with its route, the hub's RSS and the kernel's slab per tunnel, CPU
//! seconds of the hub, of its helpers and of the load generator, the netlink requests vtid
//! sent per tunnel (its `vtid_netlink_requests_total`) and the load average; then one summary
//! line per run and how vtid's time per tunnel grows with N.
//!
//! Runs inside the VM (it needs xfrm_interface and esp4), as root:
//!
//! ```text
//! cargo build -p nstest --bins
//! cargo build --release -p vtid --bin vtid --example bench_dvti_hub
//! $CARGO_TARGET_DIR/debug/nstest vm --memory 4G -- \
//!     $CARGO_TARGET_DIR/release/examples/bench_dvti_hub [--spokes N[,N...]] [--window W] \
//!     [--swan-max N] [--updown-max N] [--probe K] [--only vtid|strongswan|strongswan-helper]
//! ```
//!
//! (default N = 1000, W = 50, K = 20; strongSwan runs only for N <= --swan-max, default 2000,
//! and strongSwan+updown only for N <= --updown-max as well; vtid runs first at every N, then
//! strongSwan+helper, then strongSwan+updown; the hub's `vtid` is the release binary next to
//! this example.)
//!
//! Topology: a `hub` namespace and one load generator `lg`, joined by a veth in 172.16.0.0/16.
//! The load generator holds N + K underlay addresses (172.16.1.0 + i) and inside addresses
//! (10.128.0.1 + i, /32 on a dummy). Each spoke is an in-process `ike` engine with its own UDP
//! socket on its underlay address; it authenticates with a PSK under its address identity
//! and proposes TSi = its inside /32, TSr = the hub's LAN address 10.0.0.1/32. At most W
//! handshakes are in flight at any time (the same for every hub); the K probe spokes then go
//! one at a time. When a spoke's IKE_AUTH response arrives its SAs and two policies (keyed
//! by its inside /32, so the load generator needs no interface per spoke) go into the `lg`
//! kernel with the `xfrm` crate, and the spoke pings 10.0.0.1 from its inside address (raw
//! ICMP with IP_PKTINFO), every 300 ms until a reply comes back through its tunnel. Spokes
//! retransmit patiently (2 s doubling, 8 tries, about 8.5 minutes); an attempt that fails
//! anyway (no answer, or the hub dropped the IKE SA) is counted, reported by reason and
//! started again, at most three attempts per spoke.
//!
//! The hub is watched over rtnetlink from inside its namespace (RTM_NEWLINK with IFF_UP,
//! RTM_NEWROUTE for each spoke's /32), timestamped on the same monotonic clock as the load
//! generator, so "interface up with its route" is the later of the two for the route's
//! interface. vtid and the first strongSwan hub create the interface while they process
//! IKE_AUTH, before they send the response (vtid on `PeerAuthenticated`, charon runs updown
//! from the Child SA install), so the latency is given from the spoke sending its IKE_AUTH
//! request (always positive) and from it receiving the response (negative: the interface was
//! up before the answer left).
//!
//! Baselines: charon (Debian's strongSwan) with one connection matching every spoke and
//! `if_id_in = if_id_out = %unique`; per Child SA up, the xfrm interface with that if_id, its
//! up state and the route of the spoke's traffic selector; per Child SA down, the interface
//! deleted:
//! - `strongSwan+updown` (what users do today): an updown script that runs one `ip -batch`
//!   per event, so each spoke costs a shell and an `ip` process (each start costs 170-240 ms
//!   under TCG), run by charon before it sends the IKE_AUTH response;
//! - `strongSwan+helper`: no updown script and no process per spoke. One persistent helper (a
//!   thread of this benchmark and one `ip -force -batch -` in the hub's namespace, started
//!   before the spokes) is registered for charon's `child-updown` VICI event (strongSwan's
//!   vici README; the message is `up = yes` on up, then the IKE SA's section holding
//!   `child-sas`, each Child SA with its hex `if-id-in` and its `remote-ts` list) and writes
//!   the same `ip` commands the updown script runs to that `ip`'s standard input. charon
//!   raises the event and goes on without waiting for it, so its IKE_AUTH response may leave
//!   before the interface exists. The helper's CPU (its thread and its `ip`) is counted.
//!
//! Tuned for many peers so it is not handicapped: `ikesa_table_size = 1024`,
//! `ikesa_table_segments = 16`, `cookie_threshold = 1000` (the default 30 would demand
//! cookies at a window of 50: an extra round trip per spoke; the vtid hub gets the same
//! `cookie_threshold = 1000`), stock 16 threads, log level 1 (vtid logs at its default
//! `info`).

#[path = "bench_common/mod.rs"]
mod bench_common;
#[path = "bench_common/policy_floor.rs"]
mod policy_floor;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IoSlice, Read, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bench_common::{HUB_LAN, HUB_UNDERLAY, pct, spoke_inside, spoke_underlay};
use ike::{
    ChildSaInstall, ConnId, Endpoint, EndpointConfig, EspProposal, Event, Output, RetransmitConfig,
};
use ipnet::IpNet;
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockProtocol, SockType};
use nstest::strongswan::Strongswan;
use nstest::vtid::Vtid;
use nstest::{Netns, TopoSpec};
use vtid::vici::wire;

const PSK: &str = "benchmark-hub-and-spokes-key";
/// The vtid hub's metrics listener, in its namespace (for its netlink request counter).
const HUB_METRICS: &str = "127.0.0.1:9478";
/// Echo identifier of our pings (replies carry it back).
const PING_ID: u16 = 0x7654;

fn inside_index(a: Ipv4Addr) -> Option<usize> {
    u32::from(a).checked_sub(0x0a80_0001).map(|d| d as usize)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Vtid,
    /// charon running an updown script that runs `ip` per event.
    Strongswan,
    /// charon without updown; one persistent helper takes its `child-updown` VICI events.
    SwanHelper,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Vtid => "vtid",
            Kind::Strongswan => "strongSwan+updown",
            Kind::SwanHelper => "strongSwan+helper",
        }
    }
}

struct Args {
    /// One run per N, in order.
    spokes: Vec<usize>,
    window: usize,
    only: Option<Kind>,
    /// Above this N only vtid runs (the strongSwan hubs take too long).
    swan_max: usize,
    /// Above this N strongSwan+updown does not run (a process per spoke: 647 s at 500).
    updown_max: usize,
    /// Spokes brought up one at a time after the N (window 1), for per-handshake latency.
    probe: usize,
    timeout: Duration,
    /// The vtid hub's `virtual_template.mode` (`--template-mode multipoint`).
    template_mode: Option<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        spokes: vec![1000],
        window: 50,
        only: None,
        swan_max: 2000,
        updown_max: usize::MAX,
        probe: 20,
        timeout: Duration::from_secs(1800),
        template_mode: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut it = v.iter();
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--spokes" => {
                a.spokes = val()?
                    .split(',')
                    .map(|n| n.trim().parse().context("--spokes N[,N...]"))
                    .collect::<Result<_>>()?
            }
            "--window" => a.window = val()?.parse().context("--window")?,
            "--swan-max" => a.swan_max = val()?.parse().context("--swan-max")?,
            "--updown-max" => a.updown_max = val()?.parse().context("--updown-max")?,
            "--probe" => a.probe = val()?.parse().context("--probe")?,
            "--template-mode" => a.template_mode = Some(val()?.clone()),
            "--timeout-secs" => {
                a.timeout = Duration::from_secs(val()?.parse().context("--timeout-secs")?)
            }
            "--only" => {
                a.only = Some(match val()?.as_str() {
                    "vtid" => Kind::Vtid,
                    "strongswan" => Kind::Strongswan,
                    "strongswan-helper" => Kind::SwanHelper,
                    o => bail!("--only vtid|strongswan|strongswan-helper, not {o}"),
                })
            }
            o => bail!(
                "unknown argument {o}; usage: bench_dvti_hub [--spokes N[,N...]] [--window W] \
                 [--only vtid|strongswan|strongswan-helper] [--swan-max N] [--updown-max N] \
                 [--probe K] [--timeout-secs S] [--template-mode multipoint]"
            ),
        }
    }
    ensure!(
        a.spokes.iter().all(|&n| n >= 1 && n + a.probe <= 60_000),
        "--spokes 1..=60000 (with the --probe spokes)"
    );
    ensure!(a.window >= 1, "--window >= 1");
    Ok(a)
}

/// What one hub run measured.
struct Figures {
    kind: Kind,
    spokes: usize,
    pinged: usize,
    handshake_failures: usize,
    /// Why handshake attempts failed, with counts.
    fail_reasons: std::collections::BTreeMap<&'static str, usize>,
    /// Like `from_request`, but from the spoke's first IKE_AUTH request when an earlier
    /// attempt failed and was retried (what the spoke waited in all), ms.
    from_first_request: Vec<f64>,
    /// First IKE_SA_INIT sent to the last spoke's first ping reply.
    wall: Duration,
    /// IKE_AUTH request sent -> hub interface up with the spoke's route, ms.
    from_request: Vec<f64>,
    /// IKE_AUTH response received -> hub interface up with the spoke's route, ms (signed).
    from_response: Vec<f64>,
    /// Spokes whose hub interface and route the monitor saw.
    seen_on_hub: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// Netlink requests the vtid hub sent while the spokes came up (its metrics counter);
    /// `None` for strongSwan, which has no such counter.
    netlink_requests: Option<f64>,
    hub_xfrm_links: usize,
    monitor_overruns: u64,
    helper_note: String,
    /// The last of the N spokes passing its ping counted from the first IKE_SA_INIT, at 95%.
    wall95: Duration,
    /// Spokes up on their first attempt with no retransmission.
    first_try: usize,
    /// First IKE_SA_INIT sent -> first ping reply, ms, of the N spokes (under the window).
    setup_window: Vec<f64>,
    /// The same for the probe spokes, one at a time after the N are up (window 1).
    setup_alone: Vec<f64>,
    /// First IKE_SA_INIT sent -> IKE_AUTH response, ms, of the probe spokes.
    handshake_alone: Vec<f64>,
    probes: usize,
    /// /proc/meminfo Slab before the hub started and once all were up, KiB.
    slab_before_kib: u64,
    slab_after_kib: u64,
    /// CPU seconds (user+system) of the hub daemon, of the processes it waited for
    /// (updown scripts and their `ip`), of the persistent helper, and of the load generator.
    cpu_hub: f64,
    /// The system (kernel) part of `cpu_hub`: netlink requests run in the sender's context.
    cpu_hub_sys: f64,
    cpu_children: f64,
    cpu_helper: f64,
    cpu_lg: f64,
    /// /proc/loadavg's 1-minute figure once all were up.
    loadavg: f64,
}

fn main() -> Result<()> {
    let a = args()?;
    ensure!(
        nstest::vm::in_vm(),
        "run inside the VM: $CARGO_TARGET_DIR/debug/nstest vm -- {}",
        std::env::current_exe()?.display()
    );
    // Each spoke is a neighbour of the hub: raise the (VM-wide, init_net only) ARP table
    // limits above N so forced garbage collection does not evict live spokes' entries.
    for (k, v) in [
        ("gc_thresh1", 4096),
        ("gc_thresh2", 65536),
        ("gc_thresh3", 131072),
    ] {
        std::fs::write(
            format!("/proc/sys/net/ipv4/neigh/default/{k}"),
            v.to_string(),
        )
        .with_context(|| format!("neigh {k}"))?;
    }
    // One UDP socket per spoke: lift the default 1024 open files.
    nstest::cmd::run_args(&[
        "prlimit",
        "--pid",
        &std::process::id().to_string(),
        "--nofile=1048576:1048576",
    ])
    .context("raise RLIMIT_NOFILE")?;
    warm_up_crypto()?;
    // vtid at every N first, then the strongSwan hubs where they run, the slowest
    // (updown) last: the sweep's other figures are in even if it is cut short.
    let mut runs: Vec<(usize, Kind)> = Vec::new();
    for pass in [Kind::Vtid, Kind::SwanHelper, Kind::Strongswan] {
        for &n in &a.spokes {
            let wanted = match a.only {
                Some(k) => k == pass,
                None => match pass {
                    Kind::Vtid => true,
                    Kind::SwanHelper => n <= a.swan_max,
                    Kind::Strongswan => n <= a.swan_max.min(a.updown_max),
                },
            };
            if wanted {
                runs.push((n, pass));
            }
        }
    }
    let mut summary: Vec<Figures> = Vec::new();
    for (n, k) in runs {
        wait_idle();
        eprintln!("== {} hub, {} spokes, window {}", k.label(), n, a.window);
        let f = run_hub(k, n, &a)?;
        eprintln!(
            "   {} pinged of {} in {:.2} s",
            f.pinged,
            f.spokes,
            f.wall.as_secs_f64()
        );
        summary.push(f);
        // The table of this N so far (printed again as each hub of it finishes).
        let same: Vec<&Figures> = summary.iter().filter(|x| x.spokes == n).collect();
        print_table(&a, n, &same);
    }
    // The kernel alone inserting the same policies, at each N vtid ran (after the hubs, so
    // their figures are in first): what part of the growth with N no key manager can avoid.
    let mut floors = Vec::new();
    for n in summary
        .iter()
        .filter(|f| f.kind == Kind::Vtid)
        .map(|f| f.spokes)
    {
        wait_idle();
        let t = policy_floor::policy_insert_time(n, HUB_UNDERLAY, spoke_underlay)?;
        floors.push((n, t));
    }
    print_summary(&summary, &floors);
    Ok(())
}

/// The kernel's AES-GCM modules loaded before anything is timed, in a scratch namespace.
fn warm_up_crypto() -> Result<()> {
    nstest::kernel::warm_up_aes_gcm(&Netns::new("warmup")?)
}

/// Waits (at most 60 s) until the CPUs are mostly idle, so one hub's teardown (namespace
/// cleanup of N interfaces and SAs runs in a kernel workqueue) does not slow the next run.
fn wait_idle() {
    fn busy_idle() -> Option<(u64, u64)> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = s
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = v.get(3)? + v.get(4)?;
        Some((v.iter().sum::<u64>(), idle))
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let Some((t0, i0)) = busy_idle() else { return };
        std::thread::sleep(Duration::from_secs(1));
        let Some((t1, i1)) = busy_idle() else { return };
        if t1 > t0 && (i1 - i0) as f64 / (t1 - t0) as f64 > 0.85 {
            return;
        }
    }
    eprintln!("note: CPUs still busy after 60 s; measuring anyway");
}

enum HubProc {
    Vtid(Vtid),
    Swan(Strongswan),
}

fn run_hub(kind: Kind, n: usize, a: &Args) -> Result<Figures> {
    let total = n + a.probe;
    let topo = TopoSpec::new()
        .link("hub", "172.16.0.1/16", "lg", "172.16.0.2/16")
        .lan("hub", "10.0.0.1/24")
        .build()?;
    let hub_ns = topo.host("hub");
    let lg_ns = topo.host("lg");
    let dir = std::env::temp_dir().join(format!("bench-dvti-{}-{kind:?}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The load generator's addresses, in one `ip -batch`.
    let mut batch = String::from(
        "link add in0 type dummy\nlink set in0 up\nroute add 10.0.0.0/24 via 172.16.0.1\n",
    );
    for i in 0..total {
        let _ = writeln!(batch, "addr add {}/16 dev e-hub", spoke_underlay(i));
        let _ = writeln!(batch, "addr add {}/32 dev in0", spoke_inside(i));
    }
    let bf = dir.join("lg.batch");
    std::fs::write(&bf, batch)?;
    lg_ns.ip(&["-batch", &bf.to_string_lossy()])?;

    let (hub, helper) = start_hub(kind, hub_ns, &dir, a.template_mode.as_deref())?;
    let pid = hub_pid(hub_ns, kind)?;
    // Let the daemon settle (start-up sweep, sockets) before the baseline RSS.
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = rss_kib(pid)?;
    let nl_before = netlink_requests(hub_ns, kind)?;
    let slab_before = slab_kib()?;
    let cpu_before = cpu_secs(pid)?;
    let sys_before = sys_secs(pid)?;

    let mon = Monitor::start(hub_ns.name())?;
    let lg = loadgen(lg_ns.name(), n, a.probe, a.window, a.timeout)?;
    // Late notifications (a route the ping raced) reach the monitor within moments.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_kib(pid)?;
    // A hub of thousands busy with the last retransmissions may not answer within the
    // scrape's 10 s: the figure is then missing, the run is not lost.
    let nl_after = netlink_requests(hub_ns, kind).unwrap_or_else(|e| {
        eprintln!("   metrics scrape after the run failed: {e:#}");
        None
    });
    let slab_after = slab_kib()?;
    let cpu_after = cpu_secs(pid)?;
    let sys_after = sys_secs(pid)?;
    let loadavg = std::fs::read_to_string("/proc/loadavg")?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let helper_cpu = match &helper {
        Some(h) => h.cpu_secs()?,
        None => (0.0, 0.0, 0.0),
    };
    let cpu_helper = helper_cpu.0 + helper_cpu.1;
    let helper_note = match (&helper, kind) {
        (_, Kind::Vtid) => String::new(),
        (None, _) => format!(
            "charon's RSS only; {} other process(es) in the hub namespace now (updown scripts \
             are transient)",
            other_pids(hub_ns, pid)?
        ),
        (Some(h), _) => {
            let t = h.tally();
            format!(
                "charon's RSS only; the helper's thread and its `ip` (RSS {} KiB) are not; \
                 helper CPU: thread {:.1} s, `ip` {:.1} s ({:.1} s in the kernel); it took {} \
                 child-updown events up and {} down{}",
                rss_kib(h.ip.id())?,
                helper_cpu.0,
                helper_cpu.1,
                helper_cpu.2,
                t.up,
                t.down,
                t.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; its first error: {e}"))
            )
        }
    };
    let seen = mon.stop();
    let hub_xfrm_links = hub_ns
        .ip(&["-o", "link", "show", "type", "xfrm"])?
        .lines()
        .count();

    let mut from_request = Vec::new();
    let mut from_response = Vec::new();
    let mut from_first_request = Vec::new();
    let mut seen_on_hub = 0;
    for i in 0..n {
        let Some(up) = seen.up_time(spoke_inside(i)) else {
            continue;
        };
        seen_on_hub += 1;
        if let Some(t) = lg.auth_sent[i] {
            from_request.push(signed_ms(up, t));
        }
        if let Some(t) = lg.first_auth_sent[i] {
            from_first_request.push(signed_ms(up, t));
        }
        if let Some(t) = lg.auth_done[i] {
            from_response.push(signed_ms(up, t));
        }
    }
    let mut up_at: Vec<Duration> = lg.pinged[..n]
        .iter()
        .flatten()
        .map(|t| t.duration_since(lg.t0))
        .collect();
    up_at.sort();
    let pinged = up_at.len();
    let wall = up_at.last().copied().unwrap_or_default();
    // The 95th percentile of all N (not of those that made it).
    let wall95 = up_at
        .get((n * 95).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(wall);
    let first_try = (0..n)
        .filter(|&i| lg.pinged[i].is_some() && lg.attempts[i] == 1 && lg.transmits[i] == 2)
        .count();
    let ms = |i: usize, until: &[Option<Instant>]| {
        lg.init_sent[i].zip(until[i]).map(|(a, b)| signed_ms(b, a))
    };
    let setup_window: Vec<f64> = (0..n).filter_map(|i| ms(i, &lg.pinged)).collect();
    let setup_alone: Vec<f64> = (n..total).filter_map(|i| ms(i, &lg.pinged)).collect();
    let handshake_alone: Vec<f64> = (n..total).filter_map(|i| ms(i, &lg.auth_done)).collect();
    if pinged < n {
        eprintln!(
            "   {} spokes never passed a ping ({} handshakes failed); hub log in {}",
            n - pinged,
            lg.failures,
            dir.display()
        );
        for (ns, args) in [
            (hub_ns, &["-o", "link", "show", "type", "xfrm"][..]),
            (hub_ns, &["route"]),
            (hub_ns, &["-s", "xfrm", "state"]),
            (lg_ns, &["-s", "xfrm", "state"]),
            (lg_ns, &["xfrm", "policy"]),
        ] {
            eprintln!(
                "---- {} ip {}\n{}",
                ns.name(),
                args.join(" "),
                tail(&ns.ip(args).unwrap_or_else(|e| format!("{e:#}")), 30)
            );
        }
    }
    match hub {
        HubProc::Vtid(mut v) => {
            if pinged < n {
                eprintln!("{}", tail(&v.log(), 40));
            }
            let _ = v.stop();
        }
        HubProc::Swan(s) => {
            if pinged < n {
                eprintln!("{}", tail(&s.log(), 40));
            }
            drop(s);
            // Remove the updown interfaces before the namespace goes, while we wait here,
            // rather than in the kernel's cleanup workqueue during the next run.
            let names: String = hub_ns
                .ip(&["-o", "link", "show", "type", "xfrm"])?
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|s| format!("link del {}\n", s.trim().split('@').next().unwrap_or("")))
                .collect();
            let f = dir.join("hub-del.batch");
            std::fs::write(&f, names)?;
            let _ = hub_ns.ip(&["-force", "-batch", &f.to_string_lossy()]);
        }
    }
    // After the hub: its VICI connection is closed by then.
    drop(helper);
    drop(topo);
    Ok(Figures {
        kind,
        spokes: n,
        pinged,
        handshake_failures: lg.failures,
        fail_reasons: lg.fail_reasons,
        from_first_request,
        wall,
        from_request,
        from_response,
        seen_on_hub,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        netlink_requests: nl_before.zip(nl_after).map(|(b, a)| a - b),
        hub_xfrm_links,
        monitor_overruns: seen.overruns,
        helper_note,
        wall95,
        first_try,
        setup_window,
        setup_alone,
        handshake_alone,
        probes: a.probe,
        slab_before_kib: slab_before,
        slab_after_kib: slab_after,
        cpu_hub: cpu_after.0 - cpu_before.0,
        cpu_hub_sys: sys_after - sys_before,
        cpu_children: cpu_after.1 - cpu_before.1,
        cpu_helper,
        cpu_lg: lg.cpu,
        loadavg,
    })
}

/// /proc/meminfo's Slab (KiB): the kernel objects of every namespace in the VM, the load
/// generator's SAs and policies included.
fn slab_kib() -> Result<u64> {
    std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("Slab in /proc/meminfo")
}

/// (own user+system CPU, that of waited-for children) of process `pid` in seconds, from
/// /proc/PID/stat (utime, stime, cutime, cstime; USER_HZ = 100 on Linux).
fn cpu_secs(pid: u32) -> Result<(f64, f64)> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// System CPU seconds of process `pid` (every thread), stime of /proc/PID/stat.
fn sys_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let v: f64 = rest
        .split_whitespace()
        .nth(12)
        .and_then(|v| v.parse().ok())
        .context("stime")?;
    Ok(v / 100.0)
}

fn stat_cpu(stat: &str) -> Result<(f64, f64)> {
    // The command name may hold spaces: the fields after it start past the last ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    ensure!(f.len() == 4, "short stat");
    Ok(((f[0] + f[1]) / 100.0, (f[2] + f[3]) / 100.0))
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b {
        a.duration_since(b).as_secs_f64() * 1e3
    } else {
        -(b.duration_since(a).as_secs_f64() * 1e3)
    }
}

/// The vtid hub: its whole configuration is made here (one template, every spoke's address
/// in one keyring entry, routes from the traffic selectors).
fn start_vtid_hub(ns: &Netns, dir: &Path, mode: Option<&str>) -> Result<Vtid> {
    nstest::hub::start_psk_template_hub_mode(
        ns,
        dir,
        PSK,
        "172.16.0.0/16",
        &format!("metrics = \"{HUB_METRICS}\"\ncookie_threshold = 1000"),
        mode,
    )
}

/// What the helper has done so far.
#[derive(Default)]
struct Tally {
    up: usize,
    down: usize,
    /// The first event it could not act on, or why it stopped early.
    error: Option<String>,
}

/// The persistent helper of the second strongSwan baseline: a thread of this process
/// registered for charon's `child-updown` VICI event, and one `ip -force -batch -` in the
/// hub's namespace that runs the commands the thread writes to its standard input (`-force`:
/// a failed command does not end the batch).
struct Helper {
    ip: std::process::Child,
    /// The thread's VICI connection, shut down to end its blocking read.
    conn: UnixStream,
    /// The thread's id, for its CPU in /proc/self/task/TID/stat.
    tid: i32,
    tally: Arc<Mutex<Tally>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    /// Registers for `child-updown` on charon's VICI socket at `vici` (the confirmation is
    /// awaited here, so no event of the run is missed) and starts the thread and its `ip`.
    fn start(ns: &Netns, vici: &Path, dir: &Path) -> Result<Self> {
        let mut conn = UnixStream::connect(vici)
            .with_context(|| format!("connect to charon at {}", vici.display()))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        conn.write_all(&wire::Packet::Register("child-updown".into()).encode()?)?;
        match read_vici(&mut conn)? {
            Some(wire::Packet::Confirm) => {}
            other => bail!("charon answered the child-updown registration with {other:?}"),
        }
        conn.set_read_timeout(None)?;
        let log = std::fs::File::create(dir.join("helper.log"))?;
        let mut ip = std::process::Command::new("ip")
            .args(["-n", ns.name(), "-force", "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start ip -batch")?;
        let stdin = ip.stdin.take().context("ip's stdin")?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (reader, t2) = (conn.try_clone()?, tally.clone());
        let thread = std::thread::spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            if let Err(e) = helper_loop(reader, stdin, &t2) {
                t2.lock()
                    .expect("tally lock")
                    .error
                    .get_or_insert(format!("{e:#}"));
            }
        });
        let tid = tid_rx.recv().context("helper thread")?;
        Ok(Self {
            ip,
            conn,
            tid,
            tally,
            thread: Some(thread),
        })
    }

    /// CPU seconds so far of the thread, of its `ip`, and the system part of the latter
    /// (creating a netdev is kernel work in the caller's context).
    fn cpu_secs(&self) -> Result<(f64, f64, f64)> {
        let own = stat_cpu(&std::fs::read_to_string(format!(
            "/proc/self/task/{}/stat",
            self.tid
        ))?)?
        .0;
        Ok((own, cpu_secs(self.ip.id())?.0, sys_secs(self.ip.id())?))
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().expect("tally lock")
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // The thread's read returns, it ends and closes `ip`'s standard input: `ip` exits.
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.ip.kill();
        let _ = self.ip.wait();
    }
}

/// One VICI packet from `conn` (README "Transport protocol": a 32-bit big-endian length, then
/// the packet); `None` at the end of the stream.
fn read_vici(conn: &mut UnixStream) -> Result<Option<wire::Packet>> {
    let mut len = [0u8; 4];
    match conn.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("read from charon's VICI socket"),
    }
    let mut body = vec![0u8; wire::check_length(u32::from_be_bytes(len))?];
    conn.read_exact(&mut body)?;
    Ok(Some(wire::decode(&body)?))
}

/// Events until charon closes the connection (or the bench shuts it down): each
/// `child-updown` becomes its `ip` commands, written as one line batch.
fn helper_loop(
    mut conn: UnixStream,
    mut ip: std::process::ChildStdin,
    tally: &Mutex<Tally>,
) -> Result<()> {
    // Child SA (its `child-sas` section name, unique per Child SA) -> its if_id, for a down
    // event that does not list the SA's if_id (charon lists it only in some states).
    let mut if_ids: HashMap<String, u32> = HashMap::new();
    while let Some(p) = read_vici(&mut conn)? {
        let wire::Packet::Event { name, message } = p else {
            continue;
        };
        if name != "child-updown" {
            continue;
        }
        match updown_commands(&message, &mut if_ids) {
            Ok((up, cmds)) => {
                ip.write_all(cmds.as_bytes())
                    .context("write to ip -batch")?;
                let mut t = tally.lock().expect("tally lock");
                if up {
                    t.up += 1;
                } else {
                    t.down += 1;
                }
            }
            Err(e) => {
                tally
                    .lock()
                    .expect("tally lock")
                    .error
                    .get_or_insert(format!("{e:#}: {message:?}"));
            }
        }
    }
    Ok(())
}

/// The `ip` commands of one `child-updown` event, the updown script's: on up the xfrm
/// interface `swvN` with if_id N (charon prints `if-id-in` as hex, updown's `PLUTO_IF_ID_IN`
/// as decimal), up, and a route to each remote traffic selector through it; on down the
/// interface deleted (its routes go with it). Returns whether the event was an up.
fn updown_commands(m: &wire::Message, if_ids: &mut HashMap<String, u32>) -> Result<(bool, String)> {
    let up = m.get("up") == Some("yes");
    let ike = m
        .entries
        .iter()
        .find_map(|(_, e)| match e {
            wire::Element::Section(s) => Some(s),
            _ => None,
        })
        .context("no IKE SA section")?;
    let children = ike.section_of("child-sas").context("no child-sas")?;
    let mut cmds = String::new();
    for (child_name, e) in &children.entries {
        let wire::Element::Section(child) = e else {
            continue;
        };
        let listed = child
            .get("if-id-in")
            .map(|h| u32::from_str_radix(h, 16).with_context(|| format!("if-id-in {h}")))
            .transpose()?;
        let dev = |id: u32| format!("swv{id}");
        if up {
            let id = listed.context("an up Child SA without if-id-in")?;
            if_ids.insert(child_name.clone(), id);
            let _ = writeln!(cmds, "link add {} type xfrm if_id {id}", dev(id));
            let _ = writeln!(cmds, "link set {} up", dev(id));
            let ts = child
                .entries
                .iter()
                .find_map(|(k, e)| match e {
                    wire::Element::List(items) if k == "remote-ts" => Some(items),
                    _ => None,
                })
                .context("no remote-ts")?;
            for t in ts {
                let t = std::str::from_utf8(t).context("remote-ts not text")?;
                let _ = writeln!(cmds, "route replace {t} dev {}", dev(id));
            }
        } else {
            let id = listed
                .or_else(|| if_ids.get(child_name).copied())
                .context("a down Child SA without if-id-in, not seen up")?;
            if_ids.remove(child_name);
            let _ = writeln!(cmds, "link del {}", dev(id));
        }
    }
    ensure!(!cmds.is_empty(), "no Child SA in the event");
    Ok((up, cmds))
}

fn start_hub(
    kind: Kind,
    ns: &Netns,
    dir: &Path,
    mode: Option<&str>,
) -> Result<(HubProc, Option<Helper>)> {
    let updown = match kind {
        // The release binary next to this (release) example, unless NSTEST_VTID_BIN says.
        Kind::Vtid => return Ok((HubProc::Vtid(start_vtid_hub(ns, dir, mode)?), None)),
        Kind::Strongswan => {
            let path = dir.join("updown.sh");
            std::fs::write(
                &path,
                "#!/bin/sh\n\
                 # One xfrm interface per CHILD_SA, keyed by its unique if_id.\n\
                 dev=\"swv$PLUTO_IF_ID_IN\"\n\
                 case \"$PLUTO_VERB\" in\n\
                 up-client)\n\
                 \tip -batch - <<EOF\n\
                 link add $dev type xfrm if_id $PLUTO_IF_ID_IN\n\
                 link set $dev up\n\
                 route replace $PLUTO_PEER_CLIENT dev $dev\n\
                 EOF\n\
                 \t;;\n\
                 down-client)\n\
                 \tip link del \"$dev\"\n\
                 \t;;\n\
                 esac\n",
            )?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            format!("        updown = {}\n", path.display())
        }
        Kind::SwanHelper => String::new(),
    };
    let swanctl = format!(
        "connections {{\n  spokes {{\n    version = 2\n    local_addrs = {HUB_UNDERLAY}\n    \
         remote_addrs = 172.16.0.0/16\n    proposals = aes256gcm16-prfsha256-x25519\n    \
         local {{\n      auth = psk\n      id = {HUB_UNDERLAY}\n    }}\n    \
         remote {{\n      auth = psk\n      id = %any\n    }}\n    children {{\n      c {{\n        \
         local_ts = 10.0.0.0/24\n        remote_ts = 10.128.0.0/16\n        \
         esp_proposals = aes256gcm16\n        mode = tunnel\n        start_action = none\n        \
         if_id_in = %unique\n        if_id_out = %unique\n{updown}      }}\n    }}\n  }}\n}}\n\
         secrets {{\n  ike-spokes {{\n    secret = \"{PSK}\"\n  }}\n}}\n"
    );
    let extra = "  ikesa_table_size = 1024\n  ikesa_table_segments = 16\n  \
                 cookie_threshold = 1000\n  threads = 16\n  filelog {\n    stderr {\n      \
                 default = 1\n      ike = 1\n      cfg = 1\n      knl = 1\n    }\n  }\n";
    let s = Strongswan::start_conf_tuned(ns, dir, &swanctl, extra)?;
    // Running before the first spoke: registered once charon's socket is up.
    let helper = match kind {
        Kind::SwanHelper => Some(Helper::start(ns, &s.vici_path(), dir)?),
        _ => None,
    };
    Ok((HubProc::Swan(s), helper))
}

/// The hub daemon's pid: the process in the hub namespace named `vtid` or `charon`.
/// The vtid hub's `vtid_netlink_requests_total`, scraped in its namespace.
fn netlink_requests(ns: &Netns, kind: Kind) -> Result<Option<f64>> {
    if !matches!(kind, Kind::Vtid) {
        return Ok(None);
    }
    let text = nstest::vtid::scrape_metrics(ns, HUB_METRICS)?;
    let samples = vtid::metrics::parse(&text).map_err(anyhow::Error::msg)?;
    samples
        .iter()
        .find(|(n, _, _)| n == "vtid_netlink_requests_total")
        .map(|(_, _, v)| Some(*v))
        .context("no vtid_netlink_requests_total in the hub's metrics")
}

fn hub_pid(ns: &Netns, kind: Kind) -> Result<u32> {
    let want = match kind {
        Kind::Vtid => "vtid",
        Kind::Strongswan | Kind::SwanHelper => "charon",
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

fn other_pids(ns: &Netns, pid: u32) -> Result<usize> {
    let pids = nstest::cmd::run_args(&["ip", "netns", "pids", ns.name()])?;
    Ok(pids
        .split_whitespace()
        .filter(|p| *p != pid.to_string())
        .count())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

// ---------------------------------------------------------------------------------------
// The hub watched over rtnetlink.

#[derive(Default)]
struct Seen {
    /// Spoke inside address -> (first RTM_NEWROUTE for its /32, output interface).
    routes: HashMap<Ipv4Addr, (Instant, u32)>,
    /// ifindex -> first RTM_NEWLINK with IFF_UP.
    link_up: HashMap<u32, Instant>,
    /// ENOBUFS: the socket overflowed and notifications were lost.
    overruns: u64,
}

impl Seen {
    /// When the spoke's route was in and its interface up: the later of the two.
    fn up_time(&self, inside: Ipv4Addr) -> Option<Instant> {
        let (rt, oif) = self.routes.get(&inside)?;
        Some(match self.link_up.get(oif) {
            Some(l) => (*rt).max(*l),
            None => *rt,
        })
    }
}

struct Monitor {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: std::thread::JoinHandle<()>,
}

impl Monitor {
    /// A NETLINK_ROUTE socket opened on a thread that entered the hub's namespace,
    /// subscribed to RTMGRP_LINK and RTMGRP_IPV4_ROUTE.
    fn start(ns_name: &str) -> Result<Self> {
        let path = format!("/run/netns/{ns_name}");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (s2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let fd = match open_monitor(&path) {
                Ok(fd) => {
                    let _ = ready_tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 1 << 16];
            while !s2.load(Ordering::Relaxed) {
                match sock::recv(fd.as_raw_fd(), &mut buf, sock::MsgFlags::empty()) {
                    Ok(len) => {
                        let now = Instant::now();
                        let mut s = seen2.lock().expect("monitor lock");
                        parse_rtnl(&buf[..len], now, &mut s);
                    }
                    Err(nix::errno::Errno::ENOBUFS) => {
                        seen2.lock().expect("monitor lock").overruns += 1;
                    }
                    Err(_) => {} // receive timeout: check the stop flag
                }
            }
        });
        ready_rx.recv().context("monitor thread")??;
        Ok(Self { stop, seen, thread })
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *self.seen.lock().expect("monitor lock"))
    }
}

fn open_monitor(ns_path: &str) -> Result<OwnedFd> {
    let f = std::fs::File::open(ns_path).with_context(|| format!("open {ns_path}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns hub")?;
    let fd = sock::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // Bursts of N interfaces and routes: a large buffer so no notification is dropped
    // (ENOBUFS is counted and reported if it happens anyway).
    let _ = sock::setsockopt(&fd, sock::sockopt::RcvBufForce, &(32 << 20));
    sock::setsockopt(
        &fd,
        sock::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 200_000),
    )?;
    // include/uapi/linux/rtnetlink.h: RTMGRP_LINK = 1, RTMGRP_IPV4_ROUTE = 0x40.
    sock::bind(fd.as_raw_fd(), &sock::NetlinkAddr::new(0, 0x1 | 0x40))?;
    Ok(fd)
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Netlink attributes (struct rtattr: u16 len, u16 type, payload, 4-aligned) from `b`.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)?;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

/// Records RTM_NEWLINK (IFF_UP) and RTM_NEWROUTE (IPv4 /32 with an output interface).
fn parse_rtnl(mut buf: &[u8], now: Instant, s: &mut Seen) {
    const RTM_NEWLINK: u16 = 16;
    const RTM_NEWROUTE: u16 = 24;
    const IFF_UP: u32 = 1;
    while let (Some(len), Some(ty)) = (u32_at(buf, 0), u16_at(buf, 4)) {
        let len = len as usize;
        if len < 16 || len > buf.len() {
            return;
        }
        let body = &buf[16..len];
        match ty {
            // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
            RTM_NEWLINK => {
                if let (Some(idx), Some(flags)) = (u32_at(body, 4), u32_at(body, 8))
                    && flags & IFF_UP != 0
                {
                    s.link_up.entry(idx).or_insert(now);
                }
            }
            // struct rtmsg (12 bytes): family, dst_len, src_len, tos, table, protocol, scope,
            // type, flags u32; then RTA_DST = 1, RTA_OIF = 4.
            RTM_NEWROUTE if body.len() >= 12 && body[0] == 2 && body[1] == 32 => {
                let (mut dst, mut oif) = (None, None);
                for (t, p) in attrs(&body[12..]) {
                    match t {
                        1 if p.len() == 4 => dst = Some(Ipv4Addr::new(p[0], p[1], p[2], p[3])),
                        4 => oif = u32_at(p, 0),
                        _ => {}
                    }
                }
                if let (Some(d), Some(o)) = (dst, oif) {
                    s.routes.entry(d).or_insert((now, o));
                }
            }
            _ => {}
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
}

// ---------------------------------------------------------------------------------------
// The load generator.

struct LgResult {
    t0: Instant,
    /// IKE_AUTH request of the attempt that succeeded.
    auth_sent: Vec<Option<Instant>>,
    /// IKE_AUTH request of the first attempt.
    first_auth_sent: Vec<Option<Instant>>,
    auth_done: Vec<Option<Instant>>,
    pinged: Vec<Option<Instant>>,
    failures: usize,
    fail_reasons: std::collections::BTreeMap<&'static str, usize>,
    /// First IKE_SA_INIT of the first attempt.
    init_sent: Vec<Option<Instant>>,
    /// Attempts started per spoke.
    attempts: Vec<u32>,
    /// IKE datagrams sent per spoke (2 when nothing was retransmitted or retried).
    transmits: Vec<u32>,
    /// CPU seconds of the load generator's threads (the engines and the pinger).
    cpu: f64,
}

/// Runs the load generator on a thread inside the `lg` namespace (sockets and netlink
/// handles are created there and keep that namespace). Spokes `0..n` go through `window` at a
/// time; then spokes `n..n + probe`, one at a time.
fn loadgen(
    ns_name: &str,
    n: usize,
    probe: usize,
    window: usize,
    timeout: Duration,
) -> Result<LgResult> {
    let path = format!("/run/netns/{ns_name}");
    std::thread::spawn(move || -> Result<LgResult> {
        let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns lg")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(loadgen_async(n, probe, window, timeout))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load generator panicked"))?
}

/// Patient: a hub running N updown scripts on a TCG VM may take seconds to answer. 2 + 4 +
/// ... + 256 s: a spoke gives up only after 8.5 minutes, so a slow hub is measured by how
/// long it takes, not by spokes giving up and starting over.
fn spoke_config(i: usize) -> Arc<EndpointConfig> {
    bench_common::spoke_config(
        i,
        PSK,
        RetransmitConfig {
            initial: Duration::from_secs(2),
            tries: 8,
        },
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Waiting,
    InFlight,
    Up,
    Failed,
}

/// The spoke's two SAs and its out/in policies, keyed by its inside /32.
fn spoke_kernel_objects(
    i: usize,
    inst: &ChildSaInstall,
) -> (Vec<xfrm::SaSpec>, Vec<xfrm::PolicySpec>) {
    let (l, r) = (inst.local.ip(), inst.remote.ip());
    // Unique per spoke but not in step with its address: the kernel hashes an SA by
    // `reqid ^ (daddr + saddr)` (net/xfrm/xfrm_hash.h, `__xfrm_dst_hash`), so a reqid that
    // grows with the spoke's address, as 0x100 + i did, puts most spokes' SAs in a few
    // chains, and the load generator's own SA inserts and lookups (`__find_acq_core`,
    // `__xfrm_state_bump_genids`, `xfrm_state_find`) grew with N: at 10,000 spokes they
    // were 68 s of its CPU, time taken from the hub's two CPUs. An odd multiplier is a
    // bijection on u32, and maps no i + 1 to 0 (reqid 0 means "any").
    let reqid = (i as u32 + 1).wrapping_mul(0x9e37_79b1);
    let aead = |k: &ike::EspKeys| xfrm::Crypto::Aead {
        alg: xfrm::AeadAlg::AesGcm16,
        key: xfrm::Key::from_slice(k.encr.expose()),
    };
    let sas = vec![
        xfrm::SaSpec::new(r, l, xfrm::Spi(inst.inbound_spi), aead(&inst.inbound))
            .mode(xfrm::Mode::Tunnel)
            .reqid(reqid)
            .replay_window(32),
        xfrm::SaSpec::new(l, r, xfrm::Spi(inst.outbound_spi), aead(&inst.outbound))
            .mode(xfrm::Mode::Tunnel)
            .reqid(reqid),
    ];
    let inside = IpNet::from(IpAddr::V4(spoke_inside(i)));
    let lan = IpNet::from(IpAddr::V4(HUB_LAN));
    let pols = vec![
        xfrm::PolicySpec::new(xfrm::Selector::new(inside, lan), xfrm::Dir::Out)
            .template(xfrm::Template::tunnel(l, r, reqid)),
        xfrm::PolicySpec::new(xfrm::Selector::new(lan, inside), xfrm::Dir::In)
            .template(xfrm::Template::tunnel(r, l, reqid)),
    ];
    (sas, pols)
}

async fn loadgen_async(
    main: usize,
    probe: usize,
    window: usize,
    timeout: Duration,
) -> Result<LgResult> {
    let n = main + probe;
    let lg_cpu_start = thread_cpu()?;
    ensure!(
        matches!(
            EspProposal::AES256GCM.encr,
            ike::transform::Encr::AesGcm16 { .. }
        ),
        "the spokes install AES-GCM SAs"
    );
    let h = xfrm::Handle::open(xfrm::Netns::Current)?;
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Vec<u8>, SocketAddr, Instant)>();
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        // Receives through tokio; sends straight on the fd (a UDP send does not wait, and
        // tokio's `try_send_to` refuses until the socket has been polled writable).
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
    // Pings: one raw ICMP socket; the source address of each echo is the spoke's inside
    // address, chosen per packet with IP_PKTINFO (ipi_spec_dst), so the kernel's policy
    // lookup sees the spoke's /32.
    let icmp = sock::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )?;
    sock::setsockopt(
        &icmp,
        sock::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 200_000),
    )?;
    let _ = sock::setsockopt(&icmp, sock::sockopt::RcvBufForce, &(8 << 20));
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let stop = Arc::new(AtomicBool::new(false));
    let icmp_rx = icmp.try_clone()?;
    let stop2 = stop.clone();
    let receiver = std::thread::spawn(move || {
        let cpu0 = thread_cpu().unwrap_or(0.0);
        let mut buf = vec![0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            let Ok(len) = sock::recv(icmp_rx.as_raw_fd(), &mut buf, sock::MsgFlags::empty()) else {
                continue;
            };
            let now = Instant::now();
            let b = &buf[..len];
            let ihl = usize::from(b.first().copied().unwrap_or(0) & 0xf) * 4;
            if len < ihl + 8 || ihl < 20 {
                continue;
            }
            let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
            let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
            let icmp = &b[ihl..];
            // Echo reply (type 0) from the hub, with our identifier.
            if icmp[0] == 0
                && src == HUB_LAN
                && u16::from_be_bytes([icmp[4], icmp[5]]) == PING_ID
                && let Some(i) = inside_index(dst)
            {
                let _ = ptx.send((i, now));
            }
        }
        thread_cpu().unwrap_or(0.0) - cpu0
    });

    let mut eng: Vec<Endpoint> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            seed[8] = 0xb5;
            Endpoint::new(spoke_config(i), seed)
        })
        .collect();
    let mut st = vec![St::Waiting; n];
    let mut got_reply = vec![false; n];
    let mut attempts = vec![0u32; n];
    let mut auth_sent: Vec<Option<Instant>> = vec![None; n];
    let mut auth_done: Vec<Option<Instant>> = vec![None; n];
    let mut pinged: Vec<Option<Instant>> = vec![None; n];
    // Due pings in time order (a scan of all N per loop made the load generator O(N²)).
    let mut ping_due: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize)>> =
        std::collections::BinaryHeap::new();
    let mut init_sent: Vec<Option<Instant>> = vec![None; n];
    let mut transmits = vec![0u32; n];
    let mut main_left = main; // of the first `main`: neither pinged nor given up
    let mut in_flight: Vec<usize> = Vec::new();
    let mut next = 0usize;
    let mut failures = 0usize;
    let mut fail_reasons = std::collections::BTreeMap::new();
    let mut first_auth_sent: Vec<Option<Instant>> = vec![None; n];
    let mut retry: Vec<usize> = Vec::new();
    let mut remaining = n; // neither pinged nor given up
    let mut ping_error_shown = false;
    let t0 = Instant::now();
    let deadline = t0 + timeout;

    let send_ping = |i: usize| -> Result<()> {
        let mut pkt = [0u8; 16];
        pkt[0] = 8; // echo request
        pkt[4..6].copy_from_slice(&PING_ID.to_be_bytes());
        pkt[6..8].copy_from_slice(&(i as u16).to_be_bytes());
        pkt[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let ck = inet_checksum(&pkt);
        pkt[2..4].copy_from_slice(&ck.to_be_bytes());
        let info = nix::libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: nix::libc::in_addr {
                s_addr: u32::from(spoke_inside(i)).to_be(),
            },
            ipi_addr: nix::libc::in_addr { s_addr: 0 },
        };
        let dst = sock::SockaddrIn::from(std::net::SocketAddrV4::new(HUB_LAN, 0));
        sock::sendmsg(
            icmp.as_raw_fd(),
            &[IoSlice::new(&pkt)],
            &[sock::ControlMessage::Ipv4PacketInfo(&info)],
            sock::MsgFlags::MSG_DONTWAIT,
            Some(&dst),
        )?;
        Ok(())
    };

    while remaining > 0 {
        let now = Instant::now();
        if now >= deadline {
            eprintln!(
                "   load generator timed out after {timeout:?}: {remaining} spokes not through \
                 ({} IKE_AUTH sent, {} answered, {} pinged)",
                auth_sent.iter().flatten().count(),
                auth_done.iter().flatten().count(),
                pinged.iter().flatten().count()
            );
            break;
        }
        // Keep the window full: re-tries of failed handshakes first. The probe spokes go
        // one at a time once every one of the first `main` is through.
        loop {
            let cap = if next < main || main_left > 0 {
                window
            } else {
                1
            };
            let more = !retry.is_empty() || (next < main) || (main_left == 0 && next < n);
            if in_flight.len() >= cap || !more {
                break;
            }
            let i = match retry.pop() {
                Some(i) => i,
                None => {
                    next += 1;
                    next - 1
                }
            };
            if init_sent[i].is_none() {
                init_sent[i] = Some(Instant::now());
            }
            st[i] = St::InFlight;
            attempts[i] += 1;
            in_flight.push(i);
            eng[i].handle_command(Instant::now(), ike::Command::Initiate { conn: ConnId(1) });
            drain(
                i,
                &mut eng[i],
                &socks[i],
                None,
                &mut auth_sent,
                &mut auth_done,
                &mut transmits,
                &mut Vec::new(),
            )?;
        }
        // Due pings.
        while let Some(&std::cmp::Reverse((t, i))) = ping_due.peek()
            && t <= now
        {
            ping_due.pop();
            if got_reply[i] {
                continue;
            }
            if let Err(e) = send_ping(i)
                && !ping_error_shown
            {
                eprintln!("   ping from spoke {i}: {e:#}");
                ping_error_shown = true;
            }
            ping_due.push(std::cmp::Reverse((now + Duration::from_millis(300), i)));
        }
        let wake = in_flight
            .iter()
            .filter_map(|&i| eng[i].poll_timeout())
            .chain(ping_due.peek().map(|r| r.0.0))
            .min()
            .unwrap_or(now + Duration::from_millis(300))
            .min(now + Duration::from_millis(300))
            .max(now);
        let mut installs: Vec<(usize, ChildSaInstall)> = Vec::new();
        let mut failed: Vec<(usize, &'static str)> = Vec::new();
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
                    let mut ev = Vec::new();
                    drain(i, &mut eng[i], &socks[i], Some(at), &mut auth_sent, &mut auth_done, &mut transmits, &mut ev)?;
                    for e in ev {
                        match e {
                            Step::Installed(inst) => installs.push((i, *inst)),
                            Step::Failed(why) => failed.push((i, why)),
                        }
                    }
                }
            }
            p = prx.recv() => {
                let (i, at) = p.context("icmp channel")?;
                if i < n && !got_reply[i] {
                    got_reply[i] = true;
                    pinged[i] = Some(at);
                    remaining -= 1;
                    if i < main {
                        main_left -= 1;
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                for &i in &in_flight {
                    if eng[i].poll_timeout().is_some_and(|t| t <= now) {
                        eng[i].handle_timeout(now);
                        let mut ev = Vec::new();
                        drain(i, &mut eng[i], &socks[i], None, &mut auth_sent, &mut auth_done, &mut transmits, &mut ev)?;
                        for e in ev {
                            match e {
                                Step::Installed(inst) => installs.push((i, *inst)),
                                Step::Failed(why) => failed.push((i, why)),
                            }
                        }
                    }
                }
            }
        }
        for (i, why) in failed {
            if st[i] != St::InFlight {
                continue;
            }
            failures += 1;
            *fail_reasons.entry(why).or_insert(0) += 1;
            // The next attempt is timed on its own; the first one's request is kept.
            if first_auth_sent[i].is_none() {
                first_auth_sent[i] = auth_sent[i];
            }
            auth_sent[i] = None;
            auth_done[i] = None;
            in_flight.retain(|&j| j != i);
            if attempts[i] < 3 {
                st[i] = St::Waiting;
                retry.push(i);
            } else {
                st[i] = St::Failed;
                remaining -= 1;
                if i < main {
                    main_left -= 1;
                }
            }
        }
        if !installs.is_empty() {
            let mut b = h.batch();
            // What each batch item is (spoke, and the SA's addresses and SPI), so that an
            // error names it; formatted only then, the loop being the load generator's.
            let mut what = Vec::new();
            for (i, inst) in &installs {
                let (sas, pols) = spoke_kernel_objects(*i, inst);
                for s in &sas {
                    b.add_sa(s);
                    what.push((*i, Some((s.src, s.dst, s.spi.0))));
                }
                for p in &pols {
                    b.add_policy(p);
                    what.push((*i, None));
                }
            }
            for (r, (i, sa)) in b.execute().await?.into_iter().zip(what) {
                r.with_context(|| {
                    let item = sa.map_or("a policy".to_string(), |(src, dst, spi)| {
                        format!("SA {src} -> {dst} spi {spi:08x}")
                    });
                    format!(
                        "spoke SA/policy install: spoke {i} (state {:?}, attempt {}): {item}",
                        st[i], attempts[i]
                    )
                })?;
            }
            for (i, _) in installs {
                if st[i] == St::InFlight {
                    in_flight.retain(|&j| j != i);
                }
                st[i] = St::Up;
                let _ = send_ping(i);
                ping_due.push(std::cmp::Reverse((
                    Instant::now() + Duration::from_millis(300),
                    i,
                )));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cpu_receiver = receiver.join().unwrap_or(0.0);
    let cpu = thread_cpu()? - lg_cpu_start + cpu_receiver;
    for (f, a) in first_auth_sent.iter_mut().zip(&auth_sent) {
        if f.is_none() {
            *f = *a;
        }
    }
    Ok(LgResult {
        t0,
        auth_sent,
        first_auth_sent,
        auth_done,
        pinged,
        failures,
        fail_reasons,
        init_sent,
        attempts,
        transmits,
        cpu,
    })
}

/// CPU seconds (user+system) of the calling thread so far.
fn thread_cpu() -> Result<f64> {
    Ok(stat_cpu(&std::fs::read_to_string("/proc/thread-self/stat")?)?.0)
}

enum Step {
    Installed(Box<ChildSaInstall>),
    Failed(&'static str),
}

/// Handles one engine's outputs: datagrams go out on the spoke's socket; the first datagram
/// after the IKE_SA_INIT response is the IKE_AUTH request (timestamped); a Child SA install
/// (the IKE_AUTH response arrived) is acknowledged at once and handed to the caller, who
/// installs it in the kernel.
#[allow(clippy::too_many_arguments)]
fn drain(
    i: usize,
    e: &mut Endpoint,
    s: &tokio::net::UdpSocket,
    received: Option<Instant>,
    auth_sent: &mut [Option<Instant>],
    auth_done: &mut [Option<Instant>],
    transmits: &mut [u32],
    out: &mut Vec<Step>,
) -> Result<()> {
    while let Some(o) = e.poll_output() {
        match o {
            Output::Transmit(t) => {
                transmits[i] += 1;
                // IKE_SA_INIT carries no encrypted payload; the IKE_AUTH request is the
                // first message with exchange type 35 (RFC 7296 §3.1, header octet 18).
                if t.bytes.get(18) == Some(&35) && auth_sent[i].is_none() {
                    auth_sent[i] = Some(Instant::now());
                }
                let to = sock::SockaddrStorage::from(t.remote);
                if let Err(err) =
                    sock::sendto(s.as_raw_fd(), &t.bytes, &to, sock::MsgFlags::empty())
                {
                    eprintln!("spoke {i}: send: {err}");
                }
            }
            Output::InstallChildSa(inst) => {
                e.handle_install_result(Instant::now(), inst.child, Ok(()));
                if auth_done[i].is_none() {
                    auth_done[i] = Some(received.unwrap_or_else(Instant::now));
                }
                out.push(Step::Installed(Box::new(inst)));
            }
            Output::Event(Event::AuthFailed { reason, .. }) => out.push(Step::Failed(reason)),
            Output::Event(Event::PeerDead { .. }) => out.push(Step::Failed("no answer")),
            Output::Event(Event::IkeSaDown { .. }) => out.push(Step::Failed("IKE SA down")),
            _ => {}
        }
    }
    Ok(())
}

/// RFC 1071 Internet checksum.
fn inet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ---------------------------------------------------------------------------------------
// Output.

fn per_tunnel_kib(after: u64, before: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n as f64
}

fn print_table(a: &Args, n: usize, all: &[&Figures]) {
    println!(
        "dynamic-VTI hub, {n} spokes from one load generator, {} handshakes in flight, one run \
         (PSK, X25519, AES-GCM-256); then {} more spokes one at a time:",
        a.window, a.probe
    );
    let mut head = format!("  {:<46}", "");
    for f in all {
        let _ = write!(head, " {:>18}", f.kind.label());
    }
    println!("{head}");
    let row = |name: &str, f: &dyn Fn(&Figures) -> Option<f64>, unit: &str| {
        let mut line = format!("  {name:<46}");
        for x in all {
            let c = f(x).map_or("-".to_string(), |v| format!("{v:.1}{unit}"));
            let _ = write!(line, " {c:>18}");
        }
        // Each baseline against vtid, when vtid ran.
        if let Some(v) = all.iter().find(|x| x.kind == Kind::Vtid).and_then(|x| f(x))
            && v > 0.0
        {
            for x in all.iter().filter(|x| x.kind != Kind::Vtid) {
                if let Some(y) = f(x) {
                    let _ = write!(line, "  {:.1}x", y / v);
                }
            }
        }
        println!("{line}");
    };
    let mut up = format!("  {:<46}", "tunnels up and passing a ping");
    for f in all {
        let c = format!(
            "{}/{}{}",
            f.pinged,
            f.spokes,
            if f.pinged < f.spokes { " NOT ALL" } else { "" }
        );
        let _ = write!(up, " {c:>18}");
    }
    println!("{up}");
    row(
        "time to all up and pinging (s)",
        &|f| Some(f.wall.as_secs_f64()),
        "",
    );
    row(
        "time to 95% up and pinging (s)",
        &|f| Some(f.wall95.as_secs_f64()),
        "",
    );
    row(
        "time per tunnel, all up (ms)",
        &|f| Some(f.wall.as_secs_f64() * 1e3 / f.spokes as f64),
        "",
    );
    row(
        "up on the first try, no retransmit (%)",
        &|f| Some(100.0 * f.first_try as f64 / f.spokes as f64),
        "",
    );
    row(
        "IKE_SA_INIT -> ping reply p50, window (ms)",
        &|f| pct(&f.setup_window, 50.0),
        "",
    );
    row(
        "IKE_SA_INIT -> ping reply p99, window (ms)",
        &|f| pct(&f.setup_window, 99.0),
        "",
    );
    row(
        "IKE_SA_INIT -> IKE_AUTH resp. p50, alone (ms)",
        &|f| pct(&f.handshake_alone, 50.0),
        "",
    );
    row(
        "IKE_SA_INIT -> ping reply p50, alone (ms)",
        &|f| pct(&f.setup_alone, 50.0),
        "",
    );
    row(
        "IKE_SA_INIT -> ping reply p99, alone (ms)",
        &|f| pct(&f.setup_alone, 99.0),
        "",
    );
    row(
        "AUTH request -> hub iface+route p50 (ms)",
        &|f| pct(&f.from_request, 50.0),
        "",
    );
    row(
        "AUTH request -> hub iface+route p99 (ms)",
        &|f| pct(&f.from_request, 99.0),
        "",
    );
    row(
        "  same from the first attempt's request p99",
        &|f| pct(&f.from_first_request, 99.0),
        "",
    );
    row(
        "AUTH response -> hub iface+route p50 (ms)",
        &|f| pct(&f.from_response, 50.0),
        "",
    );
    row(
        "hub RSS per tunnel (KiB)",
        &|f| {
            Some(per_tunnel_kib(
                f.rss_after_kib,
                f.rss_before_kib,
                f.spokes + f.probes,
            ))
        },
        "",
    );
    row(
        "kernel slab per tunnel, both sides (KiB)",
        &|f| {
            Some(per_tunnel_kib(
                f.slab_after_kib,
                f.slab_before_kib,
                f.spokes + f.probes,
            ))
        },
        "",
    );
    row("hub CPU (s)", &|f| Some(f.cpu_hub), "");
    row("  of which in the kernel (s)", &|f| Some(f.cpu_hub_sys), "");
    row(
        "  its children (updown, ip) + helper CPU (s)",
        &|f| Some(f.cpu_children + f.cpu_helper),
        "",
    );
    row("load generator CPU (s)", &|f| Some(f.cpu_lg), "");
    row(
        "hub netlink requests per tunnel",
        &|f| f.netlink_requests.map(|r| r / (f.spokes + f.probes) as f64),
        "",
    );
    row(
        "load average (1 min) when all were up",
        &|f| Some(f.loadavg),
        "",
    );
    for f in all {
        println!(
            "  {}: RSS {} KiB before, {} KiB after; slab {} -> {} KiB; {} xfrm interfaces on \
             the hub; {} spokes' interface+route seen by rtnetlink{}; {} failed handshake \
             attempts (retried) {:?}{}",
            f.kind.label(),
            f.rss_before_kib,
            f.rss_after_kib,
            f.slab_before_kib,
            f.slab_after_kib,
            f.hub_xfrm_links,
            f.seen_on_hub,
            if f.monitor_overruns > 0 {
                format!(
                    " ({} netlink overruns: some events lost)",
                    f.monitor_overruns
                )
            } else {
                String::new()
            },
            f.handshake_failures,
            f.fail_reasons,
            if f.helper_note.is_empty() {
                String::new()
            } else {
                format!("; {}", f.helper_note)
            }
        );
    }
    println!();
}

/// One line per run, and how vtid's time per tunnel grows against its time at 1,000 spokes
/// (issue 20's base), or at the smallest N of a sweep without 1,000.
fn print_summary(all: &[Figures], floors: &[(usize, Duration)]) {
    println!("summary, one run per N (time per tunnel = time to all N up and pinging / N):");
    println!(
        "  {:>6} {:<18} {:>9} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "N",
        "hub",
        "up",
        "ms/tunnel",
        "vs vtid",
        "all-up s",
        "95% s",
        "1st try%",
        "alone ms",
        "RSS KiB/t",
        "slab KiB/t",
        "load"
    );
    for f in all {
        let per = f.wall.as_secs_f64() * 1e3 / f.spokes as f64;
        let vs = all
            .iter()
            .find(|v| v.kind == Kind::Vtid && v.spokes == f.spokes)
            .map(|v| per / (v.wall.as_secs_f64() * 1e3 / v.spokes as f64))
            .map_or("-".to_string(), |r| format!("{r:.1}x"));
        println!(
            "  {:>6} {:<18} {:>9} {:>11.1} {:>8} {:>8.1} {:>8.1} {:>9.1} {:>9} {:>9.1} {:>10.1} {:>6.1}",
            f.spokes,
            f.kind.label(),
            format!("{}/{}", f.pinged, f.spokes),
            per,
            vs,
            f.wall.as_secs_f64(),
            f.wall95.as_secs_f64(),
            100.0 * f.first_try as f64 / f.spokes as f64,
            pct(&f.setup_alone, 50.0).map_or("-".into(), |v| format!("{v:.0}")),
            per_tunnel_kib(f.rss_after_kib, f.rss_before_kib, f.spokes + f.probes),
            per_tunnel_kib(f.slab_after_kib, f.slab_before_kib, f.spokes + f.probes),
            f.loadavg
        );
    }
    let vtid: Vec<&Figures> = all.iter().filter(|f| f.kind == Kind::Vtid).collect();
    let first = vtid
        .iter()
        .find(|f| f.spokes == 1000)
        .or(vtid.first())
        .copied();
    if let (Some(first), true) = (first, vtid.len() > 1) {
        let base = first.wall.as_secs_f64() / first.spokes as f64;
        for f in vtid.iter().filter(|f| f.spokes != first.spokes) {
            let per = f.wall.as_secs_f64() / f.spokes as f64;
            println!(
                "  vtid time per tunnel at {} against {}: {:.2}x (target at 10,000 against \
                 1,000: within 1.5x)",
                f.spokes,
                first.spokes,
                per / base
            );
        }
    }
    let floor = |n: usize| {
        floors
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, t)| t.as_secs_f64() * 1e3 / n as f64)
    };
    for f in &vtid {
        let Some(fl) = floor(f.spokes) else { continue };
        let per = f.wall.as_secs_f64() * 1e3 / f.spokes as f64;
        println!(
            "  kernel alone, the 3 policies per spoke at N = {} (one batch, no IKE): {fl:.2} \
             ms/tunnel; vtid's time per tunnel less it: {:.1} ms",
            f.spokes,
            per - fl
        );
    }
    if let (Some(a), Some(b)) = (first, vtid.last())
        && a.spokes != b.spokes
        && let (Some(fa), Some(fb)) = (floor(a.spokes), floor(b.spokes))
    {
        let per = |f: &Figures| f.wall.as_secs_f64() * 1e3 / f.spokes as f64;
        println!(
            "  growth {} -> {}: kernel policy insert alone {:.2}x; vtid less it {:.2}x",
            a.spokes,
            b.spokes,
            fb / fa,
            (per(b) - fb) / (per(a) - fa)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `child-updown` message shaped as strongSwan 5.9.8's `vici_query.c` builds it
    /// (`child_updown`, `list_child`, `list_child_ipsec`), through the wire and back.
    fn event(up: bool, if_id: Option<&str>) -> wire::Message {
        let mut child = wire::Message::new()
            .kv("name", "c")
            .kv("uniqueid", 7)
            .kv("state", if up { "INSTALLED" } else { "DELETING" });
        if let Some(id) = if_id {
            child = child.kv("if-id-in", id).kv("if-id-out", id);
        }
        let child = child
            .list("local-ts", &["10.0.0.0/24"])
            .list("remote-ts", &["10.128.0.5/32"]);
        let ike = wire::Message::new()
            .kv("uniqueid", 3)
            .section("child-sas", wire::Message::new().section("c-7", child));
        let m = if up {
            wire::Message::new().kv("up", "yes")
        } else {
            wire::Message::new()
        }
        .section("spokes", ike);
        let bytes = wire::Packet::Event {
            name: "child-updown".into(),
            message: m,
        }
        .encode()
        .unwrap();
        match wire::decode_frame(&bytes).unwrap() {
            wire::Packet::Event { message, .. } => message,
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn child_updown_becomes_the_updown_scripts_commands() {
        let mut ids = HashMap::new();
        let (up, cmds) = updown_commands(&event(true, Some("0000002a")), &mut ids).unwrap();
        assert!(up);
        assert_eq!(
            cmds,
            "link add swv42 type xfrm if_id 42\nlink set swv42 up\n\
             route replace 10.128.0.5/32 dev swv42\n"
        );
        // A down event without the if_id: the one seen on up.
        let (up, cmds) = updown_commands(&event(false, None), &mut ids).unwrap();
        assert!(!up);
        assert_eq!(cmds, "link del swv42\n");
        // Neither listed nor seen: an error, not a guess.
        assert!(updown_commands(&event(false, None), &mut ids).is_err());
        assert!(updown_commands(&event(true, None), &mut ids).is_err());
        assert!(updown_commands(&event(true, Some("zz")), &mut ids).is_err());
    }
}
