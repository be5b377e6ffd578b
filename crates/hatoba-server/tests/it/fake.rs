//! A fake runtime and a fake data plane for the server's trace tests, and a
//! harness that runs a `Server` over them on a paused tokio clock.
//!
//! The fake runtime's instances are tiny HTTP listeners on 127.0.0.1:0, in
//! this process, answering `/ready` and `/live` with a status the test sets;
//! the test can make one exit with a code, or have every new one exit at
//! once. Both fakes write into one [`Trace`] of (time, action): starts,
//! stops and route tables, stamped with `hatoba_server::clock_now`.
//!
//! Time: the probes are real loopback IO, and a paused tokio clock
//! auto-advances to the next timer whenever the runtime waits for IO, which
//! would fire the probes' timeouts. So the harness holds auto-advance off
//! (a blocking task that runs for the whole test: tokio does not
//! auto-advance while one runs) and moves the clock itself, one supervisor
//! period at a time, only between supervisor rounds ([`Harness::step`]).
//! `follow_tokio_clock` makes the server's clock (back-off, crash window,
//! probe delays) follow it. Waits for a round poll with a real deadline.
//! A probe's timeout therefore never fires here (the clock stands still
//! during a round): a fake instance answers or refuses, never hangs.

use async_trait::async_trait;
use hatoba_core::{EnvName, Millis, ServiceName, Version};
use hatoba_metrics::{Window, WindowStats};
use hatoba_proxy::RouteSpec;
use hatoba_runtime::{
    InstanceId, InstanceSpec, InstanceState, InstanceStatus, Runtime, RuntimeError,
};
use hatoba_server::{
    DataPlane, DataPlaneError, Deployer, Server, ServerConfig, ServiceRecord, ServingRecord,
};
use hatoba_store::{SqlStore, Store};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One thing the controller did, as the fakes saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// The runtime started an instance.
    Start(String),
    /// The runtime was asked to stop an instance.
    Stop(String),
    /// A route table for a service (`web`, not its preview): its backends.
    Route(Vec<SocketAddr>),
    /// The runtime was asked to send an instance a signal.
    Signal(String, String),
    /// An instance got a request other than a GET (`POST /drain`).
    Request(String, String),
}

/// What the fakes saw, in order, with the server's time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trace(Arc<Mutex<Vec<(Millis, Action)>>>);

impl Trace {
    fn push(&self, a: Action) {
        self.0.lock().unwrap().push((hatoba_server::clock_now(), a));
    }

    /// Everything so far, times in whole seconds since `t0`.
    pub(crate) fn since(&self, t0: Millis) -> Vec<(u64, Action)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(t, a)| (t.0.saturating_sub(t0.0) / 1000, a.clone()))
            .collect()
    }
}

struct Instance {
    status: InstanceStatus,
    ready: Arc<AtomicU16>,
    live: Arc<AtomicU16>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Instance {
    /// Ends its listener (probes are refused from now on) and takes `state`.
    fn end(&mut self, state: InstanceState) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
        self.status.state = state;
    }
}

#[derive(Default)]
struct RtInner {
    instances: BTreeMap<InstanceId, Instance>,
    started: u32,
    lists: u64,
    crash_on_start: Option<i32>,
    /// `list` fails with this (the machine cannot be inspected).
    list_fails: Option<String>,
    /// Instances ignore SIGTERM: a stop ends them with SIGKILL.
    ignore_sigterm: bool,
    /// `usage` answers after this long (Docker's stats API takes about a
    /// second); `None`: it answers nothing at once.
    usage_after: Option<Duration>,
}

/// A runtime of in-process HTTP listeners.
pub(crate) struct FakeRuntime {
    inner: Mutex<RtInner>,
    trace: Trace,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime").finish_non_exhaustive()
    }
}

impl FakeRuntime {
    pub(crate) fn new(trace: Trace) -> FakeRuntime {
        FakeRuntime {
            inner: Mutex::new(RtInner::default()),
            trace,
        }
    }

    /// How many times `list` was called (the supervisor calls it once at the
    /// start of every round).
    pub(crate) fn lists(&self) -> u64 {
        self.inner.lock().unwrap().lists
    }

    /// From now on, every instance started exits at once with `code`
    /// (`None`: they run).
    pub(crate) fn crash_on_start(&self, code: Option<i32>) {
        self.inner.lock().unwrap().crash_on_start = code;
    }

