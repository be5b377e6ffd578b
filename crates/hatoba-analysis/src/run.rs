//! An analysis run: the measurements of several metrics, counted against
//! their limits, and the run's verdict. Argo Rollouts' AnalysisRun
//! semantics, made fail-safe.
//!
//! The caller (the controller) asks [`RunTracker::due`] which metrics to
//! measure now, measures them (a provider query judged by the metric's
//! conditions), and hands each result to [`RunTracker::record`] as an
//! [`Observation`]. The tracker schedules the next measurement and, once
//! the run is decided, returns its [`RunVerdict`]. It reads no clock: every
//! time is a [`Millis`] passed in.
//!
//! # The rules
//!
//! Observations:
//! - `Passed`, `Failed` and `Inconclusive` are measurements: each counts
//!   towards the metric's measurements (and `count`), restarts its wait for
//!   evidence, and resets its streak of consecutive provider errors.
//! - `Error` (the provider failed: down, timed out, answered garbage, had
//!   no data) is **not** a measurement of the version, and **not** an
//!   inconclusive measurement (Argo Rollouts' rule: errors are counted
//!   apart from inconclusive measurements). It adds one to the metric's
//!   `errors` and `consecutive_errors` and becomes its last error; it does
//!   not count towards `count` or `inconclusive_limit`, never counts as a
//!   pass, and does not restart the wait for evidence. Only
//!   `consecutive_error_limit` (the spec's `consecutiveErrorLimit`, default
//!   4) bounds errors: with a limit of 4, four errors in a row are
//!   tolerated and a fifth makes the run inconclusive.
//! - `Insufficient` (below the metric's minimum evidence, e.g. "12 of 20
//!   requests") is **not** a measurement either: only `insufficient` is
//!   counted; it neither resets nor extends the error streak, and does not
//!   restart the wait for evidence.
//!
//! Neither an error nor insufficient data is evidence: a metric that sees
//! only those is measured again at each interval until the error limit or
//! the wait for evidence (rule 4) ends the run. So a run is always decided
//! in bounded time, even with a huge `consecutive_error_limit`.
//!
//! Every observation schedules the metric's next measurement at
//! `at + interval` (an interval of 0 is taken as 1 s, so a run never spins);
//! the first is due at `started + interval`.
//!
//! After each observation the run is decided, in this order (metrics in
//! their order within each rule):
//! 1. **Fail** when a metric has more failed measurements than its
//!    `failure_limit`: `metric X: N failed measurements, limit L`. Failure
//!    takes precedence over everything else.
//! 2. **Inconclusive** when a metric has more consecutive provider errors
//!    than its `consecutive_error_limit`:
//!    `metric X: N consecutive provider errors: <last error>`.
//!    The streak counts errors since the metric's last passed, failed or
//!    inconclusive measurement (insufficient observations in between
//!    neither break nor extend it).
//! 3. **Inconclusive** when a metric has more inconclusive measurements
//!    (provider errors not included) than its `inconclusive_limit`:
//!    `metric X: N inconclusive measurements, limit L: <last observation>`.
//! 4. **Inconclusive** when the observation was `Insufficient` or `Error`
//!    and the metric has had no measurement (only insufficient
//!    observations and provider errors) for longer than
//!    `max_wait_for_evidence` since the run started, or since its last
//!    measurement: `metric X: not enough data after 5m: <what is missing>`,
//!    or `... after 5m: error: <what happened>` after an error. Thin
//!    evidence never passes; it runs out. A provider failing at every
//!    interval ends the run by whichever comes first: rule 2 at its
//!    `consecutive_error_limit + 1`-th error, or this wait (e.g. with a
//!    limit of 4, a 1m interval and a 5m wait, rule 2 at the fifth error;
//!    with a huge limit, this wait). When both apply to the same
//!    observation, rule 2 names the reason.
//! 5. **Inconclusive** when a metric has all the measurements it needs
//!    (below) and none of them passed (all failed or inconclusive within
//!    the limits; errors are not measurements):
//!    `metric X: no passed measurement in N`. Hatoba never promotes on a
//!    metric that has not passed once; Argo Rollouts would.
//! 6. **Pass** when every metric has all the measurements it needs and no
//!    rule above applied.
//!
//! How many measurements a metric needs:
//! - In a step run (`background = false`), `count`, or 1 without a count.
//! - In a background run (`background = true`), `count`; without a count
//!   the metric is measured until the run is stopped, so a background run
//!   whose metrics have no count never passes by itself: it only ever
//!   returns `Fail` or `Inconclusive`.
//! - A count of 0 is taken as 1: a run never passes without evidence.
//!
//! A metric that has all the measurements it needs is no longer due. Once
//! a verdict has been returned the run is done: nothing is due and
//! `record` returns `None`. A run without metrics is done from the start,
//! inconclusive ("no metrics to measure"). `record` for a metric index the
//! run does not have is ignored (`None`).
//!
//! Evidence: a run *has evidence* once each of its metrics has passed at
//! least once ([`RunTracker::missing_evidence`] says what is missing
//! before that). The controller reports it to the rollout machine after
//! each measurement; a rollout never promotes on a run without evidence
//! unless a person says so.
//!
//! The tracker is `Serialize`/`Deserialize` so the controller can keep it
//! in its write-ahead record and resume the run after a restart.

