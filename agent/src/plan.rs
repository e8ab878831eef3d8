//! From the typed configuration to what the daemon runs: one [`TunnelPlan`] per static tunnel
//! (its device, addresses, routes, kernel identifiers) and the `ike::EndpointConfig` the
//! engine negotiates with. Pure functions, so reloads can compute the new plan completely
//! before touching anything.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ike::secret::Secret;
use ike::transform::Esn;
use ike::wire::TrafficSelector;
use ipnet::IpNet;

use crate::config::{
    self, AuthMethod, Config, InnerAddress, LocalIdentity, TunnelMode, TunnelSource,
};
use crate::mtu::{EspOverhead, IPV6_MIN_MTU};

/// Base of vtid's reqids (xfrm's ownership band): reqid = base + connection id.
pub const REQID_BASE: u32 = *xfrm::OWNED_REQID.start();
/// Policy priority inside xfrm's owned band. Lower is preferred by the kernel; route-based
/// 0/0 policies are keyed by if_id or mark, so one value for all is enough.
pub const POLICY_PRIORITY: u32 = *xfrm::OWNED_PRIORITY.start() + 0x100;
/// Base for if_ids that the configuration does not fix.
pub const IF_ID_BASE: u32 = 0x7654_0000;
/// Underlay MTU assumed when the underlay device cannot be determined.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// Everything the daemon needs to build and run one static tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPlan {
    /// Tunnel (and interface) name.
    pub name: String,
    /// The engine's connection id.
    pub conn: ike::ConnId,
    /// xfrm interface or ip_vti.
    pub mode: TunnelMode,
    /// if_id (xfrmi) or key/mark (vti).
    pub if_id: u32,
    /// reqid of its SAs and policy templates.
    pub reqid: u32,
    /// Our underlay address.
    pub local: IpAddr,
    /// The peer's underlay address.
    pub remote: IpAddr,
    /// Inner address of the device.
    pub inner: InnerAddress,
    /// Prefixes routed into the tunnel.
    pub routes: Vec<IpNet>,
    /// MTU set on the device.
    pub mtu: u32,
    /// Start the negotiation ourselves.
    pub initiate: bool,
    /// ESP offload policy (the tunnel's, else its IPsec profile's).
    pub offload: config::Offload,
    /// Inside VRF the device is enslaved to.
    pub vrf: Option<crate::vrf::VrfPlan>,
    /// Front-door VRF of the underlay and the IKE sockets.
    pub fvrf: Option<crate::vrf::VrfPlan>,
}

impl TunnelPlan {
    /// The tunnel has an IPv6 address or IPv6 routes. Without either it runs no IPv6 at all,
    /// as an IOS tunnel without `ipv6 address`/`ipv6 enable` does.
    pub fn carries_v6(&self) -> bool {
        matches!(self.inner, InnerAddress::Address(IpNet::V6(_)))
            || self.routes.iter().any(|r| matches!(r, IpNet::V6(_)))
    }
}

/// The namespace's interfaces as the plan needs them: their addresses (for `source = IFACE`
/// and `unnumbered = IFACE`) and MTUs (the underlay MTU the tunnel MTU derives from). Read
/// from the kernel by the daemon before each plan; empty in pure tests.
#[derive(Clone, Debug, Default)]
pub struct LocalAddrs {
    /// Interface name to (MTU, addresses).
    pub links: BTreeMap<String, (u32, Vec<IpNet>)>,
    /// Interfaces with ESP crypto offload on (`esp-hw-offload`), for `offload = "auto"`.
    pub esp_offload: std::collections::BTreeSet<String>,
}

impl LocalAddrs {
    /// The address of `dev` to use toward a peer of the given family: the first one, skipping
    /// IPv6 link-local (fe80::/10) which cannot carry IKE to a routed peer.
    pub fn pick(&self, dev: &str, v6: bool) -> Option<IpAddr> {
        let (_, addrs) = self.links.get(dev)?;
        addrs.iter().map(IpNet::addr).find(|a| match a {
            IpAddr::V4(_) => !v6,
            IpAddr::V6(x) => v6 && (x.segments()[0] & 0xffc0) != 0xfe80,
        })
    }

    /// True when the interface holding `addr` offloads ESP.
    pub fn offloads(&self, addr: IpAddr) -> bool {
        self.links.iter().any(|(name, (_, addrs))| {
            self.esp_offload.contains(name) && addrs.iter().any(|n| n.addr() == addr)
        })
    }

    /// MTU of the interface that holds `addr`, when that interface can be the underlay.
    /// A tunnel sourced from a loopback (Cisco's `tunnel source Loopback0`) leaves through
    /// whatever route reaches the peer, so loopbacks (and anything above the largest jumbo
    /// frame) say nothing about the path: `None`, and the caller assumes Ethernet's 1500.
    pub fn mtu_of(&self, addr: IpAddr) -> Option<u32> {
        self.links
            .iter()
            .find(|(_, (_, addrs))| addrs.iter().any(|n| n.addr() == addr))
            .filter(|(name, (mtu, _))| name.as_str() != "lo" && *mtu <= 9216)
            .map(|(_, (mtu, _))| *mtu)
    }
}

