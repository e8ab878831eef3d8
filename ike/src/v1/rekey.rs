//! Rekeys as IKEv1 peers do them. RFC 2409 has no rekey exchange: IOS and strongSwan make a
//! new SA before the old one's lifetime ends and then delete the old one with an
//! informational DELETE (RFC 2408 §3.15). This module is a child of `sa` and holds the
//! bookkeeping; `sa` and `endpoint` call it from small hooks.
//!
//! Phase 2: a fresh quick mode for the same selectors under the ISAKMP SA, before the Child
//! SA's soft lifetime (our timer, or the kernel's soft EXPIRE delivered as a command for the
//! byte limit). The new pair is installed, the old one stays for [`REKEY_OVERLAP`] so that
//! packets already under way on it still decrypt, then it is deleted with the peer. As
//! responder, a peer's quick mode for the selectors of a live Child SA is its rekey: the
//! old pair stays until the peer deletes it (or its lifetime ends). When both sides rekey the
//! same Child SA at once, both new pairs replace it; the one whose lowest SPI is lower is
//! redundant and deleted by the side that made it (the rule both sides can compute, in the
//! spirit of RFC 7296 §2.8.1's nonce rule), so one pair remains.
//!
//! Phase 1: a new main mode with the same peer, without INITIAL-CONTACT (RFC 2407 §4.6.3.3
//! would have the peer drop our Child SAs). Child SAs do not belong to an ISAKMP SA
//! cryptographically (their KEYMAT only used SKEYID_d once), so the new ISAKMP SA takes them
//! over with their informational, DPD and phase 2 rekey duties; then the old ISAKMP SA is
//! deleted (protocol ISAKMP, the cookie pair as SPI, RFC 2408 §3.15). The new SA keeps the
//! old one's session, as an IKEv2 rekey does (RFC 7296 §2.18). A responder that sees a
//! peer's main mode complete without INITIAL-CONTACT while it holds an ISAKMP SA with the
//! same identity moves the Child SAs to the new SA, so that the peer's DELETE of the old
//! one leaves them standing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use rand_core::RngCore;

use super::*;

/// How long a rekeyed Child SA is kept after its successor is installed: packets sent on it
/// before the peer switched must still decrypt (strongSwan keeps them 5 s,
/// `delete_rekeyed_delay`), and as initiator we send on it until [`OUTBOUND_DELAY`].
pub(crate) const REKEY_OVERLAP: Duration = Duration::from_secs(5);

/// How long a rekey initiator waits between installing the new inbound SA (with QM3 sent)
/// and the new outbound one: the responder installs its inbound SA when QM3 arrives, one
/// trip and one kernel install later, and nothing in quick mode says when that happened
/// (RFC 2409 §5.5: QM3 is the last message). One second proved short: a loaded peer (four
/// tunnels negotiating at once under emulation) handled QM3 later than that, and the one
/// ping sent on the new SA in between was dropped. Well within [`REKEY_OVERLAP`], so the
/// old pair still exists until the new outbound SA takes over.
pub(crate) const OUTBOUND_DELAY: Duration = Duration::from_millis(2500);

/// How long a phase 2 rekey may take before it is tried again (the quick mode's own
/// retransmissions run out later, and end the ISAKMP SA).
const REKEY_RETRY: Duration = Duration::from_secs(10);

/// How long an expired ISAKMP SA whose replacement is under way is kept for it: longer
/// than a main mode's retransmissions (1 + 2 + 4 + 8 + 16 s by default).
const PHASE1_GRACE: Duration = Duration::from_secs(40);

/// A Child SA's rekey bookkeeping.
pub(crate) struct ChildRekey {
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
    /// We sent the QM1 that made it.
    initiated: bool,
    /// The Child SA it replaced.
    replaces: Option<ChildSaId>,
    /// When we rekey it.
    rekey_at: Option<Instant>,
    /// A rekey of ours is under way since; checked then.
    retry_at: Option<Instant>,
    /// Deleted with the peer then (rekeyed, after the overlap).
    delete_at: Option<Instant>,
    /// Its successor is installed.
    superseded_by: Option<ChildSaId>,
}

