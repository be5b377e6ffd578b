//! Tidy: the architecture's invariants as checks over the source tree.
//!
//! 1. The pure crates do no IO and read no clock: their dependencies are on
//!    an allowlist, their sources name no `std::fs`, `std::net`,
//!    `std::process`, `Instant::now`, `SystemTime::now`, `thread::sleep` or
//!    tokio, and `cargo tree` finds no tokio, hyper or sqlx below them.
//! 2. Only the binaries print: `allow(clippy::print_stdout)` appears only in
//!    binary entry points.
//! 3. Every Rust file opens with a `//!` doc saying what it is for.
//! 4. No test is `#[ignore]`d and no `todo!()` is left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pure layer: logic that must stay testable on a simulated clock.
pub(crate) const PURE_CRATES: &[&str] = &[
    "hatoba-core",
    "hatoba-spec",
    "hatoba-rollout",
    "hatoba-analysis",
];

/// What a pure crate may depend on (normal dependencies).
const PURE_ALLOWED_DEPS: &[&str] = &[
    "hatoba-core",
    "thiserror",
    "saphyr-parser",
    "schemars",
    "serde_json",
    "strsim",
    "serde",
    // Display widths of characters, for the carets under a diagnostic.
    "unicode-width",
];

const FORBIDDEN_IN_PURE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "Instant::now",
    "SystemTime::now",
    "thread::sleep",
    "tokio::",
    "std::env::var",
];

/// Crates whose entry points may print.
const PRINTING_FILES: &[&str] = &[
    "crates/hatoba/src/main.rs",
    "crates/hatoba-demo-app/src/main.rs",
    "xtask/src/main.rs",
];

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn check(root: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for krate in PURE_CRATES {
        check_pure_manifest(root, krate, &mut problems);
        check_pure_sources(root, krate, &mut problems);
        check_pure_tree(root, krate, &mut problems);
    }
    for file in rust_files(root) {
        let rel = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let is_test_file = rel.contains("/tests/") || rel.contains("/fuzz/");
        if rel == "xtask/src/tidy.rs" {
            continue; // names the patterns it looks for
        }
        if !is_test_file && !text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{rel}: does not open with a `//!` doc saying what it is for"
            ));
        }
        if text.contains("allow(clippy::print_stdout")
            && !PRINTING_FILES.contains(&rel.as_str())
            && !is_test_file
        {
            problems.push(format!(
                "{rel}: only binary entry points may print (invariant 6)"
            ));
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("#[ignore") {
                problems.push(format!(
                    "{rel}:{}: `#[ignore]`: assert today's behaviour with a FIXME instead",
                    n + 1
                ));
            }
            if code.contains(concat!("todo", "!(")) || code.contains(concat!("unimplemented", "!("))
            {
                problems.push(format!(
                    "{rel}:{}: a stub (`todo!`/`unimplemented!`) must not land",
                    n + 1
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_pure_manifest(root: &Path, krate: &str, problems: &mut Vec<String>) {
    let path = root.join("crates").join(krate).join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        problems.push(format!("{}: missing", path.display()));
        return;
    };
    let Ok(manifest) = text.parse::<toml::Table>() else {
        problems.push(format!("{}: not valid TOML", path.display()));
        return;
    };
    if let Some(deps) = manifest.get("dependencies").and_then(|d| d.as_table()) {
        for dep in deps.keys() {
            if !PURE_ALLOWED_DEPS.contains(&dep.as_str()) {
                problems.push(format!(
                    "crates/{krate}/Cargo.toml: `{dep}` is not on the pure layer's allowlist (xtask/src/tidy.rs); the pure layer does no IO"
                ));
            }
        }
    }
}

fn check_pure_sources(root: &Path, krate: &str, problems: &mut Vec<String>) {
    for file in rust_files(&root.join("crates").join(krate).join("src")) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        // Unit tests may read files; the code under test may not.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or("");
            for bad in FORBIDDEN_IN_PURE {
                if line.contains(bad) {
                    let rel = file
                        .strip_prefix(root)
                        .unwrap_or(&file)
                        .display()
                        .to_string();
                    problems.push(format!(
                        "{rel}:{}: `{bad}` in the pure layer (invariant 1: no IO, no clock)",
                        n + 1
                    ));
                }
            }
        }
    }
}

fn check_pure_tree(root: &Path, krate: &str, problems: &mut Vec<String>) {
    for forbidden in ["tokio", "hyper", "sqlx", "mio"] {
        let out = Command::new(env!("CARGO"))
            .current_dir(root)
            .args([
                "tree",
                "--offline",
                "-q",
                "-e",
                "normal",
                "-p",
                krate,
                "-i",
                forbidden,
            ])
            .output();
        match out {
            // cargo exits non-zero when the package is not in the graph: what we want.
            Ok(o) if !o.status.success() => {}
            Ok(o) => problems.push(format!(
                "{krate} depends on {forbidden} through:\n{}",
                String::from_utf8_lossy(&o.stdout)
            )),
            Err(e) => problems.push(format!("could not run `cargo tree`: {e}")),
        }
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(p);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy() {
        if let Err(problems) = check(&workspace_root()) {
            panic!(
                "tidy found {} problem(s):\n{}",
                problems.len(),
                problems.join("\n")
            );
        }
    }

    #[test]
    fn tidy_catches_io_in_the_pure_layer() {
        let dir = tempfile_dir();
        let src = dir.join("crates/hatoba-core/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            dir.join("crates/hatoba-core/Cargo.toml"),
            "[package]\nname='hatoba-core'\n[dependencies]\ntokio='1'\n",
        )
        .unwrap();
        std::fs::write(
            src.join("lib.rs"),
            "fn f() { let _ = std::fs::read(\"x\"); }\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        check_pure_manifest(&dir, "hatoba-core", &mut problems);
        check_pure_sources(&dir, "hatoba-core", &mut problems);
        let text = problems.join("\n");
        assert!(
            text.contains("`tokio` is not on the pure layer's allowlist"),
            "{text}"
        );
        assert!(text.contains("`std::fs` in the pure layer"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hatoba-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
