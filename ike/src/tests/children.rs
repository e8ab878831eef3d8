//! Several Child SA configurations under one IKE SA (policy-based IPsec: one Child SA per
//! crypto-map ACL entry, one IKE SA per peer): `Command::InitiateChild`, the responder's
//! choice of configuration by the proposed selectors (RFC 7296 §2.9), per-host Child SAs and
//! rekeys that keep their configuration (§2.8).

use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::pair::*;
use crate::config::*;
use crate::endpoint::*;
use crate::wire::Message;
use crate::wire::TrafficSelector;
use crate::wire::enums::ExchangeType;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn net(a: u8, b: u8, c: u8, len: u8) -> TrafficSelector {
    TrafficSelector::prefix(ip(a, b, c, 0), len)
}

/// The test profile's Child SA parameters with these selectors.
fn child(local: TrafficSelector, remote: TrafficSelector) -> ChildConfig {
    ChildConfig {
        local_ts: vec![local],
        remote_ts: vec![remote],
        ..peer(1, A_IP, B_IP, "secret").child
    }
}

/// A (10.1.0.0/24 ↔ 10.2.0.0/24, 10.1.1.0/24 ↔ 10.3.0.0/24) and B with the mirror image.
fn two_config_pair() -> Pair {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child = child(net(10, 1, 0, 24), net(10, 2, 0, 24));
    a.more_children = vec![child(net(10, 1, 1, 24), net(10, 3, 0, 24))];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child = child(net(10, 2, 0, 24), net(10, 1, 0, 24));
    b.more_children = vec![child(net(10, 3, 0, 24), net(10, 1, 1, 24))];
    Pair::new(a, b)
}

fn initiate_child(p: &mut Pair, index: u16, host_pair: Option<(IpAddr, IpAddr)>) {
    p.command(
        Side::A,
        Command::InitiateChild {
            conn: ConnId(1),
            index: ChildConfigIndex(index),
            host_pair,
        },
    );
}

/// CREATE_CHILD_SA requests a side sent (retransmissions included).
fn create_child_requests(t: &TestEndpoint) -> usize {
    t.sent
        .iter()
        .filter_map(|s| Message::decode(&s.bytes).ok())
        .filter(|m| m.header.exchange == ExchangeType::CreateChildSa && !m.header.is_response())
        .count()
}

fn established_sas(t: &TestEndpoint) -> usize {
    t.ep.sas()
        .iter()
        .filter(|s| s.state == "Established")
        .count()
}

/// The live install of configuration `index` on side `t` (exactly one).
fn live_of(t: &TestEndpoint, index: u16) -> &ChildSaInstall {
    let all: Vec<_> = t
        .live_children()
        .into_iter()
        .filter(|i| i.config == ChildConfigIndex(index))
        .collect();
    assert_eq!(all.len(), 1, "live children of config {index}: {all:?}");
    all[0]
}

#[test]
fn second_configuration_joins_the_same_ike_sa() {
    let mut p = two_config_pair();
    p.connect();
    assert_eq!(p.a.installs.len(), 1);
    assert_eq!(p.a.installs[0].config, ChildConfigIndex::FIRST);
    assert_eq!(p.b.installs[0].config, ChildConfigIndex::FIRST);
    // An ACQUIRE storm: the same request three times before anything is answered.
    for _ in 0..3 {
        initiate_child(&mut p, 1, None);
    }
    p.drive_for(Duration::from_secs(1));
    assert_eq!(create_child_requests(&p.a), 1);
    for t in [&p.a, &p.b] {
        assert_eq!(t.ep.ike_sa_count(), 1);
        assert_eq!(t.installs.len(), 2);
        assert_eq!(t.ep.sas()[0].children.len(), 2);
    }
    p.assert_children_match();
    let (a0, a1) = (live_of(&p.a, 0), live_of(&p.a, 1));
    assert_eq!(a0.local_ts, vec![net(10, 1, 0, 24)]);
    assert_eq!(a0.remote_ts, vec![net(10, 2, 0, 24)]);
    assert_eq!(a1.local_ts, vec![net(10, 1, 1, 24)]);
    assert_eq!(a1.remote_ts, vec![net(10, 3, 0, 24)]);
    assert_eq!(a1.host_pair, None);
    let b1 = live_of(&p.b, 1);
    assert_eq!(b1.inbound_spi, a1.outbound_spi);
    assert_eq!(b1.local_ts, vec![net(10, 3, 0, 24)]);
    assert_eq!(a1.session, a0.session, "the same IKE SA");
    assert!(p.a.has_event(|e| matches!(
        e,
        Event::ChildSaUp { config, child, .. } if *config == ChildConfigIndex(1) && *child == a1.child
    )));
    // Asked again once it is up: nothing.
    initiate_child(&mut p, 1, None);
    initiate_child(&mut p, 0, None);
    p.drive_for(Duration::from_secs(1));
    assert_eq!(create_child_requests(&p.a), 1);
    assert_eq!(p.a.installs.len(), 2);
    assert!(p.a.ep.stats().rejected.is_empty() && p.b.ep.stats().rejected.is_empty());
}

