//! `hatoba up` with `deploy`, `promote`, `abort` and `status` against it,
//! as a user runs them: the spec's service is this very binary as the demo
//! app (`hatoba demo-app`).

use crate::support::{Sandbox, Traffic, hatoba, latest};
use predicates::prelude::*;
use std::path::Path;
use std::time::Duration;

pub(crate) fn spec(port: u16) -> String {
    crate::support::CanaryWeb {
        app: "up-test",
        replicas: 2,
        progress_deadline: "10s",
        drain: "1s",
        canary: "        steps:
          - setWeight: 50
          - pause: {}
        analysis: {templates: [success]}",
        templates: "    success:
      metrics:
        - name: success-rate
          interval: 1s
          successCondition: result >= 0.95
          provider: {builtin: {metric: success-rate, window: 10s}}",
    }
    .spec(port)
}

/// A spec with one service, `web`, on `port`: `process` and `strategy` as
/// YAML flow mappings, readiness on `/ready` every 100 ms, 1 s drain.
pub(crate) fn web_spec(port: u16, process: &str, replicas: u32, strategy: &str) -> String {
    format!(
        "app: web-test\nservices:\n  web:\n    process: {process}\n    replicas: {replicas}\n    \
         route: {{listen: \"127.0.0.1:{port}\"}}\n    health:\n      \
         readiness: {{path: /ready, period: 100ms}}\n    drain: 1s\n    strategy: {strategy}\n"
    )
}

/// This binary as the demo app, labelled `label` (`${VERSION}` and the like
/// are expanded by Hatoba).
pub(crate) fn demo_process(label: &str) -> String {
    format!(
        r#"{{command: {exe}, args: ["demo-app", "--version-label", "{label}"]}}"#,
        exe = env!("CARGO_BIN_EXE_hatoba")
    )
}

/// One web service of `replicas` instances of `process`, updated one
/// instance at a time (maxSurge 1, maxUnavailable 0).
pub(crate) fn rolling_web(process: &str, replicas: u32) -> Sandbox {
    let process = process.to_owned();
    Sandbox::new(move |port| {
        let strategy = "{rolling: {maxSurge: 1, maxUnavailable: 0}}";
        web_spec(port, &process, replicas, strategy)
    })
}

