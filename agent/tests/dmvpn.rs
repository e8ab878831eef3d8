//! DMVPN scenarios (VM): FRR's nhrpd on a hub and spokes (`nstest::dmvpn`), mGRE devices on
//! one WAN router, phase 3 shortcuts driven by the hub's NFLOG Traffic Indications.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::assert::{pings_pass, wait_until};
use nstest::dmvpn::{MgreIface, Nhrp, Role, add_mgre, hub_nflog};
use nstest::{Netns, Scenario, TopoSpec, kernel, scenario};

const KEY: u32 = 100000;
const NFLOG_GROUP: u16 = 1;
const HUB_NBMA: &str = "172.17.0.1";
const HUB_TUN: &str = "10.0.0.1";
/// (host, NBMA address, tunnel address, LAN address).
const SPOKES: [(&str, &str, &str, &str); 2] = [
    ("s1", "172.17.1.1", "10.0.0.11", "192.168.1.1"),
    ("s2", "172.17.2.1", "10.0.0.12", "192.168.2.1"),
];

/// A WAN router with the hub and the spokes each on its own /30, a LAN behind each.
fn topology() -> TopoSpec {
    let mut t = TopoSpec::new()
        .link("hub", "172.17.0.1/30", "wan", "172.17.0.2/30")
        .forward("wan")
        .forward("hub")
        .lan("hub", "192.168.0.1/24")
        .route("hub", "default", "via 172.17.0.2");
    for (i, (h, nbma, _, lan)) in SPOKES.iter().enumerate() {
        let n = i + 1;
        t = t
            .link(h, &format!("{nbma}/30"), "wan", &format!("172.17.{n}.2/30"))
            .forward(h)
            .lan(h, &format!("{lan}/24"))
            .route(h, "default", &format!("via 172.17.{n}.2"));
    }
    t
}

fn mgre(tunnel_addr: &str, role: Role, protection: Option<&str>) -> MgreIface {
    MgreIface {
        device: "gre1".into(),
        source_iface: Some(nstest::topo::iface_to("wan")),
        key: KEY,
        tunnel_addr: tunnel_addr.into(),
        network_id: 100000,
        role,
        protection: protection.map(str::to_string),
        holdtime: 60,
    }
}

/// Spokes reach the tunnel subnet and the other LANs through the hub (nhrpd's Resolution
/// Reply goes to the requester's tunnel address, so the tunnel subnet needs a route); the
/// hub reaches each spoke's LAN through its tunnel address.
fn overlay_routes(sc: &Scenario) -> Result<()> {
    let hub = sc.topo.host("hub");
    for (h, _, tun, lan) in SPOKES {
        let net = lan
            .rsplit_once('.')
            .map(|(n, _)| format!("{n}.0/24"))
            .unwrap_or_default();
        hub.ip(&["route", "add", &net, "via", tun, "dev", "gre1", "onlink"])?;
        let ns = sc.topo.host(h);
        for dst in ["192.168.0.0/16", "10.0.0.0/24"] {
            ns.ip(&["route", "add", dst, "via", HUB_TUN, "dev", "gre1", "onlink"])?;
        }
    }
    Ok(())
}

/// The gateway `ns` routes `dst` through (from `src`), empty for a direct route.
fn gateway(ns: &Netns, dst: &str, src: &str) -> Result<String> {
    let v = ns.ip_json(&["route", "get", dst, "from", src])?;
    Ok(v[0]["gateway"].as_str().unwrap_or_default().to_owned())
}

/// Runs `body`; on failure the nhrpd logs are printed with the error.
fn with_logs(nodes: &[(&str, &Nhrp)], body: impl FnOnce() -> Result<()>) -> Result<()> {
    let r = body();
    if r.is_err() {
        for (h, n) in nodes {
            eprintln!("==== nhrpd on {h}\n{}", n.log());
            eprintln!("{}", n.vtysh("show ip nhrp cache").unwrap_or_default());
        }
    }
    r
}

/// Waits until the hub's NHRP cache holds both spokes' registrations (dynamic entries, each
/// tunnel address at its NBMA address).
fn spokes_registered(hub: &Nhrp, within: Duration) -> Result<()> {
    wait_until("both spokes registered at the hub", within, || {
        let cache = hub.cache()?;
        Ok(SPOKES.iter().all(|(_, nbma, tun, _)| {
            cache
                .iter()
                .any(|e| e.protocol == *tun && e.nbma == *nbma && e.kind == "dynamic")
        }))
    })
}

