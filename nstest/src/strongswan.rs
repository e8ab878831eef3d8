//! strongSwan (Debian's `charon` + `swanctl`) as a peer in a namespace: the real, independent
//! IKEv2 implementation vtid is measured against.
//!
//! Pitfalls paid for in `shared/recipes/strongswan-vti-pair.sh`: charon's pid file path is
//! compiled in, so each instance gets a private tmpfs `/run` (`unshare -m`); the vici unix
//! socket must not live on a 9p share (the VM shares the host's tree over 9p); swanctl.conf
//! takes one `key = value` per line.
//!
//! Two versions play the peer ([`StrongswanVersion`]): Debian 12's 5.9.8 is the host's own
//! charon; Debian 13's 6.0.x runs from the Debian 13 tree `nstest/debian-root strongswan`
//! makes (with the `ml` plugin: ML-KEM), chrooted in a private mount namespace whose `/tmp`
//! is the VM's, so its config files and vici socket have the same paths inside and out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::kernel::wait_until;
use crate::netns::Netns;

/// Environment variable that carries the Debian 13 strongSwan tree's path into the VM
/// ([`crate::suite::run_suite`] makes the tree on the host before booting).
pub const DEBIAN13_ROOT_ENV: &str = "NSTEST_DEBIAN13_ROOT";

/// Host side: the Debian 13 strongSwan tree (made once by `nstest/debian-root strongswan`
/// under `target`, then reused) and its path. Root, as the VM suite is.
pub fn debian13_tree(workspace: &Path, target: &Path) -> Result<PathBuf> {
    let started = std::time::Instant::now();
    let out = Command::new(workspace.join("nstest/debian-root"))
        .arg("strongswan")
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("run nstest/debian-root")?;
    anyhow::ensure!(
        out.status.success(),
        "nstest/debian-root strongswan failed ({})",
        out.status
    );
    let path = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(path.lines().last().context("debian-root printed no path")?);
    eprintln!(
        "nstest: Debian 13 strongSwan tree {} ({:.0?})",
        path.display(),
        started.elapsed()
    );
    Ok(path)
}

/// Which Debian release's strongSwan plays a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrongswanVersion {
    /// Debian 12's 5.9.8: the build host's own `/usr/lib/ipsec/charon`.
    Debian12,
    /// Debian 13's 6.0.x from the Debian 13 tree, with the `ml` plugin built from the same
    /// version's source package: it offers ML-KEM-512/768/1024 (`ke1_mlkem768` in a
    /// proposal), which Debian 13's own packages do not.
    Debian13,
}

impl StrongswanVersion {
    /// Both, oldest first.
    pub const ALL: [Self; 2] = [Self::Debian12, Self::Debian13];

    /// Starts charon of this version in `ns` with `conn` loaded ([`Strongswan::start`]).
    pub fn start(self, ns: &Netns, dir: &Path, conn: &SwanConn) -> Result<Strongswan> {
        install_keys(dir, [conn])?;
        Strongswan::launch(self, ns, dir, &conn.render(), "")
    }

    /// Starts charon of this version with several connections ([`Strongswan::start_many`]).
    pub fn start_many(
        self,
        ns: &Netns,
        dir: &Path,
        conns: &[(&str, &SwanConn)],
    ) -> Result<Strongswan> {
        self.start_many_tuned(ns, dir, conns, "")
    }

    /// [`StrongswanVersion::start_many`] with strongswan.conf lines for the `charon { }`
    /// section ([`Strongswan::start_conf_tuned`]).
    pub fn start_many_tuned(
        self,
        ns: &Netns,
        dir: &Path,
        conns: &[(&str, &SwanConn)],
        charon_extra: &str,
    ) -> Result<Strongswan> {
        install_keys(dir, conns.iter().map(|(_, c)| *c))?;
        Strongswan::launch(self, ns, dir, &render_many(conns), charon_extra)
    }

    /// Starts charon of this version with this swanctl.conf text and strongswan.conf extras
    /// ([`Strongswan::start_conf_tuned`]).
    pub fn start_conf_tuned(
        self,
        ns: &Netns,
        dir: &Path,
        swanctl_conf: &str,
        charon_extra: &str,
    ) -> Result<Strongswan> {
        Strongswan::launch(self, ns, dir, swanctl_conf, charon_extra)
    }

