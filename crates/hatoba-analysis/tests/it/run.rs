//! Analysis runs on a simulated clock: every rule of `hatoba_analysis::run`
//! (limits at 0 and above, precedence, error streaks, the wait for
//! evidence, several metrics, background runs, nothing after the verdict),
//! and a property test that random observations never pass a run on too
//! few measurements or past a limit, and never leave a metric without
//! evidence past the wait.

use std::time::Duration;

use hatoba_analysis::{MetricRules, MetricSummary, Observation, RunTracker, RunVerdict};
use hatoba_core::Millis;
use proptest::prelude::*;

/// The run starts here; `t(s)` is `s` seconds later.
const START: u64 = 1_700_000_000_000;

fn t(seconds: u64) -> Millis {
    Millis(START + seconds * 1000)
}

const MINUTE: u64 = 60;

/// A metric measured every `interval_s` seconds with these limits.
fn metric(name: &str, interval_s: u64, count: Option<u32>) -> MetricRules {
    MetricRules {
        name: name.to_owned(),
        interval: Duration::from_secs(interval_s),
        count,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
    }
}

fn limits(mut m: MetricRules, failure: u32, inconclusive: u32, errors: u32) -> MetricRules {
    m.failure_limit = failure;
    m.inconclusive_limit = inconclusive;
    m.consecutive_error_limit = errors;
    m
}

fn step(metrics: Vec<MetricRules>) -> RunTracker {
    RunTracker::new(metrics, t(0), false, Duration::from_secs(5 * MINUTE))
}

fn background(metrics: Vec<MetricRules>) -> RunTracker {
    RunTracker::new(metrics, t(0), true, Duration::from_secs(5 * MINUTE))
}

fn inconclusive(why: &str) -> Observation {
    Observation::Inconclusive(why.to_owned())
}

fn error(why: &str) -> Observation {
    Observation::Error(why.to_owned())
}

fn insufficient(why: &str) -> Observation {
    Observation::Insufficient(why.to_owned())
}

fn fail(why: &str) -> Option<RunVerdict> {
    Some(RunVerdict::Fail(why.to_owned()))
}

fn inconc(why: &str) -> Option<RunVerdict> {
    Some(RunVerdict::Inconclusive(why.to_owned()))
}

/// Records `observations` on metric 0, one a minute from `t(60)`, and
/// returns the verdicts.
fn feed(run: &mut RunTracker, observations: Vec<Observation>) -> Vec<Option<RunVerdict>> {
    observations
        .into_iter()
        .enumerate()
        .map(|(i, obs)| run.record(0, t(MINUTE * (i as u64 + 1)), obs))
        .collect()
}

fn summary(run: &RunTracker, metric: usize) -> MetricSummary {
    run.summary()
        .into_iter()
        .nth(metric)
        .expect("the run has this metric")
}

// Scheduling.

#[test]
fn the_first_measurement_is_due_one_interval_after_the_start() {
    let run = step(vec![metric("success-rate", MINUTE, None)]);
    assert_eq!(run.next_due(), Some(t(MINUTE)));
    assert!(run.due(t(0)).is_empty());
    assert!(run.due(Millis(t(MINUTE).0 - 1)).is_empty());
    assert_eq!(run.due(t(MINUTE)), [0]);
    assert_eq!(run.due(t(10 * MINUTE)), [0]);
    assert!(!run.is_done());
    assert_eq!(run.verdict(), None);
    assert_eq!((run.started(), run.is_background()), (t(0), false));
}

#[test]
fn each_observation_schedules_the_next_one_interval_after_it() {
    let mut run = step(vec![metric("m", 30, Some(5))]);
    // Measured late: the next is due 30 s after the measurement, not after
    // the previous due time.
    assert_eq!(run.record(0, t(45), Observation::Passed), None);
    assert_eq!(run.next_due(), Some(t(75)));
    assert!(run.due(t(74)).is_empty());
    assert_eq!(run.due(t(75)), [0]);
    // Insufficient observations are rescheduled the same way.
    assert_eq!(run.record(0, t(75), insufficient("3 of 20 requests")), None);
    assert_eq!(run.next_due(), Some(t(105)));
}

#[test]
fn an_interval_of_zero_is_one_second() {
    let mut run = step(vec![metric("m", 0, Some(3))]);
    assert_eq!(run.next_due(), Some(t(1)));
    assert!(run.due(t(0)).is_empty());
    assert_eq!(run.record(0, t(1), Observation::Passed), None);
    assert_eq!(run.next_due(), Some(t(2)));
    assert!(run.due(Millis(t(2).0 - 1)).is_empty());
}

// Passing.

