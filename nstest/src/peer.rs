//! One side of a tunnel, described once and played by either implementation (house rule 7:
//! interop scenarios are written once and pick each side by parameter). A scenario talks to a
//! peer only through the network and its CLI, and checks the kernel with `ip`.

use std::path::Path;

use anyhow::{Result, bail};

use crate::netns::Netns;
pub use crate::strongswan::StrongswanVersion;
use crate::strongswan::{Strongswan, SwanConn};
use crate::vtid::Vtid;

/// Which implementation plays a side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// strongSwan's charon of one Debian release, configured through swanctl.
    Strongswan(StrongswanVersion),
    /// vtid, configured through its TOML file and driven through its CLI.
    Vtid,
}

impl Impl {
    /// Reads `var` (e.g. `NSTEST_LEFT`: `strongswan` is Debian 12's, `strongswan6` Debian
    /// 13's), defaulting to `default`. Unknown values are errors.
    pub fn from_env(var: &str, default: Impl) -> Result<Impl> {
        match std::env::var(var).as_deref() {
            Err(_) => Ok(default),
            Ok("strongswan") => Ok(Impl::Strongswan(StrongswanVersion::Debian12)),
            Ok("strongswan6") => Ok(Impl::Strongswan(StrongswanVersion::Debian13)),
            Ok("vtid") => Ok(Impl::Vtid),
            Ok(other) => bail!("{var}={other}: expected `strongswan`, `strongswan6` or `vtid`"),
        }
    }

    /// True for either strongSwan.
    pub fn is_strongswan(self) -> bool {
        matches!(self, Impl::Strongswan(_))
    }
}

/// The route-based tunnel device of one side.
#[derive(Clone, Debug)]
pub enum Device {
    /// An xfrm interface (`ip link add NAME type xfrm dev UNDERLAY if_id ID`).
    Xfrmi {
        /// Interface name.
        name: String,
        /// if_id binding SAs and policies to it.
        if_id: u32,
        /// Underlay interface.
        underlay: String,
    },
    /// An ip_vti device (`ip link add NAME type vti local L remote R key K`).
    Vti {
        /// Interface name.
        name: String,
        /// ikey = okey = mark on SAs and policies.
        key: u32,
    },
}

impl Device {
    /// The interface name.
    pub fn name(&self) -> &str {
        match self {
            Self::Xfrmi { name, .. } | Self::Vti { name, .. } => name,
        }
    }
}

/// Everything one side needs to know about a route-based tunnel.
#[derive(Clone, Debug)]
pub struct TunnelEnd {
    /// Our outer address.
    pub local: String,
    /// The peer's outer address.
    pub remote: String,
    /// Pre-shared key.
    pub psk: String,
    /// Tunnel device.
    pub device: Device,
    /// Inner address of the tunnel device (CIDR), if any.
    pub address: Option<String>,
    /// Prefixes routed into the tunnel.
    pub routes: Vec<String>,
    /// Whether this side starts the negotiation.
    pub initiator: bool,
    /// IKE proposals (strongSwan syntax, translated for other implementations).
    pub ike_proposals: String,
    /// ESP proposals (strongSwan syntax).
    pub esp_proposals: String,
    /// Child SA lifetime in seconds (rekey scenarios); `None` keeps each implementation's
    /// default.
    pub child_lifetime: Option<u32>,
}

/// A running peer.
pub trait Peer {
    /// Which implementation this is.
    fn implementation(&self) -> Impl;
    /// Starts the negotiation now.
    fn initiate(&self) -> Result<()>;
    /// True when the peer reports an established IKE SA with an installed Child SA.
    fn is_up(&self) -> Result<bool>;
    /// The peer's log so far.
    fn log(&self) -> String;
    /// Kills the daemon with SIGKILL: it vanishes without a word, its kernel state stays.
    fn kill9(&mut self) -> Result<()> {
        bail!(
            "this {:?} peer cannot be killed from the scenario",
            self.implementation()
        )
    }
    /// Starts the daemon again with the same configuration (after [`Peer::kill9`]).
    fn restart(&mut self) -> Result<()> {
        bail!(
            "this {:?} peer cannot be restarted from the scenario",
            self.implementation()
        )
    }
    /// The peer's own account of its SAs (strongSwan: `swanctl --list-sas --raw`), for
    /// checking what the other end of a tunnel believes.
    fn list_sas(&self) -> Result<String> {
        bail!(
            "this {:?} peer has no SA listing here",
            self.implementation()
        )
    }
    /// The vtid instance, when this peer is one (for its CLI: show, reload, restart).
    fn as_vtid(&mut self) -> Option<&mut Vtid> {
        None
    }
    /// [`Peer::as_vtid`] for reading (queries over the control socket need no `&mut`).
    fn as_vtid_ref(&self) -> Option<&Vtid> {
        None
    }
}

