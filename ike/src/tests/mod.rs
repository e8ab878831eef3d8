//! Engine simulation tests (L1): two endpoints in memory, virtual time, seeded RNGs.

mod certs;
mod children;
mod crl;
mod front_door;
mod fuzz;
mod initiate_to;
mod nat;
mod pair;
mod pq;
mod restart;
mod status;

use std::time::Duration;

use pair::*;

use crate::config::*;
use crate::endpoint::*;
use crate::transform::DhGroup;
use crate::transform::Encr;
use crate::wire::Identity;
use crate::wire::Message;
use crate::wire::Payload;
use crate::wire::TrafficSelector;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::NotifyType;

fn established(t: &TestEndpoint) -> bool {
    t.has_event(|e| matches!(e, Event::IkeSaUp { .. }))
}

fn exchange_of(bytes: &[u8]) -> Option<ExchangeType> {
    Message::decode(bytes).ok().map(|m| m.header.exchange)
}

/// Loses the first datagram `from` sends in an `exchange` exchange; everything else passes.
fn drop_first(p: &mut Pair, from: Side, exchange: ExchangeType) {
    let mut dropped = false;
    p.filter = Some(Box::new(move |s, t| {
        if s == from && !dropped && exchange_of(&t.bytes) == Some(exchange) {
            dropped = true;
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
}

#[test]
fn psk_handshake_installs_matching_child() {
    let mut p = Pair::default_pair();
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    assert_eq!(p.a.installs.len(), 1);
    assert_eq!(p.b.installs.len(), 1);
    p.assert_children_match();
    let ia = &p.a.installs[0];
    assert_eq!(ia.encr, Encr::AesGcm16 { key_bits: 256 });
    assert_eq!(ia.inbound.encr.len(), 36, "AES-256 key + 4-octet salt");
    assert!(ia.encap.is_none());
    // The agent creates the per-peer interface on PeerAuthenticated, before any install.
    for t in [&p.a, &p.b] {
        let auth = t
            .log
            .iter()
            .position(|l| l == "PeerAuthenticated")
            .expect("event");
        let inst = t.log.iter().position(|l| l == "install").expect("install");
        assert!(auth < inst, "{:?}", t.log);
    }
    // Responder installs before it sends the IKE_AUTH response.
    let last_tx = p.b.log.iter().rposition(|l| l == "transmit").expect("tx");
    let inst =
        p.b.log
            .iter()
            .position(|l| l == "install")
            .expect("install");
    assert!(inst < last_tx);
    assert!(p.a.has_event(
        |e| matches!(e, Event::PeerAuthenticated { peer_id: Identity::Ipv4(ip), .. } if *ip == B_IP)
    ));
    assert_eq!(p.a.ep.stats().rejected.len(), 0);
    assert_eq!(p.b.ep.stats().rejected.len(), 0);
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    let sa = &p.a.ep.sas()[0];
    assert_eq!(sa.state, "Established");
    assert_eq!(
        sa.children,
        vec![(ia.child, ia.inbound_spi, ia.outbound_spi)]
    );
    assert_eq!(p.b.ep.sas()[0].peer_id, Some(Identity::Ipv4(A_IP)));
}

#[test]
fn wrong_psk_fails_without_installs() {
    let mut p = Pair::new(peer(1, A_IP, B_IP, "secret"), peer(1, B_IP, A_IP, "other"));
    p.connect();
    assert!(p.a.installs.is_empty() && p.b.installs.is_empty());
    assert!(p.b.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    assert!(p.a.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    assert_eq!(
        p.b.ep.stats().rejected.get("authentication_failed"),
        Some(&1)
    );
    // The responder answered with a protected AUTHENTICATION_FAILED.
    assert_eq!(p.a.ep.stats().rejected.get("peer_rejected"), Some(&1));
    assert_eq!(p.a.ep.ike_sa_count(), 0);
    assert_eq!(p.b.ep.ike_sa_count(), 0);
}

#[test]
fn proposal_mismatch_is_no_proposal_chosen() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.ike_proposals = vec![IkeProposal::AES256GCM_SHA256_X25519];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.ike_proposals = vec![IkeProposal::AES128_SHA256_MODP2048];
    let mut p = Pair::new(a, b);
    p.connect();
    assert_eq!(p.b.ep.stats().rejected.get("no_proposal_chosen"), Some(&1));
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Failed("peer_rejected"),
            ..
        }
    )));
    assert_eq!(p.a.ep.ike_sa_count(), 0);
    assert_eq!(p.b.ep.ike_sa_count(), 0);
}

#[test]
fn invalid_ke_payload_retry_with_responder_group() {
    let ecp = IkeProposal {
        dh: DhGroup::Ecp256,
        ..IkeProposal::AES256GCM_SHA256_X25519
    };
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.ike_proposals = vec![IkeProposal::AES256GCM_SHA256_X25519, ecp];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.ike_proposals = vec![ecp];
    let mut p = Pair::new(a, b);
    p.connect();
    assert_eq!(p.b.ep.stats().rejected.get("invalid_ke_payload"), Some(&1));
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    let inits =
        p.a.sent
            .iter()
            .filter(|t| exchange_of(&t.bytes) == Some(ExchangeType::IkeSaInit));
    assert_eq!(inits.count(), 2);
}

#[test]
fn cookie_required_above_threshold() {
    let mut bc = endpoint_config(vec![peer(1, B_IP, A_IP, "secret")]);
    bc.limits.cookie_threshold = 0;
    let mut p = Pair::with_configs(endpoint_config(vec![peer(1, A_IP, B_IP, "secret")]), bc);
    p.connect();
    assert_eq!(p.b.ep.stats().rejected.get("cookie_required"), Some(&1));
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    // The retried request starts with the COOKIE notify (RFC 7296 §2.6).
    let second =
        p.a.sent
            .iter()
            .filter(|t| exchange_of(&t.bytes) == Some(ExchangeType::IkeSaInit))
            .nth(1)
            .expect("retry");
    let m = Message::decode(&second.bytes).expect("decode");
    assert!(matches!(&m.payloads[0], Payload::Notify(n) if n.ty == NotifyType::Cookie));
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
}

#[test]
fn traffic_selectors_are_narrowed() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child.local_ts = vec![TrafficSelector::prefix(v4(10, 1, 0, 0), 16)];
    a.child.remote_ts = vec![TrafficSelector::any(false)];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child.local_ts = vec![TrafficSelector::prefix(v4(10, 2, 0, 0), 16)];
    b.child.remote_ts = vec![TrafficSelector::prefix(v4(10, 0, 0, 0), 8)];
    let mut p = Pair::new(a, b);
    p.connect();
    p.assert_children_match();
    let ia = &p.a.installs[0];
    assert_eq!(
        ia.local_ts,
        vec![TrafficSelector::prefix(v4(10, 1, 0, 0), 16)]
    );
    assert_eq!(
        ia.remote_ts,
        vec![TrafficSelector::prefix(v4(10, 2, 0, 0), 16)]
    );
}

