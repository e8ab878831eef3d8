//! NAT traversal (RFC 3947) and IKE fragmentation between two IKEv1 engines: A behind the
//! harness's NAT, B public.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::pair::*;
use crate::config::Mode;
use crate::config::RemoteAddr;
use crate::endpoint::*;
use crate::v1::config::V1Config;
use crate::v1::endpoint::Command as V1Command;
use crate::v1::endpoint::Endpoint as V1Endpoint;
use crate::v1::fragment;
use crate::v1::keys::HashAlg;
use crate::v1::natt;
use crate::v1::natt::NattVersion;
use crate::v1::wire::Body;
use crate::v1::wire::Header;
use crate::v1::wire::Message;
use crate::v1::wire::Payload;
use crate::v1::wire::decode_chain;
use crate::v1::wire::encode_chain;

/// Octets before a fragment payload.
const HDR: usize = Header::LEN;

fn nat_pair() -> Pair {
    let mut b = peer(B_IP, A_IP, "secret");
    b.remote = RemoteAddr::Any;
    let mut p = Pair::new(peer(A_IP, B_IP, "secret"), b);
    p.nat = true;
    p
}

fn up(t: &TestEndpoint) -> usize {
    t.count_events(|e| matches!(e, Event::IkeSaUp { .. }))
}

fn vids(bytes: &[u8]) -> Vec<Vec<u8>> {
    match Message::decode(bytes).map(|m| m.body) {
        Ok(Body::Plain(c)) => c
            .payloads
            .into_iter()
            .filter_map(|p| match p {
                Payload::VendorId(v) => Some(v),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn nat_detected_floats_to_4500_and_installs_udp_encapsulated_sas() {
    let mut p = nat_pair();
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    // MM1 and MM3 from port 500; MM5 (the first after NAT detection) and later from 4500.
    let ports: Vec<u16> = p.a.sent.iter().map(|t| t.local.port()).collect();
    assert_eq!(&ports[..2], &[500, 500], "{ports:?}");
    assert!(ports[2..].iter().all(|p| *p == 4500), "{ports:?}");
    assert!(p.a.sent[2..].iter().all(|t| t.remote == addr(B_IP, 4500)));
    let ia = &p.a.installs[0];
    assert_eq!(ia.local, addr(A_IP, 4500));
    assert_eq!(ia.remote, addr(B_IP, 4500));
    assert_eq!(
        ia.encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: 4500
        })
    );
    // B sees A's NAT mapping of port 4500.
    let ib = &p.b.installs[0];
    assert_eq!(ib.remote, addr(NAT_PUBLIC, 34500));
    assert_eq!(
        ib.encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: 34500
        })
    );
    assert_eq!(p.b.ep.sas()[0].remote, addr(NAT_PUBLIC, 34500));
    // MM2 named RFC 3947, the best version both speak.
    assert!(vids(&p.b.sent[0].bytes).contains(&natt::VID_RFC3947.to_vec()));
    // Keepalives from A only (it is behind the NAT), every 20 s, to B's port 4500.
    p.drive_for(Duration::from_secs(45));
    assert_eq!(p.a.keepalives.len(), 2, "{:?}", p.a.keepalives);
    assert!(
        p.a.keepalives
            .iter()
            .all(|k| *k == (addr(A_IP, 4500), addr(B_IP, 4500)))
    );
    assert!(p.b.keepalives.is_empty());
    assert!(p.a.ep.stats().rejected.is_empty(), "{:?}", p.a.ep.stats());
    assert!(p.b.ep.stats().rejected.is_empty(), "{:?}", p.b.ep.stats());
}

