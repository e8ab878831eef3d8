//! The Encrypted (SK) payload cipher: RFC 7296 §3.14 for CBC + HMAC, RFC 5282 for AES-GCM,
//! RFC 7634 for ChaCha20-Poly1305. The same object protects Encrypted Fragment payloads
//! (RFC 7383 §2.5): only the AAD differs, and it is always passed in by the caller.
//!
//! Body layout (what follows the SK generic payload header):
//! `IV | Ciphertext(Inner payloads | Padding | Pad Length) | ICV`.
//!
//! "AAD" here always means the bytes from the start of the IKE header up to the IV (IKE
//! header + any unencrypted payloads + the SK payload's generic header, lengths already
//! final). For AEAD that is the associated data (RFC 5282 §5.1); for CBC the ICV covers
//! AAD | IV | Ciphertext, i.e. the whole message except the ICV itself (RFC 7296 §3.14).

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{self, DecryptingKey, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

use super::{CryptoError, Rng, fill, integ_hmac_alg};
use crate::secret::Secret;
use crate::transform::{Encr, Integ};

/// Protects and unprotects SK / SKF payload bodies for one direction of one IKE SA. Built once
/// per SA and direction: the AEAD key, the CBC key schedules and the HMAC key are all set up in
/// [`new`](Self::new), so [`seal`](Self::seal) and [`open`](Self::open) do no key setup.
pub struct SkCipher {
    encr: Encr,
    inner: Inner,
}

// The CBC key schedules and HMAC context are kilobytes, the AEAD key a pointer: the CBC
// variant is boxed so that an SkCipher (and the SaKeys, Common and IkeSa holding it) stays
// small, as an IkeSa is moved whole on every state change and table insert.
enum Inner {
    Aead { key: LessSafeKey, salt: [u8; 4] },
    Cbc(Box<Cbc>),
}

struct Cbc {
    enc: EncryptingKey,
    dec: DecryptingKey,
    block: usize,
    integ: Integ,
    mac: hmac::Key,
}

impl SkCipher {
    /// Builds the cipher for `encr` (+ `integ` for CBC). `enc_key` is SK_e: for AEAD it is the
    /// key followed by the 4-byte salt ([`Encr::keymat_len`]). `integ_key` is SK_a and must be
    /// given exactly when `integ` is.
    pub fn new(
        encr: Encr,
        integ: Option<Integ>,
        enc_key: &Secret,
        integ_key: Option<&Secret>,
    ) -> Result<Self, CryptoError> {
        let bad_suite = CryptoError::InvalidSuite { encr, integ };
        if encr.key_len() == 0 || encr.is_aead() != integ.is_none() {
            return Err(bad_suite);
        }
        check_len(encr.keymat_len(), enc_key.len())?;
        let key_bytes = enc_key.expose();
        let inner = match (encr, integ) {
            (Encr::AesGcm16 { .. } | Encr::ChaCha20Poly1305, None) => {
                let alg = match encr {
                    Encr::AesGcm16 { key_bits: 128 } => &aead::AES_128_GCM,
                    Encr::AesGcm16 { key_bits: 192 } => &aead::AES_192_GCM,
                    Encr::AesGcm16 { .. } => &aead::AES_256_GCM,
                    _ => &aead::CHACHA20_POLY1305,
                };
                let (key, salt) = key_bytes.split_at(encr.key_len());
                let unbound = UnboundKey::new(alg, key).map_err(|_| CryptoError::BadKeyLength {
                    expected: encr.key_len(),
                    actual: key.len(),
                })?;
                Inner::Aead {
                    key: LessSafeKey::new(unbound),
                    salt: salt.try_into().map_err(|_| bad_suite.clone())?,
                }
            }
            (Encr::AesCbc { .. } | Encr::TripleDes, Some(integ)) => {
                let mac_key = integ_key.ok_or_else(|| bad_suite.clone())?;
                check_len(integ.key_len(), mac_key.len())?;
                let alg = cbc_alg(encr);
                let unbound = || {
                    UnboundCipherKey::new(alg, key_bytes).map_err(|_| CryptoError::BadKeyLength {
                        expected: encr.key_len(),
                        actual: key_bytes.len(),
                    })
                };
                Inner::Cbc(Box::new(Cbc {
                    enc: EncryptingKey::cbc(unbound()?).map_err(|_| CryptoError::WeakKey)?,
                    dec: DecryptingKey::cbc(unbound()?).map_err(|_| CryptoError::WeakKey)?,
                    block: alg.block_len(),
                    integ,
                    mac: hmac::Key::new(integ_hmac_alg(integ), mac_key.expose()),
                }))
            }
            _ => return Err(bad_suite),
        };
        if integ_key.is_some() && integ.is_none() {
            return Err(CryptoError::InvalidSuite { encr, integ });
        }
        Ok(Self { encr, inner })
    }

    /// The cipher transform.
    pub fn encr(&self) -> Encr {
        self.encr
    }

    /// Bytes of IV at the start of the body.
    pub fn iv_len(&self) -> usize {
        self.encr.iv_len()
    }

    /// Bytes of ICV (or AEAD tag) at the end of the body.
    pub fn icv_len(&self) -> usize {
        match &self.inner {
            // RFC 5282 §3 (ENCR_AES_GCM_16) and RFC 7634 §2: 16-octet tag.
            Inner::Aead { .. } => 16,
            Inner::Cbc(c) => c.integ.icv_len(),
        }
    }

    /// Length of the body [`seal`](Self::seal) produces for `plaintext_len` bytes of inner
    /// payloads, so the caller can write the SK payload and IKE header lengths (which are part
    /// of the AAD) before sealing.
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        self.iv_len() + self.ciphertext_len(plaintext_len) + self.icv_len()
    }

    fn ciphertext_len(&self, plaintext_len: usize) -> usize {
        match &self.inner {
            // RFC 5282 §3: no block alignment needed; we send no padding, only Pad Length = 0.
            Inner::Aead { .. } => plaintext_len + 1,
            // RFC 7296 §3.14: plaintext | padding | pad length is a multiple of the block size.
            Inner::Cbc(c) => (plaintext_len + 1).div_ceil(c.block) * c.block,
        }
    }

    /// Encrypts `plaintext` (the inner payloads) and returns `IV | Ciphertext | ICV`, exactly
    /// [`sealed_len`](Self::sealed_len) bytes. `aad` is the message from the IKE header up to
    /// the IV, with final lengths.
    pub fn seal(&self, rng: &mut Rng, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; self.sealed_len(plaintext.len())];
        self.seal_to(rng, aad, plaintext, &mut body);
        body
    }

    /// Like [`seal`](Self::seal) but appends the body to `message`, whose current contents
    /// are the AAD (IKE header … SK generic header). Saves a copy on the send path.
    pub fn seal_append(&self, rng: &mut Rng, message: &mut Vec<u8>, plaintext: &[u8]) {
        let start = message.len();
        message.resize(start + self.sealed_len(plaintext.len()), 0);
        let (aad, body) = message.split_at_mut(start);
        self.seal_to(rng, aad, plaintext, body);
    }

    /// Like [`seal_append`](Self::seal_append) with the plaintext already in place, so that a
    /// sender encodes its inner payloads straight into the message: `message` holds the AAD
    /// (`aad_len` bytes), then [`iv_len`](Self::iv_len) bytes of room for the IV (any value),
    /// then the plaintext. On return it holds `AAD | IV | Ciphertext | ICV`, the bytes
    /// `seal_append` makes from the same AAD, plaintext and RNG state.
    ///
    /// # Panics
    /// If `message` is shorter than `aad_len + iv_len()`.
    pub fn seal_in_place(&self, rng: &mut Rng, message: &mut Vec<u8>, aad_len: usize) {
        let plaintext_len = message.len() - aad_len - self.iv_len();
        message.resize(aad_len + self.sealed_len(plaintext_len), 0);
        let (aad, body) = message.split_at_mut(aad_len);
        self.seal_body(rng, aad, plaintext_len, body);
    }

    fn seal_to(&self, rng: &mut Rng, aad: &[u8], plaintext: &[u8], body: &mut [u8]) {
        let iv_len = self.iv_len();
        body[iv_len..iv_len + plaintext.len()].copy_from_slice(plaintext);
        self.seal_body(rng, aad, plaintext.len(), body);
    }

    /// Seals `body` = `IV room | plaintext (plaintext_len) | room for padding and ICV`.
    fn seal_body(&self, rng: &mut Rng, aad: &[u8], plaintext_len: usize, body: &mut [u8]) {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        let ct_len = body.len() - iv_len - icv_len;
        let (iv, rest) = body.split_at_mut(iv_len);
        let (ct, icv) = rest.split_at_mut(ct_len);
        // RFC 7296 §3.14 (CBC: random, unpredictable IV) and RFC 5282 §3.1 / RFC 7634 §2 (AEAD:
        // must never repeat under one key; 64 random bits keep collisions negligible at IKE
        // message rates).
        fill(rng, iv);
        let pad_len = ct_len - plaintext_len - 1;
        ct[plaintext_len..ct_len - 1].fill(0);
        // pad_len < block size <= 16, so it fits the one-octet Pad Length field.
        ct[ct_len - 1] = pad_len as u8;
        match &self.inner {
            Inner::Aead { key, salt } => {
                let nonce = aead_nonce(salt, iv);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), ct)
                    .expect("AEAD seal fails only on oversized input; IKE messages are < 64 KiB");
                icv.copy_from_slice(tag.as_ref());
            }
            Inner::Cbc(c) => {
                c.enc
                    .less_safe_encrypt(ct, cbc_context(iv))
                    .expect("ct is block-aligned and the IV has the cipher's block length");
                let mut ctx = hmac::Context::with_key(&c.mac);
                ctx.update(aad);
                ctx.update(iv);
                ctx.update(ct);
                icv.copy_from_slice(&ctx.sign().as_ref()[..icv.len()]);
            }
        }
    }

    /// Verifies and decrypts an SK/SKF body (`IV | Ciphertext | ICV`), returning the inner
    /// payloads with padding removed. For CBC the ICV is checked, in constant time, before any
    /// decryption. Errors: [`CryptoError::Truncated`] (too short / misaligned),
    /// [`CryptoError::IntegrityCheckFailed`], [`CryptoError::InvalidPadding`].
    pub fn open(&self, aad: &[u8], body: &[u8]) -> Result<Secret, CryptoError> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        let truncated = CryptoError::Truncated { len: body.len() };
        let min_ct = match &self.inner {
            Inner::Aead { .. } => 1,
            Inner::Cbc(c) => c.block,
        };
        if body.len() < iv_len + min_ct + icv_len {
            return Err(truncated);
        }
        let (iv, rest) = body.split_at(iv_len);
        let (ct, icv) = rest.split_at(rest.len() - icv_len);
        // Decrypted bytes live only in zeroizing storage.
        let mut plain = Zeroizing::new(ct.to_vec());
        let len = match &self.inner {
            Inner::Aead { key, salt } => {
                let nonce = aead_nonce(salt, iv);
                key.open_in_place_separate_tag(nonce, Aad::from(aad), icv, &mut plain[..])
                    .map_err(|_| CryptoError::IntegrityCheckFailed)?
                    .len()
            }
            Inner::Cbc(c) => {
                let Cbc {
                    dec, mac, block, ..
                } = &**c;
                let mut ctx = hmac::Context::with_key(mac);
                ctx.update(aad);
                ctx.update(iv);
                ctx.update(ct);
                let tag = ctx.sign();
                constant_time::verify_slices_are_equal(&tag.as_ref()[..icv_len], icv)
                    .map_err(|_| CryptoError::IntegrityCheckFailed)?;
                if ct.len() % block != 0 {
                    return Err(truncated);
                }
                dec.decrypt(&mut plain[..], cbc_context(iv).into())
                    .map_err(|_| truncated)?
                    .len()
            }
        };
        let pad_len = usize::from(*plain[..len].last().ok_or(CryptoError::InvalidPadding)?);
        if pad_len + 1 > len {
            return Err(CryptoError::InvalidPadding);
        }
        plain.truncate(len - pad_len - 1);
        Ok(Secret::new(std::mem::take(&mut *plain)))
    }
}

