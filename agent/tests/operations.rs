//! Operations scenarios (VM): the Prometheus listener scraped and parsed while two tunnels
//! carry traffic, and `vtid debug peer` raising logging for one peer only, at run time.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::assert::{pings_pass, shown_spis_in, tunnels_up, wait_until};
use nstest::peer::{Device, Impl, TunnelEnd};
use nstest::topo::iface_to;
use nstest::vtid::{RunWith, Vtid, render_many, write_secret};
use nstest::{Netns, TopoSpec, scenario};

const METRICS: &str = "127.0.0.1:9477";

/// The hub-like vtid `a` with tunnels to `b` (192.0.2.0/24) and `c` (198.51.100.0/24).
fn spec() -> TopoSpec {
    TopoSpec::new()
        .link("a", "192.0.2.1/24", "b", "192.0.2.2/24")
        .link("a", "198.51.100.1/24", "c", "198.51.100.2/24")
        .lan("a", "10.1.0.1/24")
        .lan("b", "10.2.0.1/24")
        .lan("c", "10.3.0.1/24")
}

/// One end of the a<->peer tunnel; `n` is 2 for b, 3 for c.
fn end(on_a: bool, n: u8) -> TunnelEnd {
    let (a_ip, p_ip, peer) = match n {
        2 => ("192.0.2.1", "192.0.2.2", "b"),
        _ => ("198.51.100.1", "198.51.100.2", "c"),
    };
    let (local, remote, name, underlay, addr, route) = if on_a {
        (
            a_ip,
            p_ip,
            format!("tun{peer}"),
            iface_to(peer),
            format!("10.255.{n}.1/30"),
            format!("10.{n}.0.0/24"),
        )
    } else {
        (
            p_ip,
            a_ip,
            "tuna".to_string(),
            iface_to("a"),
            format!("10.255.{n}.2/30"),
            "10.1.0.0/24".to_string(),
        )
    };
    TunnelEnd {
        local: local.into(),
        remote: remote.into(),
        psk: format!("operations-psk-{n}-0123456789abcdef"),
        device: Device::Xfrmi {
            name,
            if_id: 40 + u32::from(n),
            underlay,
        },
        address: Some(addr),
        routes: vec![route],
        initiator: on_a,
        ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
        esp_proposals: "aes256gcm16".into(),
        child_lifetime: None,
    }
}

/// The metrics page from inside `ns`.
fn scrape(ns: &Netns) -> Result<String> {
    nstest::vtid::scrape_metrics(ns, METRICS)
}

type Samples = Vec<(String, std::collections::BTreeMap<String, String>, f64)>;

fn value(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    s.iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|x| x.2)
        .with_context(|| format!("no sample {name}{labels:?}"))
}

fn start_a(dir: &Path, ns: &Netns) -> Result<Vtid> {
    let (eb, ec) = (end(true, 2), end(true, 3));
    let kb = write_secret(dir, "b.key", &eb.psk)?;
    let kc = write_secret(dir, "c.key", &ec.psk)?;
    let cfg = format!(
        "[global]\nmetrics = \"{METRICS}\"\n\n{}",
        render_many(&[(&eb, &kb), (&ec, &kc)])?
    );
    // Plain `info`: the engine's debug lines must come from the condition, not RUST_LOG.
    let with = RunWith {
        rust_log: Some("info".into()),
        ..RunWith::default()
    };
    Vtid::start_config_with(ns, dir, &cfg, "tunb", with)
}

/// Takes both tunnels down and up again: fresh IKE exchanges with both peers. A tunnel may
/// come back by itself (an ACQUIRE from queued traffic), so "down" is observed as its old
/// SAs being gone, and "up again" as two tunnels up on SAs that are all new.
fn cycle(v: &Vtid) -> Result<()> {
    let old = spis(v)?;
    for t in ["tunb", "tunc"] {
        v.cli(&["down", t])?;
    }
    wait_until("the old SAs gone", Duration::from_secs(20), || {
        Ok(spis(v)?.is_disjoint(&old))
    })?;
    for t in ["tunb", "tunc"] {
        v.cli(&["up", t])?;
    }
    wait_until("both tunnels up again", Duration::from_secs(40), || {
        Ok(tunnels_up(v)? == 2 && spis(v)?.len() == 2)
    })
}

