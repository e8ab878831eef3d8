//! The attacker itself (`nstest flood`), on the host kernel: namespaces, a veth, the AnyIP
//! route and UDP are all this needs. A small responder (python3, in the hub namespace) plays
//! the §2.6 game of RFC 7296 without any IKE code: it answers an IKE_SA_INIT without a cookie
//! with a COOKIE notify, and one that echoes that cookie as its first payload with a response
//! carrying an SA payload. So what the attacker counts, and that it echoes cookies the way a
//! real initiator must, is checked against a peer written separately from its encoder.

use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nstest::flood::{Flood, FloodSpec, Mode};
use nstest::{Netns, TopoSpec};

const RESPONDER: &str = r#"
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('198.51.100.1', 500))
s.settimeout(0.2)
print('bound', flush=True)
cookie = b'\xaa' * 16
end = time.time() + 40
while time.time() < end:
    try:
        b, a = s.recvfrom(4096)
    except socket.timeout:
        continue
    # Requests only: IKE_SA_INIT (34) without the Response flag (0x20).
    if len(b) < 28 or b[18] != 34 or b[19] & 0x20:
        continue
    # A COOKIE notify first (next payload 41; type 16390 at 34..36; data from 36) with ours?
    if b[16] == 41 and b[34:36] == b'\x40\x06' and b[36:52] == cookie:
        nxt, spi_r, body = 33, b'\x00' * 7 + b'\x01', bytes([0, 0, 0, 8, 0, 0, 0, 0])
    else:
        nxt, spi_r = 41, bytes(8)
        body = bytes([0, 0]) + struct.pack('!H', 8 + len(cookie)) + bytes([0, 0]) \
            + struct.pack('!H', 16390) + cookie
    hdr = b[:8] + spi_r + bytes([nxt, 0x20, 34, 0x20]) + bytes(4) \
        + struct.pack('!I', 28 + len(body))
    s.sendto(hdr + body, a)
"#;

struct Responder(Child);

impl Responder {
    fn start(ns: &Netns) -> Result<Self> {
        use std::io::BufRead;
        let mut c = ns
            .command("python3")
            .args(["-c", RESPONDER])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the python3 responder")?;
        // Until it has bound its socket: a request that arrives before draws an ICMP port
        // unreachable, and the attacker's connected socket then fails its next send with
        // ECONNREFUSED (a fixed half second was not enough on a loaded host: ten such
        // errors, one per source).
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.take().context("responder stdout")?)
            .read_line(&mut line)?;
        ensure!(
            line.trim() == "bound",
            "the responder did not bind: {line:?}"
        );
        Ok(Self(c))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup() -> Result<nstest::Topo> {
    let topo = TopoSpec::new()
        .link("hub", "198.51.100.1/24", "att", "198.51.100.2/24")
        .build()?;
    nstest::flood::prepare(
        topo.host("att"),
        topo.host("hub"),
        "10.99.0.0/16",
        "198.51.100.2",
    )?;
    Ok(topo)
}

#[test]
fn flood_from_spoofed_sources_counts_cookies_and_echoes_them() -> Result<()> {
    let topo = setup()?;
    let _r = Responder::start(topo.host("hub"))?;
    let dir = std::env::temp_dir().join(format!("nstest-flood-{}", std::process::id()));
    let target = "198.51.100.1:500".parse()?;
    let first = "10.99.0.1".parse()?;

    // Mode (c): every request gets a COOKIE back, none is echoed, none makes state.
    let mut spec = FloodSpec::new(target, first, 10, Mode::Init);
    spec.count = 30;
    spec.rate = 100;
    spec.linger = Duration::from_secs(1);
    let r = Flood::run(topo.host("att"), &dir, &spec)?;
    ensure!(
        r.sent == 30 && r.cookie == 30 && r.echoed == 0 && r.sa_init == 0,
        "{r:?}"
    );
    ensure!(r.replies() == 30 && r.send_errors == 0, "{r:?}");

    // Mode (d): every COOKIE is echoed once, and every echo is answered with state, from
    // each of the ten spoofed addresses.
    let spec = FloodSpec {
        mode: Mode::InitEchoCookie,
        ..spec
    };
    let r = Flood::run(topo.host("att"), &dir, &spec)?;
    ensure!(
        r.sent == 30 && r.cookie == 30 && r.echoed == 30,
        "every cookie echoed once: {r:?}"
    );
    ensure!(
        r.sa_init == 30 && r.sa_init_after_cookie == 30,
        "every echo answered with state: {r:?}"
    );
    ensure!(
        r.sa_init_by_source.len() == 10 && r.sa_init_by_source.values().all(|n| *n == 3),
        "three per source: {:?}",
        r.sa_init_by_source
    );
    Ok(())
}

#[test]
fn probe_forgeries_reach_the_target_and_count_its_answers() -> Result<()> {
    let topo = setup()?;
    let _r = Responder::start(topo.host("hub"))?;
    let dir = std::env::temp_dir().join(format!("nstest-probe-{}", std::process::id()));
    let mut spec = FloodSpec::new(
        "198.51.100.1:500".parse()?,
        "10.99.0.7".parse()?,
        1,
        Mode::Probe,
    );
    spec.forgeries = 3;
    spec.step_wait = Duration::from_millis(500);
    let r = Flood::run(topo.host("att"), &dir, &spec)?;
    // This responder answers everything with the same COOKIE (it keeps no state), so every
    // forgery and the retransmission come back identical to the first answer: the probe
    // counts what the target sends, it does not assume silence.
    let steps: Vec<(&str, u64, u64, u64)> = r
        .steps
        .iter()
        .map(|s| {
            (
                s.what.as_str(),
                s.sent,
                s.replies,
                s.identical_to_first_answer,
            )
        })
        .collect();
    ensure!(
        steps
            == [
                ("request", 1, 1, 1),
                ("header_only", 3, 3, 3),
                ("garbage_body", 3, 3, 3),
                ("retransmission", 1, 1, 1),
            ],
        "{steps:?}"
    );
    ensure!(r.cookie == 1, "{r:?}");
    Ok(())
}
