//! The error-proportion judge: is the canary's error rate worse than
//! stable's, on cumulative counts from the same window, judged as often as
//! the caller likes?
//!
//! *Worse* is a mixture sequential probability ratio test conditioned on
//! the errors. Given `N = x1 + x2` errors in `n1` canary and `n2` stable
//! requests, under H0 (same error rate on both sides) each error is a
//! canary error with probability `π0 = n1 / (n1 + n2)`; if the canary's
//! rate is `r` times stable's, with probability
//! `π_r = r·n1 / (r·n1 + n2)`. The statistic is the likelihood ratio of
//! that binomial averaged over a fixed grid of relative risks `r`:
//!
//! ```text
//! Λ = Σ_k w_k (π_k/π0)^x1 ((1-π_k)/(1-π0))^(N-x1),   w_k = 1/K
//! ```
//!
//! Conditioning removes the unknown common error rate (and its drift in
//! time: an outage that hits both versions alike does not move `Λ`).
//! Under H0, `Λ` is a nonnegative martingale with mean 1 along the
//! sequence of errors, so by Ville's inequality the chance that it *ever*
//! reaches `1/alpha` is at most `alpha`, however often it is looked at.
//! The canary is `Worse` when `Λ ≥ 1/alpha` and its observed rate is also
//! beyond the tolerance (so a significant 0.01 % → 0.05 % never aborts).
//!
//! *NotWorse* needs evidence the other way: always-valid confidence
//! sequences for each rate (beta-binomial mixtures, each at `beta/2`) with
//! the canary's upper bound at most the tolerance above stable's lower
//! bound: `U1 ≤ max(ratio·L2, L2 + absolute)`.
//!
//! With no stable traffic, the canary is compared with a configured
//! `baseline_error_rate` (a one-sample mixture SPRT and confidence
//! sequence) or judged inconclusive. `docs/analysis.md` has the derivations
//! and the figures.

use crate::ConfigError;
use crate::math::{bernoulli_ll, inverse, ln_sum_exp, pct, rate_bounds, ratio, smallest_factor};
use crate::outcome::{Outcome, shortfall};

/// Requests and errors on one side, cumulative over the window judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests that ended (successes and errors).
    pub requests: u64,
    /// Of those, errors.
    pub errors: u64,
}

impl Counts {
    /// `requests` requests of which `errors` failed.
    pub fn new(requests: u64, errors: u64) -> Counts {
        Counts { requests, errors }
    }

    fn rate(self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// "41/200 errors (20.5 %)", or without the word: "2/1800 (0.11 %)".
    fn describe(self, word: &str) -> String {
        format!(
            "{}/{}{word} ({})",
            self.errors,
            self.requests,
            pct(self.rate())
        )
    }
}

/// Parameters of the error-proportion judge.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorConfig {
    /// Bound on the probability of ever calling a canary with stable's
    /// error rate `Worse`, over all looks at one growing sample.
    /// Default 5e-4 (half of the judge's default 1e-3 budget).
    pub alpha: f64,
    /// Bound on the probability of ever calling a canary `NotWorse` when
    /// its error rate is beyond the tolerance. Default 0.01.
    pub beta: f64,
    /// Tolerance, relative: the canary may have up to this many times
    /// stable's error rate. Default 2.
    pub tolerance_ratio: f64,
    /// Tolerance, absolute: the canary may exceed stable's error rate by
    /// this much (0.01 = one percentage point). The tolerance is the larger
    /// of the two. Default 0.01.
    pub tolerance_absolute: f64,
    /// The relative risks the mixture SPRT weighs equally (each above 1).
    /// Default `[1.5, 2, 3, 5, 10, 100]`.
    pub risks: Vec<f64>,
    /// Least requests per side; `None` inherits `Config::min_evidence`.
    pub min_requests: Option<u64>,
    /// Error rate to judge the canary against when stable has too little
    /// traffic (e.g. 0.01). `None` (the default): inconclusive then.
    pub baseline_error_rate: Option<f64>,
}

impl Default for ErrorConfig {
    fn default() -> ErrorConfig {
        ErrorConfig {
            alpha: 5e-4,
            beta: 0.01,
            tolerance_ratio: 2.0,
            tolerance_absolute: 0.01,
            risks: vec![1.5, 2.0, 3.0, 5.0, 10.0, 100.0],
            min_requests: None,
            baseline_error_rate: None,
        }
    }
}

