//! Rolling update: replace the old version's instances with the new one's a
//! few at a time, within `maxSurge` extra and `maxUnavailable` missing
//! instances, the way a Kubernetes Deployment does, with traffic split in
//! proportion to the ready instances of each version.
//!
//! A rollback is capacity-aware: the old version is scaled back up first
//! and traffic moves back to it only as its instances become ready, never
//! all at once onto a cold instance. A first deployment has no old version:
//! its rollback stops the new instances and ends at once.

use crate::{Command, Input, Outbox, Outcome, Track};
use hatoba_core::event::millis_of;
use hatoba_core::{Event, Millis, Weight, format_duration};
use std::time::Duration;

/// What the rolling machine needs to know.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RollingPlan {
    /// Instances wanted at the end.
    pub replicas: u32,
    /// Ready instances of the old version at the start.
    pub stable_ready: u32,
    /// Instances allowed above `replicas` (resolved from a count or percent).
    pub max_surge: u32,
    /// Instances allowed below `replicas` (resolved from a count or percent).
    pub max_unavailable: u32,
    /// How long without a new instance becoming ready before rolling back.
    pub progress_deadline: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    Idle,
    Rolling { progress: Millis },
    RollingBack { since: Millis, outcome: Outcome },
    Done,
}

/// The rolling-update state machine.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Rolling {
    plan: RollingPlan,
    state: State,
    scaled_old: u32,
    scaled_new: u32,
    ready_old: u32,
    ready_new: u32,
    out: Outbox,
}

impl Rolling {
    /// A machine for this plan, not started.
    pub fn new(plan: RollingPlan) -> Rolling {
        let old = plan.stable_ready;
        Rolling {
            scaled_old: old,
            scaled_new: 0,
            ready_old: old,
            ready_new: 0,
            plan,
            state: State::Idle,
            out: Outbox::default(),
        }
    }

