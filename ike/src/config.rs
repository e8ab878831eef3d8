//! Typed engine configuration. The agent translates its TOML into these types; the engine never
//! sees the file format. Defaults follow RFC 7296 and strongSwan where the RFC leaves a choice.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::{Arc, OnceLock};

use crate::crypto::PrfKey;
use crate::secret::Secret;
use crate::transform::AddKes;
use crate::transform::DhGroup;
use crate::transform::Encr;
use crate::transform::Esn;
use crate::transform::Integ;
use crate::transform::Prf;
use crate::wire::Identity;
use crate::wire::TrafficSelector;

/// Engine-wide settings and the connections it knows.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Connection profiles, each initiable by [`crate::Command::Initiate`] and matched by
    /// address and identity when a peer initiates.
    pub peers: Vec<PeerConfig>,
    /// Retransmission schedule for requests (RFC 7296 §2.1).
    pub retransmit: RetransmitConfig,
    /// What new IKE SAs a responder admits, and when it asks for a COOKIE first.
    pub limits: Limits,
    /// Largest IKE datagram (IP payload excluded) sent unfragmented; above it protected
    /// messages are split per RFC 7383 when the peer supports it.
    pub fragment_size: usize,
    /// Interval of NAT-T keepalives when we are behind a NAT (RFC 3948 §4, strongSwan: 20 s).
    pub nat_keepalive: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            retransmit: RetransmitConfig::default(),
            limits: Limits::default(),
            fragment_size: 1280,
            nat_keepalive: Duration::from_secs(20),
        }
    }
}

/// The responder's front door: how many half-open SAs (IKE_SA_INIT answered, IKE_AUTH not
/// yet received) it keeps, in all and per source address, and when it stops keeping state for
/// a new IKE_SA_INIT until the initiator has echoed a COOKIE (RFC 7296 §2.6), which proves it
/// receives at the address it claims. A half-open SA counts against the address its
/// IKE_SA_INIT came from. Defaults are strongSwan's (`cookie_threshold`,
/// `cookie_threshold_ip`, `block_threshold`, `half_open_timeout`, `ikesa_limit`), except that
/// the total half-open count is capped (strongSwan's `init_limit_half_open` is unlimited by
/// default): the cap bounds the memory a flood of echoed cookies can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Half-open SAs in all at which every new IKE_SA_INIT must carry a valid COOKIE.
    pub cookie_threshold: usize,
    /// Half-open SAs from one source address at which its new IKE_SA_INITs must carry a
    /// valid COOKIE.
    pub cookie_threshold_per_source: usize,
    /// Half-open SAs in all at which new IKE_SA_INITs are dropped unanswered.
    pub half_open_limit: usize,
    /// Half-open SAs from one source address at which its new IKE_SA_INITs are dropped
    /// unanswered (strongSwan's `block_threshold`).
    pub half_open_limit_per_source: usize,
    /// How long a half-open responder SA waits for IKE_AUTH before it is dropped.
    pub half_open_timeout: Duration,
    /// IKE SAs in any state at which new IKE_SA_INITs are dropped; 0 means no limit.
    pub ike_sa_limit: usize,
    /// How long one COOKIE secret is used before a new one replaces it (§2.6: change it
    /// periodically; cookies made with the previous one stay valid for a few seconds).
    pub cookie_secret_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cookie_threshold: 30,
            cookie_threshold_per_source: 3,
            half_open_limit: 4096,
            half_open_limit_per_source: 5,
            half_open_timeout: Duration::from_secs(30),
            ike_sa_limit: 0,
            cookie_secret_lifetime: Duration::from_secs(120),
        }
    }
}

/// Exponential back-off for requests: `initial`, doubled each try, `tries` sends in all;
/// the peer is declared dead when the last one times out.
#[derive(Clone, Copy, Debug)]
pub struct RetransmitConfig {
    /// Wait after the first send.
    pub initial: Duration,
    /// Total number of sends (the first plus retransmissions).
    pub tries: u32,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        // 1, 2, 4, 8, 16 s then declare the peer dead.
        Self {
            initial: Duration::from_secs(1),
            tries: 5,
        }
    }
}

