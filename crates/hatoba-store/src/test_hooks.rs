//! Hooks for tests; not API.
//!
//! Hidden from the docs: `SqlStore::pool` lets `tests/it` look at the
//! pool's connection settings, and `SqlStore::hold_write_lock` lets the
//! binary's tests hold the database's write lock as another writer would.
//! Production code must not call them. The fault points exist only in the crate's
//! own unit-test build (`cfg(test)`): the real `create_deployment` calls
//! [`fault_point`] between its statements, and a test that armed one of
//! them (`arm`) gets the deployment's id there while the write transaction
//! stays open forever, for the kill test (`kill_tests.rs`) to SIGKILL the
//! process inside it. Nothing of that is compiled into the library that
//! other crates, the integration tests or the `hatoba` binary link, so no
//! cargo feature can carry it into a release build.

use sqlx::{Any, AnyPool, Transaction};

use crate::{SqlStore, StoreError};

/// An open write transaction that has written nothing; dropping it rolls
/// back and lets other writers on.
#[doc(hidden)]
pub struct WriteLock {
    _tx: Transaction<'static, Any>,
}

impl SqlStore {
    /// The connection pool, for checking per-connection settings.
    #[doc(hidden)]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction as every write of the store does (`BEGIN
    /// IMMEDIATE` on SQLite) and holds it until the result is dropped.
    #[doc(hidden)]
    pub async fn hold_write_lock(&self) -> Result<WriteLock, StoreError> {
        Ok(WriteLock {
            _tx: self.begin_write("holding the write lock").await?,
        })
    }
}

/// Where `create_deployment` can be stopped, in the order it gets there.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The deployment row is inserted; its `created` event is not.
    CreateAfterRow,
    /// The row and its `created` event are inserted; the commit is not.
    CreateBeforeCommit,
}

#[cfg(test)]
type Armed = Option<(
    Fault,
    tokio::sync::oneshot::Sender<hatoba_core::DeploymentId>,
)>;

#[cfg(test)]
static ARMED: std::sync::Mutex<Armed> = std::sync::Mutex::new(None);

/// Makes the next write that reaches `fault` send its deployment's id to
/// the receiver and then wait forever, its transaction open.
#[cfg(test)]
pub(crate) fn arm(fault: Fault) -> tokio::sync::oneshot::Receiver<hatoba_core::DeploymentId> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    *ARMED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((fault, tx));
    rx
}

/// Called by the store at `fault`; returns at once unless a test armed it.
#[cfg(test)]
pub(crate) async fn fault_point(fault: Fault, id: &hatoba_core::DeploymentId) {
    let armed = {
        let mut armed = ARMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match armed.take() {
            Some((at, tx)) if at == fault => Some(tx),
            other => {
                *armed = other;
                None
            }
        }
    };
    if let Some(tx) = armed {
        let _ = tx.send(id.clone());
        std::future::pending::<()>().await;
    }
}
