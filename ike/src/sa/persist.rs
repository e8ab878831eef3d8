//! One established IKE SA to and from [`crate::persist::IkeSaState`] (a planned restart of
//! the driver). Only a quiet SA is exported: established, not replaced by a rekey, no request
//! of ours in flight and no Child SA half way through a rekey. What is under way at that
//! moment lives in state no file carries (a KE private value, an unanswered nonce), so such
//! an SA is left out and its peer sees it renegotiated, as after a crash.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::config::PeerConfig;
use crate::keys::IkeKeys;
use crate::persist::{ChildSaState, IkeSaState, PersistError};
use crate::sa::child::{Child, ChildState};
use crate::sa::established::Established;
use crate::sa::glue;
use crate::sa::later;
use crate::sa::timers::{Timer, TimerTable};
use crate::sa::{Common, IkeSa, State};

/// Why an established SA is left out: a request of ours is unanswered.
pub(crate) const IN_FLIGHT: &str = "an exchange in flight";
/// Why an established SA is left out: a Child SA rekey is half done.
pub(crate) const CHILD_REKEY: &str = "a Child SA rekey in flight";

impl IkeSa {
    /// This SA as data, or why it cannot be exported now. Deadlines become the time left
    /// after `now`.
    pub(crate) fn export(&self, now: Instant) -> Result<IkeSaState, &'static str> {
        if self.is_closed() {
            return Err("closed");
        }
        let State::Established(est) = &self.state else {
            return Err("not established");
        };
        if est.rekeyed {
            return Err("replaced by an IKE SA rekey");
        }
        if est.pending.is_some() || est.followup.is_some() || self.c.outstanding.is_some() {
            return Err(IN_FLIGHT);
        }
        if self.is_deleting() {
            return Err("being deleted");
        }
        let keys = self.c.keys.as_ref().ok_or("no keys")?;
        let left = |at: Instant| at.saturating_duration_since(now);
        let mut children = Vec::with_capacity(est.children.len());
        for ch in &est.children {
            if *ch.state() != ChildState::Installed || ch.outbound_later.is_some() {
                return Err(CHILD_REKEY);
            }
            children.push(ChildSaState {
                id: ch.id,
                spi_in: ch.spi_in,
                spi_out: ch.spi_out,
                local_ts: ch.local_ts.clone(),
                remote_ts: ch.remote_ts.clone(),
                mode: ch.mode,
                config: ch.config,
                host_pair: ch.host_pair,
                addrs: ch.addrs,
                pfs: ch.pfs,
                pfs_addke: ch.pfs_addke,
                rekey_in: ch.rekey_at.map(left),
                expire_in: left(ch.expire_at),
            });
        }
        let c = &self.c;
        Ok(IkeSaState {
            conn: c.peer.id,
            conn_name: c.peer.name.clone(),
            session: c.session,
            spi_i: c.spi_i,
            spi_r: c.spi_r,
            initiator: c.initiator,
            local: c.local,
            remote: c.remote,
            nat_local: c.nat_local,
            nat_remote: c.nat_remote,
            frag: c.frag,
            mobike: c.mobike,
            mobike_initiator: c.mobike_initiator,
            suite: keys.suite,
            sk_d: keys.sk_d.clone(),
            sk_ai: keys.sk_a.0.clone(),
            sk_ar: keys.sk_a.1.clone(),
            sk_ei: keys.sk_e.0.clone(),
            sk_er: keys.sk_e.1.clone(),
            sk_pi: keys.sk_pi.clone(),
            sk_pr: keys.sk_pr.clone(),
            peer_id: c.peer_id.clone(),
            peer_serials: c.peer_serials.as_ref().map(|s| s.pairs().to_vec()),
            next_req: c.next_req,
            next_peer_req: c.next_peer_req,
            cached: c.cached.clone(),
            ike_rekey_in: c.timers.get(Timer::IkeRekey).map(left),
            children,
        })
    }

    /// The SA `s` describes, resumed at `now` under profile `peer`: message IDs go on where
    /// they were, deadlines are the time left from `now`, the peer counts as heard from now
    /// (its liveness check comes one DPD interval later). Nothing is sent or installed.
    pub(crate) fn adopt(
        now: Instant,
        peer: Arc<PeerConfig>,
        s: &IkeSaState,
        nat_keepalive: std::time::Duration,
    ) -> Result<Self, PersistError> {
        let keys = IkeKeys {
            suite: glue::suite(&s.suite),
            sk_d: s.sk_d.clone(),
            sk_ai: s.sk_ai.clone(),
            sk_ar: s.sk_ar.clone(),
            sk_ei: s.sk_ei.clone(),
            sk_er: s.sk_er.clone(),
            sk_pi: s.sk_pi.clone(),
            sk_pr: s.sk_pr.clone(),
        };
        let prf_len = s.suite.prf.preferred_key_len();
        if s.sk_d.len() != prf_len || s.sk_pi.len() != prf_len || s.sk_pr.len() != prf_len {
            return Err(PersistError::BadKeys);
        }
        let sa_keys =
            glue::sa_keys(s.suite, keys, s.initiator).map_err(|_| PersistError::BadKeys)?;
        let mut c = Common {
            peer,
            session: s.session,
            spi_i: s.spi_i,
            spi_r: s.spi_r,
            initiator: s.initiator,
            local: s.local,
            remote: s.remote,
            nat_local: s.nat_local,
            nat_remote: s.nat_remote,
            frag: s.frag,
            mobike: s.mobike,
            mobike_initiator: s.mobike_initiator,
            keys: Some(sa_keys),
            peer_id: s.peer_id.clone(),
            peer_serials: s
                .peer_serials
                .clone()
                .map(crate::cert::PathSerials::from_pairs),
            next_req: s.next_req,
            outstanding: None,
            next_peer_req: s.next_peer_req,
            cached: s.cached.clone(),
            reassembly: None,
            last_heard: now,
            timers: TimerTable::default(),
            closed: false,
            reply_to: None,
            int_auth: None,
            prev_recv: None,
            lineage: super::Lineage::adopted(),
        };
        if let Some(d) = s.ike_rekey_in {
            c.timers.set(Timer::IkeRekey, later(now, d));
        }
        if c.nat_local {
            c.timers.set(Timer::NatKeepalive, later(now, nat_keepalive));
        }
        let children = s
            .children
            .iter()
            .map(|ch| {
                let mut child = Child::new(
                    ch.id,
                    ch.spi_in,
                    ch.spi_out,
                    ch.local_ts.clone(),
                    ch.remote_ts.clone(),
                    ch.mode,
                    now,
                    later(now, ch.expire_in),
                );
                child.rekey_at = ch.rekey_in.map(|d| later(now, d));
                child.addrs = ch.addrs;
                child.config = ch.config;
                child.host_pair = ch.host_pair;
                child.pfs = ch.pfs;
                child.pfs_addke = ch.pfs_addke;
                child
            })
            .collect();
        let est = Established {
            suite: s.suite,
            children,
            queue: VecDeque::new(),
            pending: None,
            rekeyed: false,
            followup: None,
        };
        let mut sa = IkeSa {
            c,
            state: State::Established(Box::new(est)),
        };
        sa.sync_timers();
        Ok(sa)
    }
}