#[test]
fn a_step_run_without_count_passes_on_one_passed_measurement() {
    let mut run = step(vec![metric("m", MINUTE, None)]);
    assert_eq!(
        run.record(0, t(MINUTE), Observation::Passed),
        Some(RunVerdict::Pass)
    );
    assert!(run.is_done());
    assert_eq!(run.verdict(), Some(&RunVerdict::Pass));
}

#[test]
fn a_step_run_with_count_passes_after_count_measurements() {
    let mut run = step(vec![metric("m", MINUTE, Some(3))]);
    let verdicts = feed(&mut run, vec![Observation::Passed; 3]);
    assert_eq!(verdicts, [None, None, Some(RunVerdict::Pass)]);
    let s = summary(&run, 0);
    assert_eq!((s.measurements, s.passed), (3, 3));
}

#[test]
fn a_count_of_zero_is_one() {
    let mut run = step(vec![metric("m", MINUTE, Some(0))]);
    assert_eq!(run.next_due(), Some(t(MINUTE)));
    assert_eq!(
        run.record(0, t(MINUTE), Observation::Passed),
        Some(RunVerdict::Pass)
    );
}

#[test]
fn tolerated_failures_and_inconclusives_still_pass() {
    let m = limits(metric("m", MINUTE, Some(4)), 1, 1, 4);
    let mut run = step(vec![m]);
    let verdicts = feed(
        &mut run,
        vec![
            Observation::Failed,
            Observation::Passed,
            inconclusive("between the conditions"),
            Observation::Passed,
        ],
    );
    assert_eq!(verdicts, [None, None, None, Some(RunVerdict::Pass)]);
}

#[test]
fn a_metric_that_never_passed_is_inconclusive_not_passed() {
    // Within every limit, but not one measurement passed (the error in
    // between is not a measurement, so it does not complete the count).
    let m = limits(metric("m", MINUTE, Some(2)), 1, 2, 4);
    let mut run = step(vec![m]);
    let verdicts = feed(
        &mut run,
        vec![inconclusive("a"), error("timeout"), Observation::Failed],
    );
    assert_eq!(
        verdicts,
        [None, None, inconc("metric m: no passed measurement in 2")]
    );
    let m = limits(metric("m", MINUTE, None), 1, 0, 4);
    let mut run = step(vec![m]);
    assert_eq!(
        run.record(0, t(MINUTE), Observation::Failed),
        inconc("metric m: no passed measurement in 1")
    );
}

// Failure.

#[test]
fn failure_limit_zero_fails_on_the_first_failed_measurement() {
    let mut run = step(vec![metric("error-rate", MINUTE, Some(5))]);
    let verdicts = feed(&mut run, vec![Observation::Passed, Observation::Failed]);
    assert_eq!(
        verdicts,
        [
            None,
            fail("metric error-rate: 1 failed measurements, limit 0")
        ]
    );
}

#[test]
fn failure_limit_two_fails_on_the_third_failed_measurement() {
    let m = limits(metric("m", MINUTE, Some(10)), 2, 0, 4);
    let mut run = step(vec![m]);
    let verdicts = feed(
        &mut run,
        vec![
            Observation::Failed,
            Observation::Passed,
            Observation::Failed,
            Observation::Passed,
            Observation::Failed,
        ],
    );
    assert_eq!(
        verdicts,
        [
            None,
            None,
            None,
            None,
            fail("metric m: 3 failed measurements, limit 2")
        ]
    );
}

#[test]
fn failure_takes_precedence_over_inconclusive_rules() {
    // Within the failure limit, a metric that completes without a pass is
    // inconclusive...
    let m = limits(metric("m", MINUTE, Some(2)), 1, 1, 4);
    let mut run = step(vec![m.clone()]);
    let verdicts = feed(&mut run, vec![inconclusive("a"), Observation::Failed]);
    assert_eq!(
        verdicts,
        [None, inconc("metric m: no passed measurement in 2")]
    );
    // ... but when the last measurement also breaks the failure limit, the
    // run fails.
    let mut run = step(vec![m]);
    let verdicts = feed(&mut run, vec![Observation::Failed, Observation::Failed]);
    assert_eq!(
        verdicts,
        [None, fail("metric m: 2 failed measurements, limit 1")]
    );
    // A metric at its inconclusive limit that then fails: Fail.
    let mut run = step(vec![limits(metric("m", MINUTE, Some(5)), 0, 1, 4)]);
    let verdicts = feed(&mut run, vec![inconclusive("a"), Observation::Failed]);
    assert_eq!(
        verdicts,
        [None, fail("metric m: 1 failed measurements, limit 0")]
    );
    // Another metric's tolerated inconclusive does not mask a failure.
    let mut run = step(vec![
        limits(metric("a", MINUTE, Some(5)), 0, 1, 4),
        metric("b", MINUTE, Some(5)),
    ]);
    assert_eq!(run.record(0, t(60), inconclusive("x")), None);
    assert_eq!(
        run.record(1, t(60), Observation::Failed),
        fail("metric b: 1 failed measurements, limit 0")
    );
}

