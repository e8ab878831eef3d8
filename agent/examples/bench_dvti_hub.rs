//! Benchmark (not a test): a dynamic-VTI hub with N spokes, vtid against strongSwan with an
//! updown script (what users do today), in one run. Prints, for each hub and side by side:
//! how many tunnels came up and passed a ping, the wall time from the first IKE_SA_INIT to
//! the last tunnel passing its ping, p50/p99 from IKE_AUTH to the hub's per-peer interface
//! being up with its route, the hub's RSS per tunnel, and (vtid only) the netlink requests
//! the hub sent per tunnel (its `vtid_netlink_requests_total`, scraped before and after).
//!
//! Runs inside the VM (it needs xfrm_interface and esp4), as root:
//!
//! ```text
//! cargo build -p nstest --bins
//! cargo build --release -p vtid --bin vtid --example bench_dvti_hub
//! $CARGO_TARGET_DIR/debug/nstest vm -- \
//!     $CARGO_TARGET_DIR/release/examples/bench_dvti_hub [--spokes N] [--window W] [--only vtid|strongswan]
//! ```
//!
//! (default N = 1000, W = 50; the hub's `vtid` is the release binary next to this example.)
//!
//! Topology: a `hub` namespace and one load generator `lg`, joined by a veth in 172.16.0.0/16.
//! The load generator holds N underlay addresses (172.16.1.0 + i) and N inside addresses
//! (10.128.0.1 + i, /32 on a dummy). Each spoke is an in-process `ike` engine with its own UDP
//! socket on its underlay address; it authenticates with a PSK under its address identity
//! and proposes TSi = its inside /32, TSr = the hub's LAN address 10.0.0.1/32. At most W
//! handshakes are in flight at any time (the same for both hubs). When a spoke's IKE_AUTH
//! response arrives its SAs and two policies (keyed by its inside /32, so the load generator
//! needs no interface per spoke) go into the `lg` kernel with the `xfrm` crate, and the spoke
//! pings 10.0.0.1 from its inside address (raw ICMP with IP_PKTINFO), every 300 ms until a
//! reply comes back through its tunnel. Spokes retransmit patiently (2 s doubling, 8 tries,
//! about 8.5 minutes); an attempt that fails anyway (no answer, or the hub dropped the IKE SA)
//! is counted, reported by reason and started again, at most three attempts per spoke.
//!
//! The hub is watched over rtnetlink from inside its namespace (RTM_NEWLINK with IFF_UP,
//! RTM_NEWROUTE for each spoke's /32), timestamped on the same monotonic clock as the load
//! generator, so "interface up with its route" is the later of the two for the route's
//! interface. Both hubs create the interface while they process IKE_AUTH, before they send
//! the response (vtid on `PeerAuthenticated`, charon runs updown from the Child SA install),
//! so the latency is given from the spoke sending its IKE_AUTH request (always positive) and
//! from it receiving the response (negative: the interface was up before the answer left).
//!
//! Baseline: charon (Debian's strongSwan) with one connection matching every spoke,
//! `if_id_in = if_id_out = %unique` and an updown script that adds an xfrm interface with
//! that if_id, sets it up and routes the spoke's traffic selector into it (one `ip -batch`
//! call, not three `ip` processes), and deletes it on down-client. Tuned for many peers so it
//! is not handicapped: `ikesa_table_size = 1024`, `ikesa_table_segments = 16`,
//! `cookie_threshold = 1000` (the default 30 would demand cookies at a window of 50: an
//! extra round trip per spoke; the vtid hub gets the same `cookie_threshold = 1000`), stock
//! 16 threads, log level 1 (vtid logs at its default `info`).

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
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
    Strongswan,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Vtid => "vtid",
            Kind::Strongswan => "strongSwan+updown",
        }
    }
}

