//! Canary traces and properties.

use crate::driver::run;
use expect_test::{Expect, expect};
use hatoba_core::{Millis, Weight};
use hatoba_rollout::{AnalysisRun, Canary, CanaryPlan, Command, Input, Outcome, Step, Verdict};
use proptest::prelude::*;
use std::time::Duration;

fn w(p: i64) -> Weight {
    Weight::new(p).unwrap()
}

/// The seeds' canary, shortened to two weights: 4 replicas, 25 → pause 5m →
/// 50 → analysis → pause (promote), background analysis on.
fn plan() -> CanaryPlan {
    CanaryPlan {
        replicas: 4,
        stable_ready: 4,
        steps: vec![
            Step::SetWeight(w(25)),
            Step::Pause(Some(Duration::from_secs(300))),
            Step::SetWeight(w(50)),
            Step::Analysis,
            Step::Pause(None),
        ],
        progress_deadline: Duration::from_secs(60),
        background_analysis: true,
        watch: Duration::ZERO,
        ramp: false,
    }
}

fn check(plan: CanaryPlan, script: &str, expect: Expect) {
    let mut m = Canary::new(plan);
    expect.assert_eq(&run(&mut m, script));
}

#[test]
fn good_canary_goes_through_every_step() {
    check(
        plan(),
        "0s start
         3s ready 4 1
         4m evidence background
         5m ready 4 2
         6m pass step 3
         7m promote
         7m ready 4 4",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
            3s    weight 25
            3s    # step 1: pause 5m
            5m3s  # step 1: pause over
            5m3s  # step 2: set weight 50%
            5m3s  scale canary 2
            5m3s  weight 50
            5m3s  # step 3: analysis
            5m3s  start analysis step 3
            6m    stop analysis step 3
            6m    # step 3: analysis passed
            6m    # step 4: pause until `hatoba promote`
            7m    # step 4: promoted
            7m    scale canary 4
            7m    weight 100
            7m    serving
            7m    scale stable 0
            7m    stop analysis background
            7m    finish: succeeded
        "#]],
    );
}

#[test]
fn weight_waits_for_ready_instances() {
    check(
        plan(),
        "0s start
         10s ready 4 0
         20s tick",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
        "#]],
    );
}

#[test]
fn canary_never_ready_is_rolled_back_at_the_deadline() {
    check(
        plan(),
        "0s start
         2m tick",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
            1m    # rolling back: canary not ready within 1m: 0/1 instances ready
            1m    stop analysis background
            1m    scale canary 0
            1m    finish: rolled back: canary not ready within 1m: 0/1 instances ready
        "#]],
    );
}

#[test]
fn failed_background_analysis_rolls_back_with_weight_zero_first() {
    check(
        plan(),
        "0s start
         1s ready 4 1
         30s fail background",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
            1s    weight 25
            1s    # step 1: pause 5m
            30s   # rolling back: background analysis failed
            30s   weight 0
            30s   stop analysis background
            30s   scale canary 0
            30s   finish: rolled back: background analysis failed
        "#]],
    );
}

#[test]
fn inconclusive_step_analysis_waits_for_a_person() {
    check(
        plan(),
        "0s start
         0s ready 4 2
         5m inconclusive step 3
         1h tick
         1h abort looks odd",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
            0s    weight 25
            0s    # step 1: pause 5m
            5m    # step 1: pause over
            5m    # step 2: set weight 50%
            5m    scale canary 2
            5m    weight 50
            5m    # step 3: analysis
            5m    start analysis step 3
            5m    stop analysis step 3
            5m    # step 3: analysis inconclusive: waiting for `hatoba promote` or `hatoba abort`
            1h    # aborted: looks odd
            1h    weight 0
            1h    stop analysis background
            1h    scale canary 0
            1h    finish: aborted: looks odd
        "#]],
    );
}

