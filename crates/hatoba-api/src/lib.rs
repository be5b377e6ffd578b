//! Hatoba's JSON wire types: what `--output json` prints today and what the
//! server's API carries later.
//!
//! These are a contract with scripts and other tools: fields are only ever
//! added, and enums are text (`"rolled_back"`). The types are plain data with
//! no behaviour and no internal dependencies, so a client links nothing of
//! the server; conversions from domain types live in the crates that own
//! those types' users (the binary, the server).
//!
//! Over 800 lines, not yet split: the wire types are one contract, kept in
//! one file so a change to it reads as one diff. The next split is by
//! resource (deployments and events, services, secrets, errors) into
//! modules re-exported here, so the paths stay `hatoba_api::Type`.

use serde::{Deserialize, Serialize};

pub mod sse;

/// The version of this wire format, in every top-level document.
pub const API_VERSION: &str = "hatoba/v1";

/// One deployment, as listed by `hatoba history` and shown by `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    /// Its id, e.g. `d-01kbx2...`.
    pub id: String,
    /// The service deployed.
    pub service: String,
    /// The environment deployed to.
    pub environment: String,
    /// The version deployed.
    pub version: String,
    /// The commit the version was built from, when known.
    pub commit_sha: Option<String>,
    /// `rolling`, `blue_green` or `canary`.
    pub strategy: String,
    /// `pending`, `in_progress`, `paused`, `succeeded`, `failed`, `aborted` or `rolled_back`.
    pub status: String,
    /// Why it ended the way it did, when it did not simply succeed.
    pub reason: Option<String>,
    /// Who asked for it.
    pub deployed_by: String,
    /// When it was recorded, RFC 3339 UTC.
    pub started_at: String,
    /// When its version began to serve all traffic, RFC 3339 UTC; absent
    /// until then (and for deployments that never did). A deployment serves
    /// before it is complete: the previous version may stay warm a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_at: Option<String>,
    /// From started to serving all traffic, in milliseconds; absent until
    /// it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_after_ms: Option<u64>,
    /// When it ended (complete: the previous version stopped, any watch
    /// over), RFC 3339 UTC; absent while live.
    pub finished_at: Option<String>,
    /// How long it took, in milliseconds; absent while live.
    pub duration_ms: Option<u64>,
    /// The deployment this one rolled back, when it is a rollback.
    pub rollback_of: Option<String>,
    /// A digest of the spec it was deployed with.
    pub spec_digest: String,
    /// The version of each secret it ran with (never a value); absent when
    /// it used none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secrets: std::collections::BTreeMap<String, u64>,
    /// The exact image it ran (`sha256:…`), resolved from the tag when it
    /// was recorded: a rollback to it runs this very image. Absent for a
    /// process service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// One event: of a deployment, or of the server itself (a spec reload:
/// `deployment` and `service` empty).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Its place among every event the server stored, strictly increasing:
    /// what a stream resumes after (`Last-Event-ID`). 0 from a server that
    /// had no such ids.
    #[serde(default)]
    pub id: u64,
    /// The deployment it belongs to; empty for an event of the server
    /// itself, tied to no deployment (`spec_reloaded` of a reload), and
    /// from an older server.
    #[serde(default)]
    pub deployment: String,
    /// The deployment's environment; for a server event, the environment
    /// it concerns, empty for every one (and from an older server).
    #[serde(default)]
    pub environment: String,
    /// The deployment's service; empty for a server event (it concerns
    /// every service: a `service` filter lets it through) and from an older
    /// server.
    #[serde(default)]
    pub service: String,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// What kind: the event's tag (`created`, `status_changed`,
    /// `weight_changed`, `step_paused`, `instance_restarted`, ...); events
    /// recorded by older versions keep their kind (`rollout`, `analysis`).
    pub kind: String,
    /// In words.
    pub message: String,
    /// The event's fields (`{"weight": 20}`), when it has any.
    pub data: Option<serde_json::Value>,
}

