//! The IKEv1 engine's public surface, shaped like [`crate::Endpoint`]: `handle_*` inputs
//! that take `now`, one ordered queue of [`Output`]s drained with [`Endpoint::poll_output`],
//! and the earliest deadline from [`Endpoint::poll_timeout`].
//!
//! ISAKMP SAs are found by our own cookie: the initiator cookie when we initiated, the
//! responder cookie when we answered (RFC 2408 §2.5.3). A first main mode message (responder
//! cookie zero) gets a new SA unless it repeats one we answered already, which is then
//! answered again from the SA's cache.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_core::RngCore;
use rand_core::SeedableRng;

use crate::config::ConnId;
use crate::config::RemoteAddr;
use crate::crypto::Rng;
use crate::endpoint::InstallFailed;
use crate::output::ChildSaId;
use crate::output::Datagram;
use crate::output::Event;
use crate::output::Output;
use crate::output::SessionId;
use crate::output::Stats;
use crate::output::Transmit;
use crate::v1::config::V1Config;
use crate::v1::error::Misbehaved;
use crate::v1::error::Reaction;
use crate::v1::error::V1Error;
use crate::v1::sa::Ctx;
use crate::v1::sa::Phase1Sa;
use crate::v1::sa::aggressive;
use crate::v1::wire::Body;
use crate::v1::wire::DOI_IPSEC;
use crate::v1::wire::ExchangeType;
use crate::v1::wire::Header;
use crate::v1::wire::Message;
use crate::v1::wire::Notify;
use crate::v1::wire::PROTO_ISAKMP;
use crate::v1::wire::Payload;
use crate::v1::wire::encode_message;
use crate::wire::Identity;
use crate::wire::Reader;

/// Commands of the IKEv1 engine (the subset of [`crate::Command`] this part implements).
#[derive(Clone, Debug)]
pub enum Command {
    /// Start main mode, then quick mode, with the profile's peer.
    Initiate {
        /// The profile.
        conn: ConnId,
    },
    /// A Child SA of one quick mode configuration (a crypto map's ACL line): main mode
    /// first when no ISAKMP SA with the peer exists.
    InitiateChild {
        /// The profile.
        conn: ConnId,
        /// Which of its quick mode configurations.
        index: crate::config::ChildConfigIndex,
    },
    /// Delete every ISAKMP SA of the profile, and their Child SAs, with the peer.
    Terminate {
        /// The profile.
        conn: ConnId,
    },
    /// Delete the ISAKMP SA of one session, and its Child SAs, with the peer.
    TerminateSession {
        /// The session.
        session: SessionId,
    },
    /// Delete one Child SA with the peer (RFC 2408 §3.15).
    DeleteChild {
        /// The Child SA.
        child: ChildSaId,
    },
    /// Send a DPD R-U-THERE now (RFC 3706).
    Dpd {
        /// The session.
        session: SessionId,
    },
    /// Rekey one Child SA now with a new quick mode (the kernel's soft EXPIRE).
    RekeyChild {
        /// The Child SA.
        child: ChildSaId,
    },
    /// Replace the session's ISAKMP SA now with a new main mode.
    RekeyIke {
        /// The session.
        session: SessionId,
    },
}

/// One ISAKMP SA as status output sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1SaInfo {
    /// The session.
    pub session: SessionId,
    /// The profile.
    pub conn: ConnId,
    /// State name (`ExpectMainMode2` ... `Established`).
    pub state: &'static str,
    /// True when we initiated it.
    pub initiator: bool,
    /// Initiator cookie.
    pub cky_i: u64,
    /// Responder cookie.
    pub cky_r: u64,
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The peer's authenticated identity.
    pub peer_id: Option<Identity>,
    /// Child SAs: (id, inbound SPI, outbound SPI).
    pub children: Vec<(ChildSaId, u32, u32)>,
}

/// The first session and Child SA id of the IKEv1 engine: an agent that drives both
/// engines keeps one book of sessions and Child SAs, so the two must never hand out the
/// same id (the IKEv2 engine counts up from 1 and would need 2^48 SAs to get here).
pub const FIRST_ID: u64 = 1 << 48;

