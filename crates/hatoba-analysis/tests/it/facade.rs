//! The facade: configuration, minimum evidence, and how the metrics'
//! outcomes combine.

use hatoba_analysis::{
    Arm, Config, ConfigError, ErrorConfig, Histogram, Judge, LatencyConfig, MinEvidence, Outcome,
    Sample,
};

fn hist(pairs: &[(f64, u64)]) -> Histogram {
    Histogram::from_pairs(pairs.iter().copied()).unwrap_or_else(|e| panic!("{e}"))
}

fn arm(requests: u64, errors: u64, latency: &[(f64, u64)]) -> Arm {
    Arm {
        requests,
        errors,
        latency: hist(latency),
    }
}

fn judge() -> Judge {
    Judge::new(Config::new()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn defaults() {
    let c = Config::new();
    assert_eq!(
        c.min_evidence,
        MinEvidence {
            requests: 20,
            points: 20
        }
    );
    assert_eq!(c.errors.alpha, 5e-4);
    assert_eq!(c.errors.beta, 0.01);
    assert_eq!(c.errors.tolerance_ratio, 2.0);
    assert_eq!(c.errors.tolerance_absolute, 0.01);
    assert_eq!(c.errors.risks, vec![1.5, 2.0, 3.0, 5.0, 10.0, 100.0]);
    let l = c.latency.clone().unwrap_or_default();
    assert_eq!(
        (
            l.alpha,
            l.beta,
            l.tolerance_ms,
            l.tolerance_ratio,
            l.quantile,
            l.tau
        ),
        (5e-4, 0.01, 10.0, 0.1, 0.5, 0.2)
    );
    assert!((c.false_abort_bound() - 1e-3).abs() < 1e-15);
    assert_eq!(Config::default().latency, None);
}

#[test]
fn worse_errors_abort_whatever_the_latency_says() {
    let s = Sample {
        canary: arm(200, 41, &[(50.0, 5)]),
        stable: arm(1_800, 2, &[(50.0, 1_000)]),
    };
    let j = judge().judge(&s);
    assert!(j.errors.is_worse());
    assert!(j.latency.as_ref().is_some_and(Outcome::is_inconclusive));
    let Outcome::Worse { evidence } = &j.outcome else {
        panic!("{j:?}")
    };
    assert!(
        evidence.starts_with("errors: canary 41/200 errors (20.5 %) vs stable 2/1800 (0.11 %): worse, likelihood ratio "),
        "{evidence}"
    );
    assert!(!evidence.contains("latency"), "{evidence}");
    assert_eq!(j.reasons().len(), 2);
    assert!(j.reasons()[1].starts_with("latency: needs 15 more canary data points"));
}

#[test]
fn not_worse_needs_every_metric() {
    let lat: Vec<(f64, u64)> = (30..70).map(|v| (v as f64, 50)).collect();
    let s = Sample {
        canary: arm(2_000, 0, &lat),
        stable: arm(18_000, 0, &lat),
    };
    let j = judge().judge(&s);
    assert!(j.outcome.is_not_worse(), "{j:?}");
    assert!(j.outcome.reason().starts_with("errors: "), "{j:?}");
    assert!(j.outcome.reason().contains("; latency: "), "{j:?}");
    // The same errors with too few latency points: inconclusive, saying
    // only what is missing.
    let s = Sample {
        canary: arm(2_000, 0, &[(50.0, 3)]),
        stable: arm(18_000, 0, &lat),
    };
    let j = judge().judge(&s);
    assert_eq!(
        j.outcome,
        Outcome::Inconclusive {
            missing: "latency: needs 17 more canary data points (3 of 20)".into()
        }
    );
}

#[test]
fn no_traffic_is_inconclusive_with_what_is_missing() {
    let j = judge().judge(&Sample::default());
    let Outcome::Inconclusive { missing } = &j.outcome else {
        panic!("{j:?}")
    };
    assert_eq!(
        missing,
        "errors: needs 20 more canary requests (0 of 20) and 20 more stable requests (0 of 20); \
         latency: needs 20 more canary data points (0 of 20) and 20 more stable data points (0 of 20)"
    );
}

#[test]
fn latency_only_abort() {
    let stable: Vec<(f64, u64)> = (40..60).map(|v| (v as f64, 9)).collect();
    let canary: Vec<(f64, u64)> = (340..360).map(|v| (v as f64, 1)).collect();
    let s = Sample {
        canary: arm(20, 0, &canary),
        stable: arm(180, 0, &stable),
    };
    let j = judge().judge(&s);
    assert!(j.outcome.is_worse());
    assert!(
        j.outcome
            .reason()
            .starts_with("latency: canary median 349 ms"),
        "{j:?}"
    );
}

#[test]
fn minimum_evidence_is_inherited_or_declared() {
    let s = Sample {
        canary: arm(30, 0, &[(50.0, 30)]),
        stable: arm(270, 0, &[(50.0, 270)]),
    };
    let mut c = Config::new();
    c.min_evidence = MinEvidence {
        requests: 50,
        points: 40,
    };
    let j = Judge::new(c.clone())
        .unwrap_or_else(|e| panic!("{e}"))
        .judge(&s);
    assert!(
        j.errors
            .reason()
            .starts_with("needs 20 more canary requests (30 of 50)")
    );
    assert!(j.latency.as_ref().is_some_and(|l| {
        l.reason()
            .starts_with("needs 10 more canary data points (30 of 40)")
    }));
    c.errors.min_requests = Some(10);
    if let Some(l) = c.latency.as_mut() {
        l.min_points = Some(25);
    }
    let j = Judge::new(c).unwrap_or_else(|e| panic!("{e}")).judge(&s);
    assert!(!j.errors.reason().starts_with("needs"), "{j:?}");
    assert!(
        j.latency
            .as_ref()
            .is_some_and(|l| !l.reason().starts_with("needs"))
    );
}

#[test]
fn errors_only() {
    let c = Config {
        latency: None,
        ..Config::new()
    };
    let j = Judge::new(c).unwrap_or_else(|e| panic!("{e}"));
    let s = Sample {
        canary: arm(2_000, 0, &[]),
        stable: arm(18_000, 0, &[]),
    };
    let out = j.judge(&s);
    assert_eq!(out.latency, None);
    assert!(out.outcome.is_not_worse(), "{out:?}");
    assert_eq!(out.reasons().len(), 1);
}

#[test]
fn bad_configuration_is_refused() {
    let e = Judge::new(Config {
        errors: ErrorConfig {
            alpha: 0.0,
            ..ErrorConfig::default()
        },
        ..Config::new()
    })
    .err();
    assert_eq!(
        e,
        Some(ConfigError::OutOfRange {
            field: "errors.alpha",
            expected: "a probability strictly between 0 and 1",
            value: 0.0
        })
    );
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some("errors.alpha must be a probability strictly between 0 and 1, got 0")
    );
    let e = Judge::new(Config {
        latency: Some(LatencyConfig {
            tau: -1.0,
            ..LatencyConfig::default()
        }),
        ..Config::new()
    });
    assert!(e.is_err());
}
