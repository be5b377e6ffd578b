//! `SqlStore`: the one implementation of [`Store`], the same SQL over
//! SQLite and PostgreSQL through sqlx's `Any` driver.
//!
//! Rules kept here: every write that touches a deployment runs in one
//! transaction with its event; write transactions on SQLite begin with
//! `BEGIN IMMEDIATE` so concurrent writers queue on the busy timeout instead
//! of failing on a lock upgrade; placeholders are `$N` (never
//! `QueryBuilder::push_bind`, which emits `?` under `Any`); only TEXT and
//! BIGINT cross the driver. This file must not read a clock.
//!
//! Over 800 lines: every query of the `Store` trait beside the SQL text it
//! runs, so a statement and its binds are read together. The next split is
//! by table (deployments and events, controller state, secrets).

use async_trait::async_trait;
use hatoba_core::{DeploymentId, DeploymentStatus, EnvName, Millis, ServiceName};
use sqlx::any::AnyRow;
use sqlx::error::ErrorKind;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::id::{MAX_MILLIS, new_id};
use crate::open::Backend;
use crate::{
    AuditEntry, AuditOutcome, Deployment, Event, EventFilter, HistoryFilter, Measurement, NewAudit,
    NewDeployment, NewEvent, NewMeasurement, SealedSecret, SecretVersion, Store, StoreError,
    event_kind,
};

/// The history store over an SQLite file or a PostgreSQL database.
///
/// Open one with [`SqlStore::open_sqlite`] or [`SqlStore::connect_postgres`];
/// clones share the connection pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) location: String,
}

macro_rules! deployment_columns {
    () => {
        "id, service, environment, version, commit_sha, strategy, status, reason, \
         deployed_by, started_at, serving_at, finished_at, rollback_of, spec_digest, vars, \
         secrets, image_id"
    };
}

macro_rules! live_statuses {
    () => {
        "('pending', 'in_progress', 'paused')"
    };
}

const SELECT_DEPLOYMENT: &str = concat!(
    "SELECT ",
    deployment_columns!(),
    " FROM deployments WHERE id = $1"
);

const SELECT_LIVE: &str = concat!(
    "SELECT ",
    deployment_columns!(),
    " FROM deployments WHERE service = $1 AND environment = $2 AND status IN ",
    live_statuses!()
);

const SELECT_CURRENT: &str = concat!(
    "SELECT ",
    deployment_columns!(),
    " FROM deployments WHERE service = $1 AND environment = $2 AND status = 'succeeded' \
     ORDER BY finished_at DESC, id DESC LIMIT 1"
);

const SELECT_CURRENT_ALL: &str = concat!(
    "SELECT ",
    deployment_columns!(),
    " FROM (SELECT ",
    deployment_columns!(),
    ", ROW_NUMBER() OVER (PARTITION BY service, environment \
       ORDER BY finished_at DESC, id DESC) AS newest \
     FROM deployments WHERE status = 'succeeded') AS succeeded \
     WHERE newest = 1 ORDER BY service, environment"
);

const INSERT_DEPLOYMENT: &str = "INSERT INTO deployments \
     (id, service, environment, version, commit_sha, strategy, status, reason, deployed_by, \
      started_at, finished_at, rollback_of, spec_digest, vars, secrets, image_id, last_event_seq) \
     VALUES ($1, $2, $3, $4, $5, $6, 'pending', NULL, $7, $8, NULL, $9, $10, $11, $12, $13, 1)";

const INSERT_EVENT: &str = "INSERT INTO deployment_events \
     (deployment_id, seq, at, kind, message, data, event_id) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Takes the next global event id: the first write of every transaction
/// that adds an event. On PostgreSQL the counter row stays locked until the
/// transaction ends, so ids are handed out in commit order (migration 0006).
const BUMP_EVENT_ID: &str = "UPDATE event_counter SET last_event_id = last_event_id + 1 \
     WHERE name = 'events' RETURNING last_event_id";

/// Takes the next event seq and, on PostgreSQL, the row lock that makes the
/// rest of the transaction see the deployment's latest status.
const BUMP_EVENT_SEQ: &str = "UPDATE deployments SET last_event_seq = last_event_seq + 1 \
     WHERE id = $1 RETURNING last_event_seq, status, service, environment";

macro_rules! event_select {
    () => {
        "SELECT e.event_id, e.deployment_id, e.seq, e.at, e.kind, e.message, e.data, \
         d.service, d.environment \
         FROM deployment_events e JOIN deployments d ON d.id = e.deployment_id "
    };
}

const SELECT_EVENTS_OF: &str =
    concat!(event_select!(), "WHERE e.deployment_id = $1 ORDER BY e.seq");

