//! Network namespaces owned by a test: created with a unique name, deleted (with every
//! process still inside) on drop, so parallel tests never see each other's hosts.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;

use crate::cmd;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), removed when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `nst<pid>-<n>-<label>` and brings its loopback up. The pid and counter keep
    /// names unique across test processes and threads; the label keeps logs readable.
    pub fn new(label: &str) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("nst{}-{n}-{label}", std::process::id());
        cmd::run_args(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mount path of the namespace, for `setns` or `--netns` style options.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A command that runs `prog` inside this namespace (`ip netns exec NAME prog`).
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Runs `prog args...` inside the namespace and returns stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let (prog, rest) = args.split_first().expect("exec needs a program");
        cmd::run(self.command(prog).args(rest))
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        cmd::run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `ip -j -n NAME args...` and parses the JSON (empty output is an empty array:
    /// `ip -j xfrm` prints nothing for an empty table).
    pub fn ip_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = cmd::run(Command::new("ip").args(["-j", "-n", &self.name]).args(args))?;
        if out.trim().is_empty() {
            return Ok(serde_json::Value::Array(vec![]));
        }
        Ok(serde_json::from_str(&out)?)
    }

    /// Writes a sysctl inside the namespace (`/proc/sys/net` shows the reader's namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside (charon, vtid, tcpdump, ping) before deleting, otherwise
        // the namespace lives on through those processes and their sockets.
        if let Ok(pids) = cmd::run_args(&["ip", "netns", "pids", &self.name]) {
            for pid in pids.split_whitespace() {
                let _ = cmd::run_args(&["kill", "-9", pid]);
            }
        }
        let _ = cmd::run_args(&["ip", "netns", "del", &self.name]);
    }
}
