//! Quantiles against the exact nearest-rank value of the recorded samples:
//! within half a bucket (≤ 50 µs below 10 ms, ≤ 0.5 ms below 1 s, ≤ 1.25 %
//! up to 100 s), through both the totals and a window.

use super::{Rng, at, ms};
use hatoba_metrics::{LatencyHistogram, Outcome, Recorder, Role, Window, nearest_rank};
use std::time::Duration;

const QS: [f64; 9] = [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];

/// The exact nearest-rank quantile of `samples`.
fn exact(sorted: &[Duration], q: f64) -> Duration {
    sorted[(nearest_rank(q, sorted.len() as u64) - 1) as usize]
}

/// The error bound the layout promises for a true value `v`.
fn bound(v: Duration) -> Duration {
    if v <= ms(10) {
        Duration::from_micros(50)
    } else if v <= ms(1_000) {
        Duration::from_micros(500)
    } else if v <= Duration::from_secs(100) {
        v.mul_f64(0.0125)
    } else {
        Duration::MAX
    }
}

/// Records `samples` into a fresh group at one instant and checks every
/// quantile in `QS` from the totals and from each window; returns the
/// largest error seen.
fn check(samples: &[Duration]) -> Duration {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    for s in samples {
        g.record(at(0), Outcome::Status(200), *s);
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let mut worst = Duration::ZERO;
    let mut hists = vec![g.totals().latency];
    for w in Window::ALL {
        hists.push(g.window(w, at(0)).counts.latency);
    }
    for h in &hists {
        assert_eq!(h.count(), samples.len() as u64);
        for q in QS {
            let want = exact(&sorted, q);
            let got = h.quantile(q).unwrap();
            let err = got.abs_diff(want);
            assert!(
                err <= bound(want),
                "q={q}: got {got:?}, exact {want:?}, error {err:?}"
            );
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn uniform_whole_milliseconds_1_to_1000() {
    let samples: Vec<Duration> = (1..=1000).map(ms).collect();
    assert!(check(&samples) <= Duration::from_micros(500));
}

#[test]
fn uniform_random_microseconds_below_one_second() {
    let mut rng = Rng(7);
    let samples: Vec<Duration> = (0..50_000)
        .map(|_| Duration::from_nanos(rng.below(1_000_000_000)))
        .collect();
    assert!(check(&samples) <= Duration::from_micros(500));
}

#[test]
fn fast_service_below_ten_milliseconds() {
    let mut rng = Rng(11);
    let samples: Vec<Duration> = (0..20_000)
        .map(|_| Duration::from_nanos(200_000 + rng.below(9_000_000)))
        .collect();
    assert!(check(&samples) <= Duration::from_micros(50));
}

#[test]
fn bimodal_fast_and_slow() {
    let mut rng = Rng(3);
    let samples: Vec<Duration> = (0..10_000)
        .map(|i| {
            if i % 10 == 0 {
                Duration::from_micros(780_000 + rng.below(40_000))
            } else {
                Duration::from_micros(18_000 + rng.below(4_000))
            }
        })
        .collect();
    check(&samples);
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    for s in &samples {
        g.record(at(0), Outcome::Status(200), *s);
    }
    // The p50 is in the fast mode, the p95 in the slow one.
    let t = g.totals();
    assert!(t.quantile(0.5).unwrap() < ms(23));
    assert!(t.quantile(0.95).unwrap() > ms(779));
}

#[test]
fn all_equal_and_single_sample() {
    check(&[ms(250); 1000]);
    check(&[Duration::from_micros(250_500); 1000]);
    check(&[ms(37)]);
    check(&[Duration::ZERO]);
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    g.record(at(0), Outcome::Status(200), ms(37));
    let t = g.totals();
    for q in QS {
        assert_eq!(t.quantile(q), Some(Duration::from_micros(36_500)));
    }
}

#[test]
fn beyond_the_linear_range() {
    let samples: Vec<Duration> = [1_001, 1_500, 2_499, 2_501, 7_000, 9_999, 45_000, 99_000]
        .into_iter()
        .map(ms)
        .collect();
    check(&samples);
    let mut rng = Rng(5);
    let samples: Vec<Duration> = (0..10_000)
        .map(|_| Duration::from_micros(1_000_000 + rng.below(99_000_000)))
        .collect();
    check(&samples);
    // Above 100 s the answer is 100 s, a lower bound.
    let mut h = LatencyHistogram::new();
    h.observe(Duration::from_secs(500));
    assert_eq!(h.quantile(0.5), Some(Duration::from_secs(100)));
    h.observe(Duration::MAX);
    assert_eq!(h.quantile(1.0), Some(Duration::from_secs(100)));
}

#[test]
fn empty_and_odd_quantiles() {
    let h = LatencyHistogram::new();
    assert_eq!(h.quantile(0.5), None);
    assert_eq!(h.mean(), None);
    let mut h = LatencyHistogram::new();
    h.observe(ms(10));
    assert_eq!(h.quantile(f64::NAN), None);
    assert_eq!(h.quantile(-3.0), h.quantile(0.0));
    assert_eq!(h.quantile(3.0), h.quantile(1.0));
    assert_eq!(h.mean(), Some(ms(10)));
}

#[test]
fn buckets_expose_the_raw_counts() {
    let mut h = LatencyHistogram::new();
    for v in [ms(5), ms(5), Duration::from_nanos(5_000_001), ms(1_200)] {
        h.observe(v);
    }
    let got: Vec<(Duration, Option<Duration>, u64)> =
        h.buckets().map(|(b, n)| (b.lower, b.upper, n)).collect();
    assert_eq!(
        got,
        vec![
            (Duration::from_micros(4_900), Some(ms(5)), 2),
            (ms(5), Some(Duration::from_micros(5_100)), 1),
            (ms(1_175), Some(ms(1_200)), 1),
        ]
    );
    assert_eq!(h.counts().len(), hatoba_metrics::BUCKETS);
    assert_eq!(h.count_at_most(ms(5)), 2);
    assert_eq!(h.count_at_most(ms(1_000)), 3);
    assert_eq!(h.count(), 4);
}
