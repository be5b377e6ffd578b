//! Commands that need no server: validate, schema, completions, usage errors.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn hatoba() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hatoba"));
    cmd.env_remove("HATOBA_STATE_DIR")
        .env_remove("HATOBA_OUTPUT")
        .env_remove("HATOBA_FILE")
        .env("NO_COLOR", "1");
    cmd
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_example_validates() {
    for name in [
        "quickstart",
        "rolling",
        "blue-green",
        "seeds-canary",
        "docker",
    ] {
        let file = root().join("examples").join(name).join("hatoba.yaml");
        hatoba()
            .arg("validate")
            .arg("-f")
            .arg(&file)
            .assert()
            .success()
            .stdout(predicate::str::contains(": valid: app"));
    }
}

#[test]
fn invalid_spec_exits_2_with_located_diagnostics_on_stderr() {
    let file = root().join("crates/hatoba-spec/tests/data/invalid/02-weight-out-of-range.yaml");
    hatoba()
        .arg("validate")
        .arg("-f")
        .arg(&file)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "02-weight-out-of-range.yaml:17:24: error: services.web.strategy.canary.steps[2].setWeight: expected a weight from 0 to 100, found 120",
        ));
}

#[test]
fn validate_json_reports_diagnostics_as_data() {
    let file = root().join("crates/hatoba-spec/tests/data/invalid/30-many-mistakes.yaml");
    let out = hatoba()
        .args(["validate", "--output", "json", "-f"])
        .arg(&file)
        .assert()
        .code(2)
        .get_output()
        .stdout
        .clone();
    let v: hatoba_api_json::Validation = serde_json::from_slice(&out).unwrap();
    assert!(!v.valid);
    assert_eq!(v.diagnostics.len(), 6);
    assert_eq!(
        (v.diagnostics[0].line, v.diagnostics[0].column),
        (Some(5), Some(7))
    );
    assert_eq!(v.diagnostics[0].path, "services.web.process.comand");
}

/// Only the fields this test reads: the JSON contract, seen from outside.
mod hatoba_api_json {
    #[derive(serde::Deserialize)]
    pub(crate) struct Validation {
        pub(crate) valid: bool,
        pub(crate) diagnostics: Vec<Diagnostic>,
    }
    #[derive(serde::Deserialize)]
    pub(crate) struct Diagnostic {
        pub(crate) line: Option<usize>,
        pub(crate) column: Option<usize>,
        pub(crate) path: String,
    }
}

#[test]
fn files_that_are_not_specs_get_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let check = |path: &Path, expect: &str| {
        hatoba()
            .arg("validate")
            .arg("-f")
            .arg(path)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(expect))
            .stderr(predicate::str::contains("panicked").not());
    };
    check(&dir.path().join("missing.yaml"), "does not exist");
    check(dir.path(), "is a directory, not a spec file");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    check(&empty, "error: the file is empty");
    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, [0x7f, b'E', b'L', b'F', 0, 1, 2, 3]).unwrap();
    check(&binary, "this is a binary file");
    let big = dir.path().join("big.yaml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(50 * 1024 * 1024).unwrap();
    check(&big, "is larger than 4194304 bytes, the most a spec may be");
    let malformed = dir.path().join("malformed.yaml");
    std::fs::write(&malformed, "app: x\nservices: {web: [}\n").unwrap();
    check(&malformed, "malformed.yaml:2:");
}

#[test]
fn spec_from_stdin_and_devices_that_are_not_files() {
    let spec = std::fs::read(root().join("examples/rolling/hatoba.yaml")).unwrap();
    hatoba()
        .args(["validate", "-f", "-"])
        .write_stdin(spec)
        .assert()
        .success()
        .stdout(predicate::str::contains("-: valid: app `rolling-example`"));
    hatoba()
        .args(["validate", "-f", "-"])
        .write_stdin("app: [")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-:2:1: error: invalid YAML"));
    hatoba()
        .args(["validate", "-f", "/dev/zero"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "`/dev/zero` is not a regular file",
        ));
}

#[test]
fn unreadable_file_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("secret.yaml");
    std::fs::write(&file, "app: x\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads any file; run the binary as `nobody` then.
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut cmd = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_hatoba")]);
        c
    } else {
        hatoba()
    };
    cmd.arg("validate")
        .arg("-f")
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("permission denied"));
}

