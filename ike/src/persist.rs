//! Established IKEv2 SAs as plain data, for a planned restart of the daemon that drives the
//! engine: [`crate::Endpoint::export_sas`] takes each quiet established IKE SA with its Child
//! SAs out as an [`IkeSaState`], [`encode`] writes them in a small versioned binary format,
//! and a new process [`decode`]s them and hands each to [`crate::Endpoint::adopt`], which
//! resumes the SA at its next message IDs without sending anything (the kernel still holds
//! the Child SAs, so nothing is installed either).
//!
//! What an SA needs to go on (RFC 7296): its SPIs and role (§2.2 I flag), the SK_* keys
//! (§2.14: SK_d for Child SA KEYMAT and the next SKEYSEED, §2.17/§2.18; SK_e/SK_a to protect
//! messages; SK_p only for AUTH, kept for completeness), the negotiated suite, both message-ID
//! counters and the last response (§2.1/§2.2), the addresses, NAT and MOBIKE state, the
//! peer's identity, and each Child SA's SPIs, selectors, mode and the configuration it was
//! made for. Nonces are not needed: every rekey draws fresh ones (§2.8, §2.18). Deadlines are
//! carried as durations left, so the monotonic clocks of the two processes need not agree.
//!
//! The format: `MAGIC | version (u16) | body length (u32) | body | SHA-256(everything
//! before)`, all integers big-endian. The digest catches a corrupted or truncated file before
//! any field is trusted (it is no authenticator: the file is root's, mode 0600, written by
//! the daemon itself). Secrets stay in [`Secret`] from decoding on; `Debug` redacts them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::{ChildConfigIndex, ConnId, IkeProposal, Mode};
use crate::output::{ChildSaId, SessionId};
use crate::secret::Secret;
use crate::transform::{AddKes, DhGroup, Integ, KeMethod};
use crate::wire::{Codec, Identity, TrafficSelector};

/// The format version [`encode`] writes and [`decode`] reads. Bump it whenever the body
/// changes; an older file is then refused with [`PersistError::Version`] (and its SAs
/// renegotiated), never misread.
pub const FORMAT_VERSION: u16 = 1;

/// The first bytes of an encoded state.
pub const MAGIC: &[u8; 8] = b"vtid-ike";

const DIGEST_LEN: usize = 32;

/// Why a state could not be read or adopted. Each leaves the engine as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The bytes do not start with [`MAGIC`].
    #[error("not an IKE SA state (bad magic)")]
    BadMagic,
    /// Written by another format version.
    #[error("IKE SA state format version {found}; this build reads version {FORMAT_VERSION}")]
    Version {
        /// The version in the file.
        found: u16,
    },
    /// Shorter than its header says.
    #[error("IKE SA state truncated")]
    Truncated,
    /// The digest does not match the contents.
    #[error("IKE SA state corrupted (digest mismatch)")]
    Corrupted,
    /// A field holds a value no exporter writes.
    #[error("IKE SA state: invalid {0}")]
    Invalid(&'static str),
    /// Bytes after the last field.
    #[error("IKE SA state: trailing bytes")]
    Trailing,
    /// The SA's connection is not configured (by id and name) in this engine.
    #[error("connection {id} ({name}) is not configured")]
    UnknownConn {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
    },
    /// An IKE SA with the same local SPI exists already.
    #[error("an IKE SA with SPI {0:016x} exists")]
    SpiInUse(u64),
    /// A session or Child SA id the engine already uses.
    #[error("session or Child SA id {0} in use")]
    IdInUse(u64),
    /// The keys do not fit the suite.
    #[error("keys do not fit the IKE SA's suite")]
    BadKeys,
}

