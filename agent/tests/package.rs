//! The installed Debian package in a VM scenario: `packaging/deb/test` (run by `./x test`)
//! installs the .deb into a fresh Debian 12 tree at `$CARGO_TARGET_DIR/pkg/root`; this runs
//! that tree's `/usr/sbin/vtid` the way `vtid.service` does: root with no capability but
//! CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (the unit's CapabilityBoundingSet) and
//! no_new_privs, with a NOTIFY_SOCKET as `Type=notify` gives it. It must send READY=1 once its
//! control socket answers and the configuration is applied, bring a tunnel up with traffic,
//! apply `vtid reload` (the unit's ExecReload), and on SIGTERM remove every kernel object it
//! created (the unit stops it that way) — unless run with `--keep-on-exit` (VTID_OPTS in
//! /etc/default/vtid), when the tunnel must keep carrying traffic after it exited.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::assert::{pings_pass, shown_spis_in, wait_until};
use nstest::kernel;
use nstest::peer::{Device, Impl, StrongswanVersion, TunnelEnd};
use nstest::topo::iface_to;
use nstest::vtid::{RunWith, Vtid, render, write_secret};
use nstest::{TopoSpec, scenario};

/// `$CARGO_TARGET_DIR/pkg/root`: the test binary lives in `$CARGO_TARGET_DIR/debug/deps`.
fn package_root() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("test binary outside a target dir")?;
    Ok(target.join("pkg/root"))
}

fn end(me: u8, initiator: bool) -> TunnelEnd {
    let (remote, peer) = if me == 1 { ("b", 2) } else { ("a", 1) };
    TunnelEnd {
        local: format!("192.0.2.{me}"),
        remote: format!("192.0.2.{peer}"),
        psk: "package-psk-0123456789abcdef".into(),
        device: Device::Xfrmi {
            name: "Tunnel0".into(),
            if_id: 77,
            underlay: iface_to(remote),
        },
        address: Some(format!("10.255.0.{me}/30")),
        routes: vec![format!("10.{peer}.0.0/24")],
        initiator,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: "aes256gcm16".into(),
        child_lifetime: None,
    }
}

/// A wrapper that runs `bin` with the unit's privileges (CapabilityBoundingSet,
/// AmbientCapabilities, NoNewPrivileges) and its NOTIFY_SOCKET; `keep` adds `--keep-on-exit`
/// to `vtid run` as VTID_OPTS would.
fn unit_wrapper(path: &Path, bin: &Path, notify: &Path, keep: bool) -> Result<PathBuf> {
    // Vtid runs it as `WRAPPER --socket S run --config F` and `WRAPPER --socket S CMD...`.
    let opts = if keep {
        "[ \"$3\" = run ] && set -- \"$@\" --keep-on-exit\n"
    } else {
        ""
    };
    std::fs::write(
        path,
        format!(
            "#!/bin/sh\n{opts}export NOTIFY_SOCKET={}\nexec setpriv \
             --bounding-set=-all,+net_admin,+net_bind_service \
             --inh-caps=-all,+net_admin,+net_bind_service \
             --ambient-caps=-all,+net_admin,+net_bind_service --no-new-privs {} \"$@\"\n",
            notify.display(),
            bin.display()
        ),
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path.to_path_buf())
}

/// Waits for the sd_notify datagram and returns it.
fn wait_ready(sock: &UnixDatagram) -> Result<String> {
    // Generous: start-up under TCG on a loaded machine.
    sock.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .context("no sd_notify message within 60 s")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The capability bounding set of the running vtid in `ns`.
fn cap_bnd(ns: &nstest::Netns) -> Result<String> {
    let pid = ns
        .command("pidof")
        .arg("vtid")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("status of vtid (pid {pid:?})"))?;
    Ok(status
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap_or_default()
        .to_string())
}

