//! DMVPN test nodes: an mGRE device plus FRR's zebra and nhrpd in one namespace, with the
//! per-node configuration rendered here, and the hub's NFLOG rule (nftables) that makes
//! nhrpd send NHRP Traffic Indications (phase 3 shortcuts).
//!
//! What FRR 8.4's nhrpd needed, measured in the VM (Debian 6.1) with plain mGRE devices, no
//! IPsec, a hub and two spokes routed through a WAN box:
//!
//! - The mGRE device must already look the way nhrpd wants it: `ip link add gre1 type gre
//!   key K dev SRC` (no `local`, ttl inherit, bound to the `tunnel source` interface). With
//!   `local A ttl 64` instead, zebra rewrites it on start (`GRE: ... local 0`, bound to
//!   SRC); on the hub that rewrite left gre1 down with its address removed, so no
//!   registration ever arrived. A device created in the final form is left alone.
//! - nhrpd (and zebra) refuse `-u root -g root` here ("user(root) is not part of vty group
//!   frrvty"), so they run as `frr` from a directory `frr` owns (as [`crate::frr`] does).
//! - nhrpd finds charon's VICI socket by running `ipsec --piddir` through the shell (PATH
//!   lookup) and appending `/charon.vici`; each node's nhrpd gets a PATH whose first
//!   directory has an `ipsec` script printing that node's run directory, so several nodes
//!   in one VM each talk to their own IKE daemon. Without `tunnel protection` it only logs
//!   "vici_reconnect: failure" every 2 s and works without IKE.
//! - Spokes need routes for the tunnel subnet and the remote LANs via the hub's tunnel
//!   address (`via HUB dev gre1 onlink`): nhrpd sends a Resolution Reply toward the
//!   requester's tunnel address, so without a route for the tunnel subnet the reply is
//!   dropped and the shortcut is purged after its hold time. FRR 8.4's zebra no longer
//!   carries static routes (staticd does); kernel routes are simpler and zebra
//!   redistributes them to nhrpd as `K` routes, which is all nhrpd needs to answer for a
//!   LAN and to forward a Resolution Request at the hub.
//! - The hub's NFLOG rule: this machine has nft, not iptables; `nft add rule inet T C
//!   iifname gre1 oifname gre1 limit rate 4/minute log group N` goes through nfnetlink_log
//!   like iptables' NFLOG target, and nhrpd (`nhrp nflog-group N`) sends a Traffic
//!   Indication to the source spoke for each logged packet. `fwd` is an nft keyword, not a
//!   usable chain name.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::netns::Netns;

/// What a node does in the NHRP network.
#[derive(Clone, Debug)]
pub enum Role {
    /// Next hop server: answers registrations, sends redirects (Traffic Indications) for
    /// traffic it forwards from the tunnel back into it, learned through NFLOG `group`.
    Hub {
        /// The NFLOG group of the hub's nft rule.
        nflog_group: u16,
    },
    /// Client: registers with the hub at `hub_nbma` and takes shortcuts.
    Spoke {
        /// The hub's NBMA (underlay) address.
        hub_nbma: String,
    },
}

/// One mGRE interface of a node and its NHRP settings.
#[derive(Clone, Debug)]
pub struct MgreIface {
    /// Device name (`gre1`).
    pub device: String,
    /// The underlay interface it is bound to (`tunnel source`). `None` for a device with a
    /// fixed local address (vtid's): nhrpd then takes that address as its NBMA address and
    /// leaves the device as it is (FRR 8.4 `nhrp_interface_update_nbma`); with `tunnel
    /// source` it rebinds the device to that interface and clears its local address.
    pub source_iface: Option<String>,
    /// GRE key (`tunnel key`).
    pub key: u32,
    /// The node's tunnel address, a /32 as nhrpd wants.
    pub tunnel_addr: String,
    /// `ip nhrp network-id`.
    pub network_id: u32,
    /// Hub or spoke.
    pub role: Role,
    /// `tunnel protection vici profile NAME` (the IKE daemon's profile), if any.
    pub protection: Option<String>,
    /// NHRP hold time in seconds (registrations are refreshed every third of it).
    pub holdtime: u32,
}

/// The nhrpd/zebra configuration of a node with these interfaces (one `frr.conf`, which
/// each daemon reads for its own lines).
pub fn render(ifaces: &[MgreIface], log: &Path) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "frr defaults traditional\nlog file {}", log.display());
    let _ = writeln!(c, "debug nhrp common\ndebug nhrp event\ndebug nhrp vici");
    for i in ifaces {
        if let Role::Hub { nflog_group } = i.role {
            let _ = writeln!(c, "nhrp nflog-group {nflog_group}");
        }
    }
    for i in ifaces {
        let _ = writeln!(c, "interface {}", i.device);
        let _ = writeln!(c, " ip address {}/32", i.tunnel_addr);
        let _ = writeln!(c, " ip nhrp network-id {}", i.network_id);
        let _ = writeln!(c, " ip nhrp holdtime {}", i.holdtime);
        let _ = writeln!(c, " ip nhrp registration no-unique");
        match &i.role {
            Role::Hub { .. } => {
                let _ = writeln!(c, " ip nhrp redirect");
            }
            Role::Spoke { hub_nbma } => {
                let _ = writeln!(c, " ip nhrp shortcut");
                let _ = writeln!(c, " ip nhrp nhs dynamic nbma {hub_nbma}");
            }
        }
        if let Some(p) = &i.protection {
            let _ = writeln!(c, " tunnel protection vici profile {p}");
        }
        if let Some(src) = &i.source_iface {
            let _ = writeln!(c, " tunnel source {src}");
        }
        let _ = writeln!(c, "exit");
    }
    c
}

