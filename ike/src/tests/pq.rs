//! Post-quantum hybrid key exchange: IKE_INTERMEDIATE (RFC 9242) carrying RFC 9370
//! additional key exchanges with ML-KEM (FIPS 203).

use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::error::PeerMisbehaved;
use crate::error::Reaction;
use crate::transform::AddKes;
use crate::transform::KeMethod;
use crate::wire::Header;

const X25519: IkeProposal = IkeProposal::AES256GCM_SHA256_X25519;

/// `x25519` with the given rounds as ADDKE1, ADDKE2, ...
fn hybrid(rounds: &[KeMethod]) -> IkeProposal {
    let mut addke = AddKes::NONE;
    for (i, m) in rounds.iter().enumerate() {
        addke.0[i] = Some(*m);
    }
    IkeProposal { addke, ..X25519 }
}

fn pair_with(a: Vec<IkeProposal>, b: Vec<IkeProposal>) -> Pair {
    let mut pa = peer(1, A_IP, B_IP, "secret");
    pa.ike_proposals = a;
    let mut pb = peer(1, B_IP, A_IP, "secret");
    pb.ike_proposals = b;
    Pair::new(pa, pb)
}

/// Decoded headers of what `t` sent in `exchange`.
fn headers(t: &TestEndpoint, exchange: ExchangeType) -> Vec<Header> {
    t.sent
        .iter()
        .filter_map(|x| Message::decode(&x.bytes).ok())
        .filter(|m| m.header.exchange == exchange)
        .map(|m| m.header)
        .collect()
}

fn notified(t: &TestEndpoint, ty: NotifyType) -> bool {
    t.sent
        .iter()
        .filter_map(|x| Message::decode(&x.bytes).ok())
        .filter(|m| m.header.exchange == ExchangeType::IkeSaInit)
        .any(|m| m.notifies(ty).next().is_some())
}

#[test]
fn mlkem768_setup_runs_one_intermediate_exchange() {
    let s = hybrid(&[KeMethod::MlKem768]);
    let mut p = pair_with(vec![s], vec![s]);
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    assert!(notified(&p.a, NotifyType::IntermediateExchangeSupported));
    assert!(notified(&p.b, NotifyType::IntermediateExchangeSupported));
    // RFC 9242 §3.4: IKE_INTERMEDIATE takes message ID 1, IKE_AUTH follows with 2.
    let ids: Vec<u32> = headers(&p.a, ExchangeType::IkeIntermediate)
        .iter()
        .map(|h| h.message_id)
        .collect();
    assert_eq!(ids, vec![1]);
    let auth: Vec<u32> = headers(&p.a, ExchangeType::IkeAuth)
        .iter()
        .map(|h| h.message_id)
        .collect();
    assert_eq!(auth, vec![2]);
    assert_eq!(headers(&p.b, ExchangeType::IkeIntermediate).len(), 1);
    // Both ends show the negotiated hybrid suite.
    for t in [&p.a, &p.b] {
        let suite = t.ep.sas()[0].suite.expect("suite");
        assert_eq!(suite.addke.0[0], Some(KeMethod::MlKem768));
    }
}

#[test]
fn several_additional_exchanges_run_in_order() {
    let s = hybrid(&[
        KeMethod::MlKem768,
        KeMethod::MlKem1024,
        KeMethod::Dh(DhGroup::Ecp256),
    ]);
    let mut p = pair_with(vec![s], vec![s]);
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    // (ML-KEM-1024's 1568-byte share goes out in two fragments at the default size.)
    let mut ids: Vec<u32> = headers(&p.a, ExchangeType::IkeIntermediate)
        .iter()
        .map(|h| h.message_id)
        .collect();
    ids.dedup();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(
        headers(&p.a, ExchangeType::IkeAuth)[0].message_id,
        4,
        "IKE_AUTH after three IKE_INTERMEDIATE exchanges"
    );
}

