//! Key derivation and authentication values built on [`crate::crypto`]:
//! SKEYSEED and SK_* (RFC 7296 §2.14), IKE SA rekey (§2.18), Child SA KEYMAT (§2.17),
//! PSK AUTH and the signed octets (§2.15), and the NAT_DETECTION hashes (§2.23).
//!
//! SPIs are passed as `u64` and serialized big-endian, as they appear in the IKE header.

use std::net::IpAddr;

use aws_lc_rs::constant_time;
use aws_lc_rs::digest;

use crate::config::Psk;
use crate::crypto::{CryptoError, PrfKey, SkCipher, prf_plus_public_seed_into};
use crate::secret::Secret;
use crate::transform::{Encr, Integ, Prf};

/// The negotiated IKE SA transforms that key derivation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeSuite {
    /// PRF transform.
    pub prf: Prf,
    /// Encryption transform.
    pub encr: Encr,
    /// Integrity transform; `None` for AEAD ciphers (RFC 5282 §8).
    pub integ: Option<Integ>,
}

/// The seven IKE SA keys (RFC 7296 §2.14). For AEAD suites `sk_ai`/`sk_ar` are empty and
/// `sk_ei`/`sk_er` carry key | 4-byte salt.
#[derive(Debug)]
pub struct IkeKeys {
    /// The suite the keys were derived for.
    pub suite: IkeSuite,
    /// Derives Child SA KEYMAT and the next IKE SA's SKEYSEED.
    pub sk_d: Secret,
    /// Integrity key for messages sent by the original initiator.
    pub sk_ai: Secret,
    /// Integrity key for messages sent by the original responder.
    pub sk_ar: Secret,
    /// Encryption key for messages sent by the original initiator.
    pub sk_ei: Secret,
    /// Encryption key for messages sent by the original responder.
    pub sk_er: Secret,
    /// Used in the initiator's AUTH payload (MACedIDForI, §2.15).
    pub sk_pi: Secret,
    /// Used in the responder's AUTH payload (MACedIDForR, §2.15).
    pub sk_pr: Secret,
}

impl IkeKeys {
    /// The cipher protecting messages the original initiator sends (SK_ei / SK_ai).
    pub fn initiator_cipher(&self) -> Result<SkCipher, CryptoError> {
        self.cipher(&self.sk_ei, &self.sk_ai)
    }

    /// The cipher protecting messages the original responder sends (SK_er / SK_ar).
    pub fn responder_cipher(&self) -> Result<SkCipher, CryptoError> {
        self.cipher(&self.sk_er, &self.sk_ar)
    }

    fn cipher(&self, enc: &Secret, integ: &Secret) -> Result<SkCipher, CryptoError> {
        let IkeSuite {
            encr, integ: alg, ..
        } = self.suite;
        SkCipher::new(encr, alg, enc, alg.map(|_| integ))
    }
}

/// IKE_SA_INIT key derivation (RFC 7296 §2.14):
/// `SKEYSEED = prf(Ni | Nr, g^ir)`, then
/// `{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)`.
/// `ni`/`nr` are the Nonce Data; HMAC PRFs take the whole `Ni | Nr` as key.
pub fn derive_ike_keys(
    suite: IkeSuite,
    ni: &[u8],
    nr: &[u8],
    g_ir: &Secret,
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    // Ni | Nr joined on the stack when the nonces have the usual lengths (RFC 7296 §2.10: at
    // least half the PRF key size; we send 32 octets), on the heap otherwise.
    let mut joined = [0u8; 2 * NONCE_ON_STACK];
    let heap;
    let nonces: &[u8] = if ni.len() + nr.len() <= joined.len() {
        joined[..ni.len()].copy_from_slice(ni);
        joined[ni.len()..ni.len() + nr.len()].copy_from_slice(nr);
        &joined[..ni.len() + nr.len()]
    } else {
        heap = [ni, nr].concat();
        &heap
    };
    // SKEYSEED and prf+ in one HKDF call: the PRF key here is the public Ni | Nr.
    let mut stream = KeyStream::new(ike_keys_len(suite));
    crate::crypto::prf_plus_of_prf_into(
        suite.prf,
        nonces,
        g_ir,
        &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
        stream.bytes(),
    );
    split_ike_keys(suite, stream.bytes())
}

/// Nonce lengths joined on the stack for SKEYSEED's key (longer ones are joined on the heap).
const NONCE_ON_STACK: usize = 64;

/// A prf+ output stream: on the stack up to the longest IKE SA key set (3 × 64 octets of
/// SK_d / SK_p, 2 × 64 of SK_a, 2 × 36 of SK_e: 392), so deriving keys costs no heap copy of
/// the whole stream (issue 20); longer streams go to a zeroizing heap buffer. The used part
/// is wiped on drop.
struct KeyStream {
    stack: [u8; STREAM_ON_STACK],
    heap: Option<zeroize::Zeroizing<Vec<u8>>>,
    len: usize,
}

