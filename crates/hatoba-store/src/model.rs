//! The rows: what the store records and hands back, and what callers pass in:
//! deployments, their events, analysis measurements and the audit log.
//!
//! These are the only definitions of the stored data (invariant 4). They are
//! deliberately not `Serialize`: the JSON wire types live in `hatoba-api`, and
//! conversions to them are explicit functions there.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use hatoba_core::{DeploymentId, DeploymentStatus, EnvName, Millis, ServiceName, Version};

/// Event kinds the store writes itself, and two that readers look for.
/// The controller's kinds are the tags of [`hatoba_core::Event`].
pub mod event_kind {
    /// Written with every new deployment, in the same transaction.
    pub const CREATED: &str = "created";
    /// Written with every status change, in the same transaction.
    pub const STATUS_CHANGED: &str = "status_changed";
    /// A traffic weight was applied (written by the controller).
    pub const WEIGHT_CHANGED: &str = "weight_changed";
    /// A person promoted a new version past missing evidence (written by
    /// the controller, `data`: `{"by": ..., "missing": ...}`). A rollback
    /// without `--to` never returns to a version whose latest judged
    /// deployment has one.
    pub const PROMOTED_WITHOUT_EVIDENCE: &str = "promoted_without_evidence";
    /// The new version began to serve all traffic (written by
    /// [`Store::mark_serving`](crate::Store::mark_serving) with the
    /// caller's message and data, e.g. `{"warm_until": ms}`).
    pub const SERVING: &str = "serving";
}

/// A deployment as recorded: one attempt to bring a version of a service to
/// an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Made by the store: `d-` + time + randomness, sorts by creation.
    pub id: DeploymentId,
    /// The service deployed.
    pub service: ServiceName,
    /// The environment deployed to.
    pub environment: EnvName,
    /// The version deployed.
    pub version: Version,
    /// The commit the version was built from, when known.
    pub commit_sha: Option<String>,
    /// The rollout strategy's name (`rolling`, `blue_green`, `canary`, ...).
    pub strategy: String,
    /// Where the deployment is in its life.
    pub status: DeploymentStatus,
    /// Why it is in its status, as given with the latest transition.
    pub reason: Option<String>,
    /// Who asked for it.
    pub deployed_by: String,
    /// When it was created.
    pub started_at: Millis,
    /// When its version began to serve all traffic (see
    /// [`Store::mark_serving`](crate::Store::mark_serving)); before it is
    /// complete when the previous version stays warm a while.
    pub serving_at: Option<Millis>,
    /// When it reached a terminal status (for a success: complete, the
    /// previous version stopped).
    pub finished_at: Option<Millis>,
    /// The deployment this one rolls back, if it is a rollback.
    pub rollback_of: Option<DeploymentId>,
    /// Digest of the spec the deployment was made from.
    pub spec_digest: String,
    /// The variables it ran with (the environment's and `--set`).
    pub vars: BTreeMap<String, String>,
    /// The version of each secret it ran with (never a value).
    pub secrets: BTreeMap<String, u64>,
    /// The exact artifact it ran (a Docker image id, `sha256:…`), resolved
    /// from the tag when it was recorded; `None` for a process.
    pub image_id: Option<String>,
}

/// What the caller supplies to create a deployment; the store adds the id,
/// the status (`pending`) and the `created` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    /// The service to deploy.
    pub service: ServiceName,
    /// The environment to deploy to.
    pub environment: EnvName,
    /// The version to deploy.
    pub version: Version,
    /// The commit the version was built from, when known.
    pub commit_sha: Option<String>,
    /// The rollout strategy's name.
    pub strategy: String,
    /// Who asks for it.
    pub deployed_by: String,
    /// The deployment this one rolls back; it must exist.
    pub rollback_of: Option<DeploymentId>,
    /// Digest of the spec.
    pub spec_digest: String,
    /// The variables it runs with, kept so that a rollback to it runs it the same way.
    pub vars: BTreeMap<String, String>,
    /// The version of each secret it runs with (never a value).
    pub secrets: BTreeMap<String, u64>,
    /// The exact artifact it runs (a Docker image id), so that a rollback
    /// to it runs the very same one.
    pub image_id: Option<String>,
    /// Now, by the caller's clock.
    pub at: Millis,
}

