//! Rekeys on the virtual clock (`v1::sa::rekey`): phase 2 by either side, with PFS, on
//! the kernel's byte limit, in a collision; phase 1 by either side with the Child SAs kept;
//! lost rekey messages retransmitted.

use std::time::Duration;

use super::pair::*;
use super::*;
use crate::config::Lifetime;
use crate::v1::config::V1Peer;
use crate::v1::sa::rekey::REKEY_OVERLAP;

/// Child SAs of 60 s, rekeyed 10 s before their end without jitter.
fn short_child(mut p: V1Peer) -> V1Peer {
    p.child.lifetime = Lifetime {
        lifetime: Duration::from_secs(60),
        rekey_margin: Duration::from_secs(10),
        jitter: Duration::ZERO,
    };
    p
}

fn pair_of(f: impl Fn(V1Peer) -> V1Peer) -> Pair {
    Pair::new(f(peer(A_IP, B_IP, "secret")), f(peer(B_IP, A_IP, "secret")))
}

fn quick_sent(t: &TestEndpoint) -> Vec<usize> {
    t.sent
        .iter()
        .filter(|s| exchange_of(&s.bytes).map(|e| e.0) == Some(ExchangeType::Quick))
        .map(|s| s.bytes.len())
        .collect()
}

/// Position in `t.log` of the install of `child` and of its removal.
fn install_pos(t: &TestEndpoint, child: ChildSaId) -> usize {
    let n = t.installs.iter().position(|i| i.child == child).unwrap();
    t.log
        .iter()
        .enumerate()
        .filter(|(_, l)| **l == "install")
        .nth(n)
        .unwrap()
        .0
}

fn remove_pos(t: &TestEndpoint, child: ChildSaId) -> usize {
    let n = t.removes.iter().position(|r| r.child == child).unwrap();
    t.log
        .iter()
        .enumerate()
        .filter(|(_, l)| **l == "remove")
        .nth(n)
        .unwrap()
        .0
}

/// The side that rekeyed (`maker`) and its peer each installed the new pair before they
/// removed the old one, and exactly one matching pair is left.
fn assert_rekeyed_once(p: &Pair) {
    for t in [&p.a, &p.b] {
        assert_eq!(t.installs.len(), 2, "{:?}", t.log);
        let (old, new) = (&t.installs[0], &t.installs[1]);
        assert_eq!(new.replaces, Some(old.child));
        assert_ne!(new.inbound_spi, old.inbound_spi);
        assert_ne!(new.inbound, old.inbound, "fresh KEYMAT");
        assert_eq!(t.removes.len(), 1);
        assert_eq!(t.removes[0].child, old.child);
        assert!(install_pos(t, new.child) < remove_pos(t, old.child));
        assert!(t.has_event(|e| matches!(
            e,
            Event::ChildSaRekeyed { old: o, new: n, .. } if *o == old.child && *n == new.child
        )));
    }
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
}

#[test]
fn phase2_rekey_by_initiator_timer_installs_new_before_removing_old() {
    let mut p = pair_of(short_child);
    p.connect();
    let t0 = p.time;
    // A made the Child SA: it rekeys at 60 - 10 s; B would only at 60 - 5 s.
    p.drive_for(Duration::from_secs(48));
    assert_eq!(p.a.installs.len(), 1);
    p.drive_for(Duration::from_secs(2));
    assert_eq!(p.a.installs.len(), 2, "rekeyed at 50 s");
    assert_eq!(p.a.removes.len(), 0, "the old pair overlaps the new one");
    p.drive_for(REKEY_OVERLAP);
    assert_rekeyed_once(&p);
    // A deleted its old inbound SPI with the peer; B removed its half on that DELETE, well
    // before the old pair's end at 60 s.
    assert!(p.time - t0 < Duration::from_secs(56));
    // The new pair is rekeyed in turn under the same ISAKMP SA.
    p.drive_for(Duration::from_secs(55));
    assert_eq!(p.a.installs.len(), 3);
    assert_eq!(p.a.installs[2].replaces, Some(p.a.installs[1].child));
    p.assert_children_match();
    assert_eq!(p.a.ep.sa_count(), 1);
    assert_eq!(p.b.ep.sa_count(), 1);
}

