//! The process runtime passes the runtime conformance story, with this test
//! binary re-executed as the programs it runs; plus what is particular to
//! processes: process groups and log files.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use hatoba_runtime::{InstanceSpec, Runtime};
use hatoba_runtime_process::ProcessRuntime;
use hatoba_test_support::{StoryPrograms, runtime_story};
use std::collections::BTreeMap;

const ROLE: &str = "HATOBA_RUNTIME_TEST_ROLE";

/// When re-executed as an instance: serve the demo app on `PORT`.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    if role == "exit3" {
        std::process::exit(3);
    }
    if role == "ignore-sigterm" {
        // Ignore SIGTERM for the whole process.
        ignore_sigterm();
    }
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        eprintln!("child listening on {port}");
        let shutdown = async {
            if role == "ignore-sigterm" {
                std::future::pending::<()>().await;
            }
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
        };
        let _ =
            hatoba_demo_app::serve(listener, hatoba_demo_app::Config::default(), shutdown).await;
    });
    std::process::exit(0);
}

/// SIGTERM ignored through tokio: register a handler and never read it.
fn ignore_sigterm() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sig = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap()
    });
    std::mem::forget(sig);
    std::mem::forget(rt);
}

fn spec(role: &str) -> InstanceSpec {
    let exe = std::env::current_exe().unwrap();
    InstanceSpec {
        service: "web".parse().unwrap(),
        version: "v1".parse().unwrap(),
        program: exe.display().to_string(),
        args: ["child", "--exact", "--nocapture", "--test-threads=1"]
            .map(String::from)
            .to_vec(),
        env: BTreeMap::from([(ROLE.to_owned(), role.to_owned())]),
        working_dir: std::env::temp_dir(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_runtime_story() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs"));
    let missing = InstanceSpec {
        program: "./no-such-program".to_owned(),
        ..spec("serve")
    };
    runtime_story(
        &rt,
        StoryPrograms {
            serve: spec("serve"),
            exit_at_once: spec("exit3"),
            ignores_sigterm: spec("ignore-sigterm"),
            missing,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_get_their_own_group_port_env_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs"));
    let s = rt
        .start(&spec("serve"), hatoba_core::Millis(0))
        .await
        .unwrap();
    let pid = s.pid.unwrap();
    // Field 5 of /proc/PID/stat is the process group.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgrp: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid, "an instance leads its own process group");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ
            .split('\0')
            .any(|kv| kv == format!("PORT={}", s.addr.port())),
        "PORT not set"
    );
    assert!(environ.split('\0').any(|kv| kv == format!("{ROLE}=serve")));
    let log = s.log.clone().unwrap();
    assert!(log.starts_with(dir.path().join("logs").join("web")));
    hatoba_test_support::wait_for_async(std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains(&format!("child listening on {}", s.addr.port())) }
    })
    .await
    .unwrap();
    rt.stop(&s.id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
}
