//! Concurrent writers on one store: many tasks writing different services
//! interleave without errors or lost rows, and tasks racing for the same
//! service and environment get exactly one live deployment.

use std::sync::Arc;

use hatoba_core::{DeploymentStatus, Millis};
use hatoba_store::{HistoryFilter, NewEvent, Store, StoreError, event_kind};

use crate::{env, new_deployment, postgres_store, service, sqlite_store};

const TASKS: usize = 8;
const PER_TASK: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    writers(Arc::new(sqlite_store(&dir).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_postgres() {
    let Some((_pg, store)) = postgres_store().await else {
        return;
    };
    writers(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    race(Arc::new(sqlite_store(&dir).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_postgres() {
    let Some((_pg, store)) = postgres_store().await else {
        return;
    };
    race(Arc::new(store)).await;
}

/// `TASKS` tasks, each deploying its own service `PER_TASK` times: create,
/// start, record a weight, finish (every fourth rolled back).
async fn writers(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let svc = format!("svc-{task}");
            for n in 0..PER_TASK {
                let at = 1_000_000 + (n as u64) * 1_000 + task as u64;
                let d = store
                    .create_deployment(new_deployment(&svc, "production", &format!("v{n}"), at))
                    .await
                    .unwrap();
                store
                    .transition(&d.id, DeploymentStatus::InProgress, None, Millis(at + 1))
                    .await
                    .unwrap();
                store
                    .append_event(
                        &d.id,
                        NewEvent {
                            at: Millis(at + 2),
                            kind: event_kind::WEIGHT_CHANGED.to_owned(),
                            message: "100%".to_owned(),
                            data: Some(serde_json::json!({ "weight": 100 })),
                        },
                    )
                    .await
                    .unwrap();
                let (to, reason) = if n % 4 == 3 {
                    (DeploymentStatus::RolledBack, Some("error rate".to_owned()))
                } else {
                    (DeploymentStatus::Succeeded, None)
                };
                store
                    .transition(&d.id, to, reason, Millis(at + 3))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let all = store.history(&HistoryFilter::all(10_000)).await.unwrap();
    assert_eq!(all.len(), TASKS * PER_TASK);
    for task in 0..TASKS {
        let svc = service(&format!("svc-{task}"));
        let filter = HistoryFilter {
            service: Some(svc.clone()),
            environment: None,
            limit: 1_000,
        };
        let mine = store.history(&filter).await.unwrap();
        assert_eq!(mine.len(), PER_TASK);
        for d in &mine {
            assert!(d.status.is_terminal());
            let kinds: Vec<_> = store
                .events(&d.id)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.kind))
                .collect();
            assert_eq!(
                kinds,
                [
                    (1, "created".to_owned()),
                    (2, "status_changed".to_owned()),
                    (3, "weight_changed".to_owned()),
                    (4, "status_changed".to_owned()),
                ]
            );
        }
        // The last deployment (v24) succeeded, so it is current.
        let current = store
            .current(&svc, &env("production"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(current.version.as_str(), format!("v{}", PER_TASK - 1));
    }
    assert_eq!(store.current_all().await.unwrap().len(), TASKS);
}

/// `TASKS` tasks create a deployment of the same service and environment at
/// once: exactly one wins, every other is told which one.
async fn race(store: Arc<dyn Store>) {
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .create_deployment(new_deployment(
                    "web",
                    "production",
                    &format!("v{task}"),
                    5_000 + task as u64,
                ))
                .await
        }));
    }
    let mut winners = Vec::new();
    let mut blamed = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(d) => winners.push(d),
            Err(StoreError::Conflict { live, .. }) => blamed.push(live),
            Err(other) => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(blamed.len(), TASKS - 1);
    assert!(blamed.iter().all(|id| *id == winners[0].id), "{blamed:?}");
    let history = store.history(&HistoryFilter::all(100)).await.unwrap();
    assert_eq!(history, winners);
    assert_eq!(store.events(&winners[0].id).await.unwrap().len(), 1);
}
