//! VICI's wire format (strongSwan's `src/libcharon/plugins/vici/README.md`, "Packet layer" and
//! "Message format"): a packet is a 32-bit big-endian length, a type byte, for the named types
//! a one-byte-length name, then a message of elements (sections, key/values, lists).
//!
//! Decoding is strict and bounded: every length is checked against what is left, sections
//! must balance, nesting is limited, and no input panics. [`decode`] is the one entry point a
//! fuzzer needs.

use std::fmt;

/// Largest packet accepted or sent (the length field's value), as charon's
/// `VICI_MESSAGE_SIZE_MAX`: a client announcing more is closed before anything is read.
pub const MAX_PACKET: usize = 512 * 1024;

/// Deepest section nesting accepted. list-sas answers nest four deep (IKE SA, child-sas, a
/// Child SA, none below); charon's own messages stay well inside this.
const MAX_DEPTH: usize = 16;

// Packet types (README "Packet layer").
const CMD_REQUEST: u8 = 0;
const CMD_RESPONSE: u8 = 1;
const CMD_UNKNOWN: u8 = 2;
const EVENT_REGISTER: u8 = 3;
const EVENT_UNREGISTER: u8 = 4;
const EVENT_CONFIRM: u8 = 5;
const EVENT_UNKNOWN: u8 = 6;
const EVENT: u8 = 7;

// Message element types (README "Message format").
const SECTION_START: u8 = 1;
const SECTION_END: u8 = 2;
const KEY_VALUE: u8 = 3;
const LIST_START: u8 = 4;
const LIST_ITEM: u8 = 5;
const LIST_END: u8 = 6;

/// Why bytes are not a VICI packet, or a message cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The packet is empty (no type byte).
    #[error("empty packet")]
    Empty,
    /// The type byte is none of the eight packet types.
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// A length field runs past the end of the packet.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// An element type byte outside 1..=6.
    #[error("unknown message element type {0}")]
    UnknownElement(u8),
    /// A name (packet, section, key, list) is not UTF-8.
    #[error("a name is not UTF-8")]
    NameNotUtf8,
    /// SECTION_END with no open section.
    #[error("section end without a section")]
    UnbalancedSectionEnd,
    /// The message ended inside a section or list.
    #[error("message ends inside a section or list")]
    Unterminated,
    /// Sections nest deeper than [`MAX_DEPTH`].
    #[error("sections nest deeper than {MAX_DEPTH}")]
    TooDeep,
    /// LIST_ITEM or LIST_END outside a list, or another element inside one.
    #[error("list element out of place")]
    ListOutOfPlace,
    /// The length field says more than [`MAX_PACKET`] (or less than one byte).
    #[error("packet length {0} outside 1..={MAX_PACKET}")]
    BadLength(usize),
    /// Encoding: a name longer than 255 bytes or a value longer than 65535.
    #[error("{0} too long to encode")]
    TooLong(&'static str),
    /// Trailing bytes after a packet that carries no message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// One element value of a message.
#[derive(Clone, PartialEq, Eq)]
pub enum Element {
    /// KEY_VALUE: opaque bytes (text in every command vtid serves).
    Value(Vec<u8>),
    /// SECTION_START ... SECTION_END.
    Section(Message),
    /// LIST_START, LIST_ITEMs, LIST_END.
    List(Vec<Vec<u8>>),
}

/// A message: named elements in order (names may repeat on the wire; lookups take the first).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The elements.
    pub entries: Vec<(String, Element)>,
}

