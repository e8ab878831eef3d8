//! Kernel objects described as plain data.
//!
//! An [`SaSpec`] or [`PolicySpec`] is built, logged and compared like any value, then handed to
//! [`crate::SaHandle`] / [`crate::PolicyHandle`] (or a [`crate::Batch`]) to be executed. Dumps
//! come back as the same types, so "desired" and "actual" compare with `==`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use zeroize::Zeroizing;

/// Key material for one algorithm. The bytes live in a zeroizing buffer, are never printed, and
/// are copied only into the (also zeroizing) netlink send buffer when a request is emitted.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// Takes ownership of `bytes` without copying them.
    pub fn new(bytes: Vec<u8>) -> Self {
        Key(Zeroizing::new(bytes))
    }

    /// Copies `bytes` (e.g. from an IKE secret) into a new key.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Key(Zeroizing::new(bytes.to_vec()))
    }

    /// Key length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the zero-length key of `ecb(cipher_null)`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<redacted {} bytes>)", self.0.len())
    }
}

/// Security Parameter Index. `Debug` prints hex, as `ip xfrm` does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Spi(pub u32);

impl fmt::Debug for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spi({:#010x})", self.0)
    }
}

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// IPsec protocol of an SA or template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    /// ESP, IP protocol 50 (`proto esp`).
    #[default]
    Esp,
    /// AH, IP protocol 51 (`proto ah`).
    Ah,
    /// IPComp, IP protocol 108 (`proto comp`).
    Comp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Esp => 50,
            Proto::Ah => 51,
            Proto::Comp => 108,
        }
    }

    /// Inverse of [`Proto::number`].
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            50 => Some(Proto::Esp),
            51 => Some(Proto::Ah),
            108 => Some(Proto::Comp),
            _ => None,
        }
    }
}

/// Encapsulation mode (`mode tunnel` / `mode transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// `mode transport` (XFRM_MODE_TRANSPORT = 0).
    Transport,
    /// `mode tunnel` (XFRM_MODE_TUNNEL = 1). VTIs and xfrm interfaces need this.
    #[default]
    Tunnel,
}

impl Mode {
    pub(crate) fn to_kernel(self) -> u8 {
        match self {
            Mode::Transport => netlink_packet_xfrm::XFRM_MODE_TRANSPORT,
            Mode::Tunnel => netlink_packet_xfrm::XFRM_MODE_TUNNEL,
        }
    }
}

/// A netfilter mark and mask (`mark V mask M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mark {
    /// Mark value.
    pub value: u32,
    /// Mask applied before comparing.
    pub mask: u32,
}

impl Mark {
    /// A mark that must match all 32 bits (`mark V mask 0xffffffff`).
    pub fn exact(value: u32) -> Self {
        Mark {
            value,
            mask: u32::MAX,
        }
    }
}

/// AEAD transforms (`aead NAME KEY ICV_BITS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AeadAlg {
    /// `rfc4106(gcm(aes))` with a 128-bit ICV; key = AES-128/256 key + 4-byte salt (RFC 4106 §8.1).
    AesGcm16,
    /// `rfc7539esp(chacha20,poly1305)` (RFC 7634); key = 32-byte key + 4-byte salt, ICV 128.
    ChaCha20Poly1305,
    /// Any other kernel AEAD name with its ICV length in bits.
    Other {
        /// Kernel crypto name.
        name: String,
        /// ICV length in bits.
        icv_bits: u32,
    },
}

impl AeadAlg {
    /// Kernel crypto API name.
    pub fn name(&self) -> &str {
        match self {
            AeadAlg::AesGcm16 => "rfc4106(gcm(aes))",
            AeadAlg::ChaCha20Poly1305 => "rfc7539esp(chacha20,poly1305)",
            AeadAlg::Other { name, .. } => name,
        }
    }

    /// ICV length in bits.
    pub fn icv_bits(&self) -> u32 {
        match self {
            AeadAlg::AesGcm16 | AeadAlg::ChaCha20Poly1305 => 128,
            AeadAlg::Other { icv_bits, .. } => *icv_bits,
        }
    }

