//! vtid's configuration: the TOML file (`/etc/vtid/vtid.toml`), its checking, and the typed
//! [`Config`] the rest of the agent works from.
//!
//! The file speaks Cisco IOS vocabulary: `transform_set`, `ipsec_profile`, `ike_proposal`,
//! `ike_profile`, `keyring`, `trustpoint`, `tunnel` (static VTIs), `virtual_template` (dynamic
//! VTIs) and `vrf`. See `packaging/examples/` for complete files.
//!
//! Loading parses and checks everything before returning, and reports every mistake at once
//! with its `file:line:column` ([`ConfigErrors`]). A [`Config`] is therefore always coherent:
//! every name it holds refers to an existing object, every algorithm is allowed, every secret
//! file has been read, every certificate and key parsed and matched.
//!
//! References are resolved once, here: a tunnel holds its IPsec profile (with its transform
//! sets), its IKE profile (named or derived), the credentials for its peer and its VRFs as
//! values, so the planner never looks a name up again and cannot meet a dangling one. Every
//! check the daemon would make at start or reload that does not depend on live interface
//! state runs here, so `vtid check` and `vtid run` accept exactly the same files.

pub mod acl;
pub(crate) mod algo;
pub(crate) mod certs;
mod convert;
mod error;
mod gre;
mod raw;
mod secret;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ike::transform::{DhGroup, Encr, Integ, Prf};
use ipnet::IpNet;

pub use certs::{TrustpointFiles, crl_report};
pub(crate) use convert::check_ifname;
pub use error::{ConfigError, ConfigErrors};
pub use gre::{DEFAULT_GRE_TTL, GreOptions, MgreTunnel};
pub use secret::Psk;

/// Where the daemon reads its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/vtid/vtid.toml";

/// The configuration the demo and `vtid check --default` use, shipped inside the binary.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// How [`Config::load_with`] treats the files a configuration points at.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Uid that must own secret files (PSKs, private keys). Root (0) in production; tests
    /// that run unprivileged pass their own uid.
    pub secret_owner_uid: u32,
    /// Read PSK files and check certificate paths. False only to check the structure of a
    /// file written for another machine (the packaging examples); PSKs are then absent.
    pub read_files: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            secret_owner_uid: 0,
            read_files: true,
        }
    }
}

/// A complete, checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Process-wide settings (`[global]`).
    pub global: Global,
    /// The VICI server (`[vici]`); `None` (the default) means none.
    pub vici: Option<Vici>,
    /// VRFs by name (`[vrf.NAME]`).
    pub vrfs: BTreeMap<String, Vrf>,
    /// IKE proposals by name (`[ike_proposal.NAME]`).
    pub ike_proposals: BTreeMap<String, IkeProposalSpec>,
    /// ESP transform sets by name (`[transform_set.NAME]`).
    pub transform_sets: BTreeMap<String, TransformSet>,
    /// IPsec profiles by name (`[ipsec_profile.NAME]`).
    pub ipsec_profiles: BTreeMap<String, IpsecProfile>,
    /// Keyrings by name (`[keyring.NAME]`).
    pub keyrings: BTreeMap<String, Keyring>,
    /// Certificate trustpoints by name (`[trustpoint.NAME]`).
    pub trustpoints: BTreeMap<String, Trustpoint>,
    /// IKE profiles by name (`[ike_profile.NAME]`).
    pub ike_profiles: BTreeMap<String, IkeProfile>,
    /// Static VTIs by interface name (`[tunnel.NAME]`).
    pub tunnels: BTreeMap<String, Tunnel>,
    /// Dynamic VTI templates by name (`[virtual_template.NAME]`).
    pub virtual_templates: BTreeMap<String, VirtualTemplate>,
    /// Multipoint GRE tunnels by interface name (`[tunnel.NAME] mode = "mgre"`).
    pub mgre_tunnels: BTreeMap<String, MgreTunnel>,
    /// Crypto ACLs by name (`[access_list.NAME]`).
    pub access_lists: BTreeMap<String, Vec<acl::AclEntry>>,
    /// Crypto map sets by name (`[crypto_map.NAME]`).
    pub crypto_maps: BTreeMap<String, CryptoMap>,
    /// Dynamic maps by name (`[dynamic_map.NAME]`), entries by sequence number.
    pub dynamic_maps: BTreeMap<String, Vec<DynamicEntry>>,
    /// `[isakmp_policy.N]` entries in priority order (IKEv1 phase 1, profiles with
    /// `version = 1`).
    pub isakmp_policies: Vec<ike::v1::IsakmpPolicy>,
    /// Key, certificate and private key files were read ([`LoadOptions::read_files`]). When
    /// false, [`Credentials`] hold `None` and only the structure was checked.
    pub files_read: bool,
}

