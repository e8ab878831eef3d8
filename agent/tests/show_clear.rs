//! The IOS-vocabulary commands (VM), vtid against strongSwan: `vtid show crypto ...` read
//! after traffic and checked against the kernel (`ip xfrm state`) and strongSwan's own view
//! (`swanctl --list-sas`); `vtid clear crypto session|sa` and `vtid rekey ike|child`, each
//! checked on both ends: what was deleted is gone from both kernels and from strongSwan,
//! what was kept kept its SPIs, and what an initiating tunnel renegotiates carries traffic.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::assert::{pings_pass, spis_with, wait_until};
use nstest::peer::{Device, Impl, StrongswanVersion, TunnelEnd};
use nstest::topo::iface_to;
use nstest::vtid::Vtid;
use nstest::{Scenario, TopoSpec, scenario};

const PSK: &str = "show-clear-psk-NEVER-PRINTED-0123456789";
const A: &str = "192.0.2.1";
const B: &str = "192.0.2.2";

fn spec() -> TopoSpec {
    TopoSpec::new()
        .link("a", &format!("{A}/24"), "b", &format!("{B}/24"))
        .lan("a", "10.1.0.1/24")
        .lan("b", "10.2.0.1/24")
}

/// vtid on `a` initiates tunnel `tun1` (xfrmi) to strongSwan on `b`.
fn end(on_a: bool) -> TunnelEnd {
    let (local, remote, name, peer, addr, route) = if on_a {
        (A, B, "tun1", "b", "10.255.0.1/30", "10.2.0.0/24")
    } else {
        (B, A, "tun2", "a", "10.255.0.2/30", "10.1.0.0/24")
    };
    TunnelEnd {
        local: local.into(),
        remote: remote.into(),
        psk: PSK.into(),
        device: Device::Xfrmi {
            name: name.into(),
            if_id: 42,
            underlay: iface_to(peer),
        },
        address: Some(addr.into()),
        routes: vec![route.into()],
        initiator: on_a,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: "aes256gcm16".into(),
        child_lifetime: None,
    }
}

/// Runs `body` with strongSwan up on `b` (peer 0) and vtid on `a`, the tunnel up.
fn with_tunnel(name: &str, body: impl FnOnce(&mut Scenario, &Vtid) -> Result<()>) {
    scenario(name, spec(), |sc| {
        sc.start_peer(
            Impl::Strongswan(StrongswanVersion::Debian12),
            "b",
            &end(false),
        )?;
        let v = Vtid::start(sc.topo.host("a"), &sc.dir().join("a"), &end(true))?;
        let r = up(sc, &v).and_then(|()| body(sc, &v));
        r.with_context(|| format!("==== log of vtid on a\n{}", v.log()))
    });
}

/// Waits for the tunnel on both ends and for LAN pings through it.
fn up(sc: &Scenario, v: &Vtid) -> Result<()> {
    wait_until(
        "the tunnel up on both ends",
        Duration::from_secs(60),
        || Ok(v.is_up()? && sc.peer(0).is_up()?),
    )?;
    pings_pass(sc.topo.host("a"), "10.1.0.1", "10.2.0.1", 3, "LAN pings")
}

/// `vtid show crypto ARGS...` as text.
fn show(v: &Vtid, args: &[&str]) -> Result<String> {
    let mut a = vec!["show", "crypto"];
    a.extend_from_slice(args);
    v.cli(&a)
}

/// `vtid show crypto ARGS... --json`, parsed.
fn show_json(v: &Vtid, args: &[&str]) -> Result<serde_json::Value> {
    let mut a = vec!["show", "crypto"];
    a.extend_from_slice(args);
    a.push("--json");
    let text = v.cli(&a)?;
    serde_json::from_str(&text).with_context(|| format!("{a:?} is not JSON: {text}"))
}

