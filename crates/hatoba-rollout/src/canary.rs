//! Canary: shift traffic to the new version in steps, pausing and analysing
//! between them, then promote it; abort at any time.
//!
//! Each `setWeight` step first scales the canary track in proportion to the
//! weight (at least one instance) and sets the weight only once that many
//! canary instances are ready, so traffic never goes to instances that can
//! not take it. Waiting for readiness is bounded by the progress deadline.
//! After the last step the canary is scaled to full size, gets 100 %, and
//! the stable track is scaled to zero. An abort (operator) or a failed
//! check (analysis, health, deadline) sets the weight back to 0 while the
//! stable track is still at full size, then scales the canary to zero.
//!
//! No promotion without evidence (see the crate docs): an analysis step
//! whose run reports no evidence holds the canary where it is, and a
//! background analysis without evidence holds it at full size before the
//! last weight change (`AwaitingEvidence`), each until evidence arrives, a
//! person promotes (then [`Command::PromotedWithoutEvidence`]) or the
//! progress deadline rolls back.

use crate::{AnalysisRun, Command, Input, Outbox, Outcome, Track, Verdict};
use hatoba_core::event::millis_of;
use hatoba_core::{Event, Millis, Weight, format_duration};
use std::time::Duration;

/// One canary step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Step {
    /// Give the canary this share of traffic.
    SetWeight(Weight),
    /// Wait this long, or (None) until an operator promotes.
    Pause(Option<Duration>),
    /// Run this step's analysis; move on when it passes.
    Analysis,
}

/// What the canary machine needs to know about the rollout.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CanaryPlan {
    /// Instances of the new version at the end (and of stable now).
    pub replicas: u32,
    /// Ready stable instances when the rollout starts; 0 on a first
    /// deployment, which skips the steps (there is nothing to compare with).
    pub stable_ready: u32,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// How long canary instances may take to become ready.
    pub progress_deadline: Duration,
    /// Run a background analysis for the whole rollout.
    pub background_analysis: bool,
    /// After 100 %, keep the stable track warm this long while health and
    /// background analysis are still checked; zero skips the watch.
    #[serde(default)]
    pub watch: Duration,
    /// While promoting to full size, move traffic in proportion to the
    /// instances already ready instead of all at once when all are (used
    /// for rollbacks onto a cold previous version).
    #[serde(default)]
    pub ramp: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    Idle,
    /// Waiting for `need` ready canary instances before setting `weight`.
    Scaling {
        step: usize,
        weight: Weight,
        need: u32,
        since: Millis,
    },
    /// A pause step; `until: None` waits for a promote.
    Paused {
        step: usize,
        until: Option<Millis>,
    },
    /// A step's analysis is running.
    Analysing {
        step: usize,
    },
    /// A step's analysis was inconclusive: waits for a promote or an abort.
    Held {
        step: usize,
    },
    /// After the last step: waiting for the canary at full size.
    Promoting {
        since: Millis,
    },
    /// The background analysis was inconclusive: promotion waits for a person.
    AwaitingPromotion,
    /// The canary is at full size but the background analysis has no
    /// evidence yet: promotion waits for it, a person, or the deadline.
    AwaitingEvidence {
        since: Millis,
    },
    /// At 100 %, the stable track still warm until `until`.
    Watching {
        until: Millis,
    },
    Done,
}

/// The canary state machine.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Canary {
    plan: CanaryPlan,
    state: State,
    ready_canary: u32,
    /// Canary instances currently asked for.
    scaled: u32,
    background: bool,
    hold_promotion: bool,
    /// A promote that came while the canary was still scaling: it ends the
    /// next pause or analysis step as soon as that step is reached.
    #[serde(default)]
    promote_queued: bool,
    /// What the background analysis lacks of evidence (`None`: each of
    /// its metrics has passed at least once).
    #[serde(default = "not_reported")]
    background_missing: Option<String>,
    /// The running step analysis has no evidence: since when, and what it
    /// lacks. The progress deadline counts from then.
    #[serde(default)]
    step_hold: Option<(Millis, String)>,
    /// A person's promote skipped an analysis before it passed: what was
    /// missing, reported with the promotion.
    #[serde(default)]
    unjudged: Option<String>,
    /// A person promoted past missing evidence: the background analysis's
    /// lack of evidence no longer holds the promotion.
    #[serde(default)]
    evidence_overridden: bool,
    out: Outbox,
}

