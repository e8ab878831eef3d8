//! One IKE SA: the common part (SPIs, addresses, message-ID windows, retransmission, the
//! response cache, SK protection and fragmentation) and the state it is in.
//!
//! States are types named for what they wait for (rustls): [`initiator::ExpectSaInitResponse`],
//! [`initiator::ExpectAuthResponse`], [`responder::ExpectAuthRequest`], and the long-lived
//! [`established::Established`]. Handshake states are consumed by their `handle`; a protected
//! message is authenticated (decrypted) by [`Common`] before any state sees it, so
//! unauthenticated packets never change state. Every state change goes through one
//! transition function, [`state::step`], called from [`IkeSa::dispatch`] alone.

pub(crate) mod auth;
pub(crate) mod child;
pub(crate) mod established;
pub(crate) mod followup;
pub(crate) mod glue;
pub(crate) mod initiator;
pub(crate) mod intermediate;
pub(crate) mod persist;
pub(crate) mod responder;
pub(crate) mod state;
pub(crate) mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use rand_core::RngCore;

use crate::config::ConnId;
use crate::config::EndpointConfig;
use crate::config::PeerConfig;
use crate::crypto::Rng;
use crate::crypto::SkCipher;
use crate::error::Error;
use crate::error::PeerMisbehaved;
use crate::error::Reaction;
use crate::output::ChildSaId;
use crate::output::Datagram;
use crate::output::DownReason;
use crate::output::Event;
use crate::output::Output;
use crate::output::SessionId;
use crate::output::Stats;
use crate::output::Transmit;
use crate::wire::Header;
use crate::wire::Identity;
use crate::wire::Message;
use crate::wire::Notify;
use crate::wire::Payload;
use crate::wire::Sk;
use crate::wire::Skf;
use crate::wire::decode_chain;
use crate::wire::encode_chain;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::PayloadType;

pub(crate) use state::Input;
pub(crate) use state::SaCommand;
pub(crate) use state::State;
use timers::Timer;
use timers::TimerTable;

/// Largest number of fragments we reassemble (RFC 7383 §2.6 asks for bounds).
const MAX_FRAGMENTS: u16 = 64;
/// Largest reassembled message.
const MAX_REASSEMBLED: usize = 64 * 1024;
/// Longest wait the engine schedules; longer configured durations are clamped so that
/// `Instant + Duration` cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `now + d`, clamped (configuration may hold absurd durations; peers never set these).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_WAIT)).unwrap_or(now)
}

/// NAT-T port (RFC 3948).
pub(crate) const NATT_PORT: u16 = 4500;

/// Everything a state handler may touch besides its own SA.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Instant,
    /// Wall-clock seconds since the Unix epoch at `now`, derived from the driver's
    /// [`crate::Endpoint::set_wall_clock`] anchor; `None` until it is set. Only certificate
    /// validity (RFC 5280 §6.1.3 (a)(2)) reads it.
    pub(crate) unix_time: Option<u64>,
    pub(crate) rng: &'a mut Rng,
    /// Inbound ESP SPIs, unique within the engine (see [`crate::spis`]).
    pub(crate) spis: &'a mut crate::spis::Spis,
    pub(crate) out: &'a mut VecDeque<Output>,
    pub(crate) config: &'a EndpointConfig,
    /// `config.peers`, each behind the `Arc` its SAs share.
    pub(crate) peers: &'a [Arc<PeerConfig>],
    pub(crate) stats: &'a mut Stats,
    pub(crate) actions: &'a mut Vec<SaAction>,
    pub(crate) next_id: &'a mut u64,
    /// Another established IKE SA of ours joins the same identities as the SA at hand (set by
    /// the endpoint before an IKE_SA_INIT response is handled): its IKE_AUTH then carries no
    /// INITIAL_CONTACT, which would make the peer delete that other SA (RFC 7296 §2.4: the
    /// notify asserts that this is the only IKE SA between the two identities).
    pub(crate) has_contact: bool,
}

impl Ctx<'_> {
    pub(crate) fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    pub(crate) fn alloc_id(&mut self) -> u64 {
        let id = *self.next_id;
        *self.next_id += 1;
        id
    }

    pub(crate) fn nonce(&mut self) -> Vec<u8> {
        // RFC 7296 §2.10: at least 128 bits and at least half the PRF key size; 32 octets
        // covers every PRF we offer.
        let mut n = vec![0u8; 32];
        self.rng.fill_bytes(&mut n);
        n
    }

    pub(crate) fn spi32(&mut self) -> u32 {
        self.spis.next()
    }

    pub(crate) fn spi64(&mut self) -> u64 {
        loop {
            let s = self.rng.next_u64();
            if s != 0 {
                return s;
            }
        }
    }
}

/// Effects on other SAs, applied by the endpoint after the handler returns.
pub(crate) enum SaAction {
    /// A new IKE SA (rekeyed) to register.
    Insert(Box<IkeSa>),
    /// INITIAL_CONTACT (RFC 7296 §2.4): drop other SAs of this peer without notifying it,
    /// but for those we initiated that were authenticated after `keep` began (its
    /// [`Lineage::born`]): those crossed the peer's initiation and are left to
    /// `ResolveDuplicates`.
    DeleteOthers {
        keep: u64,
        conn: ConnId,
        peer_id: Identity,
        born: u64,
    },
    /// An IKE SA was established: if another established SA of the same connection and peer
    /// exists (both ends initiated at once), delete the duplicate.
    ResolveDuplicates { conn: ConnId, peer_id: Identity },
}

