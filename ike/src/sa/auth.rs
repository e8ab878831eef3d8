//! AUTH payload production and verification: shared key (RFC 7296 §2.15) and RFC 7427
//! Digital Signature (method 14), against a pinned peer public key or against the key of a
//! peer certificate validated to configured CAs (§3.6 CERT, §3.7 CERTREQ).

use crate::cert::CertError;
use crate::cert::PathSerials;
use crate::config::AuthConfig;
use crate::crypto::sig;
use crate::crypto::sig::SignatureScheme;
use crate::error::Error;
use crate::error::PeerMisbehaved;
use crate::keys;
use crate::transform::Prf;
use crate::wire::Auth;
use crate::wire::Cert;
use crate::wire::Identity;
use crate::wire::Payload;
use crate::wire::enums::AuthMethod;
use crate::wire::enums::CertEncoding;

/// Most CERT payloads of one message we look at (end-entity plus intermediates); more is
/// not a chain anyone sends.
const MAX_CERTS: usize = 8;

/// What the peer presented next to its AUTH payload: its identity, its X.509 CERT payloads
/// and the wall-clock time to validate them at.
pub(crate) struct Presented<'a> {
    /// IDi or IDr.
    pub(crate) id: &'a Identity,
    /// Contents of the X.509 Certificate - Signature CERT payloads in message order: §3.6
    /// puts the certificate holding the AUTH key first.
    pub(crate) certs: Vec<&'a [u8]>,
    /// Seconds since the Unix epoch, when the driver gave the engine a wall clock.
    pub(crate) unix_time: Option<u64>,
}

impl<'a> Presented<'a> {
    pub(crate) fn new(id: &'a Identity, payloads: &'a [Payload], unix_time: Option<u64>) -> Self {
        let certs = payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Cert(c) if c.encoding == CertEncoding::X509Signature => {
                    Some(c.data.as_slice())
                }
                _ => None,
            })
            .take(MAX_CERTS)
            .collect();
        Self {
            id,
            certs,
            unix_time,
        }
    }
}

/// Our CERT payloads: the end-entity certificate first, then the chain (§3.6). The pinned
/// mode sends its certificate too, so certificate-based peers can check it.
pub(crate) fn cert_payloads(auth: &AuthConfig) -> Vec<Payload> {
    let x509 = |der: &Vec<u8>| {
        Payload::Cert(Cert {
            encoding: CertEncoding::X509Signature,
            data: der.clone(),
        })
    };
    match auth {
        AuthConfig::Psk(_) => Vec::new(),
        AuthConfig::Signature(s) => s.certificate.iter().map(x509).collect(),
        AuthConfig::Certificate(c) => std::iter::once(&c.certificate)
            .chain(&c.chain)
            .map(x509)
            .collect(),
    }
}

/// A CERTREQ (§3.7) naming the trust anchors of every certificate profile in `auths`
/// (deduplicated, in order), or `None` when none uses certificates.
pub(crate) fn certreq<'a>(auths: impl IntoIterator<Item = &'a AuthConfig>) -> Option<Payload> {
    let mut hashes: Vec<[u8; 20]> = Vec::new();
    for auth in auths {
        if let AuthConfig::Certificate(c) = auth {
            for h in c.trust_anchors.key_hashes() {
                if !hashes.contains(h) {
                    hashes.push(*h);
                }
            }
        }
    }
    if hashes.is_empty() {
        return None;
    }
    Some(Payload::CertReq(Cert {
        encoding: CertEncoding::X509Signature,
        data: hashes.concat(),
    }))
}

/// Our AUTH payload over `octets` (from [`keys::signed_octets`]).
pub(crate) fn build_auth(auth: &AuthConfig, prf: Prf, octets: &[u8]) -> Result<Payload, Error> {
    let key = match auth {
        AuthConfig::Psk(psk) => {
            return Ok(Payload::Auth(Auth {
                method: AuthMethod::SharedKeyMic,
                data: keys::psk_auth_data(prf, psk, octets),
            }));
        }
        AuthConfig::Signature(s) => &s.key,
        AuthConfig::Certificate(c) => &c.key,
    };
    let scheme = key.default_scheme();
    let signature = key.sign(scheme, octets)?;
    // RFC 7427 §3: one-octet length of the AlgorithmIdentifier, the DER, the signature.
    let alg = scheme.algorithm_identifier();
    let mut data = Vec::with_capacity(1 + alg.len() + signature.len());
    data.push(alg.len() as u8);
    data.extend_from_slice(alg);
    data.extend_from_slice(&signature);
    Ok(Payload::Auth(Auth {
        method: AuthMethod::DigitalSignature,
        data,
    }))
}

