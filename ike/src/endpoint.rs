//! The engine's public surface (quinn-proto shape): `handle_*` inputs that take `now`, one
//! ordered output queue drained with [`Endpoint::poll_output`], and the earliest deadline from
//! [`Endpoint::poll_timeout`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_core::RngCore;
use rand_core::SeedableRng;

use crate::admission::Admission;
use crate::config::ChildConfigIndex;
use crate::config::ConnId;
use crate::config::EndpointConfig;
use crate::config::PeerConfig;
use crate::crypto::Rng;
use crate::error::Error;
use crate::error::PeerIncompatible;
use crate::error::PeerMisbehaved;
use crate::sa::Ctx;
use crate::sa::IkeSa;
use crate::sa::SaAction;
use crate::sa::SaCommand;
use crate::sa::child::ChildRequest;
use crate::spi_map::SpiMap;
use crate::wire::Header;
use crate::wire::InvalidMessage;
use crate::wire::Message;
use crate::wire::Notify;
use crate::wire::Payload;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::NotifyType;

// The boundary types live in `output` (below both this module and `sa`); they stay nameable
// as `ike::endpoint::*`, which the agent and the fuzz targets use.
pub use crate::output::ChildSaEncapUpdate;
pub use crate::output::ChildSaId;
pub use crate::output::ChildSaInfo;
pub use crate::output::ChildSaInstall;
pub use crate::output::ChildSaRemove;
pub use crate::output::Datagram;
pub use crate::output::DownReason;
pub use crate::output::EspKeys;
pub use crate::output::Event;
pub use crate::output::Halves;
pub use crate::output::IkeSaInfo;
pub use crate::output::Output;
pub use crate::output::SessionId;
pub use crate::output::Stats;
pub use crate::output::Transmit;
pub use crate::output::UdpEncap;
pub use persist::Export;

mod by_peer;
mod persist;

