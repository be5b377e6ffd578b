//! Long-lived connections (WebSocket tunnels, `text/event-stream`
//! responses) counted apart from requests: opened, ended by how they ended,
//! open now, and a coarse histogram of how long they lasted.
//!
//! A long-lived connection's request is recorded once, with the time to its
//! response head, like any request (`GroupStats::record`); its life never
//! enters the request latency histograms or the windows analysis reads,
//! where a stream of an hour would read as an hour of latency. Only
//! [`LongLivedEnd::Abnormal`] says something against the version: a
//! connection cut by Hatoba's own stop (the end of a drain) is counted as
//! [`LongLivedEnd::Stopped`] and never held against it.
//!
//! Like the rest of the record path: relaxed atomics on fixed arrays, no
//! lock, no allocation, no clock (the caller passes the duration).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the duration buckets, the last one `+Inf`
/// excluded: seconds to hours is all a connection's life needs.
pub const LONG_LIVED_BOUNDS: [u64; 9] = [1, 10, 30, 60, 300, 900, 1800, 3600, 10800];

const SLOTS: usize = LONG_LIVED_BOUNDS.len() + 1;

/// How a long-lived connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LongLivedEnd {
    /// Closed by either side in an orderly way, or by the client going
    /// away: nothing against the version.
    Normal,
    /// Reset or cut by the upstream while it was still routed: counts
    /// against the version.
    Abnormal,
    /// Cut by Hatoba's own stop: the instance was out of the route (its
    /// drain ended and it was stopped), or the proxy itself stopped. Never
    /// counts against the version.
    Stopped,
}

impl LongLivedEnd {
    /// Every way to end, in index order.
    pub const ALL: [LongLivedEnd; 3] = [
        LongLivedEnd::Normal,
        LongLivedEnd::Abnormal,
        LongLivedEnd::Stopped,
    ];

    /// `"normal"`, `"abnormal"` or `"stopped"`: the `end` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            LongLivedEnd::Normal => "normal",
            LongLivedEnd::Abnormal => "abnormal",
            LongLivedEnd::Stopped => "stopped",
        }
    }

    fn index(self) -> usize {
        match self {
            LongLivedEnd::Normal => 0,
            LongLivedEnd::Abnormal => 1,
            LongLivedEnd::Stopped => 2,
        }
    }
}

impl fmt::Display for LongLivedEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a group's long-lived counters add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LongLivedCounts {
    /// Connections opened since the group was created.
    pub opened: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections ended, by [`LongLivedEnd`] (index order of `ALL`).
    pub ended: [u64; 3],
    /// Ended connections by duration: one count per bucket of
    /// [`LONG_LIVED_BOUNDS`], then the `+Inf` one (not cumulative).
    pub durations: [u64; SLOTS],
    /// The durations summed, in milliseconds.
    pub duration_sum_ms: u64,
}

impl LongLivedCounts {
    /// Connections that ended this way.
    pub fn ended(&self, how: LongLivedEnd) -> u64 {
        self.ended[how.index()]
    }
}

/// The counters themselves, one set per group.
#[derive(Debug, Default)]
pub(crate) struct LongLivedStats {
    opened: AtomicU64,
    open: AtomicU64,
    ended: [AtomicU64; 3],
    durations: [AtomicU64; SLOTS],
    duration_sum_ms: AtomicU64,
}

impl LongLivedStats {
    pub(crate) fn open(&self) {
        self.opened.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }

    fn end(&self, how: LongLivedEnd, duration: Option<Duration>) {
        self.open.fetch_sub(1, Relaxed);
        self.ended[how.index()].fetch_add(1, Relaxed);
        if let Some(d) = duration {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            let slot = LONG_LIVED_BOUNDS
                .iter()
                .position(|b| secs <= *b)
                .unwrap_or(SLOTS - 1);
            self.durations[slot].fetch_add(1, Relaxed);
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            self.duration_sum_ms.fetch_add(ms, Relaxed);
        }
    }

    pub(crate) fn counts(&self) -> LongLivedCounts {
        let load = |a: &[AtomicU64]| -> Vec<u64> { a.iter().map(|c| c.load(Relaxed)).collect() };
        let mut out = LongLivedCounts {
            opened: self.opened.load(Relaxed),
            open: self.open.load(Relaxed),
            duration_sum_ms: self.duration_sum_ms.load(Relaxed),
            ..LongLivedCounts::default()
        };
        out.ended.copy_from_slice(&load(&self.ended));
        out.durations.copy_from_slice(&load(&self.durations));
        out
    }

    /// A copy with the same counts (the frozen and thawed copies of a group
    /// keep them).
    pub(crate) fn copy(&self) -> LongLivedStats {
        let c = self.counts();
        LongLivedStats {
            opened: AtomicU64::new(c.opened),
            open: AtomicU64::new(c.open),
            ended: c.ended.map(AtomicU64::new),
            durations: c.durations.map(AtomicU64::new),
            duration_sum_ms: AtomicU64::new(c.duration_sum_ms),
        }
    }
}

/// One open long-lived connection, counted open in its group until
/// [`end`](LongLived::end)ed or dropped. Dropped without `end` (its task
/// cancelled: the proxy itself stopped), it counts as
/// [`LongLivedEnd::Stopped`], with no duration.
#[must_use = "the connection counts as open only while the guard lives"]
#[derive(Debug)]
pub struct LongLived {
    group: Arc<crate::GroupStats>,
    done: bool,
}

impl LongLived {
    pub(crate) fn new(group: Arc<crate::GroupStats>) -> LongLived {
        group.long_lived_stats().open();
        LongLived { group, done: false }
    }

    /// Records how the connection ended and how long it lived (from its
    /// response head to its end).
    pub fn end(mut self, how: LongLivedEnd, duration: Duration) {
        self.done = true;
        self.group.long_lived_stats().end(how, Some(duration));
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        if !self.done {
            self.group
                .long_lived_stats()
                .end(LongLivedEnd::Stopped, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_whole_seconds_rounded_up() {
        let s = LongLivedStats::default();
        for ms in [0, 1000, 1001, 3_600_000, 99_999_999] {
            s.open();
            s.end(LongLivedEnd::Normal, Some(Duration::from_millis(ms)));
        }
        let c = s.counts();
        assert_eq!(c.durations, [2, 1, 0, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(c.opened, 5);
        assert_eq!(c.open, 0);
        assert_eq!(c.ended(LongLivedEnd::Normal), 5);
        assert_eq!(c.duration_sum_ms, 2001 + 3_600_000 + 99_999_999);
    }
}
