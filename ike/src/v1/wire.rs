//! ISAKMP wire codec (RFC 2408 §3): the fixed header, the generic payload chain and every
//! payload IKEv1 main mode, quick mode and informational exchanges use, with the IPsec DOI's
//! identification payload (RFC 2407 §4.6.2) and NAT-T's NAT-D / NAT-OA (RFC 3947 §3.2, §5.1).
//!
//! Decoding never panics and never allocates more than the input holds: every length field is
//! checked against the bytes that remain and against the fixed part it must cover before
//! anything is copied (the same [`Reader`] as the IKEv2 codec). Reserved fields must be zero
//! (RFC 2408 §3.2: "Unused, set to 0"), so a decoded message re-encodes to the same bytes.

use std::fmt;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::ops::Range;

use crate::wire::InvalidMessage;
use crate::wire::Reader;

/// The version octet we send and accept: major 1, minor 0 (RFC 2408 §3.1).
pub const ISAKMP_VERSION: u8 = 0x10;
/// Encryption bit: everything after the header is encrypted (RFC 2408 §3.1).
pub const FLAG_ENCRYPTION: u8 = 0x01;
/// Commit bit: key exchange synchronisation (RFC 2408 §3.1, RFC 2409 §5.5).
pub const FLAG_COMMIT: u8 = 0x02;
/// Authentication-only bit (RFC 2408 §3.1); only meaningful with informational exchanges.
pub const FLAG_AUTH_ONLY: u8 = 0x04;
/// DOI: IPsec (RFC 2407 §4.2).
pub const DOI_IPSEC: u32 = 1;
/// Situation: identity only (RFC 2407 §4.2), the only situation IKE peers use.
pub const SIT_IDENTITY_ONLY: u32 = 1;
/// Protocol ID of the ISAKMP SA (RFC 2407 §4.4.1).
pub const PROTO_ISAKMP: u8 = 1;
/// Protocol ID of ESP (RFC 2407 §4.4.1).
pub const PROTO_IPSEC_ESP: u8 = 3;
/// Phase 1 transform ID KEY_IKE (RFC 2407 §4.4.2).
pub const KEY_IKE: u8 = 1;

/// Why received bytes are not a well-formed ISAKMP message; each maps to the notify RFC 2408
/// §5 prescribes ([`crate::v1::error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Lengths, truncation, counts (PAYLOAD-MALFORMED, RFC 2408 §5.2 – §5.15).
    Syntax(InvalidMessage),
    /// The major version is not 1 (INVALID-MAJOR-VERSION, §5.1).
    MajorVersion(u8),
    /// The minor version is not 0 (INVALID-MINOR-VERSION, §5.1).
    MinorVersion(u8),
    /// A payload type ISAKMP, the IPsec DOI and NAT-T do not define (INVALID-PAYLOAD-TYPE,
    /// §5.2), or one that may only appear inside an SA payload (proposal, transform).
    PayloadType(u8),
    /// A reserved field that is not zero (§3.2).
    ReservedNotZero,
    /// Flag bits ISAKMP does not define (INVALID-FLAGS, §5.1).
    Flags(u8),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Malformed {}

impl From<InvalidMessage> for Malformed {
    fn from(e: InvalidMessage) -> Self {
        Self::Syntax(e)
    }
}

/// Exchange types (RFC 2408 §3.1, RFC 2409 §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExchangeType {
    /// Identity Protection: IKE main mode (2).
    IdentityProtection,
    /// Aggressive (4).
    Aggressive,
    /// Informational (5).
    Informational,
    /// Quick mode (32).
    Quick,
    /// Any other value, kept so that the engine can answer INVALID-EXCHANGE-TYPE.
    Other(u8),
}

