//! Multipoint virtual templates (issue 20, VM): a vtid hub with `mode = "multipoint"` puts
//! every spoke on one xfrm interface in collect-metadata mode (`vtid-mp`), each spoke with
//! its own if_id, SAs, policies and `encap xfrm if_id N` routes. Spokes are strongSwan or
//! vtid, picked by parameter (`nstest::hub` builds the topology and both kinds of spoke). The
//! hub is read with `ip -j` (links, routes), `ip xfrm` (no JSON) and its control socket.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nstest::assert::{poll_every, wait_until};
use nstest::hub::{start_hub, swan_spoke, topology, vtid_spoke};
use nstest::kernel;
use nstest::peer::StrongswanVersion;
use nstest::strongswan::Strongswan;
use nstest::vtid::Vtid;
use nstest::{Netns, Scenario, scenario};

/// The hub's template: every spoke on one collect-metadata device, routed by its traffic
/// selectors.
const MULTIPOINT: &str = r#"[ike_profile.spokes]
match_identity = ["172.16.0.0/16"]
keyring = "SPOKES"
virtual_template = "VT1"

[virtual_template.VT1]
mode = "multipoint"
unnumbered = "lan0"
protection = "P"
routes = "traffic-selectors"
"#;

/// The multipoint device's default name.
const DEVICE: &str = "vtid-mp";
/// if_id of spoke number 1 (`virtual_access::IF_ID_BASE + 1`, the clones' band).
const FIRST_IF_ID: u32 = 0x7660_0001;
/// vtid's link group (ARCHITECTURE.md, ownership marks).
const OWNED_GROUP: u64 = 7654;

/// Which implementation a spoke runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Strongswan,
    Vtid,
}

/// A spoke of either kind, connected and disconnected from this process (VICI for
/// strongSwan, the control socket for vtid), so a churn loop pays no process start.
enum Spoke {
    Swan(Rc<Strongswan>),
    Vtid(usize),
}

impl Spoke {
    /// Starts spoke `n` (host `sN`, address 172.16.N.2, LAN 10.N.0.0/24) of kind `side`; a
    /// vtid spoke connects on its own, a strongSwan spoke when told.
    fn start(sc: &mut Scenario, side: Side, n: u8) -> Result<Spoke> {
        let host = format!("s{n}");
        Ok(match side {
            Side::Strongswan => Spoke::Swan(swan_spoke(sc, &host, n, StrongswanVersion::Debian12)?),
            Side::Vtid => Spoke::Vtid(vtid_spoke(sc, &host, n)?),
        })
    }

    fn vtid(sc: &Scenario, i: usize) -> Result<&Vtid> {
        sc.peer(i).as_vtid_ref().context("a vtid spoke")
    }

    fn connect(&self, sc: &Scenario) -> Result<()> {
        match self {
            Spoke::Swan(s) => s.initiate_vici(),
            Spoke::Vtid(i) => Self::vtid(sc, *i)?
                .request(&serde_json::json!({"cmd": "up", "tunnel": "Tunnel0"}))
                .map(drop),
        }
    }

    fn disconnect(&self, sc: &Scenario) -> Result<()> {
        match self {
            Spoke::Swan(s) => s.terminate_vici(),
            Spoke::Vtid(i) => Self::vtid(sc, *i)?
                .request(&serde_json::json!({"cmd": "down", "tunnel": "Tunnel0"}))
                .map(drop),
        }
    }

    /// The spoke itself has no session left (a vtid spoke's `down` ends its IKE SA; VICI's
    /// terminate returns once charon's has gone).
    fn gone(&self, sc: &Scenario) -> Result<bool> {
        match self {
            Spoke::Swan(_) => Ok(true),
            Spoke::Vtid(i) => Ok(Self::vtid(sc, *i)?
                .query("sessions")?
                .as_array()
                .is_none_or(Vec::is_empty)),
        }
    }
}

/// One spoke as the hub's `show tunnels` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SpokeRow {
    name: String,
    if_id: u32,
    remote: String,
    interface: String,
    routes: Vec<String>,
}