    /// Where this version's programs live: `/` for Debian 12, the Debian 13 tree else.
    fn root(self) -> Result<Option<PathBuf>> {
        match self {
            Self::Debian12 => Ok(None),
            Self::Debian13 => {
                let root = std::env::var_os(DEBIAN13_ROOT_ENV)
                    .map(PathBuf::from)
                    .with_context(|| {
                        format!(
                            "{DEBIAN13_ROOT_ENV} is unset: the VM suite runner makes the Debian 13 \
                             tree (nstest/debian-root strongswan) and passes its path"
                        )
                    })?;
                anyhow::ensure!(
                    root.join("usr/lib/ipsec/charon").is_file()
                        && root
                            .join("usr/lib/ipsec/plugins/libstrongswan-ml.so")
                            .is_file(),
                    "{} is not a Debian 13 strongSwan tree with the ml plugin (remake it with \
                     nstest/debian-root strongswan)",
                    root.display()
                );
                Ok(Some(root))
            }
        }
    }
}

/// How strongSwan authenticates (both sides use the same method here).
#[derive(Clone, Debug)]
pub enum SwanAuth {
    /// Pre-shared key (the raw secret; written to swanctl.conf's `secrets` section).
    Psk(String),
    /// Certificates: our certificate, our private key, and the CA that signed the peer's.
    Cert {
        /// PEM certificate of this side.
        cert: PathBuf,
        /// PEM private key of this side.
        key: PathBuf,
        /// PEM CA certificate trusted for the peer.
        ca: PathBuf,
    },
}

/// One strongSwan connection with one child, rendered into swanctl.conf.
#[derive(Clone, Debug)]
pub struct SwanConn {
    /// Our outer address.
    pub local_addr: String,
    /// The peer's outer address (`%any` for a responder accepting anyone).
    pub remote_addr: String,
    /// Our IKE identity.
    pub local_id: String,
    /// The identity we expect from the peer.
    pub remote_id: String,
    /// Authentication.
    pub auth: SwanAuth,
    /// IKE proposals, strongSwan syntax.
    pub ike_proposals: String,
    /// ESP proposals, strongSwan syntax.
    pub esp_proposals: String,
    /// Local traffic selector.
    pub local_ts: String,
    /// Remote traffic selector.
    pub remote_ts: String,
    /// `if_id_in`/`if_id_out` for an xfrm interface.
    pub if_id: Option<u32>,
    /// `mark_in`/`mark_out` for an ip_vti device (its key).
    pub mark: Option<u32>,
    /// `none`, `trap` or `start`.
    pub start_action: String,
    /// IKE SA `rekey_time` (e.g. `"4h"`).
    pub ike_rekey_time: Option<String>,
    /// Child `rekey_time`.
    pub child_rekey_time: Option<String>,
    /// Child `life_time`.
    pub child_life_time: Option<String>,
    /// `dpd_delay`.
    pub dpd_delay: Option<String>,
    /// `tunnel` or `transport`.
    pub mode: String,
    /// `encap` (`yes` forces UDP encapsulation even without a NAT).
    pub encap: Option<String>,
    /// `mobike` (strongSwan's default is `yes`).
    pub mobike: Option<String>,
    /// IKE version: 2, or 1 for IKEv1 main mode (charon speaks both; `proposals` then
    /// offers phase 1, e.g. `aes256-sha256-modp2048`, and traffic selectors must be one
    /// subnet each, IKEv1's quick mode IDs carrying one).
    pub version: u8,
    /// `aggressive` (IKEv1 aggressive mode; a PSK responder also needs strongswan.conf's
    /// `i_dont_care_about_security_and_use_aggressive_mode_psk`).
    pub aggressive: Option<String>,
}

