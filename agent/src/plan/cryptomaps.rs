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
    /// Its Child SA configuration in each peer's connection (permit lines).
    pub index: BTreeMap<IpAddr, ike::ChildConfigIndex>,
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
    pub fn policies(&self, active: impl Fn(usize) -> IpAddr) -> Vec<PolicySpec> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let peer = active(i);
            for a in &e.aces {
                let fwd = selector(&a.acl);
                let back = selector(&a.acl.mirrored());
                for (dir, sel, tmpl) in [
                    (Dir::Out, fwd, (self.local, peer)),
                    (Dir::In, back, (peer, self.local)),
                    (Dir::Fwd, back, (peer, self.local)),
                ] {
                    let mut p = PolicySpec::new(sel, dir).priority(a.priority);
                    if a.acl.permit {
                        p = p.template(Template::tunnel(tmpl.0, tmpl.1, a.reqid));
                    }
                    out.push(p);
                }
            }
        }
        out
    }

    /// The entry and ACL line a permit policy's reqid belongs to.
    pub fn by_reqid(&self, reqid: u32) -> Option<(usize, &AcePlan)> {
        self.entries.iter().enumerate().find_map(|(i, e)| {
            e.aces
                .iter()
                .find(|a| a.acl.permit && a.reqid == reqid)
                .map(|a| (i, a))
        })
    }

    /// The entry and ACL line of Child SA configuration `index` of connection `conn`.
    pub fn by_child(
        &self,
        conn: ike::ConnId,
        index: ike::ChildConfigIndex,
    ) -> Option<(usize, &AcePlan)> {
        self.entries.iter().enumerate().find_map(|(i, e)| {
            let peer = e.peers.iter().find(|p| p.conn == conn)?;
            e.aces
                .iter()
                .find(|a| a.index.get(&peer.addr) == Some(&index))
                .map(|a| (i, a))
        })
    }

    /// True when `conn` is one of this map's connections.
    pub fn has_conn(&self, conn: ike::ConnId) -> bool {
        self.entries
            .iter()
            .any(|e| e.peers.iter().any(|p| p.conn == conn))
    }
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

/// Plans every crypto map: their connections go into `peers`, ids kept stable in `conn_ids`
/// under `crypto_map:NAME:PEER`.
pub fn plan_maps(
    cfg: &Config,
    conn_ids: &mut BTreeMap<String, u32>,
    links: &LocalAddrs,
    peers: &mut Vec<PeerPlan>,
) -> Result<BTreeMap<String, MapPlan>> {
    let mut out = BTreeMap::new();
    let mut reqid = MAP_REQID_BASE;
    for (m_idx, (name, m)) in cfg.crypto_maps.iter().enumerate() {
        let m_idx = u32::try_from(m_idx).unwrap_or(u32::MAX);
        let family_v6 = m
            .entries
            .first()
            .and_then(|e| e.peers.first())
            .is_some_and(|p| p.addr.is_ipv6());
        let (local, interface) = match &m.local {
            LocalTermination::Address(a) => (*a, None),
            LocalTermination::Interface(i) => match links.pick(i, family_v6) {
                Some(a) => (a, Some(i.clone())),
                None => bail!("crypto map {name}: interface {i} has no address"),
            },
        };
        let base = MAP_PRIORITY + m_idx * MAP_SPAN;
        if base + MAP_SPAN - 1 > *xfrm::OWNED_PRIORITY.end() {
            bail!(
                "too many crypto maps: the policy priority band holds {}",
                (xfrm::OWNED_PRIORITY.end() - MAP_PRIORITY + 1) / MAP_SPAN
            );
        }
        // Child configurations per peer, in entry then ACL order.
        let mut children: BTreeMap<IpAddr, Vec<ike::ChildConfig>> = BTreeMap::new();
        let mut first_profile: BTreeMap<IpAddr, &config::MapPeer> = BTreeMap::new();
        let mut entries = Vec::new();
        for (e_idx, e) in m.entries.iter().enumerate() {
            let e_idx = u32::try_from(e_idx).unwrap_or(u32::MAX);
            if (e_idx + 1) * ENTRY_SPAN > MAP_SPAN || e.acl.len() >= ENTRY_SPAN as usize {
                bail!(
                    "crypto map {name}: at most {} entries of at most {} ACL lines each",
                    MAP_SPAN / ENTRY_SPAN,
                    ENTRY_SPAN - 1
                );
            }
            let hard = e.ipsec.lifetime.kilobytes.saturating_mul(1024);
            let mut aces = Vec::new();
            for (a_idx, a) in e.acl.iter().enumerate() {
                let mut index = BTreeMap::new();
                let mut this_reqid = 0;
                if a.permit {
                    this_reqid = reqid;
                    reqid += 1;
                    for p in &e.peers {
                        let list = children.entry(p.addr).or_default();
                        first_profile.entry(p.addr).or_insert(p);
                        index.insert(
                            p.addr,
                            ike::ChildConfigIndex(u16::try_from(list.len()).unwrap_or(u16::MAX)),
                        );
                        list.push(ike::ChildConfig {
                            esp_proposals: esp_proposals(&e.ipsec),
                            pfs: e.ipsec.pfs,
                            local_ts: vec![ts(a.src, a.proto, a.sport)],
                            remote_ts: vec![ts(a.dst, a.proto, a.dport)],
                            mode: ike::Mode::Tunnel,
                            lifetime: lifetime(e.ipsec.lifetime.seconds),
                            lifetime_bytes: Some(ike::ByteLimits {
                                soft: hard / 10 * 9,
                                hard,
                            }),
                        });
                    }
                }
                aces.push(AcePlan {
                    acl: a.clone(),
                    priority: base + e_idx * ENTRY_SPAN + u32::try_from(a_idx).unwrap_or(0),
                    reqid: this_reqid,
                    index,
                });
            }
            entries.push((e, aces));
        }
        // One connection per peer.
        let mut conns = BTreeMap::new();
        for (addr, list) in children {
            let key = format!("crypto_map:{name}:{addr}");
            let next = conn_ids.values().max().copied().unwrap_or(0) + 1;
            let conn = ike::ConnId(*conn_ids.entry(key.clone()).or_insert(next));
            conns.insert(addr, conn);
            let p = first_profile[&addr];
            let ike = &p.ike;
            let port = cfg.global.ike_port;
            let mut list = list.into_iter();
            let Some(first) = list.next() else { continue };
            peers.push(PeerPlan {
                config: ike::PeerConfig {
                    id: conn,
                    name: format!("{name}:{addr}"),
                    local: SocketAddr::new(local, port),
                    remote: ike::RemoteAddr::Host(SocketAddr::new(addr, port)),
                    local_id: ike.local_id.clone(),
                    remote_id: ike.remote_id.clone(),
                    auth: auth_config(&p.credentials),
                    ike_proposals: ike.proposal_specs.iter().flat_map(expand_ike).collect(),
                    ike_lifetime: lifetime(ike.lifetime_seconds),
                    child: first,
                    more_children: list.collect(),
                    dpd: ike.dpd.map(|d| d.engine()),
                    allow_legacy: cfg.global.allow_legacy,
                    mobike: false,
                },
                credentials: p.credentials.clone(),
            });
        }
        let entries = entries
            .into_iter()
            .map(|(e, aces)| EntryPlan {
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
