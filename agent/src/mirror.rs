//! `vtid check FILE --peer-config OTHER`: do the crypto maps of two ends mirror each other?
//!
//! The seeds require "for every static-map crypto ACL, the mirror image at the remote peer",
//! transforms in common and entries that name each other as peers (digest F-B7, F-E3).
//! Without a mirror SAs come up "only some of the time": "SAs are always requested according
//! to the crypto access lists at the initiating packet's end", so when one end's flow is a
//! subset of the other's (F-B7 case 3) only that end's initiation succeeds everywhere; the
//! wider end's proposal is narrowed by an IKEv2 responder (RFC 7296 §2.9) and refused by an
//! IKEv1 one (case 4). A flow with no counterpart never negotiates and its packets are
//! dropped.
//!
//! Pure: two checked configurations in, findings out. The CLI prints them.

use std::net::IpAddr;

use crate::config::acl::AclEntry;
use crate::config::{Config, CryptoMap, CryptoMapEntry, LocalTermination};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something the comparison could not look at.
    Note,
    /// Works only some of the time.
    Warning,
    /// Never works.
    Error,
}

/// One finding about an entry of this end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What, naming this end's map and entry.
    pub text: String,
}

/// The local address of a map, when it is given as one.
fn local_address(m: &CryptoMap) -> Option<IpAddr> {
    match m.local {
        LocalTermination::Address(a) => Some(a),
        LocalTermination::Interface(_) => None,
    }
}

/// Compares every crypto map entry of `this` whose peer is an address of a crypto map of
/// `other` with the entries of that map that name `this` as their peer.
pub fn compare(this: &Config, other: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut noted_interfaces = false;
    for (mname, m) in &this.crypto_maps {
        for e in &m.entries {
            let at = format!("crypto_map.{mname} entry {}", e.seq);
            for peer in &e.peers {
                let theirs: Vec<(&String, &CryptoMap)> = other
                    .crypto_maps
                    .iter()
                    .filter(|(_, o)| local_address(o) == Some(peer.addr))
                    .collect();
                let Some((oname, omap)) = theirs.first() else {
                    if !noted_interfaces
                        && other
                            .crypto_maps
                            .values()
                            .any(|o| local_address(o).is_none())
                    {
                        noted_interfaces = true;
                        out.push(Finding {
                            severity: Severity::Note,
                            text: format!(
                                "{at}: the peer configuration has maps applied to an interface \
                                 (its address is known only at run time): entries toward them \
                                 are not compared; give those maps local_address to compare them"
                            ),
                        });
                    }
                    continue;
                };
                let Some(mine) = local_address(m) else {
                    out.push(Finding {
                        severity: Severity::Note,
                        text: format!(
                            "{at}: this map is applied to an interface, so the peer's entries \
                             naming this end cannot be found; give it local_address to compare"
                        ),
                    });
                    continue;
                };
                let matching: Vec<&CryptoMapEntry> = omap
                    .entries
                    .iter()
                    .filter(|o| o.peers.iter().any(|p| p.addr == mine))
                    .collect();
                let at = format!("{at} (peer {})", peer.addr);
                if matching.is_empty() {
                    // F-E3: map entries must name each other as peers.
                    out.push(Finding {
                        severity: Severity::Error,
                        text: format!(
                            "{at}: no mirrored entry: no entry of the peer's crypto_map.{oname} \
                             names {mine} as its peer, so traffic of access list {} never \
                             negotiates (seed F-B7, F-E3)",
                            e.access_list
                        ),
                    });
                    continue;
                }
                out.extend(compare_flows(&at, e, &matching));
                out.extend(compare_transforms(&at, e, &matching));
            }
        }
    }
    out
}

/// Each permit line of `e` against the mirrored permit lines of the peer's entries.
fn compare_flows(at: &str, e: &CryptoMapEntry, theirs: &[&CryptoMapEntry]) -> Vec<Finding> {
    let mirrored: Vec<AclEntry> = theirs
        .iter()
        .flat_map(|o| o.acl.iter().filter(|x| x.permit).map(AclEntry::mirrored))
        .collect();
    let mut out = Vec::new();
    for l in e.acl.iter().filter(|x| x.permit) {
        out.extend(compare_line(at, l, &mirrored));
    }
    out
}

/// One permit line of this end against the peer's lines, mirrored.
pub fn compare_line(at: &str, l: &AclEntry, mirrored: &[AclEntry]) -> Option<Finding> {
    if mirrored.iter().any(|m| m == l) {
        return None;
    }
    let warn = |text: String| {
        Some(Finding {
            severity: Severity::Warning,
            text,
        })
    };
    if let Some(m) = mirrored.iter().find(|m| l.within(m)) {
        // F-B7 case 3: this end's request is a subset of what the peer permits.
        return warn(format!(
            "{at}: \"{l}\" is narrower than the peer's mirrored \"{m}\": works when this end \
             initiates; the peer's proposal is narrowed (IKEv2) or refused (IKEv1 peers, seed \
             F-B7 case 4)"
        ));
    }
    if let Some(m) = mirrored.iter().find(|m| m.within(l)) {
        return warn(format!(
            "{at}: \"{l}\" is wider than the peer's mirrored \"{m}\": works when the peer \
             initiates; this end's proposal is narrowed by the peer (IKEv2) or refused (IKEv1 \
             peers, seed F-B7 case 4)"
        ));
    }
    if let Some(m) = mirrored.iter().find(|m| m.overlaps(l)) {
        return warn(format!(
            "{at}: \"{l}\" only partly overlaps the peer's mirrored \"{m}\": only traffic in \
             both negotiates, and only when IKEv2 narrowing finds it"
        ));
    }
    Some(Finding {
        severity: Severity::Error,
        text: format!(
            "{at}: no mirrored entry: traffic \"{l}\" never negotiates (the peer permits nothing \
             of it toward this end; seed F-B7) and is dropped"
        ),
    })
}