impl SwanConn {
    /// A PSK tunnel-mode connection with strongSwan's common modern defaults.
    pub fn psk(local: &str, remote: &str, psk: &str) -> Self {
        Self {
            local_addr: local.into(),
            remote_addr: remote.into(),
            local_id: local.into(),
            remote_id: remote.into(),
            auth: SwanAuth::Psk(psk.into()),
            ike_proposals: "aes256gcm16-prfsha256-x25519".into(),
            esp_proposals: "aes256gcm16".into(),
            local_ts: "0.0.0.0/0,::/0".into(),
            remote_ts: "0.0.0.0/0,::/0".into(),
            if_id: None,
            mark: None,
            start_action: "none".into(),
            ike_rekey_time: None,
            child_rekey_time: None,
            child_life_time: None,
            dpd_delay: None,
            mode: "tunnel".into(),
            encap: None,
            mobike: None,
            version: 2,
            aggressive: None,
        }
    }

    /// swanctl.conf for this connection (named `t`, child `c`).
    pub fn render(&self) -> String {
        render_many(&[("t", self)])
    }

    /// The `connections` entry `name { ... }` (child `c`).
    fn render_conn(&self, s: &mut String, name: &str) {
        let opt = |s: &mut String, indent: &str, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                let _ = writeln!(s, "{indent}{k} = {v}");
            }
        };
        let (auth, cert_lines) = match &self.auth {
            SwanAuth::Psk(_) => ("psk", String::new()),
            SwanAuth::Cert { cert, .. } => {
                ("pubkey", format!("      certs = {}\n", cert.display()))
            }
        };
        let _ = writeln!(s, "  {name} {{\n    version = {}", self.version);
        let _ = writeln!(s, "    local_addrs = {}", self.local_addr);
        let _ = writeln!(s, "    remote_addrs = {}", self.remote_addr);
        let _ = writeln!(s, "    proposals = {}", self.ike_proposals);
        opt(s, "    ", "rekey_time", &self.ike_rekey_time);
        opt(s, "    ", "dpd_delay", &self.dpd_delay);
        opt(s, "    ", "encap", &self.encap);
        opt(s, "    ", "mobike", &self.mobike);
        opt(s, "    ", "aggressive", &self.aggressive);
        let _ = writeln!(
            s,
            "    local {{\n      auth = {auth}\n      id = {}\n{cert_lines}    }}",
            self.local_id
        );
        let _ = writeln!(
            s,
            "    remote {{\n      auth = {auth}\n      id = {}\n    }}",
            self.remote_id
        );
        let _ = writeln!(s, "    children {{\n      c {{");
        let _ = writeln!(s, "        local_ts = {}", self.local_ts);
        let _ = writeln!(s, "        remote_ts = {}", self.remote_ts);
        let _ = writeln!(s, "        esp_proposals = {}", self.esp_proposals);
        let _ = writeln!(s, "        mode = {}", self.mode);
        let _ = writeln!(s, "        start_action = {}", self.start_action);
        opt(s, "        ", "rekey_time", &self.child_rekey_time);
        opt(s, "        ", "life_time", &self.child_life_time);
        if let Some(id) = self.if_id {
            let _ = writeln!(s, "        if_id_in = {id}\n        if_id_out = {id}");
        }
        if let Some(m) = self.mark {
            let _ = writeln!(s, "        mark_in = {m}\n        mark_out = {m}");
        }
        let _ = writeln!(s, "      }}\n    }}\n  }}");
    }

    /// This connection's `authorities` and `secrets` entries, suffixed with `name` so several
    /// connections can share one file.
    fn render_creds(&self, authorities: &mut String, secrets: &mut String, name: &str) {
        match &self.auth {
            SwanAuth::Psk(psk) => {
                let _ = writeln!(
                    secrets,
                    "  ike-{name} {{\n    id-1 = {}\n    id-2 = {}\n    secret = \"{psk}\"\n  }}",
                    self.local_id, self.remote_id
                );
            }
            // The private key is not named here: swanctl.conf's `secrets.private*.file` only
            // maps passphrases; keys are loaded from the `private/` folder next to
            // swanctl.conf ([`install_keys`]).
            SwanAuth::Cert { ca, .. } => {
                let _ = writeln!(
                    authorities,
                    "  ca-{name} {{\n    cacert = {}\n  }}",
                    ca.display()
                );
            }
        }
    }
}