impl ExchangeType {
    /// The wire value.
    pub fn to_raw(self) -> u8 {
        match self {
            Self::IdentityProtection => 2,
            Self::Aggressive => 4,
            Self::Informational => 5,
            Self::Quick => 32,
            Self::Other(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_raw(v: u8) -> Self {
        match v {
            2 => Self::IdentityProtection,
            4 => Self::Aggressive,
            5 => Self::Informational,
            32 => Self::Quick,
            v => Self::Other(v),
        }
    }
}

/// Payload types (RFC 2408 §3.1; NAT-D and NAT-OA from RFC 3947 §3.2, §5.1).
pub mod payload_type {
    /// No next payload.
    pub const NONE: u8 = 0;
    /// Security Association.
    pub const SA: u8 = 1;
    /// Proposal (inside an SA payload only).
    pub const PROPOSAL: u8 = 2;
    /// Transform (inside a proposal only).
    pub const TRANSFORM: u8 = 3;
    /// Key Exchange.
    pub const KE: u8 = 4;
    /// Identification.
    pub const ID: u8 = 5;
    /// Certificate.
    pub const CERT: u8 = 6;
    /// Certificate Request.
    pub const CERT_REQ: u8 = 7;
    /// Hash.
    pub const HASH: u8 = 8;
    /// Signature.
    pub const SIG: u8 = 9;
    /// Nonce.
    pub const NONCE: u8 = 10;
    /// Notification.
    pub const NOTIFY: u8 = 11;
    /// Delete.
    pub const DELETE: u8 = 12;
    /// Vendor ID.
    pub const VENDOR_ID: u8 = 13;
    /// NAT-D (RFC 3947 §3.2).
    pub const NAT_D: u8 = 20;
    /// NAT-OA (RFC 3947 §5.1).
    pub const NAT_OA: u8 = 21;
    /// NAT-D of the drafts before RFC 3947 (draft-ietf-ipsec-nat-t-ike-02/03, private use).
    pub const NAT_D_DRAFT: u8 = 130;
    /// NAT-OA of the same drafts.
    pub const NAT_OA_DRAFT: u8 = 131;
    /// The Cisco/strongSwan IKEv1 fragment payload ([`crate::v1::fragment`]); never part of
    /// a decoded chain (fragments are reassembled before decoding).
    pub const FRAGMENT: u8 = 132;
}

/// The fixed ISAKMP header (RFC 2408 §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Initiator cookie.
    pub cky_i: u64,
    /// Responder cookie (zero in the first message).
    pub cky_r: u64,
    /// Type of the first payload.
    pub next: u8,
    /// Version octet: major in the high nibble.
    pub version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags (E, C, A).
    pub flags: u8,
    /// Message ID: zero in phase 1, random in each phase 2 and informational exchange.
    pub message_id: u32,
    /// Length of the whole message including the header.
    pub length: u32,
}

impl Header {
    /// Size of the fixed header.
    pub const LEN: usize = 28;

    /// A header for a new message; `length` and `next` are filled in by [`encode_message`].
    pub fn new(cky_i: u64, cky_r: u64, exchange: ExchangeType, flags: u8, message_id: u32) -> Self {
        Self {
            cky_i,
            cky_r,
            next: payload_type::NONE,
            version: ISAKMP_VERSION,
            exchange,
            flags,
            message_id,
            length: 0,
        }
    }

    /// True when the E bit is set.
    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTION != 0
    }

    /// True when the C bit is set.
    pub fn is_commit(&self) -> bool {
        self.flags & FLAG_COMMIT != 0
    }

    /// Reads the header and checks version and flags; the length is checked by the caller
    /// against the datagram.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let cky_i = r.u64()?;
        let cky_r = r.u64()?;
        let next = r.u8()?;
        let version = r.u8()?;
        let exchange = ExchangeType::from_raw(r.u8()?);
        let flags = r.u8()?;
        let message_id = r.u32()?;
        let length = r.u32()?;
        if version >> 4 != 1 {
            return Err(Malformed::MajorVersion(version >> 4));
        }
        if version & 0x0f != 0 {
            return Err(Malformed::MinorVersion(version & 0x0f));
        }
        if flags & !(FLAG_ENCRYPTION | FLAG_COMMIT | FLAG_AUTH_ONLY) != 0 {
            return Err(Malformed::Flags(flags));
        }
        Ok(Self {
            cky_i,
            cky_r,
            next,
            version,
            exchange,
            flags,
            message_id,
            length,
        })
    }

