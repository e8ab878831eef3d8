//! The IOS-vocabulary requests: `show crypto ...` (rendered by `crate::show_crypto`),
//! `clear crypto ...` and `rekey`.
//!
//! Clearing follows IOS: `clear crypto session` deletes IKE SAs with their Child SAs (the
//! peer is told with an INFORMATIONAL Delete, RFC 7296 §1.4.1) and a static tunnel that
//! initiates negotiates again at once; `clear crypto sa` deletes Child SAs only, and an
//! initiating static tunnel gets a new one on the IKE SA that stays. A request that names
//! nothing that exists changes nothing and is an error.

use std::net::IpAddr;

use crate::control::{ClearTarget, CryptoView, RekeyTarget, SaSelector};
use crate::show_crypto;

use super::*;

impl Runtime {
    /// `show crypto <view>`.
    pub(super) async fn show_crypto(&self, view: &CryptoView) -> Response {
        Response::Ok(match view {
            CryptoView::IsakmpSa => {
                let sas: Vec<_> = self
                    .ep
                    .v1_sas()
                    .iter()
                    .map(|s| show_crypto::isakmp_sa(s, self.tunnel_for(s.conn, s.session)))
                    .collect();
                let note = if self.ep.has_v1() {
                    None
                } else {
                    Some(
                        "no IKE profile says version = 1: vtid speaks IKEv2 only here; see `vtid show crypto ikev2 sa`",
                    )
                };
                json!({ "ikev1_supported": true, "sas": sas, "note": note })
            }
            CryptoView::Ikev2Sa => {
                let now = Instant::now();
                let v: Vec<_> = self
                    .ep
                    .sas()
                    .iter()
                    .map(|s| {
                        let t = self.tunnel_for(s.conn, s.session);
                        let up = self.sessions.uptime(s.session, now).map(|d| d.as_secs());
                        show_crypto::ike_sa(s, t, up)
                    })
                    .collect();
                json!(v)
            }
            CryptoView::IpsecSa { peer, interface } => {
                if let Some(name) = interface
                    && !self.plan.tunnels.contains_key(name)
                    && self.clones.iter().all(|c| &c.tunnel.name != name)
                {
                    return Response::error("not-found", format!("no interface named {name}"));
                }
                let rows = self.crypto_sa_rows().await;
                json!(
                    rows.into_iter()
                        .filter(|r| peer.is_none_or(|p| r["remote_addr"] == p.to_string()))
                        .filter(|r| interface.as_ref().is_none_or(|n| r["interface"] == *n))
                        .collect::<Vec<_>>()
                )
            }
            CryptoView::Session { .. } => self.crypto_sessions().await,
            CryptoView::Map => {
                let tunnels: Vec<(&TunnelPlan, bool)> = self
                    .plan
                    .tunnels
                    .values()
                    .map(|t| (t, self.sessions.conn_up(t.conn)))
                    .collect();
                let mut body = show_crypto::crypto_maps(&self.cfg, &tunnels);
                let maps = self.maps_json();
                body["crypto_maps_configured"] =
                    serde_json::json!(maps.as_array().map_or(0, Vec::len));
                body["crypto_maps"] = maps;
                body
            }
            CryptoView::TransformSet => show_crypto::transform_sets(&self.cfg),
            CryptoView::IpsecProfile => show_crypto::ipsec_profiles(&self.cfg),
            CryptoView::Ikev2Proposal => show_crypto::ikev2_proposals(&self.cfg),
            CryptoView::DebugCondition => {
                show_crypto::debug_conditions(&crate::debug::conditions().list())
            }
        })
    }

    /// Every installed Child SA as a `show sa` row plus what the engine negotiated for it.
    async fn crypto_sa_rows(&self) -> Vec<serde_json::Value> {
        let details: BTreeMap<ChildSaId, ike::ChildSaInfo> = self
            .ep
            .sas()
            .into_iter()
            .flat_map(|s| s.child_sas)
            .map(|c| (c.id, c))
            .collect();
        let names = kernel::link_names(&self.h).await;
        let underlay = kernel::local_addrs(&self.h).await.unwrap_or_default();
        let mut all = self.kernel_sas().await;
        let now = Instant::now();
        let mut v = Vec::new();
        for (id, c) in self.sessions.children() {
            let Some(t) = self.tunnel_for(c.conn, c.session) else {
                continue;
            };
            let ids = model::child_sa_ids(t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out);
            let reading = Self::sa_reading(&mut all, &ids, c.local.ip(), &underlay);
            let mut row = show::sa(t, c, &reading, &names, now);
            show_crypto::child_extra(&mut row, details.get(&id), t, c.local, c.remote, c.encr);
            v.push(row);
        }
        v
    }

