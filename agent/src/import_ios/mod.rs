//! `vtid import-ios`: an IOS `running-config` (or the crypto and tunnel part of one) turned
//! into vtid's TOML, with a comment wherever the translation had to decide something or
//! leave something out, and every line it did not import listed by number.
//!
//! Three steps, each testable alone: `parse` cuts the text into IOS blocks (a global command
//! and its sub-mode lines, placed by command as IOS places them, not by indentation), `model`
//! gathers what the blocks say into one struct per IOS object with IOS's defaults filled in,
//! and `emit` writes the vtid sections. Keys are never written into the TOML: they go to
//! files under `--key-dir` (0600), which the TOML names.

mod emit;
mod gre;
mod model;
mod parse;
mod type7;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

pub use type7::{Type7Error, decode as decode_type7};

/// Where IOS and vtid part ways on one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Why {
    /// Translated, but a choice was made (an algorithm carried over, a name kept, a default
    /// filled in): read it.
    Decided,
    /// Has no effect on Linux or belongs elsewhere (routing protocols, interface speed).
    Dropped,
    /// An IOS feature vtid does not have (yet): not imported.
    Unsupported,
    /// A line vtid does not understand, or an incomplete one: not imported.
    Unknown,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::Decided => "decided",
            Why::Dropped => "dropped",
            Why::Unsupported => "not supported",
            Why::Unknown => "not understood",
        })
    }
}

/// One remark about one input line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// 1-based input line.
    pub line: usize,
    /// What kind of remark.
    pub why: Why,
    /// The remark.
    pub text: String,
}

/// The remarks, in input order once sorted.
#[derive(Debug, Default)]
pub struct Notes(Vec<Note>);

impl Notes {
    /// Adds a remark about `line`.
    pub fn note(&mut self, line: usize, why: Why, text: impl Into<String>) {
        self.0.push(Note {
            line,
            why,
            text: text.into(),
        });
    }
}

/// How to import.
#[derive(Clone, Debug)]
pub struct Options {
    /// IOS interface name (any abbreviation) → Linux name, from `--map Gi0/0=eth0`.
    pub maps: Vec<(String, String)>,
    /// Directory the key files are named in (`/etc/vtid/psk` by default).
    pub key_dir: PathBuf,
    /// Shown in the header comment.
    pub input_name: String,
    /// `--ikev2`: ISAKMP policies become IKEv2 proposals and ISAKMP profiles IKEv2
    /// profiles. Off, IKEv1 stays IKEv1 (`[isakmp_policy.N]`, `version = 1`).
    pub ikev2: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            maps: Vec::new(),
            key_dir: PathBuf::from("/etc/vtid/psk"),
            input_name: "running-config".into(),
            ikev2: false,
        }
    }
}

/// A pre-shared key recovered from the input, to be written to `path` (0600).
pub struct KeyFile {
    /// Where the TOML expects it.
    pub path: PathBuf,
    /// The key. Never printed.
    pub key: Zeroizing<String>,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("path", &self.path)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The vtid configuration, comments included.
    pub toml: String,
    /// Keys to write.
    pub keys: Vec<KeyFile>,
    /// Every remark, in input order.
    pub notes: Vec<Note>,
    /// Input lines that became part of a section or carry a remark (directly or through the
    /// head of their block): every configuration line should be here.
    pub accounted: std::collections::BTreeSet<usize>,
}

/// Why nothing could be imported at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    /// The input holds no IOS configuration command vtid recognises.
    #[error("no IOS configuration found (no crypto, interface or ip route command)")]
    NothingFound,
    /// A `--map` argument is not `IOS=LINUX`, or names an invalid Linux interface.
    #[error("--map {0}: {1}")]
    BadMap(String, String),
}

/// Parses `Gi0/0=eth0`.
pub fn parse_map(s: &str) -> Result<(String, String), ImportError> {
    let bad = |why: &str| ImportError::BadMap(s.to_owned(), why.to_owned());
    let (ios, linux) = s.split_once('=').ok_or_else(|| bad("expected IOS=LINUX"))?;
    if ios.trim().is_empty() {
        return Err(bad("the IOS interface name is empty"));
    }
    crate::config::check_ifname(linux.trim()).map_err(bad)?;
    Ok((model::canonical_ifname(ios.trim()), linux.trim().to_owned()))
}

/// Imports an IOS configuration.
pub fn import(src: &str, opts: &Options) -> Result<Imported, ImportError> {
    let (blocks, stray) = parse::blocks(src);
    let mut notes = Notes::default();
    for l in &stray {
        notes.note(
            l.line,
            Why::Unknown,
            format!("`{}`: a sub-mode command with no block above it", l.text),
        );
    }
    let spans: BTreeMap<usize, Vec<usize>> = blocks
        .iter()
        .map(|b| {
            let lines = std::iter::once(b.head.line)
                .chain(b.body.iter().map(|l| l.line))
                .collect();
            (b.head.line, lines)
        })
        .collect();
    let ios = model::gather(&blocks, &mut notes);
    let relevant = !ios.isakmp_policies.is_empty()
        || !ios.isakmp_keys.is_empty()
        || !ios.keyrings.is_empty()
        || !ios.ike_profiles.is_empty()
        || !ios.transform_sets.is_empty()
        || !ios.ipsec_profiles.is_empty()
        || !ios.interfaces.is_empty()
        || !ios.routes.is_empty()
        || !ios.crypto_maps.is_empty()
        || !ios.dynamic_maps.is_empty()
        || notes.0.iter().any(|n| n.why == Why::Unsupported);
    if !relevant {
        return Err(ImportError::NothingFound);
    }
    let (toml, keys, mut covered) = emit::emit(&ios, opts, &spans, &mut notes);
    let mut notes = notes.0;
    notes.sort_by_key(|n| n.line);
    // A block whose head carries a remark is accounted for whole (a physical interface's
    // address lines are what "belongs to the system" refers to).
    for (head, lines) in &spans {
        if notes.iter().any(|n| n.line == *head) {
            covered.extend(lines.iter().copied());
        }
    }
    covered.extend(notes.iter().map(|n| n.line));
    Ok(Imported {
        toml,
        keys,
        notes,
        accounted: covered,
    })
}

#[cfg(test)]
mod tests;
