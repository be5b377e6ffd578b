//! One deployment of one service, from the first instance started to the
//! last one stopped: the loop that feeds a rollout machine and executes its
//! commands.
//!
//! Write-ahead: the controller's working state of the service (the machine
//! with its pending commands, the command being executed, weights, the
//! instances with pid, start time and port, what is ready) is saved to the
//! store as a [`ServiceRecord`] before every action, so a controller killed
//! at any point resumes from its last record ([`Deployer::resume`]). A
//! command interrupted half-way is executed again; every command is
//! idempotent against the recorded instances (`Scale` starts or stops the
//! difference, weights are absolute), and an instance started but not yet
//! recorded is an orphan that the restarted server's sweep stops.
//!
//! Over 800 lines, not yet split: the saved record (`ServiceRecord` and its
//! formats), the plan (spec to instance spec) and the run loop live here
//! together. The next split, as DESIGN.md's server shape says, is `record`
//! and `plan` out of this file, leaving the run loop.

use crate::dataplane::{DataPlane, DataPlaneError};
use crate::secrets::SecretEnv;
use hatoba_core::{DeploymentId, DeploymentStatus, EnvName, Event, Millis, ServiceName, Version};
use hatoba_metrics::Role;
use hatoba_proxy::{DrainReport, GroupSpec, RouteSpec};
use hatoba_rollout::health::{self, Death, Decision, Observation, RestartPolicy};
use hatoba_rollout::{
    AnalysisRun, BlueGreen, BlueGreenPlan, Canary, CanaryPlan, Command, Input, Outcome, Rolling,
    RollingPlan, Step, Track,
};
use hatoba_runtime::{
    InstanceId, InstanceSpec, InstanceState, InstanceStatus, Runtime, RuntimeError,
};
use hatoba_spec::{DrainNotify, Runtime as RuntimeSpec, Service, Spec, Strategy};
use hatoba_store::{NewDeployment, NewEvent, Store, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Now, by the real clock. Only the shell reads it (invariant 3).
///
/// On a thread that called [`follow_tokio_clock`] (a test on a paused tokio
/// clock), the time since that call is tokio's instead.
pub fn clock_now() -> Millis {
    if let Some((wall, at)) = FOLLOWED.get() {
        let since = tokio::time::Instant::now().saturating_duration_since(at);
        return wall.saturating_add(since);
    }
    wall_clock()
}

fn wall_clock() -> Millis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

thread_local! {
    /// Set by [`follow_tokio_clock`]: the real time of the call, and
    /// tokio's instant then.
    static FOLLOWED: std::cell::Cell<Option<(Millis, tokio::time::Instant)>> =
        const { std::cell::Cell::new(None) };
}

/// A seam for tests on a paused tokio clock (`start_paused`, one thread):
/// from now on, on this thread, [`clock_now`] moves with tokio's clock, so
/// back-off, crash windows and probe delays follow `tokio::time::advance`.
/// Production never calls it; the supervisor, deployer and store then see
/// the same time the test steps.
#[doc(hidden)]
pub fn follow_tokio_clock() {
    FOLLOWED.set(Some((wall_clock(), tokio::time::Instant::now())));
}

/// What serves a service now: a version and its instances.
#[derive(Clone, Debug)]
pub struct Deployed {
    /// The version.
    pub version: Version,
    /// Its instances.
    pub instances: Vec<InstanceStatus>,
    /// The variables it was deployed with (to start replacements alike).
    pub vars: BTreeMap<String, String>,
    /// The secrets it was deployed with (versions; values in memory only).
    pub secrets: SecretEnv,
    /// The deployment that made it serve.
    pub deployment: Option<DeploymentId>,
    /// The exact image it runs (a Docker image id), so that a replacement
    /// runs the very same one whatever its tag names by then.
    pub image_id: Option<String>,
}

/// One deployment to run.
#[derive(Clone, Debug)]
pub struct DeployRequest {
    /// The service.
    pub service: ServiceName,
    /// The environment.
    pub environment: EnvName,
    /// The service as the environment sees it (overrides merged).
    pub svc: Service,
    /// The whole spec, for analysis templates.
    pub spec: Spec,
    /// The version to deploy.
    pub version: Version,
    /// Values for `${NAME}`; `VERSION` is added.
    pub vars: BTreeMap<String, String>,
    /// The secrets it runs with: the versions are recorded, the values go
    /// to the runtime only.
    pub secrets: SecretEnv,
    /// Where relative paths in the spec start.
    pub base_dir: PathBuf,
    /// A digest of the spec, for the history.
    pub spec_digest: String,
    /// Who asks.
    pub deployed_by: String,
    /// What serves now, if anything.
    pub current: Option<Deployed>,
    /// The deployment this one rolls back, when it is a rollback.
    pub rollback_of: Option<hatoba_core::DeploymentId>,
    /// Wait for `hatoba approve` by someone else before starting.
    pub require_approval: bool,
    /// The exact image recorded for this version by an earlier deployment
    /// (a rollback, a re-deployment), started instead of what its tag
    /// names now; `None`: resolve the tag when the deployment is recorded.
    pub image_id: Option<String>,
}

/// A message from an operator to a running deployment.
#[derive(Clone, Debug)]
pub enum Operator {
    /// Abort, ...
    Input(Input),
    /// `hatoba promote` (`--full`: every remaining step) by this actor. A
    /// promote past missing evidence is recorded with who gave it.
    Promote {
        /// Skip every remaining step.
        full: bool,
        /// Who promotes.
        by: String,
    },
    /// `hatoba approve` by this actor (checked by the caller: not the deployer).
    Approve {
        /// Who approves.
        by: String,
    },
}

/// Why a deployment could not even start or be recorded.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The history store refused or failed.
    #[error("cannot record the deployment")]
    Store(#[from] StoreError),
    /// The spec can not be run by this runtime.
    #[error("{0}")]
    Unsupported(String),
    /// The runtime says this version could not start at all (its image
    /// is missing): nothing was recorded or started.
    #[error("version {version} cannot be started, so nothing was deployed")]
    CannotStart {
        /// The version asked for.
        version: String,
        /// Why.
        #[source]
        source: RuntimeError,
    },
    /// A `${NAME}` has no value.
    #[error("cannot interpolate the service's command")]
    Interpolation(#[from] hatoba_spec::InterpolationError),
    /// The runtime failed in a way the rollout can not absorb.
    #[error("the runtime failed")]
    Runtime(#[from] RuntimeError),
    /// The data plane refused a listener.
    #[error("the data plane failed")]
    DataPlane(#[from] DataPlaneError),
    /// The server stopped while the deployment waited; it is recorded and
    /// resumed by the next server.
    #[error("the server stopped while the deployment waited for approval")]
    Interrupted,
    /// The saved controller state can not be read back.
    #[error("the controller state saved for `{service}` is unreadable: {message}")]
    State {
        /// The service.
        service: String,
        /// What is wrong with it.
        message: String,
    },
}

/// One instance as the controller records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceRecord {
    /// The runtime's id.
    pub id: String,
    /// Its version.
    pub version: Version,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: Option<u32>,
    /// The OS start time of the process, so a recycled pid is not adopted.
    pub proc_start: Option<u64>,
    /// When it was started.
    pub started_at: Millis,
    /// Its log file.
    pub log: Option<PathBuf>,
    /// What its runtime proves it with after a restart (a container id),
    /// opaque here; none for a process (pid and start time do). New in
    /// format 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl InstanceRecord {
    /// The record of a status.
    pub fn of(s: &InstanceStatus) -> InstanceRecord {
        InstanceRecord {
            id: s.id.0.clone(),
            version: s.version.clone(),
            addr: s.addr,
            pid: s.pid,
            proc_start: s.proc_start,
            started_at: s.started_at,
            log: s.log.clone(),
            identity: s.identity.clone(),
        }
    }

    /// The status it describes, assumed running until the runtime says.
    pub fn status(&self, service: &ServiceName) -> InstanceStatus {
        InstanceStatus {
            id: InstanceId(self.id.clone()),
            service: service.clone(),
            version: self.version.clone(),
            addr: self.addr,
            pid: self.pid,
            proc_start: self.proc_start,
            started_at: self.started_at,
            state: InstanceState::Running,
            log: self.log.clone(),
            identity: self.identity.clone(),
            oom_killed: false,
            memory_limit: None,
            own_health: None,
        }
    }
}

/// What serves a service, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServingRecord {
    /// The version.
    pub version: Version,
    /// Its instances.
    pub instances: Vec<InstanceRecord>,
    /// The variables it was deployed with.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The versions of the secrets it was deployed with (never a value).
    #[serde(default)]
    pub secrets: BTreeMap<String, u64>,
    /// The deployment that made it serve.
    #[serde(default)]
    pub deployment: Option<DeploymentId>,
    /// The exact image it runs (a Docker image id); new in format 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

impl ServingRecord {
    /// The record of what serves.
    pub fn of(d: &Deployed) -> ServingRecord {
        ServingRecord {
            version: d.version.clone(),
            instances: d.instances.iter().map(InstanceRecord::of).collect(),
            vars: d.vars.clone(),
            secrets: d.secrets.versions.clone(),
            deployment: d.deployment.clone(),
            image_id: d.image_id.clone(),
        }
    }
}

/// A rollout in progress, as saved before every action.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RolloutRecord {
    /// Its deployment.
    pub deployment: DeploymentId,
    /// The version being deployed.
    pub version: Version,
    /// The variables it was asked with.
    pub vars: BTreeMap<String, String>,
    /// The versions of the secrets it runs with (never a value).
    #[serde(default)]
    pub secrets: BTreeMap<String, u64>,
    /// Who asked.
    pub deployed_by: String,
    /// The deployment it rolls back, if it is a rollback.
    pub rollback_of: Option<DeploymentId>,
    /// What served when it started.
    pub current: Option<ServingRecord>,
    stable: Vec<InstanceRecord>,
    canary: Vec<InstanceRecord>,
    ready: Vec<SocketAddr>,
    weight: u8,
    machine: Machine,
    /// The command being executed when the record was written.
    pending: Option<Command>,
    #[serde(default)]
    runs: Vec<(AnalysisRun, crate::analysis::Active)>,
    outcome: Option<Outcome>,
    /// Recorded, waiting for `hatoba approve` before it starts.
    #[serde(default)]
    pub awaiting_approval: bool,
    /// Who gave the latest `hatoba promote`.
    #[serde(default)]
    promoted_by: Option<String>,
    /// The exact image the new version runs (a Docker image id, resolved
    /// when the deployment was recorded); new in format 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

impl RolloutRecord {
    /// Every instance it names (stable and new).
    pub fn instances(&self) -> impl Iterator<Item = &InstanceRecord> {
        self.stable.iter().chain(self.canary.iter())
    }

    /// The addresses that were ready.
    pub fn ready(&self) -> &[SocketAddr] {
        &self.ready
    }

    /// The new version's instances.
    pub fn new_instances(&self) -> &[InstanceRecord] {
        &self.canary
    }

    /// The old version's instances still there.
    pub fn old_instances(&self) -> &[InstanceRecord] {
        &self.stable
    }
}

/// The format of the controller's saved state this Hatoba writes. A record
/// without a `format` field is format 1 (written before formats were
/// numbered). Format 2 adds the `format` field; readers of format 1 fill the
/// fields added since by their serde defaults (`secrets`, `promoted_by`, ...).
/// Format 4 adds an instance's `identity` (a container's id). Format 5 adds
/// the exact image (`image_id`) of what serves and of a rollout's version.
/// A change of shape bumps this, adds a fixture under
/// `tests/data/controller_state/` and a step in [`ServiceRecord::from_json`].
pub const STATE_FORMAT: u64 = 5;

/// Why a saved controller state can not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It was written by a newer Hatoba, in a format this one does not know.
    #[error(
        "it was saved in format {found} by a newer Hatoba, and this Hatoba reads formats 1 to {supported}: upgrade Hatoba to resume it"
    )]
    NewerFormat {
        /// The format found in the record.
        found: u64,
        /// The newest format this Hatoba reads.
        supported: u64,
    },
    /// The `format` field is not a positive whole number.
    #[error("its `format` is {found}, expected a whole number from 1 to {supported}")]
    BadFormat {
        /// The value found, as JSON.
        found: String,
        /// The newest format this Hatoba reads.
        supported: u64,
    },
    /// The JSON does not have the record's shape.
    #[error("it is not a controller state record: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// The saved form: the record with its format number in front.
#[derive(serde::Serialize)]
struct Saved<'a> {
    format: u64,
    #[serde(flatten)]
    record: &'a ServiceRecord,
}

