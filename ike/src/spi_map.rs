//! Maps keyed by our own IKE SPIs, without SipHash.
//!
//! Our SPIs are 64 random bits from the engine's seeded ChaCha20 ([`crate::crypto::Rng`]),
//! so they are already uniformly spread and unknown to a peer: a peer cannot pick keys that
//! collide (it only looks keys up, with the SPIs of its datagrams, and a lookup adds nothing
//! to a table). The keyed SipHash of `std`'s default hasher, which guards tables whose keys
//! an attacker chooses, buys nothing here and cost four SipHash runs per handshake message
//! (issue 20). Tables keyed by what a peer sends (addresses, its SPIi, identities) keep it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A table keyed by one of our IKE SPIs.
pub(crate) type SpiMap<V> = HashMap<u64, V, BuildHasherDefault<SpiHasher>>;

/// Hashes a `u64` SPI to itself, mixed by a multiplication so that the high bits hashbrown
/// takes its control byte from depend on every bit of the SPI.
#[derive(Default)]
pub(crate) struct SpiHasher(u64);

impl Hasher for SpiHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, spi: u64) {
        // Fibonacci hashing: 2^64 / golden ratio, odd, so a bijection on u64.
        self.0 = (self.0 ^ spi).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    /// Only `u64` keys are hashed; anything else is folded in eight bytes at a time.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_spis_hash_apart_and_lookups_work() {
        let mut m: SpiMap<u32> = SpiMap::default();
        for i in 0..1000u64 {
            m.insert(i.wrapping_mul(0x0123_4567_89ab_cdef), i as u32);
        }
        for i in 0..1000u64 {
            assert_eq!(
                m.get(&i.wrapping_mul(0x0123_4567_89ab_cdef)),
                Some(&(i as u32))
            );
        }
        assert_eq!(m.get(&7), None);
    }
}
