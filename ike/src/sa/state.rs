//! The IKE SA state machine's one dispatch point: [`step`] takes the state by value, matches it
//! with the input (a handshake message, an authenticated request or response, a timer, a
//! command) and returns the next state. Every change of [`State`] happens here or in the
//! handlers it calls, which return the next state (rustls's `handle(self: Box<Self>, ..)`);
//! [`super::IkeSa::dispatch`] is the only caller.
//!
//! Before a message gets here, [`super::IkeSa::handle_datagram`] has done what no state
//! decides: header and message-ID checks, SK authentication (so unauthenticated packets never
//! reach a state), replay of the cached response to a retransmitted request (RFC 7296 §2.1)
//! and following a NAT mapping (§2.23).

use crate::error::Error;
use crate::error::PeerIncompatible;
use crate::error::PeerMisbehaved;
use crate::output::ChildSaId;
use crate::output::DownReason;
use crate::output::Event;
use crate::output::Output;
use crate::sa::Common;
use crate::sa::Ctx;
use crate::sa::child::ChildRequest;
use crate::sa::established::Established;
use crate::sa::established::Queued;
use crate::sa::initiator::ExpectAuthResponse;
use crate::sa::initiator::ExpectSaInitResponse;
use crate::sa::intermediate::ExpectIntermediateRequest;
use crate::sa::intermediate::ExpectIntermediateResponse;
use crate::sa::later;
use crate::sa::responder::ExpectAuthRequest;
use crate::sa::timers::Timer;
use crate::wire::Message;
use crate::wire::Notify;
use crate::wire::Payload;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::NotifyType;

/// The state machine position of an IKE SA, named for what it waits for.
pub(crate) enum State {
    ExpectSaInitResponse(Box<ExpectSaInitResponse>),
    /// RFC 9242 / RFC 9370: an IKE_INTERMEDIATE request with an additional key exchange sent.
    ExpectIntermediateResponse(Box<ExpectIntermediateResponse>),
    ExpectAuthResponse(Box<ExpectAuthResponse>),
    /// IKE_SA_INIT answered with additional key exchanges still to run.
    ExpectIntermediateRequest(Box<ExpectIntermediateRequest>),
    ExpectAuthRequest(Box<ExpectAuthRequest>),
    Established(Box<Established>),
    Closed,
}

/// What an IKE SA reacts to.
pub(crate) enum Input<'a> {
    /// The unprotected IKE_SA_INIT response to our request (initiator).
    SaInitResponse { raw: &'a [u8], msg: Message },
    /// The authenticated response to our outstanding request.
    Response {
        exchange: ExchangeType,
        payloads: Vec<Payload>,
    },
    /// An authenticated request with the message ID we expected.
    Request {
        exchange: ExchangeType,
        id: u32,
        payloads: Vec<Payload>,
    },
    /// The driver's clock passed one of this SA's deadlines.
    Timeout,
    /// INITIAL_CONTACT on a newer SA of the same peer (RFC 7296 §2.4): go without a message.
    DropSilently,
    /// From the application (or another SA).
    Command(SaCommand),
}

/// Commands; all but `Terminate` act on an established SA only.
pub(crate) enum SaCommand {
    /// Delete the IKE SA with the peer (or just drop it before it is established).
    Terminate,
    /// Create the profile's Child SA on this IKE SA (CREATE_CHILD_SA, §1.3.1).
    CreateChild,
    /// Create the Child SA of this configuration and host pair of connection `conn`, unless
    /// one exists or is under way: CREATE_CHILD_SA once established, queued during the
    /// handshake (§1.3.1).
    InitiateChild {
        conn: crate::config::ConnId,
        req: ChildRequest,
    },
    /// Rekey a child now.
    RekeyChild(ChildSaId),
    /// The kernel hard-expired (or refused to install) a child: delete it with the peer.
    ChildExpired(ChildSaId),
    /// Rekey the IKE SA now.
    RekeyIke,
    /// Liveness check now.
    Dpd,
    /// Move to this local address (MOBIKE, RFC 4555 §3.5).
    MoveLocal(std::net::IpAddr),
    /// The kernel saw the peer's ESP-in-UDP for this inbound SPI come from `remote`.
    NatMapping {
        inbound_spi: u32,
        remote: std::net::SocketAddr,
    },
}

