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
use tracing::{error, info, warn};
use xfrm::{PolicySpec, RouteSpec, SaId, Selector};

use super::Runtime;
use crate::model::{self, Binding};
use crate::plan::MAIN_TABLE;
use crate::plan::cryptomaps::{self, AcePlan, EntryPlanKind, MapPlan};
use crate::reconcile::Op;
use crate::sessions::ChildInfo;
use crate::virtual_access::ts_prefix;
use crate::{kernel, offload};

/// A crypto map Child SA as installed.
#[derive(Clone, Debug)]
pub(super) struct MapChild {
    /// Map name.
    pub map: String,
    /// Entry index in the map.
    pub entry: usize,
    /// The permit line it protects (its reqid; a dynamic flow's temporary reqid), for the
    /// per-line hit state of `show crypto map`.
    pub line_reqid: u32,
    /// Its two SAs (inbound, outbound).
    pub ids: [SaId; 2],
    /// Reverse routes it added.
    pub routes: Vec<RouteSpec>,
    /// The temporary policy set it uses (dynamic maps), by reqid.
    pub temp: Option<u32>,
}

/// A flow a dynamic map accepted: its policies live while any of its Child SAs does (a
/// rekey's new SA takes the old one's place under the same reqid).
#[derive(Clone, Debug)]
struct Temp {
    peer: std::net::IpAddr,
    out_sel: Selector,
    reqid: u32,
    policies: Vec<PolicySpec>,
    children: std::collections::BTreeSet<ChildSaId>,
}

/// reqids of dynamic maps' temporary policies.
const TEMP_REQIDS: std::ops::Range<u32> =
    cryptomaps::MAP_REQID_BASE + 0x4000..cryptomaps::MAP_REQID_BASE + 0x8000;

/// The crypto maps' run-time state.
#[derive(Debug, Default)]
pub(super) struct Maps {
    /// Current peer (index into the entry's peers) per (map, entry index).
    active: BTreeMap<(String, usize), usize>,
    /// Installed SPD per map.
    policies: BTreeMap<String, Vec<PolicySpec>>,
    /// Child SAs by id.
    children: BTreeMap<ChildSaId, MapChild>,
    /// Dynamic maps' accepted flows.
    temps: Vec<Temp>,
    /// Manual entries' SAs, per map: (entry index, the two SA ids).
    manual: BTreeMap<String, Vec<(usize, [SaId; 2])>>,
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
            self.install_manual(m).await;
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
        let active = |i: usize| {
            m.entries[i]
                .peers
                .get(self.maps.active(&m.name, i))
                .map(|p| p.addr)
        };
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

    /// Installs the manual entries' SAs (no IKE: they exist from the start, seed F-E9).
    async fn install_manual(&mut self, m: &MapPlan) {
        for (i, e) in m.entries.iter().enumerate() {
            let EntryPlanKind::Manual { sa, transform, .. } = &e.kind else {
                continue;
            };
            let Some(ace) = e.aces.first() else { continue };
            let b = Binding {
                reqid: ace.reqid,
                if_id: None,
                mark: None,
            };
            let sels = (
                cryptomaps::selector(&ace.acl.mirrored()),
                cryptomaps::selector(&ace.acl),
            );
            let res = async {
                let sas = model::manual_sas(b, m.local, sa, transform, sels)?;
                kernel::install_child_sas(
                    &self.h,
                    &sas,
                    &offload::Decision::Software { why: None },
                    false,
                    ike::Halves::Both,
                )
                .await?;
                Ok::<_, anyhow::Error>(model::sa_ids(
                    b,
                    m.local,
                    sa.peer,
                    sa.inbound.spi,
                    sa.outbound.spi,
                ))
            };
            match res.await {
                Ok(ids) => {
                    info!(
                        crypto_map = %m.name,
                        seq = e.seq,
                        peer = %sa.peer,
                        spi_in = format_args!("{:08x}", sa.inbound.spi),
                        spi_out = format_args!("{:08x}", sa.outbound.spi),
                        "manual SAs installed"
                    );
                    self.maps
                        .manual
                        .entry(m.name.clone())
                        .or_default()
                        .push((i, ids));
                }
                Err(err) => error!(crypto_map = %m.name, seq = e.seq, "manual SAs: {err:#}"),
            }
        }
    }

