//! `mode = "gre"` and `mode = "mgre"`: settings, SA mode, and seed 003's sharing rule, with
//! each error's exact position.

use super::*;

/// BASE (8 lines) plus a transport set T2 and tunnel set T3 with profiles on them: lines 9-16.
fn gre_base(extra: &str) -> String {
    with_base(&format!(
        "[transform_set.T2]\nesp = \"aes-gcm-256\"\nmode = \"transport\"\n\
         [transform_set.T3]\nesp = \"aes-gcm-256\"\nmode = \"tunnel\"\n\
         [ipsec_profile.PT]\ntransform_sets = [\"T3\"]\n{extra}"
    ))
}
// Appended text starts on line 17.

#[test]
fn p2p_gre_with_key_and_ttl() {
    let c = parse(&gre_base(
        "[tunnel.gre1]\nmode = \"gre\"\nsource = \"192.0.2.1\"\ndestination = \"192.0.2.2\"\n\
         address = \"10.9.0.1/30\"\nprotection = \"P1\"\nkey = 100000\nttl = 64\n",
    ))
    .unwrap();
    let t = &c.tunnels["gre1"];
    assert_eq!(t.mode, TunnelMode::Gre);
    assert_eq!(
        t.gre,
        Some(GreOptions {
            key: Some(100_000),
            ttl: 64,
            // T1 does not say: transport for GRE.
            sa_mode: SaMode::Transport,
        })
    );
    // A VTI keeps no GRE settings, and its unset mode is still tunnel.
    assert_eq!(c.transform_sets["T1"].mode, SaMode::Tunnel);
    assert!(!c.transform_sets["T1"].mode_written);
    assert!(c.mgre_tunnels.is_empty());
}

#[test]
fn gre_defaults_and_explicit_tunnel_mode() {
    let c = parse(&gre_base(
        "[tunnel.gre1]\nmode = \"gre\"\nsource = \"eth0\"\ndestination = \"192.0.2.2\"\n\
         address = \"10.9.0.1/30\"\nprotection = \"PT\"\n",
    ))
    .unwrap();
    let g = c.tunnels["gre1"].gre.unwrap();
    assert_eq!((g.key, g.ttl, g.sa_mode), (None, 255, SaMode::Tunnel));
}

#[test]
fn gre_profile_mixing_modes_is_refused() {
    assert_error(
        &gre_base(
            "[ipsec_profile.PM]\ntransform_sets = [\"T3\", \"T1\"]\n[tunnel.gre1]\nmode = \
             \"gre\"\nsource = \"eth0\"\ndestination = \"192.0.2.2\"\naddress = \
             \"10.9.0.1/30\"\nprotection = \"PM\"\n",
        ),
        24,
        14,
        "has one mode",
    );
}

#[test]
fn vtis_still_refuse_transport_with_the_same_words() {
    // T2 is transport: a VTI refuses it as before; a GRE tunnel takes it.
    let vti = "[ipsec_profile.P2]\ntransform_sets = [\"T2\"]\n[tunnel.T0]\nsource = \
               \"eth0\"\ndestination = \"192.0.2.2\"\naddress = \"10.9.0.1/30\"\nprotection \
               = \"P2\"\n";
    assert_error(
        &gre_base(vti),
        23,
        14,
        "which is mode = \"transport\"; VTIs need tunnel mode",
    );
    let gre = vti.replace("[tunnel.T0]\n", "[tunnel.T0]\nmode = \"gre\"\n");
    let c = parse(&gre_base(&gre)).unwrap();
    assert_eq!(c.tunnels["T0"].gre.unwrap().sa_mode, SaMode::Transport);
}

#[test]
fn gre_settings_on_a_vti_and_misplaced_fields_are_refused() {
    let t = "[tunnel.T0]\nsource = \"eth0\"\ndestination = \"192.0.2.2\"\naddress = \
             \"10.9.0.1/30\"\nprotection = \"P1\"\n";
    assert_error(
        &gre_base(&format!("{t}key = 5\n")),
        22,
        7,
        "tunnel.T0.key: a GRE key needs mode = \"gre\" or \"mgre\"; this tunnel is mode = \"xfrmi\"",
    );
    assert_error(&gre_base(&format!("{t}ttl = 5\n")), 22, 7, "tunnel.T0.ttl");
    assert_error(
        &gre_base(&format!("{t}shared = true\n")),
        22,
        10,
        "tunnel.T0.shared: only mode = \"mgre\" tunnels share their protection",
    );
    let g = t.replace("[tunnel.T0]\n", "[tunnel.T0]\nmode = \"gre\"\n");
    assert_error(
        &gre_base(&format!("{g}shared = true\n")),
        23,
        10,
        "a point-to-point GRE tunnel's SAs are its own",
    );
    assert_error(
        &gre_base(&format!("{g}ttl = 0\n")),
        23,
        7,
        "tunnel.T0.ttl: 0 is out of range; expected 1 to 255",
    );
    assert_error(
        &gre_base(&format!("{g}if_id = 7\n")),
        23,
        9,
        "a GRE tunnel has no if_id",
    );
    assert_error(
        &gre_base(&format!("{g}announce = [\"10.1.0.0/16\"]\n")),
        23,
        13,
        "remove announce",
    );
    // p2p GRE needs a destination.
    let nodest = "[tunnel.T0]\nmode = \"gre\"\nsource = \"eth0\"\naddress = \
                  \"10.9.0.1/30\"\nprotection = \"P1\"\n";
    assert_error(&gre_base(nodest), 17, 9, "needs destination = \"ADDRESS\"");
}

