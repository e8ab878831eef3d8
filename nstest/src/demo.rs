//! The README's demo, run inside the VM: two sites, a and b, joined by an underlay link, each
//! with a LAN. Site a runs vtid (xfrm interface), site b runs strongSwan (ip_vti): an IKEv2
//! tunnel between two independent implementations carries LAN-to-LAN pings, and vtid's own
//! `show` commands describe it. Then hub and spokes: a vtid hub clones one xfrm interface per
//! spoke from a virtual template (dynamic VTIs), a strongSwan spoke and a vtid spoke reach
//! each other's LAN through it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, Capture};
use nstest::peer::{Device, Impl, StrongswanVersion, TunnelEnd};
use nstest::{Scenario, TopoSpec, hub};

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
    let t0 = Instant::now();
    let pb = sc.start_peer(Impl::Strongswan(StrongswanVersion::Debian12), "b", &b)?;
    let pa = sc.start_peer(Impl::Vtid, "a", &a)?;
    // Polled on vtid's control socket (a CLI start per poll costs about a second in the VM),
    // then confirmed once on both sides.
    kernel::wait_until("tunnel up", Duration::from_secs(40), || {
        let v = sc.peer_mut(pa).as_vtid().context("site a is vtid")?;
        Ok(v.query("sa")?.as_array().is_some_and(|a| !a.is_empty()))
    })?;
    ensure!(
        sc.peer(pa).is_up()? && sc.peer(pb).is_up()?,
        "the tunnel is not up on both sides"
    );
    let cap = Capture::start(sc.topo.host("b"), "e-a", sc.dir().join("underlay.pcap"))?;
    println!(
        "demo: tunnel up {:.1} s after starting both daemons",
        t0.elapsed().as_secs_f64()
    );
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
    // The two sites go (their daemons and namespaces) before the hub starts.
    drop(sc);
    hub_and_spokes()?;
    println!("demo: OK");
    Ok(())
}

/// A vtid hub with virtual template VT1 and two spokes, s1 (strongSwan) and s2 (vtid), each
/// on its own link to the hub and with its own LAN (`nstest::hub`).
fn hub_and_spokes() -> Result<()> {
    println!(
        "demo: hub and spokes: the vtid hub clones an xfrm interface per spoke from \
         virtual_template VT1; spoke s1 runs strongSwan, spoke s2 runs vtid"
    );
    let t0 = Instant::now();
    let mut sc = Scenario::new("demo-hub", hub::topology(2))?;
    let h = hub::start_hub(&mut sc, hub::ONE_TEMPLATE)?;
    let s1 = hub::swan_spoke(&mut sc, "s1", 1, StrongswanVersion::Debian12)?;
    // The vtid spoke initiates as soon as it starts.
    let s2 = hub::vtid_spoke(&mut sc, "s2", 2)?;
    s1.initiate().context("strongSwan spoke s1 initiates")?;
    let clones = |sc: &mut Scenario| -> Result<usize> {
        let v = sc.peer_mut(h).as_vtid().context("the hub is vtid")?;
        Ok(v.query("tunnels")?
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["dynamic"] == true && t["state"] == "up")
            .count())
    };
    // Polled on the daemons' control sockets, like the first tunnel.
    kernel::wait_until("both spokes up", Duration::from_secs(60), || {
        let spoke = sc.peer_mut(s2).as_vtid().context("s2 is vtid")?;
        let up = spoke.query("sa")?.as_array().is_some_and(|a| !a.is_empty());
        Ok(up && clones(&mut sc)? == 2)
    })?;
    println!(
        "demo: both spokes connected, each on its own clone, {:.1} s after starting the hub",
        t0.elapsed().as_secs_f64()
    );
    let got = kernel::ping(sc.topo.host("s1"), "10.1.0.1", "10.2.0.1", 5)?;
    println!(
        "demo: ping spoke LAN 10.1.0.1 (s1, strongSwan) -> spoke LAN 10.2.0.1 (s2, vtid) \
         through the hub: {got}/5 replies"
    );
    let hubv = sc.peer_mut(h).as_vtid().context("the hub is vtid")?;
    for what in ["sessions", "tunnels"] {
        println!("---- hub: vtid show {what}");
        print!("{}", hubv.cli(&["show", what])?);
    }
    let links = sc
        .topo
        .host("hub")
        .ip(&["-br", "link", "show", "type", "xfrm"])?;
    println!("---- hub: ip -br link show type xfrm (the clones)");
    print!("{links}");
    ensure!(got == 5, "only {got}/5 pings answered between the spokes");
    let n = links.lines().filter(|l| l.starts_with("vtid-va")).count();
    ensure!(n == 2, "expected two clones vtid-va*, found {n}");
    Ok(())
}
