//! Desired against actual: which kernel operations turn what exists into what should exist.
//! Pure: start, reload, underlay changes, session up/down (clones) and the orphan sweep all
//! ask this module for the [`Op`]s and hand them to [`crate::kernel::apply`], the only place
//! that carries them out.
//!
//! vtid owns only what it created and can tell it apart by its marks (reqid band, policy
//! priority band, interface alias and group): [`Owned`] is the kernel's view filtered by those
//! marks, and the sweep removes whatever of it no [`Interface`] accounts for.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use xfrm::{PolicyId, SaId};

use crate::model::{Interface, Route, RouteMode};

/// One kernel operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create the interface whole: device, address, routes, policies.
    Create(Interface),
    /// Remove the interface: its policies and the device (the kernel flushes the device's
    /// routes with it).
    Remove(Interface),
    /// Change the routes of an interface that stays.
    Routes {
        /// Device name.
        name: String,
        /// Its ifindex when known (a clone's), else looked up by name.
        index: Option<u32>,
        /// Routing table.
        table: u32,
        /// `add` or `replace`.
        mode: RouteMode,
        /// Routes to put into the device.
        add: Vec<Route>,
        /// Routes to take out of it.
        del: Vec<Route>,
    },
    /// Set an interface's line protocol (`ip link set dev NAME mode dormant state
    /// up|dormant`).
    Line {
        /// Device name.
        name: String,
        /// Up or dormant.
        up: bool,
    },
    /// Replace the policies of an interface that stays (`ip xfrm policy update ...` for
    /// each): an xfrm interface whose session moved to another local address (MOBIKE) keeps
    /// its device, and only its policies' templates name the new address.
    Policies {
        /// Device name.
        name: String,
        /// The policies as they must be now (same selectors, directions and if_id).
        policies: Vec<xfrm::PolicySpec>,
    },
    /// An owned device nothing accounts for.
    RemoveLink {
        /// ifindex.
        index: u32,
        /// Name, for messages.
        name: String,
    },
    /// An owned SPD entry nothing accounts for.
    RemovePolicy(PolicyId),
    /// An owned SA nothing accounts for.
    RemoveSa(SaId),
}

impl Op {
    /// The route edit that takes `iface`'s routes from `old` to its own.
    pub fn routes(iface: &Interface, old: &[Route]) -> Option<Op> {
        let add: Vec<Route> = iface
            .routes
            .iter()
            .filter(|r| !old.contains(r))
            .copied()
            .collect();
        let del: Vec<Route> = old
            .iter()
            .filter(|r| !iface.routes.contains(r))
            .copied()
            .collect();
        (!add.is_empty() || !del.is_empty()).then(|| Op::Routes {
            name: iface.name.clone(),
            index: None,
            table: iface.table(),
            mode: iface.route_mode,
            add,
            del,
        })
    }
}

/// The operations that take the interfaces `have` to `want`. Interfaces in `rebuild` are
/// removed and created again even when their description is the same (their session must
/// start over, e.g. a changed key). An interface that differs only in its routes keeps its
/// device (and so its SAs): only the routes (and line state) change. Order: removals, then
/// creations, then route and line edits, so a name or if_id freed by a removal can be reused
/// by a creation.
pub fn interfaces(
    have: &BTreeMap<String, Interface>,
    want: &BTreeMap<String, Interface>,
    rebuild: &BTreeSet<String>,
) -> Vec<Op> {
    let mut remove = Vec::new();
    let mut create = Vec::new();
    let mut routes = Vec::new();
    for (name, old) in have {
        match want.get(name) {
            None => remove.push(Op::Remove(old.clone())),
            Some(new) if new == old && !rebuild.contains(name) => {}
            Some(new) if old.same_but_routes(new) && !rebuild.contains(name) => {
                // Line down: the state before the routes go; line up: after they are back,
                // so a routing daemon that sees the interface come up finds its routes.
                let line = (new.line != old.line).then_some(new.line).flatten();
                if line == Some(false) {
                    routes.push(Op::Line {
                        name: name.clone(),
                        up: false,
                    });
                }
                routes.extend(Op::routes(new, &old.routes));
                if line == Some(true) {
                    routes.push(Op::Line {
                        name: name.clone(),
                        up: true,
                    });
                }
            }
            Some(new) => {
                remove.push(Op::Remove(old.clone()));
                create.push(Op::Create(new.clone()));
            }
        }
    }
    for (name, new) in want {
        if !have.contains_key(name) {
            create.push(Op::Create(new.clone()));
        }
    }
    remove.into_iter().chain(create).chain(routes).collect()
}

/// The kernel objects that carry vtid's ownership marks.
#[derive(Clone, Debug, Default)]
pub struct Owned {
    /// Devices as (ifindex, name).
    pub links: Vec<(u32, String)>,
    /// SPD entries.
    pub policies: Vec<PolicyId>,
    /// SAs. Larval SAs (SPI 0, an ACQUIRE's placeholder) are left out: they are not in the
    /// kernel's by-SPI table, so XFRM_MSG_DELSA cannot name them, and the kernel drops them
    /// after net.core.xfrm_acq_expires on its own.
    pub sas: Vec<SaId>,
}