#[test]
fn initiate_child_without_ike_sa_carries_it_in_ike_auth() {
    let mut p = two_config_pair();
    initiate_child(&mut p, 1, None);
    // Repeated while IKE_SA_INIT is in flight.
    initiate_child(&mut p, 1, None);
    p.drive_now();
    assert_eq!(p.a.ep.ike_sa_count(), 1, "one IKE SA being set up");
    p.drive_for(Duration::from_secs(1));
    for t in [&p.a, &p.b] {
        assert_eq!(t.ep.ike_sa_count(), 1);
        assert_eq!(established_sas(t), 1);
        assert_eq!(t.installs.len(), 1);
        assert_eq!(t.installs[0].config, ChildConfigIndex(1));
    }
    assert_eq!(p.a.installs[0].local_ts, vec![net(10, 1, 1, 24)]);
    assert_eq!(p.b.installs[0].local_ts, vec![net(10, 3, 0, 24)]);
    p.assert_children_match();
    // Repeated after the install: nothing either.
    initiate_child(&mut p, 1, None);
    p.drive_for(Duration::from_secs(1));
    assert_eq!(create_child_requests(&p.a), 0);
    assert_eq!(p.a.installs.len(), 1);
    assert_eq!(p.b.installs.len(), 1);
}

#[test]
fn requests_during_the_handshake_follow_it() {
    let mut p = two_config_pair();
    initiate_child(&mut p, 1, None);
    p.drive_now();
    // IKE_SA_INIT has been answered, IKE_AUTH not: both sides are mid-handshake.
    initiate_child(&mut p, 0, None);
    initiate_child(&mut p, 0, None);
    initiate_child(&mut p, 1, None);
    p.drive_for(Duration::from_secs(1));
    assert_eq!(
        create_child_requests(&p.a),
        1,
        "only configuration 0 follows"
    );
    for t in [&p.a, &p.b] {
        assert_eq!(t.ep.ike_sa_count(), 1);
        assert_eq!(t.installs.len(), 2);
        live_of(t, 0);
        live_of(t, 1);
    }
    p.assert_children_match();
}

#[test]
fn responder_picks_the_configuration_the_selectors_narrow_to() {
    // A proposes wider selectors than B's configuration 1 and disjoint from B's
    // configuration 0 (its TSr misses 10.2.0.0/24): B picks 1 and narrows to it.
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child = child(net(10, 1, 0, 16), net(10, 3, 0, 16));
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child = child(net(10, 2, 0, 24), net(10, 1, 0, 24));
    b.more_children = vec![child(net(10, 3, 0, 24), net(10, 1, 1, 24))];
    let mut p = Pair::new(a, b);
    p.connect();
    p.assert_children_match();
    let ia = &p.a.installs[0];
    assert_eq!(
        ia.config,
        ChildConfigIndex::FIRST,
        "A's own configuration 0"
    );
    assert_eq!(ia.local_ts, vec![net(10, 1, 1, 24)]);
    assert_eq!(ia.remote_ts, vec![net(10, 3, 0, 24)]);
    assert_eq!(p.b.installs[0].config, ChildConfigIndex(1));
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::ChildSaUp { config, .. } if *config == ChildConfigIndex(1)
    )));
}

