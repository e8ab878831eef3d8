//! Initiator handshake states: IKE_SA_INIT (with COOKIE and INVALID_KE_PAYLOAD retries,
//! RFC 7296 §1.2, §2.6) and IKE_AUTH with PSK (§2.15) carrying the first Child SA.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::ChildConfig;
use crate::config::Mode;
use crate::config::PeerConfig;
use crate::config::RemoteAddr;
use crate::crypto::KeyExchange;
use crate::error::Error;
use crate::error::PeerIncompatible;
use crate::error::PeerMisbehaved;
use crate::keys;
use crate::output::Event;
use crate::output::SessionId;
use crate::proposal;
use crate::sa::Common;
use crate::sa::Ctx;
use crate::sa::Found;
use crate::sa::IkeSa;
use crate::sa::NATT_PORT;
use crate::sa::State;
use crate::sa::auth;
use crate::sa::child::ChildRequest;
use crate::sa::child::config_of;
use crate::sa::error_notify;
use crate::sa::established::ChildParams;
use crate::sa::established::Established;
use crate::sa::established::Queued;
use crate::sa::established::install_child;
use crate::sa::glue;
use crate::sa::intermediate::ExpectIntermediateResponse;
use crate::sa::later;
use crate::sa::need;
use crate::sa::timers::Timer;
use crate::sa::timers::TimerTable;
use crate::transform::DhGroup;
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

/// Cookie round trips we follow before giving up (§2.6 does not bound them; we do).
const MAX_COOKIE_RETRIES: u8 = 3;

/// Waiting for the IKE_SA_INIT response.
pub(crate) struct ExpectSaInitResponse {
    ke: KeyExchange,
    nonce: Vec<u8>,
    cookie: Option<Vec<u8>>,
    cookie_retries: u8,
    ke_retried: bool,
    /// Our request as last sent: the initiator's RealMessage1 for AUTH (§2.15).
    request: Vec<u8>,
    /// What the Child SA of IKE_AUTH is for, and the rest asked for meanwhile.
    children: PendingChildren,
}

/// The Child SAs an initiator's handshake was asked for: the one IKE_AUTH carries (§1.2)
/// with the (TSi, TSr) it proposes, and those asked for while the IKE SA is being set up,
/// negotiated with CREATE_CHILD_SA once it is established (§1.3.1).
pub(crate) struct PendingChildren {
    pub(crate) first: ChildRequest,
    pub(crate) first_ts: (Vec<TrafficSelector>, Vec<TrafficSelector>),
    pub(crate) later: Vec<ChildRequest>,
}

impl PendingChildren {
    /// Asks for another Child SA; one already asked for is not asked again.
    pub(crate) fn add(&mut self, req: ChildRequest) {
        if req != self.first && !self.later.contains(&req) {
            self.later.push(req);
        }
    }
}

impl IkeSa {
    /// Starts an IKE SA as initiator: sends IKE_SA_INIT to the profile's peer or, with `to`,
    /// to that address (port 500), which the profile's remote must admit
    /// ([`crate::Command::InitiateTo`]).
    pub(crate) fn initiate(
        ctx: &mut Ctx<'_>,
        peer: Arc<PeerConfig>,
        spi: u64,
        session: SessionId,
        first: ChildRequest,
        to: Option<std::net::IpAddr>,
    ) -> Result<Self, Error> {
        let remote = match (peer.remote, to) {
            (RemoteAddr::Host(remote), None) => remote,
            (RemoteAddr::Host(remote), Some(ip)) if remote.ip() == ip => remote,
            (r, Some(ip)) if !matches!(r, RemoteAddr::Host(_)) && r.matches(ip) => {
                std::net::SocketAddr::new(ip, 500)
            }
            (_, Some(_)) => return Err(Error::Local("address outside the connection's remote")),
            (_, None) => return Err(Error::Local("connection is responder-only")),
        };
        // A profile bound to the unspecified address (a responder listening on every
        // address) leaves from the host the Child SA is for.
        let mut local = peer.local;
        if let (true, Some((ours, _))) = (local.ip().is_unspecified(), first.host_pair) {
            local.set_ip(ours);
        }
        let first_ts = first.proposal(&peer).ok_or(Error::Local(
            "no such child configuration, or hosts outside it",
        ))?;
        // §1.2: guess the KE group of our most preferred (usable) suite.
        let group = usable(&peer)
            .first()
            .ok_or(Error::Local("no usable IKE proposals"))?
            .dh;
        let ke = KeyExchange::generate(group, ctx.rng)?;
        let nonce = ctx.nonce();
        let mut c = Common {
            local,
            peer,
            session,
            spi_i: spi,
            spi_r: 0,
            initiator: true,
            remote,
            nat_local: false,
            nat_remote: false,
            frag: false,
            mobike: false,
            mobike_initiator: false,
            keys: None,
            peer_id: None,
            peer_serials: None,
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
            lineage: super::Lineage::new(ctx),
        };
        let mut st = ExpectSaInitResponse {
            ke,
            nonce,
            cookie: None,
            cookie_retries: 0,
            ke_retried: false,
            request: Vec::new(),
            children: PendingChildren {
                first,
                first_ts,
                later: Vec::new(),
            },
        };
        st.send(&mut c, ctx);
        Ok(Self {
            c,
            state: State::ExpectSaInitResponse(Box::new(st)),
        })
    }
}