/// `[vici]`: the VICI server's socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vici {
    /// Socket path (FRR nhrpd connects to `/var/run/charon.vici`).
    pub socket: PathBuf,
    /// A group allowed to connect besides root (mode 0660); `None`: root only, 0600.
    pub group: Option<String>,
}

/// `[global]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// Legacy algorithms (3DES, SHA-1, group 2) are accepted.
    pub allow_legacy: bool,
    /// Control socket path (default `/run/vtid/vtid.sock`).
    pub control_socket: PathBuf,
    /// Log verbosity (default `info`).
    pub log_level: LogLevel,
    /// Metrics listener; `None` (the default) means no listener.
    pub metrics: Option<SocketAddr>,
    /// IKE UDP port (default 500).
    pub ike_port: u16,
    /// NAT-T UDP port (default 4500).
    pub nat_t_port: u16,
    /// Prefix of dynamic VTI clone names (default `vtid-va`, giving `vtid-va1`, `vtid-va2`, ...).
    pub interface_prefix: String,
    /// Interval of NAT-T keepalives when we are behind a NAT (default 20 s, as strongSwan and
    /// IOS's `crypto isakmp nat keepalive 20`): it must be shorter than the NAT's UDP timeout,
    /// or the mapping expires between keepalives and the peer's traffic meets a new one.
    pub nat_keepalive: std::time::Duration,
    /// The IKE front door: half-open and IKE SA limits, cookie thresholds (RFC 7296 §2.6).
    pub limits: ike::Limits,
}

impl Default for Global {
    fn default() -> Self {
        Self {
            allow_legacy: false,
            control_socket: PathBuf::from("/run/vtid/vtid.sock"),
            log_level: LogLevel::Info,
            metrics: None,
            ike_port: 500,
            nat_t_port: 4500,
            interface_prefix: "vtid-va".to_owned(),
            nat_keepalive: std::time::Duration::from_secs(20),
            limits: ike::Limits::default(),
        }
    }
}

/// Log verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation (session up/down, rekeys).
    Info,
    /// Protocol detail.
    Debug,
    /// Everything, including packet dumps (never key material).
    Trace,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// `[vrf.NAME]`: a Linux VRF device of that name bound to a routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vrf {
    /// Routing table id (not 0, 253, 254 or 255, which Linux reserves).
    pub table: u32,
}

/// A resolved reference to a `[vrf.NAME]`: the device name and its table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrfRef {
    /// VRF device name.
    pub name: String,
    /// Its routing table.
    pub table: u32,
}

/// `[ike_proposal.NAME]`: transforms offered or accepted for the IKE SA. Every combination
/// of the lists is acceptable (RFC 7296 §3.3 proposal semantics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeProposalSpec {
    /// Encryption, most preferred first. Either all AEAD or none.
    pub encryption: Vec<Encr>,
    /// Integrity; empty for AEAD.
    pub integrity: Vec<Integ>,
    /// PRFs, never empty.
    pub prf: Vec<Prf>,
    /// DH groups, never empty.
    pub groups: Vec<DhGroup>,
    /// Additional key exchanges (RFC 9370): entry i lists the methods acceptable as ADDKE(i+1)
    /// in order of preference, `None` for NONE (the round is optional). Empty: a classic
    /// suite.
    pub additional_key_exchanges: Vec<Vec<Option<ike::transform::KeMethod>>>,
}

