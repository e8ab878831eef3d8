//! The topology builder itself: links, routes, NAT and netem behave as declared.

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, Capture};
use nstest::{TopoSpec, scenario};

/// Host-kernel test (veth and namespaces work without the VM): two hosts ping each other,
/// and the namespaces are gone after the topology is dropped.
#[test]
fn veth_link_between_two_hosts() -> Result<()> {
    let names;
    {
        let topo = TopoSpec::new()
            .link("a", "198.51.100.1/30", "b", "198.51.100.2/30")
            .build()?;
        names = topo
            .hosts()
            .map(|(_, ns)| ns.name().to_string())
            .collect::<Vec<_>>();
        let got = kernel::ping(topo.host("a"), "198.51.100.1", "198.51.100.2", 2)?;
        ensure!(got == 2, "{got}/2 replies over a plain veth");
        let mtu = kernel::link_mtu(topo.host("a"), "e-b")?;
        ensure!(mtu == 1500, "veth mtu {mtu}");
    }
    let left = nstest::cmd::run_args(&["ip", "netns", "list"])?;
    for n in names {
        ensure!(!left.contains(&n), "namespace {n} left behind");
    }
    Ok(())
}

#[test]
#[ignore = "vm"]
fn vm_nat_box_masquerades_and_netem_delays() {
    let spec = TopoSpec::new()
        .link("inside", "10.9.0.2/24", "nat", "10.9.0.1/24")
        .link("nat", "203.0.113.1/24", "outside", "203.0.113.2/24")
        .route("inside", "default", "via 10.9.0.1")
        .nat("nat", "e-outside")
        .netem("nat", "e-outside", "delay 100ms");
    scenario("topo-nat", spec, |sc| {
        let out = sc.topo.host("outside");
        let cap = Capture::start(out, "e-nat", sc.dir().join("outside.pcap"))?;
        let reply =
            sc.topo
                .host("inside")
                .exec(&["ping", "-n", "-c", "2", "-W", "3", "203.0.113.2"])?;
        let [from_nat, from_inside] =
            cap.stop_and_count(&["icmp and src 203.0.113.1", "src 10.9.0.2"])?[..]
        else {
            unreachable!()
        };
        ensure!(
            from_nat == 2,
            "outside saw {from_nat} echo requests from the NAT address"
        );
        ensure!(from_inside == 0, "outside saw the private source address");
        // rtt min/avg/max/mdev = 100.5/...: the 100 ms of netem is in every round trip.
        let min: f64 = reply
            .lines()
            .find(|l| l.contains("min/avg/max"))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.trim().split('/').next())
            .and_then(|v| v.parse().ok())
            .context("ping rtt line")?;
        ensure!(min >= 100.0, "rtt {min} ms below the 100 ms netem delay");
        Ok(())
    });
}
