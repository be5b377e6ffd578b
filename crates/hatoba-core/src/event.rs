//! `Event`: what happens to a deployment, with its facts as data.
//!
//! One enum for every event of a deployment's timeline: the rollout
//! machines emit its rollout variants (`Command::Event`), the server adds
//! its own (instances, analysis, approvals, operators), and the store
//! writes `created` and `status_changed`. Each variant is stored as its
//! tag (`kind`, snake_case) and its fields as JSON (`data`), and is
//! rendered to words in one place, [`Event::message`] (`Display` is the
//! same text without a service name). Old rows (written as free text
//! before events were typed) read back as [`Event::Text`].
//!
//! Durations are whole milliseconds in the data (`*_ms`), never serde's
//! `{"secs", "nanos"}`. No IO here: the store and the server move events.
//!
//! Over 800 lines on purpose: the one list of events and the one renderer
//! of their words stay side by side, so a new variant gets its words in
//! the same place (split, they would be two lists to keep in step).

use crate::{Weight, format_duration};
use std::fmt;
use std::time::Duration;

/// One thing that happened to a deployment.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    // ---- written by the store ----
    /// The deployment was recorded.
    Created {
        /// The service deployed.
        service: String,
        /// The version deployed.
        version: String,
        /// The environment deployed to.
        environment: String,
        /// Who asked for it.
        by: String,
        /// The strategy's name.
        strategy: String,
        /// The deployment it rolls back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback_of: Option<String>,
    },
    /// The deployment's status changed.
    StatusChanged {
        /// The status before (`in_progress`, ...).
        from: String,
        /// The status now.
        to: String,
        /// Why, as given with the transition.
        #[serde(default)]
        reason: Option<String>,
    },

    // ---- emitted by the rollout machines ----
    /// Rolling update: how it rolls.
    RollingStarted {
        /// Instances wanted at the end.
        replicas: u32,
        /// Extra instances allowed.
        max_surge: u32,
        /// Missing instances allowed.
        max_unavailable: u32,
    },
    /// Blue-green: the new colour starts at full size.
    ColourStarting {
        /// Instances of the new colour.
        replicas: u32,
    },
    /// Blue-green: every instance of the new colour is ready.
    ColourReady,
    /// Blue-green, first deployment: nothing to switch from.
    SwitchingAtOnce,
    /// Canary, first deployment: nothing to compare with.
    NothingToCompare,
    /// Blue-green: the switch happens after the auto-promotion delay.
    SwitchScheduled {
        /// The delay.
        after_ms: u64,
    },
    /// A person's `hatoba promote` is awaited.
    AwaitingPromote,
    /// Blue-green: the auto-promotion delay ended.
    AutoPromotionDelayOver,
    /// Blue-green: the switch waits for the new colour to be fully ready.
    SwitchWaits {
        /// Ready instances of the new colour.
        ready: u32,
        /// Instances of the new colour.
        replicas: u32,
    },
    /// Blue-green: all traffic moves to the new colour.
    Switching,
    /// Blue-green: the old colour stops after the scale-down delay.
    ScaleDownDelayOver {
        /// The delay.
        delay_ms: u64,
    },
    /// Blue-green: a promote after the switch stops the old colour now.
    OldColourStoppedEarly,
    /// Blue-green: the pre-promotion checks passed.
    ChecksPassed,
    /// Blue-green: the pre-promotion checks were inconclusive.
    ChecksInconclusive,
    /// Blue-green: the pre-promotion checks have no evidence; the switch is held.
    ChecksHeld {
        /// What is missing.
        missing: String,
        /// When it rolls back without evidence.
        deadline_ms: u64,
    },
    /// Blue-green: the pre-promotion checks have evidence again.
    ChecksHaveEvidence,
    /// A person promoted (a paused blue-green switch, a held canary).
    Promoted,
    /// Canary: a step reached a weight.
    StepWeight {
        /// The step (0-based).
        step: usize,
        /// The canary's share.
        weight: Weight,
        /// 100 %: the promotion itself, through the evidence check.
        promoting: bool,
    },
    /// Canary: a pause step.
    StepPaused {
        /// The step.
        step: usize,
        /// How long; none: until `hatoba promote`.
        #[serde(default)]
        for_ms: Option<u64>,
    },
    /// Canary: a timed pause ended.
    PauseOver {
        /// The step.
        step: usize,
    },
    /// Canary: an analysis step started.
    StepAnalysis {
        /// The step.
        step: usize,
    },
    /// Canary: a person promoted past a step.
    StepPromoted {
        /// The step.
        step: usize,
    },
    /// Canary: a person promoted past a running analysis step.
    StepAnalysisSkipped {
        /// The step.
        step: usize,
    },
    /// Canary: a promote while scaling ends the next pause or analysis.
    PromoteNoted {
        /// The step scaling.
        step: usize,
    },
    /// Canary: a pause or analysis step skipped by a queued promote.
    StepSkipped {
        /// The step.
        step: usize,
    },
    /// Canary: `hatoba promote --full`.
    PromotedFully,
    /// Canary: a step's analysis passed.
    StepAnalysisPassed {
        /// The step.
        step: usize,
    },
    /// Canary: a step's analysis was inconclusive; a person decides.
    StepAnalysisInconclusive {
        /// The step.
        step: usize,
    },
    /// Canary: a step's analysis has no evidence; the canary is held.
    StepHeld {
        /// The step.
        step: usize,
        /// What is missing.
        missing: String,
        /// When it rolls back without evidence.
        deadline_ms: u64,
    },
    /// Canary: a held step's analysis has evidence again.
    StepHasEvidence {
        /// The step.
        step: usize,
    },
    /// Canary: the background analysis was inconclusive.
    BackgroundInconclusive {
        /// During the watch after promotion (nothing waits on it then).
        watching: bool,
    },
    /// Canary: the background analysis has evidence now.
    BackgroundHasEvidence,
    /// Canary at full size; promotion waits for a person.
    FullSizeAwaitingPromote,
    /// Canary at full size; promotion held for want of evidence.
    FullSizeHeld {
        /// What is missing.
        missing: String,
        /// When it rolls back without evidence.
        deadline_ms: u64,
    },
    /// At 100 %, the previous version warm for the watch.
    WatchStarted {
        /// How long the watch lasts.
        watch_ms: u64,
    },
    /// The watch ended without a regression.
    WatchOver,
    /// A person ended the watch early.
    WatchEndedEarly {
        /// By `hatoba promote --full`.
        full: bool,
    },
    /// An operator aborted the rollout.
    Aborted {
        /// Why.
        reason: String,
    },
    /// A check failed: traffic goes back to the previous version.
    RollbackStarted {
        /// Why.
        reason: String,
    },
    /// Rolling: the old version did not get fully ready again in time.
    RollbackStalled {
        /// Ready instances of the old version.
        ready: u32,
        /// Instances wanted.
        replicas: u32,
        /// The deadline.
        deadline_ms: u64,
        /// Traffic goes back to the ready old instances (else the new
        /// version keeps serving).
        to_old: bool,
    },

    // ---- the server's ----
    /// A traffic weight was applied.
    WeightChanged {
        /// The new version's share.
        weight: Weight,
    },
    /// The environment wants an approval before the rollout starts.
    ApprovalRequested {
        /// The environment.
        environment: String,
        /// The deployment to approve.
        deployment: String,
        /// Who deployed (may not approve).
        by: String,
    },
    /// Someone approved.
    ApprovalGiven {
        /// Who.
        by: String,
    },
    /// An approval came for a rollout already running.
    ApprovalIgnored {
        /// Who.
        by: String,
    },
    /// An operator command, taken.
    Operator {
        /// `abort`, `promote`, `promote --full`, `roll back`.
        command: String,
        /// Who, when known.
        #[serde(default)]
        by: Option<String>,
        /// Why, when given.
        #[serde(default)]
        reason: Option<String>,
    },
    /// An operator command ignored while waiting for approval.
    OperatorIgnored {
        /// The command.
        command: String,
        /// Who, when known.
        #[serde(default)]
        by: Option<String>,
    },
    /// A rollback skips the strategy's steps.
    RollbackSkipsSteps,
    /// A rollback went to full without evidence (a version that served before).
    RollbackUnjudged {
        /// What was missing.
        missing: String,
    },
    /// A person promoted past missing evidence.
    PromotedWithoutEvidence {
        /// Who.
        by: String,
        /// What was missing.
        missing: String,
    },
    /// A restarted controller resumed the rollout.
    ControllerResumed {
        /// Old instances found.
        stable: usize,
        /// New instances found.
        canary: usize,
        /// Instances recorded and gone.
        gone: usize,
        /// The new version's weight.
        weight: u8,
    },
    /// An analysis run started.
    AnalysisStarted {
        /// The run (`step-1`, `background`, ...).
        run: String,
        /// Its templates.
        templates: Vec<String>,
    },
    /// The statistical judge found the new version worse.
    AnalysisFailed {
        /// The run.
        run: String,
        /// The judge's evidence.
        evidence: String,
    },
    /// A measurement failed its condition.
    MeasurementFailed {
        /// The metric.
        metric: String,
        /// The value measured, if any.
        #[serde(default)]
        value: Option<f64>,
        /// What the provider said.
        detail: String,
    },
    /// An analysis run ended with a verdict.
    Verdict {
        /// The run.
        run: String,
        /// `pass`, `fail` or `inconclusive`.
        verdict: String,
        /// Why.
        why: String,
    },
    /// No traffic generated: the route serves TLS.
    TrafficRefused,
    /// Generated traffic started.
    TrafficStarted {
        /// The path requested.
        path: String,
        /// The listener it goes through.
        listen: String,
        /// Requests a second to each version.
        rate: String,
    },
    /// Generated traffic stopped.
    TrafficStopped,
    /// The old version's instances are not managed here.
    OldVersionUnmanaged,
    /// An instance could not be started.
    InstanceFailed {
        /// The version.
        version: String,
        /// Why.
        error: String,
        /// The controller is short of resources: tried again.
        retrying: bool,
    },
    /// An instance of the new version could not be started because the
    /// runtime does not answer (the Docker Engine is unreachable): the
    /// rollout waits for it, traffic as it is, and rolls back at its
    /// progress deadline.
    RuntimeUnreachable {
        /// The version.
        version: String,
        /// Why.
        error: String,
    },
    /// An instance, drained and out of the route, could not be stopped
    /// because the runtime does not answer: the stop is tried again until
    /// it does, and the rollout waits for it (what serves is unchanged).
    StopWaits {
        /// The instance.
        instance: String,
        /// Its version.
        version: String,
        /// Why.
        error: String,
    },
    /// An instance started.
    InstanceStarted {
        /// Its id.
        instance: String,
        /// Its version.
        version: String,
        /// Its address.
        addr: String,
        /// Its process id, if any.
        #[serde(default)]
        pid: Option<u32>,
    },
    /// An old instance left the route table and drains: its requests and
    /// long-lived connections may go on for up to `drain_ms`, while the
    /// rollout goes on (old instances drain side by side).
    InstanceDraining {
        /// Its id.
        instance: String,
        /// Its version.
        version: String,
        /// The longest the drain may take.
        drain_ms: u64,
        /// Requests and long-lived connections open as it left the route
        /// (`None`: the data plane could not say, or an older server).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connections: Option<u32>,
    },
    /// A draining instance's last connection ended (`in_time`), or the
    /// drain ran out with connections still open; it is stopped next
    /// (SIGTERM, then SIGKILL after the grace period).
    InstanceDrained {
        /// Its id.
        instance: String,
        /// Its version.
        version: String,
        /// How long the drain took.
        after_ms: u64,
        /// Every connection ended before the drain's end.
        in_time: bool,
        /// Requests and long-lived connections open when the drain began
        /// (`None`: the data plane could not say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connections: Option<u32>,
        /// Those still open at its end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left: Option<u32>,
        /// Why telling the instance it drains (`drain.notify`) failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify_error: Option<String>,
    },
    /// An instance stopped.
    InstanceStopped {
        /// Its id.
        instance: String,
        /// Its version.
        version: String,
        /// It outlived its grace period after SIGTERM and was killed
        /// (SIGKILL); false when it exited on SIGTERM, or when not known.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        killed: bool,
    },
    /// An instance exited or failed liveness, and was started again.
    InstanceRestarted {
        /// The instance that failed.
        instance: String,
        /// Its version.
        version: String,
        /// What happened to it (`exited ...`, `failed liveness ...`).
        reason: String,
        /// A stable instance during a rollout (restarted by the deployer).
        during_rollout: bool,
        /// The new instance, if the restart worked.
        #[serde(default)]
        restarted_as: Option<String>,
        /// The new instance's address (deployer).
        #[serde(default)]
        addr: Option<String>,
        /// Why the restart failed.
        #[serde(default)]
        error: Option<String>,
        /// Restarts within the window (supervisor).
        #[serde(default)]
        count: Option<u32>,
        /// The window restarts are counted in.
        #[serde(default)]
        window_ms: Option<u64>,
        /// A crash loop began: backing off up to this long.
        #[serde(default)]
        crash_loop_backoff_ms: Option<u64>,
    },
    /// An instance passed its readiness probe (it takes traffic).
    InstanceReady {
        /// Its id.
        instance: String,
        /// Its version.
        version: String,
    },
    /// An instance that was ready fails its readiness probe.
    InstanceUnready {
        /// Its id.
        instance: String,
        /// Its version.
        version: String,
        /// Why (the probe's answer).
        reason: String,
    },
    /// An instance's process ended.
    InstanceExited {
        /// Its id.
        instance: String,
        /// Its version.
        version: String,
        /// How (`exited (code 1)`, `killed by signal 9`).
        reason: String,
    },
    /// A probe of an instance failed.
    ProbeFailed {
        /// Its id.
        instance: String,
        /// `readiness` or `liveness`.
        probe: String,
        /// Why.
        reason: String,
    },
    /// An analysis measurement was taken.
    MeasurementTaken {
        /// The run.
        run: String,
        /// The metric.
        metric: String,
        /// The value, if any.
        #[serde(default)]
        value: Option<f64>,
        /// `passed`, `failed`, `inconclusive`, `error`, `insufficient`.
        verdict: String,
    },
    /// The new colour shows on the preview address.
    PreviewOn {
        /// Its URL.
        url: String,
    },
    /// The data plane refused a route table.
    RouteNotApplied {
        /// Why.
        error: String,
    },
    /// `hatoba up` read its spec file again (`hatoba reload`, SIGHUP): the
    /// new spec is the one the next operations use; a deployment in
    /// progress keeps the spec it started with.
    SpecReloaded {
        /// The new spec's digest (SHA-256 of the file, hex).
        digest: String,
        /// The digest of the spec it replaced.
        previous: String,
        /// Services added (`SERVICE`, or `ENV/SERVICE` with several
        /// environments): listening, nothing deployed.
        #[serde(default)]
        added: Vec<String>,
        /// Services whose spec changed: used from their next deployment.
        #[serde(default)]
        changed: Vec<String>,
        /// Services removed (none ran): their listeners closed.
        #[serde(default)]
        removed: Vec<String>,
        /// Who asked (`SIGHUP`, or the API's caller).
        #[serde(default)]
        by: Option<String>,
    },
    /// Deployed again for a rotated secret.
    SecretRotated {
        /// The secret's name.
        secret: String,
        /// Its new version.
        version: u64,
        /// Who rotated it.
        #[serde(default)]
        by: Option<String>,
    },

    /// The new version takes all traffic: the deployment serves (it is
    /// complete later, once the previous version is stopped).
    Serving {
        /// The version that serves.
        version: String,
        /// The version it replaced, when one served.
        #[serde(default)]
        previous: Option<String>,
        /// Until when the previous version stays warm for an instant
        /// rollback (milliseconds since the epoch), when it does.
        #[serde(default)]
        warm_until: Option<u64>,
        /// How long it stays warm from then, in milliseconds.
        #[serde(default)]
        warm_ms: Option<u64>,
    },
    /// The runtime could not list the service's instances: nothing is
    /// restarted until it can.
    ListingFailed {
        /// Why.
        error: String,
    },
    /// The runtime lists the instances again.
    ListingRecovered,

    // ---- images (Docker) ----
    /// The version runs the image recorded when it was first deployed
    /// (a rollback, a re-deployment), not what its tag names now.
    ImagePinned {
        /// The version.
        version: String,
        /// The image as the spec names it (`shop/web:v1`).
        image: String,
        /// The recorded id, as Docker shortens it.
        id: String,
        /// What the tag names now, when that is another image.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag_now: Option<String>,
    },
    /// A stopped instance's container was removed from the engine.
    ContainerRemoved {
        /// The instance.
        instance: String,
        /// Its version.
        version: String,
        /// The container's id, as Docker shortens it (12 hex digits).
        container: String,
    },
    /// An image of an older version was removed from the engine (the
    /// service keeps the images of its latest `keepImages` versions and of
    /// its newest `keepImages` builds).
    ImagePruned {
        /// The version it was the image of.
        version: String,
        /// Its id, as Docker shortens it (12 hex digits).
        image: String,
        /// Built by `hatoba build` and never deployed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        never_deployed: bool,
    },

    /// An event stored as text (by a Hatoba before events were typed, or
    /// a rollout line of a machine saved by one): its kind and words.
    #[serde(skip)]
    Text {
        /// The stored kind.
        kind: String,
        /// The stored words.
        message: String,
    },
}

