//! The text of `vtid show crypto ...`, laid out as IOS prints the same commands (field names
//! and order from IOS's own output), from the JSON the daemon answers with
//! (`crate::show_crypto`). A field vtid has no data for is left out, never filled in.

use std::fmt::Write as _;

use serde_json::Value;

use crate::control::CryptoView;

/// The text of one view.
pub fn render(view: &CryptoView, body: &Value) -> String {
    let mut out = String::new();
    match view {
        CryptoView::IsakmpSa => isakmp_sa(&mut out, body),
        CryptoView::Ikev2Sa => ikev2_sa(&mut out, body),
        CryptoView::IpsecSa { .. } => ipsec_sa(&mut out, body),
        CryptoView::Session { detail } => session(&mut out, body, *detail),
        CryptoView::Map => crypto_map(&mut out, body),
        CryptoView::TransformSet => {
            for ts in rows(body) {
                transform_set(&mut out, ts);
            }
        }
        CryptoView::IpsecProfile => {
            for p in rows(body) {
                let _ = writeln!(out, "IPSEC profile {}", s(&p["name"]));
                profile_body(&mut out, p);
                out.push('\n');
            }
        }
        CryptoView::Ikev2Proposal => ikev2_proposal(&mut out, body),
        CryptoView::DebugCondition => debug_condition(&mut out, body),
    }
    out
}