impl fmt::Debug for Message {
    // Values are printed as text when they are; messages carry no key material (vtid never
    // puts any in), so nothing needs redacting here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.entries {
            m.entry(k, v);
        }
        m.finish()
    }
}

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(v) => write!(f, "{:?}", String::from_utf8_lossy(v)),
            Self::Section(m) => m.fmt(f),
            Self::List(items) => f
                .debug_list()
                .entries(items.iter().map(|i| String::from_utf8_lossy(i)))
                .finish(),
        }
    }
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key/value.
    pub fn kv(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.entries.push((
            key.to_owned(),
            Element::Value(value.to_string().into_bytes()),
        ));
        self
    }

    /// Adds a key/value when there is one.
    pub fn opt(self, key: &str, value: Option<impl fmt::Display>) -> Self {
        match value {
            Some(v) => self.kv(key, v),
            None => self,
        }
    }

    /// Adds a section.
    pub fn section(mut self, name: &str, m: Message) -> Self {
        self.entries.push((name.to_owned(), Element::Section(m)));
        self
    }

    /// Adds a list of text items.
    pub fn list<S: AsRef<str>>(mut self, name: &str, items: &[S]) -> Self {
        let items = items
            .iter()
            .map(|i| i.as_ref().as_bytes().to_vec())
            .collect();
        self.entries.push((name.to_owned(), Element::List(items)));
        self
    }

    /// The first top-level value named `key`, when it is UTF-8 text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find_map(|(k, v)| match v {
            Element::Value(b) if k == key => std::str::from_utf8(b).ok(),
            _ => None,
        })
    }

    /// The first top-level section named `key`.
    pub fn section_of(&self, key: &str) -> Option<&Message> {
        self.entries.iter().find_map(|(k, v)| match v {
            Element::Section(m) if k == key => Some(m),
            _ => None,
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        for (name, el) in &self.entries {
            match el {
                Element::Value(v) => {
                    out.push(KEY_VALUE);
                    put_name(out, name)?;
                    put_value(out, v)?;
                }
                Element::Section(m) => {
                    out.push(SECTION_START);
                    put_name(out, name)?;
                    m.encode_into(out)?;
                    out.push(SECTION_END);
                }
                Element::List(items) => {
                    out.push(LIST_START);
                    put_name(out, name)?;
                    for i in items {
                        out.push(LIST_ITEM);
                        put_value(out, i)?;
                    }
                    out.push(LIST_END);
                }
            }
        }
        Ok(())
    }
}

/// One packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CMD_REQUEST: a named command with its arguments.
    Request {
        /// The command.
        command: String,
        /// Its arguments.
        message: Message,
    },
    /// CMD_RESPONSE.
    Response(Message),
    /// CMD_UNKNOWN: the command is not served.
    CmdUnknown,
    /// EVENT_REGISTER.
    Register(String),
    /// EVENT_UNREGISTER.
    Unregister(String),
    /// EVENT_CONFIRM: the (un)registration succeeded.
    Confirm,
    /// EVENT_UNKNOWN: no such event.
    EventUnknown,
    /// EVENT: a named event message.
    Event {
        /// The event.
        name: String,
        /// Its message.
        message: Message,
    },
}

impl Packet {
    /// The packet with its 32-bit length prefix, ready to write.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = vec![0; 4];
        match self {
            Self::Request { command, message } => {
                out.push(CMD_REQUEST);
                put_name(&mut out, command)?;
                message.encode_into(&mut out)?;
            }
            Self::Response(m) => {
                out.push(CMD_RESPONSE);
                m.encode_into(&mut out)?;
            }
            Self::CmdUnknown => out.push(CMD_UNKNOWN),
            Self::Register(n) | Self::Unregister(n) => {
                out.push(if matches!(self, Self::Register(_)) {
                    EVENT_REGISTER
                } else {
                    EVENT_UNREGISTER
                });
                put_name(&mut out, n)?;
            }
            Self::Confirm => out.push(EVENT_CONFIRM),
            Self::EventUnknown => out.push(EVENT_UNKNOWN),
            Self::Event { name, message } => {
                out.push(EVENT);
                put_name(&mut out, name)?;
                message.encode_into(&mut out)?;
            }
        }
        let len = out.len() - 4;
        if len > MAX_PACKET {
            return Err(WireError::TooLong("packet"));
        }
        // len <= MAX_PACKET fits in u32.
        out[..4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(out)
    }
}

/// Checks a packet's length field (the bytes after it): 1 (a type byte) to [`MAX_PACKET`].
pub fn check_length(len: u32) -> Result<usize, WireError> {
    let len = len as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(WireError::BadLength(len));
    }
    Ok(len)
}

/// Decodes one packet body (what follows the length field). Never panics.
pub fn decode(body: &[u8]) -> Result<Packet, WireError> {
    let mut r = Reader { buf: body };
    let ty = r.u8().ok_or(WireError::Empty)?;
    let packet = match ty {
        CMD_REQUEST => Packet::Request {
            command: r.name("command name")?,
            message: r.message()?,
        },
        CMD_RESPONSE => Packet::Response(r.message()?),
        CMD_UNKNOWN => Packet::CmdUnknown,
        EVENT_REGISTER => Packet::Register(r.name("event name")?),
        EVENT_UNREGISTER => Packet::Unregister(r.name("event name")?),
        EVENT_CONFIRM => Packet::Confirm,
        EVENT_UNKNOWN => Packet::EventUnknown,
        EVENT => Packet::Event {
            name: r.name("event name")?,
            message: r.message()?,
        },
        other => return Err(WireError::UnknownPacketType(other)),
    };
    if !r.buf.is_empty() {
        return Err(WireError::Trailing(r.buf.len()));
    }
    Ok(packet)
}

