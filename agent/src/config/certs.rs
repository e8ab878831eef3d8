//! Certificate authentication: a `[trustpoint.NAME]`'s files become the engine's
//! [`ike::CertificateAuth`], and an IKE profile's identities become what the engine sends and
//! accepts (RFC 7296 §3.5 ID payloads, RFC 4945 §3.1 identity-to-certificate binding).
//!
//! Files are read when the configuration is loaded (`vtid check`, start and reload), so a
//! broken file is reported at the key that names it and a reload with one changes nothing. Certificates may be
//! PEM (several blocks per file, e.g. a CA bundle or a certificate followed by its
//! intermediates) or DER. Private key bytes are only held in [`Zeroizing`] buffers and no
//! error or log line includes them.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use ike::cert::TrustAnchors;
use ike::crypto::sig::SigningKey;
use ike::wire::Identity as IkeIdentity;
use zeroize::Zeroizing;

use super::{Identity, IdentityMatch};

/// Largest certificate or key file read; bounds a mistaken path such as a disk image.
const MAX_FILE: u64 = 1024 * 1024;

/// Largest CRL file read: a CA's CRL grows with every revocation (about 40 bytes each), and
/// the engine's DER reader takes lengths up to 16 MiB.
const MAX_CRL_FILE: u64 = 16 * 1024 * 1024;

/// Reads a whole file into a buffer that is wiped on drop (key files go through here too).
fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    read_file_max(path, MAX_FILE)
}

/// [`read_file`] with its own size bound.
fn read_file_max(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>> {
    let file = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Sized up front so read_to_end does not reallocate and leave unwiped copies behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(64 * 1024));
    file.take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        buf.len() as u64 <= max,
        "{} is larger than {max} bytes",
        path.display()
    );
    Ok(buf)
}

/// The certificates in `path`: every `CERTIFICATE` block of a PEM file (RFC 7468), or the
/// whole file as one DER certificate.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>> {
    read_pem_or_der(&read_file(path)?, path, "CERTIFICATE", "certificate")
}

/// The CRLs in `path`: every `X509 CRL` block of a PEM file (RFC 7468 §5), or the whole
/// file as one DER CRL (what `openssl ca -gencrl -outform der` and `pki --signcrl` write).
pub(crate) fn read_crls(path: &Path) -> Result<Vec<Vec<u8>>> {
    read_pem_or_der(&read_file_max(path, MAX_CRL_FILE)?, path, "X509 CRL", "CRL")
}

/// Every PEM block labelled `label` in `bytes` (read from `path`), or the whole file as one
/// DER object (RFC 5280 certificates and CRLs are both a SEQUENCE).
fn read_pem_or_der(bytes: &[u8], path: &Path, label: &str, what: &str) -> Result<Vec<Vec<u8>>> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        ensure!(
            bytes.first() == Some(&0x30),
            "{} is neither PEM nor a DER {what}",
            path.display()
        );
        return Ok(vec![bytes.to_vec()]);
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let end_marker = block
            .find("-----END ")
            .and_then(|e| block[e + 9..].find("-----").map(|f| e + 9 + f + 5))
            .with_context(|| format!("{}: PEM block without its END line", path.display()))?;
        let (found, der) = pem_rfc7468::decode_vec(&block.as_bytes()[..end_marker])
            .map_err(|e| anyhow::anyhow!("{}: bad PEM: {e}", path.display()))?;
        if found == label {
            out.push(der);
        }
        rest = &block[end_marker..];
    }
    ensure!(
        !out.is_empty(),
        "{} contains no {what} (expected PEM \"BEGIN {label}\" blocks or DER)",
        path.display()
    );
    Ok(out)
}

/// Our private key from `path`: PEM (PKCS#8, SEC1 EC or PKCS#1 RSA) or PKCS#8 DER.
pub(crate) fn read_key(path: &Path) -> Result<SigningKey> {
    let bytes = read_file(path)?;
    let key = if bytes.starts_with(b"-----BEGIN ") {
        SigningKey::from_pem(&bytes)
    } else {
        SigningKey::from_pkcs8_der(&bytes)
    };
    // The engine's error says only "invalid private key"; never print the file's bytes.
    key.map_err(|_| {
        anyhow::anyhow!(
            "{}: not a usable private key (expected unencrypted PKCS#8, EC or RSA PEM, or \
             PKCS#8 DER; RSA, ECDSA P-256/384/521 or Ed25519)",
            path.display()
        )
    })
}