fn hub(sc: &Scenario, i: usize) -> Result<&Vtid> {
    sc.peer(i).as_vtid_ref().context("the hub is vtid")
}

/// The hub's spokes, by remote address, read over its control socket.
fn spokes(hub: &Vtid) -> Result<BTreeMap<String, SpokeRow>> {
    let v = hub.query("tunnels")?;
    let mut out = BTreeMap::new();
    for t in v.as_array().into_iter().flatten() {
        if t["dynamic"] != true {
            continue;
        }
        ensure!(t["mode"] == "spoke", "a multipoint spoke's mode: {t}");
        let row = SpokeRow {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            if_id: t["if_id"].as_u64().context("if_id")? as u32,
            remote: t["remote"].as_str().unwrap_or_default().to_string(),
            interface: t["interface"].as_str().unwrap_or_default().to_string(),
            routes: t["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
        };
        out.insert(row.remote.clone(), row);
    }
    Ok(out)
}

/// The hub's xfrm links as `ip -j -d link` shows them.
fn xfrm_links(ns: &Netns) -> Result<Vec<serde_json::Value>> {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "-d", "link"])?)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["linkinfo"]["info_kind"] == "xfrm")
        .cloned()
        .collect())
}

/// Routes through the multipoint device in every table, as (prefix, if_id of their `encap
/// xfrm`), from `ip -j route show table all`.
fn device_routes(ns: &Netns) -> Result<BTreeMap<String, u32>> {
    let v: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "route", "show", "table", "all", "dev", DEVICE])?)?;
    let mut out = BTreeMap::new();
    for r in v.as_array().into_iter().flatten() {
        let dst = r["dst"].as_str().unwrap_or_default().to_string();
        // The device's own entries (local, broadcast, its IPv6 link-local prefix) are the
        // kernel's, carry no encap and are not spokes'.
        if r["type"].as_str().is_some_and(|t| t != "unicast") || r["protocol"] == "kernel" {
            continue;
        }
        ensure!(r["encap"] == "xfrm", "route {dst} without encap xfrm: {r}");
        let if_id = r["if_id"]
            .as_u64()
            .with_context(|| format!("if_id in {r}"))?;
        // The route names its spoke's nexthop object (the IPv4 one's id is the if_id), so
        // the kernel hashes it apart from the other spokes' (`xfrm`'s nexthop module); its
        // device and encap above are the nexthop's, shown by nexthop_compat_mode.
        ensure!(
            r["nhid"].as_u64() == Some(if_id),
            "route {dst} names no spoke nexthop: {r}"
        );
        out.insert(dst, if_id as u32);
    }
    Ok(out)
}

/// The hub's nexthop objects, as id -> if_id of their `encap xfrm`, from `ip -j nexthop
/// show`: each must be vtid's (protocol 76) on the multipoint device.
fn spoke_nexthops(ns: &Netns) -> Result<BTreeMap<u32, u32>> {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "nexthop", "show"])?)?;
    let mut out = BTreeMap::new();
    for n in v.as_array().into_iter().flatten() {
        ensure!(
            // "vtid" where the package's rt_protos.d entry names protocol 76.
            n["dev"] == DEVICE
                && n["encap"] == "xfrm"
                && (n["protocol"] == "76" || n["protocol"] == 76 || n["protocol"] == "vtid"),
            "a nexthop that is not a spoke's: {n}"
        );
        let id = n["id"].as_u64().with_context(|| format!("id in {n}"))?;
        let if_id = n["if_id"]
            .as_u64()
            .with_context(|| format!("if_id in {n}"))?;
        out.insert(id as u32, if_id as u32);
    }
    Ok(out)
}

