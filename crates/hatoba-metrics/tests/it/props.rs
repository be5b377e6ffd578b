//! Property tests over random traffic: with time moving forward, every
//! window equals a model computed from the records (so S10 ≤ M1 ≤ M5 ≤
//! totals); with time jumping anywhere, nothing panics, windows never
//! exceed the totals, and quantiles are monotone in q.

use super::T0;
use hatoba_core::Millis;
use hatoba_metrics::{Counts, Failure, LatencyHistogram, Outcome, Recorder, Role, Window};
use proptest::prelude::*;
use std::time::Duration;

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        8 => prop_oneof![Just(200u16), Just(204), Just(301), Just(404), Just(499), Just(500), Just(502), Just(503)],
        2 => 100u16..600,
        1 => any::<u16>(),
    ]
}

fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![
        Just(Failure::Upstream),
        Just(Failure::Downstream),
        Just(Failure::Internal)
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => status().prop_map(Outcome::Status),
        1 => failure().prop_map(Outcome::Failed),
        1 => (failure(), status()).prop_map(|(f, s)| Outcome::FailedWithStatus(f, s)),
    ]
}

fn latency() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0u64..2_000_000).prop_map(Duration::from_micros),
        1 => (0u64..200_000_000_000).prop_map(Duration::from_nanos),
    ]
}

fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..50,
        3 => 0u64..3_000,
        2 => 0u64..80_000,
        1 => 0u64..700_000,
    ]
}

/// What a window at `now` must hold: the records whose slot is among the
/// window's newest slots up to `now`.
fn model(records: &[(u64, Outcome, Duration)], w: Window, now: u64) -> Counts {
    let slot = w.slot().as_millis() as u64;
    let reach = match w {
        Window::S10 => 10,
        Window::M1 => 6,
        Window::M5 => 30,
    };
    let mut c = Counts::default();
    let mut hist = LatencyHistogram::new();
    for (t, o, l) in records {
        if *t <= now && t / slot + reach > now / slot {
            let class = match o.status() {
                s @ 100..=599 => usize::from(s / 100 - 1),
                _ => 4,
            };
            c.by_class[class] += 1;
            c.requests += 1;
            match o.failure() {
                Some(Failure::Upstream) => c.upstream_failures += 1,
                Some(Failure::Downstream) => c.downstream_failures += 1,
                Some(Failure::Internal) => c.internal_failures += 1,
                None => {}
            }
            c.against += u64::from(o.is_against());
            if o.is_judged() {
                hist.observe(*l);
            }
        }
    }
    c.latency = hist;
    c
}

fn assert_within(part: &Counts, whole: &Counts) {
    assert!(part.requests <= whole.requests);
    for i in 0..5 {
        assert!(part.by_class[i] <= whole.by_class[i]);
    }
    assert!(part.upstream_failures <= whole.upstream_failures);
    assert!(part.downstream_failures <= whole.downstream_failures);
    assert!(part.internal_failures <= whole.internal_failures);
    assert!(part.against <= whole.against);
    assert!(part.latency.count() <= whole.latency.count());
    for (p, w) in part.latency.counts().iter().zip(whole.latency.counts()) {
        assert!(p <= w);
    }
}

fn assert_sane(c: &Counts) {
    assert_eq!(c.requests, c.by_class.iter().sum::<u64>());
    assert_eq!(c.latency.count(), c.judged());
    assert!(c.against <= c.judged());
    if let Some(r) = c.success_rate() {
        assert!((0.0..=1.0).contains(&r));
    }
    let qs = [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];
    let got: Vec<Option<Duration>> = qs.iter().map(|q| c.quantile(*q)).collect();
    for pair in got.windows(2) {
        assert!(pair[0] <= pair[1], "quantiles not monotone: {got:?}");
    }
    assert_eq!(got[0].is_some(), c.latency.count() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn forward_time_windows_match_the_model(
        ops in prop::collection::vec((advance(), outcome(), latency()), 1..120),
        later in prop::collection::vec(0u64..400_000, 1..4),
    ) {
        let rec = Recorder::new();
        let g = rec.group("svc", Role::Canary, "v2");
        let mut now = T0 + 3_456;
        let mut records = Vec::new();
        for (i, (step, outcome, latency)) in ops.iter().enumerate() {
            now += step;
            g.record(Millis(now), *outcome, *latency);
            records.push((now, *outcome, *latency));
            if i % 40 == 39 {
                for w in Window::ALL {
                    prop_assert_eq!(&g.window(w, Millis(now)).counts, &model(&records, w, now));
                }
            }
        }
        let totals = g.totals();
        assert_sane(&totals);
        prop_assert_eq!(totals.requests, records.len() as u64);
        for extra in later {
            let at = now + extra;
            let [s10, m1, m5] = Window::ALL.map(|w| g.window(w, Millis(at)).counts);
            for (w, got) in Window::ALL.iter().zip([&s10, &m1, &m5]) {
                prop_assert_eq!(got, &model(&records, *w, at), "{} at +{}", w, extra);
                assert_sane(got);
            }
            assert_within(&s10, &m1);
            assert_within(&m1, &m5);
            assert_within(&m5, &totals);
        }
    }

    #[test]
    fn any_time_keeps_windows_within_totals(
        ops in prop::collection::vec(
            (prop_oneof![3 => (0u64..20_000).prop_map(|d| T0 + d), 1 => any::<u64>()], outcome(), latency()),
            1..80,
        ),
        reads in prop::collection::vec(prop_oneof![3 => (0u64..20_000).prop_map(|d| T0 + d), 1 => any::<u64>()], 1..4),
    ) {
        let rec = Recorder::new();
        let g = rec.group("svc", Role::Stable, "v1");
        for (t, outcome, latency) in &ops {
            g.record(Millis(*t), *outcome, *latency);
        }
        let totals = g.totals();
        prop_assert_eq!(totals.requests, ops.len() as u64);
        assert_sane(&totals);
        for t in reads {
            for w in Window::ALL {
                let s = g.window(w, Millis(t));
                assert_sane(&s.counts);
                assert_within(&s.counts, &totals);
                prop_assert!(s.start <= s.end);
                let _ = s.rate_per_sec();
            }
        }
    }
}
