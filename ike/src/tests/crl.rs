//! Certificate revocation lists (RFC 5280 §5, §6.3) in validation, at configuration time
//! ([`TrustAnchors::check_crl`]) and for established sessions when a reconfiguration brings
//! new CRLs. CRLs are generated with rcgen.

use std::sync::Arc;

use super::certs::*;
use super::pair::*;
use crate::cert::CertError;
use crate::cert::CrlError;
use crate::cert::TrustAnchors;
use crate::cert::verify_peer;
use crate::config::*;
use crate::endpoint::*;
use crate::wire::Identity;

/// The serial number (INTEGER contents) of a DER certificate.
fn serial_of(der: &[u8]) -> Vec<u8> {
    crate::cert::serial_number(der).expect("cert")
}

/// Anchors `cas` with `crls` (each checked against them), named `HUB-CA`.
fn with_crls(cas: &[&Ca], crls: &[&[u8]]) -> TrustAnchors {
    let t = TrustAnchors::from_der_certs(cas.iter().map(|c| &c.der)).expect("anchors");
    let checked = crls.iter().map(|c| t.check_crl(c).expect("crl")).collect();
    t.with_crls("HUB-CA", checked)
}

#[test]
fn revoked_end_entity_is_refused_with_its_serial() {
    let root = Ca::root(Alg::P256, "root");
    let (cert, _) = root.issue(Alg::P256, "spoke2", vec![ip_san(A_IP)], 2030);
    let serial = serial_of(&cert);
    let trust = with_crls(&[&root], &[&root.crl(&[&serial], 2025, 2027)]);
    let got = verify_peer(&trust, &cert, &[], &Identity::Ipv4(A_IP), NOW);
    let want = CertError::Revoked {
        serial: crate::cert::serial_hex(&serial),
        intermediate: false,
        trustpoint: "HUB-CA".into(),
    };
    assert_eq!(got.err(), Some(want.clone()));
    let text = want.to_string();
    assert!(
        text.starts_with("certificate serial 0x")
            && text.ends_with("revoked by CRL of trustpoint HUB-CA"),
        "{text}"
    );
}

#[test]
fn unrevoked_certificate_is_accepted_and_its_path_remembered() {
    let root = Ca::root(Alg::P256, "root");
    let (cert, _) = root.issue(Alg::P256, "spoke1", vec![ip_san(A_IP)], 2030);
    let (other, _) = root.issue(Alg::P256, "spoke2", vec![ip_san(B_IP)], 2030);
    let trust = with_crls(&[&root], &[&root.crl(&[&serial_of(&other)], 2025, 2027)]);
    let ok = verify_peer(&trust, &cert, &[], &Identity::Ipv4(A_IP), NOW).expect("not revoked");
    assert_eq!(trust.revoked(&ok.serials), None);
    // The same path against a CRL that lists it now: what a reload re-checks.
    let later = with_crls(&[&root], &[&root.crl(&[&serial_of(&cert)], 2025, 2027)]);
    assert!(matches!(
        later.revoked(&ok.serials),
        Some(CertError::Revoked {
            intermediate: false,
            ..
        })
    ));
}

#[test]
fn revoked_intermediate_is_refused() {
    let root = Ca::root(Alg::P256, "root");
    let sub = root.intermediate(Alg::P256, "intermediate");
    let (cert, _) = sub.issue(Alg::P256, "spoke", vec![ip_san(A_IP)], 2030);
    let trust = with_crls(&[&root], &[&root.crl(&[&serial_of(&sub.der)], 2025, 2027)]);
    let got = verify_peer(&trust, &cert, &[&sub.der], &Identity::Ipv4(A_IP), NOW);
    assert_eq!(
        got.err(),
        Some(CertError::Revoked {
            serial: crate::cert::serial_hex(&serial_of(&sub.der)),
            intermediate: true,
            trustpoint: "HUB-CA".into(),
        })
    );
    // Without that CRL the path is fine, and remembers the intermediate for later checks.
    let plain = with_crls(&[&root], &[]);
    let ok = verify_peer(&plain, &cert, &[&sub.der], &Identity::Ipv4(A_IP), NOW).expect("ok");
    let revoking = with_crls(&[&root], &[&root.crl(&[&serial_of(&sub.der)], 2025, 2027)]);
    assert!(matches!(
        revoking.revoked(&ok.serials),
        Some(CertError::Revoked {
            intermediate: true,
            ..
        })
    ));
}

