//! Analysis as the controller runs it: one `RunTracker` per analysis run
//! (a canary step's, or the background one), fed with measurements from the
//! providers, every measurement recorded in the store.
//!
//! - `builtin` metrics read the proxy's window of the canary version
//!   (`long-lived-open` and `long-lived-abnormal` read its totals: counts of
//!   WebSockets and event streams open now and ended abnormally, with no
//!   window and no minimum of requests); below
//!   the metric's minimum evidence (`minSamples`, default 20 requests) the
//!   observation is *insufficient*: not a measurement, shown with what is
//!   missing, and an analysis that never gets enough is inconclusive after
//!   five minutes (it never passes on thin evidence). A template's
//!   `traffic.minRequests` sets the minimum for its metrics that do not
//!   say, and `traffic.generate` has the controller send requests itself
//!   (`traffic.rs`).
//! - `prometheus`, `webhook` and `command` metrics ask their provider; any
//!   failure of the provider (down, slow, garbage, no data, NaN) is an
//!   *error*: not a measurement, never a pass; a command that exits
//!   non-zero is read as 0, which can fail the metric but never pass it
//!   (where 0 would pass, it is an error too); more consecutive errors than
//!   `consecutiveErrorLimit` (default 4) make the analysis inconclusive,
//!   which pauses the rollout for a person.
//! - Beside the thresholds, the statistical judge (`hatoba-analysis`)
//!   compares the canary with the stable version on their traffic since the
//!   analysis run started: both versions' totals are read from the data
//!   plane when the run starts (its `baseline`, saved with the run) and
//!   every judgement is on what they added since. A canary whose errors or
//!   latency are significantly worse fails the run at once, however the
//!   thresholds look. It can stop a canary, never promote one: passing is
//!   the thresholds' job. A run judges unless every one of its templates
//!   says `judge: false`.

use crate::dataplane::DataPlane;
use hatoba_analysis::run::{MetricRules, Observation, RunTracker, RunVerdict};
use hatoba_analysis::{Arm, Histogram, Judge, Sample};
use hatoba_core::Millis;
use hatoba_metrics::provider::{self, Args, Measurement};
use hatoba_metrics::{Bucket, Window, WindowStats};
use hatoba_proxy::control::VersionTotals;
use hatoba_rollout::{AnalysisRun, Verdict};
use hatoba_spec::{AnalysisTemplate, BuiltinMetric, Metric, Provider, Spec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Least requests in the window before a builtin metric is judged, unless
/// the metric says otherwise.
pub(crate) const MIN_REQUESTS: u64 = 20;

/// How long a metric may lack evidence before its run is inconclusive.
const MAX_WAIT_FOR_EVIDENCE: Duration = Duration::from_secs(300);

/// One analysis run in progress.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Active {
    /// The templates it uses.
    pub(crate) templates: Vec<String>,
    /// Values for the templates' arguments.
    pub(crate) args: BTreeMap<String, String>,
    /// The measurements so far and the verdict rules.
    pub(crate) tracker: RunTracker,
    /// Both versions' totals when the run started: the statistical judge
    /// works on what they added since. `None` while not read yet (no
    /// stable version, a run that does not judge, or a record saved
    /// before baselines existed: then it is read at the next look).
    #[serde(default)]
    pub(crate) baseline: Option<Sample>,
}

/// What a measurement needs to know about the rollout.
pub(crate) struct Ctx<'a> {
    pub(crate) data_plane: &'a dyn DataPlane,
    pub(crate) service: &'a str,
    pub(crate) canary: &'a str,
    pub(crate) stable: Option<&'a str>,
    pub(crate) env: &'a str,
    pub(crate) base_dir: &'a PathBuf,
    /// How long the new version has been running in this rollout: windows
    /// are kept within it (see [`within`]).
    pub(crate) running_for: Duration,
}