#[test]
fn optional_addke_falls_back_when_the_responder_has_none() {
    let a = vec![hybrid(&[KeMethod::MlKem768]), X25519];
    let mut p = pair_with(a.clone(), vec![X25519]);
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    assert!(headers(&p.a, ExchangeType::IkeIntermediate).is_empty());
    assert_eq!(p.a.ep.sas()[0].suite.expect("suite").addke, AddKes::NONE);
    // The offer: one proposal with ADDKE1 {ML-KEM-768, NONE}, then the classic suite alone
    // for responders that know no ADDKE types (RFC 7296 §3.3.6).
    let offer = crate::proposal::ike_offer(&a, &[]);
    assert_eq!(offer.proposals.len(), 2);
    let addke1: Vec<u16> = offer.proposals[0]
        .transforms
        .iter()
        .filter(|t| t.ty == crate::wire::enums::TransformType::Addke1)
        .map(|t| t.id)
        .collect();
    assert_eq!(addke1, vec![36, 0]);
    assert!(
        offer.proposals[1]
            .transforms
            .iter()
            .all(|t| t.ty.addke_index().is_none())
    );
}

#[test]
fn optional_addke_on_the_responder_accepts_a_classic_initiator() {
    let mut p = pair_with(vec![X25519], vec![hybrid(&[KeMethod::MlKem768]), X25519]);
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    assert!(!notified(&p.a, NotifyType::IntermediateExchangeSupported));
    assert!(headers(&p.a, ExchangeType::IkeIntermediate).is_empty());
}

#[test]
fn required_addke_is_refused_with_no_proposal_chosen() {
    // The responder requires ML-KEM, the initiator has none to offer.
    let mut p = pair_with(vec![X25519], vec![hybrid(&[KeMethod::MlKem768])]);
    p.connect();
    assert!(!established(&p.a) && !established(&p.b));
    assert_eq!(
        p.b.ep
            .stats()
            .rejected
            .get("additional_key_exchange_required"),
        Some(&1)
    );
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: DownReason::Failed("peer_rejected"),
            ..
        }
    )));
    // The initiator requires it, the responder offers other methods.
    let mut p = pair_with(
        vec![hybrid(&[KeMethod::MlKem768])],
        vec![hybrid(&[KeMethod::MlKem1024])],
    );
    p.connect();
    assert!(!established(&p.a) && !established(&p.b));
    assert_eq!(
        p.b.ep
            .stats()
            .rejected
            .get("additional_key_exchange_required"),
        Some(&1)
    );
    let refused =
        p.b.sent
            .iter()
            .filter_map(|x| Message::decode(&x.bytes).ok())
            .any(|m| m.notifies(NotifyType::NoProposalChosen).next().is_some());
    assert!(refused, "NO_PROPOSAL_CHOSEN on the wire");
}

#[test]
fn mlkem1024_intermediate_is_fragmented() {
    let s = hybrid(&[KeMethod::MlKem1024]);
    let mut pa = peer(1, A_IP, B_IP, "secret");
    pa.ike_proposals = vec![s];
    let mut pb = peer(1, B_IP, A_IP, "secret");
    pb.ike_proposals = vec![s];
    let mut ac = endpoint_config(vec![pa]);
    ac.fragment_size = 500;
    let mut bc = endpoint_config(vec![pb]);
    bc.fragment_size = 500;
    let mut p = Pair::with_configs(ac, bc);
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    for t in [&p.a, &p.b] {
        let frags: Vec<Message> = t
            .sent
            .iter()
            .filter(|x| exchange_of(&x.bytes) == Some(ExchangeType::IkeIntermediate))
            .filter_map(|x| Message::decode(&x.bytes).ok())
            .collect();
        // 1568 bytes of key share in fragments of at most 500 bytes.
        assert!(frags.len() >= 4, "{} fragments", frags.len());
        assert!(
            frags
                .iter()
                .all(|m| matches!(m.payloads.last(), Some(Payload::Skf(_))))
        );
    }
    assert!(
        p.a.sent
            .iter()
            .filter(|x| exchange_of(&x.bytes) != Some(ExchangeType::IkeSaInit))
            .all(|x| x.bytes.len() <= 500)
    );
}

#[test]
fn lost_intermediate_request_is_retransmitted() {
    let s = hybrid(&[KeMethod::MlKem768]);
    let mut p = pair_with(vec![s], vec![s]);
    drop_first(&mut p, Side::A, ExchangeType::IkeIntermediate);
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    assert_eq!(headers(&p.a, ExchangeType::IkeIntermediate).len(), 2);
}