    /// Appends the 28 header octets.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cky_i.to_be_bytes());
        out.extend_from_slice(&self.cky_r.to_be_bytes());
        out.push(self.next);
        out.push(self.version);
        out.push(self.exchange.to_raw());
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

/// A data attribute (RFC 2408 §3.3): type with the AF bit cleared, and a basic (two-octet)
/// or variable (length-prefixed) value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type (15 bits).
    pub ty: u16,
    /// Its value.
    pub value: AttrValue,
}

/// An attribute value in its wire form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// AF = 1: the value is the two octets of the length field (TV).
    Basic(u16),
    /// AF = 0: a length and that many octets (TLV).
    Variable(Vec<u8>),
}

impl Attribute {
    /// A basic attribute.
    pub fn basic(ty: u16, v: u16) -> Self {
        Self {
            ty,
            value: AttrValue::Basic(v),
        }
    }

    /// A numeric attribute in the shortest form: basic when it fits two octets, else a
    /// variable four-octet value (life durations, RFC 2407 §4.5).
    pub fn number(ty: u16, v: u32) -> Self {
        match u16::try_from(v) {
            Ok(v) => Self::basic(ty, v),
            Err(_) => Self {
                ty,
                value: AttrValue::Variable(v.to_be_bytes().to_vec()),
            },
        }
    }

    /// The value as an integer: basic, or variable of at most eight octets (longer or empty
    /// values are none).
    pub fn as_u64(&self) -> Option<u64> {
        match &self.value {
            AttrValue::Basic(v) => Some(u64::from(*v)),
            AttrValue::Variable(b) if !b.is_empty() && b.len() <= 8 => {
                Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
            }
            AttrValue::Variable(_) => None,
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let t = r.u16()?;
        let ty = t & 0x7fff;
        let value = if t & 0x8000 != 0 {
            AttrValue::Basic(r.u16()?)
        } else {
            let len = usize::from(r.u16()?);
            AttrValue::Variable(r.take(len)?.to_vec())
        };
        Ok(Self { ty, value })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match &self.value {
            AttrValue::Basic(v) => {
                out.extend_from_slice(&(self.ty | 0x8000).to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
            }
            AttrValue::Variable(b) => {
                out.extend_from_slice(&(self.ty & 0x7fff).to_be_bytes());
                // Attribute values we build are at most a few octets; a longer one cannot
                // be represented and is cut at the 16-bit length.
                let len = b.len().min(usize::from(u16::MAX));
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&b[..len]);
            }
        }
    }
}

/// A transform payload (RFC 2408 §3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    /// Transform number, unique within its proposal.
    pub number: u8,
    /// Transform ID (KEY_IKE in phase 1, the ESP transform in phase 2).
    pub id: u8,
    /// SA attributes.
    pub attrs: Vec<Attribute>,
}

/// A proposal payload (RFC 2408 §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number: proposals sharing one are ANDed, different ones ORed (§4.2).
    pub number: u8,
    /// Protocol ID (PROTO_ISAKMP, PROTO_IPSEC_ESP, ...).
    pub protocol: u8,
    /// The sender's SPI for this protocol (empty in phase 1, four octets for ESP).
    pub spi: Vec<u8>,
    /// Transforms, alternatives in order of preference.
    pub transforms: Vec<Transform>,
}

