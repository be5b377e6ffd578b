//! The store's story: every `Store` method in one plausible life of two
//! services, run unchanged on SQLite and PostgreSQL (atuin's `db_story`).

use hatoba_core::{DeploymentId, DeploymentStatus, Millis};
use hatoba_store::{
    AuditOutcome, Deployment, HistoryFilter, Measurement, MeasurementVerdict, NewAudit, NewEvent,
    NewMeasurement, Store, StoreError, event_kind,
};

use crate::{env, new_deployment, postgres_store, service, sqlite_store};

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    story(&store).await;
    // The same file, opened again, still holds the story.
    store.close().await;
    let store = sqlite_store(&dir).await;
    assert_eq!(
        store.history(&HistoryFilter::all(100)).await.unwrap().len(),
        6
    );
}

#[tokio::test]
async fn postgres() {
    let Some((_pg, store)) = postgres_store().await else {
        return;
    };
    story(&store).await;
}

fn ids(deployments: &[Deployment]) -> Vec<&DeploymentId> {
    deployments.iter().map(|d| &d.id).collect()
}

async fn story(store: &dyn Store) {
    let (web, api) = (service("web"), service("api"));
    let (prod, staging) = (env("production"), env("staging"));

    // An empty store.
    assert_eq!(store.current(&web, &prod).await.unwrap(), None);
    assert_eq!(store.live(&web, &prod).await.unwrap(), None);
    assert!(store.current_all().await.unwrap().is_empty());
    assert!(
        store
            .history(&HistoryFilter::all(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.audit(10).await.unwrap().is_empty());
    let nobody = DeploymentId::new("d-nobody").unwrap();
    assert_eq!(store.deployment(&nobody).await.unwrap(), None);
    assert!(matches!(
        store.events(&nobody).await,
        Err(StoreError::NotFound { id }) if id == nobody
    ));

    // The controller's working state: absent, saved, replaced, per service
    // and environment.
    assert_eq!(store.controller_state(&web, &prod).await.unwrap(), None);
    store
        .save_controller_state(&web, &prod, r#"{"step":1}"#, Millis(5))
        .await
        .unwrap();
    store
        .save_controller_state(&web, &staging, r#"{"step":7}"#, Millis(5))
        .await
        .unwrap();
    store
        .save_controller_state(&web, &prod, r#"{"step":2}"#, Millis(6))
        .await
        .unwrap();
    assert_eq!(
        store
            .controller_state(&web, &prod)
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"step":2}"#)
    );
    assert_eq!(
        store
            .controller_state(&web, &staging)
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"step":7}"#)
    );
    assert_eq!(store.controller_state(&api, &prod).await.unwrap(), None);

    // d1: web v1 to production. Created pending, with its `created` event.
    let d1 = store
        .create_deployment(new_deployment("web", "production", "v1", 1_000))
        .await
        .unwrap();
    assert!(d1.id.as_str().starts_with("d-"), "{}", d1.id);
    assert_eq!(d1.status, DeploymentStatus::Pending);
    assert_eq!((d1.started_at, d1.finished_at), (Millis(1_000), None));
    assert_eq!(store.deployment(&d1.id).await.unwrap().as_ref(), Some(&d1));
    assert_eq!(store.live(&web, &prod).await.unwrap().as_ref(), Some(&d1));
    let events = store.events(&d1.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, events[0].at), (1, Millis(1_000)));
    assert_eq!(events[0].kind, event_kind::CREATED);
    assert_eq!(events[0].message, "web v1 to production by alice (rolling)");

    // A second live deployment of web in production is refused, naming d1.
    let refused = store
        .create_deployment(new_deployment("web", "production", "v2", 1_010))
        .await
        .unwrap_err();
    match &refused {
        StoreError::Conflict {
            service,
            environment,
            live,
        } => assert_eq!((service, environment, live), (&web, &prod, &d1.id)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        refused.to_string(),
        format!(
            "service `web` already has a live deployment in `production`: {}",
            d1.id
        )
    );
    // Another environment is another slot.
    let s1 = store
        .create_deployment(new_deployment("web", "staging", "v1", 1_050))
        .await
        .unwrap();

    // d1 runs, pauses, resumes and succeeds.
    let t = |to, reason: Option<&str>, at| {
        let id = d1.id.clone();
        let reason = reason.map(str::to_owned);
        async move { store.transition(&id, to, reason, Millis(at)).await }
    };
    t(DeploymentStatus::InProgress, None, 1_100).await.unwrap();
    let paused = t(DeploymentStatus::Paused, Some("waiting for promote"), 1_200)
        .await
        .unwrap();
    assert_eq!(paused.reason.as_deref(), Some("waiting for promote"));
    assert_eq!(paused.finished_at, None);
    store
        .append_event(
            &d1.id,
            NewEvent {
                at: Millis(1_250),
                kind: event_kind::WEIGHT_CHANGED.to_owned(),
                message: "v1 at 50%".to_owned(),
                data: Some(serde_json::json!({"weight": 50, "versions": ["v1"]})),
            },
        )
        .await
        .unwrap();
    t(DeploymentStatus::InProgress, None, 1_300).await.unwrap();
    let done = t(DeploymentStatus::Succeeded, None, 1_500).await.unwrap();
    assert_eq!(done.status, DeploymentStatus::Succeeded);
    assert_eq!(
        (done.finished_at, done.reason.as_deref()),
        (Some(Millis(1_500)), None)
    );
    assert_eq!(
        store.deployment(&d1.id).await.unwrap().as_ref(),
        Some(&done)
    );
    assert_eq!(store.live(&web, &prod).await.unwrap(), None);
    assert_eq!(
        store.current(&web, &prod).await.unwrap().as_ref(),
        Some(&done)
    );

    // A finished deployment never moves again, and the refusal writes nothing.
    let err = t(DeploymentStatus::InProgress, None, 1_600)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Terminal { id, status: DeploymentStatus::Succeeded } if *id == d1.id),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("deployment {} is succeeded and can no longer change", d1.id)
    );
    assert!(matches!(
        store
            .transition(&nobody, DeploymentStatus::Failed, None, Millis(1_600))
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // d1's timeline, in order, with gap-free seqs.
    let events = store.events(&d1.id).await.unwrap();
    let lines: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| (e.seq, e.kind.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (1, "created", "web v1 to production by alice (rolling)"),
            (2, "status_changed", "pending -> in_progress"),
            (
                3,
                "status_changed",
                "in_progress -> paused: waiting for promote"
            ),
            (4, "weight_changed", "v1 at 50%"),
            (5, "status_changed", "paused -> in_progress"),
            (6, "status_changed", "in_progress -> succeeded"),
        ]
    );
    assert_eq!(
        events[3].data,
        Some(serde_json::json!({"weight": 50, "versions": ["v1"]}))
    );
    assert_eq!(
        events[2].data,
        Some(
            serde_json::json!({"from": "in_progress", "to": "paused", "reason": "waiting for promote"})
        )
    );
    assert_eq!(events[5].at, Millis(1_500));

    measurements(store, &d1.id, &nobody).await;

    // d2: v2 is rolled back. A newer rolled_back deployment does not change current.
    let d2 = store
        .create_deployment(new_deployment("web", "production", "v2", 2_000))
        .await
        .unwrap();
    store
        .transition(&d2.id, DeploymentStatus::InProgress, None, Millis(2_100))
        .await
        .unwrap();
    let d2 = store
        .transition(
            &d2.id,
            DeploymentStatus::RolledBack,
            Some("readiness deadline exceeded".to_owned()),
            Millis(2_500),
        )
        .await
        .unwrap();
    assert_eq!(d2.reason.as_deref(), Some("readiness deadline exceeded"));
    assert_eq!(
        store.events(&d2.id).await.unwrap().last().unwrap().message,
        "in_progress -> rolled_back: readiness deadline exceeded"
    );
    assert_eq!(store.current(&web, &prod).await.unwrap().unwrap().id, d1.id);
    // Events can still be added to a finished deployment.
    let note = store
        .append_event(
            &d2.id,
            NewEvent {
                at: Millis(2_600),
                kind: "note".to_owned(),
                message: "old instances stopped".to_owned(),
                data: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((note.seq, note.data), (4, None));
    assert!(matches!(
        store
            .append_event(
                &nobody,
                NewEvent {
                    at: Millis(2_600),
                    kind: "note".into(),
                    message: "x".into(),
                    data: None
                }
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // A rollback must name a deployment that exists.
    let mut bad_rollback = new_deployment("web", "production", "v1", 2_900);
    bad_rollback.rollback_of = Some(nobody.clone());
    assert!(matches!(
        store.create_deployment(bad_rollback).await,
        Err(StoreError::NotFound { id }) if id == nobody
    ));
    assert_eq!(store.live(&web, &prod).await.unwrap(), None);

    // d3: the rollback of d2 (back to v1) succeeds and becomes current.
    let mut rollback = new_deployment("web", "production", "v1", 3_000);
    rollback.rollback_of = Some(d2.id.clone());
    rollback.strategy = "recreate".to_owned();
    let d3 = store.create_deployment(rollback).await.unwrap();
    assert_eq!(d3.rollback_of.as_ref(), Some(&d2.id));
    assert!(
        store.events(&d3.id).await.unwrap()[0]
            .message
            .ends_with(&format!(", rolling back {}", d2.id))
    );
    let d3 = store
        .transition(&d3.id, DeploymentStatus::Succeeded, None, Millis(3_100))
        .await
        .unwrap();
    assert_eq!(
        store.current(&web, &prod).await.unwrap().as_ref(),
        Some(&d3)
    );

    // api has one failed deployment: no current version, not in current_all.
    let a1 = store
        .create_deployment(new_deployment("api", "production", "1.0.0", 3_500))
        .await
        .unwrap();
    store
        .transition(
            &a1.id,
            DeploymentStatus::Failed,
            Some("image not found".into()),
            Millis(3_600),
        )
        .await
        .unwrap();
    assert_eq!(store.current(&api, &prod).await.unwrap(), None);

    // History: newest first, filtered, limited.
    let all = store.history(&HistoryFilter::all(10)).await.unwrap();
    assert_eq!(ids(&all), [&a1.id, &d3.id, &d2.id, &s1.id, &d1.id]);
    assert_eq!(all[1], d3);
    let web_prod = HistoryFilter {
        service: Some(web.clone()),
        environment: Some(prod.clone()),
        limit: 10,
    };
    assert_eq!(
        ids(&store.history(&web_prod).await.unwrap()),
        [&d3.id, &d2.id, &d1.id]
    );
    let two = HistoryFilter {
        limit: 2,
        ..web_prod
    };
    assert_eq!(ids(&store.history(&two).await.unwrap()), [&d3.id, &d2.id]);
    let web_any = HistoryFilter {
        service: Some(web.clone()),
        environment: None,
        limit: 10,
    };
    assert_eq!(
        ids(&store.history(&web_any).await.unwrap()),
        [&d3.id, &d2.id, &s1.id, &d1.id]
    );
    let staging_any = HistoryFilter {
        service: None,
        environment: Some(staging.clone()),
        limit: 10,
    };
    assert_eq!(ids(&store.history(&staging_any).await.unwrap()), [&s1.id]);
    let nothing = HistoryFilter {
        service: Some(service("db")),
        environment: None,
        limit: 10,
    };
    assert!(store.history(&nothing).await.unwrap().is_empty());
    assert!(
        store
            .history(&HistoryFilter::all(0))
            .await
            .unwrap()
            .is_empty()
    );

    // current_all: one per (service, environment) with a succeeded deployment.
    assert_eq!(ids(&store.current_all().await.unwrap()), [&d3.id]);
    assert_eq!(store.live(&web, &staging).await.unwrap().unwrap().id, s1.id);
    let s1 = store
        .transition(&s1.id, DeploymentStatus::Succeeded, None, Millis(4_000))
        .await
        .unwrap();
    assert_eq!(store.current_all().await.unwrap(), [d3.clone(), s1.clone()]);

    // Equal finish times: the later id (created later) wins.
    let s2 = store
        .create_deployment(new_deployment("web", "staging", "v2", 4_000))
        .await
        .unwrap();
    let s2 = store
        .transition(&s2.id, DeploymentStatus::Succeeded, None, Millis(4_000))
        .await
        .unwrap();
    assert!(s2.id > s1.id);
    assert_eq!(
        store.current(&web, &staging).await.unwrap().as_ref(),
        Some(&s2)
    );
    assert_eq!(store.current_all().await.unwrap(), [d3, s2]);

    // The audit log: newest first, limited.
    for (at, actor, action, outcome, detail) in [
        (5_000, "alice", "deploy", AuditOutcome::Ok, None),
        (
            5_100,
            "mallory",
            "abort",
            AuditOutcome::Denied,
            Some("no role `deployer`"),
        ),
        (
            5_200,
            "bob",
            "promote",
            AuditOutcome::Error,
            Some("nothing paused"),
        ),
    ] {
        let entry = store
            .record_audit(NewAudit {
                at: Millis(at),
                actor: actor.to_owned(),
                action: action.to_owned(),
                target: "web/production".to_owned(),
                outcome,
                detail: detail.map(str::to_owned),
            })
            .await
            .unwrap();
        assert!(entry.id.starts_with("a-"));
    }
    let audit = store.audit(2).await.unwrap();
    let seen: Vec<_> = audit
        .iter()
        .map(|a| (a.at, a.actor.as_str(), a.outcome, a.detail.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Millis(5_200),
                "bob",
                AuditOutcome::Error,
                Some("nothing paused")
            ),
            (
                Millis(5_100),
                "mallory",
                AuditOutcome::Denied,
                Some("no role `deployer`")
            ),
        ]
    );
    assert_eq!(store.audit(10).await.unwrap().len(), 3);
}

/// d1's analysis measurements: recorded in order with gap-free seqs, read
/// back equal, values with full precision.
async fn measurements(store: &dyn Store, d1: &DeploymentId, nobody: &DeploymentId) {
    assert!(store.measurements(d1).await.unwrap().is_empty());
    assert!(matches!(
        store.measurements(nobody).await,
        Err(StoreError::NotFound { id }) if id == *nobody
    ));
    let m = |at, run: &str, metric: &str, value, verdict, detail: Option<&str>| NewMeasurement {
        at: Millis(at),
        run: run.to_owned(),
        metric: metric.to_owned(),
        value,
        verdict,
        detail: detail.map(str::to_owned),
    };
    let sum = 0.1 + 0.2;
    assert_ne!(sum, 0.3);
    let new = [
        m(
            1_210,
            "step 2",
            "success-rate",
            None,
            MeasurementVerdict::Insufficient,
            Some("12 of 20 requests"),
        ),
        m(
            1_220,
            "step 2",
            "success-rate",
            Some(sum),
            MeasurementVerdict::Passed,
            None,
        ),
        m(
            1_220,
            "background",
            "p95-latency",
            Some(1.0 / 3.0),
            MeasurementVerdict::Failed,
            Some("result <= 0.25"),
        ),
        m(
            1_230,
            "background",
            "prometheus",
            None,
            MeasurementVerdict::Error,
            Some("HTTP 502 from http://127.0.0.1:9090"),
        ),
        m(
            1_240,
            "step 2",
            "webhook",
            Some(-1.5e-300),
            MeasurementVerdict::Inconclusive,
            Some("neither condition held"),
        ),
        m(
            1_250,
            "step 2",
            "extremes",
            Some(f64::MAX),
            MeasurementVerdict::Passed,
            None,
        ),
        m(
            1_260,
            "step 2",
            "extremes",
            Some(-0.0),
            MeasurementVerdict::Passed,
            None,
        ),
        m(
            1_270,
            "step 2",
            "extremes",
            Some(f64::MIN_POSITIVE / 8.0),
            MeasurementVerdict::Passed,
            None,
        ),
    ];
    let mut recorded = Vec::new();
    for (n, new) in new.iter().enumerate() {
        let got = store.record_measurement(d1, new.clone()).await.unwrap();
        assert_eq!(
            got,
            Measurement {
                deployment_id: d1.clone(),
                seq: n as u64 + 1,
                at: new.at,
                run: new.run.clone(),
                metric: new.metric.clone(),
                value: new.value,
                verdict: new.verdict,
                detail: new.detail.clone(),
            }
        );
        recorded.push(got);
    }
    // NaN and infinities are not numbers to keep: recorded as no value.
    for (n, odd) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
        .into_iter()
        .enumerate()
    {
        let got = store
            .record_measurement(
                d1,
                m(
                    1_300,
                    "step 2",
                    "odd",
                    Some(odd),
                    MeasurementVerdict::Error,
                    Some("not a number"),
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            (got.seq, got.value),
            (recorded.len() as u64 + 1, None),
            "{n}"
        );
        recorded.push(got);
    }
    let back = store.measurements(d1).await.unwrap();
    assert_eq!(back, recorded);
    // Bit for bit, not just equal (-0.0 == 0.0).
    let bits: Vec<_> = back.iter().map(|m| m.value.map(f64::to_bits)).collect();
    let expected: Vec<_> = recorded.iter().map(|m| m.value.map(f64::to_bits)).collect();
    assert_eq!(bits, expected);
    assert_eq!(back[1].value, Some(0.1 + 0.2));
    assert_eq!(back[1].value.map(f64::to_bits), Some(sum.to_bits()));
    assert_eq!(
        back.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<u64>>()
    );
    // Unknown deployment: nothing written, and the seqs stay gap-free.
    assert!(matches!(
        store
            .record_measurement(
                nobody,
                m(1_400, "step 2", "x", Some(1.0), MeasurementVerdict::Passed, None)
            )
            .await,
        Err(StoreError::NotFound { id }) if id == *nobody
    ));
    // Measurements do not disturb the event timeline's seqs.
    let events = store.events(d1).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=events.len() as u64).collect::<Vec<_>>()
    );
}
