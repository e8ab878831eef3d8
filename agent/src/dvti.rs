//! Dynamic VTIs: one xfrm interface per authenticated peer, cloned from a `virtual_template`
//! (Cisco's Virtual-Template / Virtual-Access).
//!
//! Life cycle, as the seeds describe it: the clone is created when the peer's IKE SA is
//! authenticated (the engine's `PeerAuthenticated`, which comes before the first Child SA
//! install), carries that peer's Child SAs (its own if_id), gets routes toward the peer from
//! the negotiated traffic selectors or the template, and is deleted, routes and policies with
//! it, once the IKE SA and every Child SA of the peer are gone. IKE and Child SA rekeys keep
//! the session id, so they keep the clone; a make-before-break reauthentication (a new session
//! of the same peer without INITIAL_CONTACT) joins the existing clone; a peer that comes back
//! with INITIAL_CONTACT gets a fresh clone while the engine drops its old session, whose clone
//! then goes like any other.
//!
//! Clones are xfrm interfaces keyed by if_id, never ip_vti keyed by marks: the kernel bins
//! policies by if_id but not by mark, so N mark-keyed 0/0 policies insert in quadratic time.
//! Ownership is marked like every vtid object (alias `vtid:NAME`, reqid and policy-priority
//! bands), so the start-up orphan sweep removes clones a killed daemon left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ike::wire::{Identity, TrafficSelector};
use ike::{ChildSaId, SessionId};
use ipnet::IpNet;
use serde_json::json;
use tracing::{info, warn};
use xfrm::{Handle, RouteSpec, XfrmiSpec};

use crate::config::TemplateRoutes;
pub use crate::plan::TemplatePlan;
use crate::plan::{DeviceKind, TunnelPlan};

/// if_id of clone slot N is `IF_ID_BASE + N`: a band apart from static tunnels
/// (`plan::IF_ID_BASE + conn`); configured static if_ids are skipped when allocating.
pub const IF_ID_BASE: u32 = 0x7660_0000;
/// Highest slot number: names must fit IFNAMSIZ (prefix up to 9 bytes + 6 digits) and if_ids
/// must stay non-zero and inside u32.
pub const MAX_SLOT: u32 = 999_999;
// Clone if_ids stay non-zero, inside u32, and apart from the static band (plan::IF_ID_BASE +
// connection id, at most 0xffff connections by the reqid band).
const _: () = assert!(
    IF_ID_BASE > crate::plan::IF_ID_BASE + 0xffff && IF_ID_BASE.checked_add(MAX_SLOT).is_some()
);

/// Hands out clone numbers: always the lowest free one (so names stay short and predictable,
/// like Cisco's Virtual-Access numbering), each at most once at a time. Released numbers are
/// reused; the set of free numbers never grows past the peak number of clones, so thousands of
/// connects and disconnects neither collide nor leak.
#[derive(Clone, Debug, Default)]
pub struct Slots {
    /// Every number below `next` that is not in use.
    free: BTreeSet<u32>,
    /// One past the highest number handed out and not released.
    next: u32,
}

impl Slots {
    /// The lowest free number >= 1 for which `taken` is false (numbers `taken` refuses stay
    /// free for later), or `None` when every number up to [`MAX_SLOT`] is in use.
    pub fn alloc(&mut self, taken: impl Fn(u32) -> bool) -> Option<u32> {
        if let Some(n) = self.free.iter().copied().find(|n| !taken(*n)) {
            self.free.remove(&n);
            return Some(n);
        }
        let mut n = self.next.max(1);
        while n <= MAX_SLOT {
            if !taken(n) {
                // Numbers skipped on the way stay free.
                self.free.extend(self.next.max(1)..n);
                self.next = n + 1;
                return Some(n);
            }
            n += 1;
        }
        None
    }

