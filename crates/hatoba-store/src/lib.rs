//! Hatoba's deployment history: deployments, their event timelines, their
//! analysis measurements and the audit log, on SQLite (one server, the
//! default) or PostgreSQL (several).
//!
//! The [`Store`] trait is what the rest of Hatoba uses (the server holds an
//! `Arc<dyn Store>`). [`SqlStore`] is its one implementation: the two
//! backends are the same code and the same migrations
//! (`migrations/*.sql`, embedded with `sqlx::migrate!`) over two drivers,
//! reached through sqlx's `Any` driver. The SQL therefore keeps to the part
//! both databases and `Any` agree on: TEXT and BIGINT columns (times are
//! epoch milliseconds, ids and JSON are text, no BOOLEAN), `$N`
//! placeholders, and no `QueryBuilder::push_bind`.
//!
//! Rules this crate keeps:
//! - A deployment and its `created` event, a status change and its
//!   `status_changed` event, are written in one transaction; a process killed
//!   mid-write leaves nothing half-written.
//! - An SQLite file is checked (`quick_check`) before anything writes into
//!   it, and a damaged one is refused.
//! - The SQLite database, its `-wal` and `-shm` files are private to their
//!   owner (0600, directory 0700), set after every open.
//! - The writer closes with a checkpoint: the `.db` file alone then holds
//!   the whole history.
//! - At most one live (pending, in progress, paused) deployment per service
//!   and environment, enforced by a partial unique index.
//! - The current version is a query (latest succeeded deployment), never a
//!   stored field.
//! - Finished deployments never change status.
//! - A deployment's events, and its measurements, are numbered from 1
//!   without gaps, also under concurrent writers.
//! - Every event also has a global id from one counter row bumped as the
//!   first write of its transaction: strictly increasing in commit order,
//!   without gaps, so `events_after` resumes a stream exactly. The
//!   server's own events (tied to no deployment, `server_events`) take
//!   theirs from the same row and are read in the same stream.
//! - The store reads no clock: every time is a [`Millis`](hatoba_core::Millis)
//!   argument.
//!
//! It must not define wire types (rows are not `Serialize`) or decide
//! anything about rollouts beyond these rules.

mod error;
mod id;
#[cfg(test)]
mod kill_tests;
mod model;
mod open;
mod sql;
mod store;
#[doc(hidden)]
pub mod test_hooks;

pub use error::StoreError;
pub use model::{
    AuditEntry, AuditOutcome, Deployment, Event, EventFilter, HistoryFilter, Measurement,
    MeasurementVerdict, NewAudit, NewDeployment, NewEvent, NewMeasurement,
    ParseMeasurementVerdictError, SealedSecret, SecretVersion, event_kind,
};
pub use open::Backend;
pub use sql::SqlStore;
pub use store::Store;
