//! Small adapters between the engine and [`crate::crypto`] / [`crate::keys`].

use std::net::SocketAddr;

use crate::config::IkeProposal;
use crate::error::Error;
use crate::keys::IkeKeys;
use crate::keys::IkeSuite;
use crate::sa::SaKeys;
use crate::wire::Notify;
use crate::wire::Payload;
use crate::wire::enums::NotifyType;

/// The key-derivation view of a negotiated IKE proposal.
pub(crate) fn suite(p: &IkeProposal) -> IkeSuite {
    IkeSuite {
        prf: p.prf,
        encr: p.encr,
        integ: p.integ,
    }
}

/// Builds the per-direction SK ciphers for our role, on the heap where the SA keeps them.
pub(crate) fn sa_keys(
    p: IkeProposal,
    keys: IkeKeys,
    initiator: bool,
) -> Result<Box<SaKeys>, Error> {
    let i = keys.initiator_cipher()?;
    let r = keys.responder_cipher()?;
    let (send, recv) = if initiator { (i, r) } else { (r, i) };
    Ok(Box::new(SaKeys {
        suite: p,
        sk_d: keys.sk_d,
        sk_pi: keys.sk_pi,
        sk_pr: keys.sk_pr,
        sk_e: (keys.sk_ei, keys.sk_er),
        sk_a: (keys.sk_ai, keys.sk_ar),
        send,
        recv,
    }))
}

/// NAT_DETECTION_SOURCE_IP and _DESTINATION_IP for a message from `src` to `dst`
/// (RFC 7296 §2.23).
pub(crate) fn nat_notifies(
    spi_i: u64,
    spi_r: u64,
    src: SocketAddr,
    dst: SocketAddr,
) -> [Payload; 2] {
    let h =
        |a: SocketAddr| crate::keys::nat_detection_hash(spi_i, spi_r, a.ip(), a.port()).to_vec();
    [
        Payload::Notify(Notify::new(NotifyType::NatDetectionSourceIp, h(src))),
        Payload::Notify(Notify::new(NotifyType::NatDetectionDestinationIp, h(dst))),
    ]
}

/// Evaluates received NAT_DETECTION notifies for a message that travelled from `src` to
/// `dst` as we saw it. Returns `(nat_in_front_of_sender, nat_in_front_of_us)`; `None` when
/// the peer sent no NAT detection payloads.
pub(crate) fn nat_detect(
    payloads: &[Payload],
    spi_i: u64,
    spi_r: u64,
    src: SocketAddr,
    dst: SocketAddr,
) -> Option<(bool, bool)> {
    let h = |a: SocketAddr| crate::keys::nat_detection_hash(spi_i, spi_r, a.ip(), a.port());
    let mut srcs = crate::wire::notifies(payloads, NotifyType::NatDetectionSourceIp).peekable();
    let dst_n = crate::wire::notifies(payloads, NotifyType::NatDetectionDestinationIp).next()?;
    srcs.peek()?;
    let want_src = h(src);
    // §2.23: several SOURCE payloads may be present (multi-homed); any match means no NAT.
    let sender_nat = !srcs.any(|n| n.data == want_src);
    let our_nat = dst_n.data != h(dst);
    Some((sender_nat, our_nat))
}

/// SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4): SHA2-256 (2), SHA2-384 (3), SHA2-512 (4) and
/// Identity (5, RFC 8420 for Ed25519), as strongSwan announces.
pub(crate) fn signature_hash_algorithms() -> Payload {
    Payload::Notify(Notify::new(
        NotifyType::SignatureHashAlgorithms,
        vec![0, 2, 0, 3, 0, 4, 0, 5],
    ))
}

/// IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 §2.3).
pub(crate) fn fragmentation_supported() -> Payload {
    Payload::Notify(Notify::new(
        NotifyType::Ikev2FragmentationSupported,
        Vec::new(),
    ))
}

/// INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9242 §3.1).
pub(crate) fn intermediate_supported() -> Payload {
    Payload::Notify(Notify::new(
        NotifyType::IntermediateExchangeSupported,
        Vec::new(),
    ))
}