#[test]
fn without_a_nat_everything_stays_on_500_with_plain_esp() {
    let mut p = Pair::default_pair();
    p.connect();
    p.assert_children_match();
    assert!(
        p.a.sent
            .iter()
            .chain(&p.b.sent)
            .all(|t| t.local.port() == 500 && t.remote.port() == 500)
    );
    assert!(p.a.installs[0].encap.is_none() && p.b.installs[0].encap.is_none());
    // NAT-T was negotiated all the same (MM2 echoes the version), only no NAT was seen.
    assert!(vids(&p.b.sent[0].bytes).contains(&natt::VID_RFC3947.to_vec()));
    p.drive_for(Duration::from_secs(45));
    assert!(p.a.keepalives.is_empty() && p.b.keepalives.is_empty());
}

#[test]
fn transport_mode_through_a_nat_is_udp_encapsulated_transport() {
    let mut a = peer(A_IP, B_IP, "secret");
    let mut b = peer(B_IP, A_IP, "secret");
    b.remote = RemoteAddr::Any;
    a.child.mode = Mode::Transport;
    b.child.mode = Mode::Transport;
    // Transport mode protects the hosts themselves; B sees A as the NAT's address.
    a.child.local_ts = vec![crate::wire::TrafficSelector::host(IpAddr::V4(A_IP))];
    a.child.remote_ts = vec![crate::wire::TrafficSelector::host(IpAddr::V4(B_IP))];
    b.child.local_ts = vec![crate::wire::TrafficSelector::host(IpAddr::V4(B_IP))];
    b.child.remote_ts = vec![crate::wire::TrafficSelector::host(IpAddr::V4(A_IP))];
    let mut p = Pair::new(a, b);
    p.nat = true;
    p.connect();
    p.assert_children_match();
    assert_eq!(p.a.installs[0].mode, Mode::Transport);
    assert!(p.a.installs[0].encap.is_some() && p.b.installs[0].encap.is_some());
}

#[test]
fn a_new_nat_mapping_is_followed_by_the_public_side_only() {
    let mut p = nat_pair();
    p.connect();
    let child = p.b.installs[0].child;
    // The NAT rebinds: A's port 4500 now shows as 35500, and 34500 leads nowhere.
    p.nat_offset = 31000;
    let session = p.a.ep.sas()[0].session;
    p.command(Side::A, V1Command::Dpd { session });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.b.ep.sas()[0].remote, addr(NAT_PUBLIC, 35500));
    assert_eq!(p.b.encap_updates.len(), 1, "{:?}", p.b.encap_updates);
    let u = &p.b.encap_updates[0];
    assert_eq!(u.child, child);
    assert_eq!(
        u.encap,
        UdpEncap {
            local_port: 4500,
            remote_port: 35500
        }
    );
    assert!(p.b.has_event(|e| matches!(
        e,
        Event::PeerMoved { old, new, .. }
            if *old == addr(NAT_PUBLIC, 34500) && *new == addr(NAT_PUBLIC, 35500)
    )));
    // The R-U-THERE-ACK reached A through the new mapping: no further probe, still up.
    assert!(p.a.ep.session_alive(session));
    assert!(
        p.a.encap_updates.is_empty(),
        "the side behind the NAT does not follow"
    );
    assert_eq!(p.a.ep.sas()[0].remote, addr(B_IP, 4500));
}

#[test]
fn a_forged_datagram_from_another_port_does_not_move_the_peer() {
    let mut p = nat_pair();
    p.connect();
    // A's last protected message, replayed from another port, with a flipped ciphertext
    // octet so it fails its hash.
    let mut forged = p.a.sent.last().expect("QM3").bytes.clone();
    let n = forged.len();
    forged[n - 1] ^= 0x55;
    let now = p.time;
    p.b.ep.handle_datagram(
        now,
        Datagram {
            local: addr(B_IP, 4500),
            remote: addr(NAT_PUBLIC, 40000),
            bytes: &forged,
        },
    );
    p.drive_now();
    assert_eq!(p.b.ep.sas()[0].remote, addr(NAT_PUBLIC, 34500));
    assert!(p.b.encap_updates.is_empty());
    assert!(!p.b.ep.stats().rejected.is_empty());
}