/// The controller's saved state of one service.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ServiceRecord {
    /// What serves when no rollout runs.
    pub serving: Option<ServingRecord>,
    /// The rollout in progress.
    pub rollout: Option<RolloutRecord>,
}

impl ServiceRecord {
    /// The record as saved, in format [`STATE_FORMAT`].
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&Saved {
            format: STATE_FORMAT,
            record: self,
        })
    }

    /// A saved record of any format up to [`STATE_FORMAT`], migrated to
    /// today's shape; a newer format is refused, never guessed at.
    pub fn from_json(text: &str) -> Result<ServiceRecord, StateError> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(StateError::Malformed)?;
        let format = match value.as_object_mut().and_then(|o| o.remove("format")) {
            None => 1,
            Some(f) => match f.as_u64() {
                Some(n) if n >= 1 => n,
                _ => {
                    return Err(StateError::BadFormat {
                        found: f.to_string(),
                        supported: STATE_FORMAT,
                    });
                }
            },
        };
        if format > STATE_FORMAT {
            return Err(StateError::NewerFormat {
                found: format,
                supported: STATE_FORMAT,
            });
        }
        // Format 1 -> 2: only the `format` field was added; the fields
        // added to format 1 over time have serde defaults. 2 -> 3: a saved
        // machine's pending commands may be typed events (`Event`) and
        // `Serving`, which a Hatoba reading format 2 does not know (so it
        // must refuse format 3 by its number); a format-2 `Record(text)`
        // still loads as it was. 3 -> 4: an instance may carry its
        // runtime's `identity` (a container id), absent (none) before; a
        // Hatoba reading format 3 would drop it and lose its containers,
        // so it must refuse format 4. 4 -> 5: what serves and a rollout may
        // carry the exact `image_id` they run, absent (none: the tag, as
        // before) in older records; a Hatoba reading format 4 would drop
        // it and start a rebuilt tag's image, so it must refuse format 5.
        // A future shape change migrates
        // `value` here, one format at a time.
        serde_json::from_value(value).map_err(StateError::Malformed)
    }

    /// Every instance the record names, once each.
    pub fn instances(&self) -> Vec<&InstanceRecord> {
        let mut out: Vec<&InstanceRecord> = Vec::new();
        let serving = self.serving.iter().flat_map(|s| s.instances.iter());
        let rollout = self.rollout.iter().flat_map(|r| r.instances());
        for i in serving.chain(rollout) {
            if !out.iter().any(|o| o.id == i.id) {
                out.push(i);
            }
        }
        out
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Machine {
    Canary(Canary),
    BlueGreen(BlueGreen),
    Rolling(Rolling),
}

impl Machine {
    fn handle(&mut self, now: Millis, input: Input) {
        match self {
            Machine::Canary(m) => m.handle(now, input),
            Machine::BlueGreen(m) => m.handle(now, input),
            Machine::Rolling(m) => m.handle(now, input),
        }
    }
    fn handle_timeout(&mut self, now: Millis) {
        match self {
            Machine::Canary(m) => m.handle_timeout(now),
            Machine::BlueGreen(m) => m.handle_timeout(now),
            Machine::Rolling(m) => m.handle_timeout(now),
        }
    }
    fn poll_timeout(&self) -> Option<Millis> {
        match self {
            Machine::Canary(m) => m.poll_timeout(),
            Machine::BlueGreen(m) => m.poll_timeout(),
            Machine::Rolling(m) => m.poll_timeout(),
        }
    }
    fn poll_command(&mut self) -> Option<Command> {
        match self {
            Machine::Canary(m) => m.poll_command(),
            Machine::BlueGreen(m) => m.poll_command(),
            Machine::Rolling(m) => m.poll_command(),
        }
    }

    /// A blue-green rollout shows its new colour on the preview address.
    fn preview_on(&self) -> bool {
        matches!(self, Machine::BlueGreen(m) if m.preview_on())
    }
}

/// Runs deployments against one runtime, one data plane and one store.
#[derive(Debug)]
pub struct Deployer {
    store: Arc<dyn Store>,
    runtime: Arc<dyn Runtime>,
    data_plane: Arc<dyn DataPlane>,
}

/// The mutable world of one running deployment.
struct Run<'a> {
    d: &'a Deployer,
    req: &'a DeployRequest,
    id: DeploymentId,
    instance: InstanceSpec,
    stable: Vec<InstanceStatus>,
    canary: Vec<InstanceStatus>,
    ready: HashSet<SocketAddr>,
    /// Readiness, liveness and restarts: the health policy during a rollout.
    health: health::Health,
    weight: u8,
    analyses: HashMap<AnalysisRun, crate::analysis::Active>,
    outcome: Option<Outcome>,
    machine: Machine,
    pending: Option<Command>,
    /// Something changed since the last save.
    dirty: bool,
    /// Recorded but not started: waits for `hatoba approve`.
    awaiting_approval: bool,
    /// Why the new version cannot run, found while executing a command.
    unhealthy: Option<String>,
    /// A scale the controller could not finish for its own shortage (out
    /// of file descriptors, memory, processes or ports): tried again at
    /// each probe tick, never held against the new version.
    short_scale: Option<(Track, u32)>,
    /// The statistical canary-vs-stable judge, when analysis runs.
    judge: Option<hatoba_analysis::Judge>,
    /// The last route table did not reach the data plane: push again.
    route_failed: bool,
    /// What the health rounds found, beside the policy's state.
    watch: Watch,
    /// The blue-green preview address shows the new colour (else it shows
    /// what the service's address serves).
    preview_on: bool,
    /// Who gave the latest `hatoba promote`.
    promoted_by: Option<String>,
    /// Requests sent to both versions for analyses that ask for them.
    generator: Option<crate::traffic::Generator>,
    /// Generation was asked for on a TLS listener and said to be refused.
    traffic_refused: bool,
    /// Old instances out of the route, draining then stopping in the
    /// background: the rollout goes on meanwhile, so old instances drain
    /// side by side and a deploy with long-lived clients waits about one
    /// `drain`, not one per instance. Detached, not aborted, when the run
    /// ends early: a stop that began finishes.
    draining: tokio::task::JoinSet<Drained>,
}

/// An instance that ended this way was killed (SIGKILL) rather than
/// exiting on SIGTERM: the process runtime reports the signal, Docker the
/// shell's convention of 128 + 9.
fn killed(state: &InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Exited {
            signal: Some(9),
            ..
        } | InstanceState::Exited {
            code: Some(137),
            signal: None,
        }
    )
}

/// How long an instance has to answer `drain.notify`'s request.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// An old instance's drain and stop, done.
struct Drained {
    instance: InstanceStatus,
    /// How long the drain took.
    waited: Duration,
    /// Whether every connection ended before the drain's end, and how many.
    report: DrainReport,
    /// Why `drain.notify` failed.
    notify_error: Option<String>,
    /// Stopped, and whether it had to be killed.
    stopped: Result<bool, hatoba_runtime::RuntimeError>,
    /// How many stops were tried before this one (the runtime did not
    /// answer them).
    retries: u32,
}

