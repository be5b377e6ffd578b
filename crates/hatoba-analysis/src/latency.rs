//! The latency judge: is the canary slower than stable? Mann-Whitney U on
//! the two latency distributions (Kayenta's approach), given as histograms,
//! made sequential so that it can be judged every second on growing data.
//!
//! `U` counts the (canary, stable) pairs where the canary's sample is the
//! slower, ties counting one half; `θ̂ = U/(m·n) - 1/2` estimates
//! `P(canary slower) - 1/2`, zero when the two distributions are the same.
//! Its variance under H0, with the ties correction, is
//! `σ² = m·n/12 · (N + 1 - Σ(t³ - t)/(N(N - 1)))`, so the information is
//! `I = (m·n)²/σ²` and the score `S = θ̂·I` is, as the samples grow, a
//! Brownian motion in information time (the sequential Wilcoxon statistic
//! has asymptotically independent increments). The judge mixes the normal
//! likelihood ratio `exp(θS - θ²I/2)` over a half-normal prior on `θ > 0`
//! with scale `tau`:
//!
//! ```text
//! Λ⁺ = 2/√(τ²I + 1) · exp(S²/(2a)) · Φ(S/√a),   a = I + 1/τ²
//! ```
//!
//! a martingale under H0 (asymptotically), so by Ville's inequality
//! `P(ever Λ⁺ ≥ 1/alpha) ≤ alpha` whatever the number of looks; in z terms
//! the bound is about 4.2 early on and 4.7 after ten minutes at 200 req/s.
//!
//! `Worse` also needs an effect as large as the tolerance: the canary's
//! quantile (the median by default) at least `tolerance_ms` and
//! `tolerance_ratio` above stable's. `NotWorse` is the mirror test on the
//! canary shifted down by that tolerance `Δ`: when `canary - Δ` is
//! significantly *faster* than stable (`Λ⁻ ≥ 1/beta`), the canary is slower
//! by less than `Δ`.

use crate::ConfigError;
use crate::math::{inverse, ln_norm_cdf, ms, ratio, smallest_factor};
use crate::outcome::{Outcome, shortfall};

/// A latency distribution as `(value, count)` pairs, values in
/// milliseconds (e.g. each bucket's upper bound, or its midpoint), kept
/// sorted by value with equal values merged and empty buckets dropped.
/// Independent of any particular bucket layout.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Vec<(f64, u64)>", try_from = "Vec<(f64, u64)>")]
pub struct Histogram {
    points: Vec<(f64, u64)>,
    count: u64,
}