#[test]
fn nat_detection_hashes_follow_rfc_3947() {
    let local = addr(A_IP, 500);
    let remote = addr(B_IP, 500);
    let h = natt::nat_d_hash(HashAlg::Sha256, 1, 2, local);
    // HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash itself, not its HMAC.
    let want = HashAlg::Sha256.digest(&[
        &1u64.to_be_bytes(),
        &2u64.to_be_bytes(),
        &A_IP.octets(),
        &500u16.to_be_bytes(),
    ]);
    assert_eq!(h, want);
    assert_eq!(h.len(), 32);
    let chain_of = |payloads: Vec<Payload>| {
        let mut b = Vec::new();
        let first = encode_chain(&payloads, &mut b);
        decode_chain(first, &b, false).expect("chain")
    };
    // What A sends, checked by B: no NAT when B sees the same addresses.
    let sent = natt::nat_d_payloads(NattVersion::Rfc3947, HashAlg::Sha256, 1, 2, local, remote);
    let c = chain_of(sent.clone());
    let same = natt::check_nat_d(HashAlg::Sha256, 1, 2, &c, remote, local).expect("NAT-D");
    assert!(!same.any());
    // B sees A's datagram from another address: A is behind a NAT.
    let nat = natt::check_nat_d(HashAlg::Sha256, 1, 2, &c, remote, addr(NAT_PUBLIC, 30500))
        .expect("NAT-D");
    assert_eq!(
        nat,
        natt::NatDetected {
            local: false,
            remote: true
        }
    );
    // B's own address was rewritten on the way (B behind a NAT).
    let nat = natt::check_nat_d(HashAlg::Sha256, 1, 2, &c, addr(B_IP, 4500), local).expect("NAT-D");
    assert!(nat.local && !nat.remote);
    // Fewer than two NAT-D payloads detect nothing.
    assert!(
        natt::check_nat_d(
            HashAlg::Sha256,
            1,
            2,
            &chain_of(sent[..1].to_vec()),
            remote,
            local
        )
        .is_none()
    );
    // The drafts number NAT-D 130 and are read the same.
    let draft = natt::nat_d_payloads(NattVersion::Draft02n, HashAlg::Sha1, 1, 2, local, remote);
    assert!(matches!(draft[0], Payload::NatDDraft(_)));
    let c = chain_of(draft);
    assert!(
        !natt::check_nat_d(HashAlg::Sha1, 1, 2, &c, remote, local)
            .expect("NAT-D")
            .any()
    );
}

