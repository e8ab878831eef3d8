//! Phase 1 authentication variants: aggressive mode with pre-shared keys (RFC 2409 §5.4),
//! both roles, the responder's choice of key by identity, and its refusals.

use std::time::Duration;

use super::exchange_of;
use super::pair::*;
use super::up;
use crate::config::ConnId;
use crate::config::IdMatch;
use crate::endpoint::*;
use crate::v1::endpoint::Command as V1Command;
use crate::v1::error::notify_type;
use crate::v1::wire::ExchangeType;
use crate::v1::wire::Message;
use crate::v1::wire::Payload;
use crate::wire::Identity;

fn aggressive_peer(
    local: std::net::Ipv4Addr,
    remote: std::net::Ipv4Addr,
    psk: &str,
) -> crate::v1::config::V1Peer {
    let mut p = peer(local, remote, psk);
    p.aggressive = true;
    p
}

/// The exchange types `t` sent, in order, with their encryption flag.
fn sent_exchanges(t: &TestEndpoint) -> Vec<(ExchangeType, bool)> {
    t.sent
        .iter()
        .filter_map(|s| exchange_of(&s.bytes))
        .collect()
}

fn assert_no_rejections(p: &Pair) {
    for t in [&p.a, &p.b] {
        assert!(
            t.ep.stats().rejected.is_empty(),
            "{:?}",
            t.ep.stats().rejected
        );
    }
}

fn aggressive_connect(initiator: Side) -> Pair {
    let mut p = Pair::new(
        aggressive_peer(A_IP, B_IP, "secret"),
        aggressive_peer(B_IP, A_IP, "secret"),
    );
    p.command(initiator, V1Command::Initiate { conn: ConnId(1) });
    p.drive_for(Duration::from_secs(1));
    p
}

#[test]
fn aggressive_psk_a_initiates_three_messages_then_quick_mode() {
    let p = aggressive_connect(Side::A);
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    assert_no_rejections(&p);
    use ExchangeType::{Aggressive, Quick};
    // AM1 clear, AM3 encrypted (as strongSwan and IOS send it); AM2 clear; then quick mode.
    assert_eq!(
        sent_exchanges(&p.a),
        vec![
            (Aggressive, false),
            (Aggressive, true),
            (Quick, true),
            (Quick, true)
        ]
    );
    assert_eq!(
        sent_exchanges(&p.b),
        vec![(Aggressive, false), (Quick, true)]
    );
    // AM1 carries SA, KE, Ni and IDii; AM2 adds HASH_R.
    let kinds = |b: &[u8]| match Message::decode(b).expect("decodes").body {
        crate::v1::wire::Body::Plain(c) => c.payloads.iter().map(Payload::ty).collect(),
        crate::v1::wire::Body::Encrypted(_) => Vec::new(),
    };
    // Then vendor IDs (DPD, fragmentation, NAT-T) and, NAT-T being negotiated, AM2's NAT-D
    // pair (RFC 3947 §3.2).
    assert_eq!(kinds(&p.a.sent[0].bytes)[..5], [1, 4, 10, 5, 13]);
    assert!(kinds(&p.a.sent[0].bytes)[5..].iter().all(|t| *t == 13));
    assert_eq!(kinds(&p.b.sent[0].bytes)[..6], [1, 4, 10, 5, 8, 13]);
    assert!(
        kinds(&p.b.sent[0].bytes)[6..]
            .iter()
            .all(|t| *t == 13 || *t == 20)
    );
    for (t, other) in [(&p.a, B_IP), (&p.b, A_IP)] {
        let sa = &t.ep.sas()[0];
        assert_eq!(sa.state, "Established");
        assert_eq!(sa.peer_id, Some(Identity::Ipv4(other)));
        assert_eq!(sa.children.len(), 1);
    }
    assert!(p.a.ep.sas()[0].initiator && !p.b.ep.sas()[0].initiator);
    // AM3 carried INITIAL-CONTACT.
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::PeerAuthenticated {
            initial_contact: true,
            ..
        }
    )));
}