/// Every event, the deployments' and the server's (migration 0009), as one
/// stream: both tables take their ids from `event_counter`. A server event
/// has no deployment, service or seq (0), and NULL for an environment when
/// it concerns all of them; it passes a filter by environment or service
/// (it concerns every service) but never one by deployment.
macro_rules! stream_select {
    ($cursor:literal, $order:literal) => {
        concat!(
            "SELECT event_id, deployment_id, seq, at, kind, message, data, service, environment \
             FROM (SELECT e.event_id, e.deployment_id, e.seq, e.at, e.kind, e.message, e.data, \
                   d.service, d.environment \
                   FROM deployment_events e JOIN deployments d ON d.id = e.deployment_id \
                   UNION ALL \
                   SELECT s.event_id, NULL, 0, s.at, s.kind, s.message, s.data, NULL, \
                   s.environment FROM server_events s) AS stream \
             WHERE event_id ",
            $cursor,
            " $1 AND ($2 IS NULL OR environment IS NULL OR environment = $2) \
             AND ($3 IS NULL OR service IS NULL OR service = $3) \
             AND ($4 IS NULL OR deployment_id = $4) \
             ORDER BY event_id ",
            $order,
            " LIMIT $5"
        )
    };
}

const SELECT_EVENTS_AFTER: &str = stream_select!(">", "");

const SELECT_EVENTS_BEFORE: &str = stream_select!("<", "DESC");

const INSERT_SERVER_EVENT: &str = "INSERT INTO server_events \
     (event_id, at, environment, kind, message, data) VALUES ($1, $2, $3, $4, $5, $6)";

/// Takes the next measurement seq and, on PostgreSQL, the deployment's row
/// lock, which queues concurrent writers of the same deployment.
const BUMP_MEASUREMENT_SEQ: &str = "UPDATE deployments \
     SET last_measurement_seq = last_measurement_seq + 1 \
     WHERE id = $1 RETURNING last_measurement_seq";

const INSERT_MEASUREMENT: &str = "INSERT INTO measurements \
     (deployment_id, seq, at, run, metric, value, verdict, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const UPDATE_STATUS: &str = concat!(
    "UPDATE deployments SET status = $2, reason = $3, finished_at = $4 WHERE id = $1 RETURNING ",
    deployment_columns!()
);

/// Sets `serving_at` once; the row lock comes from `BUMP_EVENT_SEQ` first.
const UPDATE_SERVING: &str = concat!(
    "UPDATE deployments SET serving_at = $2 WHERE id = $1 RETURNING ",
    deployment_columns!()
);

/// How often `create_deployment` retries when a unique index refused the
/// row but no live deployment was there to blame (it finished in between,
/// or the random id collided).
const CREATE_ATTEMPTS: usize = 5;

