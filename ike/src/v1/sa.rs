//! One ISAKMP SA: main mode (RFC 2409 §5) as states named for what they wait for, each
//! consumed by its `handle`, then the established SA that runs quick modes (§5.5) and
//! informational exchanges (§5.7, RFC 3706 DPD) keyed by message ID.
//!
//! ```text
//! initiator: MM1 -> ExpectMainMode2 -> MM3 -> ExpectMainMode4 -> MM5 -> ExpectMainMode6 -> Established
//! responder: MM1 -> MM2, ExpectMainMode3 -> MM4, ExpectMainMode5 -> MM6, Established
//! aggressive: AM1 -> ExpectAggressive2 -> AM3, Established   (child module `aggressive`)
//!             AM1 -> AM2, ExpectAggressive3 -> Established
//! quick mode: QM1 -> ExpectQuickMode2 -> QM3 [-> ExpectConnected when the responder commits]
//!             QM1 -> QM2, ExpectQuickMode3 -> installed
//! ```
//!
//! Both ends retransmit (RFC 2408 §5 leaves it to the sender of a message that expects an
//! answer): the sender of MM1, MM3, MM5, QM1 on a timer, the quick mode responder its QM2
//! until QM3 arrives. A duplicate of the peer's last message is answered by resending our
//! answer, byte for byte, never by processing it again (its IV and nonces are spent).

use std::collections::HashMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use rand_core::RngCore;

use crate::config::ChildConfigIndex;
use crate::crypto::KeyExchange;
use crate::crypto::Rng;
use crate::output::ChildSaId;
use crate::output::ChildSaInstall;
use crate::output::ChildSaRemove;
use crate::output::DownReason;
use crate::output::EspKeys;
use crate::output::Event;
use crate::output::Halves;
use crate::output::Output;
use crate::output::SessionId;
use crate::output::Stats;
use crate::output::Transmit;
use crate::secret::Secret;
use crate::ts;
use crate::v1::config::V1Config;
use crate::v1::config::V1Peer;
use crate::v1::error::Incompatible;
use crate::v1::error::Misbehaved;
use crate::v1::error::Reaction;
use crate::v1::error::V1Error;
use crate::v1::error::notify_type;
use crate::v1::keys;
use crate::v1::keys::Cbc;
use crate::v1::proposal;
use crate::v1::proposal::EspPolicy;
use crate::v1::proposal::EspSuite;
use crate::v1::proposal::Phase1Suite;
use crate::v1::wire::Body;
use crate::v1::wire::Chain;
use crate::v1::wire::DOI_IPSEC;
use crate::v1::wire::Delete;
use crate::v1::wire::ExchangeType;
use crate::v1::wire::FLAG_COMMIT;
use crate::v1::wire::FLAG_ENCRYPTION;
use crate::v1::wire::Header;
use crate::v1::wire::Id;
use crate::v1::wire::Message;
use crate::v1::wire::Notify;
use crate::v1::wire::PROTO_IPSEC_ESP;
use crate::v1::wire::PROTO_ISAKMP;
use crate::v1::wire::Payload;
use crate::v1::wire::Sa;
use crate::v1::wire::decode_chain;
use crate::v1::wire::encode_chain;
use crate::v1::wire::encode_message;
use crate::v1::wire::finish;
use crate::v1::wire::payload_type;
use crate::wire::Identity;
use crate::wire::TrafficSelector;

// Child modules, so that aggressive mode and the phase 1 proofs share main mode's private
// helpers.
#[path = "aggressive.rs"]
pub(crate) mod aggressive;
#[path = "auth.rs"]
mod auth;
#[path = "rekey.rs"]
pub(crate) mod rekey;
mod selectors;

use rekey::ChildRekey;

/// The DPD vendor ID (RFC 3706 §3): announcing it says we answer R-U-THERE.
pub const DPD_VENDOR_ID: [u8; 16] = [
    0xaf, 0xca, 0xd7, 0x13, 0x68, 0xa1, 0xf1, 0xc9, 0x6b, 0x86, 0x96, 0xfc, 0x77, 0x57, 0x01, 0x00,
];

/// How long a finished phase 2 exchange is remembered, so that a duplicate of its last
/// message is answered (QM2 → our QM3 again) or ignored, not taken for a new exchange:
/// longer than the peer's whole retransmission schedule (1 + 2 + 4 + 8 + 16 s by default).
const DONE_LINGER: Duration = Duration::from_secs(64);

/// Everything a handler may touch besides its own SA.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Instant,
    pub(crate) rng: &'a mut Rng,
    /// Inbound ESP SPIs, unique within the engine (crate::spis).
    pub(crate) spis: &'a mut crate::spis::Spis,
    pub(crate) out: &'a mut VecDeque<Output>,
    pub(crate) config: &'a V1Config,
    pub(crate) stats: &'a mut Stats,
    pub(crate) next_id: &'a mut u64,
    /// Other established SAs to drop silently (INITIAL-CONTACT, RFC 2407 §4.6.3.3).
    pub(crate) drop_others: &'a mut Vec<(crate::config::ConnId, Identity, u64)>,
    /// Seconds since the Unix epoch at `now`, for certificate validity; `None` refuses
    /// every certificate.
    pub(crate) unix_time: Option<u64>,
}

impl Ctx<'_> {
    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn alloc_id(&mut self) -> u64 {
        let id = *self.next_id;
        *self.next_id += 1;
        id
    }

    fn nonce(&mut self) -> Vec<u8> {
        // RFC 2409 §5: 8 to 256 octets; 32 covers every PRF we negotiate.
        let mut n = vec![0u8; 32];
        self.rng.fill_bytes(&mut n);
        n
    }
}

/// A message of ours resent until answered.
#[derive(Clone, Debug)]
struct Retrans {
    packet: Vec<u8>,
    sends: u32,
    at: Instant,
}

impl Retrans {
    fn new(ctx: &Ctx<'_>, packet: Vec<u8>) -> Self {
        Self {
            packet,
            sends: 1,
            at: crate::sa::later(ctx.now, ctx.config.retransmit.initial),
        }
    }

    /// Resends when due; false when the schedule is exhausted.
    fn fire(&mut self, c: &Common, ctx: &mut Ctx<'_>) -> bool {
        if self.sends >= ctx.config.retransmit.tries.max(1) {
            return false;
        }
        let wait = ctx
            .config
            .retransmit
            .initial
            .saturating_mul(1 << self.sends.min(16));
        self.sends += 1;
        self.at = crate::sa::later(ctx.now, wait);
        ctx.stats.retransmits += 1;
        c.send(ctx, self.packet.clone());
        true
    }
}

/// What every state shares.
pub(crate) struct Common {
    pub(crate) peer: Arc<V1Peer>,
    pub(crate) session: SessionId,
    pub(crate) initiator: bool,
    pub(crate) cky_i: u64,
    pub(crate) cky_r: u64,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// Our main mode message awaiting its answer (initiator).
    retrans: Option<Retrans>,
    /// The peer's last main mode message and our answer to it.
    last_in: Option<(Vec<u8>, Option<Vec<u8>>)>,
    /// A responder's unfinished main mode is dropped then.
    half_open_until: Option<Instant>,
    /// Main mode we initiated just completed: quick mode follows (RFC 2409 §5.5).
    pub(crate) want_child: bool,
    /// Quick modes asked for by configuration (a crypto map's ACL lines), started one at a
    /// time once the SA is established (`selectors.rs`).
    pub(crate) queued: Vec<ChildConfigIndex>,
    /// NAT traversal (RFC 3947), [`crate::v1::natt`].
    pub(crate) natt: crate::v1::natt::NatT,
    /// The peer announced IKE fragmentation ([`crate::v1::fragment`]).
    pub(crate) peer_frag: bool,
    /// Fragment ID of our next fragmented message.
    pub(crate) frag_id: std::cell::Cell<u16>,
    /// The ISAKMP SA (by our cookie) this main mode replaces: a phase 1 rekey, which sends
    /// no INITIAL-CONTACT and takes over the old SA's Child SAs (`rekey`).
    pub(crate) rekey_of: Option<u64>,
}

impl Common {
    /// Ours, as initiator: the peer's cookie and what it announces come with its answer.
    fn initiator(peer: Arc<V1Peer>, remote: SocketAddr, session: SessionId, cky_i: u64) -> Self {
        Self {
            local: peer.local,
            remote,
            peer,
            session,
            initiator: true,
            cky_i,
            cky_r: 0,
            retrans: None,
            last_in: None,
            half_open_until: None,
            want_child: false,
            queued: Vec::new(),
            natt: Default::default(),
            peer_frag: false,
            frag_id: Default::default(),
            rekey_of: None,
        }
    }

    /// The peer's, as responder to its first message `chain`: its NAT-T version and
    /// fragmentation support are in there (RFC 3947 §3.1; the Cisco/strongSwan vendor ID).
    #[allow(clippy::too_many_arguments)]
    fn responder(
        ctx: &mut Ctx<'_>,
        peer: Arc<V1Peer>,
        local: SocketAddr,
        remote: SocketAddr,
        cky_i: u64,
        cky_r: u64,
        chain: &Chain,
    ) -> Self {
        Self {
            peer,
            session: SessionId(ctx.alloc_id()),
            initiator: false,
            cky_i,
            cky_r,
            local,
            remote,
            retrans: None,
            last_in: None,
            half_open_until: Some(crate::sa::later(ctx.now, ctx.config.half_open_timeout)),
            want_child: false,
            queued: Vec::new(),
            natt: crate::v1::natt::NatT {
                version: crate::v1::natt::NattVersion::negotiate(chain),
                ..Default::default()
            },
            peer_frag: crate::v1::fragment::announced(chain),
            frag_id: Default::default(),
            rekey_of: None,
        }
    }

    fn send(&self, ctx: &mut Ctx<'_>, bytes: Vec<u8>) {
        // Phase 1 messages above the size go as fragments to a peer that takes them.
        let phase1 = matches!(
            bytes.get(18).copied().map(ExchangeType::from_raw),
            Some(ExchangeType::IdentityProtection | ExchangeType::Aggressive)
        );
        if self.peer_frag && phase1 && bytes.len() > ctx.config.fragment_size {
            let id = self.frag_id.get().wrapping_add(1);
            self.frag_id.set(id);
            for f in crate::v1::fragment::split(&bytes, id, ctx.config.fragment_size) {
                ctx.out.push_back(Output::Transmit(Transmit {
                    local: self.local,
                    remote: self.remote,
                    bytes: f,
                }));
            }
            return;
        }
        ctx.out.push_back(Output::Transmit(Transmit {
            local: self.local,
            remote: self.remote,
            bytes,
        }));
    }

