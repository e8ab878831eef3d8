//! The two IKE engines behind one front: the IKEv2 engine ([`ike::Endpoint`]) and the IKEv1
//! engine ([`ike::v1::Endpoint`]) share the daemon's UDP sockets. A datagram goes to the
//! engine its header's major version names (the octet after the next-payload field, high
//! nibble: RFC 2408 §3.1 for ISAKMP, RFC 7296 §3.1 for IKEv2, whose §2.5 keeps the field
//! in the same place so that versions can be told apart). Commands go to the engine that
//! owns the connection, session or Child SA: the IKEv1 engine numbers its sessions and Child
//! SAs from [`ike::v1::FIRST_ID`], so ids alone say which engine made them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use ike::{ChildSaId, Command, ConnId, Datagram, Endpoint, InstallFailed, Output, SessionId};

/// Offset of the version octet in both headers: two 8-octet SPIs (cookies) and the
/// next-payload octet.
const VERSION_OCTET: usize = 17;

/// Which engine a datagram is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Major version 1: ISAKMP (IKEv1).
    V1,
    /// Anything else goes to the IKEv2 engine, which answers other major versions as RFC
    /// 7296 §1.5 prescribes (and drops what is too short to be a header).
    V2,
}

/// The major version a datagram's header names.
pub fn version_of(bytes: &[u8]) -> Version {
    match bytes.get(VERSION_OCTET) {
        Some(v) if v >> 4 == 1 => Version::V1,
        _ => Version::V2,
    }
}

/// What became of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatched {
    /// An engine took it.
    Handled,
    /// An IKEv1 datagram while no profile speaks IKEv1: dropped, unanswered (an answer
    /// would tell scanners what we are and reflect traffic at spoofed sources).
    NoIkev1,
}

/// Both engines.
pub struct Engines {
    v2: Endpoint,
    v1: ike::v1::Endpoint,
    /// The connections the IKEv1 engine serves.
    v1_conns: BTreeSet<ConnId>,
}

impl Engines {
    /// Both engines; `v1` serves the connections its configuration lists.
    pub fn new(v2: Endpoint, v1: ike::v1::Endpoint) -> Self {
        let v1_conns = v1.config().peers.iter().map(|p| p.id).collect();
        Self { v2, v1, v1_conns }
    }

    /// True when some connection speaks IKEv1.
    pub fn has_v1(&self) -> bool {
        !self.v1_conns.is_empty()
    }

    /// True when `conn` is served by the IKEv1 engine.
    pub fn is_v1_conn(&self, conn: ConnId) -> bool {
        self.v1_conns.contains(&conn)
    }

    /// Hands a datagram to the engine of its version.
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> Dispatched {
        match version_of(d.bytes) {
            Version::V1 if self.has_v1() => {
                self.v1.handle_datagram(now, d);
                Dispatched::Handled
            }
            Version::V1 => Dispatched::NoIkev1,
            Version::V2 => {
                self.v2.handle_datagram(now, d);
                Dispatched::Handled
            }
        }
    }

