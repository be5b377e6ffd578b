//! Test harness: backends (the demo app in-process, or in a child process
//! that can be SIGKILLed), a proxy on a free port, and a load generator that
//! counts every response.

use bytes::Bytes;
use hatoba_metrics::{Recorder, Role};
use hatoba_proxy::{GroupSpec, ProxyOptions, ProxyServer, RouteSpec, Router};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A demo app instance served in this process.
pub(crate) struct InProcess {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<hatoba_demo_app::Stop>>,
}

impl InProcess {
    pub(crate) async fn start(
        version: &str,
        tweak: impl FnOnce(&mut hatoba_demo_app::Config),
    ) -> InProcess {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = hatoba_demo_app::Config {
            version_label: version.to_owned(),
            ..Default::default()
        };
        tweak(&mut cfg);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(hatoba_demo_app::serve(listener, cfg, async move {
            let _ = stopped.await;
        }));
        InProcess {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// SIGTERM-like: stop accepting, finish in-flight requests.
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A demo app in a child process (this test binary re-executed), so it can be
/// killed with SIGKILL for real.
pub(crate) struct Child {
    pub(crate) addr: SocketAddr,
    child: std::process::Child,
}

pub(crate) const CHILD_ENV: &str = "HATOBA_PROXY_TEST_BACKEND";

impl Child {
    pub(crate) fn start(version: &str) -> Child {
        use std::io::BufRead as _;
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe)
            .args([
                "support::child_backend",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, version)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("child backend exited before listening")
                .unwrap();
            if let Some(rest) = line.split("BACKEND-LISTENING ").nth(1) {
                break rest.trim().parse().unwrap();
            }
        };
        Child { addr, child }
    }

    pub(crate) fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// When this test binary is re-executed as a backend: serve until killed.
#[test]
fn child_backend() {
    let Ok(version) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("BACKEND-LISTENING {}", listener.local_addr().unwrap());
        let cfg = hatoba_demo_app::Config {
            version_label: version,
            ..Default::default()
        };
        let _ = hatoba_demo_app::serve(listener, cfg, std::future::pending()).await;
    });
}

pub(crate) fn group(role: Role, version: &str, weight: u8, backends: &[SocketAddr]) -> GroupSpec {
    GroupSpec {
        role,
        version: version.to_owned(),
        weight,
        backends: backends.to_vec(),
    }
}

pub(crate) fn spec(groups: Vec<GroupSpec>) -> RouteSpec {
    RouteSpec {
        service: "web".to_owned(),
        groups,
        sticky: false,
    }
}

pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) router: Arc<Router>,
    server: Option<ProxyServer>,
}

impl Proxy {
    pub(crate) fn start(spec: RouteSpec, opts: ProxyOptions) -> Proxy {
        Proxy::with_threads(spec, opts, 2)
    }

    pub(crate) fn with_threads(spec: RouteSpec, opts: ProxyOptions, threads: usize) -> Proxy {
        let router = Arc::new(Router::new(spec, Arc::new(Recorder::new())).unwrap());
        let server = ProxyServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::clone(&router),
            opts,
            threads,
        )
        .unwrap();
        Proxy {
            addr: server.local_addr(),
            router,
            server: Some(server),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// What a load run saw: every response by status and version, and errors.
#[derive(Default, Debug)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) failed: Vec<String>,
    pub(crate) by_version: BTreeMap<String, u64>,
}

/// Keep-alive clients sending `GET /` until stopped (or a bound is hit).
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Bounds on every load loop: never more than this many requests or this long.
const MAX_REQUESTS: u64 = 2_000_000;
const MAX_TIME: Duration = Duration::from_secs(60);

impl Load {
    pub(crate) fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let started = tokio::time::Instant::now();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, sent, tally) =
                    (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&tally));
                tokio::spawn(async move {
                    let mut conn = None;
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < MAX_TIME
                        && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                    {
                        let result = get(&mut conn, addr).await;
                        let mut t = tally.lock().unwrap();
                        match result {
                            Ok((200, version)) => {
                                t.ok += 1;
                                *t.by_version.entry(version).or_default() += 1;
                            }
                            Ok((status, body)) => t.failed.push(format!("{status}: {body}")),
                            Err(e) => {
                                t.failed.push(format!("error: {e}"));
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, tally, tasks }
    }

    /// Waits until `n` more requests have been answered (a poll with a deadline).
    pub(crate) async fn pass(&self, n: u64) {
        let target = self.answered() + n;
        hatoba_test_support::wait_for_async(Duration::from_secs(30), || {
            let done = self.answered() >= target;
            async move { done }
        })
        .await
        .unwrap();
    }

    pub(crate) fn answered(&self) -> u64 {
        let t = self.tally.lock().unwrap();
        t.ok + t.failed.len() as u64
    }

    /// Snapshot of versions seen so far.
    pub(crate) fn versions(&self) -> BTreeMap<String, u64> {
        self.tally.lock().unwrap().by_version.clone()
    }

    pub(crate) async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.tally).unwrap().into_inner().unwrap()
    }
}

type Conn = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One keep-alive `GET /`; returns the status and the `x-version` header (or body for errors).
pub(crate) async fn get(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
) -> Result<(u16, String), String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (send, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = c.await;
        });
        *conn = Some(send);
    }
    let send = conn.as_mut().unwrap();
    send.ready().await.map_err(|e| e.to_string())?;
    let req = hyper::Request::get("/")
        .header("host", "web.test")
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let version = resp
        .headers()
        .get("x-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        if status == 200 {
            version
        } else {
            String::from_utf8_lossy(&body).into_owned()
        },
    ))
}

/// A raw request/response over a fresh connection, for bad-input tests.
pub(crate) async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads everything the proxy sends on a connection until it closes it
/// (bounded: a proxy that never closes fails the test, not hangs it).
pub(crate) async fn read_until_closed(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .expect("reading the answers");
    String::from_utf8_lossy(&out).into_owned()
}

/// A backend that answers `x-version: echo` and a body of the request
/// headers it got, one `name: value` a line.
pub(crate) async fn echo_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut lines: Vec<String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
                            .collect();
                        lines.sort();
                        let mut resp = hyper::Response::new(http_body_util::Full::new(
                            Bytes::from(lines.join("\n")),
                        ));
                        resp.headers_mut()
                            .insert("x-version", "echo".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// After a stop with connections queued: every one `answered` (each
/// answer is "answered" or what went wrong), none cut, and the port now
/// refuses a new connection rather than queue it.
pub(crate) fn assert_every_queued_answered_then_refused(
    answers: &[String],
    what: &str,
    addr: std::net::SocketAddr,
) {
    let failed: Vec<&String> = answers.iter().filter(|a| *a != "answered").collect();
    assert!(
        failed.is_empty(),
        "{} of {} queued {what} not answered: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    let late = std::net::TcpStream::connect(addr).map(|_| ());
    assert_eq!(
        late.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}
