//! `ike::v1::Endpoint::handle_datagram` on a PSK responder must never panic, whatever
//! arrives, and its outputs must drain. Its profile and seed are those of the `ike` IKEv1
//! test pair's responder, so the seeds (a recorded initiator's datagrams, fragmented and
//! through a NAT) reach main mode's later states, NAT-T's float, quick mode and the
//! fragment reassembly.
//!
//! Input: a first octet (bit 0: the initiator is behind a NAT, so it appears as another
//! address and ports), then records of one octet (odd: the datagram arrives on port 4500),
//! a 2-octet length, and the datagram.
#![no_main]

use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use std::time::Instant;

use ike::Datagram;
use ike::config::*;
use ike::secret::Secret;
use ike::transform::{AddKes, DhGroup, Encr, Esn, Integ};
use ike::v1::config::*;
use ike::v1::keys::HashAlg;
use ike::wire::TrafficSelector;
use libfuzzer_sys::fuzz_target;

const A_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn config() -> Arc<V1Config> {
    static CONFIG: OnceLock<Arc<V1Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let net = |o: u8| TrafficSelector::prefix(IpAddr::V4(Ipv4Addr::new(10, o, 0, 0)), 16);
            let peer = V1Peer {
                id: ConnId(1),
                name: "v1".into(),
                local: SocketAddr::new(IpAddr::V4(B_IP), 500),
                remote: RemoteAddr::Any,
                local_id: None,
                remote_id: IdMatch::Any,
                psk: Secret::from_slice(b"secret"),
                policies: vec![IsakmpPolicy {
                    priority: 10,
                    encr: Encr::AesCbc { key_bits: 256 },
                    hash: HashAlg::Sha256,
                    auth: AuthMethod::PreShared,
                    group: DhGroup::Modp2048,
                    lifetime: Duration::from_secs(86_400),
                }],
                child: ChildConfig {
                    esp_proposals: vec![EspProposal {
                        encr: Encr::AesCbc { key_bits: 256 },
                        integ: Some(Integ::HmacSha256_128),
                        esn: Esn::No,
                    }],
                    pfs: None,
                    pfs_addke: AddKes::NONE,
                    local_ts: vec![net(2)],
                    remote_ts: vec![net(1)],
                    mode: Mode::Tunnel,
                    lifetime: Lifetime::CHILD_DEFAULT,
                    lifetime_bytes: None,
                },
                dpd: Some(Dpd {
                    interval: Duration::from_secs(10),
                    retries: 3,
                }),
                allow_legacy: false,
                more_children: Vec::new(),
                cert: None,
                // Aggressive mode is answered too, so mutations reach its responder.
                aggressive: true,
            };
            Arc::new(V1Config {
                peers: vec![peer],
                ..V1Config::default()
            })
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let nat = mode & 1 == 1;
    let now = Instant::now();
    // The test pair's responder seed: recorded conversations stay valid past MM2.
    let mut ep = ike::v1::Endpoint::new(config(), [2; 32]);
    while rest.len() >= 3 {
        let port = if rest[0] & 1 == 1 { 4500 } else { 500 };
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let (d, tail) = rest[3..].split_at(len);
        let remote = if nat {
            SocketAddr::new(IpAddr::V4(NAT_PUBLIC), port + 30000)
        } else {
            SocketAddr::new(IpAddr::V4(A_IP), port)
        };
        ep.handle_datagram(
            now,
            Datagram {
                local: SocketAddr::new(IpAddr::V4(B_IP), port),
                remote,
                bytes: d,
            },
        );
        while ep.poll_output().is_some() {}
        rest = tail;
    }
    if let Some(t) = ep.poll_timeout() {
        ep.handle_timeout(t);
    }
    while ep.poll_output().is_some() {}
});
