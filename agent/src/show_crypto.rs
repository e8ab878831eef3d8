//! `vtid show crypto ...` as JSON: the IOS-vocabulary views (issue 21). Pure rendering of
//! what the runtime hands over (the engine's IKE SA snapshots, the Child SA rows of
//! [`crate::show::sa`] with their kernel counters, the loaded configuration); `crate::ios`
//! lays the same JSON out as IOS prints it, and `--json` prints it as is.
//!
//! Only what vtid knows goes in: no IOS-internal numbers (conn id, flow_id), no counters
//! the kernel does not keep (send errors, compression), and never a key or a PSK.

use serde_json::{Value, json};

use ike::transform::{DhGroup, Encr, Integ, Prf};
use ike::wire::TrafficSelector;

use crate::config::{Config, IkeProposalSpec, IpsecProfile, SaMode, TransformSet};
use crate::plan::TunnelPlan;
use crate::show::transform_name;
use crate::virtual_access::{identity_string, ts_prefix};

/// IOS's name of an IKE cipher and its key size (`Encr: AES-CBC, keysize: 256`).
pub fn ike_encr(e: Encr) -> (&'static str, u16) {
    match e {
        Encr::AesCbc { key_bits } => ("AES-CBC", key_bits),
        Encr::AesGcm16 { key_bits } => ("AES-GCM", key_bits),
        Encr::ChaCha20Poly1305 => ("CHACHA20-POLY1305", 256),
        Encr::TripleDes => ("3DES", 192),
    }
}

/// IOS's name of a PRF (`PRF: SHA256`).
pub fn prf_name(p: Prf) -> &'static str {
    match p {
        Prf::HmacSha1 => "SHA1",
        Prf::HmacSha256 => "SHA256",
        Prf::HmacSha384 => "SHA384",
        Prf::HmacSha512 => "SHA512",
    }
}

/// IOS's name of an integrity algorithm (`Hash: SHA256`; AEAD ciphers have none).
pub fn integ_name(i: Option<Integ>) -> &'static str {
    match i {
        None => "None",
        Some(Integ::HmacSha1_96) => "SHA96",
        Some(Integ::HmacSha256_128) => "SHA256",
        Some(Integ::HmacSha384_192) => "SHA384",
        Some(Integ::HmacSha512_256) => "SHA512",
    }
}

/// IOS's `show crypto ikev2 proposal` name of a group (`DH_GROUP_2048_MODP/Group 14`).
pub fn group_long_name(g: DhGroup) -> String {
    let n = match g {
        DhGroup::Modp1024 => "DH_GROUP_1024_MODP",
        DhGroup::Modp1536 => "DH_GROUP_1536_MODP",
        DhGroup::Modp2048 => "DH_GROUP_2048_MODP",
        DhGroup::Modp3072 => "DH_GROUP_3072_MODP",
        DhGroup::Modp4096 => "DH_GROUP_4096_MODP",
        DhGroup::Ecp256 => "DH_GROUP_256_ECP",
        DhGroup::Ecp384 => "DH_GROUP_384_ECP",
        DhGroup::Ecp521 => "DH_GROUP_521_ECP",
        DhGroup::Curve25519 => "DH_GROUP_CURVE25519",
    };
    format!("{n}/Group {}", g.id())
}

/// The ESP IV size in bytes, as `show crypto ipsec sa` prints it: 8 for AES-GCM (RFC 4106
/// §3.1), ChaCha20-Poly1305 (RFC 7634 §2) and 3DES (RFC 2451), 16 for AES-CBC (RFC 3602).
pub fn iv_size(e: Encr) -> u8 {
    match e {
        Encr::AesCbc { .. } => 16,
        Encr::AesGcm16 { .. } | Encr::ChaCha20Poly1305 | Encr::TripleDes => 8,
    }
}

/// A traffic selector as IOS's `local ident (addr/mask/prot/port)`: the address and mask
/// when it is a prefix (`10.1.0.0/255.255.255.0`, IPv6 `2001:db8::/64`), else the range.
pub fn ts_ident(ts: &TrafficSelector) -> Value {
    let addr = match ts_prefix(ts) {
        Some(ipnet::IpNet::V4(n)) => format!("{}/{}", n.network(), n.netmask()),
        Some(n) => n.to_string(),
        None => format!("{}-{}", ts.start, ts.end),
    };
    // IOS prints port 0 for "any port".
    let port = if ts.start_port == 0 && ts.end_port == u16::MAX {
        0
    } else {
        ts.start_port
    };
    json!({
        "addr": addr,
        "protocol": ts.ip_proto,
        "port": port,
        "start": ts.start.to_string(),
        "end": ts.end.to_string(),
        "start_port": ts.start_port,
        "end_port": ts.end_port,
    })
}

