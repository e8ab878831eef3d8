//! From the typed configuration to what the daemon runs: one [`TunnelPlan`] per static tunnel
//! (its device, addresses, routes, kernel identifiers), one [`TemplatePlan`] per dynamic VTI
//! connection, and the `ike::EndpointConfig` the engine negotiates with. Pure functions, so
//! reloads can compute the new plan completely before touching anything, and [`diff`] tells
//! what a reload changes.
//!
//! Configuration loading has resolved and checked every reference, credential and file, so
//! building a plan can only fail on live interface state: a `source`, `unnumbered` or
//! `local_interface` interface without an address of the needed family.

pub mod cryptomaps;
mod diff;
pub mod dmvpn;
pub mod gre;
mod templates;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use ike::secret::Secret;
use ike::transform::Esn;
use ike::wire::TrafficSelector;
use ipnet::IpNet;

use crate::config::{self, Config, Credentials, InnerAddress, TunnelMode, TunnelSource};
use crate::mtu::{EspOverhead, IPV6_MIN_MTU};

pub use diff::{PlanDiff, diff};

#[cfg(test)]
mod cert_tests;
pub use templates::{TemplatePlan, plan_templates};

/// Base of vtid's reqids (xfrm's ownership band): reqid = base + connection id.
pub const REQID_BASE: u32 = *xfrm::OWNED_REQID.start();
/// Policy priority inside xfrm's owned band. Lower is preferred by the kernel; route-based
/// 0/0 policies are keyed by if_id or mark, so one value for all is enough.
pub const POLICY_PRIORITY: u32 = *xfrm::OWNED_PRIORITY.start() + 0x100;
/// Base for if_ids that the configuration does not fix.
pub const IF_ID_BASE: u32 = 0x7654_0000;
/// Underlay MTU assumed when the underlay device cannot be determined.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;
/// Main routing table (include/uapi/linux/rtnetlink.h RT_TABLE_MAIN).
pub const MAIN_TABLE: u32 = 254;

/// The kernel device a tunnel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// XFRM interface, keyed by if_id (`ip link add NAME type xfrm if_id N`).
    Xfrmi,
    /// `ip_vti`/`ip6_vti`, keyed by mark (`ip link add NAME type vti local A remote B key N`).
    Vti,
    /// Point-to-point GRE (`ip link add NAME type gre local A remote B [key K] ttl T`), keyed
    /// by nothing: its SAs protect its GRE packets by address (see [`gre`]).
    Gre(gre::GreSpec),
    /// Multipoint GRE (`ip link add NAME type gre local A [key K] ttl T`, no remote).
    Mgre(gre::GreSpec),
    /// A multipoint template's one device (`ip link add NAME type xfrm external`): an xfrm
    /// interface in collect-metadata mode, keyed by nothing itself; each spoke's routes carry
    /// its if_id (see `crate::multipoint`).
    XfrmiExternal,
}

impl DeviceKind {
    /// As `show` and the configuration spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xfrmi => "xfrmi",
            Self::Vti => "vti",
            Self::Gre(_) => "gre",
            Self::Mgre(_) => "mgre",
            Self::XfrmiExternal => "multipoint",
        }
    }
}

/// Everything the daemon needs to build and run one static tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPlan {
    /// Tunnel (and interface) name.
    pub name: String,
    /// The engine's connection id.
    pub conn: ike::ConnId,
    /// xfrm interface or ip_vti.
    pub mode: DeviceKind,
    /// if_id (xfrmi) or key/mark (vti).
    pub if_id: u32,
    /// reqid of its SAs and policy templates.
    pub reqid: u32,
    /// Our underlay address.
    pub local: IpAddr,
    /// The peer's underlay address.
    pub remote: IpAddr,
    /// Address of the device (`unnumbered` resolved to the borrowed address as a /32).
    pub inner: IpNet,
    /// Routes into the tunnel (in the table while its line protocol is up).
    pub routes: Vec<config::Route>,
    /// MTU set on the device.
    pub mtu: u32,
    /// Start the negotiation ourselves.
    pub initiate: bool,
    /// What the tunnel does when its peer is dead.
    pub dpd_action: config::DpdAction,
    /// ESP offload policy (the tunnel's, else its IPsec profile's).
    pub offload: config::Offload,
    /// Inside VRF the device is enslaved to.
    pub vrf: Option<crate::vrf::VrfPlan>,
    /// Front-door VRF of the underlay and the IKE sockets.
    pub fvrf: Option<crate::vrf::VrfPlan>,
    /// `Some` when the tunnel negotiates with IKEv1 (its IKE profile says `version = 1`):
    /// the `[isakmp_policy.N]` list it offers and accepts. Part of the plan so that a reload
    /// changing the policies renegotiates the tunnel.
    pub v1_policies: Option<Vec<ike::v1::IsakmpPolicy>>,
}

impl TunnelPlan {
    /// The tunnel has an IPv6 address or IPv6 routes. Without either it runs no IPv6 at all,
    /// as an IOS tunnel without `ipv6 address`/`ipv6 enable` does.
    pub fn carries_v6(&self) -> bool {
        self.inner.addr().is_ipv6() || self.routes.iter().any(|r| r.prefix.addr().is_ipv6())
    }
}

/// The namespace's interfaces as the plan needs them: their addresses (for `source = IFACE`
/// and `unnumbered = IFACE`) and MTUs (the underlay MTU the tunnel MTU derives from). Read
/// from the kernel by the daemon before each plan; empty in pure tests.
#[derive(Clone, Debug, Default)]
pub struct LocalAddrs {
    /// Interface name to (MTU, addresses).
    pub links: BTreeMap<String, (u32, Vec<IpNet>)>,
    /// Interfaces with ESP crypto offload on (`esp-hw-offload`), for `offload = "auto"`.
    pub esp_offload: std::collections::BTreeSet<String>,
}

