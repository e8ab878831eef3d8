//! Tunnel devices created whole: one RTM_NEWLINK that carries everything the kernel applies at
//! creation, so that no device of ours is ever visible without its ownership mark.
//!
//! # What the kernel applies at creation (Debian 6.1, net/core/rtnetlink.c)
//!
//! `__rtnl_newlink` finds no device of that name, so `rtnl_newlink_create` runs:
//! - `rtnl_create_link` allocates the device and, before `register_netdevice`, applies
//!   IFLA_MTU (`dev_validate_mtu`, then `dev->mtu`), IFLA_GROUP (`dev_set_group`), IFLA_TXQLEN,
//!   IFLA_ADDRESS and a few more. **It does not look at IFLA_IFALIAS**, and neither does
//!   anything else on the create path: the attribute passes the `ifla_policy` check and is then
//!   silently dropped (`ip link add NAME alias X type ...` creates a device without an alias;
//!   the same on the host's 6.18). Only `do_setlink` (RTM_SETLINK, or RTM_NEWLINK on an existing
//!   device) calls `dev_set_alias`.
//! - `ops->newlink` (ip_tunnel_newlink / vti6_newlink / xfrmi_newlink) registers it, reading the
//!   kind attributes in IFLA_INFO_DATA. ip_vti, ip6_vti and xfrm_interface keep a user-given MTU
//!   (ip_tunnel_newlink clamps `dev->mtu` when IFLA_MTU is present, vti6_link_config runs with
//!   keep_mtu, xfrmi_dev_setup's default is overwritten by rtnl_create_link).
//! - `rtnl_configure_link` applies `ifi_flags`/`ifi_change` (IFF_UP) with `__dev_change_flags`.
//! - `do_set_master` enslaves to IFLA_MASTER (the VRF); on failure the device is unregistered
//!   again, so the request leaves all or nothing.
//!
//! All of it runs under the RTNL lock, so no other rtnetlink reader sees the device half made.
//!
//! # Hence the sequence
//!
//! The mark that exists from the first instant is the link group [`OWNED_LINK_GROUP`]: every
//! device is created in it. When the spec asks for an alias, or for a final group other than the
//! owned one (dynamic-VTI templates may set one), ONE RTM_SETLINK then sets alias and group
//! together. A kill between the two requests leaves a device in the owned group, which
//! [`is_owned_link`] recognises; after the set-link the alias carries the mark (the spec is
//! refused unless it does). `do_setlink` applies the group before the alias; the alias cannot
//! fail once the netlink policy accepted its length (`dev_set_alias` fails only on ENOMEM),
//! which the spec checks before anything is sent.
//!
//! # The ifindex
//!
//! 6.1's `rtnl_newlink_create` calls `rtnl_configure_link(dev, ifm, 0, NULL)`: the RTM_NEWLINK
//! notification goes to multicast listeners only, so NLM_F_ECHO gets nothing back (later kernels
//! pass the request's portid and header there and echo it), and the ack carries no ifindex.
//! The RTM_GETLINK for the name is therefore sent right behind the RTM_NEWLINK, without waiting
//! for its ack: the kernel handles one socket's requests in order, so it answers after the
//! device exists, and both answers come back in one round trip. The get is a read; when the
//! create failed its answer is dropped. Round trips: one without alias, two with.

use std::net::IpAddr;

use futures::StreamExt;
use rtnetlink::packet_core::DefaultNla;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::link::{GreIOFlags, InfoXfrm};
use rtnetlink::{
    LinkGre, LinkGre6, LinkMessageBuilder, LinkUnspec, LinkVrf, LinkVti, LinkVti6, LinkXfrm,
};

use crate::error::{Error, Result};
use crate::link::{LinkHandle, route_err};
use crate::{OWNED_LINK_GROUP, is_owned_alias};

/// IFLA_XFRM_COLLECT_METADATA (include/uapi/linux/if_link.h, Linux 6.0).
const IFLA_XFRM_COLLECT_METADATA: u16 = 3;

/// The longest alias the kernel takes: the `ifla_policy` length of IFLA_IFALIAS is
/// IFALIASZ - 1 = 255 bytes, and the attribute carries the text with its terminating NUL.
const MAX_ALIAS: usize = 254;

/// True when a link carries one of vtid's ownership marks: an alias starting with
/// [`crate::OWNED_ALIAS_PREFIX`], or the link group [`OWNED_LINK_GROUP`]. A device made by
/// [`LinkHandle::create_tunnel_device`] carries at least one of them at every instant (see the
/// module doc), so the orphan sweep should use this rather than the alias alone.
pub fn is_owned_link(alias: Option<&str>, group: Option<u32>) -> bool {
    is_owned_alias(alias) || group == Some(OWNED_LINK_GROUP)
}

