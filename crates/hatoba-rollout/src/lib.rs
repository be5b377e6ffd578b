//! Rollout strategies as sans-IO state machines.
//!
//! A machine is fed what the shell observed — how many instances of each
//! track are ready, analysis verdicts, operator commands — and the time, as
//! `Millis` the caller supplies. It answers with commands for the shell to
//! execute: scale a track, set the canary's traffic weight, start or stop an
//! analysis, record an event (a [`hatoba_core::Event`], rendered to words
//! by the shell), say that the new version serves all traffic
//! ([`Command::Serving`]: before the end when the previous version stays
//! warm), finish. Quinn's shape: `handle(now, input)`,
//! `handle_timeout(now)`, `poll_timeout()`, `poll_command()`.
//!
//! The machines decide; they never act (invariant 2). They do no IO, read
//! no clock and never sleep (invariant 1), so every trace is tested on a
//! simulated clock in microseconds.
//!
//! # No promotion without evidence
//!
//! A new version reaches all traffic only on evidence: every analysis the
//! rollout runs passed (a step's) or has seen each of its metrics pass at
//! least once (the background one), or a person said `hatoba promote`.
//! The shell reports each run's evidence after each measurement
//! ([`Input::Evidence`]). An analysis step whose measurements are
//! insufficient (or whose provider fails) *holds* the canary, and so does a
//! background analysis without evidence once the canary is at full size:
//! held until evidence arrives (then it judges as usual), until a person
//! promotes (the machine returns [`Command::PromotedWithoutEvidence`]), or
//! until the progress deadline, which rolls back. A `Fail` verdict always
//! rolls back; an `Inconclusive` one waits for a person. The property
//! tests in `tests/it` check these rules over random inputs.
//!
//! [`health`] is the health policy of a service's instances (readiness,
//! liveness, exits, restarts with back-off, crash loops, a runtime that
//! cannot list), in the same shape: `handle(now, observation)`,
//! `handle_timeout(now)`, `poll_timeout()`, `poll_action()`. The supervisor
//! and the deployer both drive it.
//!
//! Vocabulary: the *stable* track runs the version serving users now; the
//! *canary* track runs the new version (for blue-green, the new colour).
//! Weights are the canary's share; the stable track gets the rest.

mod blue_green;
mod canary;
pub mod health;
mod rolling;

pub use blue_green::{BlueGreen, BlueGreenPlan};
pub use canary::{Canary, CanaryPlan, Step, canary_size};
pub use rolling::{Rolling, RollingPlan};

use hatoba_core::{Event, Millis, Weight};
use std::collections::VecDeque;

/// Which version's instances a command or observation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Track {
    /// The version serving users before the rollout.
    Stable,
    /// The new version.
    Canary,
}

/// Which analysis run a command is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AnalysisRun {
    /// The analysis of canary step `n` (0-based).
    Step(usize),
    /// The background analysis that runs for the whole rollout.
    Background,
    /// Blue-green's checks against the preview, before the switch.
    PrePromotion,
}

/// An analysis result, as the analysis layer reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// The new version is good enough.
    Pass,
    /// The new version is worse: roll back.
    Fail,
    /// Not enough evidence: never promote on it; wait for a person.
    Inconclusive,
}

/// What the shell tells a machine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// Begin the rollout.
    Start,
    /// How many instances of each track are ready now (passing readiness).
    Ready {
        /// Ready stable instances.
        stable: u32,
        /// Ready canary instances.
        canary: u32,
    },
    /// An analysis run ended with a verdict.
    Verdict(AnalysisRun, Verdict),
    /// What a running analysis has of evidence, reported after each of its
    /// measurements: `None` once every metric has passed at least once,
    /// else what is missing (`metric success-rate: insufficient: 0 of the
    /// 20 requests needed in the last 10s`). A run without evidence holds
    /// the rollout: see "No promotion without evidence" in the crate docs.
    Evidence(AnalysisRun, Option<String>),
    /// An operator moves a paused rollout on by one step.
    Promote,
    /// An operator skips every remaining step.
    PromoteFull,
    /// An operator stops the rollout: traffic back on stable.
    Abort(String),
    /// A check failed outside analysis (liveness, crash loop): roll back.
    Unhealthy(String),
}

/// What a machine asks the shell to do.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Run this many instances of a track (start or stop the difference).
    Scale(Track, u32),
    /// Send this share of traffic to the canary track, the rest to stable.
    /// Only ever set when the receiving tracks have ready instances.
    SetWeight(Weight),
    /// Start an analysis run.
    StartAnalysis(AnalysisRun),
    /// Stop an analysis run.
    StopAnalysis(AnalysisRun),
    /// Serve (true) or stop serving (false) the canary track on the
    /// service's preview address.
    SetPreview(bool),
    /// Record an event in the deployment's history.
    Event(Event),
    /// Record a line of text: only in machines saved by a Hatoba from
    /// before typed events (a pending command of a saved state); no
    /// machine emits it any more. Recorded as a `rollout` event.
    Record(String),
    /// A person's promote overrode missing evidence (what was missing):
    /// the deployment is marked as promoted without evidence, and a
    /// rollback never returns to it by itself.
    PromotedWithoutEvidence(String),
    /// The new version takes all traffic from now on (sent right after the
    /// weight that gives it 100 %, once per rollout, never while rolling
    /// back): the deployment *serves*. It is *complete* only at `Finish`,
    /// once the previous version has stopped; until then, `warm_until`
    /// says when the previous version stops (it is warm: a rollback
    /// before then is one weight change). None: nothing stays warm.
    Serving {
        /// When the previous version is due to stop, if it stays warm.
        warm_until: Option<Millis>,
    },
    /// The rollout is over; no command follows this one.
    Finish(Outcome),
}

/// How a rollout ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// The new version serves all traffic.
    Succeeded,
    /// An operator aborted it; traffic is back on stable.
    Aborted(String),
    /// A check failed; traffic is back on stable.
    RolledBack(String),
}

/// The commands a machine has decided and the shell has not taken yet, and
/// the canary weight they last set (so a weight is only sent when it changes).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Outbox {
    queue: VecDeque<Command>,
    weight: Weight,
}

impl Outbox {
    pub(crate) fn push(&mut self, c: Command) {
        self.queue.push_back(c);
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.queue.push_back(Command::Event(e));
    }

    /// The new version serves all traffic ([`Command::Serving`]).
    pub(crate) fn serving(&mut self, warm_until: Option<Millis>) {
        self.queue.push_back(Command::Serving { warm_until });
    }

    pub(crate) fn set_weight(&mut self, w: Weight) {
        if self.weight != w {
            self.weight = w;
            self.queue.push_back(Command::SetWeight(w));
        }
    }

    pub(crate) fn weight(&self) -> Weight {
        self.weight
    }

    pub(crate) fn pop(&mut self) -> Option<Command> {
        self.queue.pop_front()
    }
}