// Inconclusive measurements and provider errors.

#[test]
fn inconclusive_limit_zero_stops_on_the_first_inconclusive_measurement() {
    let mut run = step(vec![metric("m", MINUTE, Some(3))]);
    assert_eq!(
        run.record(0, t(MINUTE), inconclusive("neither condition held")),
        inconc(
            "metric m: 1 inconclusive measurements, limit 0: inconclusive: neither condition held"
        )
    );
}

#[test]
fn inconclusive_limit_two_stops_on_the_third() {
    let m = limits(metric("m", MINUTE, Some(10)), 0, 2, 4);
    let mut run = step(vec![m]);
    let verdicts = feed(
        &mut run,
        vec![
            inconclusive("a"),
            Observation::Passed,
            inconclusive("b"),
            inconclusive("c"),
        ],
    );
    assert_eq!(
        verdicts,
        [
            None,
            None,
            None,
            inconc("metric m: 3 inconclusive measurements, limit 2: inconclusive: c")
        ]
    );
}

#[test]
fn a_provider_error_is_neither_a_measurement_nor_inconclusive() {
    // The inconclusive limit of 0 does not apply to errors: only the
    // consecutive error limit does.
    let mut run = step(vec![metric("m", MINUTE, Some(3))]);
    assert_eq!(run.record(0, t(MINUTE), error("connection refused")), None);
    let s = summary(&run, 0);
    assert_eq!(
        (
            s.measurements,
            s.passed,
            s.inconclusive,
            s.errors,
            s.consecutive_errors
        ),
        (0, 0, 0, 1, 1)
    );
    assert_eq!(s.last.as_deref(), Some("error: connection refused"));
    assert_eq!(run.next_due(), Some(t(2 * MINUTE)));
    // Nor does it count towards `count`: the run still needs three
    // measurements.
    assert_eq!(run.record(0, t(2 * MINUTE), Observation::Passed), None);
    assert_eq!(run.record(0, t(3 * MINUTE), Observation::Passed), None);
    assert_eq!(
        run.record(0, t(4 * MINUTE), Observation::Passed),
        Some(RunVerdict::Pass)
    );
    let s = summary(&run, 0);
    assert_eq!((s.measurements, s.errors, s.consecutive_errors), (3, 1, 0));
    // A step run without count is not passed, nor completed, by an error.
    let mut run = step(vec![metric("m", MINUTE, None)]);
    assert_eq!(run.record(0, t(MINUTE), error("HTTP 503")), None);
    assert_eq!(run.due(t(2 * MINUTE)), [0]);
}

#[test]
fn four_errors_are_tolerated_by_a_limit_of_four_and_a_fifth_is_not() {
    let mut run = step(vec![metric("m", MINUTE, Some(10))]);
    let verdicts = feed(
        &mut run,
        vec![
            error("timeout"),
            error("timeout"),
            error("HTTP 502"),
            error("timeout"),
            error("connection refused"),
        ],
    );
    assert_eq!(
        verdicts,
        [
            None,
            None,
            None,
            None,
            inconc("metric m: 5 consecutive provider errors: connection refused")
        ]
    );
    assert_eq!(summary(&run, 0).measurements, 0);
}

#[test]
fn a_passed_measurement_restarts_the_error_streak() {
    let mut run = step(vec![metric("m", MINUTE, Some(10))]);
    let mut observations = vec![error("timeout"); 4];
    observations.push(Observation::Passed);
    observations.extend(vec![error("timeout"); 4]);
    let verdicts = feed(&mut run, observations);
    assert_eq!(verdicts, vec![None; 9]);
    let s = summary(&run, 0);
    assert_eq!(
        (s.measurements, s.passed, s.errors, s.consecutive_errors),
        (1, 1, 8, 4)
    );
    // The fifth error since the passed measurement ends the run.
    assert_eq!(
        run.record(0, t(10 * MINUTE), error("HTTP 502")),
        inconc("metric m: 5 consecutive provider errors: HTTP 502")
    );
}

#[test]
fn the_error_limit_names_the_reason_when_the_wait_is_also_over() {
    // Errors every 2m: the third is both past the limit of 2 and 6m after
    // the start.
    let m = limits(metric("m", 2 * MINUTE, Some(3)), 0, 0, 2);
    let mut run = step(vec![m]);
    assert_eq!(run.record(0, t(2 * MINUTE), error("a")), None);
    assert_eq!(run.record(0, t(4 * MINUTE), error("b")), None);
    assert_eq!(
        run.record(0, t(6 * MINUTE), error("c")),
        inconc("metric m: 3 consecutive provider errors: c")
    );
}

