//! Concurrent writers on one store: many tasks writing different services
//! interleave without errors or lost rows, tasks racing for the same
//! service and environment get exactly one live deployment, and tasks
//! recording measurements and events of one deployment at once get
//! distinct, gap-free seqs.

use std::sync::Arc;

use hatoba_core::{DeploymentStatus, Millis};
use hatoba_store::{
    HistoryFilter, MeasurementVerdict, NewEvent, NewMeasurement, Store, StoreError, event_kind,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn measurements_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    measurements(Arc::new(sqlite_store(&dir).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn measurements_postgres() {
    let Some((_pg, store)) = postgres_store().await else {
        return;
    };
    measurements(Arc::new(store)).await;
}

/// `TASKS` tasks record `PER_TASK` measurements each (and an event every
/// fifth) on the same deployment at once: every seq from 1 to the total is
/// taken exactly once, and each task's measurements keep their order.
async fn measurements(store: Arc<dyn Store>) {
    let d = store
        .create_deployment(new_deployment("web", "production", "v1", 1_000))
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        let id = d.id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut seqs = Vec::new();
            for n in 0..PER_TASK {
                let m = store
                    .record_measurement(
                        &id,
                        NewMeasurement {
                            at: Millis(2_000 + n as u64),
                            run: format!("task {task}"),
                            metric: "success-rate".to_owned(),
                            value: Some(n as f64 / 100.0),
                            verdict: MeasurementVerdict::Passed,
                            detail: None,
                        },
                    )
                    .await
                    .unwrap();
                seqs.push(m.seq);
                if n % 5 == 0 {
                    store
                        .append_event(
                            &id,
                            NewEvent {
                                at: Millis(2_000 + n as u64),
                                kind: "analysis".to_owned(),
                                message: format!("task {task} at {n}"),
                                data: None,
                            },
                        )
                        .await
                        .unwrap();
                }
            }
            seqs
        }));
    }
    let mut all_seqs = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(seqs.is_sorted(), "{seqs:?}");
        all_seqs.extend(seqs);
    }
    all_seqs.sort_unstable();
    let total = (TASKS * PER_TASK) as u64;
    assert_eq!(all_seqs, (1..=total).collect::<Vec<_>>());
    let stored = store.measurements(&d.id).await.unwrap();
    assert_eq!(
        stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for task in 0..TASKS {
        let values: Vec<_> = stored
            .iter()
            .filter(|m| m.run == format!("task {task}"))
            .map(|m| m.value)
            .collect();
        let expected: Vec<_> = (0..PER_TASK).map(|n| Some(n as f64 / 100.0)).collect();
        assert_eq!(values, expected, "task {task}");
    }
    let events = store.events(&d.id).await.unwrap();
    let events_total = 1 + TASKS * PER_TASK.div_ceil(5);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=events_total as u64).collect::<Vec<_>>()
    );
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
