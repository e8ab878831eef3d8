//! VICI scenario (VM): vtid's VICI socket driven by strongSwan's own `swanctl`, as an operator
//! (or FRR's nhrpd) drives charon. vtid on `a` has a static tunnel up with strongSwan on `b`;
//! `swanctl --list-sas`, `--terminate`, `--initiate` and `--stats` against vtid's socket, then
//! raw malformed packets, after which the daemon still answers.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::kernel::{self, wait_until};
use nstest::peer::{self, Device, Impl, TunnelEnd};
use nstest::vtid::{Vtid, write_secret};
use nstest::{Netns, TopoSpec, scenario};

fn end(me: u8, initiator: bool) -> TunnelEnd {
    let peer = 3 - me;
    TunnelEnd {
        local: format!("192.0.2.{me}"),
        remote: format!("192.0.2.{peer}"),
        psk: "vici-psk-0123456789abcdef".into(),
        device: Device::Xfrmi {
            name: format!("tun{me}"),
            if_id: 42,
            underlay: nstest::topo::iface_to(if me == 1 { "b" } else { "a" }),
        },
        address: Some(format!("10.255.0.{me}/30")),
        routes: vec![format!("10.{peer}.0.0/24")],
        initiator,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: "aes256gcm16".into(),
        child_lifetime: None,
    }
}

/// Runs `swanctl ARGS --uri unix://SOCK`; stdout, or an error with both streams. swanctl runs
/// in the test's own namespace: a unix socket is found by path from any network namespace.
fn swanctl(sock: &Path, args: &[&str]) -> Result<String> {
    // The command comes first; `--uri` is one of every command's options.
    let out = Command::new("swanctl")
        .args(args)
        .arg("--uri")
        .arg(format!("unix://{}", sock.display()))
        .output()
        .context("run swanctl")?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    ensure!(
        out.status.success(),
        "swanctl {args:?}: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    Ok(stdout)
}

/// vtid's negotiated SAs (SPI 0 entries are larval states from ACQUIREs).
fn sas(ns: &Netns) -> Result<usize> {
    Ok(kernel::xfrm_states(ns)?
        .into_iter()
        .filter(|s| s.spi != 0)
        .count())
}

/// Writes `frame` raw and reads what comes back until the server answers or closes.
fn raw(sock: &Path, frame: &[u8]) -> Result<Vec<u8>> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(frame)?;
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {
            let mut body = vec![0; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut body)?;
            Ok(body)
        }
        // Closed: at once, or with bytes of ours unread (a unix socket then resets).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e.into()),
    }
}

#[test]
#[ignore = "vm"]
fn vm_vici_swanctl_lists_terminates_and_initiates_a_vtid_tunnel() {
    let spec = TopoSpec::new().link("a", "192.0.2.1/24", "b", "192.0.2.2/24");
    scenario("vici-swanctl", spec, |sc| {
        let (ea, eb) = (end(1, true), end(2, false));
        sc.start_peer(
            Impl::Strongswan(nstest::strongswan::StrongswanVersion::Debian12),
            "b",
            &eb,
        )?;
        let dir = sc.dir().join("a");
        std::fs::create_dir_all(&dir)?;
        let sock = dir.join("charon.vici");
        let psk = write_secret(&dir, "psk0.key", &ea.psk)?;
        let config = format!(
            "{}\n[vici]\nsocket = \"{}\"\n",
            nstest::vtid::render(&ea, &psk)?,
            sock.display()
        );
        let v = Vtid::start_config(sc.topo.host("a"), &dir, &config, "tun1")?;
        let a = sc.add_peer("a", peer::vtid_peer(v));
        wait_until("Child SA up", Duration::from_secs(40), || {
            sc.peer(a).is_up()
        })?;
        let ha = sc.topo.host("a");

        // --list-sas renders vtid's session as charon's: name, state, addresses, identities,
        // the Child SA installed with its selectors.
        let list = swanctl(&sock, &["--list-sas"])?;
        for want in [
            "tun1: #",
            "ESTABLISHED, IKEv2",
            "local  '192.0.2.1' @ 192.0.2.1[",
            "remote '192.0.2.2' @ 192.0.2.2[",
            "AES_GCM_16-256",
            "INSTALLED, TUNNEL, ESP:AES_GCM_16-256",
        ] {
            ensure!(list.contains(want), "--list-sas lacks {want:?}:\n{list}");
        }
        let filtered = swanctl(&sock, &["--list-sas", "--ike", "nothing"])?;
        ensure!(
            !filtered.contains("tun1"),
            "the ike filter was ignored:\n{filtered}"
        );

        let stats = swanctl(&sock, &["--stats"])?;
        ensure!(stats.contains("IKE_SAs: 1 total"), "--stats:\n{stats}");

        // --terminate blocks until the IKE SA is gone; the kernel has no SA left, and the
        // tunnel stays down (no renegotiation behind swanctl's back).
        swanctl(&sock, &["--terminate", "--ike", "tun1"])?;
        wait_until("SAs removed", Duration::from_secs(20), || Ok(sas(ha)? == 0))?;
        std::thread::sleep(Duration::from_secs(2));
        ensure!(sas(ha)? == 0, "the tunnel came back after --terminate");

        // --initiate blocks until the Child SA is installed.
        let out = swanctl(&sock, &["--initiate", "--child", "tun1"])?;
        ensure!(out.contains("initiate completed successfully"), "{out}");
        ensure!(sas(ha)? == 2, "{} SAs after --initiate", sas(ha)?);
        let bad = Command::new("swanctl")
            .args(["--initiate", "--child", "nope", "--uri"])
            .arg(format!("unix://{}", sock.display()))
            .output()?;
        let err = String::from_utf8_lossy(&bad.stderr);
        ensure!(
            !bad.status.success() && err.contains("no tunnel or mGRE profile named nope"),
            "{err}"
        );

        // Raw bytes: a request whose key/value runs past the packet gets an errmsg; an
        // oversized length closes the connection; neither stops the daemon.
        let mut frame = vec![0, 0, 0, 0, 0, 5];
        frame.extend_from_slice(b"stats");
        frame.extend_from_slice(&[3, 1, b'k', 0xff, 0xff, b'v']);
        let n = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&n.to_be_bytes());
        let reply = raw(&sock, &frame)?;
        ensure!(
            reply.first() == Some(&1) && String::from_utf8_lossy(&reply).contains("malformed"),
            "no error response: {reply:?}"
        );
        let closed = raw(&sock, &[0x7f, 0, 0, 0, 0])?;
        ensure!(
            closed.is_empty(),
            "an oversized packet was answered: {closed:?}"
        );
        let stats = swanctl(&sock, &["--stats"])?;
        ensure!(
            stats.contains("IKE_SAs: 1 total"),
            "after the bad packets:\n{stats}"
        );
        Ok(())
    });
}
