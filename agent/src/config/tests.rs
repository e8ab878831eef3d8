//! Unit tests: every error kind with its exact position, secrets, diff, shipped examples.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ike::transform::{DhGroup, Encr, Integ, Prf};

use super::*;

#[path = "gre_tests.rs"]
mod gre;
#[path = "multipoint_tests.rs"]
mod multipoint;

/// No file access: structure only.
fn no_files() -> LoadOptions {
    LoadOptions {
        read_files: false,
        ..LoadOptions::default()
    }
}

fn parse(src: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml(Path::new("t.toml"), src, &no_files())
}

/// `(line, column, message)` of every error.
fn errors(src: &str) -> Vec<(usize, usize, String)> {
    match parse(src) {
        Ok(_) => panic!("expected errors, config was accepted"),
        Err(e) => {
            e.0.into_iter()
                .map(|e| (e.line, e.column, e.message))
                .collect()
        }
    }
}

/// The single error, asserting there is exactly one.
#[track_caller]
fn one_error(src: &str) -> (usize, usize, String) {
    let mut e = errors(src);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.remove(0)
}

#[track_caller]
fn assert_error(src: &str, line: usize, column: usize, contains: &str) {
    let (l, c, m) = one_error(src);
    assert_eq!((l, c), (line, column), "position of: {m}");
    assert!(m.contains(contains), "message {m:?} lacks {contains:?}");
}

/// A valid base every case below appends to: profile P1 with set T1, keyring for any peer.
const BASE: &str = r#"[transform_set.T1]
esp = "aes-gcm-256"
[ipsec_profile.P1]
transform_sets = ["T1"]
[keyring.KR1]
[[keyring.KR1.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/psk/any.key"
"#;
// BASE is 8 lines, so appended text starts on line 9.

fn with_base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// A private scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vtid-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    fn file(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, contents).expect("write temp file");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn psk_config(key_path: &Path) -> String {
    format!(
        r#"[transform_set.T1]
esp = "aes-gcm-256"
[ipsec_profile.P1]
transform_sets = ["T1"]
[keyring.KR1]
[[keyring.KR1.peer]]
address = "10.0.149.217"
psk_file = "{}"
[tunnel.Tunnel0]
source = "10.0.149.203"
destination = "10.0.149.217"
address = "10.0.51.203/24"
protection = "P1"
"#,
        key_path.display()
    )
}

// ---- accepted configurations ----------------------------------------------------------------

#[test]
fn seed_static_vti_is_typed() {
    let c = parse(&with_base(
        r#"[tunnel.Tunnel0]
source = "10.0.149.203"
destination = "10.0.149.217"
address = "10.0.51.203/24"
protection = "P1"
routes = ["10.0.36.0/24"]
"#,
    ))
    .expect("valid");
    let t = &c.tunnels["Tunnel0"];
    assert_eq!(t.mode, TunnelMode::Xfrmi);
    assert_eq!(
        t.source,
        TunnelSource::Address("10.0.149.203".parse().unwrap())
    );
    assert_eq!(
        t.inner,
        InnerAddress::Address("10.0.51.203/24".parse().unwrap())
    );
    assert_eq!(t.routes, vec!["10.0.36.0/24".parse::<Route>().unwrap()]);
    assert!(t.initiate);
    assert_eq!(t.if_id, None);
    let p = &c.ipsec_profiles["P1"];
    assert_eq!(
        p.lifetime,
        SaLifetime {
            seconds: 3600,
            kilobytes: 4_608_000
        }
    );
    assert_eq!(p.pfs, None);
    assert_eq!(p.offload, Offload::Off);
    assert_eq!(
        c.transform_sets["T1"],
        TransformSet {
            esp: Encr::AesGcm16 { key_bits: 256 },
            integrity: None,
            mode: SaMode::Tunnel,
            mode_written: false,
        }
    );
    assert_eq!(c.global, Global::default());
    // No ike_profile anywhere: one is derived from the keyring entry.
    let ike = &t.ike;
    assert_eq!(ike.keyring.as_deref(), Some("KR1"));
    assert_eq!(ike.local_auth, AuthMethod::Psk);
    assert!(ike.proposals.is_empty());
}

#[test]
fn algorithms_and_groups_in_every_spelling() {
    let c = parse(
        r#"[ike_proposal.IKE1]
encryption = ["aes-cbc-256", "aes-cbc-128"]
integrity = ["sha384"]
group = [14, "group19", "x25519", "21"]
[transform_set.T2]
esp = "aes-cbc-128"
integrity = "sha256"
mode = "transport"
[transform_set.T3]
esp = "chacha20-poly1305"
[ipsec_profile.P2]
transform_sets = ["T3", "T2"]
pfs = "group14"
offload = "auto"
lifetime = { seconds = 60, kilobytes = 2560 }
"#,
    )
    .expect("valid");
    let p = &c.ike_proposals["IKE1"];
    assert_eq!(
        p.encryption,
        vec![
            Encr::AesCbc { key_bits: 256 },
            Encr::AesCbc { key_bits: 128 }
        ]
    );
    assert_eq!(p.integrity, vec![Integ::HmacSha384_192]);
    // PRF defaults from integrity, as IOS does.
    assert_eq!(p.prf, vec![Prf::HmacSha384]);
    assert_eq!(
        p.groups,
        vec![
            DhGroup::Modp2048,
            DhGroup::Ecp256,
            DhGroup::Curve25519,
            DhGroup::Ecp521
        ]
    );
    assert_eq!(c.transform_sets["T2"].mode, SaMode::Transport);
    assert_eq!(c.ipsec_profiles["P2"].pfs, Some(DhGroup::Modp2048));
    assert_eq!(c.ipsec_profiles["P2"].offload, Offload::Auto);
    assert_eq!(c.ipsec_profiles["P2"].transform_sets, ["T3", "T2"]);
}

#[test]
fn builtin_default_proposal() {
    let p = IkeProposalSpec::builtin_default();
    assert_eq!(p.encryption, vec![Encr::AesGcm16 { key_bits: 256 }]);
    assert_eq!(p.prf, vec![Prf::HmacSha256]);
    assert_eq!(
        p.groups,
        vec![DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Modp2048]
    );
    assert!(p.integrity.is_empty());
}

#[test]
fn legacy_allowed_with_opt_in() {
    let c = parse(
        r#"[global]
allow_legacy = true
[transform_set.T1]
esp = "3des"
integrity = "sha1"
[ipsec_profile.P1]
transform_sets = ["T1"]
pfs = 2
"#,
    )
    .expect("valid with allow_legacy");
    assert_eq!(c.transform_sets["T1"].esp, Encr::TripleDes);
    assert_eq!(c.ipsec_profiles["P1"].pfs, Some(DhGroup::Modp1024));
}

#[test]
fn embedded_default_parses() {
    let c = Config::builtin_default().unwrap_or_else(|e| panic!("{e}"));
    assert!(c.tunnels.contains_key("Tunnel0"));
}

#[test]
fn packaging_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples");
    let mut n = 0;
    for entry in fs::read_dir(&dir).expect("packaging/examples exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load_with(&path, &no_files()).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4, "expected at least 4 examples, found {n}");
}

// ---- every error kind, with its position ----------------------------------------------------

#[test]
fn toml_syntax_error() {
    let (l, c, m) = one_error("[global]\nike_port = 500\nlog_level = \"info\n");
    // The string runs to the end of the line; toml reports where it expected the quote.
    assert_eq!((l, c), (3, 18), "{m}");
    assert!(m.starts_with("invalid TOML"), "{m}");
}

#[test]
fn unknown_section_suggests() {
    assert_error(
        "[tunel.Tunnel0]\nsource = \"eth0\"\n",
        1,
        2,
        "unknown section \"tunel\" (did you mean \"tunnel\"?)",
    );
}

#[test]
fn global_key_at_top_level() {
    assert_error(
        "allow_legacy = true\n",
        1,
        1,
        "\"allow_legacy\" belongs in the [global] section",
    );
}

#[test]
fn unknown_key_suggests() {
    assert_error(
        "[transform_set.T1]\nesp = \"aes-gcm-256\"\nmdoe = \"tunnel\"\n",
        3,
        1,
        "transform_set.T1: unknown key \"mdoe\" (did you mean \"mode\"?)",
    );
}

#[test]
fn missing_key() {
    assert_error(
        "[transform_set.T1]\nmode = \"tunnel\"\n",
        1,
        16,
        "missing key \"esp\"",
    );
}

#[test]
fn wrong_type() {
    assert_error(
        &with_base(
            "[tunnel.Tunnel0]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nmtu = \"1400\"\n",
        ),
        14,
        7,
        "tunnel.Tunnel0",
    );
}

#[test]
fn unknown_transform() {
    let (l, c, m) = one_error("[transform_set.T1]\nesp = \"aes-gcm-257\"\n");
    assert_eq!((l, c), (2, 7));
    assert!(
        m.contains("unknown cipher \"aes-gcm-257\" (did you mean \"aes-gcm-256\"?)"),
        "{m}"
    );
    assert!(m.contains("expected one of \"aes-gcm-128\""), "{m}");
}

#[test]
fn legacy_without_opt_in() {
    let e = errors(
        "[transform_set.T1]\nesp = \"3des\"\nintegrity = \"sha1\"\n[ipsec_profile.P1]\ntransform_sets = [\"T1\"]\npfs = 2\n",
    );
    let pos: Vec<_> = e.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(pos, [(2, 7), (3, 13), (6, 7)], "{e:#?}");
    for (_, _, m) in &e {
        assert!(
            m.contains("legacy algorithm; set allow_legacy = true in [global]"),
            "{m}"
        );
    }
}

#[test]
fn aead_with_integrity() {
    assert_error(
        "[transform_set.T1]\nesp = \"aes-gcm-128\"\nintegrity = \"sha256\"\n",
        3,
        13,
        "AEAD and has built-in integrity",
    );
}

#[test]
fn cbc_without_integrity() {
    assert_error(
        "[transform_set.T1]\nesp = \"aes-cbc-128\"\n",
        1,
        16,
        "needs an integrity algorithm",
    );
}

#[test]
fn ike_proposal_errors() {
    let e = errors(
        "[ike_proposal.A]\nencryption = [\"aes-gcm-256\", \"aes-cbc-128\"]\nintegrity = [\"sha256\"]\ngroup = [19]\n[ike_proposal.B]\nencryption = [\"aes-gcm-256\"]\ngroup = [\"grop14\", 99]\n",
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (2, 15));
    assert!(e[0].2.contains("cannot be mixed"), "{}", e[0].2);
    assert_eq!((e[1].0, e[1].1), (7, 10));
    assert!(
        e[1].2
            .contains("unknown DH group grop14 (did you mean \"group14\"?)"),
        "{}",
        e[1].2
    );
    assert_eq!((e[2].0, e[2].1), (7, 20));
    assert!(e[2].2.contains("unknown DH group 99"), "{}", e[2].2);
}

#[test]
fn unknown_reference_suggests() {
    let src = with_base(
        "[tunnel.Tunnel0]\nsource = \"10.0.149.203\"\ndestination = \"10.0.149.217\"\naddress = \"10.0.51.203/24\"\nprotection = \"P2\"\n",
    );
    let (l, c, m) = one_error(&src);
    assert_eq!((l, c), (13, 14));
    assert_eq!(
        m,
        "tunnel.Tunnel0.protection = \"P2\": no ipsec_profile named \"P2\" (did you mean \"P1\"?)"
    );
    // Display is `file:line:column: error: message`.
    let shown = parse(&src).unwrap_err().to_string();
    assert_eq!(
        shown,
        "t.toml:13:14: error: tunnel.Tunnel0.protection = \"P2\": no ipsec_profile named \"P2\" \
         (did you mean \"P1\"?)"
    );
}

#[test]
fn unknown_reference_without_close_name() {
    let (_, _, m) = one_error(&with_base(
        "[ipsec_profile.P9]\ntransform_sets = [\"STRONG\"]\n",
    ));
    assert_eq!(
        m,
        "ipsec_profile.P9.transform_sets = \"STRONG\": no transform_set named \"STRONG\""
    );
}

#[test]
fn bad_cidr_and_host_bits() {
    let e = errors(&with_base(
        "[tunnel.Tunnel0]\nsource = \"10.0.149.203\"\ndestination = \"10.0.149.217\"\naddress = \"10.0.51.203/33\"\nprotection = \"P1\"\nroutes = [\"10.0.36.1/24\", \"10.0.37/24\"]\n",
    ));
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (12, 11));
    assert!(
        e[0].2
            .contains("\"10.0.51.203/33\" is not an address with prefix length"),
        "{}",
        e[0].2
    );
    assert_eq!((e[1].0, e[1].1), (14, 11));
    assert!(
        e[1].2
            .contains("host bits set (did you mean \"10.0.36.0/24\"?)"),
        "{}",
        e[1].2
    );
    assert_eq!((e[2].0, e[2].1), (14, 27));
    assert!(
        e[2].2.contains("not a prefix in CIDR notation"),
        "{}",
        e[2].2
    );
}

