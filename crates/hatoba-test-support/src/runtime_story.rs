//! The conformance story every `Runtime` driver passes (atuin's `db_story`
//! idea): start, observe, serve, stop gracefully, stop forcefully, report
//! exits and spawn failures, stay idempotent; then what a restarted
//! controller relies on: a second runtime object of the same scope adopts a
//! running instance (and only the very same one: a recycled pid, another
//! start time or another runtime identity is reported as exited), the orphan sweep ends unrecorded
//! instances of the scope but not kept ones nor those of another scope, and
//! usage is reported for running instances only. A driver's test supplies
//! the runtimes and the programs; the story checks what any runtime must do
//! with them.

#![allow(clippy::unwrap_used, clippy::panic)] // test support fails by panicking

use crate::wait_for_async;
use hatoba_core::Millis;
use hatoba_runtime::{
    InstanceId, InstanceSpec, InstanceState, InstanceStatus, Runtime, RuntimeError,
};
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

/// The runtime objects the story drives, all on one machine.
#[derive(Clone, Copy, Debug)]
pub struct StoryRuntimes<'a> {
    /// The runtime under test.
    pub main: &'a dyn Runtime,
    /// A second, independent object of the same driver with the same scope
    /// as `main`: what a restarted controller builds.
    pub same_scope: &'a dyn Runtime,
    /// An object of the same driver with another scope: another controller
    /// on the same machine.
    pub other_scope: &'a dyn Runtime,
}