impl ExpectSaInitResponse {
    pub(crate) fn children(&mut self) -> &mut PendingChildren {
        &mut self.children
    }

    fn send(&mut self, c: &mut Common, ctx: &mut Ctx<'_>) {
        // [COOKIE,] SA, KE, Ni, two NAT_DETECTION, fragmentation, signature hashes,
        // [IKE_INTERMEDIATE]: sized once.
        let mut payloads = Vec::with_capacity(9);
        if let Some(cookie) = &self.cookie {
            // §2.6: the COOKIE notify MUST be the first payload.
            payloads.push(Payload::Notify(Notify::new(
                NotifyType::Cookie,
                cookie.clone(),
            )));
        }
        let offer = proposal::ike_offer(&usable(&c.peer), &[]);
        payloads.push(Payload::Sa(offer));
        payloads.push(Payload::Ke(Ke {
            group: self.ke.group().id(),
            data: self.ke.public().to_vec(),
        }));
        payloads.push(Payload::Nonce(Nonce(self.nonce.clone())));
        payloads.extend(glue::nat_notifies(c.spi_i, 0, c.local, c.remote));
        payloads.push(glue::fragmentation_supported());
        payloads.push(glue::signature_hash_algorithms());
        if offers_intermediate(&c.peer) {
            payloads.push(glue::intermediate_supported());
        }
        let msg = Message {
            header: Header::new(c.spi_i, 0, ExchangeType::IkeSaInit, true, false, 0),
            payloads,
        };
        self.request = c.send_plain_request(ctx, &msg);
    }