const STREAM_ON_STACK: usize = 392;

impl KeyStream {
    fn new(len: usize) -> Self {
        Self {
            stack: [0; STREAM_ON_STACK],
            heap: (len > STREAM_ON_STACK).then(|| zeroize::Zeroizing::new(vec![0u8; len])),
            len,
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        match &mut self.heap {
            Some(v) => v,
            None => &mut self.stack[..self.len],
        }
    }
}

impl Drop for KeyStream {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.stack[..self.len.min(STREAM_ON_STACK)]);
    }
}

/// Rekeyed IKE SA keys (RFC 7296 §2.18): `SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)`
/// with the **old** SA's PRF ("it is the old IKE SA's PRF that is used to generate
/// SKEYSEED"), then prf+ as in §2.14 with the new suite's PRF and the new SPIs.
///
/// With additional key exchanges run in IKE_FOLLOWUP_KE exchanges (RFC 9370 §2.2.4) their
/// secrets follow the nonces: `SKEYSEED = prf(SK_d (old), SK(0) | Ni | Nr | SK(1) | ... |
/// SK(n))`, `g_ir` being SK(0) and `addke` SK(1)..SK(n) in ADDKE order (empty otherwise).
// Each argument is a distinct protocol input of §2.18; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn derive_rekeyed_ike_keys(
    old_prf: Prf,
    old_sk_d: &Secret,
    suite: IkeSuite,
    g_ir: &Secret,
    ni: &[u8],
    nr: &[u8],
    addke: &[Secret],
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    let mut parts: Vec<&[u8]> = vec![g_ir.expose(), ni, nr];
    parts.extend(addke.iter().map(Secret::expose));
    let skeyseed = PrfKey::new(old_prf, old_sk_d.expose()).compute(&parts);
    expand_ike_keys(suite, &skeyseed, ni, nr, spi_i, spi_r)
}

fn expand_ike_keys(
    suite: IkeSuite,
    skeyseed: &Secret,
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    let mut stream = KeyStream::new(ike_keys_len(suite));
    prf_plus_public_seed_into(
        suite.prf,
        skeyseed.expose(),
        &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
        stream.bytes(),
    );
    split_ike_keys(suite, stream.bytes())
}

/// Length of `SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr` (§2.14).
fn ike_keys_len(suite: IkeSuite) -> usize {
    let a_len = suite.integ.map_or(0, Integ::key_len);
    3 * suite.prf.preferred_key_len() + 2 * a_len + 2 * suite.encr.keymat_len()
}

/// The seven keys, taken in §2.14's order from the prf+ stream.
fn split_ike_keys(suite: IkeSuite, stream: &[u8]) -> IkeKeys {
    let prf_len = suite.prf.preferred_key_len();
    let a_len = suite.integ.map_or(0, Integ::key_len);
    let e_len = suite.encr.keymat_len();
    let mut rest = stream;
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Secret::from_slice(head)
    };
    IkeKeys {
        suite,
        sk_d: take(prf_len),
        sk_ai: take(a_len),
        sk_ar: take(a_len),
        sk_ei: take(e_len),
        sk_er: take(e_len),
        sk_pi: take(prf_len),
        sk_pr: take(prf_len),
    }
}

/// Child SA keys (RFC 7296 §2.17), one set per direction. `*_i` protect traffic from the
/// initiator of the exchange that created the SA to its responder; `*_r` the reverse.
/// For AEAD the encryption keys carry key | salt (RFC 4106 §8.1, RFC 7634 §4) and the integrity
/// keys are empty.
#[derive(Debug)]
pub struct ChildKeys {
    /// Initiator → responder encryption key.
    pub encr_i: Secret,
    /// Initiator → responder integrity key.
    pub integ_i: Secret,
    /// Responder → initiator encryption key.
    pub encr_r: Secret,
    /// Responder → initiator integrity key.
    pub integ_r: Secret,
}