/// Dead peer detection: when nothing has come from the peer for `interval`, an empty
/// INFORMATIONAL request (RFC 7296 §2.4) goes out; it is sent `retries` times in all, each
/// given `interval` to be answered, and the peer is declared dead when the last goes
/// unanswered. So a peer that stops answering is dead at most `interval * (retries + 1)`
/// after we last heard from it. The fixed spacing (rather than §2.1's exponential back-off,
/// which takes 31 s by default) is what makes the detection time the configured one, as
/// Cisco's `crypto isakmp keepalive` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dpd {
    /// Idle time before a check, and the time each check is given.
    pub interval: Duration,
    /// Checks sent in all before the peer is dead (at least 1).
    pub retries: u32,
}

/// Identifies a connection profile; chosen by the agent (it also names the reqid/interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// One connection profile.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Stable identifier.
    pub id: ConnId,
    /// Name for logs.
    pub name: String,
    /// Our address; port 500 (the engine floats to 4500 when a NAT is detected).
    pub local: SocketAddr,
    /// Where the peer is. Only [`RemoteAddr::Host`] can be initiated.
    pub remote: RemoteAddr,
    /// Our identity; `None` uses our IP address (strongSwan's default).
    pub local_id: Option<Identity>,
    /// Which peer identities are accepted.
    pub remote_id: IdMatch,
    /// How both sides authenticate.
    pub auth: AuthConfig,
    /// IKE SA proposals, most preferred first.
    pub ike_proposals: Vec<IkeProposal>,
    /// IKE SA lifetime; the engine rekeys `rekey_margin` (minus jitter) before it.
    pub ike_lifetime: Lifetime,
    /// Child SA configuration 0 ([`ChildConfigIndex::FIRST`]): the one
    /// [`crate::Command::Initiate`] negotiates in IKE_AUTH and on later CREATE_CHILD_SA, and
    /// the first a responder tries to narrow the peer's selectors to.
    pub child: ChildConfig,
    /// Child SA configurations 1, 2, ... (configuration `i` is `more_children[i - 1]`), for
    /// one IKE SA carrying Child SAs with different traffic selectors (policy-based IPsec:
    /// one per crypto-map ACL entry). [`crate::Command::InitiateChild`] negotiates one by
    /// index; a responder picks the first configuration, in index order, whose selectors the
    /// peer's TSi/TSr narrow to a non-empty set (RFC 7296 §2.9). Empty for a single-child
    /// connection. Only the first 65535 entries are addressable.
    pub more_children: Vec<ChildConfig>,
    /// Liveness checks (RFC 7296 §2.4); `None` disables them.
    pub dpd: Option<Dpd>,
    /// Accept 3DES, HMAC-SHA1-96, PRF-HMAC-SHA1 and MODP-1024.
    pub allow_legacy: bool,
    /// Offer MOBIKE (RFC 4555) in IKE_AUTH: when the peer offers it too, the original
    /// initiator moves the IKE SA to a new local address with UPDATE_SA_ADDRESSES
    /// ([`crate::Command::MoveLocal`]) instead of negotiating again, and a peer's update is
    /// followed.
    pub mobike: bool,
}

impl PeerConfig {
    /// Child SA configuration `index`: [`PeerConfig::child`] for 0, `more_children[index - 1]`
    /// above; `None` when there is no such configuration.
    pub fn child_config(&self, index: ChildConfigIndex) -> Option<&ChildConfig> {
        match usize::from(index.0).checked_sub(1) {
            None => Some(&self.child),
            Some(i) => self.more_children.get(i),
        }
    }

