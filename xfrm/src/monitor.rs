//! Kernel XFRM events as a typed async stream.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::ParseableParametrized;
use netlink_packet_xfrm::{self as nx, XfrmAttrs, XfrmMessage};
use rtnetlink::sys::Socket;
use tokio::io::unix::AsyncFd;
use zeroize::Zeroizing;

use crate::conn::{Reply, open_socket, parse_datagram, register};
use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::spec::{Dir, Mark, Mode, PolicySpec, Proto, SaState, Selector, Spi};
use crate::wire;

/// The kernel wants an SA: traffic hit a policy whose template has no matching SA
/// (XFRM_MSG_ACQUIRE on XFRMNLGRP_ACQUIRE). The kernel has created a larval SA that it drops
/// packets into (`net.core.xfrm_larval_drop`) until it expires (`xfrm_acq_expires`, 30 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquire {
    /// Template source (our tunnel address).
    pub src: IpAddr,
    /// Template destination (the peer).
    pub dst: IpAddr,
    /// Protocol wanted.
    pub proto: Proto,
    /// Selector of the packet that triggered it (its addresses, protocol and ports).
    pub packet: Selector,
    /// The policy that matched, with templates, mark and if_id.
    pub policy: PolicySpec,
    /// Acquire sequence number; a later ALLOCSPI/UPDSA may quote it.
    pub seq: u32,
}

/// An SA crossed a soft limit (`hard == false`: time to rekey) or a hard one (the kernel
/// deletes it). XFRM_MSG_EXPIRE on XFRMNLGRP_EXPIRE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expire {
    /// The SA as the kernel reported it (without keys) and its counters.
    pub sa: SaState,
    /// Hard expiry.
    pub hard: bool,
}

/// A policy lifetime expired (XFRM_MSG_POLEXPIRE on XFRMNLGRP_EXPIRE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyExpire {
    /// The policy.
    pub policy: PolicySpec,
    /// Hard expiry.
    pub hard: bool,
}

/// A NAT-T peer's address or port changed (XFRM_MSG_MAPPING on XFRMNLGRP_MAPPING): an
/// ESP-in-UDP packet for an SA arrived from a new source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// SA destination.
    pub dst: IpAddr,
    /// SA SPI.
    pub spi: Spi,
    /// SA protocol.
    pub proto: Proto,
    /// SA reqid.
    pub reqid: u32,
    /// Previous peer address.
    pub old_src: IpAddr,
    /// Previous peer port.
    pub old_sport: u16,
    /// New peer address.
    pub new_src: IpAddr,
    /// New peer port.
    pub new_sport: u16,
}

/// One endpoint move of a MIGRATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateEntry {
    /// Old tunnel source.
    pub old_src: IpAddr,
    /// Old tunnel destination.
    pub old_dst: IpAddr,
    /// New tunnel source.
    pub new_src: IpAddr,
    /// New tunnel destination.
    pub new_dst: IpAddr,
    /// Protocol.
    pub proto: u8,
    /// Mode.
    pub mode: Mode,
    /// reqid.
    pub reqid: u32,
}

/// A policy's tunnel endpoints were migrated (XFRM_MSG_MIGRATE on XFRMNLGRP_MIGRATE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrate {
    /// Policy selector.
    pub selector: Selector,
    /// Policy direction.
    pub dir: Dir,
    /// Moves.
    pub entries: Vec<MigrateEntry>,
}

/// One kernel event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// See [`Acquire`].
    Acquire(Acquire),
    /// See [`Expire`] (boxed: it carries a whole SA and is much larger than the others).
    Expire(Box<Expire>),
    /// See [`PolicyExpire`].
    PolicyExpire(PolicyExpire),
    /// See [`Mapping`].
    Mapping(Mapping),
    /// See [`Migrate`].
    Migrate(Migrate),
}

/// Subscription to XFRM multicast groups ACQUIRE, EXPIRE (SA and policy), MAPPING and MIGRATE.
///
/// If the kernel overflows our receive buffer, [`Monitor::next`] returns an error with errno
/// `ENOBUFS`: events were lost and the caller should re-read state with dumps.
pub struct Monitor {
    fd: AsyncFd<Socket>,
    rbuf: Zeroizing<Vec<u8>>,
    pending: VecDeque<Event>,
}

fn ip(a: &nx::Address, family: u16) -> Result<IpAddr> {
    match family {
        nx::AF_INET => Ok(IpAddr::V4(a.to_ipv4())),
        nx::AF_INET6 => Ok(IpAddr::V6(a.to_ipv6())),
        f => Err(Error::Decode {
            op: "decode event",
            detail: format!("family {f}"),
        }),
    }
}

fn proto(n: u8) -> Result<Proto> {
    Proto::from_number(n).ok_or_else(|| Error::Decode {
        op: "decode event",
        detail: format!("protocol {n}"),
    })
}