impl IkeProposalSpec {
    /// The name under which the built-in proposal may be referenced.
    pub const DEFAULT_NAME: &'static str = "default";

    /// The proposal used when an IKE profile names none: AES-GCM-256, PRF-HMAC-SHA256,
    /// groups 31 (Curve25519), 19 (ECP-256) and 14 (MODP-2048).
    pub fn builtin_default() -> Self {
        Self {
            encryption: vec![Encr::AesGcm16 { key_bits: 256 }],
            integrity: Vec::new(),
            prf: vec![Prf::HmacSha256],
            groups: vec![DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Modp2048],
            additional_key_exchanges: Vec::new(),
        }
    }
}

/// `[transform_set.NAME]`: one ESP transform combination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransformSet {
    /// ESP cipher.
    pub esp: Encr,
    /// ESP integrity; `None` exactly when `esp` is AEAD.
    pub integrity: Option<Integ>,
    /// SA mode. VTIs need tunnel mode.
    pub mode: SaMode,
    /// `mode` was written: GRE protection runs in transport mode unless a set says
    /// `mode = "tunnel"` explicitly (the default otherwise is tunnel).
    pub mode_written: bool,
}

/// ESP encapsulation mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaMode {
    /// Tunnel mode (default; required by VTIs).
    Tunnel,
    /// Transport mode.
    Transport,
}

/// `[ipsec_profile.NAME]`: what `tunnel protection` applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpsecProfile {
    /// Transform set names, most preferred first (1 to 6, all existing).
    pub transform_sets: Vec<String>,
    /// The same transform sets, resolved, in the same order (never empty).
    pub sets: Vec<TransformSet>,
    /// PFS group for CREATE_CHILD_SA, or `None` for no PFS (the default).
    pub pfs: Option<DhGroup>,
    /// Additional key exchanges of the PFS exchange (RFC 9370 §2.2.4); only with `pfs`.
    pub pfs_addke: ike::transform::AddKes,
    /// Child SA lifetimes.
    pub lifetime: SaLifetime,
    /// ESP hardware offload policy.
    pub offload: Offload,
    /// IKE profile that negotiates these SAs, when set.
    pub ike_profile: Option<String>,
}

/// `[crypto_map.NAME]`: policy-based IPsec, entries in sequence order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoMap {
    /// The local address or interface the map is applied to.
    pub local: LocalTermination,
    /// Entries by ascending sequence number.
    pub entries: Vec<CryptoMapEntry>,
}

/// One crypto map entry (`crypto map NAME SEQ ipsec-isakmp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoMapEntry {
    /// Sequence number.
    pub seq: u32,
    /// `match address` ACL name.
    pub access_list: String,
    /// Its entries, resolved.
    pub acl: Vec<acl::AclEntry>,
    /// `set peer` addresses, the first preferred, each with the IKE profile and credentials
    /// it is negotiated with (the entry's `ike_profile`, else derived from the keyrings).
    pub peers: Vec<MapPeer>,
    /// Transform sets, PFS, lifetimes and IKE profile, as an IPsec profile holds them.
    pub ipsec: IpsecProfile,
    /// One SA pair per host pair.
    pub per_host: bool,
    /// Reverse route injection: the metric of the routes to the protected remote prefixes.
    pub reverse_route: Option<u32>,
    /// Negotiate at start rather than on the first packet (ACQUIRE).
    pub initiate: bool,
    /// IKE, a dynamic map or manual keys.
    pub kind: EntryKind,
}

