//! `hatoba up` killed with SIGKILL at random points of canary rollouts and
//! started again, under steady traffic: each time, the instances running
//! are exactly the ones the controller recorded (none duplicated, none
//! orphaned), the ones that ran before the kill run on with the same pids
//! (re-adopted, not replaced), a rollout in progress continues from the
//! step its saved machine was at (no step begun again) and succeeds,
//! afterwards exactly `replicas` instances of the version that serves are
//! left, and not one request failed: the data plane is its own process and
//! outlives the controller.

use crate::support::{Sweep, Traffic, Up, hatoba, poll};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Runs `query` (one text column) on STATE/hatoba.db through its own
/// read-only connection, as another process would.
fn column(state: &Path, query: &'static str, bind: &str) -> Vec<String> {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}?mode=ro", state.join("hatoba.db").display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as(query)
                .bind(bind)
                .fetch_all(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            rows.into_iter().map(|(t,)| t).collect()
        })
}

/// The controller's saved record of `web` (its `ServiceRecord`: what
/// serves, the rollout with its machine), `Null` when there is none.
fn saved(state: &Path) -> serde_json::Value {
    column(
        state,
        "SELECT state FROM controller_state WHERE service = $1 AND environment = 'development'",
        "web",
    )
    .first()
    .map_or(serde_json::Value::Null, |t| {
        serde_json::from_str(t).unwrap()
    })
}

