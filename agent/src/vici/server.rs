//! The VICI socket: one task per client reads packets, answers commands through the daemon's
//! control channel (the same [`Request`]s the JSON control socket sends), and a second task
//! per client forwards the runtime's SA events it registered for.
//!
//! A malformed packet whose framing is intact (a length within bounds) is answered with a
//! CMD_RESPONSE carrying `errmsg`, and the client may go on; a length outside 1..=512 KiB, a
//! body that does not arrive in time, or a packet type only a server sends closes the
//! connection. Neither changes any state. Unknown commands get CMD_UNKNOWN and unknown
//! events EVENT_UNKNOWN, as charon answers them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Semaphore, broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use super::event::{IkeSaView, SaEvent, SaEventKind};
use super::format;
use super::wire::{self, Message, Packet};
use crate::control::{Incoming, RekeyTarget, Request, Response, SaSelector, TerminateTarget};

/// Clients served at once; more are closed at accept.
const MAX_CLIENTS: usize = 64;

/// A packet's body must follow its length within this long.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames queued for one client's socket.
const OUT_QUEUE: usize = 64;

/// The longest a blocking `initiate` waits (charon's `timeout = 0` waits without end; the
/// engine gives up on an unanswered IKE SA well before this anyway).
const MAX_INITIATE_WAIT: Duration = Duration::from_secs(300);

/// The longest a blocking `terminate` waits for the DELETE exchanges to finish.
const MAX_TERMINATE_WAIT: Duration = Duration::from_secs(30);

/// The events a client may register for. `control-log` is accepted (swanctl's `--initiate`
/// and `--terminate` fail when it is refused) but vtid sends no log lines on it.
pub const EVENTS: &[&str] = &[
    "ike-updown",
    "ike-rekey",
    "child-updown",
    "child-rekey",
    "child-state-installed",
    "child-state-rekeyed",
    "child-state-destroying",
    "list-sa",
    "control-log",
];

/// Who may connect besides root and the daemon's own uid.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Clients whose effective gid is this one (the socket is then 0660 with this group).
    pub group: Option<u32>,
}

impl Access {
    fn allows(&self, uid: u32, gid: u32) -> bool {
        uid == 0 || uid == nix::unistd::geteuid().as_raw() || self.group == Some(gid)
    }
}

/// What every client task shares.
pub struct Server {
    to_daemon: mpsc::Sender<Incoming>,
    events: broadcast::Sender<SaEvent>,
    access: Access,
    started: SystemTime,
    slots: Arc<Semaphore>,
}

impl Server {
    /// A server asking the daemon through `to_daemon` and forwarding `events`.
    pub fn new(
        to_daemon: mpsc::Sender<Incoming>,
        events: broadcast::Sender<SaEvent>,
        access: Access,
    ) -> Arc<Self> {
        Arc::new(Self {
            to_daemon,
            events,
            access,
            started: SystemTime::now(),
            slots: Arc::new(Semaphore::new(MAX_CLIENTS)),
        })
    }
}

/// Accepts clients forever, each on its own task.
pub async fn serve(listener: UnixListener, server: Arc<Server>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = server.slots.clone().try_acquire_owned() else {
            warn!("VICI: {MAX_CLIENTS} clients already connected; closing a new one");
            continue;
        };
        let s = server.clone();
        tokio::spawn(async move {
            if let Err(e) = s.client(stream).await {
                debug!("VICI client: {e:#}");
            }
            drop(slot);
        });
    }
}

/// One client's registered events; held locked while an event or a confirmation is queued,
/// so a client never sees an event before the EVENT_CONFIRM of its registration.
type Registered = Arc<Mutex<BTreeSet<String>>>;

impl Server {
    async fn client(self: Arc<Self>, stream: UnixStream) -> Result<()> {
        let cred = stream.peer_cred()?;
        if !self.access.allows(cred.uid(), cred.gid()) {
            warn!(
                uid = cred.uid(),
                gid = cred.gid(),
                "VICI: client refused (not root, the daemon's uid or the [vici] group)"
            );
            return Ok(());
        }
        let (mut rd, mut wr) = stream.into_split();
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let registered: Registered = Arc::default();
        let forward = tokio::spawn(forward_events(
            self.events.subscribe(),
            registered.clone(),
            out.clone(),
        ));
        let res = self.read_loop(&mut rd, &out, &registered).await;
        forward.abort();
        drop(out);
        let _ = writer.await;
        res
    }

