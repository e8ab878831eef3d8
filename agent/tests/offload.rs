//! ESP hardware offload scenarios (VM): a vtid tunnel whose underlay is a netdevsim port (the
//! simulated NIC built from Debian's linux-source by the VM suite runner), and the refusal and
//! fallback paths on a veth, which has no ESP offload.
//!
//! netdevsim on 6.1 cannot carry traffic to another device (ports are not linked), so the
//! offloaded tunnel's source address lives on the netdevsim port while its packets leave
//! through a veth: the kernel and the driver hold the SAs as offloaded (what these tests
//! check), and the kernel encrypts in software because the route's device is not the offload
//! device (xfrm_dev_offload_ok), which keeps the tunnel usable for the ping.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, wait_until};
use nstest::peer::vtid_peer;
use nstest::vtid::{Vtid, write_secret};
use nstest::{Netns, TopoSpec, scenario};

const PSK: &str = "offload-test-key";

/// Negotiated SPIs in a namespace (SPI 0 entries are larval states from ACQUIREs).
fn spis(ns: &Netns) -> Result<BTreeSet<u32>> {
    Ok(kernel::xfrm_states(ns)?
        .into_iter()
        .filter(|s| s.spi != 0)
        .map(|s| s.spi)
        .collect())
}

/// One tunnel's configuration: the transform sets are CBC first, GCM second, so only the
/// AEAD preference of `auto` makes the responder pick the offloadable GCM.
#[allow(clippy::too_many_arguments)]
fn config(
    key: &std::path::Path,
    name: &str,
    src: &str,
    dst: &str,
    inner: &str,
    offload: &str,
    initiate: bool,
    lifetime: u32,
) -> String {
    format!(
        r#"
[keyring.K]
[[keyring.K.peer]]
address = "0.0.0.0/0"
psk_file = "{key}"

[transform_set.CBC]
esp = "aes-cbc-128"
integrity = "sha256"

[transform_set.GCM]
esp = "aes-gcm-128"

[ipsec_profile.P]
transform_sets = ["CBC", "GCM"]
lifetime = {{ seconds = {lifetime} }}

[tunnel.{name}]
source = "{src}"
destination = "{dst}"
address = "{inner}"
protection = "P"
offload = "{offload}"
initiate = {initiate}
"#,
        key = key.display()
    )
}

/// `vtid show WHAT --json` of the vtid running in `ns` (nstest::vtid's socket convention),
/// without needing the `Vtid` the scenario keeps for its diagnostics.
fn show(ns: &Netns, what: &str) -> Result<serde_json::Value> {
    let sock = std::env::temp_dir().join(format!("nstest-vtid-{}.sock", ns.name()));
    let bin = nstest::vtid::binary()?;
    let out = ns.exec(&[
        bin.to_str().context("utf-8 path")?,
        "--socket",
        sock.to_str().context("utf-8 path")?,
        "show",
        what,
        "--json",
    ])?;
    Ok(serde_json::from_str(&out)?)
}

fn sa_offload(sa: &serde_json::Value, dir: &str) -> (Option<String>, Option<String>) {
    let o = &sa["offload"][dir];
    (
        o["device"].as_str().map(str::to_string),
        o["mode"].as_str().map(str::to_string),
    )
}

const TUNNEL1_A: &str = r#"
[tunnel.Tunnel1]
source = "192.0.2.1"
destination = "198.51.100.3"
address = "10.99.1.1/30"
protection = "P"
offload = "packet"
initiate = false
"#;

const TUNNEL1_B: &str = r#"
[tunnel.Tunnel1]
source = "198.51.100.3"
destination = "192.0.2.1"
address = "10.99.1.2/30"
protection = "P"
"#;

/// b's second address, the far end of Tunnel1.
fn b_extra(b: &Netns) -> Result<()> {
    b.ip(&["addr", "add", "198.51.100.3/24", "dev", "e-a"])?;
    Ok(())
}

