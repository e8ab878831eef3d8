//! Additional key exchanges of a CREATE_CHILD_SA (RFC 9370 §2.2.4): IKE SA rekey, Child SA
//! creation and rekey with PFS whose SA proposals carry ADDKE transforms.
//!
//! ```text
//! Initiator                               Responder
//! CREATE_CHILD_SA  SA(KE, ADDKE1..), Ni, KEi [, TSi, TSr] -->
//!          <-- SA, Nr, KEr, N(ADDITIONAL_KEY_EXCHANGE)(link1) [, TSi, TSr]
//! IKE_FOLLOWUP_KE  N(ADDITIONAL_KEY_EXCHANGE)(link1), KEi(1) -->
//!          <-- KEr(1) [, N(ADDITIONAL_KEY_EXCHANGE)(link2) when another round follows]
//! ... one IKE_FOLLOWUP_KE per negotiated ADDKE, in ADDKE order ...
//! ```
//!
//! Unlike IKE_INTERMEDIATE (no key update between rounds) the keys exist only when every
//! round is done: `SKEYSEED = prf(SK_d (old), SK(0) | Ni | Nr | SK(1) | ... | SK(n))` for the
//! rekeyed IKE SA, `KEYMAT = prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n))` for a Child
//! SA. The link data is opaque to the initiator, which echoes it; the responder answers a
//! link it does not know with STATE_NOT_FOUND and keeps what it has.
//!
//! States are named for what they wait for: [`ExpectFollowupKeResponse`] (initiator, held in
//! [`super::established::Pending`]) and [`ExpectFollowupKeRequest`] (responder, one per IKE
//! SA since the peer runs one exchange at a time, RFC 7296 §2.3 window 1).

use crate::config::IkeProposal;
use crate::config::Mode;
use crate::crypto::kem;
use crate::crypto::kem::KeInitiator;
use crate::error::Error;
use crate::error::PeerMisbehaved;
use crate::output::ChildSaId;
use crate::proposal::EspChoice;
use crate::sa::Common;
use crate::sa::Ctx;
use crate::sa::child::ChildRequest;
use crate::sa::intermediate::round_ke;
use crate::secret::Secret;
use crate::transform::AddKes;
use crate::transform::KeMethod;
use crate::wire::Ke;
use crate::wire::Notify;
use crate::wire::Payload;
use crate::wire::TrafficSelector;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::NotifyType;
use crate::wire::notifies;

/// A Child SA negotiated in a CREATE_CHILD_SA, everything but its keys.
pub(crate) struct ChildDraft {
    /// We initiated the CREATE_CHILD_SA (§2.17 key order, §2.8.1 collision handling).
    pub(crate) exchange_initiator: bool,
    pub(crate) spi_in: u32,
    pub(crate) choice: EspChoice,
    pub(crate) local_ts: Vec<TrafficSelector>,
    pub(crate) remote_ts: Vec<TrafficSelector>,
    pub(crate) mode: Mode,
    /// The child it rekeys.
    pub(crate) replaces: Option<ChildSaId>,
    pub(crate) request: ChildRequest,
}

/// What the CREATE_CHILD_SA makes once its last additional key exchange is done.
pub(crate) enum Creates {
    Child(ChildDraft),
    /// The rekeyed IKE SA (§2.18) with its new SPIs; `initiator` when we started the rekey
    /// (we are then the new SA's original initiator).
    Ike {
        suite: IkeProposal,
        spi_i: u64,
        spi_r: u64,
        initiator: bool,
    },
}

/// The key exchange results gathered so far: SK(0) and the nonces of the CREATE_CHILD_SA,
/// then SK(1).. in ADDKE order.
pub(crate) struct Gathered {
    pub(crate) sk0: Secret,
    pub(crate) ni: Vec<u8>,
    pub(crate) nr: Vec<u8>,
    pub(crate) more: Vec<Secret>,
}

impl Gathered {
    pub(crate) fn new(sk0: Secret, ni: Vec<u8>, nr: Vec<u8>) -> Self {
        Self {
            sk0,
            ni,
            nr,
            more: Vec::new(),
        }
    }
}