/// `GET /api/v1/events?follow=false`: stored events that pass the query's
/// filter, in id order, and where to resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Oldest first: the first `limit` after the cursor, or without one
    /// the newest `limit`.
    pub events: Vec<Event>,
    /// The id to resume after (`?after=` or `Last-Event-ID`): the last
    /// event's, or the cursor (0 without one) when there is none.
    pub last_id: u64,
    /// Whether more events pass the filter after `last_id` already.
    pub more: bool,
}

/// `hatoba history --output json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Newest first.
    pub deployments: Vec<Deployment>,
}

/// The state of one service in one environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceStatus {
    /// The service.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// The version serving all traffic: the live deployment's once it
    /// serves (see `warm`), else that of the latest succeeded deployment.
    pub current_version: Option<String>,
    /// The deployment that made it serve.
    pub current: Option<Deployment>,
    /// The previous version, still running at weight 0 while the live
    /// deployment serves but is not complete (a blue-green scale-down
    /// delay, a canary's watch): `hatoba rollback` returns to it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmVersion>,
    /// A deployment in progress, when there is one.
    pub live: Option<Deployment>,
    /// Where the live deployment is: its latest traffic change and latest
    /// rollout step, as its events say them (`new version weight 100%;
    /// switching all traffic to the new colour`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_phase: Option<String>,
    /// The live deployment's analysis: the latest measurement of each metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<MeasurementInfo>,
    /// The running instances, when a server of this state directory runs
    /// this service's environment (with readiness, memory and CPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceInfo>,
    /// The current version was promoted past missing evidence: the line
    /// that recorded it (`promoted without evidence by alice: metric
    /// success-rate: ...`). A rollback without `--to` never returns to such
    /// a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_without_evidence: Option<String>,
    /// A problem the running server is recovering from for this service
    /// (a rollout stopped by a history store that cannot be written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A previous version kept warm after the new one took all traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WarmVersion {
    /// The previous version.
    pub version: String,
    /// The deployment that had made it serve, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// When it is due to stop, RFC 3339 UTC, when the rollout says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Milliseconds left until then (0 once due), when the rollout says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
}

/// One analysis measurement (`hatoba analysis DEPLOYMENT`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeasurementInfo {
    /// Its order within the deployment.
    pub seq: u64,
    /// When it was taken (RFC 3339).
    pub at: String,
    /// The analysis run: `background`, `step 2`.
    pub run: String,
    /// The metric.
    pub metric: String,
    /// The value, when there is one.
    pub value: Option<f64>,
    /// `passed`, `failed`, `inconclusive`, `error` or `insufficient`.
    pub verdict: String,
    /// What was measured or why there is no value.
    pub detail: Option<String>,
}

/// `hatoba analysis DEPLOYMENT --output json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AnalysisReport {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The deployment.
    pub deployment: Deployment,
    /// Every measurement, in order.
    pub measurements: Vec<MeasurementInfo>,
}

/// `hatoba status --output json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// One entry per service and environment that has a history.
    pub services: Vec<ServiceStatus>,
}

/// `hatoba backup --output json`: the copy that was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Backup {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// `sqlite` (a `VACUUM INTO` copy of the state directory's database) or
    /// `postgres` (a `pg_dump` archive in its custom format).
    pub backend: String,
    /// The file written.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many deployments it holds (SQLite copies; `null` for a
    /// `pg_dump` archive).
    pub deployments: Option<u64>,
}

/// `hatoba restore FILE --output json`: what was put in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Restore {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The copy restored from.
    pub file: String,
    /// The database it now is (`STATE_DIR/hatoba.db`).
    pub database: String,
    /// How many deployments it holds.
    pub deployments: u64,
    /// Where the database it replaced was moved, if there was one.
    pub previous: Option<String>,
}

/// `POST /api/v1/deployments/{id}/approve`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Who approves; must not be who deployed.
    pub by: String,
}

