//! IKEv2 transform identifiers (IANA "Internet Key Exchange Version 2 (IKEv2) Parameters",
//! Transform Type Values 1-5) as typed enums shared by the wire codec, proposal selection and
//! the crypto provider.

/// ENCR transforms (Transform Type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encr {
    /// ENCR_3DES (3). Legacy: only behind an explicit opt-in.
    TripleDes,
    /// ENCR_AES_CBC (12) with Key Length attribute 128, 192 or 256.
    AesCbc {
        /// Key Length attribute (RFC 7296 §3.3.5).
        key_bits: u16,
    },
    /// ENCR_AES_GCM_16 (20), RFC 5282 / RFC 4106, 16-octet ICV.
    AesGcm16 {
        /// Key Length attribute (RFC 7296 §3.3.5).
        key_bits: u16,
    },
    /// ENCR_CHACHA20_POLY1305 (28), RFC 7634 / RFC 7634 for ESP.
    ChaCha20Poly1305,
}

impl Encr {
    /// IANA transform ID.
    pub fn id(self) -> u16 {
        match self {
            Self::TripleDes => 3,
            Self::AesCbc { .. } => 12,
            Self::AesGcm16 { .. } => 20,
            Self::ChaCha20Poly1305 => 28,
        }
    }

    /// Key Length attribute value, when the transform carries one (RFC 7296 §3.3.5).
    pub fn key_length_attr(self) -> Option<u16> {
        match self {
            Self::AesCbc { key_bits } | Self::AesGcm16 { key_bits } => Some(key_bits),
            Self::TripleDes | Self::ChaCha20Poly1305 => None,
        }
    }

    /// True for combined-mode (AEAD) ciphers, which take no INTEG transform (RFC 5282 §8).
    pub fn is_aead(self) -> bool {
        matches!(self, Self::AesGcm16 { .. } | Self::ChaCha20Poly1305)
    }

    /// True for transforms only accepted behind the legacy opt-in.
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::TripleDes)
    }
}

/// PRF transforms (Transform Type 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA1 (2). Legacy.
    HmacSha1,
    /// PRF_HMAC_SHA2_256 (5).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (6).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (7).
    HmacSha512,
}

impl Prf {
    /// IANA transform ID.
    pub fn id(self) -> u16 {
        match self {
            Self::HmacSha1 => 2,
            Self::HmacSha256 => 5,
            Self::HmacSha384 => 6,
            Self::HmacSha512 => 7,
        }
    }
}

/// INTEG transforms (Transform Type 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Integ {
    /// AUTH_HMAC_SHA1_96 (2). Legacy.
    HmacSha1_96,
    /// AUTH_HMAC_SHA2_256_128 (12), RFC 4868.
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192 (13), RFC 4868.
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256 (14), RFC 4868.
    HmacSha512_256,
}

impl Integ {
    /// IANA transform ID.
    pub fn id(self) -> u16 {
        match self {
            Self::HmacSha1_96 => 2,
            Self::HmacSha256_128 => 12,
            Self::HmacSha384_192 => 13,
            Self::HmacSha512_256 => 14,
        }
    }
}

/// Key exchange methods (Transform Type 4, "D-H groups").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// 1024-bit MODP group 2 (RFC 7296 App. B). Legacy.
    Modp1024,
    /// 1536-bit MODP group 5 (RFC 3526 §2). Legacy: IKEv1 peers (IOS's `group 5`) still
    /// offer it.
    Modp1536,
    /// 2048-bit MODP group 14 (RFC 3526).
    Modp2048,
    /// 3072-bit MODP group 15 (RFC 3526).
    Modp3072,
    /// 4096-bit MODP group 16 (RFC 3526).
    Modp4096,
    /// 256-bit random ECP group 19 (RFC 5903).
    Ecp256,
    /// 384-bit random ECP group 20 (RFC 5903).
    Ecp384,
    /// 521-bit random ECP group 21 (RFC 5903).
    Ecp521,
    /// Curve25519 group 31 (RFC 8031).
    Curve25519,
}

impl DhGroup {
    /// IANA transform ID (the group number).
    pub fn id(self) -> u16 {
        match self {
            Self::Modp1024 => 2,
            Self::Modp1536 => 5,
            Self::Modp2048 => 14,
            Self::Modp3072 => 15,
            Self::Modp4096 => 16,
            Self::Ecp256 => 19,
            Self::Ecp384 => 20,
            Self::Ecp521 => 21,
            Self::Curve25519 => 31,
        }
    }

    /// Looks up a group by its IANA number.
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            2 => Self::Modp1024,
            5 => Self::Modp1536,
            14 => Self::Modp2048,
            15 => Self::Modp3072,
            16 => Self::Modp4096,
            19 => Self::Ecp256,
            20 => Self::Ecp384,
            21 => Self::Ecp521,
            31 => Self::Curve25519,
            _ => return None,
        })
    }

    /// True for groups only accepted behind the legacy opt-in.
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::Modp1024 | Self::Modp1536)
    }
}

/// Extended Sequence Numbers (Transform Type 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Esn {
    /// No ESN (0).
    No,
    /// ESN (1).
    Yes,
}