/// swanctl.conf for several connections, each `(name, conn)` becoming connection `name` with
/// child `c` (drive them with [`Strongswan::initiate_ike`]).
pub fn render_many(conns: &[(&str, &SwanConn)]) -> String {
    let mut s = String::from("connections {\n");
    let (mut authorities, mut secrets) = (String::new(), String::new());
    for (name, c) in conns {
        c.render_conn(&mut s, name);
        c.render_creds(&mut authorities, &mut secrets, name);
    }
    s.push_str("}\n");
    if !authorities.is_empty() {
        let _ = write!(s, "authorities {{\n{authorities}}}\n");
    }
    let _ = write!(s, "secrets {{\n{secrets}}}\n");
    s
}

/// Copies the private keys of certificate connections into `dir/private/`, where
/// `swanctl --load-all --file dir/swanctl.conf` loads them from (strongSwan >= 5.7.2 resolves
/// its credential folders relative to the file it loads).
fn install_keys<'a>(dir: &Path, conns: impl IntoIterator<Item = &'a SwanConn>) -> Result<()> {
    for c in conns {
        if let SwanAuth::Cert { key, .. } = &c.auth {
            let private = dir.join("private");
            std::fs::create_dir_all(&private)?;
            // Named after the whole path: two keys may share a file name.
            let name = key.to_string_lossy().replace('/', "_");
            std::fs::copy(key, private.join(name))
                .with_context(|| format!("copy {} into {}", key.display(), private.display()))?;
        }
    }
    Ok(())
}

/// A running charon in a namespace.
pub struct Strongswan {
    version: StrongswanVersion,
    /// The Debian 13 tree charon runs from; `None`: the host's (Debian 12).
    root: Option<PathBuf>,
    ns_name: String,
    dir: PathBuf,
    run: PathBuf,
    charon: Child,
}

impl Strongswan {
    /// Starts Debian 12's charon in `ns` with `conn` loaded ([`StrongswanVersion::start`]
    /// picks the version). `dir` receives the config files and `charon.log`.
    pub fn start(ns: &Netns, dir: &Path, conn: &SwanConn) -> Result<Self> {
        StrongswanVersion::Debian12.start(ns, dir, conn)
    }

    /// Starts charon in `ns` with several connections ([`render_many`]), Debian 12's.
    pub fn start_many(ns: &Netns, dir: &Path, conns: &[(&str, &SwanConn)]) -> Result<Self> {
        StrongswanVersion::Debian12.start_many(ns, dir, conns)
    }

    /// Starts Debian 12's charon in `ns` with this swanctl.conf text.
    pub fn start_conf(ns: &Netns, dir: &Path, swanctl_conf: &str) -> Result<Self> {
        Self::start_conf_tuned(ns, dir, swanctl_conf, "")
    }

    /// Like [`Strongswan::start_conf`], with `charon_extra` (strongswan.conf lines) appended
    /// inside the `charon { }` section. strongswan.conf merges repeated sections and the later
    /// value of a key wins, so this can also override the defaults written here (log levels,
    /// thread count, IKE SA table size for a benchmark hub).
    pub fn start_conf_tuned(
        ns: &Netns,
        dir: &Path,
        swanctl_conf: &str,
        charon_extra: &str,
    ) -> Result<Self> {
        StrongswanVersion::Debian12.start_conf_tuned(ns, dir, swanctl_conf, charon_extra)
    }