    /// Handles the IKE_SA_INIT response (unprotected).
    pub(crate) fn handle(
        mut self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        msg: Message,
    ) -> Result<State, Error> {
        // §2.6: a COOKIE answer means "repeat the request with this cookie first".
        if let Some(n) = msg.notifies(NotifyType::Cookie).next() {
            if self.cookie_retries >= MAX_COOKIE_RETRIES || n.data.is_empty() || n.data.len() > 64 {
                return Err(PeerIncompatible::PeerRejected(NotifyType::Cookie).into());
            }
            self.cookie_retries += 1;
            self.cookie = Some(n.data.clone());
            self.send(c, ctx);
            return Ok(State::ExpectSaInitResponse(self));
        }
        // §1.2: INVALID_KE_PAYLOAD names the group the responder wants; retry once with it
        // if we proposed it.
        if let Some(n) = msg.notifies(NotifyType::InvalidKePayload).next() {
            let wanted = <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(u16::from_be_bytes)
                .and_then(DhGroup::from_id);
            let ok = wanted.filter(|g| {
                !self.ke_retried
                    && *g != self.ke.group()
                    && usable(&c.peer).iter().any(|p| p.dh == *g)
            });
            let Some(group) = ok else {
                return Err(PeerIncompatible::PeerRejected(NotifyType::InvalidKePayload).into());
            };
            tracing::debug!(?group, "responder asked for another KE group; retrying");
            self.ke = KeyExchange::generate(group, ctx.rng)?;
            self.ke_retried = true;
            self.send(c, ctx);
            return Ok(State::ExpectSaInitResponse(self));
        }
        if let Some(ty) = error_notify(&msg.payloads) {
            return Err(PeerIncompatible::PeerRejected(ty).into());
        }
        let f = Found::of(&msg.payloads);
        let sa = need(f.sa, "SA")?;
        let ke = need(f.ke, "KE")?;
        let nr = need(f.nonce, "Nr")?.to_vec();
        let (suite, _) = proposal::accept_ike(sa, &usable(&c.peer))?;
        if ke.group != self.ke.group().id() || suite.dh != self.ke.group() {
            return Err(PeerMisbehaved::KeGroupMismatch.into());
        }
        if msg.header.spi_r == 0 {
            return Err(PeerMisbehaved::MissingPayload("SPIr").into());
        }
        c.spi_r = msg.header.spi_r;
        let g_ir = self
            .ke
            .agree(&ke.data)
            .map_err(|_| PeerMisbehaved::BadKeData)?;
        let keys = keys::derive_ike_keys(
            glue::suite(&suite),
            &self.nonce,
            &nr,
            &g_ir,
            c.spi_i,
            c.spi_r,
        );
        c.keys = Some(glue::sa_keys(suite, keys, true)?);
        c.frag = msg
            .notifies(NotifyType::Ikev2FragmentationSupported)
            .next()
            .is_some();
        c.request_done();
        // §2.23: NAT detection, then float to port 4500 for everything after IKE_SA_INIT.
        if let Some((peer_nat, our_nat)) =
            glue::nat_detect(&msg.payloads, c.spi_i, c.spi_r, c.remote, c.local)
        {
            c.nat_remote = peer_nat;
            c.nat_local = our_nat;
            // RFC 4555 §3.3: offering MOBIKE to a peer that does NAT-T (it sent NAT
            // detection), we change to port 4500 even without a NAT, so that a later path
            // through one needs no port change. ESP stays unencapsulated unless a NAT is seen.
            if peer_nat || our_nat || c.peer.mobike {
                c.local.set_port(NATT_PORT);
                c.remote.set_port(NATT_PORT);
                if our_nat {
                    let at = later(ctx.now, ctx.config.nat_keepalive);
                    c.timers.set(Timer::NatKeepalive, at);
                }
            }
        }
        let wants_addke = !suite.addke.is_empty();
        if wants_addke {
            tracing::info!(conn = ?c.peer.id, addke = ?suite.addke, "additional key exchanges negotiated");
        } else if usable(&c.peer).iter().any(|p| !p.addke.is_empty()) {
            // RFC 9370 §2.2.1: the responder chose a suite without them (ours allowed it).
            tracing::warn!(
                conn = ?c.peer.id,
                "IKE SA without additional key exchanges: the responder chose a classic suite"
            );
        }
        // RFC 9242 §3.1: IKE_INTERMEDIATE needs the notify from both sides; RFC 9370 §2.2.1:
        // additional key exchanges need IKE_INTERMEDIATE.
        if offers_intermediate(&c.peer)
            && msg
                .notifies(NotifyType::IntermediateExchangeSupported)
                .next()
                .is_some()
        {
            c.int_auth = Some(super::intermediate::IntAuth::default());
        } else if wants_addke {
            return Err(PeerMisbehaved::AddKeWithoutIntermediate.into());
        }
        let hs = AuthStart {
            suite,
            ni: self.nonce,
            nr,
            request: self.request,
            response: raw.to_vec(),
            children: self.children,
        };
        ExpectIntermediateResponse::start(c, ctx, hs)
    }
}

/// What IKE_AUTH needs from IKE_SA_INIT, carried through any IKE_INTERMEDIATE exchanges.
pub(crate) struct AuthStart {
    pub(crate) suite: crate::config::IkeProposal,
    pub(crate) ni: Vec<u8>,
    pub(crate) nr: Vec<u8>,
    /// Our IKE_SA_INIT request as last sent: the initiator's RealMessage1 (§2.15).
    pub(crate) request: Vec<u8>,
    /// The responder's IKE_SA_INIT message: its RealMessage2.
    pub(crate) response: Vec<u8>,
    pub(crate) children: PendingChildren,
}