    /// `show crypto session [detail]`: one entry per session (its IKE SAs and Child SAs), and
    /// the static tunnels that have none as `DOWN`. The text layout decides how much of it
    /// to print; the JSON is the same for both.
    async fn crypto_sessions(&self) -> serde_json::Value {
        let now = Instant::now();
        let mut rows = self.crypto_sa_rows().await;
        let mut by_session: BTreeMap<SessionId, Vec<ike::IkeSaInfo>> = BTreeMap::new();
        for s in self.ep.sas() {
            by_session.entry(s.session).or_default().push(s);
        }
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (session, sas) in by_session {
            let s0 = &sas[0];
            let t = self.tunnel_for(s0.conn, session);
            let up = self.sessions.uptime(session, now).map(|d| d.as_secs());
            let mut ike: Vec<_> = sas.iter().map(|s| show_crypto::ike_sa(s, t, up)).collect();
            // The live IKE SA first (a rekeyed one lingers until its DELETE).
            ike.sort_by_key(|s| s["status"] != "READY");
            let (flows, rest): (Vec<_>, Vec<_>) = rows
                .into_iter()
                .partition(|r| r["session"] == json!(session.0));
            rows = rest;
            if let Some(t) = t {
                seen.insert(t.name.clone());
            }
            let profile = t.and_then(|t| self.profile_of(&t.name));
            out.push(show_crypto::session(
                t.map(|t| t.name.as_str()),
                profile,
                s0.remote,
                ike,
                flows,
                up,
            ));
        }
        for t in self
            .plan
            .tunnels
            .values()
            .filter(|t| !seen.contains(&t.name))
        {
            out.push(show_crypto::idle_session(
                t,
                self.profile_of(&t.name),
                self.cfg.global.ike_port,
            ));
        }
        json!(out)
    }

    /// The IKE profile a static tunnel names, as IOS's `Profile:` line shows it.
    fn profile_of(&self, tunnel: &str) -> Option<&str> {
        let t = self.cfg.tunnels.get(tunnel)?;
        t.ike_profile.as_deref().or(t.ipsec.ike_profile.as_deref())
    }

    /// `clear crypto ...`.
    pub(super) fn clear_crypto(&mut self, what: ClearTarget) -> Response {
        let now = Instant::now();
        match what {
            ClearTarget::Session { .. } | ClearTarget::Isakmp { .. } => {
                // (session, conn, peer) of the IKE and ISAKMP SAs named.
                let (remote, conn_id) = match what {
                    ClearTarget::Session { remote } => (remote, None),
                    ClearTarget::Isakmp { conn_id } => (None, conn_id),
                    ClearTarget::Sa { .. } => (None, None),
                };
                let v1_only = matches!(what, ClearTarget::Isakmp { .. });
                let v2 = self
                    .ep
                    .sas()
                    .into_iter()
                    .filter(|s| !v1_only && s.state != "Rekeyed")
                    .map(|s| (s.session, s.conn, s.remote));
                let v1 = self
                    .ep
                    .v1_sas()
                    .into_iter()
                    .filter(|s| conn_id.is_none_or(|c| show_crypto::isakmp_conn_id(s.session) == c))
                    .map(|s| (s.session, s.conn, s.remote));
                let sas: Vec<_> = v2
                    .chain(v1)
                    .filter(|(_, _, r)| remote.is_none_or(|a| r.ip() == a))
                    .collect();
                if sas.is_empty() {
                    return Response::error(
                        "not-found",
                        match (v1_only, conn_id) {
                            (true, Some(c)) => format!("no ISAKMP SA has conn-id {c}"),
                            (true, None) => "no ISAKMP SAs".into(),
                            _ => no_session(remote),
                        },
                    );
                }
                let mut sessions = BTreeSet::new();
                let mut conns = BTreeSet::new();
                let mut cleared = Vec::new();
                for (session, conn, peer) in &sas {
                    if sessions.insert(*session) {
                        let t = self.tunnel_for(*conn, *session).map(|t| t.name.clone());
                        cleared.push(json!({
                            "session": session.0,
                            "peer": peer.ip().to_string(),
                            "interface": t,
                        }));
                        self.ep.handle_command(
                            now,
                            IkeCommand::TerminateSession { session: *session },
                        );
                    }
                    conns.insert(*conn);
                }
                info!(
                    sessions = sessions.len(),
                    "crypto sessions cleared from the CLI"
                );
                let again = self.renegotiate(&conns, now);
                Response::Ok(json!({ "cleared": cleared, "renegotiating": again }))
            }
            ClearTarget::Sa { peer, spi } => {
                let victims: Vec<(ChildSaId, ConnId, u32)> = self
                    .sessions
                    .children()
                    .filter(|(_, c)| peer.is_none_or(|p| c.remote.ip() == p))
                    .filter(|(_, c)| spi.is_none_or(|s| c.spi_in == s || c.spi_out == s))
                    .map(|(id, c)| (id, c.conn, c.spi_in))
                    .collect();
                if victims.is_empty() {
                    let what = match (peer, spi) {
                        (_, Some(s)) => format!("no Child SA has SPI 0x{s:08x}"),
                        (Some(p), None) => format!("no Child SA with peer {p}"),
                        (None, None) => "no Child SAs".into(),
                    };
                    return Response::error("not-found", what);
                }
                let mut conns = BTreeSet::new();
                let mut cleared = Vec::new();
                for (child, conn, spi_in) in victims {
                    self.ep
                        .handle_command(now, IkeCommand::DeleteChild { child });
                    cleared.push(format!("{spi_in:08x}"));
                    conns.insert(conn);
                }
                info!(spis = ?cleared, "Child SAs cleared from the CLI");
                let again = self.renegotiate(&conns, now);
                Response::Ok(json!({ "cleared_spis_in": cleared, "renegotiating": again }))
            }
        }
    }

