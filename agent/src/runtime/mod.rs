//! The daemon's state and what it does with each input: it drives the IKE engine, turns the
//! engine's outputs into kernel work (through [`crate::reconcile`] and [`crate::kernel`]),
//! keeps the books of sessions, Child SAs and clones, and answers the control socket. The
//! event loop that feeds it is [`crate::daemon`]. Submodules hold the handlers of one concern
//! each: `clones` (dynamic VTIs), `underlay`, `control` (and metrics), `reload`.
//!
//! After every input the engine's outputs are applied in order: an `InstallChildSa` is
//! completed in the kernel before the next `Transmit`, because that transmit may let the peer
//! start sending on the new SA.

mod clones;
mod control;
mod crypto;
mod dmvpn;
mod line;
mod maps;
mod mgre;
mod multipoint;
mod reload;
mod restart;
mod revocation;
mod underlay;
mod vici;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ike::{ChildSaId, Command as IkeCommand, ConnId, Event, Output, SessionId};
use serde_json::json;
use tracing::{Instrument, error, info, warn};

use crate::config::{Config, LoadOptions, Offload};
use crate::control::{Request, Response, Target};
use crate::engines::{Dispatched, Engines};
use crate::model::Interface;
use crate::offload::{self, Recheck};
use crate::plan::TemplatePlan;
use crate::plan::{self, DeviceKind, Plan, TunnelPlan};
use crate::reconcile::{self, Op};
use crate::rejects::RejectLog;
use crate::sessions::{ChildInfo, ChildState, Sessions};
use crate::show;
use crate::sockets::{Datagram, Feed, Sockets};
use crate::virtual_access::VirtualAccesses;
use crate::{kernel, model};

/// One summary line per reason of rejected IKE input per this interval (see `rejects`).
const REJECT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The reject reason of an IKEv1 datagram when no IKE profile says `version = 1`.
const NO_IKEV1: &str = "ikev1-not-configured";

/// Where a static tunnel is, besides its line state (up while a Child SA is installed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelState {
    /// Its device and policies exist.
    Created,
    /// An offload demand the underlay cannot meet keeps it from being created; retried on
    /// every underlay change.
    HeldDown(String),
    /// Taken down by `vtid down`: kernel ACQUIREs (any packet routed into the interface) do
    /// not restart it until `vtid up` or a reload rebuilds it.
    AdminDown,
    /// Its peer was declared dead and its IKE profile says `dpd.action = "clear"`: nothing
    /// restarts it but the peer, `vtid up` or a reload.
    Cleared,
}

/// Everything the daemon owns.
pub struct Runtime {
    /// The configuration file (re-read by reload).
    config_path: PathBuf,
    /// Leave tunnels and SAs in the kernel on shutdown.
    keep_on_exit: bool,
    cfg: Config,
    plan: Plan,
    conn_ids: BTreeMap<String, u32>,
    h: xfrm::Handle,
    ep: Engines,
    socks: Sockets,
    sessions: Sessions,
    clones: VirtualAccesses,
    counters: crate::metrics::Counters,
    offload: offload::Tunnels,
    states: BTreeMap<String, TunnelState>,
    /// The static tunnels' interfaces as created in the kernel, by name.
    made: BTreeMap<String, Interface>,
    /// Multipoint GRE devices made, by name (mgre.rs).
    mgre_made: BTreeMap<String, Interface>,
    /// Multipoint templates' devices made, with their ifindex, by name (multipoint.rs).
    mp_made: BTreeMap<String, (Interface, u32)>,
    /// The static tunnels' line protocol transitions, by name.
    lines: BTreeMap<String, line::Line>,
    /// Negotiation retries of initiating static tunnels.
    retries: line::Retries,
    /// For the readers of sockets a reload opens; it counts the new-SA requests they shed.
    feed: Feed,
    /// Rejected input, logged as summaries.
    rejects: RejectLog,
    /// The feed's shed count as last logged.
    shed_seen: u64,
    /// Crypto maps' run-time state.
    maps: maps::Maps,
    /// mGRE protections' peers and catch-alls (dmvpn.rs).
    protections: dmvpn::Protections,
    /// SA changes for the VICI server.
    vici: crate::vici::Events,
}

