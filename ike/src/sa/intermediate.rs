//! IKE_INTERMEDIATE exchanges (RFC 9242) after IKE_SA_INIT, each carrying one additional key
//! exchange (RFC 9370 §2.2.2) in ADDKE order, the key update after each, and the IntAuth
//! chains that IKE_AUTH's AUTH payloads cover (RFC 9242 §3.3.2).
//!
//! ```text
//! Initiator                               Responder
//! IKE_SA_INIT  SA(KE, ADDKE1..), KE, Ni, N(INTERMEDIATE_EXCHANGE_SUPPORTED) -->
//!          <-- SA, KE, Nr, N(INTERMEDIATE_EXCHANGE_SUPPORTED)
//! IKE_INTERMEDIATE (ID 1)  SK{KE(ADDKE1 method, key share / encapsulation key)} -->
//!          <-- SK{KE(ADDKE1 method, key share / ciphertext)}
//!   both: SKEYSEED(1) = prf(SK_d(0), SK(1) | Ni | Nr), SK_*(1) = prf+(.., Ni | Nr | SPIi | SPIr)
//! ... one IKE_INTERMEDIATE per negotiated ADDKE ...
//! IKE_AUTH (ID n+1), AUTH over RealMessage | Nonce | MACedID | IntAuth
//! ```
//!
//! States are named for what they wait for: [`ExpectIntermediateResponse`] (initiator) and
//! [`ExpectIntermediateRequest`] (responder); the last round leads to IKE_AUTH.

use crate::crypto::PrfKey;
use crate::crypto::kem;
use crate::crypto::kem::KeInitiator;
use crate::error::Error;
use crate::error::PeerIncompatible;
use crate::error::PeerMisbehaved;
use crate::keys;
use crate::sa::Common;
use crate::sa::Ctx;
use crate::sa::Found;
use crate::sa::SaKeys;
use crate::sa::State;
use crate::sa::error_notify;
use crate::sa::glue;
use crate::sa::initiator::AuthStart;
use crate::sa::initiator::send_auth;
use crate::sa::need;
use crate::sa::responder::ExpectAuthRequest;
use crate::secret::Secret;
use crate::transform::KeMethod;
use crate::wire::Codec;
use crate::wire::Header;
use crate::wire::Ke;
use crate::wire::Payload;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::PayloadType;

/// The IntAuth chains of one IKE SA set-up (RFC 9242 §3.3.2):
/// `IntAuth_iN = prf(SK_pi, IntAuth_i(N-1) | IntAuth_iN_A | IntAuth_iN_P)` over the messages
/// the original initiator sent, `IntAuth_rN` likewise with SK_pr over the responder's, each
/// with the SK_p in force when the message was protected (before the exchange's key update).
#[derive(Default)]
pub(crate) struct IntAuth {
    i: Option<Secret>,
    r: Option<Secret>,
}

impl IntAuth {
    /// Adds one IKE_INTERMEDIATE message: `header` as received or sent, the unencrypted
    /// payloads before SK (if any), the first inner payload's type and the inner payloads in
    /// clear. Fragmented messages count as unfragmented: the header says SK, and both Length
    /// fields are those of the whole message without IV, padding and ICV ("A" and "P" of
    /// RFC 9242 §3.3.2, Figure 1).
    pub(crate) fn add(
        &mut self,
        keys: &SaKeys,
        from_initiator: bool,
        header: &Header,
        unencrypted: &[u8],
        first: PayloadType,
        plain: &[u8],
    ) {
        let (chain, sk_p) = if from_initiator {
            (&mut self.i, &keys.sk_pi)
        } else {
            (&mut self.r, &keys.sk_pr)
        };
        let sk_len = 4 + plain.len();
        let mut h = header.clone();
        if unencrypted.is_empty() {
            h.next = PayloadType::Sk;
        }
        h.length = (Header::LEN + unencrypted.len() + sk_len) as u32;
        let adjusted = Codec::to_vec(&h);
        // A fragmented message has no more than 64 KiB (RFC 7383 bounds, MAX_REASSEMBLED), so
        // the SK payload length fits its two octets.
        let sk_header = [first.to_raw(), 0, (sk_len >> 8) as u8, sk_len as u8];
        let prev = chain.as_ref().map_or(&[][..], Secret::expose);
        let mac = PrfKey::new(keys.suite.prf, sk_p.expose()).compute(&[
            prev,
            &adjusted,
            unencrypted,
            &sk_header,
            plain,
        ]);
        *chain = Some(mac);
    }