/// One instance as the server sees it (`GET /api/v1/services/{name}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceInfo {
    /// Its id, e.g. `web-v2-3f9a`.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Where it listens.
    pub addr: String,
    /// Its process id.
    pub pid: Option<u32>,
    /// `running`, or how it ended (`exited with code 1`).
    pub state: String,
    /// Whether the proxy sends it traffic now.
    pub in_route: bool,
    /// The last readiness verdict of the supervisor, when it watches it.
    pub ready: Option<bool>,
    /// The last probe the supervisor ran on it, with its result.
    pub last_probe: Option<String>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// CPU time used, seconds.
    pub cpu_seconds: Option<f64>,
    /// Its log file.
    pub log: Option<String>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Out of the route and draining for a rollout: the connections left,
    /// the time left and what comes after (`draining: 3 connections left,
    /// up to 6s left, then SIGTERM, SIGKILL 30s later`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<String>,
    /// While draining: its requests and long-lived connections (WebSockets,
    /// event streams) still open, which the drain waits for; absent when
    /// the data plane cannot say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_left: Option<u32>,
}

/// One group of the route table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteGroup {
    /// `stable`, `canary` or `preview`.
    pub role: String,
    /// Its version.
    pub version: String,
    /// Its share of the traffic, percent.
    pub weight: u8,
    /// The instances it sends traffic to.
    pub backends: Vec<String>,
}

/// `GET /api/v1/services/{name}`: what runs and how it is routed, now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceDetail {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The service.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// The version that serves (outside a rollout).
    pub serving_version: Option<String>,
    /// The deployment in progress.
    pub live_deployment: Option<String>,
    /// Every instance the runtime knows for the service.
    pub instances: Vec<InstanceInfo>,
    /// The route table the data plane serves.
    pub route: Vec<RouteGroup>,
    /// Restarts in the last five minutes.
    pub recent_restarts: usize,
    /// A problem the service is recovering from, when there is one (a
    /// rollout stopped by a history store that cannot be written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Whether the restarts amount to a crash loop.
    pub crash_loop: bool,
    /// When the next restart may happen, if one waits (RFC 3339).
    pub next_restart: Option<String>,
}

/// One service of the running environment, in brief.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceSummary {
    /// The service.
    pub service: String,
    /// Where its users' traffic arrives (the spec's `route.listen`).
    pub listen: String,
    /// The version that serves (outside a rollout).
    pub serving_version: Option<String>,
    /// The deployment in progress.
    pub live_deployment: Option<String>,
}

/// `GET /api/v1/services`: the services the server runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceList {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The environment.
    pub environment: String,
    /// By name.
    pub services: Vec<ServiceSummary>,
}

/// One environment a server runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvironmentInfo {
    /// Its name (`development` when the spec declares none).
    pub name: String,
    /// Whether a deployment to it waits for `hatoba approve`.
    pub require_approval: bool,
    /// Its services, by name.
    pub services: Vec<ServiceSummary>,
}

/// `GET /api/v1/environments`: the environments the server runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvironmentList {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// In the order `hatoba up --env` named them.
    pub environments: Vec<EnvironmentInfo>,
}

/// One problem found in a spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpecDiagnostic {
    /// `error` or `warning`.
    pub severity: String,
    /// The file.
    pub file: String,
    /// 1-based line, when the problem has a place.
    pub line: Option<usize>,
    /// 1-based column, when the problem has a place.
    pub column: Option<usize>,
    /// The field path, e.g. `services.web.replicas`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// `hatoba validate --output json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validation {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The file checked.
    pub file: String,
    /// True when there is no error.
    pub valid: bool,
    /// The services the spec declares (empty when invalid).
    pub services: Vec<String>,
    /// The environments it declares (empty when invalid).
    pub environments: Vec<String>,
    /// Everything found.
    pub diagnostics: Vec<SpecDiagnostic>,
}

/// What `--output json` prints on stderr when a command fails. (The API's
/// error answers are [`ApiError`].)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The process exit code that goes with it.
    pub exit_code: u8,
    /// What went wrong.
    pub error: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// `POST /api/v1/deployments`: deploy a version of a service. Requests are read
/// strictly: an unknown field is refused, not ignored (a misspelt `vars`
/// must not deploy without its values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The service.
    pub service: String,
    /// The environment; the server's when absent.
    pub environment: Option<String>,
    /// The version.
    pub version: String,
    /// Extra `${NAME}` values.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    /// Who asks.
    pub deployed_by: Option<String>,
}

