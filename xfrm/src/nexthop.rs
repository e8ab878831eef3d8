//! Nexthop objects (`ip nexthop`, Linux 5.3+): one per multipoint spoke and address family,
//! which the spoke's routes then name by id (`ip route add P nhid ID`).
//!
//! Why not plain `encap xfrm` routes: every IPv4 route is backed by a `fib_info`, and the
//! kernel looks for an identical one to share before making a new one (6.1/6.12
//! net/ipv4/fib_semantics.c `fib_find_info`, a walk of one `fib_info_hash` chain comparing
//! each entry, lwtunnel encap included). The chain is picked by `fib_info_hashfn`, which
//! hashes the protocol, scope, preferred source, priority and each nexthop's *device*, but not
//! the encap: so all spokes' routes on the one multipoint device fall in one chain, and adding
//! the Nth spoke's route walks N-1 entries. A route that names a nexthop object is hashed by
//! the nexthop's *id* instead (`fib_info_hashfn`: `fi->nh` → `fib_devindex_hashfn(nh->id)`),
//! which spreads the spokes over the hash. Nexthop objects themselves live in an rb-tree by
//! id (net/ipv4/nexthop.c `insert_nexthop`).
//!
//! rtnetlink's message types have no RTM_NEWNEXTHOP, so these requests are encoded here and
//! go over a NETLINK_ROUTE socket of our own ([`crate::conn`]). Layout from
//! include/uapi/linux/nexthop.h (`struct nhmsg`, `NHA_*`) and include/uapi/linux/lwtunnel.h.

use netlink_packet_core::{
    DefaultNla, Emitable, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NlaBuffer, NlasIterator,
};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::wire::Body;

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;

const NHA_ID: u16 = 1;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_ENCAP_TYPE: u16 = 7;
const NHA_ENCAP: u16 = 8;
/// `NLA_F_NESTED`: the kernel parses NHA_ENCAP strictly (`nla_parse_nested` in the lwtunnel
/// build_state), which refuses a nested attribute without this flag.
const NLA_F_NESTED: u16 = 0x8000;
/// `LWTUNNEL_ENCAP_XFRM` and its `LWT_XFRM_IF_ID` (Linux 6.0+).
const LWTUNNEL_ENCAP_XFRM: u16 = 10;
const LWT_XFRM_IF_ID: u16 = 1;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// A device nexthop with an optional `encap xfrm if_id N`.
///
/// Equivalent to: `ip nexthop add id ID [encap xfrm if_id N] dev DEV proto P` (`-6` for an
/// IPv6 one). IPv6 routes can only name IPv6 nexthops (6.1 `fib6_check_nexthop`), so a spoke
/// with routes of both families has one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NexthopSpec {
    /// The id routes name it by (`nhid`); never 0 (0 asks the kernel to choose).
    pub id: u32,
    /// Address family of the routes that may use it.
    pub v6: bool,
    /// Output device (ifindex). The kernel refuses a device that is down or without carrier.
    pub dev: u32,
    /// `encap xfrm if_id N`: the xfrm metadata a collect-metadata xfrm interface sends with.
    pub xfrm_if_id: Option<u32>,
    /// `proto P` (nhmsg.nh_protocol): whose it is; the kernel only stores it.
    pub protocol: u8,
}

/// A nexthop as a dump reports it (`ip -j nexthop show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NexthopInfo {
    /// NHA_ID.
    pub id: u32,
    /// AF_INET6 (else AF_INET or a group's AF_UNSPEC).
    pub v6: bool,
    /// nhmsg.nh_protocol.
    pub protocol: u8,
    /// NHA_OIF; `None` for a group or a blackhole.
    pub dev: Option<u32>,
    /// LWT_XFRM_IF_ID of an `encap xfrm` nexthop.
    pub xfrm_if_id: Option<u32>,
    /// Whether it has a gateway (NHA_GATEWAY).
    pub gateway: bool,
}

impl NexthopInfo {
    /// Whether `spec` describes this nexthop (what a restart adopts as its own).
    pub fn matches(&self, spec: &NexthopSpec) -> bool {
        self.id == spec.id
            && self.v6 == spec.v6
            && self.protocol == spec.protocol
            && self.dev == Some(spec.dev)
            && self.xfrm_if_id == spec.xfrm_if_id
            && !self.gateway
    }
}

/// `nhmsg` followed by `attrs`, emitted by netlink-packet-core as the XFRM bodies are
/// (`DefaultNla` sets NLA_F_NESTED when the kind carries it).
fn message(family: u8, protocol: u8, attrs: &[DefaultNla]) -> Vec<u8> {
    let mut v = nhmsg(family, protocol);
    let head = v.len();
    v.resize(head + Emitable::buffer_len(&attrs), 0);
    Emitable::emit(&attrs, &mut v[head..]);
    v
}

