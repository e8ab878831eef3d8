//! What scenario tests check, read the way an operator would: SAs and SPD entries with `ip`,
//! interfaces with `ip -j link`, vtid's own view with `vtid show`, and polling for a
//! condition with a deadline and a failure message that names what was awaited.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::Scenario;
use crate::kernel;
use crate::netns::Netns;
use crate::vtid::Vtid;

/// Negotiated SPIs in `ns`. SPI 0 entries are the larval states the kernel adds for an
/// ACQUIRE (xfrm_state_find) until the IKE daemon installs the real SA.
pub fn spis(ns: &Netns) -> Result<BTreeSet<u32>> {
    Ok(kernel::xfrm_states(ns)?
        .into_iter()
        .filter(|s| s.spi != 0)
        .map(|s| s.spi)
        .collect())
}

/// SPIs of the negotiated SAs in `ns` to or from outer address `peer`, in `ip xfrm state`
/// order (a list, so that two SAs with one SPI would show as two).
pub fn spis_with(ns: &Netns, peer: &str) -> Result<Vec<u32>> {
    Ok(kernel::xfrm_states(ns)?
        .into_iter()
        .filter(|s| s.spi != 0 && (s.src == peer || s.dst == peer))
        .map(|s| s.spi)
        .collect())
}

/// Number of negotiated SAs in `ns` (larval SPI 0 states left out, see [`spis`]).
pub fn sa_count(ns: &Netns) -> Result<usize> {
    Ok(kernel::xfrm_states(ns)?
        .into_iter()
        .filter(|s| s.spi != 0)
        .count())
}

/// Number of SPD entries (`dir in|out|fwd`) in `ns`. `ip xfrm policy` also lists the
/// per-socket bypass policies of the IKE sockets (`src ... socket in|out`), which are not SPD
/// entries and come and go with the sockets, so they are not counted.
pub fn policy_count(ns: &Netns) -> Result<usize> {
    Ok(ns
        .ip(&["xfrm", "policy"])?
        .lines()
        .filter(|l| l.trim_start().starts_with("dir "))
        .count())
}

/// Names of the interfaces in `ns` whose `ip -d link` kind is `kind`, sorted.
pub fn links_of_kind(ns: &Netns, kind: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "-d", "link"])?)?;
    let mut out: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["linkinfo"]["info_kind"].as_str() == Some(kind))
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    out.sort();
    Ok(out)
}

/// `s` with each run of digits replaced by one `#`: two looks at a daemon's state compared
/// numbers aside (counters and timers move between them).
pub fn numbers_aside(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

/// The rows of a `vtid show ... --json` answer (an array; anything else has none).
pub fn rows(v: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    v.as_array().into_iter().flatten()
}

/// Inbound SPIs (hex, as shown) of the Child SAs `vtid show sa` lists, in its order.
pub fn shown_spis_in(v: &Vtid) -> Result<Vec<String>> {
    Ok(rows(&v.show("sa")?)
        .filter_map(|r| r["spi_in"].as_str().map(str::to_string))
        .collect())
}

/// Number of tunnels `vtid show tunnels` lists as up.
pub fn tunnels_up(v: &Vtid) -> Result<usize> {
    Ok(rows(&v.show("tunnels")?)
        .filter(|t| t["state"] == "up")
        .count())
}

/// Sends `count` pings from `ns` (source `src`) to `dst` ([`kernel::ping`]); fails, naming
/// `what`, unless every one is answered.
pub fn pings_pass(ns: &Netns, src: &str, dst: &str, count: u32, what: &str) -> Result<()> {
    let got = kernel::ping(ns, src, dst, count)?;
    if got != count {
        bail!("{what}: {got} of {count} pings from {src} to {dst} answered");
    }
    Ok(())
}

/// Like [`pings_pass`] for a path that must be closed: fails, naming `what`, if any of the
/// `count` pings is answered.
pub fn pings_blocked(ns: &Netns, src: &str, dst: &str, count: u32, what: &str) -> Result<()> {
    let got = kernel::ping(ns, src, dst, count)?;
    if got != 0 {
        bail!("{what}: {got} of {count} pings from {src} to {dst} answered, expected none");
    }
    Ok(())
}

/// Polls `cond` until it returns true or `timeout` passes ([`poll_every`]): every 100 ms
/// for the first two seconds, then every 250 ms. Most conditions start a process (`ip`)
/// per look, which under the VM's TCG costs a good part of 100 ms of CPU: a long wait
/// polled at 100 ms kept a vCPU busy that the scenarios beside it needed.
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> Result<bool>) -> Result<()> {
    poll_with(what, timeout, cond, |waited| {
        Duration::from_millis(if waited < Duration::from_secs(2) {
            100
        } else {
            250
        })
    })
}

/// Polls `cond` every `interval` until it returns true; fails once `timeout` has passed with
/// a message naming `what`, the timeout and the last error `cond` returned. `cond` runs at
/// least once, and once more after the deadline, so a slow condition still gets its full
/// time.
pub fn poll_every(
    what: &str,
    timeout: Duration,
    interval: Duration,
    cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    poll_with(what, timeout, cond, |_| interval)
}

/// [`poll_every`] with the pause after each look chosen by how long it has waited so far.
fn poll_with(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
    interval: impl Fn(Duration) -> Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let last_err = match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if start.elapsed() >= timeout {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(interval(start.elapsed()));
    }
}

/// Waits up to `timeout` for each of the scenario's `peers` to report its Child SA up.
pub fn wait_peers_up(sc: &Scenario, peers: &[usize], timeout: Duration) -> Result<()> {
    for &p in peers {
        wait_until("Child SA up", timeout, || sc.peer(p).is_up())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_once_true() {
        let mut n = 0;
        poll_every(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                n += 1;
                Ok(n == 3)
            },
        )
        .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn poll_times_out_naming_what_and_the_last_error() {
        let e = poll_every(
            "the impossible",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || bail!("still no"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("waiting for the impossible"), "{e}");
        assert!(e.contains("last error: still no"), "{e}");
        let e = wait_until("never", Duration::ZERO, || Ok(false)).unwrap_err();
        assert_eq!(e.to_string(), "timed out after 0ns waiting for never");
    }

    #[test]
    fn rows_of_a_non_array_are_empty() {
        assert_eq!(rows(&serde_json::json!({"a": 1})).count(), 0);
        assert_eq!(rows(&serde_json::json!([1, 2])).count(), 2);
    }
}