/// Application commands.
#[derive(Clone, Debug)]
pub enum Command {
    /// Start the connection (config start, CLI `up`, XFRM ACQUIRE).
    Initiate {
        /// The profile.
        conn: ConnId,
    },
    /// Bring up the Child SA of configuration `index` of connection `conn`
    /// ([`crate::PeerConfig::child_config`]) and, with `host_pair` = (our host, the peer's),
    /// as a per-host Child SA whose TSi/TSr are exactly those two hosts (a /32 or /128 each,
    /// protocol and ports from the configuration's selectors; Cisco's `set
    /// security-association level per-host`). Meant for XFRM ACQUIREs of policy-based
    /// tunnels, so it is idempotent:
    ///
    /// - with an established IKE SA of `conn`, a CREATE_CHILD_SA negotiates it (RFC 7296
    ///   §1.3.1), unless a Child SA of the same configuration and host pair is installed or
    ///   being negotiated already, in which case nothing happens;
    /// - while an IKE SA of `conn` is being set up (by us or by the peer), the request waits
    ///   and is negotiated once it is established;
    /// - with none, an IKE SA is started and IKE_AUTH carries this Child SA (§1.2).
    ///
    /// Several Child SAs of one configuration with different host pairs coexist. The
    /// resulting [`Output::InstallChildSa`] carries `index` as
    /// [`ChildSaInstall::config`] and the host pair as [`ChildSaInstall::host_pair`]; rekeys
    /// keep both. An unknown index, or a host outside the configuration's selectors, is
    /// ignored with a warning. With several established IKE SAs of `conn` (a responder
    /// profile serving many peers) the one of the lowest session is used.
    InitiateChild {
        /// The profile.
        conn: ConnId,
        /// Which of its Child SA configurations.
        index: ChildConfigIndex,
        /// (our host, the peer's host) for a per-host Child SA; `None` proposes the
        /// configuration's selectors.
        host_pair: Option<(std::net::IpAddr, std::net::IpAddr)>,
    },
    /// [`Command::InitiateChild`] toward one peer address `remote` (port 500), for a
    /// connection that only answers ([`crate::RemoteAddr::Any`] or
    /// [`crate::RemoteAddr::Prefix`]: a DVTI hub, an mGRE profile) as well as for a fixed
    /// peer at that address. An mGRE tunnel's NHRP daemon asks for it once it resolved the
    /// NBMA address of a spoke (FRR nhrpd's VICI `initiate` with `my-host`/`other-host`).
    /// Idempotent per (`conn`, `remote`):
    ///
    /// - an IKE SA of `conn` with `remote`, established or being set up, whichever side
    ///   started it, takes the request as `InitiateChild` would (CREATE_CHILD_SA, RFC 7296
    ///   §1.3.1, unless a Child SA for the request exists, one the peer created with exactly
    ///   those hosts' selectors included, or is under way);
    /// - with none, an IKE SA to `remote` is started and IKE_AUTH carries the Child SA.
    ///
    /// An address outside the connection's remote, an unknown index or a host outside the
    /// configuration's selectors is ignored with a warning. With an unspecified local
    /// address the IKE SA leaves from `host_pair`'s first host.
    InitiateTo {
        /// The profile.
        conn: ConnId,
        /// The peer's address.
        remote: std::net::IpAddr,
        /// Which of its Child SA configurations.
        index: ChildConfigIndex,
        /// (our host, the peer's host) for a per-host Child SA; `None` proposes the
        /// configuration's selectors.
        host_pair: Option<(std::net::IpAddr, std::net::IpAddr)>,
    },
    /// Delete every IKE SA of the connection (with a DELETE to the peer).
    Terminate {
        /// The profile.
        conn: ConnId,
    },
    /// Delete the IKE SA of one session (with a DELETE to the peer), e.g. one spoke of a
    /// connection that answers many.
    TerminateSession {
        /// The session.
        session: SessionId,
    },
    /// Rekey a Child SA now (XFRM soft EXPIRE on bytes/packets).
    RekeyChild {
        /// The Child SA.
        child: ChildSaId,
    },
    /// Delete one Child SA now, with the peer (the operator's `clear crypto sa`): it is
    /// removed at once and an INFORMATIONAL Delete names its inbound SPI, after which the
    /// peer deletes its half (RFC 7296 §1.4.1). The IKE SA stays; a new Child SA comes from a
    /// later [`Command::Initiate`] (an established childless IKE SA creates one).
    DeleteChild {
        /// The Child SA.
        child: ChildSaId,
    },
    /// Rekey the IKE SA of a session now.
    RekeyIke {
        /// The session.
        session: SessionId,
    },
    /// Send a liveness check now (RFC 7296 §2.4).
    Dpd {
        /// The session.
        session: SessionId,
    },
    /// The kernel hard-expired a Child SA: forget it and tell the peer.
    ChildExpired {
        /// The Child SA.
        child: ChildSaId,
    },
    /// The kernel saw ESP-in-UDP for our inbound SA `inbound_spi` arrive from `remote`, not
    /// from the port the SA was set up with (XFRM_MSG_MAPPING): the NAT in front of the peer
    /// changed its mapping. When the peer is behind a NAT and we are not, the session
    /// follows it (RFC 7296 §2.23): IKE messages go to `remote` from now on and every Child
    /// SA of the session gets [`Output::UpdateChildSaEncap`]. The kernel reports this only
    /// for packets that passed ESP integrity and replay checks, which is what §2.23 asks of
    /// such an update. A new address (rather than port) is not followed.
    NatMapping {
        /// SPI of our inbound SA that saw the new source.
        inbound_spi: u32,
        /// The peer's new address and port.
        remote: SocketAddr,
    },
    /// Replace the configuration. Existing SAs keep the profile they were set up with, but
    /// an established SA whose peer certificate path a CRL of its connection's new trust
    /// anchors lists is deleted (with a DELETE to the peer, one warning line each).
    Reconfigure(Arc<EndpointConfig>),
    /// Our address for connection `conn` changed (a renumbered interface): its established
    /// IKE SAs that negotiated MOBIKE as original initiator move there with
    /// UPDATE_SA_ADDRESSES (RFC 4555 §3.5), and their Child SAs are rekeyed onto the new
    /// addresses once the peer agrees. See [`Endpoint::can_move`].
    MoveLocal {
        /// The profile.
        conn: ConnId,
        /// The new address (the port stays).
        local: std::net::IpAddr,
    },
}

/// Why a Child SA install failed in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallFailed {
    /// Human-readable reason (errno text).
    pub reason: String,
}

/// The IKEv2 engine: owns every IKE SA, demultiplexes datagrams by SPI.
pub struct Endpoint {
    config: Arc<EndpointConfig>,
    /// `config.peers`, each shared once: every IKE SA of a profile holds the same
    /// `Arc<PeerConfig>` instead of a copy made per handshake. Rebuilt on `Reconfigure`.
    peers: Vec<Arc<PeerConfig>>,
    rng: Rng,
    /// Inbound ESP SPIs handed out (see [`crate::spis`]).
    spis: crate::spis::Spis,
    /// IKE SAs by our own SPI.
    sas: SpiMap<IkeSa>,
    /// The same SAs' SPIs by connection and authenticated peer, kept by `after`.
    by_peer: by_peer::ByPeer,
    /// Which new IKE_SA_INIT requests get state, and the half-open book they are counted
    /// by (with the request each responder SA was made by, for retransmissions).
    admission: Admission,
    /// Each SA's next deadline as last scheduled, and the same deadlines earliest first, so
    /// that finding and running due timers costs O(log N), not a scan of every SA per
    /// input. A heap entry whose instant is not its SA's scheduled one is stale (the
    /// deadline moved) and is dropped when it reaches the top.
    scheduled: SpiMap<Instant>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    out: VecDeque<Output>,
    stats: Stats,
    next_id: u64,
    actions: Vec<SaAction>,
    /// `(instant, unix seconds)` from [`Endpoint::set_wall_clock`].
    wall_clock: Option<(Instant, u64)>,
}