/// The hub's policies per if_id, from `ip xfrm policy` (no JSON): each block names its
/// if_id on a line `if_id 0x...`.
fn policy_if_ids(ns: &Netns) -> Result<BTreeMap<u32, usize>> {
    let text = ns.ip(&["xfrm", "policy"])?;
    let mut out = BTreeMap::new();
    let mut blocks = 0;
    let mut with_if_id = 0;
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with("dir ") {
            blocks += 1;
        }
        if let Some(v) = l.strip_prefix("if_id ") {
            let v = v.split_whitespace().next().unwrap_or_default();
            let id = u32::from_str_radix(v.trim_start_matches("0x"), 16)
                .with_context(|| format!("if_id {v}"))?;
            *out.entry(id).or_default() += 1;
            with_if_id += 1;
        }
    }
    ensure!(
        blocks == with_if_id,
        "{blocks} policies, {with_if_id} with an if_id:\n{text}"
    );
    Ok(out)
}

/// The hub's SAs (SPI != 0) per if_id, from `ip xfrm state`.
fn sa_if_ids(ns: &Netns) -> Result<BTreeMap<u32, usize>> {
    let mut out = BTreeMap::new();
    for s in kernel::xfrm_states(ns)?.into_iter().filter(|s| s.spi != 0) {
        let id = s
            .if_id
            .with_context(|| format!("SA {:08x} without if_id", s.spi))?;
        *out.entry(id).or_default() += 1;
    }
    Ok(out)
}

/// The one multipoint device: kind xfrm in collect-metadata mode (`external`), no if_id of
/// its own, vtid's group and alias, up; and no other xfrm interface.
fn check_device(ns: &Netns) -> Result<()> {
    let links = xfrm_links(ns)?;
    ensure!(links.len() == 1, "one xfrm interface: {links:?}");
    let l = &links[0];
    ensure!(l["ifname"] == DEVICE, "{l}");
    let data = &l["linkinfo"]["info_data"];
    ensure!(
        data.get("external").is_some() || data.get("collect_metadata").is_some(),
        "collect-metadata mode: {l}"
    );
    ensure!(
        data["if_id"].as_u64().unwrap_or(0) == 0,
        "the device has no if_id: {l}"
    );
    ensure!(
        l["group"].as_u64() == Some(OWNED_GROUP)
            || l["group"].as_str() == Some(&OWNED_GROUP.to_string()),
        "group: {l}"
    );
    ensure!(l["ifalias"] == format!("vtid:{DEVICE}"), "alias: {l}");
    ensure!(
        l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        "up: {l}"
    );
    Ok(())
}

/// Everything the hub holds for its spokes agrees: each spoke in `show tunnels` on the
/// device with a distinct if_id, its LAN routed with that if_id, two SAs and its policies
/// with that if_id, and nothing with any other if_id. Returns the rows by remote.
fn check_spokes(sc: &Scenario, h: usize, up: &[u8]) -> Result<BTreeMap<String, SpokeRow>> {
    let ns = sc.topo.host("hub");
    let rows = spokes(hub(sc, h)?)?;
    let remotes: Vec<String> = up.iter().map(|n| format!("172.16.{n}.2")).collect();
    ensure!(
        rows.keys().cloned().collect::<Vec<_>>() == remotes,
        "spokes {rows:?}, want {remotes:?}"
    );
    let routes = device_routes(ns)?;
    let pols = policy_if_ids(ns)?;
    let sas = sa_if_ids(ns)?;
    let mut want_routes = BTreeMap::new();
    for n in up {
        let r = &rows[&format!("172.16.{n}.2")];
        ensure!(r.interface == DEVICE, "{r:?}");
        ensure!(
            r.name == format!("{DEVICE}:{}", r.if_id - FIRST_IF_ID + 1),
            "{r:?}"
        );
        ensure!(r.routes == [format!("10.{n}.0.0/24")], "{r:?}");
        want_routes.insert(format!("10.{n}.0.0/24"), r.if_id);
        ensure!(
            sas.get(&r.if_id) == Some(&2),
            "two SAs with if_id {:#x}: {sas:?}",
            r.if_id
        );
        ensure!(
            pols.get(&r.if_id).is_some_and(|c| *c >= 3),
            "out/in/fwd policies with if_id {:#x}: {pols:?}",
            r.if_id
        );
    }
    ensure!(
        routes == want_routes,
        "routes {routes:?}, want {want_routes:?}"
    );
    // One IPv4 nexthop object per spoke (the template is IPv4-only), named by its if_id.
    let nexthops = spoke_nexthops(ns)?;
    let want_nexthops: BTreeMap<u32, u32> = want_routes.values().map(|i| (*i, *i)).collect();
    ensure!(
        nexthops == want_nexthops,
        "nexthops {nexthops:x?}, want {want_nexthops:x?}"
    );
    let ids: Vec<u32> = want_routes.values().copied().collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    ensure!(distinct.len() == ids.len(), "distinct if_ids: {ids:?}");
    ensure!(
        pols.keys().all(|k| ids.contains(k)) && sas.keys().all(|k| ids.contains(k)),
        "policies {pols:?} or SAs {sas:?} of no spoke"
    );
    // Every spoke has the same policy set.
    let counts: Vec<usize> = pols.values().copied().collect();
    ensure!(counts.windows(2).all(|w| w[0] == w[1]), "{pols:?}");
    Ok(rows)
}

