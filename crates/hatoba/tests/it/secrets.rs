//! Secrets end to end: a canary value stored with `hatoba secret set`,
//! deployed through `hatoba up`, seen by the instance in its environment,
//! pinned by a rollback, renewed by `rotate`, and found in no output: not
//! in the database file or its WAL, the state directory, any stdout or
//! stderr of `hatoba` (`up` included), `history`/`status -o json`,
//! `diagnose`, or the API's answers.

use crate::support::{Sandbox, api_get, hatoba, latest, poll};
use predicates::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CANARY_1: &str = "s3cr3t-canary-7f2a";
const CANARY_2: &str = "s3cr3t-canary-second-4b9e";
const CANARY_3: &str = "s3cr3t-canary-rotated-c05d";
/// In `hatoba up`'s own environment under the secret's name: not used.
const FROM_UP_ENV: &str = "s3cr3t-canary-up-env-91aa";
/// Given to a refused `--set`.
const FROM_SET: &str = "s3cr3t-canary-set-flag-d3e0";
const ALL: [&str; 5] = [CANARY_1, CANARY_2, CANARY_3, FROM_UP_ENV, FROM_SET];

/// One web service that writes `$HATOBA_SECRET_KEY` (it should have
/// none) to `seen.key` and `$DB_PASSWORD` (from `env`, as the spec says)
/// to `seen`, then serves as the demo app.
fn spec(port: u16, seen: &Path) -> String {
    let script = format!(
        "printf %s \"$HATOBA_SECRET_KEY\" > {seen}.key; \
         printf %s \"$DB_PASSWORD\" > {seen}.tmp && mv {seen}.tmp {seen}; \
         exec {exe} demo-app --version-label \"$HATOBA_VERSION\"",
        seen = seen.display(),
        exe = env!("CARGO_BIN_EXE_hatoba"),
    );
    format!(
        "app: secrets-test\nsecrets: [DB_PASSWORD]\nservices:\n  web:\n    process:\n      \
         command: /bin/sh\n      args: [\"-c\", {script:?}]\n      \
         env: {{DB_PASSWORD: \"${{DB_PASSWORD}}\"}}\n    replicas: 1\n    \
         route: {{listen: \"127.0.0.1:{port}\"}}\n    health:\n      \
         readiness: {{path: /ready, period: 100ms}}\n    drain: 1s\n    \
         strategy: {{rolling: {{maxSurge: 1, maxUnavailable: 0}}}}\n"
    )
}

/// Everything a command printed, kept to be searched for the canaries.
#[derive(Default)]
struct Outputs(Vec<(String, Vec<u8>)>);

impl Outputs {
    /// Runs `cmd`, keeps its stdout and stderr, and returns them.
    fn run(&mut self, what: &str, cmd: &mut assert_cmd::Command) -> assert_cmd::assert::Assert {
        let a = cmd.assert();
        let out = a.get_output();
        self.0
            .push((format!("{what} (stdout)"), out.stdout.clone()));
        self.0
            .push((format!("{what} (stderr)"), out.stderr.clone()));
        a
    }

    fn keep(&mut self, what: String, bytes: Vec<u8>) {
        self.0.push((what, bytes));
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every file under `dir` (sockets and the like skipped), with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            out.extend(files(&path));
        } else if kind.is_file()
            && let Ok(bytes) = std::fs::read(&path)
        {
            out.push((path, bytes));
        }
    }
    out
}

fn seen_value(seen: &Path) -> Option<String> {
    std::fs::read_to_string(seen).ok()
}

/// Waits until the serving instance has written `value` and the newest
/// deployment succeeded.
fn wait_serving(sandbox: &Sandbox, seen: &Path, value: &str) {
    poll(
        "the instance to see its secret",
        Duration::from_secs(60),
        || (seen_value(seen).as_deref() == Some(value)).then_some(()),
    );
    poll("the deployment to succeed", Duration::from_secs(60), || {
        (latest(&sandbox.state)["status"] == "succeeded").then_some(())
    });
}

