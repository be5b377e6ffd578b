//! `hatoba logs -f` of a container across a restart of `hatoba up`
//! (kill -9, then up again: it adopts the container): the server's stream
//! breaks, is opened again after the last line printed once the server
//! answers, and every line the container wrote is printed once.

use super::{Docker, ROLLING, SHELL, add_shell};
use crate::docker::{containers, engine};
use crate::support::poll_explained;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a child writes on `from`, read as it comes.
fn read(from: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let seen = Arc::new(Mutex::new(String::new()));
    let into = Arc::clone(&seen);
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    seen
}

#[test]
fn logs_follow_of_a_container_goes_on_across_a_server_restart() {
    if engine().is_none() {
        return;
    }
    let mut d = Docker::new("restart-follow", ROLLING, SHELL, "");
    add_shell(&d.sb.file.with_file_name("ctx"));
    d.build("v1", "one");
    let up = d.sb.up(&[]);
    d.sb.deploy_ok("v1");
    let follow = Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(&d.sb.state)
        .args(["logs", "web", "-f", "-n", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut follow = crate::support::Reaped(follow);
    let out = read(follow.0.stdout.take().unwrap());
    let err = read(follow.0.stderr.take().unwrap());
    let both = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            out.lock().unwrap(),
            err.lock().unwrap()
        )
    };
    let has = |seen: &Mutex<String>, what: &str| seen.lock().unwrap().contains(what);
    let (container, _) = containers(&d.scope).into_iter().next().unwrap();
    // A line the container writes (its first process's output, as the
    // engine keeps it).
    let write = |line: &str| {
        let exec = Command::new("docker")
            .args(["exec", &container, "/bin/sh", "-c"])
            .arg(format!("echo {line} >/proc/1/fd/2"))
            .output()
            .unwrap();
        assert!(exec.status.success(), "{exec:?}");
    };
    write("a line written before the restart");
    poll_explained(
        "logs -f to print the line written before the restart",
        Duration::from_secs(20),
        || has(&out, "] a line written before the restart").then_some(()),
        both,
    );
    up.kill9();
    poll_explained(
        "logs -f to say it lost the server",
        Duration::from_secs(20),
        || has(&err, "lost the server").then_some(()),
        both,
    );
    write("a line written while the server was away");
    let up = d.sb.up(&[]);
    write("a line written after the restart");
    poll_explained(
        "logs -f to follow on",
        Duration::from_secs(30),
        || {
            (has(&err, "(the server is back: following on)")
                && has(&out, "] a line written while the server was away")
                && has(&out, "] a line written after the restart"))
            .then_some(())
        },
        both,
    );
    assert!(
        matches!(follow.0.try_wait(), Ok(None)),
        "logs -f still follows\n{}",
        both()
    );
    let s = out.lock().unwrap().clone();
    for line in [
        "demo app v1 listening on",
        "a line written before the restart",
        "a line written while the server was away",
        "a line written after the restart",
    ] {
        assert_eq!(s.matches(line).count(), 1, "`{line}` once in:\n{}", both());
    }
    for not in ["--- stopped ---", "--- new instance ---"] {
        assert!(!s.contains(not), "{}", both());
    }
    let e = err.lock().unwrap().clone();
    assert_eq!(e.matches("lost the server").count(), 1, "{}", both());
    drop(follow);
    assert!(up.terminate(), "a clean stop");
}