    fn launch(
        version: StrongswanVersion,
        ns: &Netns,
        dir: &Path,
        swanctl_conf: &str,
        charon_extra: &str,
    ) -> Result<Self> {
        let root = version.root()?;
        if root.is_none() {
            crate::cmd::require_program("swanctl")?;
            if !Path::new("/usr/lib/ipsec/charon").exists() {
                anyhow::bail!(
                    "strongSwan's charon is not installed (apt-get install strongswan-charon)"
                );
            }
        }
        std::fs::create_dir_all(dir)?;
        if root.is_some() {
            // The tree's charon sees the VM's /tmp at /tmp and nothing else of the VM's.
            let tmp = std::env::temp_dir();
            anyhow::ensure!(
                dir.starts_with(&tmp) && tmp == Path::new("/tmp"),
                "the Debian 13 charon sees only /tmp of the VM; its files must be there, not \
                 in {}",
                dir.display()
            );
        }
        // Unix sockets do not work on 9p: keep the vici socket in the (guest-local) /tmp.
        let run = std::env::temp_dir().join(format!("nstest-ss-{}", ns.name()));
        std::fs::create_dir_all(&run)?;
        std::fs::write(
            dir.join("strongswan.conf"),
            // rsa_pss: RSA AUTH signatures use RSASSA-PSS (RFC 7427), as vtid's do.
            format!(
                "charon {{\n  install_routes = no\n  load_modular = yes\n  retransmit_tries = 3\n  \
                 rsa_pss = yes\n  \
                 retransmit_timeout = 1.0\n  plugins {{\n    include /etc/strongswan.d/charon/*.conf\n    \
                 vici {{\n      socket = unix://{}/charon.vici\n    }}\n  }}\n  filelog {{\n    stderr {{\n      \
                 default = 1\n      ike = 2\n      cfg = 2\n      knl = 2\n    }}\n  }}\n{charon_extra}\n}}\n",
                run.display()
            ),
        )?;
        std::fs::write(dir.join("swanctl.conf"), swanctl_conf)?;
        let _ = std::fs::remove_file(dir.join("charon.log"));
        let charon = Self::spawn_charon(root.as_deref(), ns.name(), dir)?;
        let ss = Self {
            version,
            root,
            ns_name: ns.name().to_string(),
            dir: dir.to_path_buf(),
            run,
            charon,
        };
        ss.load()?;
        Ok(ss)
    }

