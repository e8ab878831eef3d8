//! The IKE side of protected multipoint GRE (DMVPN): one engine connection per (source
//! address, IPsec profile) and keyring entry, so mGRE tunnels marked `shared` on one source
//! share one IKE SA and one Child SA pair per NBMA peer (seed 003's `tunnel protection ipsec
//! profile X shared`). The connection only answers (`RemoteAddr::Any`/`Prefix` from the IKE
//! profile's keyring, as a dynamic VTI hub does); NHRP starts sessions toward the peers it
//! resolves (VICI `initiate` -> `ike::Command::InitiateTo`). Its Child SA configuration is
//! (source/32 proto 47) <-> (any proto 47), narrowed per peer to (source/32 proto 47) <->
//! (peer/32 proto 47), in the tunnels' ESP mode.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ike::ConnId;
use ike::wire::TrafficSelector;

use super::gre::{IPPROTO_GRE, MgrePlan};
use super::{PeerPlan, REQID_BASE, esp_proposals, expand_ike, lifetime};
use crate::config::Config;

/// One protection shared by the mGRE tunnels on `source` with IPsec profile `protection`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MgreProtectionPlan {
    /// The engine's connection (one per keyring entry of the IKE profile).
    pub conn: ConnId,
    /// Our underlay address.
    pub source: IpAddr,
    /// The IPsec profile (its name is what nhrpd's `tunnel protection vici profile` names).
    pub protection: String,
    /// The mGRE tunnels it protects.
    pub tunnels: Vec<String>,
    /// ESP mode of the per-peer Child SAs.
    pub sa_mode: ike::Mode,
    /// reqid of every peer's SAs and of the policies' templates: a transport template
    /// carries no addresses, so the kernel finds the SA of the packet's destination by
    /// (destination, reqid), and one reqid serves every peer.
    pub reqid: u32,
    /// Where peers may be (the keyring entry's addresses).
    pub remote: ike::RemoteAddr,
}

/// Priority of the per-peer policies (higher than the catch-all's number: the kernel
/// prefers the lower one).
pub const PEER_POLICY_PRIORITY: u32 = super::POLICY_PRIORITY;
/// Priority of the catch-all that keeps GRE from the source from leaving in clear.
pub const CATCH_ALL_PRIORITY: u32 = *xfrm::OWNED_PRIORITY.start() + 0x8000;

