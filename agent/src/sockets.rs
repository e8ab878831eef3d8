//! The IKE sockets: UDP 500 and 4500 for IPv4 and IPv6 in the daemon's namespace, and the
//! same set bound to each front-door VRF device (see vrf.rs), each with a reader task that
//! forwards datagrams to the daemon. Every socket gets the per-socket bypass policy, since a
//! 0/0 tunnel policy would otherwise capture IKE itself.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
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
pub fn bind(g: &Global, tx: &mpsc::Sender<Datagram>) -> Result<Sockets> {
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
fn spawn_reader(s: Arc<IkeSocket>, tx: mpsc::Sender<Datagram>) -> tokio::task::AbortHandle {
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
                    let bytes = buf[offset..offset + len].to_vec();
                    if tx
                        .send(Datagram {
                            bytes,
                            local,
                            remote,
                        })
                        .await
                        .is_err()
                    {
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
    tx: &mpsc::Sender<Datagram>,
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
