//! Hitless restart (VM): `vtid restart` saves the IKE SAs to the state file, leaves every
//! kernel object in place and re-executes the binary, which adopts them (agent/src/restart.rs,
//! ike::persist). Against strongSwan: not one ping of a 20 ms stream is lost, charon sees no
//! new IKE_SA_INIT and keeps the same IKE SA (SPIs) and Child SA, and the adopted SAs rekey
//! afterwards (a Child SA rekey by vtid, an IKE SA rekey by charon, an IKE SA rekey by vtid).
//! A state file that is corrupted or of an older format is discarded with its log line, and
//! the daemon sweeps and negotiates afresh as after a crash.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, Pinger};
use nstest::strongswan::{Strongswan, SwanConn};
use nstest::systemd::Systemd;
use nstest::vtid::{RunWith, Vtid, write_secret};
use nstest::vtidconf::{Value, VtidConf};
use nstest::{Netns, TopoSpec, scenario};

const PSK: &str = "hitless-restart-psk-0123456789ab";
const IF_ID: u32 = 45;

fn spec() -> TopoSpec {
    TopoSpec::new()
        .link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
        .lan("a", "10.1.0.1/24")
        .lan("b", "10.2.0.1/24")
}

fn vtid_config(psk: &Path) -> String {
    let mut c = VtidConf::new();
    c.transform_set("T", "aes-gcm-256");
    c.ipsec_profile("P", &["T"]);
    c.keyring("K", &[("192.0.2.2", psk)]);
    c.ike_profile("I")
        .set("keyring", "K")
        .set("match_identity", &["192.0.2.2"])
        .set("dpd", Value::raw("{ interval = 10, retries = 3 }"));
    c.tunnel("tun1")
        .set("mode", "xfrmi")
        .set("if_id", IF_ID)
        .set("source", "192.0.2.1")
        .set("destination", "192.0.2.2")
        .set("address", "10.255.0.1/30")
        .set("protection", "P")
        .set("ike_profile", "I")
        .set("routes", &["10.2.0.0/24"])
        .set("initiate", true);
    c.render()
}

/// charon on `b`, its xfrm interface ready, waiting for vtid on `a`.
fn start_swan(sc: &nstest::Scenario) -> Result<Strongswan> {
    let hb = sc.topo.host("b");
    let under = nstest::topo::iface_to("a");
    kernel::xfrm_interface(hb, "tun2", &under, IF_ID, "10.255.0.2/30", "10.1.0.0/24")?;
    let mut conn = SwanConn::psk("192.0.2.2", "192.0.2.1", PSK);
    conn.local_ts = "0.0.0.0/0".into();
    conn.remote_ts = "0.0.0.0/0".into();
    conn.if_id = Some(IF_ID);
    Strongswan::start_conf_tuned(
        hb,
        &sc.dir().join("b"),
        &conn.render(),
        "  retransmit_tries = 6\n",
    )
}

/// Waits for the tunnel and checks that it carries traffic.
fn until_up(sc: &nstest::Scenario, vtid: &Vtid, swan: &Strongswan) -> Result<()> {
    kernel::wait_until("SAs up on both sides", Duration::from_secs(60), || {
        Ok(vtid.is_up()? && swan.is_up()?)
    })
    .with_context(|| diag("negotiation", vtid, swan))?;
    ensure!(
        kernel::ping(sc.topo.host("a"), "10.1.0.1", "10.2.0.1", 2)? == 2,
        "no traffic across the tunnel"
    );
    Ok(())
}

/// vtid on `a` (state directory = its scenario directory) and charon on `b`, tunnel up.
fn setup(sc: &nstest::Scenario) -> Result<(Vtid, Strongswan)> {
    let swan = start_swan(sc)?;
    let dir = sc.dir().join("a");
    std::fs::create_dir_all(&dir)?;
    let psk = write_secret(&dir, "psk", PSK)?;
    let with = RunWith {
        env: vec![("STATE_DIRECTORY".into(), dir.display().to_string())],
        ..RunWith::default()
    };
    let vtid = Vtid::start_config_with(sc.topo.host("a"), &dir, &vtid_config(&psk), "tun1", with)?;
    until_up(sc, &vtid, &swan)?;
    Ok((vtid, swan))
}

