//! Payload bodies (RFC 7296 §3.3-§3.16, RFC 7383 §2.5). Each type encodes and reads the bytes
//! after the 4-octet generic payload header; [`super::encode_chain`] writes that header.

use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;

use super::Codec;
use super::InvalidMessage;
use super::Reader;
use super::enums::ATTR_KEY_LENGTH;
use super::enums::AuthMethod;
use super::enums::CertEncoding;
use super::enums::CfgType;
use super::enums::IdType;
use super::enums::NotifyType;
use super::enums::PayloadType;
use super::enums::ProtocolId;
use super::enums::TransformType;
use super::enums::TsType;

/// One decoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Security Association (§3.3).
    Sa(Sa),
    /// Key Exchange (§3.4).
    Ke(Ke),
    /// Identification - Initiator (§3.5).
    IdI(Identity),
    /// Identification - Responder (§3.5).
    IdR(Identity),
    /// Certificate (§3.6).
    Cert(Cert),
    /// Certificate Request (§3.7).
    CertReq(Cert),
    /// Authentication (§3.8).
    Auth(Auth),
    /// Nonce (§3.9).
    Nonce(Nonce),
    /// Notify (§3.10).
    Notify(Notify),
    /// Delete (§3.11).
    Delete(Delete),
    /// Vendor ID (§3.12).
    VendorId(Vec<u8>),
    /// Traffic Selector - Initiator (§3.13).
    TsI(Vec<TrafficSelector>),
    /// Traffic Selector - Responder (§3.13).
    TsR(Vec<TrafficSelector>),
    /// Encrypted and Authenticated (§3.14), body still encrypted.
    Sk(Sk),
    /// Configuration (§3.15).
    Cp(Cp),
    /// EAP (§3.16), opaque.
    Eap(Vec<u8>),
    /// Encrypted and Authenticated Fragment (RFC 7383 §2.5).
    Skf(Skf),
}

impl Payload {
    /// The payload type written in the preceding generic header.
    pub fn kind(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::Sa,
            Self::Ke(_) => PayloadType::Ke,
            Self::IdI(_) => PayloadType::IdI,
            Self::IdR(_) => PayloadType::IdR,
            Self::Cert(_) => PayloadType::Cert,
            Self::CertReq(_) => PayloadType::CertReq,
            Self::Auth(_) => PayloadType::Auth,
            Self::Nonce(_) => PayloadType::Nonce,
            Self::Notify(_) => PayloadType::Notify,
            Self::Delete(_) => PayloadType::Delete,
            Self::VendorId(_) => PayloadType::VendorId,
            Self::TsI(_) => PayloadType::TsI,
            Self::TsR(_) => PayloadType::TsR,
            Self::Sk(_) => PayloadType::Sk,
            Self::Cp(_) => PayloadType::Cp,
            Self::Eap(_) => PayloadType::Eap,
            Self::Skf(_) => PayloadType::Skf,
        }
    }

    /// Reads the body of a payload of type `ty`; `None` for types we do not implement.
    /// SK and SKF are handled by the chain decoder.
    pub(crate) fn read_body(
        ty: PayloadType,
        r: &mut Reader<'_>,
    ) -> Result<Option<Self>, InvalidMessage> {
        Ok(Some(match ty {
            PayloadType::Sa => Self::Sa(Sa::read(r)?),
            PayloadType::Ke => Self::Ke(Ke::read(r)?),
            PayloadType::IdI => Self::IdI(Identity::read(r)?),
            PayloadType::IdR => Self::IdR(Identity::read(r)?),
            PayloadType::Cert => Self::Cert(Cert::read(r)?),
            PayloadType::CertReq => Self::CertReq(Cert::read(r)?),
            PayloadType::Auth => Self::Auth(Auth::read(r)?),
            PayloadType::Nonce => Self::Nonce(Nonce::read(r)?),
            PayloadType::Notify => Self::Notify(Notify::read(r)?),
            PayloadType::Delete => Self::Delete(Delete::read(r)?),
            PayloadType::VendorId => Self::VendorId(r.rest().to_vec()),
            PayloadType::TsI => Self::TsI(read_ts(r)?),
            PayloadType::TsR => Self::TsR(read_ts(r)?),
            PayloadType::Cp => Self::Cp(Cp::read(r)?),
            PayloadType::Eap => Self::Eap(r.rest().to_vec()),
            _ => return Ok(None),
        }))
    }

    /// Appends the payload body (without the generic header).
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(p) => p.encode(out),
            Self::Ke(p) => p.encode(out),
            Self::IdI(p) | Self::IdR(p) => p.encode(out),
            Self::Cert(p) | Self::CertReq(p) => p.encode(out),
            Self::Auth(p) => p.encode(out),
            Self::Nonce(p) => p.encode(out),
            Self::Notify(p) => p.encode(out),
            Self::Delete(p) => p.encode(out),
            Self::VendorId(b) | Self::Eap(b) => out.extend_from_slice(b),
            Self::TsI(ts) | Self::TsR(ts) => encode_ts(ts, out),
            Self::Sk(p) => out.extend_from_slice(&p.body),
            Self::Cp(p) => p.encode(out),
            Self::Skf(p) => {
                out.extend_from_slice(&p.number.to_be_bytes());
                out.extend_from_slice(&p.total.to_be_bytes());
                out.extend_from_slice(&p.body);
            }
        }
    }
}

