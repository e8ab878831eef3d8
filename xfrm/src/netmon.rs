//! Routing-side events (`ip monitor link route address`): what an agent needs to notice that
//! the device its SAs are offloaded to changed, went away, or stopped being where traffic to
//! the peer leaves.
//!
//! The kernel deletes offloaded SAs itself when their device goes down or is unregistered
//! (net/xfrm/xfrm_device.c, 6.1: `xfrm_dev_down` on NETDEV_DOWN for NETIF_F_HW_ESP devices and
//! `xfrm_dev_unregister` on NETDEV_UNREGISTER both call `xfrm_dev_state_flush`), and that
//! flush sends no XFRM notification (`xfrm_state_delete` is not `xfrm_del_sa`): the link event
//! here is the only sign a key manager gets.

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use rtnetlink::constants::{
    RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::sys::{AsyncSocket, SocketAddr};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// One routing-side change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// An interface appeared, changed (name, flags, features) or was removed.
    Link {
        /// Interface index.
        index: u32,
        /// Its name (as of this event).
        name: Option<String>,
        /// IFF_UP.
        up: bool,
        /// RTM_DELLINK: the interface is gone.
        removed: bool,
    },
    /// A route was added, replaced or removed (IPv4 or IPv6, any table).
    Route,
    /// An address was added or removed.
    Address,
}

/// Subscription to the link, route and address multicast groups of NETLINK_ROUTE in one
/// namespace.
pub struct NetMonitor {
    msgs: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl NetMonitor {
    /// Opens the subscription inside `netns` and spawns its connection task on the current
    /// tokio runtime. Equivalent to `ip monitor link route address`.
    pub fn open(netns: &Netns) -> Result<Self> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::Io {
            op: "open route monitor",
            source: std::io::Error::other("NetMonitor::open must run inside a tokio runtime"),
        })?;
        let (conn, msgs) = netns.run(|| {
            let _guard = rt.enter();
            let op = "open route monitor";
            let (mut conn, _handle, msgs) =
                rtnetlink::new_connection().map_err(|source| Error::Io { op, source })?;
            let groups = RTMGRP_LINK
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_ROUTE
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV6_IFADDR;
            conn.socket_mut()
                .socket_mut()
                .bind(&SocketAddr::new(0, groups))
                .map_err(|source| Error::Io { op, source })?;
            Ok((conn, msgs))
        })?;
        rt.spawn(conn);
        Ok(NetMonitor { msgs })
    }

    /// The next event; `None` when the connection task ended.
    pub async fn next(&mut self) -> Option<NetEvent> {
        loop {
            let (m, _) = self.msgs.next().await?;
            if let Some(ev) = classify(&m) {
                return Some(ev);
            }
        }
    }
}

fn classify(m: &NetlinkMessage<RouteNetlinkMessage>) -> Option<NetEvent> {
    let NetlinkPayload::InnerMessage(inner) = &m.payload else {
        return None;
    };
    Some(match inner {
        RouteNetlinkMessage::NewLink(l) => link_event(l, false),
        RouteNetlinkMessage::DelLink(l) => link_event(l, true),
        RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => NetEvent::Route,
        RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => {
            NetEvent::Address
        }
        _ => return None,
    })
}

fn link_event(l: &LinkMessage, removed: bool) -> NetEvent {
    NetEvent::Link {
        index: l.header.index,
        name: l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }),
        up: l.header.flags.contains(LinkFlags::Up),
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::route::RouteMessage;

    #[test]
    fn classifies_link_and_route_messages() {
        let mut l = LinkMessage::default();
        l.header.index = 7;
        l.header.flags = LinkFlags::Up;
        l.attributes.push(LinkAttribute::IfName("nsim0".into()));
        let del = NetlinkMessage::from(RouteNetlinkMessage::DelLink(l.clone()));
        assert_eq!(
            classify(&del),
            Some(NetEvent::Link {
                index: 7,
                name: Some("nsim0".into()),
                up: true,
                removed: true
            })
        );
        l.header.flags = LinkFlags::empty();
        let new = NetlinkMessage::from(RouteNetlinkMessage::NewLink(l));
        assert!(matches!(
            classify(&new),
            Some(NetEvent::Link {
                up: false,
                removed: false,
                ..
            })
        ));
        let r = NetlinkMessage::from(RouteNetlinkMessage::DelRoute(RouteMessage::default()));
        assert_eq!(classify(&r), Some(NetEvent::Route));
        let other = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(RouteMessage::default()));
        assert_eq!(classify(&other), None);
    }

    /// The subscription opens in the test's own namespace (no privilege needed to join the
    /// read-only rtnetlink groups).
    #[tokio::test]
    async fn opens_in_current_namespace() {
        NetMonitor::open(&Netns::Current).unwrap();
    }
}
