//! The IKE front door under attack (VM): a vtid dynamic-VTI hub whose UDP 500 faces an
//! attacker namespace that sends from the spoofed prefix 10.99.0.0/16 (`nstest::flood`: an
//! AnyIP route there, the hub routes the prefix back so its answers can be counted), while
//! legitimate strongSwan spokes (172.16.N.2, `nstest::hub`) connect or keep their tunnels.
//!
//! What is proven, each by something that can fail: forgeries of a half-open SA's request are
//! not answered (no reflection, RFC 7296 §2.1); one source cannot hold more than
//! `half_open_limit_per_source` half-open SAs; above `cookie_threshold` new requests are
//! answered with a stateless COOKIE (§2.6) and even an attacker who echoes them gets state
//! only up to `half_open_limit`; established tunnels keep passing traffic, answering DPD and
//! rekeying through a flood, and a new spoke still connects.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nstest::assert::wait_until;
use nstest::flood::{Flood, FloodReport, FloodSpec, Mode};
use nstest::hub::{PSK, start_swan, swan_spoke_conn, topology};
use nstest::kernel::Pinger;
use nstest::strongswan::Strongswan;
use nstest::vtid::{RunWith, Vtid, write_secret};
use nstest::vtidconf::{Value, VtidConf};
use nstest::{Netns, Scenario, TopoSpec, scenario};

const METRICS: &str = "127.0.0.1:9477";
/// The hub's address on the attacker's link: the target.
const HUB_WAN: &str = "198.51.100.1";
const ATTACKER: &str = "198.51.100.2";
const SPOOFED: &str = "10.99.0.0/16";

/// The hub with `spokes` strongSwan spoke links (`nstest::hub::topology`) and the attacker
/// `att` on its own link, its spoofed prefix routed both ways.
fn spec(spokes: u8) -> TopoSpec {
    topology(spokes).link(
        "hub",
        &format!("{HUB_WAN}/24"),
        "att",
        &format!("{ATTACKER}/24"),
    )
}

fn target() -> std::net::SocketAddrV4 {
    format!("{HUB_WAN}:500").parse().expect("address")
}

fn first_spoofed() -> std::net::Ipv4Addr {
    "10.99.0.1".parse().expect("address")
}

/// An internet-facing dynamic-VTI hub: any address may start IKE (keyring 0.0.0.0/0, as a
/// hub for spokes on dynamic addresses has), so the attacker's requests are well-formed
/// requests the hub must consider. `global` is extra `[global]` keys (the front-door limits).
/// Logs at plain `info` so that what the log holds is what an operator would see (rejections
/// summarised, never one line per packet).
fn start_hub(sc: &mut Scenario, global: &str) -> Result<Vtid> {
    let dir = sc.dir().join("hub");
    let key = write_secret(&dir, "spokes.key", PSK)?;
    let mut c = VtidConf::new();
    c.text(&format!("[global]\nmetrics = \"{METRICS}\"\n{global}\n"));
    c.keyring("SPOKES", &[("0.0.0.0/0", &key)]);
    c.transform_set("T", "aes-gcm-256");
    c.ipsec_profile("P", &["T"])
        .set("lifetime", Value::inline(&[("seconds", 120)]));
    c.ike_profile("spokes")
        .set("match_identity", &["0.0.0.0/0"])
        .set("keyring", "SPOKES")
        .set("virtual_template", "VT1")
        .set(
            "dpd",
            Value::raw("{ interval = 2, retries = 3, action = \"clear\" }"),
        );
    c.virtual_template("VT1")
        .set("unnumbered", "lan0")
        .set("protection", "P")
        .set("routes", "traffic-selectors");
    let with = RunWith {
        rust_log: Some("info".into()),
        ..RunWith::default()
    };
    // The kernel loads the AES-GCM modules on the first SA that uses them, which takes
    // seconds under TCG: the first spoke's IKE_AUTH response would wait for it past
    // strongSwan's retransmissions here (1 + 2 + 4 + 8 s). A throw-away SA in the attacker's
    // namespace pays that before anything is timed.
    nstest::kernel::warm_up_aes_gcm(sc.topo.host("att"))?;
    let v = Vtid::start_config_with(sc.topo.host("hub"), &dir, &c.render(), "-", with)?;
    nstest::flood::prepare(sc.topo.host("att"), sc.topo.host("hub"), SPOOFED, ATTACKER)?;
    Ok(v)
}