/// `duration - margin - random(0..=jitter)` from the seeded RNG.
fn before_end(ctx: &mut Ctx<'_>, life: Duration, margin: Duration, jitter: Duration) -> Instant {
    let j = jitter.as_millis() as u64;
    let r = if j == 0 {
        0
    } else {
        ctx.rng.next_u64() % (j + 1)
    };
    let after = life
        .saturating_sub(margin)
        .saturating_sub(Duration::from_millis(r));
    crate::sa::later(ctx.now, after)
}

impl ChildRekey {
    /// A new Child SA of lifetime `hard` (as negotiated: the responder lifetime notify may
    /// have shortened the profile's). The profile's margin and jitter apply, at most half the
    /// lifetime. A Child SA the peer made is rekeyed by us only at half the margin: the
    /// side that made it normally goes first, and collisions stay rare.
    pub(super) fn new(
        c: &Common,
        ctx: &mut Ctx<'_>,
        (local_ts, remote_ts): (TrafficSelector, TrafficSelector),
        replaces: Option<ChildSaId>,
        initiated: bool,
        hard: Duration,
    ) -> Self {
        let lt = c.peer.child.lifetime;
        let mut margin = lt.rekey_margin.min(hard / 2);
        if !initiated {
            margin /= 2;
        }
        let jitter = lt.jitter.min(margin / 2);
        Self {
            local_ts,
            remote_ts,
            initiated,
            replaces,
            rekey_at: Some(before_end(ctx, hard, margin, jitter)),
            retry_at: None,
            delete_at: None,
            superseded_by: None,
        }
    }

    /// Still the current pair for its selectors.
    fn current(&self) -> bool {
        self.superseded_by.is_none() && self.delete_at.is_none()
    }
}

/// When the ISAKMP SA of lifetime `life` is replaced: 10 % (plus up to 5 % jitter) before
/// its end by the side that made it, 5 % before by the other (the maker normally goes
/// first; a peer such as IOS that never rekeys phase 1 is covered).
pub(super) fn phase1_rekey_at(c: &Common, ctx: &mut Ctx<'_>, life: Duration) -> Option<Instant> {
    let at = if c.initiator {
        before_end(ctx, life, life / 10, life / 20)
    } else {
        before_end(ctx, life, life / 20, Duration::ZERO)
    };
    Some(at)
}

