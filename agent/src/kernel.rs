//! What the daemon does to the kernel, through the `xfrm` crate: tunnel devices and their
//! policies, Child SAs from the engine's installs, and the start-up sweep of objects a
//! previous run left behind. Every object carries vtid's marks (reqid band, policy priority
//! band, `vtid:` interface alias), so nothing here ever touches another tool's state.

use std::net::IpAddr;

use anyhow::{Context, Result};
use ike::transform::{Encr, Integ};
use xfrm::{
    AeadAlg, Cipher, Crypto, Dir, Encap, Handle, Key, Lifetime, Mark, PolicySpec, SaId, SaSpec,
    Selector, Spi, Template, VtiSpec, XfrmiSpec,
};

use crate::plan::{DeviceKind, POLICY_PRIORITY, TunnelPlan};

/// Replay window for inbound SAs (packets); above 32 the xfrm crate uses XFRMA_REPLAY_ESN_VAL.
const REPLAY_WINDOW: u32 = 128;

/// The policies of a tunnel: out/in/fwd for IPv4 and IPv6 0/0 selectors, bound to the device
/// by if_id (xfrmi) or mark (vti), templates with the tunnel's reqid.
pub fn tunnel_policies(t: &TunnelPlan) -> Vec<PolicySpec> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for dir in [Dir::Out, Dir::In, Dir::Fwd] {
            let (src, dst) = if dir == Dir::Out {
                (t.local, t.remote)
            } else {
                (t.remote, t.local)
            };
            let mut p = PolicySpec::new(Selector::any(v6), dir)
                .priority(POLICY_PRIORITY)
                .template(Template::tunnel(src, dst, t.reqid));
            p = match t.mode {
                DeviceKind::Xfrmi => p.if_id(t.if_id),
                // ip_vti: okey marks outbound lookups, ikey is set on decapsulated packets
                // before the inbound policy check (net/ipv4/ip_vti.c); we use one key.
                DeviceKind::Vti => p.mark(Mark::exact(t.if_id)),
            };
            out.push(p);
        }
    }
    out
}

/// Creates the tunnel device with its alias, group, MTU, address, routes and policies.
/// Equivalent to `ip link add NAME type xfrm if_id N` (or `type vti local L remote R key K`),
/// `ip link set NAME alias vtid:NAME group 7654 mtu M up`, `ip addr add`, `ip route add`,
/// `ip xfrm policy add ...` ×6.
pub async fn create_tunnel(h: &Handle, t: &TunnelPlan) -> Result<()> {
    let link = h.link();
    // Front-door VRF: the VRF device is the underlay link, so the outer route lookup happens
    // in its table (see vrf.rs).
    let underlay = match &t.fvrf {
        Some(v) => Some(crate::vrf::ensure(h, v).await?),
        None => None,
    };
    match t.mode {
        DeviceKind::Xfrmi => {
            link.add_xfrmi(&XfrmiSpec {
                name: t.name.clone(),
                if_id: t.if_id,
                underlay,
            })
            .await
        }
        DeviceKind::Vti => {
            link.add_vti(&VtiSpec {
                name: t.name.clone(),
                local: t.local,
                remote: t.remote,
                ikey: t.if_id,
                okey: t.if_id,
                underlay,
            })
            .await
        }
    }
    .with_context(|| format!("create tunnel interface {}", t.name))?;
    let idx = link.index_of(&t.name).await?;
    link.set_alias(idx, &format!("{}{}", xfrm::OWNED_ALIAS_PREFIX, t.name))
        .await?;
    link.set_group(idx, xfrm::OWNED_LINK_GROUP).await?;
    link.set_mtu(idx, t.mtu)
        .await
        .with_context(|| format!("{}: mtu {}", t.name, t.mtu))?;
    if !t.carries_v6() {
        // An IPv4-only tunnel runs no IPv6: its link-local router solicitations and MLD
        // reports would otherwise match the ::/0 policies, start negotiations by ACQUIRE
        // (even with `initiate = false`) and cross the tunnel as noise.
        link.set_disable_ipv6(&t.name, true)
            .with_context(|| format!("{}: disable IPv6", t.name))?;
    }
    if t.mode == DeviceKind::Vti {
        // ip_vti drops decapsulated packets on the inbound policy check unless
        // disable_policy is set on the device.
        link.set_disable_policy(&t.name, true)?;
    }
    // Inside VRF: enslave before the address, so its connected route lands in the VRF table.
    if let Some(v) = &t.vrf {
        crate::vrf::enslave(h, idx, v).await?;
    }
    link.set_up(idx).await?;
    // plan::build resolves `unnumbered` into the borrowed /32.
    link.add_address(idx, t.inner).await?;
    for r in &t.routes {
        let table = t.vrf.as_ref().map_or(254, |v| v.table);
        link.add_route(&xfrm::RouteSpec::dev(*r, idx).table(table))
            .await
            .with_context(|| format!("{}: route {r}", t.name))?;
    }
    let mut batch = h.batch();
    for p in tunnel_policies(t) {
        batch.add_policy(&p);
    }
    for r in batch.execute().await? {
        r.with_context(|| format!("{}: policy", t.name))?;
    }
    Ok(())
}

