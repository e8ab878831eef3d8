//! What a reload changes, from the old plan and the new one: the reconciler restarts exactly
//! the tunnels whose kernel objects or negotiation would differ, edits routes in place where
//! only they differ, and leaves everything else up.
//!
//! Plans are compared, not configuration text: a tunnel is changed when its [`TunnelPlan`] or
//! the engine connection derived for it ([`PeerPlan`], keys compared in constant time)
//! differs, whatever edit in the file caused it. A key added to a keyring for another peer,
//! a renamed profile with the same contents, or a reordered file change nothing.

use ike::ConnId;

use super::{Plan, TunnelPlan};

/// The difference between two plans. Names are sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanDiff {
    /// Tunnels only in the new plan.
    pub added: Vec<String>,
    /// Tunnels only in the old plan.
    pub removed: Vec<String>,
    /// Tunnels in both whose device or negotiation differs: rebuilt.
    pub changed: Vec<String>,
    /// Tunnels whose plan differs only in `routes` (and not in whether it carries IPv6, which
    /// decides the device's IPv6 settings and minimum MTU): their routes are edited on the
    /// running interface and their SAs kept. Not in `changed`.
    pub routes_only: Vec<String>,
    /// Tunnels whose plan differs only in the local address (a `source` interface that was
    /// renumbered): the runtime moves their sessions with MOBIKE (RFC 4555) where the peer
    /// supports it and rebuilds them otherwise. Not in `changed`.
    pub moved: Vec<String>,
    /// Template connections whose template plan or engine connection changed or went away:
    /// their sessions end so the peers come back onto clones of the new template.
    pub templates_changed: Vec<ConnId>,
    /// `[global]` changed.
    pub global_changed: bool,
}

impl PlanDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.routes_only.is_empty()
            && self.moved.is_empty()
            && self.templates_changed.is_empty()
            && !self.global_changed
    }
}