/// netlink-packet-xfrm's ExpireMessage drops the attributes that follow struct
/// xfrm_user_expire, but the kernel's build_expire() appends XFRMA_MARK and XFRMA_IF_ID there;
/// we parse them ourselves (struct size 232 = xfrm_usersa_info 224 + hard + padding).
fn expire_attrs(payload: &[u8]) -> Vec<XfrmAttrs> {
    use netlink_packet_core::{NlasIterator, Parseable};
    let Some(rest) = payload.get(nx::XFRM_USER_EXPIRE_LEN..) else {
        return Vec::new();
    };
    NlasIterator::new(rest)
        .filter_map(|n| XfrmAttrs::parse(&n.ok()?).ok())
        .collect()
}

/// Turns one multicast message into an event; `None` for messages we do not surface.
pub(crate) fn event_of(
    msg: XfrmMessage,
    mut expire_attrs: Vec<XfrmAttrs>,
) -> Result<Option<Event>> {
    Ok(Some(match msg {
        XfrmMessage::Acquire(m) => {
            let a = &m.acquire;
            let mut policy = wire::policy_from_kernel(&a.policy, &m.nlas)?;
            // The kernel puts the policy's mark/if_id on the acquire message itself.
            for n in &m.nlas {
                match n {
                    XfrmAttrs::Mark(x) => {
                        policy.mark = Some(Mark {
                            value: x.value,
                            mask: x.mask,
                        })
                    }
                    XfrmAttrs::IfId(x) => policy.if_id = Some(*x),
                    _ => {}
                }
            }
            let family = a.selector.family;
            // The template's family may differ from the selector's (e.g. IPv6 over IPv4);
            // xfrm_user_acquire carries no tmpl family, so use the policy's first template.
            let tfamily = match policy.templates.first().and_then(|t| t.dst) {
                Some(IpAddr::V6(_)) => nx::AF_INET6,
                Some(IpAddr::V4(_)) => nx::AF_INET,
                None => family,
            };
            Event::Acquire(Acquire {
                src: ip(&a.saddr, tfamily)?,
                dst: ip(&a.id.daddr, tfamily)?,
                proto: proto(a.id.proto)?,
                packet: wire::selector_from_kernel(&a.selector)?,
                policy,
                seq: a.seq,
            })
        }
        XfrmMessage::Expire(m) => {
            let sa = wire::sa_from_kernel(&m.expire.state, &mut expire_attrs, "decode expire")?;
            Event::Expire(Box::new(Expire {
                sa,
                hard: m.expire.hard != 0,
            }))
        }
        XfrmMessage::PolicyExpire(m) => Event::PolicyExpire(PolicyExpire {
            policy: wire::policy_from_kernel(&m.expire.pol, &m.nlas)?,
            hard: m.expire.hard != 0,
        }),
        XfrmMessage::Mapping(m) => {
            let x = &m.map;
            let f = x.id.family;
            Event::Mapping(Mapping {
                dst: ip(&x.id.daddr, f)?,
                spi: Spi(x.id.spi),
                proto: proto(x.id.proto)?,
                reqid: x.reqid,
                old_src: ip(&x.old_saddr, f)?,
                old_sport: x.old_sport,
                new_src: ip(&x.new_saddr, f)?,
                new_sport: x.new_sport,
            })
        }
        XfrmMessage::Migrate(m) => {
            let dir =
                Dir::from_kernel(m.user_policy_id.direction).ok_or_else(|| Error::Decode {
                    op: "decode migrate",
                    detail: "direction".into(),
                })?;
            let mut entries = Vec::new();
            for n in &m.nlas {
                if let XfrmAttrs::Migrate(x) = n {
                    entries.push(MigrateEntry {
                        old_src: ip(&x.old_saddr, x.old_family)?,
                        old_dst: ip(&x.old_daddr, x.old_family)?,
                        new_src: ip(&x.new_saddr, x.new_family)?,
                        new_dst: ip(&x.new_daddr, x.new_family)?,
                        proto: x.proto,
                        mode: if x.mode == nx::XFRM_MODE_TRANSPORT {
                            Mode::Transport
                        } else {
                            Mode::Tunnel
                        },
                        reqid: x.reqid,
                    });
                }
            }
            Event::Migrate(Migrate {
                selector: wire::selector_from_kernel(&m.user_policy_id.selector)?,
                dir,
                entries,
            })
        }
        _ => return Ok(None),
    }))
}

impl Monitor {
    /// Subscribes in `netns`. Must run inside a tokio runtime.
    pub fn open(netns: &Netns) -> Result<Self> {
        let groups = [
            nx::XFRMNLGRP_ACQUIRE,
            nx::XFRMNLGRP_EXPIRE,
            nx::XFRMNLGRP_MAPPING,
            nx::XFRMNLGRP_MIGRATE,
        ];
        let sock = open_socket(netns, &groups)?;
        let fd = register(sock)?;
        Ok(Monitor {
            fd,
            rbuf: Zeroizing::new(Vec::with_capacity(256 * 1024)),
            pending: VecDeque::new(),
        })
    }