#[test]
fn lost_intermediate_response_is_replayed_under_the_old_keys() {
    // The responder has updated its keys when the repeated request (protected with the
    // previous ones) arrives; it must still recognise it and replay its cached response.
    let s = hybrid(&[KeMethod::MlKem768, KeMethod::MlKem512]);
    let mut p = pair_with(vec![s], vec![s]);
    drop_first(&mut p, Side::B, ExchangeType::IkeIntermediate);
    p.connect();
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    assert_eq!(headers(&p.b, ExchangeType::IkeIntermediate).len(), 3);
    assert!(p.b.ep.stats().retransmits >= 1);
}

#[test]
fn duplicated_intermediate_messages_are_harmless() {
    let s = hybrid(&[KeMethod::MlKem768]);
    let mut p = pair_with(vec![s], vec![s]);
    p.filter = Some(Box::new(|_, t| {
        if exchange_of(&t.bytes) == Some(ExchangeType::IkeIntermediate) {
            Verdict::Duplicate
        } else {
            Verdict::Deliver
        }
    }));
    p.connect();
    p.drive_for(Duration::from_secs(5));
    assert!(established(&p.a) && established(&p.b));
    p.assert_children_match();
    assert_eq!(p.a.ep.ike_sa_count(), 1);
}

#[test]
fn malformed_ke_of_a_round_is_invalid_syntax() {
    use crate::sa::intermediate::round_ke;
    use crate::wire::Ke;
    let ke = |group, len| {
        vec![Payload::Ke(Ke {
            group,
            data: vec![1; len],
        })]
    };
    let syntax = |e: PeerMisbehaved| {
        assert_eq!(
            Error::from(e).reaction(),
            Reaction::Notify(NotifyType::InvalidSyntax, Vec::new())
        );
    };
    let m = KeMethod::MlKem768;
    assert!(round_ke(&ke(36, 1184), m, 1184).is_ok());
    let short = round_ke(&ke(36, 1183), m, 1184).expect_err("short");
    assert_eq!(
        short,
        PeerMisbehaved::BadKeLength {
            method: 36,
            expected: 1184,
            actual: 1183
        }
    );
    syntax(short);
    let other = round_ke(&ke(37, 1568), m, 1184).expect_err("other method");
    assert_eq!(
        other,
        PeerMisbehaved::AddKeMethodMismatch {
            expected: 36,
            actual: 37
        }
    );
    syntax(other);
    let none = round_ke(&[], m, 1184).expect_err("no KE");
    syntax(none);
}

/// Headers of the IKE_FOLLOWUP_KE messages `t` sent.
fn followups(t: &TestEndpoint) -> Vec<Header> {
    headers(t, ExchangeType::IkeFollowupKe)
}

#[test]
fn ike_rekey_with_mlkem768_runs_one_followup_exchange() {
    let s = hybrid(&[KeMethod::MlKem768]);
    let mut p = pair_with(vec![s], vec![s]);
    p.connect();
    let before = p.a.ep.sk_ds();
    assert_eq!(before, p.b.ep.sk_ds());
    let session = p.a.installs[0].session;
    p.command(Side::A, Command::RekeyIke { session });
    p.drive_for(Duration::from_secs(2));
    for t in [&p.a, &p.b] {
        assert!(t.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
        assert_eq!(t.ep.ike_sa_count(), 1);
        // show: the rekeyed SA reports its additional key exchange (RFC 9370 §2.2.4).
        let suite = t.ep.sas()[0].suite.expect("suite");
        assert_eq!(suite.addke.0[0], Some(KeMethod::MlKem768));
    }
    // One IKE_FOLLOWUP_KE after the CREATE_CHILD_SA (message IDs 3 and 4 after IKE_AUTH 2).
    let ids: Vec<u32> = followups(&p.a).iter().map(|h| h.message_id).collect();
    assert_eq!(ids, vec![4]);
    assert_eq!(followups(&p.b).len(), 1);
    let after = p.a.ep.sk_ds();
    assert_eq!(after.len(), 1);
    assert_eq!(after, p.b.ep.sk_ds(), "both ends derive the same SK_d");
    assert_ne!(after, before);
    p.assert_children_match();
    // The rekeyed SA works: a child rekey on it.
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 2);
    p.assert_children_match();
}

