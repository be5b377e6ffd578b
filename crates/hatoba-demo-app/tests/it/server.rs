//! The server run in-process: routes, knobs, metrics, crash and graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hatoba_demo_app::{Config, Stop, serve};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{get, send};

const DEADLINE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<Stop>>,
}

async fn start(cfg: Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, cfg, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    /// Asks for a graceful shutdown and waits for `serve` to return.
    async fn shutdown(self) -> Stop {
        let _ = self.stop.send(());
        finished(self.task).await
    }
}

async fn finished(task: JoinHandle<io::Result<Stop>>) -> Stop {
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("serve returns before the deadline")
        .expect("serve does not panic")
        .expect("serve succeeds")
}

/// Polls `/metrics` until `line` appears.
async fn wait_for_metric(addr: SocketAddr, line: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics = get(addr, "/metrics").await.body;
        if metrics.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{line}` in time:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_answers_the_version() {
    let app = start(Config {
        version_label: "v7".to_owned(),
        ..Config::default()
    })
    .await;
    let reply = get(app.addr, "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hatoba-demo-app v7\n");
    assert_eq!(reply.header("x-version"), Some("v7"));

    assert_eq!(get(app.addr, "/health").await.status, 200);
    assert_eq!(get(app.addr, "/nope").await.status, 404);
    assert_eq!(app.shutdown().await, Stop::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_health_makes_liveness_fail() {
    let app = start(Config {
        fail_health: true,
        ..Config::default()
    })
    .await;
    assert_eq!(get(app.addr, "/health").await.status, 500);
    assert_eq!(get(app.addr, "/health/live").await.status, 500);
    assert_eq!(get(app.addr, "/").await.status, 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_ready_after() {
    let ready_after = Duration::from_millis(500);
    let before = Instant::now();
    let app = start(Config {
        ready_after,
        ..Config::default()
    })
    .await;
    assert_eq!(get(app.addr, "/ready").await.status, 503);
    // The seeds' names for the same probes (`examples/seeds-canary`).
    assert_eq!(get(app.addr, "/health/ready").await.status, 503);
    assert_eq!(get(app.addr, "/health/live").await.status, 200);
    // Live while not ready.
    assert_eq!(get(app.addr, "/health").await.status, 200);

    let deadline = Instant::now() + DEADLINE;
    while get(app.addr, "/ready").await.status != 200 {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(before.elapsed() >= ready_after);
    assert_eq!(get(app.addr, "/health/ready").await.status, 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_one_always_fails() {
    let app = start(Config {
        error_rate: 1.0,
        ..Config::default()
    })
    .await;
    for _ in 0..20 {
        let reply = get(app.addr, "/").await;
        assert_eq!(reply.status, 500);
        assert_eq!(reply.header("x-version"), Some("v1"));
    }
    // Probes are not subject to the error rate.
    assert_eq!(get(app.addr, "/health").await.status, 200);
    let metrics = get(app.addr, "/metrics").await.body;
    assert!(
        metrics.contains("http_requests_total{status=\"500\"} 20\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("status=\"200\""), "{metrics}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_zero_never_fails() {
    let app = start(Config::default()).await;
    for _ in 0..20 {
        assert_eq!(get(app.addr, "/").await.status, 200);
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_application_requests_exactly() {
    let app = start(Config::default()).await;
    for _ in 0..3 {
        assert_eq!(get(app.addr, "/").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(app.addr, "/missing").await.status, 404);
    }
    // Not application requests: not counted.
    get(app.addr, "/health").await;
    get(app.addr, "/ready").await;
    get(app.addr, "/metrics").await;

    let reply = get(app.addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    let metrics = reply.body;
    for line in [
        "# TYPE http_requests_total counter",
        "http_requests_total{status=\"200\"} 3",
        "http_requests_total{status=\"404\"} 2",
        "# TYPE http_request_duration_seconds histogram",
        "http_request_duration_seconds_bucket{le=\"+Inf\"} 5",
        "http_request_duration_seconds_count 5",
        "http_requests_in_flight 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    assert_eq!(
        metrics.matches("http_requests_total{").count(),
        2,
        "{metrics}"
    );
    assert!(metrics.contains("http_request_duration_seconds_bucket{le=\"0.005\"} "));
    assert!(metrics.contains("http_request_duration_seconds_sum "));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_added() {
    let latency = Duration::from_millis(150);
    let app = start(Config {
        latency,
        jitter: Duration::from_millis(20),
        ..Config::default()
    })
    .await;
    let started = Instant::now();
    assert_eq!(get(app.addr, "/").await.status, 200);
    assert!(started.elapsed() >= latency);

    // Probes are not delayed; the added latency shows in the histogram.
    let metrics = get(app.addr, "/metrics").await.body;
    assert!(
        metrics.contains("http_request_duration_seconds_bucket{le=\"0.1\"} 0\n"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_n_application_requests() {
    let app = start(Config {
        crash_after: Some(3),
        ..Config::default()
    })
    .await;
    assert_eq!(get(app.addr, "/").await.status, 200);
    assert_eq!(get(app.addr, "/missing").await.status, 404);
    // Probes and scrapes do not count towards the crash.
    assert_eq!(get(app.addr, "/health").await.status, 200);
    assert_eq!(get(app.addr, "/metrics").await.status, 200);
    assert_eq!(get(app.addr, "/").await.status, 200);

    let Running { addr, stop, task } = app;
    assert_eq!(finished(task).await, Stop::Crashed { requests: 3 });
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    drop(stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests() {
    let app = start(Config {
        latency: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    // A keep-alive request: the read only ends if the server closes the
    // connection after answering it.
    let stream = TcpStream::connect(app.addr).await.expect("connect");
    let in_flight = tokio::spawn(send(stream, "/", false));
    wait_for_metric(app.addr, "http_requests_in_flight 1").await;

    let Running { addr, stop, task } = app;
    let _ = stop.send(());
    let reply = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("answered before the deadline")
        .expect("client task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hatoba-demo-app v1\n");
    assert_eq!(finished(task).await, Stop::Shutdown);
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_shutdown_waits_after_draining() {
    let slow_shutdown = Duration::from_millis(300);
    let app = start(Config {
        slow_shutdown,
        ..Config::default()
    })
    .await;
    assert_eq!(get(app.addr, "/").await.status, 200);
    let started = Instant::now();
    assert_eq!(app.shutdown().await, Stop::Shutdown);
    assert!(started.elapsed() >= slow_shutdown);
}

#[tokio::test]
async fn invalid_config_is_an_error_not_a_panic() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cfg = Config {
        error_rate: 1.5,
        ..Config::default()
    };
    let err = serve(listener, cfg, std::future::pending())
        .await
        .expect_err("1.5 is not a rate");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("error rate"), "{err}");
}