fn diag(what: &str, vtid: &Vtid, swan: &Strongswan) -> String {
    format!(
        "{what}\n--- vtid ---\n{}\n--- charon ---\n{}",
        vtid.log(),
        swan.log()
    )
}

/// charon's IKE SA SPIs (`initiator-spi`, `responder-spi`) and Child SA SPIs (`spi-in`,
/// `spi-out`) from `swanctl --list-sas --raw`.
fn swan_spis(swan: &Strongswan) -> Result<BTreeSet<String>> {
    let raw = swan.list_sas()?;
    let mut out = BTreeSet::new();
    for key in ["initiator-spi=", "responder-spi=", "spi-in=", "spi-out="] {
        for (i, _) in raw.match_indices(key) {
            let v: String = raw[i + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect();
            out.insert(format!("{key}{v}"));
        }
    }
    ensure!(out.len() >= 4, "no SPIs in charon's list:\n{raw}");
    Ok(out)
}

fn kernel_spis(ns: &Netns) -> Result<BTreeSet<u32>> {
    Ok(kernel::xfrm_states(ns)?
        .into_iter()
        .filter(|s| s.spi != 0)
        .map(|s| s.spi)
        .collect())
}

#[test]
#[ignore = "vm"]
fn vm_hitless_restart_static_tunnel_loses_no_ping_and_rekeys_after() {
    scenario("hitless-restart-static", spec(), |sc| {
        let (vtid, swan) = setup(sc)?;
        let ha = sc.topo.host("a");
        let inits_before = swan.log().matches("IKE_SA_INIT").count();
        let swan_before = swan_spis(&swan)?;
        let kernel_before = kernel_spis(ha)?;
        let pinger = Pinger::start(ha, "10.1.0.1", "10.2.0.1", Duration::from_millis(20))?;
        std::thread::sleep(Duration::from_millis(500));
        let out = vtid
            .cli(&["restart"])
            .with_context(|| diag("vtid restart", &vtid, &swan))?;
        let saved: serde_json::Value = serde_json::from_str(&out)?;
        ensure!(
            saved["ike_sas"] == 1 && saved["child_sas"] == 1 && saved["left_out"] == 0,
            "{saved}"
        );
        let log = vtid.log();
        ensure!(
            log.contains("restart: IKE SA adopted") && log.matches("vtid running").count() == 2,
            "{}",
            diag("adoption", &vtid, &swan)
        );
        ensure!(
            !Path::new(&sc.dir().join("a").join("restart.state")).exists(),
            "the state file was not deleted after use"
        );
        // The new process answers and shows the adopted tunnel up.
        ensure!(
            vtid.is_up()?,
            "{}",
            diag("show sa after restart", &vtid, &swan)
        );
        let tunnels = vtid.show("tunnels")?;
        ensure!(tunnels.to_string().contains("tun1"), "{tunnels}");
        std::thread::sleep(Duration::from_secs(2));
        ensure!(
            swan.log().matches("IKE_SA_INIT").count() == inits_before,
            "IKE_SA_INIT during the restart\n{}",
            diag("", &vtid, &swan)
        );
        ensure!(
            swan_spis(&swan)? == swan_before,
            "charon's SAs changed across the restart\n{}",
            diag("", &vtid, &swan)
        );
        ensure!(
            kernel_spis(ha)? == kernel_before,
            "kernel SAs changed across the restart"
        );
        // Rekeys on the adopted SAs: Child SA by vtid, IKE SA by charon, IKE SA by vtid.
        vtid.cli(&["rekey", "child", "tunnel", "tun1"])?;
        kernel::wait_until("Child SA rekeyed", Duration::from_secs(30), || {
            Ok(kernel_spis(ha)?.is_disjoint(&kernel_before) && vtid.is_up()?)
        })
        .with_context(|| diag("child rekey", &vtid, &swan))?;
        // charon drops the replaced Child SA once vtid's DELETE for it is answered, keeping
        // its inbound SA for delete_rekeyed_delay (5 s) more. An IKE SA rekey inside that
        // window can lose charon's delayed removal (seen once in CI: the old inbound SA
        // stayed for good, though vtid's DELETE had been answered), so the IKE rekeys wait
        // until charon is done with it.
        let child_spis = |set: &BTreeSet<String>| -> BTreeSet<String> {
            set.iter()
                .filter(|k| k.starts_with("spi-"))
                .cloned()
                .collect()
        };
        let child_before = child_spis(&swan_before);
        kernel::wait_until(
            "charon without the pre-restart Child SA",
            Duration::from_secs(20),
            || Ok(child_spis(&swan_spis(&swan)?).is_disjoint(&child_before)),
        )
        .with_context(|| format!("the Child SA rekey left old SPIs: {:?}", swan_spis(&swan)))?;
        let mut v = swan.vici()?;
        v.request("rekey", &[("ike", "t")])?;
        kernel::wait_until("IKE SA rekeyed by charon", Duration::from_secs(30), || {
            Ok(vtid.log().matches("IkeSaRekeyed").count() >= 1)
        })
        .with_context(|| diag("charon's IKE rekey", &vtid, &swan))?;
        vtid.cli(&["rekey", "ike", "tunnel", "tun1"])?;
        kernel::wait_until("IKE SA rekeyed by vtid", Duration::from_secs(30), || {
            Ok(vtid.log().matches("IkeSaRekeyed").count() >= 2)
        })
        .with_context(|| diag("vtid's IKE rekey", &vtid, &swan))?;
        std::thread::sleep(Duration::from_millis(1500));
        let pings = pinger.stop()?;
        let (missing, last) = pings.unanswered().context("no ping answered")?;
        eprintln!(
            "hitless restart: {} of {last} pings lost across a restart and three rekeys, longest outage {:?}",
            missing.len(),
            pings.longest_outage()
        );
        ensure!(
            missing.is_empty(),
            "{} of {last} pings lost (icmp_seq {missing:?})\n{}",
            missing.len(),
            diag("ping", &vtid, &swan)
        );
        // The pinger ran across the restart and the rekeys: at least the 0.5 s before the
        // restart and the 3.5 s of waits after it, 20 ms apart, even when a loaded VM sends
        // fewer than one per 20 ms (a count fixed by the rekeys' speed would fail a fast run).
        ensure!(pings.sent >= 100, "only {} pings", pings.sent);
        // Rekeys are CREATE_CHILD_SA exchanges: IKE_SA_INIT never came, first to last.
        ensure!(
            swan.log().matches("IKE_SA_INIT").count() == inits_before,
            "IKE_SA_INIT after the restart\n{}",
            diag("", &vtid, &swan)
        );
        // Both pre-restart IKE SAs are gone once the DELETEs of the two IKE rekeys are done.
        kernel::wait_until(
            "charon without the pre-restart SAs",
            Duration::from_secs(15),
            || Ok(swan_spis(&swan)?.is_disjoint(&swan_before)),
        )
        .with_context(|| format!("rekeys left old SPIs: {:?}", swan_spis(&swan)))?;
        ensure!(
            swan.is_up()? && vtid.is_up()?,
            "{}",
            diag("end", &vtid, &swan)
        );
        // One IKE SA on each side (the rekeyed ones deleted), and nobody declared dead.
        ensure!(
            !vtid.log().contains("PeerDead")
                && swan.list_sas()?.matches("state=ESTABLISHED").count() == 1
                && vtid.show("sessions")?.as_array().map(Vec::len) == Some(1),
            "{}",
            diag("after the rekeys", &vtid, &swan)
        );
        Ok(())
    });
}

/// The Debian package's `vtid.service`, run by a real systemd (Debian 12's, as PID 1 of a PID
/// namespace: nstest::systemd): `systemctl restart vtid` is a hitless restart as `vtid
/// restart` is. On SIGTERM the daemon sees that the unit's job is a restart (notify.rs), saves
/// its SAs and exits leaving the kernel as it is, and the process systemd starts next adopts
/// them: a new main PID, not one ping of a 20 ms stream lost, no IKE_SA_INIT, the same SPIs,
/// and a Child SA rekey after it works. `systemctl stop` then is still a stop: the daemon
/// deletes the IKE SA with charon and removes its SAs, and leaves no state file.
#[test]
#[ignore = "vm"]
fn vm_hitless_restart_systemctl_restart_is_hitless_and_stop_still_stops() {
    scenario("hitless-restart-systemctl", spec(), |sc| {
        let swan = start_swan(sc)?;
        let ha = sc.topo.host("a");
        let dir = sc.dir().join("a");
        std::fs::create_dir_all(&dir)?;
        // The package's paths: the VM's /usr, /etc and /var are writable overlays of this
        // machine's (removed again by the guard), so the unit runs as packaged: its
        // ExecStart, configuration, StateDirectory, RuntimeDirectory and sandbox unchanged.
        let _installed = Installed::new()?;
        std::fs::copy(nstest::vtid::binary()?, "/usr/sbin/vtid")?;
        std::fs::create_dir_all("/etc/vtid")?;
        let psk = write_secret(Path::new("/etc/vtid"), "psk", PSK)?;
        std::fs::write("/etc/vtid/vtid.toml", vtid_config(&psk))?;
        let sd = Systemd::boot(ha, &sc.dir().join("systemd"))?;
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/deb/vtid.service"),
        )?;
        // The drop-in adds only what this private manager lacks: sysinit.target and
        // basic.target (the implicit ordering after them) and a journal (the log goes to the
        // scenario's directory instead).
        let dropin = format!(
            "[Unit]\nDefaultDependencies=no\n\n[Service]\n\
             Environment=RUST_LOG=info,ike=debug\n\
             StandardOutput=append:{}/vtid.log\nStandardError=inherit\n",
            dir.display()
        );
        sd.install("vtid.service", &unit, Some(&dropin))?;
        // Type=notify: returns once vtid sent READY=1.
        sd.systemctl(&["start", "vtid.service"])?;
        let vtid = Vtid::attach(ha, &dir, Path::new("/run/vtid/vtid.sock"), "tun1");
        until_up(sc, &vtid, &swan)?;
        let pid_before = sd.property("vtid.service", "MainPID")?;
        let inits_before = swan.log().matches("IKE_SA_INIT").count();
        let swan_before = swan_spis(&swan)?;
        let kernel_before = kernel_spis(ha)?;
        let pinger = Pinger::start(ha, "10.1.0.1", "10.2.0.1", Duration::from_millis(20))?;
        std::thread::sleep(Duration::from_millis(500));
        sd.systemctl(&["restart", "vtid.service"])
            .with_context(|| diag("systemctl restart", &vtid, &swan))?;
        let pid_after = sd.property("vtid.service", "MainPID")?;
        ensure!(
            pid_after != pid_before && pid_after != "0",
            "MainPID {pid_before} -> {pid_after}: systemd did not start a new process"
        );
        let log = vtid.log();
        ensure!(
            log.contains("systemd restarts the unit")
                && log.contains("restart: IKE SA adopted")
                && log.matches("vtid running").count() == 2,
            "{}",
            diag("adoption after systemctl restart", &vtid, &swan)
        );
        let state_file = Path::new("/var/lib/vtid/restart.state");
        ensure!(
            !state_file.exists(),
            "the state file was not deleted after use"
        );
        std::thread::sleep(Duration::from_secs(2));
        ensure!(
            swan.log().matches("IKE_SA_INIT").count() == inits_before
                && swan_spis(&swan)? == swan_before
                && kernel_spis(ha)? == kernel_before,
            "SAs renegotiated or changed across systemctl restart\n{}",
            diag("", &vtid, &swan)
        );
        vtid.cli(&["rekey", "child", "tunnel", "tun1"])?;
        kernel::wait_until("Child SA rekeyed", Duration::from_secs(30), || {
            Ok(kernel_spis(ha)?.is_disjoint(&kernel_before) && vtid.is_up()?)
        })
        .with_context(|| diag("child rekey after systemctl restart", &vtid, &swan))?;
        std::thread::sleep(Duration::from_millis(500));
        let pings = pinger.stop()?;
        let (missing, last) = pings.unanswered().context("no ping answered")?;
        eprintln!(
            "systemctl restart: {} of {last} pings lost, longest outage {:?}",
            missing.len(),
            pings.longest_outage()
        );
        ensure!(
            missing.is_empty() && pings.sent >= 100,
            "{} of {last} pings lost (icmp_seq {missing:?}), {} sent\n{}",
            missing.len(),
            pings.sent,
            diag("ping", &vtid, &swan)
        );

        // A stop is a stop: the IKE SA deleted with charon, every SA gone from the kernel,
        // no state file left for a later start to adopt.
        sd.systemctl(&["stop", "vtid.service"])?;
        ensure!(
            vtid.log().matches("systemd restarts the unit").count() == 1,
            "systemctl stop was taken for a restart\n{}",
            vtid.log()
        );
        ensure!(
            kernel_spis(ha)?.is_empty() && !state_file.exists(),
            "after systemctl stop: SAs {:?}, state file {}",
            kernel_spis(ha)?,
            state_file.exists()
        );
        kernel::wait_until("charon saw the delete", Duration::from_secs(20), || {
            Ok(!swan.is_up()?)
        })
        .with_context(|| diag("systemctl stop", &vtid, &swan))?;
        Ok(())
    });
}

