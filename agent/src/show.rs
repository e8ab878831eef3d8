//! `vtid show tunnels|sessions|sa` as JSON (the CLI prints tables from it, metrics are
//! derived from it). Pure rendering of what the runtime hands over: the plan, the live
//! books, and what the kernel said about each SA.

use std::collections::BTreeMap;
use std::time::Instant;

use ike::transform::{Encr, Integ};
use serde_json::{Value, json};

use crate::offload;
use crate::plan::TunnelPlan;
use crate::sessions::{ChildInfo, Sessions};
use crate::virtual_access::{VirtualAccess, identity_string};

/// A static tunnel's states, as `show interface` has them: administrative (`vtid down`) and
/// line protocol (a Child SA installed).
pub struct TunnelStatus<'a> {
    /// Not taken down by `vtid down`.
    pub admin_up: bool,
    /// A Child SA is installed (its routes are in the table).
    pub line_up: bool,
    /// Why the line last changed.
    pub why: Option<&'a str>,
    /// Seconds since it changed.
    pub since_secs: Option<u64>,
    /// What the tunnel waits for, when nothing will start it by itself.
    pub waiting: Option<&'a str>,
}

/// One static tunnel, with the reason when it is held down.
pub fn tunnel(t: &TunnelPlan, s: &TunnelStatus<'_>, offload: &offload::Tunnels) -> Value {
    let up_down = |up: bool| if up { "up" } else { "down" };
    json!({
        "name": t.name,
        "mode": t.mode.as_str(),
        "if_id": t.if_id,
        "local": t.local.to_string(),
        "remote": t.remote.to_string(),
        "address": t.inner.to_string(),
        "routes": t.routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "mtu": t.mtu,
        "state": up_down(s.line_up),
        "admin": up_down(s.admin_up),
        "line": up_down(s.line_up),
        "line_reason": s.why,
        "line_changed_secs": s.since_secs,
        "waiting": s.waiting,
        "dpd_action": t.dpd_action.as_str(),
        "initiate": t.initiate,
        "reason": offload.refused(&t.name),
        "offload": offload.show(&t.name),
        "vrf": t.vrf.as_ref().map(|v| &v.name),
        "fvrf": t.fvrf.as_ref().map(|v| &v.name),
    })
}

/// A static tunnel that waits for an address on its `source` or `unnumbered` interface: it has
/// no device, no session and no local address yet.
pub fn waiting_tunnel(name: &str, t: &crate::config::Tunnel, why: &str) -> Value {
    json!({
        "name": name,
        "mode": match t.mode { crate::config::TunnelMode::Xfrmi => "xfrmi", crate::config::TunnelMode::Vti => "vti", crate::config::TunnelMode::Gre => "gre", crate::config::TunnelMode::Mgre => "mgre" },
        "local": null,
        "remote": t.destination.to_string(),
        "routes": t.routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "state": "down",
        "admin": "up",
        "line": "down",
        "line_reason": "waiting for an address",
        "waiting": why,
        "initiate": t.initiate,
    })
}

/// One virtual-access clone, with the routes its Child SAs added.
pub fn clone(
    c: &VirtualAccess,
    sessions: &Sessions,
    offload: &offload::Tunnels,
    now: Instant,
) -> Value {
    let kids: Vec<&ChildInfo> = sessions.of_clone(c.slot).map(|(_, k)| k).collect();
    let routes: std::collections::BTreeSet<String> = c
        .fixed_routes
        .iter()
        .chain(kids.iter().flat_map(|k| &k.routes))
        .map(|r| r.to_string())
        .collect();
    json!({
        "name": c.tunnel.name,
        "mode": if c.multipoint { "spoke" } else { "xfrmi" },
        // The device its traffic goes through: its own, or a multipoint template's shared one.
        "interface": c.interface.name,
        "dynamic": true,
        "template": c.template,
        "if_id": c.tunnel.if_id,
        "local": c.tunnel.local.to_string(),
        "remote": c.tunnel.remote.to_string(),
        "peer_id": identity_string(&c.peer_id),
        "address": c.tunnel.inner.to_string(),
        "routes": routes,
        "mtu": c.tunnel.mtu,
        "sessions": c.sessions.len(),
        "child_sas": kids.len(),
        "uptime_secs": now.duration_since(c.created).as_secs(),
        "state": if kids.is_empty() { "down" } else { "up" },
        "offload": offload.show(&c.tunnel.name),
        "reason": offload.refused(&c.tunnel.name),
    })
}

