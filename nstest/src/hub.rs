//! Hub-and-spoke building blocks shared by the dynamic VTI scenarios (`agent/tests/dvti.rs`)
//! and the demo: a vtid hub cloning one xfrm interface per spoke from a `virtual_template`,
//! strongSwan and vtid spokes.
//!
//! Addressing: the hub has LAN 10.0.0.1/24 (`lan0`); spoke N is 172.16.N.2 on its own link
//! to the hub (172.16.N.1) and has LAN 10.N.0.1/24. Every spoke routes 10.0.0.0/8 into its
//! tunnel and announces its LAN as its traffic selector, which the hub routes to its clone.

use std::path::Path;
use std::rc::Rc;

use anyhow::Result;

use crate::peer::{Impl, Peer, StrongswanVersion, vtid_peer};
use crate::strongswan::{Strongswan, SwanConn};
use crate::vtid::{Vtid, write_secret};
use crate::vtidconf::{Value, VtidConf};
use crate::{Scenario, TopoSpec};

/// The pre-shared key of every spoke.
pub const PSK: &str = "hub-and-spokes-key";

/// The seeds' simple hub: one IKE profile, one template unnumbered to the hub's LAN, routes
/// from the spokes' traffic selectors, clones in interface group 10.
pub const ONE_TEMPLATE: &str = r#"[ike_profile.spokes]
match_identity = ["172.16.0.0/16"]
keyring = "SPOKES"
virtual_template = "VT1"

[virtual_template.VT1]
unnumbered = "lan0"
protection = "P"
group = 10
routes = "traffic-selectors"
"#;

/// A hub and `n` spokes `s1`..`sN` (see the module comment); the hub forwards.
pub fn topology(n: u8) -> TopoSpec {
    let mut t = TopoSpec::new().lan("hub", "10.0.0.1/24").forward("hub");
    for i in 1..=n {
        let s = format!("s{i}");
        t = t
            .link(
                "hub",
                &format!("172.16.{i}.1/24"),
                &s,
                &format!("172.16.{i}.2/24"),
            )
            .lan(&s, &format!("10.{i}.0.1/24"));
    }
    t
}

/// The hub's vtid.toml: a keyring accepting every spoke address with [`PSK`] from `key`, one
/// transform set and IPsec profile `P`, then `templates` (IKE profiles and templates).
pub fn hub_config(key: &Path, templates: &str) -> String {
    let mut c = VtidConf::new();
    c.keyring("SPOKES", &[("172.16.0.0/16", key)]);
    c.transform_set("T", "aes-gcm-256");
    c.ipsec_profile("P", &["T"])
        .set("lifetime", Value::inline(&[("seconds", 120)]));
    c.text(templates);
    c.render()
}

/// A benchmark hub: vtid in `ns` (logging at `info`) with a keyring giving every address in
/// `spokes` the pre-shared key `psk`, spokes matched by their address identity, and one
/// template `VT1` unnumbered to `lan0` that routes each spoke's traffic selectors into its
/// clone; `global` is the body of `[global]` (empty for vtid's defaults).
pub fn start_psk_template_hub(
    ns: &crate::Netns,
    dir: &Path,
    psk: &str,
    spokes: &str,
    global: &str,
) -> Result<Vtid> {
    start_psk_template_hub_mode(ns, dir, psk, spokes, global, None)
}

/// The `vtid.toml` of [`start_psk_template_hub_mode`]'s hub (the PSK written to `dir`), for
/// a scenario that starts the hub its own way (another environment, a restart).
pub fn psk_template_hub_config(
    dir: &Path,
    psk: &str,
    spokes: &str,
    global: &str,
    mode: Option<&str>,
) -> Result<String> {
    let key = write_secret(dir, "spokes.key", psk)?;
    let mut c = VtidConf::new();
    if !global.is_empty() {
        c.text(&format!("[global]\n{global}\n"));
    }
    c.keyring("SPOKES", &[(spokes, &key)]);
    c.transform_set("T", "aes-gcm-256");
    c.ipsec_profile("P", &["T"]);
    c.ike_profile("spokes")
        .set("match_identity", &[spokes])
        .set("keyring", "SPOKES")
        .set("virtual_template", "VT1");
    c.virtual_template("VT1")
        .set("unnumbered", "lan0")
        .set("protection", "P")
        .set("routes", "traffic-selectors")
        .set_opt("mode", mode);
    Ok(c.render())
}

/// [`start_psk_template_hub`] with the template's `mode` (`"multipoint"`: every spoke on one
/// collect-metadata device; `None`: vtid's default, a clone per spoke).
pub fn start_psk_template_hub_mode(
    ns: &crate::Netns,
    dir: &Path,
    psk: &str,
    spokes: &str,
    global: &str,
    mode: Option<&str>,
) -> Result<Vtid> {
    let cfg = psk_template_hub_config(dir, psk, spokes, global, mode)?;
    Vtid::start_config_with(
        ns,
        dir,
        &cfg,
        "-",
        crate::vtid::RunWith {
            rust_log: Some("info".into()),
            ..Default::default()
        },
    )
}