/// Security Association payload (§3.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sa {
    /// Proposals in preference order.
    pub proposals: Vec<Proposal>,
}

/// One proposal substructure (§3.3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number: 1 for the first, then incremented (§3.3.1).
    pub num: u8,
    /// Protocol ID.
    pub protocol: ProtocolId,
    /// Sending entity's SPI (empty for the initial IKE SA, 8 octets when rekeying IKE, 4 for ESP).
    pub spi: Vec<u8>,
    /// Transforms.
    pub transforms: Vec<Transform>,
}

/// One transform substructure (§3.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    /// Transform type.
    pub ty: TransformType,
    /// Transform ID within its type.
    pub id: u16,
    /// Attributes (§3.3.5).
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform with no attributes.
    pub fn new(ty: TransformType, id: u16) -> Self {
        Self {
            ty,
            id,
            attributes: Vec::new(),
        }
    }

    /// A transform with a Key Length attribute.
    pub fn with_key_length(ty: TransformType, id: u16, bits: Option<u16>) -> Self {
        let attributes = bits
            .map(|b| Attribute {
                ty: ATTR_KEY_LENGTH,
                value: AttrValue::Tv(b),
            })
            .into_iter()
            .collect();
        Self { ty, id, attributes }
    }

    /// The Key Length attribute, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match (a.ty, &a.value) {
            (ATTR_KEY_LENGTH, AttrValue::Tv(v)) => Some(*v),
            _ => None,
        })
    }
}

/// A transform attribute (§3.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type without the AF bit.
    pub ty: u16,
    /// Value, TV (AF=1) or TLV (AF=0).
    pub value: AttrValue,
}

/// Attribute value format (§3.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// Type/Value: a 2-octet value (AF bit set).
    Tv(u16),
    /// Type/Length/Value.
    Tlv(Vec<u8>),
}