/// One IKE SA, with its tunnel (static or clone) when it has one.
pub fn session(s: &ike::IkeSaInfo, tunnel: Option<&str>, uptime_secs: Option<u64>) -> Value {
    json!({
        "tunnel": tunnel,
        "interface": tunnel,
        "peer": s.remote.ip().to_string(),
        "peer_id": s.peer_id.as_ref().map(|i| format!("{i:?}")),
        "state": s.state,
        "initiator": s.initiator,
        "local": s.local.to_string(),
        "remote": s.remote.to_string(),
        "nat": s.nat,
        "uptime_secs": uptime_secs,
        "spi_i": format!("{:016x}", s.spi_i),
        "spi_r": format!("{:016x}", s.spi_r),
        "child_sas": s.children.len(),
        "version": 2,
    })
}

/// IOS's ISAKMP SA state (`show crypto isakmp sa`) for the IKEv1 engine's state: the
/// state names main mode's progress by the last message exchanged, and an established
/// ISAKMP SA is QM_IDLE (ready for quick mode) whether or not one runs.
pub fn isakmp_state(state: &str) -> &'static str {
    match state {
        // Initiator: MM1 sent.
        "ExpectMainMode2" => "MM_NO_STATE",
        // MM2 sent (responder) or received and MM3 sent (initiator).
        "ExpectMainMode3" | "ExpectMainMode4" => "MM_SA_SETUP",
        // MM4 sent (responder), or MM5 sent (initiator).
        "ExpectMainMode5" | "ExpectMainMode6" => "MM_KEY_EXCH",
        // Aggressive mode: AM1 sent (initiator) or AM2 sent (responder).
        "ExpectAggressive2" | "ExpectAggressive3" => "AG_INIT_EXCH",
        "Established" => "QM_IDLE",
        _ => "MM_NO_STATE",
    }
}

/// One IKEv1 session of `show sessions`: its state as IOS's `show crypto isakmp sa` names
/// it (MM_NO_STATE ... QM_IDLE), the cookies in place of SPIs.
pub fn v1_session(s: &ike::v1::V1SaInfo, tunnel: Option<&str>, uptime_secs: Option<u64>) -> Value {
    json!({
        "tunnel": tunnel,
        "interface": tunnel,
        "peer": s.remote.ip().to_string(),
        "peer_id": s.peer_id.as_ref().map(|i| format!("{i:?}")),
        "state": isakmp_state(s.state),
        "initiator": s.initiator,
        "local": s.local.to_string(),
        "remote": s.remote.to_string(),
        "nat": false,
        "uptime_secs": uptime_secs,
        "spi_i": format!("{:016x}", s.cky_i),
        "spi_r": format!("{:016x}", s.cky_r),
        "child_sas": s.children.len(),
        "version": 1,
    })
}

/// What the kernel said about one Child SA's two SAs, and the underlay's MTU now.
pub struct SaReading {
    /// The inbound SA, if the kernel has it.
    pub inbound: Option<xfrm::SaState>,
    /// The outbound SA.
    pub outbound: Option<xfrm::SaState>,
    /// The underlay's MTU now, Cisco's "path mtu" (the tunnel's own MTU is what Cisco calls
    /// "plaintext mtu").
    pub path_mtu: u32,
}

/// One Child SA of `show sa`. `names` maps ifindex to interface name (offload devices).
pub fn sa(
    t: &TunnelPlan,
    c: &ChildInfo,
    r: &SaReading,
    names: &BTreeMap<u32, String>,
    now: Instant,
) -> Value {
    sa_row(Some(&t.name), Some(t.mtu), c, r, names, now)
}

