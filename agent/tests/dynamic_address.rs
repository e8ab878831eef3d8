//! Tunnels sourced from an interface whose address comes and goes (VM), as on a DHCP or PPPoE
//! WAN: a vtid spoke with `source = "e-h"` against a strongSwan hub that accepts the spoke
//! from any address, with MOBIKE (RFC 4555) on and off at the hub.
//!
//! ```text
//!   s (10.1.0.1 on its LAN) e-h ---- 198.51.100.0/24 ---- e-s h (10.200.0.1 on its LAN)
//!       198.51.100.1, later .11                          198.51.100.2
//! ```
//!
//! 1. vtid starts while e-h has no address: not fatal, the tunnel waits and `show tunnels`
//!    says why; the address appears and the tunnel comes up without a restart.
//! 2. The lease changes: the address is removed (the tunnel is held, line down, and says
//!    why) and a new one is added. With MOBIKE the same IKE SA moves to the new address
//!    (UPDATE_SA_ADDRESSES) and its Child SAs are rekeyed there; without it vtid negotiates
//!    afresh from it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nstest::assert::{pings_pass, rows, wait_until};
use nstest::kernel;
use nstest::strongswan::{Strongswan, SwanConn};
use nstest::topo::iface_to;
use nstest::vtid::{Vtid, show_in, write_secret};
use nstest::vtidconf::VtidConf;
use nstest::{Netns, TopoSpec, scenario};

const PSK: &str = "dynamic-address-psk-0123456789";
const SPOKE_LAN: &str = "10.1.0.1";
const HUB_LAN: &str = "10.200.0.1";
const HUB: &str = "198.51.100.2";
const FIRST: &str = "198.51.100.1";
const SECOND: &str = "198.51.100.11";

fn spec() -> TopoSpec {
    TopoSpec::new()
        .link("s", &format!("{FIRST}/24"), "h", &format!("{HUB}/24"))
        .lan("s", &format!("{SPOKE_LAN}/24"))
        .lan("h", &format!("{HUB_LAN}/24"))
}

/// The hub: strongSwan answering any address (a spoke on a dynamic WAN), its xfrm interface
/// routing the spoke's LAN back.
fn start_hub(ns: &Netns, dir: &std::path::Path, mobike: bool) -> Result<Strongswan> {
    let up = iface_to("s");
    ns.ip(&[
        "link", "add", "tun0", "type", "xfrm", "dev", &up, "if_id", "1",
    ])?;
    ns.ip(&["link", "set", "tun0", "up"])?;
    ns.ip(&["addr", "add", "10.255.1.2/30", "dev", "tun0"])?;
    ns.ip(&["route", "add", "10.1.0.0/24", "dev", "tun0"])?;
    let mut conn = SwanConn::psk(HUB, "%any", PSK);
    conn.remote_id = "%any".into();
    conn.if_id = Some(1);
    conn.mobike = Some(if mobike { "yes" } else { "no" }.into());
    Strongswan::start(ns, dir, &conn)
}

/// The spoke's row of `show tunnels`.
fn row(ns: &Netns) -> Result<serde_json::Value> {
    let v = show_in(ns, "tunnels")?;
    rows(&v)
        .find(|r| r["name"] == "tun1")
        .cloned()
        .with_context(|| format!("no tun1 in {v}"))
}

/// The SPIs (initiator, responder) of the spoke's IKE SA from `local`, and its kernel Child SA
/// SPIs. (Without MOBIKE the IKE SA of the vanished address may linger while its DELETE goes
/// unanswered.)
fn spis(ns: &Netns, local: &str) -> Result<(String, Vec<u32>)> {
    let s = show_in(ns, "sessions")?;
    let r = rows(&s)
        .find(|r| {
            r["local"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("{local}:")))
        })
        .cloned()
        .with_context(|| format!("no IKE SA from {local}: {s}"))?;
    let mut child: Vec<u32> = kernel::xfrm_states(ns)?.iter().map(|x| x.spi).collect();
    child.sort();
    Ok((format!("{}/{}", r["spi_i"], r["spi_r"]), child))
}