/// Seed F-B7: "map entries must also share transforms".
fn compare_transforms(at: &str, e: &CryptoMapEntry, theirs: &[&CryptoMapEntry]) -> Option<Finding> {
    let common = e.ipsec.sets.iter().any(|a| {
        theirs.iter().any(|o| {
            o.ipsec
                .sets
                .iter()
                .any(|b| a.esp == b.esp && a.integrity == b.integrity)
        })
    });
    (!common).then(|| Finding {
        severity: Severity::Error,
        text: format!(
            "{at}: no transform set in common with the peer's entry: [{}] here; no Child SA can \
             be negotiated (seed F-B7)",
            e.ipsec.transform_sets.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadOptions;

    fn cfg(local: &str, peer: &str, acl: &[&str], esp: &str) -> Config {
        let entries: Vec<String> = acl.iter().map(|a| format!("\"{a}\"")).collect();
        let src = format!(
            "[keyring.K]\n[[keyring.K.peer]]\naddress = \"{peer}/32\"\npsk_file = \"/nonexistent\"\n\
             [transform_set.T1]\nesp = \"{esp}\"\n\
             [access_list.A]\nentries = [{}]\n\
             [crypto_map.M]\nlocal_address = \"{local}\"\n\
             [[crypto_map.M.entry]]\nseq = 10\nmatch_address = \"A\"\npeers = [\"{peer}\"]\n\
             transform_sets = [\"T1\"]\n",
            entries.join(", ")
        );
        let opts = LoadOptions {
            read_files: false,
            ..LoadOptions::default()
        };
        Config::from_toml(std::path::Path::new("t.toml"), &src, &opts)
            .unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    const M: &str = "192.0.2.1";
    const N: &str = "192.0.2.2";

    #[test]
    fn a_mirrored_pair_has_no_findings() {
        let m = cfg(
            M,
            N,
            &[
                "deny ip host 10.10.0.9 10.20.0.0/16",
                "permit ip 10.10.0.0/16 10.20.0.0/16",
            ],
            "aes-gcm-256",
        );
        let n = cfg(
            N,
            M,
            &["permit ip 10.20.0.0/16 10.10.0.0/16"],
            "aes-gcm-256",
        );
        assert_eq!(compare(&m, &n), []);
        assert_eq!(compare(&n, &m), []);
    }

    #[test]
    fn seed_case_3_and_4_subset_and_superset_warn_each_way() {
        // F-B7: M permits host 10.10.0.5 <-> host 10.20.0.5, N permits X <-> Y.
        let m = cfg(
            M,
            N,
            &["permit ip host 10.10.0.5 host 10.20.0.5"],
            "aes-gcm-256",
        );
        let n = cfg(
            N,
            M,
            &["permit ip 10.20.0.0/16 10.10.0.0/16"],
            "aes-gcm-256",
        );
        let f = compare(&m, &n);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].text.contains("works when this end initiates"), "{f:?}");
        assert!(
            f[0].text.contains("crypto_map.M entry 10 (peer 192.0.2.2)"),
            "{f:?}"
        );
        // Case 4 seen from N: its request is the superset.
        let f = compare(&n, &m);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].text.contains("works when the peer initiates"), "{f:?}");
    }

    #[test]
    fn disjoint_flows_transforms_and_unnamed_peers_are_errors() {
        let m = cfg(
            M,
            N,
            &["permit ip 10.10.0.0/16 10.20.0.0/16"],
            "aes-gcm-256",
        );
        let n = cfg(
            N,
            M,
            &["permit ip 10.30.0.0/16 10.10.0.0/16"],
            "aes-cbc-256\"\nintegrity = \"sha256",
        );
        let f = compare(&m, &n);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|x| x.severity == Severity::Error));
        assert!(
            f[0].text
                .contains("no mirrored entry: traffic \"permit ip 10.10.0.0/16 10.20.0.0/16\"")
        );
        assert!(f[1].text.contains("no transform set in common"));
        // N's entry names another peer than M: M's entry has no counterpart (F-E3).
        let n = cfg(
            N,
            "192.0.2.7",
            &["permit ip 10.20.0.0/16 10.10.0.0/16"],
            "aes-gcm-256",
        );
        let f = compare(&m, &n);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].text.contains("names 192.0.2.1 as its peer"), "{f:?}");
        // A peer that is not the other file's address is not compared.
        let elsewhere = cfg(
            "198.51.100.1",
            M,
            &["permit ip 10.20.0.0/16 10.10.0.0/16"],
            "aes-gcm-256",
        );
        assert_eq!(compare(&m, &elsewhere), []);
    }
}