/// `POST /api/v1/services/{name}/rollback`: return to the previous (or a named)
/// succeeded version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to return to; when absent, the previous succeeded one
    /// that was promoted on evidence.
    pub to: Option<String>,
    /// Who asks, for the history.
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /api/v1/services/{name}/promote` (and `promote-full`): who promotes,
/// recorded when the promotion goes past missing evidence. The body may be
/// absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Who asks, for the history.
    #[serde(default)]
    pub by: Option<String>,
}

/// `GET /api/v1/deployments/{id}`: a deployment and its events so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentDetail {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The deployment.
    pub deployment: Deployment,
    /// Its events, oldest first.
    pub events: Vec<Event>,
}

/// `PUT /api/v1/secrets/{name}`: store a new version of a secret
/// (`hatoba secret set` and `rotate`). The value travels in this request
/// only, over loopback with the token; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretSetRequest {
    /// The value.
    pub value: String,
    /// The environment; the server's when absent.
    #[serde(default)]
    pub environment: Option<String>,
    /// Who stores it, for the audit log.
    #[serde(default)]
    pub by: Option<String>,
    /// Also redeploy the services that use it (`hatoba secret rotate`).
    #[serde(default)]
    pub rotate: bool,
}

impl std::fmt::Debug for SecretSetRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSetRequest")
            .field("value", &"‹secret›")
            .field("environment", &self.environment)
            .field("by", &self.by)
            .field("rotate", &self.rotate)
            .finish()
    }
}

/// One stored version of a secret, without its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretVersionInfo {
    /// From 1.
    pub version: u64,
    /// When it was stored, RFC 3339 UTC.
    pub created_at: String,
    /// Who stored it.
    pub created_by: String,
}

/// A secret of an environment: its versions, never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// Whether the spec declares it for this environment.
    pub declared: bool,
    /// The services whose spec uses it.
    pub used_by: Vec<String>,
    /// Its stored versions, oldest first (none: not set yet).
    pub versions: Vec<SecretVersionInfo>,
}

/// `GET /api/v1/secrets`: the environment's secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretList {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The environment.
    pub environment: String,
    /// Declared or stored, by name.
    pub secrets: Vec<SecretInfo>,
}

/// What `hatoba secret set|rotate|rm` changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretChange {
    /// The secret.
    pub name: String,
    /// The environment.
    pub environment: String,
    /// The version stored (set, rotate).
    pub version: Option<u64>,
    /// How many versions were removed (rm).
    pub removed: Option<u64>,
    /// Deployments started to bring the new version to its services (rotate).
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// Services that use it and get it at their next deployment (not
    /// deployed yet, a deployment in progress, or a plain `set`).
    #[serde(default)]
    pub next_deploy: Vec<String>,
}

/// `GET /api/v1/services/{name}/diagnosis` (`hatoba diagnose`): what runs
/// for a service, its recent history and the latest deployment's events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Diagnosis {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// What runs and how it is routed, now.
    pub service: ServiceDetail,
    /// Its latest deployments in the server's environment, newest first.
    pub history: Vec<Deployment>,
    /// The newest deployment's events, oldest first.
    pub events: Vec<Event>,
    /// The version that serves was promoted past missing evidence:
    /// `VERSION: promoted without evidence by ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_without_evidence: Option<String>,
    /// The last lines of each running instance's output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<InstanceLog>,
    /// What was removed from the engine for its latest deployments
    /// (`container_removed`, `image_pruned` events), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Event>,
}

/// Lines of one instance's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceLog {
    /// The instance.
    pub instance: String,
    /// Its version.
    pub version: String,
    /// Whole lines, oldest first (the last one may be partial when it is
    /// the end of a tail).
    pub lines: Vec<String>,
    /// Where to read on from (`after=` of the next request): a byte offset
    /// in the instance's log, or for a container the time of its last line
    /// (nanoseconds since 1970); absent when nothing more will come (the
    /// container is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The file its output goes to, on the server's machine, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// One line of a followed output (`GET /api/v1/services/{name}/logs`