#[test]
fn phase2_rekey_by_responder_on_soft_expire() {
    let mut p = Pair::default_pair();
    p.connect();
    // The kernel's soft EXPIRE of B's half (bytes) arrives as a command.
    let child = p.b.installs[0].child;
    p.command(Side::B, V1Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.b.installs.len(), 2);
    assert!(p.b.removes.is_empty() && p.a.removes.is_empty());
    p.drive_for(REKEY_OVERLAP);
    assert_rekeyed_once(&p);
    // A second soft EXPIRE of the old (gone) SA does nothing.
    p.command(Side::B, V1Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(5));
    assert_eq!(p.b.installs.len(), 2);
}

#[test]
fn phase2_rekey_with_pfs_carries_ke() {
    let pfs = |mut x: V1Peer| {
        x.child.pfs = Some(DhGroup::Ecp256);
        x
    };
    let mut with = pair_of(pfs);
    let mut without = Pair::default_pair();
    for p in [&mut with, &mut without] {
        p.connect();
        let child = p.a.installs[0].child;
        p.command(Side::A, V1Command::RekeyChild { child });
        p.drive_for(REKEY_OVERLAP + Duration::from_secs(1));
        assert_rekeyed_once(p);
    }
    // QM1, QM3, rekey QM1, rekey QM3: the rekey's QM1 carries a KE payload with PFS.
    let (w, wo) = (quick_sent(&with.a), quick_sent(&without.a));
    assert_eq!(w.len(), 4);
    assert!(w[2] > wo[2], "{w:?} vs {wo:?}");
}

#[test]
fn kilobyte_lifetime_is_negotiated_and_installed() {
    let mut a = peer(A_IP, B_IP, "secret");
    let mut b = peer(B_IP, A_IP, "secret");
    a.child.lifetime_bytes = Some(ByteLimits {
        soft: 9_000 * 1024,
        hard: 10_000 * 1024,
    });
    b.child.lifetime_bytes = Some(ByteLimits {
        soft: 2_700 * 1024,
        hard: 3_000 * 1024,
    });
    let mut p = Pair::new(a, b);
    p.connect();
    // B's smaller value went back in a RESPONDER-LIFETIME notify (RFC 2407 §4.6.3.2); both
    // kernels get the byte limits (soft at 90 %, where the kernel's EXPIRE asks to rekey).
    for t in [&p.a, &p.b] {
        let b = t.installs[0].bytes.expect("byte limits");
        assert_eq!(b.hard, 3_000 * 1024);
        assert_eq!(b.soft, 3_000 * 1024 - 300 * 1024);
    }
    let child = p.a.installs[0].child;
    p.command(Side::A, V1Command::RekeyChild { child });
    p.drive_for(REKEY_OVERLAP + Duration::from_secs(1));
    assert_rekeyed_once(&p);
    assert_eq!(p.a.installs[1].bytes.map(|b| b.hard), Some(3_000 * 1024));
}

#[test]
fn phase2_rekey_collision_leaves_one_pair() {
    let mut p = Pair::default_pair();
    p.connect();
    let (ca, cb) = (p.a.installs[0].child, p.b.installs[0].child);
    // Both soft EXPIREs at the same instant: the two QM1s cross.
    p.command(Side::A, V1Command::RekeyChild { child: ca });
    p.command(Side::B, V1Command::RekeyChild { child: cb });
    p.drive_for(Duration::from_secs(30));
    for t in [&p.a, &p.b] {
        assert_eq!(t.installs.len(), 3, "{:?}", t.log);
        assert_eq!(t.removes.len(), 2, "the old pair and the redundant one");
        assert!(
            t.installs[1..]
                .iter()
                .all(|i| i.replaces == Some(t.installs[0].child))
        );
    }
    assert_eq!(p.a.live_children().len(), 1);
    p.assert_children_match();
    // Three quick modes of three messages each, and nothing more afterwards: no third
    // rekey, no retransmissions.
    let quick = |t: &TestEndpoint| quick_sent(t).len();
    assert_eq!(quick(&p.a) + quick(&p.b), 9);
    p.drive_for(Duration::from_secs(60));
    assert_eq!(p.a.installs.len(), 3);
    assert_eq!(quick(&p.a) + quick(&p.b), 9);
    assert_eq!(p.a.live_children().len(), 1);
    p.assert_children_match();
}