/// The transition function.
pub(crate) fn step(
    state: State,
    c: &mut Common,
    ctx: &mut Ctx<'_>,
    input: Input<'_>,
) -> (State, Result<(), Error>) {
    match (state, input) {
        (State::ExpectSaInitResponse(st), Input::SaInitResponse { raw, msg }) => {
            c.last_heard = ctx.now;
            match st.handle(c, ctx, raw, msg) {
                Ok(next) => (next, Ok(())),
                Err(e) => (fail(c, ctx, &e), Err(e)),
            }
        }
        (state, Input::SaInitResponse { msg, .. }) => {
            let e = PeerMisbehaved::UnexpectedExchange(msg.header.exchange.to_raw());
            (state, Err(e.into()))
        }
        (
            State::ExpectAuthResponse(st),
            Input::Response {
                exchange: ExchangeType::IkeAuth,
                payloads,
            },
        ) => {
            c.request_done();
            match st.handle(c, ctx, payloads) {
                Ok(next) => (pump(next, c, ctx), Ok(())),
                Err(e) => (fail(c, ctx, &e), Err(e)),
            }
        }
        (
            State::ExpectIntermediateResponse(st),
            Input::Response {
                exchange: ExchangeType::IkeIntermediate,
                payloads,
            },
        ) => {
            c.request_done();
            match st.handle(c, ctx, payloads) {
                Ok(next) => (next, Ok(())),
                Err(e) => (fail(c, ctx, &e), Err(e)),
            }
        }
        (State::Established(mut est), Input::Response { exchange, payloads }) => {
            c.request_done();
            let res = est.handle_response(c, ctx, exchange, payloads);
            (pump(State::Established(est), c, ctx), res)
        }
        (state, Input::Response { exchange, .. }) => {
            let e = PeerMisbehaved::UnexpectedExchange(exchange.to_raw());
            (state, Err(e.into()))
        }
        (
            State::ExpectAuthRequest(st),
            Input::Request {
                exchange: exchange @ ExchangeType::IkeAuth,
                id,
                payloads,
            },
        ) => match st.handle(c, ctx, id, payloads) {
            Ok(next) => {
                c.timers.stop(Timer::HalfOpen);
                // Child SAs we asked for meanwhile go out now.
                (pump(next, c, ctx), Ok(()))
            }
            Err(e) => {
                // §2.21.2: IKE_AUTH errors are answered protected, then the SA goes.
                c.answer_error(ctx, exchange, id, &e);
                (fail(c, ctx, &e), Err(e))
            }
        },
        (
            State::ExpectIntermediateRequest(st),
            Input::Request {
                exchange: exchange @ ExchangeType::IkeIntermediate,
                id,
                payloads,
            },
        ) => match st.handle(c, ctx, id, payloads) {
            Ok(next) => (next, Ok(())),
            Err(e) => {
                // RFC 9242 §3.4: IKE_INTERMEDIATE is protected like IKE_AUTH; its errors are
                // answered protected, then the SA goes.
                c.answer_error(ctx, exchange, id, &e);
                (fail(c, ctx, &e), Err(e))
            }
        },
        (
            State::Established(mut est),
            Input::Request {
                exchange,
                id,
                payloads,
            },
        ) => {
            let res = est.handle_request(c, ctx, exchange, id, &payloads);
            if let Err(e) = &res {
                c.answer_error(ctx, exchange, id, e);
            }
            (pump(State::Established(est), c, ctx), res)
        }
        (state, Input::Request { exchange, id, .. }) => {
            let e: Error = PeerMisbehaved::UnexpectedExchange(exchange.to_raw()).into();
            // Keep the state: an out-of-place request does not end the SA.
            c.answer_error(ctx, exchange, id, &e);
            (state, Err(e))
        }
        (state, Input::Timeout) => (timeout(state, c, ctx), Ok(())),
        (state, Input::DropSilently) => (close(state, c, ctx, DownReason::Replaced), Ok(())),
        (State::Established(mut est), Input::Command(cmd)) => {
            match cmd {
                SaCommand::Terminate => est.queue.push_back(Queued::DeleteIke),
                SaCommand::CreateChild => {
                    let q = Queued::CreateChild(ChildRequest::default());
                    if !est.queue.contains(&q) {
                        est.queue.push_back(q);
                    }
                }
                SaCommand::InitiateChild { req, .. } => {
                    if !est.rekeyed {
                        est.request_child(c, req);
                    }
                }
                SaCommand::RekeyChild(child) => est.queue_rekey_child(child),
                SaCommand::ChildExpired(child) => est.expire_child(c, ctx, child),
                SaCommand::RekeyIke => est.queue.push_back(Queued::RekeyIke),
                SaCommand::Dpd => est.queue.push_back(Queued::Dpd),
                SaCommand::MoveLocal(ip) => {
                    // Everything we send from now on leaves from the new address, a request
                    // in flight included (its retransmissions); the update goes first so the
                    // peer learns the path before any other exchange needs it.
                    c.local.set_ip(ip);
                    est.queue.retain(|q| *q != Queued::UpdateAddresses);
                    est.queue.push_front(Queued::UpdateAddresses);
                }
                SaCommand::NatMapping {
                    inbound_spi,
                    remote,
                } => est.nat_mapping(c, ctx, inbound_spi, remote),
            }
            (pump(State::Established(est), c, ctx), Ok(()))
        }
        (state, Input::Command(SaCommand::Terminate)) => {
            (close(state, c, ctx, DownReason::Local), Ok(()))
        }
        // During the handshake a Child SA request waits for the IKE SA (§1.3.1: CREATE_CHILD_SA
        // needs an established one); the one IKE_AUTH carries is not asked for twice.
        (
            State::ExpectSaInitResponse(mut st),
            Input::Command(SaCommand::InitiateChild { req, .. }),
        ) => {
            st.children().add(req);
            (State::ExpectSaInitResponse(st), Ok(()))
        }
        (
            State::ExpectIntermediateResponse(mut st),
            Input::Command(SaCommand::InitiateChild { req, .. }),
        ) => {
            st.children().add(req);
            (State::ExpectIntermediateResponse(st), Ok(()))
        }
        (
            State::ExpectIntermediateRequest(mut st),
            Input::Command(SaCommand::InitiateChild { conn, req }),
        ) => {
            st.add_child(conn, req);
            (State::ExpectIntermediateRequest(st), Ok(()))
        }
        (
            State::ExpectAuthResponse(mut st),
            Input::Command(SaCommand::InitiateChild { req, .. }),
        ) => {
            st.children().add(req);
            (State::ExpectAuthResponse(st), Ok(()))
        }
        (
            State::ExpectAuthRequest(mut st),
            Input::Command(SaCommand::InitiateChild { conn, req }),
        ) => {
            st.add_child(conn, req);
            (State::ExpectAuthRequest(st), Ok(()))
        }
        (state, Input::Command(_)) => (state, Ok(())),
    }
}

