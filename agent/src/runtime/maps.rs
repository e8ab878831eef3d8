//! Crypto maps at run time: the map's SPD is installed at start; an ACQUIRE for one of its
//! permit policies starts that ACL line's Child SA with the entry's current peer (the
//! kernel dropped the packet meanwhile, as IOS drops it while it negotiates, seed digest
//! §2.1); installs put the two SAs under the line's reqid, restricted to the negotiated
//! selectors, and add the reverse routes; a dead or unreachable peer moves the entry to the
//! next one (`set peer` repeated, seed F-E7).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use ike::endpoint::Command as IkeCommand;
use ike::{ChildSaId, ConnId};
use tracing::{info, warn};
use xfrm::{PolicySpec, RouteSpec, SaId, Selector};

use super::Runtime;
use crate::model::{self, Binding};
use crate::plan::MAIN_TABLE;
use crate::plan::cryptomaps::{AcePlan, MapPlan};
use crate::reconcile::Op;
use crate::sessions::{ChildInfo, ChildState};
use crate::virtual_access::ts_prefix;
use crate::{kernel, offload};

/// A crypto map Child SA as installed.
#[derive(Clone, Debug)]
pub(super) struct MapChild {
    /// Map name.
    pub map: String,
    /// Entry index in the map.
    pub entry: usize,
    /// Its two SAs (inbound, outbound).
    pub ids: [SaId; 2],
    /// Reverse routes it added.
    pub routes: Vec<RouteSpec>,
}

/// The crypto maps' run-time state.
#[derive(Debug, Default)]
pub(super) struct Maps {
    /// Current peer (index into the entry's peers) per (map, entry index).
    active: BTreeMap<(String, usize), usize>,
    /// Installed SPD per map.
    policies: BTreeMap<String, Vec<PolicySpec>>,
    /// Child SAs by id.
    children: BTreeMap<ChildSaId, MapChild>,
}

impl Maps {
    /// The entry's current peer index.
    pub(super) fn active(&self, map: &str, entry: usize) -> usize {
        self.active
            .get(&(map.to_owned(), entry))
            .copied()
            .unwrap_or(0)
    }

    /// The installed Child SAs of a map entry.
    pub(super) fn children_of(
        &self,
        map: &str,
        entry: usize,
    ) -> impl Iterator<Item = (&ChildSaId, &MapChild)> {
        self.children
            .iter()
            .filter(move |(_, c)| c.map == map && c.entry == entry)
    }
}

/// The kernel selectors of an install (inbound's, outbound's) when the negotiated traffic
/// is one prefix on each side, as an ACL line's is: then the SAs carry exactly that flow
/// (with per-host, the host pair), else the reqid alone ties them to their line.
fn sa_selectors(inst: &ike::ChildSaInstall, ace: &AcePlan) -> Option<(Selector, Selector)> {
    let ([l], [r]) = (inst.local_ts.as_slice(), inst.remote_ts.as_slice()) else {
        return None;
    };
    let (l, r) = (ts_prefix(l)?, ts_prefix(r)?);
    let out = Selector {
        proto: ace.acl.proto,
        sport: ace.acl.sport,
        dport: ace.acl.dport,
        ..Selector::new(l, r)
    };
    let inb = Selector {
        proto: ace.acl.proto,
        sport: ace.acl.dport,
        dport: ace.acl.sport,
        ..Selector::new(r, l)
    };
    Some((inb, out))
}

impl Runtime {
    /// The map a connection belongs to.
    pub(super) fn map_of_conn(&self, conn: ConnId) -> Option<&MapPlan> {
        self.plan.maps.values().find(|m| m.has_conn(conn))
    }

    /// Installs every map's SPD and starts the entries marked `initiate`.
    pub(super) async fn start_maps(&mut self) {
        let maps: Vec<MapPlan> = self.plan.maps.values().cloned().collect();
        for m in &maps {
            self.install_map_policies(m).await;
            info!(
                crypto_map = %m.name,
                local = %m.local,
                entries = m.entries.len(),
                "crypto map applied"
            );
            for (i, e) in m.entries.iter().enumerate() {
                if e.initiate && !e.per_host {
                    self.start_entry(m, i, Instant::now());
                }
            }
        }
    }