/// Sends IKE_AUTH (§1.2) with the first Child SA; AUTH covers the IKE_INTERMEDIATE messages
/// too when there were any (RFC 9242 §3.3.2).
pub(crate) fn send_auth(c: &mut Common, ctx: &mut Ctx<'_>, hs: AuthStart) -> Result<State, Error> {
    let AuthStart {
        suite,
        ni,
        nr,
        request,
        response,
        children,
    } = hs;
    let id = c.peer.local_identity_at(c.local.ip());
    let id_body = id.to_vec();
    let keys = c.keys.as_ref().ok_or(Error::Local("keys"))?;
    let prf = suite.prf;
    let auth_mid = c.next_req;
    let octets = keys::signed_octets(prf, &request, &nr, &keys.sk_pi, &id_body);
    let octets = super::intermediate::with_int_auth(c, octets, auth_mid);
    let auth = auth::build_auth(&c.peer.auth, prf, &octets)?;
    let child = config_of(&c.peer, children.first.index);
    let spi_in = ctx.spi32();
    // §1.2: IDi, [CERT,] [CERTREQ,] [IDr,] AUTH.
    // IDi, INITIAL_CONTACT, IDr, AUTH, MOBIKE, transport mode, SA, TSi, TSr, sized once
    // (certificates and CERTREQs grow it).
    let mut payloads = Vec::with_capacity(9);
    payloads.push(Payload::IdI(id));
    payloads.extend(auth::cert_payloads(&c.peer.auth));
    payloads.extend(auth::certreq([&c.peer.auth]));
    // §2.4: INITIAL_CONTACT tells the responder to drop state from our earlier life, so
    // only when no other IKE SA of ours joins the same identities (strongSwan deletes
    // every IKE SA between the two identities on it, whatever their addresses).
    if !ctx.has_contact {
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::InitialContact,
            Vec::new(),
        )));
        c.lineage.initial_contact = Some(super::ContactBy::Us);
    }
    if let crate::config::IdMatch::Exact(r) = &c.peer.remote_id {
        payloads.push(Payload::IdR(r.clone()));
    }
    payloads.push(auth);
    // RFC 4555 §3.1: MOBIKE is offered in IKE_AUTH, by both sides.
    if c.peer.mobike {
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::MobikeSupported,
            Vec::new(),
        )));
    }
    if child.mode == Mode::Transport {
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::UseTransportMode,
            Vec::new(),
        )));
    }
    payloads.push(Payload::Sa(proposal::esp_offer(
        &esp_usable(&c.peer, child),
        None,
        crate::transform::AddKes::NONE,
        spi_in,
    )));
    // §2.9: the configuration's selectors, or exactly the two hosts of a per-host child.
    let (tsi, tsr) = &children.first_ts;
    payloads.push(Payload::TsI(tsi.clone()));
    payloads.push(Payload::TsR(tsr.clone()));
    c.send_request(ctx, ExchangeType::IkeAuth, &payloads)?;
    Ok(State::ExpectAuthResponse(Box::new(ExpectAuthResponse {
        suite,
        ni,
        nr,
        response,
        auth_mid,
        spi_in,
        children,
    })))
}

/// Waiting for the IKE_AUTH response.
pub(crate) struct ExpectAuthResponse {
    suite: crate::config::IkeProposal,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// The responder's IKE_SA_INIT message: its RealMessage2 (§2.15).
    response: Vec<u8>,
    /// Message ID of our IKE_AUTH request (IKE_AUTH_MID of RFC 9242 §3.3.2).
    auth_mid: u32,
    spi_in: u32,
    children: PendingChildren,
}

impl ExpectAuthResponse {
    pub(crate) fn children(&mut self) -> &mut PendingChildren {
        &mut self.children
    }