fn renumbering(sc: &mut nstest::Scenario, mobike: bool) -> Result<()> {
    let s = sc.topo.host("s");
    let h = sc.topo.host("h");
    let wan = iface_to("h");
    // Before its lease: no address on the WAN.
    s.ip(&["addr", "flush", "dev", &wan])?;
    let hub = start_hub(h, &sc.dir().join("h"), mobike)?;
    let dir = sc.dir().join("s");
    std::fs::create_dir_all(&dir)?;
    let key = write_secret(&dir, "psk.key", PSK)?;
    let mut c = VtidConf::new();
    c.keyring("K", &[(HUB, key.as_path())]);
    c.transform_set("T", "aes-gcm-256");
    c.ipsec_profile("P", &["T"]);
    c.ike_profile("I").set("keyring", "K").set(
        "dpd",
        nstest::vtidconf::Value::inline(&[("interval", 3), ("retries", 2)]),
    );
    c.tunnel("tun1")
        .set("mode", "xfrmi")
        .set("if_id", 1u32)
        .set("source", wan.as_str())
        .set("destination", HUB)
        .set("address", "10.255.1.1/30")
        .set("protection", "P")
        .set("ike_profile", "I")
        .set(
            "routes",
            nstest::vtidconf::Value::raw("[\"10.200.0.0/24\"]"),
        );
    let v = Vtid::start_config(s, &dir, &c.render(), "tun1")?;
    let res = (|| {
        // 1. Waiting at start, up once the address appears.
        let r = row(s)?;
        ensure!(
            r["line"] == "down"
                && r["waiting"]
                    .as_str()
                    .is_some_and(|w| w.contains(&format!("{wan} has no IPv4 address"))),
            "tun1 before the lease: {r}"
        );
        ensure!(
            v.log().contains(&format!(
                "tun1: line protocol down (waiting: source interface {wan} has no IPv4 address)"
            )),
            "no waiting line in the log"
        );
        s.ip(&["addr", "add", &format!("{FIRST}/24"), "dev", &wan])?;
        let t0 = Instant::now();
        wait_until(
            "tun1 up on the first address",
            Duration::from_secs(30),
            || Ok(row(s)?["line"] == "up"),
        )?;
        eprintln!("address appeared: tun1 up after {:?}", t0.elapsed());
        pings_pass(s, SPOKE_LAN, HUB_LAN, 3, "spoke LAN to hub LAN")?;
        let r = row(s)?;
        ensure!(r["local"] == FIRST, "tun1's local address: {r}");
        let (ike_before, child_before) = spis(s, FIRST)?;

        // 2. The lease changes: the old address goes (held, line down), a new one comes.
        s.ip(&["addr", "del", &format!("{FIRST}/24"), "dev", &wan])?;
        wait_until(
            "tun1 held without an address",
            Duration::from_secs(10),
            || {
                let r = row(s)?;
                Ok(r["line"] == "down"
                    && r["waiting"]
                        .as_str()
                        .is_some_and(|w| w.contains("has no IPv4")))
            },
        )?;
        s.ip(&["addr", "add", &format!("{SECOND}/24"), "dev", &wan])?;
        let t0 = Instant::now();
        wait_until(
            "spoke LAN reaches the hub LAN from the new address",
            Duration::from_secs(40),
            || Ok(kernel::ping(s, SPOKE_LAN, HUB_LAN, 1)? == 1),
        )?;
        let took = t0.elapsed();
        eprintln!(
            "renumbered (hub MOBIKE {}): traffic again after {took:?}",
            if mobike { "on" } else { "off" },
        );
        // One exchange (MOBIKE) or one negotiation (without): seconds, not the 31 s an
        // unanswered DELETE from the vanished address takes to run out.
        ensure!(
            took < Duration::from_secs(12),
            "traffic came back only after {took:?}"
        );
        pings_pass(
            s,
            SPOKE_LAN,
            HUB_LAN,
            3,
            "spoke LAN to hub LAN after renumbering",
        )?;
        let r = row(s)?;
        ensure!(
            r["local"] == SECOND && r["line"] == "up",
            "tun1 after renumbering: {r}"
        );
        // The hub's SAs are with the new address, in both directions.
        let hub_sas = kernel::xfrm_states(h)?;
        ensure!(
            hub_sas.iter().any(|x| x.dst == SECOND) && hub_sas.iter().any(|x| x.src == SECOND),
            "the hub's SAs: {hub_sas:?}"
        );
        let (ike_after, child_after) = spis(s, SECOND)?;
        if mobike {
            // RFC 4555: the same IKE SA moved (UPDATE_SA_ADDRESSES); its Child SAs were
            // rekeyed onto the new addresses under it.
            ensure!(
                ike_after == ike_before,
                "IKE SA {ike_before} became {ike_after}"
            );
            // The old pair goes once the rekey's DELETE exchange is done.
            wait_until("the old Child SAs deleted", Duration::from_secs(10), || {
                let (_, now) = spis(s, SECOND)?;
                Ok(now.iter().all(|x| !child_before.contains(x)))
            })
            .with_context(|| format!("Child SAs before {child_before:?}, after {child_after:?}"))?;
            ensure!(
                v.log().contains("IKE SA moved (MOBIKE)"),
                "the spoke did not log the move"
            );
        } else {
            ensure!(
                ike_after != ike_before,
                "without MOBIKE the IKE SA must be new, still {ike_after}"
            );
        }
        Ok(())
    })();
    res.with_context(|| format!("==== spoke\n{}\n==== hub\n{}", v.log(), hub.log()))
}

#[test]
#[ignore = "vm"]
fn vm_dynamic_address_against_strongswan_without_mobike() {
    scenario("dynaddr-no-mobike", spec(), |sc| renumbering(sc, false));
}

#[test]
#[ignore = "vm"]
fn vm_dynamic_address_against_strongswan_with_mobike() {
    scenario("dynaddr-mobike", spec(), |sc| renumbering(sc, true));
}
