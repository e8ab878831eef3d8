//! Quick modes by configuration (a crypto map's ACL lines): each configuration is its own
//! quick mode with its own IDci/IDcr (RFC 2409 §5.5), started one at a time on one ISAKMP
//! SA; the responder files each Child SA under the configuration its IDs fall in.

use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::pair::*;
use crate::config::ChildConfigIndex;
use crate::config::ConnId;
use crate::endpoint::*;
use crate::v1::config::V1Peer;
use crate::v1::endpoint::Command as V1Command;
use crate::wire::TrafficSelector;

fn net(a: u8, b: u8) -> TrafficSelector {
    TrafficSelector::prefix(IpAddr::V4(Ipv4Addr::new(10, a, b, 0)), 24)
}

/// `pair::peer` with two lines: 10.L.0.0/24 <-> 10.R.0.0/24 and 10.L.1.0/24 <-> 10.R.1.0/24.
fn two_lines(local: Ipv4Addr, remote: Ipv4Addr) -> V1Peer {
    let mut p = peer(local, remote, "secret");
    let (l, r) = if local == A_IP { (1, 2) } else { (2, 1) };
    let mut second = p.child.clone();
    p.child.local_ts = vec![net(l, 0)];
    p.child.remote_ts = vec![net(r, 0)];
    second.local_ts = vec![net(l, 1)];
    second.remote_ts = vec![net(r, 1)];
    p.more_children = vec![second];
    p
}

fn child(conn: u32, index: u16) -> V1Command {
    V1Command::InitiateChild {
        conn: ConnId(conn),
        index: ChildConfigIndex(index),
    }
}

#[test]
fn each_configuration_gets_its_own_quick_mode_and_child_sa() {
    let mut p = Pair::new(two_lines(A_IP, B_IP), two_lines(B_IP, A_IP));
    // Both lines asked for before main mode: one ISAKMP SA, then a quick mode each.
    p.command(Side::A, child(1, 0));
    p.command(Side::A, child(1, 1));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.ep.sa_count(), 1);
    assert_eq!(p.b.ep.sa_count(), 1);
    for side in [&p.a, &p.b] {
        let mut got: Vec<_> = side
            .live_children()
            .iter()
            .map(|i| (i.config.0, i.local_ts.clone(), i.remote_ts.clone()))
            .collect();
        got.sort_by_key(|g| g.0);
        let (l, r) = if side.installs[0].local.ip() == IpAddr::V4(A_IP) {
            (1, 2)
        } else {
            (2, 1)
        };
        assert_eq!(
            got,
            [
                (0, vec![net(l, 0)], vec![net(r, 0)]),
                (1, vec![net(l, 1)], vec![net(r, 1)])
            ]
        );
    }
    // The two sides agree on the SPIs of each configuration.
    for cfg in 0..2u16 {
        let a =
            p.a.live_children()
                .into_iter()
                .find(|i| i.config.0 == cfg)
                .unwrap();
        let b =
            p.b.live_children()
                .into_iter()
                .find(|i| i.config.0 == cfg)
                .unwrap();
        assert_eq!(
            (a.inbound_spi, a.outbound_spi),
            (b.outbound_spi, b.inbound_spi)
        );
    }
    // Asking again for a configuration that has its Child SA starts nothing; an unknown
    // configuration neither.
    let before = p.a.sent.len();
    p.command(Side::A, child(1, 1));
    p.command(Side::A, child(1, 7));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(
        p.a.sent.len(),
        before,
        "no quick mode for a line that has its SA"
    );
    assert_eq!(p.a.live_children().len(), 2);
}

#[test]
fn a_deleted_line_is_negotiated_again_alone() {
    let mut p = Pair::new(two_lines(A_IP, B_IP), two_lines(B_IP, A_IP));
    p.command(Side::A, child(1, 0));
    p.command(Side::A, child(1, 1));
    p.drive_for(Duration::from_secs(1));
    let second =
        p.a.live_children()
            .into_iter()
            .find(|i| i.config.0 == 1)
            .unwrap()
            .child;
    p.command(Side::A, V1Command::DeleteChild { child: second });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.live_children().len(), 1);
    assert_eq!(p.b.live_children().len(), 1);
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::ChildSaDown { config, .. } if config.0 == 1
    )));
    // The line's next packet (ACQUIRE) brings it back on the same ISAKMP SA.
    p.command(Side::A, child(1, 1));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.ep.sa_count(), 1);
    let configs: Vec<u16> = p.b.live_children().iter().map(|i| i.config.0).collect();
    assert_eq!(configs.len(), 2);
    assert!(configs.contains(&0) && configs.contains(&1), "{configs:?}");
}

#[test]
fn ids_outside_every_configuration_are_refused() {
    // B knows only the first line: A's quick mode for the second is refused, the first
    // stands.
    let mut b = two_lines(B_IP, A_IP);
    b.more_children.clear();
    let mut p = Pair::new(two_lines(A_IP, B_IP), b);
    p.command(Side::A, child(1, 0));
    p.command(Side::A, child(1, 1));
    p.drive_for(Duration::from_secs(5));
    let configs: Vec<u16> = p.b.live_children().iter().map(|i| i.config.0).collect();
    assert_eq!(configs, [0]);
    assert_eq!(p.a.live_children().len(), 1);
}

#[test]
fn a_rekey_keeps_its_lines_configuration_and_selectors() {
    let mut p = Pair::new(two_lines(A_IP, B_IP), two_lines(B_IP, A_IP));
    p.command(Side::A, child(1, 0));
    p.command(Side::A, child(1, 1));
    p.drive_for(Duration::from_secs(1));
    let old =
        p.a.live_children()
            .into_iter()
            .find(|i| i.config.0 == 1)
            .expect("line 1's Child SA")
            .clone();
    // The kernel's soft EXPIRE of line 1's SA on A.
    p.command(Side::A, V1Command::RekeyChild { child: old.child });
    p.drive_for(Duration::from_secs(5));
    for side in [&p.a, &p.b] {
        let new = side
            .installs
            .iter()
            .find(|i| i.replaces.is_some())
            .expect("a rekeyed Child SA");
        assert_eq!(new.config.0, 1, "the rekey stays on line 1");
        let (l, r) = if new.local.ip() == IpAddr::V4(A_IP) {
            (1, 2)
        } else {
            (2, 1)
        };
        assert_eq!(new.local_ts, vec![net(l, 1)]);
        assert_eq!(new.remote_ts, vec![net(r, 1)]);
        // Line 0's pair is untouched; line 1 has exactly one live pair.
        let live = side.live_children();
        assert_eq!(live.iter().filter(|i| i.config.0 == 0).count(), 1);
        assert_eq!(live.iter().filter(|i| i.config.0 == 1).count(), 1);
    }
    assert_eq!(p.a.installs[0].replaces, None);
    p.assert_children_match();
}
