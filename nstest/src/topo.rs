//! Declarative topologies: hosts as network namespaces, veth links with addresses, LAN dummy
//! interfaces, static routes, a masquerading NAT box (nftables) and link impairment (netem).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let topo = nstest::TopoSpec::new()
//!     .link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
//!     .lan("a", "10.1.0.1/24")
//!     .lan("b", "10.2.0.1/24")
//!     .build()?;
//! topo.host("a").exec(&["ping", "-c1", "192.0.2.2"])?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::netns::Netns;

/// A topology described as data; [`TopoSpec::build`] creates it.
#[derive(Clone, Debug, Default)]
pub struct TopoSpec {
    hosts: Vec<String>,
    links: Vec<(String, String, String, String)>,
    lans: Vec<(String, String)>,
    routes: Vec<(String, String, String)>,
    nat: Vec<(String, String)>,
    netem: Vec<(String, String, String)>,
    forwarding: Vec<String>,
}

impl TopoSpec {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a host (implied by any other statement naming it).
    pub fn host(mut self, name: &str) -> Self {
        if !self.hosts.iter().any(|h| h == name) {
            self.hosts.push(name.to_string());
        }
        self
    }

    /// A veth pair between `a` and `b`, named `e-<peer>` on each side, with the given CIDR
    /// addresses (either may be empty for no address).
    pub fn link(mut self, a: &str, a_addr: &str, b: &str, b_addr: &str) -> Self {
        self = self.host(a).host(b);
        self.links
            .push((a.into(), a_addr.into(), b.into(), b_addr.into()));
        self
    }

    /// A dummy interface `lanN` on `host` with address `cidr`, standing for a LAN behind it.
    pub fn lan(mut self, host: &str, cidr: &str) -> Self {
        self = self.host(host);
        self.lans.push((host.into(), cidr.into()));
        self
    }

    /// A static route on `host`: `ip route add DST ROUTE...` (e.g. `"via 192.0.2.1"`).
    pub fn route(mut self, host: &str, dst: &str, how: &str) -> Self {
        self = self.host(host);
        self.routes.push((host.into(), dst.into(), how.into()));
        self
    }

    /// Makes `host` a router that masquerades traffic leaving through `out_iface` (nftables).
    pub fn nat(mut self, host: &str, out_iface: &str) -> Self {
        self = self.forward(host);
        self.nat.push((host.into(), out_iface.into()));
        self
    }

    /// Impairs egress of `iface` on `host` with `tc qdisc ... netem PARAMS`.
    pub fn netem(mut self, host: &str, iface: &str, params: &str) -> Self {
        self = self.host(host);
        self.netem.push((host.into(), iface.into(), params.into()));
        self
    }

    /// Enables IPv4 and IPv6 forwarding on `host`.
    pub fn forward(mut self, host: &str) -> Self {
        self = self.host(host);
        self.forwarding.push(host.into());
        self
    }