    pub(crate) fn from_kernel(name: &str, icv_bits: u32) -> Self {
        match (name, icv_bits) {
            ("rfc4106(gcm(aes))", 128) => AeadAlg::AesGcm16,
            ("rfc7539esp(chacha20,poly1305)", 128) => AeadAlg::ChaCha20Poly1305,
            _ => AeadAlg::Other {
                name: name.to_string(),
                icv_bits,
            },
        }
    }
}

/// Ciphers for cipher+integrity SAs (`enc NAME KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cipher {
    /// `cbc(aes)`, 16/24/32-byte key.
    AesCbc,
    /// `cbc(des3_ede)`, 24-byte key; legacy (RFC 8221 says MAY NOT).
    TripleDesCbc,
    /// `ecb(cipher_null)`, empty key; no confidentiality.
    Null,
    /// Any other kernel cipher name.
    Other(String),
}

impl Cipher {
    /// Kernel crypto API name.
    pub fn name(&self) -> &str {
        match self {
            Cipher::AesCbc => "cbc(aes)",
            Cipher::TripleDesCbc => "cbc(des3_ede)",
            Cipher::Null => "ecb(cipher_null)",
            Cipher::Other(n) => n,
        }
    }

    pub(crate) fn from_kernel(name: &str) -> Self {
        match name {
            "cbc(aes)" => Cipher::AesCbc,
            "cbc(des3_ede)" => Cipher::TripleDesCbc,
            "ecb(cipher_null)" => Cipher::Null,
            n => Cipher::Other(n.to_string()),
        }
    }
}

/// Integrity algorithms, always sent as XFRMA_ALG_AUTH_TRUNC (`auth-trunc NAME KEY BITS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integ {
    /// `hmac(sha1)` truncated to 96 bits (RFC 2404); legacy.
    HmacSha1_96,
    /// `hmac(sha256)` truncated to 128 bits (RFC 4868 §2.3).
    HmacSha256_128,
    /// `hmac(sha384)` truncated to 192 bits (RFC 4868 §2.3).
    HmacSha384_192,
    /// `hmac(sha512)` truncated to 256 bits (RFC 4868 §2.3).
    HmacSha512_256,
    /// Any other kernel name and truncation.
    Other {
        /// Kernel crypto name.
        name: String,
        /// Truncation length in bits.
        trunc_bits: u32,
    },
}

impl Integ {
    /// Kernel crypto API name.
    pub fn name(&self) -> &str {
        match self {
            Integ::HmacSha1_96 => "hmac(sha1)",
            Integ::HmacSha256_128 => "hmac(sha256)",
            Integ::HmacSha384_192 => "hmac(sha384)",
            Integ::HmacSha512_256 => "hmac(sha512)",
            Integ::Other { name, .. } => name,
        }
    }

    /// Truncation length in bits.
    pub fn trunc_bits(&self) -> u32 {
        match self {
            Integ::HmacSha1_96 => 96,
            Integ::HmacSha256_128 => 128,
            Integ::HmacSha384_192 => 192,
            Integ::HmacSha512_256 => 256,
            Integ::Other { trunc_bits, .. } => *trunc_bits,
        }
    }

    pub(crate) fn from_kernel(name: &str, trunc_bits: u32) -> Self {
        match (name, trunc_bits) {
            ("hmac(sha1)", 96) => Integ::HmacSha1_96,
            ("hmac(sha256)", 128) => Integ::HmacSha256_128,
            ("hmac(sha384)", 192) => Integ::HmacSha384_192,
            ("hmac(sha512)", 256) => Integ::HmacSha512_256,
            _ => Integ::Other {
                name: name.to_string(),
                trunc_bits,
            },
        }
    }
}

/// The transforms of an SA. Keys are [`Key`]s and never appear in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crypto {
    /// An AEAD (XFRMA_ALG_AEAD).
    Aead {
        /// Algorithm.
        alg: AeadAlg,
        /// Key including salt.
        key: Key,
    },
    /// A cipher (XFRMA_ALG_CRYPT) plus truncated HMAC (XFRMA_ALG_AUTH_TRUNC).
    CipherAuth {
        /// Cipher.
        cipher: Cipher,
        /// Cipher key.
        cipher_key: Key,
        /// Integrity algorithm.
        integ: Integ,
        /// Integrity key.
        integ_key: Key,
    },
    /// Integrity only (AH, or ESP-NULL authentication-only): XFRMA_ALG_AUTH_TRUNC.
    AuthOnly {
        /// Integrity algorithm.
        integ: Integ,
        /// Integrity key.
        integ_key: Key,
    },
}