/// Seed 003's hub/spoke: tun0 and tun1 on one source, both shared with one profile.
const SPOKE: &str = "[tunnel.tun0]\nmode = \"mgre\"\nsource = \"eth0\"\naddress = \
                     \"10.0.0.11/24\"\nprotection = \"P1\"\nkey = 100000\nshared = true\nmtu = \
                     1400\n[tunnel.tun1]\nmode = \"mgre\"\nsource = \"eth0\"\naddress = \
                     \"10.0.1.11/24\"\nprotection = \"P1\"\nkey = 100001\nshared = true\n";

#[test]
fn mgre_tunnels_shared_on_one_source() {
    let c = parse(&gre_base(SPOKE)).unwrap();
    assert!(c.tunnels.is_empty(), "mgre tunnels are kept apart");
    let t0 = &c.mgre_tunnels["tun0"];
    assert_eq!(t0.source, TunnelSource::Interface("eth0".into()));
    assert_eq!(t0.key, Some(100_000));
    assert_eq!(t0.ttl, 255);
    assert_eq!(t0.mtu, Some(1400));
    assert!(t0.shared);
    assert_eq!(t0.protection, "P1");
    assert_eq!(t0.sa_mode, SaMode::Transport);
    assert_eq!(t0.ike_profile, None);
    assert!(t0.initiate);
    assert_eq!(c.mgre_tunnels["tun1"].key, Some(100_001));
    let summary = c.summary();
    assert!(
        summary.starts_with("0 tunnel(s)") && summary.ends_with(", 2 mgre tunnel(s)"),
        "{summary}"
    );
}

#[test]
fn seed_003_failure_mode_is_refused() {
    // Without `shared` on the second, its SAs would replace the first's.
    let unshared = SPOKE.replacen("key = 100001\nshared = true\n", "key = 100001\n", 1);
    assert_error(
        &gre_base(&unshared),
        27,
        10,
        "tunnel.tun1.source: tunnel.tun0 is also protected GRE from eth0; two mgre tunnels on \
         one source negotiate SAs for the same GRE packets",
    );
    // Shared, but with different protection.
    let other = SPOKE.replacen(
        "protection = \"P1\"\nkey = 100001",
        "protection = \"PT\"\nkey = 100001",
        1,
    );
    let (l, c, m) = one_error(&gre_base(&other).replace(
        "[ipsec_profile.PT]\ntransform_sets = [\"T3\"]",
        "[ipsec_profile.PT]\ntransform_sets = [\"T2\"]",
    ));
    assert_eq!((l, c), (27, 10), "{m}");
    assert!(m.contains("same protection (now \"P1\" and \"PT\")"), "{m}");
    // The same key on one source: a received packet is ambiguous, shared or not.
    let same_key = SPOKE.replacen("key = 100001", "key = 100000", 1);
    assert_error(
        &gre_base(&same_key),
        27,
        10,
        "both are mgre with key 100000",
    );
    // A destination on mgre.
    let dest = SPOKE.replacen(
        "[tunnel.tun1]\nmode = \"mgre\"\n",
        "[tunnel.tun1]\nmode = \"mgre\"\ndestination = \"192.0.2.9\"\n",
        1,
    );
    assert_error(
        &gre_base(&dest),
        27,
        15,
        "mode = \"mgre\" is multipoint and has no destination",
    );
}

#[test]
fn p2p_gre_tunnels_on_one_source_need_distinct_destinations() {
    let two = |d2: &str| {
        gre_base(&format!(
            "[tunnel.g1]\nmode = \"gre\"\nsource = \"192.0.2.1\"\ndestination = \
             \"192.0.2.2\"\naddress = \"10.9.0.1/30\"\nprotection = \"P1\"\n[tunnel.g2]\nmode = \
             \"gre\"\nsource = \"192.0.2.1\"\ndestination = \"{d2}\"\naddress = \
             \"10.9.1.1/30\"\nprotection = \"P1\"\n"
        ))
    };
    let c = parse(&two("192.0.2.3")).unwrap();
    assert_eq!(c.tunnels.len(), 2);
    // Two tunnels to one destination are already ambiguous as tunnels.
    assert_error(&two("192.0.2.2"), 26, 15, "cannot tell the two apart");
    // An mgre tunnel on a p2p tunnel's source covers its destination too.
    let mixed = gre_base(
        "[tunnel.g1]\nmode = \"gre\"\nsource = \"192.0.2.1\"\ndestination = \"192.0.2.2\"\n\
         address = \"10.9.0.1/30\"\nprotection = \"P1\"\n[tunnel.m1]\nmode = \"mgre\"\nsource = \
         \"192.0.2.1\"\naddress = \"10.9.1.1/24\"\nprotection = \"P1\"\n",
    );
    assert_error(&mixed, 25, 10, "source them from different addresses");
}