/// with `follow=true`): the `data` of each `line` message of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// The instance.
    pub instance: String,
    /// The line, without its end.
    pub line: String,
    /// Written to stderr (else stdout).
    #[serde(default)]
    pub stderr: bool,
    /// Where to read on from after it (`after=`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// `GET /api/v1/services/{name}/logs` (`hatoba logs`): the output of a
/// service's running instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Logs {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The service.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// One entry per running instance (or the one asked for), by id.
    pub instances: Vec<InstanceLog>,
}

/// What `hatoba up` writes into the state directory so other commands find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerInfo {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The API's address, `127.0.0.1:PORT`.
    pub api: String,
    /// The admin listener (Prometheus `/metrics`).
    pub admin: String,
    /// The server's process id.
    pub pid: u32,
    /// The environment it manages (several: their names joined by `,`).
    pub environment: String,
    /// Every environment it manages, by name (absent from files written
    /// before one server could run several).
    #[serde(default)]
    pub environments: Vec<String>,
}

/// What kind of failure an API answer is: a decision the client acts on.
/// Each kind has one HTTP status and one CLI exit code
/// ([`ErrorKind::http_status`], [`ErrorKind::exit_code`]); a client maps
/// the kind, never the HTTP number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is wrong (a malformed id, an unknown field, a value out
    /// of range): 400, exit 2.
    BadInput,
    /// No token, or a wrong one: 401, exit 5 (refused, as `Forbidden`).
    Unauthorized,
    /// Understood and refused for who asks (a deployer approving their own
    /// deployment): 403, exit 5.
    Forbidden,
    /// No such service, deployment, secret, version or endpoint: 404, exit 4.
    NotFound,
    /// The endpoint exists but not with this method: 405, exit 2.
    MethodNotAllowed,
    /// The state forbids it now (a deployment in progress, nothing to roll
    /// back to): 409, exit 5.
    Conflict,
    /// The request body is larger than the API reads: 413, exit 2.
    TooLarge,
    /// The operation was tried and failed (a variable without a value, a
    /// secret that cannot be opened): 422, exit 1.
    Failed,
    /// Something the server needs is not available now (the history store
    /// cannot be read or written): 503, exit 1.
    Unavailable,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::BadInput,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Conflict,
        ErrorKind::TooLarge,
        ErrorKind::Failed,
        ErrorKind::Unavailable,
    ];

    /// The HTTP status that carries it: the one mapping of the API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadInput => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Failed => 422,
            ErrorKind::Unavailable => 503,
        }
    }

    /// The CLI's exit code for it (the documented table of
    /// `crates/hatoba/src/exit.rs`): the one mapping of every client.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::BadInput | ErrorKind::MethodNotAllowed | ErrorKind::TooLarge => 2,
            ErrorKind::NotFound => 4,
            ErrorKind::Unauthorized | ErrorKind::Forbidden | ErrorKind::Conflict => 5,
            ErrorKind::Failed | ErrorKind::Unavailable => 1,
        }
    }

    /// Its name on the wire (`bad_input`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad_input",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Failed => "failed",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

/// The body of every error answer of the API, whatever refused the request
/// (an operation, the token check, the router, the body reader).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// What kind of failure: decides the HTTP status and the exit code.
    pub kind: ErrorKind,
    /// What went wrong, in words.
    pub message: String,
    /// What to do about it, when there is something to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The request field at fault, when it is one field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /api/v1/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `POST /api/v1/deployments/{id}/approve`: the approval was passed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    /// The deployment approved.
    pub deployment: String,
    /// Who approved it.
    pub approved_by: String,
}

/// `POST /api/v1/services/{name}/promote|promote-full|abort`: the command
/// was passed to the deployment in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperatorAction {
    /// The deployment in progress (empty while it is being recorded).
    pub deployment: String,
    /// `promote`, `promote-full` or `abort`.
    pub action: String,
}

