//! IKEv2 wire codec (RFC 7296 §3): a `Codec` read/encode pair per payload, the IKE header and
//! the payload chain.
//!
//! Decoding never panics and never allocates more than the input holds: every length field is
//! checked against the bytes that remain before anything is copied.

pub mod enums;
pub mod payloads;

use std::fmt;

use enums::ExchangeType;
use enums::FLAG_INITIATOR;
use enums::FLAG_RESPONSE;
use enums::FLAG_VERSION;
use enums::IKE_VERSION;
use enums::PayloadType;
pub use payloads::*;

/// A cursor over received bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, positioned at its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Takes the next `len` bytes, or fails with [`InvalidMessage::Truncated`].
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], InvalidMessage> {
        let end = self.pos.checked_add(len).ok_or(InvalidMessage::Truncated)?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(InvalidMessage::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// Everything not yet consumed, without consuming it.
    pub fn peek_all(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Reads a sub-reader over the next `len` bytes.
    pub fn sub(&mut self, len: usize) -> Result<Reader<'a>, InvalidMessage> {
        self.take(len).map(Reader::new)
    }

    /// Bytes not yet consumed.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.left() == 0
    }

    /// Fails with [`InvalidMessage::TrailingData`] unless every byte has been consumed.
    pub fn expect_empty(&self) -> Result<(), InvalidMessage> {
        match self.is_empty() {
            true => Ok(()),
            false => Err(InvalidMessage::TrailingData),
        }
    }

    /// Reads one octet.
    pub fn u8(&mut self) -> Result<u8, InvalidMessage> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, InvalidMessage> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, InvalidMessage> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, InvalidMessage> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

/// A wire structure with a read/encode pair (rustls `Codec`).
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes one value from `r`, consuming exactly its bytes.
    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage>;

    /// Decodes a value that must span all of `bytes`.
    fn read_bytes(bytes: &[u8]) -> Result<Self, InvalidMessage> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r)?;
        r.expect_empty()?;
        Ok(v)
    }

    /// The encoding of `self` as a fresh vector.
    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Why received bytes are not a well-formed IKEv2 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidMessage {
    /// A length runs past the end of the buffer.
    Truncated,
    /// Bytes are left over after a structure that must fill its container.
    TrailingData,
    /// A length field is smaller than the fixed part it must cover.
    BadLength,
    /// The major version is not 2 (RFC 7296 §3.1).
    UnsupportedVersion(u8),
    /// A payload with the critical bit set has a type we do not implement (RFC 7296 §3.2).
    UnsupportedCriticalPayload(u8),
    /// A payload is not allowed where it appears (e.g. SK not last).
    MisplacedPayload(u8),
    /// A nonce outside 16..=256 octets (RFC 7296 §3.9).
    BadNonceLength(usize),
    /// A field holds a value outside its allowed range.
    BadValue(&'static str),
}

impl fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for InvalidMessage {}

/// The fixed IKE header (RFC 7296 §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// IKE SA Initiator's SPI.
    pub spi_i: u64,
    /// IKE SA Responder's SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// Type of the first payload.
    pub next: PayloadType,
    /// Version octet; major in the high nibble.
    pub version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags octet (I, V, R).
    pub flags: u8,
    /// Message ID.
    pub message_id: u32,
    /// Length of the whole message including the header.
    pub length: u32,
}

impl Header {
    /// Size of the fixed header.
    pub const LEN: usize = 28;

    /// A header for a new message; `length` is filled in by [`Message::encode`].
    pub fn new(
        spi_i: u64,
        spi_r: u64,
        exchange: ExchangeType,
        initiator: bool,
        response: bool,
        message_id: u32,
    ) -> Self {
        let mut flags = 0;
        if initiator {
            flags |= FLAG_INITIATOR;
        }
        if response {
            flags |= FLAG_RESPONSE;
        }
        Self {
            spi_i,
            spi_r,
            next: PayloadType::None,
            version: IKE_VERSION,
            exchange,
            flags,
            message_id,
            length: 0,
        }
    }

    /// The sender is the original initiator of the IKE SA (I flag).
    pub fn is_initiator(&self) -> bool {
        self.flags & FLAG_INITIATOR != 0
    }

    /// The message is a response (R flag).
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    /// The sender supports a higher major version (V flag).
    pub fn version_flag(&self) -> bool {
        self.flags & FLAG_VERSION != 0
    }
}

impl Codec for Header {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(self.next.to_raw());
        out.push(self.version);
        out.push(self.exchange.to_raw());
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidMessage> {
        let h = Self {
            spi_i: r.u64()?,
            spi_r: r.u64()?,
            next: PayloadType::from(r.u8()?),
            version: r.u8()?,
            exchange: ExchangeType::from(r.u8()?),
            flags: r.u8()?,
            message_id: r.u32()?,
            length: r.u32()?,
        };
        // RFC 7296 §3.1: a major version we do not speak is answered (if at all) with
        // INVALID_MAJOR_VERSION; we only read version 2.
        if h.version >> 4 != 2 {
            return Err(InvalidMessage::UnsupportedVersion(h.version));
        }
        Ok(h)
    }
}