impl Established {
    /// Deadlines of this module: Child SA rekeys, retries, deletions after the overlap.
    /// The phase 1 rekey is started by the endpoint's `settle`, after the timer run.
    pub(super) fn rekey_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.children
            .iter()
            .flat_map(|ch| [ch.r.rekey_at, ch.r.retry_at, ch.r.delete_at])
            .chain([self.rekey_at])
            .flatten()
    }

    /// At the end of the ISAKMP SA's lifetime while it still has Child SAs (its replacement
    /// under way, or due in the same timer run): it stays a while longer, once, so that a main mode slowed down (a loaded host, retransmissions, both
    /// sides rekeying at once) still finds the Child SAs to take over. Ending it would
    /// delete them with it, and Child SAs do not depend on their ISAKMP SA.
    pub(super) fn expiry_grace(&mut self, now: Instant) -> bool {
        if self.children.is_empty() || self.grace_used {
            return false;
        }
        self.grace_used = true;
        self.expire_at = crate::sa::later(now, PHASE1_GRACE);
        true
    }

    /// The current Child SA a peer's quick mode for these selectors rekeys.
    pub(super) fn rekey_candidate(
        &self,
        local: &TrafficSelector,
        remote: &TrafficSelector,
    ) -> Option<ChildSaId> {
        self.children
            .iter()
            .find(|ch| ch.r.current() && ch.r.local_ts == *local && ch.r.remote_ts == *remote)
            .map(|ch| ch.id)
    }

    /// True while a quick mode that replaces `id` runs (ours or the peer's).
    fn rekey_in_flight(&self, id: ChildSaId) -> bool {
        self.exchanges.values().any(|x| match x {
            Exchange::ExpectQuickMode2(s) => s.replaces == Some(id),
            Exchange::ExpectQuickMode3(s) => s.child.replaces == Some(id),
            Exchange::ExpectConnected(s) => s.child.replaces == Some(id),
        })
    }

    /// Starts a quick mode that replaces Child SA `id` (timer or the kernel's soft EXPIRE);
    /// nothing when it is already replaced or being replaced.
    pub(super) fn rekey_child(&mut self, c: &Common, ctx: &mut Ctx<'_>, id: ChildSaId) {
        let Some(ch) = self.children.iter_mut().find(|ch| ch.id == id) else {
            return;
        };
        if !ch.r.current() {
            return;
        }
        ch.r.rekey_at = None;
        ch.r.retry_at = Some(crate::sa::later(ctx.now, REKEY_RETRY));
        let sel = (id, ch.r.local_ts, ch.r.remote_ts);
        if self.rekey_in_flight(id) {
            return;
        }
        tracing::debug!(peer = %c.remote, child = ?id, "v1: rekeying a Child SA");
        if let Err(e) = self.start_quick_mode(c, ctx, Some(sel)) {
            tracing::warn!(conn = ?c.peer.id, error = %e, "v1: Child SA rekey not started");
        }
    }

    /// Runs the Child SA deadlines of this module.
    pub(super) fn child_rekey_timers(&mut self, c: &Common, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let gone: Vec<ChildSaId> = self
            .children
            .iter()
            .filter(|ch| due(ch.r.delete_at))
            .map(|ch| ch.id)
            .collect();
        for id in gone {
            if let Some(i) = self.children.iter().position(|ch| ch.id == id) {
                let ch = self.children.remove(i);
                // The sender names its inbound SA (RFC 2408 §3.15).
                self.send_info(
                    c,
                    ctx,
                    vec![delete_payload(
                        PROTO_IPSEC_ESP,
                        4,
                        vec![ch.spi_in.to_be_bytes().to_vec()],
                    )],
                );
                remove_child(c, ctx, ch);
            }
        }
        let mut start = Vec::new();
        for ch in &mut self.children {
            if !ch.r.current() {
                ch.r.rekey_at = None;
                ch.r.retry_at = None;
                continue;
            }
            if due(ch.r.rekey_at) {
                start.push(ch.id);
            } else if due(ch.r.retry_at) {
                ch.r.retry_at = None;
                start.push(ch.id);
            }
        }
        for id in start {
            if self.rekey_in_flight(id) {
                // Not done yet (retransmissions, or the peer's own rekey): look again later.
                if let Some(ch) = self.children.iter_mut().find(|ch| ch.id == id) {
                    ch.r.rekey_at = None;
                    ch.r.retry_at = Some(crate::sa::later(now, REKEY_RETRY));
                }
                continue;
            }
            self.rekey_child(c, ctx, id);
        }
    }

    /// After Child SA `new` is installed: the one it replaces is superseded, and deleted
    /// after the overlap when we made the rekey. Two pairs replacing the same one are a
    /// collision: the redundant one goes too (see the module's comment).
    pub(super) fn after_install(&mut self, _c: &Common, ctx: &mut Ctx<'_>, new: ChildSaId) {
        let Some(n) = self.children.iter().position(|ch| ch.id == new) else {
            return;
        };
        let Some(old) = self.children[n].r.replaces else {
            return;
        };
        let Some(o) = self.children.iter().position(|ch| ch.id == old) else {
            // Deleted meanwhile (by the peer, or expired): nothing to retire.
            return;
        };
        let delete_at = crate::sa::later(ctx.now, REKEY_OVERLAP);
        let new_initiated = self.children[n].r.initiated;
        let survivor = match self.children[o].r.superseded_by {
            None => new,
            Some(sib) => match self.children.iter().position(|ch| ch.id == sib) {
                None => new,
                Some(s) => {
                    let low = |ch: &Child| ch.spi_in.min(ch.spi_out);
                    let (redundant, survivor) = if low(&self.children[s]) < low(&self.children[n]) {
                        (s, new)
                    } else {
                        (n, sib)
                    };
                    tracing::debug!(
                        child = ?self.children[redundant].id,
                        "v1: both sides rekeyed a Child SA; this pair is redundant"
                    );
                    let r = &mut self.children[redundant].r;
                    r.superseded_by = Some(survivor);
                    r.rekey_at = None;
                    r.retry_at = None;
                    // Its maker deletes it; the peer's we keep until it does (or it ends).
                    if r.initiated {
                        r.delete_at = Some(delete_at);
                    }
                    survivor
                }
            },
        };
        let any_ours = new_initiated
            || self
                .children
                .iter()
                .any(|ch| ch.r.replaces == Some(old) && ch.r.initiated);
        let r = &mut self.children[o].r;
        r.superseded_by = Some(survivor);
        r.rekey_at = None;
        r.retry_at = None;
        // The side that rekeyed deletes the old pair; a peer's rekey is followed by its own
        // DELETE (or the old pair's lifetime ends).
        if any_ours && r.delete_at.is_none() {
            r.delete_at = Some(delete_at);
        }
    }
}

