//! An IKE front-door attacker for the denial-of-service scenarios and benchmark: IKE_SA_INIT
//! requests (and forgeries of them) from many source addresses of one namespace, bounded in
//! count and time, with what came back counted.
//!
//! Spoofing without raw sockets: the attacker namespace gets an AnyIP route
//! (`ip route add local 10.99.0.0/16 dev lo`), which makes every address of the prefix local,
//! so a plain UDP socket can bind to any of them; the hub routes the prefix back to the
//! attacker ([`prepare`]), so its answers arrive and are counted (or, for a cookie-echoing
//! attacker, answered). Nothing leaves the namespaces the test created: the only destination
//! is the `target` the test names, which is its own hub.
//!
//! nstest drives binaries and reads the kernel like an operator (ARCHITECTURE.md) and does not
//! link the `ike` crate, so the datagrams are written here by a small encoder of the RFC 7296
//! §3 wire format (header, SA, KE, Ni, and a COOKIE notify), independent of the code under
//! test: a bug in vtid's codec cannot hide behind the same bug in the attacker. The requests
//! offer one suite, `aes256gcm16-prfsha256-x25519` (ENCR_AES_GCM_16/256, PRF_HMAC_SHA2_256,
//! group 31), which both vtid's defaults and the strongSwan configurations here accept, with a
//! random 32-byte X25519 public value (every 32-byte string is a valid X25519 input).
//!
//! The attacker runs as a process (`nstest flood`) inside the attacker namespace: a test
//! process cannot open sockets in another namespace without `setns`, and a separate process
//! also bounds the attack by construction (its own deadline; [`Flood::wait`] kills it at a
//! hard limit).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::netns::Netns;

/// IKE_SA_INIT exchange type (RFC 7296 §3.1).
const IKE_SA_INIT: u8 = 34;
/// Header flags: Initiator (bit 3) and Response (bit 5), §3.1.
const FLAG_INITIATOR: u8 = 0x08;
const FLAG_RESPONSE: u8 = 0x20;
/// Payload types, §3.2.
const PT_SA: u8 = 33;
const PT_KE: u8 = 34;
const PT_NONCE: u8 = 40;
const PT_NOTIFY: u8 = 41;
/// COOKIE notify type (§3.10.1, §2.6).
pub const NOTIFY_COOKIE: u16 = 16390;
/// Curve25519 (RFC 8031).
const GROUP_X25519: u16 = 31;

/// One IKE_SA_INIT request's variable parts: the same values re-encoded give the same bytes
/// (a retransmission), and with a cookie the §2.6 retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitRequest {
    /// The initiator's SPI (never 0).
    pub spi_i: u64,
    /// Ni, 32 bytes.
    pub nonce: [u8; 32],
    /// The X25519 public value.
    pub ke: [u8; 32],
}

impl InitRequest {
    /// Fresh random values from `/dev/urandom`.
    pub fn random(rng: &mut Rng) -> Self {
        let mut spi = [0u8; 8];
        rng.fill(&mut spi);
        let mut nonce = [0u8; 32];
        rng.fill(&mut nonce);
        let mut ke = [0u8; 32];
        rng.fill(&mut ke);
        Self {
            spi_i: u64::from_be_bytes(spi) | 1,
            nonce,
            ke,
        }
    }

