//! The IKE sockets: UDP 500 and 4500 (RFC 7296 §2.23, RFC 3948), one pair per address family.
//!
//! - Each socket learns the local address a datagram arrived on (IP_PKTINFO /
//!   IPV6_RECVPKTINFO) and sends from the address the IKE SA uses, so one wildcard socket
//!   serves hubs with many addresses.
//! - The 4500 socket is marked `UDP_ENCAP_ESPINUDP`: the kernel then decapsulates
//!   UDP-encapsulated ESP itself (net/ipv4/xfrm4_input.c, `xfrm4_udp_encap_rcv`) and hands us
//!   only datagrams starting with the 4-byte non-ESP marker (IKE) or one-byte 0xff NAT
//!   keepalives (RFC 3948 §2.2-2.3). We strip the marker on receive and add it on send.
//! - The agent applies XFRM socket bypass policies to each socket so that a 0.0.0.0/0 tunnel
//!   policy never captures IKE itself.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn,
    SockaddrIn6, SockaddrStorage, bind, recvmsg, sendmsg, setsockopt, socket, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The non-ESP marker that precedes IKE messages on port 4500 (RFC 3948 §2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// What arrived on an IKE socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// An IKE message: `buf[offset..offset + len]` (marker already skipped).
    Ike {
        /// Start of the IKE message in the buffer.
        offset: usize,
        /// Its length.
        len: usize,
        /// Sender.
        remote: SocketAddr,
        /// Our address it was sent to.
        local: SocketAddr,
    },
    /// A NAT-T keepalive (RFC 3948 §2.3); nothing to do.
    Keepalive,
    /// Something that is neither (e.g. ESP the kernel had no SA for); dropped.
    Junk,
}

/// One UDP socket for IKE, plain (500) or NAT-T (4500).
#[derive(Debug)]
pub struct IkeSocket {
    sock: UdpSocket,
    natt: bool,
    local: SocketAddr,
}

impl IkeSocket {
    /// Binds `addr` (usually the wildcard and port 500 or 4500). `natt` marks the socket as
    /// UDP-encapsulation socket and turns the non-ESP marker handling on.
    pub fn bind(addr: SocketAddr, natt: bool) -> io::Result<Self> {
        Self::bind_device(addr, natt, None)
    }