/// A security association payload (RFC 2408 §3.4, RFC 2407 §4.6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sa {
    /// Domain of interpretation.
    pub doi: u32,
    /// Situation.
    pub situation: u32,
    /// Proposals.
    pub proposals: Vec<Proposal>,
}

impl Sa {
    fn read(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let doi = r.u32()?;
        let situation = r.u32()?;
        let mut proposals = Vec::new();
        let mut next = if r.is_empty() {
            payload_type::NONE
        } else {
            payload_type::PROPOSAL
        };
        while next == payload_type::PROPOSAL {
            let (n, mut body) = generic(r)?;
            next = n;
            let number = body.u8()?;
            let protocol = body.u8()?;
            let spi_size = body.u8()?;
            let count = body.u8()?;
            let spi = body.take(usize::from(spi_size))?.to_vec();
            let mut transforms = Vec::with_capacity(usize::from(count));
            for i in 0..count {
                let (tn, mut tb) = generic(&mut body)?;
                // §3.6: the last transform's Next Payload is 0, the others' 3.
                let want = if i + 1 == count {
                    payload_type::NONE
                } else {
                    payload_type::TRANSFORM
                };
                if tn != want {
                    return Err(Malformed::PayloadType(tn));
                }
                let number = tb.u8()?;
                let id = tb.u8()?;
                if tb.u16()? != 0 {
                    return Err(Malformed::ReservedNotZero);
                }
                let mut attrs = Vec::new();
                while !tb.is_empty() {
                    attrs.push(Attribute::read(&mut tb)?);
                }
                transforms.push(Transform { number, id, attrs });
            }
            // §3.5: the transforms fill the proposal exactly.
            body.expect_empty()?;
            proposals.push(Proposal {
                number,
                protocol,
                spi,
                transforms,
            });
        }
        if next != payload_type::NONE {
            return Err(Malformed::PayloadType(next));
        }
        r.expect_empty()?;
        Ok(Self {
            doi,
            situation,
            proposals,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.doi.to_be_bytes());
        out.extend_from_slice(&self.situation.to_be_bytes());
        for (i, p) in self.proposals.iter().enumerate() {
            let next = if i + 1 == self.proposals.len() {
                payload_type::NONE
            } else {
                payload_type::PROPOSAL
            };
            let start = begin_generic(out, next);
            out.push(p.number);
            out.push(p.protocol);
            out.push(p.spi.len() as u8);
            out.push(p.transforms.len() as u8);
            out.extend_from_slice(&p.spi);
            for (k, t) in p.transforms.iter().enumerate() {
                let next = if k + 1 == p.transforms.len() {
                    payload_type::NONE
                } else {
                    payload_type::TRANSFORM
                };
                let ts = begin_generic(out, next);
                out.push(t.number);
                out.push(t.id);
                out.extend_from_slice(&[0, 0]);
                for a in &t.attrs {
                    a.encode(out);
                }
                end_generic(out, ts);
            }
            end_generic(out, start);
        }
    }
}

/// Identification types (RFC 2407 §4.6.2.1).
pub mod id_type {
    /// A single IPv4 address.
    pub const IPV4_ADDR: u8 = 1;
    /// A fully qualified domain name.
    pub const FQDN: u8 = 2;
    /// user@fqdn.
    pub const USER_FQDN: u8 = 3;
    /// IPv4 address and mask.
    pub const IPV4_ADDR_SUBNET: u8 = 4;
    /// A single IPv6 address.
    pub const IPV6_ADDR: u8 = 5;
    /// IPv6 address and mask.
    pub const IPV6_ADDR_SUBNET: u8 = 6;
    /// First and last IPv4 address.
    pub const IPV4_ADDR_RANGE: u8 = 7;
    /// First and last IPv6 address.
    pub const IPV6_ADDR_RANGE: u8 = 8;
    /// DER X.500 distinguished name.
    pub const DER_ASN1_DN: u8 = 9;
    /// DER X.500 general name.
    pub const DER_ASN1_GN: u8 = 10;
    /// Opaque key identifier.
    pub const KEY_ID: u8 = 11;
}

/// An identification payload (RFC 2408 §3.8 with the IPsec DOI fields, RFC 2407 §4.6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Id {
    /// ID type ([`id_type`]).
    pub id_type: u8,
    /// IP protocol (0: any).
    pub protocol: u8,
    /// Port (0: any).
    pub port: u16,
    /// Identification data.
    pub data: Vec<u8>,
}