/// `offload = "auto"` on a netdevsim underlay: the responder prefers AES-GCM (the only
/// transform the device offloads) over the CBC its peer lists first, packet offload is refused
/// by 6.1 and crypto offload taken, for both directions; `vtid show sa`, `ip xfrm state` and
/// netdevsim's debugfs agree; after a rekey the new SAs are offloaded again and the old ones
/// leave the driver. A second tunnel demanding packet offload is refused (6.1 has no
/// XFRM_OFFLOAD_PACKET) and stays down with the reason shown. b has the short lifetime so that b initiates the rekey too: a responder
/// picks the transform, so the AEAD preference decides only where vtid responds (as
/// initiator it offers GCM first, which a peer may or may not honour).
#[test]
#[ignore = "vm"]
fn vm_offload_auto_on_netdevsim_offloads_both_directions_and_rekeys() {
    let spec = TopoSpec::new()
        .link("a", "198.51.100.1/24", "b", "198.51.100.2/24")
        .route("b", "192.0.2.1/32", "via 198.51.100.1");
    scenario("offload-nsim", spec, |sc| {
        let a = sc.topo.host("a");
        // No IPv6 on a's tunnel device: its router solicitations would hit the policy, and
        // the ACQUIRE would make a initiate; a must stay the responder, whose choice among
        // b's offers is what `auto`'s AEAD preference decides.
        a.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        let nsim = nstest::netdevsim::Device::new(a.name(), "nsim0")?;
        a.ip(&["addr", "add", "192.0.2.1/24", "dev", "nsim0"])?;
        a.ip(&["link", "set", "nsim0", "up"])?;
        let ka = write_secret(&sc.dir().join("a"), "k", PSK)?;
        let kb = write_secret(&sc.dir().join("b"), "k", PSK)?;
        let ca = config(
            &ka,
            "Tunnel0",
            "192.0.2.1",
            "198.51.100.2",
            "10.99.0.1/30",
            "auto",
            false,
            3600,
        );
        let cb = config(
            &kb,
            "Tunnel0",
            "198.51.100.2",
            "192.0.2.1",
            "10.99.0.2/30",
            "off",
            true,
            30,
        );
        // Tunnel1 demands packet offload on the same netdevsim underlay from a second peer
        // address of b: the device has esp-hw-offload, so it is tried, and 6.1 refuses the
        // XFRM_OFFLOAD_PACKET flag when its first SA is installed.
        b_extra(sc.topo.host("b"))?;
        let ca = ca + TUNNEL1_A;
        let cb = cb + TUNNEL1_B;
        let va = Vtid::start_config(a, &sc.dir().join("a"), &ca, "Tunnel0")?;
        let pa = sc.add_peer("a", vtid_peer(va));
        let vb = Vtid::start_config(sc.topo.host("b"), &sc.dir().join("b"), &cb, "Tunnel0")?;
        let pb = sc.add_peer("b", vtid_peer(vb));
        wait_until("tunnel up", Duration::from_secs(40), || sc.peer(pb).is_up())?;
        let b = sc.topo.host("b");
        ensure!(
            kernel::ping(b, "10.99.0.2", "10.99.0.1", 3)? > 0,
            "no ping through the tunnel"
        );

        let a = sc.topo.host("a");
        let check = || -> Result<BTreeSet<u32>> {
            let v = show(a, "sa")?;
            let sas = v.as_array().context("show sa")?;
            ensure!(!sas.is_empty(), "no SA shown");
            let mut want = BTreeSet::new();
            for sa in sas {
                ensure!(
                    sa["transform"] == "esp-gcm 128",
                    "auto did not prefer GCM: {sa}"
                );
                for dir in ["in", "out"] {
                    ensure!(
                        sa_offload(sa, dir) == (Some("nsim0".into()), Some("crypto".into())),
                        "{dir} not offloaded: {sa}"
                    );
                }
                for k in ["spi_in", "spi_out"] {
                    want.insert(u32::from_str_radix(sa[k].as_str().context("spi")?, 16)?);
                }
            }
            let text = a.ip(&["xfrm", "state"])?;
            for d in ["dir out", "dir in"] {
                let line = format!("crypto offload parameters: dev nsim0 {d}");
                ensure!(
                    text.contains(&line),
                    "ip xfrm state lacks {line:?}:\n{text}"
                );
            }
            let hw = nsim.ipsec_debugfs()?;
            for spi in &want {
                ensure!(
                    hw.contains(&format!("spi=0x{spi:08x}")),
                    "netdevsim lacks {spi:08x}:\n{hw}"
                );
            }
            Ok(want)
        };
        let first = check()?;
        let t = show(a, "tunnels")?;
        let o = &t[0]["offload"];
        ensure!(
            o["policy"] == "auto" && o["in"]["device"] == "nsim0" && o["out"]["mode"] == "crypto",
            "show tunnels: {t}"
        );
        // Rekey (b's 30 s lifetime): the new SAs are offloaded too, the old ones leave the driver.
        wait_until("Child SA rekeyed", Duration::from_secs(60), || {
            Ok(spis(a)?.is_disjoint(&first)
                && show(a, "sa")?.as_array().is_some_and(|v| v.len() == 1))
        })?;
        let second = check()?;
        ensure!(second.is_disjoint(&first));
        let hw = nsim.ipsec_debugfs()?;
        ensure!(
            hw.contains("SA count=2"),
            "old SAs still in the driver:\n{hw}"
        );
        ensure!(
            kernel::ping(b, "10.99.0.2", "10.99.0.1", 3)? > 0,
            "no ping after the rekey"
        );
        // The packet-offload demand: refused at install, reason in `vtid show tunnels` and the
        // log, no SA of Tunnel1 left in the kernel.
        wait_until("Tunnel1 refused", Duration::from_secs(30), || {
            let t = show(a, "tunnels")?;
            let t1 = t
                .as_array()
                .and_then(|v| v.iter().find(|t| t["name"] == "Tunnel1"))
                .cloned()
                .unwrap_or_default();
            let r = t1["reason"].as_str().unwrap_or_default();
            Ok(t1["state"] == "down"
                && r.starts_with("offload packet: nsim0 refused packet offload")
                && r.contains("EINVAL"))
        })?;
        let text = a.ip(&["xfrm", "state"])?;
        ensure!(
            !text.contains("198.51.100.3"),
            "Tunnel1 SA installed:\n{text}"
        );
        ensure!(
            sc.peer(pa)
                .log()
                .contains("offload refused, Child SA not installed: offload packet"),
            "packet refusal not logged"
        );
        Ok(())
    });
}