#[test]
fn lost_phase2_rekey_messages_are_retransmitted() {
    // A's rekey QM1 (its third quick mode message) and B's rekey QM2 lost once each.
    for (side, n) in [(Side::A, 2), (Side::B, 1)] {
        let mut p = Pair::default_pair();
        drop_nth(&mut p, side, ExchangeType::Quick, n);
        p.connect();
        let child = p.a.installs[0].child;
        p.command(Side::A, V1Command::RekeyChild { child });
        p.drive_for(REKEY_OVERLAP + Duration::from_secs(4));
        assert_rekeyed_once(&p);
        assert!(p.a.ep.stats().retransmits >= 1, "{side:?}");
    }
}

fn session_of(t: &TestEndpoint) -> SessionId {
    t.ep.sas()[0].session
}

/// After a phase 1 rekey: one ISAKMP SA on each side with new cookies, the same Child SA
/// pair untouched, and the new ISAKMP SA runs the next phase 2 rekey.
fn assert_phase1_rekeyed(p: &mut Pair, old_cookies: (u64, u64)) {
    for t in [&p.a, &p.b] {
        let sas = t.ep.sas();
        assert_eq!(sas.len(), 1, "{sas:?}");
        assert_eq!(sas[0].state, "Established");
        assert_ne!((sas[0].cky_i, sas[0].cky_r), old_cookies);
        assert_eq!(sas[0].children.len(), 1, "the Child SA moved over");
        assert_eq!(t.installs.len(), 1);
        assert!(t.removes.is_empty(), "{:?}", t.log);
        assert_eq!(
            t.count_events(|e| matches!(e, Event::ChildSaDown { .. })),
            0
        );
    }
    // The new main mode did not say INITIAL-CONTACT (the peer would drop our SAs).
    for t in [&p.a, &p.b] {
        let contacts: Vec<bool> = t
            .events
            .iter()
            .filter_map(|e| match e {
                Event::PeerAuthenticated {
                    initial_contact, ..
                } => Some(*initial_contact),
                _ => None,
            })
            .collect();
        assert_eq!(contacts.len(), 2);
        assert!(!contacts[1]);
    }
    p.assert_children_match();
    let child = p.a.installs[0].child;
    p.command(Side::A, V1Command::RekeyChild { child });
    p.drive_for(REKEY_OVERLAP + Duration::from_secs(1));
    assert_rekeyed_once(p);
}

fn cookies(t: &TestEndpoint) -> (u64, u64) {
    let s = &t.ep.sas()[0];
    (s.cky_i, s.cky_r)
}

#[test]
fn phase1_rekey_by_initiator_keeps_child_sas_and_session() {
    let mut p = Pair::default_pair();
    p.connect();
    let (old, session) = (cookies(&p.a), session_of(&p.a));
    p.command(Side::A, V1Command::RekeyIke { session });
    p.drive_for(Duration::from_secs(2));
    assert_eq!(
        session_of(&p.a),
        session,
        "the session survives its ISAKMP SA"
    );
    assert!(
        p.a.has_event(|e| matches!(e, Event::IkeSaRekeyed { session: s, .. } if *s == session))
    );
    // A deleted the old ISAKMP SA; B dropped it on that DELETE, keeping the Child SAs.
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Peer,
            ..
        }
    )));
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Replaced,
            ..
        }
    )));
    assert_phase1_rekeyed(&mut p, old);
}

#[test]
fn phase1_rekey_by_responder_keeps_child_sas() {
    let mut p = Pair::default_pair();
    p.connect();
    let old = cookies(&p.b);
    let session = session_of(&p.b);
    p.command(Side::B, V1Command::RekeyIke { session });
    p.drive_for(Duration::from_secs(2));
    // B now initiated the ISAKMP SA.
    assert!(p.b.ep.sas()[0].initiator);
    assert!(!p.a.ep.sas()[0].initiator);
    assert_phase1_rekeyed(&mut p, old);
}