/// vtid's IKE SA SPI pairs (ours, the peer's) of established IKE SAs, lower-case hex.
fn vtid_ike_spis(v: &Vtid) -> Result<BTreeSet<(String, String)>> {
    Ok(nstest::assert::rows(&show_json(v, &["ikev2", "sa"])?)
        .filter(|r| r["status"] == "READY")
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_lowercase();
            (s("local_spi"), s("remote_spi"))
        })
        .collect())
}

/// Values of `key=` in strongSwan's raw listing, lower-case, without leading zeros (its SPIs
/// are printed as `%.16llx` / `%.8x`, vtid's with fixed widths too; trimming makes both
/// comparable).
fn swan_values(raw: &str, key: &str) -> BTreeSet<String> {
    raw.split(|c: char| c.is_whitespace() || c == '{' || c == '}')
        .filter_map(|t| t.strip_prefix(key))
        .map(|v| v.trim_start_matches('0').to_lowercase())
        .collect()
}

fn trim(s: &str) -> String {
    s.trim_start_matches('0').to_lowercase()
}

/// The IKE SPIs strongSwan has (both halves of each pair).
fn swan_ike_spis(sc: &Scenario) -> Result<BTreeSet<String>> {
    let raw = sc.peer(0).list_sas()?;
    let mut s = swan_values(&raw, "initiator-spi=");
    s.extend(swan_values(&raw, "responder-spi="));
    Ok(s)
}

/// The Child SA SPIs strongSwan has installed.
fn swan_child_spis(sc: &Scenario) -> Result<BTreeSet<String>> {
    let raw = sc.peer(0).list_sas()?;
    let mut s = swan_values(&raw, "spi-in=");
    s.extend(swan_values(&raw, "spi-out="));
    Ok(s)
}

/// The ESP SPIs in `host`'s kernel between a and b, hex.
fn kernel_spis(sc: &Scenario, host: &str) -> Result<BTreeSet<String>> {
    let peer = if host == "a" { B } else { A };
    Ok(spis_with(sc.topo.host(host), peer)?
        .into_iter()
        .map(|s| format!("{s:x}"))
        .collect())
}

/// The (inbound, outbound) SPIs vtid shows for its one Child SA.
fn child_spis(v: &Vtid) -> Result<(String, String)> {
    let rows = show_json(v, &["ipsec", "sa"])?;
    let r = nstest::assert::rows(&rows)
        .next()
        .with_context(|| format!("no Child SA shown: {rows}"))?;
    let s = |k: &str| trim(r[k].as_str().unwrap_or_default());
    Ok((s("spi_in"), s("spi_out")))
}

