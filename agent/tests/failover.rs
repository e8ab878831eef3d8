//! Tunnels that behave like router interfaces (VM): a vtid spoke with tunnels to two hubs,
//! the same prefix routed into both at different metrics (a floating route). The hubs are
//! played by strongSwan or by vtid (house rule 7); the spoke is vtid, whose line protocol is
//! what these scenarios test.
//!
//! ```text
//!            198.51.100.0/24   h1 (10.200.0.1 on its LAN)
//!   s ------<
//!  10.1.0.1  203.0.113.0/24    h2 (10.200.0.1 on its LAN too)
//! ```
//!
//! The service address 10.200.0.1 sits behind both hubs, so the spoke's LAN reaches it
//! through whichever tunnel has the best route up: tun1 at metric 10, tun2 at metric 20.
//!
//! - Failover: the first hub's daemon is killed with SIGKILL (its kernel keeps the SAs, so
//!   only dead peer detection can tell), and separately its link loses every packet (netem);
//!   the spoke's traffic must move to the second hub within `interval * retries + 2 s` and
//!   come back when the first hub returns.
//! - DPD `retries` honoured: two tunnels with interval 2 and retries 2 and 5 lose their peers
//!   at the same moment; the line protocol of each goes down when its own count says so.
//! - `initiate = false`: traffic routed into the tunnel does not start it; the peer's
//!   initiation does.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nstest::assert::{pings_pass, rows, wait_until};
use nstest::kernel;
use nstest::peer::{Device, Impl, StrongswanVersion, TunnelEnd};
use nstest::vtid::{Vtid, show_in, write_secret};
use nstest::vtidconf::VtidConf;
use nstest::{Netns, Scenario, TopoSpec, scenario};

const PSK: &str = "failover-psk-0123456789abcdef";
const SPOKE_LAN: &str = "10.1.0.1";
const SERVICE: &str = "10.200.0.1";

/// Spoke and hub underlay addresses of hub `n` (1 or 2).
fn addrs(n: u8) -> (&'static str, &'static str) {
    match n {
        1 => ("198.51.100.1", "198.51.100.2"),
        _ => ("203.0.113.1", "203.0.113.2"),
    }
}

fn hub_host(n: u8) -> &'static str {
    if n == 1 { "h1" } else { "h2" }
}

fn spec() -> TopoSpec {
    let (s1, h1) = addrs(1);
    let (s2, h2) = addrs(2);
    TopoSpec::new()
        .link("s", &format!("{s1}/24"), "h1", &format!("{h1}/24"))
        .link("s", &format!("{s2}/24"), "h2", &format!("{h2}/24"))
        .lan("s", &format!("{SPOKE_LAN}/24"))
        .lan("h1", &format!("{SERVICE}/24"))
        .lan("h2", &format!("{SERVICE}/24"))
}

/// Hub `n`'s end: it answers (never initiates) and routes the spoke's LAN back.
fn hub_end(n: u8) -> TunnelEnd {
    let (spoke, hub) = addrs(n);
    TunnelEnd {
        local: hub.into(),
        remote: spoke.into(),
        psk: PSK.into(),
        device: Device::Xfrmi {
            name: "tun0".into(),
            if_id: 1,
            underlay: nstest::topo::iface_to("s"),
        },
        address: Some(format!("10.255.{n}.2/30")),
        routes: vec!["10.1.0.0/24".into()],
        initiator: false,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: "aes256gcm16".into(),
        child_lifetime: None,
    }
}

/// The spoke's tunnel to hub `n`: the service prefix at `metric`, DPD as given, and
/// `initiate` as given.
fn spoke_tunnel(c: &mut VtidConf, n: u8, metric: u32, dpd: (u32, u32), initiate: bool) {
    let (spoke, hub) = addrs(n);
    let profile = format!("I{n}");
    c.ike_profile(&profile).set("keyring", "K").set(
        "dpd",
        nstest::vtidconf::Value::inline(&[("interval", dpd.0.into()), ("retries", dpd.1.into())]),
    );
    c.tunnel(&format!("tun{n}"))
        .set("mode", "xfrmi")
        .set("if_id", u32::from(n))
        .set("source", spoke)
        .set("destination", hub)
        .set("address", format!("10.255.{n}.1/30"))
        .set("protection", "P")
        .set("ike_profile", profile.as_str())
        .set(
            "routes",
            nstest::vtidconf::Value::raw(format!(
                "[{{ prefix = \"10.200.0.0/24\", metric = {metric} }}]"
            )),
        )
        .set("initiate", initiate);
}

