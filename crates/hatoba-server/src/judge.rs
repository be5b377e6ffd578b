//! A minimal analysis judge over the proxy's own metrics (the `builtin`
//! provider): each metric's condition is evaluated on the canary version's
//! window. Other providers (Prometheus, webhook, command) and the
//! statistical judge come with the analysis issue; until then a template
//! using them is judged inconclusive, which never promotes.

use hatoba_metrics::{Window, WindowStats};
use hatoba_rollout::Verdict;
use hatoba_spec::{AnalysisTemplate, BuiltinMetric, Provider};
use std::collections::HashMap;
use std::time::Duration;

/// Least requests in the window before a builtin metric is judged.
pub(crate) const MIN_REQUESTS: u64 = 20;

fn window_for(d: Duration) -> Window {
    if d <= Duration::from_secs(10) {
        Window::S10
    } else if d <= Duration::from_secs(60) {
        Window::M1
    } else {
        Window::M5
    }
}

/// The windows of the canary version's traffic the builtin metrics read.
pub(crate) fn windows_needed(templates: &[&AnalysisTemplate]) -> Vec<Window> {
    let mut out: Vec<Window> = templates
        .iter()
        .flat_map(|t| t.metrics.iter())
        .filter_map(|m| match &m.provider {
            Provider::Builtin(b) => Some(window_for(b.window.unwrap_or(m.interval))),
            _ => None,
        })
        .collect();
    out.sort_by_key(|w| w.length());
    out.dedup();
    out
}

/// Judges every metric of the templates once; the worst verdict wins
/// (Fail over Inconclusive over Pass). Returns the verdict and a line that
/// says why, for the history.
pub(crate) fn judge(
    templates: &[&AnalysisTemplate],
    windows: &HashMap<Window, WindowStats>,
) -> (Verdict, String) {
    let mut verdict = Verdict::Pass;
    let mut why = Vec::new();
    for t in templates {
        for m in &t.metrics {
            let Provider::Builtin(b) = &m.provider else {
                verdict = worse(verdict, Verdict::Inconclusive);
                why.push(format!("{}: provider not available yet", m.name));
                continue;
            };
            let window = window_for(b.window.unwrap_or(m.interval));
            let Some(stats) = windows.get(&window) else {
                verdict = worse(verdict, Verdict::Inconclusive);
                why.push(format!("{}: no traffic yet", m.name));
                continue;
            };
            if stats.requests() < MIN_REQUESTS {
                verdict = worse(verdict, Verdict::Inconclusive);
                why.push(format!(
                    "{}: {} requests, needs {MIN_REQUESTS}",
                    m.name,
                    stats.requests()
                ));
                continue;
            }
            let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            let value = match b.metric {
                BuiltinMetric::SuccessRate => stats.success_rate().unwrap_or(f64::NAN),
                BuiltinMetric::ErrorRate => stats.success_rate().map_or(f64::NAN, |s| 1.0 - s),
                BuiltinMetric::LatencyP50 => ms(stats.quantile(0.50)),
                BuiltinMetric::LatencyP95 => ms(stats.quantile(0.95)),
                BuiltinMetric::LatencyP99 => ms(stats.quantile(0.99)),
                BuiltinMetric::RequestRate => stats.rate_per_sec(),
            };
            let failed = m.failure_condition.as_ref().is_some_and(|c| c.eval(value))
                || m.success_condition.as_ref().is_some_and(|c| !c.eval(value));
            if failed {
                verdict = Verdict::Fail;
            }
            why.push(format!(
                "{} = {value:.3} ({} requests): {}",
                m.name,
                stats.requests(),
                if failed { "failed" } else { "ok" }
            ));
        }
    }
    (verdict, why.join("; "))
}

fn worse(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Fail, _) | (_, Verdict::Fail) => Verdict::Fail,
        (Verdict::Inconclusive, _) | (_, Verdict::Inconclusive) => Verdict::Inconclusive,
        _ => Verdict::Pass,
    }
}
