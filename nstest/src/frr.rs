//! FRR (zebra + ospfd) in a namespace, for "routing over the tunnel" scenarios: OSPF must
//! reach Full over the tunnel and the LANs must learn each other's routes.
//!
//! Pitfalls (shared/recipes/frr-ospf-over-tunnel.sh): vty sockets must not live on 9p, the
//! state directory must belong to the `frr` user, and each instance needs its own pid files
//! and vty directory (`-N NAME` gives it a private path namespace).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::Netns;

/// An OSPF instance to run in one namespace.
#[derive(Clone, Debug)]
pub struct Ospf {
    /// Router ID.
    pub router_id: String,
    /// Point-to-point interfaces (the tunnels) with fast timers.
    pub p2p_interfaces: Vec<String>,
    /// `network PREFIX area 0` statements.
    pub networks: Vec<String>,
    /// Add `ip ospf mtu-ignore` on the tunnel interfaces (the seeds' workaround; scenarios
    /// about vtid's MTU derivation leave it off).
    pub mtu_ignore: bool,
}

/// The seeds' "routing over the tunnel" pair: `a` (router id 1.1.1.1, LAN 10.1.0.0/24) and
/// `b` (2.2.2.2, LAN 10.2.0.0/24) run OSPF over the point-to-point tunnel device `iface`
/// (10.255.0.0/30 on both ends), without `mtu-ignore`. Returns both instances (dropping one
/// stops it) once the adjacency is Full within `within` and each side routes the other's
/// LAN through `iface`; FRR's logs come with the error otherwise.
pub fn ospf_over_tunnel(a: &Netns, b: &Netns, iface: &str, within: Duration) -> Result<(Frr, Frr)> {
    let ospf = |rid: &str, lan: &str| Ospf {
        router_id: rid.into(),
        p2p_interfaces: vec![iface.into()],
        networks: vec!["10.255.0.0/30".into(), lan.into()],
        mtu_ignore: false,
    };
    let fa = Frr::start(a, &ospf("1.1.1.1", "10.1.0.0/24"))?;
    let fb = Frr::start(b, &ospf("2.2.2.2", "10.2.0.0/24"))?;
    crate::assert::wait_until(&format!("OSPF Full over {iface}"), within, || {
        Ok(fa.neighbor_states()?.iter().any(|s| s.starts_with("Full")))
    })
    .with_context(|| format!("a: {}\nb: {}", fa.log(), fb.log()))?;
    let via = format!("dev {iface}");
    for (ns, lan) in [(a, "10.2.0.0/24"), (b, "10.1.0.0/24")] {
        crate::assert::wait_until("OSPF route to the far LAN", Duration::from_secs(30), || {
            Ok(ns
                .ip(&["route", "show", lan, "proto", "ospf"])?
                .contains(&via))
        })?;
    }
    Ok((fa, fb))
}

/// Running zebra + ospfd in a namespace.
pub struct Frr {
    daemons: Daemons,
}

/// zebra and one protocol daemon running in one namespace, with their frr.conf, pid files,
/// vty sockets and log in one directory (guest-local, owned by `frr`); stopped on drop.
pub(crate) struct Daemons {
    ns_name: String,
    dir: PathBuf,
    daemon: &'static str,
}

impl Daemons {
    /// Starts zebra and `daemon` in `ns` on `dir/frr.conf`, with `env` added to their
    /// environment (nhrpd's PATH, for its `ipsec --piddir`).
    pub(crate) fn start(
        ns: &Netns,
        dir: PathBuf,
        daemon: &'static str,
        env: &[String],
    ) -> Result<Self> {
        crate::cmd::run_args(&["chown", "-R", "frr:frr", &dir.to_string_lossy()])?;
        let d = dir.to_string_lossy().into_owned();
        for name in ["zebra", daemon] {
            crate::cmd::run(
                Command::new("ip")
                    .args(["netns", "exec", ns.name(), "env"])
                    .args(env)
                    .arg(format!("/usr/lib/frr/{name}"))
                    .args(["-d", "-N", ns.name(), "-f"])
                    .arg(format!("{d}/frr.conf"))
                    .arg("-i")
                    .arg(format!("{d}/{name}.pid"))
                    .arg("--vty_socket")
                    .arg(&d),
            )
            .with_context(|| format!("start {name}"))?;
        }
        Ok(Self {
            ns_name: ns.name().to_string(),
            dir,
            daemon,
        })
    }

    /// Runs a vtysh command against these daemons.
    pub(crate) fn vtysh(&self, command: &str) -> Result<String> {
        crate::cmd::run(
            Command::new("ip")
                .args(["netns", "exec", &self.ns_name, "vtysh"])
                .arg("--vty_socket")
                .arg(&self.dir)
                .args(["-c", command]),
        )
    }

    /// Their log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("frr.log")).unwrap_or_default()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for d in [self.daemon, "zebra"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{d}.pid"))) {
                let _ = crate::cmd::run_args(&["kill", pid.trim()]);
            }
        }
    }
}

impl Frr {
    /// Writes frr.conf and starts zebra and ospfd in `ns`.
    pub fn start(ns: &Netns, ospf: &Ospf) -> Result<Self> {
        if !std::path::Path::new("/usr/lib/frr/ospfd").exists() {
            anyhow::bail!("FRR is not installed (apt-get install frr)");
        }
        // vty sockets are unix sockets: keep them in the guest-local /tmp, not on 9p.
        let dir = std::env::temp_dir().join(format!("nstest-frr-{}", ns.name()));
        std::fs::create_dir_all(&dir)?;
        let mut c = String::new();
        let _ = writeln!(
            c,
            "frr defaults traditional\nlog file {}/frr.log",
            dir.display()
        );
        for i in &ospf.p2p_interfaces {
            let _ = writeln!(
                c,
                "interface {i}\n ip ospf network point-to-point\n ip ospf hello-interval 1\n \
                 ip ospf dead-interval 4"
            );
            if ospf.mtu_ignore {
                let _ = writeln!(c, " ip ospf mtu-ignore");
            }
        }
        let _ = writeln!(c, "router ospf\n ospf router-id {}", ospf.router_id);
        for n in &ospf.networks {
            let _ = writeln!(c, " network {n} area 0");
        }
        std::fs::write(dir.join("frr.conf"), c)?;
        Ok(Self {
            daemons: Daemons::start(ns, dir, "ospfd", &[])?,
        })
    }

    /// Runs a vtysh command against this instance.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        self.daemons.vtysh(command)
    }

    /// The state of every OSPF neighbour (`Full/-`, `ExStart/-`, ...).
    pub fn neighbor_states(&self) -> Result<Vec<String>> {
        let v: serde_json::Value =
            serde_json::from_str(&self.vtysh("show ip ospf neighbor json")?)?;
        let mut out = Vec::new();
        if let Some(m) = v["neighbors"].as_object() {
            for list in m.values() {
                for n in list.as_array().into_iter().flatten() {
                    let state = n["state"]
                        .as_str()
                        .or(n["nbrState"].as_str())
                        .unwrap_or("?");
                    out.push(state.to_string());
                }
            }
        }
        Ok(out)
    }

    /// FRR's log.
    pub fn log(&self) -> String {
        self.daemons.log()
    }
}
