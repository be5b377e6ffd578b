//! `hatoba backup` and `hatoba restore`: a consistent copy taken while a
//! writer keeps writing, put back after its checks, never under a running
//! server; and a damaged database refused with its fix and exit code.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hatoba_core::{DeploymentStatus, Millis};
use hatoba_store::{HistoryFilter, NewDeployment, SqlStore, Store};
use predicates::prelude::*;

use crate::support::hatoba;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn new_deployment(i: u64) -> NewDeployment {
    NewDeployment {
        service: format!("s{i}").parse().unwrap(),
        environment: "production".parse().unwrap(),
        version: "v1".parse().unwrap(),
        commit_sha: None,
        strategy: "rolling".to_owned(),
        deployed_by: "alice".to_owned(),
        rollback_of: None,
        spec_digest: "digest".to_owned(),
        vars: Default::default(),
        secrets: Default::default(),
        image_id: None,
        at: Millis(1_000 + i),
    }
}

/// A deployment that succeeded: two transactions, three events.
async fn deploy(store: &SqlStore, i: u64) {
    let d = store.create_deployment(new_deployment(i)).await.unwrap();
    store
        .transition(&d.id, DeploymentStatus::InProgress, None, Millis(2_000 + i))
        .await
        .unwrap();
    store
        .transition(&d.id, DeploymentStatus::Succeeded, None, Millis(3_000 + i))
        .await
        .unwrap();
}

