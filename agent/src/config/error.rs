//! Configuration errors: every mistake in a file, each with its `file:line:column`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One mistake in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line; 0 when the error concerns the file as a whole (it cannot be read).
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong and what was expected. Never contains secret material.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: error: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Every error found in a configuration, in file order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual errors.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `ConfigErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One line per error, `FILE:LINE:COLUMN: error: MESSAGE`.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while the converter walks the file, turning byte spans into positions.
pub(crate) struct Sink<'a> {
    file: &'a Path,
    src: &'a str,
    errors: Vec<(usize, ConfigError)>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            src,
            errors: Vec::new(),
        }
    }

    /// Records an error at byte offset `span.start`.
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.src, span.start);
        self.errors.push((
            span.start,
            ConfigError {
                file: self.file.to_owned(),
                line,
                column,
                message: message.into(),
            },
        ));
    }

    /// The errors sorted by position; identical duplicates (one cause reached twice) dropped.
    pub(crate) fn finish(mut self) -> Option<ConfigErrors> {
        if self.errors.is_empty() {
            return None;
        }
        // Stable sort keeps the discovery order of errors at the same offset.
        self.errors.sort_by_key(|(off, _)| *off);
        let mut out: Vec<ConfigError> = Vec::with_capacity(self.errors.len());
        for (_, e) in self.errors {
            if !out.contains(&e) {
                out.push(e);
            }
        }
        Some(ConfigErrors(out))
    }
}

/// 1-based (line, column) of byte `offset` in `src`; columns count characters, not bytes.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        // A truncated name ("ecdsa" for "ecdsa-sig") is a likely mistake whatever its distance.
        if word.len() >= 3
            && c.len() > word.len()
            && c.to_ascii_lowercase()
                .starts_with(&word.to_ascii_lowercase())
        {
            return Some(c);
        }
        let d = strsim::damerau_levenshtein(&word.to_ascii_lowercase(), &c.to_ascii_lowercase());
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    // A third of the word's length (at least 1, at most 3) keeps suggestions plausible:
    // "P2" → "P1" yes, "Tunnel7" → "BLUE" no.
    let limit = (word.chars().count() / 3).clamp(1, 3);
    best.filter(|(d, _)| *d <= limit).map(|(_, c)| c)
}

/// `" (did you mean \"X\"?)"` or nothing.
pub(crate) fn suggestion<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    did_you_mean(word, candidates).map_or_else(String::new, |c| format!(" (did you mean \"{c}\"?)"))
}