fn pings(sc: &Scenario, from: u8, src: &str, dst: &str) -> Result<()> {
    let got = kernel::ping(sc.topo.host(&format!("s{from}")), src, dst, 3)?;
    ensure!(got == 3, "{got}/3 pings from {src} to {dst}");
    Ok(())
}

/// Hub and LAN reachability for the spokes `up`: each spoke's LAN reaches the hub's LAN,
/// and each pair of spokes reaches each other through the hub.
fn check_traffic(sc: &Scenario, up: &[u8]) -> Result<()> {
    for &n in up {
        pings(sc, n, &format!("10.{n}.0.1"), "10.0.0.1")?;
        for &m in up.iter().filter(|m| **m != n) {
            pings(sc, n, &format!("10.{n}.0.1"), &format!("10.{m}.0.1"))?;
        }
    }
    Ok(())
}

/// A multipoint hub with spokes of the kinds `sides` (spoke N is `sides[N-1]`): one device,
/// a distinct if_id, SAs, policies and `encap xfrm` route per spoke, hub LAN and
/// spoke-to-spoke traffic; then each spoke in turn disconnects, which removes exactly its
/// route, SAs and policies (the device and the other spoke stay and keep working), and
/// comes back.
fn multipoint_hub(name: &str, sides: [Side; 2]) {
    scenario(name, topology(2), |sc| {
        let h = start_hub(sc, MULTIPOINT)?;
        wait_until("the multipoint device", Duration::from_secs(20), || {
            Ok(!xfrm_links(sc.topo.host("hub"))?.is_empty())
        })?;
        check_device(sc.topo.host("hub"))?;
        let s: Vec<Spoke> = sides
            .iter()
            .zip(1u8..)
            .map(|(side, n)| Spoke::start(sc, *side, n))
            .collect::<Result<_>>()?;
        let sc: &Scenario = sc;
        let ns = sc.topo.host("hub");
        for (spoke, side) in s.iter().zip(sides) {
            if side == Side::Strongswan {
                spoke.connect(sc)?;
            }
        }
        wait_until("both spokes on the hub", Duration::from_secs(60), || {
            Ok(spokes(hub(sc, h)?)?.len() == 2 && sa_if_ids(ns)?.values().sum::<usize>() == 4)
        })?;
        let rows = check_spokes(sc, h, &[1, 2])?;
        check_device(ns)?;
        check_traffic(sc, &[1, 2])?;
        eprintln!("spokes: {rows:?}");
        for (k, spoke) in s.iter().enumerate() {
            let (gone, other) = (k as u8 + 1, 2 - k as u8);
            let before = policy_if_ids(ns)?;
            let old = rows[&format!("172.16.{gone}.2")].if_id;
            spoke.disconnect(sc)?;
            wait_until(
                &format!("spoke {gone} off the hub"),
                Duration::from_secs(30),
                || Ok(spokes(hub(sc, h)?)?.len() == 1 && spoke.gone(sc)?),
            )?;
            // Exactly its route, SAs and policies went; the device and the other's stay.
            check_spokes(sc, h, &[other])?;
            check_device(ns)?;
            let after = policy_if_ids(ns)?;
            ensure!(
                !after.contains_key(&old) && after.len() + 1 == before.len(),
                "policies before {before:?}, after {after:?} (if_id {old:#x} left)"
            );
            ensure!(
                !sa_if_ids(ns)?.contains_key(&old),
                "SAs with if_id {old:#x} left"
            );
            check_traffic(sc, &[other])?;
            spoke.connect(sc)?;
            wait_until(
                &format!("spoke {gone} back"),
                Duration::from_secs(60),
                || {
                    Ok(spokes(hub(sc, h)?)?.len() == 2
                        && sa_if_ids(ns)?.values().sum::<usize>() == 4)
                },
            )?;
        }
        let rows = check_spokes(sc, h, &[1, 2])?;
        check_traffic(sc, &[1, 2])?;
        // `show tunnels` lists the device with its spoke count.
        let t = hub(sc, h)?.show("tunnels")?;
        ensure!(
            t.as_array()
                .into_iter()
                .flatten()
                .any(|r| r["name"] == DEVICE && r["mode"] == "multipoint" && r["spokes"] == 2),
            "show tunnels: {t}"
        );
        // The hub's operator disconnects spoke 1 by its name (`vtid down vtid-mp:N`): its
        // peer is told, and exactly its route, SAs and policies go.
        let name = &rows["172.16.1.2"].name;
        hub(sc, h)?.cli(&["down", name])?;
        wait_until(
            &format!("{name} down from the hub"),
            Duration::from_secs(30),
            || Ok(spokes(hub(sc, h)?)?.len() == 1),
        )?;
        check_spokes(sc, h, &[2])?;
        check_device(ns)?;
        check_traffic(sc, &[2])?;
        Ok(())
    });
}

