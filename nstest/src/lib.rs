//! `nstest`: the harness that runs vtid's scenario tests on a real Linux kernel.
//!
//! - [`netns`], [`topo`]: hosts as network namespaces, veth links, LANs, routes, NAT, netem.
//! - [`peer`], [`strongswan`]: tunnel ends played by strongSwan (and vtid), chosen by parameter.
//! - [`kernel`]: the kernel's view through `ip` (SAs, counters), pings, captures.
//! - [`assert`]: what scenarios check (SPIs, SPD entries, `vtid show`) and waiting for it;
//!   [`vtidconf`]: vtid.toml written as builder calls.
//! - [`hub`]: a vtid dynamic VTI hub with strongSwan and vtid spokes; [`pki`]: test
//!   certificates; [`vici`]: charon's control socket, for loops too hot for `swanctl`.
//! - [`flood`]: an IKE front-door attacker (spoofed sources through an AnyIP route).
//! - [`vm`], [`suite`]: the VM that has the modules this machine lacks, and the one-boot suite.
//! - [`Scenario`]: a test's workspace that prints every log and kernel dump when it fails.

pub mod assert;
pub mod cmd;
pub mod dmvpn;
pub mod flood;
pub mod frr;
pub mod hub;
pub mod kernel;
pub mod modgraph;
pub mod netdevsim;
pub mod netns;
pub mod peer;
pub mod pki;
pub mod strongswan;
pub mod suite;
pub mod systemd;
pub mod topo;
pub mod vici;
pub mod vm;
pub mod vtid;
pub mod vtidconf;

use std::path::{Path, PathBuf};

/// Writes a scenario once and runs it against each strongSwan version
/// ([`strongswan::StrongswanVersion`]): `against_each_strongswan! { fn vm_NAME(v) { ... } }`
/// becomes the scenario tests `vm_NAME::debian12` (5.9.8) and `vm_NAME::debian13` (6.0.x),
/// each `#[ignore = "vm"]` like every scenario, with `v` the version. Everything of the
/// enclosing file is in scope; `nstest vm-suite --filter ::debian13` runs one side.
#[macro_export]
macro_rules! against_each_strongswan {
    ($($(#[$m:meta])* fn $name:ident($v:ident) $body:block)*) => {$(
        $(#[$m])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($v: $crate::strongswan::StrongswanVersion) $body

            #[test]
            #[ignore = "vm"]
            fn debian12() {
                body($crate::strongswan::StrongswanVersion::Debian12)
            }

            #[test]
            #[ignore = "vm"]
            fn debian13() {
                body($crate::strongswan::StrongswanVersion::Debian13)
            }
        }
    )*};
}

pub use netns::Netns;
pub use topo::{Topo, TopoSpec};

/// A scenario's working directory, its topology and its peers. When the test panics, `Drop`
/// prints each peer's log and every host's `ip xfrm`/`ip link`/routes, so a failure in CI
/// explains itself.
pub struct Scenario {
    /// The topology.
    pub topo: Topo,
    dir: PathBuf,
    peers: Vec<(String, Box<dyn peer::Peer>)>,
}

impl Scenario {
    /// Builds `spec` for the test `name`. Fails (never skips) outside the VM: scenario tests
    /// need kernel modules this machine does not have.
    pub fn new(name: &str, spec: TopoSpec) -> anyhow::Result<Self> {
        if !vm::in_vm() {
            anyhow::bail!(
                "scenario {name} needs the VM kernel (esp4, ip_vti, xfrm_interface): run it \
                 through `nstest vm-suite` / the README's test command"
            );
        }
        // The counter: one scenario body may run twice in one process at once (once per
        // strongSwan version, [`against_each_strongswan`]).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nstest-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            topo: spec.build()?,
            dir,
            peers: Vec::new(),
        })
    }

    /// Directory for this scenario's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a peer on `host` and keeps it for diagnostics; returns its index.
    pub fn start_peer(
        &mut self,
        which: peer::Impl,
        host: &str,
        end: &peer::TunnelEnd,
    ) -> anyhow::Result<usize> {
        let dir = self.dir.join(host);
        let p = peer::start(which, self.topo.host(host), &dir, end)?;
        self.peers.push((host.to_string(), p));
        Ok(self.peers.len() - 1)
    }

    /// Keeps a peer started by other means (e.g. vtid with a hand-written config) for
    /// diagnostics; returns its index.
    pub fn add_peer(&mut self, host: &str, p: Box<dyn peer::Peer>) -> usize {
        self.peers.push((host.to_string(), p));
        self.peers.len() - 1
    }

    /// A started peer.
    pub fn peer(&self, i: usize) -> &dyn peer::Peer {
        self.peers[i].1.as_ref()
    }

    /// A started peer, mutable (to reach a vtid's CLI).
    pub fn peer_mut(&mut self, i: usize) -> &mut dyn peer::Peer {
        self.peers[i].1.as_mut()
    }

    /// Every peer's log and every host's kernel state.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (host, p) in &self.peers {
            s.push_str(&format!(
                "==== log of {:?} on {host}\n{}\n",
                p.implementation(),
                p.log()
            ));
        }
        s.push_str(&self.topo.diagnostics());
        s
    }
}