impl Phase1Sa {
    /// Rekeys Child SA `child` now (the kernel's soft EXPIRE, or the operator).
    pub(crate) fn rekey_child(&mut self, ctx: &mut Ctx<'_>, child: ChildSaId) {
        if let State::Established(e) = &mut self.state {
            e.rekey_child(&self.c, ctx, child);
        }
    }

    /// Asks for a phase 1 rekey at the next `settle`.
    pub(crate) fn request_rekey(&mut self, now: Instant) {
        if let State::Established(e) = &mut self.state {
            e.rekey_at = Some(now);
        }
    }

    fn rekey_due(&self, now: Instant) -> bool {
        matches!(&self.state, State::Established(e) if e.rekey_at.is_some_and(|t| t <= now))
    }

    /// Hands the Child SAs over to a successor; this SA no longer rekeys. A phase 2 rekey
    /// under way here is started again by the successor.
    fn give_children(&mut self, now: Instant) -> Vec<Child> {
        let State::Established(e) = &mut self.state else {
            return Vec::new();
        };
        e.rekey_at = None;
        let mut v: Vec<Child> = e.children.drain(..).collect();
        for ch in &mut v {
            if ch.r.retry_at.is_some() && ch.r.current() {
                ch.r.retry_at = Some(now);
            }
        }
        v
    }

    /// Takes over Child SAs; their removal now names this SA's session.
    fn take_children(&mut self, children: Vec<Child>) {
        if let State::Established(e) = &mut self.state {
            for mut ch in children {
                ch.remove.session = self.c.session;
                e.children.push(ch);
            }
        }
    }

    /// Deletes this (replaced) ISAKMP SA with the peer: protocol ISAKMP, the cookie pair
    /// as SPI (RFC 2408 §3.15), sent under its own keys.
    fn retire(&mut self, ctx: &mut Ctx<'_>) {
        if let State::Established(e) = &mut self.state {
            let cookies = self.c.cookies();
            e.send_info(
                &self.c,
                ctx,
                vec![delete_payload(PROTO_ISAKMP, 16, vec![cookies])],
            );
        }
        self.close(ctx, DownReason::Replaced);
    }
}