/// A trustpoint's files, parsed: what the engine authenticates with (its trust anchors carry
/// the CRLs), our certificate's subject (for DN identities) and the CA certificates (to tell
/// a reload what changed).
#[derive(Clone)]
pub struct TrustpointFiles {
    /// The engine's certificate authentication.
    pub auth: ike::CertificateAuth,
    /// DER subject of our certificate (ID_DER_ASN1_DN when we identify by DN).
    pub subject: Vec<u8>,
    /// The CA certificates (DER) behind `auth.trust_anchors`.
    pub cas: Vec<Vec<u8>>,
}

/// Same certificates, CAs and key. The private key is compared by its public half: a key
/// pair is determined by it, and the private bytes are never compared or copied.
///
/// The CRLs are deliberately left out: a new CRL changes no tunnel's negotiation, so
/// `plan::diff` must not rebuild tunnels, templates or clones for it. The reload hands the
/// engine the new CRLs with the new configuration (`Command::Reconfigure`), which ends only
/// the sessions whose peer certificate they revoke.
impl PartialEq for TrustpointFiles {
    fn eq(&self, other: &Self) -> bool {
        self.auth.certificate == other.auth.certificate
            && self.auth.chain == other.auth.chain
            && self.cas == other.cas
            && self.auth.key.public_key() == other.auth.key.public_key()
    }
}

impl Eq for TrustpointFiles {}

/// Short: the subject and how many certificates, never key material or whole DER blobs.
impl std::fmt::Debug for TrustpointFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustpointFiles")
            .field("subject", &describe_dn(&self.subject))
            .field("chain", &self.auth.chain.len())
            .field("cas", &self.cas.len())
            .field("crls", &self.auth.trust_anchors.crls().len())
            .finish_non_exhaustive()
    }
}

impl TrustpointFiles {
    /// Our key signs with RSA (`rsa-sig`); otherwise ECDSA or EdDSA (`ecdsa-sig`).
    pub fn is_rsa(&self) -> bool {
        matches!(
            self.auth.key.default_scheme(),
            ike::crypto::sig::SignatureScheme::RsaPssSha256
        )
    }
}

/// Which key of a `[trustpoint.NAME]` a loading error concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrustpointKey {
    /// `ca[i]`.
    Ca(usize),
    /// `certificate`.
    Certificate,
    /// `private_key`.
    PrivateKey,
}

/// Reads the CRL files: each must hold CRLs issued and signed by one of the CAs `cas`
/// (RFC 5280 §6.3.3 (b), (f)); a CRL of another CA would never apply, so it is an error
/// rather than a silent no-op. Errors carry the index of the offending file.
pub(crate) fn load_crls(
    cas: &[Vec<u8>],
    paths: &[std::path::PathBuf],
) -> Result<Vec<ike::cert::Crl>, (usize, String)> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let anchors =
        TrustAnchors::from_der_certs(cas).map_err(|e| (0, format!("the trustpoint's ca: {e}")))?;
    let mut out = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let ders = read_crls(path).map_err(|e| (i, format!("{e:#}")))?;
        for (n, der) in ders.iter().enumerate() {
            let crl = anchors.check_crl(der).map_err(|e| {
                let which = if ders.len() > 1 {
                    format!(" (CRL {} of {})", n + 1, ders.len())
                } else {
                    String::new()
                };
                (i, format!("{}{which}: {e}", path.display()))
            })?;
            out.push(crl);
        }
    }
    Ok(out)
}

/// Reads the CA files: each must hold usable trust anchors.
pub(crate) fn load_cas(paths: &[std::path::PathBuf]) -> Result<Vec<Vec<u8>>, (usize, String)> {
    let mut cas = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let certs = read_certs(path).map_err(|e| (i, format!("{e:#}")))?;
        TrustAnchors::from_der_certs(&certs)
            .map_err(|e| (i, format!("{}: {e}", path.display())))?;
        cas.extend(certs);
    }
    Ok(cas)
}