/// A histogram value that is not a number.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("latency value {value} is not a finite number")]
pub struct HistogramError {
    /// The offending value.
    pub value: f64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// From `(value, count)` pairs in any order; equal values are merged,
    /// zero counts dropped.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (f64, u64)>,
    ) -> Result<Histogram, HistogramError> {
        let mut points = Vec::new();
        for (value, count) in pairs {
            if !value.is_finite() {
                return Err(HistogramError { value });
            }
            if count > 0 {
                // -0.0 and 0.0 are the same latency.
                points.push((value + 0.0, count));
            }
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut merged: Vec<(f64, u64)> = Vec::with_capacity(points.len());
        for (v, c) in points {
            match merged.last_mut() {
                Some(last) if last.0 == v => last.1 += c,
                _ => merged.push((v, c)),
            }
        }
        let count = merged.iter().map(|p| p.1).sum();
        Ok(Histogram {
            points: merged,
            count,
        })
    }

    /// From individual samples.
    pub fn from_samples(
        values: impl IntoIterator<Item = f64>,
    ) -> Result<Histogram, HistogramError> {
        Histogram::from_pairs(values.into_iter().map(|v| (v, 1)))
    }

    /// Adds `count` samples of `value`.
    pub fn add(&mut self, value: f64, count: u64) -> Result<(), HistogramError> {
        if !value.is_finite() {
            return Err(HistogramError { value });
        }
        if count == 0 {
            return Ok(());
        }
        let value = value + 0.0;
        self.count += count;
        match self.points.binary_search_by(|p| p.0.total_cmp(&value)) {
            Ok(i) => self.points[i].1 += count,
            Err(i) => self.points.insert(i, (value, count)),
        }
        Ok(())
    }

    /// The samples added since `earlier`, a reading of the same growing
    /// histogram: each value's count less `earlier`'s. `None` when
    /// `earlier` has a value this one lacks or more samples of a value:
    /// not an earlier reading (the counters began again).
    pub fn since(&self, earlier: &Histogram) -> Option<Histogram> {
        let mut points = self.points.clone();
        for &(value, count) in &earlier.points {
            let i = points.binary_search_by(|p| p.0.total_cmp(&value)).ok()?;
            points[i].1 = points[i].1.checked_sub(count)?;
        }
        points.retain(|p| p.1 > 0);
        let count = points.iter().map(|p| p.1).sum();
        Some(Histogram { points, count })
    }

    /// The `(value, count)` pairs, sorted by value.
    pub fn points(&self) -> &[(f64, u64)] {
        &self.points
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (`0 ≤ q ≤ 1`): the least value with at least
    /// `q·count` samples at or below it. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        let first = self.points.first()?;
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(v, c) in &self.points {
            seen += c;
            if seen >= rank {
                return Some(v);
            }
        }
        Some(self.points.last().map_or(first.0, |p| p.0)) // q·total rounded above total
    }
}

impl From<Histogram> for Vec<(f64, u64)> {
    fn from(h: Histogram) -> Vec<(f64, u64)> {
        h.points
    }
}

impl TryFrom<Vec<(f64, u64)>> for Histogram {
    type Error = HistogramError;

    fn try_from(pairs: Vec<(f64, u64)>) -> Result<Histogram, HistogramError> {
        Histogram::from_pairs(pairs)
    }
}

/// Parameters of the latency judge.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyConfig {
    /// Bound on the probability of ever calling a canary whose latency is
    /// distributed like stable's `Worse`, over all looks. Default 5e-4.
    pub alpha: f64,
    /// Bound on the probability of ever calling a canary `NotWorse` when it
    /// is slower by more than the tolerance. Default 0.01.
    pub beta: f64,
    /// Tolerance in milliseconds: a canary slower by less is never `Worse`.
    /// Default 10.
    pub tolerance_ms: f64,
    /// Tolerance relative to stable's quantile (0.1 = 10 %). The tolerance
    /// is the larger of the two. Default 0.1.
    pub tolerance_ratio: f64,
    /// The quantile the tolerance is measured at. Default 0.5 (median).
    pub quantile: f64,
    /// Scale of the half-normal mixing prior on `P(canary slower) - 1/2`.
    /// Default 0.2.
    pub tau: f64,
    /// Least data points per side; `None` inherits `Config::min_evidence`.
    pub min_points: Option<u64>,
}

impl Default for LatencyConfig {
    fn default() -> LatencyConfig {
        LatencyConfig {
            alpha: 5e-4,
            beta: 0.01,
            tolerance_ms: 10.0,
            tolerance_ratio: 0.1,
            quantile: 0.5,
            tau: 0.2,
            min_points: None,
        }
    }
}

/// The latency judge, validated and ready.
#[derive(Clone, Debug)]
pub struct LatencyJudge {
    config: LatencyConfig,
    min_points: u64,
}

/// Mann-Whitney U of canary against stable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MannWhitney {
    /// Canary and stable sample sizes.
    pub(crate) m: f64,
    pub(crate) n: f64,
    /// Pairs where the canary is slower, ties counting one half.
    pub(crate) u: f64,
    /// Variance of `U` under H0, ties corrected.
    pub(crate) var: f64,
}

