//! The file as written: serde mirrors of each TOML section, before any checking.
//!
//! Every value that validation may complain about is wrapped in [`Spanned`] so the error can
//! point at it (`file:line:column`). Enumerations and algorithm names stay strings here: the
//! converter in `convert.rs` parses them itself so that it can suggest the nearest valid name
//! and keep going after the first mistake. Each struct denies unknown keys, so a typo such as
//! `destinaton` is an error, never silently ignored.

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

/// A spanned string (most leaf values).
pub type SStr = Spanned<String>;

/// `[global]`: process-wide settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// Accept legacy algorithms (3DES, SHA-1, MODP-1024 / group 2). Off by default.
    pub allow_legacy: Option<Spanned<bool>>,
    /// Path of the control socket used by the `vtid` CLI.
    pub control_socket: Option<SStr>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: Option<SStr>,
    /// `ADDRESS:PORT` for the Prometheus metrics listener; absent means off.
    pub metrics: Option<SStr>,
    /// UDP port for IKE (500).
    pub ike_port: Option<Spanned<i64>>,
    /// UDP port for NAT traversal, IKE and ESP-in-UDP (4500).
    pub nat_t_port: Option<Spanned<i64>>,
    /// Name prefix of the interfaces cloned from virtual templates (`va` gives `va1`, `va2`).
    pub interface_prefix: Option<SStr>,
    /// Seconds between NAT-T keepalives sent behind a NAT (RFC 3948 §2.3), 1 to 3600.
    pub nat_keepalive: Option<Spanned<i64>>,
    /// Half-open IKE SAs in all at which new IKE_SA_INITs must echo a COOKIE.
    pub cookie_threshold: Option<Spanned<i64>>,
    /// The same, counted per source address.
    pub cookie_threshold_per_source: Option<Spanned<i64>>,
    /// Half-open IKE SAs in all at which new IKE_SA_INITs are dropped.
    pub half_open_limit: Option<Spanned<i64>>,
    /// The same, counted per source address.
    pub half_open_limit_per_source: Option<Spanned<i64>>,
    /// Seconds a half-open IKE SA waits for IKE_AUTH.
    pub half_open_timeout: Option<Spanned<i64>>,
    /// IKE SAs at which new IKE_SA_INITs are dropped (0: no limit).
    pub ike_sa_limit: Option<Spanned<i64>>,
    /// Seconds one COOKIE secret is used.
    pub cookie_secret_lifetime: Option<Spanned<i64>>,
}

/// `[vici]`: the opt-in VICI server (strongSwan's control protocol, for FRR nhrpd and
/// swanctl).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vici {
    /// Socket path; FRR nhrpd looks for `/var/run/charon.vici`.
    pub socket: SStr,
    /// A group whose members may connect too (the socket is then 0660): `frr` for nhrpd.
    pub group: Option<SStr>,
}

/// `[vrf.NAME]`: a Linux VRF device and its routing table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vrf {
    /// Routing table id of the VRF.
    pub table: Spanned<i64>,
}

/// `[ike_proposal.NAME]`: an IKEv2 proposal (`crypto ikev2 proposal`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkeProposal {
    /// Encryption algorithms, most preferred first.
    pub encryption: Vec<SStr>,
    /// Integrity algorithms; only with non-AEAD encryption.
    #[serde(default)]
    pub integrity: Vec<SStr>,
    /// Pseudo-random functions; default: derived from integrity, else `sha256`.
    #[serde(default)]
    pub prf: Vec<SStr>,
    /// Diffie-Hellman groups, as numbers (`14`) or names (`"group14"`).
    pub group: Vec<Spanned<GroupValue>>,
    /// Additional key exchanges (RFC 9370), entry i being ADDKE(i+1), each run in its own
    /// IKE_INTERMEDIATE exchange after IKE_SA_INIT: `["mlkem768"]`; alternatives with `|`,
    /// `none` making the round optional (`["mlkem768|none"]`: a peer without it gets a
    /// classic IKE SA).
    #[serde(default)]
    pub additional_key_exchanges: Vec<SStr>,
}