/// Starts the next queued request when the window is free.
fn pump(mut state: State, c: &mut Common, ctx: &mut Ctx<'_>) -> State {
    if let State::Established(est) = &mut state {
        est.pump(c, ctx);
        if c.closed {
            return State::Closed;
        }
    }
    state
}

/// Runs due timers.
fn timeout(mut state: State, c: &mut Common, ctx: &mut Ctx<'_>) -> State {
    let now = ctx.now;
    if c.timers.is_expired(Timer::HalfOpen, now) {
        tracing::debug!(spi = c.local_spi(), "half-open IKE SA timed out");
        c.closed = true;
        return State::Closed;
    }
    if c.timers.is_expired(Timer::Retransmit, now) {
        if let Some(out) = &mut c.outstanding {
            let (tries, _) = out.schedule.after(&ctx.config.retransmit, out.sends);
            if out.sends >= tries {
                return dead(state, c, ctx);
            }
            // RFC 7296 §2.1: retransmit (exponential back-off, or a liveness check's fixed
            // spacing, see `config::Dpd`).
            out.sends += 1;
            let (_, wait) = out.schedule.after(&ctx.config.retransmit, out.sends);
            let packets = out.packets.clone();
            let at = later(now, wait);
            c.timers.set(Timer::Retransmit, at);
            ctx.stats.retransmits += 1;
            c.transmit(ctx, &packets);
        }
    }
    if c.timers.is_expired(Timer::NatKeepalive, now) {
        ctx.out.push_back(Output::NatKeepalive {
            local: c.local,
            remote: c.remote,
        });
        c.timers
            .set(Timer::NatKeepalive, later(now, ctx.config.nat_keepalive));
    }
    if let State::Established(est) = &mut state {
        est.on_timeout(c, ctx);
    }
    pump(state, c, ctx)
}

/// Retransmissions exhausted: the peer is dead (RFC 7296 §2.4).
fn dead(state: State, c: &mut Common, ctx: &mut Ctx<'_>) -> State {
    if matches!(state, State::Established(_)) {
        ctx.event(Event::PeerDead {
            session: c.session,
            conn: c.peer.id,
            peer: c.remote,
        });
    }
    close(state, c, ctx, DownReason::Timeout)
}

/// Removes every child and closes the SA.
fn close(mut state: State, c: &mut Common, ctx: &mut Ctx<'_>, reason: DownReason) -> State {
    if let State::Established(est) = &mut state {
        est.remove_all_children(c, ctx);
    }
    c.go_down(ctx, reason);
    State::Closed
}

/// A handshake failed: report it and close without further messages.
fn fail(c: &mut Common, ctx: &mut Ctx<'_>, e: &Error) -> State {
    let reason = e.reason();
    if matches!(
        e,
        Error::PeerMisbehaved(PeerMisbehaved::AuthenticationFailed)
            | Error::PeerMisbehaved(PeerMisbehaved::IdentityMismatch)
            | Error::PeerIncompatible(PeerIncompatible::PeerRejected(
                NotifyType::AuthenticationFailed
            ))
            | Error::PeerIncompatible(PeerIncompatible::NoMatchingProfile)
    ) {
        ctx.event(Event::AuthFailed {
            conn: Some(c.peer.id),
            peer: c.remote,
            reason,
        });
        // §2.21.2: an initiator rejecting the responder's AUTH tells it in a separate
        // INFORMATIONAL (sent once, not retransmitted: the SA is gone on our side).
        let ours = matches!(
            e,
            Error::PeerMisbehaved(
                PeerMisbehaved::AuthenticationFailed | PeerMisbehaved::IdentityMismatch
            )
        );
        if ours && c.initiator && c.keys.is_some() && c.peer_id.is_none() {
            let n = [Payload::Notify(Notify::new(
                NotifyType::AuthenticationFailed,
                Vec::new(),
            ))];
            let id = c.next_req;
            if let Ok(packets) = c.protect(ctx, ExchangeType::Informational, false, id, &n) {
                c.transmit(ctx, &packets);
            }
        }
    }
    c.go_down(ctx, DownReason::Failed(reason));
    State::Closed
}
