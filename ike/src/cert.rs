//! X.509 for IKE (RFC 7296 §3.6, §3.7; RFC 4945 profile):
//!
//! - [`subject_public_key_info`]: the SubjectPublicKeyInfo of a DER certificate (RFC 5280
//!   §4.1), so a profile can pin a peer by its certificate file (no validation).
//! - [`TrustAnchors`] and [`verify_peer_certificate`]: path validation of the peer's CERT
//!   payloads to configured CAs at a caller-given time (RFC 5280 §6, done by `rustls-webpki`
//!   with aws-lc-rs signatures), and the RFC 4945 §3.1 binding of the IKE identity to the
//!   end-entity certificate.
//!
//! Revocation (CRL/OCSP) is not checked.

use std::time::Duration;

use aws_lc_rs::digest;
use pki_types::CertificateDer;
use pki_types::SignatureVerificationAlgorithm;
use pki_types::TrustAnchor;
use pki_types::UnixTime;

use crate::wire::Identity;
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

/// Why a peer certificate was not accepted. Logged; the peer only sees
/// AUTHENTICATION_FAILED (RFC 7296 §2.21.2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// A configured CA certificate (index in the list given) could not be parsed.
    #[error("trust anchor {0} is not a usable X.509 certificate")]
    BadTrustAnchor(usize),
    /// No trust anchors were configured.
    #[error("no trust anchors configured")]
    NoTrustAnchors,
    /// The peer sent no X.509 certificate (CERT encoding 4) to authenticate with.
    #[error("peer sent no X.509 certificate")]
    NoCertificate,
    /// The engine was given no wall-clock time ([`crate::Endpoint::set_wall_clock`]), so
    /// validity periods cannot be checked (RFC 5280 §6.1.3 (a)(2)).
    #[error("no wall-clock time to check certificate validity against")]
    NoWallClock,
    /// Path validation failed (RFC 5280 §6); the text is the validator's reason.
    #[error("certificate path invalid: {0}")]
    Path(String),
    /// The end-entity certificate does not bind the peer's ID payload (RFC 4945 §3.1).
    #[error("certificate does not match the peer identity")]
    IdentityMismatch,
}

/// CA certificates the peer's certificate must chain to (RFC 5280 §6.1.1 (d)), parsed once
/// at configuration time, with the SHA-1 hashes of their SubjectPublicKeyInfo that go in
/// CERTREQ (RFC 7296 §3.7).
#[derive(Clone)]
pub struct TrustAnchors {
    anchors: Vec<TrustAnchor<'static>>,
    key_hashes: Vec<[u8; 20]>,
}

