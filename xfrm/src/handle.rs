//! The entry point: a [`Handle`] bound to one network namespace, with sub-handles per object
//! kind (rtnetlink style: `handle.sa().add(&spec).await`).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use netlink_packet_xfrm::XfrmMessage;
use rtnetlink::sys::AsyncSocket;

use crate::conn::{Conn, open_route_socket, open_socket};
use crate::error::{Error, Result};
use crate::ethtool;
use crate::link::LinkHandle;
use crate::netns::Netns;
use crate::nexthop::{self, NexthopInfo, NexthopSpec};
use crate::spec::*;
use crate::wire::{self, AllocSpi, Body};

/// A connection to the kernel's XFRM and routing tables of one network namespace.
///
/// Cheap to clone; clones share the sockets. Open it from inside a tokio runtime.
#[derive(Clone)]
pub struct Handle {
    xfrm: Arc<Conn>,
    /// NETLINK_ROUTE requests rtnetlink cannot express (nexthop objects).
    route_raw: Arc<Conn>,
    route: rtnetlink::Handle,
    netns: Arc<Netns>,
    /// Netlink request messages sent, XFRM and route together.
    requests: Arc<AtomicU64>,
    /// AF_INET socket in `netns` for the ethtool ioctl (see [`crate::ethtool`]).
    ethtool: Arc<OwnedFd>,
}

impl Handle {
    /// Opens NETLINK_XFRM and NETLINK_ROUTE sockets inside `netns` and spawns the rtnetlink
    /// connection task on the current tokio runtime.
    ///
    /// The sockets are created on a short-lived helper thread that has entered `netns` (see
    /// [`Netns::run`]); this call blocks for that moment.
    pub fn open(netns: Netns) -> Result<Self> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::Io {
            op: "open handle",
            source: std::io::Error::other("xfrm::Handle::open must run inside a tokio runtime"),
        })?;
        let sock = open_socket(&netns, &[])?;
        let route_sock = open_route_socket(&netns)?;
        let (conn, route, _msgs, ethtool) = netns.run(|| {
            let _guard = rt.enter();
            let op = "open NETLINK_ROUTE socket";
            let (mut conn, route, msgs) =
                rtnetlink::new_connection().map_err(|source| Error::Io { op, source })?;
            // Same socket options as our XFRM socket: errors echo only the request header,
            // followed by the kernel's extended-ack text (see link::route_err).
            let s = conn.socket_mut().socket_mut();
            s.set_cap_ack(true)
                .map_err(|source| Error::Io { op, source })?;
            s.set_ext_ack(true)
                .map_err(|source| Error::Io { op, source })?;
            Ok((conn, route, msgs, ethtool::open_socket()?))
        })?;
        rt.spawn(conn);
        let requests = Arc::new(AtomicU64::new(0));
        Ok(Handle {
            xfrm: Arc::new(Conn::new(sock, requests.clone())?),
            route_raw: Arc::new(Conn::new(route_sock, requests.clone())?),
            route,
            netns: Arc::new(netns),
            requests,
            ethtool: Arc::new(ethtool),
        })
    }

    /// How many netlink requests this handle and its clones have sent so far, NETLINK_XFRM
    /// and NETLINK_ROUTE together: each message counts once (a dump is one request; a batch
    /// counts each item), whether the kernel accepted it or not. Requests made directly on
    /// [`Handle::rtnetlink`] are not counted. For benchmarks that count round trips per
    /// object.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The namespace this handle works in.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// SA operations (`ip xfrm state ...`).
    pub fn sa(&self) -> SaHandle<'_> {
        SaHandle(self)
    }

    /// Policy operations (`ip xfrm policy ...`).
    pub fn policy(&self) -> PolicyHandle<'_> {
        PolicyHandle(self)
    }

    /// Link, address, route and sysctl operations (`ip link/addr/route`, `sysctl`).
    pub fn link(&self) -> LinkHandle<'_> {
        LinkHandle::new(&self.route, &self.netns, &self.requests, &self.ethtool)
    }

    /// Nexthop object operations (`ip nexthop ...`).
    pub fn nexthop(&self) -> NexthopHandle<'_> {
        NexthopHandle(self)
    }

    /// The underlying rtnetlink handle, for routing operations this crate does not wrap.
    pub fn rtnetlink(&self) -> &rtnetlink::Handle {
        &self.route
    }

    /// Starts a pipelined batch of SA/policy changes.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            handle: self,
            bodies: Vec::new(),
            error: None,
        }
    }
}

