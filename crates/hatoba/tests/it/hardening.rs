//! `hatoba up` against the unlucky and the hostile: two controllers on one
//! state directory, a listen address another server holds, idle API
//! connections, malformed API bodies, a token file that is a link, and a
//! stop followed by a start, with every answer counted.

use crate::support::{Sandbox, Traffic, hatoba, poll};
use crate::up::{demo_process, rolling_web};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    poll(what, Duration::from_secs(30), || f().then_some(()));
}

/// The API address and token of the server of `state`.
fn api(state: &Path) -> (String, String) {
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("server.json")).unwrap()).unwrap();
    let token = std::fs::read_to_string(state.join("token")).unwrap();
    (
        info["api"].as_str().unwrap().to_owned(),
        token.trim().to_owned(),
    )
}

/// One raw request to the API: (status code, body).
fn api_call(state: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let (addr, token) = api(state);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"));
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

/// Two `hatoba up` started at the same instant on one state directory:
/// exactly one runs; the other exits 5 naming the first, whatever the
/// timing (three rounds).
#[test]
fn two_controllers_started_at_once_on_one_state_dir_one_runs() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    for round in 0..3 {
        let start = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
                .arg("--state-dir")
                .arg(&sb.state)
                .args(["up", "-f"])
                .arg(&sb.file)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a = crate::support::Up(start());
        let b = crate::support::Up(start());
        let mut ups = [a, b];
        // One of them exits 5 soon; the other keeps running.
        let loser = poll(
            "one of two controllers to give up",
            Duration::from_secs(30),
            || {
                ups.iter_mut().position(|u| {
                    u.0.try_wait()
                        .ok()
                        .flatten()
                        .is_some_and(|s| s.code().is_some())
                })
            },
        );
        let status = ups[loser].0.wait().unwrap();
        let mut err = String::new();
        ups[loser]
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(5), "round {round}: {err}");
        let winner = 1 - loser;
        assert!(
            err.contains(&format!("pid {}", ups[winner].0.id())),
            "round {round}: the refusal names the running controller: {err}"
        );
        assert!(
            ups[winner].0.try_wait().unwrap().is_none(),
            "round {round}: the winner still runs"
        );
        // The winner serves a deployment; the loser touched nothing.
        wait("the winner's server.json", || {
            std::fs::read_to_string(sb.state.join("server.json"))
                .is_ok_and(|t| t.contains(&format!("\"pid\": {}", ups[winner].0.id())))
        });
        if round == 0 {
            sb.deploy_ok("v1");
            assert_eq!(crate::support::served(sb.port).as_deref(), Ok("v1"));
        } else {
            wait("v1 served again", || {
                crate::support::served(sb.port).as_deref() == Ok("v1")
            });
        }
        let [a, b] = ups;
        drop(a);
        drop(b);
    }
}

/// A second `hatoba up` (another state directory) on an address the first
/// listens on is refused at start; the first keeps all its traffic.
#[test]
fn a_listen_address_another_server_holds_is_refused() {
    let first = rolling_web(&demo_process("${VERSION}"), 1);
    let _up = first.up(&[]);
    first.deploy_ok("v1");
    let port = first.port;
    let second = Sandbox::new(|_| {
        crate::up::web_spec(
            port,
            &demo_process("other-${VERSION}"),
            1,
            "{rolling: {maxSurge: 1, maxUnavailable: 0}}",
        )
    });
    let out = hatoba(&second.state)
        .args(["up", "-f"])
        .arg(&second.file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("in use"), "{err}");
    // Every new connection still reaches the first server's service.
    for _ in 0..50 {
        assert_eq!(crate::support::served(port).as_deref(), Ok("v1"));
    }
}

/// Bodies the API does not understand are refused with the problem named,
/// and nothing is done: a truncated rollback body used to roll back to the
/// previous version instead of the one named.
#[test]
fn malformed_or_unknown_api_bodies_are_refused_and_do_nothing() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    sb.deploy_ok("v2");
    sb.deploy_ok("v3");
    let cases = [
        (
            "POST",
            "/api/v1/services/web/rollback",
            r#"{"to": "v1""#,
            400,
            "bad rollback request",
        ),
        (
            "POST",
            "/api/v1/services/web/rollback",
            r#"{"too": "v1"}"#,
            400,
            "unknown field `too`",
        ),
        (
            "POST",
            "/api/v1/deployments",
            r#"{"service": "web", "version": "v9", "varz": {}}"#,
            400,
            "unknown field `varz`",
        ),
        (
            "POST",
            "/api/v1/deployments/d-x/approve",
            "",
            400,
            "bad approve request",
        ),
    ];
    for (method, path, body, code, says) in cases {
        let (got, answer) = api_call(&sb.state, method, path, body);
        assert_eq!(got, code, "{method} {path} {body}: {answer}");
        let e: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(e["kind"], "bad_input", "{answer}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{method} {path} {body}: {answer}"
        );
    }
    let big = format!(r#"{{"to": "{}"}}"#, "x".repeat(100_000));
    let (got, answer) = api_call(&sb.state, "POST", "/api/v1/services/web/rollback", &big);
    assert_eq!(got, 413, "{answer}");
    // Nothing was rolled back or deployed.
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("v3"));
    let h = crate::support::latest(&sb.state);
    assert_eq!(h["version"], "v3", "{h}");
    assert_eq!(h["status"], "succeeded", "{h}");
}

