//! Two IKEv1 engines in memory on a virtual clock, with a wire that can drop or duplicate
//! (the IKEv2 harness's shape, `crate::tests::pair`).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::config::*;
use crate::endpoint::*;
use crate::secret::Secret;
use crate::transform::DhGroup;
use crate::transform::Encr;
use crate::transform::Esn;
use crate::transform::Integ;
use crate::v1::config::*;
use crate::v1::endpoint::Command as V1Command;
use crate::v1::endpoint::Endpoint as V1Endpoint;
use crate::v1::keys::HashAlg;
use crate::wire::TrafficSelector;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Deliver,
    Drop,
    Duplicate,
}

pub(crate) type Filter = Box<dyn FnMut(Side, &Transmit) -> Verdict>;

pub(crate) struct TestEndpoint {
    pub(crate) ep: V1Endpoint,
    pub(crate) inbound: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub(crate) installs: Vec<ChildSaInstall>,
    /// (when, Child SA) of each outbound SA installed after its inbound one (`Halves`).
    pub(crate) outbound_later: Vec<(Instant, ChildSaId)>,
    pub(crate) removes: Vec<ChildSaRemove>,
    pub(crate) events: Vec<Event>,
    pub(crate) log: Vec<&'static str>,
    pub(crate) sent: Vec<Transmit>,
    pub(crate) keepalives: Vec<(SocketAddr, SocketAddr)>,
    pub(crate) encap_updates: Vec<ChildSaEncapUpdate>,
}

impl TestEndpoint {
    fn new(config: V1Config, seed: u8) -> Self {
        Self {
            ep: V1Endpoint::new(Arc::new(config), [seed; 32]),
            inbound: VecDeque::new(),
            installs: Vec::new(),
            outbound_later: Vec::new(),
            removes: Vec::new(),
            events: Vec::new(),
            log: Vec::new(),
            sent: Vec::new(),
            keepalives: Vec::new(),
            encap_updates: Vec::new(),
        }
    }

    pub(crate) fn live_children(&self) -> Vec<&ChildSaInstall> {
        self.installs
            .iter()
            .filter(|i| !self.removes.iter().any(|r| r.child == i.child))
            .collect()
    }

