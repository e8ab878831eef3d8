//! Certificate authentication in the Pair harness (RFC 7296 §3.6, §3.7, RFC 7427, RFC 4945
//! §3.1): a test PKI is generated with rcgen at test time.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DistinguishedName;
use rcgen::DnType;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use rcgen::SanType;
use rcgen::date_time_ymd;

use super::pair::*;
use crate::cert::TrustAnchors;
use crate::config::*;
use crate::crypto::sig::SigningKey;
use crate::endpoint::*;
use crate::wire::Identity;
use crate::wire::Message;
use crate::wire::Payload;
use crate::wire::enums::CertEncoding;
use crate::wire::enums::ExchangeType;

/// 2026-01-01T00:00:00Z: inside every validity period below except the expired one.
pub(crate) const NOW: u64 = 1_767_225_600;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Alg {
    P256,
    /// RSA 2048: certificates signed with PKCS#1 v1.5 SHA-256 (rcgen cannot sign
    /// certificates with RSA-PSS), AUTH signed with RSA-PSS (our default for RSA keys).
    Rsa,
}

fn keypair(alg: Alg) -> KeyPair {
    match alg {
        Alg::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256"),
        Alg::Rsa => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .expect("rsa"),
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "vtid test");
    d.push(DnType::CommonName, cn);
    d
}

/// A CA that can issue certificates.
pub(crate) struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub(crate) der: Vec<u8>,
}

impl Ca {
    fn params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2040, 1, 1);
        p
    }

    pub(crate) fn root(alg: Alg, cn: &str) -> Self {
        let params = Self::params(cn);
        let key = keypair(alg);
        let der = params.self_signed(&key).expect("root").der().to_vec();
        Self { params, key, der }
    }

    pub(crate) fn intermediate(&self, alg: Alg, cn: &str) -> Self {
        let params = Self::params(cn);
        let key = keypair(alg);
        let der = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .expect("intermediate")
            .der()
            .to_vec();
        Self { params, key, der }
    }

    /// A CRL of this CA (RFC 5280 §5) listing `serials` (INTEGER contents, as
    /// [`crate::cert`] reads them), issued `this_update` and due `next_update` (years).
    pub(crate) fn crl(&self, serials: &[&[u8]], this_update: i32, next_update: i32) -> Vec<u8> {
        let params = rcgen::CertificateRevocationListParams {
            this_update: date_time_ymd(this_update, 1, 1),
            next_update: date_time_ymd(next_update, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(s),
                    revocation_time: date_time_ymd(this_update, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&Issuer::from_params(&self.params, &self.key))
            .expect("crl")
            .der()
            .to_vec()
    }

    /// An end-entity certificate with `sans`, valid 2020..`until` (year), and its key.
    pub(crate) fn issue(
        &self,
        alg: Alg,
        cn: &str,
        sans: Vec<SanType>,
        until: i32,
    ) -> (Vec<u8>, Arc<SigningKey>) {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn);
        p.subject_alt_names = sans;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(until, 1, 1);
        let key = keypair(alg);
        let der = p
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .expect("end entity")
            .der()
            .to_vec();
        let signing = SigningKey::from_pkcs8_der(&key.serialize_der()).expect("pkcs8");
        (der, Arc::new(signing))
    }
}

pub(crate) fn ip_san(ip: std::net::Ipv4Addr) -> SanType {
    SanType::IpAddress(IpAddr::V4(ip))
}

pub(crate) fn dns_san(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("ia5"))
}

pub(crate) fn email_san(addr: &str) -> SanType {
    SanType::Rfc822Name(addr.try_into().expect("ia5"))
}

/// The certificate's subject as an ID_DER_ASN1_DN identity.
pub(crate) fn subject_id(der: &[u8]) -> Identity {
    use x509_cert::der::Decode;
    use x509_cert::der::Encode;
    let cert = x509_cert::Certificate::from_der(der).expect("cert");
    Identity::DerAsn1Dn(cert.tbs_certificate().subject().to_der().expect("dn"))
}

