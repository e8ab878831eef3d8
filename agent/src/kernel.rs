//! The one agent module that calls the kernel (through the `xfrm` crate, which owns every
//! netlink message and ioctl): it carries out [`crate::reconcile::Op`]s, installs and deletes
//! Child SAs, and reads what the plan, offload decisions and `show` need (interfaces,
//! addresses, underlay routes, SA counters, the owned objects for the sweep). Every object it
//! creates carries vtid's marks (reqid band, policy priority band, `vtid:` interface alias,
//! link group), so nothing here ever touches another tool's state.

use std::net::IpAddr;

use anyhow::{Context, Result};
use tracing::{info, warn};
use xfrm::{Handle, RouteSpec, SaDir, SaId, SaSpec, TunnelDeviceSpec};

use crate::model::{Interface, Route, RouteMode};
use crate::offload::{Applied, Decision, Mode, SaOffload, Underlay};
use crate::plan::{DeviceKind, LocalAddrs};
use crate::reconcile::{Op, Owned};

/// Carries out `ops` in order; keeps going after an error and returns every error. A failed
/// [`Op::Create`] leaves nothing half made (see [`create`]).
pub async fn apply(h: &Handle, ops: &[Op]) -> Vec<anyhow::Error> {
    let mut errs = Vec::new();
    for op in ops {
        errs.extend(apply_one(h, op).await);
    }
    errs
}

/// Carries out one operation; see [`apply`].
pub async fn apply_one(h: &Handle, op: &Op) -> Vec<anyhow::Error> {
    match op {
        Op::Create(i) => match create(h, i).await {
            Ok(_) => Vec::new(),
            Err(e) => vec![e],
        },
        Op::Remove(i) => remove(h, i).await,
        Op::Routes {
            name,
            index,
            table,
            mode,
            add,
            del,
        } => edit_routes(h, name, *index, *table, *mode, add, del).await,
        Op::Line { name, up } => {
            let res = async {
                let idx = h.link().index_of(name).await?;
                h.link().set_line(idx, *up).await
            };
            match res.await {
                Ok(()) => Vec::new(),
                Err(e) => vec![anyhow::Error::new(e).context(format!("{name}: line state"))],
            }
        }
        Op::Policies { name, policies } => {
            let mut b = h.batch();
            for p in policies {
                b.update_policy(p);
            }
            match b.execute().await {
                Ok(results) => results
                    .into_iter()
                    .filter_map(Result::err)
                    .map(|e| anyhow::Error::new(e).context(format!("{name}: update policy")))
                    .collect(),
                Err(e) => vec![anyhow::Error::new(e).context(format!("{name}: update policies"))],
            }
        }
        Op::RemoveLink { index, name } => match h.link().delete(*index).await {
            Ok(()) => Vec::new(),
            Err(e) => vec![anyhow::Error::new(e).context(format!("delete {name}"))],
        },
        Op::RemovePolicy(id) => match h.policy().delete(id).await {
            Ok(()) | Err(xfrm::Error::NotFound { .. }) => Vec::new(),
            Err(e) => vec![anyhow::Error::new(e).context("delete orphan policy")],
        },
        Op::RemoveSa(id) => match h.sa().delete(id).await {
            Ok(()) | Err(xfrm::Error::NotFound { .. }) => Vec::new(),
            Err(e) => vec![anyhow::Error::new(e).context("delete orphan SA")],
        },
    }
}

