//! Serving before complete: each machine says once, right after the weight
//! that gives the new version all traffic, that it serves
//! (`Command::Serving`), and only later finishes; never while rolling back.
//! Traces for each strategy, and one property over random inputs for all
//! three.

use crate::canary::input_strategy;
use crate::driver::{Machine, render, run};
use expect_test::expect;
use hatoba_core::{Millis, Weight};
use hatoba_rollout::{
    BlueGreen, BlueGreenPlan, Canary, CanaryPlan, Command, Input, Outcome, Rolling, RollingPlan,
    Step,
};
use proptest::prelude::*;
use std::time::Duration;

fn blue_green(scale_down_delay: Duration) -> BlueGreen {
    BlueGreen::new(BlueGreenPlan {
        replicas: 2,
        stable_ready: 2,
        auto_promotion: None,
        scale_down_delay,
        progress_deadline: Duration::from_secs(60),
        preview: false,
        pre_promotion_analysis: false,
    })
}

fn canary(watch: Duration) -> Canary {
    Canary::new(CanaryPlan {
        replicas: 2,
        stable_ready: 2,
        steps: vec![Step::SetWeight(Weight::new(50).unwrap()), Step::Pause(None)],
        progress_deadline: Duration::from_secs(60),
        background_analysis: false,
        watch,
        ramp: false,
    })
}

fn rolling(stable_ready: u32) -> Rolling {
    Rolling::new(RollingPlan {
        replicas: 2,
        stable_ready,
        max_surge: 1,
        max_unavailable: 0,
        progress_deadline: Duration::from_secs(60),
    })
}

