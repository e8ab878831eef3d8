//! The established IKE SA (quinn-style struct): Child SA table, one outstanding request
//! (window 1, RFC 7296 §2.3) typed as [`Pending`], a queue of requests waiting for the window,
//! CREATE_CHILD_SA (new child, child rekey with make-before-break, PFS, IKE SA rekey §2.18,
//! simultaneous child rekey §2.8.1) and INFORMATIONAL (delete §1.4, liveness §2.4).

use std::collections::VecDeque;
use std::time::Duration;
use std::time::Instant;

use rand_core::RngCore;

use crate::config::IkeProposal;
use crate::config::Lifetime;
use crate::config::Mode;
use crate::crypto::KeyExchange;
use crate::error::Error;
use crate::error::PeerIncompatible;
use crate::error::PeerMisbehaved;
use crate::keys;
use crate::output::ChildSaId;
use crate::output::ChildSaInstall;
use crate::output::ChildSaRemove;
use crate::output::DownReason;
use crate::output::EspKeys;
use crate::output::Event;
use crate::output::Halves;
use crate::output::Output;
use crate::output::UdpEncap;
use crate::proposal;
use crate::proposal::EspChoice;
use crate::sa::Common;
use crate::sa::Ctx;
use crate::sa::Found;
use crate::sa::IkeSa;
use crate::sa::SaAction;
use crate::sa::Schedule;
use crate::sa::State;
use crate::sa::child::Child;
use crate::sa::child::ChildEvent;
use crate::sa::child::ChildRequest;
use crate::sa::child::ChildState;
use crate::sa::child::OUTBOUND_FALLBACK;
use crate::sa::child::OutboundLater;
use crate::sa::child::config_of;
use crate::sa::error_notify;
use crate::sa::followup::Answered;
use crate::sa::followup::ChildDraft;
use crate::sa::followup::Creates;
use crate::sa::followup::ExpectFollowupKeRequest;
use crate::sa::followup::ExpectFollowupKeResponse;
use crate::sa::followup::Gathered;
use crate::sa::followup::Received;
use crate::sa::glue;
use crate::sa::initiator::check_answer_ts;
use crate::sa::initiator::esp_usable;
use crate::sa::initiator::usable;
use crate::sa::later;
use crate::sa::need;
use crate::sa::responder::negotiate_child_pfs;
use crate::sa::responder::select_child_config;
use crate::sa::timers::Timer;
use crate::sa::timers::TimerTable;
use crate::secret::Secret;
use crate::transform::DhGroup;
use crate::transform::Esn;
use crate::wire::Delete;
use crate::wire::Ke;
use crate::wire::Nonce;
use crate::wire::Notify;
use crate::wire::Payload;
use crate::wire::Sa;
use crate::wire::TrafficSelector;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::NotifyType;
use crate::wire::enums::ProtocolId;
use crate::wire::notifies;

/// How long an IKE SA replaced by a rekey waits for the peer's DELETE before going quietly.
const REKEYED_LINGER: Duration = Duration::from_secs(30);

/// Inputs to [`install_child`].
pub(crate) struct ChildParams<'a> {
    /// We initiated the exchange creating the child (§2.17 key order).
    pub(crate) exchange_initiator: bool,
    pub(crate) spi_in: u32,
    pub(crate) choice: EspChoice,
    pub(crate) g_ir: Option<&'a Secret>,
    pub(crate) ni: &'a [u8],
    pub(crate) nr: &'a [u8],
    /// SK(1)..SK(n) of the additional key exchanges (RFC 9370 §2.2.4), empty without them.
    pub(crate) addke: &'a [Secret],
    pub(crate) local_ts: Vec<TrafficSelector>,
    pub(crate) remote_ts: Vec<TrafficSelector>,
    pub(crate) mode: Mode,
    pub(crate) replaces: Option<ChildSaId>,
    /// The configuration (and host pair) it is for: a rekey passes its old child's.
    pub(crate) request: ChildRequest,
}

/// Derives KEYMAT (§2.17), emits [`Output::InstallChildSa`] and the matching event.
pub(crate) fn install_child(c: &Common, ctx: &mut Ctx<'_>, p: ChildParams<'_>) -> Child {
    let id = ChildSaId(ctx.alloc_id());
    let enc = p.choice.proposal.encr;
    let integ = p.choice.proposal.integ;
    let no_key = Secret::new(Vec::new());
    let (prf, sk_d) = match &c.keys {
        Some(k) => (k.suite.prf, &k.sk_d),
        // Established SAs always have keys; an empty SK_d yields keys nobody shares, and the
        // SA is useless rather than the process dead.
        None => (crate::transform::Prf::HmacSha256, &no_key),
    };
    let ck = keys::derive_child_keys(prf, sk_d, enc, integ, p.g_ir, p.ni, p.nr, p.addke);
    let keys_i = EspKeys {
        encr: ck.encr_i,
        integ: integ.map(|_| ck.integ_i),
    };
    let keys_r = EspKeys {
        encr: ck.encr_r,
        integ: integ.map(|_| ck.integ_r),
    };
    let (outbound, inbound) = if p.exchange_initiator {
        (keys_i, keys_r)
    } else {
        (keys_r, keys_i)
    };
    let cfg = config_of(&c.peer, p.request.index);
    let lt = cfg.lifetime;
    let encap = (c.nat_local || c.nat_remote).then(|| UdpEncap {
        local_port: c.local.port(),
        remote_port: c.remote.port(),
    });
    let inst = ChildSaInstall {
        child: id,
        replaces: p.replaces,
        session: c.session,
        conn: c.peer.id,
        config: p.request.index,
        host_pair: p.request.host_pair,
        local: c.local,
        remote: c.remote,
        inbound_spi: p.spi_in,
        outbound_spi: p.choice.peer_spi,
        encr: enc,
        integ,
        esn: p.choice.proposal.esn == Esn::Yes,
        inbound,
        outbound,
        local_ts: p.local_ts.clone(),
        remote_ts: p.remote_ts.clone(),
        mode: p.mode,
        encap,
        hard_lifetime: lt.lifetime.saturating_add(Duration::from_secs(60)),
        bytes: cfg.lifetime_bytes,
        halves: Halves::Both,
    };
    // A rekey the peer initiated: inbound now, outbound once the peer has the new pair (see
    // `OutboundLater`).
    let held = match p.replaces {
        Some(old) if !p.exchange_initiator => {
            ctx.out.push_back(Output::InstallChildSa(ChildSaInstall {
                halves: Halves::InboundFirst,
                ..inst.clone()
            }));
            Some(OutboundLater {
                after: old,
                at: later(ctx.now, OUTBOUND_FALLBACK),
                install: Box::new(ChildSaInstall {
                    halves: Halves::OutboundLater,
                    ..inst
                }),
            })
        }
        _ => {
            ctx.out.push_back(Output::InstallChildSa(inst));
            None
        }
    };
    ctx.stats.child_sas_installed += 1;
    match p.replaces {
        Some(old) => ctx.event(Event::ChildSaRekeyed {
            old,
            new: id,
            session: c.session,
        }),
        None => ctx.event(Event::ChildSaUp {
            child: id,
            session: c.session,
            conn: c.peer.id,
            config: p.request.index,
        }),
    }
    let rekey_at = later(ctx.now, rekey_after(ctx, lt));
    let expire_at = later(ctx.now, lt.lifetime);
    let mut ch = Child::new(
        id,
        p.spi_in,
        p.choice.peer_spi,
        p.local_ts,
        p.remote_ts,
        p.mode,
        rekey_at,
        expire_at,
    );
    ch.addrs = Some((c.local, c.remote));
    ch.config = p.request.index;
    ch.host_pair = p.request.host_pair;
    ch.pfs = p.choice.dh;
    ch.pfs_addke = p.choice.addke;
    ch.outbound_later = held;
    ch
}