/// A sample of the hub's metrics; an absent counter sample is 0 (counters by reason appear
/// once a reason has been seen).
fn metric(hub: &Netns, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let text = nstest::vtid::scrape_metrics(hub, METRICS)?;
    let s = vtid::metrics::parse(&text).map_err(anyhow::Error::msg)?;
    Ok(s.iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |x| x.2))
}

fn rejected(hub: &Netns, reason: &str) -> Result<f64> {
    metric(hub, "vtid_ike_rejected_total", &[("reason", reason)])
}

/// Counts, in the hub's own output path (nftables, independent of the attacker's sockets),
/// the IKE datagrams the hub sends to the spoofed prefix.
fn count_hub_replies(hub: &Netns) -> Result<()> {
    let rules = format!(
        "table inet dos {{\n  chain out {{\n    type filter hook output priority 0;\n    \
         ip daddr {SPOOFED} udp sport {{ 500, 4500 }} counter\n  }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("{}-dos.nft", hub.name()));
    std::fs::write(&file, rules)?;
    hub.exec(&["nft", "-f", &file.to_string_lossy()])?;
    Ok(())
}

fn hub_replies(hub: &Netns) -> Result<u64> {
    let out = hub.exec(&["nft", "list", "chain", "inet", "dos", "out"])?;
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no counter in {out}"))
}

fn with_log<T>(hub: &Vtid, r: Result<T>) -> Result<T> {
    r.with_context(|| format!("==== log of the vtid hub\n{}", hub.log()))
}

/// RFC 7296 §2.1: a retransmission is the identical request. A half-open SA exists (the
/// attacker's own well-formed IKE_SA_INIT); header-only (28-byte) and garbage-body datagrams
/// carrying its header get nothing back, counted both by the attacker and in the hub's output
/// path; the byte-identical retransmission gets exactly the original response, once; the
/// forgeries are counted as `altered_retransmission`.
#[test]
#[ignore = "vm"]
fn vm_dos_reflection() {
    scenario("dos-reflection", spec(1), |sc| {
        let hub = start_hub(sc, "")?;
        with_log(&hub, reflection(sc))
    });
}

fn reflection(sc: &mut Scenario) -> Result<()> {
    let h = sc.topo.host("hub");
    count_hub_replies(h)?;
    let mut spec = FloodSpec::new(target(), first_spoofed(), 1, Mode::Probe);
    spec.forgeries = 5;
    let r = Flood::run(sc.topo.host("att"), sc.dir(), &spec)?;
    let step = |what: &str| {
        r.steps
            .iter()
            .find(|s| s.what == what)
            .with_context(|| format!("no step {what}: {r:?}"))
    };
    ensure!(r.sa_init == 1, "the request made a half-open SA: {r:?}");
    let (hdr, garbage, retx) = (
        step("header_only")?,
        step("garbage_body")?,
        step("retransmission")?,
    );
    ensure!(hdr.sent == 5 && hdr.replies == 0, "header-only: {hdr:?}");
    ensure!(
        garbage.sent == 5 && garbage.replies == 0,
        "garbage body: {garbage:?}"
    );
    ensure!(
        retx.replies == 1 && retx.identical_to_first_answer == 1,
        "the identical retransmission gets the original response, once: {retx:?}"
    );
    // The hub's own count: the response and its one replay, nothing for the 10 forgeries.
    let sent = hub_replies(h)?;
    ensure!(
        sent == 2,
        "the hub sent {sent} datagrams to the attacker, not 2"
    );
    let altered = rejected(h, "altered_retransmission")?;
    ensure!(
        altered == 10.0,
        "altered_retransmission = {altered}, not 10"
    );
    Ok(())
}

/// strongSwan's block_threshold as `half_open_limit_per_source`: one source opens more
/// half-open SAs than the limit (cookies are pushed out of the way with high thresholds, so
/// the block is what is measured); exactly the limit gets answers, the excess gets nothing
/// and is counted; meanwhile a strongSwan spoke from another address connects.
#[test]
#[ignore = "vm"]
fn vm_dos_per_source_block() {
    scenario("dos-per-source", spec(1), |sc| {
        let hub = start_hub(
            sc,
            "cookie_threshold = 1000\ncookie_threshold_per_source = 1000\n\
             half_open_limit_per_source = 5\nhalf_open_timeout = 60",
        )?;
        with_log(&hub, per_source_block(sc))
    });
}

fn per_source_block(sc: &mut Scenario) -> Result<()> {
    let conn = swan_spoke_conn(sc, "s1", 1)?;
    let s1 = start_swan(sc, "s1", &conn)?;
    let h = sc.topo.host("hub");
    count_hub_replies(h)?;
    let mut spec = FloodSpec::new(target(), first_spoofed(), 1, Mode::Init);
    spec.count = 12;
    spec.rate = 4;
    let flood = Flood::start(sc.topo.host("att"), sc.dir(), &spec)?;
    s1.initiate()
        .context("the legitimate spoke connects during the attack")?;
    let r = flood.wait()?;
    ensure!(r.sent == 12, "{r:?}");
    ensure!(
        r.sa_init == 5 && r.replies() == 5,
        "exactly half_open_limit_per_source = 5 answered: {r:?}"
    );
    let blocked = rejected(h, "half_open_limit_per_source")?;
    ensure!(
        blocked == 7.0,
        "half_open_limit_per_source = {blocked}, not 7"
    );
    let sent = hub_replies(h)?;
    ensure!(
        sent == 5,
        "the hub sent {sent} datagrams to the attacker, not 5"
    );
    let half = metric(h, "vtid_ike_half_open", &[])?;
    ensure!(half == 5.0, "vtid_ike_half_open = {half}, not 5");
    ensure!(s1.is_up()?, "the legitimate spoke is up");
    Ok(())
}

/// RFC 7296 §2.6 against an attacker who owns its addresses and so can echo cookies: many
/// sources push the hub past `cookie_threshold` (4): new requests get COOKIE replies; the
/// echoes create state, but only up to `half_open_limit` (10), beyond which requests are
/// dropped (`half_open_limit`). When the attacker's half-open SAs have timed out
/// (`half_open_timeout` = 20 s), the hub is pushed past the cookie threshold again, and a
/// legitimate strongSwan spoke connects through a cookie. The hub's log holds a bounded
/// number of rejection lines (a summary per reason per 10 s, never one per packet).
#[test]
#[ignore = "vm"]
fn vm_dos_cookie_echoing_attacker() {
    scenario("dos-cookie-echo", spec(1), |sc| {
        let hub = start_hub(
            sc,
            "cookie_threshold = 4\nhalf_open_limit = 10\nhalf_open_timeout = 20",
        )?;
        with_log(&hub, cookie_echoing(sc, &hub))
    });
}

/// Log lines about rejected IKE input in `log` (vtid's summaries name the reason).
fn rejection_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("reject")
                || [
                    "cookie_required",
                    "bad_cookie",
                    "half_open_limit",
                    "ike_sa_limit",
                    "queue_full",
                    "altered_retransmission",
                    "unknown_ike_spi",
                    "invalid_message",
                ]
                .iter()
                .any(|r| l.contains(r))
        })
        .count()
}