impl Id {
    /// The address range an address-type ID names (host, subnet or range); `None` for other
    /// types or data of the wrong length.
    pub fn addresses(&self) -> Option<(IpAddr, IpAddr)> {
        let v4 = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from);
        let v6 = |b: &[u8]| <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from);
        let d = &self.data;
        match self.id_type {
            id_type::IPV4_ADDR => v4(d).map(|a| (IpAddr::V4(a), IpAddr::V4(a))),
            id_type::IPV6_ADDR => v6(d).map(|a| (IpAddr::V6(a), IpAddr::V6(a))),
            id_type::IPV4_ADDR_SUBNET if d.len() == 8 => {
                let (a, m) = (u32::from(v4(&d[..4])?), u32::from(v4(&d[4..])?));
                Some((
                    IpAddr::V4(Ipv4Addr::from(a & m)),
                    IpAddr::V4(Ipv4Addr::from((a & m) | !m)),
                ))
            }
            id_type::IPV6_ADDR_SUBNET if d.len() == 32 => {
                let (a, m) = (u128::from(v6(&d[..16])?), u128::from(v6(&d[16..])?));
                Some((
                    IpAddr::V6(Ipv6Addr::from(a & m)),
                    IpAddr::V6(Ipv6Addr::from((a & m) | !m)),
                ))
            }
            id_type::IPV4_ADDR_RANGE if d.len() == 8 => {
                Some((IpAddr::V4(v4(&d[..4])?), IpAddr::V4(v4(&d[4..])?)))
            }
            id_type::IPV6_ADDR_RANGE if d.len() == 32 => {
                Some((IpAddr::V6(v6(&d[..16])?), IpAddr::V6(v6(&d[16..])?)))
            }
            _ => None,
        }
    }
}

/// A notification payload (RFC 2408 §3.14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Domain of interpretation.
    pub doi: u32,
    /// Protocol ID the notify is about.
    pub protocol: u8,
    /// Notify message type (§3.14.1, RFC 2407 §4.6.3, RFC 3706).
    pub ty: u16,
    /// SPI (the cookie pair for PROTO_ISAKMP, four octets for ESP, or empty).
    pub spi: Vec<u8>,
    /// Notification data.
    pub data: Vec<u8>,
}

/// A delete payload (RFC 2408 §3.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// Domain of interpretation.
    pub doi: u32,
    /// Protocol ID of the SAs.
    pub protocol: u8,
    /// Octets per SPI (16 for an ISAKMP SA's cookie pair, 4 for ESP).
    pub spi_size: u8,
    /// The SPIs, each `spi_size` octets.
    pub spis: Vec<Vec<u8>>,
}

/// A NAT original address payload (RFC 3947 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatOa {
    /// ID type: ID_IPV4_ADDR or ID_IPV6_ADDR.
    pub id_type: u8,
    /// The address.
    pub addr: IpAddr,
}

/// A certificate payload (RFC 2408 §3.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cert {
    /// Certificate encoding (4: X.509 signature).
    pub encoding: u8,
    /// The certificate data.
    pub data: Vec<u8>,
}

/// A certificate request payload (RFC 2408 §3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertReq {
    /// Certificate type requested.
    pub cert_type: u8,
    /// Acceptable certificate authority (DER distinguished name), possibly empty.
    pub authority: Vec<u8>,
}