#[test]
fn bad_destination_address() {
    assert_error(
        &with_base(
            "[tunnel.Tunnel0]\nsource = \"eth0\"\ndestination = \"10.0.149.300\"\naddress = \"10.0.51.203/24\"\nprotection = \"P1\"\n",
        ),
        11,
        15,
        "\"10.0.149.300\" is not an IP address",
    );
}

#[test]
fn address_family_mismatch() {
    assert_error(
        &with_base(
            "[tunnel.Tunnel0]\nsource = \"10.0.149.203\"\ndestination = \"2001:db8::1\"\naddress = \"10.0.51.203/24\"\nprotection = \"P1\"\nike_profile = \"I\"\n[ike_profile.I]\nkeyring = \"KR1\"\n",
        ),
        11,
        15,
        "2001:db8::1 is IPv6 but source 10.0.149.203 is IPv4",
    );
}

#[test]
fn vti_same_source_and_destination() {
    let two = |mode2: &str| {
        with_base(&format!(
            "[tunnel.Tunnel0]\nmode = \"vti\"\nsource = \"eth0\"\ndestination = \"10.0.149.217\"\naddress = \"10.0.51.203/24\"\nprotection = \"P1\"\n[tunnel.Tunnel1]\nmode = \"{mode2}\"\nsource = \"eth0\"\ndestination = \"10.0.149.217\"\naddress = \"10.0.52.203/24\"\nprotection = \"P1\"\n"
        ))
    };
    // Tunnel1 accepts another IKE identity, so only the device's ambiguity is left.
    let two = |mode2: &str| {
        two(mode2)
            + "ike_profile = \"I2\"\n[ike_profile.I2]\nkeyring = \"KR1\"\nmatch_identity = [\"fqdn:two.example\"]\n"
    };
    assert_error(
        &two("vti"),
        18,
        15,
        "tunnel.Tunnel0 already uses mode = \"vti\" from eth0 to 10.0.149.217",
    );
    // xfrm interfaces are told apart by if_id, so the same pair is fine there.
    parse(&two("xfrmi")).expect("xfrmi + vti to the same peer is fine");
}

#[test]
fn duplicate_if_id() {
    assert_error(
        &with_base(
            "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nif_id = 42\n[tunnel.B]\nsource = \"eth0\"\ndestination = \"10.0.0.2\"\naddress = \"10.9.0.5/30\"\nprotection = \"P1\"\nif_id = 42\n",
        ),
        20,
        9,
        "tunnel.B.if_id: if_id 42 is already used by tunnel.A",
    );
}

/// Two tunnels A (eth0 → 10.0.0.1, 10.9.0.1/30) and B with `b` as the rest of its body.
fn two_tunnels(b: &str) -> String {
    with_base(&format!(
        "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nroutes = [\"10.1.0.0/24\"]\n[tunnel.B]\nsource = \"eth0\"\n{b}"
    ))
}

#[test]
fn source_equal_to_destination() {
    assert_error(
        &with_base(
            "[tunnel.A]\nsource = \"10.0.0.1\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\n",
        ),
        11,
        15,
        "tunnel.A.destination: 10.0.0.1 is also the tunnel's source",
    );
}

#[test]
fn same_peer_and_identity_twice() {
    // B starts on line 15; its destination is line 17.
    assert_error(
        &two_tunnels(
            "destination = \"10.0.0.1\"\naddress = \"10.9.0.5/30\"\nprotection = \"P1\"\n",
        ),
        17,
        15,
        "tunnel.A already runs from eth0 to 10.0.0.1 and accepts the same peer identities",
    );
    // Two explicit profiles that both leave match_identity out ("none") are the same too.
    assert_error(
        &(two_tunnels(
            "destination = \"10.0.0.1\"\naddress = \"10.9.0.5/30\"\nprotection = \"P1\"\nike_profile = \"I\"\n[ike_profile.I]\nkeyring = \"KR1\"\n",
        )
        .replace("routes = [\"10.1.0.0/24\"]\n", "routes = [\"10.1.0.0/24\"]\nike_profile = \"J\"\n")
            + "[ike_profile.J]\nkeyring = \"KR1\"\n"),
        18,
        15,
        "accepts the same peer identities (none given)",
    );
}

#[test]
fn same_inner_address_twice() {
    assert_error(
        &two_tunnels(
            "destination = \"10.0.0.2\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\n",
        ),
        18,
        11,
        "tunnel.B.address: 10.9.0.1 is already the address of tunnel.A in the main table",
    );
}

#[test]
fn same_route_twice() {
    // In one tunnel: the second occurrence is reported.
    assert_error(
        &with_base(
            "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nroutes = [\"10.1.0.0/24\", \"10.1.0.0/24\"]\n",
        ),
        14,
        26,
        "tunnel.A.routes: 10.1.0.0/24 is listed twice",
    );
    // On two tunnels of the same table.
    assert_error(
        &two_tunnels(
            "destination = \"10.0.0.2\"\naddress = \"10.9.0.5/30\"\nprotection = \"P1\"\nroutes = [\"10.2.0.0/24\", \"10.1.0.0/24\"]\n",
        ),
        20,
        26,
        "tunnel.B.routes: 10.1.0.0/24 is already routed into tunnel.A in the main table",
    );
}

