//! Errors and the one map from each protocol violation to the NOTIFY RFC 7296 §2.21 prescribes.
//!
//! Families follow rustls: [`InvalidMessage`] (decode failures), [`PeerMisbehaved`] (the peer
//! broke the protocol), [`PeerIncompatible`] (the peer is well-behaved but we cannot agree).
//! [`Error::reaction`] is the single exhaustive match deciding what goes on the wire.

use crate::wire::InvalidMessage;
use crate::wire::enums::NotifyType;

/// Any reason the engine rejected an input.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes do not decode.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] InvalidMessage),
    /// The peer broke the protocol.
    #[error("peer misbehaved: {0:?}")]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// The peer is well-behaved but we cannot agree.
    #[error("peer incompatible: {0:?}")]
    PeerIncompatible(#[from] PeerIncompatible),
    /// A local failure (crypto provider, configuration) while handling a valid message.
    #[error("local failure: {0}")]
    Local(&'static str),
}

/// Protocol violations. Each has its own variant so stats and logs say exactly what happened.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMisbehaved {
    /// The AUTH payload does not verify (RFC 7296 §2.15).
    AuthenticationFailed,
    /// The cookie in a retried IKE_SA_INIT does not match what we handed out (§2.6).
    BadCookie,
    /// The peer's KE data is not a valid public value for the group.
    BadKeData,
    /// A KE payload of an additional key exchange (RFC 9370 §2.2.2) whose data has the wrong
    /// length for its method (for ML-KEM: not an encapsulation key or ciphertext of FIPS 203
    /// §8's size). INVALID_SYNTAX.
    BadKeLength {
        /// Transform Type 4 ID of the method.
        method: u16,
        /// Bytes the method requires.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// The KE payload of an IKE_INTERMEDIATE or IKE_FOLLOWUP_KE exchange names another method
    /// than the additional key exchange due in that round (RFC 9370 §2.2.2). INVALID_SYNTAX.
    AddKeMethodMismatch {
        /// The method of the round.
        expected: u16,
        /// The method the KE payload names.
        actual: u16,
    },
    /// The responder chose additional key exchanges but did not announce
    /// INTERMEDIATE_EXCHANGE_SUPPORTED, which they need (RFC 9370 §2.2.1, RFC 9242 §3.1).
    AddKeWithoutIntermediate,
    /// A fragment set exceeds our reassembly bounds (RFC 7383 §2.6).
    FragmentOverflow,
    /// The peer's identity is not one the matched profile accepts.
    IdentityMismatch,
    /// The SK/SKF payload failed its integrity check; silently dropped (§2.21.2).
    IntegrityCheckFailed,
    /// The KE payload's group differs from the negotiated or proposed one.
    KeGroupMismatch,
    /// A mandatory payload is absent.
    MissingPayload(&'static str),
    /// A plaintext message arrived where only protected ones are allowed.
    NotEncrypted,
    /// The response chose a proposal or transform we did not offer (§2.7).
    ProposalNotOffered,
    /// The responder's traffic selectors are not a subset of what we offered (§2.9).
    TsOutsideOffer,
    /// A Child SA answer (IKE_AUTH or CREATE_CHILD_SA response) carries a TSi or TSr
    /// payload without any selector we understand (§3.13): a Child SA must select some
    /// traffic, and an empty list would pass every subset check.
    EmptyTrafficSelectors,
    /// An exchange type that is not valid in the current state.
    UnexpectedExchange(u8),
    /// A request or response outside the message-ID window (§2.3).
    UnexpectedMessageId(u32),
    /// A response to a request we never sent.
    UnsolicitedResponse,
    /// A request refers to a Child SA we do not have (§2.25).
    UnknownChildSa(u32),
    /// An IKE_FOLLOWUP_KE request whose ADDITIONAL_KEY_EXCHANGE link data names no exchange
    /// of ours in progress (none, another, or one already finished or abandoned), or that
    /// carries none. STATE_NOT_FOUND (RFC 9370 §2.2.4).
    UnknownAddKeLink,
    /// An IKE SPI we do not know (§2.21.4).
    UnknownIkeSpi,
    /// An IKE_SA_INIT request with a half-open SA's SPIi from its peer's address that is not
    /// the identical request, so no retransmission (§2.1): a forged header or a mutated
    /// body. Not answered, so that we reflect nothing toward a spoofed source.
    AlteredRetransmission,
}

/// Well-formed input on which we cannot agree.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIncompatible {
    /// None of the peer's proposals is acceptable (§2.7).
    NoProposalChosen,
    /// The proposal is fine but the KE payload uses another group; we want `0` (§1.2).
    InvalidKePayload(u16),
    /// No profile matches the peer's address (IKE_SA_INIT) or identity (IKE_AUTH).
    NoMatchingProfile,
    /// The traffic selectors do not intersect ours (§2.9).
    TsUnacceptable,
    /// The peer answered our request with this error notify.
    PeerRejected(NotifyType),
    /// A cookie is required before we keep state (§2.6).
    CookieRequired,
    /// A simultaneous exchange prevents this one right now (§2.25).
    TemporaryFailure,
    /// Too many half-open SAs in all ([`crate::config::Limits::half_open_limit`]); the
    /// request is dropped.
    HalfOpenLimit,
    /// Too many half-open SAs from the request's source address
    /// ([`crate::config::Limits::half_open_limit_per_source`]); the request is dropped.
    HalfOpenLimitPerSource,
    /// Too many IKE SAs ([`crate::config::Limits::ike_sa_limit`]); the request is dropped.
    IkeSaLimit,
    /// A peer proposal matched one of our suites in every transform but its additional key
    /// exchanges (RFC 9370 §2.2.1): ours are required (no NONE), the peer offered other
    /// methods or none (it may not support RFC 9370). NO_PROPOSAL_CHOSEN.
    AdditionalKeyExchangeRequired,
}

/// What the engine puts on the wire for an error found in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Answer with this error notify (data per §3.10.1). Protection follows the exchange:
    /// IKE_SA_INIT answers are unprotected, later ones travel in SK.
    Notify(NotifyType, Vec<u8>),
    /// Say nothing (integrity failures, replays, unknown SPIs, responses).
    Drop,
}

