//! IKEv1 key derivation and message protection (RFC 2409 §5, §5.5, Appendix B): the hash
//! and PRF of the negotiated hash algorithm, SKEYID and SKEYID_d/_a/_e for pre-shared keys,
//! the cipher key expanded from SKEYID_e, HASH_I/HASH_R, the phase 1 and phase 2 IVs, quick
//! mode KEYMAT, and CBC encryption whose IV chains from message to message.
//!
//! Primitives: aws-lc-rs (SHA-1/SHA-2, HMAC, AES-CBC, 3DES-CBC); MD5 and HMAC-MD5 come from
//! RustCrypto's `md-5` and `hmac`, because aws-lc-rs offers no MD5 and IOS peers still
//! negotiate `hash md5`. MD5 is only ever a phase 1 hash/PRF here, behind `allow_legacy`.

use ::hmac::Mac;
use aws_lc_rs::cipher::DecryptingKey;
use aws_lc_rs::cipher::EncryptingKey;
use aws_lc_rs::cipher::EncryptionContext;
use aws_lc_rs::cipher::UnboundCipherKey;
use aws_lc_rs::digest;
use aws_lc_rs::iv::FixedLength;
use md5::Digest;
use zeroize::Zeroizing;

use crate::crypto::CryptoError;
use crate::secret::Secret;
use crate::transform::Encr;

/// The phase 1 hash algorithm (RFC 2409 Appendix A, class 2; IANA "Hash Algorithm"). Its
/// HMAC is the PRF, as no PRF is negotiated (§4: "the HMAC version of the negotiated hash
/// algorithm is used as a pseudo-random function").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// MD5 (1). Legacy.
    Md5,
    /// SHA (2), i.e. SHA-1. Legacy.
    Sha1,
    /// SHA2-256 (4).
    Sha256,
    /// SHA2-384 (5).
    Sha384,
    /// SHA2-512 (6).
    Sha512,
}

impl HashAlg {
    /// The attribute value.
    pub fn id(self) -> u16 {
        match self {
            Self::Md5 => 1,
            Self::Sha1 => 2,
            Self::Sha256 => 4,
            Self::Sha384 => 5,
            Self::Sha512 => 6,
        }
    }

    /// From the attribute value.
    pub fn from_id(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Md5,
            2 => Self::Sha1,
            4 => Self::Sha256,
            5 => Self::Sha384,
            6 => Self::Sha512,
            _ => return None,
        })
    }

    /// True for algorithms only accepted behind `allow_legacy`.
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::Md5 | Self::Sha1)
    }

    /// Output length in octets (also the PRF's).
    pub fn output_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The hash of the concatenated parts.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        let alg = match self {
            Self::Md5 => {
                let mut h = md5::Md5::new();
                for p in parts {
                    h.update(p);
                }
                return h.finalize().to_vec();
            }
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        };
        let mut ctx = digest::Context::new(alg);
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    /// `prf(key, parts[0] | parts[1] | ...)`: HMAC with this hash.
    pub fn prf(self, key: &[u8], parts: &[&[u8]]) -> Secret {
        let alg = match self {
            Self::Md5 => {
                // HMAC takes keys of any length (RFC 2104 §2), so this cannot fail.
                let mut m = ::hmac::Hmac::<md5::Md5>::new_from_slice(key)
                    .expect("HMAC accepts any key length");
                for p in parts {
                    m.update(p);
                }
                return Secret::from_slice(&m.finalize().into_bytes());
            }
            Self::Sha1 => aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => aws_lc_rs::hmac::HMAC_SHA256,
            Self::Sha384 => aws_lc_rs::hmac::HMAC_SHA384,
            Self::Sha512 => aws_lc_rs::hmac::HMAC_SHA512,
        };
        let key = aws_lc_rs::hmac::Key::new(alg, key);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        Secret::from_slice(ctx.sign().as_ref())
    }
}

/// The ISAKMP SA's keys (RFC 2409 §5), pre-shared key authentication.
pub struct Phase1Keys {
    /// SKEYID = prf(pre-shared-key, Ni_b | Nr_b).
    pub skeyid: Secret,
    /// SKEYID_d: keying material for quick mode KEYMAT.
    pub skeyid_d: Secret,
    /// SKEYID_a: the key of every phase 2 and informational HASH.
    pub skeyid_a: Secret,
    /// SKEYID_e, from which the cipher key is taken (Appendix B).
    pub skeyid_e: Secret,
    /// The cipher key of ISAKMP messages.
    pub enc_key: Secret,
}

impl std::fmt::Debug for Phase1Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Phase1Keys(<redacted>)")
    }
}

/// SKEYID for pre-shared keys: prf(pre-shared-key, Ni_b | Nr_b) (RFC 2409 §5).
pub fn skeyid_psk(h: HashAlg, psk: &[u8], ni: &[u8], nr: &[u8]) -> Secret {
    h.prf(psk, &[ni, nr])
}