/// The error-proportion judge, validated and ready.
#[derive(Clone, Debug)]
pub struct ErrorJudge {
    config: ErrorConfig,
    min_requests: u64,
}

/// What the statistics say, before it becomes words.
#[derive(Clone, Copy, Debug)]
struct Figures {
    /// `ln Λ`, the mixture likelihood ratio for "worse".
    ln_lr: f64,
    /// Observed rates.
    p1: f64,
    p2: f64,
}

impl ErrorJudge {
    /// Validates `config`; `default_min_requests` applies when the config
    /// does not set its own.
    pub fn new(config: ErrorConfig, default_min_requests: u64) -> Result<ErrorJudge, ConfigError> {
        crate::check_probability("errors.alpha", config.alpha)?;
        crate::check_probability("errors.beta", config.beta)?;
        if !(config.tolerance_ratio.is_finite() && config.tolerance_ratio >= 1.0) {
            return Err(ConfigError::OutOfRange {
                field: "errors.tolerance_ratio",
                expected: "a number >= 1",
                value: config.tolerance_ratio,
            });
        }
        if !(config.tolerance_absolute.is_finite()
            && (0.0..1.0).contains(&config.tolerance_absolute))
        {
            return Err(ConfigError::OutOfRange {
                field: "errors.tolerance_absolute",
                expected: "a rate in [0, 1)",
                value: config.tolerance_absolute,
            });
        }
        if config.risks.is_empty() {
            return Err(ConfigError::NoRisks);
        }
        for &r in &config.risks {
            if !(r.is_finite() && r > 1.0) {
                return Err(ConfigError::OutOfRange {
                    field: "errors.risks",
                    expected: "relative risks > 1",
                    value: r,
                });
            }
        }
        if let Some(p0) = config.baseline_error_rate {
            crate::check_probability("errors.baseline_error_rate", p0)?;
        }
        let min_requests = config.min_requests.unwrap_or(default_min_requests);
        Ok(ErrorJudge {
            config,
            min_requests,
        })
    }

    /// The least requests per side this judge needs.
    pub fn min_requests(&self) -> u64 {
        self.min_requests
    }

    /// `ln Λ`, the mixture likelihood ratio behind `Worse` (0 when there is
    /// no error or no traffic), without the minimum-evidence and tolerance
    /// rules: for logs and for checking the bound.
    pub fn ln_likelihood_ratio(&self, canary: Counts, stable: Counts) -> f64 {
        if canary.requests == 0 || stable.requests == 0 {
            return 0.0;
        }
        self.figures(canary, stable).ln_lr
    }

    /// Judges cumulative `canary` against cumulative `stable` counts.
    pub fn judge(&self, canary: Counts, stable: Counts) -> Outcome {
        for (side, c) in [("canary", canary), ("stable", stable)] {
            if c.errors > c.requests {
                return Outcome::Inconclusive {
                    missing: format!(
                        "inconsistent {side} counts: {} errors in {} requests",
                        c.errors, c.requests
                    ),
                };
            }
        }
        let need = self.min_requests;
        if canary.requests >= need
            && stable.requests < need
            && let Some(p0) = self.config.baseline_error_rate
        {
            return self.judge_alone(canary, stable, p0);
        }
        if let Some(short) = shortfall("requests", canary.requests, stable.requests, need) {
            let hint = if stable.requests < need && canary.requests >= need {
                " (no baseline_error_rate to judge the canary alone)"
            } else {
                ""
            };
            return Outcome::Inconclusive {
                missing: format!("{short}{hint}"),
            };
        }
        self.judge_both(canary, stable)
    }

    /// The tolerated canary error rate for a stable rate `p`.
    fn tolerance(&self, p: f64) -> f64 {
        (self.config.tolerance_ratio * p).max(p + self.config.tolerance_absolute)
    }

    fn figures(&self, canary: Counts, stable: Counts) -> Figures {
        let (n1, x1) = (canary.requests as f64, canary.errors as f64);
        let (n2, x2) = (stable.requests as f64, stable.errors as f64);
        let total = x1 + x2;
        let pi0 = n1 / (n1 + n2);
        let ln_w = -(self.config.risks.len() as f64).ln();
        let ln_lr = if total == 0.0 {
            0.0
        } else {
            let base = bernoulli_ll(total, x1, pi0);
            ln_sum_exp(self.config.risks.iter().map(|&r| {
                let pi = r * n1 / (r * n1 + n2);
                ln_w + bernoulli_ll(total, x1, pi) - base
            }))
        };
        Figures {
            ln_lr,
            p1: canary.rate(),
            p2: stable.rate(),
        }
    }