    /// The request, with `cookie` as the first payload when given (§2.6: "the initiator
    /// ... MUST retry the IKE_SA_INIT with a Notify payload of type COOKIE containing the
    /// responder-supplied cookie data as the first payload").
    pub fn encode(&self, cookie: Option<&[u8]>) -> Vec<u8> {
        // SA payload body: one proposal (last, #1, IKE, no SPI, 3 transforms), §3.3.
        let mut transforms = Vec::new();
        // ENCR_AES_GCM_16 (20) with Key Length 256 (attribute 14, TV format), §3.3.5.
        push_transform(&mut transforms, 3, 1, 20, &[0x80, 0x0e, 0x01, 0x00]);
        // PRF_HMAC_SHA2_256 (5).
        push_transform(&mut transforms, 3, 2, 5, &[]);
        // Diffie-Hellman group 31, the last transform (0).
        push_transform(&mut transforms, 0, 4, GROUP_X25519, &[]);
        let mut proposal = vec![0, 0];
        proposal.extend_from_slice(&((8 + transforms.len()) as u16).to_be_bytes());
        proposal.extend_from_slice(&[1, 1, 0, 3]);
        proposal.extend_from_slice(&transforms);

        let mut ke = GROUP_X25519.to_be_bytes().to_vec();
        ke.extend_from_slice(&[0, 0]);
        ke.extend_from_slice(&self.ke);

        let mut payloads: Vec<(u8, Vec<u8>)> = Vec::new();
        if let Some(c) = cookie {
            // Protocol 0, SPI size 0, type COOKIE, data (§3.10).
            let mut n = vec![0, 0];
            n.extend_from_slice(&NOTIFY_COOKIE.to_be_bytes());
            n.extend_from_slice(c);
            payloads.push((PT_NOTIFY, n));
        }
        payloads.push((PT_SA, proposal));
        payloads.push((PT_KE, ke));
        payloads.push((PT_NONCE, self.nonce.to_vec()));
        encode_message(self.spi_i, 0, FLAG_INITIATOR, &payloads)
    }
}

fn push_transform(out: &mut Vec<u8>, more: u8, ty: u8, id: u16, attrs: &[u8]) {
    out.extend_from_slice(&[more, 0]);
    out.extend_from_slice(&((8 + attrs.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[ty, 0]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// An IKE_SA_INIT message (message ID 0) with the given payloads in order.
fn encode_message(spi_i: u64, spi_r: u64, flags: u8, payloads: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, data)) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(0, |p| p.0);
        body.push(next);
        body.push(0);
        body.extend_from_slice(&((4 + data.len()) as u16).to_be_bytes());
        body.extend_from_slice(data);
    }
    let first = payloads.first().map_or(0, |p| p.0);
    let mut m = header(spi_i, spi_r, first, flags, 28 + body.len());
    m.extend_from_slice(&body);
    m
}

/// The 28-byte IKE header, §3.1 (version 2.0, IKE_SA_INIT, message ID 0).
fn header(spi_i: u64, spi_r: u64, next: u8, flags: u8, len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(len);
    h.extend_from_slice(&spi_i.to_be_bytes());
    h.extend_from_slice(&spi_r.to_be_bytes());
    h.extend_from_slice(&[next, 0x20, IKE_SA_INIT, flags]);
    h.extend_from_slice(&0u32.to_be_bytes());
    h.extend_from_slice(&(len as u32).to_be_bytes());
    h
}

/// Mode (a): the header of a half-open SA's IKE_SA_INIT alone, 28 bytes with a length that
/// says 28: what an attacker who saw (or guessed) the initiator's SPI can forge cheapest.
pub fn header_only(spi_i: u64) -> Vec<u8> {
    header(spi_i, 0, PT_SA, FLAG_INITIATOR, 28)
}

/// Mode (b): the same header (its length field right) followed by `body_len` random bytes.
pub fn garbage_body(spi_i: u64, body_len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut m = header(spi_i, 0, PT_SA, FLAG_INITIATOR, 28 + body_len);
    let mut body = vec![0u8; body_len];
    rng.fill(&mut body);
    m.extend_from_slice(&body);
    m
}

/// What an answer to an IKE_SA_INIT request was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A response with an SA payload: the responder kept state (a half-open SA).
    SaInit {
        /// The initiator SPI it answers.
        spi_i: u64,
        /// The responder's SPI.
        spi_r: u64,
    },
    /// A COOKIE request (§2.6): no state kept.
    Cookie {
        /// The initiator SPI it answers.
        spi_i: u64,
        /// The cookie to echo.
        data: Vec<u8>,
    },
    /// Another notify-only response (INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN, ...).
    Notify {
        /// The initiator SPI it answers.
        spi_i: u64,
        /// The first notify's type.
        ty: u16,
    },
    /// Not an IKE_SA_INIT response this encoder understands.
    Other,
}

