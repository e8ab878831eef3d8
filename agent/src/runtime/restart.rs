//! The runtime's part of a hitless restart (see [`crate::restart`]): writing the state file
//! from the engine and the books, and taking the adopted tunnels into the books at start.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tracing::{info, warn};

use super::{Runtime, TunnelState, line};
use crate::model;
use crate::restart::{self, Adopted, ChildBook, CloneBook};

impl Runtime {
    /// Writes the restart state file to `dir` and says what it holds. The engine and the
    /// kernel are left as they are: the caller stops the loop and re-executes the binary.
    pub fn write_restart_state(&self, dir: &Path) -> Result<serde_json::Value> {
        let now = Instant::now();
        let export = self.ep.export_v2(now);
        let mut books = Vec::new();
        let mut sessions = Vec::new();
        let mut clones = Vec::new();
        for sa in &export.sas {
            if let Some(c) = self.clones.of_session(sa.session) {
                clones.push(CloneBook {
                    session: sa.session.0,
                    slot: c.slot,
                    age_ms: now.saturating_duration_since(c.created).as_millis() as u64,
                });
            }
            for c in &sa.children {
                if let Some(info) = self.sessions.child(c.id) {
                    books.push(ChildBook::of(c.id, info, now));
                }
            }
            let up = self.sessions.uptime(sa.session, now).unwrap_or_default();
            sessions.push((sa.session.0, up.as_millis() as u64));
        }
        let header = restart::header(&self.config_path, books, sessions, clones)?;
        let bytes = restart::encode(&header, &export.sas)?;
        let path = restart::write(dir, &bytes)?;
        let children: usize = export.sas.iter().map(|s| s.children.len()).sum();
        for (session, conn, why) in &export.left_out {
            info!(
                session = session.0,
                conn = conn.0,
                "restart: IKE SA not saved ({why}); its peer will renegotiate"
            );
        }
        info!(
            file = %path.display(),
            ike_sas = export.sas.len(),
            child_sas = children,
            left_out = export.left_out.len(),
            "restart: state saved; leaving SAs, policies and devices in place"
        );
        Ok(json!({
            "file": path.display().to_string(),
            "ike_sas": export.sas.len(),
            "child_sas": children,
            "left_out": export.left_out.len(),
        }))
    }

    /// True when no established IKE SA is busy with an exchange (which would leave it out of
    /// the state file): `vtid restart` waits a moment for that.
    pub fn restart_quiet(&self) -> bool {
        self.ep.export_v2(Instant::now()).busy() == 0
    }

    /// Takes what [`restart::adopt`] adopted into the books: each tunnel counts as made with
    /// its line protocol up (its device, address, routes and policies are in the kernel as
    /// the previous process left them), each clone as made with its number, and the Child
    /// SAs as installed (with the routes they added). No kernel call but reading the clones'
    /// ifindexes.
    pub async fn adopted(&mut self, a: Adopted) {
        let now = Instant::now();
        for (name, peer) in a.tunnels {
            let Some(t) = self.plan.tunnels.get(&name) else {
                continue;
            };
            self.made
                .insert(name.clone(), model::static_interface(t, true));
            self.lines.insert(
                name.clone(),
                line::Line {
                    up: true,
                    since: now,
                    why: format!("IPsec SA with {peer} adopted across a restart"),
                },
            );
            self.states.insert(name, TunnelState::Created);
        }
        for c in a.clones {
            let Some(tp) = self.plan.templates.get(&c.conn) else {
                continue;
            };
            let ifindex = match self.h.link().index_of(&c.tunnel.name).await {
                Ok(i) => i,
                Err(e) => {
                    warn!(interface = %c.tunnel.name, "restart: adopted clone not found: {e}");
                    continue;
                }
            };
            let name = c.tunnel.name.clone();
            if !self.clones.adopt(
                tp,
                c.slot,
                c.tunnel,
                c.interface,
                ifindex,
                &c.peer_id,
                c.session,
                c.created,
            ) {
                warn!(interface = %name, "restart: clone number in use; not adopted");
            }
        }
        for (session, since) in a.sessions {
            self.sessions.adopted(session, since);
        }
        for (id, info) in a.children {
            if let Some(slot) = info.clone {
                for p in &info.routes {
                    self.clones.claim_route(slot, *p);
                }
            }
            self.sessions.installed(id, info);
        }
    }
}