/// The metrics of some templates, in order, with their template.
pub(crate) fn metrics<'a>(
    spec: &'a Spec,
    templates: &[String],
) -> Vec<(&'a AnalysisTemplate, &'a Metric)> {
    templates
        .iter()
        .filter_map(|n| spec.analysis.templates.get(n))
        .flat_map(|t| t.metrics.iter().map(move |m| (t, m)))
        .collect()
}

/// Starts a run over these templates.
pub(crate) fn start(
    spec: &Spec,
    templates: Vec<String>,
    args: BTreeMap<String, String>,
    background: bool,
    now: Millis,
) -> Active {
    let rules = metrics(spec, &templates)
        .into_iter()
        .map(|(_, m)| MetricRules {
            name: m.name.clone(),
            interval: m.interval,
            count: m.count,
            failure_limit: m.failure_limit,
            inconclusive_limit: m.inconclusive_limit,
            consecutive_error_limit: m.consecutive_error_limit,
        })
        .collect();
    Active {
        templates,
        args,
        tracker: RunTracker::new(rules, now, background, MAX_WAIT_FOR_EVIDENCE),
        baseline: None,
    }
}

/// Whether the statistical judge runs beside these templates: unless every
/// one says `judge: false`.
pub(crate) fn wants_judge(spec: &Spec, templates: &[String]) -> bool {
    templates
        .iter()
        .filter_map(|n| spec.analysis.templates.get(n))
        .any(|t| t.judge)
}

/// One measurement's result, as recorded.
pub(crate) struct Taken {
    pub(crate) metric: String,
    pub(crate) observation: Observation,
    pub(crate) value: Option<f64>,
    pub(crate) detail: String,
}

/// The proxy's window for a wanted length, by the spec's rule (whose
/// `hatoba validate` warns when a `window` is not one of them).
fn window_for(d: Duration) -> Window {
    let kept = hatoba_spec::BuiltinProvider::kept_window(d);
    Window::ALL
        .into_iter()
        .find(|w| w.length() == kept)
        .unwrap_or(Window::M5)
}

/// `wanted`, or a shorter window when the new version has not been running
/// that long in this rollout: the longest that fits in `running_for`, 10 s
/// at least. A version label that served before (a rollout rolled back, then
/// the same version deployed again) would otherwise be judged on what the
/// earlier attempt answered.
fn within(wanted: Window, running_for: Duration) -> Window {
    let fits = Window::ALL
        .into_iter()
        .filter(|w| w.length() <= running_for)
        .max()
        .unwrap_or(Window::S10);
    wanted.min(fits)
}

/// Template arguments: the template's defaults, overridden by the step's.
fn template_args(
    t: &AnalysisTemplate,
    given: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in &t.args {
        if let Some(v) = given.get(&a.name).or(a.value.as_ref()) {
            // Both spellings the spec accepts: `{{name}}` and `{{args.name}}`.
            out.insert(format!("args.{}", a.name), v.clone());
            out.insert(a.name.clone(), v.clone());
        }
    }
    out
}