/// `lifetime - margin - random(0..=jitter)` from the seeded RNG.
pub(crate) fn rekey_after(ctx: &mut Ctx<'_>, lt: Lifetime) -> Duration {
    let base = lt.lifetime.saturating_sub(lt.rekey_margin);
    let j = lt.jitter.as_millis() as u64;
    let r = if j == 0 {
        0
    } else {
        ctx.rng.next_u64() % (j + 1)
    };
    base.saturating_sub(Duration::from_millis(r))
}

/// How long to wait before retrying a refused or failed rekey (RFC 7296 §2.25: "try again
/// later"): 2 to 10 s, drawn from the seeded RNG.
fn retry_delay(ctx: &mut Ctx<'_>) -> Duration {
    Duration::from_millis(2000 + ctx.rng.next_u64() % 8000)
}

/// Our IKE SA rekey failed: schedule the next attempt after `retry_delay`.
fn retry_ike_rekey(c: &mut Common, ctx: &mut Ctx<'_>) {
    let retry = retry_delay(ctx);
    c.timers.set(Timer::IkeRekey, ctx.now + retry);
}

/// A request waiting for the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// A new Child SA (§1.3.1) for this configuration and host pair.
    CreateChild(ChildRequest),
    RekeyChild(ChildSaId),
    RekeyIke,
    /// Delete live children (removed when the peer answers).
    Delete(Vec<ChildSaId>),
    /// Tell the peer about children we already removed.
    DeleteSpis(Vec<u32>),
    DeleteIke,
    Dpd,
    /// Tell the peer our new address (MOBIKE).
    UpdateAddresses,
}

/// The one request in flight, typed by what its response completes.
pub(crate) enum Pending {
    CreateChild(ExpectCreateChildResponse),
    RekeyChild(ExpectCreateChildResponse),
    RekeyIke(ExpectRekeyIkeResponse),
    /// A CREATE_CHILD_SA of ours answered with additional key exchanges to run (RFC 9370
    /// §2.2.4): one IKE_FOLLOWUP_KE in flight.
    FollowupKe(Box<ExpectFollowupKeResponse>),
    Informational(Informational),
}

/// Waiting for the CREATE_CHILD_SA response of a new child or a child rekey.
pub(crate) struct ExpectCreateChildResponse {
    /// The child being rekeyed; `None` for a new child.
    old: Option<ChildSaId>,
    /// Its configuration and host pair (a rekey's are the old child's).
    req: ChildRequest,
    /// The (TSi, TSr) we proposed; the answer must lie within (§2.9).
    offered: (Vec<TrafficSelector>, Vec<TrafficSelector>),
    spi_in: u32,
    ni: Vec<u8>,
    ke: Option<KeyExchange>,
}

/// Waiting for the CREATE_CHILD_SA response of an IKE SA rekey.
pub(crate) struct ExpectRekeyIkeResponse {
    spi: u64,
    ni: Vec<u8>,
    ke: KeyExchange,
}

/// What an INFORMATIONAL request was for.
pub(crate) enum Informational {
    Dpd,
    UpdateAddresses,
    Delete(Vec<ChildSaId>),
    DeleteSpis,
    DeleteIke,
}

/// An established IKE SA.
pub(crate) struct Established {
    pub(crate) suite: IkeProposal,
    pub(crate) children: Vec<Child>,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) pending: Option<Pending>,
    /// Replaced by a rekeyed IKE SA; only DELETE traffic remains (until `Timer::DeleteLinger`).
    pub(crate) rekeyed: bool,
    /// The peer's CREATE_CHILD_SA answered with additional key exchanges still to run.
    pub(crate) followup: Option<Box<ExpectFollowupKeRequest>>,
}

impl Established {
    pub(crate) fn new(c: &mut Common, ctx: &mut Ctx<'_>, suite: IkeProposal) -> Self {
        let after = rekey_after(ctx, c.peer.ike_lifetime);
        c.timers.set(Timer::IkeRekey, later(ctx.now, after));
        Self {
            suite,
            children: Vec::new(),
            queue: VecDeque::new(),
            pending: None,
            rekeyed: false,
            followup: None,
        }
    }

