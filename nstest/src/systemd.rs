//! A private systemd for a scenario: the machine's own `/lib/systemd/systemd` (Debian 12's
//! systemd 252) started as the init of a new PID namespace inside one host's network
//! namespace, so that a unit file (the Debian package's `vtid.service`) is run, restarted and
//! stopped by the real service manager, with `systemctl`. The test VM's own init is
//! virtme-ng's, not systemd.
//!
//! How it is set up, and why:
//! - `unshare --pid --fork --mount-proc --kill-child`: systemd runs as a system manager only
//!   as PID 1, and `--kill-child` takes it (and with it every process of its namespace) down
//!   when [`Systemd`] is dropped and kills `unshare`.
//! - `container=nstest`: systemd then behaves as in a container (no udev, no hardware units,
//!   the cgroup it starts in is its root).
//! - Without CAP_SYS_MODULE (`setpriv --bounding-set=-sys_module`) and in a UTS namespace of
//!   its own: as PID 1 systemd otherwise loads `ip_tables` and `autofs4` and sets the
//!   hostname, for the whole VM. `ip_tables` loaded changes what later scenarios' charon does
//!   (its connmark and forecast plugins then insert iptables rules for marked Child SAs,
//!   and vti tunnels stopped passing traffic), so nothing of this manager may outlive it.
//! - `SYSTEMD_UNIT_PATH` names only the scenario's unit directory (no trailing `:`, so none of
//!   the machine's units are loaded): the manager starts `nstest.target`, which is empty, and
//!   nothing else until told.
//! - `systemctl` runs inside the manager's PID and mount namespaces (`nsenter`): systemd
//!   closes a private-bus connection whose peer it cannot see (a process outside its PID
//!   namespace has no PID there). The VM's `/run` (a tmpfs) is shared all the same, and
//!   dropping [`Systemd`] removes `/run/systemd` again, so later scenarios do not see a booted
//!   systemd.
//! - The manager logs to the kernel's ring buffer (`--log-target=kmsg`): as PID 1 it does not
//!   keep the standard error it was given. [`Systemd::log`] reads its lines back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::assert::wait_until;
use crate::netns::Netns;

/// A private systemd, PID 1 of its PID namespace, in a host's network namespace.
pub struct Systemd {
    unshare: Child,
    /// systemd's PID in the VM's PID namespace (`unshare`'s child).
    pid: u32,
    dir: PathBuf,
}

impl Systemd {
    /// Starts the manager in `ns` with its units in `dir/units` and waits until it answers.
    pub fn boot(ns: &Netns, dir: &Path) -> Result<Self> {
        let units = dir.join("units");
        std::fs::create_dir_all(&units)?;
        std::fs::write(
            units.join("nstest.target"),
            "[Unit]\nDescription=nstest: a private manager with nothing to start\n",
        )?;
        let mut unshare = ns
            .command("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--uts",
                "--kill-child",
                "--",
            ])
            .args(["setpriv", "--bounding-set=-sys_module", "--"])
            .args([
                "/lib/systemd/systemd",
                "--system",
                "--unit=nstest.target",
                "--log-target=kmsg",
                "--show-status=no",
            ])
            .env("container", "nstest")
            .env("SYSTEMD_UNIT_PATH", &units)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start systemd in a PID namespace")?;
        // `ip netns exec` execs `unshare`, whose one child is systemd (`setpriv` execs it).
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let mut pid = None;
        let found = wait_until("systemd started", Duration::from_secs(20), || {
            pid = std::fs::read_to_string(&children)?
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok());
            Ok(pid.is_some())
        });
        let Some(pid) = pid else {
            let _ = unshare.kill();
            let _ = unshare.wait();
            return Err(found.unwrap_err());
        };
        let me = Systemd {
            unshare,
            pid,
            dir: dir.to_path_buf(),
        };
        wait_until("systemd answers", Duration::from_secs(60), || {
            let out = crate::cmd::output(&mut me.command(&["is-system-running"]))?;
            let state = String::from_utf8_lossy(&out.stdout);
            Ok(matches!(state.trim(), "running" | "degraded"))
        })
        .with_context(|| me.log())?;
        Ok(me)
    }

    /// `systemctl ARGS` in the manager's PID and mount namespaces.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid.to_string())
            .args(["-p", "-m", "--", "systemctl"])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Writes unit `name` and, if given, its drop-in `name.d/nstest.conf`, then reloads.
    pub fn install(&self, name: &str, unit: &str, dropin: Option<&str>) -> Result<()> {
        let units = self.dir.join("units");
        std::fs::write(units.join(name), unit)?;
        if let Some(d) = dropin {
            let dd = units.join(format!("{name}.d"));
            std::fs::create_dir_all(&dd)?;
            std::fs::write(dd.join("nstest.conf"), d)?;
        }
        self.systemctl(&["daemon-reload"]).map(drop)
    }

    /// `systemctl ARGS...` against this manager; its stdout, or an error with its output and
    /// the manager's log.
    pub fn systemctl(&self, args: &[&str]) -> Result<String> {
        let out = crate::cmd::output(&mut self.command(args)).context("run systemctl")?;
        if !out.status.success() {
            bail!(
                "systemctl {}: {}\n{}{}\n--- systemd ---\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `systemctl show -P PROPERTY UNIT`, trimmed.
    pub fn property(&self, unit: &str, property: &str) -> Result<String> {
        Ok(self
            .systemctl(&["show", "-P", property, unit])?
            .trim()
            .to_owned())
    }

    /// The manager's own log: its lines in the kernel's ring buffer (as PID 1 of its
    /// namespace it logs as `systemd[1]`).
    pub fn log(&self) -> String {
        let Ok(out) = Command::new("dmesg").output() else {
            return String::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("systemd[1]:"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // SIGKILL to `unshare`; `--kill-child` passes it on to systemd, and the kernel kills
        // the rest of the PID namespace with its init.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let _ = std::fs::remove_dir_all("/run/systemd");
    }
}