/// SKEYID for signature authentication: prf(Ni_b | Nr_b, g^xy) (RFC 2409 §5); RSA
/// signatures in main mode build on it.
pub fn skeyid_sig(h: HashAlg, ni: &[u8], nr: &[u8], gxy: &[u8]) -> Secret {
    let key = Zeroizing::new([ni, nr].concat());
    h.prf(&key, &[gxy])
}

/// RFC 2409 §5, whatever the authentication method:
///
/// ```text
/// SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
/// SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
/// SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)
/// ```
///
/// and the cipher key from SKEYID_e per Appendix B.
pub fn derive_phase1(
    h: HashAlg,
    encr: Encr,
    skeyid: Secret,
    gxy: &[u8],
    cky_i: u64,
    cky_r: u64,
) -> Phase1Keys {
    let (ci, cr) = (cky_i.to_be_bytes(), cky_r.to_be_bytes());
    let skeyid_d = h.prf(skeyid.expose(), &[gxy, &ci, &cr, &[0]]);
    let skeyid_a = h.prf(skeyid.expose(), &[skeyid_d.expose(), gxy, &ci, &cr, &[1]]);
    let skeyid_e = h.prf(skeyid.expose(), &[skeyid_a.expose(), gxy, &ci, &cr, &[2]]);
    let enc_key = expand_cipher_key(h, &skeyid_e, encr.key_len());
    Phase1Keys {
        skeyid,
        skeyid_d,
        skeyid_a,
        skeyid_e,
        enc_key,
    }
}

/// RFC 2409 Appendix B: the cipher key is the first `len` octets of SKEYID_e when it is long
/// enough, else of `Ka = K1 | K2 | K3 ...` with `K1 = prf(SKEYID_e, 0)` (one zero octet) and
/// `Kn = prf(SKEYID_e, Kn-1)`.
pub fn expand_cipher_key(h: HashAlg, skeyid_e: &Secret, len: usize) -> Secret {
    if skeyid_e.len() >= len {
        return Secret::from_slice(&skeyid_e.expose()[..len]);
    }
    let mut ka = Zeroizing::new(Vec::with_capacity(len + h.output_len()));
    let mut k = h.prf(skeyid_e.expose(), &[&[0]]);
    loop {
        ka.extend_from_slice(k.expose());
        if ka.len() >= len {
            break;
        }
        k = h.prf(skeyid_e.expose(), &[k.expose()]);
    }
    Secret::from_slice(&ka[..len])
}

/// HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b) (RFC 2409 §5).
#[allow(clippy::too_many_arguments)]
pub fn hash_i(
    h: HashAlg,
    skeyid: &Secret,
    gxi: &[u8],
    gxr: &[u8],
    cky_i: u64,
    cky_r: u64,
    sai_b: &[u8],
    idii_b: &[u8],
) -> Secret {
    let (ci, cr) = (cky_i.to_be_bytes(), cky_r.to_be_bytes());
    h.prf(skeyid.expose(), &[gxi, gxr, &ci, &cr, sai_b, idii_b])
}

/// HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b) (RFC 2409 §5).
#[allow(clippy::too_many_arguments)]
pub fn hash_r(
    h: HashAlg,
    skeyid: &Secret,
    gxi: &[u8],
    gxr: &[u8],
    cky_i: u64,
    cky_r: u64,
    sai_b: &[u8],
    idir_b: &[u8],
) -> Secret {
    let (ci, cr) = (cky_i.to_be_bytes(), cky_r.to_be_bytes());
    h.prf(skeyid.expose(), &[gxr, gxi, &cr, &ci, sai_b, idir_b])
}

/// The IV of the first encrypted phase 1 message: hash(g^xi | g^xr) cut to the block size
/// (RFC 2409 Appendix B).
pub fn phase1_iv(h: HashAlg, gxi: &[u8], gxr: &[u8], block: usize) -> Vec<u8> {
    let mut d = h.digest(&[gxi, gxr]);
    d.truncate(block);
    d
}

/// The IV of the first message of a phase 2 or informational exchange: hash(last phase 1
/// CBC output block | M-ID) cut to the block size (RFC 2409 Appendix B).
pub fn phase2_iv(h: HashAlg, phase1_last_block: &[u8], message_id: u32, block: usize) -> Vec<u8> {
    let mut d = h.digest(&[phase1_last_block, &message_id.to_be_bytes()]);
    d.truncate(block);
    d
}

