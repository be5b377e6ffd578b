//! Integration tests for `hatoba-store`: one story over every `Store` method,
//! concurrent writers, the SQLite connection settings, and the SQLite file
//! itself (integrity check at open, clean close, private modes, checked
//! copies), on SQLite and (via `hatoba-test-support`) PostgreSQL. (A
//! writer killed inside `create_deployment` is a unit test,
//! `src/kill_tests.rs`: its fault points exist only in that build.)
//! Without PostgreSQL the PostgreSQL halves print `SKIP`; under
//! `HATOBA_REQUIRE_EXTERNAL=1` they fail instead.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod concurrent;
mod events;
mod files;
mod secrets;
mod serving;
mod sqlite;
mod story;

use hatoba_core::{EnvName, Millis, ServiceName, Version};
use hatoba_store::{NewDeployment, SqlStore};
use hatoba_test_support::TempPostgres;

/// A store in a fresh SQLite file under `dir`.
async fn sqlite_store(dir: &tempfile::TempDir) -> SqlStore {
    SqlStore::open_sqlite(dir.path().join("state").join("hatoba.db"))
        .await
        .unwrap()
}

/// A store in a fresh PostgreSQL database, or `None` (SKIP) without one.
/// Keep the `TempPostgres` alive as long as the store.
async fn postgres_store() -> Option<(TempPostgres, SqlStore)> {
    let pg = hatoba_test_support::postgres()?;
    let store = SqlStore::connect_postgres(&pg.url()).await.unwrap();
    Some((pg, store))
}

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn env(name: &str) -> EnvName {
    EnvName::new(name).unwrap()
}

/// A rolling deployment of `version` by alice, at `at` ms.
fn new_deployment(svc: &str, environment: &str, version: &str, at: u64) -> NewDeployment {
    NewDeployment {
        service: service(svc),
        environment: env(environment),
        version: Version::new(version).unwrap(),
        commit_sha: Some(format!("{version}-sha")),
        strategy: "rolling".to_owned(),
        deployed_by: "alice".to_owned(),
        rollback_of: None,
        spec_digest: "sha256:0123".to_owned(),
        vars: [("REGION".to_owned(), format!("{svc}-eu"))].into(),
        secrets: [("DB_PASSWORD".to_owned(), 3)].into(),
        image_id: None,
        at: Millis(at),
    }
}
