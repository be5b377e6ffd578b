//! Several environments in one `hatoba up`: staging and production of one
//! service side by side on their own addresses, deployed apart, restored
//! together after a `kill -9`, and a request that names no environment
//! refused when it could mean either.

use crate::support::{Sandbox, Traffic, api_get, data_plane_pid, hatoba, poll, served};
use crate::up::{demo_process, running, web_spec};
use predicates::prelude::*;
use std::path::Path;
use std::time::Duration;

/// `web` as the demo app, one instance, rolling; staging on `staging`,
/// production on `production`.
fn two_environments(port: u16, staging: u16, production: u16) -> String {
    web_spec(
        port,
        &demo_process("${VERSION}"),
        1,
        "{rolling: {maxSurge: 1, maxUnavailable: 0}}",
    ) + &format!(
        "environments:\n  staging:\n    services:\n      web:\n        route: {{listen: \"127.0.0.1:{staging}\"}}\n  \
         production:\n    services:\n      web:\n        route: {{listen: \"127.0.0.1:{production}\"}}\n"
    )
}

fn deploy(state: &Path, version: &str, env: &str) {
    hatoba(state)
        .args([
            "deploy",
            "web",
            "--version",
            version,
            "--env",
            env,
            "--wait",
        ])
        .assert()
        .success();
}

/// The running instances of `web` in `env`: (id, pid).
fn instances(state: &Path, env: &str) -> Vec<(String, u64)> {
    let out = hatoba(state)
        .args(["diagnose", "web", "--env", env, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["service"]["environment"], env, "{v}");
    running(&v, None)
}

#[test]
fn staging_and_production_run_side_by_side_deploy_apart_and_come_back_after_a_kill() {
    let staging = hatoba_test_support::free_port().unwrap();
    let production = hatoba_test_support::free_port().unwrap();
    let sb = Sandbox::new(|port| two_environments(port, staging, production));
    let state = sb.state.clone();
    let args = ["--env", "staging", "--env", "production"];
    let server = sb.up(&args);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("server.json")).unwrap()).unwrap();
    assert_eq!(
        info["environments"],
        serde_json::json!(["production", "staging"])
    );

    deploy(&state, "v1", "staging");
    deploy(&state, "v1", "production");
    assert_eq!(served(staging).as_deref(), Ok("v1"));
    assert_eq!(served(production).as_deref(), Ok("v1"));
    // The base address is development's, which this server does not run.
    assert!(served(sb.port).is_err());
    // `status` shows each environment with its own running instances.
    let out = hatoba(&state)
        .args(["status", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rows: Vec<(String, usize)> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["environment"].as_str().unwrap().to_owned(),
                s["instances"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [("production".to_owned(), 1), ("staging".to_owned(), 1)],
        "{status}"
    );

    // The API lists both environments, each with its services.
    let raw = api_get(&state, "/api/v1/environments");
    let body = String::from_utf8_lossy(&raw);
    let body = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let list: hatoba_api::EnvironmentList = serde_json::from_str(body).unwrap();
    let names: Vec<(&str, Vec<&str>)> = list
        .environments
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.services.iter().map(|s| s.service.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(names.len(), 2, "{body}");
    assert!(names.contains(&("staging", vec!["web"])), "{body}");
    assert!(names.contains(&("production", vec!["web"])), "{body}");

    // `web` is in both: a request that names neither is refused, listing them.
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2", "--wait"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "service `web` runs in environments `production`, `staging`",
        ))
        .stderr(predicate::str::contains("--env"));
    hatoba(&state)
        .args(["diagnose", "web"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("runs in environments"));
    // An environment the server does not run is refused too.
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2", "--env", "qa"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "runs environments `production`, `staging`, not `qa`",
        ));

    // v2 to staging only: production serves v1 all along.
    let load = Traffic::start(production);
    deploy(&state, "v2", "staging");
    // A loaded machine deploys fast relative to the client: wait for enough
    // answers that "none failed" means something.
    load.wait_answered(10);
    let summary = load.finish();
    summary.assert_no_failed(10);
    assert_eq!(served(staging).as_deref(), Ok("v2"));
    assert_eq!(served(production).as_deref(), Ok("v1"));
    assert_eq!(
        summary.ok.keys().collect::<Vec<_>>(),
        ["v1"],
        "production answered another version: {summary}"
    );

    // kill -9 of `hatoba up`; the next one re-adopts both environments'
    // instances (same pids) and serves both as they were.
    let before_staging = instances(&state, "staging");
    let before_production = instances(&state, "production");
    assert_eq!(before_staging.len(), 1, "{before_staging:?}");
    assert_eq!(before_production.len(), 1, "{before_production:?}");
    server.kill9();
    let server = sb.up(&args);
    assert_eq!(instances(&state, "staging"), before_staging);
    assert_eq!(instances(&state, "production"), before_production);
    assert_eq!(served(staging).as_deref(), Ok("v2"));
    assert_eq!(served(production).as_deref(), Ok("v1"));

    // A killed data plane is started again and takes over both
    // environments' kept sockets, each under its own key: no connection
    // to either is refused.
    let (to_staging, to_production) = (Traffic::start(staging), Traffic::start(production));
    to_staging.wait_answered(20);
    to_production.wait_answered(20);
    let first = data_plane_pid(&state).expect("a data plane process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    poll("another data plane", Duration::from_secs(30), || {
        data_plane_pid(&state).filter(|p| *p != first)
    });
    let (s, p) = (
        to_staging.so_far().answered(),
        to_production.so_far().answered(),
    );
    to_staging.wait_answered(s + 20);
    to_production.wait_answered(p + 20);
    let (s, p) = (to_staging.finish(), to_production.finish());
    s.assert_none_refused(40);
    p.assert_none_refused(40);
    assert_eq!(s.ok.keys().collect::<Vec<_>>(), ["v2"], "{s}");
    assert_eq!(p.ok.keys().collect::<Vec<_>>(), ["v1"], "{p}");
    let log = std::fs::read_to_string(state.join("dataplane.log")).unwrap();
    for key in ["staging/web", "production/web"] {
        assert!(
            log.contains(&format!("service `{key}`: accepting on the ")),
            "{key} did not take over its kept sockets:\n{log}"
        );
    }

    // Then production gets v2.
    deploy(&state, "v2", "production");
    poll("production on v2", Duration::from_secs(10), || {
        (served(production).as_deref() == Ok("v2")).then_some(())
    });
    assert_eq!(served(staging).as_deref(), Ok("v2"));
    // The history keeps each environment's deployments apart.
    let out = hatoba(&state)
        .args(["history", "web", "--env", "production", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<&str> = history["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v2", "v1"], "{history}");

    // A stop stops both environments and the one data plane they share.
    assert!(server.terminate(), "hatoba up did not stop cleanly");
    assert!(served(staging).is_err());
    assert!(served(production).is_err());
    assert!(crate::support::processes_of(&state).is_empty());
}