    /// charon in namespace `ns` with `dir`'s strongswan.conf, appending to its log; from
    /// the tree at `root` when given. The process started is charon itself (`ip netns exec`,
    /// `unshare`, `sh` and `chroot` each exec the next), so its pid names its namespaces.
    fn spawn_charon(root: Option<&Path>, ns: &str, dir: &Path) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("charon.log"))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "unshare", "-m", "sh", "-c"]);
        match root {
            // Private /run: charon's pid file path is compiled in and would collide.
            None => c.arg("mount -t tmpfs tmpfs /run && exec /usr/lib/ipsec/charon"),
            // The tree is read-only (the VM's 9p share): a private tmpfs /run, the
            // namespace's own /proc and /sys (`ip netns exec` mounted the netns's sysfs),
            // the VM's /dev, and the VM's /tmp, which holds the config files and the vici
            // socket (unix sockets do not work on 9p).
            Some(r) => c
                .arg(
                    "mount -t tmpfs tmpfs \"$0/run\" && mount -t proc proc \"$0/proc\" && \
                     mount --rbind /sys \"$0/sys\" && mount --rbind /dev \"$0/dev\" && \
                     mount --rbind /tmp \"$0/tmp\" && exec chroot \"$0\" /usr/lib/ipsec/charon",
                )
                .arg(r),
        };
        c.env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start charon")
    }

    /// Starts charon again with the same files (after [`Strongswan::kill9`]).
    pub fn restart(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(self.run.join("charon.vici"));
        self.charon = Self::spawn_charon(self.root.as_deref(), &self.ns_name, &self.dir)?;
        self.load()
    }

    /// Waits for the vici socket and loads swanctl.conf.
    fn load(&self) -> Result<()> {
        let ss = self;
        let dir = &self.dir;
        let sock = ss.run.join("charon.vici");
        // Generous: a loaded machine runs the TCG VM many times slower than CI does; the
        // poll returns as soon as the socket exists.
        wait_until("charon's vici socket", Duration::from_secs(60), || {
            Ok(sock.exists())
        })
        .with_context(|| ss.log())?;
        ss.swanctl(
            &["--load-all", "--noprompt", "--file"],
            Some(&dir.join("swanctl.conf")),
        )
        .with_context(|| ss.log())?;
        Ok(())
    }

    fn swanctl(&self, args: &[&str], file: Option<&Path>) -> Result<String> {
        let mut c = match self.root {
            None => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns_name, "swanctl"]);
                c
            }
            // The tree's own swanctl, in charon's namespaces and root (its /tmp is the VM's).
            Some(_) => {
                let mut c = Command::new("nsenter");
                c.arg("--target").arg(self.charon.id().to_string()).args([
                    "--mount",
                    "--net",
                    "--root",
                    "/usr/sbin/swanctl",
                ]);
                c
            }
        };
        c.args(args)
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"));
        if let Some(f) = file {
            c.arg(f);
        }
        c.arg("--uri")
            .arg(format!("unix://{}/charon.vici", self.run.display()));
        crate::cmd::run(&mut c)
    }

    /// `swanctl --initiate --child c`: blocks until the child is up or the attempt failed.
    pub fn initiate(&self) -> Result<()> {
        self.swanctl(&["--initiate", "--child", "c", "--timeout", "30"], None)
            .map(drop)
    }

    /// `swanctl --initiate --ike NAME --child c` for a connection of [`Strongswan::start_many`].
    pub fn initiate_ike(&self, name: &str) -> Result<()> {
        self.swanctl(
            &[
                "--initiate",
                "--ike",
                name,
                "--child",
                "c",
                "--timeout",
                "30",
            ],
            None,
        )
        .map(drop)
    }

    /// Kills charon with SIGKILL: the peer vanishes without a word (its kernel SAs stay).
    pub fn kill9(&mut self) -> Result<()> {
        self.charon.kill()?;
        self.charon.wait()?;
        Ok(())
    }

    /// `swanctl --terminate --ike t`.
    pub fn terminate(&self) -> Result<()> {
        self.swanctl(&["--terminate", "--ike", "t", "--timeout", "10"], None)
            .map(drop)
    }

    /// A VICI connection to this charon ([`crate::vici`]): the same commands as `swanctl`
    /// without a process start per command.
    pub fn vici(&self) -> Result<crate::vici::Vici> {
        crate::vici::Vici::connect(&self.vici_path(), Duration::from_secs(60))
    }

    /// charon's VICI socket, for a client of its own (a Unix socket is reached by path from
    /// any network namespace).
    pub fn vici_path(&self) -> PathBuf {
        self.run.join("charon.vici")
    }

    /// Like [`Strongswan::initiate`] over VICI: blocks until the child is up or the attempt
    /// failed (charon's own 30 s timeout).
    pub fn initiate_vici(&self) -> Result<()> {
        self.vici()?
            .command("initiate", &[("child", "c"), ("timeout", "30000")])
            .map(drop)
    }

    /// Like [`Strongswan::terminate`] over VICI: blocks until the IKE SA is deleted.
    pub fn terminate_vici(&self) -> Result<()> {
        self.vici()?
            .command("terminate", &[("ike", "t"), ("timeout", "10000")])
            .map(drop)
    }

    /// Which version this is.
    pub fn version(&self) -> StrongswanVersion {
        self.version
    }

    /// `swanctl --list-algs`: the algorithms charon's loaded plugins offer, one per line as
    /// `NAME[plugin]` under a heading per type (`ke:` holds the key exchange methods).
    pub fn list_algs(&self) -> Result<String> {
        self.swanctl(&["--list-algs"], None)
    }

    /// The daemon's version as it reports it over VICI (`version` command), e.g. `6.0.1`.
    pub fn daemon_version(&self) -> Result<String> {
        self.vici()?
            .request("version", &[])?
            .remove("version")
            .context("charon's version reply has no version")
    }

    /// strongSwan's own view of its SAs (state, SPIs, algorithms, counters) as `swanctl
    /// --list-sas --raw` prints it, read over VICI: tests poll this, and a swanctl process
    /// per look cost about a second of the VM's CPU under TCG (the scenario
    /// `vm_strongswan_list_sas_over_vici_reads_as_swanctl` holds the two equal).
    pub fn list_sas(&self) -> Result<String> {
        self.vici()?.stream_raw("list-sas", "list-sa", &[])
    }

    /// `swanctl --list-sas --raw` itself.
    pub fn list_sas_swanctl(&self) -> Result<String> {
        self.swanctl(&["--list-sas", "--raw"], None)
    }

    /// True when strongSwan reports an ESTABLISHED IKE SA with an INSTALLED child.
    pub fn is_up(&self) -> Result<bool> {
        let s = self.list_sas()?;
        Ok(s.contains("state=ESTABLISHED") && s.contains("state=INSTALLED"))
    }

    /// charon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
}

impl Drop for Strongswan {
    fn drop(&mut self) {
        let _ = self.charon.kill();
        let _ = self.charon.wait();
        let _ = std::fs::remove_dir_all(&self.run);
    }
}
