//! The data plane as its own process, driven over its control socket: real
//! listeners and backends on loopback, a real Unix socket in a temporary
//! directory. Listen and update, the controller going away, a restart on
//! the saved state, bad input, socket ownership, and draining.

use crate::support::{InProcess, Load, echo_backend, get, group, spec};
use bytes::Bytes;
use hatoba_metrics::{Role, Window};
use hatoba_proxy::control::{MAX_LINE, Reply};
use hatoba_proxy::{ControlClient, ControlError, DataPlane, DataPlaneConfig, ProxyOptions};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

const ANY: &str = "127.0.0.1:0";

fn any() -> SocketAddr {
    ANY.parse().unwrap()
}

fn config(dir: &Path) -> DataPlaneConfig {
    DataPlaneConfig {
        socket: dir.join("dp.sock"),
        state_file: dir.join("state.json"),
        options: ProxyOptions::default(),
        threads: 2,
    }
}

/// A data plane running in this process, as the binary would run it.
struct Running {
    client: ControlClient,
    /// What it took over from a keeper at start.
    taken: hatoba_proxy::control::TakeOverReport,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ControlError>>>,
}

impl Running {
    async fn start(dir: &Path) -> Running {
        let cfg = config(dir);
        let socket = cfg.socket.clone();
        let plane = DataPlane::bind(cfg).await.unwrap();
        let taken = plane.taken_over().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(plane.run(async move {
            let _ = stopped.await;
        }));
        let client = ControlClient::connect(&socket).await.unwrap();
        Running {
            client,
            taken,
            socket,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it the way SIGTERM would, and waits until it has.
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// `n` requests on one keep-alive connection; the versions that answered.
async fn versions(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut conn = None;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, version) = get(&mut conn, addr).await.unwrap();
        assert_eq!(status, 200, "{version}");
        out.push(version);
    }
    out
}

fn count(seen: &[String], version: &str) -> u64 {
    seen.iter().filter(|v| *v == version).count() as u64
}

fn refused(result: Result<impl std::fmt::Debug, ControlError>) -> String {
    match result {
        Err(ControlError::Refused { message, .. }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A raw connection to the control socket, for what the client never sends.
struct Raw(BufReader<UnixStream>);

impl Raw {
    async fn connect(socket: &Path) -> Raw {
        Raw(BufReader::new(UnixStream::connect(socket).await.unwrap()))
    }

    async fn send(&mut self, line: &str) -> Reply {
        self.0.get_mut().write_all(line.as_bytes()).await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.0.read_line(&mut reply))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str(&reply).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_update_route_to_real_backends_and_windows_count_them() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Running::start(dir.path()).await;
    let hello = dp.client.hello().await.unwrap();
    assert_eq!(hello.pid, std::process::id());
    assert!(hello.services.is_empty());

    let addr = dp.client.listen("web", any()).await.unwrap();
    assert_ne!(addr.port(), 0);
    // Idempotent: the same address, or port 0 again, keeps the listener.
    assert_eq!(dp.client.listen("web", addr).await.unwrap(), addr);
    assert_eq!(dp.client.listen("web", any()).await.unwrap(), addr);
    // Listening with an empty table: 503 until the first update.
    let (status, _) = get(&mut None, addr).await.unwrap();
    assert_eq!(status, 503);

    let echo = echo_backend().await;
    let to_echo = spec(vec![group(Role::Stable, "echo", 100, &[echo])]);
    dp.client.update(&to_echo).await.unwrap();
    dp.client.update(&to_echo).await.unwrap();
    assert_eq!(versions(addr, 3).await, ["echo"; 3]);

    let v1 = InProcess::start("v1", |_| {}).await;
    let v2 = InProcess::start("v2", |_| {}).await;
    let split = |w: u8| {
        spec(vec![
            group(Role::Stable, "v1", 100 - w, &[v1.addr]),
            group(Role::Canary, "v2", w, &[v2.addr]),
        ])
    };
    let mut seen = Vec::new();
    dp.client.update(&split(0)).await.unwrap();
    let all_v1 = versions(addr, 20).await;
    assert_eq!(count(&all_v1, "v1"), 20);
    seen.extend(all_v1);
    dp.client.update(&split(50)).await.unwrap();
    let half = versions(addr, 200).await;
    assert!(
        count(&half, "v1") > 40 && count(&half, "v2") > 40,
        "{half:?}"
    );
    seen.extend(half);
    dp.client.update(&split(100)).await.unwrap();
    let all_v2 = versions(addr, 20).await;
    assert_eq!(count(&all_v2, "v2"), 20);
    seen.extend(all_v2);
    assert_eq!(
        dp.client.snapshot().await.unwrap().services["web"].route,
        split(100)
    );

    // What the proxy measured, through the socket: every request counted.
    for (version, expected) in [("v1", count(&seen, "v1")), ("v2", count(&seen, "v2"))] {
        let client = dp.client.clone();
        hatoba_test_support::wait_for_async(Duration::from_secs(10), || {
            let client = client.clone();
            async move {
                let w = client.window("web", version, Window::M1).await.unwrap();
                w.is_some_and(|w| w.requests() == expected)
            }
        })
        .await
        .unwrap();
        let w = dp
            .client
            .window("web", version, Window::M1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.window, Window::M1);
        assert_eq!(w.success_rate(), Some(1.0));
        assert!(w.quantile(0.99).is_some());
        assert!(w.rate_per_sec() > 0.0);
        // The totals since the data plane started, summed over roles:
        // every request judged, none against, each one's latency bucketed.
        let t = dp.client.totals("web", version).await.unwrap().unwrap();
        assert_eq!((t.judged, t.against), (expected, 0));
        assert_eq!(t.latency_buckets.iter().map(|b| b.1).sum::<u64>(), expected);
    }
    assert_eq!(dp.client.totals("web", "v9").await.unwrap(), None);
    assert!(
        dp.client
            .window("web", "v9", Window::S10)
            .await
            .unwrap()
            .is_none()
    );
    dp.stop().await;
    v1.stop().await;
    v2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_keeps_flowing_when_the_controller_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Running::start(dir.path()).await;
    let v1 = InProcess::start("v1", |_| {}).await;
    let addr = dp.client.listen("web", any()).await.unwrap();
    dp.client
        .update(&spec(vec![group(Role::Stable, "v1", 100, &[v1.addr])]))
        .await
        .unwrap();
    let load = Load::start(addr, 8);
    load.pass(300).await;
    let before = dp.client.snapshot().await.unwrap();

    // The controller vanishes: its connections close, one of them halfway
    // through a request line, another before reading its reply.
    let mut half = UnixStream::connect(&dp.socket).await.unwrap();
    half.write_all(br#"{"op":"upd"#).await.unwrap();
    drop(half);
    let mut unread = UnixStream::connect(&dp.socket).await.unwrap();
    unread.write_all(b"{\"op\":\"snapshot\"}\n").await.unwrap();
    drop(unread);
    let Running {
        client,
        taken,
        socket,
        stop,
        task,
    } = dp;
    drop(client);
    load.pass(1_000).await;

    // A new controller finds everything as it was.
    let client = ControlClient::connect(&socket).await.unwrap();
    assert_eq!(client.snapshot().await.unwrap(), before);
    load.pass(300).await;
    let tally = load.finish().await;
    assert!(tally.failed.is_empty(), "{:?}", &tally.failed);
    assert_eq!(tally.by_version.keys().collect::<Vec<_>>(), ["v1"]);
    Running {
        client,
        taken,
        socket,
        stop,
        task,
    }
    .stop()
    .await;
    v1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_data_plane_serves_the_last_table_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = InProcess::start("v1", |_| {}).await;
    let first = Running::start(dir.path()).await;
    let addr = first.client.listen("web", any()).await.unwrap();
    first
        .client
        .update(&spec(vec![group(Role::Stable, "v1", 100, &[v1.addr])]))
        .await
        .unwrap();
    assert_eq!(versions(addr, 3).await, ["v1"; 3]);
    let saved = first.client.snapshot().await.unwrap();
    let client = first.client.clone();
    first.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(!dir.path().join("dp.sock").exists());
    let file = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(file.contains("\"format\": 1"), "{file}");

    let second = Running::start(dir.path()).await;
    // No listen, no update: the saved table serves.
    assert_eq!(versions(addr, 3).await, ["v1"; 3]);
    assert_eq!(second.client.snapshot().await.unwrap(), saved);
    // The old client reconnects by itself (once) and finds the new process.
    let hello = client.hello().await.unwrap();
    assert_eq!(hello.services, ["web"]);
    second.stop().await;

    // A state file that is not one is an error naming it; nothing is left behind.
    std::fs::write(dir.path().join("state.json"), "{\"format\": 1, \"serv").unwrap();
    let err = DataPlane::bind(config(dir.path())).await.unwrap_err();
    assert!(matches!(err, ControlError::StateCorrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("state.json"), "{err}");
    assert!(!dir.path().join("dp.sock").exists());
    v1.stop().await;
}

/// A service the controller no longer has is closed: its port stops
/// answering, it is gone from the state (a restarted data plane does not
/// listen there again), and the other services keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_service_stops_listening_and_stays_closed() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = InProcess::start("v1", |_| {}).await;
    let dp = Running::start(dir.path()).await;
    let web = dp.client.listen("web", any()).await.unwrap();
    let old = dp.client.listen("old", any()).await.unwrap();
    for service in ["web", "old"] {
        let mut route = spec(vec![group(Role::Stable, "v1", 100, &[v1.addr])]);
        route.service = service.to_owned();
        dp.client.update(&route).await.unwrap();
    }
    assert_eq!(versions(old, 2).await, ["v1"; 2]);
    dp.client.close("old").await.unwrap();
    // Closing what does not listen is not an error.
    dp.client.close("old").await.unwrap();
    dp.client.close("never-was").await.unwrap();
    hatoba_test_support::wait_for_async(Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(old).await.is_err()
    })
    .await
    .unwrap_or_else(|e| panic!("{old} still accepts: {e}"));
    assert_eq!(versions(web, 2).await, ["v1"; 2]);
    assert_eq!(dp.client.hello().await.unwrap().services, ["web"]);
    dp.stop().await;

    let again = Running::start(dir.path()).await;
    assert_eq!(again.client.hello().await.unwrap().services, ["web"]);
    assert!(tokio::net::TcpStream::connect(old).await.is_err());
    assert_eq!(versions(web, 2).await, ["v1"; 2]);
    again.stop().await;
    v1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_an_error_and_the_old_table_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Running::start(dir.path()).await;
    let v1 = InProcess::start("v1", |_| {}).await;
    let v2 = InProcess::start("v2", |_| {}).await;
    let addr = dp.client.listen("web", any()).await.unwrap();
    dp.client
        .update(&spec(vec![group(Role::Stable, "v1", 100, &[v1.addr])]))
        .await
        .unwrap();
    let before = dp.client.snapshot().await.unwrap();

    // Garbage and unknown operations: an error each, the connection stays usable.
    let mut raw = Raw::connect(&dp.socket).await;
    let Reply::Error { message } = raw.send("this is not json\n").await else {
        panic!("expected an error");
    };
    assert!(message.starts_with("malformed request"), "{message}");
    let Reply::Error { message } = raw.send("{\"op\":\"frobnicate\"}\n").await else {
        panic!("expected an error");
    };
    assert!(
        message.contains("unknown variant `frobnicate`"),
        "{message}"
    );
    let Reply::Error { message } = raw.send("{\"op\":\"listen\",\"service\":\"web\"}\n").await
    else {
        panic!("expected an error");
    };
    assert!(message.contains("missing field `addr`"), "{message}");
    assert!(matches!(
        raw.send("{\"op\":\"hello\"}\n").await,
        Reply::Hello {
            protocol: hatoba_proxy::control::PROTOCOL,
            ..
        }
    ));
    // The largest timeout there is does not overflow anything.
    let forever = format!(
        "{{\"op\":\"drained\",\"addr\":\"127.0.0.1:1\",\"timeout_ms\":{}}}\n",
        u64::MAX
    );
    assert_eq!(
        raw.send(&forever).await,
        Reply::Drained {
            done: true,
            open: Some(0),
            left: Some(0)
        }
    );

    // An invalid route: refused, the old table serves on.
    let bad = spec(vec![
        group(Role::Stable, "v1", 30, &[v1.addr]),
        group(Role::Canary, "v2", 30, &[v2.addr]),
    ]);
    let message = refused(dp.client.update(&bad).await);
    assert!(message.contains("add up to 60"), "{message}");
    assert_eq!(versions(addr, 10).await, ["v1"; 10]);
    let mut unknown = bad.clone();
    unknown.service = "api".to_owned();
    unknown.groups.truncate(0);
    let message = refused(dp.client.update(&unknown).await);
    assert!(message.contains("`api`"), "{message}");

    // An address another socket holds: refused with the reason alone (the
    // caller names the address and the service around it).
    let taken = std::net::TcpListener::bind(ANY).unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let message = refused(dp.client.listen("api", taken_addr).await);
    assert!(message.contains("Address already in use"), "{message}");
    assert!(!message.contains("cannot listen"), "{message}");
    let message = refused(dp.client.listen("web", taken_addr).await);
    assert!(message.contains("Address already in use"), "{message}");
    // A second service on the first one's address would share its port.
    let message = refused(dp.client.listen("api", addr).await);
    assert!(message.contains("`web`"), "{message}");
    assert_eq!(dp.client.snapshot().await.unwrap(), before);
    assert_eq!(versions(addr, 10).await, ["v1"; 10]);

    // A line over the limit: refused and the connection closed.
    let mut long = UnixStream::connect(&dp.socket).await.unwrap();
    let (mut read, mut write) = long.split();
    let flood = vec![b'x'; MAX_LINE + 4096];
    let (_, answer) = tokio::join!(write.write_all(&flood), async {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(answer.contains("longer than"), "{answer}");
    drop(long);
    // ... and nothing else is disturbed.
    assert_eq!(dp.client.snapshot().await.unwrap(), before);
    assert!(matches!(
        raw.send("{\"op\":\"snapshot\"}\n").await,
        Reply::Snapshot { .. }
    ));
    assert_eq!(versions(addr, 10).await, ["v1"; 10]);
    drop(taken);
    dp.stop().await;
    v1.stop().await;
    v2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    // A socket file nobody listens on (a data plane killed with SIGKILL).
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let dp = Running::start(dir.path()).await;
    assert_eq!(dp.client.hello().await.unwrap().pid, std::process::id());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second data plane on a live socket is refused, its state file untouched.
    let mut second = config(dir.path());
    second.state_file = dir.path().join("other.json");
    let err = DataPlane::bind(second).await.unwrap_err();
    match &err {
        ControlError::AlreadyRunning { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("already running on"), "{text}");
    assert!(text.contains(&socket.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(dp.client.hello().await.is_ok());

    // Something that is not a socket is left alone.
    let mut not_a_socket = config(dir.path());
    not_a_socket.socket = dir.path().join("plain-file");
    std::fs::write(&not_a_socket.socket, "keep me").unwrap();
    let err = DataPlane::bind(not_a_socket).await.unwrap_err();
    assert!(matches!(err, ControlError::NotASocket { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("plain-file")).unwrap(),
        "keep me"
    );

    dp.stop().await;
    assert!(!socket.exists());
    let err = ControlClient::connect(&socket).await.unwrap_err();
    assert!(err.to_string().contains("dp.sock"), "{err}");
}

/// A backend that answers `x-version: slow` only once released; it says
/// when a request has arrived.
async fn gated_backend() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::watch::Sender<bool>,
) {
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind(ANY).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (arrived_tx, released) = (arrived_tx.clone(), released.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (arrived_tx, mut released) = (arrived_tx.clone(), released.clone());
                    async move {
                        let _ = arrived_tx.send(());
                        let _ = released.wait_for(|r| *r).await;
                        let mut resp =
                            hyper::Response::new(http_body_util::Full::new(Bytes::from("done")));
                        resp.headers_mut()
                            .insert("x-version", "slow".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, arrived, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_waits_for_the_slow_request_of_a_removed_backend() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Running::start(dir.path()).await;
    let (slow, mut arrived, release) = gated_backend().await;
    let fast = echo_backend().await;
    let addr = dp.client.listen("web", any()).await.unwrap();
    dp.client
        .update(&spec(vec![group(Role::Stable, "slow", 100, &[slow])]))
        .await
        .unwrap();
    let request = tokio::spawn(async move { get(&mut None, addr).await });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .unwrap()
        .unwrap();

    // Removed from the table while it still serves that request.
    dp.client
        .update(&spec(vec![group(Role::Stable, "fast", 100, &[fast])]))
        .await
        .unwrap();
    assert_eq!(versions(addr, 3).await, ["echo"; 3]);
    // Not drained in time: the one request open at the start is still open.
    assert_eq!(
        dp.client
            .drain(slow, Duration::from_millis(50))
            .await
            .unwrap(),
        hatoba_proxy::control::DrainReport {
            done: false,
            open: Some(1),
            left: Some(1)
        }
    );
    let waiter = {
        let client = dp.client.clone();
        tokio::spawn(async move { client.drained(slow, Duration::from_secs(30)).await })
    };
    // Other calls are not held up by a drain in progress.
    assert_eq!(dp.client.hello().await.unwrap().services, ["web"]);
    assert!(!waiter.is_finished());
    release.send_replace(true);
    assert!(waiter.await.unwrap().unwrap());
    assert_eq!(request.await.unwrap().unwrap(), (200, "slow".to_owned()));
    assert!(
        dp.client
            .drained(slow, Duration::from_millis(50))
            .await
            .unwrap()
    );
    // An address nobody knows is drained.
    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert!(dp.client.drained(nobody, Duration::ZERO).await.unwrap());
    dp.stop().await;
}

/// A state file that cannot be written (a full disk, here a directory in
/// its place) does not keep traffic where the controller takes it from:
/// the table applies all the same, and the file is written once it can be.
/// Told to stop by its controller, a data plane leaves no table behind for
/// the next one to serve; stopped by a signal, it keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_applies_when_the_state_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = InProcess::start("v1", |_| {}).await;
    let v2 = InProcess::start("v2", |_| {}).await;
    let plane = Running::start(dir.path()).await;
    let addr = plane.client.listen("web", any()).await.unwrap();
    plane
        .client
        .update(&spec(vec![group(Role::Stable, "v1", 100, &[v1.addr])]))
        .await
        .unwrap();
    let file = dir.path().join("state.json");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    plane
        .client
        .update(&spec(vec![group(Role::Stable, "v2", 100, &[v2.addr])]))
        .await
        .unwrap();
    assert_eq!(versions(addr, 3).await, ["v2"; 3]);
    std::fs::remove_dir(&file).unwrap();
    let v2_addr = v2.addr.to_string();
    hatoba_test_support::wait_for_async(Duration::from_secs(10), || {
        let written = std::fs::read_to_string(&file).is_ok_and(|t| t.contains(&v2_addr));
        async move { written }
    })
    .await
    .expect("the state file written again once it could be");

    // Told to stop: the next data plane serves nothing of it.
    plane
        .client
        .shutdown_and_wait(Duration::from_secs(10))
        .await
        .unwrap();
    let file_text = std::fs::read_to_string(&file).unwrap();
    assert!(!file_text.contains("web"), "{file_text}");
    plane.stop().await;
    v1.stop().await;
    v2.stop().await;
}

/// `GET /metrics` on an admin listener: the body.
async fn scrape(admin: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_a_version_out_of_every_table_go_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let socket = cfg.socket.clone();
    let plane = DataPlane::bind(cfg).await.unwrap();
    let admin = hatoba_proxy::AdminServer::start(any(), plane.recorder(), Vec::new()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(plane.run(async move {
        let _ = stopped.await;
    }));
    let client = ControlClient::connect(&socket).await.unwrap();
    let addr = client.listen("web", any()).await.unwrap();
    let v1 = InProcess::start("v1", |_| {}).await;
    let v2 = InProcess::start("v2", |_| {}).await;
    client
        .update(&spec(vec![group(Role::Stable, "v1", 100, &[v1.addr])]))
        .await
        .unwrap();
    assert_eq!(versions(addr, 3).await, ["v1"; 3]);
    client.retention(Duration::from_millis(300)).await.unwrap();
    let zero = Raw::connect(&socket)
        .await
        .send("{\"op\":\"retention\",\"metrics_ms\":0}\n")
        .await;
    assert!(
        matches!(&zero, Reply::Error { message } if message.contains("above 0")),
        "{zero:?}"
    );
    let saved = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(saved.contains("\"metrics_retention_ms\": 300"), "{saved}");
    let text = scrape(admin.local_addr()).await;
    assert!(text.contains("version=\"v1\""), "{text}");
    client
        .update(&spec(vec![group(Role::Stable, "v2", 100, &[v2.addr])]))
        .await
        .unwrap();
    assert_eq!(versions(addr, 3).await, ["v2"; 3]);
    let metrics = admin.local_addr();
    hatoba_test_support::wait_for_async(Duration::from_secs(20), || async move {
        !scrape(metrics).await.contains("version=\"v1\"")
    })
    .await
    .expect("v1 leaves /metrics once out of every table for the retention");
    let text = scrape(admin.local_addr()).await;
    assert!(text.contains("version=\"v2\""), "{text}");
    assert!(!text.contains(&v1.addr.to_string()), "{text}");
    assert!(
        client
            .window("web", "v1", Window::M5)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        client
            .window("web", "v2", Window::M1)
            .await
            .unwrap()
            .map(|w| w.requests()),
        Some(3)
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    admin.shutdown();
    v1.stop().await;
    v2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_from_before_the_retention_loads_and_keeps_a_set_one() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let port = hatoba_test_support::free_port().unwrap();
    let old = serde_json::json!({
        "format": 1,
        "services": {"web": {
            "listen": format!("127.0.0.1:{port}"),
            "route": spec(vec![group(Role::Stable, "echo", 100, &[echo])]),
        }},
    });
    std::fs::write(dir.path().join("state.json"), old.to_string()).unwrap();
    let dp = Running::start(dir.path()).await;
    assert_eq!(dp.client.hello().await.unwrap().services, ["web"]);
    dp.client.retention(Duration::from_secs(90)).await.unwrap();
    dp.stop().await;
    // Restarted, it keeps the retention it was given: the next change
    // saves the loaded value, not the default.
    let dp = Running::start(dir.path()).await;
    dp.client
        .update(&spec(vec![group(Role::Canary, "echo", 100, &[echo])]))
        .await
        .unwrap();
    let saved = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(saved.contains("\"metrics_retention_ms\": 90000"), "{saved}");
    dp.stop().await;
}

/// A data plane that stops while the controller's keeper holds duplicates
/// of its listening sockets leaves them open: a client connecting meanwhile
/// is not refused (its SYN waits for a retry), and the next data plane,
/// which takes the sockets over instead of binding new ones, answers it.
/// Without a keeper a restart binds new sockets, as a first start does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_data_plane_takes_over_the_kept_sockets_and_serves_what_queued() {
    use hatoba_proxy::handover::{Keeper, keeper_path};
    let dir = tempfile::tempdir().unwrap();
    let v1 = InProcess::start("v1", |_| {}).await;
    let first = Running::start(dir.path()).await;
    assert!(first.taken.adopted.is_empty(), "{:?}", first.taken);
    let addr = first.client.listen("web", any()).await.unwrap();
    first
        .client
        .update(&spec(vec![group(Role::Stable, "v1", 100, &[v1.addr])]))
        .await
        .unwrap();
    let keeper = Keeper::new();
    let served = keeper.serve(&keeper_path(&first.socket)).await.unwrap();
    // One socket per listener thread.
    assert_eq!(keeper.refresh(&first.client).await.unwrap(), 2);
    assert_eq!(keeper.held(), [("web".to_owned(), addr, 2)]);
    first.stop().await;

    // No data plane runs, yet the port does not refuse: the stopped one
    // left the socket dropping SYNs (its stop completes no new handshake),
    // so the client retries, and the next data plane, which takes the
    // socket over and lifts that filter, answers it.
    let waiting = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        Ok::<_, std::io::Error>(s)
    });
    let second = Running::start(dir.path()).await;
    let mut waiting = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the client's retried SYN is answered once the socket is adopted")
        .unwrap()
        .unwrap();
    assert_eq!(
        second.taken.adopted,
        [("web".to_owned(), 2)],
        "{:?}",
        second.taken.missed
    );
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), waiting.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-version: v1"),
        "{answer}"
    );
    assert_eq!(versions(addr, 3).await, ["v1"; 3]);
    // The keeper takes them again from the new process: the same port.
    assert_eq!(keeper.refresh(&second.client).await.unwrap(), 2);
    second.stop().await;

    // Let go of (a controller stopping everything): the port refuses, and
    // a data plane started now binds new sockets.
    keeper.clear();
    drop(served);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let third = Running::start(dir.path()).await;
    assert!(third.taken.adopted.is_empty(), "{:?}", third.taken);
    assert!(
        third.taken.missed.iter().any(|m| m.contains("no keeper")),
        "{:?}",
        third.taken.missed
    );
    assert_eq!(versions(addr, 3).await, ["v1"; 3]);
    third.stop().await;
    v1.stop().await;
}

/// `sockets` in another protocol is refused with both numbers, by the data
/// plane and by the keeper alike; a service that does not listen has no
/// socket, one that does hands each of its sockets over close-on-exec; and a data plane of protocol 2, which cannot hand its sockets
/// over, is named as such by the keeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_of_another_protocol_or_from_an_old_data_plane_are_refused_clearly() {
    use hatoba_proxy::control::PROTOCOL;
    use hatoba_proxy::handover::{Keeper, fetch, keeper_path};
    let dir = tempfile::tempdir().unwrap();
    let dp = Running::start(dir.path()).await;
    dp.client.listen("web", any()).await.unwrap();
    let keeper = Keeper::new();
    let _served = keeper.serve(&keeper_path(&dp.socket)).await.unwrap();
    for socket in [dp.socket.clone(), keeper_path(&dp.socket)] {
        let mut raw = Raw::connect(&socket).await;
        match raw
            .send("{\"op\":\"sockets\",\"service\":\"web\",\"protocol\":2}\n")
            .await
        {
            Reply::Error { message } => {
                assert!(
                    message.contains("protocol 2")
                        && message.contains(&format!("protocol {PROTOCOL}")),
                    "{message}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(fetch(&dp.socket, "nope").await.unwrap().is_none());
    // Handed over close-on-exec: no process the controller starts (an
    // instance) inherits a listening socket.
    let web = fetch(&dp.socket, "web").await.unwrap().unwrap();
    assert_eq!(web.listeners.len(), 2);
    for l in &web.listeners {
        let flags = rustix::io::fcntl_getfd(l).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "{flags:?}");
        assert_eq!(l.local_addr().unwrap(), web.addr);
    }
    drop(web);
    // The keeper answers only what it is for.
    let mut raw = Raw::connect(&keeper_path(&dp.socket)).await;
    assert!(matches!(
        raw.send("{\"op\":\"snapshot\"}\n").await,
        Reply::Error { message } if message.contains("keeper")
    ));
    dp.stop().await;

    // A data plane of protocol 2 answers `hello` and nothing of `sockets`.
    let old = dir.path().join("old.sock");
    let listener = tokio::net::UnixListener::bind(&old).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    let hello =
                        "{\"reply\":\"hello\",\"pid\":7,\"protocol\":2,\"services\":[\"web\"]}\n";
                    if stream.get_mut().write_all(hello.as_bytes()).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    let client = ControlClient::connect(&old).await.unwrap();
    let err = Keeper::new()
        .refresh(&client)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("speaks protocol 2") && err.contains(&format!("needs protocol {PROTOCOL}")),
        "{err}"
    );
}