use std::fmt;
use std::time::Duration;

use hatoba_core::{Millis, format_duration};
use serde::{Deserialize, Serialize};

/// The interval used in place of an interval of zero.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How one metric of a run is measured and judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricRules {
    /// The metric's name, as in `hatoba.yaml`; it names the metric in the
    /// verdict's reason.
    pub name: String,
    /// Time between measurements (0 is taken as 1 s).
    pub interval: Duration,
    /// How many measurements the metric needs; `None` means 1 in a step run
    /// and "until stopped" in a background run.
    pub count: Option<u32>,
    /// Failed measurements tolerated; one more fails the run.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated (provider errors are not
    /// inconclusive measurements); one more makes the run inconclusive.
    pub inconclusive_limit: u32,
    /// Consecutive provider errors tolerated (the spec's
    /// `consecutiveErrorLimit`, default 4); one more makes the run
    /// inconclusive.
    pub consecutive_error_limit: u32,
}

/// The result of measuring one metric once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The value met the metric's success condition.
    Passed,
    /// The value met the metric's failure condition.
    Failed,
    /// The value met neither condition (or the judge could not tell), with
    /// the reason.
    Inconclusive(String),
    /// The provider failed (down, timeout, garbage, no data), with what
    /// happened: not a measurement; it counts only towards the metric's
    /// consecutive errors.
    Error(String),
    /// Too little data to judge (e.g. "12 of 20 requests"): not a
    /// measurement; the metric is measured again at its next interval.
    Insufficient(String),
}

impl fmt::Display for Observation {
    /// `passed`, `failed`, `inconclusive: ...`, `error: ...`,
    /// `insufficient: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observation::Passed => f.write_str("passed"),
            Observation::Failed => f.write_str("failed"),
            Observation::Inconclusive(why) => write!(f, "inconclusive: {why}"),
            Observation::Error(why) => write!(f, "error: {why}"),
            Observation::Insufficient(why) => write!(f, "insufficient: {why}"),
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunVerdict {
    /// Every metric has the measurements it needs and none broke a limit:
    /// the rollout may go on.
    Pass,
    /// A metric failed more often than its limit: abort and roll back. The
    /// reason names the metric.
    Fail(String),
    /// Too many inconclusive measurements, provider errors, or too little
    /// data for too long: pause, never promote. The reason names the metric.
    Inconclusive(String),
}

/// What one metric of a run has seen so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricSummary {
    /// The metric's name.
    pub name: String,
    /// Measurements taken: passed + failed + inconclusive; provider errors
    /// and insufficient observations are not measurements.
    pub measurements: u32,
    /// Measurements that passed.
    pub passed: u32,
    /// Measurements that failed.
    pub failed: u32,
    /// Inconclusive measurements (provider errors not included).
    pub inconclusive: u32,
    /// Provider errors (not measurements, not in `inconclusive`).
    pub errors: u32,
    /// Provider errors since the last passed, failed or inconclusive
    /// measurement.
    pub consecutive_errors: u32,
    /// Observations with too little data (not measurements).
    pub insufficient: u32,
    /// The latest observation in words (see [`Observation`]'s `Display`),
    /// `None` before the first.
    pub last: Option<String>,
}

/// One analysis run: its metrics' measurements and, once decided, its
/// verdict. See the module docs for the rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTracker {
    metrics: Vec<MetricState>,
    started: Millis,
    background: bool,
    max_wait_for_evidence: Duration,
    verdict: Option<RunVerdict>,
}