#[test]
fn classic_rekey_runs_no_followup_exchange() {
    let mut p = pair_with(vec![X25519], vec![X25519]);
    p.connect();
    let session = p.a.installs[0].session;
    p.command(Side::A, Command::RekeyIke { session });
    p.drive_for(Duration::from_secs(2));
    assert!(p.a.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert!(followups(&p.a).is_empty() && followups(&p.b).is_empty());
    assert_eq!(p.a.ep.sk_ds(), p.b.ep.sk_ds());
}

/// A pair whose Child SAs use PFS x25519 with ML-KEM-768 (strongSwan's
/// `aes256gcm16-x25519-ke1_mlkem768`); `b_addke` for B's side.
fn pfs_pair(a_addke: AddKes, b_addke: AddKes) -> Pair {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child.pfs = Some(DhGroup::Curve25519);
    a.child.pfs_addke = a_addke;
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child.pfs = Some(DhGroup::Curve25519);
    b.child.pfs_addke = b_addke;
    Pair::new(a, b)
}

fn mlkem768() -> AddKes {
    hybrid(&[KeMethod::MlKem768]).addke
}

#[test]
fn child_rekey_with_pfs_x25519_and_mlkem768() {
    let mut p = pfs_pair(mlkem768(), mlkem768());
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 2);
    assert_eq!(p.b.installs.len(), 2);
    // Both ends installed the same keys (inbound of one = outbound of the other).
    p.assert_children_match();
    assert_eq!(p.a.installs[1].outbound, p.b.installs[1].inbound);
    assert_eq!(p.a.installs[1].inbound, p.b.installs[1].outbound);
    assert_ne!(p.a.installs[0].outbound, p.a.installs[1].outbound);
    assert_eq!(p.a.live_children().len(), 1);
    assert_eq!(followups(&p.a).len(), 1);
    assert_eq!(followups(&p.b).len(), 1);
    // Status shows the live child's PFS group and its additional key exchange.
    for t in [&p.a, &p.b] {
        let sa = &t.ep.sas()[0];
        let live: Vec<_> = sa.child_sas.iter().filter(|c| c.live).collect();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].pfs, Some(DhGroup::Curve25519));
        assert_eq!(live[0].pfs_addke, mlkem768());
    }
}

#[test]
fn child_create_with_pfs_x25519_and_mlkem768() {
    let mut p = pfs_pair(mlkem768(), mlkem768());
    p.connect();
    // Delete the IKE_AUTH child with the peer, then ask for it again: CREATE_CHILD_SA.
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::ChildExpired { child });
    p.drive_for(Duration::from_secs(1));
    assert!(p.a.live_children().is_empty());
    p.command(Side::A, Command::Initiate { conn: ConnId(1) });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 2);
    assert_eq!(p.b.installs.len(), 2);
    assert!(p.a.installs[1].replaces.is_none());
    p.assert_children_match();
    assert_eq!(p.a.installs[1].outbound, p.b.installs[1].inbound);
    assert_eq!(followups(&p.a).len(), 1);
}

#[test]
fn peer_requiring_mlkem_is_followed_without_local_addke() {
    // B configures PFS without additional key exchanges: it follows A's (as a KE group).
    let mut p = pfs_pair(mlkem768(), AddKes::NONE);
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.b.installs.len(), 2);
    p.assert_children_match();
    assert_eq!(followups(&p.b).len(), 1);
}

#[test]
fn required_child_addke_is_refused_when_the_peer_offers_none() {
    let mut p = pfs_pair(AddKes::NONE, mlkem768());
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 1);
    assert_eq!(p.b.installs.len(), 1);
    assert_eq!(
        p.b.ep
            .stats()
            .rejected
            .get("additional_key_exchange_required"),
        Some(&1)
    );
    assert!(followups(&p.a).is_empty());
    // The old child stays.
    assert_eq!(p.a.live_children().len(), 1);
}

#[test]
fn lost_followup_request_is_retransmitted() {
    let mut p = pfs_pair(mlkem768(), mlkem768());
    p.connect();
    drop_first(&mut p, Side::A, ExchangeType::IkeFollowupKe);
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(3));
    assert_eq!(followups(&p.a).len(), 2);
    assert_eq!(followups(&p.b).len(), 1);
    assert_eq!(p.b.installs.len(), 2);
    p.assert_children_match();
}

