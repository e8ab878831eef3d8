//! NAT rebinding (RFC 7296 §2.23): the kernel's XFRM_MSG_MAPPING, fed in as
//! [`Command::NatMapping`], and IKE requests arriving from a new mapping. A sits behind the
//! pair's NAT; changing `nat_offset` rebinds its ports and drops what goes to the old ones.

use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::pair::*;
use crate::config::*;
use crate::endpoint::*;

fn moved(p: &TestEndpoint) -> usize {
    p.events
        .iter()
        .filter(|e| matches!(e, Event::PeerMoved { .. }))
        .count()
}

#[test]
fn kernel_mapping_moves_the_session_and_its_child_sa_encap() {
    let mut p = Pair::nat_pair();
    let child = p.b.installs[0].clone();
    assert_eq!(child.remote, addr(NAT_PUBLIC, 34500));
    // The NAT rebinds: A's port 4500 now shows as 35500, and 34500 leads nowhere.
    p.nat_offset = 31000;
    let new = addr(NAT_PUBLIC, 35500);
    p.command(
        Side::B,
        Command::NatMapping {
            inbound_spi: child.inbound_spi,
            remote: new,
        },
    );
    p.drive_now();
    assert_eq!(
        p.b.encap_updates,
        vec![ChildSaEncapUpdate {
            child: child.child,
            session: child.session,
            conn: child.conn,
            local: child.local,
            remote: new,
            inbound_spi: child.inbound_spi,
            outbound_spi: child.outbound_spi,
            encap: UdpEncap {
                local_port: 4500,
                remote_port: 35500,
            },
        }]
    );
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::PeerMoved { old, new: n, .. } if *old == child.remote && *n == new
    )));
    assert_eq!(p.b.ep.sas()[0].remote, new);
    // B's own requests reach A through the new mapping: its liveness check is answered.
    p.command(
        Side::B,
        Command::Dpd {
            session: child.session,
        },
    );
    p.drive_for(Duration::from_secs(10));
    assert!(!p.b.has_event(|e| matches!(e, Event::PeerDead { .. })));
    // No rekey was needed: the same Child SA is the only one.
    assert_eq!(p.b.installs.len(), 1);
    // A later rekey installs its successor with the new port.
    p.command(Side::B, Command::RekeyChild { child: child.child });
    p.drive_for(Duration::from_secs(1));
    let next = p.b.installs.last().expect("rekeyed child");
    assert_ne!(next.child, child.child);
    assert_eq!(next.remote, new);
    assert_eq!(next.encap.map(|e| e.remote_port), Some(35500));
    p.assert_children_match();
}

#[test]
fn ike_request_from_a_new_mapping_updates_child_sa_encap_too() {
    let mut p = Pair::nat_pair();
    let child = p.b.installs[0].clone();
    p.nat_offset = 31000;
    // A's liveness check comes from the new mapping; B answers it there and moves its
    // Child SA's ESP-in-UDP along (before any ESP told its kernel).
    let session = p.a.installs[0].session;
    p.command(Side::A, Command::Dpd { session });
    p.drive_now();
    let new = addr(NAT_PUBLIC, 35500);
    assert_eq!(p.b.ep.sas()[0].remote, new);
    assert_eq!(p.b.encap_updates.len(), 1);
    assert_eq!(p.b.encap_updates[0].child, child.child);
    assert_eq!(p.b.encap_updates[0].encap.remote_port, 35500);
    assert_eq!(moved(&p.b), 1);
    // The kernel's report for that SA, still stale when its packet came in, updates that
    // Child SA again (idempotent) without a second move.
    p.command(
        Side::B,
        Command::NatMapping {
            inbound_spi: child.inbound_spi,
            remote: new,
        },
    );
    p.drive_now();
    assert_eq!(p.b.encap_updates.len(), 2);
    assert_eq!(p.b.encap_updates[1], p.b.encap_updates[0]);
    assert_eq!(moved(&p.b), 1);
}

#[test]
fn the_side_behind_the_nat_does_not_follow_mappings() {
    // RFC 7296 §2.23: a host behind a NAT SHOULD NOT update the peer's address from packets.
    let mut p = Pair::nat_pair();
    let child = p.a.installs[0].clone();
    p.command(
        Side::A,
        Command::NatMapping {
            inbound_spi: child.inbound_spi,
            remote: addr(B_IP, 4600),
        },
    );
    p.drive_now();
    assert!(p.a.encap_updates.is_empty());
    assert_eq!(p.a.ep.sas()[0].remote, addr(B_IP, 4500));
    assert_eq!(moved(&p.a), 0);
}

#[test]
fn without_a_nat_mappings_are_ignored() {
    let mut p = Pair::default_pair();
    p.connect();
    let child = p.b.installs[0].clone();
    p.command(
        Side::B,
        Command::NatMapping {
            inbound_spi: child.inbound_spi,
            remote: addr(A_IP, 4501),
        },
    );
    p.drive_now();
    assert!(p.b.encap_updates.is_empty());
    assert_eq!(p.b.ep.sas()[0].remote, child.remote);
}

#[test]
fn a_new_address_or_an_unknown_spi_changes_nothing() {
    let mut p = Pair::nat_pair();
    let child = p.b.installs[0].clone();
    let elsewhere = std::net::SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 4500);
    p.command(
        Side::B,
        Command::NatMapping {
            inbound_spi: child.inbound_spi,
            remote: elsewhere,
        },
    );
    p.command(
        Side::B,
        Command::NatMapping {
            inbound_spi: child.inbound_spi ^ 0xffff_0000,
            remote: addr(NAT_PUBLIC, 35500),
        },
    );
    p.drive_now();
    assert!(p.b.encap_updates.is_empty());
    assert_eq!(p.b.ep.sas()[0].remote, child.remote);
    assert_eq!(moved(&p.b), 0);
}

#[test]
fn keepalives_follow_the_configured_interval() {
    // RFC 3948 §4: the interval is local policy; 20 s by default, here 5 s on A (behind the
    // NAT). B, not behind one, sends none.
    let mut a = endpoint_config(vec![peer(1, A_IP, B_IP, "secret")]);
    a.nat_keepalive = Duration::from_secs(5);
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.remote = RemoteAddr::Any;
    let mut p = Pair::with_configs(a, endpoint_config(vec![b]));
    p.nat = true;
    p.connect();
    p.drive_for(Duration::from_secs(21));
    assert!(
        (4..=5).contains(&p.a.keepalives),
        "{} keepalives in 21 s at a 5 s interval",
        p.a.keepalives
    );
    assert_eq!(p.b.keepalives, 0);
}
