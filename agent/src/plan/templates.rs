//! Dynamic VTI templates as the engine answers them: one responder-only connection per
//! keyring entry of an IKE profile that clones a `virtual_template` (see dvti.rs for the
//! clones themselves).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use ike::ConnId;
use ike::wire::TrafficSelector;

use super::{
    LocalAddrs, MAIN_TABLE, PeerPlan, REQID_BASE, auth_config, derived_mtu, esp_proposals,
    expand_ike, lifetime,
};
use crate::config::{self, Config, Credentials, LocalTermination, PeerMatch, ProfileCredentials};

/// A template as one IKE connection answers it: everything a clone needs except the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplatePlan {
    /// `virtual_template` name.
    pub template: String,
    /// `ike_profile` name.
    pub profile: String,
    /// The engine connection (one per keyring entry of the profile).
    pub conn: ConnId,
    /// reqid of every clone's SAs and policy templates.
    pub reqid: u32,
    /// Clone name prefix (`global.interface_prefix`).
    pub prefix: String,
    /// Address the clones borrow (`unnumbered`).
    pub unnumbered: IpAddr,
    /// Clone MTU.
    pub mtu: u32,
    /// Interface group of the clones.
    pub group: u32,
    /// Inside VRF.
    pub vrf: Option<crate::vrf::VrfPlan>,
    /// Root qdisc, `tc` syntax.
    pub qdisc: Option<String>,
    /// Route installation.
    pub routes: config::TemplateRoutes,
    /// ESP offload of the clones (the template's, else its IPsec profile's; see offload.rs).
    pub offload: config::Offload,
    /// `mode = "multipoint"`: the one collect-metadata device every spoke shares (see
    /// `crate::multipoint`); `None`: a clone per spoke.
    pub multipoint: Option<String>,
}

impl TemplatePlan {
    /// The template itself asks for IPv6: an IPv6 unnumbered address or IPv6 fixed routes.
    /// Without that its clones and spokes start IPv4-only (IPv6 follows a spoke's IPv6
    /// traffic selectors, see `VirtualAccesses::enable_v6`).
    pub fn carries_v6(&self) -> bool {
        self.unnumbered.is_ipv6()
            || matches!(&self.routes, config::TemplateRoutes::Prefixes(l) if l.iter().any(|p| p.addr().is_ipv6()))
    }

    /// Routing table of the clones' routes.
    pub fn table(&self) -> u32 {
        self.vrf.as_ref().map_or(MAIN_TABLE, |v| v.table)
    }
}