/// One ISAKMP payload outside an SA payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Security association (§3.4).
    Sa(Sa),
    /// Key exchange data (§3.7).
    Ke(Vec<u8>),
    /// Identification (§3.8).
    Id(Id),
    /// Certificate (§3.9).
    Cert(Cert),
    /// Certificate request (§3.10).
    CertReq(CertReq),
    /// Hash (§3.11).
    Hash(Vec<u8>),
    /// Signature (§3.12).
    Sig(Vec<u8>),
    /// Nonce (§3.13).
    Nonce(Vec<u8>),
    /// Notification (§3.14).
    Notify(Notify),
    /// Delete (§3.15).
    Delete(Delete),
    /// Vendor ID (§3.16).
    VendorId(Vec<u8>),
    /// NAT discovery hash (RFC 3947 §3.2).
    NatD(Vec<u8>),
    /// NAT original address (RFC 3947 §5.1).
    NatOa(NatOa),
    /// NAT-D as the pre-RFC drafts number it (type 130), for peers that negotiated a draft.
    NatDDraft(Vec<u8>),
    /// NAT-OA as the pre-RFC drafts number it (type 131).
    NatOaDraft(NatOa),
}

impl Payload {
    /// The payload type number.
    pub fn ty(&self) -> u8 {
        use payload_type as t;
        match self {
            Self::Sa(_) => t::SA,
            Self::Ke(_) => t::KE,
            Self::Id(_) => t::ID,
            Self::Cert(_) => t::CERT,
            Self::CertReq(_) => t::CERT_REQ,
            Self::Hash(_) => t::HASH,
            Self::Sig(_) => t::SIG,
            Self::Nonce(_) => t::NONCE,
            Self::Notify(_) => t::NOTIFY,
            Self::Delete(_) => t::DELETE,
            Self::VendorId(_) => t::VENDOR_ID,
            Self::NatD(_) => t::NAT_D,
            Self::NatOa(_) => t::NAT_OA,
            Self::NatDDraft(_) => t::NAT_D_DRAFT,
            Self::NatOaDraft(_) => t::NAT_OA_DRAFT,
        }
    }

