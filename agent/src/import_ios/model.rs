//! What an IOS configuration says, gathered from its blocks: one struct per IOS object, with
//! the line each value came from so that every decision and drop can point at it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::parse::{Block, Line, kw};
use super::{Notes, Why};

/// A pre-shared key as written: its IOS encryption type and the string.
#[derive(Clone, Debug)]
pub struct KeyText {
    /// 0 (clear), 5, 6 or 7.
    pub kind: u8,
    /// The key or its encoded form. Never printed.
    pub text: zeroize::Zeroizing<String>,
    /// Where it was written.
    pub line: usize,
}

/// Which peers a key is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRef {
    /// An address and mask (`0.0.0.0 0.0.0.0` is every IPv4 peer).
    Prefix(IpNet),
    /// A host name: vtid matches it as an FQDN identity.
    Fqdn(String),
    /// An email identity (`identity email`).
    Email(String),
}

/// One key of a keyring.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// Whom it is for.
    pub peer: PeerRef,
    /// The key.
    pub key: KeyText,
}

/// `crypto isakmp policy N`, with IOS's defaults for what it leaves out.
#[derive(Clone, Debug)]
pub struct IsakmpPolicy {
    /// N: lower is tried first.
    pub priority: u32,
    /// Line of `crypto isakmp policy N`.
    pub line: usize,
    /// `encryption`: default `des`.
    pub encr: (String, usize),
    /// `hash`: default `sha`.
    pub hash: (String, usize),
    /// `authentication`: default `rsa-sig`.
    pub auth: (String, usize),
    /// `group`: default 1.
    pub group: (String, usize),
    /// `lifetime`: default 86400 s.
    pub lifetime: Option<(u64, usize)>,
}

/// `crypto isakmp profile` or `crypto ikev2 profile`.
#[derive(Clone, Debug, Default)]
pub struct IkeProfile {
    /// Line of the head.
    pub line: usize,
    /// True for `crypto ikev2 profile`.
    pub ikev2: bool,
    /// `match identity ...`, as vtid patterns.
    pub match_identity: Vec<String>,
    /// `keyring` / `keyring local`.
    pub keyring: Option<String>,
    /// `self-identity` / `identity local`, as a vtid identity.
    pub local_identity: Option<String>,
    /// `authentication local` (IKEv2) as vtid's name.
    pub local_auth: Option<String>,
    /// `authentication remote` (IKEv2), vtid names.
    pub remote_auth: Vec<String>,
    /// `virtual-template N`.
    pub virtual_template: Option<(u32, usize)>,
    /// `dpd` / `keepalive`: interval, retries.
    pub dpd: Option<(u32, u32)>,
    /// `lifetime` (IKEv2).
    pub lifetime: Option<u64>,
    /// `ca trust-point` / `pki trustpoint`.
    pub trustpoint: Option<String>,
    /// `vrf` / `match fvrf`: the front-door VRF.
    pub fvrf: Option<String>,
}

/// `crypto ikev2 proposal`: vtid names of what it lists.
#[derive(Clone, Debug, Default)]
pub struct Ikev2Proposal {
    /// Line of the head.
    pub line: usize,
    /// Encryption algorithms.
    pub encryption: Vec<String>,
    /// Integrity algorithms.
    pub integrity: Vec<String>,
    /// PRFs.
    pub prf: Vec<String>,
    /// Group numbers.
    pub group: Vec<u16>,
}

/// `crypto ipsec transform-set NAME t1 [t2 [t3]]`.
#[derive(Clone, Debug)]
pub struct TransformSet {
    /// Line of the head.
    pub line: usize,
    /// vtid's cipher name.
    pub esp: String,
    /// vtid's integrity name (non-AEAD ciphers).
    pub integrity: Option<String>,
    /// `mode transport`.
    pub transport: bool,
}

/// `crypto ipsec profile`.
#[derive(Clone, Debug, Default)]
pub struct IpsecProfile {
    /// Line of the head.
    pub line: usize,
    /// `set transform-set`, in order.
    pub transform_sets: Vec<(String, usize)>,
    /// `set pfs groupN`.
    pub pfs: Option<u16>,
    /// `set security-association lifetime seconds`.
    pub seconds: Option<u64>,
    /// `set security-association lifetime kilobytes`.
    pub kilobytes: Option<u64>,
    /// `set isakmp-profile` / `set ikev2-profile`.
    pub ike_profile: Option<(String, usize)>,
}

/// How an interface is tunnelled (`tunnel mode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelMode {
    /// `tunnel mode ipsec ipv4|ipv6`.
    Ipsec,
    /// GRE in any form (also IOS's default when no `tunnel mode` is given).
    Gre(String),
    /// Anything else.
    Other(String),
}

/// `interface NAME`.
#[derive(Clone, Debug, Default)]
pub struct Interface {
    /// Canonical IOS name (`GigabitEthernet0/1`).
    pub name: String,
    /// Line of the head.
    pub line: usize,
    /// `ip address A M` / `ipv6 address P/L`.
    pub address: Option<IpNet>,
    /// `ip unnumbered IF`.
    pub unnumbered: Option<String>,
    /// `ip mtu N`.
    pub mtu: Option<u32>,
    /// `ip vrf forwarding V` / `vrf forwarding V`.
    pub vrf: Option<String>,
    /// `tunnel source` (address or interface).
    pub source: Option<String>,
    /// `tunnel destination`.
    pub destination: Option<IpAddr>,
    /// `tunnel mode`, with its line.
    pub mode: Option<(TunnelMode, usize)>,
    /// `tunnel mode ipsec ipv` (ambiguous between ipv4 and ipv6).
    pub mode_ambiguous: bool,
    /// `tunnel protection ipsec profile P [shared]`.
    pub protection: Option<(String, bool, usize)>,
    /// `tunnel vrf V`.
    pub fvrf: Option<String>,
    /// `tunnel key K`.
    pub key: Option<u32>,
    /// `tunnel ttl T`.
    pub ttl: Option<u8>,
    /// `shutdown`.
    pub shutdown: bool,
    /// `crypto map NAME`, with its line.
    pub crypto_map: Option<(String, usize)>,
    /// `ipv6 crypto map NAME`, with its line.
    pub crypto_map_v6: Option<(String, usize)>,
}

/// One entry of an IOS access list, as written (`permit ip 10.0.0.0 0.0.0.255 any`), with
/// the sequence number (`10 permit ...`, `sequence 10 permit ...`) removed.
#[derive(Clone, Debug)]
pub struct AclLine {
    /// Input line.
    pub line: usize,
    /// `permit|deny ...`.
    pub text: String,
}

/// `access-list N ...` lines, `ip access-list extended|standard NAME` or `ipv6 access-list
/// NAME` blocks.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    /// First line.
    pub line: usize,
    /// `ipv6 access-list`.
    pub v6: bool,
    /// A standard ACL (numbers 1-99 and 1300-1999, `ip access-list standard`): source only.
    pub standard: bool,
    /// Its permit and deny entries, in order.
    pub entries: Vec<AclLine>,
    /// Every input line of the ACL (remarks included).
    pub all: Vec<usize>,
}

/// What a crypto map entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `ipsec-isakmp` (IOS's default).
    Isakmp,
    /// `ipsec-isakmp dynamic DYN [discover]`.
    Dynamic {
        /// The dynamic map set.
        set: String,
        /// `discover`: Tunnel Endpoint Discovery.
        discover: bool,
    },
    /// `ipsec-manual`.
    Manual,
}

/// `set session-key inbound|outbound esp SPI cipher HEX [authenticator HEX]`.
#[derive(Clone, Debug)]
pub struct SessionKey {
    /// Line.
    pub line: usize,
    /// Inbound (else outbound).
    pub inbound: bool,
    /// The SPI.
    pub spi: u32,
    /// Cipher key in hex. Never printed.
    pub cipher: zeroize::Zeroizing<String>,
    /// Authenticator key in hex. Never printed.
    pub auth: Option<zeroize::Zeroizing<String>>,
}