    /// Waits for the next event.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            let op = "read XFRM events";
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|source| Error::Io { op, source })?;
            let rbuf = &mut self.rbuf;
            let r = guard.try_io(|fd| {
                rbuf.clear();
                fd.get_ref().recv(&mut **rbuf, 0)
            });
            match r {
                Err(_would_block) => continue,
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Err(Error::Kernel {
                        op,
                        errno: nix::errno::Errno::ENOBUFS,
                        ext_ack: None,
                    });
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(source)) => return Err(Error::Io { op, source }),
                Ok(Ok(_)) => {}
            }
            for r in parse_datagram(&self.rbuf)? {
                if let Reply::Data { ty, payload, .. } = r {
                    let msg = match XfrmMessage::parse_with_param(payload, ty) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(msg_type = ty, error = %e, "undecodable XFRM event");
                            continue;
                        }
                    };
                    let extra = if ty == nx::XFRM_MSG_EXPIRE {
                        expire_attrs(payload)
                    } else {
                        Vec::new()
                    };
                    match event_of(msg, extra) {
                        Ok(Some(ev)) => self.pending.push_back(ev),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(msg_type = ty, error = %e, "undecodable XFRM event")
                        }
                    }
                }
            }
        }
    }

    /// The events as a `futures::Stream`.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Event>> + Send {
        futures::stream::unfold(self, |mut m| async move {
            let e = m.next().await;
            Some((e, m))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, ParseableParametrized};
    use nx::monitor::{MappingMessage, MigrateMessage};

    /// Emit → parse through the wire format, as the monitor socket would see it.
    fn via_wire(m: XfrmMessage) -> XfrmMessage {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        XfrmMessage::parse_with_param(&buf[..], m.message_type()).unwrap()
    }

    #[test]
    fn mapping_event_decodes_ports_and_addresses() {
        let map = nx::UserMapping {
            id: nx::UserSaId {
                daddr: nx::Address::from_ip(&"192.0.2.1".parse().unwrap()),
                spi: 0xabcd,
                family: nx::AF_INET,
                proto: 50,
            },
            reqid: 0x7654_0003,
            old_saddr: nx::Address::from_ip(&"198.51.100.7".parse().unwrap()),
            new_saddr: nx::Address::from_ip(&"198.51.100.8".parse().unwrap()),
            old_sport: 4500,
            new_sport: 61000,
        };
        let msg = via_wire(XfrmMessage::Mapping(MappingMessage { map }));
        let Some(Event::Mapping(m)) = event_of(msg, Vec::new()).unwrap() else {
            panic!()
        };
        assert_eq!(m.spi, Spi(0xabcd));
        assert_eq!(m.reqid, 0x7654_0003);
        assert_eq!(m.old_src, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(m.new_src, "198.51.100.8".parse::<IpAddr>().unwrap());
        assert_eq!((m.old_sport, m.new_sport), (4500, 61000));
    }

    #[test]
    fn migrate_event_decodes_entries() {
        let sel = wire::selector_to_kernel(&Selector::any(false)).unwrap();
        let a = |s: &str| nx::Address::from_ip(&s.parse().unwrap());
        let mig = nx::UserMigrate {
            old_daddr: a("192.0.2.2"),
            old_saddr: a("192.0.2.1"),
            new_daddr: a("203.0.113.2"),
            new_saddr: a("192.0.2.1"),
            proto: 50,
            mode: nx::XFRM_MODE_TUNNEL,
            reserved: 0,
            reqid: 9,
            old_family: nx::AF_INET,
            new_family: nx::AF_INET,
        };
        let msg = via_wire(XfrmMessage::Migrate(MigrateMessage {
            user_policy_id: nx::UserPolicyId {
                selector: sel,
                index: 0,
                direction: 1,
            },
            nlas: vec![XfrmAttrs::Migrate(mig)],
        }));
        let Some(Event::Migrate(m)) = event_of(msg, Vec::new()).unwrap() else {
            panic!()
        };
        assert_eq!(m.dir, Dir::Out);
        assert_eq!(m.entries.len(), 1);
        assert_eq!(
            m.entries[0].new_dst,
            "203.0.113.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(m.entries[0].reqid, 9);
        assert_eq!(m.entries[0].mode, Mode::Tunnel);
    }

    #[test]
    fn expire_attrs_after_struct_are_read() {
        // struct xfrm_user_expire (232 bytes) followed by XFRMA_IF_ID = 42.
        let mut payload = vec![0u8; nx::XFRM_USER_EXPIRE_LEN];
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&nx::XFRMA_IF_ID.to_ne_bytes());
        payload.extend_from_slice(&42u32.to_ne_bytes());
        assert_eq!(expire_attrs(&payload), vec![XfrmAttrs::IfId(42)]);
        assert!(expire_attrs(&payload[..10]).is_empty());
    }
}