    fn read_body(ty: u8, r: &mut Reader<'_>) -> Result<Self, Malformed> {
        use payload_type as t;
        let p = match ty {
            t::SA => Self::Sa(Sa::read(r)?),
            t::KE => Self::Ke(r.rest().to_vec()),
            t::ID => Self::Id(Id {
                id_type: r.u8()?,
                protocol: r.u8()?,
                port: r.u16()?,
                data: r.rest().to_vec(),
            }),
            t::CERT => Self::Cert(Cert {
                encoding: r.u8()?,
                data: r.rest().to_vec(),
            }),
            t::CERT_REQ => Self::CertReq(CertReq {
                cert_type: r.u8()?,
                authority: r.rest().to_vec(),
            }),
            t::HASH => Self::Hash(r.rest().to_vec()),
            t::SIG => Self::Sig(r.rest().to_vec()),
            t::NONCE => {
                let n = r.rest();
                // RFC 2409 §5: nonces are 8 to 256 octets inclusive.
                if !(8..=256).contains(&n.len()) {
                    return Err(InvalidMessage::BadNonceLength(n.len()).into());
                }
                Self::Nonce(n.to_vec())
            }
            t::NOTIFY => {
                let doi = r.u32()?;
                let protocol = r.u8()?;
                let spi_size = r.u8()?;
                let ty = r.u16()?;
                let spi = r.take(usize::from(spi_size))?.to_vec();
                Self::Notify(Notify {
                    doi,
                    protocol,
                    ty,
                    spi,
                    data: r.rest().to_vec(),
                })
            }
            t::DELETE => {
                let doi = r.u32()?;
                let protocol = r.u8()?;
                let spi_size = r.u8()?;
                let count = r.u16()?;
                // §3.15: exactly `count` SPIs of `spi_size` octets; checked before allocating.
                let total = usize::from(spi_size) * usize::from(count);
                if r.left() != total {
                    return Err(InvalidMessage::BadLength.into());
                }
                let mut spis = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    spis.push(r.take(usize::from(spi_size))?.to_vec());
                }
                Self::Delete(Delete {
                    doi,
                    protocol,
                    spi_size,
                    spis,
                })
            }
            t::VENDOR_ID => Self::VendorId(r.rest().to_vec()),
            t::NAT_D => Self::NatD(r.rest().to_vec()),
            t::NAT_D_DRAFT => Self::NatDDraft(r.rest().to_vec()),
            t::NAT_OA | t::NAT_OA_DRAFT => {
                let id_type = r.u8()?;
                if r.take(3)? != [0, 0, 0] {
                    return Err(Malformed::ReservedNotZero);
                }
                let a = r.rest();
                let addr = match (id_type, a.len()) {
                    (id_type::IPV4_ADDR, 4) => {
                        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).map_err(bad_len)?))
                    }
                    (id_type::IPV6_ADDR, 16) => {
                        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).map_err(bad_len)?))
                    }
                    _ => return Err(InvalidMessage::BadValue("NAT-OA address").into()),
                };
                if ty == t::NAT_OA_DRAFT {
                    Self::NatOaDraft(NatOa { id_type, addr })
                } else {
                    Self::NatOa(NatOa { id_type, addr })
                }
            }
            other => return Err(Malformed::PayloadType(other)),
        };
        r.expect_empty()?;
        Ok(p)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(sa) => sa.encode(out),
            Self::Ke(b)
            | Self::Hash(b)
            | Self::Sig(b)
            | Self::Nonce(b)
            | Self::VendorId(b)
            | Self::NatD(b)
            | Self::NatDDraft(b) => out.extend_from_slice(b),
            Self::Id(id) => {
                out.push(id.id_type);
                out.push(id.protocol);
                out.extend_from_slice(&id.port.to_be_bytes());
                out.extend_from_slice(&id.data);
            }
            Self::Cert(c) => {
                out.push(c.encoding);
                out.extend_from_slice(&c.data);
            }
            Self::CertReq(c) => {
                out.push(c.cert_type);
                out.extend_from_slice(&c.authority);
            }
            Self::Notify(n) => {
                out.extend_from_slice(&n.doi.to_be_bytes());
                out.push(n.protocol);
                out.push(n.spi.len() as u8);
                out.extend_from_slice(&n.ty.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Self::Delete(d) => {
                out.extend_from_slice(&d.doi.to_be_bytes());
                out.push(d.protocol);
                out.push(d.spi_size);
                out.extend_from_slice(&(d.spis.len() as u16).to_be_bytes());
                for s in &d.spis {
                    out.extend_from_slice(s);
                }
            }
            Self::NatOa(n) | Self::NatOaDraft(n) => {
                out.push(n.id_type);
                out.extend_from_slice(&[0, 0, 0]);
                match n.addr {
                    IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                    IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
                }
            }
        }
    }
}

fn bad_len<E>(_: E) -> Malformed {
    InvalidMessage::BadLength.into()
}

/// Reads a generic payload header (§3.2) and returns the next-payload type and a reader over
/// the body.
fn generic<'a>(r: &mut Reader<'a>) -> Result<(u8, Reader<'a>), Malformed> {
    let next = r.u8()?;
    if r.u8()? != 0 {
        return Err(Malformed::ReservedNotZero);
    }
    let len = usize::from(r.u16()?);
    let body = len.checked_sub(4).ok_or(InvalidMessage::BadLength)?;
    Ok((next, r.sub(body)?))
}

fn begin_generic(out: &mut Vec<u8>, next: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[next, 0, 0, 0]);
    start
}

