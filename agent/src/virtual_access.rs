//! Dynamic VTIs at run time: the virtual-access clones of `virtual_template`s (Cisco's
//! Virtual-Template / Virtual-Access), one xfrm interface per authenticated peer.
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
//! This module is bookkeeping only (numbers, which session is on which clone, who owns a
//! route): the runtime turns its answers into [`crate::reconcile::Op`]s for the kernel.
//! Clones are xfrm interfaces keyed by if_id, never ip_vti keyed by marks: the kernel bins
//! policies by if_id but not by mark, so N mark-keyed 0/0 policies insert in quadratic time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ike::SessionId;
use ike::wire::{Identity, TrafficSelector};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::config::TemplateRoutes;
use crate::model::{Interface, Route, RouteMode};
use crate::plan::TemplatePlan;
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
// A multipoint spoke's IPv4 and IPv6 nexthop ids (its if_id, and that plus the offset:
// `multipoint::nexthop`) stay apart and inside u32.
const _: () = assert!(
    MAX_SLOT < crate::multipoint::V6_NEXTHOP_OFFSET
        && (IF_ID_BASE + MAX_SLOT)
            .checked_add(crate::multipoint::V6_NEXTHOP_OFFSET)
            .is_some()
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

/// One virtual-access clone: a peer's interface and what hangs on it.
#[derive(Clone, Debug)]
pub struct VirtualAccess {
    /// Its number (name suffix, if_id offset).
    pub slot: u32,
    /// The `virtual_template` it was cloned from.
    pub template: String,
    /// The peer's authenticated identity.
    pub peer_id: Identity,
    /// Sessions (IKE SAs and their rekeyed successors) carried by this clone.
    pub sessions: BTreeSet<SessionId>,
    /// Routes from the template (installed with the device).
    pub fixed_routes: Vec<IpNet>,
    /// The clone as a tunnel (what Child SA installs are made for).
    pub tunnel: TunnelPlan,
    /// The clone as the kernel holds it.
    pub interface: Interface,
    /// Its ifindex (route edits name the device by it, no lookup).
    pub ifindex: u32,
    /// When it was created.
    pub created: Instant,
    /// A spoke of a multipoint template: `interface` is its policies and routes on the
    /// template's shared device (named `interface.name`, index `ifindex`), not a device of
    /// its own (see `crate::multipoint`).
    pub multipoint: bool,
}

/// A clone about to be created: its number is held, nothing is in the kernel yet.
#[derive(Clone, Debug)]
pub struct Proposed {
    /// Its number.
    pub slot: u32,
    /// The clone as a tunnel.
    pub tunnel: TunnelPlan,
    /// The interface to create.
    pub interface: Interface,
}

/// Every clone and the allocators behind their names and if_ids.
#[derive(Debug, Default)]
pub struct VirtualAccesses {
    slots: Slots,
    clones: BTreeMap<u32, VirtualAccess>,
    by_session: HashMap<SessionId, u32>,
    /// Which clone each installed route belongs to: a prefix claimed by a newer clone (the
    /// same spoke returning from another address) moves there, and the older clone then
    /// leaves it alone when it goes.
    route_owner: HashMap<(u32, IpNet), u32>,
    /// The routes each clone owns in `route_owner`, so removing a clone touches its own
    /// entries, not every clone's.
    routes_of: HashMap<u32, BTreeSet<(u32, IpNet)>>,
    /// The clones of each (connection, peer address), for [`Self::join`] without a walk of
    /// every clone per authentication.
    by_peer: HashMap<(ike::ConnId, IpAddr), BTreeSet<u32>>,
}

/// The clone of template `tp` for `tunnel`: an xfrm interface borrowing the template's
/// unnumbered address, in its VRF and group, with its qdisc and fixed routes (replacing an
/// older clone's, see [`RouteMode::Replace`]).
pub fn clone_interface(tp: &TemplatePlan, tunnel: &TunnelPlan) -> Interface {
    Interface {
        name: tunnel.name.clone(),
        kind: DeviceKind::Xfrmi,
        if_id: tunnel.if_id,
        local: tunnel.local,
        remote: tunnel.remote,
        mtu: tunnel.mtu,
        group: tp.group,
        vrf: tp.vrf.clone(),
        fvrf: None,
        address: tunnel.inner,
        routes: match &tp.routes {
            TemplateRoutes::Prefixes(list) => list.iter().copied().map(Route::from).collect(),
            TemplateRoutes::TrafficSelectors => Vec::new(),
        },
        route_mode: RouteMode::Replace,
        line: None,
        disable_ipv6: !tp.carries_v6(),
        qdisc: tp.qdisc.clone(),
        policies: clone_policies(tunnel, tp.carries_v6()),
    }
}

/// A clone's policies: the IPv4 out/in/fwd triple, and the IPv6 one when `v6`. Each 0/0
/// policy bound to an if_id is an "inexact" policy to the kernel, and inserting one walks
/// every inexact policy of its direction on kernels before 6.10 (`xfrm_policy_inexact_insert`
/// renumbering the list): the IPv6 triple no IPv4 spoke uses doubled that list and the
/// inserts, four times the quadratic work at N spokes.
pub fn clone_policies(tunnel: &TunnelPlan, v6: bool) -> Vec<xfrm::PolicySpec> {
    crate::model::tunnel_policies(tunnel)
        .into_iter()
        .filter(|p| v6 || !p.selector.src.addr().is_ipv6())
        .collect()
}

/// Clone number `slot` of template `tp` for a peer at `remote`: as a tunnel, and as the
/// kernel is to hold it (its own device, or a spoke of the template's multipoint device).
/// A new clone and one adopted across a restart are built alike.
pub fn clone_of(
    tp: &TemplatePlan,
    slot: u32,
    local: SocketAddr,
    remote: SocketAddr,
) -> (TunnelPlan, Interface) {
    let mut tunnel = clone_tunnel(tp, slot, local, remote);
    if let Some(dev) = &tp.multipoint {
        tunnel.name = crate::multipoint::spoke_name(dev, slot);
        let interface = spoke_interface(tp, &tunnel, dev);
        return (tunnel, interface);
    }
    let interface = clone_interface(tp, &tunnel);
    (tunnel, interface)
}

/// What spoke `tunnel` of multipoint template `tp` holds in the kernel: its policies (bound
/// by its if_id, as a clone's: the IPv4 triple, and the IPv6 one when the template asks for
/// IPv6 or the spoke's traffic selectors do, `VirtualAccesses::enable_v6`, whose
/// `disable_ipv6` here marks the spoke as IPv4-only) and the template's fixed routes, on the
/// shared device `dev`. It is never created or removed as a device (see `kernel::add_spoke`).
fn spoke_interface(tp: &TemplatePlan, tunnel: &TunnelPlan, dev: &str) -> Interface {
    // A clone's books (if_id, addresses, routes, policies) on the shared device, which
    // carries vtid's own group and no qdisc of the template's.
    Interface {
        name: dev.to_owned(),
        group: xfrm::OWNED_LINK_GROUP,
        qdisc: None,
        ..clone_interface(tp, tunnel)
    }
}

/// Clone number `slot` of template `tp` for a peer at `remote`, as a tunnel.
pub fn clone_tunnel(
    tp: &TemplatePlan,
    slot: u32,
    local: SocketAddr,
    remote: SocketAddr,
) -> TunnelPlan {
    TunnelPlan {
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
        dpd_action: crate::config::DpdAction::Clear,
        offload: tp.offload,
        vrf: tp.vrf.clone(),
        fvrf: None,
        v1_policies: None,
    }
}

impl VirtualAccesses {
    /// Every clone, by number.
    pub fn iter(&self) -> impl Iterator<Item = &VirtualAccess> {
        self.clones.values()
    }

    /// Clone `slot`.
    pub fn get(&self, slot: u32) -> Option<&VirtualAccess> {
        self.clones.get(&slot)
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

    /// The clone a session's Child SAs go on.
    pub fn of_session(&self, session: SessionId) -> Option<&VirtualAccess> {
        self.by_session
            .get(&session)
            .and_then(|s| self.clones.get(s))
    }

    /// Make-before-break reauthentication: the same peer, same address, same connection,
    /// not starting over keeps its interface (and its routing adjacency). True when the
    /// session joined an existing clone (or already has one).
    pub fn join(
        &mut self,
        tp: &TemplatePlan,
        session: SessionId,
        peer_id: &Identity,
        remote: SocketAddr,
        initial_contact: bool,
    ) -> bool {
        if self.by_session.contains_key(&session) {
            return true;
        }
        if initial_contact {
            return false;
        }
        let clones = &self.clones;
        let Some(slot) = self
            .by_peer
            .get(&(tp.conn, remote.ip()))
            .into_iter()
            .flatten()
            .copied()
            .find(|s| clones.get(s).is_some_and(|c| c.peer_id == *peer_id))
        else {
            return false;
        };
        let Some(c) = self.clones.get_mut(&slot) else {
            return false;
        };
        c.sessions.insert(session);
        self.by_session.insert(session, slot);
        info!(interface = %c.tunnel.name, peer = %remote, "session joins its peer's interface");
        true
    }

    /// A new clone of `tp` for a peer at `remote`: the lowest number not `refused` (by an
    /// earlier kernel EEXIST) whose if_id no static tunnel uses. The number is held until
    /// [`Self::commit`] or [`Self::abandon`].
    pub fn propose(
        &mut self,
        tp: &TemplatePlan,
        static_if_ids: &[u32],
        refused: &[u32],
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<Proposed> {
        let slot = self
            .slots
            .alloc(|n| refused.contains(&n) || static_if_ids.contains(&(IF_ID_BASE + n)))?;
        let (tunnel, interface) = clone_of(tp, slot, local, remote);
        Some(Proposed {
            slot,
            tunnel,
            interface,
        })
    }

    /// The proposed clone exists in the kernel now, as interface `ifindex`: it carries
    /// `session`.
    pub fn commit(
        &mut self,
        p: Proposed,
        ifindex: u32,
        tp: &TemplatePlan,
        peer_id: &Identity,
        session: SessionId,
    ) {
        let peer = (p.tunnel.conn, p.tunnel.remote);
        self.clones.insert(
            p.slot,
            VirtualAccess {
                slot: p.slot,
                template: tp.template.clone(),
                peer_id: peer_id.clone(),
                sessions: BTreeSet::from([session]),
                fixed_routes: p.interface.routes.iter().map(|r| r.prefix).collect(),
                tunnel: p.tunnel,
                interface: p.interface,
                ifindex,
                created: Instant::now(),
                multipoint: tp.multipoint.is_some(),
            },
        );
        self.by_session.insert(session, p.slot);
        self.by_peer.entry(peer).or_default().insert(p.slot);
    }

    /// A clone the previous process made, adopted across a restart (see `crate::restart`)
    /// with its number `slot`: false (nothing changed) when that number is in use.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        tp: &TemplatePlan,
        slot: u32,
        tunnel: TunnelPlan,
        interface: Interface,
        ifindex: u32,
        peer_id: &Identity,
        session: SessionId,
        created: Instant,
    ) -> bool {
        if self.clones.contains_key(&slot) || self.slots.alloc(|n| n != slot) != Some(slot) {
            return false;
        }
        self.commit(
            Proposed {
                slot,
                tunnel,
                interface,
            },
            ifindex,
            tp,
            peer_id,
            session,
        );
        if let Some(c) = self.clones.get_mut(&slot) {
            c.created = created;
        }
        true
    }

    /// The proposed clone could not be created: its number is free again.
    pub fn abandon(&mut self, slot: u32) {
        self.slots.release(slot);
    }

    /// Routes a Child SA's traffic selectors ask for on clone `slot` (reverse route
    /// injection), when the template routes by traffic selector. 0/0 selectors are not
    /// routed: they would take over the default route; such spokes need template routes or
    /// a routing protocol.
    pub fn ts_routes(&self, slot: u32, remote_ts: &[TrafficSelector]) -> Vec<IpNet> {
        let Some(c) = self.clones.get(&slot) else {
            return Vec::new();
        };
        if !c.fixed_routes.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for ts in remote_ts {
            let Some(p) = ts_prefix(ts) else {
                warn!(interface = %c.tunnel.name, ?ts, "traffic selector is not a prefix; not routed");
                continue;
            };
            if p.prefix_len() != 0 {
                out.push(p);
            }
        }
        out
    }

    /// Those of clone `slot`'s fixed (template) routes it still owns: a multipoint spoke
    /// deletes these when it goes (a clone's go with its device), and leaves alone those a
    /// newer spoke took over.
    pub fn fixed_routes_owned(&self, slot: u32) -> Vec<IpNet> {
        let Some(c) = self.clones.get(&slot) else {
            return Vec::new();
        };
        let table = c.interface.table();
        c.fixed_routes
            .iter()
            .filter(|p| self.route_owner.get(&(table, **p)) == Some(&slot))
            .copied()
            .collect()
    }

    /// A Child SA with IPv6 traffic selectors is installed on clone `slot`: its IPv6 policies
    /// if it has none yet (they are recorded on the clone, so its removal takes them), for
    /// the caller to add with IPv6 switched on on the device. `None` when it already has
    /// them.
    pub fn enable_v6(&mut self, slot: u32) -> Option<(String, Vec<xfrm::PolicySpec>)> {
        let c = self.clones.get_mut(&slot)?;
        if !c.interface.disable_ipv6 {
            return None;
        }
        c.interface.disable_ipv6 = false;
        let v6: Vec<xfrm::PolicySpec> = clone_policies(&c.tunnel, true)
            .into_iter()
            .filter(|p| p.selector.src.addr().is_ipv6())
            .collect();
        c.interface.policies.extend(v6.iter().cloned());
        Some((c.interface.name.clone(), v6))
    }

    /// Route `p` now goes into clone `slot` (it was installed there).
    pub fn claim_route(&mut self, slot: u32, p: IpNet) {
        let Some(c) = self.clones.get(&slot) else {
            return;
        };
        let key = (c.interface.table(), p);
        if let Some(prev) = self.route_owner.insert(key, slot)
            && prev != slot
        {
            info!(route = %p, interface = %c.tunnel.name, "route moved to a newer interface");
            if let Some(set) = self.routes_of.get_mut(&prev) {
                set.remove(&key);
            }
        }
        self.routes_of.entry(slot).or_default().insert(key);
    }

    /// A Child SA of clone `slot` that had added `routes` is gone and `still` are the routes
    /// its other Child SAs need: the routes to delete, those no other Child SA needs and no
    /// newer clone has taken over.
    pub fn release_routes(
        &mut self,
        slot: u32,
        routes: Vec<IpNet>,
        still: &BTreeSet<IpNet>,
    ) -> Vec<IpNet> {
        let Some(table) = self.clones.get(&slot).map(|c| c.interface.table()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in routes.into_iter().filter(|p| !still.contains(p)) {
            if self.route_owner.get(&(table, p)) != Some(&slot) {
                continue;
            }
            self.route_owner.remove(&(table, p));
            if let Some(set) = self.routes_of.get_mut(&slot) {
                set.remove(&(table, p));
            }
            out.push(p);
        }
        out
    }

    /// The engine has no IKE SA of `session` any more: it leaves its clone, whose number is
    /// returned for [`Self::take_if_unused`].
    pub fn session_gone(&mut self, session: SessionId) -> Option<u32> {
        let slot = self.by_session.remove(&session)?;
        if let Some(c) = self.clones.get_mut(&slot) {
            c.sessions.remove(&session);
        }
        Some(slot)
    }

    /// Clone `slot`, removed from the books when it has no session left and `has_children`
    /// is false; the caller removes it from the kernel.
    pub fn take_if_unused(&mut self, slot: u32, has_children: bool) -> Option<VirtualAccess> {
        let unused = self
            .clones
            .get(&slot)
            .is_some_and(|c| c.sessions.is_empty() && !has_children);
        if !unused {
            return None;
        }
        let c = self.clones.remove(&slot)?;
        self.forget(&c);
        Some(c)
    }

    /// Every clone, removed from the books (shutdown).
    pub fn take_all(&mut self) -> Vec<VirtualAccess> {
        let all: Vec<VirtualAccess> = std::mem::take(&mut self.clones).into_values().collect();
        for c in &all {
            self.forget(c);
        }
        all
    }

    fn forget(&mut self, c: &VirtualAccess) {
        // Sessions of this clone that still map here (none when its last session went) are
        // forgotten too; only its own entries are visited (a retain over every clone's made
        // tearing down N clones O(N²)).
        for s in &c.sessions {
            if self.by_session.get(s) == Some(&c.slot) {
                self.by_session.remove(s);
            }
        }
        for key in self.routes_of.remove(&c.slot).unwrap_or_default() {
            if self.route_owner.get(&key) == Some(&c.slot) {
                self.route_owner.remove(&key);
            }
        }
        let peer = (c.tunnel.conn, c.tunnel.remote);
        if let Some(set) = self.by_peer.get_mut(&peer) {
            set.remove(&c.slot);
            if set.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
        self.slots.release(c.slot);
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

/// Spokes of a multipoint template (`crate::multipoint`) in the clones' books.
#[cfg(test)]
mod multipoint_tests {
    use super::*;
    use crate::plan::REQID_BASE;

    fn template(routes: TemplateRoutes) -> TemplatePlan {
        TemplatePlan {
            template: "VT1".into(),
            profile: "spokes".into(),
            conn: ike::ConnId(3),
            reqid: REQID_BASE + 3,
            prefix: "vtid-va".into(),
            unnumbered: "10.0.0.1".parse().unwrap(),
            mtu: 1446,
            group: xfrm::OWNED_LINK_GROUP,
            vrf: None,
            qdisc: None,
            routes,
            offload: crate::config::Offload::Off,
            multipoint: Some("vtid-mp".into()),
        }
    }

    #[test]
    fn nexthop_ids_of_spokes_never_collide() {
        let mut seen = std::collections::HashSet::new();
        for slot in (0..=MAX_SLOT).step_by(997).chain([MAX_SLOT]) {
            let if_id = IF_ID_BASE + slot;
            for v6 in [false, true] {
                let n = crate::multipoint::nexthop(if_id, v6, 9);
                assert!(seen.insert(n.id), "id {} twice", n.id);
                assert_eq!((n.v6, n.xfrm_if_id, n.dev), (v6, Some(if_id), 9));
            }
        }
        // Both bands stay apart: the highest IPv4 id is below the lowest IPv6 one.
        assert!(IF_ID_BASE + MAX_SLOT < crate::multipoint::nexthop(IF_ID_BASE, true, 9).id);
    }

    #[test]
    fn spokes_share_the_device_with_their_own_if_id_policies_and_routes() {
        let tp = template(TemplateRoutes::Prefixes(vec![
            "10.9.0.0/16".parse().unwrap(),
        ]));
        let dev = crate::multipoint::devices([&tp]);
        let d = &dev["vtid-mp"];
        assert_eq!(d.kind, DeviceKind::XfrmiExternal);
        assert!(d.policies.is_empty() && d.routes.is_empty());
        assert!(
            d.disable_ipv6,
            "an IPv4 template's device starts without IPv6"
        );
        assert_eq!(d.address, "10.0.0.1/32".parse::<IpNet>().unwrap());
        let mut books = VirtualAccesses::default();
        let local = "172.16.1.1:500".parse().unwrap();
        let id = Identity::Ipv4("172.16.1.2".parse().unwrap());
        let mut made = Vec::new();
        for (n, peer) in ["172.16.1.2:500", "172.16.2.2:500"].iter().enumerate() {
            let p = books
                .propose(&tp, &[], &[], local, peer.parse().unwrap())
                .expect("a number");
            assert_eq!(p.tunnel.name, format!("vtid-mp:{}", n + 1));
            assert_eq!(p.tunnel.if_id, IF_ID_BASE + n as u32 + 1);
            // Its interface is the shared device's name, with its own if_id on every policy.
            assert_eq!(p.interface.name, "vtid-mp");
            assert_eq!(p.interface.if_id, p.tunnel.if_id);
            // An IPv4 template's spoke starts with the IPv4 out/in/fwd triple only.
            assert_eq!(p.interface.policies.len(), 3);
            assert!(
                p.interface
                    .policies
                    .iter()
                    .all(|x| !x.selector.src.addr().is_ipv6())
            );
            assert!(
                p.interface
                    .policies
                    .iter()
                    .all(|x| x.if_id == Some(p.tunnel.if_id))
            );
            assert_eq!(
                p.interface.routes,
                vec![Route::from("10.9.0.0/16".parse::<IpNet>().unwrap())]
            );
            let slot = p.slot;
            books.commit(p, 7, &tp, &id, SessionId(n as u64 + 1));
            books.claim_route(slot, "10.9.0.0/16".parse().unwrap());
            made.push(slot);
        }
        // The template's prefix is the newer spoke's now: the older one must not delete it.
        assert!(books.fixed_routes_owned(made[0]).is_empty());
        assert_eq!(books.fixed_routes_owned(made[1]).len(), 1);
        assert!(books.iter().all(|c| c.multipoint && c.ifindex == 7));
        // `vtid down` finds a spoke by its name or its peer.
        assert_eq!(books.sessions_of("vtid-mp:2").len(), 1);
        assert_eq!(books.sessions_of("172.16.1.2").len(), 1);
        assert!(books.sessions_of("vtid-mp").is_empty());
    }
}