/// What [`vm_hitless_restart_systemctl_restart_is_hitless_and_stop_still_stops`] puts at the
/// package's paths in the VM, removed when it ends, however it ends; it refuses to start
/// where a vtid is installed already.
struct Installed;

impl Installed {
    const PATHS: [&str; 3] = ["/usr/sbin/vtid", "/etc/vtid", "/var/lib/vtid"];

    fn new() -> Result<Self> {
        ensure!(
            nstest::vm::in_vm(),
            "writes /usr/sbin/vtid and /etc/vtid: the VM's overlays only"
        );
        for p in Self::PATHS {
            ensure!(!Path::new(p).exists(), "{p} exists already");
        }
        Ok(Installed)
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Self::PATHS[0]);
        let _ = std::fs::remove_dir_all(Self::PATHS[1]);
        let _ = std::fs::remove_dir_all(Self::PATHS[2]);
    }
}

/// A state file found at start that cannot be trusted (a corrupted one, one of an older
/// format version) is discarded with one log line saying why; the daemon then sweeps what
/// the previous process left and negotiates afresh.
#[test]
#[ignore = "vm"]
fn vm_hitless_restart_stale_state_file_is_discarded() {
    scenario("hitless-restart-stale", spec(), |sc| {
        let (mut vtid, swan) = setup(sc)?;
        let ha = sc.topo.host("a");
        let file = sc.dir().join("a").join("restart.state");
        let mut corrupted = b"vtid-restart\n\x00\x01\x00\x00\x00\x02{}".to_vec();
        corrupted.extend_from_slice(&[0x55; 40]);
        let mut older = b"vtid-restart\n\x00\x00".to_vec();
        older.extend_from_slice(&[0; 40]);
        let cases: [(&[u8], &str); 2] = [
            (
                &corrupted,
                "restart state discarded: corrupted (digest mismatch)",
            ),
            (
                &older,
                "restart state discarded: written by state format version 0",
            ),
        ];
        for (bytes, line) in cases {
            let before = kernel_spis(ha)?;
            let sweeps = vtid
                .log()
                .matches("removed kernel objects vtid had left")
                .count();
            // A crash leaves every kernel object; the file is found at the next start.
            vtid.kill9()?;
            std::fs::write(&file, bytes)?;
            vtid.restart()?;
            kernel::wait_until(
                "discarded and renegotiated",
                Duration::from_secs(60),
                || {
                    let log = vtid.log();
                    Ok(
                        log.contains(line)
                            && vtid.is_up()?
                            && kernel_spis(ha)?.is_disjoint(&before),
                    )
                },
            )
            .with_context(|| diag(line, &vtid, &swan))?;
            let log = vtid.log();
            ensure!(
                log.matches("removed kernel objects vtid had left").count() > sweeps,
                "no sweep after the discard\n{log}"
            );
            ensure!(!file.exists(), "the discarded file was left");
            ensure!(
                kernel::ping(ha, "10.1.0.1", "10.2.0.1", 2)? == 2,
                "no traffic after renegotiation"
            );
        }
        Ok(())
    });
}