pub(crate) fn anchors(cas: &[&Ca]) -> Arc<TrustAnchors> {
    Arc::new(TrustAnchors::from_der_certs(cas.iter().map(|c| &c.der)).expect("anchors"))
}

pub(crate) fn cert_auth(
    (certificate, key): (Vec<u8>, Arc<SigningKey>),
    chain: Vec<Vec<u8>>,
    trust_anchors: Arc<TrustAnchors>,
) -> AuthConfig {
    AuthConfig::Certificate(CertificateAuth {
        key,
        certificate,
        chain,
        trust_anchors,
    })
}

/// Certificate auth with a leaf for `ip` (its only SAN) issued by `issuer`, valid 2020 to
/// `until`, sending no chain and trusting only `trust`.
pub(crate) fn leaf_auth(
    issuer: &Ca,
    alg: Alg,
    cn: &str,
    ip: std::net::Ipv4Addr,
    until: i32,
    trust: &Ca,
) -> AuthConfig {
    cert_auth(
        issuer.issue(alg, cn, vec![ip_san(ip)], until),
        Vec::new(),
        anchors(&[trust]),
    )
}

/// A and B profiles (IP identities) with certificates from `root` for both sides.
pub(crate) fn ip_pair(alg: Alg, root: &Ca) -> (PeerConfig, PeerConfig) {
    let mut a = peer(1, A_IP, B_IP, "unused");
    a.auth = leaf_auth(root, alg, "a", A_IP, 2030, root);
    let mut b = peer(1, B_IP, A_IP, "unused");
    b.auth = leaf_auth(root, alg, "b", B_IP, 2030, root);
    (a, b)
}

pub(crate) fn connect_at(a: PeerConfig, b: PeerConfig, unix: Option<u64>) -> Pair {
    let mut p = Pair::new(a, b);
    if let Some(t) = unix {
        p.set_wall_clock(t);
    }
    p.connect();
    p
}

/// `rejecter` refused the other side's certificate: both report it, the other side learnt
/// it through AUTHENTICATION_FAILED, no SA is left and the rejecting side installed nothing.
pub(crate) fn assert_rejected_by(p: &Pair, rejecter: Side) {
    let (r, o) = match rejecter {
        Side::A => (&p.a, &p.b),
        Side::B => (&p.b, &p.a),
    };
    assert!(
        r.has_event(|e| matches!(
            e,
            Event::AuthFailed {
                reason: "authentication_failed",
                ..
            }
        )),
        "rejecter events: {:?}",
        r.events
    );
    // The other side only gets AuthFailed(peer_rejected) for an AUTHENTICATION_FAILED notify.
    assert!(
        o.has_event(|e| matches!(
            e,
            Event::AuthFailed {
                reason: "peer_rejected",
                ..
            }
        )),
        "other events: {:?}",
        o.events
    );
    assert!(r.installs.is_empty());
    assert!(!r.has_event(|e| matches!(e, Event::PeerAuthenticated { .. })));
    // A responder that is rejected by the initiator had installed its half (it answered
    // IKE_AUTH before the initiator checked it) and must have removed it again.
    assert_eq!(o.removes.len(), o.installs.len());
    if rejecter == Side::B {
        assert!(o.installs.is_empty());
    }
    assert_eq!(p.a.ep.ike_sa_count(), 0);
    assert_eq!(p.b.ep.ike_sa_count(), 0);
}

#[test]
fn certificate_auth_p256_direct_chain() {
    let root = Ca::root(Alg::P256, "root");
    let (a, b) = ip_pair(Alg::P256, &root);
    let p = connect_at(a, b, Some(NOW));
    p.assert_children_match();
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::PeerAuthenticated {
            peer_id: Identity::Ipv4(ip),
            ..
        } if *ip == B_IP
    )));
    // §3.7: B's IKE_SA_INIT response carries CERTREQ with SHA-1(SPKI) of our CA.
    let spki = crate::cert::subject_public_key_info(&root.der).expect("spki");
    let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, spki);
    let sa_init =
        p.b.sent
            .iter()
            .filter_map(|t| Message::decode(&t.bytes).ok())
            .find(|m| m.header.exchange == ExchangeType::IkeSaInit)
            .expect("IKE_SA_INIT response");
    let certreq = sa_init
        .payloads
        .iter()
        .find_map(|p| match p {
            Payload::CertReq(c) => Some(c),
            _ => None,
        })
        .expect("CERTREQ");
    assert_eq!(certreq.encoding, CertEncoding::X509Signature);
    assert_eq!(certreq.data, want.as_ref());
}

