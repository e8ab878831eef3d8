//! VRF-aware IPsec scenario (VM), the seeds' "VRF-aware IPsec": one hub, two customers whose
//! spokes use the same inside prefix, each customer's tunnel enslaved to its own inside VRF,
//! and the hub's underlay in a front-door VRF that the main table knows nothing of.
//!
//! ```text
//!   spoke sa  e-h 198.51.100.2 ==== 198.51.100.1 e-sa [hub, both uplinks in vrf wan]
//!   spoke sb  e-h 203.0.113.2  ==== 203.0.113.1  e-sb
//!   hub TunA 10.0.0.1/30 in vrf custA -> 10.9.0.0/24 (spoke sa's LAN 10.9.0.1)
//!   hub TunB 10.0.0.1/30 in vrf custB -> 10.9.0.0/24 (spoke sb's LAN 10.9.0.1, same prefix)
//! ```

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, wait_until};
use nstest::peer::vtid_peer;
use nstest::vtid::{Vtid, write_secret};
use nstest::vtidconf::VtidConf;
use nstest::{Netns, TopoSpec, scenario};

const PSK: &str = "vrf-test-key";

/// The hub: VRFs wan (front door), custA and custB; TunB to spoke sb in custB, its underlay
/// in wan when `tun_b_fvrf`; with `tun_a`, also TunA to spoke sa in custA over wan.
fn hub_config(key: &std::path::Path, tun_a: bool, tun_b_fvrf: bool) -> String {
    let mut c = VtidConf::new();
    c.vrf("wan", 100);
    c.vrf("custA", 101);
    c.vrf("custB", 102);
    c.keyring("K", &[("0.0.0.0/0", key)]);
    c.transform_set("T", "aes-gcm-128");
    c.ipsec_profile("P", &["T"]);
    let tunnels = [
        (
            tun_a,
            "TunA",
            "198.51.100.1",
            "198.51.100.2",
            "custA",
            Some("wan"),
        ),
        (
            true,
            "TunB",
            "203.0.113.1",
            "203.0.113.2",
            "custB",
            tun_b_fvrf.then_some("wan"),
        ),
    ];
    for (_, name, src, dst, vrf, fvrf) in tunnels.into_iter().filter(|t| t.0) {
        c.tunnel(name)
            .set("source", src)
            .set("destination", dst)
            .set("address", "10.0.0.1/30")
            .set("protection", "P")
            .set("routes", &["10.9.0.0/24"])
            .set("vrf", vrf)
            .set_opt("fvrf", fvrf)
            .set("initiate", false);
    }
    c.render()
}

/// A spoke: Tun0 from `src` to the hub at `dst`.
fn spoke_config(key: &std::path::Path, src: &str, dst: &str) -> String {
    let mut c = VtidConf::new();
    c.keyring("K", &[(dst, key)]);
    c.transform_set("T", "aes-gcm-128");
    c.ipsec_profile("P", &["T"]);
    c.tunnel("Tun0")
        .set("source", src)
        .set("destination", dst)
        .set("address", "10.0.0.2/30")
        .set("protection", "P");
    c.render()
}

/// Packets received on a spoke's tunnel interface.
fn rx(ns: &Netns) -> Result<u64> {
    Ok(kernel::link_stats(ns, "Tun0")?.rx_packets)
}

