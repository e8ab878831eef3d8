//! Cryptographic primitives for IKEv2, all backed by aws-lc-rs (MODP arithmetic by
//! crypto-bigint's constant-time Montgomery code). Nothing here is hand-rolled.
//!
//! # Contract for the engine
//!
//! * **Randomness** comes only from the engine's seeded [`Rng`]; every function that needs
//!   random bytes takes `&mut Rng`. The one exception is signing ([`sig::SigningKey::sign`]):
//!   aws-lc-rs draws RSA-PSS salts and ECDSA nonces from AWS-LC's internal DRBG and offers no
//!   way to inject them. Ed25519 and PKCS#1 v1.5 signatures are deterministic.
//! * **Peer input never panics**: a bad KE value, a forged ICV or a short SK payload returns
//!   a [`CryptoError`].
//! * **Secrets** come back as [`Secret`] (zeroized on drop, `Debug` prints `<redacted>`).
//!
//! # Map (RFC 7296 section → item)
//!
//! | What | Item |
//! |---|---|
//! | KE payload data, g^ir (§3.4, RFC 5903 §7, RFC 8031, RFC 3526) | [`dh::KeyExchange`]: `generate(group, rng)`, `public()`, `agree(self, peer)` |
//! | additional key exchanges, ML-KEM (RFC 9370, FIPS 203) | [`kem::KeInitiator`], [`kem::respond`] |
//! | prf, prf+ (§2.13) | [`prf`], [`prf_plus`], [`prf_plus_public_seed`], [`prf_plus_of_prf`] (AWS-LC's HKDF), reusable [`PrfKey`] |
//! | key lengths (§2.14, RFC 4868, RFC 5282, RFC 7634) | [`Prf::output_len`], [`Integ::key_len`], [`Integ::icv_len`], [`Encr::key_len`], [`Encr::salt_len`], [`Encr::keymat_len`] |
//! | Encrypted / Encrypted Fragment payload (§3.14, RFC 5282, RFC 7634, RFC 7383) | [`sk::SkCipher`] |
//! | RFC 7427 / method 1 signatures | [`sig::SigningKey`] (PKCS#8 DER / PEM), [`sig::verify`], [`sig::SignatureScheme`] |
//! | SKEYSEED, SK_*, rekey, KEYMAT (§2.14, §2.18, §2.17) | [`crate::keys::derive_ike_keys`], [`crate::keys::derive_rekeyed_ike_keys`], [`crate::keys::derive_child_keys`] |
//! | AUTH (§2.15), NAT-D (§2.23) | [`crate::keys::signed_octets`], [`crate::keys::psk_auth`], [`crate::keys::verify_psk_auth`], [`crate::keys::nat_detection_hash`] |
//!
//! ```ignore
//! // IKE_SA_INIT, initiator side:
//! let ke = KeyExchange::generate(DhGroup::Curve25519, &mut rng)?;
//! send(ke.public());
//! let g_ir = ke.agree(peer_ke_data)?;             // consumes the private key
//! let keys = keys::derive_ike_keys(suite, ni, nr, &g_ir, spi_i, spi_r);
//! let out = keys.initiator_cipher()?;             // protects what the initiator sends
//! // Lengths first (they are in the AAD), then seal; or seal_append onto the header bytes.
//! let body_len = out.sealed_len(inner_payloads.len());
//! let body = out.seal(&mut rng, &header_and_sk_generic_header, &inner_payloads);
//! let inner = peer_cipher.open(&header_and_sk_generic_header, &received_body)?;
//! ```

pub mod dh;
pub mod kem;
pub mod sig;
pub mod sk;

use aws_lc_rs::hkdf;
use aws_lc_rs::hmac;

pub use dh::KeyExchange;
pub use sk::SkCipher;

use crate::secret::Secret;
use crate::transform::{DhGroup, Encr, Integ, Prf};

/// The engine's random number generator: ChaCha20 seeded by the caller (the agent seeds it from
/// the OS), so the crate never touches OS randomness and tests are reproducible.
pub type Rng = rand_chacha::ChaCha20Rng;