/// One IKE message: header and the decoded payload chain.
///
/// For protected messages the chain ends in [`Payload::Sk`] (or [`Payload::Skf`]) whose body is
/// still encrypted; the engine decrypts it and decodes the inner chain with [`decode_chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The IKE header. `next` and `length` are recomputed by [`Message::encode`].
    pub header: Header,
    /// Payloads in wire order.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Decodes a whole datagram. The header's length must equal the datagram length.
    pub fn decode(bytes: &[u8]) -> Result<Self, InvalidMessage> {
        let mut r = Reader::new(bytes);
        let header = Header::read(&mut r)?;
        if header.length as usize != bytes.len() {
            return Err(InvalidMessage::BadLength);
        }
        let payloads = decode_chain(header.next, r.rest())?;
        Ok(Self { header, payloads })
    }

    /// Encodes the message, fixing the header's `next` and `length`.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = self.header.clone();
        header.next = self
            .payloads
            .first()
            .map_or(PayloadType::None, Payload::kind);
        // Room for a whole IKE_SA_INIT with a MODP-2048 KE, so the buffer grows once at most.
        let mut out = Vec::with_capacity(ENCODE_CAPACITY);
        header.encode(&mut out);
        encode_chain(&self.payloads, &mut out);
        let len = out.len() as u32;
        out[24..28].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// Notify payloads of the given type.
    pub fn notifies(&self, ty: enums::NotifyType) -> impl Iterator<Item = &Notify> {
        notifies(&self.payloads, ty)
    }
}

/// Notify payloads of type `ty` in `payloads`.
pub fn notifies(payloads: &[Payload], ty: enums::NotifyType) -> impl Iterator<Item = &Notify> {
    payloads.iter().filter_map(move |p| match p {
        Payload::Notify(n) if n.ty == ty => Some(n),
        _ => None,
    })
}

/// Decodes a payload chain that starts with a payload of type `first` and fills `bytes`.
///
/// RFC 7296 §3.2: a payload of unknown type is skipped unless its critical bit is set, in which
/// case the message is rejected with UNSUPPORTED_CRITICAL_PAYLOAD. The SK and SKF payloads
/// must be last (§3.14, RFC 7383 §2.5); their next-payload field names the first inner payload.
pub fn decode_chain(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, InvalidMessage> {
    let mut r = Reader::new(bytes);
    let mut next = first;
    // IKE_SA_INIT and IKE_AUTH carry up to about ten payloads: one allocation, not four.
    let mut out = Vec::with_capacity(10);
    while next != PayloadType::None {
        let this = next;
        let hdr = r.take(4)?;
        let inner_next = PayloadType::from(hdr[0]);
        let critical = hdr[1] & 0x80 != 0;
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let body_len = len.checked_sub(4).ok_or(InvalidMessage::BadLength)?;
        let mut body = r.sub(body_len)?;
        let payload = match this {
            PayloadType::Sk | PayloadType::Skf => {
                if !r.is_empty() {
                    return Err(InvalidMessage::MisplacedPayload(this.to_raw()));
                }
                let p = match this {
                    PayloadType::Sk => Payload::Sk(Sk {
                        first: inner_next,
                        body: body.rest().to_vec(),
                    }),
                    _ => Payload::Skf(Skf::read_body(inner_next, &mut body)?),
                };
                out.push(p);
                return Ok(out);
            }
            ty => match Payload::read_body(ty, &mut body)? {
                Some(p) => {
                    body.expect_empty()?;
                    p
                }
                None if critical => {
                    return Err(InvalidMessage::UnsupportedCriticalPayload(ty.to_raw()));
                }
                None => {
                    next = inner_next;
                    continue;
                }
            },
        };
        out.push(payload);
        next = inner_next;
    }
    r.expect_empty()?;
    Ok(out)
}

/// Initial capacity of an encoded message or payload chain: typical IKE_SA_INIT and IKE_AUTH
/// messages fit, so encoding does not reallocate byte by byte doubling.
pub(crate) const ENCODE_CAPACITY: usize = 512;

/// Encodes a payload chain (each generic header names the following payload's type).
pub fn encode_chain(payloads: &[Payload], out: &mut Vec<u8>) {
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Sk(sk) => sk.first,
            Payload::Skf(skf) => skf.first,
            _ => payloads.get(i + 1).map_or(PayloadType::None, Payload::kind),
        };
        let start = out.len();
        out.push(next.to_raw());
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        p.encode_body(out);
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests;
