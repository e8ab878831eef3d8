//! [`Endpoint::export_sas`] and [`Endpoint::adopt`]: established IKEv2 SAs handed from one
//! process to the next on a planned restart (see [`crate::persist`]).

use std::collections::HashSet;
use std::time::Instant;

use super::Endpoint;
use crate::config::ConnId;
use crate::output::SessionId;
use crate::persist::{IkeSaState, PersistError};
use crate::sa::IkeSa;

/// What [`Endpoint::export_sas`] took out.
#[derive(Debug, Default)]
pub struct Export {
    /// The SAs that can be adopted, by session.
    pub sas: Vec<IkeSaState>,
    /// The SAs left out, with why (busy with an exchange, not established yet): the next
    /// process does not know them, so their peers renegotiate.
    pub left_out: Vec<(SessionId, ConnId, &'static str)>,
}

impl Export {
    /// How many established SAs were left out only because an exchange of theirs was under
    /// way: waiting a round trip or two usually lets them be exported too.
    pub fn busy(&self) -> usize {
        self.left_out
            .iter()
            .filter(|(_, _, why)| {
                [
                    crate::sa::persist::IN_FLIGHT,
                    crate::sa::persist::CHILD_REKEY,
                ]
                .contains(why)
            })
            .count()
    }
}

impl Endpoint {
    /// Every established, quiet IKE SA with its Child SAs as data, at `now`. Changes nothing:
    /// the engine goes on as before, so a failed restart loses nothing. A rekeyed SA's
    /// lingering predecessor is not listed at all (its successor carries the session).
    pub fn export_sas(&self, now: Instant) -> Export {
        let mut out = Export::default();
        let mut sas: Vec<&IkeSa> = self.sas.values().filter(|sa| !sa.is_closed()).collect();
        sas.sort_by_key(|sa| (sa.session(), sa.local_spi()));
        for sa in sas {
            match sa.export(now) {
                Ok(s) => out.sas.push(s),
                Err("replaced by an IKE SA rekey") => {}
                Err(why) => out.left_out.push((sa.session(), sa.conn(), why)),
            }
        }
        // A session whose successor is being negotiated is left out once.
        out.left_out.dedup_by_key(|e| e.0);
        out
    }

    /// Resumes the IKE SA `state` describes, at `now`, as [`Endpoint::export_sas`] of a
    /// previous process left it: no message is sent and no Child SA installed (the kernel
    /// still holds them), its session and Child SA ids stay as they were, and its next
    /// request uses the next message ID. The connection must be configured here under the
    /// same id and name. On error nothing changes.
    pub fn adopt(&mut self, now: Instant, state: &IkeSaState) -> Result<(), PersistError> {
        self.adopt_all(now, [state])
            .pop()
            .expect("one result per state")
    }

    /// [`Endpoint::adopt`] for each of `states` in order, one result each. The session and
    /// Child SA ids in use are gathered once for the batch: checked per state against every
    /// SA, a restart of a hub with N sessions cost O(N²).
    pub fn adopt_all<'a>(
        &mut self,
        now: Instant,
        states: impl IntoIterator<Item = &'a IkeSaState>,
    ) -> Vec<Result<(), PersistError>> {
        let mut used: HashSet<u64> = HashSet::new();
        for sa in self.sas.values() {
            used.insert(sa.session().0);
            used.extend(sa.child_ids().map(|c| c.0));
        }
        states
            .into_iter()
            .map(|st| self.adopt_one(now, st, &mut used))
            .collect()
    }

    fn adopt_one(
        &mut self,
        now: Instant,
        state: &IkeSaState,
        used: &mut HashSet<u64>,
    ) -> Result<(), PersistError> {
        let peer = self
            .peers
            .iter()
            .find(|p| p.id == state.conn && p.name == state.conn_name)
            .cloned()
            .ok_or_else(|| PersistError::UnknownConn {
                id: state.conn.0,
                name: state.conn_name.clone(),
            })?;
        let spi = if state.initiator {
            state.spi_i
        } else {
            state.spi_r
        };
        if spi == 0 || self.sas.contains_key(&spi) {
            return Err(PersistError::SpiInUse(spi));
        }
        let ids = std::iter::once(state.session.0).chain(state.children.iter().map(|c| c.id.0));
        // Within the state too: a file listing one id twice is refused, not half adopted.
        let mut mine = HashSet::new();
        for id in ids.clone() {
            if id == 0 || used.contains(&id) || !mine.insert(id) {
                return Err(PersistError::IdInUse(id));
            }
        }
        let sa = IkeSa::adopt(now, peer, state, self.config.nat_keepalive)?;
        self.next_id = self.next_id.max(ids.max().unwrap_or(0) + 1);
        used.extend(mine);
        // Its inbound SPIs stay in use: the engine must not hand them out again.
        for c in &state.children {
            self.spis.adopt(c.spi_in);
        }
        self.sas.insert(spi, sa);
        self.after(spi);
        Ok(())
    }
}
