//! X.509 for IKE (RFC 7296 §3.6, §3.7; RFC 4945 profile):
//!
//! - [`subject_public_key_info`]: the SubjectPublicKeyInfo of a DER certificate (RFC 5280
//!   §4.1), so a profile can pin a peer by its certificate file (no validation).
//! - [`TrustAnchors`] and [`verify_peer_certificate`]: path validation of the peer's CERT
//!   payloads to configured CAs at a caller-given time (RFC 5280 §6, done by `rustls-webpki`
//!   with aws-lc-rs signatures), and the RFC 4945 §3.1 binding of the IKE identity to the
//!   end-entity certificate.
//! - [`Crl`]: certificate revocation lists (RFC 5280 §5) checked against the anchors when
//!   the configuration is loaded ([`TrustAnchors::check_crl`]) and applied during path
//!   validation (RFC 5280 §6.3) and to established sessions ([`TrustAnchors::revoked`]).
//!
//! # Revocation policy
//!
//! CRLs are local files the operator (or a cron job) keeps fresh; the engine fetches
//! nothing (no CRL distribution points, no OCSP). RFC 5280 §6.3.3 ends with one of three
//! states per certificate: REVOKED, UNREVOKED or UNDETERMINED, and leaves the treatment of
//! UNDETERMINED to local policy. Ours, for every certificate of the path (end entity and
//! intermediates):
//!
//! - **Issuer without a CRL** (§6.3.3 finds no CRL in scope: UNDETERMINED): accepted. Only
//!   some CAs publish CRLs, and a trustpoint that lists none must keep working as before
//!   (webpki [`webpki::UnknownStatusPolicy::Allow`]).
//! - **Expired CRL** (its nextUpdate is past; §6.3.3 (a) would fetch a fresh one, which we
//!   cannot): still applied. A serial it lists stays revoked (a revocation is permanent,
//!   RFC 5280 §3.3 and §5.3.1: only certificateHold entries are ever removed), and a
//!   certificate it does not list is accepted as with an issuer without a CRL. Refusing
//!   every peer of the CA instead would turn a forgotten CRL refresh into an outage of all
//!   spokes of a hub; the agent logs a warning for a stale CRL at load and reload so the
//!   operator sees it (webpki [`webpki::ExpirationPolicy::Ignore`]).
//!
//! OCSP is not supported.

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

/// The serialNumber of a DER X.509 certificate (RFC 5280 §4.1.2.2): the INTEGER's
/// contents, as CRL entries are matched ([`serial_hex`] prints it).
pub fn serial_number(cert: &[u8]) -> Result<Vec<u8>, InvalidMessage> {
    let der = CertificateDer::from(cert);
    webpki::EndEntityCert::try_from(&der)
        .map(|c| c.serial().to_vec())
        .map_err(|_| InvalidMessage::BadValue("X.509 certificate"))
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
    /// A certificate of the path is listed in a configured CRL (RFC 5280 §6.3.3 (i):
    /// REVOKED).
    #[error(
        "{} serial {serial} revoked by CRL of trustpoint {trustpoint}",
        if *intermediate { "intermediate CA certificate" } else { "certificate" }
    )]
    Revoked {
        /// The revoked certificate's serial number, `0x` and hex.
        serial: String,
        /// The revoked certificate is an intermediate CA, not the end entity.
        intermediate: bool,
        /// Name of the trust configuration whose CRL lists it ([`TrustAnchors::with_crls`]).
        trustpoint: String,
    },
}

/// Why a CRL was not accepted for a set of trust anchors ([`TrustAnchors::check_crl`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    /// Not a CRL the validator can use (RFC 5280 §5.1: v2, with nextUpdate and extensions;
    /// no delta CRLs); the text is the parser's reason.
    #[error("not a usable X.509 CRL: {0}")]
    Unparsable(String),
    /// Its issuer is none of the trust anchors (RFC 5280 §6.3.3 (b): the CRL issuer must be
    /// the certificate issuer; we take CRLs of configured CAs only).
    #[error("CRL issuer {0} is none of the trustpoint's CA certificates")]
    UnknownIssuer(String),
    /// The issuer is a configured CA by name, but the signature does not verify with its key
    /// (RFC 5280 §6.3.3 (f)).
    #[error("CRL signature does not verify with the key of CA {0}")]
    BadSignature(String),
}

/// One CRL, parsed and checked against the trust anchors ([`TrustAnchors::check_crl`]).
#[derive(Clone)]
pub struct Crl {
    list: std::sync::Arc<webpki::CertRevocationList<'static>>,
    /// Unix seconds of nextUpdate (RFC 5280 §5.1.2.5).
    next_update: u64,
    /// Unix seconds of thisUpdate (RFC 5280 §5.1.2.4).
    this_update: u64,
    /// Number of revokedCertificates entries.
    entries: usize,
    /// The issuer as `O=..., CN=...`, for log lines.
    issuer: String,
}

