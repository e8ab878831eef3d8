//! IKEv1 engine simulation tests: two engines in memory on a virtual clock (the IKEv2
//! harness's shape, `crate::tests::pair`), and the fuzz seeds they record.

mod dynamic_map;
mod natt;
mod pair;
mod phase1_auth;
mod rekey;
mod selectors;

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use rand_core::SeedableRng;

use pair::*;

use crate::config::ByteLimits;
use crate::config::ConnId;
use crate::config::EspProposal;
use crate::endpoint::*;
use crate::transform::DhGroup;
use crate::transform::Encr;
use crate::transform::Esn;
use crate::transform::Integ;
use crate::v1::config::V1Config;
use crate::v1::endpoint::Command as V1Command;
use crate::v1::endpoint::Endpoint as V1Endpoint;
use crate::v1::keys::HashAlg;
use crate::v1::wire::Body;
use crate::v1::wire::ExchangeType;
use crate::v1::wire::Message;
use crate::v1::wire::Payload;
use crate::wire::Identity;

fn up(t: &TestEndpoint) -> usize {
    t.count_events(|e| matches!(e, Event::IkeSaUp { .. }))
}

fn exchange_of(bytes: &[u8]) -> Option<(ExchangeType, bool)> {
    Message::decode(bytes)
        .ok()
        .map(|m| (m.header.exchange, m.header.is_encrypted()))
}

/// Drops the `n`th (0-based) datagram `from` sends whose exchange is `ex`.
fn drop_nth(p: &mut Pair, from: Side, ex: ExchangeType, n: usize) {
    let mut seen = 0;
    p.filter = Some(Box::new(move |s, t| {
        if s == from && exchange_of(&t.bytes).map(|e| e.0) == Some(ex) {
            seen += 1;
            if seen == n + 1 {
                return Verdict::Drop;
            }
        }
        Verdict::Deliver
    }));
}

#[test]
fn main_mode_psk_and_quick_mode_install_matching_keys() {
    let mut p = Pair::default_pair();
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    let ia = &p.a.installs[0];
    assert_eq!(ia.encr, Encr::AesCbc { key_bits: 256 });
    assert_eq!(ia.integ, Some(Integ::HmacSha256_128));
    assert_eq!(ia.inbound.encr.len(), 32);
    assert_eq!(ia.inbound.integ.as_ref().map(|k| k.len()), Some(32));
    assert_eq!(ia.local_ts[0].start.to_string(), "10.1.0.0");
    assert_eq!(ia.remote_ts[0].end.to_string(), "10.2.255.255");
    assert_eq!(ia.hard_lifetime, Duration::from_secs(3960));
    // The peer is authenticated before its first install, and the initiator installs
    // before it sends QM3 (after which the responder may use the SA).
    for t in [&p.a, &p.b] {
        let auth = t
            .events
            .iter()
            .position(|e| matches!(e, Event::PeerAuthenticated { .. }))
            .expect("authenticated");
        assert!(t.has_event(|e| matches!(e, Event::ChildSaUp { .. })));
        let _ = auth;
    }
    let a_install =
        p.a.log
            .iter()
            .position(|l| *l == "install")
            .expect("install");
    let a_last_tx = p.a.log.iter().rposition(|l| *l == "transmit").expect("tx");
    assert!(a_install < a_last_tx, "{:?}", p.a.log);
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::PeerAuthenticated { peer_id: Identity::Ipv4(ip), .. } if *ip == B_IP
    )));
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::PeerAuthenticated { peer_id: Identity::Ipv4(ip), initial_contact: true, .. } if *ip == A_IP
    )));
    assert!(
        p.a.ep.stats().rejected.is_empty(),
        "{:?}",
        p.a.ep.stats().rejected
    );
    assert!(
        p.b.ep.stats().rejected.is_empty(),
        "{:?}",
        p.b.ep.stats().rejected
    );
    let sa = &p.a.ep.sas()[0];
    assert_eq!(sa.state, "Established");
    assert_eq!(sa.children.len(), 1);
    assert_eq!(p.b.ep.sas()[0].peer_id, Some(Identity::Ipv4(A_IP)));
    // Six main mode messages and three quick mode messages, nothing more.
    assert_eq!(p.a.sent.len() + p.b.sent.len(), 9);
}