#[test]
fn disjoint_selectors_keep_ike_sa_without_child() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child.local_ts = vec![TrafficSelector::prefix(v4(10, 1, 0, 0), 16)];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child.remote_ts = vec![TrafficSelector::prefix(v4(10, 9, 0, 0), 16)];
    let mut p = Pair::new(a, b);
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    assert!(p.a.installs.is_empty() && p.b.installs.is_empty());
}

#[test]
fn transport_mode_negotiated() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child.mode = Mode::Transport;
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child.mode = Mode::Transport;
    let mut p = Pair::new(a, b);
    p.connect();
    p.assert_children_match();
    assert_eq!(p.a.installs[0].mode, Mode::Transport);
}

#[test]
fn child_rekey_is_make_before_break() {
    let mut p = Pair::default_pair();
    p.connect();
    let old_a = p.a.installs[0].child;
    // Past the soft lifetime (1 h minus margin and jitter) but before the hard one.
    p.drive_for(Duration::from_secs(3600));
    assert!(p.a.installs.len() >= 2, "rekeyed");
    let new_a =
        p.a.installs
            .iter()
            .find(|i| i.replaces.is_some())
            .expect("rekey install");
    assert!(
        p.a.removes
            .iter()
            .any(|r| r.child == old_a || r.child == new_a.replaces.unwrap_or(old_a))
    );
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
    for t in [&p.a, &p.b] {
        assert!(t.has_event(|e| matches!(e, Event::ChildSaRekeyed { .. })));
        assert!(!t.has_event(|e| matches!(e, Event::ChildSaDown { .. })));
        // The replacement is installed before the old one is removed.
        let inst = t.log.iter().rposition(|l| l == "install").expect("install");
        let rem = t.log.iter().rposition(|l| l == "remove").expect("remove");
        assert!(inst < rem);
    }
}

/// RFC 7296 §2.8 rekey, seen from its responder (B): the new inbound SA is installed before
/// the CREATE_CHILD_SA response leaves, the new outbound SA only when A deletes the old Child
/// SA (A has the new pair by then), and the old pair is removed after that. A installs both
/// halves of its new pair on the response. No moment leaves a side sending on an SA the other
/// lacks.
#[test]
fn child_rekey_responder_sends_on_the_old_pair_until_the_initiator_deletes_it() {
    let mut p = Pair::default_pair();
    p.connect();
    let old_b = p.b.installs[0].child;
    let child = p.a.installs[0].child;
    let (a0, b0) = (p.a.log.len(), p.b.log.len());
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    p.assert_children_match();
    let new_b = p.b.installs.last().expect("rekey install").clone();
    assert_eq!(new_b.replaces, Some(old_b));
    assert_eq!(new_b.halves, Halves::InboundFirst);
    assert_eq!(p.b.outbound_later, vec![new_b.child]);
    assert_eq!(p.a.installs.last().expect("a").halves, Halves::Both);
    // B: inbound, the response, then (A's DELETE arrived) outbound, then the old pair goes.
    let outputs = |log: &[String]| -> Vec<String> {
        let kinds = ["install", "install-outbound", "remove", "transmit"];
        log.iter()
            .filter(|l| kinds.contains(&l.as_str()))
            .cloned()
            .collect()
    };
    let b_log = outputs(&p.b.log[b0..]);
    assert_eq!(
        b_log,
        [
            "install",
            "transmit",
            "install-outbound",
            "remove",
            "transmit"
        ],
        "B's outputs"
    );
    // A: the new pair on the response, then the DELETE of the old.
    let a_log = outputs(&p.a.log[a0..]);
    assert_eq!(
        a_log[..3],
        ["transmit", "install", "transmit"],
        "A's outputs"
    );
}

/// The initiator's DELETE of the old Child SA is lost for good: the responder installs its
/// new outbound SA anyway once `OUTBOUND_FALLBACK` has passed, and not before.
#[test]
fn child_rekey_responder_installs_outbound_when_no_delete_comes() {
    let mut p = Pair::default_pair();
    p.connect();
    let child = p.a.installs[0].child;
    p.filter = Some(Box::new(|s, t| {
        if s == Side::A && exchange_of(&t.bytes) == Some(ExchangeType::Informational) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    let new_b = p.b.installs.last().expect("rekey install").child;
    assert_eq!(
        p.b.outbound_pending(),
        vec![new_b],
        "held back while A may not have it"
    );
    p.drive_for(crate::sa::child::OUTBOUND_FALLBACK);
    assert_eq!(p.b.outbound_later, vec![new_b]);
    assert!(p.b.outbound_pending().is_empty());
}

#[test]
fn child_rekey_on_command_with_pfs() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child.pfs = Some(DhGroup::Curve25519);
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child.pfs = Some(DhGroup::Curve25519);
    let mut p = Pair::new(a, b);
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 2);
    assert_eq!(p.b.installs.len(), 2);
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
    // PFS: the CREATE_CHILD_SA exchange carried a KE payload, so keys differ from IKE_AUTH's.
    assert_ne!(p.a.installs[0].outbound, p.a.installs[1].outbound);
}

#[test]
fn ike_rekey_moves_children() {
    let mut p = Pair::default_pair();
    p.connect();
    let session = p.a.installs[0].session;
    p.command(Side::A, Command::RekeyIke { session });
    p.drive_for(Duration::from_secs(1));
    assert!(p.a.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert!(p.b.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert!(p.a.removes.is_empty() && p.b.removes.is_empty());
    // The moved child is still rekeyable on the new IKE SA.
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 2);
    p.assert_children_match();
    // And the new IKE SA answers liveness checks.
    p.command(
        Side::B,
        Command::Dpd {
            session: p.b.installs[0].session,
        },
    );
    p.drive_for(Duration::from_secs(60));
    assert!(!p.a.has_event(|e| matches!(e, Event::PeerDead { .. })));
    assert!(!p.b.has_event(|e| matches!(e, Event::PeerDead { .. })));
}

#[test]
fn ike_rekey_by_time_from_responder() {
    let mut p = Pair::default_pair();
    p.connect();
    p.drive_for(Duration::from_secs(5 * 3600));
    assert!(p.a.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    p.assert_children_match();
    assert!(!p.a.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Timeout,
            ..
        }
    )));
}

#[test]
fn simultaneous_child_rekey_leaves_one_pair() {
    let mut p = Pair::default_pair();
    p.connect();
    let ca = p.a.installs[0].child;
    let cb = p.b.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child: ca });
    p.command(Side::B, Command::RekeyChild { child: cb });
    p.drive_for(Duration::from_secs(2));
    assert_eq!(p.a.installs.len(), 3, "old + two new");
    assert_eq!(p.b.installs.len(), 3);
    assert_eq!(p.a.live_children().len(), 1, "{:?}", p.a.log);
    assert_eq!(p.b.live_children().len(), 1, "{:?}", p.b.log);
    p.assert_children_match();
}