/// Brings a running tunnel's routes from `old` to `t.routes` without touching its device or
/// SAs (a reload that only edits `routes`). Equivalent to `ip route del PREFIX dev NAME` for
/// each dropped prefix and `ip route add PREFIX dev NAME` for each new one, in the inside
/// VRF's table if any. Keeps going after an error and returns all of them.
pub async fn update_routes(h: &Handle, t: &TunnelPlan, old: &[ipnet::IpNet]) -> Vec<anyhow::Error> {
    let link = h.link();
    let idx = match link.index_of(&t.name).await {
        Ok(i) => i,
        Err(e) => return vec![anyhow::Error::new(e).context(format!("{}: routes", t.name))],
    };
    let table = t.vrf.as_ref().map_or(254, |v| v.table);
    let mut errors = Vec::new();
    for r in old.iter().filter(|r| !t.routes.contains(r)) {
        if let Err(e) = link
            .del_route(&xfrm::RouteSpec::dev(*r, idx).table(table))
            .await
        {
            errors.push(anyhow::Error::new(e).context(format!("{}: delete route {r}", t.name)));
        }
    }
    for r in t.routes.iter().filter(|r| !old.contains(r)) {
        if let Err(e) = link
            .add_route(&xfrm::RouteSpec::dev(*r, idx).table(table))
            .await
        {
            errors.push(anyhow::Error::new(e).context(format!("{}: route {r}", t.name)));
        }
    }
    errors
}

/// The namespace's interfaces with their MTUs and addresses, for [`crate::plan::build`].
///
/// Equivalent to: `ip -o link show; ip -o addr show`.
pub async fn local_addrs(h: &Handle) -> Result<crate::plan::LocalAddrs> {
    let link = h.link();
    let links = link.list().await.context("list interfaces")?;
    let addrs = link.addresses(None).await.context("list addresses")?;
    let mut out = crate::plan::LocalAddrs::default();
    for l in links {
        let mine = addrs
            .iter()
            .filter(|(i, _)| *i == l.index)
            .map(|(_, a)| *a)
            .collect();
        if crate::offload::esp_hw_offload(&l.name).unwrap_or(false) {
            out.esp_offload.insert(l.name.clone());
        }
        out.links.insert(l.name, (l.mtu.unwrap_or(1500), mine));
    }
    Ok(out)
}

/// Removes a tunnel's device and policies; keeps going after errors and reports them all.
pub async fn remove_tunnel(h: &Handle, t: &TunnelPlan) -> Vec<anyhow::Error> {
    let mut errs = Vec::new();
    for p in tunnel_policies(t) {
        if let Err(e) = h.policy().delete(&p.id()).await {
            if !matches!(e, xfrm::Error::NotFound { .. }) {
                errs.push(anyhow::Error::new(e).context(format!("{}: delete policy", t.name)));
            }
        }
    }
    match h.link().index_of(&t.name).await {
        Ok(idx) => {
            if let Err(e) = h.link().delete(idx).await {
                errs.push(anyhow::Error::new(e).context(format!("delete {}", t.name)));
            }
        }
        Err(e) => errs.push(anyhow::Error::new(e).context(format!("find {}", t.name))),
    }
    errs
}

/// Deletes every SA, policy and interface a previous vtid left (after a crash or `kill -9`),
/// recognised by vtid's marks. Returns what it removed and every error.
pub async fn sweep_orphans(h: &Handle) -> (usize, Vec<anyhow::Error>) {
    let mut n = 0;
    let mut errs = Vec::new();
    // Interfaces and policies first: once no policy sends traffic to an SA, deleting the SAs
    // cannot provoke an ACQUIRE (and a larval SA) for the packets in between.
    match h.link().list().await {
        Ok(links) => {
            for l in links
                .iter()
                .filter(|l| xfrm::is_owned_alias(l.alias.as_deref()))
            {
                match h.link().delete(l.index).await {
                    Ok(()) => n += 1,
                    Err(e) => {
                        errs.push(anyhow::Error::new(e).context(format!("delete {}", l.name)))
                    }
                }
            }
        }
        Err(e) => errs.push(anyhow::Error::new(e).context("list links")),
    }
    match h.policy().dump().await {
        Ok(ps) => {
            for p in ps.iter().filter(|p| xfrm::is_owned_priority(p.priority)) {
                match h.policy().delete(&p.id()).await {
                    Ok(()) => n += 1,
                    Err(e) => errs.push(anyhow::Error::new(e).context("delete orphan policy")),
                }
            }
        }
        Err(e) => errs.push(anyhow::Error::new(e).context("dump policies")),
    }
    match h.sa().dump().await {
        Ok(sas) => {
            // A larval SA (spi 0, an ACQUIRE placeholder) is not in the kernel's by-SPI table,
            // so XFRM_MSG_DELSA cannot name it; the kernel drops it after
            // net.core.xfrm_acq_expires on its own.
            for s in sas
                .iter()
                .filter(|s| xfrm::is_owned_reqid(s.spec.reqid) && s.spec.spi.0 != 0)
            {
                match h.sa().delete(&s.spec.id()).await {
                    Ok(()) => n += 1,
                    Err(e) => errs.push(anyhow::Error::new(e).context("delete orphan SA")),
                }
            }
        }
        Err(e) => errs.push(anyhow::Error::new(e).context("dump SAs")),
    }
    (n, errs)
}