/// `[transform_set.NAME]`: one ESP transform set (`crypto ipsec transform-set`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSet {
    /// The ESP cipher, e.g. `aes-gcm-256`, `aes-cbc-128`, `chacha20-poly1305`.
    pub esp: SStr,
    /// The ESP integrity algorithm (non-AEAD ciphers only), e.g. `sha256`.
    pub integrity: Option<SStr>,
    /// `tunnel` (default) or `transport`.
    pub mode: Option<SStr>,
}

/// `lifetime = { seconds = .., kilobytes = .. }` of an IPsec profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetime {
    /// Child SA lifetime in seconds.
    pub seconds: Option<Spanned<i64>>,
    /// Child SA lifetime in kilobytes of traffic.
    pub kilobytes: Option<Spanned<i64>>,
}

/// `[ipsec_profile.NAME]` (`crypto ipsec profile`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpsecProfile {
    /// Transform sets in order of preference (1 to 6).
    pub transform_sets: Spanned<Vec<SStr>>,
    /// PFS group for rekeys, or `false` (default).
    pub pfs: Option<Spanned<GroupValue>>,
    /// Additional key exchanges of the PFS exchange (RFC 9370 §2.2.4), entry i being
    /// ADDKE(i+1), each run in its own IKE_FOLLOWUP_KE after the CREATE_CHILD_SA:
    /// `["mlkem768"]` (strongSwan's `esp_proposals = aes256gcm16-x25519-ke1_mlkem768`).
    /// Needs `pfs`; required of the peer.
    #[serde(default)]
    pub pfs_additional_key_exchanges: Vec<SStr>,
    /// SA lifetimes.
    pub lifetime: Option<Spanned<Lifetime>>,
    /// `off` (default), `crypto`, `packet` or `auto`.
    pub offload: Option<SStr>,
    /// IKE profile used to negotiate the SAs.
    pub ike_profile: Option<SStr>,
}

/// One `[[keyring.NAME.peer]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringPeer {
    /// Peer address or prefix (`0.0.0.0/0` for any IPv4 peer).
    pub address: Option<SStr>,
    /// Peer identity instead of an address (`fqdn:...`, `email:...`, `dn:...`).
    pub identity: Option<SStr>,
    /// File holding the pre-shared key, mode 0600, owned by root.
    pub psk_file: SStr,
}

/// `[keyring.NAME]` (`crypto keyring` / `crypto ikev2 keyring`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    /// Peer entries, searched most specific first.
    #[serde(default)]
    pub peer: Vec<Spanned<KeyringPeer>>,
}

/// `[trustpoint.NAME]`: certificate material (`crypto pki trustpoint`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trustpoint {
    /// CA certificate files (PEM) that anchor the peers' chains.
    #[serde(default)]
    pub ca: Vec<SStr>,
    /// CRL files (PEM, several per file, or DER) of those CAs.
    #[serde(default)]
    pub crl: Vec<SStr>,
    /// Our certificate (PEM).
    pub certificate: Option<SStr>,
    /// Our private key (PEM), mode 0600, owned by root.
    pub private_key: Option<SStr>,
}

/// `dpd = { interval = .., retries = .., action = .. }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpd {
    /// Seconds of silence before a liveness check.
    pub interval: Spanned<i64>,
    /// Unanswered checks before the peer is declared dead.
    pub retries: Option<Spanned<i64>>,
    /// `restart`, `clear` or `hold`: what a dead peer's tunnel does.
    pub action: Option<SStr>,
}

