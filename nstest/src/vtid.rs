//! vtid as a peer in a namespace: its own generated `vtid.toml`, PSK file (mode 0600), control
//! socket and log in a private directory; driven only through its CLI, like an operator would.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::kernel::wait_until;
use crate::netns::Netns;
use crate::peer::{Device, TunnelEnd};
use crate::vtidconf::{Value, VtidConf};

/// The `vtid` binary under test: `NSTEST_VTID_BIN`, else `target/<profile>/vtid` next to the
/// running test binary (cargo builds it for the vtid package's integration tests).
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NSTEST_VTID_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let cand = dir.join("vtid");
        if cand.is_file() {
            return Ok(cand);
        }
    }
    bail!(
        "vtid binary not found near {} (set NSTEST_VTID_BIN or build it)",
        exe.display()
    )
}

/// strongSwan ESP proposal syntax to a vtid transform set: `esp`, and `integrity` for a
/// non-AEAD cipher.
fn transform_set(esp: &str) -> Result<(&'static str, Option<&'static str>)> {
    let first = esp.split(',').next().unwrap_or(esp);
    Ok(match first {
        "aes256gcm16" | "aes256gcm128" => ("aes-gcm-256", None),
        "aes128gcm16" | "aes128gcm128" => ("aes-gcm-128", None),
        "chacha20poly1305" => ("chacha20-poly1305", None),
        "aes256-sha256" => ("aes-cbc-256", Some("sha256")),
        "aes128-sha256" => ("aes-cbc-128", Some("sha256")),
        "aes256-sha384" => ("aes-cbc-256", Some("sha384")),
        "aes256-sha512" => ("aes-cbc-256", Some("sha512")),
        other => bail!("no vtid equivalent for ESP proposal {other}"),
    })
}

/// A strongSwan proposal split into its algorithm tokens and its RFC 9370 additional key
/// exchanges (`keN_METHOD`, N = 1..7): `aes256gcm16-prfsha384-x25519-ke1_mlkem768` gives
/// `(["aes256gcm16", "prfsha384", "x25519"], ["mlkem768"])`. Several methods for one round
/// (strongSwan's `ke1_mlkem768-ke1_none`) become vtid's alternatives (`mlkem768|none`).
fn split_addke(proposal: &str) -> Result<(Vec<&str>, Vec<String>)> {
    let first = proposal.split(',').next().unwrap_or(proposal);
    let (mut algs, mut rounds) = (Vec::new(), Vec::<Vec<&str>>::new());
    for tok in first.split('-') {
        let Some((n, method)) = tok
            .strip_prefix("ke")
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(n, m)| Some((n.parse::<usize>().ok()?, m)))
        else {
            algs.push(tok);
            continue;
        };
        if !(1..=7).contains(&n) {
            bail!("{tok} in {proposal}: RFC 9370 has ADDKE1..ADDKE7");
        }
        if rounds.len() < n {
            rounds.resize(n, Vec::new());
        }
        rounds[n - 1].push(method);
    }
    if rounds.iter().any(Vec::is_empty) {
        bail!("{proposal}: a round of additional key exchanges is skipped");
    }
    Ok((algs, rounds.iter().map(|r| r.join("|")).collect()))
}

/// The `[ike_proposal]` keys of a strongSwan IKE proposal's algorithm tokens (AEAD, PRF,
/// group), for the proposals vtid's defaults do not cover.
fn ike_proposal_keys(algs: &[&str]) -> Result<(&'static str, String, String)> {
    let [enc, prf, group] = algs else {
        bail!("expected AEAD-PRF-GROUP in {algs:?}");
    };
    let enc = match *enc {
        "aes256gcm16" => "aes-gcm-256",
        "aes128gcm16" => "aes-gcm-128",
        "chacha20poly1305" => "chacha20-poly1305",
        other => bail!("no vtid equivalent for IKE encryption {other}"),
    };
    let prf = prf
        .strip_prefix("prf")
        .with_context(|| format!("expected a PRF (prfsha384), not {prf}"))?;
    Ok((enc, prf.to_owned(), (*group).to_owned()))
}