    /// From now on `list` fails, saying `why` (`None`: it works).
    /// From now on, a stop ends instances with SIGKILL (they ignore SIGTERM).
    pub(crate) fn ignore_sigterm(&self) {
        self.inner.lock().unwrap().ignore_sigterm = true;
    }

    /// From now on `usage` takes `after` to answer 42 MiB and 1.5 s of CPU.
    pub(crate) fn slow_usage(&self, after: Duration) {
        self.inner.lock().unwrap().usage_after = Some(after);
    }

    pub(crate) fn fail_list(&self, why: Option<&str>) {
        self.inner.lock().unwrap().list_fails = why.map(str::to_owned);
    }

    /// The instances that run now, oldest first.
    pub(crate) fn running(&self) -> Vec<InstanceStatus> {
        let inner = self.inner.lock().unwrap();
        let mut out: Vec<InstanceStatus> = inner
            .instances
            .values()
            .filter(|i| i.status.state == InstanceState::Running)
            .map(|i| i.status.clone())
            .collect();
        out.sort_by_key(|s| s.started_at);
        out
    }

    fn with(&self, id: &InstanceId, f: impl FnOnce(&mut Instance)) {
        let mut inner = self.inner.lock().unwrap();
        f(inner
            .instances
            .get_mut(id)
            .unwrap_or_else(|| panic!("no fake instance {id}")));
    }

    /// What the instance answers on `/ready` from now on.
    pub(crate) fn set_ready(&self, id: &InstanceId, status: u16) {
        self.with(id, |i| i.ready.store(status, Ordering::SeqCst));
    }

    /// What the instance answers on `/live` from now on.
    pub(crate) fn set_live(&self, id: &InstanceId, status: u16) {
        self.with(id, |i| i.live.store(status, Ordering::SeqCst));
    }

    /// The instance exits by itself with `code`.
    pub(crate) fn exit(&self, id: &InstanceId, code: i32) {
        self.with(id, |i| {
            i.end(InstanceState::Exited {
                code: Some(code),
                signal: None,
            });
        });
    }
}