/// Soft and hard lifetimes (`limit ...`). `None` means no limit (XFRM_INF for byte/packet
/// limits, 0 for time limits, as the kernel expects).
///
/// The kernel sends XFRM_MSG_EXPIRE with `hard = 0` when a soft limit is crossed (the rekey
/// trigger) and with `hard = 1` when a hard limit is crossed, after which it deletes the SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// `limit byte-soft`.
    pub soft_bytes: Option<u64>,
    /// `limit byte-hard`.
    pub hard_bytes: Option<u64>,
    /// `limit packet-soft`.
    pub soft_packets: Option<u64>,
    /// `limit packet-hard`.
    pub hard_packets: Option<u64>,
    /// `limit time-soft` (seconds since add).
    pub soft_add_secs: Option<u64>,
    /// `limit time-hard` (seconds since add).
    pub hard_add_secs: Option<u64>,
    /// `limit time-use-soft` (seconds since first use).
    pub soft_use_secs: Option<u64>,
    /// `limit time-use-hard` (seconds since first use).
    pub hard_use_secs: Option<u64>,
}

/// NAT-T encapsulation (`encap espinudp SPORT DPORT OADDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    /// Source UDP port (our side for outbound SAs).
    pub sport: u16,
    /// Destination UDP port.
    pub dport: u16,
    /// Original address before NAT (`encap_oa`); unspecified when unknown.
    pub oa: Option<IpAddr>,
}

/// New UDP encapsulation ports for an installed SA, the rest of it unchanged: what a NAT
/// rebinding needs (RFC 7296 §2.23, RFC 3948). See [`crate::SaHandle::update_encap`].
///
/// Equivalent to: `ip xfrm state update src SRC dst DST proto esp spi SPI ... encap espinudp
/// SPORT DPORT 0.0.0.0`, where `...` repeats the SA as installed (keys, mode, reqid, marks),
/// since an update carries the whole SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncapUpdate {
    /// The SA.
    pub id: SaId,
    /// Its new encapsulation.
    pub encap: Encap,
}

/// An SA's direction (XFRMA_SA_DIR: XFRM_SA_DIR_IN = 1, XFRM_SA_DIR_OUT = 2 in
/// include/uapi/linux/xfrm.h, Linux 6.10+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaDir {
    /// `dir in`: decrypts what arrives.
    In,
    /// `dir out`: encrypts what leaves.
    Out,
}

impl SaDir {
    /// The attribute's value.
    pub fn to_kernel(self) -> u8 {
        match self {
            SaDir::In => 1,
            SaDir::Out => 2,
        }
    }

    /// From the attribute's value.
    pub fn from_kernel(v: u8) -> Option<Self> {
        match v {
            1 => Some(SaDir::In),
            2 => Some(SaDir::Out),
            _ => None,
        }
    }
}

/// Hardware offload request (`offload [crypto|packet] dev DEV dir in|out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
    /// Interface index of the offloading device.
    pub ifindex: u32,
    /// True for inbound SAs (XFRM_OFFLOAD_INBOUND).
    pub inbound: bool,
    /// Packet offload (XFRM_OFFLOAD_PACKET) instead of crypto offload. There is no software
    /// fallback: the kernel returns an error if the device cannot do it.
    pub packet: bool,
}

/// Traffic selector (`sel src A dst B proto P sport S dport D` / policy `src A dst B ...`).
///
/// Ports are matched exactly (mask 0xffff) when given; the kernel can only match value/mask
/// blocks, so ranges must be expanded by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selector {
    /// Source prefix.
    pub src: IpNet,
    /// Destination prefix.
    pub dst: IpNet,
    /// IP protocol, 0 = any.
    pub proto: u8,
    /// Source port (or ICMP type), `None` = any.
    pub sport: Option<u16>,
    /// Destination port (or ICMP code), `None` = any.
    pub dport: Option<u16>,
    /// Output interface index (XFRM only checks it on output), 0 = any.
    pub ifindex: i32,
}

