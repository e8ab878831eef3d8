//! Benchmark (not a test): IKEv1 main mode + quick mode handshakes (pre-shared keys,
//! AES-256-CBC, SHA-256, first Child SA pair installed on both ends) per second on one core,
//! beside the IKEv2 handshake (IKE_SA_INIT + IKE_AUTH with the first Child SA) with the same
//! algorithms and group, and beside the Diffie-Hellman work each needs (two key pairs and two
//! agreements), in one run. IKEv1 has no Curve25519 (its group registry, RFC 2409 Appendix A
//! and RFC 5903, stops before it), so the groups compared are 19 (ECP-256) and 14
//! (MODP-2048). The four handshakes and the primitives alternate in rounds, so that load from
//! other processes on a shared machine weighs on all of them alike.
//!
//!   cargo run --release -p ike --example bench_ikev1 [N]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ike::crypto::KeyExchange;
use ike::secret::Secret;
use ike::transform::AddKes;
use ike::transform::DhGroup;
use ike::transform::Encr;
use ike::transform::Integ;
use ike::transform::Prf;
use ike::v1::keys::HashAlg;
use ike::wire::TrafficSelector;
use ike::*;
use rand_core::SeedableRng;

fn sa(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), 500)
}

const PSK: &[u8] = b"benchmark-pre-shared-key";

fn child() -> ChildConfig {
    ChildConfig {
        esp_proposals: vec![EspProposal {
            encr: Encr::AesCbc { key_bits: 256 },
            integ: Some(Integ::HmacSha256_128),
            esn: transform::Esn::No,
        }],
        pfs: None,
        pfs_addke: AddKes::NONE,
        local_ts: vec![TrafficSelector::any(false)],
        remote_ts: vec![TrafficSelector::any(false)],
        mode: Mode::Tunnel,
        lifetime: Lifetime::CHILD_DEFAULT,
        lifetime_bytes: None,
    }
}

fn v2_endpoint(local: [u8; 4], remote: [u8; 4], dh: DhGroup, seed: [u8; 32]) -> Endpoint {
    let peer = PeerConfig {
        id: ConnId(1),
        name: "bench".into(),
        local: sa(local),
        remote: RemoteAddr::Host(sa(remote)),
        local_id: None,
        remote_id: IdMatch::Any,
        auth: AuthConfig::Psk(Secret::from_slice(PSK).into()),
        ike_proposals: vec![IkeProposal {
            encr: Encr::AesCbc { key_bits: 256 },
            prf: Prf::HmacSha256,
            integ: Some(Integ::HmacSha256_128),
            dh,
            addke: AddKes::NONE,
        }],
        ike_lifetime: Lifetime::IKE_DEFAULT,
        child: child(),
        more_children: Vec::new(),
        dpd: None,
        allow_legacy: false,
        mobike: false,
    };
    let cfg = EndpointConfig {
        peers: vec![peer],
        ..Default::default()
    };
    Endpoint::new(Arc::new(cfg), seed)
}

fn v1_endpoint(local: [u8; 4], remote: [u8; 4], group: DhGroup, seed: [u8; 32]) -> v1::Endpoint {
    let peer = v1::V1Peer {
        id: ConnId(1),
        name: "bench".into(),
        local: sa(local),
        remote: RemoteAddr::Host(sa(remote)),
        local_id: None,
        remote_id: IdMatch::Any,
        psk: Secret::from_slice(PSK),
        policies: vec![v1::IsakmpPolicy {
            priority: 10,
            encr: Encr::AesCbc { key_bits: 256 },
            hash: HashAlg::Sha256,
            auth: v1::AuthMethod::PreShared,
            group,
            lifetime: Duration::from_secs(86_400),
        }],
        child: child(),
        more_children: Vec::new(),
        dpd: None,
        allow_legacy: false,
        cert: None,
        aggressive: false,
    };
    let cfg = v1::V1Config {
        peers: vec![peer],
        ..Default::default()
    };
    v1::Endpoint::new(Arc::new(cfg), seed)
}