/// The endpoint's hook: starts the phase 1 rekeys that are due (a new main mode from the
/// same addresses, keeping the session), then lets every newly established SA take over
/// the Child SAs of the SAs it replaces.
pub(crate) fn settle(sas: &mut HashMap<u64, Phase1Sa>, ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let mut due: Vec<u64> = sas
        .iter()
        .filter(|(_, sa)| sa.rekey_due(now))
        .map(|(k, _)| *k)
        .collect();
    due.sort_unstable();
    for old_key in due {
        let Some(old) = sas.get_mut(&old_key) else {
            continue;
        };
        if let State::Established(e) = &mut old.state {
            e.rekey_at = None;
        }
        let mut peer = (*old.c.peer).clone();
        // The same addresses as the SA it replaces (a responder's profile may leave ours
        // unspecified).
        peer.local = old.c.local;
        let (remote, session) = (old.c.remote, old.c.session);
        let cky = loop {
            let c = ctx.rng.next_u64();
            if c != 0 && !sas.contains_key(&c) {
                break c;
            }
        };
        tracing::debug!(%remote, "v1: rekeying the ISAKMP SA");
        match Phase1Sa::initiate(ctx, Arc::new(peer), remote, cky) {
            Ok(mut sa) => {
                sa.c.session = session;
                sa.c.rekey_of = Some(old_key);
                sas.insert(cky, sa);
            }
            Err(e) => tracing::warn!(%remote, error = %e, "v1: ISAKMP SA rekey not started"),
        }
    }
    let mut fresh: Vec<u64> = sas
        .iter()
        .filter(|(_, sa)| matches!(&sa.state, State::Established(e) if !e.settled))
        .map(|(k, _)| *k)
        .collect();
    fresh.sort_unstable();
    for key in fresh {
        let Some(sa) = sas.get_mut(&key) else {
            continue;
        };
        if let State::Established(e) = &mut sa.state {
            e.settled = true;
        }
        let (conn, peer_id, rekey_of) = (sa.c.peer.id, sa.peer_id().cloned(), sa.c.rekey_of);
        let session = sa.c.session;
        // Ours: the SA we replace. The peer's: every other live SA with the same peer
        // (after INITIAL-CONTACT, which closed them, there are none).
        let olds: Vec<u64> = sas
            .iter()
            .filter(|(k, o)| {
                **k != key
                    && o.is_established()
                    && (Some(**k) == rekey_of
                        || (o.c.peer.id == conn && o.peer_id() == peer_id.as_ref()))
            })
            .map(|(k, _)| *k)
            .collect();
        for k in olds {
            let Some(old) = sas.get_mut(&k) else {
                continue;
            };
            let children = old.give_children(now);
            if Some(k) == rekey_of {
                old.retire(ctx);
            }
            if let Some(sa) = sas.get_mut(&key) {
                sa.take_children(children);
            }
        }
        if rekey_of.is_some() {
            ctx.out
                .push_back(Output::Event(Event::IkeSaRekeyed { session, conn }));
        }
    }
    // ISAKMP SAs the peer deleted while they had Child SAs: the Child SAs move to another
    // live ISAKMP SA with the peer (both sides replaced it at once, or the peer deleted the
    // old one before our books moved them); without one they end with it.
    let mut deleted: Vec<u64> = sas
        .iter()
        .filter(|(_, sa)| matches!(&sa.state, State::Established(e) if e.peer_deleted))
        .map(|(k, _)| *k)
        .collect();
    deleted.sort_unstable();
    for k in deleted {
        let Some(sa) = sas.get(&k) else {
            continue;
        };
        let (conn, id) = (sa.c.peer.id, sa.peer_id().cloned());
        let heir = sas
            .iter()
            .filter(|(hk, h)| {
                **hk != k
                    && h.c.peer.id == conn
                    && h.peer_id() == id.as_ref()
                    && matches!(&h.state, State::Established(e) if !e.peer_deleted)
            })
            .map(|(hk, _)| *hk)
            .min();
        let Some(sa) = sas.get_mut(&k) else {
            continue;
        };
        let children = match heir {
            Some(_) => sa.give_children(now),
            None => Vec::new(),
        };
        sa.close(ctx, DownReason::Peer);
        if let Some(h) = heir.and_then(|h| sas.get_mut(&h)) {
            h.take_children(children);
        }
    }
    // A peer that replaced its ISAKMP SA may delete the old Child SAs under the old one
    // (strongSwan's IKEv1 reauthentication does) after we moved them to the new one.
    let mut moved: Vec<(crate::config::ConnId, Option<Identity>, u32)> = Vec::new();
    for sa in sas.values_mut() {
        let (conn, id) = (sa.c.peer.id, sa.peer_id().cloned());
        if let State::Established(e) = &mut sa.state {
            moved.extend(e.moved_deletes.drain(..).map(|spi| (conn, id.clone(), spi)));
        }
    }
    for (conn, id, spi) in moved {
        for sa in sas.values_mut() {
            if sa.c.peer.id != conn || sa.peer_id() != id.as_ref() {
                continue;
            }
            if let State::Established(e) = &mut sa.state {
                if let Some(i) = e
                    .children
                    .iter()
                    .position(|ch| ch.spi_out == spi || ch.spi_in == spi)
                {
                    let ch = e.children.remove(i);
                    remove_child(&sa.c, ctx, ch);
                }
            }
        }
    }
}