    /// Every Child SA configuration with its index, in index order.
    pub fn child_configs(&self) -> impl Iterator<Item = (ChildConfigIndex, &ChildConfig)> {
        std::iter::once(&self.child)
            .chain(self.more_children.iter())
            .take(usize::from(u16::MAX) + 1)
            .enumerate()
            .map(|(i, c)| (ChildConfigIndex(i as u16), c))
    }

    /// Our identity as sent in IDi/IDr.
    pub fn local_identity(&self) -> Identity {
        self.local_identity_at(self.local.ip())
    }

    /// Our identity when the SA runs on `addr` (a profile bound to the unspecified address
    /// identifies by the address the exchange actually uses).
    pub fn local_identity_at(&self, addr: IpAddr) -> Identity {
        let ip = if self.local.ip().is_unspecified() {
            addr
        } else {
            self.local.ip()
        };
        self.local_id
            .clone()
            .unwrap_or_else(|| Identity::from_ip(ip))
    }
}

/// Peer address match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteAddr {
    /// Any address (responder-only hub profile).
    Any,
    /// A fixed peer; initiable. The port is normally 500.
    Host(SocketAddr),
    /// Any address inside a prefix (responder-only).
    Prefix(IpAddr, u8),
}

impl RemoteAddr {
    /// True when `addr` may be this peer.
    pub fn matches(&self, addr: IpAddr) -> bool {
        match *self {
            Self::Any => true,
            Self::Host(h) => h.ip() == addr,
            Self::Prefix(net, len) => {
                let ts = TrafficSelector::prefix(net, len);
                crate::ts::addr_in(addr, &ts)
            }
        }
    }
}

/// Which remote identities a profile accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdMatch {
    /// Any identity (the PSK still has to match).
    Any,
    /// Exactly this identity.
    Exact(Identity),
    /// An ID_IPV4_ADDR / ID_IPV6_ADDR inside this prefix (address, prefix length).
    Prefix(IpAddr, u8),
    /// An ID_FQDN equal to this domain or below it (`*.example.com` is `FqdnSuffix
    /// ("example.com")` and matches `a.example.com`, not `example.com`); case-insensitive
    /// (RFC 4343).
    FqdnSuffix(String),
    /// An ID_RFC822_ADDR in this mail domain (case-insensitive, RFC 5280 §7.5).
    Rfc822Domain(String),
    /// An ID_DER_ASN1_DN with exactly these attributes in encoding order, as (dotted OID,
    /// value). Values are compared ignoring ASCII case and surrounding or repeated spaces,
    /// and whatever string type encodes them (the RFC 4518 string preparation in the small),
    /// so a DN typed in a config matches the certificate that some other tool encoded.
    Dn(Vec<(String, String)>),
    /// Any of these.
    OneOf(Vec<IdMatch>),
}

