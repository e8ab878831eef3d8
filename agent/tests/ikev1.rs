//! IKEv1 interop (VM): vtid's static VTI with an IKE profile of `version = 1` against
//! strongSwan's charon with `version = 1` (main mode, pre-shared keys, quick mode with or
//! without PFS). Written once: the parameters pick who initiates and the algorithms. Each
//! case proves traffic crosses the tunnel encrypted, that both kernels hold the same two
//! SAs and that strongSwan's own account names the same SPIs, and that vtid lists the ISAKMP
//! SA as IOS would (QM_IDLE).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, Capture};
use nstest::strongswan::{Strongswan, SwanConn};
use nstest::vtid::{Vtid, write_secret};
use nstest::{TopoSpec, scenario};

const PSK: &str = "ikev1-interop-psk-0123456789";
const IF_ID: u32 = 42;

/// One case: the phase 1 policy and transform set in both spellings.
struct Case {
    vtid_initiates: bool,
    /// `[isakmp_policy.10]` body.
    policy: &'static str,
    /// strongSwan's phase 1 proposal.
    swan_ike: &'static str,
    /// `[transform_set.T]` body.
    transform: &'static str,
    /// strongSwan's ESP proposal (with `-modpN`/`-ecpN` for PFS).
    swan_esp: &'static str,
    /// `pfs = N` in the IPsec profile.
    pfs: Option<u16>,
    /// 3DES, SHA-1 or group 2 somewhere.
    legacy: bool,
}

const AES256_SHA256: &str =
    "encryption = \"aes 256\"\nhash = \"sha256\"\nauthentication = \"pre-share\"\ngroup = 14\n";

fn spec() -> TopoSpec {
    TopoSpec::new()
        .link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
        .lan("a", "10.1.0.1/24")
        .lan("b", "10.2.0.1/24")
}

/// vtid on `a` (xfrm interface), strongSwan on `b` (xfrm interface).
fn vtid_config(c: &Case, psk_file: &std::path::Path) -> String {
    let pfs = c.pfs.map(|g| format!("pfs = {g}\n")).unwrap_or_default();
    format!(
        r#"[global]
allow_legacy = {legacy}
[isakmp_policy.10]
{policy}[transform_set.T]
{transform}[ipsec_profile.P]
transform_sets = ["T"]
{pfs}[keyring.K]
[[keyring.K.peer]]
address = "192.0.2.2"
psk_file = "{psk}"
[ike_profile.V1]
version = 1
keyring = "K"
match_identity = ["192.0.2.2"]
[tunnel.tun1]
mode = "xfrmi"
if_id = {IF_ID}
source = "192.0.2.1"
destination = "192.0.2.2"
address = "10.255.0.1/30"
protection = "P"
ike_profile = "V1"
routes = ["10.2.0.0/24"]
initiate = {init}
"#,
        legacy = c.legacy,
        policy = c.policy,
        transform = c.transform,
        psk = psk_file.display(),
        init = c.vtid_initiates,
    )
}