impl SqlStore {
    /// The events of `filter` on one side of the id `cursor`, at most
    /// `limit`, in the order `query` (`SELECT_EVENTS_AFTER` or
    /// `SELECT_EVENTS_BEFORE`) reads them.
    async fn events_around(
        &self,
        query: &'static str,
        cursor: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(query)
            .bind(i64::try_from(cursor).unwrap_or(i64::MAX))
            .bind(filter.environment.as_ref().map(EnvName::as_str))
            .bind(filter.service.as_ref().map(ServiceName::as_str))
            .bind(filter.deployment.as_ref().map(DeploymentId::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("reading events"))?;
        rows.iter().map(event_from_row).collect()
    }

    /// Begins a write transaction: `BEGIN IMMEDIATE` on SQLite takes the
    /// write lock now, so a writer waits (busy timeout) rather than failing
    /// later when a read lock cannot be upgraded.
    pub(crate) async fn begin_write(
        &self,
        doing: &'static str,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(StoreError::db(doing))
    }

    /// Inserts the deployment row (not its event) into `tx`.
    async fn insert_deployment_row(
        tx: &mut Transaction<'static, Any>,
        id: &DeploymentId,
        new: &NewDeployment,
    ) -> Result<(), InsertError> {
        sqlx::query(INSERT_DEPLOYMENT)
            .bind(id.as_str())
            .bind(new.service.as_str())
            .bind(new.environment.as_str())
            .bind(new.version.as_str())
            .bind(new.commit_sha.as_deref())
            .bind(new.strategy.as_str())
            .bind(new.deployed_by.as_str())
            .bind(db_time(new.at).map_err(InsertError::Store)?)
            .bind(new.rollback_of.as_ref().map(DeploymentId::as_str))
            .bind(new.spec_digest.as_str())
            .bind(vars_text(&new.vars).map_err(InsertError::Store)?)
            .bind(secret_versions_text(&new.secrets).map_err(InsertError::Store)?)
            .bind(new.image_id.as_deref())
            .execute(&mut **tx)
            .await
            .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
                Some(ErrorKind::UniqueViolation) => InsertError::Unique(e),
                Some(ErrorKind::ForeignKeyViolation) => match &new.rollback_of {
                    Some(id) => InsertError::Store(StoreError::NotFound { id: id.clone() }),
                    None => InsertError::Store(StoreError::db("creating a deployment")(e)),
                },
                _ => InsertError::Store(StoreError::db("creating a deployment")(e)),
            })?;
        Ok(())
    }

    /// One attempt at `create_deployment`.
    async fn try_create(&self, new: &NewDeployment) -> Result<Deployment, InsertError> {
        const DOING: &str = "creating a deployment";
        let id = deployment_id(new.at).map_err(InsertError::Store)?;
        let mut tx = self.begin_write(DOING).await.map_err(InsertError::Store)?;
        let event_id = SqlStore::next_event_id(&mut tx, DOING)
            .await
            .map_err(InsertError::Store)?;
        SqlStore::insert_deployment_row(&mut tx, &id, new).await?;
        #[cfg(test)]
        crate::test_hooks::fault_point(crate::test_hooks::Fault::CreateAfterRow, &id).await;
        let created = hatoba_core::Event::Created {
            service: new.service.to_string(),
            version: new.version.to_string(),
            environment: new.environment.to_string(),
            by: new.deployed_by.clone(),
            strategy: new.strategy.clone(),
            rollback_of: new.rollback_of.as_ref().map(ToString::to_string),
        };
        sqlx::query(INSERT_EVENT)
            .bind(id.as_str())
            .bind(1_i64)
            .bind(db_time(new.at).map_err(InsertError::Store)?)
            .bind(event_kind::CREATED)
            .bind(created.message(None))
            .bind(created.data().map(|d| d.to_string()))
            .bind(event_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| InsertError::Store(StoreError::db(DOING)(e)))?;
        #[cfg(test)]
        crate::test_hooks::fault_point(crate::test_hooks::Fault::CreateBeforeCommit, &id).await;
        tx.commit()
            .await
            .map_err(|e| InsertError::Store(StoreError::db(DOING)(e)))?;
        Ok(Deployment {
            id,
            service: new.service.clone(),
            environment: new.environment.clone(),
            version: new.version.clone(),
            commit_sha: new.commit_sha.clone(),
            strategy: new.strategy.clone(),
            status: DeploymentStatus::Pending,
            reason: None,
            deployed_by: new.deployed_by.clone(),
            started_at: new.at,
            serving_at: None,
            finished_at: None,
            rollback_of: new.rollback_of.clone(),
            spec_digest: new.spec_digest.clone(),
            vars: new.vars.clone(),
            secrets: new.secrets.clone(),
            image_id: new.image_id.clone(),
        })
    }

    /// Takes the next global event id inside `tx` (its first write).
    async fn next_event_id(
        tx: &mut Transaction<'static, Any>,
        doing: &'static str,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(BUMP_EVENT_ID)
            .fetch_one(&mut **tx)
            .await
            .map_err(StoreError::db(doing))?;
        int(&row, "last_event_id")
    }

    /// Takes the next global event id, then bumps the deployment's event
    /// seq inside `tx`, returning both, the status the deployment has now
    /// and its service and environment, or `NotFound`.
    async fn next_event_seq(
        tx: &mut Transaction<'static, Any>,
        id: &DeploymentId,
        doing: &'static str,
    ) -> Result<EventSlot, StoreError> {
        let event_id = SqlStore::next_event_id(tx, doing).await?;
        let row = sqlx::query(BUMP_EVENT_SEQ)
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::db(doing))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound { id: id.clone() });
        };
        Ok(EventSlot {
            event_id,
            seq: int(&row, "last_event_seq")?,
            status: status(text(&row, "status")?)?,
            service: parse("service name", text(&row, "service")?)?,
            environment: parse("environment name", text(&row, "environment")?)?,
        })
    }

    async fn fetch_deployments(
        &self,
        query: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
        doing: &'static str,
    ) -> Result<Vec<Deployment>, StoreError> {
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db(doing))?;
        rows.iter().map(deployment_from_row).collect()
    }
}

/// What a transaction that adds an event has taken and learnt.
struct EventSlot {
    event_id: i64,
    seq: i64,
    status: DeploymentStatus,
    service: ServiceName,
    environment: EnvName,
}

