//! Rejected IKE input in the log: the first rejection of a reason is logged as it happens,
//! the rest within the next interval are counted and logged as one summary line when it
//! ends. A flood from the internet (thousands of spoofed IKE_SA_INITs a second) must not
//! fill the journal, and an operator still sees at once that something is being refused and
//! why. The counts per reason are also the `vtid_ike_rejected_total` metric (the engine's
//! `Stats`, plus [`QUEUE_FULL`] counted here).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The reason under which the daemon counts new-SA requests it shed because their queue was
/// full (before the engine saw them).
pub const QUEUE_FULL: &str = "queue_full";

/// Distinct sources remembered per summary; past it the summary says "at least".
const MAX_SOURCES: usize = 10_000;

/// One summary window per reason.
pub struct RejectLog {
    interval: Duration,
    windows: BTreeMap<&'static str, Window>,
}

struct Window {
    ends: Instant,
    count: u64,
    sources: HashSet<IpAddr>,
    last: Option<SocketAddr>,
}

/// A line to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The first rejection of a reason in a while: logged whole.
    First {
        /// Why.
        reason: &'static str,
        /// How many at once (the shed count comes in batches).
        count: u64,
        /// From whom, where known.
        peer: Option<SocketAddr>,
    },
    /// More of the same during the last interval.
    Summary {
        /// Why.
        reason: &'static str,
        /// How many.
        count: u64,
        /// Distinct source addresses (at most [`MAX_SOURCES`] are told apart).
        sources: usize,
        /// The last of them, where known.
        last: Option<SocketAddr>,
        /// The interval.
        interval: Duration,
    },
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::First {
                reason,
                count: 1,
                peer: Some(peer),
            } => write!(f, "rejected IKE message from {peer}: {reason}"),
            Self::First { reason, count, .. } => {
                write!(f, "rejected {count} IKE messages: {reason}")
            }
            Self::Summary {
                reason,
                count,
                sources,
                last,
                interval,
            } => {
                write!(
                    f,
                    "rejected {count} more IKE messages in {} s: {reason}",
                    interval.as_secs()
                )?;
                if let Some(last) = last {
                    let at_least = if *sources >= MAX_SOURCES { "at least " } else { "" };
                    write!(
                        f,
                        ", from {at_least}{sources} source address(es), last {last}"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl RejectLog {
    /// Summaries every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: BTreeMap::new(),
        }
    }

    /// Records `count` rejections for `reason` (from `peer`, where known); returns the line
    /// to log now, if any.
    pub fn note(
        &mut self,
        now: Instant,
        reason: &'static str,
        count: u64,
        peer: Option<SocketAddr>,
    ) -> Option<Line> {
        match self.windows.get_mut(reason) {
            Some(w) => {
                w.count += count;
                if let Some(p) = peer {
                    if w.sources.len() < MAX_SOURCES {
                        w.sources.insert(p.ip());
                    }
                    w.last = Some(p);
                }
                None
            }
            None => {
                self.windows.insert(
                    reason,
                    Window {
                        ends: now + self.interval,
                        count: 0,
                        sources: HashSet::new(),
                        last: peer,
                    },
                );
                Some(Line::First {
                    reason,
                    count,
                    peer,
                })
            }
        }
    }

    /// Closes the windows that ended by `now`: a summary for each that counted anything
    /// (and a new window, so a flood that goes on stays one line per interval); one that
    /// counted nothing just closes, and the next rejection is logged whole again.
    pub fn flush(&mut self, now: Instant) -> Vec<Line> {
        let mut lines = Vec::new();
        let interval = self.interval;
        self.windows.retain(|&reason, w| {
            if w.ends > now {
                return true;
            }
            if w.count == 0 {
                return false;
            }
            lines.push(Line::Summary {
                reason,
                count: w.count,
                sources: w.sources.len(),
                last: w.last,
                interval,
            });
            w.ends = now + interval;
            w.count = 0;
            w.sources.clear();
            true
        });
        lines
    }

    /// When [`RejectLog::flush`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.windows.values().map(|w| w.ends).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::from(0x0a63_0000 + i)), 500)
    }

    #[test]
    fn a_flood_is_one_line_per_reason_per_interval() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        let mut log = RejectLog::new(every);
        let mut lines = Vec::new();
        // 5,000 rejections a second for 30 s, of two reasons, from 1,000 addresses.
        for ms in (0..30_000u64).step_by(1) {
            let now = t0 + Duration::from_millis(ms);
            lines.extend(log.flush(now));
            for k in 0..5u32 {
                let reason = if k == 0 { "half_open_limit" } else { "cookie_required" };
                lines.extend(log.note(now, reason, 1, Some(peer((ms as u32 * 5 + k) % 1000))));
            }
        }
        lines.extend(log.flush(t0 + Duration::from_secs(31)));
        let firsts = lines.iter().filter(|l| matches!(l, Line::First { .. })).count();
        assert_eq!(firsts, 2, "one whole line per reason");
        let summaries: Vec<_> = lines
            .iter()
            .filter_map(|l| match l {
                Line::Summary {
                    reason,
                    count,
                    sources,
                    ..
                } => Some((*reason, *count, *sources)),
                _ => None,
            })
            .collect();
        assert_eq!(summaries.len(), 6, "{summaries:?}");
        let total: u64 = summaries.iter().map(|s| s.1).sum::<u64>() + 2;
        assert_eq!(total, 30_000 * 5, "every rejection counted once");
        assert!(summaries.iter().all(|s| s.2 <= 1000 && s.2 > 0));
        // Quiet again: the window closes without a line, and the next one is whole.
        let later = t0 + Duration::from_secs(60);
        assert!(log.flush(later).is_empty());
        assert_eq!(log.next_deadline(), None);
        assert_eq!(
            log.note(later, "cookie_required", 1, Some(peer(1))),
            Some(Line::First {
                reason: "cookie_required",
                count: 1,
                peer: Some(peer(1))
            })
        );
    }

    #[test]
    fn shed_batches_are_counted_without_sources() {
        let t0 = Instant::now();
        let mut log = RejectLog::new(Duration::from_secs(10));
        let first = log.note(t0, QUEUE_FULL, 40, None).unwrap();
        assert_eq!(first.to_string(), "rejected 40 IKE messages: queue_full");
        assert_eq!(log.note(t0, QUEUE_FULL, 60, None), None);
        let lines = log.flush(t0 + Duration::from_secs(10));
        assert_eq!(
            lines.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["rejected 60 more IKE messages in 10 s: queue_full"]
        );
    }

    #[test]
    fn summary_text_names_reason_count_and_sources() {
        let l = Line::Summary {
            reason: "bad_cookie",
            count: 12,
            sources: MAX_SOURCES,
            last: Some(peer(3)),
            interval: Duration::from_secs(10),
        };
        assert_eq!(
            l.to_string(),
            "rejected 12 more IKE messages in 10 s: bad_cookie, from at least 10000 source \
             address(es), last 10.99.0.3:500"
        );
    }
}
