//! A planned restart of one side: its established IKE SA is exported
//! ([`Endpoint::export_sas`]), encoded and decoded ([`crate::persist`]), and adopted by a
//! fresh engine built from the same configuration ([`Endpoint::adopt`]). The peer never
//! notices: liveness checks are answered in both directions with message IDs going on, and
//! Child SA and IKE SA rekeys initiated by either side succeed with keys both ends agree on.
//! Damaged states are refused with their own error and change nothing.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::persist::{self, FORMAT_VERSION, IkeSaState, PersistError};

/// The engine of `side` replaced by a fresh one (another RNG seed, as a new process has)
/// that adopted what the old one exported; the kernel's Child SAs (`installs`) stay.
/// Returns the adopted state.
fn restart(p: &mut Pair, side: Side, cfg: PeerConfig) -> IkeSaState {
    let now = p.time;
    let t = p.side(side);
    let export = t.ep.export_sas(now);
    assert!(export.left_out.is_empty(), "{:?}", export.left_out);
    assert_eq!(export.sas.len(), 1);
    let bytes = persist::encode(&export.sas);
    let sas = persist::decode(&bytes).expect("decode");
    assert_eq!(sas, export.sas, "encode/decode round trip");
    let mut ep = Endpoint::new(Arc::new(endpoint_config(vec![cfg])), [0x5a; 32]);
    ep.adopt(now, &sas[0]).expect("adopt");
    // Nothing to send and nothing to install: the kernel has the SAs, the peer has the SA.
    assert!(ep.poll_output().is_none(), "adoption produced output");
    assert_eq!(ep.ike_sa_count(), 1);
    t.ep = ep;
    sas.into_iter().next().expect("one")
}

fn a_cfg() -> PeerConfig {
    peer(1, A_IP, B_IP, "secret")
}

fn b_cfg() -> PeerConfig {
    peer(1, B_IP, A_IP, "secret")
}

fn no_dead_peer(p: &Pair) {
    for t in [&p.a, &p.b] {
        assert!(!t.has_event(|e| matches!(e, Event::PeerDead { .. })));
        // An SA replaced by a rekey goes down as `Replaced`; nothing else may.
        let down = |e: &Event| matches!(e, Event::IkeSaDown { reason, .. } if *reason != DownReason::Replaced);
        assert!(!t.has_event(down), "{:?}", t.events);
        assert!(
            t.ep.stats().rejected.is_empty(),
            "{:?}",
            t.ep.stats().rejected
        );
    }
}

/// Message ID of the last request `t` sent in `exchange`.
fn last_request_id(t: &TestEndpoint, exchange: ExchangeType) -> u32 {
    t.sent
        .iter()
        .rev()
        .filter_map(|s| Message::decode(&s.bytes).ok())
        .find(|m| m.header.exchange == exchange && !m.header.is_response())
        .expect("a request")
        .header
        .message_id
}

#[test]
fn adopted_initiator_sa_keeps_liveness_and_message_ids() {
    let mut p = Pair::default_pair();
    p.connect();
    let session = p.a.installs[0].session;
    // Move both message-ID counters past IKE_AUTH's first.
    p.command(Side::A, Command::Dpd { session });
    p.command(
        Side::B,
        Command::Dpd {
            session: p.b.installs[0].session,
        },
    );
    p.drive_for(Duration::from_secs(1));
    let spis = (p.a.ep.sas()[0].spi_i, p.a.ep.sas()[0].spi_r);
    let st = restart(&mut p, Side::A, a_cfg());
    assert_eq!((st.next_req, st.next_peer_req), (3, 1));
    let info = &p.a.ep.sas()[0];
    assert_eq!((info.spi_i, info.spi_r), spis, "same IKE SA");
    assert_eq!(info.session, session, "same session id");
    assert_eq!(
        info.children,
        vec![(
            p.a.installs[0].child,
            p.a.installs[0].inbound_spi,
            p.a.installs[0].outbound_spi
        )]
    );
    let sent = p.a.sent.len();
    // The peer's liveness check reaches the adopted SA (the peer's next ID is 1) ...
    p.command(
        Side::B,
        Command::Dpd {
            session: p.b.installs[0].session,
        },
    );
    p.drive_for(Duration::from_secs(1));
    assert!(p.a.sent.len() > sent, "the adopted SA answered");
    // ... and ours goes out with the next message ID and is answered.
    p.command(Side::A, Command::Dpd { session });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(last_request_id(&p.a, ExchangeType::Informational), 3);
    // Idle for longer than DPD interval times retries: liveness keeps working.
    p.drive_for(Duration::from_secs(400));
    no_dead_peer(&p);
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert!(p.a.removes.is_empty() && p.b.removes.is_empty());
}

