//! The conformance story every `Runtime` driver passes (atuin's `db_story`
//! idea): start, observe, serve, stop gracefully, stop forcefully, report
//! exits and spawn failures, stay idempotent. A driver's test supplies the
//! programs; the story checks what any runtime must do with them.

#![allow(clippy::unwrap_used, clippy::panic)] // test support fails by panicking

use crate::wait_for_async;
use hatoba_core::Millis;
use hatoba_runtime::{InstanceId, InstanceSpec, InstanceState, Runtime, RuntimeError};
use std::net::SocketAddr;
use std::time::Duration;

/// The programs the story runs, all for one service.
#[derive(Clone, Debug)]
pub struct StoryPrograms {
    /// Serves HTTP `GET /` with 200 on `PORT`; exits promptly on SIGTERM.
    pub serve: InstanceSpec,
    /// Exits at once with code 3.
    pub exit_at_once: InstanceSpec,
    /// Serves on `PORT` but ignores SIGTERM (must be killed).
    pub ignores_sigterm: InstanceSpec,
    /// A program that does not exist.
    pub missing: InstanceSpec,
}

async fn http_ok(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

async fn serving(addr: SocketAddr) {
    wait_for_async(Duration::from_secs(30), || http_ok(addr))
        .await
        .unwrap_or_else(|e| panic!("{addr} never served: {e}"));
}

/// Runs the story against `rt`.
pub async fn runtime_story(rt: &dyn Runtime, p: StoryPrograms) {
    let service = p.serve.service.clone();
    let now = Millis(1_795_436_113_000);

    // Two instances: running, distinct, each on its own port, serving.
    let a = rt.start(&p.serve, now).await.unwrap();
    let b = rt.start(&p.serve, Millis(now.0 + 1)).await.unwrap();
    assert_eq!(a.state, InstanceState::Running);
    assert_ne!(a.id, b.id);
    assert_ne!(a.addr, b.addr);
    assert!(a.addr.ip().is_loopback());
    serving(a.addr).await;
    serving(b.addr).await;
    let listed = rt.list(&service).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&a.id, &b.id]
    );

    // A graceful stop ends it well within the grace period, and is idempotent.
    let grace = Duration::from_secs(10);
    let started = tokio::time::Instant::now();
    let stopped = rt.stop(&a.id, grace).await.unwrap();
    assert!(
        started.elapsed() < grace,
        "a graceful stop waited the whole grace period"
    );
    assert!(
        matches!(stopped.state, InstanceState::Exited { .. }),
        "{stopped:?}"
    );
    assert!(!http_ok(a.addr).await, "stopped instance still serves");
    let again = rt.stop(&a.id, grace).await.unwrap();
    assert_eq!(again.state, stopped.state);
    assert!(
        http_ok(b.addr).await,
        "stopping one instance disturbed another"
    );

    // An instance that dies at once is reported with its exit code.
    let dead = rt.start(&p.exit_at_once, now).await.unwrap();
    let id = dead.id.clone();
    wait_for_async(Duration::from_secs(30), || async {
        rt.list(&service).await.unwrap().iter().any(|s| {
            s.id == id
                && s.state
                    == InstanceState::Exited {
                        code: Some(3),
                        signal: None,
                    }
        })
    })
    .await
    .unwrap_or_else(|e| panic!("exit code 3 never reported: {e}"));

    // One that ignores SIGTERM is killed after the grace period.
    let stubborn = rt.start(&p.ignores_sigterm, now).await.unwrap();
    serving(stubborn.addr).await;
    let grace = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let killed = rt.stop(&stubborn.id, grace).await.unwrap();
    assert!(
        started.elapsed() >= grace,
        "killed before the grace period ended"
    );
    assert!(
        matches!(
            killed.state,
            InstanceState::Exited {
                signal: Some(9),
                ..
            } | InstanceState::Exited {
                code: Some(137),
                ..
            }
        ),
        "{killed:?}"
    );

    // Errors name what is wrong.
    match rt.start(&p.missing, now).await {
        Err(e @ RuntimeError::Spawn { .. }) => {
            assert!(e.to_string().contains(&p.missing.program), "{e}")
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
    assert!(matches!(
        rt.stop(&InstanceId("nope".to_owned()), grace).await,
        Err(RuntimeError::NotFound { .. })
    ));

    rt.stop(&b.id, Duration::from_secs(10)).await.unwrap();
    for s in rt.list(&service).await.unwrap() {
        assert!(
            matches!(s.state, InstanceState::Exited { .. }),
            "left running: {s:?}"
        );
    }
}