/// One entry in a deployment's timeline, or an event of the server itself
/// (a spec reload), tied to no deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Made by the store: the event's place among every event stored,
    /// the server's too, from 1, strictly increasing in commit order (a
    /// reader resumes after the last one it has seen:
    /// [`Store::events_after`](crate::Store::events_after)).
    pub id: u64,
    /// The deployment it belongs to; `None` for a server event.
    pub deployment_id: Option<DeploymentId>,
    /// The deployment's service; `None` for a server event.
    pub service: Option<ServiceName>,
    /// The deployment's environment; for a server event, the environment
    /// it concerns, `None` for all of them.
    pub environment: Option<EnvName>,
    /// Its position in the deployment's timeline, from 1, without gaps; 0
    /// for a server event.
    pub seq: u64,
    /// When it happened.
    pub at: Millis,
    /// What kind of event: the tag of a [`hatoba_core::Event`] (older
    /// rows: free text).
    pub kind: String,
    /// A short human-readable line.
    pub message: String,
    /// Details for machines: the event's fields.
    pub data: Option<serde_json::Value>,
}

impl Event {
    /// The typed event this row holds ([`hatoba_core::Event::Text`] for a
    /// row written as text by an older Hatoba).
    pub fn typed(&self) -> hatoba_core::Event {
        hatoba_core::Event::from_stored(&self.kind, &self.message, self.data.as_ref())
    }

    /// Whether it is an event of the server, tied to no deployment.
    pub fn is_server_event(&self) -> bool {
        self.deployment_id.is_none()
    }
}

/// Which events [`Store::events_after`](crate::Store::events_after) returns;
/// each field set narrows it. A server event passes a filter by
/// environment (unless it concerns another one) or by service (it
/// concerns every service), never one by deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this environment's.
    pub environment: Option<EnvName>,
    /// Only this service's.
    pub service: Option<ServiceName>,
    /// Only this deployment's.
    pub deployment: Option<DeploymentId>,
}

impl EventFilter {
    /// Whether `e` passes the filter.
    pub fn matches(&self, e: &Event) -> bool {
        self.environment
            .as_ref()
            .is_none_or(|x| e.environment.as_ref().is_none_or(|y| y == x))
            && self
                .service
                .as_ref()
                .is_none_or(|x| e.service.as_ref().is_none_or(|y| y == x))
            && self
                .deployment
                .as_ref()
                .is_none_or(|x| e.deployment_id.as_ref() == Some(x))
    }
}

/// What the caller supplies to append an event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// When it happened.
    pub at: Millis,
    /// What kind of event.
    pub kind: String,
    /// A short human-readable line.
    pub message: String,
    /// Details for machines.
    pub data: Option<serde_json::Value>,
}

impl NewEvent {
    /// A typed event as stored: its tag, its words (naming `service` in the
    /// commands they suggest) and its fields.
    pub fn of(at: Millis, event: &hatoba_core::Event, service: Option<&str>) -> NewEvent {
        NewEvent {
            at,
            kind: event.kind(),
            message: event.message(service),
            data: event.data(),
        }
    }
}

/// Which deployments [`Store::history`](crate::Store::history) returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only this service, or all.
    pub service: Option<ServiceName>,
    /// Only this environment, or all.
    pub environment: Option<EnvName>,
    /// At most this many, newest first (0 gives none).
    pub limit: u32,
}

impl HistoryFilter {
    /// The newest `limit` deployments of every service and environment.
    pub fn all(limit: u32) -> HistoryFilter {
        HistoryFilter {
            service: None,
            environment: None,
            limit,
        }
    }
}

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    /// Allowed and done.
    Ok,
    /// Refused by authorisation.
    Denied,
    /// Allowed but failed.
    Error,
}

impl AuditOutcome {
    /// Every outcome.
    pub const ALL: [AuditOutcome; 3] =
        [AuditOutcome::Ok, AuditOutcome::Denied, AuditOutcome::Error];

    /// The stored name: `ok`, `denied` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Error => "error",
        }
    }

    /// The outcome with this stored name.
    pub fn from_name(name: &str) -> Option<AuditOutcome> {
        AuditOutcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// One entry of the audit log: who did what to what, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Made by the store: `a-` + time + randomness, sorts by time.
    pub id: String,
    /// When it happened.
    pub at: Millis,
    /// Who acted (a user or token name).
    pub actor: String,
    /// What they did (`deploy`, `abort`, `promote`, ...).
    pub action: String,
    /// What they did it to (`web/production`, a deployment id, ...).
    pub target: String,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// Anything else worth keeping.
    pub detail: Option<String>,
}

