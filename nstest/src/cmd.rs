//! Running external programs (`ip`, `charon`, `swanctl`, `tcpdump`, `vtid`) with errors that
//! say what was run and what it printed.

use std::process::{Command, Output, Stdio};

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

/// Runs `cmd` to completion and returns its raw output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn `{}`", describe(cmd)))
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