fn not_reported() -> Option<String> {
    Some("no measurement yet".to_owned())
}

impl Canary {
    /// A machine for this plan, not started.
    pub fn new(plan: CanaryPlan) -> Canary {
        Canary {
            plan,
            state: State::Idle,
            ready_canary: 0,
            scaled: 0,
            background: false,
            hold_promotion: false,
            promote_queued: false,
            background_missing: not_reported(),
            step_hold: None,
            unjudged: None,
            evidence_overridden: false,
            out: Outbox::default(),
        }
    }

    /// The next command to execute, in order.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop()
    }

    /// When `handle_timeout` must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let deadline = |since: Millis| Some(since.saturating_add(self.plan.progress_deadline));
        match &self.state {
            State::Scaling { since, .. }
            | State::Promoting { since }
            | State::AwaitingEvidence { since } => deadline(*since),
            State::Analysing { .. } | State::Held { .. } => self
                .step_hold
                .as_ref()
                .and_then(|(since, _)| deadline(*since)),
            State::Paused { until, .. } => *until,
            State::Watching { until } => Some(*until),
            _ => None,
        }
    }

    /// True once the machine has finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The canary's current weight.
    pub fn weight(&self) -> Weight {
        self.out.weight()
    }

    /// Time passed: pauses end, deadlines expire.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        match self.state.clone() {
            State::Paused { step, .. } => {
                self.out.event(Event::PauseOver { step });
                self.advance(now, step + 1);
            }
            State::Scaling { need, .. } => self.deadline_passed(need),
            State::Promoting { .. } => self.deadline_passed(self.plan.replicas),
            State::Analysing { step } | State::Held { step } => {
                let missing = self.step_hold.take().map(|(_, m)| m).unwrap_or_default();
                let reason = format!(
                    "step {step}: no evidence within {}: {missing}",
                    format_duration(self.plan.progress_deadline)
                );
                self.end(Outcome::RolledBack(reason));
            }
            State::AwaitingEvidence { .. } => {
                let reason = format!(
                    "no evidence within {}: background analysis: {}",
                    format_duration(self.plan.progress_deadline),
                    self.background_missing
                        .as_deref()
                        .unwrap_or("no measurement")
                );
                self.end(Outcome::RolledBack(reason));
            }
            State::Watching { .. } => {
                self.out.event(Event::WatchOver);
                self.finish_watch();
            }
            _ => {}
        }
    }

    fn deadline_passed(&mut self, need: u32) {
        let reason = format!(
            "canary not ready within {}: {}/{need} instances ready",
            format_duration(self.plan.progress_deadline),
            self.ready_canary
        );
        self.end(Outcome::RolledBack(reason));
    }

    /// Feeds one observation or command.
    pub fn handle(&mut self, now: Millis, input: Input) {
        if self.state == State::Done {
            return;
        }
        match input {
            Input::Start => {
                if self.state != State::Idle {
                    return;
                }
                if self.plan.background_analysis && self.plan.stable_ready > 0 {
                    self.background = true;
                    self.out
                        .push(Command::StartAnalysis(AnalysisRun::Background));
                }
                if self.plan.stable_ready == 0 {
                    self.out.event(Event::NothingToCompare);
                    self.promote(now);
                } else {
                    self.advance(now, 0);
                }
            }
            Input::Ready { canary, .. } => {
                self.ready_canary = canary;
                self.on_ready(now);
            }
            Input::Verdict(run, verdict) => self.on_verdict(now, run, verdict),
            Input::Evidence(run, missing) => self.on_evidence(now, run, missing),
            Input::Promote => match self.state.clone() {
                State::Paused { step, .. } => {
                    self.out.event(Event::StepPromoted { step });
                    self.advance(now, step + 1);
                }
                State::Held { step } => {
                    self.out.event(Event::StepPromoted { step });
                    let why = self.step_missing(step, "analysis inconclusive");
                    self.override_evidence(why);
                    self.advance(now, step + 1);
                }
                State::Analysing { step } => {
                    self.out
                        .push(Command::StopAnalysis(AnalysisRun::Step(step)));
                    self.out.event(Event::StepAnalysisSkipped { step });
                    let why = self.step_missing(step, "analysis skipped before a verdict");
                    self.override_evidence(why);
                    self.advance(now, step + 1);
                }
                State::AwaitingPromotion => {
                    self.out.event(Event::Promoted);
                    self.hold_promotion = false;
                    self.override_evidence("background analysis inconclusive".to_owned());
                    self.promote(now);
                }
                State::AwaitingEvidence { .. } => {
                    self.out.event(Event::Promoted);
                    let why = format!(
                        "background analysis: {}",
                        self.background_missing
                            .as_deref()
                            .unwrap_or("no measurement")
                    );
                    self.override_evidence(why);
                    self.promote(now);
                }
                State::Watching { .. } => {
                    self.out.event(Event::WatchEndedEarly { full: false });
                    self.finish_watch();
                }
                State::Scaling { step, .. } => {
                    self.promote_queued = true;
                    self.out.event(Event::PromoteNoted { step });
                }
                _ => {}
            },
            Input::PromoteFull => {
                if let State::Watching { .. } = self.state {
                    self.out.event(Event::WatchEndedEarly { full: true });
                    self.finish_watch();
                    return;
                }
                if let State::Analysing { step } = self.state {
                    self.out
                        .push(Command::StopAnalysis(AnalysisRun::Step(step)));
                }
                // `--full` is a person's word for every analysis left: the
                // current one, the steps' still ahead, the background one.
                let skipped = match self.state.clone() {
                    State::Analysing { step } => {
                        Some(self.step_missing(step, "analysis skipped before a verdict"))
                    }
                    State::Held { step } => Some(self.step_missing(step, "analysis inconclusive")),
                    State::Scaling { step, .. } | State::Paused { step, .. } => self
                        .plan
                        .steps
                        .iter()
                        .enumerate()
                        .skip(step)
                        .find(|(_, s)| **s == Step::Analysis)
                        .map(|(i, _)| {
                            format!("step {i}: analysis skipped by `hatoba promote --full`")
                        }),
                    State::AwaitingPromotion => Some("background analysis inconclusive".to_owned()),
                    _ => None,
                };
                if !matches!(self.state, State::Idle | State::Promoting { .. }) {
                    self.out.event(Event::PromotedFully);
                    self.hold_promotion = false;
                    self.evidence_overridden = true;
                    if let Some(why) = skipped {
                        self.override_evidence(why);
                    }
                    self.promote(now);
                }
            }
            Input::Abort(reason) => self.end(Outcome::Aborted(reason)),
            Input::Unhealthy(reason) => {
                let reason = self.during_watch(reason);
                self.end(Outcome::RolledBack(reason));
            }
        }
    }

    /// Names a regression found while watching as such.
    fn during_watch(&self, reason: String) -> String {
        match self.state {
            State::Watching { .. } => {
                format!("regression during the watch after promotion: {reason}")
            }
            _ => reason,
        }
    }

    fn on_ready(&mut self, now: Millis) {
        match self.state.clone() {
            State::Scaling {
                step, weight, need, ..
            } if self.ready_canary >= need => {
                self.out.set_weight(weight);
                self.advance(now, step + 1);
            }
            State::Promoting { .. } if self.ready_canary >= self.plan.replicas => {
                self.finish_promotion(now)
            }
            State::Promoting { .. } if self.plan.ramp && self.ready_canary > 0 => {
                // Capacity-aware: each ready instance takes its share, no
                // more; the rest stays on stable (also when one drops out).
                let share =
                    u64::from(self.ready_canary) * 100 / u64::from(self.plan.replicas.max(1));
                let w = Weight::new(i64::try_from(share).unwrap_or(100)).unwrap_or(Weight::FULL);
                self.out.set_weight(w);
            }
            _ => {}
        }
    }

    fn on_verdict(&mut self, now: Millis, run: AnalysisRun, verdict: Verdict) {
        match (run, verdict) {
            (AnalysisRun::Background, Verdict::Fail) if self.background => {
                let reason = self.during_watch("background analysis failed".to_owned());
                self.end(Outcome::RolledBack(reason));
            }
            (AnalysisRun::Background, Verdict::Inconclusive)
                if self.background && matches!(self.state, State::Watching { .. }) =>
            {
                self.out
                    .event(Event::BackgroundInconclusive { watching: true });
            }
            (AnalysisRun::Background, Verdict::Inconclusive) if self.background => {
                self.out
                    .event(Event::BackgroundInconclusive { watching: false });
                self.hold_promotion = true;
                if let State::Promoting { .. } | State::AwaitingEvidence { .. } = self.state {
                    self.state = State::AwaitingPromotion;
                }
            }
            (AnalysisRun::Background, Verdict::Pass) if self.background => {
                // A background run with a count that passed: evidence.
                self.on_evidence(now, AnalysisRun::Background, None);
            }
            (AnalysisRun::Step(i), v) if self.state == (State::Analysing { step: i }) => {
                self.out.push(Command::StopAnalysis(run));
                match v {
                    Verdict::Pass => {
                        self.out.event(Event::StepAnalysisPassed { step: i });
                        self.advance(now, i + 1);
                    }
                    Verdict::Fail => {
                        self.end(Outcome::RolledBack(format!("step {i}: analysis failed")))
                    }
                    Verdict::Inconclusive => {
                        self.out.event(Event::StepAnalysisInconclusive { step: i });
                        self.state = State::Held { step: i };
                    }
                }
            }
            _ => {}
        }
    }

    /// What the step's analysis lacked, for the promotion's record.
    fn step_missing(&self, step: usize, otherwise: &str) -> String {
        match &self.step_hold {
            Some((_, missing)) => format!("step {step}: {missing}"),
            None => format!("step {step}: {otherwise}"),
        }
    }

    /// A person's promote goes past missing evidence (`why`).
    fn override_evidence(&mut self, why: String) {
        self.evidence_overridden = true;
        if self.unjudged.is_none() {
            self.unjudged = Some(why);
        }
    }

    fn on_evidence(&mut self, now: Millis, run: AnalysisRun, missing: Option<String>) {
        match run {
            AnalysisRun::Background if self.background => {
                let arrived = self.background_missing.is_some() && missing.is_none();
                self.background_missing = missing;
                if arrived && let State::AwaitingEvidence { .. } = self.state {
                    self.out.event(Event::BackgroundHasEvidence);
                    self.promote(now);
                }
            }
            AnalysisRun::Step(i) if self.state == (State::Analysing { step: i }) => {
                match (missing, self.step_hold.take()) {
                    (Some(m), None) => {
                        self.out.event(Event::StepHeld {
                            step: i,
                            missing: m.clone(),
                            deadline_ms: millis_of(self.plan.progress_deadline),
                        });
                        self.step_hold = Some((now, m));
                    }
                    (Some(m), Some((since, _))) => self.step_hold = Some((since, m)),
                    (None, Some(_)) => {
                        self.out.event(Event::StepHasEvidence { step: i });
                    }
                    (None, None) => {}
                }
            }
            _ => {}
        }
    }

    /// Runs steps from `from` until one has to wait.
    fn advance(&mut self, now: Millis, from: usize) {
        self.step_hold = None;
        let mut i = from;
        while let Some(step) = self.plan.steps.get(i).cloned() {
            match step {
                // All traffic is the promotion itself: it goes through the
                // evidence check (steps after it would run at 100 % anyway;
                // `watch` is the way to keep watching there).
                Step::SetWeight(w) if w == Weight::FULL => {
                    self.out.event(Event::StepWeight {
                        step: i,
                        weight: w,
                        promoting: true,
                    });
                    break;
                }
                Step::SetWeight(w) => {
                    let need = canary_size(self.plan.replicas, w);
                    self.out.event(Event::StepWeight {
                        step: i,
                        weight: w,
                        promoting: false,
                    });
                    self.scale_canary(need);
                    if self.ready_canary < need {
                        self.state = State::Scaling {
                            step: i,
                            weight: w,
                            need,
                            since: now,
                        };
                        return;
                    }
                    self.out.set_weight(w);
                }
                Step::Pause(_) | Step::Analysis if self.promote_queued => {
                    self.promote_queued = false;
                    if step == Step::Analysis {
                        self.override_evidence(format!(
                            "step {i}: analysis skipped: promoted while scaling"
                        ));
                    }
                    self.out.event(Event::StepSkipped { step: i });
                }
                Step::Pause(d) => {
                    let until = d.map(|d| now.saturating_add(d));
                    self.out.event(Event::StepPaused {
                        step: i,
                        for_ms: d.map(millis_of),
                    });
                    self.state = State::Paused { step: i, until };
                    return;
                }
                Step::Analysis => {
                    self.out.event(Event::StepAnalysis { step: i });
                    self.out.push(Command::StartAnalysis(AnalysisRun::Step(i)));
                    self.state = State::Analysing { step: i };
                    return;
                }
            }
            i += 1;
        }
        self.promote(now);
    }

    fn promote(&mut self, now: Millis) {
        self.scale_canary(self.plan.replicas);
        self.state = State::Promoting { since: now };
        if self.ready_canary >= self.plan.replicas {
            self.finish_promotion(now);
        }
    }

    fn finish_promotion(&mut self, now: Millis) {
        if self.hold_promotion {
            self.out.event(Event::FullSizeAwaitingPromote);
            self.state = State::AwaitingPromotion;
            return;
        }
        let missing = self.unjudged.clone().or_else(|| {
            self.background
                .then(|| self.background_missing.clone())
                .flatten()
                .map(|m| format!("background analysis: {m}"))
        });
        if let Some(missing) = missing {
            if !self.evidence_overridden {
                self.out.event(Event::FullSizeHeld {
                    missing: missing.clone(),
                    deadline_ms: millis_of(self.plan.progress_deadline),
                });
                self.state = State::AwaitingEvidence { since: now };
                return;
            }
            self.unjudged = None;
            self.out.push(Command::PromotedWithoutEvidence(missing));
        }
        self.out.set_weight(Weight::FULL);
        if self.plan.watch > Duration::ZERO && self.plan.stable_ready > 0 {
            let until = now.saturating_add(self.plan.watch);
            self.out.serving(Some(until));
            self.out.event(Event::WatchStarted {
                watch_ms: millis_of(self.plan.watch),
            });
            self.state = State::Watching { until };
            return;
        }
        self.out.serving(None);
        self.finish_watch();
    }

    /// Stops the previous version and ends the rollout as a success.
    fn finish_watch(&mut self) {
        self.out.push(Command::Scale(Track::Stable, 0));
        if self.background {
            self.background = false;
            self.out
                .push(Command::StopAnalysis(AnalysisRun::Background));
        }
        self.out.push(Command::Finish(Outcome::Succeeded));
        self.state = State::Done;
    }

    /// Ends the rollout with traffic back on stable (still at full size).
    fn end(&mut self, outcome: Outcome) {
        if matches!(self.state, State::Done) {
            return;
        }
        match &outcome {
            Outcome::Aborted(r) => self.out.event(Event::Aborted { reason: r.clone() }),
            Outcome::RolledBack(r) => self.out.event(Event::RollbackStarted { reason: r.clone() }),
            Outcome::Succeeded => {}
        }
        if self.out.weight() != Weight::ZERO {
            self.out.set_weight(Weight::ZERO);
        }
        if let State::Analysing { step } = self.state {
            self.out
                .push(Command::StopAnalysis(AnalysisRun::Step(step)));
        }
        if self.background {
            self.background = false;
            self.out
                .push(Command::StopAnalysis(AnalysisRun::Background));
        }
        if self.scaled > 0 {
            self.scaled = 0;
            self.out.push(Command::Scale(Track::Canary, 0));
        }
        self.out.push(Command::Finish(outcome));
        self.state = State::Done;
    }

    fn scale_canary(&mut self, n: u32) {
        if n > self.scaled {
            self.scaled = n;
            self.out.push(Command::Scale(Track::Canary, n));
        }
    }
}

/// Canary instances for a weight: in proportion to it, rounded up, at least
/// one. The weight is set only once that many canary instances are ready.
pub fn canary_size(replicas: u32, w: Weight) -> u32 {
    let n = (u64::from(replicas) * u64::from(w.percent())).div_ceil(100);
    u32::try_from(n)
        .unwrap_or(u32::MAX)
        .clamp(1, replicas.max(1))
}