impl TrustAnchors {
    /// Parses DER CA certificates. Every one must parse; an empty list is an error (it
    /// could never validate anything).
    pub fn from_der_certs<I>(certs: I) -> Result<Self, CertError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut anchors = Vec::new();
        let mut key_hashes = Vec::new();
        for (i, der) in certs.into_iter().enumerate() {
            let der = CertificateDer::from(der.as_ref());
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|_| CertError::BadTrustAnchor(i))?
                .to_owned();
            // §3.7: "the SHA-1 hash of the Subject Public Key Info element (see section
            // 4.1.2.7 of [PKIX]) from each Trust Anchor certificate".
            let spki = webpki::spki_for_anchor(&anchor);
            let h = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, spki.as_ref());
            let mut hash = [0u8; 20];
            hash.copy_from_slice(h.as_ref());
            anchors.push(anchor);
            key_hashes.push(hash);
        }
        if anchors.is_empty() {
            return Err(CertError::NoTrustAnchors);
        }
        Ok(Self {
            anchors,
            key_hashes,
        })
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Always false for a constructed set (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// SHA-1 hashes of each anchor's SubjectPublicKeyInfo, in configuration order: the
    /// Certification Authority field of our CERTREQ (RFC 7296 §3.7).
    pub fn key_hashes(&self) -> &[[u8; 20]] {
        &self.key_hashes
    }
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("count", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

/// Signature algorithms accepted on certificates of the path (not on AUTH, which RFC 7427
/// negotiates separately): ECDSA, Ed25519, RSA PKCS#1 v1.5 and RSASSA-PSS (rsaEncryption
/// keys), all via aws-lc-rs. No SHA-1.
static CHAIN_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P256_SHA512,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA512,
    webpki::aws_lc_rs::ECDSA_P521_SHA256,
    webpki::aws_lc_rs::ECDSA_P521_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA512,
    webpki::aws_lc_rs::ED25519,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::aws_lc_rs::RSA_PKCS1_3072_8192_SHA384,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Extended Key Usage policy for IKE (RFC 4945 §5.1.3.12): no EKU extension is fine; if
/// present it must list id-kp-ipsecIKE or anyExtendedKeyUsage. serverAuth, clientAuth and
/// Microsoft's "IP security IKE intermediate" are accepted too, because strongSwan's and
/// Windows' tooling issue IKE certificates with those (strongSwan does not enforce EKU).
struct IkeEku;

/// DER OID contents of the accepted key purposes.
const IKE_EKUS: [&[u8]; 5] = [
    // id-kp-ipsecIKE 1.3.6.1.5.5.7.3.17 (RFC 4945 §5.1.3.12)
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x11],
    // anyExtendedKeyUsage 2.5.29.37.0 (RFC 5280 §4.2.1.12)
    &[0x55, 0x1d, 0x25, 0x00],
    // id-kp-serverAuth 1.3.6.1.5.5.7.3.1
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01],
    // id-kp-clientAuth 1.3.6.1.5.5.7.3.2
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02],
    // IP security IKE intermediate 1.3.6.1.5.5.8.2.2
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x08, 0x02, 0x02],
];

impl webpki::ExtendedKeyUsageValidator for IkeEku {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if IKE_EKUS
                .iter()
                .any(|oid| webpki::KeyPurposeId::new(oid) == id)
            {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        match present.is_empty() {
            true => Ok(()),
            false => Err(webpki::Error::RequiredEkuNotFoundContext(
                webpki::RequiredEkuNotFoundContext {
                    required: webpki::KeyUsage::required_if_present(IKE_EKUS[0]),
                    present,
                },
            )),
        }
    }
}

/// Validates the peer's end-entity certificate (the first X.509 CERT payload, RFC 7296
/// §3.6) with `intermediates` (the following ones, any order) up to one of `anchors` at
/// `unix_time` (seconds since the epoch), and checks that it binds `id` (RFC 4945 §3.1):
///
/// | ID type | must equal |
/// |---|---|
/// | ID_IPV4_ADDR / ID_IPV6_ADDR | a subjectAltName iPAddress (§3.1.1) |
/// | ID_FQDN | a subjectAltName dNSName (§3.1.2; webpki rules, wildcards included) |
/// | ID_RFC822_ADDR | a subjectAltName rfc822Name (§3.1.3; domain part case-insensitive) |
/// | ID_DER_ASN1_DN | the subject, byte for byte (§3.1.5) |
///
/// Other ID types are refused. Returns the end-entity SubjectPublicKeyInfo DER, to verify
/// the AUTH payload with ([`crate::crypto::sig::verify`]).
pub fn verify_peer_certificate(
    anchors: &TrustAnchors,
    end_entity: &[u8],
    intermediates: &[&[u8]],
    id: &Identity,
    unix_time: u64,
) -> Result<Vec<u8>, CertError> {
    let ee_der = CertificateDer::from(end_entity);
    let ee =
        webpki::EndEntityCert::try_from(&ee_der).map_err(|e| CertError::Path(e.to_string()))?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|d| CertificateDer::from(*d))
        .collect();
    ee.verify_for_usage(
        CHAIN_ALGS,
        &anchors.anchors,
        &inter,
        UnixTime::since_unix_epoch(Duration::from_secs(unix_time)),
        IkeEku,
        None,
        None,
    )
    .map_err(|e| CertError::Path(e.to_string()))?;
    if !binds_identity(&ee, end_entity, id) {
        return Err(CertError::IdentityMismatch);
    }
    Ok(ee.subject_public_key_info().as_ref().to_vec())
}