impl IdMatch {
    /// True when `id` is acceptable.
    pub fn matches(&self, id: &Identity) -> bool {
        match (self, id) {
            (Self::Any, _) => true,
            (Self::Exact(want), _) => want == id,
            (Self::Prefix(net, len), Identity::Ipv4(_) | Identity::Ipv6(_)) => {
                let ip = match id {
                    Identity::Ipv4(a) => IpAddr::V4(*a),
                    Identity::Ipv6(a) => IpAddr::V6(*a),
                    _ => return false,
                };
                crate::ts::addr_in(ip, &TrafficSelector::prefix(*net, *len))
            }
            (Self::FqdnSuffix(dom), Identity::Fqdn(f)) => {
                let (f, dom) = (f.to_ascii_lowercase(), dom.to_ascii_lowercase());
                f.strip_suffix(dom.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            }
            (Self::Rfc822Domain(dom), Identity::Rfc822(e)) => e
                .rsplit_once('@')
                .is_some_and(|(_, host)| host.eq_ignore_ascii_case(dom)),
            (Self::Dn(want), Identity::DerAsn1Dn(der)) => crate::cert::dn_attributes(der)
                .is_some_and(|got| {
                    got.len() == want.len()
                        && got
                            .iter()
                            .zip(want)
                            .all(|((go, gv), (wo, wv))| go == wo && dn_value_eq(gv, wv))
                }),
            (Self::OneOf(all), _) => all.iter().any(|m| m.matches(id)),
            _ => false,
        }
    }
}

/// DN attribute values equal after trimming, collapsing inner spaces and ASCII case folding.
fn dn_value_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

/// Authentication method (both directions use the same one).
#[derive(Clone, Debug)]
pub enum AuthConfig {
    /// Pre-shared key, used in both directions (RFC 7296 §2.15).
    Psk(Psk),
    /// RFC 7427 Digital Signature with our private key; the peer's key is pinned.
    Signature(SignatureAuth),
    /// RFC 7427 Digital Signature with X.509 certificates: ours is sent in CERT, the
    /// peer's CERT chain is validated to configured CAs (RFC 7296 §3.6, §3.7).
    Certificate(CertificateAuth),
}

/// A pre-shared key (RFC 7296 §2.15). Every AUTH it makes or checks is
/// `prf(prf(PSK, "Key Pad for IKEv2"), <SignedOctets>)`, and the inner `prf` depends on the
/// key and the negotiated PRF alone: it is keyed once per PRF, the first time an AUTH needs
/// it, and shared by every IKE SA of the profile (and by clones of this value), instead of
/// two HMAC key schedules and a MAC per AUTH, four AUTHs per handshake pair.
#[derive(Clone)]
pub struct Psk {
    key: Secret,
    /// `prf(PSK, "Key Pad for IKEv2")` as a keyed PRF, by [`Prf`] (index [`Psk::slot`]).
    pads: Arc<[OnceLock<PrfKey>; 4]>,
}

impl Psk {
    /// The key bytes as configured.
    pub fn new(key: Secret) -> Self {
        Self {
            key,
            pads: Arc::default(),
        }
    }

    /// The shared secret itself (IKEv1's SKEYID, the agent's plans).
    pub fn secret(&self) -> &Secret {
        &self.key
    }

    /// `prf(PSK, "Key Pad for IKEv2")` keyed for `prf` (RFC 7296 §2.15).
    pub(crate) fn key_pad(&self, prf: Prf) -> &PrfKey {
        self.pads[Self::slot(prf)].get_or_init(|| {
            let inner = PrfKey::new(prf, self.key.expose()).compute(&[KEY_PAD]);
            PrfKey::new(prf, inner.expose())
        })
    }

