//! IKEv1 on the agent's other tunnel kinds (VM): a dynamic VTI hub whose IKE profile says
//! `version = 1` (the seeds' `crypto isakmp profile` with `virtual-template` and the
//! wildcard key `pre-shared-key address 0.0.0.0 0.0.0.0`), and a crypto map entry naming
//! such a profile. The peers are strongSwan's charon with `version = 1`.

use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::assert::{links_of_kind, pings_pass, rows, sa_count, spis_with, wait_until};
use nstest::hub::{swan_spoke_conn, topology};
use nstest::kernel;
use nstest::strongswan::{Strongswan, SwanConn};
use nstest::vtid::{Vtid, write_secret};
use nstest::{Netns, TopoSpec, scenario};

const PSK: &str = "ikev1-hub-and-spokes-key";
const POLICY: &str = "[isakmp_policy.10]\nencryption = \"aes 256\"\nhash = \"sha256\"\n\
                      authentication = \"pre-share\"\ngroup = 14\n";
const SWAN_IKE: &str = "aes256-sha256-modp2048";
const SWAN_ESP: &str = "aes256-sha256";

/// charon with IKEv1 `conn` (plus `extra_children`, swanctl.conf child sections), kept by
/// the caller. The harness's retransmissions are stretched as in ikev1.rs: under TCG the
/// first cbc(aes) install loads kernel modules and QM3 can come late.
fn start_swan(
    ns: &Netns,
    dir: &std::path::Path,
    conn: &SwanConn,
    extra_children: &str,
) -> Result<Rc<Strongswan>> {
    let conf = conn.render().replacen(
        "    children {\n",
        &format!("    children {{\n{extra_children}"),
        1,
    );
    Ok(Rc::new(Strongswan::start_conf_tuned(
        ns,
        dir,
        &conf,
        "  retransmit_tries = 6\n",
    )?))
}

/// The hub: one `version = 1` profile answering any address with one key (the seeds'
/// `0.0.0.0 0.0.0.0`), cloning `VT1` per spoke and routing each spoke's selectors to it.
fn hub_config(key: &std::path::Path) -> String {
    format!(
        r#"{POLICY}[keyring.ANY]
[[keyring.ANY.peer]]
address = "0.0.0.0/0"
psk_file = "{key}"
[transform_set.T]
esp = "aes-cbc-256"
integrity = "sha256"
[ipsec_profile.P]
transform_sets = ["T"]
[ike_profile.spokes]
version = 1
keyring = "ANY"
match_identity = ["172.16.0.0/16"]
virtual_template = "VT1"
[virtual_template.VT1]
unnumbered = "lan0"
protection = "P"
group = 10
routes = "traffic-selectors"
"#,
        key = key.display()
    )
}

/// The hub's clone of `peer` from `show tunnels`, by name.
fn clone_of(hub: &Vtid, peer: &str) -> Result<Option<String>> {
    let v = hub.show("tunnels")?;
    Ok(rows(&v).find_map(|t| {
        (t["dynamic"] == true && t["remote"] == peer)
            .then(|| t["name"].as_str().unwrap_or_default().to_string())
    }))
}

/// `show sa` rows of `tunnel` (IKEv1 Child SAs are listed as IKEv2 ones are).
fn shown_sas(hub: &Vtid, tunnel: &str) -> Result<usize> {
    let v = hub.show("sa")?;
    Ok(rows(&v).filter(|r| r["tunnel"] == tunnel).count())
}

