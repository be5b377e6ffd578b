//! `hatoba history` and `hatoba status` over a store the test fills, on
//! SQLite (the state directory) and PostgreSQL (`--store`).

use assert_cmd::Command;
use hatoba_core::{DeploymentStatus, Millis};
use hatoba_store::{NewDeployment, SqlStore, Store};
use predicates::prelude::*;

fn hatoba() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hatoba"));
    cmd.env_remove("HATOBA_STATE_DIR")
        .env_remove("HATOBA_OUTPUT")
        .env_remove("HATOBA_STORE")
        .env("NO_COLOR", "1");
    cmd
}

/// web: v1 succeeded, v2 succeeded, v3 rolled back, v4 in progress (staging);
/// api: v1 failed (production).
async fn fill(store: &SqlStore) {
    let mut t = 1_795_436_113_000u64;
    let mut deploy =
        |service: &str, env: &str, version: &str, end: Option<(DeploymentStatus, &str)>| {
            t += 60_000;
            let at = t;
            let (service, env, version) = (service.to_owned(), env.to_owned(), version.to_owned());
            let end = end.map(|(s, r)| (s, r.to_owned()));
            async move {
                let d = store
                    .create_deployment(NewDeployment {
                        service: service.parse().unwrap(),
                        environment: env.parse().unwrap(),
                        version: version.parse().unwrap(),
                        commit_sha: Some("abc1234".to_owned()),
                        strategy: "canary".to_owned(),
                        deployed_by: "alice".to_owned(),
                        rollback_of: None,
                        spec_digest: "digest".to_owned(),
                        vars: Default::default(),
                        secrets: Default::default(),
                        image_id: None,
                        at: Millis(at),
                    })
                    .await
                    .unwrap();
                store
                    .transition(&d.id, DeploymentStatus::InProgress, None, Millis(at + 1000))
                    .await
                    .unwrap();
                if let Some((status, reason)) = end {
                    store
                        .transition(&d.id, status, Some(reason), Millis(at + 42_000))
                        .await
                        .unwrap();
                }
            }
        };
    deploy(
        "web",
        "staging",
        "v1",
        Some((DeploymentStatus::Succeeded, "ok")),
    )
    .await;
    deploy(
        "web",
        "staging",
        "v2",
        Some((DeploymentStatus::Succeeded, "ok")),
    )
    .await;
    deploy(
        "web",
        "staging",
        "v3",
        Some((DeploymentStatus::RolledBack, "success rate 0.81 < 0.95")),
    )
    .await;
    deploy("web", "staging", "v4", None).await;
    deploy(
        "api",
        "production",
        "v1",
        Some((DeploymentStatus::Failed, "readiness deadline exceeded")),
    )
    .await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The same checks for either backend; `args` select the store.
fn check_reading_commands(args: &[&str]) {
    let run = |extra: &[&str]| {
        let mut cmd = hatoba();
        cmd.args(extra).args(args);
        cmd
    };
    // History: newest first, filters, limit.
    let out = run(&["history"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let versions: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v4", "v3", "v2", "v1"], "{text}");
    assert!(text.contains("success rate 0.81 < 0.95"), "{text}");
    // The version column, not the text: a random id may contain `v2`.
    let out = run(&["history", "web", "--env", "staging", "--limit", "2"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let versions: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(versions, ["v4", "v3"], "{text}");

    let out = run(&["history", "api", "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["api_version"], "hatoba/v1");
    let d = &v["deployments"][0];
    assert_eq!(
        (
            d["service"].as_str(),
            d["status"].as_str(),
            d["duration_ms"].as_u64()
        ),
        (Some("api"), Some("failed"), Some(42_000))
    );
    assert_eq!(d["reason"], "readiness deadline exceeded");
    assert_eq!(v["deployments"].as_array().unwrap().len(), 1);

    // Status: current is the latest succeeded (v2, not the rolled back v3);
    // the live v4 is shown; a service that never succeeded has no version.
    let out = run(&["status", "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 2);
    assert_eq!(
        (
            services[0]["service"].as_str(),
            services[0]["current_version"].as_str()
        ),
        (Some("api"), None)
    );
    assert_eq!(
        (
            services[1]["service"].as_str(),
            services[1]["current_version"].as_str()
        ),
        (Some("web"), Some("v2"))
    );
    assert_eq!(services[1]["live"]["version"], "v4");
    assert_eq!(services[1]["live"]["status"], "in_progress");
    run(&["status", "web"])
        .assert()
        .success()
        .stdout(predicate::str::contains("v4 in_progress"));

    // An environment with nothing deployed is named, not "nothing has
    // been deployed yet" as if the history were empty.
    run(&["status", "--env", "nope"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "nothing has been deployed to environment `nope` yet",
        ));

    // Not found and bad input have their own exit codes.
    run(&["status", "nope"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains(
            "service `nope` has no deployment history",
        ));
    run(&["history", "Bad_Name"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a valid service name"));
}

#[test]
fn history_and_status_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    runtime().block_on(async {
        let store = SqlStore::open_sqlite(state.join("hatoba.db"))
            .await
            .unwrap();
        fill(&store).await;
        store.close().await;
    });
    check_reading_commands(&["--state-dir", state.to_str().unwrap()]);
}

#[test]
fn history_and_status_on_postgres() {
    let Some(pg) = hatoba_test_support::postgres() else {
        return;
    };
    let url = pg.url();
    runtime().block_on(async {
        let store = SqlStore::connect_postgres(&url).await.unwrap();
        fill(&store).await;
        store.close().await;
    });
    check_reading_commands(&["--store", &url]);
}

#[test]
fn a_state_dir_without_history_is_not_found_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("typo");
    hatoba()
        .args(["history", "--state-dir"])
        .arg(&state)
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no deployment history at"))
        .stderr(predicate::str::contains(
            "hint: nothing has been deployed with this state directory",
        ));
    assert!(
        !state.exists(),
        "reading must not create the state directory"
    );
    hatoba()
        .args(["status", "-o", "json", "--state-dir"])
        .arg(&state)
        .assert()
        .code(4)
        .stderr(predicate::str::contains("\"exit_code\":4"));
}

#[test]
fn an_unreachable_postgres_is_a_clear_failure() {
    let port = hatoba_test_support::free_port().unwrap();
    hatoba()
        .args([
            "history",
            "--store",
            &format!("postgres://hatoba:secret@127.0.0.1:{port}/hatoba"),
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "cannot open the database at postgres://hatoba:***@127.0.0.1",
        ))
        .stderr(predicate::str::contains("secret").not());
}
