//! The Ansible role's example inventory in the VM: `packaging/ansible/test` (run by
//! `./x test`) renders every router's vtid.toml and key files into
//! `$CARGO_TARGET_DIR/ansible/render/HOST/`; this runs those exact files, two hubs with
//! dynamic VTIs (one clone per spoke from a virtual template) and three spokes with static
//! VTIs, behind one Internet router, and checks that every spoke LAN reaches every other
//! spoke LAN through the primary hub.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, wait_until};
use nstest::vtid::Vtid;
use nstest::{TopoSpec, scenario};

/// (inventory name, underlay network, LAN) as in packaging/ansible/inventory/example. A
/// hub's LAN is its `lan0`, which the inventory names as the interface its clones borrow
/// their address from (`vtid_hub_unnumbered`).
const ROUTERS: [(&str, &str, &str); 5] = [
    ("hub1", "100.64.1", "10.0.1.1/24"),
    ("hub2", "100.64.2", "10.0.2.1/24"),
    ("spoke1", "100.64.11", "10.1.0.1/24"),
    ("spoke2", "100.64.12", "10.2.0.1/24"),
    ("spoke3", "100.64.13", "10.3.0.1/24"),
];

fn render_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("test binary outside a target dir")?;
    Ok(target.join("ansible/render"))
}

fn spec() -> TopoSpec {
    let mut t = TopoSpec::new().forward("inet");
    for (name, net, lan) in ROUTERS {
        t = t
            .link("inet", &format!("{net}.1/24"), name, &format!("{net}.2/24"))
            .route(name, "default", &format!("via {net}.1"))
            .lan(name, lan);
        if name.starts_with("hub") {
            t = t.forward(name);
        }
    }
    t
}

