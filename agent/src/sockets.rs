//! The IKE sockets: UDP 500 and 4500 for IPv4 and IPv6 in the daemon's namespace, and the
//! same set bound to each front-door VRF device (see vrf.rs), each with a reader task that
//! forwards datagrams to the daemon. Every socket gets the per-socket bypass policy, since a
//! 0/0 tunnel policy would otherwise capture IKE itself.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Global;
use crate::plan::Plan;
use crate::udp::{IkeSocket, Received};

/// One received IKE datagram (the 4500 non-ESP marker already stripped).
pub struct Datagram {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Our address it arrived on.
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
}

/// Where the socket readers put datagrams: three queues, so that a flood of requests for new
/// IKE SAs cannot delay the exchanges of established peers (their DPD, rekeys, IKE_AUTH),
/// nor the initiators that have proved their address. A request for a new IKE SA
/// (IKE_SA_INIT with a zero responder SPI, RFC 7296 §3.1) goes to a short queue and is
/// shed, counted, when that queue is full; one that starts with a COOKIE (the retry of an
/// initiator we asked for one, §2.6) has a short queue of its own, served before the fresh
/// requests: a spoofing flood cannot fill it, since its cookies come back only to real
/// addresses. Everything else goes to the main queue, which the daemon serves first. The
/// reader never blocks on a new-SA queue, so it keeps draining the socket and a flood costs
/// the kernel's buffer nothing.
#[derive(Clone)]
pub struct Feed {
    established: mpsc::Sender<Datagram>,
    with_cookie: mpsc::Sender<Datagram>,
    new_sa: mpsc::Sender<Datagram>,
    shed: Arc<AtomicU64>,
}

/// The daemon's ends of the [`Feed`].
pub struct Queues {
    /// Everything but new-SA requests; served first.
    pub established: mpsc::Receiver<Datagram>,
    /// New-SA requests that echo a cookie.
    pub with_cookie: mpsc::Receiver<Datagram>,
    /// Other new-SA requests.
    pub new_sa: mpsc::Receiver<Datagram>,
}

/// Depth of the new-SA queue: deep enough for a burst of honest spokes reconnecting to a
/// hub, short enough that a request does not wait long behind a flood.
const NEW_SA_QUEUE: usize = 512;

impl Feed {
    /// A feed and its queues.
    pub fn new() -> (Self, Queues) {
        let (established, established_rx) = mpsc::channel(1024);
        let (with_cookie, with_cookie_rx) = mpsc::channel(NEW_SA_QUEUE);
        let (new_sa, new_sa_rx) = mpsc::channel(NEW_SA_QUEUE);
        (
            Self {
                established,
                with_cookie,
                new_sa,
                shed: Arc::default(),
            },
            Queues {
                established: established_rx,
                with_cookie: with_cookie_rx,
                new_sa: new_sa_rx,
            },
        )
    }

    /// New-SA requests shed so far because their queue was full.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Queues one datagram; false when the daemon is gone. A shed request is not even
    /// copied out of the reader's buffer.
    async fn put(&self, bytes: &[u8], local: SocketAddr, remote: SocketAddr) -> bool {
        let d = |bytes: &[u8]| Datagram {
            bytes: bytes.to_vec(),
            local,
            remote,
        };
        let queue = match classify(bytes) {
            Class::Other => return self.established.send(d(bytes)).await.is_ok(),
            Class::NewSaWithCookie => &self.with_cookie,
            Class::NewSa => &self.new_sa,
        };
        match queue.try_reserve() {
            Ok(slot) => {
                slot.send(d(bytes));
                true
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(())) => false,
        }
    }
}

/// Which queue a datagram goes to.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// An IKE_SA_INIT request for a new IKE SA: responder SPI zero, exchange type 34, the
    /// Initiator flag set and the Response flag not (RFC 7296 §3.1).
    NewSa,
    /// The same, whose first payload is a COOKIE notify (§2.6 puts it first): a Notify
    /// (41) right after the header, with no SPI, of type COOKIE (16390).
    NewSaWithCookie,
    /// Anything else.
    Other,
}

/// Reads a datagram's class off its first octets (no decoding; the engine checks it all).
fn classify(b: &[u8]) -> Class {
    const IKE_SA_INIT: u8 = 34;
    const FLAG_I: u8 = 0x08;
    const FLAG_R: u8 = 0x20;
    const NOTIFY: u8 = 41;
    const COOKIE: [u8; 2] = 16390u16.to_be_bytes();
    let new_sa = b.len() >= 28
        && b[8..16].iter().all(|&x| x == 0)
        && b[18] == IKE_SA_INIT
        && b[19] & (FLAG_I | FLAG_R) == FLAG_I;
    if !new_sa {
        Class::Other
    } else if b[16] == NOTIFY && b.len() >= 36 && b[33] == 0 && b[34..36] == COOKIE {
        Class::NewSaWithCookie
    } else {
        Class::NewSa
    }
}