impl Selector {
    /// Selector for all traffic between `src` and `dst`, any protocol.
    pub fn new(src: IpNet, dst: IpNet) -> Self {
        Selector {
            src,
            dst,
            proto: 0,
            sport: None,
            dport: None,
            ifindex: 0,
        }
    }

    /// `0.0.0.0/0 ↔ 0.0.0.0/0` (or `::/0`), what VTIs and xfrm interfaces use.
    pub fn any(v6: bool) -> Self {
        let any: IpNet = if v6 {
            IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0).expect("prefix 0 is valid")
        } else {
            IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).expect("prefix 0 is valid")
        };
        Selector::new(any, any)
    }

    /// `proto P`.
    pub fn proto(mut self, proto: u8) -> Self {
        self.proto = proto;
        self
    }

    /// `sport S` (exact).
    pub fn sport(mut self, port: u16) -> Self {
        self.sport = Some(port);
        self
    }

    /// `dport D` (exact).
    pub fn dport(mut self, port: u16) -> Self {
        self.dport = Some(port);
        self
    }

    /// True for an IPv6 selector.
    pub fn is_v6(&self) -> bool {
        matches!(self.src, IpNet::V6(_))
    }
}

/// One Security Association.
///
/// Equivalent to: `ip xfrm state add src SRC dst DST proto esp spi SPI mode tunnel reqid R
/// [aead|enc+auth-trunc ...] [replay-window W] [flag esn] [limit ...] [mark M] [output-mark M]
/// [if_id I] [encap espinudp S D OA] [offload [packet] dev DEV dir in|out] [sel ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaSpec {
    /// Outer source address (`src`).
    pub src: IpAddr,
    /// Outer destination address (`dst`); with `spi` and `proto` the SA's key.
    pub dst: IpAddr,
    /// `proto`.
    pub proto: Proto,
    /// `spi`.
    pub spi: Spi,
    /// `mode`.
    pub mode: Mode,
    /// `reqid`; ties policies' templates to SAs. See the crate docs for the ownership range.
    pub reqid: u32,
    /// Transforms; `None` only for larval SAs returned by ALLOCSPI dumps.
    pub crypto: Option<Crypto>,
    /// Replay window in packets (`replay-window`); 0 disables replay protection (outbound SAs).
    pub replay_window: u32,
    /// Extended sequence numbers (`flag esn`, RFC 4303 §2.2.1).
    pub esn: bool,
    /// `limit ...`.
    pub lifetime: Lifetime,
    /// SA lookup mark (`mark`); ip_vti inbound SAs need mark = ikey.
    pub mark: Option<Mark>,
    /// Mark put on packets after transformation (`output-mark`, XFRMA_SET_MARK/_MASK).
    pub set_mark: Option<Mark>,
    /// xfrm interface id (`if_id`), XFRMA_IF_ID.
    pub if_id: Option<u32>,
    /// NAT-T UDP encapsulation (`encap espinudp`).
    pub encap: Option<Encap>,
    /// For an inbound encapsulated SA: report a peer's new NAT mapping at most once per this
    /// many seconds per new source port (XFRMA_MTIMER_THRESH; `ip xfrm` has no keyword for
    /// it). Without it the kernel sends XFRM_MSG_MAPPING for every packet from the new port
    /// (6.1 net/xfrm/xfrm_state.c `km_new_mapping`); the kernel refuses it without `encap`.
    pub mapping_threshold: Option<u32>,
    /// Hardware offload (`offload`).
    pub offload: Option<Offload>,
    /// The SA's direction (`dir in|out`, XFRMA_SA_DIR, Linux 6.10+). With it the kernel uses
    /// an SA only in that direction (an outbound SA never decrypts what arrives with its SPI)
    /// and checks its attributes against it: an outbound SA has no replay window or replay
    /// bitmap, an inbound one no output-only flags (6.12 net/xfrm/xfrm_user.c
    /// verify_newsa_info, verify_replay). Kernels before 6.10 skip the attribute without a
    /// word (its number is past their XFRMA_MAX), so set it where [`SaHandle::supports_dir`]
    /// said yes; dumps report it only from kernels that keep it.
    ///
    /// [`SaHandle::supports_dir`]: crate::SaHandle::supports_dir
    pub dir: Option<SaDir>,
    /// Inner traffic selector (`sel ...`); `None` = any (the kernel reports a zero selector of
    /// the SA's family, which dumps map back to `None`).
    pub selector: Option<Selector>,
}