struct Args {
    spokes: usize,
    window: usize,
    only: Option<Kind>,
    timeout: Duration,
    /// The vtid hub's `virtual_template.mode` (`--template-mode multipoint`).
    template_mode: Option<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        spokes: 1000,
        window: 50,
        only: None,
        timeout: Duration::from_secs(1800),
        template_mode: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut it = v.iter();
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--spokes" => a.spokes = val()?.parse().context("--spokes")?,
            "--window" => a.window = val()?.parse().context("--window")?,
            "--template-mode" => a.template_mode = Some(val()?.clone()),
            "--timeout-secs" => {
                a.timeout = Duration::from_secs(val()?.parse().context("--timeout-secs")?)
            }
            "--only" => {
                a.only = Some(match val()?.as_str() {
                    "vtid" => Kind::Vtid,
                    "strongswan" => Kind::Strongswan,
                    o => bail!("--only vtid|strongswan, not {o}"),
                })
            }
            o => bail!(
                "unknown argument {o}; usage: bench_dvti_hub [--spokes N] [--window W] \
                 [--only vtid|strongswan] [--timeout-secs S] [--template-mode multipoint]"
            ),
        }
    }
    ensure!(a.spokes >= 1 && a.spokes <= 60_000, "--spokes 1..=60000");
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
    let kinds: Vec<Kind> = match a.only {
        Some(k) => vec![k],
        None => vec![Kind::Vtid, Kind::Strongswan],
    };
    let mut all = Vec::new();
    for k in kinds {
        wait_idle();
        eprintln!(
            "== {} hub, {} spokes, window {}",
            k.label(),
            a.spokes,
            a.window
        );
        let f = run_hub(k, &a)?;
        eprintln!(
            "   {} pinged of {} in {:.2} s",
            f.pinged,
            f.spokes,
            f.wall.as_secs_f64()
        );
        all.push(f);
    }
    print_table(&a, &all);
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