pub struct Sockets {
    list: Vec<Arc<IkeSocket>>,
    /// Front-door VRF (see vrf.rs) of each local address, and that VRF's own sockets, each
    /// with its reader task: a reload that removes the VRF aborts the reader, and dropping
    /// the last reference closes the socket.
    fvrf_of: HashMap<IpAddr, String>,
    vrf: Vec<VrfSocket>,
}

struct VrfSocket {
    vrf: String,
    socket: Arc<IkeSocket>,
    reader: tokio::task::AbortHandle,
}

impl Sockets {
    /// The socket to send from `local` with (its front-door VRF's, if it has one).
    pub fn for_local(&self, local: SocketAddr) -> Option<&Arc<IkeSocket>> {
        let fits = |s: &IkeSocket| {
            s.local_addr().port() == local.port() && s.local_addr().is_ipv4() == local.is_ipv4()
        };
        if let Some(v) = self.fvrf_of.get(&local.ip()) {
            return self
                .vrf
                .iter()
                .find(|s| s.vrf == *v && fits(&s.socket))
                .map(|s| &s.socket);
        }
        self.list.iter().find(|s| fits(s))
    }
}
/// Binds the main sockets (IPv6 is optional) and starts their readers.
pub fn bind(g: &Global, tx: &Feed) -> Result<Sockets> {
    let mut list = Vec::new();
    let v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    for (ip, required) in [(v4, true), (v6, false)] {
        for (port, natt) in [(g.ike_port, false), (g.nat_t_port, true)] {
            let addr = SocketAddr::new(ip, port);
            let s = match IkeSocket::bind(addr, natt) {
                Ok(s) => s,
                Err(e) if !required => {
                    warn!("IPv6 IKE socket {addr} unavailable: {e}");
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("bind IKE socket {addr}")),
            };
            // Without a bypass policy a 0.0.0.0/0 tunnel policy would capture IKE itself.
            xfrm::bypass_socket(s.fd(), ip.is_ipv6())
                .with_context(|| format!("bypass policy on {addr}"))?;
            let s = Arc::new(s);
            list.push(s.clone());
            // The main sockets live as long as the daemon.
            let _ = spawn_reader(s, tx.clone());
        }
    }
    Ok(Sockets {
        list,
        fvrf_of: HashMap::new(),
        vrf: Vec::new(),
    })
}