impl Crl {
    /// Unix seconds of its nextUpdate: after that the CRL is stale (still applied, see the
    /// module's revocation policy).
    pub fn next_update(&self) -> u64 {
        self.next_update
    }

    /// Unix seconds of its thisUpdate.
    pub fn this_update(&self) -> u64 {
        self.this_update
    }

    /// Number of revoked certificates it lists.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Its issuer (`O=..., CN=...`, OIDs for attributes without a short name).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

impl std::fmt::Debug for Crl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crl")
            .field("issuer", &self.issuer)
            .field("entries", &self.entries)
            .field("next_update", &self.next_update)
            .finish()
    }
}

/// What the engine keeps of a validated peer certificate path to check it again against
/// new CRLs without the certificates (RFC 5280 §6.3.3 matches a CRL entry by issuer and
/// serial number): one (issuer, serial) per certificate, end entity first, then the
/// intermediates the path used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathSerials {
    /// (issuer Name contents, serial INTEGER contents) as webpki encodes them.
    certs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl PathSerials {
    /// The (issuer, serial) pairs, for [`crate::persist`].
    pub(crate) fn pairs(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.certs
    }

    /// Pairs read back by [`crate::persist`].
    pub(crate) fn from_pairs(certs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Self { certs }
    }
}

/// A validated peer certificate: the key for AUTH and what a later revocation check needs.
#[derive(Clone, Debug)]
pub struct VerifiedPeer {
    /// The end-entity SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    /// Issuer and serial of each certificate of the path.
    pub serials: PathSerials,
}

