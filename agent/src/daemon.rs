//! `vtid run`: one task owns the IKE engine and the kernel handle; socket readers, the XFRM
//! event monitor, the control socket and signals feed it through one channel (no shared
//! mutable state). After every input the engine's outputs are applied in order: an
//! `InstallChildSa` is completed in the kernel before the next `Transmit`, because that
//! transmit may let the peer start sending on the new SA.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ike::{ChildSaId, Command as IkeCommand, ConnId, Endpoint, Event, Output, SessionId};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{Instrument, error, info, warn};

use crate::config::{Config, LoadOptions};
use crate::control::{self, Incoming, Request, Response};
use crate::kernel;
use crate::plan::{self, DeviceKind, Plan, TunnelPlan};
use crate::udp::{IkeSocket, Received};

/// Inputs of the daemon task.
enum Input {
    Datagram {
        bytes: Vec<u8>,
        local: SocketAddr,
        remote: SocketAddr,
    },
    Kernel(xfrm::Event),
    /// Links, routes or addresses changed (debounced): the offload underlay may have moved.
    NetChange,
    Control(Incoming),
    /// A metrics scrape wants the exposition text.
    Metrics(crate::metrics::Scrape),
    Reload,
    Shutdown,
}

/// A Child SA as installed in the kernel, for `show sa` and for mapping kernel expires back.
#[derive(Clone, Debug)]
struct ChildInfo {
    conn: ConnId,
    session: SessionId,
    spi_in: u32,
    spi_out: u32,
    encr: ike::transform::Encr,
    integ: Option<ike::transform::Integ>,
    local: SocketAddr,
    remote: SocketAddr,
    installed: Instant,
    /// The configured lifetime: the engine rekeys before it and deletes the SA at it; the
    /// kernel's hard limit is a safety net a minute later. `show sa` counts down to this, as
    /// IOS's "remaining key lifetime" counts down the configured one.
    lifetime: Duration,
    hard_bytes: Option<u64>,
    encap: bool,
}

/// Options of `vtid run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Configuration file.
    pub config: PathBuf,
    /// Control socket path (overrides the configuration's).
    pub socket: Option<PathBuf>,
    /// Leave tunnels and SAs in the kernel on shutdown.
    pub keep_on_exit: bool,
}

struct Sockets {
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
    fn for_local(&self, local: SocketAddr) -> Option<&Arc<IkeSocket>> {
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

struct Daemon {
    opts: RunOptions,
    cfg: Config,
    plan: Plan,
    conn_ids: BTreeMap<String, u32>,
    h: xfrm::Handle,
    ep: Endpoint,
    socks: Sockets,
    children: BTreeMap<ChildSaId, ChildInfo>,
    sessions_up: HashMap<SessionId, Instant>,
    dvti: crate::dvti::Dvti,
    counters: crate::metrics::Counters,
    offload: crate::offload::Tunnels,
    /// Static tunnels an offload demand kept from being created; retried on NetChange.
    held_down: std::collections::BTreeSet<String>,
    /// Child SAs rekeyed because their underlay changed, until the rekey replaces them.
    moving: std::collections::BTreeSet<ChildSaId>,
    /// Tunnels an operator took down with `vtid down`: kernel ACQUIREs (any packet routed
    /// into the interface) no longer restart them until `vtid up` or a reload rebuilds them.
    admin_down: std::collections::BTreeSet<String>,
    /// The daemon's own input channel, for readers of sockets a reload opens.
    tx: mpsc::Sender<Input>,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(opts: RunOptions) -> Result<()> {
    let cfg = Config::load_with(&opts.config, &LoadOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("load {}", opts.config.display()))?;
    let mut conn_ids = BTreeMap::new();
    let h = xfrm::Handle::open(xfrm::Netns::Current).context("open netlink")?;
    let plan = plan::build(&cfg, &mut conn_ids, &kernel::local_addrs(&h).await?)?;

    // A previous run may have died without cleaning up (kill -9): remove what it left.
    let (n, errs) = kernel::sweep_orphans(&h).await;
    if n > 0 {
        info!(removed = n, "removed kernel objects left by a previous run");
    }
    for e in errs {
        warn!("start-up sweep: {e:#}");
    }

    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    let mut socks = bind_sockets(&cfg, &tx)?;
    bind_vrf_sockets(&h, &cfg, &plan, &tx, &mut socks).await?;
    let sock_path = opts
        .socket
        .clone()
        .unwrap_or_else(|| cfg.global.control_socket.clone());
    let listener = control::bind(&sock_path)?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel(16);
    tokio::spawn(control::serve(listener, ctl_tx));
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(i) = ctl_rx.recv().await {
                if tx.send(Input::Control(i)).await.is_err() {
                    break;
                }
            }
        });
    }
    if let Some(addr) = cfg.global.metrics {
        spawn_metrics(addr, tx.clone())?;
    }
    spawn_monitor(tx.clone());
    spawn_netmon(tx.clone());
    spawn_signals(tx.clone())?;