/// Starts the vtid hub on host `hub` with [`hub_config`]; returns its peer index.
pub fn start_hub(sc: &mut Scenario, templates: &str) -> Result<usize> {
    let dir = sc.dir().join("hub");
    let key = write_secret(&dir, "spokes.key", PSK)?;
    let v = Vtid::start_config(sc.topo.host("hub"), &dir, &hub_config(&key, templates), "-")?;
    Ok(sc.add_peer("hub", vtid_peer(v)))
}

/// Prepares strongSwan spoke `n` on `host`: an xfrm interface `xhub` (if_id 42) routing
/// 10.0.0.0/8 from its LAN address; returns the connection, proposing its LAN as TSi.
pub fn swan_spoke_conn(sc: &Scenario, host: &str, n: u8) -> Result<SwanConn> {
    let ns = sc.topo.host(host);
    ns.ip(&[
        "link", "add", "xhub", "type", "xfrm", "dev", "e-hub", "if_id", "42",
    ])?;
    ns.ip(&["link", "set", "xhub", "up"])?;
    ns.ip(&[
        "route",
        "add",
        "10.0.0.0/8",
        "dev",
        "xhub",
        "src",
        &format!("10.{n}.0.1"),
    ])?;
    let mut conn = SwanConn::psk(&format!("172.16.{n}.2"), &format!("172.16.{n}.1"), PSK);
    conn.local_ts = format!("10.{n}.0.0/24");
    conn.remote_ts = "0.0.0.0/0".into();
    conn.if_id = Some(42);
    Ok(conn)
}

/// A strongSwan spoke kept by the caller (to initiate and terminate) and by the scenario
/// (for its log).
struct Swan(Rc<Strongswan>);

impl Peer for Swan {
    fn implementation(&self) -> Impl {
        Impl::Strongswan(self.0.version())
    }
    fn initiate(&self) -> Result<()> {
        self.0.initiate()
    }
    fn is_up(&self) -> Result<bool> {
        self.0.is_up()
    }
    fn log(&self) -> String {
        self.0.log()
    }
}

/// Starts strongSwan spoke `n` of `version` on `host` ([`swan_spoke_conn`]); it does not
/// initiate yet.
pub fn swan_spoke(
    sc: &mut Scenario,
    host: &str,
    n: u8,
    version: StrongswanVersion,
) -> Result<Rc<Strongswan>> {
    let conn = swan_spoke_conn(sc, host, n)?;
    start_swan_version(sc, host, &conn, version)
}

/// Starts Debian 12's charon on `host` with `conn` (e.g. a [`swan_spoke_conn`] changed to
/// certificates), kept by the scenario for its log.
pub fn start_swan(sc: &mut Scenario, host: &str, conn: &SwanConn) -> Result<Rc<Strongswan>> {
    start_swan_version(sc, host, conn, StrongswanVersion::Debian12)
}

/// [`start_swan`] with the strongSwan version to run.
pub fn start_swan_version(
    sc: &mut Scenario,
    host: &str,
    conn: &SwanConn,
    version: StrongswanVersion,
) -> Result<Rc<Strongswan>> {
    let s = Rc::new(version.start(sc.topo.host(host), &sc.dir().join(host), conn)?);
    sc.add_peer(host, Box::new(Swan(s.clone())));
    Ok(s)
}

/// Starts vtid spoke `n` on `host`: a static xfrm tunnel `Tunnel0` to the hub, unnumbered to
/// its LAN, routing 10.0.0.0/8 and announcing its LAN; it initiates on start. Returns its
/// peer index.
pub fn vtid_spoke(sc: &mut Scenario, host: &str, n: u8) -> Result<usize> {
    let dir = sc.dir().join(host);
    let key = write_secret(&dir, "hub.key", PSK)?;
    let mut c = VtidConf::new();
    c.keyring("K", &[(&format!("172.16.{n}.1"), &key)]);
    c.transform_set("T", "aes-gcm-256");
    c.ipsec_profile("P", &["T"]);
    c.tunnel("Tunnel0")
        .set("source", format!("172.16.{n}.2"))
        .set("destination", format!("172.16.{n}.1"))
        .set("unnumbered", "lan0")
        .set("protection", "P")
        .set("routes", &["10.0.0.0/8"])
        .set("announce", &[format!("10.{n}.0.0/24")][..]);
    let cfg = c.render();
    let v = Vtid::start_config(sc.topo.host(host), &dir, &cfg, "Tunnel0")?;
    Ok(sc.add_peer(host, vtid_peer(v)))
}