/// One metric's rules and counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MetricState {
    rules: MetricRules,
    /// When it is next due.
    next_at: Millis,
    measurements: u32,
    passed: u32,
    failed: u32,
    inconclusive: u32,
    errors: u32,
    consecutive_errors: u32,
    insufficient: u32,
    /// The run's start or the metric's latest measurement: where the wait
    /// for evidence is counted from.
    evidence_since: Millis,
    /// The latest observation in words.
    last: Option<String>,
    /// The latest provider error's text.
    last_error: Option<String>,
}

impl MetricState {
    fn interval(&self) -> Duration {
        interval(self.rules.interval)
    }
}

fn interval(d: Duration) -> Duration {
    if d.is_zero() { MIN_INTERVAL } else { d }
}

impl RunTracker {
    /// A run of `metrics` that started at `started`. `background` runs
    /// during the whole rollout (see the module docs for what it changes);
    /// `max_wait_for_evidence` bounds how long a metric may see only
    /// insufficient data.
    pub fn new(
        metrics: Vec<MetricRules>,
        started: Millis,
        background: bool,
        max_wait_for_evidence: Duration,
    ) -> RunTracker {
        let verdict = metrics
            .is_empty()
            .then(|| RunVerdict::Inconclusive("no metrics to measure".to_owned()));
        let metrics = metrics
            .into_iter()
            .map(|rules| MetricState {
                next_at: started.saturating_add(interval(rules.interval)),
                rules,
                measurements: 0,
                passed: 0,
                failed: 0,
                inconclusive: 0,
                errors: 0,
                consecutive_errors: 0,
                insufficient: 0,
                evidence_since: started,
                last: None,
                last_error: None,
            })
            .collect();
        RunTracker {
            metrics,
            started,
            background,
            max_wait_for_evidence,
            verdict,
        }
    }

    /// The metrics (by index in the order given to [`RunTracker::new`])
    /// whose next measurement time has come at `now`. Empty once the run is
    /// done; a metric with all the measurements it needs is never due.
    pub fn due(&self, now: Millis) -> Vec<usize> {
        if self.verdict.is_some() {
            return Vec::new();
        }
        self.metrics
            .iter()
            .enumerate()
            .filter(|(_, m)| !self.complete(m) && m.next_at <= now)
            .map(|(i, _)| i)
            .collect()
    }

    /// When the next measurement is due, `None` once the run is done (or
    /// when no metric needs another measurement).
    pub fn next_due(&self) -> Option<Millis> {
        if self.verdict.is_some() {
            return None;
        }
        self.metrics
            .iter()
            .filter(|m| !self.complete(m))
            .map(|m| m.next_at)
            .min()
    }

    /// Records metric `metric`'s observation taken at `at`, schedules its
    /// next measurement at `at + interval`, and returns the run's verdict
    /// once decided, `None` while undecided. Returns `None` (and records
    /// nothing) once the run is done or for an index the run does not have.
    pub fn record(&mut self, metric: usize, at: Millis, obs: Observation) -> Option<RunVerdict> {
        if self.verdict.is_some() {
            return None;
        }
        let state = self.metrics.get_mut(metric)?;
        state.next_at = at.saturating_add(state.interval());
        state.last = Some(obs.to_string());
        let measured = match &obs {
            Observation::Passed => {
                state.passed = state.passed.saturating_add(1);
                true
            }
            Observation::Failed => {
                state.failed = state.failed.saturating_add(1);
                true
            }
            Observation::Inconclusive(_) => {
                state.inconclusive = state.inconclusive.saturating_add(1);
                true
            }
            // A provider error is not a measurement of the version: it
            // counts only towards `consecutive_error_limit` (Argo Rollouts'
            // rule), past which the run is inconclusive. It never counts as
            // a pass, towards `count` or `inconclusive_limit`, and does not
            // restart the wait for evidence.
            Observation::Error(why) => {
                state.errors = state.errors.saturating_add(1);
                state.consecutive_errors = state.consecutive_errors.saturating_add(1);
                state.last_error = Some(why.clone());
                false
            }
            Observation::Insufficient(_) => {
                state.insufficient = state.insufficient.saturating_add(1);
                false
            }
        };
        if measured {
            state.measurements = state.measurements.saturating_add(1);
            state.evidence_since = state.evidence_since.max(at);
            state.consecutive_errors = 0;
        }
        let verdict = self.decide(metric, at, &obs)?;
        self.verdict = Some(verdict.clone());
        Some(verdict)
    }

