//! Certificates from configuration to plan: a trustpoint becomes the engine's certificate
//! authentication, its errors name the file, and template profiles send the certificate's
//! subject (the certificate fixtures are config's, `config::certs::tests`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::Result;
use ike::wire::Identity as IkeIdentity;

use super::{LocalAddrs, build};
use crate::config::certs::tests::{Files, files};
use crate::config::{Config, LoadOptions};

fn config(f: &Files, cert: &str, key: &str, extra: &str) -> String {
    let d = f.dir.display();
    format!(
        "[trustpoint.TP]\nca = [\"{d}/ca.pem\"]\ncertificate = \"{d}/{cert}\"\n\
         private_key = \"{d}/{key}\"\n\n[transform_set.T]\nesp = \"aes-gcm-256\"\n\n\
         [ike_profile.I]\ntrustpoint = \"TP\"\n{extra}\n\n\
         [ipsec_profile.P]\ntransform_sets = [\"T\"]\nike_profile = \"I\"\n\n\
         [tunnel.tun1]\nsource = \"192.0.2.1\"\ndestination = \"192.0.2.2\"\n\
         address = \"10.0.0.1/30\"\nprotection = \"P\"\nroutes = []\n"
    )
}

fn plan(src: &str) -> Result<ike::EndpointConfig> {
    let opts = LoadOptions {
        secret_owner_uid: nix::unistd::getuid().as_raw(),
        read_files: true,
    };
    let cfg =
        Config::from_toml(Path::new("t.toml"), src, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(build(&cfg, &mut BTreeMap::new(), &LocalAddrs::default())?.endpoint)
}

#[test]
fn trustpoint_becomes_certificate_auth() {
    let f = files("ok");
    let ep = plan(&config(
        &f,
        "me.pem",
        "me.key",
        "local_auth = \"ecdsa-sig\"\nlocal_identity = \"dn:O=VTID test, CN=me\"\n\
         match_identity = [\"fqdn:*.example\", \"dn:O=vtid test, CN=peer\"]",
    ))
    .unwrap();
    let peer = &ep.peers[0];
    let ike::AuthConfig::Certificate(auth) = &peer.auth else {
        panic!("not certificate auth: {:?}", peer.auth)
    };
    // The bundle's second certificate is sent as the chain.
    assert_eq!(auth.chain.len(), 1);
    assert_eq!(auth.trust_anchors.len(), 1);
    // Our DN identity is the certificate's subject, byte for byte (RFC 4945 §3.1.5).
    let subject = ike::cert::subject_dn(&auth.certificate).unwrap();
    assert_eq!(peer.local_id, Some(IkeIdentity::DerAsn1Dn(subject)));
    assert!(
        peer.remote_id
            .matches(&IkeIdentity::Fqdn("peer.example".into()))
    );
    assert!(
        !peer
            .remote_id
            .matches(&IkeIdentity::Fqdn("peer.other".into()))
    );
    // DER certificates and PKCS#8 DER keys work the same.
    let ep = plan(&config(&f, "me.der", "me.p8", "local_auth = \"ecdsa-sig\"")).unwrap();
    assert!(matches!(ep.peers[0].auth, ike::AuthConfig::Certificate(_)));
    // Nothing of the key in Debug output.
    let key_pem = fs::read_to_string(f.dir.join("me.key")).unwrap();
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!format!("{ep:?}").contains(body));
}

