//! A running `hatoba up` reads its spec again on SIGHUP and `hatoba
//! reload`, under load through the proxy: no connection refused, the new
//! service listens and deploys, an invalid file is refused with its place
//! (exit 2) and changes nothing, a moved listener serves on its new
//! address, and the next deployment of the changed service runs by the new
//! strategy.

use crate::support::{Sandbox, Traffic, hatoba, latest, poll, served};
use crate::up::{demo_process, web_spec};
use predicates::prelude::*;
use std::time::Duration;

const ROLLING: &str = "{rolling: {maxSurge: 1, maxUnavailable: 0}}";
/// Waits at 50 % until promoted.
const CANARY: &str = "{canary: {steps: [{setWeight: 50}, {pause: {}}]}}";

/// The spec of the sandbox after the edit: `web` updated by a canary, and a
/// second service `api` on `api_port`.
fn edited(port: u16, api_port: u16) -> String {
    let process = demo_process("${VERSION}");
    let mut text = web_spec(port, &process, 2, CANARY);
    text.push_str(&format!(
        "  api:\n    process: {process}\n    replicas: 1\n    \
         route: {{listen: \"127.0.0.1:{api_port}\"}}\n    health:\n      \
         readiness: {{path: /ready, period: 100ms}}\n    drain: 1s\n    strategy: {ROLLING}\n"
    ));
    text
}

/// The services the server runs, from its API.
fn services(state: &std::path::Path) -> Vec<String> {
    let answer = crate::support::api_get(state, "/api/v1/services");
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // A chunked body, if it is one: the JSON is the line that starts with `{`.
    let json = body.lines().find(|l| l.starts_with('{')).unwrap_or(body);
    let list: hatoba_api::ServiceList = serde_json::from_str(json).unwrap();
    list.services.into_iter().map(|s| s.service).collect()
}

#[test]
fn sighup_and_hatoba_reload_apply_the_edited_spec_without_refusing_a_connection() {
    let sandbox = Sandbox::new(|port| web_spec(port, &demo_process("${VERSION}"), 2, ROLLING));
    let state = &sandbox.state;
    let up = sandbox.up(&[]);
    sandbox.deploy_ok("v1");
    let traffic = Traffic::clients(sandbox.port, 2);
    traffic.wait_answered(100);

    // Edit the file, then SIGHUP: `api` appears.
    let api_port = hatoba_test_support::free_port().unwrap();
    let edited = edited(sandbox.port, api_port);
    std::fs::write(&sandbox.file, &edited).unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(up.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    poll("the reload on SIGHUP", Duration::from_secs(30), || {
        (services(state) == ["api", "web"]).then_some(())
    });

    // `hatoba reload` of the same file: nothing more changes.
    hatoba(state)
        .arg("reload")
        .assert()
        .success()
        .stdout(predicate::str::contains(": unchanged"));
    // An invalid file is refused with its place, and changes nothing.
    std::fs::write(
        &sandbox.file,
        edited.replace("replicas: 1", "replicas: many"),
    )
    .unwrap();
    let file = sandbox.file.display().to_string();
    hatoba(state)
        .arg("reload")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{file}:")))
        .stderr(predicate::str::contains("nothing changed"));
    // So does a SIGHUP of it: the server logs it and goes on.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::fs::write(&sandbox.file, &edited).unwrap();
    hatoba(state)
        .args(["reload", "-o", "json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"added\":[]"));
    assert_eq!(services(state), ["api", "web"]);

    // The new service deploys; `web`'s next deployment is a canary.
    hatoba(state)
        .args(["deploy", "api", "--version", "a1", "--wait"])
        .assert()
        .success();
    assert_eq!(served(api_port).as_deref(), Ok("a1"));
    // `api` moves: its new address serves what served on the old one.
    let moved_port = hatoba_test_support::free_port().unwrap();
    let moved = edited.replace(
        &format!("127.0.0.1:{api_port}"),
        &format!("127.0.0.1:{moved_port}"),
    );
    std::fs::write(&sandbox.file, &moved).unwrap();
    hatoba(state)
        .arg("reload")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "moved: api: 127.0.0.1:{api_port} -> 127.0.0.1:{moved_port}"
        )));
    assert_eq!(served(moved_port).as_deref(), Ok("a1"));
    poll(
        "the old address of api closed",
        Duration::from_secs(30),
        || {
            std::net::TcpStream::connect(("127.0.0.1", api_port))
                .is_err()
                .then_some(())
        },
    );
    hatoba(state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    let d2 = poll(
        "v2 paused at its canary step",
        Duration::from_secs(60),
        || {
            let d = latest(state);
            (d["version"] == "v2" && d["status"] == "in_progress").then_some(d)
        },
    );
    assert_eq!(d2["strategy"], "canary", "{d2}");
    hatoba(state)
        .args(["promote", "web", "--full"])
        .assert()
        .success();
    poll("v2 succeeded", Duration::from_secs(60), || {
        let d = latest(state);
        (d["version"] == "v2" && d["status"] == "succeeded").then_some(())
    });

    // On a loaded machine the reloads may be over before 200 answers.
    traffic.wait_answered(200);
    let summary = traffic.finish();
    summary.assert_no_failed(200);
    assert_eq!(summary.refused, 0, "{summary}");
    assert!(summary.ok.contains_key("v2"), "{summary}");
    drop(up);
}