/// Nexthop object operations. Obtained from [`Handle::nexthop`].
pub struct NexthopHandle<'a>(&'a Handle);

impl NexthopHandle<'_> {
    /// Creates a nexthop; fails with [`Error::Exists`] if its id is taken.
    ///
    /// Equivalent to: `ip nexthop add id ID ...` (see [`NexthopSpec`]).
    pub async fn add(&self, spec: &NexthopSpec) -> Result<()> {
        self.0.route_raw.ack(nexthop::new_body(spec, false)?).await
    }

    /// Creates a nexthop or overwrites the one with its id; routes naming it stay.
    ///
    /// Equivalent to: `ip nexthop replace id ID ...`.
    pub async fn replace(&self, spec: &NexthopSpec) -> Result<()> {
        self.0.route_raw.ack(nexthop::new_body(spec, true)?).await
    }

    /// Creates `spec` unless the very same nexthop is there already (one left by an earlier
    /// run of ours: a restart's adoption). Its id held by anything else (another protocol,
    /// another device, a gateway or group) is [`Error::Exists`], and it is left alone.
    pub async fn ensure(&self, spec: &NexthopSpec) -> Result<()> {
        match self.add(spec).await {
            Err(e) if e.is_exists() => {
                let have = self.get(spec.id).await?;
                if have.matches(spec) {
                    return Ok(());
                }
                Err(Error::Exists {
                    op: "add nexthop",
                    ext_ack: Some(format!(
                        "nexthop id {} is already in use: {have:?}",
                        spec.id
                    )),
                })
            }
            r => r,
        }
    }

    /// Removes a nexthop and, with it, every route that names it.
    ///
    /// Equivalent to: `ip nexthop del id ID`.
    pub async fn delete(&self, id: u32) -> Result<()> {
        self.0.route_raw.ack(nexthop::del_body(id)).await
    }

    /// Equivalent to: `ip nexthop get id ID`.
    pub async fn get(&self, id: u32) -> Result<NexthopInfo> {
        let mut v = self
            .0
            .route_raw
            .fetch_with(nexthop::get_body(id), false, nexthop::parse)
            .await?;
        v.pop().ok_or(Error::NotFound {
            op: "get nexthop",
            ext_ack: None,
        })
    }

    /// The nexthops on device `dev`.
    ///
    /// Equivalent to: `ip nexthop show dev DEV`.
    pub async fn dump_dev(&self, dev: u32) -> Result<Vec<NexthopInfo>> {
        self.0
            .route_raw
            .fetch_with(nexthop::dump_body(dev), true, nexthop::parse)
            .await
    }
}

/// SA operations. Obtained from [`Handle::sa`].
pub struct SaHandle<'a>(&'a Handle);

