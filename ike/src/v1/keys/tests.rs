//! Known-answer tests: MD5 and HMAC-MD5 (RFC 1321 §A.5, RFC 2202 §2), the SKEYID_d/_a/_e
//! chain against NIST's SP 800-135 IKEv1 test vector (SHA-1), Appendix B key expansion and
//! quick mode KEYMAT against their definitions, and CBC with IV chaining.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn md5_and_hmac_md5_known_answers() {
    // RFC 1321 §A.5.
    assert_eq!(
        HashAlg::Md5.digest(&[b"abc"]),
        hex("900150983cd24fb0d6963f7d28e17f72")
    );
    // RFC 2202 §2, test cases 1 and 2.
    assert_eq!(
        HashAlg::Md5.prf(&[0x0b; 16], &[b"Hi There"]).expose(),
        hex("9294727a3638bb1c13f48ef8158bfc9d")
    );
    assert_eq!(
        HashAlg::Md5
            .prf(b"Jefe", &[b"what do ya want ", b"for nothing?"])
            .expose(),
        hex("750c783e6ab0b503eaa86e310a5db738")
    );
    // RFC 2202 §3, test case 1 (HMAC-SHA-1) through the same interface.
    assert_eq!(
        HashAlg::Sha1.prf(&[0x0b; 20], &[b"Hi There"]).expose(),
        hex("b617318655057264e28bc0b6fb378c8ef146be00")
    );
}

/// NIST CAVP SP 800-135 IKEv1 (digital signature mode, SHA-1): SKEYID = prf(Ni_b | Nr_b,
/// g^xy), then the SKEYID_d/_a/_e chain that every authentication method shares.
#[test]
fn skeyid_chain_matches_nist_sp800_135_vector() {
    let cky_i = u64::from_be_bytes(hex("382e5c8b0a3fa307").try_into().expect("8"));
    let cky_r = u64::from_be_bytes(hex("ba4b7616700a2413").try_into().expect("8"));
    let ni = hex("ced5635da6796075");
    let nr = hex("6244b427712fb776");
    let gxy = hex(
        "2a2e0bbe8da3657a83f3d35826e49e2d38e557e912a1b9e6c30c63577b3eab71
         5466202862027f2c26f3090743555579611771db0b92bef93834432a3a7762fc
         8a0f4889fd281d6082770d10a40d7bad61e832f041e620d6787e7f62ab2861dd
         fbe272e0d9d3cdec5f1bbf750e24b8b32d6d714968ad69ce5086c32ad2742ebc",
    );
    let skeyid = skeyid_sig(HashAlg::Sha1, &ni, &nr, &gxy);
    assert_eq!(
        skeyid.expose(),
        hex("dc37ac99de6dcfbd1ee74af7fb36f9b4b0a7829d")
    );
    let k = derive_phase1(
        HashAlg::Sha1,
        Encr::AesCbc { key_bits: 128 },
        skeyid,
        &gxy,
        cky_i,
        cky_r,
    );
    assert_eq!(
        k.skeyid_d.expose(),
        hex("486293ed547adb562cefdaf43d3d8457b196f2b6")
    );
    assert_eq!(
        k.skeyid_a.expose(),
        hex("f4053b5ca07e59bb41b8f401037ca90b72b3917e")
    );
    assert_eq!(
        k.skeyid_e.expose(),
        hex("49a1d53a80fb77e663552964fbbcb45092021473")
    );
    // AES-128 needs 16 octets, fewer than SHA-1's 20: the first 16 of SKEYID_e.
    assert_eq!(k.enc_key.expose(), &k.skeyid_e.expose()[..16]);
    // The PSK SKEYID is prf(psk, Ni_b | Nr_b): HMAC keyed with the PSK over the nonces.
    let psk = skeyid_psk(HashAlg::Sha1, b"secret", &ni, &nr);
    assert_eq!(
        psk.expose(),
        HashAlg::Sha1.prf(b"secret", &[&[ni, nr].concat()]).expose()
    );
}

#[test]
fn appendix_b_expands_short_skeyid_e() {
    let e = Secret::from_slice(&[0x42; 20]);
    // 3DES: 24 octets from SHA-1's 20: K1 = prf(e, 0), K2 = prf(e, K1).
    let key = expand_cipher_key(HashAlg::Sha1, &e, 24);
    let k1 = HashAlg::Sha1.prf(e.expose(), &[&[0]]);
    let k2 = HashAlg::Sha1.prf(e.expose(), &[k1.expose()]);
    assert_eq!(key.expose(), &[k1.expose(), &k2.expose()[..4]].concat()[..]);
    // AES-256 from MD5's 16: three blocks.
    let e16 = Secret::from_slice(&[7; 16]);
    let key = expand_cipher_key(HashAlg::Md5, &e16, 32);
    let k1 = HashAlg::Md5.prf(e16.expose(), &[&[0]]);
    let k2 = HashAlg::Md5.prf(e16.expose(), &[k1.expose()]);
    assert_eq!(key.expose(), &[k1.expose(), k2.expose()].concat()[..]);
    // Long enough: a prefix, no expansion.
    let e32 = Secret::from_slice(&[9; 32]);
    assert_eq!(
        expand_cipher_key(HashAlg::Sha256, &e32, 24).expose(),
        &[9; 24]
    );
}