/// One IKE SA of `show crypto ikev2 sa` / `session`. `active_secs` is how long its session
/// has been up (IOS's Active Time; an IKE rekey keeps the session).
pub fn ike_sa(s: &ike::IkeSaInfo, tunnel: Option<&TunnelPlan>, active_secs: Option<u64>) -> Value {
    let suite = s.suite.map(|p| {
        let (encr, keysize) = ike_encr(p.encr);
        json!({
            "encr": encr,
            "keysize": keysize,
            "prf": prf_name(p.prf),
            "hash": integ_name(p.integ),
            "dh_group": p.dh.id(),
            // RFC 9370 rounds in strongSwan's spelling (`ke1_mlkem768`); empty for a classic
            // suite. After an IKE rekey, those its IKE_FOLLOWUP_KE exchanges ran.
            "additional_key_exchanges": addke_names(&p.addke),
        })
    });
    let (local_spi, remote_spi) = if s.initiator {
        (s.spi_i, s.spi_r)
    } else {
        (s.spi_r, s.spi_i)
    };
    json!({
        "tunnel_id": s.session.0,
        "session": s.session.0,
        "interface": tunnel.map(|t| &t.name),
        "local": s.local.to_string(),
        "remote": s.remote.to_string(),
        "fvrf": tunnel.and_then(|t| t.fvrf.as_ref()).map(|v| &v.name),
        "ivrf": tunnel.and_then(|t| t.vrf.as_ref()).map(|v| &v.name),
        "status": ike_status(s.state),
        "state": s.state,
        "role": if s.initiator { "Initiator" } else { "Responder" },
        "local_spi": format!("{local_spi:016X}"),
        "remote_spi": format!("{remote_spi:016X}"),
        "suite": suite,
        "auth_sign": s.auth_sign,
        "auth_verify": s.auth_verify,
        "lifetime_secs": s.lifetime.as_secs(),
        "active_secs": active_secs,
        "local_id": identity_string(&s.local_id),
        "remote_id": s.peer_id.as_ref().map(identity_string),
        "nat": s.nat,
        "child_sas": s.child_sas.iter().filter(|c| c.live).count(),
    })
}

/// IOS's conn-id of an ISAKMP SA: IOS numbers its SAs from 1001; ours are the session's
/// number in the IKEv1 engine (`clear crypto isakmp CONN-ID` takes it back).
pub fn isakmp_conn_id(session: ike::SessionId) -> u64 {
    session.0.saturating_sub(ike::v1::FIRST_ID) + 1001
}

/// One ISAKMP SA of `show crypto isakmp sa` (and an IKEv1 row of `show sessions`). IOS's
/// `dst`/`src` are the responder's and the initiator's addresses, not ours and the peer's.
pub fn isakmp_sa(s: &ike::v1::V1SaInfo, tunnel: Option<&TunnelPlan>) -> Value {
    let (dst, src) = if s.initiator {
        (s.remote, s.local)
    } else {
        (s.local, s.remote)
    };
    let state = crate::show::isakmp_state(s.state);
    json!({
        "dst": dst.ip().to_string(),
        "src": src.ip().to_string(),
        "state": state,
        // IOS numbers its SAs from 1001; ours are the session's number in the IKEv1 engine.
        "conn_id": isakmp_conn_id(s.session),
        "status": if state == "QM_IDLE" { "ACTIVE" } else { "" },
        "session": s.session.0,
        "interface": tunnel.map(|t| &t.name),
        "role": if s.initiator { "Initiator" } else { "Responder" },
        "local": s.local.to_string(),
        "remote": s.remote.to_string(),
        "cookie_i": format!("{:016X}", s.cky_i),
        "cookie_r": format!("{:016X}", s.cky_r),
        "remote_id": s.peer_id.as_ref().map(identity_string),
        "child_sas": s.children.len(),
    })
}

/// IOS's IKEv2 SA status for an engine state.
fn ike_status(state: &str) -> &'static str {
    match state {
        "Established" => "READY",
        // Replaced by a rekey; only its DELETE remains.
        "Rekeyed" => "DELETE",
        _ => "IN-NEG",
    }
}

