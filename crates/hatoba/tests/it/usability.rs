//! What a user of the landed build stumbled on, held by tests: timeline
//! entries in words (not Rust's debug text), `hatoba analysis SERVICE`, and
//! `hatoba logs` that says why it prints nothing, and `deploy --wait`,
//! `watch` and `logs -f` that go on across a restart of `hatoba up`.

use crate::support::{Sandbox, hatoba, latest, poll};
use crate::up::{demo_process, rolling_web};
use std::time::Duration;

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    poll(what, Duration::from_secs(30), || f().then_some(()));
}

/// An abort reads as words in the timeline.
#[test]
fn an_operators_abort_is_written_in_words() {
    let sb = Sandbox::new(crate::up::spec);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    wait("v2 in progress", || {
        latest(&sb.state)["status"] == "in_progress"
    });
    hatoba(&sb.state).args(["abort", "web"]).assert().success();
    wait("v2 aborted", || latest(&sb.state)["status"] == "aborted");
    let v = crate::up::diagnose(&sb.state);
    let messages: Vec<String> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("operator: abort (")),
        "{messages:#?}"
    );
    assert!(
        messages.iter().all(|m| !m.contains("Abort(\"")),
        "{messages:#?}"
    );
}

/// `hatoba analysis web` is the newest deployment of `web`; a name that is
/// neither is "not found" naming both readings.
#[test]
fn analysis_takes_a_service_as_well_as_a_deployment() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    sb.deploy_ok("v2");
    let out = hatoba(&sb.state)
        .args(["analysis", "web", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deployment"]["version"], "v2", "{v}");
    assert_eq!(v["deployment"]["id"], latest(&sb.state)["id"], "{v}");
    hatoba(&sb.state)
        .args(["analysis", "nothing-here"])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("no service `nothing-here`"));
}