/// How a crypto map entry gets its SAs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// `ipsec-isakmp`: negotiated with IKE with its `peers`.
    Isakmp,
    /// `ipsec-isakmp dynamic NAME`: the dynamic map's entries answer any peer their IKE
    /// profile accepts; this entry's own ACL, peers and settings are empty.
    Dynamic {
        /// The dynamic map's name.
        name: String,
        /// Its entries by sequence number.
        entries: Vec<DynamicEntry>,
    },
    /// `ipsec-manual`: fixed SPIs and keys with the one peer, no IKE (seed F-E9).
    Manual(ManualSa),
}

/// One `[[dynamic_map.NAME.entry]]` (`crypto dynamic-map NAME SEQ`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicEntry {
    /// Sequence number.
    pub seq: u32,
    /// The ACL proposed flows must fall inside (`None`: any flow, seed F-E5).
    pub access_list: Option<String>,
    /// Its lines.
    pub acl: Option<Vec<acl::AclEntry>>,
    /// Transform sets, PFS, lifetimes.
    pub ipsec: IpsecProfile,
    /// The IKE profile that decides who may connect.
    pub ike_profile: String,
    /// It, resolved.
    pub ike: Arc<IkeProfile>,
    /// Reverse route metric.
    pub reverse_route: Option<u32>,
}

/// The keys of a manual crypto map entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManualSa {
    /// The one peer.
    pub peer: IpAddr,
    /// Our inbound SA.
    pub inbound: ManualKey,
    /// Our outbound SA.
    pub outbound: ManualKey,
}

/// One direction of a manual SA. Keys are `None` only when loaded without reading files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManualKey {
    /// SPI.
    pub spi: u32,
    /// Cipher key file.
    pub cipher_file: PathBuf,
    /// Cipher key (for AES-GCM and ChaCha20-Poly1305 with its 4-byte salt).
    pub cipher: Option<Psk>,
    /// Authenticator key file (non-AEAD).
    pub authenticator_file: Option<PathBuf>,
    /// Authenticator key.
    pub authenticator: Option<Psk>,
}

/// One peer of a crypto map entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapPeer {
    /// Its address.
    pub addr: IpAddr,
    /// The IKE profile it is negotiated with.
    pub ike: Arc<IkeProfile>,
    /// Our credentials toward it.
    pub credentials: Credentials,
}

/// Child SA lifetime (`set security-association lifetime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaLifetime {
    /// Seconds (default 3600).
    pub seconds: u32,
    /// Kilobytes of traffic (default 4,608,000).
    pub kilobytes: u64,
}

impl Default for SaLifetime {
    fn default() -> Self {
        // Cisco IOS defaults, as shown by `show crypto ipsec sa`.
        Self {
            seconds: 3600,
            kilobytes: 4_608_000,
        }
    }
}

/// ESP offload policy (`ip xfrm state ... offload [crypto|packet] dev DEV dir DIR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// Software only (default).
    Off,
    /// Crypto offload; fail the SA if the device refuses.
    Crypto,
    /// Full packet offload; fail the SA if the device refuses.
    Packet,
    /// Try packet, then crypto, then software.
    Auto,
}

/// `[keyring.NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    /// Peer entries in file order.
    pub peers: Vec<KeyringPeer>,
}

impl Keyring {
    /// The entry for a peer address: the longest matching prefix (Cisco keyring lookup).
    pub fn find_by_address(&self, addr: IpAddr) -> Option<&KeyringPeer> {
        self.peers
            .iter()
            .filter_map(|p| match &p.peer {
                PeerMatch::Address(net) if net.contains(&addr) => Some((net.prefix_len(), p)),
                _ => None,
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, p)| p)
    }
}