impl Error {
    /// RFC 7296 §2.21: the notify to send in response to a request that failed this way.
    pub fn reaction(&self) -> Reaction {
        use NotifyType as N;
        let n = |t| Reaction::Notify(t, Vec::new());
        match self {
            Self::InvalidMessage(InvalidMessage::UnsupportedCriticalPayload(t)) => {
                // §3.10.1: the notification data holds the one-octet payload type.
                Reaction::Notify(N::UnsupportedCriticalPayload, vec![*t])
            }
            Self::InvalidMessage(InvalidMessage::UnsupportedVersion(_)) => {
                n(N::InvalidMajorVersion)
            }
            Self::InvalidMessage(
                InvalidMessage::Truncated
                | InvalidMessage::TrailingData
                | InvalidMessage::BadLength
                | InvalidMessage::MisplacedPayload(_)
                | InvalidMessage::BadNonceLength(_)
                | InvalidMessage::BadValue(_),
            ) => n(N::InvalidSyntax),
            Self::PeerMisbehaved(e) => match e {
                PeerMisbehaved::AuthenticationFailed | PeerMisbehaved::IdentityMismatch => {
                    n(N::AuthenticationFailed)
                }
                PeerMisbehaved::BadKeData
                | PeerMisbehaved::BadKeLength { .. }
                | PeerMisbehaved::AddKeMethodMismatch { .. }
                | PeerMisbehaved::AddKeWithoutIntermediate
                | PeerMisbehaved::MissingPayload(_)
                | PeerMisbehaved::UnexpectedExchange(_)
                | PeerMisbehaved::ProposalNotOffered => n(N::InvalidSyntax),
                PeerMisbehaved::KeGroupMismatch => n(N::InvalidKePayload),
                PeerMisbehaved::TsOutsideOffer => n(N::TsUnacceptable),
                // §3.13: a selector list is the substance of the payload; none is a malformed
                // answer (only ever found in responses, which are not answered).
                PeerMisbehaved::EmptyTrafficSelectors => n(N::InvalidSyntax),
                PeerMisbehaved::UnknownChildSa(_) => n(N::ChildSaNotFound),
                PeerMisbehaved::UnknownAddKeLink => n(N::StateNotFound),
                // §2.21.2 / §2.21.4: never answer what we cannot authenticate or place.
                PeerMisbehaved::BadCookie
                | PeerMisbehaved::FragmentOverflow
                | PeerMisbehaved::IntegrityCheckFailed
                | PeerMisbehaved::NotEncrypted
                | PeerMisbehaved::UnexpectedMessageId(_)
                | PeerMisbehaved::UnsolicitedResponse
                | PeerMisbehaved::UnknownIkeSpi
                | PeerMisbehaved::AlteredRetransmission => Reaction::Drop,
            },
            Self::PeerIncompatible(e) => match e {
                PeerIncompatible::NoProposalChosen
                | PeerIncompatible::AdditionalKeyExchangeRequired => n(N::NoProposalChosen),
                PeerIncompatible::InvalidKePayload(g) => {
                    // §3.10.1: INVALID_KE_PAYLOAD carries the accepted group, two octets.
                    Reaction::Notify(N::InvalidKePayload, g.to_be_bytes().to_vec())
                }
                PeerIncompatible::NoMatchingProfile => n(N::AuthenticationFailed),
                PeerIncompatible::TsUnacceptable => n(N::TsUnacceptable),
                PeerIncompatible::TemporaryFailure => n(N::TemporaryFailure),
                PeerIncompatible::PeerRejected(_)
                | PeerIncompatible::CookieRequired
                | PeerIncompatible::HalfOpenLimit
                | PeerIncompatible::HalfOpenLimitPerSource
                | PeerIncompatible::IkeSaLimit => Reaction::Drop,
            },
            Self::Local(_) => n(N::TemporaryFailure),
        }
    }