#[test]
fn certificate_auth_rsa_pss_with_intermediate() {
    // RSA keys everywhere; AUTH uses RSASSA-PSS (RFC 7427 A.4), the path root ->
    // intermediate -> end entity, FQDN identities bound by SAN dNSName. The chains make
    // IKE_AUTH larger than the fragment size, so RFC 7383 fragmentation runs too.
    let root = Ca::root(Alg::Rsa, "root");
    let sub = root.intermediate(Alg::Rsa, "intermediate");
    let trust = anchors(&[&root]);
    let mut a = peer(1, A_IP, B_IP, "unused");
    a.local_id = Some(Identity::Fqdn("a.vpn.example".into()));
    a.remote_id = IdMatch::Exact(Identity::Fqdn("b.vpn.example".into()));
    a.auth = cert_auth(
        sub.issue(Alg::Rsa, "a", vec![dns_san("a.vpn.example")], 2030),
        vec![sub.der.clone()],
        trust.clone(),
    );
    let mut b = peer(1, B_IP, A_IP, "unused");
    b.local_id = Some(Identity::Fqdn("b.vpn.example".into()));
    b.auth = cert_auth(
        sub.issue(Alg::Rsa, "b", vec![dns_san("b.vpn.example")], 2030),
        vec![sub.der.clone()],
        trust,
    );
    if let AuthConfig::Certificate(c) = &a.auth {
        assert_eq!(
            c.key.default_scheme(),
            crate::crypto::sig::SignatureScheme::RsaPssSha256
        );
    }
    let p = connect_at(a, b, Some(NOW));
    p.assert_children_match();
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::PeerAuthenticated {
            peer_id: Identity::Fqdn(n),
            ..
        } if n == "a.vpn.example"
    )));
}

#[test]
fn certificate_auth_p256_intermediate_rfc822_and_dn_ids() {
    let root = Ca::root(Alg::P256, "root");
    let sub = root.intermediate(Alg::P256, "intermediate");
    // Each side trusts the root and an unrelated CA (CERTREQ names both).
    let other = Ca::root(Alg::P256, "other root");
    let trust = anchors(&[&other, &root]);
    let (a_cert, a_key) = sub.issue(Alg::P256, "a", vec![email_san("alice@Vpn.Example")], 2030);
    let (b_cert, b_key) = sub.issue(Alg::P256, "gateway b", Vec::new(), 2030);
    let b_id = subject_id(&b_cert);
    let mut a = peer(1, A_IP, B_IP, "unused");
    a.local_id = Some(Identity::Rfc822("alice@vpn.example".into()));
    a.remote_id = IdMatch::Exact(b_id.clone());
    a.auth = cert_auth((a_cert, a_key), vec![sub.der.clone()], trust.clone());
    let mut b = peer(1, B_IP, A_IP, "unused");
    b.local_id = Some(b_id);
    b.auth = cert_auth((b_cert, b_key), vec![sub.der.clone()], trust);
    let p = connect_at(a, b, Some(NOW));
    p.assert_children_match();
}

#[test]
fn certificate_from_unknown_ca_is_rejected() {
    let root = Ca::root(Alg::P256, "root");
    let rogue = Ca::root(Alg::P256, "rogue");
    let (mut a, b) = ip_pair(Alg::P256, &root);
    a.auth = leaf_auth(&rogue, Alg::P256, "a", A_IP, 2030, &root);
    let p = connect_at(a, b, Some(NOW));
    assert_rejected_by(&p, Side::B);
}