/// One pre-shared key and the peers it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringPeer {
    /// Which peers use this key.
    pub peer: PeerMatch,
    /// File the key was read from.
    pub psk_file: PathBuf,
    /// The key; `None` only when loaded with `read_files: false`.
    pub psk: Option<Psk>,
    /// Resolved for identity entries: the engine's pattern for exactly that identity.
    pub id_match: Option<ike::IdMatch>,
}

/// How a keyring entry selects peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMatch {
    /// By underlay address or prefix.
    Address(IpNet),
    /// By IKE identity.
    Identity(Identity),
}

/// An IKE identity (RFC 7296 §3.5 ID types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// ID_IPV4_ADDR / ID_IPV6_ADDR.
    Address(IpAddr),
    /// ID_FQDN.
    Fqdn(String),
    /// ID_RFC822_ADDR.
    Email(String),
    /// ID_DER_ASN1_DN, in its string form.
    Dn(String),
}

/// A `match_identity` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMatch {
    /// Any identity.
    Any,
    /// An address identity inside this prefix.
    Address(IpNet),
    /// An FQDN equal to this, or ending with it when written `*.example.com`.
    Fqdn(String),
    /// An email equal to this, or in this domain when written `*@example.com`.
    Email(String),
    /// A DN equal to this string.
    Dn(String),
}

/// Our identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalIdentity {
    /// The address the IKE SA uses (default).
    Address,
    /// An explicit identity.
    Explicit(Identity),
}

/// `[trustpoint.NAME]`: certificate material, by path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trustpoint {
    /// CA certificates (PEM).
    pub ca: Vec<PathBuf>,
    /// Certificate revocation lists of those CAs (PEM or DER), read at load and reload.
    pub crl: Vec<PathBuf>,
    /// Our certificate (PEM).
    pub certificate: Option<PathBuf>,
    /// Our private key (PEM), checked like a PSK file.
    pub private_key: Option<PathBuf>,
    /// The parsed CAs, certificate and key; `None` without `certificate`/`private_key` or
    /// when files were not read.
    pub files: Option<Arc<TrustpointFiles>>,
}

/// IKE authentication method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Pre-shared key.
    Psk,
    /// RSA signature (certificate).
    RsaSig,
    /// ECDSA signature (certificate).
    EcdsaSig,
}

/// Dead peer detection (`dpd INTERVAL RETRY` / RFC 7296 §2.4 liveness checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dpd {
    /// Seconds of silence before a check, and the time each check is given.
    pub interval: u32,
    /// Checks sent before the peer is dead (default 3); see [`ike::Dpd`].
    pub retries: u32,
    /// What a tunnel whose peer is dead does; `None`: `restart` when the tunnel initiates,
    /// `clear` otherwise.
    pub action: Option<DpdAction>,
}

impl Dpd {
    /// The engine's liveness schedule.
    pub fn engine(&self) -> ike::Dpd {
        ike::Dpd {
            interval: std::time::Duration::from_secs(u64::from(self.interval)),
            retries: self.retries,
        }
    }
}

/// What a static tunnel does once its peer is declared dead (strongSwan's `dpd_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpdAction {
    /// Negotiate again at once, and keep trying until the peer answers (IOS VTIs do so).
    Restart,
    /// Remove the session and stay down until the peer initiates, `vtid up` or a reload.
    Clear,
    /// Keep the policies: the next packet routed into the tunnel (a kernel ACQUIRE) starts a
    /// new negotiation.
    Hold,
}

impl DpdAction {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Clear => "clear",
            Self::Hold => "hold",
        }
    }
}

/// Where an IKE profile terminates (`local-address`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalTermination {
    /// This address.
    Address(IpAddr),
    /// The addresses of this interface.
    Interface(String),
}