/// How long a stop the runtime did not answer waits before it is tried
/// again.
const STOP_RETRY_EVERY: Duration = Duration::from_secs(1);

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.draining.detach_all();
    }
}

/// The `container_removed` event of a stopped instance when it was a
/// container (it has an identity), which the Docker runtime removes once
/// it has stopped.
pub(crate) fn container_removed(i: &InstanceStatus) -> Option<Event> {
    i.identity
        .as_ref()
        .map(|container| Event::ContainerRemoved {
            instance: i.id.to_string(),
            version: i.version.to_string(),
            container: prune::short_id(container),
        })
}

/// What a rollout's health rounds found, beside the policy's state.
#[derive(Default)]
struct Watch {
    /// Why a new instance is not ready, from its latest readiness probe.
    not_ready: Option<String>,
}

impl Deployer {
    /// A deployer over these parts.
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Arc<dyn Runtime>,
        data_plane: Arc<dyn DataPlane>,
    ) -> Deployer {
        Deployer {
            store,
            runtime,
            data_plane,
        }
    }

    /// The data plane it routes through.
    pub fn data_plane(&self) -> &Arc<dyn DataPlane> {
        &self.data_plane
    }

    /// The controller's last saved state of a service.
    pub async fn load(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<ServiceRecord>, DeployError> {
        let Some(text) = self.store.controller_state(service, environment).await? else {
            return Ok(None);
        };
        ServiceRecord::from_json(&text)
            .map(Some)
            .map_err(|e| DeployError::State {
                service: service.to_string(),
                message: e.to_string(),
            })
    }

    /// Saves the controller's state of a service.
    pub async fn save(
        &self,
        service: &ServiceName,
        environment: &EnvName,
        record: &ServiceRecord,
    ) -> Result<(), DeployError> {
        let text = record.to_json().map_err(|e| DeployError::State {
            service: service.to_string(),
            message: e.to_string(),
        })?;
        self.store
            .save_controller_state(service, environment, &text, clock_now())
            .await?;
        Ok(())
    }

    /// Runs one deployment to its end and returns the recorded deployment
    /// and what serves afterwards.
    pub async fn deploy(
        &self,
        req: &DeployRequest,
    ) -> Result<(hatoba_store::Deployment, Option<Deployed>), DeployError> {
        let (_operator, commands) = tokio::sync::mpsc::channel::<Operator>(1);
        self.deploy_with(req, commands, None).await
    }

    /// [`Deployer::deploy`], taking operator commands (promote, abort,
    /// approve) from `commands` and reporting the recorded deployment on
    /// `created` as soon as it exists.
    pub async fn deploy_with(
        &self,
        req: &DeployRequest,
        mut commands: tokio::sync::mpsc::Receiver<Operator>,
        on_created: Option<tokio::sync::oneshot::Sender<hatoba_store::Deployment>>,
    ) -> Result<(hatoba_store::Deployment, Option<Deployed>), DeployError> {
        let mut instance = instance_spec(req)?;
        // What the tag names now, when the version is pinned to another
        // image: said in the timeline, since deploying the tag is not what
        // happens.
        let tag_now = match &req.image_id {
            Some(_) => self.runtime.check(&instance).await.ok().flatten(),
            None => None,
        };
        pin(&mut instance, req.image_id.as_deref(), None);
        // What can never start (an image not built, or the one recorded
        // for this version gone) fails here, before anything is recorded
        // or started. What it would run is pinned: every start of this
        // deployment runs that very image.
        let image_id =
            self.runtime
                .check(&instance)
                .await
                .map_err(|source| DeployError::CannotStart {
                    version: req.version.to_string(),
                    source,
                })?;
        pin(&mut instance, image_id.as_deref(), None);
        let created = self
            .store
            .create_deployment(NewDeployment {
                service: req.service.clone(),
                environment: req.environment.clone(),
                version: req.version.clone(),
                commit_sha: None,
                strategy: req.svc.strategy.kind().to_owned(),
                deployed_by: req.deployed_by.clone(),
                rollback_of: req.rollback_of.clone(),
                spec_digest: req.spec_digest.clone(),
                vars: req.vars.clone(),
                secrets: req.secrets.versions.clone(),
                image_id: image_id.clone(),
                at: clock_now(),
            })
            .await?;
        let id = created.id.clone();
        pin(&mut instance, None, Some(&id));
        let stable = req
            .current
            .as_ref()
            .map(|c| c.instances.clone())
            .unwrap_or_default();
        let machine = machine_for(req, u32::try_from(stable.len()).unwrap_or(u32::MAX));
        let mut run = Run {
            d: self,
            req,
            id,
            instance,
            ready: stable.iter().map(|i| i.addr).collect(),
            stable,
            canary: Vec::new(),
            health: health::Health::new(crate::probe::health_plan(
                &req.svc,
                RestartPolicy::DURING_ROLLOUT,
            )),
            weight: 0,
            analyses: HashMap::new(),
            outcome: None,
            machine,
            pending: None,
            dirty: true,
            route_failed: false,
            watch: Watch::default(),
            preview_on: false,
            awaiting_approval: req.require_approval,
            unhealthy: None,
            short_scale: None,
            judge: crate::analysis::default_judge(),
            promoted_by: None,
            generator: None,
            traffic_refused: false,
            draining: tokio::task::JoinSet::new(),
        };
        run.watch_all();
        if let (Some(id), hatoba_runtime::Workload::Container(c)) =
            (&req.image_id, &run.instance.workload)
        {
            run.event(Event::ImagePinned {
                version: req.version.to_string(),
                image: c.image.clone(),
                id: prune::short_id(id),
                tag_now: tag_now.filter(|t| t != id).map(|t| prune::short_id(&t)),
            })
            .await?;
        }
        if run.awaiting_approval {
            // Recorded as waiting before anyone hears of it: a restart from
            // here on resumes the wait.
            run.save().await?;
            if let Some(tx) = on_created {
                let _ = tx.send(created);
            }
            return self.approve_then_start(run, commands).await;
        }
        let started = self
            .store
            .transition(&run.id, DeploymentStatus::InProgress, None, clock_now())
            .await?;
        if let Some(tx) = on_created {
            let _ = tx.send(started);
        }
        self.start(&mut run).await?;
        self.drive(run, &mut commands).await
    }

    /// Waits (durably: the wait is recorded and survives a restart) for
    /// `hatoba approve` by someone else than the deployer, then starts.
    async fn approve_then_start(
        &self,
        mut run: Run<'_>,
        mut commands: tokio::sync::mpsc::Receiver<Operator>,
    ) -> Result<(hatoba_store::Deployment, Option<Deployed>), DeployError> {
        run.event(Event::ApprovalRequested {
            environment: run.req.environment.to_string(),
            deployment: run.id.to_string(),
            by: run.req.deployed_by.clone(),
        })
        .await?;
        run.save().await?;
        loop {
            match commands.recv().await {
                Some(Operator::Approve { by }) => {
                    run.event(Event::ApprovalGiven { by }).await?;
                    break;
                }
                Some(Operator::Input(Input::Abort(reason))) => {
                    run.outcome = Some(Outcome::Aborted(reason));
                    run.awaiting_approval = false;
                    return self.drive(run, &mut commands).await;
                }
                Some(Operator::Input(other)) => {
                    run.event(Event::OperatorIgnored {
                        command: operator_command(&other).0,
                        by: None,
                    })
                    .await?;
                }
                Some(Operator::Promote { by, .. }) => {
                    run.event(Event::OperatorIgnored {
                        command: "promote".to_owned(),
                        by: Some(by),
                    })
                    .await?;
                }
                // The server is going away; the wait is recorded and the
                // next server resumes it.
                None => return Err(DeployError::Interrupted),
            }
        }
        run.awaiting_approval = false;
        self.store
            .transition(&run.id, DeploymentStatus::InProgress, None, clock_now())
            .await?;
        self.start(&mut run).await?;
        self.drive(run, &mut commands).await
    }

    /// Feeds the machine its start.
    async fn start(&self, run: &mut Run<'_>) -> Result<(), DeployError> {
        run.machine.handle(clock_now(), Input::Start);
        if run.req.rollback_of.is_some() {
            // A rollback returns to a version that already served: no canary
            // steps or manual pauses, straight to full size (as soon as its
            // instances are ready, never onto cold ones).
            run.event(Event::RollbackSkipsSteps).await?;
            run.machine.handle(clock_now(), Input::PromoteFull);
        }
        Ok(())
    }

    /// Continues a rollout from its saved record after a controller
    /// restart. `req` is rebuilt from the spec and the record; `adopted`
    /// holds what the runtime found of the recorded instances (an instance
    /// that died meanwhile is there as exited, and counts as a crash of its
    /// version).
    pub async fn resume(
        &self,
        req: &DeployRequest,
        record: RolloutRecord,
        adopted: &HashMap<String, InstanceStatus>,
        mut commands: tokio::sync::mpsc::Receiver<Operator>,
    ) -> Result<(hatoba_store::Deployment, Option<Deployed>), DeployError> {
        let mut instance = instance_spec(req)?;
        pin(
            &mut instance,
            record.image_id.as_deref(),
            Some(&record.deployment),
        );
        let status = |r: &InstanceRecord| {
            adopted
                .get(&r.id)
                .cloned()
                .unwrap_or_else(|| r.status(&req.service))
        };
        let stable: Vec<InstanceStatus> = record.stable.iter().map(status).collect();
        let canary: Vec<InstanceStatus> = record.canary.iter().map(status).collect();
        let alive = |s: &InstanceStatus| s.state == InstanceState::Running;
        let ready: HashSet<SocketAddr> = record
            .ready
            .iter()
            .copied()
            .filter(|a| {
                stable
                    .iter()
                    .chain(canary.iter())
                    .any(|s| s.addr == *a && alive(s))
            })
            .collect();
        let mut run = Run {
            d: self,
            req,
            id: record.deployment.clone(),
            instance,
            stable,
            canary,
            ready,
            health: health::Health::new(crate::probe::health_plan(
                &req.svc,
                RestartPolicy::DURING_ROLLOUT,
            )),
            weight: record.weight,
            analyses: record.runs.into_iter().collect(),
            outcome: record.outcome,
            preview_on: record.machine.preview_on(),
            machine: record.machine,
            pending: record.pending,
            dirty: true,
            route_failed: false,
            watch: Watch::default(),
            awaiting_approval: record.awaiting_approval,
            unhealthy: None,
            short_scale: None,
            judge: crate::analysis::default_judge(),
            promoted_by: record.promoted_by,
            generator: None,
            traffic_refused: false,
            draining: tokio::task::JoinSet::new(),
        };
        run.watch_all();
        if run.awaiting_approval {
            return self.approve_then_start(run, commands).await;
        }
        run.route().await;
        let gone = run
            .stable
            .iter()
            .chain(run.canary.iter())
            .filter(|s| !alive(s))
            .count();
        run.event(Event::ControllerResumed {
            stable: run.stable.len(),
            canary: run.canary.len(),
            gone,
            weight: run.weight,
        })
        .await?;
        self.drive(run, &mut commands).await
    }

    /// The loop: observe, feed the machine, execute, until it finishes.
    async fn drive(
        &self,
        mut run: Run<'_>,
        commands: &mut tokio::sync::mpsc::Receiver<Operator>,
    ) -> Result<(hatoba_store::Deployment, Option<Deployed>), DeployError> {
        let req = run.req;
        run.execute().await?;
        run.sync_traffic().await?;
        let period = req
            .svc
            .health
            .readiness
            .as_ref()
            .map_or(Duration::from_millis(500), |p| p.period);
        let mut probe = tokio::time::interval(period);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while run.outcome.is_none() {
            let timer = run
                .machine
                .poll_timeout()
                .map(|t| Duration::from_millis(t.0.saturating_sub(clock_now().0)));
            tokio::select! {
                () = sleep_or_never(timer) => {
                    run.machine.handle_timeout(clock_now());
                    run.dirty = true;
                }
                Some(op) = commands.recv() => match op {
                    Operator::Input(input) => {
                        let (command, reason) = operator_command(&input);
                        run.event(Event::Operator { command, by: None, reason }).await?;
                        run.machine.handle(clock_now(), input);
                        run.dirty = true;
                    }
                    Operator::Promote { full, by } => {
                        let what = if full { "promote --full" } else { "promote" };
                        run.event(Event::Operator {
                            command: what.to_owned(),
                            by: Some(by.clone()),
                            reason: None,
                        })
                        .await?;
                        run.promoted_by = Some(by);
                        let input = if full { Input::PromoteFull } else { Input::Promote };
                        run.machine.handle(clock_now(), input);
                        run.dirty = true;
                    }
                    Operator::Approve { by } => {
                        run.event(Event::ApprovalIgnored { by }).await?;
                    }
                },
                _ = probe.tick() => {
                    if run.route_failed {
                        run.route().await;
                    }
                    if let Some((track, n)) = run.short_scale {
                        run.scale(track, n).await?;
                    }
                    let (ready, crashed) = run.health_round().await?;
                    if let Some(crashed) = crashed {
                        run.machine.handle(clock_now(), Input::Unhealthy(crashed));
                        run.dirty = true;
                    }
                    if let Some((stable, canary)) = ready {
                        run.machine.handle(clock_now(), Input::Ready { stable, canary });
                        run.dirty = true;
                    }
                    for input in run.judge_due().await? {
                        run.machine.handle(clock_now(), input);
                        run.dirty = true;
                    }
                }
            }
            run.reap(false).await?;
            run.execute().await?;
            run.sync_traffic().await?;
        }
        run.generator = None;
        // Complete once the old instances have drained and stopped.
        run.reap(true).await?;
        if matches!(
            run.outcome,
            Some(Outcome::Aborted(_) | Outcome::RolledBack(_))
        ) && !run.stable.is_empty()
        {
            // The last table before the outcome is recorded: the stable
            // version alone (the supervisor keeps it so afterwards).
            run.route().await;
        }
        let (status, reason, serving) = match run.outcome.clone() {
            Some(Outcome::Succeeded) => (
                DeploymentStatus::Succeeded,
                None,
                Some(Deployed {
                    version: req.version.clone(),
                    instances: run.canary.clone(),
                    vars: req.vars.clone(),
                    secrets: req.secrets.clone(),
                    deployment: Some(run.id.clone()),
                    image_id: image_of(&run.instance),
                }),
            ),
            Some(Outcome::Aborted(r)) => (
                DeploymentStatus::Aborted,
                Some(r),
                req.current.as_ref().map(|c| Deployed {
                    instances: run.stable.clone(),
                    ..c.clone()
                }),
            ),
            Some(Outcome::RolledBack(r)) => (
                DeploymentStatus::RolledBack,
                Some(r),
                req.current.as_ref().map(|c| Deployed {
                    instances: run.stable.clone(),
                    ..c.clone()
                }),
            ),
            None => (
                DeploymentStatus::Failed,
                Some("the rollout ended without an outcome".to_owned()),
                req.current.clone(),
            ),
        };
        let deployment = match self
            .store
            .transition(&run.id, status, reason, clock_now())
            .await
        {
            Ok(d) => d,
            // Already recorded before a restart: keep what was recorded.
            Err(StoreError::Terminal { .. }) => self
                .store
                .deployment(&run.id)
                .await?
                .ok_or_else(|| StoreError::NotFound { id: run.id.clone() })?,
            Err(e) => return Err(e.into()),
        };
        self.save(
            &req.service,
            &req.environment,
            &ServiceRecord {
                serving: serving.as_ref().map(ServingRecord::of),
                rollout: None,
            },
        )
        .await?;
        self.prune_images(req, &deployment.id, serving.as_ref())
            .await;
        Ok((deployment, serving))
    }

    /// Removes the images of the service's versions older than its latest
    /// `keepImages`, and those `hatoba build` made for it older than its
    /// newest `keepImages` builds, deployed or not (see
    /// [`prune::to_prune`]), each recorded on `id` as an `image_pruned`
    /// event. A failure is logged and changes nothing else: the
    /// deployment has ended.
    async fn prune_images(
        &self,
        req: &DeployRequest,
        id: &DeploymentId,
        serving: Option<&Deployed>,
    ) {
        let RuntimeSpec::Docker(docker) = &req.svc.runtime else {
            return;
        };
        let history = match self
            .store
            .history(&hatoba_store::HistoryFilter {
                service: Some(req.service.clone()),
                environment: None,
                limit: 10_000,
            })
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(service = %req.service, "images not pruned: {}", chain(&e));
                return;
            }
        };
        let built = match self.runtime.built_images(&req.service).await {
            Ok(b) => b,
            Err(e) => {
                // Without the list, only what the history recorded is
                // considered: never more than before.
                tracing::warn!(service = %req.service, "built images not listed: {}", chain(&e));
                Vec::new()
            }
        };
        let in_use: Vec<&str> = serving
            .and_then(|s| s.image_id.as_deref())
            .into_iter()
            .collect();
        let plan = prune::to_prune(&history, &built, docker.keep_images, &in_use);
        if plan.is_empty() {
            return;
        }
        let ids: Vec<String> = plan.iter().map(|p| p.id.clone()).collect();
        let removed = match self.runtime.remove_images(&ids).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(service = %req.service, "images not pruned: {}", chain(&e));
                return;
            }
        };
        for p in plan.iter().filter(|p| removed.contains(&p.id)) {
            let e = Event::ImagePruned {
                version: p.version.clone(),
                image: prune::short_id(&p.id),
                never_deployed: p.never_deployed,
            };
            let new = NewEvent::of(clock_now(), &e, Some(req.service.as_str()));
            crate::events::trace(id, &req.service, &req.environment, &new);
            if let Err(e) = self.store.append_event(id, new).await {
                tracing::warn!(service = %req.service, "image pruning not recorded: {}", chain(&e));
            }
        }
    }
}

