//! No promotion without evidence, as a user meets it with `hatoba up`: a
//! bad canary deployed with no traffic is held (not promoted) and says
//! why in `deploy --wait`, `status` and `diagnose`; `hatoba promote`
//! promotes it and marks it, and a rollback without `--to` then skips it;
//! a canary whose analysis provider is down (a webhook answering 500) is
//! held too, and so is one whose command check crashes (exits non-zero
//! where its 0 would pass).

use crate::support::{Sandbox, Traffic, hatoba, latest, poll_explained};
use predicates::prelude::*;
use std::path::Path;
use std::time::Duration;

/// One instance of this binary as the demo app, a canary 50 % → 1 s pause
/// → 100 %, judged by `analysis` (YAML for the canary's `analysis:` key or
/// an extra step), with a progress deadline long enough that a held canary
/// stays held for the test.
fn spec(port: u16, canary: &str, templates: &str) -> String {
    crate::support::CanaryWeb {
        app: "evidence-test",
        replicas: 1,
        progress_deadline: "5m",
        drain: "1s",
        canary,
        templates,
    }
    .spec(port)
}

fn builtin_spec(port: u16) -> String {
    spec(
        port,
        "        steps:
          - setWeight: 50
          - pause: {duration: 1s}
        analysis: {templates: [success]}",
        "    success:
      metrics:
        - name: success-rate
          interval: 1s
          successCondition: result >= 0.95
          provider: {builtin: {metric: success-rate, window: 10s}}",
    )
}