/// The harness itself, before any IPsec: plain mGRE devices and nhrpd without `tunnel
/// protection`. Spokes register with the hub, spoke-to-spoke traffic first crosses the
/// hub, the hub's NFLOG rule makes nhrpd send a Traffic Indication, the spoke resolves the
/// other spoke and from then on sends to it directly: its route for the other LAN leads to
/// the other spoke's tunnel address and the hub's mGRE counters stay put.
#[test]
#[ignore = "vm"]
fn vm_dmvpn_nhrp_plain_mgre_shortcut() {
    scenario("dmvpn_plain", topology(), |sc| {
        let hub_if = mgre(
            HUB_TUN,
            Role::Hub {
                nflog_group: NFLOG_GROUP,
            },
            None,
        );
        add_mgre(sc.topo.host("hub"), &hub_if)?;
        hub_nflog(sc.topo.host("hub"), "gre1", NFLOG_GROUP)?;
        let hub = Nhrp::start(sc.topo.host("hub"), &[hub_if], &sc.dir().join("hub"))?;
        let mut spokes = Vec::new();
        for (h, _, tun, _) in SPOKES {
            let role = Role::Spoke {
                hub_nbma: HUB_NBMA.into(),
            };
            let i = mgre(tun, role, None);
            add_mgre(sc.topo.host(h), &i)?;
            spokes.push(Nhrp::start(sc.topo.host(h), &[i], &sc.dir().join(h))?);
        }
        overlay_routes(sc)?;
        let nodes = [("hub", &hub), ("s1", &spokes[0]), ("s2", &spokes[1])];
        with_logs(&nodes, || {
            spokes_registered(&hub, Duration::from_secs(60))?;
            let (s1, s2) = (sc.topo.host("s1"), sc.topo.host("s2"));
            let (src, dst) = (SPOKES[0].3, SPOKES[1].3);
            ensure!(
                gateway(s1, dst, src)? == HUB_TUN,
                "s1 should start via the hub"
            );
            let before = kernel::link_stats(sc.topo.host("hub"), "gre1")?;
            pings_pass(s1, src, dst, 3, "spoke to spoke via the hub")?;
            let after = kernel::link_stats(sc.topo.host("hub"), "gre1")?;
            ensure!(
                after.rx_packets >= before.rx_packets + 6,
                "the hub forwarded the first pings: {before:?} -> {after:?}"
            );
            // nhrpd installs the shortcut as a host route for the destination (and one for
            // its LAN) on gre1 with the other spoke's NBMA address as the neighbour's
            // link-layer address: no gateway, so "not via the hub" is what the route shows.
            wait_until("s1 resolved s2 (shortcut)", Duration::from_secs(90), || {
                kernel::ping(s1, src, dst, 1)?;
                let resolved = spokes[0]
                    .entry(SPOKES[1].2)?
                    .is_some_and(|e| e.nbma == SPOKES[1].1);
                Ok(resolved && gateway(s1, dst, src)? != HUB_TUN)
            })?;
            wait_until(
                "s2 resolved s1 (shortcut back)",
                Duration::from_secs(90),
                || {
                    kernel::ping(s1, src, dst, 1)?;
                    Ok(gateway(s2, src, dst)? != HUB_TUN)
                },
            )?;
            let before = kernel::link_stats(sc.topo.host("hub"), "gre1")?;
            pings_pass(s1, src, dst, 10, "spoke to spoke, direct")?;
            let after = kernel::link_stats(sc.topo.host("hub"), "gre1")?;
            // Ten pings through the hub would be 20 packets in (and 20 out); a
            // registration refresh may add one or two.
            ensure!(
                after.rx_packets - before.rx_packets <= 2,
                "the hub still carries spoke-to-spoke traffic: {before:?} -> {after:?}"
            );
            Ok(())
        })
    });
}

/// vtid's configuration for one DMVPN node: its mGRE tunnels (name, tunnel address, key) on
/// the WAN interface, protected in transport mode with a PSK for any peer (`shared` when
/// there are several, seed 003's spoke), and the VICI socket nhrpd finds through this node's
/// `ipsec --piddir`.
fn vtid_config(dir: &std::path::Path, tunnels: &[(&str, &str, u32)]) -> Result<String> {
    let psk = nstest::vtid::write_secret(dir, "psk.key", "dmvpn-test-secret")?;
    let mut c = format!(
        r#"[transform_set.T1]
esp = "aes-gcm-256"
mode = "transport"
[keyring.K]
[[keyring.K.peer]]
address = "0.0.0.0/0"
psk_file = "{psk}"
[ike_profile.IKE]
keyring = "K"
[ipsec_profile.vpnprof]
transform_sets = ["T1"]
ike_profile = "IKE"
[vici]
socket = "{sock}"
group = "frr"
"#,
        psk = psk.display(),
        sock = dir.join("charon.vici").display(),
    );
    for (name, addr, key) in tunnels {
        c.push_str(&format!(
            "[tunnel.{name}]\nmode = \"mgre\"\nsource = \"{wan}\"\naddress = \"{addr}/32\"\n\
             protection = \"vpnprof\"\nkey = {key}\nshared = {shared}\n",
            wan = nstest::topo::iface_to("wan"),
            shared = tunnels.len() > 1,
        ));
    }
    Ok(c)
}