/// Classifies a datagram received by the attacker.
pub fn parse_reply(b: &[u8]) -> Reply {
    if b.len() < 28 || b[18] != IKE_SA_INIT || b[19] & FLAG_RESPONSE == 0 {
        return Reply::Other;
    }
    let spi_i = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
    let spi_r = u64::from_be_bytes(b[8..16].try_into().expect("8 bytes"));
    let mut next = b[16];
    let mut at = 28;
    let mut first_notify = None;
    while next != 0 && at + 4 <= b.len() {
        let len = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
        if len < 4 || at + len > b.len() {
            return Reply::Other;
        }
        let body = &b[at + 4..at + len];
        match next {
            PT_SA => return Reply::SaInit { spi_i, spi_r },
            PT_NOTIFY if body.len() >= 4 && first_notify.is_none() => {
                let spi_size = body[1] as usize;
                let ty = u16::from_be_bytes([body[2], body[3]]);
                let data = body.get(4 + spi_size..).unwrap_or_default().to_vec();
                first_notify = Some((ty, data));
            }
            _ => {}
        }
        next = b[at];
        at += len;
    }
    match first_notify {
        Some((NOTIFY_COOKIE, data)) => Reply::Cookie { spi_i, data },
        Some((ty, _)) => Reply::Notify { spi_i, ty },
        None => Reply::Other,
    }
}

/// Random bytes from the kernel (`/dev/urandom`), buffered: one read per 64 KiB, not three
/// per request (a flood's rate is bounded by its system calls under TCG).
pub struct Rng {
    f: std::io::BufReader<std::fs::File>,
}

impl Rng {
    /// Opens `/dev/urandom`.
    pub fn new() -> Result<Self> {
        Ok(Self {
            f: std::io::BufReader::with_capacity(1 << 16, std::fs::File::open("/dev/urandom")?),
        })
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.f.read_exact(buf).expect("/dev/urandom reads");
    }
}

/// What the attacker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Mode (c): fresh well-formed IKE_SA_INIT requests, round-robin over the sources, never
    /// completed (no IKE_AUTH follows).
    Init,
    /// Mode (d): like `Init`, and every COOKIE received is echoed once in the §2.6 retry, as
    /// an attacker that owns its addresses can.
    InitEchoCookie,
    /// The reflection probe, from the first source: one well-formed request (a half-open SA
    /// on the hub), then `forgeries` header-only copies (a), `forgeries` garbage-body copies
    /// (b), then one byte-identical retransmission, each step given `step_wait` to be
    /// answered.
    Probe,
}

/// A flood as data (passed to the `nstest flood` process as JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FloodSpec {
    /// The hub's IKE address (e.g. 172.16.0.1:500).
    pub target: SocketAddrV4,
    /// The first spoofed source; `sources` consecutive addresses are used.
    pub first_source: Ipv4Addr,
    /// Number of source addresses.
    pub sources: u32,
    /// Source UDP port (500 as a real initiator; 0 = any).
    pub source_port: u16,
    /// What to send.
    pub mode: Mode,
    /// New requests per second, all sources together (echoes are extra).
    pub rate: u32,
    /// Most new requests sent in all.
    pub count: u64,
    /// Most time spent sending.
    pub duration: Duration,
    /// After the last send, how long to keep counting (and echoing) answers.
    pub linger: Duration,
    /// Probe: forgeries of each kind.
    pub forgeries: u32,
    /// Probe: wait for answers after each step.
    pub step_wait: Duration,
}

impl FloodSpec {
    /// A flood of `mode` from `sources` addresses from `first_source`, at `rate` per second,
    /// at most `count` requests and `duration`, answers counted for 2 s more.
    pub fn new(target: SocketAddrV4, first_source: Ipv4Addr, sources: u32, mode: Mode) -> Self {
        Self {
            target,
            first_source,
            sources,
            source_port: 500,
            mode,
            rate: 100,
            count: 100,
            duration: Duration::from_secs(10),
            linger: Duration::from_secs(2),
            forgeries: 5,
            step_wait: Duration::from_secs(2),
        }
    }
}