/// The instances the controller's saved state names.
fn recorded(state: &Path) -> BTreeSet<String> {
    let v = saved(state);
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

/// The messages of a deployment's events, in order.
fn events(state: &Path, deployment: &str) -> Vec<String> {
    column(
        state,
        "SELECT message FROM deployment_events WHERE deployment_id = $1 ORDER BY seq",
        deployment,
    )
}

/// Where a saved canary machine was: the steps it has begun (`None`: it
/// had not started, so it may begin any) and the events it had decided but
/// not yet written (its outbox and the command in execution), which the
/// resumed rollout writes.
fn position(rollout: &serde_json::Value) -> (Option<usize>, Vec<String>) {
    let machine = &rollout["machine"]["Canary"];
    assert!(machine.is_object(), "not a canary machine: {rollout}");
    let state = &machine["state"];
    let begun = match state.as_str() {
        Some("Idle") => None,
        // Past every step: promoting, awaiting, watching or done.
        Some(_) => Some(usize::MAX),
        None => {
            let (kind, fields) = state.as_object().unwrap().iter().next().unwrap();
            match fields["step"].as_u64() {
                Some(step) => Some(usize::try_from(step).unwrap()),
                None => {
                    assert!(
                        ["Promoting", "AwaitingEvidence", "Watching"].contains(&kind.as_str()),
                        "{state}"
                    );
                    Some(usize::MAX)
                }
            }
        }
    };
    let mut decided = Vec::new();
    let queued = machine["out"]["queue"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in queued.iter().chain(std::iter::once(&rollout["pending"])) {
        if let Some(m) = c["Record"].as_str() {
            decided.push(m.to_owned());
        }
        if let Ok(e) = serde_json::from_value::<hatoba_core::Event>(c["Event"].clone()) {
            decided.push(e.to_string());
        }
    }
    (begun, decided)
}

/// The step an event begins, if it begins one (`step 1: pause 1500ms`,
/// `step 0: set weight 50`; not `step 1: pause over`).
fn begins_step(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("step ")?;
    let (n, what) = rest.split_once(": ")?;
    let begins = what.starts_with("set weight")
        || (what.starts_with("pause") && what != "pause over")
        || what == "analysis";
    begins.then(|| n.parse().ok()).flatten()
}

/// The running instances `hatoba diagnose` shows: id → pid.
fn pids(state: &Path) -> BTreeMap<String, u64> {
    crate::up::running(&crate::up::diagnose(state), None)
        .into_iter()
        .collect()
}

fn latest(state: &Path) -> Option<(String, String)> {
    let d = crate::support::latest(state);
    Some((
        d["version"].as_str()?.to_owned(),
        d["status"].as_str()?.to_owned(),
    ))
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
    let traffic = Traffic::clients(port, 4);
    traffic.wait_answered(20);
    let mut serving = "v1".to_owned();
    let (mut resumed_mid_rollout, mut resumed_mid_step, mut kept) = (0, 0, 0);
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
        let before = pids(&state);
        if let Some(u) = up.take() {
            u.kill9();
        }
        // No controller runs now: what it saved is what the next resumes.
        let record = saved(&state);
        let live = crate::support::latest(&state);
        assert_eq!(live["version"], version.as_str(), "round {round}: {live}");
        let id = live["id"].as_str().unwrap().to_owned();
        let began = record["rollout"]["deployment"] == id.as_str();
        let resumes = began && live["status"] == "in_progress";
        let (step, decided) = if resumes {
            resumed_mid_rollout += 1;
            position(&record["rollout"])
        } else {
            (None, Vec::new())
        };
        up = Some(Up::start(&state, &file, &[]));

        // Re-adopted, not replaced: every instance that ran before the kill
        // and runs now is the same process.
        let after = pids(&state);
        let same: Vec<&String> = before.keys().filter(|i| after.contains_key(*i)).collect();
        assert!(
            !same.is_empty(),
            "round {round} ({delay:?}): none of {before:?} runs after the restart: {after:?}"
        );
        for i in &same {
            assert_eq!(
                before[*i], after[*i],
                "round {round} ({delay:?}): {i} runs under another pid after the restart"
            );
        }
        kept += same.len();

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
        // A healthy rollout succeeds, resumed or not; the one exception is a
        // deployment recorded but not yet begun when the controller died
        // (its saved record names no rollout of it), failed as such.
        let reason = crate::support::latest(&state)["reason"].clone();
        let never_began = !began
            && status == "failed"
            && reason
                .as_str()
                .is_some_and(|r| r.contains("the controller stopped before the rollout began"));
        assert!(
            status == "succeeded" || never_began,
            "round {round} ({delay:?}): {version} ended {status} ({reason}); saved before the restart: {record}"
        );
        eprintln!(
            "round {round}: killed after {delay:?} at {}, {} re-adopted; {version} {status}",
            record["rollout"]["machine"]["Canary"]["state"],
            same.len()
        );
        if status == "succeeded" {
            serving = v;
        }
        if resumes {
            // It went on from its saved step: after the restart no step it
            // had begun is begun again (beyond the events it had decided
            // and not yet written), and no instance it had was gone.
            let log = events(&state, &id);
            let restarts: Vec<usize> = (0..log.len())
                .filter(|i| log[*i].starts_with("controller restarted: resuming"))
                .collect();
            assert_eq!(restarts.len(), 1, "round {round}: {log:#?}");
            assert!(
                log[restarts[0]].contains("(0 gone)"),
                "round {round}: {log:#?}"
            );
            let mut decided = decided;
            for m in &log[restarts[0]..] {
                if let Some(pos) = decided.iter().position(|d| d == m) {
                    decided.remove(pos);
                    continue;
                }
                if let (Some(j), Some(begun)) = (begins_step(m), step) {
                    assert!(
                        j > begun,
                        "round {round} ({delay:?}): saved at step {begun}, the resumed rollout began step {j} again: {log:#?}\nsaved: {record}"
                    );
                }
            }
            if step.is_some_and(|s| s < usize::MAX) {
                resumed_mid_step += 1;
            }
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
    let counts = traffic.finish();
    eprintln!(
        "{resumed_mid_rollout} of 8 kills landed mid-rollout ({resumed_mid_step} mid-step), \
         {kept} instances re-adopted with their pids; {counts}"
    );
    counts.assert_no_failed(500);
    assert!(
        resumed_mid_rollout >= 3 && resumed_mid_step >= 2,
        "too few kills landed mid-rollout to test resuming"
    );
    drop(up);
}