/// Idle connections to the API (no token needed to connect) are cut after
/// the header timeout and capped meanwhile: the API answers again, the
/// controller keeps its descriptors, and no healthy instance is restarted.
#[test]
fn idle_api_connections_are_cut_and_restart_no_healthy_instance() {
    let sb = rolling_web(&demo_process("${VERSION}"), 2);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    let before = crate::up::running(&crate::up::diagnose(&sb.state), None);
    let (addr, _) = api(&sb.state);
    let idle: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() >= 300, "only {} connected", idle.len());
    // While they are held, an operator is served at once: the oldest
    // silent connection makes room for the new one.
    hatoba(&sb.state)
        .args(["diagnose", "web"])
        .assert()
        .success();
    // Each idle connection is closed by the server: at once over the cap,
    // after the header timeout under it.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut b = [0u8; 1];
        let n = c.read(&mut b);
        assert!(
            matches!(n, Ok(0)) || n.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "an idle connection was still open after 30 s"
        );
    }
    hatoba(&sb.state).args(["status"]).assert().success();
    let after = crate::up::running(&crate::up::diagnose(&sb.state), None);
    assert_eq!(before, after, "the same instances, not restarted");
    assert_eq!(crate::support::served(sb.port).as_deref(), Ok("v1"));
}

/// The state directory and token are private whatever existed before, and
/// a token that is a symbolic link is refused, its target untouched.
#[test]
fn the_state_dir_and_token_are_private_and_links_are_refused() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    std::fs::create_dir_all(&sb.state).unwrap();
    std::fs::set_permissions(&sb.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = sb.state.join("token");
    std::fs::write(&token, "old").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    {
        let _up = sb.up(&[]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sb.state), 0o700);
        assert_eq!(mode(&token), 0o600);
        assert_eq!(mode(&sb.state.join("server.json")), 0o600);
    }
    let target = sb.state.parent().unwrap().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    std::fs::remove_file(&token).unwrap();
    std::os::unix::fs::symlink(&target, &token).unwrap();
    let out = hatoba(&sb.state)
        .args(["up", "-f"])
        .arg(&sb.file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}

/// Ctrl-C of `hatoba up` is no outage: every request the proxy took is
/// answered by a running instance (no 502, no 503), and only then are the
/// instances stopped. The next `hatoba up` brings the version that served
/// back by itself, with the variables it ran with, and says so.
#[test]
fn a_stop_cuts_no_request_and_the_next_start_restores_what_served() {
    let sb = rolling_web(&demo_process("${VERSION}${FLAVOUR:-}"), 2);
    let up = sb.up(&[]);
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
    let pids: Vec<u64> = crate::up::running(&crate::up::diagnose(&sb.state), Some("v1"))
        .into_iter()
        .map(|(_, pid)| pid)
        .collect();
    assert_eq!(pids.len(), 2);
    let traffic = Traffic::start(sb.port);
    traffic.wait_answered(50);
    traffic.so_far().assert_no_failed(50);
    // Ctrl-C.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(up.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut up = up;
    let status = up.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    wait("the listener to be closed", || {
        std::net::TcpStream::connect(("127.0.0.1", sb.port)).is_err()
    });
    // Refused once the listener has closed; nothing taken was cut.
    traffic.finish().assert_none_cut(50);
    // Nothing of the service runs now.
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} runs"
        );
    }
    // The next start brings v1 back, as it ran.
    let (tx, rx) = std::sync::mpsc::channel();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(&sb.state)
        .args(["up", "-f"])
        .arg(&sb.file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut up2 = crate::support::Up(child);
    let mut stderr = up2.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(text.clone());
        }
    });
    let said = poll(
        "the start to say what it restored",
        Duration::from_secs(30),
        || {
            rx.try_iter()
                .last()
                .filter(|t| t.contains("started 2 again"))
        },
    );
    assert!(said.contains("v1 serves on 0 instance(s)"), "{said}");
    wait("v1 to serve again as it ran", || {
        crate::support::served(sb.port).as_deref() == Ok("v1-salted")
    });
    let v = crate::up::diagnose(&sb.state);
    assert_eq!(crate::up::running(&v, Some("v1")).len(), 2, "{v}");
    drop(up2);
}

/// Runs SQL on the state directory's SQLite database from outside, as
/// another process would.
fn sql(state: &Path, statements: &'static str) {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", state.join("hatoba.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(statements).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    });
}

