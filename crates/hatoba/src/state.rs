//! Finding and opening the history store named by `--state-dir` / `--store`
//! for the reading commands, with errors that say where Hatoba looked.

use crate::cli::Global;
use crate::exit::{CliError, Exit};
use anyhow::Context as _;
use hatoba_store::SqlStore;
use std::path::PathBuf;

/// The SQLite file inside a state directory.
pub(crate) fn sqlite_path(global: &Global) -> PathBuf {
    global.state_dir.join("hatoba.db")
}

/// Opens the store for reading. A missing SQLite file is "not found", not
/// an empty history: reading must never create a database, and a mistyped
/// `--state-dir` should not look like a service that was never deployed.
pub(crate) async fn open_for_reading(global: &Global) -> anyhow::Result<SqlStore> {
    if let Some(url) = &global.store {
        return SqlStore::connect_postgres(url)
            .await
            .context("cannot read the deployment history");
    }
    let path = sqlite_path(global);
    if !path.is_file() {
        return Err(CliError::new(Exit::NotFound, format!("no deployment history at `{}`", path.display()))
            .hint("nothing has been deployed with this state directory; pass `--state-dir DIR` (or set HATOBA_STATE_DIR) to read another")
            .into());
    }
    SqlStore::open_sqlite(&path)
        .await
        .context("cannot read the deployment history")
}
