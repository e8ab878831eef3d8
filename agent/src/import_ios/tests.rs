//! IOS fragments with the vtid sections they must give, and the remarks that must come
//! with them. Whole seed configurations are imported and checked by `agent/tests/import_ios.rs`.

use super::*;

fn run(src: &str) -> Imported {
    import(src, &Options::default()).expect("imports")
}

/// The TOML without comment lines and blank lines, for comparing sections.
fn body(toml: &str) -> String {
    toml.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn has_note(i: &Imported, line: usize, why: Why, needle: &str) -> bool {
    i.notes
        .iter()
        .any(|n| n.line == line && n.why == why && n.text.contains(needle))
}

#[test]
fn ikev2_flexvpn_static_tunnel() {
    let i = run("\
crypto ikev2 proposal PROP
 encryption aes-gcm-256 aes-cbc-256
 integrity sha256
 group 19 14
crypto ikev2 policy POL
 proposal PROP
crypto ikev2 keyring KR
 peer SITE-B
  address 192.0.2.2
  pre-shared-key s3cret-key
crypto ikev2 profile IKEP
 match identity remote address 192.0.2.2 255.255.255.255
 identity local fqdn site-a.example
 authentication remote pre-share
 authentication local pre-share
 keyring local KR
 dpd 10 3 on-demand
 lifetime 28800
crypto ipsec transform-set TS esp-gcm 256
crypto ipsec profile IPP
 set transform-set TS
 set pfs group19
 set security-association lifetime seconds 3600
 set ikev2-profile IKEP
interface Tunnel1
 ip address 10.9.0.1 255.255.255.252
 ip mtu 1400
 tunnel source 192.0.2.1
 tunnel mode ipsec ipv4
 tunnel destination 192.0.2.2
 tunnel protection ipsec profile IPP
ip route 10.20.0.0 255.255.0.0 Tunnel1
ip route 10.30.0.0 255.255.0.0 Tunnel1 250
");
    assert_eq!(
        body(&i.toml),
        "\
[keyring.KR]
[[keyring.KR.peer]]
address = \"192.0.2.2/32\"
psk_file = \"/etc/vtid/psk/KR-1.key\"
[ike_proposal.PROP]
encryption = [\"aes-gcm-256\", \"aes-cbc-256\"]
integrity = [\"sha256\"]
group = [19, 14]
[ike_profile.IKEP]
match_identity = [\"192.0.2.2/32\"]
local_identity = \"fqdn:site-a.example\"
keyring = \"KR\"
dpd = { interval = 10, retries = 3, action = \"restart\" }
proposals = [\"PROP\"]
lifetime_seconds = 28800
[transform_set.TS]
esp = \"aes-gcm-256\"
[ipsec_profile.IPP]
transform_sets = [\"TS\"]
pfs = 19
lifetime = { seconds = 3600 }
ike_profile = \"IKEP\"
[tunnel.Tunnel1]
mode = \"xfrmi\"
source = \"192.0.2.1\"
destination = \"192.0.2.2\"
address = \"10.9.0.1/30\"
protection = \"IPP\"
mtu = 1400
routes = [\"10.20.0.0/16\", { prefix = \"10.30.0.0/16\", metric = 250 }]"
    );
    assert_eq!(i.keys.len(), 1);
    assert_eq!(i.keys[0].key.as_str(), "s3cret-key");
    assert!(!i.toml.contains("s3cret"), "a key reached the TOML");
    assert!(
        !format!("{:?}", i.keys).contains("s3cret"),
        "a key reached Debug"
    );
    // Nothing IKEv1 here, so no legacy switch and no IKEv1 remark.
    assert!(!i.toml.contains("allow_legacy"));
    assert!(!i.notes.iter().any(|n| n.text.contains("IKEv1")));
}

const SEED_STATIC_VTI: &str = "\
crypto isakmp policy 1
encr 3des
authentication pre-share
group 2
crypto isakmp key Cisco12345 address 0.0.0.0 0.0.0.0
crypto ipsec transform-set T1 esp-3des esp-sha-hmac
crypto ipsec profile P1
set transform-set T1
!
interface Tunnel0
ip address 10.0.51.217 255.255.255.0
tunnel source 10.0.149.217
tunnel destination 10.0.149.203
tunnel mode ipsec ipv
tunnel protection ipsec profile P1
";

#[test]
fn the_seeds_ikev1_static_vti_stays_ikev1() {
    let i = run(SEED_STATIC_VTI);
    let b = body(&i.toml);
    assert!(b.starts_with("[global]\nallow_legacy = true\n"), "{b}");
    // IOS's defaults filled in where the policy leaves them out (hash sha).
    assert!(
        b.contains(
            "[isakmp_policy.1]\nencryption = \"3des\"\nhash = \"sha\"\n\
             authentication = \"pre-share\"\ngroup = 2"
        ),
        "{b}"
    );
    assert!(!b.contains("[ike_proposal."), "{b}");
    assert!(
        b.contains(
            "[ike_profile.Tunnel0]\nmatch_identity = [\"10.0.149.203\"]\nkeyring = \"default\"\n\
             version = 1"
        ),
        "{b}"
    );
    assert!(
        b.contains("[transform_set.T1]\nesp = \"3des\"\nintegrity = \"sha1\""),
        "{b}"
    );
    assert!(b.contains("ike_profile = \"Tunnel0\""), "{b}");
    assert!(has_note(&i, 1, Why::Decided, "stays an IKEv1 policy"));
    assert!(has_note(
        &i,
        10,
        Why::Decided,
        "over IKEv1 with the ISAKMP policies"
    ));
    // What the import wrote passes vtid's own checker.
    let opts = crate::config::LoadOptions {
        read_files: false,
        ..crate::config::LoadOptions::default()
    };
    let cfg =
        crate::config::Config::from_toml(std::path::Path::new("imported.toml"), &i.toml, &opts);
    assert!(
        cfg.is_ok(),
        "{}\n{}",
        i.toml,
        cfg.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

#[test]
fn the_seeds_ikev1_static_vti_becomes_ikev2_with_its_algorithms_under_ikev2() {
    let opts = Options {
        ikev2: true,
        ..Options::default()
    };
    let i = import(SEED_STATIC_VTI, &opts).expect("imports");
    let b = body(&i.toml);
    assert!(b.starts_with("[global]\nallow_legacy = true\n"), "{b}");
    assert!(
        b.contains(
            "[ike_proposal.ISAKMP1]\nencryption = [\"3des\"]\nintegrity = [\"sha1\"]\ngroup = [2]"
        ),
        "{b}"
    );
    assert!(
        b.contains(
            "[ike_profile.Tunnel0]\nmatch_identity = [\"10.0.149.203\"]\nkeyring = \"default\"\n\
             proposals = [\"ISAKMP1\"]"
        ),
        "{b}"
    );
    assert!(!b.contains("[isakmp_policy."), "{b}");
    assert!(b.contains("ike_profile = \"Tunnel0\""), "{b}");
    // Each translation that changes meaning says so at its line.
    assert!(has_note(&i, 1, Why::Decided, "becomes IKEv2 proposal"));
    assert!(has_note(&i, 5, Why::Decided, "keyring \"default\""));
    assert!(has_note(&i, 14, Why::Decided, "ambiguous (ipv4 or ipv6)"));
    assert!(
        i.toml
            .contains("# line 14: decided: `tunnel mode ipsec ipv` is ambiguous")
    );
}

#[test]
fn isakmp_policy_defaults_are_ioss_and_unsupported_ones_are_named() {
    // Only `authentication pre-share`: IOS fills in des, sha, group 1, none of which vtid has.
    let i = run("crypto isakmp policy 1\n authentication pre-share\n");
    assert!(has_note(&i, 1, Why::Unsupported, "encryption des, group 1"));
    assert!(!i.toml.contains("[ike_proposal"));
}

#[test]
fn gre_crypto_maps_and_easy_vpn_are_reported_by_name() {
    let i = run("\
crypto map MYMAP 10 ipsec-isakmp
 set peer 192.0.2.9
 match address 101
interface Tunnel0
 tunnel source Ethernet0
 tunnel mode gre multipoint
interface Tunnel1
 tunnel source Ethernet0
 tunnel destination 192.0.2.3
crypto isakmp client configuration group g1
 key grouppass
access-list 101 permit ip 10.0.0.0 0.0.0.255 any
");
    // A map applied to no interface does nothing on IOS; its ACL is then a packet filter.
    assert!(has_note(&i, 1, Why::Unsupported, "applied to no interface"));
    // Unprotected GRE (protected GRE imports: dmvpn_spoke_and_p2p_gre_import_as_gre_tunnels).
    assert!(has_note(
        &i,
        4,
        Why::Unsupported,
        "tunnel mode gre multipoint without tunnel protection: plain GRE"
    ));
    assert!(has_note(
        &i,
        7,
        Why::Unsupported,
        "(GRE, IOS's default) and no tunnel protection"
    ));
    assert!(has_note(&i, 10, Why::Unsupported, "Easy VPN"));
    assert!(has_note(&i, 12, Why::Unsupported, "packet filters"));
    assert!(!i.toml.contains("[crypto_map"));
    assert!(!i.toml.contains("[tunnel."));
    assert!(!i.toml.contains("grouppass"), "{}", i.toml);
}

#[test]
fn every_line_is_imported_or_remarked() {
    // A line that is neither part of a section nor remarked would be silently dropped.
    let src = "\
hostname r1
crypto isakmp policy 10
 encryption aes 256
 authentication pre-share
 lifetime 180
 frobnicate yes
crypto isakmp key cisco123 address 10.0.110.1
crypto ipsec transform-set aasset esp-aes 256 esp-sha-hmac
 mode transport
frobnicate globally
";
    let i = run(src);
    for n in [6, 10] {
        assert!(
            i.notes.iter().any(|x| x.line == n && x.why == Why::Unknown),
            "line {n} is not listed: {:?}",
            i.notes
        );
        assert!(i.toml.contains(&format!("# line {n}: not understood")));
    }
    // A transport-mode set nothing uses as a VTI stays transport.
    assert!(i.toml.contains(
        "[transform_set.aasset]\nesp = \"aes-cbc-256\"\nintegrity = \"sha1\"\nmode = \"transport\""
    ));
}

#[test]
fn type_7_keys_are_decoded_and_type_6_are_reported() {
    let i = run("\
crypto keyring KR
 pre-shared-key address 192.0.2.1 key 7 02050D480809
 pre-shared-key address 192.0.2.2 key 6 AbCdEfGh==
");
    assert_eq!(i.keys.len(), 1);
    assert_eq!(i.keys[0].key.as_str(), "cisco");
    assert!(has_note(&i, 2, Why::Decided, "type 7 key decoded"));
    assert!(has_note(
        &i,
        3,
        Why::Unsupported,
        "type 6 key cannot be recovered"
    ));
    // The TOML still names the file, for the operator to fill.
    assert!(i.toml.contains("/etc/vtid/psk/KR-2.key"));
}

#[test]
fn dvti_hub_with_vrf_and_mapped_interfaces() {
    let opts = Options {
        maps: vec![
            parse_map("Lo0=lo-blue").unwrap(),
            parse_map("Gi0/0=wan0").unwrap(),
        ],
        key_dir: "/k".into(),
        input_name: "hub".into(),
        ikev2: false,
    };
    let i = import(
        "\
ip vrf BLUE
 rd 1:1
crypto keyring SPOKES
 pre-shared-key address 0.0.0.0 0.0.0.0 key spokes-key
crypto isakmp policy 10
 encr aes 256
 hash sha256
 authentication pre-share
 group 14
crypto isakmp keepalive 10 3
crypto isakmp profile HUB
 keyring SPOKES
 match identity address 10.1.0.0 255.255.0.0
 virtual-template 1
crypto ipsec transform-set TS esp-aes 256 esp-sha256-hmac
crypto ipsec profile VTP
 set transform-set TS
 set isakmp-profile HUB
interface Virtual-Template1 type tunnel
 ip vrf forwarding BLUE
 ip unnumbered Loopback0
 tunnel source GigabitEthernet0/0
 tunnel mode ipsec ipv4
 tunnel protection ipsec profile VTP
",
        &opts,
    )
    .unwrap();
    let b = body(&i.toml);
    assert!(b.contains("[vrf.BLUE]\ntable = 100"), "{b}");
    assert!(b.contains("[keyring.SPOKES]\n[[keyring.SPOKES.peer]]\naddress = \"0.0.0.0/0\"\npsk_file = \"/k/SPOKES-1.key\""), "{b}");
    assert!(
        b.contains(
            "[ike_profile.HUB]\nmatch_identity = [\"10.1.0.0/16\"]\nkeyring = \"SPOKES\"\n\
             dpd = { interval = 10, retries = 3, action = \"clear\" }\nversion = 1\n\
             virtual_template = \"VT1\""
        ),
        "{b}"
    );
    assert!(
        b.contains(
            "[virtual_template.VT1]\nunnumbered = \"lo-blue\"\nvrf = \"BLUE\"\nprotection = \"VTP\""
        ),
        "{b}"
    );
    // An AES/SHA-256/group 14 policy needs no legacy switch.
    assert!(!b.contains("allow_legacy"));
    assert!(has_note(&i, 1, Why::Decided, "routing table 100"));
    assert!(has_note(&i, 2, Why::Dropped, "BGP/MPLS VPN"));
}

#[test]
fn unmapped_interfaces_are_kept_with_a_remark() {
    let i = run("\
crypto ikev2 keyring KR
 peer P
  address 0.0.0.0 0.0.0.0
  pre-shared-key k
crypto ipsec transform-set TS esp-gcm 256
crypto ipsec profile IPP
 set transform-set TS
interface Tunnel0
 ip unnumbered GigabitEthernet0/1
 tunnel source Gi0/1
 tunnel destination 198.51.100.7
 tunnel mode ipsec ipv4
 tunnel protection ipsec profile IPP
");
    assert!(i.toml.contains("source = \"GigabitEthernet0/1\""));
    assert!(has_note(
        &i,
        8,
        Why::Decided,
        "--map GigabitEthernet0/1=NAME"
    ));
}

#[test]
fn input_with_no_ios_configuration_is_an_error() {
    assert_eq!(
        import("hello\nworld\n", &Options::default()).unwrap_err(),
        ImportError::NothingFound
    );
}

#[test]
fn bad_maps_are_refused() {
    assert!(matches!(parse_map("Gi0/0"), Err(ImportError::BadMap(..))));
    assert!(matches!(
        parse_map("Gi0/0=eth/0"),
        Err(ImportError::BadMap(..))
    ));
    assert!(matches!(parse_map("=eth0"), Err(ImportError::BadMap(..))));
    assert_eq!(
        parse_map("gi0/0=eth0").unwrap(),
        ("GigabitEthernet0/0".to_owned(), "eth0".to_owned())
    );
}

#[test]
fn no_configuration_line_of_any_fixture_is_silently_dropped() {
    let fixtures = [
        include_str!("../../tests/ios/seed-c7206-static-vti.cfg"),
        include_str!("../../tests/ios/seed-c1750-static-vti.cfg"),
        include_str!("../../tests/ios/seed-aes-static-crypto-map.cfg"),
        include_str!("../../tests/ios/seed-dmvpn-hub1.cfg"),
        include_str!("../../tests/ios/seed-dmvpn-spoke1.cfg"),
        include_str!("../../tests/ios/seed-ezvpn-server-dvti.cfg"),
        include_str!("../../tests/ios/seed-ezvpn-client.cfg"),
        include_str!("../../tests/ios/seed-svti-virtual-firewall-fragment.cfg"),
        include_str!("../../tests/ios/flexvpn-dvti-hub.cfg"),
        include_str!("../../tests/ios/crypto-map-site-a.cfg"),
        include_str!("../../tests/ios/crypto-map-site-b.cfg"),
        include_str!("../../tests/ios/crypto-map-dynamic-hub.cfg"),
        include_str!("../../tests/ios/crypto-map-manual.cfg"),
        CRYPTO_MAP_REFUSALS,
    ];
    let mut missed = Vec::new();
    for (k, src) in fixtures.iter().enumerate() {
        let i = run(src);
        for (n, line) in src.lines().enumerate() {
            let t = line.trim();
            let separator = t.is_empty() || t.starts_with('!') || t.chars().all(|c| c == '.');
            let exec = matches!(t, "end" | "enable" | "configure terminal");
            if separator || exec {
                continue;
            }
            if !i.accounted.contains(&(n + 1)) {
                missed.push(format!("fixture {k} line {}: `{t}`", n + 1));
            }
        }
    }
    assert!(
        missed.is_empty(),
        "neither imported nor remarked:\n{}",
        missed.join("\n")
    );
}

#[test]
fn ipv6_vti_and_ipv6_routes() {
    let i = run("\
crypto ikev2 keyring KR
 peer P
  address 2001:db8::2/128
  pre-shared-key k6
crypto ipsec transform-set TS esp-gcm 256
crypto ipsec profile IPP
 set transform-set TS
interface Tunnel6
 ipv6 address 2001:db8:ff::1/64
 tunnel source 2001:db8::1
 tunnel destination 2001:db8::2
 tunnel mode ipsec ipv6
 tunnel protection ipsec profile IPP
ipv6 route 2001:db8:20::/48 Tunnel6
");
    let b = body(&i.toml);
    assert!(
        b.contains("[keyring.KR]\n[[keyring.KR.peer]]\naddress = \"2001:db8::2/128\""),
        "{b}"
    );
    assert!(
        b.contains(
            "[tunnel.Tunnel6]\nmode = \"xfrmi\"\nsource = \"2001:db8::1\"\n\
             destination = \"2001:db8::2\"\naddress = \"2001:db8:ff::1/64\""
        ),
        "{b}"
    );
    assert!(b.contains("routes = [\"2001:db8:20::/48\"]"), "{b}");
}

fn mapped(src: &str) -> Imported {
    let opts = Options {
        maps: vec![
            ("GigabitEthernet0/0".into(), "eth0".into()),
            ("GigabitEthernet0/1".into(), "eth1".into()),
        ],
        key_dir: "/etc/vtid/keys".into(),
        input_name: "test".into(),
        ikev2: false,
    };
    import(src, &opts).expect("imports")
}

#[test]
fn two_site_crypto_map_with_deny_and_permit() {
    let i = mapped(include_str!("../../tests/ios/crypto-map-site-a.cfg"));
    let b = body(&i.toml);
    assert!(
        b.contains(
            "[ike_profile.VPN-10]\nmatch_identity = [\"192.0.2.2\"]\nkeyring = \"default\"\n\
             version = 1\n\
             [access_list.120]\nentries = [\"deny ip host 10.1.0.9 10.2.0.0 0.0.0.255\", \
             \"permit ip 10.1.0.0 0.0.0.255 10.2.0.0 0.0.0.255\"]\n\
             [crypto_map.VPN]\nlocal_address = \"192.0.2.1\"\n[[crypto_map.VPN.entry]]\nseq = 10\n\
             match_address = \"120\"\npeers = [\"192.0.2.2\"]\ntransform_sets = [\"T1\"]\n\
             pfs = 14\nlifetime = { seconds = 2700 }\nreverse_route = true\n\
             ike_profile = \"VPN-10\""
        ),
        "{b}"
    );
    // The ACL no map matches is a packet filter, not imported.
    assert!(has_note(&i, 30, Why::Unsupported, "packet filters"));
    assert!(!b.contains("[access_list.199]"));
    assert!(has_note(&i, 13, Why::Decided, "its address 192.0.2.1"));
    assert!(!i.toml.contains("site-ab-secret"));
    // Site B's named ACL, with its sequence numbers and remark.
    let i = mapped(include_str!("../../tests/ios/crypto-map-site-b.cfg"));
    assert!(
        body(&i.toml).contains(
            "[access_list.SITE-A]\nentries = [\"deny ip 10.2.0.0 0.0.0.255 host 10.1.0.9\", \
             \"permit ip 10.2.0.0 0.0.0.255 10.1.0.0 0.0.0.255\"]"
        ),
        "{}",
        i.toml
    );
}

#[test]
fn dynamic_map_hub() {
    let i = mapped(include_str!("../../tests/ios/crypto-map-dynamic-hub.cfg"));
    let b = body(&i.toml);
    assert!(
        b.contains(
            "[ike_profile.SPOKES-10]\nmatch_identity = [\"any\"]\nkeyring = \"default\"\n\
             dpd = { interval = 10, retries = 3, action = \"clear\" }\nversion = 1\n\
             [access_list.130]\nentries = [\"permit ip 10.0.0.0 0.0.255.255 10.64.0.0 0.0.255.255\"]\n\
             [dynamic_map.SPOKES]\n[[dynamic_map.SPOKES.entry]]\nseq = 10\nmatch_address = \"130\"\n\
             transform_sets = [\"T1\"]\npfs = 14\nreverse_route = true\nike_profile = \"SPOKES-10\""
        ),
        "{b}"
    );
    assert!(
        b.contains(
            "[crypto_map.HUB]\ninterface = \"eth0\"\n[[crypto_map.HUB.entry]]\nseq = 10\n\
             match_address = \"110\"\npeers = [\"198.51.100.2\"]\ntransform_sets = [\"T1\"]\n\
             ike_profile = \"HUB-10\"\n[[crypto_map.HUB.entry]]\nseq = 100\n\
             dynamic_map = \"SPOKES\""
        ),
        "{b}"
    );
    // TED is remarked at the entry's line.
    assert!(has_note(
        &i,
        22,
        Why::Unsupported,
        "Tunnel Endpoint Discovery"
    ));
}

#[test]
fn manual_entry_keys_go_to_files_only() {
    let src = include_str!("../../tests/ios/crypto-map-manual.cfg");
    let i = mapped(src);
    let b = body(&i.toml);
    assert!(
        b.contains(
            "[[crypto_map.MAN.entry]]\nseq = 40\nmanual = true\nmatch_address = \"MANUAL-FLOW\"\n\
             peers = [\"192.0.2.2\"]\ntransform_sets = [\"T1\"]\n\
             session_key_inbound = { spi = 256, cipher_file = \"/etc/vtid/keys/MAN-40-in-cipher.key\", \
             authenticator_file = \"/etc/vtid/keys/MAN-40-in-auth.key\" }\n\
             session_key_outbound = { spi = 257, cipher_file = \"/etc/vtid/keys/MAN-40-out-cipher.key\", \
             authenticator_file = \"/etc/vtid/keys/MAN-40-out-auth.key\" }"
        ),
        "{b}"
    );
    let keys: Vec<(String, &str)> = i
        .keys
        .iter()
        .map(|k| (k.path.display().to_string(), k.key.as_str()))
        .collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(
        keys[0],
        (
            "/etc/vtid/keys/MAN-40-in-cipher.key".to_owned(),
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        )
    );
    // No key material in the TOML, its remarks or the notes.
    for k in &i.keys {
        assert!(!i.toml.contains(k.key.as_str()));
        assert!(!i.notes.iter().any(|n| n.text.contains(k.key.as_str())));
    }
    // The display text of the line is redacted too.
    let (blocks, _) = parse::blocks(src);
    let texts: Vec<String> = blocks
        .iter()
        .flat_map(|b| b.body.iter().map(|l| l.text.clone()))
        .collect();
    assert!(texts.contains(
        &"set session-key inbound esp 256 cipher <redacted> authenticator <redacted>".to_owned()
    ));
}

/// Map entries and ACL lines vtid cannot hold: each refused with the reason, never narrowed
/// or widened.
const CRYPTO_MAP_REFUSALS: &str = "\
crypto isakmp key k1 address 192.0.2.0 255.255.255.0
crypto ipsec transform-set T1 esp-gcm 256
crypto map M 10 ipsec-isakmp
 set peer 192.0.2.2
 set transform-set T1
 match address ODD
crypto map M 20 ipsec-isakmp
 set-peer 192.0.2.3
 set transform-set T1
 match address 150
crypto map M 30 ipsec-isakmp
 set peer 192.0.2.4
 set transform-set T1
 match address 160
crypto map M 40 ipsec-isakmp
 set peer 203.0.113.9
 set transform-set T1
 match address 170
crypto map M 50 ipsec-isakmp
 set peer 192.0.2.5
 set transform-set T1
 match address 180
crypto map M 60 ipsec-isakmp
 set peer 192.0.2.6
 set transform-set T1
 match address 404
crypto map M 70 ipsec-manual
 set peer 192.0.2.7
 set transform-set T1
 match address 190
 set session-key inbound ah 300 0011223344556677
interface GigabitEthernet0/0
 ip address 192.0.2.1 255.255.255.0
 crypto map M
interface GigabitEthernet0/2
 crypto map M
ip access-list extended ODD
 permit tcp 10.1.0.0 0.0.0.255 10.3.0.0 0.0.0.255 range 1 1024
 permit ip 10.1.0.0 0.0.0.255 10.3.0.0 0.0.0.255
access-list 150 permit ip 10.1.0.0 0.0.255.255 10.4.0.0 0.0.255.255
access-list 160 permit ip 10.1.1.0 0.0.0.255 10.4.1.0 0.0.0.255
access-list 170 permit ip 10.1.0.0 0.0.0.255 10.5.0.0 0.0.0.255
access-list 180 deny ip 10.1.0.0 0.255.0.255 10.6.0.0 0.0.0.255
access-list 180 permit ip 10.1.0.0 0.0.255.255 10.6.0.0 0.0.0.255
access-list 190 permit ip 10.1.0.0 0.0.0.255 10.7.0.0 0.0.0.255
";

#[test]
fn crypto_map_entries_vtid_cannot_hold_are_refused_with_the_reason() {
    let i = mapped(CRYPTO_MAP_REFUSALS);
    let b = body(&i.toml);
    // `range`: the ACL and entry 10 go (line 38), never narrowed to the second line.
    assert!(
        has_note(&i, 38, Why::Unsupported, "only \"eq PORT\""),
        "{:?}",
        i.notes
    );
    assert!(has_note(
        &i,
        3,
        Why::Unsupported,
        "access list ODD is not imported"
    ));
    assert!(!b.contains("ODD"), "{b}");
    // The seeds' `set-peer` typo is read, with a remark; entry 20 is imported.
    assert!(has_note(&i, 8, Why::Decided, "read `set-peer 192.0.2.3`"));
    assert!(
        b.contains("seq = 20\nmatch_address = \"150\"\npeers = [\"192.0.2.3\"]"),
        "{b}"
    );
    // F-B5: entry 30's flow is inside entry 20's, which IOS evaluates first.
    assert!(has_note(&i, 11, Why::Unsupported, "seed F-B5"));
    assert!(!b.contains("seq = 30"), "{b}");
    // No key for 203.0.113.9: entry 40 is not imported.
    assert!(has_note(
        &i,
        15,
        Why::Unsupported,
        "no imported key covers peer 203.0.113.9"
    ));
    assert!(!b.contains("seq = 40"), "{b}");
    // A non-contiguous wildcard in a deny: dropping it would widen what is protected.
    assert!(has_note(&i, 43, Why::Unsupported, "not contiguous"));
    assert!(has_note(
        &i,
        43,
        Why::Unsupported,
        "keeps in clear would be protected"
    ));
    assert!(!b.contains("seq = 50"), "{b}");
    // An undefined ACL: IOS leaves the entry incomplete.
    assert!(has_note(
        &i,
        23,
        Why::Unsupported,
        "access list 404 is not defined"
    ));
    // AH session keys, and then no inbound ESP key.
    assert!(has_note(&i, 31, Why::Unsupported, "AH session keys"));
    assert!(has_note(
        &i,
        27,
        Why::Unsupported,
        "no inbound ESP session key"
    ));
    assert!(!b.contains("seq = 70"), "{b}");
    // A map on two interfaces: the first is used, the second remarked.
    assert!(b.contains("[crypto_map.M]\ninterface = \"eth0\""), "{b}");
    assert!(has_note(
        &i,
        36,
        Why::Unsupported,
        "only GigabitEthernet0/0's is imported"
    ));
}

#[test]
fn ipv6_crypto_map_with_an_ipv6_access_list() {
    let i = mapped(
        "\
crypto ikev2 keyring KR
 peer B
  address 2001:db8::2/128
  pre-shared-key k6
crypto ipsec transform-set T1 esp-gcm 256
crypto map ipv6 V6MAP 10 ipsec-isakmp
 set peer 2001:db8::2
 set transform-set T1
 match address V6FLOW
crypto map ipv6 V6MAP 20 ipsec-isakmp
 set peer 2001:db8::2
 set transform-set T1
 match address V6ANY
interface GigabitEthernet0/0
 ipv6 address 2001:db8::1/64
 ipv6 crypto map V6MAP
ipv6 access-list V6FLOW
 sequence 10 permit ipv6 2001:db8:1::/48 2001:db8:2::/48
ipv6 access-list V6ANY
 permit ipv6 any any
",
    );
    let b = body(&i.toml);
    assert!(
        b.contains(
            "[access_list.V6FLOW]\nentries = [\"permit ipv6 2001:db8:1::/48 2001:db8:2::/48\"]\n\
             [crypto_map.V6MAP]\ninterface = \"eth0\"\n[[crypto_map.V6MAP.entry]]\nseq = 10\n\
             match_address = \"V6FLOW\"\npeers = [\"2001:db8::2\"]"
        ),
        "{b}"
    );
    // `any any` carries no family in vtid's entry string: refused, not read as IPv4.
    assert!(has_note(
        &i,
        20,
        Why::Unsupported,
        "reads `any any` as IPv4"
    ));
    assert!(!b.contains("seq = 20"), "{b}");
}

#[test]
fn a_dynamic_map_entry_with_set_peer_matches_only_those_peers() {
    let i = mapped(
        "\
crypto isakmp key k address 0.0.0.0 0.0.0.0
crypto ipsec transform-set T1 esp-gcm 256
crypto dynamic-map D 10
 set peer 203.0.113.7
 set transform-set T1
crypto map M 10 ipsec-isakmp dynamic D
interface GigabitEthernet0/0
 ip address 192.0.2.1 255.255.255.0
 crypto map M
",
    );
    let b = body(&i.toml);
    // Never widened to "any": the peer restriction becomes the profile's identity.
    assert!(
        b.contains("[ike_profile.D-10]\nmatch_identity = [\"203.0.113.7\"]\nkeyring = \"default\""),
        "{b}"
    );
    assert!(!b.contains("\"any\""), "{b}");
}

/// Seed 003's spoke with AES instead of DES: both mGRE tunnels import as `mode = "mgre"`
/// with their keys and `shared`, and pass the sharing rule (same source, same profile, both
/// shared, different keys); a p2p GRE tunnel (no `tunnel mode` line: IOS's default) imports
/// as `mode = "gre"` with its routes, and `shared` on it is remarked as dropped.
#[test]
fn dmvpn_spoke_and_p2p_gre_import_as_gre_tunnels() {
    let src = "\
crypto isakmp policy 1
 encr aes 256
 hash sha256
 authentication pre-share
 group 14
crypto isakmp key cisco47 address 0.0.0.0 0.0.0.0
crypto ipsec transform-set trans2 esp-aes 256 esp-sha256-hmac
 mode transport
crypto ipsec profile vpnprof
 set transform-set trans2
interface Tunnel0
 ip address 10.0.0.11 255.255.255.0
 ip mtu 1400
 ip nhrp network-id 100000
 tunnel source Ethernet0
 tunnel mode gre multipoint
 tunnel key 100000
 tunnel protection ipsec profile vpnprof shared
interface Tunnel1
 ip address 10.0.1.11 255.255.255.0
 tunnel source Ethernet0
 tunnel mode gre multipoint
 tunnel key 100001
 tunnel protection ipsec profile vpnprof shared
interface Tunnel5
 ip address 10.9.0.1 255.255.255.252
 tunnel source 192.0.2.1
 tunnel destination 192.0.2.2
 tunnel ttl 64
 tunnel protection ipsec profile vpnprof shared
ip route 10.20.0.0 255.255.0.0 Tunnel5
";
    let i = run(src);
    let b = body(&i.toml);
    assert!(
        b.contains(
            "[tunnel.Tunnel0]\nmode = \"mgre\"\nsource = \"Ethernet0\"\naddress = \
             \"10.0.0.11/24\"\nprotection = \"vpnprof\"\nkey = 100000\nshared = true\nmtu = 1400"
        ),
        "{b}"
    );
    assert!(
        b.contains("[tunnel.Tunnel1]\nmode = \"mgre\"") && b.contains("key = 100001"),
        "{b}"
    );
    assert!(
        b.contains(
            "[tunnel.Tunnel5]\nmode = \"gre\"\nsource = \"192.0.2.1\"\ndestination = \
             \"192.0.2.2\"\naddress = \"10.9.0.1/30\"\nprotection = \"vpnprof\"\nttl = 64\n\
             routes = [\"10.20.0.0/16\"]"
        ),
        "{b}"
    );
    assert!(
        !i.notes
            .iter()
            .any(|n| n.text.contains("GRE") && n.text.contains("not supported")),
        "{:?}",
        i.notes
    );
    assert!(has_note(
        &i,
        30,
        Why::Dropped,
        "only mGRE tunnels share SAs"
    ));
    // What it gives passes loading: the sharing rule included.
    let cfg = crate::config::Config::from_toml(
        std::path::Path::new("i.toml"),
        &i.toml,
        &crate::config::LoadOptions {
            read_files: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", i.toml));
    assert_eq!(cfg.mgre_tunnels.len(), 2);
    assert!(cfg.mgre_tunnels.values().all(|t| t.shared));
    assert_eq!(cfg.tunnels["Tunnel5"].gre.unwrap().ttl, 64);
}