/// vtid.toml for one tunnel end.
pub fn render(end: &TunnelEnd, psk_file: &Path) -> Result<String> {
    render_many(&[(end, psk_file)])
}

/// vtid.toml for several tunnels, each with its own key file, transform set and profile
/// (`T<i>`, `P<i>`; keyring `K` lists every peer).
pub fn render_many(tunnels: &[(&TunnelEnd, &Path)]) -> Result<String> {
    let mut c = VtidConf::new();
    let peers: Vec<(&str, &Path)> = tunnels
        .iter()
        .map(|(end, psk_file)| (end.remote.as_str(), *psk_file))
        .collect();
    c.keyring("K", &peers);
    for (i, (end, _)) in tunnels.iter().enumerate() {
        // vtid's default IKE proposals cover the classic suites the scenarios offer; one with
        // additional key exchanges gets its own proposal and IKE profile.
        let (ike_algs, ike_addke) = split_addke(&end.ike_proposals)?;
        let ike_profile = if ike_addke.is_empty() {
            None
        } else {
            let (enc, prf, group) = ike_proposal_keys(&ike_algs)?;
            let addke: Vec<&str> = ike_addke.iter().map(String::as_str).collect();
            c.ike_proposal(&format!("X{i}"))
                .set("encryption", &[enc])
                .set("prf", &[prf.as_str()])
                .set("group", &[group.as_str()])
                .set("additional_key_exchanges", &addke[..]);
            c.ike_profile(&format!("I{i}"))
                .set("proposals", &[format!("X{i}").as_str()])
                .set("keyring", "K")
                .set("match_identity", &[end.remote.as_str()]);
            Some(format!("I{i}"))
        };
        // ESP: the transform set from the cipher; a PFS group and its additional key
        // exchanges (`aes256gcm16-x25519-ke1_mlkem768`) from the tokens after it.
        let (esp_algs, esp_addke) = split_addke(&end.esp_proposals)?;
        let (cipher, pfs) = match esp_algs[..] {
            [c, g] if !g.starts_with("sha") => (c.to_owned(), Some(g)),
            _ => (esp_algs.join("-"), None),
        };
        let (esp, integrity) = transform_set(&cipher)?;
        c.transform_set(&format!("T{i}"), esp)
            .set_opt("integrity", integrity);
        let pfs_addke: Vec<&str> = esp_addke.iter().map(String::as_str).collect();
        c.ipsec_profile(&format!("P{i}"), &[format!("T{i}").as_str()])
            .set_opt(
                "lifetime",
                end.child_lifetime
                    .map(|secs| Value::inline(&[("seconds", secs.into())])),
            )
            .set_opt("ike_profile", ike_profile)
            .set_opt("pfs", pfs)
            .set_opt(
                "pfs_additional_key_exchanges",
                (!pfs_addke.is_empty()).then_some(&pfs_addke[..]),
            );
        let (mode, if_id) = match &end.device {
            Device::Xfrmi { if_id, .. } => ("xfrmi", *if_id),
            Device::Vti { key, .. } => ("vti", *key),
        };
        let addr = end
            .address
            .as_deref()
            .context("a vtid tunnel needs an inner address")?;
        c.tunnel(end.device.name())
            .set("mode", mode)
            .set("if_id", if_id)
            .set("source", &end.local)
            .set("destination", &end.remote)
            .set("address", addr)
            .set("protection", format!("P{i}"))
            .set("routes", &end.routes[..])
            .set("initiate", end.initiator);
    }
    Ok(c.render())
}

/// Fetches vtid's Prometheus page at `addr` (e.g. `127.0.0.1:9477`) from inside `ns`, by
/// `nstest http-get` run there ([`http_get`]): a scrape must cost little next to what it
/// measures. python3's urllib, used before, took up to 9 s to start under TCG while a flood
/// kept the VM's CPUs busy, long enough for a half-open SA to time out between the flood and
/// the sample the test compared with it.
pub fn scrape_metrics(ns: &Netns, addr: &str) -> Result<String> {
    crate::cmd::run(
        ns.command(&crate::flood::nstest_binary()?.to_string_lossy())
            .args(["http-get", addr, "/metrics"]),
    )
}