#[test]
fn terminate_deletes_everything() {
    let mut p = Pair::default_pair();
    p.connect();
    p.command(Side::A, Command::Terminate { conn: ConnId(1) });
    p.drive_for(Duration::from_secs(1));
    for t in [&p.a, &p.b] {
        assert_eq!(t.removes.len(), 1);
        assert!(t.has_event(|e| matches!(e, Event::ChildSaDown { .. })));
        assert!(t.has_event(|e| matches!(e, Event::IkeSaDown { .. })));
        assert_eq!(t.ep.ike_sa_count(), 0);
    }
    assert_eq!(p.a.ep.poll_timeout(), None);
}

#[test]
fn terminate_session_deletes_that_session_only() {
    let mut p = Pair::default_pair();
    p.connect();
    // The responder ends one session (a hub dropping one spoke); an unknown session changes
    // nothing.
    let session = p.b.installs[0].session;
    p.command(
        Side::B,
        Command::TerminateSession {
            session: SessionId(session.0 + 1000),
        },
    );
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert!(p.b.removes.is_empty());
    p.command(Side::B, Command::TerminateSession { session });
    p.drive_for(Duration::from_secs(1));
    for t in [&p.a, &p.b] {
        assert_eq!(t.removes.len(), 1);
        assert!(t.has_event(|e| matches!(e, Event::IkeSaDown { .. })));
        assert_eq!(t.ep.ike_sa_count(), 0);
    }
}

#[test]
fn child_expired_is_deleted_with_peer() {
    let mut p = Pair::default_pair();
    p.connect();
    let child = p.b.installs[0].child;
    p.command(Side::B, Command::ChildExpired { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.removes.len(), 1);
    assert_eq!(p.b.removes.len(), 1);
    assert!(p.a.live_children().is_empty());
    assert!(established(&p.a));
}

#[test]
fn install_failure_deletes_child_with_peer() {
    let mut p = Pair::default_pair();
    p.fail_install_b = true;
    p.connect();
    assert_eq!(p.b.removes.len(), 1);
    assert_eq!(p.a.removes.len(), 1);
    assert_eq!(p.a.ep.ike_sa_count(), 1);
}

/// Silences B after the handshake and returns when A declared it dead, with the number of
/// liveness checks A sent.
fn dead_peer_time(dpd: Dpd) -> (Duration, usize) {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.dpd = Some(dpd);
    let mut p = Pair::new(a, peer(1, B_IP, A_IP, "secret"));
    // The handshake completes at the start instant; `connect` then idles for a second.
    p.connect();
    let heard = p.start;
    p.filter = Some(Box::new(|s, _| {
        if s == Side::B {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    let step = Duration::from_millis(100);
    while !p.a.has_event(|e| matches!(e, Event::PeerDead { .. })) {
        assert!(
            p.time - heard < Duration::from_secs(600),
            "never declared dead"
        );
        p.drive_for(step);
    }
    assert_eq!(p.a.removes.len(), 1);
    assert_eq!(p.a.ep.ike_sa_count(), 0);
    let checks =
        p.a.sent
            .iter()
            .filter(|t| exchange_of(&t.bytes) == Some(ExchangeType::Informational))
            .count();
    (p.time - heard, checks)
}

#[test]
fn dead_peer_detection_honours_interval_and_retries() {
    // `config::Dpd`: the first check after `interval` of silence, `retries` checks in all,
    // each given `interval`: dead `interval * (retries + 1)` after we last heard.
    let secs = |s| Duration::from_secs(s);
    for (interval, retries) in [(2, 2), (2, 5), (10, 3), (30, 1)] {
        let (t, checks) = dead_peer_time(Dpd {
            interval: secs(interval),
            retries,
        });
        let want = secs(interval * (u64::from(retries) + 1));
        assert!(
            t >= want && t <= want + Duration::from_millis(200),
            "interval {interval} retries {retries}: dead after {t:?}, want {want:?}"
        );
        assert_eq!(
            checks, retries as usize,
            "interval {interval} retries {retries}"
        );
    }
}

#[test]
fn other_requests_keep_the_exponential_backoff() {
    // A request other than a liveness check (here a Child SA rekey) is retransmitted on
    // RFC 7296 §2.1's schedule even with DPD configured: 1+2+4+8+16 s.
    let mut p = Pair::default_pair();
    p.connect();
    p.filter = Some(Box::new(|s, _| {
        if s == Side::B {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    let child = p.a.live_children()[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(31 - 1));
    assert!(!p.a.has_event(|e| matches!(e, Event::PeerDead { .. })));
    p.drive_for(Duration::from_secs(2));
    assert!(p.a.has_event(|e| matches!(e, Event::PeerDead { .. })));
}

#[test]
fn lost_auth_request_is_retransmitted() {
    let mut p = Pair::default_pair();
    drop_first(&mut p, Side::A, ExchangeType::IkeAuth);
    p.connect();
    p.drive_for(Duration::from_secs(2));
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    assert_eq!(p.a.ep.stats().retransmits, 1);
}

#[test]
fn lost_auth_response_is_replayed_from_cache() {
    let mut p = Pair::default_pair();
    drop_first(&mut p, Side::B, ExchangeType::IkeAuth);
    p.connect();
    p.drive_for(Duration::from_secs(2));
    p.assert_children_match();
    assert_eq!(
        p.b.installs.len(),
        1,
        "the retransmitted request must not install twice"
    );
    assert_eq!(p.b.ep.stats().retransmits, 1, "cached response replayed");
}

#[test]
fn duplicated_datagrams_are_harmless() {
    let mut p = Pair::default_pair();
    p.filter = Some(Box::new(|_, _| Verdict::Duplicate));
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(2));
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
    assert_eq!(p.b.installs.len(), 2);
    assert!(p.b.ep.stats().retransmits >= 1);
}

#[test]
fn reordered_datagrams() {
    let mut p = Pair::default_pair();
    p.reorder = true;
    p.filter = Some(Box::new(|_, _| Verdict::Duplicate));
    p.connect();
    p.drive_for(Duration::from_secs(5));
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
}

#[test]
fn garbage_is_counted_and_ignored() {
    let mut p = Pair::default_pair();
    p.connect();
    let now = p.time;
    let from = addr(A_IP, 500);
    let to = addr(B_IP, 500);
    let mut junk = vec![
        vec![],
        vec![0u8; 27],
        vec![0xff; 200],
        p.a.sent.last().map(|t| t.bytes.clone()).unwrap_or_default(),
    ];
    // A protected request with a flipped ICV bit.
    let mut forged = p.a.sent[1].bytes.clone();
    let n = forged.len();
    forged[n - 1] ^= 1;
    junk.push(forged);
    for j in &junk {
        p.b.ep.handle_datagram(
            now,
            Datagram {
                local: to,
                remote: from,
                bytes: j,
            },
        );
    }
    p.drive_now();
    let st = p.b.ep.stats();
    let total: u64 = st.rejected.values().sum();
    // The replayed IKE_AUTH request is a retransmission answered from the cache, not junk.
    assert_eq!(total, junk.len() as u64 - 1, "{:?}", st.rejected);
    assert_eq!(st.retransmits, 1);
    assert!(st.rejected.contains_key("invalid_message"));
    assert!(p.b.installs.len() == 1 && p.b.removes.is_empty());
    p.assert_children_match();
}

#[test]
fn nat_detected_floats_to_4500() {
    let mut p = Pair::nat_pair();
    let ia = &p.a.installs[0];
    let ib = &p.b.installs[0];
    assert_eq!(
        ia.encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: 4500
        })
    );
    assert_eq!(
        ib.encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: 34500
        })
    );
    assert_eq!(ib.remote.ip(), std::net::IpAddr::V4(NAT_PUBLIC));
    p.drive_for(Duration::from_secs(21));
    assert!(
        p.a.keepalives >= 1,
        "NAT-T keepalives from the side behind the NAT"
    );
    assert_eq!(p.b.keepalives, 0);
}

#[test]
fn fragmented_ike_auth() {
    let mut ac = endpoint_config(vec![peer(1, A_IP, B_IP, "secret")]);
    ac.fragment_size = 200;
    let mut bc = endpoint_config(vec![peer(1, B_IP, A_IP, "secret")]);
    bc.fragment_size = 200;
    let mut p = Pair::with_configs(ac, bc);
    p.connect();
    p.assert_children_match();
    let frags =
        p.a.sent
            .iter()
            .filter_map(|t| Message::decode(&t.bytes).ok())
            .filter(|m| matches!(m.payloads.last(), Some(Payload::Skf(_))))
            .count();
    assert!(frags >= 2, "IKE_AUTH went out in fragments");
    assert!(p.a.sent.iter().all(|t| t.bytes.len() <= 200 || exchange_of(&t.bytes) == Some(ExchangeType::IkeSaInit)));
}

#[test]
fn initial_contact_replaces_old_session() {
    let mut p = Pair::default_pair();
    p.connect();
    // A restarts: same profile, fresh engine, new handshake with INITIAL_CONTACT.
    let cfg = p.a.ep.config().clone();
    p.a.ep = Endpoint::new(cfg, [9; 32]);
    p.connect();
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Replaced,
            ..
        }
    )));
    assert_eq!(p.b.live_children().len(), 1);
}