    /// A short stable name used as the key of [`crate::Stats`] counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidMessage(InvalidMessage::UnsupportedCriticalPayload(_)) => {
                "unsupported_critical_payload"
            }
            Self::InvalidMessage(_) => "invalid_message",
            Self::PeerMisbehaved(e) => match e {
                PeerMisbehaved::AuthenticationFailed => "authentication_failed",
                PeerMisbehaved::BadCookie => "bad_cookie",
                PeerMisbehaved::BadKeData => "bad_ke_data",
                PeerMisbehaved::BadKeLength { .. } => "bad_ke_length",
                PeerMisbehaved::AddKeMethodMismatch { .. } => "addke_method_mismatch",
                PeerMisbehaved::AddKeWithoutIntermediate => "addke_without_intermediate",
                PeerMisbehaved::FragmentOverflow => "fragment_overflow",
                PeerMisbehaved::IdentityMismatch => "identity_mismatch",
                PeerMisbehaved::IntegrityCheckFailed => "integrity_check_failed",
                PeerMisbehaved::KeGroupMismatch => "ke_group_mismatch",
                PeerMisbehaved::MissingPayload(_) => "missing_payload",
                PeerMisbehaved::NotEncrypted => "not_encrypted",
                PeerMisbehaved::ProposalNotOffered => "proposal_not_offered",
                PeerMisbehaved::TsOutsideOffer => "ts_outside_offer",
                PeerMisbehaved::EmptyTrafficSelectors => "empty_traffic_selectors",
                PeerMisbehaved::UnexpectedExchange(_) => "unexpected_exchange",
                PeerMisbehaved::UnexpectedMessageId(_) => "unexpected_message_id",
                PeerMisbehaved::UnsolicitedResponse => "unsolicited_response",
                PeerMisbehaved::UnknownChildSa(_) => "unknown_child_sa",
                PeerMisbehaved::UnknownAddKeLink => "unknown_addke_link",
                PeerMisbehaved::UnknownIkeSpi => "unknown_ike_spi",
                PeerMisbehaved::AlteredRetransmission => "altered_retransmission",
            },
            Self::PeerIncompatible(e) => match e {
                PeerIncompatible::NoProposalChosen => "no_proposal_chosen",
                PeerIncompatible::InvalidKePayload(_) => "invalid_ke_payload",
                PeerIncompatible::NoMatchingProfile => "no_matching_profile",
                PeerIncompatible::TsUnacceptable => "ts_unacceptable",
                PeerIncompatible::PeerRejected(_) => "peer_rejected",
                PeerIncompatible::CookieRequired => "cookie_required",
                PeerIncompatible::TemporaryFailure => "temporary_failure",
                PeerIncompatible::HalfOpenLimit => "half_open_limit",
                PeerIncompatible::HalfOpenLimitPerSource => "half_open_limit_per_source",
                PeerIncompatible::IkeSaLimit => "ike_sa_limit",
                PeerIncompatible::AdditionalKeyExchangeRequired => {
                    "additional_key_exchange_required"
                }
            },
            Self::Local(_) => "local_failure",
        }
    }
}

impl std::fmt::Display for PeerMisbehaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for PeerMisbehaved {}

impl std::fmt::Display for PeerIncompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for PeerIncompatible {}

/// A crypto failure on our side (key generation, cipher setup) while handling valid input;
/// peer-caused crypto failures are mapped to [`PeerMisbehaved`] variants at the call site.
impl From<crate::crypto::CryptoError> for Error {
    fn from(_: crate::crypto::CryptoError) -> Self {
        Self::Local("crypto")
    }
}