    /// The earliest rekey or expiry deadline of the children (kept per child, see
    /// [`crate::sa::timers`]).
    pub(crate) fn children_next_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |y| y.min(x)));
            }
        };
        for ch in &self.children {
            if ch.rekey_armed() {
                min(ch.rekey_at);
            }
            min(Some(ch.expire_at));
            min(ch.outbound_later.as_ref().map(|o| o.at));
        }
        t
    }

    pub(crate) fn on_timeout(&mut self, c: &mut Common, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        if c.timers.is_expired(Timer::DeleteLinger, now) {
            c.timers.stop(Timer::DeleteLinger);
            self.remove_all_children(c, ctx);
            c.go_down(ctx, DownReason::Replaced);
            return;
        }
        if self.rekeyed {
            return;
        }
        if c.timers.is_expired(Timer::IkeRekey, now) {
            c.timers.stop(Timer::IkeRekey);
            self.queue.push_back(Queued::RekeyIke);
        }
        for ch in &mut self.children {
            if ch.outbound_later.as_ref().is_some_and(|o| o.at <= now) {
                tracing::debug!(child = ?ch.id, "rekeyed Child SA: no DELETE of its predecessor; outbound SA installed");
                release_outbound(ctx, ch);
            }
        }
        let mut expired = Vec::new();
        for ch in &mut self.children {
            if ch.expire_at <= now {
                expired.push(ch.id);
            } else if ch.rekey_armed() && ch.rekey_at.is_some_and(|t| t <= now) {
                ch.rekey_at = None;
                self.queue.push_back(Queued::RekeyChild(ch.id));
            }
        }
        for id in expired {
            self.expire_child(c, ctx, id);
        }
        // `Timer::Liveness` is only set with `dpd` configured and an idle window.
        if c.outstanding.is_none()
            && self.queue.is_empty()
            && c.timers.is_expired(Timer::Liveness, now)
        {
            self.queue.push_back(Queued::Dpd);
        }
    }

    /// The kernel reports ESP-in-UDP for inbound SA `spi` from `remote` (XFRM_MSG_MAPPING,
    /// raised only for packets that passed ESP integrity and the replay check, so the update
    /// rests on authenticated, fresh traffic as RFC 7296 §2.23 requires).
    pub(crate) fn nat_mapping(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        spi: u32,
        remote: std::net::SocketAddr,
    ) {
        if !c.follows_nat_mapping() {
            // §2.23: only the side not behind a NAT follows the other's mapping.
            tracing::debug!(%remote, nat_local = c.nat_local, nat_remote = c.nat_remote,
                "NAT mapping not followed: the peer is not behind a NAT, or we are");
            return;
        }
        if remote.ip() != c.remote.ip() {
            // The outbound SA's destination address is part of its kernel key, so a new
            // address needs new SAs (a rekey), not an update; left to the next rekey.
            tracing::warn!(old = %c.remote, new = %remote,
                "peer's NAT changed address, not just port: not followed");
            return;
        }
        if remote == c.remote {
            // The session already follows it (an IKE message came from there); this SA's
            // kernel state was still stale when the packet arrived. Update it (idempotent).
            let stale = self.children.iter().filter(|ch| ch.spi_in == spi);
            c.update_encap(ctx, stale, None);
            return;
        }
        let old = c.remote;
        c.remote = remote;
        c.update_encap(ctx, &self.children, Some(old));
    }

    /// A live Child SA already serves `req`: one of the same configuration and host pair, or,
    /// for a per-host request, one the peer created with exactly those hosts' selectors.
    pub(crate) fn has_child_for(&self, c: &Common, req: ChildRequest) -> bool {
        let exact = req.host_pair.and_then(|_| req.proposal(&c.peer));
        self.children.iter().any(|ch| {
            ch.is_live()
                && ch.config == req.index
                && (ch.host_pair == req.host_pair
                    || exact
                        .as_ref()
                        .is_some_and(|(l, r)| ch.local_ts == *l && ch.remote_ts == *r))
        })
    }

    /// [`crate::Command::InitiateChild`]: queue a CREATE_CHILD_SA for `req` unless a Child
    /// SA for it is installed, queued or being negotiated (§1.3.1).
    pub(crate) fn request_child(&mut self, c: &Common, req: ChildRequest) {
        let in_flight = matches!(&self.pending, Some(Pending::CreateChild(p)) if p.req == req);
        let queued = self.queue.contains(&Queued::CreateChild(req));
        if in_flight || queued || self.has_child_for(c, req) {
            tracing::debug!(?req, "child SA already up or under way");
            return;
        }
        self.queue.push_back(Queued::CreateChild(req));
    }

    pub(crate) fn queue_rekey_child(&mut self, child: ChildSaId) {
        let q = Queued::RekeyChild(child);
        if !self.queue.contains(&q) {
            self.queue.push_back(q);
        }
    }

    /// Removes a child now (hard expiry, failed install) and tells the peer.
    pub(crate) fn expire_child(&mut self, c: &Common, ctx: &mut Ctx<'_>, id: ChildSaId) {
        if let Some(ch) = self.take_child(ctx, id) {
            let spi = ch.spi_in;
            remove_child(c, ctx, &ch);
            self.queue.push_back(Queued::DeleteSpis(vec![spi]));
        }
    }

    /// Takes a child out to be removed. A successor whose outbound SA waits for this one to
    /// go gets it installed first, so that the flow always has an outbound SA.
    fn take_child(&mut self, ctx: &mut Ctx<'_>, id: ChildSaId) -> Option<Child> {
        let i = self.children.iter().position(|c| c.id == id)?;
        let ch = self.children.remove(i);
        for succ in &mut self.children {
            if succ.outbound_later.as_ref().is_some_and(|o| o.after == id) {
                release_outbound(ctx, succ);
            }
        }
        Some(ch)
    }

    pub(crate) fn remove_all_children(&mut self, c: &Common, ctx: &mut Ctx<'_>) {
        for ch in std::mem::take(&mut self.children) {
            remove_child(c, ctx, &ch);
        }
    }

    /// Starts queued requests while the window is free.
    pub(crate) fn pump(&mut self, c: &mut Common, ctx: &mut Ctx<'_>) {
        while c.outstanding.is_none() && !c.closed {
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            if let Err(e) = self.start(c, ctx, q) {
                tracing::warn!(error = %e, "cannot start request");
            }
        }
    }

    fn start(&mut self, c: &mut Common, ctx: &mut Ctx<'_>, q: Queued) -> Result<(), Error> {
        if self.rekeyed && !matches!(q, Queued::DeleteIke) {
            return Ok(());
        }
        match q {
            Queued::RekeyChild(id) => {
                let Some(ch) = self
                    .children
                    .iter_mut()
                    .find(|ch| ch.id == id && ch.state() == &ChildState::Installed)
                else {
                    return Ok(());
                };
                ch.on(ChildEvent::RekeyStarted);
                // §1.3.3: REKEY_SA names the SA being replaced by our inbound SPI. §2.8: the
                // new child keeps the old one's configuration, host pair and selectors.
                let rekey = Notify::esp(NotifyType::RekeySa, ch.spi_in, vec![]);
                let offered = (ch.local_ts.clone(), ch.remote_ts.clone());
                let (mode, req) = (ch.mode, ch.request());
                let pending = send_child_request(c, ctx, Some((id, rekey)), req, mode, offered)?;
                self.pending = Some(Pending::RekeyChild(pending));
            }
            Queued::CreateChild(req) => {
                // Asked for twice (queued before the first one was installed, e.g. by IKE_AUTH
                // of a peer-initiated SA): one Child SA is enough.
                if self.has_child_for(c, req) {
                    return Ok(());
                }
                // §1.3.1: a new Child SA on the existing IKE SA, from the configuration's
                // selectors (or the host pair within them).
                let Some(offered) = req.proposal(&c.peer) else {
                    tracing::warn!(?req, "no such child configuration, or hosts outside it");
                    return Ok(());
                };
                let mode = config_of(&c.peer, req.index).mode;
                let pending = send_child_request(c, ctx, None, req, mode, offered)?;
                self.pending = Some(Pending::CreateChild(pending));
            }
            Queued::RekeyIke => {
                let spi = ctx.spi64();
                let ni = ctx.nonce();
                let ke = KeyExchange::generate(self.suite.dh, ctx.rng)?;
                // §2.18: offer our proposals with the negotiated suite first.
                let props = rekey_proposals(&c.peer, self.suite);
                let p = [
                    Payload::Sa(proposal::ike_offer(&props, &spi.to_be_bytes())),
                    Payload::Nonce(Nonce(ni.clone())),
                    Payload::Ke(Ke {
                        group: ke.group().id(),
                        data: ke.public().to_vec(),
                    }),
                ];
                c.send_request(ctx, ExchangeType::CreateChildSa, &p)?;
                self.pending = Some(Pending::RekeyIke(ExpectRekeyIkeResponse { spi, ni, ke }));
            }
            Queued::Delete(ids) => {
                let mut spis = Vec::new();
                for ch in self.children.iter_mut().filter(|ch| ids.contains(&ch.id)) {
                    ch.on(ChildEvent::DeleteSent);
                    spis.push(ch.spi_in);
                }
                if spis.is_empty() {
                    return Ok(());
                }
                let p = [Payload::Delete(Delete {
                    protocol: ProtocolId::Esp,
                    spis,
                })];
                c.send_request(ctx, ExchangeType::Informational, &p)?;
                self.pending = Some(Pending::Informational(Informational::Delete(ids)));
            }
            Queued::DeleteSpis(spis) => {
                let p = [Payload::Delete(Delete {
                    protocol: ProtocolId::Esp,
                    spis,
                })];
                c.send_request(ctx, ExchangeType::Informational, &p)?;
                self.pending = Some(Pending::Informational(Informational::DeleteSpis));
            }
            Queued::DeleteIke => {
                let p = [Payload::Delete(Delete {
                    protocol: ProtocolId::Ike,
                    spis: vec![],
                })];
                c.send_request(ctx, ExchangeType::Informational, &p)?;
                self.pending = Some(Pending::Informational(Informational::DeleteIke));
            }
            Queued::UpdateAddresses => {
                // RFC 4555 §3.5: UPDATE_SA_ADDRESSES with NAT detection for the new path,
                // from the new address (already in `c.local`).
                let mut p = vec![Payload::Notify(Notify::new(
                    NotifyType::UpdateSaAddresses,
                    Vec::new(),
                ))];
                p.extend(glue::nat_notifies(c.spi_i, c.spi_r, c.local, c.remote));
                c.send_request(ctx, ExchangeType::Informational, &p)?;
                self.pending = Some(Pending::Informational(Informational::UpdateAddresses));
            }
            Queued::Dpd => {
                // §2.4: an empty INFORMATIONAL request is the liveness check.
                let schedule = c.peer.dpd.map_or(Schedule::Backoff, Schedule::Liveness);
                c.send_request_with(ctx, ExchangeType::Informational, &[], schedule)?;
                self.pending = Some(Pending::Informational(Informational::Dpd));
            }
        }
        Ok(())
    }

    /// Handles the (authenticated) response to our outstanding request.
    pub(crate) fn handle_response(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        payloads: Vec<Payload>,
    ) -> Result<(), Error> {
        let Some(pending) = self.pending.take() else {
            return Err(PeerMisbehaved::UnsolicitedResponse.into());
        };
        match (pending, exchange) {
            (Pending::RekeyChild(p) | Pending::CreateChild(p), ExchangeType::CreateChildSa) => {
                self.create_child_done(c, ctx, p, &payloads)
            }
            (Pending::RekeyIke(p), ExchangeType::CreateChildSa) => {
                self.rekey_ike_done(c, ctx, p, &payloads)
            }
            (Pending::FollowupKe(p), ExchangeType::IkeFollowupKe) => {
                match p.handle(c, ctx, &payloads) {
                    Ok(Answered::More(next)) => {
                        self.pending = Some(Pending::FollowupKe(next));
                        Ok(())
                    }
                    Ok(Answered::Done(creates, keys)) => self.complete(c, ctx, creates, keys),
                    Err(failed) => {
                        let (creates, e) = *failed;
                        self.abandon(c, ctx, creates);
                        Err(e)
                    }
                }
            }
            (Pending::Informational(i), ExchangeType::Informational) => {
                match i {
                    Informational::Dpd | Informational::DeleteSpis => {}
                    Informational::UpdateAddresses => {
                        if let Some(ty) = error_notify(&payloads) {
                            // §3.5: UNACCEPTABLE_ADDRESSES, UNEXPECTED_NAT_DETECTED...: this
                            // SA cannot move; end it so the agent negotiates from the new
                            // address.
                            tracing::warn!(?ty, "peer refused the address update");
                            self.remove_all_children(c, ctx);
                            c.go_down(ctx, DownReason::Failed("mobike_refused"));
                            return Ok(());
                        }
                        self.moved(c, ctx, &payloads);
                    }
                    Informational::Delete(ids) => {
                        for id in ids {
                            if let Some(ch) = self.take_child(ctx, id) {
                                remove_child(c, ctx, &ch);
                            }
                        }
                    }
                    Informational::DeleteIke => {
                        self.remove_all_children(c, ctx);
                        let reason = if self.rekeyed {
                            DownReason::Replaced
                        } else {
                            DownReason::Local
                        };
                        c.go_down(ctx, reason);
                    }
                }
                Ok(())
            }
            (_, ex) => Err(PeerMisbehaved::UnexpectedExchange(ex.to_raw()).into()),
        }
    }

    fn create_child_done(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        p: ExpectCreateChildResponse,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        if let Some(ty) = error_notify(payloads) {
            // §2.25: TEMPORARY_FAILURE means "try again later"; CHILD_SA_NOT_FOUND that the
            // peer no longer has it.
            let retry = retry_delay(ctx);
            let Some(old) = p.old else {
                tracing::warn!(?ty, conn = ?c.peer.id, "new Child SA refused by the peer");
                return Err(PeerIncompatible::PeerRejected(ty).into());
            };
            if ty == NotifyType::ChildSaNotFound {
                if let Some(ch) = self.take_child(ctx, old) {
                    remove_child(c, ctx, &ch);
                }
            } else if let Some(ch) = self.children.iter_mut().find(|ch| Some(ch.id) == p.old) {
                ch.on(ChildEvent::RekeyRefused);
                ch.rekey_at = Some(ctx.now + retry);
            }
            return Err(PeerIncompatible::PeerRejected(ty).into());
        }
        let (sa, nr, ke, tsi, tsr) = child_payloads(payloads)?;
        let cfg = config_of(&c.peer, p.req.index);
        let pfs = cfg.pfs;
        let choice = proposal::accept_esp(sa, &esp_usable(&c.peer, cfg), pfs, cfg.pfs_addke)?;
        let g_ir = agree(p.ke, ke)?;
        let transport = notifies(payloads, NotifyType::UseTransportMode)
            .next()
            .is_some();
        let mode = match (transport, cfg.mode) {
            (true, Mode::Transport) => Mode::Transport,
            _ => Mode::Tunnel,
        };
        check_answer_ts(tsi, tsr, &p.offered.0, &p.offered.1)?;
        if let (false, Some(sk0)) = (choice.addke.is_empty(), &g_ir) {
            // RFC 9370 §2.2.4: the Child SA exists once the IKE_FOLLOWUP_KE rounds are done.
            let draft = ChildDraft {
                exchange_initiator: true,
                spi_in: p.spi_in,
                choice,
                local_ts: tsi.to_vec(),
                remote_ts: tsr.to_vec(),
                mode,
                replaces: p.old,
                request: p.req,
            };
            let keys = Gathered::new(sk0.clone(), p.ni, nr.to_vec());
            let creates = Creates::Child(draft);
            let next =
                ExpectFollowupKeResponse::start(c, ctx, creates, keys, choice.addke, payloads)
                    .inspect_err(|_| self.rekey_failed(ctx, p.old))?;
            self.pending = Some(Pending::FollowupKe(next));
            return Ok(());
        }
        let new = install_child(
            c,
            ctx,
            ChildParams {
                exchange_initiator: true,
                spi_in: p.spi_in,
                choice,
                g_ir: g_ir.as_ref(),
                ni: &p.ni,
                nr,
                addke: &[],
                local_ts: tsi.to_vec(),
                remote_ts: tsr.to_vec(),
                mode,
                replaces: p.old,
                request: p.req,
            },
        );
        let ours_min = p.ni.as_slice().min(nr).to_vec();
        self.own_child_installed(new, p.old, ours_min);
        Ok(())
    }

    /// A Child SA of a CREATE_CHILD_SA we initiated is installed: retire what it replaces.
    fn own_child_installed(&mut self, new: Child, old: Option<ChildSaId>, ours_min: Vec<u8>) {
        let new_id = new.id;
        self.children.push(new);
        // Make-before-break: the new child is installed; now retire the old one. §2.8.1: on
        // a collision the exchange with the lowest nonce made the redundant SA, and whoever
        // initiated that exchange deletes what it created.
        let Some(old_id) = old else {
            return;
        };
        if let Some(old) = self.children.iter_mut().find(|ch| ch.id == old_id) {
            match old.on(ChildEvent::RekeyDone) {
                Some((_, theirs_min)) if ours_min < theirs_min => {
                    tracing::debug!(?new_id, "simultaneous rekey: ours is redundant");
                    if let Some(n) = self.children.iter_mut().find(|ch| ch.id == new_id) {
                        n.on(ChildEvent::Redundant);
                    }
                    self.queue.push_front(Queued::Delete(vec![new_id]));
                }
                _ => self.queue.push_front(Queued::Delete(vec![old_id])),
            }
        }
    }

    /// A Child SA of the peer's CREATE_CHILD_SA is installed; it may replace `old` (§2.8).
    fn peer_child_installed(&mut self, new: Child, old: Option<ChildSaId>, min_nonce: Vec<u8>) {
        let new_id = new.id;
        self.children.push(new);
        if let Some(old) = old {
            if let Some(ch) = self.children.iter_mut().find(|ch| ch.id == old) {
                // §2.8.1: while our own rekey of it is in flight this is a collision,
                // decided when our response arrives; otherwise it is replaced.
                ch.on(ChildEvent::RekeyedByPeer {
                    new: new_id,
                    min_nonce,
                });
            }
        }
    }

    /// Our rekey of child `old` failed: try again later (§2.25), as after TEMPORARY_FAILURE.
    fn rekey_failed(&mut self, ctx: &mut Ctx<'_>, old: Option<ChildSaId>) {
        let retry = retry_delay(ctx);
        if let Some(ch) = self.children.iter_mut().find(|ch| Some(ch.id) == old) {
            ch.on(ChildEvent::RekeyRefused);
            ch.rekey_at = Some(ctx.now + retry);
        }
    }

    /// Our CREATE_CHILD_SA with additional key exchanges failed in a later round (an error
    /// notify such as STATE_NOT_FOUND, or a bad answer): nothing is created, and a rekey is
    /// tried again later.
    fn abandon(&mut self, c: &mut Common, ctx: &mut Ctx<'_>, creates: Creates) {
        match creates {
            Creates::Child(d) => {
                if d.replaces.is_none() {
                    tracing::warn!(conn = ?c.peer.id, "new Child SA failed in IKE_FOLLOWUP_KE");
                }
                self.rekey_failed(ctx, d.replaces);
            }
            Creates::Ike { .. } => {
                retry_ike_rekey(c, ctx);
            }
        }
    }

    /// Every additional key exchange is done: derive the keys and create the Child SA or
    /// the rekeyed IKE SA (RFC 9370 §2.2.4).
    fn complete(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        creates: Creates,
        keys: Gathered,
    ) -> Result<(), Error> {
        match creates {
            Creates::Child(d) => {
                let initiator = d.exchange_initiator;
                let old = d.replaces;
                let new = install_child(
                    c,
                    ctx,
                    ChildParams {
                        exchange_initiator: d.exchange_initiator,
                        spi_in: d.spi_in,
                        choice: d.choice,
                        g_ir: Some(&keys.sk0),
                        ni: &keys.ni,
                        nr: &keys.nr,
                        addke: &keys.more,
                        local_ts: d.local_ts,
                        remote_ts: d.remote_ts,
                        mode: d.mode,
                        replaces: d.replaces,
                        request: d.request,
                    },
                );
                let min = keys.ni.as_slice().min(keys.nr.as_slice()).to_vec();
                if initiator {
                    self.own_child_installed(new, old, min);
                } else {
                    self.peer_child_installed(new, old, min);
                }
                Ok(())
            }
            Creates::Ike {
                suite,
                spi_i,
                spi_r,
                initiator,
            } => {
                self.rekeyed_into(
                    c, ctx, suite, &keys.sk0, &keys.ni, &keys.nr, &keys.more, spi_i, spi_r,
                    initiator,
                )?;
                self.queue.clear();
                if initiator {
                    // §2.18: the initiator of the rekey deletes the old IKE SA.
                    self.queue.push_back(Queued::DeleteIke);
                }
                Ok(())
            }
        }
    }

    fn rekey_ike_done(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        p: ExpectRekeyIkeResponse,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        if let Some(ty) = error_notify(payloads) {
            retry_ike_rekey(c, ctx);
            return Err(PeerIncompatible::PeerRejected(ty).into());
        }
        let f = Found::of(payloads);
        let sa = need(f.sa, "SA")?;
        let nr = need(f.nonce, "Nr")?;
        let ke = need(f.ke, "KE")?;
        let props = rekey_proposals(&c.peer, self.suite);
        let (suite, spi) = proposal::accept_ike(sa, &props)?;
        let peer_spi = <[u8; 8]>::try_from(spi.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| PeerMisbehaved::ProposalNotOffered)?;
        if ke.group != p.ke.group().id() || suite.dh != p.ke.group() || peer_spi == 0 {
            return Err(PeerMisbehaved::KeGroupMismatch.into());
        }
        let g_ir =
            p.ke.agree(&ke.data)
                .map_err(|_| PeerMisbehaved::BadKeData)?;
        if !suite.addke.is_empty() {
            // RFC 9370 §2.2.4: the new IKE SA exists once the IKE_FOLLOWUP_KE rounds are done.
            let creates = Creates::Ike {
                suite,
                spi_i: p.spi,
                spi_r: peer_spi,
                initiator: true,
            };
            let keys = Gathered::new(g_ir, p.ni, nr.to_vec());
            let next =
                ExpectFollowupKeResponse::start(c, ctx, creates, keys, suite.addke, payloads)
                    .inspect_err(|_| retry_ike_rekey(c, ctx))?;
            self.pending = Some(Pending::FollowupKe(next));
            return Ok(());
        }
        self.rekeyed_into(c, ctx, suite, &g_ir, &p.ni, nr, &[], p.spi, peer_spi, true)?;
        // §2.18: the initiator of the rekey deletes the old IKE SA.
        self.queue.clear();
        self.queue.push_back(Queued::DeleteIke);
        Ok(())
    }

    /// Builds the rekeyed IKE SA, moves the children to it (§2.18) and registers it.
    #[allow(clippy::too_many_arguments)]
    fn rekeyed_into(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        suite: IkeProposal,
        g_ir: &Secret,
        ni: &[u8],
        nr: &[u8],
        addke: &[Secret],
        spi_i: u64,
        spi_r: u64,
        initiator: bool,
    ) -> Result<(), Error> {
        let old = c.keys.as_ref().ok_or(Error::Local("keys"))?;
        let keys = keys::derive_rekeyed_ike_keys(
            old.suite.prf,
            &old.sk_d,
            glue::suite(&suite),
            g_ir,
            ni,
            nr,
            addke,
            spi_i,
            spi_r,
        );
        let sa_keys = glue::sa_keys(suite, keys, initiator)?;
        let mut nc = Common {
            peer: c.peer.clone(),
            session: c.session,
            spi_i,
            spi_r,
            initiator,
            local: c.local,
            remote: c.remote,
            nat_local: c.nat_local,
            nat_remote: c.nat_remote,
            frag: c.frag,
            mobike: c.mobike,
            mobike_initiator: c.mobike_initiator,
            keys: Some(sa_keys),
            peer_id: c.peer_id.clone(),
            peer_serials: c.peer_serials.clone(),
            next_req: 0,
            outstanding: None,
            next_peer_req: 0,
            cached: None,
            reassembly: None,
            last_heard: ctx.now,
            timers: TimerTable::default(),
            closed: false,
            reply_to: None,
            int_auth: None,
            prev_recv: None,
            // The new SA takes the old one's place among the peer's SAs.
            lineage: c.lineage,
        };
        // The NAT keepalive moves to the new SA with the traffic.
        if let Some(at) = c.timers.get(Timer::NatKeepalive) {
            nc.timers.set(Timer::NatKeepalive, at);
        }
        let mut est = Established::new(&mut nc, ctx, suite);
        est.children = std::mem::take(&mut self.children);
        for ch in &mut est.children {
            ch.on(ChildEvent::IkeRekeyed);
        }
        // Requests for children travel on the new SA.
        est.queue.extend(self.queue.drain(..).filter(|q| {
            matches!(
                q,
                Queued::CreateChild(_)
                    | Queued::RekeyChild(_)
                    | Queued::Delete(_)
                    | Queued::DeleteSpis(_)
            )
        }));
        est.pump(&mut nc, ctx);
        self.rekeyed = true;
        c.timers.stop(Timer::IkeRekey);
        c.timers.set(Timer::DeleteLinger, ctx.now + REKEYED_LINGER);
        c.timers.stop(Timer::NatKeepalive);
        ctx.event(Event::IkeSaRekeyed {
            session: c.session,
            conn: c.peer.id,
        });
        let mut sa = IkeSa {
            c: nc,
            state: State::Established(Box::new(est)),
        };
        sa.sync_timers();
        ctx.actions.push(SaAction::Insert(Box::new(sa)));
        Ok(())
    }

    /// Handles an (authenticated) request from the peer.
    pub(crate) fn handle_request(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        id: u32,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        match exchange {
            ExchangeType::CreateChildSa => {
                if self.rekeyed {
                    return Err(PeerIncompatible::TemporaryFailure.into());
                }
                // A new request while the peer's previous CREATE_CHILD_SA still has additional
                // key exchanges to run: its window holds one exchange (RFC 7296 §2.3), so it
                // gave that one up; so do we (RFC 9370 §2.2.4 leaves stale state to the
                // responder, and a later IKE_FOLLOWUP_KE with the old link gets
                // STATE_NOT_FOUND).
                if self.followup.take().is_some() {
                    tracing::debug!("peer abandoned its additional key exchanges");
                }
                let ike = payloads.iter().any(|p| {
                    matches!(p, Payload::Sa(s) if s.proposals.first().is_some_and(|x| x.protocol == ProtocolId::Ike))
                });
                if ike {
                    self.respond_rekey_ike(c, ctx, id, payloads)
                } else {
                    self.respond_create_child(c, ctx, id, payloads)
                }
            }
            ExchangeType::Informational => self.respond_informational(c, ctx, id, payloads),
            ExchangeType::IkeFollowupKe => self.respond_followup(c, ctx, id, payloads),
            ex => Err(PeerMisbehaved::UnexpectedExchange(ex.to_raw()).into()),
        }
    }

    fn respond_rekey_ike(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        id: u32,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        // §2.25.2: while our own CREATE_CHILD_SA is in flight, ask the peer to retry; both
        // sides back off with random delays, so one rekey wins.
        if matches!(
            self.pending,
            Some(
                Pending::RekeyIke(_)
                    | Pending::RekeyChild(_)
                    | Pending::CreateChild(_)
                    | Pending::FollowupKe(_)
            )
        ) {
            return Err(PeerIncompatible::TemporaryFailure.into());
        }
        let f = Found::of(payloads);
        let sa = need(f.sa, "SA")?;
        let ni = need(f.nonce, "Ni")?;
        let ke = need(f.ke, "KE")?;
        let our_spi = ctx.spi64();
        let props = rekey_proposals(&c.peer, self.suite);
        // Prefer the group of the KE payload already sent (§1.2), as in IKE_SA_INIT.
        let same: Vec<IkeProposal> = props
            .iter()
            .copied()
            .filter(|p| p.dh.id() == ke.group)
            .collect();
        let spi_bytes = our_spi.to_be_bytes();
        let (suite, reply) = proposal::select_ike(sa, &same, c.peer.allow_legacy, &spi_bytes)
            .or_else(|_| proposal::select_ike(sa, &props, c.peer.allow_legacy, &spi_bytes))?;
        let chosen_num = reply.proposals.first().map(|p| p.num);
        let peer_spi = sa
            .proposals
            .iter()
            .find(|p| Some(p.num) == chosen_num)
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes)
            .filter(|s| *s != 0)
            .ok_or(PeerMisbehaved::MissingPayload("SPI"))?;
        if ke.group != suite.dh.id() {
            return Err(PeerIncompatible::InvalidKePayload(suite.dh.id()).into());
        }
        let ours = KeyExchange::generate(suite.dh, ctx.rng)?;
        let public = ours.public().to_vec();
        let g_ir = ours
            .agree(&ke.data)
            .map_err(|_| PeerMisbehaved::BadKeData)?;
        let nr = ctx.nonce();
        let mut p = vec![
            Payload::Sa(reply),
            Payload::Nonce(Nonce(nr.clone())),
            Payload::Ke(Ke {
                group: suite.dh.id(),
                data: public,
            }),
        ];
        if !suite.addke.is_empty() {
            // RFC 9370 §2.2.4: the IKE_FOLLOWUP_KE rounds come next; the new SA exists after
            // the last. The peer initiated the rekey, so it is the new SA's original
            // initiator (§2.18).
            let creates = Creates::Ike {
                suite,
                spi_i: peer_spi,
                spi_r: our_spi,
                initiator: false,
            };
            let keys = Gathered::new(g_ir, ni.to_vec(), nr);
            let (link, st) = ExpectFollowupKeRequest::start(ctx, creates, keys, suite.addke);
            p.push(link);
            c.send_response(ctx, ExchangeType::CreateChildSa, id, &p)?;
            self.followup = Some(st);
            return Ok(());
        }
        c.send_response(ctx, ExchangeType::CreateChildSa, id, &p)?;
        // The peer initiated the rekey, so it is the new SA's original initiator (§2.18).
        self.rekeyed_into(c, ctx, suite, &g_ir, ni, &nr, &[], peer_spi, our_spi, false)?;
        self.queue.clear();
        Ok(())
    }

    fn respond_create_child(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        id: u32,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        let (sa, ni, ke, tsi, tsr) = child_payloads(payloads)?;
        let rekey = notifies(payloads, NotifyType::RekeySa).next();
        let old = match rekey {
            Some(n) => {
                let spi = n
                    .spi32()
                    .ok_or(PeerMisbehaved::MissingPayload("REKEY_SA SPI"))?;
                // The peer names the SA by its inbound SPI, i.e. our outbound one.
                let ch = self
                    .children
                    .iter()
                    .find(|ch| ch.spi_out == spi && !ch.is_deleting())
                    .ok_or(PeerMisbehaved::UnknownChildSa(spi))?;
                Some((ch.id, ch.request()))
            }
            None => None,
        };
        // §2.9: a new child goes under the first configuration its selectors narrow to; a
        // rekey (§2.8) stays under its old child's, keeping that one's host pair. Then that
        // configuration's PFS, proposals and mode apply.
        let sel = select_child_config(&c.peer, old.map(|(_, r)| r.index), tsi, tsr)?;
        let request = ChildRequest {
            index: sel.index,
            host_pair: old.and_then(|(_, r)| r.host_pair),
        };
        let old = old.map(|(id, _)| id);
        // Without a configured PFS group we still follow a peer that sends KE, if we
        // implement its group (strongSwan's `esp = aes256gcm16-x25519` style proposals).
        let pfs = config_of(&c.peer, sel.index)
            .pfs
            .or_else(|| ke.and_then(|k| DhGroup::from_id(k.group)));
        if let (Some(g), Some(k)) = (pfs, ke) {
            if k.group != g.id() {
                return Err(PeerIncompatible::InvalidKePayload(g.id()).into());
            }
        }
        if pfs.is_some() && ke.is_none() {
            return Err(PeerIncompatible::NoProposalChosen.into());
        }
        // RFC 9370 §2.2.4: the configured additional key exchanges are required; without
        // any configured we follow the peer's, as its KE group above.
        let addke = match config_of(&c.peer, sel.index).pfs_addke {
            a if !a.is_empty() => a,
            _ => proposal::peer_addke(sa),
        };
        let transport = notifies(payloads, NotifyType::UseTransportMode)
            .next()
            .is_some();
        let n = negotiate_child_pfs(c, ctx, sa, sel, transport, pfs, addke)?;
        let (public, g_ir) = match (pfs, ke) {
            (Some(g), Some(k)) => {
                let ours = KeyExchange::generate(g, ctx.rng)?;
                let public = ours.public().to_vec();
                let shared = ours.agree(&k.data).map_err(|_| PeerMisbehaved::BadKeData)?;
                (Some((g, public)), Some(shared))
            }
            _ => (None, None),
        };
        let nr = ctx.nonce();
        let mut followup = None;
        match (n.choice.addke.is_empty(), &g_ir) {
            (false, Some(sk0)) => {
                // RFC 9370 §2.2.4: installed once the IKE_FOLLOWUP_KE rounds are done.
                let draft = ChildDraft {
                    exchange_initiator: false,
                    spi_in: n.spi_in,
                    choice: n.choice,
                    local_ts: n.tsr.clone(),
                    remote_ts: n.tsi.clone(),
                    mode: n.mode,
                    replaces: old,
                    request,
                };
                let keys = Gathered::new(sk0.clone(), ni.to_vec(), nr.clone());
                let creates = Creates::Child(draft);
                followup = Some(ExpectFollowupKeRequest::start(
                    ctx,
                    creates,
                    keys,
                    n.choice.addke,
                ));
            }
            _ => {
                let new = install_child(
                    c,
                    ctx,
                    ChildParams {
                        exchange_initiator: false,
                        spi_in: n.spi_in,
                        choice: n.choice,
                        g_ir: g_ir.as_ref(),
                        ni,
                        nr: &nr,
                        addke: &[],
                        local_ts: n.tsr.clone(),
                        remote_ts: n.tsi.clone(),
                        mode: n.mode,
                        replaces: old,
                        request,
                    },
                );
                let min = ni.min(nr.as_slice()).to_vec();
                self.peer_child_installed(new, old, min);
            }
        }
        let mut p = Vec::new();
        if n.mode == Mode::Transport {
            p.push(Payload::Notify(Notify::new(
                NotifyType::UseTransportMode,
                vec![],
            )));
        }
        p.push(Payload::Sa(n.reply_sa));
        p.push(Payload::Nonce(Nonce(nr)));
        if let Some((g, public)) = public {
            p.push(Payload::Ke(Ke {
                group: g.id(),
                data: public,
            }));
        }
        p.push(Payload::TsI(n.tsi));
        p.push(Payload::TsR(n.tsr));
        if let Some((link, st)) = followup {
            p.push(link);
            self.followup = Some(st);
        }
        c.send_response(ctx, ExchangeType::CreateChildSa, id, &p)
    }

    /// An IKE_FOLLOWUP_KE request (RFC 9370 §2.2.4). A link we did not give for the round
    /// due (none under way, an old one, a forged one) is answered STATE_NOT_FOUND and
    /// changes nothing; any other error ends the exchange.
    fn respond_followup(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        id: u32,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        let st = match self.followup.take() {
            Some(st) if st.is_ours(payloads) => st,
            other => {
                self.followup = other;
                return Err(PeerMisbehaved::UnknownAddKeLink.into());
            }
        };
        match st.handle(c, ctx, id, payloads)? {
            Received::More(next) => {
                self.followup = Some(next);
                Ok(())
            }
            Received::Done(creates, keys, reply) => {
                let ike = matches!(creates, Creates::Ike { .. });
                if ike {
                    // The response goes under the old SA before the new one takes over.
                    c.send_response(ctx, ExchangeType::IkeFollowupKe, id, &reply)?;
                    self.complete(c, ctx, creates, keys)
                } else {
                    // Make-before-break: inbound SAs exist before the peer can use them.
                    self.complete(c, ctx, creates, keys)?;
                    c.send_response(ctx, ExchangeType::IkeFollowupKe, id, &reply)
                }
            }
        }
    }

    /// The IKE SA now runs between `c.local` and `c.remote` (an update of ours answered, or
    /// the peer's update received): NAT detection from the message that proved the path,
    /// then the Child SAs are rekeyed there (the kernel SAs keep their old addresses until
    /// replaced; RFC 4555 §3.5 leaves how they are updated to the implementation).
    fn moved(&mut self, c: &mut Common, ctx: &mut Ctx<'_>, payloads: &[Payload]) {
        if let Some((peer_nat, our_nat)) =
            glue::nat_detect(payloads, c.spi_i, c.spi_r, c.remote, c.local)
        {
            c.nat_remote = peer_nat;
            c.nat_local = our_nat;
        }
        ctx.event(Event::IkeSaMoved {
            session: c.session,
            conn: c.peer.id,
            local: c.local,
            remote: c.remote,
        });
        let live: Vec<ChildSaId> = self
            .children
            .iter()
            .filter(|ch| ch.is_live())
            .map(|ch| ch.id)
            .collect();
        for id in live {
            self.queue_rekey_child(id);
        }
    }

    fn respond_informational(
        &mut self,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        id: u32,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        // RFC 4555 §3.5: the original initiator moved. Only that side sends updates (§3.4);
        // from anyone else, or without MOBIKE negotiated, the status notify is ignored
        // (RFC 7296 §3.10.1).
        if c.mobike
            && !c.mobike_initiator
            && notifies(payloads, NotifyType::UpdateSaAddresses)
                .next()
                .is_some()
        {
            // The request came from and to the addresses to use from now on.
            if let Some((local, remote)) = c.reply_to {
                c.local = local;
                c.remote = remote;
            }
            let mut reply: Vec<Payload> =
                glue::nat_notifies(c.spi_i, c.spi_r, c.local, c.remote).to_vec();
            // §3.5: a COOKIE2 in the request is copied into the response.
            if let Some(n) = notifies(payloads, NotifyType::Cookie2).next() {
                reply.push(Payload::Notify(Notify::new(
                    NotifyType::Cookie2,
                    n.data.clone(),
                )));
            }
            self.moved(c, ctx, payloads);
            return c.send_response(ctx, ExchangeType::Informational, id, &reply);
        }
        // §2.21.2: the initiator rejected our AUTH after we considered the SA up.
        if notifies(payloads, NotifyType::AuthenticationFailed)
            .next()
            .is_some()
        {
            c.send_response(ctx, ExchangeType::Informational, id, &[])?;
            ctx.event(Event::AuthFailed {
                conn: Some(c.peer.id),
                peer: c.remote,
                reason: "peer_rejected",
            });
            self.remove_all_children(c, ctx);
            c.go_down(ctx, DownReason::Failed("peer_rejected"));
            return Ok(());
        }
        let mut reply_spis = Vec::new();
        let mut delete_ike = false;
        for p in payloads {
            let Payload::Delete(d) = p else {
                continue;
            };
            match d.protocol {
                ProtocolId::Ike => delete_ike = true,
                ProtocolId::Esp | ProtocolId::Ah => {
                    for spi in &d.spis {
                        // §1.4.1: the peer lists its inbound SPIs; we answer with ours, except
                        // for children we are deleting ourselves already.
                        let Some(id) = self
                            .children
                            .iter()
                            .find(|ch| ch.spi_out == *spi)
                            .map(|ch| ch.id)
                        else {
                            continue;
                        };
                        let Some(ch) = self.take_child(ctx, id) else {
                            continue;
                        };
                        if !ch.is_deleting() {
                            reply_spis.push(ch.spi_in);
                        }
                        remove_child(c, ctx, &ch);
                    }
                }
                ProtocolId::Unknown(_) => {}
            }
        }
        if delete_ike {
            // §1.4.1: answer with an empty INFORMATIONAL, then the SA and its children go.
            c.send_response(ctx, ExchangeType::Informational, id, &[])?;
            self.remove_all_children(c, ctx);
            let reason = if self.rekeyed {
                DownReason::Replaced
            } else {
                DownReason::Peer
            };
            c.go_down(ctx, reason);
            return Ok(());
        }
        let mut reply = Vec::new();
        if !reply_spis.is_empty() {
            reply.push(Payload::Delete(Delete {
                protocol: ProtocolId::Esp,
                spis: reply_spis,
            }));
        }
        c.send_response(ctx, ExchangeType::Informational, id, &reply)
    }
}

