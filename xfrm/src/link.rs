//! Tunnel and helper devices, addresses, routes and per-interface sysctls (NETLINK_ROUTE via
//! rtnetlink, plus `/proc/sys` written from inside the target namespace).

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use ipnet::IpNet;
use nix::errno::Errno;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{NlaBuffer, NlasIterator};
use rtnetlink::packet_route::link::{
    GreIOFlags, InfoData, InfoGre, InfoGre6, InfoVrf, LinkAttribute, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVrf, LinkVti, LinkVti6, LinkXfrm};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// Maps an rtnetlink error to ours, keeping errno and the extended ack. The route socket is
/// opened with NETLINK_CAP_ACK + NETLINK_EXT_ACK, so the error payload is the 16-byte echoed
/// header followed by the ack TLVs.
pub(crate) fn route_err(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |e| match e {
        rtnetlink::Error::NetlinkError(m) => {
            let errno = Errno::from_raw(-m.raw_code());
            let ext_ack = m.header.get(16..).and_then(|tlvs| {
                NlasIterator::new(tlvs).find_map(|n| {
                    let n: NlaBuffer<&[u8]> = n.ok()?;
                    (n.kind() == 1).then(|| {
                        let v = n.value();
                        let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                        String::from_utf8_lossy(&v[..end]).into_owned()
                    })
                })
            });
            Error::from_errno(op, errno, ext_ack)
        }
        other => Error::Decode {
            op,
            detail: other.to_string(),
        },
    }
}

/// A route-based VPN interface of kind `vti` (IPv4) or `vti6` (IPv6).
///
/// Equivalent to: `ip link add NAME type vti|vti6 local L remote R ikey I okey O [dev UNDERLAY]`.
/// ip_vti marks decapsulated packets with `ikey` before the inbound policy check, so the
/// inbound SA and IN/FWD policies must carry mark = ikey, and outbound ones mark = okey. Set
/// `disable_policy=1` on the device (see [`LinkHandle::set_disable_policy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtiSpec {
    /// Interface name.
    pub name: String,
    /// Local tunnel address.
    pub local: IpAddr,
    /// Remote tunnel address.
    pub remote: IpAddr,
    /// Input key (mark on inbound SAs/policies).
    pub ikey: u32,
    /// Output key (mark on outbound SAs/policies).
    pub okey: u32,
    /// Underlay interface index.
    pub underlay: Option<u32>,
}

/// An xfrm interface.
///
/// Equivalent to: `ip link add NAME type xfrm if_id ID [dev UNDERLAY]`. `if_id` must be
/// non-zero (xfrmi_newlink rejects 0); SAs and policies carry the same `if_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfrmiSpec {
    /// Interface name.
    pub name: String,
    /// Interface id.
    pub if_id: u32,
    /// Underlay interface index (`dev`), used for the outer route lookup.
    pub underlay: Option<u32>,
}

/// A route.
///
/// Equivalent to: `ip route add DST [via GW] [dev DEV] [src SRC] [metric M] [table T] [encap
/// xfrm if_id N]`, or with a nexthop object `ip route add DST nhid ID [metric M] [table T]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix.
    pub dst: IpNet,
    /// Output interface index.
    pub dev: Option<u32>,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// Metric (priority).
    pub metric: Option<u32>,
    /// Table id (254 = main).
    pub table: u32,
    /// `encap xfrm if_id N`: a lightweight-tunnel encap (LWTUNNEL_ENCAP_XFRM) that gives
    /// packets routed here the xfrm metadata a collect-metadata xfrm interface sends with
    /// (see [`crate::DeviceKind::XfrmExternal`]).
    pub xfrm_if_id: Option<u32>,
    /// `nhid ID`: the route's next hop is nexthop object ID (see [`crate::NexthopSpec`]);
    /// device, gateway and encap then come from it, and `dev`, `gateway` and `xfrm_if_id`
    /// are not sent (the kernel refuses a route with both, 6.1 `fib_create_info`).
    pub nexthop: Option<u32>,
}