/// `[ike_profile.NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeProfile {
    /// Remote identities this profile accepts (empty: responder selection does not use it).
    pub match_identity: Vec<IdentityMatch>,
    /// Our identity.
    pub local_identity: LocalIdentity,
    /// How we authenticate.
    pub local_auth: AuthMethod,
    /// How peers may authenticate.
    pub remote_auth: Vec<AuthMethod>,
    /// Keyring name (present when either side uses PSK).
    pub keyring: Option<String>,
    /// Trustpoint name (present when either side uses signatures).
    pub trustpoint: Option<String>,
    /// Dead peer detection, off when `None`.
    pub dpd: Option<Dpd>,
    /// Offer MOBIKE (RFC 4555, strongSwan's `mobike = yes`): a renumbered `source` moves the
    /// session instead of negotiating again, where the peer supports it.
    pub mobike: bool,
    /// Local termination restriction.
    pub local: Option<LocalTermination>,
    /// Virtual template to clone for each session (dynamic VTIs).
    pub virtual_template: Option<String>,
    /// IKE proposal names; empty means [`IkeProposalSpec::builtin_default`].
    pub proposals: Vec<String>,
    /// Front-door VRF.
    pub fvrf: Option<VrfRef>,
    /// IKE SA lifetime in seconds (default 86400).
    pub lifetime_seconds: u32,
    /// IKE version: 2 (the default) or 1 (opt-in; RFC 9395 deprecates IKEv1).
    pub version: u8,
    /// IKEv1 aggressive mode (RFC 2409 §5.4), `version = 1` only: we initiate with it and
    /// peers may use it with this profile. Opt-in because its second message lets anyone
    /// guess the pre-shared key offline.
    pub aggressive: bool,
    /// Resolved: the proposals in order (the built-in one when none is named).
    pub proposal_specs: Vec<IkeProposalSpec>,
    /// Resolved: `match_identity` as the engine matches it.
    pub remote_id: ike::IdMatch,
    /// Resolved: our ID payload; `None` identifies by address. A DN is our certificate's
    /// subject as the certificate encodes it (RFC 4945 §3.1.5); when files were not read it
    /// cannot be known and is `None`.
    pub local_id: Option<ike::wire::Identity>,
    /// Resolved: the keyring or trustpoint this profile authenticates with.
    pub credentials: ProfileCredentials,
    /// Resolved: the template cloned per peer, with its name.
    pub template: Option<(String, Arc<VirtualTemplate>)>,
}

/// What an IKE profile authenticates with, resolved. vtid authenticates both directions
/// with the same method (the engine's [`ike::AuthConfig`]), so there is one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileCredentials {
    /// Pre-shared keys of this keyring (by name).
    Psk(String, Arc<Keyring>),
    /// Certificates of this trustpoint (by name); files `None` when not read.
    Certificate(String, Option<Arc<TrustpointFiles>>),
}

/// What one static tunnel authenticates with, resolved for its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// The keyring entry's key for the destination; `None` when files were not read.
    Psk(Option<Psk>),
    /// Our certificate and key with the CAs; `None` when files were not read.
    Certificate(Option<Arc<TrustpointFiles>>),
}

/// Static VTI backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelMode {
    /// XFRM interface (`ip link add NAME type xfrm if_id N`), the default.
    Xfrmi,
    /// `ip_vti` / `ip6_vti` (`ip link add NAME type vti local A remote B key N`).
    Vti,
    /// Point-to-point GRE protected by a transport-mode Child SA for its GRE packets
    /// (`ip link add NAME type gre local A remote B [key K]`); see [`GreOptions`].
    Gre,
    /// Multipoint GRE; such tunnels are in [`Config::mgre_tunnels`], never in
    /// [`Config::tunnels`].
    Mgre,
}

/// A tunnel's local underlay end (`tunnel source`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelSource {
    /// This address.
    Address(IpAddr),
    /// The primary address of this interface.
    Interface(String),
}

/// The tunnel interface's own address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InnerAddress {
    /// `ip address`.
    Address(IpNet),
    /// `ip unnumbered IFACE`.
    Unnumbered(String),
}