/// What [`Runtime::new`] is built from.
pub struct Parts {
    /// Configuration file.
    pub config_path: PathBuf,
    /// `--keep-on-exit`.
    pub keep_on_exit: bool,
    /// The loaded configuration.
    pub cfg: Config,
    /// Its plan.
    pub plan: Plan,
    /// Connection ids the plan handed out.
    pub conn_ids: BTreeMap<String, u32>,
    /// Kernel handle.
    pub h: xfrm::Handle,
    /// The engines (IKEv2 and IKEv1).
    pub ep: Engines,
    /// IKE sockets.
    pub socks: Sockets,
    /// Datagram queues for sockets opened later.
    pub feed: Feed,
    /// Where SA changes are published for the VICI server.
    pub vici: crate::vici::Events,
}

impl Runtime {
    /// The daemon's state before any tunnel is brought up.
    pub fn new(p: Parts) -> Self {
        Self {
            config_path: p.config_path,
            keep_on_exit: p.keep_on_exit,
            cfg: p.cfg,
            plan: p.plan,
            conn_ids: p.conn_ids,
            h: p.h,
            ep: p.ep,
            socks: p.socks,
            sessions: Sessions::default(),
            clones: VirtualAccesses::default(),
            counters: Default::default(),
            offload: Default::default(),
            states: BTreeMap::new(),
            made: BTreeMap::new(),
            mgre_made: BTreeMap::new(),
            mp_made: BTreeMap::new(),
            protections: Default::default(),
            lines: BTreeMap::new(),
            retries: Default::default(),
            feed: p.feed,
            rejects: RejectLog::new(REJECT_LOG_INTERVAL),
            shed_seen: 0,
            maps: maps::Maps::default(),
            vici: p.vici,
        }
    }

    /// Number of static tunnels in the plan.
    pub fn tunnel_count(&self) -> usize {
        self.plan.tunnels.len()
    }

    /// Brings up every static tunnel of the plan.
    pub async fn start(&mut self) {
        self.log_crls();
        for (name, why) in &self.plan.waiting {
            info!("{name}: line protocol down (waiting: {why})");
        }
        let tunnels: Vec<TunnelPlan> = self.plan.tunnels.values().cloned().collect();
        for t in &tunnels {
            // Adopted across a restart (restart.rs): already up in the kernel.
            if self.made.contains_key(&t.name) {
                continue;
            }
            self.bring_up(t).await;
        }
        self.apply_mgre().await;
        self.apply_mgre_protections().await;
        self.apply_multipoint().await;
        self.start_maps().await;
    }

    /// The next deadline: the engine's or a tunnel's negotiation retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ep.poll_timeout(),
            self.retries.next(),
            self.rejects.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the engine's timers and the retries when due (quinn's lesson: compare the
    /// deadline ourselves, the sleep may wake early or late).
    pub fn timers(&mut self) {
        let now = Instant::now();
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        self.retry_due(now);
        let shed = self.feed.shed();
        if shed > self.shed_seen {
            let n = shed - self.shed_seen;
            self.shed_seen = shed;
            if let Some(line) = self.rejects.note(now, crate::rejects::QUEUE_FULL, n, None) {
                info!("{line}");
            }
        }
        for line in self.rejects.flush(now) {
            info!("{line}");
        }
    }