/// One `crypto map NAME SEQ ...` or `crypto dynamic-map NAME SEQ` entry.
#[derive(Clone, Debug)]
pub struct MapEntry {
    /// Line of the head.
    pub line: usize,
    /// Sequence number.
    pub seq: u32,
    /// What it is.
    pub kind: MapKind,
    /// `match address ACL`.
    pub match_address: Option<(String, usize)>,
    /// `set peer A`, repeated.
    pub peers: Vec<(IpAddr, usize)>,
    /// `set transform-set`, in order.
    pub transform_sets: Vec<(String, usize)>,
    /// `set pfs groupN`.
    pub pfs: Option<u16>,
    /// `set security-association lifetime seconds`.
    pub seconds: Option<u64>,
    /// `set security-association lifetime kilobytes`.
    pub kilobytes: Option<u64>,
    /// `set security-association level per-host`.
    pub per_host: bool,
    /// `set reverse-route` / `reverse-route`, with the metric of `set reverse-route distance`.
    pub reverse_route: Option<(u32, usize)>,
    /// `set isakmp-profile` / `set ikev2-profile`.
    pub ike_profile: Option<(String, usize)>,
    /// Manual keys.
    pub session_keys: Vec<SessionKey>,
}

/// A crypto map set (`crypto map NAME ...` or `crypto map ipv6 NAME ...`).
#[derive(Clone, Debug, Default)]
pub struct CryptoMapSet {
    /// `crypto map NAME local-address IF`.
    pub local_address: Option<(String, usize)>,
    /// `crypto map NAME isakmp-profile P`: the profile of entries that name none.
    pub ike_profile: Option<(String, usize)>,
    /// Entries by sequence number.
    pub entries: BTreeMap<u32, MapEntry>,
}

/// `ip route ...` through an interface.
#[derive(Clone, Debug)]
pub struct Route {
    /// Line.
    pub line: usize,
    /// The prefix.
    pub prefix: IpNet,
    /// The interface it points at, canonical IOS name.
    pub interface: Option<String>,
    /// The administrative distance, when given.
    pub distance: Option<u32>,
}

/// Everything gathered.
#[derive(Debug, Default)]
pub struct Ios {
    /// `hostname`.
    pub hostname: Option<String>,
    /// `crypto isakmp policy` by priority.
    pub isakmp_policies: BTreeMap<u32, IsakmpPolicy>,
    /// `crypto isakmp key` lines: IOS's default keyring.
    pub isakmp_keys: Vec<KeyEntry>,
    /// `crypto isakmp keepalive S R`.
    pub keepalive: Option<(u32, u32)>,
    /// `crypto keyring` and `crypto ikev2 keyring`.
    pub keyrings: BTreeMap<String, Vec<KeyEntry>>,
    /// IKE profiles of both versions.
    pub ike_profiles: BTreeMap<String, IkeProfile>,
    /// `crypto ikev2 proposal`.
    pub ikev2_proposals: BTreeMap<String, Ikev2Proposal>,
    /// Proposals named by `crypto ikev2 policy`, in order.
    pub ikev2_policy_proposals: Vec<String>,
    /// `crypto ipsec transform-set`.
    pub transform_sets: BTreeMap<String, TransformSet>,
    /// `crypto ipsec profile`.
    pub ipsec_profiles: BTreeMap<String, IpsecProfile>,
    /// `crypto ipsec security-association lifetime seconds|kilobytes`.
    pub global_seconds: Option<u64>,
    /// The same in kilobytes.
    pub global_kilobytes: Option<u64>,
    /// Interfaces in order.
    pub interfaces: Vec<Interface>,
    /// `ip vrf` / `vrf definition`, with their lines.
    pub vrfs: BTreeMap<String, usize>,
    /// Static routes.
    pub routes: Vec<Route>,
    /// Whether any IKEv1 configuration was seen (policies, keys, isakmp profiles).
    pub ikev1: bool,
    /// Access lists by name or number.
    pub acls: BTreeMap<String, Acl>,
    /// Crypto map sets by (IPv6, name): `crypto map ipv6 NAME` is a set of its own.
    pub crypto_maps: BTreeMap<(bool, String), CryptoMapSet>,
    /// `crypto dynamic-map NAME SEQ` entries by set name.
    pub dynamic_maps: BTreeMap<String, BTreeMap<u32, MapEntry>>,
}

/// Canonical IOS interface type names, matched by unambiguous prefix (`Gi0/1`, `tu0`).
const IF_TYPES: &[&str] = &[
    "Ethernet",
    "FastEthernet",
    "GigabitEthernet",
    "TenGigabitEthernet",
    "Loopback",
    "Tunnel",
    "Virtual-Template",
    "Virtual-Access",
    "Serial",
    "Dialer",
    "Vlan",
    "Port-channel",
    "BVI",
    "ATM",
    "Cellular",
];

/// `gi0/1` → `GigabitEthernet0/1`; an unknown type is kept as written.
pub fn canonical_ifname(name: &str) -> String {
    let split = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let (ty, num) = name.split_at(split);
    let ty_l = ty.trim().to_ascii_lowercase();
    if ty_l.is_empty() {
        return name.to_owned();
    }
    let hits: Vec<&&str> = IF_TYPES
        .iter()
        .filter(|t| t.to_ascii_lowercase().starts_with(&ty_l))
        .collect();
    match hits.as_slice() {
        [one] => format!("{one}{num}"),
        // `Ethernet` is also the start of nothing else, but `e` alone is still a prefix of
        // one type only; several hits means the prefix is ambiguous: keep it.
        _ => IF_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(ty.trim()))
            .map_or_else(|| name.to_owned(), |t| format!("{t}{num}")),
    }
}