/// The engine's view of one Child SA, added to a [`crate::show::sa`] row: traffic selectors
/// (IOS's idents and IPSEC FLOW), PFS, the peer's port, the protected (inner) VRF.
pub fn child_extra(
    row: &mut Value,
    c: Option<&ike::ChildSaInfo>,
    t: &TunnelPlan,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
    encr: Encr,
) {
    let Some(obj) = row.as_object_mut() else {
        return;
    };
    obj.insert("iv_size".into(), json!(iv_size(encr)));
    obj.insert("interface".into(), json!(t.name));
    obj.insert(
        "ivrf".into(),
        json!(t.vrf.as_ref().map(|v| v.name.as_str())),
    );
    obj.insert("local_addr".into(), json!(local.ip().to_string()));
    obj.insert("remote_addr".into(), json!(remote.ip().to_string()));
    obj.insert("remote_port".into(), json!(remote.port()));
    if let Some(c) = c {
        obj.insert(
            "local_ts".into(),
            json!(c.local_ts.iter().map(ts_ident).collect::<Vec<_>>()),
        );
        obj.insert(
            "remote_ts".into(),
            json!(c.remote_ts.iter().map(ts_ident).collect::<Vec<_>>()),
        );
        obj.insert("pfs".into(), json!(c.pfs.map(|g| g.id())));
        obj.insert(
            "pfs_additional_key_exchanges".into(),
            json!(addke_names(&c.pfs_addke)),
        );
        obj.insert(
            "encaps_mode".into(),
            json!(match c.mode {
                ike::Mode::Tunnel => "Tunnel",
                ike::Mode::Transport => "Transport",
            }),
        );
    }
}

/// IOS's session status: `UP-ACTIVE` with a Child SA, `UP-IDLE` with an IKE SA alone,
/// `DOWN-NEGOTIATING` while the IKE SA is set up, `DOWN` with none.
pub fn session_status(ike_sas: &[Value], children: usize) -> &'static str {
    let ready = ike_sas.iter().any(|s| s["status"] == "READY");
    match (ready, children) {
        (true, n) if n > 0 => "UP-ACTIVE",
        (true, _) => "UP-IDLE",
        (false, _) if !ike_sas.is_empty() => "DOWN-NEGOTIATING",
        _ => "DOWN",
    }
}

/// One session of `show crypto session`: a peer's IKE SAs (two while one is rekeyed) and the
/// Child SA rows (with `child_extra`) of its live Child SAs.
pub fn session(
    interface: Option<&str>,
    profile: Option<&str>,
    peer: std::net::SocketAddr,
    ike_sas: Vec<Value>,
    flows: Vec<Value>,
    uptime_secs: Option<u64>,
) -> Value {
    let first = ike_sas.first().cloned().unwrap_or(Value::Null);
    json!({
        "interface": interface,
        "profile": profile,
        "status": session_status(&ike_sas, flows.len()),
        "peer": peer.ip().to_string(),
        "peer_port": peer.port(),
        "fvrf": first["fvrf"],
        "ivrf": first["ivrf"],
        "session_id": first["session"],
        "peer_id": first["remote_id"],
        "uptime_secs": uptime_secs,
        // Two kernel SAs (inbound, outbound) per Child SA, as IOS counts them.
        "active_sas": flows.len() * 2,
        "ike_sas": ike_sas,
        "flows": flows,
    })
}

/// A configured static tunnel with no IKE SA: IOS lists its session as `DOWN`.
pub fn idle_session(t: &TunnelPlan, profile: Option<&str>, ike_port: u16) -> Value {
    session(
        Some(&t.name),
        profile,
        std::net::SocketAddr::new(t.remote, ike_port),
        Vec::new(),
        Vec::new(),
        None,
    )
}

fn set_json(name: &str, ts: &TransformSet) -> Value {
    json!({
        "name": name,
        "transform": transform_name(ts.esp, ts.integrity),
        "mode": match ts.mode { SaMode::Tunnel => "Tunnel", SaMode::Transport => "Transport" },
    })
}

/// `show crypto ipsec transform-set`: every configured set.
pub fn transform_sets(cfg: &Config) -> Value {
    json!(
        cfg.transform_sets
            .iter()
            .map(|(n, ts)| set_json(n, ts))
            .collect::<Vec<_>>()
    )
}

fn profile_json(name: &str, p: &IpsecProfile) -> Value {
    json!({
        "name": name,
        "ike_profile": p.ike_profile,
        "lifetime_secs": p.lifetime.seconds,
        "lifetime_kb": p.lifetime.kilobytes,
        "pfs": p.pfs.map(|g| g.id()),
        "pfs_additional_key_exchanges": addke_names(&p.pfs_addke),
        "transform_sets": p
            .transform_sets
            .iter()
            .zip(&p.sets)
            .map(|(n, ts)| set_json(n, ts))
            .collect::<Vec<_>>(),
    })
}

