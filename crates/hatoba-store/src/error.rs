//! `StoreError`: what can go wrong with the history store, one variant per
//! decision the caller makes.
//!
//! Facts are fields; a wrapped database error sits in `#[source]` and is not
//! repeated in the message. Messages never contain a password: database
//! locations are redacted before they get here.

use hatoba_core::{DeploymentId, DeploymentStatus, EnvName, Millis, ServiceName};

/// An error from the history store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or reached (check the path or URL,
    /// the permissions, whether the server runs).
    #[error("cannot open the database at {location}")]
    Open {
        /// The SQLite path or the PostgreSQL URL with any password redacted.
        location: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },

    /// The database's schema could not be brought up to date (it may have
    /// been written by a newer Hatoba, or a migration failed half-way).
    #[error("cannot apply the store's migrations to the database at {location}")]
    Migrate {
        /// The SQLite path or the redacted PostgreSQL URL.
        location: String,
        /// What the migrator said.
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// The service already has a live deployment in that environment: wait
    /// for it, or abort it first.
    #[error("service `{service}` already has a live deployment in `{environment}`: {live}")]
    Conflict {
        /// The service asked for.
        service: ServiceName,
        /// The environment asked for.
        environment: EnvName,
        /// The deployment that is pending, in progress or paused there.
        live: DeploymentId,
    },

    /// The deployment has finished and can no longer change status.
    #[error("deployment {id} is {status} and can no longer change")]
    Terminal {
        /// The deployment.
        id: DeploymentId,
        /// Its terminal status.
        status: DeploymentStatus,
    },

    /// No deployment has this id.
    #[error("no deployment has the id {id}")]
    NotFound {
        /// The id asked for.
        id: DeploymentId,
    },

    /// A time the store cannot hold (ids carry 48 bits of milliseconds,
    /// which ends in the year 10889).
    #[error("time {} ms since the epoch is out of the store's range", at.0)]
    TimeOutOfRange {
        /// The time given.
        at: Millis,
    },

    /// A row holds text that does not parse back into its type: the database
    /// was edited by hand or by something other than this store.
    #[error("the store holds a {what} it cannot read back: `{found}`")]
    Corrupt {
        /// What was being read (`deployment status`, `event data`, ...).
        what: &'static str,
        /// The offending value, or the decode error for a wrongly typed column.
        found: String,
    },

    /// A secret's version is already stored (two writers took the same
    /// next version): read the versions again and retry.
    #[error("version {version} of secret `{name}` in `{environment}` is already stored")]
    SecretVersionTaken {
        /// The environment.
        environment: EnvName,
        /// The secret.
        name: String,
        /// The version asked for.
        version: u64,
    },

    /// The database failed a query (it went away, timed out waiting for a
    /// lock, ran out of space, ...); retrying later may help.
    #[error("database error while {doing}")]
    Database {
        /// What the store was doing (`creating a deployment`, ...).
        doing: &'static str,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// A closure for `map_err` that wraps a driver error with what was being done.
    pub(crate) fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { doing, source }
    }
}