    fn header(&self, exchange: ExchangeType, flags: u8, mid: u32) -> Header {
        Header::new(self.cky_i, self.cky_r, exchange, flags, mid)
    }

    fn cookies(&self) -> Vec<u8> {
        [self.cky_i.to_be_bytes(), self.cky_r.to_be_bytes()].concat()
    }

    /// Sends our answer to the peer's main mode message `raw` and keeps both: a
    /// retransmitted `raw` gets this answer again (RFC 2408 §5).
    fn answer(&mut self, ctx: &mut Ctx<'_>, raw: &[u8], packet: Vec<u8>) {
        self.send(ctx, packet.clone());
        self.last_in = Some((raw.to_vec(), Some(packet)));
    }

    /// Sends a message that waits for an answer; returns its retransmission schedule.
    fn send_retrans(&self, ctx: &mut Ctx<'_>, packet: Vec<u8>) -> Retrans {
        self.send(ctx, packet.clone());
        Retrans::new(ctx, packet)
    }

    /// An unencrypted main mode message (MM1 to MM4, RFC 2409 §5).
    fn main_mode(&self, payloads: &[Payload]) -> Vec<u8> {
        encode_message(
            &self.header(ExchangeType::IdentityProtection, 0, 0),
            payloads,
        )
    }

    /// An encrypted main mode message (MM5, MM6, RFC 2409 §5) under `iv`; returns it and
    /// the last ciphertext block, the IV that follows (RFC 2409 Appendix B).
    fn main_mode_encrypted(
        &self,
        cipher: &Cbc,
        iv: &[u8],
        payloads: &[Payload],
    ) -> (Vec<u8>, Vec<u8>) {
        let mut plain = Vec::new();
        let next = encode_chain(payloads, &mut plain);
        let ct = cipher.encrypt(iv, &plain);
        let next_iv = cipher.last_block(&ct);
        let packet = finish(
            &self.header(ExchangeType::IdentityProtection, FLAG_ENCRYPTION, 0),
            next,
            &ct,
        );
        (packet, next_iv)
    }

    /// A notify about the ISAKMP SA itself, named by its cookie pair as SPI.
    fn isakmp_notify(&self, ty: u16, data: Vec<u8>) -> Payload {
        Payload::Notify(Notify {
            doi: DOI_IPSEC,
            protocol: PROTO_ISAKMP,
            ty,
            spi: self.cookies(),
            data,
        })
    }

    /// An unprotected informational notify: before the ISAKMP SA's keys exist there is no
    /// other way to tell the peer (RFC 2408 §5).
    fn notify_plain(&self, ctx: &mut Ctx<'_>, ty: u16) {
        let n = self.isakmp_notify(ty, Vec::new());
        let h = self.header(ExchangeType::Informational, 0, 0);
        self.send(ctx, encode_message(&h, &[n]));
    }
}

/// Main mode state (rustls style: each holds only what is valid while it waits).
pub(crate) enum State {
    ExpectMainMode2(Box<ExpectMainMode2>),
    ExpectMainMode3(Box<ExpectMainMode3>),
    ExpectMainMode4(Box<ExpectMainMode4>),
    ExpectMainMode5(Box<ExpectMainMode5>),
    ExpectMainMode6(Box<ExpectMainMode6>),
    ExpectAggressive2(Box<aggressive::ExpectAggressive2>),
    ExpectAggressive3(Box<aggressive::ExpectAggressive3>),
    Established(Box<Established>),
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::ExpectMainMode2(_) => "ExpectMainMode2",
            Self::ExpectMainMode3(_) => "ExpectMainMode3",
            Self::ExpectMainMode4(_) => "ExpectMainMode4",
            Self::ExpectMainMode5(_) => "ExpectMainMode5",
            Self::ExpectMainMode6(_) => "ExpectMainMode6",
            Self::ExpectAggressive2(_) => "ExpectAggressive2",
            Self::ExpectAggressive3(_) => "ExpectAggressive3",
            Self::Established(_) => "Established",
            Self::Closed => "Closed",
        }
    }
}

/// Initiator: MM1 (our SA) sent.
pub(crate) struct ExpectMainMode2 {
    sai_b: Vec<u8>,
}

/// Responder: MM2 (the chosen transform) sent.
pub(crate) struct ExpectMainMode3 {
    sai_b: Vec<u8>,
    suite: Phase1Suite,
    peer_dpd: bool,
}

/// Initiator: MM3 (KE, Ni) sent.
pub(crate) struct ExpectMainMode4 {
    sai_b: Vec<u8>,
    suite: Phase1Suite,
    ke: KeyExchange,
    ni: Vec<u8>,
    peer_dpd: bool,
}

/// Responder: MM4 (KE, Nr) sent; the keys exist.
pub(crate) struct ExpectMainMode5 {
    p: Phase1Progress,
}

/// Initiator: MM5 (ID, HASH_I) sent.
pub(crate) struct ExpectMainMode6 {
    p: Phase1Progress,
}

/// What the last two main mode messages need: keys, the DH publics and SAi_b for the
/// hashes, the CBC IV of the next message.
struct Phase1Progress {
    sai_b: Vec<u8>,
    suite: Phase1Suite,
    keys: keys::Phase1Keys,
    cipher: Cbc,
    gxi: Vec<u8>,
    gxr: Vec<u8>,
    iv: Vec<u8>,
    peer_dpd: bool,
}

impl Phase1Progress {
    /// HASH_I (`of_initiator`) or HASH_R over an ID payload body (RFC 2409 §5).
    fn auth_hash(&self, c: &Common, of_initiator: bool, id_b: &[u8]) -> Secret {
        let hash = if of_initiator {
            keys::hash_i
        } else {
            keys::hash_r
        };
        hash(
            self.suite.hash,
            &self.keys.skeyid,
            &self.gxi,
            &self.gxr,
            c.cky_i,
            c.cky_r,
            &self.sai_b,
            id_b,
        )
    }
}

/// A Child SA whose keys exist, not yet installed.
struct PendingChild {
    config: ChildConfigIndex,
    suite: EspSuite,
    spi_in: u32,
    spi_out: u32,
    inbound: EspKeys,
    outbound: EspKeys,
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
    /// The Child SA this quick mode rekeys (`rekey`).
    replaces: Option<ChildSaId>,
    /// We sent QM1.
    initiated: bool,
    /// A rekey responder's inbound SA, installed when QM2 went out (`Halves`).
    pre_installed: Option<ChildSaId>,
}

/// An installed Child SA.
struct Child {
    id: ChildSaId,
    config: ChildConfigIndex,
    spi_in: u32,
    spi_out: u32,
    expire_at: Instant,
    remove: ChildSaRemove,
    r: ChildRekey,
    /// A rekey initiator's outbound SA, installed at that instant ([`Halves`]).
    outbound_later: Option<(Instant, Box<ChildSaInstall>)>,
}

/// Quick mode initiator: QM1 sent.
pub(crate) struct ExpectQuickMode2 {
    iv: Vec<u8>,
    retrans: Retrans,
    ni: Vec<u8>,
    ke: Option<KeyExchange>,
    spi_in: u32,
    offer: Sa,
    ids: (Id, Id),
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
    config: ChildConfigIndex,
    replaces: Option<ChildSaId>,
}

/// Quick mode responder: QM2 sent.
pub(crate) struct ExpectQuickMode3 {
    iv: Vec<u8>,
    retrans: Retrans,
    last_in: Vec<u8>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    child: PendingChild,
    commit: bool,
}

/// Quick mode initiator: QM3 sent to a responder that set the commit bit; the SA is used
/// once its CONNECTED notify arrives (RFC 2408 §3.1, RFC 2409 §5.5).
pub(crate) struct ExpectConnected {
    child: PendingChild,
    until: Instant,
}

/// A phase 2 exchange in progress, by message ID.
enum Exchange {
    ExpectQuickMode2(Box<ExpectQuickMode2>),
    ExpectQuickMode3(Box<ExpectQuickMode3>),
    ExpectConnected(Box<ExpectConnected>),
}

/// A finished exchange: the peer's last message and our answer, if any.
struct Done {
    last_in: Vec<u8>,
    reply: Option<Vec<u8>>,
    until: Instant,
}

/// An outstanding DPD probe.
struct Probe {
    seq: u32,
    sends: u32,
    at: Instant,
}

/// The ISAKMP SA after main mode.
pub(crate) struct Established {
    suite: Phase1Suite,
    skeyid_d: Secret,
    skeyid_a: Secret,
    cipher: Cbc,
    /// The last CBC block of main mode: every phase 2 IV derives from it (Appendix B).
    p1_block: Vec<u8>,
    peer_id: Identity,
    peer_dpd: bool,
    expire_at: Instant,
    exchanges: HashMap<u32, Exchange>,
    done: HashMap<u32, Done>,
    children: Vec<Child>,
    probe: Option<Probe>,
    dpd_seq: u32,
    last_heard: Instant,
    /// When a new main mode replaces this SA (`rekey`); `None` once started or taken over.
    rekey_at: Option<Instant>,
    /// The endpoint has looked for SAs this one replaces (`rekey::settle`).
    settled: bool,
    /// SPIs the peer deleted that name none of our Child SAs: `rekey::settle` looks for them
    /// under the peer's other ISAKMP SAs.
    moved_deletes: Vec<u32>,
    /// The lifetime was stretched once for a replacement under way (`rekey`).
    grace_used: bool,
    /// The peer deleted it while it had Child SAs (`rekey::settle` decides their fate).
    peer_deleted: bool,
}

/// One ISAKMP SA.
pub(crate) struct Phase1Sa {
    pub(crate) c: Common,
    state: State,
}

fn sa_body(sa: &Sa) -> Vec<u8> {
    let mut out = Vec::new();
    encode_chain(&[Payload::Sa(sa.clone())], &mut out);
    out.split_off(4)
}

fn id_body(id: &Id) -> Vec<u8> {
    let mut out = Vec::new();
    encode_chain(&[Payload::Id(id.clone())], &mut out);
    out.split_off(4)
}

fn find<'a, T>(chain: &'a Chain, f: impl Fn(&'a Payload) -> Option<T>) -> Option<T> {
    chain.payloads.iter().find_map(f)
}