    /// [`Self::bind`], the socket bound to `device` (SO_BINDTODEVICE) when given: a VRF
    /// device puts the socket in that VRF (front-door VRF, see vrf.rs). Both this and the
    /// unbound socket set SO_REUSEADDR, which lets them share the port: the kernel delivers
    /// datagrams arriving in the VRF to the bound one only.
    pub fn bind_device(addr: SocketAddr, natt: bool, device: Option<&str>) -> io::Result<Self> {
        let family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd: OwnedFd = socket(
            family,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        if let Some(dev) = device {
            setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(dev))?;
        }
        match addr {
            SocketAddr::V4(a) => {
                setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)?;
                bind(fd.as_raw_fd(), &SockaddrIn::from(a))?;
            }
            SocketAddr::V6(a) => {
                // Separate v4 and v6 sockets: mapped addresses would confuse NAT detection.
                setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
                setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?;
                bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?;
            }
        }
        if natt {
            set_udp_encap(&fd)?;
        }
        let std_sock = std::net::UdpSocket::from(fd);
        let local = std_sock.local_addr()?;
        Ok(Self {
            sock: UdpSocket::from_std(std_sock)?,
            natt,
            local,
        })
    }

    /// The bound address (port resolved when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// True for the NAT-T (4500) socket.
    pub fn is_natt(&self) -> bool {
        self.natt
    }

    /// The socket, for applying bypass policies.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Receives one datagram into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let fd = self.sock.as_raw_fd();
        let (len, remote, dst) = self
            .sock
            .async_io(Interest::READABLE, || {
                let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo);
                let mut iov = [IoSliceMut::new(buf)];
                let msg =
                    recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
                        .map_err(io::Error::from)?;
                let mut dst = None;
                for c in msg.cmsgs().map_err(io::Error::from)? {
                    match c {
                        ControlMessageOwned::Ipv4PacketInfo(i) => {
                            dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))))
                        }
                        ControlMessageOwned::Ipv6PacketInfo(i) => {
                            dst = Some(IpAddr::V6(Ipv6Addr::from(i.ipi6_addr.s6_addr)))
                        }
                        _ => {}
                    }
                }
                let remote = msg.address.and_then(|a| to_socket_addr(&a));
                Ok((msg.bytes, remote, dst))
            })
            .await?;
        let Some(remote) = remote else {
            return Ok(Received::Junk);
        };
        let local = SocketAddr::new(dst.unwrap_or(self.local.ip()), self.local.port());
        if !self.natt {
            return Ok(Received::Ike {
                offset: 0,
                len,
                remote,
                local,
            });
        }
        Ok(match &buf[..len] {
            [0xff] => Received::Keepalive,
            [0, 0, 0, 0, ..] => Received::Ike {
                offset: 4,
                len: len - 4,
                remote,
                local,
            },
            _ => Received::Junk,
        })
    }

    /// Sends `msg` to `remote` from our address `local` (adding the non-ESP marker on NAT-T).
    pub async fn send(&self, local: IpAddr, remote: SocketAddr, msg: &[u8]) -> io::Result<()> {
        let marker: &[u8] = if self.natt { &NON_ESP_MARKER } else { &[] };
        self.send_parts(local, remote, marker, msg).await
    }

    /// Sends a NAT-T keepalive: the single octet 0xff, without a marker (RFC 3948 §2.3).
    pub async fn send_keepalive(&self, local: IpAddr, remote: SocketAddr) -> io::Result<()> {
        self.send_parts(local, remote, &[], &[0xff]).await
    }

    async fn send_parts(
        &self,
        local: IpAddr,
        remote: SocketAddr,
        marker: &[u8],
        msg: &[u8],
    ) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        let iov = [IoSlice::new(marker), IoSlice::new(msg)];
        self.sock
            .async_io(Interest::WRITABLE, || {
                let res = match (remote, local) {
                    (SocketAddr::V4(r), IpAddr::V4(l)) => {
                        let info = nix::libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: nix::libc::in_addr {
                                s_addr: u32::from(l).to_be(),
                            },
                            ipi_addr: nix::libc::in_addr { s_addr: 0 },
                        };
                        let cm = [ControlMessage::Ipv4PacketInfo(&info)];
                        let cm: &[ControlMessage<'_>] = if l.is_unspecified() { &[] } else { &cm };
                        sendmsg(fd, &iov, cm, MsgFlags::empty(), Some(&SockaddrIn::from(r)))
                    }
                    (SocketAddr::V6(r), IpAddr::V6(l)) => {
                        let info = nix::libc::in6_pktinfo {
                            ipi6_addr: nix::libc::in6_addr {
                                s6_addr: l.octets(),
                            },
                            ipi6_ifindex: 0,
                        };
                        let cm = [ControlMessage::Ipv6PacketInfo(&info)];
                        let cm: &[ControlMessage<'_>] = if l.is_unspecified() { &[] } else { &cm };
                        sendmsg(fd, &iov, cm, MsgFlags::empty(), Some(&SockaddrIn6::from(r)))
                    }
                    _ => return Err(io::Error::other("address family mismatch")),
                };
                res.map(drop).map_err(io::Error::from)
            })
            .await
    }
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// `setsockopt(fd, SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)`: nix has no wrapper for it.
#[allow(unsafe_code)]
fn set_udp_encap(fd: &OwnedFd) -> io::Result<()> {
    // include/uapi/linux/udp.h: UDP_ENCAP_ESPINUDP = 2 (draft-ietf-ipsec-udp-encaps-06 / RFC 3948)
    const UDP_ENCAP_ESPINUDP: nix::libc::c_int = 2;
    let val = UDP_ENCAP_ESPINUDP;
    // SAFETY: fd is a valid open socket; the option value is a c_int that outlives the call
    // and its exact size is passed.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            nix::libc::SOL_UDP,
            nix::libc::UDP_ENCAP,
            (&val as *const nix::libc::c_int).cast(),
            size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(port: u16, natt: bool) -> IkeSocket {
        IkeSocket::bind(SocketAddr::from(([127, 0, 0, 1], port)), natt).unwrap()
    }

    #[tokio::test]
    async fn plain_socket_reports_local_and_remote() {
        let a = loopback(0, false);
        let b = loopback(0, false);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        a.send(lo, b.local_addr(), b"hello ike").await.unwrap();
        let mut buf = [0u8; 64];
        let r = b.recv(&mut buf).await.unwrap();
        assert_eq!(
            r,
            Received::Ike {
                offset: 0,
                len: 9,
                remote: a.local_addr(),
                local: b.local_addr()
            }
        );
        assert_eq!(&buf[..9], b"hello ike");
    }

    #[tokio::test]
    async fn natt_socket_adds_and_strips_the_marker() {
        let a = loopback(0, true);
        let plain = loopback(0, false);
        let b = loopback(0, true);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        a.send(lo, b.local_addr(), b"ike!").await.unwrap();
        let mut buf = [0u8; 64];
        match b.recv(&mut buf).await.unwrap() {
            Received::Ike { offset, len, .. } => assert_eq!(&buf[offset..offset + len], b"ike!"),
            other => panic!("expected IKE, got {other:?}"),
        }
        // The kernel swallows one-byte 0xff keepalives on an encap socket itself
        // (xfrm4_udp_encap_rcv drops them), so the next datagram we get is the IKE one
        // sent after it.
        plain.send(lo, b.local_addr(), &[0xff]).await.unwrap();
        a.send(lo, b.local_addr(), b"next").await.unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), b.recv(&mut buf))
            .await
            .expect("IKE datagram after a keepalive")
            .unwrap();
        assert!(
            matches!(
                r,
                Received::Ike {
                    offset: 4,
                    len: 4,
                    ..
                }
            ),
            "{r:?}"
        );
    }
}