/// Every event message of the service's latest deployment (`diagnose`).
pub(crate) fn events(state: &Path) -> Vec<String> {
    let out = hatoba(state)
        .args(["diagnose", "web", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn wait_for_event(state: &Path, what: &str, contains: &str) -> String {
    poll_explained(
        what,
        Duration::from_secs(60),
        || events(state).into_iter().find(|m| m.contains(contains)),
        || {
            let out = hatoba(state).args(["diagnose", "web"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        },
    )
}

pub(crate) fn status_json(state: &Path) -> serde_json::Value {
    let out = hatoba(state)
        .args(["status", "web", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["services"][0].clone()
}

pub(crate) fn text(state: &Path, args: &[&str]) -> String {
    let out = hatoba(state).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn current(state: &Path) -> Option<String> {
    status_json(state)["current_version"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn a_bad_canary_without_traffic_is_held_until_a_person_promotes_it() {
    let sb = Sandbox::new(builtin_spec);
    let state = sb.state.clone();
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");

    // The README's v3, with no traffic at all: 20 % errors nobody sees.
    let st = state.clone();
    let waiting = std::thread::spawn(move || {
        hatoba(&st)
            .args([
                "deploy",
                "web",
                "--version",
                "v2",
                "--set",
                "ERROR_RATE=0.2",
                "--wait",
            ])
            .output()
            .unwrap()
    });
    let held = wait_for_event(
        &state,
        "the canary held for evidence",
        "held: analysis has no evidence",
    );
    // On a busy machine the hold can come before the first measurement
    // ("no measurement yet"); the measurements then say what is missing.
    assert!(
        (held.contains("0 of the 20 requests needed") || held.contains("no measurement yet"))
            && held.contains("`hatoba promote web` to promote anyway"),
        "{held}"
    );
    poll_explained(
        "a measurement short of evidence",
        Duration::from_secs(30),
        || {
            let report = text(&state, &["analysis", "web", "-o", "json"]);
            report.contains("of the 20 requests needed").then_some(())
        },
        String::new,
    );
    // Held, not promoted: v1 still serves, the deployment is in progress,
    // and `status` and `diagnose` say why.
    assert_eq!(current(&state).as_deref(), Some("v1"));
    assert_eq!(latest(&state)["status"], "in_progress");
    let status = text(&state, &["status", "web"]);
    assert!(
        status.contains("held: analysis has no evidence"),
        "{status}"
    );
    let diagnose = text(&state, &["diagnose", "web"]);
    assert!(
        diagnose.contains("held: analysis has no evidence"),
        "{diagnose}"
    );

    // A person promotes anyway: promoted, and marked with who did it.
    hatoba(&state)
        .env("USER", "alice")
        .args(["promote", "web"])
        .assert()
        .success();
    let out = waiting.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("held: analysis has no evidence")
            && stdout.contains("promoted without evidence by alice"),
        "{stdout}"
    );
    assert_eq!(current(&state).as_deref(), Some("v2"));
    let marked = status_json(&state)["current_without_evidence"]
        .as_str()
        .map(str::to_owned);
    assert!(
        marked
            .as_deref()
            .is_some_and(|m| m.contains("by alice") && m.contains("requests needed")),
        "{marked:?}"
    );
    let status = text(&state, &["status", "web"]);
    assert!(status.contains("promoted without evidence"), "{status}");
    let diagnose = text(&state, &["diagnose", "web"]);
    assert!(
        diagnose.contains("WARNING: v2: promoted without evidence by alice"),
        "{diagnose}"
    );

    // v3 with traffic: judged on evidence and promoted by itself.
    {
        let _load = Traffic::start(sb.port);
        sb.deploy_ok("v3");
    }
    assert_eq!(current(&state).as_deref(), Some("v3"));
    assert!(status_json(&state)["current_without_evidence"].is_null());

    // A rollback without --to skips v2 (promoted without evidence) for v1;
    // --to may still name it.
    hatoba(&state)
        .args(["rollback", "web"])
        .assert()
        .success()
        .stdout(predicate::str::contains("back to v1"));
    assert_eq!(current(&state).as_deref(), Some("v1"));
    hatoba(&state)
        .args(["rollback", "web", "--to", "v2"])
        .assert()
        .success();
    assert_eq!(current(&state).as_deref(), Some("v2"));
}

/// A webhook provider that is down: it answers every request with a 500,
/// until dropped (at most two minutes and 1000 requests).
struct Down {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Down {
    fn start() -> Down {
        use std::io::{Read, Write};
        // Blocking accepts; `drop` wakes the loop with a connection of its own.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut answered = 0;
            while started.elapsed() < Duration::from_secs(120) && answered < 1000 {
                let accepted = listener.accept();
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match accepted {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        answered += 1;
                    }
                    Err(_) => break,
                }
            }
        });
        Down {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the blocked accept, which then sees `stop`.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_canary_whose_provider_is_down_is_held_not_promoted() {
    let down = Down::start();
    let webhook = down.port;
    let sb = Sandbox::new(move |port| {
        spec(
            port,
            "        steps:
          - setWeight: 50
          - pause: {duration: 1s}
        analysis: {templates: [probe]}",
            &format!(
                "    probe:
      metrics:
        - name: probe
          interval: 1s
          successCondition: result >= 1
          provider: {{webhook: {{url: \"http://127.0.0.1:{webhook}/check\", jsonPath: \"$.ok\"}}}}"
            ),
        )
    });
    let state = sb.state.clone();
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    // The provider fails from its first measurement; the steps are over
    // long before its errors reach the limit (5 at 1 s): held at full size.
    let held = wait_for_event(
        &state,
        "the canary held for evidence",
        "canary at full size: held: analysis has no evidence",
    );
    // On a busy machine the hold can come before the first measurement;
    // either way it is for want of evidence, and the verdict below shows
    // the provider's errors.
    assert!(
        held.contains("metric probe: error:") || held.contains("no measurement yet"),
        "{held}"
    );
    // More errors than the limit: inconclusive, still held for a person.
    wait_for_event(
        &state,
        "the analysis inconclusive",
        "promotion will wait for `hatoba promote web`",
    );
    assert_eq!(latest(&state)["status"], "in_progress");
    assert_eq!(current(&state).as_deref(), Some("v1"));
    let report = text(&state, &["analysis", "web", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(
        report["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["metric"] == "probe" && m["verdict"] == "error"),
        "{report}"
    );
    let status = text(&state, &["status", "web"]);
    assert!(status.contains("wait for `hatoba promote web`"), "{status}");
    // The provider's error is in `status`, not only "error".
    assert!(status.contains("probe: error ("), "{status}");
    hatoba(&state).args(["abort", "web"]).assert().success();
    poll_explained(
        "v2 aborted",
        Duration::from_secs(30),
        || (latest(&state)["status"] == "aborted").then_some(()),
        String::new,
    );
    assert_eq!(current(&state).as_deref(), Some("v1"));
}

/// The quiet service's way out: `traffic.generate` has Hatoba send requests
/// to both versions itself, so a canary is judged with nobody using it.
#[test]
fn a_quiet_service_is_judged_on_traffic_hatoba_generates() {
    let sb = Sandbox::new(|port| {
        spec(
            port,
            "        steps:
          - setWeight: 50
          - pause: {duration: 1s}
        analysis: {templates: [success]}",
            "    success:
      traffic:
        minRequests: 10
        generate: {path: /, rate: 20}
      metrics:
        - name: success-rate
          interval: 1s
          successCondition: result >= 0.95
          provider: {builtin: {metric: success-rate, window: 10s}}",
        )
    });
    let state = sb.state.clone();
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    // No user traffic at all: a good version is promoted on evidence.
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2", "--wait"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("generating traffic: GET / through")
                .and(predicate::str::contains("promoted without evidence").not()),
        );
    assert_eq!(current(&state).as_deref(), Some("v2"));
    // And a bad one is caught and rolled back by itself.
    sb.deploy_fails("v3", "ERROR_RATE=0.5", "rolled_back");
    assert_eq!(current(&state).as_deref(), Some("v2"));
}

/// A command check that crashes (exits 2 after printing a number) is no
/// answer: its exit reads as 0, which would pass `failureCondition:
/// result > 0.05` ("0 errors"), so it is a provider error instead, and the
/// canary is held, never promoted on it.
#[test]
fn a_canary_whose_command_check_fails_is_held_not_promoted() {
    let sb = Sandbox::new(|port| {
        spec(
            port,
            "        steps:
          - setWeight: 50
          - analysis: {templates: [check]}",
            "    check:
      metrics:
        - name: error-rate
          interval: 1s
          count: 2
          consecutiveErrorLimit: 3
          failureCondition: result > 0.05
          provider: {command: {command: sh, args: [-c, 'echo 0.01; echo broken >&2; exit 2']}}",
        )
    });
    let state = sb.state.clone();
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    let held = wait_for_event(
        &state,
        "the canary held for evidence",
        "held: analysis has no evidence",
    );
    assert!(
        held.contains("metric error-rate: error: command `sh` exited 2 (stderr: broken)"),
        "{held}"
    );
    // More errors than the limit: inconclusive, still held for a person.
    wait_for_event(
        &state,
        "the step inconclusive",
        "analysis inconclusive: waiting for `hatoba promote",
    );
    assert_eq!(latest(&state)["status"], "in_progress");
    assert_eq!(current(&state).as_deref(), Some("v1"));
    hatoba(&state).args(["abort", "web"]).assert().success();
    poll_explained(
        "v2 aborted",
        Duration::from_secs(30),
        || (latest(&state)["status"] == "aborted").then_some(()),
        String::new,
    );
    assert_eq!(current(&state).as_deref(), Some("v1"));
}
