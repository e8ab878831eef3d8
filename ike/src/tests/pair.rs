//! quinn-style in-memory harness: two endpoints, a virtual clock, and a lossy/duplicating/
//! reordering/NATting wire between them.

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
use crate::wire::TrafficSelector;

/// Which side a datagram came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

pub(crate) type Filter = Box<dyn FnMut(Side, &Transmit) -> Verdict>;

/// What the wire does with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Deliver,
    Drop,
    Duplicate,
}

pub(crate) struct TestEndpoint {
    pub(crate) ep: Endpoint,
    pub(crate) inbound: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub(crate) installs: Vec<ChildSaInstall>,
    /// Child SAs whose outbound SA came later (`Halves::OutboundLater`).
    pub(crate) outbound_later: Vec<ChildSaId>,
    pub(crate) removes: Vec<ChildSaRemove>,
    pub(crate) encap_updates: Vec<ChildSaEncapUpdate>,
    pub(crate) events: Vec<Event>,
    /// Every output kind in order, for ordering assertions.
    pub(crate) log: Vec<String>,
    pub(crate) sent: Vec<Transmit>,
    pub(crate) keepalives: usize,
}

impl TestEndpoint {
    fn new(config: EndpointConfig, seed: u8) -> Self {
        Self {
            ep: Endpoint::new(Arc::new(config), [seed; 32]),
            inbound: VecDeque::new(),
            installs: Vec::new(),
            outbound_later: Vec::new(),
            removes: Vec::new(),
            encap_updates: Vec::new(),
            events: Vec::new(),
            log: Vec::new(),
            sent: Vec::new(),
            keepalives: 0,
        }
    }

    /// Child SAs installed and not removed.
    pub(crate) fn live_children(&self) -> Vec<&ChildSaInstall> {
        self.installs
            .iter()
            .filter(|i| !self.removes.iter().any(|r| r.child == i.child))
            .collect()
    }

    /// Live Child SAs installed inbound first whose outbound SA has not come yet.
    pub(crate) fn outbound_pending(&self) -> Vec<ChildSaId> {
        self.live_children()
            .into_iter()
            .filter(|i| i.halves == Halves::InboundFirst)
            .map(|i| i.child)
            .filter(|c| !self.outbound_later.contains(c))
            .collect()
    }

    /// Hands a queued datagram (local, remote, bytes) to the engine.
    fn receive(&mut self, now: Instant, (local, remote, bytes): (SocketAddr, SocketAddr, Vec<u8>)) {
        self.ep.handle_datagram(
            now,
            Datagram {
                local,
                remote,
                bytes: &bytes,
            },
        );
    }

    pub(crate) fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }

    /// The INITIAL_CONTACT flag of each peer this side authenticated, in order.
    pub(crate) fn initial_contacts(&self) -> Vec<bool> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::PeerAuthenticated {
                    initial_contact, ..
                } => Some(*initial_contact),
                _ => None,
            })
            .collect()
    }
}

pub(crate) const A_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub(crate) const B_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub(crate) const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

pub(crate) fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// A PSK profile from `local` to `remote` with strongSwan-like defaults.
pub(crate) fn peer(id: u32, local: Ipv4Addr, remote: Ipv4Addr, psk: &str) -> PeerConfig {
    PeerConfig {
        id: ConnId(id),
        name: format!("conn{id}"),
        local: addr(local, 500),
        remote: RemoteAddr::Host(addr(remote, 500)),
        local_id: None,
        remote_id: IdMatch::Any,
        auth: AuthConfig::Psk(Secret::from_slice(psk.as_bytes()).into()),
        ike_proposals: vec![
            IkeProposal::AES256GCM_SHA256_X25519,
            IkeProposal::AES128_SHA256_MODP2048,
        ],
        ike_lifetime: Lifetime::IKE_DEFAULT,
        child: ChildConfig {
            esp_proposals: vec![EspProposal::AES256GCM],
            pfs: None,
            pfs_addke: crate::transform::AddKes::NONE,
            local_ts: vec![TrafficSelector::any(false)],
            remote_ts: vec![TrafficSelector::any(false)],
            mode: Mode::Tunnel,
            lifetime: Lifetime::CHILD_DEFAULT,
            lifetime_bytes: None,
        },
        more_children: Vec::new(),
        dpd: Some(Dpd {
            interval: Duration::from_secs(30),
            retries: 5,
        }),
        allow_legacy: false,
        mobike: true,
    }
}

