//! Rolling-update traces and properties.

use crate::driver::run;
use expect_test::{Expect, expect};
use hatoba_core::Millis;
use hatoba_rollout::{Command, Input, Outcome, Rolling, RollingPlan, Track};
use proptest::prelude::*;
use std::time::Duration;

fn plan() -> RollingPlan {
    RollingPlan {
        replicas: 4,
        stable_ready: 4,
        max_surge: 1,
        max_unavailable: 0,
        progress_deadline: Duration::from_secs(60),
    }
}

fn check(plan: RollingPlan, script: &str, expect: Expect) {
    let mut m = Rolling::new(plan);
    expect.assert_eq(&run(&mut m, script));
}

#[test]
fn one_at_a_time_never_below_four_ready() {
    check(
        plan(),
        "0s start
         2s ready 4 1
         3s ready 3 1
         5s ready 3 2
         6s ready 2 2
         8s ready 2 3
         9s ready 1 3
         11s ready 1 4
         12s ready 0 4",
        expect![[r#"
            0s    # rolling 4 instances: up to 1 extra, up to 0 missing
            0s    scale canary 1
            2s    weight 25
            2s    scale stable 3
            2s    scale canary 2
            5s    weight 50
            5s    scale stable 2
            5s    scale canary 3
            8s    weight 75
            8s    scale stable 1
            8s    scale canary 4
            11s   weight 100
            11s   scale stable 0
            11s   serving
            11s   finish: succeeded
        "#]],
    );
}

#[test]
fn stalled_rollout_rolls_back_capacity_first() {
    check(
        plan(),
        "0s start
         2s ready 4 1
         3s ready 3 1
         5s ready 3 1
         1m10s ready 3 1
         1m20s ready 4 1",
        expect![[r#"
            0s    # rolling 4 instances: up to 1 extra, up to 0 missing
            0s    scale canary 1
            2s    weight 25
            2s    scale stable 3
            2s    scale canary 2
            1m2s  # rolling back: no new instance became ready within 1m: 1/4 ready
            1m2s  scale stable 4
            1m20s weight 0
            1m20s scale canary 0
            1m20s finish: rolled back: no new instance became ready within 1m: 1/4 ready
        "#]],
    );
}

#[test]
fn surge_and_unavailable_as_percentages_of_ten() {
    check(
        RollingPlan {
            replicas: 10,
            stable_ready: 10,
            max_surge: 3,
            max_unavailable: 2,
            ..plan()
        },
        "0s start
         1s ready 8 3
         2s ready 8 5
         3s ready 5 5
         4s ready 5 8
         5s ready 2 8
         6s ready 2 10
         7s ready 0 10",
        expect![[r#"
            0s    # rolling 10 instances: up to 3 extra, up to 2 missing
            0s    scale canary 3
            0s    scale stable 8
            0s    scale canary 5
            1s    weight 38
            1s    scale stable 5
            1s    scale canary 8
            2s    weight 63
            2s    scale stable 3
            2s    scale canary 10
            4s    weight 100
            4s    scale stable 0
            6s    serving
            6s    finish: succeeded
        "#]],
    );
}

#[test]
fn first_deployment_starts_everything_at_once() {
    check(
        RollingPlan {
            stable_ready: 0,
            ..plan()
        },
        "0s start\n1s ready 0 2\n2s ready 0 4",
        expect![[r#"
            0s    # rolling 4 instances: up to 1 extra, up to 0 missing
            0s    scale canary 4
            1s    weight 100
            2s    serving
            2s    finish: succeeded
        "#]],
    );
}

#[test]
fn a_failed_first_deployment_ends_at_once() {
    // Nothing to go back to: no waiting for an old version to come back
    // (it never will), the new instances stop.
    check(
        RollingPlan {
            stable_ready: 0,
            ..plan()
        },
        "0s start\n1s ready 0 2\n2s unhealthy instance web-1 exited with code 0",
        expect![[r#"
        0s    # rolling 4 instances: up to 1 extra, up to 0 missing
        0s    scale canary 4
        1s    weight 100
        2s    # rolling back: instance web-1 exited with code 0
        2s    weight 0
        2s    scale canary 0
        2s    finish: rolled back: instance web-1 exited with code 0
    "#]],
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rolling_invariants_hold(
        replicas in 1u32..8,
        surge in 0u32..3,
        unavailable in 0u32..3,
        steps in proptest::collection::vec((0u64..90_000, 0u8..10, 0u32..10, 0u32..10), 0..60),
    ) {
        prop_assume!(surge + unavailable > 0);
        let plan = RollingPlan { replicas, stable_ready: replicas, max_surge: surge, max_unavailable: unavailable, progress_deadline: Duration::from_secs(60) };
        let mut m = Rolling::new(plan);
        let (mut now, mut scaled_old, mut scaled_new, mut ready_old, mut ready_new) = (0u64, replicas, 0u32, replicas, 0u32);
        let (mut weight, mut finished, mut rolling_back) = (0u8, false, false);
        m.handle(Millis(0), Input::Start);
        for (dt, kind, a, b) in steps {
            now += dt;
            let mut commands = Vec::new();
            while let Some(t) = m.poll_timeout().filter(|t| t.0 <= now) {
                m.handle_timeout(t);
                while let Some(c) = m.poll_command() { commands.push(c); }
            }
            let input = match kind {
                0 => Some(Input::Abort("operator".to_owned())),
                1 => Some(Input::Unhealthy("crash loop".to_owned())),
                // The world never has more ready instances than were asked for.
                _ => Some(Input::Ready { stable: a.min(scaled_old), canary: b.min(scaled_new) }),
            };
            while let Some(c) = m.poll_command() { commands.push(c); }
            let mut check = |c: Command, ready_old: u32, ready_new: u32| -> Result<(), TestCaseError> {
                prop_assert!(!finished, "command after the end: {c:?}");
                match c {
                    Command::Scale(Track::Stable, n) => {
                        if n < scaled_old {
                            prop_assert!(!rolling_back);
                            // Capacity never drops below replicas - maxUnavailable by our own hand.
                            prop_assert!(n + ready_new.min(scaled_new) >= replicas.saturating_sub(unavailable), "old {scaled_old}->{n} with {ready_new} new ready");
                        } else {
                            rolling_back = true;
                        }
                        scaled_old = n;
                    }
                    Command::Scale(Track::Canary, n) => scaled_new = n,
                    Command::SetWeight(w) => {
                        prop_assert!(w.percent() == 0 || ready_new > 0, "weight {w} with no new instance ready");
                        prop_assert!(w.percent() == 100 || ready_old > 0, "weight {w} with no old instance ready");
                        weight = w.percent();
                    }
                    Command::Finish(Outcome::Succeeded) => {
                        prop_assert_eq!(weight, 100);
                        prop_assert_eq!(scaled_old, 0);
                        finished = true;
                    }
                    Command::Finish(_) => {
                        prop_assert!(weight == 0 || ready_old == 0, "rolled back with weight {weight} and {ready_old} old ready");
                        finished = true;
                    }
                    _ => {}
                }
                if !rolling_back {
                    prop_assert!(scaled_old + scaled_new <= replicas + surge, "{scaled_old}+{scaled_new} above {replicas}+{surge}");
                }
                Ok(())
            };
            for c in commands { check(c, ready_old, ready_new)?; }
            if let Some(Input::Ready { stable, canary }) = &input { ready_old = *stable; ready_new = *canary; }
            if let Some(i) = input { m.handle(Millis(now), i); }
            while let Some(c) = m.poll_command() { check(c, ready_old, ready_new)?; }
        }
        prop_assert_eq!(m.is_done(), finished);
    }
}
