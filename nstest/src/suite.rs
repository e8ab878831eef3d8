//! Running the scenario suite in one VM boot.
//!
//! Scenario tests are ordinary `#[test]`s marked `#[ignore = "vm"]` whose names start with
//! `vm_`; that is the only use of `#[ignore]` in the workspace. On the host they show up as
//! ignored. [`run_suite`] builds every test binary on the host, boots the VM once and, inside,
//! runs each binary with `--ignored` ([`run_inside`]). Inside the VM a missing prerequisite is
//! a failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::vm::Kernel;

/// Named subsets of the scenarios (`nstest vm-suite --subset NAME`).
///
/// `second-kernel`: what `./x test` runs on the 6.12 kernel after the whole suite on 6.1,
/// one or two scenarios per capability so that one more boot stays short: interop with
/// strongSwan 6 (Debian 13's pairing with 6.12) both ways, static VTIs, dynamic VTIs, ESP offload (netdevsim built for that
/// kernel; the if_id-on-inbound-offload decision; what netdevsim and the kernel refuse), VRFs,
/// the packaged binary, SA direction (XFRMA_SA_DIR, 6.10+), and ML-KEM hybrid IKE against
/// strongSwan 6 (Debian 13's pairing: kernel 6.12, strongSwan 6.0). Every name must match a
/// scenario, or the run fails.
pub const SUBSETS: &[(&str, &[&str])] = &[(
    "second-kernel",
    &[
        "vm_vtid_xfrmi_initiates_to_strongswan_vti::debian13",
        "vm_strongswan_xfrmi_initiates_to_vtid_vti::debian13",
        "vm_dvti_hub_three_spokes",
        "vm_offload_template_clone_offloads",
        "vm_vrf_two_customers_overlapping_prefixes_front_door_vrf",
        "vm_packaged_vtid_with_the_units_capabilities",
        "vm_sa_direction_detected_and_used",
        "vm_offload_crypto_on_netdevsim",
        "vm_policy_packet_offload_refused_without_driver_support",
        "vm_pq_vtid_initiates_to_strongswan6_and_rekeys_both_sas",
    ],
)];

/// The scenarios of subset `name` (see [`SUBSETS`]).
pub fn subset(name: &str) -> Result<&'static [&'static str]> {
    SUBSETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, list)| *list)
        .with_context(|| {
            let names: Vec<&str> = SUBSETS.iter().map(|(n, _)| *n).collect();
            format!(
                "no scenario subset {name:?} (there is {})",
                names.join(", ")
            )
        })
}

/// One test binary to run inside the VM.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TestBinary {
    /// Path of the compiled test executable.
    pub exe: PathBuf,
    /// Package directory: libtest binaries run with it as the working directory, as cargo does.
    pub dir: PathBuf,
    /// Human name, `package::target`.
    pub name: String,
}

/// Builds all test binaries of the workspace (`cargo test --no-run`) and lists them.
pub fn build_test_binaries(workspace: &Path) -> Result<Vec<TestBinary>> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let manifest = v["manifest_path"].as_str().unwrap_or_default();
        let dir = Path::new(manifest)
            .parent()
            .unwrap_or(workspace)
            .to_path_buf();
        let pkg = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = v["target"]["name"].as_str().unwrap_or_default();
        bins.push(TestBinary {
            exe: exe.into(),
            dir,
            name: format!("{pkg}::{target}"),
        });
    }
    if bins.is_empty() {
        bail!("cargo listed no test binaries");
    }
    Ok(bins)
}