struct VtidPeer(Vtid);

/// Wraps an already started vtid (e.g. one with a hand-written config) as a [`Peer`].
pub fn vtid_peer(v: Vtid) -> Box<dyn Peer> {
    Box::new(VtidPeer(v))
}

impl Peer for VtidPeer {
    fn implementation(&self) -> Impl {
        Impl::Vtid
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
    fn kill9(&mut self) -> Result<()> {
        self.0.kill9()
    }
    fn restart(&mut self) -> Result<()> {
        self.0.restart()
    }
    fn as_vtid(&mut self) -> Option<&mut Vtid> {
        Some(&mut self.0)
    }
    fn as_vtid_ref(&self) -> Option<&Vtid> {
        Some(&self.0)
    }
}

/// Starts `which` in `ns` for `end`, keeping its files in `dir`.
pub fn start(which: Impl, ns: &Netns, dir: &Path, end: &TunnelEnd) -> Result<Box<dyn Peer>> {
    match which {
        Impl::Strongswan(v) => Ok(Box::new(SwanPeer::start(v, ns, dir, end)?)),
        Impl::Vtid => Ok(Box::new(VtidPeer(Vtid::start(ns, dir, end)?))),
    }
}

/// Starts strongSwan for `end` as [`start`] does, with `tweak` applied to the connection
/// first: what [`TunnelEnd`] does not say, such as `version = 1` for IKEv1.
pub fn start_strongswan_with(
    v: StrongswanVersion,
    ns: &Netns,
    dir: &Path,
    end: &TunnelEnd,
    tweak: impl FnOnce(&mut SwanConn),
) -> Result<Box<dyn Peer>> {
    Ok(Box::new(SwanPeer::start_with(v, ns, dir, end, tweak)?))
}

struct SwanPeer(Strongswan);

impl SwanPeer {
    fn start(version: StrongswanVersion, ns: &Netns, dir: &Path, end: &TunnelEnd) -> Result<Self> {
        Self::start_with(version, ns, dir, end, |_| {})
    }

    fn start_with(
        version: StrongswanVersion,
        ns: &Netns,
        dir: &Path,
        end: &TunnelEnd,
        tweak: impl FnOnce(&mut SwanConn),
    ) -> Result<Self> {
        // strongSwan does not manage route-based devices: create them as its users do.
        let mut conn = SwanConn::psk(&end.local, &end.remote, &end.psk);
        conn.ike_proposals = end.ike_proposals.clone();
        conn.esp_proposals = end.esp_proposals.clone();
        if let Some(secs) = end.child_lifetime {
            conn.child_life_time = Some(format!("{secs}s"));
            // strongSwan's default rekey_time (1h) would exceed the life time.
            conn.child_rekey_time = Some(format!("{}s", secs.saturating_sub(secs / 10 + 5)));
        }
        let dev = end.device.name();
        match &end.device {
            Device::Xfrmi {
                if_id, underlay, ..
            } => {
                ns.ip(&[
                    "link",
                    "add",
                    dev,
                    "type",
                    "xfrm",
                    "dev",
                    underlay,
                    "if_id",
                    &if_id.to_string(),
                ])?;
                conn.if_id = Some(*if_id);
            }
            Device::Vti { key, .. } => {
                let k = key.to_string();
                ns.ip(&[
                    "link",
                    "add",
                    dev,
                    "type",
                    "vti",
                    "local",
                    &end.local,
                    "remote",
                    &end.remote,
                    "key",
                    &k,
                ])?;
                // ip_vti drops decapsulated packets on the inbound policy check unless
                // disable_policy is set on the device (strongSwan's documented practice).
                ns.sysctl(&format!("net.ipv4.conf.{dev}.disable_policy"), "1")?;
                conn.mark = Some(*key);
            }
        }
        ns.ip(&["link", "set", dev, "up"])?;
        if let Some(a) = &end.address {
            ns.ip(&["addr", "add", a, "dev", dev])?;
        }
        for r in &end.routes {
            ns.ip(&["route", "add", r, "dev", dev])?;
        }
        tweak(&mut conn);
        Ok(Self(version.start(ns, dir, &conn)?))
    }
}

impl Peer for SwanPeer {
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
    fn kill9(&mut self) -> Result<()> {
        self.0.kill9()
    }
    fn restart(&mut self) -> Result<()> {
        self.0.restart()
    }
    fn list_sas(&self) -> Result<String> {
        self.0.list_sas()
    }
}
