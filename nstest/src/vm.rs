//! The VM runner: boots Debian's stock kernel (which has esp4, ip_vti, xfrm_interface, dummy,
//! vrf as modules; this machine's kernel has none and cannot load modules) under qemu with
//! this machine's userspace shared in read-only via virtme-ng, and runs one command inside.
//!
//! Measured here: about 20-35 s per boot under TCG, so the whole scenario suite runs in one
//! boot. Inside, `/tmp` and `/run` are guest-local and writable, the rest of the host tree is
//! read-only except the directories passed as `rwdirs`, and the command's exit status comes
//! back as the VM's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};

/// Environment variable set inside the VM by [`run`], so tests know where they are.
pub const IN_VM_ENV: &str = "NSTEST_IN_VM";

/// Kernel modules every scenario may need, loaded once at boot. A missing one fails the boot
/// with its name rather than letting a scenario fail obscurely later.
pub const MODULES: &[&str] = &[
    "veth",
    "dummy",
    "vrf",
    "ip_vti",
    "ip6_vti",
    "xfrm_interface",
    "xfrm_user",
    "esp4",
    "esp6",
    "xfrm4_tunnel",
    "xfrm6_tunnel",
    "tunnel4",
    "tunnel6",
    "sch_netem",
    "nf_tables",
    "nft_nat",
    "nft_masq",
    "nft_chain_nat",
];

/// True inside a VM booted by [`run`].
pub fn in_vm() -> bool {
    std::env::var_os(IN_VM_ENV).is_some()
}

/// The newest Debian kernel under /boot whose modules are installed (the VM boots it).
pub fn find_kernel() -> Result<PathBuf> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir("/boot")
        .context("read /boot")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ver = name.strip_prefix("vmlinuz-")?.to_string();
            (ver.ends_with("-amd64")
                && !ver.contains("cloud")
                && Path::new("/lib/modules").join(&ver).join("kernel").is_dir())
            .then(|| (ver, e.path()))
        })
        .collect();
    found.sort_by_key(|(ver, _)| version_key(ver));
    match found.pop() {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no Debian kernel with modules under /boot: apt-get install linux-image-amd64 \
             (the README's commands install it)"
        ),
    }
}

/// The release string (`uname -r`) of the kernel the VM boots.
pub fn kernel_release() -> Result<String> {
    let k = find_kernel()?;
    let name = k.file_name().context("kernel path")?.to_string_lossy();
    Ok(name.trim_start_matches("vmlinuz-").to_string())
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Boots the VM and runs `script` (a shell command line) inside it, after loading
/// [`MODULES`]. `rwdirs` are shared writable. Returns the command's exit status.
pub fn run(script: &str, rwdirs: &[&Path]) -> Result<ExitStatus> {
    let kernel = find_kernel()?;
    let vng = which("vng").context(
        "virtme-ng (`vng`) is not installed: pip install virtme-ng (the README's commands do it)",
    )?;
    let mods = MODULES.join(" ");
    // modprobe each module separately so the error names the one that is missing.
    let inner = format!(
        "set -e; for m in {mods}; do modprobe $m || {{ echo \"nstest: kernel module $m \
         missing in the VM\" >&2; exit 97; }}; done; export {IN_VM_ENV}=1; {script}"
    );
    let mut cmd = Command::new(vng);
    cmd.arg("-r").arg(&kernel);
    // qemu/TCG: the development/CI machines expose /dev/kvm but qemu aborts on it ("failed
    // to set MSR"), so KVM is opt-in with NSTEST_KVM=1.
    if std::env::var_os("NSTEST_KVM").is_none() {
        cmd.arg("--disable-kvm");
    }
    cmd.args(["--force-9p", "--cpus", "2", "--memory", "2G"]);
    for d in rwdirs {
        cmd.arg("--rwdir").arg(d);
    }
    cmd.arg("--exec").arg(inner);
    // The VM's console must not touch our own stdout and stderr: qemu re-opens the file
    // behind them with truncation, so `./x test > log` lost everything written before the
    // VM booted (and the later writes left a hole of NUL bytes), and on a terminal it left
    // the console's state behind. Through pipes copied here, what it writes lands after what
    // was written before, in order; stdin is not the VM's to read.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("boot the VM with vng")?;
    let copy_out = child.stdout.take().map(|mut from| {
        std::thread::spawn(move || std::io::copy(&mut from, &mut std::io::stdout().lock()))
    });
    let copy_err = child.stderr.take().map(|mut from| {
        std::thread::spawn(move || std::io::copy(&mut from, &mut std::io::stderr().lock()))
    });
    let status = child.wait().context("wait for the VM")?;
    for t in [copy_out, copy_err].into_iter().flatten() {
        let _ = t.join();
    }
    Ok(status)
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}