/// Child SA KEYMAT (RFC 7296 §2.17): `KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr)`, taken in
/// order encr_i, integ_i, encr_r, integ_r ("all keys for SAs carrying data from the initiator
/// to the responder are taken before SAs going from the responder to the initiator";
/// encryption key before integrity key). `g_ir` is `Some` only for a CREATE_CHILD_SA with
/// PFS. `ni`/`nr` are from the exchange that creates the Child SA.
///
/// PFS with additional key exchanges (RFC 9370 §2.2.4): `KEYMAT = prf+(SK_d, SK(0) | Ni | Nr
/// | SK(1) | ... | SK(n))`, `g_ir` being SK(0) and `addke` the rest in ADDKE order.
// Each argument is a distinct protocol input of §2.17.
#[allow(clippy::too_many_arguments)]
pub fn derive_child_keys(
    prf: Prf,
    sk_d: &Secret,
    encr: Encr,
    integ: Option<Integ>,
    g_ir: Option<&Secret>,
    ni: &[u8],
    nr: &[u8],
    addke: &[Secret],
) -> ChildKeys {
    let e_len = encr.keymat_len();
    let a_len = integ.map_or(0, Integ::key_len);
    let total = 2 * (e_len + a_len);
    let mut stream = KeyStream::new(total);
    match g_ir {
        // The PFS seed holds g^ir: keep it out of HKDF's unwiped seed buffer.
        Some(g) => {
            let mut seed: Vec<&[u8]> = vec![g.expose(), ni, nr];
            seed.extend(addke.iter().map(Secret::expose));
            stream
                .bytes()
                .copy_from_slice(PrfKey::new(prf, sk_d.expose()).plus(&seed, total).expose());
        }
        None => prf_plus_public_seed_into(prf, sk_d.expose(), &[ni, nr], stream.bytes()),
    }
    let (i, r) = stream.bytes().split_at(e_len + a_len);
    ChildKeys {
        encr_i: Secret::from_slice(&i[..e_len]),
        integ_i: Secret::from_slice(&i[e_len..]),
        encr_r: Secret::from_slice(&r[..e_len]),
        integ_r: Secret::from_slice(&r[e_len..]),
    }
}

/// The octets an AUTH payload signs or MACs (RFC 7296 §2.15):
/// `RealMessage | Nonce | prf(SK_p, IDx')`.
///
/// * Initiator's AUTH: `real_message` = our IKE_SA_INIT request as sent, `peer_nonce` = Nr,
///   `sk_p` = SK_pi, `id_body` = our IDi payload body (ID Type, 3 reserved octets, data; no
///   generic payload header).
/// * Responder's AUTH: IKE_SA_INIT response, Ni, SK_pr, IDr body.
///
/// Verifying the peer's AUTH uses the peer's message, our nonce, the peer's SK_p and ID.
pub fn signed_octets(
    prf: Prf,
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &Secret,
    id_body: &[u8],
) -> Vec<u8> {
    // Straight into the octets (which are not kept secret), without a heap Secret between.
    let maced_id = PrfKey::new(prf, sk_p.expose()).tag(&[id_body]);
    let maced_id = maced_id.as_ref();
    let mut out = Vec::with_capacity(real_message.len() + peer_nonce.len() + maced_id.len());
    out.extend_from_slice(real_message);
    out.extend_from_slice(peer_nonce);
    out.extend_from_slice(maced_id);
    out
}

/// Shared-key AUTH data (RFC 7296 §2.15):
/// `AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)`, the inner prf
/// keyed once per PSK and PRF ([`Psk`]).
pub fn psk_auth(prf: Prf, psk: &Psk, signed_octets: &[u8]) -> Secret {
    psk.key_pad(prf).compute(&[signed_octets])
}

/// [`psk_auth`] as the AUTH payload's data, which is sent as it is: no heap [`Secret`]
/// copied into it.
pub(crate) fn psk_auth_data(prf: Prf, psk: &Psk, signed_octets: &[u8]) -> Vec<u8> {
    psk.key_pad(prf).tag(&[signed_octets]).as_ref().to_vec()
}

/// Checks a peer's shared-key AUTH in constant time (RFC 7296 §2.15).
pub fn verify_psk_auth(
    prf: Prf,
    psk: &Psk,
    signed_octets: &[u8],
    received: &[u8],
) -> Result<(), CryptoError> {
    // The expected value stays on the stack (one AUTH, compared and dropped).
    let expected = psk.key_pad(prf).tag(&[signed_octets]);
    constant_time::verify_slices_are_equal(expected.as_ref(), received)
        .map_err(|_| CryptoError::IntegrityCheckFailed)
}

/// NAT_DETECTION_SOURCE_IP / _DESTINATION_IP data (RFC 7296 §2.23):
/// `SHA-1(SPIi | SPIr | IP | Port)`, IP as 4 or 16 octets, port in network order.
/// In IKE_SA_INIT requests `spi_r` is 0.
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, ip: IpAddr, port: u16) -> [u8; 20] {
    // At most 8 + 8 + 16 + 2 bytes: joined on the stack and hashed in one call (AWS-LC's
    // one-shot SHA-1), without a digest context per hash.
    let mut input = [0u8; 34];
    input[..8].copy_from_slice(&spi_i.to_be_bytes());
    input[8..16].copy_from_slice(&spi_r.to_be_bytes());
    let ip_len = match ip {
        IpAddr::V4(v4) => {
            input[16..20].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            input[16..32].copy_from_slice(&v6.octets());
            16
        }
    };
    let end = 16 + ip_len + 2;
    input[16 + ip_len..end].copy_from_slice(&port.to_be_bytes());
    let mut out = [0u8; 20];
    out.copy_from_slice(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &input[..end]).as_ref());
    out
}

#[cfg(test)]
mod tests;