/// `[ike_profile.NAME]` (`crypto ikev2 profile` / `crypto isakmp profile`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkeProfile {
    /// Remote identities accepted by this profile.
    pub match_identity: Option<Vec<SStr>>,
    /// Our identity: `address` (default), `fqdn:NAME`, `email:ADDR`, `dn:DN`, `address:IP`.
    pub local_identity: Option<SStr>,
    /// How we authenticate: `psk`, `rsa-sig` or `ecdsa-sig`.
    pub local_auth: Option<SStr>,
    /// How the peer may authenticate (one or more methods).
    pub remote_auth: Option<Vec<SStr>>,
    /// Keyring holding the pre-shared keys.
    pub keyring: Option<SStr>,
    /// Trustpoint holding certificates.
    pub trustpoint: Option<SStr>,
    /// Dead peer detection.
    pub dpd: Option<Spanned<Dpd>>,
    /// Offer MOBIKE (RFC 4555); default true.
    pub mobike: Option<Spanned<bool>>,
    /// Only answer on this local address.
    pub local_address: Option<SStr>,
    /// Only answer on this interface's addresses.
    pub local_interface: Option<SStr>,
    /// Clone a dynamic VTI from this template for each session.
    pub virtual_template: Option<SStr>,
    /// IKE proposals in order of preference.
    pub proposals: Option<Vec<SStr>>,
    /// Front-door VRF: where the IKE and ESP packets travel.
    pub fvrf: Option<SStr>,
    /// IKE SA lifetime in seconds.
    pub lifetime_seconds: Option<Spanned<i64>>,
    /// `2` (default) or `1`: IKEv1 main mode with the `[isakmp_policy.N]` list.
    pub version: Option<Spanned<i64>>,
    /// IKEv1 only: initiate with aggressive mode and let peers use it with this profile.
    pub aggressive: Option<Spanned<bool>>,
}

/// `[isakmp_policy.N]` (`crypto isakmp policy N`): one IKEv1 phase 1 policy. A key left
/// out takes IOS's default, and the defaults vtid cannot offer (`des`, group 1) are errors
/// that say so; `authentication` must always be written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsakmpPolicy {
    /// `3des`, `aes` (128), `aes 192`, `aes 256`; IOS's default `des` is not offered.
    pub encryption: Option<SStr>,
    /// `sha` (the default), `sha256`, `sha384`, `sha512`, `md5`.
    pub hash: Option<SStr>,
    /// `pre-share` or `rsa-sig` (IOS's default, with the IKE profile's trustpoint).
    pub authentication: Option<SStr>,
    /// DH group; IOS's default group 1 is not offered.
    pub group: Option<Spanned<GroupValue>>,
    /// ISAKMP SA lifetime in seconds (default 86400).
    pub lifetime: Option<Spanned<i64>>,
}

/// `[tunnel.NAME]`: a static VTI (`interface TunnelN` + `tunnel mode ipsec`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    /// `xfrmi` (default) or `vti`.
    pub mode: Option<SStr>,
    /// Local underlay address or interface name (`tunnel source`).
    pub source: SStr,
    /// Peer underlay address (`tunnel destination`); none for `mgre`.
    pub destination: Option<SStr>,
    /// Inner address with prefix length (`ip address`).
    pub address: Option<SStr>,
    /// Borrow the address of this interface (`ip unnumbered`).
    pub unnumbered: Option<SStr>,
    /// IPsec profile (`tunnel protection ipsec profile`).
    pub protection: SStr,
    /// IKE profile; derived from the keyrings when absent.
    pub ike_profile: Option<SStr>,
    /// Interface MTU; computed from the underlay and transforms when absent.
    pub mtu: Option<Spanned<i64>>,
    /// Prefixes routed into the tunnel: `"10.0.0.0/8"` or `{ prefix = "10.0.0.0/8", metric
    /// = 200 }` (a floating route: `ip route ... Tunnel0 200`).
    #[serde(default)]
    pub routes: Vec<RouteValue>,
    /// Our prefixes, proposed as our traffic selectors instead of 0/0 so a dynamic VTI hub
    /// routes them toward us (Cisco FlexVPN's `route set local`).
    #[serde(default)]
    pub announce: Vec<SStr>,
    /// Inside VRF (`ip vrf forwarding`).
    pub vrf: Option<SStr>,
    /// Front-door VRF of the underlay (`tunnel vrf`).
    pub fvrf: Option<SStr>,
    /// XFRM interface id / vti key; allocated when absent.
    pub if_id: Option<Spanned<i64>>,
    /// Start negotiation ourselves (default true).
    pub initiate: Option<Spanned<bool>>,
    /// ESP offload for this tunnel; the IPsec profile's when absent.
    pub offload: Option<SStr>,
    /// GRE key (`tunnel key`), `gre`/`mgre` only.
    pub key: Option<Spanned<i64>>,
    /// Outer TTL (`tunnel ttl`), `gre`/`mgre` only.
    pub ttl: Option<Spanned<i64>>,
    /// `tunnel protection ... shared`, `mgre` only.
    pub shared: Option<Spanned<bool>>,
}

