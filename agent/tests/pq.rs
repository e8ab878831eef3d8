//! Post-quantum hybrid key exchange in the VM: RFC 9370 additional key exchanges with
//! ML-KEM-768 (FIPS 203) over RFC 9242 IKE_INTERMEDIATE at IKE SA setup, and over
//! IKE_FOLLOWUP_KE on IKE SA rekey and Child SA PFS, against Debian 13's strongSwan 6 with
//! its `ml` plugin; and what happens against Debian 12's strongSwan 5.9.8, which has no
//! ML-KEM and no additional key exchanges at all.
//!
//! Each case is one route-based tunnel (xfrm interfaces on both ends) whose sides are picked
//! by parameter (house rule 7). The checks read strongSwan's own account of the SAs
//! (`swanctl --list-sas --raw`: `ke1-dh-group`... named ML_KEM_768), vtid's `show crypto`,
//! both kernels (`ip xfrm state`) and traffic through the tunnel.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, wait_until};
use nstest::peer::{Device, Impl, StrongswanVersion, TunnelEnd};
use nstest::{Scenario, TopoSpec, scenario};

/// strongSwan's spelling of X25519 with an ML-KEM-768 first additional key exchange.
const HYBRID_IKE: &str = "aes256gcm16-prfsha384-x25519-ke1_mlkem768";
/// The same, the ML-KEM round optional (`ke1_none`).
const OPTIONAL_IKE: &str = "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none";
const CLASSIC_IKE: &str = "aes256gcm16-prfsha384-x25519";
/// Child SA PFS with X25519 and ML-KEM-768 (CREATE_CHILD_SA + one IKE_FOLLOWUP_KE).
const HYBRID_ESP: &str = "aes256gcm16-x25519-ke1_mlkem768";

fn spec() -> TopoSpec {
    TopoSpec::new().link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
}

/// Site `me`'s (1 = a, 2 = b) end of the tunnel.
fn end(me: u8, initiator: bool, ike: &str, esp: &str) -> TunnelEnd {
    let other = if me == 1 { "b" } else { "a" };
    TunnelEnd {
        local: format!("192.0.2.{me}"),
        remote: format!("192.0.2.{}", 3 - me),
        psk: "pq-hybrid-psk-0123456789abcdef".into(),
        device: Device::Xfrmi {
            name: format!("tun{me}"),
            if_id: 42,
            underlay: nstest::topo::iface_to(other),
        },
        address: Some(format!("10.255.0.{me}/30")),
        routes: vec![],
        initiator,
        ike_proposals: ike.into(),
        esp_proposals: esp.into(),
        child_lifetime: None,
    }
}

/// Both peers report the tunnel up.
fn both_up(sc: &Scenario, peers: [usize; 2]) -> Result<()> {
    for p in peers {
        wait_until("Child SA up", Duration::from_secs(60), || {
            sc.peer(p).is_up()
        })?;
    }
    Ok(())
}

/// Five pings across the tunnel, all answered.
fn traffic(sc: &Scenario) -> Result<()> {
    let replies = kernel::ping(sc.topo.host("a"), "10.255.0.1", "10.255.0.2", 5)?;
    ensure!(replies == 5, "{replies}/5 pings answered across the tunnel");
    Ok(())
}

/// The negotiated (non-larval) SPIs in `host`'s kernel.
fn kernel_spis(sc: &Scenario, host: &str) -> Result<BTreeSet<u32>> {
    Ok(kernel::xfrm_states(sc.topo.host(host))?
        .into_iter()
        .map(|s| s.spi)
        .filter(|&spi| spi != 0)
        .collect())
}

/// The value of `key=` in strongSwan's raw listing (the first occurrence).
fn swan_field<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    let at = list.find(&format!("{key}="))? + key.len() + 1;
    list[at..].split([' ', '}', '\n']).next()
}

/// strongSwan's IKE SA shows ML-KEM-768 as an additional key exchange, and its Child SA too
/// when `child` (a Child SA created or rekeyed with PFS).
fn swan_shows_ml_kem(sc: &Scenario, s: usize, child: bool) -> Result<String> {
    let list = sc.peer(s).list_sas()?;
    let n = list.matches("ML_KEM_768").count();
    ensure!(
        n > usize::from(child),
        "strongSwan's SAs name ML_KEM_768 {n} time(s), expected the IKE SA{}: {list}",
        if child { " and the Child SA" } else { "" }
    );
    Ok(list)
}

/// vtid's `show crypto ikev2 sa` and, with `child`, `show crypto ipsec sa` name the round.
fn vtid_shows_ml_kem(sc: &mut Scenario, v: usize, child: bool) -> Result<()> {
    let vt = sc.peer_mut(v).as_vtid().context("vtid peer")?;
    let ike = vt.cli(&["show", "crypto", "ikev2", "sa"])?;
    ensure!(ike.contains("mlkem768"), "show crypto ikev2 sa:\n{ike}");
    if child {
        let ipsec = vt.cli(&["show", "crypto", "ipsec", "sa"])?;
        ensure!(ipsec.contains("mlkem768"), "show crypto ipsec sa:\n{ipsec}");
    }
    Ok(())
}

/// Waits until both kernels hold the same two SAs, none of them in `old`.
fn rekeyed(sc: &Scenario, old: &BTreeSet<u32>, what: &str) -> Result<BTreeSet<u32>> {
    let mut now = BTreeSet::new();
    wait_until(what, Duration::from_secs(90), || {
        let (a, b) = (kernel_spis(sc, "a")?, kernel_spis(sc, "b")?);
        now = a.clone();
        Ok(a.len() == 2 && a.is_disjoint(old) && a == b)
    })?;
    Ok(now)
}