/// How we sign our AUTH and how the peer's is verified, as status output names them (IOS's
/// `Auth sign` / `Auth verify`). The method is one per profile (RFC 7296 §2.15 PSK, or RFC
/// 7427 signatures), so the verifying side is named by method, the signing side by our key.
fn auth_names(auth: &crate::config::AuthConfig) -> (&'static str, &'static str) {
    use crate::crypto::sig::SignatureScheme as S;
    let key = match auth {
        crate::config::AuthConfig::Psk(_) => return ("PSK", "PSK"),
        crate::config::AuthConfig::Signature(s) => &s.key,
        crate::config::AuthConfig::Certificate(c) => &c.key,
    };
    let sign = match key.default_scheme() {
        S::EcdsaP256Sha256 | S::EcdsaP384Sha384 | S::EcdsaP521Sha512 => "ECDSA",
        S::Ed25519 => "Ed25519",
        S::RsaPkcs1Sha256
        | S::RsaPkcs1Sha384
        | S::RsaPkcs1Sha512
        | S::RsaPssSha256
        | S::RsaPssSha384
        | S::RsaPssSha512 => "RSA",
    };
    (sign, "Digital Signature")
}

/// SK ciphers and the keys that outlive IKE_AUTH.
pub(crate) struct SaKeys {
    pub(crate) suite: crate::config::IkeProposal,
    pub(crate) sk_d: crate::secret::Secret,
    pub(crate) sk_pi: crate::secret::Secret,
    pub(crate) sk_pr: crate::secret::Secret,
    /// SK_ei/SK_er/SK_ai/SK_ar as derived: the ciphers below hold them only as key
    /// schedules, and a planned restart exports them (`crate::persist`).
    pub(crate) sk_e: (crate::secret::Secret, crate::secret::Secret),
    pub(crate) sk_a: (crate::secret::Secret, crate::secret::Secret),
    pub(crate) send: SkCipher,
    pub(crate) recv: SkCipher,
}

/// A request in flight (window size 1, RFC 7296 §2.3).
pub(crate) struct Outstanding {
    pub(crate) id: u32,
    pub(crate) packets: Vec<Vec<u8>>,
    pub(crate) sends: u32,
    pub(crate) schedule: Schedule,
}

/// How an outstanding request is retransmitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Schedule {
    /// RFC 7296 §2.1 exponential back-off from [`crate::config::RetransmitConfig`].
    Backoff,
    /// A liveness check of a peer with configured DPD: fixed spacing, the peer's count.
    Liveness(crate::config::Dpd),
}

impl Schedule {
    /// Sends in all before the peer is dead, and the wait after send number `sends`.
    pub(crate) fn after(
        self,
        retransmit: &crate::config::RetransmitConfig,
        sends: u32,
    ) -> (u32, Duration) {
        match self {
            Self::Backoff => {
                let backoff = 1u32 << sends.saturating_sub(1).min(16);
                (retransmit.tries, retransmit.initial.saturating_mul(backoff))
            }
            Self::Liveness(d) => (d.retries.max(1), d.interval),
        }
    }
}

struct Reassembly {
    id: u32,
    first: PayloadType,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

/// Who put INITIAL_CONTACT on an IKE SA's IKE_AUTH request (RFC 7296 §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContactBy {
    Us,
    Peer,
}

/// Where an IKE SA stands among the other SAs of its peer, for settling simultaneous
/// initiation: which SA carried INITIAL_CONTACT, and whether it began before or after
/// another was authenticated. Order is counted in `Stats::ike_sas_established`, not in time:
/// two SAs' messages may be handled at the same instant (always so on a virtual clock), and
/// the counter only grows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lineage {
    pub(crate) initial_contact: Option<ContactBy>,
    /// The counter when this SA's IKE_SA_INIT was sent or received.
    pub(crate) born: u64,
    /// The counter right after this SA was authenticated.
    pub(crate) authenticated: Option<u64>,
}

impl Lineage {
    /// A new SA's, about to send or answer IKE_SA_INIT.
    pub(crate) fn new(ctx: &Ctx<'_>) -> Self {
        Self {
            initial_contact: None,
            born: ctx.stats.ike_sas_established,
            authenticated: None,
        }
    }

    /// An SA adopted from a previous process: older than anything this one starts.
    pub(crate) fn adopted() -> Self {
        Self {
            initial_contact: None,
            born: 0,
            authenticated: Some(0),
        }
    }

    /// Marks the SA authenticated; counts it in the endpoint's statistics.
    pub(crate) fn authenticate(&mut self, ctx: &mut Ctx<'_>) {
        ctx.stats.ike_sas_established += 1;
        self.authenticated = Some(ctx.stats.ike_sas_established);
    }
}