impl Tunnel {
    /// Where `destination` is written (the entry's start when it is not: only an `mgre`
    /// tunnel has none, and the tunnel checks that before any other use).
    pub fn destination_span(&self) -> std::ops::Range<usize> {
        self.destination.as_ref().map_or(0..0, |d| d.span())
    }
}

/// `[virtual_template.NAME]`: the model for dynamic VTIs (`interface Virtual-Template N type
/// tunnel`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualTemplate {
    /// Interface whose address the clones borrow (`ip unnumbered`).
    pub unnumbered: SStr,
    /// Clone MTU; computed when absent.
    pub mtu: Option<Spanned<i64>>,
    /// Inside VRF of the clones.
    pub vrf: Option<SStr>,
    /// Linux interface group of the clones.
    pub group: Option<Spanned<i64>>,
    /// IPsec profile protecting the clones.
    pub protection: SStr,
    /// Root qdisc for each clone, in `tc` syntax.
    pub qdisc: Option<SStr>,
    /// `"traffic-selectors"` (default) or a list of prefixes.
    pub routes: Option<Spanned<StrOrList>>,
    /// ESP offload for the clones; the IPsec profile's when absent.
    pub offload: Option<SStr>,
    /// `"point-to-point"` (default: one clone per spoke) or `"multipoint"` (one device).
    pub mode: Option<SStr>,
    /// The multipoint device's name (`mode = "multipoint"` only).
    pub interface: Option<SStr>,
}

/// `[access_list.NAME]`: a crypto ACL, IOS extended-ACL entries in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessList {
    /// `"permit ip 10.0.0.0 0.0.0.255 10.1.0.0 0.0.0.255"`, ... (first match wins).
    pub entries: Spanned<Vec<SStr>>,
}

/// `[crypto_map.NAME]`: a crypto map set applied to one local address or interface.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoMap {
    /// The local address IKE and ESP use (`crypto map NAME local-address`).
    pub local_address: Option<SStr>,
    /// The interface the map is applied to (`interface X` / `crypto map NAME`): its address.
    pub interface: Option<SStr>,
    /// The entries (`crypto map NAME SEQ ipsec-isakmp`), any order; `seq` orders them.
    #[serde(default)]
    pub entry: Vec<Spanned<CryptoMapEntry>>,
}

/// One `[[crypto_map.NAME.entry]]`: `ipsec-isakmp` (the default), `dynamic_map = "DYN"`
/// (`ipsec-isakmp dynamic DYN`) or `manual = true` (`ipsec-manual`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoMapEntry {
    /// Sequence number: lower is evaluated first.
    pub seq: Spanned<i64>,
    /// The crypto ACL (`match address`).
    pub match_address: Option<SStr>,
    /// Peer addresses in order of preference (`set peer`, repeated).
    pub peers: Option<Spanned<Vec<SStr>>>,
    /// Transform sets in order of preference (`set transform-set`).
    pub transform_sets: Option<Spanned<Vec<SStr>>>,
    /// PFS group (`set pfs`), or `false`.
    pub pfs: Option<Spanned<GroupValue>>,
    /// SA lifetimes (`set security-association lifetime`).
    pub lifetime: Option<Spanned<Lifetime>>,
    /// IKE profile; derived from the keyrings when absent, as for tunnels.
    pub ike_profile: Option<SStr>,
    /// One SA pair per host pair (`set security-association level per-host`).
    pub per_host: Option<Spanned<bool>>,
    /// Route the protected remote prefixes toward the peer while its SA is up
    /// (`set reverse-route`).
    pub reverse_route: Option<Spanned<bool>>,
    /// Metric of those routes.
    pub reverse_route_metric: Option<Spanned<i64>>,
    /// Negotiate at start instead of on the first packet.
    pub initiate: Option<Spanned<bool>>,
    /// This entry is the dynamic map of that name (`ipsec-isakmp dynamic DYN`).
    pub dynamic_map: Option<SStr>,
    /// Manual keying (`ipsec-manual`): fixed SPIs and keys, no IKE.
    pub manual: Option<Spanned<bool>>,
    /// `set session-key inbound esp SPI cipher ... [authenticator ...]`.
    pub session_key_inbound: Option<Spanned<SessionKey>>,
    /// `set session-key outbound esp ...`.
    pub session_key_outbound: Option<Spanned<SessionKey>>,
}

