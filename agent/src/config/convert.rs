//! Raw TOML to [`Config`]: parses every section, checks every value and reference, and
//! collects all errors instead of stopping at the first.
//!
//! Each `[section.NAME]` entry is deserialized on its own, so a serde error (unknown key,
//! wrong type, missing key) in one entry does not hide mistakes in the others. Names are
//! gathered from the raw document before anything is converted, so a reference to an entry
//! that exists but has its own errors is not reported a second time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ike::transform::{DhGroup, Encr, Integ, Prf};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::algo::{self, ENCR, INTEG, PRF};
use super::certs::{self, TrustpointKey};
use super::error::{Sink, suggestion};
use super::raw::{self, GroupValue, SStr, StrOrList};
use super::secret;
use super::{
    AuthMethod, Config, ConfigErrors, Credentials, Dpd, DpdAction, Global, Identity, IdentityMatch,
    IfId, IkeProfile, IkeProposalSpec, InnerAddress, IpsecProfile, Keyring, KeyringPeer,
    LoadOptions, LocalIdentity, LocalTermination, LogLevel, Offload, PeerMatch, ProfileCredentials,
    Route, SaLifetime, SaMode, TemplateRoutes, TransformSet, Trustpoint, Tunnel, TunnelMode,
    TunnelSource, Vici, VirtualTemplate, Vrf, VrfRef,
};

/// Default IKE SA lifetime: 24 hours, the Cisco IKEv2 profile default.
pub(crate) const DEFAULT_IKE_LIFETIME: u32 = 86_400;

/// Section names as the file spells them (`Cx::config` converts referenced objects before
/// their referrers).
const SECTIONS: &[&str] = &[
    "global",
    "vici",
    "vrf",
    "ike_proposal",
    "transform_set",
    "ipsec_profile",
    "keyring",
    "trustpoint",
    "isakmp_policy",
    "ike_profile",
    "tunnel",
    "virtual_template",
    "access_list",
    "dynamic_map",
    "crypto_map",
];

/// Keys of `[global]`, to point a misplaced top-level `allow_legacy = true` at `[global]`.
const GLOBAL_KEYS: &[&str] = &[
    "allow_legacy",
    "control_socket",
    "log_level",
    "metrics",
    "ike_port",
    "nat_t_port",
    "interface_prefix",
    "nat_keepalive",
    "cookie_threshold",
    "cookie_threshold_per_source",
    "half_open_limit",
    "half_open_limit_per_source",
    "half_open_timeout",
    "ike_sa_limit",
    "cookie_secret_lifetime",
];

const LOG_LEVELS: &[(&str, LogLevel)] = &[
    ("error", LogLevel::Error),
    ("warn", LogLevel::Warn),
    ("info", LogLevel::Info),
    ("debug", LogLevel::Debug),
    ("trace", LogLevel::Trace),
];
const SA_MODES: &[(&str, SaMode)] = &[("tunnel", SaMode::Tunnel), ("transport", SaMode::Transport)];
const OFFLOADS: &[(&str, Offload)] = &[
    ("off", Offload::Off),
    ("crypto", Offload::Crypto),
    ("packet", Offload::Packet),
    ("auto", Offload::Auto),
];
const DPD_ACTIONS: &[(&str, DpdAction)] = &[
    ("restart", DpdAction::Restart),
    ("clear", DpdAction::Clear),
    ("hold", DpdAction::Hold),
];
const AUTH_METHODS: &[(&str, AuthMethod)] = &[
    ("psk", AuthMethod::Psk),
    ("rsa-sig", AuthMethod::RsaSig),
    ("ecdsa-sig", AuthMethod::EcdsaSig),
];
const TUNNEL_MODES: &[(&str, TunnelMode)] = &[
    ("xfrmi", TunnelMode::Xfrmi),
    ("vti", TunnelMode::Vti),
    ("gre", TunnelMode::Gre),
    ("mgre", TunnelMode::Mgre),
];

/// Cisco's range for `set security-association lifetime seconds` starts at 120; we allow 30
/// so that labs and rekey tests can watch several rekeys in minutes. Below that the rekey
/// margin (10%, at least 5 s) plus a round trip on a slow path would leave too little time
/// to install the new SA before the old one's hard expiry.
const SA_SECONDS: (i64, i64) = (30, 86_400);
/// Cisco's range for `lifetime kilobytes`.
const SA_KILOBYTES: (i64, i64) = (2_560, 4_294_967_295);
/// Cisco's range for the IKEv2 profile `lifetime` starts at 120; we allow 60 for the same
/// reason as [`SA_SECONDS`] (interop tests watch vtid rekey its IKE SA within a minute).
const IKE_SECONDS: (i64, i64) = (60, 86_400);
/// IOS's `crypto isakmp policy` priorities.
const ISAKMP_PRIORITY: (i64, i64) = (1, 10_000);
/// `crypto isakmp policy` `lifetime`: IOS allows 60 to 86400 seconds, default 86400.
const ISAKMP_SECONDS: (i64, i64) = (60, 86_400);
/// `crypto isakmp policy` `encryption`, as IOS spells it (`encryption aes 256`).
const ISAKMP_ENCR: &[(&str, Encr)] = &[
    ("aes", Encr::AesCbc { key_bits: 128 }),
    ("aes 128", Encr::AesCbc { key_bits: 128 }),
    ("aes 192", Encr::AesCbc { key_bits: 192 }),
    ("aes 256", Encr::AesCbc { key_bits: 256 }),
    ("3des", Encr::TripleDes),
];
/// `crypto isakmp policy` `hash`.
const ISAKMP_HASH: &[(&str, ike::v1::keys::HashAlg)] = &[
    ("sha", ike::v1::keys::HashAlg::Sha1),
    ("sha256", ike::v1::keys::HashAlg::Sha256),
    ("sha384", ike::v1::keys::HashAlg::Sha384),
    ("sha512", ike::v1::keys::HashAlg::Sha512),
    ("md5", ike::v1::keys::HashAlg::Md5),
];
/// `crypto isakmp policy` `authentication`: pre-shared keys or RSA signatures (with the
/// IKE profile's trustpoint).
const ISAKMP_AUTH: &[(&str, ike::v1::AuthMethod)] = &[
    ("pre-share", ike::v1::AuthMethod::PreShared),
    ("rsa-sig", ike::v1::AuthMethod::RsaSig),
];

/// Cisco allows at most six transform sets per profile.
const MAX_TRANSFORM_SETS: usize = 6;

/// One `[section.NAME]` entry: its name, the span of the name, and the raw value.
struct Named<T> {
    name: String,
    span: Range<usize>,
    raw: T,
}

#[path = "cryptomap.rs"]
mod cryptomap;
pub(crate) use cryptomap::warnings as crypto_map_warnings;
#[path = "gre_convert.rs"]
mod gre_convert;
#[path = "multipoint.rs"]
mod multipoint;

/// The document split into sections, each entry deserialized on its own.
#[derive(Default)]
struct RawDoc {
    global: Option<raw::Global>,
    vici: Option<raw::Vici>,
    vrf: Vec<Named<raw::Vrf>>,
    ike_proposal: Vec<Named<raw::IkeProposal>>,
    transform_set: Vec<Named<raw::TransformSet>>,
    ipsec_profile: Vec<Named<raw::IpsecProfile>>,
    keyring: Vec<Named<raw::Keyring>>,
    trustpoint: Vec<Named<raw::Trustpoint>>,
    isakmp_policy: Vec<Named<raw::IsakmpPolicy>>,
    ike_profile: Vec<Named<raw::IkeProfile>>,
    tunnel: Vec<Named<raw::Tunnel>>,
    virtual_template: Vec<Named<raw::VirtualTemplate>>,
    access_list: Vec<Named<raw::AccessList>>,
    crypto_map: Vec<Named<raw::CryptoMap>>,
    dynamic_map: Vec<Named<raw::DynamicMap>>,
    /// Every entry name per section, including entries that failed to deserialize.
    names: HashMap<&'static str, BTreeSet<String>>,
}

/// Conversion context: where errors go and what the whole file declares.
struct Cx<'a> {
    sink: Sink<'a>,
    names: HashMap<&'static str, BTreeSet<String>>,
    allow_legacy: bool,
    opts: &'a LoadOptions,
}

pub(crate) fn convert(file: &Path, src: &str, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    let mut sink = Sink::new(file, src);
    let (doc, syntax) = DeTable::parse_recoverable(src);
    for e in &syntax {
        sink.at(
            e.span().unwrap_or(0..0),
            format!("invalid TOML: {}", one_line(e.message())),
        );
    }
    if !syntax.is_empty() {
        // A partly parsed document would only add confusing follow-on errors.
        return Err(sink.finish().expect("syntax errors were recorded"));
    }
    let mut rd = RawDoc::default();
    split(&mut sink, doc, &mut rd);
    let names = std::mem::take(&mut rd.names);
    let mut cx = Cx {
        sink,
        names,
        allow_legacy: false,
        opts,
    };
    let config = cx.config(rd);
    match cx.sink.finish() {
        Some(errors) => Err(errors),
        None => Ok(config),
    }
}

/// Splits the top-level table into sections and deserializes each entry.
fn split(sink: &mut Sink<'_>, doc: Spanned<DeTable<'_>>, rd: &mut RawDoc) {
    for (key, value) in doc.into_inner() {
        let key_span = key.span();
        let key = key.into_inner();
        let Some(&section) = SECTIONS.iter().find(|s| **s == key) else {
            if GLOBAL_KEYS.contains(&&*key) {
                sink.at(
                    key_span,
                    format!("\"{key}\" belongs in the [global] section"),
                );
            } else {
                sink.at(
                    key_span,
                    format!(
                        "unknown section \"{key}\"{}; expected one of {}",
                        suggestion(&key, SECTIONS.iter().copied()),
                        SECTIONS.join(", ")
                    ),
                );
            }
            continue;
        };
        if section == "global" {
            rd.global = deserialize(sink, value, key_span, "global");
            continue;
        }
        if section == "vici" {
            rd.vici = deserialize(sink, value, key_span, "vici");
            continue;
        }
        let value_span = value.span();
        let DeValue::Table(entries) = value.into_inner() else {
            sink.at(
                value_span,
                format!("\"{section}\" must be a table of named entries, e.g. [{section}.NAME]"),
            );
            continue;
        };
        for (name, v) in entries {
            let span = name.span();
            let name = name.into_inner().into_owned();
            rd.names.entry(section).or_default().insert(name.clone());
            let path = format!("{section}.{name}");
            macro_rules! push {
                ($field:ident) => {
                    if let Some(raw) = deserialize(sink, v, span.clone(), &path) {
                        rd.$field.push(Named { name, span, raw });
                    }
                };
            }
            match section {
                "vrf" => push!(vrf),
                "ike_proposal" => push!(ike_proposal),
                "transform_set" => push!(transform_set),
                "ipsec_profile" => push!(ipsec_profile),
                "keyring" => push!(keyring),
                "trustpoint" => push!(trustpoint),
                "isakmp_policy" => push!(isakmp_policy),
                "ike_profile" => push!(ike_profile),
                "tunnel" => push!(tunnel),
                "virtual_template" => push!(virtual_template),
                "access_list" => push!(access_list),
                "crypto_map" => push!(crypto_map),
                "dynamic_map" => push!(dynamic_map),
                _ => unreachable!("SECTIONS lists exactly the sections matched here"),
            }
        }
    }
}

