//! A static tunnel behaves like a router interface (IOS `interface Tunnel0`): its line
//! protocol is up while a Child SA is installed and down otherwise, its routes are in the
//! table only while it is up (so a floating route or a second hub takes over), and an
//! initiating tunnel keeps trying to come up. What a dead peer does is the IKE profile's
//! `dpd.action`: restart at once, clear (stay down until the peer, `vtid up` or a reload), or
//! hold (the next packet routed into the tunnel renegotiates, through its ACQUIRE).

use std::time::Duration;

use ike::DownReason;

use super::*;
use crate::config::DpdAction;

/// First wait before a failed negotiation is tried again; doubled per failure up to
/// [`RETRY_MAX`]. The engine's own retransmissions (1+2+4+8+16 s) come first, so a peer that
/// returns is found within about `RETRY_MAX` + 16 s.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The line protocol of one static tunnel, for `show tunnels`.
#[derive(Clone, Debug)]
pub struct Line {
    /// Up: a Child SA is installed.
    pub up: bool,
    /// When it last changed.
    pub since: Instant,
    /// Why, in the words of the log line.
    pub why: String,
}

/// Per-connection negotiation retries of initiating static tunnels.
#[derive(Default)]
pub struct Retries {
    /// When each waiting connection is initiated again.
    due: BTreeMap<ConnId, Instant>,
    /// Failed attempts in a row (sets the back-off).
    failures: BTreeMap<ConnId, u32>,
    /// Connections whose last IKE SA ended with its peer declared dead.
    dead: BTreeSet<ConnId>,
}

impl Retries {
    /// The earliest retry.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Takes the connections due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<ConnId> {
        let due: Vec<ConnId> = self
            .due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in &due {
            self.due.remove(c);
        }
        due
    }

    /// The wait after `failures` failed attempts in a row.
    fn backoff(failures: u32) -> Duration {
        let d = RETRY_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(8));
        d.min(RETRY_MAX)
    }

    /// Forgets a connection (up, taken down, rebuilt).
    pub fn forget(&mut self, conn: ConnId) {
        self.due.remove(&conn);
        self.failures.remove(&conn);
        self.dead.remove(&conn);
    }
}

impl Runtime {
    /// Sets a static tunnel's line protocol, withdrawing or restoring its routes through the
    /// reconciler (the device and its SAs stay), and logs the transition once.
    pub(super) async fn set_line(&mut self, name: &str, up: bool, why: String) {
        let (Some(t), Some(old)) = (self.plan.tunnels.get(name), self.made.get(name)) else {
            return;
        };
        if old.line == Some(up) {
            return;
        }
        let want = model::static_interface(t, up);
        if !old.same_but_routes(&want) {
            // The plan moved on (a reload is rebuilding it): not the line's business.
            return;
        }
        let one = |i: &Interface| BTreeMap::from([(name.to_owned(), i.clone())]);
        let ops = reconcile::interfaces(&one(old), &one(&want), &BTreeSet::new());
        for e in kernel::apply(&self.h, &ops).await {
            warn!(tunnel = %name, "line protocol: {e:#}");
        }
        self.made.insert(name.to_owned(), want);
        let state = if up { "up" } else { "down" };
        info!(tunnel = %name, line = state, "{name}: line protocol {state} ({why})");
        self.lines.insert(
            name.to_owned(),
            Line {
                up,
                since: Instant::now(),
                why,
            },
        );
    }

    /// The engine moved a static tunnel's IKE SA (MOBIKE): its policies' templates name the
    /// new addresses before the rekeyed Child SAs (which the engine starts now) are
    /// installed, so their outbound lookups find them. Only our own move is followed: a
    /// static tunnel's peer is its configured destination, so a peer that moved elsewhere
    /// (its UPDATE_SA_ADDRESSES) is dropped and reconnects to the address it is configured
    /// with. Templates do not offer MOBIKE (plan/templates.rs).
    pub(super) async fn session_moved(
        &mut self,
        session: SessionId,
        conn: ConnId,
        local: IpAddr,
        remote: IpAddr,
    ) {
        let Some(t) = self.tunnel_by_conn(conn).cloned() else {
            return;
        };
        let Some(old) = self.made.get(&t.name).cloned() else {
            return;
        };
        if t.local != local || t.remote != remote {
            warn!(tunnel = %t.name, %local, %remote, "the peer moved the IKE SA away from the tunnel's addresses; ending the session");
            self.ep
                .handle_command(Instant::now(), IkeCommand::TerminateSession { session });
            return;
        }
        let want = model::static_interface(&t, old.line == Some(true));
        let op = Op::Policies {
            name: t.name.clone(),
            policies: want.policies.clone(),
        };
        for e in kernel::apply_one(&self.h, &op).await {
            warn!(tunnel = %t.name, "MOBIKE: {e:#}");
        }
        info!(tunnel = %t.name, %local, "IKE SA moved (MOBIKE); rekeying its Child SAs onto the new address");
        self.made.insert(t.name.clone(), want);
    }

