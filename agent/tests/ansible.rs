//! The Ansible role's example inventory in the VM: `packaging/ansible/test` (run by
//! `./x test`) renders every router's vtid.toml and key files into
//! `$CARGO_TARGET_DIR/ansible/render/HOST/`; this runs those exact files, two hubs and three
//! spokes behind one Internet router, and checks that every spoke LAN reaches every other
//! spoke LAN through the primary hub.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, wait_until};
use nstest::vtid::Vtid;
use nstest::{TopoSpec, scenario};

/// (inventory name, underlay address, LAN) as in packaging/ansible/inventory/example.
const ROUTERS: [(&str, &str, Option<&str>); 5] = [
    ("hub1", "100.64.1", None),
    ("hub2", "100.64.2", None),
    ("spoke1", "100.64.11", Some("10.1.0.1/24")),
    ("spoke2", "100.64.12", Some("10.2.0.1/24")),
    ("spoke3", "100.64.13", Some("10.3.0.1/24")),
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
            .route(name, "default", &format!("via {net}.1"));
        if let Some(lan) = lan {
            t = t.lan(name, lan);
        } else {
            t = t.forward(name);
        }
    }
    t
}

#[test]
// Not in `./x test` yet (issue 8 open): it needs the files packaging/ansible/test renders,
// and that step is not in `./x test` while the package test fails. Run by hand after it:
// `nstest vm-suite --filter pkg_scenario_`.
#[ignore = "vm, after packaging/*/test"]
fn pkg_scenario_ansible_example_inventory_spokes_reach_each_other() {
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
            for (a, na) in [("spoke1", 1), ("spoke2", 2), ("spoke3", 3)] {
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
