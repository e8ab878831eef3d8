//! The vtid sections written from the gathered IOS model, in the order a person reads a
//! vtid file: global, VRFs, keyrings, IKE proposals and profiles, transform sets, IPsec
//! profiles, virtual templates, tunnels; then every line that was not imported.
//!
//! Algorithm names are checked against the tables `vtid check` uses (`config::algo`), so an
//! imported name is one the checker accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use super::model::{Interface, Ios, KeyEntry, MapEntry, MapKind, PeerRef, TunnelMode};
use super::{KeyFile, Notes, Options, Why};
use crate::config::acl::AclEntry;
use crate::config::algo;

/// True for a cipher name vtid implements.
pub fn encr_known(name: &str) -> bool {
    algo::lookup(algo::ENCR, name).is_some()
}

/// True for an integrity (or PRF) name vtid implements.
pub fn integ_known(name: &str) -> bool {
    algo::lookup(algo::INTEG, name).is_some()
}

/// True for a DH group number vtid implements.
pub fn group_known(g: u16) -> bool {
    algo::group_by_name(&g.to_string()).is_some()
}

/// Names behind `allow_legacy` (3DES, SHA-1, group 2), as vtid's checker decides.
fn legacy(encr: &[String], integ: &[String], groups: &[u16]) -> bool {
    encr.iter()
        .any(|e| algo::lookup(algo::ENCR, e).is_some_and(|e| e.is_legacy()))
        || integ
            .iter()
            .any(|i| algo::lookup(algo::INTEG, i).is_some_and(algo::integ_is_legacy))
        || groups
            .iter()
            .any(|g| algo::group_by_name(&g.to_string()).is_some_and(|g| g.is_legacy()))
}

/// One TOML section with the input lines it came from (their notes print above it).
struct Section {
    header: String,
    lines: Vec<String>,
    from: Vec<usize>,
}

impl Section {
    fn new(header: String, from: Vec<usize>) -> Self {
        Self {
            header,
            lines: Vec::new(),
            from,
        }
    }

    fn kv(&mut self, key: &str, value: String) -> &mut Self {
        self.lines.push(format!("{key} = {value}"));
        self
    }
}

/// Writes `text` as `#` comment lines of at most 100 columns, continuation lines indented.
fn wrap_comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 100 && line.len() > 4 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#  ");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A list of TOML strings.
fn qlist<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<String> = items.iter().map(|s| q(s.as_ref())).collect();
    format!("[{}]", v.join(", "))
}

/// A table key: bare when TOML allows it, quoted otherwise.
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        q(name)
    }
}

/// A file name piece from an IOS object name.
fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

struct Emitter<'a> {
    ios: &'a Ios,
    opts: &'a Options,
    spans: &'a BTreeMap<usize, Vec<usize>>,
    sections: Vec<Section>,
    keys: Vec<KeyFile>,
    legacy: bool,
    /// Interfaces named in the output under their IOS name (no `--map`).
    unmapped: BTreeMap<String, usize>,
}

/// Writes the TOML and collects the key files.
pub fn emit(
    ios: &Ios,
    opts: &Options,
    spans: &BTreeMap<usize, Vec<usize>>,
    notes: &mut Notes,
) -> (String, Vec<KeyFile>, BTreeSet<usize>) {
    let mut e = Emitter {
        ios,
        opts,
        spans,
        sections: Vec::new(),
        keys: Vec::new(),
        legacy: false,
        unmapped: BTreeMap::new(),
    };
    let vrfs = e.vrfs(notes);
    let keyrings = e.keyrings(notes);
    let (v1_props, v2_props, v1_auth) = e.proposals(notes);
    let templates = e.template_names(notes);
    let vti_sets = e.sets_used_by_vtis();
    let map_sets = e.sets_used_by_maps();
    let ike = e.ike_profiles(notes, &keyrings, &v1_props, &v2_props, v1_auth, &templates);
    e.transform_sets(notes, &vti_sets, &map_sets);
    let ipsec = e.ipsec_profiles(notes, &ike);
    e.virtual_templates(notes, &ipsec, &ike, &vrfs, &templates);
    e.tunnels(
        notes, &ipsec, &ike, &vrfs, &keyrings, &v1_props, &v2_props, v1_auth,
    );
    e.crypto_maps(notes, &ike, &keyrings, &v1_props, &v2_props, v1_auth);
    e.routes_elsewhere(notes);
    for (name, line) in &e.unmapped {
        notes.note(
            *line,
            Why::Decided,
            format!(
                "interface {name} is named as IOS names it; give its Linux name with \
                 --map {name}=NAME (Linux names have at most 15 bytes and no '/')"
            ),
        );
    }
    let covered = e
        .sections
        .iter()
        .flat_map(|s| s.from.iter().copied())
        .collect();
    (e.render(notes), e.keys, covered)
}

