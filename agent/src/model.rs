//! What vtid wants the kernel to hold, as data. One [`Interface`] per protected interface (a
//! static tunnel or a dynamic VTI's virtual-access clone; later GRE and crypto-map entries)
//! with its device, address, routes, policies and per-device settings, and the two SAs of a
//! Child SA. Pure: built from the plan and the live sessions, compared by
//! [`crate::reconcile`], carried out by [`crate::kernel`]. Nothing here talks to the kernel.

use std::net::IpAddr;

use anyhow::{Context, Result};
use ike::transform::{Encr, Integ};
use ipnet::IpNet;
use xfrm::{
    AeadAlg, Cipher, Crypto, Dir, Encap, EncapUpdate, Key, Lifetime, Mark, PolicySpec, SaId,
    SaSpec, Selector, Spi, Template,
};

pub use crate::config::Route;
use crate::plan::{DeviceKind, MAIN_TABLE, POLICY_PRIORITY, TunnelPlan};
use crate::vrf::VrfPlan;

/// Replay window for inbound SAs (packets); above 32 the xfrm crate uses XFRMA_REPLAY_ESN_VAL.
const REPLAY_WINDOW: u32 = 128;
/// An inbound ESP-in-UDP SA reports a peer's new NAT mapping (XFRM_MSG_MAPPING) at once, then
/// at most every this many seconds while it stays unfollowed; without the threshold the
/// kernel reports every packet from the new port (6.1 net/xfrm/xfrm_state.c `km_new_mapping`).
const MAPPING_THRESHOLD_SECS: u32 = 2;

/// How an interface's routes are put in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteMode {
    /// `ip route add`: a static tunnel's configured routes fail loudly on a clash.
    Add,
    /// `ip route replace`: a virtual-access clone takes a prefix over from an older clone of
    /// the same spoke (a spoke that came back from another address).
    Replace,
}

/// One protected interface as it should exist: everything that is created with the device
/// and removed with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Device name.
    pub name: String,
    /// xfrm interface or ip_vti, with the key (if_id or mark) its SAs and policies carry.
    pub kind: DeviceKind,
    /// if_id (xfrmi) or ikey = okey = mark (vti).
    pub if_id: u32,
    /// Underlay ends (ip_vti needs them on the device; xfrmi only in the policies).
    pub local: IpAddr,
    /// The peer's underlay address.
    pub remote: IpAddr,
    /// Device MTU.
    pub mtu: u32,
    /// Interface group (`ip link set DEV group G`).
    pub group: u32,
    /// Inside VRF: the device is its slave and its routes go in the VRF's table.
    pub vrf: Option<VrfPlan>,
    /// Front-door VRF: its device is the tunnel's underlay link.
    pub fvrf: Option<VrfPlan>,
    /// The device's own address (an unnumbered tunnel's borrowed /32 included).
    pub address: IpNet,
    /// Routes into the device.
    pub routes: Vec<Route>,
    /// How the routes are installed.
    pub route_mode: RouteMode,
    /// The line protocol vtid keeps on the device (`Some(up)`: link mode dormant, operstate
    /// up or dormant, see `xfrm::LinkHandle::set_line`); `None` leaves the kernel's (clones exist
    /// only while their peer's session does).
    pub line: Option<bool>,
    /// `net.ipv6.conf.DEV.disable_ipv6=1`.
    pub disable_ipv6: bool,
    /// Root qdisc, `tc qdisc replace dev DEV root ...` syntax.
    pub qdisc: Option<String>,
    /// The SPD entries bound to the device.
    pub policies: Vec<PolicySpec>,
}

impl Interface {
    /// Routing table of the interface's routes.
    pub fn table(&self) -> u32 {
        self.vrf.as_ref().map_or(MAIN_TABLE, |v| v.table)
    }

    /// ip_vti drops decapsulated packets on the inbound policy check unless
    /// `disable_policy` is set on the device (net/ipv4/ip_vti.c vti_rcv_cb).
    pub fn disable_policy(&self) -> bool {
        self.kind == DeviceKind::Vti
    }

    /// True when the two differ only in their routes and line state: a reload or a line
    /// transition can then edit those and keep the device and its SAs.
    pub fn same_but_routes(&self, other: &Interface) -> bool {
        Interface {
            routes: other.routes.clone(),
            line: other.line,
            ..self.clone()
        } == *other
    }
}