#[test]
fn vendor_ids_pick_the_best_shared_version() {
    let chain_of = |vids: &[&[u8; 16]]| {
        let payloads: Vec<Payload> = vids.iter().map(|v| Payload::VendorId(v.to_vec())).collect();
        let mut b = Vec::new();
        let first = encode_chain(&payloads, &mut b);
        decode_chain(first, &b, false).expect("chain")
    };
    // strongSwan and IOS send the RFC and the drafts: the RFC wins.
    let both = chain_of(&[
        &natt::VID_DRAFT_02N,
        &natt::VID_RFC3947,
        &natt::VID_DRAFT_03,
    ]);
    assert_eq!(NattVersion::negotiate(&both), Some(NattVersion::Rfc3947));
    let old = chain_of(&[&natt::VID_DRAFT_02, &natt::VID_DRAFT_02N]);
    assert_eq!(NattVersion::negotiate(&old), Some(NattVersion::Draft02n));
    assert_eq!(NattVersion::negotiate(&chain_of(&[])), None);
    // Our MM1 offers all four, the RFC first.
    let ours: Vec<Vec<u8>> = natt::vendor_ids()
        .into_iter()
        .filter_map(|p| match p {
            Payload::VendorId(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(ours.len(), 4);
    assert_eq!(ours[0], natt::VID_RFC3947.to_vec());
}

fn small_fragments(p: &mut Pair, size: usize) {
    for (side, seed, peer_cfg) in [
        (Side::A, 1u8, peer(A_IP, B_IP, "secret")),
        (Side::B, 2u8, peer(B_IP, A_IP, "secret")),
    ] {
        let cfg = V1Config {
            peers: vec![peer_cfg],
            fragment_size: size,
            ..V1Config::default()
        };
        p.side(side).ep = V1Endpoint::new(Arc::new(cfg), [seed; 32]);
    }
}

#[test]
fn large_phase1_messages_go_as_fragments_reassembled_out_of_order() {
    let mut p = Pair::default_pair();
    small_fragments(&mut p, 200);
    p.reorder = true;
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    // MM1 is whole (A does not yet know that B takes fragments); MM3 (KE 256 octets, nonce,
    // NAT-D) went as fragments of at most 200 octets, delivered last first.
    let frags: Vec<_> =
        p.a.sent
            .iter()
            .filter(|t| fragment::is_fragment(&t.bytes))
            .collect();
    assert!(frags.len() >= 3, "{}", frags.len());
    assert!(frags.iter().all(|t| t.bytes.len() <= 200));
    assert!(!fragment::is_fragment(&p.a.sent[0].bytes));
    let (a_done, a_pending) = p.a.ep.fragment_counts();
    let (b_done, b_pending) = p.b.ep.fragment_counts();
    assert!(b_done >= 1 && a_done >= 1, "a {a_done} b {b_done}");
    assert_eq!((a_pending, b_pending), (0, 0));
    // Quick mode is never fragmented.
    assert!(
        p.a.sent
            .iter()
            .chain(&p.b.sent)
            .filter(|t| fragment::is_fragment(&t.bytes))
            .all(|t| t.bytes[18] == 2)
    );
    assert!(p.b.ep.stats().rejected.is_empty(), "{:?}", p.b.ep.stats());
}

#[test]
fn fragment_split_and_parse_round_trip() {
    let msg: Vec<u8> = {
        let mut p = Pair::default_pair();
        p.connect();
        p.a.sent[0].bytes.clone()
    };
    let frags = fragment::split(&msg, 7, 100);
    assert!(frags.len() >= 2);
    let mut r = fragment::Reassembly::default();
    let now = std::time::Instant::now();
    let mut whole = None;
    for (i, f) in frags.iter().enumerate().rev() {
        let parsed = fragment::parse(f).expect("fragment");
        assert_eq!(parsed.id, 7);
        assert_eq!(usize::from(parsed.number), i + 1);
        assert_eq!(parsed.last, i + 1 == frags.len());
        whole = r.add(now, addr(A_IP, 500), &parsed).expect("fits");
    }
    assert_eq!(whole, Some(msg));
}

#[test]
fn bad_fragments_are_rejected_and_change_nothing() {
    let mut p = Pair::default_pair();
    p.connect();
    let msg = p.a.sent[0].bytes.clone();
    let frags = fragment::split(&msg, 9, 100);
    assert!(frags.len() >= 3, "{}", frags.len());
    let b = &mut p.b.ep;
    let now = p.time;
    let from = addr(A_IP, 500);
    let feed = |b: &mut V1Endpoint, bytes: &[u8]| {
        b.handle_datagram(
            now,
            Datagram {
                local: addr(B_IP, 500),
                remote: from,
                bytes,
            },
        );
    };
    // The first fragment opens a set.
    feed(b, &frags[0]);
    assert_eq!(b.fragment_counts(), (0, 1));
    let bad_count = |b: &V1Endpoint| b.stats().rejected.get("v1_bad_fragment").copied();
    let sas = b.sa_count();
    let mut bad: Vec<Vec<u8>> = Vec::new();
    // Same number, other data.
    let mut other = frags[0].clone();
    let n = other.len();
    other[n - 1] ^= 1;
    bad.push(other);
    // Number 0, and a number past the cap.
    for number in [0u8, fragment::MAX_FRAGMENTS + 1] {
        let mut f = frags[1].clone();
        f[HDR + 6] = number;
        bad.push(f);
    }
    // Undefined flag bits.
    let mut f = frags[1].clone();
    f[HDR + 7] = 0x80;
    bad.push(f);
    // Truncated: the header's length no longer matches.
    bad.push(frags[1][..frags[1].len() - 1].to_vec());
    // A payload length that overruns the message.
    let mut f = frags[1].clone();
    f[HDR + 3] = f[HDR + 3].wrapping_add(1);
    bad.push(f);
    // A non-zero message ID.
    let mut f = frags[1].clone();
    f[20] = 1;
    bad.push(f);
    // Quick mode as exchange type.
    let mut f = frags[1].clone();
    f[18] = 32;
    bad.push(f);
    // Just the header.
    bad.push(frags[1][..30].to_vec());
    for (i, f) in bad.iter().enumerate() {
        let before = bad_count(b).unwrap_or(0);
        feed(b, f);
        assert_eq!(bad_count(b), Some(before + 1), "bad fragment {i}");
        assert_eq!(b.fragment_counts(), (0, 1), "bad fragment {i}");
        assert_eq!(b.sa_count(), sas);
    }
    // A second LAST contradicting the first, once the set knows its last fragment.
    let last = frags.len() - 1;
    feed(b, &frags[last]);
    let mut second_last = frags[1].clone();
    second_last[HDR + 7] = 1;
    let before = bad_count(b).unwrap_or(0);
    feed(b, &second_last);
    assert_eq!(bad_count(b), Some(before + 1));
    // The set is intact: the rest completes the message, which B answers as a repeated MM1.
    for f in &frags[1..last] {
        feed(b, f);
    }
    assert_eq!(b.fragment_counts(), (1, 0));
    assert_eq!(b.sa_count(), sas);
    // An incomplete set is dropped after the timeout.
    feed(b, &frags[0]);
    assert_eq!(b.fragment_counts(), (1, 1));
    let later = now + fragment::REASSEMBLY_TIMEOUT + Duration::from_secs(1);
    assert!(b.poll_timeout().is_some_and(|t| t <= later));
    b.handle_timeout(later);
    assert_eq!(b.fragment_counts(), (1, 0));
}

#[test]
fn reassembly_holds_a_bounded_number_of_sets() {
    let mut r = fragment::Reassembly::default();
    let now = std::time::Instant::now();
    for id in 0..(fragment::MAX_SETS as u16 * 4) {
        let f = fragment::Fragment {
            cky_i: 1,
            cky_r: 2,
            id,
            number: 1,
            last: false,
            data: &[0; 100],
        };
        assert_eq!(r.add(now, addr(A_IP, 500), &f), Ok(None));
        assert!(r.pending() <= fragment::MAX_SETS);
    }
    // One set's octets are capped too.
    let mut r = fragment::Reassembly::default();
    let big = vec![0u8; fragment::MAX_MESSAGE / 2 + 1];
    for (number, want_ok) in [(1u8, true), (2, false)] {
        let f = fragment::Fragment {
            cky_i: 1,
            cky_r: 2,
            id: 1,
            number,
            last: false,
            data: &big,
        };
        assert_eq!(r.add(now, addr(A_IP, 500), &f).is_ok(), want_ok);
    }
}

/// Seeds of the `v1_handle_datagram` fuzz target (fuzz/README.md): the initiator's side of
/// whole conversations with the test pair's responder, plain, through the NAT, and in
/// fragments, in the target's record format.
#[test]
#[ignore = "writes files; run by hand to refresh fuzz seeds"]
fn write_fuzz_seeds_v1_natt() {
    let Ok(dir) = std::env::var("IKE_FUZZ_SEED_DIR") else {
        return;
    };
    let dir = std::path::Path::new(&dir).join("v1_handle_datagram");
    let _ = std::fs::create_dir_all(&dir);
    let conversations: [(&str, Pair, bool); 3] = [
        ("plain", Pair::default_pair(), false),
        ("nat", nat_pair(), true),
        (
            "fragments",
            {
                let mut p = Pair::default_pair();
                small_fragments(&mut p, 200);
                p
            },
            false,
        ),
    ];
    for (name, mut p, nat) in conversations {
        p.connect();
        let mut seed = vec![u8::from(nat)];
        for t in &p.a.sent {
            seed.push(u8::from(t.local.port() == 4500));
            seed.extend_from_slice(&(t.bytes.len() as u16).to_be_bytes());
            seed.extend_from_slice(&t.bytes);
        }
        let _ = std::fs::write(dir.join(name), &seed);
    }
}

#[test]
fn a_closed_nat_t_sa_leaves_no_mm1_entry_behind() {
    // B answered A's MM1 from port 500; the SA then floated to 4500. Once it is gone, a new
    // MM1 with the same cookie is a new exchange, not a repeat of the old one.
    let mut p = nat_pair();
    p.connect();
    let session = p.b.ep.sas()[0].session;
    p.command(Side::B, V1Command::TerminateSession { session });
    p.drive_for(Duration::from_secs(1));
    assert_eq!(p.b.ep.sa_count(), 0);
    let mm1 = p.a.sent[0].bytes.clone();
    let now = p.time;
    p.b.ep.handle_datagram(
        now,
        Datagram {
            local: addr(B_IP, 500),
            remote: addr(NAT_PUBLIC, 30500),
            bytes: &mm1,
        },
    );
    assert_eq!(p.b.ep.sa_count(), 1, "a fresh responder SA");
}

#[test]
fn quick_mode_modes_are_udp_encapsulated_only_through_a_nat_and_drafts_use_their_numbers() {
    use crate::v1::wire::AttrValue;
    use crate::v1::wire::Attribute;
    use crate::v1::wire::Proposal;
    use crate::v1::wire::Sa;
    use crate::v1::wire::Transform;
    let sa = |modes: &[u16]| Sa {
        doi: 1,
        situation: 1,
        proposals: vec![Proposal {
            number: 1,
            protocol: 3,
            spi: vec![1, 2, 3, 4],
            transforms: modes
                .iter()
                .enumerate()
                .map(|(i, m)| Transform {
                    number: i as u8 + 1,
                    id: 12,
                    attrs: vec![Attribute::basic(4, *m), Attribute::basic(5, 5)],
                })
                .collect(),
        }],
    };
    let modes = |sa: &Sa| -> Vec<AttrValue> {
        sa.proposals[0]
            .transforms
            .iter()
            .map(|t| t.attrs[0].value.clone())
            .collect()
    };
    let basic = |v: &[u16]| v.iter().map(|x| AttrValue::Basic(*x)).collect::<Vec<_>>();
    let through_nat = |version| natt::NatT {
        version: Some(version),
        nat: natt::NatDetected {
            local: true,
            remote: false,
        },
        keepalive_at: None,
    };
    // RFC 3947 §5.2: 3 and 4; the drafts: 61443 and 61444.
    let rfc = through_nat(NattVersion::Rfc3947).encap_sa(sa(&[1, 2]));
    assert_eq!(modes(&rfc), basic(&[3, 4]));
    let draft = through_nat(NattVersion::Draft02n).encap_sa(sa(&[1, 2]));
    assert_eq!(modes(&draft), basic(&[61443, 61444]));
    // Read back as the plain modes, for matching against transform sets.
    assert_eq!(modes(&natt::plain_sa(&rfc)), basic(&[1, 2]));
    assert_eq!(modes(&natt::plain_sa(&draft)), basic(&[1, 2]));
    // Without a NAT (or without NAT-T) the offer is unchanged.
    let no_nat = natt::NatT {
        version: Some(NattVersion::Rfc3947),
        ..Default::default()
    };
    assert_eq!(modes(&no_nat.encap_sa(sa(&[1, 2]))), basic(&[1, 2]));
    assert_eq!(
        modes(&natt::NatT::default().encap_sa(sa(&[1, 2]))),
        basic(&[1, 2])
    );
    // NAT-OA only for transport mode through a NAT, numbered as the version numbers it.
    let a = IpAddr::V4(A_IP);
    let b = IpAddr::V4(B_IP);
    assert!(
        through_nat(NattVersion::Rfc3947)
            .nat_oa(Mode::Tunnel, a, b)
            .is_empty()
    );
    let oa = through_nat(NattVersion::Rfc3947).nat_oa(Mode::Transport, a, b);
    assert!(
        matches!(&oa[..], [Payload::NatOa(i), Payload::NatOa(r)] if i.addr == a && r.addr == b)
    );
    let oa = through_nat(NattVersion::Draft03).nat_oa(Mode::Transport, a, b);
    assert!(matches!(
        &oa[..],
        [Payload::NatOaDraft(_), Payload::NatOaDraft(_)]
    ));
    assert!(no_nat.nat_oa(Mode::Transport, a, b).is_empty());
}

#[test]
fn main_mode_3_and_4_carry_nat_d_only_when_both_speak_nat_t() {
    let nat_d = |bytes: &[u8]| match Message::decode(bytes).map(|m| m.body) {
        Ok(Body::Plain(c)) => c
            .payloads
            .iter()
            .filter(|p| matches!(p, Payload::NatD(_)))
            .count(),
        _ => 0,
    };
    let mut p = Pair::default_pair();
    p.connect();
    // MM3 (A's second message) and MM4 (B's second): the peer's address, then the sender's.
    assert_eq!(nat_d(&p.a.sent[1].bytes), 2);
    assert_eq!(nat_d(&p.b.sent[1].bytes), 2);
    assert_eq!(nat_d(&p.a.sent[0].bytes), 0, "MM1 has none");
}

#[test]
fn aggressive_mode_through_a_nat_floats_at_am3_and_installs_udp_encapsulated_sas() {
    // RFC 3947 §3.2: NAT-D in AM2 and AM3; the initiator sends AM3 from port 4500 once AM2
    // showed the NAT, and the responder follows and detects it from AM3's NAT-D.
    let mut a = peer(A_IP, B_IP, "secret");
    a.aggressive = true;
    let mut b = peer(B_IP, A_IP, "secret");
    b.remote = RemoteAddr::Any;
    b.aggressive = true;
    let mut p = Pair::new(a, b);
    p.nat = true;
    p.connect();
    assert_eq!((up(&p.a), up(&p.b)), (1, 1));
    p.assert_children_match();
    let ports: Vec<u16> = p.a.sent.iter().map(|t| t.local.port()).collect();
    assert_eq!(ports[0], 500, "AM1 from 500: {ports:?}");
    assert!(
        ports[1..].iter().all(|p| *p == 4500),
        "AM3 on from 4500: {ports:?}"
    );
    // AM2 carries the NAT-T VID B chose and its NAT-D pair.
    let am2 = Message::decode(&p.b.sent[0].bytes).expect("AM2 decodes");
    let Body::Plain(chain) = am2.body else {
        panic!("AM2 is in clear")
    };
    assert_eq!(
        chain
            .payloads
            .iter()
            .filter(|x| matches!(x, Payload::NatD(_)))
            .count(),
        2
    );
    assert!(vids(&p.b.sent[0].bytes).contains(&natt::VID_RFC3947.to_vec()));
    let (ia, ib) = (&p.a.installs[0], &p.b.installs[0]);
    assert_eq!(
        ia.encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: 4500
        })
    );
    assert_eq!(ib.remote, addr(NAT_PUBLIC, 34500));
    assert_eq!(
        ib.encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: 34500
        })
    );
    // Only the side behind the NAT keeps the mapping open.
    p.drive_for(Duration::from_secs(25));
    assert!(!p.a.keepalives.is_empty());
    assert!(p.b.keepalives.is_empty());
    assert!(p.a.ep.stats().rejected.is_empty(), "{:?}", p.a.ep.stats());
    assert!(p.b.ep.stats().rejected.is_empty(), "{:?}", p.b.ep.stats());
}