fn u32_nla(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_ne_bytes().to_vec())
}

fn nhmsg(family: u8, protocol: u8) -> Vec<u8> {
    // struct nhmsg: family, scope (must be 0 in requests), protocol, resvd, u32 flags.
    let mut v = vec![family, 0, protocol, 0];
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

fn body(msg_type: u16, flags: u16, bytes: Vec<u8>, op: &'static str) -> Body {
    Body {
        msg_type,
        flags,
        bytes: Zeroizing::new(bytes),
        op,
    }
}

/// RTM_NEWNEXTHOP for `spec`: `replace` allows an existing id to be overwritten
/// (NLM_F_REPLACE, which keeps the routes that name it); otherwise an existing id fails with
/// EEXIST (NLM_F_EXCL).
pub(crate) fn new_body(spec: &NexthopSpec, replace: bool) -> Result<Body> {
    if spec.id == 0 {
        return Err(Error::InvalidSpec(
            "nexthop id 0 (the kernel would choose one)".into(),
        ));
    }
    let mut attrs = vec![u32_nla(NHA_ID, spec.id), u32_nla(NHA_OIF, spec.dev)];
    if let Some(if_id) = spec.xfrm_if_id {
        if if_id == 0 {
            // 6.1 xfrmi_build_state: "if_id must be non-zero".
            return Err(Error::InvalidSpec("encap xfrm if_id 0".into()));
        }
        let inner: &[DefaultNla] = &[u32_nla(LWT_XFRM_IF_ID, if_id)];
        let mut nested = vec![0; Emitable::buffer_len(&inner)];
        Emitable::emit(&inner, &mut nested);
        attrs.push(DefaultNla::new(
            NHA_ENCAP_TYPE,
            LWTUNNEL_ENCAP_XFRM.to_ne_bytes().to_vec(),
        ));
        attrs.push(DefaultNla::new(NHA_ENCAP | NLA_F_NESTED, nested));
    }
    let v = message(
        if spec.v6 { AF_INET6 } else { AF_INET },
        spec.protocol,
        &attrs,
    );
    let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
    Ok(body(RTM_NEWNEXTHOP, flags, v, "add nexthop"))
}

/// RTM_DELNEXTHOP for `id`. The kernel removes the routes that name it along with it
/// (net/ipv4/nexthop.c `remove_nexthop` → `__remove_nexthop_fib`).
pub(crate) fn del_body(id: u32) -> Body {
    let v = message(0, 0, &[u32_nla(NHA_ID, id)]);
    body(RTM_DELNEXTHOP, 0, v, "delete nexthop")
}

/// RTM_GETNEXTHOP for `id`.
pub(crate) fn get_body(id: u32) -> Body {
    let v = message(0, 0, &[u32_nla(NHA_ID, id)]);
    body(RTM_GETNEXTHOP, 0, v, "get nexthop")
}

/// A dump of the nexthops on device `dev` (NHA_OIF as a dump filter; the header must be
/// all zero, 6.1 `nh_valid_dump_req`).
pub(crate) fn dump_body(dev: u32) -> Body {
    let v = message(0, 0, &[u32_nla(NHA_OIF, dev)]);
    body(RTM_GETNEXTHOP, 0, v, "dump nexthops")
}

/// The attributes of `b` as (kind without flags, value); a malformed one is an error.
fn attrs(b: &[u8]) -> std::result::Result<Vec<(u16, &[u8])>, String> {
    NlasIterator::new(b)
        .map(|nla| {
            let nla: NlaBuffer<&[u8]> = nla.map_err(|e| format!("bad attribute: {e}"))?;
            let (kind, len) = (nla.kind(), nla.value_length());
            // The iterator's buffer runs on to the end; the value is the `len` bytes after
            // this attribute's 4-byte header (new_checked has bounded them).
            Ok((kind, &nla.into_inner()[4..4 + len]))
        })
        .collect()
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// Decodes one RTM_NEWNEXTHOP message of a reply or dump.
pub(crate) fn parse(ty: u16, payload: &[u8]) -> std::result::Result<NexthopInfo, String> {
    if ty != RTM_NEWNEXTHOP {
        return Err(format!("netlink message type {ty} in a nexthop reply"));
    }
    if payload.len() < 8 {
        return Err("short nhmsg".into());
    }
    let mut info = NexthopInfo {
        id: 0,
        v6: payload[0] == AF_INET6,
        protocol: payload[2],
        dev: None,
        xfrm_if_id: None,
        gateway: false,
    };
    let mut encap_type = None;
    for (kind, v) in attrs(&payload[8..])? {
        match kind {
            NHA_ID => info.id = u32_of(v).ok_or("short NHA_ID")?,
            NHA_OIF => info.dev = Some(u32_of(v).ok_or("short NHA_OIF")?),
            NHA_GATEWAY => info.gateway = true,
            NHA_BLACKHOLE => info.dev = None,
            NHA_ENCAP_TYPE => {
                encap_type = v.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
            }
            NHA_ENCAP => {
                info.xfrm_if_id = attrs(v)?
                    .into_iter()
                    .find(|(k, _)| *k == LWT_XFRM_IF_ID)
                    .and_then(|(_, x)| u32_of(x));
            }
            _ => {}
        }
    }
    if encap_type != Some(LWTUNNEL_ENCAP_XFRM) {
        info.xfrm_if_id = None;
    }
    if info.id == 0 {
        return Err("nexthop without NHA_ID".into());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NexthopSpec {
        NexthopSpec {
            id: 0x7660_0003,
            v6: false,
            dev: 7,
            xfrm_if_id: Some(0x7660_0003),
            protocol: 118,
        }
    }

    #[test]
    fn encodes_what_iproute2_sends() {
        let b = new_body(&spec(), false).unwrap();
        assert_eq!(b.msg_type, RTM_NEWNEXTHOP);
        assert_eq!(b.flags, NLM_F_CREATE | NLM_F_EXCL);
        let v = &b.bytes;
        assert_eq!(&v[..4], &[AF_INET, 0, 118, 0]);
        let got: Vec<(u16, Vec<u8>)> = attrs(&v[8..])
            .unwrap()
            .into_iter()
            .map(|(k, x)| (k, x.to_vec()))
            .collect();
        assert_eq!(got[0], (NHA_ID, 0x7660_0003u32.to_ne_bytes().to_vec()));
        assert_eq!(got[1], (NHA_OIF, 7u32.to_ne_bytes().to_vec()));
        assert_eq!(got[2], (NHA_ENCAP_TYPE, 10u16.to_ne_bytes().to_vec()));
        assert_eq!(got[3].0, NHA_ENCAP);
        // The nested flag is on the wire (the iterator masks it off).
        let encap_at = 8 + 8 + 8 + 8;
        let raw_kind = u16::from_ne_bytes([v[encap_at + 2], v[encap_at + 3]]);
        assert_eq!(raw_kind, NHA_ENCAP | NLA_F_NESTED);
        let inner: Vec<_> = attrs(&got[3].1)
            .unwrap()
            .into_iter()
            .map(|(k, x)| (k, x.to_vec()))
            .collect();
        assert_eq!(
            inner,
            vec![(LWT_XFRM_IF_ID, 0x7660_0003u32.to_ne_bytes().to_vec())]
        );
        let r = new_body(&spec(), true).unwrap();
        assert_eq!(r.flags, NLM_F_CREATE | NLM_F_REPLACE);
    }

    #[test]
    fn refuses_ids_the_kernel_would_misread() {
        let mut s = spec();
        s.id = 0;
        assert!(new_body(&s, false).is_err());
        let mut s = spec();
        s.xfrm_if_id = Some(0);
        assert!(new_body(&s, false).is_err());
    }

    #[test]
    fn a_request_decodes_back_to_its_spec() {
        // The kernel's reply carries the same attributes as the request (nh_fill_node).
        for v6 in [false, true] {
            let s = NexthopSpec { v6, ..spec() };
            let b = new_body(&s, false).unwrap();
            let info = parse(RTM_NEWNEXTHOP, &b.bytes).unwrap();
            assert!(info.matches(&s), "{info:?}");
            assert!(!info.matches(&NexthopSpec { protocol: 4, ..s }));
            assert!(!info.matches(&NexthopSpec {
                xfrm_if_id: None,
                ..s
            }));
        }
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        assert!(parse(RTM_NEWNEXTHOP, &[2, 0, 0]).is_err());
        assert!(parse(RTM_NEWNEXTHOP, &[2, 0, 0, 0, 0, 0, 0, 0]).is_err()); // no id
        assert!(parse(24, &[0; 16]).is_err());
        // A truncated attribute ends the walk instead of reading past the buffer.
        let mut v = nhmsg(AF_INET, 118);
        v.extend_from_slice(&[200, 0, 1, 0, 1, 2]);
        assert!(parse(RTM_NEWNEXTHOP, &v).is_err());
        for n in 0..64 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let _ = parse(RTM_NEWNEXTHOP, &bytes);
        }
    }
}