impl Codec for Sa {
    fn encode(&self, out: &mut Vec<u8>) {
        let n = self.proposals.len();
        for (i, p) in self.proposals.iter().enumerate() {
            let start = out.len();
            out.push(if i + 1 == n { 0 } else { 2 });
            out.push(0);
            out.extend_from_slice(&[0, 0]);
            out.push(p.num);
            out.push(p.protocol.to_raw());
            out.push(p.spi.len() as u8);
            out.push(p.transforms.len() as u8);
            out.extend_from_slice(&p.spi);
            let m = p.transforms.len();
            for (j, t) in p.transforms.iter().enumerate() {
                let ts = out.len();
                out.push(if j + 1 == m { 0 } else { 3 });
                out.push(0);
                out.extend_from_slice(&[0, 0]);
                out.push(t.ty.to_raw());
                out.push(0);
                out.extend_from_slice(&t.id.to_be_bytes());
                for a in &t.attributes {
                    match &a.value {
                        AttrValue::Tv(v) => {
                            out.extend_from_slice(&(a.ty | 0x8000).to_be_bytes());
                            out.extend_from_slice(&v.to_be_bytes());
                        }
                        AttrValue::Tlv(v) => {
                            out.extend_from_slice(&(a.ty & 0x7fff).to_be_bytes());
                            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
                            out.extend_from_slice(v);
                        }
                    }
                }
                let len = (out.len() - ts) as u16;
                out[ts + 2..ts + 4].copy_from_slice(&len.to_be_bytes());
            }
            let len = (out.len() - start) as u16;
            out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let mut proposals = Vec::new();
        loop {
            let last = r.u8()?;
            r.u8()?;
            let len = usize::from(r.u16()?);
            let mut p = r.sub(len.checked_sub(4).ok_or(InvalidMessage::BadLength)?)?;
            let num = p.u8()?;
            let protocol = ProtocolId::from(p.u8()?);
            let spi_size = usize::from(p.u8()?);
            let count = p.u8()?;
            let spi = p.take(spi_size)?.to_vec();
            // At most 255 (a one-octet count), each at least 8 octets of this payload.
            let mut transforms = Vec::with_capacity(usize::from(count).min(p.left() / 8));
            for k in 0..count {
                let tlast = p.u8()?;
                p.u8()?;
                let tlen = usize::from(p.u16()?);
                let mut t = p.sub(tlen.checked_sub(4).ok_or(InvalidMessage::BadLength)?)?;
                let ty = TransformType::from(t.u8()?);
                t.u8()?;
                let id = t.u16()?;
                let mut attributes = Vec::new();
                while !t.is_empty() {
                    let at = t.u16()?;
                    let value = if at & 0x8000 != 0 {
                        AttrValue::Tv(t.u16()?)
                    } else {
                        let alen = usize::from(t.u16()?);
                        AttrValue::Tlv(t.take(alen)?.to_vec())
                    };
                    attributes.push(Attribute {
                        ty: at & 0x7fff,
                        value,
                    });
                }
                transforms.push(Transform { ty, id, attributes });
                // §3.3.2: "Last Substruc" is 3 for more transforms, 0 for the last one.
                match (tlast, k + 1 == count) {
                    (0, true) | (3, false) => {}
                    _ => return Err(InvalidMessage::BadValue("transform last substruc")),
                }
            }
            p.expect_empty()?;
            proposals.push(Proposal {
                num,
                protocol,
                spi,
                transforms,
            });
            match last {
                0 => break,
                2 => {}
                _ => return Err(InvalidMessage::BadValue("proposal last substruc")),
            }
        }
        Ok(Self { proposals })
    }
}

/// Key Exchange payload (§3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ke {
    /// Key exchange method (D-H group number).
    pub group: u16,
    /// Public value.
    pub data: Vec<u8>,
}

impl Codec for Ke {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.group.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.data);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let group = r.u16()?;
        r.u16()?;
        Ok(Self {
            group,
            data: r.rest().to_vec(),
        })
    }
}

/// An IKE identity (IDi/IDr payload body, §3.5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_FQDN.
    Fqdn(String),
    /// ID_RFC822_ADDR.
    Rfc822(String),
    /// ID_DER_ASN1_DN: DER-encoded X.501 Name.
    DerAsn1Dn(Vec<u8>),
    /// ID_DER_ASN1_GN: DER-encoded X.509 GeneralName.
    DerAsn1Gn(Vec<u8>),
    /// ID_KEY_ID: opaque octets.
    KeyId(Vec<u8>),
    /// Another ID type, kept opaque.
    Other {
        /// The ID type.
        ty: u8,
        /// The identification data.
        data: Vec<u8>,
    },
}

