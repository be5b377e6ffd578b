//! Rolling windows: rings of time slots, each slot a `Tally` plus latency
//! buckets stamped with the period (epoch) it holds, recycled lazily by the
//! `now` of the records that land on it; and `WindowStats`, what a reader
//! gets for one window.
//!
//! A group has two rings: 10 slots of 1 s (the 10 s window) and 30 slots of
//! 10 s (the 1 min window reads the newest 6, the 5 min window all 30). A
//! window at `now` holds the slot containing `now` and the slots before it,
//! so it covers `[start, now]` with `start` on a slot edge: between 9 s and
//! 10 s of history for `S10`, 50-60 s for `M1`, 290-300 s for `M5`. Nothing
//! older than the window's length is ever included.
//!
//! Concurrency guarantee (records use relaxed atomics; no lock):
//! - A slot is recycled by the first record whose period is newer than the
//!   slot's stamp: it swaps the stamp to a "recycling" mark, zeroes the slot,
//!   adds itself and publishes the new stamp. Exactly one thread recycles a
//!   slot for a period; records for the same slot arriving meanwhile wait
//!   for it (a bounded spin then `yield_now`, giving up on the window, never
//!   on the totals, after ~10 000 yields), then count normally. So with
//!   callers whose `now`s are within one ring span (10 s for the fine ring,
//!   5 min for the coarse one) of each other, no record is lost or counted
//!   twice, and window counts are exact.
//! - A record whose `now` is older than what its slot now holds (time went
//!   backwards by more than the ring's span, or a caller stalled that long
//!   between reading the clock and recording) is left out of the windows;
//!   it still counts in the totals. Within the span, late records land in
//!   their own (older) slot.
//! - The one remaining race needs two callers whose `now`s are a full ring
//!   span apart touching the same slot at the same instant: a record that
//!   read the old stamp just before the recycle may then be zeroed (lost
//!   from the window) or land in the new period (counted once, in the wrong
//!   period). Never counted twice, never a panic.
//! - Readers never write: a slot whose stamp is outside the window (stale,
//!   or newer than the reader's `now`) counts as empty, and a slot recycled
//!   while being read is dropped from that read (seqlock-style check).
//!
//! `WindowSnapshot` is `WindowStats` in a serializable form (the latency
//! histogram as a sparse list of `(bucket index, count)`), for readers in
//! another process: it converts back to the same `WindowStats`, losslessly.
//! It is built only on the read side.
//!
//! Must not allocate, lock or read a clock on the record path.

use crate::counts::{Counts, Tally};
use crate::histogram::{BUCKETS, LatencyHistogram};
use crate::outcome::Record;
use hatoba_core::Millis;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