    /// `IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID` (RFC 9242 §3.3.2), appended to both
    /// sides' signed octets; `None` when no IKE_INTERMEDIATE exchange took place, and AUTH is
    /// RFC 7296's.
    pub(crate) fn octets(&self, auth_mid: u32) -> Option<Vec<u8>> {
        let (i, r) = (self.i.as_ref()?, self.r.as_ref()?);
        let mut out = Vec::with_capacity(i.len() + r.len() + 4);
        out.extend_from_slice(i.expose());
        out.extend_from_slice(r.expose());
        out.extend_from_slice(&auth_mid.to_be_bytes());
        Some(out)
    }
}

/// RFC 7296 §2.15 signed octets, followed by IntAuth when IKE_INTERMEDIATE exchanges took
/// place (RFC 9242 §3.3.2: `...SignedOctets = RealMessage | Nonce | MACedID | IntAuth`).
pub(crate) fn with_int_auth(c: &Common, mut octets: Vec<u8>, auth_mid: u32) -> Vec<u8> {
    if let Some(extra) = c.int_auth.as_ref().and_then(|ia| ia.octets(auth_mid)) {
        octets.extend_from_slice(&extra);
    }
    octets
}

/// RFC 9370 §2.2.2 key update after one additional key exchange:
/// `SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr)`, then every SK_* from prf+ with the nonces
/// and SPIs as in RFC 7296 §2.14; the form of an IKE SA rekey (§2.18), with the SA's own PRF.
pub(crate) fn update_keys(c: &mut Common, sk: &Secret, ni: &[u8], nr: &[u8]) -> Result<(), Error> {
    let old = c.keys.take().ok_or(Error::Local("keys"))?;
    let suite = old.suite;
    let derived = keys::derive_rekeyed_ike_keys(
        suite.prf,
        &old.sk_d,
        glue::suite(&suite),
        sk,
        ni,
        nr,
        &[],
        c.spi_i,
        c.spi_r,
    );
    c.keys = Some(glue::sa_keys(suite, derived, c.initiator)?);
    if !c.initiator {
        c.prev_recv = Some(old.recv);
    }
    Ok(())
}

/// The KE payload of round `method`, checked: method first, then the data length the method
/// fixes for that side (`expected_len`).
pub(crate) fn round_ke(
    payloads: &[Payload],
    method: KeMethod,
    expected_len: usize,
) -> Result<&Ke, PeerMisbehaved> {
    let ke = need(Found::of(payloads).ke, "KE")?;
    if ke.group != method.id() {
        return Err(PeerMisbehaved::AddKeMethodMismatch {
            expected: method.id(),
            actual: ke.group,
        });
    }
    if ke.data.len() != expected_len {
        return Err(PeerMisbehaved::BadKeLength {
            method: ke.group,
            expected: expected_len,
            actual: ke.data.len(),
        });
    }
    Ok(ke)
}

/// Initiator: one IKE_INTERMEDIATE request sent, its additional key exchange under way.
pub(crate) struct ExpectIntermediateResponse {
    hs: AuthStart,
    round: KeInitiator,
    /// Rounds still to run, the next one last.
    rest: Vec<(u8, KeMethod)>,
}

impl ExpectIntermediateResponse {
    /// After IKE_SA_INIT: the first additional key exchange, or IKE_AUTH when none was
    /// negotiated.
    pub(crate) fn start(c: &mut Common, ctx: &mut Ctx<'_>, hs: AuthStart) -> Result<State, Error> {
        let mut rest: Vec<(u8, KeMethod)> = hs.suite.addke.rounds().collect();
        rest.reverse();
        Self::next_round(c, ctx, hs, rest)
    }

