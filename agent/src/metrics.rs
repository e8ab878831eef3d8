//! Prometheus metrics (text exposition format 0.0.4) on an opt-in listener:
//! `global.metrics = "127.0.0.1:9477"`; absent means no listener at all.
//!
//! The listener task holds no state: for each scrape it asks the daemon task (over a channel,
//! like the control socket) for the text, which the daemon renders from the same data as
//! `vtid show` (so the two never disagree) plus the event counters kept in [`Counters`].
//! The format is small enough to write by hand: `# HELP`, `# TYPE`, then `name{labels} value`
//! lines, label values escaped as the format requires (`\\`, `\"`, `\n`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A scrape asks the daemon for the rendered text on this.
pub type Scrape = oneshot::Sender<String>;

/// Event counters the kernel and the engine do not keep for us.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// (tunnel, "ike" | "child") to rekeys completed.
    rekeys: BTreeMap<(String, &'static str), u64>,
    /// Handshake failure reason to count.
    failures: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// One completed rekey of `tunnel`'s IKE SA (`sa = "ike"`) or a Child SA (`"child"`).
    pub fn rekey(&mut self, tunnel: &str, sa: &'static str) {
        *self.rekeys.entry((tunnel.to_string(), sa)).or_default() += 1;
    }

    /// One failed handshake; `reason` is the engine's stable reason name.
    pub fn failure(&mut self, reason: &'static str) {
        *self.failures.entry(reason).or_default() += 1;
    }
}

/// What one scrape shows: the daemon's `show tunnels|sessions|sa` JSON, its counters and the
/// engine's rejected-input counts.
pub struct Snapshot<'a> {
    /// `vtid show tunnels --json`.
    pub tunnels: &'a Value,
    /// `vtid show sessions --json`.
    pub sessions: &'a Value,
    /// `vtid show sa --json`.
    pub sas: &'a Value,
    /// Event counters.
    pub counters: &'a Counters,
    /// `ike::Stats::rejected`, and `queue_full` for new-SA requests shed before the engine.
    pub rejected: &'a BTreeMap<&'static str, u64>,
    /// Half-open responder IKE SAs now (`ike::Endpoint::half_open_count`).
    pub half_open: usize,
    /// Netlink requests the daemon has sent (`xfrm::Handle::requests`).
    pub netlink_requests: u64,
}

/// Label value escaping of the text format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The ESP offload mode of an SA row (`show sa`'s `offload.{in,out}.mode`): the outbound
/// SA's, else the inbound's, else "none".
fn offload(sa: &Value) -> String {
    let o = &sa["offload"];
    ["out", "in"]
        .iter()
        .find_map(|d| o[*d]["mode"].as_str())
        .unwrap_or("none")
        .to_string()
}