    /// Creates every namespace, link, address and route. On error, what was created so far
    /// is removed again (the namespaces drop).
    pub fn build(self) -> Result<Topo> {
        let mut hosts = BTreeMap::new();
        for h in &self.hosts {
            hosts.insert(h.clone(), Netns::new(h)?);
        }
        let topo = Topo { hosts };
        for (a, a_addr, b, b_addr) in &self.links {
            let (na, nb) = (topo.host(a), topo.host(b));
            let (ia, ib) = (iface_to(b), iface_to(a));
            crate::cmd::run_args(&[
                "ip",
                "link",
                "add",
                &ia,
                "netns",
                na.name(),
                "type",
                "veth",
                "peer",
                "name",
                &ib,
                "netns",
                nb.name(),
            ])
            .with_context(|| format!("veth {a}<->{b}"))?;
            for (ns, iface, addr) in [(na, &ia, a_addr), (nb, &ib, b_addr)] {
                if !addr.is_empty() {
                    ns.ip(&["addr", "add", addr, "dev", iface, "nodad"])?;
                }
                ns.ip(&["link", "set", iface, "up"])?;
            }
        }
        let mut lan_count: BTreeMap<&str, usize> = BTreeMap::new();
        for (h, cidr) in &self.lans {
            let n = lan_count.entry(h).or_default();
            let name = format!("lan{n}");
            *n += 1;
            let ns = topo.host(h);
            ns.ip(&["link", "add", &name, "type", "dummy"])
                .context("dummy LAN interface (needs the dummy module: run in the VM)")?;
            ns.ip(&["addr", "add", cidr, "dev", &name, "nodad"])?;
            ns.ip(&["link", "set", &name, "up"])?;
        }
        for h in &self.forwarding {
            let ns = topo.host(h);
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        for (h, dst, how) in &self.routes {
            let mut args = vec!["route", "add", dst.as_str()];
            args.extend(how.split_whitespace());
            topo.host(h).ip(&args)?;
        }
        for (h, out) in &self.nat {
            let ns = topo.host(h);
            let rules = format!(
                "table ip nstest_nat {{\n  chain post {{\n    type nat hook postrouting priority 100;\n    \
                 oifname \"{out}\" masquerade\n  }}\n}}\n"
            );
            let file = std::env::temp_dir().join(format!("{}.nft", ns.name()));
            std::fs::write(&file, rules)?;
            ns.exec(&["nft", "-f", &file.to_string_lossy()])?;
        }
        for (h, iface, params) in &self.netem {
            let mut args = vec!["qdisc", "add", "dev", iface.as_str(), "root", "netem"];
            args.extend(params.split_whitespace());
            crate::cmd::run(
                std::process::Command::new("tc")
                    .args(["-n", topo.host(h).name()])
                    .args(&args),
            )?;
        }
        Ok(topo)
    }
}

/// Makes the NAT box `ns` (built with [`TopoSpec::nat`] for `out_iface`) rebind: UDP leaving
/// through `out_iface` is masqueraded to source ports `lo..=hi` from now on, and every UDP
/// conntrack entry is dropped (`conntrack -D -p udp`), so the next packet of each flow gets a
/// new mapping, as when a NAT reboots or expires a mapping early. Needs `conntrack` (the
/// conntrack package; `./x setup` installs it).
pub fn nat_rebind(ns: &Netns, out_iface: &str, (lo, hi): (u16, u16)) -> Result<()> {
    let rules = format!(
        "flush chain ip nstest_nat post
         add rule ip nstest_nat post oifname \"{out_iface}\" meta l4proto udp masquerade to :{lo}-{hi}
         add rule ip nstest_nat post oifname \"{out_iface}\" masquerade
"
    );
    let file = std::env::temp_dir().join(format!("{}-rebind.nft", ns.name()));
    std::fs::write(&file, rules)?;
    ns.exec(&["nft", "-f", &file.to_string_lossy()])?;
    // conntrack exits 1 when it deleted nothing; a missing binary is the error that matters.
    let out = crate::cmd::output(ns.command("conntrack").args(["-D", "-p", "udp"]))
        .context("conntrack (package conntrack; ./x setup installs it)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success() || err.contains("0 flow entries"),
        "conntrack -D -p udp: {err}"
    );
    Ok(())
}

/// The name of the veth on one host that leads to `peer` (kernel limit: 15 characters).
pub fn iface_to(peer: &str) -> String {
    let mut s = format!("e-{peer}");
    s.truncate(15);
    s
}

/// A built topology: its namespaces by host name. Dropping it deletes them all.
#[derive(Debug)]
pub struct Topo {
    hosts: BTreeMap<String, Netns>,
}

impl Topo {
    /// The namespace of `name`; panics on an undeclared host (a bug in the test itself).
    pub fn host(&self, name: &str) -> &Netns {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("host {name} is not part of this topology"))
    }

    /// All hosts by name.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &Netns)> {
        self.hosts.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// `ip xfrm state`, `ip xfrm policy`, `ip -d link` and routes of every host: printed when a
    /// scenario fails so the kernel's view is in the log next to the peers' logs.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (name, ns) in &self.hosts {
            for args in [
                &["-s", "xfrm", "state"][..],
                &["xfrm", "policy"],
                &["-d", "-s", "link"],
                &["addr"],
                &["route", "show", "table", "all"],
            ] {
                s.push_str(&format!("==== {name}: ip {}\n", args.join(" ")));
                match ns.ip(args) {
                    Ok(o) => s.push_str(&o),
                    Err(e) => s.push_str(&format!("{e:#}\n")),
                }
            }
        }
        s
    }
}