fn cookie_echoing(sc: &mut Scenario, hub: &Vtid) -> Result<()> {
    let conn = swan_spoke_conn(sc, "s1", 1)?;
    let s1 = start_swan(sc, "s1", &conn)?;
    let h = sc.topo.host("hub");
    let log_mark = hub.log().len();
    // 40 sources, two requests each (below every per-source threshold), 20/s: 4 s.
    let mut spec = FloodSpec::new(target(), first_spoofed(), 40, Mode::InitEchoCookie);
    spec.count = 80;
    spec.rate = 20;
    let started = Instant::now();
    let r = Flood::run(sc.topo.host("att"), sc.dir(), &spec)?;
    let took = started.elapsed();
    ensure!(r.sent == 80, "{r:?}");
    ensure!(
        r.cookie >= 1,
        "no COOKIE answers above the threshold: {r:?}"
    );
    ensure!(
        r.echoed >= 1 && r.sa_init_after_cookie >= 1,
        "an echoed cookie creates state: {r:?}"
    );
    ensure!(
        r.sa_init == 10,
        "the echoing attacker got state exactly up to half_open_limit = 10: {r:?}"
    );
    // The half-open SAs made first time out 20 s after the flood began: the sample must be
    // taken before that for the count to be the limit (a slow scrape made this fail once).
    let half = metric(h, "vtid_ike_half_open", &[])?;
    let sampled = started.elapsed();
    ensure!(
        half == 10.0 && sampled < Duration::from_secs(20),
        "vtid_ike_half_open = {half}, not 10, sampled {sampled:?} after the flood began (it \
         took {took:?})"
    );
    let (cookies, limited) = (
        rejected(h, "cookie_required")?,
        rejected(h, "half_open_limit")?,
    );
    ensure!(
        cookies == r.cookie as f64,
        "cookie_required = {cookies}, the attacker got {} cookies",
        r.cookie
    );
    // Every request sent that got neither state nor a cookie was dropped at the limit.
    let unanswered = (r.sent + r.echoed) - r.sa_init - r.cookie;
    ensure!(
        limited >= 1.0 && limited == unanswered as f64,
        "half_open_limit = {limited}, unanswered requests {unanswered}: {r:?}"
    );
    // The attacker never completes: its half-open SAs time out.
    wait_until(
        "the attacker's half-open SAs timed out",
        Duration::from_secs(45),
        || Ok(metric(h, "vtid_ike_half_open", &[])? == 0.0),
    )?;
    // The log: per reason (cookie_required, half_open_limit, and the attacker's SAs timing
    // out is no rejection) the first rejection whole, then one summary per 10 s window,
    // never one line per packet. Counted once the windows of the flood have closed.
    if let Some(rest) = Duration::from_secs(22).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let windows = started.elapsed().as_secs() as usize / 10 + 1;
    let lines = rejection_lines(&hub.log()[log_mark..]);
    let rejections = (unanswered + r.cookie) as usize;
    let bound = 2 * (1 + windows);
    ensure!(
        lines <= bound && rejections > bound,
        "{lines} rejection log lines for {rejections} rejected requests (bound {bound}, flood \
         {took:?}):\n{}",
        &hub.log()[log_mark..]
    );
    // Above the cookie threshold again: a slow plain flood from 20 sources keeps four
    // half-open SAs (the threshold) on the hub for as long as the spoke needs, so the spoke
    // must come in through a cookie; strongSwan's own log shows the COOKIE it answered.
    let mut spec = FloodSpec::new(target(), "10.99.1.1".parse()?, 20, Mode::Init);
    spec.count = 160;
    spec.rate = 4;
    spec.duration = Duration::from_secs(40);
    let flood = Flood::start(sc.topo.host("att"), sc.dir(), &spec)?;
    wait_until(
        "the hub at its cookie threshold again",
        Duration::from_secs(30),
        || Ok(metric(h, "vtid_ike_half_open", &[])? >= 4.0),
    )?;
    s1.initiate().context("the legitimate spoke connects")?;
    ensure!(s1.is_up()?, "the legitimate spoke is up");
    let r = flood.wait()?;
    ensure!(r.cookie >= 1 && r.sa_init <= 10, "{r:?}");
    ensure!(
        s1.log().contains("N(COOKIE)"),
        "the spoke was not asked for a cookie:\n{}",
        s1.log()
    );
    Ok(())
}