    /// Certificate validity is checked against wall-clock time (RFC 5280 §6.1.3); it is
    /// given before every input so clock steps (NTP at boot) are seen at once.
    pub fn wall_clock(&mut self, now: Instant) {
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            self.ep.set_wall_clock(now, t.as_secs());
        }
    }

    /// An IKE datagram.
    pub fn datagram(&mut self, now: Instant, d: &Datagram) {
        crate::debug::peer_span(d.remote).in_scope(|| {
            tracing::debug!(len = d.bytes.len(), local = %d.local, "IKE datagram received");
            let dispatched = self.ep.handle_datagram(
                now,
                ike::Datagram {
                    local: d.local,
                    remote: d.remote,
                    bytes: &d.bytes,
                },
            );
            // One summary line per interval, whatever the rate (see `rejects`).
            if dispatched == Dispatched::NoIkev1
                && let Some(line) = self.rejects.note(now, NO_IKEV1, 1, Some(d.remote))
            {
                info!("{line}");
            }
        })
    }

    fn tunnel_by_conn(&self, conn: ConnId) -> Option<&TunnelPlan> {
        self.plan.tunnels.values().find(|t| t.conn == conn)
    }

    /// The static tunnel of `conn`, else the virtual-access clone of `session`.
    fn tunnel_for(&self, conn: ConnId, session: SessionId) -> Option<&TunnelPlan> {
        self.tunnel_by_conn(conn)
            .or_else(|| self.clones.of_session(session).map(|c| &c.tunnel))
    }

    /// The underlay of a tunnel as the kernel routes it now; not looked up for `off`.
    async fn underlay(&self, t: &TunnelPlan) -> Result<offload::Underlay, String> {
        if t.offload == Offload::Off {
            return Err(String::new());
        }
        let fvrf = t.fvrf.as_ref().map(|v| v.name.as_str());
        kernel::underlay(&self.h, t.local, t.remote, fvrf).await
    }

    async fn decide_offload(&mut self, t: &TunnelPlan) -> Result<offload::Decision, String> {
        let under = self.underlay(t).await;
        self.offload.decide(&t.name, t.offload, under)
    }

    /// Creates a static tunnel's interface and starts it when it initiates. An offload
    /// demand the underlay cannot meet holds it down (offload.rs logs why and `vtid show
    /// tunnels` reports it).
    async fn bring_up(&mut self, t: &TunnelPlan) {
        if let Err(why) = self.decide_offload(t).await {
            self.states
                .insert(t.name.clone(), TunnelState::HeldDown(why));
            return;
        }
        // Created with its line protocol down: its routes go in with the first Child SA.
        let iface = model::static_interface(t, false);
        let errs = kernel::apply_one(&self.h, &Op::Create(iface.clone())).await;
        if let Some(e) = errs.first() {
            error!(tunnel = %t.name, "cannot create tunnel: {e:#}");
            self.states.remove(&t.name);
            return;
        }
        self.made.insert(t.name.clone(), iface);
        self.lines.insert(
            t.name.clone(),
            line::Line {
                up: false,
                since: Instant::now(),
                why: "no IPsec SA yet".into(),
            },
        );
        if !matches!(self.states.get(&t.name), Some(TunnelState::AdminDown)) {
            self.states.insert(t.name.clone(), TunnelState::Created);
        }
        info!(tunnel = %t.name, if_id = t.if_id, mtu = t.mtu, "tunnel interface up");
        if t.initiate {
            self.ep
                .handle_command(Instant::now(), IkeCommand::Initiate { conn: t.conn });
            self.drain().await;
        }
    }

    /// Applies the engine's outputs in order.
    pub async fn drain(&mut self) {
        while let Some(out) = self.ep.poll_output() {
            let span = self.output_span(&out);
            self.apply(out).instrument(span).await;
        }
    }

    /// The conditional-debug context of an output (see `crate::debug`).
    fn output_span(&self, out: &Output) -> tracing::Span {
        let conn = match out {
            Output::InstallChildSa(i) => Some(i.conn),
            Output::RemoveChildSa(r) => Some(r.conn),
            Output::UpdateChildSaEncap(u) => Some(u.conn),
            _ => None,
        };
        let tunnel = conn
            .and_then(|c| self.tunnel_by_conn(c))
            .map(|t| t.name.as_str());
        crate::debug::output_span(out, tunnel)
    }

    async fn apply(&mut self, out: Output) {
        match out {
            Output::Transmit(t) => match self.socks.for_local(t.local) {
                Some(s) => {
                    tracing::debug!(len = t.bytes.len(), local = %t.local, "IKE datagram sent");
                    if let Err(e) = s.send(t.local.ip(), t.remote, &t.bytes).await {
                        warn!(peer = %t.remote, "send: {e}");
                    }
                }
                None => warn!(local = %t.local, "no IKE socket for this address"),
            },
            Output::NatKeepalive { local, remote } => {
                if let Some(s) = self.socks.for_local(local) {
                    let _ = s.send_keepalive(local.ip(), remote).await;
                }
            }
            Output::InstallChildSa(inst) => {
                let res = if self.map_of_conn(inst.conn).is_some() {
                    self.install_map_child(&inst).await
                } else if self.mgre_protection(inst.conn).is_some() {
                    self.install_mgre_child(&inst).await
                } else {
                    self.install(&inst).await
                };
                if let Err(e) = &res {
                    error!(peer = %inst.remote, "install Child SA: {e:#}");
                }
                let res = res.map_err(|e| ike::InstallFailed {
                    reason: format!("{e:#}"),
                });
                self.ep
                    .handle_install_result(Instant::now(), inst.child, res);
            }
            Output::RemoveChildSa(rm) => {
                self.vici_child(rm.child, crate::vici::SaEventKind::ChildDestroying);
                let info = self.sessions.removed(rm.child);
                if self.remove_map_child(rm.child).await {
                    return;
                }
                if self.remove_mgre_child(rm.child).await {
                    self.session_changed(rm.session).await;
                    return;
                }
                if let Some(t) = self.tunnel_for(rm.conn, rm.session) {
                    let ids = model::child_sa_ids(
                        t,
                        rm.local.ip(),
                        rm.remote.ip(),
                        rm.inbound_spi,
                        rm.outbound_spi,
                    );
                    kernel::delete_sas(&self.h, &ids).await;
                }
                let slot = info
                    .as_ref()
                    .and_then(|c| c.clone)
                    .or_else(|| self.clones.of_session(rm.session).map(|c| c.slot));
                if let (Some(slot), Some(info)) = (slot, info) {
                    self.clone_child_removed(slot, info.routes).await;
                }
                self.child_gone(&rm).await;
                self.session_changed(rm.session).await;
                if let Some(slot) = slot {
                    self.remove_clone_if_unused(slot).await;
                }
            }
            Output::UpdateChildSaEncap(u) => {
                let Some(t) = self.tunnel_for(u.conn, u.session) else {
                    warn!(peer = %u.remote, "NAT mapping: no tunnel for this Child SA");
                    return;
                };
                let updates = model::child_encap_updates(t, &u);
                match kernel::update_encap(&self.h, &updates).await {
                    Ok(()) => {
                        info!(
                            tunnel = %t.name,
                            peer = %u.remote,
                            "Child SA follows the peer's new NAT mapping"
                        );
                        self.sessions.encap_moved(u.child, u.remote, u.encap);
                    }
                    // The SAs keep the old ports; the kernel reports the mapping again
                    // (MAPPING_THRESHOLD_SECS later) while ESP keeps arriving from the new
                    // one, and a rekey installs the new ports anyway.
                    Err(e) => warn!(tunnel = %t.name, "NAT mapping: {e:#}"),
                }
            }
            Output::Event(Event::Rejected { reason, peer }) => {
                if let Some(line) = self.rejects.note(Instant::now(), reason, 1, Some(peer)) {
                    info!("{line}");
                }
            }
            Output::Event(ev) => {
                if let Event::IkeSaMoved {
                    session,
                    conn,
                    local,
                    remote,
                } = ev
                {
                    self.session_moved(session, conn, local.ip(), remote.ip())
                        .await;
                }
                self.clone_event(&ev).await;
                // A crypto map peer that stopped answering (DPD, retransmissions) or refused
                // the negotiation: its entries try their next peer.
                if let Event::IkeSaDown {
                    conn,
                    reason: ike::DownReason::Timeout | ike::DownReason::Failed(_),
                    ..
                } = &ev
                    && self.map_of_conn(*conn).is_some()
                {
                    self.map_peer_failed(*conn, Instant::now()).await;
                }
                self.follow_ike(&ev, Instant::now());
                self.vici_event(&ev);
                self.event(ev)
            }
        }
    }

    async fn install(&mut self, inst: &ike::ChildSaInstall) -> Result<()> {
        let t = self
            .tunnel_for(inst.conn, inst.session)
            .context("no tunnel for this connection")?
            .clone();
        let sas = model::child_sas(&t, inst)?;
        let d = self.decide_offload(&t).await.map_err(anyhow::Error::msg)?;
        let xfrmi = t.mode == DeviceKind::Xfrmi;
        let res = kernel::install_child_sas(&self.h, &sas, &d, xfrmi, inst.halves).await;
        // A rekey may install its SAs at two moments (`ike::Halves`); the offload record
        // (both SAs of the tunnel) stays the one of the pair it replaces, made by the same
        // decision.
        if inst.halves == ike::Halves::Both {
            self.offload.record(&t.name, t.offload, &d, &res);
        }
        res?;
        if inst.halves == ike::Halves::OutboundLater {
            // Routes and books came with the inbound SA.
            return Ok(());
        }
        let clone = self.clones.of_session(inst.session).map(|c| c.slot);
        let routes = match clone {
            Some(slot) => self.clone_child_routes(slot, &inst.remote_ts).await,
            None => Vec::new(),
        };
        let lifetime = self
            .plan
            .endpoint
            .peers
            .iter()
            .find(|p| p.id == inst.conn)
            .map(|p| &p.child)
            .or_else(|| {
                let v1 = self.plan.v1.peers.iter().find(|p| p.id == inst.conn);
                v1.map(|p| &p.child)
            })
            .map_or(inst.hard_lifetime, |c| c.lifetime.lifetime);
        self.sessions.installed(
            inst.child,
            ChildInfo::installed(inst, lifetime, clone, routes),
        );
        info!(
            tunnel = %t.name,
            spi_in = format_args!("{:08x}", inst.inbound_spi),
            spi_out = format_args!("{:08x}", inst.outbound_spi),
            "Child SA installed"
        );
        if clone.is_none() {
            self.child_up(&t.name, inst.remote.ip()).await;
        }
        self.vici_child(inst.child, crate::vici::SaEventKind::ChildInstalled);
        Ok(())
    }

    fn event(&mut self, ev: Event) {
        self.count(&ev);
        let ep = &self.ep;
        self.sessions
            .event(&ev, Instant::now(), |s| ep.session_alive(s));
        match &ev {
            Event::IkeSaUp { conn, remote, .. } => {
                info!(conn = conn.0, peer = %remote, "IKE SA established");
            }
            Event::IkeSaDown { conn, reason, .. } => {
                info!(conn = conn.0, ?reason, "IKE SA down");
            }
            Event::AuthFailed { conn, peer, reason } => {
                warn!(peer = %peer, conn = ?conn.map(|c| c.0), reason, "authentication failed");
            }
            Event::PeerDead { conn, peer, .. } => warn!(conn = conn.0, peer = %peer, "peer dead"),
            other => info!("{other:?}"),
        }
    }

    /// Metrics counters for an engine event (rekeys per tunnel, handshake failures).
    fn count(&mut self, ev: &Event) {
        let name = |d: &Self, conn: ConnId| d.tunnel_by_conn(conn).map(|t| t.name.clone());
        match ev {
            Event::IkeSaRekeyed { conn, .. } => {
                if let Some(t) = name(self, *conn) {
                    self.counters.rekey(&t, "ike");
                }
            }
            Event::ChildSaRekeyed { old, new, .. } => {
                let conn = self
                    .sessions
                    .child(*new)
                    .or(self.sessions.child(*old))
                    .map(|c| c.conn);
                if let Some(t) = conn.and_then(|c| name(self, c)) {
                    self.counters.rekey(&t, "child");
                }
            }
            Event::AuthFailed { reason, .. } => self.counters.failure(reason),
            Event::PeerDead { .. } => self.counters.failure("peer-dead"),
            _ => {}
        }
    }

    /// An XFRM event: byte-lifetime EXPIREs rekey or end a Child SA, ACQUIREs start a
    /// static tunnel on demand, MAPPINGs (ESP-in-UDP from a new NAT mapping of the peer) go
    /// to the engine, which decides whether the session follows.
    pub fn kernel_event(&mut self, now: Instant, ev: xfrm::Event) {
        match ev {
            xfrm::Event::Expire(e) => {
                if let Some(child) = self.sessions.by_spi(e.sa.spec.spi.0) {
                    let cmd = if e.hard {
                        IkeCommand::ChildExpired { child }
                    } else {
                        IkeCommand::RekeyChild { child }
                    };
                    self.ep.handle_command(now, cmd);
                }
            }
            xfrm::Event::Mapping(m) => {
                // Only our inbound SAs report mappings, and only ours are the engine's.
                let ours = self
                    .sessions
                    .by_spi(m.spi.0)
                    .and_then(|c| self.sessions.child(c))
                    .is_some_and(|c| c.spi_in == m.spi.0);
                if ours {
                    tracing::debug!(
                        spi = format_args!("{:08x}", m.spi.0),
                        old = %std::net::SocketAddr::new(m.old_src, m.old_sport),
                        new = %std::net::SocketAddr::new(m.new_src, m.new_sport),
                        "kernel: peer's NAT mapping changed"
                    );
                    let remote = std::net::SocketAddr::new(m.new_src, m.new_sport);
                    self.ep.handle_command(
                        now,
                        IkeCommand::NatMapping {
                            inbound_spi: m.spi.0,
                            remote,
                        },
                    );
                }
            }
            xfrm::Event::Acquire(a) => {
                if self.map_acquire(now, &a) {
                    return;
                }
                let want = a.policy.if_id.or(a.policy.mark.map(|m| m.value));
                if let Some(t) = self.plan.tunnels.values().find(|t| Some(t.if_id) == want) {
                    if matches!(self.states.get(&t.name), Some(TunnelState::AdminDown)) {
                        tracing::debug!(tunnel = %t.name, "ACQUIRE ignored: taken down by `vtid down`");
                    } else if matches!(self.states.get(&t.name), Some(TunnelState::Cleared)) {
                        tracing::debug!(tunnel = %t.name, "ACQUIRE ignored: cleared after its peer died");
                    } else if !t.initiate {
                        // `initiate = false` answers only: traffic never starts it.
                        tracing::debug!(tunnel = %t.name, "ACQUIRE ignored: initiate = false");
                    } else {
                        tracing::debug!(tunnel = %t.name, "ACQUIRE: starting the tunnel on demand");
                        self.ep
                            .handle_command(now, IkeCommand::Initiate { conn: t.conn });
                    }
                }
            }
            _ => {}
        }
    }

    /// Deletes every Child SA of a static tunnel from the kernel and the books.
    async fn remove_children(&mut self, t: &TunnelPlan) {
        for id in self.sessions.of_conn(t.conn) {
            if let Some(c) = self.sessions.removed(id) {
                let ids = model::child_sa_ids(t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out);
                kernel::delete_sas(&self.h, &ids).await;
            }
        }
    }

    /// Deletes every IKE SA with its peer, then removes all kernel objects; keeps going after
    /// errors and logs each one. With `--keep-on-exit` it does neither.
    pub async fn shutdown(&mut self) {
        info!("shutting down");
        if self.keep_on_exit {
            // Leave traffic up: no IKE DELETE either, since a peer that receives one removes
            // its Child SAs at once (RFC 7296 §1.4.1) and traffic would stop. The next start
            // sweeps what is left here and renegotiates with INITIAL_CONTACT (§2.4), which
            // makes the peers drop these SAs.
            info!("--keep-on-exit: leaving tunnels and SAs in the kernel");
            return;
        }
        self.unload_all_maps().await;
        let conns: Vec<ConnId> = self
            .plan
            .tunnels
            .values()
            .map(|t| t.conn)
            .chain(self.plan.templates.keys().copied())
            .collect();
        for conn in conns {
            self.ep
                .handle_command(Instant::now(), IkeCommand::Terminate { conn });
        }
        self.drain().await;
        // The devices and policies go first, so no packet meets a policy whose SAs are
        // already gone: the kernel would answer it with an ACQUIRE and a larval SA (spi 0)
        // that cannot be deleted by SPI and lingers for net.core.xfrm_acq_expires.
        for c in self.clones.take_all() {
            if c.multipoint {
                // Its routes go with the device (removed right after the spokes).
                self.remove_spoke(&c, Vec::new()).await;
                continue;
            }
            for e in kernel::apply_one(&self.h, &Op::Remove(c.interface.clone())).await {
                warn!(interface = %c.tunnel.name, "remove dynamic VTI: {e:#}");
            }
            info!(interface = %c.tunnel.name, peer = %c.tunnel.remote, "dynamic VTI removed");
        }
        self.remove_multipoint().await;
        let ops = reconcile::interfaces(&self.made, &BTreeMap::new(), &BTreeSet::new());
        for e in kernel::apply(&self.h, &ops).await {
            warn!("teardown: {e:#}");
        }
        self.made.clear();
        let tunnels: Vec<TunnelPlan> = self.plan.tunnels.values().cloned().collect();
        for t in &tunnels {
            self.remove_children(t).await;
        }
        for e in sweep(&self.h).await {
            warn!("teardown sweep: {e:#}");
        }
    }
}

/// Removes every kernel object carrying vtid's marks that no live interface accounts for
/// (all of them: called at start, before anything is created, and at shutdown after
/// everything known was removed). Returns the errors; logs how much it removed.
pub async fn sweep(h: &xfrm::Handle) -> Vec<anyhow::Error> {
    let (owned, mut errs) = kernel::owned(h).await;
    let ops = reconcile::sweep(&owned, []);
    let n = ops.len();
    let failed = kernel::apply(h, &ops).await;
    let removed = n - failed.len();
    if removed > 0 {
        info!(removed, "removed kernel objects vtid had left");
    }
    errs.extend(failed);
    errs
}