/// State-independent data of an IKE SA.
pub(crate) struct Common {
    pub(crate) peer: Arc<PeerConfig>,
    pub(crate) session: SessionId,
    pub(crate) spi_i: u64,
    pub(crate) spi_r: u64,
    /// We are the original initiator (RFC 7296 §2.2: sets the I flag).
    pub(crate) initiator: bool,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// A NAT in front of us (we send keepalives).
    pub(crate) nat_local: bool,
    /// A NAT in front of the peer.
    pub(crate) nat_remote: bool,
    /// The peer sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 §2.3).
    pub(crate) frag: bool,
    /// Both sides sent MOBIKE_SUPPORTED in IKE_AUTH (RFC 4555 §3.1).
    pub(crate) mobike: bool,
    /// We were the original initiator when MOBIKE was negotiated: only that side sends
    /// UPDATE_SA_ADDRESSES (RFC 4555 §3.4, the initiator decides); kept across IKE rekeys,
    /// which may change who holds the I flag.
    pub(crate) mobike_initiator: bool,
    /// Boxed: the keys and ciphers are a few hundred bytes, and an `IkeSa` is moved whole
    /// into the endpoint's table (and by every rehash of it).
    pub(crate) keys: Option<Box<SaKeys>>,
    pub(crate) peer_id: Option<Identity>,
    /// Issuers and serials of the peer's certificate path, when it authenticated with a
    /// certificate: checked again when new CRLs arrive ([`crate::cert::TrustAnchors::revoked`]).
    pub(crate) peer_serials: Option<crate::cert::PathSerials>,
    /// Message ID of our next request.
    pub(crate) next_req: u32,
    pub(crate) outstanding: Option<Outstanding>,
    /// Message ID we expect in the peer's next request.
    pub(crate) next_peer_req: u32,
    /// Our last response, replayed on a retransmitted request (RFC 7296 §2.1).
    pub(crate) cached: Option<(u32, Vec<Vec<u8>>)>,
    reassembly: Option<Reassembly>,
    pub(crate) last_heard: Instant,
    /// Retransmission, half-open, IKE rekey, liveness, NAT keepalive and linger deadlines.
    pub(crate) timers: TimerTable,
    pub(crate) closed: bool,
    /// Where the request being answered came from (RFC 7296 §2.11: responses go back to the
    /// address and port the request came from).
    pub(crate) reply_to: Option<(SocketAddr, SocketAddr)>,
    /// Both ends announced INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9242 §3.1): the IntAuth
    /// chains of the IKE_INTERMEDIATE messages so far, folded into IKE_AUTH's AUTH (§3.3.2).
    /// Dropped once the SA is authenticated.
    pub(crate) int_auth: Option<intermediate::IntAuth>,
    /// The responder's receiving cipher before the last IKE_INTERMEDIATE key update (RFC
    /// 9370 §2.2.2): a retransmission of that exchange's request is protected with it and
    /// still gets the cached response.
    pub(crate) prev_recv: Option<SkCipher>,
    pub(crate) lineage: Lineage,
}

impl Common {
    pub(crate) fn local_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    fn header(&self, exchange: ExchangeType, response: bool, id: u32) -> Header {
        Header::new(
            self.spi_i,
            self.spi_r,
            exchange,
            self.initiator,
            response,
            id,
        )
    }

    fn transmit(&self, ctx: &mut Ctx<'_>, packets: &[Vec<u8>]) {
        self.transmit_to(ctx, (self.local, self.remote), packets);
    }

    fn transmit_to(
        &self,
        ctx: &mut Ctx<'_>,
        (local, remote): (SocketAddr, SocketAddr),
        packets: &[Vec<u8>],
    ) {
        for p in packets {
            ctx.out.push_back(Output::Transmit(Transmit {
                local,
                remote,
                bytes: p.clone(),
            }));
        }
    }

    /// Sends an unprotected IKE_SA_INIT request (message ID 0) and arms retransmission.
    pub(crate) fn send_plain_request(&mut self, ctx: &mut Ctx<'_>, msg: &Message) -> Vec<u8> {
        let bytes = msg.encode();
        self.arm(ctx, 0, vec![bytes.clone()], Schedule::Backoff);
        bytes
    }

