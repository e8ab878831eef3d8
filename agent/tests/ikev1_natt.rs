//! IKEv1 NAT traversal, dead peer detection and IKE fragmentation (VM) against strongSwan's
//! charon with `version = 1`. Written once: parameters pick which side sits behind the NAT,
//! or how the peer dies. Kernel state is read from `ip -s xfrm state` (it has no JSON).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, XfrmState};
use nstest::strongswan::{Strongswan, SwanConn};
use nstest::vtid::{Vtid, write_secret};
use nstest::{Netns, TopoSpec, scenario};

const PSK: &str = "ikev1-natt-psk-0123456789abcdef";
const IF_ID: u32 = 42;
const POLICY: &str =
    "encryption = \"aes 256\"\nhash = \"sha256\"\nauthentication = \"pre-share\"\ngroup = 14\n";

/// vtid's side of one case.
struct VtidSide<'a> {
    me: &'a str,
    peer: &'a str,
    /// The identity the peer authenticates with (its own address, NAT or not).
    peer_id: &'a str,
    inner: &'a str,
    initiate: bool,
    /// `dpd = { ... }` of the IKE profile.
    dpd: Option<&'a str>,
}

fn vtid_config(v: &VtidSide<'_>, psk: &std::path::Path) -> String {
    let dpd = v.dpd.map(|d| format!("dpd = {d}\n")).unwrap_or_default();
    format!(
        r#"[isakmp_policy.10]
{POLICY}[transform_set.T]
esp = "aes-cbc-256"
integrity = "sha256"
[ipsec_profile.P]
transform_sets = ["T"]
[keyring.K]
[[keyring.K.peer]]
address = "{peer}"
psk_file = "{psk}"
[ike_profile.V1]
version = 1
keyring = "K"
match_identity = ["{peer_id}"]
{dpd}[tunnel.tun0]
mode = "xfrmi"
if_id = {IF_ID}
source = "{me}"
destination = "{peer}"
address = "{inner}"
protection = "P"
ike_profile = "V1"
routes = []
initiate = {initiate}
"#,
        me = v.me,
        peer = v.peer,
        peer_id = v.peer_id,
        inner = v.inner,
        psk = psk.display(),
        initiate = v.initiate,
    )
}

/// strongSwan's route-based device on `ns`, over `under`.
fn swan_xfrmi(ns: &Netns, under: &str, inner: &str) -> Result<()> {
    ns.ip(&[
        "link",
        "add",
        "xs0",
        "type",
        "xfrm",
        "dev",
        under,
        "if_id",
        &IF_ID.to_string(),
    ])?;
    ns.ip(&["addr", "add", inner, "dev", "xs0"])?;
    ns.ip(&["link", "set", "xs0", "up"])?;
    Ok(())
}

fn swan_conn(me: &str, peer: &str, peer_id: &str) -> SwanConn {
    let mut conn = SwanConn::psk(me, peer, PSK);
    conn.version = 1;
    conn.remote_id = peer_id.into();
    conn.ike_proposals = "aes256-sha256-modp2048".into();
    conn.esp_proposals = "aes256-sha256".into();
    conn.local_ts = "0.0.0.0/0".into();
    conn.remote_ts = "0.0.0.0/0".into();
    conn.if_id = Some(IF_ID);
    conn
}

/// Both kernels' SAs once each holds two (SPI != 0).
fn both_sas(a: &Netns, b: &Netns) -> Result<(Vec<XfrmState>, Vec<XfrmState>)> {
    let get = |ns: &Netns| -> Result<Vec<XfrmState>> {
        Ok(kernel::xfrm_states(ns)?
            .into_iter()
            .filter(|x| x.spi != 0)
            .collect())
    };
    let mut last = (Vec::new(), Vec::new());
    kernel::wait_until("Child SAs on both sides", Duration::from_secs(60), || {
        last = (get(a)?, get(b)?);
        Ok(last.0.len() == 2 && last.1.len() == 2)
    })?;
    let spis = |l: &[XfrmState]| l.iter().map(|x| x.spi).collect::<BTreeSet<_>>();
    ensure!(
        spis(&last.0) == spis(&last.1),
        "SPIs differ: {:?} vs {:?}",
        last.0,
        last.1
    );
    Ok(last)
}

fn diag(what: &str, vtid: &Vtid, swan: &Strongswan) -> String {
    format!(
        "{what}\n--- vtid ---\n{}\n--- charon ---\n{}",
        vtid.log(),
        swan.log()
    )
}

