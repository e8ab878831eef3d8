//! The VM runner: boots Debian's stock kernel (which has esp4, ip_vti, xfrm_interface, dummy,
//! vrf as modules; this machine's kernel has none and cannot load modules) under qemu with
//! this machine's userspace shared in read-only via virtme-ng, and runs one command inside.
//! Debian 12's 6.1 by default; `--kernel 6.12` (or `NSTEST_KERNEL=6.12`) boots the 6.12
//! kernel Debian 12 also ships ([`Kernel::select`]).
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

/// Environment variable naming the kernel the VM boots (as `--kernel` does; the flag wins):
/// a series (`6.1`, `6.12`), a release as `uname -r` prints it, or the path of a vmlinuz whose
/// modules are under /lib/modules.
pub const KERNEL_ENV: &str = "NSTEST_KERNEL";

/// The series booted when nothing is selected: Debian 12's own kernel, the one
/// `linux-image-amd64` installs. Named rather than "the newest installed" so that installing
/// the second kernel (`linux-image-6.12-amd64`, for `--kernel 6.12`) changes nothing else.
pub const DEFAULT_KERNEL: &str = "6.1";

/// A kernel the VM can boot: its image and its release (`uname -r`, the /lib/modules
/// directory that holds its modules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The vmlinuz file.
    pub image: PathBuf,
    /// `uname -r` inside the VM.
    pub release: String,
}

impl Kernel {
    /// The kernel `flag` (`--kernel`) names, else [`KERNEL_ENV`], else [`DEFAULT_KERNEL`].
    pub fn select(flag: Option<&str>) -> Result<Self> {
        let env = std::env::var(KERNEL_ENV).ok().filter(|s| !s.is_empty());
        let sel = flag.map(str::to_string).or(env);
        Self::find(sel.as_deref().unwrap_or(DEFAULT_KERNEL))
    }

    /// The kernel `sel` names (see [`KERNEL_ENV`]) among those installed under /boot.
    pub fn find(sel: &str) -> Result<Self> {
        find_in(Path::new("/boot"), Path::new("/lib/modules"), sel)
    }

    /// The kernel series, `6.12` of `6.12.118+deb12-amd64`: which linux-source-SERIES
    /// package holds its source (netdevsim is built from it).
    pub fn series(&self) -> String {
        series_of(&self.release)
    }
}