    /// Protects and sends a request with the next message ID.
    pub(crate) fn send_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        self.send_request_with(ctx, exchange, payloads, Schedule::Backoff)
    }

    /// [`Self::send_request`] with a chosen retransmission schedule.
    pub(crate) fn send_request_with(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        payloads: &[Payload],
        schedule: Schedule,
    ) -> Result<(), Error> {
        let id = self.next_req;
        let packets = self.protect(ctx, exchange, false, id, payloads)?;
        self.note_int_auth(exchange, false, id, payloads);
        self.arm(ctx, id, packets, schedule);
        Ok(())
    }

    fn arm(&mut self, ctx: &mut Ctx<'_>, id: u32, packets: Vec<Vec<u8>>, schedule: Schedule) {
        self.transmit(ctx, &packets);
        self.outstanding = Some(Outstanding {
            id,
            packets,
            sends: 1,
            schedule,
        });
        let (_, wait) = schedule.after(&ctx.config.retransmit, 1);
        self.timers.set(Timer::Retransmit, later(ctx.now, wait));
    }

    /// Protects and sends a response, caching it for retransmitted requests.
    pub(crate) fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        id: u32,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        let packets = self.protect(ctx, exchange, true, id, payloads)?;
        self.note_int_auth(exchange, true, id, payloads);
        let to = self.reply_to.unwrap_or((self.local, self.remote));
        self.transmit_to(ctx, to, &packets);
        self.cached = Some((id, packets));
        Ok(())
    }

    /// RFC 7296 §3.14 / RFC 7383 §2.5: wraps `payloads` in SK, or in SKF fragments when the
    /// message would exceed the configured size and the peer supports fragmentation.
    fn protect(
        &self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        response: bool,
        id: u32,
        payloads: &[Payload],
    ) -> Result<Vec<Vec<u8>>, Error> {
        let keys = self.keys.as_ref().ok_or(Error::Local("no SK keys"))?;
        let first = payloads.first().map_or(PayloadType::None, Payload::kind);
        let mut header = self.header(exchange, response, id);
        // The inner payloads are encoded straight into the message, after the IKE header, the
        // SK header and room for the IV, and sealed there: one buffer, no copy of the
        // plaintext. The lengths (part of the AAD) are written once the chain's is known.
        let aad_len = Header::LEN + 4;
        let start = aad_len + keys.send.iv_len();
        let mut out = Vec::with_capacity(crate::wire::ENCODE_CAPACITY);
        header.next = PayloadType::Sk;
        crate::wire::Codec::encode(&header, &mut out);
        out.extend_from_slice(&[first.to_raw(), 0, 0, 0]);
        out.resize(start, 0);
        encode_chain(payloads, &mut out);
        let whole = aad_len + keys.send.sealed_len(out.len() - start);
        let limit = ctx.config.fragment_size;
        if whole <= limit || !self.frag || exchange == ExchangeType::IkeSaInit {
            out[24..28].copy_from_slice(&(whole as u32).to_be_bytes());
            out[Header::LEN + 2..aad_len]
                .copy_from_slice(&((whole - Header::LEN) as u16).to_be_bytes());
            keys.send.seal_in_place(ctx.rng, &mut out, aad_len);
            return Ok(vec![out]);
        }
        let inner = &out[start..];
        // Room for inner bytes per fragment: the fixed parts, then the cipher's overhead
        // (IV, ICV, pad length and at most one block of padding).
        let overhead = keys.send.sealed_len(limit) - limit + 16;
        let room = limit
            .saturating_sub(Header::LEN + 4 + Skf::FIXED + overhead)
            .max(64);
        let chunks: Vec<&[u8]> = inner.chunks(room).collect();
        let total = chunks.len() as u16;
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let number = i as u16 + 1;
            let len = Header::LEN + 4 + Skf::FIXED + keys.send.sealed_len(chunk.len());
            header.next = PayloadType::Skf;
            header.length = len as u32;
            let mut pkt = crate::wire::Codec::to_vec(&header);
            let next = if number == 1 {
                first
            } else {
                PayloadType::None
            };
            pkt.extend_from_slice(&[next.to_raw(), 0]);
            pkt.extend_from_slice(&((len - Header::LEN) as u16).to_be_bytes());
            pkt.extend_from_slice(&number.to_be_bytes());
            pkt.extend_from_slice(&total.to_be_bytes());
            keys.send.seal_append(ctx.rng, &mut pkt, chunk);
            out.push(pkt);
        }
        Ok(out)
    }

    /// RFC 9242 §3.3.2: an IKE_INTERMEDIATE message we send joins its sender's IntAuth
    /// chain, computed over the message as if unfragmented (no unencrypted payloads: we send
    /// none in this exchange).
    fn note_int_auth(
        &mut self,
        exchange: ExchangeType,
        response: bool,
        id: u32,
        payloads: &[Payload],
    ) {
        if exchange != ExchangeType::IkeIntermediate {
            return;
        }
        let header = self.header(exchange, response, id);
        let (Some(ia), Some(keys)) = (self.int_auth.as_mut(), self.keys.as_ref()) else {
            return;
        };
        let mut inner = Vec::new();
        encode_chain(payloads, &mut inner);
        let first = payloads.first().map_or(PayloadType::None, Payload::kind);
        ia.add(keys, self.initiator, &header, &[], first, &inner);
    }

    /// The receiving side of [`Self::note_int_auth`], over the decrypted (and reassembled)
    /// message.
    fn note_peer_int_auth(
        &mut self,
        header: &Header,
        unencrypted: &[u8],
        first: PayloadType,
        plain: &[u8],
    ) {
        if header.exchange != ExchangeType::IkeIntermediate {
            return;
        }
        let (Some(ia), Some(keys)) = (self.int_auth.as_mut(), self.keys.as_ref()) else {
            return;
        };
        ia.add(keys, !self.initiator, header, unencrypted, first, plain);
    }

    /// Authenticates and decrypts a protected message. `Ok(None)` means a fragment was stored
    /// and the message is not complete yet.
    fn unprotect(&mut self, raw: &[u8], msg: &Message) -> Result<Option<Vec<Payload>>, Error> {
        let keys = self.keys.as_ref().ok_or(PeerMisbehaved::NotEncrypted)?;
        match msg.payloads.last() {
            Some(Payload::Sk(Sk { first, body })) => {
                let aad = &raw[..raw.len() - body.len()];
                let pt = keys
                    .recv
                    .open(aad, body)
                    .map_err(|_| PeerMisbehaved::IntegrityCheckFailed)?;
                let inner = decode_chain(*first, pt.expose())?;
                // The unencrypted payloads lie between the header and the SK header; RFC 9242
                // §3.3 folds them and the decrypted chain into IntAuth.
                let unencrypted = raw
                    .get(Header::LEN..aad.len().saturating_sub(4))
                    .unwrap_or(&[]);
                self.note_peer_int_auth(&msg.header, unencrypted, *first, pt.expose());
                // Unencrypted payloads before SK are rare (§3.14 allows them); without any the
                // inner chain is the message.
                let outer = &msg.payloads[..msg.payloads.len() - 1];
                if outer.is_empty() {
                    return Ok(Some(inner));
                }
                let mut out = Vec::with_capacity(outer.len() + inner.len());
                out.extend_from_slice(outer);
                out.extend(inner);
                Ok(Some(out))
            }
            Some(Payload::Skf(skf)) => {
                let aad = &raw[..raw.len() - skf.body.len()];
                let pt = keys
                    .recv
                    .open(aad, &skf.body)
                    .map_err(|_| PeerMisbehaved::IntegrityCheckFailed)?;
                self.reassemble(&msg.header, skf, pt.expose())
            }
            _ => Err(PeerMisbehaved::NotEncrypted.into()),
        }
    }

    /// RFC 7383 §2.6: collect authenticated fragments of one message, bounded in count and
    /// size; a fragment of a newer message discards an older incomplete set.
    fn reassemble(
        &mut self,
        header: &Header,
        skf: &Skf,
        pt: &[u8],
    ) -> Result<Option<Vec<Payload>>, Error> {
        let id = header.message_id;
        if skf.total > MAX_FRAGMENTS {
            return Err(PeerMisbehaved::FragmentOverflow.into());
        }
        let fresh = match &self.reassembly {
            Some(r) => r.id != id || r.parts.len() != usize::from(skf.total),
            None => true,
        };
        if fresh {
            self.reassembly = Some(Reassembly {
                id,
                first: PayloadType::None,
                parts: vec![None; usize::from(skf.total)],
                bytes: 0,
            });
        }
        let Some(r) = self.reassembly.as_mut() else {
            return Ok(None);
        };
        let slot = usize::from(skf.number - 1);
        if r.parts[slot].is_none() {
            r.bytes += pt.len();
            if r.bytes > MAX_REASSEMBLED {
                self.reassembly = None;
                return Err(PeerMisbehaved::FragmentOverflow.into());
            }
            r.parts[slot] = Some(pt.to_vec());
            if skf.number == 1 {
                r.first = skf.first;
            }
        }
        if r.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let Some(r) = self.reassembly.take() else {
            return Ok(None);
        };
        let mut all = zeroize::Zeroizing::new(Vec::with_capacity(r.bytes));
        for p in r.parts.into_iter().flatten() {
            all.extend_from_slice(&p);
        }
        let payloads = decode_chain(r.first, &all)?;
        // RFC 9242 §3.3.2: IntAuth is computed as if the message had not been fragmented.
        self.note_peer_int_auth(header, &[], r.first, &all);
        Ok(Some(payloads))
    }

    /// Sends an error notify as the response to request `id` (RFC 7296 §2.21).
    fn answer_error(&mut self, ctx: &mut Ctx<'_>, exchange: ExchangeType, id: u32, e: &Error) {
        if let Reaction::Notify(ty, data) = e.reaction() {
            let p = [Payload::Notify(Notify::new(ty, data))];
            if let Err(err) = self.send_response(ctx, exchange, id, &p) {
                tracing::debug!(error = %err, "cannot answer with an error notify");
            }
        }
    }

    /// Message-ID bookkeeping after a request was answered (RFC 7296 §2.3).
    fn request_done(&mut self) {
        self.clear_outstanding();
        self.next_req = self.next_req.wrapping_add(1);
    }

    /// No request in flight any more: nothing to retransmit.
    pub(crate) fn clear_outstanding(&mut self) {
        self.outstanding = None;
        self.timers.stop(Timer::Retransmit);
    }

    /// RFC 7296 §2.23: a host that is not behind a NAT, talking to one that is, updates the
    /// peer's address and port from validated packets; a host behind a NAT SHOULD NOT (one
    /// packet could then break its connection).
    pub(crate) fn follows_nat_mapping(&self) -> bool {
        self.nat_remote && !self.nat_local
    }

    /// The peer moved from `old` to `self.remote` (same address, new port): reports the move
    /// (when there was one) and asks for the UDP encapsulation of every Child SA in
    /// `children` to follow.
    pub(crate) fn update_encap<'c>(
        &self,
        ctx: &mut Ctx<'_>,
        children: impl IntoIterator<Item = &'c child::Child>,
        old: Option<SocketAddr>,
    ) {
        if let Some(old) = old {
            tracing::info!(%old, new = %self.remote, "peer's NAT mapping changed");
            ctx.event(Event::PeerMoved {
                session: self.session,
                conn: self.peer.id,
                old,
                new: self.remote,
            });
        }
        for ch in children {
            ctx.out.push_back(Output::UpdateChildSaEncap(
                crate::output::ChildSaEncapUpdate {
                    child: ch.id,
                    session: self.session,
                    conn: self.peer.id,
                    local: self.local,
                    remote: self.remote,
                    inbound_spi: ch.spi_in,
                    outbound_spi: ch.spi_out,
                    encap: crate::output::UdpEncap {
                        local_port: self.local.port(),
                        remote_port: self.remote.port(),
                    },
                },
            ));
        }
    }

    /// The IKE SA is over: tells the agent why (`IkeSaDown`) and stops everything it still had
    /// in flight; the endpoint drops it.
    pub(crate) fn go_down(&mut self, ctx: &mut Ctx<'_>, reason: DownReason) {
        ctx.event(Event::IkeSaDown {
            session: self.session,
            conn: self.peer.id,
            reason,
        });
        self.closed = true;
        self.clear_outstanding();
    }
}