fn with_pfs(group: Option<DhGroup>) -> Pair {
    let mut a = peer(A_IP, B_IP, "secret");
    let mut b = peer(B_IP, A_IP, "secret");
    a.child.pfs = group;
    b.child.pfs = group;
    let mut p = Pair::new(a, b);
    p.connect();
    p
}

#[test]
fn quick_mode_with_pfs_carries_ke_and_changes_the_keys() {
    let plain = with_pfs(None);
    for g in [DhGroup::Modp2048, DhGroup::Ecp256, DhGroup::Ecp384] {
        let p = with_pfs(Some(g));
        p.assert_children_match();
        // QM1 carried a KE payload: A's first quick mode message is longer by it.
        let qm = |t: &TestEndpoint| {
            t.sent
                .iter()
                .find(|s| exchange_of(&s.bytes).map(|e| e.0) == Some(ExchangeType::Quick))
                .map(|s| s.bytes.len())
                .expect("QM1")
        };
        assert!(qm(&p.a) > qm(&plain.a), "{g:?}");
        // Same seeds, same main mode: only g(qm)^xy differs, and it enters KEYMAT.
        assert_ne!(
            p.a.installs[0].inbound, plain.a.installs[0].inbound,
            "{g:?}"
        );
    }
}

#[test]
fn pfs_demanded_by_responder_but_not_offered_is_no_proposal_chosen() {
    let a = peer(A_IP, B_IP, "secret");
    let mut b = peer(B_IP, A_IP, "secret");
    b.child.pfs = Some(DhGroup::Modp2048);
    let mut p = Pair::new(a, b);
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1), "phase 1 is fine");
    assert!(p.a.installs.is_empty() && p.b.installs.is_empty());
    assert_eq!(
        p.b.ep.stats().rejected.get("v1_no_proposal_chosen"),
        Some(&1)
    );
    // The protected NO-PROPOSAL-CHOSEN ended A's quick mode: no retransmissions after it.
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::Rejected {
            reason: "v1_peer_rejected",
            ..
        }
    )));
    let qm = |t: &TestEndpoint| {
        t.sent
            .iter()
            .filter(|s| exchange_of(&s.bytes).map(|e| e.0) == Some(ExchangeType::Quick))
            .count()
    };
    let sent = qm(&p.a);
    p.drive_for(Duration::from_secs(40));
    assert_eq!(qm(&p.a), sent);
    assert_eq!(sent, 1);
}

fn seed_policy_peer(
    local: std::net::Ipv4Addr,
    remote: std::net::Ipv4Addr,
    legacy: bool,
) -> crate::v1::config::V1Peer {
    // The seeds' C7206 <-> C1750 policy: encr 3des, hash sha, group 2; esp-3des esp-sha-hmac.
    let mut p = peer(local, remote, "cisco123");
    p.policies = vec![policy(
        10,
        Encr::TripleDes,
        HashAlg::Sha1,
        DhGroup::Modp1024,
    )];
    p.child.esp_proposals = vec![EspProposal {
        encr: Encr::TripleDes,
        integ: Some(Integ::HmacSha1_96),
        esn: Esn::No,
    }];
    p.allow_legacy = legacy;
    p
}

#[test]
fn legacy_seed_policy_needs_allow_legacy() {
    let mut p = Pair::new(
        seed_policy_peer(A_IP, B_IP, true),
        seed_policy_peer(B_IP, A_IP, true),
    );
    p.connect();
    p.assert_children_match();
    let i = &p.a.installs[0];
    assert_eq!(i.encr, Encr::TripleDes);
    assert_eq!(i.inbound.encr.len(), 24);
    assert_eq!(i.inbound.integ.as_ref().map(|k| k.len()), Some(20));
    // Without allow_legacy the same policy is not usable: nothing is sent.
    let mut p = Pair::new(
        seed_policy_peer(A_IP, B_IP, false),
        seed_policy_peer(B_IP, A_IP, true),
    );
    p.connect();
    assert!(p.a.sent.is_empty());
    assert_eq!(p.a.ep.sa_count(), 0);
}

