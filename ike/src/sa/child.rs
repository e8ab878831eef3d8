//! One Child SA record and its lifecycle. A child is `Installed` when created (the install
//! output is queued with it); rekeying it makes a successor (make-before-break, RFC 7296
//! §1.3.3 / §2.8), after which it is `Replaced` until a DELETE removes it. [`Child::on`] is
//! the one place where the lifecycle changes.

use std::net::IpAddr;
use std::time::Instant;

use crate::config::ChildConfig;
use crate::config::ChildConfigIndex;
use crate::config::Mode;
use crate::config::PeerConfig;
use crate::output::ChildSaId;
use crate::output::ChildSaInstall;
use crate::wire::TrafficSelector;

/// The outbound SA of a Child SA the peer rekeyed, held back (RFC 7296 §2.8 leaves when
/// each end starts sending on the new SA to the implementation). The kernel sends on the
/// newest outbound SA of a flow the moment it exists, and the CREATE_CHILD_SA response is
/// what lets the rekey's initiator install its inbound SA: a responder that installed its
/// outbound SA before answering would send, for one flight, on an SA the initiator does not
/// have yet. So the responder installs its inbound SA before answering, keeps sending on the
/// old pair, and installs this when the initiator deletes the old Child SA (the initiator
/// does so once it has the new pair, §2.8), or at `at` if that DELETE never comes.
pub(crate) struct OutboundLater {
    /// The Child SA whose removal releases it: the one this rekey replaces.
    pub(crate) after: ChildSaId,
    /// Installed by then regardless.
    pub(crate) at: Instant,
    /// The [`crate::Halves::OutboundLater`] output to emit.
    pub(crate) install: Box<ChildSaInstall>,
}

/// How long a rekey responder waits for the initiator's DELETE of the old Child SA before
/// it installs the new outbound SA anyway: past the initiator's first retransmissions of its
/// CREATE_CHILD_SA and of its DELETE.
pub(crate) const OUTBOUND_FALLBACK: std::time::Duration = std::time::Duration::from_secs(5);

/// Which Child SA a request is for: a configuration of the connection and, for a per-host
/// Child SA, the (our host, peer's host) pair. Two requests for the same one are the same
/// Child SA (an ACQUIRE storm must not create duplicates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChildRequest {
    pub(crate) index: ChildConfigIndex,
    pub(crate) host_pair: Option<(IpAddr, IpAddr)>,
}

impl ChildRequest {
    /// The selectors to propose as (TSi, TSr) when we initiate it: the configuration's, or
    /// exactly the two hosts within them. `None` when the configuration does not exist or a
    /// host lies outside it.
    pub(crate) fn proposal(
        &self,
        peer: &PeerConfig,
    ) -> Option<(Vec<TrafficSelector>, Vec<TrafficSelector>)> {
        let cfg = peer.child_config(self.index)?;
        match self.host_pair {
            None => Some((cfg.local_ts.clone(), cfg.remote_ts.clone())),
            Some((l, r)) => cfg.host_selectors(l, r),
        }
    }
}

/// Configuration `index` of `peer`, or configuration 0 should it not exist. An SA keeps the
/// profile (`Arc<PeerConfig>`) its children were made with, so indices stay valid; the
/// fallback only keeps a broken invariant from becoming a panic.
pub(crate) fn config_of(peer: &PeerConfig, index: ChildConfigIndex) -> &ChildConfig {
    peer.child_config(index).unwrap_or(&peer.child)
}

/// Where a Child SA is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChildState {
    /// Installed and carrying traffic; rekeyed at its `rekey_at`.
    Installed,
    /// Our CREATE_CHILD_SA rekey of it is in flight. `collision`: the peer rekeyed it too
    /// meanwhile, (its new child, the lowest nonce of its exchange), for §2.8.1.
    Rekeying {
        collision: Option<(ChildSaId, Vec<u8>)>,
    },
    /// A successor exists (or a rekey collision made this one redundant): it only waits for
    /// a DELETE, ours or the peer's, and its removal is no "down" event.
    Replaced,
    /// Replaced, and we sent its DELETE; it goes when the peer answers.
    Deleting,
}