impl MannWhitney {
    /// `U` for `canary - shift` against `stable`.
    pub(crate) fn new(canary: &[(f64, u64)], stable: &[(f64, u64)], shift: f64) -> MannWhitney {
        let (mut i, mut j) = (0, 0);
        let (mut u, mut below, mut ties) = (0.0f64, 0.0f64, 0.0f64);
        while i < canary.len() || j < stable.len() {
            let cv = canary.get(i).map(|p| p.0 - shift);
            let sv = stable.get(j).map(|p| p.0);
            let v = match (cv, sv) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            let mut c = 0.0;
            if cv == Some(v) {
                c = canary[i].1 as f64;
                i += 1;
            }
            let mut s = 0.0;
            if sv == Some(v) {
                s = stable[j].1 as f64;
                j += 1;
            }
            u += c * (below + 0.5 * s);
            below += s;
            let t = c + s;
            ties += t * t * t - t;
        }
        let m: f64 = canary.iter().map(|p| p.1 as f64).sum();
        let n: f64 = stable.iter().map(|p| p.1 as f64).sum();
        let total = m + n;
        let var = if total < 2.0 {
            0.0
        } else {
            (m * n / 12.0) * ((total + 1.0) - ties / (total * (total - 1.0)))
        };
        MannWhitney {
            m,
            n,
            u,
            var: var.max(0.0),
        }
    }

    /// `P(canary slower)`, ties counting one half.
    pub(crate) fn p_slower(&self) -> f64 {
        self.u / (self.m * self.n)
    }

    /// The normal statistic `z = (U - mn/2)/σ`.
    pub(crate) fn z(&self) -> f64 {
        if self.var <= 0.0 {
            0.0
        } else {
            (self.u - 0.5 * self.m * self.n) / self.var.sqrt()
        }
    }

    /// `(S, I)`: the score and the information.
    fn score(&self) -> (f64, f64) {
        if self.var <= 0.0 {
            return (0.0, 0.0);
        }
        let mn = self.m * self.n;
        let info = mn * mn / self.var;
        ((self.p_slower() - 0.5) * info, info)
    }
}

/// `ln Λ` of the half-normal mixture: towards "canary slower" when
/// `slower`, towards "canary faster" otherwise.
pub(crate) fn ln_mixture(score: f64, info: f64, tau: f64, slower: bool) -> f64 {
    if info <= 0.0 {
        return 0.0;
    }
    let a = info + 1.0 / (tau * tau);
    let s = if slower { score } else { -score };
    2f64.ln() - 0.5 * (tau * tau * info).ln_1p()
        + score * score / (2.0 * a)
        + ln_norm_cdf(s / a.sqrt())
}