impl LocalAddrs {
    /// The address of `dev` to use toward a peer of the given family: the first one, skipping
    /// IPv6 link-local (fe80::/10) which cannot carry IKE to a routed peer.
    pub fn pick(&self, dev: &str, v6: bool) -> Option<IpAddr> {
        let (_, addrs) = self.links.get(dev)?;
        addrs.iter().map(IpNet::addr).find(|a| match a {
            IpAddr::V4(_) => !v6,
            IpAddr::V6(x) => v6 && (x.segments()[0] & 0xffc0) != 0xfe80,
        })
    }

    /// True when the interface holding `addr` offloads ESP.
    pub fn offloads(&self, addr: IpAddr) -> bool {
        self.links.iter().any(|(name, (_, addrs))| {
            self.esp_offload.contains(name) && addrs.iter().any(|n| n.addr() == addr)
        })
    }

    /// MTU of the interface that holds `addr`, when that interface can be the underlay.
    /// A tunnel sourced from a loopback (Cisco's `tunnel source Loopback0`) leaves through
    /// whatever route reaches the peer, so loopbacks (and anything above the largest jumbo
    /// frame) say nothing about the path: `None`, and the caller assumes Ethernet's 1500.
    pub fn mtu_of(&self, addr: IpAddr) -> Option<u32> {
        self.links
            .iter()
            .find(|(_, (_, addrs))| addrs.iter().any(|n| n.addr() == addr))
            .filter(|(name, (mtu, _))| name.as_str() != "lo" && *mtu <= 9216)
            .map(|(_, (mtu, _))| *mtu)
    }
}

/// A tunnel's own address as the kernel gets it: the configured one, or for `ip unnumbered
/// IFACE` the interface's IPv4 address borrowed as a /32; `Err` says what it waits for.
pub(crate) fn inner_address(links: &LocalAddrs, inner: &InnerAddress) -> Result<IpNet, String> {
    match inner {
        InnerAddress::Unnumbered(dev) => links
            .pick(dev, false)
            .map(IpNet::from)
            .ok_or_else(|| format!("unnumbered interface {dev} has no IPv4 address")),
        InnerAddress::Address(a) => Ok(*a),
    }
}

/// The whole plan of a configuration.
#[derive(Debug)]
pub struct Plan {
    /// Static tunnels by name.
    pub tunnels: BTreeMap<String, TunnelPlan>,
    /// Multipoint GRE tunnels by name (see [`gre::MgrePlan`]).
    pub mgre: BTreeMap<String, gre::MgrePlan>,
    /// Their protections by engine connection (see [`dmvpn`]).
    pub mgre_protections: BTreeMap<ike::ConnId, dmvpn::MgreProtectionPlan>,
    /// Multipoint GRE tunnels left out, with what they wait for (as [`Plan::waiting`]).
    pub mgre_waiting: BTreeMap<String, String>,
    /// Static tunnels left out because an interface they take an address from has none
    /// (`source` or `unnumbered`), with what they wait for. Not in `tunnels`.
    pub waiting: BTreeMap<String, String>,
    /// Dynamic VTI templates by the engine connection that answers their peers.
    pub templates: BTreeMap<ike::ConnId, TemplatePlan>,
    /// Crypto map sets by name.
    pub maps: BTreeMap<String, cryptomaps::MapPlan>,
    /// Every engine connection (tunnels', templates' and crypto maps'), with what it was
    /// derived from.
    pub peers: BTreeMap<ike::ConnId, PeerPlan>,
    /// What the IKEv1 engine negotiates: the tunnels whose IKE profile says `version = 1`
    /// (their connections are in `peers`, not in `endpoint`).
    pub v1: ike::v1::V1Config,
    /// What the IKE engine negotiates: `peers` in the order the engine should try them
    /// (static tunnels first, by name, then templates by IKE profile).
    pub endpoint: ike::EndpointConfig,
    /// `[global]` as planned.
    pub global: config::Global,
    /// The configuration's key and certificate files were read. When false (a structure
    /// check such as `vtid check --no-files`), the endpoint's credentials are placeholders
    /// (an empty pre-shared key that no real peer shares) and the plan must not be run; the
    /// daemon always loads with files.
    pub credentials_read: bool,
}

impl Plan {
    /// Keeps `old`'s tunnel `name` (and its engine connection) in this plan although it waits
    /// for an address here: a running tunnel whose address went away keeps its device and
    /// session, line protocol down, so that the next address moves it (MOBIKE) rather than
    /// starting over. It stays listed in `waiting`.
    pub fn hold(&mut self, old: &Plan, name: &str) {
        let (Some(t), true) = (old.tunnels.get(name), self.waiting.contains_key(name)) else {
            return;
        };
        let Some(peer) = old.peers.get(&t.conn) else {
            return;
        };
        if t.v1_policies.is_some() {
            if let Some(p) = old.v1.peers.iter().find(|p| p.id == t.conn) {
                self.v1.peers.push(p.clone());
            }
        } else {
            // Static tunnels come first in the engine's list, by name (see `build`).
            let at = self
                .tunnels
                .iter()
                .filter(|(k, t)| k.as_str() < name && t.v1_policies.is_none())
                .count();
            self.endpoint.peers.insert(at, peer.config.clone());
        }
        self.peers.insert(t.conn, peer.clone());
        self.tunnels.insert(name.to_owned(), t.clone());
    }
}

