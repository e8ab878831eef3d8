//! Inbound ESP SPIs that no two live Child SAs of this engine share.
//!
//! The receiver chooses the SPI, and with the destination address and protocol it names one
//! SA (RFC 4301 §4.1; RFC 7296 §3.3.1 has the peer send it back in its proposal). Drawn at
//! random, 32-bit SPIs collide by the birthday bound: about N²/2³³ at N Child SAs, 1.2% at
//! a hub of 10,000 spokes, and more as rekeys add SAs. A colliding SA cannot be installed
//! (the kernel refuses a second (dst, SPI, proto): `xfrm_state_add` returns EEXIST), while
//! the peer already sends on it. So the engine walks a keyed permutation of a counter
//! instead (keyed from the engine's seed): each SPI is new until 2³¹ have been handed out.
//! Nothing relies on SPIs being unguessable (ESP's integrity check is what rejects forged
//! packets, RFC 4303 §3.4.4). SPIs adopted from a previous process
//! ([`crate::Endpoint::adopt`]) are skipped. IKEv2 takes the lower half of the space; the
//! IKEv1 engine walks its own permutation ([`Spis::v1`]) in the upper half (the top bit,
//! [`V1_BIT`], set), so the two never meet.

use std::collections::HashSet;

use rand_core::RngCore;

/// The bit IKEv1's inbound SPIs carry and IKEv2's never do.
pub(crate) const V1_BIT: u32 = 0x8000_0000;

/// SPIs 1..=255 are reserved by IANA (RFC 4303 §2.1).
const RESERVED: u32 = 0xff;

pub(crate) struct Spis {
    /// Odd, so that multiplying by it permutes the 31-bit space.
    mul: u32,
    xor: u32,
    next: u32,
    /// 0 for IKEv2's half of the space, [`V1_BIT`] for IKEv1's.
    half: u32,
    /// In use by adopted Child SAs, which the permutation does not know about.
    adopted: HashSet<u32>,
}

impl Spis {
    /// IKEv2's SPIs: the lower half of the space.
    pub(crate) fn new(rng: &mut impl RngCore) -> Self {
        Spis {
            mul: rng.next_u32() | 1,
            xor: rng.next_u32(),
            next: rng.next_u32(),
            half: 0,
            adopted: HashSet::new(),
        }
    }

    /// IKEv1's SPIs: the upper half of the space.
    pub(crate) fn v1(rng: &mut impl RngCore) -> Self {
        Spis {
            half: V1_BIT,
            ..Spis::new(rng)
        }
    }

    /// The next inbound SPI: in 0x100..=0x7fff_ffff (IKEv2) or 0x8000_0000..=0xffff_ffff
    /// (IKEv1), never one handed out before in this process or adopted.
    pub(crate) fn next(&mut self) -> u32 {
        loop {
            let c = self.next;
            self.next = self.next.wrapping_add(1);
            // Multiplication by an odd number and XOR are both bijections modulo 2³¹, so
            // distinct counters give distinct SPIs until the counter wraps.
            let spi = (c.wrapping_mul(self.mul) ^ self.xor) & !V1_BIT | self.half;
            if spi > RESERVED && !self.adopted.contains(&spi) {
                return spi;
            }
        }
    }

    /// Keeps `spi`, in use by an adopted Child SA, from being handed out.
    pub(crate) fn adopt(&mut self, spi: u32) {
        self.adopted.insert(spi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn distinct_in_range_and_skips_adopted() {
        let mut rng = crate::crypto::Rng::from_seed([7; 32]);
        let mut s = Spis::new(&mut rng);
        let mut probe = Spis::new(&mut crate::crypto::Rng::from_seed([7; 32]));
        let first = probe.next();
        s.adopt(first);
        let mut seen = HashSet::new();
        for _ in 0..200_000 {
            let spi = s.next();
            assert!(spi > RESERVED && spi & V1_BIT == 0, "{spi:#x}");
            assert_ne!(spi, first, "an adopted SPI is never handed out");
            assert!(seen.insert(spi), "{spi:#x} handed out twice");
        }
    }

    #[test]
    fn v1_distinct_in_the_upper_half() {
        let mut s = Spis::v1(&mut crate::crypto::Rng::from_seed([5; 32]));
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let spi = s.next();
            assert!(spi & V1_BIT != 0, "{spi:#x}");
            assert!(seen.insert(spi), "{spi:#x} handed out twice");
        }
    }

    /// The counter starts anywhere: across its wrap from 0x7fff_ffff the SPIs stay distinct
    /// (the permutation is on 31 bits, and the counter's top bit does not reach the SPI).
    #[test]
    fn distinct_across_the_31_bit_wrap() {
        let mut s = Spis::new(&mut crate::crypto::Rng::from_seed([9; 32]));
        s.next = 0x7fff_ff00;
        let v: HashSet<u32> = (0..512).map(|_| s.next()).collect();
        assert_eq!(v.len(), 512);
    }
}