fn run_hub(kind: Kind, a: &Args) -> Result<Figures> {
    let n = a.spokes;
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
    for i in 0..n {
        let _ = writeln!(batch, "addr add {}/16 dev e-hub", spoke_underlay(i));
        let _ = writeln!(batch, "addr add {}/32 dev in0", spoke_inside(i));
    }
    let bf = dir.join("lg.batch");
    std::fs::write(&bf, batch)?;
    lg_ns.ip(&["-batch", &bf.to_string_lossy()])?;

    let hub = start_hub(kind, hub_ns, &dir, a.template_mode.as_deref())?;
    let pid = hub_pid(hub_ns, kind)?;
    // Let the daemon settle (start-up sweep, sockets) before the baseline RSS.
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = rss_kib(pid)?;
    let nl_before = netlink_requests(hub_ns, kind)?;

    let mon = Monitor::start(hub_ns.name())?;
    let lg = loadgen(lg_ns.name(), n, a.window, a.timeout)?;
    // Late notifications (a route the ping raced) reach the monitor within moments.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_kib(pid)?;
    let nl_after = netlink_requests(hub_ns, kind)?;
    let helper_note = match kind {
        Kind::Vtid => String::new(),
        Kind::Strongswan => {
            let others = other_pids(hub_ns, pid)?;
            format!(
                "charon's RSS only; {} other process(es) in the hub namespace now (updown \
                 scripts are transient)",
                others
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
    let pinged = lg.pinged.iter().filter(|p| p.is_some()).count();
    let wall = lg
        .pinged
        .iter()
        .flatten()
        .max()
        .map_or(Duration::ZERO, |t| t.duration_since(lg.t0));
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
    })
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

fn start_hub(kind: Kind, ns: &Netns, dir: &Path, mode: Option<&str>) -> Result<HubProc> {
    match kind {
        // The release binary next to this (release) example, unless NSTEST_VTID_BIN says.
        Kind::Vtid => Ok(HubProc::Vtid(nstest::hub::start_psk_template_hub_mode(
            ns,
            dir,
            PSK,
            "172.16.0.0/16",
            &format!("metrics = \"{HUB_METRICS}\"\ncookie_threshold = 1000"),
            mode,
        )?)),
        Kind::Strongswan => {
            let updown = dir.join("updown.sh");
            std::fs::write(
                &updown,
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
            std::fs::set_permissions(&updown, std::fs::Permissions::from_mode(0o755))?;
            let swanctl = format!(
                "connections {{\n  spokes {{\n    version = 2\n    local_addrs = {HUB_UNDERLAY}\n    \
                 remote_addrs = 172.16.0.0/16\n    proposals = aes256gcm16-prfsha256-x25519\n    \
                 local {{\n      auth = psk\n      id = {HUB_UNDERLAY}\n    }}\n    \
                 remote {{\n      auth = psk\n      id = %any\n    }}\n    children {{\n      c {{\n        \
                 local_ts = 10.0.0.0/24\n        remote_ts = 10.128.0.0/16\n        \
                 esp_proposals = aes256gcm16\n        mode = tunnel\n        start_action = none\n        \
                 if_id_in = %unique\n        if_id_out = %unique\n        updown = {}\n      }}\n    }}\n  }}\n}}\n\
                 secrets {{\n  ike-spokes {{\n    secret = \"{PSK}\"\n  }}\n}}\n",
                updown.display()
            );
            let extra = "  ikesa_table_size = 1024\n  ikesa_table_segments = 16\n  \
                         cookie_threshold = 1000\n  threads = 16\n  filelog {\n    stderr {\n      \
                         default = 1\n      ike = 1\n      cfg = 1\n      knl = 1\n    }\n  }\n";
            let s = Strongswan::start_conf_tuned(ns, dir, &swanctl, extra)?;
            Ok(HubProc::Swan(s))
        }
    }
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
}

/// Runs the load generator on a thread inside the `lg` namespace (sockets and netlink
/// handles are created there and keep that namespace).
fn loadgen(ns_name: &str, n: usize, window: usize, timeout: Duration) -> Result<LgResult> {
    let path = format!("/run/netns/{ns_name}");
    std::thread::spawn(move || -> Result<LgResult> {
        let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns lg")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(loadgen_async(n, window, timeout))
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

#[derive(Clone, Copy, PartialEq, Eq)]
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
    let reqid = 0x100 + i as u32;
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

async fn loadgen_async(n: usize, window: usize, timeout: Duration) -> Result<LgResult> {
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
    let mut ping_due: Vec<Option<Instant>> = vec![None; n];
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
        // Keep the window full: re-tries of failed handshakes first.
        while in_flight.len() < window && (next < n || !retry.is_empty()) {
            let i = match retry.pop() {
                Some(i) => i,
                None => {
                    next += 1;
                    next - 1
                }
            };
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
                &mut Vec::new(),
            )?;
        }
        // Due pings.
        for i in 0..n {
            if let Some(t) = ping_due[i]
                && t <= now
                && !got_reply[i]
            {
                if let Err(e) = send_ping(i)
                    && !ping_error_shown
                {
                    eprintln!("   ping from spoke {i}: {e:#}");
                    ping_error_shown = true;
                }
                ping_due[i] = Some(now + Duration::from_millis(300));
            }
        }
        let wake = in_flight
            .iter()
            .filter_map(|&i| eng[i].poll_timeout())
            .chain(ping_due.iter().flatten().copied())
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
                    drain(i, &mut eng[i], &socks[i], Some(at), &mut auth_sent, &mut auth_done, &mut ev)?;
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
                    ping_due[i] = None;
                    remaining -= 1;
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                for &i in &in_flight {
                    if eng[i].poll_timeout().is_some_and(|t| t <= now) {
                        eng[i].handle_timeout(now);
                        let mut ev = Vec::new();
                        drain(i, &mut eng[i], &socks[i], None, &mut auth_sent, &mut auth_done, &mut ev)?;
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
            }
        }
        if !installs.is_empty() {
            let mut b = h.batch();
            for (i, inst) in &installs {
                let (sas, pols) = spoke_kernel_objects(*i, inst);
                for s in &sas {
                    b.add_sa(s);
                }
                for p in &pols {
                    b.add_policy(p);
                }
            }
            for r in b.execute().await? {
                r.context("spoke SA/policy install")?;
            }
            for (i, _) in installs {
                if st[i] == St::InFlight {
                    in_flight.retain(|&j| j != i);
                }
                st[i] = St::Up;
                let _ = send_ping(i);
                ping_due[i] = Some(Instant::now() + Duration::from_millis(300));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
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
    })
}

enum Step {
    Installed(Box<ChildSaInstall>),
    Failed(&'static str),
}

/// Handles one engine's outputs: datagrams go out on the spoke's socket; the first datagram
/// after the IKE_SA_INIT response is the IKE_AUTH request (timestamped); a Child SA install
/// (the IKE_AUTH response arrived) is acknowledged at once and handed to the caller, who
/// installs it in the kernel.
fn drain(
    i: usize,
    e: &mut Endpoint,
    s: &tokio::net::UdpSocket,
    received: Option<Instant>,
    auth_sent: &mut [Option<Instant>],
    auth_done: &mut [Option<Instant>],
    out: &mut Vec<Step>,
) -> Result<()> {
    while let Some(o) = e.poll_output() {
        match o {
            Output::Transmit(t) => {
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

fn print_table(a: &Args, all: &[Figures]) {
    let get = |k: Kind| all.iter().find(|f| f.kind == k);
    let (v, s) = (get(Kind::Vtid), get(Kind::Strongswan));
    println!(
        "dynamic-VTI hub, {} spokes from one load generator, {} handshakes in flight, one run \
         (PSK, X25519, AES-GCM-256):",
        a.spokes, a.window
    );
    println!(
        "  {:<44} {:>16} {:>20} {:>8}",
        "", "vtid", "strongSwan+updown", "ratio"
    );
    let row = |name: &str, f: &dyn Fn(&Figures) -> Option<f64>, unit: &str, ratio: bool| {
        let fv = v.and_then(f);
        let fs = s.and_then(f);
        let cell = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.1}{unit}"));
        let r = match (fv, fs) {
            (Some(x), Some(y)) if ratio && x > 0.0 => format!("{:.1}x", y / x),
            _ => String::new(),
        };
        println!("  {name:<44} {:>16} {:>20} {r:>8}", cell(fv), cell(fs));
    };
    let up = |f: &Figures| {
        format!(
            "{}/{}{}",
            f.pinged,
            f.spokes,
            if f.pinged < f.spokes {
                " (NOT ALL)"
            } else {
                ""
            }
        )
    };
    println!(
        "  {:<44} {:>16} {:>20}",
        "tunnels up and passing a ping",
        v.map_or("-".into(), up),
        s.map_or("-".into(), up)
    );
    row(
        "time to all up and pinging (s)",
        &|f| Some(f.wall.as_secs_f64()),
        "",
        true,
    );
    row(
        "tunnels per second",
        &|f| Some(f.pinged as f64 / f.wall.as_secs_f64().max(1e-9)),
        "",
        false,
    );
    row(
        "AUTH request -> hub iface+route p50 (ms)",
        &|f| pct(&f.from_request, 50.0),
        "",
        true,
    );
    row(
        "AUTH request -> hub iface+route p99 (ms)",
        &|f| pct(&f.from_request, 99.0),
        "",
        true,
    );
    row(
        "  same from the first attempt's request p99",
        &|f| pct(&f.from_first_request, 99.0),
        "",
        true,
    );
    row(
        "AUTH response -> hub iface+route p50 (ms)",
        &|f| pct(&f.from_response, 50.0),
        "",
        false,
    );
    row(
        "AUTH response -> hub iface+route p99 (ms)",
        &|f| pct(&f.from_response, 99.0),
        "",
        false,
    );
    row(
        "hub RSS per tunnel (KiB)",
        &|f| Some((f.rss_after_kib as f64 - f.rss_before_kib as f64) / f.spokes as f64),
        "",
        true,
    );
    row(
        "hub netlink requests per tunnel",
        &|f| f.netlink_requests.map(|n| n / f.spokes as f64),
        "",
        true,
    );
    row(
        "hub RSS before -> after (MiB, after)",
        &|f| Some(f.rss_after_kib as f64 / 1024.0),
        "",
        false,
    );
    for f in all {
        println!(
            "  {}: RSS {} KiB before, {} KiB after; {} xfrm interfaces on the hub; {} spokes' \
             interface+route seen by rtnetlink{}; {} failed handshake attempts (retried) {:?}{}",
            f.kind.label(),
            f.rss_before_kib,
            f.rss_after_kib,
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
    if let (Some(v), Some(s)) = (v, s) {
        let speed = s.wall.as_secs_f64() / v.wall.as_secs_f64().max(1e-9);
        let per = (v.rss_after_kib as f64 - v.rss_before_kib as f64) / v.spokes as f64;
        println!(
            "  targets: all {} up: {}; vtid setup >= 5x faster: {} ({speed:.1}x); vtid < 20 KiB \
             per tunnel: {} ({per:.1} KiB)",
            a.spokes,
            if v.pinged == v.spokes { "yes" } else { "NO" },
            if speed >= 5.0 { "yes" } else { "NO" },
            if per < 20.0 { "yes" } else { "NO" },
        );
    }
}
