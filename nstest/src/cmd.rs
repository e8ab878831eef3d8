//! Running external programs (`ip`, `charon`, `swanctl`, `tcpdump`, `vtid`) with errors that
//! say what was run and what it printed.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Runs `cmd` to completion and returns its stdout; a non-zero exit is an error carrying the
/// command line, exit status and both output streams.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How long one program may run: a `swanctl` whose charon is wedged, or an `ip` waiting on
/// a lock, would otherwise hold its scenario (and the VM suite) until CI's own timeout. No
/// program a scenario runs to completion takes a tenth of this; daemons are spawned, not run.
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` to completion and returns its raw output whatever the exit status; one still
/// running after `COMMAND_LIMIT` (300 s) is killed and is an error naming it.
pub fn output(cmd: &mut Command) -> Result<Output> {
    output_within(cmd, COMMAND_LIMIT)
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut v);
        }
        v
    })
}

fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn `{}`", describe(cmd)))?;
    // Both pipes drained while the program runs, as `Command::output` does: one that fills
    // a pipe buffer would otherwise never exit.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    // The wait blocks on a thread of its own, so a program is seen to end the moment it
    // does (no polling latency on the thousands of `ip` calls a suite makes); past the limit
    // it is killed by its PID, which stays its own until that wait reaps it.
    let pid = child.id();
    let (ended, end) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = ended.send(());
        status
    });
    let timed_out = matches!(
        end.recv_timeout(limit),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
    );
    if timed_out {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let status = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("the wait for `{}` panicked", describe(cmd)))??;
    if timed_out {
        // The readers are left behind: a daemon the program started may hold its pipes.
        bail!("`{}` still running after {limit:?}: killed", describe(cmd));
    }
    let join = |t: std::thread::JoinHandle<Vec<u8>>| t.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

/// Runs a program given as a list of words.
pub fn run_args(args: &[&str]) -> Result<String> {
    let (prog, rest) = args.split_first().context("empty command")?;
    run(Command::new(prog).args(rest))
}

/// The command line of `cmd`, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Fails with a clear message when a program the scenario needs is not installed. Scenario
/// tests call this instead of skipping: a missing prerequisite is a failure, never a pass.
pub fn require_program(name: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found && !std::path::Path::new(name).is_file() {
        bail!(
            "required program `{name}` is not installed (run the README's test command, which installs it)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_collects_both_streams_and_kills_a_program_past_its_limit() {
        let o = output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!(o.stdout, b"out\n");
        assert_eq!(o.stderr, b"err\n");
        assert_eq!(o.status.code(), Some(3));
        // More than a pipe buffer on stdout: drained while the program runs.
        let o = output(Command::new("sh").args(["-c", "head -c 200000 /dev/zero"])).unwrap();
        assert_eq!(o.stdout.len(), 200_000);
        let started = std::time::Instant::now();
        let e = output_within(Command::new("sleep").arg("30"), Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sleep 30` still running after"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed, not waited for"
        );
    }
}