/// `255.255.255.0` → 24; None for a non-contiguous mask.
fn mask_len(mask: &str) -> Option<u8> {
    let m: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(m);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// `A M` or `A/L` into a prefix; a bare address is a host prefix.
fn prefix(addr: &str, mask: Option<&str>) -> Option<IpNet> {
    if let Ok(n) = addr.parse::<IpNet>() {
        return Some(n);
    }
    let a: IpAddr = addr.parse().ok()?;
    match (a, mask) {
        (IpAddr::V4(_), Some(m)) if m.contains('.') => IpNet::new(a, mask_len(m)?).ok(),
        _ => Some(IpNet::from(a)),
    }
}

/// Gathers the model from the blocks, noting what is dropped and why.
pub fn gather(blocks: &[Block], notes: &mut Notes) -> Ios {
    let mut ios = Ios::default();
    for b in blocks {
        let h = &b.head;
        let (w0, w1, w2) = (h.lower(0), h.lower(1), h.lower(2));
        match (w0.as_str(), w1.as_str(), w2.as_str()) {
            ("hostname", _, _) => {
                ios.hostname = Some(h.words[1..].join(" "));
                notes.note(
                    h.line,
                    Why::Dropped,
                    "hostname: only named in the header comment",
                );
            }
            ("crypto", "isakmp", "policy") => isakmp_policy(&mut ios, b, notes),
            ("crypto", "isakmp", "key") => {
                ios.ikev1 = true;
                if let Some(k) = isakmp_key(h, 3, notes) {
                    ios.isakmp_keys.push(k);
                }
                body_unsupported(b, notes, "crypto isakmp key has no sub-commands");
            }
            ("crypto", "isakmp", "keepalive") => {
                let s = h.word(3).parse().ok();
                let r = h.word(4).parse().unwrap_or(2);
                match s {
                    Some(s) => {
                        ios.keepalive = Some((s, r));
                        notes.note(
                            h.line,
                            Why::Decided,
                            format!(
                                "keepalive {s} {r}: the dpd of every IKE profile that sets none"
                            ),
                        );
                    }
                    None => notes.note(h.line, Why::Unknown, "keepalive without an interval"),
                }
            }
            ("crypto", "isakmp", "profile") => ike_profile(&mut ios, b, false, notes),
            ("crypto", "isakmp", "client") => {
                notes.note(
                    h.line,
                    Why::Unsupported,
                    "Easy VPN (crypto isakmp client configuration group: mode config, address \
                     pools, Xauth) is not supported",
                );
                body_unsupported(b, notes, "Easy VPN group setting");
            }
            ("crypto", "keyring", _) => keyring(&mut ios, b, false, notes),
            ("crypto", "ikev2", "keyring") => keyring(&mut ios, b, true, notes),
            ("crypto", "ikev2", "proposal") => ikev2_proposal(&mut ios, b, notes),
            ("crypto", "ikev2", "policy") => {
                notes.note(
                    h.line,
                    Why::Decided,
                    format!(
                        "IKEv2 policy {}: the proposals it lists become every IKEv2 profile's \
                         `proposals`, in this order",
                        h.word(3)
                    ),
                );
                for l in &b.body {
                    if l.lower(0) == "proposal" {
                        ios.ikev2_policy_proposals
                            .extend(l.words[1..].iter().cloned());
                    } else {
                        notes.note(
                            l.line,
                            Why::Dropped,
                            format!(
                                "`{}` in an IKEv2 policy: vtid offers the same proposals on \
                                 every address and VRF",
                                l.text
                            ),
                        );
                    }
                }
            }
            ("crypto", "ikev2", "profile") => ike_profile(&mut ios, b, true, notes),
            ("crypto", "ipsec", "transform-set") => transform_set(&mut ios, b, notes),
            ("crypto", "ipsec", "profile") => ipsec_profile(&mut ios, b, notes),
            ("crypto", "ipsec", "security-association") => {
                // `crypto ipsec security-association lifetime seconds|kilobytes N`.
                match (
                    h.lower(3).as_str(),
                    h.lower(4).as_str(),
                    h.word(5).parse().ok(),
                ) {
                    ("lifetime", "seconds", Some(n)) => ios.global_seconds = Some(n),
                    ("lifetime", "kilobytes", Some(n)) => ios.global_kilobytes = Some(n),
                    _ => notes.note(h.line, Why::Unsupported, format!("`{}`", h.text)),
                }
            }
            ("crypto", "ipsec", "client") => notes.note(
                h.line,
                Why::Unsupported,
                "Easy VPN client (crypto ipsec client ezvpn) is not supported",
            ),
            ("crypto", "map", _) => crypto_map(&mut ios, b, notes),
            ("crypto", "dynamic-map", _) => dynamic_map(&mut ios, b, notes),
            ("crypto", "pki", _) | ("crypto", "ca", _) => notes.note(
                h.line,
                Why::Unsupported,
                format!(
                    "`{}`: IOS enrols and stores certificates itself; vtid reads them from \
                     files: write a [trustpoint] with the CA, certificate and key files",
                    h.text
                ),
            ),
            ("interface", _, _) => interface(&mut ios, b, notes),
            ("ip", "vrf", _) | ("vrf", "definition", _) => {
                ios.vrfs.insert(h.word(2).to_owned(), h.line);
                for l in &b.body {
                    // rd, route-target, address-family: MPLS VPN signalling, which a Linux
                    // VRF does not need.
                    notes.note(
                        l.line,
                        Why::Dropped,
                        format!(
                            "`{}`: BGP/MPLS VPN signalling, not part of a Linux VRF",
                            l.text
                        ),
                    );
                }
            }
            ("ip", "route", _) | ("ipv6", "route", _) => route(&mut ios, h, notes),
            ("router", _, _) => notes.note(
                h.line,
                Why::Dropped,
                format!("`{}`: routing protocols run in FRR, not in vtid", h.text),
            ),
            (w, x, _) if is_router_housekeeping(w, x) => notes.note(
                h.line,
                Why::Dropped,
                format!(
                    "`{}`: a router setting with no part in vtid's configuration",
                    h.text
                ),
            ),
            ("access-list", _, _) => numbered_acl(&mut ios, h),
            ("ip", "access-list", "extended" | "standard") | ("ipv6", "access-list", _) => {
                named_acl(&mut ios, b, notes);
            }
            ("ip", "access-list", _) => notes.note(
                h.line,
                Why::Unsupported,
                format!("`{}`: packet filters are nftables' job on Linux", h.text),
            ),
            ("ip", "nat", _) | ("ip", "inspect", _) => notes.note(
                h.line,
                Why::Unsupported,
                format!(
                    "`{}`: NAT and the IOS firewall are nftables' job on Linux",
                    h.text
                ),
            ),
            ("ip", "local", "pool") => notes.note(
                h.line,
                Why::Unsupported,
                format!(
                    "`{}`: address pools serve Easy VPN, which is not supported",
                    h.text
                ),
            ),
            ("class-map", _, _) | ("policy-map", _, _) => notes.note(
                h.line,
                Why::Unsupported,
                format!(
                    "`{}`: IOS QoS is not translated; a virtual template takes a tc qdisc \
                     (`qdisc = \"...\"`), and tc shapes static tunnels",
                    h.text
                ),
            ),
            _ => {
                notes.note(h.line, Why::Unknown, format!("`{}`", h.text));
                for l in &b.body {
                    notes.note(
                        l.line,
                        Why::Unknown,
                        format!("`{}` (under `{}`)", l.text, h.text),
                    );
                }
            }
        }
    }
    ios
}

/// Global commands that configure the router itself (management, logging, services): not
/// part of an IPsec configuration, noted as dropped rather than not understood.
fn is_router_housekeeping(w0: &str, w1: &str) -> bool {
    matches!(
        w0,
        "version"
            | "service"
            | "aaa"
            | "controller"
            | "line"
            | "username"
            | "enable"
            | "boot"
            | "logging"
            | "ntp"
            | "snmp-server"
            | "banner"
            | "mta"
            | "voice"
            | "license"
            | "archive"
            | "control-plane"
            | "redundancy"
            | "memory"
            | "clock"
            | "cdp"
            | "lldp"
            | "scheduler"
            | "alias"
            | "spanning-tree"
            | "call"
            | "multilink"
    ) || (w0 == "no" && matches!(w1, "aaa" | "service" | "ip" | "cdp" | "logging"))
        || (w0 == "ip"
            && matches!(
                w1,
                "subnet-zero"
                    | "cef"
                    | "classless"
                    | "http"
                    | "domain"
                    | "domain-name"
                    | "domain-lookup"
                    | "name-server"
                    | "ssh"
                    | "scp"
                    | "ftp"
                    | "tftp"
                    | "forward-protocol"
                    | "bootp"
                    | "finger"
                    | "source-route"
                    | "audit"
            ))
}

/// Notes every body line of a block that takes none.
fn body_unsupported(b: &Block, notes: &mut Notes, why: &str) {
    for l in &b.body {
        notes.note(l.line, Why::Unsupported, format!("`{}`: {why}", l.text));
    }
}

fn isakmp_policy(ios: &mut Ios, b: &Block, notes: &mut Notes) {
    ios.ikev1 = true;
    let h = &b.head;
    let Ok(priority) = h.word(3).parse() else {
        notes.note(
            h.line,
            Why::Unknown,
            "crypto isakmp policy without a priority",
        );
        return;
    };
    // IOS's defaults for an ISAKMP policy (shown by `show crypto isakmp policy`).
    let mut p = IsakmpPolicy {
        priority,
        line: h.line,
        encr: ("des".into(), h.line),
        hash: ("sha".into(), h.line),
        auth: ("rsa-sig".into(), h.line),
        group: ("1".into(), h.line),
        lifetime: None,
    };
    for l in &b.body {
        let w0 = l.lower(0);
        let rest = l.words[1..].join(" ").to_ascii_lowercase();
        if kw(&w0, "encryption", 4) {
            p.encr = (rest, l.line);
        } else if kw(&w0, "hash", 2) {
            p.hash = (rest, l.line);
        } else if kw(&w0, "authentication", 4) {
            p.auth = (rest, l.line);
        } else if kw(&w0, "group", 2) {
            p.group = (rest, l.line);
        } else if kw(&w0, "lifetime", 4) {
            match l.word(1).parse() {
                Ok(s) => p.lifetime = Some((s, l.line)),
                Err(_) => notes.note(l.line, Why::Unknown, format!("`{}`", l.text)),
            }
        } else {
            notes.note(
                l.line,
                Why::Unknown,
                format!("`{}` in an ISAKMP policy", l.text),
            );
        }
    }
    ios.isakmp_policies.insert(priority, p);
}

/// `[0|6|7] KEY` starting at word `i`; returns the key and the index after it.
fn key_at(l: &Line, i: usize) -> Option<(KeyText, usize)> {
    let (kind, at) = match l.word(i) {
        "0" | "5" | "6" | "7" if !l.word(i + 1).is_empty() => {
            (l.word(i).parse().unwrap_or(0), i + 1)
        }
        _ => (0, i),
    };
    let text = l.words.get(at)?;
    Some((
        KeyText {
            kind,
            text: zeroize::Zeroizing::new(text.clone()),
            line: l.line,
        },
        at + 1,
    ))
}

/// `crypto isakmp key [0|6|7] KEY address A [M] [no-xauth] | hostname H`, from word `i`.
fn isakmp_key(l: &Line, i: usize, notes: &mut Notes) -> Option<KeyEntry> {
    let Some((key, at)) = key_at(l, i) else {
        notes.note(l.line, Why::Unknown, "a key line without a key");
        return None;
    };
    let peer = match l.lower(at).as_str() {
        "address" if l.lower(at + 1) == "ipv6" => prefix(l.word(at + 2), None).map(PeerRef::Prefix),
        "address" => {
            let m = l.words.get(at + 2).filter(|m| m.contains('.'));
            prefix(l.word(at + 1), m.map(String::as_str)).map(PeerRef::Prefix)
        }
        "hostname" if !l.word(at + 1).is_empty() => Some(PeerRef::Fqdn(l.word(at + 1).into())),
        _ => None,
    };
    if peer.is_none() {
        notes.note(
            l.line,
            Why::Unknown,
            "a key without a peer address or hostname (incomplete line): not imported",
        );
    }
    Some(KeyEntry { peer: peer?, key })
}

fn keyring(ios: &mut Ios, b: &Block, ikev2: bool, notes: &mut Notes) {
    let h = &b.head;
    let name = h.word(if ikev2 { 3 } else { 2 }).to_owned();
    if !ikev2 {
        ios.ikev1 = true;
        if h.lower(3) == "vrf" {
            notes.note(
                h.line,
                Why::Decided,
                format!(
                    "keyring {name} is bound to VRF {}: in vtid the IKE profile's fvrf decides \
                     where its peers are",
                    h.word(4)
                ),
            );
        }
    }
    let mut entries = Vec::new();
    // IKEv2: `peer NAME` opens a sub-block of address/identity/pre-shared-key lines.
    let mut peer: Option<PeerRef> = None;
    let mut peer_key: Option<KeyText> = None;
    let flush = |peer: &mut Option<PeerRef>, key: &mut Option<KeyText>, out: &mut Vec<KeyEntry>| {
        if let (Some(p), Some(k)) = (peer.take(), key.take()) {
            out.push(KeyEntry { peer: p, key: k });
        }
    };
    for l in &b.body {
        let w0 = l.lower(0);
        if !ikev2 && w0 == "pre-shared-key" {
            // `pre-shared-key address A [M] key K` / `pre-shared-key hostname H key K`.
            let key_pos = l.words.iter().position(|w| w.eq_ignore_ascii_case("key"));
            let (Some(kp), true) = (key_pos, l.words.len() > 2) else {
                notes.note(
                    l.line,
                    Why::Unknown,
                    "pre-shared-key without a key: not imported",
                );
                continue;
            };
            let Some((key, _)) = key_at(l, kp + 1) else {
                notes.note(
                    l.line,
                    Why::Unknown,
                    "pre-shared-key without a key: not imported",
                );
                continue;
            };
            let who = match l.lower(1).as_str() {
                "address" => {
                    let m = l.words.get(3).filter(|m| m.contains('.') && 3 < kp);
                    prefix(l.word(2), m.map(String::as_str)).map(PeerRef::Prefix)
                }
                "hostname" => Some(PeerRef::Fqdn(l.word(2).into())),
                _ => None,
            };
            match who {
                Some(p) => entries.push(KeyEntry { peer: p, key }),
                None => notes.note(
                    l.line,
                    Why::Unknown,
                    "pre-shared-key without a peer address (incomplete line): not imported",
                ),
            }
        } else if ikev2 && w0 == "peer" {
            flush(&mut peer, &mut peer_key, &mut entries);
        } else if ikev2 && w0 == "address" {
            let m = l.words.get(2).filter(|m| m.contains('.'));
            peer = prefix(l.word(1), m.map(String::as_str)).map(PeerRef::Prefix);
        } else if ikev2 && w0 == "hostname" {
            peer = Some(PeerRef::Fqdn(l.word(1).into()));
        } else if ikev2 && w0 == "identity" {
            peer = match l.lower(1).as_str() {
                "address" => prefix(l.word(2), None).map(PeerRef::Prefix),
                "fqdn" => Some(PeerRef::Fqdn(l.word(2).into())),
                "email" => Some(PeerRef::Email(l.word(2).into())),
                _ => {
                    notes.note(l.line, Why::Unsupported, format!("`{}`", l.text));
                    None
                }
            };
        } else if ikev2 && w0 == "pre-shared-key" {
            let dir = l.lower(1);
            let at = if dir == "local" || dir == "remote" {
                2
            } else {
                1
            };
            let Some((k, _)) = key_at(l, at) else {
                notes.note(l.line, Why::Unknown, "pre-shared-key without a key");
                continue;
            };
            if at == 2 && peer_key.is_some() {
                notes.note(
                    l.line,
                    Why::Unsupported,
                    "asymmetric keys (pre-shared-key local and remote): vtid uses one key per \
                     peer in both directions; the first one is imported",
                );
            } else {
                peer_key = Some(k);
            }
        } else if w0 == "local-address" {
            notes.note(
                l.line,
                Why::Dropped,
                "keyring local-address: vtid picks keys by peer, on any local address",
            );
        } else if ikev2 && w0 == "description" {
        } else {
            notes.note(
                l.line,
                Why::Unknown,
                format!("`{}` in keyring {name}", l.text),
            );
        }
    }
    flush(&mut peer, &mut peer_key, &mut entries);
    ios.keyrings.insert(name, entries);
}

fn ike_profile(ios: &mut Ios, b: &Block, ikev2: bool, notes: &mut Notes) {
    let h = &b.head;
    let name = h.word(3).to_owned();
    ios.ikev1 |= !ikev2;
    let mut p = IkeProfile {
        line: h.line,
        ikev2,
        ..IkeProfile::default()
    };
    for l in &b.body {
        let (w0, w1, w2) = (l.lower(0), l.lower(1), l.lower(2));
        match (w0.as_str(), w1.as_str(), w2.as_str()) {
            // IKEv1: `match identity address A [M] [VRF]` / `host H` / `user-fqdn U`.
            ("match", "identity", "address") if !ikev2 => {
                let m = l.words.get(4).filter(|m| m.contains('.'));
                match prefix(l.word(3), m.map(String::as_str)) {
                    Some(n) => p.match_identity.push(n.trunc().to_string()),
                    None => notes.note(
                        l.line,
                        Why::Unknown,
                        "match identity address without an address",
                    ),
                }
            }
            ("match", "identity", "host") => p.match_identity.push(format!("fqdn:{}", l.word(3))),
            ("match", "identity", "user-fqdn") => {
                p.match_identity.push(format!("email:{}", l.word(3)));
            }
            ("match", "identity", "group") => notes.note(
                l.line,
                Why::Unsupported,
                "match identity group: Easy VPN groups are not supported",
            ),
            // IKEv2: `match identity remote address A [M] | fqdn [domain] X | email X | any`.
            ("match", "identity", "remote") => match l.lower(3).as_str() {
                "address" => {
                    let m = l.words.get(5).filter(|m| m.contains('.'));
                    match prefix(l.word(4), m.map(String::as_str)) {
                        Some(n) => p.match_identity.push(n.trunc().to_string()),
                        None => notes.note(l.line, Why::Unknown, format!("`{}`", l.text)),
                    }
                }
                "fqdn" if l.lower(4) == "domain" => notes.note(
                    l.line,
                    Why::Unsupported,
                    "match identity remote fqdn domain: vtid matches whole FQDNs",
                ),
                "fqdn" => p.match_identity.push(format!("fqdn:{}", l.word(4))),
                "email" => p.match_identity.push(format!("email:{}", l.word(4))),
                "any" => p.match_identity.push("any".into()),
                _ => notes.note(l.line, Why::Unsupported, format!("`{}`", l.text)),
            },
            ("match", "fvrf", _) | ("vrf", _, _) => {
                if w1 != "any" {
                    p.fvrf = Some(l.word(if w0 == "vrf" { 1 } else { 2 }).to_owned());
                }
            }
            ("keyring", "local", _) => p.keyring = Some(l.word(2).to_owned()),
            ("keyring", _, _) => p.keyring = Some(l.word(1).to_owned()),
            ("self-identity", kind, _) | ("identity", "local", kind) => {
                let v = l.words.last().cloned().unwrap_or_default();
                p.local_identity = match kind {
                    "address" if l.words.len() == (if ikev2 { 4 } else { 2 }) => None,
                    "address" => Some(v),
                    "fqdn" | "hostname" => Some(format!("fqdn:{v}")),
                    "email" | "user-fqdn" => Some(format!("email:{v}")),
                    "dn" => {
                        notes.note(
                            l.line,
                            Why::Decided,
                            "identity dn: vtid sends the certificate's subject, as IOS does",
                        );
                        None
                    }
                    _ => {
                        notes.note(l.line, Why::Unsupported, format!("`{}`", l.text));
                        None
                    }
                };
            }
            ("authentication", dir @ ("local" | "remote"), method) => {
                let m = match method {
                    "pre-share" => "psk",
                    "rsa-sig" => "rsa-sig",
                    "ecdsa-sig" => "ecdsa-sig",
                    _ => {
                        notes.note(
                            l.line,
                            Why::Unsupported,
                            format!("authentication {dir} {method} (vtid: pre-share, rsa-sig, ecdsa-sig)"),
                        );
                        continue;
                    }
                };
                if dir == "local" {
                    p.local_auth = Some(m.into());
                } else {
                    p.remote_auth.push(m.into());
                }
            }
            ("virtual-template", n, _) => match n.parse() {
                Ok(n) => p.virtual_template = Some((n, l.line)),
                Err(_) => notes.note(l.line, Why::Unknown, format!("`{}`", l.text)),
            },
            // The seeds' `virtual -template 1` (a stray space).
            ("virtual", "-template", n) => match n.parse() {
                Ok(n) => {
                    notes.note(
                        l.line,
                        Why::Decided,
                        format!("read `{}` as `virtual-template {n}`", l.text),
                    );
                    p.virtual_template = Some((n, l.line));
                }
                Err(_) => notes.note(l.line, Why::Unknown, format!("`{}`", l.text)),
            },
            ("dpd", i, r) => match (i.parse(), r.parse()) {
                (Ok(i), Ok(r)) => {
                    p.dpd = Some((i, r));
                    if l.lower(3) == "periodic" {
                        notes.note(
                            l.line,
                            Why::Decided,
                            "dpd periodic: vtid checks after `interval` seconds without \
                             traffic from the peer (on-demand), which detects the same failures",
                        );
                    }
                }
                _ => notes.note(l.line, Why::Unknown, format!("`{}`", l.text)),
            },
            ("keepalive", i, "retry") => match (i.parse(), l.word(3).parse()) {
                (Ok(i), Ok(r)) => p.dpd = Some((i, r)),
                _ => notes.note(l.line, Why::Unknown, format!("`{}`", l.text)),
            },
            ("lifetime", s, _) => match s.parse() {
                Ok(s) => p.lifetime = Some(s),
                Err(_) => notes.note(l.line, Why::Unknown, format!("`{}`", l.text)),
            },
            ("ca", "trust-point", _) | ("pki", "trustpoint", _) => {
                p.trustpoint = Some(l.word(2).to_owned());
            }
            ("local-address", _, _) => notes.note(
                l.line,
                Why::Decided,
                format!(
                    "local-address {}: not imported; set local_address or local_interface on \
                     the profile if the router has several WAN addresses",
                    l.word(1)
                ),
            ),
            ("initiate", "mode", "aggressive") => notes.note(
                l.line,
                Why::Unsupported,
                "aggressive mode is IKEv1; vtid speaks IKEv2",
            ),
            ("description", _, _) => {}
            _ => notes.note(
                l.line,
                Why::Unsupported,
                format!("`{}` in IKE profile {name}", l.text),
            ),
        }
    }
    ios.ike_profiles.insert(name, p);
}

/// IKEv2 names IOS and vtid spell alike, apart from `3des` and the MD5/DES ones vtid lacks.
fn ikev2_proposal(ios: &mut Ios, b: &Block, notes: &mut Notes) {
    let mut p = Ikev2Proposal {
        line: b.head.line,
        ..Ikev2Proposal::default()
    };
    for l in &b.body {
        let what = l.lower(0);
        for v in l.words[1..].iter().map(|w| w.to_ascii_lowercase()) {
            let ok = match what.as_str() {
                "encryption" => super::emit::encr_known(&v).then(|| p.encryption.push(v.clone())),
                "integrity" => super::emit::integ_known(&v).then(|| p.integrity.push(v.clone())),
                "prf" => super::emit::integ_known(&v).then(|| p.prf.push(v.clone())),
                "group" => v
                    .parse::<u16>()
                    .ok()
                    .filter(|g| super::emit::group_known(*g))
                    .map(|g| p.group.push(g)),
                _ => {
                    notes.note(
                        l.line,
                        Why::Unknown,
                        format!("`{}` in an IKEv2 proposal", l.text),
                    );
                    break;
                }
            };
            if ok.is_none() {
                notes.note(
                    l.line,
                    Why::Unsupported,
                    format!("{what} {v}: not implemented by vtid; left out of the proposal"),
                );
            }
        }
    }
    ios.ikev2_proposals.insert(b.head.word(3).to_owned(), p);
}

fn transform_set(ios: &mut Ios, b: &Block, notes: &mut Notes) {
    let h = &b.head;
    let name = h.word(3).to_owned();
    let mut esp = None;
    let mut integrity = None;
    let mut bad = Vec::new();
    let mut words = h.words[4..]
        .iter()
        .map(|w| w.to_ascii_lowercase())
        .peekable();
    while let Some(t) = words.next() {
        // `esp-aes 256`, `esp-gcm 128`: a key size may follow the cipher.
        let bits = words.next_if(|w| w.parse::<u16>().is_ok());
        match t.as_str() {
            "esp-3des" => esp = Some("3des".to_owned()),
            "esp-aes" => esp = Some(format!("aes-cbc-{}", bits.as_deref().unwrap_or("128"))),
            "esp-gcm" => esp = Some(format!("aes-gcm-{}", bits.as_deref().unwrap_or("128"))),
            "esp-sha-hmac" => integrity = Some("sha1".to_owned()),
            "esp-sha256-hmac" => integrity = Some("sha256".to_owned()),
            "esp-sha384-hmac" => integrity = Some("sha384".to_owned()),
            "esp-sha512-hmac" => integrity = Some("sha512".to_owned()),
            "comp-lzs" => notes.note(
                h.line,
                Why::Dropped,
                "comp-lzs: IP compression is not supported; the set is imported without it",
            ),
            other => bad.push(other.to_owned()),
        }
    }
    let mut transport = false;
    for l in &b.body {
        match (l.lower(0).as_str(), l.lower(1).as_str()) {
            ("mode", "transport") => transport = true,
            ("mode", "tunnel") => transport = false,
            _ => notes.note(
                l.line,
                Why::Unknown,
                format!("`{}` in transform set {name}", l.text),
            ),
        }
    }
    if let Some(e) = &esp
        && !super::emit::encr_known(e)
    {
        bad.push(format!("{e} (key size)"));
    }
    if !bad.is_empty() || esp.is_none() {
        notes.note(
            h.line,
            Why::Unsupported,
            format!(
                "transform set {name}: {} not implemented by vtid (it has AES-GCM, AES-CBC, \
                 ChaCha20-Poly1305 and 3DES with HMAC-SHA1/SHA2; no DES, MD5, NULL, SEAL or AH); \
                 not imported",
                if bad.is_empty() {
                    "no ESP cipher".to_owned()
                } else {
                    bad.join(", ")
                }
            ),
        );
        return;
    }
    let esp = esp.unwrap_or_default();
    if esp.starts_with("aes-gcm") {
        integrity = None;
    }
    ios.transform_sets.insert(
        name,
        TransformSet {
            line: h.line,
            esp,
            integrity,
            transport,
        },
    );
}

fn ipsec_profile(ios: &mut Ios, b: &Block, notes: &mut Notes) {
    let name = b.head.word(3).to_owned();
    let mut p = IpsecProfile {
        line: b.head.line,
        ..IpsecProfile::default()
    };
    for l in &b.body {
        let (w0, w1) = (l.lower(0), l.lower(1));
        if w0 != "set" {
            notes.note(
                l.line,
                Why::Unknown,
                format!("`{}` in IPsec profile {name}", l.text),
            );
            continue;
        }
        if kw(&w1, "transform-set", 9) {
            p.transform_sets
                .extend(l.words[2..].iter().map(|t| (t.clone(), l.line)));
        } else if w1 == "pfs" {
            match l
                .lower(2)
                .strip_prefix("group")
                .and_then(|g| g.parse().ok())
            {
                Some(g) if super::emit::group_known(g) => p.pfs = Some(g),
                Some(g) => notes.note(
                    l.line,
                    Why::Unsupported,
                    format!("set pfs group{g}: not implemented by vtid; PFS left off"),
                ),
                None => notes.note(
                    l.line,
                    Why::Unsupported,
                    "set pfs without a group means group1 (768-bit MODP), which vtid does not \
                     implement; PFS left off",
                ),
            }
        } else if w1 == "security-association" && l.lower(2) == "lifetime" {
            match (l.lower(3).as_str(), l.word(4).parse().ok()) {
                ("seconds", Some(n)) => p.seconds = Some(n),
                ("kilobytes", Some(n)) => p.kilobytes = Some(n),
                _ => notes.note(l.line, Why::Unsupported, format!("`{}`", l.text)),
            }
        } else if w1 == "isakmp-profile" || w1 == "ikev2-profile" {
            p.ike_profile = Some((l.word(2).to_owned(), l.line));
        } else {
            notes.note(
                l.line,
                Why::Unsupported,
                format!("`{}` in IPsec profile {name}", l.text),
            );
        }
    }
    ios.ipsec_profiles.insert(name, p);
}

fn interface(ios: &mut Ios, b: &Block, notes: &mut Notes) {
    let h = &b.head;
    let mut i = Interface {
        name: canonical_ifname(h.word(1)),
        line: h.line,
        ..Interface::default()
    };
    for l in &b.body {
        let (w0, w1, w2) = (l.lower(0), l.lower(1), l.lower(2));
        match (w0.as_str(), w1.as_str(), w2.as_str()) {
            ("ip", "address", a) if !a.is_empty() && a != "dhcp" => {
                i.address = prefix(l.word(2), Some(l.word(3)));
                if i.address.is_none() {
                    notes.note(
                        l.line,
                        Why::Unknown,
                        format!("`{}`: not an address and mask", l.text),
                    );
                }
            }
            ("ip", "address", "dhcp") => notes.note(
                l.line,
                Why::Dropped,
                "ip address dhcp: addressing is the system's (vtid waits for a source \
                 interface's address)",
            ),
            ("ip", "address", _) => notes.note(
                l.line,
                Why::Unknown,
                "ip address without an address (incomplete line)",
            ),
            ("ipv6", "address", a) if a.contains('/') => i.address = a.parse().ok(),
            ("ip", "unnumbered", _) => i.unnumbered = Some(canonical_ifname(l.word(2))),
            ("ip", "mtu", m) => i.mtu = m.parse().ok(),
            ("ip", "vrf", "forwarding") => i.vrf = Some(l.word(3).to_owned()),
            ("vrf", "forwarding", _) => i.vrf = Some(l.word(2).to_owned()),
            ("tunnel", s, _) if kw(s, "source", 3) => i.source = Some(l.word(2).to_owned()),
            ("tunnel", d, _) if kw(d, "destination", 4) => match l.word(2).parse() {
                Ok(a) => i.destination = Some(a),
                Err(_) if l.word(2).is_empty() => notes.note(
                    l.line,
                    Why::Unknown,
                    "tunnel destination without an address (incomplete line)",
                ),
                Err(_) => notes.note(
                    l.line,
                    Why::Unsupported,
                    format!(
                        "tunnel destination {}: a host name; vtid needs the peer's address",
                        l.word(2)
                    ),
                ),
            },
            ("tunnel", "mode", m) => {
                let mode = match (m, l.lower(3).as_str()) {
                    ("ipsec", "ipv4" | "ipv6") => TunnelMode::Ipsec,
                    ("ipsec", "ipv") => {
                        i.mode_ambiguous = true;
                        TunnelMode::Ipsec
                    }
                    ("gre", _) => TunnelMode::Gre(l.words[2..].join(" ")),
                    _ => TunnelMode::Other(l.words[2..].join(" ")),
                };
                i.mode = Some((mode, l.line));
            }
            ("tunnel", "protection", _) => {
                // `tunnel protection ipsec profile P [shared]` (any case: the seeds write
                // `IPsec`).
                let shared = l.lower(5) == "shared";
                i.protection = Some((l.word(4).to_owned(), shared, l.line));
            }
            ("tunnel", "vrf", _) => i.fvrf = Some(l.word(2).to_owned()),
            ("tunnel", "key", k) => match k.parse() {
                Ok(k) => i.key = Some(k),
                Err(_) => notes.note(
                    l.line,
                    Why::Unknown,
                    format!("`{}`: the key must be a number 0 to 4294967295", l.text),
                ),
            },
            ("tunnel", "ttl", t) => match t.parse() {
                Ok(t) if t > 0 => i.ttl = Some(t),
                _ => notes.note(
                    l.line,
                    Why::Unknown,
                    format!("`{}`: the TTL must be 1 to 255", l.text),
                ),
            },
            ("shutdown", _, _) => i.shutdown = true,
            ("crypto", "map", _) => i.crypto_map = Some((l.word(2).to_owned(), l.line)),
            ("ipv6", "crypto", "map") => i.crypto_map_v6 = Some((l.word(3).to_owned(), l.line)),
            ("description", _, _) | ("no", "shutdown", _) => {}
            ("ip", "ospf", _)
            | ("ip", "eigrp", _)
            | ("ip", "pim", _)
            | ("ip", "nhrp", _)
            | ("ip", "split-horizon", _)
            | ("ip", "next-hop-self", _)
            | ("no", "ip", _)
            | ("bandwidth", _, _)
            | ("delay", _, _)
            | ("load-interval", _, _)
            | ("ip", "virtual-reassembly", _)
            | ("duplex", _, _)
            | ("speed", _, _)
            | ("full-duplex", _, _) => notes.note(
                l.line,
                Why::Dropped,
                format!(
                    "`{}` on {}: {}",
                    l.text,
                    i.name,
                    if matches!(w1.as_str(), "ospf" | "eigrp" | "pim" | "nhrp") {
                        "routing protocols run in FRR, not in vtid (vtid gives both tunnel \
                         ends the same MTU, so OSPF needs no mtu-ignore)"
                    } else {
                        "no Linux equivalent needed"
                    }
                ),
            ),
            _ => notes.note(
                l.line,
                Why::Unsupported,
                format!("`{}` on {}: not imported", l.text, i.name),
            ),
        }
    }
    ios.interfaces.push(i);
}

/// `access-list N permit|deny|remark ...`: one line of a numbered ACL.
fn numbered_acl(ios: &mut Ios, h: &Line) {
    let name = h.word(1).to_owned();
    let n: Option<u32> = name.parse().ok();
    let standard = n.is_some_and(|n| (1..=99).contains(&n) || (1300..=1999).contains(&n));
    let acl = ios.acls.entry(name).or_insert_with(|| Acl {
        line: h.line,
        standard,
        ..Acl::default()
    });
    acl.all.push(h.line);
    // `remark` lines are comments; anything else (`dynamic ...` included) is kept as an
    // entry, so that an ACL holding something vtid cannot translate is known to.
    if h.lower(2) != "remark" {
        acl.entries.push(AclLine {
            line: h.line,
            text: h.words[2..].join(" "),
        });
    }
}

/// `ip access-list extended|standard NAME` / `ipv6 access-list NAME` and their entries.
fn named_acl(ios: &mut Ios, b: &Block, notes: &mut Notes) {
    let h = &b.head;
    let v6 = h.lower(0) == "ipv6";
    let name = h.word(if v6 { 2 } else { 3 }).to_owned();
    let mut acl = Acl {
        line: h.line,
        v6,
        standard: !v6 && h.lower(2) == "standard",
        all: vec![h.line],
        ..Acl::default()
    };
    for l in &b.body {
        acl.all.push(l.line);
        // `10 permit ...` (IPv4) and `sequence 10 permit ...` (IPv6) number the entries.
        let mut at = 0;
        if l.lower(0) == "sequence" {
            at = 2;
        } else if l.word(0).parse::<u32>().is_ok() {
            at = 1;
        }
        match l.lower(at).as_str() {
            "remark" | "description" => {}
            _ => acl.entries.push(AclLine {
                line: l.line,
                text: l.words[at..].join(" "),
            }),
        }
    }
    if ios.acls.contains_key(&name) {
        notes.note(
            h.line,
            Why::Unknown,
            format!("access list {name} is defined twice; the last definition is used"),
        );
    }
    ios.acls.insert(name, acl);
}

/// `crypto map [ipv6] NAME SEQ [ipsec-isakmp [dynamic DYN [discover]] | ipsec-manual]`, and
/// the map-level `crypto map NAME local-address IF` / `isakmp-profile P`.
fn crypto_map(ios: &mut Ios, b: &Block, notes: &mut Notes) {
    let h = &b.head;
    let v6 = h.lower(2) == "ipv6";
    let at = if v6 { 3 } else { 2 };
    let name = h.word(at).to_owned();
    let what = h.lower(at + 1);
    if what == "local-address" && !h.word(at + 2).is_empty() {
        let set = ios.crypto_maps.entry((v6, name)).or_default();
        set.local_address = Some((canonical_ifname(h.word(at + 2)), h.line));
        body_unsupported(b, notes, "crypto map local-address has no sub-commands");
        return;
    }
    if what == "isakmp-profile" && !h.word(at + 2).is_empty() {
        let set = ios.crypto_maps.entry((v6, name)).or_default();
        set.ike_profile = Some((h.word(at + 2).to_owned(), h.line));
        body_unsupported(b, notes, "crypto map isakmp-profile has no sub-commands");
        return;
    }
    let Ok(seq) = what.parse::<u32>() else {
        let why = match what.as_str() {
            "client" | "isakmp" => "Easy VPN (mode config, Xauth) on a crypto map is not supported",
            "redundancy" => "stateful failover between routers (HSRP) is not supported",
            "" => "a crypto map without a sequence number (incomplete line)",
            _ => "not a crypto map setting vtid knows",
        };
        notes.note(h.line, Why::Unsupported, format!("`{}`: {why}", h.text));
        body_unsupported(b, notes, "its crypto map command is not imported");
        return;
    };
    let kind = match (h.lower(at + 2).as_str(), h.lower(at + 3).as_str()) {
        ("ipsec-isakmp" | "", "dynamic") if !h.word(at + 4).is_empty() => MapKind::Dynamic {
            set: h.word(at + 4).to_owned(),
            discover: h.lower(at + 5) == "discover",
        },
        ("ipsec-isakmp" | "", "") => MapKind::Isakmp,
        ("ipsec-manual", "") => MapKind::Manual,
        _ => {
            notes.note(
                h.line,
                Why::Unsupported,
                format!(
                    "`{}`: {} (vtid has ipsec-isakmp, ipsec-isakmp dynamic and ipsec-manual \
                     entries); not imported",
                    h.text,
                    if h.lower(at + 2) == "gdoi" {
                        "GET VPN (GDOI group keys) is not supported"
                    } else {
                        "not an entry type vtid knows"
                    }
                ),
            );
            body_unsupported(b, notes, "its crypto map entry is not imported");
            return;
        }
    };
    let entry = map_entry(b, seq, kind, &format!("crypto map {name} {seq}"), notes);
    let set = ios.crypto_maps.entry((v6, name)).or_default();
    if set.entries.insert(seq, entry).is_some() {
        notes.note(
            h.line,
            Why::Decided,
            format!("crypto map entry {seq} appears twice; the last one is used"),
        );
    }
}

/// `crypto dynamic-map NAME SEQ`.
fn dynamic_map(ios: &mut Ios, b: &Block, notes: &mut Notes) {
    let h = &b.head;
    let name = h.word(2).to_owned();
    let Ok(seq) = h.word(3).parse::<u32>() else {
        notes.note(
            h.line,
            Why::Unknown,
            format!("`{}`: a dynamic map entry needs a sequence number", h.text),
        );
        body_unsupported(b, notes, "its dynamic map entry is not imported");
        return;
    };
    let entry = map_entry(
        b,
        seq,
        MapKind::Isakmp,
        &format!("crypto dynamic-map {name} {seq}"),
        notes,
    );
    ios.dynamic_maps.entry(name).or_default().insert(seq, entry);
}

/// The sub-commands of a crypto map entry (static, dynamic or manual).
fn map_entry(b: &Block, seq: u32, kind: MapKind, what: &str, notes: &mut Notes) -> MapEntry {
    let mut e = MapEntry {
        line: b.head.line,
        seq,
        kind,
        match_address: None,
        peers: Vec::new(),
        transform_sets: Vec::new(),
        pfs: None,
        seconds: None,
        kilobytes: None,
        per_host: false,
        reverse_route: None,
        ike_profile: None,
        session_keys: Vec::new(),
    };
    for l in &b.body {
        let (w0, w1) = (l.lower(0), l.lower(1));
        let unsupported = |notes: &mut Notes, why: &str| {
            notes.note(
                l.line,
                Why::Unsupported,
                format!("`{}` in {what}: {why}", l.text),
            )
        };
        match (w0.as_str(), w1.as_str()) {
            ("match", "address") => {
                // IPv6 maps write `match address NAME` too; `match address ipv6 NAME` is
                // accepted on some releases.
                let n = if l.lower(2) == "ipv6" {
                    l.word(3)
                } else {
                    l.word(2)
                };
                if n.is_empty() {
                    notes.note(l.line, Why::Unknown, "match address without an ACL");
                } else {
                    e.match_address = Some((n.to_owned(), l.line));
                }
            }
            ("set", "peer") | ("set-peer", _) => {
                let at = if w0 == "set" { 2 } else { 1 };
                if w0 == "set-peer" {
                    // The seeds' `set-peer X` (a typo in the document).
                    notes.note(
                        l.line,
                        Why::Decided,
                        format!("read `{}` as `set peer {}`", l.text, l.word(1)),
                    );
                }
                match l.word(at).parse::<IpAddr>() {
                    Ok(a) => {
                        if l.lower(at + 1) == "default" {
                            // `default`: always try this peer first, as vtid does with the
                            // first one listed.
                            e.peers.insert(0, (a, l.line));
                        } else {
                            e.peers.push((a, l.line));
                        }
                    }
                    Err(_) if l.word(at).is_empty() => {
                        notes.note(l.line, Why::Unknown, "set peer without an address");
                    }
                    Err(_) => unsupported(
                        notes,
                        "a host name; vtid needs the peer's address (IOS resolves it once, at \
                         configuration time); this peer is not imported",
                    ),
                }
            }
            ("set", t) if kw(t, "transform-set", 9) => e
                .transform_sets
                .extend(l.words[2..].iter().map(|t| (t.clone(), l.line))),
            ("set", "pfs") => match l
                .lower(2)
                .strip_prefix("group")
                .and_then(|g| g.parse().ok())
            {
                Some(g) if super::emit::group_known(g) => e.pfs = Some(g),
                Some(g) => unsupported(
                    notes,
                    &format!("group{g} is not implemented by vtid; PFS left off"),
                ),
                None => unsupported(
                    notes,
                    "set pfs without a group means group1 (768-bit MODP), which vtid does not \
                     implement; PFS left off",
                ),
            },
            ("set", "security-association") => match (
                l.lower(2).as_str(),
                l.lower(3).as_str(),
                l.word(4).parse::<u64>().ok(),
            ) {
                ("lifetime", "seconds", Some(n)) => e.seconds = Some(n),
                ("lifetime", "kilobytes", Some(n)) => e.kilobytes = Some(n),
                ("level", "per-host", _) => e.per_host = true,
                _ => unsupported(notes, "not imported"),
            },
            ("set", "reverse-route") | ("reverse-route", _) => {
                let rest: Vec<String> = l
                    .words
                    .iter()
                    .skip(if w0 == "set" { 2 } else { 1 })
                    .map(|w| w.to_ascii_lowercase())
                    .collect();
                match rest
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice()
                {
                    [] => e.reverse_route = Some((e.reverse_route.map_or(0, |r| r.0), l.line)),
                    ["distance", d] if d.parse::<u32>().is_ok() => {
                        e.reverse_route = Some((d.parse().unwrap_or(0), l.line));
                    }
                    ["static"] => {
                        notes.note(
                            l.line,
                            Why::Decided,
                            "reverse-route static: vtid installs the routes while the entry's SAs \
                             are up, not permanently",
                        );
                        e.reverse_route = Some((e.reverse_route.map_or(0, |r| r.0), l.line));
                    }
                    _ => unsupported(
                        notes,
                        "only reverse-route, `static` and `distance N` are imported",
                    ),
                }
            }
            ("set", "isakmp-profile" | "ikev2-profile") if !l.word(2).is_empty() => {
                e.ike_profile = Some((l.word(2).to_owned(), l.line));
            }
            ("set", "session-key") => session_key(l, &mut e, notes),
            ("description", _) => {}
            _ => unsupported(notes, "not imported"),
        }
    }
    e
}

/// `set session-key inbound|outbound esp SPI cipher HEX [authenticator HEX]` (manual SAs).
fn session_key(l: &Line, e: &mut MapEntry, notes: &mut Notes) {
    let inbound = match l.lower(2).as_str() {
        "inbound" => true,
        "outbound" => false,
        _ => {
            notes.note(
                l.line,
                Why::Unknown,
                format!("`{}`: inbound or outbound?", l.text),
            );
            return;
        }
    };
    if l.lower(3) == "ah" {
        notes.note(
            l.line,
            Why::Unsupported,
            "AH session keys: vtid has no AH (it authenticates with ESP); not imported",
        );
        return;
    }
    let spi = l.word(4).parse::<u32>().ok();
    let hex = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_hexdigit());
    let mut cipher = None;
    let mut auth = None;
    let mut i = 5;
    while i < l.words.len() {
        match l.lower(i).as_str() {
            "cipher" if hex(l.word(i + 1)) => {
                cipher = Some(zeroize::Zeroizing::new(l.word(i + 1).to_owned()))
            }
            "authenticator" if hex(l.word(i + 1)) => {
                auth = Some(zeroize::Zeroizing::new(l.word(i + 1).to_owned()))
            }
            _ => {
                cipher = None;
                break;
            }
        }
        i += 2;
    }
    match (l.lower(3).as_str(), spi, cipher) {
        ("esp", Some(spi), Some(cipher)) => e.session_keys.push(SessionKey {
            line: l.line,
            inbound,
            spi,
            cipher,
            auth,
        }),
        _ => notes.note(
            l.line,
            Why::Unknown,
            format!(
                "`{}`: expected `set session-key inbound|outbound esp SPI cipher HEX \
                 [authenticator HEX]`; not imported",
                l.text
            ),
        ),
    }
}

