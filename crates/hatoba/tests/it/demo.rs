//! `hatoba demo --quick`: the README's first command works, tells the truth
//! and leaves nothing running.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn quick_demo_holds_every_expectation_and_cleans_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["demo", "--quick"])
        .env("NO_COLOR", "1")
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success()
        .stdout(predicate::str::contains("Every expectation held"))
        .stdout(
            predicate::str::contains("rolled_back")
                .and(predicate::str::contains("background analysis failed")),
        )
        .stdout(predicate::str::contains("canary not ready within"))
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| v")).collect();
    assert_eq!(rows.len(), 4, "{text}");
    for row in &rows {
        assert!(row.trim_end_matches(['|', ' ']).ends_with("yes"), "{row}");
    }
    assert!(text.contains("current version: v2"), "{text}");
    // The spec line does not pass the demo's pauses off as the file's.
    assert!(
        text.contains("examples/quickstart/hatoba.yaml, its waits shortened for the demo"),
        "{text}"
    );
    // The demo's instances are this binary running `demo-app` in a state
    // directory named `hatoba-demo-*` (other tests run their own instances
    // of it meanwhile, in other directories); none is left.
    let left = std::process::Command::new("pgrep")
        .args(["-f", "hatoba demo-app"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&left.stdout);
    let mine: Vec<&str> = pids
        .lines()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0).any(|v| {
                    v.starts_with(b"HATOBA_SCOPE=")
                        && String::from_utf8_lossy(v).contains("/hatoba-demo-")
                })
            })
        })
        .collect();
    assert!(mine.is_empty(), "instances left running: {mine:?}");
}

/// `hatoba demo --docker --quick`: the same phases with containers of the
/// local Docker Engine, from an image it builds from this binary; every
/// expectation holds and neither a container nor the image is left. Skips
/// without an engine (fails under `HATOBA_REQUIRE_EXTERNAL=1`).
#[test]
fn docker_demo_holds_every_expectation_and_removes_its_containers_and_image() {
    if crate::docker::engine().is_none() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["demo", "--docker", "--quick"])
        .env("NO_COLOR", "1")
        .timeout(std::time::Duration::from_secs(300))
        .assert()
        .success()
        .stdout(predicate::str::contains("Every expectation held"))
        .stdout(predicate::str::contains("background analysis failed"))
        .stdout(predicate::str::contains("canary not ready within"))
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| v")).collect();
    assert_eq!(rows.len(), 4, "{text}");
    for row in &rows {
        assert!(row.trim_end_matches(['|', ' ']).ends_with("yes"), "{row}");
    }
    assert!(text.contains("current version: v2"), "{text}");
    // It says which image and which scope label; neither is left.
    let said = |before: &str| {
        text.split(before)
            .nth(1)
            .and_then(|rest| rest.split([' ', '`', '\n', ')', ',']).next())
            .unwrap_or_else(|| panic!("no `{before}` in {text}"))
            .to_owned()
    };
    let (image, scope) = (said("Docker containers of `"), said("hatoba.scope="));
    assert!(image.starts_with("hatoba-demo:run-"), "{image}");
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        !docker(&["image", "inspect", &image]).status.success(),
        "the image {image} is left"
    );
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=hatoba.scope={scope}"),
    ]);
    assert!(left.status.success());
    assert!(
        left.stdout.is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// With no Docker Engine answering, `hatoba demo --docker` says so and
/// what to do instead, exits 1, and deploys nothing.
#[test]
fn docker_demo_without_an_engine_says_so_and_exits_1() {
    Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["demo", "--docker", "--quick"])
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no Docker Engine answers"))
        .stderr(predicate::str::contains("without --docker"))
        .stdout(predicate::str::contains("deploy ").not());
}