/// Starts the two hubs, then the spoke with `tunnels` (`spoke_tunnel` calls); returns the
/// hubs' peer indexes and the spoke's.
fn start(
    sc: &mut Scenario,
    hubs: Impl,
    tunnels: impl FnOnce(&mut VtidConf),
) -> Result<([usize; 2], usize)> {
    let h1 = sc.start_peer(hubs, "h1", &hub_end(1))?;
    let h2 = sc.start_peer(hubs, "h2", &hub_end(2))?;
    let dir = sc.dir().join("s");
    std::fs::create_dir_all(&dir)?;
    let key = write_secret(&dir, "psk.key", PSK)?;
    let mut c = VtidConf::new();
    c.keyring(
        "K",
        &[(addrs(1).1, key.as_path()), (addrs(2).1, key.as_path())],
    );
    c.transform_set("T", "aes-gcm-256");
    c.ipsec_profile("P", &["T"]);
    tunnels(&mut c);
    let v = Vtid::start_config(sc.topo.host("s"), &dir, &c.render(), "tun1")?;
    let s = sc.add_peer("s", nstest::peer::vtid_peer(v));
    Ok(([h1, h2], s))
}

/// The spoke's `show tunnels` row of `name`.
fn tunnel_row(ns: &Netns, name: &str) -> Result<serde_json::Value> {
    let v = show_in(ns, "tunnels")?;
    rows(&v)
        .find(|r| r["name"] == name)
        .cloned()
        .with_context(|| format!("no tunnel {name} in {v}"))
}

fn line_up(ns: &Netns, name: &str) -> Result<bool> {
    Ok(tunnel_row(ns, name)?["line"] == "up")
}

/// The device the spoke's kernel sends the LAN's traffic for the service out of.
fn route_dev(ns: &Netns) -> Result<String> {
    kernel::route_dev(ns, SERVICE, SPOKE_LAN)
}

