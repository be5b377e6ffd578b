//! A writer killed inside its transaction leaves nothing half-written.
//!
//! How: the parent test re-executes this test binary with
//! `HATOBA_STORE_KILL_CHILD=<sqlite:PATH | postgres:URL>` and
//! `--exact kill::child_holds_transaction`. That child opens the store,
//! begins a write transaction through the `test_hooks` (the same
//! `BEGIN IMMEDIATE` and deployment insert that `create_deployment` runs,
//! stopped before the `created` event and the commit), prints
//! `HALF-WRITTEN <id>` and waits forever. The parent reads the marker,
//! SIGKILLs the child, reopens the store and checks that the deployment is
//! absent entirely and that the same service and environment take a new
//! deployment. Without the variable the child test returns at once.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hatoba_core::{DeploymentId, DeploymentStatus, Millis};
use hatoba_store::{HistoryFilter, SqlStore, Store, StoreError};
use sqlx::Row;

use crate::{env, new_deployment, service};

const CHILD_ENV: &str = "HATOBA_STORE_KILL_CHILD";
const MARKER: &str = "HALF-WRITTEN ";
const CHILD_TEST: &str = "kill::child_holds_transaction";

async fn open(target: &str) -> SqlStore {
    match target.split_once(':') {
        Some(("sqlite", path)) => SqlStore::open_sqlite(path).await.unwrap(),
        Some(("postgres", url)) => SqlStore::connect_postgres(url).await.unwrap(),
        _ => panic!("bad {CHILD_ENV}: {target}"),
    }
}

/// The child half; does nothing unless re-executed by `kill_writer`.
#[tokio::test]
async fn child_holds_transaction() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = open(&target).await;
    let half = store
        .begin_half_written_create(&new_deployment("web", "production", "v1", 1_000))
        .await
        .unwrap();
    println!("{MARKER}{}", half.id);
    std::future::pending::<()>().await;
}

/// Runs the child against `target` until it prints its marker, kills it
/// with SIGKILL, and returns the id it was writing.
fn kill_writer(target: &str) -> DeploymentId {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, target)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut id = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while id.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            // libtest may have written `test NAME ... ` on the same line.
            Ok(line) => id = line.split_once(MARKER).map(|(_, id)| id.to_owned()),
            Err(e) => {
                let _ = child.kill();
                panic!("the child never printed its marker: {e}");
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no rollback, no goodbye
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    DeploymentId::new(id.unwrap()).unwrap()
}

/// What must hold after the kill, on either backend.
async fn nothing_half_written(store: &SqlStore, id: &DeploymentId) {
    let (web, prod) = (service("web"), env("production"));
    assert_eq!(store.deployment(id).await.unwrap(), None);
    assert!(matches!(
        store.events(id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store
            .history(&HistoryFilter::all(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.live(&web, &prod).await.unwrap(), None);
    // The slot the dead writer was taking is free, and writes work.
    let d = store
        .create_deployment(new_deployment("web", "production", "v2", 2_000))
        .await
        .unwrap();
    store
        .transition(&d.id, DeploymentStatus::Succeeded, None, Millis(2_100))
        .await
        .unwrap();
    assert_eq!(store.current(&web, &prod).await.unwrap().unwrap().id, d.id);
    assert_eq!(store.events(&d.id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hatoba.db");
    let target = format!("sqlite:{}", path.display());
    let id = tokio::task::spawn_blocking(move || kill_writer(&target))
        .await
        .unwrap();
    let store = SqlStore::open_sqlite(&path).await.unwrap();
    nothing_half_written(&store, &id).await;
    let check: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn postgres() {
    let Some(pg) = hatoba_test_support::postgres() else {
        return;
    };
    let target = format!("postgres:{}", pg.url());
    let id = tokio::task::spawn_blocking(move || kill_writer(&target))
        .await
        .unwrap();
    let store = SqlStore::connect_postgres(&pg.url()).await.unwrap();
    nothing_half_written(&store, &id).await;
}