/// An operator's input as the timeline says it: words, not Rust's
/// debug text (`abort: aborted by alice`, not `Abort("aborted by alice")`).
fn operator_command(input: &Input) -> (String, Option<String>) {
    let (command, reason) = match input {
        Input::Abort(why) => ("abort", Some(why.clone())),
        Input::Promote => ("promote", None),
        Input::PromoteFull => ("promote --full", None),
        Input::Unhealthy(why) => ("roll back", Some(why.clone())),
        Input::Start => ("start", None),
        Input::Ready { .. } => ("ready", None),
        Input::Verdict(..) => ("verdict", None),
        Input::Evidence(..) => ("evidence", None),
    };
    (command.to_owned(), reason)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn instance_spec(req: &DeployRequest) -> Result<InstanceSpec, DeployError> {
    instance_spec_for(
        &req.service,
        &req.svc,
        &req.version,
        &req.vars,
        &req.secrets,
        &req.base_dir,
    )
}

struct InstanceInputs<'a> {
    service: &'a ServiceName,
    svc: &'a Service,
    version: &'a Version,
    vars: &'a BTreeMap<String, String>,
    secrets: &'a SecretEnv,
    base_dir: &'a std::path::Path,
}

/// What to start for one instance of a version of a service.
pub(crate) fn instance_spec_for(
    service: &ServiceName,
    svc: &Service,
    version: &Version,
    vars: &BTreeMap<String, String>,
    secrets: &SecretEnv,
    base_dir: &std::path::Path,
) -> Result<InstanceSpec, DeployError> {
    let req = InstanceInputs {
        service,
        svc,
        version,
        vars,
        secrets,
        base_dir,
    };
    let lookup = |name: &str| -> Option<String> {
        if name == "VERSION" {
            return Some(req.version.to_string());
        }
        if name == "PORT" {
            // Known only when the instance starts: the runtime fills it in.
            return Some("${PORT}".to_owned());
        }
        if req.secrets.values.contains_key(name) {
            // Left as written: the runtime puts the value into the process
            // it starts, and only there.
            return Some(format!("${{{name}}}"));
        }
        req.vars.get(name).cloned()
    };
    let fill_list = |items: &[String]| -> Result<Vec<String>, DeployError> {
        Ok(items
            .iter()
            .map(|a| hatoba_spec::interpolate(a, lookup))
            .collect::<Result<Vec<_>, _>>()?)
    };
    let (workload, spec_env, working_dir) = match &req.svc.runtime {
        RuntimeSpec::Process(p) => {
            let program = hatoba_spec::interpolate(&p.command, lookup)?;
            let args = fill_list(&p.args)?;
            let working_dir = match &p.working_dir {
                Some(w) => req.base_dir.join(hatoba_spec::interpolate(w, lookup)?),
                None => req.base_dir.to_path_buf(),
            };
            (
                hatoba_runtime::Workload::Process { program, args },
                &p.env,
                working_dir,
            )
        }
        RuntimeSpec::Docker(d) => {
            let binds = d
                .volumes
                .iter()
                .map(|v| {
                    // A host directory relative to the spec file; Docker
                    // takes absolute ones only.
                    let source = if v.source.starts_with('.') {
                        let rel = v.source.strip_prefix("./").unwrap_or(&v.source);
                        req.base_dir.join(rel).display().to_string()
                    } else {
                        v.source.clone()
                    };
                    let mode = if v.read_only { ":ro" } else { "" };
                    format!("{source}:{}{mode}", v.target)
                })
                .collect();
            let container = hatoba_runtime::ContainerWorkload {
                image: hatoba_spec::interpolate(&d.image, lookup)?,
                command: d.command.as_deref().map(&fill_list).transpose()?,
                args: d.args.as_deref().map(&fill_list).transpose()?,
                port: d.port,
                user: d.user.clone(),
                memory_bytes: d.memory,
                millicpus: d.cpus,
                read_only: d.read_only,
                binds,
                network: d.network.clone(),
                image_id: None,
                labels: BTreeMap::new(),
            };
            (
                hatoba_runtime::Workload::Container(container),
                &d.env,
                req.base_dir.to_path_buf(),
            )
        }
    };
    let mut env = BTreeMap::new();
    for (k, v) in spec_env {
        env.insert(k.clone(), hatoba_spec::interpolate(v, lookup)?);
    }
    // What the app may want to report about itself (like Nomad's NOMAD_*
    // variables); the spec's own `env` wins.
    env.entry("HATOBA_SERVICE".to_owned())
        .or_insert_with(|| req.service.to_string());
    env.entry("HATOBA_VERSION".to_owned())
        .or_insert_with(|| req.version.to_string());
    Ok(InstanceSpec {
        service: req.service.clone(),
        version: req.version.clone(),
        workload,
        env,
        working_dir,
        secrets: req.secrets.values.clone(),
    })
}