/// Our CERT payloads followed by AUTH (RFC 7296 §1.2: CERT comes before AUTH).
pub(crate) fn build(auth: &AuthConfig, prf: Prf, octets: &[u8]) -> Result<Vec<Payload>, Error> {
    let mut out = cert_payloads(auth);
    out.push(build_auth(auth, prf, octets)?);
    Ok(out)
}

/// True when the peer's AUTH method is the one `auth` expects.
pub(crate) fn method_matches(auth: &AuthConfig, method: AuthMethod) -> bool {
    matches!(
        (auth, method),
        (AuthConfig::Psk(_), AuthMethod::SharedKeyMic)
            | (
                AuthConfig::Signature(_) | AuthConfig::Certificate(_),
                AuthMethod::DigitalSignature
            )
    )
}

/// Verifies the peer's AUTH payload over `octets`; with certificates, first validates what
/// the peer `presented` (path to our CAs, validity at its time, revocation, identity
/// binding). Returns, for certificates, the issuers and serials of the path, which the SA
/// keeps so that new CRLs can end it ([`crate::cert::TrustAnchors::revoked`]).
pub(crate) fn verify(
    auth: &AuthConfig,
    prf: Prf,
    octets: &[u8],
    got: &Auth,
    presented: &Presented<'_>,
) -> Result<Option<PathSerials>, PeerMisbehaved> {
    if !method_matches(auth, got.method) {
        return Err(PeerMisbehaved::AuthenticationFailed);
    }
    match auth {
        AuthConfig::Psk(psk) => keys::verify_psk_auth(prf, psk, octets, &got.data)
            .map(|()| None)
            .map_err(|_| PeerMisbehaved::AuthenticationFailed),
        AuthConfig::Signature(s) => verify_signature(&s.peer_key, octets, &got.data).map(|()| None),
        AuthConfig::Certificate(c) => {
            let peer = peer_certificate(c, presented).map_err(|e| {
                // The peer only learns AUTHENTICATION_FAILED (RFC 7296 §2.21.2); the operator
                // gets the reason. A revocation is worth a warning line of its own wording.
                match e {
                    CertError::Revoked { .. } => {
                        tracing::warn!(
                            "peer {} refused: {e}",
                            crate::cert::describe_identity(presented.id)
                        );
                    }
                    _ => {
                        tracing::warn!(error = %e, peer_id = %presented.id, "peer certificate rejected");
                    }
                }
                PeerMisbehaved::AuthenticationFailed
            })?;
            verify_signature(&peer.spki, octets, &got.data).map(|()| Some(peer.serials))
        }
    }
}

/// The peer's validated end-entity certificate: its key and the path's serials.
fn peer_certificate(
    c: &crate::config::CertificateAuth,
    presented: &Presented<'_>,
) -> Result<crate::cert::VerifiedPeer, CertError> {
    let (ee, intermediates) = presented
        .certs
        .split_first()
        .ok_or(CertError::NoCertificate)?;
    let now = presented.unix_time.ok_or(CertError::NoWallClock)?;
    crate::cert::verify_peer(&c.trust_anchors, ee, intermediates, presented.id, now)
}

/// RFC 7427 §3 AUTH data: `len(AlgorithmIdentifier) | AlgorithmIdentifier | Signature`,
/// verified with `public_key` (SubjectPublicKeyInfo DER or a raw form).
fn verify_signature(public_key: &[u8], octets: &[u8], data: &[u8]) -> Result<(), PeerMisbehaved> {
    let (&len, rest) = data
        .split_first()
        .ok_or(PeerMisbehaved::AuthenticationFailed)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(PeerMisbehaved::AuthenticationFailed);
    }
    let (alg, signature) = rest.split_at(len);
    let scheme = SignatureScheme::from_algorithm_identifier(alg)
        .ok_or(PeerMisbehaved::AuthenticationFailed)?;
    sig::verify(scheme, public_key, octets, signature)
        .map_err(|_| PeerMisbehaved::AuthenticationFailed)
}
