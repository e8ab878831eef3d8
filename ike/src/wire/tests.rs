use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use rand_core::SeedableRng;

use super::enums::*;
use super::*;

/// One payload of every kind we implement, with non-trivial contents.
pub(crate) fn every_payload() -> Vec<Payload> {
    vec![
        Payload::Sa(Sa {
            proposals: vec![
                Proposal {
                    num: 1,
                    protocol: ProtocolId::Ike,
                    spi: vec![],
                    transforms: vec![
                        Transform::with_key_length(TransformType::Encr, 20, Some(256)),
                        Transform::new(TransformType::Prf, 5),
                        Transform::new(TransformType::Dh, 31),
                    ],
                },
                Proposal {
                    num: 2,
                    protocol: ProtocolId::Esp,
                    spi: vec![1, 2, 3, 4],
                    transforms: vec![Transform {
                        ty: TransformType::Unknown(0x99),
                        id: 7,
                        attributes: vec![Attribute {
                            ty: 0x1234,
                            value: AttrValue::Tlv(vec![9; 3]),
                        }],
                    }],
                },
            ],
        }),
        Payload::Ke(Ke {
            group: 31,
            data: vec![0xab; 32],
        }),
        Payload::IdI(Identity::Ipv4(Ipv4Addr::new(192, 0, 2, 1))),
        Payload::IdR(Identity::Ipv6(Ipv6Addr::LOCALHOST)),
        Payload::IdI(Identity::Fqdn("vpn.example.org".into())),
        Payload::IdR(Identity::Rfc822("a@example.org".into())),
        Payload::IdI(Identity::DerAsn1Dn(vec![0x30, 0x00])),
        Payload::IdR(Identity::KeyId(vec![1, 2, 3])),
        Payload::IdI(Identity::Other {
            ty: 0x77,
            data: vec![5],
        }),
        Payload::Cert(Cert {
            encoding: CertEncoding::X509Signature,
            data: vec![0x30, 1, 0],
        }),
        Payload::CertReq(Cert {
            encoding: CertEncoding::X509Signature,
            data: vec![7; 20],
        }),
        Payload::Auth(Auth {
            method: AuthMethod::SharedKeyMic,
            data: vec![3; 32],
        }),
        Payload::Nonce(Nonce(vec![0x11; 32])),
        Payload::Notify(Notify::new(NotifyType::Ikev2FragmentationSupported, vec![])),
        Payload::Notify(Notify::esp(NotifyType::RekeySa, 0xdead_beef, vec![])),
        Payload::Notify(Notify::new(NotifyType::Unknown(0x5555), vec![1, 2])),
        Payload::Delete(Delete {
            protocol: ProtocolId::Esp,
            spis: vec![1, 0xffff_ffff],
        }),
        Payload::Delete(Delete {
            protocol: ProtocolId::Ike,
            spis: vec![],
        }),
        Payload::VendorId(b"vtid".to_vec()),
        Payload::TsI(vec![
            TrafficSelector::prefix(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16),
            TrafficSelector::any(true),
        ]),
        Payload::TsR(vec![TrafficSelector {
            ip_proto: 6,
            start_port: 80,
            end_port: 443,
            start: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            end: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        }]),
        Payload::Cp(Cp {
            ty: CfgType::Request,
            attributes: vec![CfgAttribute {
                ty: 1,
                value: vec![],
            }],
        }),
        Payload::Eap(vec![1, 2, 0, 4]),
    ]
}

fn sample_message() -> Message {
    let mut payloads = every_payload();
    payloads.push(Payload::Sk(Sk {
        first: PayloadType::IdI,
        body: vec![0x42; 48],
    }));
    Message {
        header: Header::new(
            0x0102_0304_0506_0708,
            0,
            ExchangeType::IkeSaInit,
            true,
            false,
            0,
        ),
        payloads,
    }
}

#[test]
fn every_payload_round_trips() {
    let msg = sample_message();
    let bytes = msg.encode();
    let back = Message::decode(&bytes).expect("decode");
    assert_eq!(back.payloads, msg.payloads);
    assert_eq!(back.header.length as usize, bytes.len());
    assert_eq!(back.encode(), bytes);
}

#[test]
fn each_payload_round_trips_alone() {
    for p in every_payload() {
        let mut out = Vec::new();
        encode_chain(std::slice::from_ref(&p), &mut out);
        let back = decode_chain(p.kind(), &out).expect("decode");
        assert_eq!(back, vec![p]);
    }
}

#[test]
fn skf_round_trips() {
    let msg = Message {
        header: Header::new(1, 2, ExchangeType::IkeAuth, true, false, 1),
        payloads: vec![Payload::Skf(Skf {
            first: PayloadType::IdI,
            number: 1,
            total: 3,
            body: vec![1; 40],
        })],
    };
    let bytes = msg.encode();
    assert_eq!(
        Message::decode(&bytes).expect("decode").payloads,
        msg.payloads
    );
}