fn route(ios: &mut Ios, h: &Line, notes: &mut Notes) {
    let v6 = h.lower(0) == "ipv6";
    let mut at = 2;
    if h.lower(2) == "vrf" {
        notes.note(
            h.line,
            Why::Decided,
            format!(
                "route in VRF {}: vtid routes through a tunnel in that tunnel's VRF",
                h.word(3)
            ),
        );
        at = 4;
    }
    let (net, next) = if v6 {
        (prefix(h.word(at), None), at + 1)
    } else {
        (prefix(h.word(at), Some(h.word(at + 1))), at + 2)
    };
    let Some(prefix) = net else {
        notes.note(
            h.line,
            Why::Unknown,
            format!("`{}`: incomplete route", h.text),
        );
        return;
    };
    let hop = h.word(next);
    let interface =
        (!hop.is_empty() && hop.parse::<IpAddr>().is_err()).then(|| canonical_ifname(hop));
    // After the interface or next hop: an optional next hop, then the distance, `name X`,
    // `tag T`, `permanent`.
    let mut distance = None;
    let mut rest = h.words.iter().skip(next + 1);
    while let Some(w) = rest.next() {
        if w.eq_ignore_ascii_case("tag") || w.eq_ignore_ascii_case("name") {
            rest.next();
        } else if let Ok(d) = w.parse::<u32>() {
            distance = Some(d);
            break;
        }
    }
    ios.routes.push(Route {
        line: h.line,
        prefix: prefix.trunc(),
        interface,
        distance,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_expanded_as_ios_does() {
        assert_eq!(canonical_ifname("Gi0/1"), "GigabitEthernet0/1");
        assert_eq!(canonical_ifname("fa0/0"), "FastEthernet0/0");
        assert_eq!(canonical_ifname("tunnel0"), "Tunnel0");
        assert_eq!(canonical_ifname("Virtual-Templat1"), "Virtual-Template1");
        assert_eq!(canonical_ifname("Ethernet3/0"), "Ethernet3/0");
        assert_eq!(canonical_ifname("Loopback0"), "Loopback0");
        // Ambiguous (`Virtual-` is two types) or unknown types stay as written.
        assert_eq!(canonical_ifname("Virtual-1"), "Virtual-1");
        assert_eq!(canonical_ifname("wan0"), "wan0");
    }

    #[test]
    fn masks_and_prefixes() {
        assert_eq!(
            prefix("10.0.0.0", Some("255.0.0.0")),
            "10.0.0.0/8".parse().ok()
        );
        assert_eq!(prefix("0.0.0.0", Some("0.0.0.0")), "0.0.0.0/0".parse().ok());
        assert_eq!(prefix("10.0.0.1", None), "10.0.0.1/32".parse().ok());
        assert_eq!(prefix("10.0.0.0", Some("255.0.255.0")), None);
    }
}
