//! Interface features through the legacy SIOCETHTOOL ioctl (ETHTOOL_GSSET_INFO,
//! ETHTOOL_GSTRINGS, ETHTOOL_GFEATURES; include/uapi/linux/ethtool.h), for the ESP offload
//! capability of an underlay.
//!
//! Why not ethtool's generic netlink family: its only Rust client (the `ethtool` crate) pins a
//! netlink stack other than the one this crate uses, and these three calls return the same
//! feature table (net/ethtool/ioctl.c).
//!
//! The ioctl acts in the network namespace of the socket it is issued on (`sock_ioctl` →
//! `dev_ioctl(sock_net(sk), ...)`), not the calling thread's, so the AF_INET socket is opened
//! once per [`crate::Handle`] on a thread inside the handle's namespace (see
//! [`crate::Netns::run`]) and
//! then used from any thread.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::libc;

use crate::error::{Error, Result};
use crate::link::LinkHandle;

/// The feature `ethtool -k` shows for ESP crypto offload (netdev_features_strings in
/// net/ethtool/common.c).
pub const ESP_HW_OFFLOAD: &str = "esp-hw-offload";

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// Opens the handle's ioctl socket; call it on a thread inside the handle's namespace.
pub(crate) fn open_socket() -> Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::Io {
        op: "open ethtool ioctl socket",
        source: e.into(),
    })
}

impl LinkHandle<'_> {
    /// The interface's ethtool features (name, active), in the kernel's order.
    ///
    /// Equivalent to: `ethtool -k NAME`. A blocking ioctl of a few microseconds (it takes the
    /// RTNL lock). [`Error::NoSuchLink`] when there is no such interface in this namespace.
    pub fn features(&self, name: &str) -> Result<Vec<(String, bool)>> {
        features(self.ethtool, name).map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENODEV) => Error::NoSuchLink(name.to_string()),
            _ => Error::Io {
                op: "read ethtool features",
                source: e,
            },
        })
    }

    /// True when `name` has ESP crypto offload on (`ethtool -k NAME` shows
    /// `esp-hw-offload: on`).
    pub fn esp_hw_offload(&self, name: &str) -> Result<bool> {
        Ok(self
            .features(name)?
            .iter()
            .any(|(n, on)| n == ESP_HW_OFFLOAD && *on))
    }
}

fn features(fd: &OwnedFd, ifname: &str) -> io::Result<Vec<(String, bool)>> {
    // struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[1]; }
    let mut sset = [0u32; 6];
    sset[0] = ETHTOOL_GSSET_INFO;
    // The u64 mask's low word: words 2 and 3 in native order.
    let mask = (1u64 << ETH_SS_FEATURES).to_ne_bytes();
    sset[2] = u32::from_ne_bytes(mask[0..4].try_into().expect("4 bytes"));
    sset[3] = u32::from_ne_bytes(mask[4..8].try_into().expect("4 bytes"));
    ethtool_ioctl(fd, ifname, &mut sset)?;
    let count = sset[4] as usize;
    // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[len * 32]; }
    let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    strings[0] = ETHTOOL_GSTRINGS;
    strings[1] = ETH_SS_FEATURES;
    strings[2] = count as u32;
    ethtool_ioctl(fd, ifname, &mut strings)?;
    let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    // struct ethtool_gfeatures { u32 cmd, size; struct { u32 available, requested, active,
    // never_changed; } features[size]; }
    let blocks = count.div_ceil(32);
    let mut feats = vec![0u32; 2 + 4 * blocks];
    feats[0] = ETHTOOL_GFEATURES;
    feats[1] = blocks as u32;
    ethtool_ioctl(fd, ifname, &mut feats)?;
    Ok((0..count)
        .map(|i| {
            let raw = &bytes[i * ETH_GSTRING_LEN..(i + 1) * ETH_GSTRING_LEN];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            let name = String::from_utf8_lossy(&raw[..end]).into_owned();
            let active = feats[2 + 4 * (i / 32) + 2] & (1 << (i % 32)) != 0;
            (name, active)
        })
        .collect())
}

/// `ioctl(fd, SIOCETHTOOL, &ifreq{ name, data = buf })`; nix has no wrapper for it.
#[allow(unsafe_code)]
fn ethtool_ioctl(fd: &OwnedFd, ifname: &str, buf: &mut [u32]) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {ifname:?}"),
        ));
    }
    // SAFETY: ifreq is plain old data, all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
    // SAFETY: fd is an open socket; ifr.ifr_data points at `buf`, which is sized by the caller
    // for the command in its first word (the kernel writes at most that much) and outlives the
    // call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