impl SaSpec {
    /// A tunnel-mode ESP SA with the given transforms, replay window 32 and infinite lifetime.
    pub fn new(src: IpAddr, dst: IpAddr, spi: Spi, crypto: Crypto) -> Self {
        SaSpec {
            src,
            dst,
            proto: Proto::Esp,
            spi,
            mode: Mode::Tunnel,
            reqid: 0,
            crypto: Some(crypto),
            replay_window: 32,
            esn: false,
            lifetime: Lifetime::default(),
            mark: None,
            set_mark: None,
            if_id: None,
            encap: None,
            mapping_threshold: None,
            offload: None,
            dir: None,
            selector: None,
        }
    }

    /// `dir in|out` (XFRMA_SA_DIR): see [`SaSpec::dir`].
    pub fn dir(mut self, d: SaDir) -> Self {
        self.dir = Some(d);
        self
    }

    /// `mode transport|tunnel`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// `reqid R`.
    pub fn reqid(mut self, reqid: u32) -> Self {
        self.reqid = reqid;
        self
    }

    /// `replay-window W` (uses XFRMA_REPLAY_ESN_VAL when W > 32 or ESN is on).
    pub fn replay_window(mut self, w: u32) -> Self {
        self.replay_window = w;
        self
    }

    /// `flag esn`.
    pub fn esn(mut self, on: bool) -> Self {
        self.esn = on;
        self
    }

    /// `limit ...`.
    pub fn lifetime(mut self, l: Lifetime) -> Self {
        self.lifetime = l;
        self
    }

    /// `mark V mask M`.
    pub fn mark(mut self, m: Mark) -> Self {
        self.mark = Some(m);
        self
    }

    /// `output-mark V mask M`.
    pub fn set_mark(mut self, m: Mark) -> Self {
        self.set_mark = Some(m);
        self
    }

    /// `if_id I`.
    pub fn if_id(mut self, id: u32) -> Self {
        self.if_id = Some(id);
        self
    }

    /// `encap espinudp SPORT DPORT OA`.
    pub fn encap(mut self, e: Encap) -> Self {
        self.encap = Some(e);
        self
    }

    /// XFRMA_MTIMER_THRESH (no `ip xfrm` keyword): see [`SaSpec::mapping_threshold`].
    pub fn mapping_threshold(mut self, secs: u32) -> Self {
        self.mapping_threshold = Some(secs);
        self
    }

    /// `offload [packet] dev DEV dir in|out`.
    pub fn offload(mut self, o: Offload) -> Self {
        self.offload = Some(o);
        self
    }

    /// `sel src A dst B ...`.
    pub fn selector(mut self, s: Selector) -> Self {
        self.selector = Some(s);
        self
    }

    /// The SA's key (`ip xfrm state get|delete src SRC dst DST proto P spi SPI`).
    pub fn id(&self) -> SaId {
        SaId {
            src: Some(self.src),
            dst: self.dst,
            proto: self.proto,
            spi: self.spi,
            mark: self.mark,
            if_id: self.if_id,
        }
    }
}

/// The key that identifies an SA for get/delete: `(dst, spi, proto)` plus the mark and if_id
/// the SA was installed with (the kernel's lookup includes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SaId {
    /// Source address (sent as XFRMA_SRCADDR; optional for the kernel lookup).
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: IpAddr,
    /// Protocol.
    pub proto: Proto,
    /// SPI.
    pub spi: Spi,
    /// Lookup mark.
    pub mark: Option<Mark>,
    /// Interface id.
    pub if_id: Option<u32>,
}