impl RouteSpec {
    /// A route to `dst` out of interface `dev` in the main table.
    pub fn dev(dst: IpNet, dev: u32) -> Self {
        RouteSpec {
            dst,
            dev: Some(dev),
            gateway: None,
            src: None,
            metric: None,
            table: 254,
            xfrm_if_id: None,
            nexthop: None,
        }
    }

    /// A route to `dst` through nexthop object `id` in the main table.
    pub fn nexthop(dst: IpNet, id: u32) -> Self {
        RouteSpec {
            dev: None,
            nexthop: Some(id),
            ..RouteSpec::dev(dst, 0)
        }
    }

    /// `encap xfrm if_id N`. The kernel (6.1 net/xfrm/xfrm_interface_core.c
    /// `xfrmi_build_state`) requires a non-zero if_id; LWT_XFRM_LINK is left out, so the
    /// outer lookup uses the SA's addresses in the default table.
    pub fn xfrm_if_id(mut self, if_id: u32) -> Self {
        self.xfrm_if_id = Some(if_id);
        self
    }

    /// `table T`.
    pub fn table(mut self, t: u32) -> Self {
        self.table = t;
        self
    }

    /// `src SRC`.
    pub fn src(mut self, a: IpAddr) -> Self {
        self.src = Some(a);
        self
    }

    /// `via GW`.
    pub fn gateway(mut self, a: IpAddr) -> Self {
        self.gateway = Some(a);
        self
    }

    /// `metric M`.
    pub fn metric(mut self, m: u32) -> Self {
        self.metric = Some(m);
        self
    }
}

/// What `ip link show` tells about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `info_kind` (vti, xfrm, vrf, veth, ...), if any.
    pub kind: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: Option<u32>,
    /// Interface group.
    pub group: Option<u32>,
    /// IFLA_IFALIAS.
    pub alias: Option<String>,
    /// Master (VRF/bridge) ifindex.
    pub master: Option<u32>,
    /// The routing table of a VRF device (IFLA_VRF_TABLE).
    pub vrf_table: Option<u32>,
    /// The tunnel attributes of a gre/ip6gre device.
    pub gre: Option<GreInfo>,
}

/// What a gre/ip6gre device's IFLA_INFO_DATA says (`ip -d link show`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GreInfo {
    /// IFLA_GRE_LOCAL; `None` when unspecified.
    pub local: Option<IpAddr>,
    /// IFLA_GRE_REMOTE; `None` when unspecified (a multipoint device).
    pub remote: Option<IpAddr>,
    /// IFLA_GRE_OKEY when GRE_KEY is in IFLA_GRE_OFLAGS.
    pub key: Option<u32>,
    /// IFLA_GRE_TTL (0: inherit).
    pub ttl: u8,
    /// IFLA_GRE_LINK (0: none).
    pub underlay: u32,
}

/// The kernel reports an unset GRE endpoint as the unspecified address.
fn specified(a: IpAddr) -> Option<IpAddr> {
    (!a.is_unspecified()).then_some(a)
}

fn gre_info(v4: &[InfoGre], v6: &[InfoGre6]) -> GreInfo {
    let mut g = GreInfo::default();
    let mut keyed = false;
    let mut okey = None;
    for a in v4 {
        match a {
            InfoGre::Local(l) => g.local = specified((*l).into()),
            InfoGre::Remote(r) => g.remote = specified((*r).into()),
            InfoGre::OFlags(f) => keyed = f.contains(GreIOFlags::Key),
            InfoGre::OKey(k) => okey = Some(*k),
            InfoGre::Ttl(t) => g.ttl = *t,
            InfoGre::Link(l) => g.underlay = *l,
            _ => {}
        }
    }
    for a in v6 {
        match a {
            InfoGre6::Local(l) => g.local = specified((*l).into()),
            InfoGre6::Remote(r) => g.remote = specified((*r).into()),
            InfoGre6::OFlags(f) => keyed = f.contains(GreIOFlags::Key),
            InfoGre6::OKey(k) => okey = Some(*k),
            InfoGre6::Ttl(t) => g.ttl = *t,
            InfoGre6::Link(l) => g.underlay = *l,
            _ => {}
        }
    }
    g.key = okey.filter(|_| keyed);
    g
}