#[test]
fn md5_phase1_and_group5_behind_allow_legacy() {
    let mk = |l, r| {
        let mut x = seed_policy_peer(l, r, true);
        x.policies = vec![policy(
            1,
            Encr::AesCbc { key_bits: 128 },
            HashAlg::Md5,
            DhGroup::Modp1536,
        )];
        x
    };
    let mut p = Pair::new(mk(A_IP, B_IP), mk(B_IP, A_IP));
    p.connect();
    p.assert_children_match();
}

#[test]
fn esp_aes_gcm_keys_carry_the_salt() {
    let mk = |l, r| {
        let mut x = peer(l, r, "secret");
        x.child.esp_proposals = vec![EspProposal {
            encr: Encr::AesGcm16 { key_bits: 128 },
            integ: None,
            esn: Esn::No,
        }];
        x.policies = vec![policy(
            1,
            Encr::AesCbc { key_bits: 128 },
            HashAlg::Sha512,
            DhGroup::Ecp384,
        )];
        x
    };
    let mut p = Pair::new(mk(A_IP, B_IP), mk(B_IP, A_IP));
    p.connect();
    p.assert_children_match();
    let i = &p.a.installs[0];
    assert_eq!(i.encr, Encr::AesGcm16 { key_bits: 128 });
    assert_eq!(
        i.inbound.encr.len(),
        20,
        "16-octet key + 4-octet salt (RFC 4106 §8.1)"
    );
    assert!(i.inbound.integ.is_none());
}

#[test]
fn wrong_psk_fails_without_sas() {
    let mut p = Pair::new(peer(A_IP, B_IP, "secret"), peer(B_IP, A_IP, "other"));
    p.connect();
    assert!(p.a.installs.is_empty() && p.b.installs.is_empty());
    assert_eq!((up(&p.a), up(&p.b)), (0, 0));
    // B could not read MM5 (its keys come from another PSK) and said AUTHENTICATION-FAILED.
    let rb = &p.b.ep.stats().rejected;
    assert_eq!(
        rb.get("v1_undecryptable_phase1")
            .or(rb.get("v1_invalid_hash")),
        Some(&1),
        "{rb:?}"
    );
    assert!(p.b.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::AuthFailed {
            reason: "v1_peer_rejected",
            ..
        }
    )));
    assert_eq!(p.a.ep.sa_count(), 0);
    assert_eq!(p.b.ep.sa_count(), 0);
}

#[test]
fn no_common_policy_is_no_proposal_chosen() {
    let a = peer(A_IP, B_IP, "secret");
    let mut b = peer(B_IP, A_IP, "secret");
    b.policies = vec![policy(
        1,
        Encr::AesCbc { key_bits: 128 },
        HashAlg::Sha384,
        DhGroup::Ecp256,
    )];
    let mut p = Pair::new(a, b);
    p.connect();
    assert_eq!(
        p.b.ep.stats().rejected.get("v1_no_proposal_chosen"),
        Some(&1)
    );
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Failed("v1_peer_rejected"),
            ..
        }
    )));
    assert_eq!(p.a.ep.sa_count(), 0);
    assert_eq!(p.b.ep.sa_count(), 0);
}

#[test]
fn responder_shorter_lifetimes_win_with_responder_lifetime() {
    let a = peer(A_IP, B_IP, "secret");
    let mut b = peer(B_IP, A_IP, "secret");
    b.child.lifetime.lifetime = Duration::from_secs(1800);
    b.child.lifetime_bytes = Some(ByteLimits {
        soft: 900 * 1024,
        hard: 1000 * 1024,
    });
    let mut p = Pair::new(a, b);
    p.connect();
    p.assert_children_match();
    for t in [&p.a, &p.b] {
        assert_eq!(t.installs[0].hard_lifetime, Duration::from_secs(1800));
        assert_eq!(t.installs[0].bytes.map(|b| b.hard), Some(1000 * 1024));
    }
}