/// The kind-specific part of a tunnel device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// `type xfrm if_id ID [dev UNDERLAY]`. `if_id` must be non-zero (xfrmi_newlink refuses 0).
    Xfrm {
        /// IFLA_XFRM_IF_ID, the id SAs and policies carry.
        if_id: u32,
        /// IFLA_XFRM_LINK, the underlay ifindex used for the outer route lookup.
        underlay: Option<u32>,
    },
    /// `type xfrm external`: an xfrm interface in collect-metadata mode (IFLA_XFRM_COLLECT_METADATA,
    /// Linux 6.0+), the one device of a multipoint hub. It has no if_id of its own: on transmit
    /// `xfrmi_xmit` takes the if_id (and optional underlay link) from the packet's metadata,
    /// which a route with `encap xfrm if_id N` (LWTUNNEL_ENCAP_XFRM) attaches through its
    /// lwtstate; on receive `xfrmi_rcv_cb` sets the SA's if_id as the packet's metadata and
    /// `xfrmi_decode_session` gives the inbound policy check that if_id (6.1
    /// net/xfrm/xfrm_interface_core.c). `xfrmi_newlink` refuses an if_id or link on such a
    /// device and allows one per network namespace (EEXIST for a second).
    XfrmExternal,
    /// `type vti|vti6 local L remote R ikey I okey O [dev UNDERLAY]`; vti6 when the addresses
    /// are IPv6. ip_vti marks decapsulated packets with `ikey` (see [`crate::VtiSpec`]).
    Vti {
        /// IFLA_VTI_LOCAL.
        local: IpAddr,
        /// IFLA_VTI_REMOTE.
        remote: IpAddr,
        /// IFLA_VTI_IKEY, the mark on inbound SAs and policies.
        ikey: u32,
        /// IFLA_VTI_OKEY, the mark on outbound SAs and policies.
        okey: u32,
        /// IFLA_VTI_LINK, the underlay ifindex.
        underlay: Option<u32>,
    },
    /// `type gre|ip6gre local L [remote R] [key K] ttl T [dev UNDERLAY]`; ip6gre when the
    /// addresses are IPv6. Without `remote` the device is multipoint (mGRE): ip_gre then runs
    /// it as an NBMA device whose neighbour table (filled by an NHRP daemon such as FRR's
    /// nhrpd) gives each inner next hop's outer address (net/ipv4/ip_gre.c `ipgre_header`).
    /// GRE is not keyed to any SA: the kernel encapsulates, then the packet meets the SPD as
    /// any locally generated IP protocol 47 packet would.
    Gre {
        /// IFLA_GRE_LOCAL.
        local: IpAddr,
        /// IFLA_GRE_REMOTE; `None` for a multipoint device.
        remote: Option<IpAddr>,
        /// IFLA_GRE_IKEY and IFLA_GRE_OKEY with GRE_KEY in IFLA_GRE_IFLAGS/OFLAGS (RFC 2890
        /// §2.1); `None` sends and accepts unkeyed GRE only.
        key: Option<u32>,
        /// IFLA_GRE_TTL of the outer header (IOS `tunnel ttl`, default 255); 0 would inherit
        /// the inner packet's TTL.
        ttl: u8,
        /// IFLA_GRE_LINK, the underlay ifindex. FRR nhrpd sets this of an mGRE device to its
        /// `tunnel source` interface itself; a caller that also sets it must use the same value.
        underlay: Option<u32>,
    },
    /// `type vrf table T`: not a tunnel, but vtid creates the VRFs its tunnels name, and they
    /// need the same mark from the first instant.
    Vrf {
        /// IFLA_VRF_TABLE.
        table: u32,
    },
}

/// A tunnel device as one creation request.
///
/// Equivalent to: `ip link add NAME [mtu M] group 7654 [master VRF] [up] type xfrm if_id ID
/// [dev UNDERLAY]` (or `type xfrm external`, or `type vti|vti6 local L remote R ikey I okey O
/// [dev UNDERLAY]`, or `type gre|ip6gre local L [remote R] [key K] ttl T [dev UNDERLAY]`),
/// then, when
/// an alias or another group is asked for, `ip link set dev NAME alias TEXT group G` (the
/// kernel ignores `alias` on `ip link add`; see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelDeviceSpec {
    /// Interface name.
    pub name: String,
    /// Kind and kind attributes.
    pub kind: DeviceKind,
    /// MTU; `None` leaves the kind's default.
    pub mtu: Option<u32>,
    /// IFLA_IFALIAS, e.g. `"vtid:T1"`. Set by the follow-up set-link.
    pub alias: Option<String>,
    /// The final link group; `None` is [`OWNED_LINK_GROUP`]. Any other group requires an owned
    /// alias, so that the device keeps a mark.
    pub group: Option<u32>,
    /// Master device (VRF) ifindex.
    pub master: Option<u32>,
    /// Administratively up from creation.
    pub up: bool,
    /// `net.ipv6.conf.NAME.disable_ipv6 = 1` before the device first goes up (see
    /// [`TunnelDeviceSpec::no_ipv6`]).
    pub no_ipv6: bool,
    /// Line protocol kept by the caller (see [`crate::LinkHandle::set_line`]), set by the
    /// follow-up set-link; `None` leaves the kernel's.
    pub line: Option<bool>,
}

impl TunnelDeviceSpec {
    /// An xfrm interface, down, in the owned group, without alias or master.
    pub fn xfrm(name: &str, if_id: u32) -> Self {
        Self::new(
            name,
            DeviceKind::Xfrm {
                if_id,
                underlay: None,
            },
        )
    }

