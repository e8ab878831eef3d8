//! AUTH payload signatures: RFC 7427 Digital Signature (AUTH method 14) and, for verification
//! only, RFC 7296 §3.8 method 1 (RSA PKCS#1 v1.5 with SHA-1).
//!
//! RFC 7427 §3: the AUTH data is `len(AlgorithmIdentifier) | AlgorithmIdentifier | Signature`;
//! the wire codec splits it, this module maps the AlgorithmIdentifier DER to a
//! [`SignatureScheme`] and signs / verifies the signed octets
//! ([`crate::keys::signed_octets`]). ECDSA signatures here are DER `ECDSA-Sig-Value`
//! (RFC 7427 §3 uses the X.509 encodings, unlike the fixed r|s of methods 9-11, RFC 4754).
//!
//! Public keys for verification are SubjectPublicKeyInfo DER (as in a certificate); raw forms
//! (PKCS#1 RSAPublicKey, SEC1 point, 32-byte Ed25519) are accepted too. Certificate chain
//! validation is not done here.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

use zeroize::Zeroizing;

use super::CryptoError;

/// A signature algorithm usable in the AUTH payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// ECDSA P-256 with SHA-256, DER signature (RFC 7427 A.3.1).
    EcdsaP256Sha256,
    /// ECDSA P-384 with SHA-384, DER signature (RFC 7427 A.3.2).
    EcdsaP384Sha384,
    /// ECDSA P-521 with SHA-512, DER signature (RFC 7427 A.3.3).
    EcdsaP521Sha512,
    /// Ed25519 (RFC 8420 §2).
    Ed25519,
    /// RSA PKCS#1 v1.5 with SHA-256 (RFC 7427 A.1.2).
    RsaPkcs1Sha256,
    /// RSA PKCS#1 v1.5 with SHA-384 (RFC 7427 A.1.3).
    RsaPkcs1Sha384,
    /// RSA PKCS#1 v1.5 with SHA-512 (RFC 7427 A.1.4).
    RsaPkcs1Sha512,
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 (RFC 7427 A.4.2 with SHA-256 parameters).
    RsaPssSha256,
    /// RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48.
    RsaPssSha384,
    /// RSASSA-PSS, SHA-512, MGF1-SHA-512, salt 64.
    RsaPssSha512,
}

impl SignatureScheme {
    /// Every scheme, in our order of preference (for SIGNATURE_HASH_ALGORITHMS and selection).
    pub const ALL: [Self; 10] = [
        Self::Ed25519,
        Self::EcdsaP256Sha256,
        Self::EcdsaP384Sha384,
        Self::EcdsaP521Sha512,
        Self::RsaPssSha256,
        Self::RsaPssSha384,
        Self::RsaPssSha512,
        Self::RsaPkcs1Sha256,
        Self::RsaPkcs1Sha384,
        Self::RsaPkcs1Sha512,
    ];

    /// The DER AlgorithmIdentifier placed in the AUTH payload (RFC 7427 §3, Appendix A).
    pub fn algorithm_identifier(self) -> &'static [u8] {
        match self {
            Self::EcdsaP256Sha256 => &ALG_ECDSA_SHA256,
            Self::EcdsaP384Sha384 => &ALG_ECDSA_SHA384,
            Self::EcdsaP521Sha512 => &ALG_ECDSA_SHA512,
            Self::Ed25519 => &ALG_ED25519,
            Self::RsaPkcs1Sha256 => &ALG_RSA_SHA256,
            Self::RsaPkcs1Sha384 => &ALG_RSA_SHA384,
            Self::RsaPkcs1Sha512 => &ALG_RSA_SHA512,
            Self::RsaPssSha256 => &ALG_RSA_PSS_SHA256,
            Self::RsaPssSha384 => &ALG_RSA_PSS_SHA384,
            Self::RsaPssSha512 => &ALG_RSA_PSS_SHA512,
        }
    }

    /// Maps a received AlgorithmIdentifier to a scheme (exact DER match).
    pub fn from_algorithm_identifier(der: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.algorithm_identifier() == der)
    }

    /// The RFC 7427 §4 / IANA "IKEv2 Hash Algorithms" number for SIGNATURE_HASH_ALGORITHMS
    /// (SHA2-256 = 2, SHA2-384 = 3, SHA2-512 = 4, Identity = 5 for Ed25519 per RFC 8420).
    pub fn hash_algorithm_id(self) -> u16 {
        match self {
            Self::EcdsaP256Sha256 | Self::RsaPkcs1Sha256 | Self::RsaPssSha256 => 2,
            Self::EcdsaP384Sha384 | Self::RsaPkcs1Sha384 | Self::RsaPssSha384 => 3,
            Self::EcdsaP521Sha512 | Self::RsaPkcs1Sha512 | Self::RsaPssSha512 => 4,
            Self::Ed25519 => 5,
        }
    }

    fn verification_alg(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Self::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
            Self::EcdsaP521Sha512 => &signature::ECDSA_P521_SHA512_ASN1,
            Self::Ed25519 => &signature::ED25519,
            Self::RsaPkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RsaPkcs1Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::RsaPkcs1Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::RsaPssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::RsaPssSha384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::RsaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
        }
    }
}