/// Issue 15: a vtid hub with a virtual template over IKEv1 and two strongSwan IKEv1 spokes.
/// Each spoke gets its own clone carrying its quick mode SAs and a route to its LAN; a
/// spoke's disconnect removes exactly its clone and SAs; `clear crypto session` on the hub
/// removes the other.
#[test]
#[ignore = "vm"]
fn vm_ikev1_dvti_hub_with_two_strongswan_spokes() {
    scenario("ikev1-dvti-hub", topology(2), |sc| {
        let dir = sc.dir().join("hub");
        let key = write_secret(&dir, "spokes.key", PSK)?;
        let hub = Vtid::start_config(sc.topo.host("hub"), &dir, &hub_config(&key), "-")?;
        let mut swans = Vec::new();
        for n in 1..=2u8 {
            let host = format!("s{n}");
            let mut conn = swan_spoke_conn(sc, &host, n)?;
            conn.auth = nstest::strongswan::SwanAuth::Psk(PSK.into());
            conn.version = 1;
            conn.ike_proposals = SWAN_IKE.into();
            conn.esp_proposals = SWAN_ESP.into();
            let s = start_swan(sc.topo.host(&host), &sc.dir().join(&host), &conn, "")?;
            swans.push(s);
        }
        let diag = |what: &str, hub: &Vtid, swans: &[Rc<Strongswan>]| {
            format!(
                "{what}\n--- hub ---\n{}\n--- s1 ---\n{}\n--- s2 ---\n{}",
                hub.log(),
                swans[0].log(),
                swans[1].log()
            )
        };
        for (n, s) in swans.iter().enumerate() {
            s.initiate()
                .with_context(|| diag(&format!("s{} initiate", n + 1), &hub, &swans))?;
        }
        let hub_ns = sc.topo.host("hub");
        wait_until("two clones", Duration::from_secs(30), || {
            Ok(links_of_kind(hub_ns, "xfrm")?.len() == 2)
        })
        .with_context(|| diag("clones", &hub, &swans))?;
        // One clone per spoke, each with the spoke's LAN routed into it and one SA pair.
        let mut clones = Vec::new();
        for n in 1..=2u8 {
            let peer = format!("172.16.{n}.2");
            let name = clone_of(&hub, &peer)?.with_context(|| {
                format!(
                    "no clone for {peer}: {}",
                    hub.show("tunnels").unwrap_or_default()
                )
            })?;
            let r = hub_ns.ip(&["route", "show", &format!("10.{n}.0.0/24")])?;
            ensure!(
                r.contains(&format!("dev {name}")),
                "route to spoke {n}: {r}"
            );
            ensure!(
                spis_with(hub_ns, &peer)?.len() == 2,
                "hub SAs with {peer}: {:?}",
                spis_with(hub_ns, &peer)?
            );
            ensure!(
                shown_sas(&hub, &name)? == 1,
                "show sa for {name}: {}",
                hub.show("sa")?
            );
            clones.push(name);
        }
        ensure!(clones[0] != clones[1], "one clone each: {clones:?}");
        // The sessions are IKEv1 ones in QM_IDLE, on their clones.
        let sessions = hub.show("sessions")?;
        for name in &clones {
            ensure!(
                rows(&sessions).any(|s| s["interface"] == name.as_str()
                    && s["version"] == 1
                    && s["state"] == "QM_IDLE"),
                "no IKEv1 session on {name}: {sessions}"
            );
        }
        // Spoke LAN to the hub's LAN over each clone, encrypted.
        for n in 1..=2u8 {
            let ns = sc.topo.host(&format!("s{n}"));
            pings_pass(
                ns,
                &format!("10.{n}.0.1"),
                "10.0.0.1",
                3,
                &format!("spoke {n} to hub"),
            )?;
        }
        // Spoke 2 leaves (ISAKMP Delete): exactly its clone and SAs go.
        swans[1].terminate().context("s2 terminate")?;
        wait_until("spoke 2's clone removed", Duration::from_secs(20), || {
            Ok(!links_of_kind(hub_ns, "xfrm")?.contains(&clones[1]))
        })
        .with_context(|| diag("s2 disconnect", &hub, &swans))?;
        ensure!(
            links_of_kind(hub_ns, "xfrm")? == [clones[0].clone()],
            "left: {:?}",
            links_of_kind(hub_ns, "xfrm")?
        );
        ensure!(
            spis_with(hub_ns, "172.16.2.2")?.is_empty(),
            "spoke 2's SAs stay"
        );
        ensure!(
            spis_with(hub_ns, "172.16.1.2")?.len() == 2,
            "spoke 1's SAs went"
        );
        pings_pass(
            sc.topo.host("s1"),
            "10.1.0.1",
            "10.0.0.1",
            2,
            "spoke 1 after spoke 2 left",
        )?;
        // The hub's operator clears the other: its ISAKMP SA, Child SAs and clone go.
        let out = hub.cli(&["clear", "crypto", "session"])?;
        wait_until("spoke 1's clone removed", Duration::from_secs(20), || {
            Ok(links_of_kind(hub_ns, "xfrm")?.is_empty() && sa_count(hub_ns)? == 0)
        })
        .with_context(|| diag(&format!("clear crypto session: {out}"), &hub, &swans))?;
        ensure!(
            rows(&hub.show("sessions")?).next().is_none(),
            "sessions left after clear"
        );
        sc.add_peer("hub", nstest::peer::vtid_peer(hub));
        Ok(())
    });
}