#[test]
fn trustpoint_errors_name_the_file() {
    let f = files("bad");
    let d = f.dir.display().to_string();
    let err = |cert: &str, key: &str, extra: &str| {
        let extra = format!("local_auth = \"ecdsa-sig\"\n{extra}");
        format!("{:#}", plan(&config(&f, cert, key, &extra)).unwrap_err())
    };
    let e = err("me.pem", "other.key", "");
    let want = format!("private key {d}/other.key does not belong to certificate {d}/me.pem");
    assert!(e.contains(&want), "{e}");
    let e = err("me.key", "me.key", "");
    assert!(
        e.contains(&format!("{d}/me.key contains no certificate")),
        "{e}"
    );
    let e = err(
        "me.pem",
        "me.key",
        "local_identity = \"dn:O=vtid test, CN=else\"",
    );
    assert!(
        e.contains("is not the subject of our certificate (O=vtid test, CN=me)"),
        "{e}"
    );
    // An ECDSA key under rsa-sig.
    let e = format!(
        "{:#}",
        plan(&config(&f, "me.pem", "me.key", "local_auth = \"rsa-sig\"")).unwrap_err()
    );
    assert!(
        e.contains("local_auth is rsa-sig but trustpoint TP's private key is not RSA"),
        "{e}"
    );
    // Each is reported at the key that names the file or the method, as `vtid check`
    // shows it.
    let at = |cert: &str, key: &str, extra: &str| {
        let opts = LoadOptions {
            secret_owner_uid: nix::unistd::getuid().as_raw(),
            read_files: true,
        };
        let e = Config::from_toml(Path::new("t.toml"), &config(&f, cert, key, extra), &opts)
            .unwrap_err();
        assert_eq!(e.len(), 1, "{e}");
        (e.0[0].line, e.0[0].column)
    };
    let ecdsa = "local_auth = \"ecdsa-sig\"";
    assert_eq!(at("me.pem", "other.key", ecdsa), (4, 15));
    assert_eq!(at("me.key", "me.key", ecdsa), (3, 15));
    assert_eq!(at("me.pem", "me.key", "local_auth = \"rsa-sig\""), (11, 14));
    assert_eq!(
        at(
            "me.pem",
            "me.key",
            "local_auth = \"ecdsa-sig\"\nlocal_identity = \"dn:O=vtid test, CN=else\""
        ),
        (12, 18)
    );
}

/// A hub's template profile authenticating with a certificate and a DN identity: every
/// clone's connection sends the certificate's subject as its ID, byte for byte, as static
/// tunnels do (the template planner once passed no subject and refused the DN).
#[test]
fn template_profile_sends_the_certificate_subject() {
    let f = files("template");
    let d = f.dir.display();
    let src = |id: &str| {
        format!(
            "[trustpoint.TP]\nca = [\"{d}/ca.pem\"]\ncertificate = \"{d}/me.pem\"\n\
             private_key = \"{d}/me.key\"\n\n[transform_set.T]\nesp = \"aes-gcm-256\"\n\n\
             [ipsec_profile.P]\ntransform_sets = [\"T\"]\n\n\
             [ike_profile.HUB]\ntrustpoint = \"TP\"\nlocal_auth = \"ecdsa-sig\"\n\
             local_identity = \"{id}\"\nmatch_identity = [\"fqdn:*.example\"]\n\
             virtual_template = \"VT1\"\n\n\
             [virtual_template.VT1]\nunnumbered = \"lan0\"\nprotection = \"P\"\n"
        )
    };
    let links = LocalAddrs {
        links: BTreeMap::from([(
            "lan0".to_string(),
            (1500, vec!["10.0.0.1/24".parse().unwrap()]),
        )]),
        ..Default::default()
    };
    let opts = LoadOptions {
        secret_owner_uid: nix::unistd::getuid().as_raw(),
        read_files: true,
    };
    let plan = |text: &str| -> Result<crate::plan::Plan> {
        let cfg = Config::from_toml(Path::new("t.toml"), text, &opts)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        build(&cfg, &mut BTreeMap::new(), &links)
    };
    let p = plan(&src("dn:O=vtid test, CN=me")).unwrap();
    assert_eq!(p.templates.len(), 1);
    let peer = &p.endpoint.peers[0];
    assert!(peer.name.starts_with("dvti:HUB"), "{}", peer.name);
    let ike::AuthConfig::Certificate(auth) = &peer.auth else {
        panic!("not certificate auth: {:?}", peer.auth)
    };
    let subject = ike::cert::subject_dn(&auth.certificate).unwrap();
    assert_eq!(peer.local_id, Some(IkeIdentity::DerAsn1Dn(subject)));
    assert!(
        peer.remote_id
            .matches(&IkeIdentity::Fqdn("spoke1.example".into()))
    );
    // A DN that is not our certificate's subject is refused with the reason.
    let e = format!(
        "{:#}",
        plan(&src("dn:O=vtid test, CN=someone else")).unwrap_err()
    );
    assert!(e.contains("is not the subject of our certificate"), "{e}");
    assert!(e.contains("ike_profile.HUB.local_identity"), "{e}");
}

/// `config`'s text with `crl = [..]` (files of `f`'s directory) in the trustpoint.
fn with_crl(f: &Files, src: &str, crls: &[&str]) -> String {
    let d = f.dir.display();
    let list: Vec<String> = crls.iter().map(|c| format!("\"{d}/{c}\"")).collect();
    src.replacen(
        "certificate = ",
        &format!("crl = [{}]\ncertificate = ", list.join(", ")),
        1,
    )
}

