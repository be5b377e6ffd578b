//! Hooks for the store's own crash and configuration tests; not API.
//!
//! Hidden from the docs and used only by `tests/it`. Production code must
//! not call anything here: it exists to stop a write half-way (so a test can
//! kill the process inside the transaction) and to look at the pool's
//! connection settings.

use hatoba_core::DeploymentId;
use sqlx::{Any, AnyPool, Transaction};

use crate::sql::InsertError;
use crate::{NewDeployment, SqlStore, StoreError};

/// A write transaction that has inserted a deployment row but not yet its
/// `created` event. Dropping it rolls back.
pub struct HalfWritten {
    /// The id of the inserted, uncommitted row.
    pub id: DeploymentId,
    _tx: Transaction<'static, Any>,
}

impl SqlStore {
    /// Runs the first half of `create_deployment` (same transaction kind,
    /// same insert) and stops before the event and the commit.
    pub async fn begin_half_written_create(
        &self,
        new: &NewDeployment,
    ) -> Result<HalfWritten, StoreError> {
        let id = crate::sql::deployment_id(new.at)?;
        let mut tx = self.begin_write("creating a deployment").await?;
        match SqlStore::insert_deployment_row(&mut tx, &id, new).await {
            Ok(()) => Ok(HalfWritten { id, _tx: tx }),
            Err(InsertError::Store(e)) => Err(e),
            Err(InsertError::Unique(source)) => Err(StoreError::Database {
                doing: "creating a deployment",
                source,
            }),
        }
    }

    /// The connection pool, for checking per-connection settings.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
