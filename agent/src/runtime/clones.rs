//! Dynamic VTIs at run time: a clone per authenticated peer of a template, its routes from
//! the peers' traffic selectors, and its removal with the peer's last session (bookkeeping in
//! `crate::virtual_access`, kernel work through the reconciler's ops).

use super::*;

impl Runtime {
    /// A Child SA of clone `slot` is installed: route its traffic selectors into the clone
    /// (reverse route injection) when the template says so; returns the routes added.
    pub(super) async fn clone_child_routes(
        &mut self,
        slot: u32,
        remote_ts: &[ike::wire::TrafficSelector],
    ) -> Vec<ipnet::IpNet> {
        if remote_ts.iter().any(|ts| ts.start.is_ipv6()) {
            self.clone_v6(slot).await;
        }
        let Some(c) = self.clones.get(slot) else {
            return Vec::new();
        };
        let (name, index, table) = (c.interface.name.clone(), c.ifindex, c.interface.table());
        let spoke = c.multipoint.then_some(c.tunnel.if_id);
        let mut added = Vec::new();
        for p in self.clones.ts_routes(slot, remote_ts) {
            if let Some(if_id) = spoke {
                // A multipoint spoke's route: into the shared device with its if_id.
                let errs =
                    kernel::spoke_routes(&self.h, &name, index, table, if_id, &[p.into()], &[])
                        .await;
                match errs.first() {
                    None => {
                        self.clones.claim_route(slot, p);
                        added.push(p);
                    }
                    Some(e) => warn!(interface = %name, route = %p, "route: {e:#}"),
                }
                continue;
            }
            let op = Op::Routes {
                name: name.clone(),
                index: Some(index),
                table,
                mode: model::RouteMode::Replace,
                add: vec![p.into()],
                del: Vec::new(),
            };
            match kernel::apply_one(&self.h, &op).await.first() {
                None => {
                    self.clones.claim_route(slot, p);
                    added.push(p);
                }
                Some(e) => warn!(interface = %name, route = %p, "route: {e:#}"),
            }
        }
        added
    }

    /// IPv6 on clone `slot`, which started IPv4-only: the device's IPv6 on and its IPv6
    /// policies in (see `VirtualAccesses::enable_v6`).
    async fn clone_v6(&mut self, slot: u32) {
        let Some((name, policies)) = self.clones.enable_v6(slot) else {
            return;
        };
        if let Err(e) = self.h.link().set_disable_ipv6(&name, false) {
            warn!(interface = %name, "enable IPv6: {e}");
        }
        let mut batch = self.h.batch();
        for p in &policies {
            batch.add_policy(p);
        }
        match batch.execute().await {
            Ok(results) => {
                for e in results.into_iter().filter_map(|r| r.err()) {
                    warn!(interface = %name, "IPv6 policy: {e}");
                }
            }
            Err(e) => warn!(interface = %name, "IPv6 policies: {e}"),
        }
        info!(interface = %name, "IPv6 traffic selectors: IPv6 policies added");
    }

    /// A Child SA of clone `slot` is gone: drop the routes no other Child SA of the clone
    /// needs.
    pub(super) async fn clone_child_removed(&mut self, slot: u32, routes: Vec<ipnet::IpNet>) {
        let still: BTreeSet<ipnet::IpNet> = self
            .sessions
            .of_clone(slot)
            .flat_map(|(_, k)| k.routes.iter().copied())
            .collect();
        let del = self.clones.release_routes(slot, routes, &still);
        let Some(c) = self.clones.get(slot) else {
            return;
        };
        if c.multipoint {
            let del: Vec<model::Route> = del.into_iter().map(model::Route::from).collect();
            let (name, idx, table, if_id) = (
                &c.interface.name,
                c.ifindex,
                c.interface.table(),
                c.tunnel.if_id,
            );
            for e in kernel::spoke_routes(&self.h, name, idx, table, if_id, &[], &del).await {
                warn!("delete route: {e:#}");
            }
            return;
        }
        let op = Op::Routes {
            name: c.interface.name.clone(),
            index: Some(c.ifindex),
            table: c.interface.table(),
            mode: model::RouteMode::Replace,
            add: Vec::new(),
            del: del.into_iter().map(model::Route::from).collect(),
        };
        if let Op::Routes { del, .. } = &op
            && !del.is_empty()
        {
            for e in kernel::apply_one(&self.h, &op).await {
                warn!("delete route: {e:#}");
            }
        }
    }