/// Traffic counters of an SA as the kernel reports them (`ip -s xfrm state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaCounters {
    /// Bytes processed (`lifetime current: N(bytes)`).
    pub bytes: u64,
    /// Packets processed.
    pub packets: u64,
    /// Add time, seconds since the epoch.
    pub add_time: u64,
    /// First use time, seconds since the epoch (0 = never used).
    pub use_time: u64,
    /// Packets dropped by the replay check (`stats: replay-window N replay N failed N`).
    pub replay: u32,
    /// Packets dropped for a failed integrity check.
    pub integrity_failed: u32,
    /// Packets dropped because they were outside the replay window.
    pub replay_window_drops: u32,
}

/// An SA read back from the kernel: the spec plus live data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaState {
    /// What is installed.
    pub spec: SaSpec,
    /// Counters.
    pub counters: SaCounters,
    /// Kernel sequence number of the SA (the ACQUIRE seq for larval SAs).
    pub seq: u32,
}

/// Policy direction (`dir in|out|fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// `dir in` (XFRM_POLICY_IN).
    In,
    /// `dir out` (XFRM_POLICY_OUT).
    Out,
    /// `dir fwd` (XFRM_POLICY_FWD); needed for routed tunnel-mode traffic.
    Fwd,
}

impl Dir {
    pub(crate) fn to_kernel(self) -> u8 {
        match self {
            Dir::In => netlink_packet_xfrm::XFRM_POLICY_IN,
            Dir::Out => netlink_packet_xfrm::XFRM_POLICY_OUT,
            Dir::Fwd => netlink_packet_xfrm::XFRM_POLICY_FWD,
        }
    }

    pub(crate) fn from_kernel(d: u8) -> Option<Self> {
        match d {
            0 => Some(Dir::In),
            1 => Some(Dir::Out),
            2 => Some(Dir::Fwd),
            _ => None,
        }
    }
}

/// Policy action (`action allow|block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Action {
    /// `action allow`: with templates, protect; without, bypass.
    #[default]
    Allow,
    /// `action block`: drop.
    Block,
}

/// Template level (`level required|use`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Level {
    /// `level required`: traffic must be transformed.
    #[default]
    Required,
    /// `level use` (optional = 1): transform when an SA exists, else pass in clear.
    Use,
}

/// One policy template (`tmpl src A dst B proto esp spi S mode M reqid R level L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Template {
    /// Tunnel source (`None` for transport mode).
    pub src: Option<IpAddr>,
    /// Tunnel destination (`None` for transport mode).
    pub dst: Option<IpAddr>,
    /// Protocol.
    pub proto: Proto,
    /// Required SPI, 0 = any.
    pub spi: Spi,
    /// Mode.
    pub mode: Mode,
    /// reqid that SAs must carry to be used by this template (0 = any).
    pub reqid: u32,
    /// Level.
    pub level: Level,
}

impl Template {
    /// A required tunnel-mode ESP template between two tunnel endpoints.
    pub fn tunnel(src: IpAddr, dst: IpAddr, reqid: u32) -> Self {
        Template {
            src: Some(src),
            dst: Some(dst),
            proto: Proto::Esp,
            spi: Spi(0),
            mode: Mode::Tunnel,
            reqid,
            level: Level::Required,
        }
    }

    /// A required transport-mode ESP template.
    pub fn transport(reqid: u32) -> Self {
        Template {
            src: None,
            dst: None,
            proto: Proto::Esp,
            spi: Spi(0),
            mode: Mode::Transport,
            reqid,
            level: Level::Required,
        }
    }
}

/// One Security Policy Database entry.
///
/// Equivalent to: `ip xfrm policy add src A dst B [proto P [sport S] [dport D]] dir DIR
/// [priority N] [index I] [action allow|block] [mark M] [if_id I] [tmpl ...]...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// `src/dst/proto/sport/dport`.
    pub selector: Selector,
    /// `dir`.
    pub dir: Dir,
    /// `priority`; lower value = preferred. See the crate docs for the ownership band.
    pub priority: u32,
    /// `index`; 0 lets the kernel choose (the dump reports the chosen one).
    pub index: u32,
    /// `action`.
    pub action: Action,
    /// `tmpl ...`, applied in order (first = innermost).
    pub templates: Vec<Template>,
    /// `mark`; ip_vti policies carry mark = key.
    pub mark: Option<Mark>,
    /// `if_id`.
    pub if_id: Option<u32>,
    /// Packet offload of the policy (`offload packet dev DEV`); FWD is never offloaded.
    pub offload: Option<Offload>,
}

