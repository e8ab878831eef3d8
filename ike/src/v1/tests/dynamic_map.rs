//! A dynamic crypto map over IKEv1 (the IOS hub: `crypto dynamic-map` with the wildcard key
//! `address 0.0.0.0 0.0.0.0`): the responder's profile answers main mode from any address
//! (the key chosen by address, RFC 2409 §5.4, after any static peer's own), and accepts a
//! spoke's quick mode whose IDs fall inside the entry's ACL line, installing the Child SA
//! with the spoke's selectors (RFC 2409 §5.5: one IDci/IDcr pair per quick mode).

use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::pair::*;
use super::up;
use crate::config::ConnId;
use crate::config::RemoteAddr;
use crate::v1::config::V1Config;
use crate::v1::config::V1Peer;
use crate::wire::TrafficSelector;

fn ts(a: u8, b: u8, len: u8) -> TrafficSelector {
    TrafficSelector::prefix(IpAddr::V4(Ipv4Addr::new(10, a, b, 0)), len)
}

/// B's profiles: a static peer at another address with its own key first (as the plan sorts
/// them), then the dynamic map's connection: any address, the wildcard key, and the entry's
/// one wide ACL line (10.2.0.0/16 behind the hub, 10.0.0.0/8 behind the spokes).
fn hub() -> V1Config {
    let mut other = peer(B_IP, Ipv4Addr::new(192, 0, 2, 9), "key-of-static-peer");
    other.id = ConnId(5);
    let mut dynamic = peer(B_IP, A_IP, "wildcard-key");
    dynamic.id = ConnId(9);
    dynamic.remote = RemoteAddr::Prefix(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    dynamic.child.local_ts = vec![ts(2, 0, 16)];
    dynamic.child.remote_ts = vec![TrafficSelector::prefix(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
        8,
    )];
    V1Config {
        peers: vec![other, dynamic],
        ..Default::default()
    }
}

/// A spoke proposing its own LAN pair, `local` behind it to `remote` behind the hub.
fn spoke(local: TrafficSelector, remote: TrafficSelector) -> V1Peer {
    let mut s = peer(A_IP, B_IP, "wildcard-key");
    s.child.local_ts = vec![local];
    s.child.remote_ts = vec![remote];
    s
}

fn pair(spoke: V1Peer) -> Pair {
    let mut p = Pair::new(spoke.clone(), spoke);
    p.b.ep.reconfigure(Arc::new(hub()));
    p
}

#[test]
fn a_spoke_inside_the_acl_gets_its_own_narrower_selectors() {
    let mut p = pair(spoke(ts(1, 0, 24), ts(2, 0, 24)));
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    let sa = &p.b.ep.sas()[0];
    assert_eq!(sa.conn, ConnId(9), "answered by the dynamic map's profile");
    let live = p.b.live_children();
    assert_eq!(live.len(), 1);
    let got = live[0];
    assert_eq!(got.conn, ConnId(9));
    assert_eq!(got.config.0, 0, "filed under the entry's ACL line");
    // The spoke's /24s, not the ACL line's /16 and /8.
    assert_eq!(got.local_ts, vec![ts(2, 0, 24)]);
    assert_eq!(got.remote_ts, vec![ts(1, 0, 24)]);
    assert_eq!(got.remote.ip(), IpAddr::V4(A_IP));
}

#[test]
fn a_spoke_outside_the_acl_gets_no_child_sa() {
    // 10.3.0.0/24 behind the hub is outside the line's 10.2.0.0/16: main mode completes (the
    // key is right) but the quick mode is refused, and nothing is installed on either side.
    let mut p = pair(spoke(ts(1, 0, 24), ts(3, 0, 24)));
    p.connect();
    assert_eq!(up(&p.b), 1);
    assert!(p.b.installs.is_empty(), "{:?}", p.b.installs.len());
    assert!(p.a.installs.is_empty(), "{:?}", p.a.installs.len());
}
