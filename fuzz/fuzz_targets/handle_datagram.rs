//! `Endpoint::handle_datagram` on a PSK responder must never panic, whatever arrives, and its
//! outputs must drain. The first input octet picks the front door: default limits, or one
//! that asks every IKE_SA_INIT for a COOKIE and blocks a source at two half-open SAs, so the
//! cookie scan and the admission book are fuzzed too.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Instant;

use ike::config::*;
use ike::endpoint::*;
use ike::secret::Secret;
use ike::transform::{AddKes, DhGroup, KeMethod};
use ike::wire::TrafficSelector;
use libfuzzer_sys::fuzz_target;

fn hybrid(rounds: &[KeMethod]) -> IkeProposal {
    let mut s = IkeProposal::AES256GCM_SHA256_X25519;
    for (i, m) in rounds.iter().enumerate() {
        s.addke.0[i] = Some(*m);
    }
    s
}

fn config(strict: bool) -> Arc<EndpointConfig> {
    static CONFIG: [OnceLock<Arc<EndpointConfig>>; 2] = [OnceLock::new(), OnceLock::new()];
    CONFIG[usize::from(strict)]
        .get_or_init(|| {
            let peer = PeerConfig {
                id: ConnId(1),
                name: "fuzz".into(),
                local: "192.0.2.2:500".parse().expect("addr"),
                remote: RemoteAddr::Any,
                local_id: None,
                remote_id: IdMatch::Any,
                auth: AuthConfig::Psk(Secret::from_slice(b"fuzz").into()),
                // Hybrid suites first (RFC 9370 additional key exchanges over IKE_INTERMEDIATE:
                // seeded DH rounds, and ML-KEM-768), as the seeds' initiators offer them.
                ike_proposals: vec![
                    hybrid(&[KeMethod::Dh(DhGroup::Ecp256), KeMethod::Dh(DhGroup::Curve25519)]),
                    hybrid(&[KeMethod::MlKem768]),
                    IkeProposal::AES256GCM_SHA256_X25519,
                    IkeProposal::AES128_SHA256_MODP2048,
                ],
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
                allow_legacy: true,
                mobike: true,
            };
            let limits = if strict {
                Limits {
                    cookie_threshold: 0,
                    half_open_limit_per_source: 2,
                    ..Limits::default()
                }
            } else {
                Limits::default()
            };
            Arc::new(EndpointConfig {
                peers: vec![peer],
                limits,
                ..EndpointConfig::default()
            })
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut ep = Endpoint::new(config(mode & 1 == 1), [3; 32]);
    let local: SocketAddr = "192.0.2.2:500".parse().expect("addr");
    let remote: SocketAddr = "192.0.2.1:500".parse().expect("addr");
    // The input may hold several datagrams separated by a 2-octet length.
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (d, tail) = rest[2..].split_at(len);
        ep.handle_datagram(
            now,
            Datagram {
                local,
                remote,
                bytes: d,
            },
        );
        rest = tail;
    }
    ep.handle_datagram(
        now,
        Datagram {
            local,
            remote,
            bytes: rest,
        },
    );
    while ep.poll_output().is_some() {}
    if let Some(t) = ep.poll_timeout() {
        ep.handle_timeout(t);
    }
});