/// What happens to a child.
pub(crate) enum ChildEvent {
    /// We send a CREATE_CHILD_SA with REKEY_SA for it.
    RekeyStarted,
    /// The peer's CREATE_CHILD_SA rekeyed it into `new`; `min_nonce` is the lowest nonce of
    /// that exchange.
    RekeyedByPeer { new: ChildSaId, min_nonce: Vec<u8> },
    /// The peer answered our rekey with an error notify (§2.25: retry later).
    RekeyRefused,
    /// Our rekey's successor is installed.
    RekeyDone,
    /// It is the redundant result of a simultaneous rekey (§2.8.1): we delete it.
    Redundant,
    /// We send its DELETE.
    DeleteSent,
    /// The IKE SA was rekeyed (§2.18): a rekey in flight on the old IKE SA is void.
    IkeRekeyed,
}

/// One Child SA.
pub(crate) struct Child {
    pub(crate) id: ChildSaId,
    pub(crate) spi_in: u32,
    pub(crate) spi_out: u32,
    pub(crate) local_ts: Vec<TrafficSelector>,
    pub(crate) remote_ts: Vec<TrafficSelector>,
    pub(crate) mode: Mode,
    /// When to rekey; it counts only while `Installed` (see [`crate::sa::timers`]).
    pub(crate) rekey_at: Option<Instant>,
    /// When the engine removes it (the kernel's hard limit is a little later).
    pub(crate) expire_at: Instant,
    /// The outer addresses (ours, the peer's) its kernel SAs were installed with: the IKE SA
    /// may have moved since (MOBIKE), and removal must name the SAs as they are.
    pub(crate) addrs: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// The configuration it was negotiated for; kept by its rekeyed successors.
    pub(crate) config: ChildConfigIndex,
    /// (our host, the peer's) of a per-host Child SA we initiated; kept across rekeys.
    pub(crate) host_pair: Option<(IpAddr, IpAddr)>,
    /// The PFS group its exchange used (RFC 7296 §1.3.1), for status output.
    pub(crate) pfs: Option<crate::transform::DhGroup>,
    /// Its additional key exchanges (RFC 9370 §2.2.4), for status output.
    pub(crate) pfs_addke: crate::transform::AddKes,
    /// Its outbound SA, not installed yet (a rekey the peer initiated).
    pub(crate) outbound_later: Option<OutboundLater>,
    state: ChildState,
}