#[test]
fn aggressive_psk_b_initiates() {
    let p = aggressive_connect(Side::B);
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    assert_no_rejections(&p);
    assert!(p.b.ep.sas()[0].initiator && !p.a.ep.sas()[0].initiator);
    assert_eq!(p.a.ep.sas()[0].state, "Established");
    assert_eq!(sent_exchanges(&p.b)[0], (ExchangeType::Aggressive, false));
}

#[test]
fn lost_am2_is_answered_again_from_the_cache() {
    let mut p = Pair::new(
        aggressive_peer(A_IP, B_IP, "secret"),
        aggressive_peer(B_IP, A_IP, "secret"),
    );
    let mut seen = 0;
    p.filter = Some(Box::new(move |s, t| {
        if s == Side::B && exchange_of(&t.bytes).map(|e| e.0) == Some(ExchangeType::Aggressive) {
            seen += 1;
            if seen == 1 {
                return Verdict::Drop;
            }
        }
        Verdict::Deliver
    }));
    p.connect();
    p.drive_for(Duration::from_secs(5));
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    // B answered the repeated AM1 with the same AM2, byte for byte, not a second SA.
    let am2: Vec<&Vec<u8>> =
        p.b.sent
            .iter()
            .filter(|t| exchange_of(&t.bytes).map(|e| e.0) == Some(ExchangeType::Aggressive))
            .map(|t| &t.bytes)
            .collect();
    assert_eq!(am2.len(), 2);
    assert_eq!(am2[0], am2[1]);
    assert_eq!(p.b.ep.sa_count(), 1);
    assert_eq!(p.b.ep.stats().retransmits, 1);
}

#[test]
fn responder_picks_the_key_by_identity() {
    // A identifies as a.example; B has a profile for another identity first, with another
    // key, and both accept any address: only the identity can choose.
    let mut a = aggressive_peer(A_IP, B_IP, "key-of-a");
    a.local_id = Some(Identity::Fqdn("a.example".into()));
    let mut other = aggressive_peer(B_IP, A_IP, "key-of-c");
    other.remote = crate::config::RemoteAddr::Any;
    other.remote_id = IdMatch::Exact(Identity::Fqdn("c.example".into()));
    other.id = ConnId(7);
    let mut right = aggressive_peer(B_IP, A_IP, "key-of-a");
    right.remote = crate::config::RemoteAddr::Any;
    right.remote_id = IdMatch::Exact(Identity::Fqdn("a.example".into()));
    right.id = ConnId(8);
    let mut p = Pair::new(a, other.clone());
    p.b.ep.reconfigure(Arc::new(crate::v1::config::V1Config {
        peers: vec![other, right],
        ..Default::default()
    }));
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    let sa = &p.b.ep.sas()[0];
    assert_eq!(sa.conn, ConnId(8));
    assert_eq!(sa.peer_id, Some(Identity::Fqdn("a.example".into())));
}

#[test]
fn wrong_psk_in_aggressive_mode_fails_at_hash_r() {
    let mut p = Pair::new(
        aggressive_peer(A_IP, B_IP, "secret"),
        aggressive_peer(B_IP, A_IP, "other"),
    );
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (0, 0));
    assert!(p.a.installs.is_empty() && p.b.installs.is_empty());
    // A checks HASH_R in AM2 first, fails, and says INVALID-HASH-INFORMATION in clear.
    assert_eq!(p.a.ep.stats().rejected.get("v1_invalid_hash"), Some(&1));
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::AuthFailed {
            reason: "v1_invalid_hash",
            ..
        }
    )));
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Failed("v1_peer_rejected"),
            ..
        }
    )));
    let notify = p.a.sent.last().expect("notify");
    let msg = Message::decode(&notify.bytes).expect("decodes");
    assert_eq!(msg.header.exchange, ExchangeType::Informational);
    let crate::v1::wire::Body::Plain(c) = msg.body else {
        panic!("unprotected before keys are trusted");
    };
    assert!(matches!(
        &c.payloads[0],
        Payload::Notify(n) if n.ty == notify_type::INVALID_HASH_INFORMATION
    ));
    assert_eq!((p.a.ep.sa_count(), p.b.ep.sa_count()), (0, 0));
}