#[test]
fn crl_files_become_the_trust_anchors_crls() {
    let f = files("crl-ok");
    let src = config(&f, "me.pem", "me.key", "local_auth = \"ecdsa-sig\"");
    // PEM with one CRL, PEM with two, DER with one.
    let ep = plan(&with_crl(&f, &src, &["ca.crl", "two.crl", "revoke-me.crl"])).unwrap();
    let ike::AuthConfig::Certificate(auth) = &ep.peers[0].auth else {
        panic!("not certificate auth")
    };
    let crls = auth.trust_anchors.crls();
    assert_eq!(crls.len(), 4);
    assert_eq!(auth.trust_anchors.name(), "TP");
    assert_eq!(
        crls.iter().map(|c| c.entries()).collect::<Vec<_>>(),
        [0, 0, 1, 1]
    );
    assert_eq!(crls[0].issuer(), "CN=test CA");
    // Without `crl` there are none.
    let ep = plan(&src).unwrap();
    let ike::AuthConfig::Certificate(auth) = &ep.peers[0].auth else {
        panic!("not certificate auth")
    };
    assert!(auth.trust_anchors.crls().is_empty());
}

#[test]
fn crl_errors_point_at_the_entry() {
    let f = files("crl-bad");
    let d = f.dir.display().to_string();
    let src = config(&f, "me.pem", "me.key", "local_auth = \"ecdsa-sig\"");
    let opts = LoadOptions {
        secret_owner_uid: nix::unistd::getuid().as_raw(),
        read_files: true,
    };
    // (line, column, message) of the one error.
    let err = |crls: &[&str]| {
        let e =
            Config::from_toml(Path::new("t.toml"), &with_crl(&f, &src, crls), &opts).unwrap_err();
        assert_eq!(e.len(), 1, "{e}");
        (e.0[0].line, e.0[0].column, e.0[0].message.clone())
    };
    // `crl = [` is 7 columns and each entry `"<d>/x", ` is quoted: the second entry starts
    // after the first and its separator.
    let second = 8 + d.len() + "/ca.crl".len() + 2 + 2;
    let (line, col, m) = err(&["ca.crl", "other.crl"]);
    assert_eq!((line, col), (3, second), "{m}");
    assert!(m.starts_with("trustpoint.TP.crl: "), "{m}");
    assert!(
        m.contains("CRL issuer CN=other CA is none of the trustpoint's CA certificates"),
        "{m}"
    );
    let (line, col, m) = err(&["ca.pem"]);
    assert_eq!((line, col), (3, 8), "{m}");
    assert!(m.contains(&format!("{d}/ca.pem contains no CRL")), "{m}");
    let (_, _, m) = err(&["missing.crl"]);
    assert!(m.contains("cannot read"), "{m}");
    // A DER file that is not a CRL (a certificate).
    let (_, _, m) = err(&["me.der"]);
    assert!(m.contains("not a usable X.509 CRL"), "{m}");
    // A CRL without the CA that signs it.
    let no_ca =
        with_crl(&f, &src, &["ca.crl"]).replacen(&format!("ca = [\"{d}/ca.pem\"]\n"), "", 1);
    let e = Config::from_toml(Path::new("t.toml"), &no_ca, &opts).unwrap_err();
    assert!(
        e.to_string().contains("a CRL needs the CA that signed it"),
        "{e}"
    );
    // Without reading files (`vtid check --no-files`) only the paths' shape is checked.
    let structure = LoadOptions {
        read_files: false,
        ..opts.clone()
    };
    let c = Config::from_toml(
        Path::new("t.toml"),
        &with_crl(&f, &src, &["missing.crl"]),
        &structure,
    )
    .expect("structure only");
    assert_eq!(c.trustpoints["TP"].crl, vec![f.dir.join("missing.crl")]);
    let relative = src.replacen("certificate = ", "crl = [\"ca.crl\"]\ncertificate = ", 1);
    let e = Config::from_toml(Path::new("t.toml"), &relative, &structure).unwrap_err();
    assert!(e.to_string().contains("must be an absolute path"), "{e}");
}