/// What looks like the ambiguities above but is not: each of these configurations loads.
#[test]
fn legitimate_near_misses_pass() {
    let ok = |src: String| parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    // Same addresses, another accepted identity: IKE_AUTH's IDi tells them apart.
    ok(two_tunnels(
        "destination = \"10.0.0.1\"\naddress = \"10.9.0.5/30\"\nprotection = \"P1\"\nike_profile = \"I\"\n[ike_profile.I]\nkeyring = \"KR1\"\nmatch_identity = [\"fqdn:b.example\"]\n",
    ));
    // Same addresses and identity in another front-door VRF: other sockets, other underlay.
    ok(two_tunnels(
        "destination = \"10.0.0.1\"\naddress = \"10.9.0.5/30\"\nprotection = \"P1\"\nfvrf = \"WAN\"\n[vrf.WAN]\ntable = 10\n",
    ));
    // The same inner address and route in another inside VRF (overlapping customers).
    ok(two_tunnels(
        "destination = \"10.0.0.2\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nroutes = [\"10.1.0.0/24\"]\nvrf = \"CUST\"\n[vrf.CUST]\ntable = 10\n",
    ));
    // Overlapping but different prefixes, and a different host of the same subnet.
    ok(two_tunnels(
        "destination = \"10.0.0.2\"\naddress = \"10.9.0.2/30\"\nprotection = \"P1\"\nroutes = [\"10.1.0.0/16\", \"10.1.0.0/25\"]\n",
    ));
    // Two unnumbered tunnels borrow the same interface's address on purpose.
    ok(with_base(
        "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\nunnumbered = \"lo\"\nprotection = \"P1\"\n[tunnel.B]\nsource = \"eth0\"\ndestination = \"10.0.0.2\"\nunnumbered = \"lo\"\nprotection = \"P1\"\n",
    ));
    // An address source next to, but not equal to, the destination.
    ok(with_base(
        "[tunnel.A]\nsource = \"10.0.0.2\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\n",
    ));
}

#[test]
fn if_id_zero_is_reserved() {
    assert_error(
        &with_base(
            "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nif_id = 0\n",
        ),
        14,
        9,
        "0 is out of range; expected 1 to 4294967295",
    );
}

#[test]
fn unnumbered_and_address() {
    assert_error(
        &with_base(
            "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nunnumbered = \"lo\"\nprotection = \"P1\"\n",
        ),
        13,
        14,
        "tunnel.A: set either address or unnumbered, not both",
    );
}

#[test]
fn neither_address_nor_unnumbered() {
    assert_error(
        &with_base(
            "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\nprotection = \"P1\"\n",
        ),
        9,
        9,
        "needs address = \"ADDRESS/LEN\" or unnumbered = \"IFACE\"",
    );
}

#[test]
fn bad_interface_name() {
    assert_error(
        &with_base(
            "[tunnel.Tunnel0123456789ab]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\n",
        ),
        9,
        9,
        "Linux limits interface names to 15 bytes",
    );
}

#[test]
fn lifetime_out_of_range() {
    let e = errors(&with_base(
        "[ipsec_profile.P2]\ntransform_sets = [\"T1\"]\nlifetime = { seconds = 10, kilobytes = 99999999999 }\n",
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (11, 24));
    assert!(
        e[0].2
            .contains("lifetime.seconds: 10 is out of range; expected 30 to 86400"),
        "{}",
        e[0].2
    );
    assert_eq!((e[1].0, e[1].1), (11, 40));
    assert!(e[1].2.contains("lifetime.kilobytes"), "{}", e[1].2);
}

#[test]
fn too_many_transform_sets() {
    let e = errors(&with_base(
        "[ipsec_profile.P2]\ntransform_sets = [\"T1\",\"T1\",\"T1\",\"T1\",\"T1\",\"T1\",\"T1\"]\n",
    ));
    assert_eq!((e[0].0, e[0].1), (10, 18));
    assert!(
        e[0].2.contains("lists 7 transform sets; expected 1 to 6"),
        "{}",
        e[0].2
    );
    // Each repetition is reported too, at its own position.
    assert_eq!(
        (e[1].0, e[1].1, e[1].2.as_str()),
        (
            10,
            24,
            "ipsec_profile.P2.transform_sets: \"T1\" is listed twice"
        )
    );
}

#[test]
fn transport_mode_on_vti() {
    assert_error(
        "[transform_set.T1]\nesp = \"aes-gcm-256\"\nmode = \"transport\"\n[ipsec_profile.P1]\ntransform_sets = [\"T1\"]\n[ike_profile.I]\nkeyring = \"K\"\n[keyring.K]\n[tunnel.Tunnel0]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nike_profile = \"I\"\n[[keyring.K.peer]]\naddress = \"10.0.0.1\"\npsk_file = \"/etc/vtid/k.key\"\n",
        13,
        14,
        "VTIs need tunnel mode",
    );
}

#[test]
fn tunnel_without_keyring_entry() {
    assert_error(
        "[transform_set.T1]\nesp = \"aes-gcm-256\"\n[ipsec_profile.P1]\ntransform_sets = [\"T1\"]\n[tunnel.Tunnel0]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\n",
        5,
        9,
        "no ike_profile given and no keyring has a peer entry for 10.0.0.1",
    );
}

#[test]
fn static_tunnel_cannot_use_dvti_profile() {
    assert_error(
        &with_base(
            "[ike_profile.HUB]\nkeyring = \"KR1\"\nmatch_identity = [\"any\"]\nvirtual_template = \"VT1\"\n[virtual_template.VT1]\nunnumbered = \"lo\"\nprotection = \"P1\"\n[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nike_profile = \"HUB\"\n",
        ),
        21,
        15,
        "clones a virtual_template",
    );
}

#[test]
fn ike_profile_errors() {
    let e = errors(&with_base(
        "[ike_profile.I]\nlocal_auth = \"rsa-sig\"\nremote_auth = [\"psk\", \"ecdsa\"]\nkeyring = \"KR1\"\ndpd = { interval = 0 }\nlocal_address = \"10.0.0.1\"\nlocal_interface = \"eth0\"\nmatch_identity = [\"fqdm:x.example\"]\n",
    ));
    let pos: Vec<_> = e.iter().map(|(l, c, _)| (*l, *c)).collect();
    // No trustpoint (at the profile name), unknown method, dpd range, both terminations,
    // bad identity type.
    assert_eq!(
        pos,
        [(9, 14), (11, 23), (13, 20), (15, 19), (16, 19)],
        "{e:#?}"
    );
    assert!(e[0].2.contains("needs trustpoint"), "{}", e[0].2);
    assert!(
        e[1].2
            .contains("unknown auth method \"ecdsa\" (did you mean \"ecdsa-sig\"?)"),
        "{}",
        e[1].2
    );
    assert!(
        e[4].2
            .contains("unknown identity type \"fqdm\" (did you mean \"fqdn\"?)"),
        "{}",
        e[4].2
    );
}

// ---- checks the daemon used to make only when planning -------------------------------------

#[test]
fn psk_and_signature_mix() {
    assert_error(
        &with_base(
            "[ike_profile.I]\nkeyring = \"KR1\"\ntrustpoint = \"TP\"\nremote_auth = [\"psk\", \"ecdsa-sig\"]\n[trustpoint.TP]\nca = [\"/etc/vtid/ca.pem\"]\n",
        ),
        12,
        23,
        "ike_profile.I.remote_auth: ecdsa-sig with local_auth = psk mixes psk and signatures",
    );
}

#[test]
fn signature_profile_needs_certificate_and_ca() {
    assert_error(
        &with_base(
            "[ike_profile.I]\ntrustpoint = \"TP\"\nlocal_auth = \"ecdsa-sig\"\n[trustpoint.TP]\nca = [\"/etc/vtid/ca.pem\"]\n",
        ),
        10,
        14,
        "trustpoint TP has no certificate and private_key",
    );
    assert_error(
        &with_base(
            "[ike_profile.I]\ntrustpoint = \"TP\"\nlocal_auth = \"ecdsa-sig\"\n[trustpoint.TP]\ncertificate = \"/etc/vtid/me.pem\"\nprivate_key = \"/etc/vtid/me.key\"\n",
        ),
        10,
        14,
        "trustpoint TP lists no ca",
    );
}

#[test]
fn named_profile_keyring_without_entry_for_destination() {
    assert_error(
        &with_base(
            "[ike_profile.I]\nkeyring = \"K2\"\n[keyring.K2]\n[[keyring.K2.peer]]\naddress = \"10.1.0.0/16\"\npsk_file = \"/etc/vtid/k2.key\"\n[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nike_profile = \"I\"\n",
        ),
        17,
        15,
        "keyring K2 (of ike_profile I) has no peer entry for 10.0.0.1",
    );
}

#[test]
fn identities_the_engine_could_not_use() {
    // A DN identity is our certificate's subject: PSK profiles have none.
    assert_error(
        &with_base("[ike_profile.I]\nkeyring = \"KR1\"\nlocal_identity = \"dn:CN=me\"\n"),
        11,
        18,
        "local_identity dn:CN=me needs certificate authentication",
    );
    // DNs are parsed for matching, in match_identity and in keyring entries alike.
    assert_error(
        &with_base(
            "[ike_profile.I]\nkeyring = \"KR1\"\nmatch_identity = [\"fqdn:a.example\", \"dn:Q=1\"]\n",
        ),
        11,
        37,
        "ike_profile.I.match_identity: DN \"Q=1\": unknown attribute \"Q\"",
    );
    assert_error(
        &with_base("[[keyring.KR1.peer]]\nidentity = \"dn:CN\"\npsk_file = \"/etc/vtid/x.key\"\n"),
        10,
        12,
        "keyring.KR1.peer[1].identity: DN \"CN\": \"CN\" is not ATTRIBUTE=VALUE",
    );
}

#[test]
fn vrf_tables() {
    let e = errors("[vrf.BLUE]\ntable = 201\n[vrf.RED]\ntable = 201\n[vrf.MAIN]\ntable = 254\n");
    let pos: Vec<_> = e.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(pos, [(4, 9), (6, 9)], "{e:#?}");
    assert!(
        e[0].2.contains("table 201 is already used by vrf.BLUE"),
        "{}",
        e[0].2
    );
    assert!(e[1].2.contains("reserved by Linux"), "{}", e[1].2);
}

#[test]
fn global_errors() {
    let e = errors(
        "[global]\nike_port = 4500\nnat_t_port = 4500\nlog_level = \"verbose\"\nmetrics = \"localhost\"\ncontrol_socket = \"vtid.sock\"\n",
    );
    let pos: Vec<_> = e.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(pos, [(3, 14), (4, 13), (5, 11), (6, 18)], "{e:#?}");
    assert!(e[0].2.contains("also the ike_port"), "{}", e[0].2);
}

#[test]
fn nat_keepalive_is_seconds_from_1_to_3600() {
    for (v, col) in [("0", 17), ("3601", 17), ("-5", 17)] {
        let e = errors(&format!("[global]\nnat_keepalive = {v}\n"));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!((e[0].0, e[0].1), (2, col), "{e:#?}");
        assert!(
            e[0].2.contains("global.nat_keepalive") && e[0].2.contains("1 to 3600"),
            "{}",
            e[0].2
        );
    }
    let e = errors("[global]\nnat_keepalive = \"20s\"\n");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (2, 17), "{e:#?}");
    let cfg = parse(&with_base("[global]\nnat_keepalive = 5\n")).unwrap();
    assert_eq!(cfg.global.nat_keepalive, std::time::Duration::from_secs(5));
    let cfg = parse(BASE).unwrap();
    assert_eq!(cfg.global.nat_keepalive, std::time::Duration::from_secs(20));
}

