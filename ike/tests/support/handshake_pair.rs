//! One in-memory IKEv2 handshake pair (PSK, one Child SA), shared by
//! `examples/bench_handshake.rs` and `tests/alloc_budget.rs` (included with `#[path]`), so
//! the allocation budget counts exactly the handshake the benchmark times.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ike::secret::Secret;
use ike::transform::AddKes;
use ike::wire::TrafficSelector;
use ike::*;

pub fn peer(local: [u8; 4], remote: [u8; 4], suite: IkeProposal) -> PeerConfig {
    let sa = |ip: [u8; 4]| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), 500);
    PeerConfig {
        id: ConnId(1),
        name: "bench".into(),
        local: sa(local),
        remote: RemoteAddr::Host(sa(remote)),
        local_id: None,
        remote_id: IdMatch::Any,
        auth: AuthConfig::Psk(Secret::from_slice(b"benchmark-pre-shared-key").into()),
        ike_proposals: vec![suite],
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

/// The two ends' configurations for one suite, built once and shared by every handshake of
/// the run, as a daemon's configuration outlives its handshakes (a PSK's key pad, RFC 7296
/// §2.15, is keyed once per configured key, not per handshake).
pub struct Ends {
    pub a: Arc<EndpointConfig>,
    pub b: Arc<EndpointConfig>,
}

impl Ends {
    pub fn new(suite: IkeProposal) -> Self {
        let cfg = |p| {
            Arc::new(EndpointConfig {
                peers: vec![p],
                ..Default::default()
            })
        };
        Self {
            a: cfg(peer([192, 0, 2, 1], [192, 0, 2, 2], suite)),
            b: cfg(peer([192, 0, 2, 2], [192, 0, 2, 1], suite)),
        }
    }
}

/// The two fresh endpoints of handshake `seed`.
pub fn pair(seed: u64, ends: &Ends) -> (Endpoint, Endpoint) {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    let a = Endpoint::new(ends.a.clone(), s);
    s[8] = 1;
    (a, Endpoint::new(ends.b.clone(), s))
}

/// `a` initiates; returns once both sides installed the Child SA (panics if they do not).
pub fn drive(a: &mut Endpoint, b: &mut Endpoint, now: Instant) {
    a.handle_command(now, Command::Initiate { conn: ConnId(1) });
    let mut installed = 0;
    for _ in 0..16 {
        let mut moved = false;
        for a_sends in [true, false] {
            let (from, to) = if a_sends {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
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
}
