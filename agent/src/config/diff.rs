//! What a reload changes: tunnels and virtual templates added, removed or changed.
//!
//! A tunnel counts as changed when its own settings differ or when anything it uses differs
//! (IPsec profile, transform sets, IKE profile, keyring and its keys, trustpoint, proposals,
//! VRFs), so the reconciler can restart exactly the affected tunnels and leave the rest up.

use super::{
    Config, IkeProfile, IkeProposalSpec, IpsecProfile, Keyring, TransformSet, Trustpoint, Vrf,
};

/// The difference between two configurations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Static tunnels.
    pub tunnels: ObjectDiff,
    /// Tunnels whose only change is `routes`: the reconciler adds and deletes those routes on
    /// the running interface and leaves its SAs alone. Not listed in `tunnels.changed`.
    pub tunnel_routes: Vec<String>,
    /// Virtual templates (a changed template affects all its clones).
    pub virtual_templates: ObjectDiff,
    /// `[global]` changed (ports, socket, logging): the daemon decides what to restart.
    pub global_changed: bool,
}

impl ConfigDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
            && self.tunnel_routes.is_empty()
            && self.virtual_templates.is_empty()
            && !self.global_changed
    }
}

/// Names added, removed and changed, each sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectDiff {
    /// In the new configuration only.
    pub added: Vec<String>,
    /// In the old configuration only.
    pub removed: Vec<String>,
    /// In both, with different settings or dependencies.
    pub changed: Vec<String>,
}

impl ObjectDiff {
    /// True when nothing was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

pub(crate) fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut tunnels = object_diff(old.tunnels.keys(), new.tunnels.keys(), |name| {
        TunnelClosure::of(old, name) != TunnelClosure::of(new, name)
    });
    // A changed tunnel whose closure is the same once routes are set aside only needs its
    // routes edited: restarting it would renegotiate its SAs and drop traffic for nothing.
    let (tunnel_routes, changed) = tunnels.changed.into_iter().partition(|name| {
        TunnelClosure::of(old, name).without_routes()
            == TunnelClosure::of(new, name).without_routes()
    });
    tunnels.changed = changed;
    ConfigDiff {
        tunnels,
        tunnel_routes,
        virtual_templates: object_diff(
            old.virtual_templates.keys(),
            new.virtual_templates.keys(),
            |name| TemplateClosure::of(old, name) != TemplateClosure::of(new, name),
        ),
        global_changed: old.global != new.global,
    }
}

fn object_diff<'a>(
    old: impl Iterator<Item = &'a String> + Clone,
    new: impl Iterator<Item = &'a String> + Clone,
    changed: impl Fn(&str) -> bool,
) -> ObjectDiff {
    let mut d = ObjectDiff::default();
    for n in new.clone() {
        if !old.clone().any(|o| o == n) {
            d.added.push(n.clone());
        } else if changed(n) {
            d.changed.push(n.clone());
        }
    }
    for o in old {
        if !new.clone().any(|n| n == o) {
            d.removed.push(o.clone());
        }
    }
    d
}

/// Everything an IPsec profile pulls in.
#[derive(PartialEq)]
struct ProtectionClosure<'a> {
    profile: Option<&'a IpsecProfile>,
    sets: Vec<Option<&'a TransformSet>>,
}

impl<'a> ProtectionClosure<'a> {
    fn of(c: &'a Config, name: &str) -> Self {
        let profile = c.ipsec_profiles.get(name);
        let sets = profile
            .map(|p| {
                p.transform_sets
                    .iter()
                    .map(|s| c.transform_sets.get(s))
                    .collect()
            })
            .unwrap_or_default();
        Self { profile, sets }
    }
}

/// Everything an IKE profile pulls in.
#[derive(PartialEq)]
struct IkeClosure<'a> {
    profile: Option<IkeProfile>,
    keyring: Option<&'a Keyring>,
    trustpoint: Option<&'a Trustpoint>,
    proposals: Vec<Option<&'a IkeProposalSpec>>,
    fvrf: Option<&'a Vrf>,
}

impl<'a> IkeClosure<'a> {
    fn of(c: &'a Config, profile: Option<IkeProfile>) -> Self {
        let get =
            |f: &dyn Fn(&IkeProfile) -> Option<&String>| profile.as_ref().and_then(f).cloned();
        let keyring = get(&|p| p.keyring.as_ref()).and_then(|k| c.keyrings.get(&k));
        let trustpoint = get(&|p| p.trustpoint.as_ref()).and_then(|t| c.trustpoints.get(&t));
        let fvrf = get(&|p| p.fvrf.as_ref()).and_then(|v| c.vrfs.get(&v));
        let proposals = profile
            .as_ref()
            .map(|p| p.proposals.iter().map(|n| c.ike_proposals.get(n)).collect())
            .unwrap_or_default();
        Self {
            profile,
            keyring,
            trustpoint,
            proposals,
            fvrf,
        }
    }
}

#[derive(PartialEq)]
struct TunnelClosure<'a> {
    tunnel: Option<std::borrow::Cow<'a, super::Tunnel>>,
    protection: ProtectionClosure<'a>,
    ike: IkeClosure<'a>,
    /// The one keyring entry this tunnel's peer uses: a key added for another peer (the
    /// usual edit when a site is added) must not restart this tunnel.
    key: Option<&'a super::KeyringPeer>,
    vrf: Option<&'a Vrf>,
    fvrf: Option<&'a Vrf>,
}

impl<'a> TunnelClosure<'a> {
    fn of(c: &'a Config, name: &str) -> Self {
        let tunnel = c.tunnels.get(name);
        let protection = ProtectionClosure::of(c, tunnel.map_or("", |t| t.protection.as_str()));
        let mut ike = IkeClosure::of(c, c.tunnel_ike_profile(name));
        let key = ike
            .keyring
            .take()
            .zip(tunnel)
            .and_then(|(k, t)| k.find_by_address(t.destination));
        let vrf = tunnel
            .and_then(|t| t.vrf.as_ref())
            .and_then(|v| c.vrfs.get(v));
        let fvrf = tunnel
            .and_then(|t| t.fvrf.as_ref())
            .and_then(|v| c.vrfs.get(v));
        Self {
            tunnel: tunnel.map(std::borrow::Cow::Borrowed),
            protection,
            ike,
            key,
            vrf,
            fvrf,
        }
    }

    /// The same closure with the tunnel's `routes` emptied.
    fn without_routes(mut self) -> Self {
        if let Some(t) = &mut self.tunnel {
            t.to_mut().routes.clear();
        }
        self
    }
}

#[derive(PartialEq)]
struct TemplateClosure<'a> {
    template: Option<&'a super::VirtualTemplate>,
    protection: ProtectionClosure<'a>,
    vrf: Option<&'a Vrf>,
    /// The IKE profiles that clone this template, by name, with what they pull in.
    ike: Vec<(&'a String, IkeClosure<'a>)>,
}

impl<'a> TemplateClosure<'a> {
    fn of(c: &'a Config, name: &str) -> Self {
        let template = c.virtual_templates.get(name);
        let protection = ProtectionClosure::of(c, template.map_or("", |t| t.protection.as_str()));
        let vrf = template
            .and_then(|t| t.vrf.as_ref())
            .and_then(|v| c.vrfs.get(v));
        let ike = c
            .ike_profiles
            .iter()
            .filter(|(_, p)| p.virtual_template.as_deref() == Some(name))
            .map(|(n, p)| (n, IkeClosure::of(c, Some(p.clone()))))
            .collect();
        Self {
            template,
            protection,
            vrf,
            ike,
        }
    }
}
