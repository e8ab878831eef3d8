//! Codec round trips for every payload, and hostile input: truncations, bad lengths and
//! mutations never panic and never decode to something that re-encodes differently.

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use rand_core::SeedableRng;

use super::*;

fn sample_sa() -> Sa {
    Sa {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![
            Proposal {
                number: 1,
                protocol: PROTO_IPSEC_ESP,
                spi: vec![0xde, 0xad, 0xbe, 0xef],
                transforms: vec![
                    Transform {
                        number: 1,
                        id: 12,
                        attrs: vec![
                            Attribute::basic(4, 1),
                            Attribute::basic(1, 1),
                            Attribute::number(2, 86_400),
                            Attribute::basic(6, 256),
                        ],
                    },
                    Transform {
                        number: 2,
                        id: 3,
                        attrs: vec![],
                    },
                ],
            },
            Proposal {
                number: 2,
                protocol: PROTO_IPSEC_ESP,
                spi: vec![1, 2, 3, 4],
                transforms: vec![Transform {
                    number: 1,
                    id: 20,
                    attrs: vec![Attribute {
                        ty: 16,
                        value: AttrValue::Variable(vec![9; 7]),
                    }],
                }],
            },
        ],
    }
}

fn all_payloads() -> Vec<Payload> {
    vec![
        Payload::Sa(sample_sa()),
        Payload::Ke(vec![7; 128]),
        Payload::Id(Id {
            id_type: id_type::IPV4_ADDR_SUBNET,
            protocol: 0,
            port: 0,
            data: vec![10, 1, 0, 0, 255, 255, 255, 0],
        }),
        Payload::Cert(Cert {
            encoding: 4,
            data: vec![0x30, 0x03, 1, 2, 3],
        }),
        Payload::CertReq(CertReq {
            cert_type: 4,
            authority: vec![],
        }),
        Payload::Hash(vec![0xaa; 20]),
        Payload::Sig(vec![0xbb; 64]),
        Payload::Nonce(vec![0xcc; 16]),
        Payload::Notify(Notify {
            doi: DOI_IPSEC,
            protocol: PROTO_ISAKMP,
            ty: 36136,
            spi: vec![1; 16],
            data: 5u32.to_be_bytes().to_vec(),
        }),
        Payload::Delete(Delete {
            doi: DOI_IPSEC,
            protocol: PROTO_IPSEC_ESP,
            spi_size: 4,
            spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
        }),
        Payload::VendorId(vec![0xaf, 0xca, 0xd7, 0x13]),
        Payload::NatD(vec![0x11; 20]),
        Payload::NatOa(NatOa {
            id_type: id_type::IPV4_ADDR,
            addr: "192.0.2.9".parse().expect("ip"),
        }),
    ]
}

pub(crate) fn message() -> Vec<u8> {
    let h = Header::new(
        0x0102_0304_0506_0708,
        0x1112_1314_1516_1718,
        ExchangeType::IdentityProtection,
        0,
        0,
    );
    encode_message(&h, &all_payloads())
}

#[test]
fn every_payload_round_trips_byte_for_byte() {
    let bytes = message();
    let m = Message::decode(&bytes).expect("decodes");
    assert_eq!(m.header.cky_i, 0x0102_0304_0506_0708);
    assert_eq!(m.header.exchange, ExchangeType::IdentityProtection);
    let Body::Plain(chain) = &m.body else {
        panic!("plain");
    };
    assert_eq!(chain.payloads, all_payloads());
    assert_eq!(encode_message(&m.header, &chain.payloads), bytes);
    // The spans cover the chain exactly, in order.
    assert_eq!(chain.spans.first().map(|s| s.start), Some(0));
    assert_eq!(
        chain.spans.last().map(|s| s.end),
        Some(bytes.len() - Header::LEN)
    );
    let sa_body = chain
        .body_of(&bytes[Header::LEN..], payload_type::SA)
        .expect("SA");
    assert_eq!(&sa_body[..8], &[0, 0, 0, 1, 0, 0, 0, 1]);
}

#[test]
fn attributes_basic_and_variable() {
    assert_eq!(Attribute::number(12, 3600).value, AttrValue::Basic(3600));
    let long = Attribute::number(12, 86_400);
    assert_eq!(
        long.value,
        AttrValue::Variable(86_400u32.to_be_bytes().to_vec())
    );
    assert_eq!(long.as_u64(), Some(86_400));
    let huge = Attribute {
        ty: 12,
        value: AttrValue::Variable(vec![1; 9]),
    };
    assert_eq!(huge.as_u64(), None);
    let empty = Attribute {
        ty: 12,
        value: AttrValue::Variable(vec![]),
    };
    assert_eq!(empty.as_u64(), None);
}

#[test]
fn header_checks() {
    let mut b = message();
    b[17] = 0x20;
    assert_eq!(Message::decode(&b), Err(Malformed::MajorVersion(2)));
    let mut b = message();
    b[17] = 0x11;
    assert_eq!(Message::decode(&b), Err(Malformed::MinorVersion(1)));
    let mut b = message();
    b[19] = 0x08;
    assert_eq!(Message::decode(&b), Err(Malformed::Flags(0x08)));
    let mut b = message();
    b.push(0);
    assert_eq!(
        Message::decode(&b),
        Err(Malformed::Syntax(InvalidMessage::BadLength))
    );
    assert_eq!(
        Message::decode(&b[..20]),
        Err(Malformed::Syntax(InvalidMessage::Truncated))
    );
}

