//! No promotion without evidence: traces of canaries and blue-green
//! switches whose analysis has no evidence (held, then evidence, a person
//! or the deadline), and the safety properties over random observations
//! and operator commands: a `Fail` verdict never ends in success; after an
//! inconclusive verdict or without evidence, reaching 100 % needs a
//! person's promote; weight moves only onto `canary_size(weight)` ready
//! instances.

use crate::driver::run;
use expect_test::{Expect, expect};
use hatoba_core::{Millis, Weight};
use hatoba_rollout::{
    AnalysisRun, BlueGreen, BlueGreenPlan, Canary, CanaryPlan, Command, Input, Outcome, Step,
    Verdict, canary_size,
};
use proptest::prelude::*;
use std::collections::HashSet;
use std::time::Duration;

fn w(p: i64) -> Weight {
    Weight::new(p).unwrap()
}

/// `examples/quickstart`: 2 replicas, 20 → 10s → 50 → 10s, background
/// analysis, progress deadline 1m.
fn quickstart() -> CanaryPlan {
    CanaryPlan {
        replicas: 2,
        stable_ready: 2,
        steps: vec![
            Step::SetWeight(w(20)),
            Step::Pause(Some(Duration::from_secs(10))),
            Step::SetWeight(w(50)),
            Step::Pause(Some(Duration::from_secs(10))),
        ],
        progress_deadline: Duration::from_secs(60),
        background_analysis: true,
        watch: Duration::ZERO,
        ramp: false,
    }
}

/// One step analysis between two weights, no background analysis.
fn stepped() -> CanaryPlan {
    CanaryPlan {
        steps: vec![
            Step::SetWeight(w(50)),
            Step::Analysis,
            Step::SetWeight(w(100)),
        ],
        background_analysis: false,
        ..quickstart()
    }
}

fn check(plan: CanaryPlan, script: &str, expect: Expect) {
    let mut m = Canary::new(plan);
    expect.assert_eq(&run(&mut m, script));
}

/// The README's v3 with no traffic: before this rule it went to 100 %
/// (`finish: succeeded`) because the background analysis, seeing only
/// "insufficient", never gave a verdict.
#[test]
fn a_background_analysis_without_evidence_holds_then_rolls_back_at_the_deadline() {
    check(
        quickstart(),
        "0s start
         1s ready 2 1
         5s missing background metric success-rate: insufficient: 0 of the 20 requests needed in the last 10s
         12s ready 2 1
         23s ready 2 2
         2m tick",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 20%
            0s    scale canary 1
            1s    weight 20
            1s    # step 1: pause 10s
            11s   # step 1: pause over
            11s   # step 2: set weight 50%
            11s   weight 50
            11s   # step 3: pause 10s
            21s   # step 3: pause over
            21s   scale canary 2
            23s   # canary at full size: held: analysis has no evidence: background analysis: metric success-rate: insufficient: 0 of the 20 requests needed in the last 10s; `hatoba promote` to promote anyway, else rolled back after 1m without evidence
            1m23s # rolling back: no evidence within 1m: background analysis: metric success-rate: insufficient: 0 of the 20 requests needed in the last 10s
            1m23s weight 0
            1m23s stop analysis background
            1m23s scale canary 0
            1m23s finish: rolled back: no evidence within 1m: background analysis: metric success-rate: insufficient: 0 of the 20 requests needed in the last 10s
        "#]],
    );
}