/// Everything that can go wrong in the crypto layer. Variants caused by peer input
/// ([`InvalidPublicValue`](Self::InvalidPublicValue), [`IntegrityCheckFailed`](Self::IntegrityCheckFailed),
/// [`InvalidPadding`](Self::InvalidPadding), [`Truncated`](Self::Truncated),
/// [`SignatureInvalid`](Self::SignatureInvalid)) are never logged with key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key exchange group is not implemented.
    #[error("unsupported key exchange group {0}")]
    UnsupportedGroup(u16),
    /// The peer's KE data has the wrong length, is not on the curve, or is a degenerate MODP
    /// value (0, 1, p-1, >= p).
    #[error("invalid key exchange public value for group {group:?}")]
    InvalidPublicValue {
        /// The negotiated group.
        group: DhGroup,
    },
    /// RFC 8031 §2: an all-zero X25519 result means the peer sent a low-order point.
    #[error("key exchange for group {group:?} produced an all-zero shared secret")]
    AllZeroSharedSecret {
        /// The negotiated group.
        group: DhGroup,
    },
    /// Generating an ephemeral key failed (AWS-LC rejected every candidate scalar).
    #[error("key generation failed for group {group:?}")]
    KeyGeneration {
        /// The group being generated.
        group: DhGroup,
    },
    /// The transform combination is not usable (AEAD with INTEG, CBC without INTEG, or an
    /// AES key size other than 128/192/256).
    #[error("invalid transform combination {encr:?} with {integ:?}")]
    InvalidSuite {
        /// The cipher.
        encr: Encr,
        /// The integrity algorithm, if any.
        integ: Option<Integ>,
    },
    /// A key has the wrong length for its algorithm.
    #[error("bad key length: expected {expected} bytes, got {actual}")]
    BadKeyLength {
        /// Bytes required.
        expected: usize,
        /// Bytes supplied.
        actual: usize,
    },
    /// AWS-LC refused the key (3DES weak or degenerate subkeys).
    #[error("key rejected by the cipher (weak or degenerate key)")]
    WeakKey,
    /// The Encrypted payload body is shorter than IV + one block + ICV, or the ciphertext is
    /// not a whole number of blocks.
    #[error("encrypted payload too short or misaligned ({len} bytes)")]
    Truncated {
        /// Length of the body received.
        len: usize,
    },
    /// The ICV (or AEAD tag) did not verify. RFC 7296 §2.21: drop silently.
    #[error("integrity check failed")]
    IntegrityCheckFailed,
    /// The Pad Length byte points past the start of the decrypted data.
    #[error("invalid padding length")]
    InvalidPadding,
    /// A private key could not be parsed (not PKCS#8 / PEM, or an unsupported key type).
    #[error("invalid private key")]
    InvalidPrivateKey,
    /// The key type cannot produce the requested signature scheme.
    #[error("signature scheme does not match the key type")]
    SignatureSchemeMismatch,
    /// The RFC 7427 AlgorithmIdentifier is not one we support.
    #[error("unsupported signature algorithm")]
    UnsupportedSignatureAlgorithm,
    /// The signature did not verify (or the public key could not be parsed).
    #[error("signature verification failed")]
    SignatureInvalid,
    /// AWS-LC failed to produce a signature.
    #[error("signing failed")]
    SigningFailed,
    /// ML-KEM key generation, encapsulation or decapsulation failed (for encapsulation: the
    /// peer's encapsulation key failed FIPS 203 §7.2's checks).
    #[error("key encapsulation failed for {method:?}")]
    KemFailed {
        /// The method.
        method: crate::transform::KeMethod,
    },
}

// ---------------------------------------------------------------------------------------------
// PRF (RFC 7296 §2.13)
// ---------------------------------------------------------------------------------------------

/// `prf(key, data)` (RFC 7296 §2.13). HMAC accepts any key length, so `key` is used whole.
pub fn prf(alg: Prf, key: &[u8], data: &[u8]) -> Secret {
    PrfKey::new(alg, key).compute(&[data])
}