/// Decodes a whole frame (length field included), for fuzzing and tests: the length must
/// match the bytes that follow exactly.
pub fn decode_frame(frame: &[u8]) -> Result<Packet, WireError> {
    let (len, body) = frame
        .split_first_chunk::<4>()
        .ok_or(WireError::Truncated("length"))?;
    let len = check_length(u32::from_be_bytes(*len))?;
    match body.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(WireError::Truncated("packet")),
        std::cmp::Ordering::Greater => Err(WireError::Trailing(body.len() - len)),
        std::cmp::Ordering::Equal => decode(body),
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), WireError> {
    let len = u8::try_from(name.len()).map_err(|_| WireError::TooLong("name"))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_value(out: &mut Vec<u8>, v: &[u8]) -> Result<(), WireError> {
    let len = u16::try_from(v.len()).map_err(|_| WireError::TooLong("value"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(v);
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(*b)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn name(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = self.u8().ok_or(WireError::Truncated(what))?;
        let b = self.take(usize::from(len), what)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::NameNotUtf8)
    }

    fn value(&mut self) -> Result<Vec<u8>, WireError> {
        let len = self.take(2, "value length")?;
        let len = u16::from_be_bytes([len[0], len[1]]);
        Ok(self.take(usize::from(len), "value")?.to_vec())
    }

    /// The rest of the packet as a message: elements until the end, sections balanced.
    /// Iterative (an explicit stack of open sections), so nesting costs no call depth.
    fn message(&mut self) -> Result<Message, WireError> {
        let mut root = Message::new();
        let mut open: Vec<(String, Message)> = Vec::new();
        let mut list: Option<(String, Vec<Vec<u8>>)> = None;
        while let Some(ty) = self.u8() {
            if let Some((name, items)) = &mut list {
                match ty {
                    LIST_ITEM => items.push(self.value()?),
                    LIST_END => {
                        let entry = (std::mem::take(name), Element::List(std::mem::take(items)));
                        list = None;
                        current(&mut root, &mut open).entries.push(entry);
                    }
                    _ => return Err(WireError::ListOutOfPlace),
                }
                continue;
            }
            match ty {
                SECTION_START => {
                    let name = self.name("section name")?;
                    if open.len() >= MAX_DEPTH {
                        return Err(WireError::TooDeep);
                    }
                    open.push((name, Message::new()));
                }
                SECTION_END => {
                    let (name, m) = open.pop().ok_or(WireError::UnbalancedSectionEnd)?;
                    current(&mut root, &mut open)
                        .entries
                        .push((name, Element::Section(m)));
                }
                KEY_VALUE => {
                    let name = self.name("key")?;
                    let v = self.value()?;
                    current(&mut root, &mut open)
                        .entries
                        .push((name, Element::Value(v)));
                }
                LIST_START => list = Some((self.name("list name")?, Vec::new())),
                LIST_ITEM | LIST_END => return Err(WireError::ListOutOfPlace),
                other => return Err(WireError::UnknownElement(other)),
            }
        }
        if list.is_some() || !open.is_empty() {
            return Err(WireError::Unterminated);
        }
        Ok(root)
    }
}

/// The innermost open section, else the message itself.
fn current<'m>(root: &'m mut Message, open: &'m mut [(String, Message)]) -> &'m mut Message {
    match open.last_mut() {
        Some((_, m)) => m,
        None => root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message::new().kv("up", "yes").section(
            "Tunnel0",
            Message::new()
                .kv("uniqueid", 7)
                .list("local-ts", &["10.1.0.0/24", "10.2.0.0/24"])
                .section(
                    "child-sas",
                    Message::new().section("Tunnel0-3", Message::new().kv("state", "INSTALLED")),
                ),
        )
    }

    #[test]
    fn round_trips_every_packet_type() {
        let packets = [
            Packet::Request {
                command: "list-sas".into(),
                message: Message::new().kv("ike", "Tunnel0"),
            },
            Packet::Response(sample()),
            Packet::CmdUnknown,
            Packet::Register("list-sa".into()),
            Packet::Unregister("list-sa".into()),
            Packet::Confirm,
            Packet::EventUnknown,
            Packet::Event {
                name: "child-updown".into(),
                message: sample(),
            },
        ];
        for p in packets {
            let frame = p.encode().unwrap();
            assert_eq!(decode_frame(&frame).unwrap(), p);
        }
    }

    /// The bytes of a request as the README lays them out, built by hand.
    #[test]
    fn decodes_a_hand_built_request() {
        let mut body = vec![CMD_REQUEST, 8];
        body.extend_from_slice(b"initiate");
        body.push(KEY_VALUE);
        body.push(5);
        body.extend_from_slice(b"child");
        body.extend_from_slice(&[0, 3]);
        body.extend_from_slice(b"dmv");
        body.extend_from_slice(&[SECTION_START, 1, b's', LIST_START, 1, b'l']);
        body.extend_from_slice(&[LIST_ITEM, 0, 1, b'x', LIST_END, SECTION_END]);
        let Packet::Request { command, message } = decode(&body).unwrap() else {
            panic!("not a request");
        };
        assert_eq!(command, "initiate");
        assert_eq!(message.get("child"), Some("dmv"));
        let s = message.section_of("s").unwrap();
        assert_eq!(
            s.entries,
            vec![("l".into(), Element::List(vec![b"x".to_vec()]))]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[(&[u8], WireError)] = &[
            (&[], WireError::Empty),
            (&[9], WireError::UnknownPacketType(9)),
            (&[CMD_REQUEST], WireError::Truncated("command name")),
            (
                &[CMD_REQUEST, 5, b'a'],
                WireError::Truncated("command name"),
            ),
            (&[CMD_REQUEST, 1, b'a', 9], WireError::UnknownElement(9)),
            (
                &[CMD_REQUEST, 1, b'a', KEY_VALUE, 1, b'k', 0],
                WireError::Truncated("value length"),
            ),
            (
                &[CMD_REQUEST, 1, b'a', KEY_VALUE, 1, b'k', 0, 9, b'v'],
                WireError::Truncated("value"),
            ),
            (
                &[CMD_REQUEST, 1, b'a', SECTION_END],
                WireError::UnbalancedSectionEnd,
            ),
            (
                &[CMD_REQUEST, 1, b'a', SECTION_START, 1, b's'],
                WireError::Unterminated,
            ),
            (
                &[CMD_REQUEST, 1, b'a', LIST_START, 1, b'l'],
                WireError::Unterminated,
            ),
            (
                &[CMD_REQUEST, 1, b'a', LIST_ITEM, 0, 0],
                WireError::ListOutOfPlace,
            ),
            (
                &[CMD_REQUEST, 1, b'a', LIST_START, 1, b'l', KEY_VALUE],
                WireError::ListOutOfPlace,
            ),
            (&[CMD_REQUEST, 2, 0xff, 0xfe], WireError::NameNotUtf8),
            (&[EVENT_REGISTER, 1, b'e', 0], WireError::Trailing(1)),
            (&[CMD_UNKNOWN, 0], WireError::Trailing(1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes).as_ref(), Err(want), "{bytes:?}");
        }
        let mut deep = vec![CMD_REQUEST, 1, b'a'];
        for _ in 0..=MAX_DEPTH {
            deep.extend_from_slice(&[SECTION_START, 1, b's']);
        }
        assert_eq!(decode(&deep), Err(WireError::TooDeep));
    }

    #[test]
    fn frame_lengths_are_bounded_and_exact() {
        assert_eq!(check_length(0), Err(WireError::BadLength(0)));
        assert_eq!(
            check_length(MAX_PACKET as u32 + 1),
            Err(WireError::BadLength(MAX_PACKET + 1))
        );
        assert_eq!(check_length(MAX_PACKET as u32), Ok(MAX_PACKET));
        let frame = Packet::Confirm.encode().unwrap();
        assert_eq!(frame, vec![0, 0, 0, 1, EVENT_CONFIRM]);
        assert_eq!(
            decode_frame(&frame[..4]),
            Err(WireError::Truncated("packet"))
        );
        let mut long = frame.clone();
        long.push(0);
        assert_eq!(decode_frame(&long), Err(WireError::Trailing(1)));
        assert_eq!(decode_frame(&[0, 0]), Err(WireError::Truncated("length")));
    }

    #[test]
    fn encoding_refuses_what_the_format_cannot_carry() {
        let long_name = "n".repeat(256);
        let p = Packet::Register(long_name);
        assert_eq!(p.encode(), Err(WireError::TooLong("name")));
        let m = Message::new().kv("k", "v".repeat(65_536));
        assert_eq!(
            Packet::Response(m).encode(),
            Err(WireError::TooLong("value"))
        );
    }

    /// Every prefix and every single-byte corruption of a valid packet decodes to a packet or
    /// an error; none panics (a poor man's fuzzer, run on every `cargo test`).
    #[test]
    fn truncations_and_corruptions_never_panic() {
        let frame = Packet::Event {
            name: "list-sa".into(),
            message: sample(),
        }
        .encode()
        .unwrap();
        let body = &frame[4..];
        // Cut anywhere inside the "Tunnel0" section (it starts after the type, the name
        // and the "up" key/value: 1 + 8 + 9 bytes) the message no longer balances.
        for n in 19..body.len() {
            assert!(decode(&body[..n]).is_err(), "prefix {n} decoded");
        }
        for n in 0..19 {
            let _ = decode(&body[..n]);
        }
        for i in 0..body.len() {
            for b in [0u8, 1, 2, 3, 4, 5, 6, 7, 0x7f, 0xff] {
                let mut c = body.to_vec();
                c[i] = b;
                let _ = decode(&c);
            }
        }
    }
}