/// `POST /api/v1/reload`: who asks, for the audit log. The body may be
/// absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// Who asks.
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /api/v1/reload`: the spec file was read again and is now the
/// spec of the next operations (deployments in progress keep theirs).
/// Services are named `SERVICE`, or `ENV/SERVICE` when the server runs
/// several environments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpecReload {
    /// The spec file read.
    pub file: String,
    /// Its digest (SHA-256, hex), recorded with every deployment from now on.
    pub digest: String,
    /// The digest of the spec it replaced (the same when nothing changed).
    pub previous_digest: String,
    /// Services added: listening, nothing deployed until `hatoba deploy`.
    pub added: Vec<String>,
    /// Services whose spec changed: used from their next deployment.
    pub changed: Vec<String>,
    /// Services removed (none of them ran): their listeners are closed.
    pub removed: Vec<String>,
    /// Listeners moved, as `SERVICE: OLD -> NEW` (the new address listens
    /// before the old one stops).
    pub rebound: Vec<String>,
    /// Deployments in progress, which keep the spec they started with.
    pub in_progress: Vec<String>,
    /// The spec's warnings, rendered (file:line:col), if any.
    pub warnings: Option<String>,
}

/// `DELETE /api/v1/secrets/{name}`: who removes it, for the audit log. The
/// body may be absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretRemoveRequest {
    /// Who asks.
    #[serde(default)]
    pub by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_its_status_and_exit_code() {
        let table: Vec<(&str, u16, u8)> = ErrorKind::ALL
            .iter()
            .map(|k| (k.as_str(), k.http_status(), k.exit_code()))
            .collect();
        assert_eq!(
            table,
            [
                ("bad_input", 400, 2),
                ("unauthorized", 401, 5),
                ("forbidden", 403, 5),
                ("not_found", 404, 4),
                ("method_not_allowed", 405, 2),
                ("conflict", 409, 5),
                ("too_large", 413, 2),
                ("failed", 422, 1),
                ("unavailable", 503, 1),
            ]
        );
        for k in ErrorKind::ALL {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        let e = ApiError {
            kind: ErrorKind::NotFound,
            message: "no deployment d-1".to_owned(),
            hint: None,
            field: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"kind":"not_found","message":"no deployment d-1"}"#
        );
    }

    #[test]
    fn field_names_are_the_contract() {
        let s = Status {
            api_version: API_VERSION.to_owned(),
            services: vec![ServiceStatus {
                analysis: Vec::new(),
                instances: Vec::new(),
                service: "web".to_owned(),
                environment: "production".to_owned(),
                current_version: Some("v2".to_owned()),
                current: None,
                warm: None,
                live: None,
                live_phase: None,
                current_without_evidence: None,
                problem: None,
            }],
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"api_version":"hatoba/v1","services":[{"service":"web","environment":"production","current_version":"v2","current":null,"live":null}]}"#
        );
    }

    /// The lifecycle's fields are added ones: absent when empty, so older
    /// readers and golden outputs see the same JSON as before.
    #[test]
    fn serving_and_warm_fields_are_added_only() {
        let mut s = ServiceStatus {
            analysis: Vec::new(),
            instances: Vec::new(),
            service: "web".to_owned(),
            environment: "production".to_owned(),
            current_version: Some("v2".to_owned()),
            current: None,
            warm: None,
            live: None,
            live_phase: None,
            current_without_evidence: None,
            problem: None,
        };
        assert!(!serde_json::to_string(&s).unwrap().contains("warm"));
        s.warm = Some(WarmVersion {
            version: "v1".to_owned(),
            deployment: None,
            until: Some("2026-12-06T10:08:19.105Z".to_owned()),
            remaining_ms: Some(251_000),
        });
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            text.contains(
                r#""warm":{"version":"v1","until":"2026-12-06T10:08:19.105Z","remaining_ms":251000}"#
            ),
            "{text}"
        );
        let back: ServiceStatus = serde_json::from_str(
            r#"{"service":"web","environment":"production","current_version":"v2","current":null,"live":null}"#,
        )
        .unwrap();
        assert_eq!(back.warm, None);
    }
}
