//! The crate's one error type.
//!
//! Kernel refusals keep their errno and the extended-ack text (`NLMSGERR_ATTR_MSG`) so that the
//! agent can branch on the errno and show the kernel's own words. [`Error::hint`] turns the common
//! cases into a sentence an operator can act on.

use std::io;

use nix::errno::Errno;

/// Everything that can go wrong while talking to the kernel through this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object already exists (`EEXIST`), e.g. a second `add` of the same policy or SA.
    #[error("{op}: object already exists{}", fmt_ack(.ext_ack))]
    Exists {
        /// What we were doing, e.g. `"add policy"`.
        op: &'static str,
        /// The kernel's extended-ack message, if it sent one.
        ext_ack: Option<String>,
    },
    /// The object does not exist (`ENOENT`, or `ESRCH` which XFRM uses for a missing SA).
    #[error("{op}: no such object{}", fmt_ack(.ext_ack))]
    NotFound {
        /// What we were doing.
        op: &'static str,
        /// The kernel's extended-ack message, if it sent one.
        ext_ack: Option<String>,
    },
    /// Any other refusal by the kernel.
    #[error("{op}: kernel said {errno} ({}){}", errno.desc(), fmt_ack(.ext_ack))]
    Kernel {
        /// What we were doing.
        op: &'static str,
        /// The errno from the netlink error message.
        errno: Errno,
        /// The kernel's extended-ack message, if it sent one.
        ext_ack: Option<String>,
    },
    /// A socket or file operation failed before the kernel could answer.
    #[error("{op}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel sent something we could not parse.
    #[error("{op}: cannot decode kernel reply: {detail}")]
    Decode {
        /// What we were doing.
        op: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// Entering a network namespace failed.
    #[error("enter network namespace {target}: {errno}")]
    Netns {
        /// The namespace path or fd we tried to enter.
        target: String,
        /// errno from `open` or `setns`.
        errno: Errno,
    },
    /// A spec cannot be expressed on the wire (caught before anything is sent).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A named link does not exist in the namespace.
    #[error("no link named {0:?}")]
    NoSuchLink(String),
    /// Crypto offload was asked for, but the device does not do ESP offload. The kernel does not
    /// refuse such a request: xfrm_dev_state_add() silently keeps the SA in software when the
    /// device has no xfrmdev_ops (e.g. a veth). The SA was removed again, so nothing changed.
    #[error(
        "add SA: device ifindex {ifindex} does not offload ESP (the kernel would have fallen \
         back to software crypto); the SA was not installed"
    )]
    OffloadNotApplied {
        /// The device that was asked to offload.
        ifindex: u32,
    },
    /// A policy asked for packet offload and the kernel installed it without: kernels before
    /// 6.2 do not know policy offload and ignore XFRMA_OFFLOAD_DEV on policies.
    #[error(
        "add policy: the kernel ignored packet offload to device ifindex {ifindex} (policy \
         offload needs Linux 6.2 or later); the policy was not installed"
    )]
    PolicyOffloadNotApplied {
        /// The device that was asked to offload.
        ifindex: u32,
    },
}