fn status_version(state: &Path) -> Option<String> {
    let out = hatoba(state).args(["status", "-o", "json"]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["services"][0]["current_version"]
        .as_str()
        .map(str::to_owned)
}

fn live_status(state: &Path) -> Option<String> {
    latest(state)["status"].as_str().map(str::to_owned)
}

fn poll(what: &str, mut f: impl FnMut() -> bool) {
    crate::support::poll(what, Duration::from_secs(30), || f().then_some(()));
}

/// `hatoba diagnose web -o json`.
pub(crate) fn diagnose(state: &Path) -> serde_json::Value {
    let out = hatoba(state)
        .args(["diagnose", "web", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The running instances in a `diagnose` answer, of `version` or of any:
/// (id, pid).
pub(crate) fn running(v: &serde_json::Value, version: Option<&str>) -> Vec<(String, u64)> {
    v["service"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "running" && version.is_none_or(|want| i["version"] == want))
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The messages of the events in a `diagnose` answer.
fn event_messages(v: &serde_json::Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

fn kill9(pid: u64) {
    signal(pid, nix::sys::signal::Signal::SIGKILL);
}

fn signal(pid: u64, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()), sig).unwrap();
}

#[test]
fn up_then_deploy_promote_roll_back_and_abort() {
    let sb = Sandbox::new(spec);
    let (state, port) = (sb.state.clone(), sb.port);

    // No server yet: commands say so with exit 3.
    hatoba(&state)
        .args(["deploy", "web", "--version", "v1"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("hatoba up"));

    let mut server = sb.up(&[]);

    hatoba(&state)
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .assert()
        .success()
        .stdout(predicate::str::contains("succeeded"));
    assert_eq!(status_version(&state).as_deref(), Some("v1"));

    // Every answer from here on is counted: promote, the rollback by
    // analysis, abort and both manual rollbacks fail no request.
    let load = Traffic::start(port);
    load.wait_answered(20);

    // v2 waits at `pause: {}` until promoted; meanwhile a second deploy is refused.
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    // Paused: the pause step is in the deployment's events (a promote sent
    // while the canary instance still starts would only move it past the
    // 50 % step, not past the pause).
    poll("v2 paused at 50%", || {
        let id = latest(&state)["id"].as_str().map(str::to_owned);
        id.is_some_and(|id| {
            let out = hatoba(&state)
                .args(["diagnose", "web", "-o", "json"])
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("pause until"))
                })
            }) && v["history"][0]["id"] == id.as_str()
        })
    });
    hatoba(&state)
        .args(["deploy", "web", "--version", "v9"])
        .assert()
        .code(5)
        .stderr(predicate::str::contains(
            "already has a deployment in progress",
        ));
    // Promote: the rollout goes on to 100 % and finishes.
    hatoba(&state).args(["promote", "web"]).assert().success();
    // Serving first (v2 current for `status`), complete once v1 is
    // stopped: only then does a new deployment go through.
    crate::support::poll_explained(
        "v2 current and complete",
        Duration::from_secs(30),
        || {
            (status_version(&state).as_deref() == Some("v2")
                && crate::support::latest(&state)["status"] == "succeeded")
                .then_some(())
        },
        || {
            let out = hatoba(&state).args(["diagnose", "web"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        },
    );

    // v3 answers errors: analysis rolls it back by itself; --wait exits 1.
    sb.deploy_fails(
        "v3",
        "ERROR_RATE=1",
        "rolled_back: background analysis failed",
    );
    assert_eq!(status_version(&state).as_deref(), Some("v2"));

    // v4 is aborted by a person.
    hatoba(&state)
        .args(["deploy", "web", "--version", "v4"])
        .assert()
        .success();
    poll("v4 in progress", || {
        live_status(&state).as_deref() == Some("in_progress")
    });
    hatoba(&state).args(["abort", "web"]).assert().success();
    poll("v4 aborted", || {
        live_status(&state).as_deref() == Some("aborted")
    });
    assert_eq!(status_version(&state).as_deref(), Some("v2"));
    hatoba(&state)
        .args(["abort", "web"])
        .assert()
        .code(5)
        .stderr(predicate::str::contains("no deployment in progress"));

    // Manual rollback: to a named version, then to the previous one.
    hatoba(&state)
        .args(["rollback", "web", "--to", "v1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("succeeded"));
    assert_eq!(status_version(&state).as_deref(), Some("v1"));
    hatoba(&state).args(["rollback", "web"]).assert().success();
    assert_eq!(status_version(&state).as_deref(), Some("v2"));
    let out = hatoba(&state)
        .args(["history", "-o", "json", "--limit", "1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["deployments"][0]["rollback_of"].is_string(), "{v}");
    hatoba(&state)
        .args(["rollback", "web", "--to", "v3"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("never succeeded"));

    let counts = load.finish();
    counts.assert_no_failed(100);
    // The only 5xx are v3's own (ERROR_RATE=1), counted apart: it served
    // some before analysis caught it, and no other version answered one.
    assert!(
        counts.app_errors.get("v3").is_some_and(|n| *n > 0)
            && counts.app_errors.keys().all(|v| v == "v3"),
        "{counts}"
    );
    assert!(
        ["v1", "v2"].iter().all(|v| counts.ok.contains_key(*v)),
        "{counts}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(server.0.wait().unwrap().success());
    assert!(!state.join("server.json").exists());
}

#[test]
fn environments_that_require_approval_wait_for_someone_else_to_approve() {
    let sb = Sandbox::new(|port| {
        spec(port) + "environments:\n  production:\n    requireApproval: true\n"
    });
    let state = sb.state.clone();
    let start = || sb.up(&["--env", "production"]);
    let server = start();
    let out = hatoba(&state)
        .args(["deploy", "web", "--version", "v1", "--as", "alice"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("waits for approval"), "{text}");
    let id = text.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(live_status(&state).as_deref(), Some("pending"));
    // `status` says what it waits for, and the command that moves it on.
    let status = hatoba(&state).args(["status", "web"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("waiting for approval") && status.contains(&format!("hatoba approve {id}")),
        "{status}"
    );

    // The wait is recorded: a server killed and started again still waits.
    server.kill9();
    let _server = start();
    assert_eq!(live_status(&state).as_deref(), Some("pending"));

    // Whoever deployed cannot approve; someone else can.
    hatoba(&state)
        .args(["approve", &id, "--as", "alice"])
        .assert()
        .code(5)
        .stderr(predicate::str::contains("cannot also approve"));
    assert_eq!(live_status(&state).as_deref(), Some("pending"));
    hatoba(&state)
        .args(["approve", &id, "--as", "bob"])
        .assert()
        .success()
        .stdout(predicate::str::contains("approved by bob"));
    poll("v1 succeeded", || {
        live_status(&state).as_deref() == Some("succeeded")
    });
    assert_eq!(status_version(&state).as_deref(), Some("v1"));
    // Approving again: nothing waits any more.
    hatoba(&state)
        .args(["approve", &id, "--as", "bob"])
        .assert()
        .code(5)
        .stderr(predicate::str::contains("not waiting for approval"));
}

/// Between rollouts the supervisor keeps what serves serving: a killed
/// instance is replaced, `diagnose` and `logs` show what runs.
#[test]
fn a_killed_instance_is_restarted_and_diagnose_shows_it() {
    let sb = Sandbox::new(spec);
    let state = sb.state.clone();
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    let detail = || diagnose(&state);
    let running = |v: &serde_json::Value| running(v, None);
    let before = running(&detail());
    assert_eq!(before.len(), 2, "{before:?}");
    let (victim, pid) = before[0].clone();
    kill9(pid);
    poll("a replacement", || {
        let now = running(&detail());
        now.len() == 2 && !now.iter().any(|(id, _)| *id == victim)
    });
    let v = detail();
    assert_eq!(v["service"]["recent_restarts"], 1, "{v}");
    let events = event_messages(&v);
    assert!(
        events
            .iter()
            .any(|e| e.contains(&victim) && e.contains("killed by signal 9")),
        "{events:?}"
    );
    poll("both instances back in the route", || {
        let v = detail();
        v["service"]["route"][0]["backends"]
            .as_array()
            .is_some_and(|b| b.len() == 2)
    });
    // status adds what runs now (from the server) to the history's view.
    hatoba(&state)
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("2/2 in route"));
    // The text form names the instances and the route; logs prints lines.
    hatoba(&state)
        .args(["diagnose", "web"])
        .assert()
        .success()
        .stdout(predicate::str::contains("instances:"))
        .stdout(predicate::str::contains("stable  v1"));
    hatoba(&state)
        .args(["logs", "web", "-n", "5"])
        .assert()
        .success()
        .stdout(predicate::str::contains("[web-v1-"));
}

/// A stable instance killed while a canary waits at its pause is started
/// again by the rollout (the supervisor stands aside while one runs), so an
/// abort goes back to the full old version.
#[test]
fn a_stable_instance_killed_during_a_rollout_is_restarted() {
    stable_instance_replaced_during_a_rollout(spec, kill9, "exited during the rollout");
}

/// A stable instance that hangs (SIGSTOP: the kernel still accepts its
/// connections, nothing answers) while a canary waits is stopped and
/// started again once its liveness probe has failed.
#[test]
fn a_stable_instance_that_hangs_during_a_rollout_is_replaced() {
    let with_liveness = |port| {
        let text = spec(port)
            .replace(
                "      readiness: {path: /ready, period: 100ms}\n",
                "      readiness: {path: /ready, period: 100ms}\n      \
                 liveness: {path: /health, period: 200ms, timeout: 200ms, failureThreshold: 2}\n",
            )
            .replace(
                "    drain: 1s\n",
                "    drain: 1s\n    terminationGracePeriod: 1s\n",
            );
        assert!(text.contains("liveness:") && text.contains("terminationGracePeriod"));
        text
    };
    stable_instance_replaced_during_a_rollout(
        with_liveness,
        |pid| signal(pid, nix::sys::signal::Signal::SIGSTOP),
        "failed its liveness probe /health 2 times in a row (last: GET /health no answer within 200ms)",
    );
}

/// v1 serves, v2 waits at its pause, `break_it` is done to one v1 instance:
/// the rollout replaces it (an event naming it says `why`), and an abort
/// goes back to both v1 instances in the route.
fn stable_instance_replaced_during_a_rollout(
    spec: impl Fn(u16) -> String,
    break_it: fn(u64),
    why: &str,
) {
    let sb = Sandbox::new(spec);
    let state = sb.state.clone();
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    poll("v2 at its pause", || {
        live_status(&state).as_deref() == Some("in_progress")
    });
    let detail = || diagnose(&state);
    let running_v1 = |v: &serde_json::Value| running(v, Some("v1"));
    let before = running_v1(&detail());
    assert_eq!(before.len(), 2, "{before:?}");
    let (victim, pid) = before[0].clone();
    break_it(pid);
    poll("a replacement of the stable instance", || {
        let now = running_v1(&detail());
        now.len() == 2 && !now.iter().any(|(id, _)| *id == victim)
    });
    assert_eq!(live_status(&state).as_deref(), Some("in_progress"));
    let events = event_messages(&detail());
    assert!(
        events
            .iter()
            .any(|e| e.contains(&victim) && e.contains(why) && e.contains("restarted as")),
        "{events:?}"
    );
    hatoba(&state).args(["abort", "web"]).assert().success();
    poll("v2 aborted", || {
        live_status(&state).as_deref() == Some("aborted")
    });
    assert_eq!(status_version(&state).as_deref(), Some("v1"));
    poll("both v1 instances in the route", || {
        let v = detail();
        v["service"]["route"][0]["backends"]
            .as_array()
            .is_some_and(|b| b.len() == 2)
            && running_v1(&v).len() == 2
    });
}

/// During the watch after promotion the previous version is still warm:
/// `hatoba rollback` sends traffic back to it at once, and a regression
/// would too.
#[test]
fn rollback_during_the_watch_returns_to_the_warm_version_at_once() {
    let sb = Sandbox::new(|port| {
        let text = spec(port)
            .replace("    drain: 1s\n", "    drain: 1s\n    watch: 5m\n")
            .replace("          - pause: {}\n", "");
        assert!(text.contains("watch: 5m"));
        text
    });
    let (state, port) = (sb.state.clone(), sb.port);
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    let load = Traffic::start(port);
    load.wait_answered(20);
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    let route = || {
        let out = hatoba(&state)
            .args(["diagnose", "web", "-o", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["service"]["route"].clone()
    };
    // v2 takes all the traffic while v1 stays warm (in the table at 0 %).
    poll("v2 at 100 % with v1 warm", || {
        let r = route();
        r.as_array().is_some_and(|groups| {
            groups
                .iter()
                .any(|g| g["version"] == "v2" && g["weight"] == 100)
                && groups.iter().any(|g| {
                    g["version"] == "v1" && g["backends"].as_array().is_some_and(|b| b.len() == 2)
                })
        })
    });
    assert_eq!(live_status(&state).as_deref(), Some("in_progress"));
    // What serves is v2 for `status` too, with v1 warm for the watch.
    poll("status to show v2 serving with v1 warm", || {
        let out = hatoba(&state)
            .args(["status", "-o", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let s = &v["services"][0];
        s["current_version"] == "v2"
            && s["warm"]["version"] == "v1"
            && s["warm"]["remaining_ms"]
                .as_u64()
                .is_some_and(|ms| ms > 60_000)
    });
    hatoba(&state)
        .args(["rollback", "web"])
        .assert()
        .success()
        .stdout(predicate::str::contains("aborting it"));
    let r = route();
    assert!(
        r.as_array()
            .unwrap()
            .iter()
            .all(|g| g["version"] == "v1" || g["weight"] == 0),
        "{r}"
    );
    assert_eq!(live_status(&state).as_deref(), Some("aborted"));
    assert_eq!(status_version(&state).as_deref(), Some("v1"));
    // The flip back to v1 failed no request, and v1 answers again.
    poll("v1 answering", || {
        crate::support::served(port).as_deref() == Ok("v1")
    });
    load.finish().assert_no_failed(50);
}

/// A regression that shows only once the new version has all the traffic
/// (here: its instances crash after a few hundred requests) is caught
/// during the watch after promotion and traffic flips back to the warm
/// previous version.
#[test]
fn a_regression_at_100_percent_is_rolled_back_during_the_watch() {
    let sb = Sandbox::new(|port| {
        let text = spec(port)
            .replace("    drain: 1s\n", "    drain: 1s\n    watch: 5m\n")
            .replace(
                "      env: {DEMO_ERROR_RATE: \"${ERROR_RATE:-0}\"}\n",
                "      env: {DEMO_ERROR_RATE: \"${ERROR_RATE:-0}\", DEMO_CRASH_AFTER: \"${CRASH_AFTER:-0}\"}\n",
            )
            .replace("          - pause: {}\n", "");
        assert!(text.contains("watch: 5m") && text.contains("CRASH_AFTER"));
        text
    });
    let (state, port) = (sb.state.clone(), sb.port);
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    let load = Traffic::start(port);
    load.wait_answered(20);
    // v2 passes its 50 % step, then at 100 % its instances start crashing.
    sb.deploy_fails(
        "v2",
        "CRASH_AFTER=1000",
        "rolled_back: regression during the watch after promotion",
    );
    let out = hatoba(&state)
        .args(["analysis", latest(&state)["id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let events = hatoba(&state)
        .args(["diagnose", "web", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    let messages: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("at 100 %: watching")),
        "{messages:?}"
    );
    assert_eq!(status_version(&state).as_deref(), Some("v1"));
    poll("v1 answering", || {
        crate::support::served(port).as_deref() == Ok("v1")
    });
    // A crashing v2 and the flip back failed no request.
    let counts = load.finish();
    counts.assert_no_failed(200);
    assert!(counts.ok.contains_key("v2"), "{counts}");
}

/// `hatoba up` started again on a spec that dropped a service stops serving
/// it: its data-plane listener closes (the data plane outlived the old
/// controller), and the service that stays keeps serving: not one of its
/// requests fails across the kill and the restart.
#[test]
fn a_service_dropped_from_the_spec_stops_being_served() {
    let api_port = hatoba_test_support::free_port().unwrap();
    let with_api = move |port: u16| {
        spec(port).replacen(
            "services:\n",
            &format!(
                "services:\n  api:\n    process:\n      command: {exe}\n      \
                 args: [\"demo-app\", \"--version-label\", \"${{VERSION}}\"]\n    \
                 replicas: 1\n    route: {{listen: \"127.0.0.1:{api_port}\"}}\n    \
                 health:\n      readiness: {{path: /ready, period: 100ms}}\n    \
                 strategy:\n      rolling: {{maxSurge: 1, maxUnavailable: 0}}\n",
                exe = env!("CARGO_BIN_EXE_hatoba")
            ),
            1,
        )
    };
    let sb = Sandbox::new(with_api);
    let server = sb.up(&[]);
    sb.deploy_ok("v1");
    hatoba(&sb.state)
        .args(["deploy", "api", "--version", "a1", "--wait"])
        .assert()
        .success();
    assert_eq!(crate::support::served(api_port).as_deref(), Ok("a1"));

    let load = Traffic::start(sb.port);
    load.wait_answered(20);
    // SIGKILL: the data plane keeps serving both; then the spec loses `api`.
    server.kill9();
    assert_eq!(crate::support::served(api_port).as_deref(), Ok("a1"));
    std::fs::write(&sb.file, spec(sb.port)).unwrap();
    let _server = sb.up(&[]);
    poll("the dropped service's port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err()
    });
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("v1"));
    load.finish().assert_no_failed(20);
}

/// A rollback runs the earlier version with the variables it ran with
/// (`--set`), not without them; the rolling update and the rollback (onto
/// a version no longer running) fail no request.
#[test]
fn a_rollback_keeps_the_variables_the_version_ran_with() {
    let sb = rolling_web(&demo_process("${VERSION}${FLAVOUR:-}"), 1);
    let _server = sb.up(&[]);
    // A name that no `${...}` could use is refused before anything starts.
    for bad in ["=x", "1X=y", "A B=c"] {
        hatoba(&sb.state)
            .args(["deploy", "web", "--version", "v1", "--set", bad])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("is not a variable name"));
    }
    // A name the service never uses is refused too, with the near one.
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v1", "--set", "FLAVOR=x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("uses no ${FLAVOR}"))
        .stderr(predicate::str::contains("did you mean `FLAVOUR`?"));
    // A service name that breaks the rule says the rule.
    hatoba(&sb.state)
        .args(["deploy", "Web!", "--version", "v1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "`Web!` is not a valid service name",
        ))
        .stderr(predicate::str::contains("lowercase letters"));
    // The names Hatoba sets itself are refused as such: the service does
    // use ${VERSION}, so "uses no ${VERSION}" would be wrong.
    for (own, hint) in [("VERSION=x", "--version"), ("PORT=1", "port")] {
        hatoba(&sb.state)
            .args(["deploy", "web", "--version", "v1", "--set", own])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("is set by Hatoba"))
            .stderr(predicate::str::contains(hint))
            .stderr(predicate::str::contains("uses no").not());
    }
    assert!(latest(&sb.state).is_null(), "{}", latest(&sb.state));
    hatoba(&sb.state)
        .args([
            "deploy",
            "web",
            "--version",
            "v1",
            "--set",
            "FLAVOUR=-salted",
            "--wait",
        ])
        .assert()
        .success();
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("v1-salted"));
    let load = Traffic::start(sb.port);
    load.wait_answered(20);
    sb.deploy_ok("v2");
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("v2"));
    hatoba(&sb.state)
        .args(["rollback", "web"])
        .assert()
        .success();
    poll("the rollback to v1 as it ran", || {
        crate::support::served(sb.port).as_deref() == Ok("v1-salted")
    });
    // `deploy --wait` and `rollback` return as soon as the stream says so:
    // the load is given the time to reach what it is judged on.
    load.wait_answered(50);
    let counts = load.finish();
    counts.assert_no_failed(50);
    assert!(counts.ok.contains_key("v2"), "{counts}");
}

/// A new version whose liveness path fails is rolled back once the probe
/// has failed `failureThreshold` times at the liveness period (not at
/// readiness's faster one), and the reason says what the probe got.
#[test]
fn a_canary_failing_liveness_is_rolled_back_at_the_liveness_period() {
    let sb = Sandbox::new(|port| {
        let text = spec(port)
            .replace(
                "      readiness: {path: /ready, period: 100ms}\n",
                "      readiness: {path: /ready, period: 100ms}\n      \
                 liveness: {path: /health, period: 1s, failureThreshold: 2}\n",
            )
            .replace(
                "      env: {DEMO_ERROR_RATE: \"${ERROR_RATE:-0}\"}\n",
                "      env: {DEMO_ERROR_RATE: \"${ERROR_RATE:-0}\", DEMO_FAIL_HEALTH: \"${FAIL_HEALTH:-false}\"}\n",
            );
        assert!(text.contains("liveness:") && text.contains("FAIL_HEALTH"));
        text
    });
    let state = sb.state.clone();
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    let started = std::time::Instant::now();
    sb.deploy_fails(
        "v2",
        "FAIL_HEALTH=true",
        "failed its liveness probe /health 2 times in a row (last: GET /health answered 500)",
    );
    // Two failures one period apart: about a second, where probing at
    // the readiness period would have taken 0.2 s. Not a whole second:
    // `--wait` follows the event stream and returns within milliseconds of
    // the end (polling added up to 250 ms), and the second probe was seen
    // to come a few tens of milliseconds short of its period after the
    // start (995 ms in all).
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "rolled back after {:?}",
        started.elapsed()
    );
    assert_eq!(status_version(&state).as_deref(), Some("v1"));
}

/// Blue-green through `hatoba up`: the preview address shows the serving
/// version between rollouts and the new colour while it waits for
/// promotion, also after the controller is killed and started again;
/// `hatoba promote` switches every request at once, and the preview then
/// shows the new version too (as Argo Rollouts' preview Service does).
/// Not one request fails on either address meanwhile.
#[test]
fn blue_green_shows_the_new_colour_on_the_preview_address_until_promoted() {
    let preview = hatoba_test_support::free_port().unwrap();
    let sb = Sandbox::new(move |port| {
        let strategy = format!(
            "{{blueGreen: {{previewListen: \"127.0.0.1:{preview}\", \
             autoPromotionEnabled: false, scaleDownDelay: 0s}}}}"
        );
        web_spec(port, &demo_process("${VERSION}"), 2, &strategy)
    });
    let (state, port) = (sb.state.clone(), sb.port);
    let server = sb.up(&[]);
    sb.deploy_ok("v1");
    poll("v1 on the preview address", || {
        crate::support::served(preview).as_deref() == Ok("v1")
    });
    let load = Traffic::start(port);
    let preview_load = Traffic::start(preview);
    load.wait_answered(20);
    preview_load.wait_answered(20);
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    poll("v2 on the preview address", || {
        crate::support::served(preview).as_deref() == Ok("v2")
    });
    assert_eq!(crate::support::served(port).as_deref(), Ok("v1"));
    assert_eq!(live_status(&state).as_deref(), Some("in_progress"));
    // A controller killed while the rollout waits leaves the data plane
    // serving; the one started next resumes showing v2 on the preview.
    server.kill9();
    let _server = sb.up(&[]);
    poll("the rollout resumed", || {
        hatoba(&state)
            .args(["diagnose", "web"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("controller restarted"))
    });
    assert_eq!(crate::support::served(preview).as_deref(), Ok("v2"));
    assert_eq!(crate::support::served(port).as_deref(), Ok("v1"));
    hatoba(&state).args(["promote", "web"]).assert().success();
    poll("v2 current", || {
        status_version(&state).as_deref() == Some("v2")
    });
    assert_eq!(crate::support::served(port).as_deref(), Ok("v2"));
    assert_eq!(crate::support::served(preview).as_deref(), Ok("v2"));
    let (counts, on_preview) = (load.finish(), preview_load.finish());
    counts.assert_no_failed(50);
    on_preview.assert_no_failed(50);
    assert!(
        ["v1", "v2"].iter().all(|v| counts.ok.contains_key(*v)),
        "{counts}"
    );
}

/// A version whose program exits at start fails with its exit code and the
/// last line it wrote, which usually says why.
#[test]
fn a_program_that_exits_at_start_fails_with_its_last_words() {
    let sb = rolling_web(
        r#"{command: /bin/sh, args: ["-c", "echo starting; echo 'config: DATABASE_URL is not set' >&2; exit 3"]}"#,
        1,
    );
    let _server = sb.up(&[]);
    let out = hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("exited with code 3; its last output: config: DATABASE_URL is not set"),
        "{text}"
    );
}

/// A command that starts a daemon and returns (here `sleep` in the
/// background) fails a first rolling deployment at once, saying why, and
/// leaves nothing running: before, the rollout waited for an old version
/// that does not exist and the daemon stayed.
#[test]
fn a_command_that_daemonizes_fails_at_once_and_leaves_nothing_running() {
    let sb = rolling_web(
        r#"{command: /bin/sh, args: ["-c", "sleep 300 & exit 0"]}"#,
        1,
    );
    let _server = sb.up(&[]);
    let out = hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("rolled_back"), "{text}");
    assert!(text.contains("exited with code 0"), "{text}");
    assert!(text.contains("foreground"), "{text}");
    let scope = format!(
        "HATOBA_SCOPE={}",
        std::path::absolute(&sb.state).unwrap().display()
    );
    let left = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == scope.as_bytes()))
            })
            .filter(|e| {
                std::fs::read_to_string(e.path().join("cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep"))
            })
            .count()
    };
    poll("the daemon stopped", || left() == 0);
}

/// An app that listens on a port of its own instead of `$PORT` is rolled
/// back at its progress deadline with the reason, and the reason says what
/// to fix.
#[test]
fn an_app_that_ignores_its_port_is_told_to_listen_on_port() {
    let fixed = hatoba_test_support::free_port().unwrap();
    let sb = Sandbox::new(move |port| {
        let process = format!(
            r#"{{command: /bin/sh, args: ["-c", 'PORT={fixed} exec "$0" demo-app', "{exe}"]}}"#,
            exe = env!("CARGO_BIN_EXE_hatoba")
        );
        let strategy = "{rolling: {maxSurge: 1, maxUnavailable: 0}}";
        web_spec(port, &process, 1, strategy) + "    progressDeadline: 2s\n"
    });
    let _server = sb.up(&[]);
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("must listen on the port in $PORT"));
}

/// The data plane process killed with SIGKILL is started again by `hatoba
/// up` (at once: nothing listens on its socket any more), with the same
/// routes, and the service serves again.
#[test]
fn a_killed_data_plane_is_started_again_with_its_routes() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    let data_plane = || crate::support::data_plane_pid(&sb.state);
    let first = data_plane().expect("a data plane process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    poll("another data plane", || {
        data_plane().is_some_and(|p| p != first)
    });
    poll("v1 served again", || {
        crate::support::served(sb.port).as_deref() == Ok("v1")
    });
}