#[test]
fn phase1_rekey_on_its_lifetime_then_phase2_rekeys_go_on() {
    let short = |mut x: V1Peer| {
        x.policies[0].lifetime = Duration::from_secs(100);
        short_child(x)
    };
    let mut p = pair_of(short);
    p.connect();
    let old = cookies(&p.a);
    // A (the maker) replaces it between 85 and 90 s, before B's 95 s.
    p.drive_for(Duration::from_secs(84));
    assert_eq!(cookies(&p.a), old);
    p.drive_for(Duration::from_secs(8));
    assert_ne!(cookies(&p.a), old);
    assert_eq!(p.a.ep.sa_count(), 1);
    assert_eq!(p.b.ep.sa_count(), 1);
    assert_eq!(cookies(&p.a), cookies(&p.b));
    // Child SAs of 60 s rekeyed at 50 s and at 100 s: the second under the new ISAKMP SA.
    p.drive_for(Duration::from_secs(20));
    assert_eq!(p.a.installs.len(), 3, "{:?}", p.a.log);
    assert_eq!(p.a.live_children().len(), 1);
    p.assert_children_match();
    assert_eq!(
        p.a.count_events(|e| matches!(e, Event::ChildSaDown { .. })),
        2,
        "only the two rekeyed pairs went"
    );
}

#[test]
fn lost_phase1_rekey_messages_are_retransmitted() {
    // The rekey's MM1 (A's fourth main mode message) and MM6 (B's fourth... third answer
    // of the second main mode) lost once each.
    for (side, n) in [(Side::A, 3), (Side::B, 5)] {
        let mut p = Pair::default_pair();
        drop_nth(&mut p, side, ExchangeType::IdentityProtection, n);
        p.connect();
        let old = cookies(&p.a);
        let session = session_of(&p.a);
        p.command(Side::A, V1Command::RekeyIke { session });
        p.drive_for(Duration::from_secs(6));
        assert!(p.a.ep.stats().retransmits >= 1, "{side:?}");
        assert_phase1_rekeyed(&mut p, old);
    }
}

#[test]
fn slow_phase1_rekey_past_the_old_lifetime_keeps_the_child_sas() {
    let short = |mut x: V1Peer| {
        x.policies[0].lifetime = Duration::from_secs(100);
        x
    };
    let mut p = pair_of(short);
    // B's answers to the rekey's MM1 (its fourth to seventh main mode messages) are lost:
    // A's retransmissions after 1, 2, 4 and 8 s carry the main mode past the old SA's end.
    let mut seen = 0;
    p.filter = Some(Box::new(move |s, t| {
        if s == Side::B
            && exchange_of(&t.bytes).map(|e| e.0) == Some(ExchangeType::IdentityProtection)
        {
            seen += 1;
            if (4..=7).contains(&seen) {
                return Verdict::Drop;
            }
        }
        Verdict::Deliver
    }));
    p.connect();
    let old = cookies(&p.a);
    p.drive_for(Duration::from_secs(120));
    assert!(p.a.ep.stats().retransmits >= 3);
    // B's own responder timer (95 s) fired meanwhile: both replaced the SA. Whatever ISAKMP
    // SAs are left, the first Child SA pair was never touched and one SA holds it.
    for t in [&p.a, &p.b] {
        let sas = t.ep.sas();
        assert!(sas.iter().all(|s| (s.cky_i, s.cky_r) != old), "{sas:?}");
        assert!(sas.iter().all(|s| s.state == "Established"));
        let held: usize = sas.iter().map(|s| s.children.len()).sum();
        assert_eq!(held, 1, "{sas:?}");
        assert_eq!(t.installs.len(), 1);
        assert!(t.removes.is_empty(), "{:?}", t.log);
    }
    p.assert_children_match();
    // And it goes on: the next phase 2 rekey works under whichever SA holds it.
    let child = p.a.installs[0].child;
    p.command(Side::A, V1Command::RekeyChild { child });
    p.drive_for(REKEY_OVERLAP + Duration::from_secs(1));
    assert_rekeyed_once(&p);
}

