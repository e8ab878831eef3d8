//! Interop scenarios (VM): a route-based tunnel between two sites, each side played by vtid
//! or strongSwan, device ip_vti or xfrm interface, IPv4 or IPv6 outside and inside. Written
//! once; the parameters pick the implementations, devices and family (house rule 7). Peers
//! are driven through the network and their CLIs, and the kernel is checked with `ip`.
//!
//! The cases together cover vtid in both device modes x both roles x both families against
//! strongSwan, without the full cross product (each case costs VM time):
//!
//! | vtid device | vtid role | family |
//! |---|---|---|
//! | xfrmi | initiator | IPv4 |
//! | vti   | responder | IPv4 |
//! | vti (ip6_vti) | initiator | IPv6 |
//! | xfrmi | responder | IPv6 |
//!
//! Each strongSwan case runs against Debian 12's strongSwan 5.9.8 and Debian 13's 6.0.x.

use std::time::Duration;

use anyhow::{Result, ensure};
use nstest::kernel::{self, Capture};
use nstest::peer::{Device, Impl, TunnelEnd};
use nstest::{Scenario, TopoSpec, scenario};

/// The address family of both the underlay and the tunnel's inside.
#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// Underlay address of site `n` (1 = a, 2 = b).
    fn outer(self, n: u8) -> String {
        match self {
            Family::V4 => format!("192.0.2.{n}"),
            Family::V6 => format!("2001:db8::{n}"),
        }
    }

    /// Address of site `n`'s tunnel device (CIDR).
    fn tunnel(self, n: u8) -> String {
        match self {
            Family::V4 => format!("10.255.0.{n}/30"),
            Family::V6 => format!("fd00:255::{n}/64"),
        }
    }

    /// Site `n`'s LAN prefix and the LAN interface's address in it.
    fn lan(self, n: u8) -> (String, String) {
        match self {
            Family::V4 => (format!("10.{n}.0.0/24"), format!("10.{n}.0.1")),
            Family::V6 => (format!("fd00:{n}::/64"), format!("fd00:{n}::1")),
        }
    }

    /// A pcap filter matching inner (LAN or tunnel subnet) packets sent in the clear.
    fn plaintext(self) -> &'static str {
        match self {
            Family::V4 => "net 10.0.0.0/8",
            Family::V6 => "net fd00::/16",
        }
    }

    fn spec(self) -> TopoSpec {
        let len = match self {
            Family::V4 => 24,
            Family::V6 => 64,
        };
        let (o, l) = (
            |n| format!("{}/{len}", self.outer(n)),
            |n| format!("{}/{len}", self.lan(n).1),
        );
        TopoSpec::new()
            .link("a", &o(1), "b", &o(2))
            .lan("a", &l(1))
            .lan("b", &l(2))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Xfrmi,
    Vti,
}

fn device(kind: Kind, name: &str, underlay: &str) -> Device {
    match kind {
        Kind::Xfrmi => Device::Xfrmi {
            name: name.into(),
            if_id: 42,
            underlay: underlay.into(),
        },
        Kind::Vti => Device::Vti {
            name: name.into(),
            key: 42,
        },
    }
}

struct Side {
    imp: Impl,
    kind: Kind,
}

fn end(side: &Side, family: Family, me: u8, initiator: bool, esp: &str) -> TunnelEnd {
    let peer = 3 - me;
    let remote = if me == 1 { "b" } else { "a" };
    TunnelEnd {
        local: family.outer(me),
        remote: family.outer(peer),
        psk: "interop-psk-0123456789abcdef".into(),
        device: device(
            side.kind,
            &format!("tun{me}"),
            &nstest::topo::iface_to(remote),
        ),
        address: Some(family.tunnel(me)),
        routes: vec![family.lan(peer).0],
        initiator,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: esp.into(),
        child_lifetime: None,
    }
}