/// Runs a scenario body; when it fails, prints [`Scenario::diagnostics`] and panics with the
/// error, so the test fails with the whole story in its output.
pub fn scenario(
    name: &str,
    spec: TopoSpec,
    body: impl FnOnce(&mut Scenario) -> anyhow::Result<()>,
) {
    let mut sc = match Scenario::new(name, spec) {
        Ok(sc) => sc,
        Err(e) => panic!("scenario {name}: set-up failed: {e:#}"),
    };
    let _watchdog = watchdog(name, sc.dir());
    if let Err(e) = body(&mut sc) {
        // The reason first: the diagnostics that follow run to thousands of lines, and a
        // CI excerpt keeps a log's head and tail only (the whole error, logs and all, is
        // the panic message at the end).
        let reason = format!("{e:#}");
        let head: String = reason
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join(" / ")
            .chars()
            .take(600)
            .collect();
        eprintln!("scenario {name} failed: {head}");
        eprintln!("{}", sc.diagnostics());
        sc.peers.clear();
        panic!("scenario {name} failed: {e:#}");
    }
}

/// How long a scenario may run before [`watchdog`] ends its test binary; the longest take
/// under 200 s in CI (`--report-time`). `NSTEST_SCENARIO_LIMIT` (seconds) changes it.
const SCENARIO_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Bounds a scenario's run until the returned sender is dropped: a scenario stuck in a wait
/// without a deadline, or behind a daemon that never answers, would otherwise hold the whole
/// VM suite until CI's own timeout, with nothing said about which one. Past the limit it
/// prints the scenario's name, the processes and the tail of every log under the scenario's
/// directory, and aborts the test binary, which the suite reports as failed. Written to the
/// stderr file descriptor itself: libtest captures the print macros of a test's threads, and
/// a captured message of a process that aborts is never shown.
fn watchdog(name: &str, dir: &Path) -> std::sync::mpsc::Sender<()> {
    let limit = std::env::var("NSTEST_SCENARIO_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(SCENARIO_LIMIT, std::time::Duration::from_secs);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (name, dir) = (name.to_string(), dir.to_path_buf());
    std::thread::spawn(move || {
        // The scenario's end drops the sender: a hang-up stops the watch.
        if rx.recv_timeout(limit) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            return;
        }
        use std::io::Write;
        let report = format!(
            "scenario {name} failed: still running after {limit:?} (NSTEST_SCENARIO_LIMIT); \
             aborting its test binary\n{}",
            stuck_report(&dir)
        );
        let _ = std::io::stderr().write_all(report.as_bytes());
        std::process::abort();
    });
    tx
}

/// What a stuck scenario leaves to look at: every process (which one spins, which one
/// waits) and the last lines of each log file under `dir`.
fn stuck_report(dir: &Path) -> String {
    let mut s = String::from("==== ps\n");
    if let Ok(o) = std::process::Command::new("ps")
        .args(["-eo", "pid,ppid,etime,time,stat,args", "--sort=-time"])
        .output()
    {
        s.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    let mut logs = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                logs.push(p);
            }
        }
    }
    logs.sort();
    for p in logs {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        s.push_str(&format!("==== last lines of {}\n", p.display()));
        for l in &lines[lines.len().saturating_sub(40)..] {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.peers.is_empty() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stuck_scenario_report_has_the_processes_and_each_logs_tail() {
        let dir = std::env::temp_dir().join(format!("nstest-stuck-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("hub")).unwrap();
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.join("hub/vtid.log"), &long).unwrap();
        std::fs::write(dir.join("hub/other.txt"), "not a log").unwrap();
        let r = super::stuck_report(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(r.starts_with("==== ps\n") && r.contains("PID"), "{r}");
        assert!(
            r.contains("hub/vtid.log") && !r.contains("not a log"),
            "{r}"
        );
        assert!(r.contains("line 99\n") && r.contains("line 60\n"), "{r}");
        assert!(!r.contains("line 59\n"), "only the last 40 lines: {r}");
    }
}
