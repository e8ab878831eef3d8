//! Underlay changes (route, device, rename): offloaded Child SAs follow the underlay, tunnels
//! an offload demand held down are retried (see offload.rs).

use super::*;

impl Runtime {
    /// The underlay may have changed (see offload.rs): Child SAs of offloading tunnels whose
    /// device is no longer the one ESP to the peer leaves through, or whose SAs the kernel
    /// deleted with their device, are rekeyed onto the underlay as it is now; a demand that
    /// can no longer be met takes the tunnel down with the reason in `vtid show`. Tunnels an
    /// offload demand held down are retried.
    pub async fn underlay_changed(&mut self) {
        let mut by_tunnel: BTreeMap<String, (TunnelPlan, Vec<(ChildSaId, ChildInfo)>)> =
            BTreeMap::new();
        for (id, c) in self.sessions.children() {
            if let Some(t) = self.tunnel_for(c.conn, c.session)
                && t.offload != Offload::Off
            {
                by_tunnel
                    .entry(t.name.clone())
                    .or_insert_with(|| (t.clone(), Vec::new()))
                    .1
                    .push((id, c.clone()));
            }
        }
        let now = Instant::now();
        for (name, (t, kids)) in by_tunnel {
            let mut vanished = false;
            if self.offload.offloaded(&name) {
                for (_, c) in &kids {
                    for id in
                        model::child_sa_ids(&t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out)
                    {
                        vanished |= kernel::sa_vanished(&self.h, &id).await;
                    }
                }
            }
            let under = self.underlay(&t).await;
            match self.offload.recheck(&t.name, t.offload, under) {
                Recheck::Refuse(_) => {
                    if self.plan.tunnels.contains_key(&name) {
                        self.ep
                            .handle_command(now, IkeCommand::Terminate { conn: t.conn });
                    } else {
                        for (child, _) in &kids {
                            self.ep
                                .handle_command(now, IkeCommand::ChildExpired { child: *child });
                        }
                    }
                }
                r => {
                    let why = match r {
                        Recheck::Move(w) => w,
                        _ if vanished => "the kernel deleted the offloaded SAs".into(),
                        _ => continue,
                    };
                    for (child, _) in &kids {
                        if self.sessions.start_moving(*child) {
                            info!(tunnel = %name, "underlay changed ({why}): rekeying Child SA");
                            self.ep
                                .handle_command(now, IkeCommand::RekeyChild { child: *child });
                        }
                    }
                }
            }
        }
        // Tunnels held down by a demand: created once the underlay can meet it; initiators
        // that a runtime refusal terminated start again.
        let held: Vec<TunnelPlan> = self
            .plan
            .tunnels
            .values()
            .filter(|t| matches!(self.states.get(&t.name), Some(TunnelState::HeldDown(_))))
            .cloned()
            .collect();
        for t in &held {
            self.bring_up(t).await;
        }
        let restart: Vec<TunnelPlan> = self
            .plan
            .tunnels
            .values()
            .filter(|t| {
                t.initiate
                    && !matches!(self.states.get(&t.name), Some(TunnelState::HeldDown(_)))
                    && self.offload.refused(&t.name).is_some()
                    && !self.sessions.conn_up(t.conn)
            })
            .cloned()
            .collect();
        for t in restart {
            if self.decide_offload(&t).await.is_ok() {
                self.ep
                    .handle_command(now, IkeCommand::Initiate { conn: t.conn });
            }
        }
    }
}