/// The trace without the recorded prose: the commands that act.
fn acts<M: Machine>(m: &mut M, script: &str) -> String {
    run(m, script)
        .lines()
        .filter(|l| !l.contains("# "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn blue_green_serves_at_the_switch_and_completes_after_the_scale_down_delay() {
    let mut m = blue_green(Duration::from_secs(300));
    expect![[r#"
        0s    scale canary 2
        1m    weight 100
        1m    serving: previous version warm until 6m
        6m    scale stable 0
        6m    finish: succeeded
    "#]]
    .assert_eq(&acts(
        &mut m,
        "0s start\n 2s ready 2 2\n 1m promote\n 10m tick",
    ));
}

#[test]
fn blue_green_first_deployment_serves_with_nothing_warm() {
    let mut m = BlueGreen::new(BlueGreenPlan {
        stable_ready: 0,
        ..blue_green_plan()
    });
    expect![[r#"
        0s    scale canary 2
        2s    weight 100
        2s    serving
        2s    finish: succeeded
    "#]]
    .assert_eq(&acts(&mut m, "0s start\n 2s ready 0 2"));
}

fn blue_green_plan() -> BlueGreenPlan {
    BlueGreenPlan {
        replicas: 2,
        stable_ready: 2,
        auto_promotion: None,
        scale_down_delay: Duration::from_secs(300),
        progress_deadline: Duration::from_secs(60),
        preview: false,
        pre_promotion_analysis: false,
    }
}

#[test]
fn a_blue_green_rollback_in_the_warm_window_is_one_weight_change_and_no_second_serving() {
    let mut m = blue_green(Duration::from_secs(300));
    expect![[r#"
        0s    scale canary 2
        1m    weight 100
        1m    serving: previous version warm until 6m
        2m    weight 0
        2m    scale canary 0
        2m    finish: aborted: rolled back by alice
    "#]]
    .assert_eq(&acts(
        &mut m,
        "0s start\n 2s ready 2 2\n 1m promote\n 2m abort rolled back by alice\n 10m tick",
    ));
}

#[test]
fn a_blue_green_rollback_before_the_switch_never_serves() {
    let mut m = blue_green(Duration::from_secs(300));
    let trace = acts(
        &mut m,
        "0s start\n 2s ready 2 1\n 1m promote\n 2m unhealthy crash loop\n 10m tick",
    );
    assert!(!trace.contains("serving"), "{trace}");
    assert!(trace.contains("finish: rolled back"), "{trace}");
}

#[test]
fn canary_serves_at_100_percent_and_completes_after_the_watch() {
    let mut m = canary(Duration::from_secs(90));
    expect![[r#"
        0s    scale canary 1
        1s    weight 50
        1m    scale canary 2
        1m    weight 100
        1m    serving: previous version warm until 2m30s
        2m30s scale stable 0
        2m30s finish: succeeded
    "#]]
    .assert_eq(&acts(
        &mut m,
        "0s start\n 1s ready 2 1\n 1m promote\n 1m ready 2 2\n 5m tick",
    ));
}

#[test]
fn canary_without_a_watch_serves_and_completes_at_once() {
    let mut m = canary(Duration::ZERO);
    expect![[r#"
        0s    scale canary 1
        1s    weight 50
        1m    scale canary 2
        1m    weight 100
        1m    serving
        1m    scale stable 0
        1m    finish: succeeded
    "#]]
    .assert_eq(&acts(
        &mut m,
        "0s start\n 1s ready 2 1\n 1m promote\n 1m ready 2 2\n 5m tick",
    ));
}

#[test]
fn a_canary_aborted_before_100_percent_never_serves() {
    let mut m = canary(Duration::from_secs(90));
    let trace = acts(&mut m, "0s start\n 1s ready 2 1\n 30s abort stop\n 5m tick");
    assert!(!trace.contains("serving"), "{trace}");
    assert!(trace.contains("finish: aborted: stop"), "{trace}");
}

#[test]
fn rolling_serves_when_the_last_old_instance_is_gone_then_finishes() {
    let mut m = rolling(2);
    expect![[r#"
        0s    scale canary 1
        1s    weight 50
        1s    scale stable 1
        1s    scale canary 2
        2s    weight 100
        2s    scale stable 0
        2s    serving
        2s    finish: succeeded
    "#]]
    .assert_eq(&acts(&mut m, "0s start\n 1s ready 2 1\n 2s ready 1 2"));
}

#[test]
fn a_rolling_rollback_that_leaves_all_traffic_on_the_new_version_is_not_serving() {
    // The old version never comes back within the deadline: the new one
    // keeps all traffic, but the rollout rolled back; it does not serve.
    let mut m = rolling(2);
    let trace = acts(
        &mut m,
        "0s start\n 1s ready 2 1\n 2s ready 0 1\n 3s abort stop\n 3s ready 0 1\n 5m tick",
    );
    assert!(trace.contains("weight 100"), "{trace}");
    assert!(!trace.contains("serving"), "{trace}");
    assert!(trace.contains("finish: aborted: stop"), "{trace}");
}

/// What the rule sees of a run so far.
#[derive(Default)]
struct Seen {
    weight: u8,
    serving: u32,
    finished: Option<Outcome>,
}

/// The rule: at most one `Serving`, only while the weight is 100; after it
/// the weight only goes back to 0 on the way out (a rollback from the warm
/// window); a success has served exactly once before its `Finish`.
fn check(seen: &mut Seen, c: &Command) -> Result<(), TestCaseError> {
    prop_assert!(seen.finished.is_none(), "command after the end: {c:?}");
    match c {
        Command::SetWeight(w) => {
            if seen.serving > 0 {
                prop_assert_eq!(w.percent(), 0, "weight moved after serving");
            }
            seen.weight = w.percent();
        }
        Command::Serving { .. } => {
            prop_assert_eq!(seen.serving, 0, "a second serving");
            prop_assert_eq!(seen.weight, 100, "serving below 100 %");
            seen.serving += 1;
        }
        Command::Finish(o) => {
            if *o == Outcome::Succeeded {
                prop_assert_eq!(seen.serving, 1, "succeeded without serving");
            } else if seen.serving > 0 {
                prop_assert_eq!(seen.weight, 0, "rolled back, still on the new version");
            }
            seen.finished = Some(o.clone());
        }
        _ => {}
    }
    Ok(())
}

fn follow<M: Machine>(mut m: M, inputs: &[(u64, Option<Input>)]) -> Result<Seen, TestCaseError> {
    let mut seen = Seen::default();
    let mut now = 0u64;
    for (dt, input) in inputs {
        now += dt;
        while let Some(t) = m.poll_timeout().filter(|t| t.0 <= now) {
            m.handle_timeout(t);
            while let Some(c) = m.poll_command() {
                check(&mut seen, &c)?;
            }
        }
        if let Some(i) = input {
            m.handle(Millis(now), i.clone());
        }
        while let Some(c) = m.poll_command() {
            check(&mut seen, &c)
                .map_err(|e| TestCaseError::fail(format!("{e} ({})", render(&c))))?;
        }
    }
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn serving_comes_once_at_100_percent_and_never_while_rolling_back(
        inputs in proptest::collection::vec(input_strategy(), 1..40),
        delay in prop_oneof![Just(0u64), Just(300)],
    ) {
        let delay = Duration::from_secs(delay);
        follow(blue_green(delay), &inputs)?;
        follow(canary(delay), &inputs)?;
        follow(rolling(2), &inputs)?;
        follow(rolling(0), &inputs)?;
    }
}

#[test]
fn a_rolling_rollout_that_rolled_back_never_served() {
    // Rolling has no warm window: serving comes with the success only.
    let mut m = rolling(2);
    let mut seen = Seen::default();
    m.handle(Millis(0), Input::Start);
    m.handle(
        Millis(1_000),
        Input::Ready {
            stable: 2,
            canary: 1,
        },
    );
    m.handle(Millis(2_000), Input::Unhealthy("crash loop".to_owned()));
    m.handle(
        Millis(3_000),
        Input::Ready {
            stable: 2,
            canary: 1,
        },
    );
    while let Some(c) = m.poll_command() {
        check(&mut seen, &c).unwrap();
    }
    assert_eq!(seen.serving, 0);
    assert!(matches!(seen.finished, Some(Outcome::RolledBack(_))));
}