impl PolicySpec {
    /// An allow policy with no templates (a bypass) for `selector` in `dir`.
    pub fn new(selector: Selector, dir: Dir) -> Self {
        PolicySpec {
            selector,
            dir,
            priority: 0,
            index: 0,
            action: Action::Allow,
            templates: Vec::new(),
            mark: None,
            if_id: None,
            offload: None,
        }
    }

    /// `priority N`.
    pub fn priority(mut self, p: u32) -> Self {
        self.priority = p;
        self
    }

    /// `index I`.
    pub fn index(mut self, i: u32) -> Self {
        self.index = i;
        self
    }

    /// `action allow|block`.
    pub fn action(mut self, a: Action) -> Self {
        self.action = a;
        self
    }

    /// Appends `tmpl ...`.
    pub fn template(mut self, t: Template) -> Self {
        self.templates.push(t);
        self
    }

    /// `mark V mask M`.
    pub fn mark(mut self, m: Mark) -> Self {
        self.mark = Some(m);
        self
    }

    /// `if_id I`.
    pub fn if_id(mut self, id: u32) -> Self {
        self.if_id = Some(id);
        self
    }

    /// `offload packet dev DEV`: the policy lookup itself moves into the NIC, which packet
    /// offload (XFRM_OFFLOAD_PACKET) of the SAs needs for traffic to be steered to them in
    /// hardware. The kernel accepts it from Linux 6.2 (xfrm_dev_policy_add), for packet mode
    /// only and never on FWD policies (checked when the request is built). Kernels before 6.2
    /// ignore the attribute on policies; [`crate::PolicyHandle::add`] reads the policy back
    /// and reports that as [`crate::Error::PolicyOffloadNotApplied`].
    pub fn offload(mut self, ifindex: u32) -> Self {
        self.offload = Some(Offload {
            ifindex,
            inbound: self.dir == Dir::In,
            packet: true,
        });
        self
    }

    /// The policy's key by kernel index (valid after the kernel assigned or accepted it).
    pub fn index_id(&self) -> PolicyId {
        PolicyId::Index {
            index: self.index,
            dir: self.dir,
            mark: self.mark,
            if_id: self.if_id,
        }
    }

    /// The policy's key for get/delete (`ip xfrm policy get|delete sel... dir D [mark] [if_id]`).
    pub fn id(&self) -> PolicyId {
        PolicyId::Selector {
            selector: self.selector,
            dir: self.dir,
            mark: self.mark,
            if_id: self.if_id,
        }
    }
}

/// How to name a policy for get/delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyId {
    /// By selector and direction (plus mark and if_id, which the kernel compares too).
    Selector {
        /// Selector.
        selector: Selector,
        /// Direction.
        dir: Dir,
        /// Mark.
        mark: Option<Mark>,
        /// Interface id.
        if_id: Option<u32>,
    },
    /// By kernel index and direction (`ip xfrm policy get index I dir D [mark M] [if_id I]`).
    /// xfrm_policy_byid() also compares mark and if_id, so they must be given when set.
    Index {
        /// Index.
        index: u32,
        /// Direction.
        dir: Dir,
        /// Mark the policy carries.
        mark: Option<Mark>,
        /// if_id the policy carries.
        if_id: Option<u32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_keys() {
        let sa = SaSpec::new(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            Spi(0x1234),
            Crypto::Aead {
                alg: AeadAlg::AesGcm16,
                key: Key::new(vec![0xab; 20]),
            },
        );
        let s = format!("{sa:?}");
        assert!(
            !s.to_lowercase().contains("ab, ab") && !s.contains("171"),
            "{s}"
        );
        assert!(s.contains("redacted"), "{s}");
        assert!(s.contains("0x00001234"), "{s}");
    }
}