/// A crypto map's Child SA: the row of [`sa`] without a tunnel, with the map entry it
/// belongs to (`show crypto ipsec sa` groups by map entry the same way).
pub fn map_sa(
    map: &str,
    seq: u32,
    c: &ChildInfo,
    r: &SaReading,
    names: &BTreeMap<u32, String>,
    now: Instant,
) -> Value {
    let mut v = sa_row(None, None, c, r, names, now);
    v["crypto_map"] = json!(map);
    v["seq"] = json!(seq);
    v
}

/// A row of `show sa` for a Child SA of an mGRE protection: the IPsec profile and every
/// tunnel that shares the SA (seed 003's `shared`), in its ESP mode.
pub fn mgre_sa(
    protection: &str,
    tunnels: &[String],
    mode: ike::Mode,
    c: &ChildInfo,
    r: &SaReading,
    names: &BTreeMap<u32, String>,
    now: Instant,
) -> Value {
    let mut v = sa_row(None, None, c, r, names, now);
    v["protection"] = json!(protection);
    v["tunnels"] = json!(tunnels);
    if mode == ike::Mode::Transport {
        v["mode"] = json!("transport");
    }
    v
}

fn sa_row(
    tunnel: Option<&str>,
    plaintext_mtu: Option<u32>,
    c: &ChildInfo,
    r: &SaReading,
    names: &BTreeMap<u32, String>,
    now: Instant,
) -> Value {
    let cin = r.inbound.as_ref().map(|s| s.counters).unwrap_or_default();
    let cout = r.outbound.as_ref().map(|s| s.counters).unwrap_or_default();
    let age = now.saturating_duration_since(c.installed);
    let used = cin.bytes.max(cout.bytes);
    json!({
        "tunnel": tunnel,
        "peer": c.remote.ip().to_string(),
        "spi_in": format!("{:08x}", c.spi_in),
        "spi_out": format!("{:08x}", c.spi_out),
        "transform": transform_name(c.encr, c.integ),
        "mode": if c.encap.is_some() { "tunnel udp-encap" } else { "tunnel" },
        // The ports ESP-in-UDP uses now (they follow the peer's NAT mapping, RFC 7296 §2.23).
        "udp_encap": c.encap.map(|e| json!({
            "local_port": e.local_port,
            "remote_port": e.remote_port,
        })),
        "in": { "packets": cin.packets, "bytes": cin.bytes },
        "out": { "packets": cout.packets, "bytes": cout.bytes },
        "replay_errors": cin.replay + cin.replay_window_drops,
        "integrity_errors": cin.integrity_failed,
        "lifetime_remaining_secs": c.lifetime.saturating_sub(age).as_secs(),
        "lifetime_remaining_kb": c.hard_bytes.map(|h| h.saturating_sub(used) / 1024),
        "path_mtu": r.path_mtu,
        "plaintext_mtu": plaintext_mtu,
        "session": c.session.0,
        "offload": {
            "in": offload::sa_json(r.inbound.as_ref(), names),
            "out": offload::sa_json(r.outbound.as_ref(), names),
        },
    })
}

/// A transform as IOS's `show crypto ipsec sa` names it.
pub fn transform_name(encr: Encr, integ: Option<Integ>) -> String {
    let e = match encr {
        Encr::AesGcm16 { key_bits } => format!("esp-gcm {key_bits}"),
        Encr::AesCbc { key_bits } => format!("esp-aes {key_bits}"),
        Encr::ChaCha20Poly1305 => "esp-chacha20-poly1305".into(),
        Encr::TripleDes => "esp-3des".into(),
    };
    match integ {
        None => e,
        Some(Integ::HmacSha1_96) => format!("{e} esp-sha-hmac"),
        Some(Integ::HmacSha256_128) => format!("{e} esp-sha256-hmac"),
        Some(Integ::HmacSha384_192) => format!("{e} esp-sha384-hmac"),
        Some(Integ::HmacSha512_256) => format!("{e} esp-sha512-hmac"),
    }
}