impl LatencyJudge {
    /// Validates `config`; `default_min_points` applies when the config
    /// does not set its own.
    pub fn new(
        config: LatencyConfig,
        default_min_points: u64,
    ) -> Result<LatencyJudge, ConfigError> {
        crate::check_probability("latency.alpha", config.alpha)?;
        crate::check_probability("latency.beta", config.beta)?;
        let nonneg = |field, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    field,
                    expected: "a number >= 0",
                    value,
                })
            }
        };
        nonneg("latency.tolerance_ms", config.tolerance_ms)?;
        nonneg("latency.tolerance_ratio", config.tolerance_ratio)?;
        if !(config.quantile.is_finite() && (0.0..=1.0).contains(&config.quantile)) {
            return Err(ConfigError::OutOfRange {
                field: "latency.quantile",
                expected: "a number in [0, 1]",
                value: config.quantile,
            });
        }
        if !(config.tau.is_finite() && config.tau > 0.0) {
            return Err(ConfigError::OutOfRange {
                field: "latency.tau",
                expected: "a number > 0",
                value: config.tau,
            });
        }
        let min_points = config.min_points.unwrap_or(default_min_points);
        Ok(LatencyJudge { config, min_points })
    }

    /// The least data points per side this judge needs.
    pub fn min_points(&self) -> u64 {
        self.min_points
    }

    /// `ln Λ⁺`, the mixture likelihood ratio behind `Worse` ("canary
    /// slower"; 0 without data), without the minimum-evidence and tolerance
    /// rules: for logs and for checking the bound.
    pub fn ln_likelihood_ratio(&self, canary: &Histogram, stable: &Histogram) -> f64 {
        if canary.count() == 0 || stable.count() == 0 {
            return 0.0;
        }
        let (score, info) = MannWhitney::new(canary.points(), stable.points(), 0.0).score();
        ln_mixture(score, info, self.config.tau, true)
    }

    /// Judges the canary's latency distribution against stable's.
    pub fn judge(&self, canary: &Histogram, stable: &Histogram) -> Outcome {
        let (m, n) = (canary.count(), stable.count());
        if let Some(short) = shortfall("data points", m, n, self.min_points.max(1)) {
            return Outcome::Inconclusive { missing: short };
        }
        let cfg = &self.config;
        let (Some(cq), Some(sq)) = (canary.quantile(cfg.quantile), stable.quantile(cfg.quantile))
        else {
            return Outcome::Inconclusive {
                missing: "no latency data".into(),
            };
        };
        let tol = cfg.tolerance_ms.max(cfg.tolerance_ratio * sq.abs());
        let diff = cq - sq;
        let name = quantile_name(cfg.quantile);
        let head = format!(
            "canary {name} {} vs stable {} ({}{}, {:+.0} %) over {m} vs {n} points",
            ms(cq),
            ms(sq),
            if diff >= 0.0 { "+" } else { "" },
            ms(diff),
            if sq != 0.0 { 100.0 * diff / sq } else { 0.0 }
        );
        let mw = MannWhitney::new(canary.points(), stable.points(), 0.0);
        let (score, info) = mw.score();
        let ln_worse = ln_mixture(score, info, cfg.tau, true);
        let worse_at = (1.0 / cfg.alpha).ln();
        if ln_worse >= worse_at && diff >= tol {
            return Outcome::Worse {
                evidence: format!(
                    "{head}: slower, P(canary slower) = {:.2}, z = {:.1}, likelihood ratio {} ≥ 1/alpha = {}, beyond the tolerance {}",
                    mw.p_slower(),
                    mw.z(),
                    ratio(ln_worse),
                    inverse(cfg.alpha),
                    ms(tol)
                ),
            };
        }
        let shifted = MannWhitney::new(canary.points(), stable.points(), tol);
        let (s_score, s_info) = shifted.score();
        let ln_within = ln_mixture(s_score, s_info, cfg.tau, false);
        let within_at = (1.0 / cfg.beta).ln();
        if ln_within >= within_at {
            return Outcome::NotWorse {
                evidence: format!(
                    "{head}: not worse, slower by less than the tolerance {} (likelihood ratio {} ≥ 1/beta = {})",
                    ms(tol),
                    ratio(ln_within),
                    inverse(cfg.beta)
                ),
            };
        }
        if ln_worse >= worse_at {
            return Outcome::Inconclusive {
                missing: format!(
                    "{head}: significantly slower (likelihood ratio {}) but by less than the tolerance {}; not yet shown within it either",
                    ratio(ln_worse),
                    ms(tol)
                ),
            };
        }
        let theta = shifted.p_slower() - 0.5;
        let need = if theta < 0.0 && s_info > 0.0 {
            // At this difference the information grows with the data.
            let more = smallest_factor(1e4, |k| {
                ln_mixture(k * s_score, k * s_info, cfg.tau, false) >= within_at
            });
            match more {
                Some(k) => format!(
                    "; needs about {} more canary points at this difference",
                    ((k - 1.0) * m as f64).ceil()
                ),
                None => "; needs far more data at this difference".into(),
            }
        } else {
            String::new()
        };
        Outcome::Inconclusive {
            missing: format!(
                "{head}: likelihood ratio {} < 1/alpha = {}, not yet shown within the tolerance {}{need}",
                ratio(ln_worse),
                inverse(cfg.alpha),
                ms(tol)
            ),
        }
    }
}