/// An event row of [`SELECT_EVENTS_OF`], [`SELECT_EVENTS_AFTER`] or
/// [`SELECT_EVENTS_BEFORE`].
fn event_from_row(row: &AnyRow) -> Result<Event, StoreError> {
    let data = match opt_text(row, "data")? {
        Some(text) => Some(
            serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
                what: "event data",
                found: text,
            })?,
        ),
        None => None,
    };
    Ok(Event {
        id: to_u64("event id", int(row, "event_id")?)?,
        deployment_id: opt_parse(row, "deployment id", "deployment_id")?,
        service: opt_parse(row, "service name", "service")?,
        environment: opt_parse(row, "environment name", "environment")?,
        seq: seq_from_db(int(row, "seq")?)?,
        at: millis(row, "at")?,
        kind: text(row, "kind")?,
        message: text(row, "message")?,
        data,
    })
}

/// Why one insert attempt failed.
pub(crate) enum InsertError {
    /// A unique index refused the row: another live deployment (or, very
    /// rarely, the same id).
    Unique(sqlx::Error),
    /// Anything else, already decided.
    Store(StoreError),
}

#[async_trait]
impl Store for SqlStore {
    async fn create_deployment(&self, new: NewDeployment) -> Result<Deployment, StoreError> {
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            match self.try_create(&new).await {
                Ok(deployment) => return Ok(deployment),
                Err(InsertError::Store(e)) => return Err(e),
                Err(InsertError::Unique(e)) => {
                    // The transaction is gone; look for the one to blame.
                    if let Some(live) = self.live(&new.service, &new.environment).await? {
                        return Err(StoreError::Conflict {
                            service: new.service,
                            environment: new.environment,
                            live: live.id,
                        });
                    }
                    last = Some(e);
                }
            }
        }
        let source = last.unwrap_or(sqlx::Error::RowNotFound);
        Err(StoreError::db("creating a deployment")(source))
    }

    async fn transition(
        &self,
        id: &DeploymentId,
        to: DeploymentStatus,
        reason: Option<String>,
        at: Millis,
    ) -> Result<Deployment, StoreError> {
        const DOING: &str = "changing a deployment's status";
        let at_db = db_time(at)?;
        let mut tx = self.begin_write(DOING).await?;
        let slot = SqlStore::next_event_seq(&mut tx, id, DOING).await?;
        let from = slot.status;
        if from.is_terminal() {
            // Dropping `tx` rolls the seq bump back.
            return Err(StoreError::Terminal {
                id: id.clone(),
                status: from,
            });
        }
        let finished_at = to.is_terminal().then_some(at_db);
        let row = sqlx::query(UPDATE_STATUS)
            .bind(id.as_str())
            .bind(to.as_str())
            .bind(reason.as_deref())
            .bind(finished_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        let deployment = deployment_from_row(&row)?;
        let changed = hatoba_core::Event::StatusChanged {
            from: from.as_str().to_owned(),
            to: to.as_str().to_owned(),
            reason,
        };
        sqlx::query(INSERT_EVENT)
            .bind(id.as_str())
            .bind(slot.seq)
            .bind(at_db)
            .bind(event_kind::STATUS_CHANGED)
            .bind(changed.message(None))
            .bind(changed.data().map(|d| d.to_string()))
            .bind(slot.event_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        tx.commit().await.map_err(StoreError::db(DOING))?;
        Ok(deployment)
    }

    async fn mark_serving(
        &self,
        id: &DeploymentId,
        at: Millis,
        message: String,
        data: Option<serde_json::Value>,
    ) -> Result<Deployment, StoreError> {
        const DOING: &str = "recording that a deployment serves";
        let at_db = db_time(at)?;
        let mut tx = self.begin_write(DOING).await?;
        let slot = SqlStore::next_event_seq(&mut tx, id, DOING).await?;
        if slot.status.is_terminal() {
            // Dropping `tx` rolls the seq bump back.
            return Err(StoreError::Terminal {
                id: id.clone(),
                status: slot.status,
            });
        }
        let row = sqlx::query(SELECT_DEPLOYMENT)
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        let before = deployment_from_row(&row)?;
        if before.serving_at.is_some() {
            // Already recorded: the first time stands, no second event
            // (dropping `tx` rolls the seq bump back).
            return Ok(before);
        }
        let row = sqlx::query(UPDATE_SERVING)
            .bind(id.as_str())
            .bind(at_db)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        let deployment = deployment_from_row(&row)?;
        sqlx::query(INSERT_EVENT)
            .bind(id.as_str())
            .bind(slot.seq)
            .bind(at_db)
            .bind(event_kind::SERVING)
            .bind(message)
            .bind(data.as_ref().map(serde_json::Value::to_string))
            .bind(slot.event_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        tx.commit().await.map_err(StoreError::db(DOING))?;
        Ok(deployment)
    }

    async fn append_event(&self, id: &DeploymentId, event: NewEvent) -> Result<Event, StoreError> {
        const DOING: &str = "appending an event";
        let at_db = db_time(event.at)?;
        let mut tx = self.begin_write(DOING).await?;
        let slot = SqlStore::next_event_seq(&mut tx, id, DOING).await?;
        sqlx::query(INSERT_EVENT)
            .bind(id.as_str())
            .bind(slot.seq)
            .bind(at_db)
            .bind(event.kind.as_str())
            .bind(event.message.as_str())
            .bind(event.data.as_ref().map(serde_json::Value::to_string))
            .bind(slot.event_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        tx.commit().await.map_err(StoreError::db(DOING))?;
        Ok(Event {
            id: to_u64("event id", slot.event_id)?,
            deployment_id: Some(id.clone()),
            service: Some(slot.service),
            environment: Some(slot.environment),
            seq: seq_from_db(slot.seq)?,
            at: event.at,
            kind: event.kind,
            message: event.message,
            data: event.data,
        })
    }

    async fn append_server_event(
        &self,
        environment: Option<&EnvName>,
        event: NewEvent,
    ) -> Result<Event, StoreError> {
        const DOING: &str = "appending a server event";
        let at_db = db_time(event.at)?;
        let mut tx = self.begin_write(DOING).await?;
        let event_id = SqlStore::next_event_id(&mut tx, DOING).await?;
        sqlx::query(INSERT_SERVER_EVENT)
            .bind(event_id)
            .bind(at_db)
            .bind(environment.map(EnvName::as_str))
            .bind(event.kind.as_str())
            .bind(event.message.as_str())
            .bind(event.data.as_ref().map(serde_json::Value::to_string))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        tx.commit().await.map_err(StoreError::db(DOING))?;
        Ok(Event {
            id: to_u64("event id", event_id)?,
            deployment_id: None,
            service: None,
            environment: environment.cloned(),
            seq: 0,
            at: event.at,
            kind: event.kind,
            message: event.message,
            data: event.data,
        })
    }

    async fn deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError> {
        let row = sqlx::query(SELECT_DEPLOYMENT)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a deployment"))?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    async fn events(&self, id: &DeploymentId) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(SELECT_EVENTS_OF)
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("reading a deployment's events"))?;
        // Every deployment has its `created` event, so none means no deployment.
        if rows.is_empty() && self.deployment(id).await?.is_none() {
            return Err(StoreError::NotFound { id: id.clone() });
        }
        rows.iter().map(event_from_row).collect()
    }

    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.events_around(SELECT_EVENTS_AFTER, after, filter, limit)
            .await
    }

    async fn events_before(
        &self,
        before: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        // Newest first from the query; oldest first for the caller.
        let mut events = self
            .events_around(SELECT_EVENTS_BEFORE, before, filter, limit)
            .await?;
        events.reverse();
        Ok(events)
    }

    async fn last_event_id(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT last_event_id FROM event_counter WHERE name = 'events'")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("reading the last event id"))?;
        to_u64("event id", int(&row, "last_event_id")?)
    }

    async fn record_measurement(
        &self,
        id: &DeploymentId,
        measurement: NewMeasurement,
    ) -> Result<Measurement, StoreError> {
        const DOING: &str = "recording a measurement";
        let at_db = db_time(measurement.at)?;
        let value = measurement.value.filter(|v| v.is_finite());
        let mut tx = self.begin_write(DOING).await?;
        let row = sqlx::query(BUMP_MEASUREMENT_SEQ)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound { id: id.clone() });
        };
        let seq = int(&row, "last_measurement_seq")?;
        sqlx::query(INSERT_MEASUREMENT)
            .bind(id.as_str())
            .bind(seq)
            .bind(at_db)
            .bind(measurement.run.as_str())
            .bind(measurement.metric.as_str())
            .bind(value.map(value_text))
            .bind(measurement.verdict.as_str())
            .bind(measurement.detail.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        tx.commit().await.map_err(StoreError::db(DOING))?;
        Ok(Measurement {
            deployment_id: id.clone(),
            seq: to_u64("measurement seq", seq)?,
            at: measurement.at,
            run: measurement.run,
            metric: measurement.metric,
            value,
            verdict: measurement.verdict,
            detail: measurement.detail,
        })
    }

    async fn measurements(&self, id: &DeploymentId) -> Result<Vec<Measurement>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, run, metric, value, verdict, detail FROM measurements \
             WHERE deployment_id = $1 ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading a deployment's measurements"))?;
        if rows.is_empty() && self.deployment(id).await?.is_none() {
            return Err(StoreError::NotFound { id: id.clone() });
        }
        rows.iter()
            .map(|row| {
                Ok(Measurement {
                    deployment_id: id.clone(),
                    seq: to_u64("measurement seq", int(row, "seq")?)?,
                    at: millis(row, "at")?,
                    run: text(row, "run")?,
                    metric: text(row, "metric")?,
                    value: opt_text(row, "value")?.map(value_from_text).transpose()?,
                    verdict: parse("measurement verdict", text(row, "verdict")?)?,
                    detail: opt_text(row, "detail")?,
                })
            })
            .collect()
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<Deployment>, StoreError> {
        const DOING: &str = "reading the history";
        let limit = i64::from(filter.limit);
        macro_rules! select {
            ($where:literal, $limit:literal) => {
                concat!(
                    "SELECT ",
                    deployment_columns!(),
                    " FROM deployments ",
                    $where,
                    " ORDER BY started_at DESC, id DESC LIMIT ",
                    $limit
                )
            };
        }
        let query = match (&filter.service, &filter.environment) {
            (None, None) => sqlx::query(select!("", "$1")).bind(limit),
            (Some(s), None) => sqlx::query(select!("WHERE service = $1", "$2"))
                .bind(s.as_str())
                .bind(limit),
            (None, Some(e)) => sqlx::query(select!("WHERE environment = $1", "$2"))
                .bind(e.as_str())
                .bind(limit),
            (Some(s), Some(e)) => {
                sqlx::query(select!("WHERE service = $1 AND environment = $2", "$3"))
                    .bind(s.as_str())
                    .bind(e.as_str())
                    .bind(limit)
            }
        };
        self.fetch_deployments(query, DOING).await
    }

    async fn current(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<Deployment>, StoreError> {
        let query = sqlx::query(SELECT_CURRENT)
            .bind(service.as_str())
            .bind(environment.as_str());
        let mut found = self
            .fetch_deployments(query, "reading the current deployment")
            .await?;
        Ok(found.pop())
    }

    async fn current_all(&self) -> Result<Vec<Deployment>, StoreError> {
        self.fetch_deployments(
            sqlx::query(SELECT_CURRENT_ALL),
            "reading the current deployments",
        )
        .await
    }

    async fn live(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<Deployment>, StoreError> {
        let query = sqlx::query(SELECT_LIVE)
            .bind(service.as_str())
            .bind(environment.as_str());
        let mut found = self
            .fetch_deployments(query, "reading the live deployment")
            .await?;
        Ok(found.pop())
    }

    async fn save_controller_state(
        &self,
        service: &ServiceName,
        environment: &EnvName,
        state: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        const DOING: &str = "saving the controller's state";
        let at_db = db_time(at)?;
        let mut tx = self.begin_write(DOING).await?;
        sqlx::query(
            "INSERT INTO controller_state (service, environment, state, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (service, environment) \
             DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(service.as_str())
        .bind(environment.as_str())
        .bind(state)
        .bind(at_db)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(DOING))?;
        tx.commit().await.map_err(StoreError::db(DOING))?;
        Ok(())
    }

    async fn controller_state(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<String>, StoreError> {
        const DOING: &str = "reading the controller's state";
        let row = sqlx::query(
            "SELECT state FROM controller_state WHERE service = $1 AND environment = $2",
        )
        .bind(service.as_str())
        .bind(environment.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db(DOING))?;
        row.map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map_err(StoreError::db(DOING))
    }

    async fn record_audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError> {
        const DOING: &str = "recording an audit entry";
        let at_db = db_time(entry.at)?;
        let id = new_id("a-", entry.at)?;
        sqlx::query(
            "INSERT INTO audit (id, at, actor, action, target, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(at_db)
        .bind(entry.actor.as_str())
        .bind(entry.action.as_str())
        .bind(entry.target.as_str())
        .bind(entry.outcome.as_str())
        .bind(entry.detail.as_deref())
        .execute(&self.pool)
        .await
        .map_err(StoreError::db(DOING))?;
        Ok(AuditEntry {
            id,
            at: entry.at,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            outcome: entry.outcome,
            detail: entry.detail,
        })
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, outcome, detail FROM audit \
             ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading the audit log"))?;
        rows.iter()
            .map(|row| {
                let outcome = text(row, "outcome")?;
                let Some(outcome) = AuditOutcome::from_name(&outcome) else {
                    return Err(StoreError::Corrupt {
                        what: "audit outcome",
                        found: outcome,
                    });
                };
                Ok(AuditEntry {
                    id: text(row, "id")?,
                    at: millis(row, "at")?,
                    actor: text(row, "actor")?,
                    action: text(row, "action")?,
                    target: text(row, "target")?,
                    outcome,
                    detail: opt_text(row, "detail")?,
                })
            })
            .collect()
    }

    async fn put_secret(&self, secret: SealedSecret) -> Result<(), StoreError> {
        const DOING: &str = "storing a secret";
        let mut tx = self.begin_write(DOING).await?;
        let inserted = sqlx::query(
            "INSERT INTO secrets \
             (environment, name, version, key_id, nonce, ciphertext, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(secret.environment.as_str())
        .bind(secret.name.as_str())
        .bind(db_version(secret.version)?)
        .bind(secret.key_id.as_str())
        .bind(hex::encode(&secret.nonce))
        .bind(hex::encode(&secret.ciphertext))
        .bind(db_time(secret.created_at)?)
        .bind(secret.created_by.as_str())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e)
                if e.as_database_error().map(|d| d.kind()) == Some(ErrorKind::UniqueViolation) =>
            {
                return Err(StoreError::SecretVersionTaken {
                    environment: secret.environment,
                    name: secret.name,
                    version: secret.version,
                });
            }
            Err(e) => return Err(StoreError::db(DOING)(e)),
        }
        tx.commit().await.map_err(StoreError::db(DOING))?;
        Ok(())
    }

    async fn secret_versions(
        &self,
        environment: Option<&EnvName>,
    ) -> Result<Vec<SecretVersion>, StoreError> {
        const DOING: &str = "listing secrets";
        let query = match environment {
            Some(e) => sqlx::query(
                "SELECT environment, name, version, created_at, created_by FROM secrets \
                 WHERE environment = $1 ORDER BY environment, name, version",
            )
            .bind(e.as_str()),
            None => sqlx::query(
                "SELECT environment, name, version, created_at, created_by FROM secrets \
                 ORDER BY environment, name, version",
            ),
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db(DOING))?;
        rows.iter()
            .map(|row| {
                Ok(SecretVersion {
                    environment: parse("environment name", text(row, "environment")?)?,
                    name: text(row, "name")?,
                    version: to_u64("secret version", int(row, "version")?)?,
                    created_at: millis(row, "created_at")?,
                    created_by: text(row, "created_by")?,
                })
            })
            .collect()
    }

    async fn secret(
        &self,
        environment: &EnvName,
        name: &str,
        version: u64,
    ) -> Result<Option<SealedSecret>, StoreError> {
        const DOING: &str = "reading a secret";
        let row = sqlx::query(
            "SELECT key_id, nonce, ciphertext, created_at, created_by FROM secrets \
             WHERE environment = $1 AND name = $2 AND version = $3",
        )
        .bind(environment.as_str())
        .bind(name)
        .bind(db_version(version)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db(DOING))?;
        row.map(|row| {
            Ok(SealedSecret {
                environment: environment.clone(),
                name: name.to_owned(),
                version,
                key_id: text(&row, "key_id")?,
                nonce: hex_bytes(&row, "nonce")?,
                ciphertext: hex_bytes(&row, "ciphertext")?,
                created_at: millis(&row, "created_at")?,
                created_by: text(&row, "created_by")?,
            })
        })
        .transpose()
    }

    async fn remove_secret(&self, environment: &EnvName, name: &str) -> Result<u64, StoreError> {
        const DOING: &str = "removing a secret";
        let mut tx = self.begin_write(DOING).await?;
        let done = sqlx::query("DELETE FROM secrets WHERE environment = $1 AND name = $2")
            .bind(environment.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(DOING))?;
        tx.commit().await.map_err(StoreError::db(DOING))?;
        Ok(done.rows_affected())
    }
}

// The rest of this file turns rows back into types; anything that does not
// parse is `Corrupt`, never a panic.

/// A fresh deployment id for a deployment created at `at`.
pub(crate) fn deployment_id(at: Millis) -> Result<DeploymentId, StoreError> {
    let id = new_id("d-", at)?;
    DeploymentId::new(id.as_str()).map_err(|_| StoreError::Corrupt {
        what: "generated deployment id",
        found: id,
    })
}

/// A time as stored: BIGINT milliseconds.
fn db_time(at: Millis) -> Result<i64, StoreError> {
    if at.0 > MAX_MILLIS {
        return Err(StoreError::TimeOutOfRange { at });
    }
    i64::try_from(at.0).map_err(|_| StoreError::TimeOutOfRange { at })
}

fn seq_from_db(seq: i64) -> Result<u64, StoreError> {
    to_u64("event seq", seq)
}

fn to_u64(what: &'static str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        what,
        found: n.to_string(),
    })
}

/// A measured value as stored: Rust's shortest text that reads back to the
/// same `f64` (`0.30000000000000004`, `1e-7`, `-0.0`). Only finite values
/// get here.
fn value_text(value: f64) -> String {
    format!("{value:?}")
}

/// A stored value back as a number: finite, or the row is corrupt.
fn value_from_text(text: String) -> Result<f64, StoreError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(StoreError::Corrupt {
            what: "measurement value",
            found: text,
        }),
    }
}