/// `prf+(key, seed)` truncated to `len` bytes (RFC 7296 §2.13):
/// `T1 = prf(K, S | 0x01)`, `Tn = prf(K, Tn-1 | S | n)`.
///
/// # Panics
/// If `len > 255 * alg.output_len()`: the counter is one octet, and the lengths requested by
/// this crate are fixed by the negotiated suite (at most a few hundred bytes), never by peer
/// input.
pub fn prf_plus(alg: Prf, key: &[u8], seed: &[u8], len: usize) -> Secret {
    prf_plus_public_seed(alg, key, &[seed], len)
}

/// `prf+(K, seed[0] | seed[1] | …)` truncated to `len` bytes (RFC 7296 §2.13), in one call
/// into AWS-LC's HKDF-Expand. RFC 5869 §2.3 defines `T(N) = HMAC(PRK, T(N-1) | info | N)`
/// with `T(0)` empty, which is prf+ with `PRK = K` and `info = S` for every PRF of IKEv2 (all
/// are HMAC): AWS-LC keys HMAC once and resets it per block, where [`PrfKey::plus`] copies a
/// keyed context per block.
///
/// The seed must hold no secret: aws-lc-rs joins the parts in a buffer it does not wipe
/// (Nonces and SPIs are public; a PFS g^ir seed goes through [`PrfKey::plus`]). `key` stays
/// in a buffer wiped on drop.
///
/// # Panics
/// As [`prf_plus`].
pub fn prf_plus_public_seed(alg: Prf, key: &[u8], seed: &[&[u8]], len: usize) -> Secret {
    check_plus_len(alg, len);
    // HKDF takes a PRK of at most one digest output (64 bytes); longer keys (never SK_d or
    // SKEYSEED, whose length is the PRF's output) take the HMAC path.
    if key.len() > aws_lc_rs::digest::MAX_OUTPUT_LEN {
        return PrfKey::new(alg, key).plus(seed, len);
    }
    expand(&hkdf::Prk::new_less_safe(hkdf_alg(alg), key), seed, len)
}

/// [`prf_plus_public_seed`] into `out` (its length is the length asked for): key
/// derivation fills a zeroizing buffer of the caller's, on its stack, and splits the keys
/// out of it, without a heap copy of the whole stream (issue 20).
///
/// # Panics
/// As [`prf_plus`].
pub(crate) fn prf_plus_public_seed_into(alg: Prf, key: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    check_plus_len(alg, out.len());
    if key.len() > aws_lc_rs::digest::MAX_OUTPUT_LEN {
        out.copy_from_slice(PrfKey::new(alg, key).plus(seed, out.len()).expose());
        return;
    }
    expand_into(&hkdf::Prk::new_less_safe(hkdf_alg(alg), key), seed, out);
}

/// `prf+(prf(key, data), seed)` truncated to `len` bytes: SKEYSEED and its key stream
/// (RFC 7296 §2.14) in one call into AWS-LC's HKDF, whose Extract step is
/// `PRK = HMAC(salt, IKM)` (RFC 5869 §2.2), i.e. `prf(key, data)` with `salt = key`, and whose
/// Expand step is prf+ (see [`prf_plus_public_seed`]). SKEYSEED itself is never exposed.
///
/// `key` and `seed` must be public (the nonces and SPIs of §2.14): aws-lc-rs keeps the salt
/// and the joined seed in buffers it does not wipe. `data` (g^ir) is kept in one it wipes.
///
/// # Panics
/// As [`prf_plus`].
pub fn prf_plus_of_prf(
    alg: Prf,
    public_key: &[u8],
    data: &Secret,
    seed: &[&[u8]],
    len: usize,
) -> Secret {
    check_plus_len(alg, len);
    let prk = hkdf::Salt::new(hkdf_alg(alg), public_key).extract(data.expose());
    expand(&prk, seed, len)
}