/// Quick mode KEYMAT for one direction (RFC 2409 §5.5), `len` octets:
///
/// ```text
/// KEYMAT = K1 | K2 | K3 | ...
/// K1 = prf(SKEYID_d, [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b)
/// Kn = prf(SKEYID_d, Kn-1 | [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b)
/// ```
///
/// `spi` is the SPI of that direction's SA, chosen by its receiver.
// The arguments are the RFC's inputs, one each.
#[allow(clippy::too_many_arguments)]
pub fn quick_mode_keymat(
    h: HashAlg,
    skeyid_d: &Secret,
    gxy: Option<&[u8]>,
    protocol: u8,
    spi: u32,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Secret {
    let gxy = gxy.unwrap_or(&[]);
    let spi = spi.to_be_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(len + h.output_len()));
    let mut prev: Option<Secret> = None;
    while out.len() < len {
        let prev_bytes: &[u8] = prev.as_ref().map_or(&[], Secret::expose);
        let k = h.prf(
            skeyid_d.expose(),
            &[prev_bytes, gxy, &[protocol], &spi, ni, nr],
        );
        out.extend_from_slice(k.expose());
        prev = Some(k);
    }
    Secret::from_slice(&out[..len])
}

/// CBC encryption of ISAKMP messages with the phase 1 cipher (RFC 2409 Appendix B): the
/// caller keeps the IV, which is the last ciphertext block of the previous message of the
/// same exchange ([`Cbc::last_block`]).
pub struct Cbc {
    encr: Encr,
    enc: EncryptingKey,
    dec: DecryptingKey,
}

impl Cbc {
    /// The cipher for `encr` (3DES-CBC or AES-CBC) with `key`.
    pub fn new(encr: Encr, key: &Secret) -> Result<Self, CryptoError> {
        #[allow(deprecated)] // 3DES is legacy, used only behind allow_legacy.
        let alg = match encr {
            Encr::AesCbc { key_bits: 128 } => &aws_lc_rs::cipher::AES_128,
            Encr::AesCbc { key_bits: 192 } => &aws_lc_rs::cipher::AES_192,
            Encr::AesCbc { key_bits: 256 } => &aws_lc_rs::cipher::AES_256,
            Encr::TripleDes => &aws_lc_rs::cipher::DES_EDE3_FOR_LEGACY_USE_ONLY,
            _ => {
                return Err(CryptoError::InvalidSuite { encr, integ: None });
            }
        };
        let unbound = || {
            UnboundCipherKey::new(alg, key.expose()).map_err(|_| CryptoError::BadKeyLength {
                expected: encr.key_len(),
                actual: key.len(),
            })
        };
        Ok(Self {
            encr,
            enc: EncryptingKey::cbc(unbound()?).map_err(|_| CryptoError::WeakKey)?,
            dec: DecryptingKey::cbc(unbound()?).map_err(|_| CryptoError::WeakKey)?,
        })
    }

    /// The block size (8 for 3DES, 16 for AES): also the IV length.
    pub fn block(&self) -> usize {
        self.encr.iv_len()
    }

    /// Encrypts `plain` padded with zero octets to a whole number of blocks. RFC 2409 and
    /// RFC 2408 give the padding no length octet: the receiver finds the end of the payload
    /// chain from the payload lengths and ignores what follows.
    pub fn encrypt(&self, iv: &[u8], plain: &[u8]) -> Vec<u8> {
        let block = self.block();
        let mut buf = plain.to_vec();
        buf.resize(plain.len().div_ceil(block).max(1) * block, 0);
        self.enc
            .less_safe_encrypt(&mut buf, context(iv))
            .expect("the buffer is block-aligned and the IV has the cipher's block length");
        buf
    }

    /// Decrypts `ct` (a whole number of blocks, else [`CryptoError::Truncated`]).
    pub fn decrypt(&self, iv: &[u8], ct: &[u8]) -> Result<Secret, CryptoError> {
        let block = self.block();
        if ct.is_empty() || ct.len() % block != 0 || iv.len() != block {
            return Err(CryptoError::Truncated { len: ct.len() });
        }
        let mut plain = Zeroizing::new(ct.to_vec());
        let len = self
            .dec
            .decrypt(&mut plain[..], context(iv).into())
            .map_err(|_| CryptoError::Truncated { len: ct.len() })?
            .len();
        Ok(Secret::from_slice(&plain[..len]))
    }

    /// The last ciphertext block: the next message's IV (Appendix B).
    pub fn last_block(&self, ct: &[u8]) -> Vec<u8> {
        ct[ct.len().saturating_sub(self.block())..].to_vec()
    }
}

impl std::fmt::Debug for Cbc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cbc")
            .field("encr", &self.encr)
            .finish_non_exhaustive()
    }
}

fn context(iv: &[u8]) -> EncryptionContext {
    match iv.len() {
        16 => EncryptionContext::Iv128(FixedLength::try_from(iv).expect("length matched")),
        _ => EncryptionContext::Iv64(FixedLength::try_from(iv).expect("3DES IV is 8 octets")),
    }
}

#[cfg(test)]
mod tests;