    /// An xfrm interface in collect-metadata mode (see [`DeviceKind::XfrmExternal`]), down, in
    /// the owned group. Equals `ip link add NAME type xfrm external`.
    pub fn xfrm_external(name: &str) -> Self {
        Self::new(name, DeviceKind::XfrmExternal)
    }

    /// A vti (IPv4 addresses) or vti6 (IPv6) device, down, in the owned group.
    pub fn vti(name: &str, local: IpAddr, remote: IpAddr, ikey: u32, okey: u32) -> Self {
        Self::new(
            name,
            DeviceKind::Vti {
                local,
                remote,
                ikey,
                okey,
                underlay: None,
            },
        )
    }

    /// A gre (IPv4 addresses) or ip6gre (IPv6) device, down, in the owned group, TTL 255 (the
    /// IOS default); `remote = None` makes it multipoint. Equals `ip link add NAME type gre
    /// local L [remote R] [key K] ttl 255` (`type ip6gre` for IPv6).
    pub fn gre(name: &str, local: IpAddr, remote: Option<IpAddr>, key: Option<u32>) -> Self {
        Self::new(
            name,
            DeviceKind::Gre {
                local,
                remote,
                key,
                ttl: 255,
                underlay: None,
            },
        )
    }

    /// `ttl T` of a GRE device; other kinds have none.
    pub fn ttl(mut self, t: u8) -> Self {
        if let DeviceKind::Gre { ttl, .. } = &mut self.kind {
            *ttl = t;
        }
        self
    }

    /// A VRF device on `table`, down, in the owned group.
    pub fn vrf(name: &str, table: u32) -> Self {
        Self::new(name, DeviceKind::Vrf { table })
    }

    fn new(name: &str, kind: DeviceKind) -> Self {
        TunnelDeviceSpec {
            name: name.to_string(),
            kind,
            mtu: None,
            alias: None,
            group: None,
            master: None,
            up: false,
            line: None,
            no_ipv6: false,
        }
    }

    /// No IPv6 on the device from its first moment up: created down, IPv6 switched off, then
    /// brought up by the follow-up set-link. A device that comes up with IPv6 on gets a
    /// link-local address and its routes, and the kernel's NETDEV_UP handling
    /// (`addrconf_notify` -> `rt6_sync_up` -> `fib6_clean_all`) walks the namespace's whole
    /// IPv6 FIB: with one device per spoke that is O(N) per device, O(N²) for N spokes.
    /// Setting `disable_ipv6` afterwards is too late for that walk.
    pub fn no_ipv6(mut self) -> Self {
        self.no_ipv6 = true;
        self
    }

    /// `dev UNDERLAY` (IFLA_XFRM_LINK / IFLA_VTI_LINK); a VRF and an external xfrm interface
    /// have none.
    pub fn underlay(mut self, index: u32) -> Self {
        match &mut self.kind {
            DeviceKind::Xfrm { underlay, .. }
            | DeviceKind::Vti { underlay, .. }
            | DeviceKind::Gre { underlay, .. } => *underlay = Some(index),
            // xfrmi_newlink refuses a link on a collect-metadata device.
            DeviceKind::Vrf { .. } | DeviceKind::XfrmExternal => {}
        }
        self
    }

    /// `mtu M`.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// `mode dormant state up|dormant` (set right after creation).
    pub fn line(mut self, up: bool) -> Self {
        self.line = Some(up);
        self
    }

