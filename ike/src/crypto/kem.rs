//! Additional key exchanges (RFC 9370): one round of any Transform Type 4 method, classic
//! Diffie-Hellman ([`super::dh`]) or ML-KEM (FIPS 203, through `aws_lc_rs::kem`).
//!
//! The exchange is asymmetric for a KEM, so both methods are shaped as one: the initiator of
//! the exchange sends [`KeInitiator::public`] (a DH public value or an ML-KEM encapsulation
//! key), the responder answers with [`respond`] (its DH public value or the ML-KEM
//! ciphertext) and both end with the same shared secret (RFC 9370 §2.2.2).
//!
//! Randomness: DH keys come from the engine's seeded [`Rng`]. ML-KEM key generation and
//! encapsulation draw from AWS-LC's own DRBG, which `aws_lc_rs::kem` offers no way to seed
//! (as for signature nonces, see the module contract in [`super`]).

use aws_lc_rs::kem;

use super::{CryptoError, KeyExchange, Rng};
use crate::secret::Secret;
use crate::transform::KeMethod;

/// The initiator's half of one exchange; consumed by [`finish`](Self::finish).
pub struct KeInitiator {
    method: KeMethod,
    public: Vec<u8>,
    private: Private,
}

enum Private {
    Dh(KeyExchange),
    MlKem(kem::DecapsulationKey),
}

impl KeInitiator {
    /// Generates the initiator's key for `method`.
    pub fn generate(method: KeMethod, rng: &mut Rng) -> Result<Self, CryptoError> {
        match mlkem_alg(method) {
            None => {
                let KeMethod::Dh(group) = method else {
                    return Err(CryptoError::UnsupportedGroup(method.id()));
                };
                let ke = KeyExchange::generate(group, rng)?;
                Ok(Self {
                    method,
                    public: ke.public().to_vec(),
                    private: Private::Dh(ke),
                })
            }
            Some(alg) => {
                let failed = CryptoError::KemFailed { method };
                let dk = kem::DecapsulationKey::generate(alg).map_err(|_| failed.clone())?;
                let ek = dk.encapsulation_key().map_err(|_| failed.clone())?;
                let public = ek.key_bytes().map_err(|_| failed)?.as_ref().to_vec();
                Ok(Self {
                    method,
                    public,
                    private: Private::MlKem(dk),
                })
            }
        }
    }

    /// The method.
    pub fn method(&self) -> KeMethod {
        self.method
    }

    /// The Key Exchange Data of our KE payload.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret from the responder's KE data. A length other than
    /// [`responder_len`] is [`CryptoError::BadKeLength`] (the caller checks it first, to
    /// answer INVALID_SYNTAX); a bad DH value is [`CryptoError::InvalidPublicValue`].
    pub fn finish(self, peer: &[u8]) -> Result<Secret, CryptoError> {
        check_len(responder_len(self.method), peer.len())?;
        match self.private {
            Private::Dh(ke) => ke.agree(peer),
            Private::MlKem(dk) => {
                // FIPS 203 §7.3: decapsulation of a well-sized ciphertext always yields a key
                // (implicit rejection), so a forged ciphertext shows up as an AUTH failure.
                let ss = dk.decapsulate(kem::Ciphertext::from(peer)).map_err(|_| {
                    CryptoError::KemFailed {
                        method: self.method,
                    }
                })?;
                Ok(Secret::from_slice(ss.as_ref()))
            }
        }
    }
}

impl std::fmt::Debug for KeInitiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeInitiator")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// The responder's half: our KE data for `peer`'s and the shared secret. For ML-KEM the
/// peer's data is an encapsulation key, checked by AWS-LC (FIPS 203 §7.2 modulus check).
pub fn respond(
    method: KeMethod,
    peer: &[u8],
    rng: &mut Rng,
) -> Result<(Vec<u8>, Secret), CryptoError> {
    check_len(initiator_len(method), peer.len())?;
    match mlkem_alg(method) {
        None => {
            let KeMethod::Dh(group) = method else {
                return Err(CryptoError::UnsupportedGroup(method.id()));
            };
            let ke = KeyExchange::generate(group, rng)?;
            let public = ke.public().to_vec();
            Ok((public, ke.agree(peer)?))
        }
        Some(alg) => {
            let invalid = CryptoError::KemFailed { method };
            let ek = kem::EncapsulationKey::new(alg, peer).map_err(|_| invalid.clone())?;
            let (ct, ss) = ek.encapsulate().map_err(|_| invalid)?;
            Ok((ct.as_ref().to_vec(), Secret::from_slice(ss.as_ref())))
        }
    }
}