/// A static tunnel's interface with its line protocol `line_up` (a Child SA is installed).
/// Its routes are in the table only while the line is up, as IOS withdraws the static routes
/// through a tunnel whose line protocol went down: a floating route (higher metric) through
/// another tunnel or the underlay takes over. An IPv4-only tunnel runs no IPv6: its
/// link-local router solicitations and MLD reports would otherwise match the ::/0 policies,
/// start negotiations by ACQUIRE and cross the tunnel as noise, so IPv6 is off on the device
/// as on an IOS tunnel without `ipv6 enable`.
pub fn static_interface(t: &TunnelPlan, line_up: bool) -> Interface {
    Interface {
        name: t.name.clone(),
        kind: t.mode,
        if_id: t.if_id,
        local: t.local,
        remote: t.remote,
        mtu: t.mtu,
        group: xfrm::OWNED_LINK_GROUP,
        vrf: t.vrf.clone(),
        fvrf: t.fvrf.clone(),
        address: t.inner,
        routes: if line_up {
            t.routes.clone()
        } else {
            Vec::new()
        },
        route_mode: RouteMode::Add,
        line: Some(line_up),
        disable_ipv6: !t.carries_v6(),
        qdisc: None,
        policies: tunnel_policies(t),
    }
}

/// The policies of a tunnel: out/in/fwd for IPv4 and IPv6 0/0 selectors, bound to the device
/// by if_id (xfrmi) or mark (vti), templates with the tunnel's reqid.
pub fn tunnel_policies(t: &TunnelPlan) -> Vec<PolicySpec> {
    // GRE: policies for its GRE packets, bound to nothing (see plan/gre.rs).
    match t.mode {
        DeviceKind::Gre(g) => {
            return crate::plan::gre::policies(t.local, t.remote, t.reqid, g.sa_mode);
        }
        // A multipoint template's device: its spokes' policies are their own.
        DeviceKind::Mgre(_) | DeviceKind::XfrmiExternal => return Vec::new(),
        DeviceKind::Xfrmi | DeviceKind::Vti => {}
    }
    let mut out = Vec::new();
    for v6 in [false, true] {
        for dir in [Dir::Out, Dir::In, Dir::Fwd] {
            let (src, dst) = if dir == Dir::Out {
                (t.local, t.remote)
            } else {
                (t.remote, t.local)
            };
            let mut p = PolicySpec::new(Selector::any(v6), dir)
                .priority(POLICY_PRIORITY)
                .template(Template::tunnel(src, dst, t.reqid));
            p = match t.mode {
                DeviceKind::Xfrmi => p.if_id(t.if_id),
                // ip_vti: okey marks outbound lookups, ikey is set on decapsulated packets
                // before the inbound policy check (net/ipv4/ip_vti.c); we use one key.
                DeviceKind::Vti => p.mark(Mark::exact(t.if_id)),
                DeviceKind::Gre(_) | DeviceKind::Mgre(_) | DeviceKind::XfrmiExternal => p,
            };
            out.push(p);
        }
    }
    out
}

/// The device of a multipoint tunnel as the reconciler wants it: no policies (its per-peer
/// protection is not bound to the device), no routes (NHRP and the routing protocol add
/// them), the kernel's line state (a GRE device's carrier is up), IPv6 only when it has an
/// IPv6 address.
pub fn mgre_interface(m: &crate::plan::gre::MgrePlan) -> Interface {
    let unspecified = if m.source.is_ipv6() {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    Interface {
        name: m.name.clone(),
        kind: DeviceKind::Mgre(crate::plan::gre::GreSpec {
            key: m.key,
            ttl: m.ttl,
            sa_mode: m.sa_mode,
        }),
        if_id: 0,
        local: m.source,
        remote: unspecified,
        mtu: m.mtu,
        group: xfrm::OWNED_LINK_GROUP,
        vrf: m.vrf.clone(),
        fvrf: m.fvrf.clone(),
        address: m.inner,
        routes: Vec::new(),
        route_mode: RouteMode::Add,
        line: None,
        disable_ipv6: !m.inner.addr().is_ipv6(),
        qdisc: None,
        policies: Vec::new(),
    }
}

fn crypto(encr: Encr, integ: Option<Integ>, keys: &ike::EspKeys) -> Result<Crypto> {
    let key = Key::from_slice(keys.encr.expose());
    let integ_alg = |i: Integ| match i {
        Integ::HmacSha1_96 => xfrm::Integ::HmacSha1_96,
        Integ::HmacSha256_128 => xfrm::Integ::HmacSha256_128,
        Integ::HmacSha384_192 => xfrm::Integ::HmacSha384_192,
        Integ::HmacSha512_256 => xfrm::Integ::HmacSha512_256,
    };
    Ok(match encr {
        Encr::AesGcm16 { .. } => Crypto::Aead {
            alg: AeadAlg::AesGcm16,
            key,
        },
        Encr::ChaCha20Poly1305 => Crypto::Aead {
            alg: AeadAlg::ChaCha20Poly1305,
            key,
        },
        Encr::AesCbc { .. } | Encr::TripleDes => {
            let i = integ.context("CBC cipher without integrity")?;
            let ik = keys.integ.as_ref().context("no integrity key")?;
            Crypto::CipherAuth {
                cipher: if encr == Encr::TripleDes {
                    Cipher::TripleDesCbc
                } else {
                    Cipher::AesCbc
                },
                cipher_key: key,
                integ: integ_alg(i),
                integ_key: Key::from_slice(ik.expose()),
            }
        }
    })
}

/// What ties a Child SA's kernel SAs to the policies that use them: the templates' reqid
/// and the device key (if_id of an xfrm interface, mark of an ip_vti; neither for a crypto
/// map's policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// reqid of the SAs and of the templates that use them.
    pub reqid: u32,
    /// if_id of SAs and policies (xfrm interfaces).
    pub if_id: Option<u32>,
    /// Mark of SAs and policies (ip_vti).
    pub mark: Option<Mark>,
}