    let mut d = Daemon {
        ep: Endpoint::new(Arc::new(plan.endpoint.clone()), random_seed()?),
        opts,
        cfg,
        plan,
        conn_ids,
        h,
        socks,
        children: BTreeMap::new(),
        sessions_up: HashMap::new(),
        dvti: Default::default(),
        counters: Default::default(),
        offload: Default::default(),
        held_down: Default::default(),
        moving: Default::default(),
        admin_down: Default::default(),
        tx: tx.clone(),
    };
    let tunnels: Vec<TunnelPlan> = d.plan.tunnels.values().cloned().collect();
    for t in &tunnels {
        d.bring_up(t).await;
    }
    info!(socket = %sock_path.display(), tunnels = tunnels.len(), "vtid running");
    crate::notify::ready();

    loop {
        let deadline = d.ep.poll_timeout();
        let input = tokio::select! {
            i = rx.recv() => i,
            _ = sleep_until(deadline) => None,
        };
        let now = Instant::now();
        // Certificate validity is checked against wall-clock time (RFC 5280 §6.1.3); give it
        // before every input so clock steps (NTP at boot) are seen at once.
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            d.ep.set_wall_clock(now, t.as_secs());
        }
        match input {
            Some(Input::Datagram {
                bytes,
                local,
                remote,
            }) => crate::debug::peer_span(remote).in_scope(|| {
                tracing::debug!(len = bytes.len(), %local, "IKE datagram received");
                d.ep.handle_datagram(
                    now,
                    ike::Datagram {
                        local,
                        remote,
                        bytes: &bytes,
                    },
                )
            }),
            Some(Input::Kernel(ev)) => d.kernel_event(now, ev),
            Some(Input::NetChange) => d.underlay_changed().await,
            Some(Input::Control(inc)) => {
                let resp = d.control(inc.request).await;
                let _ = inc.reply.send(resp);
            }
            Some(Input::Metrics(reply)) => {
                let _ = reply.send(d.metrics().await);
            }
            Some(Input::Reload) => {
                if let Err(e) = d.reload().await {
                    error!("reload refused: {e:#}");
                }
            }
            Some(Input::Shutdown) => break,
            None => {}
        }
        // quinn's lesson: compare the deadline ourselves, the sleep may wake early or late.
        if d.ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            d.ep.handle_timeout(Instant::now());
        }
        d.drain().await;
    }
    d.shutdown().await;
    let _ = std::fs::remove_file(&sock_path);
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}

