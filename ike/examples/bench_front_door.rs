//! Benchmark (not a test): what one core of the responder's engine does with a flood of
//! IKE_SA_INIT requests, per kind of answer, in one run and side by side: requests that get
//! state (a full X25519 key exchange and the response), requests answered with a COOKIE
//! (above the cookie threshold: no state, RFC 7296 §2.6), requests dropped by a limit
//! (per-source half-open limit), datagrams for an unknown SPI, and forged retransmissions
//! of a half-open SA's request (compared, not answered). No IO: the engine alone, with
//! requests made beforehand by real initiator engines at distinct addresses.
//!
//!   cargo run --release -p ike --example bench_front_door [N]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ike::secret::Secret;
use ike::transform::AddKes;
use ike::wire::TrafficSelector;
use ike::*;

const HUB: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn sa(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), 500)
}

fn peer(local: Ipv4Addr, remote: RemoteAddr) -> PeerConfig {
    PeerConfig {
        id: ConnId(1),
        name: "bench".into(),
        local: sa(local),
        remote,
        local_id: None,
        remote_id: IdMatch::Any,
        auth: AuthConfig::Psk(Secret::from_slice(b"benchmark-pre-shared-key").into()),
        ike_proposals: vec![IkeProposal::AES256GCM_SHA256_X25519],
        ike_lifetime: Lifetime::IKE_DEFAULT,
        child: ChildConfig {
            esp_proposals: vec![EspProposal::AES256GCM],
            pfs: None,
            pfs_addke: AddKes::NONE,
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

fn hub(limits: Limits) -> Endpoint {
    let config = EndpointConfig {
        peers: vec![peer(HUB, RemoteAddr::Any)],
        limits,
        ..EndpointConfig::default()
    };
    Endpoint::new(Arc::new(config), [9; 32])
}

/// `n` IKE_SA_INIT requests, each from its own initiator at its own address.
fn requests(n: usize, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a00_0000 + i as u32);
            let config = EndpointConfig {
                peers: vec![peer(ip, RemoteAddr::Host(sa(HUB)))],
                ..EndpointConfig::default()
            };
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut ep = Endpoint::new(Arc::new(config), seed);
            ep.handle_command(now, Command::Initiate { conn: ConnId(1) });
            loop {
                match ep.poll_output() {
                    Some(Output::Transmit(t)) => return (sa(ip), t.bytes),
                    Some(_) => {}
                    None => panic!("initiator sent nothing"),
                }
            }
        })
        .collect()
}

/// Feeds `reqs` to `ep` (from `from`, or each request's own address) and returns the rate
/// and how many datagrams the engine sent back.
fn run(
    ep: &mut Endpoint,
    reqs: &[(SocketAddr, Vec<u8>)],
    from: Option<SocketAddr>,
    now: Instant,
) -> (f64, usize) {
    let mut answers = 0;
    let t = Instant::now();
    for (addr, bytes) in reqs {
        ep.handle_datagram(
            now,
            Datagram {
                local: sa(HUB),
                remote: from.unwrap_or(*addr),
                bytes,
            },
        );
        while let Some(o) = ep.poll_output() {
            answers += usize::from(matches!(o, Output::Transmit(_)));
        }
    }
    (reqs.len() as f64 / t.elapsed().as_secs_f64(), answers)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4000);
    let now = Instant::now();
    let reqs = requests(n, now);
    let open = Limits {
        cookie_threshold: usize::MAX,
        cookie_threshold_per_source: usize::MAX,
        half_open_limit: usize::MAX,
        half_open_limit_per_source: usize::MAX,
        ..Limits::default()
    };

    let mut stateful = hub(open);
    let (state_rate, state_answers) = run(&mut stateful, &reqs, None, now);
    assert_eq!(stateful.half_open_count(), n);

    let mut cookies = hub(Limits {
        cookie_threshold: 0,
        ..open
    });
    let (cookie_rate, cookie_answers) = run(&mut cookies, &reqs, None, now);
    assert_eq!(cookies.ike_sa_count(), 0);

    // One source past its half-open limit: every request is dropped before decoding.
    let mut blocked = hub(Limits {
        half_open_limit_per_source: 1,
        ..open
    });
    let (_, _) = run(&mut blocked, &reqs[..1], None, now);
    let (block_rate, block_answers) = run(&mut blocked, &reqs[1..], Some(reqs[0].0), now);

    // IKE_AUTH-like datagrams for SPIs the hub never made.
    let unknown: Vec<(SocketAddr, Vec<u8>)> = reqs
        .iter()
        .map(|(a, b)| {
            let mut b = b.clone();
            b[8..16].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
            b[18] = 35;
            (*a, b)
        })
        .collect();
    let (unknown_rate, unknown_answers) = run(&mut stateful, &unknown, None, now);

    // Forged retransmissions: each half-open SA's request with its last octet changed.
    let forged: Vec<(SocketAddr, Vec<u8>)> = reqs
        .iter()
        .map(|(a, b)| {
            let mut b = b.clone();
            *b.last_mut().expect("bytes") ^= 1;
            (*a, b)
        })
        .collect();
    let (forged_rate, forged_answers) = run(&mut stateful, &forged, None, now);

    let r = |x: f64| format!("{:>10.0}/s", x);
    println!("responder engine, one core, {n} IKE_SA_INIT requests from {n} addresses");
    println!(
        "{:<44} {:>12} {:>9} {:>9}",
        "input", "rate", "answers", "vs state"
    );
    for (what, rate, answers) in [
        (
            "new SA: X25519 + response (state kept)",
            state_rate,
            state_answers,
        ),
        (
            "above cookie threshold: COOKIE, no state",
            cookie_rate,
            cookie_answers,
        ),
        (
            "source past its half-open limit: dropped",
            block_rate,
            block_answers,
        ),
        ("unknown SPI: dropped", unknown_rate, unknown_answers),
        (
            "forged retransmission: compared, dropped",
            forged_rate,
            forged_answers,
        ),
    ] {
        println!(
            "{what:<44} {} {answers:>9} {:>8.1}x",
            r(rate),
            rate / state_rate
        );
    }
}