#[test]
fn consecutive_errors_past_the_limit_are_inconclusive() {
    let m = limits(metric("m", MINUTE, Some(10)), 0, 10, 2);
    let mut run = step(vec![m]);
    let verdicts = feed(
        &mut run,
        vec![
            error("timeout"),
            error("HTTP 502"),
            error("not a number: <html>"),
        ],
    );
    assert_eq!(
        verdicts,
        [
            None,
            None,
            inconc("metric m: 3 consecutive provider errors: not a number: <html>")
        ]
    );
}

#[test]
fn consecutive_error_limit_zero_stops_on_the_first_error() {
    let m = limits(metric("m", MINUTE, Some(10)), 0, 10, 0);
    let mut run = step(vec![m]);
    assert_eq!(
        run.record(0, t(MINUTE), error("timeout")),
        inconc("metric m: 1 consecutive provider errors: timeout")
    );
}

#[test]
fn a_measurement_resets_the_error_streak_but_insufficient_data_does_not() {
    for reset in [
        Observation::Passed,
        Observation::Failed,
        inconclusive("between"),
    ] {
        let m = limits(metric("m", MINUTE, Some(20)), 5, 10, 2);
        let mut run = step(vec![m]);
        let verdicts = feed(
            &mut run,
            vec![
                error("a"),
                error("b"),
                reset.clone(),
                error("c"),
                error("d"),
            ],
        );
        assert_eq!(verdicts, [None, None, None, None, None], "{reset:?}");
        let s = summary(&run, 0);
        assert_eq!((s.errors, s.consecutive_errors), (4, 2), "{reset:?}");
    }
    let m = limits(metric("m", MINUTE, Some(20)), 5, 10, 2);
    let mut run = step(vec![m]);
    let verdicts = feed(
        &mut run,
        vec![
            error("a"),
            error("b"),
            insufficient("1 of 20 requests"),
            error("c"),
        ],
    );
    assert_eq!(
        verdicts,
        [
            None,
            None,
            None,
            inconc("metric m: 3 consecutive provider errors: c")
        ]
    );
}

// Insufficient data.

#[test]
fn insufficient_data_is_not_a_measurement() {
    let mut run = step(vec![metric("m", MINUTE, Some(2))]);
    let verdicts = feed(
        &mut run,
        vec![
            insufficient("3 of 20 requests"),
            Observation::Passed,
            insufficient("12 of 20 requests"),
            Observation::Passed,
        ],
    );
    assert_eq!(verdicts, [None, None, None, Some(RunVerdict::Pass)]);
    let s = summary(&run, 0);
    assert_eq!((s.measurements, s.passed, s.insufficient), (2, 2, 2));
}

#[test]
fn insufficient_data_for_longer_than_the_wait_is_inconclusive() {
    let mut run = step(vec![metric("m", MINUTE, None)]);
    // 1m .. 5m after the start: still within the 5m wait.
    for minute in 1..=5 {
        assert_eq!(
            run.record(0, t(minute * MINUTE), insufficient("12 of 20 requests")),
            None,
            "minute {minute}"
        );
    }
    assert_eq!(
        run.record(0, t(5 * MINUTE + 1), insufficient("15 of 20 requests")),
        inconc("metric m: not enough data after 5m: 15 of 20 requests")
    );
    assert_eq!(summary(&run, 0).measurements, 0);
}

#[test]
fn the_wait_for_evidence_counts_from_the_last_measurement() {
    let m = limits(metric("m", MINUTE, Some(5)), 0, 1, 4);
    let mut run = step(vec![m]);
    assert_eq!(run.record(0, t(MINUTE), Observation::Passed), None);
    // 5m after the passed measurement: still waiting.
    for minute in 2..=6 {
        assert_eq!(
            run.record(0, t(minute * MINUTE), insufficient("x")),
            None,
            "minute {minute}"
        );
    }
    // An error is not evidence: it does not restart the wait.
    assert_eq!(run.record(0, t(6 * MINUTE), error("timeout")), None);
    // An inconclusive measurement is a measurement: it does.
    assert_eq!(
        run.record(0, t(6 * MINUTE + 30), inconclusive("between")),
        None
    );
    assert_eq!(run.record(0, t(11 * MINUTE), insufficient("x")), None);
    assert_eq!(run.record(0, t(11 * MINUTE + 30), error("timeout")), None);
    assert_eq!(
        run.record(0, t(11 * MINUTE + 31), insufficient("8 of 20 requests")),
        inconc("metric m: not enough data after 5m: 8 of 20 requests")
    );
}