#[test]
fn promote_full_skips_the_rest_and_first_deployments_skip_the_steps() {
    check(
        plan(),
        "0s start
         0s ready 4 1
         1m promote-full
         1m30s ready 4 4",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
            0s    weight 25
            0s    # step 1: pause 5m
            1m    # promoted fully: remaining steps skipped
            1m    scale canary 4
            1m30s promoted without evidence: step 3: analysis skipped by `hatoba promote --full`
            1m30s weight 100
            1m30s serving
            1m30s scale stable 0
            1m30s stop analysis background
            1m30s finish: succeeded
        "#]],
    );
    check(
        CanaryPlan {
            stable_ready: 0,
            ..plan()
        },
        "0s start
         5s ready 0 4",
        expect![[r#"
            0s    # first deployment: no stable version to compare with, going straight to full size
            0s    scale canary 4
            5s    weight 100
            5s    serving
            5s    scale stable 0
            5s    finish: succeeded
        "#]],
    );
}

#[test]
fn the_watch_keeps_stable_warm_and_flips_back_on_a_regression() {
    let watched = || CanaryPlan {
        steps: vec![Step::SetWeight(w(50))],
        watch: Duration::from_secs(600),
        ..plan()
    };
    // No regression: stable is stopped only when the watch is over.
    check(
        watched(),
        "0s start
         1s ready 4 2
         1s evidence background
         2s ready 4 4
         5m pass background
         11m tick",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 50%
            0s    scale canary 2
            1s    weight 50
            1s    scale canary 4
            2s    weight 100
            2s    serving: previous version warm until 10m2s
            2s    # at 100 %: watching for 10m; the previous version stays warm for an instant rollback
            10m2s # watch over: no regression, stopping the previous version
            10m2s scale stable 0
            10m2s stop analysis background
            10m2s finish: succeeded
        "#]],
    );
    // A regression at 100 %: traffic goes straight back to the warm stable.
    check(
        watched(),
        "0s start
         1s ready 4 2
         1s evidence background
         2s ready 4 4
         3m fail background",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 50%
            0s    scale canary 2
            1s    weight 50
            1s    scale canary 4
            2s    weight 100
            2s    serving: previous version warm until 10m2s
            2s    # at 100 %: watching for 10m; the previous version stays warm for an instant rollback
            3m    # rolling back: regression during the watch after promotion: background analysis failed
            3m    weight 0
            3m    stop analysis background
            3m    scale canary 0
            3m    finish: rolled back: regression during the watch after promotion: background analysis failed
        "#]],
    );
    // `hatoba promote` ends the watch early.
    check(
        watched(),
        "0s start
         1s ready 4 2
         1s evidence background
         2s ready 4 4
         1m promote",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 50%
            0s    scale canary 2
            1s    weight 50
            1s    scale canary 4
            2s    weight 100
            2s    serving: previous version warm until 10m2s
            2s    # at 100 %: watching for 10m; the previous version stays warm for an instant rollback
            1m    # watch ended early by `hatoba promote`
            1m    scale stable 0
            1m    stop analysis background
            1m    finish: succeeded
        "#]],
    );
}

#[test]
fn a_promote_while_the_canary_scales_ends_the_next_pause() {
    check(
        plan(),
        "0s start
         0s promote
         2s ready 4 1",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
            0s    # step 0: promote noted: it ends the next pause or analysis once the canary instances are ready
            2s    weight 25
            2s    # step 1: skipped: promoted while scaling
            2s    # step 2: set weight 50%
            2s    scale canary 2
        "#]],
    );
}

#[test]
fn a_ramped_promotion_moves_traffic_as_instances_become_ready() {
    check(
        CanaryPlan {
            ramp: true,
            ..plan()
        },
        "0s start
         0s promote-full
         2s ready 4 1
         3s ready 4 2
         4s ready 4 1
         5s ready 4 4",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
            0s    # promoted fully: remaining steps skipped
            0s    scale canary 4
            2s    weight 25
            3s    weight 50
            4s    weight 25
            5s    promoted without evidence: step 3: analysis skipped by `hatoba promote --full`
            5s    weight 100
            5s    serving
            5s    scale stable 0
            5s    stop analysis background
            5s    finish: succeeded
        "#]],
    );
}

#[test]
fn inconclusive_background_analysis_holds_promotion() {
    check(
        CanaryPlan {
            steps: vec![Step::SetWeight(w(50))],
            ..plan()
        },
        "0s start
         0s ready 4 2
         0s inconclusive background
         0s ready 4 2
         1m promote
         1m ready 4 4",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 50%
            0s    scale canary 2
            0s    weight 50
            0s    scale canary 4
            0s    # background analysis inconclusive: promotion will wait for `hatoba promote`
            1m    # promoted
            1m    promoted without evidence: background analysis inconclusive
            1m    weight 100
            1m    serving
            1m    scale stable 0
            1m    stop analysis background
            1m    finish: succeeded
        "#]],
    );
}

#[test]
fn nothing_happens_after_the_end() {
    check(
        plan(),
        "0s start
         1s abort stop
         2s ready 4 4
         3s promote
         4s fail background",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 25%
            0s    scale canary 1
            1s    # aborted: stop
            1s    stop analysis background
            1s    scale canary 0
            1s    finish: aborted: stop
        "#]],
    );
}

/// Random operator commands, readiness changes, verdicts and time jumps.
pub(crate) fn input_strategy() -> impl Strategy<Value = (u64, Option<Input>)> {
    let input = prop_oneof![
        Just(Some(Input::Start)),
        (0u32..6, 0u32..6).prop_map(|(s, c)| Some(Input::Ready {
            stable: s,
            canary: c
        })),
        (0usize..6, 0u8..3, any::<bool>()).prop_map(|(step, v, bg)| {
            let run = if bg {
                AnalysisRun::Background
            } else {
                AnalysisRun::Step(step)
            };
            let v = [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive][v as usize];
            Some(Input::Verdict(run, v))
        }),
        (0usize..6, any::<bool>(), any::<bool>()).prop_map(|(step, bg, has)| {
            let run = if bg {
                AnalysisRun::Background
            } else {
                AnalysisRun::Step(step)
            };
            let missing = (!has).then(|| "metric m: insufficient: 3 of 20".to_owned());
            Some(Input::Evidence(run, missing))
        }),
        Just(Some(Input::Promote)),
        Just(Some(Input::PromoteFull)),
        Just(Some(Input::Abort("operator".to_owned()))),
        Just(Some(Input::Unhealthy("crash loop".to_owned()))),
        Just(None),
    ];
    (0u64..400_000, input)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canary_invariants_hold(
        replicas in 1u32..6,
        weights in proptest::collection::vec(0i64..=100, 0..4),
        inputs in proptest::collection::vec(input_strategy(), 0..40),
    ) {
        let mut sorted = weights.clone();
        sorted.sort_unstable();
        let mut steps = Vec::new();
        for (i, p) in sorted.iter().enumerate() {
            steps.push(Step::SetWeight(w(*p)));
            steps.push(if i % 2 == 0 { Step::Pause(Some(Duration::from_secs(60))) } else { Step::Analysis });
        }
        let watch = Duration::from_secs(if replicas % 2 == 0 { 90 } else { 0 });
        let plan = CanaryPlan { replicas, stable_ready: replicas, steps, progress_deadline: Duration::from_secs(120), background_analysis: true, watch, ramp: replicas % 3 == 0 };
        let mut m = Canary::new(plan);
        let mut now = 0u64;
        let mut ready_canary = 0u32;
        let mut weight = 0u8;
        let mut finished: Option<Outcome> = None;
        let mut last_step: Option<usize> = None;
        let mut check_commands = |m: &mut Canary, ready_canary: u32| -> Result<(), TestCaseError> {
            while let Some(c) = m.poll_command() {
                prop_assert!(finished.is_none(), "command after the end: {c:?}");
                match &c {
                    Command::SetWeight(x) => {
                        // Weights only on ready instances (or back to stable).
                        prop_assert!(x.percent() == 0 || ready_canary > 0, "weight {x} with no ready canary");
                        weight = x.percent();
                    }
                    Command::Event(e) => {
                        if let Some(n) = e.step() {
                            // No step skipped: steps start in order, one after another.
                            if let Some(prev) = last_step { prop_assert!(n == prev || n == prev + 1, "step {n} after {prev}"); } else { prop_assert_eq!(n, 0); }
                            last_step = Some(n);
                        }
                    }
                    Command::Finish(o) => {
                        if !matches!(o, Outcome::Succeeded) {
                            // Every abort ends with 100 % on stable.
                            prop_assert_eq!(weight, 0);
                        } else {
                            prop_assert_eq!(weight, 100);
                        }
                        finished = Some(o.clone());
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        for (dt, input) in inputs {
            now += dt;
            while let Some(t) = m.poll_timeout().filter(|t| t.0 <= now) {
                prop_assert!(t.0 >= now - dt, "a timer in the past");
                m.handle_timeout(t);
                check_commands(&mut m, ready_canary)?;
            }
            if let Some(Input::Ready { canary, .. }) = &input { ready_canary = *canary; }
            if let Some(i) = input { m.handle(Millis(now), i); }
            check_commands(&mut m, ready_canary)?;
        }
        prop_assert_eq!(m.is_done(), finished.is_some());
    }
}