/// Waits (polling every 100 ms) until the service is routed into `dev`; returns how long it
/// took.
fn until_routed_into(ns: &Netns, dev: &str, timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if route_dev(ns)? == dev {
            return Ok(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the service is still routed into {:?} after {timeout:?}, not {dev}",
        route_dev(ns)?
    )
}

/// The packets hub `n`'s tunnel device received (the spoke's traffic reaching it).
fn hub_rx(sc: &Scenario, n: u8) -> Result<u64> {
    Ok(kernel::link_stats(sc.topo.host(hub_host(n)), "tun0")?.rx_packets)
}

/// The failover scenario with the hubs played by `hubs`.
fn failover(sc: &mut Scenario, hubs: Impl) -> Result<()> {
    // Detection bound: a check after `interval` of silence, `retries` checks each given
    // `interval` (ike::Dpd), so at most interval * (retries + 1) after the last answer, which
    // came at most one interval before the failure: within interval * retries + interval.
    let (interval, retries) = (1u32, 3u32);
    let target = Duration::from_secs(u64::from(interval * retries) + 2);
    let (h, s) = start(sc, hubs, |c| {
        spoke_tunnel(c, 1, 10, (interval, retries), true);
        spoke_tunnel(c, 2, 20, (interval, retries), true);
    })?;
    let ns = sc.topo.host("s");
    wait_until(
        "both tunnels' line protocol up",
        Duration::from_secs(60),
        || Ok(line_up(ns, "tun1")? && line_up(ns, "tun2")?),
    )?;
    ensure!(route_dev(ns)? == "tun1", "the best route is not tun1");
    pings_pass(
        ns,
        SPOKE_LAN,
        SERVICE,
        3,
        "spoke LAN to the service via hub 1",
    )?;
    let pinger = kernel::Pinger::start(ns, SPOKE_LAN, SERVICE, Duration::from_millis(200))?;

    for (how, cut, mend) in [
        (
            "hub 1's daemon killed with SIGKILL",
            Cut::Kill,
            Mend::Restart,
        ),
        (
            "hub 1's link losing every packet",
            Cut::Netem,
            Mend::NoNetem,
        ),
    ] {
        let rx2 = hub_rx(sc, 2)?;
        match cut {
            Cut::Kill => sc.peer_mut(h[0]).kill9()?,
            Cut::Netem => {
                sc.topo.host("h1").exec(&[
                    "tc", "qdisc", "add", "dev", "e-s", "root", "netem", "loss", "100%",
                ])?;
            }
        }
        let ns = sc.topo.host("s");
        let took = until_routed_into(ns, "tun2", Duration::from_secs(30))?;
        eprintln!(
            "failover ({how}): LAN traffic routed to hub 2 after {took:?} (target {target:?})"
        );
        ensure!(
            took < target,
            "failover ({how}) took {took:?}, target {target:?}"
        );
        pings_pass(
            ns,
            SPOKE_LAN,
            SERVICE,
            3,
            "spoke LAN to the service via hub 2",
        )?;
        ensure!(hub_rx(sc, 2)? > rx2, "hub 2's tunnel received none of it");
        let row = tunnel_row(ns, "tun1")?;
        ensure!(
            row["line"] == "down" && row["admin"] == "up",
            "tun1 after the failure: {row}"
        );
        let log = sc.peer(s).log();
        ensure!(
            log.contains(&format!(
                "tun1: line protocol down (peer {} dead)",
                addrs(1).1
            )),
            "the spoke did not log tun1's transition with its reason"
        );
        // The floating route took over only because tun1's route is gone.
        let routes = ns.ip(&["route", "show", "10.200.0.0/24"])?;
        ensure!(
            !routes.contains("tun1") && routes.contains("tun2") && routes.contains("metric 20"),
            "the spoke's routes to the service: {routes}"
        );

        match mend {
            Mend::Restart => sc.peer_mut(h[0]).restart()?,
            Mend::NoNetem => {
                sc.topo
                    .host("h1")
                    .exec(&["tc", "qdisc", "del", "dev", "e-s", "root"])?;
            }
        }
        let ns = sc.topo.host("s");
        let back = until_routed_into(ns, "tun1", Duration::from_secs(120))?;
        eprintln!("hub 1 back ({how}): traffic returned to tun1 after {back:?}");
        wait_until(
            "tun1's line protocol up again",
            Duration::from_secs(10),
            || line_up(ns, "tun1"),
        )?;
        let rx1 = hub_rx(sc, 1)?;
        pings_pass(
            ns,
            SPOKE_LAN,
            SERVICE,
            3,
            "spoke LAN to the service via hub 1 again",
        )?;
        ensure!(hub_rx(sc, 1)? > rx1, "hub 1's tunnel received none of it");
    }
    let log = pinger.stop()?;
    let (sent, received) = (log.sent, log.received);
    eprintln!(
        "ping over both failovers and returns: {sent} sent, {received} received, {} lost",
        sent - received
    );
    ensure!(
        received > 0 && received < sent,
        "ping: {sent} sent, {received} received"
    );
    Ok(())
}

/// Seconds since midnight UTC of `t` (the daemon logs UTC times of day).
fn secs_of_day(t: std::time::SystemTime) -> f64 {
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    d % 86_400.0
}

/// Seconds since midnight of the first log line containing `what`
/// (`2026-12-03T21:14:25.735780Z ...`).
fn transition_time(log: &str, what: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(what))?;
    let time = line.split('T').nth(1)?.split('Z').next()?;
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

#[derive(Clone, Copy)]
enum Cut {
    Kill,
    Netem,
}

#[derive(Clone, Copy)]
enum Mend {
    Restart,
    NoNetem,
}

#[test]
#[ignore = "vm"]
fn vm_router_failover_dual_hub_floating_route_vtid_hubs() {
    scenario("failover-vtid-hubs", spec(), |sc| failover(sc, Impl::Vtid));
}

#[test]
#[ignore = "vm"]
fn vm_router_failover_dual_hub_floating_route_strongswan_hubs() {
    scenario("failover-swan-hubs", spec(), |sc| {
        failover(sc, Impl::Strongswan(StrongswanVersion::Debian12))
    });
}

/// DPD `retries` reach the engine: interval 2 with retries 2 (tun1) and 5 (tun2), both peers
/// silenced at once; each line goes down `interval * (retries + 1)` at most after the last
/// answer, and at least `interval * retries` after the cut.
#[test]
#[ignore = "vm"]
fn vm_router_dpd_retries_set_the_detection_time() {
    scenario("dpd-retries", spec(), |sc| {
        let (_, s) = start(sc, Impl::Strongswan(StrongswanVersion::Debian12), |c| {
            spoke_tunnel(c, 1, 10, (2, 2), true);
            spoke_tunnel(c, 2, 20, (2, 5), true);
        })?;
        let ns = sc.topo.host("s");
        wait_until(
            "both tunnels' line protocol up",
            Duration::from_secs(60),
            || Ok(line_up(ns, "tun1")? && line_up(ns, "tun2")?),
        )?;
        // Silence both hubs at once: the spoke drops everything they send. The detection
        // times come from the daemon's own log (its transition lines carry their time), so
        // the polling below, slow under TCG, does not add to them.
        ns.exec(&["nft", "add", "table", "inet", "cut"])?;
        ns.exec(&[
            "nft",
            "add chain inet cut in { type filter hook input priority -10 ; }",
        ])?;
        let before = secs_of_day(std::time::SystemTime::now());
        ns.exec(&[
            "nft",
            &format!(
                "add rule inet cut in ip saddr {{ {}, {} }} drop",
                addrs(1).1,
                addrs(2).1
            ),
        ])?;
        let after = secs_of_day(std::time::SystemTime::now());
        let cut = (before + after) / 2.0;
        let mut down = [None, None];
        wait_until("both lines down", Duration::from_secs(40), || {
            let log = sc.peer(s).log();
            for (i, name) in ["tun1", "tun2"].iter().enumerate() {
                down[i] = transition_time(&log, &format!("{name}: line protocol down"));
            }
            Ok(down.iter().all(Option::is_some))
        })?;
        let [Some(t2), Some(t5)] = down else {
            unreachable!()
        };
        let (d2, d5) = (t2 - cut, t5 - cut);
        eprintln!(
            "DPD interval 2: retries 2 detected {d2:.2} s after the cut, retries 5 {d5:.2} s \
             (the cut took {:.2} s)",
            after - before
        );
        // Dead at most interval * (retries + 1) after the last answer, which came at most
        // one interval before the cut, and at least interval * retries after the cut:
        // retries 2 within [4, 6] s, retries 5 within [10, 12] s, with 1 s of slack for
        // the cut itself and scheduling.
        let within = |d: f64, lo: f64, hi: f64| d >= lo - 1.0 && d <= hi + 1.0;
        ensure!(within(d2, 4.0, 6.0), "retries 2: detected after {d2:.2} s");
        ensure!(
            within(d5, 10.0, 12.0),
            "retries 5: detected after {d5:.2} s"
        );
        ensure!(d5 - d2 >= 4.0, "retries 5 vs 2: {d5:.2} s vs {d2:.2} s");
        Ok(())
    });
}

/// `initiate = false`: packets routed into the tunnel raise kernel ACQUIREs, which must not
/// start it; the peer's initiation does.
#[test]
#[ignore = "vm"]
fn vm_router_initiate_false_is_not_started_by_traffic() {
    scenario("initiate-false", spec(), |sc| {
        let (h, _) = start(sc, Impl::Strongswan(StrongswanVersion::Debian12), |c| {
            spoke_tunnel(c, 1, 10, (2, 3), false);
        })?;
        let ns = sc.topo.host("s");
        // vtid answers on its socket before its tunnels exist: wait for tun1's address.
        wait_until("tun1 has its address", Duration::from_secs(20), || {
            Ok(ns
                .ip(&["-br", "addr", "show", "dev", "tun1"])
                .is_ok_and(|a| a.contains("10.255.1.1")))
        })?;
        // The hub's inner address is on the tunnel's connected /30, routed into the device
        // even while its line protocol is down: these pings hit the 0/0 policy.
        let _ = kernel::ping(ns, "10.255.1.1", "10.255.1.2", 10)?;
        let acquires = ns.ip(&["xfrm", "state"])?;
        std::thread::sleep(Duration::from_secs(2));
        let sessions = show_in(ns, "sessions")?;
        ensure!(
            rows(&sessions).next().is_none(),
            "traffic started an initiate = false tunnel: {sessions} (kernel: {acquires})"
        );
        ensure!(
            !line_up(ns, "tun1")?,
            "tun1 is up without a peer initiating"
        );
        ensure!(
            !sc.peer(h[0]).is_up()?,
            "strongSwan has an SA nobody initiated"
        );
        sc.peer(h[0]).initiate()?;
        wait_until(
            "tun1 up after the hub initiated",
            Duration::from_secs(30),
            || line_up(ns, "tun1"),
        )?;
        pings_pass(ns, SPOKE_LAN, SERVICE, 3, "spoke LAN to the service")?;
        Ok(())
    });
}

/// `dpd.action` after the peer is declared dead: `clear` leaves the tunnel down whatever
/// happens (the peer back, traffic into it) until `vtid up`; `hold` does not restart by
/// itself but traffic into the tunnel negotiates again. (`restart` is the failover above.)
#[test]
#[ignore = "vm"]
fn vm_router_dpd_action_clear_and_hold() {
    for action in ["clear", "hold"] {
        scenario(&format!("dpd-{action}"), spec(), |sc| {
            let (_, s) = start(sc, Impl::Strongswan(StrongswanVersion::Debian12), |c| {
                spoke_tunnel(c, 1, 10, (1, 2), true);
                c.ike_profile("I1").set(
                    "dpd",
                    nstest::vtidconf::Value::raw(format!(
                        "{{ interval = 1, retries = 2, action = \"{action}\" }}"
                    )),
                );
            })?;
            let ns = sc.topo.host("s");
            let h1 = sc.topo.host("h1");
            wait_until("tun1 up", Duration::from_secs(60), || line_up(ns, "tun1"))?;
            h1.exec(&[
                "tc", "qdisc", "add", "dev", "e-s", "root", "netem", "loss", "100%",
            ])?;
            wait_until("tun1 down (peer dead)", Duration::from_secs(20), || {
                Ok(!line_up(ns, "tun1")?)
            })?;
            h1.exec(&["tc", "qdisc", "del", "dev", "e-s", "root"])?;
            // Longer than the first retry back-off (5 s): nothing starts it by itself.
            std::thread::sleep(Duration::from_secs(8));
            ensure!(
                rows(&show_in(ns, "sessions")?).next().is_none(),
                "{action}: negotiated again by itself"
            );
            let row = tunnel_row(ns, "tun1")?;
            ensure!(row["line"] == "down", "{action}: {row}");
            // Traffic into the tunnel: the hub's inner address, on the tunnel's connected
            // /30, is routed into the device even while its line is down.
            let _ = kernel::ping(ns, "10.255.1.1", "10.255.1.2", 3)?;
            if action == "clear" {
                ensure!(
                    row["waiting"]
                        .as_str()
                        .is_some_and(|w| w.contains("cleared")),
                    "clear: show tunnels does not say why: {row}"
                );
                std::thread::sleep(Duration::from_secs(2));
                ensure!(!line_up(ns, "tun1")?, "clear: traffic restarted tun1");
                let v = sc.peer_mut(s).as_vtid().context("the spoke is vtid")?;
                v.cli(&["up", "tun1"])?;
            }
            let ns = sc.topo.host("s");
            wait_until(
                &format!("{action}: tun1 up again"),
                Duration::from_secs(30),
                || line_up(ns, "tun1"),
            )?;
            pings_pass(ns, SPOKE_LAN, SERVICE, 3, "spoke LAN to the service")?;
            Ok(())
        });
    }
}
