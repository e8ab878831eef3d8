//! The deadlines of one IKE SA, one slot per kind (quinn-proto's `TimerTable`). The SA's next
//! timeout is the table's minimum together with its Child SAs' deadlines.
//!
//! Child SA rekey and expiry deadlines stay on each child record (`Child::rekey_at`,
//! `Child::expire_at`): they come and go with the child, a table keyed by child would only
//! mirror the child list, and the rekey deadline counts only in the child's `Installed` state.

use std::time::Instant;

/// A kind of deadline of an IKE SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Resend the outstanding request (RFC 7296 §2.1, exponential back-off); set exactly while
    /// a request is outstanding.
    Retransmit,
    /// Responder: drop the SA if IKE_AUTH has not completed by then.
    HalfOpen,
    /// Rekey the IKE SA (§2.8; lifetime minus margin and jitter).
    IkeRekey,
    /// Liveness check (§2.4): `dpd.interval` after we last heard from the peer, while an
    /// established, not rekeyed SA has no request in flight (an outstanding request is its
    /// own liveness check). Derived from those three after every input.
    Liveness,
    /// NAT-T keepalive when a NAT is in front of us (RFC 3948 §4).
    NatKeepalive,
    /// A rekeyed IKE SA waits this long for the peer's DELETE (§2.18), then goes quietly.
    DeleteLinger,
}

impl Timer {
    const COUNT: usize = 6;

    fn index(self) -> usize {
        match self {
            Self::Retransmit => 0,
            Self::HalfOpen => 1,
            Self::IkeRekey => 2,
            Self::Liveness => 3,
            Self::NatKeepalive => 4,
            Self::DeleteLinger => 5,
        }
    }
}

/// One optional deadline per [`Timer`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimerTable {
    data: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.data[timer.index()] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.data[timer.index()] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer.index()]
    }

    /// True when `timer` is set and due at `now`.
    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// The earliest deadline in the table.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn table_minimum_and_expiry() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::IkeRekey, t0 + Duration::from_secs(30));
        t.set(Timer::Retransmit, t0 + Duration::from_secs(2));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(2)));
        assert!(!t.is_expired(Timer::Retransmit, t0 + Duration::from_secs(1)));
        assert!(t.is_expired(Timer::Retransmit, t0 + Duration::from_secs(2)));
        assert!(!t.is_expired(Timer::Liveness, t0 + Duration::from_secs(99)));
        t.stop(Timer::Retransmit);
        assert_eq!(t.get(Timer::Retransmit), None);
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(30)));
    }
}