/// [`prf_plus_of_prf`] into `out` (see [`prf_plus_public_seed_into`]).
///
/// # Panics
/// As [`prf_plus`].
pub(crate) fn prf_plus_of_prf_into(
    alg: Prf,
    public_key: &[u8],
    data: &Secret,
    seed: &[&[u8]],
    out: &mut [u8],
) {
    check_plus_len(alg, out.len());
    let prk = hkdf::Salt::new(hkdf_alg(alg), public_key).extract(data.expose());
    expand_into(&prk, seed, out);
}

/// HKDF-Expand of `prk` over `info` into a new secret of `len` bytes.
fn expand(prk: &hkdf::Prk, info: &[&[u8]], len: usize) -> Secret {
    let mut out = zeroize::Zeroizing::new(vec![0u8; len]);
    expand_into(prk, info, &mut out);
    Secret::new(std::mem::take(&mut *out))
}

/// HKDF-Expand of `prk` over `info`, filling `out`.
fn expand_into(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("length checked against 255 blocks; the output buffer has the asked length");
}

fn check_plus_len(alg: Prf, len: usize) {
    assert!(
        len <= 255 * alg.output_len(),
        "prf+ length {len} exceeds 255 blocks: a suite-derived length, never peer input"
    );
}

/// A PRF keyed once and reused, so repeated prf / prf+ calls with one key (SK_d for every
/// Child SA, SK_p for every AUTH) skip the HMAC key schedule.
pub struct PrfKey {
    alg: Prf,
    key: hmac::Key,
}

impl PrfKey {
    /// Keys the PRF.
    pub fn new(alg: Prf, key: &[u8]) -> Self {
        Self {
            alg,
            key: hmac::Key::new(hmac_alg(alg), key),
        }
    }

    /// The PRF algorithm.
    pub fn alg(&self) -> Prf {
        self.alg
    }

    /// `prf(K, parts[0] | parts[1] | …)` without concatenating the parts.
    pub fn compute(&self, parts: &[&[u8]]) -> Secret {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(part);
        }
        Secret::from_slice(ctx.sign().as_ref())
    }

    /// `prf(K, parts[0] | parts[1] | …)` on the stack, for values that are sent or that
    /// go into non-secret bytes anyway: an AUTH payload's data, the MACedIDFor of signed
    /// octets (RFC 7296 §2.15). No heap [`Secret`] per AUTH (issue 20).
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(part);
        }
        ctx.sign()
    }

    /// `prf(K, parts[0] | parts[1] | …)` compared in constant time with `expected`, without
    /// the allocation of [`PrfKey::compute`]: the responder checks a COOKIE this way for every
    /// IKE_SA_INIT of a flood (RFC 7296 §2.6).
    pub fn verify(&self, parts: &[&[u8]], expected: &[u8]) -> bool {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(part);
        }
        let tag = ctx.sign();
        let tag = tag.as_ref();
        expected.len() == tag.len()
            && expected
                .iter()
                .zip(tag)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// `prf+(K, parts[0] | parts[1] | …)` truncated to `len` bytes (RFC 7296 §2.13).
    ///
    /// # Panics
    /// If `len > 255 * output_len` (see [`prf_plus`]).
    pub fn plus(&self, seed: &[&[u8]], len: usize) -> Secret {
        let hlen = self.alg.output_len();
        check_plus_len(self.alg, len);
        // Allocated once at its final size so no reallocation leaves an unzeroized copy.
        let mut out = Vec::with_capacity(len.div_ceil(hlen) * hlen);
        let mut counter = 1u8;
        while out.len() < len {
            let mut ctx = hmac::Context::with_key(&self.key);
            if counter > 1 {
                ctx.update(&out[out.len() - hlen..]);
            }
            for part in seed {
                ctx.update(part);
            }
            ctx.update(&[counter]);
            out.extend_from_slice(ctx.sign().as_ref());
            counter = counter.wrapping_add(1);
        }
        out.truncate(len);
        Secret::new(out)
    }
}

