//! `[tunnel.NAME] mode = "gre" | "mgre"`: the GRE settings (`key`, `ttl`, `shared`), the
//! multipoint tunnel, and the rule seed 003 gives for tunnels that share a source (seed digest
//! F-I2): every protected GRE tunnel on one source address negotiates SAs for "protocol 47 from
//! that address", so two of them would install SAs for the same traffic and the second
//! tunnel's would replace the first's, unless they share one set (`shared`, mGRE only) or
//! their destinations tell them apart (point to point).

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use ipnet::IpNet;

use super::super::{
    Config, DEFAULT_GRE_TTL, GreOptions, InnerAddress, IpsecProfile, MgreTunnel, SaMode, TunnelMode,
};
use super::{Cx, Named, OFFLOADS, raw};

/// One protected GRE tunnel, as the sharing rule needs it.
struct GreEntry {
    name: String,
    /// `source` as written (address or interface) with the front-door VRF: the underlay end.
    source: (String, Option<String>),
    source_span: Range<usize>,
    /// `None`: multipoint.
    destination: Option<IpAddr>,
    key: Option<u32>,
    shared: bool,
    protection: String,
}

/// The protected GRE tunnels seen so far, in file order.
#[derive(Default)]
pub(super) struct GreSources {
    entries: Vec<GreEntry>,
}

impl GreSources {
    fn push(&mut self, n: &Named<raw::Tunnel>, destination: Option<IpAddr>, key: Option<u32>) {
        let r = &n.raw;
        self.entries.push(GreEntry {
            name: n.name.clone(),
            source: (
                r.source.get_ref().clone(),
                r.fvrf.as_ref().map(|v| v.get_ref().clone()),
            ),
            source_span: r.source.span(),
            destination,
            key,
            shared: r.shared.as_ref().is_some_and(|s| *s.get_ref()),
            protection: r.protection.get_ref().clone(),
        });
    }

    /// Records a point-to-point GRE tunnel that was accepted.
    pub(super) fn p2p(&mut self, n: &Named<raw::Tunnel>, destination: IpAddr, key: Option<u32>) {
        self.push(n, Some(destination), key);
    }
}

fn mode_name(m: TunnelMode) -> &'static str {
    match m {
        TunnelMode::Xfrmi => "xfrmi",
        TunnelMode::Vti => "vti",
        TunnelMode::Gre => "gre",
        TunnelMode::Mgre => "mgre",
    }
}