#[test]
fn errors_under_a_huge_error_limit_still_end_at_the_wait_for_evidence() {
    // Only errors, never past the limit: the run still ends, inconclusive,
    // once the wait for evidence is over.
    let m = limits(metric("m", MINUTE, None), 0, 0, u32::MAX);
    let mut run = step(vec![m]);
    for minute in 1..=5 {
        assert_eq!(
            run.record(0, t(minute * MINUTE), error("connection refused")),
            None,
            "minute {minute}"
        );
    }
    assert_eq!(
        run.record(0, t(5 * MINUTE + 1), error("connection refused")),
        inconc("metric m: not enough data after 5m: error: connection refused")
    );
    let s = summary(&run, 0);
    assert_eq!((s.measurements, s.errors), (0, 6));
    // Errors mixed with insufficient data, after a passed measurement, in a
    // background run (which never passes by itself): it ends within the
    // wait plus one interval of the last measurement, whatever arrives.
    let m = limits(metric("m", 10, None), 0, 0, u32::MAX);
    let mut run = background(vec![m]);
    assert_eq!(run.record(0, t(10), Observation::Passed), None);
    let mut now = 10;
    let verdict = loop {
        now += 10;
        assert!(now <= 10 + 5 * MINUTE + 10, "still undecided at {now} s");
        let obs = if now % 20 == 0 {
            error("timeout")
        } else {
            insufficient("2 of 20 requests")
        };
        if let Some(verdict) = run.record(0, t(now), obs) {
            break verdict;
        }
    };
    assert_eq!(
        verdict,
        RunVerdict::Inconclusive("metric m: not enough data after 5m: error: timeout".to_owned())
    );
    // The first observation more than 5m after the passed one (at 320 s,
    // an error) ends it.
    assert_eq!(now, 10 + 5 * MINUTE + 10);
    // With an interval longer than the wait, the first error gives up.
    let m = metric("m", 10 * MINUTE, None);
    let mut run = RunTracker::new(vec![m], t(0), false, Duration::from_secs(90));
    assert_eq!(
        run.record(0, t(10 * MINUTE), error("timeout")),
        inconc("metric m: not enough data after 1m30s: error: timeout")
    );
}

#[test]
fn an_interval_longer_than_the_wait_gives_up_on_the_first_thin_answer() {
    let run = RunTracker::new(
        vec![metric("m", 10 * MINUTE, None)],
        t(0),
        false,
        Duration::from_secs(90),
    );
    let mut run = run;
    assert_eq!(
        run.record(0, t(10 * MINUTE), insufficient("0 of 20 requests")),
        inconc("metric m: not enough data after 1m30s: 0 of 20 requests")
    );
}

// Several metrics.

#[test]
fn several_metrics_with_different_intervals() {
    let mut run = step(vec![
        metric("fast", 10, Some(3)),
        metric("slow", 30, Some(1)),
    ]);
    assert_eq!(run.next_due(), Some(t(10)));
    assert_eq!(run.due(t(10)), [0]);
    assert_eq!(run.record(0, t(10), Observation::Passed), None);
    assert_eq!(run.next_due(), Some(t(20)));
    assert_eq!(run.record(0, t(20), Observation::Passed), None);
    assert_eq!(run.due(t(30)), [0, 1]);
    assert_eq!(run.record(1, t(30), Observation::Passed), None);
    // `slow` has its one measurement: it is no longer due.
    assert_eq!(run.due(t(30)), [0]);
    assert_eq!(run.due(t(1000)), [0]);
    assert_eq!(run.next_due(), Some(t(30)));
    assert_eq!(
        run.record(0, t(30), Observation::Passed),
        Some(RunVerdict::Pass)
    );
    let s = run.summary();
    assert_eq!(
        s.iter()
            .map(|m| (m.name.as_str(), m.measurements))
            .collect::<Vec<_>>(),
        [("fast", 3), ("slow", 1)]
    );
}

#[test]
fn a_run_passes_only_when_every_metric_has_its_count() {
    let mut run = step(vec![metric("a", 10, Some(2)), metric("b", 60, Some(2))]);
    for (i, at) in [10, 20, 30, 40, 50].into_iter().enumerate() {
        assert_eq!(run.record(0, t(at), Observation::Passed), None, "{i}");
    }
    assert_eq!(run.record(1, t(60), Observation::Passed), None);
    assert_eq!(
        run.record(1, t(120), Observation::Passed),
        Some(RunVerdict::Pass)
    );
}

#[test]
fn the_failing_metric_is_the_one_named() {
    let mut run = step(vec![
        metric("success-rate", 10, Some(5)),
        metric("p95-latency", 10, Some(5)),
    ]);
    assert_eq!(run.record(0, t(10), Observation::Passed), None);
    assert_eq!(
        run.record(1, t(10), Observation::Failed),
        fail("metric p95-latency: 1 failed measurements, limit 0")
    );
}

// Background runs.