    /// Re-checks a session after its IKE SA went down or a Child SA left: once the engine
    /// has no IKE SA of it, it leaves its clone, and a clone without sessions and Child SAs
    /// is removed.
    pub(super) async fn session_changed(&mut self, session: SessionId) {
        if self.ep.session_alive(session) {
            return;
        }
        if let Some(slot) = self.clones.session_gone(session) {
            self.remove_clone_if_unused(slot).await;
        }
    }

    pub(super) async fn remove_clone_if_unused(&mut self, slot: u32) {
        let has_children = self.sessions.of_clone(slot).next().is_some();
        let owned = self.clones.fixed_routes_owned(slot);
        if let Some(c) = self.clones.take_if_unused(slot, has_children) {
            if c.multipoint {
                self.remove_spoke(&c, owned).await;
                return;
            }
            // Routes go with the link (the kernel flushes a deleted device's routes).
            for e in kernel::apply_one(&self.h, &Op::Remove(c.interface.clone())).await {
                warn!(interface = %c.tunnel.name, "remove dynamic VTI: {e:#}");
            }
            info!(interface = %c.tunnel.name, peer = %c.tunnel.remote, "dynamic VTI removed");
        }
    }

    /// Dynamic VTIs follow the engine's events: a clone is made when a template's peer
    /// authenticates, before its first install, and checked when its IKE SA goes.
    pub(super) async fn clone_event(&mut self, ev: &Event) {
        match ev {
            Event::PeerAuthenticated {
                session,
                conn,
                peer_id,
                remote,
                local,
                initial_contact,
            } => {
                let Some(tp) = self.plan.templates.get(conn).cloned() else {
                    return;
                };
                if self
                    .clones
                    .join(&tp, *session, peer_id, *remote, *initial_contact)
                {
                    return;
                }
                if let Err(e) = self
                    .create_clone(&tp, *session, peer_id, *local, *remote)
                    .await
                {
                    error!(peer = %remote, "dynamic VTI: {e:#}");
                }
            }
            Event::IkeSaDown { session, .. } => self.session_changed(*session).await,
            _ => {}
        }
    }

    /// Gives a session of template `tp` its own interface. Numbers whose name or if_id
    /// something else holds are skipped; a kernel EEXIST (a foreign interface with our name
    /// or if_id) makes us try the next one.
    pub(super) async fn create_clone(
        &mut self,
        tp: &TemplatePlan,
        session: SessionId,
        peer_id: &ike::wire::Identity,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
    ) -> Result<()> {
        if let Some(dev) = &tp.multipoint {
            return self
                .create_spoke(tp, dev, session, peer_id, local, remote)
                .await;
        }
        let statics: Vec<u32> = self.plan.tunnels.values().map(|t| t.if_id).collect();
        let mut refused: Vec<u32> = Vec::new();
        for _attempt in 0..8 {
            let p = self
                .clones
                .propose(tp, &statics, &refused, local, remote)
                .context("no free dynamic VTI number")?;
            let (slot, name) = (p.slot, p.tunnel.name.clone());
            // A failed create leaves nothing behind (kernel::create cleans up what it made).
            match kernel::create(&self.h, &p.interface).await {
                Ok(ifindex) => {
                    info!(
                        interface = %name,
                        if_id = p.tunnel.if_id,
                        peer = %remote,
                        template = %tp.template,
                        "dynamic VTI up"
                    );
                    self.clones.commit(p, ifindex, tp, peer_id, session);
                    return Ok(());
                }
                Err(e) => {
                    self.clones.abandon(slot);
                    let exists = e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<xfrm::Error>(),
                            Some(xfrm::Error::Exists { .. })
                        )
                    });
                    if !exists {
                        return Err(e.context(format!("create {name}")));
                    }
                    warn!(interface = %name, "name or if_id held by another interface; trying the next number");
                    refused.push(slot);
                }
            }
        }
        anyhow::bail!("no usable dynamic VTI number after 8 attempts")
    }
}