impl Cx<'_> {
    /// The GRE settings of a non-multipoint tunnel: `Some(Some(..))` for `mode = "gre"`,
    /// `Some(None)` for a VTI (which must not set `key`, `ttl` or `shared`), `None` when
    /// something was reported.
    pub(super) fn gre_options(
        &mut self,
        n: &Named<raw::Tunnel>,
        mode: Option<TunnelMode>,
        protection: Option<&str>,
        c: &Config,
    ) -> Option<Option<GreOptions>> {
        let path = format!("tunnel.{}", n.name);
        let r = &n.raw;
        let Some(mode) = mode else {
            return Some(None);
        };
        if mode != TunnelMode::Gre {
            let mut ok = true;
            let m = mode_name(mode);
            if let Some(k) = &r.key {
                self.err(
                    k.span(),
                    format!(
                        "{path}.key: a GRE key needs mode = \"gre\" or \"mgre\"; this tunnel is \
                         mode = \"{m}\""
                    ),
                );
                ok = false;
            }
            if let Some(t) = &r.ttl {
                self.err(
                    t.span(),
                    format!(
                        "{path}.ttl: an outer TTL needs mode = \"gre\" or \"mgre\"; this tunnel \
                         is mode = \"{m}\""
                    ),
                );
                ok = false;
            }
            if let Some(s) = &r.shared {
                self.err(
                    s.span(),
                    format!(
                        "{path}.shared: only mode = \"mgre\" tunnels share their protection; a \
                         mode = \"{m}\" tunnel has SAs of its own (IOS: shared is not for \
                         tunnel mode ipsec)"
                    ),
                );
                ok = false;
            }
            return ok.then_some(None);
        }
        let mut ok = true;
        if let Some(s) = &r.shared {
            self.err(
                s.span(),
                format!(
                    "{path}.shared: only mode = \"mgre\" tunnels share their protection; a \
                     point-to-point GRE tunnel's SAs are its own, told apart by its destination"
                ),
            );
            ok = false;
        }
        if let Some(i) = &r.if_id {
            self.err(
                i.span(),
                format!(
                    "{path}.if_id: a GRE tunnel has no if_id; its SAs protect the GRE packets \
                     between source and destination, found by address"
                ),
            );
            ok = false;
        }
        if let Some(a) = r.announce.first() {
            self.err(
                a.span(),
                format!(
                    "{path}.announce: a GRE tunnel's traffic selectors are its GRE packets \
                     (protocol 47 between source and destination), not prefixes; remove announce"
                ),
            );
            ok = false;
        }
        let key = self.gre_key(r, &path);
        let ttl = self.gre_ttl(r, &path);
        let sa_mode = match protection.and_then(|p| c.ipsec_profiles.get(p)) {
            Some(p) => self.gre_sa_mode(p, &r.protection, &path),
            // An unknown profile is reported where it is referenced.
            None => Some(SaMode::Transport),
        };
        let (true, Some(key), Some(ttl), Some(sa_mode)) = (ok, key, ttl, sa_mode) else {
            return None;
        };
        Some(Some(GreOptions { key, ttl, sa_mode }))
    }

    fn gre_key(&mut self, r: &raw::Tunnel, path: &str) -> Option<Option<u32>> {
        match &r.key {
            Some(k) => self
                .u32_in(k, &format!("{path}.key"), (0, i64::from(u32::MAX)))
                .map(Some),
            None => Some(None),
        }
    }

    fn gre_ttl(&mut self, r: &raw::Tunnel, path: &str) -> Option<u8> {
        match &r.ttl {
            // 0 would make ip_gre inherit the inner TTL; IOS `tunnel ttl` takes 1 to 255.
            Some(t) => self
                .int(t, &format!("{path}.ttl"), (1, 255))
                .and_then(|t| u8::try_from(t).ok()),
            None => Some(DEFAULT_GRE_TTL),
        }
    }

    /// The one ESP mode of a GRE tunnel's Child SA: each transform set says `tunnel` or
    /// `transport`, or says nothing, which for GRE means transport (IOS DMVPN profiles use
    /// `mode transport`). One Child SA has one mode (RFC 7296 §1.3.1 USE_TRANSPORT_MODE), so
    /// the sets must agree.
    fn gre_sa_mode(&mut self, p: &IpsecProfile, at: &raw::SStr, path: &str) -> Option<SaMode> {
        let modes: Vec<SaMode> = p
            .sets
            .iter()
            .map(|ts| {
                if ts.mode_written {
                    ts.mode
                } else {
                    SaMode::Transport
                }
            })
            .collect();
        let first = *modes.first()?;
        if modes.iter().any(|m| *m != first) {
            self.err(
                at.span(),
                format!(
                    "{path}.protection: ipsec_profile \"{}\" mixes transform sets with mode = \
                     \"tunnel\" and transport ones (unset means transport for GRE); a GRE \
                     tunnel's Child SA has one mode",
                    at.get_ref()
                ),
            );
            return None;
        }
        Some(first)
    }

    /// `[tunnel.NAME] mode = "mgre"`: checked and added to [`Config::mgre_tunnels`].
    pub(super) fn mgre_tunnel(
        &mut self,
        n: &Named<raw::Tunnel>,
        c: &mut Config,
        seen: &mut GreSources,
    ) {
        let path = format!("tunnel.{}", n.name);
        let r = &n.raw;
        let mut ok = self.ifname(&n.name, n.span.clone(), &path).is_some();
        if let Some(d) = &r.destination {
            self.err(
                d.span(),
                format!(
                    "{path}.destination: mode = \"mgre\" is multipoint and has no destination; \
                     NHRP supplies each peer's underlay address (use mode = \"gre\" for one \
                     peer)"
                ),
            );
            ok = false;
        }
        for (set, field, why) in [
            (
                r.if_id.as_ref().map(|v| v.span()),
                "if_id",
                "a GRE tunnel has no if_id",
            ),
            (
                r.announce.first().map(|v| v.span()),
                "announce",
                "an mGRE tunnel's traffic selectors are its GRE packets",
            ),
            (
                r.routes.first().map(|_| n.span.clone()),
                "routes",
                "routes over an mGRE tunnel come from NHRP and the routing protocol",
            ),
        ] {
            if let Some(span) = set {
                self.err(span, format!("{path}.{field}: {why}; remove {field}"));
                ok = false;
            }
        }
        let source = self.tunnel_source(r, &path);
        let inner = self.tunnel_inner(n, &path);
        let protection = self.reference(
            &r.protection,
            &format!("{path}.protection"),
            "ipsec_profile",
        );
        let ipsec = protection
            .as_ref()
            .and_then(|p| c.ipsec_profiles.get(p))
            .cloned();
        let sa_mode = match &ipsec {
            Some(p) => self.gre_sa_mode(p, &r.protection, &path),
            None => None,
        };
        let ike_profile = match &r.ike_profile {
            Some(v) => self
                .reference(v, &format!("{path}.ike_profile"), "ike_profile")
                .map(Some),
            None => Some(ipsec.as_ref().and_then(|p| p.ike_profile.clone())),
        };
        let mtu = match &r.mtu {
            Some(v) => {
                let v6 = matches!(&inner, Some(InnerAddress::Address(IpNet::V6(_))));
                // RFC 8200 §5: IPv6 links need an MTU of at least 1280.
                let lo = if v6 { 1280 } else { 576 };
                self.u32_in(v, &format!("{path}.mtu"), (lo, 9000)).map(Some)
            }
            None => Some(None),
        };
        let key = self.gre_key(r, &path);
        let ttl = self.gre_ttl(r, &path);
        let vrf = self.vrf_ref(r.vrf.as_ref(), &format!("{path}.vrf"), c);
        let fvrf = self.vrf_ref(r.fvrf.as_ref(), &format!("{path}.fvrf"), c);
        let offload = match &r.offload {
            Some(o) => self
                .choice(o, &format!("{path}.offload"), OFFLOADS, "offload mode")
                .map(Some),
            None => Some(None),
        };
        let (Some(source), Some(inner), Some(protection), Some(ipsec), Some(sa_mode)) =
            (source, inner, protection, ipsec, sa_mode)
        else {
            return;
        };
        let (Some(ike_profile), Some(mtu), Some(key), Some(ttl)) = (ike_profile, mtu, key, ttl)
        else {
            return;
        };
        let (Some(vrf), Some(fvrf), Some(offload), true) = (vrf, fvrf, offload, ok) else {
            return;
        };
        seen.push(n, None, key);
        c.mgre_tunnels.insert(
            n.name.clone(),
            MgreTunnel {
                source,
                inner,
                mtu,
                key,
                ttl,
                protection,
                ipsec: Arc::new(ipsec),
                ike_profile,
                shared: r.shared.as_ref().is_some_and(|s| *s.get_ref()),
                sa_mode,
                vrf,
                fvrf,
                offload,
                initiate: r.initiate.as_ref().is_none_or(|b| *b.get_ref()),
            },
        );
    }

    /// Seed 003's rule for protected GRE tunnels on one source (see the module doc), reported
    /// at the later tunnel's `source`.
    pub(super) fn gre_sharing(&mut self, seen: &GreSources) {
        for (j, b) in seen.entries.iter().enumerate() {
            let Some(a) = seen.entries[..j]
                .iter()
                .find(|a| a.source == b.source && clash(a, b).is_some())
            else {
                continue;
            };
            let why = clash(a, b).unwrap_or_default();
            let msg = format!(
                "tunnel.{}.source: tunnel.{} is also protected GRE from {}; {why}",
                b.name, a.name, b.source.0
            );
            self.err(b.source_span.clone(), msg);
        }
    }
}

