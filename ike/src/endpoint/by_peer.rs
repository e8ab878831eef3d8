//! The endpoint's IKE SAs by connection and authenticated peer identity.
//!
//! Two things look up "every other IKE SA of this peer" once per established IKE SA:
//! INITIAL_CONTACT (RFC 7296 §2.4: drop the peer's other SAs) and the duplicate check after
//! simultaneous initiation. A scan of every SA there made each new spoke of a hub cost O(N),
//! so bringing up N spokes cost O(N²): at 10,000 spokes this scan was the largest user-space
//! cost of the hub. The book is kept by [`super::Endpoint::after`], which every change to an
//! SA goes through, so it always matches the SAs' own `conn()` and `peer_id()`.

use std::collections::HashMap;

use crate::config::ConnId;
use crate::spi_map::SpiMap;
use crate::wire::payloads::Identity;

type Key = (ConnId, Identity);

#[derive(Default)]
pub(super) struct ByPeer {
    /// By connection, then peer: a lookup borrows the identity instead of cloning it.
    spis: HashMap<ConnId, HashMap<Identity, Vec<u64>>>,
    key_of: SpiMap<Key>,
}

impl ByPeer {
    /// Books SA `spi` under `key` (its connection and authenticated peer), or unbooks it for
    /// `None` (not authenticated yet, or closed). Cheap when nothing changed: one lookup and
    /// one comparison, as it runs after every input to the SA.
    pub(super) fn book(&mut self, spi: u64, key: Option<(ConnId, &Identity)>) {
        match (self.key_of.get(&spi), key) {
            (Some((c, id)), Some((kc, kid))) if *c == kc && id == kid => return,
            (None, None) => return,
            _ => {}
        }
        if let Some((conn, id)) = self.key_of.remove(&spi)
            && let Some(peers) = self.spis.get_mut(&conn)
            && let Some(v) = peers.get_mut(&id)
        {
            v.retain(|s| *s != spi);
            if v.is_empty() {
                peers.remove(&id);
                if peers.is_empty() {
                    self.spis.remove(&conn);
                }
            }
        }
        if let Some((conn, id)) = key {
            let peers = self.spis.entry(conn).or_default();
            peers.entry(id.clone()).or_default().push(spi);
            self.key_of.insert(spi, (conn, id.clone()));
        }
    }

    /// The SAs of `conn` authenticated as `peer`, in the order they were booked.
    pub(super) fn of(&self, conn: ConnId, peer: &Identity) -> &[u64] {
        self.spis
            .get(&conn)
            .and_then(|peers| peers.get(peer))
            .map_or(&[], Vec::as_slice)
    }

    /// How many SAs are booked (tests compare it with the SAs that have a peer).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.key_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn books_moves_and_unbooks() {
        let a = Identity::Fqdn("a.example".into());
        let b = Identity::Fqdn("b.example".into());
        let mut p = ByPeer::default();
        p.book(1, None);
        assert_eq!(p.len(), 0);
        p.book(1, Some((ConnId(1), &a)));
        p.book(2, Some((ConnId(1), &a)));
        p.book(3, Some((ConnId(2), &a)));
        p.book(2, Some((ConnId(1), &a)));
        assert_eq!(p.of(ConnId(1), &a), &[1, 2]);
        assert_eq!(p.of(ConnId(2), &a), &[3]);
        // The peer turned out to be another identity: the SA moves.
        p.book(1, Some((ConnId(1), &b)));
        assert_eq!(p.of(ConnId(1), &a), &[2]);
        assert_eq!(p.of(ConnId(1), &b), &[1]);
        p.book(2, None);
        assert!(p.of(ConnId(1), &a).is_empty());
        assert_eq!(p.len(), 2);
        assert_eq!(p.spis.len(), 2);
        assert_eq!(p.spis[&ConnId(1)].len(), 1, "empty buckets are dropped");
    }
}
