//! IKEv1 errors and the one map from each to the notify message type RFC 2408 §3.14.1 (and
//! the IPsec DOI, RFC 2407 §4.6.3) names for it.
//!
//! Families follow the IKEv2 engine's [`crate::error`]: [`Malformed`] (decode failures),
//! [`Misbehaved`] (the peer broke the protocol), [`Incompatible`] (well-formed, but we cannot
//! agree). [`V1Error::notify`] is the single exhaustive match deciding what we tell the peer.

use crate::v1::wire::Malformed;
use crate::wire::InvalidMessage;

/// Notify message types (RFC 2408 §3.14.1; RFC 2407 §4.6.3; RFC 3706 §5).
pub mod notify_type {
    /// INVALID-PAYLOAD-TYPE.
    pub const INVALID_PAYLOAD_TYPE: u16 = 1;
    /// DOI-NOT-SUPPORTED.
    pub const DOI_NOT_SUPPORTED: u16 = 2;
    /// SITUATION-NOT-SUPPORTED.
    pub const SITUATION_NOT_SUPPORTED: u16 = 3;
    /// INVALID-COOKIE.
    pub const INVALID_COOKIE: u16 = 4;
    /// INVALID-MAJOR-VERSION.
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    /// INVALID-MINOR-VERSION.
    pub const INVALID_MINOR_VERSION: u16 = 6;
    /// INVALID-EXCHANGE-TYPE.
    pub const INVALID_EXCHANGE_TYPE: u16 = 7;
    /// INVALID-FLAGS.
    pub const INVALID_FLAGS: u16 = 8;
    /// INVALID-MESSAGE-ID.
    pub const INVALID_MESSAGE_ID: u16 = 9;
    /// INVALID-PROTOCOL-ID.
    pub const INVALID_PROTOCOL_ID: u16 = 10;
    /// INVALID-SPI.
    pub const INVALID_SPI: u16 = 11;
    /// INVALID-TRANSFORM-ID.
    pub const INVALID_TRANSFORM_ID: u16 = 12;
    /// ATTRIBUTES-NOT-SUPPORTED.
    pub const ATTRIBUTES_NOT_SUPPORTED: u16 = 13;
    /// NO-PROPOSAL-CHOSEN.
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    /// BAD-PROPOSAL-SYNTAX.
    pub const BAD_PROPOSAL_SYNTAX: u16 = 15;
    /// PAYLOAD-MALFORMED.
    pub const PAYLOAD_MALFORMED: u16 = 16;
    /// INVALID-KEY-INFORMATION.
    pub const INVALID_KEY_INFORMATION: u16 = 17;
    /// INVALID-ID-INFORMATION.
    pub const INVALID_ID_INFORMATION: u16 = 18;
    /// INVALID-HASH-INFORMATION.
    pub const INVALID_HASH_INFORMATION: u16 = 23;
    /// AUTHENTICATION-FAILED.
    pub const AUTHENTICATION_FAILED: u16 = 24;
    /// UNSUPPORTED-EXCHANGE-TYPE.
    pub const UNSUPPORTED_EXCHANGE_TYPE: u16 = 29;
    /// CONNECTED (status, RFC 2408 §3.14.1): the responder's answer to the commit bit.
    pub const CONNECTED: u16 = 16384;
    /// RESPONDER-LIFETIME (RFC 2407 §4.6.3.1).
    pub const RESPONDER_LIFETIME: u16 = 24576;
    /// REPLAY-STATUS (RFC 2407 §4.6.3.2).
    pub const REPLAY_STATUS: u16 = 24577;
    /// INITIAL-CONTACT (RFC 2407 §4.6.3.3).
    pub const INITIAL_CONTACT: u16 = 24578;
    /// R-U-THERE (RFC 3706 §5).
    pub const R_U_THERE: u16 = 36136;
    /// R-U-THERE-ACK (RFC 3706 §5).
    pub const R_U_THERE_ACK: u16 = 36137;

    /// True for the error types (1..=16383, RFC 2408 §3.14.1).
    pub fn is_error(ty: u16) -> bool {
        (1..16384).contains(&ty)
    }
}