#[test]
fn lost_initiator_messages_are_retransmitted() {
    // MM1, MM3, MM5 and QM1 (QM3 has its own test).
    for (ex, n) in [
        (ExchangeType::IdentityProtection, 0),
        (ExchangeType::IdentityProtection, 1),
        (ExchangeType::IdentityProtection, 2),
        (ExchangeType::Quick, 0),
    ] {
        {
            let mut p = Pair::default_pair();
            drop_nth(&mut p, Side::A, ex, n);
            p.connect();
            p.drive_for(Duration::from_secs(5));
            p.assert_children_match();
            assert_eq!((up(&p.a), up(&p.b)), (1, 1), "{ex:?} #{n}");
            assert_eq!(p.a.installs.len(), 1, "{ex:?} #{n}");
            assert_eq!(p.b.installs.len(), 1, "{ex:?} #{n}");
            assert!(p.a.ep.stats().retransmits + p.b.ep.stats().retransmits >= 1);
        }
    }
}

#[test]
fn lost_responder_messages_are_answered_by_resending() {
    // MM2, MM4, MM6 and QM2 lost once each: the initiator's retransmission gets the cached
    // answer again; the responder processes nothing twice.
    for (ex, n) in [
        (ExchangeType::IdentityProtection, 0),
        (ExchangeType::IdentityProtection, 1),
        (ExchangeType::IdentityProtection, 2),
        (ExchangeType::Quick, 0),
    ] {
        {
            let mut p = Pair::default_pair();
            drop_nth(&mut p, Side::B, ex, n);
            p.connect();
            p.drive_for(Duration::from_secs(5));
            p.assert_children_match();
            assert_eq!((up(&p.a), up(&p.b)), (1, 1), "{ex:?} #{n}");
            assert_eq!(p.b.installs.len(), 1, "{ex:?} #{n}");
            assert!(
                p.b.ep.stats().rejected.is_empty(),
                "{:?}",
                p.b.ep.stats().rejected
            );
        }
    }
}

#[test]
fn lost_qm3_is_recovered_by_the_responders_retransmission() {
    let mut p = Pair::default_pair();
    // A's second quick mode message is QM3.
    drop_nth(&mut p, Side::A, ExchangeType::Quick, 1);
    p.connect();
    p.drive_for(Duration::from_secs(5));
    p.assert_children_match();
    assert!(p.b.ep.stats().retransmits >= 1, "B repeated QM2");
    let qm3s =
        p.a.sent
            .iter()
            .filter(|t| exchange_of(&t.bytes).map(|e| e.0) == Some(ExchangeType::Quick))
            .count();
    assert_eq!(qm3s, 3, "QM1, QM3, and QM3 again from the cache");
    assert_eq!(p.a.installs.len(), 1, "A installed once");
}

#[test]
fn duplicated_datagrams_are_not_processed_twice() {
    let mut p = Pair::default_pair();
    p.filter = Some(Box::new(|_, _| Verdict::Duplicate));
    p.connect();
    p.drive_for(Duration::from_secs(5));
    p.assert_children_match();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    assert_eq!((p.a.installs.len(), p.b.installs.len()), (1, 1));
    assert!(
        p.a.ep.stats().rejected.is_empty(),
        "{:?}",
        p.a.ep.stats().rejected
    );
    assert!(
        p.b.ep.stats().rejected.is_empty(),
        "{:?}",
        p.b.ep.stats().rejected
    );
    assert!(p.a.ep.stats().retransmits + p.b.ep.stats().retransmits > 0);
}

#[test]
fn dpd_keeps_a_live_peer_and_declares_a_dead_one() {
    let mut p = Pair::default_pair();
    p.connect();
    let before = p.a.sent.len();
    p.drive_for(Duration::from_secs(60));
    assert!(p.a.sent.len() > before, "R-U-THERE sent while idle");
    assert!(!p.a.has_event(|e| matches!(e, Event::PeerDead { .. })));
    assert!(
        p.a.ep.stats().rejected.is_empty(),
        "{:?}",
        p.a.ep.stats().rejected
    );
    assert!(
        p.b.ep.stats().rejected.is_empty(),
        "{:?}",
        p.b.ep.stats().rejected
    );
    // B goes silent: A's probes (interval 10 s, 3 of them) go unanswered.
    p.filter = Some(Box::new(|s, _| {
        if s == Side::B {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    let t0 = p.time;
    p.drive_for(Duration::from_secs(60));
    assert!(p.a.has_event(|e| matches!(e, Event::PeerDead { .. })));
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Timeout,
            ..
        }
    )));
    assert!(p.a.live_children().is_empty());
    assert_eq!(p.a.ep.sa_count(), 0);
    let _ = t0;
}

