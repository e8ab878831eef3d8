//! `vtid reload`: the new plan against the old (plan::diff), the interfaces through the
//! reconciler; only what changed is touched.

use super::*;

impl Runtime {
    /// Re-reads the configuration; on any error nothing changes. Tunnels whose plan (or
    /// anything it derives from) changed are rebuilt, removed ones torn down, new ones
    /// brought up, routes-only edits change just the routes; the others keep their
    /// interfaces and SAs untouched. CRL files are read again too: a CRL is no plan change,
    /// but the engine ends the sessions (and so the clones) of peers it now revokes.
    pub async fn reload(&mut self) -> Result<serde_json::Value> {
        let new = Config::load_with(&self.config_path, &LoadOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut ids = self.conn_ids.clone();
        let new_plan = plan::build(&new, &mut ids, &kernel::local_addrs(&self.h).await?)?;
        let diff = plan::diff(&self.plan, &new_plan);
        // The engine's Reconfigure (in apply_plan) carries the trustpoints' new CRLs: it ends
        // the sessions they revoke, whatever the diff says about the tunnels.
        self.apply_plan(new, new_plan, ids, &diff).await;
        self.log_crls();
        info!(removed = ?diff.removed, added = ?diff.added, changed = ?diff.changed, routes = ?diff.routes_only, moved = ?diff.moved, waiting = ?self.plan.waiting.keys().collect::<Vec<_>>(), "configuration reloaded");
        Ok(json!({
            "added": diff.added,
            "removed": diff.removed,
            "changed": diff.changed,
            "routes_changed": diff.routes_only,
            "moved": diff.moved,
            "waiting": self.plan.waiting,
        }))
    }

    /// An address was added or removed: tunnels whose `source` or `unnumbered` interface
    /// changed are planned again from the running configuration (no file is read). One that
    /// lost its address goes down and waits, one whose address appeared comes up, and one
    /// that was renumbered moves (see [`Self::apply_plan`]). Sockets need nothing: the IKE sockets
    /// are bound to the wildcard address and send from the tunnel's address by IP_PKTINFO
    /// (udp.rs), so a new address is served as soon as it exists.
    pub async fn addresses_changed(&mut self) {
        if !self.cfg.tunnels.values().any(|t| {
            matches!(t.source, crate::config::TunnelSource::Interface(_))
                || matches!(t.inner, crate::config::InnerAddress::Unnumbered(_))
        }) && !self.cfg.mgre_tunnels.values().any(|t| {
            matches!(t.source, crate::config::TunnelSource::Interface(_))
                || matches!(t.inner, crate::config::InnerAddress::Unnumbered(_))
        }) {
            return;
        }
        let links = match kernel::local_addrs(&self.h).await {
            Ok(l) => l,
            Err(e) => {
                warn!("addresses changed but cannot be read: {e:#}");
                return;
            }
        };
        let mut ids = self.conn_ids.clone();
        let mut new_plan = match plan::build(&self.cfg, &mut ids, &links) {
            Ok(p) => p,
            Err(e) => {
                warn!("addresses changed: {e:#}");
                return;
            }
        };
        // A running tunnel that lost its address is held (device and session kept, line
        // down) until one comes back; one that never had an interface just waits.
        let held: Vec<(String, String)> = new_plan
            .waiting
            .iter()
            .filter(|(n, _)| self.made.contains_key(*n))
            .map(|(n, w)| (n.clone(), w.clone()))
            .collect();
        for (name, _) in &held {
            new_plan.hold(&self.plan, name);
        }
        let diff = plan::diff(&self.plan, &new_plan);
        if diff.is_empty()
            && new_plan.waiting == self.plan.waiting
            && new_plan.mgre == self.plan.mgre
        {
            return;
        }
        for (name, why) in &new_plan.waiting {
            if !self.plan.waiting.contains_key(name) && !self.made.contains_key(name) {
                info!("{name}: line protocol down (waiting: {why})");
            }
        }
        for name in &diff.moved {
            info!(
                "{name}: source address {} -> {}",
                self.plan.tunnels[name].local, new_plan.tunnels[name].local
            );
        }
        let cfg = self.cfg.clone();
        self.apply_plan(cfg, new_plan, ids, &diff).await;
        for (name, why) in held {
            self.set_line(&name, false, format!("waiting: {why}")).await;
        }
    }

    /// Puts `new_plan` (of `new`) in place of the running plan; touches only what `diff`
    /// (`plan::diff` of the running plan and `new_plan`) says differs. The plans, not the
    /// files, decide what restarts (plan/diff.rs): a changed tunnel is removed and created
    /// again even when its interface is the same (its key or initiate setting changed), a
    /// routes-only edit changes just its routes.
    async fn apply_plan(
        &mut self,
        new: Config,
        new_plan: Plan,
        ids: BTreeMap<String, u32>,
        diff: &plan::PlanDiff,
    ) {
        let mut rebuild: BTreeSet<String> = diff.changed.iter().cloned().collect();
        // A renumbered tunnel moves its session with MOBIKE when the engine can (negotiated,
        // we its original initiator) and its device does not name the address (an xfrm
        // interface; ip_vti's device is keyed by it); otherwise it negotiates afresh from the
        // new address.
        let mut mobike: Vec<(String, ConnId, IpAddr)> = Vec::new();
        for name in &diff.moved {
            let t = &new_plan.tunnels[name];
            if t.mode == DeviceKind::Xfrmi
                && self.made.contains_key(name)
                && self.ep.can_move(t.conn)
            {
                mobike.push((name.clone(), t.conn, t.local));
            } else {
                rebuild.insert(name.clone());
            }
        }
        // Held-down tunnels have no interface: they stay held (retried on underlay changes)
        // unless the reload adds or changes them.
        let want: BTreeMap<String, Interface> = new_plan
            .tunnels
            .iter()
            .filter(|(n, _)| {
                self.made.contains_key(*n)
                    || !self.plan.tunnels.contains_key(*n)
                    || rebuild.contains(*n)
            })
            .map(|(n, t)| {
                // A moving tunnel keeps its interface as it is until the peer agrees
                // (Event::IkeSaMoved updates its policies).
                if let (true, Some(i)) = (mobike.iter().any(|m| m.0 == *n), self.made.get(n)) {
                    return (n.clone(), i.clone());
                }
                // A kept tunnel keeps its line state (and so its routes, or their absence).
                let up =
                    !rebuild.contains(n) && self.made.get(n).and_then(|i| i.line) == Some(true);
                (n.clone(), model::static_interface(t, up))
            })
            .collect();
        let ops = reconcile::interfaces(&self.made, &want, &rebuild);
        let without_interface: Vec<String> = diff
            .removed
            .iter()
            .chain(&rebuild)
            .filter(|n| !self.made.contains_key(*n))
            .cloned()
            .collect();
        // Peers of a changed template reconnect onto clones of the new one.
        for conn in &diff.templates_changed {
            self.ep
                .handle_command(Instant::now(), IkeCommand::Terminate { conn: *conn });
        }
        for op in &ops {
            let Op::Remove(i) = op else { continue };
            // A rebuilt or removed tunnel starts over: no hold from an earlier `vtid down`,
            // no pending retry.
            self.states.remove(&i.name);
            self.lines.remove(&i.name);
            let Some(t) = self.plan.tunnels.get(&i.name).cloned() else {
                continue;
            };
            self.retries.forget(t.conn);
            self.ep
                .handle_command(Instant::now(), IkeCommand::Terminate { conn: t.conn });
            self.drain().await;
            // Device and policies before SAs, as in shutdown().
            for e in kernel::apply_one(&self.h, op).await {
                warn!(tunnel = %i.name, "reload teardown: {e:#}");
            }
            self.made.remove(&i.name);
            self.remove_children(&t).await;
        }
        // Removed or changed tunnels that had no interface (held down by an offload demand)
        // still end their sessions, if any.
        for name in &without_interface {
            self.states.remove(name);
            if let Some(t) = self.plan.tunnels.get(name).cloned() {
                self.retries.forget(t.conn);
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Terminate { conn: t.conn });
                self.drain().await;
                self.remove_children(&t).await;
            }
        }
        self.unload_changed_maps(&new_plan.maps).await;
        self.ep.handle_command(
            Instant::now(),
            IkeCommand::Reconfigure(Arc::new(new_plan.endpoint.clone())),
        );
        self.ep.reconfigure_v1(Arc::new(new_plan.v1.clone()));
        // Front-door VRFs the new plan adds get their IKE sockets before their tunnels come up
        // (an initiator's first IKE_SA_INIT goes out of them); removed ones are closed.
        if let Err(e) =
            crate::sockets::bind_vrf(&self.h, &new.global, &new_plan, &self.feed, &mut self.socks)
                .await
        {
            error!("reload: front-door VRF sockets: {e:#}");
        }
        self.cfg = new;
        let old_maps = std::mem::replace(&mut self.plan, new_plan).maps;
        self.load_changed_maps(&old_maps).await;
        self.conn_ids = ids;
        for (name, conn, local) in mobike {
            info!(tunnel = %name, %local, "moving the IKE SA (MOBIKE UPDATE_SA_ADDRESSES)");
            self.ep
                .handle_command(Instant::now(), IkeCommand::MoveLocal { conn, local });
        }
        for op in &ops {
            match op {
                Op::Create(i) => {
                    if let Some(t) = self.plan.tunnels.get(&i.name).cloned() {
                        self.bring_up(&t).await;
                    }
                }
                Op::Routes { name, .. } | Op::Line { name, .. } => {
                    for e in kernel::apply_one(&self.h, op).await {
                        warn!(tunnel = %name, "reload routes: {e:#}");
                    }
                    if let Some(i) = want.get(name) {
                        self.made.insert(name.clone(), i.clone());
                    }
                }
                _ => {}
            }
        }
        self.apply_mgre().await;
        self.apply_mgre_protections().await;
        self.apply_multipoint().await;
    }
}
