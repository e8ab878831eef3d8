//! systemd integration. Readiness (sd_notify protocol): when started as `Type=notify`,
//! systemd sets NOTIFY_SOCKET and waits for "READY=1", which we send once the control socket
//! answers and the configuration is applied; without NOTIFY_SOCKET this does nothing. And on
//! SIGTERM, whether the stop is the first half of a `systemctl restart` ([`restart_job`]),
//! which the daemon then makes hitless (restart.rs).

/// Sends READY=1 to systemd, if it is listening.
pub fn ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    // Abstract-namespace sockets ("@...") are not reachable through a path; systemd uses a
    // filesystem path for services, which is what we support.
    if let Err(e) = sock.send_to(b"READY=1", &path) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// The systemd service this process runs as (`vtid.service`), if systemd started it: systemd
/// sets `INVOCATION_ID` for a unit's processes (systemd 232 and later) and puts them in the
/// unit's cgroup, whose last path component is the unit's name (`0::/system.slice/vtid.service`
/// in /proc/self/cgroup on the unified hierarchy, `1:name=systemd:/…` on the legacy one).
pub fn own_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    unit_of_cgroup(&cgroup)
}

fn unit_of_cgroup(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .filter_map(|path| path.rsplit('/').next())
        .find(|name| name.ends_with(".service"))
        .map(str::to_owned)
}

/// Whether systemd stops `unit` in order to start it again (`systemctl restart`, and
/// `try-restart` or `reload-or-restart`, which systemd turns into a restart job of an active
/// unit): while it stops the unit, the unit's job is of type `restart`; it becomes a start
/// job only once the stop has finished. A plain stop (`systemctl stop`, system shutdown) has
/// a job of type `stop`, and `systemctl kill` none. Only the unit's main process counts: a
/// vtid started from inside another service (whose cgroup and `INVOCATION_ID` it inherits)
/// is not what that service's restart is about. Asked of `systemctl`, each call bounded: a
/// stop must not hang on a busy manager.
pub fn restart_job(unit: &str) -> anyhow::Result<bool> {
    let main_pid = systemctl(&["show", "--property=MainPID", "--value", "--", unit])?;
    if main_pid.trim() != std::process::id().to_string() {
        return Ok(false);
    }
    let jobs = systemctl(&[
        "list-jobs",
        "--no-legend",
        "--no-pager",
        "--full",
        "--",
        unit,
    ])?;
    Ok(has_restart_job(&jobs, unit))
}

/// `systemctl ARGS`' standard output; an error if it fails or takes over 3 s.
fn systemctl(args: &[&str]) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let what = || format!("systemctl {}", args.join(" "));
    let mut child = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", what()))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    // Its output is a few lines, well under a pipe's buffer: it cannot block on writing
    // before it exits.
    while child.try_wait().context("wait for systemctl")?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{} did not answer within 3 s", what());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().context("read systemctl")?;
    anyhow::ensure!(
        out.status.success(),
        "{}: {} {}",
        what(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `list-jobs` prints one job per line: id, unit, type, state.
fn has_restart_job(list: &str, unit: &str) -> bool {
    list.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        matches!(
            f.as_slice(),
            [_, u, "restart" | "try-restart" | "reload-or-restart", ..] if *u == unit
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_from_cgroup() {
        let unified = "0::/system.slice/vtid.service\n";
        assert_eq!(unit_of_cgroup(unified).as_deref(), Some("vtid.service"));
        let legacy =
            "12:pids:/system.slice/vtid.service\n1:name=systemd:/system.slice/vtid.service\n";
        assert_eq!(unit_of_cgroup(legacy).as_deref(), Some("vtid.service"));
        assert_eq!(unit_of_cgroup("0::/user.slice/session-3.scope\n"), None);
        assert_eq!(unit_of_cgroup("0::/\n"), None);
    }

    #[test]
    fn restart_job_is_told_from_a_stop() {
        let restart = "1893 vtid.service restart running\n";
        assert!(has_restart_job(restart, "vtid.service"));
        assert!(!has_restart_job(restart, "vtid-other.service"));
        assert!(!has_restart_job(
            "1893 vtid.service stop running\n",
            "vtid.service"
        ));
        assert!(!has_restart_job("", "vtid.service"));
        // Another unit's restart job, listed with ours.
        let both = "17 frr.service restart running\n18 vtid.service stop waiting\n";
        assert!(!has_restart_job(both, "vtid.service"));
    }
}