#[test]
#[ignore = "vm"]
fn vm_vrf_two_customers_overlapping_prefixes_front_door_vrf() {
    let spec = TopoSpec::new()
        .link("hub", "198.51.100.1/24", "sa", "198.51.100.2/24")
        .link("hub", "203.0.113.1/24", "sb", "203.0.113.2/24")
        .lan("sa", "10.9.0.1/24")
        .lan("sb", "10.9.0.1/24");
    scenario("vrf-hub", spec, |sc| {
        let hub = sc.topo.host("hub");
        // The operator's front-door VRF: both uplinks in table 100, nothing in main.
        hub.ip(&["link", "add", "wan", "type", "vrf", "table", "100"])?;
        hub.ip(&["link", "set", "wan", "up"])?;
        for dev in ["e-sa", "e-sb"] {
            hub.ip(&["link", "set", dev, "master", "wan"])?;
        }
        let main = hub.ip(&["route", "show", "table", "main"])?;
        ensure!(
            !main.contains("198.51.100.") && !main.contains("203.0.113."),
            "underlay still in the main table:\n{main}"
        );

        let kh = write_secret(&sc.dir().join("hub"), "k", PSK)?;
        let vh = Vtid::start_config(
            hub,
            &sc.dir().join("hub"),
            &hub_config(&kh, true, true),
            "TunA",
        )?;
        sc.add_peer("hub", vtid_peer(vh));
        let mut spokes = Vec::new();
        for (host, src, dst) in [
            ("sa", "198.51.100.2", "198.51.100.1"),
            ("sb", "203.0.113.2", "203.0.113.1"),
        ] {
            let k = write_secret(&sc.dir().join(host), "k", PSK)?;
            let v = Vtid::start_config(
                sc.topo.host(host),
                &sc.dir().join(host),
                &spoke_config(&k, src, dst),
                "Tun0",
            )?;
            spokes.push(sc.add_peer(host, vtid_peer(v)));
        }
        for &p in &spokes {
            wait_until("spoke tunnel up", Duration::from_secs(40), || {
                sc.peer(p).is_up()
            })?;
        }
        let hub = sc.topo.host("hub");
        let (sa, sb) = (sc.topo.host("sa"), sc.topo.host("sb"));

        // Inside VRFs: each tunnel enslaved to its customer's VRF, its route in that table
        // only; the overlapping prefix is absent from main.
        for (tun, vrf) in [("TunA", "custA"), ("TunB", "custB")] {
            let link = hub.ip(&["-d", "link", "show", tun])?;
            ensure!(link.contains(&format!("master {vrf}")), "{tun}:\n{link}");
            let routes = hub.ip(&["route", "show", "vrf", vrf])?;
            ensure!(
                routes.contains(&format!("10.9.0.0/24 dev {tun}")),
                "vrf {vrf}:\n{routes}"
            );
        }
        let main = hub.ip(&["route", "show", "table", "main"])?;
        ensure!(
            !main.contains("10.9.0.0/24"),
            "customer prefix leaked into main:\n{main}"
        );

        // Each customer reaches only its own spoke: pinging the same address from each VRF
        // lands on a different spoke.
        for (vrf, mine, other) in [("custA", sa, sb), ("custB", sb, sa)] {
            let (m0, o0) = (rx(mine)?, rx(other)?);
            let got = kernel::ping(hub, vrf, "10.9.0.1", 3)?;
            ensure!(got > 0, "no answer from 10.9.0.1 in vrf {vrf}");
            let (m1, o1) = (rx(mine)?, rx(other)?);
            ensure!(
                m1 >= m0 + u64::from(got) && o1 == o0,
                "vrf {vrf}: own spoke rx {m0}->{m1}, other spoke rx {o0}->{o1}"
            );
        }
        // Nothing reaches a customer from the main table.
        ensure!(
            hub.exec(&["ping", "-n", "-c", "1", "-W", "1", "10.9.0.1"])
                .is_err(),
            "the main table reached a customer prefix"
        );

        // vtid show names both VRFs per tunnel.
        let sock = std::env::temp_dir().join(format!("nstest-vtid-{}.sock", hub.name()));
        let bin = nstest::vtid::binary()?;
        let out = hub.exec(&[
            bin.to_str().context("utf-8")?,
            "--socket",
            sock.to_str().context("utf-8")?,
            "show",
            "tunnels",
            "--json",
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        for (tun, vrf) in [("TunA", "custA"), ("TunB", "custB")] {
            let t = v
                .as_array()
                .and_then(|a| a.iter().find(|t| t["name"] == tun))
                .with_context(|| format!("{tun} not shown: {v}"))?;
            ensure!(
                t["vrf"] == vrf && t["fvrf"] == "wan" && t["state"] == "up",
                "{t}"
            );
        }
        Ok(())
    });
}

/// IKE sockets bound to a VRF device (`ss` shows them as `ADDR%VRF:PORT`).
fn vrf_sockets(ns: &Netns, vrf: &str) -> Result<usize> {
    let out = ns.exec(&["ss", "-Huan"])?;
    Ok(out
        .lines()
        .filter(|l| l.contains(&format!("%{vrf}:500")) || l.contains(&format!("%{vrf}:4500")))
        .count())
}

/// A front-door VRF that only a reload brings in gets its IKE sockets then (the spoke behind
/// it can connect: an unbound socket does not receive what arrives on a VRF slave), and a
/// reload that removes it closes them.
#[test]
#[ignore = "vm"]
fn vm_vrf_front_door_vrf_added_and_removed_by_reload() {
    let spec = TopoSpec::new()
        .link("hub", "198.51.100.1/24", "sa", "198.51.100.2/24")
        .link("hub", "203.0.113.1/24", "sb", "203.0.113.2/24");
    scenario("vrf-reload", spec, |sc| {
        let hub = sc.topo.host("hub");
        hub.ip(&["link", "add", "wan", "type", "vrf", "table", "100"])?;
        hub.ip(&["link", "set", "wan", "up"])?;
        hub.ip(&["link", "set", "e-sa", "master", "wan"])?;
        // First configuration: TunB only, in the main table; no front-door VRF.
        let kh = write_secret(&sc.dir().join("hub"), "k", PSK)?;
        let first = hub_config(&kh, false, false);
        let vh = Vtid::start_config(hub, &sc.dir().join("hub"), &first, "TunB")?;
        let h = sc.add_peer("hub", vtid_peer(vh));
        let hub = sc.topo.host("hub");
        ensure!(vrf_sockets(hub, "wan")? == 0, "VRF sockets before any fvrf");

        // Reload with TunA in front-door VRF wan.
        let path = sc.dir().join("hub").join("vtid.toml");
        std::fs::write(&path, hub_config(&kh, true, false))?;
        let t = std::time::Instant::now();
        let hubv = sc.peer_mut(h).as_vtid().context("the hub is vtid")?;
        hubv.cli(&["reload"])?;
        let hub = sc.topo.host("hub");
        ensure!(
            vrf_sockets(hub, "wan")? >= 2,
            "no IKE sockets in vrf wan after the reload:\n{}",
            hub.exec(&["ss", "-Huan"])?
        );
        let k = write_secret(&sc.dir().join("sa"), "k", PSK)?;
        let v = Vtid::start_config(
            sc.topo.host("sa"),
            &sc.dir().join("sa"),
            &spoke_config(&k, "198.51.100.2", "198.51.100.1"),
            "Tun0",
        )?;
        let sa = sc.add_peer("sa", vtid_peer(v));
        wait_until(
            "spoke behind the new fvrf up",
            Duration::from_secs(40),
            || sc.peer(sa).is_up(),
        )?;
        println!(
            "fvrf added by reload: spoke up {:?} after the reload",
            t.elapsed()
        );
        ensure!(
            sc.peer(h)
                .log()
                .contains("IKE socket bound to front-door VRF"),
            "binding not logged"
        );

        // Reload without TunA: the VRF's sockets close.
        std::fs::write(&path, &first)?;
        let hubv = sc.peer_mut(h).as_vtid().context("the hub is vtid")?;
        hubv.cli(&["reload"])?;
        let hub = sc.topo.host("hub");
        ensure!(
            vrf_sockets(hub, "wan")? == 0,
            "VRF sockets left after the fvrf was removed:\n{}",
            hub.exec(&["ss", "-Huan"])?
        );
        let main = hub.exec(&["ss", "-Huan"])?;
        ensure!(
            main.contains("0.0.0.0:500 "),
            "the main IKE socket went with the VRF's:\n{main}"
        );
        Ok(())
    });
}
