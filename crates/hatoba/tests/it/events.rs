//! `hatoba events` against `hatoba up`: `-f` follows the live stream
//! through a deployment and a `kill -9` and restart of the server, resuming
//! with `Last-Event-ID`, and ends with every stored id printed once, in
//! order; without `-f` it prints what is stored and exits 0; a bad filter
//! exits 2, an unknown deployment 4.

use crate::support::{Reaped, Sandbox, hatoba, latest, poll};
use std::io::BufRead as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn wait(what: &str, f: impl FnMut() -> bool) {
    let mut f = f;
    poll(what, Duration::from_secs(60), || f().then_some(()));
}

/// `hatoba events ARGS -o json`: the events it printed, one per line.
fn stored(state: &std::path::Path, args: &[&str]) -> Vec<hatoba_api::Event> {
    let out = hatoba(state)
        .args(["events", "-o", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn events_follow_resumes_across_a_server_restart_with_every_id_once_in_order() {
    let sb = Sandbox::new(crate::up::spec);
    let up = sb.up(&[]);
    sb.deploy_ok("v1");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(&sb.state)
        .args(["events", "-f", "-n", "1000", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let _following = Reaped(child);
    // What `events -f` printed, as it comes.
    let got: Arc<Mutex<Vec<hatoba_api::Event>>> = Arc::default();
    let said: Arc<Mutex<String>> = Arc::default();
    {
        let got = Arc::clone(&got);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let e = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                got.lock().unwrap().push(e);
            }
        });
        let said = Arc::clone(&said);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                said.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
    }
    let has = |kind: &str, deployment: &str| {
        got.lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == kind && e.deployment == deployment)
    };
    let v1 = latest(&sb.state)["id"].as_str().unwrap().to_owned();
    wait("v1's history printed", || has("created", &v1));

    // v2 stops at its pause; the server is killed under it and started again.
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    let v2 = latest(&sb.state)["id"].as_str().unwrap().to_owned();
    wait("v2 paused, live", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|e| e.deployment == v2 && e.message.contains("pause until"))
    });
    up.kill9();
    wait("events -f to notice", || {
        said.lock().unwrap().contains("lost the stream")
    });
    let _up = sb.up(&[]);
    hatoba(&sb.state)
        .args(["promote", "web", "--full"])
        .assert()
        .success();
    wait("v2's end, live after the restart", || {
        got.lock().unwrap().iter().any(|e| {
            e.deployment == v2
                && e.kind == "status_changed"
                && e.data.as_ref().is_some_and(|d| d["to"] == "succeeded")
        })
    });
    let text = said.lock().unwrap().clone();
    assert!(text.contains("following again"), "{text}");

    // Every stored event was printed once, in order, none twice, none
    // missed, across the restart.
    let all = stored(&sb.state, &["-n", "1000"]);
    let printed = got.lock().unwrap().clone();
    let ids = |v: &[hatoba_api::Event]| v.iter().map(|e| e.id).collect::<Vec<_>>();
    let upto = printed.last().unwrap().id;
    let want: Vec<u64> = ids(&all).into_iter().filter(|id| *id <= upto).collect();
    assert_eq!(ids(&printed), want, "{text}");
    assert!(printed.windows(2).all(|w| w[0].id < w[1].id));
    assert!(printed.iter().any(|e| e.deployment == v1));

    // Without -f: what is stored, filtered, bounded; then it ends, exit 0.
    let of_v2 = stored(&sb.state, &["--deployment", &v2]);
    assert!(of_v2.iter().all(|e| e.deployment == v2));
    assert_eq!(of_v2.first().map(|e| e.kind.as_str()), Some("created"));
    let two = stored(&sb.state, &["web", "-n", "2"]);
    assert_eq!(ids(&two), ids(&all[all.len() - 2..]));
    let after = stored(&sb.state, &["--after", &all[0].id.to_string(), "-n", "1"]);
    assert_eq!(ids(&after), vec![all[1].id]);
    let out = hatoba(&sb.state).args(["events", "web"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("web          {v2}")), "{text}");
    hatoba(&sb.state)
        .args(["events", "--deployment", "d 1"])
        .assert()
        .code(2);
    hatoba(&sb.state)
        .args(["events", "--deployment", "d-nope"])
        .assert()
        .code(4);
}
