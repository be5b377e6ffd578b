//! The latency histogram's fixed bucket layout, and `LatencyHistogram`, a
//! plain (non-atomic) copy of one that analysis reads: count, sum, quantiles,
//! buckets for a statistical judge, and the Prometheus `le` buckets.
//!
//! Layout, in microseconds; bucket `i` holds latencies in `(lower, upper]`
//! (bucket 0 also holds 0):
//!
//! | range            | width    | buckets | quantile error (midpoint) |
//! |------------------|----------|---------|---------------------------|
//! | 0 – 10 ms        | 100 µs   | 100     | ≤ 50 µs                   |
//! | 10 ms – 1 s      | 1 ms     | 990     | ≤ 0.5 ms                  |
//! | 1 s – 2.5 s      | 25 ms    | 60      | ≤ 1.25 %                  |
//! | 2.5 s – 5 s      | 50 ms    | 50      | ≤ 1 %                     |
//! | 5 s – 10 s       | 100 ms   | 50      | ≤ 1 %                     |
//! | 10 s – 25 s      | 250 ms   | 60      | ≤ 1.25 %                  |
//! | 25 s – 50 s      | 500 ms   | 50      | ≤ 1 %                     |
//! | 50 s – 100 s     | 1 s      | 50      | ≤ 1 %                     |
//! | above 100 s      | —        | 1       | reported as 100 s         |
//!
//! Every Prometheus default bucket bound (5 ms ... 10 s) is a bucket edge, so
//! the `le` counts derived from this layout are exact. The layout is fixed:
//! the same index means the same range everywhere (totals, windows, merges).
//!
//! Must not allocate or branch heavily in `bucket_index`: it runs per request.

use std::time::Duration;

/// `(lower edge µs, width µs, number of buckets)` of each linear segment.
const SEGMENTS: [(u64, u64, usize); 8] = [
    (0, 100, 100),
    (10_000, 1_000, 990),
    (1_000_000, 25_000, 60),
    (2_500_000, 50_000, 50),
    (5_000_000, 100_000, 50),
    (10_000_000, 250_000, 60),
    (25_000_000, 500_000, 50),
    (50_000_000, 1_000_000, 50),
];

/// Latencies above this many microseconds fall in the overflow bucket.
const OVERFLOW_MICROS: u64 = 100_000_000;

const fn bucket_total() -> usize {
    let mut n = 1; // the overflow bucket
    let mut i = 0;
    while i < SEGMENTS.len() {
        n += SEGMENTS[i].2;
        i += 1;
    }
    n
}

/// Number of buckets in the layout, the overflow bucket included.
pub const BUCKETS: usize = bucket_total();

/// Index of the first bucket of each segment.
const SEGMENT_FIRST: [usize; 8] = {
    let mut out = [0; 8];
    let mut i = 1;
    while i < SEGMENTS.len() {
        out[i] = out[i - 1] + SEGMENTS[i - 1].2;
        i += 1;
    }
    out
};

/// The Prometheus default bucket bounds, in microseconds, with their `le`.
pub(crate) const PROMETHEUS_BOUNDS: [(u64, &str); 11] = [
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
];

/// A latency in whole microseconds, rounded up so that a latency just above
/// a bucket edge never lands in the bucket below; saturates.
pub(crate) fn micros_ceil(d: Duration) -> u64 {
    let nanos = d.as_nanos();
    u64::try_from(nanos.div_ceil(1_000)).unwrap_or(u64::MAX)
}

/// The bucket holding `micros`.
pub(crate) fn bucket_index(micros: u64) -> usize {
    // Buckets are (lower, upper]: shift by one so the search is on [lower, upper).
    let u = micros.saturating_sub(1);
    if u < 10_000 {
        return (u / 100) as usize;
    }
    if u < 1_000_000 {
        return 100 + ((u - 10_000) / 1_000) as usize;
    }
    if u >= OVERFLOW_MICROS {
        return BUCKETS - 1;
    }
    let mut seg = 2;
    while seg + 1 < SEGMENTS.len() && u >= SEGMENTS[seg + 1].0 {
        seg += 1;
    }
    let (lower, width, _) = SEGMENTS[seg];
    SEGMENT_FIRST[seg] + ((u - lower) / width) as usize
}

/// `(lower, upper)` edges of bucket `index` in microseconds; `upper` is
/// `None` for the overflow bucket.
fn edges_micros(index: usize) -> (u64, Option<u64>) {
    if index >= BUCKETS - 1 {
        return (OVERFLOW_MICROS, None);
    }
    let mut seg = SEGMENTS.len() - 1;
    while SEGMENT_FIRST[seg] > index {
        seg -= 1;
    }
    let (lower, width, _) = SEGMENTS[seg];
    let lo = lower + (index - SEGMENT_FIRST[seg]) as u64 * width;
    (lo, Some(lo + width))
}

/// One bucket of the layout: latencies in `(lower, upper]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Exclusive lower edge (bucket 0 also holds a latency of zero).
    pub lower: Duration,
    /// Inclusive upper edge; `None` for the overflow bucket above 100 s.
    pub upper: Option<Duration>,
}

impl Bucket {
    /// The bucket at `index` (`0..BUCKETS`); indices past the end give the
    /// overflow bucket.
    pub fn at(index: usize) -> Bucket {
        let (lo, hi) = edges_micros(index);
        Bucket {
            lower: Duration::from_micros(lo),
            upper: hi.map(Duration::from_micros),
        }
    }

