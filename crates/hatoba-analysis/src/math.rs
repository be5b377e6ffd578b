//! The numerical pieces the judges share: log-gamma and log-beta, the
//! normal distribution's log-CDF, a log-sum-exp, Bernoulli log-likelihoods,
//! the beta-binomial confidence sequence, and number formatting for the
//! reasons. Plain `f64`, no dependencies.

use std::f64::consts::PI;

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine terms; relative error below
/// 1e-13 over the range the judges use).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (PI / (PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// `ln B(a, b)`.
pub(crate) fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln erfc(z)` for `z >= 0` (Chebyshev fit, relative error of erfc below
/// 1.2e-7), computed in the log domain so that it stays finite far in the
/// tail.
fn ln_erfc_nonneg(z: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t.ln() - z * z + poly
}

/// `ln Φ(x)`, the log of the standard normal CDF, accurate in both tails.
pub(crate) fn ln_norm_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    if x < 0.0 {
        0.5f64.ln() + ln_erfc_nonneg(z)
    } else {
        (-0.5 * ln_erfc_nonneg(z).exp()).ln_1p()
    }
}

/// `ln Σ exp(xs)`, without overflow.
pub(crate) fn ln_sum_exp(xs: impl IntoIterator<Item = f64> + Clone) -> f64 {
    let max = xs.clone().into_iter().fold(f64::NEG_INFINITY, f64::max);
    if max.is_infinite() {
        return max;
    }
    max + xs.into_iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// `x ln p + (n - x) ln(1 - p)`, the Bernoulli log-likelihood of `x`
/// successes in `n` trials, with `0 ln 0 = 0`.
pub(crate) fn bernoulli_ll(n: f64, x: f64, p: f64) -> f64 {
    let term = |k: f64, q: f64| if k == 0.0 { 0.0 } else { k * q.ln() };
    term(x, p) + term(n - x, 1.0 - p)
}

/// Jeffreys prior of the beta-binomial confidence sequence.
const PRIOR: (f64, f64) = (0.5, 0.5);

/// Always-valid two-sided confidence interval for a Bernoulli rate after `x`
/// successes in `n` trials, at level `level` (the probability that the true
/// rate is ever outside, over all `n`).
///
/// The beta-binomial mixture martingale: `M_n(p) = ∫ L(q) dBeta(q) / L(p)`
/// is a nonnegative martingale with mean 1 when `p` is the true rate, so by
/// Ville's inequality `P(∃n: M_n(p) ≥ 1/level) ≤ level`; the interval is
/// `{p : M_n(p) < 1/level}`, the set where `ln L(p)` is at least
/// `ln m - ln(1/level)`, `m` the mixture's marginal likelihood.
pub(crate) fn rate_bounds(n: f64, x: f64, level: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let (a, b) = PRIOR;
    // ln B(1/2, 1/2) = ln π.
    let ln_m = ln_beta(x + a, n - x + b) - PI.ln();
    let cut = ln_m + level.ln();
    // In log-odds θ, f(θ) = ln L - cut = xθ - n·ln(1 + e^θ) - cut is
    // smooth and concave on the whole line, positive at the estimate and
    // falling on either side. Newton's method started outside the set
    // converges monotonically to its edge without crossing it (the tangent
    // lies above a concave function), so each bound errs on the wide side.
    let f = |t: f64| x * t - n * softplus(t) - cut;
    let slope = |t: f64| x - n * logistic(t);
    let newton = |mut t: f64| {
        for _ in 0..100 {
            let step = f(t) / slope(t);
            if !step.is_finite() {
                break;
            }
            t -= step;
            if step.abs() <= 1e-12 * t.abs().max(1.0) {
                break;
            }
        }
        logistic(t)
    };
    let p_hat = x / n;
    let centre = if x <= 0.0 || x >= n {
        // The estimate is at an edge: start from the other edge's scale.
        (1.0 / n).ln() * if x <= 0.0 { 1.0 } else { -1.0 }
    } else {
        (p_hat / (1.0 - p_hat)).ln()
    };
    // Walk from the centre by doubling steps until outside.
    let outside = |dir: f64| {
        let mut d = 1.0;
        let mut t = centre + dir * d;
        while f(t) >= 0.0 && d < 1e6 {
            d *= 2.0;
            t = centre + dir * d;
        }
        t
    };
    let lower = if x <= 0.0 {
        0.0
    } else {
        newton(outside(-1.0)).clamp(0.0, p_hat)
    };
    let upper = if x >= n {
        1.0
    } else {
        newton(outside(1.0)).clamp(p_hat, 1.0)
    };
    (lower, upper)
}

/// `ln(1 + e^t)`, without overflow.
fn softplus(t: f64) -> f64 {
    t.max(0.0) + (-t.abs()).exp().ln_1p()
}

/// `1 / (1 + e^-t)`, without overflow.
fn logistic(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// Smallest `k` in `[1, max]` with `ok(k)`, `ok` monotone (false then
/// true): doubling, then a few bisection steps (about 3 % precision).
/// `None` when even `max` is not enough.
pub(crate) fn smallest_factor(max: f64, ok: impl Fn(f64) -> bool) -> Option<f64> {
    let mut lo = 1.0;
    let mut hi = 2.0;
    loop {
        if ok(hi) {
            break;
        }
        lo = hi;
        hi *= 2.0;
        if hi > max {
            return None;
        }
    }
    for _ in 0..5 {
        let mid = 0.5 * (lo + hi);
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// A rate as a percentage: one decimal from 1 %, two significant digits
/// below.
pub(crate) fn pct(p: f64) -> String {
    let v = 100.0 * p;
    if v == 0.0 {
        "0 %".to_string()
    } else if v >= 1.0 {
        format!("{v:.1} %")
    } else {
        let digits = (1.0 - v.log10().floor()).clamp(1.0, 6.0) as usize;
        format!("{v:.digits$} %")
    }
}

/// A likelihood ratio, compact: `3.1e4`, `12.0`, `0.81`; from its log.
pub(crate) fn ratio(ln_x: f64) -> String {
    if ln_x.is_nan() {
        return "nan".to_string();
    }
    if ln_x > 700.0 {
        // Beyond f64: print the power of ten from the log.
        return format!("1e{:.0}", ln_x / std::f64::consts::LN_10);
    }
    let x = ln_x.exp();
    if (0.01..1000.0).contains(&x) {
        format!("{x:.2}")
    } else {
        format!("{x:.1e}")
    }
}

/// `1/p` for a bound, e.g. `2000` for 5e-4: an integer when it is one.
pub(crate) fn inverse(p: f64) -> String {
    let x = 1.0 / p;
    if (x - x.round()).abs() < 1e-6 * x && x < 1e12 {
        format!("{:.0}", x.round())
    } else {
        format!("{x:.3e}")
    }
}

/// Milliseconds, compact: `352 ms`, `4.2 ms`, `0.35 ms`.
pub(crate) fn ms(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0} ms")
    } else if a >= 1.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        let mut fact = 1.0f64;
        for n in 1..30 {
            // Γ(n) = (n-1)!
            assert!(close(ln_gamma(n as f64), fact.ln(), 1e-12) || n <= 2, "{n}");
            fact *= n as f64;
        }
        assert!(ln_gamma(1.0).abs() < 1e-13);
        assert!(ln_gamma(2.0).abs() < 1e-13);
        assert!(close(ln_gamma(0.5), PI.sqrt().ln(), 1e-13));
        assert!(close(ln_gamma(1.5), (PI.sqrt() / 2.0).ln(), 1e-12));
        // Large argument: Stirling.
        let x = 1e6f64;
        let stirling = (x - 0.5) * x.ln() - x + 0.5 * (2.0 * PI).ln() + 1.0 / (12.0 * x);
        assert!(close(ln_gamma(x), stirling, 1e-12));
    }

    #[test]
    fn ln_beta_is_symmetric_and_known() {
        assert!(close(ln_beta(2.0, 3.0), (1.0f64 / 12.0).ln(), 1e-12));
        assert!(close(ln_beta(0.5, 0.5), PI.ln(), 1e-12));
        assert!((ln_beta(3.5, 7.25) - ln_beta(7.25, 3.5)).abs() < 1e-12);
    }

    #[test]
    fn normal_cdf_known_values_and_tails() {
        assert!((ln_norm_cdf(0.0) - 0.5f64.ln()).abs() < 1e-7);
        assert!(close(ln_norm_cdf(1.959_963_985).exp(), 0.975, 1e-6));
        assert!(close(ln_norm_cdf(-1.959_963_985).exp(), 0.025, 1e-5));
        assert!(close(ln_norm_cdf(-3.090_232_306).exp(), 0.001, 1e-5));
        // Far tail: ln Φ(-40) ≈ -800 - ln(40 √(2π)).
        let tail = -800.0 - (40.0 * (2.0 * PI).sqrt()).ln();
        assert!(
            close(ln_norm_cdf(-40.0), tail, 1e-3),
            "{}",
            ln_norm_cdf(-40.0)
        );
        assert!(ln_norm_cdf(40.0) <= 0.0 && ln_norm_cdf(40.0) > -1e-300);
        // Monotone.
        let mut last = f64::NEG_INFINITY;
        for i in -100..100 {
            let v = ln_norm_cdf(i as f64 / 10.0);
            assert!(v >= last, "{i}");
            last = v;
        }
    }

    #[test]
    fn ln_sum_exp_is_stable() {
        assert!(close(ln_sum_exp([0.0, 0.0]), 2f64.ln(), 1e-15));
        assert!(close(
            ln_sum_exp([1000.0, 1000.0]),
            1000.0 + 2f64.ln(),
            1e-15
        ));
        assert_eq!(ln_sum_exp([f64::NEG_INFINITY]), f64::NEG_INFINITY);
        assert_eq!(ln_sum_exp(std::iter::empty()), f64::NEG_INFINITY);
    }

    #[test]
    fn bernoulli_ll_handles_edges() {
        assert_eq!(bernoulli_ll(10.0, 0.0, 0.0), 0.0);
        assert_eq!(bernoulli_ll(10.0, 10.0, 1.0), 0.0);
        assert_eq!(bernoulli_ll(10.0, 1.0, 0.0), f64::NEG_INFINITY);
        assert!(close(bernoulli_ll(4.0, 1.0, 0.5), 4.0 * 0.5f64.ln(), 1e-15));
    }

    #[test]
    fn rate_bounds_contain_the_estimate_and_shrink() {
        let (lo, hi) = rate_bounds(0.0, 0.0, 0.01);
        assert_eq!((lo, hi), (0.0, 1.0));
        let (lo, hi) = rate_bounds(100.0, 0.0, 0.005);
        assert_eq!(lo, 0.0);
        // (1 - p)^100 = m·level with m = B(.5, 100.5)/B(.5,.5) ≈ 1/√(100π).
        let expect = 1.0 - ((0.005f64 / (100.0 * PI).sqrt()).ln() / 100.0).exp();
        assert!(close(hi, expect, 1e-3), "{hi} vs {expect}");
        let (lo, hi) = rate_bounds(100.0, 100.0, 0.005);
        assert_eq!(hi, 1.0);
        assert!(lo > 0.9 && lo < 1.0);
        let mut last = (0.0, 1.0);
        for n in [100.0, 1_000.0, 10_000.0, 100_000.0] {
            let b = rate_bounds(n, 0.1 * n, 0.005);
            assert!(b.0 < 0.1 && b.1 > 0.1, "{b:?}");
            assert!(b.0 > last.0 && b.1 < last.1, "{b:?} vs {last:?}");
            last = b;
        }
        // At 100,000 trials the half-width is a few standard errors.
        assert!(last.1 - 0.1 < 0.005 && 0.1 - last.0 < 0.005, "{last:?}");
    }

    #[test]
    fn rate_bounds_sit_on_the_edge_of_the_set() {
        // Against a plain bisection of {p : ln L(p) >= cut}.
        for &(n, x) in &[
            (20.0, 0.0),
            (20.0, 1.0),
            (20.0, 19.0),
            (200.0, 41.0),
            (1_800.0, 2.0),
            (10_000.0, 50.0),
            (1e6, 3.0),
            (1e6, 999_990.0),
            (3.5, 1.25),
        ] {
            for level in [0.005, 0.05, 1e-6] {
                let (a, b) = (0.5, 0.5);
                let cut = ln_beta(x + a, n - x + b) - ln_beta(a, b) + f64::ln(level);
                let inside = |p: f64| bernoulli_ll(n, x, p) >= cut;
                let edge = |mut lo: f64, mut hi: f64, lo_inside: bool| {
                    for _ in 0..200 {
                        let mid = 0.5 * (lo + hi);
                        if inside(mid) == lo_inside {
                            lo = mid;
                        } else {
                            hi = mid;
                        }
                    }
                    lo
                };
                let p_hat = x / n;
                let (lo, hi) = rate_bounds(n, x, level);
                let want_hi = if x == n { 1.0 } else { edge(p_hat, 1.0, true) };
                let want_lo = if x == 0.0 {
                    0.0
                } else {
                    edge(p_hat, 0.0, true)
                };
                assert!(
                    (hi - want_hi).abs() <= 1e-9 * want_hi,
                    "{n} {x} {level}: {hi} vs {want_hi}"
                );
                assert!(
                    (lo - want_lo).abs() <= 1e-9 * want_lo.max(1e-300),
                    "{n} {x} {level}: {lo} vs {want_lo}"
                );
                assert!(
                    hi >= want_hi * (1.0 - 1e-10) && lo <= want_lo * (1.0 + 1e-10),
                    "{n} {x} {level}: [{lo}, {hi}] vs [{want_lo}, {want_hi}]"
                );
            }
        }
    }

    #[test]
    fn smallest_factor_finds_the_threshold() {
        let k = smallest_factor(1e6, |k| k >= 37.0).unwrap_or(0.0);
        assert!((37.0..=38.2).contains(&k), "{k}");
        let k = smallest_factor(1e6, |_| true).unwrap_or(0.0);
        assert!((1.0..1.05).contains(&k), "{k}");
        assert_eq!(smallest_factor(100.0, |_| false), None);
    }

    #[test]
    fn formats() {
        assert_eq!(pct(0.205), "20.5 %");
        assert_eq!(pct(0.001), "0.10 %");
        assert_eq!(pct(0.000_333), "0.033 %");
        assert_eq!(pct(0.0), "0 %");
        assert_eq!(pct(1.0), "100.0 %");
        assert_eq!(ratio(31_000f64.ln()), "3.1e4");
        assert_eq!(ratio(12f64.ln()), "12.00");
        assert_eq!(ratio(0.001f64.ln()), "1.0e-3");
        assert_eq!(ratio(1000.0 * std::f64::consts::LN_10), "1e1000");
        assert_eq!(inverse(5e-4), "2000");
        assert_eq!(inverse(0.01), "100");
        assert_eq!(inverse(0.003), "3.333e2");
        assert_eq!(ms(352.4), "352 ms");
        assert_eq!(ms(4.24), "4.2 ms");
        assert_eq!(ms(0.354), "0.35 ms");
    }
}
