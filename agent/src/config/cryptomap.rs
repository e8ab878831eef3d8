//! `[access_list.NAME]` and `[crypto_map.NAME]`: policy-based IPsec, checked with the rules
//! the seeds give for crypto maps (seed digest F-B5 to F-B8, F-E1 to F-E4).

use std::collections::{BTreeMap, BTreeSet};

use super::super::acl::{self, AclEntry};
use std::sync::Arc;

use super::super::{
    Credentials, CryptoMap, CryptoMapEntry, LocalTermination, MapPeer, ProfileCredentials,
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
            match self.entry(&epath, e, c, transport_sets) {
                Some(mut entry) => {
                    entry.seq = seq;
                    // "Different access lists must be used in different entries of the same
                    // crypto map set" (seed F-E2).
                    if let Some(other) = acls.insert(entry.access_list.clone(), seq) {
                        self.err(
                            e.match_address.span(),
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
        if ok {
            ok &= self.check_order(&path, &entries);
        }
        let local = local?;
        ok.then(|| CryptoMap {
            local,
            entries: entries.into_iter().map(|(e, _)| e).collect(),
        })
    }

    fn entry(
        &mut self,
        path: &str,
        e: &raw::CryptoMapEntry,
        c: &Config,
        transport_sets: &BTreeSet<String>,
    ) -> Option<CryptoMapEntry> {
        let mut ok = true;
        let access_list = self.reference(
            &e.match_address,
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
                e.match_address.span(),
                format!(
                    "{path}.match_address: access list \"{a}\" has no permit entry: this map \
                     entry would protect nothing"
                ),
            );
            ok = false;
        }
        let mut peers = Vec::new();
        let list = e.peers.get_ref();
        if list.is_empty() || list.len() > MAX_PEERS {
            self.err(
                e.peers.span(),
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
        if e.transform_sets.get_ref().len() > MAX_TRANSFORM_SETS {
            ok = false;
        }
        for t in e.transform_sets.get_ref() {
            if transport_sets.contains(t.get_ref()) {
                self.err(
                    t.span(),
                    format!(
                        "{path}.transform_sets: \"{}\" is mode = \"transport\"; crypto map \
                         entries run in tunnel mode (transport would need every ACL entry to be \
                         between the two peers' own addresses)",
                        t.get_ref()
                    ),
                );
                ok = false;
            }
        }
        let settings = raw::IpsecProfile {
            transform_sets: e.transform_sets.clone(),
            pfs: e.pfs.as_ref().map(clone_group),
            lifetime: e.lifetime.as_ref().map(|l| {
                toml::Spanned::new(
                    l.span(),
                    raw::Lifetime {
                        seconds: l.get_ref().seconds.clone(),
                        kilobytes: l.get_ref().kilobytes.clone(),
                    },
                )
            }),
            offload: None,
            ike_profile: e.ike_profile.clone(),
        };
        let ipsec = self.ipsec_settings(path, &settings, &c.transform_sets);
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
        let metric = match &e.reverse_route_metric {
            Some(m) => self.u32_in(
                m,
                &format!("{path}.reverse_route_metric"),
                (0, i64::from(u32::MAX)),
            ),
            None => Some(0),
        };
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
        })
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
