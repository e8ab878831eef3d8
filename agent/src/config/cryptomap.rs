//! `[access_list.NAME]` and `[crypto_map.NAME]`: policy-based IPsec, checked with the rules
//! the seeds give for crypto maps (seed digest F-B5 to F-B8, F-E1 to F-E4).

use std::collections::{BTreeMap, BTreeSet};

use super::super::acl::{self, AclEntry};
use std::sync::Arc;

use super::super::{
    Credentials, CryptoMap, CryptoMapEntry, DynamicEntry, EntryKind, LocalTermination, ManualKey,
    ManualSa, MapPeer, PeerMatch, ProfileCredentials,
};
use super::{Config, Cx, MAX_TRANSFORM_SETS, Named, derived_profile, keyring_for_address, raw};

/// Sequence numbers IOS accepts for crypto map entries.
const SEQ: (i64, i64) = (1, 65_535);
/// Peers one entry may list (`set peer` repeated).
const MAX_PEERS: usize = 8;

impl Cx<'_> {
    pub(super) fn access_list(&mut self, n: &Named<raw::AccessList>) -> Option<Vec<AclEntry>> {
        let path = format!("access_list.{}", n.name);
        let mut ok = true;
        let mut out = Vec::new();
        for (i, e) in n.raw.entries.get_ref().iter().enumerate() {
            match acl::parse(e.get_ref()) {
                Ok(a) => out.push(a),
                Err(why) => {
                    self.err(e.span(), format!("{path}.entries[{i}]: {why}"));
                    ok = false;
                }
            }
        }
        if ok && out.is_empty() {
            self.err(
                n.raw.entries.span(),
                format!("{path}.entries: empty; a crypto ACL needs at least one permit entry"),
            );
            ok = false;
        }
        ok.then_some(out)
    }

    pub(super) fn crypto_map(
        &mut self,
        n: &Named<raw::CryptoMap>,
        c: &Config,
        transport_sets: &BTreeSet<String>,
    ) -> Option<CryptoMap> {
        let path = format!("crypto_map.{}", n.name);
        let r = &n.raw;
        let mut ok = true;
        let local = match (&r.local_address, &r.interface) {
            (Some(_), Some(i)) => {
                self.err(
                    i.span(),
                    format!("{path}: set either local_address or interface, not both"),
                );
                None
            }
            (Some(a), None) => self
                .ip(a, &format!("{path}.local_address"))
                .map(LocalTermination::Address),
            (None, Some(i)) => self
                .ifname(i.get_ref(), i.span(), &format!("{path}.interface"))
                .map(LocalTermination::Interface),
            (None, None) => {
                self.err(
                    n.span.clone(),
                    format!(
                        "{path}: needs interface = \"IFACE\" (the interface the map is applied \
                         to) or local_address = \"ADDRESS\""
                    ),
                );
                None
            }
        };
        if r.entry.is_empty() {
            self.err(
                n.span.clone(),
                format!("{path}: no entries; add [[{path}.entry]] tables"),
            );
            ok = false;
        }
        let mut entries: Vec<(CryptoMapEntry, std::ops::Range<usize>)> = Vec::new();
        let mut seqs = BTreeMap::new();
        let mut acls = BTreeMap::new();
        for e in &r.entry {
            let span = e.span();
            let e = e.get_ref();
            let Some(seq) = self.u32_in(&e.seq, &format!("{path}.entry.seq"), SEQ) else {
                ok = false;
                continue;
            };
            let epath = format!("{path}.entry[seq {seq}]");
            if seqs.insert(seq, ()).is_some() {
                self.err(
                    e.seq.span(),
                    format!("{epath}: sequence number {seq} is used twice"),
                );
                ok = false;
            }
            match self.entry(&epath, e, span.clone(), c, transport_sets) {
                Some(mut entry) => {
                    entry.seq = seq;
                    // "Different access lists must be used in different entries of the same
                    // crypto map set" (seed F-E2).
                    if !entry.access_list.is_empty()
                        && let Some(other) = acls.insert(entry.access_list.clone(), seq)
                    {
                        self.err(
                            e.match_address
                                .as_ref()
                                .map_or(span.clone(), toml::Spanned::span),
                            format!(
                                "{epath}.match_address: access list \"{}\" is already used by \
                                 entry {other}; each entry of a map needs its own",
                                entry.access_list
                            ),
                        );
                        ok = false;
                    }
                    entries.push((entry, span));
                }
                None => ok = false,
            }
        }
        entries.sort_by_key(|(e, _)| e.seq);
        // A dynamic map answers whatever the entries before it did not: it must come last
        // (seed F-E5: "the lowest priority (highest seq)").
        if let Some(pos) = entries
            .iter()
            .position(|(e, _)| matches!(e.kind, EntryKind::Dynamic { .. }))
            && pos + 1 != entries.len()
        {
            self.err(
                entries[pos].1.clone(),
                format!(
                    "{path}: entry {} refers to a dynamic map and must have the highest \
                     sequence number of the map (entry {} comes after it)",
                    entries[pos].0.seq,
                    entries[pos + 1].0.seq
                ),
            );
            ok = false;
        }
        if ok {
            ok &= self.check_order(&path, &entries);
        }
        let local = local?;
        // The unspecified address answers on any local address: enough for dynamic map
        // entries (the engine learns the address from the peer's packet), not for an entry
        // whose policies and SAs must name our address before any negotiation.
        if let LocalTermination::Address(a) = &local
            && a.is_unspecified()
            && let Some((e, span)) = entries
                .iter()
                .find(|(e, _)| !matches!(e.kind, EntryKind::Dynamic { .. }))
        {
            self.err(
                span.clone(),
                format!(
                    "{path}: entry {} needs the map's own address; local_address = \"{a}\" \
                     (any) only serves dynamic map entries",
                    e.seq
                ),
            );
            ok = false;
        }
        ok.then(|| CryptoMap {
            local,
            entries: entries.into_iter().map(|(e, _)| e).collect(),
        })
    }

    /// One crypto map entry: a dynamic map reference, a manual entry or an IKE one.
    fn entry(
        &mut self,
        path: &str,
        e: &raw::CryptoMapEntry,
        span: std::ops::Range<usize>,
        c: &Config,
        transport_sets: &BTreeSet<String>,
    ) -> Option<CryptoMapEntry> {
        let manual = e.manual.as_ref().is_some_and(|b| *b.get_ref());
        if let Some(d) = &e.dynamic_map {
            return self.dynamic_ref(path, e, d, c);
        }
        if !manual {
            for (k, v) in [
                (
                    "session_key_inbound",
                    e.session_key_inbound.as_ref().map(toml::Spanned::span),
                ),
                (
                    "session_key_outbound",
                    e.session_key_outbound.as_ref().map(toml::Spanned::span),
                ),
            ] {
                if let Some(at) = v {
                    self.err(
                        at,
                        format!("{path}.{k}: session keys belong to manual = true entries"),
                    );
                    return None;
                }
            }
        }
        let mut missing = Vec::new();
        if e.match_address.is_none() {
            missing.push("match_address");
        }
        if e.peers.is_none() {
            missing.push("peers");
        }
        if e.transform_sets.is_none() {
            missing.push("transform_sets");
        }
        if !missing.is_empty() {
            self.err(
                span,
                format!(
                    "{path}: missing {} (or dynamic_map = \"NAME\" for a dynamic map entry)",
                    missing.join(", ")
                ),
            );
            return None;
        }
        let req = Required {
            match_address: e.match_address.as_ref()?,
            peers: e.peers.as_ref()?,
            transform_sets: e.transform_sets.as_ref()?,
        };
        if manual {
            self.manual_entry(path, e, req, span, c)
        } else {
            self.isakmp_entry(path, e, req, c, transport_sets)
        }
    }

    fn isakmp_entry(
        &mut self,
        path: &str,
        e: &raw::CryptoMapEntry,
        req: Required<'_>,
        c: &Config,
        transport_sets: &BTreeSet<String>,
    ) -> Option<CryptoMapEntry> {
        let mut ok = true;
        let access_list = self.reference(
            req.match_address,
            &format!("{path}.match_address"),
            "access_list",
        );
        // An ACL with its own errors was reported there.
        let acl = access_list
            .as_ref()
            .and_then(|a| c.access_lists.get(a))
            .cloned();
        if let (Some(a), Some(entries)) = (&access_list, &acl)
            && !entries.iter().any(|x| x.permit)
        {
            self.err(
                req.match_address.span(),
                format!(
                    "{path}.match_address: access list \"{a}\" has no permit entry: this map \
                     entry would protect nothing"
                ),
            );
            ok = false;
        }
        let mut peers = Vec::new();
        let list = req.peers.get_ref();
        if list.is_empty() || list.len() > MAX_PEERS {
            self.err(
                req.peers.span(),
                format!(
                    "{path}.peers: lists {} peers; expected 1 to {MAX_PEERS}",
                    list.len()
                ),
            );
            ok = false;
        }
        for p in list {
            match self.ip(p, &format!("{path}.peers")) {
                Some(a) if peers.contains(&a) => {
                    self.err(p.span(), format!("{path}.peers: {a} is listed twice"));
                    ok = false;
                }
                Some(a) => peers.push(a),
                None => ok = false,
            }
        }
        if req.transform_sets.get_ref().len() > MAX_TRANSFORM_SETS {
            ok = false;
        }
        let ipsec = self.entry_settings(
            path,
            req.transform_sets,
            e.pfs.as_ref(),
            e.lifetime.as_ref(),
            e.ike_profile.as_ref(),
            c,
            transport_sets,
        );
        // Each peer's IKE profile and key: the entry's profile, else derived from the
        // keyrings as for a tunnel without one.
        let mut resolved = Vec::new();
        let keyrings_ok = c.keyrings.len() == self.count("keyring");
        // `Some(None)`: named, but the name is wrong or the profile has its own errors
        // (reported); `None`: not named, derived per peer.
        let profile = e.ike_profile.as_ref().map(|p| {
            self.reference(p, &format!("{path}.ike_profile"), "ike_profile")
                .and_then(|n| c.ike_profiles.get(&n).cloned().map(|prof| (n, prof)))
        });
        for (p, v) in peers.iter().zip(list) {
            let peer = match &profile {
                Some(Some((pname, prof))) => match &prof.credentials {
                    ProfileCredentials::Psk(kname, keyring) => match keyring.find_by_address(*p) {
                        Some(entry) => {
                            Some((Arc::new(prof.clone()), Credentials::Psk(entry.psk.clone())))
                        }
                        None => {
                            self.err(
                                v.span(),
                                format!(
                                    "{path}.peers: keyring {kname} (of ike_profile {pname}) has \
                                     no peer entry for {p}"
                                ),
                            );
                            None
                        }
                    },
                    ProfileCredentials::Certificate(_, files) => Some((
                        Arc::new(prof.clone()),
                        Credentials::Certificate(files.clone()),
                    )),
                },
                Some(None) => None,
                None => match keyring_for_address(c, *p) {
                    Some((kname, keyring, entry)) => Some((
                        Arc::new(derived_profile(*p, kname, Arc::new(keyring.clone()), None)),
                        Credentials::Psk(entry.psk.clone()),
                    )),
                    None => {
                        if keyrings_ok {
                            self.err(
                                v.span(),
                                format!(
                                    "{path}.peers: no keyring has an entry for {p}; add one or \
                                     set ike_profile"
                                ),
                            );
                        }
                        None
                    }
                },
            };
            match peer {
                Some((ike, credentials)) => resolved.push(MapPeer {
                    addr: *p,
                    ike,
                    credentials,
                }),
                None => ok = false,
            }
        }
        // IKEv1 negotiates a line's selectors as its quick mode IDs; a per-host SA pair would
        // need the packet's host pair instead, which IKEv1 here does not propose.
        if let (Some(Some((pname, prof))), Some(v)) = (&profile, &e.per_host)
            && prof.version == 1
            && *v.get_ref()
        {
            self.err(
                v.span(),
                format!(
                    "{path}.per_host: not supported over IKEv1 (ike_profile {pname} has \
                     version = 1): each ACL line gets one SA pair for its own selectors"
                ),
            );
            ok = false;
        }
        let metric = self.reverse_route(path, e.reverse_route_metric.as_ref());
        let rri = e.reverse_route.as_ref().is_some_and(|b| *b.get_ref());
        if rri
            && let Some(entries) = &acl
            && entries.iter().any(|x| x.permit && x.dst.prefix_len() == 0)
        {
            // Seed F-B8: "any in ACLs with reverse route injection is not supported" — it
            // would route everything to the peer.
            self.err(
                e.reverse_route.as_ref().map_or(0..0, toml::Spanned::span),
                format!(
                    "{path}.reverse_route: the ACL permits traffic to any destination; a \
                     reverse route to 0/0 would take the default route"
                ),
            );
            ok = false;
        }
        let (access_list, acl, ipsec, metric) = (access_list?, acl?, ipsec?, metric?);
        ok.then(|| CryptoMapEntry {
            seq: 0,
            access_list,
            acl,
            peers: resolved,
            ipsec,
            per_host: e.per_host.as_ref().is_some_and(|b| *b.get_ref()),
            reverse_route: rri.then_some(metric),
            initiate: e.initiate.as_ref().is_some_and(|b| *b.get_ref()),
            kind: EntryKind::Isakmp,
        })
    }

    /// An entry's transform sets, PFS group and lifetimes (IOS writes them on the entry) as an
    /// IPsec profile. Transport-mode sets are refused: a crypto map entry's SAs carry whole
    /// packets between networks behind the peers (transport would need every ACL line to be
    /// between the two peers' own addresses).
    #[allow(clippy::too_many_arguments)]
    fn entry_settings(
        &mut self,
        path: &str,
        sets: &toml::Spanned<Vec<raw::SStr>>,
        pfs: Option<&toml::Spanned<raw::GroupValue>>,
        lifetime: Option<&toml::Spanned<raw::Lifetime>>,
        ike_profile: Option<&raw::SStr>,
        c: &Config,
        transport_sets: &BTreeSet<String>,
    ) -> Option<super::super::IpsecProfile> {
        let mut ok = true;
        for t in sets.get_ref() {
            if transport_sets.contains(t.get_ref()) {
                self.err(
                    t.span(),
                    format!(
                        "{path}.transform_sets: \"{}\" is mode = \"transport\"; crypto map \
                         entries run in tunnel mode",
                        t.get_ref()
                    ),
                );
                ok = false;
            }
        }
        let settings = raw::IpsecProfile {
            transform_sets: sets.clone(),
            pfs: pfs.map(clone_group),
            pfs_additional_key_exchanges: Vec::new(),
            lifetime: lifetime.map(|l| {
                toml::Spanned::new(
                    l.span(),
                    raw::Lifetime {
                        seconds: l.get_ref().seconds.clone(),
                        kilobytes: l.get_ref().kilobytes.clone(),
                    },
                )
            }),
            offload: None,
            ike_profile: ike_profile.cloned(),
        };
        let ipsec = self.ipsec_settings(path, &settings, &c.transform_sets);
        ipsec.filter(|_| ok)
    }

    /// `reverse_route_metric` (0 when absent), checked.
    fn reverse_route(&mut self, path: &str, metric: Option<&toml::Spanned<i64>>) -> Option<u32> {
        match metric {
            Some(m) => self.u32_in(
                m,
                &format!("{path}.reverse_route_metric"),
                (0, i64::from(u32::MAX)),
            ),
            None => Some(0),
        }
    }

    /// The seeds' ordering rules across the entries of one map.
    fn check_order(
        &mut self,
        path: &str,
        entries: &[(CryptoMapEntry, std::ops::Range<usize>)],
    ) -> bool {
        let mut ok = true;
        for (i, (later, span)) in entries.iter().enumerate() {
            for (earlier, _) in &entries[..i] {
                for l in later.acl.iter().filter(|x| x.permit) {
                    for e in &earlier.acl {
                        // F-B6: a deny in one entry and a permit of the same flow in a later
                        // entry "is not supported" by IOS; in one ordered SPD the deny's
                        // bypass would shadow the permit.
                        if !e.permit && l.within(e) {
                            self.err(
                                span.clone(),
                                format!(
                                    "{path}: entry {} permits \"{l}\", which entry {} denies \
                                     (\"{e}\"); a deny in one entry and a permit of the same \
                                     traffic in another is not supported (IOS neither): move \
                                     the permit into entry {} before the deny",
                                    later.seq, earlier.seq, earlier.seq
                                ),
                            );
                            ok = false;
                        }
                        // F-B5: the more specific network must be in the lower sequence number,
                        // or the broader entry takes its traffic.
                        if e.permit && l.within(e) && l != e {
                            self.err(
                                span.clone(),
                                format!(
                                    "{path}: entry {} permits \"{l}\", inside entry {}'s \"{e}\", \
                                     which is evaluated first and takes that traffic: give the \
                                     more specific entry the lower sequence number",
                                    later.seq, earlier.seq
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
        }
        ok
    }
}

fn clone_group(g: &toml::Spanned<raw::GroupValue>) -> toml::Spanned<raw::GroupValue> {
    let v = match g.get_ref() {
        raw::GroupValue::Num(n) => raw::GroupValue::Num(*n),
        raw::GroupValue::Name(s) => raw::GroupValue::Name(s.clone()),
        raw::GroupValue::Bool(b) => raw::GroupValue::Bool(*b),
    };
    toml::Spanned::new(g.span(), v)
}

/// Warnings for a configuration that is valid but hazardous (printed by `vtid check`): the
/// seeds' `any` guidance (F-B8).
pub fn warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (name, m) in &c.crypto_maps {
        for e in &m.entries {
            for a in e.acl.iter().filter(|a| a.permit && a.has_any()) {
                out.push(format!(
                    "crypto_map.{name} entry {}: \"{a}\" uses any: every matching packet goes \
                     to {} and every matching packet that arrives unprotected is dropped \
                     (routing protocols, NTP, ping included); put deny entries before it for \
                     what must stay in clear, or use a VTI",
                    e.seq,
                    e.peers
                        .first()
                        .map_or_else(String::new, |p| p.addr.to_string())
                ));
            }
        }
    }
    out
}

/// The keys an IKE or manual entry cannot do without, once checked present.
struct Required<'a> {
    match_address: &'a raw::SStr,
    peers: &'a toml::Spanned<Vec<raw::SStr>>,
    transform_sets: &'a toml::Spanned<Vec<raw::SStr>>,
}

/// The optional keys a crypto map entry sets, with their positions.
fn set_keys(e: &raw::CryptoMapEntry) -> Vec<(&'static str, std::ops::Range<usize>)> {
    [
        (
            "match_address",
            e.match_address.as_ref().map(toml::Spanned::span),
        ),
        ("peers", e.peers.as_ref().map(toml::Spanned::span)),
        (
            "transform_sets",
            e.transform_sets.as_ref().map(toml::Spanned::span),
        ),
        ("pfs", e.pfs.as_ref().map(toml::Spanned::span)),
        ("lifetime", e.lifetime.as_ref().map(toml::Spanned::span)),
        (
            "ike_profile",
            e.ike_profile.as_ref().map(toml::Spanned::span),
        ),
        ("per_host", e.per_host.as_ref().map(toml::Spanned::span)),
        (
            "reverse_route",
            e.reverse_route.as_ref().map(toml::Spanned::span),
        ),
        (
            "reverse_route_metric",
            e.reverse_route_metric.as_ref().map(toml::Spanned::span),
        ),
        ("initiate", e.initiate.as_ref().map(toml::Spanned::span)),
        ("manual", e.manual.as_ref().map(toml::Spanned::span)),
        (
            "session_key_inbound",
            e.session_key_inbound.as_ref().map(toml::Spanned::span),
        ),
        (
            "session_key_outbound",
            e.session_key_outbound.as_ref().map(toml::Spanned::span),
        ),
    ]
    .into_iter()
    .filter_map(|(k, at)| at.map(|at| (k, at)))
    .collect()
}

/// Key bytes a manual SA needs for its cipher (the kernel's `rfc4106(gcm(aes))` and
/// `rfc7539esp(chacha20,poly1305)` take the 4-byte salt after the key, RFC 4106 §8.1,
/// RFC 7634 §2) and for its authenticator (the HMAC key is the hash's output length, RFC 4868
/// §2.1.1, RFC 2404).
fn key_lengths(ts: &super::super::TransformSet) -> (usize, Option<usize>) {
    use ike::transform::{Encr, Integ};
    let cipher = match ts.esp {
        Encr::AesGcm16 { key_bits } => usize::from(key_bits) / 8 + 4,
        Encr::AesCbc { key_bits } => usize::from(key_bits) / 8,
        Encr::TripleDes => 24,
        Encr::ChaCha20Poly1305 => 36,
    };
    let auth = ts.integrity.map(|i| match i {
        Integ::HmacSha1_96 => 20,
        Integ::HmacSha256_128 => 32,
        Integ::HmacSha384_192 => 48,
        Integ::HmacSha512_256 => 64,
    });
    (cipher, auth)
}

/// Decodes a key file's hex (whitespace and a leading `0x` ignored).
fn hex_key(text: &[u8]) -> Result<Vec<u8>, String> {
    let s: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let s = s.strip_prefix(b"0x").unwrap_or(&s);
    if s.len() % 2 != 0 {
        return Err("has an odd number of hex digits".into());
    }
    s.chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "is not hexadecimal".to_owned())
        })
        .collect()
}

