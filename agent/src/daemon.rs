//! `vtid run`: the driver loop. One task owns the [`Runtime`] (the IKE engine, the kernel
//! handle and the books); socket readers, the XFRM event monitor, the route monitor, the
//! control socket, metrics scrapes and signals feed it through one channel (no shared mutable
//! state). After every input the engine's timers run and its outputs are drained in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ike::Endpoint;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{Config, LoadOptions};
use crate::control::{self, Incoming};
use crate::kernel;
use crate::plan;
use crate::runtime::{Parts, Runtime};
use crate::sockets::{self, Datagram};

/// At most this many new-SA requests are handled in one turn of the loop after the one that
/// woke it.
const NEW_SA_BATCH: usize = 63;

/// How long `vtid restart` waits for IKE SAs busy with an exchange (a DPD, a rekey) to finish
/// it, so that they are saved too; those still busy then are left out and renegotiate.
const RESTART_SETTLE: Duration = Duration::from_secs(2);
/// How often the loop looks again meanwhile.
const RESTART_TICK: Duration = Duration::from_millis(20);

/// Inputs of the daemon task.
enum Input {
    Datagram(Datagram),
    Kernel(xfrm::Event),
    /// Links, routes or addresses changed (debounced): the offload underlay may have moved.
    NetChange,
    Control(Incoming),
    /// A metrics scrape wants the exposition text.
    Metrics(crate::metrics::Scrape),
    Reload,
    /// SIGINT: stop.
    Shutdown,
    /// SIGTERM: stop, unless systemd stops the unit to start it again.
    Terminate,
}

/// What the daemon does once a planned restart has saved its SAs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// `vtid restart`: re-execute the binary in the same process.
    Exec,
    /// `systemctl restart`: exit, leaving the kernel as it is; systemd starts the next
    /// process, which finds the state file.
    Exit,
}