/// One engine connection and the credentials its `auth` was made from. Equal when the engine
/// would negotiate the same way: every field of the connection except `auth` (which holds
/// key objects without equality) is compared, and `credentials` stand for `auth`.
#[derive(Clone, Debug)]
pub struct PeerPlan {
    /// The engine's connection.
    pub config: ike::PeerConfig,
    /// What `config.auth` was derived from (keys compared in constant time, never printed).
    pub credentials: Credentials,
}

impl PartialEq for PeerPlan {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a field added to ike::PeerConfig fails to compile here
        // instead of being silently left out of reload decisions.
        let ike::PeerConfig {
            id,
            name,
            local,
            remote,
            local_id,
            remote_id,
            auth: _,
            ike_proposals,
            ike_lifetime,
            child,
            more_children,
            dpd,
            allow_legacy,
            mobike,
        } = &self.config;
        let ike::ChildConfig {
            esp_proposals,
            pfs,
            pfs_addke,
            local_ts,
            remote_ts,
            mode,
            lifetime,
            lifetime_bytes,
        } = child;
        let o = &other.config;
        let oc = &o.child;
        *id == o.id
            && *name == o.name
            && *local == o.local
            && *remote == o.remote
            && *local_id == o.local_id
            && *remote_id == o.remote_id
            && *ike_proposals == o.ike_proposals
            && *ike_lifetime == o.ike_lifetime
            && *dpd == o.dpd
            && *allow_legacy == o.allow_legacy
            && *mobike == o.mobike
            && *more_children == o.more_children
            && *esp_proposals == oc.esp_proposals
            && *pfs == oc.pfs
            && *pfs_addke == oc.pfs_addke
            && *local_ts == oc.local_ts
            && *remote_ts == oc.remote_ts
            && *mode == oc.mode
            && *lifetime == oc.lifetime
            && *lifetime_bytes == oc.lifetime_bytes
            && self.credentials == other.credentials
    }
}

/// The engine's authentication from resolved credentials. Without files read there is no
/// key: see [`Plan::credentials_read`].
fn auth_config(c: &Credentials) -> ike::AuthConfig {
    match c {
        Credentials::Psk(Some(k)) => ike::AuthConfig::Psk(Secret::from_slice(k.expose()).into()),
        Credentials::Certificate(Some(f)) => ike::AuthConfig::Certificate(f.auth.clone()),
        Credentials::Psk(None) | Credentials::Certificate(None) => {
            ike::AuthConfig::Psk(Secret::new(Vec::new()).into())
        }
    }
}

/// The ESP proposals of an IPsec profile, in its order.
fn esp_proposals(p: &config::IpsecProfile) -> Vec<ike::EspProposal> {
    p.sets
        .iter()
        .map(|ts| ike::EspProposal {
            encr: ts.esp,
            integ: ts.integrity,
            esn: Esn::No,
        })
        .collect()
}

/// The tunnel MTU for the preferred ESP proposal (see mtu.rs for why one MTU for both ends
/// matters). Loading guarantees an IPsec profile lists at least one transform set.
fn derived_mtu(esp: &[ike::EspProposal], local: IpAddr, links: &LocalAddrs) -> u32 {
    let underlay = links.mtu_of(local).unwrap_or(DEFAULT_UNDERLAY_MTU);
    esp.first().map_or(underlay, |first| {
        EspOverhead {
            outer_ipv6: local.is_ipv6(),
            udp_encap: false,
            encr: first.encr,
            integ: first.integ,
        }
        .tunnel_mtu(underlay)
    })
}

/// The engine's lifetime for `secs`: rekey 10% (at least 5 s) before, with 5% jitter.
fn lifetime(secs: u32) -> ike::Lifetime {
    let secs = u64::from(secs);
    ike::Lifetime {
        lifetime: Duration::from_secs(secs),
        rekey_margin: Duration::from_secs((secs / 10).max(5)),
        jitter: Duration::from_secs((secs / 20).max(1)),
    }
}