/// The IKEv1 engine.
pub struct Endpoint {
    config: Arc<V1Config>,
    rng: Rng,
    /// Inbound ESP SPIs: the upper half of the space, each handed out once (crate::spis).
    spis: crate::spis::Spis,
    /// ISAKMP SAs by our cookie.
    sas: HashMap<u64, Phase1Sa>,
    /// (peer address, its initiator cookie) -> our responder cookie, for MM1 repeats.
    answered: HashMap<(SocketAddr, u64), u64>,
    out: VecDeque<Output>,
    stats: Stats,
    next_id: u64,
    /// Fragmented messages being reassembled ([`crate::v1::fragment`]).
    frags: crate::v1::fragment::Reassembly,
    /// `(instant, unix seconds)` from [`Endpoint::set_wall_clock`], for certificates.
    wall_clock: Option<(Instant, u64)>,
}

macro_rules! ctx {
    ($self:ident, $now:expr, $drops:expr) => {
        Ctx {
            now: $now,
            rng: &mut $self.rng,
            spis: &mut $self.spis,
            out: &mut $self.out,
            config: &$self.config,
            stats: &mut $self.stats,
            next_id: &mut $self.next_id,
            drop_others: $drops,
            unix_time: $self.wall_clock.map(|(at, secs)| {
                secs.saturating_add($now.saturating_duration_since(at).as_secs())
            }),
        }
    };
}

/// What status output tells of one ISAKMP SA.
fn info(sa: &Phase1Sa) -> V1SaInfo {
    V1SaInfo {
        session: sa.c.session,
        conn: sa.c.peer.id,
        state: sa.state_name(),
        initiator: sa.c.initiator,
        cky_i: sa.c.cky_i,
        cky_r: sa.c.cky_r,
        local: sa.c.local,
        remote: sa.c.remote,
        peer_id: sa.peer_id().cloned(),
        children: sa.children(),
    }
}

impl Endpoint {
    /// A new engine; all randomness (cookies, SPIs, nonces, DH, message IDs) from `rng_seed`.
    pub fn new(config: Arc<V1Config>, rng_seed: [u8; 32]) -> Self {
        let mut rng = Rng::from_seed(rng_seed);
        Self {
            config,
            spis: crate::spis::Spis::v1(&mut rng),
            rng,
            sas: HashMap::new(),
            answered: HashMap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            next_id: FIRST_ID,
            frags: Default::default(),
            wall_clock: None,
        }
    }

    /// Ties `now` to `unix_secs`, the wall-clock time certificates are checked at (as
    /// [`crate::Endpoint::set_wall_clock`]); without it signature authentication refuses
    /// every certificate.
    pub fn set_wall_clock(&mut self, now: Instant, unix_secs: u64) {
        self.wall_clock = Some((now, unix_secs));
    }

    /// Counters of handled and rejected inputs.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Replaces the profiles (a reload): ISAKMP SAs already set up keep the profile they
    /// were made with; new ones, and `Initiate`, use the new list.
    pub fn reconfigure(&mut self, config: Arc<V1Config>) {
        self.config = config;
    }

    /// The profiles in use.
    pub fn config(&self) -> &V1Config {
        &self.config
    }

    /// True while the session's ISAKMP SA exists, being set up or established.
    pub fn session_alive(&self, session: SessionId) -> bool {
        self.sas
            .values()
            .any(|sa| sa.c.session == session && !sa.is_closed())
    }

    /// True while any ISAKMP SA of the profile exists.
    pub fn conn_alive(&self, conn: ConnId) -> bool {
        self.sas
            .values()
            .any(|sa| sa.c.peer.id == conn && !sa.is_closed())
    }

    /// Number of ISAKMP SAs in any state.
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// A snapshot of every ISAKMP SA.
    pub fn sas(&self) -> Vec<V1SaInfo> {
        let mut v: Vec<V1SaInfo> = self.sas.values().map(info).collect();
        v.sort_by_key(|i| (i.conn, i.session));
        v
    }

    /// The snapshot of one session's ISAKMP SA, without making every other SA's.
    pub fn sa_of(&self, session: SessionId) -> Option<V1SaInfo> {
        self.sas
            .values()
            .find(|sa| sa.c.session == session)
            .map(info)
    }