impl Identity {
    /// The identity of an IP address (strongSwan's default IKE identity).
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::Ipv4(a),
            IpAddr::V6(a) => Self::Ipv6(a),
        }
    }

    /// The ID type.
    pub fn id_type(&self) -> IdType {
        match self {
            Self::Ipv4(_) => IdType::Ipv4Addr,
            Self::Ipv6(_) => IdType::Ipv6Addr,
            Self::Fqdn(_) => IdType::Fqdn,
            Self::Rfc822(_) => IdType::Rfc822Addr,
            Self::DerAsn1Dn(_) => IdType::DerAsn1Dn,
            Self::DerAsn1Gn(_) => IdType::DerAsn1Gn,
            Self::KeyId(_) => IdType::KeyId,
            Self::Other { ty, .. } => IdType::from(*ty),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ipv4(a) => write!(f, "{a}"),
            Self::Ipv6(a) => write!(f, "{a}"),
            Self::Fqdn(s) => write!(f, "{s}"),
            Self::Rfc822(s) => write!(f, "{s}"),
            Self::DerAsn1Dn(b)
            | Self::DerAsn1Gn(b)
            | Self::KeyId(b)
            | Self::Other { data: b, .. } => {
                for x in b {
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl Codec for Identity {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.id_type().to_raw());
        out.extend_from_slice(&[0, 0, 0]);
        match self {
            Self::Ipv4(a) => out.extend_from_slice(&a.octets()),
            Self::Ipv6(a) => out.extend_from_slice(&a.octets()),
            Self::Fqdn(s) | Self::Rfc822(s) => out.extend_from_slice(s.as_bytes()),
            Self::DerAsn1Dn(b)
            | Self::DerAsn1Gn(b)
            | Self::KeyId(b)
            | Self::Other { data: b, .. } => out.extend_from_slice(b),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let ty = r.u8()?;
        r.take(3)?;
        let data = r.rest();
        let text =
            || String::from_utf8(data.to_vec()).map_err(|_| InvalidMessage::BadValue("ID text"));
        Ok(match IdType::from(ty) {
            IdType::Ipv4Addr => {
                let b: [u8; 4] = data.try_into().map_err(|_| InvalidMessage::BadLength)?;
                Self::Ipv4(Ipv4Addr::from(b))
            }
            IdType::Ipv6Addr => {
                let b: [u8; 16] = data.try_into().map_err(|_| InvalidMessage::BadLength)?;
                Self::Ipv6(Ipv6Addr::from(b))
            }
            IdType::Fqdn => Self::Fqdn(text()?),
            IdType::Rfc822Addr => Self::Rfc822(text()?),
            IdType::DerAsn1Dn => Self::DerAsn1Dn(data.to_vec()),
            IdType::DerAsn1Gn => Self::DerAsn1Gn(data.to_vec()),
            IdType::KeyId => Self::KeyId(data.to_vec()),
            IdType::Unknown(ty) => Self::Other {
                ty,
                data: data.to_vec(),
            },
        })
    }
}

/// Certificate (§3.6) or Certificate Request (§3.7) payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cert {
    /// Certificate encoding.
    pub encoding: CertEncoding,
    /// Certificate data, or for CERTREQ the concatenated CA key hashes.
    pub data: Vec<u8>,
}

impl Codec for Cert {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.encoding.to_raw());
        out.extend_from_slice(&self.data);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        Ok(Self {
            encoding: CertEncoding::from(r.u8()?),
            data: r.rest().to_vec(),
        })
    }
}

/// Authentication payload (§3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// Authentication method.
    pub method: AuthMethod,
    /// Authentication data.
    pub data: Vec<u8>,
}

impl Codec for Auth {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.method.to_raw());
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.data);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let method = AuthMethod::from(r.u8()?);
        r.take(3)?;
        Ok(Self {
            method,
            data: r.rest().to_vec(),
        })
    }
}

/// Nonce payload (§3.9): 16 to 256 octets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nonce(pub Vec<u8>);

impl Nonce {
    /// Smallest nonce allowed (§3.9).
    pub const MIN: usize = 16;
    /// Largest nonce allowed (§3.9).
    pub const MAX: usize = 256;
}

impl Codec for Nonce {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let data = r.rest();
        if !(Self::MIN..=Self::MAX).contains(&data.len()) {
            return Err(InvalidMessage::BadNonceLength(data.len()));
        }
        Ok(Self(data.to_vec()))
    }
}

/// Notify payload (§3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Protocol the SPI belongs to; `None` (0) when no SPI is carried.
    pub protocol: Option<ProtocolId>,
    /// SPI (empty, or 4 octets for ESP/AH, 8 for IKE).
    pub spi: Vec<u8>,
    /// Notify message type.
    pub ty: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify without SPI.
    pub fn new(ty: NotifyType, data: Vec<u8>) -> Self {
        Self {
            protocol: None,
            spi: Vec::new(),
            ty,
            data,
        }
    }

    /// A notify about an ESP SPI (e.g. REKEY_SA, §3.10).
    pub fn esp(ty: NotifyType, spi: u32, data: Vec<u8>) -> Self {
        Self {
            protocol: Some(ProtocolId::Esp),
            spi: spi.to_be_bytes().to_vec(),
            ty,
            data,
        }
    }

    /// The SPI as a 4-octet ESP/AH SPI, when it is one.
    pub fn spi32(&self) -> Option<u32> {
        let b: [u8; 4] = self.spi.as_slice().try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }
}