/// Bytes of the KE data the exchange's initiator sends (encapsulation key for ML-KEM, FIPS
/// 203 §8 Table 3).
pub fn initiator_len(method: KeMethod) -> usize {
    match method {
        KeMethod::Dh(g) => KeyExchange::public_len(g),
        KeMethod::MlKem512 => 800,
        KeMethod::MlKem768 => 1184,
        KeMethod::MlKem1024 => 1568,
    }
}

/// Bytes of the KE data the exchange's responder sends (ciphertext for ML-KEM).
pub fn responder_len(method: KeMethod) -> usize {
    match method {
        KeMethod::Dh(g) => KeyExchange::public_len(g),
        KeMethod::MlKem512 => 768,
        KeMethod::MlKem768 => 1088,
        KeMethod::MlKem1024 => 1568,
    }
}

fn mlkem_alg(method: KeMethod) -> Option<&'static kem::Algorithm> {
    match method {
        KeMethod::Dh(_) => None,
        KeMethod::MlKem512 => Some(&kem::ML_KEM_512),
        KeMethod::MlKem768 => Some(&kem::ML_KEM_768),
        KeMethod::MlKem1024 => Some(&kem::ML_KEM_1024),
    }
}

fn check_len(expected: usize, actual: usize) -> Result<(), CryptoError> {
    if expected == actual {
        Ok(())
    } else {
        Err(CryptoError::BadKeyLength { expected, actual })
    }
}

#[cfg(test)]
mod tests {
    use rand_core::SeedableRng;

    use super::*;
    use crate::transform::DhGroup;

    #[test]
    fn every_method_agrees_and_has_its_lengths() {
        let mut rng = Rng::from_seed([7; 32]);
        for method in [
            KeMethod::MlKem512,
            KeMethod::MlKem768,
            KeMethod::MlKem1024,
            KeMethod::Dh(DhGroup::Curve25519),
            KeMethod::Dh(DhGroup::Ecp256),
        ] {
            let i = KeInitiator::generate(method, &mut rng).expect("keygen");
            assert_eq!(i.public().len(), initiator_len(method), "{method:?}");
            let (reply, ss_r) = respond(method, i.public(), &mut rng).expect("respond");
            assert_eq!(reply.len(), responder_len(method), "{method:?}");
            let ss_i = i.finish(&reply).expect("finish");
            assert_eq!(ss_i.expose(), ss_r.expose(), "{method:?}");
            assert!(!ss_i.is_empty());
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let mut rng = Rng::from_seed([8; 32]);
        let i = KeInitiator::generate(KeMethod::MlKem768, &mut rng).expect("keygen");
        let short = &i.public()[..100];
        assert!(matches!(
            respond(KeMethod::MlKem768, short, &mut rng),
            Err(CryptoError::BadKeyLength {
                expected: 1184,
                actual: 100
            })
        ));
        assert!(matches!(
            i.finish(&[0u8; 1087]),
            Err(CryptoError::BadKeyLength { .. })
        ));
    }

    #[test]
    fn a_tampered_ciphertext_gives_another_secret() {
        let mut rng = Rng::from_seed([9; 32]);
        let i = KeInitiator::generate(KeMethod::MlKem768, &mut rng).expect("keygen");
        let (mut ct, ss_r) = respond(KeMethod::MlKem768, i.public(), &mut rng).expect("respond");
        ct[0] ^= 1;
        let ss_i = i
            .finish(&ct)
            .expect("implicit rejection still yields a key");
        assert_ne!(ss_i.expose(), ss_r.expose());
    }
}