impl std::fmt::Debug for PrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrfKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn hmac_alg(alg: Prf) -> hmac::Algorithm {
    match alg {
        Prf::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        Prf::HmacSha256 => hmac::HMAC_SHA256,
        Prf::HmacSha384 => hmac::HMAC_SHA384,
        Prf::HmacSha512 => hmac::HMAC_SHA512,
    }
}

fn hkdf_alg(alg: Prf) -> hkdf::Algorithm {
    match alg {
        Prf::HmacSha1 => hkdf::HKDF_SHA1_FOR_LEGACY_USE_ONLY,
        Prf::HmacSha256 => hkdf::HKDF_SHA256,
        Prf::HmacSha384 => hkdf::HKDF_SHA384,
        Prf::HmacSha512 => hkdf::HKDF_SHA512,
    }
}

fn integ_hmac_alg(integ: Integ) -> hmac::Algorithm {
    match integ {
        Integ::HmacSha1_96 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        Integ::HmacSha256_128 => hmac::HMAC_SHA256,
        Integ::HmacSha384_192 => hmac::HMAC_SHA384,
        Integ::HmacSha512_256 => hmac::HMAC_SHA512,
    }
}

// ---------------------------------------------------------------------------------------------
// Key and output lengths
// ---------------------------------------------------------------------------------------------

impl Prf {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }

    /// Length of SK_d, SK_pi and SK_pr. RFC 7296 §2.14: for HMAC PRFs the preferred key size
    /// is the output size (RFC 4868 §2.1.2 for SHA-2).
    pub fn preferred_key_len(self) -> usize {
        self.output_len()
    }
}

impl Integ {
    /// Key length in bytes (RFC 2404: 20; RFC 4868 §2.1.1: the full hash output).
    pub fn key_len(self) -> usize {
        match self {
            Self::HmacSha1_96 => 20,
            Self::HmacSha256_128 => 32,
            Self::HmacSha384_192 => 48,
            Self::HmacSha512_256 => 64,
        }
    }

    /// Truncated ICV length in bytes (RFC 2404: 96 bits; RFC 4868 §2.3: half the hash).
    pub fn icv_len(self) -> usize {
        match self {
            Self::HmacSha1_96 => 12,
            Self::HmacSha256_128 => 16,
            Self::HmacSha384_192 => 24,
            Self::HmacSha512_256 => 32,
        }
    }
}

impl Encr {
    /// Cipher key length in bytes, without any salt. Returns 0 for an AES size other than
    /// 128/192/256 (rejected by [`SkCipher::new`]).
    pub fn key_len(self) -> usize {
        match self {
            Self::TripleDes => 24,
            Self::AesCbc { key_bits } | Self::AesGcm16 { key_bits } => match key_bits {
                128 | 192 | 256 => usize::from(key_bits / 8),
                _ => 0,
            },
            Self::ChaCha20Poly1305 => 32,
        }
    }

    /// Salt taken from the key material after the key: 4 bytes for AES-GCM (RFC 5282 §7.1,
    /// RFC 4106 §8.1) and ChaCha20-Poly1305 (RFC 7634 §2 and §4), none for CBC.
    pub fn salt_len(self) -> usize {
        match self {
            Self::AesGcm16 { .. } | Self::ChaCha20Poly1305 => 4,
            Self::TripleDes | Self::AesCbc { .. } => 0,
        }
    }

    /// Bytes of SK_e / ESP encryption KEYMAT: key followed by salt (same in IKE and ESP).
    pub fn keymat_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    /// Length of the IV carried in each message (RFC 7296 §3.14 for CBC: the block size;
    /// RFC 5282 §3.1 and RFC 7634 §2: 8 octets for AEAD).
    pub fn iv_len(self) -> usize {
        match self {
            Self::TripleDes => 8,
            Self::AesCbc { .. } => 16,
            Self::AesGcm16 { .. } | Self::ChaCha20Poly1305 => 8,
        }
    }
}

/// Fills `buf` from the engine RNG.
pub(crate) fn fill(rng: &mut Rng, buf: &mut [u8]) {
    rand_core::RngCore::fill_bytes(rng, buf);
}

#[cfg(test)]
mod tests;