/// One Child SA of an exported IKE SA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSaState {
    /// Its id, kept so the driver's books (keyed by it) stay valid.
    pub id: ChildSaId,
    /// Our inbound SPI.
    pub spi_in: u32,
    /// The peer's (our outbound) SPI.
    pub spi_out: u32,
    /// Our selectors as negotiated.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's selectors as negotiated.
    pub remote_ts: Vec<TrafficSelector>,
    /// Tunnel or transport mode.
    pub mode: Mode,
    /// The connection's Child SA configuration it was made for.
    pub config: ChildConfigIndex,
    /// (our host, the peer's) of a per-host Child SA.
    pub host_pair: Option<(IpAddr, IpAddr)>,
    /// The outer addresses its kernel SAs were installed with.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    /// Its PFS group (status output).
    pub pfs: Option<DhGroup>,
    /// Its additional key exchanges (status output).
    pub pfs_addke: AddKes,
    /// Time left until its rekey; `None` when none is armed.
    pub rekey_in: Option<Duration>,
    /// Time left until the engine removes it.
    pub expire_in: Duration,
}

/// One established IKEv2 SA and its Child SAs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeSaState {
    /// The connection (profile) id.
    pub conn: ConnId,
    /// The connection's name, checked on adoption with the id.
    pub conn_name: String,
    /// The session id (kept across the restart, as across rekeys).
    pub session: SessionId,
    /// Initiator SPI.
    pub spi_i: u64,
    /// Responder SPI.
    pub spi_r: u64,
    /// We are the original initiator of this IKE SA (the I flag, §2.2).
    pub initiator: bool,
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// A NAT in front of us.
    pub nat_local: bool,
    /// A NAT in front of the peer.
    pub nat_remote: bool,
    /// The peer supports fragmentation (RFC 7383).
    pub frag: bool,
    /// MOBIKE negotiated (RFC 4555).
    pub mobike: bool,
    /// We were the original initiator when MOBIKE was negotiated.
    pub mobike_initiator: bool,
    /// The negotiated suite.
    pub suite: IkeProposal,
    /// SK_d.
    pub sk_d: Secret,
    /// SK_ai.
    pub sk_ai: Secret,
    /// SK_ar.
    pub sk_ar: Secret,
    /// SK_ei.
    pub sk_ei: Secret,
    /// SK_er.
    pub sk_er: Secret,
    /// SK_pi.
    pub sk_pi: Secret,
    /// SK_pr.
    pub sk_pr: Secret,
    /// The peer's authenticated identity.
    pub peer_id: Option<Identity>,
    /// (issuer, serial) of the peer's certificate path, for later CRL checks.
    pub peer_serials: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Message ID of our next request.
    pub next_req: u32,
    /// Message ID of the peer's next request.
    pub next_peer_req: u32,
    /// Our last response (its message ID and packets, already protected), replayed should
    /// the peer retransmit that request (§2.1).
    pub cached: Option<(u32, Vec<Vec<u8>>)>,
    /// Time left until the IKE SA rekey; `None` when none is armed.
    pub ike_rekey_in: Option<Duration>,
    /// Its Child SAs.
    pub children: Vec<ChildSaState>,
}

/// Encodes `sas` in the current format. The bytes hold keys: they are wiped when dropped.
pub fn encode(sas: &[IkeSaState]) -> zeroize::Zeroizing<Vec<u8>> {
    let mut body = W(Vec::new());
    body.u32(sas.len() as u32);
    for sa in sas {
        write_sa(&mut body, sa);
    }
    let mut out: Vec<u8> = Vec::with_capacity(MAGIC.len() + 6 + body.0.len() + DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&(body.0.len() as u32).to_be_bytes());
    out.extend_from_slice(&body.0);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &out);
    out.extend_from_slice(d.as_ref());
    // The body held keys too.
    zeroize::Zeroize::zeroize(&mut body.0);
    zeroize::Zeroizing::new(out)
}

