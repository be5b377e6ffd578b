//! `hatoba up` killed with SIGKILL at random points of canary rollouts and
//! started again, under steady traffic: each time, the instances running
//! are exactly the ones the controller recorded (none duplicated, none
//! orphaned), the rollout resumes and ends, afterwards exactly `replicas`
//! instances of the version that serves are left, and not one request
//! failed: the data plane is its own process and outlives the controller.

use crate::support::{Sweep, Up, hatoba, poll};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REPLICAS: usize = 2;

fn spec(port: u16) -> String {
    format!(
        r#"app: restart-test
services:
  web:
    process:
      command: {exe}
      args: ["demo-app", "--version-label", "${{VERSION}}"]
    replicas: {REPLICAS}
    route: {{listen: "127.0.0.1:{port}"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    progressDeadline: 20s
    drain: 500ms
    terminationGracePeriod: 5s
    strategy:
      canary:
        steps:
          - setWeight: 50
          - pause: {{duration: 1500ms}}
"#,
        exe = env!("CARGO_BIN_EXE_hatoba")
    )
}

/// Instances of this state directory running on the machine, by the
/// `HATOBA_INSTANCE` their process carries.
fn running(scope: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // A zombie's environment is gone anyway; skip it explicitly.
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let Ok(env) = std::fs::read(dir.join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        let has_scope = vars
            .iter()
            .any(|v| *v == format!("HATOBA_SCOPE={scope}").as_bytes());
        let id = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"HATOBA_INSTANCE="))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if let (true, Some(id)) = (has_scope, id) {
            out.insert(id);
        }
    }
    out
}

/// The instances the controller's saved state names.
fn recorded(state: &Path) -> BTreeSet<String> {
    let db = state.join("hatoba.db");
    let text = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = hatoba_store::SqlStore::open_sqlite(&db).await.unwrap();
            use hatoba_store::Store as _;
            let t = store
                .controller_state(&"web".parse().unwrap(), &"development".parse().unwrap())
                .await
                .unwrap();
            store.close().await;
            t
        });
    let Some(text) = text else {
        return BTreeSet::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut ids = BTreeSet::new();
    let mut take = |list: &serde_json::Value| {
        for i in list.as_array().into_iter().flatten() {
            ids.insert(i["id"].as_str().unwrap().to_owned());
        }
    };
    take(&v["serving"]["instances"]);
    take(&v["rollout"]["stable"]);
    take(&v["rollout"]["canary"]);
    ids
}

fn latest(state: &Path) -> Option<(String, String)> {
    let d = crate::support::latest(state);
    Some((
        d["version"].as_str()?.to_owned(),
        d["status"].as_str()?.to_owned(),
    ))
}

/// Clients sending requests one after another on fresh connections (each a
/// new choice of backend), counting every answer until stopped.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Traffic {
    fn start(port: u16, clients: usize) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let (mut ok, mut failed) = (0u64, Vec::new());
                    let started = Instant::now();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(300)
                    {
                        let answer =
                            std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                                s.write_all(
                                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                )?;
                                let mut out = String::new();
                                s.read_to_string(&mut out)?;
                                Ok(out)
                            });
                        match answer {
                            Ok(a) if a.starts_with("HTTP/1.1 200") => ok += 1,
                            Ok(a) => failed.push(a.lines().next().unwrap_or("").to_owned()),
                            Err(e) => failed.push(e.to_string()),
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    (ok, failed)
                })
            })
            .collect();
        Traffic { stop, threads }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.threads {
            let (o, f) = t.join().unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn killed_at_random_points_the_controller_resumes_without_duplicates_or_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let scope = std::path::absolute(&state).unwrap().display().to_string();
    let _sweep = Sweep(state.clone());
    let port = hatoba_test_support::free_port().unwrap();
    let file = dir.path().join("hatoba.yaml");
    std::fs::write(&file, spec(port)).unwrap();
    let seed = std::env::var("HATOBA_RESTART_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    eprintln!("kill points from seed {seed} (HATOBA_RESTART_SEED replays them)");
    let mut rng = Lcg(seed);

    let up = Up::start(&state, &file, &[]);
    hatoba(&state)
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .assert()
        .success();
    let mut up = Some(up);
    let traffic = Traffic::start(port, 4);
    let mut serving = "v1".to_owned();
    let mut resumed_mid_rollout = 0;
    for round in 2..=9 {
        let version = format!("v{round}");
        let out = hatoba(&state)
            .args(["deploy", "web", "--version", &version])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // The kill point: anywhere from at once to past the end of the rollout.
        let delay = Duration::from_millis(rng.below(2_500));
        std::thread::sleep(delay);
        let was = latest(&state);
        if let Some(u) = up.take() {
            u.kill9();
        }
        if was.as_ref().is_some_and(|(_, s)| s == "in_progress") {
            resumed_mid_rollout += 1;
        }
        up = Some(Up::start(&state, &file, &[]));

        // Right after the restart, and until the rollout ends, what runs
        // converges on what is recorded: no orphan survives, nothing is doubled.
        poll(
            &format!("round {round} ({delay:?}): running = recorded"),
            Duration::from_secs(60),
            || {
                let (r, c) = (running(&scope), recorded(&state));
                (r == c).then_some(())
            },
        );
        let (v, status) = poll(
            &format!("round {round}: {version} to end"),
            Duration::from_secs(60),
            || {
                latest(&state)
                    .filter(|(v, s)| *v == version && s != "in_progress" && s != "pending")
            },
        );
        if status == "succeeded" {
            serving = v;
        }
        let final_set = poll(
            &format!("round {round}: {REPLICAS} instances of {serving}"),
            Duration::from_secs(60),
            || {
                let (r, c) = (running(&scope), recorded(&state));
                (r == c && r.len() == REPLICAS).then_some(r)
            },
        );
        for id in &final_set {
            assert!(
                id.starts_with(&format!("web-{serving}-")),
                "round {round}: {id} left running while {serving} serves ({status})"
            );
        }
        // And the proxy, rebuilt from the store, sends traffic to it.
        let body = poll("the proxy to answer", Duration::from_secs(30), || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.starts_with("HTTP/1.1 200").then_some(out)
        });
        assert!(
            body.to_lowercase()
                .contains(&format!("x-version: {serving}")),
            "round {round}: {body}"
        );
    }
    let (ok, failed) = traffic.finish();
    eprintln!(
        "{resumed_mid_rollout} of 8 kills landed mid-rollout; {ok} requests answered 200, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 500, "too little traffic to mean anything: {ok}");
    assert!(
        resumed_mid_rollout >= 3,
        "too few kills landed mid-rollout to test resuming"
    );
    drop(up);
}