/// Issue 20: a multipoint hub with a strongSwan spoke and a vtid spoke.
#[test]
#[ignore = "vm"]
fn vm_multipoint_hub_strongswan_and_vtid_spokes() {
    multipoint_hub("mp-hub", [Side::Strongswan, Side::Vtid]);
}

/// How often the churn loop polls (a cycle is a few hundred milliseconds).
const CHURN_POLL: Duration = Duration::from_millis(20);
/// Connect/disconnect cycles of the churn scenario; `MP_CHURN_CYCLES` overrides it.
const CHURN_CYCLES: u32 = 30;

/// Issue 20: connect/disconnect cycles of spoke 1, joined every other cycle by spoke 2,
/// leave no route, SA, policy or if_id behind on the hub; the device stays throughout, and
/// the if_ids are given back (every cycle's spokes get the first numbers).
fn multipoint_churn(name: &str, sides: [Side; 2]) {
    scenario(name, topology(2), |sc| {
        let h = start_hub(sc, MULTIPOINT)?;
        let s: Vec<Spoke> = sides
            .iter()
            .zip(1u8..)
            .map(|(side, n)| Spoke::start(sc, *side, n))
            .collect::<Result<_>>()?;
        let sc: &Scenario = sc;
        let ns = sc.topo.host("hub");
        // A vtid spoke connects on start: let that finish, then take it down so every cycle
        // starts from nothing.
        for (spoke, side) in s.iter().zip(sides) {
            if side == Side::Vtid {
                wait_until(
                    "vtid spoke's first connection",
                    Duration::from_secs(60),
                    || Ok(!spokes(hub(sc, h)?)?.is_empty()),
                )?;
                spoke.disconnect(sc)?;
            }
        }
        wait_until("no spoke", Duration::from_secs(30), || {
            Ok(spokes(hub(sc, h)?)?.is_empty())
        })?;
        let cycles: u32 = std::env::var("MP_CHURN_CYCLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CHURN_CYCLES);
        let start = Instant::now();
        for i in 0..cycles {
            let both = i % 2 == 0;
            let n = if both { 2 } else { 1 };
            for spoke in &s[..n] {
                spoke
                    .connect(sc)
                    .with_context(|| format!("cycle {i}: connect"))?;
            }
            poll_every(
                &format!("cycle {i}: spokes up"),
                Duration::from_secs(30),
                CHURN_POLL,
                || {
                    Ok(spokes(hub(sc, h)?)?.len() == n
                        && sa_if_ids(ns)?.values().sum::<usize>() == 2 * n)
                },
            )?;
            // The lowest numbers, whoever came first.
            let mut ids: Vec<u32> = spokes(hub(sc, h)?)?.values().map(|r| r.if_id).collect();
            ids.sort();
            let want: Vec<u32> = (0..n as u32).map(|k| FIRST_IF_ID + k).collect();
            ensure!(ids == want, "cycle {i}: if_ids {ids:x?}, want {want:x?}");
            ensure!(
                device_routes(ns)?.len() == n && spoke_nexthops(ns)?.len() == n,
                "cycle {i}: routes {:?}, nexthops {:?}",
                device_routes(ns)?,
                spoke_nexthops(ns)?
            );
            for spoke in &s[..n] {
                spoke
                    .disconnect(sc)
                    .with_context(|| format!("cycle {i}: disconnect"))?;
            }
            poll_every(
                &format!("cycle {i}: spokes gone"),
                Duration::from_secs(30),
                CHURN_POLL,
                || {
                    Ok(spokes(hub(sc, h)?)?.is_empty()
                        && s[..n]
                            .iter()
                            .map(|x| x.gone(sc))
                            .all(|g| g.is_ok_and(|g| g)))
                },
            )?;
        }
        eprintln!(
            "{cycles} multipoint connect/disconnect cycles, {:?} each",
            start.elapsed() / cycles.max(1)
        );
        // Nothing left but the device: no route through it, no SA, no policy.
        let hubv = hub(sc, h)?;
        for what in ["sessions", "sa"] {
            let v = hubv.query(what)?;
            ensure!(v.as_array().is_some_and(Vec::is_empty), "show {what}: {v}");
        }
        check_device(ns)?;
        let routes = device_routes(ns)?;
        ensure!(routes.is_empty(), "routes left: {routes:?}");
        let nexthops = spoke_nexthops(ns)?;
        ensure!(nexthops.is_empty(), "nexthops left: {nexthops:x?}");
        let all = ns.ip(&["route", "show", "table", "all"])?;
        ensure!(
            !all.contains("10.1.0.0/24") && !all.contains("10.2.0.0/24"),
            "{all}"
        );
        let sas = kernel::xfrm_states(ns)?;
        ensure!(
            sas.iter().all(|s| s.spi == 0),
            "SAs left: {}",
            ns.ip(&["xfrm", "state"])?
        );
        let pols = policy_if_ids(ns)?;
        ensure!(pols.is_empty(), "policies left: {pols:?}");
        // Both spokes again: the first two if_ids, and traffic flows.
        for spoke in &s {
            spoke.connect(sc)?;
        }
        wait_until("both spokes after churn", Duration::from_secs(60), || {
            Ok(spokes(hub(sc, h)?)?.len() == 2 && sa_if_ids(ns)?.values().sum::<usize>() == 4)
        })?;
        let rows = check_spokes(sc, h, &[1, 2])?;
        let mut ids: Vec<u32> = rows.values().map(|r| r.if_id).collect();
        ids.sort();
        ensure!(
            ids == [FIRST_IF_ID, FIRST_IF_ID + 1],
            "after churn: {ids:x?}"
        );
        check_traffic(sc, &[1, 2])?;
        Ok(())
    });
}

/// Issue 20: churn with a strongSwan spoke every cycle and a vtid spoke every other one.
#[test]
#[ignore = "vm"]
fn vm_multipoint_churn_leaves_nothing_behind() {
    multipoint_churn("mp-churn", [Side::Strongswan, Side::Vtid]);
}