/// RFC 4945 §3.1: does the (validated) end-entity certificate carry `id`?
fn binds_identity(ee: &webpki::EndEntityCert<'_>, der: &[u8], id: &Identity) -> bool {
    match id {
        Identity::Ipv4(a) => {
            subject_name_ok(ee, pki_types::IpAddr::from(std::net::IpAddr::V4(*a)).into())
        }
        Identity::Ipv6(a) => {
            subject_name_ok(ee, pki_types::IpAddr::from(std::net::IpAddr::V6(*a)).into())
        }
        Identity::Fqdn(name) => match pki_types::DnsName::try_from(name.as_str()) {
            Ok(dns) => subject_name_ok(ee, pki_types::ServerName::DnsName(dns)),
            Err(_) => false,
        },
        Identity::Rfc822(addr) => rfc822_names(der).iter().any(|n| rfc822_eq(n, addr)),
        Identity::DerAsn1Dn(dn) => {
            // The ID holds a complete Name (SEQUENCE); webpki gives the subject's contents.
            let mut r = Reader::new(dn);
            matches!(tlv(&mut r, 0x30), Ok((whole, contents))
                if whole.len() == dn.len() && contents == ee.subject())
        }
        _ => false,
    }
}

fn subject_name_ok(ee: &webpki::EndEntityCert<'_>, name: pki_types::ServerName<'_>) -> bool {
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The rfc822Name entries of the subjectAltName extension (RFC 5280 §4.2.1.6); empty when
/// there is none or the certificate does not parse as RFC 5280.
fn rfc822_names(der: &[u8]) -> Vec<String> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return Vec::new();
    };
    match cert.tbs_certificate().get_extension::<SubjectAltName>() {
        Ok(Some((_, san))) => san
            .0
            .iter()
            .filter_map(|n| match n {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The attributes of a DER `Name` (RFC 5280 §4.1.2.4) in encoding order, flattened across
/// RDNs, as (dotted OID, string value). `None` when it does not parse or a value is not one
/// of the directory string types (RFC 5280 §4.1.2.4 DirectoryString, plus IA5String for
/// emailAddress and domainComponent).
pub fn dn_attributes(der: &[u8]) -> Option<Vec<(String, String)>> {
    use x509_cert::der::Decode;
    use x509_cert::der::Tag;
    use x509_cert::der::Tagged;
    let name = x509_cert::name::Name::from_der(der).ok()?;
    name.iter()
        .map(|atv| {
            let text = match atv.value.tag() {
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
                    std::str::from_utf8(atv.value.value()).ok()?.to_owned()
                }
                _ => return None,
            };
            Some((atv.oid.to_string(), text))
        })
        .collect()
}

/// The subject `Name` of a DER certificate, DER-encoded: our ID_DER_ASN1_DN when we identify
/// by DN, so it equals the certificate byte for byte (RFC 4945 §3.1.5).
pub fn subject_dn(cert: &[u8]) -> Result<Vec<u8>, InvalidMessage> {
    use x509_cert::der::Decode;
    use x509_cert::der::Encode;
    let cert = x509_cert::Certificate::from_der(cert)
        .map_err(|_| InvalidMessage::BadValue("X.509 certificate"))?;
    cert.tbs_certificate()
        .subject()
        .to_der()
        .map_err(|_| InvalidMessage::BadValue("X.509 subject"))
}

/// RFC 5280 §4.2.1.6 / §7.5: the local part is compared exactly, the host part
/// case-insensitively.
fn rfc822_eq(cert: &str, id: &str) -> bool {
    match (cert.rsplit_once('@'), id.rsplit_once('@')) {
        (Some((cl, ch)), Some((il, ih))) => cl == il && ch.eq_ignore_ascii_case(ih),
        _ => false,
    }
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