impl Codec for Notify {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.protocol.map_or(0, ProtocolId::to_raw));
        out.push(self.spi.len() as u8);
        out.extend_from_slice(&self.ty.to_raw().to_be_bytes());
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let protocol = match r.u8()? {
            0 => None,
            p => Some(ProtocolId::from(p)),
        };
        let spi_size = usize::from(r.u8()?);
        let ty = NotifyType::from(r.u16()?);
        let spi = r.take(spi_size)?.to_vec();
        Ok(Self {
            protocol,
            spi,
            ty,
            data: r.rest().to_vec(),
        })
    }
}

/// Delete payload (§3.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// Protocol: IKE (no SPIs; the SA the message travels in) or ESP/AH.
    pub protocol: ProtocolId,
    /// SPIs of the SAs being deleted (the deleting side's inbound SPIs), 4 octets each.
    pub spis: Vec<u32>,
}

impl Codec for Delete {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.protocol.to_raw());
        let size = if self.protocol == ProtocolId::Ike && self.spis.is_empty() {
            0
        } else {
            4
        };
        out.push(size);
        out.extend_from_slice(&(self.spis.len() as u16).to_be_bytes());
        if size == 4 {
            for s in &self.spis {
                out.extend_from_slice(&s.to_be_bytes());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let protocol = ProtocolId::from(r.u8()?);
        let size = r.u8()?;
        let count = usize::from(r.u16()?);
        let mut spis = Vec::new();
        match size {
            0 => {}
            4 => {
                // Bound the count by what is actually there before allocating.
                if count * 4 != r.left() {
                    return Err(InvalidMessage::BadLength);
                }
                spis.reserve(count);
                for _ in 0..count {
                    spis.push(r.u32()?);
                }
            }
            _ => return Err(InvalidMessage::BadValue("delete SPI size")),
        }
        Ok(Self { protocol, spis })
    }
}

/// One traffic selector (§3.13.1), an address range plus protocol and port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol number; 0 for any.
    pub ip_proto: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
}

impl TrafficSelector {
    /// The selector covering every address of `start`'s family, all protocols and ports.
    pub fn any(v6: bool) -> Self {
        let (start, end) = match v6 {
            false => (
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::BROADCAST),
            ),
            true => (
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::from(u128::MAX)),
            ),
        };
        Self {
            ip_proto: 0,
            start_port: 0,
            end_port: 0xffff,
            start,
            end,
        }
    }

    /// The selector covering exactly one address, all protocols and ports.
    pub fn host(ip: IpAddr) -> Self {
        Self {
            ip_proto: 0,
            start_port: 0,
            end_port: 0xffff,
            start: ip,
            end: ip,
        }
    }

    /// The selector covering an address prefix, all protocols and ports.
    pub fn prefix(ip: IpAddr, len: u8) -> Self {
        let (start, end) = match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len.min(32)))
                };
                (
                    IpAddr::V4(Ipv4Addr::from(bits & mask)),
                    IpAddr::V4(Ipv4Addr::from(bits | !mask)),
                )
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len.min(128)))
                };
                (
                    IpAddr::V6(Ipv6Addr::from(bits & mask)),
                    IpAddr::V6(Ipv6Addr::from(bits | !mask)),
                )
            }
        };
        Self {
            ip_proto: 0,
            start_port: 0,
            end_port: 0xffff,
            start,
            end,
        }
    }

    /// True for an IPv6 selector.
    pub fn is_v6(&self) -> bool {
        self.start.is_ipv6()
    }
}