    /// A Child SA of static tunnel `t` was installed.
    pub(super) async fn child_up(&mut self, name: &str, peer: IpAddr) {
        self.set_line(name, true, format!("IPsec SA with {peer} installed"))
            .await;
    }

    /// A Child SA of a static tunnel is gone: the line goes down with the last one.
    pub(super) async fn child_gone(&mut self, rm: &ike::ChildSaRemove) {
        let Some(t) = self.tunnel_by_conn(rm.conn) else {
            return;
        };
        if self.sessions.conn_up(rm.conn) {
            return;
        }
        let name = t.name.clone();
        let peer = rm.remote.ip();
        let why = if self.retries.dead.contains(&rm.conn) {
            format!("peer {peer} dead")
        } else if matches!(self.states.get(&name), Some(TunnelState::AdminDown)) {
            "vtid down".to_owned()
        } else if self.ep.session_alive(rm.session) {
            format!("IPsec SA with {peer} deleted")
        } else {
            format!("IKE SA with {peer} closed")
        };
        self.set_line(&name, false, why).await;
    }

    /// The engine reported an IKE SA event that decides whether a static tunnel negotiates
    /// again: up clears the books, a peer declared dead applies `dpd.action`, any other end
    /// of the connection's last IKE SA (a failed or unanswered negotiation, a DELETE from the
    /// peer) is retried with back-off while the tunnel initiates.
    pub(super) fn follow_ike(&mut self, ev: &Event, now: Instant) {
        match *ev {
            Event::PeerDead { conn, .. } => {
                self.retries.dead.insert(conn);
            }
            Event::IkeSaUp { conn, .. } => self.retries.forget(conn),
            Event::IkeSaDown { conn, reason, .. } => self.ike_down(conn, reason, now),
            _ => {}
        }
    }

    fn ike_down(&mut self, conn: ConnId, reason: DownReason, now: Instant) {
        let Some(t) = self.tunnel_by_conn(conn) else {
            return;
        };
        let (name, initiate, action) = (t.name.clone(), t.initiate, t.dpd_action);
        // The verdict belongs to the IKE SA that just went (a DELETE of ours that ran out of
        // retransmissions ends that way too), not to a later one.
        let dead = self.retries.dead.remove(&conn);
        // A rekey or INITIAL_CONTACT replaced it, or another attempt is under way.
        if self.ep.conn_alive(conn) {
            return;
        }
        // Our own doing (`vtid down`, reload, shutdown) is not retried.
        if !dead && matches!(reason, DownReason::Local | DownReason::Replaced) {
            return;
        }
        if !initiate
            || matches!(
                self.states.get(&name),
                Some(TunnelState::AdminDown | TunnelState::HeldDown(_) | TunnelState::Cleared)
            )
        {
            return;
        }
        let wait = if dead {
            match action {
                DpdAction::Restart => Duration::ZERO,
                DpdAction::Clear => {
                    info!(tunnel = %name, "peer dead: session cleared (dpd action clear); the tunnel waits for its peer or `vtid up`");
                    self.states.insert(name, TunnelState::Cleared);
                    return;
                }
                DpdAction::Hold => {
                    info!(tunnel = %name, "peer dead: holding (dpd action hold); traffic into the tunnel negotiates again");
                    return;
                }
            }
        } else {
            let f = self.retries.failures.entry(conn).or_default();
            *f += 1;
            Retries::backoff(*f)
        };
        info!(tunnel = %name, wait_secs = wait.as_secs(), "negotiating again");
        self.retries.due.insert(conn, now + wait);
    }

    /// Initiates the connections whose retry is due.
    pub(super) fn retry_due(&mut self, now: Instant) {
        for conn in self.retries.take_due(now) {
            self.ep.handle_command(now, IkeCommand::Initiate { conn });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_thirty() {
        let s = |n| Retries::backoff(n).as_secs();
        assert_eq!([s(1), s(2), s(3), s(4), s(10)], [5, 10, 20, 30, 30]);
    }
}