#[test]
fn responder_certificate_from_unknown_ca_is_rejected_by_initiator() {
    let root = Ca::root(Alg::P256, "root");
    let rogue = Ca::root(Alg::P256, "rogue");
    let (a, mut b) = ip_pair(Alg::P256, &root);
    b.auth = leaf_auth(&rogue, Alg::P256, "b", B_IP, 2030, &root);
    let p = connect_at(a, b, Some(NOW));
    assert_rejected_by(&p, Side::A);
}

#[test]
fn missing_intermediate_is_rejected() {
    let root = Ca::root(Alg::P256, "root");
    let sub = root.intermediate(Alg::P256, "intermediate");
    let (mut a, b) = ip_pair(Alg::P256, &root);
    // A's certificate is issued by the intermediate, which A does not send.
    a.auth = leaf_auth(&sub, Alg::P256, "a", A_IP, 2030, &root);
    let p = connect_at(a, b, Some(NOW));
    assert_rejected_by(&p, Side::B);
}

#[test]
fn expired_certificate_is_rejected() {
    let root = Ca::root(Alg::P256, "root");
    let (mut a, b) = ip_pair(Alg::P256, &root);
    // Valid 2020..2025; the engine's wall clock says 2026.
    a.auth = leaf_auth(&root, Alg::P256, "a", A_IP, 2025, &root);
    let p = connect_at(a.clone(), b.clone(), Some(NOW));
    assert_rejected_by(&p, Side::B);
    // The same certificate at a time inside its validity period is fine: the time input
    // is what decides.
    let p = connect_at(a, b, Some(1_704_067_200)); // 2024-01-01
    p.assert_children_match();
}

#[test]
fn wall_clock_advances_with_monotonic_time() {
    // The anchor says 2024-12-31T23:59:00Z; A's certificate expires a minute later. After
    // two minutes of engine time the certificate has expired although the driver never
    // set the wall clock again.
    let root = Ca::root(Alg::P256, "root");
    let (mut a, b) = ip_pair(Alg::P256, &root);
    a.auth = leaf_auth(&root, Alg::P256, "a", A_IP, 2025, &root);
    let mut p = Pair::new(a.clone(), b.clone());
    p.set_wall_clock(1_735_689_600 - 60);
    p.drive_for(std::time::Duration::from_secs(120));
    p.connect();
    assert_rejected_by(&p, Side::B);
    let mut p = Pair::new(a, b);
    p.set_wall_clock(1_735_689_600 - 60);
    p.connect();
    p.assert_children_match();
}

#[test]
fn certificate_without_wall_clock_is_rejected() {
    let root = Ca::root(Alg::P256, "root");
    let (a, b) = ip_pair(Alg::P256, &root);
    let p = connect_at(a, b, None);
    assert_rejected_by(&p, Side::B);
}

#[test]
fn certificate_identity_mismatch_is_rejected() {
    let root = Ca::root(Alg::P256, "root");
    let (mut a, b) = ip_pair(Alg::P256, &root);
    // A's certificate names another address than the IDi A sends (its IP).
    a.auth = leaf_auth(
        &root,
        Alg::P256,
        "a",
        std::net::Ipv4Addr::new(192, 0, 2, 99),
        2030,
        &root,
    );
    let p = connect_at(a.clone(), b.clone(), Some(NOW));
    assert_rejected_by(&p, Side::B);
    // An FQDN IDi that only appears as the certificate's CN (not a SAN) does not bind.
    let mut a2 = a.clone();
    a2.local_id = Some(Identity::Fqdn("a".into()));
    a2.auth = leaf_auth(&root, Alg::P256, "a", A_IP, 2030, &root);
    let p = connect_at(a2, b, Some(NOW));
    assert_rejected_by(&p, Side::B);
    // The responder's certificate must bind its IDr for the initiator too.
    let (a, mut b) = ip_pair(Alg::P256, &root);
    b.local_id = Some(Identity::Fqdn("b.vpn.example".into()));
    let p = connect_at(a, b, Some(NOW));
    assert_rejected_by(&p, Side::A);
}