/// One IKE SA.
pub(crate) struct IkeSa {
    pub(crate) c: Common,
    pub(crate) state: State,
}

impl IkeSa {
    pub(crate) fn conn(&self) -> ConnId {
        self.c.peer.id
    }

    pub(crate) fn session(&self) -> SessionId {
        self.c.session
    }

    pub(crate) fn peer_id(&self) -> Option<&Identity> {
        self.c.peer_id.as_ref()
    }

    pub(crate) fn local_spi(&self) -> u64 {
        self.c.local_spi()
    }

    /// Why this established SA's peer certificate is revoked under `config`'s CRLs for its
    /// connection (a reload brought new ones), if it is. An SA being rekeyed away or deleted
    /// is left to finish; one of a connection no longer configured is the agent's to end.
    pub(crate) fn revoked_under(&self, config: &EndpointConfig) -> Option<crate::cert::CertError> {
        if !self.is_established() || self.is_deleting() || self.is_closed() {
            return None;
        }
        let serials = self.c.peer_serials.as_ref()?;
        let peer = config.peers.iter().find(|p| p.id == self.conn())?;
        match &peer.auth {
            crate::config::AuthConfig::Certificate(c) => c.trust_anchors.revoked(serials),
            _ => None,
        }
    }

    pub(crate) fn info(&self) -> crate::output::IkeSaInfo {
        let none: &[child::Child] = &[];
        let (state, kids) = match &self.state {
            State::ExpectSaInitResponse(_) => ("ExpectSaInitResponse", none),
            State::ExpectAuthResponse(_) => ("ExpectAuthResponse", none),
            State::ExpectAuthRequest(_) => ("ExpectAuthRequest", none),
            State::ExpectIntermediateResponse(_) => ("ExpectIntermediateResponse", none),
            State::ExpectIntermediateRequest(_) => ("ExpectIntermediateRequest", none),
            State::Established(e) => (
                if e.rekeyed { "Rekeyed" } else { "Established" },
                e.children.as_slice(),
            ),
            State::Closed => ("Closed", none),
        };
        let children = kids.iter().map(|c| (c.id, c.spi_in, c.spi_out)).collect();
        let child_sas = kids
            .iter()
            .map(|c| crate::output::ChildSaInfo {
                id: c.id,
                spi_in: c.spi_in,
                spi_out: c.spi_out,
                local_ts: c.local_ts.clone(),
                remote_ts: c.remote_ts.clone(),
                mode: c.mode,
                pfs: c.pfs,
                pfs_addke: c.pfs_addke,
                live: c.is_live(),
            })
            .collect();
        let (auth_sign, auth_verify) = auth_names(&self.c.peer.auth);
        crate::output::IkeSaInfo {
            session: self.c.session,
            conn: self.c.peer.id,
            state,
            initiator: self.c.initiator,
            spi_i: self.c.spi_i,
            spi_r: self.c.spi_r,
            local: self.c.local,
            remote: self.c.remote,
            peer_id: self.c.peer_id.clone(),
            nat: self.c.nat_local || self.c.nat_remote,
            children,
            suite: self.c.keys.as_ref().map(|k| k.suite),
            local_id: self.c.peer.local_identity_at(self.c.local.ip()),
            auth_sign,
            auth_verify,
            lifetime: self.c.peer.ike_lifetime.lifetime,
            child_sas,
        }
    }