    /// `alias TEXT` (set right after creation).
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
    }

    /// `group G` as the final group.
    pub fn group(mut self, group: u32) -> Self {
        self.group = Some(group);
        self
    }

    /// `master VRF`.
    pub fn master(mut self, index: u32) -> Self {
        self.master = Some(index);
        self
    }

    /// `up`.
    pub fn up(mut self) -> Self {
        self.up = true;
        self
    }

    fn final_group(&self) -> u32 {
        self.group.unwrap_or(OWNED_LINK_GROUP)
    }

    fn check(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidSpec(format!("device {}: {why}", self.name)));
        if self.name.is_empty() || self.name.len() >= 16 {
            return bad("name must have 1 to 15 bytes (IFNAMSIZ)".into());
        }
        match &self.kind {
            DeviceKind::Xfrm { if_id: 0, .. } => {
                return bad("xfrm interface if_id must be non-zero".into());
            }
            DeviceKind::Vti { local, remote, .. } if local.is_ipv4() != remote.is_ipv4() => {
                return bad("vti local/remote families differ".into());
            }
            DeviceKind::Gre {
                local,
                remote: Some(remote),
                ..
            } if local.is_ipv4() != remote.is_ipv4() => {
                return bad("gre local/remote families differ".into());
            }
            _ => {}
        }
        if let Some(a) = &self.alias
            && (a.is_empty() || a.len() > MAX_ALIAS || a.contains('\0'))
        {
            return bad(format!("alias must have 1 to {MAX_ALIAS} bytes and no NUL"));
        }
        if self.final_group() != OWNED_LINK_GROUP && !is_owned_alias(self.alias.as_deref()) {
            return bad(format!(
                "group {} needs an alias starting with {:?}, or the device would carry no \
                 ownership mark",
                self.final_group(),
                crate::OWNED_ALIAS_PREFIX
            ));
        }
        Ok(())
    }

    /// The RTM_NEWLINK body: name, kind attributes, MTU, the owned group, master and up state;
    /// no alias (the kernel would drop it).
    pub(crate) fn newlink_message(&self) -> Result<LinkMessage> {
        self.check()?;
        macro_rules! common {
            ($b:expr) => {{
                let mut b = $b.link_group(OWNED_LINK_GROUP);
                if let Some(m) = self.mtu {
                    b = b.mtu(m);
                }
                if let Some(m) = self.master {
                    b = b.controller(m);
                }
                if self.up && !self.no_ipv6 {
                    b = b.up();
                }
                b.build()
            }};
        }
        // vti and vti6 take the same attributes through builders of different types.
        macro_rules! vti {
            ($builder:ident, $l:expr, $r:expr, $ikey:expr, $okey:expr, $underlay:expr) => {{
                let mut b = $builder::new(&self.name)
                    .local(*$l)
                    .remote(*$r)
                    .ikey(*$ikey)
                    .okey(*$okey);
                if let Some(u) = $underlay {
                    b = b.dev(*u);
                }
                common!(b)
            }};
        }
        Ok(match &self.kind {
            DeviceKind::Xfrm { if_id, underlay } => {
                let mut b = LinkMessageBuilder::<LinkXfrm>::new(&self.name).if_id(*if_id);
                if let Some(u) = underlay {
                    b = b.dev(*u);
                }
                common!(b)
            }
            DeviceKind::XfrmExternal => {
                // IFLA_XFRM_COLLECT_METADATA (include/uapi/linux/if_link.h) is a flag: present
                // and empty. netlink-packet-route 0.34 has no variant for it.
                let b = LinkMessageBuilder::<LinkXfrm>::new(&self.name).append_info_data(
                    InfoXfrm::Other(DefaultNla::new(IFLA_XFRM_COLLECT_METADATA, Vec::new())),
                );
                common!(b)
            }
            DeviceKind::Vti {
                local: IpAddr::V4(l),
                remote: IpAddr::V4(r),
                ikey,
                okey,
                underlay,
            } => vti!(LinkVti, l, r, ikey, okey, underlay),
            DeviceKind::Vti {
                local: IpAddr::V6(l),
                remote: IpAddr::V6(r),
                ikey,
                okey,
                underlay,
            } => vti!(LinkVti6, l, r, ikey, okey, underlay),
            DeviceKind::Gre {
                local,
                remote,
                key,
                ttl,
                underlay,
            } => {
                // gre and ip6gre take the same attributes through builders of different
                // types; the key needs GRE_KEY in both flag words, or ip_gre ignores it.
                macro_rules! gre {
                    ($builder:expr, $l:expr, $r:expr) => {{
                        let mut b = $builder.local($l).ttl(*ttl);
                        if let Some(r) = $r {
                            b = b.remote(r);
                        }
                        if let Some(k) = key {
                            b = b
                                .iflags(GreIOFlags::Key)
                                .oflags(GreIOFlags::Key)
                                .ikey(*k)
                                .okey(*k);
                        }
                        if let Some(u) = underlay {
                            b = b.dev(*u);
                        }
                        common!(b)
                    }};
                }
                match (local, remote) {
                    (IpAddr::V4(l), None) => gre!(LinkGre::new(&self.name), *l, None),
                    (IpAddr::V4(l), Some(IpAddr::V4(r))) => {
                        gre!(LinkGre::new(&self.name), *l, Some(*r))
                    }
                    (IpAddr::V6(l), None) => gre!(LinkGre6::new(&self.name), *l, None),
                    (IpAddr::V6(l), Some(IpAddr::V6(r))) => {
                        gre!(LinkGre6::new(&self.name), *l, Some(*r))
                    }
                    _ => unreachable!("check() refuses mixed families"),
                }
            }
            DeviceKind::Vrf { table } => common!(LinkVrf::new(&self.name, *table)),
            DeviceKind::Vti { .. } => unreachable!("check() refuses mixed families"),
        })
    }

    /// The RTM_NEWLINK request: create, and fail with EEXIST rather than change a device that
    /// already has the name (without NLM_F_EXCL `__rtnl_newlink` would `do_setlink` on it).
    pub(crate) fn newlink_request(&self) -> Result<NetlinkMessage<RouteNetlinkMessage>> {
        Ok(create_request(self.newlink_message()?))
    }

    /// The one RTM_SETLINK after creation (alias and final group together), if any is needed.
    pub(crate) fn setlink_message(&self, index: u32) -> Option<LinkMessage> {
        let up_late = self.up && self.no_ipv6;
        if self.alias.is_none()
            && self.final_group() == OWNED_LINK_GROUP
            && self.line.is_none()
            && !up_late
        {
            return None;
        }
        let mut b = LinkUnspec::new_with_index(index).link_group(self.final_group());
        if let Some(a) = &self.alias {
            b = b.alias(a.clone());
        }
        if up_late {
            b = b.up();
        }
        let mut msg = b.build();
        if let Some(up) = self.line {
            msg.attributes.extend(crate::link::line_attributes(up));
        }
        Some(msg)
    }
}