fn decode_error(column: &'static str, e: sqlx::Error) -> StoreError {
    StoreError::Corrupt {
        what: column,
        found: e.to_string(),
    }
}

fn text(row: &AnyRow, column: &'static str) -> Result<String, StoreError> {
    row.try_get::<String, _>(column)
        .map_err(|e| decode_error(column, e))
}

fn opt_text(row: &AnyRow, column: &'static str) -> Result<Option<String>, StoreError> {
    row.try_get::<Option<String>, _>(column)
        .map_err(|e| decode_error(column, e))
}

fn int(row: &AnyRow, column: &'static str) -> Result<i64, StoreError> {
    row.try_get::<i64, _>(column)
        .map_err(|e| decode_error(column, e))
}

fn to_millis(column: &'static str, ms: i64) -> Result<Millis, StoreError> {
    u64::try_from(ms)
        .map(Millis)
        .map_err(|_| StoreError::Corrupt {
            what: column,
            found: ms.to_string(),
        })
}

fn millis(row: &AnyRow, column: &'static str) -> Result<Millis, StoreError> {
    to_millis(column, int(row, column)?)
}

fn opt_millis(row: &AnyRow, column: &'static str) -> Result<Option<Millis>, StoreError> {
    row.try_get::<Option<i64>, _>(column)
        .map_err(|e| decode_error(column, e))?
        .map(|ms| to_millis(column, ms))
        .transpose()
}