    /// MOBIKE negotiated with us as the side that sends address updates.
    pub(crate) fn can_move(&self) -> bool {
        self.c.mobike && self.c.mobike_initiator
    }

    /// Established, and our DELETE of it is queued or in flight: it only waits for the
    /// peer's answer (or the retransmissions to run out, when the peer or our old address is
    /// gone), so it neither blocks a new IKE SA of its connection nor counts as a contact.
    pub(crate) fn is_deleting(&self) -> bool {
        match &self.state {
            State::Established(e) => {
                matches!(
                    e.pending,
                    Some(established::Pending::Informational(
                        established::Informational::DeleteIke
                    ))
                ) || e.queue.contains(&established::Queued::DeleteIke)
            }
            _ => false,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.c.closed || matches!(self.state, State::Closed)
    }

    /// IKE_SA_INIT or IKE_AUTH under way, on either side.
    pub(crate) fn is_handshaking(&self) -> bool {
        matches!(
            self.state,
            State::ExpectSaInitResponse(_)
                | State::ExpectIntermediateResponse(_)
                | State::ExpectAuthResponse(_)
                | State::ExpectIntermediateRequest(_)
                | State::ExpectAuthRequest(_)
        ) && !self.c.closed
    }

    pub(crate) fn is_half_open(&self) -> bool {
        matches!(
            self.state,
            State::ExpectIntermediateRequest(_) | State::ExpectAuthRequest(_)
        )
    }

    pub(crate) fn is_established(&self) -> bool {
        matches!(&self.state, State::Established(e) if !e.rekeyed)
    }

    /// (our identity, the peer's) of an established SA.
    pub(crate) fn contact(&self) -> Option<(Identity, &Identity)> {
        let peer = self
            .c
            .peer_id
            .as_ref()
            .filter(|_| self.is_established() && !self.is_deleting())?;
        Some((self.c.peer.local_identity_at(self.c.local.ip()), peer))
    }

    /// (our identity, the one the peer must prove) of an initiator whose IKE_AUTH request
    /// is out, when the configuration names that identity exactly. That request may carry
    /// INITIAL_CONTACT; another SA between the same identities that sent one too would make
    /// the peer delete this one as soon as both are up (RFC 7296 §2.4), so such an SA counts
    /// as contact already made.
    pub(crate) fn contact_in_flight(&self) -> Option<(Identity, &Identity)> {
        if !matches!(self.state, State::ExpectAuthResponse(_)) {
            return None;
        }
        let crate::config::IdMatch::Exact(peer) = &self.c.peer.remote_id else {
            return None;
        };
        Some((self.c.peer.local_identity_at(self.c.local.ip()), peer))
    }

    /// An initiator still waiting for its IKE_SA_INIT (or IKE_INTERMEDIATE) response.
    pub(crate) fn awaits_init_response(&self) -> bool {
        matches!(
            self.state,
            State::ExpectSaInitResponse(_) | State::ExpectIntermediateResponse(_)
        )
    }

    /// Established for connection `conn` with the peer at `ip`.
    pub(crate) fn up_with(&self, conn: ConnId, ip: std::net::IpAddr) -> bool {
        self.is_established()
            && !self.is_deleting()
            && self.c.peer.id == conn
            && self.c.remote.ip() == ip
    }

    /// A responder SA the peer at `ip` has started and not yet authenticated.
    pub(crate) fn peer_starting_from(&self, ip: std::net::IpAddr) -> bool {
        !self.c.initiator && self.c.peer_id.is_none() && !self.c.closed && self.c.remote.ip() == ip
    }

    /// (our identity, the one the peer must prove) of an initiator still waiting for its
    /// IKE_SA_INIT response, when the configuration names that identity exactly: with a
    /// wildcard the peer is unknown until IKE_AUTH, and INITIAL_CONTACT is sent as usual.
    pub(crate) fn expected_contact(&self) -> Option<(Identity, &Identity)> {
        if !self.awaits_init_response() {
            return None;
        }
        let crate::config::IdMatch::Exact(peer) = &self.c.peer.remote_id else {
            return None;
        };
        Some((self.c.peer.local_identity_at(self.c.local.ip()), peer))
    }

    /// One of its Child SAs has inbound SPI `spi`.
    pub(crate) fn has_inbound_spi(&self, spi: u32) -> bool {
        match &self.state {
            State::Established(e) => e.children.iter().any(|c| c.spi_in == spi),
            _ => false,
        }
    }

    /// The ids of this SA's Child SAs (none before it is established).
    pub(crate) fn child_ids(&self) -> impl Iterator<Item = ChildSaId> + '_ {
        let children = match &self.state {
            State::Established(e) => e.children.as_slice(),
            _ => &[],
        };
        children.iter().map(|c| c.id)
    }

