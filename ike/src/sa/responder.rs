//! Responder handshake: IKE_SA_INIT with proposal selection, INVALID_KE_PAYLOAD and the
//! stateless COOKIE (RFC 7296 §1.2, §2.6, §2.7), then IKE_AUTH with PSK (§2.15).

use std::sync::Arc;

use crate::config::ChildConfig;
use crate::config::ChildConfigIndex;
use crate::config::ConnId;
use crate::config::IkeProposal;
use crate::config::Mode;
use crate::config::PeerConfig;
use crate::crypto::KeyExchange;
use crate::error::Error;
use crate::error::PeerIncompatible;
use crate::error::PeerMisbehaved;
use crate::error::Reaction;
use crate::keys;
use crate::output::Datagram;
use crate::output::Event;
use crate::output::SessionId;
use crate::output::Transmit;
use crate::proposal;
use crate::sa::Common;
use crate::sa::Ctx;
use crate::sa::Found;
use crate::sa::IkeSa;
use crate::sa::SaAction;
use crate::sa::State;
use crate::sa::auth;
use crate::sa::child::ChildRequest;
use crate::sa::child::config_of;
use crate::sa::established::ChildParams;
use crate::sa::established::Established;
use crate::sa::established::Queued;
use crate::sa::established::install_child;
use crate::sa::glue;
use crate::sa::initiator::esp_usable;
use crate::sa::intermediate::ExpectIntermediateRequest;
use crate::sa::later;
use crate::sa::need;
use crate::sa::timers::Timer;
use crate::sa::timers::TimerTable;
use crate::ts;
use crate::wire::Codec;
use crate::wire::Header;
use crate::wire::Ke;
use crate::wire::Message;
use crate::wire::Nonce;
use crate::wire::Notify;
use crate::wire::Payload;
use crate::wire::TrafficSelector;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::NotifyType;
use crate::wire::notifies;

impl IkeSa {
    /// Answers an IKE_SA_INIT request the endpoint has admitted (its COOKIE, when one was
    /// required, is already checked: `crate::admission`). On error the unprotected error notify (or COOKIE) has
    /// already been sent and no state is kept.
    pub(crate) fn respond(
        ctx: &mut Ctx<'_>,
        dgram: Datagram<'_>,
        msg: &Message,
        spi: u64,
        session: SessionId,
    ) -> Result<Self, Error> {
        match Self::respond_inner(ctx, dgram, msg, spi, session) {
            Ok(sa) => Ok(sa),
            Err(e) => {
                if let Reaction::Notify(ty, data) = e.reaction() {
                    let ty = match ty {
                        // Before IKE_AUTH there is nothing to authenticate; say "no proposal".
                        NotifyType::AuthenticationFailed => NotifyType::NoProposalChosen,
                        t => t,
                    };
                    let reply = Message {
                        header: Header::new(
                            msg.header.spi_i,
                            0,
                            ExchangeType::IkeSaInit,
                            false,
                            true,
                            0,
                        ),
                        payloads: vec![Payload::Notify(Notify::new(ty, data))],
                    };
                    ctx.out.push_back(crate::output::Output::Transmit(Transmit {
                        local: dgram.local,
                        remote: dgram.remote,
                        bytes: reply.encode(),
                    }));
                }
                Err(e)
            }
        }
    }

