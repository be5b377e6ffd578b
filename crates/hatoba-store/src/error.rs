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

    /// The SQLite file failed its integrity check at open (a damaged page,
    /// a broken index): writing on would spread the damage, so the store
    /// refuses it. Restore a backup or move the file aside.
    #[error(
        "the database at {location} is damaged ({problem}); restore the latest backup \
         with `hatoba restore FILE`, or move {location} and its -wal and -shm files aside \
         to start an empty history"
    )]
    Damaged {
        /// The SQLite path.
        location: String,
        /// What the integrity check reported (its first lines).
        problem: String,
        /// What the driver said, when reading the file itself failed.
        #[source]
        source: Option<sqlx::Error>,
    },

    /// The database file, its `-wal`/`-shm` files or its directory could
    /// not be made private to their owner (files 0600, directory 0700): the
    /// history holds secrets, so the store does not open it readable by
    /// others.
    #[error(
        "cannot make {path} private to its owner (mode {mode:o}); chown it to the user running Hatoba"
    )]
    Permissions {
        /// The file or directory.
        path: String,
        /// The mode it was to get.
        mode: u32,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },

    /// The file is a sound SQLite database but not a Hatoba history (no
    /// migrations table, or one that says a migration failed half-way).
    #[error("{location} is not a Hatoba history database: {reason}")]
    NotHistory {
        /// The SQLite path.
        location: String,
        /// What is missing or wrong.
        reason: String,
    },

    /// A clean close could not move the write-ahead log into the database
    /// file because another connection was reading; the history is safe but
    /// stays partly in the `-wal` file, which must be kept with the database.
    #[error(
        "cannot move the write-ahead log into {location}: another process is reading it; \
         keep {location}-wal with the database until the next clean stop"
    )]
    CheckpointBusy {
        /// The SQLite path.
        location: String,
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