    async fn read_loop(
        &self,
        rd: &mut OwnedReadHalf,
        out: &mpsc::Sender<Vec<u8>>,
        registered: &Registered,
    ) -> Result<()> {
        loop {
            let mut len = [0u8; 4];
            match rd.read_exact(&mut len).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let len = match wire::check_length(u32::from_be_bytes(len)) {
                Ok(n) => n,
                Err(e) => {
                    warn!("VICI: {e}; closing the connection");
                    return Ok(());
                }
            };
            let mut body = vec![0; len];
            tokio::time::timeout(BODY_TIMEOUT, rd.read_exact(&mut body))
                .await
                .context("packet body timed out")??;
            let packet = match wire::decode(&body) {
                Ok(p) => p,
                Err(e) => {
                    warn!("VICI: malformed packet: {e}");
                    send(
                        out,
                        &Packet::Response(failure(format!("malformed VICI packet: {e}"))),
                    )
                    .await?;
                    continue;
                }
            };
            match packet {
                Packet::Request { command, message } => {
                    let reply = self.command(&command, &message, out, registered).await?;
                    send(out, &reply).await?;
                }
                Packet::Register(name) => {
                    let mut r = registered.lock().await;
                    let known = EVENTS.contains(&name.as_str());
                    if known {
                        r.insert(name);
                    }
                    send(out, &confirm(known)).await?;
                }
                Packet::Unregister(name) => {
                    let mut r = registered.lock().await;
                    let was = r.remove(&name);
                    send(out, &confirm(was)).await?;
                }
                other => {
                    warn!("VICI: a client sent {other:?}, which only a server sends; closing");
                    return Ok(());
                }
            }
        }
    }

    /// One command; `Ok(CmdUnknown)` for what vtid does not serve.
    async fn command(
        &self,
        command: &str,
        args: &Message,
        out: &mpsc::Sender<Vec<u8>>,
        registered: &Registered,
    ) -> Result<Packet> {
        debug!(command, ?args, "VICI request");
        let reply = match command {
            "version" => version(),
            "stats" => self.stats().await,
            "list-sas" => self.list_sas(args, out, registered).await?,
            "initiate" => self.initiate(args).await,
            "terminate" => self.terminate(args).await,
            "rekey" => self.rekey(args).await,
            _ => return Ok(Packet::CmdUnknown),
        };
        Ok(Packet::Response(reply))
    }

    /// Sends a request down the control channel and waits for the daemon's answer.
    async fn ask(&self, request: Request) -> Response {
        let (reply, rx) = oneshot::channel();
        if self
            .to_daemon
            .send(Incoming { request, reply })
            .await
            .is_err()
        {
            return Response::error("internal", "daemon stopped");
        }
        rx.await
            .unwrap_or_else(|_| Response::error("internal", "daemon stopped"))
    }

    async fn stats(&self) -> Message {
        let body = match self.ask(Request::Stats).await {
            Response::Ok(v) => v,
            Response::Error { message, .. } => return failure(message),
        };
        let running = self.started.elapsed().unwrap_or_default().as_secs();
        let since = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Message::new()
            .section(
                "uptime",
                Message::new()
                    .kv("running", time_delta(running))
                    .kv("since", utc_date(since)),
            )
            .section(
                "ikesas",
                Message::new()
                    .kv("total", body["ike-sas"].as_u64().unwrap_or(0))
                    .kv("half-open", body["half-open"].as_u64().unwrap_or(0)),
            )
    }