#[test]
// `./x test` runs packaging/ansible/test before the VM suite.
#[ignore = "vm, after packaging/ansible/test"]
fn vm_ansible_example_inventory_spokes_reach_each_other() {
    scenario("ansible-hub-spoke", spec(), |sc| {
        let dir = render_dir()?;
        let mut daemons = Vec::new();
        for (name, _, _) in ROUTERS {
            let file = dir.join(name).join("vtid.toml");
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!(
                    "{} is missing: packaging/ansible/test (run by `./x test`) renders it",
                    file.display()
                )
            })?;
            let v = Vtid::start_config(sc.topo.host(name), &sc.dir().join(name), &text, "Tunnel0")?;
            daemons.push((name, v));
        }
        let res = (|| -> Result<()> {
            // Spokes initiate: spoke1 and spoke2 to both hubs, spoke3 to hub1.
            for (name, want) in [
                ("spoke1", 2),
                ("spoke2", 2),
                ("spoke3", 1),
                ("hub1", 3),
                ("hub2", 2),
            ] {
                let v = &daemons.iter().find(|(n, _)| *n == name).expect("started").1;
                wait_until(
                    &format!("{name}: {want} tunnels up"),
                    Duration::from_secs(60),
                    || {
                        let t = v.show("tunnels")?;
                        Ok(t.as_array()
                            .map_or(0, |r| r.iter().filter(|t| t["state"] == "up").count())
                            == want)
                    },
                )?;
            }
            // Each hub gave each of its spokes a clone of its virtual template, routed to that
            // spoke's LAN by the traffic selector the spoke announced.
            for (hub, spokes) in [("hub1", &[1, 2, 3][..]), ("hub2", &[1, 2][..])] {
                let v = &daemons.iter().find(|(n, _)| *n == hub).expect("started").1;
                let t = v.show("tunnels")?;
                let mut routed: Vec<String> = Vec::new();
                for c in t.as_array().into_iter().flatten() {
                    ensure!(
                        c["dynamic"] == true,
                        "{hub}: a tunnel that is not a clone: {c}"
                    );
                    let r = c["routes"].as_array().cloned().unwrap_or_default();
                    ensure!(r.len() == 1, "{hub}: clone {} routes {r:?}", c["name"]);
                    routed.push(r[0].as_str().unwrap_or_default().to_string());
                }
                routed.sort();
                let want: Vec<String> = spokes.iter().map(|n| format!("10.{n}.0.0/24")).collect();
                ensure!(
                    routed == want,
                    "{hub}: clones route {routed:?}, want {want:?}: {t}"
                );
            }
            for (a, na) in [("spoke1", 1), ("spoke2", 2), ("spoke3", 3)] {
                // The primary hub's LAN too (inside the spokes' 10.0.0.0/8 summary).
                let n = kernel::ping(sc.topo.host(a), &format!("10.{na}.0.1"), "10.0.1.1", 3)?;
                ensure!(n >= 2, "{a}: hub1's LAN: {n}/3 answered");
                for nb in [1, 2, 3] {
                    if nb == na {
                        continue;
                    }
                    let (src, dst) = (format!("10.{na}.0.1"), format!("10.{nb}.0.1"));
                    let n = kernel::ping(sc.topo.host(a), &src, &dst, 3)?;
                    ensure!(n >= 2, "{a}: {src} -> {dst}: {n}/3 answered");
                }
            }
            // Through hub1, the primary: its tunnels to the spokes carried the pings.
            let hub1 = &daemons[0].1;
            let sa = hub1.show("sa")?;
            let rows = sa.as_array().cloned().unwrap_or_default();
            ensure!(rows.len() == 3, "hub1 has {} Child SAs: {sa}", rows.len());
            for r in &rows {
                let p = r["out"]["packets"].as_u64().unwrap_or(0);
                ensure!(
                    p >= 4,
                    "hub1 sent only {p} packets into {}: {sa}",
                    r["tunnel"]
                );
            }
            // Dual hub: hub1 dies without a word; spoke1 and spoke2 declare it dead (the
            // example's DPD: 9 s at most), withdraw their primary routes, and their LANs reach
            // each other through hub2 on the floating routes.
            daemons[0].1.kill9()?;
            let t0 = std::time::Instant::now();
            // SIGKILL leaves hub1's kernel SAs in place, so pings alone would still pass through
            // it: wait for both spokes to route the other's LAN into Tunnel1 (hub2) first.
            for (a, src, dst) in [
                ("spoke1", "10.1.0.1", "10.2.0.1"),
                ("spoke2", "10.2.0.1", "10.1.0.1"),
            ] {
                wait_until(
                    &format!("{a} routes {dst} into Tunnel1 (hub2)"),
                    Duration::from_secs(40),
                    || Ok(kernel::route_dev(sc.topo.host(a), dst, src)? == "Tunnel1"),
                )?;
            }
            wait_until(
                "spoke1 and spoke2 reach each other through hub2",
                Duration::from_secs(20),
                || Ok(kernel::ping(sc.topo.host("spoke1"), "10.1.0.1", "10.2.0.1", 1)? == 1),
            )?;
            eprintln!(
                "dual hub: spoke1 -> spoke2 through hub2 {:?} after hub1 died",
                t0.elapsed()
            );
            let hub2 = &daemons[1].1;
            let sa = hub2.show("sa")?;
            let carried: u64 = sa
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["out"]["packets"].as_u64().unwrap_or(0))
                .sum();
            ensure!(carried >= 2, "hub2 carried nothing: {sa}");
            let spoke1 = &daemons[2].1;
            let t = spoke1.show("tunnels")?;
            let line = |n: &str| {
                t.as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["name"] == n)
                    .map(|r| r["line"].clone())
            };
            ensure!(
                line("Tunnel0") == Some("down".into()) && line("Tunnel1") == Some("up".into()),
                "spoke1's tunnels after hub1 died: {t}"
            );
            Ok(())
        })();
        res.with_context(|| {
            daemons
                .iter()
                .map(|(n, v)| format!("==== log of vtid on {n}\n{}", v.log()))
                .collect::<String>()
        })
    });
}