fn fmt_ack(ack: &Option<String>) -> String {
    match ack {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds the typed error for a negative netlink error code.
    pub(crate) fn from_errno(op: &'static str, errno: Errno, ext_ack: Option<String>) -> Self {
        match errno {
            Errno::EEXIST => Error::Exists { op, ext_ack },
            // XFRM answers a GETSA/DELSA for a missing SA with ESRCH (xfrm_user_state_lookup),
            // a missing policy with ENOENT (xfrm_get_policy); routes and links use ENOENT/ENODEV.
            Errno::ENOENT | Errno::ESRCH => Error::NotFound { op, ext_ack },
            _ => Error::Kernel { op, errno, ext_ack },
        }
    }

    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Exists { .. } => Some(Errno::EEXIST),
            Error::NotFound { .. } => Some(Errno::ENOENT),
            Error::Kernel { errno, .. } | Error::Netns { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    /// The kernel's extended-ack message, when it sent one.
    pub fn ext_ack(&self) -> Option<&str> {
        match self {
            Error::Exists { ext_ack, .. }
            | Error::NotFound { ext_ack, .. }
            | Error::Kernel { ext_ack, .. } => ext_ack.as_deref(),
            _ => None,
        }
    }

    /// True for [`Error::NotFound`]; a delete that finds nothing is success for a reconciler.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for [`Error::Exists`].
    pub fn is_exists(&self) -> bool {
        matches!(self, Error::Exists { .. })
    }

    /// A plain-language hint for the common failures, or `None` when we have nothing to add.
    pub fn hint(&self) -> Option<&'static str> {
        let ack = self.ext_ack().unwrap_or("");
        match self {
            Error::Exists { .. } => Some(
                "an object with the same key already exists; use update instead of add, or delete \
                 the old one first",
            ),
            Error::NotFound { .. } => {
                Some("the kernel has no such object; it may have expired or never been installed")
            }
            Error::Netns { .. } => {
                Some("check that the namespace exists (ip netns list) and that we run as root")
            }
            Error::NoSuchLink(_) => Some("the interface does not exist in this network namespace"),
            Error::PolicyOffloadNotApplied { .. } => Some(
                "run Linux 6.2 or later with a NIC driver that implements packet offload, or \
                 use crypto offload (SAs only)",
            ),
            Error::OffloadNotApplied { .. } => Some(
                "the device lacks the esp-hw-offload feature (`ethtool -k DEV`); use a NIC that \
                 offloads ESP, or software crypto (offload off or auto)",
            ),
            Error::Kernel { errno, .. } => match *errno {
                // __xfrm_init_state: xfrm_get_type() fails → "Requested type not found",
                // -EPROTONOSUPPORT, when esp4/esp6/ah4/xfrm_ipcomp is not loaded.
                Errno::EPROTONOSUPPORT => Some(
                    "the kernel lacks the IPsec protocol module: load esp4/esp6 (or ah4/ah6, \
                     xfrm_ipcomp) with modprobe",
                ),
                // rtnl_newlink: no rtnl_link_ops for the kind → "Unknown device type".
                Errno::EOPNOTSUPP if ack.contains("Unknown device type") => Some(
                    "the kernel lacks the link type's module: load ip_vti, ip6_vti, \
                     xfrm_interface or vrf with modprobe",
                ),
                // xfrm_user.c attach_aead/attach_one_algo: xfrm_*_get_byname() miss → -ENOSYS.
                Errno::ENOSYS => Some(
                    "the algorithm is not available in this kernel (check the crypto modules, \
                     e.g. modprobe gcm aes chacha20poly1305)",
                ),
                Errno::EPERM | Errno::EACCES => {
                    Some("netlink changes need CAP_NET_ADMIN (run as root)")
                }
                Errno::EINVAL if ack.contains("offload") || ack.contains("if_id") => Some(
                    "the device refused the offload request (inbound offload cannot be combined \
                     with if_id on newer kernels; only some algorithms can be offloaded)",
                ),
                Errno::EINVAL => Some(
                    "the kernel rejected an attribute; check key lengths, ICV/truncation lengths \
                     and that tunnel/transport addresses share one family",
                ),
                Errno::ENODEV => Some("the underlay or offload device does not exist"),
                Errno::ENOBUFS => Some("the netlink socket overflowed; retry with a smaller batch"),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_and_hints() {
        let e = Error::from_errno("add policy", Errno::EEXIST, None);
        assert!(e.is_exists());
        assert_eq!(e.errno(), Some(Errno::EEXIST));
        let e = Error::from_errno("delete SA", Errno::ESRCH, None);
        assert!(e.is_not_found());
        let e = Error::from_errno(
            "add SA",
            Errno::EPROTONOSUPPORT,
            Some("Requested type not found".into()),
        );
        assert!(e.hint().unwrap().contains("esp4"));
        assert!(e.to_string().contains("Requested type not found"), "{e}");
        let e = Error::from_errno(
            "add link",
            Errno::EOPNOTSUPP,
            Some("Unknown device type".into()),
        );
        assert!(e.hint().unwrap().contains("xfrm_interface"));
        let e = Error::from_errno("add link", Errno::EOPNOTSUPP, None);
        assert_eq!(e.hint(), None);
    }
}