    async fn list_sas(
        &self,
        args: &Message,
        out: &mpsc::Sender<Vec<u8>>,
        registered: &Registered,
    ) -> Result<Message> {
        let ike_id = match number(args, "ike-id") {
            Ok(n) => n,
            Err(m) => return Ok(m),
        };
        let request = Request::SaList {
            ike: args.get("ike").map(str::to_owned),
            ike_id,
        };
        let sas: Vec<IkeSaView> = match self.ask(request).await {
            Response::Ok(v) => serde_json::from_value(v).context("list-sas from the daemon")?,
            Response::Error { message, .. } => return Ok(failure(message)),
        };
        // The IKE SAs stream as list-sa events before the (empty) response, as charon does;
        // a client that did not register gets just the response.
        let r = registered.lock().await;
        if r.contains("list-sa") {
            for sa in &sas {
                let event = Packet::Event {
                    name: "list-sa".into(),
                    message: format::list_sa(sa),
                };
                send(out, &event).await?;
            }
        }
        Ok(Message::new())
    }

    async fn initiate(&self, args: &Message) -> Message {
        let Some(name) = args.get("child").or_else(|| args.get("ike")) else {
            return failure("initiate needs child or ike");
        };
        let (local, remote) = match (host(args, "my-host"), host(args, "other-host")) {
            (Ok(l), Ok(r)) => (l, r),
            (Err(m), _) | (_, Err(m)) => return m,
        };
        let wait = match wait_for(args, MAX_INITIATE_WAIT) {
            Ok(w) => w,
            Err(m) => return m,
        };
        // Subscribed before asking, so the SA cannot come up unseen in between.
        let mut rx = self.events.subscribe();
        let request = Request::Initiate {
            name: name.to_owned(),
            local,
            remote,
        };
        match self.ask(request).await {
            Response::Error { message, .. } => return failure(message),
            Response::Ok(v) if v["action"] == "already-up" => return success(),
            Response::Ok(_) => {}
        }
        let Some(wait) = wait else {
            return success();
        };
        // With `other-host` (an mGRE profile serves many peers under one name) only an SA
        // with that peer is the one asked for; without it, the name says.
        let ours = |ike: &IkeSaView| match remote {
            Some(r) => ike.remote_host == r,
            None => ike.name == name,
        };
        let outcome = tokio::time::timeout(wait, async {
            loop {
                match rx.recv().await {
                    Ok(ev) if ours(&ev.ike) => match ev.kind {
                        SaEventKind::ChildInstalled => return Ok(()),
                        SaEventKind::IkeDown => {
                            return Err(format!("establishing IKE_SA '{name}' failed"));
                        }
                        _ => {}
                    },
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err("daemon stopped".to_owned());
                    }
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => success(),
            Ok(Err(m)) => failure(m),
            Err(_) => failure(format!("initiating '{name}' timed out")),
        }
    }

    async fn terminate(&self, args: &Message) -> Message {
        let what = match (number(args, "ike-id"), number(args, "child-id")) {
            (Err(m), _) | (_, Err(m)) => return m,
            (Ok(Some(id)), _) => TerminateTarget::IkeId(id),
            (Ok(None), Ok(cid)) => match (args.get("ike"), cid, args.get("child")) {
                (Some(ike), _, _) => TerminateTarget::Ike(ike.to_owned()),
                (None, Some(id), _) => TerminateTarget::ChildId(id),
                (None, None, Some(child)) => TerminateTarget::Child(child.to_owned()),
                (None, None, None) => {
                    return failure("terminate needs ike, ike-id, child or child-id");
                }
            },
        };
        let wait = match wait_for(args, MAX_TERMINATE_WAIT) {
            Ok(w) => w,
            Err(m) => return m,
        };
        let mut rx = self.events.subscribe();
        let body = match self.ask(Request::Terminate { what: what.clone() }).await {
            Response::Ok(v) => v,
            Response::Error { message, .. } => return failure(message),
        };
        let ids = |key: &str| -> BTreeSet<u64> {
            body[key]
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                .unwrap_or_default()
        };
        let (mut sessions, mut children) = (ids("sessions"), ids("children"));
        let matches = sessions.len() + children.len();
        let reply = |done: usize| {
            Message::new()
                .kv("success", "yes")
                .kv("matches", matches)
                .kv("terminated", done)
        };
        let Some(wait) = wait else {
            return reply(matches);
        };
        let done = tokio::time::timeout(wait, async {
            while !(sessions.is_empty() && children.is_empty()) {
                match rx.recv().await {
                    Ok(ev) => match ev.kind {
                        SaEventKind::IkeDown => {
                            sessions.remove(&ev.ike.uniqueid);
                        }
                        SaEventKind::ChildDestroying => {
                            for c in &ev.ike.child_sas {
                                children.remove(&c.uniqueid);
                            }
                        }
                        _ => {}
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
        .await;
        match done {
            Ok(()) => reply(matches),
            Err(_) => failure(format!("terminating {what:?} timed out")),
        }
    }

    async fn rekey(&self, args: &Message) -> Message {
        let what = match (args.get("ike"), args.get("child")) {
            (Some(ike), _) => RekeyTarget::Ike {
                target: SaSelector::Tunnel(ike.to_owned()),
            },
            (None, Some(child)) => RekeyTarget::Child {
                target: SaSelector::Tunnel(child.to_owned()),
            },
            (None, None) => return failure("vtid rekeys by ike or child name only"),
        };
        match self.ask(Request::Rekey { what }).await {
            Response::Ok(_) => success(),
            Response::Error { message, .. } => failure(message),
        }
    }
}

/// Forwards the runtime's SA events a client registered for, until it goes.
async fn forward_events(
    mut rx: broadcast::Receiver<SaEvent>,
    registered: Registered,
    out: mpsc::Sender<Vec<u8>>,
) {
    loop {
        match rx.recv().await {
            Ok(ev) => {
                let r = registered.lock().await;
                for (name, message) in format::events(&ev) {
                    if !r.contains(name) {
                        continue;
                    }
                    let packet = Packet::Event {
                        name: name.to_owned(),
                        message,
                    };
                    if send(&out, &packet).await.is_err() {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("VICI: a client missed {n} SA events (it reads too slowly)");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn send(out: &mpsc::Sender<Vec<u8>>, packet: &Packet) -> Result<()> {
    let frame = packet.encode().context("encode VICI packet")?;
    out.send(frame).await.context("client gone")
}

fn confirm(ok: bool) -> Packet {
    if ok {
        Packet::Confirm
    } else {
        Packet::EventUnknown
    }
}

fn success() -> Message {
    Message::new().kv("success", "yes")
}

fn failure(errmsg: impl std::fmt::Display) -> Message {
    Message::new().kv("success", "no").kv("errmsg", errmsg)
}

fn version() -> Message {
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Message::new()
        .kv("daemon", "vtid")
        .kv("version", env!("CARGO_PKG_VERSION"))
        .kv("sysname", field(|u| u.sysname()))
        .kv("release", field(|u| u.release()))
        .kv("machine", field(|u| u.machine()))
}

/// An optional unsigned number argument; the error is the response to send.
fn number(args: &Message, key: &str) -> Result<Option<u64>, Message> {
    match args.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| failure(format!("{key}: {v:?} is not a number"))),
    }
}

fn host(args: &Message, key: &str) -> Result<Option<IpAddr>, Message> {
    match args.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| failure(format!("{key}: {v:?} is not an IP address"))),
    }
}

/// How long to wait for the outcome: `None` answers at once (`async` set, or a negative
/// `timeout`, README "initiate()"); `timeout = 0` or none waits up to `max`.
fn wait_for(args: &Message, max: Duration) -> Result<Option<Duration>, Message> {
    let asynchronous = matches!(args.get("async"), Some("yes" | "1" | "true"));
    let ms: i64 = match args.get("timeout") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| failure(format!("timeout: {v:?} is not a number")))?,
    };
    Ok(match ms {
        _ if asynchronous => None,
        ..0 => None,
        0 => Some(max),
        ms => Some(Duration::from_millis(ms.unsigned_abs()).min(max)),
    })
}

/// charon's way of saying how long it runs: the largest whole unit.
fn time_delta(secs: u64) -> String {
    let (n, unit) = match secs {
        0..120 => (secs, "second"),
        120..7_200 => (secs / 60, "minute"),
        7_200..172_800 => (secs / 3_600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A Unix time as `Dec 06 14:37:46 2026` (UTC), the layout of charon's `since`.
fn utc_date(t: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = (t / 86_400, t % 86_400);
    // Days to a civil date (Howard Hinnant's days_from_civil inverse; eras of 400 years).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{} {day:02} {:02}:{:02}:{:02} {year}",
        MONTHS[(month - 1) as usize],
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