/// Renders the exposition text.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut o = Out(String::new());
    let tunnels: Vec<String> = rows(s.tunnels).iter().map(|t| text(&t["name"])).collect();

    o.family(
        "vtid_tunnel_up",
        "gauge",
        "1 when the tunnel has an installed Child SA.",
    );
    for t in rows(s.tunnels) {
        let up = u64::from(t["state"] == "up");
        o.sample("vtid_tunnel_up", &[("tunnel", &text(&t["name"]))], up);
    }

    // Per tunnel sums over its current Child SAs. A rekey replaces the SAs and so resets
    // these, which Prometheus' rate() treats as a counter reset.
    let mut sums: BTreeMap<(String, &str, &str), u64> = BTreeMap::new();
    for t in &tunnels {
        for dir in ["in", "out"] {
            for what in ["bytes", "packets"] {
                sums.insert((t.clone(), dir, what), 0);
            }
        }
    }
    let mut sas_by_offload: BTreeMap<(String, String), u64> = BTreeMap::new();
    for sa in rows(s.sas) {
        let t = text(&sa["tunnel"]);
        for dir in ["in", "out"] {
            for what in ["bytes", "packets"] {
                let n = sa[dir][what].as_u64().unwrap_or(0);
                *sums.entry((t.clone(), dir, what)).or_default() += n;
            }
        }
        *sas_by_offload.entry((t, offload(sa))).or_default() += 1;
    }
    for what in ["bytes", "packets"] {
        let name = format!("vtid_tunnel_{what}_total");
        o.family(
            &name,
            "counter",
            &format!("ESP {what} through the tunnel's current Child SAs, by direction."),
        );
        for ((t, dir, w), n) in &sums {
            if *w == what {
                o.sample(&name, &[("tunnel", t), ("direction", dir)], *n);
            }
        }
    }

    o.family(
        "vtid_child_sas",
        "gauge",
        "Installed Child SA pairs by tunnel and ESP offload mode (none, crypto, packet).",
    );
    for ((t, mode), n) in &sas_by_offload {
        o.sample("vtid_child_sas", &[("tunnel", t), ("offload", mode)], *n);
    }

    o.family(
        "vtid_netlink_requests_total",
        "counter",
        "Netlink requests sent to the kernel (XFRM and route; a batch item counts once).",
    );
    o.sample("vtid_netlink_requests_total", &[], s.netlink_requests);

    o.family(
        "vtid_tunnel_rekeys_total",
        "counter",
        "Completed rekeys by tunnel and SA kind (ike, child).",
    );
    for t in &tunnels {
        for sa in ["ike", "child"] {
            let n = s.counters.rekeys.get(&(t.clone(), sa)).copied();
            o.sample(
                "vtid_tunnel_rekeys_total",
                &[("tunnel", t), ("sa", sa)],
                n.unwrap_or(0),
            );
        }
    }

    o.family(
        "vtid_ike_sas",
        "gauge",
        "IKE SAs (version 2) and ISAKMP SAs (version 1, in IOS's states) by state.",
    );
    let mut states: BTreeMap<(String, String), u64> = BTreeMap::new();
    for st in [
        "ExpectSaInitResponse",
        "ExpectAuthResponse",
        "ExpectAuthRequest",
        "Established",
    ] {
        states.insert((st.into(), "2".into()), 0);
    }
    for sess in rows(s.sessions) {
        // `show sessions` rows say their version; rows without one are IKEv2's.
        let version = match &sess["version"] {
            Value::Null => "2".to_string(),
            v => text(v),
        };
        *states.entry((text(&sess["state"]), version)).or_default() += 1;
    }
    for ((st, version), n) in &states {
        o.sample("vtid_ike_sas", &[("state", st), ("version", version)], *n);
    }

    o.family(
        "vtid_handshake_failures_total",
        "counter",
        "Failed IKE handshakes by reason.",
    );
    for (r, n) in &s.counters.failures {
        o.sample("vtid_handshake_failures_total", &[("reason", r)], *n);
    }

    o.family(
        "vtid_ike_rejected_total",
        "counter",
        "Rejected IKE inputs by reason.",
    );
    for (r, n) in s.rejected {
        o.sample("vtid_ike_rejected_total", &[("reason", r)], *n);
    }

    o.family(
        "vtid_ike_half_open",
        "gauge",
        "Half-open responder IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet received).",
    );
    o.sample("vtid_ike_half_open", &[], s.half_open as u64);
    o.0
}

/// Binds the metrics listener (at start-up, so a bad address fails the start).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("bind metrics listener {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(TcpListener::from_std(l)?)
}

/// Answers HTTP scrapes until the daemon goes away.
pub async fn serve(listener: TcpListener, to_daemon: mpsc::Sender<Scrape>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = to_daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, tx).await {
                tracing::debug!("metrics connection: {e:#}");
            }
        });
    }
}

/// Largest request head read: a scrape is one short GET.
const MAX_HEAD: usize = 8 * 1024;

