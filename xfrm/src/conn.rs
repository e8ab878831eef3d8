//! The NETLINK_XFRM request layer: sequence numbers, acks, dumps and pipelined batches.
//!
//! Why not `netlink-proto`: we need exact control of the send buffer (it holds keys and must be
//! zeroized) and we want batches that put hundreds of requests into one `sendmsg`. The kernel
//! processes every message of a NETLINK_XFRM datagram synchronously inside `sendmsg`
//! (xfrm_netlink_rcv → netlink_rcv_skb under xfrm_cfg_mutex) and always answers a failed message
//! with an NLMSG_ERROR, acked or not. So a batch sends its messages without NLM_F_ACK, drains
//! errors after each datagram, and asks for one ack on the last message as a barrier.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
};
use netlink_packet_core::{NlaBuffer, NlasIterator, ParseableParametrized};
use netlink_packet_xfrm::XfrmMessage;
use nix::errno::Errno;
use rtnetlink::sys::{
    Socket, SocketAddr,
    protocols::{NETLINK_ROUTE, NETLINK_XFRM},
};
use tokio::io::unix::AsyncFd;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::wire::Body;

const HDR: usize = 16;
/// Datagram size for batches. Each datagram's errors are drained before the next is sent, so
/// the receive buffer only has to hold the error replies of one datagram.
const BATCH_DATAGRAM: usize = 32 * 1024;
const RECV_BUF: usize = 256 * 1024;
/// `NLM_F_CAPPED` / `NLM_F_ACK_TLVS` (include/uapi/linux/netlink.h), flags on NLMSG_ERROR.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG` (include/uapi/linux/netlink.h).
const NLMSGERR_ATTR_MSG: u16 = 1;

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { op, source }
}

/// Opens a NETLINK_XFRM socket in `netns`, optionally joined to multicast `groups`.
pub(crate) fn open_socket(netns: &Netns, groups: &[u32]) -> Result<Socket> {
    open_family(netns, NETLINK_XFRM, "open NETLINK_XFRM socket", groups)
}

/// Opens a NETLINK_ROUTE socket in `netns` for the requests rtnetlink's message types cannot
/// carry (nexthop objects, RTM_NEWNEXTHOP: see [`crate::nexthop`]).
pub(crate) fn open_route_socket(netns: &Netns) -> Result<Socket> {
    open_family(netns, NETLINK_ROUTE, "open NETLINK_ROUTE socket", &[])
}

fn open_family(netns: &Netns, family: isize, op: &'static str, groups: &[u32]) -> Result<Socket> {
    let groups = groups.to_vec();
    netns.run(move || {
        let mut s = Socket::new(family).map_err(io_err(op))?;
        s.bind(&SocketAddr::new(0, 0)).map_err(io_err(op))?;
        // CAP_ACK: error replies echo only the header, never the request body (which may hold
        // keys). EXT_ACK: the kernel adds its human-readable reason.
        s.set_cap_ack(true).map_err(io_err(op))?;
        s.set_ext_ack(true).map_err(io_err(op))?;
        for g in &groups {
            s.add_membership(*g)
                .map_err(io_err("join XFRM multicast group"))?;
        }
        s.set_non_blocking(true).map_err(io_err(op))?;
        Ok(s)
    })
}

/// Registers a netlink socket with the current tokio reactor.
pub(crate) fn register(sock: Socket) -> Result<AsyncFd<Socket>> {
    // SAFETY: tokio requires that the fd stays open and keeps referring to the same file
    // description for the AsyncFd's lifetime. `netlink_sys::Socket` owns its fd (closes it only
    // in Drop, and the AsyncFd owns the Socket) and `as_raw_fd()` always returns that one fd.
    #[allow(unsafe_code)]
    let r = unsafe { AsyncFd::register(sock) };
    r.map_err(|e| Error::Io {
        op: "register netlink socket with tokio",
        source: e.into(),
    })
}

