//! Multipoint virtual templates at run time (`crate::multipoint` has the model): the one
//! collect-metadata device per template, kept in step with the plan at start and reload, and
//! each authenticated spoke's policies and routes on it. Slots, if_ids, sessions and route
//! ownership are the clones' books (`crate::virtual_access`); only the kernel work differs.

use super::*;
use crate::virtual_access::VirtualAccess;

impl Runtime {
    /// Creates, changes or removes the multipoint devices so they are what the plan's
    /// templates say. A kernel without collect-metadata xfrm interfaces gets no device and a
    /// clear error; the template's spokes are then refused when they authenticate.
    pub(super) async fn apply_multipoint(&mut self) {
        let want = crate::multipoint::devices(self.plan.templates.values());
        if !want.is_empty() {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned();
            if !crate::multipoint::kernel_supports(&release) {
                let (major, minor) = crate::multipoint::MIN_KERNEL;
                for name in want.keys() {
                    error!(
                        interface = %name,
                        "multipoint virtual_template needs an xfrm interface in \
                         collect-metadata mode and routes with `encap xfrm` (Linux \
                         {major}.{minor} or later); this kernel is {release}: not created, \
                         its spokes are refused"
                    );
                }
                return;
            }
        }
        let have: BTreeMap<String, Interface> = self
            .mp_made
            .iter()
            .map(|(n, (i, _))| (n.clone(), i.clone()))
            .collect();
        let ops = reconcile::interfaces(&have, &want, &BTreeSet::new());
        for op in &ops {
            match op {
                Op::Create(i) => match kernel::create(&self.h, i).await {
                    Ok(idx) => {
                        info!(interface = %i.name, mtu = i.mtu, "multipoint interface up");
                        self.mp_made.insert(i.name.clone(), (i.clone(), idx));
                    }
                    Err(e) => error!(interface = %i.name, "multipoint interface: {e:#}"),
                },
                Op::Remove(i) => {
                    for e in kernel::apply_one(&self.h, op).await {
                        error!(interface = %i.name, "multipoint interface: {e:#}");
                    }
                    self.mp_made.remove(&i.name);
                }
                // The device has no routes of its own: nothing else to edit.
                _ => {}
            }
        }
    }

    /// Removes every multipoint device (shutdown, after their spokes): the kernel flushes
    /// their routes with them.
    pub(super) async fn remove_multipoint(&mut self) {
        for (name, (i, _)) in std::mem::take(&mut self.mp_made) {
            for e in kernel::apply_one(&self.h, &Op::Remove(i)).await {
                warn!(interface = %name, "remove multipoint interface: {e:#}");
            }
        }
    }

    /// Puts an authenticated spoke of multipoint template `tp` on its device: a number and
    /// if_id as a clone gets, its policies and the template's fixed routes; no netdev.
    pub(super) async fn create_spoke(
        &mut self,
        tp: &TemplatePlan,
        dev: &str,
        session: SessionId,
        peer_id: &ike::wire::Identity,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
    ) -> Result<()> {
        let idx = self
            .mp_made
            .get(dev)
            .map(|(_, idx)| *idx)
            .with_context(|| format!("multipoint interface {dev} is not up (see its error)"))?;
        let statics: Vec<u32> = self.plan.tunnels.values().map(|t| t.if_id).collect();
        let p = self
            .clones
            .propose(tp, &statics, &[], local, remote)
            .context("no free spoke number")?;
        if let Err(e) = kernel::add_spoke(&self.h, &p.interface, idx).await {
            self.clones.abandon(p.slot);
            return Err(e.context(format!("spoke {}", p.tunnel.name)));
        }
        info!(
            spoke = %p.tunnel.name,
            interface = %dev,
            if_id = p.tunnel.if_id,
            peer = %remote,
            template = %tp.template,
            "multipoint spoke up"
        );
        let (slot, fixed) = (p.slot, p.interface.routes.clone());
        self.clones.commit(p, idx, tp, peer_id, session);
        for r in fixed {
            self.clones.claim_route(slot, r.prefix);
        }
        Ok(())
    }

    /// Takes spoke `c` (already out of the books) off its device: its policies and the fixed
    /// routes it still owned (`owned`); the device and the other spokes stay.
    pub(super) async fn remove_spoke(&mut self, c: &VirtualAccess, owned: Vec<ipnet::IpNet>) {
        let routes: Vec<model::Route> = owned.into_iter().map(model::Route::from).collect();
        for e in kernel::remove_spoke(&self.h, &c.interface, c.ifindex, &routes).await {
            warn!(spoke = %c.tunnel.name, "remove multipoint spoke: {e:#}");
        }
        info!(
            spoke = %c.tunnel.name,
            if_id = c.tunnel.if_id,
            peer = %c.tunnel.remote,
            "multipoint spoke removed"
        );
    }

    /// Rows of `show tunnels` for the multipoint devices (their spokes are listed as clones).
    pub(super) fn show_multipoint(&self) -> Vec<serde_json::Value> {
        self.mp_made
            .values()
            .map(|(i, idx)| {
                let spokes = self
                    .clones
                    .iter()
                    .filter(|c| c.multipoint && c.ifindex == *idx)
                    .count();
                json!({
                    "name": i.name,
                    "mode": "multipoint",
                    "if_id": "external",
                    "local": i.local.to_string(),
                    "remote": "-",
                    "address": i.address.to_string(),
                    "mtu": i.mtu,
                    "state": "up",
                    "spokes": spokes,
                    "line_reason": format!("{spokes} spokes"),
                })
            })
            .collect()
    }
}
