//! netdevsim: a simulated NIC whose driver implements the xfrmdev (ESP offload) callbacks, so
//! "offload dev X" reaches a real driver without hardware.
//!
//! Debian does not ship netdevsim.ko, but linux-source-SERIES (6.1, 6.12) carries its source
//! and it builds against linux-headers of the same series in seconds (measured: ~20 s here).
//! [`build`] runs on the host before the VM boots and caches the module per kernel release;
//! [`load`] and [`Device::new`] run inside the VM. In 6.1 and 6.12 netdevsim's ipsec.c accepts
//! crypto offload of `rfc4106(gcm(aes))` with a 128-bit ICV only (nsim_ipsec_add_sa; 6.12 also
//! refuses packet offload itself, "Unsupported ipsec offload type"), and records each SA in
//! the debugfs file `ports/N/ipsec`, which is the "hardware's" view the tests read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::cmd::run_args as run;

/// Environment variable that carries the module's path into the VM.
pub const KO_ENV: &str = "NSTEST_NETDEVSIM_KO";

/// Builds netdevsim.ko for `kernel` under `cache` (once; later calls reuse it) from the
/// source of its series, and returns its path. Errors name the Debian package that is missing.
pub fn build(cache: &Path, kernel: &crate::vm::Kernel) -> Result<PathBuf> {
    let kernel_version = kernel.release.as_str();
    let series = kernel.series();
    let source_pkg = format!("linux-source-{series}");
    let tarball = format!("/usr/src/{source_pkg}.tar.xz");
    let dir = cache.join("netdevsim").join(kernel_version);
    let ko = dir.join("netdevsim.ko");
    if ko.is_file() {
        return Ok(ko);
    }
    let headers = Path::new("/lib/modules").join(kernel_version).join("build");
    ensure!(
        headers.join("Makefile").is_file(),
        "no kernel headers at {} to build netdevsim: apt-get install linux-headers-{} \
         (the README's commands do)",
        headers.display(),
        if series == crate::vm::DEFAULT_KERNEL {
            "amd64".to_string()
        } else {
            format!("{series}-amd64")
        }
    );
    ensure!(
        Path::new(&tarball).is_file(),
        "{tarball} is missing (netdevsim's source): apt-get install {source_pkg} \
         (the README's commands do)"
    );
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    let src_s = src.to_str().context("utf-8 cache path")?;
    run(&[
        "tar",
        "xJf",
        &tarball,
        "-C",
        src_s,
        "--strip-components=4",
        &format!("{source_pkg}/drivers/net/netdevsim"),
    ])
    .context("extract netdevsim's source")?;
    run(&[
        "make",
        "-C",
        headers.to_str().context("utf-8 headers path")?,
        &format!("M={src_s}"),
        "CONFIG_NETDEVSIM=m",
        "modules",
    ])
    .context("build netdevsim.ko against the VM kernel's headers")?;
    std::fs::rename(src.join("netdevsim.ko"), &ko)?;
    let _ = std::fs::remove_dir_all(&src);
    Ok(ko)
}

/// Inside the VM: loads netdevsim (and the ESP offload glue it needs) once.
pub fn load() -> Result<()> {
    if Path::new("/sys/bus/netdevsim/new_device").exists() {
        return Ok(());
    }
    let ko = std::env::var(KO_ENV).with_context(|| {
        format!("{KO_ENV} is unset: the VM suite runner builds netdevsim and passes its path")
    })?;
    // psample: netdevsim's symbol dependency; esp4_offload/esp6_offload: the GSO/xfrmdev glue
    // without which the kernel never calls the driver's xdo_dev_state_add.
    run(&["modprobe", "-a", "psample", "esp4_offload", "esp6_offload"])?;
    // Two tests may race to load it; EEXIST from the loser is fine.
    let r = run(&["insmod", &ko]);
    if !Path::new("/sys/bus/netdevsim/new_device").exists() {
        r.context("insmod netdevsim.ko")?;
        bail!("netdevsim loaded but /sys/bus/netdevsim is missing");
    }
    if !Path::new("/sys/kernel/debug/netdevsim").exists() {
        let _ = run(&["mount", "-t", "debugfs", "none", "/sys/kernel/debug"]);
    }
    Ok(())
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// One netdevsim device with one port, created in a namespace.
pub struct Device {
    id: u32,
    /// The port's interface name inside the namespace.
    pub ifname: String,
}

impl Device {
    /// `echo "ID 1" > /sys/bus/netdevsim/new_device` written from inside namespace `netns`,
    /// so the port is created there (netdevsim puts a new device's ports in the writer's
    /// namespace: bus.c new_device_store sets initial_net), then renamed to `ifname`.
    ///
    /// Creating the port in the root namespace and moving it raced with udev's renaming and
    /// with other tests' ports there when several scenarios create devices at once; inside
    /// the scenario's own namespace the port's name is private and udev never sees it (net
    /// uevents of a non-initial namespace stay in that namespace).
    pub fn new(netns: &str, ifname: &str) -> Result<Self> {
        load()?;
        // Device ids are global to the VM; tests in one process count up from a per-process
        // base so parallel test binaries do not collide either.
        let id = 100 + (std::process::id() % 1000) * 10 + NEXT_ID.fetch_add(1, Ordering::Relaxed);
        run(&[
            "ip",
            "netns",
            "exec",
            netns,
            "sh",
            "-c",
            &format!("echo '{id} 1' > /sys/bus/netdevsim/new_device"),
        ])
        .with_context(|| format!("create netdevsim{id} in {netns}"))?;
        let dev = Self {
            id,
            ifname: ifname.to_string(),
        };
        // sysfs shows a device's net entries only to a mount of its own namespace, which
        // `ip netns exec` provides.
        let net = format!("/sys/bus/netdevsim/devices/netdevsim{id}/net");
        crate::kernel::wait_until(
            &format!("netdevsim{id}'s port in {netns}"),
            Duration::from_secs(20),
            || {
                let port = run(&["ip", "netns", "exec", netns, "ls", &net])?;
                let port = port.split_whitespace().next().context("no port yet")?;
                run(&["ip", "-n", netns, "link", "set", port, "name", ifname])?;
                Ok(true)
            },
        )?;
        Ok(dev)
    }

    /// The driver's own record of offloaded SAs (debugfs `ipsec`): one block per SA with its
    /// SPI, direction and key, as nsim_dbg_netdev_ops_read prints them.
    pub fn ipsec_debugfs(&self) -> Result<String> {
        let p = format!(
            "/sys/kernel/debug/netdevsim/netdevsim{}/ports/0/ipsec",
            self.id
        );
        std::fs::read_to_string(&p).with_context(|| format!("read {p}"))
    }
}

impl Device {
    /// Deletes the device now (`echo ID > /sys/bus/netdevsim/del_device`): its port is
    /// unregistered, as when a NIC is unplugged or its driver unloaded.
    pub fn remove(self) -> Result<()> {
        std::fs::write("/sys/bus/netdevsim/del_device", self.id.to_string())
            .with_context(|| format!("delete netdevsim{}", self.id))
    }

    /// The offloaded packets the driver has seen on transmit (`tx=` in debugfs `ipsec`,
    /// counted by nsim_ipsec_tx for each packet carrying an offloaded SA).
    pub fn ipsec_tx(&self) -> Result<u64> {
        let text = self.ipsec_debugfs()?;
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("tx="))
            .context("no tx= in netdevsim's ipsec file")?
            .parse()
            .context("tx= is not a number")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/bus/netdevsim/del_device", self.id.to_string());
    }
}
