//! The global event cursor: every stored event has an id made by the
//! store, strictly increasing in commit order, and `events_after` resumes
//! after any of them with its filter (`events_before` reads the tail), on
//! SQLite and PostgreSQL. A reader
//! polling while writers race never misses an event nor sees one twice.

use std::collections::BTreeSet;
use std::sync::Arc;

use hatoba_core::{DeploymentStatus, Event as Typed, Millis, Weight};
use hatoba_store::{Event, EventFilter, NewEvent, Store};

use crate::{env, new_deployment, postgres_store, service, sqlite_store};

#[tokio::test]
async fn cursor_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    cursor(&store).await;
    // Ids survive a reopen and go on from where they were.
    store.close().await;
    let store = sqlite_store(&dir).await;
    let last = store.last_event_id().await.unwrap();
    let d = store
        .create_deployment(new_deployment("web", "staging", "v9", 90_000))
        .await
        .unwrap();
    let after = store
        .events_after(last, &EventFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].id, after[0].deployment_id.as_ref()),
        (last + 1, Some(&d.id))
    );
}

#[tokio::test]
async fn cursor_postgres() {
    let Some((_pg, store)) = postgres_store().await else {
        return;
    };
    cursor(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_and_a_polling_reader_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    racing(Arc::new(sqlite_store(&dir).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_and_a_polling_reader_postgres() {
    let Some((_pg, store)) = postgres_store().await else {
        return;
    };
    racing(Arc::new(store)).await;
}

fn ids(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

async fn cursor(store: &dyn Store) {
    let all = EventFilter::default();
    assert_eq!(store.last_event_id().await.unwrap(), 0);
    assert!(store.events_after(0, &all, 10).await.unwrap().is_empty());

    let web = store
        .create_deployment(new_deployment("web", "production", "v1", 1_000))
        .await
        .unwrap();
    let api = store
        .create_deployment(new_deployment("api", "staging", "v1", 1_100))
        .await
        .unwrap();
    store
        .transition(&web.id, DeploymentStatus::InProgress, None, Millis(1_200))
        .await
        .unwrap();
    let weight = Typed::WeightChanged {
        weight: Weight::new(20).unwrap(),
    };
    let appended = store
        .append_event(&web.id, NewEvent::of(Millis(1_300), &weight, Some("web")))
        .await
        .unwrap();
    store
        .append_event(
            &api.id,
            NewEvent::of(Millis(1_400), &Typed::ColourReady, None),
        )
        .await
        .unwrap();
    // A refused transition takes no id: the next one is the next number.
    store
        .transition(&api.id, DeploymentStatus::Aborted, None, Millis(1_500))
        .await
        .unwrap();
    assert!(
        store
            .transition(&api.id, DeploymentStatus::InProgress, None, Millis(1_600))
            .await
            .is_err()
    );

    let every = store.events_after(0, &all, 100).await.unwrap();
    assert_eq!(ids(&every), vec![1, 2, 3, 4, 5, 6], "one id each, no gap");
    assert_eq!(store.last_event_id().await.unwrap(), 6);
    assert_eq!(appended.id, 4);
    assert_eq!(
        (appended.service, appended.environment),
        (Some(service("web")), Some(env("production")))
    );
    // The row keeps the tag, the words and the fields; it reads back typed.
    let w = &every[3];
    assert_eq!(w.kind, "weight_changed");
    assert_eq!(w.message, "new version weight 20%");
    assert_eq!(w.data, Some(serde_json::json!({"weight": 20})));
    assert_eq!(w.typed(), weight);
    // The store's own events are typed too.
    assert!(matches!(every[0].typed(), Typed::Created { ref service, .. } if service == "web"));
    assert!(matches!(
        every[2].typed(),
        Typed::StatusChanged { ref to, .. } if to == "in_progress"
    ));
    assert_eq!(every[4].typed(), Typed::ColourReady);
    // `events` of one deployment carries the same ids.
    assert_eq!(ids(&store.events(&web.id).await.unwrap()), vec![1, 3, 4]);

    // Resume anywhere; limit pages; filters narrow.
    assert_eq!(
        ids(&store.events_after(4, &all, 100).await.unwrap()),
        vec![5, 6]
    );
    assert_eq!(
        ids(&store.events_after(1, &all, 2).await.unwrap()),
        vec![2, 3]
    );
    assert!(store.events_after(6, &all, 100).await.unwrap().is_empty());
    let by_service = EventFilter {
        service: Some(service("api")),
        ..EventFilter::default()
    };
    assert_eq!(
        ids(&store.events_after(0, &by_service, 100).await.unwrap()),
        vec![2, 5, 6]
    );
    let by_env = EventFilter {
        environment: Some(env("production")),
        ..EventFilter::default()
    };
    assert_eq!(
        ids(&store.events_after(1, &by_env, 100).await.unwrap()),
        vec![3, 4]
    );
    let by_deployment = EventFilter {
        deployment: Some(api.id.clone()),
        service: Some(service("api")),
        environment: Some(env("staging")),
    };
    let got = store.events_after(2, &by_deployment, 100).await.unwrap();
    assert_eq!(ids(&got), vec![5, 6]);
    assert!(got.iter().all(|e| by_deployment.matches(e)));
    // The tail: the newest, in id order, filtered, below a bound.
    assert_eq!(
        ids(&store.events_before(u64::MAX, &all, 2).await.unwrap()),
        vec![5, 6]
    );
    assert_eq!(
        ids(&store.events_before(5, &all, 3).await.unwrap()),
        vec![2, 3, 4]
    );
    assert_eq!(
        ids(&store
            .events_before(u64::MAX, &by_service, 100)
            .await
            .unwrap()),
        vec![2, 5, 6]
    );
    assert_eq!(
        ids(&store.events_before(u64::MAX, &by_env, 1).await.unwrap()),
        vec![4]
    );
    assert!(store.events_before(1, &all, 10).await.unwrap().is_empty());
    let nothing = EventFilter {
        service: Some(service("api")),
        environment: Some(env("production")),
        ..EventFilter::default()
    };
    assert!(
        store
            .events_after(0, &nothing, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Server events (a reload, no deployment) take the next ids of the
    // same stream, between the deployments' events.
    let reloaded = Typed::SpecReloaded {
        digest: "b".repeat(64),
        previous: "a".repeat(64),
        added: vec![],
        changed: vec!["web".to_owned()],
        removed: vec![],
        by: Some("SIGHUP".to_owned()),
    };
    let everywhere = store
        .append_server_event(None, NewEvent::of(Millis(1_700), &reloaded, None))
        .await
        .unwrap();
    let staging_only = store
        .append_server_event(
            Some(&env("staging")),
            NewEvent::of(Millis(1_800), &reloaded, None),
        )
        .await
        .unwrap();
    store
        .append_event(&web.id, NewEvent::of(Millis(1_900), &weight, Some("web")))
        .await
        .unwrap();
    assert_eq!((everywhere.id, staging_only.id), (7, 8));
    assert_eq!(store.last_event_id().await.unwrap(), 9);
    let tail = store.events_after(6, &all, 100).await.unwrap();
    assert_eq!(ids(&tail), vec![7, 8, 9], "one stream, in id order");
    assert_eq!(tail[0], everywhere, "read back as appended");
    assert_eq!(
        (
            tail[0].deployment_id.as_ref(),
            tail[0].service.as_ref(),
            tail[0].environment.as_ref(),
            tail[0].seq
        ),
        (None, None, None, 0)
    );
    assert!(tail[0].is_server_event() && !tail[2].is_server_event());
    assert_eq!(tail[0].typed(), reloaded);
    assert_eq!(tail[1].environment, Some(env("staging")));
    // A server event passes a filter by service (it concerns them all) and
    // by its environment, never one by deployment.
    for (filter, expected) in [
        (&by_service, vec![7, 8]),
        (&by_env, vec![7, 9]),
        (&by_deployment, vec![]),
        (&all, vec![7, 8, 9]),
    ] {
        let got = store.events_after(6, filter, 100).await.unwrap();
        assert_eq!(ids(&got), expected, "{filter:?}");
        assert!(got.iter().all(|e| filter.matches(e)), "{filter:?}");
        let before = store.events_before(u64::MAX, filter, 3).await.unwrap();
        let newest: Vec<u64> = ids(&before).into_iter().filter(|id| *id > 6).collect();
        assert_eq!(newest, expected, "the tail, {filter:?}");
    }
    // A deployment's own timeline has no server event.
    assert_eq!(ids(&store.events(&web.id).await.unwrap()), vec![1, 3, 4, 9]);
}

#[tokio::test]
async fn migration_0009_keeps_every_event_and_server_events_go_on_from_its_ids_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let d = store_at_format_8(&store).await;
    store.close().await;
    let url = format!(
        "sqlite://{}",
        dir.path().join("state").join("hatoba.db").display()
    );
    back_to_format_8(&url).await;
    let store = sqlite_store(&dir).await;
    after_0009(&store, &d).await;
}

#[tokio::test]
async fn migration_0009_keeps_every_event_and_server_events_go_on_from_its_ids_postgres() {
    let Some((pg, store)) = postgres_store().await else {
        return;
    };
    let d = store_at_format_8(&store).await;
    store.close().await;
    back_to_format_8(&pg.url()).await;
    let store = hatoba_store::SqlStore::connect_postgres(&pg.url())
        .await
        .unwrap();
    after_0009(&store, &d).await;
}

/// A deployment with events (ids 1 and 2), written by today's store.
async fn store_at_format_8(store: &dyn Store) -> hatoba_core::DeploymentId {
    let d = store
        .create_deployment(new_deployment("web", "production", "v1", 1_000))
        .await
        .unwrap();
    store
        .append_event(
            &d.id,
            NewEvent::of(Millis(1_100), &Typed::ColourReady, None),
        )
        .await
        .unwrap();
    d.id
}

/// Takes the database back to what migrations 0001-0008 made: no
/// `server_events`, 0009 not applied.
async fn back_to_format_8(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::raw_sql("DROP TABLE server_events; DELETE FROM _sqlx_migrations WHERE version = 9")
        .execute(&pool)
        .await
        .unwrap();
    let (newest,): (i64,) = sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(newest, 8, "the database is at the previous format");
    pool.close().await;
}

/// Opened again, 0009 has run: the old events read back as they were, and
/// server and deployment events go on from the old ids.
async fn after_0009(store: &hatoba_store::SqlStore, d: &hatoba_core::DeploymentId) {
    let all = EventFilter::default();
    let old = store.events_after(0, &all, 100).await.unwrap();
    assert_eq!(ids(&old), vec![1, 2]);
    assert!(old.iter().all(|e| e.deployment_id.as_ref() == Some(d)));
    assert_eq!(old[1].typed(), Typed::ColourReady);
    let reloaded = Typed::SpecReloaded {
        digest: "c".repeat(64),
        previous: "b".repeat(64),
        added: vec![],
        changed: vec![],
        removed: vec![],
        by: None,
    };
    let server = store
        .append_server_event(None, NewEvent::of(Millis(2_000), &reloaded, None))
        .await
        .unwrap();
    let next = store
        .append_event(d, NewEvent::of(Millis(2_100), &Typed::ColourReady, None))
        .await
        .unwrap();
    assert_eq!((server.id, next.id), (3, 4));
    let new = store.events_after(2, &all, 100).await.unwrap();
    assert_eq!(new, vec![server, next]);
    assert_eq!(ids(&store.events(d).await.unwrap()), vec![1, 2, 4]);
}

const WRITERS: usize = 4;
const PER_WRITER: usize = 25;

/// Writers append to their own deployments at once while a reader polls
/// `events_after(last seen)`: it ends with every id exactly once, in order.
async fn racing(store: Arc<dyn Store>) {
    let mut deployments = Vec::new();
    for w in 0..WRITERS {
        let d = store
            .create_deployment(new_deployment(
                &format!("svc-{w}"),
                "production",
                "v1",
                1_000,
            ))
            .await
            .unwrap();
        deployments.push(d.id);
    }
    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let total = (WRITERS * (PER_WRITER + 1)) as u64;
            let mut seen = Vec::new();
            let mut last = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while (seen.len() as u64) < total {
                assert!(std::time::Instant::now() < deadline, "reader saw {seen:?}");
                for e in store
                    .events_after(last, &EventFilter::default(), 7)
                    .await
                    .unwrap()
                {
                    assert!(e.id > last, "id {} after {last}", e.id);
                    last = e.id;
                    seen.push(e.id);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for id in deployments {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            for n in 0..PER_WRITER {
                store
                    .append_event(
                        &id,
                        NewEvent::of(
                            Millis(2_000 + n as u64),
                            &Typed::StepAnalysis { step: n },
                            None,
                        ),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    let expected: Vec<u64> = (1..=(WRITERS * (PER_WRITER + 1)) as u64).collect();
    assert_eq!(seen, expected, "every id once, in order");
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        seen.len(),
        "no duplicate"
    );
}

#[tokio::test]
async fn migration_0006_numbers_old_events_in_time_order_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    backfill(&pool).await;
}

#[tokio::test]
async fn migration_0006_numbers_old_events_in_time_order_postgres() {
    let Some(pg) = hatoba_test_support::postgres() else {
        return;
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&pg.url()).await.unwrap();
    backfill(&pool).await;
}

/// A database as migrations 0001-0005 left it, with events, then 0006.
async fn backfill(pool: &sqlx::AnyPool) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let run = |name: &std::path::Path| std::fs::read_to_string(name).unwrap();
    let (before, from_6): (Vec<_>, Vec<_>) = files
        .iter()
        .partition(|p| p.file_name().unwrap().to_string_lossy().as_ref() < "0006");
    for f in &before {
        sqlx::raw_sql(sqlx::AssertSqlSafe(run(f)))
            .execute(pool)
            .await
            .unwrap();
    }
    for (id, service) in [("d-a", "web"), ("d-b", "api")] {
        sqlx::query(
            "INSERT INTO deployments (id, service, environment, version, strategy, status, \
             deployed_by, started_at, spec_digest, last_event_seq) \
             VALUES ($1, $2, 'production', 'v1', 'rolling', 'pending', 'alice', 1, 'x', 2)",
        )
        .bind(id)
        .bind(service)
        .execute(pool)
        .await
        .unwrap();
    }
    // (deployment, seq, at): numbered by time, then deployment, then seq.
    for (d, seq, at) in [
        ("d-b", 1_i64, 100_i64),
        ("d-a", 1, 200),
        ("d-a", 2, 300),
        ("d-b", 2, 300),
    ] {
        sqlx::query(
            "INSERT INTO deployment_events (deployment_id, seq, at, kind, message) \
             VALUES ($1, $2, $3, 'rollout', 'old words')",
        )
        .bind(d)
        .bind(seq)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    }
    let sixth = from_6.first().expect("migration 0006");
    assert!(sixth.to_string_lossy().contains("0006_event_ids"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(run(sixth)))
        .execute(pool)
        .await
        .unwrap();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT deployment_id, seq, event_id FROM deployment_events ORDER BY event_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("d-b".to_owned(), 1, 1),
            ("d-a".to_owned(), 1, 2),
            ("d-a".to_owned(), 2, 3),
            ("d-b".to_owned(), 2, 4),
        ]
    );
    let (last,): (i64,) =
        sqlx::query_as("SELECT last_event_id FROM event_counter WHERE name = 'events'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(last, 4, "new events go on after the old ones");
}