#[test]
fn dpd_command_sends_one_probe_and_is_acknowledged() {
    let mut p = Pair::default_pair();
    p.connect();
    let session = p.a.installs[0].session;
    let (a0, b0) = (p.a.sent.len(), p.b.sent.len());
    p.command(Side::A, V1Command::Dpd { session });
    p.drive_now();
    assert_eq!((p.a.sent.len() - a0, p.b.sent.len() - b0), (1, 1));
    assert!(p.a.ep.stats().rejected.is_empty() && p.b.ep.stats().rejected.is_empty());
}

#[test]
fn delete_child_then_terminate() {
    let mut p = Pair::default_pair();
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, V1Command::DeleteChild { child });
    p.drive_now();
    assert!(p.a.live_children().is_empty());
    assert!(
        p.b.live_children().is_empty(),
        "B removed its half on the DELETE"
    );
    assert_eq!(p.b.removes[0].inbound_spi, p.a.removes[0].outbound_spi);
    assert_eq!(p.a.ep.sas()[0].state, "Established", "the ISAKMP SA stays");
    p.command(Side::A, V1Command::Initiate { conn: ConnId(1) });
    p.drive_now();
    p.assert_children_match();
    p.command(Side::A, V1Command::Terminate { conn: ConnId(1) });
    p.drive_now();
    assert_eq!((p.a.ep.sa_count(), p.b.ep.sa_count()), (0, 0));
    assert!(p.a.live_children().is_empty() && p.b.live_children().is_empty());
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Peer,
            ..
        }
    )));
}

#[test]
fn initial_contact_replaces_the_restarted_peers_old_sa() {
    let mut p = Pair::default_pair();
    p.connect();
    // A restarts: a fresh engine (another seed) with the same profile connects again.
    p.a = {
        let cfg = V1Config {
            peers: vec![peer(A_IP, B_IP, "secret")],
            ..V1Config::default()
        };
        let mut t = Pair::new(peer(A_IP, B_IP, "secret"), peer(B_IP, A_IP, "secret")).a;
        t.ep = V1Endpoint::new(Arc::new(cfg), [9; 32]);
        t
    };
    p.connect();
    assert_eq!(p.b.ep.sa_count(), 1);
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Replaced,
            ..
        }
    )));
    assert_eq!(p.b.live_children().len(), 1);
    p.assert_children_match();
}

#[test]
fn unprotected_informational_after_main_mode_is_ignored() {
    let mut p = Pair::default_pair();
    p.connect();
    let sa = p.a.ep.sas()[0].clone();
    let h = crate::v1::wire::Header::new(sa.cky_i, sa.cky_r, ExchangeType::Informational, 0, 7);
    let n = Payload::Notify(crate::v1::wire::Notify {
        doi: 1,
        protocol: 1,
        ty: crate::v1::error::notify_type::AUTHENTICATION_FAILED,
        spi: Vec::new(),
        data: Vec::new(),
    });
    let bytes = crate::v1::wire::encode_message(&h, &[n]);
    let now = p.time;
    p.a.ep.handle_datagram(
        now,
        Datagram {
            local: addr(A_IP, 500),
            remote: addr(B_IP, 500),
            bytes: &bytes,
        },
    );
    assert_eq!(p.a.ep.stats().rejected.get("v1_not_encrypted"), Some(&1));
    assert_eq!(p.a.ep.sas()[0].state, "Established");
}

