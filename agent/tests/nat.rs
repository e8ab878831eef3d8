//! NAT rebinding (VM, issue 14 scenario 4): the NAT in front of a spoke changes the spoke's
//! port mapping in the middle of traffic, and the vtid hub follows it (RFC 7296 §2.23)
//! without a rekey. The spoke behind the NAT is played by strongSwan or by vtid (house rule
//! 7); the hub, whose kernel reports the new mapping (XFRM_MSG_MAPPING), is vtid.
//!
//! ```text
//!   s (spoke, 10.0.0.2) --- n (masquerade) --- h (vtid hub, 198.51.100.2)
//!   tun0 10.255.0.1/30 ======= IPsec, ESP in UDP ======= tun0 10.255.0.2/30
//! ```
//!
//! The NAT first keeps the spoke's source ports (masquerade does when it can: 4500 stays
//! 4500). Mid-ping it starts mapping UDP to ports 40000-40999 and forgets every UDP flow
//! (`conntrack -D`), as a NAT that reboots or expires a mapping early would. The spoke's next
//! ESP packet arrives at the hub from a new port; until the hub follows, its replies go to the
//! old mapping, which no longer exists. The scenario measures the outage, and checks that the
//! SPIs stayed (no rekey) and that the hub's SAs, its `show sa` and its IKE session show the
//! new port.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nstest::assert::{pings_pass, rows, wait_until};
use nstest::kernel::{self, Pinger, XfrmState};
use nstest::peer::{Device, Impl, StrongswanVersion, TunnelEnd};
use nstest::topo::nat_rebind;
use nstest::vtid::{Vtid, write_secret};
use nstest::vtidconf::VtidConf;
use nstest::{Netns, TopoSpec, scenario};

const PSK: &str = "nat-rebinding-psk-0123456789";
const SPOKE: &str = "10.0.0.2";
const NAT_PUBLIC: &str = "198.51.100.1";
const HUB: &str = "198.51.100.2";
const SPOKE_IN: &str = "10.255.0.1";
const HUB_IN: &str = "10.255.0.2";
/// The ports the NAT maps UDP to after the rebinding.
const NEW_PORTS: (u16, u16) = (40000, 40999);
/// What "recovers within a few seconds" allows: the hub follows on the first ESP packet
/// from the new port, so the outage is a round trip or two plus vtid's two SA updates.
const MAX_OUTAGE: Duration = Duration::from_secs(3);

fn spec() -> TopoSpec {
    TopoSpec::new()
        .link("s", &format!("{SPOKE}/24"), "n", "10.0.0.1/24")
        .link("n", &format!("{NAT_PUBLIC}/24"), "h", &format!("{HUB}/24"))
        .route("s", "default", "via 10.0.0.1")
        .nat("n", &nstest::topo::iface_to("h"))
}

/// The spoke: it initiates to the hub from behind the NAT.
fn spoke_end() -> TunnelEnd {
    TunnelEnd {
        local: SPOKE.into(),
        remote: HUB.into(),
        psk: PSK.into(),
        device: Device::Xfrmi {
            name: "tun0".into(),
            if_id: 42,
            underlay: nstest::topo::iface_to("n"),
        },
        address: Some(format!("{SPOKE_IN}/30")),
        routes: Vec::new(),
        initiator: true,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: "aes256gcm16".into(),
        child_lifetime: None,
    }
}

/// The hub: a static tunnel to the NAT's public address that only answers; the spoke
/// identifies as its own (private) address, which is what the profile matches.
fn hub_config(psk: &Path) -> String {
    let mut c = VtidConf::new();
    c.keyring("K", &[(NAT_PUBLIC, psk)]);
    c.transform_set("T", "aes-gcm-256");
    c.ipsec_profile("P", &["T"]);
    c.ike_profile("I")
        .set("keyring", "K")
        .set("match_identity", &[SPOKE][..]);
    c.tunnel("tun0")
        .set("mode", "xfrmi")
        .set("if_id", 42u32)
        .set("source", HUB)
        .set("destination", NAT_PUBLIC)
        .set("address", format!("{HUB_IN}/30"))
        .set("protection", "P")
        .set("ike_profile", "I")
        .set("initiate", false)
        .set("routes", &[] as &[&str]);
    c.render()
}

/// The hub's negotiated SAs (larval SPI 0 states left out).
fn hub_sas(h: &Netns) -> Result<Vec<XfrmState>> {
    Ok(kernel::xfrm_states(h)?
        .into_iter()
        .filter(|x| x.spi != 0)
        .collect())
}

/// The spoke's port as the hub's two SAs have it: the inbound SA's encap sport and the
/// outbound one's dport, when both are UDP-encapsulated and agree.
fn hub_view_of_spoke_port(sas: &[XfrmState]) -> Option<u16> {
    let inbound = sas.iter().find(|x| x.src == NAT_PUBLIC)?.encap_ports()?;
    let outbound = sas.iter().find(|x| x.dst == NAT_PUBLIC)?.encap_ports()?;
    (sas.len() == 2 && inbound.0 == outbound.1 && inbound.1 == 4500 && outbound.0 == 4500)
        .then_some(inbound.0)
}