    /// Starts again the static tunnels of `conns` that initiate and are not held down, as IOS
    /// does after a clear; the engine creates a Child SA on an IKE SA left childless, or a
    /// new IKE SA when the old one is being deleted. Returns their names.
    fn renegotiate(&mut self, conns: &BTreeSet<ConnId>, now: Instant) -> Vec<String> {
        let mut names = Vec::new();
        for conn in conns {
            let Some(t) = self.tunnel_by_conn(*conn) else {
                continue;
            };
            let held = matches!(
                self.states.get(&t.name),
                Some(TunnelState::AdminDown | TunnelState::HeldDown(_) | TunnelState::Cleared)
            );
            if !t.initiate || held {
                continue;
            }
            names.push(t.name.clone());
            self.retries.forget(*conn);
            self.ep
                .handle_command(now, IkeCommand::Initiate { conn: *conn });
        }
        names
    }

    /// `rekey ike|child ...`.
    pub(super) fn rekey(&mut self, what: RekeyTarget) -> Response {
        let now = Instant::now();
        match what {
            RekeyTarget::Ike { target } => {
                let sessions: BTreeSet<SessionId> = match &target {
                    SaSelector::Spi(_) => {
                        return Response::error(
                            "bad-request",
                            "an IKE SA is named by tunnel or peer, not by SPI",
                        );
                    }
                    sel => self
                        .ep
                        .sas()
                        .into_iter()
                        .filter(|s| s.state == "Established")
                        .filter(|s| self.selects(sel, s.conn, s.session, s.remote.ip()))
                        .map(|s| s.session)
                        .collect(),
                };
                if sessions.is_empty() {
                    return Response::error(
                        "not-found",
                        format!("no established IKE SA for {}", describe(&target)),
                    );
                }
                for session in &sessions {
                    self.ep
                        .handle_command(now, IkeCommand::RekeyIke { session: *session });
                }
                info!(sessions = sessions.len(), "IKE SA rekey asked from the CLI");
                Response::Ok(json!({
                    "rekeying": "ike",
                    "sessions": sessions.iter().map(|s| s.0).collect::<Vec<_>>(),
                }))
            }
            RekeyTarget::Child { target } => {
                let children: Vec<(ChildSaId, u32)> = self
                    .sessions
                    .children()
                    .filter(|(_, c)| c.state == ChildState::Installed)
                    .filter(|(_, c)| match &target {
                        SaSelector::Spi(s) => c.spi_in == *s || c.spi_out == *s,
                        sel => self.selects(sel, c.conn, c.session, c.remote.ip()),
                    })
                    .map(|(id, c)| (id, c.spi_in))
                    .collect();
                if children.is_empty() {
                    return Response::error(
                        "not-found",
                        format!("no installed Child SA for {}", describe(&target)),
                    );
                }
                for (child, _) in &children {
                    self.ep
                        .handle_command(now, IkeCommand::RekeyChild { child: *child });
                }
                let spis: Vec<String> = children.iter().map(|(_, s)| format!("{s:08x}")).collect();
                info!(spis = ?spis, "Child SA rekey asked from the CLI");
                Response::Ok(json!({ "rekeying": "child", "spis_in": spis }))
            }
        }
    }

    /// True when the SA of (`conn`, `session`) with peer `peer` is one `sel` names.
    fn selects(&self, sel: &SaSelector, conn: ConnId, session: SessionId, peer: IpAddr) -> bool {
        match sel {
            SaSelector::Peer(p) => *p == peer,
            SaSelector::Tunnel(n) => self.tunnel_for(conn, session).is_some_and(|t| &t.name == n),
            SaSelector::Spi(_) => false,
        }
    }
}

fn no_session(remote: Option<IpAddr>) -> String {
    match remote {
        Some(r) => format!("no crypto session with peer {r}"),
        None => "no crypto sessions".into(),
    }
}

fn describe(sel: &SaSelector) -> String {
    match sel {
        SaSelector::Tunnel(n) => format!("tunnel {n}"),
        SaSelector::Peer(p) => format!("peer {p}"),
        SaSelector::Spi(s) => format!("SPI 0x{s:08x}"),
    }
}