/// A route into a tunnel (`ip route PREFIX MASK Tunnel0 [DISTANCE]`). It is in the table
/// only while the tunnel's line protocol is up, so a route with a higher metric elsewhere
/// takes over when the tunnel's peer is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// Destination.
    pub prefix: IpNet,
    /// Kernel route priority (`ip route ... metric N`); `None`: the kernel's default (0 for
    /// IPv4, 1024 for IPv6).
    pub metric: Option<u32>,
}

impl From<IpNet> for Route {
    fn from(prefix: IpNet) -> Self {
        Self {
            prefix,
            metric: None,
        }
    }
}

/// The [`Display`](std::fmt::Display) spelling back: `PREFIX` or `PREFIX metric N`.
impl std::str::FromStr for Route {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        let prefix = words
            .next()
            .ok_or("empty route")?
            .parse()
            .map_err(|e| format!("{s}: {e}"))?;
        let metric = match (words.next(), words.next(), words.next()) {
            (None, _, _) => None,
            (Some("metric"), Some(m), None) => Some(m.parse().map_err(|e| format!("{s}: {e}"))?),
            _ => return Err(format!("{s}: expected PREFIX [metric N]")),
        };
        Ok(Self { prefix, metric })
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.metric {
            Some(m) => write!(f, "{} metric {m}", self.prefix),
            None => write!(f, "{}", self.prefix),
        }
    }
}

/// XFRM interface id (also the ip_vti key). Never 0: the kernel reserves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfId(pub u32);

/// `[tunnel.NAME]`: a static VTI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// Backend.
    pub mode: TunnelMode,
    /// Local underlay end.
    pub source: TunnelSource,
    /// Peer underlay address; same family as an address `source`.
    pub destination: IpAddr,
    /// Interface address.
    pub inner: InnerAddress,
    /// IPsec profile name.
    pub protection: String,
    /// The IPsec profile, resolved.
    pub ipsec: Arc<IpsecProfile>,
    /// IKE profile name as written (`None`: the IPsec profile's, else derived).
    pub ike_profile: Option<String>,
    /// The IKE profile the tunnel negotiates with, resolved: its own `ike_profile`, else its
    /// IPsec profile's, else one derived from the keyring entry for its destination (PSK
    /// both ways, identity = address, built-in proposal).
    pub ike: Arc<IkeProfile>,
    /// The credentials for its peer, resolved from the IKE profile's keyring or trustpoint.
    pub credentials: Credentials,
    /// MTU; `None` means computed from the underlay.
    pub mtu: Option<u32>,
    /// Prefixes routed into the tunnel.
    pub routes: Vec<Route>,
    /// Our prefixes proposed as traffic selectors (empty: 0/0 and ::/0).
    pub announce: Vec<IpNet>,
    /// Inside VRF.
    pub vrf: Option<VrfRef>,
    /// Front-door VRF (the tunnel's own; the IKE profile's applies when `None`).
    pub fvrf: Option<VrfRef>,
    /// Interface id; `None` means allocated by the agent.
    pub if_id: Option<IfId>,
    /// Initiate the IKE SA ourselves (default true).
    pub initiate: bool,
    /// ESP offload; `None` means the IPsec profile's (see [`Config::tunnel_offload`]).
    pub offload: Option<Offload>,
    /// GRE settings, `Some` exactly when `mode` is [`TunnelMode::Gre`].
    pub gre: Option<GreOptions>,
}

impl Tunnel {
    /// What the tunnel does when its peer is dead: its IKE profile's `dpd.action`, else
    /// `restart` when it initiates and `clear` when it only answers.
    pub fn dpd_action(&self) -> DpdAction {
        match self.ike.dpd.and_then(|d| d.action) {
            Some(a) => a,
            None if self.initiate => DpdAction::Restart,
            None => DpdAction::Clear,
        }
    }
}

/// How routes are installed for dynamic VTI clones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateRoutes {
    /// Route the peer's negotiated traffic selectors into its clone (default).
    TrafficSelectors,
    /// Route these fixed prefixes into every clone.
    Prefixes(Vec<IpNet>),
}