fn sa_payload(chain: &Chain) -> Result<&Sa, Misbehaved> {
    find(chain, |p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
    .ok_or(Misbehaved::MissingPayload("SA"))
}

fn ke_payload(chain: &Chain) -> Option<&[u8]> {
    find(chain, |p| match p {
        Payload::Ke(k) => Some(k.as_slice()),
        _ => None,
    })
}

fn nonce_payload(chain: &Chain) -> Result<&[u8], Misbehaved> {
    find(chain, |p| match p {
        Payload::Nonce(n) => Some(n.as_slice()),
        _ => None,
    })
    .ok_or(Misbehaved::MissingPayload("NONCE"))
}

/// The quick mode IDs (IDci, IDcr), in order.
fn id_payloads(chain: &Chain) -> Vec<&Id> {
    chain
        .payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Id(i) => Some(i),
            _ => None,
        })
        .collect()
}

fn has_dpd(chain: &Chain) -> bool {
    chain
        .payloads
        .iter()
        .any(|p| matches!(p, Payload::VendorId(v) if v[..] == DPD_VENDOR_ID[..]))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    verify_slices_are_equal(a, b).is_ok()
}

impl Phase1Sa {
    /// Starts main mode as initiator: MM1 = SA (our policies) | VID(DPD).
    pub(crate) fn initiate(
        ctx: &mut Ctx<'_>,
        peer: Arc<V1Peer>,
        remote: SocketAddr,
        cky_i: u64,
    ) -> Result<Self, V1Error> {
        let policies = peer.usable_policies();
        if policies.is_empty() {
            return Err(V1Error::Local("no usable isakmp policy"));
        }
        let offer = proposal::phase1_offer(&policies);
        let sai_b = sa_body(&offer);
        let session = SessionId(ctx.alloc_id());
        let mut c = Common::initiator(peer, remote, session, cky_i);
        let mut mm1 = vec![
            Payload::Sa(offer),
            Payload::VendorId(DPD_VENDOR_ID.to_vec()),
            crate::v1::fragment::vendor_id(),
        ];
        mm1.extend(crate::v1::natt::vendor_ids());
        let mm1 = c.main_mode(&mm1);
        c.retrans = Some(c.send_retrans(ctx, mm1));
        Ok(Self {
            c,
            state: State::ExpectMainMode2(Box::new(ExpectMainMode2 { sai_b })),
        })
    }

    /// Answers MM1 as responder: MM2 = SA (the chosen transform) | VID(DPD).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn respond(
        ctx: &mut Ctx<'_>,
        peer: Arc<V1Peer>,
        local: SocketAddr,
        remote: SocketAddr,
        raw: &[u8],
        header: &Header,
        chain: &Chain,
        cky_r: u64,
    ) -> Result<Self, V1Error> {
        let sa = sa_payload(chain)?;
        let (answer, suite) = proposal::phase1_select(sa, &peer.usable_policies())?;
        let sai_b = chain
            .body_of(&raw[Header::LEN..], payload_type::SA)
            .ok_or(Misbehaved::MissingPayload("SA"))?
            .to_vec();
        let mut c = Common::responder(ctx, peer, local, remote, header.cky_i, cky_r, chain);
        let mut mm2 = vec![
            Payload::Sa(answer),
            Payload::VendorId(DPD_VENDOR_ID.to_vec()),
            crate::v1::fragment::vendor_id(),
        ];
        mm2.extend(c.natt.answer_vid());
        let mm2 = c.main_mode(&mm2);
        c.answer(ctx, raw, mm2);
        Ok(Self {
            c,
            state: State::ExpectMainMode3(Box::new(ExpectMainMode3 {
                sai_b,
                suite,
                peer_dpd: has_dpd(chain),
            })),
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub(crate) fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// A main mode we started that has had no answer yet.
    pub(crate) fn awaits_mm2(&self) -> bool {
        matches!(self.state, State::ExpectMainMode2(_))
    }

    /// An aggressive mode responder waiting for AM3.
    pub(crate) fn awaits_aggressive3(&self) -> bool {
        matches!(self.state, State::ExpectAggressive3(_))
    }

    pub(crate) fn state_name(&self) -> &'static str {
        self.state.name()
    }

    pub(crate) fn peer_id(&self) -> Option<&Identity> {
        match &self.state {
            State::Established(e) => Some(&e.peer_id),
            _ => None,
        }
    }

    pub(crate) fn children(&self) -> Vec<(ChildSaId, u32, u32)> {
        match &self.state {
            State::Established(e) => e
                .children
                .iter()
                .map(|c| (c.id, c.spi_in, c.spi_out))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn has_child(&self, child: ChildSaId) -> bool {
        self.children().iter().any(|(id, ..)| *id == child)
    }

    /// The next deadline of this SA.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        t.extend(self.c.retrans.as_ref().map(|r| r.at));
        t.extend(self.c.natt.keepalive_at);
        if !self.is_established() {
            t.extend(self.c.half_open_until);
        }
        if let State::Established(e) = &self.state {
            t.push(e.expire_at);
            t.extend(e.rekey_deadlines());
            t.extend(e.children.iter().map(|c| c.expire_at));
            t.extend(
                e.children
                    .iter()
                    .filter_map(|c| c.outbound_later.as_ref().map(|o| o.0)),
            );
            t.extend(e.done.values().map(|d| d.until));
            t.extend(e.exchanges.values().map(|x| match x {
                Exchange::ExpectQuickMode2(s) => s.retrans.at,
                Exchange::ExpectQuickMode3(s) => s.retrans.at,
                Exchange::ExpectConnected(s) => s.until,
            }));
            if let (Some(dpd), true) = (self.c.peer.dpd, e.peer_dpd) {
                t.push(match &e.probe {
                    Some(p) => p.at,
                    None => crate::sa::later(e.last_heard, dpd.interval),
                });
            }
        }
        t.into_iter().min()
    }

    /// A message for this SA (header decoded, cookies matched).
    pub(crate) fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        msg: Message,
    ) -> Result<(), V1Error> {
        let h = &msg.header;
        match h.exchange {
            ExchangeType::IdentityProtection => {
                if let Some((last, answer)) = &self.c.last_in {
                    if last[..] == raw[..] {
                        // RFC 2408 §5: a retransmission; our answer went missing.
                        if let Some(a) = answer.clone() {
                            ctx.stats.retransmits += 1;
                            self.c.send(ctx, a);
                        }
                        return Ok(());
                    }
                }
                if h.message_id != 0 {
                    return Err(Misbehaved::InvalidMessageId(h.message_id).into());
                }
                let state = std::mem::replace(&mut self.state, State::Closed);
                let res = self.main_mode(ctx, state, raw, msg);
                match res {
                    Ok(next) => {
                        self.state = next;
                        Ok(())
                    }
                    Err((state, e)) => {
                        self.state = state;
                        Err(e)
                    }
                }
            }
            ExchangeType::Informational if !h.is_encrypted() => {
                // Unprotected notifies count only while main mode runs (the peer has no
                // keys to protect them with); afterwards they could come from anyone.
                if self.is_established() {
                    return Err(Misbehaved::NotEncrypted.into());
                }
                let Body::Plain(chain) = &msg.body else {
                    return Err(Misbehaved::NotEncrypted.into());
                };
                let err = chain.payloads.iter().find_map(|p| match p {
                    Payload::Notify(n) if notify_type::is_error(n.ty) => Some(n.ty),
                    _ => None,
                });
                match err {
                    Some(ty) => {
                        let e = V1Error::from(Incompatible::PeerRejected(ty));
                        self.fail(ctx, &e, false);
                        Err(e)
                    }
                    None => Ok(()),
                }
            }
            ExchangeType::Informational | ExchangeType::Quick => {
                let Body::Encrypted(ct) = &msg.body else {
                    return Err(Misbehaved::NotEncrypted.into());
                };
                let res = match &mut self.state {
                    State::Established(est) => {
                        let r = est.protected(&self.c, ctx, raw, h, ct);
                        if let Err(e) = &r {
                            // RFC 2409 §5.7: errors after phase 1 travel protected.
                            if let Reaction::Notify(ty) = e.notify() {
                                est.send_notify(&self.c, ctx, PROTO_ISAKMP, self.c.cookies(), ty);
                            }
                        }
                        r
                    }
                    _ => return Err(Misbehaved::UnexpectedEncryption.into()),
                };
                match res {
                    Ok(Flow::Continue) => Ok(()),
                    Ok(Flow::Close(reason)) => {
                        self.close(ctx, reason);
                        Ok(())
                    }
                    Ok(Flow::Refused(e)) | Err(e) => Err(e),
                }
            }
            ExchangeType::Aggressive => self.aggressive_mode(ctx, raw, msg),
            ExchangeType::Other(_) => {
                Err(Incompatible::UnsupportedExchange(h.exchange.to_raw()).into())
            }
        }
    }

    /// The main mode transition function.
    #[allow(clippy::result_large_err)]
    fn main_mode(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: State,
        raw: &[u8],
        msg: Message,
    ) -> Result<State, (State, V1Error)> {
        let c = &mut self.c;
        let out = match (state, msg.body) {
            (State::ExpectMainMode2(st), Body::Plain(chain)) => {
                st.handle(c, ctx, raw, &msg.header, &chain)
            }
            (State::ExpectMainMode3(st), Body::Plain(chain)) => st.handle(c, ctx, raw, &chain),
            (State::ExpectMainMode4(st), Body::Plain(chain)) => st.handle(c, ctx, raw, &chain),
            (State::ExpectMainMode5(st), Body::Encrypted(ct)) => {
                st.handle(c, ctx, raw, &msg.header, &ct)
            }
            (State::ExpectMainMode6(st), Body::Encrypted(ct)) => {
                st.handle(c, ctx, raw, &msg.header, &ct)
            }
            (state @ State::Established(_), _) => {
                // A main mode message that is no retransmission after main mode: stray.
                return Err((state, Misbehaved::UnexpectedMessage.into()));
            }
            (state, _) => {
                return Err((state, Misbehaved::UnexpectedMessage.into()));
            }
        };
        match out {
            Ok(next) => {
                if matches!(next, State::Established(_)) {
                    self.c.half_open_until = None;
                }
                Ok(next)
            }
            Err(e) => {
                self.fail(ctx, &e, true);
                Err((State::Closed, e))
            }
        }
    }

    /// Main mode failed: tell the peer (unprotected, RFC 2408 §5) unless the error was its
    /// own notify, and close.
    fn fail(&mut self, ctx: &mut Ctx<'_>, e: &V1Error, answer: bool) {
        if answer {
            if let Reaction::Notify(ty) = e.notify() {
                self.c.notify_plain(ctx, ty);
            }
        }
        let auth = matches!(
            e,
            V1Error::Misbehaved(
                Misbehaved::InvalidHash
                    | Misbehaved::UndecryptablePhase1
                    | Misbehaved::IdentityMismatch
                    | Misbehaved::InvalidSignature
            ) | V1Error::Incompatible(
                Incompatible::PeerRejected(
                    notify_type::AUTHENTICATION_FAILED
                        | notify_type::INVALID_HASH_INFORMATION
                        | notify_type::INVALID_SIGNATURE
                        | notify_type::INVALID_CERTIFICATE
                ) | Incompatible::CertificateRejected(_)
                    | Incompatible::CertificateUnavailable
            )
        );
        if auth {
            ctx.event(Event::AuthFailed {
                conn: Some(self.c.peer.id),
                peer: self.c.remote,
                reason: e.reason(),
            });
        }
        self.c.retrans = None;
        self.state = State::Closed;
        ctx.event(Event::IkeSaDown {
            session: self.c.session,
            conn: self.c.peer.id,
            reason: DownReason::Failed(e.reason()),
        });
    }

    /// Removes every Child SA and closes the SA.
    pub(crate) fn close(&mut self, ctx: &mut Ctx<'_>, reason: DownReason) {
        if let State::Established(e) = &mut self.state {
            for ch in e.children.drain(..) {
                remove_child(&self.c, ctx, ch);
            }
        }
        self.c.retrans = None;
        self.state = State::Closed;
        ctx.event(Event::IkeSaDown {
            session: self.c.session,
            conn: self.c.peer.id,
            reason,
        });
    }

    /// Deletes everything with the peer (RFC 2408 §3.15): the Child SAs' inbound SPIs, then
    /// the ISAKMP SA's cookies, each in its own protected informational exchange.
    pub(crate) fn terminate(&mut self, ctx: &mut Ctx<'_>) {
        if let State::Established(e) = &mut self.state {
            let spis: Vec<Vec<u8>> = e
                .children
                .iter()
                .map(|c| c.spi_in.to_be_bytes().to_vec())
                .collect();
            if !spis.is_empty() {
                e.send_info(&self.c, ctx, vec![delete_payload(PROTO_IPSEC_ESP, 4, spis)]);
            }
            let cookies = self.c.cookies();
            e.send_info(
                &self.c,
                ctx,
                vec![delete_payload(PROTO_ISAKMP, 16, vec![cookies])],
            );
        }
        self.close(ctx, DownReason::Local);
    }

    /// Deletes one Child SA with the peer.
    pub(crate) fn delete_child(&mut self, ctx: &mut Ctx<'_>, child: ChildSaId) {
        if let State::Established(e) = &mut self.state {
            if let Some(i) = e.children.iter().position(|c| c.id == child) {
                let ch = e.children.remove(i);
                let spi = ch.spi_in.to_be_bytes().to_vec();
                e.send_info(
                    &self.c,
                    ctx,
                    vec![delete_payload(PROTO_IPSEC_ESP, 4, vec![spi])],
                );
                remove_child(&self.c, ctx, ch);
            }
        }
    }

    /// Sends a DPD R-U-THERE now.
    pub(crate) fn dpd_now(&mut self, ctx: &mut Ctx<'_>) {
        if let State::Established(e) = &mut self.state {
            e.probe(&self.c, ctx, 1);
        }
    }

    /// Drops the SA without telling the peer (it told us, with INITIAL-CONTACT, that it
    /// holds no state for us).
    pub(crate) fn drop_silently(&mut self, ctx: &mut Ctx<'_>) {
        self.close(ctx, DownReason::Replaced);
    }

    /// Runs what is due.
    pub(crate) fn on_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        crate::v1::natt::on_timeout(&mut self.c, ctx);
        if let Some(mut r) = self.c.retrans.take() {
            if r.at <= now && !r.fire(&self.c, ctx) {
                ctx.event(Event::PeerDead {
                    session: self.c.session,
                    conn: self.c.peer.id,
                    peer: self.c.remote,
                });
                self.close(ctx, DownReason::Timeout);
                return;
            }
            self.c.retrans = Some(r);
        }
        if !self.is_established() && self.c.half_open_until.is_some_and(|t| t <= now) {
            tracing::debug!(peer = %self.c.remote, "v1: main mode did not complete in time");
            self.close(ctx, DownReason::Failed("half_open_timeout"));
            return;
        }
        let State::Established(e) = &mut self.state else {
            return;
        };
        if e.expire_at <= now && !e.expiry_grace(now) {
            // The SA ends at its lifetime (its replacement, if any, has its Child SAs).
            self.terminate(ctx);
            return;
        }
        match e.on_timeout(&self.c, ctx) {
            Flow::Continue | Flow::Refused(_) => {}
            Flow::Close(reason) => self.close(ctx, reason),
        }
    }

    /// Starts a quick mode for the profile's Child SA (when none exists or is under way).
    pub(crate) fn start_child(&mut self, ctx: &mut Ctx<'_>) {
        self.c.want_child = false;
        if let State::Established(e) = &mut self.state {
            let busy = e
                .exchanges
                .values()
                .any(|x| !matches!(x, Exchange::ExpectQuickMode3(_)));
            if e.children.is_empty() && !busy {
                if let Err(err) = e.start_quick_mode(&self.c, ctx, None) {
                    tracing::warn!(conn = ?self.c.peer.id, error = %err, "v1: quick mode not started");
                }
            }
        }
    }
}