/// One direction's manual SA: its SPI and key files (hex, 0600, owned by root).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionKey {
    /// The SPI (256 or more: 1-255 are reserved, RFC 4303 §2.1).
    pub spi: Spanned<i64>,
    /// The cipher key (for AES-GCM with its 4-byte salt appended, RFC 4106 §8.1).
    pub cipher_file: SStr,
    /// The authenticator key (non-AEAD transforms).
    pub authenticator_file: Option<SStr>,
}

/// `[dynamic_map.NAME]`: responder templates (`crypto dynamic-map NAME SEQ`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicMap {
    /// The entries; `seq` orders them.
    #[serde(default)]
    pub entry: Vec<Spanned<DynamicMapEntry>>,
}

/// One `[[dynamic_map.NAME.entry]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicMapEntry {
    /// Sequence number.
    pub seq: Spanned<i64>,
    /// The ACL the peers' proposed flows must fall inside; absent: any flow is accepted
    /// (seed F-E5).
    pub match_address: Option<SStr>,
    /// Transform sets (`set transform-set`, the one required setting).
    pub transform_sets: Spanned<Vec<SStr>>,
    /// PFS group.
    pub pfs: Option<Spanned<GroupValue>>,
    /// SA lifetimes.
    pub lifetime: Option<Spanned<Lifetime>>,
    /// Which peers may connect and with which credentials.
    pub ike_profile: SStr,
    /// Route each peer's protected prefixes to it while its SA is up.
    pub reverse_route: Option<Spanned<bool>>,
    /// Metric of those routes.
    pub reverse_route_metric: Option<Spanned<i64>>,
}

/// A DH group written as a number, a name, or `false` (for `pfs`).
#[derive(Debug)]
pub enum GroupValue {
    /// `14`.
    Num(i64),
    /// `"group14"`, `"modp2048"`.
    Name(String),
    /// `false` (or `true`, which is rejected: a group must be named).
    Bool(bool),
}

impl<'de> Deserialize<'de> for GroupValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GroupValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a DH group number or name, or false")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GroupValue, E> {
                Ok(GroupValue::Num(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GroupValue, E> {
                Ok(GroupValue::Num(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GroupValue, E> {
                Ok(GroupValue::Name(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<GroupValue, E> {
                Ok(GroupValue::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One entry of a tunnel's `routes`: a bare prefix, or a table with a metric.
#[derive(Debug)]
pub struct RouteValue {
    /// The prefix (the string itself, or the table's `prefix`).
    pub prefix: SStr,
    /// `metric`.
    pub metric: Option<Spanned<i64>>,
}

/// The two spellings of a route, before the bare string gets its position.
enum RouteSpelling {
    Prefix(String),
    Table(RouteTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteTable {
    prefix: SStr,
    metric: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for RouteSpelling {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteSpelling;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a prefix string or a table { prefix = \"...\", metric = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RouteSpelling, E> {
                Ok(RouteSpelling::Prefix(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RouteSpelling, A::Error> {
                RouteTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RouteSpelling::Table)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RouteValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // toml hands positions only to `Spanned`: the whole entry is read spanned, and a bare
        // string takes the entry's position (a table's keys carry their own).
        let v = Spanned::<RouteSpelling>::deserialize(d)?;
        let span = v.span();
        Ok(match v.into_inner() {
            RouteSpelling::Prefix(s) => RouteValue {
                prefix: Spanned::new(span, s),
                metric: None,
            },
            RouteSpelling::Table(t) => RouteValue {
                prefix: t.prefix,
                metric: t.metric,
            },
        })
    }
}

/// A string or a list of strings (`routes = "traffic-selectors"` or `routes = ["10.0.0.0/8"]`).
#[derive(Debug)]
pub enum StrOrList {
    /// A single string.
    One(String),
    /// A list; each element keeps its own position.
    Many(Vec<SStr>),
}

impl<'de> Deserialize<'de> for StrOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrList, E> {
                Ok(StrOrList::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<SStr>()? {
                    out.push(item);
                }
                Ok(StrOrList::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}