/// What both engines offer the pump: their shared input and output shapes.
trait Engine {
    fn input(&mut self, now: Instant, d: Datagram<'_>);
    fn output(&mut self) -> Option<Output>;
    fn installed(&mut self, now: Instant, child: ChildSaId);
}

impl Engine for Endpoint {
    fn input(&mut self, now: Instant, d: Datagram<'_>) {
        self.handle_datagram(now, d);
    }
    fn output(&mut self) -> Option<Output> {
        self.poll_output()
    }
    fn installed(&mut self, now: Instant, child: ChildSaId) {
        self.handle_install_result(now, child, Ok(()));
    }
}

impl Engine for v1::Endpoint {
    fn input(&mut self, now: Instant, d: Datagram<'_>) {
        self.handle_datagram(now, d);
    }
    fn output(&mut self) -> Option<Output> {
        self.poll_output()
    }
    fn installed(&mut self, now: Instant, child: ChildSaId) {
        self.handle_install_result(now, child, Ok(()));
    }
}

/// Moves datagrams between the two until both installed their Child SA pair.
fn pump(a: &mut dyn Engine, b: &mut dyn Engine, now: Instant) {
    let mut installed = 0;
    for _ in 0..16 {
        let mut moved = false;
        for a_sends in [true, false] {
            let (from, to): (&mut dyn Engine, &mut dyn Engine) = if a_sends {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            let mut tx = Vec::new();
            while let Some(o) = from.output() {
                match o {
                    Output::Transmit(t) => tx.push(t),
                    Output::InstallChildSa(i) => {
                        installed += 1;
                        from.installed(now, i.child);
                    }
                    _ => {}
                }
            }
            for t in tx {
                moved = true;
                to.input(
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
}

fn seeds(seed: u64) -> ([u8; 32], [u8; 32]) {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    let mut t = s;
    t[8] = 1;
    (s, t)
}

const A: [u8; 4] = [192, 0, 2, 1];
const B: [u8; 4] = [192, 0, 2, 2];

/// One IKEv1 main mode + quick mode between fresh engines.
fn ikev1(seed: u64, now: Instant, group: DhGroup) -> Duration {
    let (s, t) = seeds(seed);
    let mut a = v1_endpoint(A, B, group, s);
    let mut b = v1_endpoint(B, A, group, t);
    let t0 = Instant::now();
    a.handle_command(now, v1::Command::Initiate { conn: ConnId(1) });
    pump(&mut a, &mut b, now);
    t0.elapsed()
}

/// One IKEv2 IKE_SA_INIT + IKE_AUTH between fresh engines.
fn ikev2(seed: u64, now: Instant, group: DhGroup) -> Duration {
    let (s, t) = seeds(seed);
    let mut a = v2_endpoint(A, B, group, s);
    let mut b = v2_endpoint(B, A, group, t);
    let t0 = Instant::now();
    a.handle_command(now, Command::Initiate { conn: ConnId(1) });
    pump(&mut a, &mut b, now);
    t0.elapsed()
}

/// The DH work one handshake needs: each side makes a key pair and agrees once.
fn dh_work(rng: &mut crypto::Rng, group: DhGroup, n: u64) -> Duration {
    let t0 = Instant::now();
    for _ in 0..n {
        let x = KeyExchange::generate(group, rng).unwrap();
        let y = KeyExchange::generate(group, rng).unwrap();
        let (px, py) = (x.public().to_vec(), y.public().to_vec());
        x.agree(&py).unwrap();
        y.agree(&px).unwrap();
    }
    t0.elapsed()
}

fn per(t: Duration, n: u64) -> f64 {
    t.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let now = Instant::now();
    let groups = [
        (DhGroup::Ecp256, "19 (ECP-256)"),
        (DhGroup::Modp2048, "14 (MODP-2048)"),
    ];
    for i in 0..20 {
        for (g, _) in groups {
            ikev1(i, now, g); // warm-up
            ikev2(i, now, g);
        }
    }
    const ROUNDS: u64 = 10;
    let per_round = n.div_ceil(ROUNDS);
    let n = ROUNDS * per_round;
    let mut rng = crypto::Rng::seed_from_u64(7);
    // [group][v1, v2, dh]
    let mut t = [[Duration::ZERO; 3]; 2];
    let mut seed = 1000;
    for _ in 0..ROUNDS {
        for (gi, (g, _)) in groups.iter().enumerate() {
            for _ in 0..per_round {
                t[gi][0] += ikev1(seed, now, *g);
                t[gi][1] += ikev2(seed, now, *g);
                seed += 1;
            }
            t[gi][2] += dh_work(&mut rng, *g, per_round);
        }
    }
    println!(
        "handshakes to the first Child SA pair, PSK, AES-256-CBC + SHA-256 (IKE and ESP), {n} each:"
    );
    println!(
        "  IKEv1 = main mode (6 messages) + quick mode (3); IKEv2 = IKE_SA_INIT + IKE_AUTH (4)"
    );
    println!(
        "  {:<16} {:>14} {:>14} {:>9} {:>14} {:>12} {:>12}",
        "group", "IKEv1 us", "IKEv2 us", "v1/v2", "DH us (2+2)", "DH % of v1", "DH % of v2"
    );
    for (gi, (_, name)) in groups.iter().enumerate() {
        let [v1, v2, dh] = t[gi].map(|x| per(x, n));
        println!(
            "  {name:<16} {v1:>14.1} {v2:>14.1} {:>8.2}x {dh:>14.1} {:>11.0}% {:>11.0}%",
            v1 / v2,
            100.0 * dh / v1,
            100.0 * dh / v2
        );
    }
    for (gi, (_, name)) in groups.iter().enumerate() {
        let [v1, v2, _] = t[gi].map(|x| per(x, n));
        println!(
            "  handshakes/s, group {name}: IKEv1 {:.0}, IKEv2 {:.0}",
            1e6 / v1,
            1e6 / v2
        );
    }
}