fn bind_sockets(cfg: &Config, tx: &mpsc::Sender<Input>) -> Result<Sockets> {
    let mut list = Vec::new();
    let v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    for (ip, required) in [(v4, true), (v6, false)] {
        for (port, natt) in [(cfg.global.ike_port, false), (cfg.global.nat_t_port, true)] {
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
fn spawn_reader(s: Arc<IkeSocket>, tx: mpsc::Sender<Input>) -> tokio::task::AbortHandle {
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
                        .send(Input::Datagram {
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
async fn bind_vrf_sockets(
    h: &xfrm::Handle,
    cfg: &Config,
    plan: &Plan,
    tx: &mpsc::Sender<Input>,
    socks: &mut Sockets,
) -> Result<()> {
    socks.fvrf_of =
        crate::vrf::fvrf_of_local(plan.tunnels.values().map(|t| (t.local, t.fvrf.as_ref())));
    let wanted: std::collections::BTreeSet<&str> = plan
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
            for (port, natt) in [(cfg.global.ike_port, false), (cfg.global.nat_t_port, true)] {
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

/// The opt-in Prometheus listener; scrapes come back to the daemon task as inputs.
fn spawn_metrics(addr: SocketAddr, tx: mpsc::Sender<Input>) -> Result<()> {
    let listener = crate::metrics::bind(addr)?;
    let (m_tx, mut m_rx) = mpsc::channel(4);
    tokio::spawn(crate::metrics::serve(listener, m_tx));
    tokio::spawn(async move {
        while let Some(reply) = m_rx.recv().await {
            if tx.send(Input::Metrics(reply)).await.is_err() {
                break;
            }
        }
    });
    info!(%addr, "metrics listener");
    Ok(())
}

fn spawn_monitor(tx: mpsc::Sender<Input>) {
    match xfrm::Monitor::open(&xfrm::Netns::Current) {
        Ok(mut m) => {
            tokio::spawn(async move {
                loop {
                    match m.next().await {
                        Ok(ev) => {
                            if tx.send(Input::Kernel(ev)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!("XFRM monitor: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            });
        }
        Err(e) => warn!("XFRM events unavailable (no byte-lifetime rekeys): {e}"),
    }
}

/// Link/route/address events, coalesced: a route flap or a device removal comes as a burst
/// (DELLINK, DELROUTE per route, DELADDR...), and one re-check after it settles is enough.
fn spawn_netmon(tx: mpsc::Sender<Input>) {
    const SETTLE: Duration = Duration::from_millis(300);
    match xfrm::NetMonitor::open(&xfrm::Netns::Current) {
        Ok(mut m) => {
            tokio::spawn(async move {
                while m.next().await.is_some() {
                    while let Ok(Some(_)) = tokio::time::timeout(SETTLE, m.next()).await {}
                    if tx.send(Input::NetChange).await.is_err() {
                        return;
                    }
                }
                warn!("route monitor ended: underlay changes are no longer followed");
            });
        }
        Err(e) => warn!("route events unavailable (offloaded SAs do not follow the underlay): {e}"),
    }
}

fn spawn_signals(tx: mpsc::Sender<Input>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = hup.recv() => Input::Reload,
                _ = term.recv() => Input::Shutdown,
                _ = int.recv() => Input::Shutdown,
            };
            let stop = matches!(input, Input::Shutdown);
            if tx.send(input).await.is_err() || stop {
                return;
            }
        }
    });
    Ok(())
}

impl Daemon {
    fn tunnel_by_conn(&self, conn: ConnId) -> Option<&TunnelPlan> {
        self.plan.tunnels.values().find(|t| t.conn == conn)
    }

    /// The static tunnel of `conn`, else the dynamic VTI clone of `session`.
    fn tunnel_for(&self, conn: ConnId, session: SessionId) -> Option<&TunnelPlan> {
        self.tunnel_by_conn(conn)
            .or_else(|| self.dvti.tunnel_of(session))
    }

    /// Dynamic VTIs follow the engine's events (see `crate::dvti`): a clone is made when a
    /// template's peer authenticates, before its first install, and checked when its IKE SA
    /// goes.
    async fn dvti_event(&mut self, ev: &Event) {
        match ev {
            Event::PeerAuthenticated {
                session,
                conn,
                peer_id,
                remote,
                local,
                initial_contact,
            } => {
                let Some(tp) = self.plan.templates.get(conn) else {
                    return;
                };
                let statics: Vec<u32> = self.plan.tunnels.values().map(|t| t.if_id).collect();
                let res = self
                    .dvti
                    .peer_authenticated(
                        &self.h,
                        tp,
                        &statics,
                        *session,
                        peer_id,
                        *local,
                        *remote,
                        *initial_contact,
                    )
                    .await;
                if let Err(e) = res {
                    error!(peer = %remote, "dynamic VTI: {e:#}");
                }
            }
            Event::IkeSaDown { session, .. } => {
                let alive = self.ep.session_alive(*session);
                self.dvti.session_changed(&self.h, *session, alive).await;
            }
            _ => {}
        }
    }

    async fn bring_up(&mut self, t: &TunnelPlan) {
        // An offload demand the underlay cannot meet keeps the tunnel down (offload.rs logs
        // why and `vtid show tunnels` reports it).
        if self.offload.decide(&self.h, t).await.is_err() {
            self.held_down.insert(t.name.clone());
            return;
        }
        self.held_down.remove(&t.name);
        if let Err(e) = kernel::create_tunnel(&self.h, t).await {
            error!(tunnel = %t.name, "cannot create tunnel: {e:#}");
            for e in kernel::remove_tunnel(&self.h, t).await {
                warn!(tunnel = %t.name, "cleanup: {e:#}");
            }
            return;
        }
        info!(tunnel = %t.name, if_id = t.if_id, mtu = t.mtu, "tunnel interface up");
        if t.initiate {
            self.ep
                .handle_command(Instant::now(), IkeCommand::Initiate { conn: t.conn });
            self.drain().await;
        }
    }

    async fn drain(&mut self) {
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
                let res = self.install(&inst).await;
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
                self.children.remove(&rm.child);
                self.moving.remove(&rm.child);
                if let Some(t) = self.tunnel_for(rm.conn, rm.session) {
                    let ids = kernel::child_sa_ids(
                        t,
                        rm.local.ip(),
                        rm.remote.ip(),
                        rm.inbound_spi,
                        rm.outbound_spi,
                    );
                    for id in ids {
                        if let Err(e) = self.h.sa().delete(&id).await {
                            if !matches!(e, xfrm::Error::NotFound { .. }) {
                                warn!(spi = format_args!("{:08x}", id.spi.0), "delete SA: {e}");
                            }
                        }
                    }
                }
                let alive = self.ep.session_alive(rm.session);
                self.dvti
                    .child_removed(&self.h, rm.child, rm.session, alive)
                    .await;
            }
            Output::Event(ev) => {
                self.dvti_event(&ev).await;
                self.event(ev)
            }
        }
    }

    async fn install(&mut self, inst: &ike::ChildSaInstall) -> Result<()> {
        let t = self
            .tunnel_for(inst.conn, inst.session)
            .context("no tunnel for this connection")?
            .clone();
        let sas = kernel::child_sas(&t, inst)?;
        let xfrmi = t.mode == DeviceKind::Xfrmi;
        self.offload.install(&self.h, &t, &sas, xfrmi).await?;
        self.children.insert(
            inst.child,
            ChildInfo {
                conn: inst.conn,
                session: inst.session,
                spi_in: inst.inbound_spi,
                spi_out: inst.outbound_spi,
                encr: inst.encr,
                integ: inst.integ,
                local: inst.local,
                remote: inst.remote,
                installed: Instant::now(),
                lifetime: self
                    .plan
                    .endpoint
                    .peers
                    .iter()
                    .find(|p| p.id == inst.conn)
                    .map_or(inst.hard_lifetime, |p| p.child.lifetime.lifetime),
                hard_bytes: inst.bytes.map(|b| b.hard),
                encap: inst.encap.is_some(),
            },
        );
        self.dvti.child_installed(&self.h, inst).await;
        info!(
            tunnel = %t.name,
            spi_in = format_args!("{:08x}", inst.inbound_spi),
            spi_out = format_args!("{:08x}", inst.outbound_spi),
            "Child SA installed"
        );
        Ok(())
    }

    fn event(&mut self, ev: Event) {
        self.count(&ev);
        match &ev {
            Event::IkeSaUp {
                session,
                conn,
                remote,
                ..
            } => {
                self.sessions_up.insert(*session, Instant::now());
                info!(conn = conn.0, peer = %remote, "IKE SA established");
            }
            Event::IkeSaDown {
                session,
                conn,
                reason,
            } => {
                self.sessions_up.remove(session);
                info!(conn = conn.0, ?reason, "IKE SA down");
            }
            Event::AuthFailed { conn, peer, reason } => {
                warn!(peer = %peer, conn = ?conn.map(|c| c.0), reason, "authentication failed");
            }
            Event::PeerDead { conn, peer, .. } => warn!(conn = conn.0, peer = %peer, "peer dead"),
            Event::Rejected { reason, peer } => info!(peer = %peer, reason, "rejected message"),
            other => info!("{other:?}"),
        }
    }

    /// The underlay may have changed (see offload.rs): Child SAs of offloading tunnels whose
    /// device is no longer the one ESP to the peer leaves through, or whose SAs the kernel
    /// deleted with their device, are rekeyed onto the underlay as it is now; a demand that
    /// can no longer be met takes the tunnel down with the reason in `vtid show`. Tunnels an
    /// offload demand held down are retried.
    async fn underlay_changed(&mut self) {
        let mut by_tunnel: BTreeMap<String, (TunnelPlan, Vec<(ChildSaId, ChildInfo)>)> =
            BTreeMap::new();
        for (id, c) in &self.children {
            if let Some(t) = self.tunnel_for(c.conn, c.session)
                && t.offload != crate::config::Offload::Off
            {
                by_tunnel
                    .entry(t.name.clone())
                    .or_insert_with(|| (t.clone(), Vec::new()))
                    .1
                    .push((*id, c.clone()));
            }
        }
        let now = Instant::now();
        for (name, (t, kids)) in by_tunnel {
            let mut vanished = false;
            if self.offload.offloaded(&name) {
                for (_, c) in &kids {
                    for id in
                        kernel::child_sa_ids(&t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out)
                    {
                        if matches!(
                            self.h.sa().get(&id).await,
                            Err(xfrm::Error::NotFound { .. })
                        ) {
                            vanished = true;
                        }
                    }
                }
            }
            match self.offload.recheck(&self.h, &t).await {
                crate::offload::Recheck::Refuse(_) => {
                    if self.plan.tunnels.contains_key(&name) {
                        self.ep
                            .handle_command(now, IkeCommand::Terminate { conn: t.conn });
                    } else {
                        for (child, _) in &kids {
                            self.ep
                                .handle_command(now, IkeCommand::ChildExpired { child: *child });
                        }
                    }
                }
                r => {
                    let why = match r {
                        crate::offload::Recheck::Move(w) => w,
                        _ if vanished => "the kernel deleted the offloaded SAs".into(),
                        _ => continue,
                    };
                    for (child, _) in &kids {
                        if self.moving.insert(*child) {
                            info!(tunnel = %name, "underlay changed ({why}): rekeying Child SA");
                            self.ep
                                .handle_command(now, IkeCommand::RekeyChild { child: *child });
                        }
                    }
                }
            }
        }
        // Tunnels held down by a demand: created once the underlay can meet it; initiators
        // that a runtime refusal terminated start again.
        let held: Vec<TunnelPlan> = self
            .plan
            .tunnels
            .values()
            .filter(|t| self.held_down.contains(&t.name))
            .cloned()
            .collect();
        for t in &held {
            self.bring_up(t).await;
        }
        let restart: Vec<ConnId> = self
            .plan
            .tunnels
            .values()
            .filter(|t| {
                t.initiate
                    && !self.held_down.contains(&t.name)
                    && self.offload.refused(&t.name).is_some()
                    && !self.children.values().any(|c| c.conn == t.conn)
            })
            .map(|t| t.conn)
            .collect();
        for conn in restart {
            let t = self.tunnel_by_conn(conn).cloned().expect("listed above");
            if self.offload.decide(&self.h, &t).await.is_ok() {
                self.ep.handle_command(now, IkeCommand::Initiate { conn });
            }
        }
    }

    fn kernel_event(&mut self, now: Instant, ev: xfrm::Event) {
        match ev {
            xfrm::Event::Expire(e) => {
                let spi = e.sa.spec.spi.0;
                let child = self
                    .children
                    .iter()
                    .find(|(_, c)| c.spi_in == spi || c.spi_out == spi)
                    .map(|(id, _)| *id);
                if let Some(child) = child {
                    let cmd = if e.hard {
                        IkeCommand::ChildExpired { child }
                    } else {
                        IkeCommand::RekeyChild { child }
                    };
                    self.ep.handle_command(now, cmd);
                }
            }
            xfrm::Event::Acquire(a) => {
                let want = a.policy.if_id.or(a.policy.mark.map(|m| m.value));
                if let Some(t) = self.plan.tunnels.values().find(|t| Some(t.if_id) == want) {
                    if self.admin_down.contains(&t.name) {
                        tracing::debug!(tunnel = %t.name, "ACQUIRE ignored: taken down by `vtid down`");
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

    async fn control(&mut self, req: Request) -> Response {
        match req {
            Request::ShowSessions => Response::Ok(self.show_sessions()),
            Request::ShowSa => Response::Ok(self.show_sa().await),
            Request::ShowTunnels => Response::Ok(self.show_tunnels()),
            // A dynamic VTI clone, by name or peer address: its peer's sessions are deleted
            // (the peer is told), and the clone goes with them like on any disconnect. The
            // peer may connect again; nothing is held down.
            Request::Down { tunnel }
                if !self.plan.tunnels.contains_key(&tunnel)
                    && !self.dvti.sessions_of(&tunnel).is_empty() =>
            {
                let clones = self.dvti.sessions_of(&tunnel);
                let mut n = 0;
                for session in clones.iter().flat_map(|(_, s)| s) {
                    self.ep.handle_command(
                        Instant::now(),
                        IkeCommand::TerminateSession { session: *session },
                    );
                    n += 1;
                }
                let names: Vec<&String> = clones.iter().map(|(c, _)| c).collect();
                info!(clones = ?names, sessions = n, "dynamic VTI taken down from the CLI");
                Response::Ok(json!({ "tunnel": names, "action": "terminated", "sessions": n }))
            }
            Request::Up { tunnel } | Request::Down { tunnel }
                if !self.plan.tunnels.contains_key(&tunnel) =>
            {
                Response::error("not-found", format!("no tunnel named {tunnel}"))
            }
            Request::Up { tunnel } => {
                self.admin_down.remove(&tunnel);
                let conn = self.plan.tunnels[&tunnel].conn;
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Initiate { conn });
                Response::Ok(json!({ "tunnel": tunnel, "action": "initiated" }))
            }
            Request::Down { tunnel } => {
                self.admin_down.insert(tunnel.clone());
                let conn = self.plan.tunnels[&tunnel].conn;
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Terminate { conn });
                Response::Ok(json!({ "tunnel": tunnel, "action": "terminated" }))
            }
            Request::Reload => match self.reload().await {
                Ok(v) => Response::Ok(v),
                Err(e) => Response::error("invalid-config", format!("{e:#}")),
            },
            Request::Debug { kind, value, on } => {
                match crate::debug::Condition::parse(&kind, &value) {
                    Ok(c) => {
                        info!(condition = %c, on, "conditional debug");
                        let active = crate::debug::conditions().set(c, on);
                        Response::Ok(json!({ "conditions": active }))
                    }
                    Err(e) => Response::error("bad-request", e),
                }
            }
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
                    .children
                    .get(new)
                    .or(self.children.get(old))
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

    /// The Prometheus text for one scrape.
    async fn metrics(&self) -> String {
        let (tunnels, sessions, sas) = (
            self.show_tunnels(),
            self.show_sessions(),
            self.show_sa().await,
        );
        crate::metrics::render(&crate::metrics::Snapshot {
            tunnels: &tunnels,
            sessions: &sessions,
            sas: &sas,
            counters: &self.counters,
            rejected: &self.ep.stats().rejected,
        })
    }

    fn show_sessions(&self) -> serde_json::Value {
        let now = Instant::now();
        let v: Vec<_> = self
            .ep
            .sas()
            .into_iter()
            .map(|s| {
                let tunnel = self.tunnel_for(s.conn, s.session).map(|t| t.name.clone());
                json!({
                    "tunnel": tunnel,
                    "interface": tunnel,
                    "peer": s.remote.ip().to_string(),
                    "peer_id": s.peer_id.as_ref().map(|i| format!("{i:?}")),
                    "state": s.state,
                    "initiator": s.initiator,
                    "local": s.local.to_string(),
                    "remote": s.remote.to_string(),
                    "nat": s.nat,
                    "uptime_secs": self.sessions_up.get(&s.session).map(|t| now.duration_since(*t).as_secs()),
                    "spi_i": format!("{:016x}", s.spi_i),
                    "spi_r": format!("{:016x}", s.spi_r),
                    "child_sas": s.children.len(),
                })
            })
            .collect();
        json!(v)
    }

    async fn show_sa(&self) -> serde_json::Value {
        let mut v = Vec::new();
        // ifindex -> name, for the offload device of each SA.
        let names: BTreeMap<u32, String> = self
            .h
            .link()
            .list()
            .await
            .map(|l| l.into_iter().map(|l| (l.index, l.name)).collect())
            .unwrap_or_default();
        // The underlay's MTU now, for Cisco's "path mtu" (the tunnel's own MTU is what
        // Cisco calls "plaintext mtu").
        let underlay = kernel::local_addrs(&self.h).await.unwrap_or_default();
        for c in self.children.values() {
            let Some(t) = self.tunnel_for(c.conn, c.session) else {
                continue;
            };
            let [id_in, id_out] =
                kernel::child_sa_ids(t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out);
            let sin = self.h.sa().get(&id_in).await.ok();
            let sout = self.h.sa().get(&id_out).await.ok();
            let cin = sin.as_ref().map(|s| s.counters).unwrap_or_default();
            let cout = sout.as_ref().map(|s| s.counters).unwrap_or_default();
            let age = c.installed.elapsed();
            let used = cin.bytes.max(cout.bytes);
            v.push(json!({
                "tunnel": t.name,
                "peer": c.remote.ip().to_string(),
                "spi_in": format!("{:08x}", c.spi_in),
                "spi_out": format!("{:08x}", c.spi_out),
                "transform": transform_name(c.encr, c.integ),
                "mode": if c.encap { "tunnel udp-encap" } else { "tunnel" },
                "in": { "packets": cin.packets, "bytes": cin.bytes },
                "out": { "packets": cout.packets, "bytes": cout.bytes },
                "replay_errors": cin.replay + cin.replay_window_drops,
                "integrity_errors": cin.integrity_failed,
                "lifetime_remaining_secs": c.lifetime.saturating_sub(age).as_secs(),
                "lifetime_remaining_kb": c.hard_bytes.map(|h| h.saturating_sub(used) / 1024),
                "path_mtu": underlay.mtu_of(c.local.ip()).unwrap_or(plan::DEFAULT_UNDERLAY_MTU),
                "plaintext_mtu": t.mtu,
                "session": c.session.0,
                "offload": {
                    "in": crate::offload::sa_json(sin.as_ref(), &names),
                    "out": crate::offload::sa_json(sout.as_ref(), &names),
                },
            }));
        }
        json!(v)
    }

    fn show_tunnels(&self) -> serde_json::Value {
        let mut v: Vec<_> = self
            .plan
            .tunnels
            .values()
            .map(|t| {
                let up = self.children.values().any(|c| c.conn == t.conn);
                json!({
                    "name": t.name,
                    "mode": t.mode.as_str(),
                    "if_id": t.if_id,
                    "local": t.local.to_string(),
                    "remote": t.remote.to_string(),
                    "address": kernel::describe_inner(&t.inner),
                    "routes": t.routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    "mtu": t.mtu,
                    "state": if up { "up" } else { "down" },
                    "reason": self.offload.refused(&t.name),
                    "offload": self.offload.show(&t.name),
                    "vrf": t.vrf.as_ref().map(|v| &v.name),
                    "fvrf": t.fvrf.as_ref().map(|v| &v.name),
                })
            })
            .collect();
        // Clones carry their template's offload; its state is kept here, per clone name.
        v.extend(self.dvti.show_tunnels().into_iter().map(|mut c| {
            if let Some(name) = c["name"].as_str().map(str::to_owned) {
                c["offload"] = self.offload.show(&name);
                c["reason"] = json!(self.offload.refused(&name));
            }
            c
        }));
        json!(v)
    }

    /// Re-reads the configuration; on any error nothing changes. Tunnels whose configuration
    /// (or anything they depend on) changed are rebuilt, removed ones torn down, new ones
    /// brought up; the others keep their interfaces and SAs untouched.
    async fn reload(&mut self) -> Result<serde_json::Value> {
        let new = Config::load_with(&self.opts.config, &LoadOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut ids = self.conn_ids.clone();
        let new_plan = plan::build(&new, &mut ids, &kernel::local_addrs(&self.h).await?)?;
        // The plans, not the files, decide what restarts (plan/diff.rs).
        let diff = plan::diff(&self.plan, &new_plan);
        let old_routes: BTreeMap<String, Vec<ipnet::IpNet>> = diff
            .routes_only
            .iter()
            .filter_map(|n| Some((n.clone(), self.plan.tunnels.get(n)?.routes.clone())))
            .collect();
        // Peers of a changed template reconnect onto clones of the new one.
        for conn in &diff.templates_changed {
            self.ep
                .handle_command(Instant::now(), IkeCommand::Terminate { conn: *conn });
        }
        let gone: Vec<String> = diff.removed.iter().chain(&diff.changed).cloned().collect();
        let fresh: Vec<String> = diff.added.iter().chain(&diff.changed).cloned().collect();
        for name in &gone {
            // A rebuilt or removed tunnel starts over: no hold from an earlier `vtid down`.
            self.admin_down.remove(name);
            if let Some(t) = self.plan.tunnels.get(name).cloned() {
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Terminate { conn: t.conn });
                self.drain().await;
                // Device and policies before SAs, as in shutdown().
                for e in kernel::remove_tunnel(&self.h, &t).await {
                    warn!(tunnel = %name, "reload teardown: {e:#}");
                }
                self.remove_children(t.conn).await;
            }
        }
        self.ep.handle_command(
            Instant::now(),
            IkeCommand::Reconfigure(Arc::new(new_plan.endpoint.clone())),
        );
        // Front-door VRFs the new plan adds get their IKE sockets before their tunnels come up
        // (an initiator's first IKE_SA_INIT goes out of them); removed ones are closed.
        if let Err(e) = bind_vrf_sockets(&self.h, &new, &new_plan, &self.tx, &mut self.socks).await
        {
            error!("reload: front-door VRF sockets: {e:#}");
        }
        self.cfg = new;
        self.plan = new_plan;
        self.conn_ids = ids;
        for name in &fresh {
            if let Some(t) = self.plan.tunnels.get(name).cloned() {
                self.bring_up(&t).await;
            }
        }
        for (name, old) in &old_routes {
            if let Some(t) = self.plan.tunnels.get(name) {
                for e in kernel::update_routes(&self.h, t, old).await {
                    warn!(tunnel = %name, "reload routes: {e:#}");
                }
            }
        }
        info!(removed = ?diff.removed, added = ?diff.added, changed = ?diff.changed, routes = ?diff.routes_only, "configuration reloaded");
        Ok(json!({
            "added": diff.added,
            "removed": diff.removed,
            "changed": diff.changed,
            "routes_changed": diff.routes_only,
        }))
    }

    async fn remove_children(&mut self, conn: ConnId) {
        let Some(t) = self.tunnel_by_conn(conn).cloned() else {
            return;
        };
        let ids: Vec<ChildSaId> = self
            .children
            .iter()
            .filter(|(_, c)| c.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(c) = self.children.remove(&id) {
                for sa in kernel::child_sa_ids(&t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out)
                {
                    let _ = self.h.sa().delete(&sa).await;
                }
            }
        }
    }

    /// Deletes every IKE SA with its peer, then removes all kernel objects; keeps going after
    /// errors and logs each one. With `--keep-on-exit` it does neither.
    async fn shutdown(&mut self) {
        info!("shutting down");
        if self.opts.keep_on_exit {
            // Leave traffic up: no IKE DELETE either, since a peer that receives one removes
            // its Child SAs at once (RFC 7296 §1.4.1) and traffic would stop. The next start
            // sweeps what is left here and renegotiates with INITIAL_CONTACT (§2.4), which
            // makes the peers drop these SAs.
            info!("--keep-on-exit: leaving tunnels and SAs in the kernel");
            return;
        }
        let tunnels: Vec<TunnelPlan> = self.plan.tunnels.values().cloned().collect();
        for t in &tunnels {
            self.ep
                .handle_command(Instant::now(), IkeCommand::Terminate { conn: t.conn });
        }
        for conn in self.plan.templates.keys() {
            self.ep
                .handle_command(Instant::now(), IkeCommand::Terminate { conn: *conn });
        }
        self.drain().await;
        self.dvti.remove_all(&self.h).await;
        // The device and policies go first, so no packet meets a policy whose SAs are
        // already gone: the kernel would answer it with an ACQUIRE and a larval SA (spi 0)
        // that cannot be deleted by SPI and lingers for net.core.xfrm_acq_expires.
        for t in &tunnels {
            for e in kernel::remove_tunnel(&self.h, t).await {
                warn!(tunnel = %t.name, "teardown: {e:#}");
            }
            self.remove_children(t.conn).await;
        }
        let (_, errs) = kernel::sweep_orphans(&self.h).await;
        for e in errs {
            warn!("teardown sweep: {e:#}");
        }
    }
}

fn transform_name(encr: ike::transform::Encr, integ: Option<ike::transform::Integ>) -> String {
    use ike::transform::{Encr, Integ};
    let e = match encr {
        Encr::AesGcm16 { key_bits } => format!("esp-gcm {key_bits}"),
        Encr::AesCbc { key_bits } => format!("esp-aes {key_bits}"),
        Encr::ChaCha20Poly1305 => "esp-chacha20-poly1305".into(),
        Encr::TripleDes => "esp-3des".into(),
    };
    match integ {
        None => e,
        Some(Integ::HmacSha1_96) => format!("{e} esp-sha-hmac"),
        Some(Integ::HmacSha256_128) => format!("{e} esp-sha256-hmac"),
        Some(Integ::HmacSha384_192) => format!("{e} esp-sha384-hmac"),
        Some(Integ::HmacSha512_256) => format!("{e} esp-sha512-hmac"),
    }
}

/// Checks that `path` parses before a daemon is asked to reload it (used by the CLI).
pub fn validate(path: &Path) -> Result<()> {
    Config::load_with(path, &LoadOptions::default())
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{e}"))
}
