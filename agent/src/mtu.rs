//! One correct tunnel MTU, derived from the underlay MTU and the ESP overhead of the
//! negotiated transform, set on both kinds of tunnel device.
//!
//! Why: Linux gives an ip_vti device MTU 1480 and an xfrm interface 1500 regardless of the
//! transform (measured on Debian's 6.1 kernel), so the two ends of a vti<->xfrmi tunnel
//! disagree and OSPF stays in ExStart ("Neighbor MTU 1500 is larger than vti0's MTU 1480")
//! unless `ip ospf mtu-ignore` hides it. Computing the largest inner packet that fits one
//! underlay frame after encryption gives both ends the same value and avoids fragmenting
//! encrypted packets. Cisco reports the same number as "plaintext mtu" in
//! `show crypto ipsec sa`.

use ike::transform::{Encr, Integ};

/// What the ESP encapsulation around one inner packet costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspOverhead {
    /// Outer header is IPv6 (40 bytes) rather than IPv4 (20 bytes).
    pub outer_ipv6: bool,
    /// ESP is UDP-encapsulated (NAT-T, RFC 3948): 8 more bytes.
    pub udp_encap: bool,
    /// The ESP cipher.
    pub encr: Encr,
    /// The ESP integrity algorithm (None for AEAD ciphers).
    pub integ: Option<Integ>,
}

impl EspOverhead {
    /// Initialisation vector carried in every packet (RFC 4106 §3.1: 8 bytes for GCM;
    /// RFC 7634 §2: 8 for ChaCha20-Poly1305; RFC 3602 §3: one 16-byte block for AES-CBC;
    /// RFC 2451: 8 for 3DES-CBC).
    fn iv_len(self) -> u32 {
        match self.encr {
            Encr::AesGcm16 { .. } | Encr::ChaCha20Poly1305 | Encr::TripleDes => 8,
            Encr::AesCbc { .. } => 16,
        }
    }

    /// Padding granularity: ESP pads payload + 2 trailer bytes to the cipher's block size, and
    /// to at least 4 bytes (RFC 4303 §2.4).
    fn block(self) -> u32 {
        match self.encr {
            Encr::AesCbc { .. } => 16,
            Encr::TripleDes => 8,
            Encr::AesGcm16 { .. } | Encr::ChaCha20Poly1305 => 4,
        }
    }

    /// Integrity check value length (RFC 4106/7634: 16; RFC 4868 truncations; RFC 2404: 12).
    fn icv_len(self) -> u32 {
        match (self.encr, self.integ) {
            (Encr::AesGcm16 { .. } | Encr::ChaCha20Poly1305, _) => 16,
            (_, Some(Integ::HmacSha1_96)) => 12,
            (_, Some(Integ::HmacSha256_128)) => 16,
            (_, Some(Integ::HmacSha384_192)) => 24,
            (_, Some(Integ::HmacSha512_256)) => 32,
            (_, None) => 0,
        }
    }

    /// The largest inner (plaintext) packet whose tunnel-mode ESP packet still fits in
    /// `underlay_mtu`: outer IP [+ UDP] + SPI/seq (8) + IV + pad(inner + 2) + ICV.
    pub fn tunnel_mtu(self, underlay_mtu: u32) -> u32 {
        let outer = if self.outer_ipv6 { 40 } else { 20 };
        let udp = if self.udp_encap { 8 } else { 0 };
        let fixed = outer + udp + 8 + self.iv_len() + self.icv_len();
        let room = underlay_mtu.saturating_sub(fixed);
        (room / self.block() * self.block()).saturating_sub(2)
    }
}

/// The smallest MTU an interface carrying IPv6 may have (RFC 8200 §5); below it the kernel
/// removes IPv6 from the device, so we never set less on a tunnel.
pub const IPV6_MIN_MTU: u32 = 1280;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cisco_plaintext_mtu_from_the_seed() {
        // Seed 004: "transform: esp-aes esp-sha-hmac", "Tunnel UDP-Encaps",
        // "plaintext mtu 1422, path mtu 1500".
        let o = EspOverhead {
            outer_ipv6: false,
            udp_encap: true,
            encr: Encr::AesCbc { key_bits: 128 },
            integ: Some(Integ::HmacSha1_96),
        };
        assert_eq!(o.tunnel_mtu(1500), 1422);
    }

    #[test]
    fn gcm_and_ipv6_outer() {
        let gcm = EspOverhead {
            outer_ipv6: false,
            udp_encap: false,
            encr: Encr::AesGcm16 { key_bits: 256 },
            integ: None,
        };
        // 1500 - 20 - 8 - 8 - 16 = 1448, already 4-aligned, minus pad-length/next-header.
        assert_eq!(gcm.tunnel_mtu(1500), 1446);
        let v6 = EspOverhead {
            outer_ipv6: true,
            ..gcm
        };
        assert_eq!(v6.tunnel_mtu(1500), 1426);
        // The result always fits: encapsulating a packet of exactly that size gives <= MTU.
        for mtu in 1280..1600 {
            for o in [gcm, v6] {
                let p = o.tunnel_mtu(mtu);
                let padded = (p + 2).div_ceil(o.block()) * o.block();
                let total = if o.outer_ipv6 { 40 } else { 20 } + 8 + o.iv_len() + padded + 16;
                assert!(total <= mtu, "mtu {mtu}: inner {p} encapsulates to {total}");
                let next = (p + 3).div_ceil(o.block()) * o.block();
                let total_next = total - padded + next;
                assert!(total_next > mtu, "inner {p} is not the largest that fits");
            }
        }
    }

    #[test]
    fn cbc_sha256() {
        let o = EspOverhead {
            outer_ipv6: false,
            udp_encap: false,
            encr: Encr::AesCbc { key_bits: 256 },
            integ: Some(Integ::HmacSha256_128),
        };
        // 1500 - 20 - 8 - 16 - 16 = 1440 -> 1440 - 2.
        assert_eq!(o.tunnel_mtu(1500), 1438);
    }
}