/// Takes one measurement of a metric.
pub(crate) async fn measure(
    ctx: &Ctx<'_>,
    template: &AnalysisTemplate,
    metric: &Metric,
    given: &BTreeMap<String, String>,
) -> Taken {
    let judge = |value: f64, detail: String| -> Taken {
        let failed = metric
            .failure_condition
            .as_ref()
            .is_some_and(|c| c.eval(value))
            || metric
                .success_condition
                .as_ref()
                .is_some_and(|c| !c.eval(value));
        Taken {
            metric: metric.name.clone(),
            observation: if failed {
                Observation::Failed
            } else {
                Observation::Passed
            },
            value: Some(value),
            detail,
        }
    };
    let args = Args {
        service: ctx.service.to_owned(),
        version: ctx.canary.to_owned(),
        canary_version: ctx.canary.to_owned(),
        stable_version: ctx.stable.map(str::to_owned),
        env: ctx.env.to_owned(),
        template_args: template_args(template, given),
    };
    let from_provider = |m: Measurement, who: &str| match m {
        Measurement::Value(v) => judge(v, format!("{who}: {v}")),
        // A check that said it failed may fail the metric with its 0, but
        // never pass it: where 0 would pass, it is a provider error.
        Measurement::Failed(how) => match judge(0.0, format!("{how}: read as 0")) {
            failed @ Taken {
                observation: Observation::Failed,
                ..
            } => failed,
            _ => {
                let why = format!("{how}: a check that fails never passes (its 0 would)");
                Taken {
                    metric: metric.name.clone(),
                    observation: Observation::Error(why.clone()),
                    value: None,
                    detail: why,
                }
            }
        },
        Measurement::Inconclusive(why) => Taken {
            metric: metric.name.clone(),
            observation: Observation::Error(why.clone()),
            value: None,
            detail: why,
        },
    };
    match &metric.provider {
        Provider::Builtin(b)
            if matches!(
                b.metric,
                BuiltinMetric::LongLivedOpen | BuiltinMetric::LongLivedAbnormal
            ) =>
        {
            // Counts, not rates: no window and no minimum of requests. A
            // version that never served has none.
            let t = ctx
                .data_plane
                .totals(ctx.service, ctx.canary)
                .await
                .unwrap_or_default();
            let (n, what) = if b.metric == BuiltinMetric::LongLivedOpen {
                (t.long_lived_open, "open now")
            } else {
                (t.long_lived_abnormal, "ended abnormally")
            };
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            judge(n as f64, format!("{n} long-lived connections {what}"))
        }
        Provider::Builtin(b) => {
            let window = within(
                window_for(b.window.unwrap_or(metric.interval)),
                ctx.running_for,
            );
            let min = metric
                .min_samples
                .or_else(|| template.traffic.as_ref().and_then(|t| t.min_requests))
                .unwrap_or(MIN_REQUESTS);
            let stats = ctx.data_plane.window(ctx.service, ctx.canary, window).await;
            let requests = stats.as_ref().map_or(0, WindowStats::requests);
            let Some(stats) = stats.filter(|_| requests >= min) else {
                let missing = format!(
                    "{requests} of the {min} requests needed in the last {}",
                    window.as_str()
                );
                return Taken {
                    metric: metric.name.clone(),
                    observation: Observation::Insufficient(missing.clone()),
                    value: None,
                    detail: missing,
                };
            };
            let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            let value = match b.metric {
                BuiltinMetric::SuccessRate => stats.success_rate().unwrap_or(f64::NAN),
                BuiltinMetric::ErrorRate => stats.success_rate().map_or(f64::NAN, |s| 1.0 - s),
                BuiltinMetric::LatencyP50 => ms(stats.quantile(0.50)),
                BuiltinMetric::LatencyP95 => ms(stats.quantile(0.95)),
                BuiltinMetric::LatencyP99 => ms(stats.quantile(0.99)),
                BuiltinMetric::RequestRate => stats.rate_per_sec(),
                // Measured above, from the totals.
                BuiltinMetric::LongLivedOpen | BuiltinMetric::LongLivedAbnormal => f64::NAN,
            };
            if !value.is_finite() {
                return Taken {
                    metric: metric.name.clone(),
                    observation: Observation::Insufficient("no judged requests yet".to_owned()),
                    value: None,
                    detail: "no judged requests yet".to_owned(),
                };
            }
            judge(
                value,
                format!(
                    "{} requests in the last {}",
                    stats.requests(),
                    window.as_str()
                ),
            )
        }
        Provider::Prometheus(p) => {
            from_provider(provider::prometheus(p, &args).await, "prometheus")
        }
        Provider::Webhook(w) => from_provider(provider::webhook(w, &args).await, "webhook"),
        Provider::Command(c) => {
            from_provider(provider::command(c, &args, ctx.base_dir).await, "command")
        }
    }
}