/// An address another process holds stops `hatoba up` at once, with one
/// line that names the address, whose it was to be, and the reason (the
/// data plane process's own message is not repeated around it).
#[test]
fn an_address_in_use_is_named_once_when_up_starts() {
    let preview = hatoba_test_support::free_port().unwrap();
    let sb = Sandbox::new(move |port| {
        let strategy = format!("{{blueGreen: {{previewListen: \"127.0.0.1:{preview}\"}}}}");
        web_spec(port, &demo_process("${VERSION}"), 1, &strategy)
    });
    for (port, whose) in [
        (sb.port, "service `web`".to_owned()),
        (preview, "the preview address of service `web`".to_owned()),
    ] {
        let _held = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let out = hatoba(&sb.state)
            .args(["up", "-f"])
            .arg(&sb.file)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let said = format!("cannot listen on 127.0.0.1:{port} for {whose}: Address already in use");
        assert!(err.contains(&said), "{err}");
        assert_eq!(err.matches("cannot listen").count(), 1, "{err}");
    }
}

/// `hatoba up --keep-running` stopped with SIGTERM (systemd's stop, an
/// upgrade of Hatoba) leaves the service serving without a controller; the
/// next `hatoba up` takes the same instances over instead of starting new
/// ones, and deploys as usual; not one request fails through it all.
#[test]
fn keep_running_leaves_the_service_serving_across_a_controller_restart() {
    let sb = rolling_web(&demo_process("${VERSION}"), 2);
    let (state, port) = (sb.state.clone(), sb.port);
    // Ids and pids: the very same processes, not replacements.
    let instances = |state: &Path| running(&diagnose(state), None);
    let server = sb.up(&["--keep-running"]);
    sb.deploy_ok("v1");
    let before = instances(&state);
    assert_eq!(before.len(), 2, "{before:?}");
    let load = Traffic::start(port);
    load.wait_answered(20);
    assert!(server.terminate(), "hatoba up did not exit 0 on SIGTERM");
    assert_eq!(crate::support::served(port).as_deref(), Ok("v1"));
    let _server = sb.up(&[]);
    assert_eq!(crate::support::served(port).as_deref(), Ok("v1"));
    poll("the same instances taken over", || {
        instances(&state) == before
    });
    sb.deploy_ok("v2");
    assert_eq!(crate::support::served(port).as_deref(), Ok("v2"));
    let counts = load.finish();
    counts.assert_no_failed(50);
    assert!(counts.ok.contains_key("v2"), "{counts}");
}