/// The whole plan of a configuration.
#[derive(Debug)]
pub struct Plan {
    /// Static tunnels by name.
    pub tunnels: BTreeMap<String, TunnelPlan>,
    /// Dynamic VTI templates by the engine connection that answers their peers.
    pub templates: BTreeMap<ike::ConnId, crate::dvti::TemplatePlan>,
    /// What the IKE engine negotiates.
    pub endpoint: ike::EndpointConfig,
}

/// Builds the plan. `conn_ids` keeps connection ids stable across reloads: names already in it
/// keep theirs, new names get the next free one (and are added).
pub fn build(
    cfg: &Config,
    conn_ids: &mut BTreeMap<String, u32>,
    links: &LocalAddrs,
) -> Result<Plan> {
    let mut tunnels = BTreeMap::new();
    let mut peers = Vec::new();
    let fixed: Vec<u32> = cfg
        .tunnels
        .values()
        .filter_map(|t| t.if_id.map(|i| i.0))
        .collect();
    for (name, t) in &cfg.tunnels {
        let next = conn_ids.values().max().copied().unwrap_or(0) + 1;
        let conn = *conn_ids.entry(name.clone()).or_insert(next);
        let local = match &t.source {
            TunnelSource::Address(a) => *a,
            // `tunnel source IFACE`: the interface's address of the destination's family,
            // read when the plan is made (start and reload).
            TunnelSource::Interface(i) => {
                links.pick(i, t.destination.is_ipv6()).with_context(|| {
                    format!(
                        "tunnel {name}: source interface {i} has no {} address",
                        if t.destination.is_ipv6() {
                            "IPv6"
                        } else {
                            "IPv4"
                        }
                    )
                })?
            }
        };
        // `ip unnumbered IFACE`: borrow the interface's IPv4 address as a /32 on the tunnel.
        let inner = match &t.inner {
            InnerAddress::Unnumbered(dev) => {
                let a = links.pick(dev, false).with_context(|| {
                    format!("tunnel {name}: unnumbered interface {dev} has no IPv4 address")
                })?;
                InnerAddress::Address(IpNet::from(a))
            }
            other => other.clone(),
        };
        let profile = cfg
            .ipsec_profiles
            .get(&t.protection)
            .with_context(|| format!("tunnel {name}: no ipsec_profile {}", t.protection))?;
        let ike_profile = cfg
            .tunnel_ike_profile(name)
            .with_context(|| format!("tunnel {name}: no IKE profile"))?;
        let offload = cfg.tunnel_offload(name);
        let mut esp: Vec<ike::EspProposal> = profile
            .transform_sets
            .iter()
            .filter_map(|ts| cfg.transform_sets.get(ts))
            .map(|ts| ike::EspProposal {
                encr: ts.esp,
                integ: ts.integrity,
                esn: Esn::No,
            })
            .collect();
        crate::offload::prefer_aead(&mut esp, offload, links.offloads(local));
        let first = esp
            .first()
            .context("ipsec profile without transform sets")?;
        let if_id = match t.if_id {
            Some(i) => i.0,
            None => (IF_ID_BASE + conn..)
                .find(|i| !fixed.contains(i))
                .unwrap_or(IF_ID_BASE),
        };
        // One MTU for both ends: the largest inner packet that fits the underlay after ESP in
        // tunnel mode with the preferred transform (see mtu.rs for why this matters).
        let derived = EspOverhead {
            outer_ipv6: local.is_ipv6(),
            udp_encap: false,
            encr: first.encr,
            integ: first.integ,
        }
        .tunnel_mtu(links.mtu_of(local).unwrap_or(DEFAULT_UNDERLAY_MTU));
        let mtu = t
            .mtu
            .unwrap_or(derived)
            .max(if has_v6(t) { IPV6_MIN_MTU } else { 576 });
        let plan = TunnelPlan {
            name: name.clone(),
            conn: ike::ConnId(conn),
            mode: t.mode,
            if_id,
            reqid: REQID_BASE + conn,
            local,
            remote: t.destination,
            inner,
            routes: t.routes.clone(),
            mtu,
            initiate: t.initiate,
            offload,
            vrf: crate::vrf::plan(cfg, t.vrf.as_ref()),
            fvrf: crate::vrf::plan(cfg, t.fvrf.as_ref().or(ike_profile.fvrf.as_ref())),
        };
        peers.push(peer_config(cfg, &plan, profile, &ike_profile, esp)?);
        tunnels.insert(name.clone(), plan);
    }
    let templates = crate::dvti::plan_templates(cfg, conn_ids, links, &mut peers)?;
    let endpoint = ike::EndpointConfig {
        peers,
        ..Default::default()
    };
    Ok(Plan {
        tunnels,
        templates,
        endpoint,
    })
}