/// The verdict a tracker's decision means for the rollout machine.
pub(crate) fn verdict(v: &RunVerdict) -> (Verdict, String) {
    match v {
        RunVerdict::Pass => (Verdict::Pass, "passed".to_owned()),
        RunVerdict::Fail(why) => (Verdict::Fail, why.clone()),
        RunVerdict::Inconclusive(why) => (Verdict::Inconclusive, why.clone()),
    }
}

/// The run's name in the history: `background`, `step 2`.
pub(crate) fn run_name(run: AnalysisRun) -> String {
    match run {
        AnalysisRun::Background => "background".to_owned(),
        AnalysisRun::Step(i) => format!("step {i}"),
        AnalysisRun::PrePromotion => "pre-promotion".to_owned(),
    }
}

fn arm(totals: Option<VersionTotals>) -> Arm {
    let Some(t) = totals else {
        return Arm::default();
    };
    let pairs = t.latency_buckets.iter().map(|(i, n)| {
        let b = Bucket::at(usize::try_from(*i).unwrap_or(usize::MAX));
        (b.representative().as_secs_f64() * 1000.0, *n)
    });
    Arm {
        requests: t.judged,
        errors: t.against.min(t.judged),
        latency: Histogram::from_pairs(pairs).unwrap_or_default(),
    }
}

/// Both versions' totals since the data plane started (a version that
/// never served counts zero); `None` without a stable version.
pub(crate) async fn totals(
    data_plane: &dyn DataPlane,
    service: &str,
    canary: &str,
    stable: Option<&str>,
) -> Option<Sample> {
    let stable = stable?;
    Some(Sample {
        canary: arm(data_plane.totals(service, canary).await),
        stable: arm(data_plane.totals(service, stable).await),
    })
}

/// The statistical judge on what both versions served since `baseline`
/// (their totals when the run started): `Some(evidence)` when the canary
/// is significantly worse.
pub(crate) fn compare(
    judge: &Judge,
    stable: &str,
    baseline: &Sample,
    now: &Sample,
) -> Option<String> {
    let j = judge.judge(&now.since(baseline));
    j.outcome.is_worse().then(|| {
        format!(
            "canary worse than stable {stable} since the analysis started: {}",
            j.reasons().join("; ")
        )
    })
}