/// A dynamic-VTI hub with 50 spokes (one charon on `lg` holding a connection per spoke
/// address, each proposing its own inside /32) restarted: every clone keeps its ifindex,
/// every SA its SPI, charon sees no IKE_SA_INIT, and pings through three spokes' tunnels
/// lose nothing.
#[test]
#[ignore = "vm"]
fn vm_hitless_restart_hub_keeps_fifty_spokes() {
    hub_restart(50, "point-to-point");
}

/// The same with the template in multipoint mode (one collect-metadata xfrm interface, a
/// route with `encap xfrm if_id N` per spoke) and 10 spokes: the device keeps its ifindex,
/// every spoke its route and if_id, every SA its SPI.
#[test]
#[ignore = "vm"]
fn vm_hitless_restart_multipoint_hub_keeps_its_spokes() {
    hub_restart(10, "multipoint");
}

/// The hub's per-spoke kernel objects other than SAs, by name: a point-to-point template's
/// clones (name -> ifindex), or a multipoint template's device (name -> ifindex), its
/// spokes' routes (prefix -> if_id of their `encap xfrm`) and nexthops ("nexthop ID" ->
/// if_id).
fn spoke_objects(ns: &Netns, mode: &str) -> Result<std::collections::BTreeMap<String, u64>> {
    let links: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link"])?)?;
    let mut out: std::collections::BTreeMap<String, u64> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = l["ifname"].as_str()?;
            (name.starts_with("vtid-va") || name == "vtid-mp")
                .then(|| (name.to_owned(), l["ifindex"].as_u64().unwrap_or(0)))
        })
        .collect();
    if mode == "multipoint" {
        let routes: serde_json::Value =
            serde_json::from_str(&ns.ip(&["-j", "route", "show", "dev", "vtid-mp"])?)?;
        for r in routes.as_array().into_iter().flatten() {
            if let (Some(dst), Some(if_id)) = (r["dst"].as_str(), r["if_id"].as_u64()) {
                out.insert(dst.to_owned(), if_id);
            }
        }
        // The spokes' nexthop objects, which their routes name (`nhid`).
        let nexthops: serde_json::Value =
            serde_json::from_str(&ns.ip(&["-j", "nexthop", "show", "dev", "vtid-mp"])?)?;
        for n in nexthops.as_array().into_iter().flatten() {
            if let (Some(id), Some(if_id)) = (n["id"].as_u64(), n["if_id"].as_u64()) {
                out.insert(format!("nexthop {id}"), if_id);
            }
        }
    }
    Ok(out)
}

