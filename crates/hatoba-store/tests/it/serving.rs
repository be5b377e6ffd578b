//! Started, serving, completed: `mark_serving` records when a deployment's
//! version took all traffic, once, before the deployment is complete, on
//! SQLite and PostgreSQL alike.

use hatoba_core::{DeploymentId, DeploymentStatus, Millis};
use hatoba_store::{Store, StoreError, event_kind};

use crate::{env, new_deployment, postgres_store, service, sqlite_store};

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    serving_then_complete(&store).await;
}

#[tokio::test]
async fn postgres() {
    let Some((_pg, store)) = postgres_store().await else {
        return;
    };
    serving_then_complete(&store).await;
}

async fn serving_then_complete(store: &dyn Store) {
    let d = store
        .create_deployment(new_deployment("web", "production", "v2", 1_000))
        .await
        .unwrap();
    assert_eq!(d.serving_at, None);
    store
        .transition(&d.id, DeploymentStatus::InProgress, None, Millis(1_100))
        .await
        .unwrap();

    // Serving: the time and one event with the caller's words and data.
    let warm = serde_json::json!({"warm_until": 301_500});
    let serving = store
        .mark_serving(
            &d.id,
            Millis(1_500),
            "serving all traffic".to_owned(),
            Some(warm.clone()),
        )
        .await
        .unwrap();
    assert_eq!(serving.serving_at, Some(Millis(1_500)));
    assert_eq!(serving.status, DeploymentStatus::InProgress);
    assert_eq!(serving.finished_at, None);
    // Still live: serving is not complete.
    let live = store
        .live(&service("web"), &env("production"))
        .await
        .unwrap();
    assert_eq!(live.as_ref(), Some(&serving));

    // Again (a resumed controller): the first time stands, no second event.
    let again = store
        .mark_serving(&d.id, Millis(2_000), "serving again".to_owned(), None)
        .await
        .unwrap();
    assert_eq!(again.serving_at, Some(Millis(1_500)));
    let events = store.events(&d.id).await.unwrap();
    let serving_events: Vec<_> = events
        .iter()
        .filter(|e| e.kind == event_kind::SERVING)
        .collect();
    assert_eq!(serving_events.len(), 1, "{events:?}");
    assert_eq!(serving_events[0].at, Millis(1_500));
    assert_eq!(serving_events[0].message, "serving all traffic");
    assert_eq!(serving_events[0].data.as_ref(), Some(&warm));
    // Seqs stay gap-free after the refused repeat.
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());

    // Complete: finished later, serving time kept; the three times read back.
    let done = store
        .transition(&d.id, DeploymentStatus::Succeeded, None, Millis(301_500))
        .await
        .unwrap();
    assert_eq!(
        (done.started_at, done.serving_at, done.finished_at),
        (Millis(1_000), Some(Millis(1_500)), Some(Millis(301_500)))
    );
    assert_eq!(store.deployment(&d.id).await.unwrap().as_ref(), Some(&done));
    let history = store
        .history(&hatoba_store::HistoryFilter::all(10))
        .await
        .unwrap();
    assert_eq!(history[0].serving_at, Some(Millis(1_500)));

    // A finished deployment is refused, and nothing is written.
    let before = store.events(&d.id).await.unwrap().len();
    let err = store
        .mark_serving(&d.id, Millis(400_000), "late".to_owned(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Terminal { .. }), "{err:?}");
    assert_eq!(store.events(&d.id).await.unwrap().len(), before);
    let nobody = DeploymentId::new("d-nobody").unwrap();
    assert!(matches!(
        store
            .mark_serving(&nobody, Millis(1), "x".to_owned(), None)
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // A deployment rolled back before it served never has a serving time.
    let d3 = store
        .create_deployment(new_deployment("web", "production", "v3", 500_000))
        .await
        .unwrap();
    let back = store
        .transition(
            &d3.id,
            DeploymentStatus::RolledBack,
            Some("failed".to_owned()),
            Millis(501_000),
        )
        .await
        .unwrap();
    assert_eq!(back.serving_at, None);
}
