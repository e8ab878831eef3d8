//! `vtid.toml` for scenario tests, written as builder calls instead of inline TOML: keyrings,
//! transform sets, profiles, tunnels and templates, each a table whose keys are set in the
//! order they are rendered. Values are TOML literals made by [`Value`]'s conversions (a `&str`
//! is a quoted string, a slice of them an array), so a test states what it configures, not
//! how TOML spells it.
//!
//! ```
//! # use std::path::Path;
//! let mut c = nstest::vtidconf::VtidConf::new();
//! c.keyring("K", &[("192.0.2.2", Path::new("/k"))]);
//! c.transform_set("T", "aes-gcm-256");
//! c.ipsec_profile("P", &["T"]);
//! c.tunnel("tun0").set("source", "192.0.2.1").set("initiate", false);
//! assert!(c.render().contains("[tunnel.tun0]\nsource = \"192.0.2.1\"\ninitiate = false\n"));
//! ```

use std::fmt;
use std::path::Path;

/// A TOML value, already rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    /// A literal written as is (an inline table, a number kept as text).
    pub fn raw(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// An inline table of numbers, e.g. `lifetime = { seconds = 600, kilobytes = 2560 }`.
    pub fn inline(pairs: &[(&str, u64)]) -> Self {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        Self(format!("{{ {} }}", body.join(", ")))
    }
}

/// A basic string with TOML's escapes for what paths and names can contain.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self(quote(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self(quote(&s))
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Self(quote(s))
    }
}

impl From<&Path> for Value {
    fn from(p: &Path) -> Self {
        Self(quote(&p.display().to_string()))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self(b.to_string())
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Self(n.to_string())
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Self(n.to_string())
    }
}

impl From<&[&str]> for Value {
    fn from(items: &[&str]) -> Self {
        let q: Vec<String> = items.iter().map(|s| quote(s)).collect();
        Self(format!("[{}]", q.join(", ")))
    }
}

impl<const N: usize> From<&[&str; N]> for Value {
    fn from(items: &[&str; N]) -> Self {
        Self::from(&items[..])
    }
}

impl From<&[String]> for Value {
    fn from(items: &[String]) -> Self {
        let q: Vec<String> = items.iter().map(|s| quote(s)).collect();
        Self(format!("[{}]", q.join(", ")))
    }
}

/// One `[header]` (or `[[header]]` array element) and its keys in order.
#[derive(Clone, Debug)]
pub struct Table {
    header: String,
    array: bool,
    entries: Vec<(String, Value)>,
}

impl Table {
    /// Sets `key`; setting it again replaces the value where it was.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        // A key set again replaces its value in place (TOML refuses duplicate keys).
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
        self
    }

    /// Sets `key` only when `value` is `Some`.
    pub fn set_opt<V: Into<Value>>(&mut self, key: &str, value: Option<V>) -> &mut Self {
        if let Some(v) = value {
            self.set(key, v);
        }
        self
    }
}

/// A whole `vtid.toml`, tables in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct VtidConf {
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    Table(Table),
    Text(String),
}

impl VtidConf {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Any table, `[header]`; the one already there when it was asked for before.
    pub fn table(&mut self, header: &str) -> &mut Table {
        // Asked again, the same table (TOML refuses a table defined twice).
        let at = self
            .parts
            .iter()
            .position(|p| matches!(p, Part::Table(t) if !t.array && t.header == header));
        match at {
            Some(i) => match &mut self.parts[i] {
                Part::Table(t) => t,
                _ => unreachable!("position found a table"),
            },
            None => self.push(header, false),
        }
    }

    fn push(&mut self, header: &str, array: bool) -> &mut Table {
        self.parts.push(Part::Table(Table {
            header: header.to_string(),
            array,
            entries: Vec::new(),
        }));
        match self.parts.last_mut() {
            Some(Part::Table(t)) => t,
            _ => unreachable!("a table was just pushed"),
        }
    }

    /// TOML text appended verbatim (e.g. a test's constant set of templates).
    pub fn text(&mut self, toml: &str) -> &mut Self {
        self.parts.push(Part::Text(toml.to_string()));
        self
    }

    /// `[vrf.NAME]` with its routing table.
    pub fn vrf(&mut self, name: &str, table: u32) -> &mut Table {
        self.table(&format!("vrf.{name}")).set("table", table)
    }