/// Every write to the history fails as on a full disk (SQLite's own
/// failure, raised by triggers), then works again.
const FULL: &str = "
CREATE TRIGGER full_events BEFORE INSERT ON deployment_events BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;
CREATE TRIGGER full_deployments BEFORE UPDATE ON deployments BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;
CREATE TRIGGER full_state_insert BEFORE INSERT ON controller_state BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;
CREATE TRIGGER full_state_update BEFORE UPDATE ON controller_state BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;
";
const ROOM_AGAIN: &str = "
DROP TRIGGER full_events; DROP TRIGGER full_deployments;
DROP TRIGGER full_state_insert; DROP TRIGGER full_state_update;
";

/// A history store that cannot be written mid-rollout does not wedge the
/// service: traffic goes back to the version that served (no request
/// fails), the new version's instances stop, `diagnose` says what
/// happened, `deploy --wait` ends once the store works again with the
/// deployment recorded as failed, and the next deployment goes through.
#[test]
fn a_store_that_cannot_be_written_mid_rollout_does_not_wedge_the_service() {
    let sb = Sandbox::new(crate::up::spec);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    let traffic = Traffic::start(sb.port);
    let mut waiting = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(&sb.state)
        .args(["deploy", "web", "--version", "v2", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let canary_at_50 = |version: &str| {
        let v = crate::up::diagnose(&sb.state);
        v["service"]["route"].as_array().is_some_and(|g| {
            g.iter()
                .any(|g| g["version"] == version && g["weight"] == 50)
        })
    };
    wait("the canary at 50 %", || canary_at_50("v2"));
    sql(&sb.state, FULL);
    hatoba(&sb.state)
        .args(["promote", "web"])
        .assert()
        .success();
    let stuck = poll(
        "traffic back on v1 with the problem shown",
        Duration::from_secs(30),
        || {
            let v = crate::up::diagnose(&sb.state);
            let only_v1 = v["service"]["route"]
                .as_array()
                .is_some_and(|g| g.iter().all(|g| g["version"] == "v1" || g["weight"] == 0));
            (only_v1
                && crate::up::running(&v, Some("v2")).is_empty()
                && v["service"]["problem"].is_string())
            .then_some(v)
        },
    );
    let problem = stuck["service"]["problem"].as_str().unwrap().to_owned();
    assert!(problem.contains("disk is full"), "{problem}");
    assert!(problem.contains("traffic is back on v1"), "{problem}");
    for _ in 0..20 {
        assert_eq!(crate::support::served(sb.port).as_deref(), Ok("v1"));
    }
    // `status` says it too.
    let out = hatoba(&sb.state)
        .args(["status", "web", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["services"][0]["problem"].as_str(),
        Some(problem.as_str()),
        "{v}"
    );
    // The store works again: the deployment is recorded as failed, and the
    // `--wait` that followed it ends.
    sql(&sb.state, ROOM_AGAIN);
    let status = poll("deploy --wait to end", Duration::from_secs(60), || {
        waiting.try_wait().unwrap()
    });
    let mut out = String::new();
    waiting
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("stopped by an error"), "{out}");
    let h = crate::support::latest(&sb.state);
    assert_eq!(h["version"], "v2", "{h}");
    assert_eq!(h["status"], "failed", "{h}");
    wait("the problem to clear", || {
        crate::up::diagnose(&sb.state)["service"]["problem"].is_null()
    });
    // Not wedged: the next deployment is taken, and can be aborted.
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v3"])
        .assert()
        .success();
    wait("the v3 canary", || canary_at_50("v3"));
    hatoba(&sb.state).args(["abort", "web"]).assert().success();
    wait("v3 aborted", || {
        crate::support::latest(&sb.state)["status"] == "aborted"
    });
    traffic.finish().assert_no_failed(50);
}

/// `hatoba up --log-format json` writes its own log lines as one JSON
/// object per line, a deployment's end among them with its facts as fields.
#[test]
fn up_writes_json_log_lines_when_asked() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let log = sb.state.parent().unwrap().join("up.log");
    std::fs::create_dir_all(&sb.state).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(&sb.state)
        .args(["up", "--log-format", "json", "-f"])
        .arg(&sb.file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let up = crate::support::Up(child);
    wait("server.json", || sb.state.join("server.json").exists());
    sb.deploy_ok("v1");
    assert!(up.terminate(), "hatoba up exits 0 on SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    let ended: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "deployment ended")
        .collect();
    assert_eq!(ended.len(), 1, "{text}");
    assert_eq!(ended[0]["service"], "web", "{text}");
    assert_eq!(ended[0]["version"], "v1", "{text}");
    assert_eq!(ended[0]["status"], "succeeded", "{text}");
    assert!(ended[0]["level"] == "INFO", "{text}");
    // The API request that asked for it is a line too, with its facts.
    let asked: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "api request" && v["method"] == "POST")
        .collect();
    assert!(
        asked
            .iter()
            .any(|v| v["path"] == "/api/v1/deployments" && v["status"] == 202),
        "{text}"
    );
    // Nothing but JSON: the start banner and the stop are log lines too.
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{text}"));
        assert!(v["timestamp"].is_string(), "{line}");
    }
    assert!(
        text.contains("service `web` on http://127.0.0.1:"),
        "{text}"
    );
}