#[test]
fn pinned_and_certificate_profiles_coexist() {
    // A pinned-key initiator sends its certificate; a certificate responder validates it.
    let root = Ca::root(Alg::P256, "root");
    let (_, b) = ip_pair(Alg::P256, &root);
    let (a_cert, a_key) = root.issue(Alg::P256, "a", vec![ip_san(A_IP)], 2030);
    let AuthConfig::Certificate(bc) = &b.auth else {
        unreachable!()
    };
    let b_spki = crate::cert::subject_public_key_info(&bc.certificate)
        .expect("spki")
        .to_vec();
    let mut a = peer(1, A_IP, B_IP, "unused");
    a.auth = AuthConfig::Signature(SignatureAuth {
        key: a_key,
        certificate: Some(a_cert),
        peer_key: b_spki,
    });
    let p = connect_at(a, b, Some(NOW));
    p.assert_children_match();
}

#[test]
fn verify_peer_certificate_reasons() {
    use crate::cert::CertError;
    use crate::cert::verify_peer_certificate;
    use rcgen::ExtendedKeyUsagePurpose as Eku;
    let root = Ca::root(Alg::P256, "root");
    let sub = root.intermediate(Alg::P256, "intermediate");
    let rogue = Ca::root(Alg::P256, "rogue");
    let trust = anchors(&[&root]);
    let ip = Identity::Ipv4(A_IP);
    let (good, _) = sub.issue(Alg::P256, "a", vec![ip_san(A_IP)], 2030);
    let spki = verify_peer_certificate(&trust, &good, &[&sub.der], &ip, NOW).expect("valid");
    assert_eq!(
        spki,
        crate::cert::subject_public_key_info(&good).expect("spki")
    );
    let path = |r: Result<Vec<u8>, CertError>, want: &str| match r {
        Err(CertError::Path(why)) => assert!(why.contains(want), "{why}"),
        other => panic!("expected {want}, got {other:?}"),
    };
    path(
        verify_peer_certificate(&trust, &good, &[], &ip, NOW),
        "UnknownIssuer",
    );
    let (rogue_cert, _) = rogue.issue(Alg::P256, "a", vec![ip_san(A_IP)], 2030);
    path(
        verify_peer_certificate(&trust, &rogue_cert, &[], &ip, NOW),
        "UnknownIssuer",
    );
    path(
        verify_peer_certificate(&trust, &good, &[&sub.der], &ip, 2_240_611_200), // 2041
        "CertExpired",
    );
    path(
        verify_peer_certificate(&trust, &good, &[&sub.der], &ip, 1_500_000_000), // 2017
        "CertNotValidYet",
    );
    path(
        verify_peer_certificate(&trust, b"\x30\x00", &[], &ip, NOW),
        "BadDer",
    );
    for other in [
        Identity::Ipv4(B_IP),
        Identity::Fqdn("a".into()),
        Identity::Rfc822("a@example".into()),
        Identity::KeyId(b"a".to_vec()),
        subject_id(&root.der),
    ] {
        assert_eq!(
            verify_peer_certificate(&trust, &good, &[&sub.der], &other, NOW),
            Err(CertError::IdentityMismatch),
            "{other:?}"
        );
    }
    assert!(verify_peer_certificate(&trust, &good, &[&sub.der], &subject_id(&good), NOW).is_ok());
    // RFC 5280 §4.2.1.6: the rfc822Name local part is case-sensitive.
    let (mail, _) = root.issue(Alg::P256, "m", vec![email_san("Bob@example.org")], 2030);
    let ok = |id: &str| {
        verify_peer_certificate(&trust, &mail, &[], &Identity::Rfc822(id.into()), NOW).is_ok()
    };
    assert!(ok("Bob@EXAMPLE.org"));
    assert!(!ok("bob@example.org"));
    // RFC 4945 §5.1.3.12: an EKU extension must allow IKE (serverAuth is tolerated).
    let with_eku = |ekus: Vec<Eku>| {
        let key = keypair(Alg::P256);
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![ip_san(A_IP)];
        p.extended_key_usages = ekus;
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2030, 1, 1);
        let der = p
            .signed_by(&key, &Issuer::from_params(&root.params, &root.key))
            .expect("cert")
            .der()
            .to_vec();
        verify_peer_certificate(&trust, &der, &[], &ip, NOW)
    };
    path(with_eku(vec![Eku::CodeSigning]), "RequiredEkuNotFound");
    assert!(with_eku(vec![Eku::ServerAuth]).is_ok());
    assert!(
        with_eku(vec![
            Eku::CodeSigning,
            Eku::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 17])
        ])
        .is_ok()
    );
    // Trust anchors must parse.
    assert_eq!(
        TrustAnchors::from_der_certs([b"\x30\x00".as_slice()]).err(),
        Some(CertError::BadTrustAnchor(0))
    );
    assert_eq!(
        TrustAnchors::from_der_certs(Vec::<Vec<u8>>::new()).err(),
        Some(CertError::NoTrustAnchors)
    );
}