/// The link data of the message's ADDITIONAL_KEY_EXCHANGE notify.
pub(crate) fn link_of(payloads: &[Payload]) -> Option<&[u8]> {
    notifies(payloads, NotifyType::AdditionalKeyExchange)
        .next()
        .map(|n| n.data.as_slice())
}

fn link_notify(link: Vec<u8>) -> Payload {
    Payload::Notify(Notify::new(NotifyType::AdditionalKeyExchange, link))
}

/// The rounds of `addke`, the next one last.
fn rounds(addke: AddKes) -> Vec<(u8, KeMethod)> {
    let mut rest: Vec<(u8, KeMethod)> = addke.rounds().collect();
    rest.reverse();
    rest
}

/// A failed round: what it was for (to retry or give up) and why.
pub(crate) type Failed = Box<(Creates, Error)>;

/// Initiator: an IKE_FOLLOWUP_KE request sent, its additional key exchange under way.
pub(crate) struct ExpectFollowupKeResponse {
    pub(crate) creates: Creates,
    pub(crate) keys: Gathered,
    round: KeInitiator,
    /// Rounds still to run after this one, the next one last.
    rest: Vec<(u8, KeMethod)>,
}

/// What one answered round leads to.
// A transient return value, moved once: boxing `Done` would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Answered {
    /// Another round was sent.
    More(Box<ExpectFollowupKeResponse>),
    /// Every round is done: create it.
    Done(Creates, Gathered),
}

impl ExpectFollowupKeResponse {
    /// After the CREATE_CHILD_SA response `payloads` that chose `addke` (not empty): the first
    /// IKE_FOLLOWUP_KE with the link the responder gave.
    pub(crate) fn start(
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        creates: Creates,
        keys: Gathered,
        addke: AddKes,
        payloads: &[Payload],
    ) -> Result<Box<Self>, Error> {
        let link = link_of(payloads)
            .ok_or(PeerMisbehaved::MissingPayload("ADDITIONAL_KEY_EXCHANGE"))?
            .to_vec();
        Self::send(c, ctx, creates, keys, rounds(addke), link).map_err(|f| f.1)
    }

    /// Sends the next round; on failure `creates` comes back with the error.
    fn send(
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        creates: Creates,
        keys: Gathered,
        mut rest: Vec<(u8, KeMethod)>,
        link: Vec<u8>,
    ) -> Result<Box<Self>, Failed> {
        let Some((n, method)) = rest.pop() else {
            return Err(Box::new((
                creates,
                Error::Local("no additional key exchange"),
            )));
        };
        tracing::debug!(
            addke = n,
            ?method,
            "IKE_FOLLOWUP_KE: additional key exchange"
        );
        let round = match KeInitiator::generate(method, ctx.rng) {
            Ok(r) => r,
            Err(e) => return Err(Box::new((creates, e.into()))),
        };
        let p = [
            link_notify(link),
            Payload::Ke(Ke {
                group: method.id(),
                data: round.public().to_vec(),
            }),
        ];
        if let Err(e) = c.send_request(ctx, ExchangeType::IkeFollowupKe, &p) {
            return Err(Box::new((creates, e)));
        }
        Ok(Box::new(Self {
            creates,
            keys,
            round,
            rest,
        }))
    }

    /// The responder's share of this round. An error leaves `creates` with the caller
    /// (through the returned pair) so it can retry or give up what it was for.
    pub(crate) fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Result<Answered, Failed> {
        let Self {
            creates,
            mut keys,
            round,
            rest,
        } = *self;
        if let Some(ty) = crate::sa::error_notify(payloads) {
            // STATE_NOT_FOUND (the responder lost or never had the exchange) and any other
            // error end the whole CREATE_CHILD_SA (RFC 9370 §2.2.4).
            let e = crate::error::PeerIncompatible::PeerRejected(ty).into();
            return Err(Box::new((creates, e)));
        }
        let method = round.method();
        let ke = match round_ke(payloads, method, kem::responder_len(method)) {
            Ok(ke) => ke,
            Err(e) => return Err(Box::new((creates, e.into()))),
        };
        match round.finish(&ke.data) {
            Ok(sk) => keys.more.push(sk),
            Err(_) => return Err(Box::new((creates, PeerMisbehaved::BadKeData.into()))),
        }
        if rest.is_empty() {
            return Ok(Answered::Done(creates, keys));
        }
        let Some(link) = link_of(payloads).map(<[u8]>::to_vec) else {
            let e = PeerMisbehaved::MissingPayload("ADDITIONAL_KEY_EXCHANGE").into();
            return Err(Box::new((creates, e)));
        };
        Self::send(c, ctx, creates, keys, rest, link).map(Answered::More)
    }
}