/// `GET path` from `addr` over HTTP/1.1 with `Connection: close` (all vtid's metrics
/// listener speaks): the body of a 200 answer, or an error naming the status line. Runs in
/// the caller's namespace: `nstest http-get ADDR PATH` is how a test reaches a listener in
/// another one.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
    let timeout = Duration::from_secs(10);
    let mut s = std::net::TcpStream::connect_timeout(&sock, timeout)
        .with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("read the answer")?;
    let text = String::from_utf8(raw).context("the answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("an answer without the end of its head")?;
    let status = head.lines().next().unwrap_or_default();
    ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "GET {path} from {addr}: {status}"
    );
    Ok(body.to_string())
}

/// Writes a secret file with mode 0600 (vtid refuses key files others can read) and returns
/// its path.
pub fn write_secret(dir: &Path, name: &str, secret: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, secret)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// The control socket of the [`Vtid`] running in `ns`. A unix socket: kept off 9p, in the
/// guest-local /tmp.
fn socket_path(ns: &Netns) -> PathBuf {
    std::env::temp_dir().join(format!("nstest-vtid-{}.sock", ns.name()))
}

/// `vtid show WHAT --json` of the vtid running in `ns`, for a test that handed its [`Vtid`]
/// to the scenario (for the diagnostics) and kept only the namespace; asked over the control
/// socket, as [`Vtid::show`].
pub fn show_in(ns: &Netns, what: &str) -> Result<serde_json::Value> {
    request_at(&socket_path(ns), &show_request(what))
}

/// The control-socket request `vtid show WHAT` sends (`{"cmd":"show-sa"}`).
fn show_request(what: &str) -> serde_json::Value {
    serde_json::json!({ "cmd": format!("show-{what}") })
}

/// One request on the control socket at `socket`: the JSON line protocol of
/// `agent/src/control.rs`, returning the `ok` body.
fn request_at(socket: &Path, req: &serde_json::Value) -> Result<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut resp = String::new();
    BufReader::new(s).read_line(&mut resp)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&resp).with_context(|| format!("bad response {resp:?}"))?;
    match v.get_mut("ok") {
        Some(body) => Ok(body.take()),
        None => bail!("vtid answered {req} with {resp}"),
    }
}

/// How to run a [`Vtid`]: which binary (e.g. the one installed from the Debian package) and
/// which `RUST_LOG`.
#[derive(Clone, Debug, Default)]
pub struct RunWith {
    /// The program run as `vtid`; default [`binary`].
    pub binary: Option<PathBuf>,
    /// `RUST_LOG`; default `info,ike=debug`.
    pub rust_log: Option<String>,
    /// More environment for the daemon (e.g. a failpoint).
    pub env: Vec<(String, String)>,
}

/// A running `vtid run` in a namespace.
pub struct Vtid {
    ns_name: String,
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    tunnel: String,
    with: RunWith,
}

impl Vtid {
    /// Writes the config and key file into `dir` and starts the daemon in `ns`.
    pub fn start(ns: &Netns, dir: &Path, end: &TunnelEnd) -> Result<Self> {
        Self::start_many(ns, dir, std::slice::from_ref(end))
    }

    /// Like [`Vtid::start`] with several tunnels in one config.
    pub fn start_many(ns: &Netns, dir: &Path, ends: &[TunnelEnd]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let text = Self::write_many(dir, ends)?;
        let first = ends.first().context("no tunnels")?.device.name();
        Self::start_config(ns, dir, &text, first)
    }

    /// Writes one key file per tunnel into `dir` and returns the config for `ends`.
    fn write_many(dir: &Path, ends: &[TunnelEnd]) -> Result<String> {
        let mut files = Vec::new();
        for (i, e) in ends.iter().enumerate() {
            files.push(write_secret(dir, &format!("psk{i}.key"), &e.psk)?);
        }
        let pairs: Vec<_> = ends
            .iter()
            .zip(files.iter().map(PathBuf::as_path))
            .collect();
        render_many(&pairs)
    }

    /// Rewrites the config for `ends` (key files included); `vtid reload` applies it.
    pub fn rewrite_config(&self, ends: &[TunnelEnd]) -> Result<()> {
        let text = Self::write_many(&self.dir, ends)?;
        std::fs::write(self.config_path(), text)?;
        Ok(())
    }