#[test]
fn adopted_sa_rekeys_children_from_either_side() {
    let mut p = Pair::default_pair();
    p.connect();
    restart(&mut p, Side::A, a_cfg());
    // Ours: new KEYMAT from the adopted SK_d must match the peer's (install keys compared).
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(
        p.a.installs.len(),
        2,
        "the adopted side rekeyed its Child SA"
    );
    assert_eq!(
        p.a.installs[1].replaces,
        Some(child),
        "the adopted Child SA id was kept"
    );
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
    // The peer's: it rekeys the new pair; the adopted side answers.
    let child_b = p.b.live_children()[0].child;
    p.command(Side::B, Command::RekeyChild { child: child_b });
    p.drive_for(Duration::from_secs(10));
    assert_eq!(p.b.installs.len(), 3);
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
    no_dead_peer(&p);
}

#[test]
fn adopted_sa_rekeys_the_ike_sa_from_either_side() {
    let mut p = Pair::default_pair();
    p.connect();
    restart(&mut p, Side::A, a_cfg());
    let session = p.a.installs[0].session;
    p.command(Side::A, Command::RekeyIke { session });
    p.drive_for(Duration::from_secs(1));
    assert!(p.a.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert!(p.b.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    // Both derived the same SK_d from the adopted one (§2.18).
    assert_eq!(p.a.ep.sk_ds(), p.b.ep.sk_ds());
    // The peer's IKE rekey of the new SA, then a Child SA rekey on it.
    p.command(
        Side::B,
        Command::RekeyIke {
            session: p.b.installs[0].session,
        },
    );
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.ep.sk_ds(), p.b.ep.sk_ds());
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 2);
    p.assert_children_match();
    assert!(
        p.a.removes.len() == 1 && p.b.removes.len() == 1,
        "only the rekeyed Child SA went"
    );
    no_dead_peer(&p);
}

/// The responder side restarts, and its deadlines carry over: the Child SA and IKE SA
/// rekeys come by time, as they would have without the restart.
#[test]
fn adopted_responder_rekeys_by_time() {
    let mut p = Pair::default_pair();
    p.connect();
    p.drive_for(Duration::from_secs(600));
    let st = restart(&mut p, Side::B, b_cfg());
    assert!(!st.initiator);
    let child_left = st.children[0].rekey_in.expect("armed");
    assert!(
        child_left < Duration::from_secs(3600 - 600),
        "time left, not a fresh lifetime"
    );
    p.drive_for(Duration::from_secs(5 * 3600));
    assert!(p.a.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert!(p.b.has_event(|e| matches!(e, Event::ChildSaRekeyed { .. })));
    p.assert_children_match();
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    no_dead_peer(&p);
}

#[test]
fn busy_sa_is_left_out() {
    let mut p = Pair::default_pair();
    p.connect();
    let session = p.a.installs[0].session;
    p.filter = Some(Box::new(|_, _| Verdict::Drop));
    p.command(Side::A, Command::Dpd { session });
    p.drive_now();
    let e = p.a.ep.export_sas(p.time);
    assert!(e.sas.is_empty());
    assert_eq!(
        e.left_out,
        vec![(session, ConnId(1), "an exchange in flight")]
    );
    assert_eq!(e.busy(), 1);
    // Once the retransmission (a liveness check's, one DPD interval later) is answered, the
    // SA is quiet and exported.
    p.filter = None;
    p.drive_for(Duration::from_secs(35));
    let e = p.a.ep.export_sas(p.time);
    assert_eq!((e.sas.len(), e.busy()), (1, 0));
}

fn exported() -> (Pair, IkeSaState) {
    let mut p = Pair::default_pair();
    p.connect();
    let st = p.a.ep.export_sas(p.time).sas.remove(0);
    (p, st)
}

#[test]
fn damaged_states_are_refused() {
    let (_p, st) = exported();
    let good = persist::encode(std::slice::from_ref(&st)).to_vec();
    assert_eq!(persist::decode(&good).map(|v| v.len()), Ok(1));
    // Every truncation is refused.
    for n in 0..good.len() {
        let e = persist::decode(&good[..n]).expect_err("truncated");
        assert!(
            matches!(e, PersistError::Truncated | PersistError::BadMagic),
            "{n}: {e:?}"
        );
    }
    // Any flipped bit past the header is caught by the digest.
    for i in 14..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        assert_eq!(
            persist::decode(&bad),
            Err(PersistError::Corrupted),
            "byte {i}"
        );
    }
    let mut old = good.clone();
    old[8..10].copy_from_slice(&(FORMAT_VERSION - 1).to_be_bytes());
    assert_eq!(
        persist::decode(&old),
        Err(PersistError::Version {
            found: FORMAT_VERSION - 1
        })
    );
    let mut magic = good.clone();
    magic[0] = b'x';
    assert_eq!(persist::decode(&magic), Err(PersistError::BadMagic));
    let mut long = good.clone();
    long.push(0);
    assert_eq!(persist::decode(&long), Err(PersistError::Trailing));
}