    /// The next command to execute.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::Rolling { progress } => {
                Some(progress.saturating_add(self.plan.progress_deadline))
            }
            State::RollingBack { since, .. } => {
                Some(since.saturating_add(self.plan.progress_deadline))
            }
            _ => None,
        }
    }

    /// True once finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Time passed: a stalled rollout is rolled back; a stalled rollback
    /// ends with traffic where it can be served.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        match self.state.clone() {
            State::Rolling { .. } => {
                let reason = format!(
                    "no new instance became ready within {}: {}/{} ready",
                    format_duration(self.plan.progress_deadline),
                    self.ready_new,
                    self.plan.replicas
                );
                self.roll_back(now, Outcome::RolledBack(reason));
            }
            State::RollingBack { outcome, .. } => {
                self.out.event(Event::RollbackStalled {
                    ready: self.ready_old,
                    replicas: self.plan.replicas,
                    deadline_ms: millis_of(self.plan.progress_deadline),
                    to_old: self.ready_old > 0,
                });
                self.finish(outcome);
            }
            _ => {}
        }
    }

    /// Feeds one observation or command.
    pub fn handle(&mut self, now: Millis, input: Input) {
        match input {
            Input::Start if self.state == State::Idle => {
                self.out.event(Event::RollingStarted {
                    replicas: self.plan.replicas,
                    max_surge: self.plan.max_surge,
                    max_unavailable: self.plan.max_unavailable,
                });
                self.state = State::Rolling { progress: now };
                self.reconcile(now);
            }
            Input::Ready { stable, canary } => {
                if canary > self.ready_new
                    && let State::Rolling { .. } = self.state
                {
                    self.state = State::Rolling { progress: now };
                }
                self.ready_old = stable;
                self.ready_new = canary;
                self.reconcile(now);
            }
            Input::Abort(r) => self.roll_back(now, Outcome::Aborted(r)),
            Input::Unhealthy(r) => self.roll_back(now, Outcome::RolledBack(r)),
            _ => {}
        }
    }

    fn reconcile(&mut self, _now: Millis) {
        match self.state {
            State::Rolling { .. } => {
                let replicas = self.plan.replicas;
                let max_total = replicas + self.plan.max_surge;
                let room = max_total.saturating_sub(self.scaled_old + self.scaled_new);
                let want_new = replicas.min(self.scaled_new + room);
                if want_new > self.scaled_new {
                    self.scaled_new = want_new;
                    self.out.push(Command::Scale(Track::Canary, want_new));
                }
                let min_available = replicas.saturating_sub(self.plan.max_unavailable);
                let available =
                    self.ready_old.min(self.scaled_old) + self.ready_new.min(self.scaled_new);
                let removable = available.saturating_sub(min_available).min(self.scaled_old);
                self.scaled_old -= removable;
                // Traffic moves first (onto the new ready instances), then
                // the old ones leave: never a moment with less capacity.
                self.balance();
                if removable > 0 {
                    self.out
                        .push(Command::Scale(Track::Stable, self.scaled_old));
                }
                // Scaling old down made room for more new instances.
                let room = max_total.saturating_sub(self.scaled_old + self.scaled_new);
                let want_new = replicas.min(self.scaled_new + room);
                if want_new > self.scaled_new {
                    self.scaled_new = want_new;
                    self.out.push(Command::Scale(Track::Canary, want_new));
                }
                if self.ready_new >= replicas && self.scaled_old == 0 {
                    self.finish(Outcome::Succeeded);
                }
            }
            State::RollingBack { .. } => {
                if self.ready_old < self.plan.replicas {
                    self.balance();
                } else {
                    let outcome = match &self.state {
                        State::RollingBack { outcome, .. } => outcome.clone(),
                        _ => Outcome::Succeeded,
                    };
                    self.finish(outcome);
                }
            }
            _ => {}
        }
    }

    /// Traffic in proportion to ready instances of each version.
    fn balance(&mut self) {
        let old = self.ready_old.min(self.scaled_old);
        let new = self.ready_new.min(self.scaled_new);
        if old + new == 0 {
            return;
        }
        let share = (u64::from(new) * 100 + u64::from(old + new) / 2) / u64::from(old + new);
        let mut w = Weight::new(i64::try_from(share).unwrap_or(100)).unwrap_or(Weight::FULL);
        // Never all on a version without ready instances, never none on the only one.
        if new == 0 {
            w = Weight::ZERO;
        } else if old == 0 {
            w = Weight::FULL;
        } else if w == Weight::ZERO {
            w = Weight::new(1).unwrap_or(Weight::ZERO);
        } else if w == Weight::FULL {
            w = Weight::new(99).unwrap_or(Weight::FULL);
        }
        self.out.set_weight(w);
    }

    fn roll_back(&mut self, now: Millis, outcome: Outcome) {
        if matches!(self.state, State::Done | State::RollingBack { .. }) {
            return;
        }
        if self.state == State::Idle {
            self.out.push(Command::Finish(outcome));
            self.state = State::Done;
            return;
        }
        match &outcome {
            Outcome::Aborted(r) => self.out.event(Event::Aborted { reason: r.clone() }),
            Outcome::RolledBack(r) => self.out.event(Event::RollbackStarted { reason: r.clone() }),
            Outcome::Succeeded => {}
        }
        if self.plan.stable_ready == 0 {
            // Nothing to go back to (a first deployment): the new instances
            // stop and the rollout ends now, as canary and blue-green do.
            self.out.set_weight(Weight::ZERO);
            self.scaled_new = 0;
            self.out.push(Command::Scale(Track::Canary, 0));
            self.out.push(Command::Finish(outcome));
            self.state = State::Done;
            return;
        }
        if self.scaled_old < self.plan.replicas {
            self.scaled_old = self.plan.replicas;
            self.out
                .push(Command::Scale(Track::Stable, self.plan.replicas));
        }
        self.state = State::RollingBack {
            since: now,
            outcome,
        };
        self.reconcile(now);
    }

    fn finish(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded => {
                self.out.set_weight(Weight::FULL);
                // The old instances are gone already: serving and complete
                // are one moment for a rolling update.
                self.out.serving(None);
            }
            _ => {
                // Back on the old version, as far as it can serve.
                if self.ready_old > 0 {
                    self.out.set_weight(Weight::ZERO);
                    self.scaled_new = 0;
                    self.out.push(Command::Scale(Track::Canary, 0));
                }
            }
        }
        self.out.push(Command::Finish(outcome));
        self.state = State::Done;
    }
}