/// The inbound SPIs `vtid show sa` lists, as a set.
fn spis(v: &Vtid) -> Result<BTreeSet<String>> {
    Ok(shown_spis_in(v)?.into_iter().collect())
}

#[test]
#[ignore = "vm"]
fn vm_metrics_scrape_and_conditional_debug() {
    scenario("operations", spec(), |sc| {
        sc.start_peer(Impl::Vtid, "b", &end(false, 2))?;
        sc.start_peer(Impl::Vtid, "c", &end(false, 3))?;
        let v = start_a(&sc.dir().join("a"), sc.topo.host("a"))?;
        body(sc, &v).with_context(|| format!("==== log of vtid on a\n{}", v.log()))
    });
}

fn body(sc: &nstest::Scenario, v: &Vtid) -> Result<()> {
    wait_until("both tunnels up", Duration::from_secs(40), || {
        Ok(tunnels_up(v)? == 2)
    })?;
    let ha = sc.topo.host("a");
    pings_pass(ha, "10.1.0.1", "10.2.0.1", 3, "a->b LAN pings")?;
    pings_pass(ha, "10.1.0.1", "10.3.0.1", 4, "a->c LAN pings")?;

    // Metrics: parse the whole page, then check what the traffic must have moved.
    let text = scrape(ha)?;
    let s = vtid::metrics::parse(&text).map_err(anyhow::Error::msg)?;
    for t in ["tunb", "tunc"] {
        ensure!(
            value(&s, "vtid_tunnel_up", &[("tunnel", t)])? == 1.0,
            "{t} up\n{text}"
        );
        for d in ["in", "out"] {
            let l = [("tunnel", t), ("direction", d)];
            let p = value(&s, "vtid_tunnel_packets_total", &l)?;
            let b = value(&s, "vtid_tunnel_bytes_total", &l)?;
            ensure!(
                p >= 3.0 && b >= 3.0 * 84.0,
                "{t} {d}: {p} packets {b} bytes\n{text}"
            );
        }
        ensure!(value(&s, "vtid_child_sas", &[("tunnel", t), ("offload", "none")])? == 1.0);
        ensure!(
            value(
                &s,
                "vtid_tunnel_rekeys_total",
                &[("tunnel", t), ("sa", "child")]
            )? == 0.0
        );
    }
    let outc = value(
        &s,
        "vtid_tunnel_packets_total",
        &[("tunnel", "tunc"), ("direction", "out")],
    )?;
    ensure!(outc >= 4.0, "tunc carried the 4 pings: {outc}");
    ensure!(
        value(&s, "vtid_ike_sas", &[("state", "Established")])? == 2.0,
        "{text}"
    );

    // Conditional debug: a bad value is refused and sets nothing.
    ensure!(
        v.cli(&["debug", "peer", "192.0.2.300"]).is_err(),
        "bad address accepted"
    );
    let on = v.cli(&["debug", "peer", "192.0.2.2"])?;
    ensure!(on.contains("peer 192.0.2.2"), "debug on answered {on}");
    let mark = v.log().len();
    cycle(v)?;
    let log = v.log();
    let new: Vec<&str> = log[mark..]
        .lines()
        .filter(|l| l.contains("DEBUG"))
        .collect();
    ensure!(
        new.iter()
            .any(|l| l.contains("192.0.2.2") && l.contains("IKE datagram")),
        "no debug line for the selected peer"
    );
    ensure!(
        !new.iter().any(|l| l.contains("198.51.100.2")),
        "debug lines for the other peer:\n{}",
        new.join("\n")
    );
    v.cli(&["debug", "peer", "192.0.2.2", "--off"])?;
    let mark = v.log().len();
    cycle(v)?;
    ensure!(
        !v.log()[mark..].contains("DEBUG"),
        "debug lines after --off"
    );
    Ok(())
}