/// One parsed netlink message from a reply datagram.
pub(crate) enum Reply<'a> {
    Ack {
        seq: u32,
    },
    Err {
        seq: u32,
        errno: Errno,
        ext_ack: Option<String>,
    },
    Done {
        seq: u32,
        code: i32,
    },
    Data {
        seq: u32,
        ty: u16,
        flags: u16,
        payload: &'a [u8],
    },
}

fn ext_ack(tlvs: &[u8]) -> Option<String> {
    for nla in NlasIterator::new(tlvs) {
        let nla: NlaBuffer<&[u8]> = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let v = nla.value();
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            return Some(String::from_utf8_lossy(&v[..end]).into_owned());
        }
    }
    None
}

pub(crate) fn parse_datagram(mut buf: &[u8]) -> Result<Vec<Reply<'_>>> {
    let bad = |d: &str| Error::Decode {
        op: "read netlink reply",
        detail: d.to_string(),
    };
    let mut out = Vec::new();
    while buf.len() >= HDR {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let ty = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        let flags = u16::from_ne_bytes(buf[6..8].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        if len < HDR || len > buf.len() {
            return Err(bad("netlink message length out of range"));
        }
        let payload = &buf[HDR..len];
        match ty {
            NLMSG_ERROR => {
                if payload.len() < 4 + HDR {
                    return Err(bad("short NLMSG_ERROR"));
                }
                let code = i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
                if code == 0 {
                    out.push(Reply::Ack { seq });
                } else {
                    // Echoed request: header only when capped, else the whole request.
                    let echoed = if flags & NLM_F_CAPPED != 0 {
                        HDR
                    } else {
                        u32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes")) as usize
                    };
                    let tlv_start = (4 + echoed).min(payload.len());
                    let ext = if flags & NLM_F_ACK_TLVS != 0 {
                        ext_ack(&payload[tlv_start..])
                    } else {
                        None
                    };
                    out.push(Reply::Err {
                        seq,
                        errno: Errno::from_raw(-code),
                        ext_ack: ext,
                    });
                }
            }
            NLMSG_DONE => {
                let code = if payload.len() >= 4 {
                    i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"))
                } else {
                    0
                };
                out.push(Reply::Done { seq, code });
            }
            _ => out.push(Reply::Data {
                seq,
                ty,
                flags,
                payload,
            }),
        }
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    Ok(out)
}

/// Appends one netlink message (header + body) to `out`, which the caller sized exactly.
fn push_frame(out: &mut Vec<u8>, body: &Body, flags: u16, seq: u32) {
    let len = (HDR + body.bytes.len()) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&body.msg_type.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&body.bytes);
    let pad = ((len as usize + 3) & !3) - len as usize;
    out.extend_from_slice(&[0u8; 3][..pad]);
}

fn frame_len(body: &Body) -> usize {
    (HDR + body.bytes.len() + 3) & !3
}

/// A request/response netlink socket: NETLINK_XFRM, or NETLINK_ROUTE for nexthop objects
/// (rtnetlink_rcv also runs every message of a datagram inside `sendmsg`, under the RTNL, and
/// answers a failed one with NLMSG_ERROR, so batches work alike). Requests are serialized by
/// a mutex; a batch holds the mutex for its whole run.
pub(crate) struct Conn {
    inner: tokio::sync::Mutex<Inner>,
}

struct Inner {
    fd: AsyncFd<Socket>,
    seq: u32,
    rbuf: Zeroizing<Vec<u8>>,
    /// The owning handle's request counter (see [`crate::Handle::requests`]).
    requests: Arc<AtomicU64>,
}