    /// `[keyring.NAME]` with one `[[keyring.NAME.peer]]` per (address, PSK file).
    pub fn keyring(&mut self, name: &str, peers: &[(&str, &Path)]) -> &mut Self {
        self.table(&format!("keyring.{name}"));
        for (address, psk_file) in peers {
            self.push(&format!("keyring.{name}.peer"), true)
                .set("address", *address)
                .set("psk_file", *psk_file);
        }
        self
    }

    /// `[trustpoint.NAME]`: CA files, the own certificate and its key.
    pub fn trustpoint(&mut self, name: &str, ca: &[&Path], cert: &Path, key: &Path) -> &mut Table {
        let ca: Vec<String> = ca.iter().map(|p| p.display().to_string()).collect();
        self.table(&format!("trustpoint.{name}"))
            .set("ca", &ca[..])
            .set("certificate", cert)
            .set("private_key", key)
    }

    /// `[transform_set.NAME]` with its ESP cipher; add `integrity` for a non-AEAD one.
    pub fn transform_set(&mut self, name: &str, esp: &str) -> &mut Table {
        self.table(&format!("transform_set.{name}")).set("esp", esp)
    }

    /// `[ike_proposal.NAME]`.
    pub fn ike_proposal(&mut self, name: &str) -> &mut Table {
        self.table(&format!("ike_proposal.{name}"))
    }

    /// `[ipsec_profile.NAME]` offering `transform_sets` in that order.
    pub fn ipsec_profile(&mut self, name: &str, transform_sets: &[&str]) -> &mut Table {
        self.table(&format!("ipsec_profile.{name}"))
            .set("transform_sets", transform_sets)
    }

    /// `[ike_profile.NAME]`.
    pub fn ike_profile(&mut self, name: &str) -> &mut Table {
        self.table(&format!("ike_profile.{name}"))
    }

    /// `[tunnel.NAME]`.
    pub fn tunnel(&mut self, name: &str) -> &mut Table {
        self.table(&format!("tunnel.{name}"))
    }

    /// `[virtual_template.NAME]`.
    pub fn virtual_template(&mut self, name: &str) -> &mut Table {
        self.table(&format!("virtual_template.{name}"))
    }

    /// The TOML text, a blank line between tables.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for VtidConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match part {
                Part::Table(t) if t.array => writeln!(f, "[[{}]]", t.header)?,
                Part::Table(t) => writeln!(f, "[{}]", t.header)?,
                Part::Text(s) => {
                    f.write_str(s)?;
                    continue;
                }
            }
            if let Part::Table(t) = part {
                for (k, v) in &t.entries {
                    writeln!(f, "{k} = {}", v.0)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tables_in_order_with_typed_values() {
        let mut c = VtidConf::new();
        c.vrf("wan", 100);
        c.keyring(
            "K",
            &[
                ("192.0.2.2", Path::new("/a.key")),
                ("0.0.0.0/0", Path::new("/b \"q\".key")),
            ],
        );
        c.transform_set("CBC", "aes-cbc-128")
            .set("integrity", "sha256");
        c.ipsec_profile("P", &["CBC", "GCM"]).set(
            "lifetime",
            Value::inline(&[("seconds", 600), ("kilobytes", 2560)]),
        );
        c.tunnel("tun0")
            .set("if_id", 42u32)
            .set("routes", &[] as &[&str])
            .set_opt("vrf", None::<&str>)
            .set("initiate", false);
        assert_eq!(
            c.render(),
            "[vrf.wan]\ntable = 100\n\n\
             [keyring.K]\n\n\
             [[keyring.K.peer]]\naddress = \"192.0.2.2\"\npsk_file = \"/a.key\"\n\n\
             [[keyring.K.peer]]\naddress = \"0.0.0.0/0\"\npsk_file = \"/b \\\"q\\\".key\"\n\n\
             [transform_set.CBC]\nesp = \"aes-cbc-128\"\nintegrity = \"sha256\"\n\n\
             [ipsec_profile.P]\ntransform_sets = [\"CBC\", \"GCM\"]\n\
             lifetime = { seconds = 600, kilobytes = 2560 }\n\n\
             [tunnel.tun0]\nif_id = 42\nroutes = []\ninitiate = false\n"
        );
    }

    #[test]
    fn text_parts_are_verbatim() {
        let mut c = VtidConf::new();
        c.transform_set("T", "aes-gcm-256");
        c.text("[virtual_template.VT1]\nprotection = \"P\"\n");
        assert_eq!(
            c.render(),
            "[transform_set.T]\nesp = \"aes-gcm-256\"\n\n[virtual_template.VT1]\nprotection = \"P\"\n"
        );
    }
}
