//! Hitless restart (`vtid restart`): the daemon writes its established IKEv2 SAs to a state
//! file, leaves every SA, policy and device in the kernel, and re-executes its binary by the
//! path it was started from (same PID: systemd's `Type=notify` unit sees no stop; after a
//! package upgrade that path holds the new binary). The new process reads the file at start,
//! adopts each SA of a static tunnel into the engine ([`ike::Endpoint::adopt`]) and the
//! tunnel's interface, policies, routes and Child SAs into its books, sweeps only what no
//! adopted SA accounts for, and deletes the file: a state file is used at most once.
//!
//! `systemctl restart` takes the same path up to the exec: on the SIGTERM of a restart job
//! (notify.rs) the daemon saves the file and exits, and systemd starts the next process.
//!
//! Without a fresh state file (a crash, `kill -9`, a plain stop and start) nothing changes:
//! the start-up sweep removes everything vtid owned and the tunnels negotiate again. A file
//! that is unreadable, corrupted, of another format version, written before the last reboot
//! (`/proc/sys/kernel/random/boot_id`), for another configuration (SHA-256 of the
//! configuration file) or older than [`MAX_AGE`] is discarded with one log line saying why.
//!
//! The file (`restart.state` in the state directory: `$STATE_DIRECTORY` from systemd, else
//! `/var/lib/vtid`) is mode 0600 and written atomically (temporary file, fsync, rename). It
//! holds keys; no key is ever logged. Layout: [`MAGIC`], the format version (u16), the
//! length of a JSON header (u32), the header (boot id, configuration fingerprint, time
//! written, the agent's books of each Child SA), the engine's blob ([`ike::persist`], which
//! carries its own version and digest), and a SHA-256 over everything before it.
//!
//! Dynamic VTI clones are adopted with their sessions: the clone keeps its number, name,
//! if_id and routes. Left out (their peers renegotiate, as after a crash): IKEv1 SAs, SAs still
//! busy with an exchange after the daemon waited `RESTART_SETTLE` (daemon.rs) for them, and
//! SAs of crypto maps and mGRE protections.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use ike::persist::IkeSaState;
use ike::{ChildSaId, SessionId};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::plan::Plan;
use crate::reconcile::Op;
use crate::sessions::{ChildInfo, ChildState};

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "restart.state";
/// The first bytes of a state file.
pub const MAGIC: &[u8; 13] = b"vtid-restart\n";
/// The format version written; any other is discarded.
pub const VERSION: u16 = 1;
/// A state file older than this is stale: the SAs' timers have run on without anyone to
/// answer the peers' requests, and their DPD would have declared us dead long before.
pub const MAX_AGE: Duration = Duration::from_secs(120);
const DIGEST_LEN: usize = 32;

/// The state directory: `$STATE_DIRECTORY` (systemd's `StateDirectory=`; the first of a
/// colon-separated list), else `/var/lib/vtid`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            let s = v.to_string_lossy().into_owned();
            s.split(':')
                .next()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/vtid"))
}

/// This boot's id (a new random UUID per boot).
pub fn boot_id() -> Result<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("read /proc/sys/kernel/random/boot_id")?;
    Ok(s.trim().to_owned())
}

/// SHA-256 (hex) of the configuration file's bytes.
pub fn fingerprint(config: &Path) -> Result<String> {
    let bytes = std::fs::read(config).with_context(|| format!("read {}", config.display()))?;
    Ok(hex(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &bytes,
    )
    .as_ref()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The agent's book of one Child SA (no keys: the engine's blob has those of the IKE SA;
/// the Child SAs' own keys stay in the kernel only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildBook {
    /// The engine's Child SA id.
    pub id: u64,
    /// ENCR transform id and key bits (0: none).
    pub encr: (u16, u16),
    /// INTEG transform id (0: AEAD).
    pub integ: u16,
    /// Hard byte limit.
    pub hard_bytes: Option<u64>,
    /// NAT-T ports (ours, the peer's).
    pub encap: Option<(u16, u16)>,
    /// Milliseconds since it was installed.
    pub age_ms: u64,
    /// The configured lifetime, milliseconds.
    pub lifetime_ms: u64,
    /// The dynamic VTI clone (number) it is installed on.
    #[serde(default)]
    pub clone: Option<u32>,
    /// Routes its traffic selectors added to that clone.
    #[serde(default)]
    pub routes: Vec<String>,
}

/// The dynamic VTI clone of an exported session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneBook {
    /// The session.
    pub session: u64,
    /// The clone's number (its name suffix and if_id offset).
    pub slot: u32,
    /// Milliseconds since it was created.
    pub age_ms: u64,
}

