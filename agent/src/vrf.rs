//! VRF-aware IPsec (the seeds' "VRF-aware IPsec"): Linux VRF devices (l3mdev) stand for
//! Cisco VRFs.
//!
//! - **Inside VRF** (`vrf = "NAME"` on a tunnel or template): the tunnel interface is
//!   enslaved to the VRF device and its routes go in the VRF's table, so cleartext of
//!   different customers stays apart even with overlapping prefixes.
//! - **Front-door VRF** (`fvrf = "NAME"` on a tunnel or IKE profile): the underlay lives in the
//!   VRF. IKE uses sockets bound to the VRF device (SO_BINDTODEVICE: an unbound socket does not
//!   receive datagrams that arrived on a VRF slave unless net.ipv4.udp_l3mdev_accept=1,
//!   net/ipv4/udp.c compute_score), and the tunnel device's underlay link is the VRF device,
//!   which xfrm interfaces and ip_vti use as the output interface of the outer route lookup
//!   (xfrmi_xmit sets flowi_oif to the link; the l3mdev rule then picks the VRF's table).
//!   SAs are not per table: the kernel finds inbound SAs by (daddr, SPI) in the namespace.
//!
//! vtid creates a VRF device that does not exist yet (marked as its own: alias `vtid:vrf
//! NAME`, group 7654, swept at shutdown) and uses an existing one as it is, after checking it
//! is a VRF on the configured table: a front-door VRF usually exists before vtid starts, with
//! the operator's uplinks enslaved to it.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use xfrm::Handle;

/// A VRF as the plan uses it: configuration loading resolves every `vrf`/`fvrf` reference
/// into its device name and table.
pub use crate::config::VrfRef as VrfPlan;

/// Makes sure the VRF device exists on the right table and is up; returns its ifindex.
///
/// Equivalent to `ip link add NAME group 7654 up type vrf table T && ip link set NAME alias
/// "vtid:vrf NAME"` when it is missing, else a check of `ip -d link show NAME`.
pub async fn ensure(h: &Handle, v: &VrfPlan) -> Result<u32> {
    let link = h.link();
    match link.get(&v.name).await {
        Ok(l) => {
            if l.kind.as_deref() != Some("vrf") {
                bail!(
                    "vrf {}: an interface of that name exists but is a {} device, not a VRF",
                    v.name,
                    l.kind.as_deref().unwrap_or("plain")
                );
            }
            let table = l.vrf_table;
            if table != Some(v.table) {
                bail!(
                    "vrf {}: the existing VRF device uses table {}, the configuration says {}",
                    v.name,
                    table.map_or("?".into(), |t| t.to_string()),
                    v.table
                );
            }
            if !l.up {
                link.set_up(l.index).await?;
            }
            Ok(l.index)
        }
        // Created whole, like tunnel devices: in the owned group from the first instant, so a
        // crash before its alias is set still leaves it recognisable to the sweep.
        Err(_) => link
            .create_tunnel_device(
                &xfrm::TunnelDeviceSpec::vrf(&v.name, v.table)
                    .alias(format!("{}vrf {}", xfrm::OWNED_ALIAS_PREFIX, v.name))
                    .up(),
            )
            .await
            .with_context(|| format!("create vrf {} (table {})", v.name, v.table)),
    }
}

/// The front-door VRF of each local IKE address, for choosing the socket to send from.
pub fn fvrf_of_local<'a>(
    tunnels: impl Iterator<Item = (IpAddr, Option<&'a VrfPlan>)>,
) -> std::collections::HashMap<IpAddr, String> {
    tunnels
        .filter_map(|(a, v)| v.map(|v| (a, v.name.clone())))
        .collect()
}
