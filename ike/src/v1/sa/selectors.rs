//! Quick modes by configuration: a profile with several quick mode configurations (a crypto
//! map entry with several ACL permit lines) needs one quick mode per configuration, since a
//! quick mode carries exactly one IDci/IDcr pair (RFC 2409 §5.5). Asked-for configurations
//! are queued on the ISAKMP SA and started one at a time once it is established, so that the
//! peer never sees two of our quick modes at once for the same SA.

use super::*;

impl Phase1Sa {
    /// Asks for a Child SA of configuration `index` (started by [`Phase1Sa::start_queued`]).
    pub(crate) fn want_child_at(&mut self, index: ChildConfigIndex) {
        if !self.c.queued.contains(&index) {
            self.c.queued.push(index);
        }
    }

    /// Starts the next queued quick mode: only on an established SA with no quick mode of
    /// ours in flight. Configurations that already have a Child SA (or one being negotiated
    /// by either side), or that the profile does not have, leave the queue unstarted.
    pub(crate) fn start_queued(&mut self, ctx: &mut Ctx<'_>) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        if e.exchanges
            .values()
            .any(|x| matches!(x, Exchange::ExpectQuickMode2(_)))
        {
            return;
        }
        while !self.c.queued.is_empty() {
            let index = self.c.queued.remove(0);
            if self.c.peer.child_config(index).is_none() || e.has_config(index) {
                continue;
            }
            if let Err(err) = e.start_quick_mode_at(&self.c, ctx, index, None) {
                tracing::warn!(
                    conn = ?self.c.peer.id,
                    config = index.0,
                    error = %err,
                    "v1: quick mode not started"
                );
                continue;
            }
            return;
        }
    }
}

impl Established {
    /// True when configuration `index` has a Child SA, or one under negotiation.
    fn has_config(&self, index: ChildConfigIndex) -> bool {
        self.children.iter().any(|c| c.config == index)
            || self.exchanges.values().any(|x| {
                matches!(x, Exchange::ExpectQuickMode2(q) if q.config == index)
                    || matches!(x, Exchange::ExpectQuickMode3(q) if q.child.config == index)
                    || matches!(x, Exchange::ExpectConnected(q) if q.child.config == index)
            })
    }
}