/// Replays A's side of a conversation into a fresh responder (same seed, so the protected
/// messages stay valid for it) with one datagram mutated: never a panic, outputs drainable.
#[test]
fn mutated_conversation_never_panics_responder() {
    let iters: usize = std::env::var("IKE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let script = conversation();
    let config = Arc::new(V1Config {
        peers: vec![fast_peer(B_IP, A_IP)],
        ..V1Config::default()
    });
    let now = std::time::Instant::now();
    let replay = |script: &[Vec<u8>], b: &mut V1Endpoint| {
        let mut installs = 0;
        for bytes in script {
            b.handle_datagram(
                now,
                Datagram {
                    local: addr(B_IP, 500),
                    remote: addr(A_IP, 500),
                    bytes,
                },
            );
            while let Some(o) = b.poll_output() {
                installs += usize::from(matches!(o, Output::InstallChildSa(_)));
            }
        }
        installs
    };
    let mut b = V1Endpoint::new(config.clone(), [2; 32]);
    assert_eq!(
        replay(&script, &mut b),
        1,
        "an unmutated replay installs the Child SA"
    );
    assert!(b.stats().rejected.is_empty(), "{:?}", b.stats().rejected);
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    for i in 0..iters {
        let mut s = script.clone();
        let k = i % s.len();
        crate::v1::wire::tests::mutate(&mut rng, &mut s[k]);
        if rng.next_u32() % 2 == 0 && s[k].len() >= 28 {
            let len = s[k].len() as u32;
            s[k][24..28].copy_from_slice(&len.to_be_bytes());
        }
        let mut b = V1Endpoint::new(config.clone(), [2; 32]);
        replay(&s, &mut b);
        b.handle_timeout(now + Duration::from_secs(3600));
        while b.poll_output().is_some() {}
    }
}

/// A profile with a cheap group, so replays spend their time in the engine, not in DH.
fn fast_peer(l: std::net::Ipv4Addr, r: std::net::Ipv4Addr) -> crate::v1::config::V1Peer {
    let mut x = peer(l, r, "secret");
    x.policies = vec![policy(
        1,
        Encr::AesCbc { key_bits: 128 },
        HashAlg::Sha256,
        DhGroup::Ecp256,
    )];
    x
}

/// A's datagrams of a main mode + quick mode + DPD + delete conversation.
fn conversation() -> Vec<Vec<u8>> {
    let mut p = Pair::new(fast_peer(A_IP, B_IP), fast_peer(B_IP, A_IP));
    p.connect();
    let session = p.a.installs[0].session;
    p.command(Side::A, V1Command::Dpd { session });
    p.drive_now();
    p.command(Side::A, V1Command::Terminate { conn: ConnId(1) });
    p.drive_now();
    p.a.sent.iter().map(|t| t.bytes.clone()).collect()
}

/// ISAKMP messages for the `isakmp_decode` fuzz target's corpus: every payload type once,
/// and both sides of a real conversation.
pub(crate) fn fuzz_seed_messages() -> Vec<Vec<u8>> {
    let mut p = Pair::default_pair();
    p.connect();
    let mut v = vec![crate::v1::wire::tests::message()];
    v.extend(p.a.sent.iter().chain(&p.b.sent).map(|t| t.bytes.clone()));
    v
}

#[test]
fn conversation_messages_decode() {
    for m in fuzz_seed_messages() {
        let msg = Message::decode(&m).expect("decodes");
        if let Body::Plain(c) = msg.body {
            assert_eq!(crate::v1::wire::encode_message(&msg.header, &c.payloads), m);
        }
    }
}

#[test]
fn both_ends_starting_main_mode_at_once_end_with_one_isakmp_sa_and_one_pair() {
    // Two routers whose tunnels both initiate at start (IOS does so): the main mode with
    // the higher initiator cookie goes on at both ends, the other is dropped, so one ISAKMP
    // SA and one Child SA pair result instead of two of each.
    let mut p = Pair::default_pair();
    p.command(Side::A, V1Command::Initiate { conn: ConnId(1) });
    p.command(Side::B, V1Command::Initiate { conn: ConnId(1) });
    p.drive_for(Duration::from_secs(30));
    assert_eq!(up(&p.a), 1, "{:?}", p.a.events);
    assert_eq!(up(&p.b), 1, "{:?}", p.b.events);
    assert_eq!(p.a.ep.sa_count(), 1);
    assert_eq!(p.b.ep.sa_count(), 1);
    assert_eq!(p.a.live_children().len(), 1);
    assert_eq!(p.b.live_children().len(), 1);
    p.assert_children_match();
    // One of the two was the initiator, the other the responder.
    let (ia, ib) = (p.a.ep.sas()[0].initiator, p.b.ep.sas()[0].initiator);
    assert_ne!(ia, ib);
}