#[test]
fn second_ike_sa_between_same_identities_sends_no_initial_contact() {
    // Two tunnels of A to B under the same identities (the interop matrix does this on
    // several address pairs). INITIAL_CONTACT on the second would make B (and strongSwan)
    // delete the first as state from A's earlier life.
    let ids = |mut c: PeerConfig| {
        c.local_id = Some(Identity::Fqdn("a.example".into()));
        c.remote_id = IdMatch::Exact(Identity::Fqdn("b.example".into()));
        c
    };
    let a1 = ids(peer(1, A_IP, B_IP, "secret"));
    let a2 = ids(peer(2, A_IP, B_IP, "secret"));
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.local_id = Some(Identity::Fqdn("b.example".into()));
    let mut p = Pair::with_configs(endpoint_config(vec![a1, a2]), endpoint_config(vec![b]));
    p.connect();
    p.command(Side::A, Command::Initiate { conn: ConnId(2) });
    p.drive_for(Duration::from_secs(1));
    let flags: Vec<bool> = p.b.initial_contacts();
    assert_eq!(
        flags,
        [true, false],
        "only the first IKE SA carries INITIAL_CONTACT"
    );
    assert_eq!(p.b.ep.ike_sa_count(), 2);
    assert!(!p.b.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Replaced,
            ..
        }
    )));
}

#[test]
fn two_ike_sas_started_together_between_same_identities_send_one_initial_contact() {
    // Two tunnels of A to B under the same identities, started in the same instant (a
    // daemon's start): neither is established when the other's IKE_SA_INIT response comes
    // back, so "established" alone would let both send INITIAL_CONTACT, and B would delete
    // whichever came up first.
    let ids = |mut c: PeerConfig| {
        c.local_id = Some(Identity::Fqdn("a.example".into()));
        c.remote_id = IdMatch::Exact(Identity::Fqdn("b.example".into()));
        c
    };
    let a1 = ids(peer(1, A_IP, B_IP, "secret"));
    let a2 = ids(peer(2, A_IP, B_IP, "secret"));
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.local_id = Some(Identity::Fqdn("b.example".into()));
    let mut p = Pair::with_configs(endpoint_config(vec![a1, a2]), endpoint_config(vec![b]));
    p.command(Side::A, Command::Initiate { conn: ConnId(1) });
    p.command(Side::A, Command::Initiate { conn: ConnId(2) });
    p.drive_for(Duration::from_secs(2));
    let mut flags: Vec<bool> = p.b.initial_contacts();
    flags.sort();
    assert_eq!(
        flags,
        [false, true],
        "exactly one IKE SA carries INITIAL_CONTACT"
    );
    assert_eq!(p.b.ep.ike_sa_count(), 2);
    assert_eq!(p.a.ep.ike_sa_count(), 2);
    assert!(!p.b.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Replaced,
            ..
        }
    )));
}

#[test]
fn id_types_and_remote_id_match() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.local_id = Some(Identity::Fqdn("a.example".into()));
    a.remote_id = IdMatch::Exact(Identity::Rfc822("b@example".into()));
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.local_id = Some(Identity::Rfc822("b@example".into()));
    b.remote_id = IdMatch::Exact(Identity::Fqdn("a.example".into()));
    let mut p = Pair::new(a, b.clone());
    p.connect();
    p.assert_children_match();
    // A responder profile expecting another ID refuses.
    b.remote_id = IdMatch::Exact(Identity::KeyId(vec![1, 2]));
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.local_id = Some(Identity::Fqdn("a.example".into()));
    let mut p = Pair::new(a, b);
    p.connect();
    assert!(p.b.installs.is_empty());
    assert!(p.b.has_event(|e| matches!(e, Event::AuthFailed { .. })));
}

#[test]
fn hub_profile_accepts_any_address() {
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.remote = RemoteAddr::Prefix(v4(192, 0, 2, 0), 24);
    let mut p = Pair::new(peer(1, A_IP, B_IP, "secret"), b);
    p.connect();
    p.assert_children_match();
    // A responder-only profile cannot be initiated.
    p.command(Side::B, Command::Initiate { conn: ConnId(1) });
    assert_eq!(p.b.ep.ike_sa_count(), 1);
}

#[test]
fn responder_prefers_the_group_of_the_sent_ke() {
    let ecp = IkeProposal {
        dh: DhGroup::Ecp256,
        ..IkeProposal::AES256GCM_SHA256_X25519
    };
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.ike_proposals = vec![IkeProposal::AES256GCM_SHA256_X25519, ecp];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.ike_proposals = vec![ecp, IkeProposal::AES256GCM_SHA256_X25519];
    let mut p = Pair::new(a, b);
    p.connect();
    assert!(
        p.b.ep.stats().rejected.is_empty(),
        "{:?}",
        p.b.ep.stats().rejected
    );
    p.assert_children_match();
}