/// A rolling window analysis can ask for. On the wire (serde) it is its
/// [`as_str`](Window::as_str) name, `"10s"`, `"1m"` or `"5m"`; the variant
/// names `"S10"`, `"M1"`, `"M5"` are accepted too.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Window {
    /// The last 10 seconds, in 1 s slots.
    #[serde(rename = "10s", alias = "S10")]
    S10,
    /// The last minute, in 10 s slots.
    #[serde(rename = "1m", alias = "M1")]
    M1,
    /// The last 5 minutes, in 10 s slots.
    #[serde(rename = "5m", alias = "M5")]
    M5,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Window::S10, Window::M1, Window::M5];

    /// `"10s"`, `"1m"` or `"5m"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::S10 => "10s",
            Window::M1 => "1m",
            Window::M5 => "5m",
        }
    }

    /// The window's nominal length (its reach is one slot less, plus the
    /// part of the current slot up to `now`).
    pub fn length(self) -> Duration {
        match self {
            Window::S10 => Duration::from_secs(10),
            Window::M1 => Duration::from_secs(60),
            Window::M5 => Duration::from_secs(300),
        }
    }

    /// The slot length of the ring this window reads.
    pub fn slot(self) -> Duration {
        match self {
            Window::S10 => Duration::from_secs(1),
            Window::M1 | Window::M5 => Duration::from_secs(10),
        }
    }

    /// How many slots of its ring the window reads.
    pub(crate) fn slots(self) -> u64 {
        match self {
            Window::S10 => 10,
            Window::M1 => 6,
            Window::M5 => 30,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One window of one group (or one version across roles) as a reader sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowStats {
    /// Which window.
    pub window: Window,
    /// The first millisecond covered: the start of the oldest slot read.
    pub start: Millis,
    /// The last millisecond covered: the reader's `now`.
    pub end: Millis,
    /// What the requests in `[start, end]` added up to.
    pub counts: Counts,
}

impl WindowStats {
    pub(crate) fn empty(window: Window, now: Millis) -> WindowStats {
        let slot_ms = window.slot().as_millis() as u64;
        let first_epoch = (now.0 / slot_ms).saturating_sub(window.slots() - 1);
        WindowStats {
            window,
            start: Millis(first_epoch.saturating_mul(slot_ms)),
            end: now,
            counts: Counts::default(),
        }
    }

    /// Requests in the window.
    pub fn requests(&self) -> u64 {
        self.counts.requests
    }

    /// See [`Counts::success_rate`].
    pub fn success_rate(&self) -> Option<f64> {
        self.counts.success_rate()
    }

    /// See [`Counts::quantile`].
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.counts.quantile(q)
    }

    /// The time covered: from `start` to the end of the millisecond `end`.
    pub fn span(&self) -> Duration {
        Duration::from_millis(self.end.0.saturating_add(1).saturating_sub(self.start.0))
    }

    /// Requests per second over [`span`](Self::span). Early in a group's
    /// life (less history than the window) this underestimates.
    pub fn rate_per_sec(&self) -> f64 {
        let secs = self.span().as_secs_f64();
        if secs > 0.0 {
            self.counts.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// Adds another window's counts (same window and `now`, e.g. the same
    /// version under another role).
    pub fn merge(&mut self, other: &WindowStats) {
        self.counts.merge(&other.counts);
    }
}

/// [`WindowStats`] as plain serializable data, for a reader in another
/// process (the controller asking the data plane). Every counter is kept;
/// the latency histogram is sparse: only non-empty buckets, as
/// `(bucket index, count)` in the fixed layout ([`crate::Bucket::at`]).
///
/// `WindowStats` → `WindowSnapshot` → `WindowStats` gives back an equal
/// value (same requests, success rate, quantiles, rate), JSON in between
/// included.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowSnapshot {
    /// Which window.
    pub window: Window,
    /// [`WindowStats::start`], in ms since the Unix epoch.
    pub start_ms: u64,
    /// [`WindowStats::end`], in ms since the Unix epoch.
    pub end_ms: u64,
    /// [`Counts::requests`].
    pub requests: u64,
    /// [`Counts::by_class`]: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u64; 5],
    /// [`Counts::upstream_failures`].
    pub upstream_failures: u64,
    /// [`Counts::downstream_failures`].
    pub downstream_failures: u64,
    /// [`Counts::internal_failures`].
    pub internal_failures: u64,
    /// [`Counts::against`].
    pub against: u64,
    /// The sum of the judged latencies, in microseconds.
    pub latency_sum_micros: u64,
    /// The non-empty latency buckets, `(index, count)`, by increasing index.
    pub latency_buckets: Vec<(u32, u64)>,
}

/// A [`WindowSnapshot`] that does not fit this build's histogram layout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A bucket index past the layout's end.
    #[error("latency bucket {index} does not exist (the layout has {BUCKETS} buckets)")]
    Bucket {
        /// The index found.
        index: u32,
    },
}

impl From<&WindowStats> for WindowSnapshot {
    fn from(stats: &WindowStats) -> WindowSnapshot {
        let c = &stats.counts;
        WindowSnapshot {
            window: stats.window,
            start_ms: stats.start.0,
            end_ms: stats.end.0,
            requests: c.requests,
            by_class: c.by_class,
            upstream_failures: c.upstream_failures,
            downstream_failures: c.downstream_failures,
            internal_failures: c.internal_failures,
            against: c.against,
            latency_sum_micros: u64::try_from(c.latency.sum().as_micros()).unwrap_or(u64::MAX),
            latency_buckets: c
                .latency
                .counts()
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (u32::try_from(i).unwrap_or(u32::MAX), *n))
                .collect(),
        }
    }
}

impl From<WindowStats> for WindowSnapshot {
    fn from(stats: WindowStats) -> WindowSnapshot {
        WindowSnapshot::from(&stats)
    }
}

impl WindowSnapshot {
    /// Back to the [`WindowStats`] it was taken from. A bucket listed twice
    /// is summed; an index outside the layout is an error.
    pub fn to_stats(&self) -> Result<WindowStats, SnapshotError> {
        let mut latency = LatencyHistogram::new();
        {
            let counts = latency.counts_mut();
            for (index, n) in &self.latency_buckets {
                let slot = usize::try_from(*index)
                    .ok()
                    .and_then(|i| counts.get_mut(i))
                    .ok_or(SnapshotError::Bucket { index: *index })?;
                *slot = slot.saturating_add(*n);
            }
        }
        latency.add_sum_micros(self.latency_sum_micros);
        Ok(WindowStats {
            window: self.window,
            start: Millis(self.start_ms),
            end: Millis(self.end_ms),
            counts: Counts {
                requests: self.requests,
                by_class: self.by_class,
                upstream_failures: self.upstream_failures,
                downstream_failures: self.downstream_failures,
                internal_failures: self.internal_failures,
                against: self.against,
                latency,
            },
        })
    }
}

