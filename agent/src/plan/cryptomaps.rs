//! Crypto maps as the daemon runs them: one engine connection per (map, peer) carrying one
//! Child SA configuration per ACL permit entry of every entry that names the peer (IOS: one
//! IKE SA per peer, one IPsec SA pair per matched permit statement, seed F-B3), and the SPD
//! the map stands for.
//!
//! Each ACL entry becomes three policies (out, in, fwd; seed digest §2.1): a permit carries a
//! tunnel template to the entry's current peer with a reqid of its own, so the kernel finds
//! exactly the SA negotiated for it and sends an ACQUIRE naming it when there is none; a deny
//! is an allow policy without template. Entry order is priority order (lower sequence number,
//! then earlier ACL line, wins), inside vtid's owned priority band.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, bail};
use ike::wire::TrafficSelector;
use ipnet::IpNet;
use xfrm::{Dir, PolicySpec, Selector, Template};

use super::{LocalAddrs, PeerPlan, REQID_BASE, auth_config, esp_proposals, expand_ike, lifetime};
use crate::config::acl::AclEntry;
use crate::config::{self, Config, LocalTermination};

/// First priority of crypto map policies (after the route-based tunnels' `POLICY_PRIORITY`).
pub const MAP_PRIORITY: u32 = *xfrm::OWNED_PRIORITY.start() + 0x1000;
/// Priorities one map may use: entries × ACL lines.
const MAP_SPAN: u32 = 0x2000;
/// Priorities one entry may use (its ACL lines).
const ENTRY_SPAN: u32 = 0x100;
/// First reqid of crypto map ACL entries (tunnels and templates use `REQID_BASE + conn`).
pub const MAP_REQID_BASE: u32 = REQID_BASE + 0x8000;

/// One ACL line of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcePlan {
    /// The line.
    pub acl: AclEntry,
    /// Its policies' priority.
    pub priority: u32,
    /// reqid of its SAs and templates (permit lines; 0 for deny).
    pub reqid: u32,
    /// Its Child SA configuration in each connection that negotiates it (permit lines).
    pub index: BTreeMap<ike::ConnId, ike::ChildConfigIndex>,
}

/// One peer of an entry with its engine connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapPeerPlan {
    /// The peer's address.
    pub addr: IpAddr,
    /// The connection that negotiates with it.
    pub conn: ike::ConnId,
}

/// One crypto map entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPlan {
    /// Sequence number.
    pub seq: u32,
    /// The ACL's name.
    pub access_list: String,
    /// Peers in order of preference.
    pub peers: Vec<MapPeerPlan>,
    /// ACL lines in order.
    pub aces: Vec<AcePlan>,
    /// One SA pair per host pair.
    pub per_host: bool,
    /// Reverse route metric.
    pub reverse_route: Option<u32>,
    /// Negotiate at start.
    pub initiate: bool,
    /// Transform set names, for `show crypto map`.
    pub transform_sets: Vec<String>,
    /// PFS group, for `show crypto map`.
    pub pfs: Option<ike::transform::DhGroup>,
    /// Lifetimes, for `show crypto map`.
    pub lifetime: config::SaLifetime,
    /// IKE, dynamic or manual.
    pub kind: EntryPlanKind,
}

/// How an entry gets its SAs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPlanKind {
    /// Negotiated with `peers`, one Child SA per permit line.
    Isakmp,
    /// A dynamic map: responder connections per dynamic entry; each accepted flow gets a
    /// temporary policy set (priority `temp_priority`) for the life of its SAs.
    Dynamic {
        /// The dynamic map's name.
        name: String,
        /// Its entries.
        entries: Vec<DynEntryPlan>,
        /// Priority of the temporary policies (ahead of the entries' block policies).
        temp_priority: u32,
    },
    /// Fixed SAs with one peer, installed at start.
    Manual {
        /// The peer.
        peer: IpAddr,
        /// The keys and SPIs.
        sa: Box<config::ManualSa>,
        /// Its one transform set.
        transform: config::TransformSet,
    },
}