    /// Verifies the responder's AUTH and installs the first Child SA.
    // rustls: a handler consumes its boxed state, so a stale state cannot be reused.
    #[allow(clippy::boxed_local)]
    pub(crate) fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
    ) -> Result<State, Error> {
        let Found {
            idr,
            auth,
            sa,
            tsi,
            tsr,
            ..
        } = Found::of(&payloads);
        let (Some(idr), Some(auth)) = (idr, auth) else {
            // §2.21.2: an IKE_AUTH response without AUTH carries the reason as an error.
            let ty = error_notify(&payloads).unwrap_or(NotifyType::AuthenticationFailed);
            return Err(PeerIncompatible::PeerRejected(ty).into());
        };
        if !c.peer.remote_id.matches(idr) {
            return Err(PeerMisbehaved::IdentityMismatch.into());
        }
        let keys = c.keys.as_ref().ok_or(Error::Local("keys"))?;
        let prf = self.suite.prf;
        let octets = keys::signed_octets(prf, &self.response, &self.ni, &keys.sk_pr, &idr.to_vec());
        let octets = super::intermediate::with_int_auth(c, octets, self.auth_mid);
        c.int_auth = None;
        let presented = auth::Presented::new(idr, &payloads, ctx.unix_time);
        c.peer_serials = auth::verify(&c.peer.auth, prf, &octets, auth, &presented)?;
        c.peer_id = Some(idr.clone());
        c.mobike = c.peer.mobike
            && notifies(&payloads, NotifyType::MobikeSupported)
                .next()
                .is_some();
        c.mobike_initiator = c.mobike;
        c.lineage.authenticate(ctx);
        let mut est = Established::new(c, ctx, self.suite);
        ctx.event(Event::PeerAuthenticated {
            session: c.session,
            conn: c.peer.id,
            peer_id: idr.clone(),
            remote: c.remote,
            local: c.local,
            initial_contact: false,
        });
        ctx.event(Event::IkeSaUp {
            session: c.session,
            conn: c.peer.id,
            local: c.local,
            remote: c.remote,
            initiator: true,
        });
        ctx.actions.push(super::SaAction::ResolveDuplicates {
            conn: c.peer.id,
            peer_id: idr.clone(),
        });
        // Child SAs asked for during the handshake follow with CREATE_CHILD_SA (§1.3.1).
        est.queue.extend(
            self.children
                .later
                .iter()
                .map(|req| Queued::CreateChild(*req)),
        );
        // The first Child SA (§1.2). Its failure leaves the IKE SA up (§2.21.2 / RFC 6023).
        if let Some(ty) = error_notify(&payloads) {
            tracing::warn!(?ty, conn = ?c.peer.id, "first Child SA refused by the responder");
            return Ok(State::Established(Box::new(est)));
        }
        let req = self.children.first;
        let child = config_of(&c.peer, req.index);
        let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            return Ok(State::Established(Box::new(est)));
        };
        // A Child SA we cannot accept does not void the authenticated IKE SA: the responder
        // has installed it, so delete it with the peer (§1.4.1) and keep the IKE SA.
        let (offered_i, offered_r) = &self.children.first_ts;
        let checked = proposal::accept_esp(
            sa,
            &esp_usable(&c.peer, child),
            None,
            crate::transform::AddKes::NONE,
        )
        .and_then(|choice| check_answer_ts(tsi, tsr, offered_i, offered_r).map(|()| choice));
        let choice = match checked {
            Ok(choice) => choice,
            Err(e) => {
                tracing::warn!(error = %e, conn = ?c.peer.id, "first Child SA rejected");
                ctx.stats
                    .rejected
                    .entry(Error::from(e).reason())
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                est.queue.push_back(Queued::DeleteSpis(vec![self.spi_in]));
                return Ok(State::Established(Box::new(est)));
            }
        };
        let transport = notifies(&payloads, NotifyType::UseTransportMode)
            .next()
            .is_some();
        let mode = if transport && child.mode == Mode::Transport {
            Mode::Transport
        } else {
            Mode::Tunnel
        };
        let ch = install_child(
            c,
            ctx,
            ChildParams {
                exchange_initiator: true,
                spi_in: self.spi_in,
                choice,
                g_ir: None,
                ni: &self.ni,
                nr: &self.nr,
                addke: &[],
                local_ts: tsi.to_vec(),
                remote_ts: tsr.to_vec(),
                mode,
                replaces: None,
                request: req,
            },
        );
        est.children.push(ch);
        Ok(State::Established(Box::new(est)))
    }
}

/// We announce IKE_INTERMEDIATE (RFC 9242 §3.1) when a suite of ours has additional key
/// exchanges, the one use we have for it.
pub(crate) fn offers_intermediate(peer: &PeerConfig) -> bool {
    usable(peer).iter().any(|p| !p.addke.is_empty())
}

/// Our IKE proposals, minus legacy ones unless allowed: the configured list itself, copied
/// only when it has legacy suites to leave out (it is consulted several times per
/// handshake).
pub(crate) fn usable(peer: &PeerConfig) -> Cow<'_, [crate::config::IkeProposal]> {
    let keep = |p: &crate::config::IkeProposal| peer.allow_legacy || !p.is_legacy();
    if peer.ike_proposals.iter().all(keep) {
        return Cow::Borrowed(&peer.ike_proposals);
    }
    Cow::Owned(peer.ike_proposals.iter().copied().filter(keep).collect())
}

/// The initiator's check of a Child SA answer (IKE_AUTH or CREATE_CHILD_SA response): the
/// responder narrows to a subset of what we offered (§2.9), and to some traffic (§3.13).
pub(crate) fn check_answer_ts(
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
    offered_i: &[TrafficSelector],
    offered_r: &[TrafficSelector],
) -> Result<(), PeerMisbehaved> {
    if tsi.is_empty() || tsr.is_empty() {
        return Err(PeerMisbehaved::EmptyTrafficSelectors);
    }
    if !ts::is_subset(tsi, offered_i) || !ts::is_subset(tsr, offered_r) {
        return Err(PeerMisbehaved::TsOutsideOffer);
    }
    Ok(())
}

/// ESP proposals of Child SA configuration `child`, minus legacy ones unless the profile
/// allows them.
pub(crate) fn esp_usable<'a>(
    peer: &PeerConfig,
    child: &'a ChildConfig,
) -> Cow<'a, [crate::config::EspProposal]> {
    let keep = |p: &crate::config::EspProposal| peer.allow_legacy || !p.is_legacy();
    if child.esp_proposals.iter().all(keep) {
        return Cow::Borrowed(&child.esp_proposals);
    }
    Cow::Owned(child.esp_proposals.iter().copied().filter(keep).collect())
}