/// `[virtual_template.NAME]`: the model each dynamic VTI clone is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualTemplate {
    /// Interface whose address the clones borrow.
    pub unnumbered: String,
    /// Clone MTU; computed when `None`.
    pub mtu: Option<u32>,
    /// Inside VRF.
    pub vrf: Option<VrfRef>,
    /// Linux interface group of the clones (`ip link set dev X group N`).
    pub group: Option<u32>,
    /// IPsec profile name.
    pub protection: String,
    /// The IPsec profile, resolved.
    pub ipsec: Arc<IpsecProfile>,
    /// Root qdisc of each clone, in `tc qdisc replace dev X root ...` syntax.
    pub qdisc: Option<String>,
    /// Route installation.
    pub routes: TemplateRoutes,
    /// ESP offload of the clones; `None` means the IPsec profile's.
    pub offload: Option<Offload>,
    /// `mode = "multipoint"`: the name of the one collect-metadata xfrm interface every spoke
    /// shares (see `agent/src/multipoint.rs`); `None`: a clone per spoke.
    pub multipoint: Option<String>,
}

impl Config {
    /// Reads and checks `path` with [`LoadOptions::default`] (secret files owned by root).
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Reads and checks `path`.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(src) => Self::from_toml(path, &src, opts),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: 0,
                column: 0,
                message: format!("cannot read the configuration: {e}"),
            }])),
        }
    }

    /// Checks `src`, naming it `file` in errors (which also anchors nothing: paths inside the
    /// file are used as written).
    pub fn from_toml(file: &Path, src: &str, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
        convert::convert(file, src, opts)
    }

    /// The configuration shipped in the binary ([`DEFAULT_TOML`]), without reading files.
    pub fn builtin_default() -> Result<Config, ConfigErrors> {
        let opts = LoadOptions {
            read_files: false,
            ..LoadOptions::default()
        };
        Self::from_toml(Path::new("<built-in default.toml>"), DEFAULT_TOML, &opts)
    }

    /// The offload policy a tunnel runs with: its own `offload`, else its IPsec profile's.
    pub fn tunnel_offload(&self, tunnel: &str) -> Offload {
        self.tunnels
            .get(tunnel)
            .map_or(Offload::Off, |t| t.offload.unwrap_or(t.ipsec.offload))
    }

    /// The offload policy of a virtual template's clones: its own, else its IPsec profile's.
    pub fn template_offload(&self, template: &str) -> Offload {
        self.virtual_templates
            .get(template)
            .map_or(Offload::Off, |t| t.offload.unwrap_or(t.ipsec.offload))
    }

    /// A one-line summary for `vtid check`.
    /// Valid but hazardous settings, for `vtid check` to print (crypto ACLs using `any`).
    pub fn warnings(&self) -> Vec<String> {
        convert::crypto_map_warnings(self)
    }

    /// One line saying what the configuration holds.
    pub fn summary(&self) -> String {
        format!(
            "{} tunnel(s), {} virtual template(s), {} IPsec profile(s), {} IKE profile(s), \
             {} keyring(s), {} VRF(s){}{}",
            self.tunnels.len(),
            self.virtual_templates.len(),
            self.ipsec_profiles.len(),
            self.ike_profiles.len(),
            self.keyrings.len(),
            self.vrfs.len(),
            if self.crypto_maps.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} crypto map(s) with {} entr(ies)",
                    self.crypto_maps.len(),
                    self.crypto_maps
                        .values()
                        .map(|m| m.entries.len())
                        .sum::<usize>()
                )
            },
            if self.mgre_tunnels.is_empty() {
                String::new()
            } else {
                format!(", {} mgre tunnel(s)", self.mgre_tunnels.len())
            }
        )
    }
}

#[cfg(test)]
mod tests;
