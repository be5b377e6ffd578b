//! Bad input and faults around `hatoba up`: each gets a clear error and an
//! exit code, the running version keeps serving, and the history keeps
//! every attempt with its reason.

use crate::support::{Sandbox, hatoba, latest as last, served};
use predicates::prelude::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn spec(port: u16) -> String {
    format!(
        r#"app: faults
services:
  web:
    process:
      command: "${{PROGRAM:-{exe}}}"
      args: ["demo-app", "--version-label", "${{VERSION}}"]
      env: {{DEMO_READY_AFTER: "${{READY_AFTER:-0s}}"}}
    replicas: 2
    route: {{listen: "127.0.0.1:{port}"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    progressDeadline: 3s
    drain: 500ms
    strategy:
      canary:
        steps:
          - setWeight: 50
"#,
        exe = env!("CARGO_BIN_EXE_hatoba")
    )
}

fn up(state: &Path, file: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"));
    cmd.arg("--state-dir")
        .arg(state)
        .args(["up", "-f"])
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

fn poll(what: &str, mut f: impl FnMut() -> bool) {
    crate::support::poll(what, Duration::from_secs(30), || f().then_some(()));
}

#[test]
fn a_port_clash_stops_up_with_the_address_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let file = dir.path().join("hatoba.yaml");
    std::fs::write(&file, spec(port)).unwrap();
    let out = up(&state, &file).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("web"),
        "{err}"
    );
    // The data plane it started for this run is gone again.
    poll("no data plane socket", || {
        std::os::unix::net::UnixStream::connect(state.join("dataplane.sock")).is_err()
    });
}

#[test]
fn broken_versions_are_refused_or_rolled_back_while_the_old_one_serves() {
    let sb = Sandbox::new(spec);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    let (state, port) = (&sb.state, sb.port);
    assert_eq!(served(port).as_deref(), Ok("v1"));

    // Unknown service, unknown environment, a bad version name: refused
    // before anything is recorded.
    hatoba(state)
        .args(["deploy", "api", "--version", "v2"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no service `api`"));
    hatoba(state)
        .args(["deploy", "web", "--version", "v2", "--env", "production"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not `production`"));
    hatoba(state)
        .args(["deploy", "web", "--version", "v 2"])
        .assert()
        .code(2);

    // A program that does not exist, one that exits at once, a version that
    // never becomes ready: each rolled back with its reason, v1 serving.
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "v2",
            &["PROGRAM=/nonexistent/app"],
            "cannot start an instance of v2",
        ),
        ("v3", &["PROGRAM=/bin/false"], "exited"),
        ("v4", &["READY_AFTER=1h"], "not ready within 3s"),
    ];
    for (version, sets, reason) in cases {
        let mut cmd = hatoba(state);
        cmd.args(["deploy", "web", "--version", version, "--wait"]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        cmd.assert()
            .code(1)
            .stdout(predicate::str::contains(reason));
        let d = last(state);
        assert_eq!(d["version"], version, "{d}");
        assert_eq!(d["status"], "rolled_back", "{d}");
        assert!(d["reason"].as_str().unwrap().contains(reason), "{d}");
        assert_eq!(served(port).as_deref(), Ok("v1"), "after {version}");
    }

    // The log directory cannot be written (as when the disk is full):
    // the new version cannot start, v1 keeps serving on its open logs.
    let logs = state.join("logs").join("web");
    std::fs::rename(&logs, state.join("logs").join("web-moved")).unwrap();
    std::fs::write(&logs, "not a directory").unwrap();
    hatoba(state)
        .args(["deploy", "web", "--version", "v5", "--wait"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("cannot create the log directory"));
    assert_eq!(served(port).as_deref(), Ok("v1"));
    std::fs::remove_file(&logs).unwrap();

    // The history kept every attempt.
    let out = hatoba(state)
        .args(["history", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<&str> = v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v5", "v4", "v3", "v2", "v1"]);
}

#[test]
fn a_locked_store_is_a_clear_error_and_traffic_goes_on() {
    let sb = Sandbox::new(spec);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    let (state, port) = (&sb.state, sb.port);

    // Another process holds the database's write lock for longer than the
    // server waits for it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Dropping a connection hands it back on the runtime.
    let _in_runtime = rt.enter();
    let store = rt
        .block_on(hatoba_store::SqlStore::open_sqlite(state.join("hatoba.db")))
        .unwrap();
    let lock = rt
        .block_on(
            store.begin_half_written_create(&hatoba_store::NewDeployment {
                service: "other".parse().unwrap(),
                environment: "development".parse().unwrap(),
                version: "v1".parse().unwrap(),
                commit_sha: None,
                strategy: "canary".to_owned(),
                deployed_by: "test".to_owned(),
                rollback_of: None,
                spec_digest: "x".to_owned(),
                vars: Default::default(),
                secrets: Default::default(),
                at: hatoba_core::Millis(1),
            }),
        )
        .unwrap();
    let started = Instant::now();
    hatoba(state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("locked"));
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(served(port).as_deref(), Ok("v1"));
    drop(lock);
    rt.block_on(store.close());
    // Once the lock is gone, deploys work again.
    hatoba(state)
        .args(["deploy", "web", "--version", "v2", "--wait"])
        .assert()
        .success();
    assert_eq!(served(port).as_deref(), Ok("v2"));
}