/// Host side: build, boot `kernel` once, run every `vm_` scenario inside (or those matching
/// one of `filter`'s comma-separated substrings), report.
pub fn run_suite(
    workspace: &Path,
    nstest_exe: &Path,
    filter: Option<&str>,
    kernel: &Kernel,
) -> Result<()> {
    let bins = build_test_binaries(workspace)?;
    // Under the target dir cargo builds into, so concurrent suites with their own
    // CARGO_TARGET_DIR never overwrite each other's binary list.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let state = target.join("nstest-vm");
    std::fs::create_dir_all(&state)?;
    let list = state.join("binaries.json");
    std::fs::write(&list, serde_json::to_vec_pretty(&bins)?)?;
    // netdevsim (ESP offload scenarios) is built on the host against the VM kernel's headers;
    // a failure here fails the suite: it is a prerequisite, never a reason to skip.
    let ko = crate::netdevsim::build(&target, kernel)
        .context("build netdevsim for the offload scenarios")?;
    // Debian 13's strongSwan 6 (the second interop peer) likewise, from its cached tree.
    let swan6 = crate::strongswan::debian13_tree(workspace, &target)
        .context("make the Debian 13 strongSwan tree for the interop scenarios")?;
    let filter_arg = filter.map(|f| format!(" --filter {f}")).unwrap_or_default();
    let script = format!(
        "export {}={} {}={}; {} vm-inner --list {}{filter_arg}",
        crate::netdevsim::KO_ENV,
        ko.display(),
        crate::strongswan::DEBIAN13_ROOT_ENV,
        swan6.display(),
        nstest_exe.display(),
        list.display()
    );
    let started = std::time::Instant::now();
    let status = crate::vm::run_on(kernel, &script, &[&state])?;
    eprintln!(
        "nstest: VM suite on {} took {:.0?}",
        kernel.release,
        started.elapsed()
    );
    if !status.success() {
        bail!("VM scenario suite failed ({status})");
    }
    Ok(())
}

/// Binaries whose scenarios are each one tunnel between two daemons, idle most of the time
/// (IKE round trips, retransmission timers, pings at an interval), with no flood, no timing
/// target and no shared kernel-wide state: they run more scenarios at once than the default
/// two, which keeps the suite's wall time within CI's budget.
const WIDE: &[(&str, usize)] = &[
    ("agent::ikev1", 4),
    ("agent::ikev1_auth", 3),
    ("agent::ikev1_hub", 3),
    ("agent::interop", 3),
    ("agent::pq", 3),
    ("agent::cryptomap", 3),
    ("agent::show_clear", 3),
    ("agent::import_ios", 3),
    ("agent::ikev1_natt", 3),
    ("agent::ikev1_rekey", 3),
    ("agent::rekey_loss", 2),
    ("agent::hitless_restart", 2),
    ("agent::vici", 3),
    ("agent::gre", 3),
    ("agent::dmvpn", 3),
    ("agent::multipoint", 2),
];

/// Binaries that run alone, with no other binary's scenarios beside them: floods and rate
/// limits whose figures another binary's load would move (`dos`), netdevsim's bus and module,
/// which are kernel-wide (`offload`, and `vm_kernel`'s offload refusals), timers measured
/// against DPD (`failover`), a daemon killed and restarted on a clock (`crash`), the packaged
/// daemon found by its name (`package`: `pidof vtid` would see another binary's daemons), and
/// the interop matrix's eight concurrent tunnels, whose pings right after rekeys another
/// binary's load made late.
const ALONE: &[&str] = &[
    "agent::dos",
    "agent::offload",
    "xfrm::vm_kernel",
    "agent::failover",
    "agent::crash",
    "agent::package",
    "agent::interop_ike",
];

/// How many binaries run at once (each with its own `--test-threads`): scenarios spend most
/// of their time waiting on IKE round trips, timers and pings, so two binaries side by side
/// nearly halve the wall time of the suite without starving either. `NSTEST_LANES` changes it.
const LANES: usize = 2;

/// One binary's scenarios, listed.
struct Job {
    bin: TestBinary,
    scenarios: usize,
    threads: usize,
    alone: bool,
}

/// What one binary's run came to.
struct Finished {
    name: String,
    stdout: String,
    ok: bool,
    took: std::time::Duration,
}