/// A CRL edit is no configuration change for the plans: `plan::diff` rebuilds nothing (no
/// tunnel, template or clone), while the new plan's engine configuration carries the new
/// CRLs for `Command::Reconfigure` to apply to the sessions.
#[test]
fn crl_change_makes_no_plan_difference() {
    let f = files("crl-diff");
    let d = f.dir.display();
    let src = |crl: &str| {
        format!(
            "[trustpoint.TP]\nca = [\"{d}/ca.pem\"]\ncrl = [\"{d}/{crl}\"]\n\
             certificate = \"{d}/me.pem\"\nprivate_key = \"{d}/me.key\"\n\n\
             [transform_set.T]\nesp = \"aes-gcm-256\"\n\n\
             [ipsec_profile.P]\ntransform_sets = [\"T\"]\nike_profile = \"I\"\n\n\
             [ike_profile.I]\ntrustpoint = \"TP\"\nlocal_auth = \"ecdsa-sig\"\n\n\
             [ike_profile.HUB]\ntrustpoint = \"TP\"\nlocal_auth = \"ecdsa-sig\"\n\
             match_identity = [\"fqdn:*.example\"]\nvirtual_template = \"VT1\"\n\n\
             [virtual_template.VT1]\nunnumbered = \"lan0\"\nprotection = \"P\"\n\n\
             [tunnel.tun1]\nsource = \"192.0.2.1\"\ndestination = \"192.0.2.2\"\n\
             address = \"10.0.0.1/30\"\nprotection = \"P\"\nroutes = []\n"
        )
    };
    let links = LocalAddrs {
        links: BTreeMap::from([(
            "lan0".to_string(),
            (1500, vec!["10.0.0.1/24".parse().unwrap()]),
        )]),
        ..Default::default()
    };
    let opts = LoadOptions {
        secret_owner_uid: nix::unistd::getuid().as_raw(),
        read_files: true,
    };
    let mut ids = BTreeMap::new();
    let mut plan = |text: &str| {
        let cfg =
            Config::from_toml(Path::new("t.toml"), text, &opts).unwrap_or_else(|e| panic!("{e}"));
        build(&cfg, &mut ids, &links).unwrap()
    };
    let old = plan(&src("ca.crl"));
    let new = plan(&src("revoke-me.crl"));
    assert_eq!(old.tunnels.len(), 1);
    assert_eq!(old.templates.len(), 1);
    let diff = crate::plan::diff(&old, &new);
    assert!(diff.is_empty(), "{diff:?}");
    let entries = |p: &crate::plan::Plan| -> Vec<usize> {
        p.endpoint
            .peers
            .iter()
            .map(|peer| match &peer.auth {
                ike::AuthConfig::Certificate(c) => c.trust_anchors.crls()[0].entries(),
                _ => panic!("not certificate auth"),
            })
            .collect()
    };
    assert_eq!(entries(&old), [0, 0]);
    assert_eq!(entries(&new), [1, 1]);
    // Control: a change of CA is a difference (the diff can see trustpoint changes).
    let other_ca = src("ca.crl").replace(
        &format!("ca = [\"{d}/ca.pem\"]"),
        &format!("ca = [\"{d}/ca.pem\", \"{d}/me.pem\"]"),
    );
    let changed = plan(&other_ca);
    let diff = crate::plan::diff(&old, &changed);
    assert!(!diff.is_empty(), "{diff:?}");
}

/// The lines `vtid check`, start and reload print for CRLs: stale once the next update
/// (2035-01-01 for the fixtures) has passed.
#[test]
fn crl_report_says_when_a_crl_is_stale() {
    let f = files("crl-report");
    let src = with_crl(
        &f,
        &config(&f, "me.pem", "me.key", "local_auth = \"ecdsa-sig\""),
        &["revoke-me.crl"],
    );
    let opts = LoadOptions {
        secret_owner_uid: nix::unistd::getuid().as_raw(),
        read_files: true,
    };
    let cfg = Config::from_toml(Path::new("t.toml"), &src, &opts).unwrap();
    let fresh = crate::config::crl_report(&cfg, 1_767_225_600); // 2026
    assert_eq!(
        fresh,
        [(
            false,
            "trustpoint TP: CRL of CN=test CA: 1 revoked, next update 2035-01-01 00:00:00 UTC"
                .to_string()
        )]
    );
    let stale = crate::config::crl_report(&cfg, 2_082_758_400); // 2036
    assert_eq!(stale.len(), 1);
    assert!(stale[0].0);
    assert!(
        stale[0]
            .1
            .contains("is stale (next update 2035-01-01 00:00:00 UTC has passed)"),
        "{}",
        stale[0].1
    );
}