impl SaHandle<'_> {
    /// Installs a new SA; fails with [`Error::Exists`] if one with the same key exists.
    ///
    /// Equivalent to: `ip xfrm state add ...` (see [`SaSpec`]).
    ///
    /// An SA asking for offload is read back: if the kernel kept it in software (see
    /// [`Error::OffloadNotApplied`]) it is deleted again and that error returned.
    pub async fn add(&self, sa: &SaSpec) -> Result<()> {
        self.0.xfrm.ack(wire::sa_body(sa, false)?).await?;
        self.check_offloaded(sa).await
    }

    /// Replaces an SA (e.g. fills in a larval SA created by [`SaHandle::alloc_spi`]).
    /// Offload is checked as in [`SaHandle::add`].
    ///
    /// Equivalent to: `ip xfrm state update ...`.
    pub async fn update(&self, sa: &SaSpec) -> Result<()> {
        self.0.xfrm.ack(wire::sa_body(sa, true)?).await?;
        self.check_offloaded(sa).await
    }

    /// Moves an installed SA's UDP encapsulation to new ports and leaves the rest of it as
    /// it is: keys, SPI, sequence numbers, replay window and counters. For a NAT rebinding
    /// (RFC 7296 §2.23), where new SAs would cost a rekey and lose traffic meanwhile.
    ///
    /// Equivalent to: `ip xfrm state update src S dst D proto esp spi SPI ... encap espinudp
    /// SPORT DPORT 0.0.0.0` (see [`EncapUpdate`]). Like `ip`, it sends the whole SA: it reads
    /// it (keys included) and sends it back with the new ports. The kernel builds a state
    /// from that message and, finding a valid one under the same key, copies only its encap
    /// (same encap type required), lifetimes, output mark and if_id into the live state
    /// (6.1 net/xfrm/xfrm_state.c `xfrm_state_update`); the live state's replay state and
    /// counters are untouched. The offload request is left out of the message (the live
    /// state keeps its own; 6.1 never offloads encapsulated SAs anyway). Fails with
    /// [`Error::NotFound`] when there is no such SA.
    pub async fn update_encap(&self, u: &EncapUpdate) -> Result<()> {
        let mut spec = self.get(&u.id).await?.spec;
        if spec.encap.is_none() {
            return Err(Error::InvalidSpec(format!(
                "SA {:08x} to {} has no UDP encapsulation to update",
                u.id.spi.0, u.id.dst
            )));
        }
        spec.encap = Some(u.encap);
        spec.offload = None;
        self.0.xfrm.ack(wire::sa_body(&spec, true)?).await
    }

    async fn check_offloaded(&self, sa: &SaSpec) -> Result<()> {
        let Some(want) = &sa.offload else {
            return Ok(());
        };
        if self.get(&sa.id()).await?.spec.offload.is_some() {
            return Ok(());
        }
        self.delete(&sa.id()).await?;
        Err(Error::OffloadNotApplied {
            ifindex: want.ifindex,
        })
    }

    /// Reads one SA with its counters.
    ///
    /// Equivalent to: `ip -s xfrm state get src S dst D proto P spi SPI [mark M]`.
    pub async fn get(&self, id: &SaId) -> Result<SaState> {
        let msgs = self
            .0
            .xfrm
            .fetch(wire::sa_id_body(id, false), false)
            .await?;
        msgs.into_iter()
            .find_map(|m| sa_of(m, "get SA").transpose())
            .unwrap_or(Err(Error::NotFound {
                op: "get SA",
                ext_ack: None,
            }))
    }

    /// Whether this kernel knows an SA's direction (XFRMA_SA_DIR, Linux 6.10+; see
    /// [`SaSpec::dir`]), learnt by asking rather than from the version: a GETSA that carries
    /// the attribute is refused by kernels that know it and answered "no such SA" by the
    /// others (see `wire::sa_dir_probe_body`). Changes nothing in the kernel.
    pub async fn supports_dir(&self) -> Result<bool> {
        match self.0.xfrm.fetch(wire::sa_dir_probe_body(), false).await {
            Err(e)
                if e.errno() == Some(nix::errno::Errno::EINVAL)
                    && e.ext_ack().is_some_and(|m| m.contains("SA_DIR")) =>
            {
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
            Ok(_) => Err(Error::Decode {
                op: "probe XFRMA_SA_DIR",
                detail: "the kernel returned an SA with SPI 0".into(),
            }),
        }
    }

    /// Deletes one SA.
    ///
    /// Equivalent to: `ip xfrm state delete src S dst D proto P spi SPI [mark M]`.
    pub async fn delete(&self, id: &SaId) -> Result<()> {
        self.0.xfrm.ack(wire::sa_id_body(id, true)).await
    }

    /// Lists all SAs with counters.
    ///
    /// Equivalent to: `ip -s xfrm state list`.
    pub async fn dump(&self) -> Result<Vec<SaState>> {
        let msgs = self.0.xfrm.fetch(wire::dump_body(true), true).await?;
        msgs.into_iter()
            .filter_map(|m| sa_of(m, "dump SAs").transpose())
            .collect()
    }

    /// Deletes all SAs, or those of one protocol.
    ///
    /// Equivalent to: `ip xfrm state flush [proto P]`. This also removes SAs we do not own;
    /// reconcilers should delete their own SAs one by one instead.
    pub async fn flush(&self, proto: Option<Proto>) -> Result<()> {
        self.0.xfrm.ack(wire::flush_sa_body(proto)).await
    }

    /// Asks the kernel for an unused SPI and creates a larval SA holding it (expires after
    /// `net.core.xfrm_acq_expires` seconds unless completed by [`SaHandle::update`]).
    ///
    /// Equivalent to: `ip xfrm state allocspi src S dst D proto esp ... min LO max HI`.
    pub async fn alloc_spi(&self, req: &AllocSpi) -> Result<Spi> {
        let msgs = self.0.xfrm.fetch(wire::allocspi_body(req), false).await?;
        for m in msgs {
            if let Some(st) = sa_of(m, "allocate SPI")? {
                return Ok(st.spec.spi);
            }
        }
        Err(Error::Decode {
            op: "allocate SPI",
            detail: "no SA in reply".into(),
        })
    }
}