    /// Per metric, in order: what it has seen so far.
    pub fn summary(&self) -> Vec<MetricSummary> {
        self.metrics
            .iter()
            .map(|m| MetricSummary {
                name: m.rules.name.clone(),
                measurements: m.measurements,
                passed: m.passed,
                failed: m.failed,
                inconclusive: m.inconclusive,
                errors: m.errors,
                consecutive_errors: m.consecutive_errors,
                insufficient: m.insufficient,
                last: m.last.clone(),
            })
            .collect()
    }

    /// What the run lacks of evidence: `None` once every metric has passed
    /// at least once, else the first metric that has not, with its latest
    /// observation (`metric success-rate: insufficient: 0 of the 20
    /// requests needed in the last 10s`, `metric errors: error: webhook
    /// answered 500`) or `no measurement yet`. The rollout machines hold a
    /// promotion while this is `Some` (no promotion without evidence).
    pub fn missing_evidence(&self) -> Option<String> {
        self.metrics.iter().find(|m| m.passed == 0).map(|m| {
            format!(
                "metric {}: {}",
                m.rules.name,
                m.last.as_deref().unwrap_or("no measurement yet")
            )
        })
    }

    /// Whether the run has its verdict.
    pub fn is_done(&self) -> bool {
        self.verdict.is_some()
    }

    /// The run's verdict once decided (the one [`RunTracker::record`]
    /// returned, or the inconclusive verdict of a run without metrics).
    pub fn verdict(&self) -> Option<&RunVerdict> {
        self.verdict.as_ref()
    }

    /// When the run started.
    pub fn started(&self) -> Millis {
        self.started
    }

    /// Whether this is a background run.
    pub fn is_background(&self) -> bool {
        self.background
    }

    /// How many measurements a metric needs before the run may pass; `None`
    /// for a background metric without a count.
    fn needed(&self, m: &MetricState) -> Option<u32> {
        let count = if self.background {
            m.rules.count?
        } else {
            m.rules.count.unwrap_or(1)
        };
        Some(count.max(1))
    }

    fn complete(&self, m: &MetricState) -> bool {
        self.needed(m).is_some_and(|n| m.measurements >= n)
    }

    /// The rules of the module docs, in order, after an observation of
    /// metric `metric` at `at`.
    fn decide(&self, metric: usize, at: Millis, obs: &Observation) -> Option<RunVerdict> {
        if let Some(m) = self
            .metrics
            .iter()
            .find(|m| m.failed > m.rules.failure_limit)
        {
            return Some(RunVerdict::Fail(format!(
                "metric {}: {} failed measurements, limit {}",
                m.rules.name, m.failed, m.rules.failure_limit
            )));
        }
        if let Some(m) = self
            .metrics
            .iter()
            .find(|m| m.consecutive_errors > m.rules.consecutive_error_limit)
        {
            return Some(RunVerdict::Inconclusive(format!(
                "metric {}: {} consecutive provider errors: {}",
                m.rules.name,
                m.consecutive_errors,
                m.last_error.as_deref().unwrap_or("unknown error")
            )));
        }
        if let Some(m) = self
            .metrics
            .iter()
            .find(|m| m.inconclusive > m.rules.inconclusive_limit)
        {
            return Some(RunVerdict::Inconclusive(format!(
                "metric {}: {} inconclusive measurements, limit {}: {}",
                m.rules.name,
                m.inconclusive,
                m.rules.inconclusive_limit,
                m.last.as_deref().unwrap_or("no observation")
            )));
        }
        let m = self.metrics.get(metric)?;
        // Errors are not evidence either: without this, a metric whose
        // provider keeps failing under a huge error limit would never end.
        let missing = match obs {
            Observation::Insufficient(missing) => Some(missing.clone()),
            Observation::Error(why) => Some(format!("error: {why}")),
            _ => None,
        };
        if let Some(missing) = missing
            && at.since(m.evidence_since) > self.max_wait_for_evidence
        {
            return Some(RunVerdict::Inconclusive(format!(
                "metric {}: not enough data after {}: {missing}",
                m.rules.name,
                format_duration(self.max_wait_for_evidence)
            )));
        }
        if let Some(m) = self
            .metrics
            .iter()
            .find(|m| self.complete(m) && m.passed == 0)
        {
            return Some(RunVerdict::Inconclusive(format!(
                "metric {}: no passed measurement in {}",
                m.rules.name, m.measurements
            )));
        }
        if self.metrics.iter().all(|m| self.complete(m)) {
            return Some(RunVerdict::Pass);
        }
        None
    }
}
