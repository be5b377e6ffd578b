//! Blue-green traces and properties.

use crate::driver::{Machine, run};
use expect_test::{Expect, expect};
use hatoba_core::Millis;
use hatoba_rollout::{AnalysisRun, BlueGreen, BlueGreenPlan, Command, Input, Outcome, Verdict};
use proptest::prelude::*;
use std::time::Duration;

fn plan() -> BlueGreenPlan {
    BlueGreenPlan {
        replicas: 2,
        stable_ready: 2,
        auto_promotion: None,
        scale_down_delay: Duration::from_secs(300),
        progress_deadline: Duration::from_secs(60),
        preview: true,
        pre_promotion_analysis: true,
    }
}

fn check(plan: BlueGreenPlan, script: &str, expect: Expect) {
    let mut m = BlueGreen::new(plan);
    expect.assert_eq(&run(&mut m, script));
}

#[test]
fn preview_checks_promote_switch_and_scale_down() {
    check(
        plan(),
        "0s start
         2s ready 2 1
         4s ready 2 2
         10s pass preview
         1m promote
         10m tick",
        expect![[r#"
            0s    # starting the new colour: 2 instances
            0s    scale canary 2
            4s    # new colour ready
            4s    preview on
            4s    start analysis preview
            10s   stop analysis preview
            10s   # pre-promotion checks passed
            10s   # waiting for `hatoba promote`
            1m    # promoted
            1m    # switching all traffic to the new colour
            1m    weight 100
            1m    serving: previous version warm until 6m
            1m    preview off
            6m    # scale-down delay over: stopping the old colour (5m)
            6m    scale stable 0
            6m    finish: succeeded
        "#]],
    );
}

#[test]
fn rollback_inside_the_scale_down_delay_is_one_weight_change() {
    check(
        BlueGreenPlan {
            auto_promotion: Some(Duration::ZERO),
            pre_promotion_analysis: false,
            ..plan()
        },
        "0s start
         1s ready 2 2
         2m unhealthy liveness failing on 2/2 instances",
        expect![[r#"
            0s    # starting the new colour: 2 instances
            0s    scale canary 2
            1s    # new colour ready
            1s    preview on
            1s    # switching all traffic to the new colour
            1s    weight 100
            1s    serving: previous version warm until 5m1s
            1s    preview off
            2m    # rolling back: liveness failing on 2/2 instances
            2m    weight 0
            2m    scale canary 0
            2m    finish: rolled back: liveness failing on 2/2 instances
        "#]],
    );
}

#[test]
fn failed_preview_checks_never_switch() {
    check(
        plan(),
        "0s start
         1s ready 2 2
         5s fail preview",
        expect![[r#"
            0s    # starting the new colour: 2 instances
            0s    scale canary 2
            1s    # new colour ready
            1s    preview on
            1s    start analysis preview
            5s    stop analysis preview
            5s    # rolling back: pre-promotion checks failed
            5s    preview off
            5s    scale canary 0
            5s    finish: rolled back: pre-promotion checks failed
        "#]],
    );
}

#[test]
fn auto_promotion_waits_its_delay_and_a_cold_colour_hits_the_deadline() {
    check(
        BlueGreenPlan {
            auto_promotion: Some(Duration::from_secs(30)),
            pre_promotion_analysis: false,
            preview: false,
            ..plan()
        },
        "0s start
         1s ready 2 2
         1m tick",
        expect![[r#"
            0s    # starting the new colour: 2 instances
            0s    scale canary 2
            1s    # new colour ready
            1s    # switching in 30s
            31s   # auto-promotion delay over
            31s   # switching all traffic to the new colour
            31s   weight 100
            31s   serving: previous version warm until 5m31s
        "#]],
    );
    check(
        plan(),
        "0s start\n 5m tick",
        expect![[r#"
        0s    # starting the new colour: 2 instances
        0s    scale canary 2
        1m    # rolling back: new colour not ready within 1m: 0/2 instances ready
        1m    scale canary 0
        1m    finish: rolled back: new colour not ready within 1m: 0/2 instances ready
    "#]],
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn blue_green_invariants_hold(
        inputs in proptest::collection::vec((0u64..200_000, 0u8..8, 0u32..4), 0..30),
        auto in proptest::option::of(0u64..100),
    ) {
        let plan = BlueGreenPlan { auto_promotion: auto.map(Duration::from_secs), ..plan() };
        let mut m = BlueGreen::new(plan);
        let (mut now, mut ready, mut weight, mut finished) = (0u64, 0u32, 0u8, false);
        for (dt, kind, n) in inputs {
            now += dt;
            let input = match kind {
                0 => Some(Input::Start),
                1 | 2 => Some(Input::Ready { stable: 2, canary: n }),
                3 => Some(Input::Verdict(AnalysisRun::PrePromotion, [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive][n as usize % 3])),
                4 => Some(Input::Promote),
                5 => Some(Input::Abort("operator".to_owned())),
                6 => Some(Input::Unhealthy("crash loop".to_owned())),
                _ => None,
            };
            // Timers due before this input fire first, with the readiness seen so far.
            while let Some(t) = Machine::poll_timeout(&m).filter(|t| t.0 <= now) {
                m.handle_timeout(t);
            }
            check_commands(&mut m, ready, &mut weight, &mut finished)?;
            if let Some(Input::Ready { canary, .. }) = &input { ready = *canary; }
            if let Some(i) = input { m.handle(Millis(now), i); }
            check_commands(&mut m, ready, &mut weight, &mut finished)?;
        }
        prop_assert_eq!(m.is_done(), finished);
    }
}

fn check_commands(
    m: &mut BlueGreen,
    ready: u32,
    weight: &mut u8,
    finished: &mut bool,
) -> Result<(), TestCaseError> {
    while let Some(c) = m.poll_command() {
        prop_assert!(!*finished, "command after the end: {c:?}");
        match c {
            Command::SetWeight(w) => {
                // All or nothing, and only onto a new colour that is fully ready.
                prop_assert!(w.percent() == 0 || (w.percent() == 100 && ready >= 2));
                *weight = w.percent();
            }
            Command::Finish(Outcome::Succeeded) => {
                prop_assert_eq!(*weight, 100);
                *finished = true;
            }
            Command::Finish(_) => {
                prop_assert_eq!(*weight, 0);
                *finished = true;
            }
            _ => {}
        }
    }
    Ok(())
}