/// Wall-clock seconds at `now`, from an anchor taken at `at` (monotonic offset, either way).
fn wall_time(anchor: Option<(Instant, u64)>, now: Instant) -> Option<u64> {
    let (at, secs) = anchor?;
    Some(match now.checked_duration_since(at) {
        Some(d) => secs.saturating_add(d.as_secs()),
        None => secs.saturating_sub(at.duration_since(now).as_secs()),
    })
}

/// Each profile of `config` behind its own `Arc`, shared by the SAs made from it.
fn shared_peers(config: &EndpointConfig) -> Vec<Arc<PeerConfig>> {
    config.peers.iter().cloned().map(Arc::new).collect()
}

/// Borrows the engine's shared parts as a [`Ctx`] while leaving `sas` free.
macro_rules! ctx {
    ($self:ident, $now:expr) => {
        Ctx {
            now: $now,
            unix_time: wall_time($self.wall_clock, $now),
            rng: &mut $self.rng,
            spis: &mut $self.spis,
            out: &mut $self.out,
            config: &$self.config,
            peers: &$self.peers,
            stats: &mut $self.stats,
            actions: &mut $self.actions,
            next_id: &mut $self.next_id,
            has_contact: false,
        }
    };
}

impl Endpoint {
    /// A new engine. All randomness (SPIs, nonces, key exchange, jitter) comes from `rng_seed`.
    pub fn new(config: Arc<EndpointConfig>, rng_seed: [u8; 32]) -> Self {
        // The SPI permutation's keys come from their own ChaCha stream of the same seed.
        let mut spi_rng = Rng::from_seed(rng_seed);
        spi_rng.set_stream(u64::from_be_bytes(*b"vtidspis"));
        Self {
            peers: shared_peers(&config),
            config,
            rng: Rng::from_seed(rng_seed),
            spis: crate::spis::Spis::new(&mut spi_rng),
            sas: SpiMap::default(),
            by_peer: by_peer::ByPeer::default(),
            admission: Admission::default(),
            scheduled: SpiMap::default(),
            deadlines: BinaryHeap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            next_id: 1,
            actions: Vec::new(),
            wall_clock: None,
        }
    }

    /// Tells the engine the wall-clock time: `unix_secs` (seconds since the Unix epoch) is
    /// the time at `now`. The engine reads no clock; for later inputs it adds their
    /// monotonic offset from `now`, so one call at start suffices. Call it again whenever
    /// the system clock is stepped or after a suspend (the monotonic clock does not count
    /// it); calling it before every input is fine too.
    ///
    /// Only certificate authentication ([`crate::config::AuthConfig::Certificate`]) uses it,
    /// to check validity periods (RFC 5280 §6.1.3 (a)(2)). Until it is set, every peer
    /// certificate is refused (AUTHENTICATION_FAILED) rather than accepted unchecked.
    pub fn set_wall_clock(&mut self, now: Instant, unix_secs: u64) {
        self.wall_clock = Some((now, unix_secs));
    }

    /// Counters of handled and rejected inputs.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration in force for new SAs.
    pub fn config(&self) -> &Arc<EndpointConfig> {
        &self.config
    }

    /// True while any IKE SA of `session` exists (its rekeyed successors keep the session
    /// id). The agent uses it to know when a peer's session is completely gone.
    pub fn session_alive(&self, session: SessionId) -> bool {
        self.sas
            .values()
            .any(|sa| sa.session() == session && !sa.is_closed())
    }

    /// True while any IKE SA of connection `conn` exists, being set up or established.
    pub fn conn_alive(&self, conn: ConnId) -> bool {
        self.sas
            .values()
            .any(|sa| sa.conn() == conn && !sa.is_closed())
    }

    /// True when connection `conn` has an established IKE SA that [`Command::MoveLocal`]
    /// can move: MOBIKE was negotiated and we were its original initiator (RFC 4555 §3.4).
    /// Otherwise a new address means a new negotiation.
    pub fn can_move(&self, conn: ConnId) -> bool {
        self.sas
            .values()
            .any(|sa| sa.conn() == conn && sa.is_established() && sa.can_move())
    }

