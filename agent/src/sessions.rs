//! The agent's one record of live sessions and Child SAs: which Child SAs are installed (for
//! `show sa`, kernel EXPIRE mapping and teardown), on which interface, with which routes
//! they added, and since when each session is up. Pure bookkeeping fed by the engine's
//! outputs and events; the kernel side lives in [`crate::kernel`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ike::{ChildSaId, ConnId, DownReason, Event, SessionId};
use ipnet::IpNet;

/// Where a Child SA is in the agent's life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildState {
    /// Installed and carrying traffic.
    Installed,
    /// Its underlay changed: a rekey onto the new underlay was asked for, and the rekey's
    /// replacement will remove it.
    Moving,
}

/// A Child SA as installed in the kernel.
#[derive(Clone, Debug)]
pub struct ChildInfo {
    /// The engine connection (a static tunnel's, or a template's).
    pub conn: ConnId,
    /// The IKE session.
    pub session: SessionId,
    /// Inbound SPI.
    pub spi_in: u32,
    /// Outbound SPI.
    pub spi_out: u32,
    /// Negotiated cipher.
    pub encr: ike::transform::Encr,
    /// Negotiated integrity (none for AEAD).
    pub integ: Option<ike::transform::Integ>,
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// When it was installed.
    pub installed: Instant,
    /// The configured lifetime: the engine rekeys before it and deletes the SA at it; the
    /// kernel's hard limit is a safety net a minute later. `show sa` counts down to this, as
    /// IOS's "remaining key lifetime" counts down the configured one.
    pub lifetime: Duration,
    /// Hard byte limit.
    pub hard_bytes: Option<u64>,
    /// UDP encapsulation (NAT-T) and its ports now.
    pub encap: Option<ike::UdpEncap>,
    /// The virtual-access clone it was installed on (slot), if any.
    pub clone: Option<u32>,
    /// Routes its traffic selectors added to the clone (reverse route injection).
    pub routes: Vec<IpNet>,
    /// Life-cycle state.
    pub state: ChildState,
}

impl ChildInfo {
    /// The book entry of a Child SA the kernel just took: installed now with `lifetime`,
    /// on clone `clone` with the routes its selectors added.
    pub fn installed(
        inst: &ike::ChildSaInstall,
        lifetime: Duration,
        clone: Option<u32>,
        routes: Vec<IpNet>,
    ) -> Self {
        Self {
            conn: inst.conn,
            session: inst.session,
            spi_in: inst.inbound_spi,
            spi_out: inst.outbound_spi,
            encr: inst.encr,
            integ: inst.integ,
            local: inst.local,
            remote: inst.remote,
            installed: Instant::now(),
            lifetime,
            hard_bytes: inst.bytes.map(|b| b.hard),
            encap: inst.encap,
            clone,
            routes,
            state: ChildState::Installed,
        }
    }
}

/// Every installed Child SA and every session's start.
#[derive(Debug, Default)]
pub struct Sessions {
    children: BTreeMap<ChildSaId, ChildInfo>,
    up_since: HashMap<SessionId, Instant>,
    /// The Child SAs of each clone: a hub of thousands asks per install and removal, and a
    /// walk of every Child SA each time made bringing up N spokes O(N²).
    by_clone: HashMap<u32, BTreeSet<ChildSaId>>,
    /// The Child SA of each SPI (both directions), for kernel EXPIREs, for the same reason.
    by_spi: HashMap<u32, ChildSaId>,
}

impl Sessions {
    /// Records an installed Child SA.
    pub fn installed(&mut self, id: ChildSaId, c: ChildInfo) {
        if let Some(old) = self.children.remove(&id) {
            self.unindex(id, &old);
        }
        if let Some(slot) = c.clone {
            self.by_clone.entry(slot).or_default().insert(id);
        }
        self.by_spi.insert(c.spi_in, id);
        self.by_spi.insert(c.spi_out, id);
        self.children.insert(id, c);
    }

    /// Forgets a removed Child SA and returns what it was.
    pub fn removed(&mut self, id: ChildSaId) -> Option<ChildInfo> {
        let c = self.children.remove(&id)?;
        self.unindex(id, &c);
        Some(c)
    }

    fn unindex(&mut self, id: ChildSaId, c: &ChildInfo) {
        if let Some(slot) = c.clone
            && let Some(set) = self.by_clone.get_mut(&slot)
        {
            set.remove(&id);
            if set.is_empty() {
                self.by_clone.remove(&slot);
            }
        }
        for spi in [c.spi_in, c.spi_out] {
            if self.by_spi.get(&spi) == Some(&id) {
                self.by_spi.remove(&spi);
            }
        }
    }

    /// One Child SA.
    pub fn child(&self, id: ChildSaId) -> Option<&ChildInfo> {
        self.children.get(&id)
    }

    /// Every Child SA, in id order.
    pub fn children(&self) -> impl Iterator<Item = (ChildSaId, &ChildInfo)> {
        self.children.iter().map(|(id, c)| (*id, c))
    }

    /// The Child SAs of a connection.
    pub fn of_conn(&self, conn: ConnId) -> Vec<ChildSaId> {
        self.children()
            .filter(|(_, c)| c.conn == conn)
            .map(|(id, _)| id)
            .collect()
    }

    /// True when the connection has an installed Child SA (its tunnel's line is up).
    pub fn conn_up(&self, conn: ConnId) -> bool {
        self.children.values().any(|c| c.conn == conn)
    }