    /// (Re)installs a map's SPD for the entries' current peers (`ip xfrm policy update ...`
    /// for each line and direction).
    async fn install_map_policies(&mut self, m: &MapPlan) {
        let active = |i: usize| m.entries[i].peers[self.maps.active(&m.name, i)].addr;
        let policies = m.policies(active);
        let op = Op::Policies {
            name: format!("crypto map {}", m.name),
            policies: policies.clone(),
        };
        for e in kernel::apply_one(&self.h, &op).await {
            warn!(crypto_map = %m.name, "policy: {e:#}");
        }
        self.maps.policies.insert(m.name.clone(), policies);
    }

    /// Negotiates every permit line of entry `i` with its current peer.
    fn start_entry(&mut self, m: &MapPlan, i: usize, now: Instant) {
        let e = &m.entries[i];
        let peer = &e.peers[self.maps.active(&m.name, i)];
        for a in e.aces.iter().filter(|a| a.acl.permit) {
            if let Some(index) = a.index.get(&peer.addr) {
                self.ep.handle_command(
                    now,
                    IkeCommand::InitiateChild {
                        conn: peer.conn,
                        index: *index,
                        host_pair: None,
                    },
                );
            }
        }
    }

    /// An ACQUIRE for a crypto map policy (identified by its template's reqid): starts that
    /// line's Child SA with the entry's current peer; per-host entries negotiate the packet's
    /// host pair. Returns false when the policy is not a crypto map's.
    pub(super) fn map_acquire(&mut self, now: Instant, a: &xfrm::Acquire) -> bool {
        if a.policy.if_id.is_some() || a.policy.mark.is_some() {
            return false;
        }
        let Some(reqid) = a.policy.templates.first().map(|t| t.reqid) else {
            return false;
        };
        let found = self.plan.maps.values().find_map(|m| {
            let (i, ace) = m.by_reqid(reqid)?;
            let e = &m.entries[i];
            let peer = &e.peers[self.maps.active(&m.name, i)];
            let index = *ace.index.get(&peer.addr)?;
            let host_pair = e
                .per_host
                .then(|| (a.packet.src.addr(), a.packet.dst.addr()));
            Some((
                m.name.clone(),
                e.seq,
                peer.conn,
                peer.addr,
                index,
                host_pair,
            ))
        });
        let Some((map, seq, conn, peer, index, host_pair)) = found else {
            return false;
        };
        tracing::debug!(
            crypto_map = %map,
            seq,
            %peer,
            packet = %format_args!("{} -> {}", a.packet.src, a.packet.dst),
            "ACQUIRE: negotiating the ACL line's SA"
        );
        self.ep.handle_command(
            now,
            IkeCommand::InitiateChild {
                conn,
                index,
                host_pair,
            },
        );
        true
    }

    /// Installs a crypto map Child SA: its two SAs under the ACL line's reqid, restricted to
    /// the negotiated selectors, then the entry's reverse routes.
    pub(super) async fn install_map_child(&mut self, inst: &ike::ChildSaInstall) -> Result<()> {
        let m = self
            .map_of_conn(inst.conn)
            .context("no crypto map for this connection")?
            .clone();
        let (i, ace) = m
            .by_child(inst.conn, inst.config)
            .context("no ACL line for this Child SA configuration")?;
        let e = &m.entries[i];
        let b = Binding {
            reqid: ace.reqid,
            if_id: None,
            mark: None,
        };
        let sas = model::child_sas_bound(b, inst, sa_selectors(inst, ace))?;
        kernel::install_child_sas(
            &self.h,
            &sas,
            &offload::Decision::Software { why: None },
            false,
        )
        .await?;
        let ids = model::sa_ids(
            b,
            inst.local.ip(),
            inst.remote.ip(),
            inst.inbound_spi,
            inst.outbound_spi,
        );
        let routes = match e.reverse_route {
            Some(metric) => self.reverse_routes(inst, metric).await,
            None => Vec::new(),
        };
        let lifetime = self
            .plan
            .peers
            .get(&inst.conn)
            .and_then(|p| p.config.child_config(inst.config))
            .map_or(inst.hard_lifetime, |c| c.lifetime.lifetime);
        self.sessions.installed(
            inst.child,
            ChildInfo {
                conn: inst.conn,
                session: inst.session,
                spi_in: inst.inbound_spi,
                spi_out: inst.outbound_spi,
                encr: inst.encr,
                integ: inst.integ,
                local: inst.local,
                remote: inst.remote,
                installed: Instant::now(),
                lifetime,
                hard_bytes: inst.bytes.map(|b| b.hard),
                encap: inst.encap,
                clone: None,
                routes: Vec::new(),
                state: ChildState::Installed,
            },
        );
        info!(
            crypto_map = %m.name,
            seq = e.seq,
            acl = %ace.acl,
            peer = %inst.remote.ip(),
            spi_in = format_args!("{:08x}", inst.inbound_spi),
            spi_out = format_args!("{:08x}", inst.outbound_spi),
            "Child SA installed"
        );
        self.maps.children.insert(
            inst.child,
            MapChild {
                map: m.name.clone(),
                entry: i,
                ids,
                routes,
            },
        );
        Ok(())
    }