#[test]
fn ike_auth_with_foreign_selectors_keeps_the_ike_sa() {
    // The IKE SA comes up, the Child SA alone fails with TS_UNACCEPTABLE (RFC 7296 §1.2).
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child = child(net(10, 9, 0, 24), net(10, 8, 0, 24));
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child = child(net(10, 2, 0, 24), net(10, 1, 0, 24));
    b.more_children = vec![child(net(10, 3, 0, 24), net(10, 1, 1, 24))];
    let mut p = Pair::new(a, b);
    p.connect();
    assert_eq!(p.b.ep.stats().rejected.get("ts_unacceptable"), Some(&1));
    for t in [&p.a, &p.b] {
        assert_eq!(t.ep.ike_sa_count(), 1);
        assert_eq!(established_sas(t), 1);
        assert!(t.installs.is_empty());
    }
}

#[test]
fn create_child_with_foreign_selectors_is_ts_unacceptable() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child = child(net(10, 1, 0, 24), net(10, 2, 0, 24));
    a.more_children = vec![child(net(10, 9, 0, 24), net(10, 8, 0, 24))];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child = child(net(10, 2, 0, 24), net(10, 1, 0, 24));
    let mut p = Pair::new(a, b);
    p.connect();
    initiate_child(&mut p, 1, None);
    p.drive_for(Duration::from_secs(1));
    assert_eq!(create_child_requests(&p.a), 1);
    assert_eq!(p.b.ep.stats().rejected.get("ts_unacceptable"), Some(&1));
    assert_eq!(p.a.ep.stats().rejected.get("peer_rejected"), Some(&1));
    for t in [&p.a, &p.b] {
        assert_eq!(t.installs.len(), 1, "configuration 0 only");
        assert_eq!(t.ep.ike_sa_count(), 1);
        assert_eq!(established_sas(t), 1);
        assert!(!t.has_event(|e| matches!(e, Event::IkeSaDown { .. })));
    }
}

#[test]
fn per_host_child_sas_coexist_with_host_selectors() {
    // Configuration 1 selects TCP to port 443 only; per-host selectors keep that.
    let mut tcp_l = net(10, 1, 1, 24);
    tcp_l.ip_proto = 6;
    let mut tcp_r = net(10, 3, 0, 24);
    tcp_r.ip_proto = 6;
    tcp_r.start_port = 443;
    tcp_r.end_port = 443;
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child = child(net(10, 1, 0, 24), net(10, 2, 0, 24));
    a.more_children = vec![child(tcp_l, tcp_r)];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.child = child(net(10, 2, 0, 24), net(10, 1, 0, 24));
    b.more_children = vec![child(tcp_r, tcp_l)];
    let mut p = Pair::new(a, b);
    let h1 = (ip(10, 1, 1, 5), ip(10, 3, 0, 9));
    let h2 = (ip(10, 1, 1, 6), ip(10, 3, 0, 9));
    // The first per-host child rides in IKE_AUTH, the second in CREATE_CHILD_SA.
    initiate_child(&mut p, 1, Some(h1));
    p.drive_for(Duration::from_secs(1));
    initiate_child(&mut p, 1, Some(h2));
    initiate_child(&mut p, 1, Some(h1));
    p.drive_for(Duration::from_secs(1));
    // A host outside the configuration is refused locally.
    initiate_child(&mut p, 1, Some((ip(10, 9, 9, 9), ip(10, 3, 0, 9))));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(create_child_requests(&p.a), 1);
    for t in [&p.a, &p.b] {
        assert_eq!(t.ep.ike_sa_count(), 1);
        assert_eq!(t.installs.len(), 2);
        assert!(t.installs.iter().all(|i| i.config == ChildConfigIndex(1)));
    }
    p.assert_children_match();
    for (inst, (l, r)) in p.a.installs.iter().zip([h1, h2]) {
        assert_eq!(inst.host_pair, Some((l, r)));
        let mut want_l = TrafficSelector::host(l);
        want_l.ip_proto = 6;
        let mut want_r = TrafficSelector::host(r);
        want_r.ip_proto = 6;
        want_r.start_port = 443;
        want_r.end_port = 443;
        assert_eq!(inst.local_ts, vec![want_l]);
        assert_eq!(inst.remote_ts, vec![want_r]);
    }
    // The responder did not ask for hosts; it just narrowed.
    assert!(p.b.installs.iter().all(|i| i.host_pair.is_none()));
}