#[test]
fn schema_is_the_checked_in_one() {
    let out = hatoba()
        .arg("schema")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let checked_in = std::fs::read(root().join("docs/hatoba.schema.json")).unwrap();
    assert_eq!(out, checked_in);
    let _: serde_json::Value = serde_json::from_slice(&out).unwrap();
}

#[test]
fn openapi_is_the_checked_in_one() {
    let out = hatoba()
        .arg("openapi")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let checked_in = std::fs::read(root().join("docs/openapi.json")).unwrap();
    assert_eq!(
        out, checked_in,
        "docs/openapi.json is stale: `hatoba openapi > docs/openapi.json`"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        hatoba()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains("validate"));
    }
    hatoba().args(["completions", "tcsh"]).assert().code(2);
}

#[test]
fn usage_mistakes_exit_2_and_help_exits_0() {
    hatoba()
        .arg("deploi")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unrecognized subcommand 'deploi'"));
    hatoba()
        .args(["history", "--limit", "lots"])
        .assert()
        .code(2);
    hatoba()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes:"));
    hatoba().arg("--version").assert().success();
}

#[test]
fn inspection_commands_without_a_server_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    // No server: approve and diagnose cannot ask it (exit 3) ...
    for args in [&["approve", "d-1"][..], &["diagnose", "web"]] {
        hatoba()
            .args(["--state-dir", state])
            .args(args)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("hatoba up"));
    }
    // A name that is not a service name is refused before anything else.
    for args in [
        &["logs", "../.."][..],
        &["diagnose", "web/rollback"],
        &["promote", "Web"],
        &["rollback", "a b"],
        &["approve", "not an id"],
    ] {
        hatoba()
            .args(["--state-dir", state])
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("not a valid"));
    }
    // ... and logs falls back to the log files, of which there are none.
    hatoba()
        .args(["--state-dir", state, "logs", "web"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no logs of `web`"));
}

#[test]
fn rollback_takes_wait_as_deploy_does() {
    // `hatoba rollback web --wait` (as one writes `deploy --wait`) is not a
    // usage error: without a server it gets as far as saying none runs.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    for wait in ["--wait", "--wait=complete", "--wait=serving"] {
        hatoba()
            .args(["--state-dir", state, "rollback", "web", wait])
            .assert()
            .code(3)
            .stderr(predicate::str::contains("no Hatoba server runs"));
    }
    hatoba()
        .args(["--state-dir", state, "rollback", "web", "--wait=soon"])
        .assert()
        .code(2);
}

#[test]
fn validate_counts_one_replica_in_the_singular() {
    hatoba()
        .args(["validate", "-f", "-"])
        .write_stdin(
            "app: t\nservices:\n  web:\n    process: {command: ./web}\n    route: {listen: 127.0.0.1:8080}\n    replicas: 1\n",
        )
        .assert()
        .success()
        .stdout(predicate::str::contains("web (rolling, 1 replica, on 127.0.0.1:8080)"));
    hatoba()
        .args(["validate", "-f", "-"])
        .write_stdin(
            "app: t\nservices:\n  web:\n    process: {command: ./web}\n    route: {listen: 127.0.0.1:8080}\n    replicas: 3\n",
        )
        .assert()
        .success()
        .stdout(predicate::str::contains("(rolling, 3 replicas,"));
}

/// An unknown flag exits 2 naming it, keeps clap's "similar argument" tip,
/// and does not suggest passing it as a value after `--` (no service or
/// version name starts with `-`).
#[test]
fn an_unknown_flag_is_named_without_a_misleading_tip() {
    let out = hatoba().args(["status", "--bogus"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unexpected argument '--bogus'"), "{err}");
    assert!(!err.contains("as a value"), "{err}");
    assert!(err.contains("Usage: hatoba status"), "{err}");
    let out = hatoba()
        .args(["deploy", "web", "--versoin", "v1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("a similar argument exists: '--version'"),
        "{err}"
    );
}

/// `--set` values too large for one deploy request are refused by the CLI
/// in its own words (exit 2), before any server is asked: the server's
/// 413 spoke of a "request body" the operator never wrote.
#[test]
fn set_values_too_large_for_a_deploy_are_refused_in_the_commands_words() {
    let dir = tempfile::tempdir().unwrap();
    let big = format!("BIG={}", "x".repeat(70_000));
    let out = hatoba()
        .arg("--state-dir")
        .arg(dir.path())
        .args(["deploy", "web", "--version", "v1", "--set", &big])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the --set values take 70003 bytes; a deploy carries at most 65536"),
        "{err}"
    );
    assert!(err.contains("hatoba secret set"), "{err}");
}