    pub(crate) fn has_child(&self, child: ChildSaId) -> bool {
        match &self.state {
            State::Established(e) => e.children.iter().any(|c| c.id == child),
            _ => false,
        }
    }

    /// The earliest deadline of this SA.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let children = match &self.state {
            State::Established(e) => e.children_next_timeout(),
            _ => None,
        };
        [self.c.timers.next_timeout(), children]
            .into_iter()
            .flatten()
            .min()
    }

    /// Re-derives the deadlines that depend on several things at once, after every input:
    /// the liveness check ([`Timer::Liveness`]) needs an established, not rekeyed SA with an
    /// idle window, and runs from when we last heard from the peer; a rekeyed SA does not
    /// rekey again.
    pub(crate) fn sync_timers(&mut self) {
        let (live, rekeyed) = match &self.state {
            State::Established(e) => (!e.rekeyed, e.rekeyed),
            _ => (false, false),
        };
        match self.c.peer.dpd {
            Some(d) if live && self.c.outstanding.is_none() => {
                let at = later(self.c.last_heard, d.interval);
                self.c.timers.set(Timer::Liveness, at);
            }
            _ => self.c.timers.stop(Timer::Liveness),
        }
        if rekeyed {
            self.c.timers.stop(Timer::IkeRekey);
        }
    }

    /// An IKE_SA_INIT request with this SA's SPIi from the peer's address arrived again.
    /// RFC 7296 §2.1: a retransmission is the identical request, so only a datagram equal to
    /// the one that created this half-open SA gets the cached response again. Anything else
    /// (a forged header, a garbage or mutated body) gets nothing: our response is several
    /// times larger, and a spoofed source would make us an amplifier toward it. The SA keeps
    /// the whole request anyway (RealMessage1 for AUTH, §2.15), so the comparison is exact
    /// rather than by hash. After IKE_AUTH the cached response is another one; nothing is sent.
    pub(crate) fn retransmit_sa_init_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &[u8],
    ) -> Result<(), Error> {
        let original = match &self.state {
            State::ExpectAuthRequest(st) => st.is_original_request(req),
            State::ExpectIntermediateRequest(st) => st.is_original_request(req),
            _ => return Ok(()),
        };
        if !original {
            return Err(PeerMisbehaved::AlteredRetransmission.into());
        }
        if let Some((0, packets)) = &self.c.cached {
            let packets = packets.clone();
            self.c.transmit(ctx, &packets);
        }
        Ok(())
    }

    /// Handles a datagram addressed to this SA.
    pub(crate) fn handle_datagram(
        &mut self,
        ctx: &mut Ctx<'_>,
        dgram: Datagram<'_>,
        header: &Header,
    ) -> Result<(), Error> {
        if self.is_closed() {
            return Err(PeerMisbehaved::UnknownIkeSpi.into());
        }
        let msg = Message::decode(dgram.bytes)?;
        if header.is_response() {
            let Some(out) = &self.c.outstanding else {
                return Err(PeerMisbehaved::UnsolicitedResponse.into());
            };
            if out.id != header.message_id {
                return Err(PeerMisbehaved::UnexpectedMessageId(header.message_id).into());
            }
            // The I flag of a response comes from the original responder.
            if header.is_initiator() == self.c.initiator {
                return Err(PeerMisbehaved::UnsolicitedResponse.into());
            }
            if header.exchange == ExchangeType::IkeSaInit {
                let raw = dgram.bytes;
                return self.dispatch(ctx, Input::SaInitResponse { raw, msg });
            }
            let Some(payloads) = self.c.unprotect(dgram.bytes, &msg)? else {
                return Ok(());
            };
            self.c.last_heard = ctx.now;
            let exchange = header.exchange;
            return self.dispatch(ctx, Input::Response { exchange, payloads });
        }
        // A request.
        if header.is_initiator() == self.c.initiator {
            return Err(PeerMisbehaved::UnsolicitedResponse.into());
        }
        let id = header.message_id;
        if let Some((cid, packets)) = &self.c.cached {
            if *cid == id && id.wrapping_add(1) == self.c.next_peer_req {
                // RFC 7296 §2.1: a retransmitted request gets the cached response, once it is
                // authentic (so we are no amplifier for forged copies). For fragments only the
                // first one triggers the replay (RFC 7383 §2.6.1).
                let packets = packets.clone();
                let first_fragment = match msg.payloads.last() {
                    Some(Payload::Skf(s)) => s.number == 1,
                    _ => true,
                };
                let keys = self.c.keys.as_ref().ok_or(PeerMisbehaved::NotEncrypted)?;
                let body = match msg.payloads.last() {
                    Some(Payload::Sk(s)) => &s.body,
                    Some(Payload::Skf(s)) => &s.body,
                    _ => return Err(PeerMisbehaved::NotEncrypted.into()),
                };
                let aad = &dgram.bytes[..dgram.bytes.len() - body.len()];
                // After an IKE_INTERMEDIATE key update the repeated request still carries the
                // keys it was first sent with.
                let authentic = keys.recv.open(aad, body).is_ok()
                    || self
                        .c
                        .prev_recv
                        .as_ref()
                        .is_some_and(|prev| prev.open(aad, body).is_ok());
                if !authentic {
                    return Err(PeerMisbehaved::IntegrityCheckFailed.into());
                }
                if first_fragment {
                    ctx.stats.retransmits += 1;
                    self.c
                        .transmit_to(ctx, (dgram.local, dgram.remote), &packets);
                }
                return Ok(());
            }
        }
        if id != self.c.next_peer_req {
            return Err(PeerMisbehaved::UnexpectedMessageId(id).into());
        }
        let Some(payloads) = self.c.unprotect(dgram.bytes, &msg)? else {
            return Ok(());
        };
        self.c.last_heard = ctx.now;
        // RFC 7296 §2.23: with a NAT in the path, follow the peer's latest authenticated
        // address (its mapping may change).
        let floated = dgram.remote.ip() == self.c.remote.ip()
            && dgram.local.ip() == self.c.local.ip()
            && dgram.remote.port() == NATT_PORT
            && dgram.local.port() == NATT_PORT;
        if ((self.c.nat_remote || self.c.nat_local) && self.c.remote != dgram.remote) || floated {
            // Also when the peer moved to port 4500 without a NAT (strongSwan does so in
            // IKE_AUTH when MOBIKE is enabled): our later requests follow it there.
            let moved = self.c.remote;
            self.c.remote = dgram.remote;
            self.c.local = dgram.local;
            // Its Child SAs' ESP-in-UDP follows too, or our ESP keeps going to the mapping
            // the NAT dropped until the kernel reports a mapping of its own (which needs ESP
            // from the peer first).
            if let State::Established(e) = &self.state {
                if self.c.follows_nat_mapping() && moved.ip() == dgram.remote.ip() {
                    self.c.update_encap(ctx, &e.children, Some(moved));
                }
            }
        }
        self.c.next_peer_req = id.wrapping_add(1);
        self.c.reply_to = Some((dgram.local, dgram.remote));
        let exchange = header.exchange;
        let res = self.dispatch(
            ctx,
            Input::Request {
                exchange,
                id,
                payloads,
            },
        );
        self.c.reply_to = None;
        res
    }

    /// True when established and without live Child SAs.
    pub(crate) fn is_childless(&self) -> bool {
        match &self.state {
            State::Established(e) => !e.rekeyed && e.children.iter().all(|c| !c.is_live()),
            _ => false,
        }
    }

    /// The one dispatch point of the state machine: [`state::step`] takes the state by value
    /// and returns the next one. A close requested while handling (a DELETE answered, a
    /// linger ended) ends in [`State::Closed`] here, whichever state the handler returned.
    pub(crate) fn dispatch(&mut self, ctx: &mut Ctx<'_>, input: Input<'_>) -> Result<(), Error> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let (next, res) = state::step(state, &mut self.c, ctx, input);
        self.state = if self.c.closed { State::Closed } else { next };
        self.sync_timers();
        res
    }

    /// Runs due timers.
    pub(crate) fn on_timeout(&mut self, ctx: &mut Ctx<'_>) {
        // Timers raise no error: what they find goes out as events and messages.
        let _ = self.dispatch(ctx, Input::Timeout);
    }

    /// INITIAL_CONTACT from a newer SA of the same peer: drop this one without messages.
    pub(crate) fn drop_silently(&mut self, ctx: &mut Ctx<'_>) {
        let _ = self.dispatch(ctx, Input::DropSilently);
    }

    /// Applies a command (from the application or another SA); commands raise no error.
    pub(crate) fn command(&mut self, ctx: &mut Ctx<'_>, cmd: SaCommand) {
        let _ = self.dispatch(ctx, Input::Command(cmd));
    }
}