/// Starts vtid on `host` with mGRE tunnels for `ifaces` (named by their devices) and nhrpd
/// driving it over VICI; returns nhrpd and vtid's peer index in the scenario.
fn start_node(sc: &mut Scenario, host: &str, ifaces: &[MgreIface]) -> Result<(Nhrp, usize)> {
    let dir = sc.dir().join(host);
    std::fs::create_dir_all(&dir)?;
    let tunnels: Vec<(&str, &str, u32)> = ifaces
        .iter()
        .map(|i| (i.device.as_str(), i.tunnel_addr.as_str(), i.key))
        .collect();
    let v = nstest::vtid::Vtid::start_config(
        sc.topo.host(host),
        &dir,
        &vtid_config(&dir, &tunnels)?,
        &ifaces[0].device,
    )?;
    let idx = sc.add_peer(host, nstest::peer::vtid_peer(v));
    let sock = dir.join("charon.vici");
    wait_until("vtid's VICI socket", Duration::from_secs(30), || {
        Ok(sock.exists())
    })?;
    for i in ifaces {
        wait_until("vtid's mGRE device", Duration::from_secs(30), || {
            Ok(sc.topo.host(host).ip(&["link", "show", &i.device]).is_ok())
        })?;
    }
    Ok((Nhrp::start(sc.topo.host(host), ifaces, &dir)?, idx))
}

/// Phase 3 with vtid on every node: nhrpd asks vtid (VICI `initiate`) for transport-mode SAs
/// protecting GRE with the hub before it registers; spoke-to-spoke traffic first crosses the
/// hub, the hub's Traffic Indication makes the spokes resolve each other, nhrpd asks for the
/// direct SAs, and from then on the spokes talk over an SA between their NBMA addresses
/// while the hub's mGRE counters stay put.
#[test]
#[ignore = "vm"]
fn vm_dmvpn_phase3_spoke_to_spoke_goes_direct() {
    scenario("dmvpn_phase3", topology(), |sc| {
        hub_nflog(sc.topo.host("hub"), "gre1", NFLOG_GROUP)?;
        let hub_role = Role::Hub {
            nflog_group: NFLOG_GROUP,
        };
        let mut hub_if = mgre(HUB_TUN, hub_role, Some("vpnprof"));
        hub_if.source_iface = None;
        let (hub, _) = start_node(sc, "hub", &[hub_if])?;
        let mut spokes = Vec::new();
        for (h, _, tun, _) in SPOKES {
            let role = Role::Spoke {
                hub_nbma: HUB_NBMA.into(),
            };
            let mut i = mgre(tun, role, Some("vpnprof"));
            i.source_iface = None;
            spokes.push(start_node(sc, h, &[i])?.0);
        }
        overlay_routes(sc)?;
        let nodes = [("hub", &hub), ("s1", &spokes[0]), ("s2", &spokes[1])];
        with_logs(&nodes, || {
            spokes_registered(&hub, Duration::from_secs(120))?;
            let h = sc.topo.host("hub");
            for (_, nbma, _, _) in SPOKES {
                ensure!(
                    !nstest::assert::spis_with(h, nbma)?.is_empty(),
                    "the hub has no SA with {nbma}"
                );
            }
            let (s1, s2) = (sc.topo.host("s1"), sc.topo.host("s2"));
            let (src, dst) = (SPOKES[0].3, SPOKES[1].3);
            pings_pass(s1, src, dst, 3, "spoke to spoke via the hub")?;
            wait_until(
                "direct spoke-to-spoke path",
                Duration::from_secs(120),
                || {
                    kernel::ping(s1, src, dst, 1)?;
                    Ok(gateway(s1, dst, src)? != HUB_TUN && gateway(s2, src, dst)? != HUB_TUN)
                },
            )?;
            wait_until("spoke-to-spoke SAs", Duration::from_secs(60), || {
                Ok(!nstest::assert::spis_with(s1, SPOKES[1].1)?.is_empty()
                    && !nstest::assert::spis_with(s2, SPOKES[0].1)?.is_empty())
            })?;
            let before = kernel::link_stats(h, "gre1")?;
            pings_pass(s1, src, dst, 10, "spoke to spoke, direct over IPsec")?;
            let after = kernel::link_stats(h, "gre1")?;
            ensure!(
                after.rx_packets - before.rx_packets <= 2,
                "the hub still carries spoke-to-spoke traffic: {before:?} -> {after:?}"
            );
            Ok(())
        })
    });
}