/// The rollout machines' words for a command a person types, completed
/// with the service's name where it is known.
struct Cmd<'a>(&'a str, Option<&'a str>);

impl fmt::Display for Cmd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(service) => write!(f, "`hatoba {} {service}`", self.0),
            None => write!(f, "`hatoba {}`", self.0),
        }
    }
}

fn ms(n: u64) -> String {
    format_duration(Duration::from_millis(n))
}

/// A duration as the data keeps it: whole milliseconds.
pub fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A rendered event: the event and the service its commands name.
struct Shown<'a>(&'a Event, Option<&'a str>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Event as E;
        let s = self.1;
        let promote = Cmd("promote", s);
        match self.0 {
            E::Created {
                service,
                version,
                environment,
                by,
                strategy,
                rollback_of,
            } => {
                write!(f, "{service} {version} to {environment} by {by} ({strategy})")?;
                if let Some(of) = rollback_of {
                    write!(f, ", rolling back {of}")?;
                }
                Ok(())
            }
            E::StatusChanged { from, to, reason } => match reason {
                Some(r) => write!(f, "{from} -> {to}: {r}"),
                None => write!(f, "{from} -> {to}"),
            },
            E::RollingStarted {
                replicas,
                max_surge,
                max_unavailable,
            } => write!(
                f,
                "rolling {replicas} instance{}: up to {max_surge} extra, up to {max_unavailable} missing",
                plural(*replicas)
            ),
            E::ColourStarting { replicas } => {
                write!(
                    f,
                    "starting the new colour: {replicas} instance{}",
                    plural(*replicas)
                )
            }
            E::ColourReady => f.write_str("new colour ready"),
            E::SwitchingAtOnce => f.write_str("first deployment: switching at once"),
            E::NothingToCompare => f.write_str(
                "first deployment: no stable version to compare with, going straight to full size",
            ),
            E::SwitchScheduled { after_ms } => write!(f, "switching in {}", ms(*after_ms)),
            E::AwaitingPromote => write!(f, "waiting for {promote}"),
            E::AutoPromotionDelayOver => f.write_str("auto-promotion delay over"),
            E::SwitchWaits { ready, replicas } => write!(
                f,
                "switch waits for the new colour to be fully ready ({ready}/{replicas})"
            ),
            E::Switching => f.write_str("switching all traffic to the new colour"),
            E::ScaleDownDelayOver { delay_ms } => write!(
                f,
                "scale-down delay over: stopping the old colour ({})",
                ms(*delay_ms)
            ),
            E::OldColourStoppedEarly => f.write_str(
                "promoted: old colour stopped without waiting for the scale-down delay",
            ),
            E::ChecksPassed => f.write_str("pre-promotion checks passed"),
            E::ChecksInconclusive => {
                write!(f, "pre-promotion checks inconclusive: waiting for {promote}")
            }
            E::ChecksHeld {
                missing,
                deadline_ms,
            } => write!(
                f,
                "held: pre-promotion checks have no evidence: {missing}; {promote} to switch anyway, else rolled back after {} without evidence",
                ms(*deadline_ms)
            ),
            E::ChecksHaveEvidence => {
                f.write_str("pre-promotion checks have evidence now: judging")
            }
            E::Promoted => f.write_str("promoted"),
            E::StepWeight {
                step,
                weight,
                promoting,
            } => {
                write!(f, "step {step}: set weight {weight}")?;
                if *promoting {
                    f.write_str(": promoting")?;
                }
                Ok(())
            }
            E::StepPaused { step, for_ms } => match for_ms {
                Some(d) => write!(f, "step {step}: pause {}", ms(*d)),
                None => write!(f, "step {step}: pause until {promote}"),
            },
            E::PauseOver { step } => write!(f, "step {step}: pause over"),
            E::StepAnalysis { step } => write!(f, "step {step}: analysis"),
            E::StepPromoted { step } => write!(f, "step {step}: promoted"),
            E::StepAnalysisSkipped { step } => {
                write!(f, "step {step}: promoted, analysis skipped")
            }
            E::PromoteNoted { step } => write!(
                f,
                "step {step}: promote noted: it ends the next pause or analysis once the canary instances are ready"
            ),
            E::StepSkipped { step } => write!(f, "step {step}: skipped: promoted while scaling"),
            E::PromotedFully => f.write_str("promoted fully: remaining steps skipped"),
            E::StepAnalysisPassed { step } => write!(f, "step {step}: analysis passed"),
            E::StepAnalysisInconclusive { step } => write!(
                f,
                "step {step}: analysis inconclusive: waiting for {promote} or {}",
                Cmd("abort", s)
            ),
            E::StepHeld {
                step,
                missing,
                deadline_ms,
            } => write!(
                f,
                "step {step}: held: analysis has no evidence: {missing}; {promote} to promote anyway, else rolled back after {} without evidence",
                ms(*deadline_ms)
            ),
            E::StepHasEvidence { step } => {
                write!(f, "step {step}: analysis has evidence now: judging")
            }
            E::BackgroundInconclusive { watching: true } => {
                f.write_str("background analysis inconclusive during the watch")
            }
            E::BackgroundInconclusive { watching: false } => write!(
                f,
                "background analysis inconclusive: promotion will wait for {promote}"
            ),
            E::BackgroundHasEvidence => {
                f.write_str("background analysis has evidence now: promoting")
            }
            E::FullSizeAwaitingPromote => write!(
                f,
                "canary at full size: waiting for {promote} (background analysis inconclusive)"
            ),
            E::FullSizeHeld {
                missing,
                deadline_ms,
            } => write!(
                f,
                "canary at full size: held: analysis has no evidence: {missing}; {promote} to promote anyway, else rolled back after {} without evidence",
                ms(*deadline_ms)
            ),
            E::WatchStarted { watch_ms } => write!(
                f,
                "at 100 %: watching for {}; the previous version stays warm for an instant rollback",
                ms(*watch_ms)
            ),
            E::WatchOver => {
                f.write_str("watch over: no regression, stopping the previous version")
            }
            E::WatchEndedEarly { full } => write!(
                f,
                "watch ended early by `hatoba promote{}`",
                if *full { " --full" } else { "" }
            ),
            E::Aborted { reason } => write!(f, "aborted: {reason}"),
            E::RollbackStarted { reason } => write!(f, "rolling back: {reason}"),
            E::RollbackStalled {
                ready,
                replicas,
                deadline_ms,
                to_old,
            } => write!(
                f,
                "the old version is not fully ready again within {}: {ready}/{replicas} ready; {}",
                ms(*deadline_ms),
                if *to_old {
                    "traffic goes back to the ready ones"
                } else {
                    "the new version keeps serving"
                }
            ),
            E::WeightChanged { weight } => write!(f, "new version weight {weight}"),
            E::ApprovalRequested {
                environment,
                deployment,
                by,
            } => write!(
                f,
                "waiting for approval: environment `{environment}` requires `hatoba approve {deployment}` by someone other than {by}"
            ),
            E::ApprovalGiven { by } => write!(f, "approved by {by}"),
            E::ApprovalIgnored { by } => write!(f, "approval by {by} ignored: already running"),
            E::Operator {
                command,
                by,
                reason,
            } => {
                write!(f, "operator: {command}")?;
                if let Some(by) = by {
                    write!(f, " by {by}")?;
                }
                if let Some(r) = reason {
                    write!(f, " ({r})")?;
                }
                Ok(())
            }
            E::OperatorIgnored {
                command,
                by: Some(by),
            } => write!(f, "{command} by {by} ignored while waiting for approval"),
            E::OperatorIgnored { command, by: None } => {
                write!(f, "ignored while waiting for approval: {command}")
            }
            E::RollbackSkipsSteps => f.write_str("rollback: skipping the strategy's steps"),
            E::RollbackUnjudged { missing } => write!(
                f,
                "promoted without waiting for evidence: a rollback returns to a version that served before ({missing})"
            ),
            E::PromotedWithoutEvidence { by, missing } => {
                write!(f, "promoted without evidence by {by}: {missing}")
            }
            E::ControllerResumed {
                stable,
                canary,
                gone,
                weight,
            } => write!(
                f,
                "controller restarted: resuming with {stable} stable and {canary} new instances ({gone} gone), new version weight {weight}"
            ),
            E::AnalysisStarted { run, templates } => {
                write!(f, "analysis {run} started: {}", templates.join(", "))
            }
            E::AnalysisFailed { run, evidence } => {
                write!(f, "analysis failed: {run}: {evidence}")
            }
            E::MeasurementFailed {
                metric,
                value,
                detail,
            } => match value {
                Some(v) => write!(f, "{metric} = {v:.4}: failed ({detail})"),
                None => write!(f, "{metric} = -: failed ({detail})"),
            },
            E::Verdict { run, verdict, why } => write!(f, "analysis {run} {verdict}: {why}"),
            E::TrafficRefused => f.write_str(
                "no traffic generated: `traffic.generate` sends plain HTTP and this route serves TLS",
            ),
            E::TrafficStarted { path, listen, rate } => write!(
                f,
                "generating traffic: GET {path} through {listen}, {rate} a second to each version"
            ),
            E::TrafficStopped => f.write_str("traffic generation stopped"),
            E::OldVersionUnmanaged => f.write_str(
                "cannot start more of the old version: its instances are not managed here",
            ),
            E::InstanceFailed {
                version,
                error,
                retrying: true,
            } => write!(
                f,
                "cannot start an instance of {version} now, the controller is short of resources ({error}): trying again"
            ),
            E::InstanceFailed {
                version,
                error,
                retrying: false,
            } => write!(f, "cannot start an instance of {version}: {error}"),
            E::RuntimeUnreachable { version, error } => write!(
                f,
                "cannot start an instance of {version} now ({error}): the rollout waits for the runtime, \
                 traffic staying as it is, and rolls back if it is still unreachable at the progress deadline"
            ),
            E::StopWaits {
                instance,
                version,
                error,
            } => write!(
                f,
                "cannot stop instance {instance} of {version} now ({error}): it is out of the route \
                 and stopped once the runtime answers again; the rollout waits for that, what \
                 serves staying as it is"
            ),
            E::InstanceStarted {
                instance,
                version,
                addr,
                pid,
            } => write!(
                f,
                "instance {instance} of {version} on {addr} (pid {})",
                pid.unwrap_or(0)
            ),
            E::InstanceDraining {
                instance,
                version,
                drain_ms,
                connections,
            } => {
                write!(
                    f,
                    "instance {instance} of {version} out of the route, draining (up to {}",
                    ms(*drain_ms)
                )?;
                match connections {
                    Some(1) => write!(f, ", 1 connection open)"),
                    Some(n) => write!(f, ", {n} connections open)"),
                    None => write!(f, ")"),
                }
            }
            E::InstanceDrained {
                instance,
                version,
                after_ms,
                in_time,
                connections,
                left,
                notify_error,
            } => {
                if *in_time {
                    write!(f, "instance {instance} of {version} drained in {}", ms(*after_ms))?;
                    if let Some(n) = connections {
                        write!(f, " ({n} open when it began)")?;
                    }
                } else {
                    let what = match (left, connections) {
                        (Some(l), Some(n)) => format!("{l} of its {n} connections"),
                        (Some(l), None) => format!("{l} connections"),
                        _ => "connections".to_owned(),
                    };
                    write!(
                        f,
                        "instance {instance} of {version} still had {what} after {}: stopping it",
                        ms(*after_ms)
                    )?;
                }
                match notify_error {
                    Some(e) => write!(f, " (drain.notify failed: {e})"),
                    None => Ok(()),
                }
            }
            E::InstanceStopped {
                instance,
                version,
                killed: false,
            } => write!(f, "instance {instance} of {version} stopped"),
            E::InstanceStopped {
                instance,
                version,
                killed: true,
            } => write!(
                f,
                "instance {instance} of {version} ignored SIGTERM for its grace period: killed (SIGKILL)"
            ),
            E::InstanceRestarted {
                instance,
                version,
                reason,
                during_rollout,
                restarted_as,
                addr,
                error,
                count,
                window_ms,
                crash_loop_backoff_ms,
            } => {
                if *during_rollout {
                    write!(
                        f,
                        "stable instance {instance} of {version} {reason} during the rollout"
                    )?;
                } else {
                    write!(f, "instance {instance} of {version} {reason}")?;
                }
                match (restarted_as, error) {
                    (Some(new), _) => {
                        write!(f, ": restarted as {new}")?;
                        if let Some(addr) = addr {
                            write!(f, " on {addr}")?;
                        }
                        if let (Some(n), Some(w)) = (count, window_ms) {
                            write!(f, " (restart {n} in {})", ms(*w))?;
                        }
                    }
                    (None, e) => write!(f, ": restart failed: {}", e.as_deref().unwrap_or("-"))?,
                }
                if let (Some(backoff), Some(n), Some(w)) = (crash_loop_backoff_ms, count, window_ms)
                {
                    write!(
                        f,
                        "; crash loop: {n} restarts within {}, backing off up to {}",
                        ms(*w),
                        ms(*backoff)
                    )?;
                }
                Ok(())
            }
            E::InstanceReady { instance, version } => {
                write!(f, "instance {instance} of {version} ready")
            }
            E::InstanceUnready {
                instance,
                version,
                reason,
            } => write!(f, "instance {instance} of {version} not ready: {reason}"),
            E::InstanceExited {
                instance,
                version,
                reason,
            } => write!(f, "instance {instance} of {version} {reason}"),
            E::ProbeFailed {
                instance,
                probe,
                reason,
            } => write!(f, "{probe} probe of instance {instance} failed: {reason}"),
            E::MeasurementTaken {
                run,
                metric,
                value,
                verdict,
            } => match value {
                Some(v) => write!(f, "{run}: {metric} = {v:.4}: {verdict}"),
                None => write!(f, "{run}: {metric} = -: {verdict}"),
            },
            E::PreviewOn { url } => write!(f, "new colour on the preview address {url}"),
            E::RouteNotApplied { error } => write!(f, "route table not applied: {error}"),
            E::SpecReloaded {
                digest,
                previous,
                added,
                changed,
                removed,
                by,
            } => {
                let short = |d: &str| d.chars().take(12).collect::<String>();
                if digest == previous {
                    write!(f, "spec reloaded: unchanged ({})", short(digest))?;
                } else {
                    write!(
                        f,
                        "spec reloaded: {} -> {}",
                        short(previous),
                        short(digest)
                    )?;
                }
                for (what, names) in [("added", added), ("changed", changed), ("removed", removed)] {
                    if !names.is_empty() {
                        write!(f, "; {what} {}", names.join(", "))?;
                    }
                }
                if let Some(by) = by {
                    write!(f, " (by {by})")?;
                }
                write!(f, "; deployments in progress keep the spec they started with")
            }
            E::SecretRotated {
                secret,
                version,
                by,
            } => {
                write!(f, "deployed again for secret {secret} version {version}")?;
                if let Some(by) = by {
                    write!(f, " (rotated by {by})")?;
                }
                Ok(())
            }
            E::Serving {
                version,
                previous: Some(prev),
                warm_until: Some(until),
                warm_ms: Some(warm),
            } => write!(
                f,
                "serving: {version} takes all traffic; {prev} stays warm for {} (until {} UTC): {} returns to it at once",
                ms(*warm),
                crate::Millis(*until)
                    .to_rfc3339()
                    .get(11..19)
                    .unwrap_or_default(),
                Cmd("rollback", s)
            ),
            E::Serving { version, .. } => write!(f, "serving: {version} takes all traffic"),
            E::ListingFailed { error } => write!(
                f,
                "the runtime cannot list the instances ({error}): nothing is restarted until it can"
            ),
            E::ListingRecovered => f.write_str("the runtime lists the instances again"),
            E::ImagePinned {
                version,
                image,
                id,
                tag_now,
            } => {
                write!(f, "runs image {id}, recorded for {version}")?;
                match tag_now {
                    Some(now) => write!(
                        f,
                        "; `{image}` names {now} now (built again): deploy a changed app under a new version"
                    ),
                    None => Ok(()),
                }
            }
            E::ContainerRemoved {
                instance,
                version,
                container,
            } => write!(
                f,
                "container {container} of instance {instance} ({version}) removed"
            ),
            E::ImagePruned {
                version,
                image,
                never_deployed: false,
            } => write!(
                f,
                "image {image} of {version} removed (older than the versions kept)"
            ),
            E::ImagePruned {
                version,
                image,
                never_deployed: true,
            } => write!(
                f,
                "image {image} of {version} removed (built, never deployed, older than the builds kept)"
            ),
            E::Text { message, .. } => f.write_str(message),
        }
    }
}