#[test]
fn repeated_initiate_is_ignored() {
    let mut p = Pair::default_pair();
    p.initiate();
    p.initiate();
    p.drive_for(Duration::from_secs(1));
    p.initiate();
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert_eq!(p.a.installs.len(), 1);
}

#[test]
fn peer_pfs_followed_without_local_pfs() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child.pfs = Some(DhGroup::Curve25519);
    let mut p = Pair::new(a, peer(1, B_IP, A_IP, "secret"));
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.b.installs.len(), 2);
    p.assert_children_match();
}

#[test]
fn initiate_on_childless_sa_creates_child() {
    let mut p = Pair::default_pair();
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::ChildExpired { child });
    p.drive_for(Duration::from_secs(1));
    assert!(p.a.live_children().is_empty() && p.b.live_children().is_empty());
    p.initiate();
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 2);
    assert_eq!(p.a.installs[1].replaces, None);
    p.assert_children_match();
    assert_eq!(p.a.ep.ike_sa_count(), 1);
}

/// Both ends of a static tunnel start it at once (the usual case after a power cut): each
/// completes an IKE SA, and the duplicate must go away on both sides with its Child SA.
#[test]
fn simultaneous_initiation_leaves_one_ike_sa() {
    let mut p = Pair::default_pair();
    p.command(Side::A, Command::Initiate { conn: ConnId(1) });
    p.command(Side::B, Command::Initiate { conn: ConnId(1) });
    p.drive_for(Duration::from_secs(5));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert_eq!(p.a.live_children().len(), 1, "{:?}", p.a.live_children());
    p.assert_children_match();
    // Both ends picked the same survivor.
    let (ia, ib) = (p.a.ep.sas(), p.b.ep.sas());
    assert_eq!((ia[0].spi_i, ia[0].spi_r), (ib[0].spi_i, ib[0].spi_r));
}

/// Both ends start at once, their messages delivered in every kind of order (seeded), with
/// the peer's identity configured and not: each run ends with one IKE SA and one Child SA
/// pair, the same on both ends, and INITIAL_CONTACT never rides on both crossing SAs (a
/// peer that drops its other SAs on it, as strongSwan does, would otherwise be left with
/// the SA this end deleted as the duplicate, RFC 7296 §2.4).
#[test]
fn simultaneous_initiation_converges_in_any_order() {
    let mut crossed = 0;
    for run in 0u64..400 {
        let (mut a, mut b) = (peer(1, A_IP, B_IP, "secret"), peer(1, B_IP, A_IP, "secret"));
        if run % 2 == 1 {
            a.remote_id = IdMatch::Exact(Identity::Ipv4(B_IP));
            b.remote_id = IdMatch::Exact(Identity::Ipv4(A_IP));
        }
        let seeds = [(run % 251) as u8 + 1, (run / 2 % 241) as u8 + 3];
        let mut p = Pair::with_seeds(endpoint_config(vec![a]), endpoint_config(vec![b]), seeds);
        // splitmix64: the order of deliveries, and when B starts.
        let mut state = run.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as usize
        };
        p.command(Side::A, Command::Initiate { conn: ConnId(1) });
        let b_after = next() % 4;
        for step in 0..2000 {
            if step == b_after {
                p.command(Side::B, Command::Initiate { conn: ConnId(1) });
            }
            if !p.deliver_one(&mut |n| next() % n) && step > b_after {
                break;
            }
        }
        p.drive_for(Duration::from_secs(60));
        let ctx = format!("run {run}: a {:?} b {:?}", p.a.log, p.b.log);
        assert_eq!(p.a.ep.ike_sa_count(), 1, "{ctx}");
        assert_eq!(p.b.ep.ike_sa_count(), 1, "{ctx}");
        let (ia, ib) = (p.a.ep.sas(), p.b.ep.sas());
        assert_eq!(
            (ia[0].spi_i, ia[0].spi_r),
            (ib[0].spi_i, ib[0].spi_r),
            "{ctx}"
        );
        assert_eq!(p.a.live_children().len(), 1, "{ctx}");
        p.assert_children_match();
        let ic = |e: &TestEndpoint| e.initial_contacts().iter().filter(|c| **c).count();
        assert!(ic(&p.a) + ic(&p.b) <= 1, "{ctx}: INITIAL_CONTACT both ways");
        crossed += usize::from(p.a.initial_contacts().len() + p.b.initial_contacts().len() > 2);
    }
    // The orders played did make both ends complete an IKE SA, many times.
    assert!(crossed > 50, "only {crossed} runs had two IKE SAs at once");
}

#[test]
fn simultaneous_ike_rekey_converges() {
    let mut p = Pair::default_pair();
    p.connect();
    let sa = p.a.installs[0].session;
    let sb = p.b.installs[0].session;
    p.command(Side::A, Command::RekeyIke { session: sa });
    p.command(Side::B, Command::RekeyIke { session: sb });
    p.drive_for(Duration::from_secs(30));
    assert!(p.a.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    p.assert_children_match();
    // Both sides still talk on the surviving SA.
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
}

#[test]
fn half_open_sa_expires() {
    let mut p = Pair::default_pair();
    // Drop A's IKE_AUTH for good: B keeps a half-open SA until its timeout.
    p.filter = Some(Box::new(|s, t| {
        if s == Side::A && exchange_of(&t.bytes) == Some(ExchangeType::IkeAuth) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    p.initiate();
    p.drive_for(Duration::from_secs(29));
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    p.drive_for(Duration::from_secs(2));
    assert_eq!(p.b.ep.ike_sa_count(), 0);
    // The initiator gave up after its retransmissions (1+2+4+8+16 s).
    assert_eq!(p.a.ep.ike_sa_count(), 0);
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Timeout,
            ..
        }
    )));
}

#[test]
fn unknown_critical_payload_in_sa_init() {
    let mut p = Pair::default_pair();
    p.initiate();
    let Some(Output::Transmit(t)) = p.a.ep.poll_output() else {
        panic!("no IKE_SA_INIT");
    };
    // Append an unknown payload type 0x80 with the critical bit at the end of the chain.
    let mut m = Message::decode(&t.bytes).expect("decode");
    let mut bytes = m.encode();
    let last_hdr = {
        // Walk the chain to find the last generic header.
        let mut off = 28;
        let mut last = 28;
        while off < bytes.len() {
            last = off;
            off += usize::from(u16::from_be_bytes([bytes[off + 2], bytes[off + 3]]));
        }
        last
    };
    bytes[last_hdr] = 0x80;
    bytes.extend_from_slice(&[0, 0x80, 0, 4]);
    let len = bytes.len() as u32;
    bytes[24..28].copy_from_slice(&len.to_be_bytes());
    m.payloads.clear();
    let now = p.time;
    p.b.ep.handle_datagram(
        now,
        Datagram {
            local: t.remote,
            remote: t.local,
            bytes: &bytes,
        },
    );
    assert_eq!(
        p.b.ep.stats().rejected.get("unsupported_critical_payload"),
        Some(&1)
    );
    let reply = std::iter::from_fn(|| p.b.ep.poll_output())
        .find_map(|o| match o {
            Output::Transmit(t) => Some(t),
            _ => None,
        })
        .expect("error notify");
    let r = Message::decode(&reply.bytes).expect("decode");
    assert!(matches!(
        &r.payloads[0],
        Payload::Notify(n) if n.ty == NotifyType::UnsupportedCriticalPayload && n.data == [0x80]
    ));
    assert_eq!(p.b.ep.ike_sa_count(), 0);
}