/// One dynamic map entry as run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynEntryPlan {
    /// Its sequence number in the dynamic map.
    pub seq: u32,
    /// ACL name, when it has one.
    pub access_list: Option<String>,
    /// The ACL's lines (permit lines carry each connection's child index); with no ACL one
    /// `permit ip any any` line per family stands for "any flow" (seed F-E5).
    pub aces: Vec<AcePlan>,
    /// True when it has no ACL: nothing is blocked while no peer is connected.
    pub any_flow: bool,
    /// The responder connections (one per keyring entry, or one for certificates).
    pub conns: Vec<ike::ConnId>,
    /// Reverse route metric.
    pub reverse_route: Option<u32>,
}

/// One crypto map set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapPlan {
    /// The map's name.
    pub name: String,
    /// The local address it runs on.
    pub local: IpAddr,
    /// The interface it is applied to, when it is named that way.
    pub interface: Option<String>,
    /// Entries by sequence number.
    pub entries: Vec<EntryPlan>,
}

impl MapPlan {
    /// The map's SPD with `active(entry index)` as each entry's current peer: three
    /// policies per ACL line (`ip xfrm policy add src S dst D [proto P sport/dport] dir
    /// out|in|fwd priority N [tmpl src L dst R proto esp mode tunnel reqid Q]`).
    pub fn policies(&self, active: impl Fn(usize) -> Option<IpAddr>) -> Vec<PolicySpec> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            match &e.kind {
                EntryPlanKind::Isakmp => {
                    if let Some(peer) = active(i) {
                        for a in &e.aces {
                            out.extend(line_policies(a, self.local, peer));
                        }
                    }
                }
                EntryPlanKind::Manual { peer, .. } => {
                    for a in &e.aces {
                        out.extend(line_policies(a, self.local, *peer));
                    }
                }
                // Until a peer connects, what the dynamic entries' ACLs permit is dropped
                // (seed F-E5: "outbound traffic matching a dynamic entry with no SA is
                // dropped"; F-B4 inbound); entries without an ACL block nothing.
                EntryPlanKind::Dynamic { entries, .. } => {
                    for d in entries.iter().filter(|d| !d.any_flow) {
                        for a in d.aces.iter().filter(|a| a.acl.permit) {
                            for p in line_policies(a, self.local, self.local) {
                                let mut p = PolicySpec::new(p.selector, p.dir).priority(a.priority);
                                p.action = xfrm::Action::Block;
                                out.push(p);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The entry and ACL line a permit policy's reqid belongs to (IKE entries).
    pub fn by_reqid(&self, reqid: u32) -> Option<(usize, &AcePlan)> {
        self.entries.iter().enumerate().find_map(|(i, e)| {
            if e.kind != EntryPlanKind::Isakmp {
                return None;
            }
            e.aces
                .iter()
                .find(|a| a.acl.permit && a.reqid == reqid)
                .map(|a| (i, a))
        })
    }

    /// The entry, dynamic entry (for dynamic maps) and ACL line of Child SA configuration
    /// `index` of connection `conn`.
    pub fn by_child(
        &self,
        conn: ike::ConnId,
        index: ike::ChildConfigIndex,
    ) -> Option<(usize, Option<&DynEntryPlan>, &AcePlan)> {
        self.entries
            .iter()
            .enumerate()
            .find_map(|(i, e)| match &e.kind {
                EntryPlanKind::Dynamic { entries, .. } => entries.iter().find_map(|d| {
                    d.aces
                        .iter()
                        .find(|a| a.index.get(&conn) == Some(&index))
                        .map(|a| (i, Some(d), a))
                }),
                _ => e
                    .aces
                    .iter()
                    .find(|a| a.index.get(&conn) == Some(&index))
                    .map(|a| (i, None, a)),
            })
    }

    /// True when `conn` is one of this map's connections.
    pub fn has_conn(&self, conn: ike::ConnId) -> bool {
        self.entries.iter().any(|e| {
            e.peers.iter().any(|p| p.conn == conn)
                || matches!(&e.kind, EntryPlanKind::Dynamic { entries, .. }
                    if entries.iter().any(|d| d.conns.contains(&conn)))
        })
    }
}

/// The out/in/fwd policies of one ACL line toward `peer` (permit: a tunnel template with
/// the line's reqid; deny: a bypass).
fn line_policies(a: &AcePlan, local: IpAddr, peer: IpAddr) -> Vec<PolicySpec> {
    let fwd = selector(&a.acl);
    let back = selector(&a.acl.mirrored());
    [
        (Dir::Out, fwd, (local, peer)),
        (Dir::In, back, (peer, local)),
        (Dir::Fwd, back, (peer, local)),
    ]
    .into_iter()
    .map(|(dir, sel, tmpl)| {
        let p = PolicySpec::new(sel, dir).priority(a.priority);
        if a.acl.permit {
            p.template(Template::tunnel(tmpl.0, tmpl.1, a.reqid))
        } else {
            p
        }
    })
    .collect()
}

/// The temporary policies of a flow a dynamic map accepted: out (`local_net` ->
/// `remote_net`) and in/fwd, with a tunnel template to `peer` and `reqid`, at `priority`.
pub fn temporary_policies(
    local: IpAddr,
    peer: IpAddr,
    out_sel: Selector,
    in_sel: Selector,
    reqid: u32,
    priority: u32,
) -> Vec<PolicySpec> {
    [
        (Dir::Out, out_sel, (local, peer)),
        (Dir::In, in_sel, (peer, local)),
        (Dir::Fwd, in_sel, (peer, local)),
    ]
    .into_iter()
    .map(|(dir, sel, (s, d))| {
        PolicySpec::new(sel, dir)
            .priority(priority)
            .template(Template::tunnel(s, d, reqid))
    })
    .collect()
}

/// An ACL line as an XFRM selector.
pub fn selector(a: &AclEntry) -> Selector {
    Selector {
        proto: a.proto,
        sport: a.sport,
        dport: a.dport,
        ..Selector::new(a.src, a.dst)
    }
}

/// An ACL prefix with ports as an IKEv2 traffic selector (RFC 7296 §3.13.1).
fn ts(net: IpNet, proto: u8, port: Option<u16>) -> TrafficSelector {
    let mut t = TrafficSelector::prefix(net.addr(), net.prefix_len());
    t.ip_proto = proto;
    if let Some(p) = port {
        t.start_port = p;
        t.end_port = p;
    }
    t
}

/// The Child SA configuration of one ACL permit line (our side is the line's source).
fn line_child(a: &AclEntry, ipsec: &config::IpsecProfile) -> ike::ChildConfig {
    let hard = ipsec.lifetime.kilobytes.saturating_mul(1024);
    ike::ChildConfig {
        esp_proposals: esp_proposals(ipsec),
        pfs: ipsec.pfs,
        pfs_addke: ipsec.pfs_addke,
        local_ts: vec![ts(a.src, a.proto, a.sport)],
        remote_ts: vec![ts(a.dst, a.proto, a.dport)],
        mode: ike::Mode::Tunnel,
        lifetime: lifetime(ipsec.lifetime.seconds),
        lifetime_bytes: Some(ike::ByteLimits {
            soft: hard / 10 * 9,
            hard,
        }),
    }
}

/// A stable connection id for `key`.
fn conn_id(conn_ids: &mut BTreeMap<String, u32>, key: String) -> ike::ConnId {
    let next = conn_ids.values().max().copied().unwrap_or(0) + 1;
    ike::ConnId(*conn_ids.entry(key).or_insert(next))
}

/// The engine connection of one crypto map peer or dynamic-map responder.
#[allow(clippy::too_many_arguments)]
fn map_conn(
    cfg: &Config,
    conn: ike::ConnId,
    name: String,
    local: SocketAddr,
    remote: ike::RemoteAddr,
    ike: &config::IkeProfile,
    remote_id: ike::IdMatch,
    credentials: &config::Credentials,
    children: Vec<ike::ChildConfig>,
) -> Option<PeerPlan> {
    let mut children = children.into_iter();
    let first = children.next()?;
    Some(PeerPlan {
        config: ike::PeerConfig {
            id: conn,
            name,
            local,
            remote,
            local_id: ike.local_id.clone(),
            remote_id,
            auth: auth_config(credentials),
            ike_proposals: ike.proposal_specs.iter().flat_map(expand_ike).collect(),
            ike_lifetime: lifetime(ike.lifetime_seconds),
            child: first,
            more_children: children.collect(),
            dpd: ike.dpd.map(|d| d.engine()),
            allow_legacy: cfg.global.allow_legacy,
            // A crypto map's SAs and policies name the peer's address: a peer that moves
            // negotiates again.
            mobike: false,
        },
        credentials: credentials.clone(),
    })
}

/// The connections of crypto map peers whose IKE profile says `version = 1` (the IKEv1
/// engine negotiates them). A peer's connection takes the profile of its first entry, as
/// [`plan_maps`] does; a dynamic map entry's connections (one per keyring entry, answering
/// any address its keyring covers) take the entry's profile.
pub fn v1_conns(cfg: &Config, maps: &BTreeMap<String, MapPlan>) -> Vec<(ike::ConnId, bool)> {
    let mut out = Vec::new();
    for (name, m) in &cfg.crypto_maps {
        let mut seen = std::collections::BTreeSet::new();
        let first = m
            .entries
            .iter()
            .filter(|e| e.kind == config::EntryKind::Isakmp)
            .flat_map(|e| e.peers.iter())
            .filter(|p| seen.insert(p.addr));
        for p in first.filter(|p| p.ike.version == 1) {
            let conn = maps
                .get(name)
                .into_iter()
                .flat_map(|mp| mp.entries.iter())
                .flat_map(|e| e.peers.iter())
                .find(|mp| mp.addr == p.addr)
                .map(|mp| (mp.conn, p.ike.aggressive));
            out.extend(conn);
        }
        let planned = maps.get(name).into_iter().flat_map(|mp| mp.entries.iter());
        for (e, ep) in m.entries.iter().zip(planned) {
            let (
                config::EntryKind::Dynamic { entries, .. },
                EntryPlanKind::Dynamic {
                    entries: dplans, ..
                },
            ) = (&e.kind, &ep.kind)
            else {
                continue;
            };
            for (d, dp) in entries.iter().zip(dplans) {
                if d.ike.version == 1 {
                    out.extend(dp.conns.iter().map(|c| (*c, d.ike.aggressive)));
                }
            }
        }
    }
    out
}

/// Plans every crypto map: their connections go into `peers`, ids kept stable in `conn_ids`
/// under `crypto_map:NAME:PEER` and `dynamic_map:NAME:SEQ#N`.
pub fn plan_maps(
    cfg: &Config,
    conn_ids: &mut BTreeMap<String, u32>,
    links: &LocalAddrs,
    peers: &mut Vec<PeerPlan>,
) -> Result<BTreeMap<String, MapPlan>> {
    let mut out = BTreeMap::new();
    let mut reqid = MAP_REQID_BASE;
    let port = cfg.global.ike_port;
    for (m_idx, (name, m)) in cfg.crypto_maps.iter().enumerate() {
        let m_idx = u32::try_from(m_idx).unwrap_or(u32::MAX);
        let family_v6 = m
            .entries
            .iter()
            .find_map(|e| e.peers.first())
            .is_some_and(|p| p.addr.is_ipv6());
        let (local, interface) = match &m.local {
            LocalTermination::Address(a) => (*a, None),
            LocalTermination::Interface(i) => match links.pick(i, family_v6) {
                Some(a) => (a, Some(i.clone())),
                None => bail!(
                    "crypto map {name}: interface {i} has no {} address",
                    if family_v6 { "IPv6" } else { "IPv4" }
                ),
            },
        };
        let base = MAP_PRIORITY + m_idx.saturating_mul(MAP_SPAN);
        if base.saturating_add(MAP_SPAN - 1) > *xfrm::OWNED_PRIORITY.end() {
            bail!(
                "too many crypto maps: the policy priority band holds {}",
                (xfrm::OWNED_PRIORITY.end() - MAP_PRIORITY + 1) / MAP_SPAN
            );
        }
        if m.entries.len() > (MAP_SPAN / ENTRY_SPAN) as usize {
            bail!(
                "crypto map {name}: at most {} entries",
                MAP_SPAN / ENTRY_SPAN
            );
        }
        // One connection per IKE peer of the map, and its children in entry then line order.
        let mut conns: BTreeMap<IpAddr, ike::ConnId> = BTreeMap::new();
        let mut children: BTreeMap<ike::ConnId, Vec<ike::ChildConfig>> = BTreeMap::new();
        let mut first_peer: BTreeMap<ike::ConnId, &config::MapPeer> = BTreeMap::new();
        let mut entries = Vec::new();
        for (e_idx, e) in m.entries.iter().enumerate() {
            let e_base = base + u32::try_from(e_idx).unwrap_or(0) * ENTRY_SPAN;
            let line_prio = |a_idx: usize| e_base + 1 + u32::try_from(a_idx).unwrap_or(0);
            let too_long = |n: usize| n >= (ENTRY_SPAN - 1) as usize;
            let mut next_reqid = || {
                reqid += 1;
                reqid - 1
            };
            let (aces, kind) = match &e.kind {
                config::EntryKind::Isakmp | config::EntryKind::Manual(_) => {
                    if too_long(e.acl.len()) {
                        bail!(
                            "crypto map {name} entry {}: at most {} ACL lines",
                            e.seq,
                            ENTRY_SPAN - 2
                        );
                    }
                    let mut aces = Vec::new();
                    for (a_idx, a) in e.acl.iter().enumerate() {
                        let mut index = BTreeMap::new();
                        let this_reqid = if a.permit { next_reqid() } else { 0 };
                        if a.permit && e.kind == config::EntryKind::Isakmp {
                            for p in &e.peers {
                                let conn = *conns.entry(p.addr).or_insert_with(|| {
                                    conn_id(conn_ids, format!("crypto_map:{name}:{}", p.addr))
                                });
                                first_peer.entry(conn).or_insert(p);
                                let list = children.entry(conn).or_default();
                                index.insert(
                                    conn,
                                    ike::ChildConfigIndex(
                                        u16::try_from(list.len()).unwrap_or(u16::MAX),
                                    ),
                                );
                                list.push(line_child(a, &e.ipsec));
                            }
                        }
                        aces.push(AcePlan {
                            acl: a.clone(),
                            priority: line_prio(a_idx),
                            reqid: this_reqid,
                            index,
                        });
                    }
                    let kind = match &e.kind {
                        config::EntryKind::Manual(sa) => EntryPlanKind::Manual {
                            peer: sa.peer,
                            sa: Box::new(sa.clone()),
                            transform: e.ipsec.sets[0].clone(),
                        },
                        _ => EntryPlanKind::Isakmp,
                    };
                    (aces, kind)
                }
                config::EntryKind::Dynamic {
                    name: dname,
                    entries: dyn_entries,
                } => {
                    let mut plans = Vec::new();
                    let mut line = 0usize;
                    for d in dyn_entries {
                        // Without an ACL any flow is accepted: one permit-any line per family.
                        let any_flow = d.acl.is_none();
                        let lines: Vec<AclEntry> = match &d.acl {
                            Some(l) => l.clone(),
                            None => [false, true]
                                .into_iter()
                                .map(|v6| {
                                    let any: IpNet = if v6 {
                                        IpNet::V6(Default::default())
                                    } else {
                                        IpNet::V4(Default::default())
                                    };
                                    AclEntry {
                                        permit: true,
                                        proto: 0,
                                        src: any,
                                        dst: any,
                                        sport: None,
                                        dport: None,
                                    }
                                })
                                .collect(),
                        };
                        // Who may connect: one responder connection per keyring entry, as a
                        // virtual template's profile (plan/templates.rs).
                        let ike = &d.ike;
                        let matches: Vec<(ike::RemoteAddr, ike::IdMatch, config::Credentials)> =
                            match &ike.credentials {
                                config::ProfileCredentials::Psk(_, keyring) => keyring
                                    .peers
                                    .iter()
                                    .map(|entry| {
                                        let creds = config::Credentials::Psk(entry.psk.clone());
                                        match &entry.peer {
                                            config::PeerMatch::Address(net) => (
                                                ike::RemoteAddr::Prefix(
                                                    net.addr(),
                                                    net.prefix_len(),
                                                ),
                                                ike.remote_id.clone(),
                                                creds,
                                            ),
                                            config::PeerMatch::Identity(_) => (
                                                ike::RemoteAddr::Any,
                                                entry
                                                    .id_match
                                                    .clone()
                                                    .unwrap_or_else(|| ike.remote_id.clone()),
                                                creds,
                                            ),
                                        }
                                    })
                                    .collect(),
                                config::ProfileCredentials::Certificate(_, files) => vec![(
                                    ike::RemoteAddr::Any,
                                    ike.remote_id.clone(),
                                    config::Credentials::Certificate(files.clone()),
                                )],
                            };
                        let mut dconns = Vec::new();
                        for (n, _) in matches.iter().enumerate() {
                            dconns.push(conn_id(
                                conn_ids,
                                format!("dynamic_map:{dname}:{}#{n}", d.seq),
                            ));
                        }
                        let mut aces = Vec::new();
                        for a in &lines {
                            if too_long(line) {
                                bail!(
                                    "dynamic map {dname}: at most {} ACL lines in all",
                                    ENTRY_SPAN - 2
                                );
                            }
                            let mut index = BTreeMap::new();
                            if a.permit {
                                for conn in &dconns {
                                    let list = children.entry(*conn).or_default();
                                    index.insert(
                                        *conn,
                                        ike::ChildConfigIndex(
                                            u16::try_from(list.len()).unwrap_or(u16::MAX),
                                        ),
                                    );
                                    list.push(line_child(a, &d.ipsec));
                                }
                            }
                            aces.push(AcePlan {
                                acl: a.clone(),
                                priority: line_prio(line),
                                reqid: 0,
                                index,
                            });
                            line += 1;
                        }
                        for ((remote, remote_id, creds), conn) in matches.into_iter().zip(&dconns) {
                            let list = children.remove(conn).unwrap_or_default();
                            if let Some(p) = map_conn(
                                cfg,
                                *conn,
                                format!("dynamic_map:{dname}:{}", d.seq),
                                SocketAddr::new(local, port),
                                remote,
                                ike,
                                remote_id,
                                &creds,
                                list,
                            ) {
                                peers.push(p);
                            }
                        }
                        plans.push(DynEntryPlan {
                            seq: d.seq,
                            access_list: d.access_list.clone(),
                            aces,
                            any_flow,
                            conns: dconns,
                            reverse_route: d.reverse_route,
                        });
                    }
                    (
                        Vec::new(),
                        EntryPlanKind::Dynamic {
                            name: dname.clone(),
                            entries: plans,
                            temp_priority: e_base,
                        },
                    )
                }
            };
            entries.push((e, aces, kind));
        }
        for (addr, conn) in &conns {
            let p = first_peer[conn];
            let list = children.remove(conn).unwrap_or_default();
            if let Some(pp) = map_conn(
                cfg,
                *conn,
                format!("{name}:{addr}"),
                SocketAddr::new(local, port),
                ike::RemoteAddr::Host(SocketAddr::new(*addr, port)),
                &p.ike,
                p.ike.remote_id.clone(),
                &p.credentials,
                list,
            ) {
                peers.push(pp);
            }
        }
        let entries = entries
            .into_iter()
            .map(|(e, aces, kind)| EntryPlan {
                seq: e.seq,
                access_list: e.access_list.clone(),
                peers: e
                    .peers
                    .iter()
                    .map(|p| MapPeerPlan {
                        addr: p.addr,
                        conn: conns[&p.addr],
                    })
                    .collect(),
                aces,
                per_host: e.per_host,
                reverse_route: e.reverse_route,
                initiate: e.initiate,
                transform_sets: e.ipsec.transform_sets.clone(),
                pfs: e.ipsec.pfs,
                lifetime: e.ipsec.lifetime,
                kind,
            })
            .collect();
        out.insert(
            name.clone(),
            MapPlan {
                name: name.clone(),
                local,
                interface,
                entries,
            },
        );
    }
    Ok(out)
}