/// The JSON header of a state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `/proc/sys/kernel/random/boot_id` when written.
    pub boot_id: String,
    /// [`fingerprint`] of the configuration in force.
    pub config_sha256: String,
    /// Wall-clock milliseconds since the epoch when written.
    pub written_unix_ms: u64,
    /// The agent's books of the exported Child SAs.
    pub children: Vec<ChildBook>,
    /// (session, milliseconds it had been up) of the exported IKE SAs.
    pub sessions: Vec<(u64, u64)>,
    /// The clones of exported sessions of virtual templates.
    #[serde(default)]
    pub clones: Vec<CloneBook>,
}

impl ChildBook {
    /// The book entry of `c`, at `now`.
    pub fn of(id: ChildSaId, c: &ChildInfo, now: Instant) -> Self {
        Self {
            id: id.0,
            encr: (c.encr.id(), c.encr.key_length_attr().unwrap_or(0)),
            integ: c.integ.map_or(0, |i| i.id()),
            hard_bytes: c.hard_bytes,
            encap: c.encap.map(|e| (e.local_port, e.remote_port)),
            age_ms: now.saturating_duration_since(c.installed).as_millis() as u64,
            lifetime_ms: c.lifetime.as_millis() as u64,
            clone: c.clone,
            routes: c.routes.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Encodes a state file.
pub fn encode(header: &Header, sas: &[IkeSaState]) -> Result<Zeroizing<Vec<u8>>> {
    let json = serde_json::to_vec(header)?;
    let blob = ike::persist::encode(sas);
    let mut out = Zeroizing::new(Vec::with_capacity(
        MAGIC.len() + 6 + json.len() + blob.len() + DIGEST_LEN,
    ));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&blob);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &out);
    out.extend_from_slice(d.as_ref());
    Ok(out)
}

/// Why a state file was not used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    /// Not a state file, or cut short.
    #[error("unreadable ({0})")]
    Unreadable(String),
    /// Another format version.
    #[error("written by state format version {found}; this vtid reads version {VERSION}")]
    Version {
        /// The file's version.
        found: u16,
    },
    /// The digest does not match.
    #[error("corrupted (digest mismatch)")]
    Corrupted,
    /// Another boot wrote it: the kernel objects it describes are gone.
    #[error("written before the last reboot (boot id {0})")]
    OtherBoot(String),
    /// Another configuration was in force.
    #[error("written for another configuration")]
    OtherConfig,
    /// Too old.
    #[error("stale: written {0} s ago (at most {max} s)", max = MAX_AGE.as_secs())]
    Stale(u64),
    /// The engine's part was refused.
    #[error("IKE SA state: {0}")]
    Ike(#[from] ike::persist::PersistError),
}

/// A state file's contents.
#[derive(Debug)]
pub struct Restored {
    /// Its header.
    pub header: Header,
    /// The IKE SAs.
    pub sas: Vec<IkeSaState>,
}

/// Decodes and checks a state file's bytes against this boot and configuration.
pub fn decode(
    bytes: &[u8],
    boot_id: &str,
    config_sha256: &str,
    now_unix_ms: u64,
) -> Result<Restored, Discard> {
    if bytes.len() < MAGIC.len() + 6 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Discard::Unreadable("not a vtid restart state".into()));
    }
    let found = u16::from_be_bytes([bytes[13], bytes[14]]);
    if found != VERSION {
        return Err(Discard::Version { found });
    }
    if bytes.len() < MAGIC.len() + 6 + DIGEST_LEN {
        return Err(Discard::Unreadable("truncated".into()));
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST_LEN);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    if d.as_ref() != digest {
        return Err(Discard::Corrupted);
    }
    let len = u32::from_be_bytes([bytes[15], bytes[16], bytes[17], bytes[18]]) as usize;
    let start = MAGIC.len() + 6;
    let json = body
        .get(start..start.saturating_add(len))
        .ok_or_else(|| Discard::Unreadable("truncated header".into()))?;
    let header: Header =
        serde_json::from_slice(json).map_err(|e| Discard::Unreadable(e.to_string()))?;
    if header.boot_id != boot_id {
        return Err(Discard::OtherBoot(header.boot_id));
    }
    if header.config_sha256 != config_sha256 {
        return Err(Discard::OtherConfig);
    }
    let age = now_unix_ms.saturating_sub(header.written_unix_ms);
    if Duration::from_millis(age) > MAX_AGE {
        return Err(Discard::Stale(age / 1000));
    }
    let sas = ike::persist::decode(&body[start + len..])?;
    Ok(Restored { header, sas })
}