#[test]
fn aggressive_mode_refused_for_a_profile_without_it() {
    let mut p = Pair::new(
        aggressive_peer(A_IP, B_IP, "secret"),
        peer(B_IP, A_IP, "secret"),
    );
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (0, 0));
    // B answered nothing but the notify: no AM2, so no HASH_R to attack offline.
    assert_eq!(
        p.b.ep.stats().rejected.get("v1_aggressive_not_allowed"),
        Some(&1)
    );
    assert_eq!(p.b.sent.len(), 1);
    let msg = Message::decode(&p.b.sent[0].bytes).expect("decodes");
    assert_eq!(msg.header.exchange, ExchangeType::Informational);
    let crate::v1::wire::Body::Plain(c) = msg.body else {
        panic!("unprotected");
    };
    assert!(matches!(
        &c.payloads[0],
        Payload::Notify(n) if n.ty == notify_type::UNSUPPORTED_EXCHANGE_TYPE
    ));
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Failed("v1_peer_rejected"),
            ..
        }
    )));
    assert_eq!((p.a.ep.sa_count(), p.b.ep.sa_count()), (0, 0));
    // Main mode with the same profiles still works.
    let mut p = Pair::new(peer(A_IP, B_IP, "secret"), peer(B_IP, A_IP, "secret"));
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
}

#[test]
fn aggressive_mode_refused_for_an_identity_no_profile_accepts() {
    let mut a = aggressive_peer(A_IP, B_IP, "secret");
    a.local_id = Some(Identity::Fqdn("stranger.example".into()));
    let mut b = aggressive_peer(B_IP, A_IP, "secret");
    b.remote_id = IdMatch::Exact(Identity::Fqdn("a.example".into()));
    let mut p = Pair::new(a, b);
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (0, 0));
    assert_eq!(
        p.b.ep.stats().rejected.get("v1_no_matching_profile"),
        Some(&1)
    );
    assert_eq!(p.b.ep.sa_count(), 0);
    assert_eq!(p.a.ep.sa_count(), 0);
}

// ---- RSA signatures (RFC 2409 §5.1) ------------------------------------------------------

use std::sync::Arc;

use crate::cert::TrustAnchors;
use crate::config::CertificateAuth;
use crate::crypto::sig::SigningKey;
use crate::v1::config::AuthMethod;

/// 2026-01-01T00:00:00Z, inside every validity period below.
const NOW: u64 = 1_767_225_600;

/// A test CA made with rcgen (the IKEv2 tests' `crate::tests::certs` in the small: this
/// module may not import that one, as `crate::tests` imports `v1`).
struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    der: Vec<u8>,
}

fn rsa_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("rsa")
}

fn params(cn: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "vtid test");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    p
}

