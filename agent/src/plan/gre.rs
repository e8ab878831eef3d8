//! GRE tunnels in the plan.
//!
//! A point-to-point `mode = "gre"` tunnel is a [`super::TunnelPlan`] like a VTI's, with
//! [`super::DeviceKind::Gre`]: same connection, line protocol, routes and session handling.
//! What differs is here: the device is not bound to SAs (no if_id, no mark), so its Child SA
//! protects exactly the GRE packets between the underlay ends (traffic selectors
//! `local/32[gre] <-> remote/32[gre]`, policies out and in for IP protocol 47, no fwd: GRE is
//! generated and consumed by this host), in transport mode by default (RFC 7296 §1.3.1
//! USE_TRANSPORT_MODE; seed digest F-C3), and its MTU leaves room for the GRE header too.
//!
//! A multipoint `mode = "mgre"` tunnel is a [`MgrePlan`]: the device and its address only.
//! Its per-peer sessions (one per NBMA peer NHRP resolves) are planned elsewhere from the
//! plan's `source`, `key`, `protection`, `ike_profile` and `shared`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ike::wire::TrafficSelector;
use ipnet::IpNet;
use xfrm::{Dir, PolicySpec, Selector, Template};

use super::{DEFAULT_UNDERLAY_MTU, LocalAddrs, POLICY_PRIORITY};
use crate::config::{self, Config, SaMode, TunnelSource};
use crate::mtu::{EspOverhead, IPV6_MIN_MTU};

/// IP protocol number of GRE (RFC 2784; IANA).
pub const IPPROTO_GRE: u8 = 47;

/// A GRE device's own settings and the ESP mode of the SAs that protect its packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GreSpec {
    /// GRE key (`tunnel key`), in both directions.
    pub key: Option<u32>,
    /// Outer TTL.
    pub ttl: u8,
    /// ESP mode of the protecting Child SA.
    pub sa_mode: ike::Mode,
}

impl GreSpec {
    /// From a tunnel's configured GRE options.
    pub fn of(g: &config::GreOptions) -> Self {
        Self {
            key: g.key,
            ttl: g.ttl,
            sa_mode: engine_mode(g.sa_mode),
        }
    }

    /// GRE header bytes: 4, and 4 more for the key (RFC 2890 §2).
    pub fn header_len(&self) -> u32 {
        if self.key.is_some() { 8 } else { 4 }
    }
}

/// The engine's mode for a configured one.
pub fn engine_mode(m: SaMode) -> ike::Mode {
    match m {
        SaMode::Tunnel => ike::Mode::Tunnel,
        SaMode::Transport => ike::Mode::Transport,
    }
}

/// The largest inner packet a GRE device carries without fragmenting its protected GRE
/// packets: in transport mode ESP wraps the GRE header and inner packet behind the GRE
/// packet's own IP header, so the room is what tunnel-mode ESP leaves for a whole inner
/// packet ([`EspOverhead::tunnel_mtu`]) minus the GRE header; in tunnel mode the GRE packet's
/// IP header (20 or 40 bytes) is inside the ESP payload as well.
pub fn gre_mtu(
    first: Option<&ike::EspProposal>,
    local: IpAddr,
    spec: &GreSpec,
    underlay: u32,
) -> u32 {
    let ip = if local.is_ipv6() { 40 } else { 20 };
    let esp = first.map_or(underlay, |p| {
        EspOverhead {
            outer_ipv6: local.is_ipv6(),
            udp_encap: false,
            encr: p.encr,
            integ: p.integ,
        }
        .tunnel_mtu(underlay)
    });
    let inside = match spec.sa_mode {
        ike::Mode::Transport => 0,
        ike::Mode::Tunnel => ip,
    };
    esp.saturating_sub(inside + spec.header_len())
}

/// The Child SA's traffic selectors (ours, the peer's): the GRE packets between the
/// underlay ends, as strongSwan's `dynamic[gre]` on both sides proposes them.
pub fn traffic_selectors(local: IpAddr, remote: IpAddr) -> (TrafficSelector, TrafficSelector) {
    let host = |a: IpAddr| TrafficSelector {
        ip_proto: IPPROTO_GRE,
        ..TrafficSelector::host(a)
    };
    (host(local), host(remote))
}