/// Why two protected GRE tunnels on the same source cannot coexist, if they cannot.
fn clash(a: &GreEntry, b: &GreEntry) -> Option<String> {
    match (a.destination, b.destination) {
        (Some(da), Some(db)) if da != db => None,
        (Some(d), Some(_)) => Some(format!(
            "both go to {d}, so both would negotiate SAs for the same GRE packets and the \
             second's would replace the first's; use one tunnel per destination"
        )),
        (None, None) if a.key == b.key => Some(format!(
            "both are mgre with {}, so a received GRE packet could be for either (the (source, \
             key) pair must be unique); give them different keys",
            a.key.map_or("no key".to_string(), |k| format!("key {k}"))
        )),
        (None, None) if a.shared && b.shared && a.protection == b.protection => None,
        (None, None) => Some(format!(
            "two mgre tunnels on one source negotiate SAs for the same GRE packets, and the \
             second's would replace the first's (seed 003); set shared = true on both{}",
            if a.protection == b.protection {
                String::new()
            } else {
                format!(
                    ", with the same protection (now \"{}\" and \"{}\")",
                    a.protection, b.protection
                )
            }
        )),
        _ => Some(
            "an mgre tunnel's SAs cover GRE to every peer, a point-to-point tunnel's destination \
             included, so the two would replace each other's SAs; source them from different \
             addresses"
                .to_string(),
        ),
    }
}
