//! `vtid check` as an operator runs it: the built binary on a good and a bad file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use nstest::vtidconf::{Value, VtidConf};

const VTID: &str = env!("CARGO_BIN_EXE_vtid");

/// A scratch directory for this test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("vtid-cli-check-{tag}-{}", std::process::id()));
        fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Result<Output> {
    Command::new(VTID)
        .args(args)
        .output()
        .with_context(|| format!("run vtid {args:?}"))
}

/// One tunnel in the shape of the seeds' c7206 example (PFS group 31, 3600 s / 4608000 kB).
fn good_config(psk: &std::path::Path) -> String {
    let mut c = VtidConf::new();
    c.keyring("KR1", &[("0.0.0.0/0", psk)]);
    c.transform_set("T1", "aes-gcm-256");
    c.ipsec_profile("P1", &["T1"]).set("pfs", 31u32).set(
        "lifetime",
        Value::inline(&[("seconds", 3600), ("kilobytes", 4_608_000)]),
    );
    c.tunnel("Tunnel0")
        .set("source", "10.0.149.203")
        .set("destination", "10.0.149.217")
        .set("address", "10.0.51.203/24")
        .set("protection", "P1")
        .set("routes", &["10.0.36.0/24"]);
    c.render()
}

#[test]
fn check_good_file() -> Result<()> {
    let dir = Scratch::new("good")?;
    let psk = dir.0.join("peer.key");
    fs::write(&psk, "Cisco12345\n")?;
    fs::set_permissions(&psk, fs::Permissions::from_mode(0o600))?;
    let cfg = dir.0.join("vtid.toml");
    fs::write(&cfg, good_config(&psk))?;
    let cfg_s = cfg.to_str().context("utf-8 path")?;
    // Secret files must belong to root; unprivileged runs can only check the structure.
    let root = nix::unistd::getuid().is_root();
    let args: &[&str] = if root {
        &["check", cfg_s]
    } else {
        &["check", "--no-files", cfg_s]
    };
    let out = run(args)?;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.starts_with(&format!("{cfg_s}: ok (1 tunnel(s)")),
        "stdout: {stdout}"
    );
    ensure!(!stdout.contains("Cisco12345"));
    Ok(())
}

#[test]
fn check_bad_file_reports_every_error() -> Result<()> {
    let dir = Scratch::new("bad")?;
    let cfg = dir.0.join("vtid.toml");
    // Three mistakes: a cipher typo (line 2), a wrong profile name (line 14), a bad prefix
    // (line 15).
    fs::write(
        &cfg,
        r#"[transform_set.T1]
esp = "aes-gcm-257"
[ipsec_profile.P1]
transform_sets = ["T1"]
lifetime = { seconds = 3600, kilobytes = 4608000 }
[keyring.KR1]
[[keyring.KR1.peer]]
address = "0.0.0.0/0"
psk_file = "/nonexistent/vtid/peer.key"
[tunnel.Tunnel0]
source = "eth0"
destination = "10.0.149.217"
address = "10.0.51.203/24"
protection = "P2"
routes = ["10.0.36.0/33"]
"#,
    )?;
    let cfg_s = cfg.to_str().context("utf-8 path")?;
    let out = run(&["check", "--no-files", cfg_s])?;
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    ensure!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8(out.stderr)?;
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(lines.len() == 4, "stderr: {stderr}");
    ensure!(lines[0].starts_with(&format!("{cfg_s}:2:7: error: transform_set.T1.esp: unknown cipher \"aes-gcm-257\" (did you mean \"aes-gcm-256\"?)")), "{}", lines[0]);
    ensure!(
        lines[1]
            == format!(
                "{cfg_s}:14:14: error: tunnel.Tunnel0.protection = \"P2\": no ipsec_profile named \"P2\" (did you mean \"P1\"?)"
            ),
        "{}",
        lines[1]
    );
    ensure!(
        lines[2].starts_with(&format!("{cfg_s}:15:11: error: tunnel.Tunnel0.routes:")),
        "{}",
        lines[2]
    );
    ensure!(lines[3] == format!("{cfg_s}: 3 errors"), "{}", lines[3]);

    // Reading the files as well adds the missing PSK file (line 9) to the three.
    let out = run(&["check", cfg_s])?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        stderr.contains(&format!(
            "{cfg_s}:9:12: error: keyring.KR1.peer[0].psk_file: cannot read"
        )),
        "{stderr}"
    );
    ensure!(stderr.ends_with("4 errors\n"), "{stderr}");
    Ok(())
}