fn delete_payload(protocol: u8, spi_size: u8, spis: Vec<Vec<u8>>) -> Payload {
    Payload::Delete(Delete {
        doi: DOI_IPSEC,
        protocol,
        spi_size,
        spis,
    })
}

fn remove_child(c: &Common, ctx: &mut Ctx<'_>, ch: Child) {
    ctx.out.push_back(Output::RemoveChildSa(ch.remove));
    ctx.event(Event::ChildSaDown {
        child: ch.id,
        session: c.session,
        conn: c.peer.id,
        config: ch.config,
    });
}

/// The responder's answer to our first phase 1 message (MM2, AM2): its cookie must be set
/// and its SA must pick one of our policies (RFC 2408 §4.2).
fn answered_suite(c: &Common, h: &Header, chain: &Chain) -> Result<Phase1Suite, V1Error> {
    if h.cky_r == 0 {
        return Err(Misbehaved::InvalidCookie.into());
    }
    let sa = sa_payload(chain)?;
    proposal::phase1_check_answer(sa, &c.peer.usable_policies())
}

impl Common {
    /// What the answer to our first message tells: the responder's cookie, the NAT-T
    /// version it chose (RFC 3947 §3.1) and whether it takes fragments.
    fn learn_answer(&mut self, h: &Header, chain: &Chain) {
        self.cky_r = h.cky_r;
        self.natt.version = crate::v1::natt::NattVersion::negotiate(chain);
        self.peer_frag = crate::v1::fragment::announced(chain);
    }
}

impl ExpectMainMode2 {
    // The state is consumed whole (rustls's `handle(self: Box<Self>, ..)`).
    #[allow(clippy::boxed_local)]
    fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        h: &Header,
        chain: &Chain,
    ) -> Result<State, V1Error> {
        let suite = answered_suite(c, h, chain)?;
        c.learn_answer(h, chain);
        let ke = KeyExchange::generate(suite.group, ctx.rng)?;
        let ni = ctx.nonce();
        let mut mm3 = vec![
            Payload::Ke(ke.public().to_vec()),
            Payload::Nonce(ni.clone()),
        ];
        mm3.extend(crate::v1::natt::nat_d_for(c, suite.hash));
        mm3.extend(auth::cert_requests(c, suite.auth));
        let mm3 = c.main_mode(&mm3);
        c.retrans = Some(c.send_retrans(ctx, mm3.clone()));
        c.last_in = Some((raw.to_vec(), Some(mm3)));
        Ok(State::ExpectMainMode4(Box::new(ExpectMainMode4 {
            sai_b: self.sai_b,
            suite,
            ke,
            ni,
            peer_dpd: has_dpd(chain),
        })))
    }
}

fn ke_nonce(chain: &Chain) -> Result<(&[u8], &[u8]), V1Error> {
    let ke = ke_payload(chain).ok_or(Misbehaved::MissingPayload("KE"))?;
    let n = nonce_payload(chain)?;
    Ok((ke, n))
}

fn phase1_keys(
    c: &Common,
    suite: Phase1Suite,
    ni: &[u8],
    nr: &[u8],
    gxy: &Secret,
) -> Result<(keys::Phase1Keys, Cbc), V1Error> {
    // RFC 2409 §5: SKEYID depends on the authentication method.
    let skeyid = match suite.auth {
        crate::v1::config::AuthMethod::PreShared => {
            keys::skeyid_psk(suite.hash, c.peer.psk.expose(), ni, nr)
        }
        crate::v1::config::AuthMethod::RsaSig => keys::skeyid_sig(suite.hash, ni, nr, gxy.expose()),
    };
    let k = keys::derive_phase1(
        suite.hash,
        suite.encr,
        skeyid,
        gxy.expose(),
        c.cky_i,
        c.cky_r,
    );
    let cipher = Cbc::new(suite.encr, &k.enc_key)?;
    Ok((k, cipher))
}

impl ExpectMainMode3 {
    // The state is consumed whole (rustls's `handle(self: Box<Self>, ..)`).
    #[allow(clippy::boxed_local)]
    fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        chain: &Chain,
    ) -> Result<State, V1Error> {
        let (gxi, ni) = ke_nonce(chain)?;
        let ke = KeyExchange::generate(self.suite.group, ctx.rng)?;
        let gxr = ke.public().to_vec();
        let gxy = ke.agree(gxi).map_err(|_| Misbehaved::BadKeData)?;
        let nr = ctx.nonce();
        let (keys, cipher) = phase1_keys(c, self.suite, ni, &nr, &gxy)?;
        let iv = keys::phase1_iv(self.suite.hash, gxi, &gxr, cipher.block());
        crate::v1::natt::detect(c, self.suite.hash, chain);
        let mut mm4 = vec![Payload::Ke(gxr.clone()), Payload::Nonce(nr)];
        mm4.extend(crate::v1::natt::nat_d_for(c, self.suite.hash));
        mm4.extend(auth::cert_requests(c, self.suite.auth));
        let mm4 = c.main_mode(&mm4);
        c.answer(ctx, raw, mm4);
        Ok(State::ExpectMainMode5(Box::new(ExpectMainMode5 {
            p: Phase1Progress {
                sai_b: self.sai_b,
                suite: self.suite,
                keys,
                cipher,
                gxi: gxi.to_vec(),
                gxr,
                iv,
                peer_dpd: self.peer_dpd,
            },
        })))
    }
}