    /// Gives `n` back. Releasing a number that is not in use does nothing.
    pub fn release(&mut self, n: u32) {
        if n == 0 || n >= self.next || self.free.contains(&n) {
            return;
        }
        self.free.insert(n);
        // Shrink from the top so the free set stays bounded by what is in use.
        while self.next > 1 && self.free.remove(&(self.next - 1)) {
            self.next -= 1;
        }
    }

    /// Numbers currently handed out.
    pub fn in_use(&self) -> usize {
        (self.next.max(1) - 1) as usize - self.free.len()
    }
}

/// The prefix a traffic selector is exactly equal to, if it is one (routes cannot express
/// arbitrary ranges; ports and protocols do not matter to routing).
pub fn ts_prefix(ts: &TrafficSelector) -> Option<IpNet> {
    let (start, end) = match (ts.start, ts.end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => (u128::from(u32::from(s)), u128::from(u32::from(e))),
        (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e)),
        _ => return None,
    };
    let bits = if ts.start.is_ipv4() { 32 } else { 128 };
    let span = end.checked_sub(start)?.checked_add(1);
    // The whole address space (span overflows for IPv6 ::/0).
    let host_bits = match span {
        None => 128,
        Some(s) if s.is_power_of_two() => s.trailing_zeros(),
        Some(_) => return None,
    };
    if host_bits > bits || (host_bits < 128 && start & ((1u128 << host_bits) - 1) != 0) {
        return None;
    }
    IpNet::new(ts.start, (bits - host_bits) as u8).ok()
}

/// One clone: a peer's interface and what hangs on it.
#[derive(Clone, Debug)]
struct Clone_ {
    slot: u32,
    template: String,
    peer_id: Identity,
    /// Sessions (IKE SAs and their rekeyed successors) carried by this clone.
    sessions: BTreeSet<SessionId>,
    /// Installed Child SAs with the routes their traffic selectors added.
    children: BTreeMap<ChildSaId, Vec<IpNet>>,
    /// Routes from the template (installed at creation).
    fixed_routes: Vec<IpNet>,
    tunnel: TunnelPlan,
    table: u32,
    ifindex: u32,
    created: Instant,
}

/// Every clone of the daemon and the allocators behind their names and if_ids.
#[derive(Debug, Default)]
pub struct Dvti {
    slots: Slots,
    clones: BTreeMap<u32, Clone_>,
    by_session: HashMap<SessionId, u32>,
    /// Which clone each installed route belongs to: a prefix claimed by a newer clone (the
    /// same spoke returning from another address) moves there, and the older clone then
    /// leaves it alone when it goes.
    route_owner: HashMap<(u32, IpNet), u32>,
}

impl Dvti {
    /// Number of clones.
    pub fn len(&self) -> usize {
        self.clones.len()
    }

    /// True without clones.
    pub fn is_empty(&self) -> bool {
        self.clones.is_empty()
    }

    /// Clones named `what` or whose peer address is `what` (`vtid down vtid-va3` or `vtid
    /// down 192.0.2.7`), as (clone name, its sessions).
    pub fn sessions_of(&self, what: &str) -> Vec<(String, Vec<SessionId>)> {
        self.clones
            .values()
            .filter(|c| c.tunnel.name == what || c.tunnel.remote.to_string() == what)
            .map(|c| (c.tunnel.name.clone(), c.sessions.iter().copied().collect()))
            .collect()
    }

    /// The tunnel a session's Child SAs go on, if the session has a clone.
    pub fn tunnel_of(&self, session: SessionId) -> Option<&TunnelPlan> {
        self.by_session
            .get(&session)
            .and_then(|s| self.clones.get(s))
            .map(|c| &c.tunnel)
    }