/// `${NAME}` in a service's fields takes `hatoba up`'s environment when
/// `--set` does not give it (as the examples' `${HATOBA_DEMO_APP:-...}`
/// promises), and a rollback runs with what the deployment recorded.
#[test]
fn variables_come_from_the_environment_of_hatoba_up_unless_set() {
    let sb = rolling_web(&demo_process("${LABEL_FROM_ENV}-${VERSION}"), 1);
    let _server = sb.up_with_env(&[("LABEL_FROM_ENV", "shell")]);
    sb.deploy_ok("v1");
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("shell-v1"));
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v2", "--wait"])
        .args(["--set", "LABEL_FROM_ENV=set"])
        .assert()
        .success();
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("set-v2"));
    hatoba(&sb.state)
        .args(["rollback", "web"])
        .assert()
        .success();
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("shell-v1"));

    // Given by nothing: refused, saying where values come from.
    let bare = rolling_web(&demo_process("${LABEL_FROM_ENV}"), 1);
    let _bare_server = bare.up(&[]);
    hatoba(&bare.state)
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "variable `LABEL_FROM_ENV` is not set",
        ))
        .stderr(predicate::str::contains("`hatoba up`'s environment"));
}

/// Without `--as`, `$USER` or `$LOGNAME` (a container, cron), the history
/// names the account that deployed, not "unknown".
#[test]
fn who_deploys_is_the_account_when_the_environment_does_not_say() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let _server = sb.up(&[]);
    hatoba(&sb.state)
        .env_remove("USER")
        .env_remove("LOGNAME")
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .assert()
        .success();
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .map_or_else(|| format!("uid {}", nix::unistd::getuid()), |u| u.name);
    assert_eq!(latest(&sb.state)["deployed_by"].as_str(), Some(me.as_str()));
}