#[test]
fn issuer_without_crl_is_accepted() {
    // Policy: UNDETERMINED (RFC 5280 §6.3.3: no CRL in scope) is accepted. Two CAs, a CRL
    // for one of them only; the other CA's certificates still authenticate.
    let root = Ca::root(Alg::P256, "root");
    let other = Ca::root(Alg::P256, "other");
    let (cert, _) = other.issue(Alg::P256, "spoke", vec![ip_san(A_IP)], 2030);
    let (listed, _) = root.issue(Alg::P256, "x", vec![ip_san(B_IP)], 2030);
    // Same serial listed by root's CRL: it is not root's certificate, so it is not revoked
    // (a CRL covers its issuer's certificates only, §6.3.3 (b)).
    let trust = with_crls(
        &[&root, &other],
        &[&root.crl(&[&serial_of(&listed), &serial_of(&cert)], 2025, 2027)],
    );
    verify_peer(&trust, &cert, &[], &Identity::Ipv4(A_IP), NOW).expect("no CRL for other");
    assert!(verify_peer(&trust, &listed, &[], &Identity::Ipv4(B_IP), NOW).is_err());
}

#[test]
fn expired_crl_still_revokes_and_accepts_the_others() {
    // Policy: a CRL past its nextUpdate (2025-01-01; NOW is 2026) is still applied.
    let root = Ca::root(Alg::P256, "root");
    let (revoked, _) = root.issue(Alg::P256, "spoke2", vec![ip_san(A_IP)], 2030);
    let (good, _) = root.issue(Alg::P256, "spoke1", vec![ip_san(B_IP)], 2030);
    let crl = root.crl(&[&serial_of(&revoked)], 2024, 2025);
    let trust = with_crls(&[&root], &[&crl]);
    assert!(trust.crls()[0].next_update() < NOW);
    assert!(matches!(
        verify_peer(&trust, &revoked, &[], &Identity::Ipv4(A_IP), NOW),
        Err(CertError::Revoked { .. })
    ));
    verify_peer(&trust, &good, &[], &Identity::Ipv4(B_IP), NOW).expect("stale CRL, unlisted");
}

#[test]
fn crl_of_another_ca_is_refused_when_loaded() {
    let root = Ca::root(Alg::P256, "root");
    let rogue = Ca::root(Alg::P256, "rogue");
    let trust = TrustAnchors::from_der_certs([&root.der]).expect("anchors");
    match trust.check_crl(&rogue.crl(&[], 2025, 2027)) {
        Err(CrlError::UnknownIssuer(name)) => assert_eq!(name, "O=vtid test, CN=rogue"),
        other => panic!("{other:?}"),
    }
    // Same name as our CA, other key: the signature gives it away (§6.3.3 (f)).
    let impostor = Ca::root(Alg::P256, "root");
    match trust.check_crl(&impostor.crl(&[], 2025, 2027)) {
        Err(CrlError::BadSignature(name)) => assert_eq!(name, "O=vtid test, CN=root"),
        other => panic!("{other:?}"),
    }
    // An RSA CA's CRL (PKCS#1 v1.5 SHA-256) verifies as well as ECDSA.
    let rsa = Ca::root(Alg::Rsa, "rsa root");
    let rsa_trust = TrustAnchors::from_der_certs([&rsa.der]).expect("anchors");
    let c = rsa_trust
        .check_crl(&rsa.crl(&[b"\x01"], 2025, 2027))
        .expect("rsa crl");
    assert_eq!((c.entries(), c.issuer()), (1, "O=vtid test, CN=rsa root"));
    assert!(matches!(
        trust.check_crl(&root.der),
        Err(CrlError::Unparsable(_))
    ));
    assert!(matches!(
        trust.check_crl(b"\x30\x00"),
        Err(CrlError::Unparsable(_))
    ));
}

/// The serial of the certificate `p` authenticates with.
fn own_serial(p: &PeerConfig) -> Vec<u8> {
    let AuthConfig::Certificate(c) = &p.auth else {
        unreachable!()
    };
    serial_of(&c.certificate)
}

/// `b` trusting `root` with `crls` (B is the responder of the pair).
fn b_with_crls(b: &PeerConfig, root: &Ca, crls: &[Vec<u8>]) -> PeerConfig {
    let mut b = b.clone();
    let AuthConfig::Certificate(bc) = &mut b.auth else {
        unreachable!()
    };
    bc.trust_anchors = Arc::new(with_crls(
        &[root],
        &crls.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    ));
    b
}