/// Decodes a state written by [`encode`] of the same [`FORMAT_VERSION`].
pub fn decode(bytes: &[u8]) -> Result<Vec<IkeSaState>, PersistError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(PersistError::BadMagic);
    }
    let head = bytes
        .get(..MAGIC.len() + 6)
        .ok_or(PersistError::Truncated)?;
    let found = u16::from_be_bytes([head[8], head[9]]);
    if found != FORMAT_VERSION {
        return Err(PersistError::Version { found });
    }
    let len = u32::from_be_bytes([head[10], head[11], head[12], head[13]]) as usize;
    let end = head.len().checked_add(len).ok_or(PersistError::Truncated)?;
    let whole = end + DIGEST_LEN;
    if bytes.len() < whole {
        return Err(PersistError::Truncated);
    }
    if bytes.len() > whole {
        return Err(PersistError::Trailing);
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes[..end]);
    if aws_lc_rs::constant_time::verify_slices_are_equal(d.as_ref(), &bytes[end..]).is_err() {
        return Err(PersistError::Corrupted);
    }
    let mut r = R {
        buf: &bytes[head.len()..end],
    };
    let n = r.u32()? as usize;
    let mut sas = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        sas.push(read_sa(&mut r)?);
    }
    if !r.buf.is_empty() {
        return Err(PersistError::Trailing);
    }
    Ok(sas)
}

fn write_sa(w: &mut W, sa: &IkeSaState) {
    w.u32(sa.conn.0);
    w.bytes(sa.conn_name.as_bytes());
    w.u64(sa.session.0);
    w.u64(sa.spi_i);
    w.u64(sa.spi_r);
    let flags = [
        sa.initiator,
        sa.nat_local,
        sa.nat_remote,
        sa.frag,
        sa.mobike,
        sa.mobike_initiator,
    ];
    w.u8(flags
        .iter()
        .enumerate()
        .fold(0, |f, (i, b)| f | (u8::from(*b) << i)));
    w.addr(sa.local);
    w.addr(sa.remote);
    write_suite(w, &sa.suite);
    for k in [
        &sa.sk_d, &sa.sk_ai, &sa.sk_ar, &sa.sk_ei, &sa.sk_er, &sa.sk_pi, &sa.sk_pr,
    ] {
        w.bytes(k.expose());
    }
    match &sa.peer_id {
        Some(id) => {
            w.u8(1);
            w.bytes(&id.to_vec());
        }
        None => w.u8(0),
    }
    match &sa.peer_serials {
        Some(s) => {
            w.u8(1);
            w.u32(s.len() as u32);
            for (issuer, serial) in s {
                w.bytes(issuer);
                w.bytes(serial);
            }
        }
        None => w.u8(0),
    }
    w.u32(sa.next_req);
    w.u32(sa.next_peer_req);
    match &sa.cached {
        Some((id, packets)) => {
            w.u8(1);
            w.u32(*id);
            w.u32(packets.len() as u32);
            for p in packets {
                w.bytes(p);
            }
        }
        None => w.u8(0),
    }
    w.opt_dur(sa.ike_rekey_in);
    w.u32(sa.children.len() as u32);
    for ch in &sa.children {
        w.u64(ch.id.0);
        w.u32(ch.spi_in);
        w.u32(ch.spi_out);
        w.selectors(&ch.local_ts);
        w.selectors(&ch.remote_ts);
        w.u8(match ch.mode {
            Mode::Tunnel => 0,
            Mode::Transport => 1,
        });
        w.u16(ch.config.0);
        match ch.host_pair {
            Some((l, r)) => {
                w.u8(1);
                w.ip(l);
                w.ip(r);
            }
            None => w.u8(0),
        }
        match ch.addrs {
            Some((l, r)) => {
                w.u8(1);
                w.addr(l);
                w.addr(r);
            }
            None => w.u8(0),
        }
        w.u16(ch.pfs.map_or(0, DhGroup::id));
        write_addke(w, &ch.pfs_addke);
        w.opt_dur(ch.rekey_in);
        w.dur(ch.expire_in);
    }
}