async fn count(store: &SqlStore) -> usize {
    store
        .history(&HistoryFilter::all(100_000))
        .await
        .unwrap()
        .len()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_backup_taken_while_writing_is_consistent_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let copy = dir.path().join("copy.db");
    let rt = runtime();
    let store = rt
        .block_on(SqlStore::open_sqlite(state.join("hatoba.db")))
        .unwrap();
    rt.block_on(async {
        for i in 0..20 {
            deploy(&store, i).await;
        }
    });

    // A writer keeps writing (bounded) while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        rt.spawn(async move {
            let mut i = 20;
            while !stop.load(Ordering::Relaxed) && i < 2_000 {
                deploy(&store, i).await;
                i += 1;
            }
            i
        })
    };
    let out = hatoba(&state)
        .args(["backup", "--output", "json", "--to"])
        .arg(&copy)
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = rt.block_on(writer).unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["api_version"], "hatoba/v1");
    assert_eq!(v["backend"], "sqlite");
    assert_eq!(v["file"], copy.display().to_string());
    assert_eq!(v["bytes"], std::fs::metadata(&copy).unwrap().len());
    let in_copy = v["deployments"].as_u64().unwrap();
    assert!((20..=written).contains(&in_copy), "{in_copy} of {written}");
    assert_eq!(mode(&copy), 0o600, "a backup is private");

    // Consistent: every deployment in the copy has all the events its
    // transactions wrote with it (a status never without its event).
    rt.block_on(async {
        let copied = SqlStore::open_sqlite(&copy).await.unwrap();
        let all = copied.history(&HistoryFilter::all(100_000)).await.unwrap();
        assert_eq!(all.len() as u64, in_copy);
        for d in &all {
            let events = copied.events(&d.id).await.unwrap();
            let expected = match d.status {
                DeploymentStatus::Pending => 1,
                DeploymentStatus::InProgress => 2,
                _ => 3,
            };
            assert_eq!(events.len(), expected, "{d:?}");
        }
        copied.close().await;
    });

    // Never over an existing file.
    hatoba(&state)
        .args(["backup", "--to"])
        .arg(&copy)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"));
    // Into a directory that does not exist: named, without the temporary
    // file's path the operator never chose.
    let nowhere = dir.path().join("nowhere");
    hatoba(&state)
        .args(["backup", "--to"])
        .arg(nowhere.join("x.db"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "cannot write into `{}`: no such directory",
            nowhere.display()
        )))
        .stderr(predicate::str::contains(".partial").not());

    // Not while a server runs for the state directory: this test holds the
    // controller's lock as `hatoba up` does, with its pid in it.
    let lock = std::fs::File::create(state.join("controller.lock")).unwrap();
    lock.lock().unwrap();
    std::fs::write(
        state.join("controller.lock"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    hatoba(&state)
        .arg("restore")
        .arg(&copy)
        .assert()
        .code(5)
        .stderr(predicate::str::contains(format!(
            "a Hatoba server already runs for `{}` (pid {}",
            state.display(),
            std::process::id()
        )));
    drop(lock);
    assert_eq!(rt.block_on(count(&store)) as u64, written, "untouched");
    rt.block_on(store.close_checkpointed()).unwrap();

    let out = hatoba(&state)
        .args(["restore", "--output", "json"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["deployments"].as_u64(), Some(in_copy));
    let db = state.join("hatoba.db");
    assert_eq!(v["database"], db.display().to_string());
    let previous = v["previous"].as_str().unwrap().to_owned();
    assert!(
        previous.starts_with(&format!("{}.before-restore-", db.display())),
        "{previous}"
    );
    assert_eq!(mode(&db), 0o600);
    rt.block_on(async {
        let restored = SqlStore::open_sqlite(&db).await.unwrap();
        assert_eq!(count(&restored).await as u64, in_copy);
        restored.close().await;
        let replaced = SqlStore::open_sqlite(&previous).await.unwrap();
        assert_eq!(count(&replaced).await as u64, written, "kept aside whole");
        replaced.close().await;
    });
    let out = hatoba(&state)
        .args(["history", "-n", "100000", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(
        json(&out)["deployments"].as_array().unwrap().len() as u64,
        in_copy
    );
}

/// A closed database at `db` with a history, then garbage over every page
/// after the first (the schema stays readable, the tables do not).
fn damage(db: &Path) {
    runtime().block_on(async {
        let store = SqlStore::open_sqlite(db).await.unwrap();
        for i in 0..50 {
            deploy(&store, i).await;
        }
        store.close_checkpointed().await.unwrap();
    });
    let mut bytes = std::fs::read(db).unwrap();
    assert!(bytes.len() > 3 * 4096, "more than the first pages");
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut bytes[4096..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x.to_le_bytes()[0];
    }
    std::fs::write(db, &bytes).unwrap();
}

#[test]
fn a_damaged_database_is_refused_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let db = state.join("hatoba.db");
    damage(&db);
    let before = std::fs::read(&db).unwrap();
    for args in [&["history"][..], &["status"], &["backup"]] {
        hatoba(&state)
            .args(args)
            .current_dir(dir.path())
            .assert()
            .code(1)
            .stderr(predicate::str::contains(format!(
                "the database at {} is damaged",
                db.display()
            )))
            .stderr(predicate::str::contains("hatoba restore FILE"));
    }
    // `hatoba up` refuses it before it starts anything or writes into it.
    let spec = dir.path().join("hatoba.yaml");
    std::fs::write(&spec, web(hatoba_test_support::free_port().unwrap())).unwrap();
    hatoba(&state)
        .arg("up")
        .arg("-f")
        .arg(&spec)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "the database at {} is damaged",
            db.display()
        )));
    for started in ["server.json", "dataplane.json", "dataplane.sock"] {
        assert!(!state.join(started).exists(), "{started}");
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "nothing written into it"
    );

    // A damaged copy is not restored over a sound database.
    let sound = dir.path().join("sound");
    let rt = runtime();
    rt.block_on(async {
        let store = SqlStore::open_sqlite(sound.join("hatoba.db"))
            .await
            .unwrap();
        deploy(&store, 1).await;
        store.close_checkpointed().await.unwrap();
    });
    hatoba(&sound)
        .arg("restore")
        .arg(&db)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "`{}` is damaged (",
            db.display()
        )));
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    hatoba(&sound)
        .arg("restore")
        .arg(&junk)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "is not a database SQLite can open",
        ));
    hatoba(&sound)
        .arg("restore")
        .arg(dir.path().join("missing.db"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read"));
    rt.block_on(async {
        let store = SqlStore::open_sqlite(sound.join("hatoba.db"))
            .await
            .unwrap();
        assert_eq!(count(&store).await, 1, "the sound database is untouched");
        store.close().await;
    });
    let leftovers: Vec<_> = std::fs::read_dir(&sound)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn backup_needs_a_history() {
    let dir = tempfile::tempdir().unwrap();
    hatoba(&dir.path().join("typo"))
        .arg("backup")
        .current_dir(dir.path())
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no deployment history"));
    assert!(!dir.path().join("typo").exists());
}

#[test]
fn postgres_backup_is_a_pg_dump_archive() {
    let Some(pg) = hatoba_test_support::postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let store = SqlStore::connect_postgres(&pg.url()).await.unwrap();
        deploy(&store, 1).await;
        store.close().await;
    });
    let file = dir.path().join("hatoba.pgdump");
    let out = hatoba(dir.path())
        .args(["backup", "--output", "json", "--store", &pg.url(), "--to"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["backend"], "postgres");
    assert_eq!(v["deployments"], serde_json::Value::Null);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"PGDMP"), "a pg_dump custom archive");
    assert_eq!(mode(&file), 0o600);
    hatoba(dir.path())
        .args(["restore", "--store", &pg.url()])
        .arg(&file)
        .assert()
        .code(6)
        .stderr(predicate::str::contains("pg_restore"));
}

