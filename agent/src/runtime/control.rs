//! The control socket's requests and the metrics scrape: `show` (rendered by `crate::show`),
//! `up`, `down`, `reload`, `debug`.

use super::*;

impl Runtime {
    /// A control-socket request.
    pub async fn control(&mut self, req: Request) -> Response {
        match req {
            Request::ShowSessions => Response::Ok(self.show_sessions()),
            Request::ShowSa => Response::Ok(self.show_sa().await),
            Request::ShowTunnels => Response::Ok(self.show_tunnels()),
            Request::ShowCrypto { view } => self.show_crypto(&view).await,
            Request::ClearCrypto { what } => self.clear_crypto(what),
            Request::Rekey { what } => self.rekey(what),
            Request::SaList { ike, ike_id } => self.vici_sa_list(ike.as_deref(), ike_id).await,
            Request::Initiate {
                name,
                local,
                remote,
            } if !self.plan.tunnels.contains_key(&name) => {
                self.initiate_profile(&name, local, remote)
            }
            Request::Initiate { name, .. } if self.tunnel_is_up(&name) => {
                Response::Ok(json!({ "tunnel": name, "action": "already-up" }))
            }
            Request::Initiate { name, .. } => {
                Box::pin(self.control(Request::Up(Target { tunnel: name }))).await
            }
            Request::Terminate { what } => self.vici_terminate(what),
            Request::Stats => self.vici_stats(),
            // A dynamic VTI clone, by name or peer address: its peer's sessions are deleted
            // (the peer is told), and the clone goes with them like on any disconnect. The
            // peer may connect again; nothing is held down.
            Request::Down(Target { tunnel })
                if !self.plan.tunnels.contains_key(&tunnel)
                    && !self.clones.sessions_of(&tunnel).is_empty() =>
            {
                let clones = self.clones.sessions_of(&tunnel);
                let mut n = 0;
                for session in clones.iter().flat_map(|(_, s)| s) {
                    self.ep.handle_command(
                        Instant::now(),
                        IkeCommand::TerminateSession { session: *session },
                    );
                    n += 1;
                }
                let names: Vec<&String> = clones.iter().map(|(c, _)| c).collect();
                info!(clones = ?names, sessions = n, "dynamic VTI taken down from the CLI");
                Response::Ok(json!({ "tunnel": names, "action": "terminated", "sessions": n }))
            }
            Request::Up(Target { tunnel }) | Request::Down(Target { tunnel })
                if !self.plan.tunnels.contains_key(&tunnel) =>
            {
                Response::error("not-found", format!("no tunnel named {tunnel}"))
            }
            Request::Up(Target { tunnel }) => {
                if matches!(
                    self.states.get(&tunnel),
                    Some(TunnelState::AdminDown | TunnelState::Cleared)
                ) {
                    let created = self.made.contains_key(&tunnel);
                    if created {
                        self.states.insert(tunnel.clone(), TunnelState::Created);
                    } else {
                        self.states.remove(&tunnel);
                    }
                }
                let conn = self.plan.tunnels[&tunnel].conn;
                self.retries.forget(conn);
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Initiate { conn });
                Response::Ok(json!({ "tunnel": tunnel, "action": "initiated" }))
            }
            Request::Down(Target { tunnel }) => {
                self.states.insert(tunnel.clone(), TunnelState::AdminDown);
                let conn = self.plan.tunnels[&tunnel].conn;
                self.retries.forget(conn);
                self.ep
                    .handle_command(Instant::now(), IkeCommand::Terminate { conn });
                Response::Ok(json!({ "tunnel": tunnel, "action": "terminated" }))
            }
            // The daemon loop takes it (it must stop the loop); here only through VICI.
            Request::Restart => Response::error("unsupported", "restart is the daemon's"),
            Request::Reload => match self.reload().await {
                Ok(v) => Response::Ok(v),
                Err(e) => Response::error("invalid-config", format!("{e:#}")),
            },
            Request::Debug { kind, value, on } => {
                match crate::debug::Condition::parse(&kind, &value) {
                    Ok(c) => {
                        info!(condition = %c, on, "conditional debug");
                        let active = crate::debug::conditions().set(c, on);
                        Response::Ok(json!({ "conditions": active }))
                    }
                    Err(e) => Response::error("bad-request", e),
                }
            }
        }
    }

    /// The Prometheus text for one scrape.
    pub async fn metrics(&self) -> String {
        let (tunnels, sessions, sas) = (
            self.show_tunnels(),
            self.show_sessions(),
            self.show_sa().await,
        );
        // The engine's rejections and the requests the socket readers shed before it.
        let mut rejected = self.ep.stats().rejected.clone();
        // The IKEv1 engine's too: reasons are stable names shared by both engines.
        for (reason, n) in &self.ep.v1_stats().rejected {
            *rejected.entry(reason).or_default() += n;
        }
        let shed = self.feed.shed();
        if shed > 0 {
            rejected.insert(crate::rejects::QUEUE_FULL, shed);
        }
        crate::metrics::render(&crate::metrics::Snapshot {
            tunnels: &tunnels,
            sessions: &sessions,
            sas: &sas,
            counters: &self.counters,
            rejected: &rejected,
            half_open: self.ep.half_open_count(),
            netlink_requests: self.h.requests(),
        })
    }

    pub(super) fn show_sessions(&self) -> serde_json::Value {
        let now = Instant::now();
        let v: Vec<_> = self
            .ep
            .sas()
            .into_iter()
            .map(|s| {
                let tunnel = self.tunnel_for(s.conn, s.session).map(|t| t.name.as_str());
                let up = self.sessions.uptime(s.session, now).map(|d| d.as_secs());
                show::session(&s, tunnel, up)
            })
            .collect();
        let v1 = self.ep.v1_sas().into_iter().map(|s| {
            let tunnel = self.tunnel_for(s.conn, s.session).map(|t| t.name.as_str());
            let up = self.sessions.uptime(s.session, now).map(|d| d.as_secs());
            show::v1_session(&s, tunnel, up)
        });
        json!(v.into_iter().chain(v1).collect::<Vec<_>>())
    }

    /// Every SA the kernel has, keyed by (destination, SPI, protocol), from one dump: `show
    /// sa`, `show crypto ipsec sa` and every metrics scrape read all Child SAs, and one
    /// XFRM_MSG_GETSA request per SA made a scrape of a 5,000-spoke hub hold the event loop
    /// for over 10 s (two round trips per Child SA). A failed dump reads as no SA, as a
    /// failed request did.
    pub(super) async fn kernel_sas(&self) -> KernelSas {
        KernelSas(
            self.h
                .sa()
                .dump()
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|s| ((s.spec.dst, s.spec.spi, s.spec.proto), s))
                .collect(),
        )
    }

    /// What the kernel says of a Child SA's two SAs (counters, offload) and the path MTU of
    /// its local address, for `show sa` and `show crypto ipsec sa`.
    pub(super) fn sa_reading(
        all: &mut KernelSas,
        ids: &[xfrm::SaId; 2],
        local: IpAddr,
        underlay: &plan::LocalAddrs,
    ) -> show::SaReading {
        show::SaReading {
            inbound: all.take(&ids[0]),
            outbound: all.take(&ids[1]),
            path_mtu: underlay.mtu_of(local).unwrap_or(plan::DEFAULT_UNDERLAY_MTU),
        }
    }

    pub(super) async fn show_sa(&self) -> serde_json::Value {
        let names = kernel::link_names(&self.h).await;
        let underlay = kernel::local_addrs(&self.h).await.unwrap_or_default();
        let mut all = self.kernel_sas().await;
        let now = Instant::now();
        let mut v = Vec::new();
        for (id, c) in self.sessions.children() {
            let Some(t) = self.tunnel_for(c.conn, c.session) else {
                if let Some((map, seq, ids)) = self.map_child(id) {
                    let reading = Self::sa_reading(&mut all, &ids, c.local.ip(), &underlay);
                    v.push(show::map_sa(&map, seq, c, &reading, &names, now));
                }
                if let Some((p, ids)) = self.mgre_child(id) {
                    let reading = Self::sa_reading(&mut all, &ids, c.local.ip(), &underlay);
                    v.push(show::mgre_sa(
                        &p.protection,
                        &p.tunnels,
                        p.sa_mode,
                        c,
                        &reading,
                        &names,
                        now,
                    ));
                }
                continue;
            };
            let ids = model::child_sa_ids(t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out);
            let reading = Self::sa_reading(&mut all, &ids, c.local.ip(), &underlay);
            v.push(show::sa(t, c, &reading, &names, now));
        }
        json!(v)
    }

    pub(super) fn show_tunnels(&self) -> serde_json::Value {
        let now = Instant::now();
        let mut v: Vec<_> = self
            .plan
            .tunnels
            .values()
            .map(|t| {
                let line = self.lines.get(&t.name);
                let status = show::TunnelStatus {
                    admin_up: !matches!(self.states.get(&t.name), Some(TunnelState::AdminDown)),
                    line_up: line.is_some_and(|l| l.up),
                    why: line.map(|l| l.why.as_str()),
                    since_secs: line.map(|l| now.saturating_duration_since(l.since).as_secs()),
                    waiting: match self.states.get(&t.name) {
                        Some(TunnelState::Cleared) => {
                            Some("peer dead: cleared (dpd action clear); `vtid up` restarts it")
                        }
                        // Held: its address went away while it ran.
                        _ => self.plan.waiting.get(&t.name).map(String::as_str),
                    },
                };
                show::tunnel(t, &status, &self.offload)
            })
            .collect();
        v.extend(self.plan.waiting.iter().filter_map(|(name, why)| {
            if self.plan.tunnels.contains_key(name) {
                return None;
            }
            let t = self.cfg.tunnels.get(name)?;
            Some(show::waiting_tunnel(name, t, why))
        }));
        v.extend(self.show_multipoint());
        v.extend(
            self.clones
                .iter()
                .map(|c| show::clone(c, &self.sessions, &self.offload, now)),
        );
        json!(v)
    }
}

/// The kernel's SAs from one dump (see [`Runtime::kernel_sas`]), each read at most once.
pub(super) struct KernelSas(
    std::collections::HashMap<(IpAddr, xfrm::Spi, xfrm::Proto), xfrm::SaState>,
);

impl KernelSas {
    fn take(&mut self, id: &xfrm::SaId) -> Option<xfrm::SaState> {
        self.0.remove(&(id.dst, id.spi, id.proto))
    }
}
