//! Key derivation checked against hand-built compositions of prf / prf+ (RFC 7296 §2.13-2.18).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aws_lc_rs::{digest, hmac};

use super::*;
use crate::crypto::{prf, prf_plus};

const NI: &[u8] = &[0x11; 32];
const NR: &[u8] = &[0x22; 24];
const SPI_I: u64 = 0x0102_0304_0506_0708;
const SPI_R: u64 = 0x1112_1314_1516_1718;

fn suites() -> Vec<IkeSuite> {
    let mut out = Vec::new();
    for prf in [
        Prf::HmacSha1,
        Prf::HmacSha256,
        Prf::HmacSha384,
        Prf::HmacSha512,
    ] {
        for encr in [
            Encr::AesGcm16 { key_bits: 128 },
            Encr::AesGcm16 { key_bits: 256 },
            Encr::ChaCha20Poly1305,
        ] {
            out.push(IkeSuite {
                prf,
                encr,
                integ: None,
            });
        }
        for encr in [
            Encr::AesCbc { key_bits: 128 },
            Encr::AesCbc { key_bits: 192 },
            Encr::AesCbc { key_bits: 256 },
            Encr::TripleDes,
        ] {
            for integ in [
                Integ::HmacSha1_96,
                Integ::HmacSha256_128,
                Integ::HmacSha384_192,
                Integ::HmacSha512_256,
            ] {
                out.push(IkeSuite {
                    prf,
                    encr,
                    integ: Some(integ),
                });
            }
        }
    }
    out
}

fn spis() -> Vec<u8> {
    let mut v = SPI_I.to_be_bytes().to_vec();
    v.extend_from_slice(&SPI_R.to_be_bytes());
    v
}

#[test]
fn ike_keys_match_hand_composition_for_every_suite() {
    let g_ir = Secret::from_slice(&[0x33; 32]);
    for suite in suites() {
        let keys = derive_ike_keys(suite, NI, NR, &g_ir, SPI_I, SPI_R);
        // SKEYSEED = prf(Ni | Nr, g^ir)
        let skeyseed = prf(suite.prf, &[NI, NR].concat(), g_ir.expose());
        let p = suite.prf.output_len();
        let a = suite.integ.map_or(0, Integ::key_len);
        let e = suite.encr.keymat_len();
        let seed = [NI, NR, &spis()].concat();
        let stream = prf_plus(suite.prf, skeyseed.expose(), &seed, 3 * p + 2 * a + 2 * e);
        let s = stream.expose();
        let mut off = 0;
        let mut next = |n: usize| {
            off += n;
            &s[off - n..off]
        };
        assert_eq!(keys.sk_d.expose(), next(p));
        assert_eq!(keys.sk_ai.expose(), next(a));
        assert_eq!(keys.sk_ar.expose(), next(a));
        assert_eq!(keys.sk_ei.expose(), next(e));
        assert_eq!(keys.sk_er.expose(), next(e));
        assert_eq!(keys.sk_pi.expose(), next(p));
        assert_eq!(keys.sk_pr.expose(), next(p));
        // Lengths per RFC 7296 §2.14 / RFC 5282 §7.1 / RFC 7634 §4.
        assert_eq!(keys.sk_d.len(), suite.prf.output_len());
        if suite.encr.is_aead() {
            assert!(keys.sk_ai.is_empty());
            assert_eq!(keys.sk_ei.len(), suite.encr.key_len() + 4);
        }
        // Both directions build working, distinct ciphers.
        let (ci, cr) = (
            keys.initiator_cipher().expect("i"),
            keys.responder_cipher().expect("r"),
        );
        let mut rng = <crate::crypto::Rng as rand_core::SeedableRng>::from_seed([1; 32]);
        let body = ci.seal(&mut rng, b"hdr", b"payloads");
        assert_eq!(ci.open(b"hdr", &body).expect("open").expose(), b"payloads");
        assert_eq!(
            cr.open(b"hdr", &body),
            Err(CryptoError::IntegrityCheckFailed)
        );
    }
}

#[test]
fn skeyseed_uses_raw_hmac_with_nonce_key() {
    // Independent of PrfKey: aws-lc-rs HMAC keyed with Ni | Nr over g^ir.
    let g_ir = Secret::from_slice(&[0x44; 256]);
    let suite = IkeSuite {
        prf: Prf::HmacSha256,
        encr: Encr::AesGcm16 { key_bits: 256 },
        integ: None,
    };
    let keys = derive_ike_keys(suite, NI, NR, &g_ir, SPI_I, SPI_R);
    let skeyseed = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &[NI, NR].concat()),
        g_ir.expose(),
    );
    let k = hmac::Key::new(hmac::HMAC_SHA256, skeyseed.as_ref());
    let t1 = hmac::sign(&k, &[NI, NR, &spis(), &[1]].concat());
    assert_eq!(keys.sk_d.expose(), t1.as_ref());
}