    /// Routes a command to the engine that owns what it names. An IKEv1 Child SA's soft
    /// EXPIRE rekeys it with a new quick mode; a hard EXPIRE deletes it with the peer.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        use ike::v1::Command as V1;
        let v1_session = |s: SessionId| s.0 >= ike::v1::FIRST_ID;
        let v1_child = |c: ChildSaId| c.0 >= ike::v1::FIRST_ID;
        let v1 = match &cmd {
            Command::Initiate { conn } if self.is_v1_conn(*conn) => {
                Some(V1::Initiate { conn: *conn })
            }
            // A quick mode per configuration (IKEv1 has no host pairs: a per-host crypto map
            // entry negotiates the ACL line's selectors).
            Command::InitiateChild { conn, index, .. } if self.is_v1_conn(*conn) => {
                Some(V1::InitiateChild {
                    conn: *conn,
                    index: *index,
                })
            }
            Command::Terminate { conn } if self.is_v1_conn(*conn) => {
                Some(V1::Terminate { conn: *conn })
            }
            Command::TerminateSession { session } if v1_session(*session) => {
                Some(V1::TerminateSession { session: *session })
            }
            Command::Dpd { session } if v1_session(*session) => Some(V1::Dpd { session: *session }),
            Command::DeleteChild { child } | Command::ChildExpired { child }
                if v1_child(*child) =>
            {
                Some(V1::DeleteChild { child: *child })
            }
            Command::RekeyChild { child } if v1_child(*child) => {
                Some(V1::RekeyChild { child: *child })
            }
            Command::RekeyIke { session } if v1_session(*session) => {
                Some(V1::RekeyIke { session: *session })
            }
            Command::MoveLocal { conn, .. } if self.is_v1_conn(*conn) => return,
            // Initiating toward an address NHRP found is an IKEv2 profile's (mGRE protection).
            Command::InitiateTo { conn, .. } if self.is_v1_conn(*conn) => {
                tracing::warn!(?conn, "initiate to an address: not for an IKEv1 profile");
                return;
            }
            _ => None,
        };
        match v1 {
            Some(c) => self.v1.handle_command(now, c),
            None => self.v2.handle_command(now, cmd),
        }
    }

    /// Replaces the IKEv1 profiles (a reload); the IKEv2 ones go with
    /// [`Command::Reconfigure`].
    pub fn reconfigure_v1(&mut self, config: Arc<ike::v1::V1Config>) {
        self.v1_conns = config.peers.iter().map(|p| p.id).collect();
        self.v1.reconfigure(config);
    }

    /// The IKEv2 engine's established, quiet SAs as data for a planned restart
    /// ([`ike::Endpoint::export_sas`]); IKEv1 SAs are not exported.
    pub fn export_v2(&self, now: Instant) -> ike::Export {
        self.v2.export_sas(now)
    }

    /// The kernel's answer to an install, to the engine that asked for it.
    pub fn handle_install_result(
        &mut self,
        now: Instant,
        child: ChildSaId,
        res: Result<(), InstallFailed>,
    ) {
        if child.0 >= ike::v1::FIRST_ID {
            self.v1.handle_install_result(now, child, res);
        } else {
            self.v2.handle_install_result(now, child, res);
        }
    }

    /// The next output of either engine (each engine's own outputs stay in order).
    pub fn poll_output(&mut self) -> Option<Output> {
        self.v2.poll_output().or_else(|| self.v1.poll_output())
    }

    /// The earlier of the two engines' deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.v2.poll_timeout(), self.v1.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers of whichever engine is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.v2.poll_timeout().is_some_and(|t| t <= now) {
            self.v2.handle_timeout(now);
        }
        if self.v1.poll_timeout().is_some_and(|t| t <= now) {
            self.v1.handle_timeout(now);
        }
    }

    /// Wall-clock time for certificate checks, in both engines.
    pub fn set_wall_clock(&mut self, now: Instant, unix_secs: u64) {
        self.v2.set_wall_clock(now, unix_secs);
        self.v1.set_wall_clock(now, unix_secs);
    }

    /// True while the session's IKE or ISAKMP SA exists.
    pub fn session_alive(&self, session: SessionId) -> bool {
        self.v2.session_alive(session) || self.v1.session_alive(session)
    }

    /// True while any IKE or ISAKMP SA of `conn` exists.
    pub fn conn_alive(&self, conn: ConnId) -> bool {
        self.v2.conn_alive(conn) || self.v1.conn_alive(conn)
    }

    /// MOBIKE: IKEv2 only.
    pub fn can_move(&self, conn: ConnId) -> bool {
        self.v2.can_move(conn)
    }

    /// The IKEv2 engine's half-open SAs.
    pub fn half_open_count(&self) -> usize {
        self.v2.half_open_count()
    }

    /// The IKEv2 engine's counters.
    pub fn stats(&self) -> &ike::Stats {
        self.v2.stats()
    }

    /// The IKEv1 engine's counters.
    pub fn v1_stats(&self) -> &ike::Stats {
        self.v1.stats()
    }

    /// The IKEv2 SAs.
    pub fn sas(&self) -> Vec<ike::IkeSaInfo> {
        self.v2.sas()
    }

    /// The ISAKMP (IKEv1) SAs.
    pub fn v1_sas(&self) -> Vec<ike::v1::V1SaInfo> {
        self.v1.sas()
    }

    /// One session's IKEv2 SA.
    pub fn sa_of(&self, session: SessionId) -> Option<ike::IkeSaInfo> {
        self.v2.sa_of(session)
    }

    /// One session's ISAKMP SA.
    pub fn v1_sa_of(&self, session: SessionId) -> Option<ike::v1::V1SaInfo> {
        self.v1.sa_of(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_octet_picks_the_engine() {
        let mut h = [0u8; 28];
        h[VERSION_OCTET] = 0x10; // ISAKMP 1.0 (RFC 2408 §3.1)
        assert_eq!(version_of(&h), Version::V1);
        h[VERSION_OCTET] = 0x20; // IKEv2 (RFC 7296 §3.1)
        assert_eq!(version_of(&h), Version::V2);
        // A minor version does not change the engine; other majors are IKEv2's to answer.
        h[VERSION_OCTET] = 0x11;
        assert_eq!(version_of(&h), Version::V1);
        h[VERSION_OCTET] = 0x30;
        assert_eq!(version_of(&h), Version::V2);
        assert_eq!(version_of(&h[..10]), Version::V2);
    }

    #[test]
    fn ikev1_without_a_profile_is_dropped_and_ikev1_ids_go_to_its_engine() {
        let seed = [7u8; 32];
        let mut e = Engines::new(
            Endpoint::new(Arc::new(ike::EndpointConfig::default()), seed),
            ike::v1::Endpoint::new(Arc::new(ike::v1::V1Config::default()), seed),
        );
        let mut h = vec![0u8; 28];
        h[0] = 1;
        h[VERSION_OCTET] = 0x10;
        h[18] = 2; // identity protection
        h[27] = 28;
        let d = Datagram {
            local: "192.0.2.1:500".parse().unwrap(),
            remote: "192.0.2.2:500".parse().unwrap(),
            bytes: &h,
        };
        assert_eq!(e.handle_datagram(Instant::now(), d), Dispatched::NoIkev1);
        assert!(e.poll_output().is_none(), "nothing is sent back");
        assert!(!e.has_v1());
        assert!(!e.session_alive(SessionId(ike::v1::FIRST_ID)));
    }
}