/// `6.12` of `6.12.118+deb12-amd64`, `6.1` of `6.1.0-57-amd64`.
pub fn series_of(release: &str) -> String {
    release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

/// [`Kernel::find`] over the directories `boot` and `modules`: a path is taken as it is, a
/// release or series picks the newest matching Debian kernel (`vmlinuz-*-amd64`, not the
/// cloud flavour, which lacks modules the scenarios need) whose modules are installed.
fn find_in(boot: &Path, modules: &Path, sel: &str) -> Result<Kernel> {
    let has_modules = |release: &str| modules.join(release).join("kernel").is_dir();
    if sel.contains('/') {
        let image = PathBuf::from(sel);
        let release = image
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .with_context(|| format!("{sel}: not a vmlinuz-RELEASE file"))?
            .to_string();
        anyhow::ensure!(image.is_file(), "{sel}: no such kernel image");
        anyhow::ensure!(
            has_modules(&release),
            "{sel}: no modules under {}",
            modules.join(&release).display()
        );
        return Ok(Kernel { image, release });
    }
    let mut found: Vec<Kernel> = std::fs::read_dir(boot)
        .with_context(|| format!("read {}", boot.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            // A series matches at a component boundary: 6.1 is 6.1.0-57, never 6.12.118.
            let matches = release == sel
                || release
                    .strip_prefix(sel)
                    .is_some_and(|rest| rest.starts_with(['.', '-', '+']));
            (matches
                && release.ends_with("-amd64")
                && !release.contains("cloud")
                && has_modules(&release))
            .then(|| Kernel {
                image: e.path(),
                release,
            })
        })
        .collect();
    found.sort_by_key(|k| version_key(&k.release));
    match found.pop() {
        Some(k) => Ok(k),
        None => bail!(
            "no {sel} Debian kernel with modules under {}: apt-get install {} (./x setup \
             installs it)",
            boot.display(),
            if sel == DEFAULT_KERNEL {
                "linux-image-amd64".to_string()
            } else {
                format!("linux-image-{sel}-amd64")
            }
        ),
    }
}

/// The selected kernel's image (see [`Kernel::select`]).
pub fn find_kernel() -> Result<PathBuf> {
    Ok(Kernel::select(None)?.image)
}

/// The release string (`uname -r`) of the selected kernel.
pub fn kernel_release() -> Result<String> {
    Ok(Kernel::select(None)?.release)
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Boots the selected kernel ([`Kernel::select`]) and runs `script` in it: see [`run_on`].
pub fn run(script: &str, rwdirs: &[&Path]) -> Result<ExitStatus> {
    run_on(&Kernel::select(None)?, script, rwdirs)
}

/// Boots `kernel` and runs `script` (a shell command line) inside it, after loading
/// [`MODULES`]. `rwdirs` are shared writable. Returns the command's exit status.
pub fn run_on(kernel: &Kernel, script: &str, rwdirs: &[&Path]) -> Result<ExitStatus> {
    run_with_memory(kernel, script, rwdirs, DEFAULT_MEMORY)
}

/// The guest memory of [`run_on`]: enough for the scenarios (two vCPUs, a few hundred
/// tunnels); a benchmark with thousands of netdevs asks for more with `nstest vm --memory`.
pub const DEFAULT_MEMORY: &str = "2G";

/// [`run_on`] with `memory` (qemu's `-m` syntax, e.g. `6G`) for the guest.
pub fn run_with_memory(
    kernel: &Kernel,
    script: &str,
    rwdirs: &[&Path],
    memory: &str,
) -> Result<ExitStatus> {
    eprintln!("nstest: booting {} with {memory}", kernel.release);
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
    cmd.arg("-r").arg(&kernel.image);
    // qemu/TCG: the development/CI machines expose /dev/kvm but qemu aborts on it ("failed
    // to set MSR"), so KVM is opt-in with NSTEST_KVM=1.
    if std::env::var_os("NSTEST_KVM").is_none() {
        cmd.arg("--disable-kvm");
    }
    cmd.args(["--force-9p", "--cpus", "2", "--memory", memory]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A /boot and /lib/modules with Debian 12's kernel, the 6.12 one beside it, a cloud
    /// flavour and an image whose modules are gone.
    fn tree() -> (PathBuf, PathBuf, PathBuf) {
        let root = std::env::temp_dir().join(format!("nstest-kernels-{}", std::process::id()));
        let (boot, modules) = (root.join("boot"), root.join("modules"));
        for r in [
            "6.1.0-57-amd64",
            "6.1.0-9-amd64",
            "6.12.118+deb12-amd64",
            "6.12.118+deb12-cloud-amd64",
            "6.12.200+deb12-amd64",
        ] {
            std::fs::create_dir_all(&boot).unwrap();
            std::fs::write(boot.join(format!("vmlinuz-{r}")), "").unwrap();
            if r != "6.12.200+deb12-amd64" {
                std::fs::create_dir_all(modules.join(r).join("kernel")).unwrap();
            }
        }
        (root, boot, modules)
    }

    #[test]
    fn selects_by_series_release_or_path_and_defaults_to_debian_12s() {
        let (root, boot, modules) = tree();
        let find = |sel: &str| find_in(&boot, &modules, sel).map(|k| k.release);
        // The default is 6.1 though a newer kernel is installed; 6.1 never matches 6.12.
        assert_eq!(find(DEFAULT_KERNEL).unwrap(), "6.1.0-57-amd64");
        // Newest of the series with modules: not the cloud flavour, not 6.12.200 (no modules).
        assert_eq!(find("6.12").unwrap(), "6.12.118+deb12-amd64");
        assert_eq!(find("6.1.0-9-amd64").unwrap(), "6.1.0-9-amd64");
        let p = boot.join("vmlinuz-6.12.118+deb12-amd64");
        let k = find_in(&boot, &modules, p.to_str().unwrap()).unwrap();
        assert_eq!((k.series(), k.image), ("6.12".to_string(), p));
        let e = find("6.6").unwrap_err().to_string();
        assert!(e.contains("apt-get install linux-image-6.6-amd64"), "{e}");
        let p = boot.join("vmlinuz-6.12.200+deb12-amd64");
        assert!(find_in(&boot, &modules, p.to_str().unwrap()).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn series_of_debian_releases() {
        assert_eq!(series_of("6.1.0-57-amd64"), "6.1");
        assert_eq!(series_of("6.12.118+deb12-amd64"), "6.12");
    }
}