    fn respond_inner(
        ctx: &mut Ctx<'_>,
        dgram: Datagram<'_>,
        msg: &Message,
        spi: u64,
        session: SessionId,
    ) -> Result<Self, Error> {
        let f = Found::of(&msg.payloads);
        let sa = need(f.sa, "SA")?;
        let ke = need(f.ke, "KE")?;
        let ni = need(f.nonce, "Ni")?.to_vec();
        let candidates: Vec<Arc<PeerConfig>> = ctx
            .peers
            .iter()
            .filter(|p| p.remote.matches(dgram.remote.ip()))
            .filter(|p| {
                p.local.ip().is_unspecified()
                    || dgram.local.ip().is_unspecified()
                    || p.local.ip() == dgram.local.ip()
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Err(PeerIncompatible::NoProposalChosen.into());
        }
        // RFC 9242 §3.1: the initiator can do IKE_INTERMEDIATE; without it none of our suites
        // with additional key exchanges (RFC 9370 §2.2.1) can be chosen.
        let intermediate = msg
            .notifies(NotifyType::IntermediateExchangeSupported)
            .next()
            .is_some();
        // §1.2: prefer a suite whose group matches the KE the initiator already sent (as
        // strongSwan does), so a multi-group offer costs no INVALID_KE_PAYLOAD round trip.
        let mut chosen = None;
        let mut refusal = PeerIncompatible::NoProposalChosen;
        // One buffer for every candidate's filtered suites.
        let mut ours: Vec<IkeProposal> = Vec::new();
        for same_group in [true, false] {
            for cand in &candidates {
                ours.clear();
                ours.extend(
                    cand.ike_proposals
                        .iter()
                        .copied()
                        .filter(|p| !same_group || p.dh.id() == ke.group)
                        .filter(|p| intermediate || p.addke.is_empty()),
                );
                match proposal::select_ike(sa, &ours, cand.allow_legacy, &[]) {
                    Ok(c) => {
                        chosen = Some(c);
                        break;
                    }
                    Err(e @ PeerIncompatible::AdditionalKeyExchangeRequired) => refusal = e,
                    Err(_) => {}
                }
            }
            if chosen.is_some() {
                break;
            }
        }
        if chosen.is_none() && !intermediate {
            let required = candidates
                .iter()
                .any(|p| p.ike_proposals.iter().any(|s| !s.addke.is_empty()));
            let fallback = candidates
                .iter()
                .any(|p| p.ike_proposals.iter().any(|s| s.addke.is_empty()));
            if required && !fallback {
                refusal = PeerIncompatible::AdditionalKeyExchangeRequired;
            }
        }
        let Some((suite, reply_sa)) = chosen else {
            if refusal == PeerIncompatible::AdditionalKeyExchangeRequired {
                tracing::warn!(
                    peer = %dgram.remote,
                    intermediate,
                    "IKE_SA_INIT refused: our proposals require additional key exchanges \
                     (RFC 9370) the peer did not offer"
                );
            }
            return Err(refusal.into());
        };
        // §1.2: the proposal is fine but the KE guess is wrong: tell the initiator our group.
        if ke.group != suite.dh.id() {
            return Err(PeerIncompatible::InvalidKePayload(suite.dh.id()).into());
        }
        let ours = KeyExchange::generate(suite.dh, ctx.rng)?;
        let public = ours.public().to_vec();
        let shared = ours
            .agree(&ke.data)
            .map_err(|_| PeerMisbehaved::BadKeData)?;
        let nr = ctx.nonce();
        let spi_i = msg.header.spi_i;
        let keys = keys::derive_ike_keys(glue::suite(&suite), &ni, &nr, &shared, spi_i, spi);
        // Keep only profiles that accept the chosen suite; IKE_AUTH picks among them by ID.
        let candidates: Vec<Arc<PeerConfig>> = candidates
            .into_iter()
            .filter(|p| p.ike_proposals.contains(&suite))
            .collect();
        let peer = candidates
            .first()
            .cloned()
            .ok_or(PeerIncompatible::NoProposalChosen)?;
        let nat = glue::nat_detect(&msg.payloads, spi_i, 0, dgram.remote, dgram.local);
        let frag = msg
            .notifies(NotifyType::Ikev2FragmentationSupported)
            .next()
            .is_some();
        let mut c = Common {
            peer,
            session,
            spi_i,
            spi_r: spi,
            initiator: false,
            local: dgram.local,
            remote: dgram.remote,
            nat_local: nat.is_some_and(|n| n.1),
            nat_remote: nat.is_some_and(|n| n.0),
            frag,
            mobike: false,
            mobike_initiator: false,
            keys: Some(glue::sa_keys(suite, keys, false)?),
            peer_id: None,
            peer_serials: None,
            next_req: 0,
            outstanding: None,
            next_peer_req: 1,
            cached: None,
            reassembly: None,
            last_heard: ctx.now,
            timers: TimerTable::default(),
            closed: false,
            reply_to: None,
            int_auth: None,
            prev_recv: None,
            lineage: super::Lineage::new(ctx),
        };
        c.timers.set(
            Timer::HalfOpen,
            later(ctx.now, ctx.config.limits.half_open_timeout),
        );
        if c.nat_local {
            c.timers.set(
                Timer::NatKeepalive,
                later(ctx.now, ctx.config.nat_keepalive),
            );
        }
        // SA, KE, Nr, two NAT_DETECTION, fragmentation, signature hashes,
        // [IKE_INTERMEDIATE], [CERTREQ]: sized once.
        let mut payloads = Vec::with_capacity(9);
        payloads.push(Payload::Sa(reply_sa));
        payloads.push(Payload::Ke(Ke {
            group: suite.dh.id(),
            data: public,
        }));
        payloads.push(Payload::Nonce(Nonce(nr.clone())));
        payloads.extend(glue::nat_notifies(spi_i, spi, dgram.local, dgram.remote));
        if frag {
            payloads.push(glue::fragmentation_supported());
        }
        payloads.push(glue::signature_hash_algorithms());
        if intermediate {
            payloads.push(glue::intermediate_supported());
            c.int_auth = Some(super::intermediate::IntAuth::default());
        }
        // §1.2 / §3.7: CERTREQ in the IKE_SA_INIT response. IKE_AUTH picks the profile by
        // IDi later, so name the CAs of every candidate that uses certificates.
        payloads.extend(auth::certreq(candidates.iter().map(|p| &p.auth)));
        let reply = Message {
            header: Header::new(spi_i, spi, ExchangeType::IkeSaInit, false, true, 0),
            payloads,
        };
        let bytes = reply.encode();
        ctx.out.push_back(crate::output::Output::Transmit(Transmit {
            local: c.local,
            remote: c.remote,
            bytes: bytes.clone(),
        }));
        c.cached = Some((0, vec![bytes.clone()]));
        let st = ExpectAuthRequest {
            suite,
            ni,
            nr,
            request: dgram.bytes.to_vec(),
            response: bytes,
            candidates,
            later: Vec::new(),
        };
        Ok(Self {
            c,
            state: ExpectIntermediateRequest::start(st),
        })
    }
}

/// Responder after IKE_SA_INIT: waiting for IKE_AUTH.
pub(crate) struct ExpectAuthRequest {
    pub(crate) suite: IkeProposal,
    pub(crate) ni: Vec<u8>,
    pub(crate) nr: Vec<u8>,
    /// The initiator's IKE_SA_INIT request (its RealMessage1).
    request: Vec<u8>,
    /// Our IKE_SA_INIT response (our RealMessage2).
    response: Vec<u8>,
    /// Profiles matching address and suite; IDi and the PSK pick one.
    candidates: Vec<Arc<PeerConfig>>,
    /// Child SAs our side asked for (by connection) while the peer sets this IKE SA up; they
    /// follow with CREATE_CHILD_SA once it is established, if IKE_AUTH matches that
    /// connection.
    later: Vec<(ConnId, ChildRequest)>,
}

impl ExpectAuthRequest {
    /// Asks for a Child SA of connection `conn` once the SA is up (see `later`).
    pub(crate) fn add_child(&mut self, conn: ConnId, req: ChildRequest) {
        if !self.later.contains(&(conn, req)) {
            self.later.push((conn, req));
        }
    }