impl TryFrom<&WindowSnapshot> for WindowStats {
    type Error = SnapshotError;

    fn try_from(snapshot: &WindowSnapshot) -> Result<WindowStats, SnapshotError> {
        snapshot.to_stats()
    }
}

/// A stamp no period can have: the slot is being recycled.
const RECYCLING: u64 = u64::MAX;
/// Spins before yielding, then yields before giving up, while waiting for a
/// concurrent recycle of the same slot.
const SPINS: u32 = 64;
const MAX_WAITS: u32 = SPINS + 10_000;

struct Slot {
    /// The period (`now / slot_ms`) whose records the slot holds.
    stamp: AtomicU64,
    tally: Tally,
    /// Per-slot counts fit in 32 bits: 4 billion requests in one bucket in
    /// one 10 s slot would be 400 million requests a second.
    latency: Box<[AtomicU32]>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            stamp: AtomicU64::new(0),
            tally: Tally::default(),
            latency: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn add(&self, rec: &Record) {
        self.tally.add(rec);
        if let Some((bucket, _)) = rec.latency {
            self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn clear(&self) {
        self.tally.clear();
        for b in self.latency.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }

    fn read_into(&self, out: &mut Counts) {
        self.tally.add_to(out);
        for (o, b) in out.latency.counts_mut().iter_mut().zip(self.latency.iter()) {
            *o = o.saturating_add(u64::from(b.load(Ordering::Relaxed)));
        }
    }
}

/// A ring of slots of `slot_ms` each.
pub(crate) struct Ring {
    slot_ms: u64,
    slots: Box<[Slot]>,
}

impl Ring {
    pub(crate) fn new(slot: Duration, len: usize) -> Ring {
        Ring {
            slot_ms: (slot.as_millis() as u64).max(1),
            slots: (0..len.max(1)).map(|_| Slot::new()).collect(),
        }
    }

    /// A ring with no slots: records are dropped and every window reads
    /// empty (a frozen group's).
    pub(crate) fn none(slot: Duration) -> Ring {
        Ring {
            slot_ms: (slot.as_millis() as u64).max(1),
            slots: Box::new([]),
        }
    }

    /// Bytes this ring holds (slots and their buckets).
    pub(crate) fn memory_bytes(len: usize) -> usize {
        len * (size_of::<Slot>() + BUCKETS * size_of::<AtomicU32>())
    }

    pub(crate) fn record(&self, now: Millis, rec: &Record) {
        let epoch = now.0 / self.slot_ms;
        let Some(len) = std::num::NonZeroU64::new(self.slots.len() as u64) else {
            return;
        };
        let slot = &self.slots[(epoch % len) as usize];
        let mut waits = 0u32;
        loop {
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == epoch {
                slot.add(rec);
                return;
            }
            if stamp == RECYCLING {
                if waits >= MAX_WAITS {
                    return;
                }
                if waits < SPINS {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                waits += 1;
                continue;
            }
            if stamp > epoch {
                // The slot already holds a newer period: too old for the ring.
                return;
            }
            if slot
                .stamp
                .compare_exchange_weak(stamp, RECYCLING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // Readers that see the zeroes below must also see the mark.
                fence(Ordering::Release);
                slot.clear();
                slot.add(rec);
                slot.stamp.store(epoch, Ordering::Release);
                return;
            }
        }
    }

    /// Adds the newest `wanted` periods up to `now` into `out`, using
    /// `scratch` (any content) to read each slot before checking it.
    pub(crate) fn read(&self, now: Millis, wanted: u64, out: &mut Counts, scratch: &mut Counts) {
        if self.slots.is_empty() {
            return;
        }
        let newest = now.0 / self.slot_ms;
        let wanted = wanted.clamp(1, self.slots.len() as u64);
        let oldest = newest.saturating_sub(wanted - 1);
        for slot in self.slots.iter() {
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == RECYCLING || stamp < oldest || stamp > newest {
                continue;
            }
            scratch.reset();
            slot.read_into(scratch);
            fence(Ordering::Acquire);
            if slot.stamp.load(Ordering::Relaxed) != stamp {
                continue; // recycled while read: it now holds a newer period
            }
            out.merge(scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;

    fn ok() -> Record {
        Record::new(Outcome::Status(200), Duration::from_millis(3))
    }

    fn count(ring: &Ring, now: u64, wanted: u64) -> u64 {
        let mut out = Counts::default();
        let mut scratch = Counts::default();
        ring.read(Millis(now), wanted, &mut out, &mut scratch);
        out.requests
    }

    #[test]
    fn slots_recycle_and_stale_slots_read_as_empty() {
        let ring = Ring::new(Duration::from_secs(1), 10);
        ring.record(Millis(500), &ok());
        ring.record(Millis(1_500), &ok());
        assert_eq!(count(&ring, 1_999, 10), 2);
        assert_eq!(count(&ring, 1_999, 1), 1);
        assert_eq!(count(&ring, 9_999, 10), 2);
        assert_eq!(count(&ring, 10_000, 10), 1);
        assert_eq!(count(&ring, 11_000, 10), 0);
        // A record a ring later recycles slot 0.
        ring.record(Millis(10_100), &ok());
        assert_eq!(count(&ring, 10_100, 10), 2);
        // A reader in the past sees neither the recycled slot nor the future.
        assert_eq!(count(&ring, 999, 10), 0);
        assert_eq!(count(&ring, 1_000, 10), 1);
        // A record older than its slot's period is left out.
        ring.record(Millis(200), &ok());
        assert_eq!(count(&ring, 10_100, 10), 2);
        assert_eq!(count(&ring, 999, 10), 0);
    }

    #[test]
    fn a_snapshot_round_trips_losslessly_through_json() {
        use crate::{Failure, Recorder, Role};
        let recorder = Recorder::new();
        let g = recorder.group("web", Role::Stable, "v1");
        let outcomes = [
            (Outcome::Status(200), 3),
            (Outcome::Status(200), 250),
            (Outcome::Status(503), 1_700),
            (Outcome::Failed(Failure::Upstream), 40_000),
            (Outcome::Failed(Failure::Downstream), 9),
            (Outcome::FailedWithStatus(Failure::Internal, 503), 1),
            (Outcome::Status(404), 120_000),
        ];
        for (i, (outcome, ms)) in outcomes.into_iter().enumerate() {
            g.record(
                Millis(20_000 + i as u64),
                outcome,
                Duration::from_millis(ms),
            );
        }
        let canary = recorder.group("web", Role::Canary, "v1");
        canary.record(
            Millis(20_100),
            Outcome::Status(200),
            Duration::from_micros(1),
        );
        for window in Window::ALL {
            let stats = recorder
                .version_window("web", "v1", window, Millis(21_000))
                .unwrap();
            assert_eq!(stats.requests(), 8);
            let snapshot = WindowSnapshot::from(&stats);
            assert!(snapshot.latency_buckets.len() < 10);
            let json = serde_json::to_string(&snapshot).unwrap();
            let back: WindowSnapshot = serde_json::from_str(&json).unwrap();
            let back = back.to_stats().unwrap();
            assert_eq!(back, stats);
            assert_eq!(back.requests(), stats.requests());
            assert_eq!(back.success_rate(), stats.success_rate());
            assert_eq!(back.rate_per_sec(), stats.rate_per_sec());
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                assert_eq!(back.quantile(q), stats.quantile(q));
            }
        }
        let empty = WindowStats::empty(Window::M1, Millis(5));
        assert_eq!(WindowSnapshot::from(&empty).to_stats().unwrap(), empty);
    }

    #[test]
    fn a_snapshot_from_another_layout_is_refused() {
        let mut snapshot = WindowSnapshot::from(&WindowStats::empty(Window::S10, Millis(0)));
        snapshot.latency_buckets.push((BUCKETS as u32, 1));
        assert_eq!(
            snapshot.to_stats(),
            Err(SnapshotError::Bucket {
                index: BUCKETS as u32
            })
        );
    }

    #[test]
    fn windows_and_roles_have_short_wire_names() {
        use crate::Role;
        assert_eq!(serde_json::to_string(&Window::S10).unwrap(), "\"10s\"");
        assert_eq!(serde_json::to_string(&Role::Canary).unwrap(), "\"canary\"");
        for w in Window::ALL {
            let name = format!("\"{}\"", w.as_str());
            assert_eq!(serde_json::from_str::<Window>(&name).unwrap(), w);
            let variant = format!("\"{w:?}\"");
            assert_eq!(serde_json::from_str::<Window>(&variant).unwrap(), w);
        }
    }

    #[test]
    fn a_reader_before_a_slot_edge_gets_a_clamped_start() {
        let w = WindowStats::empty(Window::M5, Millis(15_000));
        assert_eq!(w.start, Millis(0));
        let w = WindowStats::empty(Window::S10, Millis(12_345));
        assert_eq!(w.start, Millis(3_000));
        assert_eq!(w.span(), Duration::from_millis(9_346));
    }
}