    /// Whether the confidence sequences put the canary within tolerance.
    fn within(&self, canary: Counts, stable: Counts) -> (bool, f64, f64) {
        let level = self.config.beta / 2.0;
        let (_, u1) = rate_bounds(canary.requests as f64, canary.errors as f64, level);
        let (l2, _) = rate_bounds(stable.requests as f64, stable.errors as f64, level);
        (u1 <= self.tolerance(l2), u1, l2)
    }

    fn judge_both(&self, canary: Counts, stable: Counts) -> Outcome {
        let f = self.figures(canary, stable);
        let alpha = self.config.alpha;
        let threshold = (1.0 / alpha).ln();
        let tol = self.tolerance(f.p2);
        let head = format!(
            "canary {} vs stable {}",
            canary.describe(" errors"),
            stable.describe("")
        );
        let lr = ratio(f.ln_lr);
        let significant = f.ln_lr >= threshold;
        if significant && f.p1 > tol {
            return Outcome::Worse {
                evidence: format!(
                    "{head}: worse, likelihood ratio {lr} ≥ 1/alpha = {}, beyond the tolerance {}",
                    inverse(self.config.alpha),
                    pct(tol)
                ),
            };
        }
        if f.p1 <= tol {
            let (ok, u1, l2) = self.within(canary, stable);
            let tol_l2 = self.tolerance(l2);
            if ok {
                return Outcome::NotWorse {
                    evidence: format!(
                        "{head}: not worse, the canary's rate is at most {} and the tolerance at least {} (confidence 1 - beta = {})",
                        pct(u1),
                        pct(tol_l2),
                        1.0 - self.config.beta
                    ),
                };
            }
            if significant {
                return Outcome::Inconclusive {
                    missing: format!(
                        "{head}: significantly higher (likelihood ratio {lr}) but not beyond the tolerance {}; not yet shown within it either (canary at most {})",
                        pct(tol),
                        pct(u1)
                    ),
                };
            }
            let more = smallest_factor(1e4, |k| {
                let scale = |c: Counts| {
                    let n = c.requests as f64 * k;
                    (n, c.rate() * n)
                };
                let (n1, x1) = scale(canary);
                let (n2, x2) = scale(stable);
                let level = self.config.beta / 2.0;
                let (_, u) = rate_bounds(n1, x1, level);
                let (l, _) = rate_bounds(n2, x2, level);
                u <= self.tolerance(l)
            });
            let need = match more {
                Some(k) => format!(
                    "needs about {} more canary requests at these rates",
                    ((k - 1.0) * canary.requests as f64).ceil()
                ),
                None => "needs far more data at these rates".to_string(),
            };
            return Outcome::Inconclusive {
                missing: format!(
                    "{head}: likelihood ratio {lr} < 1/alpha = {}; canary at most {}, not yet within the tolerance {}; {need}",
                    inverse(self.config.alpha),
                    pct(u1),
                    pct(tol_l2)
                ),
            };
        }
        Outcome::Inconclusive {
            missing: format!(
                "{head}: beyond the tolerance {} but not significant yet (likelihood ratio {lr} < 1/alpha = {})",
                pct(tol),
                inverse(self.config.alpha)
            ),
        }
    }