/// A private key for AUTH signatures, loaded from PKCS#8 DER or PEM.
pub struct SigningKey {
    inner: KeyInner,
}

enum KeyInner {
    Ecdsa(EcdsaKeyPair, SignatureScheme),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl SigningKey {
    /// Parses an unencrypted PKCS#8 `PrivateKeyInfo` (RSA, ECDSA P-256/384/521 or Ed25519).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let inner = if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            KeyInner::Ed25519(k)
        } else if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            KeyInner::Rsa(k)
        } else {
            let curves = [
                (
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    SignatureScheme::EcdsaP256Sha256,
                ),
                (
                    &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                    SignatureScheme::EcdsaP384Sha384,
                ),
                (
                    &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
                    SignatureScheme::EcdsaP521Sha512,
                ),
            ];
            curves
                .into_iter()
                .find_map(|(alg, scheme)| {
                    EcdsaKeyPair::from_pkcs8(alg, der)
                        .ok()
                        .map(|k| KeyInner::Ecdsa(k, scheme))
                })
                .ok_or(CryptoError::InvalidPrivateKey)?
        };
        Ok(Self { inner })
    }

    /// Parses a PEM private key (RFC 7468): `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY`
    /// (RFC 5915, P-256/384/521) or `RSA PRIVATE KEY` (PKCS#1). Encrypted PEM is rejected.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CryptoError> {
        let (label, der) =
            pem_rfc7468::decode_vec(pem).map_err(|_| CryptoError::InvalidPrivateKey)?;
        // The decoded DER is key material: wipe it once parsed.
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "EC PRIVATE KEY" => ECDSA_CURVES
                .into_iter()
                .find_map(|(alg, scheme)| {
                    EcdsaKeyPair::from_private_key_der(alg, &der)
                        .ok()
                        .map(|k| KeyInner::Ecdsa(k, scheme))
                })
                .map(|inner| Self { inner })
                .ok_or(CryptoError::InvalidPrivateKey),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der)
                .map(|k| Self {
                    inner: KeyInner::Rsa(k),
                })
                .map_err(|_| CryptoError::InvalidPrivateKey),
            _ => Err(CryptoError::InvalidPrivateKey),
        }
    }

    /// The scheme we use by default for this key: Ed25519, ECDSA with the curve's hash, or
    /// RSA-PSS with SHA-256.
    pub fn default_scheme(&self) -> SignatureScheme {
        match &self.inner {
            KeyInner::Ecdsa(_, scheme) => *scheme,
            KeyInner::Ed25519(_) => SignatureScheme::Ed25519,
            KeyInner::Rsa(_) => SignatureScheme::RsaPssSha256,
        }
    }

    /// True if this key can sign with `scheme`.
    pub fn supports(&self, scheme: SignatureScheme) -> bool {
        match &self.inner {
            KeyInner::Ecdsa(_, own) => *own == scheme,
            KeyInner::Ed25519(_) => scheme == SignatureScheme::Ed25519,
            KeyInner::Rsa(_) => matches!(
                scheme,
                SignatureScheme::RsaPkcs1Sha256
                    | SignatureScheme::RsaPkcs1Sha384
                    | SignatureScheme::RsaPkcs1Sha512
                    | SignatureScheme::RsaPssSha256
                    | SignatureScheme::RsaPssSha384
                    | SignatureScheme::RsaPssSha512
            ),
        }
    }

    /// The public key as raw bytes (SEC1 point, 32-byte Ed25519, PKCS#1 RSAPublicKey), as
    /// accepted by [`verify`].
    pub fn public_key(&self) -> &[u8] {
        match &self.inner {
            KeyInner::Ecdsa(k, _) => k.public_key().as_ref(),
            KeyInner::Ed25519(k) => k.public_key().as_ref(),
            KeyInner::Rsa(k) => k.public_key().as_ref(),
        }
    }

    /// The PKCS#8 encoding of an RSA key, for the IKEv1 signature that aws-lc-rs's API does
    /// not offer (`crate::v1` signs HASH_I/HASH_R with PKCS#1 v1.5 and no DigestInfo);
    /// `None` for other keys.
    pub(crate) fn rsa_pkcs8(&self) -> Option<Zeroizing<Vec<u8>>> {
        use aws_lc_rs::encoding::AsDer;
        match &self.inner {
            KeyInner::Rsa(k) => k.as_der().ok().map(|d| Zeroizing::new(d.as_ref().to_vec())),
            KeyInner::Ecdsa(..) | KeyInner::Ed25519(_) => None,
        }
    }

    /// Signs `message` (the signed octets) with `scheme`. RSA-PSS salts and ECDSA nonces come
    /// from AWS-LC's own DRBG: aws-lc-rs cannot take them from the engine [`super::Rng`].
    pub fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if !self.supports(scheme) {
            return Err(CryptoError::SignatureSchemeMismatch);
        }
        let rng = SystemRandom::new();
        match &self.inner {
            KeyInner::Ecdsa(k, _) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CryptoError::SigningFailed),
            KeyInner::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            KeyInner::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match scheme {
                    SignatureScheme::RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                    SignatureScheme::RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
                    SignatureScheme::RsaPkcs1Sha512 => &signature::RSA_PKCS1_SHA512,
                    SignatureScheme::RsaPssSha384 => &signature::RSA_PSS_SHA384,
                    SignatureScheme::RsaPssSha512 => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PSS_SHA256,
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &rng, message, &mut sig)
                    .map_err(|_| CryptoError::SigningFailed)?;
                Ok(sig)
            }
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("scheme", &self.default_scheme())
            .finish_non_exhaustive()
    }
}

