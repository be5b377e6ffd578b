//! The CLI as a client of a server it does not share a state directory
//! with: `--server URL` (or `HATOBA_SERVER`) and `HATOBA_TOKEN`, from a
//! state directory that is empty and stays so. Deploy, status, history,
//! analysis, diagnose, events (`-f` too), logs (`-f` too), secret, promote and watch go
//! through the API; a wrong or missing token
//! is refused with exit 5 and a hint to set HATOBA_TOKEN; a server that
//! does not answer is exit 3 naming its URL, never a read of the local
//! store instead.

use crate::support::hatoba;
use crate::up::{demo_process, rolling_web};
use predicates::prelude::*;
use std::path::Path;

/// `hatoba --server URL` from `dir`, with `token` in HATOBA_TOKEN.
fn remote(dir: &Path, url: &str, token: &str) -> assert_cmd::Command {
    let mut cmd = hatoba(dir);
    cmd.arg("--server").arg(url).env("HATOBA_TOKEN", token);
    cmd
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn a_cli_with_an_empty_state_dir_drives_a_server_through_its_url_and_token() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let api_port = hatoba_test_support::free_port().unwrap();
    let _up = sb.up(&["--api", &format!("127.0.0.1:{api_port}")]);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.state.join("server.json")).unwrap())
            .unwrap();
    assert_eq!(info["api"], format!("127.0.0.1:{api_port}"), "{info}");
    let token = std::fs::read_to_string(sb.state.join("token")).unwrap();
    let url = format!("http://127.0.0.1:{api_port}");
    let elsewhere = tempfile::tempdir().unwrap();
    let here = elsewhere.path().join("state");

    remote(&here, &url, token.trim())
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .assert()
        .success()
        .stdout(predicate::str::contains("succeeded"));

    // Status: the history and the running instance, which only the server knows.
    let status = json(
        &remote(&here, &url, token.trim())
            .args(["status", "-o", "json"])
            .output()
            .unwrap(),
    );
    let web = &status["services"][0];
    assert_eq!(web["service"], "web", "{status}");
    assert_eq!(web["current_version"], "v1", "{status}");
    assert_eq!(
        web["instances"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    remote(&here, &url, token.trim())
        .arg("status")
        .assert()
        .success()
        .stdout(predicate::str::contains("1/1 in route"));

    // History, also with the URL from HATOBA_SERVER.
    let history = json(
        &hatoba(&here)
            .env("HATOBA_SERVER", &url)
            .env("HATOBA_TOKEN", token.trim())
            .args(["history", "web", "-o", "json"])
            .output()
            .unwrap(),
    );
    let deployments = history["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 1, "{history}");
    assert_eq!(deployments[0]["version"], "v1", "{history}");
    assert_eq!(deployments[0]["status"], "succeeded", "{history}");
    let id = deployments[0]["id"].as_str().unwrap().to_owned();

    // Analysis, by deployment and by service.
    for target in [id.as_str(), "web"] {
        let a = json(
            &remote(&here, &url, token.trim())
                .args(["analysis", target, "-o", "json"])
                .output()
                .unwrap(),
        );
        assert_eq!(a["deployment"]["id"], id.as_str(), "{a}");
    }
    remote(&here, &url, token.trim())
        .args(["analysis", "d-nothing"])
        .assert()
        .code(4);

    // Diagnose, with the instance's last output lines from the server.
    let d = json(
        &remote(&here, &url, token.trim())
            .args(["diagnose", "web", "-o", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(d["service"]["serving_version"], "v1", "{d}");
    assert_eq!(d["history"][0]["id"], id.as_str(), "{d}");
    assert!(
        d["logs"][0]["lines"].as_array().is_some_and(|l| l
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("listening on")))),
        "{d}"
    );
    remote(&here, &url, token.trim())
        .args(["diagnose", "web"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("v1 serves")
                .and(predicate::str::contains("| demo app v1 listening on")),
        );

    // The event stream's stored events, from the server named by URL.
    let events = remote(&here, &url, token.trim())
        .args(["events", "web", "-o", "json"])
        .output()
        .unwrap();
    assert!(events.status.success(), "{events:?}");
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    assert!(
        events
            .lines()
            .any(|l| l.contains(id.as_str()) && l.contains("\"kind\":\"serving\"")),
        "{events}"
    );

    // And its live stream (`-f`), opened on the server named by URL: the
    // stored events come first.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["--state-dir"])
        .arg(&here)
        .args(["--server", &url, "events", "web", "-f", "-o", "json"])
        .env("HATOBA_TOKEN", token.trim())
        .env_remove("HATOBA_SERVER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("\"kind\":\"serving\""))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = follow.kill();
                let out = follow.wait_with_output().unwrap();
                panic!("no serving event followed: {seen:?}; {out:?}");
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();

    // Logs: the instance's output, read by the server.
    remote(&here, &url, token.trim())
        .args(["logs", "web", "-n", "5"])
        .assert()
        .success()
        .stdout(predicate::str::contains("] demo app v1 listening on"));
    remote(&here, &url, token.trim())
        .args(["logs", "nope"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no service `nope`"));

    // `logs -f` follows through the API: the instance a new deployment
    // starts appears, with its output.
    let follow = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["--state-dir"])
        .arg(&here)
        .args(["--server", &url, "logs", "web", "-f", "-n", "1"])
        .env("HATOBA_TOKEN", token.trim())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut follow = crate::support::Reaped(follow);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let seen = std::sync::Arc::clone(&seen);
        let out = follow.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut s = seen.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
    }
    crate::support::poll(
        "logs -f to print v1's output",
        std::time::Duration::from_secs(20),
        || {
            seen.lock()
                .unwrap()
                .contains("demo app v1 listening on")
                .then_some(())
        },
    );
    remote(&here, &url, token.trim())
        .args(["deploy", "web", "--version", "v2", "--wait"])
        .assert()
        .success();
    crate::support::poll_explained(
        "logs -f to print the new instance's output",
        std::time::Duration::from_secs(20),
        || {
            let s = seen.lock().unwrap();
            (s.contains("--- new instance ---") && s.contains("demo app v2 listening on"))
                .then_some(())
        },
        || seen.lock().unwrap().clone(),
    );
    drop(follow);

    // The other commands that talk to a server: an answer, or its refusal
    // with the exit code of its kind.
    remote(&here, &url, token.trim())
        .args(["secret", "list"])
        .assert()
        .success();
    remote(&here, &url, token.trim())
        .args(["promote", "web"])
        .assert()
        .code(5)
        .stderr(predicate::str::contains("no deployment in progress"));
    remote(&here, &url, token.trim())
        .args(["watch", "web"])
        .assert()
        .success()
        .stdout(predicate::str::contains("v2 serves"));

    // A wrong token, or none: refused, exit 5, saying what to set.
    for cmd in [
        remote(&here, &url, "not-the-token")
            .args(["status"])
            .output()
            .unwrap(),
        remote(&here, &url, "not-the-token")
            .args(["deploy", "web", "--version", "v3"])
            .output()
            .unwrap(),
        hatoba(&here)
            .args(["--server", &url, "history"])
            .output()
            .unwrap(),
    ] {
        assert_eq!(cmd.status.code(), Some(5), "{cmd:?}");
        let err = String::from_utf8_lossy(&cmd.stderr);
        assert!(err.contains(&url) && err.contains("HATOBA_TOKEN"), "{err}");
    }
    // The refused deploy deployed nothing: v1 and v2 only.
    let history = json(
        &remote(&here, &url, token.trim())
            .args(["history", "-o", "json"])
            .output()
            .unwrap(),
    );
    let versions: Vec<&str> = history["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["version"].as_str())
        .collect();
    assert_eq!(versions, ["v2", "v1"], "{history}");

    // The client's state directory was never created: nothing was read or
    // written there.
    assert!(!here.exists(), "{}", here.display());
}

#[test]
fn a_server_that_does_not_answer_is_exit_3_naming_its_url_and_a_bad_url_exit_2() {
    let port = hatoba_test_support::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["history"],
        &["analysis", "web"],
        &["diagnose", "web"],
        &["logs", "web"],
        &["deploy", "web", "--version", "v1"],
        &["promote", "web"],
        &["rollback", "web"],
        &["watch", "web"],
        &["approve", "d-1"],
        &["secret", "list"],
    ] {
        let out = remote(dir.path(), &url, "t").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&url), "{args:?}: {err}");
    }
    hatoba(dir.path())
        .args(["--server", "https://127.0.0.1:1", "status"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("plain HTTP"));
    // Without --server and no server running, status reads the (missing)
    // local history as before.
    hatoba(dir.path())
        .arg("status")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no deployment history"));
}