#[test]
#[ignore = "vm"]
fn vm_show_crypto_views_after_traffic() {
    with_tunnel("show-crypto", |sc, v| {
        let ha = sc.topo.host("a");
        pings_pass(ha, "10.1.0.1", "10.2.0.1", 5, "LAN pings")?;
        let mut all_text = String::new();

        // The IKE port in use: strongSwan moves IKE_AUTH to 4500 whenever both ends sent
        // NAT_DETECTION notifies (RFC 7296 §2.23 allows it without a NAT), so read it.
        let j = show_json(v, &["session"])?;
        let port = nstest::assert::rows(&j)
            .next()
            .and_then(|r| r["peer_port"].as_u64())
            .with_context(|| format!("no session: {j}"))?;
        ensure!(port == 500 || port == 4500, "{j}");

        // show crypto session: the seeds' lines.
        let t = show(v, &["session"])?;
        for line in [
            "Crypto session current status\n".to_string(),
            "Interface: tun1\n".into(),
            "Session status: UP-ACTIVE\n".into(),
            format!("Peer: 192.0.2.2 port {port}\n"),
            format!("IKEv2 SA: local 192.0.2.1/{port} remote 192.0.2.2/{port} Active\n"),
            "IPSEC FLOW: permit ip 0.0.0.0/0.0.0.0 0.0.0.0/0.0.0.0\n".into(),
            "Active SAs: 2, origin: crypto map\n".into(),
        ] {
            ensure!(t.contains(&line), "session lacks {line:?}:\n{t}");
        }
        all_text.push_str(&t);

        // detail: algorithms strongSwan agreed to, identities, PFS, counters.
        let t = show(v, &["session", "detail"])?;
        let peer_line = format!("Peer: 192.0.2.2 port {port} fvrf: (none) ivrf: (none)\n");
        for line in [
            peer_line.as_str(),
            "      Phase1_id: 192.0.2.2\n",
            "Encr: AES-GCM, keysize: 256, PRF: SHA256, Hash: None, DH Grp:31, Auth sign: PSK, Auth verify: PSK\n",
            "Local id: 192.0.2.1, Remote id: 192.0.2.2\n",
            "  IPSEC FLOW: permit ip 0.0.0.0/0.0.0.0 0.0.0.0/0.0.0.0\n",
            "PFS (Y/N): N, DH group: none\n",
            "#recv errors 0 (replay 0, integrity 0)\n",
        ] {
            ensure!(t.contains(line), "session detail lacks {line:?}:\n{t}");
        }
        all_text.push_str(&t);

        // show crypto ipsec sa: kernel counters after the pings, SPIs as the kernel has them.
        let t = show(v, &["ipsec", "sa"])?;
        let (spi_in, spi_out) = child_spis(v)?;
        let kernel = kernel_spis(sc, "a")?;
        ensure!(
            kernel.contains(&spi_in) && kernel.contains(&spi_out),
            "shown {spi_in}/{spi_out}, kernel has {kernel:?}"
        );
        let out = u32::from_str_radix(&spi_out, 16)?;
        for line in [
            "interface: tun1\n".to_string(),
            format!("   current_peer 192.0.2.2 port {port}\n"),
            "     local crypto endpt.: 192.0.2.1, remote crypto endpt.: 192.0.2.2\n".into(),
            format!("     current outbound spi: 0x{out:08X}({out})\n"),
            "        transform: esp-gcm 256 ,\n".into(),
            "        in use settings ={Tunnel, }\n".into(),
            "        Status: ACTIVE\n".into(),
            "     PFS (Y/N): N, DH group: none\n".into(),
        ] {
            ensure!(t.contains(&line), "ipsec sa lacks {line:?}:\n{t}");
        }
        let count = |key: &str| -> Result<u64> {
            let l = t
                .lines()
                .find(|l| l.trim_start().starts_with(key))
                .with_context(|| format!("no {key} in\n{t}"))?;
            Ok(l.rsplit(' ').next().unwrap_or_default().parse()?)
        };
        ensure!(count("#pkts encaps:")? >= 8, "encaps after 8 pings:\n{t}");
        ensure!(count("#pkts decaps:")? >= 8, "decaps after 8 pings:\n{t}");
        all_text.push_str(&t);
        // Filters: the peer's, another peer's (nothing), an interface that does not exist.
        ensure!(show(v, &["ipsec", "sa", "peer", B])?.contains("interface: tun1"));
        ensure!(
            show(v, &["ipsec", "sa", "peer", "192.0.2.77"])?
                .trim()
                .is_empty()
        );
        ensure!(show(v, &["ipsec", "sa", "interface", "tun1"])?.contains("current_peer"));
        let e = show(v, &["ipsec", "sa", "interface", "nope0"]).unwrap_err();
        ensure!(
            format!("{e:#}").contains("no interface named nope0"),
            "{e:#}"
        );
        ensure!(
            show(v, &["ipsec", "sa", "peer", "192.0.2"]).is_err(),
            "a malformed address is refused"
        );

        // show crypto ikev2 sa, against strongSwan's SPIs.
        let t = show(v, &["ikev2", "sa"])?;
        ensure!(t.contains(" IPv4 Crypto IKEv2  SA \n"), "{t}");
        ensure!(
            t.lines().any(|l| l.contains(&format!(" 192.0.2.1/{port} "))
                && l.contains(&format!(" 192.0.2.2/{port} "))
                && l.ends_with("READY")),
            "{t}"
        );
        ensure!(
            t.contains("Encr: AES-GCM, keysize: 256, PRF: SHA256"),
            "{t}"
        );
        ensure!(t.contains("Life/Active Time: "), "{t}");
        let swan = swan_ike_spis(sc)?;
        for (ours, theirs) in vtid_ike_spis(v)? {
            ensure!(
                swan.contains(&trim(&ours)) && swan.contains(&trim(&theirs)),
                "vtid's IKE SPIs {ours}/{theirs}, strongSwan's {swan:?}"
            );
        }
        all_text.push_str(&t);

        // IKEv1: none configured here (no `version = 1` profile), and said so.
        let t = show(v, &["isakmp", "sa"])?;
        ensure!(t.starts_with("IPv4 Crypto ISAKMP SA\n"), "{t}");
        ensure!(t.contains("no IKE profile says version = 1"), "{t}");

        // The configuration, the IOS way (nstest's renderer names them T0 and P0).
        let t = show(v, &["ipsec", "transform-set"])?;
        ensure!(
            t.contains("Transform set T0: { esp-gcm 256  }\n   will negotiate = { Tunnel,  },"),
            "{t}"
        );
        all_text.push_str(&t);
        let t = show(v, &["ipsec", "profile"])?;
        ensure!(
            t.contains("IPSEC profile P0\n") && t.contains("T0:  { esp-gcm 256  } ,"),
            "{t}"
        );
        all_text.push_str(&t);
        let t = show(v, &["map"])?;
        ensure!(t.contains("No crypto maps are configured"), "{t}");
        ensure!(
            t.contains("Crypto Map \"tun1-head-0\" 65537 IPsec-isakmp"),
            "{t}"
        );
        ensure!(t.contains("        Current peer: 192.0.2.2\n"), "{t}");
        all_text.push_str(&t);
        let t = show(v, &["ikev2", "proposal"])?;
        ensure!(t.contains("No IKEv2 proposals are configured"), "{t}");

        // Conditional debug, as `vtid debug` set it.
        ensure!(show(v, &["debug-condition"])?.contains("turned OFF"));
        v.cli(&["debug", "peer", B])?;
        let t = show(v, &["debug-condition"])?;
        ensure!(
            t == "Crypto conditional debug currently is turned ON\nIKE peer IP address filters:\n192.0.2.2\n",
            "{t}"
        );
        v.cli(&["debug", "peer", B, "--off"])?;

        // --json for each view parses, and no view, text or JSON, carries the PSK.
        for args in [
            &["isakmp", "sa"][..],
            &["ikev2", "sa"],
            &["ikev2", "proposal"],
            &["ipsec", "sa"],
            &["ipsec", "transform-set"],
            &["ipsec", "profile"],
            &["session"],
            &["session", "detail"],
            &["map"],
            &["debug-condition"],
        ] {
            let j = show_json(v, args)?;
            all_text.push_str(&j.to_string());
        }
        ensure!(
            !all_text.contains(PSK) && !all_text.contains("NEVER-PRINTED"),
            "the PSK was shown"
        );
        let j = show_json(v, &["session", "detail"])?;
        let s = nstest::assert::rows(&j).next().context("a session")?;
        ensure!(s["ike_sas"][0]["suite"]["dh_group"] == 31, "{s}");
        ensure!(s["flows"][0]["out"]["packets"].as_u64() >= Some(8), "{s}");

        // The older views are unchanged, and the CLI's `--json` prints what the control
        // socket answers (the scenarios read it over the socket, `Vtid::show`).
        ensure!(!v.show("sessions")?.as_array().context("array")?.is_empty());
        ensure!(v.cli(&["show", "sa"])?.contains("inbound spi 0x"));
        for what in ["tunnels", "sessions"] {
            let (cli, socket) = (v.show_cli(what)?, v.show(what)?);
            let shape = |j: &serde_json::Value| nstest::assert::numbers_aside(&j.to_string());
            ensure!(
                nstest::assert::rows(&socket).next().is_some() && shape(&cli) == shape(&socket),
                "show {what} --json: the CLI printed {cli}, the socket answered {socket}"
            );
        }
        Ok(())
    });
}

