//! Shared helpers for the kernel tests: a private network namespace per test and `ip` as the
//! independent reader.
#![allow(dead_code)]

use std::future::Future;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `f` on this thread after moving the thread into a fresh network namespace with `lo`
/// up. nextest runs each test in its own process and `cargo test` each on its own thread, and
/// unshare(CLONE_NEWNET) affects only the calling thread, so tests never share kernel state.
pub fn in_fresh_netns<F, Fut>(f: F) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    assert!(
        nix::unistd::getuid().is_root(),
        "kernel tests need root (CAP_NET_ADMIN)"
    );
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    ip(&["link", "set", "lo", "up"])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(f())
}

/// Runs `ip ARGS` (in this thread's namespace: children inherit it) and returns stdout.
pub fn ip(args: &[&str]) -> Result<String> {
    cmd("ip", args)
}

/// Runs a command and returns stdout; fails with stderr on a non-zero exit.
pub fn cmd(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("spawn {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `ip -j ARGS` parsed as JSON.
pub fn ip_json(args: &[&str]) -> Result<serde_json::Value> {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    let s = ip(&a)?;
    Ok(serde_json::from_str(if s.trim().is_empty() {
        "[]"
    } else {
        &s
    })?)
}

/// A name unique to this process and call, for namespaces and interfaces.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named namespace (`ip netns add`) deleted on drop.
pub struct NamedNetns(pub String);

impl NamedNetns {
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique(prefix);
        ip(&["netns", "add", &name])?;
        Ok(NamedNetns(name))
    }

    /// Runs `ip ARGS` inside this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    pub fn netns(&self) -> xfrm::Netns {
        xfrm::Netns::named(&self.0)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}