impl Emitter<'_> {
    /// The input lines of the block headed at `line`.
    fn span(&self, line: usize) -> Vec<usize> {
        self.spans.get(&line).cloned().unwrap_or_else(|| vec![line])
    }

    /// The Linux name of an IOS interface: `--map`'s, or the IOS name with a note.
    fn ifname(&mut self, ios_name: &str, line: usize) -> String {
        let canon = super::model::canonical_ifname(ios_name);
        if let Some((_, l)) = self
            .opts
            .maps
            .iter()
            .find(|(i, _)| i.eq_ignore_ascii_case(&canon))
        {
            return l.clone();
        }
        self.unmapped.entry(canon.clone()).or_insert(line);
        canon
    }

    /// Like `ifname` for tunnels and templates: their IOS name is a valid Linux name, so only
    /// an explicit `--map` renames them, with no note.
    fn own_name(&self, ios_name: &str) -> String {
        self.opts
            .maps
            .iter()
            .find(|(i, _)| i.eq_ignore_ascii_case(ios_name))
            .map_or_else(|| ios_name.to_owned(), |(_, l)| l.clone())
    }

    fn vrfs(&mut self, notes: &mut Notes) -> BTreeSet<String> {
        let mut names: BTreeMap<String, usize> = self.ios.vrfs.clone();
        for i in &self.ios.interfaces {
            for v in [&i.vrf, &i.fvrf].into_iter().flatten() {
                names.entry(v.clone()).or_insert(i.line);
            }
        }
        for (n, (name, line)) in names.iter().enumerate() {
            let table = 100 + n;
            notes.note(
                *line,
                Why::Decided,
                format!(
                    "VRF {name} gets routing table {table} (IOS VRFs have no table number); \
                     change it if the table is taken"
                ),
            );
            let mut s = Section::new(format!("[vrf.{}]", key(name)), self.span(*line));
            s.kv("table", table.to_string());
            self.sections.push(s);
        }
        names.into_keys().collect()
    }

    /// Keyrings: `default` for the `crypto isakmp key` lines, then the named ones. Returns
    /// each keyring's entries as vtid sees them (for choosing a tunnel's keyring).
    fn keyrings(&mut self, notes: &mut Notes) -> BTreeMap<String, Vec<PeerRef>> {
        let mut out = BTreeMap::new();
        let mut all: Vec<(String, &[KeyEntry], Vec<usize>)> = Vec::new();
        if !self.ios.isakmp_keys.is_empty() {
            let lines: Vec<usize> = self.ios.isakmp_keys.iter().map(|k| k.key.line).collect();
            notes.note(
                lines[0],
                Why::Decided,
                "the crypto isakmp key lines (IOS's global keys) are keyring \"default\"",
            );
            all.push(("default".into(), &self.ios.isakmp_keys, lines));
        }
        for (name, entries) in &self.ios.keyrings {
            let from = entries
                .first()
                .map_or_else(Vec::new, |e| self.span_of_line(e.key.line));
            all.push((name.clone(), entries, from));
        }
        for (name, entries, from) in all {
            let mut s = Section::new(format!("[keyring.{}]", key(&name)), from);
            let mut peers = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                let path = self
                    .opts
                    .key_dir
                    .join(format!("{}-{}.key", file_part(&name), i + 1));
                self.key_file(&path, e, notes);
                let who = match &e.peer {
                    PeerRef::Prefix(n) => format!("address = {}", q(&n.trunc().to_string())),
                    PeerRef::Fqdn(f) => format!("identity = {}", q(&format!("fqdn:{f}"))),
                    PeerRef::Email(m) => format!("identity = {}", q(&format!("email:{m}"))),
                };
                s.lines.push(String::new());
                s.lines.push(format!("[[keyring.{}.peer]]", key(&name)));
                s.lines.push(who);
                s.kv("psk_file", q(&path.to_string_lossy()));
                peers.push(e.peer.clone());
            }
            self.sections.push(s);
            out.insert(name, peers);
        }
        out
    }

    /// The whole block around an input line (keyrings are found by an entry's line).
    fn span_of_line(&self, line: usize) -> Vec<usize> {
        self.spans
            .iter()
            .find(|(_, lines)| lines.contains(&line))
            .map_or_else(|| vec![line], |(_, l)| l.clone())
    }

    fn key_file(&mut self, path: &std::path::Path, e: &KeyEntry, notes: &mut Notes) {
        let shown = path.display();
        match e.key.kind {
            0 => self.keys.push(KeyFile {
                path: path.to_owned(),
                key: e.key.text.clone(),
            }),
            7 => match super::type7::decode(&e.key.text) {
                Ok(k) => {
                    notes.note(
                        e.key.line,
                        Why::Decided,
                        format!(
                            "type 7 key decoded into {shown} (type 7 is a reversible \
                             obfuscation, not encryption: treat this key as exposed)"
                        ),
                    );
                    self.keys.push(KeyFile {
                        path: path.to_owned(),
                        key: k,
                    });
                }
                Err(why) => notes.note(
                    e.key.line,
                    Why::Unsupported,
                    format!("type 7 key does not decode ({why}): write the key into {shown}"),
                ),
            },
            kind => notes.note(
                e.key.line,
                Why::Unsupported,
                format!(
                    "type {kind} key cannot be recovered ({}): write the key into {shown} \
                     (mode 0600, owned by root)",
                    if kind == 6 {
                        "AES under the router's master key"
                    } else {
                        "a one-way hash"
                    }
                ),
            ),
        }
    }

    /// IKE proposals from the ISAKMP policies (IKEv1 → IKEv2) and the IKEv2 proposals.
    /// Returns the ISAKMP ones in priority order, the IKEv2 ones as the IKEv2 policy lists
    /// them, and the authentication method of the ISAKMP policies.
    fn proposals(&mut self, notes: &mut Notes) -> (Vec<String>, Vec<String>, &'static str) {
        let mut v1 = Vec::new();
        let mut auth: Option<(&'static str, usize)> = None;
        for p in self.ios.isakmp_policies.values() {
            let mut bad = Vec::new();
            let encr = match p.encr.0.as_str() {
                "3des" => Some("3des".to_owned()),
                "aes" => Some("aes-cbc-128".to_owned()),
                e if e.starts_with("aes ") => Some(format!("aes-cbc-{}", &e[4..])),
                other => {
                    bad.push(format!("encryption {other}"));
                    None
                }
            };
            let keep = !self.opts.ikev2;
            let integ = match p.hash.0.as_str() {
                "sha" => Some("sha1".to_owned()),
                h @ ("sha256" | "sha384" | "sha512") => Some(h.to_owned()),
                // HMAC-MD5 is an IKEv1 PRF vtid keeps behind allow_legacy; IKEv2 has no
                // PRF_HMAC_MD5 in vtid.
                "md5" if keep => Some("md5".to_owned()),
                other => {
                    bad.push(format!("hash {other}"));
                    None
                }
            };
            let group = p.group.0.parse::<u16>().ok().filter(|g| group_known(*g));
            if group.is_none() {
                bad.push(format!("group {}", p.group.0));
            }
            let method = match p.auth.0.as_str() {
                "pre-share" => Some("psk"),
                "rsa-sig" => Some("rsa-sig"),
                "ecdsa-sig" if !keep => Some("ecdsa-sig"),
                other => {
                    bad.push(format!("authentication {other}"));
                    None
                }
            };
            if let Some(e) = &encr
                && !encr_known(e)
            {
                bad.push(format!("encryption {}", p.encr.0));
            }
            if !bad.is_empty() {
                notes.note(
                    p.line,
                    Why::Unsupported,
                    format!(
                        "crypto isakmp policy {}: {} not implemented by vtid (where the policy \
                         leaves a value out, IOS's default applies: des, sha, rsa-sig, group 1); \
                         not imported",
                        p.priority,
                        bad.join(", ")
                    ),
                );
                continue;
            }
            let (Some(encr), Some(integ), Some(group), Some(method)) = (encr, integ, group, method)
            else {
                continue;
            };
            match auth {
                None => auth = Some((method, p.line)),
                Some((a, _)) if a != method => notes.note(
                    p.line,
                    Why::Decided,
                    format!(
                        "crypto isakmp policy {} authenticates with {method}, a policy before \
                         it with {a}: vtid's profiles use {a}",
                        p.priority
                    ),
                ),
                Some(_) => {}
            }
            if keep {
                // Kept as IOS wrote it: `[isakmp_policy.N]` takes IOS's spellings.
                notes.note(
                    p.line,
                    Why::Decided,
                    format!(
                        "crypto isakmp policy {} stays an IKEv1 policy (--ikev2 would make \
                         it an IKEv2 proposal)",
                        p.priority
                    ),
                );
                self.legacy |= p.hash.0 == "md5"
                    || legacy(
                        std::slice::from_ref(&encr),
                        std::slice::from_ref(&integ),
                        &[group],
                    );
                let mut s =
                    Section::new(format!("[isakmp_policy.{}]", p.priority), self.span(p.line));
                let ios_encr = if p.encr.0 == "aes" {
                    "aes 128"
                } else {
                    &p.encr.0
                };
                let ios_auth = if method == "psk" { "pre-share" } else { method };
                s.kv("encryption", q(ios_encr))
                    .kv("hash", q(&p.hash.0))
                    .kv("authentication", q(ios_auth))
                    .kv("group", group.to_string());
                if let Some((l, _)) = p.lifetime {
                    s.kv("lifetime", l.to_string());
                }
                self.sections.push(s);
                v1.push(p.priority.to_string());
                continue;
            }
            let name = format!("ISAKMP{}", p.priority);
            notes.note(
                p.line,
                Why::Decided,
                format!(
                    "crypto isakmp policy {} (IKEv1) becomes IKEv2 proposal {name}: vtid \
                     speaks IKEv2 only (IKEv1 is not supported yet), so the peer must use \
                     IKEv2 with these algorithms too",
                    p.priority
                ),
            );
            self.legacy |= legacy(
                std::slice::from_ref(&encr),
                std::slice::from_ref(&integ),
                &[group],
            );
            let mut s = Section::new(format!("[ike_proposal.{name}]"), self.span(p.line));
            s.kv("encryption", qlist(&[encr]))
                .kv("integrity", qlist(&[integ]))
                .kv("group", format!("[{group}]"));
            self.sections.push(s);
            v1.push(name);
        }
        if !self.opts.ikev2
            && v1.is_empty()
            && let Some(p) = self.ios.isakmp_policies.values().next()
        {
            notes.note(
                p.line,
                Why::Decided,
                "no crypto isakmp policy could be kept, so the profiles that would speak \
                 IKEv1 are IKEv2 with vtid's default proposals: the peers must use IKEv2",
            );
        }
        let mut usable = BTreeSet::new();
        for (name, p) in &self.ios.ikev2_proposals {
            if p.encryption.is_empty() || p.group.is_empty() {
                notes.note(
                    p.line,
                    Why::Unsupported,
                    format!(
                        "IKEv2 proposal {name}: no encryption or no group vtid implements; \
                         not imported"
                    ),
                );
                continue;
            }
            let aead = p.encryption.iter().all(|e| e.starts_with("aes-gcm"));
            self.legacy |= legacy(&p.encryption, &p.integrity, &p.group);
            let mut s = Section::new(format!("[ike_proposal.{}]", key(name)), self.span(p.line));
            s.kv("encryption", qlist(&p.encryption));
            if !aead && !p.integrity.is_empty() {
                s.kv("integrity", qlist(&p.integrity));
            }
            if !p.prf.is_empty() {
                s.kv("prf", qlist(&p.prf));
            }
            let groups: Vec<String> = p.group.iter().map(u16::to_string).collect();
            s.kv("group", format!("[{}]", groups.join(", ")));
            self.sections.push(s);
            usable.insert(name.clone());
        }
        // `crypto ikev2 policy` decides which proposals are offered, in its order; without
        // one IOS offers every proposal.
        let listed: Vec<String> = self
            .ios
            .ikev2_policy_proposals
            .iter()
            .filter(|p| usable.contains(*p))
            .cloned()
            .collect();
        let v2 = if listed.is_empty() {
            usable.into_iter().collect()
        } else {
            listed
        };
        (v1, v2, auth.map_or("psk", |(a, _)| a))
    }

    /// Template number → vtid template name, for the templates imported.
    fn template_names(&self, _notes: &mut Notes) -> BTreeMap<u32, String> {
        self.ios
            .interfaces
            .iter()
            .filter_map(|i| {
                let n = i.name.strip_prefix("Virtual-Template")?.parse().ok()?;
                matches!(i.mode, Some((TunnelMode::Ipsec, _))).then(|| (n, format!("VT{n}")))
            })
            .collect()
    }

    /// Transform sets reached from a VTI or template's IPsec profile.
    fn sets_used_by_vtis(&self) -> BTreeSet<String> {
        self.ios
            .interfaces
            .iter()
            .filter(|i| matches!(i.mode, Some((TunnelMode::Ipsec, _))))
            .filter_map(|i| i.protection.as_ref())
            .filter_map(|(p, _, _)| self.ios.ipsec_profiles.get(p))
            .flat_map(|p| p.transform_sets.iter().map(|(t, _)| t.clone()))
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn ike_profiles(
        &mut self,
        notes: &mut Notes,
        keyrings: &BTreeMap<String, Vec<PeerRef>>,
        v1: &[String],
        v2: &[String],
        v1_auth: &'static str,
        templates: &BTreeMap<u32, String>,
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (name, p) in &self.ios.ike_profiles {
            let mut s = Section::new(format!("[ike_profile.{}]", key(name)), self.span(p.line));
            if !p.ikev2 && !self.keep_v1() {
                notes.note(
                    p.line,
                    Why::Decided,
                    format!("ISAKMP profile {name} (IKEv1) is imported as an IKEv2 profile"),
                );
            }
            let template = match p.virtual_template {
                Some((n, line)) => match templates.get(&n) {
                    Some(t) => Some(t.clone()),
                    None => {
                        notes.note(
                            line,
                            Why::Unsupported,
                            format!(
                                "virtual-template {n}: no `interface Virtual-Template{n} type \
                                 tunnel` with tunnel mode ipsec was imported; the profile \
                                 clones nothing"
                            ),
                        );
                        None
                    }
                },
                None => None,
            };
            let local_auth = p.local_auth.clone().unwrap_or_else(|| {
                if p.ikev2 {
                    "psk".into()
                } else {
                    v1_auth.into()
                }
            });
            let mut remote = p.remote_auth.clone();
            remote.dedup();
            let mut keyring = None;
            let psk = local_auth == "psk" || remote.iter().any(|m| m == "psk");
            if psk {
                let k = p
                    .keyring
                    .clone()
                    .or_else(|| (!self.ios.isakmp_keys.is_empty()).then(|| "default".to_owned()));
                // A profile without keys could never authenticate: leave it out (and what
                // depends on it) rather than write one `vtid check` must refuse.
                let why = match k {
                    Some(k) if keyrings.contains_key(&k) => {
                        keyring = Some(k);
                        None
                    }
                    Some(k) => Some(format!("its keyring {k} was not imported")),
                    None => Some("it authenticates with keys but has no keyring".to_owned()),
                };
                if let Some(why) = why {
                    notes.note(
                        p.line,
                        Why::Unsupported,
                        format!("IKE profile {name}: {why}; not imported"),
                    );
                    continue;
                }
            }
            let mut ids = p.match_identity.clone();
            if ids.is_empty() && template.is_some() {
                ids.push("any".into());
                notes.note(
                    p.line,
                    Why::Decided,
                    format!(
                        "IKE profile {name} matches no identity vtid can express; a hub's \
                         profile needs one, so it is \"any\": every peer that authenticates \
                         with a key or certificate it accepts. Narrow it if you can"
                    ),
                );
            }
            if !ids.is_empty() {
                s.kv("match_identity", qlist(&ids));
            }
            if let Some(id) = &p.local_identity {
                s.kv("local_identity", q(id));
            }
            if local_auth != "psk" {
                s.kv("local_auth", q(&local_auth));
            }
            if !remote.is_empty() && remote != [local_auth.clone()] {
                s.kv("remote_auth", qlist(&remote));
            }
            if let Some(k) = &keyring {
                s.kv("keyring", q(k));
            }
            if local_auth != "psk" || remote.iter().any(|m| m != "psk") {
                let tp = p.trustpoint.clone().unwrap_or_else(|| "default".into());
                self.trustpoint(&tp, p.line, notes);
                s.kv("trustpoint", q(&tp));
            }
            if let Some((i, r)) = p.dpd.or(self.ios.keepalive) {
                let action = if template.is_some() {
                    "clear"
                } else {
                    "restart"
                };
                s.kv(
                    "dpd",
                    format!(
                        "{{ interval = {i}, retries = {r}, action = {} }}",
                        q(action)
                    ),
                );
            }
            if p.ikev2 || !self.keep_v1() {
                let props = if p.ikev2 { v2 } else { v1 };
                if !props.is_empty() {
                    s.kv("proposals", qlist(props));
                }
                let lifetime = p
                    .lifetime
                    .or_else(|| (!p.ikev2).then(|| self.first_v1_lifetime()).flatten());
                if let Some(l) = lifetime {
                    s.kv("lifetime_seconds", l.to_string());
                }
            } else {
                self.ike_version(&mut s, true, v1, v2);
            }
            if let Some(v) = &p.fvrf {
                s.kv("fvrf", q(v));
            }
            if let Some(t) = template {
                s.kv("virtual_template", q(&t));
            }
            self.sections.push(s);
            out.insert(name.clone());
        }
        out
    }

    /// A profile's version keys. An IKEv1 source stays IKEv1 (`version = 1`: phase 1 uses
    /// the `[isakmp_policy.N]` sections, whose lifetimes it negotiates, RFC 2409 §5); with
    /// `--ikev2` it gets the converted proposals and the first policy lifetime instead.
    fn ike_version(&self, s: &mut Section, ikev1: bool, v1: &[String], v2: &[String]) {
        if ikev1 && self.keep_v1() {
            s.kv("version", "1".into());
            return;
        }
        let props = if ikev1 { v1 } else { v2 };
        if !props.is_empty() {
            s.kv("proposals", qlist(props));
        }
        if ikev1 && let Some(l) = self.first_v1_lifetime() {
            s.kv("lifetime_seconds", l.to_string());
        }
    }

    /// True when IKEv1 profiles stay IKEv1: no `--ikev2`, and some `[isakmp_policy.N]` was
    /// written (a `version = 1` profile without one is what `vtid check` refuses).
    fn keep_v1(&self) -> bool {
        !self.opts.ikev2
            && self
                .sections
                .iter()
                .any(|s| s.header.starts_with("[isakmp_policy."))
    }

    /// How a note names what became of the ISAKMP policies for a profile made here.
    fn v1_fate(&self, ikev1: bool) -> &'static str {
        match (ikev1, self.keep_v1()) {
            (false, _) => "",
            (true, false) => ", ISAKMP policies as IKEv2 proposals",
            (true, true) => ", over IKEv1 with the ISAKMP policies",
        }
    }

    /// The lifetime of the highest-priority ISAKMP policy that set one (IKEv2 does not
    /// negotiate lifetimes, RFC 7296 §2.8: each end rekeys on its own clock).
    fn first_v1_lifetime(&self) -> Option<u64> {
        self.ios
            .isakmp_policies
            .values()
            .find_map(|p| p.lifetime.map(|(l, _)| l))
    }

    /// A `[trustpoint]` skeleton: IOS keeps certificates in NVRAM, vtid reads files.
    fn trustpoint(&mut self, name: &str, line: usize, notes: &mut Notes) {
        let header = format!("[trustpoint.{}]", key(name));
        if self.sections.iter().any(|s| s.header == header) {
            return;
        }
        notes.note(
            line,
            Why::Decided,
            format!(
                "certificates: trustpoint {name} names files under /etc/vtid/pki/ that you \
                 export from the router (or your CA): the CA certificate, this router's \
                 certificate and its private key (0600)"
            ),
        );
        let base = file_part(name);
        let mut s = Section::new(header, vec![line]);
        s.kv("ca", qlist(&[format!("/etc/vtid/pki/{base}-ca.pem")]))
            .kv("certificate", q(&format!("/etc/vtid/pki/{base}.pem")))
            .kv("private_key", q(&format!("/etc/vtid/pki/{base}.key")));
        self.sections.push(s);
    }

    fn transform_sets(
        &mut self,
        notes: &mut Notes,
        vti_sets: &BTreeSet<String>,
        map_sets: &BTreeSet<String>,
    ) {
        for (name, t) in &self.ios.transform_sets {
            let mut s = Section::new(format!("[transform_set.{}]", key(name)), self.span(t.line));
            s.kv("esp", q(&t.esp));
            if let Some(i) = &t.integrity {
                s.kv("integrity", q(i));
            }
            self.legacy |= legacy(std::slice::from_ref(&t.esp), t.integrity.as_slice(), &[]);
            if t.transport {
                if vti_sets.contains(name) {
                    notes.note(
                        t.line,
                        Why::Decided,
                        format!(
                            "transform set {name} says mode transport, but it protects a VTI, \
                             which IOS and Linux run in tunnel mode whatever the set says: \
                             imported as tunnel mode"
                        ),
                    );
                } else if map_sets.contains(name) {
                    // IOS uses transport mode only for traffic between the two peers' own
                    // addresses and "ignores the mode for all other traffic" (seed T22);
                    // vtid's crypto maps run tunnel mode.
                    notes.note(
                        t.line,
                        Why::Decided,
                        format!(
                            "transform set {name} says mode transport, but a crypto map uses                              it: IOS applies transport only to traffic between the peers' own                              addresses and tunnel mode to the rest; vtid's crypto maps run                              tunnel mode: imported as tunnel mode"
                        ),
                    );
                } else {
                    s.kv("mode", q("transport"));
                }
            }
            self.sections.push(s);
        }
    }

    fn ipsec_profiles(&mut self, notes: &mut Notes, ike: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (name, p) in &self.ios.ipsec_profiles {
            let Some(sets) = self.imported_sets(
                &format!("IPsec profile {name}"),
                &p.transform_sets,
                p.line,
                notes,
            ) else {
                continue;
            };
            let mut s = Section::new(format!("[ipsec_profile.{}]", key(name)), self.span(p.line));
            s.kv("transform_sets", qlist(&sets));
            if let Some(g) = p.pfs {
                self.legacy |= legacy(&[], &[], &[g]);
                s.kv("pfs", g.to_string());
            }
            let secs = p.seconds.or(self.ios.global_seconds);
            let kb = p.kilobytes.or(self.ios.global_kilobytes);
            let lifetime: Vec<String> = [("seconds", secs), ("kilobytes", kb)]
                .iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k} = {v}")))
                .collect();
            if !lifetime.is_empty() {
                s.kv("lifetime", format!("{{ {} }}", lifetime.join(", ")));
            }
            if let Some((ip, line)) = &p.ike_profile {
                if ike.contains(ip) {
                    s.kv("ike_profile", q(ip));
                } else {
                    notes.note(
                        *line,
                        Why::Unsupported,
                        format!("IPsec profile {name}: IKE profile {ip} was not imported"),
                    );
                }
            }
            self.sections.push(s);
            out.insert(name.clone());
        }
        out
    }

    fn virtual_templates(
        &mut self,
        notes: &mut Notes,
        ipsec: &BTreeSet<String>,
        ike: &BTreeSet<String>,
        vrfs: &BTreeSet<String>,
        templates: &BTreeMap<u32, String>,
    ) {
        let used: BTreeSet<u32> = self
            .ios
            .ike_profiles
            .iter()
            .filter(|(name, _)| ike.contains(*name))
            .filter_map(|(_, p)| p.virtual_template.map(|(n, _)| n))
            .collect();
        for i in &self.ios.interfaces {
            let Some(n) = i
                .name
                .strip_prefix("Virtual-Template")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(vt) = templates.get(&n) else {
                self.not_ipsec(i, notes);
                continue;
            };
            let Some((profile, _, pline)) = &i.protection else {
                notes.note(
                    i.line,
                    Why::Unsupported,
                    format!("{}: no tunnel protection; not imported", i.name),
                );
                continue;
            };
            if !ipsec.contains(profile) {
                notes.note(
                    i.line,
                    Why::Unsupported,
                    format!(
                        "{}: its IPsec profile {profile} (line {pline}) was not imported; \
                         neither is the template",
                        i.name
                    ),
                );
                continue;
            }
            let Some(unnumbered) = &i.unnumbered else {
                notes.note(
                    i.line,
                    Why::Unsupported,
                    format!("{}: vtid's templates borrow an address (ip unnumbered); this one has none; not imported", i.name),
                );
                continue;
            };
            if !used.contains(&n) {
                notes.note(
                    i.line,
                    Why::Decided,
                    format!(
                        "{}: no imported IKE profile names virtual-template {n}, so no peer is \
                         cloned from it",
                        i.name
                    ),
                );
            }
            let mut s = Section::new(format!("[virtual_template.{vt}]"), self.span(i.line));
            s.kv("unnumbered", q(&self.ifname(unnumbered, i.line)));
            if let Some(v) = i.vrf.as_ref().filter(|v| vrfs.contains(*v)) {
                s.kv("vrf", q(v));
            }
            s.kv("protection", q(profile));
            if let Some(m) = i.mtu {
                s.kv("mtu", m.to_string());
            }
            self.sections.push(s);
        }
    }

    /// A tunnel or template interface that is not `tunnel mode ipsec`.
    fn not_ipsec(&self, i: &Interface, notes: &mut Notes) {
        let why = match &i.mode {
            // Protected GRE is imported (gre_tunnel); what reaches here is plain GRE.
            None => "no tunnel mode line (GRE, IOS's default) and no tunnel protection: plain \
                     GRE is the system's, not vtid's"
                .to_owned(),
            Some((TunnelMode::Gre(m), _)) if i.protection.is_none() => format!(
                "tunnel mode {m} without tunnel protection: plain GRE is the system's, not \
                 vtid's"
            ),
            Some((TunnelMode::Gre(m), _)) => format!("tunnel mode {m} is not supported"),
            Some((TunnelMode::Other(m), _)) => format!("tunnel mode {m} is not supported"),
            Some((TunnelMode::Ipsec, _)) => return,
        };
        notes.note(
            i.line,
            Why::Unsupported,
            format!("interface {}: {why}; not imported", i.name),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn tunnels(
        &mut self,
        notes: &mut Notes,
        ipsec: &BTreeSet<String>,
        ike: &BTreeSet<String>,
        vrfs: &BTreeSet<String>,
        keyrings: &BTreeMap<String, Vec<PeerRef>>,
        v1: &[String],
        v2: &[String],
        v1_auth: &'static str,
    ) {
        let mut first = true;
        for i in &self.ios.interfaces {
            if !i.name.starts_with("Tunnel") {
                if !i.name.starts_with("Virtual-Template") {
                    notes.note(
                        i.line,
                        Why::Dropped,
                        format!(
                            "interface {}: its address and settings are the system's network \
                             configuration, not vtid's",
                            i.name
                        ),
                    );
                }
                continue;
            }
            let Some(kind) = super::gre::kind(i) else {
                self.not_ipsec(i, notes);
                continue;
            };
            let mgre = kind == super::gre::Kind::Mgre;
            // A GRE tunnel without protection is plain GRE, not vtid's.
            if kind != super::gre::Kind::Vti && i.protection.is_none() {
                self.not_ipsec(i, notes);
                continue;
            }
            let mut missing = Vec::new();
            if i.destination.is_none() && !mgre {
                missing.push("tunnel destination");
            }
            if i.source.is_none() {
                missing.push("tunnel source");
            }
            if i.protection.is_none() {
                missing.push("tunnel protection");
            }
            if !missing.is_empty() {
                notes.note(
                    i.line,
                    Why::Unsupported,
                    format!(
                        "interface {}: no {}; not imported",
                        i.name,
                        missing.join(", no ")
                    ),
                );
                continue;
            }
            if kind != super::gre::Kind::Vti {
                self.gre_tunnel(i, mgre, ipsec, ike, vrfs, notes);
                continue;
            }
            let (Some(dest), Some(source), Some((profile, shared, pline))) =
                (i.destination, &i.source, &i.protection)
            else {
                continue;
            };
            if !ipsec.contains(profile) {
                notes.note(
                    i.line,
                    Why::Unsupported,
                    format!("interface {}: its IPsec profile {profile} (line {pline}) was not imported; neither is the tunnel", i.name),
                );
                continue;
            }
            let name = self.own_name(&i.name);
            let mut s = Section::new(format!("[tunnel.{}]", key(&name)), self.span(i.line));
            if first {
                notes.note(
                    i.line,
                    Why::Decided,
                    "tunnel mode ipsec: an xfrm interface (mode = \"xfrmi\"); mode = \"vti\" \
                     gives an ip_vti device instead, which behaves the same",
                );
                first = false;
            }
            if let Some((_, line)) = &i.mode
                && i.mode_ambiguous
            {
                notes.note(
                    *line,
                    Why::Decided,
                    format!(
                        "`tunnel mode ipsec ipv` is ambiguous (ipv4 or ipv6); the destination \
                         is {}, so it is read as ipv{}",
                        dest,
                        if dest.is_ipv4() { 4 } else { 6 }
                    ),
                );
            }
            if *shared {
                notes.note(
                    *pline,
                    Why::Dropped,
                    "shared: only mGRE tunnels share SAs; a VTI's SAs are its own",
                );
            }
            s.kv("mode", q("xfrmi"));
            let src = if source.parse::<IpAddr>().is_ok() {
                source.clone()
            } else {
                self.ifname(source, i.line)
            };
            s.kv("source", q(&src))
                .kv("destination", q(&dest.to_string()));
            if let Some(a) = i.address {
                s.kv("address", q(&a.to_string()));
            } else if let Some(u) = &i.unnumbered {
                s.kv("unnumbered", q(&self.ifname(u, i.line)));
            }
            s.kv("protection", q(profile));
            let has_ike = self
                .ios
                .ipsec_profiles
                .get(profile)
                .and_then(|p| p.ike_profile.as_ref())
                .is_some_and(|(n, _)| ike.contains(n));
            if !has_ike {
                match self.tunnel_ike_profile(&name, i, dest, notes, keyrings, v1, v2, v1_auth) {
                    Some(p) => {
                        s.kv("ike_profile", q(&p));
                    }
                    None => continue,
                }
            }
            if let Some(m) = i.mtu {
                s.kv("mtu", m.to_string());
            }
            if let Some(v) = i.vrf.as_ref().filter(|v| vrfs.contains(*v)) {
                s.kv("vrf", q(v));
            }
            if let Some(v) = i.fvrf.as_ref().filter(|v| vrfs.contains(*v)) {
                s.kv("fvrf", q(v));
            }
            let routes: Vec<String> = self
                .ios
                .routes
                .iter()
                .filter(|r| r.interface.as_deref() == Some(&i.name))
                .map(|r| match r.distance {
                    Some(d) if d > 1 => {
                        format!("{{ prefix = {}, metric = {d} }}", q(&r.prefix.to_string()))
                    }
                    _ => q(&r.prefix.to_string()),
                })
                .collect();
            let route_lines: Vec<usize> = self
                .ios
                .routes
                .iter()
                .filter(|r| r.interface.as_deref() == Some(&i.name))
                .map(|r| r.line)
                .collect();
            s.from.extend(route_lines);
            if !routes.is_empty() {
                s.kv("routes", format!("[{}]", routes.join(", ")));
            }
            if i.shutdown {
                notes.note(
                    i.line,
                    Why::Decided,
                    "shutdown: imported with initiate = false; `vtid down` takes a running \
                     tunnel down",
                );
                s.kv("initiate", "false".into());
            }
            self.sections.push(s);
        }
    }

    /// The IKE profile a tunnel uses when its IPsec profile names none: IOS matches the
    /// peer against the ISAKMP profiles' identities, else uses the global policies and keys.
    #[allow(clippy::too_many_arguments)]
    fn tunnel_ike_profile(
        &mut self,
        tunnel: &str,
        i: &Interface,
        dest: IpAddr,
        notes: &mut Notes,
        keyrings: &BTreeMap<String, Vec<PeerRef>>,
        v1: &[String],
        v2: &[String],
        v1_auth: &'static str,
    ) -> Option<String> {
        let by_identity = self.ios.ike_profiles.iter().find(|(_, p)| {
            p.virtual_template.is_none()
                && p.match_identity
                    .iter()
                    .any(|m| m.parse::<IpNet>().is_ok_and(|n| n.contains(&dest)))
        });
        if let Some((name, _)) = by_identity {
            return Some(name.clone());
        }
        // The keyring with the most specific entry for the destination.
        let keyring = keyrings
            .iter()
            .filter_map(|(k, peers)| {
                peers
                    .iter()
                    .filter_map(|p| match p {
                        PeerRef::Prefix(n) if n.contains(&dest) => Some(n.prefix_len()),
                        _ => None,
                    })
                    .max()
                    .map(|len| (len, k))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, k)| k.clone());
        let ikev1 = !self.ios.isakmp_policies.is_empty() || !self.ios.isakmp_keys.is_empty();
        let auth = if ikev1 { v1_auth } else { "psk" };
        let name = {
            let mut n = tunnel.to_owned();
            while self.ios.ike_profiles.contains_key(&n) {
                n.push('_');
            }
            n
        };
        let mut s = Section::new(format!("[ike_profile.{}]", key(&name)), vec![i.line]);
        s.kv("match_identity", qlist(&[dest.to_string()]));
        if auth == "psk" {
            match &keyring {
                Some(k) => {
                    s.kv("keyring", q(k));
                }
                None => {
                    notes.note(
                        i.line,
                        Why::Unsupported,
                        format!("{tunnel}: no imported key covers peer {dest}; not imported"),
                    );
                    return None;
                }
            }
        } else {
            s.kv("local_auth", q(auth));
            self.trustpoint("default", i.line, notes);
            s.kv("trustpoint", q("default"));
        }
        notes.note(
            i.line,
            Why::Decided,
            format!(
                "{tunnel}: IKE profile {name} made for it (IOS uses its global policies and \
                 keys here): peer {dest}{}",
                self.v1_fate(ikev1)
            ),
        );
        if let Some((iv, r)) = self.ios.keepalive {
            s.kv(
                "dpd",
                format!("{{ interval = {iv}, retries = {r}, action = \"restart\" }}"),
            );
        }
        self.ike_version(&mut s, ikev1, v1, v2);
        // Before the tunnel, as a reader expects a profile before its user.
        self.sections.push(s);
        Some(name)
    }

    /// Static routes that do not point into an imported tunnel.
    fn routes_elsewhere(&self, notes: &mut Notes) {
        let tunnels: BTreeSet<&str> = self
            .ios
            .interfaces
            .iter()
            .filter(|i| {
                i.name.starts_with("Tunnel")
                    && match super::gre::kind(i) {
                        Some(super::gre::Kind::Vti) => true,
                        // Routes into a protected p2p GRE tunnel are imported with it.
                        Some(super::gre::Kind::Gre) => i.protection.is_some(),
                        _ => false,
                    }
            })
            .map(|i| i.name.as_str())
            .collect();
        for r in &self.ios.routes {
            match &r.interface {
                Some(i) if tunnels.contains(i.as_str()) => {}
                Some(i) if i.starts_with("Tunnel") => notes.note(
                    r.line,
                    Why::Unsupported,
                    format!("route {} through {i}, which was not imported", r.prefix),
                ),
                _ => notes.note(
                    r.line,
                    Why::Dropped,
                    format!(
                        "route {}: not through a tunnel; it belongs to the system's routing \
                         configuration",
                        r.prefix
                    ),
                ),
            }
        }
    }

    fn render(&self, notes: &Notes) -> String {
        let mut out = String::new();
        let host = self
            .ios
            .hostname
            .as_deref()
            .map_or_else(String::new, |h| format!(" (hostname {h})"));
        let _ = writeln!(
            out,
            "# vtid configuration imported by `vtid import-ios` from {}{host}.\n\
             # \"decided\" marks a choice made where IOS and vtid differ; what was not imported \
             is\n# listed at the end with its line number. Check the result with `vtid check`.",
            self.opts.input_name
        );
        let mut printed = BTreeSet::new();
        let comment = |out: &mut String, n: &super::Note| {
            wrap_comment(out, &format!("line {}: {}: {}", n.line, n.why, n.text));
        };
        let mut sorted: Vec<&super::Note> = notes.0.iter().collect();
        sorted.sort_by_key(|n| n.line);
        if self.legacy {
            let _ = writeln!(
                out,
                "\n# decided: the configuration uses 3DES, SHA-1 or group 2, which vtid only \
                 accepts with\n# allow_legacy; move both ends to AES-GCM and group 19 or 14 when \
                 you can.\n[global]\nallow_legacy = true"
            );
        }
        for s in &self.sections {
            out.push('\n');
            for (i, n) in sorted.iter().enumerate() {
                if s.from.contains(&n.line) && n.why == Why::Decided && printed.insert(i) {
                    comment(&mut out, n);
                }
            }
            let _ = writeln!(out, "{}", s.header);
            for l in &s.lines {
                let _ = writeln!(out, "{l}");
            }
        }
        let rest: Vec<(usize, &&super::Note)> = sorted
            .iter()
            .enumerate()
            .filter(|(i, _)| !printed.contains(i))
            .collect();
        if !rest.is_empty() {
            let _ = writeln!(out, "\n# Not imported, or imported with a remark:");
            for (_, n) in rest {
                comment(&mut out, n);
            }
        }
        out
    }
}

/// A crypto map entry ready to be written, before the checks across a map's entries.
struct MapCandidate {
    seq: u32,
    line: usize,
    /// Its ACL, translated (none for a `dynamic` entry).
    acl: Option<(String, Vec<AclEntry>)>,
    lines: Vec<String>,
}

/// What became of an access list a crypto map entry matches.
#[derive(Clone)]
enum AclResult {
    /// The vtid entry strings and their parsed form.
    Ok(Vec<String>, Vec<AclEntry>),
    /// Not imported: the line that stopped it.
    Refused(usize),
    /// No such ACL in the input.
    Missing,
}

/// IOS protocol names acl.rs has no keyword for, as numbers (IANA protocol numbers).
const PROTO_NUMBERS: &[(&str, &str)] = &[
    ("igmp", "2"),
    ("ipinip", "4"),
    ("eigrp", "88"),
    ("ospf", "89"),
    ("nos", "94"),
    ("pim", "103"),
    ("pcp", "108"),
];

impl Emitter<'_> {
    /// Transform sets some crypto map entry names.
    fn sets_used_by_maps(&self) -> BTreeSet<String> {
        self.ios
            .crypto_maps
            .values()
            .flat_map(|m| m.entries.values())
            .chain(self.ios.dynamic_maps.values().flat_map(|m| m.values()))
            .flat_map(|e| e.transform_sets.iter().map(|(t, _)| t.clone()))
            .collect()
    }

    /// One IOS ACL as vtid entry strings, each line checked by the parser `vtid check` uses.
    /// A line vtid cannot hold stops the whole ACL: without it the ACL would protect other
    /// traffic than on the router (a dropped permit sends its traffic to later entries or in
    /// clear, a dropped deny protects what IOS keeps in clear).
    fn translate_acl(&self, name: &str, notes: &mut Notes) -> AclResult {
        let Some(a) = self.ios.acls.get(name) else {
            return AclResult::Missing;
        };
        let refuse = |notes: &mut Notes, bad: usize, why: String| {
            notes.note(bad, Why::Unsupported, why);
            for l in &a.all {
                if *l != bad {
                    notes.note(
                        *l,
                        Why::Unsupported,
                        format!("access list {name} is not imported (line {bad})"),
                    );
                }
            }
            AclResult::Refused(bad)
        };
        if a.standard {
            return refuse(
                notes,
                a.line,
                format!(
                    "access list {name} is a standard ACL (sources only); a crypto map matches \
                     with an extended one: not imported"
                ),
            );
        }
        let mut texts = Vec::new();
        let mut parsed = Vec::new();
        for l in &a.entries {
            let words: Vec<String> = l
                .text
                .split_whitespace()
                .enumerate()
                .map(|(i, w)| {
                    let lw = w.to_ascii_lowercase();
                    if i == 1
                        && let Some((_, n)) = PROTO_NUMBERS.iter().find(|(p, _)| *p == lw)
                    {
                        return (*n).to_owned();
                    }
                    // `log-input` logs like `log`; vtid counts per SA instead of either.
                    if lw == "log-input" {
                        return "log".to_owned();
                    }
                    if i <= 1 { lw } else { w.to_owned() }
                })
                .collect();
            let text = words.join(" ");
            let res = crate::config::acl::parse(&text).and_then(|e| {
                if e.src.addr().is_ipv6() == a.v6 {
                    Ok(e)
                } else if a.v6 {
                    Err("vtid reads `any any` as IPv4; write the IPv6 prefixes".to_owned())
                } else {
                    Err("an IPv6 entry in an IPv4 access list".to_owned())
                }
            });
            match res {
                Ok(e) => {
                    texts.push(text);
                    parsed.push(e);
                }
                Err(why) => {
                    let effect = if l.text.to_ascii_lowercase().starts_with("deny") {
                        "without this deny, traffic the router keeps in clear would be protected"
                    } else {
                        "without this permit, traffic the router protects would go to later \
                         entries or in clear"
                    };
                    return refuse(
                        notes,
                        l.line,
                        format!(
                            "`{}` in access list {name}: {why}; {effect}, so the ACL and the map \
                             entries matching it are not imported (split it into entries vtid \
                             can hold)",
                            l.text
                        ),
                    );
                }
            }
        }
        AclResult::Ok(texts, parsed)
    }

    /// The ACL of an entry, translated once.
    fn entry_acl(
        &self,
        what: &str,
        e: &MapEntry,
        cache: &mut BTreeMap<String, AclResult>,
        notes: &mut Notes,
    ) -> Result<Option<(String, Vec<AclEntry>)>, ()> {
        // Remarks go on the entry's head, which accounts for its whole block.
        let line = &e.line;
        let Some((name, _)) = &e.match_address else {
            return Ok(None);
        };
        if !cache.contains_key(name) {
            let r = self.translate_acl(name, notes);
            cache.insert(name.clone(), r);
        }
        match cache.get(name).cloned() {
            Some(AclResult::Ok(_, parsed)) if !parsed.iter().any(|x| x.permit) => {
                notes.note(
                    *line,
                    Why::Unsupported,
                    format!("{what}: access list {name} permits nothing, so the entry protects nothing; not imported"),
                );
                Err(())
            }
            Some(AclResult::Ok(_, parsed)) => Ok(Some((name.clone(), parsed))),
            Some(AclResult::Refused(bad)) => {
                notes.note(
                    *line,
                    Why::Unsupported,
                    format!("{what}: its access list {name} is not imported (line {bad}); neither is the entry"),
                );
                Err(())
            }
            _ => {
                notes.note(
                    *line,
                    Why::Unsupported,
                    format!(
                        "{what}: access list {name} is not defined; IOS leaves the entry \
                         incomplete (unused); not imported"
                    ),
                );
                Err(())
            }
        }
    }

    /// The transform sets of `sets` (name, line) that were imported, each other one
    /// remarked; `None` (remarked at `line`) when none is left.
    fn imported_sets<'s>(
        &self,
        what: &str,
        sets: &'s [(String, usize)],
        line: usize,
        notes: &mut Notes,
    ) -> Option<Vec<&'s String>> {
        let kept: Vec<&String> = sets
            .iter()
            .filter(|(t, at)| {
                let ok = self.ios.transform_sets.contains_key(t);
                if !ok {
                    notes.note(
                        *at,
                        Why::Unsupported,
                        format!("{what}: transform set {t} was not imported"),
                    );
                }
                ok
            })
            .map(|(t, _)| t)
            .collect();
        if kept.is_empty() {
            notes.note(
                line,
                Why::Unsupported,
                format!("{what}: no transform set vtid can use; not imported"),
            );
            return None;
        }
        Some(kept)
    }

    /// The settings every kind of entry shares: transform sets, PFS, lifetimes, per-host,
    /// reverse route. None when no transform set was imported.
    fn entry_settings(
        &mut self,
        what: &str,
        e: &MapEntry,
        acl: Option<&[AclEntry]>,
        notes: &mut Notes,
    ) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let sets = self.imported_sets(what, &e.transform_sets, e.line, notes)?;
        out.push(format!("transform_sets = {}", qlist(&sets)));
        if let Some(g) = e.pfs {
            self.legacy |= legacy(&[], &[], &[g]);
            out.push(format!("pfs = {g}"));
        }
        let secs = e.seconds.or(self.ios.global_seconds);
        let kb = e.kilobytes.or(self.ios.global_kilobytes);
        let lifetime: Vec<String> = [("seconds", secs), ("kilobytes", kb)]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} = {v}")))
            .collect();
        if !lifetime.is_empty() {
            out.push(format!("lifetime = {{ {} }}", lifetime.join(", ")));
        }
        if e.per_host {
            out.push("per_host = true".into());
        }
        if let Some((metric, line)) = e.reverse_route {
            // Seed F-B8: `any` with reverse route injection is not supported: the route
            // would be the default route.
            if acl.is_some_and(|a| a.iter().any(|x| x.permit && x.dst.prefix_len() == 0)) {
                notes.note(
                    line,
                    Why::Unsupported,
                    format!(
                        "{what}: reverse-route with an ACL that permits traffic to any \
                         destination would route 0/0 to the peer (not supported by IOS either, \
                         seed F-B8); left off"
                    ),
                );
            } else {
                out.push("reverse_route = true".into());
                if metric > 0 {
                    out.push(format!("reverse_route_metric = {metric}"));
                }
            }
        }
        Some(out)
    }

    /// The addresses of this router's interfaces, by interface.
    fn local_addresses(ios: &Ios) -> Vec<(IpAddr, &str)> {
        ios.interfaces
            .iter()
            .filter_map(|i| i.address.map(|a| (a.addr(), i.name.as_str())))
            .collect()
    }

    /// An IKE profile for map entries that name none: IOS negotiates them with its global
    /// ISAKMP policies and keys, found by peer address. `peers` empty means any peer (a
    /// dynamic map). Returns the profile and the peers it has keys for.
    #[allow(clippy::too_many_arguments)]
    fn map_ike_profile(
        &mut self,
        base: &str,
        what: &str,
        line: usize,
        peers: &[IpAddr],
        notes: &mut Notes,
        keyrings: &BTreeMap<String, Vec<PeerRef>>,
        props: (&[String], &[String], &'static str),
    ) -> Option<(String, Vec<IpAddr>)> {
        let (v1, v2, v1_auth) = props;
        let ikev1 = !self.ios.isakmp_policies.is_empty() || !self.ios.isakmp_keys.is_empty();
        let auth = if ikev1 { v1_auth } else { "psk" };
        let covering = |p: &IpAddr| {
            keyrings
                .iter()
                .filter_map(|(k, ps)| {
                    ps.iter()
                        .filter_map(|x| match x {
                            PeerRef::Prefix(n) if n.contains(p) => Some(n.prefix_len()),
                            _ => None,
                        })
                        .max()
                        .map(|len| (len, k.clone()))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, k)| k)
        };
        let mut name = base.to_owned();
        while self.ios.ike_profiles.contains_key(&name)
            || self
                .sections
                .iter()
                .any(|s| s.header == format!("[ike_profile.{}]", key(&name)))
        {
            name.push('_');
        }
        let mut s = Section::new(format!("[ike_profile.{}]", key(&name)), vec![line]);
        let mut kept = peers.to_vec();
        if peers.is_empty() {
            s.kv("match_identity", qlist(&["any"]));
        } else {
            let ids: Vec<String> = peers.iter().map(IpAddr::to_string).collect();
            s.kv("match_identity", qlist(&ids));
        }
        if auth == "psk" {
            // A dynamic map answers anyone with a key: the keyring with the broadest entry
            // (IOS's `address 0.0.0.0 0.0.0.0` wildcard key).
            let keyring = if peers.is_empty() {
                keyrings
                    .iter()
                    .filter_map(|(k, ps)| {
                        ps.iter()
                            .filter_map(|x| match x {
                                PeerRef::Prefix(n) => Some(n.prefix_len()),
                                _ => None,
                            })
                            .min()
                            .map(|len| (len, k.clone()))
                    })
                    .min_by_key(|(len, _)| *len)
                    .map(|(_, k)| k)
            } else {
                peers.iter().find_map(covering)
            };
            let Some(k) = keyring else {
                notes.note(
                    line,
                    Why::Unsupported,
                    format!(
                        "{what}: no imported key covers {}; not imported",
                        if peers.is_empty() {
                            "any peer".to_owned()
                        } else {
                            format!(
                                "peer {}",
                                peers
                                    .iter()
                                    .map(IpAddr::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    ),
                );
                return None;
            };
            kept.retain(|p| {
                let ok = keyrings[&k]
                    .iter()
                    .any(|x| matches!(x, PeerRef::Prefix(n) if n.contains(p)));
                if !ok {
                    notes.note(
                        line,
                        Why::Unsupported,
                        format!(
                            "{what}: keyring {k}, which holds the key of the entry's other \
                             peers, has none for peer {p}; that peer is not imported"
                        ),
                    );
                }
                ok
            });
            s.kv("keyring", q(&k));
        } else {
            s.kv("local_auth", q(auth));
            self.trustpoint("default", line, notes);
            s.kv("trustpoint", q("default"));
        }
        notes.note(
            line,
            Why::Decided,
            format!(
                "{what}: IKE profile {name} made for it (IOS uses its global policies and keys \
                 here){}{}",
                if peers.is_empty() {
                    ": it accepts any peer that authenticates with the key"
                } else {
                    ""
                },
                self.v1_fate(ikev1)
            ),
        );
        if let Some((iv, r)) = self.ios.keepalive {
            let action = if peers.is_empty() { "clear" } else { "restart" };
            s.kv(
                "dpd",
                format!(
                    "{{ interval = {iv}, retries = {r}, action = {} }}",
                    q(action)
                ),
            );
        }
        self.ike_version(&mut s, ikev1, v1, v2);
        self.sections.push(s);
        Some((name, kept))
    }

    /// The IKE profile an entry names (`set isakmp-profile`, or the map's), if imported.
    fn named_ike_profile(
        &self,
        what: &str,
        named: &(String, usize),
        ike: &BTreeSet<String>,
        notes: &mut Notes,
    ) -> Option<String> {
        if ike.contains(&named.0) {
            Some(named.0.clone())
        } else {
            notes.note(
                named.1,
                Why::Unsupported,
                format!(
                    "{what}: IKE profile {} was not imported; neither is the entry",
                    named.0
                ),
            );
            None
        }
    }

    /// `[access_list.N]`, once, before the first map that uses it.
    fn acl_section(
        &mut self,
        name: &str,
        cache: &BTreeMap<String, AclResult>,
        done: &mut BTreeSet<String>,
    ) {
        if !done.insert(name.to_owned()) {
            return;
        }
        if let (Some(AclResult::Ok(texts, _)), Some(a)) = (cache.get(name), self.ios.acls.get(name))
        {
            let mut s = Section::new(format!("[access_list.{}]", key(name)), a.all.clone());
            s.kv("entries", qlist(texts));
            self.sections.push(s);
        }
    }

    /// Crypto map sets, their dynamic maps and the ACLs they match.
    #[allow(clippy::too_many_arguments)]
    fn crypto_maps(
        &mut self,
        notes: &mut Notes,
        ike: &BTreeSet<String>,
        keyrings: &BTreeMap<String, Vec<PeerRef>>,
        v1: &[String],
        v2: &[String],
        v1_auth: &'static str,
    ) {
        let mut cache: BTreeMap<String, AclResult> = BTreeMap::new();
        let mut written: BTreeSet<String> = BTreeSet::new();
        let ios = self.ios;
        // Dynamic maps first: a crypto map's `dynamic` entry names one.
        let mut dyn_ok = BTreeSet::new();
        for (dname, entries) in &ios.dynamic_maps {
            let mut s = Section::new(format!("[dynamic_map.{}]", key(dname)), Vec::new());
            let mut acls = Vec::new();
            for e in entries.values() {
                let what = format!("crypto dynamic-map {dname} {}", e.seq);
                let Ok(acl) = self.entry_acl(&what, e, &mut cache, notes) else {
                    continue;
                };
                if acl.is_none() {
                    // Seed F-E5: a dynamic entry without an ACL accepts whatever flow the peer
                    // proposes.
                    notes.note(
                        e.line,
                        Why::Decided,
                        format!(
                            "{what}: no match address: any flow a peer proposes is accepted \
                             (as on IOS, seed F-E5)"
                        ),
                    );
                }
                let Some(settings) =
                    self.entry_settings(&what, e, acl.as_ref().map(|a| a.1.as_slice()), notes)
                else {
                    continue;
                };
                // `set peer` in a dynamic map restricts who may use the entry: the made
                // profile then matches those peers only, never widened to any.
                let peers: Vec<IpAddr> = e.peers.iter().map(|(p, _)| *p).collect();
                let profile = match &e.ike_profile {
                    Some(_) if !peers.is_empty() => {
                        notes.note(
                            e.line,
                            Why::Unsupported,
                            format!(
                                "{what}: set peer with an IKE profile: a dynamic map entry \
                                 cannot restrict its peers beyond the profile's match_identity; \
                                 not imported (narrow the profile's identities instead)"
                            ),
                        );
                        None
                    }
                    Some(n) => self.named_ike_profile(&what, n, ike, notes),
                    None => self
                        .map_ike_profile(
                            &format!("{dname}-{}", e.seq),
                            &what,
                            e.line,
                            &peers,
                            notes,
                            keyrings,
                            (v1, v2, v1_auth),
                        )
                        .filter(|(_, kept)| peers.is_empty() || !kept.is_empty())
                        .map(|(n, _)| n),
                };
                let Some(profile) = profile else { continue };
                s.lines.push(String::new());
                s.lines
                    .push(format!("[[dynamic_map.{}.entry]]", key(dname)));
                s.kv("seq", e.seq.to_string());
                if let Some((a, _)) = &acl {
                    s.kv("match_address", q(a));
                    acls.push(a.clone());
                }
                s.lines.extend(settings);
                s.kv("ike_profile", q(&profile));
                s.from.extend(self.span(e.line));
            }
            if s.from.is_empty() {
                continue;
            }
            for a in &acls {
                self.acl_section(a, &cache, &mut written);
            }
            self.sections.push(s);
            dyn_ok.insert(dname.clone());
        }
        let locals = Self::local_addresses(ios);
        for ((v6, mname), set) in &ios.crypto_maps {
            let v6 = *v6;
            let out_name = if v6 && ios.crypto_maps.contains_key(&(false, mname.clone())) {
                format!("{mname}-v6")
            } else {
                mname.clone()
            };
            let label = if v6 {
                format!("ipv6 {mname}")
            } else {
                mname.clone()
            };
            let mut from = Vec::new();
            // Where it terminates: `local-address`, else the interface that carries it.
            let carriers: Vec<(&str, usize)> = ios
                .interfaces
                .iter()
                .filter_map(|i| {
                    let m = if v6 { &i.crypto_map_v6 } else { &i.crypto_map };
                    m.as_ref()
                        .filter(|(n, _)| n == mname)
                        .map(|(_, l)| (i.name.as_str(), *l))
                })
                .collect();
            for (ifname, line) in carriers.iter().skip(1) {
                notes.note(
                    *line,
                    Why::Unsupported,
                    format!(
                        "crypto map {label} is also applied to {ifname}: a vtid map has one \
                         local interface; only {}'s is imported",
                        carriers[0].0
                    ),
                );
            }
            let local = if let Some((ifname, line)) = &set.local_address {
                from.push(*line);
                let addr = ios
                    .interfaces
                    .iter()
                    .find(|i| &i.name == ifname)
                    .and_then(|i| i.address)
                    .filter(|a| a.addr().is_ipv6() == v6);
                match addr {
                    Some(a) => {
                        notes.note(
                            *line,
                            Why::Decided,
                            format!(
                                "crypto map {label} local-address {ifname}: its address {}, \
                                 written as local_address",
                                a.addr()
                            ),
                        );
                        format!("local_address = {}", q(&a.addr().to_string()))
                    }
                    None => format!("interface = {}", q(&self.ifname(ifname, *line))),
                }
            } else if let Some((ifname, line)) = carriers.first() {
                from.push(*line);
                format!("interface = {}", q(&self.ifname(ifname, *line)))
            } else {
                for e in set.entries.values() {
                    notes.note(
                        e.line,
                        Why::Unsupported,
                        format!(
                            "crypto map {label} {}: the map is applied to no interface, so IOS \
                             does not use it; not imported",
                            e.seq
                        ),
                    );
                }
                continue;
            };
            if let Some((_, line)) = &set.ike_profile {
                from.push(*line);
            }
            let mut cands: Vec<MapCandidate> = Vec::new();
            for e in set.entries.values() {
                let what = format!("crypto map {label} {}", e.seq);
                if let Some(c) = self.map_candidate(
                    &what,
                    &out_name,
                    set,
                    e,
                    &mut cache,
                    &locals,
                    &dyn_ok,
                    notes,
                    ike,
                    keyrings,
                    (v1, v2, v1_auth),
                ) {
                    cands.push(c);
                }
            }
            let cands = order_checked(&label, cands, notes);
            if cands.is_empty() {
                continue;
            }
            let mut s = Section::new(format!("[crypto_map.{}]", key(&out_name)), from);
            s.lines.push(local);
            for c in &cands {
                if let Some((a, _)) = &c.acl {
                    self.acl_section(a, &cache, &mut written);
                }
                s.lines.push(String::new());
                s.lines
                    .push(format!("[[crypto_map.{}.entry]]", key(&out_name)));
                s.lines.extend(c.lines.iter().cloned());
                s.from.extend(self.span(c.line));
            }
            self.sections.push(s);
        }
        // ACLs no imported map entry matches are packet filters.
        for (name, a) in &ios.acls {
            let why = match cache.get(name) {
                Some(AclResult::Ok(..)) if !written.contains(name) => {
                    format!("access list {name}: not imported, as no map entry that matches it was")
                }
                Some(_) => continue,
                None => format!(
                    "access list {name}: packet filters are nftables' job on Linux; only the \
                     access lists crypto maps match are imported"
                ),
            };
            // A named ACL is one block (its head's remark covers it); a numbered one is a
            // block per line.
            let lines = if self.span(a.line).len() > 1 {
                vec![a.line]
            } else {
                a.all.clone()
            };
            for l in lines {
                notes.note(l, Why::Unsupported, why.clone());
            }
        }
    }

    /// One crypto map entry, checked and written, or None with the reason noted.
    #[allow(clippy::too_many_arguments)]
    fn map_candidate(
        &mut self,
        what: &str,
        map: &str,
        set: &super::model::CryptoMapSet,
        e: &MapEntry,
        cache: &mut BTreeMap<String, AclResult>,
        locals: &[(IpAddr, &str)],
        dyn_ok: &BTreeSet<String>,
        notes: &mut Notes,
        ike: &BTreeSet<String>,
        keyrings: &BTreeMap<String, Vec<PeerRef>>,
        props: (&[String], &[String], &'static str),
    ) -> Option<MapCandidate> {
        let mut lines = vec![format!("seq = {}", e.seq)];
        if let MapKind::Dynamic {
            set: dset,
            discover,
        } = &e.kind
        {
            if *discover {
                notes.note(
                    e.line,
                    Why::Unsupported,
                    format!(
                        "{what}: discover (Tunnel Endpoint Discovery) is Cisco-proprietary and \
                         not supported: the entry is imported without it, so this end answers \
                         peers but does not find and call them"
                    ),
                );
            }
            if !dyn_ok.contains(dset) {
                notes.note(
                    e.line,
                    Why::Unsupported,
                    format!("{what}: dynamic map {dset} was not imported; neither is the entry"),
                );
                return None;
            }
            lines.push(format!("dynamic_map = {}", q(dset)));
            return Some(MapCandidate {
                seq: e.seq,
                line: e.line,
                acl: None,
                lines,
            });
        }
        let manual = e.kind == MapKind::Manual;
        let acl = self.entry_acl(what, e, cache, notes).ok()?;
        let Some((acl_name, parsed)) = acl else {
            notes.note(
                e.line,
                Why::Unsupported,
                format!("{what}: no match address; IOS leaves the entry incomplete; not imported"),
            );
            return None;
        };
        let mut peers: Vec<IpAddr> = Vec::new();
        for (p, line) in &e.peers {
            if peers.contains(p) {
                notes.note(
                    *line,
                    Why::Decided,
                    format!("{what}: peer {p} listed twice; once is enough"),
                );
                continue;
            }
            if let Some((_, ifname)) = locals.iter().find(|(a, _)| a == p) {
                notes.note(
                    *line,
                    Why::Decided,
                    format!(
                        "{what}: peer {p} is the address of this router's own {ifname}: the \
                         configuration is inconsistent (the seeds' example is); imported as \
                         written, the entry cannot negotiate until the peer is corrected"
                    ),
                );
            }
            peers.push(*p);
        }
        if peers.is_empty() {
            notes.note(
                e.line,
                Why::Unsupported,
                format!("{what}: no set peer; IOS leaves the entry incomplete; not imported"),
            );
            return None;
        }
        let max = if manual { 1 } else { 8 };
        if peers.len() > max {
            notes.note(
                e.line,
                Why::Unsupported,
                format!(
                    "{what}: {} peers; vtid takes {max}{}: the first {max} are imported",
                    peers.len(),
                    if manual {
                        " for a manual entry (as IOS)"
                    } else {
                        ""
                    }
                ),
            );
            peers.truncate(max);
        }
        let mut settings = self.entry_settings(what, e, Some(&parsed), notes)?;
        if manual {
            return self.manual_candidate(
                what, map, e, acl_name, parsed, peers, settings, lines, notes,
            );
        }
        let named = e.ike_profile.as_ref().or(set.ike_profile.as_ref());
        let profile = match named {
            Some(n) => Some(self.named_ike_profile(what, n, ike, notes)?),
            None => {
                // A derived profile keeps the ISAKMP policies' algorithms (vtid's own
                // derivation would offer its default proposal).
                let (n, kept) = self.map_ike_profile(
                    &format!("{map}-{}", e.seq),
                    what,
                    e.line,
                    &peers,
                    notes,
                    keyrings,
                    props,
                )?;
                if kept.is_empty() {
                    return None;
                }
                peers = kept;
                Some(n)
            }
        };
        lines.push(format!("match_address = {}", q(&acl_name)));
        let ps: Vec<String> = peers.iter().map(IpAddr::to_string).collect();
        lines.push(format!("peers = {}", qlist(&ps)));
        lines.append(&mut settings);
        if let Some(p) = profile {
            lines.push(format!("ike_profile = {}", q(&p)));
        }
        Some(MapCandidate {
            seq: e.seq,
            line: e.line,
            acl: Some((acl_name, parsed)),
            lines,
        })
    }

    /// An `ipsec-manual` entry: its keys go to files, as pre-shared keys do.
    #[allow(clippy::too_many_arguments)]
    fn manual_candidate(
        &mut self,
        what: &str,
        map: &str,
        e: &MapEntry,
        acl_name: String,
        parsed: Vec<AclEntry>,
        peers: Vec<IpAddr>,
        mut settings: Vec<String>,
        mut lines: Vec<String>,
        notes: &mut Notes,
    ) -> Option<MapCandidate> {
        let sets: Vec<&String> = e
            .transform_sets
            .iter()
            .map(|(t, _)| t)
            .filter(|t| self.ios.transform_sets.contains_key(*t))
            .collect();
        let aead = sets
            .first()
            .and_then(|t| self.ios.transform_sets.get(*t))
            .is_some_and(|t| t.integrity.is_none());
        if sets.len() > 1 {
            notes.note(
                e.line,
                Why::Unsupported,
                format!(
                    "{what}: a manual entry uses one transform set (as IOS); only {} is imported",
                    sets[0]
                ),
            );
            let first = q(sets[0]);
            for l in &mut settings {
                if l.starts_with("transform_sets") {
                    *l = format!("transform_sets = [{first}]");
                }
            }
        }
        let mut keys = Vec::new();
        for inbound in [true, false] {
            let dir = if inbound { "inbound" } else { "outbound" };
            let Some(k) = e.session_keys.iter().rev().find(|k| k.inbound == inbound) else {
                notes.note(
                    e.line,
                    Why::Unsupported,
                    format!("{what}: no {dir} ESP session key; not imported"),
                );
                return None;
            };
            if aead == k.auth.is_some() {
                notes.note(
                    k.line,
                    Why::Unsupported,
                    format!(
                        "{what}: the {dir} session key {} an authenticator, but transform set \
                         {} {}; not imported",
                        if k.auth.is_some() { "has" } else { "has no" },
                        sets[0],
                        if aead {
                            "is AEAD (none needed)"
                        } else {
                            "needs one"
                        }
                    ),
                );
                return None;
            }
            keys.push((dir, k));
        }
        lines.push("manual = true".into());
        lines.push(format!("match_address = {}", q(&acl_name)));
        let ps: Vec<String> = peers.iter().map(IpAddr::to_string).collect();
        lines.push(format!("peers = {}", qlist(&ps)));
        lines.append(&mut settings);
        for (dir, k) in keys {
            let short = if dir == "inbound" { "in" } else { "out" };
            let base = format!("{}-{}-{short}", file_part(map), e.seq);
            let cipher = self.opts.key_dir.join(format!("{base}-cipher.key"));
            self.keys.push(KeyFile {
                path: cipher.clone(),
                key: k.cipher.clone(),
            });
            let mut v = format!(
                "{{ spi = {}, cipher_file = {}",
                k.spi,
                q(&cipher.to_string_lossy())
            );
            if let Some(a) = &k.auth {
                let auth = self.opts.key_dir.join(format!("{base}-auth.key"));
                self.keys.push(KeyFile {
                    path: auth.clone(),
                    key: a.clone(),
                });
                let _ = write!(v, ", authenticator_file = {}", q(&auth.to_string_lossy()));
            }
            v.push_str(" }");
            lines.push(format!("session_key_{dir} = {v}"));
        }
        notes.note(
            e.line,
            Why::Decided,
            format!(
                "{what}: manual keys written to files under {} (never into this file); manual \
                 SAs never rekey and have no replay protection beyond one key's life: move to \
                 ipsec-isakmp when you can",
                self.opts.key_dir.display()
            ),
        );
        Some(MapCandidate {
            seq: e.seq,
            line: e.line,
            acl: Some((acl_name, parsed)),
            lines,
        })
    }
}

/// The checks `vtid check` makes across a map's entries, applied before writing: an entry
/// that breaks one is left out with the reason, as IOS would never use it as written.
fn order_checked(label: &str, cands: Vec<MapCandidate>, notes: &mut Notes) -> Vec<MapCandidate> {
    let mut kept: Vec<MapCandidate> = Vec::new();
    'next: for c in cands {
        if let Some((name, acl)) = &c.acl {
            for k in &kept {
                let Some((kname, kacl)) = &k.acl else {
                    continue;
                };
                let why = if kname == name {
                    // Seed F-E2.
                    Some(format!(
                        "uses access list {name} as entry {} does; each entry of a map needs its \
                         own (seed F-E2)",
                        k.seq
                    ))
                } else {
                    acl.iter().filter(|l| l.permit).find_map(|l| {
                        kacl.iter().find_map(|e| {
                            if !e.permit && l.within(e) {
                                // Seed F-B6.
                                Some(format!(
                                    "permits \"{l}\", which entry {} denies (\"{e}\"): a deny in \
                                     one entry and a permit of the same traffic in another is not \
                                     supported (IOS neither, seed F-B6); move the permit into \
                                     entry {}",
                                    k.seq, k.seq
                                ))
                            } else if e.permit && l.within(e) && l != e {
                                // Seed F-B5.
                                Some(format!(
                                    "permits \"{l}\", inside entry {}'s \"{e}\", which is \
                                     evaluated first and takes that traffic (seed F-B5: the more \
                                     specific entry needs the lower sequence number)",
                                    k.seq
                                ))
                            } else {
                                None
                            }
                        })
                    })
                };
                if let Some(why) = why {
                    notes.note(
                        c.line,
                        Why::Unsupported,
                        format!("crypto map {label} {}: {why}; not imported", c.seq),
                    );
                    continue 'next;
                }
            }
        }
        kept.push(c);
    }
    kept
}

impl Emitter<'_> {
    /// A protected GRE tunnel: `mode = "gre"` (with its destination and routes) or `"mgre"`
    /// (multipoint: NHRP supplies the peers), with `tunnel key`, `tunnel ttl` and `shared`.
    fn gre_tunnel(
        &mut self,
        i: &Interface,
        mgre: bool,
        ipsec: &BTreeSet<String>,
        ike: &BTreeSet<String>,
        vrfs: &BTreeSet<String>,
        notes: &mut Notes,
    ) {
        let (Some(source), Some((profile, shared, pline))) = (&i.source, &i.protection) else {
            return;
        };
        if !ipsec.contains(profile) {
            notes.note(
                i.line,
                Why::Unsupported,
                format!(
                    "interface {}: its IPsec profile {profile} (line {pline}) was not imported; \
                     neither is the tunnel",
                    i.name
                ),
            );
            return;
        }
        let name = self.own_name(&i.name);
        let mut s = Section::new(format!("[tunnel.{}]", key(&name)), self.span(i.line));
        s.kv("mode", q(if mgre { "mgre" } else { "gre" }));
        let src = if source.parse::<IpAddr>().is_ok() {
            source.clone()
        } else {
            self.ifname(source, i.line)
        };
        s.kv("source", q(&src));
        if let (false, Some(d)) = (mgre, i.destination) {
            s.kv("destination", q(&d.to_string()));
        }
        if let Some(a) = i.address {
            s.kv("address", q(&a.to_string()));
        } else if let Some(u) = &i.unnumbered {
            s.kv("unnumbered", q(&self.ifname(u, i.line)));
        }
        s.kv("protection", q(profile));
        if let Some(k) = i.key {
            s.kv("key", k.to_string());
        }
        if let Some(t) = i.ttl {
            s.kv("ttl", t.to_string());
        }
        match (*shared, mgre) {
            (true, true) => {
                s.kv("shared", "true".into());
            }
            (true, false) => notes.note(
                *pline,
                Why::Dropped,
                "shared: only mGRE tunnels share SAs; a point-to-point GRE tunnel's SAs are \
                 its own",
            ),
            _ => {}
        }
        let profile_ike = self
            .ios
            .ipsec_profiles
            .get(profile)
            .and_then(|p| p.ike_profile.as_ref())
            .map(|(n, _)| n.clone());
        if profile_ike.as_ref().is_none_or(|n| !ike.contains(n)) {
            notes.note(
                i.line,
                Why::Decided,
                format!(
                    "interface {}: no IKE profile through its IPsec profile; vtid takes each \
                     peer's key from the keyrings",
                    i.name
                ),
            );
        }
        let transport = self.ios.ipsec_profiles.get(profile).is_some_and(|p| {
            p.transform_sets
                .iter()
                .all(|(t, _)| self.ios.transform_sets.get(t).is_some_and(|t| t.transport))
        });
        if !transport {
            notes.note(
                i.line,
                Why::Decided,
                format!(
                    "interface {}: GRE over IPsec runs in transport mode in vtid unless the \
                     transform sets say mode = \"tunnel\"; IOS uses tunnel mode when the set \
                     has no `mode transport`",
                    i.name
                ),
            );
        }
        if let Some(m) = i.mtu {
            s.kv("mtu", m.to_string());
        }
        if let Some(v) = i.vrf.as_ref().filter(|v| vrfs.contains(*v)) {
            s.kv("vrf", q(v));
        }
        if let Some(v) = i.fvrf.as_ref().filter(|v| vrfs.contains(*v)) {
            s.kv("fvrf", q(v));
        }
        if !mgre {
            let mine: Vec<_> = self
                .ios
                .routes
                .iter()
                .filter(|r| r.interface.as_deref() == Some(&i.name))
                .collect();
            let routes: Vec<String> = mine
                .iter()
                .map(|r| match r.distance {
                    Some(d) if d > 1 => {
                        format!("{{ prefix = {}, metric = {d} }}", q(&r.prefix.to_string()))
                    }
                    _ => q(&r.prefix.to_string()),
                })
                .collect();
            s.from.extend(mine.iter().map(|r| r.line));
            if !routes.is_empty() {
                s.kv("routes", format!("[{}]", routes.join(", ")));
            }
        }
        if i.shutdown {
            s.kv("initiate", "false".into());
        }
        self.sections.push(s);
    }
}
