//! ethtool feature flags of an interface (SIOCETHTOOL), for ESP offload capability.

use std::io;

/// The interface's ethtool features (name, active), in the kernel's order.
///
/// Read with the legacy SIOCETHTOOL ioctls (ETHTOOL_GSSET_INFO, ETHTOOL_GSTRINGS,
/// ETHTOOL_GFEATURES) rather than ethtool's generic netlink family: the only Rust client of
/// the latter (the `ethtool` crate) pins a netlink stack other than the one the xfrm crate uses,
/// and these three calls return the same feature table (net/ethtool/ioctl.c). The socket is
/// opened in the caller's network namespace, which is where the daemon runs.
pub fn features(ifname: &str) -> io::Result<Vec<(String, bool)>> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    // include/uapi/linux/ethtool.h
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETHTOOL_GSSET_INFO: u32 = 0x37;
    const ETHTOOL_GFEATURES: u32 = 0x3a;
    const ETH_SS_FEATURES: u32 = 4;
    const ETH_GSTRING_LEN: usize = 32;

    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[1]; }
    let mut sset = [0u32; 6];
    sset[0] = ETHTOOL_GSSET_INFO;
    sset[2] = 1 << ETH_SS_FEATURES; // little-endian low word of the u64 mask
    ethtool_ioctl(&fd, ifname, &mut sset)?;
    let count = sset[4] as usize;
    // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[len * 32]; }
    let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    strings[0] = ETHTOOL_GSTRINGS;
    strings[1] = ETH_SS_FEATURES;
    strings[2] = count as u32;
    ethtool_ioctl(&fd, ifname, &mut strings)?;
    let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    // struct ethtool_gfeatures { u32 cmd, size; struct { u32 available, requested, active,
    // never_changed; } features[size]; }
    let blocks = count.div_ceil(32);
    let mut feats = vec![0u32; 2 + 4 * blocks];
    feats[0] = ETHTOOL_GFEATURES;
    feats[1] = blocks as u32;
    ethtool_ioctl(&fd, ifname, &mut feats)?;
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
fn ethtool_ioctl(fd: &std::os::fd::OwnedFd, ifname: &str, buf: &mut [u32]) -> io::Result<()> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
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