/// Two sites: a (192.0.2.1, 10.1.0.1) and b (192.0.2.2, 10.2.0.1), each routing the other's 10.x/16 to it.
fn two_sites() -> TopoSpec {
    TopoSpec::new()
        .link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
        .lan("a", "10.1.0.1/24")
        .lan("b", "10.2.0.1/24")
        .route("a", "10.2.0.0/16", "via 192.0.2.2")
        .route("b", "10.1.0.0/16", "via 192.0.2.1")
        .forward("a")
        .forward("b")
}

/// Issue 15: a crypto map entry with an IKEv1 profile and two ACL lines against a
/// policy-based strongSwan IKEv1 peer. Quick mode carries one selector pair (RFC 2409 §5.5),
/// so each line gets its own quick mode and its own SA pair on the one ISAKMP SA: started by
/// the line's first packet (the kernel's ACQUIRE) when vtid initiates, filed under the line
/// the IDs fall in when strongSwan does.
fn crypto_map_case(name: &str, vtid_initiates: bool) {
    scenario(name, two_sites(), |sc| {
        let (ha, hb) = (sc.topo.host("a"), sc.topo.host("b"));
        ha.ip(&["addr", "add", "10.1.1.1/24", "dev", "lo"])?;
        hb.ip(&["addr", "add", "10.2.1.1/24", "dev", "lo"])?;
        let dir = sc.dir().join("a");
        let key = write_secret(&dir, "psk.key", PSK)?;
        let cfg = format!(
            r#"{POLICY}[keyring.K]
[[keyring.K.peer]]
address = "192.0.2.2"
psk_file = "{key}"
[ike_profile.V1]
version = 1
keyring = "K"
match_identity = ["192.0.2.2"]
[transform_set.T1]
esp = "aes-cbc-256"
integrity = "sha256"
[access_list.120]
entries = ["permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255",
           "permit ip 10.1.1.0 0.0.0.255 10.2.1.0 0.0.0.255"]
[crypto_map.M]
local_address = "192.0.2.1"
[[crypto_map.M.entry]]
seq = 10
match_address = "120"
peers = ["192.0.2.2"]
transform_sets = ["T1"]
ike_profile = "V1"
"#,
            key = key.display()
        );
        let vtid = Vtid::start_config(ha, &dir, &cfg, "-")?;
        let mut conn = SwanConn::psk("192.0.2.2", "192.0.2.1", PSK);
        conn.version = 1;
        conn.ike_proposals = SWAN_IKE.into();
        conn.esp_proposals = SWAN_ESP.into();
        conn.local_ts = "10.2.0.0/24".into();
        conn.remote_ts = "10.1.0.0/24".into();
        let second = format!(
            "      c2 {{\n        local_ts = 10.2.1.0/24\n        remote_ts = 10.1.1.0/24\n        \
             esp_proposals = {SWAN_ESP}\n        mode = tunnel\n      }}\n"
        );
        let swan = start_swan(hb, &sc.dir().join("b"), &conn, &second)?;
        let diag = |what: &str| {
            format!(
                "{what}\n--- vtid ---\n{}\n--- charon ---\n{}",
                vtid.log(),
                swan.log()
            )
        };
        if !vtid_initiates {
            swan.initiate()
                .with_context(|| diag("strongSwan's first line"))?;
            swan.vici()?
                .command("initiate", &[("child", "c2"), ("timeout", "30000")])
                .with_context(|| diag("strongSwan's second line"))?;
        }
        // Each line's first packet starts its quick mode (ACQUIRE) if none is up; then all
        // pass.
        for (src, dst) in [("10.1.0.1", "10.2.0.1"), ("10.1.1.1", "10.2.1.1")] {
            wait_until(
                &format!("first answer {src} -> {dst}"),
                Duration::from_secs(60),
                || Ok(kernel::ping(ha, src, dst, 1)? == 1),
            )
            .with_context(|| diag("negotiation"))?;
        }
        let cap = kernel::Capture::start(hb, "e-a", sc.dir().join("underlay.pcap"))?;
        let mut got = 0;
        for (src, dst) in [("10.1.0.1", "10.2.0.1"), ("10.1.1.1", "10.2.1.1")] {
            got += kernel::ping(ha, src, dst, 3)?;
        }
        // tcpdump also shows what the receiving interface decrypted (the kernel re-injects
        // the inner packet there), so "in clear on the wire" is counted on the side that
        // sends: b's replies to a's networks must leave as ESP only.
        let [esp_n, clear] = cap.stop_and_count(&[
            "esp",
            "icmp and src net 10.2.0.0/16 and dst net 10.1.0.0/16",
        ])?[..] else {
            unreachable!()
        };
        ensure!(got == 6, "{got}/6 pings over the two lines");
        ensure!(clear == 0, "{clear} plaintext packets on the underlay");
        ensure!(esp_n >= 12, "only {esp_n} ESP packets for 6 round trips");
        // Two SA pairs, the same in both kernels, and one ISAKMP SA.
        let (sa, sb) = (nstest::assert::spis(ha)?, nstest::assert::spis(hb)?);
        ensure!(sa.len() == 4 && sa == sb, "SAs: a {sa:?} b {sb:?}");
        // Each pair restricted to its own line's selectors.
        let states = ha.ip(&["xfrm", "state"])?;
        for sel in [
            "sel src 10.1.0.0/24 dst 10.2.0.0/24",
            "sel src 10.1.1.0/24 dst 10.2.1.0/24",
        ] {
            ensure!(states.contains(sel), "no SA with {sel}: {states}");
        }
        let listed = swan.list_sas()?;
        ensure!(
            listed.contains("version=1") && listed.matches("state=INSTALLED").count() == 2,
            "strongSwan: {listed}"
        );
        let isakmp = vtid.show("sessions")?;
        ensure!(
            rows(&isakmp).filter(|s| s["version"] == 1).count() == 1,
            "one ISAKMP SA: {isakmp}"
        );
        ensure!(
            rows(&vtid.show("sa")?).count() == 2,
            "show sa: {}",
            vtid.show("sa")?
        );
        // `clear crypto isakmp` takes the ISAKMP SA and both SA pairs.
        vtid.cli(&["clear", "crypto", "isakmp"])?;
        wait_until("SAs cleared", Duration::from_secs(20), || {
            Ok(sa_count(ha)? == 0)
        })
        .with_context(|| diag("clear crypto isakmp"))?;
        sc.add_peer("a", nstest::peer::vtid_peer(vtid));
        Ok(())
    });
}

