//! Benchmark (not a test): complete IKE_SA_INIT + IKE_AUTH handshakes (PSK, Curve25519,
//! AES-GCM-256, first Child SA) per second on one core, initiator and responder in the same
//! process with no IO, next to the cost of the Diffie-Hellman primitive itself (two X25519
//! key generations and two agreements per handshake), in one run. Then the same handshake
//! with an ML-KEM-768 additional key exchange (RFC 9370, one IKE_INTERMEDIATE) side by side,
//! with each primitive's share: X25519, ML-KEM keygen, encapsulation, decapsulation. All four
//! are measured in alternating rounds, so that a busy shared machine slows them alike.
//!
//!   cargo run --release -p ike --example bench_handshake [N]
//!
//! `bench_handshake profile N` runs only N classic handshakes and prints nothing: the input
//! for a profiler (`valgrind --tool=callgrind`, `perf record`) without the other figures'
//! work in the profile.

#[path = "../tests/support/handshake_pair.rs"]
mod handshake_pair;

use std::time::{Duration, Instant};

use handshake_pair::Ends;
use ike::crypto::KeyExchange;
use ike::crypto::kem;
use ike::transform::AddKes;
use ike::transform::DhGroup;
use ike::transform::KeMethod;
use ike::*;
use rand_core::SeedableRng;

/// One handshake between fresh endpoints; returns when both sides installed the Child SA.
fn handshake(seed: u64, now: Instant, ends: &Ends) -> Duration {
    let (mut a, mut b) = handshake_pair::pair(seed, ends);
    let t0 = Instant::now();
    handshake_pair::drive(&mut a, &mut b, now);
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

/// The ML-KEM-768 work one hybrid handshake adds (the initiator's key pair and
/// decapsulation, the responder's encapsulation), as (keygen, encapsulate, decapsulate).
fn mlkem_work(rng: &mut crypto::Rng, n: u64) -> [Duration; 3] {
    let mut t = [Duration::ZERO; 3];
    for _ in 0..n {
        let t0 = Instant::now();
        let i = kem::KeInitiator::generate(KeMethod::MlKem768, rng).unwrap();
        t[0] += t0.elapsed();
        let t0 = Instant::now();
        let (ct, _) = kem::respond(KeMethod::MlKem768, i.public(), rng).unwrap();
        t[1] += t0.elapsed();
        let t0 = Instant::now();
        i.finish(&ct).unwrap();
        t[2] += t0.elapsed();
    }
    t
}

fn per(t: Duration, n: u64) -> f64 {
    t.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("profile") {
        let n: u64 = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1000);
        let now = Instant::now();
        let ends = Ends::new(IkeProposal::AES256GCM_SHA256_X25519);
        for i in 0..n {
            handshake(i, now, &ends);
        }
        return;
    }
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let now = Instant::now();
    let classic = IkeProposal::AES256GCM_SHA256_X25519;
    let mut addke = AddKes::NONE;
    addke.0[0] = Some(KeMethod::MlKem768);
    let (classic, hybrid) = (
        Ends::new(classic),
        Ends::new(IkeProposal { addke, ..classic }),
    );
    for i in 0..50 {
        handshake(i, now, &classic); // warm-up
        handshake(i, now, &hybrid);
    }
    // Both handshakes and the primitives alternate in rounds, so that load from other
    // processes on a shared machine weighs on every figure alike rather than on whichever
    // ran during it.
    const ROUNDS: u64 = 20;
    let per_round = n.div_ceil(ROUNDS);
    let n = ROUNDS * per_round;
    let mut rng = crypto::Rng::seed_from_u64(7);
    let (mut t_classic, mut t_hybrid, mut t_dh) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut t_kem = [Duration::ZERO; 3];
    let mut shares = Vec::new();
    let mut seed = 1000;
    for _ in 0..ROUNDS {
        let (mut c, mut h) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..per_round {
            c += handshake(seed, now, &classic);
            h += handshake(seed, now, &hybrid);
            seed += 1;
        }
        let dh = x25519_work(&mut rng, per_round);
        for (total, k) in t_kem.iter_mut().zip(mlkem_work(&mut rng, per_round)) {
            *total += k;
        }
        shares.push(dh.as_secs_f64() / c.as_secs_f64());
        t_classic += c;
        t_hybrid += h;
        t_dh += dh;
    }
    shares.sort_by(f64::total_cmp);
    let (hs_c, hs_h, dh) = (per(t_classic, n), per(t_hybrid, n), per(t_dh, n));
    let [kg, en, de] = t_kem.map(|t| per(t, n));
    let share = |x: f64, hs: f64| 100.0 * x / hs;
    println!(
        "handshakes (IKE_SA_INIT [+ IKE_INTERMEDIATE] + IKE_AUTH + first Child SA, PSK, AES-GCM-256), {n} each:"
    );
    println!("                        x25519          x25519+ke1_mlkem768");
    println!("  us per handshake   {hs_c:>10.1}          {hs_h:>10.1}");
    println!(
        "  handshakes/s       {:>10.0}          {:>10.0}",
        1e6 / hs_c,
        1e6 / hs_h
    );
    println!(
        "  X25519 (2 keygen + 2 agree)  {dh:>7.1} us   {:>4.0}%               {:>4.0}%",
        share(dh, hs_c),
        share(dh, hs_h)
    );
    println!(
        "  ML-KEM-768 keygen            {kg:>7.1} us      -                {:>4.0}%",
        share(kg, hs_h)
    );
    println!(
        "  ML-KEM-768 encapsulate       {en:>7.1} us      -                {:>4.0}%",
        share(en, hs_h)
    );
    println!(
        "  ML-KEM-768 decapsulate       {de:>7.1} us      -                {:>4.0}%",
        share(de, hs_h)
    );
    println!(
        "  engine overhead (rest)       {:>7.1} us / {:.1} us",
        hs_c - dh,
        hs_h - dh - kg - en - de
    );
    println!(
        "  X25519 share of the classic handshake: {:.0}% (target >= 80%, issue 20); per round ({ROUNDS} of {per_round}): median {:.0}%, min {:.0}%, max {:.0}%",
        share(dh, hs_c),
        100.0 * shares[shares.len() / 2],
        100.0 * shares[0],
        100.0 * shares[shares.len() - 1]
    );
}