/// What one probe step got back.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepReport {
    /// What was sent.
    pub what: String,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams that came back (any kind).
    pub replies: u64,
    /// Of those, byte-identical to the answer to the first request.
    pub identical_to_first_answer: u64,
}

/// What a flood sent and got back.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FloodReport {
    /// New IKE_SA_INIT requests sent.
    pub sent: u64,
    /// §2.6 retries sent with an echoed cookie.
    pub echoed: u64,
    /// Send errors (e.g. ENOBUFS).
    pub send_errors: u64,
    /// Answers with an SA payload (the hub kept a half-open SA).
    pub sa_init: u64,
    /// Of `sa_init`, answers to an echoed-cookie retry.
    pub sa_init_after_cookie: u64,
    /// COOKIE answers.
    pub cookie: u64,
    /// Other notify-only answers, by notify type.
    pub notify: BTreeMap<u16, u64>,
    /// Datagrams that were not IKE_SA_INIT responses.
    pub other: u64,
    /// `sa_init` answers by source address.
    pub sa_init_by_source: BTreeMap<Ipv4Addr, u64>,
    /// Sending time, ms.
    pub send_ms: u64,
    /// Probe mode: its steps in order.
    pub steps: Vec<StepReport>,
}

impl FloodReport {
    /// Every datagram the hub sent back.
    pub fn replies(&self) -> u64 {
        self.sa_init + self.cookie + self.notify.values().sum::<u64>() + self.other
    }
}

/// Makes `prefix` (e.g. `10.99.0.0/16`) local to `attacker` (AnyIP: its sockets may bind any
/// address of it) and routes it on `hub` via `attacker_addr` (the attacker's address on their
/// link), so the hub's answers come back to the attacker.
pub fn prepare(attacker: &Netns, hub: &Netns, prefix: &str, attacker_addr: &str) -> Result<()> {
    attacker.ip(&["route", "add", "local", prefix, "dev", "lo"])?;
    hub.ip(&["route", "add", prefix, "via", attacker_addr])?;
    Ok(())
}

/// The `nstest` binary (it runs the attacker): `NSTEST_BIN`, else `nstest` in the target
/// directory of the running test or example (debug or release).
pub fn nstest_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NSTEST_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        for cand in [dir.join("nstest"), dir.join("../debug/nstest")] {
            if cand.is_file() {
                return Ok(cand);
            }
        }
    }
    bail!(
        "nstest binary not found near {} (set NSTEST_BIN or cargo build -p nstest)",
        exe.display()
    )
}

/// A running attacker process.
pub struct Flood {
    child: Option<Child>,
    out: PathBuf,
    limit: Instant,
}

