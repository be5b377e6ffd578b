//! Blue-green: start the new colour beside the old one at full size, show
//! it on the preview address and run the pre-promotion checks, switch all
//! traffic at once, keep the old colour warm for the scale-down delay (a
//! rollback in that window is one weight change), then stop it.
//!
//! No promotion without evidence: pre-promotion checks that report no
//! evidence hold the switch until evidence arrives, a person promotes
//! (then [`Command::PromotedWithoutEvidence`]) or the progress deadline
//! rolls back.

use crate::{AnalysisRun, Command, Input, Outbox, Outcome, Track, Verdict};
use hatoba_core::event::millis_of;
use hatoba_core::{Event, Millis, Weight, format_duration};
use std::time::Duration;

/// What the blue-green machine needs to know about the rollout.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlueGreenPlan {
    /// Instances of each colour.
    pub replicas: u32,
    /// Ready instances of the old colour at the start; 0 on a first deployment.
    pub stable_ready: u32,
    /// Switch this long after the new colour is ready and checked; None:
    /// wait for `hatoba promote`.
    pub auto_promotion: Option<Duration>,
    /// How long the old colour stays up after the switch.
    pub scale_down_delay: Duration,
    /// How long the new colour may take to become ready.
    pub progress_deadline: Duration,
    /// Expose the new colour on a preview address before the switch.
    pub preview: bool,
    /// Run checks (smoke tests, analysis) against the preview before the switch.
    pub pre_promotion_analysis: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    Idle,
    Starting {
        since: Millis,
    },
    Checking,
    AwaitingPromotion {
        until: Option<Millis>,
    },
    /// Promoted, but the new colour lost ready instances: switch when it is
    /// fully ready again (all traffic must land on a full colour).
    SwitchWhenReady {
        since: Millis,
    },
    /// Traffic is on the new colour; the old one is warm until `until`.
    Switched {
        until: Millis,
    },
    Done,
}

/// The blue-green state machine.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BlueGreen {
    plan: BlueGreenPlan,
    state: State,
    ready_new: u32,
    preview_on: bool,
    analysing: bool,
    /// The pre-promotion checks have no evidence: since when, and what
    /// they lack. The progress deadline counts from then.
    #[serde(default)]
    check_hold: Option<(Millis, String)>,
    /// A person promoted before the checks passed: what was missing,
    /// reported with the switch.
    #[serde(default)]
    unjudged: Option<String>,
    out: Outbox,
}

impl BlueGreen {
    /// A machine for this plan, not started.
    pub fn new(plan: BlueGreenPlan) -> BlueGreen {
        BlueGreen {
            plan,
            state: State::Idle,
            ready_new: 0,
            preview_on: false,
            analysing: false,
            check_hold: None,
            unjudged: None,
            out: Outbox::default(),
        }
    }