/// `show crypto ipsec profile`: every configured IPsec profile.
pub fn ipsec_profiles(cfg: &Config) -> Value {
    json!(
        cfg.ipsec_profiles
            .iter()
            .map(|(n, p)| profile_json(n, p))
            .collect::<Vec<_>>()
    )
}

fn proposal_json(name: &str, p: &IkeProposalSpec) -> Value {
    json!({
        "name": name,
        "encryption": p.encryption.iter().map(|e| {
            let (n, k) = ike_encr(*e);
            format!("{n}-{k}")
        }).collect::<Vec<_>>(),
        "integrity": p.integrity.iter().map(|i| integ_name(Some(*i))).collect::<Vec<_>>(),
        "prf": p.prf.iter().map(|x| prf_name(*x)).collect::<Vec<_>>(),
        "dh_groups": p.groups.iter().map(|g| group_long_name(*g)).collect::<Vec<_>>(),
        // One entry per ADDKE round, alternatives in strongSwan's spelling: "ke1_mlkem768|ke1_none".
        "additional_key_exchanges": p.additional_key_exchanges.iter().enumerate().map(|(i, alts)| {
            alts.iter()
                .map(|m| format!("ke{}_{}", i + 1, m.map_or("none", ke_name)))
                .collect::<Vec<_>>()
                .join("|")
        }).collect::<Vec<_>>(),
    })
}

/// `show crypto ikev2 proposal`: every configured IKEv2 proposal.
pub fn ikev2_proposals(cfg: &Config) -> Value {
    json!(
        cfg.ike_proposals
            .iter()
            .map(|(n, p)| proposal_json(n, p))
            .collect::<Vec<_>>()
    )
}

/// `show crypto map`, tunnel protection's part: the entries IOS creates internally for
/// tunnel protection (`Tunnel0-head-0`), one per static tunnel, from its IPsec profile, with
/// the peer it protects and the session's peer when one is up. The configured crypto maps
/// are added by the runtime (`crypto_maps`).
pub fn crypto_maps(cfg: &Config, tunnels: &[(&TunnelPlan, bool)]) -> Value {
    let maps: Vec<Value> = tunnels
        .iter()
        .filter_map(|(t, up)| {
            let c = cfg.tunnels.get(&t.name)?;
            Some(json!({
                "name": format!("{}-head-0", t.name),
                "interface": t.name,
                "local_addr": t.local.to_string(),
                "peer": t.remote.to_string(),
                "current_peer": up.then(|| t.remote.to_string()),
                "profile": profile_json(&c.protection, &c.ipsec),
            }))
        })
        .collect();
    json!({ "crypto_maps_configured": 0, "tunnel_protection": maps })
}