/// Reads a TSi/TSr body. Selectors of unknown type are skipped (they are length-delimited).
pub fn read_ts(r: &mut Reader<'_>) -> Result<Vec<TrafficSelector>, InvalidMessage> {
    let count = r.u8()?;
    r.take(3)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let ty = TsType::from(r.u8()?);
        let ip_proto = r.u8()?;
        let len = usize::from(r.u16()?);
        let mut s = r.sub(len.checked_sub(4).ok_or(InvalidMessage::BadLength)?)?;
        let (start_port, end_port) = match ty {
            TsType::Ipv4AddrRange | TsType::Ipv6AddrRange => (s.u16()?, s.u16()?),
            TsType::Unknown(_) => continue,
        };
        let (start, end) = match ty {
            TsType::Ipv4AddrRange => {
                let a: [u8; 4] = s
                    .take(4)?
                    .try_into()
                    .map_err(|_| InvalidMessage::BadLength)?;
                let b: [u8; 4] = s
                    .take(4)?
                    .try_into()
                    .map_err(|_| InvalidMessage::BadLength)?;
                (IpAddr::from(a), IpAddr::from(b))
            }
            _ => {
                let a: [u8; 16] = s
                    .take(16)?
                    .try_into()
                    .map_err(|_| InvalidMessage::BadLength)?;
                let b: [u8; 16] = s
                    .take(16)?
                    .try_into()
                    .map_err(|_| InvalidMessage::BadLength)?;
                (IpAddr::from(a), IpAddr::from(b))
            }
        };
        s.expect_empty()?;
        out.push(TrafficSelector {
            ip_proto,
            start_port,
            end_port,
            start,
            end,
        });
    }
    Ok(out)
}

/// Encodes a TSi/TSr body.
pub fn encode_ts(ts: &[TrafficSelector], out: &mut Vec<u8>) {
    out.push(ts.len() as u8);
    out.extend_from_slice(&[0, 0, 0]);
    for t in ts {
        let (ty, len) = match t.start {
            IpAddr::V4(_) => (TsType::Ipv4AddrRange, 16u16),
            IpAddr::V6(_) => (TsType::Ipv6AddrRange, 40u16),
        };
        out.push(ty.to_raw());
        out.push(t.ip_proto);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&t.start_port.to_be_bytes());
        out.extend_from_slice(&t.end_port.to_be_bytes());
        for a in [t.start, t.end] {
            match (a, ty) {
                (IpAddr::V4(a), TsType::Ipv4AddrRange) => out.extend_from_slice(&a.octets()),
                (IpAddr::V6(a), _) => out.extend_from_slice(&a.octets()),
                // A mixed-family selector is a local bug; encode the v4 end as v4-mapped.
                (IpAddr::V4(a), _) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
            }
        }
    }
}

/// Encrypted and Authenticated payload (§3.14), body = IV | ciphertext | ICV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sk {
    /// Type of the first payload inside.
    pub first: PayloadType,
    /// Opaque body.
    pub body: Vec<u8>,
}

/// Encrypted and Authenticated Fragment payload (RFC 7383 §2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skf {
    /// Type of the first inner payload (fragment 1 only; zero otherwise).
    pub first: PayloadType,
    /// Fragment number, from 1.
    pub number: u16,
    /// Total number of fragments.
    pub total: u16,
    /// Opaque body = IV | ciphertext | ICV.
    pub body: Vec<u8>,
}

impl Skf {
    /// Size of the fragment number and total fields.
    pub const FIXED: usize = 4;

    pub(crate) fn read_body(
        first: PayloadType,
        r: &mut Reader<'_>,
    ) -> Result<Self, InvalidMessage> {
        let number = r.u16()?;
        let total = r.u16()?;
        // RFC 7383 §2.5: Fragment Number starts with 1 and is never greater than Total.
        if number == 0 || number > total {
            return Err(InvalidMessage::BadValue("fragment number"));
        }
        Ok(Self {
            first,
            number,
            total,
            body: r.rest().to_vec(),
        })
    }
}

/// Configuration payload (§3.15), kept minimal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cp {
    /// CFG type.
    pub ty: CfgType,
    /// Attributes.
    pub attributes: Vec<CfgAttribute>,
}

/// One configuration attribute (§3.15.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CfgAttribute {
    /// Attribute type (15 bits).
    pub ty: u16,
    /// Value.
    pub value: Vec<u8>,
}

impl Codec for Cp {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.ty.to_raw());
        out.extend_from_slice(&[0, 0, 0]);
        for a in &self.attributes {
            out.extend_from_slice(&(a.ty & 0x7fff).to_be_bytes());
            out.extend_from_slice(&(a.value.len() as u16).to_be_bytes());
            out.extend_from_slice(&a.value);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let ty = CfgType::from(r.u8()?);
        r.take(3)?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            let t = r.u16()? & 0x7fff;
            let len = usize::from(r.u16()?);
            attributes.push(CfgAttribute {
                ty: t,
                value: r.take(len)?.to_vec(),
            });
        }
        Ok(Self { ty, attributes })
    }
}
