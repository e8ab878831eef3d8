//! Multipoint virtual templates (`[virtual_template.X] mode = "multipoint"`), as data: one
//! xfrm interface in collect-metadata mode for the template and, per authenticated spoke, an
//! if_id, its policies and its routes into that one device. No kernel calls here (the
//! runtime's `multipoint` module carries these out through `crate::kernel`).
//!
//! How the kernel runs it (6.1 net/xfrm/xfrm_interface_core.c, collect-metadata mode from
//! 6.0):
//! - **Out:** a route `P dev NAME encap xfrm if_id N` (LWTUNNEL_ENCAP_XFRM) attaches an
//!   lwtstate holding `xfrm_md_info { if_id = N }` to the packets routed by it. `xfrmi_xmit`
//!   on a collect-metadata device reads it (`skb_xfrm_md_info`) and looks the policy up with
//!   that if_id (`fl.flowi_xfrm.if_id`), so spoke N's out policy and SA take the packet; a
//!   packet without metadata is dropped (`tx_err`), so nothing leaves unencrypted.
//! - **In:** `xfrmi_rcv_cb` finds the collect-metadata device for an SA whose if_id no
//!   ordinary xfrm interface has (`xfrmi_lookup` falls back to `collect_md_xfrmi`), sets the
//!   SA's if_id as the packet's metadata and delivers it on the device;
//!   `xfrmi_decode_session` then gives the inbound/forward policy check the SA's if_id, so
//!   spoke N's in and fwd policies match, exactly as on a clone.
//! - Spoke to spoke: a packet in from spoke A (if_id A) is forwarded by the route of spoke
//!   B's prefix, out through the same device with if_id B.
//!
//! So a spoke costs its SAs, its policies and one route per prefix, and no netdev. The device
//! has no if_id itself, and the kernel allows one per network namespace (`xfrmi_newlink`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::model::{Interface, RouteMode};
use crate::plan::{DeviceKind, TemplatePlan};

/// The oldest kernel with collect-metadata xfrm interfaces and LWTUNNEL_ENCAP_XFRM routes
/// (both merged for Linux 6.0).
pub const MIN_KERNEL: (u32, u32) = (6, 0);

/// The device of multipoint template `tp` (named `dev`): up, vtid's group and alias (set by
/// `kernel::create` as for every device), the template's MTU, VRF and unnumbered address,
/// no policies and no routes of its own; IPv6 off unless the template asks for it (a spoke
/// with IPv6 traffic selectors switches it on, `VirtualAccesses::enable_v6`).
pub fn device_interface(tp: &TemplatePlan, dev: &str) -> Interface {
    Interface {
        name: dev.to_owned(),
        kind: DeviceKind::XfrmiExternal,
        if_id: 0,
        local: tp.unnumbered,
        remote: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        mtu: tp.mtu,
        group: xfrm::OWNED_LINK_GROUP,
        vrf: tp.vrf.clone(),
        fvrf: None,
        address: IpNet::from(tp.unnumbered),
        routes: Vec::new(),
        route_mode: RouteMode::Replace,
        line: None,
        disable_ipv6: !tp.carries_v6(),
        qdisc: None,
        policies: Vec::new(),
    }
}

/// The multipoint devices the templates want, by name (every connection of a template
/// shares its template's device).
pub fn devices<'a>(
    templates: impl IntoIterator<Item = &'a TemplatePlan>,
) -> BTreeMap<String, Interface> {
    templates
        .into_iter()
        .filter_map(|tp| {
            let dev = tp.multipoint.as_ref()?;
            Some((dev.clone(), device_interface(tp, dev)))
        })
        .collect()
}

/// Spoke if_id N's IPv6 nexthop object is N + this; its IPv4 one is N itself. Spoke if_ids
/// are `virtual_access::IF_ID_BASE + slot`, so the two bands never meet (asserted there).
pub const V6_NEXTHOP_OFFSET: u32 = 0x0100_0000;

/// The id of spoke `if_id`'s nexthop object of one family (see [`V6_NEXTHOP_OFFSET`]).
pub fn nexthop_id(if_id: u32, v6: bool) -> u32 {
    if v6 { if_id + V6_NEXTHOP_OFFSET } else { if_id }
}

/// The nexthop object spoke `if_id`'s routes of one family name (`nhid`): out of device
/// `dev` with `encap xfrm if_id N`, as vtid's (`xfrm::OWNED_NEXTHOP_PROTOCOL`). Routes that
/// name a nexthop object are hashed apart by its id; plain `encap xfrm` routes on the one
/// device all share one hash chain, which made each new spoke's route cost grow with the
/// number of spokes (see `xfrm`'s nexthop module).
pub fn nexthop(if_id: u32, v6: bool, dev: u32) -> xfrm::NexthopSpec {
    xfrm::NexthopSpec {
        id: nexthop_id(if_id, v6),
        v6,
        dev,
        xfrm_if_id: Some(if_id),
        protocol: xfrm::OWNED_NEXTHOP_PROTOCOL,
    }
}

/// How `show` and `vtid down` name spoke `slot` of device `dev`.
pub fn spoke_name(dev: &str, slot: u32) -> String {
    format!("{dev}:{slot}")
}

/// Whether kernel release `release` (`uname -r`, e.g. `6.1.0-28-amd64`) has collect-metadata
/// xfrm interfaces; an unreadable release is given the benefit of the doubt (creating the
/// device then fails with the kernel's own error).
pub fn kernel_supports(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_KERNEL,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_gate() {
        assert!(kernel_supports("6.1.0-28-amd64"));
        assert!(kernel_supports("6.0.0"));
        assert!(kernel_supports("6.12.12+bpo-amd64"));
        assert!(kernel_supports("10.0"));
        assert!(!kernel_supports("5.19.17"));
        assert!(!kernel_supports("5.10.0-33-amd64"));
        assert!(!kernel_supports("4.19.0"));
        assert!(kernel_supports("weird"));
    }

    #[test]
    fn spoke_names_are_distinct_from_device_and_clone_names() {
        assert_eq!(spoke_name("vtid-mp", 3), "vtid-mp:3");
        // ':' is not in a clone's name (prefix + digits): `vtid down` cannot confuse them.
        assert!(spoke_name("vtid-mp", 3).contains(':'));
    }
}