/// Creates the interface with its address, routes and policies; returns its ifindex.
/// The device is created whole (see `xfrm::TunnelDeviceSpec`): kind, MTU, group, master VRF
/// and up state in one RTM_NEWLINK that already carries vtid's ownership mark (the link
/// group), then its alias; so a crash at any point leaves nothing the start-up sweep cannot
/// recognise. Equivalent to `ip link add NAME mtu M group 7654 [master VRF] up type xfrm if_id
/// N [dev FVRF]` (or `type vti local L remote R key K`), `ip link set NAME alias vtid:NAME
/// group G`, sysctls, `ip xfrm policy add ...` ×6, `ip addr add A dev NAME`, `tc qdisc replace
/// dev NAME root ...` and `ip route add|replace P dev NAME [table T]`.
pub async fn create(h: &Handle, i: &Interface) -> Result<u32> {
    let link = h.link();
    // Front-door VRF: the VRF device is the underlay link, so the outer route lookup happens
    // in its table; inside VRF: the device's master, so its connected route and routes land
    // in the VRF's table (see vrf.rs). Both must exist before the device.
    let underlay = match &i.fvrf {
        Some(v) => Some(crate::vrf::ensure(h, v).await?),
        None => None,
    };
    let master = match &i.vrf {
        Some(v) => Some(crate::vrf::ensure(h, v).await?),
        None => None,
    };
    let mut spec = match i.kind {
        DeviceKind::Xfrmi => TunnelDeviceSpec::xfrm(&i.name, i.if_id),
        DeviceKind::XfrmiExternal => TunnelDeviceSpec::xfrm_external(&i.name),
        DeviceKind::Vti => TunnelDeviceSpec::vti(&i.name, i.local, i.remote, i.if_id, i.if_id),
        DeviceKind::Gre(g) => {
            TunnelDeviceSpec::gre(&i.name, i.local, Some(i.remote), g.key).ttl(g.ttl)
        }
        // No remote: NBMA, nhrpd fills the neighbour table. nhrpd sets the device's
        // IFLA_GRE_LINK to its source interface; vtid sets it only at creation (front-door
        // VRF) and never compares it, so the two never fight over it.
        DeviceKind::Mgre(g) => TunnelDeviceSpec::gre(&i.name, i.local, None, g.key).ttl(g.ttl),
    }
    .mtu(i.mtu)
    .alias(format!("{}{}", xfrm::OWNED_ALIAS_PREFIX, i.name))
    .group(i.group)
    .up();
    if let Some(up) = i.line {
        spec = spec.line(up);
    }
    if i.disable_ipv6 {
        spec = spec.no_ipv6();
    }
    if let Some(u) = underlay {
        spec = spec.underlay(u);
    }
    if let Some(m) = master {
        spec = spec.master(m);
    }
    // Created with NLM_F_EXCL: a name someone else holds fails here (EEXIST) with nothing
    // made, and that device is never touched.
    let idx = link
        .create_tunnel_device(&spec)
        .await
        .with_context(|| format!("create tunnel interface {}", i.name))?;
    let mut policies = Vec::new();
    if let Err(e) = furnish(h, i, idx, &mut policies).await {
        // Undo exactly what was made: the policies that went in and the device (by its
        // ifindex, not its name).
        for p in &policies {
            if let Err(d) = h.policy().delete(p).await {
                tracing::debug!(interface = %i.name, "cleanup: delete policy: {d}");
            }
        }
        if let Err(d) = link.delete(idx).await {
            tracing::debug!(interface = %i.name, "cleanup: delete device: {d}");
        }
        return Err(e);
    }
    Ok(idx)
}