/// Pins a container to the exact image recorded for its version (when
/// given) and labels it with its deployment (`hatoba.deployment`), so a
/// later start runs the very same image and `docker ps --filter
/// label=hatoba.deployment=ID` finds it. A process is left as it is.
pub(crate) fn pin(
    spec: &mut InstanceSpec,
    image_id: Option<&str>,
    deployment: Option<&DeploymentId>,
) {
    if let hatoba_runtime::Workload::Container(c) = &mut spec.workload {
        if let Some(id) = image_id {
            c.image_id = Some(id.to_owned());
        }
        if let Some(d) = deployment {
            c.labels.insert("deployment".to_owned(), d.to_string());
        }
    }
}

/// The exact image a container runs, when pinned.
pub(crate) fn image_of(spec: &InstanceSpec) -> Option<String> {
    match &spec.workload {
        hatoba_runtime::Workload::Container(c) => c.image_id.clone(),
        hatoba_runtime::Workload::Process { .. } => None,
    }
}

fn machine_for(req: &DeployRequest, stable_ready: u32) -> Machine {
    let svc = &req.svc;
    let replicas = svc.replicas;
    {
        match &svc.strategy {
            Strategy::Canary(c) => Machine::Canary(Canary::new(CanaryPlan {
                replicas,
                stable_ready,
                steps: c
                    .steps
                    .iter()
                    .map(|s| match s {
                        hatoba_spec::Step::SetWeight(w) => Step::SetWeight(*w),
                        hatoba_spec::Step::Pause(p) => Step::Pause(p.duration),
                        hatoba_spec::Step::Analysis(_) => Step::Analysis,
                    })
                    .collect(),
                progress_deadline: svc.progress_deadline,
                background_analysis: c.analysis.is_some(),
                watch: svc.watch,
                // A rollback onto a cold previous version: traffic follows
                // its instances as they become ready.
                ramp: req.rollback_of.is_some(),
            })),
            Strategy::BlueGreen(b) => Machine::BlueGreen(BlueGreen::new(BlueGreenPlan {
                replicas,
                stable_ready,
                auto_promotion: b.promotion.delay(),
                // The old colour stays warm for the watch too: a regression
                // switches straight back to it.
                scale_down_delay: b.scale_down_delay.max(svc.watch),
                progress_deadline: svc.progress_deadline,
                preview: b.preview_listen.is_some(),
                pre_promotion_analysis: false,
            })),
            Strategy::Rolling(r) => Machine::Rolling(Rolling::new(RollingPlan {
                replicas,
                stable_ready,
                max_surge: r.max_surge.resolve(replicas, true),
                max_unavailable: r.max_unavailable.resolve(replicas, false),
                progress_deadline: svc.progress_deadline,
            })),
        }
    }
}