type ChildPayloads<'a> = (
    &'a Sa,
    &'a [u8],
    Option<&'a Ke>,
    &'a [TrafficSelector],
    &'a [TrafficSelector],
);

/// Sends a CREATE_CHILD_SA request for a new Child SA (§1.3.1) or, with `rekey` naming the old
/// child and its REKEY_SA notify, for a Child SA rekey (§1.3.3); returns what to wait for.
fn send_child_request(
    c: &mut Common,
    ctx: &mut Ctx<'_>,
    rekey: Option<(ChildSaId, Notify)>,
    req: ChildRequest,
    mode: Mode,
    offered: (Vec<TrafficSelector>, Vec<TrafficSelector>),
) -> Result<ExpectCreateChildResponse, Error> {
    let cfg = config_of(&c.peer, req.index);
    let pfs = cfg.pfs;
    let esp = esp_usable(&c.peer, cfg);
    let spi_in = ctx.spi32();
    let ni = ctx.nonce();
    let ke = match pfs {
        Some(g) => Some(KeyExchange::generate(g, ctx.rng)?),
        None => None,
    };
    let (old, mut p) = match rekey {
        Some((id, n)) => (Some(id), vec![Payload::Notify(n)]),
        None => (None, Vec::new()),
    };
    if mode == Mode::Transport {
        p.push(Payload::Notify(Notify::new(
            NotifyType::UseTransportMode,
            vec![],
        )));
    }
    p.push(Payload::Sa(proposal::esp_offer(
        &esp,
        pfs,
        cfg.pfs_addke,
        spi_in,
    )));
    p.push(Payload::Nonce(Nonce(ni.clone())));
    if let Some(k) = &ke {
        p.push(Payload::Ke(Ke {
            group: k.group().id(),
            data: k.public().to_vec(),
        }));
    }
    p.push(Payload::TsI(offered.0.clone()));
    p.push(Payload::TsR(offered.1.clone()));
    c.send_request(ctx, ExchangeType::CreateChildSa, &p)?;
    Ok(ExpectCreateChildResponse {
        old,
        req,
        offered,
        spi_in,
        ni,
        ke,
    })
}