/// Writes `bytes` to `dir/STATE_FILE`, mode 0600, atomically (temporary file, fsync,
/// rename, fsync of the directory).
pub fn write(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Reads, checks and deletes the state file in `dir`, if there is one. `None` when there
/// is none or it was discarded (logged once with why).
pub fn load(dir: &Path, config: &Path) -> Option<Restored> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(file = %path.display(), "restart state discarded: unreadable ({e})");
            let _ = std::fs::remove_file(&path);
            return None;
        }
    };
    // Used at most once, whatever follows.
    if let Err(e) = std::fs::remove_file(&path) {
        warn!(file = %path.display(), "restart state discarded: cannot delete it ({e})");
        return None;
    }
    let checked = boot_id()
        .and_then(|b| Ok((b, fingerprint(config)?)))
        .map_err(|e| Discard::Unreadable(format!("{e:#}")))
        .and_then(|(boot, fp)| decode(&bytes, &boot, &fp, unix_ms()));
    match checked {
        Ok(r) => Some(r),
        Err(why) => {
            warn!(file = %path.display(), "restart state discarded: {why}; sweeping and renegotiating");
            None
        }
    }
}

/// What the new process adopted.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Static tunnels with an adopted SA: (tunnel name, the peer's address).
    pub tunnels: Vec<(String, IpAddr)>,
    /// The agent's books of the adopted Child SAs.
    pub children: Vec<(ChildSaId, ChildInfo)>,
    /// Adopted sessions and when they came up.
    pub sessions: Vec<(SessionId, Instant)>,
    /// Every SPI of an adopted Child SA (both directions): the sweep keeps these SAs.
    pub spis: HashSet<u32>,
    /// Dynamic VTI clones of adopted sessions.
    pub clones: Vec<AdoptedClone>,
    /// Every interface an adopted SA needs (static tunnels with their line up, clones): the
    /// sweep keeps these.
    pub live: Vec<crate::model::Interface>,
}

/// A dynamic VTI clone of an adopted session, as the previous process made it.
#[derive(Debug)]
pub struct AdoptedClone {
    /// Its template's connection.
    pub conn: ike::ConnId,
    /// The session on it.
    pub session: SessionId,
    /// The peer's identity.
    pub peer_id: ike::wire::Identity,
    /// Its number.
    pub slot: u32,
    /// The clone as a tunnel.
    pub tunnel: crate::plan::TunnelPlan,
    /// The clone as the kernel holds it.
    pub interface: crate::model::Interface,
    /// A spoke of a multipoint template: its shared device's name.
    pub multipoint: Option<String>,
    /// When it was created.
    pub created: Instant,
}