impl Ca {
    fn root(cn: &str) -> Self {
        let mut params = params(cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let key = rsa_key();
        let der = params.self_signed(&key).expect("root").der().to_vec();
        Self { params, key, der }
    }

    /// An RSA end-entity certificate whose only subjectAltName is `ip`, and its key.
    fn issue(&self, cn: &str, ip: std::net::Ipv4Addr) -> (Vec<u8>, Arc<SigningKey>) {
        let mut p = params(cn);
        p.subject_alt_names = vec![rcgen::SanType::IpAddress(ip.into())];
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rsa_key();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let der = p.signed_by(&key, &issuer).expect("ee").der().to_vec();
        let signing = SigningKey::from_pkcs8_der(&key.serialize_der()).expect("pkcs8");
        (der, Arc::new(signing))
    }
}

/// The certificate's subject as an ID_DER_ASN1_DN identity.
fn subject_id(der: &[u8]) -> Identity {
    Identity::DerAsn1Dn(crate::cert::subject_dn(der).expect("subject"))
}

/// A's certificate is identified by its subject DN (ID_DER_ASN1_DN), B's by its address
/// (ID_IPV4_ADDR, bound to the certificate's iPAddress subjectAltName).
struct Pki {
    ca: Ca,
    a: (Vec<u8>, Arc<SigningKey>),
    b: (Vec<u8>, Arc<SigningKey>),
}

fn pki() -> Pki {
    let ca = Ca::root("v1 root");
    let a = ca.issue("a.v1.test", A_IP);
    let b = ca.issue("b.v1.test", B_IP);
    Pki { ca, a, b }
}

fn rsa_peer(
    local: std::net::Ipv4Addr,
    remote: std::net::Ipv4Addr,
    (certificate, key): (Vec<u8>, Arc<SigningKey>),
    trust: &Ca,
    by_dn: bool,
) -> crate::v1::config::V1Peer {
    // The pre-shared key must play no part: each side has a different one.
    let mut p = peer(local, remote, &format!("unused-{local}"));
    for pol in &mut p.policies {
        pol.auth = AuthMethod::RsaSig;
    }
    if by_dn {
        p.local_id = Some(subject_id(&certificate));
    }
    p.cert = Some(CertificateAuth {
        key,
        certificate,
        chain: Vec::new(),
        trust_anchors: Arc::new(TrustAnchors::from_der_certs([&trust.der]).expect("anchors")),
    });
    p
}

fn rsa_pair(a: crate::v1::config::V1Peer, b: crate::v1::config::V1Peer) -> Pair {
    let mut p = Pair::new(a, b);
    let now = p.time;
    p.a.ep.set_wall_clock(now, NOW);
    p.b.ep.set_wall_clock(now, NOW);
    p
}

/// The payload types of `t`'s encrypted phase 1 messages cannot be seen; the clear ones
/// (MM3, MM4, AM1, AM2) can.
fn clear_payloads(t: &TestEndpoint) -> Vec<Vec<u8>> {
    t.sent
        .iter()
        .filter_map(|s| match Message::decode(&s.bytes).ok()?.body {
            crate::v1::wire::Body::Plain(c) => Some(c.payloads.iter().map(Payload::ty).collect()),
            crate::v1::wire::Body::Encrypted(_) => None,
        })
        .collect()
}

#[test]
fn rsa_sig_main_mode_authenticates_both_certificates() {
    let k = pki();
    let a_dn = subject_id(&k.a.0);
    let ca_dn = crate::cert::subject_dn(&k.ca.der).expect("ca subject");
    let mut p = rsa_pair(
        rsa_peer(A_IP, B_IP, k.a, &k.ca, true),
        rsa_peer(B_IP, A_IP, k.b, &k.ca, false),
    );
    p.connect();
    assert_no_rejections(&p);
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    assert_eq!(p.a.ep.sas()[0].peer_id, Some(Identity::Ipv4(B_IP)));
    assert_eq!(p.b.ep.sas()[0].peer_id, Some(a_dn));
    assert_eq!(p.b.ep.sas()[0].state, "Established");
    // MM3 and MM4 ask for certificates (CERTREQ, 7) naming the CA.
    assert!(
        clear_payloads(&p.a)[1].contains(&7),
        "{:?}",
        clear_payloads(&p.a)
    );
    assert!(
        clear_payloads(&p.b)[1].contains(&7),
        "{:?}",
        clear_payloads(&p.b)
    );
    // The CERTREQ's authority is the CA's subject Name, DER (RFC 2408 §3.10).
    let msg = Message::decode(&p.a.sent[1].bytes).expect("MM3");
    let crate::v1::wire::Body::Plain(c) = msg.body else {
        panic!("MM3 is clear");
    };
    assert!(
        c.payloads.iter().any(|x| matches!(
            x,
            Payload::CertReq(r) if r.cert_type == 4 && r.authority == ca_dn
        )),
        "{:?}",
        c.payloads
    );
    // Six main mode and three quick mode messages.
    assert_eq!(p.a.sent.len() + p.b.sent.len(), 9);
}

#[test]
fn rsa_sig_aggressive_mode_both_ways() {
    for initiator in [Side::A, Side::B] {
        let k = pki();
        let mut a = rsa_peer(A_IP, B_IP, k.a, &k.ca, true);
        let mut b = rsa_peer(B_IP, A_IP, k.b, &k.ca, false);
        a.aggressive = true;
        b.aggressive = true;
        let mut p = rsa_pair(a, b);
        p.command(initiator, V1Command::Initiate { conn: ConnId(1) });
        p.drive_for(Duration::from_secs(1));
        assert_no_rejections(&p);
        assert_eq!((up(&p.a), up(&p.b)), (1, 1), "{initiator:?}");
        p.assert_children_match();
        let (i, r) = match initiator {
            Side::A => (&p.a, &p.b),
            Side::B => (&p.b, &p.a),
        };
        // AM1: SA KE NONCE ID CERTREQ VID; AM2: SA KE NONCE ID CERT SIG CERTREQ VID.
        // Then the fragmentation and NAT-T vendor IDs, and AM2's NAT-D (RFC 3947 §3.2).
        assert_eq!(clear_payloads(i)[0][..6], [1, 4, 10, 5, 7, 13]);
        assert!(clear_payloads(i)[0][6..].iter().all(|t| *t == 13));
        // AM2 with its certificate is over 1280 octets and the initiator announced IKE
        // fragmentation: it goes as fragments (next payload 132), which the initiator put
        // back together (it came up).
        let frags = r
            .sent
            .iter()
            .take_while(|s| s.bytes.get(16) == Some(&132))
            .count();
        assert!(frags >= 2, "AM2 in {frags} fragments");
        assert_eq!(
            sent_exchanges(i)[..2],
            [
                (ExchangeType::Aggressive, false),
                (ExchangeType::Aggressive, true)
            ]
        );
    }
}

#[test]
fn rsa_sig_certificate_from_an_untrusted_ca_is_refused() {
    let k = pki();
    let other = Ca::root("someone else's root");
    // B trusts only `other`: A's certificate (from k.ca) does not chain.
    let mut p = rsa_pair(
        rsa_peer(A_IP, B_IP, k.a, &k.ca, true),
        rsa_peer(B_IP, A_IP, k.b, &other, false),
    );
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (0, 0));
    assert!(p.a.installs.is_empty() && p.b.installs.is_empty());
    assert_eq!(
        p.b.ep.stats().rejected.get("v1_certificate_rejected"),
        Some(&1),
        "{:?}",
        p.b.ep.stats().rejected
    );
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::AuthFailed {
            reason: "v1_certificate_rejected",
            ..
        }
    )));
    // B said INVALID-CERTIFICATE; A gave up on it.
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::AuthFailed {
            reason: "v1_peer_rejected",
            ..
        }
    )));
    assert_eq!((p.a.ep.sa_count(), p.b.ep.sa_count()), (0, 0));
}