/// Test hook for the orphan-window scenario: with `XFRM_FAILPOINT=after-newlink` in the
/// environment the process dies (as under `kill -9`) between the RTM_NEWLINK and the
/// RTM_SETLINK that adds the alias, the one moment a device exists with only its group as mark.
fn failpoint_after_newlink() {
    if std::env::var_os("XFRM_FAILPOINT").is_some_and(|v| v == "after-newlink") {
        eprintln!("xfrm: failpoint after-newlink: aborting");
        std::process::abort();
    }
}

fn create_request(msg: LinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    req
}

impl LinkHandle<'_> {
    /// Creates a tunnel device whole and returns its ifindex. See [`TunnelDeviceSpec`] and the
    /// module doc for what one request can and cannot carry: one RTM_NEWLINK plus a pipelined
    /// RTM_GETLINK for the ifindex (one round trip), and one RTM_SETLINK when an alias or a
    /// group other than [`OWNED_LINK_GROUP`] is asked for. If that set-link fails, the device
    /// is deleted again and the error returned.
    pub async fn create_tunnel_device(&self, spec: &TunnelDeviceSpec) -> Result<u32> {
        let create = spec.newlink_request()?;
        let mut knob = Ok(());
        let index = self
            .create_whole(create, &spec.name, |i| {
                if spec.no_ipv6 {
                    knob = self.set_disable_ipv6(&spec.name, true);
                }
                spec.setlink_message(i)
            })
            .await?;
        if let Err(e) = knob {
            if let Err(d) = self.delete(index).await {
                tracing::warn!(device = %spec.name, error = %d, "delete half-made device");
            }
            return Err(e);
        }
        Ok(index)
    }

    /// Sends `create` (an RTM_NEWLINK for `name`) with an RTM_GETLINK for `name` queued right
    /// behind it, then the set-link `mark` returns for the new ifindex, if any; deletes the
    /// device again when that fails.
    async fn create_whole(
        &self,
        create: NetlinkMessage<RouteNetlinkMessage>,
        name: &str,
        mark: impl FnOnce(u32) -> Option<LinkMessage>,
    ) -> Result<u32> {
        const OP: &str = "create tunnel device";
        let mut route = self.counted(2).clone();
        let mut created = route.request(create).map_err(route_err(OP))?;
        // Queued behind the create on the same socket; see the module doc.
        let mut got = route.link().get().match_name(name.to_string()).execute();
        while let Some(m) = created.next().await {
            if let NetlinkPayload::Error(e) = m.payload
                && e.code.is_some()
            {
                return Err(route_err(OP)(rtnetlink::Error::NetlinkError(e)));
            }
        }
        let index = match got.next().await {
            Some(Ok(m)) => m.header.index,
            Some(Err(e)) => return Err(route_err("get created tunnel device")(e)),
            None => return Err(Error::NoSuchLink(name.to_string())),
        };
        failpoint_after_newlink();
        if let Some(msg) = mark(index)
            && let Err(e) = self.set_msg(msg, "mark tunnel device").await
        {
            if let Err(d) = self.delete(index).await {
                tracing::warn!(device = %name, error = %d, "delete half-made device");
            }
            return Err(e);
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, NlaBuffer, NlasIterator};

    // include/uapi/linux/if_link.h
    const IFLA_IFNAME: u16 = 3;
    const IFLA_MTU: u16 = 4;
    const IFLA_MASTER: u16 = 10;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_IFALIAS: u16 = 20;
    const IFLA_GROUP: u16 = 27;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const IFF_UP: u32 = 1;

    /// The message's bytes as the kernel reads them: (ifi_flags, ifi_change, top-level
    /// attributes as (type, value)).
    fn wire(m: &LinkMessage) -> (u32, u32, Vec<(u16, Vec<u8>)>) {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let word = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
        // struct ifinfomsg { u8 family, pad; u16 type; i32 index; u32 flags, change; }
        (word(8), word(12), nlas(&buf[16..]))
    }

    fn nlas(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        NlasIterator::new(b)
            .map(|n| {
                let n: NlaBuffer<&[u8]> = n.unwrap();
                (n.kind(), n.value().to_vec())
            })
            .collect()
    }

    fn attr(a: &[(u16, Vec<u8>)], kind: u16) -> Option<&[u8]> {
        a.iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_slice())
    }

    fn u32_of(v: Option<&[u8]>) -> Option<u32> {
        Some(u32::from_ne_bytes(v?.try_into().ok()?))
    }

    fn info(a: &[(u16, Vec<u8>)]) -> (String, Vec<(u16, Vec<u8>)>) {
        let li = nlas(attr(a, IFLA_LINKINFO).expect("IFLA_LINKINFO"));
        let kind = attr(&li, IFLA_INFO_KIND).expect("IFLA_INFO_KIND");
        let kind = String::from_utf8(kind.split(|b| *b == 0).next().unwrap().to_vec()).unwrap();
        (
            kind,
            nlas(attr(&li, IFLA_INFO_DATA).expect("IFLA_INFO_DATA")),
        )
    }

    #[test]
    fn xfrm_create_carries_everything_but_the_alias() {
        let s = TunnelDeviceSpec::xfrm("ipsec7", 7)
            .underlay(3)
            .mtu(1400)
            .alias("vtid:T7")
            .master(9)
            .up();
        let (flags, change, a) = wire(&s.newlink_message().unwrap());
        assert_eq!(flags & IFF_UP, IFF_UP);
        assert_eq!(change & IFF_UP, IFF_UP);
        assert_eq!(attr(&a, IFLA_IFNAME), Some(&b"ipsec7\0"[..]));
        assert_eq!(u32_of(attr(&a, IFLA_MTU)), Some(1400));
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(OWNED_LINK_GROUP));
        assert_eq!(u32_of(attr(&a, IFLA_MASTER)), Some(9));
        // rtnl_create_link ignores IFLA_IFALIAS: sending it would only mislead.
        assert_eq!(attr(&a, IFLA_IFALIAS), None);
        let (kind, data) = info(&a);
        assert_eq!(kind, "xfrm");
        // IFLA_XFRM_LINK = 1, IFLA_XFRM_IF_ID = 2
        assert_eq!(u32_of(attr(&data, 1)), Some(3));
        assert_eq!(u32_of(attr(&data, 2)), Some(7));

        let req = s.newlink_request().unwrap();
        assert_eq!(
            req.header.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
    }

    #[test]
    fn external_xfrm_device_carries_the_flag_and_no_if_id() {
        let s = TunnelDeviceSpec::xfrm_external("vtid-mp")
            .underlay(3)
            .mtu(1400)
            .alias("vtid:vtid-mp")
            .up();
        let (flags, _, a) = wire(&s.newlink_message().unwrap());
        assert_eq!(flags & IFF_UP, IFF_UP);
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(OWNED_LINK_GROUP));
        let (kind, data) = info(&a);
        assert_eq!(kind, "xfrm");
        // Only IFLA_XFRM_COLLECT_METADATA (3), empty: xfrmi_newlink refuses a link or an if_id
        // with it, so `underlay` is ignored.
        assert_eq!(data, vec![(3, Vec::new())]);
        assert!(s.setlink_message(5).is_some(), "the alias follows");
    }

    #[test]
    fn no_ipv6_device_comes_up_by_the_set_link() {
        let s = TunnelDeviceSpec::xfrm("ipsec9", 9).up().no_ipv6();
        let (flags, change, _) = wire(&s.newlink_message().unwrap());
        assert_eq!((flags & IFF_UP, change & IFF_UP), (0, 0), "created down");
        let set = s.setlink_message(5).expect("a set-link brings it up");
        let (flags, change, a) = wire(&set);
        assert_eq!((flags & IFF_UP, change & IFF_UP), (IFF_UP, IFF_UP));
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(OWNED_LINK_GROUP));
        // Without `up` there is nothing to do after creation.
        assert_eq!(
            TunnelDeviceSpec::xfrm("ipsec9", 9)
                .no_ipv6()
                .setlink_message(5),
            None
        );
    }

    #[test]
    fn down_device_without_master_or_mtu() {
        let s = TunnelDeviceSpec::xfrm("ipsec8", 8);
        let (flags, change, a) = wire(&s.newlink_message().unwrap());
        assert_eq!((flags, change), (0, 0), "no flag change asked for");
        assert_eq!(attr(&a, IFLA_MTU), None);
        assert_eq!(attr(&a, IFLA_MASTER), None);
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(OWNED_LINK_GROUP));
        let (_, data) = info(&a);
        assert_eq!(attr(&data, 1), None, "no underlay");
        assert_eq!(s.setlink_message(5), None, "nothing to set after creation");
    }

    #[test]
    fn vti_and_vti6_kind_attributes() {
        // IFLA_VTI_LINK 1, IKEY 2, OKEY 3, LOCAL 4, REMOTE 5 (include/uapi/linux/if_tunnel.h);
        // keys are big-endian on the wire.
        let v4 = TunnelDeviceSpec::vti(
            "vti4",
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            0x10,
            0x20,
        )
        .underlay(4)
        .up();
        let (_, _, a) = wire(&v4.newlink_message().unwrap());
        let (kind, d) = info(&a);
        assert_eq!(kind, "vti");
        assert_eq!(u32_of(attr(&d, 1)), Some(4));
        assert_eq!(attr(&d, 2), Some(&0x10u32.to_be_bytes()[..]));
        assert_eq!(attr(&d, 3), Some(&0x20u32.to_be_bytes()[..]));
        assert_eq!(attr(&d, 4), Some(&[192, 0, 2, 1][..]));
        assert_eq!(attr(&d, 5), Some(&[192, 0, 2, 2][..]));
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(OWNED_LINK_GROUP));

        let v6 = TunnelDeviceSpec::vti(
            "vti6x",
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            1,
            2,
        );
        let (_, _, a) = wire(&v6.newlink_message().unwrap());
        let (kind, d) = info(&a);
        assert_eq!(kind, "vti6");
        assert_eq!(attr(&d, 4).map(<[u8]>::len), Some(16));
    }

    #[test]
    fn gre_and_ip6gre_kind_attributes() {
        // include/uapi/linux/if_tunnel.h: IFLA_GRE_LINK 1, IFLAGS 2, OFLAGS 3, IKEY 4, OKEY 5,
        // LOCAL 6, REMOTE 7, TTL 8. Flags and keys are big-endian; GRE_KEY is 0x2000.
        let p2p = TunnelDeviceSpec::gre(
            "gre1",
            "192.0.2.1".parse().unwrap(),
            Some("192.0.2.2".parse().unwrap()),
            Some(0x0001_86a0),
        )
        .ttl(64)
        .underlay(4)
        .mtu(1400)
        .up();
        let (_, _, a) = wire(&p2p.newlink_message().unwrap());
        let (kind, d) = info(&a);
        assert_eq!(kind, "gre");
        assert_eq!(u32_of(attr(&d, 1)), Some(4));
        assert_eq!(attr(&d, 2), Some(&0x2000u16.to_be_bytes()[..]));
        assert_eq!(attr(&d, 3), Some(&0x2000u16.to_be_bytes()[..]));
        assert_eq!(attr(&d, 4), Some(&100_000u32.to_be_bytes()[..]));
        assert_eq!(attr(&d, 5), Some(&100_000u32.to_be_bytes()[..]));
        assert_eq!(attr(&d, 6), Some(&[192, 0, 2, 1][..]));
        assert_eq!(attr(&d, 7), Some(&[192, 0, 2, 2][..]));
        assert_eq!(attr(&d, 8), Some(&[64][..]));
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(OWNED_LINK_GROUP));
        assert_eq!(u32_of(attr(&a, IFLA_MTU)), Some(1400));

        // Multipoint, unkeyed: no remote (ip_gre runs it NBMA), no key or key flags, the IOS
        // default TTL.
        let mgre = TunnelDeviceSpec::gre("mgre0", "192.0.2.1".parse().unwrap(), None, None);
        let (_, _, a) = wire(&mgre.newlink_message().unwrap());
        let (kind, d) = info(&a);
        assert_eq!(kind, "gre");
        for absent in [1, 2, 3, 4, 5, 7] {
            assert_eq!(attr(&d, absent), None, "attribute {absent}");
        }
        assert_eq!(attr(&d, 8), Some(&[255][..]));

        let v6 = TunnelDeviceSpec::gre(
            "gre6x",
            "2001:db8::1".parse().unwrap(),
            Some("2001:db8::2".parse().unwrap()),
            Some(7),
        );
        let (_, _, a) = wire(&v6.newlink_message().unwrap());
        let (kind, d) = info(&a);
        assert_eq!(kind, "ip6gre");
        assert_eq!(attr(&d, 6).map(<[u8]>::len), Some(16));
        assert_eq!(attr(&d, 7).map(<[u8]>::len), Some(16));
        assert_eq!(attr(&d, 4), Some(&7u32.to_be_bytes()[..]));

        let mixed = TunnelDeviceSpec::gre(
            "gre2",
            "192.0.2.1".parse().unwrap(),
            Some("2001:db8::2".parse().unwrap()),
            None,
        );
        assert!(matches!(
            mixed.newlink_message(),
            Err(Error::InvalidSpec(_))
        ));
    }

    /// What the sweep and `show` read back from a GRE device: the kernel reports an unset
    /// remote as 0.0.0.0 (a multipoint device) and the key only with GRE_KEY in the flags.
    #[test]
    fn gre_devices_read_back() {
        use rtnetlink::packet_core::Parseable;
        let reparse = |s: &TunnelDeviceSpec| {
            let m = s.newlink_message().unwrap();
            let mut buf = vec![0u8; m.buffer_len()];
            m.emit(&mut buf);
            crate::link::link_info(&LinkMessage::parse(&buf[..]).unwrap())
        };
        let li = reparse(
            &TunnelDeviceSpec::gre(
                "gre1",
                "192.0.2.1".parse().unwrap(),
                Some("192.0.2.2".parse().unwrap()),
                Some(42),
            )
            .ttl(9)
            .underlay(3),
        );
        assert_eq!(li.kind.as_deref(), Some("gre"));
        assert_eq!(li.group, Some(OWNED_LINK_GROUP));
        assert_eq!(
            li.gre,
            Some(crate::GreInfo {
                local: Some("192.0.2.1".parse().unwrap()),
                remote: Some("192.0.2.2".parse().unwrap()),
                key: Some(42),
                ttl: 9,
                underlay: 3,
            })
        );
        let mut m = TunnelDeviceSpec::gre("mgre0", "192.0.2.1".parse().unwrap(), None, None)
            .newlink_message()
            .unwrap();
        // As the kernel dumps it: REMOTE present and all zero, OKEY 0 without the flag.
        use rtnetlink::packet_route::link::{InfoData, InfoGre, LinkAttribute, LinkInfo};
        for a in &mut m.attributes {
            if let LinkAttribute::LinkInfo(infos) = a {
                for i in infos {
                    if let LinkInfo::Data(InfoData::GreTun(v)) = i {
                        v.push(InfoGre::Remote(std::net::Ipv4Addr::UNSPECIFIED));
                        v.push(InfoGre::OKey(0));
                    }
                }
            }
        }
        let li = crate::link::link_info(&m);
        let g = li.gre.expect("gre info");
        assert_eq!((g.remote, g.key, g.ttl), (None, None, 255));
        assert_eq!(g.local, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn alias_and_final_group_in_one_setlink() {
        let s = TunnelDeviceSpec::xfrm("ipsec9", 9)
            .alias("vtid:hub")
            .group(42);
        // Created in the owned group whatever the final group is.
        let (_, _, a) = wire(&s.newlink_message().unwrap());
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(OWNED_LINK_GROUP));
        let set = s.setlink_message(77).expect("a set-link");
        assert_eq!(set.header.index, 77);
        let (_, _, a) = wire(&set);
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(42));
        assert_eq!(attr(&a, IFLA_IFALIAS), Some(&b"vtid:hub\0"[..]));
        assert_eq!(attr(&a, IFLA_LINKINFO), None, "no kind change");
        // Only an alias: the group stays the owned one.
        let s = TunnelDeviceSpec::xfrm("ipsec9", 9).alias("vtid:x");
        let (_, _, a) = wire(&s.setlink_message(1).unwrap());
        assert_eq!(u32_of(attr(&a, IFLA_GROUP)), Some(OWNED_LINK_GROUP));
    }

    #[test]
    fn specs_that_would_lose_the_mark_or_cannot_exist_are_refused() {
        let bad = [
            TunnelDeviceSpec::xfrm("ipsec1", 1).group(42),
            TunnelDeviceSpec::xfrm("ipsec1", 1).group(42).alias("other"),
            TunnelDeviceSpec::xfrm("ipsec1", 0),
            TunnelDeviceSpec::xfrm("a-name-of-16-chr", 1),
            TunnelDeviceSpec::xfrm("ipsec1", 1).alias("x".repeat(255)),
            TunnelDeviceSpec::vti(
                "vti1",
                "192.0.2.1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
                1,
                1,
            ),
        ];
        for s in bad {
            assert!(
                matches!(s.newlink_message(), Err(Error::InvalidSpec(_))),
                "{s:?}"
            );
        }
        assert!(
            TunnelDeviceSpec::xfrm("ipsec1", 1)
                .alias("x".repeat(254))
                .newlink_message()
                .is_ok()
        );
    }

    /// The create/get/mark sequence on the host kernel, with a veth (the host has no
    /// xfrm_interface or ip_vti; `vm_kernel.rs` covers those): the ifindex comes from the
    /// pipelined get, the mark from one set-link; a failed create runs no mark, a failed mark
    /// removes the device.
    #[test]
    fn host_create_whole_sequence_with_veth() {
        use crate::{Handle, Netns};
        use rtnetlink::LinkVeth;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = Handle::open(Netns::Current).unwrap();
            let l = h.link();
            let veth = || {
                create_request(
                    LinkVeth::new("cw0", "cw1")
                        .mtu(1400)
                        .link_group(OWNED_LINK_GROUP)
                        .up()
                        .build(),
                )
            };
            let before = h.requests();
            let idx = l
                .create_whole(veth(), "cw0", |i| {
                    Some(
                        LinkUnspec::new_with_index(i)
                            .link_group(42)
                            .alias("vtid:cw")
                            .build(),
                    )
                })
                .await
                .unwrap();
            assert_eq!(h.requests() - before, 3, "create, get, set-link");
            let info = l.get("cw0").await.unwrap();
            assert_eq!(info.index, idx);
            assert_eq!(info.mtu, Some(1400));
            assert_eq!(info.group, Some(42));
            assert_eq!(info.alias.as_deref(), Some("vtid:cw"));
            assert!(info.up);

            let e = l
                .create_whole(veth(), "cw0", |_| panic!("marked after a failed create"))
                .await
                .unwrap_err();
            assert!(e.is_exists(), "{e:?}");
            assert_eq!(l.get("cw0").await.unwrap().group, Some(42), "untouched");
            l.delete(idx).await.unwrap();

            let e = l
                .create_whole(veth(), "cw0", |i| {
                    Some(LinkUnspec::new_with_index(i).controller(999_999).build())
                })
                .await
                .unwrap_err();
            assert!(e.errno().is_some(), "{e:?}");
            assert!(
                matches!(l.get("cw0").await, Err(Error::NoSuchLink(_))),
                "half-made device removed"
            );
        });
    }

    #[test]
    fn owned_link_by_alias_or_group() {
        assert!(is_owned_link(None, Some(OWNED_LINK_GROUP)));
        assert!(is_owned_link(Some("vtid:T1"), Some(42)));
        assert!(!is_owned_link(Some("uplink"), Some(0)));
        assert!(!is_owned_link(None, None));
    }
}