/// Adopts the SAs of `r` that belong to a static tunnel or a virtual template of `plan` into
/// `ep`; the others are left to the sweep (logged, with why). Deadlines lose the time the file spent on disk.
pub fn adopt(ep: &mut ike::Endpoint, plan: &Plan, r: Restored) -> Adopted {
    let now = Instant::now();
    let waited = Duration::from_millis(unix_ms().saturating_sub(r.header.written_unix_ms));
    let at = now.checked_sub(waited).unwrap_or(now);
    let books: BTreeMap<u64, &ChildBook> = r.header.children.iter().map(|c| (c.id, c)).collect();
    let ups: BTreeMap<u64, u64> = r.header.sessions.iter().copied().collect();
    let mut out = Adopted::default();
    let clones: BTreeMap<u64, &CloneBook> =
        r.header.clones.iter().map(|c| (c.session, c)).collect();
    let mut pending = Vec::new();
    for sa in &r.sas {
        let tunnel = plan
            .tunnels
            .values()
            .find(|t| t.conn == sa.conn && t.local == sa.local.ip() && t.remote == sa.remote.ip());
        // A virtual template's session: its clone, rebuilt as the previous process made it.
        let clone = match (
            plan.templates.get(&sa.conn),
            clones.get(&sa.session.0),
            &sa.peer_id,
        ) {
            (Some(tp), Some(cb), Some(peer_id)) if tunnel.is_none() => {
                let (t, interface) =
                    crate::virtual_access::clone_of(tp, cb.slot, sa.local, sa.remote);
                Some(AdoptedClone {
                    conn: sa.conn,
                    session: sa.session,
                    peer_id: peer_id.clone(),
                    slot: cb.slot,
                    tunnel: t,
                    interface,
                    multipoint: tp.multipoint.clone(),
                    created: now
                        .checked_sub(Duration::from_millis(cb.age_ms))
                        .unwrap_or(now),
                })
            }
            _ => None,
        };
        let name = match (tunnel, &clone) {
            (Some(t), _) => t.name.clone(),
            (None, Some(c)) => c.tunnel.name.clone(),
            (None, None) => {
                info!(conn = sa.conn.0, peer = %sa.remote.ip(), "restart: neither a static tunnel's nor a clone's IKE SA; left to the sweep");
                continue;
            }
        };
        let slot = clone.as_ref().map(|c| c.slot);
        let children: Option<Vec<(ChildSaId, ChildInfo)>> = sa
            .children
            .iter()
            .map(|c| Some((c.id, child_info(sa, c, books.get(&c.id.0)?, now, slot)?)))
            .collect();
        let Some(children) = children.filter(|c| !c.is_empty()) else {
            info!(tunnel = %name, "restart: IKE SA without Child SA books; left to the sweep");
            continue;
        };
        pending.push((sa, name, tunnel, clone, children));
    }
    // One batch: the engine gathers the ids in use once, not once per SA.
    let results = ep.adopt_all(at, pending.iter().map(|p| p.0));
    for ((sa, name, tunnel, clone, children), res) in pending.into_iter().zip(results) {
        if let Err(e) = res {
            warn!(tunnel = %name, "restart: IKE SA not adopted: {e}");
            continue;
        }
        let up = ups.get(&sa.session.0).copied().unwrap_or(0);
        let since = now.checked_sub(Duration::from_millis(up)).unwrap_or(now);
        out.sessions.push((sa.session, since));
        for c in &sa.children {
            out.spis.insert(c.spi_in);
            out.spis.insert(c.spi_out);
        }
        info!(
            tunnel = %name,
            peer = %sa.remote.ip(),
            spi_i = format_args!("{:016x}", sa.spi_i),
            spi_r = format_args!("{:016x}", sa.spi_r),
            child_sas = children.len(),
            "restart: IKE SA adopted"
        );
        match (tunnel, clone) {
            (Some(t), _) => {
                out.live.push(crate::model::static_interface(t, true));
                out.tunnels.push((t.name.clone(), sa.remote.ip()));
            }
            (None, Some(c)) => {
                out.live.push(c.interface.clone());
                out.clones.push(c);
            }
            (None, None) => {}
        }
        out.children.extend(children);
    }
    out
}

fn child_info(
    sa: &IkeSaState,
    c: &ike::persist::ChildSaState,
    b: &ChildBook,
    now: Instant,
    clone: Option<u32>,
) -> Option<ChildInfo> {
    let encr = ike::proposal::encr_from_wire(b.encr.0, (b.encr.1 != 0).then_some(b.encr.1))?;
    let integ = match b.integ {
        0 => None,
        id => Some(ike::proposal::integ_from_wire(id)?),
    };
    let (local, remote) = c.addrs.unwrap_or((sa.local, sa.remote));
    Some(ChildInfo {
        conn: sa.conn,
        session: sa.session,
        spi_in: c.spi_in,
        spi_out: c.spi_out,
        encr,
        integ,
        local,
        remote,
        installed: now
            .checked_sub(Duration::from_millis(b.age_ms))
            .unwrap_or(now),
        lifetime: Duration::from_millis(b.lifetime_ms),
        hard_bytes: b.hard_bytes,
        encap: b.encap.map(|(l, r)| ike::UdpEncap {
            local_port: l,
            remote_port: r,
        }),
        clone,
        routes: b.routes.iter().filter_map(|r| r.parse().ok()).collect(),
        state: ChildState::Installed,
    })
}