/// Deserializes one entry, reporting serde's error at its span in our words. A missing key
/// of the entry itself is reported at the entry's name (`[tunnel.NAME]`), not at the start of
/// its header.
fn deserialize<T: DeserializeOwned>(
    sink: &mut Sink<'_>,
    value: Spanned<DeValue<'_>>,
    name_span: Range<usize>,
    path: &str,
) -> Option<T> {
    let whole = value.span();
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            let span = match e.span() {
                Some(s) if !(s == whole && e.message().starts_with("missing field")) => s,
                _ => name_span,
            };
            sink.at(span, format!("{path}: {}", serde_message(e.message())));
            None
        }
    }
}

/// Rewrites serde's messages for people: keys are "keys", unknown ones get a suggestion.
fn serde_message(msg: &str) -> String {
    let backticked =
        |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let words = backticked(msg);
        let (unknown, expected) = words.split_first().map_or(("", &[][..]), |(u, e)| (u, e));
        let _ = rest;
        let hint = suggestion(unknown, expected.iter().map(String::as_str));
        if expected.is_empty() {
            return format!("unknown key \"{unknown}\"; this table takes no keys");
        }
        return format!(
            "unknown key \"{unknown}\"{hint}; expected one of {}",
            expected.join(", ")
        );
    }
    if msg.starts_with("missing field `") {
        let words = backticked(msg);
        if let Some(k) = words.first() {
            return format!("missing key \"{k}\"");
        }
    }
    one_line(msg)
}

fn one_line(msg: &str) -> String {
    msg.trim().lines().next().unwrap_or_default().to_owned()
}

