//! IKEv1 fragmentation as Cisco introduced it and strongSwan, Windows and racoon speak it:
//! no RFC, announced by the "FRAGMENTATION" vendor ID. A message too large for the path
//! (phase 1 with certificates) is cut into fragment messages, each an ISAKMP header (the
//! message's cookies, exchange type main or aggressive mode, message ID 0, not encrypted)
//! and one fragment payload (type 132):
//!
//! ```text
//!  Next Payload (0) | RESERVED | Payload Length
//!  Fragment ID (16 bits)       | Fragment Number (from 1) | Flags (0x01: last)
//!  Fragment Data: the next piece of the whole encoded (and encrypted) message
//! ```
//!
//! Reassembly is bounded: at most [`MAX_FRAGMENTS`] fragments and [`MAX_MESSAGE`] octets per
//! message, [`MAX_SETS`] messages in reassembly at once (the oldest is dropped for a new one),
//! and a set still incomplete after [`REASSEMBLY_TIMEOUT`] is dropped. A fragment that is
//! malformed or contradicts its set is rejected before anything is stored.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;

use crate::v1::error::Misbehaved;
use crate::v1::wire::ExchangeType;
use crate::v1::wire::Header;
use crate::v1::wire::ISAKMP_VERSION;
use crate::v1::wire::Payload;
use crate::v1::wire::payload_type;
use crate::wire::Reader;

/// The FRAGMENTATION vendor ID's fixed part; peers append four capability octets (strongSwan
/// 0x80000000, IOS 0xc0000000) or nothing (Windows), so only this prefix is matched.
pub const VID_PREFIX: [u8; 16] = [
    0x40, 0x48, 0xb7, 0xd5, 0x6e, 0xbc, 0xe8, 0x85, 0x25, 0xe7, 0xde, 0x7f, 0x00, 0xd6, 0xc2, 0xd3,
];
/// The capability octets we send: IKE fragmentation (what strongSwan sends).
const VID_CAPABILITIES: [u8; 4] = [0x80, 0, 0, 0];
/// The LAST flag of a fragment payload.
const FLAG_LAST: u8 = 0x01;
/// Fragment payload header: generic header, ID, number, flags.
const FRAGMENT_HEADER: usize = 8;

/// Most fragments one message may come in.
pub const MAX_FRAGMENTS: u8 = 16;
/// Largest reassembled message.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most messages in reassembly at once (over all peers).
pub const MAX_SETS: usize = 16;
/// An incomplete message is dropped this long after its first fragment arrived; the sender
/// retransmits the whole message (with a new fragment ID) long before.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Our FRAGMENTATION vendor ID payload.
pub fn vendor_id() -> Payload {
    Payload::VendorId([&VID_PREFIX[..], &VID_CAPABILITIES[..]].concat())
}

/// True when a message carries the FRAGMENTATION vendor ID.
pub fn announced(chain: &crate::v1::wire::Chain) -> bool {
    chain
        .payloads
        .iter()
        .any(|p| matches!(p, Payload::VendorId(v) if v.starts_with(&VID_PREFIX)))
}

/// One received fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// Initiator cookie of the fragment message.
    pub cky_i: u64,
    /// Responder cookie.
    pub cky_r: u64,
    /// Fragment ID: names the message.
    pub id: u16,
    /// Fragment number, from 1.
    pub number: u8,
    /// The last fragment.
    pub last: bool,
    /// Its piece of the message.
    pub data: &'a [u8],
}

/// True when a datagram is a fragment message (its header's first payload is 132); such a
/// datagram is decoded by [`parse`], never as a message.
pub fn is_fragment(bytes: &[u8]) -> bool {
    bytes.get(16) == Some(&payload_type::FRAGMENT)
}

/// Decodes a fragment message. Strict: version, length, exchange type, message ID zero, the
/// payload filling the message, a number from 1 to [`MAX_FRAGMENTS`], data present.
pub fn parse(bytes: &[u8]) -> Result<Fragment<'_>, Misbehaved> {
    let mut r = Reader::new(bytes);
    let h = Header::read(&mut r).map_err(|_| Misbehaved::BadFragment("header"))?;
    if h.next != payload_type::FRAGMENT {
        return Err(Misbehaved::BadFragment("not a fragment"));
    }
    if h.length as usize != bytes.len() {
        return Err(Misbehaved::BadFragment("length"));
    }
    if !matches!(
        h.exchange,
        ExchangeType::IdentityProtection | ExchangeType::Aggressive
    ) {
        return Err(Misbehaved::BadFragment("exchange type"));
    }
    if h.message_id != 0 {
        return Err(Misbehaved::BadFragment("message id"));
    }
    let bad = |_| Misbehaved::BadFragment("truncated");
    let next = r.u8().map_err(bad)?;
    let reserved = r.u8().map_err(bad)?;
    let len = usize::from(r.u16().map_err(bad)?);
    if next != payload_type::NONE || reserved != 0 {
        return Err(Misbehaved::BadFragment("payload header"));
    }
    // The fragment payload is the only one and fills the message.
    if len != r.left() + 4 || len <= FRAGMENT_HEADER {
        return Err(Misbehaved::BadFragment("payload length"));
    }
    let id = r.u16().map_err(bad)?;
    let number = r.u8().map_err(bad)?;
    let flags = r.u8().map_err(bad)?;
    if number == 0 || number > MAX_FRAGMENTS {
        return Err(Misbehaved::BadFragment("fragment number"));
    }
    if flags & !FLAG_LAST != 0 {
        return Err(Misbehaved::BadFragment("flags"));
    }
    Ok(Fragment {
        cky_i: h.cky_i,
        cky_r: h.cky_r,
        id,
        number,
        last: flags & FLAG_LAST != 0,
        data: r.rest(),
    })
}

