//! What [`Endpoint::sas`] reports for status output (`vtid show crypto ...`) and the
//! operator's commands behind `vtid clear crypto sa` and `vtid rekey`.

use std::time::Duration;

use super::pair::*;
use crate::config::*;
use crate::endpoint::*;
use crate::transform::DhGroup;
use crate::wire::Identity;

#[test]
fn sas_report_the_negotiated_suite_identities_and_child_details() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child.pfs = Some(DhGroup::Curve25519);
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child.pfs = Some(DhGroup::Curve25519);
    let mut p = Pair::new(a, b);
    p.connect();
    let sas = p.a.ep.sas();
    assert_eq!(sas.len(), 1);
    let s = &sas[0];
    assert_eq!(s.suite, Some(IkeProposal::AES256GCM_SHA256_X25519));
    // No local_id configured: the address the SA runs on (strongSwan's default).
    assert_eq!(s.local_id, Identity::Ipv4(A_IP));
    assert_eq!((s.auth_sign, s.auth_verify), ("PSK", "PSK"));
    assert_eq!(s.lifetime, Lifetime::IKE_DEFAULT.lifetime);
    assert_eq!(s.child_sas.len(), 1);
    let c = &s.child_sas[0];
    assert_eq!((c.spi_in, c.spi_out), (s.children[0].1, s.children[0].2));
    assert!(c.live);
    assert_eq!(c.local_ts, vec![crate::wire::TrafficSelector::any(false)]);
    // RFC 7296 §1.2: the IKE_AUTH Child SA has no KE, so no PFS, whatever is configured.
    assert_eq!(c.pfs, None);

    // Its rekey is a CREATE_CHILD_SA with KE: the successor reports the group.
    let child = c.id;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    let s = &p.a.ep.sas()[0];
    let live: Vec<_> = s.child_sas.iter().filter(|c| c.live).collect();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].id, child);
    assert_eq!(live[0].pfs, Some(DhGroup::Curve25519));
}

#[test]
fn sas_report_no_suite_before_ike_sa_init_completes() {
    let mut p = Pair::default_pair();
    p.command(Side::A, Command::Initiate { conn: ConnId(1) });
    let sas = p.a.ep.sas();
    assert_eq!(sas[0].state, "ExpectSaInitResponse");
    assert_eq!(sas[0].suite, None);
    assert!(sas[0].child_sas.is_empty());
}

#[test]
fn delete_child_keeps_the_ike_sa_and_initiate_makes_a_new_child() {
    let mut p = Pair::default_pair();
    p.connect();
    let before = p.a.ep.sas()[0].clone();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::DeleteChild { child });
    p.drive_for(Duration::from_secs(1));
    // Both ends removed it (the peer on our INFORMATIONAL Delete, §1.4.1), nothing replaced it.
    assert!(p.a.live_children().is_empty(), "{:?}", p.a.removes);
    assert!(p.b.live_children().is_empty(), "{:?}", p.b.removes);
    assert!(p.a.has_event(|e| matches!(e, Event::ChildSaDown { .. })));
    let after = p.a.ep.sas();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].spi_i, after[0].spi_r),
        (before.spi_i, before.spi_r),
        "the IKE SA stays"
    );
    // The childless IKE SA negotiates a new Child SA when the tunnel is started again.
    p.command(Side::A, Command::Initiate { conn: ConnId(1) });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.live_children().len(), 1);
    assert_eq!(p.b.live_children().len(), 1);
    p.assert_children_match();
    assert_eq!(p.a.ep.sas()[0].spi_i, before.spi_i);
}

#[test]
fn delete_child_of_an_unknown_id_changes_nothing() {
    let mut p = Pair::default_pair();
    p.connect();
    let sent = p.a.sent.len();
    p.command(
        Side::A,
        Command::DeleteChild {
            child: ChildSaId(999),
        },
    );
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.live_children().len(), 1);
    assert_eq!(p.a.sent.len(), sent);
}
