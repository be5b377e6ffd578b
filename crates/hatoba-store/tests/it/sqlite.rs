//! SQLite specifics: every pooled connection runs with WAL,
//! `synchronous=FULL`, a busy timeout and foreign keys; bad locations and
//! hand-edited rows give readable errors, never panics.

use hatoba_core::Millis;
use hatoba_store::{MeasurementVerdict, NewMeasurement, SqlStore, Store, StoreError};
use sqlx::Row;

use crate::{new_deployment, sqlite_store};

#[tokio::test]
async fn connections_use_wal_and_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    store
        .create_deployment(new_deployment("web", "production", "v1", 1_000))
        .await
        .unwrap();
    // Hold several connections at once so the check covers more than one.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(store.pool().acquire().await.unwrap());
    }
    for conn in &mut conns {
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "wal");
        for (pragma, expected) in [
            ("PRAGMA synchronous", 2), // FULL
            ("PRAGMA foreign_keys", 1),
            ("PRAGMA busy_timeout", 15_000),
        ] {
            let value: i64 = sqlx::query(pragma)
                .fetch_one(&mut **conn)
                .await
                .unwrap()
                .get(0);
            assert_eq!(value, expected, "{pragma}");
        }
    }
    assert!(dir.path().join("state/hatoba.db-wal").exists());
}

#[tokio::test]
async fn open_errors_name_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let path = file.join("hatoba.db");
    let err = SqlStore::open_sqlite(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot open the database at {}", path.display())
    );

    // Not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let err = SqlStore::open_sqlite(&junk).await.unwrap_err();
    let text = chain(&err);
    let ours = format!("cannot open the database at {}: ", junk.display());
    assert!(text.starts_with(&ours), "{text}");
    assert!(text.contains("file is not a database"), "{text}");
}

/// The error and its sources, joined with `: `.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn postgres_errors_hide_the_password() {
    // Nothing listens on a port we just freed.
    let port = hatoba_test_support::free_port().unwrap();
    let url = format!("postgres://hatoba:hunter2@127.0.0.1:{port}/hatoba");
    let err = SqlStore::connect_postgres(&url).await.unwrap_err();
    let text = chain(&err);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.starts_with(&format!(
            "cannot open the database at postgres://hatoba:***@127.0.0.1:{port}/hatoba: "
        )),
        "{text}"
    );
    assert!(text.contains("onnection refused"), "{text}");
}

#[tokio::test]
async fn hand_edited_rows_are_corrupt_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let d = store
        .create_deployment(new_deployment("web", "production", "v1", 1_000))
        .await
        .unwrap();
    sqlx::query("UPDATE deployments SET service = 'Not A Label' WHERE id = $1")
        .bind(d.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE deployment_events SET data = '{broken' WHERE deployment_id = $1")
        .bind(d.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.deployment(&d.id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the store holds a service name it cannot read back: `Not A Label`"
    );
    let err = store.events(&d.id).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { what: "event data", found } if found == "{broken"),
        "{err:?}"
    );
    // A measured value must read back as a finite number.
    store
        .record_measurement(
            &d.id,
            NewMeasurement {
                at: Millis(1_100),
                run: "background".to_owned(),
                metric: "success-rate".to_owned(),
                value: Some(0.5),
                verdict: MeasurementVerdict::Passed,
                detail: None,
            },
        )
        .await
        .unwrap();
    for bad in ["0,5", "inf", "NaN", ""] {
        sqlx::query("UPDATE measurements SET value = $2 WHERE deployment_id = $1")
            .bind(d.id.as_str())
            .bind(bad)
            .execute(store.pool())
            .await
            .unwrap();
        let err = store.measurements(&d.id).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { what: "measurement value", found } if found == bad),
            "{err:?}"
        );
    }
}