    fn next_round(
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        hs: AuthStart,
        mut rest: Vec<(u8, KeMethod)>,
    ) -> Result<State, Error> {
        let Some((n, method)) = rest.pop() else {
            return send_auth(c, ctx, hs);
        };
        tracing::debug!(
            addke = n,
            ?method,
            "IKE_INTERMEDIATE: additional key exchange"
        );
        let round = KeInitiator::generate(method, ctx.rng)?;
        let ke = Payload::Ke(Ke {
            group: method.id(),
            data: round.public().to_vec(),
        });
        // RFC 9242 §3.4: IKE_INTERMEDIATE requests take the next message IDs (1, 2, ...), so
        // IKE_AUTH follows with n + 1.
        c.send_request(ctx, ExchangeType::IkeIntermediate, &[ke])?;
        Ok(State::ExpectIntermediateResponse(Box::new(Self {
            hs,
            round,
            rest,
        })))
    }

    pub(crate) fn children(&mut self) -> &mut crate::sa::initiator::PendingChildren {
        &mut self.hs.children
    }

    /// The responder's share: derive SK(n), update the keys, go on.
    // rustls: a handler consumes its boxed state, so a stale state cannot be reused.
    #[allow(clippy::boxed_local)]
    pub(crate) fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
    ) -> Result<State, Error> {
        if let Some(ty) = error_notify(&payloads) {
            return Err(PeerIncompatible::PeerRejected(ty).into());
        }
        let Self { hs, round, rest } = *self;
        let method = round.method();
        let ke = round_ke(&payloads, method, kem::responder_len(method))?;
        let sk = round
            .finish(&ke.data)
            .map_err(|_| PeerMisbehaved::BadKeData)?;
        update_keys(c, &sk, &hs.ni, &hs.nr)?;
        Self::next_round(c, ctx, hs, rest)
    }
}

/// Responder: IKE_SA_INIT answered with additional key exchanges chosen; waiting for the
/// IKE_INTERMEDIATE request of the next one. IKE_AUTH follows the last
/// ([`ExpectAuthRequest`], which this state carries on).
pub(crate) struct ExpectIntermediateRequest {
    next: Box<ExpectAuthRequest>,
    /// Rounds still to run, the next one last.
    rest: Vec<(u8, KeMethod)>,
}

impl ExpectIntermediateRequest {
    /// After our IKE_SA_INIT response: wait for the first round, or for IKE_AUTH when there
    /// is none.
    pub(crate) fn start(next: ExpectAuthRequest) -> State {
        let mut rest: Vec<(u8, KeMethod)> = next.suite.addke.rounds().collect();
        if rest.is_empty() {
            return State::ExpectAuthRequest(Box::new(next));
        }
        rest.reverse();
        State::ExpectIntermediateRequest(Box::new(Self {
            next: Box::new(next),
            rest,
        }))
    }

    pub(crate) fn is_original_request(&self, bytes: &[u8]) -> bool {
        self.next.is_original_request(bytes)
    }

    pub(crate) fn add_child(
        &mut self,
        conn: crate::config::ConnId,
        req: crate::sa::child::ChildRequest,
    ) {
        self.next.add_child(conn, req);
    }

    /// One round: answer the initiator's share with ours, then update the keys (after the
    /// response is protected: the whole exchange runs under the old keys).
    pub(crate) fn handle(
        mut self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        id: u32,
        payloads: Vec<Payload>,
    ) -> Result<State, Error> {
        let (n, method) = *self.rest.last().ok_or(PeerMisbehaved::UnexpectedExchange(
            ExchangeType::IkeIntermediate.to_raw(),
        ))?;
        let ke = round_ke(&payloads, method, kem::initiator_len(method))?;
        let (reply, sk) =
            kem::respond(method, &ke.data, ctx.rng).map_err(|_| PeerMisbehaved::BadKeData)?;
        tracing::debug!(
            addke = n,
            ?method,
            "IKE_INTERMEDIATE: additional key exchange answered"
        );
        let answer = Payload::Ke(Ke {
            group: method.id(),
            data: reply,
        });
        c.send_response(ctx, ExchangeType::IkeIntermediate, id, &[answer])?;
        update_keys(c, &sk, &self.next.ni, &self.next.nr)?;
        self.rest.pop();
        if self.rest.is_empty() {
            Ok(State::ExpectAuthRequest(self.next))
        } else {
            Ok(State::ExpectIntermediateRequest(self))
        }
    }
}