    /// The Child SAs installed on clone `slot`.
    pub fn of_clone(&self, slot: u32) -> impl Iterator<Item = (ChildSaId, &ChildInfo)> {
        self.by_clone
            .get(&slot)
            .into_iter()
            .flatten()
            .filter_map(|id| self.children.get(id).map(|c| (*id, c)))
    }

    /// The Child SA one of whose SAs has `spi` (a kernel EXPIRE names the SPI).
    pub fn by_spi(&self, spi: u32) -> Option<ChildSaId> {
        self.by_spi.get(&spi).copied()
    }

    /// The peer's NAT mapping moved: the Child SA's ESP-in-UDP now goes to `remote`.
    pub fn encap_moved(&mut self, id: ChildSaId, remote: SocketAddr, encap: ike::UdpEncap) {
        if let Some(c) = self.children.get_mut(&id) {
            c.remote = remote;
            c.encap = Some(encap);
        }
    }

    /// Marks a Child SA as moving to a new underlay; false when it already was (the rekey
    /// was asked for before).
    pub fn start_moving(&mut self, id: ChildSaId) -> bool {
        match self.children.get_mut(&id) {
            Some(c) if c.state != ChildState::Moving => {
                c.state = ChildState::Moving;
                true
            }
            _ => false,
        }
    }

    /// Follows an engine event. An IKE SA rekey (RFC 7296 §2.18) keeps the session: the old
    /// IKE SA's `IkeSaDown { reason: Replaced }` comes after its successor is up, so only a
    /// session the engine no longer has (`alive` false) loses its start time.
    pub fn event(&mut self, ev: &Event, now: Instant, alive: impl Fn(SessionId) -> bool) {
        match ev {
            Event::IkeSaUp { session, .. } => {
                self.up_since.entry(*session).or_insert(now);
            }
            Event::IkeSaDown {
                session, reason, ..
            } if *reason != DownReason::Replaced || !alive(*session) => {
                self.up_since.remove(session);
            }
            _ => {}
        }
    }

    /// A session adopted across a restart, up since `since`.
    pub fn adopted(&mut self, session: SessionId, since: Instant) {
        self.up_since.insert(session, since);
    }

    /// How long a session has been up.
    pub fn uptime(&self, session: SessionId, now: Instant) -> Option<Duration> {
        self.up_since.get(&session).map(|t| now.duration_since(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The events an IKE SA rekey produces (the engine keeps the session id; the replaced
    /// SA's down event comes last). Before this module, the daemon removed the session's
    /// start on that down event and `show sessions` said `uptime_secs: null` after every
    /// IKE rekey.
    #[test]
    fn ike_rekey_keeps_the_session_uptime() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let (session, conn) = (SessionId(7), ConnId(1));
        s.event(
            &Event::IkeSaUp {
                session,
                conn,
                local: addr("192.0.2.1:500"),
                remote: addr("192.0.2.2:500"),
                initiator: true,
            },
            t0,
            |_| true,
        );
        s.event(&Event::IkeSaRekeyed { session, conn }, t0, |_| true);
        s.event(
            &Event::IkeSaDown {
                session,
                conn,
                reason: DownReason::Replaced,
            },
            t0 + Duration::from_secs(5),
            |_| true,
        );
        let later = t0 + Duration::from_secs(9);
        assert_eq!(s.uptime(session, later), Some(Duration::from_secs(9)));
        // A session that really ends loses it, replaced or not.
        s.event(
            &Event::IkeSaDown {
                session,
                conn,
                reason: DownReason::Replaced,
            },
            later,
            |_| false,
        );
        assert_eq!(s.uptime(session, later), None);
    }

    #[test]
    fn children_by_conn_clone_and_spi() {
        let mut s = Sessions::default();
        let info = |conn: u32, spi: u32, clone: Option<u32>| ChildInfo {
            conn: ConnId(conn),
            session: SessionId(1),
            spi_in: spi,
            spi_out: spi + 1,
            encr: ike::transform::Encr::AesGcm16 { key_bits: 128 },
            integ: None,
            local: addr("192.0.2.1:500"),
            remote: addr("192.0.2.2:500"),
            installed: Instant::now(),
            lifetime: Duration::from_secs(60),
            hard_bytes: None,
            encap: None,
            clone,
            routes: Vec::new(),
            state: ChildState::Installed,
        };
        s.installed(ChildSaId(1), info(1, 0x100, None));
        s.installed(ChildSaId(2), info(2, 0x200, Some(3)));
        assert_eq!(s.of_conn(ConnId(1)), vec![ChildSaId(1)]);
        assert!(s.conn_up(ConnId(2)) && !s.conn_up(ConnId(9)));
        assert_eq!(s.by_spi(0x201), Some(ChildSaId(2)));
        assert_eq!(s.of_clone(3).count(), 1);
        assert!(s.start_moving(ChildSaId(1)));
        assert!(
            !s.start_moving(ChildSaId(1)),
            "a second underlay change asks no second rekey"
        );
        assert!(s.removed(ChildSaId(1)).is_some());
        assert!(!s.conn_up(ConnId(1)));
        // The indexes follow a replacement and a removal.
        s.installed(ChildSaId(2), info(2, 0x300, Some(4)));
        assert_eq!(s.of_clone(3).count(), 0);
        assert_eq!(s.of_clone(4).count(), 1);
        assert_eq!(s.by_spi(0x201), None);
        assert_eq!(s.by_spi(0x300), Some(ChildSaId(2)));
        assert!(s.removed(ChildSaId(2)).is_some());
        assert_eq!(s.of_clone(4).count(), 0);
        assert_eq!(s.by_spi(0x301), None);
    }
}
