//! Request metrics for application paths, kept in atomics so recording never
//! takes a lock: a counter per status code and a latency histogram with fixed
//! buckets, plus a gauge of requests in flight. Renders the Prometheus text exposition format.
//!
//! Must not record `/health`, `/ready` or `/metrics` (the caller decides).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in nanoseconds, with their labels.
const BUCKETS: [(u64, &str); 11] = [
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// Status codes 100 to 599 each get a counter.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 500;

/// Counters for application requests.
pub(crate) struct Metrics {
    by_status: [AtomicU64; STATUSES],
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    in_flight: AtomicU64,
}

/// Counts one request in flight until dropped (answered or abandoned).
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            by_status: [const { AtomicU64::new(0) }; STATUSES],
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Marks a request in flight until the guard is dropped.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(&self.in_flight)
    }

    /// Records one answered request.
    pub(crate) fn record(&self, status: u16, took: Duration) {
        if let Some(counter) = status
            .checked_sub(FIRST_STATUS)
            .and_then(|i| self.by_status.get(usize::from(i)))
        {
            counter.fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS
            .iter()
            .position(|&(bound, _)| nanos <= bound)
            .unwrap_or(BUCKETS.len());
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str(
            "# HELP http_requests_total Application requests answered, by status code \
             (/health, /ready and /metrics are not counted).\n\
             # TYPE http_requests_total counter\n",
        );
        for (status, counter) in (FIRST_STATUS..).zip(&self.by_status) {
            let n = counter.load(Relaxed);
            if n > 0 {
                let _ = writeln!(out, "http_requests_total{{status=\"{status}\"}} {n}");
            }
        }
        out.push_str(
            "# HELP http_requests_in_flight Application requests being answered.\n\
             # TYPE http_requests_in_flight gauge\n",
        );
        let _ = writeln!(
            out,
            "http_requests_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        out.push_str(
            "# HELP http_request_duration_seconds Time to answer an application request, \
             added latency included.\n\
             # TYPE http_request_duration_seconds histogram\n",
        );
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf", |&(_, label)| label);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        #[allow(clippy::cast_precision_loss)] // a sum of seconds needs no more than f64 holds
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "http_request_duration_seconds_count {cumulative}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::new();
        m.record(200, Duration::from_millis(1));
        m.record(200, Duration::from_millis(30));
        m.record(500, Duration::from_secs(20));
        let text = m.render();
        assert!(
            text.contains("http_requests_total{status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("http_requests_total{status=\"500\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("status=\"404\""), "{text}");
        assert!(text.contains("http_requests_in_flight 0\n"), "{text}");
        let guard = m.start();
        assert!(m.render().contains("http_requests_in_flight 1\n"));
        drop(guard);
        assert!(text.contains("_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.025\"} 1\n"), "{text}");
        assert!(text.contains("_bucket{le=\"0.05\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(
            text.contains("http_request_duration_seconds_sum 20.031\n"),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_count 3\n"),
            "{text}"
        );
    }

    #[test]
    fn ignores_impossible_statuses() {
        let m = Metrics::new();
        m.record(42, Duration::ZERO);
        m.record(999, Duration::ZERO);
        assert!(!m.render().contains("http_requests_total{"));
    }
}