    fn slot(prf: Prf) -> usize {
        match prf {
            Prf::HmacSha1 => 0,
            Prf::HmacSha256 => 1,
            Prf::HmacSha384 => 2,
            Prf::HmacSha512 => 3,
        }
    }
}

impl From<Secret> for Psk {
    fn from(key: Secret) -> Self {
        Self::new(key)
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// RFC 7296 §2.15 pad string for shared-key AUTH.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// Signature authentication (RFC 7427) with a pinned peer key: the peer's public key is
/// configured, and its CERT payload, if any, is ignored. For X.509 chain validation to
/// configured CAs use [`AuthConfig::Certificate`].
#[derive(Clone, Debug)]
pub struct SignatureAuth {
    /// Our private key.
    pub key: Arc<crate::crypto::sig::SigningKey>,
    /// Our certificate (DER), sent in a CERT payload so certificate-based peers can check it.
    pub certificate: Option<Vec<u8>>,
    /// The peer's public key: SubjectPublicKeyInfo DER (from a pinned certificate with
    /// [`crate::cert::subject_public_key_info`]) or the raw forms
    /// [`crate::crypto::sig::verify`] accepts.
    pub peer_key: Vec<u8>,
}

/// Certificate authentication (RFC 7296 §2.15 with RFC 7427 AUTH, §3.6 CERT, §3.7 CERTREQ).
///
/// We send `certificate` then `chain` in CERT payloads (X.509 Certificate - Signature) and a
/// CERTREQ naming `trust_anchors` (the responder in its IKE_SA_INIT response, the initiator in
/// its IKE_AUTH request). The peer's first X.509 CERT is its end-entity certificate, the
/// others are intermediates; the path must reach one of `trust_anchors` at the engine's
/// wall-clock time ([`crate::Endpoint::set_wall_clock`]: without it every certificate is
/// refused), and the certificate must bind the peer's IDi/IDr (RFC 4945 §3.1, see
/// [`crate::cert::verify_peer_certificate`]). Its key then verifies AUTH. The profile's
/// `remote_id` still applies on top. The anchors' CRLs, if any, are applied to the path
/// ([`crate::cert`] documents the revocation policy); OCSP is not supported.
#[derive(Clone, Debug)]
pub struct CertificateAuth {
    /// Our private key; it must belong to `certificate`.
    pub key: Arc<crate::crypto::sig::SigningKey>,
    /// Our end-entity certificate (DER), sent in the first CERT payload.
    pub certificate: Vec<u8>,
    /// Intermediate CA certificates (DER) sent after it, issuer of `certificate` first.
    pub chain: Vec<Vec<u8>>,
    /// CAs the peer's certificate must chain to ([`crate::cert::TrustAnchors::from_der_certs`]).
    pub trust_anchors: Arc<crate::cert::TrustAnchors>,
}

/// One IKE SA proposal: a single transform of each type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeProposal {
    /// Encryption.
    pub encr: Encr,
    /// Pseudo-random function.
    pub prf: Prf,
    /// Integrity; `None` with AEAD ciphers.
    pub integ: Option<Integ>,
    /// Key exchange group.
    pub dh: DhGroup,
    /// Additional key exchanges (RFC 9370), each in its own IKE_INTERMEDIATE exchange after
    /// IKE_SA_INIT and in IKE_FOLLOWUP_KE exchanges on rekey.
    pub addke: AddKes,
}

impl IkeProposal {
    /// strongSwan's first default: `aes256gcm16-prfsha256-x25519`.
    pub const AES256GCM_SHA256_X25519: Self = Self {
        encr: Encr::AesGcm16 { key_bits: 256 },
        prf: Prf::HmacSha256,
        integ: None,
        dh: DhGroup::Curve25519,
        addke: AddKes::NONE,
    };

    /// `aes128-sha256-modp2048`-style CBC proposal.
    pub const AES128_SHA256_MODP2048: Self = Self {
        encr: Encr::AesCbc { key_bits: 128 },
        prf: Prf::HmacSha256,
        integ: Some(Integ::HmacSha256_128),
        dh: DhGroup::Modp2048,
        addke: AddKes::NONE,
    };

    /// True when any transform needs the legacy opt-in.
    pub fn is_legacy(&self) -> bool {
        self.encr.is_legacy()
            || self.dh.is_legacy()
            || self.addke.is_legacy()
            || matches!(self.prf, Prf::HmacSha1)
            || matches!(self.integ, Some(Integ::HmacSha1_96))
    }
}

/// One ESP proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspProposal {
    /// Encryption.
    pub encr: Encr,
    /// Integrity; `None` with AEAD ciphers.
    pub integ: Option<Integ>,
    /// Extended sequence numbers.
    pub esn: Esn,
}

impl EspProposal {
    /// strongSwan's default `aes256gcm16` (no ESN).
    pub const AES256GCM: Self = Self {
        encr: Encr::AesGcm16 { key_bits: 256 },
        integ: None,
        esn: Esn::No,
    };

    /// True when any transform needs the legacy opt-in.
    pub fn is_legacy(&self) -> bool {
        self.encr.is_legacy() || matches!(self.integ, Some(Integ::HmacSha1_96))
    }
}

/// IPsec mode of a Child SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Tunnel mode (the default, RFC 7296 §1.3.1).
    Tunnel,
    /// Transport mode, negotiated with USE_TRANSPORT_MODE.
    Transport,
}