#[test]
fn header_fields() {
    let h = Header::new(1, 2, ExchangeType::Informational, false, true, 7);
    let bytes = h.to_vec();
    assert_eq!(bytes.len(), Header::LEN);
    let back = Header::read_bytes(&bytes).expect("header");
    assert!(!back.is_initiator() && back.is_response() && !back.version_flag());
    assert_eq!(back.message_id, 7);
    let mut bad = bytes;
    bad[17] = 0x10;
    assert_eq!(
        Header::read_bytes(&bad),
        Err(InvalidMessage::UnsupportedVersion(0x10))
    );
}

#[test]
fn unknown_payloads_skipped_unless_critical() {
    // An unknown payload type 0x80 followed by a Vendor ID.
    let mut body = vec![PayloadType::VendorId.to_raw(), 0x00, 0x00, 0x06, 0xaa, 0xbb];
    encode_chain(&[Payload::VendorId(vec![1])], &mut body);
    let chain = decode_chain(PayloadType::Unknown(0x80), &body).expect("skips");
    assert_eq!(chain, vec![Payload::VendorId(vec![1])]);
    body[1] = 0x80;
    assert_eq!(
        decode_chain(PayloadType::Unknown(0x80), &body),
        Err(InvalidMessage::UnsupportedCriticalPayload(0x80))
    );
}

#[test]
fn nonce_bounds() {
    assert!(Nonce::read_bytes(&[0; 15]).is_err());
    assert!(Nonce::read_bytes(&[0; 16]).is_ok());
    assert!(Nonce::read_bytes(&[0; 256]).is_ok());
    assert!(Nonce::read_bytes(&[0; 257]).is_err());
}

#[test]
fn sk_must_be_last() {
    let mut out = Vec::new();
    encode_chain(
        &[Payload::Sk(Sk {
            first: PayloadType::None,
            body: vec![1; 8],
        })],
        &mut out,
    );
    out[0] = PayloadType::None.to_raw();
    out.extend_from_slice(&[0, 0, 0, 4]);
    assert!(decode_chain(PayloadType::Sk, &out).is_err());
}

#[test]
fn lengths_are_checked() {
    let bytes = sample_message().encode();
    // Header length disagreeing with the datagram.
    assert_eq!(
        Message::decode(&bytes[..bytes.len() - 1]),
        Err(InvalidMessage::BadLength)
    );
    // Payload length smaller than its header.
    let mut bad = bytes.clone();
    bad[30..32].copy_from_slice(&[0, 2]);
    assert!(Message::decode(&bad).is_err());
    // Delete with a huge SPI count but no SPIs: rejected without allocating.
    let mut r = Reader::new(&[3, 4, 0xff, 0xff]);
    assert!(Delete::read(&mut r).is_err());
}

/// Mutates valid messages and random bytes; decoding must never panic. The real fuzz targets
/// live in `/fuzz` (cargo-fuzz, nightly); this keeps a cheap deterministic copy in `cargo test`.
#[test]
fn mutated_messages_never_panic() {
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let base = sample_message().encode();
    let mut ok = 0usize;
    for i in 0..50_000u32 {
        let mut buf = if i % 8 == 0 {
            let mut b = vec![0u8; (rng.next_u32() % 200) as usize];
            rng.fill_bytes(&mut b);
            b
        } else {
            base.clone()
        };
        mutate(&mut rng, &mut buf);
        if i % 2 == 0 && buf.len() >= Header::LEN {
            // Keep the header length consistent so the payload chain gets exercised.
            let len = buf.len() as u32;
            buf[24..28].copy_from_slice(&len.to_be_bytes());
            buf[17] = IKE_VERSION;
        }
        if let Ok(m) = Message::decode(&buf) {
            ok += 1;
            let again = m.encode();
            assert_eq!(
                Message::decode(&again).map(|a| a.payloads).as_ref(),
                Ok(&m.payloads)
            );
        }
    }
    assert!(ok > 0);
}

/// A byte-level mutator shared with the engine fuzz loop.
pub(crate) fn mutate(rng: &mut ChaCha20Rng, buf: &mut Vec<u8>) {
    let n = 1 + rng.next_u32() % 4;
    for _ in 0..n {
        let len = buf.len();
        match rng.next_u32() % 6 {
            0 if len > 0 => {
                let i = rng.next_u32() as usize % len;
                buf[i] ^= 1 << (rng.next_u32() % 8);
            }
            1 if len > 0 => {
                let i = rng.next_u32() as usize % len;
                buf[i] = rng.next_u32() as u8;
            }
            2 if len > 0 => {
                let i = rng.next_u32() as usize % len;
                buf.truncate(i);
            }
            3 => {
                let i = if len == 0 {
                    0
                } else {
                    rng.next_u32() as usize % len
                };
                buf.insert(i, rng.next_u32() as u8);
            }
            4 if len > 1 => {
                let i = rng.next_u32() as usize % (len - 1);
                buf[i] = [0x00, 0x80, 0xff, 0x04][rng.next_u32() as usize % 4];
            }
            _ if len > 2 => {
                let i = rng.next_u32() as usize % (len - 2);
                let v = [0u16, 4, 0xffff, 8][rng.next_u32() as usize % 4];
                buf[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
}