impl std::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkCipher")
            .field("encr", &self.encr)
            .finish_non_exhaustive()
    }
}

fn check_len(expected: usize, actual: usize) -> Result<(), CryptoError> {
    if expected == actual {
        Ok(())
    } else {
        Err(CryptoError::BadKeyLength { expected, actual })
    }
}

#[allow(deprecated)] // 3DES is legacy, kept for interop only behind Encr::is_legacy.
fn cbc_alg(encr: Encr) -> &'static cipher::Algorithm {
    match encr {
        Encr::AesCbc { key_bits: 128 } => &cipher::AES_128,
        Encr::AesCbc { key_bits: 192 } => &cipher::AES_192,
        Encr::AesCbc { .. } => &cipher::AES_256,
        _ => &cipher::DES_EDE3_FOR_LEGACY_USE_ONLY,
    }
}

fn cbc_context(iv: &[u8]) -> EncryptionContext {
    match iv.len() {
        16 => EncryptionContext::Iv128(FixedLength::try_from(iv).expect("length checked")),
        _ => EncryptionContext::Iv64(FixedLength::try_from(iv).expect("3DES IV is 8 bytes")),
    }
}

/// RFC 5282 §4 / RFC 7634 §2: nonce = salt (4, from the key material) | IV (8, on the wire).
fn aead_nonce(salt: &[u8; 4], iv: &[u8]) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(salt);
    nonce[4..].copy_from_slice(iv);
    Nonce::assume_unique_for_key(nonce)
}