    /// Stable has too little traffic: compare the canary with the fixed
    /// `p0` (a one-sample mixture SPRT over `p = r·p0`, and the canary's
    /// confidence sequence at `beta`).
    fn judge_alone(&self, canary: Counts, stable: Counts, p0: f64) -> Outcome {
        let (n1, x1) = (canary.requests as f64, canary.errors as f64);
        let risks: Vec<f64> = self
            .config
            .risks
            .iter()
            .copied()
            .filter(|r| r * p0 < 1.0)
            .collect();
        let ln_w = -(risks.len().max(1) as f64).ln();
        let base = bernoulli_ll(n1, x1, p0);
        let ln_lr = ln_sum_exp(
            risks
                .iter()
                .map(|&r| ln_w + bernoulli_ll(n1, x1, r * p0) - base),
        );
        let p1 = canary.rate();
        let tol = self.tolerance(p0);
        let threshold = (1.0 / self.config.alpha).ln();
        let head = format!(
            "canary {} vs the baseline {} (stable has only {} requests)",
            canary.describe(" errors"),
            pct(p0),
            stable.requests
        );
        let lr = ratio(ln_lr);
        if ln_lr >= threshold && p1 > tol {
            return Outcome::Worse {
                evidence: format!(
                    "{head}: worse, likelihood ratio {lr} ≥ 1/alpha = {}, beyond the tolerance {}",
                    inverse(self.config.alpha),
                    pct(tol)
                ),
            };
        }
        let (_, u1) = rate_bounds(n1, x1, self.config.beta);
        if u1 <= tol {
            return Outcome::NotWorse {
                evidence: format!(
                    "{head}: not worse, the canary's rate is at most {} ≤ the tolerance {}",
                    pct(u1),
                    pct(tol)
                ),
            };
        }
        Outcome::Inconclusive {
            missing: format!(
                "{head}: likelihood ratio {lr} < 1/alpha = {}; canary at most {}, not yet within the tolerance {}",
                inverse(self.config.alpha),
                pct(u1),
                pct(tol)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge() -> ErrorJudge {
        ErrorJudge::new(ErrorConfig::default(), 20).unwrap_or_else(|e| panic!("{e}"))
    }

    fn c(n: u64, x: u64) -> Counts {
        Counts::new(n, x)
    }

    #[test]
    fn below_minimum_evidence_is_inconclusive_with_the_shortfall() {
        let j = judge();
        let o = j.judge(c(8, 8), c(100, 0));
        assert_eq!(
            o,
            Outcome::Inconclusive {
                missing: "needs 12 more canary requests (8 of 20)".into()
            }
        );
        let o = j.judge(c(0, 0), c(0, 0));
        assert!(o.reason().contains("20 more canary") && o.reason().contains("20 more stable"));
        let o = j.judge(c(500, 100), c(3, 0));
        assert_eq!(
            o.reason(),
            "needs 17 more stable requests (3 of 20) (no baseline_error_rate to judge the canary alone)"
        );
    }

    #[test]
    fn inconsistent_counts_are_inconclusive() {
        let o = judge().judge(c(10, 11), c(100, 0));
        assert!(o.is_inconclusive());
        assert!(o.reason().contains("inconsistent canary counts"), "{o:?}");
    }

    #[test]
    fn zero_errors_everywhere_is_never_worse() {
        let j = judge();
        for n in [20, 100, 1_000, 100_000] {
            let o = j.judge(c(n, 0), c(9 * n, 0));
            assert!(!o.is_worse(), "{o:?}");
            assert!(j.figures(c(n, 0), c(9 * n, 0)).ln_lr == 0.0);
        }
        // A clean canary with enough traffic is shown not worse.
        let o = j.judge(c(2_000, 0), c(18_000, 0));
        assert!(o.is_not_worse(), "{o:?}");
        // With too little, it says how much more.
        let o = j.judge(c(200, 0), c(1_800, 0));
        assert!(o.is_inconclusive());
        assert!(o.reason().contains("needs about"), "{o:?}");
    }

    #[test]
    fn a_clearly_worse_canary_is_worse_with_the_figures() {
        let o = judge().judge(c(200, 41), c(1_800, 2));
        let Outcome::Worse { evidence } = &o else {
            panic!("{o:?}")
        };
        assert!(
            evidence.starts_with(
                "canary 41/200 errors (20.5 %) vs stable 2/1800 (0.11 %): worse, likelihood ratio "
            ),
            "{evidence}"
        );
        assert!(evidence.contains("≥ 1/alpha = 2000"), "{evidence}");
    }

    #[test]
    fn a_few_errors_on_a_quiet_canary_already_count() {
        // 20 requests, 5 errors, no stable error: Λ ≥ 2000.
        let j = judge();
        assert!(j.judge(c(20, 5), c(180, 0)).is_worse());
        // 20 requests, 3 errors: not yet.
        assert!(j.judge(c(20, 3), c(180, 0)).is_inconclusive());
    }

    #[test]
    fn significant_but_within_tolerance_is_not_worse_or_inconclusive() {
        // 0.5 % vs 0.05 %: ten times worse and very significant, but only
        // 0.45 pp above stable, inside the 1 pp tolerance: never aborted.
        let j = judge();
        let o = j.judge(c(100_000, 500), c(900_000, 450));
        assert!(j.figures(c(100_000, 500), c(900_000, 450)).ln_lr > 100.0);
        assert!(o.is_not_worse(), "{o:?}");
        let o = j.judge(c(2_000, 10), c(18_000, 9));
        assert!(!o.is_worse(), "{o:?}");
    }

    #[test]
    fn same_rates_are_not_worse_with_enough_data() {
        let j = judge();
        let o = j.judge(c(20_000, 200), c(180_000, 1_800));
        assert!(o.is_not_worse(), "{o:?}");
        assert!(o.reason().contains("not worse"), "{o:?}");
    }

    #[test]
    fn beyond_tolerance_but_not_significant_is_inconclusive() {
        // 1/20 vs 0/180: 5 % observed, beyond 1 %, but a single error.
        let o = judge().judge(c(20, 1), c(180, 0));
        assert!(o.is_inconclusive());
        assert!(o.reason().contains("not significant yet"), "{o:?}");
    }

    #[test]
    fn the_statistic_rises_with_canary_errors_and_falls_with_stable_errors() {
        let j = judge();
        let mut last = f64::NEG_INFINITY;
        for x1 in 0..30 {
            let v = j.figures(c(1_000, x1), c(9_000, 20)).ln_lr;
            assert!(v >= last - 1e-12, "{x1}");
            last = v;
        }
        let mut last = f64::INFINITY;
        for x2 in 0..60 {
            let v = j.figures(c(1_000, 10), c(9_000, x2)).ln_lr;
            assert!(v <= last + 1e-12, "{x2}");
            last = v;
        }
        // At most 1/K·(1/π0)^x1 when every error is the canary's.
        let v = j.figures(c(100, 10), c(900, 0)).ln_lr;
        assert!(v < 10.0 * 10f64.ln());
    }

    #[test]
    fn all_traffic_failing_on_both_sides_is_not_worse() {
        let o = judge().judge(c(1_000, 1_000), c(9_000, 9_000));
        assert!(!o.is_worse(), "{o:?}");
    }

    #[test]
    fn a_baseline_judges_the_canary_alone() {
        let cfg = ErrorConfig {
            baseline_error_rate: Some(0.01),
            ..ErrorConfig::default()
        };
        let j = ErrorJudge::new(cfg, 20).unwrap_or_else(|e| panic!("{e}"));
        let o = j.judge(c(100, 30), c(0, 0));
        assert!(o.is_worse(), "{o:?}");
        assert!(o.reason().contains("vs the baseline 1.0 %"), "{o:?}");
        let o = j.judge(c(5_000, 10), c(5, 0));
        assert!(o.is_not_worse(), "{o:?}");
        let o = j.judge(c(30, 0), c(0, 0));
        assert!(o.is_inconclusive(), "{o:?}");
        // The canary itself still needs its minimum.
        let o = j.judge(c(10, 10), c(0, 0));
        assert!(
            o.reason().starts_with("needs 10 more canary requests"),
            "{o:?}"
        );
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = |cfg: ErrorConfig| ErrorJudge::new(cfg, 20).is_err();
        let d = ErrorConfig::default;
        assert!(bad(ErrorConfig { alpha: 0.0, ..d() }));
        assert!(bad(ErrorConfig { alpha: 1.0, ..d() }));
        assert!(bad(ErrorConfig {
            beta: f64::NAN,
            ..d()
        }));
        assert!(bad(ErrorConfig {
            tolerance_ratio: 0.5,
            ..d()
        }));
        assert!(bad(ErrorConfig {
            tolerance_absolute: -0.1,
            ..d()
        }));
        assert!(bad(ErrorConfig {
            risks: vec![],
            ..d()
        }));
        assert!(bad(ErrorConfig {
            risks: vec![1.0],
            ..d()
        }));
        assert!(bad(ErrorConfig {
            baseline_error_rate: Some(0.0),
            ..d()
        }));
        assert_eq!(
            ErrorJudge::new(
                ErrorConfig {
                    min_requests: Some(50),
                    ..d()
                },
                20
            )
            .map(|j| j.min_requests()),
            Ok(50)
        );
    }
}