#[test]
fn rekeyed_ike_keys_use_old_prf_for_skeyseed() {
    let old_sk_d = Secret::from_slice(&[0x55; 20]);
    let g_ir = Secret::from_slice(&[0x66; 32]);
    let suite = IkeSuite {
        prf: Prf::HmacSha256,
        encr: Encr::AesCbc { key_bits: 128 },
        integ: Some(Integ::HmacSha256_128),
    };
    let keys = derive_rekeyed_ike_keys(
        Prf::HmacSha1,
        &old_sk_d,
        suite,
        &g_ir,
        NI,
        NR,
        &[],
        SPI_I,
        SPI_R,
    );
    // SKEYSEED = prf_old(SK_d (old), g^ir (new) | Ni | Nr); then prf+ with the new PRF.
    let skeyseed = prf(
        Prf::HmacSha1,
        old_sk_d.expose(),
        &[g_ir.expose(), NI, NR].concat(),
    );
    let stream = prf_plus(
        Prf::HmacSha256,
        skeyseed.expose(),
        &[NI, NR, &spis()].concat(),
        32,
    );
    assert_eq!(keys.sk_d.expose(), stream.expose());
    assert_eq!(keys.sk_ai.len(), 32);
    assert_eq!(keys.sk_ei.len(), 16);
}

#[test]
fn followup_secrets_follow_the_nonces_in_skeyseed_and_keymat() {
    // RFC 9370 §2.2.4: SKEYSEED = prf(SK_d (old), SK(0) | Ni | Nr | SK(1) | ... | SK(n)) and
    // KEYMAT = prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n)).
    let sk_d = Secret::from_slice(&[0x55; 32]);
    let sk0 = Secret::from_slice(&[0x66; 32]);
    let sk1 = Secret::from_slice(&[0x99; 32]);
    let sk2 = Secret::from_slice(&[0xaa; 32]);
    let suite = IkeSuite {
        prf: Prf::HmacSha256,
        encr: Encr::AesGcm16 { key_bits: 256 },
        integ: None,
    };
    let more = [sk1.clone(), sk2.clone()];
    let keys = derive_rekeyed_ike_keys(
        Prf::HmacSha256,
        &sk_d,
        suite,
        &sk0,
        NI,
        NR,
        &more,
        SPI_I,
        SPI_R,
    );
    let seed = [sk0.expose(), NI, NR, sk1.expose(), sk2.expose()].concat();
    let skeyseed = prf(Prf::HmacSha256, sk_d.expose(), &seed);
    let stream = prf_plus(
        Prf::HmacSha256,
        skeyseed.expose(),
        &[NI, NR, &spis()].concat(),
        32,
    );
    assert_eq!(keys.sk_d.expose(), stream.expose());
    let classic = derive_rekeyed_ike_keys(
        Prf::HmacSha256,
        &sk_d,
        suite,
        &sk0,
        NI,
        NR,
        &[],
        SPI_I,
        SPI_R,
    );
    assert_ne!(keys.sk_d.expose(), classic.sk_d.expose());
    // Order matters: ADDKE order, not a set.
    let swapped = [sk2, sk1];
    let other = derive_rekeyed_ike_keys(
        Prf::HmacSha256,
        &sk_d,
        suite,
        &sk0,
        NI,
        NR,
        &swapped,
        SPI_I,
        SPI_R,
    );
    assert_ne!(keys.sk_d.expose(), other.sk_d.expose());

    let encr = Encr::AesGcm16 { key_bits: 256 };
    let child = derive_child_keys(
        Prf::HmacSha256,
        &sk_d,
        encr,
        None,
        Some(&sk0),
        NI,
        NR,
        &more,
    );
    let km = prf_plus(Prf::HmacSha256, sk_d.expose(), &seed, 72);
    assert_eq!(child.encr_i.expose(), &km.expose()[..36]);
    assert_eq!(child.encr_r.expose(), &km.expose()[36..]);
}

