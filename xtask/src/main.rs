//! Project chores. `cargo xtask tidy` checks the architecture's invariants
//! (written in ARCHITECTURE.md); the same checks run as a test under
//! `cargo test`, so a broken invariant fails CI.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a developer tool that reports on the terminal

mod tidy;

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("tidy") => match tidy::check(&tidy::workspace_root()) {
            Ok(()) => {
                println!("tidy: ok");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("tidy: {p}");
                }
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo xtask tidy");
            ExitCode::from(2)
        }
    }
}