/// The start-up sweep after an adoption: removes what vtid owns that no adopted tunnel
/// accounts for (devices, policies, the VRFs they use) and every owned SA that is not one
/// of an adopted Child SA (those of SAs left out, a rekey's leftovers). Returns the errors.
pub async fn sweep_around(h: &xfrm::Handle, a: &Adopted) -> Vec<anyhow::Error> {
    let (owned, mut errs) = crate::kernel::owned(h).await;
    let live = &a.live;
    let vrfs: HashSet<&str> = live
        .iter()
        .flat_map(|i| [i.vrf.as_ref(), i.fvrf.as_ref()])
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let mut ops: Vec<Op> = crate::reconcile::sweep(&owned, live.iter())
        .into_iter()
        .filter(|op| !matches!(op, Op::RemoveLink { name, .. } if vrfs.contains(name.as_str())))
        .collect();
    ops.extend(
        owned
            .sas
            .iter()
            .filter(|s| !a.spis.contains(&s.spi.0))
            .cloned()
            .map(Op::RemoveSa),
    );
    let failed = crate::kernel::apply(h, &ops).await;
    let mut removed = ops.len() - failed.len();
    errs.extend(failed);
    // Multipoint devices stay (adopted spokes are on them); the nexthops of spokes whose
    // SAs were left out go, and the kernel takes their routes along.
    let mut keep: BTreeMap<&str, HashSet<u32>> = BTreeMap::new();
    for c in &a.clones {
        if let Some(dev) = &c.multipoint {
            let ids = [false, true].map(|v6| crate::multipoint::nexthop_id(c.tunnel.if_id, v6));
            keep.entry(dev.as_str()).or_default().extend(ids);
        }
    }
    for (dev, ids) in keep {
        let (n, e) = crate::kernel::sweep_nexthops(h, dev, &ids).await;
        removed += n;
        errs.extend(e);
    }
    info!(
        removed,
        "restart: swept the kernel objects no adopted SA accounts for"
    );
    errs
}

/// The header for the SAs of `export`, with the books of `children`.
pub fn header(
    config: &Path,
    children: Vec<ChildBook>,
    sessions: Vec<(u64, u64)>,
    clones: Vec<CloneBook>,
) -> Result<Header> {
    Ok(Header {
        boot_id: boot_id()?,
        config_sha256: fingerprint(config)?,
        written_unix_ms: unix_ms(),
        children,
        sessions,
        clones,
    })
}

/// Replaces this process with `exe` and `args` (same PID). Returns only on failure.
pub fn exec(exe: &Path, args: &[std::ffi::OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(exe).args(args).exec();
    anyhow::Error::new(e).context(format!("re-execute {}", exe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            boot_id: "b".into(),
            config_sha256: "c".into(),
            written_unix_ms: 1_000_000,
            children: Vec::new(),
            sessions: Vec::new(),
            clones: Vec::new(),
        }
    }

    #[test]
    fn state_file_round_trip_and_discards() {
        let bytes = encode(&header(), &[]).expect("encode");
        let ok = decode(&bytes, "b", "c", 1_000_500).expect("fresh");
        assert_eq!(ok.header, header());
        assert!(ok.sas.is_empty());
        assert!(
            matches!(decode(&bytes, "x", "c", 1_000_500), Err(Discard::OtherBoot(b)) if b == "b")
        );
        assert_eq!(
            decode(&bytes, "b", "x", 1_000_500).err(),
            Some(Discard::OtherConfig)
        );
        assert_eq!(
            decode(&bytes, "b", "c", 1_000_000 + 121_000).err(),
            Some(Discard::Stale(121))
        );
        let mut old = bytes.to_vec();
        old[13..15].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(
            decode(&old, "b", "c", 1_000_500).err(),
            Some(Discard::Version { found: 0 })
        );
        let mut flipped = bytes.to_vec();
        let n = flipped.len();
        flipped[n / 2] ^= 1;
        assert_eq!(
            decode(&flipped, "b", "c", 1_000_500).err(),
            Some(Discard::Corrupted)
        );
        for cut in [0, 10, 20, bytes.len() - 1] {
            assert!(
                decode(&bytes[..cut], "b", "c", 1_000_500).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn written_atomically_and_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vtid-restart-{}", std::process::id()));
        let path = write(&dir, b"abc").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"abc");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join(format!(".{STATE_FILE}.tmp")).exists());
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