/// Seed 003's dual-hub dual-DMVPN reduced to one spoke: two hubs, each the NHS of its cloud
/// (GRE keys 100000 and 100001), and a spoke whose two mGRE tunnels on one source share one
/// protection. Both clouds come up; reloading the spoke without its second tunnel keeps the
/// first cloud's SAs (the same SPIs) and traffic.
#[test]
#[ignore = "vm"]
fn vm_dmvpn_dual_hub_shared_protection() {
    // (host, NBMA, tunnel address, key) of each hub; the spoke is s1 (SPOKES[0]).
    const HUBS: [(&str, &str, &str, u32); 2] = [
        ("hub", "172.17.0.1", "10.0.0.1", 100000),
        ("s2", "172.17.2.1", "10.0.1.1", 100001),
    ];
    const SPOKE_TUN: [&str; 2] = ["10.0.0.11", "10.0.1.11"];
    scenario("dmvpn_dual_hub", topology(), |sc| {
        let mut hubs = Vec::new();
        for (n, (h, _, tun, key)) in HUBS.iter().enumerate() {
            let mut i = mgre(
                tun,
                Role::Hub {
                    nflog_group: NFLOG_GROUP,
                },
                Some("vpnprof"),
            );
            i.source_iface = None;
            i.key = *key;
            i.network_id = *key;
            i.device = "gre1".into();
            let _ = n;
            hubs.push(start_node(sc, h, &[i])?.0);
        }
        let spoke_ifaces: Vec<MgreIface> = HUBS
            .iter()
            .zip(SPOKE_TUN)
            .enumerate()
            .map(|(n, ((_, nbma, _, key), tun))| {
                let role = Role::Spoke {
                    hub_nbma: (*nbma).into(),
                };
                let mut i = mgre(tun, role, Some("vpnprof"));
                i.source_iface = None;
                i.key = *key;
                i.network_id = *key;
                i.device = format!("gre{}", n + 1);
                i
            })
            .collect();
        let (spoke, vtid) = start_node(sc, "s1", &spoke_ifaces)?;
        let nodes = [("hub1", &hubs[0]), ("hub2", &hubs[1]), ("spoke", &spoke)];
        with_logs(&nodes, || {
            let s1 = sc.topo.host("s1");
            for (n, (h, nbma, tun, _)) in HUBS.iter().enumerate() {
                wait_until(
                    "the spoke registered in both clouds",
                    Duration::from_secs(120),
                    || {
                        Ok(hubs[n]
                            .entry(SPOKE_TUN[n])?
                            .is_some_and(|e| e.nbma == SPOKES[0].1 && e.kind == "dynamic"))
                    },
                )?;
                ensure!(
                    !nstest::assert::spis_with(s1, nbma)?.is_empty(),
                    "no SA with {h}"
                );
                pings_pass(s1, SPOKE_TUN[n], tun, 3, "spoke to its hub over the cloud")?;
            }
            // One Child SA pair per hub for both tunnels: two SAs with each.
            for (_, nbma, _, _) in HUBS {
                let n = nstest::assert::spis_with(s1, nbma)?.len();
                ensure!(n == 2, "{n} SAs with {nbma}, want one pair");
            }
            // `show sa` names both tunnels on each shared Child SA.
            let tunnels_of_sas = |ns: &Netns| -> Result<Vec<serde_json::Value>> {
                let v = nstest::vtid::show_in(ns, "sa")?;
                Ok(nstest::assert::rows(&v)
                    .map(|r| r["tunnels"].clone())
                    .collect())
            };
            let rows = tunnels_of_sas(s1)?;
            ensure!(
                rows.len() == 2
                    && rows
                        .iter()
                        .all(|t| *t == serde_json::json!(["gre1", "gre2"])),
                "show sa: {rows:?}"
            );
            let kept = nstest::assert::spis_with(s1, HUBS[0].1)?;
            // Reload without the second cloud's tunnel.
            {
                let v = sc.peer_mut(vtid).as_vtid().context("vtid")?;
                let path = v.config_path();
                let config = std::fs::read_to_string(&path)?;
                let cut = config.find("[tunnel.gre2]").context("gre2 in the config")?;
                std::fs::write(&path, &config[..cut])?;
                v.cli(&["reload"])?;
            }
            let s1 = sc.topo.host("s1");
            wait_until("gre2 removed", Duration::from_secs(30), || {
                Ok(s1.ip(&["link", "show", "gre2"]).is_err())
            })?;
            pings_pass(
                s1,
                SPOKE_TUN[0],
                HUBS[0].2,
                5,
                "the first cloud after the reload",
            )?;
            let now = nstest::assert::spis_with(s1, HUBS[0].1)?;
            ensure!(
                now == kept,
                "the first cloud's SAs changed: {kept:x?} -> {now:x?}"
            );
            Ok(())
        })
    });
}
