//! Algorithm names as written in the config, mapped to `ike::transform` identifiers.
//!
//! Names follow what Cisco users type (`aes-gcm-256`, `sha256`, `group14`) without the `esp-`
//! prefixes. The tables are the single source for both parsing and the "expected one of" text.

use ike::transform::{DhGroup, Encr, Integ, KeMethod, Prf};

/// Encryption names (IKE and ESP share them).
pub(crate) const ENCR: &[(&str, Encr)] = &[
    ("aes-gcm-128", Encr::AesGcm16 { key_bits: 128 }),
    ("aes-gcm-192", Encr::AesGcm16 { key_bits: 192 }),
    ("aes-gcm-256", Encr::AesGcm16 { key_bits: 256 }),
    ("aes-cbc-128", Encr::AesCbc { key_bits: 128 }),
    ("aes-cbc-192", Encr::AesCbc { key_bits: 192 }),
    ("aes-cbc-256", Encr::AesCbc { key_bits: 256 }),
    ("chacha20-poly1305", Encr::ChaCha20Poly1305),
    ("3des", Encr::TripleDes),
];

/// Integrity names.
pub(crate) const INTEG: &[(&str, Integ)] = &[
    ("sha256", Integ::HmacSha256_128),
    ("sha384", Integ::HmacSha384_192),
    ("sha512", Integ::HmacSha512_256),
    ("sha1", Integ::HmacSha1_96),
];

/// PRF names.
pub(crate) const PRF: &[(&str, Prf)] = &[
    ("sha256", Prf::HmacSha256),
    ("sha384", Prf::HmacSha384),
    ("sha512", Prf::HmacSha512),
    ("sha1", Prf::HmacSha1),
];

/// DH group names besides `groupN` and the bare number.
pub(crate) const GROUP_NAMES: &[(&str, DhGroup)] = &[
    ("modp1024", DhGroup::Modp1024),
    ("modp1536", DhGroup::Modp1536),
    ("modp2048", DhGroup::Modp2048),
    ("modp3072", DhGroup::Modp3072),
    ("modp4096", DhGroup::Modp4096),
    ("ecp256", DhGroup::Ecp256),
    ("ecp384", DhGroup::Ecp384),
    ("ecp521", DhGroup::Ecp521),
    ("curve25519", DhGroup::Curve25519),
    ("x25519", DhGroup::Curve25519),
];

/// Group numbers we implement, for messages.
pub(crate) const GROUP_NUMBERS: &[u16] = &[2, 5, 14, 15, 16, 19, 20, 21, 31];

/// Looks `name` up in a table, case-insensitively.
pub(crate) fn lookup<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The table's names, comma-separated and quoted, for "expected one of".
pub(crate) fn names<T>(table: &[(&str, T)]) -> String {
    table
        .iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `14`, `"14"`, `"group14"` or `"modp2048"`.
pub(crate) fn group_by_name(name: &str) -> Option<DhGroup> {
    let lower = name.to_ascii_lowercase();
    let num = lower.strip_prefix("group").unwrap_or(&lower);
    if let Ok(n) = num.parse::<u16>() {
        return DhGroup::from_id(n);
    }
    lookup(GROUP_NAMES, &lower)
}

/// All group spellings a user might have meant, for did-you-mean.
pub(crate) fn group_spellings() -> Vec<String> {
    GROUP_NUMBERS
        .iter()
        .map(|n| format!("group{n}"))
        .chain(GROUP_NAMES.iter().map(|(n, _)| (*n).to_owned()))
        .collect()
}

/// True for integrity transforms only accepted behind `allow_legacy`.
pub(crate) fn integ_is_legacy(i: Integ) -> bool {
    matches!(i, Integ::HmacSha1_96)
}

/// True for PRFs only accepted behind `allow_legacy`.
pub(crate) fn prf_is_legacy(p: Prf) -> bool {
    matches!(p, Prf::HmacSha1)
}

/// The PRF matching an integrity algorithm (IKEv2 proposals default the PRF from it).
pub(crate) fn prf_for_integ(i: Integ) -> Prf {
    match i {
        Integ::HmacSha1_96 => Prf::HmacSha1,
        Integ::HmacSha256_128 => Prf::HmacSha256,
        Integ::HmacSha384_192 => Prf::HmacSha384,
        Integ::HmacSha512_256 => Prf::HmacSha512,
    }
}

/// Post-quantum key exchange names (FIPS 203 ML-KEM; strongSwan 6 spells them `mlkem768`).
pub(crate) const KEM_NAMES: &[(&str, KeMethod)] = &[
    ("mlkem512", KeMethod::MlKem512),
    ("mlkem768", KeMethod::MlKem768),
    ("mlkem1024", KeMethod::MlKem1024),
    ("ml-kem-512", KeMethod::MlKem512),
    ("ml-kem-768", KeMethod::MlKem768),
    ("ml-kem-1024", KeMethod::MlKem1024),
];

/// One additional key exchange as written: an ML-KEM name, any DH group spelling, or `none`
/// (`Some(None)`). strongSwan's `ke<N>_` prefix is accepted when N is `round` (1-based).
pub(crate) fn addke_by_name(name: &str, round: usize) -> Result<Option<KeMethod>, String> {
    let lower = name.trim().to_ascii_lowercase();
    let bare = match lower.strip_prefix("ke").and_then(|r| r.split_once('_')) {
        Some((n, rest)) if n.parse::<usize>().is_ok() => {
            if n.parse::<usize>() != Ok(round) {
                return Err(format!(
                    "\"{name}\" is strongSwan's spelling of ADDKE{n}, but this is entry {} \
                     (ADDKE{round}); entry i of the list is ADDKEi",
                    round - 1
                ));
            }
            rest.to_owned()
        }
        _ => lower,
    };
    if bare == "none" {
        return Ok(None);
    }
    if let Some(m) = lookup(KEM_NAMES, &bare) {
        return Ok(Some(m));
    }
    group_by_name(&bare)
        .map(|g| Some(KeMethod::Dh(g)))
        .ok_or_else(|| {
            format!(
                "unknown key exchange method \"{name}\"; expected \"mlkem512\", \"mlkem768\", \
                 \"mlkem1024\", a DH group (\"x25519\", \"ecp256\", \"group14\") or \"none\", \
                 alternatives joined with \"|\""
            )
        })
}