/// On a veth (no esp-hw-offload): `offload = "crypto"` keeps its tunnel down with the reason in
/// `vtid show tunnels` and the log, and creates nothing; `offload = "auto"` comes up in software
/// and says why in one log line.
#[test]
#[ignore = "vm"]
fn vm_offload_on_veth_crypto_refuses_auto_falls_back() {
    let spec = TopoSpec::new().link("a", "198.51.100.1/24", "b", "198.51.100.2/24");
    scenario("offload-veth", spec, |sc| {
        let ka = write_secret(&sc.dir().join("a"), "k", PSK)?;
        let kb = write_secret(&sc.dir().join("b"), "k", PSK)?;
        // Tunnel1 demands crypto offload toward a peer that does not even exist: it must be
        // refused before any IKE is sent.
        let ca = config(
            &ka,
            "Tunnel0",
            "198.51.100.1",
            "198.51.100.2",
            "10.99.0.1/30",
            "auto",
            false,
            3600,
        ) + "\n[tunnel.Tunnel1]\nsource = \"198.51.100.1\"\ndestination = \"198.51.100.77\"\n\
                 address = \"10.99.1.1/30\"\nprotection = \"P\"\noffload = \"crypto\"\n";
        let cb = config(
            &kb,
            "Tunnel0",
            "198.51.100.2",
            "198.51.100.1",
            "10.99.0.2/30",
            "off",
            true,
            3600,
        );
        let va = Vtid::start_config(sc.topo.host("a"), &sc.dir().join("a"), &ca, "Tunnel0")?;
        let pa = sc.add_peer("a", vtid_peer(va));
        let vb = Vtid::start_config(sc.topo.host("b"), &sc.dir().join("b"), &cb, "Tunnel0")?;
        let pb = sc.add_peer("b", vtid_peer(vb));
        wait_until("tunnel up", Duration::from_secs(40), || sc.peer(pb).is_up())?;
        let a = sc.topo.host("a");
        let b = sc.topo.host("b");
        ensure!(
            kernel::ping(b, "10.99.0.2", "10.99.0.1", 3)? > 0,
            "no ping through Tunnel0"
        );

        let tunnels = show(a, "tunnels")?;
        let by = |n: &str| {
            tunnels
                .as_array()
                .and_then(|v| v.iter().find(|t| t["name"] == n))
                .cloned()
                .unwrap_or_default()
        };
        let t1 = by("Tunnel1");
        let reason = t1["reason"].as_str().unwrap_or_default();
        ensure!(
            t1["state"] == "down"
                && reason.contains("offload crypto")
                && reason.contains("e-b")
                && reason.contains("esp-hw-offload"),
            "Tunnel1: {t1}"
        );
        ensure!(
            a.ip(&["link", "show", "Tunnel1"]).is_err(),
            "a refused tunnel got an interface"
        );
        let t0 = by("Tunnel0");
        ensure!(
            t0["state"] == "up" && t0["offload"]["in"]["mode"] == "software",
            "Tunnel0: {t0}"
        );
        for sa in show(a, "sa")?.as_array().context("show sa")? {
            ensure!(
                sa["offload"]["in"].is_null() && sa["offload"]["out"].is_null(),
                "{sa}"
            );
        }
        let text = a.ip(&["xfrm", "state"])?;
        ensure!(
            !text.contains("offload"),
            "software SAs show offload:\n{text}"
        );
        let log = sc.peer(pa).log();
        ensure!(
            log.matches("offload auto: software crypto").count() == 1
                && log.contains("underlay e-b does not offload ESP"),
            "auto fallback not logged once:\n{log}"
        );
        ensure!(
            log.contains("tunnel not brought up: offload crypto"),
            "refusal not logged:\n{log}"
        );
        Ok(())
    });
}