/// Compares two plans (pure).
pub fn diff(old: &Plan, new: &Plan) -> PlanDiff {
    let mut d = PlanDiff::default();
    for (name, t) in &new.tunnels {
        let Some(o) = old.tunnels.get(name) else {
            d.added.push(name.clone());
            continue;
        };
        let same_peer = old.peers.get(&o.conn) == new.peers.get(&t.conn);
        if same_peer && o == t {
            continue;
        }
        let routes_only = same_peer
            && o.carries_v6() == t.carries_v6()
            && TunnelPlan {
                routes: t.routes.clone(),
                ..o.clone()
            } == *t;
        // Only the address changed when putting the new one into the old plan (and into the
        // old connection) gives the new.
        let moved = o.local != t.local
            && TunnelPlan {
                local: t.local,
                ..o.clone()
            } == *t
            && old.peers.get(&o.conn).map(|p| {
                let mut p = p.clone();
                p.config.local.set_ip(t.local);
                p
            }) == new.peers.get(&t.conn).cloned();
        if routes_only {
            d.routes_only.push(name.clone());
        } else if moved {
            d.moved.push(name.clone());
        } else {
            d.changed.push(name.clone());
        }
    }
    d.removed = old
        .tunnels
        .keys()
        .filter(|n| !new.tunnels.contains_key(*n))
        .cloned()
        .collect();
    d.templates_changed = old
        .templates
        .iter()
        .filter(|(c, t)| new.templates.get(c) != Some(t) || old.peers.get(c) != new.peers.get(c))
        .map(|(c, _)| *c)
        .collect();
    d.global_changed = old.global != new.global;
    d
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{Config, LoadOptions};
    use crate::plan::{LocalAddrs, build};

    /// Two tunnels on two IPsec profiles, a template on the second, all keyed from KR1's 0/0
    /// entry (`{KEY}`).
    const DIFF_BASE: &str = r#"[transform_set.T1]
esp = "aes-gcm-256"
[transform_set.T2]
esp = "aes-gcm-128"
[ipsec_profile.P1]
transform_sets = ["T1"]
[ipsec_profile.P2]
transform_sets = ["T2"]
[keyring.KR1]
[[keyring.KR1.peer]]
address = "0.0.0.0/0"
psk_file = "{KEY}"
[tunnel.A]
source = "eth0"
destination = "10.0.0.1"
address = "10.9.0.1/30"
protection = "P1"
[tunnel.B]
source = "eth0"
destination = "10.0.0.2"
address = "10.9.0.5/30"
protection = "P2"
[ike_profile.HUB]
keyring = "KR1"
match_identity = ["any"]
virtual_template = "VT1"
[virtual_template.VT1]
unnumbered = "lo"
protection = "P2"
"#;

    /// Key files in a private directory, removed on drop.
    struct Keys(PathBuf);

    impl Keys {
        fn new(tag: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("vtid-plan-diff-{tag}-{}", std::process::id()));
            fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        fn write(&self, name: &str, key: &str) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, key).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            p
        }
    }

    impl Drop for Keys {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn links() -> LocalAddrs {
        let mut l = LocalAddrs::default();
        l.links.insert(
            "eth0".into(),
            (1500, vec!["10.0.0.100/24".parse().unwrap()]),
        );
        l.links
            .insert("lo".into(), (65536, vec!["127.0.0.1/8".parse().unwrap()]));
        l
    }

    /// Loads `src` (keys read) and plans it with `ids`, as start and reload do.
    fn plan(src: &str, key: &Path, ids: &mut BTreeMap<String, u32>) -> Plan {
        let opts = LoadOptions {
            secret_owner_uid: nix::unistd::getuid().as_raw(),
            read_files: true,
        };
        let src = src.replace("{KEY}", &key.display().to_string());
        let cfg =
            Config::from_toml(Path::new("t.toml"), &src, &opts).unwrap_or_else(|e| panic!("{e}"));
        build(&cfg, ids, &links()).unwrap()
    }

    /// The old plan of `DIFF_BASE` and the new plan of `new`, with stable connection ids.
    fn diff_of(keys: &Keys, new: &str) -> PlanDiff {
        let key = keys.write("any.key", "old-key");
        let mut ids = BTreeMap::new();
        let old = plan(DIFF_BASE, &key, &mut ids);
        diff(&old, &plan(new, &key, &mut ids))
    }

    #[test]
    fn same_is_empty() {
        let keys = Keys::new("same");
        assert!(diff_of(&keys, DIFF_BASE).is_empty());
    }

    #[test]
    fn added_removed_changed() {
        let keys = Keys::new("arc");
        let new = DIFF_BASE
            .replace("[tunnel.A]", "[tunnel.C]")
            .replace("10.9.0.5/30", "10.9.0.9/30");
        let d = diff_of(&keys, &new);
        assert_eq!(d.added, ["C"]);
        assert_eq!(d.removed, ["A"]);
        assert_eq!(d.changed, ["B"]);
        assert!(d.templates_changed.is_empty());
        assert!(!d.global_changed);
    }

    #[test]
    fn follows_dependencies() {
        let keys = Keys::new("deps");
        let key = keys.write("any.key", "old-key");
        let mut ids = BTreeMap::new();
        let old = plan(DIFF_BASE, &key, &mut ids);
        // T2 is used by P2, which protects tunnel B and template VT1, not tunnel A.
        let new = DIFF_BASE.replace("esp = \"aes-gcm-128\"", "esp = \"chacha20-poly1305\"");
        let d = diff(&old, &plan(&new, &key, &mut ids));
        assert_eq!(d.changed, ["B"]);
        assert_eq!(d.templates_changed, [ConnId(ids["dvti:HUB#0"])]);
        assert!(d.added.is_empty() && d.removed.is_empty());
    }

    #[test]
    fn sees_key_change() {
        let keys = Keys::new("key");
        let key = keys.write("any.key", "old-key");
        let mut ids = BTreeMap::new();
        let old = plan(DIFF_BASE, &key, &mut ids);
        keys.write("any.key", "new-key");
        let d = diff(&old, &plan(DIFF_BASE, &key, &mut ids));
        // Both tunnels derive their IKE profile from KR1, and so does the template.
        assert_eq!(d.changed, ["A", "B"]);
        assert_eq!(d.templates_changed, [ConnId(ids["dvti:HUB#0"])]);
        // Nothing of either key in what a log line would print.
        assert!(!format!("{d:?} {old:?}").contains("old-key"));
    }

    #[test]
    fn key_for_another_peer_leaves_tunnel_alone() {
        let keys = Keys::new("other");
        let other = keys.write("b.key", "for-b-only");
        // A more specific key for B's peer: B now uses it, A still uses the 0/0 entry.
        let new = DIFF_BASE.replace(
            "[tunnel.A]",
            &format!(
                "[[keyring.KR1.peer]]\naddress = \"10.0.0.2\"\npsk_file = \"{}\"\n[tunnel.A]",
                other.display()
            ),
        );
        let d = diff_of(&keys, &new);
        assert_eq!(d.changed, ["B"]);
        assert!(d.routes_only.is_empty());
    }

    #[test]
    fn global() {
        let keys = Keys::new("global");
        let d = diff_of(
            &keys,
            &format!("[global]\nlog_level = \"debug\"\n{DIFF_BASE}"),
        );
        assert!(d.global_changed);
        assert!(
            d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty(),
            "{d:?}"
        );
        assert!(
            d.routes_only.is_empty() && d.templates_changed.is_empty(),
            "{d:?}"
        );
        // The IKE port is part of every connection (our and the peer's address): a rebuild.
        let d = diff_of(&keys, &format!("[global]\nike_port = 1500\n{DIFF_BASE}"));
        assert!(d.global_changed);
        assert_eq!(d.changed, ["A", "B"]);
    }

    #[test]
    fn routes_only_edit_is_not_a_restart() {
        let keys = Keys::new("routes");
        let routed = DIFF_BASE.replace(
            "protection = \"P1\"\n",
            "protection = \"P1\"\nroutes = [\"192.0.2.0/24\"]\n",
        );
        let d = diff_of(&keys, &routed);
        assert_eq!(d.routes_only, ["A"]);
        assert!(d.changed.is_empty(), "{d:?}");
        assert!(!d.is_empty());
        // Routes and anything else: a rebuild.
        let d = diff_of(
            &keys,
            &routed.replace("[tunnel.B]", "mtu = 1300\n[tunnel.B]"),
        );
        assert_eq!(d.changed, ["A"]);
        assert!(d.routes_only.is_empty());
        // The first IPv6 route turns IPv6 on for the device (and raises its minimum MTU):
        // a rebuild too.
        let v6 = routed.replace("192.0.2.0/24", "2001:db8::/64");
        let d = diff_of(&keys, &v6);
        assert_eq!(d.changed, ["A"]);
        assert!(d.routes_only.is_empty());
    }

    /// A renumbered `source` interface moves its tunnels (nothing else about them changed);
    /// one that loses its address leaves its tunnels waiting, and they come back as added.
    #[test]
    fn renumbered_source_moves_and_no_address_waits() {
        let keys = Keys::new("renumber");
        let key = keys.write("any.key", "old-key");
        let mut ids = BTreeMap::new();
        let src = DIFF_BASE.replace("{KEY}", &key.display().to_string());
        let opts = LoadOptions {
            secret_owner_uid: nix::unistd::getuid().as_raw(),
            read_files: true,
        };
        let cfg = Config::from_toml(Path::new("t.toml"), &src, &opts).unwrap();
        let old = build(&cfg, &mut ids, &links()).unwrap();
        let mut renumbered = links();
        renumbered.links.get_mut("eth0").unwrap().1 = vec!["10.0.0.200/24".parse().unwrap()];
        let new = build(&cfg, &mut ids, &renumbered).unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.moved, ["A", "B"], "{d:?}");
        assert!(d.changed.is_empty() && d.added.is_empty(), "{d:?}");
        assert_eq!(new.tunnels["A"].local.to_string(), "10.0.0.200");
        assert_eq!(
            new.peers[&new.tunnels["A"].conn].config.local.to_string(),
            "10.0.0.200:500"
        );

        let mut gone = links();
        gone.links.get_mut("eth0").unwrap().1.clear();
        let none = build(&cfg, &mut ids, &gone).unwrap();
        assert!(none.tunnels.is_empty());
        assert_eq!(
            none.waiting["A"], "source interface eth0 has no IPv4 address",
            "{:?}",
            none.waiting
        );
        let d = diff(&old, &none);
        assert_eq!(d.removed, ["A", "B"]);
        let d = diff(&none, &new);
        assert_eq!(d.added, ["A", "B"]);
        // Connection ids survive the wait.
        assert_eq!(new.tunnels["A"].conn, old.tunnels["A"].conn);
    }
}