#[test]
fn identity_patterns() {
    let root = Ca::root(Alg::P256, "root");
    let (cert, _) = root.issue(Alg::P256, "peer one", vec![], 2030);
    let dn = subject_id(&cert);
    let o = "2.5.4.10".to_string();
    let cn = "2.5.4.3".to_string();
    // The DN as a user types it: other case, extra spaces; rcgen encoded UTF8String.
    let typed = IdMatch::Dn(vec![
        (o.clone(), "VTID test".into()),
        (cn.clone(), " peer  one ".into()),
    ]);
    assert!(typed.matches(&dn));
    // Order matters (RFC 5280 §7.1 compares RDN sequences), and every attribute counts.
    assert!(
        !IdMatch::Dn(vec![
            (cn.clone(), "peer one".into()),
            (o.clone(), "vtid test".into())
        ])
        .matches(&dn)
    );
    assert!(!IdMatch::Dn(vec![(cn.clone(), "peer one".into())]).matches(&dn));
    assert!(!IdMatch::Dn(vec![(o, "vtid test".into()), (cn, "peer two".into())]).matches(&dn));
    assert!(!typed.matches(&Identity::DerAsn1Dn(b"\x30\x01".to_vec())));
    assert!(!typed.matches(&Identity::Fqdn("peer one".into())));

    let wild = IdMatch::FqdnSuffix("Example.COM".into());
    assert!(wild.matches(&Identity::Fqdn("a.example.com".into())));
    assert!(wild.matches(&Identity::Fqdn("b.a.EXAMPLE.com".into())));
    assert!(!wild.matches(&Identity::Fqdn("example.com".into())));
    assert!(!wild.matches(&Identity::Fqdn("badexample.com".into())));
    assert!(!wild.matches(&Identity::Rfc822("a@example.com".into())));

    let mail = IdMatch::Rfc822Domain("example.org".into());
    assert!(mail.matches(&Identity::Rfc822("bob@EXAMPLE.org".into())));
    assert!(!mail.matches(&Identity::Rfc822("bob@example.org.evil".into())));

    let net = IdMatch::Prefix(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, 0)), 16);
    assert!(net.matches(&Identity::Ipv4(std::net::Ipv4Addr::new(10, 1, 2, 3))));
    assert!(!net.matches(&Identity::Ipv4(std::net::Ipv4Addr::new(10, 2, 0, 1))));
    assert!(!net.matches(&Identity::Fqdn("10.1.2.3".into())));

    let any_of = IdMatch::OneOf(vec![wild, mail]);
    assert!(any_of.matches(&Identity::Rfc822("x@example.org".into())));
    assert!(any_of.matches(&Identity::Fqdn("x.example.com".into())));
    assert!(!any_of.matches(&Identity::Fqdn("x.example.org".into())));
    assert!(!IdMatch::OneOf(Vec::new()).matches(&dn));
}