#[test]
fn lost_followup_response_is_replayed_from_cache() {
    let mut p = pfs_pair(mlkem768(), mlkem768());
    p.connect();
    drop_first(&mut p, Side::B, ExchangeType::IkeFollowupKe);
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(3));
    // B answered the retransmission from its cache: same response twice, one install.
    let sent = followups(&p.b);
    assert_eq!(sent.len(), 2);
    assert_eq!(p.b.installs.len(), 2);
    assert_eq!(p.a.installs.len(), 2);
    assert!(p.a.ep.stats().retransmits >= 1);
    assert!(!p.b.ep.stats().rejected.contains_key("unknown_addke_link"));
    p.assert_children_match();
}

#[test]
fn duplicated_followup_messages_are_harmless() {
    let mut p = pfs_pair(mlkem768(), mlkem768());
    p.connect();
    p.filter = Some(Box::new(|_, t| {
        if exchange_of(&t.bytes) == Some(ExchangeType::IkeFollowupKe) {
            Verdict::Duplicate
        } else {
            Verdict::Deliver
        }
    }));
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(3));
    assert_eq!(p.a.installs.len(), 2);
    assert_eq!(p.b.installs.len(), 2);
    assert_eq!(p.a.live_children().len(), 1);
    p.assert_children_match();
}

#[test]
fn unknown_link_is_state_not_found_and_changes_nothing() {
    assert_eq!(
        Error::from(PeerMisbehaved::UnknownAddKeLink).reaction(),
        Reaction::Notify(NotifyType::StateNotFound, Vec::new())
    );
    let mut p = pfs_pair(mlkem768(), mlkem768());
    p.connect();
    // Hold A's first IKE_FOLLOWUP_KE back, then make B forget the link it gave: A's
    // retransmission carries a link B does not know.
    drop_first(&mut p, Side::A, ExchangeType::IkeFollowupKe);
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_millis(200));
    assert_eq!(p.b.ep.corrupt_followup_links(), 1);
    let installs_b = p.b.installs.len();
    let mut steps = 0;
    while !p.b.ep.stats().rejected.contains_key("unknown_addke_link") {
        p.drive_for(Duration::from_millis(100));
        steps += 1;
        assert!(steps < 100, "no retransmission reached B");
    }
    // B answered STATE_NOT_FOUND and kept its state: still waiting, nothing installed.
    assert_eq!(p.b.ep.followup_count(), 1);
    assert_eq!(p.b.installs.len(), installs_b);
    assert_eq!(p.a.installs.len(), 1);
    // A gave the rekey up and tries again later; the new CREATE_CHILD_SA replaces B's
    // stale state and succeeds.
    p.drive_for(Duration::from_secs(15));
    assert_eq!(p.a.installs.len(), 2);
    assert_eq!(p.b.installs.len(), 2);
    p.assert_children_match();
}

#[test]
fn simultaneous_hybrid_ike_rekey_converges() {
    let s = hybrid(&[KeMethod::MlKem768]);
    let mut p = pair_with(vec![s], vec![s]);
    p.connect();
    let sa = p.a.installs[0].session;
    let sb = p.b.installs[0].session;
    p.command(Side::A, Command::RekeyIke { session: sa });
    p.command(Side::B, Command::RekeyIke { session: sb });
    p.drive_for(Duration::from_secs(30));
    assert!(p.a.has_event(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert_eq!(p.a.ep.sk_ds(), p.b.ep.sk_ds());
    assert!(!followups(&p.a).is_empty() || !followups(&p.b).is_empty());
    p.assert_children_match();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
}

#[test]
fn simultaneous_child_rekey_with_mlkem_leaves_one_pair() {
    let mut p = pfs_pair(mlkem768(), mlkem768());
    p.connect();
    let ca = p.a.installs[0].child;
    let cb = p.b.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child: ca });
    p.command(Side::B, Command::RekeyChild { child: cb });
    p.drive_for(Duration::from_secs(5));
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
    assert_eq!(p.b.live_children().len(), 1);
    assert_eq!(followups(&p.a).len(), 2, "A's request and its answer to B");
}