    /// Starts the daemon in `ns` with a hand-written `config` (written to `dir/vtid.toml`);
    /// `tunnel` is the one [`Vtid::initiate`] brings up. Key files are the caller's, e.g.
    /// through [`write_secret`].
    pub fn start_config(ns: &Netns, dir: &Path, config: &str, tunnel: &str) -> Result<Self> {
        Self::start_config_with(ns, dir, config, tunnel, RunWith::default())
    }

    /// Like [`Vtid::start_config`], with another binary or log filter.
    pub fn start_config_with(
        ns: &Netns,
        dir: &Path,
        config: &str,
        tunnel: &str,
        with: RunWith,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("vtid.toml"), config)?;
        let socket = socket_path(ns);
        let mut v = Self {
            ns_name: ns.name().to_string(),
            dir: dir.to_path_buf(),
            socket,
            child: None,
            tunnel: tunnel.to_string(),
            with,
        };
        v.spawn()?;
        Ok(v)
    }

    /// A daemon this process did not start (systemd runs it: [`crate::systemd`]), answering
    /// on `socket` and logging to `dir/vtid.log`; `stop` and drop leave it alone.
    pub fn attach(ns: &Netns, dir: &Path, socket: &Path, tunnel: &str) -> Self {
        Self {
            ns_name: ns.name().to_string(),
            dir: dir.to_path_buf(),
            socket: socket.to_path_buf(),
            child: None,
            tunnel: tunnel.to_string(),
            with: RunWith::default(),
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vtid.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_name])
            .arg(self.binary()?)
            .arg("--socket")
            .arg(&self.socket)
            .args(["run", "--config"])
            .arg(self.dir.join("vtid.toml"))
            .env(
                "RUST_LOG",
                self.with.rust_log.as_deref().unwrap_or("info,ike=debug"),
            )
            .envs(self.with.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start vtid")?;
        self.child = Some(child);
        let sock = self.socket.clone();
        // Generous: a loaded machine runs the TCG VM many times slower than CI does; the
        // poll returns as soon as the socket exists.
        wait_until("vtid's control socket", Duration::from_secs(60), || {
            Ok(sock.exists())
        })
        .with_context(|| self.log())?;
        Ok(())
    }

    /// Runs `vtid --socket S ARGS...` in the namespace and returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        crate::cmd::run(
            Command::new("ip")
                .args(["netns", "exec", &self.ns_name])
                .arg(self.binary()?)
                .arg("--socket")
                .arg(&self.socket)
                .args(args),
        )
    }

    fn binary(&self) -> Result<PathBuf> {
        match &self.with.binary {
            Some(b) => Ok(b.clone()),
            None => binary(),
        }
    }

    /// What `vtid show WHAT --json` prints, asked over the control socket (see
    /// [`Vtid::request`]; [`Vtid::show_cli`] runs the command).
    pub fn show(&self, what: &str) -> Result<serde_json::Value> {
        self.query(what)
    }

    /// `vtid show WHAT --json` run as a command, as an operator would: what
    /// [`Vtid::show`] reads over the socket, printed by the CLI.
    pub fn show_cli(&self, what: &str) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.cli(&["show", what, "--json"])?)?)
    }

    /// One control-socket request sent from this process, without the CLI: the JSON line
    /// protocol of `agent/src/control.rs` (`{"cmd":"show-tunnels"}`, `{"cmd":"up",
    /// "tunnel":...}`), returning the `ok` body. Tests poll through this: under TCG a
    /// process start over 9p costs about a second of the VM's CPU, and a poll loop that
    /// started the CLI every 100 ms kept a vCPU busy with nothing else.
    pub fn request(&self, req: &serde_json::Value) -> Result<serde_json::Value> {
        request_at(&self.socket, req)
    }

    /// `vtid show WHAT --json` through [`Vtid::request`].
    pub fn query(&self, what: &str) -> Result<serde_json::Value> {
        self.request(&show_request(what))
    }

    /// Kills the daemon with SIGKILL (no cleanup), as a crash would.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the daemon to exit on its own (a failpoint, a fatal error)
    /// and returns how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let c = self.child.as_mut().context("vtid is not running")?;
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Some(st) = c.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("vtid still running after {timeout:?}")
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            crate::cmd::run_args(&["kill", "-TERM", &c.id().to_string()])?;
            for _ in 0..100 {
                if c.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            c.kill()?;
            bail!("vtid did not exit within 10 s of SIGTERM");
        }
        Ok(())
    }

    /// Starts the daemon again with the same configuration.
    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }

    /// The daemon's configuration file (edit it, then `vtid reload`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("vtid.toml")
    }

    /// `vtid up TUNNEL`.
    pub fn initiate(&self) -> Result<()> {
        self.cli(&["up", &self.tunnel]).map(drop)
    }

    /// True when `vtid show sa` lists an installed Child SA.
    pub fn is_up(&self) -> Result<bool> {
        Ok(self.show("sa")?.as_array().is_some_and(|a| !a.is_empty()))
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vtid.log")).unwrap_or_default()
    }
}