    /// The value that stands for the bucket's samples: its midpoint, or its
    /// lower edge for the overflow bucket.
    pub fn representative(self) -> Duration {
        match self.upper {
            Some(upper) => (self.lower + upper) / 2,
            None => self.lower,
        }
    }
}

/// A snapshot of a latency histogram in the fixed layout: counts per
/// bucket and the sum of the latencies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    sum_micros: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            sum_micros: 0,
        }
    }

    pub(crate) fn counts_mut(&mut self) -> &mut [u64] {
        &mut self.counts
    }

    pub(crate) fn clear(&mut self) {
        self.counts.fill(0);
        self.sum_micros = 0;
    }

    pub(crate) fn add_sum_micros(&mut self, micros: u64) {
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Adds one latency (for building a histogram outside the recorder, e.g.
    /// from test samples).
    pub fn observe(&mut self, latency: Duration) {
        let micros = micros_ceil(latency);
        self.counts[bucket_index(micros)] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Adds every count of `other` to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    /// Number of latencies held.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// Sum of the latencies held (each rounded up to a microsecond).
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros)
    }

    /// Mean latency; `None` when empty.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_micros(self.sum_micros / n))
    }

    /// The raw counts, one per bucket of the layout (`Bucket::at(i)`).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The non-empty buckets with their counts, from fastest to slowest:
    /// what a rank test (Mann-Whitney) reads, with each bucket standing for
    /// `count` ties at `Bucket::representative`.
    pub fn buckets(&self) -> impl Iterator<Item = (Bucket, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (Bucket::at(i), *n))
    }

    /// The `q` quantile (`0.0..=1.0`, clamped) by nearest rank: the
    /// representative of the bucket holding the `ceil(q * n)`-th smallest
    /// latency (at least the first). `None` when empty or `q` is NaN.
    ///
    /// The true nearest-rank value lies in the same bucket, so the error is
    /// at most half a bucket: 50 µs below 10 ms, 0.5 ms below 1 s, 1.25 %
    /// up to 100 s; above 100 s the answer is 100 s (a lower bound).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if q.is_nan() {
            return None;
        }
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = nearest_rank(q, n);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                return Some(Bucket::at(i).representative());
            }
        }
        Some(Bucket::at(BUCKETS - 1).representative())
    }

    /// How many latencies are at most `bound`. Exact when `bound` is a
    /// bucket edge (every Prometheus default bound is); otherwise counts
    /// only the buckets whose upper edge is at most `bound`.
    pub fn count_at_most(&self, bound: Duration) -> u64 {
        let bound = micros_floor(bound);
        let mut total = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            match edges_micros(i).1 {
                Some(upper) if upper <= bound => total = total.saturating_add(*c),
                _ => break,
            }
        }
        total
    }
}

/// The 1-based nearest rank of quantile `q` among `n` values:
/// `ceil(q * n)`, clamped to `1..=n`.
pub fn nearest_rank(q: f64, n: u64) -> u64 {
    let q = q.clamp(0.0, 1.0);
    let r = (q * n as f64).ceil();
    (r as u64).clamp(1, n.max(1))
}

fn micros_floor(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_contiguous() {
        assert_eq!(BUCKETS, 1411);
        let mut expected_lower = 0;
        for i in 0..BUCKETS - 1 {
            let (lo, hi) = edges_micros(i);
            assert_eq!(lo, expected_lower, "bucket {i}");
            let hi = hi.unwrap_or(0);
            assert!(hi > lo);
            // Both edges map as (lower, upper].
            assert_eq!(bucket_index(hi), i, "upper edge of {i}");
            assert_eq!(bucket_index(lo + 1), i, "just above lower edge of {i}");
            expected_lower = hi;
        }
        assert_eq!(expected_lower, OVERFLOW_MICROS);
        assert_eq!(edges_micros(BUCKETS - 1), (OVERFLOW_MICROS, None));
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(OVERFLOW_MICROS), BUCKETS - 2);
        assert_eq!(bucket_index(OVERFLOW_MICROS + 1), BUCKETS - 1);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn prometheus_bounds_are_bucket_edges() {
        for (bound, _) in PROMETHEUS_BOUNDS {
            let i = bucket_index(bound);
            assert_eq!(edges_micros(i).1, Some(bound));
        }
    }

    #[test]
    fn relative_error_is_bounded_above_one_second() {
        for i in 0..BUCKETS - 1 {
            let (lo, hi) = edges_micros(i);
            let hi = hi.unwrap_or(0);
            if lo >= 1_000_000 {
                let half_width = (hi - lo) as f64 / 2.0;
                assert!(half_width / lo as f64 <= 0.0125 + 1e-12, "bucket {i}");
            }
        }
    }

    #[test]
    fn micros_round_up() {
        assert_eq!(micros_ceil(Duration::from_nanos(0)), 0);
        assert_eq!(micros_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(micros_ceil(Duration::from_micros(5_000)), 5_000);
        assert_eq!(micros_ceil(Duration::from_nanos(5_000_001)), 5_001);
        assert_eq!(micros_ceil(Duration::MAX), u64::MAX);
    }

    #[test]
    fn nearest_rank_edges() {
        assert_eq!(nearest_rank(0.0, 10), 1);
        assert_eq!(nearest_rank(0.5, 10), 5);
        assert_eq!(nearest_rank(0.51, 10), 6);
        assert_eq!(nearest_rank(1.0, 10), 10);
        assert_eq!(nearest_rank(7.0, 10), 10);
        assert_eq!(nearest_rank(-1.0, 10), 1);
        assert_eq!(nearest_rank(0.5, 1), 1);
    }
}