/// Builds the plan. `conn_ids` keeps connection ids stable across reloads: names already in it
/// keep theirs, new names get the next free one (and are added). A tunnel whose `source` or
/// `unnumbered` interface has no usable address now is left out and listed in
/// [`Plan::waiting`] (a DHCP or PPPoE WAN before its lease): the others are planned all the
/// same, and the daemon plans again when addresses change. Fails only when a template's or
/// IKE profile's interface has no address.
pub fn build(
    cfg: &Config,
    conn_ids: &mut BTreeMap<String, u32>,
    links: &LocalAddrs,
) -> Result<Plan> {
    let mut tunnels = BTreeMap::new();
    let mut waiting = BTreeMap::new();
    let mut peers = Vec::new();
    let fixed: Vec<u32> = cfg
        .tunnels
        .values()
        .filter_map(|t| t.if_id.map(|i| i.0))
        .collect();
    for (name, t) in &cfg.tunnels {
        let next = conn_ids.values().max().copied().unwrap_or(0) + 1;
        let conn = *conn_ids.entry(name.clone()).or_insert(next);
        let family = if t.destination.is_ipv6() {
            "IPv6"
        } else {
            "IPv4"
        };
        let local = match &t.source {
            TunnelSource::Address(a) => Ok(*a),
            // `tunnel source IFACE`: the interface's address of the destination's family,
            // read when the plan is made (start, reload, and every address change).
            TunnelSource::Interface(i) => links
                .pick(i, t.destination.is_ipv6())
                .ok_or_else(|| format!("source interface {i} has no {family} address")),
        };
        let inner = inner_address(links, &t.inner);
        let (local, inner) = match (local, inner) {
            (Ok(l), Ok(i)) => (l, i),
            (Err(why), _) | (_, Err(why)) => {
                waiting.insert(name.clone(), why);
                continue;
            }
        };
        let offload = t.offload.unwrap_or(t.ipsec.offload);
        let mut esp = esp_proposals(&t.ipsec);
        crate::offload::prefer_aead(&mut esp, offload, links.offloads(local));
        let if_id = match t.if_id {
            Some(i) => i.0,
            None => (IF_ID_BASE + conn..)
                .find(|i| !fixed.contains(i))
                .unwrap_or(IF_ID_BASE),
        };
        let carries_v6 =
            inner.addr().is_ipv6() || t.routes.iter().any(|r| r.prefix.addr().is_ipv6());
        let mode = match (t.mode, &t.gre) {
            (TunnelMode::Vti, _) => DeviceKind::Vti,
            // Loading sets `gre` exactly for mode = "gre"; mgre tunnels are planned apart.
            (_, Some(g)) => DeviceKind::Gre(gre::GreSpec::of(g)),
            _ => DeviceKind::Xfrmi,
        };
        let mtu = t
            .mtu
            .unwrap_or_else(|| match mode {
                DeviceKind::Gre(g) => gre::gre_mtu(
                    esp.first(),
                    local,
                    &g,
                    links.mtu_of(local).unwrap_or(DEFAULT_UNDERLAY_MTU),
                ),
                _ => derived_mtu(&esp, local, links),
            })
            .max(if carries_v6 { IPV6_MIN_MTU } else { 576 });
        let plan = TunnelPlan {
            name: name.clone(),
            conn: ike::ConnId(conn),
            mode,
            if_id,
            reqid: REQID_BASE + conn,
            local,
            remote: t.destination,
            inner,
            routes: t.routes.clone(),
            mtu,
            initiate: t.initiate,
            dpd_action: t.dpd_action(),
            offload,
            vrf: t.vrf.clone(),
            fvrf: t.fvrf.clone().or_else(|| t.ike.fvrf.clone()),
            v1_policies: (t.ike.version == 1).then(|| cfg.isakmp_policies.clone()),
        };
        peers.push(tunnel_peer(cfg, &plan, t, esp));
        tunnels.insert(name.clone(), plan);
    }
    let templates = plan_templates(cfg, conn_ids, links, &mut peers)?;
    let (mgre, mut mgre_waiting) = gre::plan_mgre(cfg, links);
    let (mgre_protections, unprotected) = dmvpn::plan_protections(cfg, &mgre, conn_ids, &mut peers);
    mgre_waiting.extend(unprotected);
    let maps = cryptomaps::plan_maps(cfg, conn_ids, links, &mut peers)?;
    // The IKEv1 engine's connections: tunnels, templates and crypto map peers whose IKE
    // profile says `version = 1`, each with its profile's `aggressive`.
    let v1_conns: BTreeMap<ike::ConnId, bool> = tunnels
        .iter()
        .filter(|(_, t)| t.v1_policies.is_some())
        .map(|(name, t)| {
            let aggressive = cfg.tunnels.get(name).is_some_and(|c| c.ike.aggressive);
            (t.conn, aggressive)
        })
        .chain(templates.values().filter_map(|t| {
            let p = cfg.ike_profiles.get(&t.profile)?;
            (p.version == 1).then_some((t.conn, p.aggressive))
        }))
        .chain(cryptomaps::v1_conns(cfg, &maps))
        .collect();
    let mut v1_peers: Vec<ike::v1::V1Peer> = peers
        .iter()
        .filter_map(|p| {
            let aggressive = *v1_conns.get(&p.config.id)?;
            Some(v1_peer(&p.config, cfg.isakmp_policies.clone(), aggressive))
        })
        .collect();
    // A main mode responder takes the first profile whose peer address matches (it must
    // pick the pre-shared key before it sees an identity, RFC 2409 §5.4): most specific
    // first, as IOS searches its keyrings, so a static tunnel's peer is not answered by a
    // template's 0.0.0.0/0. The sort is stable: equal ones keep the plan's order.
    v1_peers.sort_by_key(|p| std::cmp::Reverse(remote_specificity(&p.remote)));
    let v1 = ike::v1::V1Config {
        peers: v1_peers,
        half_open_timeout: cfg.global.limits.half_open_timeout,
        nat_keepalive: cfg.global.nat_keepalive,
        ..Default::default()
    };
    let endpoint = ike::EndpointConfig {
        peers: peers
            .iter()
            .filter(|p| !v1_conns.contains_key(&p.config.id))
            .map(|p| p.config.clone())
            .collect(),
        nat_keepalive: cfg.global.nat_keepalive,
        limits: cfg.global.limits,
        ..Default::default()
    };
    Ok(Plan {
        tunnels,
        mgre,
        mgre_protections,
        mgre_waiting,
        waiting,
        templates,
        maps,
        peers: peers.into_iter().map(|p| (p.config.id, p)).collect(),
        endpoint,
        v1,
        global: cfg.global.clone(),
        credentials_read: cfg.files_read,
    })
}