impl Binding {
    /// A static tunnel's.
    pub fn of(t: &TunnelPlan) -> Self {
        match t.mode {
            DeviceKind::Xfrmi => Self {
                reqid: t.reqid,
                if_id: Some(t.if_id),
                mark: None,
            },
            DeviceKind::Vti => Self {
                reqid: t.reqid,
                if_id: None,
                mark: Some(Mark::exact(t.if_id)),
            },
            // The GRE packets' SAs are found by address and reqid, as a crypto map's.
            DeviceKind::Gre(_) | DeviceKind::Mgre(_) | DeviceKind::XfrmiExternal => Self {
                reqid: t.reqid,
                if_id: None,
                mark: None,
            },
        }
    }
}

/// The two SAs of a Child SA install (inbound first: it must exist before the peer may use
/// it). Equivalent to two `ip xfrm state add ... mode tunnel reqid R if_id N` commands.
pub fn child_sas(t: &TunnelPlan, inst: &ike::ChildSaInstall) -> Result<[SaSpec; 2]> {
    child_sas_bound(Binding::of(t), inst, None)
}

/// [`child_sas`] for any binding; `selectors` (inbound's, outbound's) restrict the SAs to
/// the negotiated traffic (`ip xfrm state add ... sel src S dst D`), which the kernel checks
/// before it uses an SA for a flow (`xfrm_state_look_at`).
pub fn child_sas_bound(
    b: Binding,
    inst: &ike::ChildSaInstall,
    selectors: Option<(Selector, Selector)>,
) -> Result<[SaSpec; 2]> {
    let (l, r) = (inst.local.ip(), inst.remote.ip());
    let hard = inst.hard_lifetime.as_secs();
    let life = Lifetime {
        soft_bytes: inst.bytes.map(|b| b.soft),
        hard_bytes: inst.bytes.map(|b| b.hard),
        // The engine rekeys by time itself; the kernel's hard limit is the safety net.
        hard_add_secs: (hard > 0).then_some(hard),
        ..Lifetime::default()
    };
    let mk = |src: IpAddr, dst: IpAddr, spi: u32, keys: &ike::EspKeys, inbound: bool| {
        let mut s = SaSpec::new(src, dst, Spi(spi), crypto(inst.encr, inst.integ, keys)?)
            .mode(match inst.mode {
                ike::Mode::Tunnel => xfrm::Mode::Tunnel,
                ike::Mode::Transport => xfrm::Mode::Transport,
            })
            .reqid(b.reqid)
            .esn(inst.esn)
            .replay_window(if inbound { REPLAY_WINDOW } else { 0 })
            .lifetime(life);
        if let Some(i) = b.if_id {
            s = s.if_id(i);
        }
        if let Some(m) = b.mark {
            s = s.mark(m);
        }
        if let Some((sin, sout)) = &selectors {
            s.selector = Some(if inbound { *sin } else { *sout });
        }
        if let Some(e) = inst.encap {
            let (sport, dport) = if inbound {
                (e.remote_port, e.local_port)
            } else {
                (e.local_port, e.remote_port)
            };
            s = s.encap(Encap {
                sport,
                dport,
                oa: None,
            });
            if inbound {
                s = s.mapping_threshold(MAPPING_THRESHOLD_SECS);
            }
        }
        Ok::<_, anyhow::Error>(s)
    };
    Ok([
        mk(r, l, inst.inbound_spi, &inst.inbound, true)?,
        mk(l, r, inst.outbound_spi, &inst.outbound, false)?,
    ])
}