/// Any reason the IKEv1 engine rejected an input.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum V1Error {
    /// The bytes do not decode.
    #[error("malformed ISAKMP message: {0}")]
    Malformed(#[from] Malformed),
    /// The peer broke the protocol.
    #[error("peer misbehaved: {0:?}")]
    Misbehaved(#[from] Misbehaved),
    /// The peer is well-behaved but we cannot agree.
    #[error("peer incompatible: {0:?}")]
    Incompatible(#[from] Incompatible),
    /// A local failure (crypto, configuration) while handling a valid message.
    #[error("local failure: {0}")]
    Local(&'static str),
}

impl From<InvalidMessage> for V1Error {
    fn from(e: InvalidMessage) -> Self {
        Self::Malformed(Malformed::Syntax(e))
    }
}

impl From<crate::crypto::CryptoError> for V1Error {
    fn from(_: crate::crypto::CryptoError) -> Self {
        Self::Local("crypto")
    }
}

/// Protocol violations, each its own variant so counters and logs say what happened.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misbehaved {
    /// HASH_I / HASH_R (RFC 2409 §5.4) or a phase 2 HASH(n) (§5.5, §5.7) does not verify.
    InvalidHash,
    /// An encrypted main mode message decrypted to no valid payload chain. With pre-shared
    /// keys the encryption key derives from the key (RFC 2409 §5.4: SKEYID = prf(pre-shared
    /// key, Ni_b | Nr_b)), so different keys on the two ends show up here, before any HASH
    /// can be compared.
    UndecryptablePhase1,
    /// An encrypted phase 2 or informational message decrypted to no valid payload chain.
    UndecryptablePhase2,
    /// The peer's identity is not one its profile accepts.
    IdentityMismatch,
    /// The KE data is not a valid public value for the group.
    BadKeData,
    /// A mandatory payload is absent (or the first payload is not HASH where §5.5 wants it).
    MissingPayload(&'static str),
    /// An unencrypted message where only encrypted ones are allowed (RFC 2409 §5.5, §5.7).
    NotEncrypted,
    /// An encrypted message before keys exist.
    UnexpectedEncryption,
    /// The exchange type is not valid in the SA's state.
    UnexpectedExchange(u8),
    /// Phase 1 messages carry message ID 0, phase 2 and informational ones a non-zero ID
    /// (RFC 2408 §3.1).
    InvalidMessageId(u32),
    /// The responder chose a transform we did not offer, or changed its attributes.
    ProposalNotOffered,
    /// The responder's quick mode IDs differ from the ones we sent (RFC 2409 §5.5).
    IdsChanged,
    /// A proposal's SPI has the wrong size for its protocol (four octets for ESP).
    BadSpiSize(usize),
    /// A message for cookies we do not know.
    UnknownCookies,
    /// The responder cookie is not zero in a first main mode message, or zero later.
    InvalidCookie,
    /// A phase 2 message for an exchange we did not start and that is not a new request.
    UnexpectedMessage,
    /// A DPD R-U-THERE-ACK whose sequence number is not the outstanding one (RFC 3706 §5.2).
    DpdSequenceMismatch,
    /// A fragment (Cisco/strongSwan IKEv1 fragmentation) that is malformed or does not fit
    /// the set it claims to belong to; it is dropped and changes nothing.
    BadFragment(&'static str),
}

/// Well-formed input on which we cannot agree.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incompatible {
    /// None of the peer's proposals is acceptable.
    NoProposalChosen,
    /// No profile matches the peer's address.
    NoMatchingProfile,
    /// The quick mode IDs (IDci/IDcr) are not inside what the profile protects, or cannot be
    /// expressed as an IKEv1 identity.
    IdUnacceptable,
    /// An SA payload with a DOI other than IPsec (RFC 2407 §4.2).
    DoiNotSupported(u32),
    /// An SA payload with a situation other than SIT_IDENTITY_ONLY.
    SituationNotSupported(u32),
    /// An exchange type this engine does not run (aggressive mode, new group mode, ...).
    UnsupportedExchange(u8),
    /// The peer told us this error notify.
    PeerRejected(u16),
}

/// What the engine says to the peer about an error in its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Send this notify: unprotected before the ISAKMP SA's keys exist, else in an
    /// informational exchange protected by HASH(1) (RFC 2409 §5.7).
    Notify(u16),
    /// Say nothing: what we cannot attribute, responses to our own errors, and replays.
    Drop,
}

impl V1Error {
    /// RFC 2408 §3.14.1 / §5: the notify that answers a message that failed this way.
    pub fn notify(&self) -> Reaction {
        use Reaction::Drop;
        use notify_type as n;
        let n = Reaction::Notify;
        match self {
            Self::Malformed(m) => match m {
                Malformed::Syntax(_) | Malformed::ReservedNotZero => n(n::PAYLOAD_MALFORMED),
                Malformed::MajorVersion(_) => n(n::INVALID_MAJOR_VERSION),
                Malformed::MinorVersion(_) => n(n::INVALID_MINOR_VERSION),
                Malformed::PayloadType(_) => n(n::INVALID_PAYLOAD_TYPE),
                Malformed::Flags(_) => n(n::INVALID_FLAGS),
            },
            Self::Misbehaved(e) => match e {
                Misbehaved::InvalidHash => n(n::INVALID_HASH_INFORMATION),
                Misbehaved::UndecryptablePhase1 | Misbehaved::IdentityMismatch => {
                    n(n::AUTHENTICATION_FAILED)
                }
                Misbehaved::UndecryptablePhase2 => n(n::PAYLOAD_MALFORMED),
                Misbehaved::BadKeData => n(n::INVALID_KEY_INFORMATION),
                Misbehaved::MissingPayload(_) => n(n::PAYLOAD_MALFORMED),
                Misbehaved::UnexpectedExchange(_) => n(n::INVALID_EXCHANGE_TYPE),
                Misbehaved::InvalidMessageId(_) => n(n::INVALID_MESSAGE_ID),
                Misbehaved::ProposalNotOffered => n(n::BAD_PROPOSAL_SYNTAX),
                Misbehaved::IdsChanged => n(n::INVALID_ID_INFORMATION),
                Misbehaved::BadSpiSize(_) => n(n::INVALID_SPI),
                Misbehaved::InvalidCookie => n(n::INVALID_COOKIE),
                // RFC 2408 §5.1 allows INVALID-COOKIE for unknown cookies, but answering
                // every stray datagram would reflect traffic at spoofed sources.
                Misbehaved::UnknownCookies
                | Misbehaved::NotEncrypted
                | Misbehaved::UnexpectedEncryption
                | Misbehaved::UnexpectedMessage
                | Misbehaved::DpdSequenceMismatch
                // A fragment is not a message: nothing to answer until it is reassembled.
                | Misbehaved::BadFragment(_) => Drop,
            },
            Self::Incompatible(e) => match e {
                Incompatible::NoProposalChosen => n(n::NO_PROPOSAL_CHOSEN),
                Incompatible::NoMatchingProfile => n(n::NO_PROPOSAL_CHOSEN),
                Incompatible::IdUnacceptable => n(n::INVALID_ID_INFORMATION),
                Incompatible::DoiNotSupported(_) => n(n::DOI_NOT_SUPPORTED),
                Incompatible::SituationNotSupported(_) => n(n::SITUATION_NOT_SUPPORTED),
                Incompatible::UnsupportedExchange(_) => n(n::UNSUPPORTED_EXCHANGE_TYPE),
                // Never answer an error with an error.
                Incompatible::PeerRejected(_) => Drop,
            },
            Self::Local(_) => Drop,
        }
    }

    /// A short stable name, the key of [`crate::Stats`] counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(m) => match m {
                Malformed::Syntax(_) => "v1_payload_malformed",
                Malformed::MajorVersion(_) => "v1_invalid_major_version",
                Malformed::MinorVersion(_) => "v1_invalid_minor_version",
                Malformed::PayloadType(_) => "v1_invalid_payload_type",
                Malformed::ReservedNotZero => "v1_reserved_not_zero",
                Malformed::Flags(_) => "v1_invalid_flags",
            },
            Self::Misbehaved(e) => match e {
                Misbehaved::InvalidHash => "v1_invalid_hash",
                Misbehaved::UndecryptablePhase1 => "v1_undecryptable_phase1",
                Misbehaved::UndecryptablePhase2 => "v1_undecryptable_phase2",
                Misbehaved::IdentityMismatch => "v1_identity_mismatch",
                Misbehaved::BadKeData => "v1_bad_ke_data",
                Misbehaved::MissingPayload(_) => "v1_missing_payload",
                Misbehaved::NotEncrypted => "v1_not_encrypted",
                Misbehaved::UnexpectedEncryption => "v1_unexpected_encryption",
                Misbehaved::UnexpectedExchange(_) => "v1_unexpected_exchange",
                Misbehaved::InvalidMessageId(_) => "v1_invalid_message_id",
                Misbehaved::ProposalNotOffered => "v1_proposal_not_offered",
                Misbehaved::IdsChanged => "v1_ids_changed",
                Misbehaved::BadSpiSize(_) => "v1_bad_spi_size",
                Misbehaved::UnknownCookies => "v1_unknown_cookies",
                Misbehaved::InvalidCookie => "v1_invalid_cookie",
                Misbehaved::UnexpectedMessage => "v1_unexpected_message",
                Misbehaved::DpdSequenceMismatch => "v1_dpd_sequence_mismatch",
                Misbehaved::BadFragment(_) => "v1_bad_fragment",
            },
            Self::Incompatible(e) => match e {
                Incompatible::NoProposalChosen => "v1_no_proposal_chosen",
                Incompatible::NoMatchingProfile => "v1_no_matching_profile",
                Incompatible::IdUnacceptable => "v1_id_unacceptable",
                Incompatible::DoiNotSupported(_) => "v1_doi_not_supported",
                Incompatible::SituationNotSupported(_) => "v1_situation_not_supported",
                Incompatible::UnsupportedExchange(_) => "v1_unsupported_exchange",
                Incompatible::PeerRejected(_) => "v1_peer_rejected",
            },
            Self::Local(_) => "v1_local_failure",
        }
    }
}

impl std::fmt::Display for Misbehaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Misbehaved {}

impl std::fmt::Display for Incompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Incompatible {}