#[test]
fn child_keymat_order_and_lengths() {
    let sk_d = Secret::from_slice(&[0x77; 32]);
    let cases: [(Encr, Option<Integ>, usize, usize); 6] = [
        (Encr::AesGcm16 { key_bits: 128 }, None, 20, 0), // RFC 4106 §8.1: key + 4 salt
        (Encr::AesGcm16 { key_bits: 256 }, None, 36, 0),
        (Encr::ChaCha20Poly1305, None, 36, 0), // RFC 7634 §4: 32 + 4
        (
            Encr::AesCbc { key_bits: 128 },
            Some(Integ::HmacSha256_128),
            16,
            32,
        ), // RFC 4868
        (
            Encr::AesCbc { key_bits: 256 },
            Some(Integ::HmacSha512_256),
            32,
            64,
        ),
        (Encr::TripleDes, Some(Integ::HmacSha1_96), 24, 20),
    ];
    for (encr, integ, e, a) in cases {
        for pfs in [None, Some(Secret::from_slice(&[0x88; 32]))] {
            let keys = derive_child_keys(
                Prf::HmacSha256,
                &sk_d,
                encr,
                integ,
                pfs.as_ref(),
                NI,
                NR,
                &[],
            );
            let seed = match &pfs {
                Some(g) => [g.expose(), NI, NR].concat(),
                None => [NI, NR].concat(),
            };
            let km = prf_plus(Prf::HmacSha256, sk_d.expose(), &seed, 2 * (e + a));
            let km = km.expose();
            assert_eq!(keys.encr_i.expose(), &km[..e]);
            assert_eq!(keys.integ_i.expose(), &km[e..e + a]);
            assert_eq!(keys.encr_r.expose(), &km[e + a..2 * e + a]);
            assert_eq!(keys.integ_r.expose(), &km[2 * e + a..]);
        }
    }
}

#[test]
fn psk_auth_matches_separate_computation() {
    let sk_pi = Secret::from_slice(&[0x99; 32]);
    let psk = Psk::new(Secret::from_slice(b"correct horse battery staple"));
    let id_body = [1, 0, 0, 0, 192, 0, 2, 1]; // ID_IPV4_ADDR 192.0.2.1
    let octets = signed_octets(
        Prf::HmacSha256,
        b"IKE_SA_INIT request",
        NR,
        &sk_pi,
        &id_body,
    );
    // Separately: RealMessage1 | NonceRData | prf(SK_pi, IDi').
    let maced = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, sk_pi.expose()), &id_body);
    assert_eq!(
        octets,
        [b"IKE_SA_INIT request".as_slice(), NR, maced.as_ref()].concat()
    );
    let auth = psk_auth(Prf::HmacSha256, &psk, &octets);
    let pad_key = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, psk.secret().expose()),
        b"Key Pad for IKEv2",
    );
    let want = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, pad_key.as_ref()),
        &octets,
    );
    assert_eq!(auth.expose(), want.as_ref());
    verify_psk_auth(Prf::HmacSha256, &psk, &octets, want.as_ref()).expect("verify");
    let mut bad = want.as_ref().to_vec();
    bad[0] ^= 1;
    assert_eq!(
        verify_psk_auth(Prf::HmacSha256, &psk, &octets, &bad),
        Err(CryptoError::IntegrityCheckFailed)
    );
    assert!(verify_psk_auth(Prf::HmacSha256, &psk, &octets, &bad[..5]).is_err());
    // The key pad is kept per PRF: after SHA-256's, the same key under SHA-384 gets its own,
    // and a clone shares both.
    let pad384 = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA384, psk.secret().expose()),
        b"Key Pad for IKEv2",
    );
    let want384 = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA384, pad384.as_ref()), &octets);
    let copy = psk.clone();
    assert_eq!(
        psk_auth(Prf::HmacSha384, &copy, &octets).expose(),
        want384.as_ref()
    );
    assert_eq!(
        psk_auth(Prf::HmacSha256, &copy, &octets).expose(),
        want.as_ref()
    );
    assert_eq!(format!("{psk:?}"), "<redacted>");
}

#[test]
fn nat_detection_hash_is_sha1_of_spis_ip_port() {
    let ip4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let got = nat_detection_hash(SPI_I, 0, ip4, 500);
    let want = digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        &[
            &SPI_I.to_be_bytes()[..],
            &[0; 8],
            &[192, 0, 2, 1],
            &[0x01, 0xf4],
        ]
        .concat(),
    );
    assert_eq!(got.as_slice(), want.as_ref());
    let ip6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let got6 = nat_detection_hash(SPI_I, SPI_R, ip6, 4500);
    let want6 = digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        &[
            &spis()[..],
            &Ipv6Addr::LOCALHOST.octets(),
            &4500u16.to_be_bytes(),
        ]
        .concat(),
    );
    assert_eq!(got6.as_slice(), want6.as_ref());
}

/// Rough cost of IKE key derivation, for the engine-overhead budget (run with
/// `cargo test --release -p ike key_derivation_costs -- --ignored --nocapture`).
#[test]
#[ignore = "timing report, not a check"]
fn key_derivation_costs() {
    use std::time::Instant;
    let g_ir = Secret::from_slice(&[1; 32]);
    let suite = IkeSuite {
        prf: Prf::HmacSha256,
        encr: Encr::AesGcm16 { key_bits: 256 },
        integ: None,
    };
    let start = Instant::now();
    for _ in 0..1000 {
        let _ = derive_ike_keys(suite, &[2; 32], &[3; 32], &g_ir, 1, 2);
    }
    println!("derive_ike_keys: {:?}", start.elapsed() / 1000);
}