impl Run<'_> {
    /// The service's state as it must be saved now.
    fn record(&self) -> ServiceRecord {
        let records = |v: &[InstanceStatus]| v.iter().map(InstanceRecord::of).collect();
        let current = self.req.current.as_ref().map(ServingRecord::of);
        let mut ready: Vec<SocketAddr> = self.ready.iter().copied().collect();
        ready.sort_unstable();
        let mut runs: Vec<(AnalysisRun, crate::analysis::Active)> =
            self.analyses.iter().map(|(r, a)| (*r, a.clone())).collect();
        runs.sort_by_key(|(r, _)| format!("{r:?}"));
        ServiceRecord {
            serving: current.clone(),
            rollout: Some(RolloutRecord {
                deployment: self.id.clone(),
                version: self.req.version.clone(),
                vars: self.req.vars.clone(),
                secrets: self.req.secrets.versions.clone(),
                deployed_by: self.req.deployed_by.clone(),
                rollback_of: self.req.rollback_of.clone(),
                current,
                stable: records(&self.stable),
                canary: records(&self.canary),
                ready,
                weight: self.weight,
                machine: self.machine.clone(),
                pending: self.pending.clone(),
                runs,
                outcome: self.outcome.clone(),
                awaiting_approval: self.awaiting_approval,
                promoted_by: self.promoted_by.clone(),
                image_id: image_of(&self.instance),
            }),
        }
    }

    /// Writes the state before the next action.
    async fn save(&mut self) -> Result<(), DeployError> {
        let record = self.record();
        self.d
            .save(&self.req.service, &self.req.environment, &record)
            .await?;
        self.dirty = false;
        Ok(())
    }

    /// Templates an analysis run uses, and the values of their arguments.
    fn templates_for(&self, run: AnalysisRun) -> (Vec<String>, BTreeMap<String, String>) {
        let Strategy::Canary(c) = &self.req.svc.strategy else {
            return (Vec::new(), BTreeMap::new());
        };
        let of = |a: &hatoba_spec::AnalysisRef| (a.templates.clone(), a.args.clone());
        match run {
            AnalysisRun::Background => c.analysis.as_ref().map(of).unwrap_or_default(),
            AnalysisRun::Step(i) => match c.steps.get(i) {
                Some(hatoba_spec::Step::Analysis(a)) => of(a),
                _ => (Vec::new(), BTreeMap::new()),
            },
            AnalysisRun::PrePromotion => (Vec::new(), BTreeMap::new()),
        }
    }

    /// Records an event in the deployment's timeline (its words name the
    /// service in the commands they suggest) and logs it.
    async fn event(&self, e: Event) -> Result<(), DeployError> {
        let new = NewEvent::of(clock_now(), &e, Some(self.req.service.as_str()));
        crate::events::trace(&self.id, &self.req.service, &self.req.environment, &new);
        self.d.store.append_event(&self.id, new).await?;
        Ok(())
    }

    /// Executes every pending command, saving the state before each.
    async fn execute(&mut self) -> Result<(), DeployError> {
        loop {
            if self.pending.is_none() {
                self.pending = self.machine.poll_command();
            }
            let Some(c) = self.pending.clone() else { break };
            self.save().await?;
            self.apply(c).await?;
            self.pending = None;
            self.dirty = true;
            if let Some(why) = self.unhealthy.take() {
                self.machine.handle(clock_now(), Input::Unhealthy(why));
            }
        }
        if self.dirty {
            self.save().await?;
        }
        Ok(())
    }

    /// Executes one command.
    async fn apply(&mut self, c: Command) -> Result<(), DeployError> {
        {
            match c {
                Command::Event(e) => self.event(e).await?,
                Command::Record(m) => {
                    // A machine saved by a Hatoba from before typed events.
                    // The machines do not know the service's name; the
                    // commands they suggest get it here.
                    let service = &self.req.service;
                    let m = m
                        .replace("`hatoba promote`", &format!("`hatoba promote {service}`"))
                        .replace("`hatoba abort`", &format!("`hatoba abort {service}`"));
                    self.event(Event::Text {
                        kind: "rollout".to_owned(),
                        message: m,
                    })
                    .await?;
                }
                Command::PromotedWithoutEvidence(missing) => {
                    self.promoted_without_evidence(missing).await?;
                }
                Command::SetWeight(w) => {
                    self.event(Event::WeightChanged { weight: w }).await?;
                    self.weight = w.percent();
                    self.route().await;
                }
                Command::Scale(track, n) => self.scale(track, n).await?,
                Command::StartAnalysis(run) => {
                    let (templates, args) = self.templates_for(run);
                    self.event(Event::AnalysisStarted {
                        run: crate::analysis::run_name(run),
                        templates: templates.clone(),
                    })
                    .await?;
                    let mut active = crate::analysis::start(
                        &self.req.spec,
                        templates,
                        args,
                        run == AnalysisRun::Background,
                        clock_now(),
                    );
                    if crate::analysis::wants_judge(&self.req.spec, &active.templates) {
                        // The judge's window starts here.
                        active.baseline = self.judge_totals().await;
                    }
                    self.analyses.insert(run, active);
                }
                Command::StopAnalysis(run) => {
                    self.analyses.remove(&run);
                }
                Command::SetPreview(on) => self.set_preview(on).await?,
                Command::Serving { warm_until } => self.serving(warm_until).await?,
                Command::Finish(o) => self.outcome = Some(self.explained(o)),
            }
        }
        Ok(())
    }

    /// Records that the new version serves all traffic (the deployment's
    /// `serving_at`, and a `serving` event whose data says until when the
    /// previous version stays warm). Complete comes later, with `Finish`.
    async fn serving(&self, warm_until: Option<Millis>) -> Result<(), DeployError> {
        let now = clock_now();
        let previous = self.req.current.as_ref().map(|c| c.version.to_string());
        let warm_until = warm_until.filter(|_| previous.is_some());
        let serving = Event::Serving {
            version: self.req.version.to_string(),
            previous,
            warm_until: warm_until.map(|t| t.0),
            // Whole seconds, as a person reads it.
            warm_ms: warm_until.map(|t| t.0.saturating_sub(now.0).div_ceil(1000) * 1000),
        };
        let new = NewEvent::of(now, &serving, Some(self.req.service.as_str()));
        crate::events::trace(&self.id, &self.req.service, &self.req.environment, &new);
        match self
            .d
            .store
            .mark_serving(&self.id, now, new.message, new.data)
            .await
        {
            // Executed again after a restart that followed the end: nothing to add.
            Ok(_) | Err(StoreError::Terminal { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts or stops generated traffic as the running analyses ask
    /// (`traffic.generate` of their templates).
    async fn sync_traffic(&mut self) -> Result<(), DeployError> {
        let want = crate::traffic::wanted(
            &self.req.spec,
            self.analyses.values().flat_map(|a| a.templates.iter()),
        );
        if self.generator.as_ref().map(|g| &g.want) == want.as_ref() {
            return Ok(());
        }
        let stopped = self.generator.take().is_some();
        let listen = &self.req.svc.route.listen;
        match want {
            Some(_) if self.req.svc.route.tls.is_some() && !self.traffic_refused => {
                self.traffic_refused = true;
                self.event(Event::TrafficRefused).await?;
            }
            Some(_) if self.req.svc.route.tls.is_some() => {}
            Some(want) => {
                self.event(Event::TrafficStarted {
                    path: want.path.to_string(),
                    listen: listen.to_string(),
                    rate: want.rate.to_string(),
                })
                .await?;
                self.generator = Some(crate::traffic::start(&listen.host, listen.port, want));
            }
            None if stopped => {
                self.event(Event::TrafficStopped).await?;
            }
            None => {}
        }
        Ok(())
    }

    /// Records a promotion past missing evidence: by a person, an event
    /// that marks the deployment (a rollback without `--to` skips it); by
    /// a rollback's own skipping of the steps, only a line of the timeline.
    async fn promoted_without_evidence(&self, missing: String) -> Result<(), DeployError> {
        let e = match (&self.promoted_by, &self.req.rollback_of) {
            (None, Some(_)) => Event::RollbackUnjudged { missing },
            (by, _) => Event::PromotedWithoutEvidence {
                by: by.clone().unwrap_or_else(|| "hatoba".to_owned()),
                missing,
            },
        };
        self.event(e).await
    }

    /// Both versions' totals for the statistical judge, from the data
    /// plane; `None` without a stable version.
    async fn judge_totals(&self) -> Option<hatoba_analysis::Sample> {
        let stable = self.req.current.as_ref().map(|c| c.version.to_string());
        crate::analysis::totals(
            self.d.data_plane.as_ref(),
            self.req.service.as_ref(),
            self.req.version.as_ref(),
            stable.as_deref(),
        )
        .await
    }

    /// Takes the measurements that are due, records each, and returns what
    /// the machine must hear: verdicts decided, and the evidence of every
    /// run measured that goes on (no promotion without evidence).
    async fn judge_due(&mut self) -> Result<Vec<Input>, DeployError> {
        let now = clock_now();
        let mut out = Vec::new();
        if self.analyses.is_empty() {
            return Ok(out);
        }
        let stable = self.req.current.as_ref().map(|c| c.version.to_string());
        let base_dir = self.req.base_dir.clone();
        let service = self.req.service.to_string();
        let canary = self.req.version.to_string();
        let env = self.req.environment.to_string();
        let ctx = crate::analysis::Ctx {
            data_plane: self.d.data_plane.as_ref(),
            service: &service,
            canary: &canary,
            stable: stable.as_deref(),
            env: &env,
            base_dir: &base_dir,
            running_for: self
                .canary
                .iter()
                .map(|c| c.started_at)
                .min()
                .map_or(Duration::ZERO, |t| {
                    Duration::from_millis(now.0.saturating_sub(t.0))
                }),
        };
        // The statistical judge: a significantly worse canary fails every
        // run that judges, at once, whatever the thresholds say; each run
        // on both versions' traffic since it started (its baseline).
        let judged: Vec<AnalysisRun> = {
            let mut runs: Vec<AnalysisRun> = self
                .analyses
                .iter()
                .filter(|(_, a)| crate::analysis::wants_judge(&self.req.spec, &a.templates))
                .map(|(r, _)| *r)
                .collect();
            runs.sort_by_key(|r| crate::analysis::run_name(*r));
            runs
        };
        let mut worse = Vec::new();
        if let (Some(judge), Some(stable), false) =
            (self.judge.clone(), stable.as_deref(), judged.is_empty())
            && let Some(totals) = self.judge_totals().await
        {
            for run in &judged {
                let Some(active) = self.analyses.get_mut(run) else {
                    continue;
                };
                match &active.baseline {
                    // Read at the first look when it could not be at the
                    // start (a record saved before baselines existed).
                    None => active.baseline = Some(totals.clone()),
                    Some(baseline) if self.weight > 0 => {
                        if let Some(evidence) =
                            crate::analysis::compare(&judge, stable, baseline, &totals)
                        {
                            worse.push((*run, evidence));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if !worse.is_empty() {
            for (run, evidence) in worse {
                self.d
                    .store
                    .record_measurement(
                        &self.id,
                        hatoba_store::NewMeasurement {
                            at: now,
                            run: crate::analysis::run_name(run),
                            metric: "canary-vs-stable".to_owned(),
                            value: None,
                            verdict: hatoba_store::MeasurementVerdict::Failed,
                            detail: Some(evidence.clone()),
                        },
                    )
                    .await?;
                self.analyses.remove(&run);
                out.push(Input::Verdict(run, hatoba_rollout::Verdict::Fail));
                self.event(Event::AnalysisFailed {
                    run: crate::analysis::run_name(run),
                    evidence: evidence.clone(),
                })
                .await?;
            }
            return Ok(out);
        }
        let runs: Vec<AnalysisRun> = self.analyses.keys().copied().collect();
        for run in runs {
            let Some(active) = self.analyses.get(&run).cloned() else {
                continue;
            };
            let metrics = crate::analysis::metrics(&self.req.spec, &active.templates);
            let mut tracker = active.tracker.clone();
            let mut decided = None;
            let due = tracker.due(now);
            let measured = !due.is_empty();
            for i in due {
                let Some((template, metric)) = metrics.get(i) else {
                    continue;
                };
                let taken = crate::analysis::measure(&ctx, template, metric, &active.args).await;
                let verdict = match &taken.observation {
                    hatoba_analysis::run::Observation::Passed => {
                        hatoba_store::MeasurementVerdict::Passed
                    }
                    hatoba_analysis::run::Observation::Failed => {
                        hatoba_store::MeasurementVerdict::Failed
                    }
                    hatoba_analysis::run::Observation::Inconclusive(_) => {
                        hatoba_store::MeasurementVerdict::Inconclusive
                    }
                    hatoba_analysis::run::Observation::Error(_) => {
                        hatoba_store::MeasurementVerdict::Error
                    }
                    hatoba_analysis::run::Observation::Insufficient(_) => {
                        hatoba_store::MeasurementVerdict::Insufficient
                    }
                };
                self.d
                    .store
                    .record_measurement(
                        &self.id,
                        hatoba_store::NewMeasurement {
                            at: now,
                            run: crate::analysis::run_name(run),
                            metric: taken.metric.clone(),
                            value: taken.value,
                            verdict,
                            detail: Some(taken.detail.clone()),
                        },
                    )
                    .await?;
                if verdict == hatoba_store::MeasurementVerdict::Failed {
                    self.event(Event::MeasurementFailed {
                        metric: taken.metric.clone(),
                        value: taken.value,
                        detail: taken.detail.clone(),
                    })
                    .await?;
                }
                if let Some(v) = tracker.record(i, now, taken.observation) {
                    decided = Some(v);
                    break;
                }
            }
            match decided {
                Some(v) => {
                    let (verdict, why) = crate::analysis::verdict(&v);
                    self.analyses.remove(&run);
                    self.event(Event::Verdict {
                        run: crate::analysis::run_name(run),
                        verdict: format!("{verdict:?}").to_lowercase(),
                        why: why.to_string(),
                    })
                    .await?;
                    out.push(Input::Verdict(run, verdict));
                }
                None => {
                    if measured {
                        out.push(Input::Evidence(run, tracker.missing_evidence()));
                    }
                    self.analyses
                        .insert(run, crate::analysis::Active { tracker, ..active });
                }
            }
        }
        Ok(out)
    }

    async fn scale(&mut self, track: Track, n: u32) -> Result<(), DeployError> {
        let was_short = self.short_scale.take().is_some();
        let target = n;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        loop {
            let have = match track {
                Track::Stable => self.stable.len(),
                Track::Canary => self.canary.len(),
            };
            if have < n {
                // Only the new version is ever started here.
                if track == Track::Stable {
                    self.event(Event::OldVersionUnmanaged).await?;
                    return Ok(());
                }
                let s = match self.d.runtime.start(&self.instance, clock_now()).await {
                    Ok(s) => s,
                    Err(e) if crate::probe::is_controller_shortage_in(&e) => {
                        // The controller's own shortage says nothing about
                        // the new version: tried again at the next tick
                        // (the progress deadline still bounds the wait).
                        if !was_short {
                            self.event(Event::InstanceFailed {
                                version: self.req.version.to_string(),
                                error: chain(&e),
                                retrying: true,
                            })
                            .await?;
                        }
                        self.short_scale = Some((track, target));
                        return Ok(());
                    }
                    Err(e @ RuntimeError::Unreachable { .. }) => {
                        // The engine does not answer: nothing is known of
                        // the new version. Traffic stays as it is and the
                        // start is tried again at each tick, until the
                        // progress deadline rolls back.
                        if !was_short {
                            self.event(Event::RuntimeUnreachable {
                                version: self.req.version.to_string(),
                                error: chain(&e),
                            })
                            .await?;
                        }
                        self.short_scale = Some((track, target));
                        return Ok(());
                    }
                    Err(e) => {
                        // Not the rollout's end by itself: the machine
                        // decides (rolled back, traffic stays on stable).
                        let failed = Event::InstanceFailed {
                            version: self.req.version.to_string(),
                            error: chain(&e),
                            retrying: false,
                        };
                        let why = failed.to_string();
                        self.event(failed).await?;
                        self.unhealthy = Some(why);
                        return Ok(());
                    }
                };
                self.event(Event::InstanceStarted {
                    instance: s.id.to_string(),
                    version: s.version.to_string(),
                    addr: s.addr.to_string(),
                    pid: s.pid,
                })
                .await?;
                self.health.handle(
                    clock_now(),
                    Observation::Added {
                        id: s.id.0.clone(),
                        started_at: s.started_at,
                        ready: false,
                        new: true,
                    },
                );
                self.canary.push(s);
                self.save().await?;
            } else if have > n {
                let s = match track {
                    Track::Stable => self.stable.pop(),
                    Track::Canary => self.canary.pop(),
                };
                if let Some(s) = s {
                    // Saved without it first: killed half-way, the restarted
                    // server's sweep finishes stopping it.
                    self.save().await?;
                    self.stop(s).await?;
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Out of the route table at once; drained, then stopped, in the
    /// background (`draining`), so the rollout's next step does not wait
    /// for it. `reap` records what finished.
    async fn stop(&mut self, s: InstanceStatus) -> Result<(), DeployError> {
        self.ready.remove(&s.addr);
        self.health
            .handle(clock_now(), Observation::Removed(s.id.0.clone()));
        self.route().await;
        let drain = self.req.svc.drain;
        // Counted before the notify, which may close some at once.
        let open = self.d.data_plane.open_at(s.addr).await;
        self.event(Event::InstanceDraining {
            instance: s.id.to_string(),
            version: s.version.to_string(),
            drain_ms: u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
            connections: open,
        })
        .await?;
        let data_plane = Arc::clone(&self.d.data_plane);
        let runtime = Arc::clone(&self.d.runtime);
        let grace = self.req.svc.termination_grace_period;
        let notify = self.req.svc.drain_notify.clone();
        self.draining.spawn(async move {
            let began = tokio::time::Instant::now();
            // Told as it leaves the route, so its clients reconnect (to the
            // new version) while the drain still waits for them.
            let notify_error = match notify {
                None => None,
                Some(DrainNotify::Path(path)) => {
                    crate::probe::notify_drain(s.addr, &path, NOTIFY_TIMEOUT)
                        .await
                        .err()
                        .map(|e| format!("POST {path}: {e}"))
                }
                Some(DrainNotify::Signal(signal)) => runtime
                    .signal(&s.id, &signal)
                    .await
                    .err()
                    .map(|e| chain(&e)),
            };
            let mut report = data_plane.drained(s.addr, drain).await;
            // Open when the drain began is what was open as it left the
            // route, before the notify.
            report.open = open.or(report.open);
            let waited = began.elapsed();
            let stopped = runtime
                .stop(&s.id, grace)
                .await
                .map(|end| killed(&end.state));
            if stopped.is_ok() {
                runtime.forget(&s.id).await;
            }
            Drained {
                instance: s,
                waited,
                report,
                notify_error,
                stopped,
                retries: 0,
            }
        });
        Ok(())
    }

    /// Tries again, in the background, the stop of a drained instance the
    /// runtime did not answer.
    fn stop_again(&mut self, d: Drained) {
        let runtime = Arc::clone(&self.d.runtime);
        let grace = self.req.svc.termination_grace_period;
        self.draining.spawn(async move {
            // Pacing: an unreachable engine has no event saying it is back.
            tokio::time::sleep(STOP_RETRY_EVERY).await;
            let stopped = runtime
                .stop(&d.instance.id, grace)
                .await
                .map(|end| killed(&end.state));
            if stopped.is_ok() {
                runtime.forget(&d.instance.id).await;
            }
            Drained {
                stopped,
                retries: d.retries + 1,
                ..d
            }
        });
    }

    /// Records the drains that finished; with `all`, waits for every one
    /// (a rollout is complete once its old instances have stopped).
    async fn reap(&mut self, all: bool) -> Result<(), DeployError> {
        loop {
            let done = if all {
                self.draining.join_next().await
            } else {
                self.draining.try_join_next()
            };
            let Some(done) = done else {
                return Ok(());
            };
            // A drain task only ends by finishing: panics are bugs and
            // cancellation happens only when the run is dropped.
            let Ok(d) = done else {
                continue;
            };
            if d.retries == 0 {
                self.event(Event::InstanceDrained {
                    instance: d.instance.id.to_string(),
                    version: d.instance.version.to_string(),
                    after_ms: u64::try_from(d.waited.as_millis()).unwrap_or(u64::MAX),
                    in_time: d.report.done,
                    connections: d.report.open,
                    left: d.report.left,
                    notify_error: d.notify_error.clone(),
                })
                .await?;
            }
            let killed = match &d.stopped {
                Ok(killed) => *killed,
                // The engine does not answer: the instance is out of the
                // route, so nothing serves differently; its stop is tried
                // again until the engine is back, as a start is.
                Err(e @ RuntimeError::Unreachable { .. }) => {
                    if d.retries == 0 {
                        self.event(Event::StopWaits {
                            instance: d.instance.id.to_string(),
                            version: d.instance.version.to_string(),
                            error: chain(e),
                        })
                        .await?;
                    }
                    self.stop_again(d);
                    continue;
                }
                Err(_) => d.stopped?,
            };
            self.event(Event::InstanceStopped {
                instance: d.instance.id.to_string(),
                version: d.instance.version.to_string(),
                killed,
            })
            .await?;
            if let Some(removed) = container_removed(&d.instance) {
                self.event(removed).await?;
            }
        }
    }

    /// A failed outcome with, when a new instance was not ready, why its
    /// latest readiness probe failed: "not ready within 1m" alone does not
    /// say that the app answers 404 on the readiness path.
    fn explained(&self, o: Outcome) -> Outcome {
        let Some(why) = &self.watch.not_ready else {
            return o;
        };
        match o {
            Outcome::Aborted(r) => Outcome::Aborted(format!("{r}; {why}")),
            Outcome::RolledBack(r) => Outcome::RolledBack(format!("{r}; {why}")),
            other => other,
        }
    }

    /// Hands every instance to the health policy, ready as `ready` says
    /// (what the rollout, or the run before a restart, found ready).
    fn watch_all(&mut self) {
        let now = clock_now();
        let all = self
            .stable
            .iter()
            .map(|s| (s, false))
            .chain(self.canary.iter().map(|c| (c, true)));
        for (i, new) in all {
            self.health.handle(
                now,
                Observation::Added {
                    id: i.id.0.clone(),
                    started_at: i.started_at,
                    ready: self.ready.contains(&i.addr),
                    new,
                },
            );
        }
    }

    /// One round of the health policy: lists the instances, probes what it
    /// asks for, restarts a stable instance that exited or failed liveness
    /// (at most five per rollout: between rollouts the supervisor does
    /// this, with back-off; it stands aside while one runs, so the old
    /// version keeps its capacity and a rollback has somewhere to go back
    /// to). Returns the ready counts when they changed, and why the new
    /// version failed when one of its instances exited or failed liveness
    /// as many times in a row as the spec allows.
    async fn health_round(&mut self) -> Result<(Option<(u32, u32)>, Option<String>), DeployError> {
        let before = self.ready.clone();
        let listed = self.d.runtime.list(&self.req.service).await;
        let now = clock_now();
        self.health.handle_timeout(now);
        self.health.handle(
            now,
            match &listed {
                Ok(l) => Observation::Listed(crate::probe::listed_for_health(l)),
                Err(e) => Observation::ListFailed(e.to_string()),
            },
        );
        let mut crashed = None;
        while let Some(decision) = self.health.poll_action() {
            match decision {
                Decision::Probe { id, check } => {
                    let Some(inst) = self.instance(&id) else {
                        continue;
                    };
                    let Some(result) =
                        crate::probe::probe_as_asked(check, inst.addr, &self.req.svc.health).await
                    else {
                        continue;
                    };
                    let result = crate::probe::policy_result(&result);
                    self.health
                        .handle(now, Observation::Probed { id, check, result });
                }
                Decision::Route { id, ready } => {
                    if let Some(inst) = self.instance(&id) {
                        if ready {
                            self.ready.insert(inst.addr);
                        } else {
                            self.ready.remove(&inst.addr);
                        }
                    }
                }
                Decision::Restart { id, why, .. } => self.restart_stable(&id, why).await?,
                Decision::NewVersionFailed { id, why } => {
                    if let Some(inst) = self.instance(&id)
                        && crashed.is_none()
                    {
                        let why = match &why {
                            Death::Exited(state) => match last_words(&*self.d.runtime, &inst).await
                            {
                                Some(line) => format!("{state}; its last output: {line}"),
                                None => state.clone(),
                            },
                            Death::Liveness { .. } => {
                                format!("failed {}", self.liveness_words(&why))
                            }
                        };
                        crashed = Some(format!("instance {} of {} {why}", inst.id, inst.version));
                    }
                }
                Decision::ListingFailed(why) => {
                    self.event(Event::ListingFailed { error: why }).await?;
                }
                Decision::ListingRecovered => {
                    self.event(Event::ListingRecovered).await?;
                }
                Decision::CrashLoopOver => {}
            }
        }
        let probe = self.req.svc.health.readiness.clone();
        self.watch.not_ready = self.canary.iter().find_map(|c| {
            let (f, refused) = self.health.readiness_failure(&c.id.0)?;
            let check = probe.as_ref().map_or_else(
                || format!("connecting to {}:", c.addr),
                |p| format!("GET {}", p.path),
            );
            // An app that ignores $PORT (a fixed port in its code) is the
            // usual reason nothing listens where Hatoba looks.
            let port = if refused {
                format!(
                    " (nothing listens on port {}: the app must listen on the port in $PORT)",
                    c.addr.port()
                )
            } else {
                String::new()
            };
            (!self.ready.contains(&c.addr)).then(|| {
                format!(
                    "instance {} of {} not ready: {check} {f}{port}",
                    c.id, c.version
                )
            })
        });
        if self.ready == before {
            return Ok((None, crashed));
        }
        self.dirty = true;
        self.route().await;
        let count = |v: &[InstanceStatus]| {
            u32::try_from(v.iter().filter(|s| self.ready.contains(&s.addr)).count())
                .unwrap_or(u32::MAX)
        };
        Ok((Some((count(&self.stable), count(&self.canary))), crashed))
    }

    /// A stable or new instance by the runtime's id.
    fn instance(&self, id: &str) -> Option<InstanceStatus> {
        self.stable
            .iter()
            .chain(self.canary.iter())
            .find(|i| i.id.0 == id)
            .cloned()
    }

    /// "its liveness probe /live 3 times in a row (last: GET /live answered 500)".
    fn liveness_words(&self, why: &Death) -> String {
        let path = self
            .req
            .svc
            .health
            .liveness
            .as_ref()
            .map_or("", |p| p.path.as_str());
        match why {
            Death::Liveness { failures, last } => format!(
                "its liveness probe {path} {failures} times in a row (last: GET {path} {last})"
            ),
            Death::Exited(state) => state.clone(),
        }
    }

    /// Starts a stable instance again, as the health policy decided (a live
    /// one stopped first, out of the route table before).
    async fn restart_stable(&mut self, id: &str, why: Death) -> Result<(), DeployError> {
        let Some(current) = self.req.current.as_ref() else {
            return Ok(());
        };
        let Some(old) = self.stable.iter().find(|s| s.id.0 == id).cloned() else {
            return Ok(());
        };
        self.ready.remove(&old.addr);
        self.route().await;
        let unlive = matches!(why, Death::Liveness { .. });
        if unlive {
            // Out of the route first, then stopped, as the supervisor does.
            let _ = self
                .d
                .runtime
                .stop(&old.id, self.req.svc.termination_grace_period)
                .await;
        }
        self.d.runtime.forget(&old.id).await;
        let reason = if unlive {
            format!("failed {}", self.liveness_words(&why))
        } else {
            "exited".to_owned()
        };
        let started = match instance_spec_for(
            &self.req.service,
            &self.req.svc,
            &current.version,
            &current.vars,
            &current.secrets,
            &self.req.base_dir,
        ) {
            Ok(mut spec) => {
                pin(
                    &mut spec,
                    current.image_id.as_deref(),
                    current.deployment.as_ref(),
                );
                self.d
                    .runtime
                    .start(&spec, clock_now())
                    .await
                    .map_err(|e| chain(&e))
            }
            Err(e) => Err(e.to_string()),
        };
        let (restarted_as, addr, error) = match started {
            Ok(new) => {
                let named = (Some(new.id.to_string()), Some(new.addr.to_string()), None);
                self.health.handle(
                    clock_now(),
                    Observation::Restarted {
                        old: old.id.0.clone(),
                        new: new.id.0.clone(),
                        started_at: new.started_at,
                    },
                );
                if let Some(slot) = self.stable.iter_mut().find(|s| s.id == old.id) {
                    *slot = new;
                }
                named
            }
            Err(why) => {
                self.health
                    .handle(clock_now(), Observation::Removed(old.id.0.clone()));
                self.stable.retain(|s| s.id != old.id);
                (None, None, Some(why))
            }
        };
        self.event(Event::InstanceRestarted {
            instance: old.id.to_string(),
            version: old.version.to_string(),
            reason,
            during_rollout: true,
            restarted_as,
            addr,
            error,
            count: None,
            window_ms: None,
            crash_loop_backoff_ms: None,
        })
        .await?;
        self.dirty = true;
        self.save().await?;
        Ok(())
    }

    /// Shows the new colour on the blue-green preview address, or stops
    /// showing it: the preview then shows what the service's address serves.
    async fn set_preview(&mut self, on: bool) -> Result<(), DeployError> {
        let Some(listen) = crate::dataplane::preview_listen(&self.req.svc) else {
            return Ok(());
        };
        if on && !self.preview_on {
            self.event(Event::PreviewOn {
                url: format!("http://{listen}/"),
            })
            .await?;
        }
        self.preview_on = on;
        self.route().await;
        Ok(())
    }

    /// The route table from the ready instances and the weight.
    async fn route(&mut self) {
        let ready = |v: &[InstanceStatus]| {
            v.iter()
                .filter(|s| self.ready.contains(&s.addr))
                .map(|s| s.addr)
                .collect::<Vec<_>>()
        };
        let mut groups = Vec::new();
        let stable_version = self.req.current.as_ref().map(|c| c.version.to_string());
        let has_stable = !self.stable.is_empty();
        if let Some(v) = stable_version.filter(|_| has_stable) {
            groups.push(GroupSpec {
                role: Role::Stable,
                version: v,
                weight: 100 - self.weight,
                backends: ready(&self.stable),
            });
            // A rollout that ended back on the stable version leaves no
            // canary group behind (not even at 0 %): the table says what
            // serves from the moment the outcome is recorded.
            let ended_back = matches!(
                self.outcome,
                Some(Outcome::Aborted(_) | Outcome::RolledBack(_))
            );
            if !ended_back || self.weight > 0 {
                groups.push(GroupSpec {
                    role: Role::Canary,
                    version: self.req.version.to_string(),
                    weight: self.weight,
                    backends: ready(&self.canary),
                });
            }
        } else if self.weight > 0 {
            groups.push(GroupSpec {
                role: Role::Canary,
                version: self.req.version.to_string(),
                weight: 100,
                backends: ready(&self.canary),
            });
        }
        let spec = RouteSpec {
            service: self.req.service.to_string(),
            groups,
            sticky: false,
        };
        // Weights always add up by construction; what can fail is reaching
        // a data plane that restarts: the table is pushed again on the next
        // probe tick, and until then the last one keeps serving.
        let preview = crate::dataplane::preview_listen(&self.req.svc).is_some();
        let applied = if self.preview_on {
            let shown = RouteSpec {
                service: crate::dataplane::preview_key(self.req.service.as_str()),
                groups: vec![GroupSpec {
                    role: Role::Preview,
                    version: self.req.version.to_string(),
                    weight: 100,
                    backends: ready(&self.canary),
                }],
                sticky: false,
            };
            match self.d.data_plane.route(spec).await {
                Ok(()) => self.d.data_plane.route(shown).await,
                Err(e) => Err(e),
            }
        } else {
            crate::dataplane::route_serving(&*self.d.data_plane, spec, preview).await
        };
        match applied {
            Ok(()) => self.route_failed = false,
            Err(e) => {
                if !self.route_failed {
                    let _ = self
                        .event(Event::RouteNotApplied {
                            error: e.to_string(),
                        })
                        .await;
                }
                self.route_failed = true;
            }
        }
    }
}

pub(crate) mod prune;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod workload_tests;

/// The last line an instance wrote (stdout or stderr, as its runtime kept
/// them), shown safely and cut to 200 characters: what a program that
/// exits at start usually says about why (`missing DATABASE_URL`).
async fn last_words(runtime: &dyn Runtime, inst: &InstanceStatus) -> Option<String> {
    let lines = match runtime.logs(&inst.id, 20, None).await {
        Ok(Some(kept)) => kept.lines,
        _ => {
            let path = inst.log.clone()?;
            tokio::task::spawn_blocking(move || crate::ops::tail_file(&path, 20).0)
                .await
                .ok()?
        }
    };
    let line = lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())?;
    // Control characters (a terminal's colours) escaped, quotes kept.
    Some(
        line.chars()
            .take(200)
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect(),
    )
}