/// Cuts an encoded message into fragment messages of at most `max` octets each (header and
/// fragment payload included). `id` names the message; the exchange type is the phase 1
/// one (main or aggressive mode), as strongSwan sends them for every message.
pub fn split(message: &[u8], id: u16, max: usize) -> Vec<Vec<u8>> {
    let Ok(h) = Header::read(&mut Reader::new(message)) else {
        return vec![message.to_vec()];
    };
    let room = max.saturating_sub(Header::LEN + FRAGMENT_HEADER).max(64);
    let pieces: Vec<&[u8]> = message.chunks(room).collect();
    if pieces.len() > usize::from(MAX_FRAGMENTS) {
        // More than a peer would reassemble: send it whole and let IP fragment it.
        return vec![message.to_vec()];
    }
    let exchange = match h.exchange {
        ExchangeType::Aggressive => ExchangeType::Aggressive,
        _ => ExchangeType::IdentityProtection,
    };
    let count = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut fh = Header::new(h.cky_i, h.cky_r, exchange, 0, 0);
            fh.version = ISAKMP_VERSION;
            fh.next = payload_type::FRAGMENT;
            fh.length = (Header::LEN + FRAGMENT_HEADER + piece.len()) as u32;
            let mut out = Vec::with_capacity(fh.length as usize);
            fh.encode(&mut out);
            out.extend_from_slice(&[payload_type::NONE, 0]);
            out.extend_from_slice(&((FRAGMENT_HEADER + piece.len()) as u16).to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
            out.push((i + 1) as u8);
            out.push(if i + 1 == count { FLAG_LAST } else { 0 });
            out.extend_from_slice(piece);
            out
        })
        .collect()
}

/// Which message a fragment belongs to.
type SetKey = (SocketAddr, u64, u64, u16);

/// One message in reassembly.
struct Set {
    pieces: BTreeMap<u8, Vec<u8>>,
    last: Option<u8>,
    bytes: usize,
    started: Instant,
}

/// Fragments of messages not yet whole.
#[derive(Default)]
pub struct Reassembly {
    sets: HashMap<SetKey, Set>,
    /// Messages reassembled so far.
    pub reassembled: u64,
}

impl Reassembly {
    /// Adds a fragment from `remote`; returns the whole message once every fragment is in.
    /// A fragment that contradicts its set (a second LAST, a number past the last, the same
    /// number with other data, too many octets) is an error and changes nothing.
    pub fn add(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        f: &Fragment<'_>,
    ) -> Result<Option<Vec<u8>>, Misbehaved> {
        let key = (remote, f.cky_i, f.cky_r, f.id);
        if let Some(set) = self.sets.get(&key) {
            if let Some(old) = set.pieces.get(&f.number) {
                return if old[..] == f.data[..] {
                    Ok(None)
                } else {
                    Err(Misbehaved::BadFragment("fragment number reused"))
                };
            }
            if let Some(last) = set.last {
                if f.last || f.number > last {
                    return Err(Misbehaved::BadFragment("past the last fragment"));
                }
            }
            if f.last && set.pieces.keys().any(|n| *n > f.number) {
                return Err(Misbehaved::BadFragment("last fragment before others"));
            }
            if set.bytes + f.data.len() > MAX_MESSAGE {
                return Err(Misbehaved::BadFragment("message too large"));
            }
        } else if self.sets.len() >= MAX_SETS {
            // Full: the oldest set goes (a flood of strays cannot hold every slot for long,
            // and a real sender retransmits).
            if let Some(oldest) = self
                .sets
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| *k)
            {
                self.sets.remove(&oldest);
            }
        }
        let set = self.sets.entry(key).or_insert_with(|| Set {
            pieces: BTreeMap::new(),
            last: None,
            bytes: 0,
            started: now,
        });
        set.pieces.insert(f.number, f.data.to_vec());
        set.bytes += f.data.len();
        if f.last {
            set.last = Some(f.number);
        }
        let complete = set
            .last
            .is_some_and(|last| set.pieces.len() == usize::from(last));
        if !complete {
            return Ok(None);
        }
        let set = self.sets.remove(&key).map(|s| s.pieces);
        let whole: Vec<u8> = set
            .into_iter()
            .flat_map(|p| p.into_values())
            .flatten()
            .collect();
        self.reassembled += 1;
        Ok(Some(whole))
    }

    /// Drops sets that did not complete in time.
    pub fn expire(&mut self, now: Instant) {
        self.sets
            .retain(|_, s| now < crate::sa::later(s.started, REASSEMBLY_TIMEOUT));
    }

    /// When the oldest incomplete set expires.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.sets
            .values()
            .map(|s| crate::sa::later(s.started, REASSEMBLY_TIMEOUT))
            .min()
    }

    /// Messages in reassembly.
    pub fn pending(&self) -> usize {
        self.sets.len()
    }
}