    pub(crate) fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }

    pub(crate) fn count_events(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

pub(crate) const A_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub(crate) const B_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

pub(crate) fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

pub(crate) fn policy(priority: u32, encr: Encr, hash: HashAlg, group: DhGroup) -> IsakmpPolicy {
    IsakmpPolicy {
        priority,
        encr,
        hash,
        auth: AuthMethod::PreShared,
        group,
        lifetime: Duration::from_secs(86_400),
    }
}

/// A site-to-site profile: 10.1.0.0/16 behind A, 10.2.0.0/16 behind B.
pub(crate) fn peer(local: Ipv4Addr, remote: Ipv4Addr, psk: &str) -> V1Peer {
    let net = |o: u8| TrafficSelector::prefix(IpAddr::V4(Ipv4Addr::new(10, o, 0, 0)), 16);
    let (l, r) = if local == A_IP { (1, 2) } else { (2, 1) };
    V1Peer {
        id: ConnId(1),
        name: "v1".into(),
        local: addr(local, 500),
        remote: RemoteAddr::Host(addr(remote, 500)),
        local_id: None,
        remote_id: IdMatch::Any,
        psk: Secret::from_slice(psk.as_bytes()),
        policies: vec![policy(
            10,
            Encr::AesCbc { key_bits: 256 },
            HashAlg::Sha256,
            DhGroup::Modp2048,
        )],
        child: ChildConfig {
            esp_proposals: vec![EspProposal {
                encr: Encr::AesCbc { key_bits: 256 },
                integ: Some(Integ::HmacSha256_128),
                esn: Esn::No,
            }],
            pfs: None,
            pfs_addke: crate::transform::AddKes::NONE,
            local_ts: vec![net(l)],
            remote_ts: vec![net(r)],
            mode: Mode::Tunnel,
            lifetime: Lifetime::CHILD_DEFAULT,
            lifetime_bytes: None,
        },
        more_children: Vec::new(),
        dpd: Some(Dpd {
            interval: Duration::from_secs(10),
            retries: 3,
        }),
        allow_legacy: false,
        cert: None,
        aggressive: false,
    }
}

pub(crate) struct Pair {
    pub(crate) time: Instant,
    pub(crate) a: TestEndpoint,
    pub(crate) b: TestEndpoint,
    pub(crate) filter: Option<Filter>,
    /// Put A behind a NAT: A's address becomes NAT_PUBLIC, its ports + `nat_offset`
    /// (the IKEv2 harness's NAT, `crate::tests::pair`).
    pub(crate) nat: bool,
    /// Changing it rebinds A's mappings; datagrams to an old mapping are lost.
    pub(crate) nat_offset: u16,
    /// Deliver each batch of datagrams in reverse order.
    pub(crate) reorder: bool,
}

pub(crate) const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

impl Pair {
    pub(crate) fn new(a: V1Peer, b: V1Peer) -> Self {
        let cfg = |p| V1Config {
            peers: vec![p],
            ..V1Config::default()
        };
        Self {
            time: Instant::now(),
            a: TestEndpoint::new(cfg(a), 1),
            b: TestEndpoint::new(cfg(b), 2),
            filter: None,
            nat: false,
            nat_offset: 30000,
            reorder: false,
        }
    }

    pub(crate) fn default_pair() -> Self {
        Self::new(peer(A_IP, B_IP, "secret"), peer(B_IP, A_IP, "secret"))
    }

    pub(crate) fn side(&mut self, s: Side) -> &mut TestEndpoint {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub(crate) fn command(&mut self, s: Side, cmd: V1Command) {
        let now = self.time;
        self.side(s).ep.handle_command(now, cmd);
    }

    pub(crate) fn connect(&mut self) {
        self.command(Side::A, V1Command::Initiate { conn: ConnId(1) });
        self.drive_for(Duration::from_secs(1));
    }

    pub(crate) fn drive_now(&mut self) {
        for _ in 0..1000 {
            let mut busy = self.drain(Side::A);
            busy |= self.drain(Side::B);
            busy |= self.deliver(Side::A);
            busy |= self.deliver(Side::B);
            if !busy {
                return;
            }
        }
        panic!("did not settle");
    }

    pub(crate) fn drive_for(&mut self, limit: Duration) {
        let end = self.time + limit;
        loop {
            self.drive_now();
            let next = [self.a.ep.poll_timeout(), self.b.ep.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.time = self.time.max(t);
                    let now = self.time;
                    self.a.ep.handle_timeout(now);
                    self.b.ep.handle_timeout(now);
                }
                _ => {
                    self.time = end;
                    self.drive_now();
                    return;
                }
            }
        }
    }

    fn drain(&mut self, s: Side) -> bool {
        let mut busy = false;
        while let Some(o) = self.side(s).ep.poll_output() {
            busy = true;
            match o {
                Output::Transmit(t) => {
                    self.side(s).log.push("transmit");
                    self.side(s).sent.push(t.clone());
                    let v = match &mut self.filter {
                        Some(f) => f(s, &t),
                        None => Verdict::Deliver,
                    };
                    let n = match v {
                        Verdict::Deliver => 1,
                        Verdict::Drop => 0,
                        Verdict::Duplicate => 2,
                    };
                    for _ in 0..n {
                        self.route(s, &t);
                    }
                }
                // The second step of a rekey's install (`Halves`): its Child SA is already
                // in `installs`; when it came is kept apart.
                Output::InstallChildSa(i) if i.halves == Halves::OutboundLater => {
                    let now = self.time;
                    let side = self.side(s);
                    side.log.push("install-outbound");
                    side.outbound_later.push((now, i.child));
                }
                Output::InstallChildSa(i) => {
                    let side = self.side(s);
                    side.log.push("install");
                    side.installs.push(i);
                }
                Output::RemoveChildSa(r) => {
                    let side = self.side(s);
                    side.log.push("remove");
                    side.removes.push(r);
                }
                Output::Event(e) => {
                    let side = self.side(s);
                    side.log.push("event");
                    side.events.push(e);
                }
                Output::NatKeepalive { local, remote } => {
                    self.side(s).keepalives.push((local, remote));
                }
                Output::UpdateChildSaEncap(u) => {
                    let side = self.side(s);
                    side.log.push("encap");
                    side.encap_updates.push(u);
                }
            }
        }
        busy
    }

    /// Applies the NAT (if any) and queues the datagram at the other side.
    fn route(&mut self, from: Side, t: &Transmit) {
        let (mut src, mut dst) = (t.local, t.remote);
        if self.nat {
            match from {
                Side::A => {
                    src = SocketAddr::new(IpAddr::V4(NAT_PUBLIC), src.port() + self.nat_offset)
                }
                Side::B => {
                    if dst.ip() != IpAddr::V4(NAT_PUBLIC) {
                        return;
                    }
                    // Only the current mappings of A's ports 500 and 4500 exist.
                    let Some(port) = dst
                        .port()
                        .checked_sub(self.nat_offset)
                        .filter(|p| *p == 500 || *p == 4500)
                    else {
                        return;
                    };
                    dst = SocketAddr::new(IpAddr::V4(A_IP), port);
                }
            }
        }
        let to = match from {
            Side::A => Side::B,
            Side::B => Side::A,
        };
        self.side(to).inbound.push_back((dst, src, t.bytes.clone()));
    }

    fn deliver(&mut self, s: Side) -> bool {
        let now = self.time;
        let reorder = self.reorder;
        let side = self.side(s);
        if side.inbound.is_empty() {
            return false;
        }
        let mut batch: Vec<_> = side.inbound.drain(..).collect();
        if reorder {
            batch.reverse();
        }
        for (local, remote, bytes) in batch {
            side.ep.handle_datagram(
                now,
                Datagram {
                    local,
                    remote,
                    bytes: &bytes,
                },
            );
        }
        true
    }

    /// Both sides installed matching halves of the same Child SAs.
    pub(crate) fn assert_children_match(&self) {
        let a = self.a.live_children();
        let b = self.b.live_children();
        assert_eq!(
            a.len(),
            b.len(),
            "live children a={} b={}",
            a.len(),
            b.len()
        );
        assert!(!a.is_empty());
        for ia in a {
            let ib = b
                .iter()
                .find(|ib| ib.inbound_spi == ia.outbound_spi)
                .unwrap_or_else(|| panic!("no peer half for SPI {:#x}", ia.outbound_spi));
            assert_eq!(ib.outbound_spi, ia.inbound_spi);
            assert_eq!(ia.outbound, ib.inbound);
            assert_eq!(ia.inbound, ib.outbound);
            assert_ne!(ia.inbound, ia.outbound, "each direction has its own keys");
            assert_eq!(ia.encr, ib.encr);
            assert_eq!(ia.integ, ib.integ);
            assert_eq!(ia.local_ts, ib.remote_ts);
            assert_eq!(ia.remote_ts, ib.local_ts);
            assert_eq!(ia.mode, ib.mode);
            assert_eq!(ia.hard_lifetime, ib.hard_lifetime);
        }
    }
}
