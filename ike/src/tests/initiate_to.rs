//! `Command::InitiateTo`: a Child SA started toward one peer address from a profile that
//! otherwise only answers (an mGRE profile whose peers NHRP finds, a DVTI hub), idempotent
//! per (profile, address) and riding an IKE SA with that peer when one exists.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::Duration;

use super::pair::*;
use crate::config::*;
use crate::endpoint::*;
use crate::wire::Message;
use crate::wire::TrafficSelector;
use crate::wire::enums::ExchangeType;

const GRE: u8 = 47;

fn ip4(a: std::net::Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn gre(mut ts: TrafficSelector) -> TrafficSelector {
    ts.ip_proto = GRE;
    ts
}

/// An mGRE tunnel's protection on `local`: responder-any, transport mode, selectors
/// (local/32 proto 47) <-> (any proto 47), narrowed per peer.
fn mgre_profile(local: std::net::Ipv4Addr) -> PeerConfig {
    let mut p = peer(1, local, local, "secret");
    p.remote = RemoteAddr::Any;
    p.child.mode = Mode::Transport;
    p.child.local_ts = vec![gre(TrafficSelector::host(ip4(local)))];
    p.child.remote_ts = vec![gre(TrafficSelector::any(false))];
    p
}

fn mgre_pair() -> Pair {
    Pair::new(mgre_profile(A_IP), mgre_profile(B_IP))
}

fn initiate_to(p: &mut Pair, s: Side, remote: IpAddr) {
    let ours = match s {
        Side::A => ip4(A_IP),
        Side::B => ip4(B_IP),
    };
    p.command(
        s,
        Command::InitiateTo {
            conn: ConnId(1),
            remote,
            index: ChildConfigIndex::FIRST,
            host_pair: Some((ours, remote)),
        },
    );
}

fn requests_of(t: &TestEndpoint, ex: ExchangeType) -> usize {
    t.sent
        .iter()
        .filter_map(|s| Message::decode(&s.bytes).ok())
        .filter(|m| m.header.exchange == ex && !m.header.is_response())
        .count()
}

#[test]
fn responder_only_profile_initiates_transport_gre_child_to_an_address() {
    let mut p = mgre_pair();
    initiate_to(&mut p, Side::A, ip4(B_IP));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.sent[0].remote, SocketAddr::new(ip4(B_IP), 500));
    p.assert_children_match();
    assert_eq!(p.a.installs.len(), 1);
    let ia = &p.a.installs[0];
    assert_eq!(ia.mode, Mode::Transport);
    assert_eq!(ia.local_ts, vec![gre(TrafficSelector::host(ip4(A_IP)))]);
    assert_eq!(ia.remote_ts, vec![gre(TrafficSelector::host(ip4(B_IP)))]);
    assert_eq!(ia.host_pair, Some((ip4(A_IP), ip4(B_IP))));
    let ib = &p.b.installs[0];
    assert_eq!(ib.mode, Mode::Transport);
    assert_eq!(ib.local_ts, vec![gre(TrafficSelector::host(ip4(B_IP)))]);
    assert_eq!(ib.remote_ts, vec![gre(TrafficSelector::host(ip4(A_IP)))]);
}

#[test]
fn repeated_initiate_to_is_one_ike_sa_and_one_child() {
    let mut p = mgre_pair();
    // Twice before anything is answered, and again once established.
    initiate_to(&mut p, Side::A, ip4(B_IP));
    initiate_to(&mut p, Side::A, ip4(B_IP));
    p.drive_for(Duration::from_secs(1));
    initiate_to(&mut p, Side::A, ip4(B_IP));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.ep.ike_sa_count(), 1);
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert_eq!(requests_of(&p.a, ExchangeType::IkeSaInit), 1);
    assert_eq!(requests_of(&p.a, ExchangeType::CreateChildSa), 0);
    assert_eq!(p.a.installs.len(), 1);
    assert_eq!(p.b.installs.len(), 1);
}

/// NHRP on both ends asks for the connection: the responder's request is served by the
/// Child SA the peer created with exactly those hosts' selectors, over the same IKE SA.
#[test]
fn the_responder_asking_back_reuses_the_peers_child() {
    let mut p = mgre_pair();
    initiate_to(&mut p, Side::A, ip4(B_IP));
    p.drive_for(Duration::from_secs(1));
    initiate_to(&mut p, Side::B, ip4(A_IP));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.b.ep.ike_sa_count(), 1);
    assert_eq!(requests_of(&p.b, ExchangeType::IkeSaInit), 0);
    assert_eq!(requests_of(&p.b, ExchangeType::CreateChildSa), 0);
    assert_eq!(p.b.installs.len(), 1);
}