fn quantile_name(q: f64) -> String {
    if q == 0.5 {
        "median".into()
    } else {
        format!("p{}", (q * 100.0 * 10.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(f64, u64)]) -> Histogram {
        Histogram::from_pairs(pairs.iter().copied()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn samples(v: &[f64]) -> Histogram {
        Histogram::from_samples(v.iter().copied()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn judge() -> LatencyJudge {
        LatencyJudge::new(LatencyConfig::default(), 20).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Brute-force U and the textbook tie-corrected variance.
    fn brute(canary: &[f64], stable: &[f64]) -> (f64, f64) {
        let mut u = 0.0;
        for &c in canary {
            for &s in stable {
                u += if c > s {
                    1.0
                } else if c == s {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let mut all: Vec<f64> = canary.iter().chain(stable).copied().collect();
        all.sort_by(f64::total_cmp);
        let mut ties = 0.0;
        let mut i = 0;
        while i < all.len() {
            let mut j = i;
            while j < all.len() && all[j] == all[i] {
                j += 1;
            }
            let t = (j - i) as f64;
            ties += t * t * t - t;
            i = j;
        }
        let (m, n) = (canary.len() as f64, stable.len() as f64);
        let big = m + n;
        (u, m * n / 12.0 * ((big + 1.0) - ties / (big * (big - 1.0))))
    }

    #[test]
    fn histogram_sorts_merges_and_drops_zeros() {
        let x = h(&[(3.0, 1), (1.0, 2), (3.0, 4), (2.0, 0), (-0.0, 1), (0.0, 1)]);
        assert_eq!(x.points(), &[(0.0, 2), (1.0, 2), (3.0, 5)]);
        assert_eq!(x.count(), 9);
        assert!(matches!(Histogram::from_pairs([(f64::NAN, 1)]), Err(e) if e.value.is_nan()));
        assert!(Histogram::from_pairs([(f64::INFINITY, 1)]).is_err());
        let mut y = Histogram::new();
        y.add(3.0, 1).unwrap_or_else(|e| panic!("{e}"));
        y.add(1.0, 2).unwrap_or_else(|e| panic!("{e}"));
        y.add(3.0, 4).unwrap_or_else(|e| panic!("{e}"));
        y.add(2.0, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(y.points(), &[(1.0, 2), (3.0, 5)]);
        assert!(y.add(f64::NAN, 1).is_err());
    }

    #[test]
    fn quantiles() {
        let x = samples(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(x.quantile(0.5), Some(2.0));
        assert_eq!(x.quantile(0.0), Some(1.0));
        assert_eq!(x.quantile(0.75), Some(3.0));
        assert_eq!(x.quantile(1.0), Some(4.0));
        assert_eq!(Histogram::new().quantile(0.5), None);
        let y = h(&[(10.0, 90), (500.0, 10)]);
        assert_eq!(y.quantile(0.9), Some(10.0));
        assert_eq!(y.quantile(0.95), Some(500.0));
    }

    #[test]
    fn u_and_variance_match_brute_force_with_ties() {
        let canary = [5.0, 3.0, 3.0, 8.0, 1.0, 5.0, 5.0];
        let stable = [2.0, 3.0, 5.0, 5.0, 7.0, 1.0, 1.0, 9.0, 3.0];
        let mw = MannWhitney::new(samples(&canary).points(), samples(&stable).points(), 0.0);
        let (u, var) = brute(&canary, &stable);
        assert!((mw.u - u).abs() < 1e-9, "{} vs {u}", mw.u);
        assert!((mw.var - var).abs() < 1e-9, "{} vs {var}", mw.var);
        // Shifted: canary - 2.
        let shifted: Vec<f64> = canary.iter().map(|v| v - 2.0).collect();
        let mw = MannWhitney::new(samples(&canary).points(), samples(&stable).points(), 2.0);
        let (u, var) = brute(&shifted, &stable);
        assert!((mw.u - u).abs() < 1e-9 && (mw.var - var).abs() < 1e-9);
        // No ties: the classic variance.
        let mw = MannWhitney::new(
            samples(&[1.0, 2.0, 3.0]).points(),
            samples(&[1.5, 2.5]).points(),
            0.0,
        );
        assert_eq!(mw.u, 3.0);
        assert!((mw.var - 3.0 * 2.0 * 6.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn all_tied_carries_no_evidence() {
        let mw = MannWhitney::new(h(&[(5.0, 30)]).points(), h(&[(5.0, 300)]).points(), 0.0);
        assert_eq!(mw.var, 0.0);
        assert_eq!(mw.z(), 0.0);
        let o = judge().judge(&h(&[(5.0, 30)]), &h(&[(5.0, 300)]));
        // Shifted by the 10 ms tolerance the canary is faster: not worse.
        assert!(o.is_not_worse(), "{o:?}");
    }

    #[test]
    fn mixture_is_about_one_at_zero_and_grows_with_the_score() {
        // S = 0: Λ = 1/√(τ²I + 1) ≤ 1.
        let v = ln_mixture(0.0, 100.0, 0.2, true);
        assert!((v - (-0.5 * 5f64.ln())).abs() < 1e-6, "{v}");
        let mut last = f64::NEG_INFINITY;
        for z in 0..80 {
            let z = z as f64 / 10.0;
            let info = 500.0f64;
            let v = ln_mixture(z * info.sqrt(), info, 0.2, true);
            assert!(v > last);
            last = v;
        }
        // The z bound for 1/alpha = 2000 at I = 215 (20 vs 180 points) is
        // about 4.2.
        let info = 215.0f64;
        let cross = (0..1000)
            .map(|i| i as f64 / 100.0)
            .find(|z| ln_mixture(z * info.sqrt(), info, 0.2, true) >= 2000f64.ln());
        assert!(
            matches!(cross, Some(z) if (4.0..4.4).contains(&z)),
            "{cross:?}"
        );
        // Faster is the mirror image.
        let a = ln_mixture(-50.0, 500.0, 0.2, false);
        let b = ln_mixture(50.0, 500.0, 0.2, true);
        assert!((a - b).abs() < 1e-12);
    }

    #[test]
    fn below_minimum_points_is_inconclusive() {
        let o = judge().judge(&h(&[(900.0, 5)]), &h(&[(50.0, 1000)]));
        assert_eq!(o.reason(), "needs 15 more canary data points (5 of 20)");
        let o = judge().judge(&Histogram::new(), &Histogram::new());
        assert!(o.is_inconclusive());
    }

    #[test]
    fn three_hundred_ms_slower_is_worse_at_once() {
        let stable: Vec<(f64, u64)> = (40..60).map(|v| (v as f64, 9)).collect();
        let canary: Vec<(f64, u64)> = (340..360).map(|v| (v as f64, 1)).collect();
        let o = judge().judge(&h(&canary), &h(&stable));
        let Outcome::Worse { evidence } = &o else {
            panic!("{o:?}")
        };
        assert!(
            evidence.starts_with(
                "canary median 349 ms vs stable 49.0 ms (+300 ms, +612 %) over 20 vs 180 points: slower, P(canary slower) = 1.00, z = 7.3"
            ),
            "{evidence}"
        );
    }

    #[test]
    fn a_tiny_significant_difference_is_never_worse() {
        // 0.1 ms slower, on a million points: significant, within tolerance.
        let stable: Vec<(f64, u64)> = (0..100).map(|v| (40.0 + v as f64 * 0.1, 90_000)).collect();
        let canary: Vec<(f64, u64)> = (0..100).map(|v| (40.1 + v as f64 * 0.1, 10_000)).collect();
        let (c, s) = (h(&canary), h(&stable));
        let mw = MannWhitney::new(c.points(), s.points(), 0.0);
        assert!(mw.z() > 10.0, "{}", mw.z());
        let o = judge().judge(&c, &s);
        assert!(o.is_not_worse(), "{o:?}");
    }

    #[test]
    fn same_distribution_becomes_not_worse() {
        let stable: Vec<(f64, u64)> = (30..70).map(|v| (v as f64, 90)).collect();
        let canary: Vec<(f64, u64)> = (30..70).map(|v| (v as f64, 10)).collect();
        let o = judge().judge(&h(&canary), &h(&stable));
        assert!(o.is_not_worse(), "{o:?}");
        assert!(
            o.reason().contains("less than the tolerance 10.0 ms"),
            "{o:?}"
        );
        // With little data: inconclusive, with a projection.
        let stable: Vec<(f64, u64)> = (0..180).map(|v| (v as f64, 1)).collect();
        let canary: Vec<(f64, u64)> = (0..20).map(|v| (v as f64 * 9.0, 1)).collect();
        let o = judge().judge(&h(&canary), &h(&stable));
        assert!(o.is_inconclusive(), "{o:?}");
        assert!(o.reason().contains("needs about"), "{o:?}");
    }

    #[test]
    fn slower_beyond_tolerance_but_not_yet_significant_is_inconclusive() {
        // Wide, overlapping distributions, medians 30 ms apart, few points.
        let stable: Vec<f64> = (0..40).map(|v| v as f64 * 10.0).collect();
        let canary: Vec<f64> = (0..20).map(|v| 30.0 + v as f64 * 20.0).collect();
        let o = judge().judge(&samples(&canary), &samples(&stable));
        assert!(o.is_inconclusive(), "{o:?}");
    }

    #[test]
    fn tolerance_is_relative_for_slow_services() {
        // Stable median 1 s: 10 % is 100 ms, so +50 ms is within it.
        let stable: Vec<(f64, u64)> = (950..1050).map(|v| (v as f64, 90)).collect();
        let canary: Vec<(f64, u64)> = (1000..1100).map(|v| (v as f64, 10)).collect();
        let o = judge().judge(&h(&canary), &h(&stable));
        assert!(!o.is_worse(), "{o:?}");
        // +150 ms is beyond it.
        let canary: Vec<(f64, u64)> = (1100..1200).map(|v| (v as f64, 10)).collect();
        let o = judge().judge(&h(&canary), &h(&stable));
        assert!(o.is_worse(), "{o:?}");
        assert!(o.reason().contains("tolerance 99.9 ms"), "{o:?}");
    }

    #[test]
    fn quantile_is_configurable() {
        let cfg = LatencyConfig {
            quantile: 0.95,
            ..LatencyConfig::default()
        };
        let j = LatencyJudge::new(cfg, 20).unwrap_or_else(|e| panic!("{e}"));
        // Same median, a slow tail on the canary.
        let stable = h(&[(50.0, 9_000), (60.0, 900)]);
        let canary = h(&[(50.0, 900), (60.0, 0), (900.0, 200)]);
        let o = j.judge(&canary, &stable);
        assert!(o.is_worse(), "{o:?}");
        assert!(o.reason().starts_with("canary p95 900 ms"), "{o:?}");
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = |cfg: LatencyConfig| LatencyJudge::new(cfg, 20).is_err();
        let d = LatencyConfig::default;
        assert!(bad(LatencyConfig { alpha: 2.0, ..d() }));
        assert!(bad(LatencyConfig { beta: 0.0, ..d() }));
        assert!(bad(LatencyConfig {
            tolerance_ms: -1.0,
            ..d()
        }));
        assert!(bad(LatencyConfig {
            tolerance_ratio: f64::INFINITY,
            ..d()
        }));
        assert!(bad(LatencyConfig {
            quantile: 1.5,
            ..d()
        }));
        assert!(bad(LatencyConfig { tau: 0.0, ..d() }));
        let j = LatencyJudge::new(
            LatencyConfig {
                min_points: Some(7),
                ..d()
            },
            20,
        );
        assert_eq!(j.map(|j| j.min_points()).ok(), Some(7));
    }
}
