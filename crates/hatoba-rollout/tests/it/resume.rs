//! A machine saved (as JSON) and restored at any point, pending commands
//! included, behaves exactly as one that never stopped: what the controller
//! relies on to resume a rollout after it was killed.

use crate::canary::input_strategy;
use crate::driver::{Machine, render};
use hatoba_core::{Millis, Weight};
use hatoba_rollout::{
    BlueGreen, BlueGreenPlan, Canary, CanaryPlan, Input, Rolling, RollingPlan, Step,
};
use proptest::prelude::*;
use serde::{Serialize, de::DeserializeOwned};
use std::time::Duration;

/// Runs the inputs; when `cut` is reached, the machine is saved before its
/// pending commands are taken, and the rest runs on the restored copy.
fn trace<M>(mut m: M, inputs: &[(u64, Option<Input>)], cut: Option<usize>) -> Vec<String>
where
    M: Machine + Serialize + DeserializeOwned,
{
    let mut out = Vec::new();
    let mut now = 0u64;
    let drain = |m: &mut M, out: &mut Vec<String>| {
        while let Some(c) = m.poll_command() {
            out.push(render(&c));
        }
    };
    for (i, (dt, input)) in inputs.iter().enumerate() {
        now += dt;
        while let Some(t) = m.poll_timeout().filter(|t| t.0 <= now) {
            m.handle_timeout(t);
            drain(&mut m, &mut out);
        }
        if let Some(input) = input {
            m.handle(Millis(now), input.clone());
        }
        if cut == Some(i) {
            let saved = serde_json::to_string(&m).unwrap();
            m = serde_json::from_str(&saved).unwrap();
        }
        drain(&mut m, &mut out);
    }
    out
}

fn canary(replicas: u32) -> Canary {
    Canary::new(CanaryPlan {
        replicas,
        stable_ready: replicas,
        steps: vec![
            Step::SetWeight(Weight::new(10).unwrap()),
            Step::Pause(Some(Duration::from_secs(60))),
            Step::Analysis,
            Step::SetWeight(Weight::new(50).unwrap()),
            Step::Pause(None),
        ],
        progress_deadline: Duration::from_secs(120),
        background_analysis: true,
        watch: Duration::from_secs(90),
        ramp: true,
    })
}

fn blue_green(replicas: u32) -> BlueGreen {
    BlueGreen::new(BlueGreenPlan {
        replicas,
        stable_ready: replicas,
        auto_promotion: Some(Duration::from_secs(30)),
        scale_down_delay: Duration::from_secs(300),
        progress_deadline: Duration::from_secs(60),
        preview: true,
        pre_promotion_analysis: true,
    })
}

fn rolling(replicas: u32) -> Rolling {
    Rolling::new(RollingPlan {
        replicas,
        stable_ready: replicas,
        max_surge: 1,
        max_unavailable: 0,
        progress_deadline: Duration::from_secs(60),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_restored_machine_continues_exactly(
        replicas in 1u32..5,
        inputs in proptest::collection::vec(input_strategy(), 1..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = Some(cut.index(inputs.len()));
        prop_assert_eq!(trace(canary(replicas), &inputs, None), trace(canary(replicas), &inputs, cut));
        prop_assert_eq!(trace(blue_green(replicas), &inputs, None), trace(blue_green(replicas), &inputs, cut));
        prop_assert_eq!(trace(rolling(replicas), &inputs, None), trace(rolling(replicas), &inputs, cut));
    }
}