/// Reads our certificate (with its chain) and key, checks that they belong together, and
/// combines them with the CAs `load_cas` and the CRLs `load_crls` returned (`name`, the
/// trustpoint, is what revocation log lines name).
pub(crate) fn load_trustpoint(
    name: &str,
    cas: Vec<Vec<u8>>,
    crls: Vec<ike::cert::Crl>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<TrustpointFiles, (TrustpointKey, String)> {
    use TrustpointKey::{Certificate, PrivateKey};
    let anchors = TrustAnchors::from_der_certs(&cas)
        .map_err(|e| (TrustpointKey::Ca(0), e.to_string()))?
        .with_crls(name, crls);
    let mut certs = read_certs(cert_path).map_err(|e| (Certificate, format!("{e:#}")))?;
    let certificate = certs.remove(0);
    let spki = ike::cert::subject_public_key_info(&certificate).map_err(|e| {
        (
            Certificate,
            format!("{} is not an X.509 certificate: {e}", cert_path.display()),
        )
    })?;
    let key = read_key(key_path).map_err(|e| (PrivateKey, format!("{e:#}")))?;
    // SubjectPublicKeyInfo ends with the BIT STRING holding exactly the raw public key
    // (RFC 5280 §4.1.2.7, RFC 5480 §2.2, RFC 8017 A.1.1), so this proves the pair matches.
    if !spki.ends_with(key.public_key()) {
        return Err((
            PrivateKey,
            format!(
                "private key {} does not belong to certificate {}",
                key_path.display(),
                cert_path.display()
            ),
        ));
    }
    let subject = ike::cert::subject_dn(&certificate)
        .map_err(|e| (Certificate, format!("{}: {e}", cert_path.display())))?;
    Ok(TrustpointFiles {
        auth: ike::CertificateAuth {
            key: Arc::new(key),
            certificate,
            chain: certs,
            trust_anchors: Arc::new(anchors),
        },
        subject,
        cas,
    })
}

/// One line per CRL of `cfg`'s trustpoints at `now` (Unix seconds), with whether it is stale
/// (past its nextUpdate, RFC 5280 §5.1.2.5). A stale CRL stays in force (`ike::cert`'s
/// revocation policy), so its line says what that means and what to do.
pub fn crl_report(cfg: &super::Config, now: u64) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for (name, tp) in &cfg.trustpoints {
        let Some(files) = &tp.files else { continue };
        for crl in files.auth.trust_anchors.crls() {
            let next = utc_date(crl.next_update());
            let stale = crl.next_update() <= now;
            out.push((
                stale,
                if stale {
                    format!(
                        "trustpoint {name}: CRL of {} is stale (next update {next} has passed); \
                         still applied: the {} serial(s) it lists stay refused; install a fresh \
                         CRL and `vtid reload`",
                        crl.issuer(),
                        crl.entries()
                    )
                } else {
                    format!(
                        "trustpoint {name}: CRL of {}: {} revoked, next update {next}",
                        crl.issuer(),
                        crl.entries()
                    )
                },
            ));
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds (proleptic Gregorian calendar).
fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 4514 / OpenSSL short names for DN attributes, to dotted OIDs (RFC 5280 §4.1.2.4,
/// RFC 4519). Written in a config as strongSwan and Cisco print DNs: in certificate order,
/// `C=US, O=Example, CN=peer`.
const DN_ATTRS: &[(&str, &str)] = &[
    ("C", "2.5.4.6"),
    ("ST", "2.5.4.8"),
    ("L", "2.5.4.7"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("GN", "2.5.4.42"),
    ("serialNumber", "2.5.4.5"),
    ("title", "2.5.4.12"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("E", "1.2.840.113549.1.9.1"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
];

/// Parses `C=US, O=Example, CN=peer` (comma- or slash-separated, certificate order) into
/// (dotted OID, value) pairs. `\,` escapes a comma inside a value.
pub(crate) fn parse_dn(s: &str) -> Result<Vec<(String, String)>> {
    let sep = if s.trim_start().starts_with('/') {
        '/'
    } else {
        ','
    };
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c == sep => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut out = Vec::new();
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("DN \"{s}\": \"{part}\" is not ATTRIBUTE=VALUE"))?;
        let k = k.trim();
        let oid = DN_ATTRS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, o)| (*o).to_owned())
            .or_else(|| {
                // A dotted OID written out (RFC 4514 §3 numericoid).
                k.split('.')
                    .all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| k.to_owned())
            })
            .with_context(|| {
                format!(
                    "DN \"{s}\": unknown attribute \"{k}\"; expected one of {} or a dotted OID",
                    DN_ATTRS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        out.push((oid, v.trim().to_owned()));
    }
    ensure!(!out.is_empty(), "DN \"{s}\" is empty");
    Ok(out)
}

/// The engine's pattern for an IKE profile's `match_identity` list (empty: any identity,
/// the PSK or the certificate still authenticates the peer).
pub(crate) fn id_match(list: &[IdentityMatch]) -> Result<ike::IdMatch> {
    let one = |m: &IdentityMatch| -> Result<ike::IdMatch> {
        Ok(match m {
            IdentityMatch::Any => ike::IdMatch::Any,
            IdentityMatch::Address(net) if net.prefix_len() == net.max_prefix_len() => {
                ike::IdMatch::Exact(IkeIdentity::from_ip(net.addr()))
            }
            IdentityMatch::Address(net) => ike::IdMatch::Prefix(net.network(), net.prefix_len()),
            IdentityMatch::Fqdn(f) => match f.strip_prefix("*.") {
                Some(dom) => ike::IdMatch::FqdnSuffix(dom.to_owned()),
                None => ike::IdMatch::Exact(IkeIdentity::Fqdn(f.clone())),
            },
            IdentityMatch::Email(e) => match e.strip_prefix("*@") {
                Some(dom) => ike::IdMatch::Rfc822Domain(dom.to_owned()),
                None => ike::IdMatch::Exact(IkeIdentity::Rfc822(e.clone())),
            },
            IdentityMatch::Dn(d) => ike::IdMatch::Dn(parse_dn(d)?),
        })
    };
    match list {
        [] => Ok(ike::IdMatch::Any),
        [m] => one(m),
        many => Ok(ike::IdMatch::OneOf(
            many.iter().map(one).collect::<Result<_>>()?,
        )),
    }
}

/// A keyring entry's identity as a `match_identity` pattern (exact).
pub(crate) fn identity_match(id: &Identity) -> IdentityMatch {
    match id {
        Identity::Address(a) => IdentityMatch::Address(ipnet::IpNet::from(*a)),
        Identity::Fqdn(f) => IdentityMatch::Fqdn(f.clone()),
        Identity::Email(e) => IdentityMatch::Email(e.clone()),
        Identity::Dn(d) => IdentityMatch::Dn(d.clone()),
    }
}

/// Our ID payload for an explicit `local_identity`. A DN must be our certificate's subject
/// (RFC 4945 §3.1.5: the peer compares it byte for byte), so it is sent as the certificate
/// encodes it, after checking that the configured text names the same DN.
pub(crate) fn local_id(id: &Identity, subject: Option<&[u8]>) -> Result<IkeIdentity> {
    Ok(match id {
        Identity::Address(a) => IkeIdentity::from_ip(*a),
        Identity::Fqdn(f) => IkeIdentity::Fqdn(f.clone()),
        Identity::Email(e) => IkeIdentity::Rfc822(e.clone()),
        Identity::Dn(d) => {
            let subject = subject.with_context(|| {
                format!("local_identity dn:{d} needs certificate authentication (a trustpoint)")
            })?;
            let ours = IkeIdentity::DerAsn1Dn(subject.to_vec());
            ensure!(
                ike::IdMatch::Dn(parse_dn(d)?).matches(&ours),
                "local_identity dn:{d} is not the subject of our certificate ({})",
                describe_dn(subject)
            );
            ours
        }
    })
}

/// A DN as `O=..., CN=...` for messages (unknown attributes by OID).
fn describe_dn(der: &[u8]) -> String {
    match ike::cert::dn_attributes(der) {
        Some(attrs) => attrs
            .iter()
            .map(|(oid, v)| {
                let name = DN_ATTRS
                    .iter()
                    .find(|(_, o)| o == oid)
                    .map_or(oid.as_str(), |(n, _)| n);
                format!("{name}={v}")
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => "unparsable DN".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        SanType,
    };

    use super::*;

    pub(crate) struct Files {
        pub(crate) dir: PathBuf,
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// A CA, an ECDSA end-entity certificate `O=vtid test, CN=me` for `me.example`, its key
    /// (0600), and a stranger key, written to a fresh directory.
    pub(crate) fn files(tag: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("vtid-certs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca_key = KeyPair::generate_for(alg).unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let mut ee = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "vtid test");
        dn.push(DnType::CommonName, "me");
        ee.distinguished_name = dn;
        ee.subject_alt_names = vec![SanType::DnsName("me.example".try_into().unwrap())];
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = ee
            .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
            .unwrap();
        let other = KeyPair::generate_for(alg).unwrap();
        // The certificate file carries its issuer after it, as a chain bundle would.
        fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        fs::write(dir.join("me.pem"), cert.pem() + &ca_cert.pem()).unwrap();
        fs::write(dir.join("me.der"), cert.der()).unwrap();
        for (name, k) in [("me.key", &key), ("other.key", &other)] {
            fs::write(dir.join(name), k.serialize_pem()).unwrap();
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o600)).unwrap();
        }
        fs::write(dir.join("me.p8"), key.serialize_der()).unwrap();
        // CRLs (RFC 5280 §5): ours listing nothing (PEM), ours listing "me" (DER), two in
        // one PEM file, and one of another CA.
        let serial = ike::cert::serial_number(cert.der()).unwrap();
        let crl = |serials: &[&[u8]], issuer: &Issuer<'_, &KeyPair>| {
            rcgen::CertificateRevocationListParams {
                this_update: rcgen::date_time_ymd(2025, 1, 1),
                next_update: rcgen::date_time_ymd(2035, 1, 1),
                crl_number: rcgen::SerialNumber::from(7u64),
                issuing_distribution_point: None,
                revoked_certs: serials
                    .iter()
                    .map(|s| rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(s),
                        revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                        reason_code: None,
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            }
            .signed_by(issuer)
            .unwrap()
        };
        let ours = Issuer::from_params(&ca, &ca_key);
        let empty = crl(&[], &ours).pem().unwrap();
        fs::write(dir.join("ca.crl"), &empty).unwrap();
        fs::write(dir.join("revoke-me.crl"), crl(&[&serial], &ours).der()).unwrap();
        fs::write(
            dir.join("two.crl"),
            empty + &crl(&[b"\x05"], &ours).pem().unwrap(),
        )
        .unwrap();
        let mut other_ca = CertificateParams::default();
        other_ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        other_ca
            .distinguished_name
            .push(DnType::CommonName, "other CA");
        let other_ca_key = KeyPair::generate_for(alg).unwrap();
        let theirs = Issuer::from_params(&other_ca, &other_ca_key);
        fs::write(dir.join("other.crl"), crl(&[], &theirs).pem().unwrap()).unwrap();
        fs::set_permissions(dir.join("me.p8"), fs::Permissions::from_mode(0o600)).unwrap();
        Files { dir }
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(1_767_225_600), "2026-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400 + 3_661), "2000-02-29 01:01:01 UTC");
        assert_eq!(utc_date(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn dn_strings() {
        let dn = parse_dn("C=CH, O=strongSwan\\, Inc, CN=moon.example").unwrap();
        assert_eq!(
            dn,
            vec![
                ("2.5.4.6".into(), "CH".into()),
                ("2.5.4.10".into(), "strongSwan, Inc".into()),
                ("2.5.4.3".into(), "moon.example".into()),
            ]
        );
        assert_eq!(parse_dn("/C=CH/CN=x").unwrap().len(), 2);
        assert_eq!(parse_dn("2.5.4.3=x").unwrap()[0].0, "2.5.4.3");
        let e = parse_dn("C=CH, XX=1").unwrap_err().to_string();
        assert!(e.contains("unknown attribute \"XX\""), "{e}");
        assert!(parse_dn("CN").is_err());
        assert!(parse_dn(" , ").is_err());
    }

    #[test]
    fn identity_lists() {
        let m = id_match(&[
            IdentityMatch::Fqdn("*.vpn.example".into()),
            IdentityMatch::Address("10.0.0.0/8".parse().unwrap()),
        ])
        .unwrap();
        assert!(m.matches(&IkeIdentity::Fqdn("a.vpn.example".into())));
        assert!(m.matches(&IkeIdentity::from_ip("10.9.9.9".parse().unwrap())));
        assert!(!m.matches(&IkeIdentity::Fqdn("vpn.example".into())));
        assert_eq!(
            id_match(&[IdentityMatch::Address("192.0.2.1/32".parse().unwrap())]).unwrap(),
            ike::IdMatch::Exact(IkeIdentity::from_ip("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(id_match(&[]).unwrap(), ike::IdMatch::Any);
        assert!(id_match(&[IdentityMatch::Dn("Q=1".into())]).is_err());
    }
}