/// Instances that wrote nothing: `hatoba logs` says so and where their
/// output goes, instead of printing nothing at all.
#[test]
fn logs_of_silent_instances_say_where_output_goes() {
    let quiet = format!(
        r#"{{command: /bin/sh, args: ["-c", 'exec "$0" demo-app --version-label "$1" >/dev/null 2>&1', "{exe}", "${{VERSION}}"]}}"#,
        exe = env!("CARGO_BIN_EXE_hatoba")
    );
    let sb = rolling_web(&quiet, 1);
    let _up = sb.up(&[]);
    sb.deploy_ok("v1");
    let out = hatoba(&sb.state).args(["logs", "web"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no log lines yet"), "{err}");
    assert!(err.contains(".log"), "{err}");
    // `-n 0` asks for no line (as `tail -n 0`): none is not news.
    let out = hatoba(&sb.state)
        .args(["logs", "web", "-n", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}

/// A strategy is printed as the spec spells it (`blueGreen`), while the
/// JSON keeps the wire's `blue_green`.
#[test]
fn a_strategy_is_printed_as_the_spec_spells_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = root.join("examples/blue-green/hatoba.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = hatoba(dir.path())
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(blueGreen,"), "{text}");
    assert!(!text.contains("blue_green"), "{text}");
}

/// `deploy --wait` follows its deployment across a restart of `hatoba up`
/// (which resumes it), and `hatoba watch web` follows whatever is in
/// progress; both end when it does.
#[test]
fn deploy_wait_and_watch_follow_a_deployment_across_a_server_restart() {
    let sb = Sandbox::new(crate::up::spec);
    let up = sb.up(&[]);
    sb.deploy_ok("v1");
    let spawn = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
            .arg("--state-dir")
            .arg(&sb.state)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut waiting = spawn(&["deploy", "web", "--version", "v2", "--wait"]);
    // What `deploy --wait` has printed so far, read as it comes.
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let printed = std::sync::Arc::clone(&printed);
        let mut out = waiting.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                printed
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    wait("v2 paused at 50 %", || {
        printed.lock().unwrap().contains("pause until")
    });
    up.kill9();
    // It notices, and keeps waiting instead of exiting 3.
    wait("deploy --wait to notice", || {
        printed.lock().unwrap().contains("lost the server")
    });
    let _up = sb.up(&[]);
    let watching = spawn(&["watch", "web"]);
    wait("the watch to follow", || {
        latest(&sb.state)["status"] == "in_progress"
    });
    // No traffic, no evidence: a person promotes past it.
    hatoba(&sb.state)
        .args(["promote", "web", "--full"])
        .assert()
        .success();
    let status = waiting.wait().unwrap();
    reader.join().unwrap();
    let text = printed.lock().unwrap().clone();
    assert!(status.success(), "deploy --wait: {status:?}\n{text}");
    assert!(text.contains("the server is back"), "{text}");
    assert!(text.contains("succeeded"), "{text}");
    let out = watching.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "watch: {out:?}");
    assert!(stdout.contains("following deployment"), "{stdout}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    // The events `watch` caught up on are printed at the time they happened
    // in the deployment (as the server recorded them), not all at 0.0s.
    let d = latest(&sb.state);
    let start = hatoba_core::Millis::parse_rfc3339(d["started_at"].as_str().unwrap()).unwrap();
    let events = hatoba(&sb.state)
        .args([
            "events",
            "--deployment",
            d["id"].as_str().unwrap(),
            "-o",
            "json",
        ])
        .args(["-n", "1000"])
        .output()
        .unwrap();
    assert!(events.status.success(), "{events:?}");
    // Every event, caught up on or seen live, at its stored time. The last
    // ones came after a kill -9, a restart and a promotion: at least 50 ms
    // in, so printed past `0.0s` (about 0.3 s here; the restart's own
    // `controller_resumed` came within 0.1 s once, too soon to tell).
    let mut latest_at = Duration::ZERO;
    for e in String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
    {
        let at = hatoba_core::Millis::parse_rfc3339(e["at"].as_str().unwrap()).unwrap();
        let line = format!(
            "[{:>6.1}s] {}",
            at.since(start).as_secs_f64(),
            e["message"].as_str().unwrap()
        );
        assert!(stdout.contains(&line), "expected `{line}` in:\n{stdout}");
        latest_at = latest_at.max(at.since(start));
    }
    assert!(stdout.contains("controller restarted"), "{stdout}");
    assert!(latest_at >= Duration::from_millis(50), "{stdout}");
    // Nothing in progress: watch says what serves.
    hatoba(&sb.state)
        .args(["watch", "web"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "no deployment of `web` in progress; v2 serves",
        ));
}

/// `hatoba up -f -` read its spec from standard input: a reload has no file
/// to read again and says so, rather than reading a file named `-` in the
/// directory it was started from (another spec, here with a second service).
#[test]
fn a_server_whose_spec_came_from_stdin_refuses_a_reload() {
    use std::io::Write as _;
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let dir = sb.file.parent().unwrap().to_path_buf();
    let spec = std::fs::read_to_string(&sb.file).unwrap();
    let other = hatoba_test_support::free_port().unwrap();
    std::fs::write(
        dir.join("-"),
        spec.replace("  web:", &format!("  api:\n    process: {{command: x}}\n    route: {{listen: \"127.0.0.1:{other}\"}}\n  web:")),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .current_dir(&dir)
        .arg("--state-dir")
        .arg(&sb.state)
        .args(["up", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.as_bytes())
        .unwrap();
    let pid = u64::from(child.id());
    let _up = crate::support::Up(child);
    poll("server.json of the server", Duration::from_secs(60), || {
        let t = std::fs::read_to_string(sb.state.join("server.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&t).ok()?;
        (v["pid"].as_u64() == Some(pid)).then_some(())
    });
    hatoba(&sb.state)
        .arg("reload")
        .assert()
        .failure()
        .stderr(predicates::str::contains("started without a spec file"))
        .stderr(predicates::str::contains("start it again with `-f FILE`"));
    // Nothing was read: `api` (only in the file named `-`) is not served.
    let out = hatoba(&sb.state)
        .args(["diagnose", "api"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}

/// `hatoba logs -f` goes on across a restart of `hatoba up` (kill -9, then
/// up again: it adopts the running instance): it says it lost the server
/// and that it is back, and prints what the instance wrote meanwhile and
/// after, each line once, none of the earlier ones again.
#[test]
fn logs_follow_goes_on_across_a_server_restart() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let up = sb.up(&[]);
    sb.deploy_ok("v1");
    // The instance's output goes to its log file on this machine: a line
    // added there is a line the instance wrote.
    let dir = sb.state.join("logs").join("web");
    let logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "one instance, one log: {logs:?}");
    let write = |line: &str| {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&logs[0])
            .unwrap();
        writeln!(f, "{line}").unwrap();
    };
    let (_up, out, err) =
        crate::support::logs_follow_across_a_restart(&sb.state, up, &write, &|| sb.up(&[]));
    assert!(!out.contains("--- new instance ---"), "{out}");
    assert!(!err.contains("no longer followed"), "{err}");
}