#[test]
fn lost_sa_init_response_replayed_from_half_open_sa() {
    let mut p = Pair::default_pair();
    drop_first(&mut p, Side::B, ExchangeType::IkeSaInit);
    p.connect();
    p.drive_for(Duration::from_secs(2));
    p.assert_children_match();
    assert_eq!(
        p.b.ep.ike_sa_count(),
        1,
        "the retransmitted IKE_SA_INIT reuses the SA"
    );
    let responses =
        p.b.sent
            .iter()
            .filter(|t| exchange_of(&t.bytes) == Some(ExchangeType::IkeSaInit));
    assert_eq!(responses.count(), 2);
}

#[test]
fn sa_init_replayed_only_for_the_identical_request() {
    // RFC 7296 §2.1: a retransmission is the identical request. Anything else that matches a
    // half-open SA's SPIi, message ID and source (a forged 28-octet header, a garbage or
    // mutated body) must get nothing: the cached response is several times larger, and a
    // spoofed source would make us an amplifier toward it (issue 19).
    let mut p = Pair::default_pair();
    // B stays half-open: A's IKE_AUTH never arrives.
    p.filter = Some(Box::new(|s, t| {
        if s == Side::A && exchange_of(&t.bytes) == Some(ExchangeType::IkeAuth) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    p.initiate();
    assert!(p.drive_now());
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    let request = p.a.sent[0].clone();
    assert_eq!(exchange_of(&request.bytes), Some(ExchangeType::IkeSaInit));
    let response = p.b.sent[0].bytes.clone();
    assert!(response.len() > 28);
    let send = |p: &mut Pair, bytes: &[u8]| -> Vec<Vec<u8>> {
        let dgram = Datagram {
            local: request.remote,
            remote: request.local,
            bytes,
        };
        p.b.ep.handle_datagram(p.time, dgram);
        let mut sent = Vec::new();
        while let Some(o) = p.b.ep.poll_output() {
            if let Output::Transmit(t) = o {
                sent.push(t.bytes);
            }
        }
        sent
    };
    // The header alone, its length field saying 28.
    let mut header = request.bytes[..28].to_vec();
    header[24..28].copy_from_slice(&28u32.to_be_bytes());
    assert!(
        send(&mut p, &header).is_empty(),
        "header-only packet answered"
    );
    // The right header, a garbage body of the right length.
    let mut garbage = request.bytes[..28].to_vec();
    garbage.resize(request.bytes.len(), 0x5a);
    assert!(send(&mut p, &garbage).is_empty(), "garbage body answered");
    // The request with its last octet (inside the last payload) changed.
    let mut mutated = request.bytes.clone();
    if let Some(last) = mutated.last_mut() {
        *last ^= 0x01;
    }
    assert!(
        send(&mut p, &mutated).is_empty(),
        "mutated request answered"
    );
    assert_eq!(
        p.b.ep.stats().rejected.get("altered_retransmission"),
        Some(&3)
    );
    // The identical datagram is a retransmission and gets the cached response, once.
    assert_eq!(send(&mut p, &request.bytes), vec![response]);
    assert_eq!(p.b.ep.ike_sa_count(), 1, "no second SA for the same SPIi");
}

#[test]
fn esn_and_cbc_suites() {
    let cbc = EspProposal {
        encr: Encr::AesCbc { key_bits: 128 },
        integ: Some(crate::transform::Integ::HmacSha256_128),
        esn: crate::transform::Esn::Yes,
    };
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.ike_proposals = vec![IkeProposal::AES128_SHA256_MODP2048];
    a.child.esp_proposals = vec![cbc];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.ike_proposals = vec![IkeProposal::AES128_SHA256_MODP2048];
    b.child.esp_proposals = vec![EspProposal::AES256GCM, cbc];
    let mut p = Pair::new(a, b);
    p.connect();
    p.assert_children_match();
    let i = &p.a.installs[0];
    assert!(i.esn);
    assert_eq!(i.encr, Encr::AesCbc { key_bits: 128 });
    assert_eq!(i.inbound.encr.len(), 16);
    assert_eq!(i.inbound.integ.as_ref().map(|k| k.len()), Some(32));
}

fn signing_key(ecdsa: bool) -> std::sync::Arc<crate::crypto::sig::SigningKey> {
    use aws_lc_rs::signature::EcdsaKeyPair;
    use aws_lc_rs::signature::Ed25519KeyPair;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = if ecdsa {
        EcdsaKeyPair::generate_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("generate")
            .as_ref()
            .to_vec()
    } else {
        Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("generate")
            .as_ref()
            .to_vec()
    };
    std::sync::Arc::new(crate::crypto::sig::SigningKey::from_pkcs8_der(&pkcs8).expect("key"))
}

fn sig_auth(
    ours: &std::sync::Arc<crate::crypto::sig::SigningKey>,
    theirs: &std::sync::Arc<crate::crypto::sig::SigningKey>,
) -> AuthConfig {
    AuthConfig::Signature(SignatureAuth {
        key: ours.clone(),
        certificate: Some(vec![0x30, 0x00]),
        peer_key: theirs.public_key().to_vec(),
    })
}

#[test]
fn rfc7427_signature_auth() {
    let ka = signing_key(false);
    let kb = signing_key(true);
    let mut a = peer(1, A_IP, B_IP, "unused");
    a.auth = sig_auth(&ka, &kb);
    let mut b = peer(1, B_IP, A_IP, "unused");
    b.auth = sig_auth(&kb, &ka);
    let mut p = Pair::new(a.clone(), b.clone());
    p.connect();
    p.assert_children_match();
    // A wrong pinned key fails authentication on the responder, and nothing is installed.
    let other = signing_key(false);
    b.auth = sig_auth(&kb, &other);
    let mut p = Pair::new(a.clone(), b);
    p.connect();
    assert!(p.a.installs.is_empty() && p.b.installs.is_empty());
    assert!(p.b.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    // PSK on one side and signatures on the other do not mix.
    let mut p = Pair::new(a, peer(1, B_IP, A_IP, "secret"));
    p.connect();
    assert!(p.b.installs.is_empty());
}

#[test]
fn responder_auth_rejected_by_initiator_is_reported_back() {
    // B verifies A's signature, but A pins the wrong key for B: A rejects B's AUTH after B
    // considered the SA up, and tells B in an INFORMATIONAL (RFC 7296 §2.21.2).
    let (ka, kb, other) = (signing_key(false), signing_key(false), signing_key(false));
    let mut a = peer(1, A_IP, B_IP, "unused");
    a.auth = sig_auth(&ka, &other);
    let mut b = peer(1, B_IP, A_IP, "unused");
    b.auth = sig_auth(&kb, &ka);
    let mut p = Pair::new(a, b);
    p.connect();
    assert!(p.a.has_event(|e| matches!(e, Event::AuthFailed { .. })));
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::AuthFailed {
            reason: "peer_rejected",
            ..
        }
    )));
    assert_eq!(p.a.ep.ike_sa_count(), 0);
    assert_eq!(p.b.ep.ike_sa_count(), 0);
    assert!(p.a.installs.is_empty());
    assert_eq!(p.b.removes.len(), p.b.installs.len());
}

#[test]
fn ipv6_handshake_and_selectors() {
    let a6: std::net::IpAddr = "2001:db8::1".parse().expect("v6");
    let b6: std::net::IpAddr = "2001:db8::2".parse().expect("v6");
    let mk = |local: std::net::IpAddr, remote: std::net::IpAddr| {
        let mut c = peer(1, A_IP, B_IP, "secret");
        c.local = std::net::SocketAddr::new(local, 500);
        c.remote = RemoteAddr::Host(std::net::SocketAddr::new(remote, 500));
        c.child.local_ts = vec![TrafficSelector::host(local)];
        c.child.remote_ts = vec![TrafficSelector::host(remote)];
        c
    };
    let mut p = Pair::new(mk(a6, b6), mk(b6, a6));
    p.connect();
    p.assert_children_match();
    let ia = &p.a.installs[0];
    assert_eq!(ia.remote.ip(), b6);
    assert_eq!(ia.local_ts, vec![TrafficSelector::host(a6)]);
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::PeerAuthenticated {
            peer_id: Identity::Ipv6(_),
            ..
        }
    )));
}