fn tunnel_peer(
    cfg: &Config,
    plan: &TunnelPlan,
    t: &config::Tunnel,
    esp_proposals: Vec<ike::EspProposal>,
) -> PeerPlan {
    let port = cfg.global.ike_port;
    let profile = &t.ipsec;
    let ike_profile = &t.ike;
    let ike_proposals = ike_profile
        .proposal_specs
        .iter()
        .flat_map(expand_ike)
        .collect();
    // Route-based tunnels carry everything routed into the device: 0/0 selectors for both
    // families, narrowed by the peer if it wants less (RFC 7296 §2.9).
    let any = vec![TrafficSelector::any(false), TrafficSelector::any(true)];
    let hard = profile.lifetime.kilobytes.saturating_mul(1024);
    // `announce`: our prefixes instead of 0/0, so a dynamic VTI hub routes them to us. Only
    // the negotiation changes: our SAs and policies stay 0/0 keyed by the interface.
    let mut local_ts = if t.announce.is_empty() {
        any.clone()
    } else {
        t.announce
            .iter()
            .map(|n| TrafficSelector::prefix(n.addr(), n.prefix_len()))
            .collect()
    };
    let mut remote_ts = any;
    let mut mode = ike::Mode::Tunnel;
    // GRE: the Child SA protects the GRE packets between the underlay ends (see gre.rs).
    if let DeviceKind::Gre(g) = plan.mode {
        let (l, r) = gre::traffic_selectors(plan.local, plan.remote);
        (local_ts, remote_ts, mode) = (vec![l], vec![r], g.sa_mode);
    }
    PeerPlan {
        config: ike::PeerConfig {
            id: plan.conn,
            name: plan.name.clone(),
            local: SocketAddr::new(plan.local, port),
            remote: ike::RemoteAddr::Host(SocketAddr::new(plan.remote, port)),
            local_id: ike_profile.local_id.clone(),
            remote_id: ike_profile.remote_id.clone(),
            auth: auth_config(&t.credentials),
            ike_proposals,
            ike_lifetime: lifetime(ike_profile.lifetime_seconds),
            child: ike::ChildConfig {
                esp_proposals,
                pfs: profile.pfs,
                pfs_addke: profile.pfs_addke,
                local_ts,
                remote_ts,
                mode,
                lifetime: lifetime(profile.lifetime.seconds),
                lifetime_bytes: Some(ike::ByteLimits {
                    soft: hard / 10 * 9,
                    hard,
                }),
            },
            more_children: Vec::new(),
            dpd: ike_profile.dpd.map(|d| d.engine()),
            allow_legacy: cfg.global.allow_legacy,
            mobike: ike_profile.mobike,
        },
        credentials: t.credentials.clone(),
    }
}

/// How narrowly a profile's peer address matches: a host above any prefix, longer prefixes
/// above shorter ones, "any" last.
fn remote_specificity(r: &ike::RemoteAddr) -> u16 {
    match r {
        ike::RemoteAddr::Host(_) => 256,
        ike::RemoteAddr::Prefix(_, len) => u16::from(*len) + 1,
        ike::RemoteAddr::Any => 0,
    }
}

/// The IKEv1 profile of a tunnel's connection: the same peer, identities, key, quick mode
/// parameters (transform sets, PFS, selectors, lifetimes) and DPD; phase 1 from the
/// `[isakmp_policy.N]` list instead of IKEv2 proposals.
fn v1_peer(
    c: &ike::PeerConfig,
    policies: Vec<ike::v1::IsakmpPolicy>,
    aggressive: bool,
) -> ike::v1::V1Peer {
    let (psk, cert) = match &c.auth {
        ike::AuthConfig::Psk(k) => (k.secret().clone(), None),
        ike::AuthConfig::Certificate(a) => (Secret::new(Vec::new()), Some(a.clone())),
        // Loading refuses pinned keys in an IKEv1 profile.
        ike::AuthConfig::Signature(_) => (Secret::new(Vec::new()), None),
    };
    ike::v1::V1Peer {
        id: c.id,
        name: c.name.clone(),
        local: c.local,
        remote: c.remote,
        local_id: c.local_id.clone(),
        remote_id: c.remote_id.clone(),
        psk,
        policies,
        child: c.child.clone(),
        more_children: c.more_children.clone(),
        dpd: c.dpd,
        allow_legacy: c.allow_legacy,
        cert,
        aggressive,
    }
}