#[test]
fn rekeys_keep_configuration_host_pair_and_selectors() {
    let mut p = two_config_pair();
    p.connect();
    let h = (ip(10, 1, 1, 5), ip(10, 3, 0, 9));
    initiate_child(&mut p, 1, Some(h));
    initiate_child(&mut p, 1, None);
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.installs.len(), 3);
    p.assert_children_match();
    let before: Vec<ChildSaInstall> = p.a.installs.clone();
    // A rekeys the per-host child of configuration 1; B rekeys the other one.
    let per_host = before
        .iter()
        .find(|i| i.host_pair.is_some())
        .expect("per-host")
        .clone();
    p.command(
        Side::A,
        Command::RekeyChild {
            child: per_host.child,
        },
    );
    let whole = before
        .iter()
        .find(|i| i.config == ChildConfigIndex(1) && i.host_pair.is_none())
        .expect("whole")
        .clone();
    let b_whole =
        p.b.installs
            .iter()
            .find(|i| i.inbound_spi == whole.outbound_spi)
            .expect("peer half")
            .child;
    p.drive_for(Duration::from_secs(1));
    p.command(Side::B, Command::RekeyChild { child: b_whole });
    p.drive_for(Duration::from_secs(1));
    for (old, t) in [(&per_host, &p.a), (&whole, &p.a)] {
        let new = t
            .installs
            .iter()
            .find(|i| {
                i.replaces == Some(old.child)
                    || t.events.iter().any(|e| {
                        matches!(e, Event::ChildSaRekeyed { old: o, new: n, .. }
                            if *o == old.child && *n == i.child)
                    })
            })
            .expect("successor");
        assert_eq!(new.config, ChildConfigIndex(1));
        assert_eq!(new.host_pair, old.host_pair);
        assert_eq!(new.local_ts, old.local_ts);
        assert_eq!(new.remote_ts, old.remote_ts);
    }
    for t in [&p.a, &p.b] {
        assert_eq!(t.live_children().len(), 3, "{:?}", t.log);
        assert_eq!(t.ep.ike_sa_count(), 1);
    }
    p.assert_children_match();
    // Time-driven rekeys of everything (children and the IKE SA) keep the configurations.
    p.drive_for(Duration::from_secs(5 * 3600));
    for t in [&p.a, &p.b] {
        let mut configs: Vec<u16> = t.live_children().iter().map(|i| i.config.0).collect();
        configs.sort_unstable();
        assert_eq!(configs, vec![0, 1, 1]);
        assert_eq!(t.ep.ike_sa_count(), 1);
    }
    let hosts: Vec<_> =
        p.a.live_children()
            .iter()
            .filter_map(|i| i.host_pair)
            .collect();
    assert_eq!(hosts, vec![h]);
    p.assert_children_match();
}

#[test]
fn configuration_indices_and_host_selectors() {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.child = child(net(10, 1, 0, 24), net(10, 2, 0, 24));
    a.more_children = vec![child(net(10, 1, 1, 24), net(10, 3, 0, 24))];
    assert_eq!(a.child_config(ChildConfigIndex::FIRST), Some(&a.child));
    assert_eq!(
        a.child_config(ChildConfigIndex(1)),
        Some(&a.more_children[0])
    );
    assert_eq!(a.child_config(ChildConfigIndex(2)), None);
    let idx: Vec<u16> = a.child_configs().map(|(i, _)| i.0).collect();
    assert_eq!(idx, vec![0, 1]);
    let (l, r) = a.more_children[0]
        .host_selectors(ip(10, 1, 1, 7), ip(10, 3, 0, 200))
        .expect("inside");
    assert_eq!(l, vec![TrafficSelector::host(ip(10, 1, 1, 7))]);
    assert_eq!(r, vec![TrafficSelector::host(ip(10, 3, 0, 200))]);
    assert!(
        a.more_children[0]
            .host_selectors(ip(10, 1, 0, 7), ip(10, 3, 0, 1))
            .is_none()
    );
    assert!(
        a.child
            .host_selectors(ip(10, 1, 0, 7), ip(10, 3, 0, 1))
            .is_none()
    );
}