#[test]
fn adoption_refusals_change_nothing() {
    let (p, st) = exported();
    let now = p.time;
    // Another connection name under the same id: not this configuration's SA.
    let mut renamed = a_cfg();
    renamed.name = "other".into();
    let mut ep = Endpoint::new(Arc::new(endpoint_config(vec![renamed])), [3; 32]);
    assert_eq!(
        ep.adopt(now, &st),
        Err(PersistError::UnknownConn {
            id: 1,
            name: "conn1".into()
        })
    );
    assert_eq!(ep.ike_sa_count(), 0);
    // Keys that do not fit the suite.
    let mut ep = Endpoint::new(Arc::new(endpoint_config(vec![a_cfg()])), [3; 32]);
    let mut short = st.clone();
    short.sk_ei = crate::secret::Secret::from_slice(&[1, 2, 3]);
    assert_eq!(ep.adopt(now, &short), Err(PersistError::BadKeys));
    assert_eq!(ep.ike_sa_count(), 0);
    // The same SA twice.
    ep.adopt(now, &st).expect("adopt");
    assert_eq!(ep.adopt(now, &st), Err(PersistError::SpiInUse(st.spi_i)));
    let mut other_spi = st.clone();
    other_spi.spi_i ^= 1;
    assert_eq!(
        ep.adopt(now, &other_spi),
        Err(PersistError::IdInUse(st.session.0))
    );
    assert_eq!(ep.ike_sa_count(), 1);
    assert!(ep.poll_output().is_none());
}

#[test]
fn state_debug_is_redacted() {
    let (_p, st) = exported();
    let text = format!("{st:?}");
    assert!(text.contains("<redacted>"));
    for k in [&st.sk_d, &st.sk_ei, &st.sk_er, &st.sk_pi] {
        assert!(
            !text.contains(&format!("{:?}", k.expose())),
            "a key in Debug output"
        );
    }
}

/// A batch checks each state against the SAs already held and the states before it in the
/// batch: the second of two states with one session id is refused, the first kept.
#[test]
fn adopt_all_refuses_an_id_taken_earlier_in_the_batch() {
    let (p, st) = exported();
    let now = p.time;
    let mut ep = Endpoint::new(Arc::new(endpoint_config(vec![a_cfg()])), [3; 32]);
    let mut other_spi = st.clone();
    other_spi.spi_i ^= 1;
    let res = ep.adopt_all(now, [&st, &other_spi]);
    assert_eq!(res, vec![Ok(()), Err(PersistError::IdInUse(st.session.0))]);
    assert_eq!(ep.ike_sa_count(), 1);
    // And against what the endpoint held before the batch.
    let again = ep.adopt_all(now, [&other_spi]);
    assert_eq!(again, vec![Err(PersistError::IdInUse(st.session.0))]);
}