/// `behind` (vtid or strongSwan) at 10.0.0.2 behind the masquerading `n`, the other public
/// at 198.51.100.2; the side behind the NAT initiates (nothing reaches it from outside).
fn nat_traversal(vtid_behind: bool) {
    // private (10.0.0.2) -- n (masquerade) -- public (198.51.100.2).
    let spec = TopoSpec::new()
        .link("private", "10.0.0.2/24", "n", "10.0.0.1/24")
        .link("n", "198.51.100.1/24", "public", "198.51.100.2/24")
        .route("private", "default", "via 10.0.0.1")
        .nat("n", "e-public");
    scenario("ikev1-nat", spec, |sc| {
        let (vh, sh) = if vtid_behind {
            ("private", "public")
        } else {
            ("public", "private")
        };
        let dir = sc.dir().to_path_buf();
        let psk = write_secret(&dir.join("vtid"), "psk.key", PSK)?;
        // Each side names the other by the address it sees: the NAT's for the one behind it.
        let (v_me, v_peer, s_me, s_peer) = if vtid_behind {
            ("10.0.0.2", "198.51.100.2", "198.51.100.2", "198.51.100.1")
        } else {
            ("198.51.100.2", "198.51.100.1", "10.0.0.2", "198.51.100.2")
        };
        let (v_inner, s_inner) = ("10.200.0.1/30", "10.200.0.2/30");
        let s = sc.topo.host(sh);
        swan_xfrmi(s, &nstest::topo::iface_to("n"), s_inner)?;
        // Identities are the own (private) addresses, not what the NAT makes of them.
        let conn = swan_conn(s_me, s_peer, v_me);
        let swan = Strongswan::start_conf_tuned(s, &dir.join("swan"), &conn.render(), "")?;
        let cfg = vtid_config(
            &VtidSide {
                me: v_me,
                peer: v_peer,
                peer_id: s_me,
                inner: v_inner,
                initiate: vtid_behind,
                dpd: None,
            },
            &psk,
        );
        let vtid = Vtid::start_config(sc.topo.host(vh), &dir.join("vtid"), &cfg, "tun0")?;
        if !vtid_behind {
            swan.initiate()
                .with_context(|| diag("strongSwan's initiate", &vtid, &swan))?;
        }
        let (v, s) = (sc.topo.host(vh), sc.topo.host(sh));
        let (vs, ss) = both_sas(v, s).with_context(|| diag("negotiation", &vtid, &swan))?;
        for x in vs.iter().chain(&ss) {
            // RFC 3948: ESP in UDP on 4500 at both ends (the NAT rewrites the private side's
            // source port, so the public side may show another one for it).
            let encap = x.encap.as_deref().unwrap_or("");
            ensure!(
                encap.contains("espinudp") && encap.contains("4500"),
                "SA {:08x} {}->{} is not UDP-encapsulated: {encap:?}\n{}",
                x.spi,
                x.src,
                x.dst,
                diag("", &vtid, &swan)
            );
        }
        let listed = swan.list_sas()?;
        ensure!(
            listed.contains("version=1") && listed.contains("nat-"),
            "strongSwan's IKEv1 SA saw no NAT: {listed}"
        );
        ensure!(
            vtid.log().contains("v1: NAT detected"),
            "vtid did not log its NAT detection"
        );
        let got = kernel::ping(v, "10.200.0.1", "10.200.0.2", 3)?;
        ensure!(got == 3, "{got}/3 pings through the IKEv1 NAT-T tunnel");
        let counted: u64 = kernel::xfrm_states(s)?.iter().map(|x| x.packets).sum();
        ensure!(
            counted >= 6,
            "strongSwan's SAs counted {counted} packets for 3 round trips"
        );
        sc.add_peer(vh, nstest::peer::vtid_peer(vtid));
        drop(swan);
        Ok(())
    });
}

#[test]
#[ignore = "vm"]
fn vm_ikev1_nat_t_through_the_nat_box() {
    nat_traversal(true);
}

#[test]
#[ignore = "vm"]
fn vm_ikev1_nat_t_strongswan_behind_the_nat_box() {
    nat_traversal(false);
}

fn link_spec() -> TopoSpec {
    TopoSpec::new().link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
}