#[test]
#[ignore = "vm"]
fn vm_clear_crypto_session() {
    with_tunnel("clear-session", |sc, v| {
        let ike_before = vtid_ike_spis(v)?;
        let child_before = kernel_spis(sc, "a")?;
        ensure!(
            ike_before.len() == 1 && child_before.len() == 2,
            "{ike_before:?} {child_before:?}"
        );

        // An unknown peer is an error and changes nothing.
        let e = v
            .cli(&["clear", "crypto", "session", "remote", "192.0.2.77"])
            .unwrap_err();
        ensure!(
            format!("{e:#}").contains("no crypto session with peer 192.0.2.77"),
            "{e:#}"
        );
        ensure!(vtid_ike_spis(v)? == ike_before && kernel_spis(sc, "a")? == child_before);

        let r = v.cli(&["clear", "crypto", "session", "remote", B])?;
        ensure!(r.contains("\"renegotiating\":[\"tun1\"]"), "{r}");
        let (ours, theirs) = ike_before.iter().next().cloned().context("an IKE SA")?;
        // Gone on both ends: strongSwan's IKE SAs and both kernels' ESP SAs.
        wait_until(
            "the old IKE SA gone from strongSwan",
            Duration::from_secs(30),
            || {
                let swan = swan_ike_spis(sc)?;
                Ok(!swan.contains(&trim(&ours)) && !swan.contains(&trim(&theirs)))
            },
        )?;
        wait_until(
            "the old Child SA gone from both kernels",
            Duration::from_secs(30),
            || {
                Ok(kernel_spis(sc, "a")?.is_disjoint(&child_before)
                    && kernel_spis(sc, "b")?.is_disjoint(&child_before))
            },
        )?;
        // Renegotiated at once, as IOS does for tunnel protection: new IKE and ESP SPIs.
        wait_until("a new session", Duration::from_secs(60), || {
            let ike = vtid_ike_spis(v)?;
            Ok(ike.len() == 1 && ike.is_disjoint(&ike_before) && kernel_spis(sc, "a")?.len() == 2)
        })?;
        let (new_ours, _) = vtid_ike_spis(v)?.into_iter().next().context("IKE SA")?;
        ensure!(
            swan_ike_spis(sc)?.contains(&trim(&new_ours)),
            "strongSwan has the new IKE SA"
        );
        up(sc, v)?;
        // `clear crypto ikev2 sa` is the same for IKEv2.
        let before = vtid_ike_spis(v)?;
        v.cli(&["clear", "crypto", "ikev2", "sa"])?;
        wait_until(
            "renegotiated after clear crypto ikev2 sa",
            Duration::from_secs(60),
            || {
                let ike = vtid_ike_spis(v)?;
                Ok(ike.len() == 1 && ike.is_disjoint(&before))
            },
        )?;
        up(sc, v)
    });
}