fn crypto(encr: Encr, integ: Option<Integ>, keys: &ike::EspKeys) -> Result<Crypto> {
    let key = Key::from_slice(keys.encr.expose());
    let integ_alg = |i: Integ| match i {
        Integ::HmacSha1_96 => xfrm::Integ::HmacSha1_96,
        Integ::HmacSha256_128 => xfrm::Integ::HmacSha256_128,
        Integ::HmacSha384_192 => xfrm::Integ::HmacSha384_192,
        Integ::HmacSha512_256 => xfrm::Integ::HmacSha512_256,
    };
    Ok(match encr {
        Encr::AesGcm16 { .. } => Crypto::Aead {
            alg: AeadAlg::AesGcm16,
            key,
        },
        Encr::ChaCha20Poly1305 => Crypto::Aead {
            alg: AeadAlg::ChaCha20Poly1305,
            key,
        },
        Encr::AesCbc { .. } | Encr::TripleDes => {
            let i = integ.context("CBC cipher without integrity")?;
            let ik = keys.integ.as_ref().context("no integrity key")?;
            Crypto::CipherAuth {
                cipher: if encr == Encr::TripleDes {
                    Cipher::TripleDesCbc
                } else {
                    Cipher::AesCbc
                },
                cipher_key: key,
                integ: integ_alg(i),
                integ_key: Key::from_slice(ik.expose()),
            }
        }
    })
}

/// The two SAs of a Child SA install (inbound first: it must exist before the peer may use
/// it). Equivalent to two `ip xfrm state add ... mode tunnel reqid R if_id N` commands.
pub fn child_sas(t: &TunnelPlan, inst: &ike::ChildSaInstall) -> Result<[SaSpec; 2]> {
    let (l, r) = (inst.local.ip(), inst.remote.ip());
    let hard = inst.hard_lifetime.as_secs();
    let life = Lifetime {
        soft_bytes: inst.bytes.map(|b| b.soft),
        hard_bytes: inst.bytes.map(|b| b.hard),
        // The engine rekeys by time itself; the kernel's hard limit is the safety net.
        hard_add_secs: (hard > 0).then_some(hard),
        ..Lifetime::default()
    };
    let mk = |src: IpAddr, dst: IpAddr, spi: u32, keys: &ike::EspKeys, inbound: bool| {
        let mut s = SaSpec::new(src, dst, Spi(spi), crypto(inst.encr, inst.integ, keys)?)
            .mode(match inst.mode {
                ike::Mode::Tunnel => xfrm::Mode::Tunnel,
                ike::Mode::Transport => xfrm::Mode::Transport,
            })
            .reqid(t.reqid)
            .esn(inst.esn)
            .replay_window(if inbound { REPLAY_WINDOW } else { 0 })
            .lifetime(life);
        s = match t.mode {
            DeviceKind::Xfrmi => s.if_id(t.if_id),
            DeviceKind::Vti => s.mark(Mark::exact(t.if_id)),
        };
        if let Some(e) = inst.encap {
            let (sport, dport) = if inbound {
                (e.remote_port, e.local_port)
            } else {
                (e.local_port, e.remote_port)
            };
            s = s.encap(Encap {
                sport,
                dport,
                oa: None,
            });
        }
        Ok::<_, anyhow::Error>(s)
    };
    Ok([
        mk(r, l, inst.inbound_spi, &inst.inbound, true)?,
        mk(l, r, inst.outbound_spi, &inst.outbound, false)?,
    ])
}

/// The kernel ids of a Child SA's two SAs, for counters and deletion.
pub fn child_sa_ids(
    t: &TunnelPlan,
    local: IpAddr,
    remote: IpAddr,
    spi_in: u32,
    spi_out: u32,
) -> [SaId; 2] {
    let mark = (t.mode == DeviceKind::Vti).then(|| Mark::exact(t.if_id));
    let id = |src, dst, spi| SaId {
        src: Some(src),
        dst,
        proto: xfrm::Proto::Esp,
        spi: Spi(spi),
        mark,
        if_id: (t.mode == DeviceKind::Xfrmi).then_some(t.if_id),
    };
    [id(remote, local, spi_in), id(local, remote, spi_out)]
}

/// Inner prefixes a tunnel's address family implies, for `show`.
pub fn describe_inner(inner: &ipnet::IpNet) -> String {
    inner.to_string()
}