#[test]
fn quick_mode_keymat_follows_rfc2409_5_5() {
    let d = Secret::from_slice(&[1; 20]);
    let (ni, nr, gxy) = ([2u8; 16], [3u8; 16], [4u8; 128]);
    let spi = 0x1234_5678u32;
    let km = quick_mode_keymat(HashAlg::Sha1, &d, Some(&gxy), 3, spi, &ni, &nr, 44);
    let seed = [&gxy[..], &[3], &spi.to_be_bytes(), &ni, &nr].concat();
    let k1 = HashAlg::Sha1.prf(d.expose(), &[&seed]);
    let k2 = HashAlg::Sha1.prf(d.expose(), &[k1.expose(), &seed]);
    let k3 = HashAlg::Sha1.prf(d.expose(), &[k2.expose(), &seed]);
    let want = [k1.expose(), k2.expose(), k3.expose()].concat();
    assert_eq!(km.expose(), &want[..44]);
    // Without PFS the g^xy term is absent; another SPI gives other keys.
    let no_pfs = quick_mode_keymat(HashAlg::Sha1, &d, None, 3, spi, &ni, &nr, 20);
    let seed = [&[3u8][..], &spi.to_be_bytes(), &ni, &nr].concat();
    assert_eq!(
        no_pfs.expose(),
        HashAlg::Sha1.prf(d.expose(), &[&seed]).expose()
    );
    let other = quick_mode_keymat(HashAlg::Sha1, &d, None, 3, spi + 1, &ni, &nr, 20);
    assert_ne!(other, no_pfs);
}

#[test]
fn cbc_round_trip_and_iv_chaining() {
    for (encr, len) in [
        (Encr::AesCbc { key_bits: 128 }, 16),
        (Encr::AesCbc { key_bits: 256 }, 32),
        (Encr::TripleDes, 24),
    ] {
        let key: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let c = Cbc::new(encr, &Secret::new(key)).expect("cipher");
        let iv = vec![0x11; c.block()];
        let msg = b"twenty-one octets....";
        let ct = c.encrypt(&iv, msg);
        assert_eq!(ct.len() % c.block(), 0);
        assert!(ct.len() >= msg.len());
        let pt = c.decrypt(&iv, &ct).expect("decrypts");
        assert_eq!(&pt.expose()[..msg.len()], msg);
        assert!(pt.expose()[msg.len()..].iter().all(|&b| b == 0));
        // The next message's IV is the last ciphertext block: decrypting the second
        // message with it works, with the first IV it does not give the plaintext.
        let next_iv = c.last_block(&ct);
        let ct2 = c.encrypt(&next_iv, msg);
        assert_eq!(
            &c.decrypt(&next_iv, &ct2).expect("ok").expose()[..msg.len()],
            msg
        );
        assert_ne!(
            &c.decrypt(&iv, &ct2).expect("ok").expose()[..msg.len()],
            msg
        );
        // Misaligned or empty ciphertext is an error, never a panic.
        assert!(c.decrypt(&iv, &ct[..ct.len() - 1]).is_err());
        assert!(c.decrypt(&iv, &[]).is_err());
        assert!(c.decrypt(&iv[..4], &ct).is_err());
    }
    assert!(Cbc::new(Encr::AesGcm16 { key_bits: 128 }, &Secret::new(vec![0; 16])).is_err());
}

#[test]
fn ivs_are_hashes_cut_to_the_block() {
    let iv = phase1_iv(HashAlg::Sha1, b"gxi", b"gxr", 16);
    assert_eq!(iv, HashAlg::Sha1.digest(&[b"gxigxr"])[..16]);
    let iv2 = phase2_iv(HashAlg::Sha256, &[5; 16], 0xdead_beef, 8);
    assert_eq!(
        iv2,
        HashAlg::Sha256.digest(&[&[5; 16], &[0xde, 0xad, 0xbe, 0xef]])[..8]
    );
}

#[test]
fn phase1_keys_debug_is_redacted() {
    let k = derive_phase1(
        HashAlg::Sha256,
        Encr::AesCbc { key_bits: 256 },
        Secret::from_slice(b"k"),
        b"gxy",
        1,
        2,
    );
    assert_eq!(format!("{k:?}"), "Phase1Keys(<redacted>)");
}