    /// Reverse route injection (IOS `set reverse-route`): each protected remote prefix is
    /// routed the way the peer is reached (`ip route add P via GW dev DEV metric M`), so the
    /// LAN's traffic for it reaches the policy; removed with the SA.
    async fn reverse_routes(&mut self, inst: &ike::ChildSaInstall, metric: u32) -> Vec<RouteSpec> {
        let peer = inst.remote.ip();
        let via = match self.h.link().route_via(peer).await {
            Ok(v) => v,
            Err(e) => {
                warn!(%peer, "reverse route: no route to the peer: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for ts in &inst.remote_ts {
            let Some(prefix) = ts_prefix(ts) else {
                continue;
            };
            if prefix.prefix_len() == 0 {
                continue;
            }
            let mut r = RouteSpec {
                dst: prefix,
                dev: via.0,
                gateway: via.1,
                src: None,
                metric: Some(metric),
                table: MAIN_TABLE,
            };
            if r.gateway.is_none() && r.dev.is_none() {
                r.gateway = Some(peer);
            }
            match self.h.link().add_route(&r).await {
                Ok(()) => out.push(r),
                // Several SAs of one entry (per-host) share the prefix's route.
                Err(e) if e.to_string().contains("exists") => {}
                Err(e) => warn!(route = %prefix, "reverse route: {e}"),
            }
        }
        out
    }

    /// A crypto map Child SA is gone: its SAs and reverse routes go with it. Returns false
    /// when the Child SA is not a crypto map's.
    pub(super) async fn remove_map_child(&mut self, child: ChildSaId) -> bool {
        let Some(c) = self.maps.children.remove(&child) else {
            return false;
        };
        kernel::delete_sas(&self.h, &c.ids).await;
        // Another SA of the entry (a per-host sibling, a rekey's successor) may still need
        // the route: keep it then.
        let still: Vec<RouteSpec> = self
            .maps
            .children
            .values()
            .flat_map(|o| o.routes.iter().cloned())
            .collect();
        for r in &c.routes {
            if !still.contains(r)
                && let Err(e) = self.h.link().del_route(r).await
            {
                warn!(route = %r.dst, "reverse route: {e}");
            }
        }
        true
    }

    /// The engine gave up on a crypto map peer (dead, unanswered, refused): every entry whose
    /// current peer it is moves to the next peer in its list, its policies follow, and its
    /// lines are negotiated with the new peer at once (IOS: "if the attempt fails with the
    /// first peer, IKE tries the next peer on the crypto map list", seed F-E7).
    pub(super) async fn map_peer_failed(&mut self, conn: ConnId, now: Instant) {
        let Some(m) = self.map_of_conn(conn).cloned() else {
            return;
        };
        let mut moved = false;
        for (i, e) in m.entries.iter().enumerate() {
            let cur = self.maps.active(&m.name, i);
            if e.peers.len() < 2 || e.peers[cur].conn != conn {
                continue;
            }
            let next = (cur + 1) % e.peers.len();
            warn!(
                crypto_map = %m.name,
                seq = e.seq,
                from = %e.peers[cur].addr,
                to = %e.peers[next].addr,
                "crypto map peer failed; trying the next peer"
            );
            self.maps.active.insert((m.name.clone(), i), next);
            moved = true;
        }
        if moved {
            self.install_map_policies(&m).await;
            for (i, e) in m.entries.iter().enumerate() {
                if e.peers.len() > 1 {
                    self.start_entry(&m, i, now);
                }
            }
        }
    }

    /// Reload, before the engine takes the new configuration: each map that the new plan
    /// changes or drops ends its IKE SAs (with a Delete to the peers), its SAs, reverse
    /// routes and policies. Unchanged maps keep everything.
    pub(super) async fn unload_changed_maps(&mut self, new: &BTreeMap<String, MapPlan>) {
        let changed: Vec<MapPlan> = self
            .plan
            .maps
            .values()
            .filter(|m| new.get(&m.name) != Some(*m))
            .cloned()
            .collect();
        for m in &changed {
            let conns: Vec<ConnId> = m
                .entries
                .iter()
                .flat_map(|e| e.peers.iter().map(|p| p.conn))
                .collect();
            if let Some(pols) = self.maps.policies.remove(&m.name) {
                let ops: Vec<Op> = pols.iter().map(|p| Op::RemovePolicy(p.id())).collect();
                for e in kernel::apply(&self.h, &ops).await {
                    warn!(crypto_map = %m.name, "remove policy: {e:#}");
                }
            }
            for conn in conns {
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Terminate { conn });
            }
            self.drain().await;
            let kids: Vec<ChildSaId> = self
                .maps
                .children
                .iter()
                .filter(|(_, c)| c.map == m.name)
                .map(|(id, _)| *id)
                .collect();
            for id in kids {
                self.sessions.removed(id);
                self.remove_map_child(id).await;
            }
            self.maps.active.retain(|(n, _), _| n != &m.name);
            info!(crypto_map = %m.name, "crypto map removed for reload");
        }
    }

    /// Reload, once the new plan is in place: maps that are new or changed get their
    /// policies and start their `initiate` entries.
    pub(super) async fn load_changed_maps(&mut self, old: &BTreeMap<String, MapPlan>) {
        let new: Vec<MapPlan> = self
            .plan
            .maps
            .values()
            .filter(|m| old.get(&m.name) != Some(*m))
            .cloned()
            .collect();
        for m in &new {
            self.install_map_policies(m).await;
            info!(crypto_map = %m.name, local = %m.local, "crypto map applied");
            for (i, e) in m.entries.iter().enumerate() {
                if e.initiate && !e.per_host {
                    self.start_entry(m, i, Instant::now());
                }
            }
        }
    }

    /// Shutdown: the maps' policies first (so that no packet meets a policy whose SAs are
    /// gone and leaves a larval SA behind), then Deletes to the peers and the SAs.
    pub(super) async fn unload_all_maps(&mut self) {
        let all = BTreeMap::new();
        self.unload_changed_maps(&all).await;
    }

    /// For `show crypto map`: each map's entries with their current peer and SAs.
    pub(super) fn maps_json(&self) -> serde_json::Value {
        let mut out = Vec::new();
        for m in self.plan.maps.values() {
            let entries: Vec<serde_json::Value> = m
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let cur = self.maps.active(&m.name, i);
                    let sas: Vec<serde_json::Value> = self
                        .maps
                        .children_of(&m.name, i)
                        .filter_map(|(id, _)| self.sessions.child(*id))
                        .map(|c| {
                            serde_json::json!({
                                "peer": c.remote.ip().to_string(),
                                "spi_in": format!("{:08x}", c.spi_in),
                                "spi_out": format!("{:08x}", c.spi_out),
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "seq": e.seq,
                        "access_list": e.access_list,
                        "acl": e.aces.iter().map(|a| a.acl.to_string()).collect::<Vec<_>>(),
                        "peers": e.peers.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(),
                        "current_peer": e.peers[cur].addr.to_string(),
                        "transform_sets": e.transform_sets,
                        "pfs": e.pfs.map(|g| g.id()),
                        "lifetime_seconds": e.lifetime.seconds,
                        "lifetime_kilobytes": e.lifetime.kilobytes,
                        "per_host": e.per_host,
                        "reverse_route": e.reverse_route,
                        "initiate": e.initiate,
                        "sas": sas,
                    })
                })
                .collect();
            out.push(serde_json::json!({
                "name": m.name,
                "local": m.local.to_string(),
                "interface": m.interface,
                "entries": entries,
            }));
        }
        serde_json::Value::Array(out)
    }
}