impl ExpectMainMode4 {
    // The state is consumed whole (rustls's `handle(self: Box<Self>, ..)`).
    #[allow(clippy::boxed_local)]
    fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        chain: &Chain,
    ) -> Result<State, V1Error> {
        let (gxr, nr) = ke_nonce(chain)?;
        let gxi = self.ke.public().to_vec();
        let gxy = self.ke.agree(gxr).map_err(|_| Misbehaved::BadKeData)?;
        let (keys, cipher) = phase1_keys(c, self.suite, &self.ni, nr, &gxy)?;
        let iv = keys::phase1_iv(self.suite.hash, &gxi, gxr, cipher.block());
        let mut p = Phase1Progress {
            sai_b: self.sai_b,
            suite: self.suite,
            keys,
            cipher,
            gxi,
            gxr: gxr.to_vec(),
            iv,
            peer_dpd: self.peer_dpd,
        };
        // RFC 3947 §4: NAT seen, MM5 and everything after go to port 4500.
        crate::v1::natt::detect(c, p.suite.hash, chain);
        crate::v1::natt::float(c, ctx);
        let id = proposal::identity_id(&c.peer.local_identity_at(c.local));
        let proof = p.proof(c, true, &id_body(&id))?;
        let mut mm5 = vec![Payload::Id(id)];
        mm5.extend(proof);
        // INITIAL-CONTACT (RFC 2407 §4.6.3.3): we hold no other state with this peer. Not
        // on a phase 1 rekey, whose Child SAs must survive it.
        if c.rekey_of.is_none() {
            mm5.push(c.isakmp_notify(notify_type::INITIAL_CONTACT, Vec::new()));
        }
        let (mm5, next_iv) = c.main_mode_encrypted(&p.cipher, &p.iv, &mm5);
        p.iv = next_iv;
        c.retrans = Some(c.send_retrans(ctx, mm5.clone()));
        c.last_in = Some((raw.to_vec(), Some(mm5)));
        Ok(State::ExpectMainMode6(Box::new(ExpectMainMode6 { p })))
    }
}

/// Decrypts MM5/MM6 and checks the peer's ID and HASH; returns the identity, whether
/// INITIAL-CONTACT came along, and the next IV.
fn open_phase1(
    c: &Common,
    unix_time: Option<u64>,
    p: &Phase1Progress,
    h: &Header,
    ct: &[u8],
    peer_is_initiator: bool,
) -> Result<(Identity, bool, Vec<u8>), V1Error> {
    let plain = p
        .cipher
        .decrypt(&p.iv, ct)
        .map_err(|_| Misbehaved::UndecryptablePhase1)?;
    let chain =
        decode_chain(h.next, plain.expose(), true).map_err(|_| Misbehaved::UndecryptablePhase1)?;
    let id = find(&chain, |x| match x {
        Payload::Id(i) => Some(i),
        _ => None,
    })
    .ok_or(Misbehaved::MissingPayload("ID"))?;
    let id_b = chain
        .body_of(plain.expose(), payload_type::ID)
        .ok_or(Misbehaved::MissingPayload("ID"))?;
    let identity = proposal::id_identity(id);
    p.check_proof(c, unix_time, &chain, peer_is_initiator, id_b, &identity)?;
    if !c.peer.remote_id.matches(&identity) {
        return Err(Misbehaved::IdentityMismatch.into());
    }
    let contact = chain
        .payloads
        .iter()
        .any(|x| matches!(x, Payload::Notify(n) if n.ty == notify_type::INITIAL_CONTACT));
    Ok((identity, contact, p.cipher.last_block(ct)))
}

fn established(
    c: &Common,
    ctx: &mut Ctx<'_>,
    p: Phase1Progress,
    peer_id: Identity,
    p1_block: Vec<u8>,
    initial_contact: bool,
) -> Established {
    ctx.stats.ike_sas_established += 1;
    ctx.event(Event::PeerAuthenticated {
        session: c.session,
        conn: c.peer.id,
        peer_id: peer_id.clone(),
        remote: c.remote,
        local: c.local,
        initial_contact,
    });
    ctx.event(Event::IkeSaUp {
        session: c.session,
        conn: c.peer.id,
        local: c.local,
        remote: c.remote,
        initiator: c.initiator,
    });
    if initial_contact {
        ctx.drop_others.push((
            c.peer.id,
            peer_id.clone(),
            if c.initiator { c.cky_i } else { c.cky_r },
        ));
    }
    let mut seq = [0u8; 4];
    ctx.rng.fill_bytes(&mut seq);
    Established {
        suite: p.suite,
        skeyid_d: p.keys.skeyid_d,
        skeyid_a: p.keys.skeyid_a,
        cipher: p.cipher,
        p1_block,
        peer_id,
        peer_dpd: p.peer_dpd,
        expire_at: crate::sa::later(ctx.now, p.suite.lifetime),
        exchanges: HashMap::new(),
        done: HashMap::new(),
        children: Vec::new(),
        probe: None,
        // RFC 3706 §7: start from a random sequence number (kept below 2^31 so it never
        // wraps in practice).
        dpd_seq: u32::from_be_bytes(seq) >> 1,
        last_heard: ctx.now,
        rekey_at: rekey::phase1_rekey_at(c, ctx, p.suite.lifetime),
        settled: false,
        moved_deletes: Vec::new(),
        grace_used: false,
        peer_deleted: false,
    }
}

impl ExpectMainMode5 {
    fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        h: &Header,
        ct: &[u8],
    ) -> Result<State, V1Error> {
        let p = self.p;
        let (peer_id, contact, iv) = open_phase1(c, ctx.unix_time, &p, h, ct, true)?;
        let id = proposal::identity_id(&c.peer.local_identity_at(c.local));
        let mut mm6 = vec![Payload::Id(id.clone())];
        mm6.extend(p.proof(c, false, &id_body(&id))?);
        let (mm6, p1_block) = c.main_mode_encrypted(&p.cipher, &iv, &mm6);
        c.answer(ctx, raw, mm6);
        let est = established(c, ctx, p, peer_id, p1_block, contact);
        Ok(State::Established(Box::new(est)))
    }
}

impl ExpectMainMode6 {
    fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        h: &Header,
        ct: &[u8],
    ) -> Result<State, V1Error> {
        let p = self.p;
        let (peer_id, contact, p1_block) = open_phase1(c, ctx.unix_time, &p, h, ct, false)?;
        c.retrans = None;
        c.last_in = Some((raw.to_vec(), None));
        c.want_child = true;
        let est = established(c, ctx, p, peer_id, p1_block, contact);
        Ok(State::Established(Box::new(est)))
    }
}

/// What the established SA asks of its owner after a message or timer.
pub(crate) enum Flow {
    Continue,
    Close(DownReason),
    /// The message was refused and the peer told already (a quick mode it cannot have).
    Refused(V1Error),
}

impl Established {
    fn prf_a(&self, parts: &[&[u8]]) -> Secret {
        self.suite.hash.prf(self.skeyid_a.expose(), parts)
    }

    /// Records a finished exchange for DONE_LINGER: a retransmission of `raw` then gets
    /// `reply` again rather than being taken for a new message.
    fn remember(&mut self, ctx: &Ctx<'_>, mid: u32, raw: &[u8], reply: Option<Vec<u8>>) {
        self.done.insert(
            mid,
            Done {
                last_in: raw.to_vec(),
                reply,
                until: crate::sa::later(ctx.now, DONE_LINGER),
            },
        );
    }

    /// The first IV of phase 2 or informational exchange `mid` (RFC 2409 Appendix B).
    fn phase2_iv(&self, mid: u32) -> Vec<u8> {
        keys::phase2_iv(self.suite.hash, &self.p1_block, mid, self.cipher.block())
    }

    fn fresh_mid(&self, ctx: &mut Ctx<'_>) -> u32 {
        loop {
            let m = ctx.rng.next_u32();
            if m != 0 && !self.exchanges.contains_key(&m) && !self.done.contains_key(&m) {
                return m;
            }
        }
    }

    /// Builds `HDR*, HASH, tail...` (RFC 2409 §5.5, §5.7): the hash is `hash_of(tail bytes)`;
    /// returns the packet and the next IV of the exchange.
    #[allow(clippy::too_many_arguments)]
    fn protect(
        &self,
        c: &Common,
        exchange: ExchangeType,
        flags: u8,
        mid: u32,
        iv: &[u8],
        tail: &[Payload],
        hash_of: impl FnOnce(&[u8]) -> Secret,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut tail_bytes = Vec::new();
        let first = encode_chain(tail, &mut tail_bytes);
        let hash = hash_of(&tail_bytes);
        let mut plain = vec![first, 0, 0, 0];
        plain.extend_from_slice(hash.expose());
        let len = plain.len() as u16;
        plain[2..4].copy_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(&tail_bytes);
        let ct = self.cipher.encrypt(iv, &plain);
        let next_iv = self.cipher.last_block(&ct);
        let packet = finish(
            &c.header(exchange, FLAG_ENCRYPTION | flags, mid),
            payload_type::HASH,
            &ct,
        );
        (packet, next_iv)
    }

    /// Decrypts a protected phase 2 message whose first payload must be HASH; returns the
    /// chain, the received hash, the bytes after the HASH payload it covers, and the next IV.
    fn open(&self, iv: &[u8], h: &Header, ct: &[u8]) -> Result<Opened, V1Error> {
        let plain = self
            .cipher
            .decrypt(iv, ct)
            .map_err(|_| Misbehaved::UndecryptablePhase2)?;
        let chain = decode_chain(h.next, plain.expose(), true)
            .map_err(|_| Misbehaved::UndecryptablePhase2)?;
        let Some(Payload::Hash(hash)) = chain.payloads.first() else {
            return Err(Misbehaved::MissingPayload("HASH").into());
        };
        let start = chain.spans[0].end;
        let end = chain.spans.last().map_or(start, |s| s.end);
        Ok(Opened {
            hash: hash.clone(),
            covered: plain.expose()[start..end].to_vec(),
            chain,
            next_iv: self.cipher.last_block(ct),
        })
    }