/// vtid (DPD every 2 s, 3 tries) initiates to strongSwan; strongSwan's host then drops
/// everything from vtid (nft) and vtid must remove its SAs within the DPD timeout and log
/// why.
fn dpd() {
    scenario("ikev1-dpd", link_spec(), |sc| {
        let dir = sc.dir().to_path_buf();
        let psk = write_secret(&dir.join("vtid"), "psk.key", PSK)?;
        let b = sc.topo.host("b");
        swan_xfrmi(b, &nstest::topo::iface_to("a"), "10.200.0.2/30")?;
        let conn = swan_conn("192.0.2.2", "192.0.2.1", "192.0.2.1");
        let swan = Strongswan::start_conf_tuned(b, &dir.join("swan"), &conn.render(), "")?;
        let cfg = vtid_config(
            &VtidSide {
                me: "192.0.2.1",
                peer: "192.0.2.2",
                peer_id: "192.0.2.2",
                inner: "10.200.0.1/30",
                initiate: true,
                // `clear`: a restart would negotiate again and hide the deletion.
                dpd: Some("{ interval = 2, retries = 3, action = \"clear\" }"),
            },
            &psk,
        );
        let vtid = Vtid::start_config(sc.topo.host("a"), &dir.join("vtid"), &cfg, "tun0")?;
        let (a, b) = (sc.topo.host("a"), sc.topo.host("b"));
        both_sas(a, b).with_context(|| diag("negotiation", &vtid, &swan))?;
        let got = kernel::ping(a, "10.200.0.1", "10.200.0.2", 2)?;
        ensure!(got == 2, "{got}/2 pings before the peer dies");
        b.exec(&["nft", "add", "table", "inet", "dpd"])?;
        b.exec(&[
            "nft",
            "add chain inet dpd in { type filter hook input priority 0 ; }",
        ])?;
        b.exec(&["nft", "add rule inet dpd in ip saddr 192.0.2.1 drop"])?;
        let dead_at = std::time::Instant::now();
        // Silence is noticed after 2 s, then 3 probes 2 s apart: about 8 s; the poll's
        // allowance covers TCG's slowness, not a longer schedule.
        kernel::wait_until(
            "vtid removes its SAs after DPD",
            Duration::from_secs(30),
            || Ok(kernel::xfrm_states(a)?.iter().all(|x| x.spi == 0)),
        )
        .with_context(|| diag("DPD", &vtid, &swan))?;
        let took = dead_at.elapsed();
        let log = vtid.log();
        ensure!(
            log.lines()
                .any(|l| l.contains("peer dead") && l.contains("192.0.2.2")),
            "vtid did not log the dead peer:\n{log}"
        );
        // DPD's schedule is about 8 s; anything near the poll's limit is a schedule bug.
        ensure!(
            took < Duration::from_secs(20),
            "the SAs went {took:?} after the peer went silent"
        );
        eprintln!("DPD removed the SAs {took:?} after the peer went silent");
        sc.add_peer("a", nstest::peer::vtid_peer(vtid));
        Ok(())
    });
}

#[test]
#[ignore = "vm"]
fn vm_ikev1_dpd_detects_dead_peer() {
    dpd();
}

/// strongSwan with `fragmentation = force` and a 300-octet fragment size: its MM3/MM4 (a
/// 2048-bit KE, nonce, NAT-D) arrive at vtid in fragments, which vtid reassembles.
fn fragmentation(vtid_initiates: bool) {
    scenario("ikev1-frag", link_spec(), |sc| {
        let dir = sc.dir().to_path_buf();
        let psk = write_secret(&dir.join("vtid"), "psk.key", PSK)?;
        let b = sc.topo.host("b");
        swan_xfrmi(b, &nstest::topo::iface_to("a"), "10.200.0.2/30")?;
        let conn = swan_conn("192.0.2.2", "192.0.2.1", "192.0.2.1");
        let rendered = conn.render().replace(
            "    version = 1\n",
            "    version = 1\n    fragmentation = force\n",
        );
        ensure!(rendered.contains("fragmentation = force"), "{rendered}");
        let swan = Strongswan::start_conf_tuned(
            b,
            &dir.join("swan"),
            &rendered,
            "  fragment_size = 300\n",
        )?;
        let cfg = vtid_config(
            &VtidSide {
                me: "192.0.2.1",
                peer: "192.0.2.2",
                peer_id: "192.0.2.2",
                inner: "10.200.0.1/30",
                initiate: vtid_initiates,
                dpd: None,
            },
            &psk,
        );
        let vtid = Vtid::start_config(sc.topo.host("a"), &dir.join("vtid"), &cfg, "tun0")?;
        if !vtid_initiates {
            swan.initiate()
                .with_context(|| diag("strongSwan's initiate", &vtid, &swan))?;
        }
        let (a, b) = (sc.topo.host("a"), sc.topo.host("b"));
        both_sas(a, b).with_context(|| diag("negotiation", &vtid, &swan))?;
        let reassembled = vtid
            .log()
            .lines()
            .filter(|l| l.contains("message reassembled from fragments"))
            .count();
        ensure!(
            reassembled >= 1,
            "vtid reassembled no fragmented message:\n{}",
            diag("", &vtid, &swan)
        );
        ensure!(
            swan.log().contains("fragment"),
            "charon's log does not mention fragments:\n{}",
            swan.log()
        );
        let got = kernel::ping(a, "10.200.0.1", "10.200.0.2", 3)?;
        ensure!(got == 3, "{got}/3 pings after a fragmented main mode");
        eprintln!("vtid reassembled {reassembled} fragmented messages");
        sc.add_peer("a", nstest::peer::vtid_peer(vtid));
        drop(swan);
        Ok(())
    });
}

#[test]
#[ignore = "vm"]
fn vm_ikev1_fragmentation_with_strongswan() {
    fragmentation(false);
}