/// The two SAs of a manual crypto map entry (inbound first), from its configured SPIs and
/// keys, with no lifetime: they live until the entry is removed (seed F-E9). Equivalent to
/// two `ip xfrm state add src S dst D proto esp spi SPI reqid R mode tunnel {aead|enc
/// auth} ... sel src ... dst ...` commands.
pub fn manual_sas(
    b: Binding,
    local: IpAddr,
    sa: &crate::config::ManualSa,
    transform: &crate::config::TransformSet,
    (in_sel, out_sel): (Selector, Selector),
) -> Result<[SaSpec; 2]> {
    let keys = |k: &crate::config::ManualKey| -> Result<ike::EspKeys> {
        let cipher = k.cipher.as_ref().context("manual SA key was not read")?;
        Ok(ike::EspKeys {
            encr: ike::secret::Secret::from_slice(cipher.expose()),
            integ: k
                .authenticator
                .as_ref()
                .map(|a| ike::secret::Secret::from_slice(a.expose())),
        })
    };
    let mk =
        |src: IpAddr, dst: IpAddr, k: &crate::config::ManualKey, sel: Selector, inbound: bool| {
            let mut s = SaSpec::new(
                src,
                dst,
                Spi(k.spi),
                crypto(transform.esp, transform.integrity, &keys(k)?)?,
            )
            .mode(xfrm::Mode::Tunnel)
            .reqid(b.reqid)
            .replay_window(if inbound { REPLAY_WINDOW } else { 0 });
            s.selector = Some(sel);
            Ok::<_, anyhow::Error>(s)
        };
    Ok([
        mk(sa.peer, local, &sa.inbound, in_sel, true)?,
        mk(local, sa.peer, &sa.outbound, out_sel, false)?,
    ])
}

/// The peer's NAT mapping moved (RFC 7296 §2.23): both SAs of a Child SA keep everything but
/// their ESP-in-UDP ports (inbound first, as installed). Equivalent to two `ip xfrm state
/// update ... encap espinudp SPORT DPORT 0.0.0.0` commands.
pub fn child_encap_updates(t: &TunnelPlan, u: &ike::ChildSaEncapUpdate) -> [EncapUpdate; 2] {
    let [inbound, outbound] = child_sa_ids(
        t,
        u.local.ip(),
        u.remote.ip(),
        u.inbound_spi,
        u.outbound_spi,
    );
    let e = u.encap;
    [
        EncapUpdate {
            id: inbound,
            encap: Encap {
                sport: e.remote_port,
                dport: e.local_port,
                oa: None,
            },
        },
        EncapUpdate {
            id: outbound,
            encap: Encap {
                sport: e.local_port,
                dport: e.remote_port,
                oa: None,
            },
        },
    ]
}

/// The kernel ids of a Child SA's two SAs (inbound, outbound), for counters and deletion.
pub fn child_sa_ids(
    t: &TunnelPlan,
    local: IpAddr,
    remote: IpAddr,
    spi_in: u32,
    spi_out: u32,
) -> [SaId; 2] {
    sa_ids(Binding::of(t), local, remote, spi_in, spi_out)
}

/// [`child_sa_ids`] for any binding.
pub fn sa_ids(b: Binding, local: IpAddr, remote: IpAddr, spi_in: u32, spi_out: u32) -> [SaId; 2] {
    let id = |src, dst, spi| SaId {
        src: Some(src),
        dst,
        proto: xfrm::Proto::Esp,
        spi: Spi(spi),
        mark: b.mark,
        if_id: b.if_id,
    };
    [id(remote, local, spi_in), id(local, remote, spi_out)]
}