#[test]
// `./x test` runs packaging/deb/test before the VM suite.
#[ignore = "vm, after packaging/deb/test"]
fn vm_packaged_vtid_with_the_units_capabilities() {
    let spec = TopoSpec::new()
        .link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
        .lan("a", "10.1.0.1/24")
        .lan("b", "10.2.0.1/24");
    scenario("packaged-vtid", spec, |sc| {
        let root = package_root()?;
        let bin = root.join("usr/sbin/vtid");
        ensure!(
            bin.is_file(),
            "{} is missing: the package test (packaging/deb/test, run by `./x test`) installs \
             it; run that first",
            bin.display()
        );
        // systemd's notify socket stand-in: a datagram socket in the guest-local /tmp (unix
        // sockets do not work on 9p).
        let notify_path = std::env::temp_dir().join("nstest-packaged-vtid.notify");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        let as_unit = unit_wrapper(&sc.dir().join("vtid-as-unit"), &bin, &notify_path, false)?;
        let keeping = unit_wrapper(&sc.dir().join("vtid-keep"), &bin, &notify_path, true)?;

        sc.start_peer(
            Impl::Strongswan(StrongswanVersion::Debian12),
            "b",
            &end(2, false),
        )?;
        let dir = sc.dir().join("a");
        let mut ea = end(1, true);
        let key = write_secret(&dir, "psk.key", &ea.psk)?;
        let with = |binary: PathBuf| RunWith {
            binary: Some(binary),
            ..RunWith::default()
        };
        let ha = sc.topo.host("a");
        let mut v =
            Vtid::start_config_with(ha, &dir, &render(&ea, &key)?, "Tunnel0", with(as_unit))?;
        let mut kept: Option<Vtid> = None;
        let res = (|| -> Result<()> {
            // Type=notify: READY=1 once the control socket answers and the configuration is
            // applied (the tunnel's interface exists with its address).
            let msg = wait_ready(&notify)?;
            ensure!(
                msg.lines().any(|l| l == "READY=1"),
                "sd_notify sent {msg:?}"
            );
            let tunnels = v.show("tunnels")?;
            ensure!(
                tunnels[0]["name"] == "Tunnel0",
                "show tunnels after READY: {tunnels}"
            );
            let addr = ha.ip(&["-br", "addr", "show", "dev", "Tunnel0"])?;
            ensure!(
                addr.contains("10.255.0.1/30"),
                "Tunnel0 after READY: {addr}"
            );

            let version = v.cli(&["--version"])?;
            ensure!(
                version.trim() == format!("vtid {}", env!("CARGO_PKG_VERSION")),
                "packaged binary says {version}"
            );
            // CAP_NET_BIND_SERVICE is bit 10, CAP_NET_ADMIN bit 12.
            let bnd = cap_bnd(ha)?;
            ensure!(
                bnd.ends_with("0000000000001400"),
                "vtid runs with bounding set {bnd:?}"
            );
            wait_until("Child SA up", Duration::from_secs(40), || v.is_up())?;
            pings_pass(
                ha,
                "10.1.0.1",
                "10.2.0.1",
                3,
                "LAN to LAN pings through the packaged vtid",
            )?;

            // ExecReload (`vtid reload`): a route added to the file is applied.
            let old = shown_spis_in(&v)?;
            ea.routes.push("10.3.0.0/24".into());
            std::fs::write(v.config_path(), render(&ea, &key)?)?;
            v.cli(&["reload"])?;
            let route = ha.ip(&["route", "show", "10.3.0.0/24"])?;
            ensure!(
                route.contains("dev Tunnel0"),
                "after reload: route {route:?}"
            );
            // Only `routes` changed: the route is edited in place and the SAs stay (a reload
            // touches only what changed).
            let now = shown_spis_in(&v)?;
            ensure!(
                !old.is_empty() && now == old,
                "a routes-only reload renegotiated: SPIs {old:?} -> {now:?}"
            );
            pings_pass(
                ha,
                "10.1.0.1",
                "10.2.0.1",
                3,
                "LAN to LAN pings after reload",
            )?;

            // systemctl stop (SIGTERM): every kernel object vtid made is gone.
            v.stop()?;
            let states = kernel::xfrm_states(ha)?;
            ensure!(states.is_empty(), "SAs left after stop: {states:?}");
            let links = ha.ip(&["-d", "link", "show", "group", "7654"])?;
            ensure!(
                links.trim().is_empty(),
                "vtid links left after stop: {links}"
            );
            // SPD entries (`dir in|out|fwd`); the IKE sockets' own bypass policies went with
            // the sockets and are listed as "socket in|out" anyway.
            let spd = ha.ip(&["xfrm", "policy"])?;
            ensure!(
                !spd.lines().any(|l| l.trim_start().starts_with("dir ")),
                "policies left after stop: {spd}"
            );

            // VTID_OPTS="--keep-on-exit": stopping leaves the tunnel carrying traffic.
            let k = kept.insert(Vtid::start_config_with(
                ha,
                &dir,
                &render(&ea, &key)?,
                "Tunnel0",
                with(keeping),
            )?);
            let msg = wait_ready(&notify)?;
            ensure!(
                msg.lines().any(|l| l == "READY=1"),
                "sd_notify sent {msg:?}"
            );
            wait_until("Child SA up again", Duration::from_secs(40), || k.is_up())?;
            // Negotiated SAs only (SPI 0 entries are larval states from ACQUIREs).
            let sas = || -> Result<Vec<u32>> {
                Ok(kernel::xfrm_states(ha)?
                    .into_iter()
                    .map(|s| s.spi)
                    .filter(|spi| *spi != 0)
                    .collect())
            };
            let before = sas()?;
            k.stop()?;
            let after = sas()?;
            ensure!(
                !after.is_empty() && after == before,
                "SAs after stop with --keep-on-exit: {after:?} (before: {before:?})"
            );
            let links = ha.ip(&["-d", "link", "show", "group", "7654"])?;
            ensure!(
                links.contains("Tunnel0"),
                "Tunnel0 gone after stop: {links}"
            );
            pings_pass(
                ha,
                "10.1.0.1",
                "10.2.0.1",
                3,
                "LAN to LAN pings after vtid exited with --keep-on-exit",
            )?;
            Ok(())
        })();
        let _ = std::fs::remove_file(&notify_path);
        // Both runs log into the same file (dir/vtid.log).
        res.with_context(|| format!("==== log of the packaged vtid\n{}", v.log()))
    });
}