fn has_v6(t: &config::Tunnel) -> bool {
    matches!(t.inner, InnerAddress::Address(IpNet::V6(_)))
        || t.routes.iter().any(|r| matches!(r, IpNet::V6(_)))
}

fn peer_config(
    cfg: &Config,
    plan: &TunnelPlan,
    profile: &config::IpsecProfile,
    ike_profile: &config::IkeProfile,
    esp_proposals: Vec<ike::EspProposal>,
) -> Result<ike::PeerConfig> {
    let port = cfg.global.ike_port;
    let (auth, subject) = auth_config(cfg, plan, ike_profile)?;
    let proposals = if ike_profile.proposals.is_empty() {
        vec![config::IkeProposalSpec::builtin_default()]
    } else {
        ike_profile
            .proposals
            .iter()
            .filter_map(|p| cfg.ike_proposals.get(p).cloned())
            .collect()
    };
    let ike_proposals = proposals.iter().flat_map(expand_ike).collect();
    let remote_id = crate::certs::id_match(&ike_profile.match_identity)
        .with_context(|| format!("tunnel {}: match_identity", plan.name))?;
    let local_id = match &ike_profile.local_identity {
        LocalIdentity::Address => None,
        LocalIdentity::Explicit(id) => Some(
            crate::certs::local_id(id, subject.as_deref())
                .with_context(|| format!("tunnel {}", plan.name))?,
        ),
    };
    let secs = u64::from(profile.lifetime.seconds);
    let child_lifetime = ike::Lifetime {
        lifetime: Duration::from_secs(secs),
        rekey_margin: Duration::from_secs((secs / 10).max(5)),
        jitter: Duration::from_secs((secs / 20).max(1)),
    };
    let ike_secs = u64::from(ike_profile.lifetime_seconds);
    let ike_lifetime = ike::Lifetime {
        lifetime: Duration::from_secs(ike_secs),
        rekey_margin: Duration::from_secs((ike_secs / 10).max(5)),
        jitter: Duration::from_secs((ike_secs / 20).max(1)),
    };
    // Route-based tunnels carry everything routed into the device: 0/0 selectors for both
    // families, narrowed by the peer if it wants less (RFC 7296 §2.9).
    let any = vec![TrafficSelector::any(false), TrafficSelector::any(true)];
    let hard = profile.lifetime.kilobytes.saturating_mul(1024);
    // `announce`: our prefixes instead of 0/0, so a dynamic VTI hub routes them to us. Only
    // the negotiation changes: our SAs and policies stay 0/0 keyed by the interface.
    let local_ts = match cfg.tunnels.get(&plan.name).map(|t| t.announce.as_slice()) {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|n| TrafficSelector::prefix(n.addr(), n.prefix_len()))
            .collect(),
        _ => any.clone(),
    };
    Ok(ike::PeerConfig {
        id: plan.conn,
        name: plan.name.clone(),
        local: SocketAddr::new(plan.local, port),
        remote: ike::RemoteAddr::Host(SocketAddr::new(plan.remote, port)),
        local_id,
        remote_id,
        auth,
        ike_proposals,
        ike_lifetime,
        child: ike::ChildConfig {
            esp_proposals,
            pfs: profile.pfs,
            local_ts,
            remote_ts: any,
            mode: ike::Mode::Tunnel,
            lifetime: child_lifetime,
            lifetime_bytes: Some(ike::ByteLimits {
                soft: hard / 10 * 9,
                hard,
            }),
        },
        dpd_interval: ike_profile
            .dpd
            .map(|d| Duration::from_secs(u64::from(d.interval))),
        allow_legacy: cfg.global.allow_legacy,
    })
}