pub(crate) fn link_info(m: &LinkMessage) -> LinkInfo {
    let mut li = LinkInfo {
        index: m.header.index,
        name: String::new(),
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mtu: None,
        group: None,
        alias: None,
        master: None,
        vrf_table: None,
        gre: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => li.name = n.clone(),
            LinkAttribute::Mtu(v) => li.mtu = Some(*v),
            LinkAttribute::Group(v) => li.group = Some(*v),
            LinkAttribute::IfAlias(v) => li.alias = Some(v.clone()),
            LinkAttribute::Controller(v) => li.master = Some(*v),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(k) => li.kind = Some(k.to_string()),
                        NlLinkInfo::Data(InfoData::GreTun(v)) => li.gre = Some(gre_info(v, &[])),
                        NlLinkInfo::Data(InfoData::GreTun6(v)) => li.gre = Some(gre_info(&[], v)),
                        NlLinkInfo::Data(InfoData::Vrf(v)) => {
                            for a in v {
                                if let InfoVrf::TableId(t) = a {
                                    li.vrf_table = Some(*t);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    li
}

fn inval(e: impl std::fmt::Display) -> Error {
    Error::InvalidSpec(e.to_string())
}

/// Link, address, route and sysctl operations. Obtained from [`crate::Handle::link`].
pub struct LinkHandle<'a> {
    route: &'a rtnetlink::Handle,
    netns: &'a Netns,
    requests: &'a AtomicU64,
    pub(crate) ethtool: &'a OwnedFd,
}

impl<'a> LinkHandle<'a> {
    pub(crate) fn new(
        route: &'a rtnetlink::Handle,
        netns: &'a Netns,
        requests: &'a AtomicU64,
        ethtool: &'a OwnedFd,
    ) -> Self {
        LinkHandle {
            route,
            netns,
            requests,
            ethtool,
        }
    }

    /// The route socket, for `n` requests about to be sent (see [`crate::Handle::requests`]).
    pub(crate) fn counted(&self, n: u64) -> &'a rtnetlink::Handle {
        self.requests.fetch_add(n, Ordering::Relaxed);
        self.route
    }

    /// The route socket, for one request about to be sent.
    fn nl(&self) -> &'a rtnetlink::Handle {
        self.counted(1)
    }

    async fn add_msg(&self, msg: LinkMessage) -> Result<()> {
        self.nl()
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(route_err("add link"))
    }

    pub(crate) async fn set_msg(&self, msg: LinkMessage, op: &'static str) -> Result<()> {
        self.nl()
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(route_err(op))
    }

    /// Lists all interfaces. Equivalent to: `ip link show`.
    pub async fn list(&self) -> Result<Vec<LinkInfo>> {
        let mut s = self.nl().link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(route_err("list links"))? {
            out.push(link_info(&m));
        }
        Ok(out)
    }

    /// One interface by name. Equivalent to: `ip link show dev NAME`.
    pub async fn get(&self, name: &str) -> Result<LinkInfo> {
        let mut s = self
            .nl()
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(link_info(&m)),
            Ok(None) => Err(Error::NoSuchLink(name.to_string())),
            Err(e) => match route_err("get link")(e) {
                Error::NotFound { .. } => Err(Error::NoSuchLink(name.to_string())),
                Error::Kernel {
                    errno: Errno::ENODEV,
                    ..
                } => Err(Error::NoSuchLink(name.to_string())),
                other => Err(other),
            },
        }
    }

    /// ifindex of `name`.
    pub async fn index_of(&self, name: &str) -> Result<u32> {
        Ok(self.get(name).await?.index)
    }

    /// Creates an `ip_vti`/`ip6_vti` device (down). See [`VtiSpec`].
    pub async fn add_vti(&self, v: &VtiSpec) -> Result<()> {
        let msg = match (v.local, v.remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => {
                let mut b = LinkVti::new(&v.name)
                    .local(l)
                    .remote(r)
                    .ikey(v.ikey)
                    .okey(v.okey);
                if let Some(u) = v.underlay {
                    b = b.dev(u);
                }
                b.build()
            }
            (IpAddr::V6(l), IpAddr::V6(r)) => {
                let mut b = LinkVti6::new(&v.name)
                    .local(l)
                    .remote(r)
                    .ikey(v.ikey)
                    .okey(v.okey);
                if let Some(u) = v.underlay {
                    b = b.dev(u);
                }
                b.build()
            }
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "vti {}: local/remote families differ",
                    v.name
                )));
            }
        };
        self.add_msg(msg).await
    }

    /// Creates an xfrm interface (down). See [`XfrmiSpec`].
    pub async fn add_xfrmi(&self, x: &XfrmiSpec) -> Result<()> {
        if x.if_id == 0 {
            return Err(Error::InvalidSpec(
                "xfrm interface if_id must be non-zero".into(),
            ));
        }
        let mut b = LinkMessageBuilder::<LinkXfrm>::new(&x.name).if_id(x.if_id);
        if let Some(u) = x.underlay {
            b = b.dev(u);
        }
        self.add_msg(b.build()).await
    }

    /// Creates a VRF device. Equivalent to: `ip link add NAME type vrf table T`.
    pub async fn add_vrf(&self, name: &str, table: u32) -> Result<()> {
        self.add_msg(LinkVrf::new(name, table).build()).await
    }

    /// Creates a veth pair. Equivalent to: `ip link add NAME type veth peer name PEER`.
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.add_msg(LinkVeth::new(name, peer).build()).await
    }

    /// Deletes an interface. Equivalent to: `ip link del dev NAME`.
    pub async fn delete(&self, index: u32) -> Result<()> {
        self.nl()
            .link()
            .del(index)
            .execute()
            .await
            .map_err(route_err("delete link"))
    }

    /// Equivalent to: `ip link set dev X up`.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.set_msg(
            LinkUnspec::new_with_index(index).up().build(),
            "set link up",
        )
        .await
    }

    /// Equivalent to: `ip link set dev X down`.
    pub async fn set_down(&self, index: u32) -> Result<()> {
        self.set_msg(
            LinkUnspec::new_with_index(index).down().build(),
            "set link down",
        )
        .await
    }

    /// A tunnel's line protocol. Equivalent to: `ip link set dev X mode dormant state up`
    /// (`line_up`) or `... state dormant`.
    ///
    /// ip_vti and xfrm interfaces have no carrier of their own: the kernel refuses both
    /// `carrier off` (no ndo_change_carrier: EOPNOTSUPP) and `protodown on` (6.1, measured).
    /// RFC 2863's DORMANT operstate is what is left to userspace: with link mode DORMANT
    /// `rfc2863_policy` keeps the device dormant until told otherwise, and a dormant device
    /// loses IFF_RUNNING (`dev_get_flags`), which `ip link` shows as NO-CARRIER and routing
    /// daemons read as the interface being down. The FIB does not look at operstate, so the
    /// caller withdraws the routes itself.
    pub async fn set_line(&self, index: u32, line_up: bool) -> Result<()> {
        let mut msg = LinkUnspec::new_with_index(index).build();
        msg.attributes.extend(line_attributes(line_up));
        self.set_msg(msg, "set line state").await
    }

    /// Equivalent to: `ip link set dev X mtu M`.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set_msg(
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
            "set mtu",
        )
        .await
    }

    /// Equivalent to: `ip link set dev X group G` (see the crate docs on ownership marking).
    pub async fn set_group(&self, index: u32, group: u32) -> Result<()> {
        self.set_msg(
            LinkUnspec::new_with_index(index).link_group(group).build(),
            "set group",
        )
        .await
    }

    /// Equivalent to: `ip link set dev X alias TEXT` (IFLA_IFALIAS; we use the `vtid:` prefix).
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.set_msg(
            LinkUnspec::new_with_index(index).alias(alias).build(),
            "set alias",
        )
        .await
    }

    /// Equivalent to: `ip link set dev X master M` (enslave to a VRF).
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.set_msg(
            LinkUnspec::new_with_index(index).controller(master).build(),
            "set master",
        )
        .await
    }

    /// Equivalent to: `ip link set dev X nomaster`.
    pub async fn set_nomaster(&self, index: u32) -> Result<()> {
        self.set_msg(
            LinkUnspec::new_with_index(index).nocontroller().build(),
            "set nomaster",
        )
        .await
    }

    /// Moves an interface into another namespace. Equivalent to: `ip link set dev X netns NS`.
    pub async fn set_netns(&self, index: u32, target: &Netns) -> Result<()> {
        use std::os::fd::{AsRawFd, OwnedFd};
        let fd: OwnedFd = match target {
            Netns::Current => return Ok(()),
            Netns::Path(p) => std::fs::File::open(p)
                .map_err(|source| Error::Io {
                    op: "open netns",
                    source,
                })?
                .into(),
            Netns::Fd(f) => f.try_clone().map_err(|source| Error::Io {
                op: "dup netns fd",
                source,
            })?,
        };
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(fd.as_raw_fd())
            .build();
        // `fd` stays open until the kernel has answered.
        let r = self.set_msg(msg, "move link to netns").await;
        drop(fd);
        r
    }

    /// Equivalent to: `ip addr add ADDR/LEN dev X`.
    pub async fn add_address(&self, index: u32, addr: IpNet) -> Result<()> {
        self.nl()
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
            .map_err(route_err("add address"))
    }

    /// Borrows an underlay address for an unnumbered tunnel: adds `addr/32` (`/128`) to the
    /// tunnel, the Linux form of `ip unnumbered`. Equivalent to: `ip addr add A/32 dev X`.
    pub async fn add_unnumbered(&self, index: u32, addr: IpAddr) -> Result<()> {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        let net = IpNet::new(addr, len).expect("full-length prefix is valid");
        self.add_address(index, net).await
    }

    /// Addresses of interface `index` (`None`: of every interface), as (ifindex, address
    /// with prefix). For IPv4 the `IFA_LOCAL` address, which differs from `IFA_ADDRESS` only
    /// on point-to-point links, where it is the one that is ours.
    ///
    /// Equivalent to: `ip -o addr show [dev X]`.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<(u32, IpNet)>> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let mut req = self.nl().address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let mut s = req.execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(route_err("list addresses"))? {
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(x) => Some(*x),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(x) => Some(*x),
                    _ => None,
                })
            });
            if let Some(a) = addr
                && let Ok(net) = IpNet::new(a, m.header.prefix_len)
            {
                out.push((m.header.index, net));
            }
        }
        Ok(out)
    }

    /// Equivalent to: `ip addr del ADDR/LEN dev X`.
    pub async fn del_address(&self, index: u32, addr: IpNet) -> Result<()> {
        let mut s = self
            .nl()
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = s.try_next().await.map_err(route_err("list addresses"))? {
            use rtnetlink::packet_route::address::AddressAttribute;
            let matches = m.header.prefix_len == addr.prefix_len()
                && m.attributes.iter().any(|a| matches!(a, AddressAttribute::Local(x) | AddressAttribute::Address(x) if *x == addr.addr()));
            if matches {
                return self
                    .nl()
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(route_err("delete address"));
            }
        }
        Err(Error::NotFound {
            op: "delete address",
            ext_ack: None,
        })
    }

    fn route_msg(r: &RouteSpec) -> Result<rtnetlink::packet_route::route::RouteMessage> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.dst.addr(), r.dst.prefix_len())
            .map_err(inval)?
            .table_id(r.table);
        if let Some(d) = r.dev {
            b = b.output_interface(d);
        }
        if let Some(g) = r.gateway {
            b = b.gateway(g).map_err(inval)?;
        }
        if let Some(s) = r.src {
            b = b.pref_source(s).map_err(inval)?;
        }
        if let Some(m) = r.metric {
            b = b.priority(m);
        }
        let mut msg = b.build();
        if let Some(id) = r.nexthop {
            use rtnetlink::packet_route::route::RouteAttribute;
            msg.attributes.push(RouteAttribute::NhId(id));
            return Ok(msg);
        }
        if let Some(id) = r.xfrm_if_id {
            use rtnetlink::packet_route::route::{
                RouteAttribute, RouteLwEnCapType, RouteLwTunnelEncap, RouteXfrmTunnel,
            };
            // RTA_ENCAP_TYPE = LWTUNNEL_ENCAP_XFRM (10), RTA_ENCAP = { LWT_XFRM_IF_ID (1) }.
            msg.attributes
                .push(RouteAttribute::EncapType(RouteLwEnCapType::Xfrm));
            msg.attributes
                .push(RouteAttribute::Encap(vec![RouteLwTunnelEncap::Xfrm(
                    RouteXfrmTunnel::IfId(id),
                )]));
        }
        Ok(msg)
    }

    /// The interface a packet from `src` to `dst` leaves through, by the kernel's own route
    /// lookup (policy rules included); `oif` restricts the lookup the way a socket bound to a
    /// VRF device does (the l3mdev rule then picks the VRF's table). `None` when the route has
    /// no output device (e.g. a blackhole).
    ///
    /// Equivalent to: `ip route get DST [from SRC] [oif DEV]`.
    pub async fn route_oif(
        &self,
        dst: IpAddr,
        src: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Result<Option<u32>> {
        Ok(self.route_get(dst, src, oif).await?.0)
    }

    /// How `dst` is reached: the output interface and the gateway, if any, of the kernel's
    /// route for it (a directly connected destination has none).
    ///
    /// Equivalent to: `ip route get DST`.
    pub async fn route_via(&self, dst: IpAddr) -> Result<(Option<u32>, Option<IpAddr>)> {
        self.route_get(dst, None, None).await
    }

    /// RTM_GETROUTE for one destination: (output interface, gateway).
    async fn route_get(
        &self,
        dst: IpAddr,
        src: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Result<(Option<u32>, Option<IpAddr>)> {
        use rtnetlink::packet_route::route::RouteAttribute;
        let full = if dst.is_ipv4() { 32 } else { 128 };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst, full)
            .map_err(inval)?;
        if let Some(s) = src {
            b = b.source_prefix(s, full).map_err(inval)?;
        }
        if let Some(o) = oif {
            b = b.output_interface(o);
        }
        // The builder's table/protocol/scope defaults are ignored by RTM_GETROUTE without
        // NETLINK_GET_STRICT_CHK, which this socket does not set.
        let mut msg = b.build();
        // IPv4 RTM_GETROUTE looks up as UDP unless told otherwise (6.1 inet_rtm_getroute:
        // ip_proto = IPPROTO_UDP), so an `ip rule ... ipproto udp` would steer it, while the
        // kernel's own outer lookup for ESP carries no protocol (__xfrm4_dst_lookup zeroes
        // the flow). Protocol 0 cannot be asked for (rtm_getroute_parse_ip_proto accepts TCP,
        // UDP and ICMP only); ICMP is the closest: no ports, no UDP/TCP rule matches it. IPv6
        // looks up with protocol 0 already when none is given. (From 6.12 the xfrm lookup
        // carries the ESP protocol itself; a rule on `ipproto esp` is then not seen here,
        // since RTM_GETROUTE cannot ask for ESP.)
        if dst.is_ipv4() {
            msg.attributes.push(RouteAttribute::IpProto(1)); // IPPROTO_ICMP
        }
        let mut s = self.nl().route().get(msg).execute();
        match s.try_next().await.map_err(route_err("get route"))? {
            Some(m) => {
                let oif = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                let gw = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => match g {
                        rtnetlink::packet_route::route::RouteAddress::Inet(v4) => {
                            Some(IpAddr::V4(*v4))
                        }
                        rtnetlink::packet_route::route::RouteAddress::Inet6(v6) => {
                            Some(IpAddr::V6(*v6))
                        }
                        _ => None,
                    },
                    _ => None,
                });
                Ok((oif, gw))
            }
            None => Ok((None, None)),
        }
    }

    /// Adds a route. See [`RouteSpec`].
    pub async fn add_route(&self, r: &RouteSpec) -> Result<()> {
        self.nl()
            .route()
            .add(Self::route_msg(r)?)
            .execute()
            .await
            .map_err(route_err("add route"))
    }

    /// Adds a route or replaces the one with the same destination, table and metric.
    /// Equivalent to: `ip route replace DST [via GW] [dev DEV] [src SRC] [metric M] [table T]`.
    pub async fn replace_route(&self, r: &RouteSpec) -> Result<()> {
        self.nl()
            .route()
            .add(Self::route_msg(r)?)
            .replace()
            .execute()
            .await
            .map_err(route_err("replace route"))
    }

    /// Deletes a route. Equivalent to: `ip route del DST [dev DEV] [table T]`.
    pub async fn del_route(&self, r: &RouteSpec) -> Result<()> {
        self.nl()
            .route()
            .del(Self::route_msg(r)?)
            .execute()
            .await
            .map_err(route_err("delete route"))
    }

    /// Writes `/proc/sys/<path>` in this handle's namespace (path with `/`, e.g.
    /// `net/ipv4/conf/vti0/disable_policy`). /proc/sys/net shows the namespace of the thread
    /// that opens the file, so the write happens on a thread inside the target namespace.
    pub fn set_sysctl(&self, path: &str, value: &str) -> Result<()> {
        set_sysctl(self.netns, path, value)
    }

    /// `net.ipv4.conf.DEV.disable_policy` (and `net.ipv6.conf.DEV.disable_policy` when it
    /// exists). ip_vti needs 1: decapsulated packets would otherwise be checked against the
    /// IN policies again and dropped.
    pub fn set_disable_policy(&self, dev: &str, on: bool) -> Result<()> {
        self.per_dev(dev, "disable_policy", on)
    }

    /// `net.ipv6.conf.DEV.disable_ipv6`: no IPv6 on DEV (no link-local address, router
    /// solicitations or MLD reports). A kernel without IPv6 has no such file: nothing to do.
    pub fn set_disable_ipv6(&self, dev: &str, on: bool) -> Result<()> {
        self.ipv6_knob(dev, "disable_ipv6", on)
    }

    /// `net.ipv4.conf.DEV.disable_xfrm`: skip XFRM output lookups for traffic leaving DEV.
    pub fn set_disable_xfrm(&self, dev: &str, on: bool) -> Result<()> {
        self.per_dev(dev, "disable_xfrm", on)
    }

    fn per_dev(&self, dev: &str, key: &str, on: bool) -> Result<()> {
        check_dev_name(dev)?;
        set_sysctl(
            self.netns,
            &format!("net/ipv4/conf/{dev}/{key}"),
            bool_value(on),
        )?;
        // The IPv6 knob exists only on newer kernels (disable_policy since 5.17).
        self.ipv6_knob(dev, key, on)
    }

    /// `net.ipv6.conf.DEV.KEY`; a missing file (an older kernel, or no IPv6) is not an error.
    fn ipv6_knob(&self, dev: &str, key: &str, on: bool) -> Result<()> {
        check_dev_name(dev)?;
        match set_sysctl(
            self.netns,
            &format!("net/ipv6/conf/{dev}/{key}"),
            bool_value(on),
        ) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(())
            }
            r => r,
        }
    }
}