fn sa_of(m: XfrmMessage, op: &'static str) -> Result<Option<SaState>> {
    match m {
        XfrmMessage::AddSa(mut msg) | XfrmMessage::UpdateSa(mut msg) => {
            wire::sa_from_kernel(&msg.user_sa_info, &mut msg.nlas, op).map(Some)
        }
        _ => Ok(None),
    }
}

/// A per-socket policy (setsockopt IP_XFRM_POLICY, e.g. an IKE socket's bypass). The kernel's
/// dump walks them too, with direction XFRM_POLICY_MAX + dir (6.1 net/xfrm/xfrm_policy.c:
/// xfrm_sk_policy_link, xfrm_policy_walk); they belong to their socket, cannot be deleted by
/// selector and go with it.
fn is_socket_policy(m: &XfrmMessage) -> bool {
    match m {
        XfrmMessage::AddPolicy(msg) | XfrmMessage::UpdatePolicy(msg) => {
            msg.user_policy_info.direction >= netlink_packet_xfrm::constants::XFRM_POLICY_MAX
        }
        _ => false,
    }
}

fn policy_of(m: XfrmMessage) -> Result<Option<PolicySpec>> {
    match m {
        XfrmMessage::AddPolicy(msg) | XfrmMessage::UpdatePolicy(msg) => {
            wire::policy_from_kernel(&msg.user_policy_info, &msg.nlas).map(Some)
        }
        _ => Ok(None),
    }
}

/// Policy operations. Obtained from [`Handle::policy`].
pub struct PolicyHandle<'a>(&'a Handle);

impl PolicyHandle<'_> {
    /// Installs a policy; [`Error::Exists`] if one with the same selector/dir/mark/if_id exists.
    ///
    /// Equivalent to: `ip xfrm policy add ...` (see [`PolicySpec`]).
    ///
    /// A policy asking for offload is read back: if the kernel installed it without (before
    /// 6.2 it ignores the attribute), it is deleted again and
    /// [`Error::PolicyOffloadNotApplied`] returned.
    pub async fn add(&self, p: &PolicySpec) -> Result<()> {
        self.0.xfrm.ack(wire::policy_body(p, false)?).await?;
        let Some(want) = &p.offload else {
            return Ok(());
        };
        if self.get(&p.id()).await?.offload.is_some() {
            return Ok(());
        }
        self.delete(&p.id()).await?;
        Err(Error::PolicyOffloadNotApplied {
            ifindex: want.ifindex,
        })
    }

    /// Installs or replaces a policy.
    ///
    /// Equivalent to: `ip xfrm policy update ...`.
    pub async fn update(&self, p: &PolicySpec) -> Result<()> {
        self.0.xfrm.ack(wire::policy_body(p, true)?).await
    }

    /// Reads one policy.
    ///
    /// Equivalent to: `ip xfrm policy get src A dst B dir D [mark M] [if_id I]` or `... index I`.
    pub async fn get(&self, id: &PolicyId) -> Result<PolicySpec> {
        let msgs = self
            .0
            .xfrm
            .fetch(wire::policy_id_body(id, false)?, false)
            .await?;
        msgs.into_iter()
            .find_map(|m| policy_of(m).transpose())
            .unwrap_or(Err(Error::NotFound {
                op: "get policy",
                ext_ack: None,
            }))
    }

    /// Deletes one policy.
    ///
    /// Equivalent to: `ip xfrm policy delete src A dst B dir D [mark M] [if_id I]`.
    pub async fn delete(&self, id: &PolicyId) -> Result<()> {
        self.0.xfrm.ack(wire::policy_id_body(id, true)?).await
    }

    /// Lists all policies (main type; per-socket policies are not in the SPD and not listed).
    ///
    /// Equivalent to: `ip xfrm policy list`.
    pub async fn dump(&self) -> Result<Vec<PolicySpec>> {
        let msgs = self.0.xfrm.fetch(wire::dump_body(false), true).await?;
        msgs.into_iter()
            .filter(|m| !is_socket_policy(m))
            .filter_map(|m| policy_of(m).transpose())
            .collect()
    }

    /// Deletes all policies. Equivalent to: `ip xfrm policy flush`.
    pub async fn flush(&self) -> Result<()> {
        self.0.xfrm.ack(wire::flush_policy_body()).await
    }
}