/// Whether `GET /` on `addr` answers 200 (connection refused, reset or
/// anything else: false).
pub async fn http_ok(addr: SocketAddr) -> bool {
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

async fn exited_in(rt: &dyn Runtime, s: &InstanceStatus) -> bool {
    rt.list(&s.service)
        .await
        .unwrap()
        .iter()
        .any(|l| l.id == s.id && matches!(l.state, InstanceState::Exited { .. }))
}

async fn eventually_exited(rt: &dyn Runtime, s: &InstanceStatus, what: &str) {
    wait_for_async(Duration::from_secs(30), || exited_in(rt, s))
        .await
        .unwrap_or_else(|e| panic!("{what}: {} never reported exited: {e}", s.id));
}

/// Runs the story against `rts.main`, with its twin and its neighbour.
pub async fn runtime_story(rts: StoryRuntimes<'_>, p: StoryPrograms) {
    let rt = rts.main;
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
            assert!(e.to_string().contains(p.missing.workload.what()), "{e}")
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
    assert!(matches!(
        rt.stop(&InstanceId("nope".to_owned()), grace).await,
        Err(RuntimeError::NotFound { .. })
    ));

    // Usage: reported for a running instance, not for an ended one.
    let u = rt
        .usage(&b.id)
        .await
        .expect("no usage reported for a running instance");
    assert!(u.rss_bytes > 0, "{u:?}");
    assert!(u.cpu_seconds >= 0.0, "{u:?}");
    assert_eq!(rt.usage(&a.id).await, None, "usage of a stopped instance");
    assert_eq!(rt.usage(&InstanceId("nope".to_owned())).await, None);

    sweep_story(rts, &p, &b).await;
    adoption_story(rts, &p, &a, &b).await;

    rt.stop(&b.id, Duration::from_secs(10)).await.unwrap();
    for r in [rts.main, rts.same_scope, rts.other_scope] {
        for s in r.list(&service).await.unwrap() {
            assert!(
                matches!(s.state, InstanceState::Exited { .. }),
                "left running by {}: {s:?}",
                r.name()
            );
        }
    }
}

/// The orphan sweep: instances of the scope that neither the sweeping
/// runtime knows nor the caller keeps are ended; nothing else is touched.
/// `running` is an instance `main` started and still runs.
async fn sweep_story(rts: StoryRuntimes<'_>, p: &StoryPrograms, running: &InstanceStatus) {
    let now = Millis(1_795_436_200_000);
    // A controller of this scope started two instances and died before
    // recording `orphan`; it did record `kept`.
    let orphan = rts.same_scope.start(&p.serve, now).await.unwrap();
    let kept = rts.same_scope.start(&p.serve, now).await.unwrap();
    // Another controller on the machine runs its own.
    let neighbour = rts.other_scope.start(&p.serve, now).await.unwrap();
    for s in [&orphan, &kept, &neighbour] {
        serving(s.addr).await;
    }
    let swept = rts
        .main
        .sweep(std::slice::from_ref(&kept.id))
        .await
        .unwrap();
    assert_eq!(
        swept,
        std::slice::from_ref(&orphan.id),
        "swept the wrong instances"
    );
    assert!(!http_ok(orphan.addr).await, "a swept orphan still serves");
    assert!(http_ok(kept.addr).await, "the sweep ended a kept instance");
    assert!(
        http_ok(running.addr).await,
        "the sweep ended an instance the sweeping runtime knows"
    );
    assert!(
        http_ok(neighbour.addr).await,
        "the sweep ended an instance of another scope"
    );
    eventually_exited(rts.same_scope, &orphan, "swept orphan").await;
    assert_eq!(
        rts.main
            .sweep(std::slice::from_ref(&kept.id))
            .await
            .unwrap(),
        Vec::<InstanceId>::new(),
        "a second sweep finds nothing"
    );

    let grace = Duration::from_secs(10);
    rts.same_scope.stop(&kept.id, grace).await.unwrap();
    rts.other_scope.stop(&neighbour.id, grace).await.unwrap();
}

/// Adoption by a second runtime object of the same scope: the very same
/// running instance is taken over (and can be stopped from there); a record
/// whose pid now names another process, or whose start time differs, is
/// reported as exited and the process is left alone. `ended` is an instance
/// `main` stopped, `running` one it still runs.
async fn adoption_story(
    rts: StoryRuntimes<'_>,
    p: &StoryPrograms,
    ended: &InstanceStatus,
    running: &InstanceStatus,
) {
    let twin = rts.same_scope;
    let grace = Duration::from_secs(10);
    let exited_unknown = InstanceState::Exited {
        code: None,
        signal: None,
    };

    // `ended`'s recorded pid, recycled: it now names `running`'s process.
    let recycled = InstanceStatus {
        pid: running.pid,
        state: InstanceState::Running,
        ..ended.clone()
    };
    let got = twin.adopt(&recycled).await.unwrap();
    assert_eq!(got.state, exited_unknown, "adopted a recycled pid: {got:?}");
    assert_eq!(got.id, ended.id);

    // `running`, recorded with another start time (or, for a runtime that
    // proves identity its own way, another identity: a container of the
    // same name made anew).
    let other_start = match &running.identity {
        Some(identity) => InstanceStatus {
            identity: Some(format!("{identity}-other")),
            ..running.clone()
        },
        None => InstanceStatus {
            proc_start: Some(running.proc_start.map_or(1, |s| s.wrapping_add(1))),
            ..running.clone()
        },
    };
    let got = twin.adopt(&other_start).await.unwrap();
    assert_eq!(got.state, exited_unknown, "start time not checked: {got:?}");
    // Registered as exited: stopping it there signals nothing.
    let again = twin.stop(&running.id, grace).await.unwrap();
    assert_eq!(again.state, exited_unknown);
    assert!(
        http_ok(running.addr).await,
        "a refused adoption touched the process"
    );

    // The real thing: a running instance the first runtime started.
    let c = rts
        .main
        .start(&p.serve, Millis(1_795_436_300_000))
        .await
        .unwrap();
    serving(c.addr).await;
    let adopted = twin.adopt(&c).await.unwrap();
    assert_eq!(adopted.state, InstanceState::Running, "{adopted:?}");
    assert_eq!(
        (adopted.pid, adopted.proc_start, &adopted.identity),
        (c.pid, c.proc_start, &c.identity)
    );
    assert_eq!((&adopted.id, adopted.addr), (&c.id, c.addr));
    assert_eq!(
        twin.adopt(&c).await.unwrap(),
        adopted,
        "adopt is idempotent"
    );
    assert!(
        twin.list(&c.service)
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == c.id && s.state == InstanceState::Running),
        "an adopted instance is listed"
    );
    let started = tokio::time::Instant::now();
    let stopped = twin.stop(&c.id, grace).await.unwrap();
    assert!(
        started.elapsed() < grace,
        "a graceful stop of an adopted instance waited the whole grace period"
    );
    assert!(
        matches!(stopped.state, InstanceState::Exited { .. }),
        "{stopped:?}"
    );
    assert!(
        !http_ok(c.addr).await,
        "a stopped adopted instance still serves"
    );
    eventually_exited(rts.main, &c, "adopted and stopped").await;
    assert_eq!(twin.stop(&c.id, grace).await.unwrap().state, stopped.state);
}