/// What `vtid run` would refuse, `vtid check` refuses, at the key: here a second tunnel a
/// responder could not tell from the first, and a profile mixing PSK and signatures.
#[test]
fn check_reports_what_run_would_refuse() -> Result<()> {
    let dir = Scratch::new("parity")?;
    let cfg = dir.0.join("vtid.toml");
    fs::write(
        &cfg,
        r#"[transform_set.T1]
esp = "aes-gcm-256"
[ipsec_profile.P1]
transform_sets = ["T1"]
[keyring.KR1]
[[keyring.KR1.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/any.key"
[tunnel.Tunnel0]
source = "10.0.149.203"
destination = "10.0.149.217"
address = "10.0.51.203/24"
protection = "P1"
[tunnel.Tunnel1]
source = "10.0.149.203"
destination = "10.0.149.217"
address = "10.0.52.203/24"
protection = "P1"
[ike_profile.MIX]
keyring = "KR1"
trustpoint = "TP"
remote_auth = ["rsa-sig"]
[trustpoint.TP]
ca = ["/etc/vtid/ca.pem"]
"#,
    )?;
    let cfg_s = cfg.to_str().context("utf-8 path")?;
    let out = run(&["check", "--no-files", cfg_s])?;
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    let stderr = String::from_utf8(out.stderr)?;
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(lines.len() == 3, "stderr: {stderr}");
    ensure!(
        lines[0].starts_with(&format!(
            "{cfg_s}:16:15: error: tunnel.Tunnel1.destination: tunnel.Tunnel0 already runs from \
             10.0.149.203 to 10.0.149.217"
        )),
        "{}",
        lines[0]
    );
    ensure!(
        lines[1].starts_with(&format!(
            "{cfg_s}:22:16: error: ike_profile.MIX.remote_auth: rsa-sig with local_auth = psk \
             mixes psk and signatures"
        )),
        "{}",
        lines[1]
    );
    ensure!(lines[2] == format!("{cfg_s}: 2 errors"), "{}", lines[2]);
    Ok(())
}

#[test]
fn check_missing_file() -> Result<()> {
    let out = run(&["check", "/nonexistent/vtid.toml"])?;
    ensure!(out.status.code() == Some(1));
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        stderr.starts_with("/nonexistent/vtid.toml: error: cannot read the configuration"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn daemon_commands_without_a_daemon_say_so() -> Result<()> {
    let sock = std::env::temp_dir().join(format!("vtid-none-{}.sock", std::process::id()));
    let s = sock.to_string_lossy();
    for args in [
        &["--socket", &s, "show", "sessions", "--json"][..],
        &["--socket", &s, "up", "Tunnel0"],
        &["--socket", &s, "reload"],
        &["--socket", &s, "restart"],
        &["--socket", &s, "show", "crypto", "session", "detail"],
        &["--socket", &s, "clear", "crypto", "sa", "spi", "0xc0ffee01"],
        &["--socket", &s, "rekey", "ike", "tunnel", "Tunnel0"],
    ] {
        let out = run(args)?;
        ensure!(out.status.code() == Some(1), "{args:?}: {:?}", out.status);
        let err = String::from_utf8(out.stderr)?;
        ensure!(err.contains("cannot reach vtid"), "{args:?}: {err}");
    }
    Ok(())
}

/// Malformed input to the IOS-vocabulary commands is refused before the daemon is asked
/// (clap's usage error, exit 2), naming what is wrong.
#[test]
fn malformed_clear_and_rekey_input_is_refused_up_front() -> Result<()> {
    let sock = std::env::temp_dir().join(format!("vtid-bad-{}.sock", std::process::id()));
    let s = sock.to_string_lossy();
    for (args, says) in [
        (
            &["--socket", &s, "clear", "crypto", "sa", "spi", "xyz"][..],
            "not a 32-bit hex SPI",
        ),
        (
            &[
                "--socket", &s, "clear", "crypto", "session", "remote", "1.2.3",
            ],
            "invalid IP address syntax",
        ),
        (
            &["--socket", &s, "show", "crypto", "ipsec", "sa", "peer", "x"],
            "invalid IP address syntax",
        ),
        (&["--socket", &s, "rekey", "child", "spi", "0"], "SPI 0"),
    ] {
        let out = run(args)?;
        ensure!(out.status.code() == Some(2), "{args:?}: {:?}", out.status);
        let err = String::from_utf8(out.stderr)?;
        ensure!(err.contains(says), "{args:?}: {err}");
        ensure!(
            !err.contains("cannot reach vtid"),
            "{args:?} asked the daemon: {err}"
        );
    }
    Ok(())
}

#[test]
fn version() -> Result<()> {
    let out = run(&["--version"])?;
    ensure!(out.status.success());
    ensure!(String::from_utf8(out.stdout)?.starts_with("vtid "));
    Ok(())
}

/// One end of a two-site crypto map: `local` to `peer`, protecting `acl`.
fn map_end(local: &str, peer: &str, acl: &[&str]) -> String {
    let entries: Vec<String> = acl.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[keyring.K]\n[[keyring.K.peer]]\naddress = \"{peer}/32\"\npsk_file = \"/nonexistent/k\"\n\
         [transform_set.T1]\nesp = \"aes-gcm-256\"\n[access_list.A]\nentries = [{}]\n\
         [crypto_map.M]\nlocal_address = \"{local}\"\n[[crypto_map.M.entry]]\nseq = 10\n\
         match_address = \"A\"\npeers = [\"{peer}\"]\ntransform_sets = [\"T1\"]\n",
        entries.join(", ")
    )
}

#[test]
fn check_peer_config_compares_the_two_ends_crypto_maps() -> Result<()> {
    let dir = Scratch::new("mirror")?;
    let a = dir.0.join("a.toml");
    let b = dir.0.join("b.toml");
    let (a_s, b_s) = (
        a.to_str().context("utf-8")?.to_owned(),
        b.to_str().context("utf-8")?.to_owned(),
    );
    fs::write(
        &a,
        map_end(
            "192.0.2.1",
            "192.0.2.2",
            &[
                "deny ip host 10.1.0.9 10.2.0.0/24",
                "permit ip 10.1.0.0/24 10.2.0.0/24",
            ],
        ),
    )?;
    // The mirror image: no finding, exit 0.
    fs::write(
        &b,
        map_end(
            "192.0.2.2",
            "192.0.2.1",
            &["permit ip 10.2.0.0/24 10.1.0.0/24"],
        ),
    )?;
    let out = run(&["check", "--no-files", &a_s, "--peer-config", &b_s])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(
        !stderr.contains("warning") && !stderr.contains("error"),
        "{stderr}"
    );
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("crypto maps mirror"),
        "{:?}",
        out.stdout
    );
    // Seed F-B7 case 3/4: B protects one host pair of A's subnets. A's flow is the superset:
    // a warning, still exit 0.
    fs::write(
        &b,
        map_end(
            "192.0.2.2",
            "192.0.2.1",
            &["permit ip host 10.2.0.5 host 10.1.0.5"],
        ),
    )?;
    let out = run(&["check", "--no-files", &a_s, "--peer-config", &b_s])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(
        stderr.contains(&format!(
            "{a_s}: warning: crypto_map.M entry 10 (peer 192.0.2.2)"
        )) && stderr.contains("works when the peer initiates"),
        "{stderr}"
    );
    // And from B's side the same pair is the subset.
    let out = run(&["check", "--no-files", &b_s, "--peer-config", &a_s])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(stderr.contains("works when this end initiates"), "{stderr}");
    // Disjoint flows: an error, exit 1.
    fs::write(
        &b,
        map_end(
            "192.0.2.2",
            "192.0.2.1",
            &["permit ip 10.3.0.0/24 10.1.0.0/24"],
        ),
    )?;
    let out = run(&["check", "--no-files", &a_s, "--peer-config", &b_s])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {stderr}",
        out.status
    );
    ensure!(
        stderr.contains(&format!(
            "{a_s}: error: crypto_map.M entry 10 (peer 192.0.2.2): no mirrored entry"
        )),
        "{stderr}"
    );
    // A peer file that fails its own check fails the pair.
    fs::write(&b, "[crypto_map.M]\n")?;
    let out = run(&["check", "--no-files", &a_s, "--peer-config", &b_s])?;
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    Ok(())
}
