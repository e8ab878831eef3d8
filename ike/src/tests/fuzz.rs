//! Stable stand-in for the `fuzz/handle_datagram` target: replays a recorded conversation into
//! a fresh responder (same seed, so the recorded protected messages stay valid for it) with one
//! datagram mutated, and checks the engine never panics and keeps its outputs drainable.
//!
//! `IKE_FUZZ_ITERS` overrides the iteration count (default 3000 keeps `cargo test` fast).

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use rand_core::SeedableRng;

use super::pair::*;
use crate::endpoint::*;

#[test]
fn mutated_conversation_never_panics_responder() {
    let iters: usize = std::env::var("IKE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    // Record A's side of a handshake, a child rekey, an IKE rekey and a delete.
    let mut p = Pair::default_pair();
    p.connect();
    let child = p.a.installs[0].child;
    p.command(Side::A, Command::RekeyChild { child });
    p.drive_for(Duration::from_secs(1));
    let session = p.a.installs[0].session;
    p.command(Side::A, Command::RekeyIke { session });
    p.drive_for(Duration::from_secs(1));
    p.command(
        Side::A,
        Command::Terminate {
            conn: crate::config::ConnId(1),
        },
    );
    p.drive_for(Duration::from_secs(1));
    let script: Vec<Transmit> = p.a.sent.clone();
    assert!(script.len() >= 6);
    let config = Arc::new(endpoint_config(vec![peer(1, B_IP, A_IP, "secret")]));
    // An unmutated replay reaches the same states (installs, rekeys, delete).
    let mut b = Endpoint::new(config.clone(), [2; 32]);
    let mut installs = 0;
    for t in &script {
        b.handle_datagram(
            p.start,
            Datagram {
                local: t.remote,
                remote: t.local,
                bytes: &t.bytes,
            },
        );
        while let Some(o) = b.poll_output() {
            // A rekey's held-back outbound SA is a second output of the same Child SA.
            installs += usize::from(matches!(
                o,
                Output::InstallChildSa(ref i) if i.halves != Halves::OutboundLater
            ));
        }
    }
    assert_eq!(
        installs, 2,
        "replay must reach IKE_AUTH and CREATE_CHILD_SA"
    );
    assert!(b.stats().rejected.is_empty(), "{:?}", b.stats().rejected);
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    let mut execs = 0usize;
    let now = p.start;
    for i in 0..iters {
        let mut b = Endpoint::new(config.clone(), [2; 32]);
        let target = i % script.len();
        for (k, t) in script.iter().enumerate().take(target + 1) {
            let mut bytes = t.bytes.clone();
            if k == target {
                crate::wire::tests::mutate(&mut rng, &mut bytes);
                if rng.next_u32() % 2 == 0 && bytes.len() >= 28 {
                    // Keep the header length right so the payload chain is reached.
                    let len = bytes.len() as u32;
                    bytes[24..28].copy_from_slice(&len.to_be_bytes());
                }
            }
            b.handle_datagram(
                now,
                Datagram {
                    local: t.remote,
                    remote: t.local,
                    bytes: &bytes,
                },
            );
            execs += 1;
            while b.poll_output().is_some() {}
        }
        if let Some(t) = b.poll_timeout() {
            b.handle_timeout(t);
            while b.poll_output().is_some() {}
        }
    }
    eprintln!("engine mutation loop: {iters} iterations, {execs} handle_datagram calls");
}

/// The suites of the hybrid conversations: x25519 with additional key exchanges (RFC 9370).
/// `dh_only` keeps every round seeded (ECP-256, then X25519), so a fresh responder replaying
/// the initiator's side reaches IKE_AUTH; ML-KEM draws AWS-LC's own randomness, so a replay
/// of an ML-KEM round reaches its IKE_INTERMEDIATE but not the keys after it.
pub(crate) fn hybrid_suite(dh_only: bool) -> crate::config::IkeProposal {
    use crate::transform::{DhGroup, KeMethod};
    let mut s = crate::config::IkeProposal::AES256GCM_SHA256_X25519;
    if dh_only {
        s.addke.0[0] = Some(KeMethod::Dh(DhGroup::Ecp256));
        s.addke.0[1] = Some(KeMethod::Dh(DhGroup::Curve25519));
    } else {
        s.addke.0[0] = Some(KeMethod::MlKem768);
    }
    s
}

fn hybrid_pair(dh_only: bool) -> Pair {
    let mut a = peer(1, A_IP, B_IP, "secret");
    a.ike_proposals = vec![hybrid_suite(dh_only)];
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.ike_proposals = vec![hybrid_suite(dh_only)];
    Pair::new(a, b)
}

#[test]
fn mutated_hybrid_conversation_never_panics_responder() {
    use crate::wire::enums::ExchangeType;
    let iters: usize = std::env::var("IKE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for dh_only in [true, false] {
        let mut p = hybrid_pair(dh_only);
        p.connect();
        if dh_only {
            // An IKE SA rekey with the same seeded rounds: CREATE_CHILD_SA, then one
            // IKE_FOLLOWUP_KE per round (RFC 9370 §2.2.4), replayable to a fresh responder.
            let session = p.a.installs[0].session;
            p.command(Side::A, Command::RekeyIke { session });
            p.drive_for(Duration::from_secs(1));
        }
        let script: Vec<Transmit> = p.a.sent.clone();
        let mut cfg = peer(1, B_IP, A_IP, "secret");
        cfg.ike_proposals = vec![hybrid_suite(dh_only)];
        let config = Arc::new(endpoint_config(vec![cfg]));
        // Unmutated: the responder answers every IKE_INTERMEDIATE, and with seeded rounds
        // authenticates the initiator and installs the Child SA.
        let mut b = Endpoint::new(config.clone(), [2; 32]);
        let (mut installs, mut intermediate, mut followup) = (0, 0, 0);
        for t in &script {
            b.handle_datagram(
                p.start,
                Datagram {
                    local: t.remote,
                    remote: t.local,
                    bytes: &t.bytes,
                },
            );
            while let Some(o) = b.poll_output() {
                // A rekey's held-back outbound SA is a second output of the same Child SA.
                installs += usize::from(matches!(
                    o,
                    Output::InstallChildSa(ref i) if i.halves != Halves::OutboundLater
                ));
                if let Output::Transmit(t) = &o {
                    let ex = crate::wire::Message::decode(&t.bytes).map(|m| m.header.exchange);
                    intermediate += usize::from(ex == Ok(ExchangeType::IkeIntermediate));
                    followup += usize::from(ex == Ok(ExchangeType::IkeFollowupKe));
                }
            }
        }
        assert_eq!(intermediate, if dh_only { 2 } else { 1 });
        assert_eq!(installs, usize::from(dh_only), "dh_only={dh_only}");
        // The rekey's two rounds were answered, so mutations reach IKE_FOLLOWUP_KE too.
        assert_eq!(followup, if dh_only { 2 } else { 0 });
        let mut rng = ChaCha20Rng::from_seed([43; 32]);
        for i in 0..iters {
            let mut b = Endpoint::new(config.clone(), [2; 32]);
            let target = i % script.len();
            for (k, t) in script.iter().enumerate().take(target + 1) {
                let mut bytes = t.bytes.clone();
                if k == target {
                    crate::wire::tests::mutate(&mut rng, &mut bytes);
                }
                b.handle_datagram(
                    p.start,
                    Datagram {
                        local: t.remote,
                        remote: t.local,
                        bytes: &bytes,
                    },
                );
                while b.poll_output().is_some() {}
            }
        }
    }
}

/// Writes seed inputs for the cargo-fuzz targets: `IKE_FUZZ_SEED_DIR=fuzz/corpus cargo test
/// -p ike write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files; run by hand to refresh fuzz seeds"]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("IKE_FUZZ_SEED_DIR") else {
        return;
    };
    let mut p = Pair::default_pair();
    p.connect();
    let dir = std::path::Path::new(&dir);
    let _ = std::fs::create_dir_all(dir.join("message_decode"));
    let _ = std::fs::create_dir_all(dir.join("handle_datagram"));
    let _ = std::fs::create_dir_all(dir.join("isakmp_decode"));
    for (i, m) in crate::v1::tests::fuzz_seed_messages().iter().enumerate() {
        let _ = std::fs::write(dir.join("isakmp_decode").join(format!("seed{i}")), m);
    }
    // handle_datagram inputs start with the octet that picks its front door (0: default
    // limits, 1: cookies always).
    let mut conv = vec![0u8];
    for (i, t) in p.a.sent.iter().chain(p.b.sent.iter()).enumerate() {
        let _ = std::fs::write(
            dir.join("message_decode").join(format!("seed{i}")),
            &t.bytes,
        );
    }
    for t in &p.a.sent {
        conv.extend_from_slice(&(t.bytes.len() as u16).to_be_bytes());
        conv.extend_from_slice(&t.bytes);
    }
    let _ = std::fs::write(dir.join("handle_datagram").join("handshake"), &conv);
    conv[0] = 1;
    let _ = std::fs::write(dir.join("handle_datagram").join("handshake_cookies"), &conv);
    // Hybrid handshakes (IKE_INTERMEDIATE, RFC 9370 rounds): the fuzz target's responder has
    // these suites too.
    for (name, dh_only) in [
        ("handshake_addke_dh", true),
        ("handshake_addke_mlkem", false),
    ] {
        let mut h = hybrid_pair(dh_only);
        h.connect();
        let mut conv = vec![0u8];
        for (i, t) in h.a.sent.iter().chain(h.b.sent.iter()).enumerate() {
            let _ = std::fs::write(
                dir.join("message_decode").join(format!("{name}{i}")),
                &t.bytes,
            );
        }
        for t in &h.a.sent {
            conv.extend_from_slice(&(t.bytes.len() as u16).to_be_bytes());
            conv.extend_from_slice(&t.bytes);
        }
        let _ = std::fs::write(dir.join("handle_datagram").join(name), &conv);
    }
    if let Some(t) = p.a.sent.first() {
        for mode in [0u8, 1] {
            let seed = [&[mode][..], &t.bytes].concat();
            let _ = std::fs::write(
                dir.join("handle_datagram").join(format!("sa_init{mode}")),
                seed,
            );
        }
    }
}
