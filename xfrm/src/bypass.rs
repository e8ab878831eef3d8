//! Per-socket bypass policies for the agent's own IKE sockets.
//!
//! A `0.0.0.0/0 ↔ 0.0.0.0/0` policy (VTI/xfrmi style, or a transport-mode catch-all) would
//! also capture IKE's UDP 500/4500 packets, which must travel in clear. A per-socket policy
//! (IP_XFRM_POLICY / IPV6_XFRM_POLICY with an ALLOW `xfrm_userpolicy_info` and no templates)
//! takes precedence over the SPD for that socket (xfrm_sk_policy_lookup runs first). This is
//! what strongSwan's kernel-netlink `bypass_socket()` does.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::Emitable;
use netlink_packet_xfrm as nx;
use nix::errno::Errno;
use nix::libc;

use crate::error::{Error, Result};

/// `IP_XFRM_POLICY` from include/uapi/linux/in.h.
const IP_XFRM_POLICY: libc::c_int = 17;
/// `IPV6_XFRM_POLICY` from include/uapi/linux/in6.h.
const IPV6_XFRM_POLICY: libc::c_int = 35;

fn level_opt(v6: bool) -> (libc::c_int, libc::c_int) {
    if v6 {
        (libc::SOL_IPV6, IPV6_XFRM_POLICY)
    } else {
        (libc::SOL_IP, IP_XFRM_POLICY)
    }
}

fn raw_setsockopt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    val: Option<&[u8]>,
) -> Result<()> {
    let (ptr, len) = match val {
        Some(v) => (
            v.as_ptr().cast::<libc::c_void>(),
            v.len() as libc::socklen_t,
        ),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `fd` is a live descriptor for the duration of the call (BorrowedFd), and
    // `ptr`/`len` describe either a live byte slice we own or (null, 0), which the kernel's
    // xfrm_user_policy() accepts as "remove the socket policies". The kernel copies the value
    // and keeps no reference to our memory.
    #[allow(unsafe_code)]
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, ptr, len) };
    if r < 0 {
        return Err(Error::Kernel {
            op: "set socket XFRM policy",
            errno: Errno::last(),
            ext_ack: None,
        });
    }
    Ok(())
}

/// Exempts the socket `fd` from IPsec in both directions.
///
/// Equivalent to strongSwan's `bypass_socket()`: two setsockopt(IP_XFRM_POLICY) calls (or
/// IPV6_XFRM_POLICY when `v6`) with `action allow`, `dir out` and `dir in`. Needs CAP_NET_ADMIN.
pub fn bypass_socket(fd: BorrowedFd<'_>, v6: bool) -> Result<()> {
    let (level, opt) = level_opt(v6);
    for dir in [nx::XFRM_POLICY_OUT, nx::XFRM_POLICY_IN] {
        let info = nx::UserPolicyInfo {
            selector: nx::Selector {
                family: if v6 { nx::AF_INET6 } else { nx::AF_INET },
                ..Default::default()
            },
            direction: dir,
            action: nx::XFRM_POLICY_ALLOW,
            ..Default::default()
        };
        let mut buf = vec![0u8; info.buffer_len()];
        info.emit(&mut buf);
        raw_setsockopt(fd, level, opt, Some(&buf))?;
    }
    Ok(())
}

/// Removes the per-socket policies installed by [`bypass_socket`].
pub fn clear_socket_policy(fd: BorrowedFd<'_>, v6: bool) -> Result<()> {
    let (level, opt) = level_opt(v6);
    raw_setsockopt(fd, level, opt, None)
}