/// Creates the mGRE device of `i` in `ns`, in the form nhrpd leaves alone (see the module
/// comment), and brings it up.
pub fn add_mgre(ns: &Netns, i: &MgreIface) -> Result<()> {
    ns.ip(&[
        "link",
        "add",
        &i.device,
        "type",
        "gre",
        "key",
        &i.key.to_string(),
        "dev",
        i.source_iface
            .as_deref()
            .context("a plain mGRE device needs its source interface")?,
    ])
    .context("mGRE device (needs ip_gre: run in the VM)")?;
    ns.ip(&["link", "set", &i.device, "up"])?;
    Ok(())
}

/// The hub's rule: packets forwarded from `device` back into it are logged to NFLOG
/// `group`, rate-limited as FRR's documentation does with iptables' hashlimit.
pub fn hub_nflog(ns: &Netns, device: &str, group: u16) -> Result<()> {
    let rules = format!(
        "table inet nstest_nhrp {{\n  chain fw {{\n    type filter hook forward priority 0;\n    \
         iifname \"{device}\" oifname \"{device}\" limit rate 4/minute log group {group}\n  }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("{}-nhrp.nft", ns.name()));
    std::fs::write(&file, rules)?;
    ns.exec(&["nft", "-f", &file.to_string_lossy()])?;
    Ok(())
}

/// zebra + nhrpd running in one namespace.
pub struct Nhrp {
    daemons: crate::frr::Daemons,
}

/// One row of `show ip nhrp cache json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// The interface.
    pub iface: String,
    /// `local`, `nhs`, `dynamic`, `dynamic`/`cached` (a resolved shortcut), ...
    pub kind: String,
    /// The tunnel (protocol) address.
    pub protocol: String,
    /// The NBMA (underlay) address.
    pub nbma: String,
}

impl Nhrp {
    /// Writes the configuration of `ifaces` and starts zebra and nhrpd in `ns`. `run_dir` is
    /// what this node's `ipsec --piddir` prints: nhrpd connects to `run_dir/charon.vici`.
    pub fn start(ns: &Netns, ifaces: &[MgreIface], run_dir: &Path) -> Result<Self> {
        if !Path::new("/usr/lib/frr/nhrpd").exists() {
            anyhow::bail!("FRR's nhrpd is not installed (apt-get install frr)");
        }
        // vty sockets are unix sockets: the guest-local /tmp, not 9p.
        let dir = std::env::temp_dir().join(format!("nstest-nhrp-{}", ns.name()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::write(dir.join("frr.conf"), render(ifaces, &dir.join("frr.log")))?;
        let ipsec = bin.join("ipsec");
        std::fs::write(
            &ipsec,
            format!(
                "#!/bin/sh\n# nhrpd runs `ipsec --piddir` to find charon.vici\necho {}\n",
                run_dir.display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&ipsec, std::fs::Permissions::from_mode(0o755))?;
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let daemons = crate::frr::Daemons::start(ns, dir, "nhrpd", &[format!("PATH={path}")])?;
        Ok(Self { daemons })
    }

    /// Runs a vtysh command against this node.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        self.daemons.vtysh(command)
    }

    /// The NHRP cache (`show ip nhrp cache json`).
    pub fn cache(&self) -> Result<Vec<CacheEntry>> {
        let v: serde_json::Value = serde_json::from_str(&self.vtysh("show ip nhrp cache json")?)
            .context("show ip nhrp cache json")?;
        let s = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or("").to_string();
        Ok(v["table"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| CacheEntry {
                iface: s(e, "interface"),
                kind: s(e, "type"),
                protocol: s(e, "protocol"),
                nbma: s(e, "nbma"),
            })
            .collect())
    }

    /// The cache entry for tunnel address `protocol`, if any.
    pub fn entry(&self, protocol: &str) -> Result<Option<CacheEntry>> {
        Ok(self.cache()?.into_iter().find(|e| e.protocol == protocol))
    }

    /// nhrpd's and zebra's log.
    pub fn log(&self) -> String {
        self.daemons.log()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoke_and_hub_render_what_nhrpd_needs() {
        let spoke = MgreIface {
            device: "gre1".into(),
            source_iface: Some("e-wan".into()),
            key: 100000,
            tunnel_addr: "10.0.0.11".into(),
            network_id: 100000,
            role: Role::Spoke {
                hub_nbma: "172.17.0.1".into(),
            },
            protection: Some("dmvpn".into()),
            holdtime: 60,
        };
        let c = render(std::slice::from_ref(&spoke), Path::new("/tmp/x.log"));
        assert!(
            c.contains("interface gre1\n ip address 10.0.0.11/32\n"),
            "{c}"
        );
        assert!(c.contains(" ip nhrp nhs dynamic nbma 172.17.0.1\n"), "{c}");
        assert!(c.contains(" ip nhrp shortcut\n"), "{c}");
        assert!(c.contains(" tunnel protection vici profile dmvpn\n"), "{c}");
        assert!(c.contains(" tunnel source e-wan\nexit\n"), "{c}");
        assert!(!c.contains("nflog"), "{c}");
        let hub = MgreIface {
            role: Role::Hub { nflog_group: 7 },
            protection: None,
            ..spoke
        };
        let c = render(&[hub], Path::new("/tmp/x.log"));
        assert!(c.contains("nhrp nflog-group 7\n"), "{c}");
        assert!(c.contains(" ip nhrp redirect\n"), "{c}");
        assert!(!c.contains("nhs") && !c.contains("protection"), "{c}");
    }
}