    /// `PeerAuthenticated` for a template connection: gives the session its interface, before
    /// the engine's first install for it. `static_if_ids` are the if_ids static tunnels use.
    #[allow(clippy::too_many_arguments)]
    pub async fn peer_authenticated(
        &mut self,
        h: &Handle,
        tp: &TemplatePlan,
        static_if_ids: &[u32],
        session: SessionId,
        peer_id: &Identity,
        local: SocketAddr,
        remote: SocketAddr,
        initial_contact: bool,
    ) -> Result<()> {
        if self.by_session.contains_key(&session) {
            return Ok(());
        }
        // Make-before-break reauthentication: the same peer, same address, same connection,
        // not starting over; keep its interface (and its routing adjacency).
        if !initial_contact
            && let Some((slot, c)) = self.clones.iter_mut().find(|(_, c)| {
                c.tunnel.conn == tp.conn && c.peer_id == *peer_id && c.tunnel.remote == remote.ip()
            })
        {
            c.sessions.insert(session);
            self.by_session.insert(session, *slot);
            info!(interface = %c.tunnel.name, peer = %remote, "session joins its peer's interface");
            return Ok(());
        }
        // Numbers whose name or if_id something else holds are skipped; a kernel EEXIST
        // (a foreign interface with our name or if_id) makes us try the next one.
        let mut refused: Vec<u32> = Vec::new();
        for _attempt in 0..8 {
            let slot = self
                .slots
                .alloc(|n| refused.contains(&n) || static_if_ids.contains(&(IF_ID_BASE + n)))
                .context("no free dynamic VTI number")?;
            let tunnel = TunnelPlan {
                name: format!("{}{slot}", tp.prefix),
                conn: tp.conn,
                mode: DeviceKind::Xfrmi,
                if_id: IF_ID_BASE + slot,
                reqid: tp.reqid,
                local: if local.ip().is_unspecified() {
                    tp.unnumbered
                } else {
                    local.ip()
                },
                remote: remote.ip(),
                inner: IpNet::from(tp.unnumbered),
                routes: Vec::new(),
                mtu: tp.mtu,
                initiate: false,
                offload: tp.offload,
                vrf: tp.vrf.clone(),
                fvrf: None,
            };
            match self.create(h, tp, &tunnel).await {
                Ok((ifindex, fixed_routes)) => {
                    info!(
                        interface = %tunnel.name,
                        if_id = tunnel.if_id,
                        peer = %remote,
                        template = %tp.template,
                        "dynamic VTI up"
                    );
                    self.clones.insert(
                        slot,
                        Clone_ {
                            slot,
                            template: tp.template.clone(),
                            peer_id: peer_id.clone(),
                            sessions: BTreeSet::from([session]),
                            children: BTreeMap::new(),
                            fixed_routes,
                            table: tp.table(),
                            tunnel,
                            ifindex,
                            created: Instant::now(),
                        },
                    );
                    self.by_session.insert(session, slot);
                    return Ok(());
                }
                Err(e) => {
                    for e in crate::kernel::remove_tunnel(h, &tunnel).await {
                        tracing::debug!("clone cleanup: {e:#}");
                    }
                    let exists = e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<xfrm::Error>(),
                            Some(xfrm::Error::Exists { .. })
                        )
                    });
                    self.slots.release(slot);
                    if !exists {
                        return Err(e.context(format!("create {}", tunnel.name)));
                    }
                    warn!(interface = %tunnel.name, "name or if_id held by another interface; trying the next number");
                    refused.push(slot);
                }
            }
        }
        bail!("no usable dynamic VTI number after 8 attempts")
    }

    /// Creates the clone's kernel objects. Equivalent to `ip link add NAME type xfrm if_id N`,
    /// `ip link set NAME alias vtid:NAME group G mtu M [master VRF] up`, `ip addr add U/32 dev
    /// NAME`, `tc qdisc replace dev NAME root ...`, `ip xfrm policy add ... if_id N` ×6 and
    /// the template's `ip route replace P dev NAME [table T]`.
    async fn create(
        &mut self,
        h: &Handle,
        tp: &TemplatePlan,
        t: &TunnelPlan,
    ) -> Result<(u32, Vec<IpNet>)> {
        let link = h.link();
        link.add_xfrmi(&XfrmiSpec {
            name: t.name.clone(),
            if_id: t.if_id,
            underlay: None,
        })
        .await?;
        let idx = link.index_of(&t.name).await?;
        link.set_alias(idx, &format!("{}{}", xfrm::OWNED_ALIAS_PREFIX, t.name))
            .await?;
        link.set_group(idx, tp.group).await?;
        link.set_mtu(idx, t.mtu).await?;
        // Enslaved before the address, so its connected route lands in the VRF's table.
        if let Some(v) = &tp.vrf {
            crate::vrf::enslave(h, idx, v).await?;
        }
        link.set_up(idx).await?;
        link.add_unnumbered(idx, tp.unnumbered).await?;
        if let Some(q) = &tp.qdisc {
            qdisc(&t.name, q)?;
        }
        let mut batch = h.batch();
        for p in crate::kernel::tunnel_policies(t) {
            batch.add_policy(&p);
        }
        for r in batch.execute().await? {
            r.with_context(|| format!("{}: policy", t.name))?;
        }
        let mut fixed = Vec::new();
        if let TemplateRoutes::Prefixes(list) = &tp.routes {
            for p in list {
                link.replace_route(&RouteSpec::dev(*p, idx).table(tp.table()))
                    .await
                    .with_context(|| format!("{}: route {p}", t.name))?;
                fixed.push(*p);
            }
        }
        Ok((idx, fixed))
    }

    /// A Child SA of a clone is installed: route its traffic selectors into the clone
    /// (reverse route injection) when the template says so. 0/0 selectors are not routed:
    /// they would take over the default route; such spokes need template routes or a
    /// routing protocol.
    pub async fn child_installed(&mut self, h: &Handle, inst: &ike::ChildSaInstall) {
        let Some(&slot) = self.by_session.get(&inst.session) else {
            return;
        };
        let Some(c) = self.clones.get_mut(&slot) else {
            return;
        };
        let mut added = Vec::new();
        if c.fixed_routes.is_empty() {
            for ts in &inst.remote_ts {
                let Some(p) = ts_prefix(ts) else {
                    warn!(interface = %c.tunnel.name, ?ts, "traffic selector is not a prefix; not routed");
                    continue;
                };
                if p.prefix_len() == 0 {
                    continue;
                }
                let r = RouteSpec::dev(p, c.ifindex).table(c.table);
                match h.link().replace_route(&r).await {
                    Ok(()) => {
                        if let Some(prev) = self.route_owner.insert((c.table, p), slot)
                            && prev != slot
                        {
                            info!(route = %p, interface = %c.tunnel.name, "route moved to a newer interface");
                        }
                        added.push(p);
                    }
                    Err(e) => warn!(interface = %c.tunnel.name, route = %p, "route: {e}"),
                }
            }
        }
        c.children.insert(inst.child, added);
    }

    /// A Child SA is gone: drop the routes no other Child SA of the clone needs, then remove
    /// the clone if its peer is completely gone.
    pub async fn child_removed(
        &mut self,
        h: &Handle,
        child: ChildSaId,
        session: SessionId,
        session_alive: bool,
    ) {
        let slot = match self.by_session.get(&session) {
            Some(s) => Some(*s),
            None => self
                .clones
                .iter()
                .find(|(_, c)| c.children.contains_key(&child))
                .map(|(s, _)| *s),
        };
        if let Some(slot) = slot
            && let Some(c) = self.clones.get_mut(&slot)
            && let Some(routes) = c.children.remove(&child)
        {
            let still: BTreeSet<IpNet> = c.children.values().flatten().copied().collect();
            for p in routes.into_iter().filter(|p| !still.contains(p)) {
                if self.route_owner.get(&(c.table, p)) != Some(&slot) {
                    continue;
                }
                self.route_owner.remove(&(c.table, p));
                let r = RouteSpec::dev(p, c.ifindex).table(c.table);
                if let Err(e) = h.link().del_route(&r).await
                    && !matches!(e, xfrm::Error::NotFound { .. })
                {
                    warn!(route = %p, "delete route: {e}");
                }
            }
        }
        self.session_changed(h, session, session_alive).await;
        if let Some(slot) = slot {
            self.remove_if_unused(h, slot).await;
        }
    }

    /// Re-checks a session after its IKE SA went down or a Child SA left: once the engine
    /// has no IKE SA of it, it leaves its clone; a clone without sessions and Child SAs is
    /// deleted with its routes and policies.
    pub async fn session_changed(&mut self, h: &Handle, session: SessionId, alive: bool) {
        if alive {
            return;
        }
        let Some(slot) = self.by_session.remove(&session) else {
            return;
        };
        if let Some(c) = self.clones.get_mut(&slot) {
            c.sessions.remove(&session);
        }
        self.remove_if_unused(h, slot).await;
    }

    async fn remove_if_unused(&mut self, h: &Handle, slot: u32) {
        let unused = self
            .clones
            .get(&slot)
            .is_some_and(|c| c.sessions.is_empty() && c.children.is_empty());
        if unused && let Some(c) = self.clones.remove(&slot) {
            self.remove_clone(h, c).await;
        }
    }

    async fn remove_clone(&mut self, h: &Handle, c: Clone_) {
        // Sessions of this clone that still map here (none when called from
        // session_changed) are forgotten too.
        self.by_session.retain(|_, s| *s != c.slot);
        self.route_owner.retain(|_, s| *s != c.slot);
        // Routes go with the link (the kernel flushes a deleted device's routes).
        for e in crate::kernel::remove_tunnel(h, &c.tunnel).await {
            warn!(interface = %c.tunnel.name, "remove dynamic VTI: {e:#}");
        }
        self.slots.release(c.slot);
        info!(interface = %c.tunnel.name, peer = %c.tunnel.remote, "dynamic VTI removed");
    }

    /// Removes every clone (shutdown); keeps going after errors.
    pub async fn remove_all(&mut self, h: &Handle) {
        let all: Vec<Clone_> = std::mem::take(&mut self.clones).into_values().collect();
        for c in all {
            self.remove_clone(h, c).await;
        }
    }

    /// Clones for `vtid show tunnels`.
    pub fn show_tunnels(&self) -> Vec<serde_json::Value> {
        let now = Instant::now();
        self.clones
            .values()
            .map(|c| {
                let routes: BTreeSet<String> = c
                    .fixed_routes
                    .iter()
                    .chain(c.children.values().flatten())
                    .map(|r| r.to_string())
                    .collect();
                json!({
                    "name": c.tunnel.name,
                    "mode": "xfrmi",
                    "dynamic": true,
                    "template": c.template,
                    "if_id": c.tunnel.if_id,
                    "local": c.tunnel.local.to_string(),
                    "remote": c.tunnel.remote.to_string(),
                    "peer_id": identity_string(&c.peer_id),
                    "address": crate::kernel::describe_inner(&c.tunnel.inner),
                    "routes": routes,
                    "mtu": c.tunnel.mtu,
                    "sessions": c.sessions.len(),
                    "child_sas": c.children.len(),
                    "uptime_secs": now.duration_since(c.created).as_secs(),
                    "state": if c.children.is_empty() { "down" } else { "up" },
                })
            })
            .collect()
    }
}