#[test]
fn initiator_floating_to_4500_without_nat_is_followed() {
    // Capture A's IKE_AUTH and resend it from/to port 4500, as strongSwan does with MOBIKE
    // enabled although no NAT is present.
    let captured = std::rc::Rc::new(std::cell::RefCell::new(None));
    let sink = captured.clone();
    let mut p = Pair::default_pair();
    p.filter = Some(Box::new(move |s, t| {
        if s == Side::A && exchange_of(&t.bytes) == Some(ExchangeType::IkeAuth) {
            *sink.borrow_mut() = Some(t.bytes.clone());
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
    p.initiate();
    p.drive_now();
    let bytes = captured.borrow_mut().take().expect("IKE_AUTH request");
    let now = p.time;
    let l4500 = addr(B_IP, 4500);
    let r4500 = addr(A_IP, 4500);
    p.b.ep.handle_datagram(
        now,
        Datagram {
            local: l4500,
            remote: r4500,
            bytes: &bytes,
        },
    );
    let reply = std::iter::from_fn(|| p.b.ep.poll_output())
        .find_map(|o| match o {
            Output::Transmit(t) => Some(t),
            _ => None,
        })
        .expect("IKE_AUTH response");
    // RFC 7296 §2.11: the response goes back where the request came from.
    assert_eq!((reply.local, reply.remote), (l4500, r4500));
    assert_eq!(p.b.ep.sas()[0].remote, r4500);
    assert!(!p.b.ep.sas()[0].nat);
}

#[test]
fn certificate_pinned_peer_with_real_x509() {
    let cert = include_bytes!("fixtures/p256-cert.der");
    let spki = include_bytes!("fixtures/p256-spki.der");
    let key = include_bytes!("fixtures/p256-key.pk8");
    let from_cert = crate::cert::subject_public_key_info(cert).expect("spki");
    assert_eq!(from_cert, &spki[..]);
    let ka = std::sync::Arc::new(crate::crypto::sig::SigningKey::from_pkcs8_der(key).expect("key"));
    let kb = signing_key(false);
    let mut a = peer(1, A_IP, B_IP, "unused");
    a.auth = AuthConfig::Signature(SignatureAuth {
        key: ka,
        certificate: Some(cert.to_vec()),
        peer_key: kb.public_key().to_vec(),
    });
    let mut b = peer(1, B_IP, A_IP, "unused");
    b.auth = AuthConfig::Signature(SignatureAuth {
        key: kb,
        certificate: None,
        peer_key: from_cert.to_vec(),
    });
    let mut p = Pair::new(a, b);
    p.connect();
    p.assert_children_match();
}

/// A hub profile answering many spokes: each spoke gets its own session, announced with
/// `PeerAuthenticated` (with our address, for the per-peer interface) before its first
/// install, and one spoke leaving does not touch the others.
#[test]
fn hub_profile_keeps_one_session_per_spoke() {
    let spoke = |name: &str| {
        let mut a = peer(1, A_IP, B_IP, "secret");
        a.local_id = Some(Identity::Fqdn(name.into()));
        a
    };
    let mut hub = peer(7, B_IP, A_IP, "secret");
    hub.remote = RemoteAddr::Prefix(v4(192, 0, 2, 0), 24);
    hub.remote_id = IdMatch::FqdnSuffix("spokes.example".into());
    let mut p = Pair::new(spoke("s1.spokes.example"), hub);
    p.connect();
    // The second spoke: a fresh engine with another identity behind the same wire.
    p.a.ep = Endpoint::new(
        std::sync::Arc::new(endpoint_config(vec![spoke("s2.spokes.example")])),
        [5; 32],
    );
    p.connect();
    let auths: Vec<(SessionId, Identity, bool)> =
        p.b.events
            .iter()
            .filter_map(|e| match e {
                Event::PeerAuthenticated {
                    session,
                    peer_id,
                    local,
                    conn,
                    initial_contact,
                    ..
                } => {
                    // The spoke floated to 4500 (it offers MOBIKE, RFC 4555 §3.3).
                    assert_eq!(*local, addr(B_IP, 4500));
                    assert_eq!(*conn, ConnId(7));
                    Some((*session, peer_id.clone(), *initial_contact))
                }
                _ => None,
            })
            .collect();
    assert_eq!(auths.len(), 2, "{auths:?}");
    assert_ne!(auths[0].0, auths[1].0, "one session per spoke");
    assert!(
        auths.iter().all(|a| a.2),
        "each spoke starts with INITIAL_CONTACT"
    );
    assert_eq!(p.b.ep.ike_sa_count(), 2);
    assert!(p.b.ep.session_alive(auths[0].0) && p.b.ep.session_alive(auths[1].0));
    assert_eq!(p.b.live_children().len(), 2);
    // Spoke 2 leaves: only its session and Child SA go.
    p.command(Side::A, Command::Terminate { conn: ConnId(1) });
    p.drive_for(Duration::from_secs(1));
    assert!(p.b.ep.session_alive(auths[0].0));
    assert!(!p.b.ep.session_alive(auths[1].0));
    let live = p.b.live_children();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].session, auths[0].0);
}

/// MOBIKE (RFC 4555): both sides offer it in IKE_AUTH; the initiator's new address goes out
/// in UPDATE_SA_ADDRESSES from that address, both sides report the move, the same IKE SA
/// carries on, and the Child SAs are rekeyed onto the new addresses.
#[test]
fn mobike_moves_the_ike_sa_and_rekeys_children_onto_the_new_address() {
    use std::net::{IpAddr, Ipv4Addr};
    let new_ip = Ipv4Addr::new(192, 0, 2, 11);
    let mut p = Pair::default_pair();
    p.connect();
    assert!(p.a.ep.can_move(ConnId(1)), "MOBIKE not negotiated");
    // §3.3: offering MOBIKE, the initiator changed to port 4500 after IKE_SA_INIT although
    // there is no NAT; ESP stays unencapsulated.
    assert_eq!(p.a.sent[0].remote.port(), 500);
    assert!(
        p.a.sent[1..]
            .iter()
            .all(|t| t.remote.port() == 4500 && t.local.port() == 4500)
    );
    assert!(p.a.live_children().iter().all(|c| c.encap.is_none()));
    assert!(
        !p.b.ep.can_move(ConnId(1)),
        "only the original initiator moves (§3.4)"
    );
    let sa_before = p.a.ep.sas()[0].spi_i;
    let before: Vec<u32> = p.a.live_children().iter().map(|c| c.inbound_spi).collect();
    p.command(
        Side::A,
        Command::MoveLocal {
            conn: ConnId(1),
            local: IpAddr::V4(new_ip),
        },
    );
    p.drive_for(Duration::from_secs(2));
    let moved = |e: &Event| {
        matches!(e, Event::IkeSaMoved { local, remote, .. }
            if local.ip() == IpAddr::V4(new_ip) || remote.ip() == IpAddr::V4(new_ip))
    };
    assert!(p.a.has_event(moved), "A: {:?}", p.a.events);
    assert!(p.b.has_event(moved), "B: {:?}", p.b.events);
    // The update and everything after it left from the new address.
    let update_at =
        p.a.sent
            .iter()
            .position(|t| t.local.ip() == IpAddr::V4(new_ip))
            .expect("nothing sent from the new address");
    assert!(
        p.a.sent[update_at..]
            .iter()
            .all(|t| t.local.ip() == IpAddr::V4(new_ip))
    );
    // Same IKE SA; new Child SAs between the new addresses, the old ones gone.
    assert_eq!(p.a.ep.sas().len(), 1);
    assert_eq!(p.a.ep.sas()[0].spi_i, sa_before);
    let kids = p.a.live_children();
    assert_eq!(kids.len(), before.len());
    for k in &kids {
        assert!(
            !before.contains(&k.inbound_spi),
            "child {:x} not rekeyed",
            k.inbound_spi
        );
        assert_eq!(k.local.ip(), IpAddr::V4(new_ip));
    }
    for k in p.b.live_children() {
        assert_eq!(k.remote.ip(), IpAddr::V4(new_ip));
    }
    // The replaced Child SAs are removed under the addresses they were installed with.
    for r in
        p.a.removes
            .iter()
            .filter(|r| before.contains(&r.inbound_spi))
    {
        assert_eq!(r.local.ip(), IpAddr::V4(A_IP), "{r:?}");
    }
    // (Both sides rekey after the move; the §2.8.1 collision removes the redundant pair.)
    assert!(
        before
            .iter()
            .all(|s| p.a.removes.iter().any(|r| r.inbound_spi == *s)),
        "{:?} before {before:?}",
        p.a.removes
    );
    p.assert_children_match();
}

/// Without MOBIKE on either side nothing can move: the agent negotiates again instead, and
/// a stray UPDATE_SA_ADDRESSES changes nothing at a responder that did not negotiate it.
#[test]
fn without_mobike_an_address_cannot_move() {
    use std::net::{IpAddr, Ipv4Addr};
    for (a_mobike, b_mobike) in [(false, true), (true, false)] {
        let mut a = peer(1, A_IP, B_IP, "secret");
        a.mobike = a_mobike;
        let mut b = peer(1, B_IP, A_IP, "secret");
        b.mobike = b_mobike;
        let mut p = Pair::new(a, b);
        p.connect();
        assert!(!p.a.ep.can_move(ConnId(1)), "{a_mobike} {b_mobike}");
        let sent = p.a.sent.len();
        p.command(
            Side::A,
            Command::MoveLocal {
                conn: ConnId(1),
                local: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
            },
        );
        p.drive_for(Duration::from_secs(2));
        assert_eq!(p.a.sent.len(), sent, "an update went out without MOBIKE");
        assert!(!p.b.has_event(|e| matches!(e, Event::IkeSaMoved { .. })));
    }
}

/// A connection whose IKE SA is being deleted without an answer (its peer or our old
/// address gone) initiates a new one at once instead of waiting out the DELETE's
/// retransmissions (31 s by default), and the new one says INITIAL_CONTACT.
#[test]
fn initiate_does_not_wait_for_an_unanswered_delete() {
    let mut p = Pair::default_pair();
    p.connect();
    p.filter = Some(Box::new(|s, _| {
        if s == Side::B {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    p.command(Side::A, Command::Terminate { conn: ConnId(1) });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.ep.ike_sa_count(), 1, "the DELETE is still unanswered");
    p.filter = None;
    let sent = p.a.sent.len();
    p.initiate();
    p.drive_for(Duration::from_secs(2));
    assert!(p.a.sent.len() > sent, "no new negotiation went out");
    let ups =
        p.a.events
            .iter()
            .filter(|e| matches!(e, Event::IkeSaUp { .. }))
            .count();
    assert_eq!(ups, 2, "{:?}", p.a.events);
    let contacts: Vec<bool> = p.b.initial_contacts();
    assert_eq!(contacts.len(), 2);
    assert!(contacts[1], "the new IKE SA did not say INITIAL_CONTACT");
    // The new IKE SA is kept: the one being deleted is no duplicate to settle against.
    p.drive_for(Duration::from_secs(40));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.a.live_children().len(), 1);
    assert!(
        !p.a.has_event(
            |e| matches!(e, Event::IkeSaDown { session, .. } if *session != SessionId(1))
        )
    );
}

/// An IKE SA is moved whole on every state change, into the endpoint's table and by each
/// rehash of it: its large parts (SK ciphers, CBC key schedules, state) live behind boxes,
/// so that these moves copy hundreds of bytes, not kilobytes (the CBC + HMAC cipher alone is
/// over 2 KiB inline).
#[test]
fn ike_sa_moves_stay_small() {
    use std::mem::size_of;
    assert!(size_of::<crate::crypto::SkCipher>() <= 64);
    assert!(
        size_of::<crate::sa::IkeSa>() <= 1024,
        "{}",
        size_of::<crate::sa::IkeSa>()
    );
    assert!(size_of::<Output>() <= 512);
}