/// A Cisco-style proposal lists alternatives per transform type; the engine takes single
/// suites, so expand the cross product in the configured order of preference.
pub(crate) fn expand_ike(p: &config::IkeProposalSpec) -> Vec<ike::IkeProposal> {
    let mut out = Vec::new();
    for &encr in &p.encryption {
        let integs: Vec<Option<ike::transform::Integ>> = if encr.is_aead() {
            vec![None]
        } else {
            p.integrity.iter().copied().map(Some).collect()
        };
        for &integ in &integs {
            for &prf in &p.prf {
                for &dh in &p.groups {
                    for addke in addke_combinations(&p.additional_key_exchanges) {
                        out.push(ike::IkeProposal {
                            encr,
                            prf,
                            integ,
                            dh,
                            addke,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Every combination of the per-round alternatives, the first alternatives first (so a
/// round written `"mlkem768|none"` prefers ML-KEM).
fn addke_combinations(
    rounds: &[Vec<Option<ike::transform::KeMethod>>],
) -> Vec<ike::transform::AddKes> {
    let mut out = vec![ike::transform::AddKes::NONE];
    for (i, alts) in rounds.iter().enumerate().take(ike::transform::ADDKE_SLOTS) {
        let mut next = Vec::with_capacity(out.len() * alts.len());
        for base in &out {
            for alt in alts {
                let mut a = *base;
                a.0[i] = *alt;
                next.push(a);
            }
        }
        out = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tunnel whose IKE profile says `version = 1` is the IKEv1 engine's connection (with
    /// the policies, transform set and PFS), not the IKEv2 engine's; the other stays IKEv2.
    #[test]
    fn ikev1_tunnels_go_to_the_ikev1_engine() {
        let opts = config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let src = r#"[global]
allow_legacy = true
[isakmp_policy.10]
encryption = "3des"
authentication = "pre-share"
group = 2
[transform_set.T]
esp = "3des"
integrity = "sha1"
[ipsec_profile.P]
transform_sets = ["T"]
pfs = 14
[keyring.K]
[[keyring.K.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/psk/k"
[ike_profile.V1]
version = 1
keyring = "K"
[tunnel.Tunnel0]
source = "10.0.0.1"
destination = "10.0.0.2"
address = "10.9.0.1/30"
protection = "P"
ike_profile = "V1"
[tunnel.Tunnel1]
source = "10.0.0.1"
destination = "10.0.0.3"
address = "10.9.1.1/30"
protection = "P"
"#;
        let cfg = Config::from_toml(std::path::Path::new("t.toml"), src, &opts).unwrap();
        let plan = build(&cfg, &mut BTreeMap::new(), &LocalAddrs::default()).unwrap();
        let (t0, t1) = (&plan.tunnels["Tunnel0"], &plan.tunnels["Tunnel1"]);
        assert_eq!(plan.v1.peers.len(), 1);
        let v1 = &plan.v1.peers[0];
        assert_eq!(v1.id, t0.conn);
        assert_eq!(v1.policies, cfg.isakmp_policies);
        assert_eq!(v1.child.pfs, Some(ike::transform::DhGroup::Modp2048));
        assert_eq!(
            v1.child.esp_proposals[0].encr,
            ike::transform::Encr::TripleDes
        );
        assert!(v1.allow_legacy);
        assert_eq!(t0.v1_policies.as_ref(), Some(&cfg.isakmp_policies));
        assert_eq!(t1.v1_policies, None);
        let v2: Vec<ike::ConnId> = plan.endpoint.peers.iter().map(|p| p.id).collect();
        assert_eq!(v2, [t1.conn]);
        // Both are the plan's connections (reload diffs them).
        assert!(plan.peers.contains_key(&t0.conn) && plan.peers.contains_key(&t1.conn));
        assert!(!v1.aggressive);
        // `aggressive = true` reaches the engine's profile.
        let src = src.replace("version = 1\n", "version = 1\naggressive = true\n");
        let cfg = Config::from_toml(std::path::Path::new("t.toml"), &src, &opts).unwrap();
        let plan = build(&cfg, &mut BTreeMap::new(), &LocalAddrs::default()).unwrap();
        assert!(plan.v1.peers[0].aggressive);
    }

    /// A `version = 1` profile with a virtual template, and a crypto map entry naming one,
    /// are the IKEv1 engine's: the template answers any address (the seeds' `0.0.0.0
    /// 0.0.0.0` key) after the static tunnel's own peer (most specific first), and the map's
    /// ACL lines are the connection's quick mode configurations in line order.
    #[test]
    fn ikev1_templates_and_crypto_maps_go_to_the_ikev1_engine() {
        let opts = config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let src = r#"[isakmp_policy.10]
encryption = "aes 256"
hash = "sha256"
authentication = "pre-share"
group = 14
[transform_set.T]
esp = "aes-cbc-256"
integrity = "sha256"
[ipsec_profile.P]
transform_sets = ["T"]
[keyring.ANY]
[[keyring.ANY.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/psk/any"
[ike_profile.HUB]
version = 1
keyring = "ANY"
match_identity = ["any"]
virtual_template = "VT1"
[virtual_template.VT1]
unnumbered = "lan0"
protection = "P"
[ike_profile.V1]
version = 1
keyring = "ANY"
[tunnel.Tunnel0]
source = "10.0.0.1"
destination = "10.0.0.2"
address = "10.9.0.1/30"
protection = "P"
ike_profile = "V1"
[access_list.120]
entries = ["permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255",
           "permit ip 10.1.1.0 0.0.0.255 10.2.1.0 0.0.0.255"]
[crypto_map.M]
local_address = "10.0.0.1"
[[crypto_map.M.entry]]
seq = 10
match_address = "120"
peers = ["10.0.0.3"]
transform_sets = ["T"]
ike_profile = "V1"
"#;
        let cfg = Config::from_toml(std::path::Path::new("t.toml"), src, &opts).unwrap();
        let mut links = LocalAddrs::default();
        links
            .links
            .insert("lan0".into(), (1500, vec!["10.0.0.1/24".parse().unwrap()]));
        let plan = build(&cfg, &mut BTreeMap::new(), &links).unwrap();
        let template = plan.templates.values().next().expect("a template").conn;
        let tunnel = plan.tunnels["Tunnel0"].conn;
        let map = plan.maps["M"].entries[0].peers[0].conn;
        let v1: Vec<ike::ConnId> = plan.v1.peers.iter().map(|p| p.id).collect();
        assert_eq!(v1.len(), 3, "{v1:?}");
        // Hosts (tunnel, map peer) before the template's 0.0.0.0/0.
        assert_eq!(v1[2], template);
        assert!(v1[..2].contains(&tunnel) && v1[..2].contains(&map));
        assert!(plan.endpoint.peers.is_empty(), "nothing left for IKEv2");
        let hub = &plan.v1.peers[2];
        assert!(hub.remote.matches("198.51.100.7".parse().unwrap()));
        assert_eq!(hub.policies, cfg.isakmp_policies);
        let m = plan.v1.peers.iter().find(|p| p.id == map).unwrap();
        let lines: Vec<_> = m
            .child_configs()
            .map(|(i, c)| (i.0, c.local_ts[0], c.remote_ts[0]))
            .collect();
        let ts = |s: &str| {
            let n: IpNet = s.parse().unwrap();
            TrafficSelector::prefix(n.addr(), n.prefix_len())
        };
        assert_eq!(
            lines,
            [
                (0, ts("10.1.0.0/24"), ts("10.2.0.0/24")),
                (1, ts("10.1.1.0/24"), ts("10.2.1.0/24"))
            ]
        );
    }

    /// A dynamic map entry whose profile says `version = 1` (the IOS hub's `crypto
    /// dynamic-map` with an `address 0.0.0.0 0.0.0.0` key) is the IKEv1 engine's: its
    /// connection answers any address, after the static entry's peer, and its quick mode
    /// configuration is the entry's ACL line, which the responder narrows to the spoke's IDs.
    #[test]
    fn ikev1_dynamic_map_goes_to_the_ikev1_engine_after_static_peers() {
        let opts = config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let src = r#"[isakmp_policy.10]
encryption = "aes 256"
hash = "sha256"
authentication = "pre-share"
group = 14
[transform_set.T]
esp = "aes-cbc-256"
integrity = "sha256"
[keyring.ANY]
[[keyring.ANY.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/psk/any"
[ike_profile.V1]
version = 1
keyring = "ANY"
[ike_profile.SPOKES]
version = 1
keyring = "ANY"
match_identity = ["any"]
[access_list.120]
entries = ["permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255"]
[access_list.130]
entries = ["permit ip 10.1.0.0 0.0.255.255 10.8.0.0 0.7.255.255"]
[dynamic_map.DYN]
[[dynamic_map.DYN.entry]]
seq = 10
match_address = "130"
transform_sets = ["T"]
ike_profile = "SPOKES"
reverse_route = true
[crypto_map.M]
local_address = "10.0.0.1"
[[crypto_map.M.entry]]
seq = 10
match_address = "120"
peers = ["10.0.0.3"]
transform_sets = ["T"]
ike_profile = "V1"
[[crypto_map.M.entry]]
seq = 20
dynamic_map = "DYN"
"#;
        let cfg = Config::from_toml(std::path::Path::new("t.toml"), src, &opts).unwrap();
        let plan = build(&cfg, &mut BTreeMap::new(), &LocalAddrs::default()).unwrap();
        let m = &plan.maps["M"];
        let static_peer = m.entries[0].peers[0].conn;
        let cryptomaps::EntryPlanKind::Dynamic { entries, .. } = &m.entries[1].kind else {
            panic!("entry 20 is not dynamic");
        };
        let dynamic = entries[0].conns[0];
        let v1: Vec<ike::ConnId> = plan.v1.peers.iter().map(|p| p.id).collect();
        // The static peer's host first: its own key, not the wildcard's, answers it.
        assert_eq!(v1, [static_peer, dynamic]);
        assert!(plan.endpoint.peers.is_empty(), "nothing left for IKEv2");
        let hub = &plan.v1.peers[1];
        assert!(hub.remote.matches("198.51.100.7".parse().unwrap()));
        assert_eq!(hub.policies, cfg.isakmp_policies);
        let ts = |s: &str| {
            let n: IpNet = s.parse().unwrap();
            TrafficSelector::prefix(n.addr(), n.prefix_len())
        };
        let lines: Vec<_> = hub
            .child_configs()
            .map(|(i, c)| (i.0, c.local_ts.clone(), c.remote_ts.clone()))
            .collect();
        assert_eq!(
            lines,
            [(0, vec![ts("10.1.0.0/16")], vec![ts("10.8.0.0/13")])]
        );
    }

    #[test]
    fn builtin_default_plans_the_seed_tunnel() {
        let opts = config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let cfg = Config::from_toml(
            std::path::Path::new("default.toml"),
            config::DEFAULT_TOML,
            &opts,
        )
        .unwrap();
        let mut ids = BTreeMap::new();
        // Keys were not read: the plan is complete but says its credentials are placeholders
        // (it must not be run), and the tunnel's connection carries no key.
        let plan = build(&cfg, &mut ids, &LocalAddrs::default()).unwrap();
        assert!(!plan.credentials_read);
        assert_eq!(ids.get("Tunnel0"), Some(&1));
        let t = &plan.tunnels["Tunnel0"];
        assert_eq!(plan.peers[&t.conn].credentials, Credentials::Psk(None));
        assert_eq!(plan.endpoint.peers.len(), 1);
        assert_eq!(plan.endpoint.nat_keepalive, Duration::from_secs(20));
        // `[global] nat_keepalive` reaches the engine.
        let src = format!("{}\n", config::DEFAULT_TOML).replace(
            "nat_t_port = 4500\n",
            "nat_t_port = 4500\nnat_keepalive = 7\n",
        );
        let cfg = Config::from_toml(std::path::Path::new("default.toml"), &src, &opts).unwrap();
        let plan = build(&cfg, &mut BTreeMap::new(), &LocalAddrs::default()).unwrap();
        assert_eq!(plan.endpoint.nat_keepalive, Duration::from_secs(7));
        // So do the front-door limits.
        let src = src.replace(
            "nat_keepalive = 7\n",
            "nat_keepalive = 7\nhalf_open_limit = 9\n",
        );
        let cfg = Config::from_toml(std::path::Path::new("default.toml"), &src, &opts).unwrap();
        let plan = build(&cfg, &mut BTreeMap::new(), &LocalAddrs::default()).unwrap();
        assert_eq!(plan.endpoint.limits.half_open_limit, 9);
    }

    /// Whatever `vtid check` accepts, the planner accepts, given interfaces with addresses:
    /// every shipped example and the built-in default, loaded as `vtid check --no-files`
    /// loads them (their key files are for another machine). Without files the credentials
    /// are placeholders and the plan says so ([`Plan::credentials_read`]); with files the
    /// same path is covered by the certificate tests in config/certs.rs. Each interface the
    /// file names gets an IPv4 and an IPv6 address, as a machine the file was written for
    /// would have.
    #[test]
    fn what_check_accepts_plans() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        assert!(files.len() >= 4, "{files:?}");
        let opts = config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let mut configs: Vec<(String, Config)> = files
            .iter()
            .map(|p| {
                let c = Config::load_with(p, &opts).unwrap_or_else(|e| panic!("{e}"));
                (p.display().to_string(), c)
            })
            .collect();
        configs.push((
            "built-in default".into(),
            Config::builtin_default().unwrap(),
        ));
        for (name, cfg) in &configs {
            let mut names: Vec<&str> = Vec::new();
            for t in cfg.tunnels.values() {
                if let TunnelSource::Interface(i) = &t.source {
                    names.push(i);
                }
                if let InnerAddress::Unnumbered(i) = &t.inner {
                    names.push(i);
                }
            }
            for vt in cfg.virtual_templates.values() {
                names.push(&vt.unnumbered);
            }
            for p in cfg.ike_profiles.values() {
                if let Some(config::LocalTermination::Interface(i)) = &p.local {
                    names.push(i);
                }
            }
            for m in cfg.crypto_maps.values() {
                if let config::LocalTermination::Interface(i) = &m.local {
                    names.push(i);
                }
            }
            let mut links = LocalAddrs::default();
            for (n, i) in names.iter().enumerate() {
                let v4: IpNet = format!("192.0.2.{}/24", n + 1).parse().unwrap();
                let v6: IpNet = format!("2001:db8::{}/64", n + 1).parse().unwrap();
                links.links.insert((*i).to_owned(), (1500, vec![v4, v6]));
            }
            let plan = build(cfg, &mut BTreeMap::new(), &links)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(plan.tunnels.len(), cfg.tunnels.len(), "{name}");
            assert!(!plan.credentials_read, "{name}");
            // Every connection is one engine's: IKEv2's or IKEv1's.
            assert_eq!(
                plan.endpoint.peers.len() + plan.v1.peers.len(),
                plan.peers.len(),
                "{name}"
            );
        }
        // Without the interfaces, tunnels sourced from one wait for an address (the others
        // are planned); planning fails only for a template's or IKE profile's interface.
        for (name, cfg) in &configs {
            match build(cfg, &mut BTreeMap::new(), &LocalAddrs::default()) {
                Err(e) => {
                    let e = format!("{e:#}");
                    assert!(
                        e.contains("has no IPv4 address") || e.contains("has no IPv6 address"),
                        "{name}: {e}"
                    );
                }
                Ok(plan) => {
                    for (t, c) in &cfg.tunnels {
                        let dynamic = matches!(c.source, TunnelSource::Interface(_))
                            || matches!(c.inner, InnerAddress::Unnumbered(_));
                        assert_eq!(plan.waiting.contains_key(t), dynamic, "{name}: {t}");
                        assert_eq!(plan.tunnels.contains_key(t), !dynamic, "{name}: {t}");
                    }
                    for why in plan.waiting.values() {
                        assert!(why.contains("has no IPv"), "{name}: {why}");
                    }
                }
            }
        }
    }

    #[test]
    fn interface_addresses_and_underlay_mtu() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let mut l = LocalAddrs::default();
        l.links.insert(
            "eth0".into(),
            (
                1400,
                vec![
                    net("fe80::1/64"),
                    net("2001:db8::1/64"),
                    net("192.0.2.1/24"),
                ],
            ),
        );
        l.links
            .insert("lo".into(), (65536, vec![net("10.9.9.9/32")]));
        assert_eq!(l.pick("eth0", false), Some("192.0.2.1".parse().unwrap()));
        // Link-local is skipped: it cannot reach a routed peer.
        assert_eq!(l.pick("eth0", true), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(l.pick("lo", true), None);
        assert_eq!(l.pick("eth9", false), None);
        assert_eq!(l.mtu_of("192.0.2.1".parse().unwrap()), Some(1400));
        // A loopback source says nothing about the path's MTU.
        assert_eq!(l.mtu_of("10.9.9.9".parse().unwrap()), None);
    }

    #[test]
    fn expands_additional_key_exchanges_ml_kem_first() {
        use ike::transform::{DhGroup, KeMethod};
        let p = config::IkeProposalSpec {
            additional_key_exchanges: vec![
                vec![Some(KeMethod::MlKem768), None],
                vec![Some(KeMethod::MlKem1024)],
                vec![Some(KeMethod::Dh(DhGroup::Ecp256)), None],
            ],
            ..config::IkeProposalSpec::builtin_default()
        };
        let suites = expand_ike(&p);
        // 3 groups x 2 x 1 x 2 combinations of the rounds.
        assert_eq!(suites.len(), 12);
        assert_eq!(suites[0].dh, DhGroup::Curve25519);
        assert_eq!(suites[0].addke.0[0], Some(KeMethod::MlKem768));
        assert_eq!(suites[0].addke.0[1], Some(KeMethod::MlKem1024));
        assert_eq!(suites[0].addke.0[2], Some(KeMethod::Dh(DhGroup::Ecp256)));
        assert_eq!(suites[1].addke.0[2], None);
        assert_eq!(suites[2].addke.0[0], None);
        assert_eq!(suites[4].dh, DhGroup::Ecp256);
        assert!(
            suites
                .iter()
                .all(|s| s.addke.0[3..].iter().all(Option::is_none))
        );
    }

    #[test]
    fn expands_cisco_proposals() {
        use ike::transform::{DhGroup, Encr, Integ, Prf};
        let p = config::IkeProposalSpec {
            encryption: vec![
                Encr::AesCbc { key_bits: 256 },
                Encr::AesGcm16 { key_bits: 128 },
            ],
            integrity: vec![Integ::HmacSha256_128, Integ::HmacSha384_192],
            prf: vec![Prf::HmacSha256],
            groups: vec![DhGroup::Curve25519, DhGroup::Modp2048],
            additional_key_exchanges: Vec::new(),
        };
        let v = expand_ike(&p);
        // CBC: 2 integ x 2 groups; GCM: no integ x 2 groups.
        assert_eq!(v.len(), 6);
        assert!(v[4].integ.is_none() && v[4].encr.is_aead());
        assert_eq!(v[0].dh, DhGroup::Curve25519);
    }
}