fn hub_restart(spokes: u32, mode: &str) {
    let spec = TopoSpec::new()
        .link("hub", "172.16.0.1/16", "lg", "172.16.0.2/16")
        .lan("hub", "10.0.0.1/24");
    scenario(&format!("hitless-restart-hub-{mode}"), spec, |sc| {
        let (hub, lg) = (sc.topo.host("hub"), sc.topo.host("lg"));
        let under = nstest::topo::iface_to("hub");
        lg.ip(&["link", "add", "inside", "type", "dummy"])?;
        lg.ip(&["link", "set", "inside", "up"])?;
        lg.ip(&["route", "add", "10.0.0.0/24", "via", "172.16.0.1"])?;
        let mut conns = Vec::new();
        for i in 1..=spokes {
            lg.ip(&["addr", "add", &format!("172.16.1.{i}/16"), "dev", &under])?;
            lg.ip(&["addr", "add", &format!("10.128.0.{i}/32"), "dev", "inside"])?;
            let mut c = SwanConn::psk(&format!("172.16.1.{i}"), "172.16.0.1", PSK);
            c.local_ts = format!("10.128.0.{i}/32");
            c.remote_ts = "10.0.0.1/32".into();
            c.start_action = "start".into();
            conns.push((format!("s{i}"), c));
        }
        let named: Vec<(&str, &SwanConn)> = conns.iter().map(|(n, c)| (n.as_str(), c)).collect();
        let dir = sc.dir().join("hub");
        std::fs::create_dir_all(&dir)?;
        let cfg = nstest::hub::psk_template_hub_config(&dir, PSK, "172.16.0.0/16", "", Some(mode))?;
        let with = RunWith {
            rust_log: Some("info".into()),
            env: vec![("STATE_DIRECTORY".into(), dir.display().to_string())],
            ..RunWith::default()
        };
        let vtid = Vtid::start_config_with(hub, &dir, &cfg, "-", with)?;
        // All 50 start at once: patient retransmissions, so a request lost in the burst
        // under the VM's TCG is sent again rather than given up after three tries.
        let swan = nstest::peer::StrongswanVersion::Debian12
            .start_many_tuned(lg, &sc.dir().join("lg"), &named, "  retransmit_tries = 8\n")
            .with_context(|| vtid.log())?;
        // Each spoke: a clone, or a route and a nexthop on the multipoint device (which is
        // one more entry).
        let objects = match mode {
            "multipoint" => 2 * spokes as usize + 1,
            _ => spokes as usize,
        };
        let clones = |ns: &Netns| spoke_objects(ns, mode);
        kernel::wait_until("spokes up", Duration::from_secs(180), || {
            Ok(clones(hub)?.len() == objects
                && swan.list_sas()?.matches("state=INSTALLED").count() == spokes as usize
                && kernel_spis(hub)?.len() == 2 * spokes as usize)
        })
        .with_context(|| diag("spokes", &vtid, &swan))?;
        let probes = [1, spokes / 2, spokes];
        for i in probes {
            let src = format!("10.128.0.{i}");
            ensure!(
                kernel::ping(lg, &src, "10.0.0.1", 1)? == 1,
                "spoke {i}: no traffic"
            );
        }
        // A nexthop of vtid's that no adopted spoke names (as a spoke whose IKE SA was left
        // out of the state file leaves), with a route through it, and one of another owner
        // on the same device: the restart's sweep removes the first with its route and
        // leaves the second alone.
        const STALE: u32 = 0x7660_0fff;
        const FOREIGN: u32 = 4242;
        let extra = [
            format!("nexthop {STALE}"),
            format!("nexthop {FOREIGN}"),
            "10.99.0.0/24".to_string(),
        ];
        if mode == "multipoint" {
            for (id, proto) in [(STALE, "76"), (FOREIGN, "static")] {
                let (id, if_id) = (id.to_string(), STALE.to_string());
                hub.ip(&[
                    "-4", "nexthop", "add", "id", &id, "dev", "vtid-mp", "proto", proto, "encap",
                    "xfrm", "if_id", &if_id,
                ])?;
            }
            hub.ip(&["route", "add", "10.99.0.0/24", "nhid", &STALE.to_string()])?;
        }
        let mut clones_before = clones(hub)?;
        clones_before.retain(|k, _| !extra.contains(k));
        let spis_before = kernel_spis(hub)?;
        let inits_before = swan.log().matches("IKE_SA_INIT").count();
        let pingers = probes
            .iter()
            .map(|i| {
                Pinger::start(
                    lg,
                    &format!("10.128.0.{i}"),
                    "10.0.0.1",
                    Duration::from_millis(50),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        std::thread::sleep(Duration::from_millis(500));
        let out = vtid
            .cli(&["restart"])
            .with_context(|| diag("vtid restart", &vtid, &swan))?;
        let saved: serde_json::Value = serde_json::from_str(&out)?;
        ensure!(
            saved["ike_sas"] == spokes && saved["child_sas"] == spokes && saved["left_out"] == 0,
            "{saved}"
        );
        ensure!(
            vtid.log().matches("restart: IKE SA adopted").count() == spokes as usize,
            "{}",
            diag("adoption", &vtid, &swan)
        );
        std::thread::sleep(Duration::from_secs(2));
        for (i, p) in probes.iter().zip(pingers) {
            let log = p.stop()?;
            let (missing, last) = log.unanswered().context("no ping answered")?;
            ensure!(
                missing.is_empty() && last >= 40,
                "spoke {i}: {} of {last} pings lost across the restart ({missing:?})",
                missing.len()
            );
        }
        let mut after = clones(hub)?;
        if mode == "multipoint" {
            ensure!(
                after.remove(&extra[1]).is_some(),
                "the restart removed another owner's nexthop: {after:?}"
            );
            let all = hub.ip(&["route", "show", "table", "all"])?;
            ensure!(
                !all.contains("10.99.0.0/24") && !after.contains_key(&extra[0]),
                "the restart left a nexthop no adopted spoke names, or its route: {after:?}\n{all}"
            );
        }
        ensure!(after == clones_before, "clones changed across the restart");
        ensure!(
            kernel_spis(hub)? == spis_before,
            "SAs changed across the restart"
        );
        ensure!(
            swan.log().matches("IKE_SA_INIT").count() == inits_before,
            "IKE_SA_INIT during the restart"
        );
        let sessions = vtid.show("sessions")?;
        ensure!(
            sessions.as_array().map(Vec::len) == Some(spokes as usize),
            "{sessions}"
        );
        eprintln!(
            "hitless restart: {mode} hub with {spokes} spokes restarted, every clone and SA kept"
        );
        Ok(())
    });
}