#[test]
#[ignore = "vm"]
fn vm_pq_vtid_initiates_to_strongswan6_and_rekeys_both_sas() {
    scenario("pq-vtid-init", spec(), |sc| {
        let s = sc.start_peer(
            Impl::Strongswan(StrongswanVersion::Debian13),
            "b",
            &end(2, false, HYBRID_IKE, HYBRID_ESP),
        )?;
        let v = sc.start_peer(Impl::Vtid, "a", &end(1, true, HYBRID_IKE, HYBRID_ESP))?;
        both_up(sc, [v, s])?;
        let list = swan_shows_ml_kem(sc, s, false)?;
        let ike_spi = swan_field(&list, "initiator-spi")
            .context("strongSwan's IKE SA SPI")?
            .to_owned();
        vtid_shows_ml_kem(sc, v, false)?;
        traffic(sc)?;

        // A Child SA rekey with PFS: CREATE_CHILD_SA (X25519), then IKE_FOLLOWUP_KE
        // (ML-KEM-768); both kernels move to one new pair.
        let old = kernel_spis(sc, "a")?;
        let vt = sc.peer_mut(v).as_vtid().context("vtid")?;
        vt.cli(&["rekey", "child", "tunnel", "tun1"])?;
        rekeyed(sc, &old, "the Child SA rekeyed with ML-KEM on both ends")?;
        swan_shows_ml_kem(sc, s, true)?;
        vtid_shows_ml_kem(sc, v, true)?;
        traffic(sc)?;

        // An IKE SA rekey: the new IKE SA carries the ML-KEM round too (RFC 9370 §2.2.4).
        let vt = sc.peer_mut(v).as_vtid().context("vtid")?;
        vt.cli(&["rekey", "ike", "tunnel", "tun1"])?;
        wait_until(
            "strongSwan on a new IKE SA",
            Duration::from_secs(90),
            || {
                let l = sc.peer(s).list_sas()?;
                Ok(l.contains("ESTABLISHED")
                    && swan_field(&l, "initiator-spi").is_some_and(|spi| spi != ike_spi))
            },
        )?;
        swan_shows_ml_kem(sc, s, true)?;
        vtid_shows_ml_kem(sc, v, false)?;
        traffic(sc)
    });
}

#[test]
#[ignore = "vm"]
fn vm_pq_strongswan6_initiates_to_vtid_and_rekeys_the_child_sa() {
    scenario("pq-ss-init", spec(), |sc| {
        let v = sc.start_peer(Impl::Vtid, "a", &end(1, false, HYBRID_IKE, HYBRID_ESP))?;
        // strongSwan rekeys its Child SA after about half a minute (rekey_time = life_time
        // less a margin, nstest::peer).
        let mut ss_end = end(2, true, HYBRID_IKE, HYBRID_ESP);
        ss_end.child_lifetime = Some(45);
        let s = sc.start_peer(Impl::Strongswan(StrongswanVersion::Debian13), "b", &ss_end)?;
        sc.peer(s).initiate()?;
        both_up(sc, [v, s])?;
        swan_shows_ml_kem(sc, s, false)?;
        vtid_shows_ml_kem(sc, v, false)?;
        traffic(sc)?;
        let old = kernel_spis(sc, "a")?;
        rekeyed(sc, &old, "strongSwan's Child SA rekey with ML-KEM")?;
        swan_shows_ml_kem(sc, s, true)?;
        vtid_shows_ml_kem(sc, v, true)?;
        traffic(sc)
    });
}

#[test]
#[ignore = "vm"]
fn vm_pq_required_refused_by_strongswan5_optional_falls_back_to_classic() {
    scenario("pq-refused", spec(), |sc| {
        let s = sc.start_peer(
            Impl::Strongswan(StrongswanVersion::Debian12),
            "b",
            &end(2, false, CLASSIC_IKE, "aes256gcm16"),
        )?;
        let required = end(1, true, HYBRID_IKE, "aes256gcm16");
        let v = sc.start_peer(Impl::Vtid, "a", &required)?;
        // strongSwan 5.9.8 knows no additional key exchange (RFC 7296 §3.3.6: a proposal
        // with an unknown transform type is skipped): vtid, which requires one, gets
        // NO_PROPOSAL_CHOSEN, no IKE SA, and says so at the default log level.
        wait_until(
            "vtid reports the refused proposal",
            Duration::from_secs(60),
            || {
                Ok(sc.peer(v).log().lines().any(|l| {
                    l.contains(" INFO ")
                        && l.contains("the peer refused our request")
                        && l.contains("NoProposalChosen")
                }))
            },
        )?;
        ensure!(!sc.peer(v).is_up()?, "vtid came up without ML-KEM");
        ensure!(
            kernel_spis(sc, "a")?.is_empty(),
            "SAs installed on vtid's side"
        );

        // The same tunnel with the round optional comes up classic after a reload.
        let optional = end(1, true, OPTIONAL_IKE, "aes256gcm16");
        let vt = sc.peer_mut(v).as_vtid().context("vtid")?;
        vt.rewrite_config(&[optional])?;
        vt.cli(&["reload"])?;
        vt.initiate()?;
        both_up(sc, [v, s])?;
        let list = sc.peer(s).list_sas()?;
        ensure!(
            !list.contains("ML_KEM") && list.contains("CURVE_25519"),
            "strongSwan 5.9.8's view of the fallback: {list}"
        );
        traffic(sc)
    });
}
