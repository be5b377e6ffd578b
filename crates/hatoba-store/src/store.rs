//! The `Store` trait: everything the rest of Hatoba may ask of the history.
//!
//! It is object-safe (through `async_trait`) so the server can hold an
//! `Arc<dyn Store>`. It says what is recorded and which rules hold; it must
//! not leak SQL, pools or driver types.

use async_trait::async_trait;
use hatoba_core::{DeploymentId, DeploymentStatus, EnvName, Millis, ServiceName};

use crate::{
    AuditEntry, Deployment, Event, EventFilter, HistoryFilter, Measurement, NewAudit,
    NewDeployment, NewEvent, NewMeasurement, SealedSecret, SecretVersion, StoreError,
};

/// The deployment history: deployments, their timelines and measurements,
/// the audit log.
///
/// Every write that changes a deployment also appends its event in the same
/// transaction, so a crash never leaves one without the other. Times are
/// supplied by the caller; the store reads no clock.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Records a new `pending` deployment and its `created` event.
    ///
    /// Fails with [`StoreError::Conflict`] naming the live deployment when
    /// the service already has one pending, in progress or paused in that
    /// environment, and with [`StoreError::NotFound`] when `rollback_of`
    /// names no deployment.
    async fn create_deployment(&self, new: NewDeployment) -> Result<Deployment, StoreError>;

    /// Moves a deployment to `to`, recording `reason` and, for a terminal
    /// status, `finished_at`, and appends a `status_changed` event
    /// (`in_progress -> rolled_back: readiness deadline exceeded`).
    ///
    /// Refuses to move a finished deployment ([`StoreError::Terminal`]).
    async fn transition(
        &self,
        id: &DeploymentId,
        to: DeploymentStatus,
        reason: Option<String>,
        at: Millis,
    ) -> Result<Deployment, StoreError>;

    /// Records that a live deployment's version serves all traffic from
    /// `at` (`serving_at`), with a [`event_kind::SERVING`](crate::event_kind::SERVING)
    /// event carrying `message` and `data`, in one transaction. The
    /// deployment is not complete yet: that is [`Store::transition`] to a
    /// terminal status (`finished_at`).
    ///
    /// Idempotent: a deployment that already serves keeps its first time
    /// and gets no second event (a controller resumed after a crash may
    /// execute the command again). Refuses a finished deployment
    /// ([`StoreError::Terminal`]).
    async fn mark_serving(
        &self,
        id: &DeploymentId,
        at: Millis,
        message: String,
        data: Option<serde_json::Value>,
    ) -> Result<Deployment, StoreError>;

    /// Appends an event to a deployment's timeline (finished ones included).
    async fn append_event(&self, id: &DeploymentId, event: NewEvent) -> Result<Event, StoreError>;

    /// Appends an event of the server itself, tied to no deployment (a
    /// spec reload that changes what the next deployment does), concerning
    /// `environment` or, for `None`, every environment. It takes its id
    /// from the same counter as the deployments' events, so
    /// [`Store::events_after`] hands both out as one stream.
    async fn append_server_event(
        &self,
        environment: Option<&EnvName>,
        event: NewEvent,
    ) -> Result<Event, StoreError>;

    /// The deployment with this id, if any.
    async fn deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError>;

    /// A deployment's timeline, oldest first ([`StoreError::NotFound`] for
    /// an unknown id).
    async fn events(&self, id: &DeploymentId) -> Result<Vec<Event>, StoreError>;

    /// At most `limit` events (the deployments' and the server's) with an
    /// id above `after` that pass `filter`, in id order: what a reader that has seen every event up to `after`
    /// has not seen yet. Ids are taken in commit order, so a reader that
    /// resumes after the last id it got misses nothing and sees nothing
    /// twice, across restarts too.
    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// The newest `limit` events with an id below `before` that pass
    /// `filter`, in id order: the tail of the stream (`u64::MAX`: of all
    /// of it), for a reader that starts without a cursor.
    async fn events_before(
        &self,
        before: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// The id of the newest event stored (0 when there is none).
    async fn last_event_id(&self) -> Result<u64, StoreError>;

    /// Records one analysis measurement of a deployment (finished ones
    /// included) and returns it with its seq: the deployment's
    /// measurements are numbered from 1 without gaps, also under concurrent
    /// writers. A value that is NaN or infinite is recorded as no value.
    /// [`StoreError::NotFound`] for an unknown deployment.
    async fn record_measurement(
        &self,
        id: &DeploymentId,
        measurement: NewMeasurement,
    ) -> Result<Measurement, StoreError>;

    /// A deployment's measurements in the order they were recorded
    /// ([`StoreError::NotFound`] for an unknown id).
    async fn measurements(&self, id: &DeploymentId) -> Result<Vec<Measurement>, StoreError>;

    /// Deployments matching the filter, newest first.
    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<Deployment>, StoreError>;

    /// What runs in an environment: its latest succeeded deployment (by
    /// finish time, then id). A query over the history, never a cached field.
    async fn current(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<Deployment>, StoreError>;

    /// [`Store::current`] for every service and environment that has a
    /// succeeded deployment, ordered by service then environment.
    async fn current_all(&self) -> Result<Vec<Deployment>, StoreError>;

    /// The deployment pending, in progress or paused in an environment (there
    /// is at most one).
    async fn live(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<Deployment>, StoreError>;

    /// Records who did what, and how it ended.
    async fn record_audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError>;

    /// The newest `limit` audit entries, newest first.
    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// Replaces the controller's working state for one service in one
    /// environment (opaque JSON: the store does not read it), durably, so
    /// the controller can write it before acting and resume from it.
    async fn save_controller_state(
        &self,
        service: &ServiceName,
        environment: &EnvName,
        state: &str,
        at: Millis,
    ) -> Result<(), StoreError>;

    /// The controller's last saved working state for a service, if any.
    async fn controller_state(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<String>, StoreError>;

    /// Stores one version of a secret, sealed by the caller. Its version
    /// must be new for its environment and name (the caller takes the
    /// newest listed plus one); a version that exists is refused with
    /// [`StoreError::SecretVersionTaken`] and nothing changes.
    async fn put_secret(&self, secret: SealedSecret) -> Result<(), StoreError>;

    /// Every stored version of every secret of an environment (all
    /// environments for `None`), without the sealed values, ordered by
    /// environment, name and version.
    async fn secret_versions(
        &self,
        environment: Option<&EnvName>,
    ) -> Result<Vec<SecretVersion>, StoreError>;

    /// One sealed version of a secret, if stored.
    async fn secret(
        &self,
        environment: &EnvName,
        name: &str,
        version: u64,
    ) -> Result<Option<SealedSecret>, StoreError>;

    /// Removes every version of a secret in an environment; returns how
    /// many there were.
    async fn remove_secret(&self, environment: &EnvName, name: &str) -> Result<u64, StoreError>;
}
