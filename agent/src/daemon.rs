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
use tracing::{error, info, warn};

use crate::config::{Config, LoadOptions, TunnelMode};
use crate::control::{self, Incoming, Request, Response};
use crate::kernel;
use crate::plan::{self, Plan, TunnelPlan};
use crate::udp::{IkeSocket, Received};

/// Inputs of the daemon task.
enum Input {
    Datagram {
        bytes: Vec<u8>,
        local: SocketAddr,
        remote: SocketAddr,
    },
    Kernel(xfrm::Event),
    Control(Incoming),
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
    hard_lifetime: Duration,
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
}

impl Sockets {
    fn for_local(&self, local: SocketAddr) -> Option<&Arc<IkeSocket>> {
        self.list.iter().find(|s| {
            s.local_addr().port() == local.port() && s.local_addr().is_ipv4() == local.is_ipv4()
        })
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
    let socks = bind_sockets(&cfg, &tx)?;
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
    spawn_monitor(tx.clone());
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
        match input {
            Some(Input::Datagram {
                bytes,
                local,
                remote,
            }) => d.ep.handle_datagram(
                now,
                ike::Datagram {
                    local,
                    remote,
                    bytes: &bytes,
                },
            ),
            Some(Input::Kernel(ev)) => d.kernel_event(now, ev),
            Some(Input::Control(inc)) => {
                let resp = d.control(inc.request).await;
                let _ = inc.reply.send(resp);
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
            let tx = tx.clone();
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
            });
        }
    }
    Ok(Sockets { list })
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

    async fn bring_up(&mut self, t: &TunnelPlan) {
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
            self.apply(out).await;
        }
    }

    async fn apply(&mut self, out: Output) {
        match out {
            Output::Transmit(t) => match self.socks.for_local(t.local) {
                Some(s) => {
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
                if let Some(t) = self.tunnel_by_conn(rm.conn) {
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
            }
            Output::Event(ev) => self.event(ev),
        }
    }

    async fn install(&mut self, inst: &ike::ChildSaInstall) -> Result<()> {
        let t = self
            .tunnel_by_conn(inst.conn)
            .context("no tunnel for this connection")?
            .clone();
        let sas = kernel::child_sas(&t, inst)?;
        let mut batch = self.h.batch();
        for s in &sas {
            batch.add_sa(s);
        }
        for r in batch.execute().await? {
            r?;
        }
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
                hard_lifetime: inst.hard_lifetime,
                hard_bytes: inst.bytes.map(|b| b.hard),
                encap: inst.encap.is_some(),
            },
        );
        info!(
            tunnel = %t.name,
            spi_in = format_args!("{:08x}", inst.inbound_spi),
            spi_out = format_args!("{:08x}", inst.outbound_spi),
            "Child SA installed"
        );
        Ok(())
    }

    fn event(&mut self, ev: Event) {
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
                    self.ep
                        .handle_command(now, IkeCommand::Initiate { conn: t.conn });
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
            Request::Up { tunnel } | Request::Down { tunnel }
                if !self.plan.tunnels.contains_key(&tunnel) =>
            {
                Response::error("not-found", format!("no tunnel named {tunnel}"))
            }
            Request::Up { tunnel } => {
                let conn = self.plan.tunnels[&tunnel].conn;
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Initiate { conn });
                Response::Ok(json!({ "tunnel": tunnel, "action": "initiated" }))
            }
            Request::Down { tunnel } => {
                let conn = self.plan.tunnels[&tunnel].conn;
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Terminate { conn });
                Response::Ok(json!({ "tunnel": tunnel, "action": "terminated" }))
            }
            Request::Reload => match self.reload().await {
                Ok(v) => Response::Ok(v),
                Err(e) => Response::error("invalid-config", format!("{e:#}")),
            },
            Request::Debug { .. } => {
                Response::error("unsupported", "conditional debug is not implemented yet")
            }
        }
    }

    fn show_sessions(&self) -> serde_json::Value {
        let now = Instant::now();
        let v: Vec<_> = self
            .ep
            .sas()
            .into_iter()
            .map(|s| {
                let tunnel = self.tunnel_by_conn(s.conn).map(|t| t.name.clone());
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
        for c in self.children.values() {
            let Some(t) = self.tunnel_by_conn(c.conn) else {
                continue;
            };
            let [id_in, id_out] =
                kernel::child_sa_ids(t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out);
            let cin = self
                .h
                .sa()
                .get(&id_in)
                .await
                .map(|s| s.counters)
                .unwrap_or_default();
            let cout = self
                .h
                .sa()
                .get(&id_out)
                .await
                .map(|s| s.counters)
                .unwrap_or_default();
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
                "lifetime_remaining_secs": c.hard_lifetime.saturating_sub(age).as_secs(),
                "lifetime_remaining_kb": c.hard_bytes.map(|h| h.saturating_sub(used) / 1024),
                "path_mtu": t.mtu,
                "session": c.session.0,
            }));
        }
        json!(v)
    }

    fn show_tunnels(&self) -> serde_json::Value {
        let v: Vec<_> = self
            .plan
            .tunnels
            .values()
            .map(|t| {
                let up = self.children.values().any(|c| c.conn == t.conn);
                json!({
                    "name": t.name,
                    "mode": match t.mode { TunnelMode::Xfrmi => "xfrmi", TunnelMode::Vti => "vti" },
                    "if_id": t.if_id,
                    "local": t.local.to_string(),
                    "remote": t.remote.to_string(),
                    "address": kernel::describe_inner(&t.inner),
                    "routes": t.routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    "mtu": t.mtu,
                    "state": if up { "up" } else { "down" },
                })
            })
            .collect();
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
        let diff = Config::diff(&self.cfg, &new);
        let gone: Vec<String> = diff
            .tunnels
            .removed
            .iter()
            .chain(&diff.tunnels.changed)
            .cloned()
            .collect();
        let fresh: Vec<String> = diff
            .tunnels
            .added
            .iter()
            .chain(&diff.tunnels.changed)
            .cloned()
            .collect();
        for name in &gone {
            if let Some(t) = self.plan.tunnels.get(name).cloned() {
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Terminate { conn: t.conn });
                self.drain().await;
                self.remove_children(t.conn).await;
                for e in kernel::remove_tunnel(&self.h, &t).await {
                    warn!(tunnel = %name, "reload teardown: {e:#}");
                }
            }
        }
        self.ep.handle_command(
            Instant::now(),
            IkeCommand::Reconfigure(Arc::new(new_plan.endpoint.clone())),
        );
        self.cfg = new;
        self.plan = new_plan;
        self.conn_ids = ids;
        for name in &fresh {
            if let Some(t) = self.plan.tunnels.get(name).cloned() {
                self.bring_up(&t).await;
            }
        }
        info!(removed = ?diff.tunnels.removed, added = ?diff.tunnels.added, changed = ?diff.tunnels.changed, "configuration reloaded");
        Ok(json!({
            "added": diff.tunnels.added,
            "removed": diff.tunnels.removed,
            "changed": diff.tunnels.changed,
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

    /// Deletes every IKE SA with its peer, then (unless told to keep traffic up) removes all
    /// kernel objects; keeps going after errors and logs each one.
    async fn shutdown(&mut self) {
        info!("shutting down");
        let tunnels: Vec<TunnelPlan> = self.plan.tunnels.values().cloned().collect();
        for t in &tunnels {
            self.ep
                .handle_command(Instant::now(), IkeCommand::Terminate { conn: t.conn });
        }
        self.drain().await;
        if self.opts.keep_on_exit {
            return;
        }
        for t in &tunnels {
            self.remove_children(t.conn).await;
            for e in kernel::remove_tunnel(&self.h, t).await {
                warn!(tunnel = %t.name, "teardown: {e:#}");
            }
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