/// The protections of the planned mGRE tunnels, and their engine connections pushed to
/// `peers`. Tunnels without an IKE profile get no protection (logged by the caller's plan
/// as waiting); the grouping key is (source, IPsec profile) whether `shared` or not, since
/// loading refuses two unshared protected tunnels on one source.
pub fn plan_protections(
    cfg: &Config,
    mgre: &BTreeMap<String, MgrePlan>,
    conn_ids: &mut BTreeMap<String, u32>,
    peers: &mut Vec<PeerPlan>,
) -> (
    BTreeMap<ConnId, MgreProtectionPlan>,
    BTreeMap<String, String>,
) {
    let mut groups: BTreeMap<(IpAddr, String), Vec<&MgrePlan>> = BTreeMap::new();
    let mut waiting = BTreeMap::new();
    for m in mgre.values() {
        groups
            .entry((m.source, m.protection.clone()))
            .or_default()
            .push(m);
    }
    let mut out = BTreeMap::new();
    for ((source, protection), tunnels) in groups {
        let first = tunnels[0];
        let Some(prof) = first
            .ike_profile
            .as_ref()
            .and_then(|n| cfg.ike_profiles.get(n))
        else {
            for t in &tunnels {
                waiting.insert(t.name.clone(), "no IKE profile for its protection".into());
            }
            continue;
        };
        let ipsec = &first.ipsec;
        let hard = ipsec.lifetime.kilobytes.saturating_mul(1024);
        let gre = |ts: TrafficSelector| TrafficSelector {
            ip_proto: IPPROTO_GRE,
            ..ts
        };
        let child = ike::ChildConfig {
            esp_proposals: esp_proposals(ipsec),
            pfs: ipsec.pfs,
            pfs_addke: ipsec.pfs_addke,
            local_ts: vec![gre(TrafficSelector::host(source))],
            remote_ts: vec![gre(TrafficSelector::any(source.is_ipv6()))],
            mode: first.sa_mode,
            lifetime: lifetime(ipsec.lifetime.seconds),
            lifetime_bytes: Some(ike::ByteLimits {
                soft: hard / 10 * 9,
                hard,
            }),
        };
        let ike_proposals: Vec<ike::IkeProposal> =
            prof.proposal_specs.iter().flat_map(expand_ike).collect();
        for (i, (remote, id_override, credentials)) in super::templates::profile_matches(prof)
            .into_iter()
            .enumerate()
        {
            let key = format!("mgre:{source}:{protection}#{i}");
            let next = conn_ids.values().max().copied().unwrap_or(0) + 1;
            let conn = *conn_ids.entry(key.clone()).or_insert(next);
            peers.push(PeerPlan {
                config: ike::PeerConfig {
                    id: ConnId(conn),
                    name: key,
                    local: SocketAddr::new(source, cfg.global.ike_port),
                    remote,
                    local_id: prof.local_id.clone(),
                    remote_id: id_override.unwrap_or_else(|| prof.remote_id.clone()),
                    auth: super::auth_config(&credentials),
                    ike_proposals: ike_proposals.clone(),
                    ike_lifetime: lifetime(prof.lifetime_seconds),
                    child: child.clone(),
                    more_children: Vec::new(),
                    dpd: prof.dpd.map(|d| d.engine()),
                    allow_legacy: cfg.global.allow_legacy,
                    mobike: false,
                },
                credentials,
            });
            out.insert(
                ConnId(conn),
                MgreProtectionPlan {
                    conn: ConnId(conn),
                    source,
                    protection: protection.clone(),
                    tunnels: tunnels.iter().map(|t| t.name.clone()).collect(),
                    sa_mode: first.sa_mode,
                    reqid: REQID_BASE + conn,
                    remote,
                },
            );
        }
    }
    (out, waiting)
}

/// The SPD entries of one NBMA peer: GRE between `source` and `peer` through the SAs of
/// `reqid` (out) and required from them (in).
pub fn peer_policies(p: &MgreProtectionPlan, peer: IpAddr) -> Vec<xfrm::PolicySpec> {
    super::gre::policies(p.source, peer, p.reqid, p.sa_mode)
        .into_iter()
        .map(|pol| pol.priority(PEER_POLICY_PRIORITY))
        .collect()
}