    /// The next command to execute.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop()
    }

    /// The new colour is shown on the preview address (it is ready and
    /// waits for its checks or for the switch).
    pub fn preview_on(&self) -> bool {
        self.preview_on
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::Starting { since } | State::SwitchWhenReady { since } => {
                Some(since.saturating_add(self.plan.progress_deadline))
            }
            State::AwaitingPromotion { until } => until,
            State::Switched { until } => Some(until),
            State::Checking => self
                .check_hold
                .as_ref()
                .map(|(since, _)| since.saturating_add(self.plan.progress_deadline)),
            _ => None,
        }
    }

    /// True once finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        match self.state {
            State::Starting { .. } | State::SwitchWhenReady { .. } => {
                let reason = format!(
                    "new colour not ready within {}: {}/{} instances ready",
                    format_duration(self.plan.progress_deadline),
                    self.ready_new,
                    self.plan.replicas
                );
                self.end(Outcome::RolledBack(reason));
            }
            State::Checking => {
                let missing = self.check_hold.take().map(|(_, m)| m).unwrap_or_default();
                let reason = format!(
                    "pre-promotion checks: no evidence within {}: {missing}",
                    format_duration(self.plan.progress_deadline)
                );
                self.end(Outcome::RolledBack(reason));
            }
            State::AwaitingPromotion { .. } => {
                self.out.event(Event::AutoPromotionDelayOver);
                self.switch(now);
            }
            State::Switched { .. } => {
                self.out.event(Event::ScaleDownDelayOver {
                    delay_ms: millis_of(self.plan.scale_down_delay),
                });
                self.out.push(Command::Scale(Track::Stable, 0));
                self.out.push(Command::Finish(Outcome::Succeeded));
                self.state = State::Done;
            }
            _ => {}
        }
    }

    /// Feeds one observation or command.
    pub fn handle(&mut self, now: Millis, input: Input) {
        if self.state == State::Done {
            return;
        }
        match input {
            Input::Start if self.state == State::Idle => {
                self.out.event(Event::ColourStarting {
                    replicas: self.plan.replicas,
                });
                self.out
                    .push(Command::Scale(Track::Canary, self.plan.replicas));
                self.state = State::Starting { since: now };
                self.on_ready(now);
            }
            Input::Ready { canary, .. } => {
                self.ready_new = canary;
                self.on_ready(now);
            }
            Input::Verdict(AnalysisRun::PrePromotion, v) if self.state == State::Checking => {
                self.stop_analysis();
                match v {
                    Verdict::Pass => {
                        self.out.event(Event::ChecksPassed);
                        self.await_promotion(now);
                    }
                    Verdict::Fail => self.end(Outcome::RolledBack(
                        "pre-promotion checks failed".to_owned(),
                    )),
                    Verdict::Inconclusive => {
                        self.unjudged = Some("pre-promotion checks inconclusive".to_owned());
                        self.out.event(Event::ChecksInconclusive);
                        self.state = State::AwaitingPromotion { until: None };
                    }
                }
            }
            Input::Evidence(AnalysisRun::PrePromotion, missing)
                if self.state == State::Checking =>
            {
                match (missing, self.check_hold.take()) {
                    (Some(m), None) => {
                        self.out.event(Event::ChecksHeld {
                            missing: m.clone(),
                            deadline_ms: millis_of(self.plan.progress_deadline),
                        });
                        self.check_hold = Some((now, m));
                    }
                    (Some(m), Some((since, _))) => self.check_hold = Some((since, m)),
                    (None, Some(_)) => self.out.event(Event::ChecksHaveEvidence),
                    (None, None) => {}
                }
            }
            Input::Promote | Input::PromoteFull => match self.state {
                State::AwaitingPromotion { .. } | State::Checking => {
                    if self.state == State::Checking {
                        self.unjudged = Some(match self.check_hold.take() {
                            Some((_, m)) => format!("pre-promotion checks: {m}"),
                            None => "pre-promotion checks skipped before a verdict".to_owned(),
                        });
                    }
                    self.stop_analysis();
                    self.out.event(Event::Promoted);
                    self.switch(now);
                }
                State::Switched { .. } => {
                    self.out.event(Event::OldColourStoppedEarly);
                    self.state = State::Switched { until: now };
                    self.handle_timeout(now);
                }
                _ => {}
            },
            Input::Abort(r) => self.end(Outcome::Aborted(r)),
            Input::Unhealthy(r) => self.end(Outcome::RolledBack(r)),
            _ => {}
        }
    }

    fn on_ready(&mut self, now: Millis) {
        if let State::SwitchWhenReady { .. } = self.state
            && self.ready_new >= self.plan.replicas
        {
            self.switch(now);
            return;
        }
        if let State::Starting { .. } = self.state
            && self.ready_new >= self.plan.replicas
        {
            self.out.event(Event::ColourReady);
            if self.plan.stable_ready == 0 {
                self.out.event(Event::SwitchingAtOnce);
                self.out.set_weight(Weight::FULL);
                self.out.serving(None);
                self.out.push(Command::Finish(Outcome::Succeeded));
                self.state = State::Done;
                return;
            }
            if self.plan.preview {
                self.preview_on = true;
                self.out.push(Command::SetPreview(true));
            }
            if self.plan.pre_promotion_analysis {
                self.analysing = true;
                self.out
                    .push(Command::StartAnalysis(AnalysisRun::PrePromotion));
                self.state = State::Checking;
            } else {
                self.await_promotion(now);
            }
        }
    }

    fn await_promotion(&mut self, now: Millis) {
        match self.plan.auto_promotion {
            Some(d) if d.is_zero() => self.switch(now),
            Some(d) => {
                self.out.event(Event::SwitchScheduled {
                    after_ms: millis_of(d),
                });
                self.state = State::AwaitingPromotion {
                    until: Some(now.saturating_add(d)),
                };
            }
            None => {
                self.out.event(Event::AwaitingPromote);
                self.state = State::AwaitingPromotion { until: None };
            }
        }
    }

    fn switch(&mut self, now: Millis) {
        if self.ready_new < self.plan.replicas {
            self.out.event(Event::SwitchWaits {
                ready: self.ready_new,
                replicas: self.plan.replicas,
            });
            self.state = State::SwitchWhenReady { since: now };
            return;
        }
        if let Some(missing) = self.unjudged.take() {
            self.out.push(Command::PromotedWithoutEvidence(missing));
        }
        self.out.event(Event::Switching);
        self.out.set_weight(Weight::FULL);
        let until = now.saturating_add(self.plan.scale_down_delay);
        self.out
            .serving((!self.plan.scale_down_delay.is_zero()).then_some(until));
        if self.preview_on {
            self.preview_on = false;
            self.out.push(Command::SetPreview(false));
        }
        self.state = State::Switched { until };
    }

    /// Back to the old colour: one weight change while it is still warm.
    fn end(&mut self, outcome: Outcome) {
        if self.state == State::Done || self.state == State::Idle {
            if self.state == State::Idle {
                self.out.push(Command::Finish(outcome));
                self.state = State::Done;
            }
            return;
        }
        match &outcome {
            Outcome::Aborted(r) => self.out.event(Event::Aborted { reason: r.clone() }),
            Outcome::RolledBack(r) => self.out.event(Event::RollbackStarted { reason: r.clone() }),
            Outcome::Succeeded => {}
        }
        self.stop_analysis();
        if self.out.weight() != Weight::ZERO {
            self.out.set_weight(Weight::ZERO);
        }
        if self.preview_on {
            self.preview_on = false;
            self.out.push(Command::SetPreview(false));
        }
        self.out.push(Command::Scale(Track::Canary, 0));
        self.out.push(Command::Finish(outcome));
        self.state = State::Done;
    }

    fn stop_analysis(&mut self) {
        if self.analysing {
            self.analysing = false;
            self.out
                .push(Command::StopAnalysis(AnalysisRun::PrePromotion));
        }
    }
}
