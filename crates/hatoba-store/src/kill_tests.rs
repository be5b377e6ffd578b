//! A writer killed inside the real `create_deployment` leaves nothing
//! half-written: the deployment and its `created` event are one
//! transaction.
//!
//! How: the parent test re-executes this unit-test binary with
//! `HATOBA_STORE_KILL_CHILD=<fault>@<sqlite:PATH | postgres:URL>` and
//! `--exact kill_tests::child_holds_transaction`. The child opens the store,
//! arms one of `create_deployment`'s fault points (`test_hooks`, compiled
//! only into this test build), calls `create_deployment`, and once the call
//! stops at the fault point with its transaction open writes the
//! deployment's id into the marker file `HATOBA_STORE_KILL_MARKER`. The
//! parent waits for that file, SIGKILLs the child, reopens the store and
//! checks that the deployment is absent entirely and that the same service
//! and environment take a new deployment. Without the variable the child
//! test returns at once.
//!
//! A unit test rather than one of `tests/it`: the fault points are
//! `cfg(test)`, which only this build of the crate has.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hatoba_core::{DeploymentId, DeploymentStatus, EnvName, Millis, ServiceName, Version};
use sqlx::Row;

use crate::test_hooks::{Fault, arm};
use crate::{HistoryFilter, NewDeployment, SqlStore, Store, StoreError};

const CHILD_ENV: &str = "HATOBA_STORE_KILL_CHILD";
const MARKER_ENV: &str = "HATOBA_STORE_KILL_MARKER";
const CHILD_TEST: &str = "kill_tests::child_holds_transaction";

fn new_deployment(version: &str, at: u64) -> NewDeployment {
    NewDeployment {
        service: ServiceName::new("web").unwrap(),
        environment: EnvName::new("production").unwrap(),
        version: Version::new(version).unwrap(),
        commit_sha: None,
        strategy: "rolling".to_owned(),
        deployed_by: "alice".to_owned(),
        rollback_of: None,
        spec_digest: "sha256:0123".to_owned(),
        vars: Default::default(),
        secrets: Default::default(),
        image_id: None,
        at: Millis(at),
    }
}

fn fault_name(fault: Fault) -> &'static str {
    match fault {
        Fault::CreateAfterRow => "after-row",
        Fault::CreateBeforeCommit => "before-commit",
    }
}

async fn open(target: &str) -> SqlStore {
    match target.split_once(':') {
        Some(("sqlite", path)) => SqlStore::open_sqlite(path).await.unwrap(),
        Some(("postgres", url)) => SqlStore::connect_postgres(url).await.unwrap(),
        _ => panic!("bad {CHILD_ENV} target: {target}"),
    }
}

/// The child half; does nothing unless re-executed by `kill_writer`.
#[tokio::test]
async fn child_holds_transaction() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let marker = std::env::var(MARKER_ENV).unwrap();
    let (fault, target) = spec.split_once('@').unwrap();
    let fault = [Fault::CreateAfterRow, Fault::CreateBeforeCommit]
        .into_iter()
        .find(|f| fault_name(*f) == fault)
        .unwrap();
    let store = open(target).await;
    let stopped = arm(fault);
    let write = tokio::spawn(async move {
        store
            .create_deployment(new_deployment("v1", 1_000))
            .await
            .map(|d| d.id)
    });
    let id = tokio::select! {
        id = stopped => id.unwrap(),
        done = write => panic!("create_deployment ended without reaching {fault:?}: {done:?}"),
    };
    // Written whole, then renamed: the parent never reads half an id.
    let partial = format!("{marker}.partial");
    std::fs::write(&partial, id.as_str()).unwrap();
    std::fs::rename(&partial, &marker).unwrap();
    std::future::pending::<()>().await;
}

/// Runs the child against `target` until `create_deployment` stops at
/// `fault`, kills it with SIGKILL, and returns the id it was writing.
fn kill_writer(fault: Fault, target: &str, marker: &Path) -> DeploymentId {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}@{target}", fault_name(fault)))
        .env(MARKER_ENV, marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut exited = None;
    let waited = hatoba_test_support::wait_for(Duration::from_secs(60), || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        marker.exists()
    });
    if let Some(status) = exited {
        panic!("the child ended before reaching {fault:?}: {status:?}");
    }
    if let Err(e) = waited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child never reached {fault:?}: {e}");
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no rollback, no goodbye
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    DeploymentId::new(std::fs::read_to_string(marker).unwrap()).unwrap()
}

/// What must hold after the kill, on either backend.
async fn nothing_half_written(store: &SqlStore, id: &DeploymentId) {
    let web = ServiceName::new("web").unwrap();
    let prod = EnvName::new("production").unwrap();
    assert_eq!(store.deployment(id).await.unwrap(), None);
    assert!(matches!(
        store.events(id).await,
        Err(StoreError::NotFound { .. })
    ));
    let events: i64 = sqlx::query("SELECT COUNT(*) FROM deployment_events")
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0, "an event outlived its deployment");
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
        .create_deployment(new_deployment("v2", 2_000))
        .await
        .unwrap();
    store
        .transition(&d.id, DeploymentStatus::Succeeded, None, Millis(2_100))
        .await
        .unwrap();
    assert_eq!(store.current(&web, &prod).await.unwrap().unwrap().id, d.id);
    assert_eq!(store.events(&d.id).await.unwrap().len(), 2);
}

async fn sqlite(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hatoba.db");
    let marker = dir.path().join("marker");
    let target = format!("sqlite:{}", path.display());
    let id = tokio::task::spawn_blocking(move || kill_writer(fault, &target, &marker))
        .await
        .unwrap();
    let store = SqlStore::open_sqlite(&path).await.unwrap();
    nothing_half_written(&store, &id).await;
    let check: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(check, "ok");
}

async fn postgres(fault: Fault) {
    let Some(pg) = hatoba_test_support::postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let target = format!("postgres:{}", pg.url());
    let id = tokio::task::spawn_blocking(move || kill_writer(fault, &target, &marker))
        .await
        .unwrap();
    let store = SqlStore::connect_postgres(&pg.url()).await.unwrap();
    nothing_half_written(&store, &id).await;
}

#[tokio::test]
async fn sqlite_killed_after_the_row() {
    sqlite(Fault::CreateAfterRow).await;
}

#[tokio::test]
async fn sqlite_killed_before_the_commit() {
    sqlite(Fault::CreateBeforeCommit).await;
}

#[tokio::test]
async fn postgres_killed_after_the_row() {
    postgres(Fault::CreateAfterRow).await;
}

#[tokio::test]
async fn postgres_killed_before_the_commit() {
    postgres(Fault::CreateBeforeCommit).await;
}
