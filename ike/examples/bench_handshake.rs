//! Benchmark (not a test): complete IKE_SA_INIT + IKE_AUTH handshakes (PSK, Curve25519,
//! AES-GCM-256, first Child SA) per second on one core, initiator and responder in the same
//! process with no IO, next to the cost of the Diffie-Hellman primitive itself (two X25519
//! key generations and two agreements per handshake), in one run. The two are measured in
//! alternating rounds, so that a busy shared machine slows both alike.
//!
//!   cargo run --release -p ike --example bench_handshake [N]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ike::crypto::KeyExchange;
use ike::secret::Secret;
use ike::transform::DhGroup;
use ike::wire::TrafficSelector;
use ike::*;
use rand_core::SeedableRng;

fn peer(local: [u8; 4], remote: [u8; 4]) -> PeerConfig {
    let sa = |ip: [u8; 4]| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), 500);
    PeerConfig {
        id: ConnId(1),
        name: "bench".into(),
        local: sa(local),
        remote: RemoteAddr::Host(sa(remote)),
        local_id: None,
        remote_id: IdMatch::Any,
        auth: AuthConfig::Psk(Secret::from_slice(b"benchmark-pre-shared-key")),
        ike_proposals: vec![IkeProposal::AES256GCM_SHA256_X25519],
        ike_lifetime: Lifetime::IKE_DEFAULT,
        child: ChildConfig {
            esp_proposals: vec![EspProposal::AES256GCM],
            pfs: None,
            local_ts: vec![TrafficSelector::any(false)],
            remote_ts: vec![TrafficSelector::any(false)],
            mode: Mode::Tunnel,
            lifetime: Lifetime::CHILD_DEFAULT,
            lifetime_bytes: None,
        },
        more_children: Vec::new(),
        dpd: None,
        allow_legacy: false,
        mobike: false,
    }
}

/// One handshake between fresh endpoints; returns when both sides installed the Child SA.
fn handshake(seed: u64, now: Instant) -> Duration {
    let cfg = |p| {
        Arc::new(EndpointConfig {
            peers: vec![p],
            ..Default::default()
        })
    };
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    let mut a = Endpoint::new(cfg(peer([192, 0, 2, 1], [192, 0, 2, 2])), s);
    s[8] = 1;
    let mut b = Endpoint::new(cfg(peer([192, 0, 2, 2], [192, 0, 2, 1])), s);
    let t0 = Instant::now();
    a.handle_command(now, Command::Initiate { conn: ConnId(1) });
    let mut installed = 0;
    for _ in 0..16 {
        let mut moved = false;
        for a_sends in [true, false] {
            let (from, to) = if a_sends {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let mut tx = Vec::new();
            while let Some(o) = from.poll_output() {
                match o {
                    Output::Transmit(t) => tx.push(t),
                    Output::InstallChildSa(i) => {
                        installed += 1;
                        from.handle_install_result(now, i.child, Ok(()));
                    }
                    _ => {}
                }
            }
            for t in tx {
                moved = true;
                to.handle_datagram(
                    now,
                    Datagram {
                        local: t.remote,
                        remote: t.local,
                        bytes: &t.bytes,
                    },
                );
            }
        }
        if !moved {
            break;
        }
    }
    assert_eq!(installed, 2, "handshake did not complete");
    t0.elapsed()
}

/// The X25519 work one handshake needs: each side generates a key pair and computes the
/// shared secret once. Returns the time of `n` such sets.
fn x25519_work(rng: &mut crypto::Rng, n: u64) -> Duration {
    let t0 = Instant::now();
    for _ in 0..n {
        let x = KeyExchange::generate(DhGroup::Curve25519, rng).unwrap();
        let y = KeyExchange::generate(DhGroup::Curve25519, rng).unwrap();
        let (px, py) = (x.public().to_vec(), y.public().to_vec());
        x.agree(&py).unwrap();
        y.agree(&px).unwrap();
    }
    t0.elapsed()
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let now = Instant::now();
    for i in 0..50 {
        handshake(i, now); // warm-up
    }
    // Handshakes and the X25519 work alternate in rounds, so that load from other processes
    // on a shared machine weighs on both figures alike rather than on whichever ran during it.
    const ROUNDS: u64 = 20;
    let per_round = n.div_ceil(ROUNDS);
    let mut rng = crypto::Rng::seed_from_u64(7);
    let (mut hs_total, mut dh_total) = (Duration::ZERO, Duration::ZERO);
    let mut shares = Vec::new();
    let mut seed = 1000;
    for _ in 0..ROUNDS {
        let mut hs = Duration::ZERO;
        for _ in 0..per_round {
            hs += handshake(seed, now);
            seed += 1;
        }
        let dh = x25519_work(&mut rng, per_round);
        shares.push(dh.as_secs_f64() / hs.as_secs_f64());
        hs_total += hs;
        dh_total += dh;
    }
    let count = (ROUNDS * per_round) as u32;
    let per_hs = hs_total / count;
    let per_dh = dh_total / count;
    shares.sort_by(f64::total_cmp);
    println!("handshakes (IKE_SA_INIT + IKE_AUTH + first Child SA, PSK, X25519, AES-GCM-256):");
    println!(
        "  engine:      {:>8.1} us per handshake  {:>8.0} handshakes/s",
        per_hs.as_secs_f64() * 1e6,
        1.0 / per_hs.as_secs_f64()
    );
    println!(
        "  X25519 only: {:>8.1} us per handshake  (2 keygen + 2 agree; the physical limit)",
        per_dh.as_secs_f64() * 1e6
    );
    println!(
        "  DH share of handshake time: {:.0}% (target >= 80%); engine overhead {:.1} us",
        100.0 * per_dh.as_secs_f64() / per_hs.as_secs_f64(),
        (per_hs.as_secs_f64() - per_dh.as_secs_f64()) * 1e6
    );
    println!(
        "  DH share per round ({ROUNDS} rounds of {per_round}): median {:.0}%, min {:.0}%, max {:.0}%",
        100.0 * shares[shares.len() / 2],
        100.0 * shares[0],
        100.0 * shares[shares.len() - 1]
    );
}
