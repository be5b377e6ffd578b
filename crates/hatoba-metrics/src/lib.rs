//! Hatoba's per-version traffic recorder: what the proxy measures about
//! every request it carries, read in-process by analysis (rolling windows)
//! and scraped by Prometheus (cumulative counters) on the admin listener.
//!
//! One [`Recorder`] per proxy process holds a [`GroupStats`] per (service,
//! [`Role`], version), and inside each the [`InstanceStats`] of the backends
//! serving it. The proxy gets each `Arc` once, when it builds a route table,
//! and on every request calls [`GroupStats::record`] with `now`, the
//! [`Outcome`] and the latency.
//!
//! Rules this crate keeps, and must keep:
//! - **The record path is cheap**: relaxed atomic adds on fixed arrays; no
//!   lock, no allocation, no clock. (The one wait: a record landing on a
//!   window slot that another thread is recycling waits for that recycle,
//!   which happens at most once per slot period and zeroes ~1,400 counters;
//!   see the `window` module.)
//! - **No clock**: every call takes `now` (`hatoba_core::Millis`) from the
//!   caller, so tests drive time by hand.
//! - **Only upstream failures count against a version** ([`Failure`]):
//!   downstream and internal failures are counted, but neither in the
//!   success rate nor in the latency histograms.
//! - **Bounded memory**: about 245 KB per group ([`GroupStats::memory_bytes`]),
//!   fixed at creation; groups live until [`Recorder::remove`],
//!   [`Recorder::retain`] or [`Recorder::prune`] (the data plane prunes
//!   versions out of every route table for the retention: [`retention`]).
//!   A version out of every table for 30 s is frozen before that
//!   ([`Recorder::freeze_unheld`]): its totals stay, sparse, in a few
//!   hundred bytes, and its windows read empty.
//! - No IO, no printing, no async runtime in the recorder. The one
//!   exception is the [`provider`] module: analysis's measurements taken
//!   elsewhere (a Prometheus query, a webhook, a command), async on tokio,
//!   each bounded by a timeout; the recorder never calls it.
//!
//! - **Long-lived connections are measured apart** ([`LongLived`]):
//!   WebSockets and event streams have their own counters (opened, ended
//!   normally, abnormally, or by Hatoba's stop), an open gauge and a coarse
//!   duration histogram; their life never enters the request latency
//!   histograms or the windows, and only an abnormal end counts against a
//!   version.
//!
//! Latency histograms have a fixed layout ([`Bucket`]): 100 µs buckets below
//! 10 ms, 1 ms below 1 s, then ≤ 2.5 %-wide buckets up to 100 s; quantiles
//! are within half a bucket of the true nearest-rank value.

mod counts;
mod group;
mod histogram;
mod long_lived;
mod outcome;
mod prometheus;
pub mod provider;
mod recorder;
pub mod retention;
mod window;

pub use counts::Counts;
pub use group::{GroupStats, InFlight, InstanceCounts, InstanceStats};
pub use histogram::{BUCKETS, Bucket, LatencyHistogram, nearest_rank};
pub use long_lived::{LONG_LIVED_BOUNDS, LongLived, LongLivedCounts, LongLivedEnd};
pub use outcome::{Failure, Outcome, Role};
pub use recorder::Recorder;
pub use window::{SnapshotError, WindowSnapshot};
pub use window::{Window, WindowStats};
