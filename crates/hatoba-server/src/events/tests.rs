//! The bus on a real SQLite store: a subscriber gets every event once, in
//! id order, whether it was stored before it subscribed, while it
//! subscribed, or while it was too far behind the broadcast's buffer;
//! filters narrow; a new bus (a restarted `hatoba up`) resumes after an id.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use super::*;
use hatoba_core::{Event as Typed, Version};
use hatoba_store::SqlStore;
use std::time::Duration;

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqlStore::open_sqlite(dir.path().join("hatoba.db"))
            .await
            .unwrap(),
    )
}

fn deployment(service: &str) -> NewDeployment {
    NewDeployment {
        service: ServiceName::new(service).unwrap(),
        environment: EnvName::new("production").unwrap(),
        version: Version::new("v1").unwrap(),
        commit_sha: None,
        strategy: "canary".to_owned(),
        deployed_by: "alice".to_owned(),
        rollback_of: None,
        spec_digest: "sha256:0".to_owned(),
        vars: Default::default(),
        secrets: Default::default(),
        image_id: None,
        at: Millis(1_000),
    }
}

fn step(n: usize) -> NewEvent {
    NewEvent::of(Millis(2_000), &Typed::StepAnalysis { step: n }, None)
}

/// The next event, or a failure naming the wait.
async fn next(sub: &mut Subscription) -> Event {
    tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("an event within 20 s")
        .unwrap()
        .expect("the bus is there")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_while_writers_append() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EventBus::new(sqlite(&dir).await, BROADCAST_CAPACITY);
    let store = bus.store();
    let a = store.create_deployment(deployment("web")).await.unwrap();
    let b = store.create_deployment(deployment("api")).await.unwrap();
    for n in 0..10 {
        store.append_event(&a.id, step(n)).await.unwrap();
    }
    // Subscribed after id 5, while two writers go on appending.
    let mut sub = bus.subscribe(EventFilter::default(), 5);
    let writers: Vec<_> = [a.id.clone(), b.id.clone()]
        .into_iter()
        .map(|id| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for n in 0..40 {
                    store.append_event(&id, step(n)).await.unwrap();
                }
            })
        })
        .collect();
    let total = 2 + 10 + 80;
    let mut got = Vec::new();
    while got.len() < total - 5 {
        got.push(next(&mut sub).await.id);
    }
    for w in writers {
        w.await.unwrap();
    }
    let expected: Vec<u64> = (6..=total as u64).collect();
    assert_eq!(got, expected, "every id after 5 once, in order");
    assert_eq!(sub.last_event_id(), total as u64);
    // Nothing more: the stream waits rather than repeating itself.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_subscriber_behind_the_broadcast_reads_the_gap_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    // A buffer of 4 events: a subscriber 50 behind has lagged.
    let bus = EventBus::new(sqlite(&dir).await, 4);
    let store = bus.store();
    let d = store.create_deployment(deployment("web")).await.unwrap();
    let mut sub = bus.subscribe(EventFilter::default(), 0);
    assert_eq!(next(&mut sub).await.id, 1);
    // Live now; 50 events while it reads nothing.
    for n in 0..50 {
        store.append_event(&d.id, step(n)).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..50 {
        got.push(next(&mut sub).await.id);
    }
    assert_eq!(got, (2..=51).collect::<Vec<u64>>());
    assert!(sub.resyncs() >= 1, "the broadcast should have lagged");
    // And it follows live again afterwards.
    store.append_event(&d.id, step(99)).await.unwrap();
    let e = next(&mut sub).await;
    assert_eq!((e.id, e.typed()), (52, Typed::StepAnalysis { step: 99 }));
}

#[tokio::test]
async fn a_filter_narrows_and_a_new_bus_resumes_after_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let inner = sqlite(&dir).await;
    let bus = EventBus::new(Arc::clone(&inner), BROADCAST_CAPACITY);
    let store = bus.store();
    let web = store.create_deployment(deployment("web")).await.unwrap();
    let api = store.create_deployment(deployment("api")).await.unwrap();
    let only_api = EventFilter {
        service: Some(ServiceName::new("api").unwrap()),
        ..EventFilter::default()
    };
    let mut sub = bus.subscribe(only_api.clone(), 0);
    assert_eq!(next(&mut sub).await.deployment_id, Some(api.id.clone()));
    store.append_event(&web.id, step(0)).await.unwrap();
    store
        .transition(&api.id, DeploymentStatus::InProgress, None, Millis(3_000))
        .await
        .unwrap();
    let e = next(&mut sub).await;
    assert_eq!((e.id, e.kind.as_str()), (4, "status_changed"));
    let resume_after = sub.last_event_id();
    drop(sub);
    drop(store);
    drop(bus);

    // `hatoba up` again: a new bus over the same store.
    let bus = EventBus::new(inner, BROADCAST_CAPACITY);
    let store = bus.store();
    store.append_event(&api.id, step(1)).await.unwrap();
    let mut sub = bus.subscribe(only_api, resume_after);
    store.append_event(&web.id, step(2)).await.unwrap();
    store.append_event(&api.id, step(3)).await.unwrap();
    let got = [next(&mut sub).await, next(&mut sub).await];
    assert_eq!(got.map(|e| e.id), [5, 7]);
}