fn child_payloads(payloads: &[Payload]) -> Result<ChildPayloads<'_>, Error> {
    let f = Found::of(payloads);
    Ok((
        need(f.sa, "SA")?,
        need(f.nonce, "Nonce")?,
        f.ke,
        need(f.tsi, "TSi")?,
        need(f.tsr, "TSr")?,
    ))
}

/// The PFS shared secret of a CREATE_CHILD_SA we initiated.
fn agree(ours: Option<KeyExchange>, theirs: Option<&Ke>) -> Result<Option<Secret>, Error> {
    match (ours, theirs) {
        (None, _) => Ok(None),
        (Some(_), None) => Err(PeerMisbehaved::MissingPayload("KEr").into()),
        (Some(k), Some(t)) => {
            if t.group != k.group().id() {
                return Err(PeerMisbehaved::KeGroupMismatch.into());
            }
            Ok(Some(
                k.agree(&t.data).map_err(|_| PeerMisbehaved::BadKeData)?,
            ))
        }
    }
}

/// Emits the held-back outbound SA of a child (see [`OutboundLater`]), if any.
fn release_outbound(ctx: &mut Ctx<'_>, ch: &mut Child) {
    if let Some(o) = ch.outbound_later.take() {
        ctx.out.push_back(Output::InstallChildSa(*o.install));
    }
}

/// Emits the removal of a child and, unless it was replaced, its down event.
pub(crate) fn remove_child(c: &Common, ctx: &mut Ctx<'_>, ch: &Child) {
    let (local, remote) = ch.addrs.unwrap_or((c.local, c.remote));
    ctx.out.push_back(Output::RemoveChildSa(ChildSaRemove {
        child: ch.id,
        session: c.session,
        conn: c.peer.id,
        local,
        remote,
        inbound_spi: ch.spi_in,
        outbound_spi: ch.spi_out,
    }));
    if !ch.is_replaced() {
        ctx.event(Event::ChildSaDown {
            child: ch.id,
            session: c.session,
            conn: c.peer.id,
            config: ch.config,
        });
    }
}

/// The suites of an IKE SA rekey (§2.18), the negotiated one first, additional key exchanges
/// included (run in IKE_FOLLOWUP_KE exchanges, RFC 9370 §2.2.4).
fn rekey_proposals(peer: &crate::config::PeerConfig, current: IkeProposal) -> Vec<IkeProposal> {
    let mut props = vec![current];
    for &p in usable(peer).iter() {
        if !props.contains(&p) {
            props.push(p);
        }
    }
    props
}
