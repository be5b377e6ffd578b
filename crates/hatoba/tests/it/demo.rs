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