/// With the IKE SA up and its Child SA gone, the request is a CREATE_CHILD_SA on it
/// (RFC 7296 §1.3.1), from either end.
#[test]
fn an_established_ike_sa_with_the_peer_carries_the_new_child() {
    let mut p = mgre_pair();
    initiate_to(&mut p, Side::A, ip4(B_IP));
    p.drive_for(Duration::from_secs(1));
    let child = p.b.installs[0].child;
    p.command(Side::B, Command::DeleteChild { child });
    p.drive_for(Duration::from_secs(1));
    assert!(p.a.live_children().is_empty() && p.b.live_children().is_empty());
    initiate_to(&mut p, Side::B, ip4(A_IP));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(requests_of(&p.b, ExchangeType::IkeSaInit), 0);
    assert_eq!(requests_of(&p.b, ExchangeType::CreateChildSa), 1);
    assert_eq!((p.a.ep.ike_sa_count(), p.b.ep.ike_sa_count()), (1, 1));
    p.assert_children_match();
    let ib = p.b.live_children()[0];
    assert_eq!(ib.mode, Mode::Transport);
    assert_eq!(ib.remote_ts, vec![gre(TrafficSelector::host(ip4(A_IP)))]);
}

/// Another address is another peer: its own IKE SA, sent there; the first peer's stays.
#[test]
fn another_address_gets_its_own_ike_sa() {
    let mut p = mgre_pair();
    initiate_to(&mut p, Side::A, ip4(B_IP));
    p.drive_for(Duration::from_secs(1));
    let c = ip4(std::net::Ipv4Addr::new(192, 0, 2, 3));
    p.filter = Some(Box::new(move |_, t| match t.remote.ip() == c {
        true => Verdict::Drop,
        false => Verdict::Deliver,
    }));
    let before = p.a.sent.len();
    initiate_to(&mut p, Side::A, c);
    p.drive_now();
    assert_eq!(p.a.ep.ike_sa_count(), 2);
    let sent: Vec<_> = p.a.sent[before..].iter().map(|t| t.remote).collect();
    assert_eq!(sent, vec![SocketAddr::new(c, 500)]);
    assert_eq!(p.a.live_children().len(), 1);
}

#[test]
fn an_address_outside_the_profiles_remote_is_refused() {
    let mut a = mgre_profile(A_IP);
    a.remote = RemoteAddr::Prefix(ip4(std::net::Ipv4Addr::new(198, 51, 100, 0)), 24);
    let mut p = Pair::new(a, mgre_profile(B_IP));
    initiate_to(&mut p, Side::A, ip4(B_IP));
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.ep.ike_sa_count(), 0);
    assert!(p.a.sent.is_empty());
}

/// The host pair must lie inside the configuration's selectors: a peer host is fine (any
/// proto 47), but our own host must be the source the profile protects.
#[test]
fn a_host_pair_outside_the_selectors_is_refused() {
    let mut p = mgre_pair();
    p.command(
        Side::A,
        Command::InitiateTo {
            conn: ConnId(1),
            remote: ip4(B_IP),
            index: ChildConfigIndex::FIRST,
            host_pair: Some((ip4(std::net::Ipv4Addr::new(192, 0, 2, 9)), ip4(B_IP))),
        },
    );
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.a.ep.ike_sa_count(), 0);
    assert!(p.a.sent.is_empty());
}

/// Both ends ask at once (two spokes resolving each other): the duplicate IKE SA goes and
/// one Child SA pair per direction stays matched.
#[test]
fn both_ends_at_once_converge() {
    let mut p = mgre_pair();
    initiate_to(&mut p, Side::A, ip4(B_IP));
    initiate_to(&mut p, Side::B, ip4(A_IP));
    p.drive_for(Duration::from_secs(5));
    assert_eq!((p.a.ep.ike_sa_count(), p.b.ep.ike_sa_count()), (1, 1));
    p.assert_children_match();
    assert_eq!(p.a.live_children().len(), 1);
}
