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

/// A key exchange method as an additional key exchange (RFC 9370 §2.2.1: ADDKE transforms
/// take Transform Type 4 values): a classic group, or ML-KEM (FIPS 203; IANA Transform Type 4
/// IDs 35, 36, 37), where the initiator sends the encapsulation key and the responder the
/// ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeMethod {
    /// A Diffie-Hellman group, as in IKE_SA_INIT.
    Dh(DhGroup),
    /// ML-KEM-512 (35).
    MlKem512,
    /// ML-KEM-768 (36).
    MlKem768,
    /// ML-KEM-1024 (37).
    MlKem1024,
}

impl KeMethod {
    /// IANA Transform Type 4 ID.
    pub fn id(self) -> u16 {
        match self {
            Self::Dh(g) => g.id(),
            Self::MlKem512 => 35,
            Self::MlKem768 => 36,
            Self::MlKem1024 => 37,
        }
    }

    /// Looks a method up by its IANA number.
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            35 => Self::MlKem512,
            36 => Self::MlKem768,
            37 => Self::MlKem1024,
            _ => Self::Dh(DhGroup::from_id(id)?),
        })
    }

    /// True for ML-KEM (post-quantum) methods.
    pub fn is_pq(self) -> bool {
        !matches!(self, Self::Dh(_))
    }

    /// True for methods only accepted behind the legacy opt-in.
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::Dh(g) if g.is_legacy())
    }
}

/// Number of additional key exchange transform types, ADDKE1..ADDKE7 (RFC 9370 §2.2.1:
/// Transform Types 6..12).
pub const ADDKE_SLOTS: usize = 7;

/// The additional key exchanges of one suite: entry `i` is ADDKE(i+1) (Transform Type 6+i).
/// `None` means no exchange in that round: the NONE transform (ID 0) or no transform of that
/// type at all, which RFC 9370 §2.2.1 treats alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddKes(pub [Option<KeMethod>; ADDKE_SLOTS]);

impl AddKes {
    /// No additional key exchanges (a classic RFC 7296 suite).
    pub const NONE: Self = Self([None; ADDKE_SLOTS]);

    /// True when no additional key exchange takes place.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The exchanges in the order they run (RFC 9370 §2.2.2: by transform type), each with
    /// its 1-based ADDKE number.
    pub fn rounds(&self) -> impl Iterator<Item = (u8, KeMethod)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.map(|m| (i as u8 + 1, m)))
    }

    /// True when any transform needs the legacy opt-in.
    pub fn is_legacy(&self) -> bool {
        self.0.iter().flatten().any(|m| m.is_legacy())
    }
}