/// What of `owned` none of `live` accounts for, to remove: after a crash or `kill -9` (at
/// start `live` is empty) and at shutdown. Devices and policies first: once no policy sends
/// traffic to an SA, deleting the SAs cannot provoke an ACQUIRE (and a larval SA) for the
/// packets in between.
pub fn sweep<'a>(owned: &Owned, live: impl IntoIterator<Item = &'a Interface>) -> Vec<Op> {
    let live: Vec<&Interface> = live.into_iter().collect();
    let names: BTreeSet<&str> = live.iter().map(|i| i.name.as_str()).collect();
    let policies: HashSet<PolicyId> = live
        .iter()
        .flat_map(|i| i.policies.iter().map(|p| p.id()))
        .collect();
    let links = owned
        .links
        .iter()
        .filter(|(_, n)| !names.contains(n.as_str()))
        .map(|(index, name)| Op::RemoveLink {
            index: *index,
            name: name.clone(),
        });
    let pols = owned
        .policies
        .iter()
        .filter(|p| !policies.contains(p))
        .copied()
        .map(Op::RemovePolicy);
    let sas = if live.is_empty() {
        owned.sas.clone()
    } else {
        // SAs belong to sessions, not interfaces: with interfaces alive the caller passes
        // only SAs it knows to be orphans.
        Vec::new()
    };
    links
        .chain(pols)
        .chain(sas.into_iter().map(Op::RemoveSa))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DeviceKind, TunnelPlan};

    fn iface(name: &str, if_id: u32, routes: &[&str]) -> Interface {
        crate::model::static_interface(
            &TunnelPlan {
                name: name.into(),
                conn: ike::ConnId(if_id),
                mode: DeviceKind::Xfrmi,
                if_id,
                reqid: crate::plan::REQID_BASE + if_id,
                local: "192.0.2.1".parse().unwrap(),
                remote: "192.0.2.2".parse().unwrap(),
                inner: "10.0.0.1/30".parse().unwrap(),
                routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
                mtu: 1400,
                initiate: true,
                dpd_action: crate::config::DpdAction::Clear,
                offload: crate::config::Offload::Off,
                vrf: None,
                fvrf: None,
                v1_policies: None,
            },
            true,
        )
    }

    #[test]
    fn line_transitions_edit_routes_in_order_and_keep_the_device() {
        let up = iface("t1", 1, &["10.1.0.0/16 metric 200"]);
        let mut down = up.clone();
        down.routes.clear();
        down.line = Some(false);
        let none = BTreeSet::new();
        // Down: the line state first, then the routes go.
        let ops = interfaces(
            &map(std::slice::from_ref(&up)),
            &map(std::slice::from_ref(&down)),
            &none,
        );
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!(
            ops[0],
            Op::Line {
                name: "t1".into(),
                up: false
            }
        );
        assert!(
            matches!(&ops[1], Op::Routes { add, del, .. } if add.is_empty() && del == &up.routes)
        );
        // Up: the routes come back (with their metric), then the line state.
        let ops = interfaces(&map(&[down]), &map(std::slice::from_ref(&up)), &none);
        assert!(
            matches!(&ops[0], Op::Routes { add, del, .. } if del.is_empty() && add == &up.routes)
        );
        assert_eq!(
            ops[1],
            Op::Line {
                name: "t1".into(),
                up: true
            }
        );
        assert_eq!(up.routes[0].metric, Some(200));
    }

    fn map(list: &[Interface]) -> BTreeMap<String, Interface> {
        list.iter().map(|i| (i.name.clone(), i.clone())).collect()
    }

    #[test]
    fn add_remove_rebuild_and_routes_only() {
        let a = iface("A", 1, &["10.1.0.0/16"]);
        let b = iface("B", 2, &[]);
        let c = iface("C", 3, &[]);
        let a2 = iface("A", 1, &["10.2.0.0/16", "10.1.0.0/16"]);
        let b2 = Interface {
            mtu: 1300,
            ..b.clone()
        };
        let have = map(&[a.clone(), b.clone(), c.clone()]);
        let want = map(&[a2.clone(), b2.clone(), iface("D", 4, &[])]);
        let ops = interfaces(&have, &want, &BTreeSet::new());
        assert_eq!(
            ops,
            vec![
                Op::Remove(b.clone()),
                Op::Remove(c.clone()),
                Op::Create(b2.clone()),
                Op::Create(iface("D", 4, &[])),
                Op::Routes {
                    name: "A".into(),
                    index: None,
                    table: 254,
                    mode: RouteMode::Add,
                    add: vec!["10.2.0.0/16".parse().unwrap()],
                    del: vec![],
                },
            ]
        );
        // Nothing changed: nothing to do; a forced rebuild removes and creates.
        assert!(interfaces(&have, &have, &BTreeSet::new()).is_empty());
        let ops = interfaces(&have, &have, &BTreeSet::from(["C".to_string()]));
        assert_eq!(ops, vec![Op::Remove(c.clone()), Op::Create(c)]);
    }

    #[test]
    fn sweep_keeps_what_live_interfaces_account_for() {
        let a = iface("A", 1, &[]);
        let mut owned = Owned {
            links: vec![(7, "A".into()), (8, "old".into())],
            policies: a.policies.iter().map(|p| p.id()).collect(),
            sas: Vec::new(),
        };
        let stray = iface("old", 9, &[]).policies[0].id();
        owned.policies.push(stray);
        let ops = sweep(&owned, [&a]);
        assert_eq!(
            ops,
            vec![
                Op::RemoveLink {
                    index: 8,
                    name: "old".into()
                },
                Op::RemovePolicy(stray)
            ]
        );
        // With nothing live (start-up, shutdown) everything owned goes, links first.
        let ops = sweep(&owned, []);
        assert_eq!(ops.len(), 2 + 7);
        assert!(matches!(ops[0], Op::RemoveLink { .. }));
    }
}