/// Responder: a CREATE_CHILD_SA answered with additional key exchanges chosen; waiting for
/// the IKE_FOLLOWUP_KE request of the next round.
pub(crate) struct ExpectFollowupKeRequest {
    /// The link data we gave for the next round.
    link: Vec<u8>,
    creates: Creates,
    keys: Gathered,
    /// Rounds still to run, the next one last.
    rest: Vec<(u8, KeMethod)>,
}

/// What a request of the peer's IKE_FOLLOWUP_KE leads to.
// A transient return value, moved once: boxing `Done` would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Received {
    /// Answered; more rounds to come.
    More(Box<ExpectFollowupKeRequest>),
    /// The last round is answered by `reply` (not yet sent): create it.
    Done(Creates, Gathered, Vec<Payload>),
}

impl ExpectFollowupKeRequest {
    /// Our CREATE_CHILD_SA response chose `addke` (not empty): the notify to add to it and
    /// the state to keep.
    pub(crate) fn start(
        ctx: &mut Ctx<'_>,
        creates: Creates,
        keys: Gathered,
        addke: AddKes,
    ) -> (Payload, Box<Self>) {
        let link = new_link(ctx);
        let st = Box::new(Self {
            link: link.clone(),
            creates,
            keys,
            rest: rounds(addke),
        });
        (link_notify(link), st)
    }

    /// Test-only: forget the link we gave, as after a restart of the exchange.
    #[cfg(test)]
    pub(crate) fn corrupt_link(&mut self) {
        self.link[0] ^= 0xff;
    }

    /// True when `payloads` carry the link we gave for the next round.
    pub(crate) fn is_ours(&self, payloads: &[Payload]) -> bool {
        link_of(payloads) == Some(self.link.as_slice())
    }

    /// One round (the link already checked by [`Self::is_ours`]): our share, and either the
    /// state for the next round (the response, with its new link, is sent here) or the
    /// response to send once the caller created what the exchange is for.
    pub(crate) fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        id: u32,
        payloads: &[Payload],
    ) -> Result<Received, Error> {
        let Self {
            link: _,
            creates,
            mut keys,
            mut rest,
        } = *self;
        let (n, method) = rest.pop().ok_or(PeerMisbehaved::UnknownAddKeLink)?;
        let ke = round_ke(payloads, method, kem::initiator_len(method))?;
        let (reply, sk) =
            kem::respond(method, &ke.data, ctx.rng).map_err(|_| PeerMisbehaved::BadKeData)?;
        tracing::debug!(
            addke = n,
            ?method,
            "IKE_FOLLOWUP_KE: additional key exchange answered"
        );
        keys.more.push(sk);
        let mut p = vec![Payload::Ke(Ke {
            group: method.id(),
            data: reply,
        })];
        if rest.is_empty() {
            return Ok(Received::Done(creates, keys, p));
        }
        let link = new_link(ctx);
        p.push(link_notify(link.clone()));
        c.send_response(ctx, ExchangeType::IkeFollowupKe, id, &p)?;
        Ok(Received::More(Box::new(Self {
            link,
            creates,
            keys,
            rest,
        })))
    }
}

/// Fresh link data: opaque to the peer (RFC 9370 §2.2.4), random so a stale or forged one
/// does not name the exchange under way.
fn new_link(ctx: &mut Ctx<'_>) -> Vec<u8> {
    ctx.spi64().to_be_bytes().to_vec()
}