#[test]
fn a_background_run_without_count_never_passes_by_itself() {
    let mut run = background(vec![metric("a", 10, None), metric("b", 20, None)]);
    assert!(run.is_background());
    let mut now = 0;
    for _ in 0..500 {
        now += 10;
        for i in run.due(t(now)) {
            assert_eq!(run.record(i, t(now), Observation::Passed), None);
        }
    }
    assert!(!run.is_done());
    assert_eq!(summary(&run, 0).measurements, 500);
    assert_eq!(summary(&run, 1).measurements, 250);
    assert_eq!(run.next_due(), Some(t(now + 10)));
    // It ends only by failing (or being inconclusive).
    assert_eq!(
        run.record(1, t(now + 20), Observation::Failed),
        fail("metric b: 1 failed measurements, limit 0")
    );
}

#[test]
fn a_background_run_without_count_can_be_inconclusive() {
    // By provider errors past the limit...
    let mut run = background(vec![metric("a", 10, None)]);
    for at in [10, 20, 30, 40] {
        assert_eq!(run.record(0, t(at), error("prometheus is down")), None);
    }
    assert_eq!(
        run.record(0, t(50), error("prometheus is down")),
        inconc("metric a: 5 consecutive provider errors: prometheus is down")
    );
    // ... or by an inconclusive measurement past the limit.
    let mut run = background(vec![metric("a", 10, None)]);
    assert_eq!(
        run.record(0, t(10), inconclusive("no condition held")),
        inconc("metric a: 1 inconclusive measurements, limit 0: inconclusive: no condition held")
    );
}

#[test]
fn a_background_run_with_count_passes_after_count_measurements_of_each() {
    let mut run = background(vec![metric("a", 10, Some(2)), metric("b", 10, Some(3))]);
    let mut verdicts = Vec::new();
    for at in [10, 20, 30] {
        for i in run.due(t(at)) {
            verdicts.push((at, i, run.record(i, t(at), Observation::Passed)));
        }
    }
    assert_eq!(
        verdicts,
        [
            (10, 0, None),
            (10, 1, None),
            (20, 0, None),
            (20, 1, None),
            (30, 1, Some(RunVerdict::Pass)),
        ]
    );
}

#[test]
fn a_background_run_mixing_counted_and_open_metrics_never_passes() {
    let mut run = background(vec![metric("a", 10, Some(1)), metric("b", 10, None)]);
    assert_eq!(run.record(0, t(10), Observation::Passed), None);
    for n in 1..50 {
        assert_eq!(run.record(1, t(10 * n), Observation::Passed), None);
    }
    assert_eq!(run.due(t(10_000)), [1]);
}

// After the verdict.

#[test]
fn nothing_happens_after_the_verdict() {
    for last in [
        Observation::Passed,
        Observation::Failed,
        inconclusive("x"),
        error("y"),
    ] {
        // `b` tolerates no error, so each of these ends the run.
        let b = limits(metric("b", 10, Some(3)), 0, 0, 0);
        let mut run = step(vec![metric("a", 10, None), b]);
        assert_eq!(run.record(1, t(10), Observation::Passed), None);
        assert_eq!(run.record(1, t(20), Observation::Passed), None);
        assert_eq!(run.record(0, t(20), Observation::Passed), None);
        let verdict = run.record(1, t(30), last.clone());
        assert!(verdict.is_some(), "{last:?}");
        assert!(run.is_done());
        assert_eq!(run.verdict(), verdict.as_ref());
        let before = run.summary();
        assert!(run.due(t(30)).is_empty());
        assert!(run.due(t(1_000_000)).is_empty());
        assert_eq!(run.next_due(), None);
        for obs in [
            Observation::Passed,
            Observation::Failed,
            error("z"),
            insufficient("w"),
        ] {
            assert_eq!(run.record(0, t(40), obs.clone()), None);
            assert_eq!(run.record(1, t(40), obs), None);
        }
        assert_eq!(run.summary(), before);
        assert_eq!(run.verdict(), verdict.as_ref());
    }
}

// Odd input.

#[test]
fn an_unknown_metric_is_ignored() {
    let mut run = step(vec![metric("a", 10, None)]);
    assert_eq!(run.record(7, t(10), Observation::Failed), None);
    assert!(!run.is_done());
    assert_eq!(summary(&run, 0).measurements, 0);
    assert_eq!(run.next_due(), Some(t(10)));
}

#[test]
fn a_run_without_metrics_is_inconclusive_from_the_start() {
    for bg in [false, true] {
        let mut run = RunTracker::new(Vec::new(), t(0), bg, Duration::from_secs(60));
        assert!(run.is_done());
        assert_eq!(
            run.verdict(),
            Some(&RunVerdict::Inconclusive(
                "no metrics to measure".to_owned()
            ))
        );
        assert!(run.due(t(100)).is_empty());
        assert_eq!(run.next_due(), None);
        assert_eq!(run.record(0, t(10), Observation::Passed), None);
    }
}