/// A device name that cannot climb out of `/proc/sys/net/*/conf/`.
fn check_dev_name(dev: &str) -> Result<()> {
    if dev.contains('/') || dev == "." || dev == ".." {
        return Err(Error::InvalidSpec(format!("bad interface name {dev:?}")));
    }
    Ok(())
}

fn bool_value(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// Writes `/proc/sys/<path>` from inside `netns`.
pub fn set_sysctl(netns: &Netns, path: &str, value: &str) -> Result<()> {
    if path.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(Error::InvalidSpec(format!("bad sysctl path {path:?}")));
    }
    let full = format!("/proc/sys/{path}");
    let value = value.to_string();
    netns.run(move || {
        std::fs::write(&full, value.as_bytes()).map_err(|source| Error::Io {
            op: "write sysctl",
            source,
        })
    })
}

/// Reads `/proc/sys/<path>` from inside `netns` (trimmed).
pub fn get_sysctl(netns: &Netns, path: &str) -> Result<String> {
    let full = format!("/proc/sys/{path}");
    netns.run(move || {
        std::fs::read_to_string(&full)
            .map(|s| s.trim().to_string())
            .map_err(|source| Error::Io {
                op: "read sysctl",
                source,
            })
    })
}

/// IFLA_LINKMODE dormant and IFLA_OPERSTATE up or dormant (see [`LinkHandle::set_line`]).
pub(crate) fn line_attributes(up: bool) -> [LinkAttribute; 2] {
    use rtnetlink::packet_route::link::{LinkMode, State};
    [
        LinkAttribute::Mode(LinkMode::Dormant),
        LinkAttribute::OperState(if up { State::Up } else { State::Dormant }),
    ]
}