pub(crate) fn endpoint_config(peers: Vec<PeerConfig>) -> EndpointConfig {
    EndpointConfig {
        peers,
        ..EndpointConfig::default()
    }
}

pub(crate) struct Pair {
    pub(crate) start: Instant,
    pub(crate) time: Instant,
    pub(crate) a: TestEndpoint,
    pub(crate) b: TestEndpoint,
    pub(crate) filter: Option<Filter>,
    /// Put A behind a NAT: A's private address is rewritten to NAT_PUBLIC with ports
    /// +`nat_offset`.
    pub(crate) nat: bool,
    /// The NAT's port offset (30000); changing it rebinds A's mappings, and datagrams to the
    /// old ones are dropped.
    pub(crate) nat_offset: u16,
    /// Deliver the queued datagrams of each side in reverse order.
    pub(crate) reorder: bool,
    /// Fail the next install on side B.
    pub(crate) fail_install_b: bool,
}

impl Pair {
    /// A (initiator, conn 1) and B (responder, conn 1) with matching PSKs.
    pub(crate) fn new(a: PeerConfig, b: PeerConfig) -> Self {
        Self::with_configs(endpoint_config(vec![a]), endpoint_config(vec![b]))
    }

    pub(crate) fn with_configs(a: EndpointConfig, b: EndpointConfig) -> Self {
        Self::with_seeds(a, b, [1, 2])
    }

    /// As [`Self::with_configs`], each engine's randomness (SPIs, nonces) from its seed.
    pub(crate) fn with_seeds(a: EndpointConfig, b: EndpointConfig, seeds: [u8; 2]) -> Self {
        let start = Instant::now();
        Self {
            start,
            time: start,
            a: TestEndpoint::new(a, seeds[0]),
            b: TestEndpoint::new(b, seeds[1]),
            filter: None,
            nat: false,
            nat_offset: 30000,
            reorder: false,
            fail_install_b: false,
        }
    }

    pub(crate) fn default_pair() -> Self {
        Self::new(peer(1, A_IP, B_IP, "secret"), peer(1, B_IP, A_IP, "secret"))
    }

    /// A behind the NAT, B (the responder) public, connected with matching Child SAs. B sees
    /// the NAT's public address, so its profile accepts any address.
    pub(crate) fn nat_pair() -> Self {
        let mut b = peer(1, B_IP, A_IP, "secret");
        b.remote = RemoteAddr::Any;
        let mut p = Self::new(peer(1, A_IP, B_IP, "secret"), b);
        p.nat = true;
        p.connect();
        p.assert_children_match();
        p
    }