/// Verifies an RFC 7427 signature over `message` with the peer's `public_key`.
pub fn verify(
    scheme: SignatureScheme,
    public_key: &[u8],
    message: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    signature::UnparsedPublicKey::new(scheme.verification_alg(), public_key)
        .verify(message, sig)
        .map_err(|_| CryptoError::SignatureInvalid)
}

/// Verifies AUTH method 1, "RSA Digital Signature" (RFC 7296 §3.8): PKCS#1 v1.5 with SHA-1.
/// Interop with old peers only; we never sign with it.
pub fn verify_rsa_pkcs1_sha1(
    public_key: &[u8],
    message: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    signature::UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        public_key,
    )
    .verify(message, sig)
    .map_err(|_| CryptoError::SignatureInvalid)
}

/// ECDSA signing algorithms tried when loading a key, with the scheme each key gets: the hash
/// matched to the curve (RFC 5656 §6.2.1 pairing, as strongSwan uses).
const ECDSA_CURVES: [(&signature::EcdsaSigningAlgorithm, SignatureScheme); 3] = [
    (
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        SignatureScheme::EcdsaP256Sha256,
    ),
    (
        &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        SignatureScheme::EcdsaP384Sha384,
    ),
    (
        &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        SignatureScheme::EcdsaP521Sha512,
    ),
];

// RFC 7427 Appendix A AlgorithmIdentifier DER blobs.

/// A.1.2 sha256WithRSAEncryption (1.2.840.113549.1.1.11), NULL parameters.
const ALG_RSA_SHA256: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
/// A.1.3 sha384WithRSAEncryption (1.2.840.113549.1.1.12).
const ALG_RSA_SHA384: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
/// A.1.4 sha512WithRSAEncryption (1.2.840.113549.1.1.13).
const ALG_RSA_SHA512: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];
/// A.3.1 ecdsa-with-SHA256 (1.2.840.10045.4.3.2), parameters absent.
const ALG_ECDSA_SHA256: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// A.3.2 ecdsa-with-SHA384 (1.2.840.10045.4.3.3).
const ALG_ECDSA_SHA384: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
/// A.3.3 ecdsa-with-SHA512 (1.2.840.10045.4.3.4).
const ALG_ECDSA_SHA512: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
];
/// RFC 8420 §2: id-Ed25519 (1.3.101.112), parameters absent.
const ALG_ED25519: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// RSASSA-PSS AlgorithmIdentifier (RFC 7427 A.4, RFC 4055 §3.1): id-RSASSA-PSS with
/// `{ [0] hashAlgorithm, [1] maskGenAlgorithm mgf1(hash), [2] saltLength = hash length }`,
/// hash AlgorithmIdentifiers with NULL parameters (as strongSwan sends).
macro_rules! pss_alg_id {
    ($hash_oid_last:expr, $salt:expr) => {
        [
            0x30,
            0x41, // SEQUENCE (65)
            0x06,
            0x09,
            0x2a,
            0x86,
            0x48,
            0x86,
            0xf7,
            0x0d,
            0x01,
            0x01,
            0x0a, // id-RSASSA-PSS
            0x30,
            0x34, // RSASSA-PSS-params (52)
            0xa0,
            0x0f, // [0] hashAlgorithm
            0x30,
            0x0d,
            0x06,
            0x09,
            0x60,
            0x86,
            0x48,
            0x01,
            0x65,
            0x03,
            0x04,
            0x02,
            $hash_oid_last,
            0x05,
            0x00, // sha2 OID, NULL
            0xa1,
            0x1c, // [1] maskGenAlgorithm
            0x30,
            0x1a,
            0x06,
            0x09,
            0x2a,
            0x86,
            0x48,
            0x86,
            0xf7,
            0x0d,
            0x01,
            0x01,
            0x08, // id-mgf1
            0x30,
            0x0d,
            0x06,
            0x09,
            0x60,
            0x86,
            0x48,
            0x01,
            0x65,
            0x03,
            0x04,
            0x02,
            $hash_oid_last,
            0x05,
            0x00, // sha2 OID, NULL
            0xa2,
            0x03,
            0x02,
            0x01,
            $salt, // [2] saltLength INTEGER
        ]
    };
}
const ALG_RSA_PSS_SHA256: [u8; 67] = pss_alg_id!(0x01, 0x20);
const ALG_RSA_PSS_SHA384: [u8; 67] = pss_alg_id!(0x02, 0x30);
const ALG_RSA_PSS_SHA512: [u8; 67] = pss_alg_id!(0x03, 0x40);