impl Drop for Vtid {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Device;

    /// A listener on loopback that answers one connection with `answer`, having read the
    /// request head; returns its address and the request it read.
    fn one_answer(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = std::io::BufReader::new(s);
            let mut head = String::new();
            while r.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
            r.get_mut().write_all(answer.as_bytes()).unwrap();
            head
        });
        (addr, t)
    }

    #[test]
    fn http_get_returns_the_body_of_a_200_and_names_any_other_status() {
        let (addr, t) = one_answer("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\na 1\nb 2\n");
        assert_eq!(http_get(&addr, "/metrics").unwrap(), "a 1\nb 2\n");
        assert!(t.join().unwrap().starts_with("GET /metrics HTTP/1.1\r\n"));
        let (addr, t) = one_answer("HTTP/1.1 404 Not Found\r\n\r\ntry /metrics\n");
        let e = http_get(&addr, "/x").unwrap_err().to_string();
        assert!(e.contains("404 Not Found"), "{e}");
        t.join().unwrap();
        assert!(
            http_get("127.0.0.1", "/").is_err(),
            "an address without a port"
        );
    }

    fn end(ike: &str, esp: &str) -> TunnelEnd {
        TunnelEnd {
            local: "192.0.2.1".into(),
            remote: "192.0.2.2".into(),
            psk: "k".into(),
            device: Device::Xfrmi {
                name: "tun1".into(),
                if_id: 42,
                underlay: "e-b".into(),
            },
            address: Some("10.255.0.1/30".into()),
            routes: vec![],
            initiator: true,
            ike_proposals: ike.into(),
            esp_proposals: esp.into(),
            child_lifetime: None,
        }
    }

    #[test]
    fn additional_key_exchanges_are_split_by_round() {
        let (algs, addke) =
            split_addke("aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke1_none-ke2_mlkem1024")
                .unwrap();
        assert_eq!(algs, ["aes256gcm16", "prfsha384", "x25519"]);
        assert_eq!(addke, ["mlkem768|none", "mlkem1024"]);
        assert!(split_addke("aes256gcm16-prfsha384-x25519-ke2_mlkem768").is_err());
        assert!(split_addke("aes256gcm16-prfsha384-x25519-ke8_mlkem768").is_err());
    }

    #[test]
    fn a_hybrid_proposal_gets_its_own_ike_profile_and_pfs_rounds() {
        let toml = render(
            &end(
                "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
                "aes256gcm16-x25519-ke1_mlkem768",
            ),
            Path::new("/k"),
        )
        .unwrap();
        for want in [
            "additional_key_exchanges = [\"mlkem768\"]",
            "pfs_additional_key_exchanges = [\"mlkem768\"]",
            "pfs = \"x25519\"",
            "ike_profile = \"I0\"",
            "prf = [\"sha384\"]",
        ] {
            assert!(toml.contains(want), "no {want} in\n{toml}");
        }
        // A classic proposal keeps vtid's defaults: no IKE profile of its own.
        let classic = render(
            &end("aes256gcm16-prfsha256-x25519", "aes256gcm16"),
            Path::new("/k"),
        )
        .unwrap();
        assert!(!classic.contains("ike_profile"), "{classic}");
    }
}