    /// Handles one datagram. Never fails: rejections become counters, events and, where
    /// RFC 2408 §5 asks for one, a notify.
    pub fn handle_datagram(&mut self, now: Instant, dgram: Datagram<'_>) {
        self.stats.datagrams += 1;
        if crate::v1::fragment::is_fragment(dgram.bytes) {
            self.fragment(now, dgram);
            return;
        }
        let mut drops = Vec::new();
        if let Err(e) = self.datagram(now, dgram, &mut drops) {
            self.reject(&e, dgram.remote);
        }
        self.settle(now, drops);
    }

    /// A fragment message: stored until its message is whole, which is then handled as if
    /// it had arrived in one datagram.
    fn fragment(&mut self, now: Instant, dgram: Datagram<'_>) {
        let whole = crate::v1::fragment::parse(dgram.bytes).and_then(|f| {
            let whole = self.frags.add(now, dgram.remote, &f)?;
            // The reassembled message must be the one the fragments' header named.
            match &whole {
                Some(m)
                    if m.get(..16)
                        != Some(&[f.cky_i.to_be_bytes(), f.cky_r.to_be_bytes()].concat()[..]) =>
                {
                    Err(Misbehaved::BadFragment(
                        "reassembled message of other cookies",
                    ))
                }
                _ => Ok(whole),
            }
        });
        match whole {
            Ok(Some(bytes)) => {
                tracing::info!(peer = %dgram.remote, len = bytes.len(), "v1: message reassembled from fragments");
                self.handle_datagram(
                    now,
                    Datagram {
                        bytes: &bytes,
                        ..dgram
                    },
                );
            }
            Ok(None) => {}
            Err(e) => self.reject(&e.into(), dgram.remote),
        }
    }

    /// Messages reassembled from fragments so far, and messages still in reassembly.
    pub fn fragment_counts(&self) -> (u64, usize) {
        (self.frags.reassembled, self.frags.pending())
    }

