//! The judge's window: both versions' cumulative totals read at the start
//! of an analysis run are the baseline, and every judgement is on what the
//! totals added since (`Sample::since`). Seeded simulations show what that
//! changes: an earlier attempt at the same version label, or an old
//! incident of stable, no longer decides the verdict; totals that began
//! again (a restarted data plane) count from zero.

use hatoba_analysis::{Arm, Config, Histogram, Judge, Sample};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Requests a simulated second.
const RATE: u32 = 200;

/// A proxy's totals since it started, per version, as the data plane
/// keeps them: they only grow.
struct Proxy {
    rng: StdRng,
    totals: Sample,
}

impl Proxy {
    fn new(seed: u64) -> Proxy {
        Proxy {
            rng: StdRng::seed_from_u64(seed),
            totals: Sample::default(),
        }
    }

    /// `secs` seconds of traffic: `canary_share` of it to the canary
    /// (routed at random per request), each version failing at its rate;
    /// latencies 40-60 ms on both, in 1 ms buckets.
    fn serve(&mut self, secs: u32, canary_share: f64, canary_errors: f64, stable_errors: f64) {
        for _ in 0..secs * RATE {
            let to_canary = self.rng.random::<f64>() < canary_share;
            let (arm, p) = if to_canary {
                (&mut self.totals.canary, canary_errors)
            } else {
                (&mut self.totals.stable, stable_errors)
            };
            arm.requests += 1;
            if self.rng.random::<f64>() < p {
                arm.errors += 1;
            }
            let ms = (40.0 + 20.0 * self.rng.random::<f64>()).ceil();
            arm.latency.add(ms, 1).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn judge() -> Judge {
    Judge::new(Config::new()).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `secs` seconds of a canary at 10 %, judging every second on the
/// totals since `baseline` (or on the raw totals when `None`): the second
/// of the first `Worse`, if any.
fn first_worse(
    proxy: &mut Proxy,
    baseline: Option<&Sample>,
    secs: u32,
    canary_errors: f64,
    stable_errors: f64,
) -> Option<u32> {
    let judge = judge();
    for s in 1..=secs {
        proxy.serve(1, 0.1, canary_errors, stable_errors);
        let sample = match baseline {
            Some(b) => proxy.totals.since(b),
            None => proxy.totals.clone(),
        };
        if judge.judge(&sample).outcome.is_worse() {
            return Some(s);
        }
    }
    None
}

#[test]
fn a_good_canary_is_not_judged_on_an_earlier_attempt_at_its_version() {
    for seed in 0..5 {
        // v2's first attempt: 30 % errors for a minute at 10 %, rolled back.
        let mut proxy = Proxy::new(seed);
        proxy.serve(60, 0.1, 0.3, 0.005);
        proxy.serve(30, 0.0, 0.0, 0.005);
        let before = proxy.totals.clone();

        // v2 again, fixed, as good as stable: judged since its run started,
        // it is never called worse.
        let baseline = proxy.totals.clone();
        assert_eq!(
            first_worse(&mut proxy, Some(&baseline), 120, 0.005, 0.005),
            None,
            "seed {seed}"
        );
        // The same traffic judged on the totals: the first attempt's
        // errors fail the good canary at once.
        let mut again = Proxy::new(seed);
        again.serve(60, 0.1, 0.3, 0.005);
        again.serve(30, 0.0, 0.0, 0.005);
        assert_eq!(again.totals, before);
        assert!(
            first_worse(&mut again, None, 120, 0.005, 0.005).is_some_and(|s| s <= 5),
            "seed {seed}"
        );
    }
}

#[test]
fn a_bad_canary_is_not_hidden_by_an_old_incident_of_stable() {
    for seed in 0..5 {
        // Stable had ten minutes at 20 % errors before the rollout.
        let mut proxy = Proxy::new(100 + seed);
        proxy.serve(600, 0.0, 0.0, 0.2);
        let baseline = proxy.totals.clone();
        // A canary at 5 % against a stable at 0.5 % now: caught.
        let caught = first_worse(&mut proxy, Some(&baseline), 120, 0.05, 0.005);
        assert!(caught.is_some(), "seed {seed}: never caught");

        // On the totals, stable's old errors hide it for the whole time.
        let mut masked = Proxy::new(100 + seed);
        masked.serve(600, 0.0, 0.0, 0.2);
        assert_eq!(first_worse(&mut masked, None, 120, 0.05, 0.005), None);
    }
}

#[test]
fn since_subtracts_each_counter_and_each_latency_value() {
    let hist = |pairs: &[(f64, u64)]| Histogram::from_pairs(pairs.iter().copied()).unwrap();
    let then = Arm {
        requests: 100,
        errors: 3,
        latency: hist(&[(10.0, 60), (20.0, 40)]),
    };
    let now = Arm {
        requests: 150,
        errors: 13,
        latency: hist(&[(10.0, 70), (20.0, 40), (30.0, 40)]),
    };
    assert_eq!(
        now.since(&then),
        Arm {
            requests: 50,
            errors: 10,
            latency: hist(&[(10.0, 10), (30.0, 40)]),
        }
    );
    // Nothing since: an empty window, not the totals.
    assert_eq!(now.since(&now), Arm::default());
}

#[test]
fn totals_that_began_again_count_from_zero() {
    let hist = |pairs: &[(f64, u64)]| Histogram::from_pairs(pairs.iter().copied()).unwrap();
    let then = Arm {
        requests: 1000,
        errors: 10,
        latency: hist(&[(10.0, 1000)]),
    };
    // The data plane restarted: everything it counted came after `then`.
    let restarted = Arm {
        requests: 40,
        errors: 4,
        latency: hist(&[(10.0, 40)]),
    };
    assert_eq!(restarted.since(&then), restarted);
    // Any counter going backwards is enough, latency values included.
    let moved = Arm {
        requests: 1100,
        errors: 20,
        latency: hist(&[(20.0, 1100)]),
    };
    assert_eq!(moved.since(&then), moved);
    let fewer_errors = Arm {
        requests: 1100,
        errors: 5,
        latency: hist(&[(10.0, 1100)]),
    };
    assert_eq!(fewer_errors.since(&then), fewer_errors);
}

#[test]
fn a_baseline_survives_being_saved() {
    let mut proxy = Proxy::new(7);
    proxy.serve(5, 0.5, 0.1, 0.0);
    let json = serde_json::to_string(&proxy.totals).unwrap();
    let back: Sample = serde_json::from_str(&json).unwrap();
    assert_eq!(back, proxy.totals);
    // A saved histogram that is not one is refused, not trusted.
    assert!(serde_json::from_str::<Histogram>("[[1e999, 1]]").is_err());
    assert!(serde_json::from_str::<Histogram>("[[\"x\", 1]]").is_err());
}