/// `show crypto debug-condition`: the conditions set with `vtid debug`.
pub fn debug_conditions(active: &[crate::debug::Condition]) -> Value {
    use crate::debug::Condition as C;
    let peers: Vec<String> = active
        .iter()
        .filter_map(|c| match c {
            C::Peer(a) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    let spis: Vec<String> = active
        .iter()
        .filter_map(|c| match c {
            C::Spi(s) => Some(format!("0x{s:08X}")),
            _ => None,
        })
        .collect();
    let tunnels: Vec<String> = active
        .iter()
        .filter_map(|c| match c {
            C::Tunnel(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    json!({
        "on": !active.is_empty(),
        "peers": peers,
        "spis": spis,
        "tunnels": tunnels,
    })
}

/// strongSwan's name of a key exchange method (`mlkem768`, `x25519`, `ecp256`, `modp2048`).
/// RFC 9370 rounds in strongSwan's spelling: `["ke1_mlkem768"]`.
fn addke_names(a: &ike::transform::AddKes) -> Vec<String> {
    a.rounds()
        .map(|(n, m)| format!("ke{n}_{}", ke_name(m)))
        .collect()
}

fn ke_name(m: ike::transform::KeMethod) -> &'static str {
    use ike::transform::{DhGroup, KeMethod};
    match m {
        KeMethod::MlKem512 => "mlkem512",
        KeMethod::MlKem768 => "mlkem768",
        KeMethod::MlKem1024 => "mlkem1024",
        KeMethod::Dh(g) => match g {
            DhGroup::Modp1024 => "modp1024",
            DhGroup::Modp1536 => "modp1536",
            DhGroup::Modp2048 => "modp2048",
            DhGroup::Modp3072 => "modp3072",
            DhGroup::Modp4096 => "modp4096",
            DhGroup::Ecp256 => "ecp256",
            DhGroup::Ecp384 => "ecp384",
            DhGroup::Ecp521 => "ecp521",
            DhGroup::Curve25519 => "x25519",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(a: &str, b: &str) -> TrafficSelector {
        TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: u16::MAX,
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        }
    }

    #[test]
    fn idents_are_address_and_mask_or_the_range() {
        assert_eq!(
            ts_ident(&ts("10.1.0.0", "10.1.0.255"))["addr"],
            "10.1.0.0/255.255.255.0"
        );
        assert_eq!(
            ts_ident(&ts("0.0.0.0", "255.255.255.255"))["addr"],
            "0.0.0.0/0.0.0.0"
        );
        assert_eq!(
            ts_ident(&ts("10.1.0.1", "10.1.0.7"))["addr"],
            "10.1.0.1-10.1.0.7"
        );
        assert_eq!(
            ts_ident(&ts("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))["addr"],
            "::/0"
        );
        let mut gre = ts("192.0.2.1", "192.0.2.1");
        gre.ip_proto = 47;
        let j = ts_ident(&gre);
        assert_eq!(
            (j["protocol"].as_u64(), j["port"].as_u64()),
            (Some(47), Some(0))
        );
    }

    #[test]
    fn statuses_follow_ios() {
        let ready = vec![json!({ "status": "READY" })];
        let neg = vec![json!({ "status": "IN-NEG" })];
        assert_eq!(session_status(&ready, 1), "UP-ACTIVE");
        assert_eq!(session_status(&ready, 0), "UP-IDLE");
        assert_eq!(session_status(&neg, 0), "DOWN-NEGOTIATING");
        assert_eq!(session_status(&[], 0), "DOWN");
        assert_eq!(ike_status("Established"), "READY");
        assert_eq!(ike_status("ExpectAuthResponse"), "IN-NEG");
    }

    #[test]
    fn iv_sizes_per_rfc() {
        assert_eq!(iv_size(Encr::AesCbc { key_bits: 128 }), 16);
        assert_eq!(iv_size(Encr::AesGcm16 { key_bits: 256 }), 8);
        assert_eq!(iv_size(Encr::ChaCha20Poly1305), 8);
    }

    /// The configuration views are rendered from a config whose PSK was read: neither the
    /// JSON nor the IOS text may carry it (nor its file's contents in any form).
    #[test]
    fn config_views_never_show_the_psk() {
        use std::os::unix::fs::PermissionsExt;
        let psk = "sekrit-Cisco12345-do-not-print";
        let dir = std::env::temp_dir().join(format!("vtid-show-crypto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("peer.key");
        std::fs::write(&key, format!("{psk}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let src = include_str!("../../packaging/examples/static-vti-c7206.toml")
            .replace("/etc/vtid/psk/c1750.key", key.to_str().unwrap());
        let opts = crate::config::LoadOptions {
            secret_owner_uid: nix::unistd::geteuid().as_raw(),
            read_files: true,
        };
        let cfg = Config::from_toml(std::path::Path::new("t.toml"), &src, &opts).expect("loads");
        let psk_loaded = cfg.keyrings["KR1"].peers[0].psk.is_some();
        assert!(psk_loaded, "the test must hold a read PSK");
        for (view, body) in [
            (
                crate::control::CryptoView::TransformSet,
                transform_sets(&cfg),
            ),
            (
                crate::control::CryptoView::IpsecProfile,
                ipsec_profiles(&cfg),
            ),
            (
                crate::control::CryptoView::Ikev2Proposal,
                ikev2_proposals(&cfg),
            ),
            (crate::control::CryptoView::Map, crypto_maps(&cfg, &[])),
        ] {
            let text = crate::ios::render(&view, &body);
            let json = body.to_string();
            for out in [&text, &json] {
                assert!(
                    !out.contains(psk) && !out.contains("sekrit"),
                    "{view:?}: {out}"
                );
            }
        }
        // And what was configured is there.
        assert!(ipsec_profiles(&cfg).to_string().contains("\"P1\""));
        assert!(ikev2_proposals(&cfg).to_string().contains("AES-GCM-256"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_conditions_by_kind() {
        use crate::debug::Condition as C;
        let j = debug_conditions(&[
            C::Peer("10.1.1.1".parse().unwrap()),
            C::Spi(0xc0ffee01),
            C::Tunnel("Tunnel0".into()),
        ]);
        assert_eq!(j["on"], true);
        assert_eq!(j["peers"], json!(["10.1.1.1"]));
        assert_eq!(j["spis"], json!(["0xC0FFEE01"]));
        assert_eq!(j["tunnels"], json!(["Tunnel0"]));
        assert_eq!(debug_conditions(&[])["on"], false);
    }
}
