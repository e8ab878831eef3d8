//! Secret files: pre-shared keys and private keys, and the checks on their permissions.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

/// A pre-shared key, wiped from memory on drop. `Debug` prints `Psk(<redacted>)`.
#[derive(Clone)]
pub struct Psk(Zeroizing<Vec<u8>>);

/// Compared in time that depends only on the lengths, so that comparing plans on reload says
/// nothing about a key through timing.
impl PartialEq for Psk {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.expose(), other.expose());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for Psk {}

impl Psk {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes. Callers must not copy them into storage that is not wiped.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

/// Largest key file read: keys are short; this bounds a mistaken path such as a disk image.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Checks that `path` is a regular file owned by `owner_uid` with no group/other permission
/// bits. The message never includes the contents.
pub(crate) fn check_secret_file(path: &Path, owner_uid: u32) -> Result<(), String> {
    let meta =
        fs::metadata(path).map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("\"{}\" is not a regular file", path.display()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "\"{}\" has mode {mode:04o}; secret files must not be readable by group or others \
             (chmod 600 {})",
            path.display(),
            path.display()
        ));
    }
    if meta.uid() != owner_uid {
        return Err(format!(
            "\"{}\" is owned by uid {}; secret files must be owned by uid {owner_uid} \
             (chown {owner_uid} {})",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    Ok(())
}

/// Reads a PSK file after [`check_secret_file`]. One trailing newline is not part of the key,
/// so `echo secret > file` does what the user means.
pub(crate) fn read_psk(path: &Path, owner_uid: u32) -> Result<Psk, String> {
    check_secret_file(path, owner_uid)?;
    let file =
        fs::File::open(path).map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    // Sized up front so read_to_end does not reallocate and leave unwiped copies behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "\"{}\" is larger than {MAX_KEY_FILE} bytes",
            path.display()
        ));
    }
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
    if buf.is_empty() {
        return Err(format!("\"{}\" is empty", path.display()));
    }
    Ok(Psk::new(std::mem::take(&mut *buf)))
}

/// Checks that a non-secret file (certificate, CA) exists and can be opened.
pub(crate) fn check_readable(path: &Path) -> Result<(), String> {
    fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))
}