    /// `bytes` is exactly the IKE_SA_INIT request this SA answered.
    pub(crate) fn is_original_request(&self, bytes: &[u8]) -> bool {
        self.request == bytes
    }

    /// Authenticates the initiator, answers with our AUTH and the first Child SA.
    // rustls: a handler consumes its boxed state, so a stale state cannot be reused.
    #[allow(clippy::boxed_local)]
    pub(crate) fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        id: u32,
        payloads: Vec<Payload>,
    ) -> Result<State, Error> {
        let Found {
            idi,
            idr,
            auth,
            sa,
            tsi,
            tsr,
            ..
        } = Found::of(&payloads);
        let idi = need(idi, "IDi")?;
        let auth = need(auth, "AUTH")?;
        let keys = c.keys.as_ref().ok_or(Error::Local("keys"))?;
        let prf = self.suite.prf;
        let octets = keys::signed_octets(prf, &self.request, &self.nr, &keys.sk_pi, &idi.to_vec());
        // RFC 9242 §3.3.2: IKE_AUTH_MID is this request's message ID.
        let octets = super::intermediate::with_int_auth(c, octets, id);
        c.prev_recv = None;
        let presented = auth::Presented::new(idi, &payloads, ctx.unix_time);
        // The first profile whose identity rules and PSK, key or certificate accept the
        // initiator.
        let (peer, serials) = self
            .candidates
            .iter()
            .filter(|p| p.remote_id.matches(idi))
            .filter(|p| idr.is_none_or(|r| *r == p.local_identity_at(c.local.ip())))
            .filter(|p| auth::method_matches(&p.auth, auth.method))
            .find_map(|p| {
                auth::verify(&p.auth, prf, &octets, auth, &presented)
                    .ok()
                    .map(|s| (p.clone(), s))
            })
            .ok_or(PeerMisbehaved::AuthenticationFailed)?;
        c.peer = peer;
        c.peer_serials = serials;
        c.peer_id = Some(idi.clone());
        let our_id = c.peer.local_identity_at(c.local.ip());
        let octets =
            keys::signed_octets(prf, &self.response, &self.ni, &keys.sk_pr, &our_id.to_vec());
        let octets = super::intermediate::with_int_auth(c, octets, id);
        c.int_auth = None;
        let our_auth = auth::build(&c.peer.auth, prf, &octets)?;
        let initial_contact = notifies(&payloads, NotifyType::InitialContact)
            .next()
            .is_some();
        c.lineage.authenticate(ctx);
        if initial_contact {
            c.lineage.initial_contact = Some(super::ContactBy::Peer);
            ctx.actions.push(SaAction::DeleteOthers {
                keep: c.local_spi(),
                conn: c.peer.id,
                peer_id: idi.clone(),
                born: c.lineage.born,
            });
        }
        let mut est = Established::new(c, ctx, self.suite);
        // Our own requests for this peer's Child SAs follow with CREATE_CHILD_SA (§1.3.1);
        // those of the first one `negotiate_child` below installs are dropped there.
        let conn = c.peer.id;
        est.queue.extend(
            self.later
                .iter()
                .filter(|(k, _)| *k == conn)
                .map(|(_, req)| Queued::CreateChild(*req)),
        );
        ctx.event(Event::PeerAuthenticated {
            session: c.session,
            conn: c.peer.id,
            peer_id: idi.clone(),
            remote: c.remote,
            local: c.local,
            initial_contact,
        });
        ctx.event(Event::IkeSaUp {
            session: c.session,
            conn: c.peer.id,
            local: c.local,
            remote: c.remote,
            initiator: false,
        });
        ctx.actions.push(SaAction::ResolveDuplicates {
            conn: c.peer.id,
            peer_id: idi.clone(),
        });
        // IDr, [CERT,] AUTH, MOBIKE, transport mode, SA, TSi, TSr: sized once.
        let mut reply = Vec::with_capacity(7);
        reply.push(Payload::IdR(our_id));
        reply.extend(our_auth);
        // RFC 4555 §3.1: answer the offer when the matched profile allows MOBIKE.
        c.mobike = c.peer.mobike
            && notifies(&payloads, NotifyType::MobikeSupported)
                .next()
                .is_some();
        if c.mobike {
            reply.push(Payload::Notify(Notify::new(
                NotifyType::MobikeSupported,
                Vec::new(),
            )));
        }
        // The first Child SA; its failure is reported with a notify but keeps the IKE SA.
        let child = match (sa, tsi, tsr) {
            (Some(sa), Some(tsi), Some(tsr)) => {
                let transport = notifies(&payloads, NotifyType::UseTransportMode)
                    .next()
                    .is_some();
                negotiate_child(c, ctx, sa, tsi, tsr, transport)
            }
            _ => Err(PeerMisbehaved::MissingPayload("SA/TS").into()),
        };
        match child {
            Ok(n) => {
                let ch = install_child(
                    c,
                    ctx,
                    ChildParams {
                        exchange_initiator: false,
                        spi_in: n.spi_in,
                        choice: n.choice,
                        g_ir: None,
                        ni: &self.ni,
                        nr: &self.nr,
                        addke: &[],
                        local_ts: n.tsr.clone(),
                        remote_ts: n.tsi.clone(),
                        mode: n.mode,
                        replaces: None,
                        request: ChildRequest {
                            index: n.index,
                            host_pair: None,
                        },
                    },
                );
                est.children.push(ch);
                if n.mode == Mode::Transport {
                    reply.push(Payload::Notify(Notify::new(
                        NotifyType::UseTransportMode,
                        Vec::new(),
                    )));
                }
                reply.push(Payload::Sa(n.reply_sa));
                reply.push(Payload::TsI(n.tsi));
                reply.push(Payload::TsR(n.tsr));
            }
            Err(e) => {
                tracing::warn!(error = %e, conn = ?c.peer.id, "first Child SA refused");
                // Counted like any rejection, though the IKE SA stays (§1.2); an IKE_AUTH
                // without a Child SA proposal is no rejection to count.
                if !matches!(e, Error::PeerMisbehaved(PeerMisbehaved::MissingPayload(_))) {
                    *ctx.stats.rejected.entry(e.reason()).or_default() += 1;
                }
                if let Reaction::Notify(ty, data) = e.reaction() {
                    reply.push(Payload::Notify(Notify::new(ty, data)));
                }
            }
        }
        c.send_response(ctx, ExchangeType::IkeAuth, id, &reply)?;
        Ok(State::Established(Box::new(est)))
    }
}