#[test]
fn rsa_sig_signature_by_another_key_is_refused() {
    let k = pki();
    // A sends its valid certificate but signs with another key of the same CA.
    let (_, wrong_key) = k.ca.issue("x.v1.test", A_IP);
    let a_cert = (k.a.0.clone(), wrong_key);
    let mut p = rsa_pair(
        rsa_peer(A_IP, B_IP, a_cert, &k.ca, true),
        rsa_peer(B_IP, A_IP, k.b, &k.ca, false),
    );
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (0, 0));
    assert_eq!(
        p.b.ep.stats().rejected.get("v1_invalid_signature"),
        Some(&1),
        "{:?}",
        p.b.ep.stats().rejected
    );
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::AuthFailed {
            reason: "v1_invalid_signature",
            ..
        }
    )));
    assert!(p.a.installs.is_empty() && p.b.installs.is_empty());
    assert_eq!((p.a.ep.sa_count(), p.b.ep.sa_count()), (0, 0));
}

#[test]
fn rsa_sig_without_a_wall_clock_refuses_every_certificate() {
    let k = pki();
    let mut p = Pair::new(
        rsa_peer(A_IP, B_IP, k.a, &k.ca, true),
        rsa_peer(B_IP, A_IP, k.b, &k.ca, false),
    );
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (0, 0));
    assert_eq!(
        p.b.ep.stats().rejected.get("v1_local_failure"),
        Some(&1),
        "{:?}",
        p.b.ep.stats().rejected
    );
}