#[test]
fn time_going_backwards_does_not_panic_or_shorten_the_wait() {
    let mut run = step(vec![metric("m", 10, Some(3))]);
    assert_eq!(run.record(0, t(100), Observation::Passed), None);
    assert_eq!(run.record(0, t(50), insufficient("x")), None);
    assert_eq!(run.next_due(), Some(t(60)));
    assert_eq!(run.record(0, Millis(0), insufficient("x")), None);
}

// The summary and persistence.

#[test]
fn the_summary_counts_everything() {
    let m = limits(metric("success-rate", 10, Some(20)), 5, 5, 5);
    let mut run = step(vec![m]);
    let observations = vec![
        Observation::Passed,
        Observation::Failed,
        inconclusive("between"),
        error("timeout"),
        insufficient("3 of 20 requests"),
        error("HTTP 503"),
    ];
    assert!(feed(&mut run, observations).iter().all(Option::is_none));
    assert_eq!(
        run.summary(),
        [MetricSummary {
            name: "success-rate".to_owned(),
            measurements: 3,
            passed: 1,
            failed: 1,
            inconclusive: 1,
            errors: 2,
            consecutive_errors: 2,
            insufficient: 1,
            last: Some("error: HTTP 503".to_owned()),
        }]
    );
    let fresh = step(vec![metric("m", 10, None)]);
    assert_eq!(summary(&fresh, 0).last, None);
}

#[test]
fn observations_in_words() {
    assert_eq!(Observation::Passed.to_string(), "passed");
    assert_eq!(Observation::Failed.to_string(), "failed");
    assert_eq!(inconclusive("a").to_string(), "inconclusive: a");
    assert_eq!(error("b").to_string(), "error: b");
    assert_eq!(insufficient("c").to_string(), "insufficient: c");
}

#[test]
fn a_saved_run_resumes_where_it_stopped() {
    let m = limits(metric("m", 10, Some(3)), 1, 1, 4);
    let mut run = step(vec![m, metric("n", 20, None)]);
    assert_eq!(run.record(0, t(10), Observation::Failed), None);
    assert_eq!(run.record(0, t(20), insufficient("x")), None);
    let saved = serde_json::to_string(&run).expect("a run serializes");
    let mut resumed: RunTracker = serde_json::from_str(&saved).expect("and deserializes");
    assert_eq!(resumed, run);
    assert_eq!(resumed.next_due(), run.next_due());
    assert_eq!(resumed.record(0, t(30), Observation::Passed), None);
    assert_eq!(resumed.record(1, t(30), Observation::Passed), None);
    assert_eq!(
        resumed.record(0, t(40), Observation::Failed),
        fail("metric m: 2 failed measurements, limit 1")
    );
    // A finished run stays finished across a save.
    let saved = serde_json::to_string(&resumed).expect("a run serializes");
    let mut again: RunTracker = serde_json::from_str(&saved).expect("and deserializes");
    assert!(again.is_done());
    assert_eq!(again.record(1, t(50), Observation::Passed), None);
}

// The property: never a pass on too few measurements or past a limit.

/// What the property test tracks itself, per metric.
#[derive(Clone, Debug, Default)]
struct Model {
    measurements: u32,
    passed: u32,
    failed: u32,
    inconclusive: u32,
    errors: u32,
    consecutive_errors: u32,
    /// The run's start or the latest measurement, in ms.
    evidence_since: u64,
}

fn rules_strategy() -> impl Strategy<Value = MetricRules> {
    (
        0u64..3_000,
        proptest::option::of(0u32..5),
        0u32..3,
        0u32..4,
        prop_oneof![4 => 0u32..6, 1 => Just(u32::MAX)],
    )
        .prop_map(|(interval, count, f, i, e)| MetricRules {
            name: "m".to_owned(),
            interval: Duration::from_millis(interval),
            count,
            failure_limit: f,
            inconclusive_limit: i,
            consecutive_error_limit: e,
        })
}