/// The SPD entries that send the GRE packets between `local` and `remote` through the SAs
/// of `reqid` and require them inbound: `ip xfrm policy add src L/32 dst R/32 proto gre dir
/// out priority P tmpl proto esp reqid Q mode transport` and the reverse `dir in`. No fwd
/// policy: GRE packets to and from this host are never forwarded. In tunnel mode the
/// templates carry the underlay addresses.
pub fn policies(local: IpAddr, remote: IpAddr, reqid: u32, mode: ike::Mode) -> Vec<PolicySpec> {
    [Dir::Out, Dir::In]
        .into_iter()
        .map(|dir| {
            let (src, dst) = if dir == Dir::Out {
                (local, remote)
            } else {
                (remote, local)
            };
            let template = match mode {
                ike::Mode::Transport => Template::transport(reqid),
                ike::Mode::Tunnel => Template::tunnel(src, dst, reqid),
            };
            PolicySpec::new(
                Selector::new(IpNet::from(src), IpNet::from(dst)).proto(IPPROTO_GRE),
                dir,
            )
            .priority(POLICY_PRIORITY)
            .template(template)
        })
        .collect()
}

/// Everything the daemon needs to make one multipoint GRE (mGRE) device, and what its per-peer
/// sessions are built from. The device: `ip link add NAME type gre local SOURCE [key K] ttl T`
/// (no remote: NBMA), its address, MTU and up state; the sessions (not here): for each NBMA
/// peer P that NHRP resolves, a Child SA for `SOURCE/32[gre] <-> P/32[gre]` in `sa_mode`,
/// negotiated with `ike_profile` (or the keyring entry for P) and the transforms of `ipsec`;
/// with `shared`, one such session serves every shared mGRE tunnel on `source` (they have the
/// same `protection`, which loading checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MgrePlan {
    /// Tunnel (and device) name.
    pub name: String,
    /// Our underlay address (the configured `source`, resolved).
    pub source: IpAddr,
    /// GRE key, in both directions.
    pub key: Option<u32>,
    /// Outer TTL.
    pub ttl: u8,
    /// Device address (`unnumbered` resolved to the borrowed address as a /32).
    pub inner: IpNet,
    /// Device MTU.
    pub mtu: u32,
    /// IPsec profile name (`tunnel protection ipsec profile NAME`).
    pub protection: String,
    /// The IPsec profile, resolved.
    pub ipsec: Arc<config::IpsecProfile>,
    /// The IKE profile for its sessions: the tunnel's, else the IPsec profile's.
    pub ike_profile: Option<String>,
    /// `tunnel protection ... shared`.
    pub shared: bool,
    /// ESP mode of the per-peer Child SAs.
    pub sa_mode: ike::Mode,
    /// Inside VRF.
    pub vrf: Option<crate::vrf::VrfPlan>,
    /// Front-door VRF.
    pub fvrf: Option<crate::vrf::VrfPlan>,
    /// Initiate sessions ourselves.
    pub initiate: bool,
}