/// The error notify types (if any) among `payloads`.
pub(crate) fn error_notify(payloads: &[Payload]) -> Option<crate::wire::enums::NotifyType> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.ty.is_error() => Some(n.ty),
        _ => None,
    })
}

/// The payloads of one message, by kind. Where a peer repeats a kind the last one counts, as
/// every exchange here takes at most one of each (RFC 7296 §1.2–§1.3).
#[derive(Default)]
pub(crate) struct Found<'a> {
    pub(crate) sa: Option<&'a crate::wire::Sa>,
    pub(crate) ke: Option<&'a crate::wire::Ke>,
    pub(crate) nonce: Option<&'a [u8]>,
    pub(crate) idi: Option<&'a Identity>,
    pub(crate) idr: Option<&'a Identity>,
    pub(crate) auth: Option<&'a crate::wire::Auth>,
    pub(crate) tsi: Option<&'a [crate::wire::TrafficSelector]>,
    pub(crate) tsr: Option<&'a [crate::wire::TrafficSelector]>,
}

impl<'a> Found<'a> {
    pub(crate) fn of(payloads: &'a [Payload]) -> Self {
        let mut f = Self::default();
        for p in payloads {
            match p {
                Payload::Sa(s) => f.sa = Some(s),
                Payload::Ke(k) => f.ke = Some(k),
                Payload::Nonce(n) => f.nonce = Some(&n.0),
                Payload::IdI(i) => f.idi = Some(i),
                Payload::IdR(i) => f.idr = Some(i),
                Payload::Auth(a) => f.auth = Some(a),
                Payload::TsI(t) => f.tsi = Some(t),
                Payload::TsR(t) => f.tsr = Some(t),
                _ => {}
            }
        }
        f
    }
}

/// A payload the exchange requires; its absence is `MissingPayload(name)` (§2.21: INVALID_SYNTAX).
pub(crate) fn need<T>(found: Option<T>, name: &'static str) -> Result<T, PeerMisbehaved> {
    found.ok_or(PeerMisbehaved::MissingPayload(name))
}