    pub(crate) fn side(&mut self, s: Side) -> &mut TestEndpoint {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Gives both engines the wall-clock time `unix_secs` at the current virtual time.
    pub(crate) fn set_wall_clock(&mut self, unix_secs: u64) {
        let now = self.time;
        self.a.ep.set_wall_clock(now, unix_secs);
        self.b.ep.set_wall_clock(now, unix_secs);
    }

    pub(crate) fn initiate(&mut self) {
        let now = self.time;
        self.a
            .ep
            .handle_command(now, Command::Initiate { conn: ConnId(1) });
    }

    pub(crate) fn command(&mut self, s: Side, cmd: Command) {
        let now = self.time;
        self.side(s).ep.handle_command(now, cmd);
    }

    /// Moves outputs and datagrams until neither side has anything to do (no time passes).
    /// Returns false if it did not settle within the step bound.
    pub(crate) fn drive_now(&mut self) -> bool {
        for _ in 0..1000 {
            let mut busy = self.drain(Side::A);
            busy |= self.drain(Side::B);
            busy |= self.deliver(Side::A);
            busy |= self.deliver(Side::B);
            if !busy {
                return true;
            }
        }
        false
    }

    /// Drains both sides, then hands one queued datagram to its side: the `pick(n)`th of the
    /// `n` queued at either side, so any order across and within directions can be played.
    /// False when nothing was queued. No time passes.
    pub(crate) fn deliver_one(&mut self, pick: &mut dyn FnMut(usize) -> usize) -> bool {
        self.drain(Side::A);
        self.drain(Side::B);
        let (na, nb) = (self.a.inbound.len(), self.b.inbound.len());
        if na + nb == 0 {
            return false;
        }
        let i = pick(na + nb) % (na + nb);
        let (s, i) = if i < na {
            (Side::A, i)
        } else {
            (Side::B, i - na)
        };
        let now = self.time;
        let side = self.side(s);
        if let Some(d) = side.inbound.remove(i) {
            side.receive(now, d);
        }
        true
    }

    /// Drives, advancing virtual time to each deadline, until `limit` has passed.
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

    /// Drives the handshake (a few seconds of virtual time at most).
    pub(crate) fn connect(&mut self) {
        self.initiate();
        self.drive_for(Duration::from_secs(1));
    }

    fn drain(&mut self, s: Side) -> bool {
        let mut busy = false;
        let now = self.time;
        while let Some(o) = self.side(s).ep.poll_output() {
            busy = true;
            match o {
                Output::Transmit(t) => {
                    self.side(s).log.push("transmit".into());
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
                Output::NatKeepalive { .. } => self.side(s).keepalives += 1,
                Output::InstallChildSa(i) => {
                    let child = i.child;
                    let side = self.side(s);
                    // The held-back outbound SA of a rekey the peer initiated: the Child SA is
                    // in `installs` already, with its inbound SA.
                    if i.halves == Halves::OutboundLater {
                        side.log.push("install-outbound".into());
                        side.outbound_later.push(child);
                    } else {
                        side.log.push("install".into());
                        side.installs.push(i);
                    }
                    let fail = s == Side::B && std::mem::take(&mut self.fail_install_b);
                    let res = if fail {
                        Err(InstallFailed {
                            reason: "EEXIST".into(),
                        })
                    } else {
                        Ok(())
                    };
                    self.side(s).ep.handle_install_result(now, child, res);
                }
                Output::RemoveChildSa(r) => {
                    let side = self.side(s);
                    side.log.push("remove".into());
                    side.removes.push(r);
                }
                Output::UpdateChildSaEncap(u) => {
                    let side = self.side(s);
                    side.log.push("update_encap".into());
                    side.encap_updates.push(u);
                }
                Output::Event(e) => {
                    let side = self.side(s);
                    side.log.push(
                        format!("{e:?}")
                            .split([' ', '{'])
                            .next()
                            .unwrap_or("")
                            .to_string(),
                    );
                    side.events.push(e);
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
        for d in batch {
            side.receive(now, d);
        }
        true
    }

    /// Asserts both sides installed matching halves of the same Child SAs.
    pub(crate) fn assert_children_match(&self) {
        let a = self.a.live_children();
        let b = self.b.live_children();
        assert_eq!(
            a.len(),
            b.len(),
            "live children: a={} b={}",
            a.len(),
            b.len()
        );
        assert!(!a.is_empty());
        // Every live Child SA sends: no outbound SA is still held back.
        assert_eq!(
            self.a.outbound_pending(),
            Vec::new(),
            "a: outbound SAs held back"
        );
        assert_eq!(
            self.b.outbound_pending(),
            Vec::new(),
            "b: outbound SAs held back"
        );
        for ia in a {
            let ib = b
                .iter()
                .find(|ib| ib.inbound_spi == ia.outbound_spi)
                .unwrap_or_else(|| panic!("no peer half for SPI {:#x}", ia.outbound_spi));
            assert_eq!(ib.outbound_spi, ia.inbound_spi);
            assert_eq!(ia.outbound, ib.inbound);
            assert_eq!(ia.inbound, ib.outbound);
            assert_eq!(ia.encr, ib.encr);
            assert_eq!(ia.integ, ib.integ);
            assert_eq!(ia.local_ts, ib.remote_ts);
            assert_eq!(ia.remote_ts, ib.local_ts);
            assert_eq!(ia.mode, ib.mode);
        }
    }
}
