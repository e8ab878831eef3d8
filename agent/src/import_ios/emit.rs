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

use super::model::{Interface, Ios, KeyEntry, PeerRef, TunnelMode};
use super::{KeyFile, Notes, Options, Why};
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
    let ike = e.ike_profiles(notes, &keyrings, &v1_props, &v2_props, v1_auth, &templates);
    e.transform_sets(notes, &vti_sets);
    let ipsec = e.ipsec_profiles(notes, &ike);
    e.virtual_templates(notes, &ipsec, &ike, &vrfs, &templates);
    e.tunnels(
        notes, &ipsec, &ike, &vrfs, &keyrings, &v1_props, &v2_props, v1_auth,
    );
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
            let integ = match p.hash.0.as_str() {
                "sha" => Some("sha1".to_owned()),
                h @ ("sha256" | "sha384" | "sha512") => Some(h.to_owned()),
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
                "ecdsa-sig" => Some("ecdsa-sig"),
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
            if !p.ikev2 {
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

    fn transform_sets(&mut self, notes: &mut Notes, vti_sets: &BTreeSet<String>) {
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
            let sets: Vec<&String> = p
                .transform_sets
                .iter()
                .filter(|(t, line)| {
                    let ok = self.ios.transform_sets.contains_key(t);
                    if !ok {
                        notes.note(
                            *line,
                            Why::Unsupported,
                            format!("IPsec profile {name}: transform set {t} was not imported"),
                        );
                    }
                    ok
                })
                .map(|(t, _)| t)
                .collect();
            if sets.is_empty() {
                notes.note(
                    p.line,
                    Why::Unsupported,
                    format!("IPsec profile {name} has no transform set vtid can use; not imported"),
                );
                continue;
            }
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
            None => "no tunnel mode line: IOS's default is GRE, and GRE over IPsec is not \
                     supported yet"
                .to_owned(),
            Some((TunnelMode::Gre(m), _)) => format!(
                "tunnel mode {m}: GRE{} over IPsec is not supported yet",
                if m.contains("multipoint") {
                    " (mGRE, DMVPN)"
                } else {
                    ""
                }
            ),
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
            if !matches!(i.mode, Some((TunnelMode::Ipsec, _))) {
                self.not_ipsec(i, notes);
                continue;
            }
            let mut missing = Vec::new();
            if i.destination.is_none() {
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
        let props = if ikev1 { v1 } else { v2 };
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
                if ikev1 {
                    ", ISAKMP policies as IKEv2 proposals"
                } else {
                    ""
                }
            ),
        );
        if !props.is_empty() {
            s.kv("proposals", qlist(props));
        }
        if let Some((iv, r)) = self.ios.keepalive {
            s.kv(
                "dpd",
                format!("{{ interval = {iv}, retries = {r}, action = \"restart\" }}"),
            );
        }
        if ikev1 && let Some(l) = self.first_v1_lifetime() {
            s.kv("lifetime_seconds", l.to_string());
        }
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
                i.name.starts_with("Tunnel") && matches!(i.mode, Some((TunnelMode::Ipsec, _)))
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
