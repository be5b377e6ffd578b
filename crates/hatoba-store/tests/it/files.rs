//! The SQLite file itself: a damaged page is refused at open (before
//! anything writes into it), a clean close leaves the whole history in the
//! `.db` file, the database files are private to their owner, and a copy
//! is checked before it may replace a database.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use hatoba_core::{DeploymentStatus, Millis};
use hatoba_store::{HistoryFilter, SqlStore, Store, StoreError};
use sqlx::Row;

use crate::new_deployment;

/// `n` deployments of services `s0`..`s{n-1}`, each succeeded, each with
/// two events.
async fn fill(store: &SqlStore, n: u64) {
    for i in 0..n {
        let d = store
            .create_deployment(new_deployment(
                &format!("s{i}"),
                "production",
                "v1",
                1_000 + i,
            ))
            .await
            .unwrap();
        store
            .transition(&d.id, DeploymentStatus::Succeeded, None, Millis(2_000 + i))
            .await
            .unwrap();
    }
}

async fn count(store: &SqlStore) -> usize {
    store
        .history(&HistoryFilter::all(100_000))
        .await
        .unwrap()
        .len()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Deterministic bytes that are no valid b-tree page.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn a_damaged_page_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hatoba.db");
    let store = SqlStore::open_sqlite(&path).await.unwrap();
    fill(&store, 300).await;
    let row = sqlx::query(
        "SELECT rootpage, (SELECT page_size FROM pragma_page_size()) \
         FROM sqlite_master WHERE name = 'deployments'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let (root, page_size): (i64, i64) = (row.get(0), row.get(1));
    store.close_checkpointed().await.unwrap();
    assert!(
        std::fs::metadata(with_suffix(&path, "-wal")).map_or(true, |m| m.len() == 0),
        "the history must be in the .db file for the damage to count"
    );

    // Overwrite the deployments table's root page with garbage, as a bad
    // disk sector or a stray write would.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = usize::try_from(page_size).unwrap();
    let start = usize::try_from(root - 1).unwrap() * page;
    assert!(bytes.len() >= start + page, "the table has its own page");
    bytes[start..start + page].copy_from_slice(&garbage(page));
    std::fs::write(&path, &bytes).unwrap();
    let before = std::fs::read(&path).unwrap();

    let err = SqlStore::open_sqlite(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("the database at {} is damaged (", path.display())),
        "{text}"
    );
    assert!(text.contains("hatoba restore FILE"), "{text}");
    assert!(text.contains("move"), "{text}");
    // Refused before anything wrote into it.
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // The same check guards a copy about to be restored.
    let err = SqlStore::check_sqlite_copy(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
}

#[tokio::test]
async fn a_clean_close_leaves_the_history_in_the_db_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hatoba.db");
    let store = SqlStore::open_sqlite(&path).await.unwrap();
    // A reader (`hatoba history`, say) has the database open too, so the
    // writer's close is not the last one, which would checkpoint anyway.
    let reader = SqlStore::open_sqlite(&path).await.unwrap();
    fill(&store, 50).await;
    assert_eq!(count(&reader).await, 50);
    store.close_checkpointed().await.unwrap();
    let wal = std::fs::metadata(with_suffix(&path, "-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the write-ahead log is emptied");

    // The .db file alone, copied while the reader still has it open.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("hatoba.db");
    std::fs::copy(&path, &copy).unwrap();
    reader.close().await;
    let copied = SqlStore::open_sqlite(&copy).await.unwrap();
    assert_eq!(count(&copied).await, 50);
    let events: i64 = sqlx::query("SELECT COUNT(*) FROM deployment_events")
        .fetch_one(copied.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 100);
    assert_eq!(SqlStore::check_sqlite_copy(&copy).await.unwrap(), 50);
    copied.close().await;
}

#[tokio::test]
async fn new_database_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = state.join("hatoba.db");
    let store = SqlStore::open_sqlite(&path).await.unwrap();
    fill(&store, 1).await;
    assert_eq!(mode(&state), 0o700, "the state directory");
    for suffix in ["", "-wal", "-shm"] {
        let file = with_suffix(&path, suffix);
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    store.close().await;
}

#[tokio::test]
async fn existing_database_files_are_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = state.join("hatoba.db");
    let store = SqlStore::open_sqlite(&path).await.unwrap();
    fill(&store, 3).await;
    store.close().await;
    // As an older Hatoba (or a umask of 022) left them.
    std::fs::write(with_suffix(&path, "-wal"), b"").unwrap();
    std::fs::write(with_suffix(&path, "-shm"), b"").unwrap();
    let everyone = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    everyone(&state, 0o755);
    for suffix in ["", "-wal", "-shm"] {
        everyone(&with_suffix(&path, suffix), 0o644);
    }

    let store = SqlStore::open_sqlite(&path).await.unwrap();
    assert_eq!(count(&store).await, 3);
    assert_eq!(mode(&state), 0o700, "the state directory");
    for suffix in ["", "-wal", "-shm"] {
        let file = with_suffix(&path, suffix);
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    store.close().await;

    // Tightening only takes bits away: a read-only file stays read-only.
    everyone(&path, 0o444);
    let _ = SqlStore::open_sqlite(&path).await;
    assert_eq!(mode(&path), 0o400);
}

#[tokio::test]
async fn a_copy_must_be_a_hatoba_history() {
    let dir = tempfile::tempdir().unwrap();

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let err = SqlStore::check_sqlite_copy(&junk).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");

    let missing = dir.path().join("missing.db");
    let err = SqlStore::check_sqlite_copy(&missing).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(!missing.exists(), "checking never creates the file");

    // A sound SQLite database of something else.
    let other = dir.path().join("other.db");
    {
        let url = format!("sqlite://{}?mode=rwc", other.display());
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let err = SqlStore::check_sqlite_copy(&other).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not a Hatoba history database: it has no `_sqlx_migrations` table",
            other.display()
        )
    );

    // A history whose last migration failed half-way.
    let half = dir.path().join("half.db");
    let store = SqlStore::open_sqlite(&half).await.unwrap();
    fill(&store, 2).await;
    assert_eq!(SqlStore::check_sqlite_copy(&half).await.unwrap(), 2);
    sqlx::query("UPDATE _sqlx_migrations SET success = 0 WHERE version = 4")
        .execute(store.pool())
        .await
        .unwrap();
    store.close_checkpointed().await.unwrap();
    let err = SqlStore::check_sqlite_copy(&half).await.unwrap_err();
    assert!(matches!(err, StoreError::NotHistory { .. }), "{err:?}");
}