async fn answer(mut stream: TcpStream, to_daemon: mpsc::Sender<Scrape>) -> Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok(())
    })
    .await
    .context("request timed out")??;
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics" | "/")) => {
            let (tx, rx) = oneshot::channel();
            to_daemon.send(tx).await?;
            ("200 OK", rx.await?)
        }
        (Some("GET"), _) => ("404 Not Found", "try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "GET only\n".to_string()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// One parsed sample: metric name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses exposition text into `(name, labels, value)` samples, checking that every sample
/// belongs to a family announced by `# TYPE` (for tests and `nstest`'s scrapes).
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut typed = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {l:?}", i + 1);
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            let name = w.next().ok_or_else(|| err("TYPE without a name"))?;
            match w.next() {
                Some("counter" | "gauge" | "untyped") => typed.insert(name.to_string()),
                _ => return Err(err("bad TYPE")),
            };
            continue;
        }
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        let (series, value) = l.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = value.parse().map_err(|_| err("value is not a number"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((n, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| err("unclosed labels"))?;
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if chars.next() != Some('"') {
                        return Err(err("label value not quoted"));
                    }
                    let mut v = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => v.push('\n'),
                                Some(c) => v.push(c),
                                None => return Err(err("dangling escape")),
                            },
                            Some('"') => break,
                            Some(c) => v.push(c),
                            None => return Err(err("unterminated label value")),
                        }
                    }
                    labels.insert(key, v);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (n, labels)
            }
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err("bad metric name"));
        }
        if !typed.contains(name) {
            return Err(err("sample before its # TYPE"));
        }
        out.push((name.to_string(), labels, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn get(
        samples: &[(String, BTreeMap<String, String>, f64)],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.2)
    }

    #[test]
    fn renders_and_parses_back() {
        let tunnels = json!([
            {"name": "Tunnel0", "state": "up"},
            {"name": "Tun\"1", "state": "down"},
        ]);
        let sessions = json!([
            {"tunnel": "Tunnel0", "state": "Established"},
            {"tunnel": null, "state": "ExpectAuthRequest"},
            {"tunnel": "vtid-va1", "state": "QM_IDLE", "version": 1},
            {"tunnel": "Tunnel2", "state": "MM_KEY_EXCH", "version": 1},
        ]);
        let sas = json!([
            {"tunnel": "Tunnel0", "in": {"packets": 5, "bytes": 600}, "out": {"packets": 6, "bytes": 700}},
            {"tunnel": "Tunnel0", "in": {"packets": 1, "bytes": 10}, "out": {"packets": 2, "bytes": 20},
             "offload": {"in": {"device": "eth0", "mode": "crypto"}, "out": {"device": "eth0", "mode": "crypto"}}},
        ]);
        let mut c = Counters::default();
        c.rekey("Tunnel0", "child");
        c.rekey("Tunnel0", "child");
        c.failure("authentication-failed");
        let rejected = BTreeMap::from([("bad-spi", 3u64)]);
        let text = render(&Snapshot {
            tunnels: &tunnels,
            sessions: &sessions,
            sas: &sas,
            counters: &c,
            rejected: &rejected,
            half_open: 7,
            netlink_requests: 42,
        });
        let s = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let t0 = ("tunnel", "Tunnel0");
        assert_eq!(get(&s, "vtid_tunnel_up", &[t0]), Some(1.0));
        assert_eq!(get(&s, "vtid_netlink_requests_total", &[]), Some(42.0));
        assert_eq!(get(&s, "vtid_ike_half_open", &[]), Some(7.0));
        assert_eq!(
            get(&s, "vtid_tunnel_up", &[("tunnel", "Tun\"1")]),
            Some(0.0)
        );
        let bytes = |d| get(&s, "vtid_tunnel_bytes_total", &[t0, ("direction", d)]);
        assert_eq!((bytes("in"), bytes("out")), (Some(610.0), Some(720.0)));
        assert_eq!(
            get(&s, "vtid_tunnel_packets_total", &[t0, ("direction", "out")]),
            Some(8.0)
        );
        assert_eq!(
            get(&s, "vtid_tunnel_rekeys_total", &[t0, ("sa", "child")]),
            Some(2.0)
        );
        assert_eq!(
            get(
                &s,
                "vtid_tunnel_rekeys_total",
                &[("tunnel", "Tun\"1"), ("sa", "ike")]
            ),
            Some(0.0)
        );
        assert_eq!(
            get(&s, "vtid_ike_sas", &[("state", "Established")]),
            Some(1.0)
        );
        assert_eq!(
            get(&s, "vtid_ike_sas", &[("state", "ExpectAuthRequest")]),
            Some(1.0)
        );
        assert_eq!(
            get(&s, "vtid_ike_sas", &[("state", "ExpectAuthResponse")]),
            Some(0.0)
        );
        // IKEv1 sessions in IOS's states, told apart by version.
        assert_eq!(
            get(
                &s,
                "vtid_ike_sas",
                &[("state", "QM_IDLE"), ("version", "1")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                &s,
                "vtid_ike_sas",
                &[("state", "MM_KEY_EXCH"), ("version", "1")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                &s,
                "vtid_ike_sas",
                &[("state", "Established"), ("version", "2")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                &s,
                "vtid_handshake_failures_total",
                &[("reason", "authentication-failed")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(&s, "vtid_ike_rejected_total", &[("reason", "bad-spi")]),
            Some(3.0)
        );
        assert_eq!(
            get(&s, "vtid_child_sas", &[t0, ("offload", "none")]),
            Some(1.0)
        );
        assert_eq!(
            get(&s, "vtid_child_sas", &[t0, ("offload", "crypto")]),
            Some(1.0)
        );
    }

    #[test]
    fn parser_rejects_malformed_text() {
        assert!(
            parse("vtid_x 1\n")
                .unwrap_err()
                .contains("before its # TYPE")
        );
        assert!(parse("# TYPE a gauge\na{b=\"c} 1\n").is_err());
        assert!(
            parse("# TYPE a gauge\na one\n")
                .unwrap_err()
                .contains("not a number")
        );
    }
}