fn read_sa(r: &mut R<'_>) -> Result<IkeSaState, PersistError> {
    let conn = ConnId(r.u32()?);
    let conn_name = String::from_utf8(r.bytes()?.to_vec())
        .map_err(|_| PersistError::Invalid("connection name"))?;
    let session = SessionId(r.u64()?);
    let spi_i = r.u64()?;
    let spi_r = r.u64()?;
    let flags = r.u8()?;
    if flags >> 6 != 0 {
        return Err(PersistError::Invalid("flags"));
    }
    let bit = |i: u8| flags & (1 << i) != 0;
    let local = r.addr()?;
    let remote = r.addr()?;
    let suite = read_suite(r)?;
    let mut key = || r.bytes().map(Secret::from_slice);
    let (sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr) =
        (key()?, key()?, key()?, key()?, key()?, key()?, key()?);
    let peer_id = match r.flag()? {
        true => Some(
            Identity::read_bytes(r.bytes()?).map_err(|_| PersistError::Invalid("peer identity"))?,
        ),
        false => None,
    };
    let peer_serials = match r.flag()? {
        true => {
            let n = r.u32()?;
            let mut v = Vec::new();
            for _ in 0..n {
                v.push((r.bytes()?.to_vec(), r.bytes()?.to_vec()));
            }
            Some(v)
        }
        false => None,
    };
    let next_req = r.u32()?;
    let next_peer_req = r.u32()?;
    let cached = match r.flag()? {
        true => {
            let id = r.u32()?;
            let n = r.u32()?;
            let mut packets = Vec::new();
            for _ in 0..n {
                packets.push(r.bytes()?.to_vec());
            }
            Some((id, packets))
        }
        false => None,
    };
    let ike_rekey_in = r.opt_dur()?;
    let n = r.u32()?;
    let mut children = Vec::new();
    for _ in 0..n {
        let id = ChildSaId(r.u64()?);
        let spi_in = r.u32()?;
        let spi_out = r.u32()?;
        let local_ts = r.selectors()?;
        let remote_ts = r.selectors()?;
        let mode = match r.u8()? {
            0 => Mode::Tunnel,
            1 => Mode::Transport,
            _ => return Err(PersistError::Invalid("mode")),
        };
        let config = ChildConfigIndex(r.u16()?);
        let host_pair = match r.flag()? {
            true => Some((r.ip()?, r.ip()?)),
            false => None,
        };
        let addrs = match r.flag()? {
            true => Some((r.addr()?, r.addr()?)),
            false => None,
        };
        let pfs = match r.u16()? {
            0 => None,
            g => Some(DhGroup::from_id(g).ok_or(PersistError::Invalid("PFS group"))?),
        };
        let pfs_addke = read_addke(r)?;
        let rekey_in = r.opt_dur()?;
        let expire_in = r.dur()?;
        children.push(ChildSaState {
            id,
            spi_in,
            spi_out,
            local_ts,
            remote_ts,
            mode,
            config,
            host_pair,
            addrs,
            pfs,
            pfs_addke,
            rekey_in,
            expire_in,
        });
    }
    Ok(IkeSaState {
        conn,
        conn_name,
        session,
        spi_i,
        spi_r,
        initiator: bit(0),
        local,
        remote,
        nat_local: bit(1),
        nat_remote: bit(2),
        frag: bit(3),
        mobike: bit(4),
        mobike_initiator: bit(5),
        suite,
        sk_d,
        sk_ai,
        sk_ar,
        sk_ei,
        sk_er,
        sk_pi,
        sk_pr,
        peer_id,
        peer_serials,
        next_req,
        next_peer_req,
        cached,
        ike_rekey_in,
        children,
    })
}

/// Transforms by their IANA ids (RFC 7296 §3.3.2), as on the wire.
fn write_suite(w: &mut W, s: &IkeProposal) {
    w.u16(s.encr.id());
    w.u16(s.encr.key_length_attr().unwrap_or(0));
    w.u16(s.prf.id());
    w.u16(s.integ.map_or(0, Integ::id));
    w.u16(s.dh.id());
    write_addke(w, &s.addke);
}

