//! Request counters: `Tally`, the atomic form that totals and window slots
//! add to, and `Counts`, the plain snapshot that readers get, with the
//! success-rate and quantile arithmetic.
//!
//! `Tally::add` is on the hot path: relaxed `fetch_add`s only; it must not
//! lock or allocate. Snapshots are not atomic across counters (see
//! `Counts`).

use crate::histogram::LatencyHistogram;
use crate::outcome::Record;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The atomic counters shared by the totals and every window slot (the
/// latency buckets live beside it, in the width each owner needs).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    by_class: [AtomicU64; 5],
    failures: [AtomicU64; 3],
    against: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Tally {
    pub(crate) fn add(&self, rec: &Record) {
        self.by_class[rec.class].fetch_add(1, Relaxed);
        if let Some(f) = rec.failure {
            self.failures[f].fetch_add(1, Relaxed);
        }
        if rec.against {
            self.against.fetch_add(1, Relaxed);
        }
        if let Some((_, micros)) = rec.latency {
            self.latency_sum_micros.fetch_add(micros, Relaxed);
        }
    }

    /// A copy of the counters as they are now.
    pub(crate) fn copy(&self) -> Tally {
        let load = |c: &AtomicU64| AtomicU64::new(c.load(Relaxed));
        Tally {
            by_class: std::array::from_fn(|i| load(&self.by_class[i])),
            failures: std::array::from_fn(|i| load(&self.failures[i])),
            against: load(&self.against),
            latency_sum_micros: load(&self.latency_sum_micros),
        }
    }

    /// Zeroes every counter (a window slot being recycled).
    pub(crate) fn clear(&self) {
        for c in self.by_class.iter().chain(self.failures.iter()) {
            c.store(0, Relaxed);
        }
        self.against.store(0, Relaxed);
        self.latency_sum_micros.store(0, Relaxed);
    }

    /// Adds these counters to `out` (the histogram's counts are added by the
    /// owner of the buckets; the latency sum is added here).
    ///
    /// Reads the subsets (`against`, failures) before the classes they are
    /// part of, so a snapshot taken while requests arrive rarely shows more
    /// of a part than of its whole (relaxed loads promise no order).
    pub(crate) fn add_to(&self, out: &mut Counts) {
        out.against = out.against.saturating_add(self.against.load(Relaxed));
        let f = |i: usize| self.failures[i].load(Relaxed);
        out.upstream_failures = out.upstream_failures.saturating_add(f(0));
        out.downstream_failures = out.downstream_failures.saturating_add(f(1));
        out.internal_failures = out.internal_failures.saturating_add(f(2));
        out.latency
            .add_sum_micros(self.latency_sum_micros.load(Relaxed));
        let mut requests = 0u64;
        for (o, c) in out.by_class.iter_mut().zip(self.by_class.iter()) {
            let n = c.load(Relaxed);
            *o = o.saturating_add(n);
            requests = requests.saturating_add(n);
        }
        out.requests = out.requests.saturating_add(requests);
    }
}

/// What a group's traffic added up to, over a window or since start.
///
/// Taken from atomics one counter at a time while requests keep coming, so
/// under concurrent recording the fields may be a few requests apart (e.g.
/// `latency.count()` a little behind `judged()`); each field alone is exact
/// for some instant during the read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Every request recorded (`by_class` summed).
    pub requests: u64,
    /// Requests by the class of the status counted for them: 1xx, 2xx, 3xx,
    /// 4xx, 5xx (see `Outcome::status`).
    pub by_class: [u64; 5],
    /// Requests that failed because of the instance.
    pub upstream_failures: u64,
    /// Requests that failed because the client went away.
    pub downstream_failures: u64,
    /// Requests that failed inside the proxy.
    pub internal_failures: u64,
    /// Requests that count against the version: upstream failures and
    /// relayed 5xx answers (`Outcome::is_against`).
    pub against: u64,
    /// Latencies of the judged requests (`Outcome::is_judged`).
    pub latency: LatencyHistogram,
}

impl Counts {
    /// Requests that say something about the version: all of them except
    /// downstream and internal failures.
    pub fn judged(&self) -> u64 {
        self.requests
            .saturating_sub(self.downstream_failures)
            .saturating_sub(self.internal_failures)
    }

    /// The share of judged requests that did not count against the version:
    /// `(judged - against) / judged`. Downstream and internal failures count
    /// neither way; upstream failures and relayed 5xx count against. `None`
    /// when nothing was judged.
    pub fn success_rate(&self) -> Option<f64> {
        let judged = self.judged();
        (judged > 0).then(|| judged.saturating_sub(self.against) as f64 / judged as f64)
    }

    /// The `q` latency quantile of the judged requests (see
    /// [`LatencyHistogram::quantile`]).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.latency.quantile(q)
    }

    /// Adds `other` into this one (e.g. one version across roles).
    pub fn merge(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a = a.saturating_add(b);
        }
        self.upstream_failures = self
            .upstream_failures
            .saturating_add(other.upstream_failures);
        self.downstream_failures = self
            .downstream_failures
            .saturating_add(other.downstream_failures);
        self.internal_failures = self
            .internal_failures
            .saturating_add(other.internal_failures);
        self.against = self.against.saturating_add(other.against);
        self.latency.merge(&other.latency);
    }

    pub(crate) fn reset(&mut self) {
        self.requests = 0;
        self.by_class = [0; 5];
        self.upstream_failures = 0;
        self.downstream_failures = 0;
        self.internal_failures = 0;
        self.against = 0;
        self.latency.clear();
    }
}