/// Plans every IKE profile that names a `virtual_template`: one responder-only engine
/// connection per keyring entry (address entries match the peer's address range, identity
/// entries its identity; certificate profiles get one connection), added to `peers`.
/// `conn_ids` keeps ids stable across reloads, under names `dvti:PROFILE#N`. Fails only when
/// `local_interface` or `unnumbered` has no IPv4 address now.
pub fn plan_templates(
    cfg: &Config,
    conn_ids: &mut BTreeMap<String, u32>,
    links: &LocalAddrs,
    peers: &mut Vec<PeerPlan>,
) -> Result<BTreeMap<ConnId, TemplatePlan>> {
    let mut out = BTreeMap::new();
    for (pname, prof) in &cfg.ike_profiles {
        let Some((tname, vt)) = &prof.template else {
            continue;
        };
        let ipsec = &vt.ipsec;
        let mut esp = esp_proposals(ipsec);
        let local = match &prof.local {
            Some(LocalTermination::Address(a)) => *a,
            Some(LocalTermination::Interface(i)) => links
                .pick(i, false)
                .with_context(|| format!("ike_profile {pname}: {i} has no IPv4 address"))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let offload = vt.offload.unwrap_or(ipsec.offload);
        crate::offload::prefer_aead(&mut esp, offload, links.offloads(local));
        let unnumbered = links.pick(&vt.unnumbered, false).with_context(|| {
            format!(
                "virtual_template {tname}: unnumbered interface {} has no IPv4 address",
                vt.unnumbered
            )
        })?;
        let derived = derived_mtu(&esp, local, links);
        // Who may connect, and with which key.
        let matches = profile_matches(prof);
        let ike_proposals: Vec<ike::IkeProposal> =
            prof.proposal_specs.iter().flat_map(expand_ike).collect();
        let any = vec![TrafficSelector::any(false), TrafficSelector::any(true)];
        let hard = ipsec.lifetime.kilobytes.saturating_mul(1024);
        for (i, (remote, id_override, credentials)) in matches.into_iter().enumerate() {
            let key = format!("dvti:{pname}#{i}");
            let next = conn_ids.values().max().copied().unwrap_or(0) + 1;
            let conn = *conn_ids.entry(key.clone()).or_insert(next);
            peers.push(PeerPlan {
                config: ike::PeerConfig {
                    id: ConnId(conn),
                    name: key,
                    local: SocketAddr::new(local, cfg.global.ike_port),
                    remote,
                    local_id: prof.local_id.clone(),
                    remote_id: id_override.unwrap_or_else(|| prof.remote_id.clone()),
                    auth: auth_config(&credentials),
                    ike_proposals: ike_proposals.clone(),
                    ike_lifetime: lifetime(prof.lifetime_seconds),
                    child: ike::ChildConfig {
                        esp_proposals: esp.clone(),
                        pfs: ipsec.pfs,
                        pfs_addke: ipsec.pfs_addke,
                        // The spoke decides what it routes into its tunnel; we accept any
                        // narrowing of 0/0 (RFC 7296 §2.9) and route what it proposes.
                        local_ts: any.clone(),
                        remote_ts: any.clone(),
                        mode: ike::Mode::Tunnel,
                        lifetime: lifetime(ipsec.lifetime.seconds),
                        lifetime_bytes: Some(ike::ByteLimits {
                            soft: hard / 10 * 9,
                            hard,
                        }),
                    },
                    more_children: Vec::new(),
                    dpd: prof.dpd.map(|d| d.engine()),
                    allow_legacy: cfg.global.allow_legacy,
                    // Not offered by a hub: a clone's policies name the spoke's address, and
                    // following a spoke that moved is not done yet (it reconnects instead).
                    mobike: false,
                },
                credentials,
            });
            out.insert(
                ConnId(conn),
                TemplatePlan {
                    template: tname.clone(),
                    profile: pname.clone(),
                    conn: ConnId(conn),
                    reqid: REQID_BASE + conn,
                    prefix: cfg.global.interface_prefix.clone(),
                    unnumbered,
                    mtu: vt.mtu.unwrap_or(derived),
                    group: vt.group.unwrap_or(xfrm::OWNED_LINK_GROUP),
                    vrf: vt.vrf.clone(),
                    qdisc: vt.qdisc.clone(),
                    routes: vt.routes.clone(),
                    offload,
                    multipoint: vt.multipoint.clone(),
                },
            );
        }
    }
    Ok(out)
}

/// The peers an IKE profile answers, each as (the addresses it may come from, the identity
/// override of a keyring entry that names one, its credentials): one per keyring entry, or
/// any address for a certificate profile. A responder-only connection is made of each.
pub(super) fn profile_matches(
    prof: &config::IkeProfile,
) -> Vec<(ike::RemoteAddr, Option<ike::IdMatch>, Credentials)> {
    match &prof.credentials {
        ProfileCredentials::Psk(_, keyring) => keyring
            .peers
            .iter()
            .map(|entry| {
                let creds = Credentials::Psk(entry.psk.clone());
                match &entry.peer {
                    PeerMatch::Address(net) => (
                        ike::RemoteAddr::Prefix(net.addr(), net.prefix_len()),
                        None,
                        creds,
                    ),
                    PeerMatch::Identity(_) => (ike::RemoteAddr::Any, entry.id_match.clone(), creds),
                }
            })
            .collect(),
        ProfileCredentials::Certificate(_, files) => vec![(
            ike::RemoteAddr::Any,
            None,
            Credentials::Certificate(files.clone()),
        )],
    }
}
