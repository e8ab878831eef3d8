//! vtid's only door into the kernel: NETLINK_XFRM (SAs, policies, events) and NETLINK_ROUTE
//! (tunnel devices, addresses, routes), plus per-interface sysctls. Knows nothing of IKE.
//!
//! # Shape
//!
//! Kernel objects are described as data ([`SaSpec`], [`PolicySpec`], [`TunnelDeviceSpec`],
//! [`XfrmiSpec`], [`RouteSpec`]), then executed through a [`Handle`] bound to one network
//! namespace: `handle.sa().add(&spec).await`, `handle.policy().dump().await`,
//! `handle.link().create_tunnel_device(&d).await`. Many changes at once go through
//! [`Handle::batch`], which pipelines them (hundreds per datagram, one ack). Kernel events
//! (ACQUIRE, EXPIRE, POLEXPIRE, MAPPING, MIGRATE) arrive on a [`Monitor`].
//!
//! ```no_run
//! # async fn demo() -> xfrm::Result<()> {
//! use xfrm::*;
//! let h = Handle::open(Netns::named("red"))?;
//! let (me, peer) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
//! let key = Key::from_slice(&[0u8; 20]); // AES-128 key + 4-byte salt, from IKE in real life
//! let out = SaSpec::new(me, peer, Spi(0x1234_5678), Crypto::Aead { alg: AeadAlg::AesGcm16, key })
//!     .reqid(0x7654_0001)
//!     .if_id(42)
//!     .replay_window(0);
//! let pol = PolicySpec::new(Selector::any(false), Dir::Out)
//!     .priority(0x3_0000)
//!     .if_id(42)
//!     .template(Template::tunnel(me, peer, 0x7654_0001));
//! let mut batch = h.batch();
//! batch.add_sa(&out).add_policy(&pol);
//! for r in batch.execute().await? {
//!     r?;
//! }
//! let counters = h.sa().get(&out.id()).await?.counters;
//! # let _ = counters;
//! # Ok(())
//! # }
//! ```
//!
//! # Namespaces
//!
//! Every socket is opened on a helper thread that has `setns()`'d into the target namespace
//! ([`Netns`]); the socket then works from any thread. Nothing in this crate changes the
//! namespace of a thread that runs async tasks.
//!
//! # Secrets
//!
//! Keys are [`Key`]s (zeroized on drop, redacted in `Debug`). They are copied once, into a
//! zeroizing netlink send buffer, when a request is emitted. Sockets use NETLINK_CAP_ACK so
//! error replies never echo a request body back.
//!
//! # Ownership convention
//!
//! The kernel has no owner field, so vtid marks its objects and never touches others':
//! - **SAs and policy templates**: `reqid` in [`OWNED_REQID`] (`0x7654_0000..=0x7654_ffff`).
//! - **Policies**: priority in [`OWNED_PRIORITY`]; VTI/xfrmi policies also carry the mark or
//!   `if_id` of an owned interface.
//! - **Interfaces**: name prefix chosen by the agent, IFLA_IFALIAS starting with
//!   [`OWNED_ALIAS_PREFIX`] (`"vtid:"`), and link group [`OWNED_LINK_GROUP`].
//!   [`LinkHandle::create_tunnel_device`] creates a device already in the owned group (the
//!   kernel ignores IFLA_IFALIAS on creation, so the alias follows in one set-link; see
//!   [`TunnelDeviceSpec`]).
//! - **Nexthop objects**: nh_protocol [`OWNED_NEXTHOP_PROTOCOL`], on an owned interface.
//!
//! Use [`is_owned_reqid`], [`is_owned_priority`] and [`is_owned_link`] (alias or group) when
//! reconciling.

mod bypass;
mod conn;
mod device;
mod error;
mod ethtool;
mod handle;
mod link;
mod monitor;
mod netmon;
mod netns;
mod nexthop;
mod qdisc;
mod spec;
mod wire;

pub use bypass::{bypass_socket, clear_socket_policy};
pub use device::{DeviceKind, TunnelDeviceSpec, is_owned_link};
pub use error::{Error, Result};
pub use ethtool::ESP_HW_OFFLOAD;
pub use handle::{Batch, Handle, NexthopHandle, PolicyHandle, SaHandle};
pub use link::{
    GreInfo, LinkHandle, LinkInfo, RouteSpec, VtiSpec, XfrmiSpec, get_sysctl, set_sysctl,
};
pub use monitor::{Acquire, Event, Expire, Mapping, Migrate, Monitor, PolicyExpire};
pub use netmon::{NetEvent, NetMonitor};
pub use netns::Netns;
pub use nexthop::{NexthopInfo, NexthopSpec};
pub use qdisc::Qdisc;
pub use spec::*;
pub use wire::{AllocSpi, XFRM_OFFLOAD_PACKET, XFRMA_SA_DIR};

/// reqids vtid allocates from; anything outside belongs to someone else.
pub const OWNED_REQID: std::ops::RangeInclusive<u32> = 0x7654_0000..=0x7654_ffff;
/// Policy priorities vtid uses (lower = preferred; below the kernel's default 0 is impossible,
/// so vtid's band sits where strongSwan's default priorities do not).
pub const OWNED_PRIORITY: std::ops::RangeInclusive<u32> = 0x0003_0000..=0x0003_ffff;
/// IFLA_IFALIAS prefix on interfaces vtid created.
pub const OWNED_ALIAS_PREFIX: &str = "vtid:";
/// Link group of interfaces vtid created (`ip link show group 7654`).
pub const OWNED_LINK_GROUP: u32 = 7654;
/// nh_protocol of nexthop objects vtid created (`ip nexthop show protocol 76`): a number no
/// routing daemon in include/uapi/linux/rtnetlink.h or FRR's rt_protos claims.
pub const OWNED_NEXTHOP_PROTOCOL: u8 = 76;

/// True when `reqid` is in vtid's range.
pub fn is_owned_reqid(reqid: u32) -> bool {
    OWNED_REQID.contains(&reqid)
}

/// True when `priority` is in vtid's policy band.
pub fn is_owned_priority(priority: u32) -> bool {
    OWNED_PRIORITY.contains(&priority)
}

/// True when an interface alias marks a vtid-created interface.
pub fn is_owned_alias(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with(OWNED_ALIAS_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent shares handles across tasks and moves monitors into tasks.
    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Handle>();
        send_sync::<SaSpec>();
        send_sync::<Error>();
        send::<Monitor>();
        // Futures returned by the handles can be spawned.
        fn spawnable<F: Future + Send>(_: F) {}
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        if let Ok(h) = Handle::open(Netns::Current) {
            spawnable(async move { h.sa().dump().await });
        }
    }

    #[test]
    fn ownership_ranges() {
        assert!(is_owned_reqid(0x7654_0001));
        assert!(!is_owned_reqid(1));
        assert!(is_owned_priority(0x3_0000));
        assert!(!is_owned_priority(0));
        assert!(is_owned_alias(Some("vtid:peer a")));
        assert!(!is_owned_alias(Some("uplink")));
        assert!(!is_owned_alias(None));
    }
}