fn status(text: String) -> Result<DeploymentStatus, StoreError> {
    parse("deployment status", text)
}

/// Parses stored text into a core type, or reports it as corrupt.
fn parse<T: std::str::FromStr>(what: &'static str, text: String) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt { what, found: text })
}

/// A nullable column parsed into a core type (a server event has no
/// deployment, no service and maybe no environment).
fn opt_parse<T: std::str::FromStr>(
    row: &AnyRow,
    what: &'static str,
    column: &'static str,
) -> Result<Option<T>, StoreError> {
    opt_text(row, column)?.map(|t| parse(what, t)).transpose()
}

fn deployment_from_row(row: &AnyRow) -> Result<Deployment, StoreError> {
    Ok(Deployment {
        id: parse("deployment id", text(row, "id")?)?,
        service: parse("service name", text(row, "service")?)?,
        environment: parse("environment name", text(row, "environment")?)?,
        version: parse("version", text(row, "version")?)?,
        commit_sha: opt_text(row, "commit_sha")?,
        strategy: text(row, "strategy")?,
        status: status(text(row, "status")?)?,
        reason: opt_text(row, "reason")?,
        deployed_by: text(row, "deployed_by")?,
        started_at: millis(row, "started_at")?,
        serving_at: opt_millis(row, "serving_at")?,
        finished_at: opt_millis(row, "finished_at")?,
        rollback_of: opt_text(row, "rollback_of")?
            .map(|id| parse("deployment id", id))
            .transpose()?,
        spec_digest: text(row, "spec_digest")?,
        vars: {
            let found = text(row, "vars")?;
            serde_json::from_str(&found).map_err(|_| StoreError::Corrupt {
                what: "deployment variables",
                found,
            })?
        },
        secrets: {
            let found = text(row, "secrets")?;
            serde_json::from_str(&found).map_err(|_| StoreError::Corrupt {
                what: "deployment secret versions",
                found,
            })?
        },
        image_id: opt_text(row, "image_id")?,
    })
}

/// A deployment's secret versions as stored: a JSON object of numbers.
fn secret_versions_text(
    versions: &std::collections::BTreeMap<String, u64>,
) -> Result<String, StoreError> {
    serde_json::to_string(versions).map_err(|e| StoreError::Corrupt {
        what: "deployment secret versions",
        found: e.to_string(),
    })
}

fn db_version(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::Corrupt {
        what: "secret version",
        found: version.to_string(),
    })
}

fn hex_bytes(row: &AnyRow, column: &'static str) -> Result<Vec<u8>, StoreError> {
    let found = text(row, column)?;
    hex::decode(&found).map_err(|_| StoreError::Corrupt {
        what: column,
        found,
    })
}

/// A deployment's variables as stored: a JSON object of strings.
fn vars_text(vars: &std::collections::BTreeMap<String, String>) -> Result<String, StoreError> {
    serde_json::to_string(vars).map_err(|e| StoreError::Corrupt {
        what: "deployment variables",
        found: e.to_string(),
    })
}