#[test]
fn revoked_initiator_is_refused() {
    let root = Ca::root(Alg::P256, "root");
    let (a, b) = ip_pair(Alg::P256, &root);
    let revoking = b_with_crls(&b, &root, &[root.crl(&[&own_serial(&a)], 2025, 2027)]);
    let p = connect_at(a.clone(), revoking, Some(NOW));
    assert_rejected_by(&p, Side::B);
    // Control: the same pair with a CRL that lists another serial connects.
    let other = b_with_crls(&b, &root, &[root.crl(&[b"\x7f"], 2025, 2027)]);
    connect_at(a, other, Some(NOW)).assert_children_match();
}

/// B's configuration replaced by `b` (same connection), as the agent's reload does.
fn reconfigure_b(p: &mut Pair, b: PeerConfig) {
    p.command(
        Side::B,
        Command::Reconfigure(Arc::new(endpoint_config(vec![b]))),
    );
    p.drive_now();
}

#[test]
fn reconfigure_with_a_crl_ends_the_revoked_session_only() {
    let root = Ca::root(Alg::P256, "root");
    let (a, b) = ip_pair(Alg::P256, &root);
    let b = b_with_crls(&b, &root, &[root.crl(&[b"\x7f"], 2025, 2027)]);
    let mut p = connect_at(a.clone(), b.clone(), Some(NOW));
    p.assert_children_match();
    let before = p.b.ep.sas();
    // New CRLs that do not list A: nothing happens, the SPIs stay.
    reconfigure_b(
        &mut p,
        b_with_crls(&b, &root, &[root.crl(&[b"\x7e"], 2025, 2027)]),
    );
    assert_eq!(p.b.ep.sas(), before);
    assert!(p.b.removes.is_empty() && p.a.removes.is_empty());
    // CRLs that list A: B deletes the session with A (DELETE sent, children removed).
    let revoking = b_with_crls(&b, &root, &[root.crl(&[&own_serial(&a)], 2025, 2027)]);
    reconfigure_b(&mut p, revoking.clone());
    p.drive_for(std::time::Duration::from_secs(1));
    assert_eq!(p.b.ep.ike_sa_count(), 0, "{:?}", p.b.ep.sas());
    assert_eq!(p.a.ep.ike_sa_count(), 0, "{:?}", p.a.ep.sas());
    assert_eq!(p.b.removes.len(), p.b.installs.len());
    assert_eq!(p.a.removes.len(), p.a.installs.len());
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Local,
            ..
        }
    )));
    // And A cannot come back.
    let p = connect_at(a, revoking, Some(NOW));
    assert_rejected_by(&p, Side::B);
}

#[test]
fn revoked_responder_is_refused_by_the_initiator() {
    let root = Ca::root(Alg::P256, "root");
    let (mut a, b) = ip_pair(Alg::P256, &root);
    let AuthConfig::Certificate(ac) = &mut a.auth else {
        unreachable!()
    };
    ac.trust_anchors = Arc::new(with_crls(
        &[&root],
        &[&root.crl(&[&own_serial(&b)], 2025, 2027)],
    ));
    let p = connect_at(a, b, Some(NOW));
    assert_rejected_by(&p, Side::A);
}

#[test]
fn a_rekeyed_ike_sa_is_still_checked_against_new_crls() {
    // The successor of an IKE SA rekey (RFC 7296 §2.18) authenticates nothing again; it
    // keeps the path of the original authentication, so a later CRL still ends it.
    let root = Ca::root(Alg::P256, "root");
    let (a, b) = ip_pair(Alg::P256, &root);
    let mut p = connect_at(a.clone(), b.clone(), Some(NOW));
    let before = p.b.ep.sas();
    let session = before[0].session;
    p.command(Side::A, Command::RekeyIke { session });
    p.drive_for(std::time::Duration::from_secs(1));
    let after = p.b.ep.sas();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].spi_i, before[0].spi_i, "not rekeyed");
    reconfigure_b(
        &mut p,
        b_with_crls(&b, &root, &[root.crl(&[&own_serial(&a)], 2025, 2027)]),
    );
    p.drive_for(std::time::Duration::from_secs(1));
    assert_eq!(p.b.ep.ike_sa_count(), 0, "{:?}", p.b.ep.sas());
    assert_eq!(p.a.ep.ike_sa_count(), 0, "{:?}", p.a.ep.sas());
}