/// Every instance gets its service and version in `HATOBA_SERVICE` and
/// `HATOBA_VERSION` (here the shell passes the version on as the demo
/// app's label, so what the proxy serves shows it arrived).
#[test]
fn instances_know_their_version_from_the_environment() {
    let process = format!(
        r#"{{command: /bin/sh, args: ["-c", 'exec "$0" demo-app --version-label "$HATOBA_VERSION-$HATOBA_SERVICE"', "{exe}"]}}"#,
        exe = env!("CARGO_BIN_EXE_hatoba")
    );
    let sb = rolling_web(&process, 1);
    let _server = sb.up(&[]);
    sb.deploy_ok("v7");
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("v7-web"));
}

/// Serving before complete, as a user sees it: after `hatoba promote` of a
/// blue-green deployment whose old colour stays warm for 10 minutes,
/// `deploy --wait` has returned (exit 0, saying until when the previous
/// version stays warm), `status` shows v2 as the version and v1 as warm
/// with the time left for an instant rollback, and `history` has its
/// started and serving times (completed once the old colour stops);
/// `--wait=complete` waits for that end. A rollback in the warm window is
/// one weight change back onto the warm colour.
#[test]
fn after_a_blue_green_switch_status_shows_what_serves_and_deploy_wait_returns() {
    let sb = Sandbox::new(|port| {
        let strategy = "{blueGreen: {autoPromotionEnabled: false, scaleDownDelay: 10m}}";
        web_spec(port, &demo_process("${VERSION}"), 1, strategy)
    });
    let (state, port) = (sb.state.clone(), sb.port);
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    let status = || {
        let out = hatoba(&state)
            .args(["status", "-o", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["services"][0].clone()
    };
    let spawn_deploy = |version: &str, wait: &str| {
        crate::support::Reaped(
            std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
                .arg("--state-dir")
                .arg(&state)
                .args(["deploy", "web", "--version", version, wait])
                .env("NO_COLOR", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let awaiting_promotion = || {
        poll("the new colour waiting for promotion", || {
            latest(&state)["status"] == "in_progress"
                && event_messages(&diagnose(&state))
                    .iter()
                    .any(|m| m.contains("waiting for `hatoba promote"))
        });
    };
    let load = Traffic::start(port);
    load.wait_answered(20);

    // `--wait`: returns once v2 serves, with v1 warm.
    let mut waiting = spawn_deploy("v2", "--wait");
    awaiting_promotion();
    hatoba(&state).args(["promote", "web"]).assert().success();
    let ended = crate::support::poll("deploy --wait to return", Duration::from_secs(30), || {
        waiting.0.try_wait().unwrap()
    });
    let mut said = String::new();
    std::io::Read::read_to_string(waiting.0.stdout.as_mut().unwrap(), &mut said).unwrap();
    assert!(ended.success(), "{ended:?}\n{said}");
    assert!(said.contains("serves: v2 takes all traffic"), "{said}");
    assert!(said.contains("v1 stays warm until"), "{said}");
    assert_eq!(crate::support::served(port).as_deref(), Ok("v2"));

    let s = status();
    assert_eq!(s["current_version"], "v2", "{s}");
    assert_eq!(s["current"]["version"], "v2", "{s}");
    assert_eq!(s["live"]["status"], "in_progress", "{s}");
    assert!(s["live"]["serving_at"].is_string(), "{s}");
    assert!(s["live"]["finished_at"].is_null(), "{s}");
    assert_eq!(s["warm"]["version"], "v1", "{s}");
    let left = s["warm"]["remaining_ms"].as_u64().unwrap();
    assert!((540_000..=600_000).contains(&left), "{s}");
    assert!(s["warm"]["until"].is_string(), "{s}");
    let text = hatoba(&state).args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("v1 warm, instant rollback for "), "{text}");
    assert!(text.contains("v2 serving"), "{text}");

    // Started and serving are recorded; completed when the old colour stops
    // (a promote now ends the scale-down delay early).
    let d = latest(&state);
    assert!(
        d["serving_at"].is_string() && d["finished_at"].is_null(),
        "{d}"
    );
    hatoba(&state).args(["promote", "web"]).assert().success();
    poll("v2 complete", || latest(&state)["status"] == "succeeded");
    let d = latest(&state);
    let (started, serving, finished) = (
        d["started_at"].as_str().unwrap().to_owned(),
        d["serving_at"].as_str().unwrap().to_owned(),
        d["finished_at"].as_str().unwrap().to_owned(),
    );
    assert!(started <= serving && serving <= finished, "{d}");
    assert!(
        d["serving_after_ms"].as_u64().unwrap() <= d["duration_ms"].as_u64().unwrap(),
        "{d}"
    );
    assert!(status()["warm"].is_null());
    let text = hatoba(&state).args(["history"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("SERVING AFTER"), "{text}");

    // `--wait=complete`: still waiting while v3 serves and v2 stays warm;
    // it returns when the deployment ends.
    let mut complete = spawn_deploy("v3", "--wait=complete");
    awaiting_promotion();
    hatoba(&state).args(["promote", "web"]).assert().success();
    poll("v3 serving", || status()["current_version"] == "v3");
    assert!(
        complete.0.try_wait().unwrap().is_none(),
        "--wait=complete returned at serving"
    );
    hatoba(&state).args(["promote", "web"]).assert().success();
    let ended = crate::support::poll(
        "deploy --wait=complete to return",
        Duration::from_secs(30),
        || complete.0.try_wait().unwrap(),
    );
    let mut said = String::new();
    std::io::Read::read_to_string(complete.0.stdout.as_mut().unwrap(), &mut said).unwrap();
    assert!(ended.success(), "{ended:?}\n{said}");
    assert!(said.contains("succeeded"), "{said}");

    // A rollback in the warm window: traffic is back on the warm v3 at once.
    hatoba(&state)
        .args(["deploy", "web", "--version", "v4"])
        .assert()
        .success();
    awaiting_promotion();
    hatoba(&state).args(["promote", "web"]).assert().success();
    poll("v4 serving", || status()["warm"]["version"] == "v3");
    assert_eq!(crate::support::served(port).as_deref(), Ok("v4"));
    hatoba(&state)
        .args(["rollback", "web"])
        .assert()
        .success()
        .stdout(predicate::str::contains("aborting it"));
    assert_eq!(crate::support::served(port).as_deref(), Ok("v3"));
    let s = status();
    assert_eq!(s["current_version"], "v3", "{s}");
    assert!(s["warm"].is_null() && s["live"].is_null(), "{s}");
    load.finish().assert_no_failed(50);
}