fn rows(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A JSON value as text: strings bare, null as "-".
fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A VRF name as IOS prints it, `(none)` for the global table.
fn vrf(v: &Value) -> String {
    v.as_str().map_or("(none)".into(), str::to_string)
}

/// Hours:minutes:seconds, IOS's uptime.
fn hms(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// An SPI as IOS prints it: hex and, in parentheses, decimal (`0x962C9052(2519502930)`).
fn spi(hex: &Value) -> String {
    let h = s(hex);
    match u32::from_str_radix(&h, 16) {
        Ok(n) => format!("0x{n:08X}({n})"),
        Err(_) => h,
    }
}

fn isakmp_sa(out: &mut String, body: &Value) {
    let sas: Vec<&Value> = body["sas"].as_array().into_iter().flatten().collect();
    for (v6, title) in [(false, "IPv4"), (true, "IPv6")] {
        let _ = writeln!(out, "{title} Crypto ISAKMP SA");
        let rows: Vec<&&Value> = sas
            .iter()
            .filter(|r| s(&r["dst"]).contains(':') == v6)
            .collect();
        if !v6 {
            out.push_str("dst             src             state          conn-id status\n");
        }
        for r in rows {
            let _ = writeln!(
                out,
                "{:<15} {:<15} {:<14} {:>7} {}",
                s(&r["dst"]),
                s(&r["src"]),
                s(&r["state"]),
                s(&r["conn_id"]),
                s(&r["status"])
            );
        }
        out.push('\n');
    }
    if let Some(note) = body["note"].as_str() {
        let _ = writeln!(out, "% {note}");
    }
}

fn ikev2_sa(out: &mut String, body: &Value) {
    for (v6, title) in [(false, "IPv4"), (true, "IPv6")] {
        let sas: Vec<&Value> = rows(body)
            .filter(|r| s(&r["local"]).starts_with('[') == v6)
            .collect();
        if sas.is_empty() && v6 {
            continue;
        }
        let _ = writeln!(out, " {title} Crypto IKEv2  SA \n");
        let _ = writeln!(
            out,
            "{:<9} {:<21} {:<21} {:<20} Status",
            "Tunnel-id", "Local", "Remote", "fvrf/ivrf"
        );
        for r in sas {
            ikev2_sa_row(out, r);
        }
        out.push('\n');
    }
}

fn ikev2_sa_row(out: &mut String, r: &Value) {
    let slash = |a: &Value| {
        // "192.0.2.1:500" -> "192.0.2.1/500", "[2001:db8::1]:500" -> "2001:db8::1/500"
        let a = s(a);
        match a.rsplit_once(':') {
            Some((ip, port)) => format!("{}/{port}", ip.trim_matches(|c| c == '[' || c == ']')),
            None => a,
        }
    };
    let fvrf = r["fvrf"].as_str().unwrap_or("none");
    let ivrf = r["ivrf"].as_str().unwrap_or("none");
    let _ = writeln!(
        out,
        "{:<9} {:<21} {:<21} {:<20} {}",
        s(&r["tunnel_id"]),
        slash(&r["local"]),
        slash(&r["remote"]),
        format!("{fvrf}/{ivrf}"),
        s(&r["status"])
    );
    let su = &r["suite"];
    if su.is_object() {
        let _ = writeln!(
            out,
            "      Encr: {}, keysize: {}, PRF: {}, Hash: {}, DH Grp:{}, Auth sign: {}, Auth verify: {}",
            s(&su["encr"]),
            s(&su["keysize"]),
            s(&su["prf"]),
            s(&su["hash"]),
            s(&su["dh_group"]),
            s(&r["auth_sign"]),
            s(&r["auth_verify"])
        );
        if let Some(kes) = additional_kes(su) {
            let _ = writeln!(out, "      Additional KE: {kes}");
        }
    }
    let active = r["active_secs"]
        .as_u64()
        .map_or("-".into(), |a| a.to_string());
    let _ = writeln!(
        out,
        "      Life/Active Time: {}/{} sec",
        s(&r["lifetime_secs"]),
        active
    );
}

/// IOS's `(addr/mask/prot/port)` of a Child SA's first selector on one side.
fn ident(ts: &Value) -> String {
    let t = ts.as_array().and_then(|a| a.first());
    match t {
        Some(t) => format!(
            "({}/{}/{})",
            s(&t["addr"]),
            s(&t["protocol"]),
            s(&t["port"])
        ),
        None => "(-)".into(),
    }
}

fn ipsec_sa(out: &mut String, body: &Value) {
    let mut last_if: Option<String> = None;
    for r in rows(body) {
        let iface = s(&r["interface"]);
        if last_if.as_deref() != Some(iface.as_str()) {
            let _ = writeln!(out, "\ninterface: {iface}");
            let _ = writeln!(
                out,
                "    Crypto map tag: {iface}-head-0, local addr {}\n",
                s(&r["local_addr"])
            );
            last_if = Some(iface);
        }
        let _ = writeln!(out, "   protected vrf: {}", vrf(&r["ivrf"]));
        let _ = writeln!(
            out,
            "   local  ident (addr/mask/prot/port): {}",
            ident(&r["local_ts"])
        );
        let _ = writeln!(
            out,
            "   remote ident (addr/mask/prot/port): {}",
            ident(&r["remote_ts"])
        );
        let _ = writeln!(
            out,
            "   current_peer {} port {}",
            s(&r["remote_addr"]),
            s(&r["remote_port"])
        );
        // The kernel counts packets per SA; encrypt/digest/verify are the same packets, so
        // only IOS's first count of each line is printed.
        let _ = writeln!(out, "    #pkts encaps: {}", s(&r["out"]["packets"]));
        let _ = writeln!(out, "    #pkts decaps: {}", s(&r["in"]["packets"]));
        let recv =
            r["replay_errors"].as_u64().unwrap_or(0) + r["integrity_errors"].as_u64().unwrap_or(0);
        let _ = writeln!(out, "    #recv errors {recv}\n");
        let _ = writeln!(
            out,
            "     local crypto endpt.: {}, remote crypto endpt.: {}",
            s(&r["local_addr"]),
            s(&r["remote_addr"])
        );
        let _ = writeln!(
            out,
            "     plaintext mtu {}, path mtu {}",
            s(&r["plaintext_mtu"]),
            s(&r["path_mtu"])
        );
        let _ = writeln!(out, "     current outbound spi: {}", spi(&r["spi_out"]));
        let _ = writeln!(out, "     PFS (Y/N): {}", pfs(&r["pfs"]));
        // RFC 9370 rounds of the PFS exchange (vtid's addition; IOS has none).
        if let Some(kes) = pfs_additional_kes(r) {
            let _ = writeln!(out, "     Additional KE: {kes}");
        }
        for (dir, key) in [("inbound", "spi_in"), ("outbound", "spi_out")] {
            let _ = writeln!(out, "\n     {dir} esp sas:");
            let _ = writeln!(out, "      spi: {}", spi(&r[key]));
            let _ = writeln!(out, "        transform: {} ,", s(&r["transform"]));
            let settings = match (
                r["encaps_mode"].as_str().unwrap_or("Tunnel"),
                r["udp_encap"].is_object(),
            ) {
                (m, true) => format!("{m} UDP-Encaps"),
                (m, false) => m.to_string(),
            };
            let _ = writeln!(out, "        in use settings ={{{settings}, }}");
            let _ = writeln!(out, "        sa timing: {}", timing(r));
            if let Some(iv) = r["iv_size"].as_u64() {
                let _ = writeln!(out, "        IV size: {iv} bytes");
            }
            let _ = writeln!(out, "        Status: ACTIVE");
            let _ = writeln!(out, "\n     {dir} ah sas:\n\n     {dir} pcp sas:");
        }
        out.push('\n');
    }
}

/// `PFS (Y/N): N, DH group: none` or `PFS (Y/N): Y, DH group: group19`.
fn pfs(g: &Value) -> String {
    match g.as_u64() {
        Some(g) => format!("Y, DH group: group{g}"),
        None => "N, DH group: none".into(),
    }
}

/// IOS's `remaining key lifetime (k/sec): (K/S)`; without a kilobyte limit vtid has no `k`.
fn timing(r: &Value) -> String {
    match r["lifetime_remaining_kb"].as_u64() {
        Some(kb) => format!(
            "remaining key lifetime (k/sec): ({kb}/{})",
            s(&r["lifetime_remaining_secs"])
        ),
        None => format!(
            "remaining key lifetime (sec): ({})",
            s(&r["lifetime_remaining_secs"])
        ),
    }
}

/// An IPSEC FLOW line: `permit ip 0.0.0.0/0.0.0.0 0.0.0.0/0.0.0.0`.
fn flow(r: &Value) -> Vec<String> {
    let (l, rt) = (r["local_ts"].as_array(), r["remote_ts"].as_array());
    let (Some(l), Some(rt)) = (l, rt) else {
        return Vec::new();
    };
    let port = |t: &Value| match t["port"].as_u64() {
        Some(0) | None => String::new(),
        Some(p) => format!(" port={p}"),
    };
    // One line per pair of selectors of one family (a Child SA may carry IPv4 and IPv6).
    let v6 = |t: &Value| s(&t["addr"]).contains(':');
    let mut v = Vec::new();
    for a in l {
        for b in rt.iter().filter(|b| v6(b) == v6(a)) {
            let proto = match a["protocol"].as_u64() {
                Some(0) | None => "ip".to_string(),
                Some(p) => p.to_string(),
            };
            v.push(format!(
                "permit {proto} {}{} {}{}",
                s(&a["addr"]),
                port(a),
                s(&b["addr"]),
                port(b)
            ));
        }
    }
    v
}

fn session(out: &mut String, body: &Value, detail: bool) {
    out.push_str("Crypto session current status\n");
    if detail {
        out.push_str("\nCode: N - NAT-traversal\n");
    }
    for r in rows(body) {
        out.push('\n');
        if let Some(i) = r["interface"].as_str() {
            let _ = writeln!(out, "Interface: {i}");
        }
        if let Some(p) = r["profile"].as_str() {
            let _ = writeln!(out, "Profile: {p}");
        }
        if detail && let Some(u) = r["uptime_secs"].as_u64() {
            let _ = writeln!(out, "Uptime: {}", hms(u));
        }
        let _ = writeln!(out, "Session status: {}", s(&r["status"]));
        let ike = r["ike_sas"].as_array().cloned().unwrap_or_default();
        if detail {
            let _ = writeln!(
                out,
                "Peer: {} port {} fvrf: {} ivrf: {}",
                s(&r["peer"]),
                s(&r["peer_port"]),
                vrf(&r["fvrf"]),
                vrf(&r["ivrf"])
            );
            if let Some(id) = r["peer_id"].as_str() {
                let _ = writeln!(out, "      Phase1_id: {id}");
            }
            if !r["session_id"].is_null() {
                let _ = writeln!(out, "  Session ID: {}", s(&r["session_id"]));
            }
        } else {
            let _ = writeln!(out, "Peer: {} port {}", s(&r["peer"]), s(&r["peer_port"]));
        }
        let indent = if detail { "  " } else { "" };
        for k in &ike {
            let state = if k["status"] == "READY" {
                "Active"
            } else {
                "Inactive"
            };
            let local = s(&k["local"]).replacen(':', "/", 1);
            let remote = s(&k["remote"]).replacen(':', "/", 1);
            let (local, remote) = (
                v4ish(&s(&k["local"]), local),
                v4ish(&s(&k["remote"]), remote),
            );
            let _ = writeln!(
                out,
                "{indent}IKEv2 SA: local {local} remote {remote} {state}"
            );
            if detail {
                let nat = if k["nat"] == true { "N" } else { "(none)" };
                let _ = writeln!(
                    out,
                    "          Capabilities:{nat} connid:{}",
                    s(&k["tunnel_id"])
                );
                let su = &k["suite"];
                if su.is_object() {
                    let _ = writeln!(
                        out,
                        "          Encr: {}, keysize: {}, PRF: {}, Hash: {}, DH Grp:{}, Auth sign: {}, Auth verify: {}",
                        s(&su["encr"]),
                        s(&su["keysize"]),
                        s(&su["prf"]),
                        s(&su["hash"]),
                        s(&su["dh_group"]),
                        s(&k["auth_sign"]),
                        s(&k["auth_verify"])
                    );
                    if let Some(kes) = additional_kes(su) {
                        let _ = writeln!(out, "          Additional KE: {kes}");
                    }
                }
                let _ = writeln!(
                    out,
                    "          Local id: {}, Remote id: {}",
                    s(&k["local_id"]),
                    s(&k["remote_id"])
                );
            }
        }
        let flows = r["flows"].as_array().cloned().unwrap_or_default();
        for f in &flows {
            for line in flow(f) {
                let _ = writeln!(out, "{indent}IPSEC FLOW: {line}");
            }
            if detail {
                let _ = writeln!(out, "        Active SAs: 2, origin: crypto map");
                let drops = f["replay_errors"].as_u64().unwrap_or(0)
                    + f["integrity_errors"].as_u64().unwrap_or(0);
                let life = |f: &Value| match f["lifetime_remaining_kb"].as_u64() {
                    Some(kb) => format!("life (KB/Sec) {kb}/{}", s(&f["lifetime_remaining_secs"])),
                    None => format!("life (Sec) {}", s(&f["lifetime_remaining_secs"])),
                };
                let _ = writeln!(
                    out,
                    "        Inbound:  #pkts dec'ed {} drop {drops} life {}",
                    s(&f["in"]["packets"]),
                    life(f).trim_start_matches("life ")
                );
                let _ = writeln!(
                    out,
                    "        Outbound: #pkts enc'ed {} life {}",
                    s(&f["out"]["packets"]),
                    life(f).trim_start_matches("life ")
                );
                let _ = writeln!(
                    out,
                    "        SPI in/out: {}/{}, transform: {}, PFS (Y/N): {}",
                    spi(&f["spi_in"]),
                    spi(&f["spi_out"]),
                    s(&f["transform"]),
                    pfs(&f["pfs"])
                );
                let _ = writeln!(
                    out,
                    "        #recv errors {drops} (replay {}, integrity {})",
                    s(&f["replay_errors"]),
                    s(&f["integrity_errors"])
                );
            }
        }
        if !detail && !flows.is_empty() {
            let _ = writeln!(
                out,
                "Active SAs: {}, origin: crypto map",
                s(&r["active_sas"])
            );
        }
    }
}

/// IOS writes `addr/port`; an IPv6 socket address (`[2001:db8::1]:500`) loses its brackets.
fn v4ish(raw: &str, replaced: String) -> String {
    if raw.starts_with('[') {
        match raw.rsplit_once(':') {
            Some((ip, port)) => format!("{}/{port}", ip.trim_matches(|c| c == '[' || c == ']')),
            None => raw.to_string(),
        }
    } else {
        replaced
    }
}

fn transform_set(out: &mut String, ts: &Value) {
    let _ = writeln!(
        out,
        "Transform set {}: {{ {}  }}",
        s(&ts["name"]),
        s(&ts["transform"])
    );
    let _ = writeln!(out, "   will negotiate = {{ {},  }},\n", s(&ts["mode"]));
}

/// The lines of an IPsec profile, as `show crypto ipsec profile` and `show crypto map`
/// print them.
fn profile_body(out: &mut String, p: &Value) {
    if let Some(ike) = p["ike_profile"].as_str() {
        let _ = writeln!(out, "        IKEv2 Profile: {ike}");
    }
    let _ = writeln!(
        out,
        "        Security association lifetime: {} kilobytes/{} seconds",
        s(&p["lifetime_kb"]),
        s(&p["lifetime_secs"])
    );
    match p["pfs"].as_u64() {
        Some(g) => {
            let _ = writeln!(out, "        PFS (Y/N): Y\n        DH group:  group{g}");
            if let Some(kes) = pfs_additional_kes(p) {
                let _ = writeln!(out, "        Additional KE: {kes}");
            }
        }
        None => {
            let _ = writeln!(out, "        PFS (Y/N): N");
        }
    }
    out.push_str("        Transform sets={\n");
    for ts in rows(&p["transform_sets"]) {
        let _ = writeln!(
            out,
            "                {}:  {{ {}  }} ,",
            s(&ts["name"]),
            s(&ts["transform"])
        );
    }
    out.push_str("        }\n");
}

fn crypto_map(out: &mut String, body: &Value) {
    let configured: Vec<&Value> = rows(&body["crypto_maps"]).collect();
    if configured.is_empty() {
        out.push_str("% No crypto maps are configured.\n");
    }
    for m in configured {
        let name = s(&m["name"]);
        for e in rows(&m["entries"]) {
            let kind = &e["kind"];
            if kind["type"] == "dynamic" {
                let d = s(&kind["dynamic_map"]);
                let _ = writeln!(out, "\nCrypto Map \"{name}\" {} ipsec-isakmp", s(&e["seq"]));
                let _ = writeln!(out, "        Dynamic map template tag: {d}");
                for de in rows(&kind["entries"]) {
                    let _ = writeln!(out, "        Crypto Map \"{d}\" {}", s(&de["seq"]));
                    match de["acl"].as_array() {
                        Some(lines) => {
                            let acl = s(&de["access_list"]);
                            let _ = writeln!(out, "                Extended IP access list {acl}");
                            for a in lines {
                                let _ =
                                    writeln!(out, "                    access-list {acl} {}", s(a));
                            }
                        }
                        None => out
                            .push_str("                (no ACL: any proposed flow is accepted)\n"),
                    }
                }
                for f in rows(&kind["flows"]) {
                    let _ = writeln!(
                        out,
                        "        Temporary entry: peer {} flow {} -> {} ({} SA(s))",
                        s(&f["peer"]),
                        s(&f["local"]),
                        s(&f["remote"]),
                        s(&f["sas"])
                    );
                }
                continue;
            }
            let manual = kind["type"] == "ipsec-manual";
            let _ = writeln!(
                out,
                "\nCrypto Map \"{name}\" {} {}",
                s(&e["seq"]),
                if manual {
                    "ipsec-manual"
                } else {
                    "ipsec-isakmp"
                }
            );
            if manual {
                let _ = writeln!(out, "        Peer = {}", s(&kind["peer"]));
                let _ = writeln!(
                    out,
                    "        Inbound esp spi: 0x{}, outbound esp spi: 0x{}, installed: {}",
                    s(&kind["spi_in"]),
                    s(&kind["spi_out"]),
                    s(&kind["installed"])
                );
            }
            for p in rows(&e["peers"]) {
                let _ = writeln!(out, "        Peer = {}", s(p));
            }
            let acl = s(&e["access_list"]);
            let _ = writeln!(out, "        Extended IP access list {acl}");
            let hits: Vec<&Value> = rows(&e["acl_sas"]).collect();
            for (n, a) in rows(&e["acl"]).enumerate() {
                let line = s(a);
                match hits.get(n).and_then(|h| h.as_u64()) {
                    Some(h) if line.starts_with("permit") => {
                        let _ = writeln!(out, "            access-list {acl} {line} ({h} SA)");
                    }
                    _ => {
                        let _ = writeln!(out, "            access-list {acl} {line}");
                    }
                }
            }
            let _ = writeln!(out, "        Current peer: {}", s(&e["current_peer"]));
            let _ = writeln!(
                out,
                "        Security association lifetime: {} kilobytes/{} seconds",
                s(&e["lifetime_kilobytes"]),
                s(&e["lifetime_seconds"])
            );
            match e["pfs"].as_u64() {
                Some(g) => {
                    let _ = writeln!(out, "        PFS (Y/N): Y\n        DH group:  group{g}");
                }
                None => out.push_str("        PFS (Y/N): N\n"),
            }
            if e["per_host"] == true {
                out.push_str("        Security association level: per-host\n");
            }
            if e["reverse_route"].is_u64() {
                let _ = writeln!(
                    out,
                    "        Reverse Route Injection Enabled (metric {})",
                    s(&e["reverse_route"])
                );
            }
            out.push_str("        Transform sets={\n");
            for t in rows(&e["transform_sets"]) {
                let _ = writeln!(out, "                {},", s(t));
            }
            out.push_str("        }\n");
            let sas: Vec<&Value> = rows(&e["sas"]).collect();
            let _ = writeln!(out, "        Active SAs: {}", sas.len() * 2);
        }
        let _ = writeln!(
            out,
            "        Interfaces using crypto map {name}:\n                {}",
            m["interface"]
                .as_str()
                .unwrap_or_else(|| m["local"].as_str().unwrap_or("-"))
        );
    }
    let maps: Vec<&Value> = rows(&body["tunnel_protection"]).collect();
    if maps.is_empty() {
        return;
    }
    out.push_str("% Entries tunnel protection implies, as IOS creates them internally:\n");
    for m in maps {
        let name = s(&m["name"]);
        let _ = writeln!(
            out,
            "\nCrypto Map: \"{name}\" idb: {} local address: {}",
            s(&m["interface"]),
            s(&m["local_addr"])
        );
        let p = &m["profile"];
        let _ = writeln!(out, "\nCrypto Map \"{name}\" 65536 IPsec-isakmp");
        let _ = writeln!(out, "        Profile name: {}", s(&p["name"]));
        profile_body(out, p);
        let _ = writeln!(out, "\nCrypto Map \"{name}\" 65537 IPsec-isakmp");
        out.push_str("        Map is a PROFILE INSTANCE.\n");
        let _ = writeln!(out, "        Peer = {}", s(&m["peer"]));
        if let Some(cur) = m["current_peer"].as_str() {
            let _ = writeln!(out, "        Current peer: {cur}");
        }
        profile_body(out, p);
        let _ = writeln!(
            out,
            "        Interfaces using crypto map {name}:\n                {}",
            s(&m["interface"])
        );
    }
}

fn ikev2_proposal(out: &mut String, body: &Value) {
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let mut any = false;
    for p in rows(body) {
        any = true;
        let _ = writeln!(out, " IKEv2 proposal: {} ", s(&p["name"]));
        let _ = writeln!(out, "     Encryption : {}", list(&p["encryption"]));
        let _ = writeln!(out, "     Integrity  : {}", list(&p["integrity"]));
        let _ = writeln!(out, "     PRF        : {}", list(&p["prf"]));
        let _ = writeln!(out, "     DH Group   : {}", list(&p["dh_groups"]));
        if p["additional_key_exchanges"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            let _ = writeln!(
                out,
                "     Additional : {}",
                list(&p["additional_key_exchanges"])
            );
        }
    }
    if !any {
        out.push_str("% No IKEv2 proposals are configured; IKE profiles use vtid's defaults.\n");
    }
}

fn debug_condition(out: &mut String, body: &Value) {
    let on = if body["on"] == true { "ON" } else { "OFF" };
    let _ = writeln!(out, "Crypto conditional debug currently is turned {on}");
    for (title, key) in [
        ("IKE peer IP address filters:", "peers"),
        ("SPI filters:", "spis"),
        ("Tunnel filters:", "tunnels"),
    ] {
        let v: Vec<String> = rows(&body[key]).map(s).collect();
        if !v.is_empty() {
            let _ = writeln!(out, "{title}\n{}", v.join(" "));
        }
    }
}

/// The RFC 9370 additional key exchanges of a suite (`ke1_mlkem768, ke2_mlkem1024`), when
/// there are any. IOS prints no such line; vtid adds it below the suite line.
fn additional_kes(suite: &Value) -> Option<String> {
    list(&suite["additional_key_exchanges"])
}

/// The `pfs_additional_key_exchanges` of a Child SA row or an IPsec profile.
fn pfs_additional_kes(row: &Value) -> Option<String> {
    list(&row["pfs_additional_key_exchanges"])
}

fn list(v: &Value) -> Option<String> {
    let kes: Vec<&str> = v.as_array()?.iter().filter_map(Value::as_str).collect();
    (!kes.is_empty()).then(|| kes.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sa_row() -> Value {
        json!({
            "interface": "Tunnel0", "ivrf": null, "local_addr": "192.0.2.1",
            "remote_addr": "192.0.2.2", "remote_port": 500, "peer": "192.0.2.2",
            "spi_in": "96185188", "spi_out": "a75421b1", "transform": "esp-gcm 256",
            "udp_encap": null, "encaps_mode": "Tunnel", "iv_size": 8,
            "in": { "packets": 118, "bytes": 9912 }, "out": { "packets": 134, "bytes": 11256 },
            "replay_errors": 1, "integrity_errors": 2,
            "lifetime_remaining_secs": 3242, "lifetime_remaining_kb": 4569747,
            "path_mtu": 1500, "plaintext_mtu": 1422, "session": 1, "pfs": null,
            "local_ts": [{ "addr": "0.0.0.0/0.0.0.0", "protocol": 0, "port": 0 }],
            "remote_ts": [{ "addr": "0.0.0.0/0.0.0.0", "protocol": 0, "port": 0 }],
        })
    }

    fn ike_row() -> Value {
        json!({
            "tunnel_id": 1, "session": 1, "interface": "Tunnel0",
            "local": "192.0.2.1:500", "remote": "192.0.2.2:500", "fvrf": null, "ivrf": null,
            "status": "READY", "suite": { "encr": "AES-GCM", "keysize": 256, "prf": "SHA256",
            "hash": "None", "dh_group": 31 }, "auth_sign": "PSK", "auth_verify": "PSK",
            "lifetime_secs": 86400, "active_secs": 1153, "local_id": "192.0.2.1",
            "remote_id": "192.0.2.2", "nat": false,
        })
    }

    #[test]
    fn ipsec_sa_has_the_ios_field_lines() {
        let t = render(
            &CryptoView::IpsecSa {
                peer: None,
                interface: None,
            },
            &json!([sa_row()]),
        );
        for line in [
            "interface: Tunnel0\n",
            "    Crypto map tag: Tunnel0-head-0, local addr 192.0.2.1\n",
            "   protected vrf: (none)\n",
            "   local  ident (addr/mask/prot/port): (0.0.0.0/0.0.0.0/0/0)\n",
            "   current_peer 192.0.2.2 port 500\n",
            "    #pkts encaps: 134\n",
            "    #pkts decaps: 118\n",
            "    #recv errors 3\n",
            "     local crypto endpt.: 192.0.2.1, remote crypto endpt.: 192.0.2.2\n",
            "     plaintext mtu 1422, path mtu 1500\n",
            "     current outbound spi: 0xA75421B1(2807308721)\n",
            "     PFS (Y/N): N, DH group: none\n",
            "     inbound esp sas:\n      spi: 0x96185188(2518176136)\n",
            "        transform: esp-gcm 256 ,\n",
            "        in use settings ={Tunnel, }\n",
            "        sa timing: remaining key lifetime (k/sec): (4569747/3242)\n",
            "        IV size: 8 bytes\n",
            "        Status: ACTIVE\n",
            "     outbound esp sas:\n      spi: 0xA75421B1(2807308721)\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
        // Counters the kernel does not keep are not made up.
        assert!(
            !t.contains("#send errors") && !t.contains("compressed"),
            "{t}"
        );
    }

    #[test]
    fn ipsec_sa_without_a_kb_limit_and_with_nat_t_and_pfs() {
        let mut r = sa_row();
        r["lifetime_remaining_kb"] = Value::Null;
        r["udp_encap"] = json!({ "local_port": 4500, "remote_port": 4500 });
        r["pfs"] = json!(19);
        let t = render(
            &CryptoView::IpsecSa {
                peer: None,
                interface: None,
            },
            &json!([r]),
        );
        assert!(t.contains("remaining key lifetime (sec): (3242)\n"), "{t}");
        assert!(
            t.contains("in use settings ={Tunnel UDP-Encaps, }\n"),
            "{t}"
        );
        assert!(t.contains("PFS (Y/N): Y, DH group: group19\n"), "{t}");
    }

    #[test]
    fn ikev2_sa_is_laid_out_as_ios() {
        let t = render(&CryptoView::Ikev2Sa, &json!([ike_row()]));
        assert!(t.contains(" IPv4 Crypto IKEv2  SA \n"), "{t}");
        assert!(
            t.contains("Tunnel-id Local                 Remote                fvrf/ivrf            Status\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "1         192.0.2.1/500         192.0.2.2/500         none/none            READY\n"
            ),
            "{t}"
        );
        assert!(t.contains("      Encr: AES-GCM, keysize: 256, PRF: SHA256, Hash: None, DH Grp:31, Auth sign: PSK, Auth verify: PSK\n"), "{t}");
        assert!(
            t.contains("      Life/Active Time: 86400/1153 sec\n"),
            "{t}"
        );
    }

    fn session_body() -> Value {
        json!([{
            "interface": "Tunnel0", "profile": "prof", "status": "UP-ACTIVE",
            "peer": "192.0.2.2", "peer_port": 500, "fvrf": null, "ivrf": null,
            "session_id": 1, "peer_id": "192.0.2.2", "uptime_secs": 3723, "active_sas": 2,
            "ike_sas": [ike_row()], "flows": [sa_row()],
        }])
    }

    #[test]
    fn session_is_laid_out_as_the_seeds() {
        let t = render(&CryptoView::Session { detail: false }, &session_body());
        let want = "Crypto session current status\n\nInterface: Tunnel0\nProfile: prof\n\
                    Session status: UP-ACTIVE\nPeer: 192.0.2.2 port 500\n\
                    IKEv2 SA: local 192.0.2.1/500 remote 192.0.2.2/500 Active\n\
                    IPSEC FLOW: permit ip 0.0.0.0/0.0.0.0 0.0.0.0/0.0.0.0\n\
                    Active SAs: 2, origin: crypto map\n";
        assert_eq!(t, want);
    }

    #[test]
    fn session_detail_has_algorithms_identities_pfs_and_errors() {
        let t = render(&CryptoView::Session { detail: true }, &session_body());
        for line in [
            "Uptime: 01:02:03\n",
            "Peer: 192.0.2.2 port 500 fvrf: (none) ivrf: (none)\n",
            "      Phase1_id: 192.0.2.2\n",
            "  Session ID: 1\n",
            "  IKEv2 SA: local 192.0.2.1/500 remote 192.0.2.2/500 Active\n",
            "          Encr: AES-GCM, keysize: 256, PRF: SHA256, Hash: None, DH Grp:31, Auth sign: PSK, Auth verify: PSK\n",
            "          Local id: 192.0.2.1, Remote id: 192.0.2.2\n",
            "  IPSEC FLOW: permit ip 0.0.0.0/0.0.0.0 0.0.0.0/0.0.0.0\n",
            "        Active SAs: 2, origin: crypto map\n",
            "        Inbound:  #pkts dec'ed 118 drop 3 life (KB/Sec) 4569747/3242\n",
            "        Outbound: #pkts enc'ed 134 life (KB/Sec) 4569747/3242\n",
            "PFS (Y/N): N, DH group: none\n",
            "        #recv errors 3 (replay 1, integrity 2)\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn flows_pair_selectors_of_one_family() {
        let mut r = sa_row();
        let any6 = json!({ "addr": "::/0", "protocol": 0, "port": 0 });
        r["local_ts"].as_array_mut().unwrap().push(any6.clone());
        r["remote_ts"].as_array_mut().unwrap().push(any6);
        assert_eq!(
            flow(&r),
            vec![
                "permit ip 0.0.0.0/0.0.0.0 0.0.0.0/0.0.0.0".to_string(),
                "permit ip ::/0 ::/0".to_string()
            ]
        );
    }

    #[test]
    fn a_down_session_has_no_sa_lines() {
        let body = json!([{ "interface": "Tunnel1", "profile": null, "status": "DOWN",
            "peer": "198.51.100.2", "peer_port": 500, "ike_sas": [], "flows": [] }]);
        let t = render(&CryptoView::Session { detail: false }, &body);
        assert_eq!(
            t,
            "Crypto session current status\n\nInterface: Tunnel1\nSession status: DOWN\nPeer: 198.51.100.2 port 500\n"
        );
    }

    #[test]
    fn isakmp_sa_is_the_header_and_the_note() {
        let t = render(
            &CryptoView::IsakmpSa,
            &json!({ "sas": [], "note": "vtid has no IKEv1 SAs" }),
        );
        assert!(t.starts_with(
            "IPv4 Crypto ISAKMP SA\ndst             src             state          conn-id status\n"
        ));
        assert!(t.ends_with("% vtid has no IKEv1 SAs\n"), "{t}");
    }

    #[test]
    fn ipsec_profile_lists_pfs_additional_key_exchanges() {
        let set = json!({ "name": "ts1", "transform": "esp-gcm 256", "mode": "Tunnel" });
        let prof = json!({ "name": "pq", "lifetime_secs": 3600, "lifetime_kb": 4608000,
            "pfs": 31, "pfs_additional_key_exchanges": ["ke1_mlkem768"], "transform_sets": [set] });
        let t = render(&CryptoView::IpsecProfile, &json!([prof]));
        assert!(
            t.contains("        DH group:  group31\n        Additional KE: ke1_mlkem768\n"),
            "{t}"
        );
        let classic = json!({ "name": "c", "lifetime_secs": 3600, "lifetime_kb": 4608000,
            "pfs": 31, "pfs_additional_key_exchanges": [], "transform_sets": [] });
        let t = render(&CryptoView::IpsecProfile, &json!([classic]));
        assert!(!t.contains("Additional KE"), "{t}");
    }

    #[test]
    fn config_views() {
        let set =
            json!({ "name": "ts1", "transform": "esp-aes 256 esp-sha256-hmac", "mode": "Tunnel" });
        let t = render(&CryptoView::TransformSet, &json!([set]));
        assert_eq!(
            t,
            "Transform set ts1: { esp-aes 256 esp-sha256-hmac  }\n   will negotiate = { Tunnel,  },\n\n"
        );
        let prof = json!({ "name": "p1", "ike_profile": "ikp", "lifetime_secs": 3600,
            "lifetime_kb": 4608000, "pfs": 14, "transform_sets": [set] });
        let t = render(&CryptoView::IpsecProfile, &json!([prof.clone()]));
        for line in [
            "IPSEC profile p1\n",
            "        IKEv2 Profile: ikp\n",
            "        Security association lifetime: 4608000 kilobytes/3600 seconds\n",
            "        PFS (Y/N): Y\n        DH group:  group14\n",
            "        Transform sets={\n                ts1:  { esp-aes 256 esp-sha256-hmac  } ,\n        }\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
        let t = render(
            &CryptoView::Map,
            &json!({ "tunnel_protection": [{ "name": "Tunnel0-head-0", "interface": "Tunnel0",
                "local_addr": "192.0.2.1", "peer": "192.0.2.2", "current_peer": "192.0.2.2",
                "profile": prof }] }),
        );
        for line in [
            "% No crypto maps are configured.",
            "Crypto Map: \"Tunnel0-head-0\" idb: Tunnel0 local address: 192.0.2.1\n",
            "Crypto Map \"Tunnel0-head-0\" 65536 IPsec-isakmp\n        Profile name: p1\n",
            "Crypto Map \"Tunnel0-head-0\" 65537 IPsec-isakmp\n        Map is a PROFILE INSTANCE.\n        Peer = 192.0.2.2\n        Current peer: 192.0.2.2\n",
            "        Interfaces using crypto map Tunnel0-head-0:\n                Tunnel0\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
        let t = render(
            &CryptoView::Ikev2Proposal,
            &json!([{ "name": "prop1", "encryption": ["AES-CBC-256"], "integrity": ["SHA512", "SHA384"],
                "prf": ["SHA512"], "dh_groups": ["DH_GROUP_256_ECP/Group 19", "DH_GROUP_2048_MODP/Group 14"] }]),
        );
        assert_eq!(
            t,
            " IKEv2 proposal: prop1 \n     Encryption : AES-CBC-256\n     Integrity  : SHA512 SHA384\n     PRF        : SHA512\n     DH Group   : DH_GROUP_256_ECP/Group 19 DH_GROUP_2048_MODP/Group 14\n"
        );
    }

    #[test]
    fn debug_condition_as_the_seed() {
        let t = render(
            &CryptoView::DebugCondition,
            &json!({ "on": true, "peers": ["10.1.1.1", "10.1.1.2"], "spis": [], "tunnels": [] }),
        );
        assert_eq!(
            t,
            "Crypto conditional debug currently is turned ON\nIKE peer IP address filters:\n10.1.1.1 10.1.1.2\n"
        );
        let t = render(
            &CryptoView::DebugCondition,
            &json!({ "on": false, "peers": [], "spis": [], "tunnels": [] }),
        );
        assert_eq!(t, "Crypto conditional debug currently is turned OFF\n");
    }
}