fn run(name: &str, c: Case) {
    scenario(name, spec(), |sc| {
        let (ha, hb) = (sc.topo.host("a"), sc.topo.host("b"));
        // strongSwan's route-based device, as its users create it.
        let under = nstest::topo::iface_to("a");
        hb.ip(&[
            "link",
            "add",
            "tun2",
            "type",
            "xfrm",
            "dev",
            &under,
            "if_id",
            &IF_ID.to_string(),
        ])?;
        hb.ip(&["link", "set", "tun2", "up"])?;
        hb.ip(&["addr", "add", "10.255.0.2/30", "dev", "tun2"])?;
        hb.ip(&["route", "add", "10.1.0.0/24", "dev", "tun2"])?;
        let mut conn = SwanConn::psk("192.0.2.2", "192.0.2.1", PSK);
        conn.version = 1;
        conn.ike_proposals = c.swan_ike.into();
        conn.esp_proposals = c.swan_esp.into();
        conn.local_ts = "0.0.0.0/0".into();
        conn.remote_ts = "0.0.0.0/0".into();
        conn.if_id = Some(IF_ID);
        let swan = Strongswan::start(hb, &sc.dir().join("b"), &conn)?;
        let dir = sc.dir().join("a");
        std::fs::create_dir_all(&dir)?;
        let psk_file = write_secret(&dir, "psk", PSK)?;
        let vtid = Vtid::start_config(ha, &dir, &vtid_config(&c, &psk_file), "tun1")?;
        let diag = |what: &str, vtid: &Vtid, swan: &Strongswan| {
            format!(
                "{what}\n--- vtid ---\n{}\n--- charon ---\n{}",
                vtid.log(),
                swan.log()
            )
        };
        if !c.vtid_initiates {
            swan.initiate()
                .with_context(|| diag("strongSwan's initiate", &vtid, &swan))?;
        }
        kernel::wait_until(
            "IKEv1 SAs up on both sides",
            Duration::from_secs(60),
            || Ok(vtid.is_up()? && swan.is_up()?),
        )
        .with_context(|| diag("negotiation", &vtid, &swan))?;

        let cap = Capture::start(hb, "e-a", sc.dir().join("underlay.pcap"))?;
        let replies = kernel::ping(ha, "10.1.0.1", "10.2.0.1", 5)?;
        let [esp_n, clear] = cap.stop_and_count(&["esp", "net 10.0.0.0/8"])?[..] else {
            unreachable!()
        };
        ensure!(replies == 5, "{replies}/5 pings answered across the tunnel");
        ensure!(
            clear == 0,
            "{clear} plaintext inner packets on the underlay"
        );
        ensure!(esp_n >= 10, "only {esp_n} ESP packets for 5 round trips");

        let spis = |ns| -> Result<Vec<(u32, Vec<String>)>> {
            let mut v: Vec<_> = kernel::xfrm_states(ns)?
                .into_iter()
                .filter(|s| s.spi != 0)
                .map(|s| (s.spi, s.algs))
                .collect();
            v.sort();
            Ok(v)
        };
        let (sa, sb) = (spis(ha)?, spis(hb)?);
        ensure!(sa.len() == 2, "a has {} SAs, expected 2: {sa:?}", sa.len());
        ensure!(sa == sb, "the kernels disagree: a {sa:?} b {sb:?}");
        // strongSwan's own view names the same SPIs, and says IKEv1.
        let listed = swan.list_sas()?;
        for (spi, _) in &sa {
            ensure!(
                listed.contains(&format!("{spi:08x}")),
                "strongSwan does not list SPI {spi:08x}: {listed}"
            );
        }
        ensure!(
            listed.contains("version=1"),
            "strongSwan's SA is not IKEv1: {listed}"
        );

        // vtid's books: one IKEv1 session in QM_IDLE, and IOS's ISAKMP table.
        let sessions = vtid.show("sessions")?;
        let rows = sessions.as_array().context("sessions is a list")?;
        ensure!(rows.len() == 1, "one session expected: {sessions}");
        ensure!(
            rows[0]["version"] == 1 && rows[0]["state"] == "QM_IDLE",
            "session row: {}",
            rows[0]
        );
        let isakmp = vtid.cli(&["show", "crypto", "isakmp", "sa"])?;
        let (dst, src) = if c.vtid_initiates {
            ("192.0.2.2", "192.0.2.1")
        } else {
            ("192.0.2.1", "192.0.2.2")
        };
        ensure!(
            isakmp.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() == 5 && w[0] == dst && w[1] == src && w[2] == "QM_IDLE" && w[4] == "ACTIVE"
            }),
            "show crypto isakmp sa lacks the IOS row {dst} {src} QM_IDLE ... ACTIVE:\n{isakmp}"
        );
        sc.add_peer("a", nstest::peer::vtid_peer(vtid));
        drop(swan);
        Ok(())
    });
}

#[test]
#[ignore = "vm"]
fn vm_ikev1_main_mode_psk_vtid_initiates() {
    run(
        "ikev1-vtid-init",
        Case {
            vtid_initiates: true,
            policy: AES256_SHA256,
            swan_ike: "aes256-sha256-modp2048",
            transform: "esp = \"aes-cbc-256\"\nintegrity = \"sha256\"\n",
            swan_esp: "aes256-sha256",
            pfs: None,
            legacy: false,
        },
    );
}

#[test]
#[ignore = "vm"]
fn vm_ikev1_main_mode_psk_strongswan_initiates() {
    run(
        "ikev1-swan-init",
        Case {
            vtid_initiates: false,
            policy: AES256_SHA256,
            swan_ike: "aes256-sha256-modp2048",
            transform: "esp = \"aes-cbc-256\"\nintegrity = \"sha256\"\n",
            swan_esp: "aes256-sha256",
            pfs: None,
            legacy: false,
        },
    );
}
