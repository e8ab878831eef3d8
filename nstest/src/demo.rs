//! The README's demo, run inside the VM: two sites, a and b, joined by an underlay link, each
//! with a LAN; an IKEv2 tunnel between them carries LAN-to-LAN pings.

use std::time::Duration;

use anyhow::{Result, ensure};
use nstest::kernel::{self, Capture};
use nstest::peer::{Device, Impl, TunnelEnd};
use nstest::{Scenario, TopoSpec};

pub(crate) fn run() -> Result<()> {
    let spec = TopoSpec::new()
        .link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
        .lan("a", "10.1.0.1/24")
        .lan("b", "10.2.0.1/24");
    let mut sc = Scenario::new("demo", spec)?;
    let end = |local: &str, remote: &str, device, route: &str, initiator| TunnelEnd {
        local: local.into(),
        remote: remote.into(),
        psk: "demo-secret-not-for-production".into(),
        device,
        address: None,
        routes: vec![route.into()],
        initiator,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: "aes256gcm16".into(),
    };
    let a = end(
        "192.0.2.1",
        "192.0.2.2",
        Device::Vti {
            name: "vti0".into(),
            key: 42,
        },
        "10.2.0.0/24",
        true,
    );
    let b = end(
        "192.0.2.2",
        "192.0.2.1",
        Device::Xfrmi {
            name: "ipsec0".into(),
            if_id: 42,
            underlay: "e-a".into(),
        },
        "10.1.0.0/24",
        false,
    );
    println!("demo: site a (ip_vti vti0) <-> site b (xfrm interface ipsec0), IKEv2 PSK");
    let pb = sc.start_peer(Impl::Strongswan, "b", &b)?;
    let pa = sc.start_peer(Impl::Strongswan, "a", &a)?;
    sc.peer(pa).initiate()?;
    kernel::wait_until("tunnel up", Duration::from_secs(30), || sc.peer(pb).is_up())?;
    let cap = Capture::start(sc.topo.host("b"), "e-a", sc.dir().join("underlay.pcap"))?;
    let got = kernel::ping(sc.topo.host("a"), "10.1.0.1", "10.2.0.1", 5)?;
    let counts = cap.stop_and_count(&["esp", "icmp"])?;
    println!("demo: ping 10.1.0.1 -> 10.2.0.1 through the tunnel: {got}/5 replies");
    println!(
        "demo: on the underlay: {} ESP packets, {} plaintext ICMP packets",
        counts[0], counts[1]
    );
    for (host, ns) in sc.topo.hosts() {
        println!("---- {host}: kernel SAs (ip -s xfrm state)");
        for s in kernel::xfrm_states(ns)? {
            println!(
                "  {} -> {} spi 0x{:08x} {} {} packets={} bytes={}",
                s.src,
                s.dst,
                s.spi,
                s.mode,
                s.algs.join(","),
                s.packets,
                s.bytes
            );
        }
    }
    ensure!(got == 5, "only {got}/5 pings answered");
    ensure!(
        counts[0] >= 10 && counts[1] == 0,
        "traffic was not encrypted: {counts:?}"
    );
    println!("demo: OK");
    Ok(())
}