/// The `spi-in=` values of strongSwan's Child SAs (`swanctl --list-sas --raw`).
fn child_spis(raw: &str) -> Vec<String> {
    raw.split("spi-in=")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The `initiator-spi=` of strongSwan's IKE SA.
fn ike_spi(raw: &str) -> Option<String> {
    raw.split("initiator-spi=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_string)
}

/// An established tunnel (strongSwan spoke, DPD every 2 s on both ends, Child SA rekeyed
/// every 10-15 s by the spoke) keeps passing pings, keeps its IKE SA (no DPD failure) and
/// rekeys while a spoofed flood of well-formed IKE_SA_INITs (100/s from 200 sources) runs:
/// the hub serves established peers' datagrams from their own queue first. A new spoke
/// connects during the flood within its no-flood connect time plus 25 s. Why 25 s: the new
/// spoke's IKE_SA_INIT waits in the hub's new-SA queue behind at most 512 flood requests
/// (`NEW_SA_QUEUE`, agent/src/sockets.rs), twice (its request, then its COOKIE echo, RFC 7296
/// §2.6, as the flood keeps the hub above its cookie threshold); the debug hub under TCG
/// serves about 60 of them a second at this flood (measured: 408 shed as `queue_full` in 10
/// s at 100/s), so about 9 s a round, 2 x 10 s plus 5 s of margin. The spoke retransmits at
/// 1, 2, 4, 8 and 16 s (`retransmit_tries = 5`) so a 9 s round is within its attempts. On a
/// release hub or with KVM the flood is served at once and the bound is slack.
#[test]
#[ignore = "vm"]
fn vm_dos_established_unaffected() {
    scenario("dos-established", spec(2), |sc| {
        let hub = start_hub(sc, "")?;
        with_log(&hub, established(sc, &hub))
    });
}

fn established(sc: &mut Scenario, hub: &Vtid) -> Result<()> {
    let mut conn = swan_spoke_conn(sc, "s1", 1)?;
    conn.dpd_delay = Some("2s".into());
    conn.child_rekey_time = Some("15s".into());
    // strongSwan subtracts a random time up to rand_time (default life_time - rekey_time)
    // from rekey_time: 20 s keeps the rekey between 10 and 15 s, never at once.
    conn.child_life_time = Some("20s".into());
    let s1 = start_swan(sc, "s1", &conn)?;
    let conn2 = swan_spoke_conn(sc, "s2", 2)?;
    let s2 = Strongswan::start_conf_tuned(
        sc.topo.host("s2"),
        &sc.dir().join("s2"),
        &conn2.render(),
        "  retransmit_tries = 5\n",
    )?;
    let t0 = Instant::now();
    s1.initiate().context("s1 connects")?;
    let baseline = t0.elapsed();
    let raw = s1.list_sas()?;
    let (ike, children) = (ike_spi(&raw), child_spis(&raw));
    ensure!(ike.is_some() && !children.is_empty(), "{raw}");
    let log_mark = hub.log().len();
    let pinger = Pinger::start(
        sc.topo.host("s1"),
        "10.1.0.1",
        "10.0.0.1",
        Duration::from_millis(200),
    )?;
    // 200 sources, 100 requests/s for 40 s: past the default cookie threshold within the
    // first second, and long enough for two of s1's Child SA rekeys.
    let mut spec = FloodSpec::new(target(), first_spoofed(), 200, Mode::Init);
    spec.rate = 100;
    spec.count = 4000;
    spec.duration = Duration::from_secs(40);
    let flood = Flood::start(sc.topo.host("att"), sc.dir(), &spec)?;
    std::thread::sleep(Duration::from_secs(5));
    let t1 = Instant::now();
    s2.initiate()
        .with_context(|| format!("s2 connects during the flood\n==== s2's log\n{}", s2.log()))?;
    let during = t1.elapsed();
    let bound = baseline + Duration::from_secs(25);
    ensure!(
        during <= bound,
        "s2 took {during:?} during the flood, bound {bound:?} (no-flood {baseline:?})"
    );
    wait_until(
        "s1's Child SA rekeyed during the flood",
        Duration::from_secs(30),
        || {
            let now = child_spis(&s1.list_sas()?);
            Ok(!now.is_empty() && now.iter().all(|s| !children.contains(s)))
        },
    )?;
    let r: FloodReport = flood.wait()?;
    let log = pinger.stop()?;
    ensure!(r.sent >= 3000, "the flood ran: {r:?}");
    // Traffic keeps flowing. The ESP path is the kernel's; vtid's part is that the SAs stay:
    // a Child SA lost to a DPD verdict or a failed rekey shows as an outage of seconds (DPD
    // declares the peer dead after 2 s x 4 here), while the TCG VM, busy with the flood, the
    // attacker and the other scenario, drops a ping now and then. So: no outage of a second
    // or more, and at least 97 % of the pings answered.
    let rekeys = hub.log()[log_mark..].matches("ChildSaRekeyed").count();
    ensure!(
        log.sent >= 100
            && log.longest_outage() < Duration::from_secs(1)
            && f64::from(log.received) >= 0.97 * f64::from(log.sent),
        "pings through the flood ({rekeys} rekeys): {log:?}"
    );
    let raw = s1.list_sas()?;
    ensure!(
        ike_spi(&raw) == ike && raw.contains("state=ESTABLISHED"),
        "s1 kept its IKE SA (no DPD failure): {raw}"
    );
    ensure!(
        !s1.log().contains("giving up"),
        "s1 gave up on a DPD or rekey exchange"
    );
    ensure!(s2.is_up()?, "s2 still up");
    let h = sc.topo.host("hub");
    eprintln!(
        "dos-established: s2 connected in {during:?} during the flood (no-flood {baseline:?}); \
         flood sent {}, {} half-open granted, {} cookies; hub shed {} (queue_full)",
        r.sent,
        r.sa_init,
        r.cookie,
        rejected(h, "queue_full")?
    );
    Ok(())
}