#[test]
#[ignore = "vm"]
fn vm_clear_crypto_sa_spi() {
    with_tunnel("clear-sa", |sc, v| {
        let ike_before = vtid_ike_spis(v)?;
        let swan_ike_before = swan_ike_spis(sc)?;
        let (spi_in, spi_out) = child_spis(v)?;
        let old: BTreeSet<String> = [spi_in.clone(), spi_out].into();

        // A malformed SPI and one no SA has are refused; nothing changes.
        ensure!(v.cli(&["clear", "crypto", "sa", "spi", "0xZZ"]).is_err());
        let e = v
            .cli(&["clear", "crypto", "sa", "spi", "0x00000101"])
            .unwrap_err();
        ensure!(
            format!("{e:#}").contains("no Child SA has SPI 0x00000101"),
            "{e:#}"
        );
        ensure!(kernel_spis(sc, "a")? == old);

        v.cli(&["clear", "crypto", "sa", "spi", &format!("0x{spi_in}")])?;
        wait_until(
            "the Child SA replaced on both ends",
            Duration::from_secs(60),
            || {
                let (a, b) = (kernel_spis(sc, "a")?, kernel_spis(sc, "b")?);
                Ok(a.len() == 2 && a.is_disjoint(&old) && b.is_disjoint(&old) && b == a)
            },
        )?;
        ensure!(
            swan_child_spis(sc)?.is_disjoint(&old),
            "strongSwan dropped the old Child SA"
        );
        // The IKE SA stayed, on both ends.
        ensure!(vtid_ike_spis(v)? == ike_before, "vtid's IKE SA changed");
        ensure!(
            swan_ike_spis(sc)? == swan_ike_before,
            "strongSwan's IKE SA changed"
        );
        up(sc, v)
    });
}