fn end_generic(out: &mut [u8], start: usize) {
    // Payloads we build are far below 64 KiB (the message itself is a UDP datagram).
    let len = (out.len() - start).min(usize::from(u16::MAX)) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A decoded payload chain with where each payload lies in the decoded bytes, for the hashes
/// that cover payloads as they were sent (RFC 2409 §5.5 HASH(1), §5.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The payloads in order.
    pub payloads: Vec<Payload>,
    /// Each payload's bytes (generic header included) within the chain's input.
    pub spans: Vec<Range<usize>>,
}

impl Chain {
    /// The body (generic header excluded) of the first payload of type `ty`, as received:
    /// SAi_b, IDii_b, Ni_b of RFC 2409 §5.
    pub fn body_of<'a>(&self, bytes: &'a [u8], ty: u8) -> Option<&'a [u8]> {
        let i = self.payloads.iter().position(|p| p.ty() == ty)?;
        bytes.get(self.spans[i].start + 4..self.spans[i].end)
    }
}

/// Decodes a payload chain starting with type `first`. With `padded` (the decrypted body of
/// an encrypted message) bytes after the last payload are the cipher's padding (RFC 2409
/// Appendix B) and ignored; otherwise they are an error.
pub fn decode_chain(first: u8, bytes: &[u8], padded: bool) -> Result<Chain, Malformed> {
    let mut r = Reader::new(bytes);
    let mut next = first;
    let mut payloads = Vec::new();
    let mut spans = Vec::new();
    while next != payload_type::NONE {
        let start = bytes.len() - r.left();
        let (n, mut body) = generic(&mut r)?;
        payloads.push(Payload::read_body(next, &mut body)?);
        spans.push(start..bytes.len() - r.left());
        next = n;
    }
    if !padded {
        r.expect_empty()?;
    }
    Ok(Chain { payloads, spans })
}

/// Encodes a payload chain; returns the first payload's type (NONE for an empty chain).
pub fn encode_chain(payloads: &[Payload], out: &mut Vec<u8>) -> u8 {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(payload_type::NONE, Payload::ty);
        let start = begin_generic(out, next);
        p.encode_body(out);
        end_generic(out, start);
    }
    payloads.first().map_or(payload_type::NONE, Payload::ty)
}

/// A received message: the header and either the decoded payloads or, with the E bit, the
/// ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// What follows it.
    pub body: Body,
}

/// What follows the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Unencrypted payloads.
    Plain(Chain),
    /// Encrypted payloads (the whole rest of the message, a multiple of the block size).
    Encrypted(Vec<u8>),
}

impl Message {
    /// Decodes a datagram: header (version, flags), the header's length against the
    /// datagram's, and for an unencrypted message the payload chain.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        let header = Header::read(&mut r)?;
        // RFC 2408 §5.1: the length must be exactly the message's.
        if header.length as usize != bytes.len() {
            return Err(InvalidMessage::BadLength.into());
        }
        let rest = r.rest();
        let body = if header.is_encrypted() {
            if rest.is_empty() {
                return Err(InvalidMessage::Truncated.into());
            }
            Body::Encrypted(rest.to_vec())
        } else {
            Body::Plain(decode_chain(header.next, rest, false)?)
        };
        Ok(Self { header, body })
    }
}

/// Encodes an unencrypted message: the header (with `next` and `length` set) and the chain.
pub fn encode_message(header: &Header, payloads: &[Payload]) -> Vec<u8> {
    let mut body = Vec::new();
    let next = encode_chain(payloads, &mut body);
    finish(header, next, &body)
}

/// The header (with `next` and `length` set) followed by `body`, already encoded (and, with
/// the E bit, already encrypted).
pub fn finish(header: &Header, next: u8, body: &[u8]) -> Vec<u8> {
    let mut h = header.clone();
    h.next = next;
    h.length = (Header::LEN + body.len()) as u32;
    let mut out = Vec::with_capacity(Header::LEN + body.len());
    h.encode(&mut out);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
pub(crate) mod tests;