#[test]
fn phase2_rekey_installs_inbound_before_outbound_on_both_sides() {
    // No packet may reach an SA its receiver does not have yet (`Halves`): B (responder)
    // installs its new inbound SA before QM2 leaves and its outbound SA on QM3; A
    // (initiator) installs its inbound SA on QM2 and its outbound SA OUTBOUND_DELAY later,
    // while the old pair still exists.
    let mut p = pair_of(short_child);
    p.connect();
    p.drive_for(Duration::from_secs(50));
    p.drive_for(REKEY_OVERLAP);
    assert_rekeyed_once(&p);
    let (old_a, new_a) = (p.a.installs[0].child, p.a.installs[1].child);
    let (old_b, new_b) = (p.b.installs[0].child, p.b.installs[1].child);
    assert_eq!(p.a.installs[0].halves, Halves::Both);
    assert_eq!(p.a.installs[1].halves, Halves::InboundFirst);
    assert_eq!(p.b.installs[1].halves, Halves::InboundFirst);
    assert_eq!(p.a.outbound_later.len(), 1);
    assert_eq!(p.b.outbound_later.len(), 1);
    assert_eq!(p.a.outbound_later[0].1, new_a);
    assert_eq!(p.b.outbound_later[0].1, new_b);
    // B: inbound, then QM2 out, then (on QM3) outbound.
    let b_in = install_pos(&p.b, new_b);
    let b_out =
        p.b.log
            .iter()
            .position(|l| *l == "install-outbound")
            .unwrap();
    assert_eq!(
        p.b.log[b_in + 1],
        "transmit",
        "QM2 right after the inbound SA"
    );
    assert!(b_in < b_out);
    // A's outbound SA follows B's by OUTBOUND_DELAY (B's came with QM3, at A's QM2 instant).
    assert_eq!(
        p.a.outbound_later[0].0 - p.b.outbound_later[0].0,
        crate::v1::sa::rekey::OUTBOUND_DELAY
    );
    // Both outbound SAs are in before either side removes the old pair.
    let a_out =
        p.a.log
            .iter()
            .position(|l| *l == "install-outbound")
            .unwrap();
    assert!(a_out < remove_pos(&p.a, old_a));
    assert!(b_out < remove_pos(&p.b, old_b));
    p.assert_children_match();
}

#[test]
fn a_rekey_responder_without_qm3_takes_its_early_inbound_sa_out() {
    // The rekey's responder answers QM1 with QM2 and its new inbound SA; every QM3 is lost,
    // so it never gets the go-ahead and removes that SA again when its QM2 retransmissions
    // end. (QM3 is the quick mode initiator's second message under the same message ID.)
    let mut p = pair_of(short_child);
    p.connect();
    // The first quick mode is over (`connect`): every quick mode from here on is a rekey.
    let mut first: std::collections::HashMap<[u8; 4], Side> = Default::default();
    p.filter = Some(Box::new(move |s, t| {
        if exchange_of(&t.bytes).map(|e| e.0) != Some(ExchangeType::Quick) {
            return Verdict::Deliver;
        }
        let mid: [u8; 4] = t.bytes[20..24].try_into().unwrap();
        match first.get(&mid) {
            None => {
                first.insert(mid, s);
                Verdict::Deliver
            }
            Some(i) if *i == s => Verdict::Drop,
            Some(_) => Verdict::Deliver,
        }
    }));
    p.drive_for(Duration::from_secs(120));
    let (responder, early) = [&p.a, &p.b]
        .into_iter()
        .find_map(|t| {
            let i = t
                .installs
                .iter()
                .find(|i| i.halves == Halves::InboundFirst)?;
            // The responder's early inbound SA: no outbound SA ever followed.
            (!t.outbound_later.iter().any(|o| o.1 == i.child)).then_some((t, i.child))
        })
        .expect("a rekey responder installed its inbound SA without its outbound SA");
    assert!(
        responder.removes.iter().any(|r| r.child == early),
        "the early inbound SA is removed: {:?}",
        responder.removes
    );
}