#[test]
fn unknown_and_misplaced_payload_types_are_refused() {
    let h = Header::new(1, 2, ExchangeType::Informational, 0, 7);
    let mut b = encode_message(&h, &[Payload::VendorId(vec![1, 2, 3])]);
    b[16] = 99;
    assert_eq!(Message::decode(&b), Err(Malformed::PayloadType(99)));
    // A bare proposal outside an SA payload.
    b[16] = payload_type::PROPOSAL;
    assert_eq!(
        Message::decode(&b),
        Err(Malformed::PayloadType(payload_type::PROPOSAL))
    );
}

#[test]
fn strict_lengths() {
    // A payload length below its generic header.
    let h = Header::new(1, 2, ExchangeType::Informational, 0, 7);
    let mut b = encode_message(&h, &[Payload::Hash(vec![1; 20])]);
    b[Header::LEN + 3] = 3;
    assert_eq!(
        Message::decode(&b),
        Err(Malformed::Syntax(InvalidMessage::BadLength))
    );
    // A payload running past the end.
    let mut b = encode_message(&h, &[Payload::Hash(vec![1; 20])]);
    b[Header::LEN + 3] = 200;
    assert_eq!(
        Message::decode(&b),
        Err(Malformed::Syntax(InvalidMessage::Truncated))
    );
    // A delete whose SPI count disagrees with its length.
    let d = Payload::Delete(Delete {
        doi: 1,
        protocol: PROTO_IPSEC_ESP,
        spi_size: 4,
        spis: vec![vec![1, 2, 3, 4]],
    });
    let mut b = encode_message(&h, &[d]);
    let count_at = Header::LEN + 4 + 6;
    b[count_at + 1] = 2;
    assert_eq!(
        Message::decode(&b),
        Err(Malformed::Syntax(InvalidMessage::BadLength))
    );
    // A nonce outside 8..=256 octets (RFC 2409 §5).
    let b = encode_message(&h, &[Payload::Nonce(vec![1; 7])]);
    assert_eq!(
        Message::decode(&b),
        Err(Malformed::Syntax(InvalidMessage::BadNonceLength(7)))
    );
    // Trailing bytes after an unencrypted chain.
    let mut b = encode_message(&h, &[Payload::Hash(vec![1; 20])]);
    b.extend_from_slice(&[0, 0]);
    let len = b.len() as u32;
    b[24..28].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Message::decode(&b),
        Err(Malformed::Syntax(InvalidMessage::TrailingData))
    );
    // ... but ignored as padding in a decrypted body.
    let mut body = Vec::new();
    encode_chain(&[Payload::Hash(vec![1; 20])], &mut body);
    body.extend_from_slice(&[0, 0, 0, 3]);
    let chain = decode_chain(payload_type::HASH, &body, true).expect("padded");
    assert_eq!(chain.payloads.len(), 1);
}

#[test]
fn sa_structure_checks() {
    let h = Header::new(1, 0, ExchangeType::IdentityProtection, 0, 0);
    let good = encode_message(&h, &[Payload::Sa(sample_sa())]);
    // First proposal's transform count says 3 where there are 2.
    let mut b = good.clone();
    let p1 = Header::LEN + 4 + 8;
    b[p1 + 7] = 3;
    assert!(Message::decode(&b).is_err());
    // Transform count 1 where there are 2: the proposal has bytes left over.
    let mut b = good.clone();
    b[p1 + 7] = 1;
    assert!(Message::decode(&b).is_err());
    // Non-zero reserved octet in a generic header.
    let mut b = good.clone();
    b[Header::LEN + 1] = 1;
    assert_eq!(Message::decode(&b), Err(Malformed::ReservedNotZero));
    // An attribute length running past its transform.
    let t1_attrs = p1 + 8 + 4 + 4 + 8;
    let mut b = good;
    b[t1_attrs] = 0x00;
    b[t1_attrs + 2] = 0xff;
    assert!(Message::decode(&b).is_err());
}

#[test]
fn id_addresses() {
    let id = Id {
        id_type: id_type::IPV4_ADDR_SUBNET,
        protocol: 0,
        port: 0,
        data: vec![10, 1, 2, 3, 255, 255, 255, 0],
    };
    assert_eq!(
        id.addresses(),
        Some((
            "10.1.2.0".parse().expect("ip"),
            "10.1.2.255".parse().expect("ip")
        ))
    );
    let short = Id {
        data: vec![10, 1, 2, 3],
        ..id
    };
    assert_eq!(short.addresses(), None);
}

/// One random mutation of `bytes`: flip, overwrite, cut or extend.
pub(crate) fn mutate(rng: &mut ChaCha20Rng, bytes: &mut Vec<u8>) {
    let n = 1 + rng.next_u32() % 4;
    for _ in 0..n {
        if bytes.is_empty() {
            bytes.push(rng.next_u32() as u8);
            continue;
        }
        let i = rng.next_u32() as usize % bytes.len();
        match rng.next_u32() % 5 {
            0 => bytes[i] ^= 1 << (rng.next_u32() % 8),
            1 => bytes[i] = rng.next_u32() as u8,
            2 => bytes.truncate(i),
            3 => bytes.insert(i, rng.next_u32() as u8),
            _ => bytes[i] = [0, 0xff, 0x7f, 0x80][rng.next_u32() as usize % 4],
        }
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let base = message();
    let mut decoded = 0;
    for _ in 0..20_000 {
        let mut b = base.clone();
        mutate(&mut rng, &mut b);
        if rng.next_u32() % 2 == 0 && b.len() >= 28 {
            let len = b.len() as u32;
            b[24..28].copy_from_slice(&len.to_be_bytes());
        }
        if let Ok(m) = Message::decode(&b) {
            decoded += 1;
            if let Body::Plain(c) = &m.body {
                assert_eq!(encode_message(&m.header, &c.payloads), b);
            }
        }
    }
    assert!(decoded > 0, "some mutations keep the message well-formed");
}