/// A Child SA the responder agreed to.
pub(crate) struct Negotiated {
    pub(crate) spi_in: u32,
    pub(crate) choice: proposal::EspChoice,
    pub(crate) reply_sa: crate::wire::Sa,
    pub(crate) tsi: Vec<TrafficSelector>,
    pub(crate) tsr: Vec<TrafficSelector>,
    pub(crate) mode: Mode,
    /// The configuration it was negotiated under.
    pub(crate) index: ChildConfigIndex,
}

/// The peer's proposed selectors narrowed to configuration `cfg` (§2.9: TSi is the
/// initiator's side, our remote; TSr ours), as (TSi, TSr); `None` when either is empty.
fn narrow_to(
    cfg: &ChildConfig,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Option<(Vec<TrafficSelector>, Vec<TrafficSelector>)> {
    let n_tsi = ts::narrow(tsi, &cfg.remote_ts);
    let n_tsr = ts::narrow(tsr, &cfg.local_ts);
    (!n_tsi.is_empty() && !n_tsr.is_empty()).then_some((n_tsi, n_tsr))
}

/// Which configuration a new Child SA (IKE_AUTH, or CREATE_CHILD_SA without REKEY_SA) is
/// negotiated under: the first, in index order, to whose selectors the peer's TSi/TSr narrow
/// to a non-empty set (§2.9), with the narrowed (TSi, TSr). A rekey (`fixed`) stays under its
/// old child's configuration (§2.8). None fitting is TS_UNACCEPTABLE.
pub(crate) fn select_child_config(
    peer: &PeerConfig,
    fixed: Option<ChildConfigIndex>,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Result<Selected, Error> {
    let found = match fixed {
        Some(index) => narrow_to(config_of(peer, index), tsi, tsr).map(|n| (index, n)),
        None => peer
            .child_configs()
            .find_map(|(index, cfg)| narrow_to(cfg, tsi, tsr).map(|n| (index, n))),
    };
    let (index, (tsi, tsr)) = found.ok_or(PeerIncompatible::TsUnacceptable)?;
    Ok(Selected { index, tsi, tsr })
}

/// A configuration chosen by [`select_child_config`] and the selectors narrowed to it.
pub(crate) struct Selected {
    pub(crate) index: ChildConfigIndex,
    pub(crate) tsi: Vec<TrafficSelector>,
    pub(crate) tsr: Vec<TrafficSelector>,
}

/// Responder side of a Child SA negotiation (IKE_AUTH without PFS, §1.2; CREATE_CHILD_SA
/// passes its PFS group through [`negotiate_child_pfs`]).
pub(crate) fn negotiate_child(
    c: &Common,
    ctx: &mut Ctx<'_>,
    sa: &crate::wire::Sa,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
    transport: bool,
) -> Result<Negotiated, Error> {
    let sel = select_child_config(&c.peer, None, tsi, tsr)?;
    negotiate_child_pfs(
        c,
        ctx,
        sa,
        sel,
        transport,
        None,
        crate::transform::AddKes::NONE,
    )
}

/// Responder side of a Child SA negotiation under a selected configuration, with an optional
/// PFS group: that configuration's proposals and mode apply.
pub(crate) fn negotiate_child_pfs(
    c: &Common,
    ctx: &mut Ctx<'_>,
    sa: &crate::wire::Sa,
    sel: Selected,
    transport: bool,
    dh: Option<crate::transform::DhGroup>,
    addke: crate::transform::AddKes,
) -> Result<Negotiated, Error> {
    let child = config_of(&c.peer, sel.index);
    let spi_in = ctx.spi32();
    let (choice, reply_sa) = proposal::select_esp(
        sa,
        &esp_usable(&c.peer, child),
        dh,
        addke,
        c.peer.allow_legacy,
        spi_in,
    )?;
    // §1.3.1: transport mode only when both ask for it; a tunnel-mode profile answers a
    // transport request with a tunnel SA, a transport profile refuses tunnel mode.
    let mode = match (transport, child.mode) {
        (true, Mode::Transport) => Mode::Transport,
        (false, Mode::Transport) => return Err(PeerIncompatible::NoProposalChosen.into()),
        (_, Mode::Tunnel) => Mode::Tunnel,
    };
    Ok(Negotiated {
        spi_in,
        choice,
        reply_sa,
        tsi: sel.tsi,
        tsr: sel.tsr,
        mode,
        index: sel.index,
    })
}