/// VM side: run each binary's ignored (`vm_`) tests, print every libtest summary and one
/// closing `vm: N passed, M failed` line; error if anything failed, nothing ran, or one of
/// `filter`'s comma-separated substrings matched no scenario (a renamed scenario must not
/// silently leave a subset). Binaries run [`LANES`] at a time, those in [`ALONE`] by
/// themselves.
pub fn run_inside(list: &Path, filter: Option<&str>, threads: usize) -> Result<()> {
    if !crate::vm::in_vm() {
        bail!("vm-inner runs inside the VM only (use `nstest vm-suite`)");
    }
    let bins: Vec<TestBinary> = serde_json::from_slice(&std::fs::read(list)?)?;
    warm_esp_crypto()?;
    // Scenarios are the ignored tests named vm_*; other ignored tests (benchmark-like probes,
    // fuzz seed writers) are not the VM's business.
    let filters: Vec<&str> = filter
        .unwrap_or("vm_")
        .split(',')
        .filter(|f| !f.is_empty())
        .collect();
    let mut unmatched: Vec<&str> = filters.clone();
    let mut jobs = Vec::new();
    for b in bins {
        // List first, so binaries without scenarios cost one quick exec and print nothing.
        // libtest runs a test that matches any of its filters.
        let listing = Command::new(&b.exe)
            .current_dir(&b.dir)
            .args(["--ignored", "--list", "--format", "terse"])
            .args(&filters)
            .output()
            .with_context(|| format!("list tests of {}", b.name))?;
        let listed = String::from_utf8_lossy(&listing.stdout).into_owned();
        let names: Vec<&str> = listed
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .collect();
        unmatched.retain(|f| !names.iter().any(|n| n.contains(f)));
        if names.is_empty() {
            continue;
        }
        let threads = WIDE
            .iter()
            .find(|(name, _)| *name == b.name)
            .map_or(threads, |&(_, wide)| wide.max(threads));
        let alone = ALONE.contains(&b.name.as_str());
        jobs.push(Job {
            scenarios: names.len(),
            threads,
            alone,
            bin: b,
        });
    }
    // The binaries with the most scenarios first, so that the short ones fill the gaps at
    // the end instead of a long one running by itself; the ones that run alone last.
    jobs.sort_by_key(|j| (j.alone, std::cmp::Reverse(j.scenarios)));
    let lanes = std::env::var("NSTEST_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LANES)
        .max(1);
    let done = run_jobs(jobs, lanes, &filters);
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut failures = Vec::new();
    for f in done {
        let (p, n) = parse_libtest_summary(&f.stdout);
        passed += p;
        failed += n;
        if !f.ok {
            failures.push(f.name.clone());
            if n == 0 {
                failed += 1; // crashed before printing a summary
            }
        }
    }
    println!("vm: {passed} passed, {failed} failed");
    if !unmatched.is_empty() {
        bail!("no scenario matches {}", unmatched.join(", "));
    }
    if !failures.is_empty() {
        bail!("scenario failures in: {}", failures.join(", "));
    }
    if passed == 0 {
        bail!("no scenario test ran");
    }
    Ok(())
}

/// Runs the jobs, at most `lanes` binaries at once and an `alone` job with nothing beside
/// it; prints each binary's libtest output whole when it ends (their stderr, the scenarios'
/// diagnostics, goes straight through).
fn run_jobs(jobs: Vec<Job>, lanes: usize, filters: &[&str]) -> Vec<Finished> {
    let (tx, rx) = std::sync::mpsc::channel::<Finished>();
    let mut done = Vec::new();
    std::thread::scope(|scope| {
        let mut running = 0usize;
        let collect = |running: &mut usize, done: &mut Vec<Finished>| {
            if let Ok(f) = rx.recv() {
                print!("{}", f.stdout);
                eprintln!("nstest: {} ended after {:.0?}", f.name, f.took);
                done.push(f);
            }
            *running -= 1;
        };
        for j in &jobs {
            let room = if j.alone { 1 } else { lanes };
            while running >= room {
                collect(&mut running, &mut done);
            }
            eprintln!(
                "nstest: {} ({} scenario tests, {} at once{})",
                j.bin.name,
                j.scenarios,
                j.threads,
                if j.alone { ", alone" } else { "" }
            );
            let tx = tx.clone();
            running += 1;
            scope.spawn(move || {
                let started = std::time::Instant::now();
                // `--report-time` puts each scenario's duration on its result line, which is
                // what keeping the suite within CI's budget is planned from; libtest takes
                // `-Z` flags from a stable build when RUSTC_BOOTSTRAP is set.
                let out = Command::new(&j.bin.exe)
                    .current_dir(&j.bin.dir)
                    .env("RUSTC_BOOTSTRAP", "1")
                    .args(["-Z", "unstable-options", "--report-time"])
                    .args(["--ignored", "--test-threads", &j.threads.to_string()])
                    .args(filters)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::inherit())
                    .output();
                let (stdout, ok) = match out {
                    Ok(o) => (
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                        o.status.success(),
                    ),
                    Err(e) => (format!("nstest: cannot run {}: {e}\n", j.bin.name), false),
                };
                let _ = tx.send(Finished {
                    name: j.bin.name.clone(),
                    stdout,
                    ok,
                    took: started.elapsed(),
                });
            });
            // An alone job ends before the next one starts.
            if j.alone {
                collect(&mut running, &mut done);
            }
        }
        while running > 0 {
            collect(&mut running, &mut done);
        }
    });
    done
}

