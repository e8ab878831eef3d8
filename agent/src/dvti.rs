//! Dynamic VTI planning (the runtime is `virtual_access.rs`): one xfrm interface per authenticated peer, cloned from a `virtual_template`
//! (Cisco's Virtual-Template / Virtual-Access).
//!
//! Life cycle, as the seeds describe it: the clone is created when the peer's IKE SA is
//! authenticated (the engine's `PeerAuthenticated`, which comes before the first Child SA
//! install), carries that peer's Child SAs (its own if_id), gets routes toward the peer from
//! the negotiated traffic selectors or the template, and is deleted, routes and policies with
//! it, once the IKE SA and every Child SA of the peer are gone. IKE and Child SA rekeys keep
//! the session id, so they keep the clone; a make-before-break reauthentication (a new session
//! of the same peer without INITIAL_CONTACT) joins the existing clone; a peer that comes back
//! with INITIAL_CONTACT gets a fresh clone while the engine drops its old session, whose clone
//! then goes like any other.
//!
//! Clones are xfrm interfaces keyed by if_id, never ip_vti keyed by marks: the kernel bins
//! policies by if_id but not by mark, so N mark-keyed 0/0 policies insert in quadratic time.
//! Ownership is marked like every vtid object (alias `vtid:NAME`, reqid and policy-priority
//! bands), so the start-up orphan sweep removes clones a killed daemon left behind.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use ike::ConnId;
use ike::wire::TrafficSelector;
use ipnet::IpNet;

use crate::config::{
    self, AuthMethod, Config, LocalIdentity, LocalTermination, PeerMatch, TemplateRoutes,
};
use crate::mtu::EspOverhead;
use crate::plan::{DEFAULT_UNDERLAY_MTU, LocalAddrs, MAIN_TABLE, REQID_BASE};

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
    pub routes: TemplateRoutes,
    /// ESP offload of the clones (the template's, else its IPsec profile's; see offload.rs).
    pub offload: config::Offload,
}

impl TemplatePlan {
    /// Routing table of the clones' routes.
    pub fn table(&self) -> u32 {
        self.vrf.as_ref().map_or(MAIN_TABLE, |v| v.table)
    }
}