/// Everything a new device `idx` gets after its creation; the policies that went in are
/// recorded in `added`, for the cleanup of a failure.
async fn furnish(
    h: &Handle,
    i: &Interface,
    idx: u32,
    added: &mut Vec<xfrm::PolicyId>,
) -> Result<()> {
    let link = h.link();
    // IPv6 is off already when `disable_ipv6`: create() asked for it before the device
    // first went up (TunnelDeviceSpec::no_ipv6).
    if i.disable_policy() {
        link.set_disable_policy(&i.name, true)?;
    }
    // Policies only once IPv6 is off: without a policy nothing routed into the device can
    // raise an ACQUIRE, so the link-local traffic of the moment it came up goes nowhere.
    let mut batch = h.batch();
    for p in &i.policies {
        batch.add_policy(p);
    }
    // The policies (NETLINK_XFRM) and the address (NETLINK_ROUTE) are independent and go out
    // on their two sockets at once: one round trip where there were two, per clone on a hub.
    let (policies, address) = tokio::join!(batch.execute(), link.add_address(idx, i.address));
    let mut failed = None;
    for (p, r) in i.policies.iter().zip(policies?) {
        match r {
            Ok(()) => added.push(p.id()),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        return Err(anyhow::Error::new(e).context(format!("{}: policy", i.name)));
    }
    address.with_context(|| format!("{}: address {}", i.name, i.address))?;
    if let Some(q) = &i.qdisc {
        qdisc(h, idx, &i.name, q).await?;
    }
    for r in &i.routes {
        route(h, idx, i.table(), i.route_mode, *r, true)
            .await
            .with_context(|| format!("{}: route {r}", i.name))?;
    }
    Ok(())
}

/// `ip route add|replace|del P dev IDX table T`.
async fn route(
    h: &Handle,
    idx: u32,
    table: u32,
    mode: RouteMode,
    p: Route,
    add: bool,
) -> xfrm::Result<()> {
    let mut r = RouteSpec::dev(p.prefix, idx).table(table);
    if let Some(m) = p.metric {
        r = r.metric(m);
    }
    match (add, mode) {
        (true, RouteMode::Add) => h.link().add_route(&r).await,
        (true, RouteMode::Replace) => h.link().replace_route(&r).await,
        (false, _) => h.link().del_route(&r).await,
    }
}

/// Edits a running interface's routes without touching its device or SAs. Equivalent to `ip
/// route del PREFIX dev NAME` for each dropped prefix and `ip route add|replace PREFIX dev
/// NAME` for each new one, in `table`. A route already gone counts as deleted. Keeps going
/// after an error and returns all of them.
async fn edit_routes(
    h: &Handle,
    name: &str,
    index: Option<u32>,
    table: u32,
    mode: RouteMode,
    add: &[Route],
    del: &[Route],
) -> Vec<anyhow::Error> {
    let idx = match index {
        Some(i) => i,
        None => match h.link().index_of(name).await {
            Ok(i) => i,
            Err(e) => return vec![anyhow::Error::new(e).context(format!("{name}: routes"))],
        },
    };
    let mut errors = Vec::new();
    for r in del {
        match route(h, idx, table, mode, *r, false).await {
            Ok(()) | Err(xfrm::Error::NotFound { .. }) => {}
            Err(e) => {
                errors.push(anyhow::Error::new(e).context(format!("{name}: delete route {r}")))
            }
        }
    }
    for r in add {
        if let Err(e) = route(h, idx, table, mode, *r, true).await {
            errors.push(anyhow::Error::new(e).context(format!("{name}: route {r}")));
        }
    }
    errors
}

/// Removes an interface's policies and device; keeps going after errors and reports them
/// all. The device and policies go before any SA, so no packet meets a policy whose SAs are
/// gone (the kernel would answer it with an ACQUIRE and a larval SA that lingers).
pub async fn remove(h: &Handle, i: &Interface) -> Vec<anyhow::Error> {
    let mut errs = Vec::new();
    for p in &i.policies {
        if let Err(e) = h.policy().delete(&p.id()).await
            && !matches!(e, xfrm::Error::NotFound { .. })
        {
            errs.push(anyhow::Error::new(e).context(format!("{}: delete policy", i.name)));
        }
    }
    match h.link().index_of(&i.name).await {
        Ok(idx) => {
            if let Err(e) = h.link().delete(idx).await {
                errs.push(anyhow::Error::new(e).context(format!("delete {}", i.name)));
            }
        }
        Err(e) => errs.push(anyhow::Error::new(e).context(format!("find {}", i.name))),
    }
    errs
}

/// Puts multipoint spoke `i` (see `crate::virtual_access::clone_of`) on the shared
/// collect-metadata device `idx`: its policies, its nexthop objects (IPv4, and IPv6 unless
/// the spoke is IPv4-only; `crate::multipoint::nexthop`), then its fixed routes naming them.
/// On failure, what went in is taken out again. Equivalent to `ip xfrm policy add ... if_id
/// N` for each policy, `ip nexthop add id ID dev NAME encap xfrm if_id N proto 76` for each
/// family and `ip route replace P nhid ID [table T]` for each route.
pub async fn add_spoke(h: &Handle, i: &Interface, idx: u32) -> Result<()> {
    let mut batch = h.batch();
    for p in &i.policies {
        batch.add_policy(p);
    }
    let mut added = Vec::new();
    let mut failed = None;
    for (p, r) in i.policies.iter().zip(batch.execute().await?) {
        match r {
            Ok(()) => added.push(p.id()),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    let mut res = match failed {
        Some(e) => Err(anyhow::Error::new(e).context(format!("{}: spoke policy", i.name))),
        None => Ok(()),
    };
    for v6 in [false, true] {
        if res.is_err() || (v6 && i.disable_ipv6) {
            continue;
        }
        let nh = crate::multipoint::nexthop(i.if_id, v6, idx);
        if let Err(e) = h.nexthop().ensure(&nh).await {
            res = Err(anyhow::Error::new(e).context(format!("{}: spoke nexthop", i.name)));
        }
    }
    if res.is_ok()
        && let Some(e) = spoke_routes(h, &i.name, idx, i.table(), i.if_id, &i.routes, &[])
            .await
            .into_iter()
            .next()
    {
        res = Err(e);
    }
    if res.is_err() {
        // The nexthops take the routes naming them along (net/ipv4/nexthop.c remove_nexthop).
        for e in delete_spoke_nexthops(h, i.if_id).await {
            tracing::debug!(interface = %i.name, "cleanup: {e:#}");
        }
        for p in &added {
            if let Err(d) = h.policy().delete(p).await {
                tracing::debug!(interface = %i.name, "cleanup: delete spoke policy: {d}");
            }
        }
    }
    res
}

/// Takes multipoint spoke `i` off device `idx`: its policies, the routes `routes` (those it
/// still owns) and its nexthop objects (with any route still naming them); the device stays.
/// Keeps going after errors and returns them all.
pub async fn remove_spoke(
    h: &Handle,
    i: &Interface,
    idx: u32,
    routes: &[Route],
) -> Vec<anyhow::Error> {
    let mut errs = Vec::new();
    for p in &i.policies {
        if let Err(e) = h.policy().delete(&p.id()).await
            && !matches!(e, xfrm::Error::NotFound { .. })
        {
            errs.push(anyhow::Error::new(e).context(format!("{}: delete spoke policy", i.name)));
        }
    }
    errs.extend(spoke_routes(h, &i.name, idx, i.table(), i.if_id, &[], routes).await);
    errs.extend(delete_spoke_nexthops(h, i.if_id).await);
    errs
}

/// Deletes both nexthop objects of spoke `if_id`; one already gone (or never made: an
/// IPv4-only spoke has no IPv6 one) is not an error.
async fn delete_spoke_nexthops(h: &Handle, if_id: u32) -> Vec<anyhow::Error> {
    let mut errs = Vec::new();
    for v6 in [false, true] {
        let id = crate::multipoint::nexthop_id(if_id, v6);
        match h.nexthop().delete(id).await {
            Ok(()) | Err(xfrm::Error::NotFound { .. }) => {}
            Err(e) => errs.push(anyhow::Error::new(e).context(format!("delete nexthop {id}"))),
        }
    }
    errs
}

/// Deletes vtid's nexthop objects on device `dev` whose ids are not in `keep` (those of
/// spokes a restart did not adopt), with the routes that name them. Returns how many went
/// and every error. Equivalent to `ip nexthop show dev DEV protocol 76` and `ip nexthop del
/// id ID` for each stale one.
pub async fn sweep_nexthops(
    h: &Handle,
    dev: &str,
    keep: &std::collections::HashSet<u32>,
) -> (usize, Vec<anyhow::Error>) {
    let idx = match h.link().index_of(dev).await {
        Ok(i) => i,
        Err(e) => {
            return (
                0,
                vec![anyhow::Error::new(e).context(format!("find {dev}"))],
            );
        }
    };
    let listed = match h.nexthop().dump_dev(idx).await {
        Ok(v) => v,
        Err(e) => {
            return (
                0,
                vec![anyhow::Error::new(e).context(format!("{dev}: dump nexthops"))],
            );
        }
    };
    let (mut n, mut errs) = (0, Vec::new());
    for nh in listed {
        if nh.protocol != xfrm::OWNED_NEXTHOP_PROTOCOL || keep.contains(&nh.id) {
            continue;
        }
        match h.nexthop().delete(nh.id).await {
            Ok(()) => n += 1,
            Err(xfrm::Error::NotFound { .. }) => {}
            Err(e) => {
                errs.push(anyhow::Error::new(e).context(format!("{dev}: delete nexthop {}", nh.id)))
            }
        }
    }
    (n, errs)
}

/// Routes of multipoint spoke `if_id` on device `idx` (named `name`, for messages): `ip
/// route del P nhid ID` for each of `del` (a route already gone counts as deleted), then `ip
/// route replace P nhid ID` for each of `add` (replace: a spoke that came back from another
/// address takes its prefixes over from its older if_id, as a clone does). ID is the spoke's
/// nexthop object of the route's family (`crate::multipoint::nexthop`); one not there yet
/// (the IPv6 one of a spoke that started IPv4-only) is made and the route tried once more.
/// A route to delete that is not found by its nexthop is looked for as a plain `dev NAME
/// encap xfrm if_id N` route too: what a version without nexthop objects installed, for a
/// spoke adopted across the upgrade. Returns every error.
pub async fn spoke_routes(
    h: &Handle,
    name: &str,
    idx: u32,
    table: u32,
    if_id: u32,
    add: &[Route],
    del: &[Route],
) -> Vec<anyhow::Error> {
    let nh = |r: &Route| crate::multipoint::nexthop(if_id, r.prefix.addr().is_ipv6(), idx);
    let spec = |r: &Route| {
        let mut s = RouteSpec::nexthop(r.prefix, nh(r).id).table(table);
        if let Some(m) = r.metric {
            s = s.metric(m);
        }
        s
    };
    let mut errs = Vec::new();
    for r in del {
        let res = match h.link().del_route(&spec(r)).await {
            Err(xfrm::Error::NotFound { .. }) => {
                let plain = RouteSpec {
                    dev: Some(idx),
                    nexthop: None,
                    xfrm_if_id: Some(if_id),
                    ..spec(r)
                };
                h.link().del_route(&plain).await
            }
            res => res,
        };
        match res {
            Ok(()) | Err(xfrm::Error::NotFound { .. }) => {}
            Err(e) => errs.push(
                anyhow::Error::new(e).context(format!("{name}: delete route {r} (if_id {if_id})")),
            ),
        }
    }
    for r in add {
        let mut res = h.link().replace_route(&spec(r)).await;
        if res.is_err() && h.nexthop().ensure(&nh(r)).await.is_ok() {
            res = h.link().replace_route(&spec(r)).await;
        }
        if let Err(e) = res {
            errs.push(anyhow::Error::new(e).context(format!("{name}: route {r} (if_id {if_id})")));
        }
    }
    errs
}

/// Equivalent to `tc qdisc replace dev NAME root QDISC...`. The common qdiscs (`fq_codel`,
/// `fq`, `sfq`, `pfifo`, `pfifo_fast`, with an optional `limit`) go over netlink; anything
/// else in the operator's `tc` syntax goes to `tc` itself, on a blocking thread, so the daemon
/// task never waits on a child process.
async fn qdisc(h: &Handle, idx: u32, dev: &str, spec: &str) -> Result<()> {
    if let Ok(q) = spec.parse::<xfrm::Qdisc>() {
        return h
            .link()
            .replace_root_qdisc(idx, &q)
            .await
            .with_context(|| format!("{dev}: qdisc {spec}"));
    }
    let mut args: Vec<String> = ["qdisc", "replace", "dev", dev, "root"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(spec.split_whitespace().map(str::to_owned));
    let out = tokio::task::spawn_blocking({
        let args = args.clone();
        move || std::process::Command::new("tc").args(&args).output()
    })
    .await
    .context("tc thread")?
    .context("run tc")?;
    if !out.status.success() {
        anyhow::bail!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Every kernel object carrying vtid's marks, for [`crate::reconcile::sweep`], with the
/// errors of the dumps that failed.
///
/// Equivalent to `ip link show` (alias `vtid:` or group 7654), `ip xfrm policy` (priority band) and `ip xfrm
/// state` (reqid band).
pub async fn owned(h: &Handle) -> (Owned, Vec<anyhow::Error>) {
    let mut errs = Vec::new();
    let links = listed(h.link().list().await, "list links", &mut errs);
    let policies = listed(h.policy().dump().await, "dump policies", &mut errs);
    let sas = listed(h.sa().dump().await, "dump SAs", &mut errs);
    let o = Owned {
        links: links
            .into_iter()
            .filter(|l| xfrm::is_owned_link(l.alias.as_deref(), l.group))
            .map(|l| (l.index, l.name))
            .collect(),
        policies: policies
            .iter()
            .filter(|p| xfrm::is_owned_priority(p.priority))
            .map(|p| p.id())
            .collect(),
        sas: sas
            .iter()
            .filter(|s| xfrm::is_owned_reqid(s.spec.reqid) && s.spec.spi.0 != 0)
            .map(|s| s.spec.id())
            .collect(),
    };
    (o, errs)
}

/// A dump's entries, or none with its error recorded (the sweep goes on with the others).
fn listed<T>(
    res: xfrm::Result<Vec<T>>,
    what: &'static str,
    errs: &mut Vec<anyhow::Error>,
) -> Vec<T> {
    res.unwrap_or_else(|e| {
        errs.push(anyhow::Error::new(e).context(what));
        Vec::new()
    })
}

/// The namespace's interfaces with their MTUs and addresses, for [`crate::plan::build`].
///
/// Equivalent to: `ip -o link show; ip -o addr show; ethtool -k DEV` (esp-hw-offload).
pub async fn local_addrs(h: &Handle) -> Result<LocalAddrs> {
    let link = h.link();
    let links = link.list().await.context("list interfaces")?;
    let addrs = link.addresses(None).await.context("list addresses")?;
    // Grouped once: a hub holds an interface per spoke, and a filter of every address per
    // interface made each `show sa` and metrics scrape O(N²) (over 10 s at 10,000 spokes).
    let mut by_index: std::collections::HashMap<u32, Vec<ipnet::IpNet>> =
        std::collections::HashMap::new();
    for (i, a) in addrs {
        by_index.entry(i).or_default().push(a);
    }
    let mut out = LocalAddrs::default();
    for l in links {
        let mine = by_index.remove(&l.index).unwrap_or_default();
        // ESP offload is a feature of the drivers that implement xdo_dev_state_add
        // (net/xfrm/xfrm_device.c); tunnel devices never have it, so the hub's thousands of
        // xfrm/vti interfaces are not asked one ethtool ioctl each.
        let tunnel = matches!(
            l.kind.as_deref(),
            Some("xfrm" | "vti" | "vti6" | "gre" | "ip6gre")
        );
        if !tunnel && link.esp_hw_offload(&l.name).unwrap_or(false) {
            out.esp_offload.insert(l.name.clone());
        }
        out.links.insert(l.name, (l.mtu.unwrap_or(1500), mine));
    }
    Ok(out)
}

/// ifindex to name of every interface (`ip -o link show`), empty when the dump fails.
pub async fn link_names(h: &Handle) -> std::collections::BTreeMap<u32, String> {
    h.link()
        .list()
        .await
        .map(|l| l.into_iter().map(|l| (l.index, l.name)).collect())
        .unwrap_or_default()
}

/// The SA of `id` as the kernel has it now (counters, offload), if it exists.
///
/// Equivalent to `ip xfrm state get ...`.
pub async fn sa_state(h: &Handle, id: &SaId) -> Option<xfrm::SaState> {
    h.sa().get(id).await.ok()
}

/// True when the kernel no longer has the SA (it deletes SAs offloaded to a device that goes
/// down or away without telling the key manager).
pub async fn sa_vanished(h: &Handle, id: &SaId) -> bool {
    matches!(h.sa().get(id).await, Err(xfrm::Error::NotFound { .. }))
}

/// Moves a Child SA's SAs to new ESP-in-UDP ports in place (see
/// [`crate::model::child_encap_updates`]); stops at the first error.
pub async fn update_encap(h: &Handle, updates: &[xfrm::EncapUpdate]) -> Result<()> {
    for u in updates {
        h.sa()
            .update_encap(u)
            .await
            .with_context(|| format!("update SA {:08x} encap", u.id.spi.0))?;
    }
    Ok(())
}

/// Deletes a Child SA's SAs; an SA already gone counts as deleted. Keeps going after an
/// error. Equivalent to `ip xfrm state del ...` for each.
pub async fn delete_sas(h: &Handle, ids: &[SaId]) {
    for id in ids {
        if let Err(e) = h.sa().delete(id).await
            && !matches!(e, xfrm::Error::NotFound { .. })
        {
            warn!(spi = format_args!("{:08x}", id.spi.0), "delete SA: {e}");
        }
    }
}

/// The interface ESP from `local` to `remote` leaves through (in front-door VRF `fvrf`, if
/// any) and its ESP offload feature.
///
/// Equivalent to `ip route get REMOTE from LOCAL [vrf FVRF]` then `ethtool -k DEV | grep
/// esp-hw-offload`.
pub async fn underlay(
    h: &Handle,
    local: IpAddr,
    remote: IpAddr,
    fvrf: Option<&str>,
) -> Result<Underlay, String> {
    let link = h.link();
    let oif = match fvrf {
        Some(v) => Some(
            link.index_of(v)
                .await
                .map_err(|e| format!("front-door vrf {v}: {e}"))?,
        ),
        None => None,
    };
    let src = (!local.is_unspecified()).then_some(local);
    let index = link
        .route_oif(remote, src, oif)
        .await
        .map_err(|e| format!("no route to {remote} from {local}: {e}"))?
        .ok_or_else(|| format!("the route to {remote} has no output device"))?;
    let name = link
        .list()
        .await
        .map_err(|e| format!("list interfaces: {e}"))?
        .into_iter()
        .find(|l| l.index == index)
        .map(|l| l.name)
        .ok_or_else(|| format!("interface {index} vanished"))?;
    let esp_hw_offload = link
        .esp_hw_offload(&name)
        .map_err(|e| format!("{name}: features: {e}"))?;
    Ok(Underlay {
        name,
        index,
        esp_hw_offload,
    })
}

/// Whether SAs go into this kernel with their direction (XFRMA_SA_DIR, Linux 6.10+; see
/// [`xfrm::SaSpec::dir`]): asked of the kernel, not read from its version, once per process
/// (a property of the kernel, the same in every namespace), and said once in the log.
pub async fn sa_direction(h: &Handle) -> bool {
    static KNOWN: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *KNOWN
        .get_or_init(|| async {
            match h.sa().supports_dir().await {
                Ok(true) => {
                    info!("kernel: SAs are installed with their direction (XFRMA_SA_DIR)");
                    true
                }
                Ok(false) => {
                    info!(
                        "kernel: no SA direction (XFRMA_SA_DIR, Linux 6.10+): SAs are installed \
                         without one"
                    );
                    false
                }
                Err(e) => {
                    warn!("kernel: asking for SA direction failed ({e}): SAs are installed without one");
                    false
                }
            }
        })
        .await
}

/// `sas` (`[inbound, outbound]`) with their directions, where the kernel keeps them.
async fn directed(h: &Handle, sas: &[SaSpec; 2]) -> [SaSpec; 2] {
    let [i, o] = sas.clone();
    if sa_direction(h).await {
        [i.dir(SaDir::In), o.dir(SaDir::Out)]
    } else {
        [i, o]
    }
}

/// Adds a Child SA's SAs (`[inbound, outbound]`, in that order: the inbound one must exist
/// before the peer may use it), or the one `halves` names (an IKEv1 rekey installs its two
/// SAs at two moments, see `ike::Halves`), offloaded as `d` says. Packet offload refused
/// falls back to crypto when allowed; `xfrmi` marks SAs with an if_id, whose inbound SA may
/// stay in software (see offload.rs). On a refused demand nothing this call added stays
/// installed and the error says why. Static tunnels and virtual-access clones install
/// through here alike. A half not installed is reported as software, "installed
/// separately".
pub async fn install_child_sas(
    h: &Handle,
    sas: &[SaSpec; 2],
    d: &Decision,
    xfrmi: bool,
    halves: ike::Halves,
) -> Result<Applied> {
    let sas = &directed(h, sas).await;
    let wanted = |i: usize| match halves {
        ike::Halves::Both => true,
        ike::Halves::InboundFirst => i == 0,
        ike::Halves::OutboundLater => i == 1,
    };
    let separately = || SaOffload::Software(Some("installed separately".into()));
    let (dev, modes, demand) = match d {
        Decision::Software { why } => {
            let mut batch = h.batch();
            for (_, s) in sas.iter().enumerate().filter(|(i, _)| wanted(*i)) {
                batch.add_sa(s);
            }
            for r in batch.execute().await? {
                r?;
            }
            let sw = SaOffload::Software(why.clone());
            return Ok(Applied {
                inbound: if wanted(0) { sw.clone() } else { separately() },
                outbound: if wanted(1) { sw } else { separately() },
            });
        }
        Decision::Offload { dev, modes, demand } => (dev, modes, *demand),
    };
    let mut got = Vec::new();
    let mut added: Vec<SaSpec> = Vec::new();
    for (i, s) in sas.iter().enumerate() {
        if !wanted(i) {
            got.push(separately());
            continue;
        }
        let inbound = i == 0;
        let (modes, left_out) = crate::offload::modes_for(modes, inbound, xfrmi);
        let mut last = None;
        let mut done = false;
        for &m in &modes {
            let o = s.clone().offload(xfrm::Offload {
                ifindex: dev.index,
                inbound,
                packet: m == Mode::Packet,
            });
            match h.sa().add(&o).await {
                Ok(()) => {
                    done = true;
                    got.push(SaOffload::Offloaded(dev.name.clone(), m));
                    break;
                }
                Err(e) if crate::offload::is_refusal(&e) => last = Some((m, e)),
                Err(e) => {
                    remove_sas(h, &added).await;
                    return Err(e.into());
                }
            }
        }
        if done {
            added.push(s.clone());
            continue;
        }
        let why = match (last, left_out) {
            (Some((m, e)), _) => {
                let why = format!("{} refused {} offload: {e}", dev.name, m.as_str());
                if demand && !crate::offload::tolerated_refusal(inbound, xfrmi, &e) {
                    remove_sas(h, &added).await;
                    anyhow::bail!("offload {}: {why}", m.as_str());
                }
                why
            }
            // Nothing was offered: packet offload alone, for an inbound if_id SA.
            (None, Some(why)) => why,
            (None, None) => format!("no offload mode to offer {}", dev.name),
        };
        if let Err(e) = h.sa().add(s).await {
            remove_sas(h, &added).await;
            return Err(e.into());
        }
        added.push(s.clone());
        got.push(SaOffload::Software(Some(why)));
    }
    let outbound = got.pop().expect("two SAs");
    let inbound = got.pop().expect("two SAs");
    Ok(Applied { inbound, outbound })
}

async fn remove_sas(h: &Handle, sas: &[SaSpec]) {
    for s in sas {
        if let Err(e) = h.sa().delete(&s.id()).await {
            warn!("offload: removing SA {:08x} again: {e}", s.spi.0);
        }
    }
}

/// Puts `policies` in place, each created or replaced (`ip xfrm policy update ...`: the
/// kernel keeps one policy per selector and direction, so this also takes the place of one
/// with another priority). On any failure none of them is left.
pub async fn put_policies(h: &Handle, policies: &[xfrm::PolicySpec]) -> Result<()> {
    let mut b = h.batch();
    for p in policies {
        b.update_policy(p);
    }
    let failed: Vec<String> = b
        .execute()
        .await?
        .into_iter()
        .filter_map(Result::err)
        .map(|e| e.to_string())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    for p in policies {
        let _ = h.policy().delete(&p.id()).await;
    }
    anyhow::bail!("{}", failed.join("; "))
}

/// Takes `policies` away: each one that replaced a policy of `restore` (same selector and
/// direction) gives its place back to it, the others are deleted (`ip xfrm policy
/// update|delete ...`). Keeps going after an error and returns them all.
pub async fn take_policies(
    h: &Handle,
    policies: &[xfrm::PolicySpec],
    restore: &[xfrm::PolicySpec],
) -> Vec<anyhow::Error> {
    let mut errs = Vec::new();
    for p in policies {
        let res = match restore
            .iter()
            .find(|b| b.selector == p.selector && b.dir == p.dir)
        {
            Some(b) => h.policy().update(b).await,
            None => h.policy().delete(&p.id()).await,
        };
        match res {
            Ok(()) | Err(xfrm::Error::NotFound { .. }) => {}
            Err(e) => errs.push(anyhow::Error::new(e).context("policy")),
        }
    }
    errs
}

/// How a peer is reached: (output interface, gateway). `ip route get PEER`.
pub async fn route_via(h: &Handle, peer: IpAddr) -> Result<(Option<u32>, Option<IpAddr>)> {
    Ok(h.link().route_via(peer).await?)
}

/// `ip route add ...`.
pub async fn add_route(h: &Handle, r: &RouteSpec) -> Result<(), xfrm::Error> {
    h.link().add_route(r).await
}

/// `ip route del ...`.
pub async fn del_route(h: &Handle, r: &RouteSpec) -> Result<(), xfrm::Error> {
    h.link().del_route(r).await
}