/// How the tunnel authenticates, and our certificate's subject when by certificate. The
/// engine uses one method both ways, so a profile mixing PSK and signatures is refused; with
/// signatures, `rsa-sig`/`ecdsa-sig` name our key's type, and the peer may sign with any key
/// its certificate (validated to the trustpoint's CAs) carries.
fn auth_config(
    cfg: &Config,
    plan: &TunnelPlan,
    ike_profile: &config::IkeProfile,
) -> Result<(ike::AuthConfig, Option<Vec<u8>>)> {
    let psk_local = ike_profile.local_auth == AuthMethod::Psk;
    if ike_profile
        .remote_auth
        .iter()
        .any(|m| (*m == AuthMethod::Psk) != psk_local)
    {
        bail!(
            "tunnel {}: local_auth and remote_auth mix psk and signatures; vtid authenticates \
             both directions with the same method",
            plan.name
        );
    }
    if !psk_local {
        let name = ike_profile
            .trustpoint
            .as_ref()
            .with_context(|| format!("tunnel {}: no trustpoint", plan.name))?;
        let tp = cfg
            .trustpoints
            .get(name)
            .with_context(|| format!("tunnel {}: no trustpoint {name}", plan.name))?;
        let loaded = crate::certs::load_trustpoint(name, tp)
            .with_context(|| format!("tunnel {}", plan.name))?;
        let rsa = matches!(
            loaded.auth.key.default_scheme(),
            ike::crypto::sig::SignatureScheme::RsaPssSha256
        );
        if rsa != (ike_profile.local_auth == AuthMethod::RsaSig) {
            bail!(
                "tunnel {}: local_auth is {} but trustpoint {name}'s private key is {}",
                plan.name,
                if rsa { "ecdsa-sig" } else { "rsa-sig" },
                if rsa { "RSA" } else { "not RSA" }
            );
        }
        return Ok((
            ike::AuthConfig::Certificate(loaded.auth),
            Some(loaded.subject),
        ));
    }
    let keyring = ike_profile
        .keyring
        .as_ref()
        .and_then(|k| cfg.keyrings.get(k))
        .with_context(|| format!("tunnel {}: no keyring", plan.name))?;
    let entry = keyring.find_by_address(plan.remote).with_context(|| {
        format!(
            "tunnel {}: keyring has no key for {}",
            plan.name, plan.remote
        )
    })?;
    let psk = entry
        .psk
        .as_ref()
        .with_context(|| format!("tunnel {}: pre-shared key was not read", plan.name))?;
    Ok((ike::AuthConfig::Psk(Secret::from_slice(psk.expose())), None))
}

/// A Cisco-style proposal lists alternatives per transform type; the engine takes single
/// suites, so expand the cross product in the configured order of preference.
pub(crate) fn expand_ike(p: &config::IkeProposalSpec) -> Vec<ike::IkeProposal> {
    let mut out = Vec::new();
    for &encr in &p.encryption {
        let integs: Vec<Option<ike::transform::Integ>> = if encr.is_aead() {
            vec![None]
        } else {
            p.integrity.iter().copied().map(Some).collect()
        };
        for &integ in &integs {
            for &prf in &p.prf {
                for &dh in &p.groups {
                    out.push(ike::IkeProposal {
                        encr,
                        prf,
                        integ,
                        dh,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_default_plans_the_seed_tunnel() {
        let opts = config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let cfg = Config::from_toml(
            std::path::Path::new("default.toml"),
            config::DEFAULT_TOML,
            &opts,
        )
        .unwrap();
        let mut ids = BTreeMap::new();
        // Keys were not read, so building the IKE side must fail with a clear message.
        let err = build(&cfg, &mut ids, &LocalAddrs::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("pre-shared key was not read"),
            "{err:#}"
        );
        assert_eq!(ids.get("Tunnel0"), Some(&1));
    }

    #[test]
    fn interface_addresses_and_underlay_mtu() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let mut l = LocalAddrs::default();
        l.links.insert(
            "eth0".into(),
            (
                1400,
                vec![
                    net("fe80::1/64"),
                    net("2001:db8::1/64"),
                    net("192.0.2.1/24"),
                ],
            ),
        );
        l.links
            .insert("lo".into(), (65536, vec![net("10.9.9.9/32")]));
        assert_eq!(l.pick("eth0", false), Some("192.0.2.1".parse().unwrap()));
        // Link-local is skipped: it cannot reach a routed peer.
        assert_eq!(l.pick("eth0", true), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(l.pick("lo", true), None);
        assert_eq!(l.pick("eth9", false), None);
        assert_eq!(l.mtu_of("192.0.2.1".parse().unwrap()), Some(1400));
        // A loopback source says nothing about the path's MTU.
        assert_eq!(l.mtu_of("10.9.9.9".parse().unwrap()), None);
    }

    #[test]
    fn expands_cisco_proposals() {
        use ike::transform::{DhGroup, Encr, Integ, Prf};
        let p = config::IkeProposalSpec {
            encryption: vec![
                Encr::AesCbc { key_bits: 256 },
                Encr::AesGcm16 { key_bits: 128 },
            ],
            integrity: vec![Integ::HmacSha256_128, Integ::HmacSha384_192],
            prf: vec![Prf::HmacSha256],
            groups: vec![DhGroup::Curve25519, DhGroup::Modp2048],
        };
        let v = expand_ike(&p);
        // CBC: 2 integ x 2 groups; GCM: no integ x 2 groups.
        assert_eq!(v.len(), 6);
        assert!(v[4].integ.is_none() && v[4].encr.is_aead());
        assert_eq!(v[0].dh, DhGroup::Curve25519);
    }
}