    /// Negotiates every permit line of entry `i` with its current peer.
    fn start_entry(&mut self, m: &MapPlan, i: usize, now: Instant) {
        let e = &m.entries[i];
        let Some(peer) = e.peers.get(self.maps.active(&m.name, i)) else {
            return;
        };
        for a in e.aces.iter().filter(|a| a.acl.permit) {
            if let Some(index) = a.index.get(&peer.conn) {
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
            let peer = e.peers.get(self.maps.active(&m.name, i))?;
            let index = *ace.index.get(&peer.conn)?;
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
        let (i, dynamic, ace) = m
            .by_child(inst.conn, inst.config)
            .context("no ACL line for this Child SA configuration")?;
        let e = &m.entries[i];
        // A rekey's SAs may come at two moments (`ike::Halves`: IKEv1, and an IKEv2 rekey
        // the peer initiated). A dynamic map's flow has temporary policies made with its
        // SAs, so its two go in together at the first (leaving the one-flight window the
        // split closes elsewhere).
        let halves = match (dynamic, inst.halves) {
            (Some(_), ike::Halves::OutboundLater) => return Ok(()),
            (Some(_), _) => ike::Halves::Both,
            (None, h) => h,
        };
        let selectors = sa_selectors(inst, ace);
        // A dynamic map's flow gets its temporary policies first (or shares those of the SA
        // it rekeys), so that the SAs have a template to serve.
        let (reqid, temp) = match (&e.kind, dynamic) {
            (EntryPlanKind::Dynamic { temp_priority, .. }, Some(_)) => {
                let (inb, out) = selectors.context(
                    "dynamic map: the accepted flow is not one prefix on each side; refused",
                )?;
                let r = self
                    .temp_policies(
                        &m,
                        inst.local.ip(),
                        inst.remote.ip(),
                        out,
                        inb,
                        *temp_priority,
                    )
                    .await?;
                (r, Some(r))
            }
            _ => (ace.reqid, None),
        };
        let b = Binding {
            reqid,
            if_id: None,
            mark: None,
        };
        let sas = model::child_sas_bound(b, inst, selectors)?;
        if let Err(err) = kernel::install_child_sas(
            &self.h,
            &sas,
            &offload::Decision::Software { why: None },
            false,
            halves,
        )
        .await
        {
            if let Some(r) = temp {
                self.release_temp(r, None).await;
            }
            return Err(err);
        }
        if halves == ike::Halves::OutboundLater {
            // The rest (routes, books) came with the inbound SA.
            return Ok(());
        }
        if let Some(r) = temp
            && let Some(t) = self.maps.temps.iter_mut().find(|t| t.reqid == r)
        {
            t.children.insert(inst.child);
        }
        let ids = model::sa_ids(
            b,
            inst.local.ip(),
            inst.remote.ip(),
            inst.inbound_spi,
            inst.outbound_spi,
        );
        let metric = dynamic.map_or(e.reverse_route, |d| d.reverse_route);
        let routes = match metric {
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
            ChildInfo::installed(inst, lifetime, None, Vec::new()),
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
                line_reqid: ace.reqid,
                ids,
                routes,
                temp,
            },
        );
        self.vici_child(inst.child, crate::vici::SaEventKind::ChildInstalled);
        Ok(())
    }

    /// The temporary policies for a flow a dynamic map accepted from `peer` (IOS's
    /// "temporary crypto map entry", seed F-E5): the same flow from the same peer shares
    /// them (a rekey); a new one gets a fresh reqid. Equivalent to `ip xfrm policy add src L
    /// dst R dir out|in|fwd priority P tmpl src A dst B proto esp mode tunnel reqid Q`.
    async fn temp_policies(
        &mut self,
        m: &MapPlan,
        local: std::net::IpAddr,
        peer: std::net::IpAddr,
        out: Selector,
        inb: Selector,
        priority: u32,
    ) -> Result<u32> {
        if let Some(t) = self.maps.temps.iter().find(|t| t.out_sel == out) {
            if t.peer == peer {
                return Ok(t.reqid);
            }
            anyhow::bail!(
                "dynamic map: the flow {} -> {} is already in use by {}; refused for {peer}",
                out.src,
                out.dst,
                t.peer
            );
        }
        let reqid = TEMP_REQIDS
            .clone()
            .find(|r| !self.maps.temps.iter().any(|t| t.reqid == *r))
            .context("dynamic map: no free reqid")?;
        let policies = cryptomaps::temporary_policies(local, peer, out, inb, reqid, priority);
        // The kernel keeps one policy per selector and direction whatever the priority
        // (xfrm_policy_insert compares selector, mark and if_id): a flow that is exactly an
        // ACL line takes the place of that line's block policy, which comes back with the
        // flow's last SA. Updating (XFRM_MSG_UPDPOLICY) does both cases.
        kernel::put_policies(&self.h, &policies)
            .await
            .with_context(|| format!("dynamic map: policies for {} -> {}", out.src, out.dst))?;
        info!(crypto_map = %m.name, %peer, flow = %format_args!("{} -> {}", out.src, out.dst), "dynamic map entry created");
        self.maps.temps.push(Temp {
            peer,
            out_sel: out,
            reqid,
            policies,
            children: Default::default(),
        });
        Ok(reqid)
    }

    /// A Child SA of a temporary policy set is gone (or never came: `None`); the set goes
    /// with its last SA (seed F-E5: "removed once the flow expires").
    async fn release_temp(&mut self, reqid: u32, child: Option<ChildSaId>) {
        let Some(pos) = self.maps.temps.iter().position(|t| t.reqid == reqid) else {
            return;
        };
        if let Some(c) = child {
            self.maps.temps[pos].children.remove(&c);
        }
        if !self.maps.temps[pos].children.is_empty() {
            return;
        }
        let t = self.maps.temps.remove(pos);
        // A block policy the flow replaced (same selector and direction) comes back.
        let blocks: Vec<PolicySpec> = self
            .maps
            .policies
            .values()
            .flatten()
            .filter(|b| {
                t.policies
                    .iter()
                    .any(|p| p.selector == b.selector && p.dir == b.dir)
            })
            .cloned()
            .collect();
        for e in kernel::take_policies(&self.h, &t.policies, &blocks).await {
            warn!(peer = %t.peer, "dynamic map: remove policy: {e:#}");
        }
        info!(peer = %t.peer, flow = %format_args!("{} -> {}", t.out_sel.src, t.out_sel.dst), "dynamic map entry removed");
    }

    /// Reverse route injection (IOS `set reverse-route`): each protected remote prefix is
    /// routed the way the peer is reached (`ip route add P via GW dev DEV metric M`), so the
    /// LAN's traffic for it reaches the policy; removed with the SA.
    async fn reverse_routes(&mut self, inst: &ike::ChildSaInstall, metric: u32) -> Vec<RouteSpec> {
        let peer = inst.remote.ip();
        let via = match kernel::route_via(&self.h, peer).await {
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
                xfrm_if_id: None,
                nexthop: None,
            };
            // A directly connected peer is the next hop itself (`via PEER dev DEV`), as IOS's
            // reverse route names the peer.
            if r.gateway.is_none() {
                r.gateway = Some(peer);
            }
            match kernel::add_route(&self.h, &r).await {
                Ok(()) => out.push(r),
                // Several SAs of one entry (per-host) share the prefix's route.
                Err(e)
                    if matches!(e, xfrm::Error::Exists { .. })
                        || e.to_string().contains("exists") => {}
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
        if let Some(r) = c.temp {
            self.release_temp(r, Some(child)).await;
        }
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
                && let Err(e) = kernel::del_route(&self.h, r).await
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
            for (_, ids) in self.maps.manual.remove(&m.name).unwrap_or_default() {
                kernel::delete_sas(&self.h, &ids).await;
            }
            info!(crypto_map = %m.name, "crypto map removed");
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
            self.install_manual(m).await;
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

    /// A crypto map Child SA's map, entry sequence number and kernel SA ids, for `show sa`.
    pub(super) fn map_child(&self, id: ChildSaId) -> Option<(String, u32, [SaId; 2])> {
        let c = self.maps.children.get(&id)?;
        let seq = self.plan.maps.get(&c.map)?.entries.get(c.entry)?.seq;
        Some((c.map.clone(), seq, c.ids))
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
                    let kind = match &e.kind {
                        EntryPlanKind::Isakmp => serde_json::json!({ "type": "ipsec-isakmp" }),
                        EntryPlanKind::Manual { peer, sa, .. } => serde_json::json!({
                            "type": "ipsec-manual",
                            "peer": peer.to_string(),
                            "spi_in": format!("{:08x}", sa.inbound.spi),
                            "spi_out": format!("{:08x}", sa.outbound.spi),
                            "installed": self.maps.manual.get(&m.name).is_some_and(|v| v.iter().any(|(x, _)| *x == i)),
                        }),
                        EntryPlanKind::Dynamic { name, entries, .. } => serde_json::json!({
                            "type": "dynamic",
                            "dynamic_map": name,
                            "entries": entries.iter().map(|d| serde_json::json!({
                                "seq": d.seq,
                                "access_list": d.access_list,
                                "acl": (!d.any_flow).then(|| d.aces.iter().map(|a| a.acl.to_string()).collect::<Vec<_>>()),
                            })).collect::<Vec<_>>(),
                            "flows": self.maps.temps.iter().map(|t| serde_json::json!({
                                "peer": t.peer.to_string(),
                                "local": t.out_sel.src.to_string(),
                                "remote": t.out_sel.dst.to_string(),
                                "sas": t.children.len(),
                            })).collect::<Vec<_>>(),
                        }),
                    };
                    serde_json::json!({
                        "kind": kind,
                        "seq": e.seq,
                        "access_list": e.access_list,
                        "acl": e.aces.iter().map(|a| a.acl.to_string()).collect::<Vec<_>>(),
                        // Per ACL line: how many Child SAs protect it now (IOS's hit state).
                        "acl_sas": e.aces.iter().map(|a| {
                            self.maps
                                .children_of(&m.name, i)
                                .filter(|(_, c)| a.acl.permit && c.line_reqid == a.reqid)
                                .count()
                        }).collect::<Vec<_>>(),
                        "peers": e.peers.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(),
                        "current_peer": e.peers.get(cur).map(|p| p.addr.to_string()),
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