    /// Sends a protected informational exchange (RFC 2409 §5.7):
    /// `HASH(1) = prf(SKEYID_a, M-ID | N/D)`.
    fn send_info(&self, c: &Common, ctx: &mut Ctx<'_>, payloads: Vec<Payload>) -> Vec<u8> {
        let mid = self.fresh_mid(ctx);
        let iv = self.phase2_iv(mid);
        let (packet, _) = self.protect(
            c,
            ExchangeType::Informational,
            0,
            mid,
            &iv,
            &payloads,
            |t| self.prf_a(&[&mid.to_be_bytes(), t]),
        );
        c.send(ctx, packet.clone());
        packet
    }

    fn send_notify(
        &self,
        c: &Common,
        ctx: &mut Ctx<'_>,
        protocol: u8,
        spi: Vec<u8>,
        ty: u16,
    ) -> Vec<u8> {
        self.send_info(
            c,
            ctx,
            vec![Payload::Notify(Notify {
                doi: DOI_IPSEC,
                protocol,
                ty,
                spi,
                data: Vec::new(),
            })],
        )
    }

    /// Sends R-U-THERE (RFC 3706 §5): the ISAKMP SA's cookies as SPI, a sequence number as
    /// data.
    fn probe(&mut self, c: &Common, ctx: &mut Ctx<'_>, sends: u32) {
        let Some(dpd) = c.peer.dpd else {
            return;
        };
        self.dpd_seq = self.dpd_seq.wrapping_add(1);
        let seq = self.dpd_seq;
        self.send_info(
            c,
            ctx,
            vec![c.isakmp_notify(notify_type::R_U_THERE, seq.to_be_bytes().to_vec())],
        );
        self.probe = Some(Probe {
            seq,
            sends,
            at: crate::sa::later(ctx.now, dpd.interval),
        });
    }

    fn on_timeout(&mut self, c: &Common, ctx: &mut Ctx<'_>) -> Flow {
        let now = ctx.now;
        self.done.retain(|_, d| d.until > now);
        for ch in &mut self.children {
            if ch.outbound_later.as_ref().is_some_and(|o| o.0 <= now)
                && let Some((_, inst)) = ch.outbound_later.take()
            {
                ctx.out.push_back(Output::InstallChildSa(*inst));
            }
        }
        self.child_rekey_timers(c, ctx);
        let due: Vec<(u32, ChildSaId)> = self
            .children
            .iter()
            .filter(|ch| ch.expire_at <= now)
            .map(|ch| (ch.spi_in, ch.id))
            .collect();
        for (spi, id) in due {
            // Not replaced in time (`rekey` starts well before), or a peer's rekeyed pair the
            // peer never deleted: at its lifetime the SA is deleted.
            self.send_info(
                c,
                ctx,
                vec![delete_payload(
                    PROTO_IPSEC_ESP,
                    4,
                    vec![spi.to_be_bytes().to_vec()],
                )],
            );
            if let Some(i) = self.children.iter().position(|ch| ch.id == id) {
                let ch = self.children.remove(i);
                remove_child(c, ctx, ch);
            }
        }
        let mids: Vec<u32> = self.exchanges.keys().copied().collect();
        for mid in mids {
            let Some(x) = self.exchanges.remove(&mid) else {
                continue;
            };
            let keep = match x {
                Exchange::ExpectQuickMode2(mut s) => {
                    if s.retrans.at > now || s.retrans.fire(c, ctx) {
                        Some(Exchange::ExpectQuickMode2(s))
                    } else {
                        return self.dead(c, ctx);
                    }
                }
                Exchange::ExpectQuickMode3(mut s) => {
                    if s.retrans.at > now || s.retrans.fire(c, ctx) {
                        Some(Exchange::ExpectQuickMode3(s))
                    } else {
                        tracing::debug!(peer = %c.remote, "v1: quick mode responder got no QM3");
                        // A rekey's inbound SA went in with QM2: take it out again.
                        if let Some(id) = s.child.pre_installed {
                            ctx.out.push_back(Output::RemoveChildSa(ChildSaRemove {
                                child: id,
                                session: c.session,
                                conn: c.peer.id,
                                local: c.local,
                                remote: c.remote,
                                inbound_spi: s.child.spi_in,
                                outbound_spi: s.child.spi_out,
                            }));
                        }
                        None
                    }
                }
                Exchange::ExpectConnected(s) => {
                    if s.until > now {
                        Some(Exchange::ExpectConnected(s))
                    } else {
                        tracing::warn!(peer = %c.remote, "v1: no CONNECTED for a committed quick mode");
                        None
                    }
                }
            };
            if let Some(x) = keep {
                self.exchanges.insert(mid, x);
            }
        }
        if let (Some(dpd), true) = (c.peer.dpd, self.peer_dpd) {
            match &self.probe {
                Some(p) if p.at <= now => {
                    if p.sends >= dpd.retries.max(1) {
                        return self.dead(c, ctx);
                    }
                    let sends = p.sends + 1;
                    self.probe(c, ctx, sends);
                }
                None if crate::sa::later(self.last_heard, dpd.interval) <= now => {
                    self.probe(c, ctx, 1);
                }
                _ => {}
            }
        }
        Flow::Continue
    }

    fn dead(&mut self, c: &Common, ctx: &mut Ctx<'_>) -> Flow {
        ctx.event(Event::PeerDead {
            session: c.session,
            conn: c.peer.id,
            peer: c.remote,
        });
        Flow::Close(DownReason::Timeout)
    }

    /// A protected quick mode or informational message.
    fn protected(
        &mut self,
        c: &Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        h: &Header,
        ct: &[u8],
    ) -> Result<Flow, V1Error> {
        let mid = h.message_id;
        if mid == 0 {
            return Err(Misbehaved::InvalidMessageId(0).into());
        }
        if let Some(d) = self.done.get(&mid) {
            if d.last_in[..] == raw[..] {
                if let Some(r) = d.reply.clone() {
                    ctx.stats.retransmits += 1;
                    c.send(ctx, r);
                }
                return Ok(Flow::Continue);
            }
            return Err(Misbehaved::UnexpectedMessage.into());
        }
        if let Some(x) = self.exchanges.remove(&mid) {
            return match x {
                Exchange::ExpectQuickMode3(st) if st.last_in[..] == raw[..] => {
                    ctx.stats.retransmits += 1;
                    c.send(ctx, st.retrans.packet.clone());
                    self.exchanges.insert(mid, Exchange::ExpectQuickMode3(st));
                    Ok(Flow::Continue)
                }
                Exchange::ExpectQuickMode2(st) if h.exchange == ExchangeType::Quick => {
                    match self.open(&st.iv, h, ct) {
                        Ok(o) => {
                            self.last_heard = ctx.now;
                            self.quick_mode_2(c, ctx, raw, h, mid, *st, o)
                        }
                        Err(e) => {
                            self.exchanges.insert(mid, Exchange::ExpectQuickMode2(st));
                            Err(e)
                        }
                    }
                }
                Exchange::ExpectQuickMode3(st) if h.exchange == ExchangeType::Quick => {
                    match self.open(&st.iv, h, ct) {
                        Ok(o) => {
                            self.last_heard = ctx.now;
                            self.quick_mode_3(c, ctx, raw, mid, *st, o)
                        }
                        Err(e) => {
                            self.exchanges.insert(mid, Exchange::ExpectQuickMode3(st));
                            Err(e)
                        }
                    }
                }
                other => {
                    self.exchanges.insert(mid, other);
                    Err(Misbehaved::UnexpectedExchange(h.exchange.to_raw()).into())
                }
            };
        }
        let iv = self.phase2_iv(mid);
        let o = self.open(&iv, h, ct)?;
        match h.exchange {
            ExchangeType::Quick => {
                let want = self.prf_a(&[&mid.to_be_bytes(), &o.covered]);
                if !ct_eq(want.expose(), &o.hash) {
                    return Err(Misbehaved::InvalidHash.into());
                }
                self.last_heard = ctx.now;
                // The initiator's SPI names its quick mode in our answer to a refusal.
                let spi = o.chain.payloads.iter().find_map(|p| match p {
                    Payload::Sa(sa) => sa.proposals.first().map(|p| p.spi.clone()),
                    _ => None,
                });
                match self.quick_mode_1(c, ctx, raw, h, mid, o) {
                    Ok(()) => Ok(Flow::Continue),
                    Err(e) => {
                        // Told once, with the quick mode's SPI so the initiator can end it;
                        // a retransmitted QM1 gets the same answer, not a second refusal.
                        let reply = match e.notify() {
                            Reaction::Notify(ty) => Some(self.send_notify(
                                c,
                                ctx,
                                PROTO_IPSEC_ESP,
                                spi.unwrap_or_default(),
                                ty,
                            )),
                            Reaction::Drop => None,
                        };
                        self.remember(ctx, mid, raw, reply);
                        Ok(Flow::Refused(e))
                    }
                }
            }
            _ => {
                let want = self.prf_a(&[&mid.to_be_bytes(), &o.covered]);
                if !ct_eq(want.expose(), &o.hash) {
                    return Err(Misbehaved::InvalidHash.into());
                }
                self.last_heard = ctx.now;
                self.remember(ctx, mid, raw, None);
                self.informational(c, ctx, o.chain)
            }
        }
    }