    /// Handles a command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        let mut drops = Vec::new();
        match cmd {
            Command::Initiate { conn } => {
                let Some(peer) = self.config.peers.iter().find(|p| p.id == conn).cloned() else {
                    tracing::warn!(?conn, "v1 initiate: unknown connection");
                    return;
                };
                let RemoteAddr::Host(remote) = peer.remote else {
                    tracing::warn!(?conn, "v1 initiate: the profile has no peer address");
                    return;
                };
                if let Some(k) = self
                    .sas
                    .iter()
                    .find(|(_, sa)| sa.c.peer.id == conn && sa.is_established())
                    .map(|(k, _)| *k)
                {
                    let mut ctx = ctx!(self, now, &mut drops);
                    if let Some(sa) = self.sas.get_mut(&k) {
                        sa.start_child(&mut ctx);
                    }
                } else if !self.sas.values().any(|sa| sa.c.peer.id == conn) {
                    let cky = self.fresh_cookie();
                    let mut ctx = ctx!(self, now, &mut drops);
                    let start = if peer.aggressive {
                        Phase1Sa::initiate_aggressive
                    } else {
                        Phase1Sa::initiate
                    };
                    match start(&mut ctx, Arc::new(peer), remote, cky) {
                        Ok(sa) => {
                            self.sas.insert(cky, sa);
                        }
                        Err(e) => tracing::warn!(?conn, error = %e, "v1 initiate failed"),
                    }
                }
            }
            Command::InitiateChild { conn, index } => {
                if !self.conn_alive(conn) {
                    self.handle_command(now, Command::Initiate { conn });
                }
                if let Some(k) = self.key_of(|sa| sa.c.peer.id == conn) {
                    if let Some(sa) = self.sas.get_mut(&k) {
                        sa.want_child_at(index);
                    }
                }
            }
            Command::Terminate { conn } => {
                let keys: Vec<u64> = self
                    .sas
                    .iter()
                    .filter(|(_, sa)| sa.c.peer.id == conn)
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    self.with_sa(now, k, &mut drops, |sa, ctx| sa.terminate(ctx));
                }
            }
            Command::TerminateSession { session } => {
                // A phase 1 rekey under way shares the session.
                while let Some(k) = self.key_of(|sa| sa.c.session == session) {
                    self.with_sa(now, k, &mut drops, |sa, ctx| sa.terminate(ctx));
                }
            }
            Command::DeleteChild { child } => {
                if let Some(k) = self.key_of(|sa| sa.has_child(child)) {
                    self.with_sa(now, k, &mut drops, |sa, ctx| sa.delete_child(ctx, child));
                }
            }
            Command::Dpd { session } => {
                if let Some(k) = self.key_of(|sa| sa.c.session == session) {
                    self.with_sa(now, k, &mut drops, |sa, ctx| sa.dpd_now(ctx));
                }
            }
            Command::RekeyChild { child } => {
                if let Some(k) = self.key_of(|sa| sa.has_child(child)) {
                    self.with_sa(now, k, &mut drops, |sa, ctx| sa.rekey_child(ctx, child));
                }
            }
            Command::RekeyIke { session } => {
                if let Some(k) = self.key_of(|sa| sa.c.session == session && sa.is_established()) {
                    if let Some(sa) = self.sas.get_mut(&k) {
                        sa.request_rekey(now);
                    }
                }
            }
        }
        self.settle(now, drops);
    }

    /// Reports the kernel's answer to an [`Output::InstallChildSa`]; on failure the Child SA
    /// is deleted with the peer.
    pub fn handle_install_result(
        &mut self,
        now: Instant,
        child: ChildSaId,
        res: Result<(), InstallFailed>,
    ) {
        if let Err(e) = res {
            tracing::warn!(?child, reason = %e.reason, "v1: child SA install failed");
            let mut drops = Vec::new();
            if let Some(k) = self.key_of(|sa| sa.has_child(child)) {
                self.with_sa(now, k, &mut drops, |sa, ctx| sa.delete_child(ctx, child));
            }
            self.settle(now, drops);
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.frags.expire(now);
        let mut drops = Vec::new();
        let due: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.next_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            self.with_sa(now, k, &mut drops, |sa, ctx| sa.on_timeout(ctx));
        }
        self.settle(now, drops);
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest deadline at which [`Endpoint::handle_timeout`] must be called. A scan of
    /// every SA: the IKEv2 engine's deadline heap is the model once IKEv1 serves many peers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas
            .values()
            .filter_map(Phase1Sa::next_timeout)
            .chain(self.frags.next_timeout())
            .min()
    }

    fn datagram(
        &mut self,
        now: Instant,
        dgram: Datagram<'_>,
        drops: &mut Vec<(ConnId, Identity, u64)>,
    ) -> Result<(), V1Error> {
        let msg = match Message::decode(dgram.bytes) {
            Ok(m) => m,
            Err(e) => {
                self.answer_first_message(dgram, &e.into());
                return Err(e.into());
            }
        };
        let h = msg.header.clone();
        let first = matches!(
            h.exchange,
            ExchangeType::IdentityProtection | ExchangeType::Aggressive
        ) && h.cky_r == 0;
        if first {
            if let Some(k) = self.answered.get(&(dgram.remote, h.cky_i)).copied() {
                let mut ctx = ctx!(self, now, drops);
                return match self.sas.get_mut(&k) {
                    Some(sa) => sa.handle(&mut ctx, dgram.bytes, msg),
                    None => Ok(()),
                };
            }
            return self.new_responder(now, dgram, msg, drops);
        }
        // Ours is the initiator cookie of an SA we started (whose responder cookie is not
        // known before MM2), or the responder cookie of one we answered.
        let key = match self.sas.get(&h.cky_r) {
            Some(sa) if !sa.c.initiator && sa.c.cky_i == h.cky_i => Some(h.cky_r),
            _ => match self.sas.get(&h.cky_i) {
                Some(sa) if sa.c.initiator && (sa.c.cky_r == h.cky_r || sa.c.cky_r == 0) => {
                    Some(h.cky_i)
                }
                _ => None,
            },
        };
        let Some(key) = key else {
            // RFC 2408 §5.1 allows INVALID-COOKIE here; answering strays would reflect
            // traffic at spoofed sources, so we stay quiet.
            return Err(Misbehaved::UnknownCookies.into());
        };
        let mut ctx = ctx!(self, now, drops);
        let sa = self.sas.get_mut(&key).ok_or(Misbehaved::UnknownCookies)?;
        // NAT-T (RFC 3947 §4): the float to port 4500, and a peer's NAT mapping that moved.
        let moved = sa.natt_arrival(&ctx, dgram.local, dgram.remote);
        let res = sa.handle(&mut ctx, dgram.bytes, msg);
        sa.natt_settle(&mut ctx, moved, res.is_ok());
        res
    }

    /// RFC 2408 §5: a first main mode message that does not decode is answered with its
    /// notify (the header is readable, so the peer can match it); anything else is not.
    fn answer_first_message(&mut self, dgram: Datagram<'_>, e: &V1Error) {
        let Ok(h) = Header::read(&mut Reader::new(dgram.bytes)) else {
            return;
        };
        let phase1 = matches!(
            h.exchange,
            ExchangeType::IdentityProtection | ExchangeType::Aggressive
        );
        if !phase1 || h.cky_r != 0 || h.message_id != 0 {
            return;
        }
        if let Reaction::Notify(ty) = e.notify() {
            self.notify_unknown(dgram, h.cky_i, ty);
        }
    }

    fn notify_unknown(&mut self, dgram: Datagram<'_>, cky_i: u64, ty: u16) {
        let n = Payload::Notify(Notify {
            doi: DOI_IPSEC,
            protocol: PROTO_ISAKMP,
            ty,
            spi: [cky_i.to_be_bytes(), [0; 8]].concat(),
            data: Vec::new(),
        });
        let h = Header::new(cky_i, 0, ExchangeType::Informational, 0, 0);
        self.out.push_back(Output::Transmit(Transmit {
            local: dgram.local,
            remote: dgram.remote,
            bytes: encode_message(&h, &[n]),
        }));
    }

    fn new_responder(
        &mut self,
        now: Instant,
        dgram: Datagram<'_>,
        msg: Message,
        drops: &mut Vec<(ConnId, Identity, u64)>,
    ) -> Result<(), V1Error> {
        let h = &msg.header;
        if h.message_id != 0 {
            return Err(Misbehaved::InvalidMessageId(h.message_id).into());
        }
        let Body::Plain(chain) = &msg.body else {
            return Err(Misbehaved::UnexpectedEncryption.into());
        };
        let cky_r = self.fresh_cookie();
        if h.exchange == ExchangeType::Aggressive {
            let res = aggressive::select_profile(&self.config, dgram.local, dgram.remote, chain)
                .and_then(|peer| {
                    let mut ctx = ctx!(self, now, drops);
                    Phase1Sa::respond_aggressive(
                        &mut ctx,
                        Arc::new(peer),
                        dgram.local,
                        dgram.remote,
                        dgram.bytes,
                        h,
                        chain,
                        cky_r,
                    )
                });
            return self.responder_started(dgram, h.cky_i, cky_r, res);
        }
        let peer = self
            .config
            .peers
            .iter()
            .find(|p| {
                (p.local.ip().is_unspecified() || p.local.ip() == dgram.local.ip())
                    && p.remote.matches(dgram.remote.ip())
            })
            .cloned();
        if let Some(p) = &peer
            && self.simultaneous_start(p.id, dgram.remote, h.cky_i)
        {
            return Ok(());
        }
        let res = match peer {
            Some(peer) => {
                let mut ctx = ctx!(self, now, drops);
                Phase1Sa::respond(
                    &mut ctx,
                    Arc::new(peer),
                    dgram.local,
                    dgram.remote,
                    dgram.bytes,
                    h,
                    chain,
                    cky_r,
                )
            }
            None => Err(crate::v1::error::Incompatible::NoMatchingProfile.into()),
        };
        self.responder_started(dgram, h.cky_i, cky_r, res)
    }

    /// Both ends started main mode at once (two routers whose tunnels both initiate, as IOS
    /// tunnels do at start): two ISAKMP SAs and two pairs of Child SAs would follow, one
    /// too many. RFC 2409 sets no rule; both ends see both initiator cookies, so both can
    /// agree that the main mode with the higher one goes on. Ours higher: the peer's MM1 is
    /// left unanswered (true is returned), and the peer drops its own main mode when ours
    /// reaches it. Ours lower and still unanswered: ours is dropped without a message and
    /// the peer's is answered. A phase 1 rekey (ours or, on an established SA, the peer's)
    /// is left to the rekey rules.
    fn simultaneous_start(&mut self, conn: ConnId, remote: SocketAddr, their_cky: u64) -> bool {
        let Some((key, ours, unanswered)) = self
            .sas
            .iter()
            .find(|(_, sa)| {
                sa.c.initiator
                    && sa.c.peer.id == conn
                    && sa.c.remote.ip() == remote.ip()
                    && sa.c.rekey_of.is_none()
                    && !sa.is_established()
                    && !sa.is_closed()
            })
            .map(|(k, sa)| (*k, sa.c.cky_i, sa.awaits_mm2()))
        else {
            return false;
        };
        if ours > their_cky {
            tracing::debug!(peer = %remote, "v1: both ends started main mode; ours goes on");
            return true;
        }
        if unanswered {
            tracing::debug!(peer = %remote, "v1: both ends started main mode; the peer's goes on");
            self.sas.remove(&key);
        }
        false
    }

    /// Keeps a new responder SA, or answers the first message's failure with its notify.
    fn responder_started(
        &mut self,
        dgram: Datagram<'_>,
        cky_i: u64,
        cky_r: u64,
        res: Result<Phase1Sa, V1Error>,
    ) -> Result<(), V1Error> {
        match res {
            Ok(sa) => {
                self.answered.insert((dgram.remote, cky_i), cky_r);
                self.sas.insert(cky_r, sa);
                Ok(())
            }
            Err(e) => {
                if let Reaction::Notify(ty) = e.notify() {
                    self.notify_unknown(dgram, cky_i, ty);
                }
                Err(e)
            }
        }
    }

    fn with_sa(
        &mut self,
        now: Instant,
        key: u64,
        drops: &mut Vec<(ConnId, Identity, u64)>,
        f: impl FnOnce(&mut Phase1Sa, &mut Ctx<'_>),
    ) {
        let mut ctx = ctx!(self, now, drops);
        if let Some(sa) = self.sas.get_mut(&key) {
            f(sa, &mut ctx);
        }
    }

    /// Applies INITIAL-CONTACT (RFC 2407 §4.6.3.3: the peer has no other SA with us, so its
    /// older ones go without a word), starts quick mode on SAs we initiated that have just
    /// been established, and forgets closed SAs.
    fn settle(&mut self, now: Instant, mut drops: Vec<(ConnId, Identity, u64)>) {
        while let Some((conn, peer_id, keep)) = drops.pop() {
            let victims: Vec<u64> = self
                .sas
                .iter()
                .filter(|(k, sa)| {
                    **k != keep && sa.c.peer.id == conn && sa.peer_id() == Some(&peer_id)
                })
                .map(|(k, _)| *k)
                .collect();
            for k in victims {
                self.with_sa(now, k, &mut drops, |sa, ctx| sa.drop_silently(ctx));
            }
        }
        // Phase 1 rekeys: started when due, finished when their new SA is up.
        let mut none = Vec::new();
        let mut ctx = ctx!(self, now, &mut none);
        crate::v1::sa::rekey::settle(&mut self.sas, &mut ctx);
        let fresh: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.c.want_child && sa.is_established())
            .map(|(k, _)| *k)
            .collect();
        for k in fresh {
            let mut none = Vec::new();
            self.with_sa(now, k, &mut none, |sa, ctx| sa.start_child(ctx));
        }
        let queued: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, sa)| !sa.c.queued.is_empty() && sa.is_established())
            .map(|(k, _)| *k)
            .collect();
        for k in queued {
            let mut none = Vec::new();
            self.with_sa(now, k, &mut none, |sa, ctx| sa.start_queued(ctx));
        }
        let closed: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.is_closed())
            .map(|(k, _)| *k)
            .collect();
        for k in closed {
            if self.sas.remove(&k).is_some() {
                // By our cookie: the SA's address may have changed since MM1 (NAT-T's
                // float to port 4500), the entry's key has the address MM1 came from.
                self.answered.retain(|_, ours| *ours != k);
            }
        }
    }

    fn reject(&mut self, e: &V1Error, peer: SocketAddr) {
        let reason = e.reason();
        tracing::debug!(%peer, error = %e, "v1: rejected input");
        *self.stats.rejected.entry(reason).or_default() += 1;
        self.out
            .push_back(Output::Event(Event::Rejected { reason, peer }));
    }

    fn fresh_cookie(&mut self) -> u64 {
        loop {
            let c = self.rng.next_u64();
            if c != 0 && !self.sas.contains_key(&c) {
                return c;
            }
        }
    }

    fn key_of(&self, f: impl Fn(&Phase1Sa) -> bool) -> Option<u64> {
        self.sas
            .iter()
            .filter(|(_, sa)| f(sa) && !sa.is_closed())
            .map(|(k, _)| *k)
            .min()
    }
}