/// `s` after a count other than one.
fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl fmt::Display for Event {
    /// The words, with commands a person types not naming the service.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Shown(self, None).fmt(f)
    }
}

/// Kinds whose old rows (before typed events) meant a rollout line.
const ROLLOUT: &str = "rollout";

impl Event {
    /// The words, with the commands a person types naming `service`
    /// (`hatoba promote web`). The one renderer of events.
    pub fn message(&self, service: Option<&str>) -> String {
        Shown(self, service).to_string()
    }

    /// The tag stored as the event's kind (`weight_changed`, `step_paused`, ...).
    pub fn kind(&self) -> String {
        match self {
            Event::Text { kind, .. } => kind.clone(),
            // Every variant but `Text` serializes with its tag first.
            other => match serde_json::to_value(other) {
                Ok(serde_json::Value::Object(mut m)) => match m.remove("kind") {
                    Some(serde_json::Value::String(k)) => k,
                    _ => "event".to_owned(),
                },
                _ => "event".to_owned(),
            },
        }
    }

    /// The fields as stored in `data` (the tag apart; `{}` for a variant
    /// without fields, so a typed row always has data); `None` for
    /// [`Event::Text`].
    pub fn data(&self) -> Option<serde_json::Value> {
        if let Event::Text { .. } = self {
            return None;
        }
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.remove("kind");
                Some(serde_json::Value::Object(m))
            }
            _ => None,
        }
    }

    /// An event read back from its stored kind, words and data: typed when
    /// the kind and data make one (also rows written before events were
    /// typed whose data already had the fields: `status_changed`,
    /// `promoted_without_evidence`), else [`Event::Text`] (rows without
    /// data were written as text).
    pub fn from_stored(kind: &str, message: &str, data: Option<&serde_json::Value>) -> Event {
        let text = || Event::Text {
            kind: kind.to_owned(),
            message: message.to_owned(),
        };
        let Some(serde_json::Value::Object(fields)) = data else {
            return text();
        };
        let mut fields = fields.clone();
        fields.insert(
            "kind".to_owned(),
            serde_json::Value::String(kind.to_owned()),
        );
        serde_json::from_value::<Event>(serde_json::Value::Object(fields))
            .unwrap_or_else(|_| text())
    }

    /// A line of the rollout's progress (what a machine decided, and the
    /// server's lines about the rollout itself), typed or an old `rollout` row.
    pub fn is_rollout(&self) -> bool {
        use Event as E;
        match self {
            E::Text { kind, .. } => kind == ROLLOUT,
            E::RollingStarted { .. }
            | E::ColourStarting { .. }
            | E::ColourReady
            | E::SwitchingAtOnce
            | E::NothingToCompare
            | E::SwitchScheduled { .. }
            | E::AwaitingPromote
            | E::AutoPromotionDelayOver
            | E::SwitchWaits { .. }
            | E::Switching
            | E::ScaleDownDelayOver { .. }
            | E::OldColourStoppedEarly
            | E::ChecksPassed
            | E::ChecksInconclusive
            | E::ChecksHeld { .. }
            | E::ChecksHaveEvidence
            | E::Promoted
            | E::StepWeight { .. }
            | E::StepPaused { .. }
            | E::PauseOver { .. }
            | E::StepAnalysis { .. }
            | E::StepPromoted { .. }
            | E::StepAnalysisSkipped { .. }
            | E::PromoteNoted { .. }
            | E::StepSkipped { .. }
            | E::PromotedFully
            | E::StepAnalysisPassed { .. }
            | E::StepAnalysisInconclusive { .. }
            | E::StepHeld { .. }
            | E::StepHasEvidence { .. }
            | E::BackgroundInconclusive { .. }
            | E::BackgroundHasEvidence
            | E::FullSizeAwaitingPromote
            | E::FullSizeHeld { .. }
            | E::WatchStarted { .. }
            | E::WatchOver
            | E::WatchEndedEarly { .. }
            | E::Aborted { .. }
            | E::RollbackStarted { .. }
            | E::RollbackStalled { .. }
            | E::RollbackSkipsSteps
            | E::RollbackUnjudged { .. }
            | E::OldVersionUnmanaged
            | E::PreviewOn { .. } => true,
            _ => false,
        }
    }

    /// The new version's weight, when the event sets one (typed, or an old
    /// `weight_changed` row: `new version weight 20%`).
    pub fn weight(&self) -> Option<u8> {
        match self {
            Event::WeightChanged { weight } => Some(weight.percent()),
            Event::Text { kind, message } if kind == "weight_changed" => message
                .rsplit(' ')
                .next()
                .and_then(|w| w.strip_suffix('%'))
                .and_then(|w| w.parse().ok()),
            _ => None,
        }
    }

    /// The step a rollout line is about, when it is about one.
    pub fn step(&self) -> Option<usize> {
        use Event as E;
        match self {
            E::StepWeight { step, .. }
            | E::StepPaused { step, .. }
            | E::PauseOver { step }
            | E::StepAnalysis { step }
            | E::StepPromoted { step }
            | E::StepAnalysisSkipped { step }
            | E::PromoteNoted { step }
            | E::StepSkipped { step }
            | E::StepAnalysisPassed { step }
            | E::StepAnalysisInconclusive { step }
            | E::StepHeld { step, .. }
            | E::StepHasEvidence { step } => Some(*step),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_instance_is_counted_in_the_singular() {
        let rolling = |replicas| Event::RollingStarted {
            replicas,
            max_surge: 1,
            max_unavailable: 0,
        };
        assert_eq!(
            rolling(1).to_string(),
            "rolling 1 instance: up to 1 extra, up to 0 missing"
        );
        assert_eq!(
            rolling(4).to_string(),
            "rolling 4 instances: up to 1 extra, up to 0 missing"
        );
        assert_eq!(
            Event::ColourStarting { replicas: 1 }.to_string(),
            "starting the new colour: 1 instance"
        );
    }

    fn samples() -> Vec<Event> {
        vec![
            Event::StepWeight {
                step: 0,
                weight: Weight::new(20).unwrap(),
                promoting: false,
            },
            Event::StepPaused {
                step: 1,
                for_ms: None,
            },
            Event::WeightChanged {
                weight: Weight::new(50).unwrap(),
            },
            Event::ColourReady,
            Event::StatusChanged {
                from: "pending".into(),
                to: "in_progress".into(),
                reason: None,
            },
            Event::InstanceRestarted {
                instance: "web-1".into(),
                version: "v1".into(),
                reason: "exited (code 1)".into(),
                during_rollout: false,
                restarted_as: Some("web-2".into()),
                addr: None,
                error: None,
                count: Some(5),
                window_ms: Some(300_000),
                crash_loop_backoff_ms: Some(60_000),
            },
            Event::SpecReloaded {
                digest: "ab".repeat(32),
                previous: "cd".repeat(32),
                added: vec!["api".into()],
                changed: vec!["web".into()],
                removed: Vec::new(),
                by: Some("SIGHUP".into()),
            },
            Event::ContainerRemoved {
                instance: "web-v1-3f9a".into(),
                version: "v1".into(),
                container: "0123456789ab".into(),
            },
            Event::ImagePruned {
                version: "v1".into(),
                image: "0123456789ab".into(),
                never_deployed: false,
            },
            Event::ImagePruned {
                version: "v7".into(),
                image: "ba9876543210".into(),
                never_deployed: true,
            },
            Event::ImagePinned {
                version: "v1".into(),
                image: "shop/web:v1".into(),
                id: "0123456789ab".into(),
                tag_now: Some("ba9876543210".into()),
            },
            Event::RuntimeUnreachable {
                version: "v2".into(),
                error: "the docker runtime is unreachable".into(),
            },
            Event::StopWaits {
                instance: "web-v2-3f9a".into(),
                version: "v2".into(),
                error: "the docker runtime is unreachable".into(),
            },
        ]
    }

    #[test]
    fn a_reload_says_what_changed_and_that_deployments_in_progress_keep_their_spec() {
        let words = samples()[6].to_string();
        assert_eq!(
            words,
            "spec reloaded: cdcdcdcdcdcd -> abababababab; added api; changed web (by SIGHUP); \
             deployments in progress keep the spec they started with"
        );
        assert_eq!(samples()[6].kind(), "spec_reloaded");
    }

    #[test]
    fn every_event_round_trips_through_its_stored_form() {
        for e in samples() {
            let back = Event::from_stored(&e.kind(), &e.to_string(), e.data().as_ref());
            assert_eq!(back, e, "{}", e.kind());
        }
    }

    #[test]
    fn instance_and_probe_events_round_trip_with_their_words() {
        let events = [
            Event::InstanceExited {
                instance: "web-1".into(),
                version: "v2".into(),
                reason: "exited (code 1)".into(),
            },
            Event::ProbeFailed {
                instance: "web-1".into(),
                probe: "liveness".into(),
                reason: "connection refused".into(),
            },
            Event::MeasurementTaken {
                run: "step-1".into(),
                metric: "success-rate".into(),
                value: Some(0.5),
                verdict: "failed".into(),
            },
        ];
        for e in &events {
            assert_eq!(&Event::from_stored(&e.kind(), "", e.data().as_ref()), e);
        }
        assert_eq!(events[0].kind(), "instance_exited");
        assert_eq!(
            events[0].to_string(),
            "instance web-1 of v2 exited (code 1)"
        );
        assert_eq!(
            events[1].to_string(),
            "liveness probe of instance web-1 failed: connection refused"
        );
        assert_eq!(
            events[2].to_string(),
            "step-1: success-rate = 0.5000: failed"
        );
    }

    #[test]
    fn kinds_are_the_snake_case_tags() {
        assert_eq!(samples()[0].kind(), "step_weight");
        assert_eq!(samples()[2].kind(), "weight_changed");
        assert_eq!(samples()[3].kind(), "colour_ready");
        assert_eq!(samples()[3].data(), Some(serde_json::json!({})));
    }

    #[test]
    fn the_words_are_todays_and_name_the_service_where_asked() {
        let e = Event::StepPaused {
            step: 1,
            for_ms: None,
        };
        assert_eq!(e.to_string(), "step 1: pause until `hatoba promote`");
        assert_eq!(
            e.message(Some("web")),
            "step 1: pause until `hatoba promote web`"
        );
        assert_eq!(
            samples()[5].to_string(),
            "instance web-1 of v1 exited (code 1): restarted as web-2 (restart 5 in 5m); crash loop: 5 restarts within 5m, backing off up to 1m"
        );
        let data = samples()[2].data().unwrap();
        assert_eq!(data, serde_json::json!({"weight": 50}));
    }

    #[test]
    fn old_rows_read_back_as_text_or_typed_when_their_data_says_so() {
        let old = Event::from_stored("rollout", "step 0: set weight 20%", None);
        assert!(matches!(old, Event::Text { .. }));
        assert!(old.is_rollout());
        assert_eq!(old.to_string(), "step 0: set weight 20%");
        let status = Event::from_stored(
            "status_changed",
            "pending -> in_progress",
            Some(&serde_json::json!({"from": "pending", "to": "in_progress", "reason": null})),
        );
        assert_eq!(status, samples()[4]);
        let pwe = Event::from_stored(
            "promoted_without_evidence",
            "promoted without evidence by alice: x",
            Some(&serde_json::json!({"by": "alice", "missing": "x"})),
        );
        assert!(matches!(pwe, Event::PromotedWithoutEvidence { .. }));
        // A fieldless variant stored with a service in its words is typed.
        let waiting = Event::from_stored(
            "awaiting_promote",
            "waiting for `hatoba promote web`",
            Some(&serde_json::json!({})),
        );
        assert_eq!(waiting, Event::AwaitingPromote);
        assert!(waiting.is_rollout());
        // An old weight_changed row without data stays its words.
        let w = Event::from_stored("weight_changed", "new version weight 50%", None);
        assert_eq!(w.kind(), "weight_changed");
        assert_eq!(w.to_string(), "new version weight 50%");
        assert_eq!(w.weight(), Some(50));
        assert_eq!(samples()[2].weight(), Some(50));
    }
}