#[test]
fn held_canaries_promote_when_evidence_arrives_or_a_person_says_so() {
    // Evidence arrives while held: promoted as usual, nothing marked.
    check(
        quickstart(),
        "0s start
         0s ready 2 2
         21s tick
         30s evidence background",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 20%
            0s    scale canary 1
            0s    weight 20
            0s    # step 1: pause 10s
            10s   # step 1: pause over
            10s   # step 2: set weight 50%
            10s   weight 50
            10s   # step 3: pause 10s
            20s   # step 3: pause over
            20s   scale canary 2
            20s   # canary at full size: held: analysis has no evidence: background analysis: no measurement yet; `hatoba promote` to promote anyway, else rolled back after 1m without evidence
            30s   # background analysis has evidence now: promoting
            30s   weight 100
            30s   serving
            30s   scale stable 0
            30s   stop analysis background
            30s   finish: succeeded
        "#]],
    );
    // A person promotes past the missing evidence: promoted, and marked.
    check(
        quickstart(),
        "0s start
         0s ready 2 2
         5s missing background metric success-rate: error: webhook answered 500
         30s promote",
        expect![[r#"
            0s    start analysis background
            0s    # step 0: set weight 20%
            0s    scale canary 1
            0s    weight 20
            0s    # step 1: pause 10s
            10s   # step 1: pause over
            10s   # step 2: set weight 50%
            10s   weight 50
            10s   # step 3: pause 10s
            20s   # step 3: pause over
            20s   scale canary 2
            20s   # canary at full size: held: analysis has no evidence: background analysis: metric success-rate: error: webhook answered 500; `hatoba promote` to promote anyway, else rolled back after 1m without evidence
            30s   # promoted
            30s   promoted without evidence: background analysis: metric success-rate: error: webhook answered 500
            30s   weight 100
            30s   serving
            30s   scale stable 0
            30s   stop analysis background
            30s   finish: succeeded
        "#]],
    );
}

#[test]
fn a_step_analysis_without_evidence_holds_the_canary_where_it_is() {
    // Held, evidence arrives, the analysis judges as usual.
    check(
        stepped(),
        "0s start
         0s ready 2 1
         5s missing step 1 metric success-rate: insufficient: 4 of the 20 requests needed in the last 10s
         10s missing step 1 metric success-rate: insufficient: 12 of the 20 requests needed in the last 10s
         15s evidence step 1
         15s pass step 1",
        expect![[r#"
            0s    # step 0: set weight 50%
            0s    scale canary 1
            0s    weight 50
            0s    # step 1: analysis
            0s    start analysis step 1
            5s    # step 1: held: analysis has no evidence: metric success-rate: insufficient: 4 of the 20 requests needed in the last 10s; `hatoba promote` to promote anyway, else rolled back after 1m without evidence
            15s   # step 1: analysis has evidence now: judging
            15s   stop analysis step 1
            15s   # step 1: analysis passed
            15s   # step 2: set weight 100%: promoting
            15s   scale canary 2
        "#]],
    );
    // A provider that stays down: held, then rolled back at the deadline
    // counted from the hold, with what was missing.
    check(
        stepped(),
        "0s start
         0s ready 2 1
         5s missing step 1 metric errors: error: command exited with status 1
         10s missing step 1 metric errors: error: command exited with status 1
         2m tick",
        expect![[r#"
            0s    # step 0: set weight 50%
            0s    scale canary 1
            0s    weight 50
            0s    # step 1: analysis
            0s    start analysis step 1
            5s    # step 1: held: analysis has no evidence: metric errors: error: command exited with status 1; `hatoba promote` to promote anyway, else rolled back after 1m without evidence
            1m5s  # rolling back: step 1: no evidence within 1m: metric errors: error: command exited with status 1
            1m5s  weight 0
            1m5s  stop analysis step 1
            1m5s  scale canary 0
            1m5s  finish: rolled back: step 1: no evidence within 1m: metric errors: error: command exited with status 1
        "#]],
    );
    // A person promotes the held step: the promotion is marked.
    check(
        stepped(),
        "0s start
         0s ready 2 1
         5s missing step 1 metric success-rate: insufficient: 0 of the 20 requests needed in the last 10s
         30s promote
         31s ready 2 2",
        expect![[r#"
            0s    # step 0: set weight 50%
            0s    scale canary 1
            0s    weight 50
            0s    # step 1: analysis
            0s    start analysis step 1
            5s    # step 1: held: analysis has no evidence: metric success-rate: insufficient: 0 of the 20 requests needed in the last 10s; `hatoba promote` to promote anyway, else rolled back after 1m without evidence
            30s   stop analysis step 1
            30s   # step 1: promoted, analysis skipped
            30s   # step 2: set weight 100%: promoting
            30s   scale canary 2
            31s   promoted without evidence: step 1: metric success-rate: insufficient: 0 of the 20 requests needed in the last 10s
            31s   weight 100
            31s   serving
            31s   scale stable 0
            31s   finish: succeeded
        "#]],
    );
}

#[test]
fn blue_green_checks_without_evidence_hold_the_switch() {
    let plan = BlueGreenPlan {
        replicas: 2,
        stable_ready: 2,
        auto_promotion: Some(Duration::ZERO),
        scale_down_delay: Duration::from_secs(300),
        progress_deadline: Duration::from_secs(60),
        preview: true,
        pre_promotion_analysis: true,
    };
    let mut m = BlueGreen::new(plan.clone());
    expect![[r#"
        0s    # starting the new colour: 2 instances
        0s    scale canary 2
        1s    # new colour ready
        1s    preview on
        1s    start analysis preview
        5s    # held: pre-promotion checks have no evidence: metric smoke: insufficient: 0 of the 20 requests needed in the last 10s; `hatoba promote` to switch anyway, else rolled back after 1m without evidence
        1m5s  # rolling back: pre-promotion checks: no evidence within 1m: metric smoke: insufficient: 0 of the 20 requests needed in the last 10s
        1m5s  stop analysis preview
        1m5s  preview off
        1m5s  scale canary 0
        1m5s  finish: rolled back: pre-promotion checks: no evidence within 1m: metric smoke: insufficient: 0 of the 20 requests needed in the last 10s
    "#]]
    .assert_eq(&run(
        &mut m,
        "0s start
         1s ready 2 2
         5s missing preview metric smoke: insufficient: 0 of the 20 requests needed in the last 10s
         2m tick",
    ));
    let mut m = BlueGreen::new(plan);
    expect![[r#"
        0s    # starting the new colour: 2 instances
        0s    scale canary 2
        1s    # new colour ready
        1s    preview on
        1s    start analysis preview
        5s    # held: pre-promotion checks have no evidence: metric smoke: insufficient: 0 of the 20 requests needed in the last 10s; `hatoba promote` to switch anyway, else rolled back after 1m without evidence
        20s   stop analysis preview
        20s   # promoted
        20s   promoted without evidence: pre-promotion checks: metric smoke: insufficient: 0 of the 20 requests needed in the last 10s
        20s   # switching all traffic to the new colour
        20s   weight 100
        20s   serving: previous version warm until 5m20s
        20s   preview off
    "#]]
    .assert_eq(&run(
        &mut m,
        "0s start
         1s ready 2 2
         5s missing preview metric smoke: insufficient: 0 of the 20 requests needed in the last 10s
         20s promote",
    ));
}

/// Random observations (readiness, verdicts, evidence) and operator
/// commands, for any analysis run.
fn inputs() -> impl Strategy<Value = Vec<(u64, Option<Input>)>> {
    // Analysis steps are at odd places in the plans below.
    let run = (0usize..4, 0u8..3).prop_map(|(k, kind)| match kind {
        0 => AnalysisRun::Step(2 * k + 1),
        1 => AnalysisRun::Background,
        _ => AnalysisRun::PrePromotion,
    });
    // Weighted so that rollouts often get far without a person: readiness,
    // verdicts and evidence are common, a promote or an abort is rare.
    let input = prop_oneof![
        8 => (0u32..7).prop_map(|c| Some(Input::Ready {
            stable: 6,
            canary: c
        })),
        6 => (run.clone(), 0u8..3).prop_map(|(r, v)| {
            let v = [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive][v as usize];
            Some(Input::Verdict(r, v))
        }),
        6 => (run, any::<bool>()).prop_map(|(r, has)| {
            let missing = (!has).then(|| "metric m: insufficient: 3 of 20".to_owned());
            Some(Input::Evidence(r, missing))
        }),
        1 => Just(Some(Input::Promote)),
        1 => Just(Some(Input::PromoteFull)),
        1 => prop_oneof![
            Just(Some(Input::Abort("operator".to_owned()))),
            Just(Some(Input::Unhealthy("crash loop".to_owned()))),
            Just(Some(Input::Start)),
        ],
        4 => Just(None),
    ];
    proptest::collection::vec((0u64..60_000, input), 0..40).prop_map(|mut v| {
        v.insert(0, (0, Some(Input::Start)));
        v
    })
}

/// What the properties watch while a machine runs.
#[derive(Default)]
struct Watcher {
    replicas: u32,
    ready: u32,
    weight: u8,
    /// Analysis runs started and not stopped.
    active: HashSet<AnalysisRun>,
    /// A `Fail` verdict reached a running analysis.
    failed: bool,
    /// An inconclusive verdict reached a running analysis and no person
    /// has promoted since.
    doubt: bool,
    /// The latest evidence the background analysis reported (`None`
    /// before any report: no evidence).
    background_evidence: bool,
    /// A person promoted at some point.
    promoted: bool,
    finished: Option<Outcome>,
}

impl Watcher {
    fn before(&mut self, input: &Input) {
        match input {
            Input::Ready { canary, .. } => self.ready = *canary,
            Input::Verdict(r, v) if self.active.contains(r) => match v {
                Verdict::Fail => self.failed = true,
                Verdict::Inconclusive => self.doubt = true,
                Verdict::Pass if *r == AnalysisRun::Background => self.background_evidence = true,
                Verdict::Pass => {}
            },
            Input::Evidence(AnalysisRun::Background, missing)
                if self.active.contains(&AnalysisRun::Background) =>
            {
                self.background_evidence = missing.is_none();
            }
            Input::Promote | Input::PromoteFull => {
                self.promoted = true;
                self.doubt = false;
            }
            _ => {}
        }
    }

    fn command(&mut self, c: &Command, canary: bool) -> Result<(), TestCaseError> {
        prop_assert!(self.finished.is_none(), "command after the end: {c:?}");
        match c {
            Command::StartAnalysis(r) => {
                self.active.insert(*r);
            }
            Command::StopAnalysis(r) => {
                self.active.remove(r);
            }
            Command::SetWeight(x) if x.percent() > self.weight => {
                // Property 3: traffic moves only onto as many ready
                // instances as the weight needs (not merely one).
                let need = if canary {
                    canary_size(self.replicas, *x)
                } else {
                    self.replicas
                };
                prop_assert!(
                    self.ready >= need,
                    "weight {x} onto {} ready of the {need} it needs",
                    self.ready
                );
                if x.percent() == 100 {
                    // Property 2: 100 % after doubt needs a person.
                    prop_assert!(
                        !self.doubt,
                        "promoted after an inconclusive verdict without `hatoba promote`"
                    );
                    prop_assert!(
                        self.background_evidence
                            || self.promoted
                            || !self.active.contains(&AnalysisRun::Background),
                        "promoted without background evidence and without `hatoba promote`"
                    );
                }
                self.weight = x.percent();
            }
            Command::SetWeight(x) => self.weight = x.percent(),
            Command::Finish(o) => {
                if *o == Outcome::Succeeded {
                    // Property 1: a Fail verdict never ends in success.
                    prop_assert!(!self.failed, "succeeded after a failed analysis");
                    prop_assert_eq!(self.weight, 100);
                }
                self.finished = Some(o.clone());
            }
            _ => {}
        }
        Ok(())
    }
}

macro_rules! drive {
    ($m:expr, $watcher:expr, $inputs:expr, $canary:expr) => {{
        let mut now = 0u64;
        for (dt, input) in $inputs {
            now += dt;
            while let Some(t) = $m.poll_timeout().filter(|t| t.0 <= now) {
                $m.handle_timeout(t);
                while let Some(c) = $m.poll_command() {
                    $watcher.command(&c, $canary)?;
                }
            }
            if let Some(i) = input {
                $watcher.before(&i);
                $m.handle(Millis(now), i);
            }
            while let Some(c) = $m.poll_command() {
                $watcher.command(&c, $canary)?;
            }
        }
    }};
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn canary_promotes_only_on_evidence_or_a_person(
        replicas in 1u32..6,
        weights in proptest::collection::vec(1i64..=100, 1..4),
        analysis in proptest::collection::vec(any::<bool>(), 4),
        background in any::<bool>(),
        watch in any::<bool>(),
        inputs in inputs(),
    ) {
        let mut sorted = weights.clone();
        sorted.sort_unstable();
        let mut steps = Vec::new();
        for (i, p) in sorted.iter().enumerate() {
            steps.push(Step::SetWeight(w(*p)));
            steps.push(if analysis[i] { Step::Analysis } else { Step::Pause(Some(Duration::from_secs(30))) });
        }
        let plan = CanaryPlan {
            replicas,
            stable_ready: replicas,
            steps,
            progress_deadline: Duration::from_secs(120),
            background_analysis: background,
            watch: Duration::from_secs(if watch { 90 } else { 0 }),
            ramp: false,
        };
        let mut m = Canary::new(plan);
        let mut watcher = Watcher { replicas, ..Watcher::default() };
        drive!(m, watcher, inputs, true);
    }

    #[test]
    fn blue_green_switches_only_on_evidence_or_a_person(
        replicas in 1u32..6,
        auto in proptest::option::of(0u64..100),
        inputs in inputs(),
    ) {
        let plan = BlueGreenPlan {
            replicas,
            stable_ready: replicas,
            auto_promotion: auto.map(Duration::from_secs),
            scale_down_delay: Duration::from_secs(300),
            progress_deadline: Duration::from_secs(60),
            preview: true,
            pre_promotion_analysis: true,
        };
        let mut m = BlueGreen::new(plan);
        let mut watcher = Watcher { replicas, ..Watcher::default() };
        drive!(m, watcher, inputs, false);
    }
}
