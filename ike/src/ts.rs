//! Traffic-selector narrowing (RFC 7296 §2.9).

use std::net::IpAddr;
use std::net::Ipv6Addr;

use crate::wire::TrafficSelector;

/// Intersects every selector of `offered` with every one of `allowed`; the result is what the
/// responder may return (§2.9: "narrow the selectors to a subset of what was proposed").
pub fn narrow(offered: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for o in offered {
        for a in allowed {
            if let Some(i) = intersect(o, a) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// True when every selector in `got` lies inside some selector of `offered` (what an initiator
/// checks of the responder's narrowed answer).
pub fn is_subset(got: &[TrafficSelector], offered: &[TrafficSelector]) -> bool {
    got.iter()
        .all(|g| offered.iter().any(|o| intersect(g, o).as_ref() == Some(g)))
}

/// True when `addr` lies in the selector's address range.
pub fn addr_in(addr: IpAddr, ts: &TrafficSelector) -> bool {
    if addr.is_ipv6() != ts.is_v6() {
        return false;
    }
    let a = key(addr);
    key(ts.start) <= a && a <= key(ts.end)
}

/// The intersection of two selectors, if not empty.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    if a.is_v6() != b.is_v6() {
        return None;
    }
    let ip_proto = match (a.ip_proto, b.ip_proto) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    // RFC 7296 §3.13.1: start 65535, end 0 means OPAQUE ports; only equal selectors match.
    if start_port > end_port {
        return (a == b).then_some(*a);
    }
    let start = key(a.start).max(key(b.start));
    let end = key(a.end).min(key(b.end));
    if start > end {
        return None;
    }
    let v6 = a.is_v6();
    Some(TrafficSelector {
        ip_proto,
        start_port,
        end_port,
        start: addr(start, v6),
        end: addr(end, v6),
    })
}

fn key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn addr(k: u128, v6: bool) -> IpAddr {
    match v6 {
        true => IpAddr::V6(Ipv6Addr::from(k)),
        // The key was built from an IPv4 address, so it fits in 32 bits.
        false => IpAddr::V4(std::net::Ipv4Addr::from(k as u32)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn narrows_to_intersection() {
        let offered = [TrafficSelector::any(false)];
        let allowed = [TrafficSelector::prefix(v4(10, 1, 0, 0), 16)];
        let got = narrow(&offered, &allowed);
        assert_eq!(got, allowed.to_vec());
        assert!(is_subset(&got, &offered));
        assert!(!is_subset(&offered, &got));
    }

    #[test]
    fn protocol_and_ports() {
        let mut tcp = TrafficSelector::host(v4(10, 0, 0, 1));
        tcp.ip_proto = 6;
        tcp.start_port = 80;
        tcp.end_port = 80;
        let mut udp = tcp;
        udp.ip_proto = 17;
        assert_eq!(intersect(&tcp, &TrafficSelector::any(false)), Some(tcp));
        assert_eq!(intersect(&tcp, &udp), None);
        assert_eq!(intersect(&tcp, &TrafficSelector::any(true)), None);
    }

    #[test]
    fn disjoint_is_empty() {
        let a = [TrafficSelector::prefix(v4(10, 1, 0, 0), 16)];
        let b = [TrafficSelector::prefix(v4(10, 2, 0, 0), 16)];
        assert!(narrow(&a, &b).is_empty());
        assert!(addr_in(v4(10, 1, 2, 3), &a[0]));
        assert!(!addr_in(v4(10, 2, 2, 3), &a[0]));
    }
}