impl Child {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ChildSaId,
        spi_in: u32,
        spi_out: u32,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
        mode: Mode,
        rekey_at: Instant,
        expire_at: Instant,
    ) -> Self {
        Self {
            id,
            spi_in,
            spi_out,
            local_ts,
            remote_ts,
            mode,
            rekey_at: Some(rekey_at),
            expire_at,
            addrs: None,
            config: ChildConfigIndex::FIRST,
            host_pair: None,
            pfs: None,
            pfs_addke: crate::transform::AddKes::NONE,
            outbound_later: None,
            state: ChildState::Installed,
        }
    }

    /// The lifecycle's transitions. Returns the §2.8.1 collision record when our rekey
    /// completes (`RekeyDone` on a child the peer rekeyed as well).
    pub(crate) fn on(&mut self, ev: ChildEvent) -> Option<(ChildSaId, Vec<u8>)> {
        use ChildEvent as E;
        use ChildState as S;
        let (next, collision) = match (std::mem::replace(&mut self.state, S::Installed), ev) {
            (S::Installed, E::RekeyStarted) => (S::Rekeying { collision: None }, None),
            (S::Rekeying { .. }, E::RekeyedByPeer { new, min_nonce }) => {
                // Decided when our own response arrives.
                let collision = Some((new, min_nonce));
                (S::Rekeying { collision }, None)
            }
            // The peer deletes the old child; we stop rekeying it.
            (S::Installed | S::Replaced, E::RekeyedByPeer { .. }) => (S::Replaced, None),
            (S::Rekeying { .. }, E::RekeyRefused | E::IkeRekeyed) => (S::Installed, None),
            (S::Rekeying { collision }, E::RekeyDone) => (S::Replaced, collision),
            (S::Installed | S::Rekeying { .. } | S::Replaced, E::RekeyDone | E::Redundant) => {
                (S::Replaced, None)
            }
            (_, E::DeleteSent) => (S::Deleting, None),
            // Anything else leaves the state as it is (e.g. a DELETE already sent).
            (state, _) => (state, None),
        };
        self.state = next;
        collision
    }

    pub(crate) fn state(&self) -> &ChildState {
        &self.state
    }

    /// Carries traffic and is nobody's predecessor yet.
    pub(crate) fn is_live(&self) -> bool {
        matches!(
            self.state,
            ChildState::Installed | ChildState::Rekeying { .. }
        )
    }

    /// A successor took over: its removal is no "down" event.
    pub(crate) fn is_replaced(&self) -> bool {
        matches!(self.state, ChildState::Replaced | ChildState::Deleting)
    }

    /// We sent its DELETE.
    pub(crate) fn is_deleting(&self) -> bool {
        self.state == ChildState::Deleting
    }

    /// The request it satisfies.
    pub(crate) fn request(&self) -> ChildRequest {
        ChildRequest {
            index: self.config,
            host_pair: self.host_pair,
        }
    }

    /// Its rekey deadline counts.
    pub(crate) fn rekey_armed(&self) -> bool {
        self.state == ChildState::Installed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child() -> Child {
        let t = Instant::now();
        Child::new(
            ChildSaId(1),
            0x1000,
            0x2000,
            vec![],
            vec![],
            Mode::Tunnel,
            t,
            t,
        )
    }

    #[test]
    fn rekey_then_delete() {
        let mut c = child();
        assert!(c.rekey_armed() && c.is_live());
        assert_eq!(c.on(ChildEvent::RekeyStarted), None);
        assert!(!c.rekey_armed() && c.is_live());
        assert_eq!(c.on(ChildEvent::RekeyDone), None);
        assert!(c.is_replaced() && !c.is_live() && !c.is_deleting());
        c.on(ChildEvent::DeleteSent);
        assert!(c.is_replaced() && c.is_deleting());
        // A late rekey by the peer does not revive it.
        c.on(ChildEvent::RekeyedByPeer {
            new: ChildSaId(3),
            min_nonce: vec![1],
        });
        assert_eq!(c.state(), &ChildState::Deleting);
    }

    #[test]
    fn collision_is_reported_when_our_rekey_completes() {
        let mut c = child();
        c.on(ChildEvent::RekeyStarted);
        c.on(ChildEvent::RekeyedByPeer {
            new: ChildSaId(7),
            min_nonce: vec![9, 9],
        });
        assert_eq!(
            c.on(ChildEvent::RekeyDone),
            Some((ChildSaId(7), vec![9, 9]))
        );
        assert_eq!(c.state(), &ChildState::Replaced);
    }

    #[test]
    fn refused_or_voided_rekey_returns_to_installed() {
        for ev in [ChildEvent::RekeyRefused, ChildEvent::IkeRekeyed] {
            let mut c = child();
            c.on(ChildEvent::RekeyStarted);
            c.on(ev);
            assert_eq!(c.state(), &ChildState::Installed);
        }
        let mut c = child();
        c.on(ChildEvent::RekeyedByPeer {
            new: ChildSaId(2),
            min_nonce: vec![],
        });
        assert_eq!(c.state(), &ChildState::Replaced);
    }
}