#[test]
#[ignore = "vm"]
fn vm_ikev1_crypto_map_with_strongswan() {
    crypto_map_case("ikev1-crypto-map", true);
}

#[test]
#[ignore = "vm"]
fn vm_ikev1_crypto_map_with_strongswan_initiating() {
    crypto_map_case("ikev1-crypto-map-swan-init", false);
}

/// Issue 15: the classic IOS hub over IKEv1: `crypto dynamic-map` with the wildcard key
/// `crypto isakmp key ... address 0.0.0.0 0.0.0.0`, answering a strongSwan IKEv1 spoke it
/// has no address for. The spoke proposes its own LAN pair (10.2.0.0/24 to 10.1.0.0/24),
/// narrower than the entry's ACL line (10.1.0.0/16 to 10.2.0.0/16): the hub accepts it,
/// installs the SA pair with the spoke's selectors (as IOS does for a dynamic map) and the
/// entry's reverse route to the spoke's LAN.
#[test]
#[ignore = "vm"]
fn vm_ikev1_dynamic_crypto_map_hub_with_strongswan_spoke() {
    scenario("ikev1-dynamic-crypto-map", two_sites(), |sc| {
        let (ha, hb) = (sc.topo.host("a"), sc.topo.host("b"));
        let dir = sc.dir().join("a");
        let key = write_secret(&dir, "psk.key", PSK)?;
        let cfg = format!(
            r#"{POLICY}[keyring.ANY]
[[keyring.ANY.peer]]
address = "0.0.0.0/0"
psk_file = "{key}"
[ike_profile.SPOKES]
version = 1
keyring = "ANY"
match_identity = ["any"]
[transform_set.T1]
esp = "aes-cbc-256"
integrity = "sha256"
[access_list.130]
entries = ["permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"]
[dynamic_map.DYN]
[[dynamic_map.DYN.entry]]
seq = 10
match_address = "130"
transform_sets = ["T1"]
ike_profile = "SPOKES"
reverse_route = true
[crypto_map.M]
local_address = "192.0.2.1"
[[crypto_map.M.entry]]
seq = 100
dynamic_map = "DYN"
"#,
            key = key.display()
        );
        let vtid = Vtid::start_config(ha, &dir, &cfg, "-")?;
        let mut conn = SwanConn::psk("192.0.2.2", "192.0.2.1", PSK);
        conn.version = 1;
        conn.ike_proposals = SWAN_IKE.into();
        conn.esp_proposals = SWAN_ESP.into();
        conn.local_ts = "10.2.0.0/24".into();
        conn.remote_ts = "10.1.0.0/24".into();
        let swan = start_swan(hb, &sc.dir().join("b"), &conn, "")?;
        let diag = |what: &str| {
            format!(
                "{what}\n--- vtid ---\n{}\n--- charon ---\n{}",
                vtid.log(),
                swan.log()
            )
        };
        // Until a spoke connects, what the entry's ACL permits is blocked, not sent in clear.
        let pol = ha.ip(&["xfrm", "policy"])?;
        ensure!(pol.contains("action block"), "{pol}");
        swan.initiate()
            .with_context(|| diag("spoke's main mode + quick mode"))?;
        wait_until("first answer", Duration::from_secs(60), || {
            Ok(kernel::ping(hb, "10.2.0.1", "10.1.0.1", 1)? == 1)
        })
        .with_context(|| diag("LAN to LAN"))?;
        let cap = kernel::Capture::start(hb, "e-a", sc.dir().join("underlay.pcap"))?;
        let got = kernel::ping(hb, "10.2.0.1", "10.1.0.1", 3)?
            + kernel::ping(ha, "10.1.0.1", "10.2.0.1", 3)?;
        // Counted on the sending side (tcpdump on a receiving interface also shows what
        // the kernel decrypted): b's packets to a's LAN leave as ESP only.
        let [esp_n, clear] = cap.stop_and_count(&[
            "esp",
            "icmp and src net 10.2.0.0/16 and dst net 10.1.0.0/16",
        ])?[..] else {
            unreachable!()
        };
        ensure!(got == 6, "{got}/6 pings LAN to LAN");
        ensure!(clear == 0, "{clear} plaintext packets on the underlay");
        ensure!(esp_n >= 12, "only {esp_n} ESP packets for 6 round trips");
        // One SA pair, the same in both kernels, with the spoke's selectors (not the ACL's).
        let (sa, sb) = (nstest::assert::spis(ha)?, nstest::assert::spis(hb)?);
        ensure!(sa.len() == 2 && sa == sb, "SAs: a {sa:?} b {sb:?}");
        let states = ha.ip(&["xfrm", "state"])?;
        ensure!(
            states.contains("sel src 10.1.0.0/24 dst 10.2.0.0/24"),
            "SA selectors: {states}"
        );
        let listed = swan.list_sas()?;
        ensure!(
            listed.contains("version=1") && listed.matches("state=INSTALLED").count() == 1,
            "strongSwan: {listed}"
        );
        let sessions = vtid.show("sessions")?;
        ensure!(
            rows(&sessions).filter(|s| s["version"] == 1).count() == 1,
            "one ISAKMP SA: {sessions}"
        );
        // The temporary entry of the spoke's flow, and the entry's reverse route to its LAN.
        let body: serde_json::Value =
            serde_json::from_str(&vtid.cli(&["show", "crypto", "map", "--json"])?)?;
        let flows: Vec<(String, String)> = rows(&body["crypto_maps"])
            .flat_map(|m| rows(&m["entries"]))
            .flat_map(|e| rows(&e["kind"]["flows"]))
            .map(|f| {
                (
                    f["peer"].as_str().unwrap_or_default().to_owned(),
                    f["remote"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        ensure!(
            flows == [("192.0.2.2".to_owned(), "10.2.0.0/24".to_owned())],
            "{flows:?}"
        );
        let r = ha.ip(&["route", "show", "10.2.0.0/24"])?;
        ensure!(r.contains("via 192.0.2.2"), "reverse route: {r}");
        // The spoke leaves (Deletes for its SA pair and its ISAKMP SA): its SAs, temporary
        // entry and reverse route go with it.
        swan.terminate()
            .with_context(|| diag("spoke's terminate"))?;
        wait_until("spoke's SAs removed", Duration::from_secs(20), || {
            Ok(sa_count(ha)? == 0)
        })
        .with_context(|| diag("spoke's Delete"))?;
        wait_until("reverse route removed", Duration::from_secs(10), || {
            Ok(ha.ip(&["route", "show", "10.2.0.0/24"])?.trim().is_empty())
        })
        .with_context(|| diag("reverse route"))?;
        let pol = ha.ip(&["xfrm", "policy"])?;
        ensure!(
            !pol.contains("tmpl") && pol.contains("action block"),
            "the temporary entry left, the entry's block back: {pol}"
        );
        sc.add_peer("a", nstest::peer::vtid_peer(vtid));
        Ok(())
    });
}