/// One web service of one demo-app instance, rolling.
fn web(port: u16) -> String {
    format!(
        "app: backup-test\nservices:\n  web:\n    process: {{command: {exe}, args: [demo-app, --version-label, \"${{VERSION}}\"]}}\n    \
         replicas: 1\n    route: {{listen: \"127.0.0.1:{port}\"}}\n    health:\n      \
         readiness: {{path: /ready, period: 100ms}}\n    drain: 200ms\n    \
         strategy: {{rolling: {{maxSurge: 1, maxUnavailable: 0}}}}\n",
        exe = env!("CARGO_BIN_EXE_hatoba")
    )
}

#[test]
fn after_a_clean_stop_hatoba_db_alone_holds_the_history_and_state_is_private() {
    let sb = crate::support::Sandbox::new(web);
    let up = sb.up(&[]);
    sb.deploy_ok("v1");
    sb.deploy_ok("v2");
    // Readable by the owner only, while it runs: state, database, logs.
    assert_eq!(mode(&sb.state), 0o700);
    for f in ["hatoba.db", "hatoba.db-wal", "hatoba.db-shm"] {
        assert_eq!(mode(&sb.state.join(f)), 0o600, "{f}");
    }
    let logs: Vec<_> = std::fs::read_dir(sb.state.join("logs").join("web"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!logs.is_empty());
    for log in &logs {
        assert_eq!(mode(log), 0o600, "{}", log.display());
    }
    assert!(up.terminate(), "a clean stop");

    let wal = std::fs::metadata(sb.state.join("hatoba.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the write-ahead log was moved into hatoba.db");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(sb.state.join("hatoba.db"), copy.join("hatoba.db")).unwrap();
    let out = hatoba(&copy)
        .args(["history", "--output", "json"])
        .output()
        .unwrap();
    let versions: Vec<String> = json(&out)["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["version"], d["status"]))
        .collect();
    assert_eq!(versions, [r#""v2" "succeeded""#, r#""v1" "succeeded""#]);
}

#[test]
fn a_backup_restores_onto_a_new_machine() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    runtime().block_on(async {
        let store = SqlStore::open_sqlite(old.join("hatoba.db")).await.unwrap();
        for i in 0..3 {
            deploy(&store, i).await;
        }
        store.close().await;
    });
    let copy = dir.path().join("nightly.db");
    hatoba(&old)
        .args(["backup", "--to"])
        .arg(&copy)
        .assert()
        .success()
        .stdout(predicate::str::starts_with(format!(
            "wrote {} (3 deployments), ",
            copy.display()
        )))
        .stdout(predicate::str::contains(format!(
            "restore it with `hatoba restore {}`",
            copy.display()
        )));

    let new = dir.path().join("new").join("state");
    hatoba(&new)
        .arg("restore")
        .arg(&copy)
        .assert()
        .success()
        .stdout(format!(
            "restored 3 deployments from {} into {}\n",
            copy.display(),
            new.join("hatoba.db").display()
        ));
    assert_eq!(mode(&new), 0o700);
    assert_eq!(mode(&new.join("hatoba.db")), 0o600);
    let out = hatoba(&new)
        .args(["history", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["deployments"].as_array().unwrap().len(), 3);
    // The copy itself was only read.
    assert!(!with_wal(&copy).exists());
}

fn with_wal(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}