impl Conn {
    /// Wraps a socket opened by [`open_socket`]; must run inside a tokio runtime.
    /// Every request message sent is counted in `requests`.
    pub(crate) fn new(sock: Socket, requests: Arc<AtomicU64>) -> Result<Self> {
        let fd = register(sock)?;
        Ok(Conn {
            inner: tokio::sync::Mutex::new(Inner {
                fd,
                seq: 0,
                rbuf: Zeroizing::new(Vec::with_capacity(RECV_BUF)),
                requests,
            }),
        })
    }

    /// Sends one request with NLM_F_ACK and waits for its ack.
    pub(crate) async fn ack(&self, body: Body) -> Result<()> {
        let mut r = self.batch(std::slice::from_ref(&body)).await;
        r.pop().unwrap_or(Ok(()))
    }

    /// Sends one request and returns the data messages of the reply (all parts of a dump).
    pub(crate) async fn fetch(&self, body: Body, dump: bool) -> Result<Vec<XfrmMessage>> {
        self.fetch_with(body, dump, |ty, payload| {
            XfrmMessage::parse_with_param(payload, ty).map_err(|e| e.to_string())
        })
        .await
    }

    /// As [`Conn::fetch`], each data message decoded by `parse(type, payload)` (for sockets
    /// of other netlink families, e.g. NETLINK_ROUTE's nexthops).
    pub(crate) async fn fetch_with<T>(
        &self,
        body: Body,
        dump: bool,
        parse: impl Fn(u16, &[u8]) -> std::result::Result<T, String>,
    ) -> Result<Vec<T>> {
        let mut inner = self.inner.lock().await;
        // A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is retried.
        for _ in 0..5 {
            match inner.fetch_once(&body, dump, &parse).await? {
                Some(v) => return Ok(v),
                None => continue,
            }
        }
        Err(Error::Kernel {
            op: body.op,
            errno: Errno::EINTR,
            ext_ack: None,
        })
    }

    /// Pipelined execution: many requests per datagram, one ack at the end. Returns one result
    /// per body, in order.
    pub(crate) async fn batch(&self, bodies: &[Body]) -> Vec<Result<()>> {
        let mut inner = self.inner.lock().await;
        inner.batch(bodies).await
    }
}