fn read_suite(r: &mut R<'_>) -> Result<IkeProposal, PersistError> {
    let (id, bits) = (r.u16()?, r.u16()?);
    let encr = crate::proposal::encr_from_wire(id, (bits != 0).then_some(bits))
        .ok_or(PersistError::Invalid("encryption transform"))?;
    let prf = crate::proposal::prf_from_wire(r.u16()?).ok_or(PersistError::Invalid("PRF"))?;
    let integ = match r.u16()? {
        0 => None,
        id => Some(
            crate::proposal::integ_from_wire(id)
                .ok_or(PersistError::Invalid("integrity transform"))?,
        ),
    };
    if encr.is_aead() != integ.is_none() {
        return Err(PersistError::Invalid("suite"));
    }
    let dh = DhGroup::from_id(r.u16()?).ok_or(PersistError::Invalid("DH group"))?;
    let addke = read_addke(r)?;
    Ok(IkeProposal {
        encr,
        prf,
        integ,
        dh,
        addke,
    })
}

fn write_addke(w: &mut W, a: &AddKes) {
    for m in &a.0 {
        w.u16(m.map_or(0, KeMethod::id));
    }
}

fn read_addke(r: &mut R<'_>) -> Result<AddKes, PersistError> {
    let mut a = AddKes::NONE;
    for slot in &mut a.0 {
        *slot = match r.u16()? {
            0 => None,
            id => Some(KeMethod::from_id(id).ok_or(PersistError::Invalid("key exchange"))?),
        };
    }
    Ok(a)
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
    fn addr(&mut self, a: SocketAddr) {
        self.ip(a.ip());
        self.u16(a.port());
    }
    fn dur(&mut self, d: Duration) {
        self.u64(d.as_millis().min(u64::MAX as u128) as u64);
    }
    fn opt_dur(&mut self, d: Option<Duration>) {
        match d {
            Some(d) => {
                self.u8(1);
                self.dur(d);
            }
            None => self.u8(0),
        }
    }
    fn selectors(&mut self, ts: &[TrafficSelector]) {
        self.u32(ts.len() as u32);
        for t in ts {
            self.u8(t.ip_proto);
            self.u16(t.start_port);
            self.u16(t.end_port);
            self.ip(t.start);
            self.ip(t.end);
        }
    }
}

struct R<'a> {
    buf: &'a [u8],
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PersistError> {
        if self.buf.len() < n {
            return Err(PersistError::Truncated);
        }
        let (h, t) = self.buf.split_at(n);
        self.buf = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, PersistError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self) -> Result<bool, PersistError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PersistError::Invalid("flag")),
        }
    }
    fn u16(&mut self) -> Result<u16, PersistError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PersistError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, PersistError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], PersistError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn ip(&mut self) -> Result<IpAddr, PersistError> {
        match self.u8()? {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(self.take(4)?);
                Ok(IpAddr::V4(Ipv4Addr::from(a)))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            _ => Err(PersistError::Invalid("address family")),
        }
    }
    fn addr(&mut self) -> Result<SocketAddr, PersistError> {
        Ok(SocketAddr::new(self.ip()?, self.u16()?))
    }
    fn dur(&mut self) -> Result<Duration, PersistError> {
        Ok(Duration::from_millis(self.u64()?))
    }
    fn opt_dur(&mut self) -> Result<Option<Duration>, PersistError> {
        Ok(match self.flag()? {
            true => Some(self.dur()?),
            false => None,
        })
    }
    fn selectors(&mut self) -> Result<Vec<TrafficSelector>, PersistError> {
        let n = self.u32()?;
        let mut v = Vec::new();
        for _ in 0..n {
            let ip_proto = self.u8()?;
            let start_port = self.u16()?;
            let end_port = self.u16()?;
            let start = self.ip()?;
            let end = self.ip()?;
            if start.is_ipv4() != end.is_ipv4() {
                return Err(PersistError::Invalid("traffic selector"));
            }
            v.push(TrafficSelector {
                ip_proto,
                start_port,
                end_port,
                start,
                end,
            });
        }
        Ok(v)
    }
}
