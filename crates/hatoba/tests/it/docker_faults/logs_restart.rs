//! `hatoba logs -f` of a container across a restart of `hatoba up`
//! (kill -9, then up again: it adopts the container): the server's stream
//! breaks, is opened again after the last line printed once the server
//! answers, and every line the container wrote is printed once.

use super::{Docker, ROLLING, SHELL, add_shell};
use crate::docker::{containers, engine};
use crate::support::logs_follow_across_a_restart;
use std::process::Command;

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
    let (up, out, _) = logs_follow_across_a_restart(&d.sb.state, up, &write, &|| d.sb.up(&[]));
    for not in ["--- stopped ---", "--- new instance ---"] {
        assert!(!out.contains(not), "{out}");
    }
    assert!(up.terminate(), "a clean stop");
}