/// The kernel's first SA of an ESP algorithm family loads and instantiates its crypto
/// (modules, templates, and the DRBG and jitterentropy RNG behind the IV generators):
/// measured in a fresh VM under TCG, 10.6 s for the first AES-GCM SA, 10.5 s for the first
/// ChaCha20-Poly1305 SA, 3.4 s for the first AES-CBC/HMAC-SHA-256 SA, then 0.3 s each. A
/// scenario whose responder installed the first one stalled that long inside an IKE_AUTH
/// exchange, past an initiator's retransmission budget (strongSwan's here: ~12 s). Paid once
/// here, before any scenario, in a namespace of its own (13 to 28 s measured here).
fn warm_esp_crypto() -> Result<()> {
    let started = std::time::Instant::now();
    let ns = format!("nstest-warm-{}", std::process::id());
    crate::cmd::run_args(&["ip", "netns", "add", &ns])?;
    let key = |bytes: usize| format!("0x{}", "ab".repeat(bytes));
    let algs = [
        format!("aead rfc4106(gcm(aes)) {} 128", key(36)),
        format!("aead rfc7539esp(chacha20,poly1305) {} 128", key(36)),
        format!(
            "enc cbc(aes) {} auth-trunc hmac(sha256) {} 128",
            key(16),
            key(32)
        ),
        format!(
            "enc cbc(aes) {} auth-trunc hmac(sha384) {} 192",
            key(32),
            key(48)
        ),
        format!(
            "enc cbc(aes) {} auth-trunc hmac(sha512) {} 256",
            key(32),
            key(64)
        ),
    ];
    // One after the other: side by side was no faster (28 s, against 13 to 28 s in a row,
    // the spread being this host's load), and an error names its algorithm.
    let result = (0x100..).zip(&algs).try_for_each(|(spi, alg)| {
        let line = format!(
            "ip -n {ns} xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi {spi} \
             mode tunnel {alg}"
        );
        crate::cmd::run_args(&line.split_whitespace().collect::<Vec<_>>()).map(drop)
    });
    let _ = crate::cmd::run_args(&["ip", "netns", "del", &ns]);
    println!(
        "vm: kernel ESP crypto instantiated in {:.1?}",
        started.elapsed()
    );
    result.context("warm up the kernel's ESP crypto")
}

/// Sums `test result: ... N passed; M failed` lines.
pub fn parse_libtest_summary(text: &str) -> (u64, u64) {
    let (mut p, mut f) = (0, 0);
    for l in text.lines().filter(|l| l.starts_with("test result:")) {
        for part in l.split([';', '.']) {
            let w: Vec<&str> = part.split_whitespace().collect();
            match w.as_slice() {
                [n, "passed"] => p += n.parse::<u64>().unwrap_or(0),
                [n, "failed"] => f += n.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (p, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_summaries() {
        let t = "test a ... ok\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; \
                 0 filtered out; finished in 1.0s\ntest result: FAILED. 1 passed; 2 failed; 0 \
                 ignored; 0 measured; 0 filtered out; finished in 1.0s\n";
        assert_eq!(parse_libtest_summary(t), (4, 2));
    }
}