    /// An authenticated informational exchange (RFC 2409 §5.7).
    fn informational(
        &mut self,
        c: &Common,
        ctx: &mut Ctx<'_>,
        chain: Chain,
    ) -> Result<Flow, V1Error> {
        for p in chain.payloads.into_iter().skip(1) {
            match p {
                Payload::Notify(n) if n.ty == notify_type::R_U_THERE => {
                    // RFC 3706 §5.3: answer with the same sequence number.
                    self.send_info(
                        c,
                        ctx,
                        vec![Payload::Notify(Notify {
                            ty: notify_type::R_U_THERE_ACK,
                            spi: c.cookies(),
                            ..n
                        })],
                    );
                }
                Payload::Notify(n) if n.ty == notify_type::R_U_THERE_ACK => {
                    let seq = <[u8; 4]>::try_from(n.data.as_slice()).map(u32::from_be_bytes);
                    match (&self.probe, seq) {
                        (Some(p), Ok(s)) if p.seq == s => self.probe = None,
                        _ => return Err(Misbehaved::DpdSequenceMismatch.into()),
                    }
                }
                Payload::Notify(n) if n.ty == notify_type::CONNECTED => {
                    let spi = <[u8; 4]>::try_from(n.spi.as_slice())
                        .map(u32::from_be_bytes)
                        .ok();
                    let mid = self.exchanges.iter().find_map(|(m, x)| match x {
                        Exchange::ExpectConnected(s)
                            if spi.is_none_or(|v| v == s.child.spi_out || v == s.child.spi_in) =>
                        {
                            Some(*m)
                        }
                        _ => None,
                    });
                    if let Some(Exchange::ExpectConnected(s)) =
                        mid.and_then(|m| self.exchanges.remove(&m))
                    {
                        self.install(c, ctx, s.child);
                    }
                }
                Payload::Notify(n) if n.ty == notify_type::INITIAL_CONTACT => {
                    ctx.drop_others.push((
                        c.peer.id,
                        self.peer_id.clone(),
                        if c.initiator { c.cky_i } else { c.cky_r },
                    ));
                }
                Payload::Notify(n) if notify_type::is_error(n.ty) => {
                    tracing::info!(peer = %c.remote, notify = n.ty, "v1: peer reported an error");
                    // An error about our quick mode (its SPI) ends that exchange.
                    let spi = n.spi.clone();
                    self.exchanges.retain(|_, x| match x {
                        Exchange::ExpectQuickMode2(s) => s.spi_in.to_be_bytes()[..] != spi[..],
                        _ => true,
                    });
                    ctx.event(Event::Rejected {
                        reason: V1Error::from(Incompatible::PeerRejected(n.ty)).reason(),
                        peer: c.remote,
                    });
                }
                Payload::Delete(d) if d.protocol == PROTO_IPSEC_ESP => {
                    for spi in &d.spis {
                        let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()).map(u32::from_be_bytes)
                        else {
                            continue;
                        };
                        // The sender names its inbound SA, our outbound (RFC 2408 §3.15).
                        if let Some(i) = self
                            .children
                            .iter()
                            .position(|ch| ch.spi_out == spi || ch.spi_in == spi)
                        {
                            let ch = self.children.remove(i);
                            remove_child(c, ctx, ch);
                        } else {
                            // Perhaps a Child SA that moved to a newer ISAKMP SA (`rekey`).
                            self.moved_deletes.push(spi);
                        }
                    }
                }
                Payload::Delete(d)
                    if d.protocol == PROTO_ISAKMP
                        && d.spis.iter().any(|s| s[..] == c.cookies()[..]) =>
                {
                    // `rekey::settle` closes it, after moving the Child SAs to another
                    // ISAKMP SA with the peer if there is one.
                    if !self.children.is_empty() {
                        self.peer_deleted = true;
                        return Ok(Flow::Continue);
                    }
                    return Ok(Flow::Close(DownReason::Peer));
                }
                _ => {}
            }
        }
        Ok(Flow::Continue)
    }

    /// QM1 (RFC 2409 §5.5): `HDR*, HASH(1), SA, Ni [, KE ] [, IDci, IDcr ]`.
    /// `rekey` names the Child SA a rekey replaces and its selectors (`rekey`); the rekey
    /// keeps that Child SA's configuration.
    fn start_quick_mode(
        &mut self,
        c: &Common,
        ctx: &mut Ctx<'_>,
        rekey: Option<(ChildSaId, TrafficSelector, TrafficSelector)>,
    ) -> Result<(), V1Error> {
        let config = rekey
            .and_then(|r| self.children.iter().find(|ch| ch.id == r.0))
            .map_or(ChildConfigIndex::FIRST, |ch| ch.config);
        self.start_quick_mode_at(c, ctx, config, rekey)
    }

    /// QM1 for quick mode configuration `config`: its first selector of each side as
    /// IDci/IDcr (one pair per quick mode), or a rekey's selectors.
    fn start_quick_mode_at(
        &mut self,
        c: &Common,
        ctx: &mut Ctx<'_>,
        config: ChildConfigIndex,
        rekey: Option<(ChildSaId, TrafficSelector, TrafficSelector)>,
    ) -> Result<(), V1Error> {
        let child = c
            .peer
            .child_config(config)
            .ok_or(Incompatible::NoProposalChosen)?;
        let local_ts = rekey.map(|r| r.1).unwrap_or_else(|| {
            child
                .local_ts
                .first()
                .copied()
                .unwrap_or_else(|| TrafficSelector::host(c.local.ip()))
        });
        let remote_ts = rekey.map(|r| r.2).unwrap_or_else(|| {
            child
                .remote_ts
                .first()
                .copied()
                .unwrap_or_else(|| TrafficSelector::host(c.remote.ip()))
        });
        let ids = (
            proposal::ts_id(&local_ts).ok_or(Incompatible::IdUnacceptable)?,
            proposal::ts_id(&remote_ts).ok_or(Incompatible::IdUnacceptable)?,
        );
        let props: Vec<_> = child
            .esp_proposals
            .iter()
            .filter(|p| c.peer.allow_legacy || !p.is_legacy())
            .copied()
            .collect();
        let suite = EspSuite {
            encr: props.first().ok_or(Incompatible::NoProposalChosen)?.encr,
            integ: None,
            pfs: child.pfs,
            mode: child.mode,
            life_secs: child.lifetime.lifetime.as_secs(),
            life_kb: child.lifetime_bytes.map(|b| b.hard / 1024),
        };
        let spi_in = ctx.spis.next();
        let offer = c.natt.encap_sa(proposal::esp_offer(spi_in, &props, &suite));
        let ni = ctx.nonce();
        let ke = match child.pfs {
            Some(g) => Some(KeyExchange::generate(g, ctx.rng)?),
            None => None,
        };
        let mut tail = vec![Payload::Sa(offer.clone()), Payload::Nonce(ni.clone())];
        if let Some(k) = &ke {
            tail.push(Payload::Ke(k.public().to_vec()));
        }
        tail.push(Payload::Id(ids.0.clone()));
        tail.push(Payload::Id(ids.1.clone()));
        tail.extend(c.natt.nat_oa(suite.mode, c.local.ip(), c.remote.ip()));
        let mid = self.fresh_mid(ctx);
        let iv = self.phase2_iv(mid);
        let (packet, next_iv) = self.protect(c, ExchangeType::Quick, 0, mid, &iv, &tail, |t| {
            self.prf_a(&[&mid.to_be_bytes(), t])
        });
        let retrans = c.send_retrans(ctx, packet);
        self.exchanges.insert(
            mid,
            Exchange::ExpectQuickMode2(Box::new(ExpectQuickMode2 {
                iv: next_iv,
                retrans,
                ni,
                ke,
                spi_in,
                offer,
                ids,
                local_ts,
                remote_ts,
                config,
                replaces: rekey.map(|r| r.0),
            })),
        );
        Ok(())
    }

    fn esp_keys(
        &self,
        suite: &EspSuite,
        gxy: Option<&Secret>,
        spi: u32,
        ni: &[u8],
        nr: &[u8],
    ) -> EspKeys {
        let elen = suite.encr.keymat_len();
        let len = elen + suite.integ.map_or(0, |i| i.key_len());
        let km = keys::quick_mode_keymat(
            self.suite.hash,
            &self.skeyid_d,
            gxy.map(Secret::expose),
            PROTO_IPSEC_ESP,
            spi,
            ni,
            nr,
            len,
        );
        // RFC 2401 convention for ESP: the cipher key first, then the integrity key; for
        // AES-GCM the 4-octet salt follows the key (RFC 4106 §8.1).
        let (e, a) = km.expose().split_at(elen);
        EspKeys {
            encr: Secret::from_slice(e),
            integ: suite.integ.map(|_| Secret::from_slice(a)),
        }
    }

    /// The responder's answer to QM1: `HDR*, HASH(2), SA, Nr [, KE ] [, IDci, IDcr ]`.
    fn quick_mode_1(
        &mut self,
        c: &Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        h: &Header,
        mid: u32,
        o: Opened,
    ) -> Result<(), V1Error> {
        let chain = &o.chain;
        let sa = sa_payload(chain)?;
        let ni = nonce_payload(chain)?.to_vec();
        let gxi = ke_payload(chain);
        let ids = id_payloads(chain);
        // RFC 2409 §5.5: without IDs the SA is for the ISAKMP peers' addresses.
        let (ts_i, ts_r) = match ids.as_slice() {
            [] => (
                TrafficSelector::host(c.remote.ip()),
                TrafficSelector::host(c.local.ip()),
            ),
            [ci, cr] => (
                proposal::id_ts(ci).ok_or(Incompatible::IdUnacceptable)?,
                proposal::id_ts(cr).ok_or(Incompatible::IdUnacceptable)?,
            ),
            _ => return Err(Misbehaved::MissingPayload("IDcr").into()),
        };
        // The first configuration whose selectors hold the peer's IDs (a crypto map's ACL
        // lines are one configuration each).
        let (config, child) = c
            .peer
            .child_configs()
            .find(|(_, ch)| {
                ts::is_subset(&[ts_r], &ch.local_ts) && ts::is_subset(&[ts_i], &ch.remote_ts)
            })
            .ok_or(Incompatible::IdUnacceptable)?;
        let props: Vec<_> = child
            .esp_proposals
            .iter()
            .filter(|p| c.peer.allow_legacy || !p.is_legacy())
            .copied()
            .collect();
        let spi_in = ctx.spis.next();
        let mut choice = proposal::esp_select(
            &crate::v1::natt::plain_sa(sa),
            &EspPolicy {
                proposals: &props,
                pfs: child.pfs,
                mode: child.mode,
                life_secs: child.lifetime.lifetime.as_secs(),
                life_kb: child.lifetime_bytes.map(|b| b.hard / 1024),
                allow_legacy: c.peer.allow_legacy,
            },
            spi_in,
        )?;
        choice.answer = c.natt.encap_sa(choice.answer);
        let (gxr, gxy) = match (choice.suite.pfs, gxi) {
            (Some(g), Some(gxi)) => {
                let ke = KeyExchange::generate(g, ctx.rng)?;
                let gxr = ke.public().to_vec();
                (
                    Some(gxr),
                    Some(ke.agree(gxi).map_err(|_| Misbehaved::BadKeData)?),
                )
            }
            (Some(_), None) => return Err(Misbehaved::MissingPayload("KE").into()),
            (None, Some(_)) => return Err(Misbehaved::BadKeData.into()),
            (None, None) => (None, None),
        };
        let nr = ctx.nonce();
        let mut tail = vec![
            Payload::Sa(choice.answer.clone()),
            Payload::Nonce(nr.clone()),
        ];
        if let Some(k) = gxr {
            tail.push(Payload::Ke(k));
        }
        for id in &ids {
            tail.push(Payload::Id((*id).clone()));
        }
        tail.extend(
            c.natt
                .nat_oa(choice.suite.mode, c.remote.ip(), c.local.ip()),
        );
        if choice.responder_lifetime {
            tail.push(Payload::Notify(Notify {
                doi: DOI_IPSEC,
                protocol: PROTO_IPSEC_ESP,
                ty: notify_type::RESPONDER_LIFETIME,
                spi: spi_in.to_be_bytes().to_vec(),
                data: proposal::responder_lifetime_data(&choice.suite),
            }));
        }
        let commit = h.is_commit();
        let flags = if commit { FLAG_COMMIT } else { 0 };
        let (packet, next_iv) =
            self.protect(c, ExchangeType::Quick, flags, mid, &o.next_iv, &tail, |t| {
                self.prf_a(&[&mid.to_be_bytes(), &ni, t])
            });
        let pending = PendingChild {
            config,
            suite: choice.suite,
            spi_in,
            spi_out: choice.peer_spi,
            inbound: self.esp_keys(&choice.suite, gxy.as_ref(), spi_in, &ni, &nr),
            outbound: self.esp_keys(&choice.suite, gxy.as_ref(), choice.peer_spi, &ni, &nr),
            local_ts: ts_r,
            remote_ts: ts_i,
            replaces: self.rekey_candidate(&ts_r, &ts_i),
            initiated: false,
            pre_installed: None,
        };
        let mut pending = pending;
        // A rekey's initiator sends on its new SA as soon as it has QM2 (it installs before
        // QM3): our inbound SA must exist before QM2 leaves. Our outbound one waits for QM3,
        // which says the initiator installed its inbound SA.
        if pending.replaces.is_some() {
            let id = ChildSaId(ctx.alloc_id());
            let inst = self.child_install(c, id, &pending, Halves::InboundFirst);
            ctx.out.push_back(Output::InstallChildSa(inst));
            pending.pre_installed = Some(id);
        }
        let retrans = c.send_retrans(ctx, packet);
        self.exchanges.insert(
            mid,
            Exchange::ExpectQuickMode3(Box::new(ExpectQuickMode3 {
                iv: next_iv,
                retrans,
                last_in: raw.to_vec(),
                ni,
                nr,
                child: pending,
                commit,
            })),
        );
        Ok(())
    }

    /// The initiator on QM2: check HASH(2), the choice and the IDs, derive KEYMAT, install,
    /// then send QM3 `HDR*, HASH(3)` (install before send: the responder may use the SA as
    /// soon as QM3 arrives).
    #[allow(clippy::too_many_arguments)]
    fn quick_mode_2(
        &mut self,
        c: &Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        h: &Header,
        mid: u32,
        st: ExpectQuickMode2,
        o: Opened,
    ) -> Result<Flow, V1Error> {
        let want = self.prf_a(&[&mid.to_be_bytes(), &st.ni, &o.covered]);
        if !ct_eq(want.expose(), &o.hash) {
            self.exchanges
                .insert(mid, Exchange::ExpectQuickMode2(Box::new(st)));
            return Err(Misbehaved::InvalidHash.into());
        }
        let chain = &o.chain;
        let sa = sa_payload(chain)?;
        let nr = nonce_payload(chain)?.to_vec();
        let (mut suite, spi_out) = proposal::esp_check_answer(
            &crate::v1::natt::plain_sa(sa),
            &crate::v1::natt::plain_sa(&st.offer),
        )?;
        let ids = id_payloads(chain);
        if !ids.is_empty() && (ids.len() != 2 || *ids[0] != st.ids.0 || *ids[1] != st.ids.1) {
            return Err(Misbehaved::IdsChanged.into());
        }
        for p in &chain.payloads {
            if let Payload::Notify(n) = p {
                if n.ty == notify_type::RESPONDER_LIFETIME {
                    proposal::apply_responder_lifetime(&mut suite, &n.data);
                }
            }
        }
        let gxr = ke_payload(chain);
        let gxy = match (st.ke, gxr) {
            (Some(ke), Some(gxr)) => Some(ke.agree(gxr).map_err(|_| Misbehaved::BadKeData)?),
            (Some(_), None) => return Err(Misbehaved::MissingPayload("KE").into()),
            (None, Some(_)) => return Err(Misbehaved::BadKeData.into()),
            (None, None) => None,
        };
        let pending = PendingChild {
            config: st.config,
            suite,
            spi_in: st.spi_in,
            spi_out,
            inbound: self.esp_keys(&suite, gxy.as_ref(), st.spi_in, &st.ni, &nr),
            outbound: self.esp_keys(&suite, gxy.as_ref(), spi_out, &st.ni, &nr),
            local_ts: st.local_ts,
            remote_ts: st.remote_ts,
            replaces: st.replaces,
            initiated: true,
            pre_installed: None,
        };
        let (qm3, _) = self.protect(c, ExchangeType::Quick, 0, mid, &o.next_iv, &[], |_| {
            self.prf_a(&[&[0], &mid.to_be_bytes(), &st.ni, &nr])
        });
        if h.is_commit() {
            // RFC 2409 §5.5: the responder committed; its CONNECTED notify says when the
            // SA may carry traffic.
            let until = crate::sa::later(ctx.now, DONE_LINGER);
            self.exchanges.insert(
                mid,
                Exchange::ExpectConnected(Box::new(ExpectConnected {
                    child: pending,
                    until,
                })),
            );
            c.send(ctx, qm3.clone());
        } else {
            self.install(c, ctx, pending);
            c.send(ctx, qm3.clone());
        }
        self.remember(ctx, mid, raw, Some(qm3));
        Ok(Flow::Continue)
    }

    /// The responder on QM3: `HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)`.
    fn quick_mode_3(
        &mut self,
        c: &Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        mid: u32,
        st: ExpectQuickMode3,
        o: Opened,
    ) -> Result<Flow, V1Error> {
        let want = self.prf_a(&[&[0], &mid.to_be_bytes(), &st.ni, &st.nr]);
        if !ct_eq(want.expose(), &o.hash) {
            self.exchanges
                .insert(mid, Exchange::ExpectQuickMode3(Box::new(st)));
            return Err(Misbehaved::InvalidHash.into());
        }
        let spi_in = st.child.spi_in;
        self.install(c, ctx, st.child);
        if st.commit {
            self.send_notify(
                c,
                ctx,
                PROTO_IPSEC_ESP,
                spi_in.to_be_bytes().to_vec(),
                notify_type::CONNECTED,
            );
        }
        self.remember(ctx, mid, raw, None);
        Ok(Flow::Continue)
    }

    /// The Child SA in the IKEv2 engine's form, for the kernel.
    fn child_install(
        &self,
        c: &Common,
        id: ChildSaId,
        p: &PendingChild,
        halves: Halves,
    ) -> ChildSaInstall {
        let hard = Duration::from_secs(p.suite.life_secs);
        let bytes = p.suite.life_kb.map(|kb| {
            let hard = kb.saturating_mul(1024);
            crate::config::ByteLimits {
                soft: hard - hard / 10,
                hard,
            }
        });
        ChildSaInstall {
            child: id,
            replaces: p.replaces,
            session: c.session,
            conn: c.peer.id,
            config: p.config,
            host_pair: None,
            local: c.local,
            remote: c.remote,
            inbound_spi: p.spi_in,
            outbound_spi: p.spi_out,
            encr: p.suite.encr,
            integ: p.suite.integ,
            esn: false,
            inbound: p.inbound.clone(),
            outbound: p.outbound.clone(),
            local_ts: vec![p.local_ts],
            remote_ts: vec![p.remote_ts],
            mode: p.suite.mode,
            encap: c.natt.encap(c.local, c.remote),
            hard_lifetime: hard,
            bytes,
            halves,
        }
    }

    /// Hands the Child SA to the driver in the IKEv2 engine's form. A rekey goes in two
    /// steps ([`Halves`]): as responder the inbound SA went in with QM2 and the outbound one
    /// goes now; as initiator the inbound one goes now and the outbound one after
    /// [`rekey::OUTBOUND_DELAY`], by when the responder has handled QM3 and installed its
    /// inbound SA, while the old pair carries the traffic.
    fn install(&mut self, c: &Common, ctx: &mut Ctx<'_>, p: PendingChild) {
        let hard = Duration::from_secs(p.suite.life_secs);
        let mut outbound_later = None;
        let id = match p.pre_installed {
            Some(id) => {
                let inst = self.child_install(c, id, &p, Halves::OutboundLater);
                ctx.out.push_back(Output::InstallChildSa(inst));
                id
            }
            None if p.replaces.is_some() && p.initiated => {
                let id = ChildSaId(ctx.alloc_id());
                let inst = self.child_install(c, id, &p, Halves::InboundFirst);
                ctx.out.push_back(Output::InstallChildSa(inst));
                let later = self.child_install(c, id, &p, Halves::OutboundLater);
                outbound_later = Some((
                    crate::sa::later(ctx.now, rekey::OUTBOUND_DELAY),
                    Box::new(later),
                ));
                id
            }
            None => {
                let id = ChildSaId(ctx.alloc_id());
                let inst = self.child_install(c, id, &p, Halves::Both);
                ctx.out.push_back(Output::InstallChildSa(inst));
                id
            }
        };
        ctx.stats.child_sas_installed += 1;
        match p.replaces {
            Some(old) => ctx.event(Event::ChildSaRekeyed {
                old,
                new: id,
                session: c.session,
            }),
            None => ctx.event(Event::ChildSaUp {
                child: id,
                session: c.session,
                conn: c.peer.id,
                config: p.config,
            }),
        }
        let r = ChildRekey::new(
            c,
            ctx,
            (p.local_ts, p.remote_ts),
            p.replaces,
            p.initiated,
            hard,
        );
        self.children.push(Child {
            id,
            config: p.config,
            spi_in: p.spi_in,
            spi_out: p.spi_out,
            expire_at: crate::sa::later(ctx.now, hard),
            remove: ChildSaRemove {
                child: id,
                session: c.session,
                conn: c.peer.id,
                local: c.local,
                remote: c.remote,
                inbound_spi: p.spi_in,
                outbound_spi: p.spi_out,
            },
            r,
            outbound_later,
        });
        self.after_install(c, ctx, id);
    }
}

/// A decrypted phase 2 message.
struct Opened {
    chain: Chain,
    hash: Vec<u8>,
    covered: Vec<u8>,
    next_iv: Vec<u8>,
}