/// CA certificates the peer's certificate must chain to (RFC 5280 §6.1.1 (d)), parsed once
/// at configuration time, with the SHA-1 hashes of their SubjectPublicKeyInfo that go in
/// CERTREQ (RFC 7296 §3.7).
#[derive(Clone)]
pub struct TrustAnchors {
    anchors: Vec<TrustAnchor<'static>>,
    key_hashes: Vec<[u8; 20]>,
    /// CRLs of these anchors ([`Self::with_crls`]).
    crls: Vec<Crl>,
    /// Name for log lines (the agent's trustpoint name).
    name: String,
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
            crls: Vec::new(),
            name: String::new(),
        })
    }

    /// Parses a DER CRL and checks that one of these anchors issued and signed it
    /// (RFC 5280 §6.3.3 (b), (f)), so that a CRL for the wrong CA is refused when the
    /// configuration is loaded instead of being silently never applied.
    pub fn check_crl(&self, der: &[u8]) -> Result<Crl, CrlError> {
        let owned = webpki::OwnedCertRevocationList::from_der(der)
            .map_err(|e| CrlError::Unparsable(e.to_string()))?;
        let list = webpki::CertRevocationList::from(owned);
        let parts = crl_parts(der).ok_or(CrlError::Unparsable("CRL structure".into()))?;
        let issuer = describe_name_contents(list.issuer());
        let mut named = self
            .anchors
            .iter()
            .filter(|a| a.subject.as_ref() == list.issuer())
            .peekable();
        if named.peek().is_none() {
            return Err(CrlError::UnknownIssuer(issuer));
        }
        if !named.any(|a| crl_signed_by(&parts, a.subject_public_key_info.as_ref())) {
            return Err(CrlError::BadSignature(issuer));
        }
        Ok(Crl {
            list: std::sync::Arc::new(list),
            next_update: parts.next_update,
            this_update: parts.this_update,
            entries: parts.entries,
            issuer,
        })
    }

    /// These anchors with `crls` (from [`Self::check_crl`] on this set) applied during
    /// validation, and `name` (the trustpoint) in revocation messages.
    pub fn with_crls(mut self, name: impl Into<String>, crls: Vec<Crl>) -> Self {
        self.name = name.into();
        self.crls = crls;
        self
    }

    /// The CRLs in force.
    pub fn crls(&self) -> &[Crl] {
        &self.crls
    }

    /// The name revocation messages give ([`Self::with_crls`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a path validated earlier against the CRLs in force now (a reload brought new
    /// ones): the first of its certificates that one of them lists, as
    /// [`CertError::Revoked`]. Same policy as validation: no CRL for an issuer, or a stale
    /// one that does not list the serial, is not a revocation.
    pub fn revoked(&self, path: &PathSerials) -> Option<CertError> {
        path.certs
            .iter()
            .enumerate()
            .find(|(_, (issuer, serial))| {
                self.crls.iter().any(|c| {
                    c.list.issuer() == issuer.as_slice()
                        && matches!(c.list.find_serial(serial), Ok(Some(_)))
                })
            })
            .map(|(i, (_, serial))| CertError::Revoked {
                serial: serial_hex(serial),
                intermediate: i > 0,
                trustpoint: self.name.clone(),
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

    /// Each anchor's subject Name (DER, SEQUENCE included), in configuration order: the
    /// Certificate Authority field of an IKEv1 CERTREQ (RFC 2408 §3.10).
    pub fn subject_dns(&self) -> Vec<Vec<u8>> {
        self.anchors
            .iter()
            .map(|a| {
                let body: &[u8] = a.subject.as_ref();
                let mut out = vec![0x30];
                // DER definite length (X.690 §8.1.3): short form below 128, else the
                // length's big-endian octets after 0x80 | their count.
                match body.len() {
                    n @ 0..=127 => out.push(n as u8),
                    n => {
                        let bytes: Vec<u8> = n
                            .to_be_bytes()
                            .into_iter()
                            .skip_while(|b| *b == 0)
                            .collect();
                        out.push(0x80 | bytes.len() as u8);
                        out.extend(bytes);
                    }
                }
                out.extend_from_slice(body);
                out
            })
            .collect()
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
            .field("name", &self.name)
            .field("count", &self.anchors.len())
            .field("crls", &self.crls.len())
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
///
/// The anchors' CRLs are applied to every certificate of the path (RFC 5280 §6.3) with the
/// policy of this module's documentation; a listed certificate is [`CertError::Revoked`].
pub fn verify_peer_certificate(
    anchors: &TrustAnchors,
    end_entity: &[u8],
    intermediates: &[&[u8]],
    id: &Identity,
    unix_time: u64,
) -> Result<Vec<u8>, CertError> {
    verify_peer(anchors, end_entity, intermediates, id, unix_time).map(|v| v.spki)
}

/// [`verify_peer_certificate`], also returning what [`TrustAnchors::revoked`] needs to
/// check the session again when the CRLs change.
pub fn verify_peer(
    anchors: &TrustAnchors,
    end_entity: &[u8],
    intermediates: &[&[u8]],
    id: &Identity,
    unix_time: u64,
) -> Result<VerifiedPeer, CertError> {
    let ee_der = CertificateDer::from(end_entity);
    let ee =
        webpki::EndEntityCert::try_from(&ee_der).map_err(|e| CertError::Path(e.to_string()))?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|d| CertificateDer::from(*d))
        .collect();
    let crls: Vec<&webpki::CertRevocationList<'_>> =
        anchors.crls.iter().map(|c| &*c.list).collect();
    // See the module documentation: UNDETERMINED (no CRL for the issuer) is accepted, and
    // nextUpdate is not enforced; every certificate of the path is checked (§6.3 applies
    // to each certificate the path processing of §6.1.3 (a)(3) looks at).
    let revocation = webpki::RevocationOptionsBuilder::new(&crls).ok().map(|b| {
        b.with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Allow)
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build()
    });
    let serials = {
        let path = ee
            .verify_for_usage(
                CHAIN_ALGS,
                &anchors.anchors,
                &inter,
                UnixTime::since_unix_epoch(Duration::from_secs(unix_time)),
                IkeEku,
                revocation,
                None,
            )
            .map_err(|e| match e {
                webpki::Error::CertRevoked => revoked_in(anchors, &ee, &inter),
                e => CertError::Path(e.to_string()),
            })?;
        PathSerials {
            certs: std::iter::once((ee.issuer().to_vec(), ee.serial().to_vec()))
                .chain(
                    path.intermediate_certificates()
                        .map(|c| (c.issuer().to_vec(), c.serial().to_vec())),
                )
                .collect(),
        }
    };
    if !binds_identity(&ee, end_entity, id) {
        return Err(CertError::IdentityMismatch);
    }
    Ok(VerifiedPeer {
        spki: ee.subject_public_key_info().as_ref().to_vec(),
        serials,
    })
}

/// Which certificate webpki found revoked: the end entity when a CRL lists it, else the
/// intermediate that one lists (webpki's error does not say).
fn revoked_in(
    anchors: &TrustAnchors,
    ee: &webpki::EndEntityCert<'_>,
    inter: &[CertificateDer<'_>],
) -> CertError {
    let mut certs = vec![(ee.issuer().to_vec(), ee.serial().to_vec())];
    certs.extend(inter.iter().filter_map(|d| {
        webpki::EndEntityCert::try_from(d)
            .ok()
            .map(|c| (c.issuer().to_vec(), c.serial().to_vec()))
    }));
    // An intermediate found revoked is reported as such, wherever the peer sent it.
    let ee_listed = anchors.revoked(&PathSerials {
        certs: certs[..1].to_vec(),
    });
    ee_listed
        .or_else(|| {
            anchors
                .revoked(&PathSerials {
                    certs: certs.clone(),
                })
                .map(|e| match e {
                    CertError::Revoked {
                        serial, trustpoint, ..
                    } => CertError::Revoked {
                        serial,
                        intermediate: true,
                        trustpoint,
                    },
                    e => e,
                })
        })
        .unwrap_or(CertError::Revoked {
            serial: serial_hex(ee.serial()),
            intermediate: false,
            trustpoint: anchors.name.clone(),
        })
}

/// A serial number (INTEGER contents) as `0x` and hex, without the sign octet DER adds.
pub fn serial_hex(serial: &[u8]) -> String {
    let trimmed = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        s => s,
    };
    let mut out = String::from("0x");
    for b in trimmed {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The signed parts of a DER CRL (RFC 5280 §5.1) and the fields we report.
struct CrlParts<'a> {
    /// tbsCertList, whole (the signed octets).
    tbs: &'a [u8],
    /// signatureAlgorithm contents.
    alg: &'a [u8],
    /// signatureValue bits (no unused-bits octet).
    signature: &'a [u8],
    this_update: u64,
    next_update: u64,
    entries: usize,
}

fn crl_parts(der: &[u8]) -> Option<CrlParts<'_>> {
    use x509_cert::der::Decode;
    let mut r = Reader::new(der);
    let (_, list) = tlv(&mut r, 0x30).ok()?;
    let mut l = Reader::new(list);
    let (tbs, _) = tlv(&mut l, 0x30).ok()?;
    let (_, alg) = tlv(&mut l, 0x30).ok()?;
    let (_, bits) = tlv(&mut l, 0x03).ok()?;
    let (&unused, signature) = bits.split_first()?;
    if unused != 0 {
        return None;
    }
    let parsed =
        x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der).ok()?;
    let t = &parsed.tbs_cert_list;
    Some(CrlParts {
        tbs,
        alg,
        signature,
        this_update: t.this_update.to_unix_duration().as_secs(),
        next_update: t.next_update?.to_unix_duration().as_secs(),
        entries: t.revoked_certificates.as_ref().map_or(0, Vec::len),
    })
}

/// Does the key in `spki` (SubjectPublicKeyInfo contents, as a webpki anchor holds it)
/// verify the CRL's signature? The algorithm is the one of [`CHAIN_ALGS`] that matches both
/// the CRL's signatureAlgorithm and the key's algorithm, as for certificates of the path.
fn crl_signed_by(crl: &CrlParts<'_>, spki: &[u8]) -> bool {
    let mut r = Reader::new(spki);
    let (Ok((_, key_alg)), Ok((_, key_bits))) = (tlv(&mut r, 0x30), tlv(&mut r, 0x03)) else {
        return false;
    };
    let Some((&0, key)) = key_bits.split_first() else {
        return false;
    };
    CHAIN_ALGS.iter().any(|a| {
        a.signature_alg_id().as_ref() == crl.alg
            && a.public_key_alg_id().as_ref() == key_alg
            && a.verify_signature(key, crl.tbs, crl.signature).is_ok()
    })
}

/// A Name's contents (RDNs without the outer SEQUENCE, as webpki gives issuers) as
/// `O=..., CN=...`.
fn describe_name_contents(contents: &[u8]) -> String {
    let mut der = vec![0x30];
    let len = contents.len();
    match len {
        0..=0x7f => der.push(len as u8),
        0x80..=0xff => der.extend([0x81, len as u8]),
        _ => der.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    der.extend_from_slice(contents);
    describe_dn(&der)
}

/// An IKE identity for log lines: a DN as `O=..., CN=...`, others as they print.
pub fn describe_identity(id: &Identity) -> String {
    match id {
        Identity::DerAsn1Dn(dn) => describe_dn(dn),
        other => other.to_string(),
    }
}

/// A DER Name as `O=..., CN=...` (RFC 4514 short names for the common attributes, dotted
/// OIDs for others), in encoding order as strongSwan and IOS print them.
pub fn describe_dn(der: &[u8]) -> String {
    const SHORT: &[(&str, &str)] = &[
        ("2.5.4.6", "C"),
        ("2.5.4.8", "ST"),
        ("2.5.4.7", "L"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.3", "CN"),
        ("0.9.2342.19200300.100.1.25", "DC"),
        ("1.2.840.113549.1.9.1", "E"),
    ];
    match dn_attributes(der) {
        Some(attrs) => attrs
            .iter()
            .map(|(oid, v)| {
                let name = SHORT
                    .iter()
                    .find(|(o, _)| o == oid)
                    .map_or(oid.as_str(), |(_, n)| n);
                format!("{name}={v}")
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => "unparsable DN".to_owned(),
    }
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
