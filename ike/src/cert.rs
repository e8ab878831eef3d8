//! Minimal X.509 access: the SubjectPublicKeyInfo of a DER certificate (RFC 5280 §4.1), so a
//! profile can pin a peer by its certificate file. No chain or validity checking happens here.

use crate::wire::InvalidMessage;
use crate::wire::Reader;

/// The DER SubjectPublicKeyInfo (tag and length included) inside a DER X.509 certificate,
/// usable as [`crate::config::SignatureAuth::peer_key`].
pub fn subject_public_key_info(cert: &[u8]) -> Result<&[u8], InvalidMessage> {
    let mut r = Reader::new(cert);
    let (_, certificate) = tlv(&mut r, 0x30)?;
    let mut c = Reader::new(certificate);
    let (_, tbs) = tlv(&mut c, 0x30)?;
    let mut t = Reader::new(tbs);
    // version [0] EXPLICIT is optional (absent means v1).
    if tbs.first() == Some(&0xa0) {
        tlv(&mut t, 0xa0)?;
    }
    tlv(&mut t, 0x02)?; // serialNumber
    tlv(&mut t, 0x30)?; // signature AlgorithmIdentifier
    tlv(&mut t, 0x30)?; // issuer
    tlv(&mut t, 0x30)?; // validity
    tlv(&mut t, 0x30)?; // subject
    let (whole, _) = tlv(&mut t, 0x30)?; // subjectPublicKeyInfo
    Ok(whole)
}

/// Reads one DER TLV with the expected tag; returns (whole encoding, contents).
fn tlv<'a>(r: &mut Reader<'a>, tag: u8) -> Result<(&'a [u8], &'a [u8]), InvalidMessage> {
    let start = r.left();
    let rest = r.peek_all();
    if r.u8()? != tag {
        return Err(InvalidMessage::BadValue("DER tag"));
    }
    let first = r.u8()?;
    let len = match first {
        0..=0x7f => usize::from(first),
        0x81 => usize::from(r.u8()?),
        0x82 => usize::from(r.u16()?),
        0x83 => {
            let b = r.take(3)?;
            (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
        }
        _ => return Err(InvalidMessage::BadValue("DER length")),
    };
    let contents = r.take(len)?;
    let used = start - r.left();
    Ok((&rest[..used], contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny hand-built certificate skeleton: the fields are empty but correctly nested.
    fn skeleton(spki: &[u8]) -> Vec<u8> {
        let mut tbs = vec![0xa0, 0x03, 0x02, 0x01, 0x02]; // version v3
        tbs.extend_from_slice(&[0x02, 0x01, 0x01]); // serial
        tbs.extend_from_slice(&[0x30, 0x00]); // signature alg
        tbs.extend_from_slice(&[0x30, 0x00]); // issuer
        tbs.extend_from_slice(&[0x30, 0x00]); // validity
        tbs.extend_from_slice(&[0x30, 0x00]); // subject
        tbs.extend_from_slice(spki);
        let mut inner = vec![0x30, tbs.len() as u8];
        inner.extend_from_slice(&tbs);
        inner.extend_from_slice(&[0x30, 0x00, 0x03, 0x01, 0x00]); // sigAlg, signature
        let mut cert = vec![0x30, 0x81, inner.len() as u8];
        cert.extend_from_slice(&inner);
        cert
    }

    #[test]
    fn extracts_spki() {
        let spki = [0x30, 0x05, 0x30, 0x00, 0x03, 0x01, 0x00];
        assert_eq!(subject_public_key_info(&skeleton(&spki)), Ok(&spki[..]));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(subject_public_key_info(&[]).is_err());
        assert!(subject_public_key_info(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        let cert = skeleton(&[0x30, 0x00]);
        for cut in 0..cert.len() {
            assert!(subject_public_key_info(&cert[..cut]).is_err());
        }
    }
}