/// The catch-all under the per-peer policies: GRE from `source` to a peer without SAs is
/// dropped (`action block`), never sent in clear, and GRE in clear to `source` is refused.
/// Blocking rather than a template that makes the kernel send ACQUIREs: NHRP asks for each
/// peer's SAs itself (nhrpd's VICI `initiate` before it registers or uses a shortcut, and it
/// waits for the Child SA to be installed), so an ACQUIRE would only race it; its
/// registrations pass once that peer's SAs and policies are in.
pub fn catch_all(p: &MgreProtectionPlan) -> Vec<xfrm::PolicySpec> {
    use xfrm::{Action, Dir, PolicySpec, Selector};
    let host = ipnet::IpNet::from(p.source);
    let any = match p.source {
        IpAddr::V4(_) => "0.0.0.0/0".parse().expect("literal"),
        IpAddr::V6(_) => "::/0".parse().expect("literal"),
    };
    [(Dir::Out, host, any), (Dir::In, any, host)]
        .into_iter()
        .map(|(dir, src, dst)| {
            PolicySpec::new(Selector::new(src, dst).proto(IPPROTO_GRE), dir)
                .priority(CATCH_ALL_PRIORITY)
                .action(Action::Block)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;
    use crate::plan::{LocalAddrs, build};

    /// Seed 003's spoke: two mGRE tunnels on one source sharing one IPsec profile.
    const CFG: &str = r#"
[transform_set.T1]
esp = "aes-gcm-256"
mode = "transport"
[keyring.K]
[[keyring.K.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/psk/any.key"
[ike_profile.IKE]
keyring = "K"
[ipsec_profile.vpnprof]
transform_sets = ["T1"]
ike_profile = "IKE"
[tunnel.Tunnel0]
mode = "mgre"
source = "eth0"
address = "10.0.0.11/24"
protection = "vpnprof"
key = 100000
shared = true
[tunnel.Tunnel1]
mode = "mgre"
source = "eth0"
address = "10.0.1.11/24"
protection = "vpnprof"
key = 100001
shared = true
"#;

    fn planned(src: &str) -> crate::plan::Plan {
        let opts = config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let cfg = Config::from_toml(Path::new("t.toml"), src, &opts).unwrap();
        let mut links = LocalAddrs::default();
        links.links.insert(
            "eth0".into(),
            (1500, vec!["172.17.0.11/24".parse().unwrap()]),
        );
        build(&cfg, &mut BTreeMap::new(), &links).unwrap()
    }

    #[test]
    fn shared_tunnels_on_one_source_are_one_responder_connection() {
        let plan = planned(CFG);
        assert_eq!(plan.mgre_protections.len(), 1);
        let p = plan.mgre_protections.values().next().unwrap();
        assert_eq!(p.tunnels, vec!["Tunnel0", "Tunnel1"]);
        assert_eq!(p.source, "172.17.0.11".parse::<IpAddr>().unwrap());
        assert_eq!(p.sa_mode, ike::Mode::Transport);
        let peer = &plan.peers[&p.conn].config;
        assert!(matches!(peer.remote, ike::RemoteAddr::Prefix(_, 0)));
        assert_eq!(peer.child.mode, ike::Mode::Transport);
        let gre = |mut t: TrafficSelector| {
            t.ip_proto = 47;
            t
        };
        assert_eq!(
            peer.child.local_ts,
            vec![gre(TrafficSelector::host(p.source))]
        );
        assert_eq!(peer.child.remote_ts, vec![gre(TrafficSelector::any(false))]);
        // The engine narrows it to exactly one peer's GRE.
        let peer_ip: IpAddr = "172.17.0.1".parse().unwrap();
        let (l, r) = peer.child.host_selectors(p.source, peer_ip).unwrap();
        assert_eq!(r, vec![gre(TrafficSelector::host(peer_ip))]);
        assert_eq!(l, vec![gre(TrafficSelector::host(p.source))]);
    }

    #[test]
    fn dropping_one_shared_tunnel_keeps_the_connection() {
        let both = planned(CFG);
        let one = planned(&CFG[..CFG.find("[tunnel.Tunnel1]").unwrap()]);
        let (a, b) = (
            both.mgre_protections.values().next().unwrap(),
            one.mgre_protections.values().next().unwrap(),
        );
        assert_eq!(a.conn, b.conn);
        assert_eq!(b.tunnels, vec!["Tunnel0"]);
        assert_eq!(both.peers[&a.conn], one.peers[&b.conn]);
    }

    #[test]
    fn peer_policies_sit_above_the_blocking_catch_all() {
        let plan = planned(CFG);
        let p = plan.mgre_protections.values().next().unwrap();
        let peer: IpAddr = "172.17.0.12".parse().unwrap();
        let pols = peer_policies(p, peer);
        assert_eq!(pols.len(), 2);
        let catch = catch_all(p);
        assert_eq!(catch.len(), 2);
        for c in &catch {
            assert_eq!(c.action, xfrm::Action::Block);
            assert_eq!(c.selector.proto, IPPROTO_GRE);
            assert!(pols.iter().all(|q| q.priority < c.priority));
        }
        let out = pols.iter().find(|q| q.dir == xfrm::Dir::Out).unwrap();
        assert_eq!(out.selector.dst, ipnet::IpNet::from(peer));
        assert_eq!(out.selector.src, ipnet::IpNet::from(p.source));
    }
}