#[test]
#[ignore = "vm"]
fn vm_rekey_child_sa() {
    with_tunnel("rekey-child", |sc, v| {
        let ike_before = vtid_ike_spis(v)?;
        let (spi_in, spi_out) = child_spis(v)?;
        let old: BTreeSet<String> = [spi_in, spi_out.clone()].into();
        let e = v.cli(&["rekey", "child", "tunnel", "nope0"]).unwrap_err();
        ensure!(
            format!("{e:#}").contains("no installed Child SA for tunnel nope0"),
            "{e:#}"
        );

        let r = v.cli(&["rekey", "child", "spi", &spi_out])?;
        ensure!(r.contains("\"rekeying\":\"child\""), "{r}");
        wait_until(
            "the Child SA rekeyed on both ends",
            Duration::from_secs(60),
            || {
                let (a, b) = (kernel_spis(sc, "a")?, kernel_spis(sc, "b")?);
                Ok(a.len() == 2 && a.is_disjoint(&old) && b == a)
            },
        )?;
        ensure!(vtid_ike_spis(v)? == ike_before, "the IKE SA changed");
        up(sc, v)
    });
}

#[test]
#[ignore = "vm"]
fn vm_rekey_ike_sa() {
    with_tunnel("rekey-ike", |sc, v| {
        let ike_before = vtid_ike_spis(v)?;
        let child_before = kernel_spis(sc, "a")?;
        let e = v.cli(&["rekey", "ike", "peer", "192.0.2.77"]).unwrap_err();
        ensure!(
            format!("{e:#}").contains("no established IKE SA for peer 192.0.2.77"),
            "{e:#}"
        );

        v.cli(&["rekey", "ike", "tunnel", "tun1"])?;
        wait_until("the IKE SA rekeyed", Duration::from_secs(60), || {
            let ike = vtid_ike_spis(v)?;
            Ok(ike.len() == 1 && ike.is_disjoint(&ike_before))
        })?;
        let (ours, theirs) = vtid_ike_spis(v)?.into_iter().next().context("IKE SA")?;
        wait_until(
            "strongSwan on the new IKE SA alone",
            Duration::from_secs(30),
            || {
                let swan = swan_ike_spis(sc)?;
                let (o, t) = ike_before.iter().next().cloned().unwrap_or_default();
                Ok(swan.contains(&trim(&ours))
                    && swan.contains(&trim(&theirs))
                    && !swan.contains(&trim(&o))
                    && !swan.contains(&trim(&t)))
            },
        )?;
        // The Child SA moved over unchanged (RFC 7296 §2.18), on both ends.
        ensure!(
            kernel_spis(sc, "a")? == child_before,
            "the Child SA changed"
        );
        ensure!(
            kernel_spis(sc, "b")? == child_before,
            "strongSwan's Child SA changed"
        );
        let s = show(v, &["session"])?;
        ensure!(s.contains("Session status: UP-ACTIVE"), "{s}");
        up(sc, v)
    });
}