#[cfg(test)]
mod route_tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, NlaBuffer, NlasIterator};

    fn nlas(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        NlasIterator::new(b)
            .map(|n| {
                let n: NlaBuffer<&[u8]> = n.unwrap();
                (n.kind(), n.value().to_vec())
            })
            .collect()
    }

    #[test]
    fn encap_xfrm_route_carries_the_lwtunnel_attributes() {
        // include/uapi/linux/rtnetlink.h, lwtunnel.h
        const RTA_OIF: u16 = 4;
        const RTA_ENCAP_TYPE: u16 = 21;
        const RTA_ENCAP: u16 = 22;
        const LWTUNNEL_ENCAP_XFRM: u16 = 10;
        const LWT_XFRM_IF_ID: u16 = 1;
        let r = RouteSpec::dev("10.1.0.0/24".parse().unwrap(), 7).xfrm_if_id(0x7660_0003);
        let m = LinkHandle::route_msg(&r).unwrap();
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        // struct rtmsg is 12 bytes.
        let a = nlas(&buf[12..]);
        let get = |k| a.iter().find(|(t, _)| *t == k).map(|(_, v)| v.clone());
        assert_eq!(get(RTA_OIF), Some(7u32.to_ne_bytes().to_vec()));
        assert_eq!(
            get(RTA_ENCAP_TYPE),
            Some(LWTUNNEL_ENCAP_XFRM.to_ne_bytes().to_vec())
        );
        let inner = nlas(&get(RTA_ENCAP).expect("RTA_ENCAP"));
        assert_eq!(
            inner,
            vec![(LWT_XFRM_IF_ID, 0x7660_0003u32.to_ne_bytes().to_vec())]
        );
        // Without it, no encap.
        let plain = LinkHandle::route_msg(&RouteSpec::dev("10.1.0.0/24".parse().unwrap(), 7));
        let mut buf = vec![0u8; plain.as_ref().unwrap().buffer_len()];
        plain.unwrap().emit(&mut buf);
        assert!(nlas(&buf[12..]).iter().all(|(t, _)| *t != RTA_ENCAP_TYPE));
    }
}
