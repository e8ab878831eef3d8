//! The README's demo, run inside the VM: two sites, a and b, joined by an underlay link, each
//! with a LAN. Site a runs vtid (xfrm interface), site b runs strongSwan (ip_vti): an IKEv2
//! tunnel between two independent implementations carries LAN-to-LAN pings, and vtid's own
//! `show` commands describe it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, Capture};
use nstest::peer::{Device, Impl, TunnelEnd};
use nstest::{Scenario, TopoSpec};

pub(crate) fn run() -> Result<()> {
    let spec = TopoSpec::new()
        .link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
        .lan("a", "10.1.0.1/24")
        .lan("b", "10.2.0.1/24");
    let mut sc = Scenario::new("demo", spec)?;
    let end = |local: &str, remote: &str, device, addr: &str, route: &str, initiator| TunnelEnd {
        local: local.into(),
        remote: remote.into(),
        psk: "demo-secret-not-for-production".into(),
        device,
        address: Some(addr.into()),
        routes: vec![route.into()],
        initiator,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: "aes256gcm16".into(),
        child_lifetime: None,
    };
    let a = end(
        "192.0.2.1",
        "192.0.2.2",
        Device::Xfrmi {
            name: "Tunnel0".into(),
            if_id: 42,
            underlay: "e-b".into(),
        },
        "10.255.0.1/30",
        "10.2.0.0/24",
        true,
    );
    let b = end(
        "192.0.2.2",
        "192.0.2.1",
        Device::Vti {
            name: "vti0".into(),
            key: 42,
        },
        "10.255.0.2/30",
        "10.1.0.0/24",
        false,
    );
    println!(
        "demo: site a runs vtid (xfrm interface Tunnel0), site b runs strongSwan (ip_vti vti0)"
    );
    let pb = sc.start_peer(Impl::Strongswan, "b", &b)?;
    let pa = sc.start_peer(Impl::Vtid, "a", &a)?;
    kernel::wait_until("tunnel up", Duration::from_secs(40), || {
        Ok(sc.peer(pa).is_up()? && sc.peer(pb).is_up()?)
    })?;
    let cap = Capture::start(sc.topo.host("b"), "e-a", sc.dir().join("underlay.pcap"))?;
    let got = kernel::ping(sc.topo.host("a"), "10.1.0.1", "10.2.0.1", 5)?;
    let counts = cap.stop_and_count(&["esp", "icmp"])?;
    println!("demo: ping 10.1.0.1 -> 10.2.0.1 through the tunnel: {got}/5 replies");
    println!(
        "demo: on the underlay: {} ESP packets, {} plaintext ICMP packets",
        counts[0], counts[1]
    );
    let vtid = sc.peer_mut(pa).as_vtid().context("site a is vtid")?;
    for what in ["tunnels", "sessions", "sa"] {
        println!("---- a: vtid show {what}");
        print!("{}", vtid.cli(&["show", what])?);
    }
    ensure!(got == 5, "only {got}/5 pings answered");
    ensure!(
        counts[0] >= 10 && counts[1] == 0,
        "traffic was not encrypted: {counts:?}"
    );
    println!("demo: OK");
    Ok(())
}