/// Reads IKE datagrams from one socket into the daemon's channel.
fn spawn_reader(s: Arc<IkeSocket>, tx: Feed) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            match s.recv(&mut buf).await {
                Ok(Received::Ike {
                    offset,
                    len,
                    remote,
                    local,
                }) => {
                    if !tx.put(&buf[offset..offset + len], local, remote).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!("IKE socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .abort_handle()
}

/// IKE sockets of each front-door VRF (bound to the VRF device, see vrf.rs), for the plan's
/// tunnels: the VRF devices are made to exist first, since binding needs them. Called at
/// start and on every reload: sockets of VRFs the plan no longer names are closed, those of
/// new ones opened, the others kept (with their reader) untouched.
pub async fn bind_vrf(
    h: &xfrm::Handle,
    g: &Global,
    plan: &Plan,
    tx: &Feed,
    socks: &mut Sockets,
) -> Result<()> {
    socks.fvrf_of =
        crate::vrf::fvrf_of_local(plan.tunnels.values().map(|t| (t.local, t.fvrf.as_ref())));
    let wanted: BTreeSet<&str> = plan
        .tunnels
        .values()
        .filter_map(|t| t.fvrf.as_ref().map(|v| v.name.as_str()))
        .collect();
    let before = socks.vrf.len();
    socks.vrf.retain(|s| {
        let keep = wanted.contains(s.vrf.as_str());
        if !keep {
            s.reader.abort();
        }
        keep
    });
    if socks.vrf.len() != before {
        info!(
            closed = before - socks.vrf.len(),
            "closed the IKE sockets of front-door VRFs no longer used"
        );
    }
    for v in plan.tunnels.values().filter_map(|t| t.fvrf.as_ref()) {
        if socks.vrf.iter().any(|s| s.vrf == v.name) {
            continue;
        }
        crate::vrf::ensure(h, v).await?;
        for ip in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            for (port, natt) in [(g.ike_port, false), (g.nat_t_port, true)] {
                let addr = SocketAddr::new(ip, port);
                let s = match IkeSocket::bind_device(addr, natt, Some(&v.name)) {
                    Ok(s) => s,
                    Err(e) if ip.is_ipv6() => {
                        warn!(vrf = %v.name, "IPv6 IKE socket {addr} unavailable: {e}");
                        continue;
                    }
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("bind IKE socket {addr} in vrf {}", v.name));
                    }
                };
                xfrm::bypass_socket(s.fd(), ip.is_ipv6())
                    .with_context(|| format!("bypass policy on {addr} in vrf {}", v.name))?;
                let s = Arc::new(s);
                let reader = spawn_reader(s.clone(), tx.clone());
                socks.vrf.push(VrfSocket {
                    vrf: v.name.clone(),
                    socket: s,
                    reader,
                });
                info!(vrf = %v.name, %addr, "IKE socket bound to front-door VRF");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 28-octet IKE header with the given responder SPI, exchange type and flags.
    fn header(spi_r: u64, exchange: u8, flags: u8) -> Vec<u8> {
        let mut b = vec![0u8; 28];
        b[..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        b[8..16].copy_from_slice(&spi_r.to_be_bytes());
        b[17] = 0x20;
        b[18] = exchange;
        b[19] = flags;
        b[24..28].copy_from_slice(&28u32.to_be_bytes());
        b
    }

    async fn put(feed: &Feed, bytes: Vec<u8>) -> bool {
        let local = "192.0.2.1:500".parse().unwrap();
        feed.put(&bytes, local, "192.0.2.2:500".parse().unwrap())
            .await
    }

    #[test]
    fn only_requests_for_a_new_ike_sa_are_new_sa_requests() {
        let is_new_sa_request = |b: &[u8]| classify(b) == Class::NewSa;
        assert!(is_new_sa_request(&header(0, 34, 0x08)));
        assert!(
            !is_new_sa_request(&header(7, 34, 0x08)),
            "responder SPI set"
        );
        assert!(!is_new_sa_request(&header(0, 34, 0x20)), "a response");
        assert!(!is_new_sa_request(&header(0, 34, 0x28)), "a response");
        assert!(!is_new_sa_request(&header(0, 35, 0x08)), "IKE_AUTH");
        assert!(!is_new_sa_request(&header(0, 34, 0x08)[..27]), "short");
    }

    /// A new-SA request starting with a Notify payload of `ty` (RFC 7296 §3.10), SPI size 0.
    fn with_notify(ty: u16) -> Vec<u8> {
        let mut b = header(0, 34, 0x08);
        b[16] = 41;
        b.extend_from_slice(&[40, 0, 0, 9, 0, 0]);
        b.extend_from_slice(&ty.to_be_bytes());
        b.push(7);
        b
    }

    #[test]
    fn a_request_that_echoes_a_cookie_is_told_apart() {
        assert_eq!(classify(&with_notify(16390)), Class::NewSaWithCookie);
        assert_eq!(
            classify(&with_notify(16388)),
            Class::NewSa,
            "NAT_DETECTION_SOURCE_IP"
        );
        assert_eq!(classify(&with_notify(16390)[..35]), Class::NewSa, "short");
        let mut response = with_notify(16390);
        response[19] = 0x20;
        assert_eq!(classify(&response), Class::Other);
    }

    #[tokio::test]
    async fn cookie_retries_are_queued_apart_from_a_flood_of_fresh_requests() {
        let (feed, mut q) = Feed::new();
        for _ in 0..NEW_SA_QUEUE + 10 {
            assert!(put(&feed, header(0, 34, 0x08)).await);
        }
        assert_eq!(feed.shed(), 10);
        assert!(put(&feed, with_notify(16390)).await);
        assert_eq!(feed.shed(), 10, "the cookie retry was not shed");
        assert!(q.with_cookie.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_flood_of_new_sa_requests_is_shed_and_established_traffic_still_queues() {
        let (feed, mut q) = Feed::new();
        for _ in 0..NEW_SA_QUEUE + 100 {
            assert!(put(&feed, header(0, 34, 0x08)).await);
        }
        assert_eq!(feed.shed(), 100);
        // An established peer's INFORMATIONAL (DPD) is queued apart and not shed.
        assert!(put(&feed, header(9, 37, 0x08)).await);
        let d = q.established.try_recv().expect("queued on the main queue");
        assert_eq!(d.bytes[18], 37);
        assert_eq!(feed.shed(), 100);
        let mut queued = 0;
        while q.new_sa.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, NEW_SA_QUEUE);
        drop(q);
        assert!(!put(&feed, header(0, 34, 0x08)).await, "daemon gone");
    }
}