impl Cx<'_> {
    /// Reports each of `keys` that `e` sets as out of place (`why`); true when none is set.
    fn refuse_keys(
        &mut self,
        path: &str,
        e: &raw::CryptoMapEntry,
        keys: &[&str],
        why: &str,
    ) -> bool {
        let mut ok = true;
        for (k, at) in set_keys(e) {
            if keys.contains(&k) {
                self.err(at, format!("{path}.{k}: {why}"));
                ok = false;
            }
        }
        ok
    }

    /// `dynamic_map = "NAME"` on a crypto map entry: nothing else may be set on it.
    fn dynamic_ref(
        &mut self,
        path: &str,
        e: &raw::CryptoMapEntry,
        d: &raw::SStr,
        c: &Config,
    ) -> Option<CryptoMapEntry> {
        let ok = self.refuse_keys(
            path,
            e,
            &[
                "match_address",
                "peers",
                "transform_sets",
                "pfs",
                "lifetime",
                "ike_profile",
                "per_host",
                "reverse_route",
                "reverse_route_metric",
                "initiate",
                "manual",
                "session_key_inbound",
                "session_key_outbound",
            ],
            "an entry with dynamic_map takes its settings from the dynamic map",
        );
        let name = self.reference(d, &format!("{path}.dynamic_map"), "dynamic_map")?;
        // A dynamic map with its own errors was reported there.
        let entries = c.dynamic_maps.get(&name)?.clone();
        let ipsec = entries.first()?.ipsec.clone();
        ok.then(|| CryptoMapEntry {
            seq: 0,
            access_list: String::new(),
            acl: Vec::new(),
            peers: Vec::new(),
            ipsec,
            per_host: false,
            reverse_route: None,
            initiate: false,
            kind: EntryKind::Dynamic { name, entries },
        })
    }

    /// `manual = true`: one peer, one transform set, an ACL of one permit line, and both
    /// directions' SPIs and keys (seed F-E9).
    fn manual_entry(
        &mut self,
        path: &str,
        e: &raw::CryptoMapEntry,
        req: Required<'_>,
        span: std::ops::Range<usize>,
        c: &Config,
    ) -> Option<CryptoMapEntry> {
        let mut ok = self.refuse_keys(
            path,
            e,
            &["pfs", "lifetime", "ike_profile", "per_host", "initiate"],
            "a manual entry negotiates nothing; remove it",
        );
        let access_list = self.reference(
            req.match_address,
            &format!("{path}.match_address"),
            "access_list",
        );
        let acl = access_list
            .as_ref()
            .and_then(|a| c.access_lists.get(a))
            .cloned();
        if let Some(lines) = &acl
            && (lines.len() != 1 || !lines[0].permit)
        {
            self.err(
                req.match_address.span(),
                format!(
                    "{path}.match_address: a manual entry's ACL holds exactly one permit line \
                     (IOS ignores the rest, seed F-E9); it has {}",
                    lines.len()
                ),
            );
            ok = false;
        }
        let peers = req.peers.get_ref();
        let peer = if peers.len() == 1 {
            self.ip(&peers[0], &format!("{path}.peers"))
        } else {
            self.err(
                req.peers.span(),
                format!("{path}.peers: a manual entry has exactly one peer"),
            );
            None
        };
        let sets = req.transform_sets.get_ref();
        let ts = if sets.len() == 1 {
            self.reference(&sets[0], &format!("{path}.transform_sets"), "transform_set")
                .and_then(|n| c.transform_sets.get(&n).cloned().map(|t| (n, t)))
        } else {
            self.err(
                req.transform_sets.span(),
                format!("{path}.transform_sets: a manual entry has exactly one transform set"),
            );
            None
        };
        let (Some(ki), Some(ko)) = (&e.session_key_inbound, &e.session_key_outbound) else {
            self.err(
                span,
                format!(
                    "{path}: a manual entry needs session_key_inbound and session_key_outbound"
                ),
            );
            return None;
        };
        let (access_list, acl, peer, (ts_name, ts)) = (access_list?, acl?, peer?, ts?);
        if ts.mode == super::super::SaMode::Transport {
            self.err(
                sets[0].span(),
                format!("{path}.transform_sets: crypto map entries run in tunnel mode"),
            );
            ok = false;
        }
        let lens = key_lengths(&ts);
        let inbound = self.manual_key(&format!("{path}.session_key_inbound"), ki.get_ref(), lens);
        let outbound = self.manual_key(&format!("{path}.session_key_outbound"), ko.get_ref(), lens);
        let (inbound, outbound) = (inbound?, outbound?);
        let ipsec = super::super::IpsecProfile {
            transform_sets: vec![ts_name],
            sets: vec![ts],
            pfs: None,
            pfs_addke: ike::transform::AddKes::NONE,
            lifetime: super::super::SaLifetime::default(),
            offload: super::super::Offload::Off,
            ike_profile: None,
        };
        let metric = self.reverse_route(path, e.reverse_route_metric.as_ref());
        let rri = e.reverse_route.as_ref().is_some_and(|b| *b.get_ref());
        ok.then(|| CryptoMapEntry {
            seq: 0,
            access_list,
            acl,
            peers: Vec::new(),
            ipsec,
            per_host: false,
            reverse_route: rri.then_some(metric.unwrap_or(0)),
            initiate: false,
            kind: EntryKind::Manual(ManualSa {
                peer,
                inbound,
                outbound,
            }),
        })
    }

    /// One direction of a manual SA: SPI range and key files of the lengths the transform
    /// needs (read only when files are read).
    fn manual_key(
        &mut self,
        path: &str,
        k: &raw::SessionKey,
        (cipher_len, auth_len): (usize, Option<usize>),
    ) -> Option<ManualKey> {
        // SPIs 1-255 are reserved by IANA (RFC 4303 §2.1); 0 means none.
        let spi = self.u32_in(&k.spi, &format!("{path}.spi"), (256, i64::from(u32::MAX)));
        let mut ok = spi.is_some();
        let cipher_file = self.path_buf(&k.cipher_file, &format!("{path}.cipher_file"));
        let auth_file = match (&k.authenticator_file, auth_len) {
            (Some(f), Some(_)) => self
                .path_buf(f, &format!("{path}.authenticator_file"))
                .map(Some),
            (None, None) => Some(None),
            (Some(f), None) => {
                self.err(
                    f.span(),
                    format!("{path}.authenticator_file: the transform is AEAD; it has no authenticator key"),
                );
                None
            }
            (None, Some(n)) => {
                self.err(
                    k.spi.span(),
                    format!(
                        "{path}: authenticator_file missing ({n} bytes for the transform's HMAC)"
                    ),
                );
                None
            }
        };
        let read = |cx: &mut Self, f: &std::path::Path, v: &raw::SStr, want: usize, what: &str| {
            if !cx.opts.read_files {
                return Some(None);
            }
            match super::secret::read_psk(f, cx.opts.secret_owner_uid).and_then(|raw| {
                hex_key(raw.expose()).map_err(|e| format!("\"{}\" {e}", f.display()))
            }) {
                Ok(bytes) if bytes.len() == want => Some(Some(super::super::Psk::new(bytes))),
                Ok(bytes) => {
                    cx.err(
                        v.span(),
                        format!(
                            "{path}.{what}: the key is {} bytes; the transform needs {want}",
                            bytes.len()
                        ),
                    );
                    None
                }
                Err(why) => {
                    cx.err(v.span(), format!("{path}.{what}: {why}"));
                    None
                }
            }
        };
        let cipher = match &cipher_file {
            Some(f) => read(self, f, &k.cipher_file, cipher_len, "cipher_file"),
            None => None,
        };
        let authenticator = match (&auth_file, &k.authenticator_file, auth_len) {
            (Some(Some(f)), Some(v), Some(n)) => read(self, f, v, n, "authenticator_file"),
            (Some(None), _, _) => Some(None),
            _ => None,
        };
        ok &= cipher.is_some() && authenticator.is_some() && cipher_file.is_some();
        ok.then(|| ManualKey {
            spi: spi.unwrap_or(0),
            cipher_file: cipher_file.unwrap_or_default(),
            cipher: cipher.flatten(),
            authenticator_file: auth_file.flatten(),
            authenticator: authenticator.flatten(),
        })
    }

    /// `[dynamic_map.NAME]`.
    pub(super) fn dynamic_map(
        &mut self,
        n: &Named<raw::DynamicMap>,
        c: &Config,
        transport_sets: &BTreeSet<String>,
    ) -> Option<Vec<DynamicEntry>> {
        let path = format!("dynamic_map.{}", n.name);
        let mut ok = true;
        if n.raw.entry.is_empty() {
            self.err(
                n.span.clone(),
                format!("{path}: no entries; add [[{path}.entry]] tables"),
            );
            return None;
        }
        let mut out: Vec<DynamicEntry> = Vec::new();
        for e in &n.raw.entry {
            let e = e.get_ref();
            let Some(seq) = self.u32_in(&e.seq, &format!("{path}.entry.seq"), SEQ) else {
                ok = false;
                continue;
            };
            let epath = format!("{path}.entry[seq {seq}]");
            if out.iter().any(|x| x.seq == seq) {
                self.err(
                    e.seq.span(),
                    format!("{epath}: sequence number {seq} is used twice"),
                );
                ok = false;
            }
            let (access_list, acl) = match &e.match_address {
                Some(m) => {
                    let a = self.reference(m, &format!("{epath}.match_address"), "access_list");
                    let lines = a.as_ref().and_then(|a| c.access_lists.get(a)).cloned();
                    match (a, lines) {
                        (Some(a), Some(l)) => (Some(a), Some(l)),
                        _ => {
                            ok = false;
                            (None, None)
                        }
                    }
                }
                None => (None, None),
            };
            let ipsec = self.entry_settings(
                &epath,
                &e.transform_sets,
                e.pfs.as_ref(),
                e.lifetime.as_ref(),
                None,
                c,
                transport_sets,
            );
            let ike_profile = self.reference(
                &e.ike_profile,
                &format!("{epath}.ike_profile"),
                "ike_profile",
            );
            let ike = ike_profile
                .as_ref()
                .and_then(|p| c.ike_profiles.get(p))
                .cloned();
            // Main mode with pre-shared keys picks the key by the peer's address before it
            // sees an identity (RFC 2409 §5.4): an IKEv1 dynamic map, like an IKEv1 template,
            // needs a keyring keyed by address (the IOS `address 0.0.0.0 0.0.0.0`).
            if let Some(p) = &ike
                && p.version == 1
                && let ProfileCredentials::Psk(kname, ring) = &p.credentials
                && let Some(i) = ring
                    .peers
                    .iter()
                    .position(|k| matches!(k.peer, PeerMatch::Identity(_)))
            {
                self.err(
                    e.ike_profile.span(),
                    format!(
                        "{epath}.ike_profile: keyring.{kname}.peer[{i}] is keyed by identity, \
                         but IKEv1 main mode picks the pre-shared key by the peer's address \
                         (RFC 2409 §5.4); use address = \"PREFIX\" (e.g. \"0.0.0.0/0\") in a \
                         keyring for a version = 1 profile"
                    ),
                );
                ok = false;
            }
            if let Some(p) = &ike
                && p.virtual_template.is_some()
            {
                self.err(
                    e.ike_profile.span(),
                    format!("{epath}.ike_profile: that profile clones a virtual template; a dynamic map needs its own"),
                );
                ok = false;
            }
            let metric = self.reverse_route(&epath, e.reverse_route_metric.as_ref());
            let rri = e.reverse_route.as_ref().is_some_and(|b| *b.get_ref());
            match (ipsec, ike_profile, ike, metric) {
                (Some(ipsec), Some(ike_profile), Some(ike), Some(metric)) => {
                    out.push(DynamicEntry {
                        seq,
                        access_list,
                        acl,
                        ipsec,
                        ike_profile,
                        ike: Arc::new(ike),
                        reverse_route: rri.then_some(metric),
                    })
                }
                _ => ok = false,
            }
        }
        out.sort_by_key(|e| e.seq);
        ok.then_some(out)
    }
}