/// A planned restart waiting (until `by`) for busy SAs to become quiet.
struct Planned {
    /// `vtid restart`'s request, answered once the state is saved.
    reply: Option<tokio::sync::oneshot::Sender<control::Response>>,
    by: Instant,
    then: Then,
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

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(opts: RunOptions) -> Result<()> {
    // `vtid restart` re-executes the binary by the path it was started from: after a package
    // upgrade that path holds the new binary (/proc/self/exe would be the old, deleted one).
    let exe = std::env::current_exe().context("own executable")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let state_dir = crate::restart::state_dir();
    let cfg = Config::load_with(&opts.config, &LoadOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("load {}", opts.config.display()))?;
    let mut conn_ids = BTreeMap::new();
    let h = xfrm::Handle::open(xfrm::Netns::Current).context("open netlink")?;
    let plan = plan::build(&cfg, &mut conn_ids, &kernel::local_addrs(&h).await?)?;

    // Asked (and logged) once, before the first SA goes in.
    kernel::sa_direction(&h).await;
    // A planned restart left its SAs in a state file (restart.rs): adopt those; without
    // one, a previous run may have died without cleaning up (kill -9): remove what it left.
    let mut v2 = Endpoint::new(Arc::new(plan.endpoint.clone()), random_seed()?);
    let adopted = crate::restart::load(&state_dir, &opts.config)
        .map(|r| crate::restart::adopt(&mut v2, &plan, r))
        .filter(|a| !a.live.is_empty());
    let swept = match &adopted {
        Some(a) => crate::restart::sweep_around(&h, a).await,
        None => crate::runtime::sweep(&h).await,
    };
    for e in swept {
        warn!("start-up sweep: {e:#}");
    }

    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    let (feed, mut queues) = sockets::Feed::new();
    let mut socks = sockets::bind(&cfg.global, &feed)?;
    sockets::bind_vrf(&h, &cfg.global, &plan, &feed, &mut socks).await?;
    let sock_path = opts
        .socket
        .clone()
        .unwrap_or_else(|| cfg.global.control_socket.clone());
    let listener = control::bind(&sock_path)?;
    let (ctl_tx, ctl_rx) = mpsc::channel(16);
    let vici_events = if cfg.vici.is_some() {
        crate::vici::Events::new()
    } else {
        crate::vici::Events::off()
    };
    let vici_path = spawn_vici(&cfg, &ctl_tx, &vici_events)?;
    tokio::spawn(control::serve(listener, ctl_tx));
    forward(ctl_rx, &tx, Input::Control);
    if let Some(addr) = cfg.global.metrics {
        spawn_metrics(addr, tx.clone())?;
    }
    spawn_monitor(tx.clone());
    spawn_netmon(tx.clone());
    spawn_signals(tx.clone())?;

    let mut rt = Runtime::new(Parts {
        config_path: opts.config.clone(),
        keep_on_exit: opts.keep_on_exit,
        ep: crate::engines::Engines::new(
            v2,
            ike::v1::Endpoint::new(Arc::new(plan.v1.clone()), random_seed()?),
        ),
        cfg,
        plan,
        conn_ids,
        h,
        socks,
        feed,
        vici: vici_events,
    });
    if let Some(a) = adopted {
        rt.adopted(a).await;
    }
    rt.start().await;
    info!(socket = %sock_path.display(), tunnels = rt.tunnel_count(), "vtid running");
    crate::notify::ready();

    let mut restart: Option<Then> = None;
    let mut restart_asked: Option<Planned> = None;
    loop {
        let mut deadline = rt.poll_timeout();
        if restart_asked.is_some() {
            let tick = Instant::now() + RESTART_TICK;
            deadline = Some(deadline.map_or(tick, |d| d.min(tick)));
        }
        // In this order: signals, control, kernel events; established peers' datagrams;
        // requests for new IKE SAs that echo a cookie; other requests for new IKE SAs last,
        // so that a flood of them (shed by the readers when their queue is full) cannot delay
        // the rest. Timers run after every input anyway.
        let input = tokio::select! {
            biased;
            i = rx.recv() => i,
            Some(d) = queues.established.recv() => Some(Input::Datagram(d)),
            Some(d) = queues.with_cookie.recv() => Some(Input::Datagram(d)),
            Some(d) = queues.new_sa.recv() => Some(Input::Datagram(d)),
            _ = sleep_until(deadline) => None,
        };
        let now = Instant::now();
        rt.wall_clock(now);
        match input {
            Some(Input::Datagram(d)) => {
                rt.datagram(now, &d);
                // A burst of new-SA requests (a flood, or a hub's spokes all reconnecting)
                // is taken in one turn: this loop's own cost per turn (the select, the timer
                // check, draining outputs) is then paid once per batch, not per datagram.
                // IKE_SA_INIT requests install nothing, so their outputs (replies, COOKIEs,
                // rejections) may wait for the end of the batch; established peers'
                // datagrams still come one per turn, and first.
                for _ in 0..NEW_SA_BATCH {
                    if !queues.established.is_empty() {
                        break;
                    }
                    match queues
                        .with_cookie
                        .try_recv()
                        .or_else(|_| queues.new_sa.try_recv())
                    {
                        Ok(d) => rt.datagram(now, &d),
                        Err(_) => break,
                    }
                }
            }
            Some(Input::Kernel(ev)) => rt.kernel_event(now, ev),
            Some(Input::NetChange) => {
                rt.addresses_changed().await;
                rt.underlay_changed().await;
            }
            Some(Input::Control(inc)) if inc.request == control::Request::Restart => {
                if restart_asked.is_some() {
                    let msg = "a restart is under way";
                    let _ = inc.reply.send(control::Response::error("busy", msg));
                } else {
                    restart_asked = Some(Planned {
                        reply: Some(inc.reply),
                        by: now + RESTART_SETTLE,
                        then: Then::Exec,
                    });
                }
            }
            Some(Input::Control(inc)) => {
                let resp = rt.control(inc.request).await;
                let _ = inc.reply.send(resp);
            }
            Some(Input::Metrics(reply)) => {
                let _ = reply.send(rt.metrics().await);
            }
            Some(Input::Reload) => {
                if let Err(e) = rt.reload().await {
                    error!("reload refused: {e:#}");
                }
            }
            Some(Input::Shutdown) => break,
            // A SIGTERM during a planned restart is a stop after all.
            Some(Input::Terminate) if restart_asked.is_some() => break,
            Some(Input::Terminate) => {
                if !systemd_restarts_us().await {
                    break;
                }
                restart_asked = Some(Planned {
                    reply: None,
                    by: now + RESTART_SETTLE,
                    then: Then::Exit,
                });
            }
            None => {}
        }
        rt.timers();
        rt.drain().await;
        let due = restart_asked
            .as_ref()
            .is_some_and(|p| Instant::now() >= p.by || rt.restart_quiet());
        if due && let Some(p) = restart_asked.take() {
            match rt.write_restart_state(&state_dir) {
                Ok(v) => {
                    if let Some(reply) = p.reply {
                        let _ = reply.send(control::Response::Ok(v));
                    }
                    restart = Some(p.then);
                    break;
                }
                Err(e) => {
                    error!("restart refused: {e:#}");
                    let msg = format!("{e:#}");
                    match p.reply {
                        Some(reply) => {
                            let _ = reply.send(control::Response::error("restart-failed", msg));
                        }
                        // systemd is stopping us all the same: an ordinary stop, and the
                        // next process negotiates again.
                        None => break,
                    }
                }
            }
        }
    }
    if restart.is_none() {
        rt.shutdown().await;
    }
    let _ = std::fs::remove_file(&sock_path);
    if let Some(p) = vici_path {
        let _ = std::fs::remove_file(p);
    }
    if restart == Some(Then::Exit) {
        info!("restart: SAs saved for the process systemd starts next");
        return Ok(());
    }
    if restart == Some(Then::Exec) {
        // Let the control task write its reply before the process image goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        info!(exe = %exe.display(), "restart: re-executing");
        // Returns only on failure: the process then exits with an error, and a supervisor
        // that starts it again (systemd's Restart=on-failure) finds the state file all the
        // same.
        return Err(crate::restart::exec(&exe, &args));
    }
    Ok(())
}

/// Whether the SIGTERM just received is systemd stopping this unit in order to start it
/// again (`systemctl restart`; notify.rs): the stop is then a planned restart, as `vtid
/// restart` (restart.rs), with systemd starting the next process. Anything else, or an
/// answer that cannot be had, is a stop.
async fn systemd_restarts_us() -> bool {
    let Some(unit) = crate::notify::own_unit() else {
        return false;
    };
    let ask = unit.clone();
    match tokio::task::spawn_blocking(move || crate::notify::restart_job(&ask)).await {
        Ok(Ok(true)) => {
            info!(%unit, "systemd restarts the unit: saving the IKE SAs for the next process");
            true
        }
        Ok(Ok(false)) => false,
        Ok(Err(e)) => {
            warn!(%unit, "cannot tell a restart from a stop ({e:#}): stopping");
            false
        }
        Err(e) => {
            warn!(%unit, "cannot tell a restart from a stop ({e}): stopping");
            false
        }
    }
}

/// Moves everything from a helper channel into the daemon's input channel.
fn forward<T: Send + 'static>(
    mut from: mpsc::Receiver<T>,
    to: &mpsc::Sender<Input>,
    wrap: fn(T) -> Input,
) {
    let to = to.clone();
    tokio::spawn(async move {
        while let Some(i) = from.recv().await {
            if to.send(wrap(i)).await.is_err() {
                break;
            }
        }
    });
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

/// The opt-in VICI server (`[vici]`): its requests share the control socket's channel to the
/// runtime, its events come from `events`. Returns the socket path to remove at exit.
fn spawn_vici(
    cfg: &Config,
    to_daemon: &mpsc::Sender<Incoming>,
    events: &crate::vici::Events,
) -> Result<Option<PathBuf>> {
    let Some(v) = &cfg.vici else {
        return Ok(None);
    };
    let group = v.group.as_deref().map(crate::vici::group_id).transpose()?;
    let access = crate::vici::Access { group };
    let listener = crate::vici::bind(&v.socket, &access)?;
    let server = crate::vici::Server::new(to_daemon.clone(), events.sender(), access);
    tokio::spawn(crate::vici::server::serve(listener, server));
    info!(socket = %v.socket.display(), group = ?v.group, "VICI server");
    Ok(Some(v.socket.clone()))
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
                _ = term.recv() => Input::Terminate,
                _ = int.recv() => Input::Shutdown,
            };
            let stop = matches!(input, Input::Shutdown | Input::Terminate);
            if tx.send(input).await.is_err() || stop {
                return;
            }
        }
    });
    Ok(())
}

/// Checks that `path` parses before a daemon is asked to reload it (used by the CLI).
pub fn validate(path: &Path) -> Result<()> {
    Config::load_with(path, &LoadOptions::default())
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{e}"))
}