fn rebinding(spoke: Impl) {
    let name = format!("nat-rebind-{spoke:?}").to_lowercase();
    scenario(&name, spec(), |sc| {
        let dir = sc.dir().join("h");
        std::fs::create_dir_all(&dir)?;
        let psk = write_secret(&dir, "psk.key", PSK)?;
        let hub = Vtid::start_config(sc.topo.host("h"), &dir, &hub_config(&psk), "tun0")?;
        let hi = sc.add_peer("h", nstest::peer::vtid_peer(hub));
        let si = sc.start_peer(spoke, "s", &spoke_end())?;
        // vtid initiates by itself on start (initiate = true); strongSwan is told to.
        if spoke.is_strongswan() {
            sc.peer(si).initiate()?;
        }
        let (s, h) = (sc.topo.host("s"), sc.topo.host("h"));
        let mut before = Vec::new();
        wait_until("Child SAs on both sides", Duration::from_secs(60), || {
            before = hub_sas(h)?;
            Ok(hub_view_of_spoke_port(&before).is_some() && nstest::assert::sa_count(s)? == 2)
        })?;
        let old_port = hub_view_of_spoke_port(&before).context("hub's SAs")?;
        let spis = |l: &[XfrmState]| l.iter().map(|x| x.spi).collect::<BTreeSet<_>>();
        let (hub_spis, spoke_spis) = (spis(&before), nstest::assert::spis(s)?);
        ensure!(hub_spis == spoke_spis, "SPIs differ: {before:?}");
        pings_pass(
            s,
            SPOKE_IN,
            HUB_IN,
            3,
            "through the NAT before the rebinding",
        )?;

        let pinger = Pinger::start(s, SPOKE_IN, HUB_IN, Duration::from_millis(100))?;
        std::thread::sleep(Duration::from_secs(2));
        let n = sc.topo.host("n");
        nat_rebind(n, &nstest::topo::iface_to("h"), NEW_PORTS)?;
        let rebound = Instant::now();
        let mut now = Vec::new();
        wait_until(
            "the hub's SAs follow the spoke's new mapping",
            Duration::from_secs(10),
            || {
                now = hub_sas(h)?;
                Ok(hub_view_of_spoke_port(&now).is_some_and(|p| p != old_port))
            },
        )?;
        let followed = rebound.elapsed();
        let new_port = hub_view_of_spoke_port(&now).context("hub's SAs")?;
        std::thread::sleep(Duration::from_secs(3));
        let log = pinger.stop()?;
        let outage = log.longest_outage();
        eprintln!(
            "NAT rebinding, {spoke:?} spoke behind the NAT, vtid hub: port {old_port} -> \
             {new_port}; hub's SAs followed {:.1} s after the rebinding; longest outage \
             {} ms; {} of {} pings lost",
            followed.as_secs_f64(),
            outage.as_millis(),
            log.lost(),
            log.sent
        );
        ensure!(
            (NEW_PORTS.0..=NEW_PORTS.1).contains(&new_port),
            "the hub follows port {new_port}, not one the NAT maps to now"
        );
        ensure!(
            outage <= MAX_OUTAGE,
            "traffic was out for {outage:?} (> {MAX_OUTAGE:?}): {log:?}"
        );
        ensure!(
            log.replies.len() >= 2 && log.received * 2 > log.sent,
            "ping through the rebinding: {log:?}"
        );
        // No rekey: the same SPIs on both sides, and the hub's SAs kept their counters
        // (the packets before the rebinding are still counted).
        ensure!(
            spis(&now) == hub_spis && nstest::assert::spis(s)? == spoke_spis,
            "the SPIs changed (a rekey?): before {before:?}, now {now:?}"
        );
        let count = |l: &[XfrmState]| l.iter().map(|x| x.packets).sum::<u64>();
        ensure!(
            count(&now) > count(&before),
            "the hub's SAs restarted their counters: {before:?} -> {now:?}"
        );
        pings_pass(
            s,
            SPOKE_IN,
            HUB_IN,
            3,
            "through the NAT after the rebinding",
        )?;
        // vtid's own view: `show sa` has the new ports, and IKE goes there too.
        let hub = sc.peer_mut(hi).as_vtid().context("the hub is vtid")?;
        let sa = hub.show("sa")?;
        let row = rows(&sa).next().cloned().context("show sa: no Child SA")?;
        ensure!(
            row["udp_encap"]["remote_port"] == new_port && row["udp_encap"]["local_port"] == 4500,
            "show sa: {row}"
        );
        let sessions = hub.show("sessions")?;
        let want = format!("{NAT_PUBLIC}:{new_port}");
        ensure!(
            rows(&sessions).any(|r| r["remote"] == want.as_str()),
            "show sessions does not have the IKE SA at {want}: {sessions}"
        );
        let text = hub.log();
        ensure!(
            text.contains("follows the peer's new NAT mapping")
                && !text.to_lowercase().contains("rekeyed"),
            "hub log: {text}"
        );
        Ok(())
    });
}

#[test]
#[ignore = "vm"]
fn vm_nat_rebinding_against_strongswan() {
    rebinding(Impl::Strongswan(StrongswanVersion::Debian12));
}

#[test]
#[ignore = "vm"]
fn vm_nat_rebinding_vtid_to_vtid() {
    rebinding(Impl::Vtid);
}
