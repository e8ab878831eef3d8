//! AUTH payload production and verification: shared key (RFC 7296 §2.15) and RFC 7427
//! Digital Signature (method 14) against a pinned peer public key.

use crate::config::AuthConfig;
use crate::crypto::sig;
use crate::crypto::sig::SignatureScheme;
use crate::error::Error;
use crate::error::PeerMisbehaved;
use crate::keys;
use crate::transform::Prf;
use crate::wire::Auth;
use crate::wire::Cert;
use crate::wire::Payload;
use crate::wire::enums::AuthMethod;
use crate::wire::enums::CertEncoding;

/// Our AUTH payload over `octets` (from [`keys::signed_octets`]), preceded by our CERT when
/// the profile has one (RFC 7296 §1.2: CERT comes before AUTH).
pub(crate) fn build(auth: &AuthConfig, prf: Prf, octets: &[u8]) -> Result<Vec<Payload>, Error> {
    match auth {
        AuthConfig::Psk(psk) => Ok(vec![Payload::Auth(Auth {
            method: AuthMethod::SharedKeyMic,
            data: keys::psk_auth(prf, psk, octets).expose().to_vec(),
        })]),
        AuthConfig::Signature(s) => {
            let scheme = s.key.default_scheme();
            let signature = s.key.sign(scheme, octets)?;
            // RFC 7427 §3: one-octet length of the AlgorithmIdentifier, the DER, the signature.
            let alg = scheme.algorithm_identifier();
            let mut data = Vec::with_capacity(1 + alg.len() + signature.len());
            data.push(alg.len() as u8);
            data.extend_from_slice(alg);
            data.extend_from_slice(&signature);
            let mut out = Vec::new();
            if let Some(cert) = &s.certificate {
                out.push(Payload::Cert(Cert {
                    encoding: CertEncoding::X509Signature,
                    data: cert.clone(),
                }));
            }
            out.push(Payload::Auth(Auth {
                method: AuthMethod::DigitalSignature,
                data,
            }));
            Ok(out)
        }
    }
}

/// True when the peer's AUTH method is the one `auth` expects.
pub(crate) fn method_matches(auth: &AuthConfig, method: AuthMethod) -> bool {
    matches!(
        (auth, method),
        (AuthConfig::Psk(_), AuthMethod::SharedKeyMic)
            | (AuthConfig::Signature(_), AuthMethod::DigitalSignature)
    )
}

/// Verifies the peer's AUTH payload over `octets`.
pub(crate) fn verify(
    auth: &AuthConfig,
    prf: Prf,
    octets: &[u8],
    got: &Auth,
) -> Result<(), PeerMisbehaved> {
    if !method_matches(auth, got.method) {
        return Err(PeerMisbehaved::AuthenticationFailed);
    }
    match auth {
        AuthConfig::Psk(psk) => keys::verify_psk_auth(prf, psk, octets, &got.data)
            .map_err(|_| PeerMisbehaved::AuthenticationFailed),
        AuthConfig::Signature(s) => {
            let (&len, rest) = got
                .data
                .split_first()
                .ok_or(PeerMisbehaved::AuthenticationFailed)?;
            let len = usize::from(len);
            if rest.len() < len {
                return Err(PeerMisbehaved::AuthenticationFailed);
            }
            let (alg, signature) = rest.split_at(len);
            let scheme = SignatureScheme::from_algorithm_identifier(alg)
                .ok_or(PeerMisbehaved::AuthenticationFailed)?;
            sig::verify(scheme, &s.peer_key, octets, signature)
                .map_err(|_| PeerMisbehaved::AuthenticationFailed)
        }
    }
}