    /// Number of IKE SAs in any state.
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Number of half-open responder IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet), the
    /// count [`crate::config::Limits`] compares with its thresholds.
    pub fn half_open_count(&self) -> usize {
        self.admission.half_open()
    }

    /// Test-only: changes the link data of every responder IKE_FOLLOWUP_KE state; returns how
    /// many there were.
    #[cfg(test)]
    pub(crate) fn corrupt_followup_links(&mut self) -> usize {
        let mut n = 0;
        for sa in self.sas.values_mut() {
            if let crate::sa::State::Established(est) = &mut sa.state {
                if let Some(f) = &mut est.followup {
                    f.corrupt_link();
                    n += 1;
                }
            }
        }
        n
    }

    /// Test-only: responder IKE_FOLLOWUP_KE states held.
    #[cfg(test)]
    pub(crate) fn followup_count(&self) -> usize {
        self.sas
            .values()
            .filter(|sa| {
                matches!(&sa.state, crate::sa::State::Established(est) if est.followup.is_some())
            })
            .count()
    }

    /// Test-only: SK_d of each live IKE SA, to compare both ends' derivations.
    #[cfg(test)]
    pub(crate) fn sk_ds(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self
            .sas
            .values()
            .filter(|sa| !sa.c.closed)
            .filter_map(|sa| sa.c.keys.as_ref().map(|k| k.sk_d.expose().to_vec()))
            .collect();
        out.sort();
        out
    }

    /// The snapshot of one session's IKE SA, without making every other SA's (a per-event
    /// view on a hub of thousands).
    pub fn sa_of(&self, session: SessionId) -> Option<IkeSaInfo> {
        self.sas
            .values()
            .find(|sa| sa.session() == session)
            .map(IkeSa::info)
    }

    /// A snapshot of every IKE SA and its Child SAs, for status output.
    pub fn sas(&self) -> Vec<IkeSaInfo> {
        let mut out: Vec<IkeSaInfo> = self.sas.values().map(IkeSa::info).collect();
        out.sort_by_key(|i| (i.conn, i.session, i.spi_i));
        out
    }

    /// Handles one received datagram. Never fails: rejections become counters, events and,
    /// where RFC 7296 §2.21 says so, error notifies.
    pub fn handle_datagram(&mut self, now: Instant, dgram: Datagram<'_>) {
        self.stats.datagrams += 1;
        if let Err(e) = self.datagram(now, dgram) {
            self.reject(&e, dgram.remote);
        }
        self.run_actions(now);
    }

    /// Handles an application command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Initiate { conn } => {
                let Some(peer) = self.peer(conn) else {
                    tracing::warn!(?conn, "initiate: unknown connection");
                    return;
                };
                // An established IKE SA without children gets a new Child SA; repeated
                // ACQUIREs or `up` while an SA exists or is being set up do nothing.
                let childless = self
                    .sas
                    .iter()
                    .find(|(_, sa)| sa.conn() == conn && sa.is_childless())
                    .map(|(k, _)| *k);
                if let Some(spi) = childless {
                    self.with_sa(now, spi, |sa, ctx| sa.command(ctx, SaCommand::CreateChild));
                    self.run_actions(now);
                    return;
                }
                // One being deleted does not count: after a rebuild (a reload, a source
                // address gone) its DELETE may go unanswered for the whole retransmission
                // schedule, and the tunnel must not wait for that.
                if self
                    .sas
                    .values()
                    .any(|sa| sa.conn() == conn && !sa.is_closed() && !sa.is_deleting())
                {
                    tracing::debug!(?conn, "initiate: connection already has an IKE SA");
                    return;
                }
                let spi = self.fresh_spi();
                let session = self.alloc_id();
                let mut ctx = ctx!(self, now);
                let first = ChildRequest::default();
                match IkeSa::initiate(&mut ctx, peer, spi, SessionId(session), first, None) {
                    Ok(sa) => {
                        self.sas.insert(spi, sa);
                        self.after(spi);
                    }
                    Err(e) => tracing::warn!(?conn, error = %e, "initiate failed"),
                }
            }
            Command::InitiateChild {
                conn,
                index,
                host_pair,
            } => self.initiate_child(now, conn, ChildRequest { index, host_pair }, None),
            Command::InitiateTo {
                conn,
                remote,
                index,
                host_pair,
            } => self.initiate_child(now, conn, ChildRequest { index, host_pair }, Some(remote)),
            Command::Terminate { conn } => {
                let spis: Vec<u64> = self
                    .sas
                    .iter()
                    .filter(|(_, sa)| sa.conn() == conn)
                    .map(|(k, _)| *k)
                    .collect();
                for spi in spis {
                    self.with_sa(now, spi, |sa, ctx| sa.command(ctx, SaCommand::Terminate));
                }
            }
            Command::TerminateSession { session } => {
                let spis: Vec<u64> = self
                    .sas
                    .iter()
                    .filter(|(_, sa)| sa.session() == session)
                    .map(|(k, _)| *k)
                    .collect();
                for spi in spis {
                    self.with_sa(now, spi, |sa, ctx| sa.command(ctx, SaCommand::Terminate));
                }
            }
            Command::RekeyChild { child } => {
                if let Some(spi) = self.sa_of_child(child) {
                    self.with_sa(now, spi, |sa, ctx| {
                        sa.command(ctx, SaCommand::RekeyChild(child))
                    });
                }
            }
            // The kernel's hard expiry and the operator's delete end the same way: the SA goes
            // now and the peer is told (§1.4.1).
            Command::ChildExpired { child } | Command::DeleteChild { child } => {
                if let Some(spi) = self.sa_of_child(child) {
                    self.with_sa(now, spi, |sa, ctx| {
                        sa.command(ctx, SaCommand::ChildExpired(child))
                    });
                }
            }
            Command::RekeyIke { session } => {
                if let Some(spi) = self.sa_of_session(session) {
                    self.with_sa(now, spi, |sa, ctx| sa.command(ctx, SaCommand::RekeyIke));
                }
            }
            Command::Dpd { session } => {
                if let Some(spi) = self.sa_of_session(session) {
                    self.with_sa(now, spi, |sa, ctx| sa.command(ctx, SaCommand::Dpd));
                }
            }
            Command::NatMapping {
                inbound_spi,
                remote,
            } => {
                let owner = self
                    .sas
                    .iter()
                    .find(|(_, sa)| sa.has_inbound_spi(inbound_spi))
                    .map(|(k, _)| *k);
                match owner {
                    Some(spi) => self.with_sa(now, spi, |sa, ctx| {
                        sa.command(
                            ctx,
                            SaCommand::NatMapping {
                                inbound_spi,
                                remote,
                            },
                        )
                    }),
                    None => tracing::debug!(
                        spi = format_args!("{inbound_spi:08x}"),
                        "NAT mapping for an SPI of no Child SA"
                    ),
                }
            }
            Command::Reconfigure(config) => {
                self.peers = shared_peers(&config);
                self.config = config;
                // New CRLs apply to sessions already up, not only to the next handshake
                // (RFC 5280 §6.3: a revoked certificate is no longer valid). Only the
                // sessions of a revoked peer end; the rest keep their SAs.
                let revoked: Vec<(u64, String)> = self
                    .sas
                    .iter()
                    .filter_map(|(k, sa)| Some((*k, sa.revoked_under(&self.config)?.to_string())))
                    .collect();
                for (spi, why) in revoked {
                    self.with_sa(now, spi, |sa, ctx| {
                        tracing::warn!(
                            "peer {} (session {}): terminated: {why}",
                            sa.peer_id()
                                .map_or_else(|| "?".into(), crate::cert::describe_identity),
                            sa.session().0,
                        );
                        sa.command(ctx, SaCommand::Terminate)
                    });
                }
            }
            Command::MoveLocal { conn, local } => {
                let spis: Vec<u64> = self
                    .sas
                    .iter()
                    .filter(|(_, sa)| sa.conn() == conn && sa.is_established() && sa.can_move())
                    .map(|(k, _)| *k)
                    .collect();
                for spi in spis {
                    self.with_sa(now, spi, |sa, ctx| {
                        sa.command(ctx, SaCommand::MoveLocal(local))
                    });
                }
            }
        }
        self.run_actions(now);
    }

    /// The profile `conn`, shared.
    fn peer(&self, conn: ConnId) -> Option<Arc<PeerConfig>> {
        self.peers.iter().find(|p| p.id == conn).cloned()
    }

    /// [`Command::InitiateChild`], and with `to` [`Command::InitiateTo`]: only IKE SAs with
    /// that peer address count, and a new one goes there.
    fn initiate_child(
        &mut self,
        now: Instant,
        conn: ConnId,
        req: ChildRequest,
        to: Option<std::net::IpAddr>,
    ) {
        let Some(peer) = self.peer(conn) else {
            tracing::warn!(?conn, "initiate child: unknown connection");
            return;
        };
        if let Some(ip) = to {
            if !peer.remote.matches(ip) {
                tracing::warn!(?conn, %ip, "initiate: address outside the connection's remote");
                return;
            }
        }
        let with_peer = |sa: &IkeSa| to.is_none_or(|ip| sa.c.remote.ip() == ip);
        if req.proposal(&peer).is_none() {
            tracing::warn!(
                ?conn,
                ?req,
                "initiate child: no such configuration, or a host outside it"
            );
            return;
        }
        // An established IKE SA carries it (or has it already); one being deleted or replaced
        // by a rekey does not count.
        let established = self
            .sas
            .iter()
            .filter(|(_, sa)| {
                sa.conn() == conn && with_peer(sa) && sa.is_established() && !sa.is_deleting()
            })
            .min_by_key(|(k, sa)| (sa.session(), **k))
            .map(|(k, _)| *k);
        // Otherwise one being set up takes the request for later.
        let handshaking = || {
            self.sas
                .iter()
                .filter(|(_, sa)| sa.conn() == conn && with_peer(sa) && sa.is_handshaking())
                .min_by_key(|(k, sa)| (sa.session(), **k))
                .map(|(k, _)| *k)
        };
        if let Some(spi) = established.or_else(handshaking) {
            self.with_sa(now, spi, |sa, ctx| {
                sa.command(ctx, SaCommand::InitiateChild { conn, req })
            });
            return;
        }
        let spi = self.fresh_spi();
        let session = self.alloc_id();
        let mut ctx = ctx!(self, now);
        match IkeSa::initiate(&mut ctx, peer, spi, SessionId(session), req, to) {
            Ok(sa) => {
                self.sas.insert(spi, sa);
                self.after(spi);
            }
            Err(e) => tracing::warn!(?conn, error = %e, "initiate failed"),
        }
    }

    /// Reports the kernel's answer to an [`Output::InstallChildSa`]. On failure the engine
    /// deletes that Child SA with the peer.
    pub fn handle_install_result(
        &mut self,
        now: Instant,
        child: ChildSaId,
        res: Result<(), InstallFailed>,
    ) {
        if let Err(e) = res {
            tracing::warn!(?child, reason = %e.reason, "child SA install failed");
            if let Some(spi) = self.sa_of_child(child) {
                self.with_sa(now, spi, |sa, ctx| {
                    sa.command(ctx, SaCommand::ChildExpired(child))
                });
            }
            self.run_actions(now);
        }
    }

    /// Runs timers that are due at `now`: each SA with a due deadline once (one whose timer
    /// handling leaves a deadline already due is seen again by the next call, as before).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(&Reverse((at, spi))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.scheduled.get(&spi) == Some(&at) {
                self.scheduled.remove(&spi);
                due.push(spi);
            }
        }
        for spi in due {
            if self
                .sas
                .get(&spi)
                .and_then(IkeSa::next_timeout)
                .is_some_and(|t| t <= now)
            {
                self.with_sa(now, spi, |sa, ctx| sa.on_timeout(ctx));
            } else {
                self.after(spi);
            }
        }
        self.run_actions(now);
        self.prune_deadlines();
    }

    /// The next output, in order. Call after every `handle_*` until it returns `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest deadline at which [`Endpoint::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|r| r.0.0)
    }

    fn datagram(&mut self, now: Instant, dgram: Datagram<'_>) -> Result<(), Error> {
        let mut r = crate::wire::Reader::new(dgram.bytes);
        let header = <Header as crate::wire::Codec>::read(&mut r)?;
        if header.length as usize != dgram.bytes.len() {
            return Err(InvalidMessage::BadLength.into());
        }
        // RFC 7296 §2.2: the I flag says which SPI is ours.
        let ours = if header.is_initiator() {
            header.spi_r
        } else {
            header.spi_i
        };
        if header.exchange == ExchangeType::IkeSaInit
            && !header.is_response()
            && header.spi_r == 0
            && header.message_id == 0
        {
            if let Some(spi) = self.admission.sa_of_request(dgram.remote, header.spi_i) {
                let mut ctx = ctx!(self, now);
                return match self.sas.get_mut(&spi) {
                    Some(sa) => sa.retransmit_sa_init_response(&mut ctx, dgram.bytes),
                    None => Ok(()),
                };
            }
            self.admission.admit(
                now,
                &self.config.limits,
                self.sas.len(),
                dgram,
                &header,
                &mut self.rng,
                &mut self.out,
            )?;
            return self.new_responder(now, dgram, header);
        }
        if ours == 0 || !self.sas.contains_key(&ours) {
            // §2.21.4: an unknown SPI may get an unprotected INVALID_IKE_SPI; we stay quiet
            // rather than reflect traffic at spoofed sources.
            return Err(PeerMisbehaved::UnknownIkeSpi.into());
        }
        // Only an initiator's IKE_SA_INIT response leads to an IKE_AUTH request; the scan over
        // the other SAs happens for that message alone.
        // IKE_INTERMEDIATE responses (RFC 9242) may be what IKE_AUTH follows instead.
        // Contact is made by an SA between the same identities, up or with its IKE_AUTH out;
        // by one of the same connection up with the same address (the identity may not be
        // configured); and by one the peer's address has started with us and not yet
        // authenticated (its identity is unknown until IKE_AUTH): the peer is initiating
        // too. Without the last two, two ends starting at once could each send
        // INITIAL_CONTACT on crossing SAs, and a peer that drops its other SAs on it
        // (strongSwan) could end up with the SA the other end deleted as a duplicate.
        let has_contact = matches!(
            header.exchange,
            ExchangeType::IkeSaInit | ExchangeType::IkeIntermediate
        ) && header.is_response()
            && self.sas.get(&ours).is_some_and(|me| {
                if !me.awaits_init_response() {
                    return false;
                }
                let want = me.expected_contact().map(|w| (w.0.clone(), w.1));
                let (conn, ip) = (me.c.peer.id, me.c.remote.ip());
                self.sas.iter().any(|(spi, sa)| {
                    *spi != ours
                        && ((want.is_some()
                            && (sa.contact() == want || sa.contact_in_flight() == want))
                            || sa.up_with(conn, ip)
                            || sa.peer_starting_from(ip))
                })
            });
        let mut ctx = ctx!(self, now);
        ctx.has_contact = has_contact;
        let sa = self
            .sas
            .get_mut(&ours)
            .ok_or(PeerMisbehaved::UnknownIkeSpi)?;
        let res = sa.handle_datagram(&mut ctx, dgram, &header);
        self.after(ours);
        res
    }

    fn new_responder(
        &mut self,
        now: Instant,
        dgram: Datagram<'_>,
        header: Header,
    ) -> Result<(), Error> {
        let msg = match Message::decode(dgram.bytes) {
            Ok(m) => m,
            Err(e @ InvalidMessage::UnsupportedCriticalPayload(ty)) => {
                // RFC 7296 §3.2: answer an unknown critical payload, unprotected, with
                // UNSUPPORTED_CRITICAL_PAYLOAD naming its type. Other garbage is not answered.
                let reply = Message {
                    header: Header::new(header.spi_i, 0, ExchangeType::IkeSaInit, false, true, 0),
                    payloads: vec![Payload::Notify(Notify::new(
                        NotifyType::UnsupportedCriticalPayload,
                        vec![ty],
                    ))],
                };
                self.out.push_back(Output::Transmit(Transmit {
                    local: dgram.local,
                    remote: dgram.remote,
                    bytes: reply.encode(),
                }));
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let spi = self.fresh_spi();
        let session = self.alloc_id();
        let mut ctx = ctx!(self, now);
        let sa = IkeSa::respond(&mut ctx, dgram, &msg, spi, SessionId(session))?;
        self.admission.insert(spi, dgram.remote, header.spi_i);
        self.sas.insert(spi, sa);
        self.after(spi);
        Ok(())
    }

    fn with_sa(&mut self, now: Instant, spi: u64, f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>)) {
        let mut ctx = ctx!(self, now);
        if let Some(sa) = self.sas.get_mut(&spi) {
            f(sa, &mut ctx);
        }
        self.after(spi);
    }

    /// Books the outcome of anything done to SA `spi`: removes it when it closed itself,
    /// updates the half-open book, and schedules its next deadline.
    fn after(&mut self, spi: u64) {
        let Some(sa) = self.sas.get(&spi) else {
            return;
        };
        if sa.is_closed() {
            self.by_peer.book(spi, None);
            self.sas.remove(&spi);
            self.admission.settle(spi, false, false);
            self.scheduled.remove(&spi);
            self.prune_deadlines();
            return;
        }
        self.by_peer
            .book(spi, sa.peer_id().map(|id| (sa.conn(), id)));
        self.admission.settle(spi, sa.is_half_open(), true);
        match sa.next_timeout() {
            Some(at) if self.scheduled.get(&spi) != Some(&at) => {
                self.scheduled.insert(spi, at);
                self.deadlines.push(Reverse((at, spi)));
                // Stale entries pile up when deadlines keep moving (DPD restarts on every
                // message heard); rebuild once they outnumber the live ones.
                if self.deadlines.len() > 2 * self.scheduled.len() + 64 {
                    self.deadlines = self
                        .scheduled
                        .iter()
                        .map(|(&spi, &at)| Reverse((at, spi)))
                        .collect();
                }
            }
            Some(_) => {}
            None => {
                self.scheduled.remove(&spi);
            }
        }
        self.prune_deadlines();
    }

    /// Drops stale entries from the top of the deadline heap, so that
    /// [`Endpoint::poll_timeout`] names a real deadline: every change to an SA goes through
    /// [`Endpoint::after`], which calls this, so the top is never stale between inputs.
    fn prune_deadlines(&mut self) {
        while let Some(&Reverse((at, spi))) = self.deadlines.peek() {
            if self.scheduled.get(&spi) == Some(&at) {
                break;
            }
            self.deadlines.pop();
        }
    }

    fn run_actions(&mut self, now: Instant) {
        while let Some(action) = self.actions.pop() {
            match action {
                SaAction::Insert(sa) => {
                    let spi = sa.local_spi();
                    self.sas.insert(spi, *sa);
                    self.after(spi);
                }
                SaAction::DeleteOthers {
                    keep,
                    conn,
                    peer_id,
                    born,
                } => {
                    // The notify says the peer keeps no other state with us: true of SAs
                    // from before its restart, not of one we initiated while its own
                    // initiation was under way. The peer may have that one up (it answered
                    // our IKE_AUTH), so dropping it here without a word would leave the
                    // peer an SA we no longer have; the duplicate check settles it with a
                    // DELETE instead.
                    let crossed = |sa: &IkeSa| {
                        sa.c.initiator && sa.c.lineage.authenticated.is_some_and(|a| a > born)
                    };
                    let victims: Vec<u64> = self
                        .by_peer
                        .of(conn, &peer_id)
                        .iter()
                        .copied()
                        .filter(|k| *k != keep && !self.sas.get(k).is_some_and(crossed))
                        .collect();
                    for spi in victims {
                        self.with_sa(now, spi, |sa, ctx| sa.drop_silently(ctx));
                    }
                }
                SaAction::ResolveDuplicates { conn, peer_id } => {
                    // Both ends started the tunnel at once and each completed an IKE SA.
                    // RFC 7296 allows duplicates but a route-based tunnel wants one: two
                    // Child SA pairs on one interface would split traffic between them. Both
                    // ends must pick the same survivor without talking, so rank by what both
                    // know equally: INITIAL_CONTACT (below), then the SPI pair (RFC 7296
                    // §2.8.1 uses nonces the same way for rekey collisions): the SA whose
                    // smaller SPI is the larger survives.
                    // Either end may delete the loser first; a second DELETE is harmless.
                    // One we are deleting already is no rival: it goes anyway. The book
                    // holds this connection's SAs of this peer only.
                    let rival = |sa: &IkeSa| sa.is_established() && !sa.is_deleting();
                    let book = self.by_peer.of(conn, &peer_id);
                    // The SA just established counts itself: without a second one there is
                    // nothing to settle (the usual case, which then allocates nothing).
                    let rivals = book.iter().filter(|k| self.sas.get(k).is_some_and(rival));
                    if rivals.count() < 2 {
                        continue;
                    }
                    // An SA that carried INITIAL_CONTACT ranks first: on receiving one the
                    // peer may already have dropped the others without a word (§2.4 allows
                    // it, strongSwan does it), so keeping another would leave both ends
                    // with SAs the other lacks. Both ends see the same notifies, and both
                    // rank them the same: two vtids never send one each on crossing SAs
                    // (an IKE_AUTH goes without it while any other exchange with the peer is
                    // under way). A peer that does sent its own while ours was in flight:
                    // ours ranks next, as that peer dropped the rest when ours came.
                    let dups: Vec<(u64, (bool, bool, u64))> = self
                        .by_peer
                        .of(conn, &peer_id)
                        .iter()
                        .filter_map(|k| Some((*k, self.sas.get(k)?)))
                        .filter(|(_, sa)| rival(sa))
                        .map(|(k, sa)| {
                            let ic = sa.c.lineage.initial_contact;
                            let rank = (
                                ic.is_some(),
                                ic == Some(crate::sa::ContactBy::Us),
                                sa.c.spi_i.min(sa.c.spi_r),
                            );
                            (k, rank)
                        })
                        .collect();
                    // Only a race we took part in is ours to settle: when the peer started
                    // every one of them (a hub's spoke reauthenticating make-before-break,
                    // RFC 7296 §2.8.3), the peer deletes the old SA itself.
                    let we_initiated = dups
                        .iter()
                        .any(|(k, _)| self.sas.get(k).is_some_and(|sa| sa.c.initiator));
                    if !we_initiated {
                        continue;
                    }
                    if let Some(&(keep, _)) = dups.iter().max_by_key(|(_, rank)| *rank) {
                        for &(spi, _) in dups.iter().filter(|(k, _)| *k != keep) {
                            tracing::info!(?conn, "deleting a duplicate IKE SA");
                            self.with_sa(now, spi, |sa, ctx| sa.command(ctx, SaCommand::Terminate));
                        }
                    }
                }
            }
        }
    }

    fn reject(&mut self, e: &Error, peer: SocketAddr) {
        let reason = e.reason();
        if let Error::PeerIncompatible(PeerIncompatible::PeerRejected(notify)) = e {
            // The peer answered our request with an error notify (RFC 7296 §2.21): that
            // is the reason a tunnel does not come up (NO_PROPOSAL_CHOSEN from a peer
            // without the additional key exchanges we require, RFC 9370 §2.2.1; wrong
            // credentials), so it is said without debug logging.
            tracing::info!(%peer, ?notify, "the peer refused our request");
        } else {
            tracing::debug!(%peer, error = %e, "rejected input");
        }
        *self.stats.rejected.entry(reason).or_default() += 1;
        self.out
            .push_back(Output::Event(Event::Rejected { reason, peer }));
    }

    fn fresh_spi(&mut self) -> u64 {
        loop {
            let spi = self.rng.next_u64();
            if spi != 0 && !self.sas.contains_key(&spi) {
                return spi;
            }
        }
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn sa_of_child(&self, child: ChildSaId) -> Option<u64> {
        self.sas
            .iter()
            .find(|(_, sa)| sa.has_child(child))
            .map(|(k, _)| *k)
    }

    fn sa_of_session(&self, session: SessionId) -> Option<u64> {
        self.sas
            .iter()
            .filter(|(_, sa)| sa.session() == session && sa.is_established())
            .map(|(k, _)| *k)
            .next()
    }
}