#[test]
fn two_environments_on_one_address_are_refused_naming_both() {
    let sb = Sandbox::new(|port| two_environments(port, port + 1, port + 1));
    hatoba(&sb.state)
        .args(["up", "-f"])
        .arg(&sb.file)
        .args(["--env", "all", "--in-process-proxy"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "production/web and staging/web both listen on",
        ));
    assert!(!sb.state.join("server.json").exists());
}

#[test]
fn a_server_of_one_environment_refuses_a_command_naming_another() {
    let staging = hatoba_test_support::free_port().unwrap();
    let production = hatoba_test_support::free_port().unwrap();
    let sb = Sandbox::new(|port| two_environments(port, staging, production));
    let _server = sb.up(&["--env", "staging"]);
    for args in [
        &["rollback", "web", "--env", "production"][..],
        &["diagnose", "web", "--env", "production"],
        &["deploy", "web", "--version", "v1", "--env", "production"],
    ] {
        hatoba(&sb.state)
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "runs environment `staging`, not `production`",
            ));
    }
}

/// Adding an environment to a running one re-keys its listener
/// (`web` becomes `staging/web`) and keeps its instances: the same pids
/// serve on the same address after the restart.
#[test]
fn adding_an_environment_keeps_the_running_one_serving_its_instances() {
    let staging = hatoba_test_support::free_port().unwrap();
    let production = hatoba_test_support::free_port().unwrap();
    let sb = Sandbox::new(|port| two_environments(port, staging, production));
    let state = sb.state.clone();
    let server = sb.up(&["--env", "staging"]);
    deploy(&state, "v1", "staging");
    let before = instances(&state, "staging");
    assert_eq!(before.len(), 1, "{before:?}");
    server.kill9();
    let _server = sb.up(&["--env", "staging", "--env", "production"]);
    poll("staging serving v1 again", Duration::from_secs(30), || {
        (served(staging).as_deref() == Ok("v1")).then_some(())
    });
    assert_eq!(instances(&state, "staging"), before);
    assert!(instances(&state, "production").is_empty());
    deploy(&state, "v1", "production");
    assert_eq!(served(production).as_deref(), Ok("v1"));
}