/// Plans every IKE profile that names a `virtual_template`: one responder-only engine
/// connection per keyring entry (address entries match the peer's address range, identity
/// entries its identity; certificate profiles get one connection), added to `peers`.
/// `conn_ids` keeps ids stable across reloads, under names `dvti:PROFILE#N`.
pub fn plan_templates(
    cfg: &Config,
    conn_ids: &mut BTreeMap<String, u32>,
    links: &LocalAddrs,
    peers: &mut Vec<ike::PeerConfig>,
) -> Result<BTreeMap<ConnId, TemplatePlan>> {
    let mut out = BTreeMap::new();
    for (pname, prof) in &cfg.ike_profiles {
        let Some(tname) = &prof.virtual_template else {
            continue;
        };
        let vt = cfg
            .virtual_templates
            .get(tname)
            .with_context(|| format!("ike_profile {pname}: no virtual_template {tname}"))?;
        let ipsec = cfg
            .ipsec_profiles
            .get(&vt.protection)
            .with_context(|| format!("virtual_template {tname}: no ipsec_profile"))?;
        let mut esp: Vec<ike::EspProposal> = ipsec
            .transform_sets
            .iter()
            .filter_map(|ts| cfg.transform_sets.get(ts))
            .map(|ts| ike::EspProposal {
                encr: ts.esp,
                integ: ts.integrity,
                esn: ike::transform::Esn::No,
            })
            .collect();
        let first = *esp
            .first()
            .with_context(|| format!("virtual_template {tname}: no transform sets"))?;
        let local = match &prof.local {
            Some(LocalTermination::Address(a)) => *a,
            Some(LocalTermination::Interface(i)) => links
                .pick(i, false)
                .with_context(|| format!("ike_profile {pname}: {i} has no IPv4 address"))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let offload = cfg.template_offload(tname);
        crate::offload::prefer_aead(&mut esp, offload, links.offloads(local));
        let unnumbered = links.pick(&vt.unnumbered, false).with_context(|| {
            format!(
                "virtual_template {tname}: unnumbered interface {} has no IPv4 address",
                vt.unnumbered
            )
        })?;
        let derived = EspOverhead {
            outer_ipv6: local.is_ipv6(),
            udp_encap: false,
            encr: first.encr,
            integ: first.integ,
        }
        .tunnel_mtu(links.mtu_of(local).unwrap_or(DEFAULT_UNDERLAY_MTU));
        let vrf = crate::vrf::plan(cfg, vt.vrf.as_ref());
        // Who may connect, and with which key.
        let mut matches: Vec<(ike::RemoteAddr, Option<ike::IdMatch>, ike::AuthConfig)> = Vec::new();
        // Our certificate's subject, when we authenticate with one: a DN `local_identity`
        // must be sent exactly as the certificate encodes it (RFC 4945 §3.1.5).
        let mut subject: Option<Vec<u8>> = None;
        let remote_id = crate::certs::id_match(&prof.match_identity)
            .with_context(|| format!("ike_profile {pname}: match_identity"))?;
        if prof.local_auth == AuthMethod::Psk {
            let kname = prof
                .keyring
                .as_ref()
                .with_context(|| format!("ike_profile {pname}: no keyring"))?;
            let keyring = cfg
                .keyrings
                .get(kname)
                .with_context(|| format!("ike_profile {pname}: no keyring {kname}"))?;
            for entry in &keyring.peers {
                let psk = entry
                    .psk
                    .as_ref()
                    .with_context(|| format!("ike_profile {pname}: pre-shared key was not read"))?;
                let auth = ike::AuthConfig::Psk(ike::secret::Secret::from_slice(psk.expose()));
                match &entry.peer {
                    PeerMatch::Address(net) => matches.push((
                        ike::RemoteAddr::Prefix(net.addr(), net.prefix_len()),
                        None,
                        auth,
                    )),
                    PeerMatch::Identity(id) => {
                        let m = crate::certs::id_match(&[identity_match(id)])
                            .with_context(|| format!("keyring {kname}"))?;
                        matches.push((ike::RemoteAddr::Any, Some(m), auth));
                    }
                }
            }
        } else {
            let tp_name = prof
                .trustpoint
                .as_ref()
                .with_context(|| format!("ike_profile {pname}: no trustpoint"))?;
            let tp = cfg
                .trustpoints
                .get(tp_name)
                .with_context(|| format!("ike_profile {pname}: no trustpoint {tp_name}"))?;
            let loaded = crate::certs::load_trustpoint(tp_name, tp)
                .with_context(|| format!("ike_profile {pname}"))?;
            subject = Some(loaded.subject);
            matches.push((
                ike::RemoteAddr::Any,
                None,
                ike::AuthConfig::Certificate(loaded.auth),
            ));
        }
        let local_id = match &prof.local_identity {
            LocalIdentity::Address => None,
            LocalIdentity::Explicit(id) => Some(
                crate::certs::local_id(id, subject.as_deref())
                    .with_context(|| format!("ike_profile {pname}"))?,
            ),
        };
        let proposals = if prof.proposals.is_empty() {
            vec![config::IkeProposal::builtin_default()]
        } else {
            prof.proposals
                .iter()
                .filter_map(|p| cfg.ike_proposals.get(p).cloned())
                .collect()
        };
        let ike_proposals: Vec<ike::IkeProposal> =
            proposals.iter().flat_map(crate::plan::expand_ike).collect();
        let lifetime = |secs: u64| ike::Lifetime {
            lifetime: Duration::from_secs(secs),
            rekey_margin: Duration::from_secs((secs / 10).max(5)),
            jitter: Duration::from_secs((secs / 20).max(1)),
        };
        let any = vec![TrafficSelector::any(false), TrafficSelector::any(true)];
        let hard = ipsec.lifetime.kilobytes.saturating_mul(1024);
        for (i, (remote, id_override, auth)) in matches.into_iter().enumerate() {
            let key = format!("dvti:{pname}#{i}");
            let next = conn_ids.values().max().copied().unwrap_or(0) + 1;
            let conn = *conn_ids.entry(key.clone()).or_insert(next);
            peers.push(ike::PeerConfig {
                id: ConnId(conn),
                name: key,
                local: SocketAddr::new(local, cfg.global.ike_port),
                remote,
                local_id: local_id.clone(),
                remote_id: id_override.unwrap_or_else(|| remote_id.clone()),
                auth,
                ike_proposals: ike_proposals.clone(),
                ike_lifetime: lifetime(u64::from(prof.lifetime_seconds)),
                child: ike::ChildConfig {
                    esp_proposals: esp.clone(),
                    pfs: ipsec.pfs,
                    // The spoke decides what it routes into its tunnel; we accept any
                    // narrowing of 0/0 (RFC 7296 §2.9) and route what it proposes.
                    local_ts: any.clone(),
                    remote_ts: any.clone(),
                    mode: ike::Mode::Tunnel,
                    lifetime: lifetime(u64::from(ipsec.lifetime.seconds)),
                    lifetime_bytes: Some(ike::ByteLimits {
                        soft: hard / 10 * 9,
                        hard,
                    }),
                },
                dpd_interval: prof.dpd.map(|d| Duration::from_secs(u64::from(d.interval))),
                allow_legacy: cfg.global.allow_legacy,
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
                    vrf: vrf.clone(),
                    qdisc: vt.qdisc.clone(),
                    routes: vt.routes.clone(),
                    offload,
                },
            );
        }
    }
    Ok(out)
}

/// A keyring identity as a `match_identity` pattern (exact).
fn identity_match(id: &config::Identity) -> config::IdentityMatch {
    match id {
        config::Identity::Address(a) => config::IdentityMatch::Address(IpNet::from(*a)),
        config::Identity::Fqdn(f) => config::IdentityMatch::Fqdn(f.clone()),
        config::Identity::Email(e) => config::IdentityMatch::Email(e.clone()),
        config::Identity::Dn(d) => config::IdentityMatch::Dn(d.clone()),
    }
}

/// Connections whose template plan changed or disappeared between two plans: their sessions
/// are terminated on reload so the peers come back onto clones of the new template.
pub fn changed(
    old: &BTreeMap<ConnId, TemplatePlan>,
    new: &BTreeMap<ConnId, TemplatePlan>,
) -> Vec<ConnId> {
    old.iter()
        .filter(|(c, t)| new.get(c) != Some(t))
        .map(|(c, _)| *c)
        .collect()
}