/// A pipelined list of SA/policy changes, sent many per datagram with one ack at the end.
///
/// Each added item is emitted immediately (keys go straight into the zeroizing request buffer);
/// [`Batch::execute`] returns one result per item in order, so partial failures are visible.
pub struct Batch<'a> {
    handle: &'a Handle,
    bodies: Vec<Body>,
    error: Option<(usize, Error)>,
}

impl Batch<'_> {
    fn push(&mut self, b: Result<Body>) -> &mut Self {
        match b {
            Ok(b) => self.bodies.push(b),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some((self.bodies.len(), e));
                }
            }
        }
        self
    }

    /// Queues `ip xfrm state add`.
    pub fn add_sa(&mut self, sa: &SaSpec) -> &mut Self {
        self.push(wire::sa_body(sa, false))
    }

    /// Queues `ip xfrm state update`.
    pub fn update_sa(&mut self, sa: &SaSpec) -> &mut Self {
        self.push(wire::sa_body(sa, true))
    }

    /// Queues `ip xfrm state delete`.
    pub fn delete_sa(&mut self, id: &SaId) -> &mut Self {
        self.push(Ok(wire::sa_id_body(id, true)))
    }

    /// Queues `ip xfrm policy add`.
    pub fn add_policy(&mut self, p: &PolicySpec) -> &mut Self {
        self.push(wire::policy_body(p, false))
    }

    /// Queues `ip xfrm policy update`.
    pub fn update_policy(&mut self, p: &PolicySpec) -> &mut Self {
        self.push(wire::policy_body(p, true))
    }

    /// Queues `ip xfrm policy delete`.
    pub fn delete_policy(&mut self, id: &PolicyId) -> &mut Self {
        self.push(wire::policy_id_body(id, true))
    }

    /// Number of queued requests.
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// Sends everything. If any item could not be encoded, nothing is sent and that error is
    /// returned; otherwise the per-item kernel results come back in order.
    pub async fn execute(self) -> Result<Vec<Result<()>>> {
        if let Some((_, e)) = self.error {
            return Err(e);
        }
        Ok(self.handle.xfrm.batch(&self.bodies).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_xfrm::policy::ModifyMessage;

    /// A dump lists per-socket policies with direction XFRM_POLICY_MAX + dir; they are skipped,
    /// SPD policies (in, out, fwd) are kept.
    #[test]
    fn socket_policies_are_told_apart_in_a_dump() {
        let with_dir = |d: u8| {
            let mut m = ModifyMessage::default();
            m.user_policy_info.direction = d;
            XfrmMessage::AddPolicy(m)
        };
        for d in 0..3 {
            assert!(!is_socket_policy(&with_dir(d)), "direction {d}");
        }
        for d in 3..6 {
            assert!(is_socket_policy(&with_dir(d)), "direction {d}");
        }
    }
}