#[cfg(test)]
mod gre_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(routes: &[&str], inner: &str) -> TunnelPlan {
        TunnelPlan {
            name: "Tunnel0".into(),
            conn: ike::ConnId(1),
            mode: DeviceKind::Xfrmi,
            if_id: 42,
            reqid: crate::plan::REQID_BASE + 1,
            local: "192.0.2.1".parse().unwrap(),
            remote: "192.0.2.2".parse().unwrap(),
            inner: inner.parse().unwrap(),
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
            mtu: 1438,
            initiate: true,
            dpd_action: crate::config::DpdAction::Clear,
            offload: crate::config::Offload::Off,
            vrf: None,
            fvrf: None,
            v1_policies: None,
        }
    }

    #[test]
    fn static_interface_runs_ipv6_only_when_it_carries_it() {
        let v4 = static_interface(&plan(&["10.1.0.0/16"], "10.0.0.1/30"), true);
        assert!(v4.disable_ipv6);
        assert_eq!(v4.policies.len(), 6);
        assert_eq!(v4.table(), MAIN_TABLE);
        assert!(!v4.disable_policy());
        let v6 = static_interface(&plan(&["2001:db8:1::/48"], "10.0.0.1/30"), true);
        assert!(!v6.disable_ipv6);
    }

    #[test]
    fn routes_only_difference() {
        let a = static_interface(&plan(&["10.1.0.0/16"], "10.0.0.1/30"), true);
        let b = static_interface(&plan(&["10.2.0.0/16"], "10.0.0.1/30"), true);
        let c = static_interface(&plan(&["10.1.0.0/16"], "10.0.0.5/30"), true);
        assert!(a.same_but_routes(&b));
        assert!(!a.same_but_routes(&c));
    }

    #[test]
    fn line_down_withdraws_the_routes_and_keeps_the_device() {
        let t = plan(&["10.1.0.0/16 metric 200"], "10.0.0.1/30");
        let (up, down) = (static_interface(&t, true), static_interface(&t, false));
        assert_eq!(up.routes, t.routes);
        assert_eq!(up.line, Some(true));
        assert!(down.routes.is_empty());
        assert_eq!(down.line, Some(false));
        assert!(up.same_but_routes(&down));
    }

    /// NAT-T: both SAs carry ESP-in-UDP with the ports mirrored, only the inbound one asks
    /// the kernel for mapping reports, and an encap update keeps that mirroring.
    #[test]
    fn nat_t_child_sas_and_their_encap_updates() {
        use ike::secret::Secret;
        let t = plan(&[], "10.0.0.1/30");
        let keys = || ike::EspKeys {
            encr: Secret::new(vec![7; 36]),
            integ: None,
        };
        let inst = ike::ChildSaInstall {
            child: ike::ChildSaId(1),
            replaces: None,
            session: ike::SessionId(1),
            conn: t.conn,
            config: ike::ChildConfigIndex::FIRST,
            host_pair: None,
            local: "192.0.2.1:4500".parse().unwrap(),
            remote: "192.0.2.2:34500".parse().unwrap(),
            inbound_spi: 0x1111,
            outbound_spi: 0x2222,
            encr: Encr::AesGcm16 { key_bits: 256 },
            integ: None,
            esn: false,
            inbound: keys(),
            outbound: keys(),
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            mode: ike::Mode::Tunnel,
            encap: Some(ike::UdpEncap {
                local_port: 4500,
                remote_port: 34500,
            }),
            hard_lifetime: std::time::Duration::from_secs(3600),
            bytes: None,
            halves: ike::Halves::Both,
        };
        let [inb, out] = child_sas(&t, &inst).unwrap();
        let ports = |s: &SaSpec| s.encap.map(|e| (e.sport, e.dport));
        assert_eq!(ports(&inb), Some((34500, 4500)));
        assert_eq!(ports(&out), Some((4500, 34500)));
        assert_eq!(inb.mapping_threshold, Some(MAPPING_THRESHOLD_SECS));
        assert_eq!(out.mapping_threshold, None);
        let u = ike::ChildSaEncapUpdate {
            child: inst.child,
            session: inst.session,
            conn: inst.conn,
            local: inst.local,
            remote: "192.0.2.2:40001".parse().unwrap(),
            inbound_spi: inst.inbound_spi,
            outbound_spi: inst.outbound_spi,
            encap: ike::UdpEncap {
                local_port: 4500,
                remote_port: 40001,
            },
        };
        let [ui, uo] = child_encap_updates(&t, &u);
        assert_eq!((ui.id, uo.id), (inb.id(), out.id()));
        assert_eq!((ui.encap.sport, ui.encap.dport), (40001, 4500));
        assert_eq!((uo.encap.sport, uo.encap.dport), (4500, 40001));
    }
}