#[test]
fn front_door_limits_are_checked_and_default_to_strongswans() {
    let cfg = parse(BASE).unwrap();
    assert_eq!(cfg.global.limits, ike::Limits::default());
    assert_eq!(cfg.global.limits.cookie_threshold, 30);
    assert_eq!(cfg.global.limits.half_open_limit_per_source, 5);
    let src = "[global]\ncookie_threshold = 0\ncookie_threshold_per_source = 2\n\
               half_open_limit = 100\nhalf_open_limit_per_source = 4\nhalf_open_timeout = 5\n\
               ike_sa_limit = 2000\ncookie_secret_lifetime = 60\n";
    let l = parse(&with_base(src)).unwrap().global.limits;
    assert_eq!(
        l,
        ike::Limits {
            cookie_threshold: 0,
            cookie_threshold_per_source: 2,
            half_open_limit: 100,
            half_open_limit_per_source: 4,
            half_open_timeout: std::time::Duration::from_secs(5),
            ike_sa_limit: 2000,
            cookie_secret_lifetime: std::time::Duration::from_secs(60),
        }
    );
    // Every bad value is reported, each at its own line and column, with its range.
    let e = errors(
        "[global]\nhalf_open_limit = 0\nhalf_open_limit_per_source = -1\n\
         half_open_timeout = 0\ncookie_secret_lifetime = 5\ncookie_threshold = -1\n\
         ike_sa_limit = 99999999999\n",
    );
    let got: Vec<(usize, &str)> = e
        .iter()
        .map(|(line, _, msg)| (*line, msg.split(':').next().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "global.half_open_limit"),
            (3, "global.half_open_limit_per_source"),
            (4, "global.half_open_timeout"),
            (5, "global.cookie_secret_lifetime"),
            (6, "global.cookie_threshold"),
            (7, "global.ike_sa_limit"),
        ],
        "{e:#?}"
    );
    assert!(e[0].2.contains("1 to 10000000"), "{}", e[0].2);
    assert!(e[3].2.contains("10 to 86400"), "{}", e[3].2);
}

#[test]
fn template_routes_mode() {
    assert_error(
        &with_base(
            "[virtual_template.VT1]\nunnumbered = \"lo\"\nprotection = \"P1\"\nroutes = \"traffic-selector\"\n",
        ),
        12,
        10,
        "unknown routes mode \"traffic-selector\" (did you mean \"traffic-selectors\"?)",
    );
}

