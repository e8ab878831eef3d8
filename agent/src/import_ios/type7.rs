//! Cisco "type 7" passwords: a reversible obfuscation (a fixed, widely published key string
//! XORed over the password from a two-digit offset), not encryption. `import-ios` decodes
//! them so a migrated key keeps working, and says so in its output. Type 5 (an MD5 crypt
//! hash) and type 6 (AES under the router's master key) cannot be reversed without the
//! router, and are reported instead.

use thiserror::Error;
use zeroize::Zeroizing;

/// The key string every IOS release XORs type 7 passwords with.
const XLAT: &[u8] = b"dsfd;kfoA,.iyewrkldJKDHSUBsgvca69834ncxv9873254k;fg87";

/// Why a type 7 string could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Type7Error {
    /// Not two decimal digits followed by pairs of hex digits.
    #[error("not a type 7 string (two decimal digits, then pairs of hex digits)")]
    Malformed,
    /// The offset is past the key string.
    #[error("type 7 offset {0} is out of range")]
    Offset(usize),
    /// The decoded bytes are not printable text, so the input was not type 7.
    #[error("decodes to unprintable bytes")]
    Unprintable,
}

/// Decodes a type 7 string into the password it hides.
pub fn decode(s: &str) -> Result<Zeroizing<String>, Type7Error> {
    let b = s.as_bytes();
    if b.len() < 4 || b.len() % 2 != 0 || !b[..2].iter().all(u8::is_ascii_digit) {
        return Err(Type7Error::Malformed);
    }
    let offset = usize::from(b[0] - b'0') * 10 + usize::from(b[1] - b'0');
    if offset >= XLAT.len() {
        return Err(Type7Error::Offset(offset));
    }
    let mut out = Zeroizing::new(String::with_capacity(b.len() / 2));
    for (i, pair) in b[2..].chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).map_err(|_| Type7Error::Malformed)?;
        let v = u8::from_str_radix(hex, 16).map_err(|_| Type7Error::Malformed)?;
        let c = v ^ XLAT[(offset + i) % XLAT.len()];
        if !(0x20..0x7f).contains(&c) {
            return Err(Type7Error::Unprintable);
        }
        out.push(char::from(c));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes the way IOS does, to test the decoder against more than one fixed vector.
    fn encode(offset: usize, plain: &str) -> String {
        let mut s = format!("{offset:02}");
        for (i, c) in plain.bytes().enumerate() {
            s.push_str(&format!("{:02X}", c ^ XLAT[(offset + i) % XLAT.len()]));
        }
        s
    }

    #[test]
    fn decodes_the_classic_cisco_vector() {
        // `username u password 7 02050D480809` is "cisco" in countless IOS configurations.
        assert_eq!(decode("02050D480809").unwrap().as_str(), "cisco");
        assert_eq!(decode("02050d480809").unwrap().as_str(), "cisco");
    }

    #[test]
    fn round_trips_every_offset_and_wraps_the_key_string() {
        let long = "a-key-longer-than-the-fifty-three-byte-key-string-itself!!";
        for offset in 0..16 {
            assert_eq!(decode(&encode(offset, long)).unwrap().as_str(), long);
        }
    }

    #[test]
    fn rejects_what_is_not_type_7() {
        assert_eq!(decode("cisco123").unwrap_err(), Type7Error::Malformed);
        assert_eq!(decode("0").unwrap_err(), Type7Error::Malformed);
        assert_eq!(decode("020").unwrap_err(), Type7Error::Malformed);
        assert_eq!(decode("99AABB").unwrap_err(), Type7Error::Offset(99));
        assert_eq!(decode("0264").unwrap_err(), Type7Error::Unprintable);
    }
}