/// Brings the tunnel up with `a` or `b` initiating, then proves traffic is encrypted and both
/// kernels agree on the SAs.
fn tunnel(
    sc: &mut Scenario,
    family: Family,
    a: Side,
    b: Side,
    a_initiates: bool,
    esp: &str,
) -> Result<()> {
    let ea = end(&a, family, 1, a_initiates, esp);
    let eb = end(&b, family, 2, !a_initiates, esp);
    let pb = sc.start_peer(b.imp, "b", &eb)?;
    let pa = sc.start_peer(a.imp, "a", &ea)?;
    let (init, resp) = if a_initiates { (pa, pb) } else { (pb, pa) };
    // vtid initiates by itself on start (initiate = true); strongSwan is told to.
    if sc.peer(init).implementation().is_strongswan() {
        sc.peer(init).initiate()?;
    }
    for p in [init, resp] {
        kernel::wait_until("Child SA up", Duration::from_secs(40), || {
            sc.peer(p).is_up()
        })?;
    }
    let (ha, hb) = (sc.topo.host("a"), sc.topo.host("b"));
    let cap = Capture::start(hb, "e-a", sc.dir().join("underlay.pcap"))?;
    let (src, dst) = (family.lan(1).1, family.lan(2).1);
    let replies = kernel::ping(ha, &src, &dst, 5)?;
    let [esp_n, clear] = cap.stop_and_count(&["esp", family.plaintext()])?[..] else {
        unreachable!()
    };
    ensure!(replies == 5, "{replies}/5 pings answered across the tunnel");
    ensure!(
        clear == 0,
        "{clear} plaintext inner packets on the underlay"
    );
    ensure!(esp_n >= 10, "only {esp_n} ESP packets for 5 round trips");
    let spis = |ns| -> Result<Vec<(u32, Vec<String>)>> {
        // SPI 0 entries are larval states the kernel creates on ACQUIRE (traffic hit a
        // policy before an SA matched it); they are not negotiated SAs.
        let mut v: Vec<_> = kernel::xfrm_states(ns)?
            .into_iter()
            .filter(|s| s.spi != 0)
            .map(|s| (s.spi, s.algs))
            .collect();
        v.sort();
        Ok(v)
    };
    let (sa, sb) = (spis(ha)?, spis(hb)?);
    ensure!(sa.len() == 2, "a has {} SAs, expected 2: {sa:?}", sa.len());
    ensure!(sa == sb, "the kernels disagree: a {sa:?} b {sb:?}");
    Ok(())
}

/// One scenario of the matrix: sides `a` and `b` as (implementation, device kind).
fn run(name: &str, family: Family, a: (Impl, Kind), b: (Impl, Kind), a_initiates: bool, esp: &str) {
    scenario(name, family.spec(), |sc| {
        let side = |(imp, kind)| Side { imp, kind };
        tunnel(sc, family, side(a), side(b), a_initiates, esp)
    });
}

const GCM: &str = "aes256gcm16";

nstest::against_each_strongswan! {
    fn vm_vtid_xfrmi_initiates_to_strongswan_vti(v) {
        run(
            "vtid-xfrmi-ss-vti",
            Family::V4,
            (Impl::Vtid, Kind::Xfrmi),
            (Impl::Strongswan(v), Kind::Vti),
            true,
            GCM,
        );
    }

    fn vm_strongswan_xfrmi_initiates_to_vtid_vti(v) {
        run(
            "ss-xfrmi-vtid-vti",
            Family::V4,
            (Impl::Vtid, Kind::Vti),
            (Impl::Strongswan(v), Kind::Xfrmi),
            false,
            GCM,
        );
    }

    /// vtid's ip6_vti end initiates over IPv6 outside and inside. strongSwan's side is an
    /// xfrm interface in both IPv6 cases: the harness creates strongSwan's VTIs as
    /// `type vti`, which is IPv4 only.
    fn vm_ipv6_vtid_vti_initiates_to_strongswan_xfrmi(v) {
        run(
            "v6-vtid-vti",
            Family::V6,
            (Impl::Vtid, Kind::Vti),
            (Impl::Strongswan(v), Kind::Xfrmi),
            true,
            "aes128gcm16",
        );
    }

    fn vm_ipv6_strongswan_initiates_to_vtid_xfrmi(v) {
        run(
            "v6-vtid-xfrmi",
            Family::V6,
            (Impl::Vtid, Kind::Xfrmi),
            (Impl::Strongswan(v), Kind::Xfrmi),
            false,
            GCM,
        );
    }
}

#[test]
#[ignore = "vm"]
fn vm_vtid_to_vtid_cbc_sha256() {
    run(
        "vtid-vtid",
        Family::V4,
        (Impl::Vtid, Kind::Xfrmi),
        (Impl::Vtid, Kind::Xfrmi),
        true,
        "aes256-sha256",
    );
}