/// An identity as operators write it.
pub fn identity_string(id: &Identity) -> String {
    match id {
        Identity::Ipv4(a) => a.to_string(),
        Identity::Ipv6(a) => a.to_string(),
        Identity::Fqdn(f) => f.clone(),
        Identity::Rfc822(e) => e.clone(),
        other => format!("{other:?}"),
    }
}

/// Equivalent to `tc qdisc replace dev NAME root QDISC...`. rtnetlink's qdisc support does not
/// cover the option syntax operators write, so the template's text goes to `tc` itself.
/// Blocking, but only for templates that set a qdisc, once per clone.
fn qdisc(dev: &str, spec: &str) -> Result<()> {
    let mut args = vec!["qdisc", "replace", "dev", dev, "root"];
    args.extend(spec.split_whitespace());
    let out = std::process::Command::new("tc")
        .args(&args)
        .output()
        .context("run tc")?;
    if !out.status.success() {
        bail!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_take_the_lowest_free_number() {
        let mut s = Slots::default();
        assert_eq!(s.alloc(|_| false), Some(1));
        assert_eq!(s.alloc(|_| false), Some(2));
        assert_eq!(s.alloc(|_| false), Some(3));
        s.release(2);
        assert_eq!(s.alloc(|_| false), Some(2));
        // A taken number (a static tunnel's if_id) is skipped but not lost.
        assert_eq!(s.alloc(|n| n == 4), Some(5));
        assert_eq!(s.alloc(|_| false), Some(4));
        assert_eq!(s.in_use(), 5);
        // Double and foreign releases change nothing.
        s.release(3);
        s.release(3);
        s.release(77);
        s.release(0);
        assert_eq!(s.in_use(), 4);
        assert_eq!(s.alloc(|_| false), Some(3));
    }

    #[test]
    fn slots_neither_collide_nor_leak_over_many_cycles() {
        // A deterministic pseudo-random walk of connects and disconnects.
        let mut s = Slots::default();
        let mut live: Vec<u32> = Vec::new();
        let mut held = std::collections::HashSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut peak = 0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let connect = live.is_empty() || (x % 100 < 52 && live.len() < 3000);
            if connect {
                let n = s.alloc(|_| false).expect("slot");
                assert!(held.insert(n), "slot {n} handed out twice");
                live.push(n);
                peak = peak.max(live.len());
                // Never a number above the peak of simultaneous clones: nothing leaks.
                assert!(n as usize <= peak, "slot {n} above the peak {peak}");
            } else {
                let i = (x >> 32) as usize % live.len();
                let n = live.swap_remove(i);
                held.remove(&n);
                s.release(n);
            }
            assert_eq!(s.in_use(), live.len());
            assert!(s.free.len() <= peak);
        }
        for n in live.drain(..) {
            s.release(n);
        }
        assert_eq!(s.in_use(), 0);
        assert!(s.free.is_empty() && s.next <= 1, "{:?} {}", s.free, s.next);
    }

    #[test]
    fn names_and_if_ids_fit_the_kernel() {
        let name = format!("{}{MAX_SLOT}", "123456789");
        assert!(name.len() <= 15, "IFNAMSIZ");
        let mut s = Slots::default();
        for _ in 0..5 {
            s.alloc(|_| false);
        }
        assert_eq!(s.in_use(), 5);
    }

    #[test]
    fn traffic_selectors_to_routes() {
        let ts = |a: &str, b: &str| TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: 65535,
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        };
        let p = |s: &str| Some(s.parse::<IpNet>().unwrap());
        assert_eq!(ts_prefix(&ts("10.1.0.0", "10.1.0.255")), p("10.1.0.0/24"));
        assert_eq!(ts_prefix(&ts("10.1.0.7", "10.1.0.7")), p("10.1.0.7/32"));
        assert_eq!(ts_prefix(&ts("0.0.0.0", "255.255.255.255")), p("0.0.0.0/0"));
        assert_eq!(
            ts_prefix(&ts("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            p("::/0")
        );
        assert_eq!(
            ts_prefix(&ts("2001:db8::", "2001:db8::ffff")),
            p("2001:db8::/112")
        );
        // Ranges that are not one prefix.
        assert_eq!(ts_prefix(&ts("10.1.0.1", "10.1.0.4")), None);
        assert_eq!(ts_prefix(&ts("10.1.0.128", "10.1.1.127")), None);
        assert_eq!(ts_prefix(&ts("10.1.0.9", "10.1.0.1")), None);
    }
}