/// The statistical judge with the documented defaults (`docs/analysis.md`).
pub(crate) fn default_judge() -> Option<Judge> {
    Judge::new(hatoba_analysis::Config::new()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lived_builtins_read_the_canarys_counts() {
        use hatoba_metrics::{LongLivedEnd, Recorder, Role};
        use std::sync::Arc;
        let recorder = Arc::new(Recorder::new());
        let canary = recorder.group("web", Role::Canary, "v2");
        let _open = canary.open_long_lived();
        for how in [
            LongLivedEnd::Abnormal,
            LongLivedEnd::Abnormal,
            LongLivedEnd::Stopped,
        ] {
            canary.open_long_lived().end(how, Duration::from_secs(1));
        }
        let dp = crate::dataplane::LocalDataPlane::new(
            Arc::clone(&recorder),
            hatoba_proxy::ProxyOptions::default(),
            0,
        );
        let text = "app: t
services:
  web:
    process: {command: ./web}
    route: {listen: 127.0.0.1:8080}
analysis:
  templates:
    ws:
      metrics:
        - {name: open, interval: 1s, successCondition: result >= 1, provider: {builtin: {metric: long-lived-open}}}
        - name: cut
          interval: 1s
          failureCondition: result > 0
          provider: {builtin: {metric: long-lived-abnormal}}
";
        let parsed = hatoba_spec::parse(text);
        let spec = parsed
            .spec
            .unwrap_or_else(|| panic!("{:?}", parsed.diagnostics));
        let base_dir = PathBuf::from(".");
        let ctx = Ctx {
            data_plane: &dp,
            service: "web",
            canary: "v2",
            stable: None,
            env: "default",
            base_dir: &base_dir,
            running_for: Duration::from_secs(60),
        };
        let template = &spec.analysis.templates["ws"];
        let taken: Vec<Taken> = {
            let mut out = Vec::new();
            for m in &template.metrics {
                out.push(measure(&ctx, template, m, &BTreeMap::new()).await);
            }
            out
        };
        assert_eq!(taken[0].value, Some(1.0), "{}", taken[0].detail);
        assert!(matches!(taken[0].observation, Observation::Passed));
        // Two cut by the version; the one stopped by a drain is not.
        assert_eq!(taken[1].value, Some(2.0), "{}", taken[1].detail);
        assert!(matches!(taken[1].observation, Observation::Failed));
        // A version that never served has none, without waiting for traffic.
        let none = Ctx {
            canary: "v9",
            ..ctx
        };
        let cut = measure(&none, template, &template.metrics[1], &BTreeMap::new()).await;
        assert_eq!(cut.value, Some(0.0), "{}", cut.detail);
    }

    #[test]
    fn a_run_judges_unless_every_template_switches_the_judge_off() {
        let text = |judge: &str| {
            format!(
                "app: t
services:
  web:
    process: {{command: ./web}}
    route: {{listen: 127.0.0.1:8080}}
analysis:
  templates:
    own:
      judge: {judge}
      metrics:
        - {{name: up, interval: 1s, provider: {{command: {{command: ./ok}}}}}}
    other:
      metrics:
        - {{name: up, interval: 1s, provider: {{command: {{command: ./ok}}}}}}
"
            )
        };
        let spec = |judge: &str| {
            let t = text(judge);
            let parsed = hatoba_spec::parse(&t);
            parsed
                .spec
                .unwrap_or_else(|| panic!("{:?}", parsed.diagnostics))
        };
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let off = spec("false");
        assert!(!wants_judge(&off, &names(&["own"])));
        assert!(wants_judge(&off, &names(&["own", "other"])));
        assert!(wants_judge(&off, &names(&["other"])));
        assert!(wants_judge(&spec("true"), &names(&["own"])));
    }

    #[test]
    fn the_judge_sees_only_what_came_after_the_baseline() {
        let judge = default_judge().unwrap();
        let arm = |requests: u64, errors: u64| Arm {
            requests,
            errors,
            latency: Histogram::from_pairs([(50.0, requests)]).unwrap(),
        };
        // The canary's label failed a third of 3000 requests before.
        let baseline = Sample {
            canary: arm(3000, 1000),
            stable: arm(30_000, 10),
        };
        let good = Sample {
            canary: arm(3500, 1000),
            stable: arm(35_000, 12),
        };
        assert_eq!(compare(&judge, "v1", &baseline, &good), None);
        let bad = Sample {
            canary: arm(3500, 1100),
            stable: arm(35_000, 12),
        };
        let why = compare(&judge, "v1", &baseline, &bad).unwrap();
        assert!(
            why.starts_with(
                "canary worse than stable v1 since the analysis started: errors: canary 100/500"
            ),
            "{why}"
        );
    }

    #[test]
    fn windows_stay_within_the_time_the_new_version_has_run() {
        let s = Duration::from_secs;
        // Not yet 10 s: the shortest window (a few seconds of an earlier
        // attempt at most).
        assert_eq!(within(Window::M5, s(0)), Window::S10);
        assert_eq!(within(Window::M5, s(59)), Window::S10);
        assert_eq!(within(Window::M5, s(60)), Window::M1);
        assert_eq!(within(Window::M5, s(299)), Window::M1);
        assert_eq!(within(Window::M5, s(300)), Window::M5);
        // Never longer than asked for.
        assert_eq!(within(Window::S10, s(3600)), Window::S10);
        assert_eq!(within(Window::M1, s(3600)), Window::M1);
    }
}