/// The multipoint tunnels' plans, and those left out with what they wait for (a `source` or
/// `unnumbered` interface without an address).
pub fn plan_mgre(
    cfg: &Config,
    links: &LocalAddrs,
) -> (BTreeMap<String, MgrePlan>, BTreeMap<String, String>) {
    let mut plans = BTreeMap::new();
    let mut waiting = BTreeMap::new();
    for (name, t) in &cfg.mgre_tunnels {
        let source = match &t.source {
            TunnelSource::Address(a) => Ok(*a),
            // IPv4 unless the interface has only IPv6: an mGRE cloud's underlay has one family.
            TunnelSource::Interface(i) => links
                .pick(i, false)
                .or_else(|| links.pick(i, true))
                .ok_or_else(|| format!("source interface {i} has no address")),
        };
        let inner = super::inner_address(links, &t.inner);
        let (source, inner) = match (source, inner) {
            (Ok(s), Ok(i)) => (s, i),
            (Err(why), _) | (_, Err(why)) => {
                waiting.insert(name.clone(), why);
                continue;
            }
        };
        let spec = GreSpec {
            key: t.key,
            ttl: t.ttl,
            sa_mode: engine_mode(t.sa_mode),
        };
        let esp = super::esp_proposals(&t.ipsec);
        let underlay = links.mtu_of(source).unwrap_or(DEFAULT_UNDERLAY_MTU);
        let floor = if inner.addr().is_ipv6() {
            IPV6_MIN_MTU
        } else {
            576
        };
        let mtu = t
            .mtu
            .unwrap_or_else(|| gre_mtu(esp.first(), source, &spec, underlay))
            .max(floor);
        plans.insert(
            name.clone(),
            MgrePlan {
                name: name.clone(),
                source,
                key: t.key,
                ttl: t.ttl,
                inner,
                mtu,
                protection: t.protection.clone(),
                ipsec: t.ipsec.clone(),
                ike_profile: t.ike_profile.clone(),
                shared: t.shared,
                sa_mode: spec.sa_mode,
                vrf: t.vrf.clone(),
                fvrf: t.fvrf.clone(),
                initiate: t.initiate,
            },
        );
    }
    (plans, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DeviceKind, build};
    use std::path::Path;

    const CFG: &str = r#"
[transform_set.T1]
esp = "aes-gcm-256"
[transform_set.TT]
esp = "aes-cbc-256"
integrity = "sha256"
mode = "tunnel"
[ipsec_profile.P1]
transform_sets = ["T1"]
[ipsec_profile.PT]
transform_sets = ["TT"]
[keyring.K]
[[keyring.K.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/psk/any.key"
[tunnel.gre1]
mode = "gre"
source = "eth0"
destination = "192.0.2.2"
address = "10.9.0.1/30"
protection = "P1"
key = 42
routes = ["10.2.0.0/16"]
[tunnel.gre2]
mode = "gre"
source = "192.0.2.1"
destination = "192.0.2.3"
address = "10.9.1.1/30"
protection = "PT"
[tunnel.dmvpn]
mode = "mgre"
source = "eth1"
address = "10.0.0.11/24"
protection = "P1"
key = 100000
shared = true
"#;

    fn planned() -> (Config, crate::plan::Plan) {
        let opts = config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let cfg = Config::from_toml(Path::new("t.toml"), CFG, &opts).unwrap();
        let mut links = LocalAddrs::default();
        links
            .links
            .insert("eth0".into(), (1500, vec!["192.0.2.1/24".parse().unwrap()]));
        links.links.insert(
            "eth1".into(),
            (1500, vec!["198.51.100.1/24".parse().unwrap()]),
        );
        let plan = build(&cfg, &mut BTreeMap::new(), &links).unwrap();
        (cfg, plan)
    }

    #[test]
    fn p2p_gre_plans_a_transport_child_sa_for_its_gre_packets() {
        let (_, plan) = planned();
        let t = &plan.tunnels["gre1"];
        let g = GreSpec {
            key: Some(42),
            ttl: 255,
            sa_mode: ike::Mode::Transport,
        };
        assert_eq!(t.mode, DeviceKind::Gre(g));
        assert_eq!(t.local, "192.0.2.1".parse::<IpAddr>().unwrap());
        // 1500 - 20 (IP) - 8 (SPI, seq) - 8 (IV) - 16 (ICV) = 1448, minus 2 trailer bytes
        // rounded to GCM's 4: 1446 bytes of GRE + inner; minus the keyed GRE header (8).
        assert_eq!(t.mtu, 1438);
        let peer = &plan.peers[&t.conn].config;
        let gre_ts = |a: &str| TrafficSelector {
            ip_proto: 47,
            ..TrafficSelector::host(a.parse().unwrap())
        };
        assert_eq!(peer.child.local_ts, vec![gre_ts("192.0.2.1")]);
        assert_eq!(peer.child.remote_ts, vec![gre_ts("192.0.2.2")]);
        assert_eq!(peer.child.mode, ike::Mode::Transport);

        // An explicit `mode = "tunnel"` set: ESP tunnel mode, and the GRE packet's IP header
        // is inside the ESP payload. AES-CBC: 1500 - 20 - 8 - 16 (IV) - 16 (ICV) = 1440,
        // 16-byte blocks: 1440 - 2 = 1438; minus 20 (inner IP) and 4 (GRE): 1414.
        let t2 = &plan.tunnels["gre2"];
        assert_eq!(
            t2.mode,
            DeviceKind::Gre(GreSpec {
                key: None,
                ttl: 255,
                sa_mode: ike::Mode::Tunnel
            })
        );
        assert_eq!(t2.mtu, 1414);
        assert_eq!(plan.peers[&t2.conn].config.child.mode, ike::Mode::Tunnel);
    }

    #[test]
    fn mgre_plans_the_device_only() {
        let (cfg, plan) = planned();
        assert!(!plan.tunnels.contains_key("dmvpn"));
        let m = &plan.mgre["dmvpn"];
        assert_eq!(m.source, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!((m.key, m.ttl, m.shared), (Some(100_000), 255, true));
        assert_eq!(m.protection, "P1");
        assert_eq!(*m.ipsec, cfg.ipsec_profiles["P1"]);
        assert_eq!(m.sa_mode, ike::Mode::Transport);
        assert_eq!(m.mtu, 1438);
        // No engine connection for it: its sessions are per NBMA peer.
        assert_eq!(plan.peers.len(), 2);
        // Without the source interface's address it waits.
        let (mgre, waiting) = plan_mgre(&cfg, &LocalAddrs::default());
        assert!(mgre.is_empty());
        assert!(waiting["dmvpn"].contains("eth1"), "{waiting:?}");
    }
}
