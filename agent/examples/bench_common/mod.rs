//! What the two hub benchmarks (`bench_dvti_hub`, `bench_ike_flood`) share: the addresses of
//! the hub and of the load generator's spokes, the spokes' engine configuration, and
//! percentiles. Included by each with `#[path]` (a folder under `examples/` is no example).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ike::secret::Secret;
use ike::wire::TrafficSelector;
use ike::{
    ChildConfig, ConnId, EndpointConfig, EspProposal, IdMatch, IkeProposal, Lifetime, Mode,
    PeerConfig, RemoteAddr, RetransmitConfig,
};

/// The hub's underlay address.
pub const HUB_UNDERLAY: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
/// The hub's LAN address, every spoke's remote traffic selector.
pub const HUB_LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Spoke `i`'s underlay address (172.16.1.0 + i).
pub fn spoke_underlay(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xac10_0100 + i as u32)
}

/// Spoke `i`'s inside address (10.128.0.1 + i), its local traffic selector.
pub fn spoke_inside(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0001 + i as u32)
}

/// Spoke `i` as an in-process `ike` engine: PSK `psk` under its address identity, TSi its
/// inside /32, TSr the hub's LAN /32, AES-GCM-256 with X25519, retransmitting on `retransmit`.
pub fn spoke_config(i: usize, psk: &str, retransmit: RetransmitConfig) -> Arc<EndpointConfig> {
    Arc::new(EndpointConfig {
        peers: vec![PeerConfig {
            id: ConnId(1),
            name: format!("spoke{i}"),
            local: SocketAddr::new(IpAddr::V4(spoke_underlay(i)), 500),
            remote: RemoteAddr::Host(SocketAddr::new(IpAddr::V4(HUB_UNDERLAY), 500)),
            local_id: None,
            remote_id: IdMatch::Any,
            auth: ike::AuthConfig::Psk(Secret::from_slice(psk.as_bytes()).into()),
            ike_proposals: vec![IkeProposal::AES256GCM_SHA256_X25519],
            ike_lifetime: Lifetime::IKE_DEFAULT,
            child: ChildConfig {
                esp_proposals: vec![EspProposal::AES256GCM],
                pfs: None,
                pfs_addke: ike::transform::AddKes::NONE,
                local_ts: vec![TrafficSelector::prefix(IpAddr::V4(spoke_inside(i)), 32)],
                remote_ts: vec![TrafficSelector::prefix(IpAddr::V4(HUB_LAN), 32)],
                mode: Mode::Tunnel,
                lifetime: Lifetime::CHILD_DEFAULT,
                lifetime_bytes: None,
            },
            more_children: Vec::new(),
            dpd: None,
            allow_legacy: false,
            mobike: false,
        }],
        retransmit,
        ..Default::default()
    })
}

/// The `p`th percentile of `v` (nearest rank), `None` for no samples.
pub fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let k = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    Some(s[k])
}