#[test]
fn three_mistakes_all_reported() {
    let src = r#"[transform_set.T1]
esp = "aes-gcm-257"
[ipsec_profile.P1]
transform_sets = ["T1"]
lifetime = { seconds = 3600, kilobytes = 4608000 }
[keyring.KR1]
[[keyring.KR1.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/psk/any.key"
[tunnel.Tunnel0]
source = "eth0"
destination = "10.0.149.217"
address = "10.0.51.203/24"
protection = "P2"
routes = ["10.0.36.0/33"]
"#;
    let e = parse(src).unwrap_err();
    let lines: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("t.toml:2:7: error: transform_set.T1.esp: unknown cipher"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("t.toml:14:14: error: tunnel.Tunnel0.protection = \"P2\""),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("t.toml:15:11: error: tunnel.Tunnel0.routes: \"10.0.36.0/33\""),
        "{}",
        lines[2]
    );
}

#[test]
fn errors_in_separate_entries_are_all_reported() {
    // serde stops at the first error of an entry, but each entry is deserialized on its own.
    let e = errors("[transform_set.A]\nesp = 5\n[transform_set.B]\nespp = \"aes-gcm-256\"\n");
    let pos: Vec<_> = e.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(pos, [(2, 7), (4, 1)], "{e:#?}");
}

#[test]
fn columns_count_characters() {
    assert_eq!(error::line_col("a\n\u{e9}\u{e9}x", 6), (2, 3));
    assert_eq!(error::line_col("abc", 0), (1, 1));
}

#[test]
fn did_you_mean_thresholds() {
    assert_eq!(error::did_you_mean("P2", ["P1", "LONGNAME"]), Some("P1"));
    assert_eq!(error::did_you_mean("BLUEE", ["BLUE", "RED"]), Some("BLUE"));
    assert_eq!(error::did_you_mean("Tunnel7", ["BLUE"]), None);
}

// ---- secrets --------------------------------------------------------------------------------

#[test]
fn psk_file_mode_0644_refused_0600_accepted() {
    let dir = TempDir::new();
    let opts = LoadOptions {
        secret_owner_uid: my_uid(),
        read_files: true,
    };
    let loose = dir.file("loose.key", "hunter2-secret\n", 0o644);
    let src = psk_config(&loose);
    let e = Config::from_toml(Path::new("t.toml"), &src, &opts).unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    let err = &e.0[0];
    assert_eq!((err.line, err.column), (8, 12));
    assert!(err.message.contains("has mode 0644"), "{}", err.message);
    assert!(err.message.contains("chmod 600"), "{}", err.message);

    let tight = dir.file("tight.key", "hunter2-secret\n", 0o600);
    let c = Config::from_toml(Path::new("t.toml"), &psk_config(&tight), &opts).expect("0600 ok");
    let peer = &c.keyrings["KR1"].peers[0];
    // The trailing newline of `echo KEY > file` is not part of the key.
    assert_eq!(
        peer.psk.as_ref().map(Psk::expose),
        Some(&b"hunter2-secret"[..])
    );
}

#[test]
fn psk_file_owner_refused() {
    let dir = TempDir::new();
    let key = dir.file("k.key", "hunter2-secret", 0o600);
    let opts = LoadOptions {
        secret_owner_uid: my_uid().wrapping_add(1),
        read_files: true,
    };
    let e = Config::from_toml(Path::new("t.toml"), &psk_config(&key), &opts).unwrap_err();
    assert!(
        e.to_string().contains("secret files must be owned by uid"),
        "{e}"
    );
}

#[test]
fn psk_file_missing_or_empty() {
    let dir = TempDir::new();
    let opts = LoadOptions {
        secret_owner_uid: my_uid(),
        read_files: true,
    };
    let empty = dir.file("e.key", "\n", 0o600);
    let e = Config::from_toml(Path::new("t.toml"), &psk_config(&empty), &opts).unwrap_err();
    assert!(e.to_string().contains("is empty"), "{e}");
    let missing = dir.0.join("nope.key");
    let e = Config::from_toml(Path::new("t.toml"), &psk_config(&missing), &opts).unwrap_err();
    assert!(e.to_string().contains("No such file"), "{e}");
}

#[test]
fn secrets_never_printed() {
    let dir = TempDir::new();
    let opts = LoadOptions {
        secret_owner_uid: my_uid(),
        read_files: true,
    };
    let key = dir.file("k.key", "hunter2-secret", 0o600);
    let c = Config::from_toml(Path::new("t.toml"), &psk_config(&key), &opts).expect("valid");
    let debug = format!("{c:?} {c:#?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("Psk(<redacted>)"));
    // A refused key file must not leak its contents into the message either.
    let loose = dir.file("loose.key", "hunter2-secret", 0o640);
    let e = Config::from_toml(Path::new("t.toml"), &psk_config(&loose), &opts).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("hunter2"));
}

#[test]
fn trustpoint_paths_checked() {
    // Real certificate files: loading parses them (a file that is only the right shape is
    // refused, see below).
    let f = certs::tests::files("paths");
    let opts = LoadOptions {
        secret_owner_uid: my_uid(),
        read_files: true,
    };
    let (ca, cert, key) = (
        f.dir.join("ca.pem"),
        f.dir.join("me.pem"),
        f.dir.join("me.key"),
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let src = format!(
        "[trustpoint.TP]\nca = [\"{}\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    let e = Config::from_toml(Path::new("t.toml"), &src, &opts).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (4, 15));
    assert!(e.0[0].message.contains("mode 0644"), "{e}");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::from_toml(Path::new("t.toml"), &src, &opts).expect("valid");
    assert_eq!(c.trustpoints["TP"].ca, vec![ca.clone()]);
    assert!(c.trustpoints["TP"].files.is_some());
    // A certificate file that is not one is reported at `certificate`, as `vtid run` would
    // refuse it.
    let dir = TempDir::new();
    let fake = dir.file("fake.pem", "-----BEGIN CERTIFICATE-----\n", 0o644);
    let src = src.replace(&cert.display().to_string(), &fake.display().to_string());
    let e = Config::from_toml(Path::new("t.toml"), &src, &opts).unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert_eq!((e.0[0].line, e.0[0].column), (3, 15), "{e}");
    assert!(
        e.0[0].message.starts_with("trustpoint.TP.certificate: "),
        "{e}"
    );
}

#[test]
fn routes_take_a_metric_and_float_across_tunnels() {
    // Both spellings; the same prefix into two tunnels at different metrics is the
    // floating-route (second hub) layout and loads.
    let c = parse(&two_tunnels(
        "destination = \"10.0.0.2\"\naddress = \"10.9.0.5/30\"\nprotection = \"P1\"\nroutes = [{ prefix = \"10.1.0.0/24\", metric = 200 }, \"10.2.0.0/24\"]\n",
    ))
    .unwrap();
    let b = &c.tunnels["B"];
    assert_eq!(
        b.routes,
        vec![
            "10.1.0.0/24 metric 200".parse::<Route>().unwrap(),
            "10.2.0.0/24".parse::<Route>().unwrap()
        ]
    );
    assert_eq!(b.routes[0].to_string(), "10.1.0.0/24 metric 200");
    // The same metric twice is refused at the second table's prefix.
    assert_error(
        &two_tunnels(
            "destination = \"10.0.0.2\"\naddress = \"10.9.0.5/30\"\nprotection = \"P1\"\nroutes = [{ prefix = \"10.1.0.0/24\" }]\n",
        ),
        20,
        22,
        "10.1.0.0/24 is already routed into tunnel.A in the main table at the same metric",
    );
}

#[test]
fn route_mistakes_have_positions() {
    assert_error(
        &with_base(
            "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nroutes = [{ prefix = \"10.1.0.0/24\", metric = -1 }]\n",
        ),
        14,
        46,
        "tunnel.A.routes.metric: -1 is out of range",
    );
    assert_error(
        &with_base(
            "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nroutes = [{ prefix = \"10.1.0.1/24\" }]\n",
        ),
        14,
        22,
        "has host bits set",
    );
    // An unknown key in a route table is a parse error, not ignored.
    assert!(
        parse(&with_base(
            "[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nroutes = [{ prefix = \"10.1.0.0/24\", distance = 5 }]\n",
        ))
        .is_err()
    );
}

#[test]
fn dpd_numbers_and_action_reach_the_profile() {
    let c = parse(&with_base(
        "[ike_profile.I]\nkeyring = \"KR1\"\ndpd = { interval = 2, retries = 5, action = \"hold\" }\n[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nike_profile = \"I\"\n",
    ))
    .unwrap();
    let t = &c.tunnels["A"];
    assert_eq!(
        t.ike.dpd,
        Some(Dpd {
            interval: 2,
            retries: 5,
            action: Some(DpdAction::Hold)
        })
    );
    assert_eq!(t.dpd_action(), DpdAction::Hold);
    assert_eq!(
        t.ike.dpd.unwrap().engine(),
        ike::Dpd {
            interval: std::time::Duration::from_secs(2),
            retries: 5
        }
    );
    assert_error(
        &with_base(
            "[ike_profile.I]\nkeyring = \"KR1\"\ndpd = { interval = 2, action = \"reset\" }\n",
        ),
        11,
        32,
        "ike_profile.I.dpd.action: unknown DPD action \"reset\"",
    );
}

#[test]
fn dpd_action_defaults_follow_initiate_and_answering_tunnels_cannot_restart() {
    let tunnel = |initiate: &str, action: &str| {
        with_base(&format!(
            "[ike_profile.I]\nkeyring = \"KR1\"\ndpd = {{ interval = 2{action} }}\n[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nike_profile = \"I\"\n{initiate}"
        ))
    };
    let c = parse(&tunnel("", "")).unwrap();
    assert_eq!(c.tunnels["A"].dpd_action(), DpdAction::Restart);
    let c = parse(&tunnel("initiate = false\n", "")).unwrap();
    assert_eq!(c.tunnels["A"].dpd_action(), DpdAction::Clear);
    assert_error(
        &tunnel("initiate = false\n", ", action = \"restart\""),
        18,
        12,
        "tunnel.A.initiate: false, but its IKE profile's dpd.action is \"restart\"",
    );
}

#[test]
fn mobike_defaults_on_and_can_be_turned_off() {
    let tunnel = |line: &str| {
        with_base(&format!(
            "[ike_profile.I]\nkeyring = \"KR1\"\n{line}[tunnel.A]\nsource = \"eth0\"\ndestination = \"10.0.0.1\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\nike_profile = \"I\"\n"
        ))
    };
    assert!(parse(&tunnel("")).unwrap().tunnels["A"].ike.mobike);
    assert!(
        !parse(&tunnel("mobike = false\n")).unwrap().tunnels["A"]
            .ike
            .mobike
    );
    let e = parse(&tunnel("mobike = \"yes\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains(":11:10") && e.contains("bool"), "{e}");
}

/// The seeds' AES static crypto map (F-E12), re-addressed: two sites 192.0.2.1/.2 protecting
/// 10.1.0.0/24 <-> 10.2.0.0/24.
const CRYPTO_MAP: &str = r#"
[access_list.120]
entries = ["deny ip host 10.1.0.9 any", "permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255"]
[crypto_map.aesmap]
local_address = "192.0.2.1"
[[crypto_map.aesmap.entry]]
seq = 10
match_address = "120"
peers = ["192.0.2.2", "192.0.2.3"]
transform_sets = ["T1"]
pfs = 14
lifetime = { seconds = 2700 }
reverse_route = true
reverse_route_metric = 5
"#;

#[test]
fn crypto_map_is_typed() {
    let c = parse(&with_base(CRYPTO_MAP)).expect("valid");
    let m = &c.crypto_maps["aesmap"];
    assert_eq!(
        m.local,
        LocalTermination::Address("192.0.2.1".parse().unwrap())
    );
    let e = &m.entries[0];
    assert_eq!(e.seq, 10);
    assert_eq!(e.access_list, "120");
    assert_eq!(e.acl.len(), 2);
    assert!(!e.acl[0].permit && e.acl[1].permit);
    assert_eq!(e.acl[1].src.to_string(), "10.1.0.0/24");
    assert_eq!(e.peers.len(), 2);
    assert_eq!(e.ipsec.pfs, Some(DhGroup::Modp2048));
    assert_eq!(e.ipsec.lifetime.seconds, 2700);
    assert_eq!(e.reverse_route, Some(5));
    assert!(!e.per_host && !e.initiate);
    assert!(c.summary().contains("1 crypto map(s) with 1 entr(ies)"));
    assert!(c.warnings().is_empty());
}

#[test]
fn crypto_map_mistakes_each_at_their_place() {
    // An ACL entry selectors cannot hold.
    let src = with_base(&CRYPTO_MAP.replace(
        "\"deny ip host 10.1.0.9 any\"",
        "\"permit tcp any any range 1 9\"",
    ));
    let (_, _, m) = one_error(&src);
    assert!(m.contains("access_list.120.entries[0]: \"range\""), "{m}");
    // A peer that is not an address.
    let (_, _, m) = one_error(&with_base(
        &CRYPTO_MAP.replace("\"192.0.2.3\"", "\"peer-b\""),
    ));
    assert!(m.contains("crypto_map.aesmap.entry[seq 10].peers"), "{m}");
    // No keyring entry covers the peer.
    let src =
        with_base(CRYPTO_MAP).replace("address = \"0.0.0.0/0\"", "address = \"198.51.100.0/24\"");
    let e = errors(&src);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].2.contains("no keyring has an entry for 192.0.2.2"),
        "{e:#?}"
    );
    // Neither interface nor local address.
    let (_, _, m) = one_error(&with_base(
        &CRYPTO_MAP.replace("local_address = \"192.0.2.1\"", ""),
    ));
    assert!(m.contains("needs interface"), "{m}");
    // An ACL with no permit.
    let (_, _, m) = one_error(&with_base(&CRYPTO_MAP.replace(
        "\"permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255\"",
        "\"deny ip any any\"",
    )));
    assert!(m.contains("has no permit entry"), "{m}");
}

#[test]
fn crypto_map_ordering_rules_from_the_seeds() {
    // F-B5: the broader entry first takes the narrower's traffic.
    let two = |first: &str, second: &str| {
        with_base(&format!(
            r#"
[access_list.101]
entries = ["{first}"]
[access_list.102]
entries = ["{second}"]
[crypto_map.mymap]
local_address = "192.0.2.1"
[[crypto_map.mymap.entry]]
seq = 10
match_address = "101"
peers = ["192.168.1.1"]
transform_sets = ["T1"]
[[crypto_map.mymap.entry]]
seq = 20
match_address = "102"
peers = ["192.168.1.2"]
transform_sets = ["T1"]
"#
        ))
    };
    let (_, _, m) = one_error(&two(
        "permit ip 10.0.0.0 0.255.255.255 172.16.0.0 0.15.255.255",
        "permit ip 10.1.1.0 0.0.0.255 172.16.1.0 0.0.0.255",
    ));
    assert!(
        m.contains("give the more specific entry the lower sequence number"),
        "{m}"
    );
    // The seeds' order (specific first) is fine.
    parse(&two(
        "permit ip 10.1.1.0 0.0.0.255 172.16.1.0 0.0.0.255",
        "permit ip 10.0.0.0 0.255.255.255 172.16.0.0 0.15.255.255",
    ))
    .expect("F-B5's own example is valid");
    // F-B6: deny in one entry, permit of the same flow in a later one.
    // The seeds' own F-B6 example: ACL 101 denies 10.1.1.0/24 -> 172.16.1.0/24 before a broad
    // permit, ACL 102 (a later entry) permits exactly it.
    let e = errors(&two(
        "deny ip 10.1.1.0 0.0.0.255 172.16.1.0 0.0.0.255\", \"permit ip 10.0.0.0 0.255.255.255 172.16.0.0 0.15.255.255",
        "permit ip 10.1.1.0 0.0.0.255 172.16.1.0 0.0.0.255",
    ));
    assert!(
        e.iter()
            .any(|x| x.2.contains("is not supported (IOS neither)")),
        "{e:#?}"
    );
    // One ACL for two entries.
    let src = two(
        "permit ip 10.1.1.0/24 172.16.1.0/24",
        "permit ip 10.9.0.0/16 172.16.9.0/24",
    )
    .replace("match_address = \"102\"", "match_address = \"101\"");
    let e = errors(&src);
    assert!(
        e.iter().any(|x| x.2.contains("already used by entry 10")),
        "{e:#?}"
    );
    // A duplicated sequence number.
    let src = two(
        "permit ip 10.1.1.0/24 172.16.1.0/24",
        "permit ip 10.9.0.0/16 172.16.9.0/24",
    )
    .replace("seq = 20", "seq = 10");
    let e = errors(&src);
    assert!(
        e.iter()
            .any(|x| x.2.contains("sequence number 10 is used twice")),
        "{e:#?}"
    );
}

#[test]
fn crypto_map_any_is_warned_and_refused_with_reverse_route() {
    let src = with_base(&CRYPTO_MAP.replace(
        "\"permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255\"",
        "\"permit ip 10.1.0.0 0.0.0.255 any\"",
    ));
    let (_, _, m) = one_error(&src);
    assert!(m.contains("reverse route to 0/0"), "{m}");
    let c = parse(&src.replace("reverse_route = true", "reverse_route = false")).expect("valid");
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("uses any"), "{w:?}");
}

/// A hub's dynamic map (seed F-E5): spokes in 172.16.0.0/16 whose flows fall inside ACL 130.
const DYNAMIC_MAP: &str = r#"
[access_list.130]
entries = ["permit ip 10.0.0.0 0.0.0.255 10.8.0.0 0.7.255.255"]
[ike_profile.SPOKES]
match_identity = ["172.16.0.0/16"]
keyring = "KR1"
[dynamic_map.DYN]
[[dynamic_map.DYN.entry]]
seq = 10
match_address = "130"
transform_sets = ["T1"]
ike_profile = "SPOKES"
reverse_route = true
[crypto_map.hub]
local_address = "192.0.2.1"
[[crypto_map.hub.entry]]
seq = 30
dynamic_map = "DYN"
"#;

#[test]
fn dynamic_map_is_typed_and_must_come_last() {
    let c = parse(&with_base(DYNAMIC_MAP)).expect("valid");
    let d = &c.dynamic_maps["DYN"];
    assert_eq!(d[0].seq, 10);
    assert_eq!(d[0].access_list.as_deref(), Some("130"));
    assert_eq!(d[0].reverse_route, Some(0));
    let e = &c.crypto_maps["hub"].entries[0];
    assert!(
        matches!(&e.kind, EntryKind::Dynamic { name, entries } if name == "DYN" && entries.len() == 1)
    );
    // A static entry after the dynamic one: the dynamic entry must have the highest seq.
    let src = with_base(&format!(
        "{DYNAMIC_MAP}[access_list.140]\nentries = [\"permit ip 10.0.0.0/24 10.9.0.0/24\"]\n\
         [[crypto_map.hub.entry]]\nseq = 40\nmatch_address = \"140\"\npeers = [\"192.0.2.9\"]\n\
         transform_sets = [\"T1\"]\n"
    ));
    let (_, _, m) = one_error(&src);
    assert!(m.contains("must have the highest sequence number"), "{m}");
    // A dynamic entry carries nothing of its own.
    let src = with_base(&DYNAMIC_MAP.replace(
        "dynamic_map = \"DYN\"",
        "dynamic_map = \"DYN\"\npeers = [\"192.0.2.9\"]",
    ));
    let (_, _, m) = one_error(&src);
    assert!(m.contains("takes its settings from the dynamic map"), "{m}");
    // Every key of an entry counts, the metric and the outbound key included.
    let src = with_base(&DYNAMIC_MAP.replace(
        "dynamic_map = \"DYN\"",
        "dynamic_map = \"DYN\"\nreverse_route_metric = 5",
    ));
    let (_, _, m) = one_error(&src);
    assert!(
        m.contains(".reverse_route_metric: an entry with dynamic_map"),
        "{m}"
    );
    // Without an ACL any flow is accepted.
    let c = parse(&with_base(
        &DYNAMIC_MAP.replace("match_address = \"130\"\n", ""),
    ))
    .expect("valid");
    assert!(c.dynamic_maps["DYN"][0].acl.is_none());
    // Entries are checked: an unknown IKE profile.
    let (_, _, m) = one_error(&with_base(
        &DYNAMIC_MAP.replace("ike_profile = \"SPOKES\"", "ike_profile = \"NOPE\""),
    ));
    assert!(
        m.contains("dynamic_map.DYN.entry[seq 10].ike_profile"),
        "{m}"
    );
}

/// A manual entry (seed F-E9) with its key files.
fn manual_map(dir: &TempDir, cipher_hex: &str) -> String {
    let cin = dir.file("in.key", cipher_hex, 0o600);
    let cout = dir.file("out.key", cipher_hex, 0o600);
    format!(
        r#"
[access_list.102]
entries = ["permit ip 10.1.0.0/24 10.2.0.0/24"]
[crypto_map.M]
local_address = "192.0.2.1"
[[crypto_map.M.entry]]
seq = 10
manual = true
match_address = "102"
peers = ["192.0.2.2"]
transform_sets = ["T1"]
session_key_inbound = {{ spi = 256, cipher_file = "{}" }}
session_key_outbound = {{ spi = 257, cipher_file = "{}" }}
"#,
        cin.display(),
        cout.display()
    )
}

#[test]
fn manual_entry_keys_are_read_and_their_lengths_checked() {
    let dir = TempDir::new();
    // aes-gcm-256: 32 key bytes and the 4-byte salt.
    let good = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01020304\n";
    let psk = dir.file("any.key", "k", 0o600);
    let opts = LoadOptions {
        secret_owner_uid: my_uid(),
        ..LoadOptions::default()
    };
    let src =
        with_base(&manual_map(&dir, good)).replace("/etc/vtid/psk/any.key", &psk.to_string_lossy());
    let c = Config::from_toml(Path::new("t.toml"), &src, &opts).expect("valid");
    let EntryKind::Manual(sa) = &c.crypto_maps["M"].entries[0].kind else {
        panic!("not manual");
    };
    assert_eq!((sa.inbound.spi, sa.outbound.spi), (256, 257));
    assert_eq!(
        sa.inbound.cipher.as_ref().map(|k| k.expose().len()),
        Some(36)
    );
    assert!(!format!("{sa:?}").contains("0011"), "a key in Debug");
    // A key of the wrong length for the transform.
    let src = with_base(&manual_map(&dir, "0011"))
        .replace("/etc/vtid/psk/any.key", &psk.to_string_lossy());
    let e = Config::from_toml(Path::new("t.toml"), &src, &opts).unwrap_err();
    let msgs: Vec<String> = e.0.iter().map(|x| x.message.clone()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("the key is 2 bytes; the transform needs 36")),
        "{msgs:?}"
    );
    // Not hex.
    let src =
        with_base(&manual_map(&dir, "zz")).replace("/etc/vtid/psk/any.key", &psk.to_string_lossy());
    let e = Config::from_toml(Path::new("t.toml"), &src, &opts).unwrap_err();
    assert!(
        e.0.iter().any(|x| x.message.contains("is not hexadecimal")),
        "{e}"
    );
}

#[test]
fn manual_entry_shape_is_checked() {
    let dir = TempDir::new();
    let base = manual_map(&dir, "00");
    // SPIs 1-255 are reserved.
    let (_, _, m) = one_error(&with_base(&base.replace("spi = 256", "spi = 255")));
    assert!(m.contains("session_key_inbound.spi"), "{m}");
    // One permit line only.
    let (_, _, m) = one_error(&with_base(&base.replace(
        "entries = [\"permit ip 10.1.0.0/24 10.2.0.0/24\"]",
        "entries = [\"permit ip 10.1.0.0/24 10.2.0.0/24\", \"permit ip 10.3.0.0/24 10.2.0.0/24\"]",
    )));
    assert!(m.contains("exactly one permit line"), "{m}");
    // Both directions' keys.
    let src = with_base(&base)
        .lines()
        .filter(|l| !l.starts_with("session_key_outbound"))
        .collect::<Vec<_>>()
        .join("\n");
    let (_, _, m) = one_error(&src);
    assert!(
        m.contains("needs session_key_inbound and session_key_outbound"),
        "{m}"
    );
    // An IKE entry may not carry session keys.
    let (_, _, m) = one_error(&with_base(&base.replace("manual = true\n", "")));
    assert!(
        m.contains("session keys belong to manual = true entries"),
        "{m}"
    );
}

#[test]
fn additional_key_exchanges_in_every_spelling() {
    use ike::transform::KeMethod;
    let c = parse(
        r#"[ike_proposal.PQ]
encryption = ["aes-gcm-256"]
group = ["x25519"]
additional_key_exchanges = ["ke1_mlkem768|none", "ML-KEM-1024", "ecp256|none"]
"#,
    )
    .expect("valid");
    let p = &c.ike_proposals["PQ"];
    assert_eq!(
        p.additional_key_exchanges,
        vec![
            vec![Some(KeMethod::MlKem768), None],
            vec![Some(KeMethod::MlKem1024)],
            vec![Some(KeMethod::Dh(DhGroup::Ecp256)), None],
        ]
    );
}

#[test]
fn additional_key_exchange_errors_have_positions() {
    let e = errors(
        "[ike_proposal.A]\nencryption = [\"aes-gcm-256\"]\ngroup = [31]\nadditional_key_exchanges = [\"mlkem769\", \"none\", \"ke1_mlkem512\", \"mlkem768|mlkem768\"]\n",
    );
    assert_eq!(e.len(), 4, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (4, 29));
    assert!(
        e[0].2.contains(
            "ike_proposal.A.additional_key_exchanges[0]: unknown key exchange method \"mlkem769\""
        ),
        "{}",
        e[0].2
    );
    assert_eq!((e[1].0, e[1].1), (4, 41));
    assert!(
        e[1].2.contains("\"none\" alone runs no exchange"),
        "{}",
        e[1].2
    );
    assert!(
        e[2].2
            .contains("strongSwan's spelling of ADDKE1, but this is entry 2 (ADDKE3)"),
        "{}",
        e[2].2
    );
    assert!(e[3].2.contains("listed twice"), "{}", e[3].2);
    let e = errors(
        "[ike_proposal.A]\nencryption = [\"aes-gcm-256\"]\ngroup = [31]\nadditional_key_exchanges = [\"mlkem768\",\"mlkem768\",\"mlkem768\",\"mlkem768\",\"mlkem768\",\"mlkem768\",\"mlkem768\",\"mlkem768\"]\n",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].2.contains("at most 7"), "{}", e[0].2);
}

#[test]
fn pfs_additional_key_exchanges_of_an_ipsec_profile() {
    use ike::transform::KeMethod;
    let c = parse(
        r#"[transform_set.T]
esp = "aes-gcm-256"
[ipsec_profile.P]
transform_sets = ["T"]
pfs = "group31"
pfs_additional_key_exchanges = ["ke1_mlkem768"]
"#,
    )
    .expect("valid");
    let p = &c.ipsec_profiles["P"];
    assert_eq!(p.pfs, Some(DhGroup::Curve25519));
    assert_eq!(p.pfs_addke.0[0], Some(KeMethod::MlKem768));
    assert!(p.pfs_addke.0[1..].iter().all(Option::is_none));
    // Absent: none.
    let c = parse(
        "[transform_set.T]\nesp = \"aes-gcm-256\"\n[ipsec_profile.P]\ntransform_sets = [\"T\"]\n",
    )
    .expect("valid");
    assert!(c.ipsec_profiles["P"].pfs_addke.is_empty());
}

#[test]
fn pfs_additional_key_exchange_errors_have_positions() {
    // Without pfs.
    let e = errors(
        "[transform_set.T]\nesp = \"aes-gcm-256\"\n[ipsec_profile.P]\ntransform_sets = [\"T\"]\npfs_additional_key_exchanges = [\"mlkem768\"]\n",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (5, 33));
    assert!(
        e[0].2
            .contains("ipsec_profile.P.pfs_additional_key_exchanges: needs pfs"),
        "{}",
        e[0].2
    );
    // An unknown method, and an optional round (required for a Child SA).
    let e = errors(
        "[transform_set.T]\nesp = \"aes-gcm-256\"\n[ipsec_profile.P]\ntransform_sets = [\"T\"]\npfs = 31\npfs_additional_key_exchanges = [\"mlkem769\", \"mlkem768|none\"]\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (6, 33));
    assert!(
        e[0].2.contains(
            "ipsec_profile.P.pfs_additional_key_exchanges[0]: unknown key exchange method \"mlkem769\""
        ),
        "{}",
        e[0].2
    );
    assert_eq!((e[1].0, e[1].1), (6, 45));
    assert!(e[1].2.contains("one method per round"), "{}", e[1].2);
}

// ---- IKEv1: [isakmp_policy.N] and version = 1 ------------------------------------------------

/// BASE plus an IKEv1 profile and a tunnel using it (the policy is appended by each case).
fn v1_config(policy: &str) -> String {
    with_base(&format!(
        r#"[ike_profile.V1]
version = 1
keyring = "KR1"
match_identity = ["10.0.0.2"]
[tunnel.Tunnel0]
source = "10.0.0.1"
destination = "10.0.0.2"
address = "10.9.0.1/30"
protection = "P1"
ike_profile = "V1"
{policy}"#
    ))
}

#[test]
fn isakmp_policies_in_priority_order_with_ios_defaults() {
    let c = parse(&v1_config(
        r#"[isakmp_policy.20]
encryption = "aes 256"
hash = "sha256"
authentication = "pre-share"
group = 14
[isakmp_policy.10]
encryption = "aes"
hash = "sha512"
authentication = "pre-share"
group = 19
lifetime = 180
"#,
    ))
    .expect("valid IKEv1 configuration");
    assert_eq!(c.ike_profiles["V1"].version, 1);
    let p = &c.isakmp_policies;
    assert_eq!(p.iter().map(|p| p.priority).collect::<Vec<_>>(), [10, 20]);
    assert_eq!(p[0].encr, Encr::AesCbc { key_bits: 128 });
    assert_eq!(p[0].group, DhGroup::Ecp256);
    assert_eq!(p[0].lifetime, std::time::Duration::from_secs(180));
    assert_eq!(p[1].encr, Encr::AesCbc { key_bits: 256 });
    assert_eq!(p[1].hash, ike::v1::keys::HashAlg::Sha256);
    // IOS's default lifetime.
    assert_eq!(p[1].lifetime, std::time::Duration::from_secs(86_400));
    // Profiles without `version` stay IKEv2.
    let c = parse(&with_base("[ike_profile.V2]\nkeyring = \"KR1\"\n")).expect("valid");
    assert_eq!(c.ike_profiles["V2"].version, 2);
}

#[test]
fn the_seeds_isakmp_policy_needs_allow_legacy() {
    let seed = "[isakmp_policy.1]\nencryption = \"3des\"\nhash = \"sha\"\nauthentication = \"pre-share\"\ngroup = 2\n";
    let src = v1_config(seed);
    let e = errors(&src);
    // 3des, sha and group 2, each at its own value (BASE 8 + profile 4 + tunnel 6 lines).
    let at: Vec<(usize, usize)> = e.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(at, [(20, 14), (21, 8), (23, 9)], "{e:#?}");
    assert!(
        e.iter().all(|(_, _, m)| m.contains("allow_legacy")),
        "{e:#?}"
    );
    let c =
        parse(&format!("[global]\nallow_legacy = true\n{src}")).expect("valid with allow_legacy");
    let p = c.isakmp_policies[0];
    assert_eq!(
        (p.encr, p.hash, p.group),
        (
            Encr::TripleDes,
            ike::v1::keys::HashAlg::Sha1,
            DhGroup::Modp1024
        )
    );
    // hash left out is IOS's sha: legacy, so named at the policy without allow_legacy.
    let (l, c, m) = one_error(&v1_config(
        "[isakmp_policy.1]\nencryption = \"aes\"\nauthentication = \"pre-share\"\ngroup = 14\n",
    ));
    assert_eq!((l, c), (19, 16), "{m}");
    assert!(m.contains("IOS's default (sha)"), "{m}");
}

#[test]
fn isakmp_policy_errors_have_positions() {
    // IOS's defaults vtid does not offer: des, rsa-sig, group 1.
    let e = errors(&v1_config("[isakmp_policy.5]\nhash = \"sha256\"\n"));
    assert_eq!(e.len(), 3, "{e:#?}");
    for (key, (l, c, m)) in ["encryption", "authentication", "group"].iter().zip(&e) {
        assert_eq!((*l, *c), (19, 16), "{m}");
        assert!(m.contains(&format!("missing key \"{key}\"")), "{m}");
    }
    let good = "hash = \"sha256\"\nauthentication = \"pre-share\"\ngroup = 14\n";
    assert_error(
        &v1_config(&format!(
            "[isakmp_policy.1]\nencryption = \"aes 512\"\n{good}"
        )),
        20,
        14,
        "unknown encryption \"aes 512\"",
    );
    assert_error(
        &v1_config(
            "[isakmp_policy.1]\nencryption = \"aes\"\nhash = \"sha256\"\nauthentication = \"pre-share\"\ngroup = 31\n",
        ),
        23,
        9,
        "group 31 (Curve25519) has no IKEv1 number",
    );
    assert_error(
        &v1_config(&format!("[isakmp_policy.0]\nencryption = \"aes\"\n{good}")),
        19,
        16,
        "priority, a number from 1 to 10000",
    );
    assert_error(
        &v1_config(&format!(
            "[isakmp_policy.1]\nencryption = \"aes\"\n{good}lifetime = 10\n"
        )),
        24,
        12,
        "10 is out of range; expected 60 to 86400",
    );
    assert_error(
        &v1_config(&format!(
            "[isakmp_policy.1]\nencryption = \"aes\"\n{}",
            good.replace("pre-share", "rsa-encr")
        )),
        22,
        18,
        "unknown authentication \"rsa-encr\"",
    );
}

#[test]
fn ikev1_profiles_refuse_what_ikev1_lacks() {
    // No policy at all.
    assert_error(&v1_config(""), 10, 11, "at least one [isakmp_policy.N]");
    let policy = "[isakmp_policy.1]\nencryption = \"aes\"\nhash = \"sha256\"\nauthentication = \"pre-share\"\ngroup = 14\n";
    assert_error(
        &with_base(&format!(
            "{policy}[ike_profile.V1]\nversion = 3\nkeyring = \"KR1\"\n"
        )),
        15,
        11,
        "3 is not 1 or 2",
    );
    assert_error(
        &with_base(&format!(
            "{policy}[ike_profile.V1]\nversion = 1\nkeyring = \"KR1\"\nproposals = [\"default\"]\n"
        )),
        17,
        14,
        "IKEv2 proposals do not apply",
    );
    // A crypto map entry may use an IKEv1 profile (quick mode per ACL line).
    parse(&with_base(&format!(
        r#"{policy}[ike_profile.V1]
version = 1
keyring = "KR1"
[access_list.A]
entries = ["permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255"]
[crypto_map.M]
local_address = "10.0.0.1"
[[crypto_map.M.entry]]
seq = 10
match_address = "A"
peers = ["10.0.0.2"]
transform_sets = ["T1"]
ike_profile = "V1"
"#
    )))
    .expect("a crypto map over IKEv1 loads");
    // Per-host SA pairs are IKEv2 only: the error points at the key.
    let per_host = format!(
        r#"{policy}[ike_profile.V1]
version = 1
keyring = "KR1"
[access_list.A]
entries = ["permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255"]
[crypto_map.M]
local_address = "10.0.0.1"
[[crypto_map.M.entry]]
seq = 10
match_address = "A"
peers = ["10.0.0.2"]
transform_sets = ["T1"]
ike_profile = "V1"
per_host = true
"#
    );
    // BASE 8 lines, policy 5: `per_host` is on line 27, its value at column 12.
    assert_error(
        &with_base(&per_host),
        27,
        12,
        "per_host: not supported over IKEv1",
    );
}

/// The seeds' IKEv1 hub: `crypto isakmp profile` with `virtual-template` and the wildcard
/// key. Main mode with pre-shared keys picks the key by address (RFC 2409 §5.4), so a
/// keyring entry by identity is refused for such a profile, where the keyring is named;
/// dynamic crypto maps stay IKEv2 only.
#[test]
fn ikev1_virtual_templates_load_and_identity_keys_are_refused() {
    let policy = "[isakmp_policy.1]\nencryption = \"aes\"\nhash = \"sha256\"\nauthentication = \"pre-share\"\ngroup = 14\n";
    let hub = |keyring: &str| {
        with_base(&format!(
            "{policy}[virtual_template.VT1]\nunnumbered = \"lan0\"\nprotection = \"P1\"\n\
             [ike_profile.HUB]\nversion = 1\nkeyring = \"{keyring}\"\n\
             match_identity = [\"any\"]\nvirtual_template = \"VT1\"\n\
             [keyring.BYID]\n[[keyring.BYID.peer]]\nidentity = \"fqdn:spoke.example\"\n\
             psk_file = \"/etc/vtid/psk/s.key\"\n"
        ))
    };
    let c = parse(&hub("KR1")).expect("an IKEv1 template hub loads");
    assert_eq!(c.ike_profiles["HUB"].version, 1);
    assert!(c.ike_profiles["HUB"].template.is_some());
    // BASE 8 lines, policy 5, template 3: `keyring = "BYID"` is on line 19, its value at 11.
    assert_error(
        &hub("BYID"),
        19,
        11,
        "keyring.BYID.peer[0] is keyed by identity, but IKEv1 main mode picks the pre-shared \
         key by the peer's address",
    );
    let dynamic = DYNAMIC_MAP.replace(
        "[ike_profile.SPOKES]\n",
        "[ike_profile.SPOKES]\nversion = 1\n",
    );
    // A dynamic map over IKEv1 (the IOS hub: `crypto dynamic-map` and a 0.0.0.0 key) loads.
    let c = parse(&with_base(&format!("{policy}{dynamic}"))).expect("an IKEv1 dynamic map loads");
    let EntryKind::Dynamic { entries, .. } = &c.crypto_maps["hub"].entries[0].kind else {
        panic!("not a dynamic entry");
    };
    assert_eq!(entries[0].ike.version, 1);
    // Its keyring is held to IKEv1's rule too: main mode picks the key by address.
    let e = errors(&with_base(&format!(
        "{policy}{}[keyring.BYID]\n[[keyring.BYID.peer]]\nidentity = \"fqdn:spoke.example\"\n\
         psk_file = \"/etc/vtid/psk/s.key\"\n",
        dynamic.replace("keyring = \"KR1\"", "keyring = \"BYID\"")
    )));
    assert!(
        e.iter().any(|(_, _, m)| m
            .contains("ike_profile: keyring.BYID.peer[0] is keyed by identity, but IKEv1")),
        "{e:#?}"
    );
}

#[test]
fn ikev1_aggressive_mode_is_opt_in_and_ikev1_only() {
    let policy = "[isakmp_policy.1]\nencryption = \"aes\"\nhash = \"sha256\"\nauthentication = \"pre-share\"\ngroup = 14\n";
    let c = parse(&v1_config(policy)).expect("valid");
    assert!(!c.ike_profiles["V1"].aggressive, "off unless asked for");
    let src = v1_config(policy).replace("version = 1\n", "version = 1\naggressive = true\n");
    let c = parse(&src).expect("valid with aggressive");
    assert!(c.ike_profiles["V1"].aggressive);
    // An IKEv2 profile (version left out, or 2) cannot have it.
    assert_error(
        &with_base("[ike_profile.V2]\nkeyring = \"KR1\"\naggressive = true\n"),
        11,
        14,
        "aggressive mode is IKEv1's; it needs version = 1",
    );
    assert_error(
        &with_base("[ike_profile.V2]\nversion = 2\nkeyring = \"KR1\"\naggressive = true\n"),
        12,
        14,
        "needs version = 1",
    );
}

#[test]
fn ikev1_rsa_sig_policy_with_a_trustpoint_profile() {
    let src = with_base(
        r#"[isakmp_policy.10]
encryption = "aes 256"
hash = "sha256"
authentication = "rsa-sig"
group = 14
[trustpoint.TP]
ca = ["/etc/vtid/ca.pem"]
certificate = "/etc/vtid/me.pem"
private_key = "/etc/vtid/me.key"
[ike_profile.V1]
version = 1
trustpoint = "TP"
local_auth = "rsa-sig"
remote_auth = ["rsa-sig"]
"#,
    );
    let c = parse(&src).expect("valid IKEv1 rsa-sig configuration");
    assert_eq!(c.isakmp_policies[0].auth, ike::v1::AuthMethod::RsaSig);
    assert_eq!(c.ike_profiles["V1"].version, 1);
    // Mixed methods cannot be: IKEv1 authenticates both ends the same way.
    let mixed = src.replace("remote_auth = [\"rsa-sig\"]", "remote_auth = [\"psk\"]");
    let (l, _, m) = one_error(&mixed.replace(
        "trustpoint = \"TP\"",
        "trustpoint = \"TP\"\nkeyring = \"KR1\"",
    ));
    assert_eq!(l, 22, "{m}"); // at local_auth
    assert!(m.contains("both ends with pre-shared keys"), "{m}");
    // ECDSA is not an IKEv1 method here.
    let e = errors(&src.replace("\"rsa-sig\"", "\"ecdsa-sig\""));
    assert!(
        e.iter()
            .any(|(_, _, m)| m.contains("unknown authentication \"ecdsa-sig\"")),
        "{e:#?}"
    );
}

/// `[vici]`: off by default; a socket path and an optional group; a relative path or an
/// unknown key is an error at its position.
#[test]
fn vici_section() {
    assert_eq!(parse(BASE).unwrap().vici, None);
    let c = parse(&format!(
        "{BASE}\n[vici]\nsocket = \"/var/run/charon.vici\"\ngroup = \"frr\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.vici,
        Some(Vici {
            socket: PathBuf::from("/var/run/charon.vici"),
            group: Some("frr".into()),
        })
    );
    let (_, _, msg) = one_error(&format!("{BASE}\n[vici]\nsocket = \"charon.vici\"\n"));
    assert_eq!(msg, "vici.socket: \"charon.vici\" must be an absolute path");
    let (_, _, msg) = one_error(&format!(
        "{BASE}\n[vici]\nsocket = \"/run/charon.vici\"\ngroups = \"frr\"\n"
    ));
    assert!(msg.starts_with("vici: unknown key \"groups\""), "{msg}");
    let (_, _, msg) = one_error(&format!("{BASE}\n[vici]\ngroup = \"frr\"\n"));
    assert!(msg.contains("missing key \"socket\""), "{msg}");
}
