//! `hatoba demo --quick`: the README's first command works and tells the truth.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn quick_demo_holds_every_expectation() {
    let out = Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["demo", "--quick"])
        .env("NO_COLOR", "1")
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .success()
        .stdout(predicate::str::contains("Every expectation held"))
        .stdout(predicate::str::contains(
            "v3: failed (readiness not reached within 3s: 0/2 instances ready on /ready)",
        ))
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    // Every phase row says it met its expectation, and no request failed.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("PHASE"))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    for row in rows {
        assert!(row.trim_end_matches(['|', ' ']).ends_with("yes"), "{row}");
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty() && *c != "|")
            .collect();
        assert_eq!(cells[2], "0", "failed requests in {row}");
    }
    assert!(!text.contains(" NO "), "{text}");
}