#[test]
fn a_secret_reaches_the_instance_and_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let seen = work.path().join("seen");
    let sandbox = {
        let seen = seen.clone();
        Sandbox::new(move |port| spec(port, &seen))
    };
    let up_out = work.path().join("up.out");
    let up_err = work.path().join("up.err");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(&sandbox.state)
        .args(["up", "-f"])
        .arg(&sandbox.file)
        .env("DB_PASSWORD", FROM_UP_ENV)
        .env_remove("HATOBA_SECRET_KEY")
        .stdout(std::fs::File::create(&up_out).unwrap())
        .stderr(std::fs::File::create(&up_err).unwrap())
        .spawn()
        .unwrap();
    let up = crate::support::Up(child);
    let pid = u64::from(up.0.id());
    poll("server.json", Duration::from_secs(60), || {
        let t = std::fs::read_to_string(sandbox.state.join("server.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&t).ok()?;
        (v["pid"].as_u64() == Some(pid)).then_some(())
    });
    let state = &sandbox.state;
    let mut outputs = Outputs::default();

    // The key file is the owner's alone.
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(state.join("secret.key"))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode & 0o777, 0o600);

    // `--set` of a secret is refused, with the fix, and not echoed.
    outputs
        .run(
            "deploy --set",
            hatoba(state).args([
                "deploy",
                "web",
                "--version",
                "v1",
                "--set",
                &format!("DB_PASSWORD={FROM_SET}"),
            ]),
        )
        .code(2)
        .stderr(predicate::str::contains("hatoba secret set DB_PASSWORD"));
    // Not set yet: the deployment is refused before it is recorded.
    outputs
        .run(
            "deploy unset",
            hatoba(state).args(["deploy", "web", "--version", "v1"]),
        )
        .code(2)
        .stderr(predicate::str::contains("has no value"));
    // A name the spec does not declare is refused.
    outputs
        .run(
            "secret set undeclared",
            hatoba(state)
                .args(["secret", "set", "DB_PASSWROD"])
                .write_stdin(CANARY_1),
        )
        .code(2)
        .stderr(predicate::str::contains("not declared a secret"))
        // A reload declares it: no restart (which would stop the instances).
        .stderr(predicate::str::contains("then `hatoba reload`"));

    outputs
        .run(
            "secret set",
            hatoba(state)
                .args(["secret", "set", "DB_PASSWORD"])
                .write_stdin(format!("{CANARY_1}\n")),
        )
        .success()
        .stdout(predicate::str::contains("DB_PASSWORD version 1"));
    outputs
        .run(
            "deploy v1",
            hatoba(state).args(["deploy", "web", "--version", "v1", "--wait"]),
        )
        .success();
    // The final newline of stdin is not part of the value; the value from
    // `hatoba up`'s environment is not used.
    wait_serving(&sandbox, &seen, CANARY_1);
    assert_eq!(latest(state)["secrets"]["DB_PASSWORD"], 1);

    // A second version, then v2 with it.
    let file = work.path().join("second");
    std::fs::write(&file, CANARY_2).unwrap();
    outputs
        .run(
            "secret set --from-file",
            hatoba(state)
                .args(["secret", "set", "DB_PASSWORD", "--from-file"])
                .arg(&file),
        )
        .success()
        .stdout(predicate::str::contains("next deployment of: web"));
    outputs
        .run(
            "deploy v2",
            hatoba(state).args(["deploy", "web", "--version", "v2", "--wait"]),
        )
        .success();
    wait_serving(&sandbox, &seen, CANARY_2);
    assert_eq!(latest(state)["secrets"]["DB_PASSWORD"], 2);

    // A rollback runs v1 with the version it ran with.
    outputs
        .run("rollback", hatoba(state).args(["rollback", "web"]))
        .success();
    wait_serving(&sandbox, &seen, CANARY_1);
    assert_eq!(latest(state)["version"], "v1");
    assert_eq!(latest(state)["secrets"]["DB_PASSWORD"], 1);

    // Rotation stores version 3 and deploys v1 again with it.
    outputs
        .run(
            "secret rotate",
            hatoba(state)
                .args(["secret", "rotate", "DB_PASSWORD"])
                .write_stdin(CANARY_3),
        )
        .success()
        .stdout(predicate::str::contains("redeploying `web` v1"));
    wait_serving(&sandbox, &seen, CANARY_3);
    assert_eq!(latest(state)["secrets"]["DB_PASSWORD"], 3);
    let rotated = latest(state)["id"].as_str().unwrap().to_owned();
    let answer = api_get(state, &format!("/api/v1/deployments/{rotated}"));
    assert!(
        contains(&answer, "deployed again for secret DB_PASSWORD version 3"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Listing shows versions and dates, never values.
    let list = outputs.run(
        "secret list",
        hatoba(state).args(["secret", "list", "-o", "json"]),
    );
    let list: serde_json::Value =
        serde_json::from_slice(&list.success().get_output().stdout).unwrap();
    assert_eq!(list["secrets"][0]["name"], "DB_PASSWORD");
    assert_eq!(list["secrets"][0]["versions"].as_array().unwrap().len(), 3);
    assert_eq!(list["secrets"][0]["used_by"][0], "web");
    outputs
        .run("secret list text", hatoba(state).args(["secret", "list"]))
        .success()
        .stdout(predicate::str::contains("DB_PASSWORD"));

    // Everything else that shows a deployment or a service.
    for (what, args) in [
        ("history json", &["history", "-o", "json"][..]),
        ("history", &["history"][..]),
        ("status json", &["status", "-o", "json"][..]),
        ("status", &["status"][..]),
        ("diagnose", &["diagnose", "web"][..]),
        ("diagnose json", &["diagnose", "web", "-o", "json"][..]),
        ("logs", &["logs", "web"][..]),
    ] {
        outputs.run(what, hatoba(state).args(args)).success();
    }
    let id = latest(state)["id"].as_str().unwrap().to_owned();
    for path in [
        "/api/v1/services/web".to_owned(),
        format!("/api/v1/deployments/{id}"),
        "/api/v1/secrets".to_owned(),
    ] {
        outputs.keep(format!("API {path}"), api_get(state, &path));
    }
    // The state directory while the server runs (the WAL holds the
    // newest writes), and again after it stopped.
    for (path, bytes) in files(state) {
        outputs.keep(format!("{} (running)", path.display()), bytes);
    }
    assert!(up.terminate(), "hatoba up did not stop cleanly");
    for (path, bytes) in files(state) {
        outputs.keep(path.display().to_string(), bytes);
    }
    outputs.keep(
        "hatoba up (stdout)".to_owned(),
        std::fs::read(&up_out).unwrap(),
    );
    let up_stderr = std::fs::read(&up_err).unwrap();
    // `hatoba up` said its environment's value is not used, without it.
    assert!(
        contains(&up_stderr, "declared a secret"),
        "{}",
        String::from_utf8_lossy(&up_stderr)
    );
    outputs.keep("hatoba up (stderr)".to_owned(), up_stderr);

    let db = state.join("hatoba.db");
    assert!(
        outputs
            .0
            .iter()
            .any(|(what, _)| what.starts_with(&db.display().to_string())),
        "the database file was not searched"
    );
    assert!(outputs.0.len() > 40, "too few outputs searched");
    for (what, bytes) in &outputs.0 {
        for canary in ALL {
            assert!(
                !contains(bytes, canary),
                "{what} contains the secret value {canary}"
            );
        }
    }
}

/// A value is never taken from the command line, and without a server
/// the commands say to start one.
#[test]
fn secret_commands_need_stdin_and_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    hatoba(&state)
        .args(["secret", "set", "DB_PASSWORD", CANARY_1])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unexpected argument"));
    hatoba(&state)
        .args(["secret", "set", "DB_PASSWORD"])
        .write_stdin(CANARY_1)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("start `hatoba up"))
        .stderr(predicate::str::contains("holder of the key"));
    hatoba(&state)
        .args(["secret", "set", "DB_PASSWORD"])
        .write_stdin("\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("value is empty"));
}

/// The key is checked: a key file others may read stops `hatoba up`, and a
/// value stored under another key is refused as such, not used.
#[test]
fn the_key_is_checked() {
    use std::os::unix::fs::PermissionsExt as _;
    let work = tempfile::tempdir().unwrap();
    let seen = work.path().join("seen");
    let sandbox = {
        let seen = seen.clone();
        Sandbox::new(move |port| spec(port, &seen))
    };
    let state = &sandbox.state;
    let up = sandbox.up(&[]);
    hatoba(state)
        .args(["secret", "set", "DB_PASSWORD"])
        .write_stdin(CANARY_1)
        .assert()
        .success();
    assert!(up.terminate());

    let key = state.join("secret.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    hatoba(state)
        .args(["up", "-f"])
        .arg(&sandbox.file)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "others than its owner may read it",
        ))
        .stderr(predicate::str::contains("chmod 600"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let other = "ab".repeat(32);
    let up = crate::support::Up::start_with_env(
        state,
        &sandbox.file,
        &[],
        &[("HATOBA_SECRET_KEY", other.as_str())],
    );
    hatoba(state)
        .args(["deploy", "web", "--version", "v1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("was stored with key k-"))
        .stderr(predicate::str::contains(CANARY_1).not());
    assert_eq!(seen_value(&seen), None);
    // Stored again under this key, it deploys; the instance does not
    // inherit the key from `hatoba up`'s environment.
    hatoba(state)
        .args(["secret", "set", "DB_PASSWORD"])
        .write_stdin(CANARY_2)
        .assert()
        .success();
    hatoba(state)
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .assert()
        .success();
    wait_serving(&sandbox, &seen, CANARY_2);
    let key_seen = std::fs::read_to_string(work.path().join("seen.key")).unwrap();
    assert_eq!(key_seen, "", "the instance got HATOBA_SECRET_KEY");
    drop(up);
}

/// After `hatoba up` is killed and started again, an instance that
/// crashes is started again with its secret: the recorded version is
/// opened again, as nothing but the version was saved.
#[test]
fn a_restarted_server_restarts_an_instance_with_its_secret() {
    let work = tempfile::tempdir().unwrap();
    let seen = work.path().join("seen");
    let sandbox = {
        let seen = seen.clone();
        Sandbox::new(move |port| spec(port, &seen))
    };
    let state = &sandbox.state;
    let up = sandbox.up(&[]);
    hatoba(state)
        .args(["secret", "set", "DB_PASSWORD"])
        .write_stdin(CANARY_1)
        .assert()
        .success();
    hatoba(state)
        .args(["deploy", "web", "--version", "v1", "--wait"])
        .assert()
        .success();
    wait_serving(&sandbox, &seen, CANARY_1);
    up.kill9();
    let _up = sandbox.up(&[]);
    std::fs::remove_file(&seen).unwrap();
    let answer = api_get(state, "/api/v1/services/web");
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let detail: serde_json::Value = serde_json::from_slice(&answer[at + 4..]).unwrap();
    let pid = detail["instances"][0]["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    poll(
        "the restarted instance to see its secret",
        Duration::from_secs(60),
        || (seen_value(&seen).as_deref() == Some(CANARY_1)).then_some(()),
    );
}