fn observation_strategy() -> impl Strategy<Value = Observation> {
    prop_oneof![
        3 => Just(Observation::Passed),
        1 => Just(Observation::Failed),
        1 => Just(Observation::Inconclusive("i".to_owned())),
        1 => Just(Observation::Error("e".to_owned())),
        2 => Just(Observation::Insufficient("s".to_owned())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn never_passes_on_too_few_measurements_or_past_a_limit(
        rules in proptest::collection::vec(rules_strategy(), 1..4),
        is_background in any::<bool>(),
        wait_ms in 0u64..20_000,
        steps in proptest::collection::vec((0usize..4, 0u64..4_000, observation_strategy()), 0..80),
    ) {
        let mut run = RunTracker::new(rules.clone(), t(0), is_background, Duration::from_millis(wait_ms));
        let mut model = vec![Model { evidence_since: t(0).0, ..Model::default() }; rules.len()];
        let mut now = t(0);
        let mut decided: Option<RunVerdict> = None;
        for (metric, advance, obs) in steps {
            let metric = metric % rules.len();
            now = Millis(now.0 + advance);
            let verdict = run.record(metric, now, obs.clone());
            if decided.is_some() {
                prop_assert_eq!(verdict, None, "a verdict after the verdict");
                prop_assert!(run.due(now).is_empty());
                prop_assert_eq!(run.next_due(), None);
                continue;
            }
            // Errors and insufficient data are not measurements: an error
            // counts only towards the error streak; neither restarts the
            // wait for evidence nor breaks the streak.
            let m = &mut model[metric];
            let measured = match obs {
                Observation::Passed => { m.passed += 1; true }
                Observation::Failed => { m.failed += 1; true }
                Observation::Inconclusive(_) => { m.inconclusive += 1; true }
                Observation::Error(_) => { m.errors += 1; m.consecutive_errors += 1; false }
                Observation::Insufficient(_) => false,
            };
            if measured {
                m.measurements += 1;
                m.consecutive_errors = 0;
                m.evidence_since = now.0;
            }
            let out_of_evidence =
                !measured && now.0 - m.evidence_since > wait_ms;
            let over_limit = rules.iter().zip(&model).any(|(r, m)| {
                m.failed > r.failure_limit
                    || m.inconclusive > r.inconclusive_limit
                    || m.consecutive_errors > r.consecutive_error_limit
            });
            let failed = rules.iter().zip(&model).any(|(r, m)| m.failed > r.failure_limit);
            if over_limit {
                prop_assert!(verdict.is_some(), "a limit was exceeded without a verdict");
            }
            if failed {
                prop_assert!(matches!(verdict, Some(RunVerdict::Fail(_))), "failure must win: {:?}", verdict);
            }
            // However large the error limit, a metric without evidence for
            // longer than the wait ends the run.
            if out_of_evidence {
                prop_assert!(matches!(verdict, Some(RunVerdict::Inconclusive(_))), "no evidence past the wait: {:?}", verdict);
            }
            if verdict == Some(RunVerdict::Pass) {
                prop_assert!(!over_limit);
                for (r, m) in rules.iter().zip(&model) {
                    let needed = if is_background {
                        r.count.expect("a background run passes only with counts")
                    } else {
                        r.count.unwrap_or(1)
                    }
                    .max(1);
                    prop_assert!(m.measurements >= needed, "{} of {} measurements", m.measurements, needed);
                    prop_assert!(m.passed >= 1, "passed a metric that never passed");
                }
            }
            if let Some(v) = &verdict {
                prop_assert!(run.is_done());
                prop_assert_eq!(run.verdict(), Some(v));
                decided = verdict;
            } else {
                prop_assert!(!run.is_done());
            }
            // The tracker's own counts agree with the model's.
            for (s, m) in run.summary().iter().zip(&model) {
                prop_assert_eq!(
                    (s.measurements, s.passed, s.failed, s.inconclusive, s.errors, s.consecutive_errors),
                    (m.measurements, m.passed, m.failed, m.inconclusive, m.errors, m.consecutive_errors)
                );
            }
        }
    }
}

#[test]
fn evidence_is_missing_until_every_metric_has_passed_once() {
    let mut run = background(vec![
        metric("success-rate", 10, None),
        metric("latency", 10, None),
    ]);
    assert_eq!(
        run.missing_evidence().as_deref(),
        Some("metric success-rate: no measurement yet")
    );
    assert_eq!(
        run.record(0, t(10), insufficient("0 of the 20 requests needed")),
        None
    );
    assert_eq!(
        run.missing_evidence().as_deref(),
        Some("metric success-rate: insufficient: 0 of the 20 requests needed")
    );
    assert_eq!(run.record(0, t(20), error("webhook answered 500")), None);
    assert_eq!(
        run.missing_evidence().as_deref(),
        Some("metric success-rate: error: webhook answered 500")
    );
    // A failed measurement is a measurement, not evidence for promotion.
    let mut lenient = background(vec![limits(metric("success-rate", 10, None), 3, 0, 4)]);
    assert_eq!(lenient.record(0, t(10), Observation::Failed), None);
    assert_eq!(
        lenient.missing_evidence().as_deref(),
        Some("metric success-rate: failed")
    );
    assert_eq!(run.record(0, t(30), Observation::Passed), None);
    assert_eq!(
        run.missing_evidence().as_deref(),
        Some("metric latency: no measurement yet")
    );
    assert_eq!(run.record(1, t(30), Observation::Passed), None);
    assert_eq!(run.missing_evidence(), None);
    // Evidence once seen stays: later thin data does not take it back.
    assert_eq!(run.record(0, t(40), insufficient("3 of 20")), None);
    assert_eq!(run.missing_evidence(), None);
}