/// What the caller supplies to record an audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// When it happened.
    pub at: Millis,
    /// Who acted.
    pub actor: String,
    /// What they did.
    pub action: String,
    /// What they did it to.
    pub target: String,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// Anything else worth keeping.
    pub detail: Option<String>,
}

/// How one analysis measurement was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeasurementVerdict {
    /// The value met the metric's success condition.
    Passed,
    /// The value met the metric's failure condition.
    Failed,
    /// The value met neither condition, or the judge could not tell.
    Inconclusive,
    /// The provider failed (down, timeout, garbage).
    Error,
    /// Too little data to judge; not counted as a measurement by the run.
    Insufficient,
}

impl MeasurementVerdict {
    /// Every verdict.
    pub const ALL: [MeasurementVerdict; 5] = [
        MeasurementVerdict::Passed,
        MeasurementVerdict::Failed,
        MeasurementVerdict::Inconclusive,
        MeasurementVerdict::Error,
        MeasurementVerdict::Insufficient,
    ];

    /// The stored name: `passed`, `failed`, `inconclusive`, `error` or
    /// `insufficient`.
    pub fn as_str(self) -> &'static str {
        match self {
            MeasurementVerdict::Passed => "passed",
            MeasurementVerdict::Failed => "failed",
            MeasurementVerdict::Inconclusive => "inconclusive",
            MeasurementVerdict::Error => "error",
            MeasurementVerdict::Insufficient => "insufficient",
        }
    }
}

impl fmt::Display for MeasurementVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not a measurement verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{found}` is not a measurement verdict (expected one of: passed, failed, inconclusive, error, insufficient)"
)]
pub struct ParseMeasurementVerdictError {
    /// The rejected text.
    pub found: String,
}

impl FromStr for MeasurementVerdict {
    type Err = ParseMeasurementVerdictError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MeasurementVerdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| ParseMeasurementVerdictError {
                found: s.to_owned(),
            })
    }
}

/// One measurement an analysis run took for a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The deployment it belongs to.
    pub deployment_id: DeploymentId,
    /// Its position among the deployment's measurements, from 1, without
    /// gaps.
    pub seq: u64,
    /// When it was taken.
    pub at: Millis,
    /// Which analysis run took it (`background`, `step 2`, ...).
    pub run: String,
    /// The metric's name.
    pub metric: String,
    /// The measured number, when there is one (always finite; kept with
    /// full precision).
    pub value: Option<f64>,
    /// How it was judged.
    pub verdict: MeasurementVerdict,
    /// Why, in words (the provider's error, what data is missing, ...).
    pub detail: Option<String>,
}

/// What the caller supplies to record a measurement; the store adds the
/// deployment and the seq.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMeasurement {
    /// When it was taken.
    pub at: Millis,
    /// Which analysis run took it (`background`, `step 2`, ...).
    pub run: String,
    /// The metric's name.
    pub metric: String,
    /// The measured number, when there is one. NaN and infinities are not
    /// numbers the store keeps: they are recorded as no value.
    pub value: Option<f64>,
    /// How it was judged.
    pub verdict: MeasurementVerdict,
    /// Why, in words.
    pub detail: Option<String>,
}

/// One version of a secret as stored: sealed by the server, which alone
/// holds the key. The store never sees a plain value.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The environment it is for.
    pub environment: EnvName,
    /// Its name (a variable name).
    pub name: String,
    /// From 1, one more with each `set` or `rotate`.
    pub version: u64,
    /// A digest naming the key it was sealed with (not the key).
    pub key_id: String,
    /// The nonce of its encryption.
    pub nonce: Vec<u8>,
    /// The ciphertext with its authentication tag.
    pub ciphertext: Vec<u8>,
    /// When it was stored.
    pub created_at: Millis,
    /// Who stored it.
    pub created_by: String,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("environment", &self.environment)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// What is known of a secret's version without its value: for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    /// The environment it is for.
    pub environment: EnvName,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// When it was stored.
    pub created_at: Millis,
    /// Who stored it.
    pub created_by: String,
}