impl Cx<'_> {
    fn config(&mut self, rd: RawDoc) -> Config {
        let global = self.global(rd.global);
        self.allow_legacy = global.allow_legacy;
        let vici = rd.vici.as_ref().and_then(|v| self.vici(v));
        let mut c = Config {
            global,
            vici,
            vrfs: BTreeMap::new(),
            ike_proposals: BTreeMap::new(),
            transform_sets: BTreeMap::new(),
            ipsec_profiles: BTreeMap::new(),
            keyrings: BTreeMap::new(),
            trustpoints: BTreeMap::new(),
            ike_profiles: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            virtual_templates: BTreeMap::new(),
            mgre_tunnels: BTreeMap::new(),
            access_lists: BTreeMap::new(),
            crypto_maps: BTreeMap::new(),
            dynamic_maps: BTreeMap::new(),
            isakmp_policies: Vec::new(),
            files_read: self.opts.read_files,
        };
        let mut tables: HashMap<u32, String> = HashMap::new();
        for n in rd.vrf {
            if let Some(v) = self.vrf(&n, &mut tables) {
                c.vrfs.insert(n.name, v);
            }
        }
        for n in rd.ike_proposal {
            if let Some(v) = self.ike_proposal(&n) {
                c.ike_proposals.insert(n.name, v);
            }
        }
        let mut transport_sets: BTreeSet<String> = BTreeSet::new();
        for n in rd.transform_set {
            if let Some(v) = self.transform_set(&n) {
                if v.mode == SaMode::Transport {
                    transport_sets.insert(n.name.clone());
                }
                c.transform_sets.insert(n.name, v);
            }
        }
        for n in rd.ipsec_profile {
            if let Some(v) = self.ipsec_profile(&n, &c.transform_sets) {
                c.ipsec_profiles.insert(n.name, v);
            }
        }
        for n in rd.keyring {
            if let Some(v) = self.keyring(&n) {
                c.keyrings.insert(n.name, v);
            }
        }
        for n in rd.trustpoint {
            if let Some(v) = self.trustpoint(&n) {
                c.trustpoints.insert(n.name, v);
            }
        }
        // Templates before the IKE profiles that clone them, so a profile holds its template.
        for n in rd.virtual_template {
            if let Some(v) = self.virtual_template(&n, &c, &transport_sets) {
                c.virtual_templates.insert(n.name, v);
            }
        }
        for n in rd.isakmp_policy {
            if let Some(v) = self.isakmp_policy(&n) {
                c.isakmp_policies.push(v);
            }
        }
        c.isakmp_policies.sort_by_key(|p| p.priority);
        let mut dvti_profiles = BTreeSet::new();
        for n in rd.ike_profile {
            if let Some(v) = self.ike_profile(&n, &c) {
                if v.virtual_template.is_some() {
                    dvti_profiles.insert(n.name.clone());
                }
                c.ike_profiles.insert(n.name, v);
            }
        }
        // Every keyring converted, so "no keyring entry" is not a follow-on error.
        let all_keyrings_ok = c.keyrings.len() == self.count("keyring");
        let vtis = VtiChecks {
            transport_sets,
            dvti_profiles,
            all_keyrings_ok,
        };
        self.tunnels(rd.tunnel, &mut c, &vtis);
        for n in rd.access_list {
            if let Some(v) = self.access_list(&n) {
                c.access_lists.insert(n.name, v);
            }
        }
        for n in rd.dynamic_map {
            if let Some(v) = self.dynamic_map(&n, &c, &vtis.transport_sets) {
                c.dynamic_maps.insert(n.name, v);
            }
        }
        for n in rd.crypto_map {
            if let Some(v) = self.crypto_map(&n, &c, &vtis.transport_sets) {
                c.crypto_maps.insert(n.name, v);
            }
        }
        c
    }

    fn count(&self, section: &str) -> usize {
        self.names.get(section).map_or(0, BTreeSet::len)
    }

    // ---- leaf helpers -------------------------------------------------------------------

    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.sink.at(span, msg);
    }

    fn int(&mut self, v: &Spanned<i64>, path: &str, (lo, hi): (i64, i64)) -> Option<i64> {
        let n = *v.get_ref();
        if (lo..=hi).contains(&n) {
            Some(n)
        } else {
            self.err(
                v.span(),
                format!("{path}: {n} is out of range; expected {lo} to {hi}"),
            );
            None
        }
    }

    fn u32_in(&mut self, v: &Spanned<i64>, path: &str, range: (i64, i64)) -> Option<u32> {
        self.int(v, path, range).and_then(|n| u32::try_from(n).ok())
    }

    fn choice<T: Copy>(
        &mut self,
        v: &SStr,
        path: &str,
        table: &[(&str, T)],
        what: &str,
    ) -> Option<T> {
        let s = v.get_ref();
        if let Some(x) = algo::lookup(table, s) {
            return Some(x);
        }
        let hint = suggestion(s, table.iter().map(|(n, _)| *n));
        self.err(
            v.span(),
            format!(
                "{path}: unknown {what} \"{s}\"{hint}; expected one of {}",
                algo::names(table)
            ),
        );
        None
    }

    /// Checks that `v` names an entry of `section`; returns the name.
    fn reference(&mut self, v: &SStr, path: &str, section: &str) -> Option<String> {
        self.reference_or(v, path, section, &[])
    }

    /// Like [`Self::reference`], also accepting the built-in names in `builtin`.
    fn reference_or(
        &mut self,
        v: &SStr,
        path: &str,
        section: &str,
        builtin: &[&str],
    ) -> Option<String> {
        let name = v.get_ref();
        let empty = BTreeSet::new();
        let known = self.names.get(section).unwrap_or(&empty);
        if known.contains(name) || builtin.contains(&name.as_str()) {
            return Some(name.clone());
        }
        let hint = suggestion(
            name,
            known
                .iter()
                .map(String::as_str)
                .chain(builtin.iter().copied()),
        );
        let msg = format!("{path} = \"{name}\": no {section} named \"{name}\"{hint}");
        self.err(v.span(), msg);
        None
    }

    fn ip(&mut self, v: &SStr, path: &str) -> Option<IpAddr> {
        match v.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                let msg = format!("{path}: \"{}\" is not an IP address", v.get_ref());
                self.err(v.span(), msg);
                None
            }
        }
    }

    /// An interface address with prefix length (host bits allowed).
    fn address_cidr(&mut self, v: &SStr, path: &str) -> Option<IpNet> {
        match v.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                let msg = format!(
                    "{path}: \"{}\" is not an address with prefix length (expected e.g. \
                     \"10.0.51.203/24\")",
                    v.get_ref()
                );
                self.err(v.span(), msg);
                None
            }
        }
    }

    /// A network prefix: host bits must be zero, so a typo cannot route more than meant.
    fn prefix(&mut self, v: &SStr, path: &str) -> Option<IpNet> {
        let s = v.get_ref();
        let net: IpNet = match s.parse() {
            Ok(n) => n,
            Err(_) => {
                let msg = format!(
                    "{path}: \"{s}\" is not a prefix in CIDR notation (expected e.g. \"10.0.36.0/24\")"
                );
                self.err(v.span(), msg);
                return None;
            }
        };
        if net.trunc() != net {
            let msg = format!(
                "{path}: \"{s}\" has host bits set (did you mean \"{}\"?)",
                net.trunc()
            );
            self.err(v.span(), msg);
            return None;
        }
        Some(net)
    }

    /// An address or a prefix (`10.0.0.1` means `10.0.0.1/32`).
    fn address_or_prefix(&mut self, v: &SStr, path: &str) -> Option<IpNet> {
        if let Ok(a) = v.get_ref().parse::<IpAddr>() {
            return Some(IpNet::from(a));
        }
        self.prefix(v, path)
    }

    fn ifname(&mut self, name: &str, span: Range<usize>, path: &str) -> Option<String> {
        match check_ifname(name) {
            Ok(()) => Some(name.to_owned()),
            Err(why) => {
                self.err(
                    span,
                    format!("{path}: \"{name}\" is not a valid interface name: {why}"),
                );
                None
            }
        }
    }

    fn legacy_ok(&mut self, legacy: bool, v: &SStr, path: &str) -> bool {
        if legacy && !self.allow_legacy {
            let msg = format!(
                "{path}: \"{}\" is a legacy algorithm; set allow_legacy = true in [global] to \
                 use it",
                v.get_ref()
            );
            self.err(v.span(), msg);
            return false;
        }
        true
    }

    fn encr(&mut self, v: &SStr, path: &str) -> Option<Encr> {
        let e = self.choice(v, path, ENCR, "cipher")?;
        self.legacy_ok(e.is_legacy(), v, path).then_some(e)
    }

    fn integ(&mut self, v: &SStr, path: &str) -> Option<Integ> {
        let i = self.choice(v, path, INTEG, "integrity algorithm")?;
        self.legacy_ok(algo::integ_is_legacy(i), v, path)
            .then_some(i)
    }

    fn prf(&mut self, v: &SStr, path: &str) -> Option<Prf> {
        let p = self.choice(v, path, PRF, "PRF")?;
        self.legacy_ok(algo::prf_is_legacy(p), v, path).then_some(p)
    }

    /// A DH group; `Ok(None)` for `false` when `allow_false`.
    fn group(
        &mut self,
        v: &Spanned<GroupValue>,
        path: &str,
        allow_false: bool,
    ) -> Option<Option<DhGroup>> {
        let (text, g) = match v.get_ref() {
            GroupValue::Bool(false) if allow_false => return Some(None),
            GroupValue::Bool(b) => {
                let msg = if allow_false {
                    format!(
                        "{path}: {b} is not a group; expected a group such as 19 or \"group14\", or false"
                    )
                } else {
                    format!(
                        "{path}: {b} is not a group; expected a group such as 19 or \"group14\""
                    )
                };
                self.err(v.span(), msg);
                return None;
            }
            GroupValue::Num(n) => (
                n.to_string(),
                u16::try_from(*n).ok().and_then(DhGroup::from_id),
            ),
            GroupValue::Name(s) => (s.clone(), algo::group_by_name(s)),
        };
        let Some(g) = g else {
            let spellings = algo::group_spellings();
            let hint = match v.get_ref() {
                GroupValue::Name(s) => suggestion(s, spellings.iter().map(String::as_str)),
                _ => String::new(),
            };
            let nums: Vec<String> = algo::GROUP_NUMBERS.iter().map(u16::to_string).collect();
            self.err(
                v.span(),
                format!(
                    "{path}: unknown DH group {text}{hint}; expected one of {} (or \"groupN\")",
                    nums.join(", ")
                ),
            );
            return None;
        };
        if g.is_legacy() && !self.allow_legacy {
            self.err(
                v.span(),
                format!(
                    "{path}: group {} is a legacy algorithm; set allow_legacy = true in [global] \
                     to use it",
                    g.id()
                ),
            );
            return None;
        }
        Some(Some(g))
    }

    fn path_buf(&mut self, v: &SStr, path: &str) -> Option<PathBuf> {
        let p = PathBuf::from(v.get_ref());
        if !p.is_absolute() {
            self.err(
                v.span(),
                format!("{path}: \"{}\" must be an absolute path", v.get_ref()),
            );
            return None;
        }
        Some(p)
    }

    /// `[global]`'s front-door limits ([`ike::Limits`]). The counts allow 0 where 0 means
    /// something (cookies always; no IKE SA limit), not where it would refuse every peer.
    fn limits(&mut self, raw: &raw::Global, l: &mut ike::Limits) {
        self.global_count(
            &raw.cookie_threshold,
            "cookie_threshold",
            0,
            &mut l.cookie_threshold,
        );
        self.global_count(
            &raw.cookie_threshold_per_source,
            "cookie_threshold_per_source",
            0,
            &mut l.cookie_threshold_per_source,
        );
        self.global_count(
            &raw.half_open_limit,
            "half_open_limit",
            1,
            &mut l.half_open_limit,
        );
        self.global_count(
            &raw.half_open_limit_per_source,
            "half_open_limit_per_source",
            1,
            &mut l.half_open_limit_per_source,
        );
        self.global_count(&raw.ike_sa_limit, "ike_sa_limit", 0, &mut l.ike_sa_limit);
        self.global_seconds(
            &raw.half_open_timeout,
            "half_open_timeout",
            (1, 3600),
            &mut l.half_open_timeout,
        );
        // At least the 10 s for which a rotated secret's cookies stay valid.
        self.global_seconds(
            &raw.cookie_secret_lifetime,
            "cookie_secret_lifetime",
            (10, 86_400),
            &mut l.cookie_secret_lifetime,
        );
    }

    /// A `[global]` count from `lo` to ten million into `field`, if given and in range.
    fn global_count(&mut self, v: &Option<Spanned<i64>>, key: &str, lo: i64, field: &mut usize) {
        if let Some(v) = v
            && let Some(n) = self.int(v, &format!("global.{key}"), (lo, 10_000_000))
        {
            *field = n as usize;
        }
    }

    /// `[global]` seconds in `range` into `field`, if given and in range.
    fn global_seconds(
        &mut self,
        v: &Option<Spanned<i64>>,
        key: &str,
        range: (i64, i64),
        field: &mut std::time::Duration,
    ) {
        if let Some(v) = v
            && let Some(n) = self.int(v, &format!("global.{key}"), range)
        {
            *field = std::time::Duration::from_secs(n as u64);
        }
    }

    // ---- sections -----------------------------------------------------------------------

    fn vici(&mut self, raw: &raw::Vici) -> Option<Vici> {
        let socket = self.path_buf(&raw.socket, "vici.socket")?;
        let group = raw.group.as_ref().map(|g| g.get_ref().clone());
        if let Some(g) = &raw.group
            && g.get_ref().is_empty()
        {
            self.err(g.span(), "vici.group: empty group name");
            return None;
        }
        Some(Vici { socket, group })
    }

    fn global(&mut self, raw: Option<raw::Global>) -> Global {
        let mut g = Global::default();
        let Some(raw) = raw else { return g };
        if let Some(b) = &raw.allow_legacy {
            g.allow_legacy = *b.get_ref();
        }
        if let Some(p) = &raw.control_socket
            && let Some(p) = self.path_buf(p, "global.control_socket")
        {
            g.control_socket = p;
        }
        if let Some(l) = &raw.log_level
            && let Some(l) = self.choice(l, "global.log_level", LOG_LEVELS, "log level")
        {
            g.log_level = l;
        }
        if let Some(m) = &raw.metrics {
            match m.get_ref().parse::<SocketAddr>() {
                Ok(a) => g.metrics = Some(a),
                Err(_) => self.err(
                    m.span(),
                    format!(
                        "global.metrics: \"{}\" is not ADDRESS:PORT (e.g. \"127.0.0.1:9477\" or \
                         \"[::1]:9477\")",
                        m.get_ref()
                    ),
                ),
            }
        }
        let port_range = (1, 65_535);
        if let Some(p) = &raw.ike_port
            && let Some(p) = self.int(p, "global.ike_port", port_range)
        {
            g.ike_port = p as u16;
        }
        if let Some(p) = &raw.nat_t_port
            && let Some(n) = self.int(p, "global.nat_t_port", port_range)
        {
            g.nat_t_port = n as u16;
            if g.nat_t_port == g.ike_port {
                self.err(
                    p.span(),
                    format!("global.nat_t_port: {n} is also the ike_port; they must differ"),
                );
            }
        }
        if let Some(k) = &raw.nat_keepalive
            && let Some(secs) = self.int(k, "global.nat_keepalive", (1, 3600))
        {
            g.nat_keepalive = std::time::Duration::from_secs(secs as u64);
        }
        self.limits(&raw, &mut g.limits);
        if let Some(p) = &raw.interface_prefix {
            let s = p.get_ref();
            // Leave room for a 6-digit clone number inside the 15-byte IFNAMSIZ limit.
            if s.is_empty() || s.len() > 9 || check_ifname(s).is_err() {
                self.err(
                    p.span(),
                    format!(
                        "global.interface_prefix: \"{s}\" must be 1 to 9 characters valid in an \
                         interface name"
                    ),
                );
            } else {
                g.interface_prefix = s.clone();
            }
        }
        g
    }

    fn vrf(&mut self, n: &Named<raw::Vrf>, tables: &mut HashMap<u32, String>) -> Option<Vrf> {
        let path = format!("vrf.{}", n.name);
        let name = self.ifname(&n.name, n.span.clone(), &path);
        let t = &n.raw.table;
        let table = self.u32_in(t, &format!("{path}.table"), (1, u32::MAX as i64))?;
        // 253 default, 254 main, 255 local (include/uapi/linux/rtnetlink.h RT_TABLE_*).
        if matches!(table, 253..=255) {
            self.err(
                t.span(),
                format!("{path}.table: table {table} is reserved by Linux (default/main/local)"),
            );
            return None;
        }
        if let Some(other) = tables.get(&table) {
            let msg = format!("{path}.table: table {table} is already used by vrf.{other}");
            self.err(t.span(), msg);
            return None;
        }
        tables.insert(table, n.name.clone());
        name.map(|_| Vrf { table })
    }

    fn ike_proposal(&mut self, n: &Named<raw::IkeProposal>) -> Option<IkeProposalSpec> {
        let path = format!("ike_proposal.{}", n.name);
        let r = &n.raw;
        let mut ok = true;
        let encryption = each(&r.encryption, &mut ok, |v| {
            self.encr(v, &format!("{path}.encryption"))
        });
        let integrity = each(&r.integrity, &mut ok, |v| {
            self.integ(v, &format!("{path}.integrity"))
        });
        let mut prf = each(&r.prf, &mut ok, |v| self.prf(v, &format!("{path}.prf")));
        let groups = each(&r.group, &mut ok, |v| {
            self.group(v, &format!("{path}.group"), false).flatten()
        });
        if r.encryption.is_empty() {
            self.err(
                n.span.clone(),
                format!("{path}: encryption must list at least one cipher"),
            );
            ok = false;
        }
        if r.group.is_empty() {
            self.err(
                n.span.clone(),
                format!("{path}: group must list at least one DH group"),
            );
            ok = false;
        }
        let additional_key_exchanges = self.additional_key_exchanges(
            &r.additional_key_exchanges,
            &path,
            "additional_key_exchanges",
            &mut ok,
        );
        if !ok {
            return None;
        }
        let aead = encryption.iter().filter(|e| e.is_aead()).count();
        // RFC 7296 §3.3: a proposal with AEAD ciphers carries no INTEG transform, and mixing
        // AEAD and non-AEAD in one proposal cannot be expressed.
        if aead != 0 && aead != encryption.len() {
            self.err(
                r.encryption[0].span(),
                format!(
                    "{path}.encryption: AEAD ciphers (aes-gcm-*, chacha20-poly1305) cannot be \
                     mixed with others in one proposal; use two proposals"
                ),
            );
            return None;
        }
        if aead != 0 && !integrity.is_empty() {
            self.err(
                r.integrity[0].span(),
                format!("{path}.integrity: AEAD ciphers have built-in integrity; remove integrity"),
            );
            return None;
        }
        if aead == 0 && integrity.is_empty() {
            self.err(
                n.span.clone(),
                format!("{path}: non-AEAD ciphers need integrity (e.g. integrity = [\"sha256\"])"),
            );
            return None;
        }
        if prf.is_empty() {
            prf = if integrity.is_empty() {
                vec![Prf::HmacSha256]
            } else {
                integrity.iter().map(|i| algo::prf_for_integ(*i)).collect()
            };
        }
        Some(IkeProposalSpec {
            encryption,
            integrity,
            prf,
            groups,
            additional_key_exchanges,
        })
    }

    /// `additional_key_exchanges`: entry i is ADDKE(i+1) (RFC 9370 §2.2.1 allows seven), each
    /// `|`-separated alternatives, `none` making that round optional.
    fn additional_key_exchanges(
        &mut self,
        list: &[SStr],
        path: &str,
        field: &str,
        ok: &mut bool,
    ) -> Vec<Vec<Option<ike::transform::KeMethod>>> {
        let mut out = Vec::new();
        for (i, v) in list.iter().enumerate() {
            let at = format!("{path}.{field}[{i}]");
            if i >= ike::transform::ADDKE_SLOTS {
                self.err(
                    v.span(),
                    format!("{at}: at most 7 additional key exchanges (ADDKE1..ADDKE7, RFC 9370)"),
                );
                *ok = false;
                break;
            }
            let mut round = Vec::new();
            for alt in v.get_ref().split('|') {
                match algo::addke_by_name(alt, i + 1) {
                    Ok(m) if round.contains(&m) => {
                        self.err(
                            v.span(),
                            format!("{at}: \"{}\" is listed twice", alt.trim()),
                        );
                        *ok = false;
                    }
                    Ok(m) => {
                        let legacy = m.is_some_and(|m| m.is_legacy());
                        if !self.legacy_ok(legacy, v, &at) {
                            *ok = false;
                        }
                        round.push(m);
                    }
                    Err(msg) => {
                        self.err(v.span(), format!("{at}: {msg}"));
                        *ok = false;
                    }
                }
            }
            if !round.is_empty() && round.iter().all(Option::is_none) {
                self.err(
                    v.span(),
                    format!("{at}: \"none\" alone runs no exchange; name a method (\"mlkem768|none\" for an optional one) or remove the entry"),
                );
                *ok = false;
            }
            out.push(round);
        }
        out
    }

    fn transform_set(&mut self, n: &Named<raw::TransformSet>) -> Option<TransformSet> {
        let path = format!("transform_set.{}", n.name);
        let r = &n.raw;
        let esp = self.encr(&r.esp, &format!("{path}.esp"));
        let integrity = match &r.integrity {
            Some(i) => self.integ(i, &format!("{path}.integrity")).map(Some),
            None => Some(None),
        };
        let mode = match &r.mode {
            Some(m) => self.choice(m, &format!("{path}.mode"), SA_MODES, "mode"),
            None => Some(SaMode::Tunnel),
        };
        let (esp, integrity, mode) = (esp?, integrity?, mode?);
        match (esp.is_aead(), &r.integrity, integrity) {
            (true, Some(i), _) => {
                let msg = format!(
                    "{path}.integrity: \"{}\" is AEAD and has built-in integrity; remove \
                     integrity",
                    r.esp.get_ref()
                );
                self.err(i.span(), msg);
                None
            }
            (false, _, None) => {
                let msg = format!(
                    "{path}: \"{}\" needs an integrity algorithm (e.g. integrity = \"sha256\")",
                    r.esp.get_ref()
                );
                self.err(n.span.clone(), msg);
                None
            }
            _ => Some(TransformSet {
                esp,
                integrity,
                mode,
                mode_written: r.mode.is_some(),
            }),
        }
    }

    fn ipsec_profile(
        &mut self,
        n: &Named<raw::IpsecProfile>,
        converted: &BTreeMap<String, TransformSet>,
    ) -> Option<IpsecProfile> {
        let path = format!("ipsec_profile.{}", n.name);
        self.ipsec_settings(&path, &n.raw, converted)
    }

    /// An IPsec profile's settings, also a crypto map entry's (which IOS writes on the entry).
    fn ipsec_settings(
        &mut self,
        path: &str,
        r: &raw::IpsecProfile,
        converted: &BTreeMap<String, TransformSet>,
    ) -> Option<IpsecProfile> {
        let mut ok = true;
        let sets = r.transform_sets.get_ref();
        if sets.is_empty() || sets.len() > MAX_TRANSFORM_SETS {
            self.err(
                r.transform_sets.span(),
                format!(
                    "{path}.transform_sets: lists {} transform sets; expected 1 to \
                     {MAX_TRANSFORM_SETS}",
                    sets.len()
                ),
            );
            ok = false;
        }
        let mut transform_sets = Vec::new();
        for s in sets {
            match self.reference(s, &format!("{path}.transform_sets"), "transform_set") {
                Some(name) if transform_sets.contains(&name) => {
                    self.err(
                        s.span(),
                        format!("{path}.transform_sets: \"{name}\" is listed twice"),
                    );
                    ok = false;
                }
                Some(name) => transform_sets.push(name),
                None => ok = false,
            }
        }
        let pfs = match &r.pfs {
            Some(g) => self.group(g, &format!("{path}.pfs"), true),
            None => Some(None),
        };
        let mut lifetime = SaLifetime::default();
        if let Some(l) = &r.lifetime {
            if let Some(s) = &l.get_ref().seconds {
                match self.u32_in(s, &format!("{path}.lifetime.seconds"), SA_SECONDS) {
                    Some(s) => lifetime.seconds = s,
                    None => ok = false,
                }
            }
            if let Some(k) = &l.get_ref().kilobytes {
                match self.int(k, &format!("{path}.lifetime.kilobytes"), SA_KILOBYTES) {
                    Some(k) => lifetime.kilobytes = k as u64,
                    None => ok = false,
                }
            }
        }
        let offload = match &r.offload {
            Some(o) => self.choice(o, &format!("{path}.offload"), OFFLOADS, "offload mode"),
            None => Some(Offload::Off),
        };
        let ike_profile = match &r.ike_profile {
            Some(p) => self
                .reference(p, &format!("{path}.ike_profile"), "ike_profile")
                .map(Some),
            None => Some(None),
        };
        let pfs_addke = self.pfs_addke(r, path, pfs.flatten().is_some(), &mut ok);
        let (pfs, offload, ike_profile) = (pfs?, offload?, ike_profile?);
        // A set that exists but has its own errors leaves the profile unresolved, silently:
        // the set's error is reported where it is.
        let sets: Vec<TransformSet> = transform_sets
            .iter()
            .filter_map(|t| converted.get(t).cloned())
            .collect();
        ok &= sets.len() == transform_sets.len();
        ok.then_some(IpsecProfile {
            sets,
            transform_sets,
            pfs,
            pfs_addke,
            lifetime,
            offload,
            ike_profile,
        })
    }

    /// `pfs_additional_key_exchanges`: as an IKE proposal's `additional_key_exchanges`, but
    /// one method per round and no `none`: a Child SA's are required of the peer (the engine
    /// follows a peer's when none are configured). ADDKE transforms go with a KE transform
    /// (RFC 9370 §2.2.1), so `pfs` must be set.
    fn pfs_addke(
        &mut self,
        r: &raw::IpsecProfile,
        path: &str,
        has_pfs: bool,
        ok: &mut bool,
    ) -> ike::transform::AddKes {
        let field = "pfs_additional_key_exchanges";
        let list = &r.pfs_additional_key_exchanges;
        let rounds = self.additional_key_exchanges(list, path, field, ok);
        let mut out = ike::transform::AddKes::NONE;
        for (i, (round, v)) in rounds.iter().zip(list).enumerate() {
            match round.as_slice() {
                [Some(m)] => out.0[i] = Some(*m),
                // Errors already reported.
                [] => {}
                _ => {
                    self.err(
                        v.span(),
                        format!(
                            "{path}.{field}[{i}]: one method per round; the PFS exchange's \
                             additional key exchanges are required (no alternatives or \"none\")"
                        ),
                    );
                    *ok = false;
                }
            }
        }
        if let (false, Some(first)) = (has_pfs, list.first()) {
            self.err(
                first.span(),
                format!(
                    "{path}.{field}: needs pfs (additional key exchanges follow the PFS key \
                     exchange, RFC 9370); set e.g. pfs = \"group31\""
                ),
            );
            *ok = false;
        }
        out
    }

    fn keyring(&mut self, n: &Named<raw::Keyring>) -> Option<Keyring> {
        let path = format!("keyring.{}", n.name);
        let mut ok = true;
        let mut peers = Vec::new();
        for (i, p) in n.raw.peer.iter().enumerate() {
            let ppath = format!("{path}.peer[{i}]");
            let r = p.get_ref();
            let peer = match (&r.address, &r.identity) {
                (Some(a), None) => self
                    .address_or_prefix(a, &format!("{ppath}.address"))
                    .map(PeerMatch::Address),
                (None, Some(id)) => match parse_identity(id.get_ref()) {
                    Ok(id) => Some(PeerMatch::Identity(id)),
                    Err(why) => {
                        self.err(id.span(), format!("{ppath}.identity: {why}"));
                        None
                    }
                },
                (Some(_), Some(id)) => {
                    self.err(
                        id.span(),
                        format!("{ppath}: set either address or identity, not both"),
                    );
                    None
                }
                (None, None) => {
                    self.err(p.span(), format!("{ppath}: needs address or identity"));
                    None
                }
            };
            let file = self.path_buf(&r.psk_file, &format!("{ppath}.psk_file"));
            let psk = match &file {
                Some(f) if self.opts.read_files => {
                    match secret::read_psk(f, self.opts.secret_owner_uid) {
                        Ok(k) => Some(k),
                        Err(why) => {
                            self.err(r.psk_file.span(), format!("{ppath}.psk_file: {why}"));
                            ok = false;
                            None
                        }
                    }
                }
                _ => None,
            };
            // An identity entry as the engine matches it; a DN must parse for that.
            let id_match = match &peer {
                Some(PeerMatch::Identity(id)) => {
                    match certs::id_match(&[certs::identity_match(id)]) {
                        Ok(m) => Some(Some(m)),
                        Err(e) => {
                            if let Some(v) = &r.identity {
                                self.err(v.span(), format!("{ppath}.identity: {e:#}"));
                            }
                            None
                        }
                    }
                }
                _ => Some(None),
            };
            match (peer, file, id_match) {
                (Some(peer), Some(psk_file), Some(id_match)) => peers.push(KeyringPeer {
                    peer,
                    psk_file,
                    psk,
                    id_match,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(Keyring { peers })
    }

    fn trustpoint(&mut self, n: &Named<raw::Trustpoint>) -> Option<Trustpoint> {
        let path = format!("trustpoint.{}", n.name);
        let r = &n.raw;
        let mut ok = true;
        let check = |cx: &mut Self, v: &SStr, key: &str, secret_file: bool| -> Option<PathBuf> {
            let p = cx.path_buf(v, &format!("{path}.{key}"))?;
            if cx.opts.read_files {
                let res = if secret_file {
                    secret::check_secret_file(&p, cx.opts.secret_owner_uid)
                } else {
                    secret::check_readable(&p)
                };
                if let Err(why) = res {
                    cx.err(v.span(), format!("{path}.{key}: {why}"));
                    return None;
                }
            }
            Some(p)
        };
        let ca = each(&r.ca, &mut ok, |v| check(self, v, "ca", false));
        let crl = each(&r.crl, &mut ok, |v| check(self, v, "crl", false));
        if !r.crl.is_empty() && r.ca.is_empty() {
            self.err(
                r.crl[0].span(),
                format!("{path}.crl: a CRL needs the CA that signed it in {path}.ca"),
            );
            ok = false;
        }
        let certificate = r
            .certificate
            .as_ref()
            .map(|v| check(self, v, "certificate", false));
        let private_key = r
            .private_key
            .as_ref()
            .map(|v| check(self, v, "private_key", true));
        if certificate.is_some() != private_key.is_some() {
            self.err(
                n.span.clone(),
                format!("{path}: certificate and private_key go together; set both or neither"),
            );
            ok = false;
        }
        let certificate = match certificate {
            Some(Some(p)) => Some(p),
            Some(None) => {
                ok = false;
                None
            }
            None => None,
        };
        let private_key = match private_key {
            Some(Some(p)) => Some(p),
            Some(None) => {
                ok = false;
                None
            }
            None => None,
        };
        if !ok {
            return None;
        }
        // Parse what the paths point at, so a broken or mismatched file is reported here, at
        // the key naming it, and not when a tunnel first needs it.
        let mut files = None;
        if self.opts.read_files {
            let cas = match certs::load_cas(&ca) {
                Ok(c) => c,
                Err((i, why)) => {
                    self.err(r.ca[i].span(), format!("{path}.ca: {why}"));
                    return None;
                }
            };
            let crls = match certs::load_crls(&cas, &crl) {
                Ok(c) => c,
                Err((i, why)) => {
                    self.err(r.crl[i].span(), format!("{path}.crl: {why}"));
                    return None;
                }
            };
            if let (Some(cert), Some(key)) = (&certificate, &private_key) {
                match certs::load_trustpoint(&n.name, cas, crls, cert, key) {
                    Ok(f) => files = Some(Arc::new(f)),
                    Err((which, why)) => {
                        let (span, key) = match which {
                            TrustpointKey::Ca(i) => (r.ca.get(i).map(|v| v.span()), "ca"),
                            TrustpointKey::Certificate => {
                                (r.certificate.as_ref().map(|v| v.span()), "certificate")
                            }
                            TrustpointKey::PrivateKey => {
                                (r.private_key.as_ref().map(|v| v.span()), "private_key")
                            }
                        };
                        self.err(
                            span.unwrap_or_else(|| n.span.clone()),
                            format!("{path}.{key}: {why}"),
                        );
                        return None;
                    }
                }
            }
        }
        Some(Trustpoint {
            ca,
            crl,
            certificate,
            private_key,
            files,
        })
    }

    /// `[isakmp_policy.N]`. A key left out takes IOS's default; where vtid lacks that default
    /// (`des`, `rsa-sig`, group 1) the key is required and the error says why.
    fn isakmp_policy(&mut self, n: &Named<raw::IsakmpPolicy>) -> Option<ike::v1::IsakmpPolicy> {
        let path = format!("isakmp_policy.{}", n.name);
        let r = &n.raw;
        let priority = match n.name.parse::<i64>() {
            Ok(p) if (ISAKMP_PRIORITY.0..=ISAKMP_PRIORITY.1).contains(&p) => u32::try_from(p).ok(),
            _ => {
                self.err(
                    n.span.clone(),
                    format!(
                        "{path}: the policy's name is its priority, a number from {} to {} (as \
                         in `crypto isakmp policy 10`)",
                        ISAKMP_PRIORITY.0, ISAKMP_PRIORITY.1
                    ),
                );
                None
            }
        };
        let missing = |me: &mut Self, key: &str, ios_default: &str| {
            me.err(
                n.span.clone(),
                format!(
                    "{path}: missing key \"{key}\": IOS's default ({ios_default}) is not supported \
                     by vtid"
                ),
            );
        };
        let encr = match &r.encryption {
            Some(v) => self
                .choice(v, &format!("{path}.encryption"), ISAKMP_ENCR, "encryption")
                .filter(|e| self.legacy_ok(e.is_legacy(), v, &format!("{path}.encryption"))),
            None => {
                missing(self, "encryption", "des");
                None
            }
        };
        let hash = match &r.hash {
            Some(v) => self
                .choice(v, &format!("{path}.hash"), ISAKMP_HASH, "hash")
                .filter(|h| self.legacy_ok(h.is_legacy(), v, &format!("{path}.hash"))),
            // IOS's default is sha, a legacy algorithm.
            None if !self.allow_legacy => {
                self.err(
                    n.span.clone(),
                    format!(
                        "{path}: no hash given, and IOS's default (sha) is a legacy algorithm; \
                         set hash = \"sha256\", or allow_legacy = true in [global]"
                    ),
                );
                None
            }
            None => Some(ike::v1::keys::HashAlg::Sha1),
        };
        let auth = match &r.authentication {
            Some(v) => self.choice(
                v,
                &format!("{path}.authentication"),
                ISAKMP_AUTH,
                "authentication",
            ),
            None => {
                // IOS's default is rsa-sig; a policy that silently asked for certificates
                // where keys were meant would only fail at negotiation, so say it.
                self.err(
                    n.span.clone(),
                    format!(
                        "{path}: missing key \"authentication\": write \"pre-share\" or \
                         \"rsa-sig\" (IOS's default)"
                    ),
                );
                None
            }
        };
        let group = match &r.group {
            Some(v) => match self.group(v, &format!("{path}.group"), false).flatten() {
                // IKEv1's group registry (RFC 2409 Appendix A, RFC 5903) has no Curve25519.
                Some(DhGroup::Curve25519) => {
                    self.err(
                        v.span(),
                        format!("{path}.group: group 31 (Curve25519) has no IKEv1 number"),
                    );
                    None
                }
                g => g,
            },
            None => {
                missing(self, "group", "group 1");
                None
            }
        };
        let lifetime = match &r.lifetime {
            Some(v) => self.u32_in(v, &format!("{path}.lifetime"), ISAKMP_SECONDS),
            None => Some(86_400),
        };
        Some(ike::v1::IsakmpPolicy {
            priority: priority?,
            encr: encr?,
            hash: hash?,
            auth: auth?,
            group: group?,
            lifetime: std::time::Duration::from_secs(u64::from(lifetime?)),
        })
    }

    fn ike_profile(&mut self, n: &Named<raw::IkeProfile>, c: &Config) -> Option<IkeProfile> {
        let path = format!("ike_profile.{}", n.name);
        let r = &n.raw;
        let mut ok = true;
        let mut match_identity = Vec::new();
        for v in r.match_identity.iter().flatten() {
            match parse_identity_match(v.get_ref()) {
                Ok(m) => match_identity.push(m),
                Err(why) => {
                    self.err(v.span(), format!("{path}.match_identity: {why}"));
                    ok = false;
                }
            }
        }
        let local_identity = match &r.local_identity {
            None => LocalIdentity::Address,
            Some(v) if v.get_ref() == "address" => LocalIdentity::Address,
            Some(v) => match parse_identity(v.get_ref()) {
                Ok(id) => LocalIdentity::Explicit(id),
                Err(why) => {
                    self.err(v.span(), format!("{path}.local_identity: {why}"));
                    ok = false;
                    LocalIdentity::Address
                }
            },
        };
        let local_auth = match &r.local_auth {
            Some(v) => self.choice(
                v,
                &format!("{path}.local_auth"),
                AUTH_METHODS,
                "auth method",
            ),
            None => Some(AuthMethod::Psk),
        };
        let mut remote_auth = Vec::new();
        let remote_auth_ok_before = ok;
        match &r.remote_auth {
            Some(list) => {
                for v in list {
                    match self.choice(
                        v,
                        &format!("{path}.remote_auth"),
                        AUTH_METHODS,
                        "auth method",
                    ) {
                        Some(m) => remote_auth.push(m),
                        None => ok = false,
                    }
                }
                if list.is_empty() {
                    self.err(
                        n.span.clone(),
                        format!("{path}.remote_auth: list at least one method"),
                    );
                    ok = false;
                }
            }
            None => remote_auth.push(local_auth.unwrap_or(AuthMethod::Psk)),
        }
        let local_auth = local_auth?;
        let keyring = match &r.keyring {
            Some(v) => self
                .reference(v, &format!("{path}.keyring"), "keyring")
                .map(Some),
            None => Some(None),
        };
        let trustpoint = match &r.trustpoint {
            Some(v) => self
                .reference(v, &format!("{path}.trustpoint"), "trustpoint")
                .map(Some),
            None => Some(None),
        };
        let uses_psk = local_auth == AuthMethod::Psk || remote_auth.contains(&AuthMethod::Psk);
        let uses_sig =
            local_auth != AuthMethod::Psk || remote_auth.iter().any(|m| *m != AuthMethod::Psk);
        if uses_psk && r.keyring.is_none() {
            self.err(
                n.span.clone(),
                format!("{path}: psk authentication needs keyring = \"NAME\""),
            );
            ok = false;
        }
        if uses_sig && r.trustpoint.is_none() {
            self.err(
                n.span.clone(),
                format!("{path}: signature authentication needs trustpoint = \"NAME\""),
            );
            ok = false;
        }
        let dpd = match &r.dpd {
            None => Some(None),
            Some(d) => {
                let d = d.get_ref();
                let interval = self.u32_in(&d.interval, &format!("{path}.dpd.interval"), (1, 3600));
                let retries = match &d.retries {
                    Some(v) => self.u32_in(v, &format!("{path}.dpd.retries"), (1, 60)),
                    None => Some(3),
                };
                let action = match &d.action {
                    Some(a) => self
                        .choice(a, &format!("{path}.dpd.action"), DPD_ACTIONS, "DPD action")
                        .map(Some),
                    None => Some(None),
                };
                match (interval, retries, action) {
                    (Some(interval), Some(retries), Some(action)) => Some(Some(Dpd {
                        interval,
                        retries,
                        action,
                    })),
                    _ => None,
                }
            }
        };
        let local = match (&r.local_address, &r.local_interface) {
            (Some(_), Some(i)) => {
                self.err(
                    i.span(),
                    format!("{path}: set either local_address or local_interface, not both"),
                );
                None
            }
            (Some(a), None) => self
                .ip(a, &format!("{path}.local_address"))
                .map(|a| Some(LocalTermination::Address(a))),
            (None, Some(i)) => self
                .ifname(i.get_ref(), i.span(), &format!("{path}.local_interface"))
                .map(|i| Some(LocalTermination::Interface(i))),
            (None, None) => Some(None),
        };
        let virtual_template = match &r.virtual_template {
            Some(v) => {
                let t = self.reference(v, &format!("{path}.virtual_template"), "virtual_template");
                if t.is_some() && match_identity.is_empty() && r.match_identity.is_none() {
                    self.err(
                        n.span.clone(),
                        format!(
                            "{path}: a profile with a virtual_template answers peers, so it \
                             needs match_identity (e.g. [\"10.1.1.0/24\"] or [\"any\"])"
                        ),
                    );
                    ok = false;
                }
                t.map(Some)
            }
            None => Some(None),
        };
        let mut proposals = Vec::new();
        for v in r.proposals.iter().flatten() {
            match self.reference_or(
                v,
                &format!("{path}.proposals"),
                "ike_proposal",
                &[IkeProposalSpec::DEFAULT_NAME],
            ) {
                Some(p) => proposals.push(p),
                None => ok = false,
            }
        }
        let fvrf = self.vrf_ref(r.fvrf.as_ref(), &format!("{path}.fvrf"), c);
        let version = match &r.version {
            None => 2,
            Some(v) => match *v.get_ref() {
                2 => 2,
                1 => {
                    if !self.v1_profile_ok(n, local_auth) {
                        ok = false;
                    }
                    1
                }
                x => {
                    self.err(v.span(), format!("{path}.version: {x} is not 1 or 2"));
                    ok = false;
                    2
                }
            },
        };
        let aggressive = match &r.aggressive {
            Some(v) if *v.get_ref() && version != 1 => {
                self.err(
                    v.span(),
                    format!("{path}.aggressive: aggressive mode is IKEv1's; it needs version = 1"),
                );
                ok = false;
                false
            }
            Some(v) => *v.get_ref(),
            None => false,
        };
        let lifetime_seconds = match &r.lifetime_seconds {
            Some(v) => self.u32_in(v, &format!("{path}.lifetime_seconds"), IKE_SECONDS),
            None => Some(DEFAULT_IKE_LIFETIME),
        };
        let (keyring, trustpoint, dpd, local, virtual_template, fvrf, lifetime_seconds) = (
            keyring?,
            trustpoint?,
            dpd?,
            local?,
            virtual_template?,
            fvrf?,
            lifetime_seconds?,
        );
        if !ok {
            return None;
        }
        // The engine authenticates both directions with one method, so a profile mixing PSK
        // and signatures could never complete IKE_AUTH. Not checked when a method itself was
        // misspelt (that error is enough).
        let psk_local = local_auth == AuthMethod::Psk;
        if remote_auth_ok_before
            && let Some(i) = remote_auth
                .iter()
                .position(|m| (*m == AuthMethod::Psk) != psk_local)
        {
            let span = r
                .remote_auth
                .as_ref()
                .and_then(|l| l.get(i))
                .map_or_else(|| n.span.clone(), |v| v.span());
            self.err(
                span,
                format!(
                    "{path}.remote_auth: {} with local_auth = {} mixes psk and signatures; vtid \
                     authenticates both directions with the same method",
                    auth_name(remote_auth[i]),
                    auth_name(local_auth)
                ),
            );
            return None;
        }
        let credentials = if psk_local {
            let name = keyring.clone()?;
            // A keyring with its own errors is reported there.
            let k = c.keyrings.get(&name)?;
            ProfileCredentials::Psk(name, Arc::new(k.clone()))
        } else {
            let name = trustpoint.clone()?;
            let tp = c.trustpoints.get(&name)?;
            let at = r
                .trustpoint
                .as_ref()
                .map_or_else(|| n.span.clone(), |v| v.span());
            if tp.certificate.is_none() {
                self.err(
                    at,
                    format!(
                        "{path}.trustpoint: trustpoint {name} has no certificate and \
                         private_key: we cannot authenticate with a signature without them"
                    ),
                );
                return None;
            }
            if tp.ca.is_empty() {
                self.err(
                    at,
                    format!(
                        "{path}.trustpoint: trustpoint {name} lists no ca: the peer's \
                         certificate could never be verified"
                    ),
                );
                return None;
            }
            // `rsa-sig`/`ecdsa-sig` name our key's type (the peer may sign with whatever its
            // certificate carries).
            if let Some(f) = &tp.files
                && f.is_rsa() != (local_auth == AuthMethod::RsaSig)
            {
                let span = r
                    .local_auth
                    .as_ref()
                    .map_or_else(|| n.span.clone(), |v| v.span());
                self.err(
                    span,
                    format!(
                        "{path}.local_auth: local_auth is {} but trustpoint {name}'s private key \
                         is {}",
                        auth_name(local_auth),
                        if f.is_rsa() { "RSA" } else { "not RSA" }
                    ),
                );
                return None;
            }
            ProfileCredentials::Certificate(name, tp.files.clone())
        };
        // Each pattern on its own, so a bad DN is reported at its own list item.
        for (m, v) in match_identity.iter().zip(r.match_identity.iter().flatten()) {
            if let Err(e) = certs::id_match(std::slice::from_ref(m)) {
                self.err(v.span(), format!("{path}.match_identity: {e:#}"));
                ok = false;
            }
        }
        // Main mode with pre-shared keys encrypts the identities with a key derived from the
        // pre-shared key (RFC 2409 §5.4), so an IKEv1 hub must pick the key by the peer's
        // address: a keyring entry by identity could never be found. (A static tunnel's key
        // is the one of its destination, so only templates are concerned.)
        if version == 1
            && virtual_template.is_some()
            && let ProfileCredentials::Psk(kname, ring) = &credentials
            && let Some(i) = ring
                .peers
                .iter()
                .position(|p| matches!(p.peer, PeerMatch::Identity(_)))
        {
            let span = r
                .keyring
                .as_ref()
                .map_or_else(|| n.span.clone(), |v| v.span());
            self.err(
                span,
                format!(
                    "{path}.keyring: keyring.{kname}.peer[{i}] is keyed by identity, but IKEv1 \
                     main mode picks the pre-shared key by the peer's address (RFC 2409 §5.4); \
                     use address = \"PREFIX\" (e.g. \"0.0.0.0/0\") in a keyring for a \
                     version = 1 profile"
                ),
            );
            return None;
        }
        let remote_id = certs::id_match(&match_identity).ok()?;
        let local_id = match (&local_identity, &credentials) {
            (LocalIdentity::Address, _) => None,
            // Our subject is in the certificate, which was not read: nothing to check or send.
            (
                LocalIdentity::Explicit(Identity::Dn(_)),
                ProfileCredentials::Certificate(_, None),
            ) => None,
            (LocalIdentity::Explicit(id), creds) => {
                let subject = match creds {
                    ProfileCredentials::Certificate(_, Some(f)) => Some(f.subject.as_slice()),
                    _ => None,
                };
                match certs::local_id(id, subject) {
                    Ok(i) => Some(i),
                    Err(e) => {
                        let span = r
                            .local_identity
                            .as_ref()
                            .map_or_else(|| n.span.clone(), |v| v.span());
                        self.err(span, format!("{path}.local_identity: {e:#}"));
                        return None;
                    }
                }
            }
        };
        let mut proposal_specs = Vec::new();
        for p in &proposals {
            match c.ike_proposals.get(p) {
                Some(spec) => proposal_specs.push(spec.clone()),
                None if p == IkeProposalSpec::DEFAULT_NAME => {
                    proposal_specs.push(IkeProposalSpec::builtin_default());
                }
                // Exists with its own errors.
                None => return None,
            }
        }
        if proposal_specs.is_empty() {
            proposal_specs.push(IkeProposalSpec::builtin_default());
        }
        let template = match &virtual_template {
            Some(t) => Some((t.clone(), Arc::new(c.virtual_templates.get(t)?.clone()))),
            None => None,
        };
        ok.then_some(IkeProfile {
            match_identity,
            local_identity,
            local_auth,
            remote_auth,
            keyring,
            trustpoint,
            dpd,
            mobike: r.mobike.as_ref().is_none_or(|b| *b.get_ref()),
            local,
            virtual_template,
            proposals,
            fvrf,
            lifetime_seconds,
            version,
            aggressive,
            proposal_specs,
            remote_id,
            local_id,
            credentials,
            template,
        })
    }

    /// What an IKEv1 profile (`version = 1`) may not hold: what this part of IKEv1 lacks
    /// (signatures) and the IKEv2-only `proposals` (IKEv1 negotiates phase 1
    /// with `[isakmp_policy.N]`, which must then offer at least one policy).
    fn v1_profile_ok(&mut self, n: &Named<raw::IkeProfile>, local_auth: AuthMethod) -> bool {
        let path = format!("ike_profile.{}", n.name);
        let r = &n.raw;
        let at = |v: Option<&SStr>| v.map_or_else(|| n.span.clone(), |v| v.span());
        let mut ok = true;
        // IKEv1 authenticates both ends with the one method the policy negotiated.
        let remote = |m: &str| r.remote_auth.iter().flatten().all(|v| v.get_ref() == m);
        let same = match local_auth {
            AuthMethod::Psk => remote("psk"),
            AuthMethod::RsaSig => remote("rsa-sig"),
            AuthMethod::EcdsaSig => false,
        };
        if !same {
            self.err(
                at(r.local_auth.as_ref()),
                format!(
                    "{path}: IKEv1 (version = 1) authenticates both ends with pre-shared keys \
                     (psk) or both with RSA signatures (rsa-sig)"
                ),
            );
            ok = false;
        }
        if let Some(v) = r.proposals.as_ref().and_then(|l| l.first()) {
            self.err(
                v.span(),
                format!(
                    "{path}.proposals: IKEv2 proposals do not apply to an IKEv1 profile; phase 1 \
                     uses the [isakmp_policy.N] entries"
                ),
            );
            ok = false;
        }
        // Every policy written converted (or it reported its own error).
        if self.count("isakmp_policy") == 0 {
            let at = r
                .version
                .as_ref()
                .map_or_else(|| n.span.clone(), |v| v.span());
            self.err(
                at,
                format!(
                    "{path}.version: IKEv1 needs at least one [isakmp_policy.N] (e.g. \
                     encryption = \"aes 256\", hash = \"sha256\", authentication = \"pre-share\", \
                     group = 14)"
                ),
            );
            ok = false;
        }
        ok
    }

    /// An optional `vrf`/`fvrf` reference, resolved. `None` when it is wrong (reported) or
    /// names a VRF with its own errors.
    fn vrf_ref(&mut self, v: Option<&SStr>, path: &str, c: &Config) -> Option<Option<VrfRef>> {
        let Some(v) = v else { return Some(None) };
        let name = self.reference(v, path, "vrf")?;
        let table = c.vrfs.get(&name)?.table;
        Some(Some(VrfRef { name, table }))
    }

    /// A tunnel's `source`: an address, or an interface whose address the plan reads (the
    /// same for VTIs and GRE).
    pub(super) fn tunnel_source(&mut self, r: &raw::Tunnel, path: &str) -> Option<TunnelSource> {
        match r.source.get_ref().parse::<IpAddr>() {
            Ok(a) => Some(TunnelSource::Address(a)),
            Err(_) if looks_like_ip(r.source.get_ref()) => {
                self.ip(&r.source, &format!("{path}.source"));
                None
            }
            Err(_) => self
                .ifname(
                    r.source.get_ref(),
                    r.source.span(),
                    &format!("{path}.source"),
                )
                .map(TunnelSource::Interface),
        }
    }

    /// A tunnel's own address: `address` or `unnumbered`, exactly one of them.
    pub(super) fn tunnel_inner(
        &mut self,
        n: &Named<raw::Tunnel>,
        path: &str,
    ) -> Option<InnerAddress> {
        match (&n.raw.address, &n.raw.unnumbered) {
            (Some(_), Some(u)) => {
                self.err(
                    u.span(),
                    format!("{path}: set either address or unnumbered, not both"),
                );
                None
            }
            (Some(a), None) => self
                .address_cidr(a, &format!("{path}.address"))
                .map(InnerAddress::Address),
            (None, Some(u)) => self
                .ifname(u.get_ref(), u.span(), &format!("{path}.unnumbered"))
                .map(InnerAddress::Unnumbered),
            (None, None) => {
                self.err(
                    n.span.clone(),
                    format!("{path}: needs address = \"ADDRESS/LEN\" or unnumbered = \"IFACE\""),
                );
                None
            }
        }
    }

    fn tunnels(&mut self, raws: Vec<Named<raw::Tunnel>>, c: &mut Config, vtis: &VtiChecks) {
        // (source as written, destination, fvrf) of vti-mode tunnels → first tunnel's name.
        let mut vti_pairs: HashMap<(String, IpAddr, Option<String>), String> = HashMap::new();
        let mut if_ids: HashMap<u32, String> = HashMap::new();
        let mut seen = Ambiguity::default();
        // One shared copy of each object however many tunnels use it (a hub with a thousand
        // tunnels on one keyring holds the keyring once).
        let mut ipsec_arcs: HashMap<String, Arc<IpsecProfile>> = HashMap::new();
        let mut ike_arcs: HashMap<String, Arc<IkeProfile>> = HashMap::new();
        let mut keyring_arcs: HashMap<String, Arc<Keyring>> = HashMap::new();
        let mut gre_seen = gre_convert::GreSources::default();
        for n in raws {
            let path = format!("tunnel.{}", n.name);
            let r = &n.raw;
            // Multipoint GRE has no destination and a type of its own (see gre_convert.rs).
            if r.mode
                .as_ref()
                .and_then(|m| algo::lookup(TUNNEL_MODES, m.get_ref()))
                == Some(TunnelMode::Mgre)
            {
                self.mgre_tunnel(&n, c, &mut gre_seen);
                continue;
            }
            let Some(dest) = &r.destination else {
                self.err(
                    n.span.clone(),
                    format!(
                        "{path}: needs destination = \"ADDRESS\" (the peer's underlay address; \
                         only mode = \"mgre\" has none)"
                    ),
                );
                continue;
            };
            let name_ok = self.ifname(&n.name, n.span.clone(), &path).is_some();
            let mode = match &r.mode {
                Some(m) => self.choice(m, &format!("{path}.mode"), TUNNEL_MODES, "tunnel mode"),
                None => Some(TunnelMode::Xfrmi),
            };
            let source = self.tunnel_source(r, &path);
            let destination = self.ip(dest, &format!("{path}.destination"));
            let mut family_ok = true;
            if let (Some(TunnelSource::Address(s)), Some(d)) = (&source, destination)
                && s.is_ipv4() != d.is_ipv4()
            {
                family_ok = false;
                self.err(
                    r.destination_span(),
                    format!(
                        "{path}.destination: {d} is {} but source {s} is {}; the underlay \
                         addresses must be the same family",
                        family(d),
                        family(*s)
                    ),
                );
            }
            let inner = self.tunnel_inner(&n, &path);
            let protection = self.reference(
                &r.protection,
                &format!("{path}.protection"),
                "ipsec_profile",
            );
            // GRE runs in transport mode; VTIs need tunnel mode.
            if mode != Some(TunnelMode::Gre)
                && let Some(p) = protection.as_ref().and_then(|p| c.ipsec_profiles.get(p))
            {
                self.check_tunnel_mode_sets(p, &r.protection, &path, &vtis.transport_sets);
            }
            let gre = self.gre_options(&n, mode, protection.as_deref(), c);
            let ike_profile = match &r.ike_profile {
                Some(v) => {
                    let p = self.reference(v, &format!("{path}.ike_profile"), "ike_profile");
                    if let Some(p) = &p
                        && vtis.dvti_profiles.contains(p)
                    {
                        self.err(
                            v.span(),
                            format!(
                                "{path}.ike_profile: \"{p}\" clones a virtual_template for each \
                                 peer; a static tunnel needs a profile without one"
                            ),
                        );
                    }
                    p.map(Some)
                }
                None => Some(None),
            };
            let mtu = match &r.mtu {
                Some(v) => {
                    let v6 = matches!(&inner, Some(InnerAddress::Address(IpNet::V6(_))));
                    // RFC 8200 §5: IPv6 links need an MTU of at least 1280.
                    let lo = if v6 { 1280 } else { 576 };
                    self.u32_in(v, &format!("{path}.mtu"), (lo, 9000)).map(Some)
                }
                None => Some(None),
            };
            let mut routes_ok = true;
            let routes = each(&r.routes, &mut routes_ok, |v| {
                let prefix = self.prefix(&v.prefix, &format!("{path}.routes"));
                // Linux route priorities are u32; IOS distances stop at 255 but nothing here
                // needs that limit.
                let metric = match &v.metric {
                    Some(m) => self
                        .u32_in(
                            m,
                            &format!("{path}.routes.metric"),
                            (0, i64::from(u32::MAX)),
                        )
                        .map(Some),
                    None => Some(None),
                };
                Some(Route {
                    prefix: prefix?,
                    metric: metric?,
                })
            });
            let announce = each(&r.announce, &mut routes_ok, |v| {
                self.prefix(v, &format!("{path}.announce"))
            });
            let vrf = self.vrf_ref(r.vrf.as_ref(), &format!("{path}.vrf"), c);
            let fvrf = self.vrf_ref(r.fvrf.as_ref(), &format!("{path}.fvrf"), c);
            let if_id = match &r.if_id {
                Some(v) => {
                    let id = self.u32_in(v, &format!("{path}.if_id"), (1, u32::MAX as i64));
                    if let Some(id) = id {
                        if let Some(other) = if_ids.get(&id) {
                            let msg = format!(
                                "{path}.if_id: if_id {id} is already used by tunnel.{other}"
                            );
                            self.err(v.span(), msg);
                        } else {
                            if_ids.insert(id, n.name.clone());
                        }
                    }
                    id.map(|i| Some(IfId(i)))
                }
                None => Some(None),
            };
            let initiate = r.initiate.as_ref().is_none_or(|b| *b.get_ref());
            let offload = match &r.offload {
                Some(o) => self
                    .choice(o, &format!("{path}.offload"), OFFLOADS, "offload mode")
                    .map(Some),
                None => Some(None),
            };

            let mut vti_clash = false;
            if let (Some(TunnelMode::Vti), Some(d)) = (mode, destination) {
                let key = (
                    r.source.get_ref().clone(),
                    d,
                    r.fvrf.as_ref().map(|v| v.get_ref().clone()),
                );
                if let Some(other) = vti_pairs.get(&key) {
                    vti_clash = true;
                    let msg = format!(
                        "{path}: tunnel.{other} already uses mode = \"vti\" from {} to {d}; \
                         ip_vti finds the receiving device by (source, destination) only, \
                         ignoring the key, so two vti tunnels between the same addresses are \
                         ambiguous (use mode = \"xfrmi\" for one of them)",
                        r.source.get_ref()
                    );
                    self.err(r.destination_span(), msg);
                } else {
                    vti_pairs.insert(key, n.name.clone());
                }
            }
            // Without an IKE profile the tunnel negotiates with a derived one, which needs a
            // keyring entry for its destination.
            let has_profile = r.ike_profile.is_some()
                || protection
                    .as_ref()
                    .and_then(|p| c.ipsec_profiles.get(p))
                    .is_some_and(|p| p.ike_profile.is_some());
            if !has_profile
                && vtis.all_keyrings_ok
                && let Some(d) = destination
                && !c.keyrings.values().any(|k| k.find_by_address(d).is_some())
                && (protection.is_none()
                    || c.ipsec_profiles
                        .contains_key(protection.as_deref().unwrap_or_default()))
            {
                self.err(
                    n.span.clone(),
                    format!(
                        "{path}: no ike_profile given and no keyring has a peer entry for {d}; \
                         set ike_profile = \"NAME\" or add [[keyring.NAME.peer]] with address = \
                         \"{d}\""
                    ),
                );
                routes_ok = false;
            }
            let (Some(mode), Some(source), Some(destination), Some(inner), Some(protection)) =
                (mode, source, destination, inner, protection)
            else {
                continue;
            };
            let (Some(ike_profile), Some(mtu), Some(vrf), Some(fvrf), Some(if_id)) =
                (ike_profile, mtu, vrf, fvrf, if_id)
            else {
                continue;
            };
            let (Some(offload), Some(gre)) = (offload, gre) else {
                continue;
            };
            // A family mismatch makes every later check on the destination a follow-on error.
            if !name_ok || !routes_ok || !family_ok {
                continue;
            }
            // Resolve what the tunnel uses. A referenced entry with its own errors is reported
            // there and leaves this tunnel out silently.
            let Some(ipsec) = shared(&mut ipsec_arcs, &c.ipsec_profiles, &protection) else {
                continue;
            };
            let named = ike_profile.clone().or_else(|| ipsec.ike_profile.clone());
            let (ike, credentials) = match &named {
                Some(pname) => {
                    let Some(prof) = shared(&mut ike_arcs, &c.ike_profiles, pname) else {
                        continue;
                    };
                    let credentials = match &prof.credentials {
                        ProfileCredentials::Psk(kname, keyring) => {
                            match keyring.find_by_address(destination) {
                                Some(e) => Credentials::Psk(e.psk.clone()),
                                None => {
                                    self.err(
                                        r.destination_span(),
                                        format!(
                                            "{path}.destination: keyring {kname} (of ike_profile \
                                             {pname}) has no peer entry for {destination}; add \
                                             [[keyring.{kname}.peer]] with address = \
                                             \"{destination}\""
                                        ),
                                    );
                                    continue;
                                }
                            }
                        }
                        ProfileCredentials::Certificate(_, files) => {
                            Credentials::Certificate(files.clone())
                        }
                    };
                    (prof, credentials)
                }
                None => {
                    let Some((kname, _, entry)) = keyring_for_address(c, destination) else {
                        continue;
                    };
                    let Some(keyring) = shared(&mut keyring_arcs, &c.keyrings, kname) else {
                        continue;
                    };
                    (
                        Arc::new(derived_profile(destination, kname, keyring, fvrf.clone())),
                        Credentials::Psk(entry.psk.clone()),
                    )
                }
            };
            // `initiate = false` answers only; restarting or holding for traffic would
            // initiate after all.
            if let (false, Some(a)) = (initiate, ike.dpd.and_then(|d| d.action))
                && a != DpdAction::Clear
            {
                let span = r.initiate.as_ref().map_or(n.span.clone(), |i| i.span());
                self.err(
                    span,
                    format!(
                        "{path}.initiate: false, but its IKE profile's dpd.action is \"{}\", \
                         which initiates; use action = \"clear\" or initiate = true",
                        a.as_str()
                    ),
                );
                continue;
            }
            let fvrf_eff = fvrf.as_ref().or(ike.fvrf.as_ref()).map(|v| v.name.clone());
            if !self.unambiguous(
                &mut seen,
                &n,
                &source,
                destination,
                &inner,
                &routes,
                (
                    vrf.as_ref().map(|v| v.name.clone()),
                    fvrf_eff,
                    ike.match_identity.clone(),
                ),
                vti_clash,
            ) {
                continue;
            }
            if let Some(g) = gre {
                gre_seen.p2p(&n, destination, g.key);
            }
            c.tunnels.insert(
                n.name,
                Tunnel {
                    mode,
                    source,
                    destination,
                    inner,
                    protection,
                    ipsec,
                    ike_profile,
                    ike,
                    credentials,
                    mtu,
                    routes,
                    announce,
                    vrf,
                    fvrf,
                    if_id,
                    initiate,
                    offload,
                    gre,
                },
            );
        }
        self.gre_sharing(&gre_seen);
    }

    /// Refuses what would make two static tunnels indistinguishable; records the tunnel
    /// otherwise. False when an error was reported.
    #[allow(clippy::too_many_arguments)]
    fn unambiguous(
        &mut self,
        seen: &mut Ambiguity,
        n: &Named<raw::Tunnel>,
        source: &TunnelSource,
        destination: IpAddr,
        inner: &InnerAddress,
        routes: &[Route],
        (vrf, fvrf, identity): (Option<String>, Option<String>, Vec<IdentityMatch>),
        vti_clash: bool,
    ) -> bool {
        let path = format!("tunnel.{}", n.name);
        let r = &n.raw;
        let mut ok = true;
        if *source == TunnelSource::Address(destination) {
            self.err(
                r.destination_span(),
                format!(
                    "{path}.destination: {destination} is also the tunnel's source; a tunnel \
                     needs two different underlay ends"
                ),
            );
            ok = false;
        }
        // A responder picks the tunnel of an IKE_SA_INIT by the addresses it arrived on and
        // the IDi of IKE_AUTH (RFC 7296 §2.15: the identity selects the credentials), so two
        // tunnels with the same addresses and the same accepted identities cannot be told
        // apart: the second would never be chosen. The front-door VRF is part of the key: its
        // sockets and underlay are separate. The source is compared as written (an interface
        // name is not resolved here). A vti pair already refused above is not reported twice.
        let key = (
            format!("{source:?}"),
            destination,
            fvrf,
            format!("{identity:?}"),
        );
        match seen.peers.get(&key) {
            Some(other) if !vti_clash => {
                let shown = if identity.is_empty() {
                    "none given".to_owned()
                } else {
                    format!("{identity:?}")
                };
                self.err(
                    r.destination_span(),
                    format!(
                        "{path}.destination: tunnel.{other} already runs from {} to \
                         {destination} and accepts the same peer identities ({shown}); a \
                         responder cannot tell the two apart (give one an ike_profile with a \
                         different match_identity, or another address)",
                        r.source.get_ref()
                    ),
                );
                ok = false;
            }
            Some(_) => ok = false,
            None => {}
        }
        // Inner addresses and routes are per routing table: tunnels in different inside VRFs
        // may reuse them (that is what VRFs are for), tunnels in the same one may not, since
        // the kernel would hold the same local address twice or let the last route replace
        // the first. Unnumbered tunnels borrow one interface's address on purpose.
        if let (InnerAddress::Address(a), Some(span)) =
            (inner, r.address.as_ref().map(|a| a.span()))
        {
            if let Some(other) = seen.inners.get(&(vrf.clone(), a.addr())) {
                self.err(
                    span,
                    format!(
                        "{path}.address: {} is already the address of tunnel.{other}{}",
                        a.addr(),
                        in_vrf(&vrf)
                    ),
                );
                ok = false;
            }
        }
        // A prefix may lead into several tunnels at different metrics (floating routes, a
        // second hub); at the same metric the kernel would refuse the second (EEXIST).
        let mut mine: BTreeSet<IpNet> = BTreeSet::new();
        for (route, raw) in routes.iter().zip(&r.routes) {
            let p = route.prefix;
            if !mine.insert(p) {
                self.err(
                    raw.prefix.span(),
                    format!("{path}.routes: {p} is listed twice"),
                );
                ok = false;
            } else if let Some(other) = seen.routes.get(&(vrf.clone(), p, route.metric)) {
                self.err(
                    raw.prefix.span(),
                    format!(
                        "{path}.routes: {p} is already routed into tunnel.{other}{} at the same \
                         metric; give one of them another metric (a floating route) or drop it",
                        in_vrf(&vrf)
                    ),
                );
                ok = false;
            }
        }
        if ok {
            seen.peers.insert(key, n.name.clone());
            if let InnerAddress::Address(a) = inner {
                seen.inners.insert((vrf.clone(), a.addr()), n.name.clone());
            }
            for p in routes {
                seen.routes
                    .insert((vrf.clone(), p.prefix, p.metric), n.name.clone());
            }
        }
        ok
    }

    /// VTIs carry whole packets, so every transform set of their profile must be tunnel mode
    /// (ip_vti's `vti_state_check` refuses transport SAs; seed F-G10.1).
    fn check_tunnel_mode_sets(
        &mut self,
        p: &IpsecProfile,
        at: &SStr,
        path: &str,
        transport_sets: &BTreeSet<String>,
    ) {
        for ts in &p.transform_sets {
            if transport_sets.contains(ts) {
                self.err(
                    at.span(),
                    format!(
                        "{path}.protection: ipsec_profile \"{}\" uses transform_set \"{ts}\", \
                         which is mode = \"transport\"; VTIs need tunnel mode",
                        at.get_ref()
                    ),
                );
            }
        }
    }

    fn virtual_template(
        &mut self,
        n: &Named<raw::VirtualTemplate>,
        c: &Config,
        transport_sets: &BTreeSet<String>,
    ) -> Option<VirtualTemplate> {
        let path = format!("virtual_template.{}", n.name);
        let r = &n.raw;
        let unnumbered = self.ifname(
            r.unnumbered.get_ref(),
            r.unnumbered.span(),
            &format!("{path}.unnumbered"),
        );
        let mtu = match &r.mtu {
            Some(v) => self
                .u32_in(v, &format!("{path}.mtu"), (576, 9000))
                .map(Some),
            None => Some(None),
        };
        let vrf = self.vrf_ref(r.vrf.as_ref(), &format!("{path}.vrf"), c);
        let group = match &r.group {
            Some(v) => self
                .u32_in(v, &format!("{path}.group"), (0, u32::MAX as i64))
                .map(Some),
            None => Some(None),
        };
        let protection = self.reference(
            &r.protection,
            &format!("{path}.protection"),
            "ipsec_profile",
        );
        if let Some(p) = protection.as_ref().and_then(|p| c.ipsec_profiles.get(p)) {
            self.check_tunnel_mode_sets(p, &r.protection, &path, transport_sets);
        }
        let qdisc = match &r.qdisc {
            Some(q) if q.get_ref().trim().is_empty() || q.get_ref().contains('\n') => {
                self.err(
                    q.span(),
                    format!("{path}.qdisc: expected a tc qdisc on one line, e.g. \"fq_codel\""),
                );
                None
            }
            Some(q) => Some(Some(q.get_ref().trim().to_owned())),
            None => Some(None),
        };
        let routes = match &r.routes {
            None => Some(TemplateRoutes::TrafficSelectors),
            Some(v) => match v.get_ref() {
                StrOrList::One(s) if s == "traffic-selectors" => {
                    Some(TemplateRoutes::TrafficSelectors)
                }
                StrOrList::One(s) => {
                    let hint = suggestion(s, ["traffic-selectors"]);
                    self.err(
                        v.span(),
                        format!(
                            "{path}.routes: unknown routes mode \"{s}\"{hint}; expected \
                             \"traffic-selectors\" or a list of prefixes"
                        ),
                    );
                    None
                }
                StrOrList::Many(list) => {
                    let mut out = Vec::new();
                    let mut ok = true;
                    for p in list {
                        match self.prefix(p, &format!("{path}.routes")) {
                            Some(p) => out.push(p),
                            None => ok = false,
                        }
                    }
                    ok.then_some(TemplateRoutes::Prefixes(out))
                }
            },
        };
        let offload = match &r.offload {
            Some(o) => self
                .choice(o, &format!("{path}.offload"), OFFLOADS, "offload mode")
                .map(Some),
            None => Some(None),
        };
        let multipoint = self.template_mode(n, c);
        // A profile with its own errors is reported there.
        let ipsec = Arc::new(c.ipsec_profiles.get(protection.as_ref()?)?.clone());
        Some(VirtualTemplate {
            multipoint: multipoint?,
            ipsec,
            offload: offload?,
            unnumbered: unnumbered?,
            mtu: mtu?,
            vrf: vrf?,
            group: group?,
            protection: protection?,
            qdisc: qdisc?,
            routes: routes?,
        })
    }
}

/// What earlier tunnels hold, to refuse a later one that could not be told apart from them.
#[derive(Default)]
struct Ambiguity {
    /// (source as written, destination, front-door VRF, accepted identities) → tunnel.
    peers: HashMap<(String, IpAddr, Option<String>, String), String>,
    /// (inside VRF, inner address) → tunnel.
    inners: HashMap<(Option<String>, IpAddr), String>,
    /// (inside VRF, prefix, metric) → tunnel.
    routes: HashMap<(Option<String>, IpNet, Option<u32>), String>,
}

fn in_vrf(vrf: &Option<String>) -> String {
    vrf.as_ref().map_or_else(
        || " in the main table".to_owned(),
        |v| format!(" in vrf {v}"),
    )
}

/// Facts gathered from earlier sections that tunnel and template checks need.
struct VtiChecks {
    /// Transform sets in transport mode.
    transport_sets: BTreeSet<String>,
    /// IKE profiles that clone a virtual template.
    dvti_profiles: BTreeSet<String>,
    /// Every keyring converted, so "no keyring entry" is not a follow-on error.
    all_keyrings_ok: bool,
}

/// The shared copy of `map[name]`, made on first use.
fn shared<T: Clone>(
    arcs: &mut HashMap<String, Arc<T>>,
    map: &BTreeMap<String, T>,
    name: &str,
) -> Option<Arc<T>> {
    if let Some(a) = arcs.get(name) {
        return Some(a.clone());
    }
    let a = Arc::new(map.get(name)?.clone());
    arcs.insert(name.to_owned(), a.clone());
    Some(a)
}

fn auth_name(m: AuthMethod) -> &'static str {
    AUTH_METHODS
        .iter()
        .find(|(_, x)| *x == m)
        .map_or("?", |(n, _)| n)
}

/// The keyring with the most specific address entry for `addr`, with that entry.
fn keyring_for_address(c: &Config, addr: IpAddr) -> Option<(&String, &Keyring, &KeyringPeer)> {
    c.keyrings
        .iter()
        .filter_map(|(name, k)| {
            let entry = k.find_by_address(addr)?;
            match &entry.peer {
                PeerMatch::Address(net) => Some((net.prefix_len(), (name, k, entry))),
                PeerMatch::Identity(_) => None,
            }
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, x)| x)
}

/// The IKE profile of a tunnel that names none: PSK both ways with the keyring entry for its
/// destination, the destination's address as the only accepted identity, our address as
/// ours, the built-in proposal (Cisco's IKEv2 smart defaults do the same).
fn derived_profile(
    destination: IpAddr,
    keyring_name: &str,
    keyring: Arc<Keyring>,
    fvrf: Option<VrfRef>,
) -> IkeProfile {
    IkeProfile {
        match_identity: vec![IdentityMatch::Address(IpNet::from(destination))],
        local_identity: LocalIdentity::Address,
        local_auth: AuthMethod::Psk,
        remote_auth: vec![AuthMethod::Psk],
        keyring: Some(keyring_name.to_owned()),
        trustpoint: None,
        dpd: None,
        mobike: true,
        local: None,
        virtual_template: None,
        proposals: Vec::new(),
        fvrf,
        lifetime_seconds: DEFAULT_IKE_LIFETIME,
        version: 2,
        aggressive: false,
        proposal_specs: vec![IkeProposalSpec::builtin_default()],
        remote_id: ike::IdMatch::Exact(ike::wire::Identity::from_ip(destination)),
        local_id: None,
        credentials: ProfileCredentials::Psk(keyring_name.to_owned(), keyring),
        template: None,
    }
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// True when `s` was probably meant as an address (digits and dots, or contains ':'), so a
/// malformed one is reported as a bad address rather than a bad interface name.
fn looks_like_ip(s: &str) -> bool {
    s.contains(':') || (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Linux interface name rules (`dev_valid_name` in net/core/dev.c): 1 to 15 bytes, not `.`
/// or `..`, no `/`, `:` or whitespace.
pub(crate) fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 15 {
        return Err("Linux limits interface names to 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are reserved");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("it may not contain '/', ':' or whitespace");
    }
    Ok(())
}

/// `fqdn:NAME`, `email:ADDR`, `dn:DN`, `address:IP` or a bare IP address.
fn parse_identity(s: &str) -> Result<Identity, String> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(Identity::Address(a));
    }
    let Some((kind, value)) = s.split_once(':') else {
        return Err(format!(
            "\"{s}\" is not an identity; expected an IP address or fqdn:NAME, email:ADDR, \
             dn:DN, address:IP"
        ));
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("\"{s}\" has an empty {kind}"));
    }
    match kind {
        "fqdn" => Ok(Identity::Fqdn(value.to_owned())),
        "email" => Ok(Identity::Email(value.to_owned())),
        "dn" => Ok(Identity::Dn(value.to_owned())),
        "address" => value
            .parse()
            .map(Identity::Address)
            .map_err(|_| format!("\"{value}\" is not an IP address")),
        _ => Err(format!(
            "unknown identity type \"{kind}\"{}; expected fqdn, email, dn or address",
            suggestion(kind, ["fqdn", "email", "dn", "address"])
        )),
    }
}

/// `any`, an address or prefix (bare or `address:`), `fqdn:`, `email:` or `dn:`.
fn parse_identity_match(s: &str) -> Result<IdentityMatch, String> {
    if s == "any" {
        return Ok(IdentityMatch::Any);
    }
    let addr = s.strip_prefix("address:").unwrap_or(s);
    if let Ok(a) = addr.parse::<IpAddr>() {
        return Ok(IdentityMatch::Address(IpNet::from(a)));
    }
    if let Ok(n) = addr.parse::<IpNet>() {
        if n.trunc() != n {
            return Err(format!(
                "\"{addr}\" has host bits set (did you mean \"{}\"?)",
                n.trunc()
            ));
        }
        return Ok(IdentityMatch::Address(n));
    }
    match parse_identity(s) {
        Ok(Identity::Fqdn(f)) => Ok(IdentityMatch::Fqdn(f)),
        Ok(Identity::Email(e)) => Ok(IdentityMatch::Email(e)),
        Ok(Identity::Dn(d)) => Ok(IdentityMatch::Dn(d)),
        Ok(Identity::Address(a)) => Ok(IdentityMatch::Address(IpNet::from(a))),
        // "kind:value" with a mistyped kind: the identity parser's message names the kind.
        Err(e) if s.contains(':') => Err(e),
        Err(_) => Err(format!(
            "\"{s}\" is not an identity pattern; expected \"any\", an address or prefix, or \
             fqdn:NAME, email:ADDR, dn:DN"
        )),
    }
}

/// Converts every item of a list, so that each bad one reports its own error (a broken config
/// is rejected whole, every mistake listed); clears `ok` if any failed and returns the rest.
fn each<T, U>(items: &[T], ok: &mut bool, mut convert: impl FnMut(&T) -> Option<U>) -> Vec<U> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match convert(item) {
            Some(u) => out.push(u),
            None => *ok = false,
        }
    }
    out
}