/// An SA lifetime with rekey margin and jitter (strongSwan `rekey_time` = lifetime - margin,
/// randomised down by up to `jitter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Hard lifetime.
    pub lifetime: Duration,
    /// Rekey this long before the hard lifetime.
    pub rekey_margin: Duration,
    /// Rekey up to this much earlier still, drawn from the seeded RNG.
    pub jitter: Duration,
}

impl Lifetime {
    /// strongSwan's IKE default: rekey after 4 h (margin 10 % jitter).
    pub const IKE_DEFAULT: Self = Self {
        lifetime: Duration::from_secs(4 * 3600 + 1440),
        rekey_margin: Duration::from_secs(1440),
        jitter: Duration::from_secs(1440),
    };

    /// strongSwan's child default: rekey after 1 h.
    pub const CHILD_DEFAULT: Self = Self {
        lifetime: Duration::from_secs(3600 + 360),
        rekey_margin: Duration::from_secs(360),
        jitter: Duration::from_secs(360),
    };
}

/// Which Child SA configuration of a connection: 0 is [`PeerConfig::child`], `i` ≥ 1 is
/// `PeerConfig::more_children[i - 1]`. Chosen by the agent's order (e.g. one per crypto-map
/// ACL permit entry); carried in [`crate::ChildSaInstall::config`] and kept across rekeys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildConfigIndex(pub u16);

impl ChildConfigIndex {
    /// Configuration 0, [`PeerConfig::child`].
    pub const FIRST: Self = Self(0);
}

/// Child SA parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildConfig {
    /// ESP proposals, most preferred first.
    pub esp_proposals: Vec<EspProposal>,
    /// PFS group for CREATE_CHILD_SA; IKE_AUTH never carries KE (RFC 7296 §1.2).
    pub pfs: Option<DhGroup>,
    /// Additional key exchanges of the PFS exchange (RFC 9370 §2.2.4), each in its own
    /// IKE_FOLLOWUP_KE after the CREATE_CHILD_SA; only with [`Self::pfs`] set (ADDKE
    /// transforms go with a KE transform). Required of the peer: a proposal without them is
    /// refused. strongSwan's `esp_proposals = aes256gcm16-x25519-ke1_mlkem768`.
    pub pfs_addke: AddKes,
    /// Our traffic selectors (TSi when we initiate).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's traffic selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Tunnel or transport mode.
    pub mode: Mode,
    /// Time lifetime; rekeyed by the engine.
    pub lifetime: Lifetime,
    /// Byte limits handed to the kernel; its soft EXPIRE comes back as
    /// [`crate::Command::RekeyChild`].
    pub lifetime_bytes: Option<ByteLimits>,
}

impl ChildConfig {
    /// The selectors proposed for a per-host Child SA between `local` and `remote` (Cisco's
    /// `set security-association level per-host`): each side exactly that host (a /32 or
    /// /128), with the protocol and ports of the configuration's selectors, i.e. the host
    /// intersected with each selector (RFC 7296 §2.9). `None` when either host lies outside
    /// the configuration's selectors.
    pub fn host_selectors(
        &self,
        local: IpAddr,
        remote: IpAddr,
    ) -> Option<(Vec<TrafficSelector>, Vec<TrafficSelector>)> {
        let l = crate::ts::narrow(&[TrafficSelector::host(local)], &self.local_ts);
        let r = crate::ts::narrow(&[TrafficSelector::host(remote)], &self.remote_ts);
        (!l.is_empty() && !r.is_empty()).then_some((l, r))
    }
}

/// Kernel byte limits of a Child SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteLimits {
    /// Soft limit: the kernel reports EXPIRE(soft) and the agent sends RekeyChild.
    pub soft: u64,
    /// Hard limit: the kernel deletes the SA.
    pub hard: u64,
}