/// Answers each connection's request: `/ready` and `/live` with the
/// instance's statuses, anything else 200.
async fn serve(
    listener: tokio::net::TcpListener,
    ready: Arc<AtomicU16>,
    live: Arc<AtomicU16>,
    trace: Trace,
    id: String,
) {
    while let Ok((mut s, _)) = listener.accept().await {
        let (ready, live) = (Arc::clone(&ready), Arc::clone(&live));
        let (trace, id) = (trace.clone(), id.clone());
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head);
            let method = line.split(' ').next().unwrap_or("GET");
            let path = line.split(' ').nth(1).unwrap_or("/");
            if method != "GET" {
                trace.push(Action::Request(id, format!("{method} {path}")));
            }
            let status = match path {
                "/ready" => ready.load(Ordering::SeqCst),
                "/live" => live.load(Ordering::SeqCst),
                _ => 200,
            };
            let answer =
                format!("HTTP/1.1 {status} Fake\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(answer.as_bytes()).await;
        });
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
        now: Millis,
    ) -> Result<InstanceStatus, RuntimeError> {
        let resources = |source| RuntimeError::Resources {
            service: spec.service.clone(),
            what: "a loopback port".to_owned(),
            source,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(resources)?;
        let addr = listener.local_addr().map_err(resources)?;
        let ready = Arc::new(AtomicU16::new(200));
        let live = Arc::new(AtomicU16::new(200));
        let mut inner = self.inner.lock().unwrap();
        let id = InstanceId(format!(
            "{}-{}-{}",
            spec.service, spec.version, inner.started
        ));
        inner.started += 1;
        let mut instance = Instance {
            status: InstanceStatus {
                id: id.clone(),
                service: spec.service.clone(),
                version: spec.version.clone(),
                addr,
                pid: None,
                proc_start: None,
                started_at: now,
                state: InstanceState::Running,
                log: None,
                identity: None,
                oom_killed: false,
                memory_limit: None,
                own_health: None,
            },
            ready: Arc::clone(&ready),
            live: Arc::clone(&live),
            server: None,
        };
        match inner.crash_on_start {
            // Died at once: its port refuses (the listener is dropped here).
            Some(code) => instance.end(InstanceState::Exited {
                code: Some(code),
                signal: None,
            }),
            None => {
                instance.server = Some(tokio::spawn(serve(
                    listener,
                    ready,
                    live,
                    self.trace.clone(),
                    id.0.clone(),
                )));
            }
        }
        let status = instance.status.clone();
        inner.instances.insert(id.clone(), instance);
        drop(inner);
        self.trace.push(Action::Start(id.0));
        Ok(status)
    }

    async fn stop(
        &self,
        id: &InstanceId,
        _grace: Duration,
    ) -> Result<InstanceStatus, RuntimeError> {
        self.trace.push(Action::Stop(id.0.clone()));
        let mut inner = self.inner.lock().unwrap();
        let signal = if inner.ignore_sigterm { 9 } else { 15 };
        let i = inner
            .instances
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        if i.status.state == InstanceState::Running {
            i.end(InstanceState::Exited {
                code: None,
                signal: Some(signal),
            });
        }
        Ok(i.status.clone())
    }

    async fn signal(&self, id: &InstanceId, signal: &str) -> Result<(), RuntimeError> {
        self.trace
            .push(Action::Signal(id.0.clone(), signal.to_owned()));
        Ok(())
    }

    async fn list(&self, service: &ServiceName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut inner = self.inner.lock().unwrap();
        inner.lists += 1;
        if let Some(what) = &inner.list_fails {
            return Err(RuntimeError::Inspect {
                what: what.clone(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
        Ok(inner
            .instances
            .values()
            .filter(|i| &i.status.service == service)
            .map(|i| i.status.clone())
            .collect())
    }

    async fn usage(&self, _id: &InstanceId) -> Option<hatoba_runtime::Usage> {
        let after = self.inner.lock().unwrap().usage_after?;
        // The slowness is what is modelled (Docker's stats call), not a
        // wait of the test: the supervisor must not hold its round for it.
        tokio::time::sleep(after).await;
        Some(hatoba_runtime::Usage {
            rss_bytes: 42 << 20,
            cpu_seconds: 1.5,
        })
    }

    async fn forget(&self, id: &InstanceId) {
        let mut inner = self.inner.lock().unwrap();
        if inner
            .instances
            .get(id)
            .is_some_and(|i| i.status.state != InstanceState::Running)
        {
            inner.instances.remove(id);
        }
    }
}

/// A data plane that keeps the tables it is given and traces those of `web`.
/// Its drains end at once, or, while [`FakeDataPlane::hold_drains`] holds
/// them, when released or at the drain's timeout (a long-lived client that
/// stays connected).
#[derive(Debug)]
pub(crate) struct FakeDataPlane {
    tables: Mutex<BTreeMap<String, RouteSpec>>,
    trace: Trace,
    /// `true` while drains are held.
    hold: tokio::sync::watch::Sender<bool>,
    /// Drains waiting on the hold now.
    held: tokio::sync::watch::Sender<usize>,
    /// The connections a drain waits for now, by address.
    open: Mutex<BTreeMap<SocketAddr, u32>>,
}

impl FakeDataPlane {
    pub(crate) fn new(trace: Trace) -> FakeDataPlane {
        FakeDataPlane {
            tables: Mutex::default(),
            trace,
            hold: tokio::sync::watch::Sender::new(false),
            held: tokio::sync::watch::Sender::new(0),
            open: Mutex::default(),
        }
    }

    /// Returns once `n` drains wait on the hold at the same time.
    pub(crate) async fn drains_held(&self, n: usize) {
        let _ = self.held.subscribe().wait_for(|held| *held >= n).await;
    }

    /// Holds every drain (`true`) until released (`false`).
    pub(crate) fn hold_drains(&self, hold: bool) {
        self.hold.send_replace(hold);
    }
}

#[async_trait]
impl DataPlane for FakeDataPlane {
    async fn listen(&self, _service: &str, addr: SocketAddr) -> Result<SocketAddr, DataPlaneError> {
        Ok(addr)
    }

    async fn route(&self, spec: RouteSpec) -> Result<(), DataPlaneError> {
        if spec.service == "web" {
            let mut backends: Vec<SocketAddr> = spec
                .groups
                .iter()
                .filter(|g| g.weight > 0)
                .flat_map(|g| g.backends.iter().copied())
                .collect();
            backends.sort_unstable();
            self.trace.push(Action::Route(backends));
        }
        self.tables
            .lock()
            .unwrap()
            .insert(spec.service.clone(), spec);
        Ok(())
    }

    async fn drained(&self, addr: SocketAddr, timeout: Duration) -> hatoba_proxy::DrainReport {
        // A held drain is one long-lived client that stays connected.
        let mut hold = self.hold.subscribe();
        let open = u32::from(*hold.borrow());
        self.open.lock().unwrap().insert(addr, open);
        self.held.send_modify(|n| *n += usize::from(open > 0));
        let done = tokio::time::timeout(timeout, hold.wait_for(|held| !*held))
            .await
            .is_ok();
        self.open.lock().unwrap().remove(&addr);
        self.held.send_modify(|n| *n -= usize::from(open > 0));
        hatoba_proxy::DrainReport {
            done,
            open: Some(open),
            left: Some(if done { 0 } else { open }),
        }
    }

    async fn open_at(&self, addr: SocketAddr) -> Option<u32> {
        // Before its drain is awaited: what a held drain will wait for.
        let held = u32::from(*self.hold.borrow());
        Some(
            self.open
                .lock()
                .unwrap()
                .get(&addr)
                .copied()
                .unwrap_or(held),
        )
    }

    async fn window(&self, _service: &str, _version: &str, _window: Window) -> Option<WindowStats> {
        None
    }

    async fn totals(
        &self,
        _service: &str,
        _version: &str,
    ) -> Option<hatoba_proxy::control::VersionTotals> {
        None
    }

    async fn table(&self, service: &str) -> Option<RouteSpec> {
        self.tables.lock().unwrap().get(service).cloned()
    }

    async fn retain(&self, _keep: &[String]) -> Result<(), DataPlaneError> {
        Ok(())
    }

    async fn shutdown(&self) {}
}

/// A spec with one service `web` (a fake process: the fake runtime runs
/// nothing) with `replicas` and the given `health:` block.
pub(crate) fn spec(replicas: u32, health: &str) -> hatoba_spec::Spec {
    let yaml = format!(
        r#"
app: test
services:
  web:
    process:
      command: fake-app
    replicas: {replicas}
    route: {{listen: "127.0.0.1:1"}}
    health:
{health}
    strategy: {{rolling: {{maxSurge: 1, maxUnavailable: 0}}}}
"#
    );
    let parsed = hatoba_spec::parse(&yaml);
    parsed
        .spec
        .unwrap_or_else(|| panic!("{yaml}\n{:#?}", parsed.diagnostics))
}

/// Holds the paused clock's auto-advance off while it lives: tokio does not
/// auto-advance while a blocking task runs.
struct NoAutoAdvance(Option<std::sync::mpsc::Sender<()>>);

impl NoAutoAdvance {
    fn new() -> NoAutoAdvance {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Returns when the sender is dropped.
        drop(tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        }));
        NoAutoAdvance(Some(tx))
    }
}

impl Drop for NoAutoAdvance {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// The supervisor's period in these tests (the specs' probe period).
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// How long a round may take in real time before the test gives up.
const ROUND_DEADLINE: Duration = Duration::from_secs(20);

/// A `Server` over the fakes, resumed from a record that says `v1` serves
/// (no instance left: it starts `replicas` again, routed once ready).
pub(crate) struct Harness {
    pub(crate) server: Arc<Server>,
    pub(crate) runtime: Arc<FakeRuntime>,
    pub(crate) trace: Trace,
    /// The server's time when the first round ran.
    pub(crate) t0: Millis,
    pub(crate) token: String,
    _no_auto_advance: NoAutoAdvance,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Must run on a `start_paused` test runtime.
    pub(crate) async fn start(spec: hatoba_spec::Spec) -> Harness {
        hatoba_server::follow_tokio_clock();
        let no_auto_advance = NoAutoAdvance::new();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::open_sqlite(dir.path().join("hatoba.db"))
                .await
                .unwrap(),
        );
        let trace = Trace::default();
        let runtime = Arc::new(FakeRuntime::new(trace.clone()));
        let data_plane = Arc::new(FakeDataPlane::new(trace.clone()));
        let web: ServiceName = "web".parse().unwrap();
        let env: EnvName = "development".parse().unwrap();
        Deployer::new(Arc::clone(&store), runtime.clone(), data_plane.clone())
            .save(
                &web,
                &env,
                &ServiceRecord {
                    serving: Some(ServingRecord {
                        version: "v1".parse::<Version>().unwrap(),
                        instances: Vec::new(),
                        vars: BTreeMap::new(),
                        secrets: BTreeMap::new(),
                        deployment: None,
                        image_id: None,
                    }),
                    rollout: None,
                },
            )
            .await
            .unwrap();
        let token = hatoba_server::new_token();
        let server = Server::start(ServerConfig {
            spec,
            spec_digest: "test".to_owned(),
            spec_path: None,
            environment: env,
            base_dir: dir.path().to_path_buf(),
            store,
            runtime: runtime.clone(),
            data_plane,
            token: token.clone(),
            secret_key: None,
        })
        .await
        .unwrap();
        server.resume().await.unwrap();
        let t0 = hatoba_server::clock_now();
        let h = Harness {
            server,
            runtime,
            trace,
            t0,
            token,
            _no_auto_advance: no_auto_advance,
            _dir: dir,
        };
        h.round_after(0).await;
        h
    }

    /// Waits (in real time, with a deadline) until the supervisor began the
    /// round after `lists` calls to `list`, then until it ended it.
    async fn round_after(&self, lists: u64) {
        let start = std::time::Instant::now();
        while self.runtime.lists() <= lists {
            assert!(
                start.elapsed() < ROUND_DEADLINE,
                "the supervisor began no round within {ROUND_DEADLINE:?}"
            );
            tokio::task::yield_now().await;
        }
        // A round waiting for a timer would wait forever: the clock only
        // moves between rounds. Polled with the same deadline.
        let ended = self.server.between_rounds();
        tokio::pin!(ended);
        loop {
            tokio::select! {
                biased;
                () = &mut ended => break,
                () = tokio::task::yield_now() => {}
            }
            assert!(
                start.elapsed() < ROUND_DEADLINE,
                "the supervisor's round did not end within {ROUND_DEADLINE:?}"
            );
        }
    }

    /// Moves the clock one period on and lets the supervisor's round run.
    pub(crate) async fn step(&self) {
        let lists = self.runtime.lists();
        tokio::time::advance(PERIOD).await;
        self.round_after(lists).await;
    }

    /// Steps until `secs` seconds after `t0`.
    pub(crate) async fn step_to(&self, secs: u64) {
        while self.now() < secs {
            self.step().await;
        }
    }

    /// Whole seconds since `t0`.
    pub(crate) fn now(&self) -> u64 {
        hatoba_server::clock_now().0.saturating_sub(self.t0.0) / 1000
    }
}

impl Harness {
    /// Serves the server's API on a loopback port until the test ends.
    pub(crate) async fn api(&self) -> SocketAddr {
        serve_api(&self.server).await
    }

    /// `GET /api/v1/services/web`, with the token.
    pub(crate) async fn service_detail(&self, api: SocketAddr) -> hatoba_api::ServiceDetail {
        let (code, body) = call(api, "GET", "/api/v1/services/web", Some(&self.token), b"").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// Serves `server`'s API on 127.0.0.1:0 until the test's runtime ends.
pub(crate) async fn serve_api(server: &Arc<Server>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Arc::clone(server).serve_api(listener, std::future::pending()));
    addr
}

/// One API request over a fresh connection: the answer's status and body.
/// `token`: sent as `Authorization: Bearer TOKEN`.
pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    call_raw(addr, method, path, &auth, body).await
}

/// [`call`] with the authorization header lines as given (`""`: none).
pub(crate) async fn call_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before it has read all of a large body,
    // and close: what it did not read may then be refused.
    let _ = s.write_all(body).await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// `hatoba up --env E…` over the fakes (`Environments::serve_api`): the
/// environments `envs` of `spec` run in one server, on a loopback port,
/// with `token`, the history in `dir`.
pub(crate) async fn environments_api(
    token: &str,
    dir: &std::path::Path,
    spec: hatoba_spec::Spec,
    envs: &[&str],
) -> SocketAddr {
    let store: Arc<dyn Store> =
        Arc::new(SqlStore::open_sqlite(dir.join("hatoba.db")).await.unwrap());
    let trace = Trace::default();
    let names: Vec<EnvName> = envs.iter().map(|e| e.parse().unwrap()).collect();
    let envs = hatoba_server::Environments::start(
        hatoba_server::ServerConfig {
            spec,
            spec_digest: "test".to_owned(),
            spec_path: None,
            environment: names[0].clone(),
            base_dir: dir.to_path_buf(),
            store,
            runtime: Arc::new(FakeRuntime::new(trace.clone())),
            data_plane: Arc::new(FakeDataPlane::new(trace)),
            token: token.to_owned(),
            secret_key: None,
        },
        &names,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Arc::new(envs).serve_api(listener, std::future::pending()));
    addr
}