impl Flood {
    /// Starts `spec` in `ns` (prepared with [`prepare`]); the report goes to `dir`.
    pub fn start(ns: &Netns, dir: &std::path::Path, spec: &FloodSpec) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let out = dir.join(format!("flood-{n}.json"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(nstest_binary()?)
            .args(["flood", "--spec", &serde_json::to_string(spec)?, "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .spawn()
            .context("start the attacker")?;
        // Hard stop: the process bounds itself; this bounds a process that hangs. A probe
        // waits `step_wait` after each of its four steps.
        let steps = if spec.mode == Mode::Probe { 4 } else { 1 };
        let limit = Instant::now()
            + spec.duration
            + spec.linger
            + spec.step_wait * steps
            + Duration::from_secs(30);
        Ok(Self {
            child: Some(child),
            out,
            limit,
        })
    }

    /// Starts `spec` and waits for its report.
    pub fn run(ns: &Netns, dir: &std::path::Path, spec: &FloodSpec) -> Result<FloodReport> {
        Self::start(ns, dir, spec)?.wait()
    }

    /// Waits for the attacker to finish (killing it past its hard limit) and reads its
    /// report.
    pub fn wait(mut self) -> Result<FloodReport> {
        let mut c = self.child.take().context("already waited")?;
        loop {
            if let Some(st) = c.try_wait()? {
                ensure!(st.success(), "the attacker failed: {st}");
                break;
            }
            if Instant::now() > self.limit {
                let _ = c.kill();
                let _ = c.wait();
                bail!("the attacker overran its bounds and was killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&self.out)
            .with_context(|| format!("read {}", self.out.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `nstest flood --spec JSON --out FILE`: runs the attacker in the current namespace.
pub fn cli(args: &[String]) -> Result<()> {
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .with_context(|| format!("nstest flood needs {name}"))
    };
    let spec: FloodSpec = serde_json::from_str(get("--spec")?).context("--spec")?;
    let out = PathBuf::from(get("--out")?);
    let report = run_attack(&spec)?;
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}

/// The sockets, one per spoofed source.
struct Sources {
    socks: Vec<(Ipv4Addr, UdpSocket)>,
}

impl Sources {
    fn bind(spec: &FloodSpec) -> Result<Self> {
        ensure!(spec.sources >= 1, "at least one source");
        let mut socks = Vec::new();
        for i in 0..spec.sources {
            let a = Ipv4Addr::from(u32::from(spec.first_source) + i);
            let s = UdpSocket::bind(SocketAddrV4::new(a, spec.source_port)).with_context(|| {
                format!("bind {a}:{} (is the AnyIP route there?)", spec.source_port)
            })?;
            s.set_nonblocking(true)?;
            s.connect(spec.target)?;
            socks.push((a, s));
        }
        Ok(Self { socks })
    }

    /// Every datagram waiting on every socket, with the source it came to.
    fn drain(&self, mut f: impl FnMut(usize, &[u8])) {
        let mut buf = [0u8; 2048];
        for (i, (_, s)) in self.socks.iter().enumerate() {
            while let Ok(n) = s.recv(&mut buf) {
                f(i, &buf[..n]);
            }
        }
    }
}

/// Runs the attack `spec` describes and reports what came back.
pub fn run_attack(spec: &FloodSpec) -> Result<FloodReport> {
    ensure!(
        spec.duration <= Duration::from_secs(600)
            && spec.count <= 10_000_000
            && spec.linger <= Duration::from_secs(60)
            && spec.step_wait <= Duration::from_secs(60)
            && spec.forgeries <= 10_000
            && spec.sources <= 65_536,
        "a flood is bounded: at most 600 s, 10^7 requests, 60 s of linger or step wait, 10^4 \
         forgeries, 65,536 sources"
    );
    let src = Sources::bind(spec)?;
    let mut rng = Rng::new()?;
    match spec.mode {
        Mode::Probe => probe(spec, &src, &mut rng),
        Mode::Init | Mode::InitEchoCookie => flood(spec, &src, &mut rng),
    }
}

fn flood(spec: &FloodSpec, src: &Sources, rng: &mut Rng) -> Result<FloodReport> {
    let mut r = FloodReport::default();
    // Requests by (source index, SPIi), kept only when echoing cookies (to rebuild the §2.6
    // retry with the same Ni and SPIi the cookie is bound to) and whether it was echoed.
    let echo = spec.mode == Mode::InitEchoCookie;
    let mut pending: HashMap<(usize, u64), (InitRequest, bool)> = HashMap::new();
    let start = Instant::now();
    let deadline = start + spec.duration;
    let interval = Duration::from_secs_f64(1.0 / f64::from(spec.rate.max(1)));
    let mut last_drain = start;
    // Answers wait in the sockets' buffers; reading them costs one syscall per source, which
    // with a thousand sources would slow the sender. An echoing attacker must answer COOKIEs
    // promptly; a plain flood only counts, mostly after the sending is done.
    let drain_every = Duration::from_millis(if echo { 5 } else { 250 });
    let handle = |r: &mut FloodReport,
                  pending: &mut HashMap<(usize, u64), (InitRequest, bool)>,
                  i: usize,
                  b: &[u8]| {
        match parse_reply(b) {
            Reply::SaInit { spi_i, .. } => {
                r.sa_init += 1;
                *r.sa_init_by_source.entry(src.socks[i].0).or_default() += 1;
                if pending.get(&(i, spi_i)).is_some_and(|p| p.1) {
                    r.sa_init_after_cookie += 1;
                }
                pending.remove(&(i, spi_i));
            }
            Reply::Cookie { spi_i, data } => {
                r.cookie += 1;
                if let Some((req, echoed)) = pending.get_mut(&(i, spi_i))
                    && !*echoed
                {
                    *echoed = true;
                    match src.socks[i].1.send(&req.encode(Some(&data))) {
                        Ok(_) => r.echoed += 1,
                        Err(_) => r.send_errors += 1,
                    }
                }
            }
            Reply::Notify { ty, .. } => *r.notify.entry(ty).or_default() += 1,
            Reply::Other => r.other += 1,
        }
    };
    while r.sent < spec.count && Instant::now() < deadline {
        // Pace: request k leaves at start + k * interval.
        let due = start + interval.mul_f64(r.sent as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(5)));
            continue;
        }
        let i = (r.sent % u64::from(spec.sources)) as usize;
        let req = InitRequest::random(rng);
        match src.socks[i].1.send(&req.encode(None)) {
            Ok(_) => r.sent += 1,
            Err(_) => {
                r.send_errors += 1;
                r.sent += 1;
            }
        }
        if echo {
            pending.insert((i, req.spi_i), (req, false));
        }
        if last_drain.elapsed() >= drain_every {
            last_drain = Instant::now();
            src.drain(|i, b| handle(&mut r, &mut pending, i, b));
        }
    }
    r.send_ms = start.elapsed().as_millis() as u64;
    let end = Instant::now() + spec.linger;
    while Instant::now() < end {
        src.drain(|i, b| handle(&mut r, &mut pending, i, b));
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(r)
}

fn probe(spec: &FloodSpec, src: &Sources, rng: &mut Rng) -> Result<FloodReport> {
    let mut r = FloodReport::default();
    let sock = &src.socks[0].1;
    let req = InitRequest::random(rng);
    let original = req.encode(None);
    let mut first_answer: Option<Vec<u8>> = None;
    let start = Instant::now();
    let step = |what: &str, dgrams: Vec<Vec<u8>>, first: &mut Option<Vec<u8>>| {
        let mut s = StepReport {
            what: what.into(),
            ..StepReport::default()
        };
        for d in &dgrams {
            if sock.send(d).is_ok() {
                s.sent += 1;
            }
        }
        let end = Instant::now() + spec.step_wait;
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            while let Ok(n) = sock.recv(&mut buf) {
                let b = &buf[..n];
                s.replies += 1;
                if first.is_none() {
                    *first = Some(b.to_vec());
                }
                if first.as_deref() == Some(b) {
                    s.identical_to_first_answer += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    };
    let s = step("request", vec![original.clone()], &mut first_answer);
    r.sent += 1;
    r.steps.push(s);
    match first_answer.as_deref().map(parse_reply) {
        Some(Reply::SaInit { .. }) => r.sa_init += 1,
        Some(Reply::Cookie { .. }) => r.cookie += 1,
        Some(Reply::Notify { ty, .. }) => *r.notify.entry(ty).or_default() += 1,
        Some(Reply::Other) => r.other += 1,
        None => {}
    }
    let n = spec.forgeries as usize;
    let headers = vec![header_only(req.spi_i); n];
    let s = step("header_only", headers, &mut first_answer);
    r.steps.push(s);
    // Garbage bodies as long as the real request's, so only the content differs.
    let garbage = (0..n)
        .map(|_| garbage_body(req.spi_i, original.len() - 28, rng))
        .collect();
    let s = step("garbage_body", garbage, &mut first_answer);
    r.steps.push(s);
    let s = step("retransmission", vec![original], &mut first_answer);
    r.steps.push(s);
    r.send_ms = start.elapsed().as_millis() as u64;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> InitRequest {
        InitRequest {
            spi_i: 0x0102_0304_0506_0708,
            nonce: [7; 32],
            ke: [9; 32],
        }
    }

    #[test]
    fn init_request_layout_follows_rfc7296_section_3() {
        let m = req().encode(None);
        // Header: SPIs, next payload SA, version 2.0, IKE_SA_INIT, I flag, msg id 0, length.
        assert_eq!(&m[..8], &0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(&m[8..16], &[0; 8]);
        assert_eq!(&m[16..20], &[PT_SA, 0x20, 34, 0x08]);
        assert_eq!(&m[20..24], &[0; 4]);
        assert_eq!(
            u32::from_be_bytes(m[24..28].try_into().unwrap()) as usize,
            m.len()
        );
        // SA (4 + 8 proposal + 12 + 8 + 8 transforms) -> KE (4 + 4 + 32) -> Ni (4 + 32).
        assert_eq!(&m[28..32], &[PT_KE, 0, 0, 40]);
        assert_eq!(&m[68..72], &[PT_NONCE, 0, 0, 40]);
        assert_eq!(&m[72..76], &[0, 31, 0, 0]);
        assert_eq!(&m[108..112], &[0, 0, 0, 36]);
        assert_eq!(m.len(), 144);
        // Same values, same bytes: a retransmission.
        assert_eq!(m, req().encode(None));
    }

    #[test]
    fn cookie_is_the_first_payload() {
        let m = req().encode(Some(&[0xaa; 32]));
        assert_eq!(m[16], PT_NOTIFY);
        // Notify: next SA, length 4 + 4 + 32, protocol 0, SPI size 0, COOKIE, the data.
        assert_eq!(&m[28..36], &[PT_SA, 0, 0, 40, 0, 0, 0x40, 0x06]);
        assert_eq!(&m[36..68], &[0xaa; 32]);
        assert_eq!(&m[68..], &req().encode(None)[28..]);
    }

    #[test]
    fn forgeries_keep_the_header() {
        let h = header_only(5);
        // The real request's first 24 header bytes, a length of 28.
        assert_eq!(h.len(), 28);
        assert_eq!(&h[..24], &req_with_spi(5)[..24]);
        assert_eq!(&h[24..], &[0, 0, 0, 28]);
        let mut rng = Rng::new().unwrap();
        let g = garbage_body(5, 116, &mut rng);
        assert_eq!(g.len(), 144);
        assert_eq!(&g[..24], &h[..24]);
        assert_eq!(u32::from_be_bytes(g[24..28].try_into().unwrap()), 144);
    }

    fn req_with_spi(spi: u64) -> Vec<u8> {
        InitRequest {
            spi_i: spi,
            ..req()
        }
        .encode(None)
    }

    #[test]
    fn replies_are_classified() {
        // A COOKIE answer as §2.6 draws it: SPIr 0, R flag, one notify.
        let cookie = encode_message(
            5,
            0,
            FLAG_RESPONSE,
            &[(PT_NOTIFY, [&[0u8, 0, 0x40, 0x06][..], &[1, 2, 3]].concat())],
        );
        assert_eq!(
            parse_reply(&cookie),
            Reply::Cookie {
                spi_i: 5,
                data: vec![1, 2, 3]
            }
        );
        let invalid_ke = encode_message(
            5,
            0,
            FLAG_RESPONSE,
            &[(PT_NOTIFY, vec![0, 0, 0, 17, 0, 14])],
        );
        assert_eq!(parse_reply(&invalid_ke), Reply::Notify { spi_i: 5, ty: 17 });
        let resp = encode_message(
            5,
            9,
            FLAG_RESPONSE,
            &[(PT_SA, vec![0; 8]), (PT_NONCE, vec![1; 32])],
        );
        assert_eq!(parse_reply(&resp), Reply::SaInit { spi_i: 5, spi_r: 9 });
        // Our own request is not a response.
        assert_eq!(parse_reply(&req().encode(None)), Reply::Other);
        assert_eq!(parse_reply(&[0; 10]), Reply::Other);
    }
}