impl Inner {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    async fn send(&self, buf: &[u8], op: &'static str) -> Result<()> {
        loop {
            let mut guard = self.fd.writable().await.map_err(io_err(op))?;
            match guard.try_io(|fd| fd.get_ref().send(buf, 0)) {
                Ok(r) => return r.map(|_| ()).map_err(io_err(op)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram into `rbuf`, waiting for it.
    async fn recv(&mut self, op: &'static str) -> Result<()> {
        loop {
            let mut guard = self.fd.readable().await.map_err(io_err(op))?;
            let rbuf = &mut self.rbuf;
            match guard.try_io(|fd| {
                rbuf.clear();
                fd.get_ref().recv(&mut **rbuf, 0)
            }) {
                Ok(r) => return r.map(|_| ()).map_err(io_err(op)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram if one is queued.
    fn try_recv(&mut self, op: &'static str) -> Result<bool> {
        self.rbuf.clear();
        match self.fd.get_ref().recv(&mut *self.rbuf, 0) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(Error::Io { op, source: e }),
        }
    }

    async fn fetch_once<T>(
        &mut self,
        body: &Body,
        dump: bool,
        parse: &impl Fn(u16, &[u8]) -> std::result::Result<T, String>,
    ) -> Result<Option<Vec<T>>> {
        let seq = self.next_seq();
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let mut frame = Zeroizing::new(Vec::with_capacity(frame_len(body)));
        push_frame(&mut frame, body, flags, seq);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.send(&frame, body.op).await?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            self.recv(body.op).await?;
            for r in parse_datagram(&self.rbuf)? {
                match r {
                    Reply::Data {
                        seq: s,
                        ty,
                        flags,
                        payload,
                    } if s == seq => {
                        interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        let msg = parse(ty, payload).map_err(|detail| Error::Decode {
                            op: body.op,
                            detail,
                        })?;
                        out.push(msg);
                    }
                    Reply::Ack { seq: s } if s == seq => return Ok(Some(out)),
                    Reply::Err {
                        seq: s,
                        errno,
                        ext_ack,
                    } if s == seq => {
                        return Err(Error::from_errno(body.op, errno, ext_ack));
                    }
                    Reply::Done { seq: s, code } if s == seq => {
                        if code < 0 {
                            return Err(Error::from_errno(body.op, Errno::from_raw(-code), None));
                        }
                        return Ok(if interrupted { None } else { Some(out) });
                    }
                    _ => {} // stale reply of an earlier, abandoned request
                }
            }
        }
    }

    async fn batch(&mut self, bodies: &[Body]) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(bodies.len());
        results.extend(bodies.iter().map(|_| Ok(())));
        if bodies.is_empty() {
            return results;
        }
        // Sequence numbers are consecutive from `first`, so seq → index is a subtraction.
        if self.seq.checked_add(bodies.len() as u32 + 1).is_none() {
            self.seq = 0;
        }
        let first = self.seq + 1;
        let last_idx = bodies.len() - 1;
        let mut i = 0;
        while i < bodies.len() {
            // Size this datagram exactly before filling it (see wire::body on why).
            let start = i;
            let mut size = 0;
            while i < bodies.len() && (i == start || size + frame_len(&bodies[i]) <= BATCH_DATAGRAM)
            {
                size += frame_len(&bodies[i]);
                i += 1;
            }
            let mut dgram = Zeroizing::new(Vec::with_capacity(size));
            for (k, b) in bodies[start..i].iter().enumerate() {
                let idx = start + k;
                let seq = self.next_seq();
                debug_assert_eq!(seq, first + idx as u32);
                let ack = if idx == last_idx { NLM_F_ACK } else { 0 };
                push_frame(&mut dgram, b, NLM_F_REQUEST | ack | b.flags, seq);
            }
            self.requests
                .fetch_add((i - start) as u64, Ordering::Relaxed);
            if let Err(e) = self.send(&dgram, bodies[start].op).await {
                let errno = e.errno().unwrap_or(Errno::EIO);
                for r in &mut results[start..] {
                    *r = Err(Error::Io {
                        op: "send batch",
                        source: io::Error::from_raw_os_error(errno as i32),
                    });
                }
                return results;
            }
            // Drain the error replies this datagram produced (already queued: the kernel
            // processed it synchronously inside send()).
            loop {
                match self.try_recv("read batch replies") {
                    Ok(true) => {
                        if self.absorb(bodies, first, &mut results) {
                            return results;
                        }
                    }
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "netlink batch drain failed");
                        break;
                    }
                }
            }
        }
        loop {
            if let Err(e) = self.recv("read batch ack").await {
                results[last_idx] = Err(e);
                return results;
            }
            if self.absorb(bodies, first, &mut results) {
                return results;
            }
        }
    }

    /// Files the replies in `rbuf` into `results`; true once the final ack/error is seen.
    fn absorb(&self, bodies: &[Body], first: u32, results: &mut [Result<()>]) -> bool {
        let last = first.wrapping_add(bodies.len() as u32 - 1);
        let mut done = false;
        let replies = match parse_datagram(&self.rbuf) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable netlink reply in batch");
                return false;
            }
        };
        for r in replies {
            let (seq, res) = match r {
                Reply::Ack { seq } => (seq, None),
                Reply::Err {
                    seq,
                    errno,
                    ext_ack,
                } => (seq, Some((errno, ext_ack))),
                _ => continue,
            };
            let idx = seq.wrapping_sub(first) as usize;
            if idx >= bodies.len() {
                continue;
            }
            if let Some((errno, ext_ack)) = res {
                results[idx] = Err(Error::from_errno(bodies[idx].op, errno, ext_ack));
            }
            if seq == last {
                done = true;
            }
        }
        done
    }
}
