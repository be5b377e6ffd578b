//! The data plane as the controller sees it: where route tables go, where
//! drains are awaited and where per-version traffic windows are read.
//!
//! Two implementations: [`LocalDataPlane`] runs the proxy inside this
//! process (the demo, tests, `hatoba up --data-plane in-process`);
//! [`RemoteDataPlane`] drives a separate `hatoba dataplane` process over
//! its Unix socket, so users' traffic does not depend on the controller
//! being alive (see `hatoba_proxy::control`). It keeps duplicates of that
//! process's listening sockets up to date in a `Keeper` (after every
//! `listen` and `close`), so a restarted data plane takes them over and a
//! crash of it refuses no connection (`hatoba_proxy::handover`).

use async_trait::async_trait;
use hatoba_metrics::{Recorder, Window, WindowStats};
use hatoba_proxy::control::{ControlClient, ControlError, VersionTotals};
use hatoba_proxy::handover::Keeper;
use hatoba_proxy::{Backend, DrainReport, ProxyOptions, ProxyServer, RouteSpec, Router};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What went wrong talking to the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// A listener could not be opened.
    #[error("cannot listen on {addr} for {}", listener_of(service))]
    Listen {
        /// The service.
        service: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The table was refused (a bug in the caller: weights are built to add up).
    #[error("route table for `{service}` refused: {message}")]
    Route {
        /// The service.
        service: String,
        /// Why.
        message: String,
    },
    /// The data plane process could not be reached.
    #[error("the data plane does not answer: {0}")]
    Unreachable(String),
}

/// The data plane's name for a blue-green service's preview listener (`@`
/// is not allowed in service names, so it never meets a real service).
pub(crate) fn preview_key(service: &str) -> String {
    format!("{service}@preview")
}

/// Whose listener a data-plane key is, in words.
fn listener_of(key: &str) -> String {
    match key.strip_suffix("@preview") {
        Some(service) => format!("the preview address of service `{service}`"),
        None => format!("service `{key}`"),
    }
}

/// A blue-green service's preview address, if it has one.
pub(crate) fn preview_listen(svc: &hatoba_spec::Service) -> Option<&hatoba_spec::Listen> {
    match &svc.strategy {
        hatoba_spec::Strategy::BlueGreen(b) => b.preview_listen.as_ref(),
        _ => None,
    }
}

/// Routes what serves a service, and its preview address (when it has one)
/// the same way: between rollouts the preview shows the serving version,
/// as Argo Rollouts' preview Service does.
pub(crate) async fn route_serving(
    data_plane: &dyn DataPlane,
    spec: RouteSpec,
    preview: bool,
) -> Result<(), DataPlaneError> {
    let shown = preview.then(|| RouteSpec {
        service: preview_key(&spec.service),
        ..spec.clone()
    });
    data_plane.route(spec).await?;
    match shown {
        Some(p) => data_plane.route(p).await,
        None => Ok(()),
    }
}

/// Where the controller's routing decisions take effect.
#[async_trait]
pub trait DataPlane: Send + Sync + fmt::Debug {
    /// Opens (or keeps) the listener of a service; idempotent.
    async fn listen(&self, service: &str, addr: SocketAddr) -> Result<SocketAddr, DataPlaneError>;

    /// Replaces the service's route table atomically.
    async fn route(&self, spec: RouteSpec) -> Result<(), DataPlaneError>;

    /// Waits until the backend at `addr`, already out of the table, serves
    /// no request, up to `timeout`. True when drained.
    async fn drained(&self, addr: SocketAddr, timeout: Duration) -> DrainReport;

    /// The requests and long-lived connections the backend at `addr` has
    /// open now (what its drain waits for), for `status` and `diagnose`;
    /// `None` when the data plane cannot say.
    async fn open_at(&self, _addr: SocketAddr) -> Option<u32> {
        None
    }

    /// One version's traffic over a window ending now, all roles summed.
    async fn window(&self, service: &str, version: &str, window: Window) -> Option<WindowStats>;
    /// One version's totals since the data plane started (summed over its
    /// roles), for the statistical judge; `None` if it never served or the
    /// data plane cannot say.
    async fn totals(&self, service: &str, version: &str) -> Option<VersionTotals>;

    /// The table a service is routed by now.
    async fn table(&self, service: &str) -> Option<RouteSpec>;

    /// Stops serving every service not in `keep` (a spec that dropped a
    /// service); their connections finish their current request.
    async fn retain(&self, keep: &[String]) -> Result<(), DataPlaneError>;

    /// How long the traffic stats of a version out of every route table
    /// are kept (the spec's `retention.metrics`); the data plane prunes them
    /// after that (`hatoba_metrics::retention`). A data plane that cannot
    /// take it (an older `hatoba dataplane`) keeps its own, said in a log.
    async fn set_retention(&self, _metrics: Duration) {}

    /// Stops the listeners: new connections are refused, the requests in
    /// flight finish, and only then does it return (remote: the data plane
    /// process is told to stop and awaited).
    async fn shutdown(&self);
}

struct Listener {
    router: Arc<Router>,
    server: Option<ProxyServer>,
}

/// The proxy in this process.
pub struct LocalDataPlane {
    recorder: Arc<Recorder>,
    options: ProxyOptions,
    threads: usize,
    listeners: Arc<Mutex<HashMap<String, Listener>>>,
    /// The metrics retention in ms, read by the pruning task.
    retention_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the pruning task runs (started by the first `set_retention`).
    pruning: std::sync::atomic::AtomicBool,
    /// Backends taken out of a table, until their drain is awaited.
    draining: Mutex<HashMap<SocketAddr, Arc<Backend>>>,
}

impl fmt::Debug for LocalDataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalDataPlane").finish_non_exhaustive()
    }
}

impl LocalDataPlane {
    /// An in-process data plane; `listen` opens listeners with `threads`
    /// threads each (0: one per core).
    pub fn new(recorder: Arc<Recorder>, options: ProxyOptions, threads: usize) -> LocalDataPlane {
        LocalDataPlane {
            recorder,
            options,
            threads,
            listeners: Arc::new(Mutex::new(HashMap::new())),
            retention_ms: Arc::new(std::sync::atomic::AtomicU64::new(
                u64::try_from(hatoba_proxy::control::DEFAULT_RETENTION.as_millis())
                    .unwrap_or(u64::MAX),
            )),
            pruning: std::sync::atomic::AtomicBool::new(false),
            draining: Mutex::new(HashMap::new()),
        }
    }

    /// A data plane over a router whose listener the caller runs.
    pub fn attached(router: Arc<Router>) -> LocalDataPlane {
        let me = LocalDataPlane::new(Arc::clone(router.recorder()), ProxyOptions::default(), 0);
        let service = router.table().spec.service.clone();
        me.with(|l| {
            l.insert(
                service,
                Listener {
                    router,
                    server: None,
                },
            )
        });
        me
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Listener>) -> T) -> T {
        f(&mut self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// The router of a service, once it listens.
    pub fn router(&self, service: &str) -> Option<Arc<Router>> {
        self.with(|l| l.get(service).map(|x| Arc::clone(&x.router)))
    }

    /// Every router, for the admin listener.
    pub fn routers(&self) -> Vec<Arc<Router>> {
        self.with(|l| l.values().map(|x| Arc::clone(&x.router)).collect())
    }
}

#[async_trait]
impl DataPlane for LocalDataPlane {
    /// Opens the listener, or keeps it when it listens there already. On
    /// another address it moves: the new one listens (same route table)
    /// before the old one stops accepting; the old one's connections finish
    /// their requests.
    async fn listen(&self, service: &str, addr: SocketAddr) -> Result<SocketAddr, DataPlaneError> {
        let existing = self.with(|l| {
            l.get(service).and_then(|x| {
                x.server
                    .as_ref()
                    .map(|s| (s.local_addr(), Arc::clone(&x.router)))
            })
        });
        let listen_err = |source| DataPlaneError::Listen {
            service: service.to_owned(),
            addr,
            source,
        };
        let router = match existing {
            Some((at, _)) if at == addr || (addr.port() == 0 && addr.ip() == at.ip()) => {
                return Ok(at);
            }
            Some((_, router)) => router,
            None => Arc::new(
                Router::new(
                    RouteSpec {
                        service: service.to_owned(),
                        groups: vec![],
                        sticky: false,
                    },
                    Arc::clone(&self.recorder),
                )
                .map_err(|e| listen_err(std::io::Error::other(e)))?,
            ),
        };
        let server = ProxyServer::start(
            addr,
            Arc::clone(&router),
            self.options.clone(),
            self.threads,
        )
        .map_err(listen_err)?;
        let local = server.local_addr();
        let old = self.with(|l| {
            l.insert(
                service.to_owned(),
                Listener {
                    router,
                    server: Some(server),
                },
            )
        });
        if let Some(old) = old.and_then(|o| o.server) {
            // Joining the listener threads blocks: off the async workers.
            drop(tokio::task::spawn_blocking(move || old.shutdown()));
        }
        Ok(local)
    }

    async fn route(&self, spec: RouteSpec) -> Result<(), DataPlaneError> {
        let Some(router) = self.router(&spec.service) else {
            return Err(DataPlaneError::Route {
                service: spec.service.clone(),
                message: "no listener".to_owned(),
            });
        };
        let before: Vec<Arc<Backend>> = router
            .table()
            .spec
            .groups
            .iter()
            .flat_map(|g| g.backends.iter().filter_map(|a| router.backend(*a)))
            .collect();
        let service = spec.service.clone();
        let kept: std::collections::HashSet<SocketAddr> = spec
            .groups
            .iter()
            .flat_map(|g| g.backends.iter().copied())
            .collect();
        router.update(spec).map_err(|e| DataPlaneError::Route {
            service,
            message: e.to_string(),
        })?;
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        for b in before {
            if kept.contains(&b.addr) {
                draining.remove(&b.addr);
            } else {
                draining.insert(b.addr, b);
            }
        }
        Ok(())
    }

    async fn drained(&self, addr: SocketAddr, timeout: Duration) -> DrainReport {
        // The backend was taken out of the table by the caller; the router
        // still knows it until its last request ends.
        // Kept in `draining` while awaited, so `open_at` still sees it.
        let backend = self
            .draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .cloned();
        match (backend, self.routers().into_iter().next()) {
            (Some(backend), Some(router)) => {
                let open = backend.in_flight();
                let done = router.drained(&backend, timeout).await;
                let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
                if draining
                    .get(&addr)
                    .is_some_and(|b| Arc::ptr_eq(b, &backend))
                {
                    draining.remove(&addr);
                }
                drop(draining);
                DrainReport {
                    done,
                    open: Some(open),
                    left: Some(if done { 0 } else { backend.in_flight() }),
                }
            }
            _ => DrainReport {
                done: true,
                open: Some(0),
                left: Some(0),
            },
        }
    }

    async fn open_at(&self, addr: SocketAddr) -> Option<u32> {
        let draining = self
            .draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .cloned();
        let backend = draining.or_else(|| self.routers().iter().find_map(|r| r.backend(addr)));
        Some(backend.map_or(0, |b| b.in_flight()))
    }

    async fn window(&self, service: &str, version: &str, window: Window) -> Option<WindowStats> {
        self.recorder
            .version_window(service, version, window, crate::clock_now())
    }

    async fn totals(&self, service: &str, version: &str) -> Option<VersionTotals> {
        VersionTotals::of(&self.recorder, service, version)
    }

    async fn table(&self, service: &str) -> Option<RouteSpec> {
        self.router(service).map(|r| r.table().spec.clone())
    }

    async fn retain(&self, keep: &[String]) -> Result<(), DataPlaneError> {
        let servers: Vec<ProxyServer> = self.with(|l| {
            let gone: Vec<String> = l.keys().filter(|k| !keep.contains(k)).cloned().collect();
            gone.iter()
                .filter_map(|k| l.remove(k).and_then(|x| x.server))
                .collect()
        });
        // Joining the listener threads blocks (up to the shutdown grace):
        // off the async workers, and not waited for.
        drop(tokio::task::spawn_blocking(move || {
            for s in servers {
                s.shutdown();
            }
        }));
        Ok(())
    }

    async fn set_retention(&self, metrics: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let ms = u64::try_from(metrics.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.retention_ms.store(ms, Relaxed);
        if self.pruning.swap(true, Relaxed) {
            return;
        }
        // Ends at the first tick after this data plane is dropped.
        let listeners = Arc::downgrade(&self.listeners);
        let recorder = Arc::clone(&self.recorder);
        let retention = Arc::clone(&self.retention_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hatoba_proxy::control::PRUNE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen = hatoba_metrics::retention::LastSeen::new();
            loop {
                tick.tick().await;
                let Some(listeners) = listeners.upgrade() else {
                    return;
                };
                let mut present = hatoba_metrics::retention::Present::default();
                for router in listeners
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .map(|l| Arc::clone(&l.router))
                {
                    hatoba_proxy::control::add_table(&mut present, &router.table().spec);
                }
                drop(listeners);
                // A group a table is being built with is held, so kept.
                let keep_for = Duration::from_millis(retention.load(Relaxed));
                recorder.prune(&mut seen, &present, crate::clock_now(), keep_for);
            }
        });
    }

    async fn shutdown(&self) {
        let servers: Vec<ProxyServer> =
            self.with(|l| l.values_mut().filter_map(|x| x.server.take()).collect());
        // Joining the listener threads blocks: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            for s in servers {
                s.shutdown();
            }
        })
        .await;
    }
}

/// A `hatoba dataplane` process, driven over its Unix socket.
#[derive(Debug, Clone)]
pub struct RemoteDataPlane {
    client: ControlClient,
    keeper: Option<Arc<Keeper>>,
}

impl RemoteDataPlane {
    /// Over a connected client.
    pub fn new(client: ControlClient) -> RemoteDataPlane {
        RemoteDataPlane {
            client,
            keeper: None,
        }
    }

    /// Keeps `keeper` holding duplicates of the data plane's listening
    /// sockets: taken again after every change of its listeners, let go
    /// before it is stopped for good.
    pub fn with_keeper(mut self, keeper: Arc<Keeper>) -> RemoteDataPlane {
        self.keeper = Some(keeper);
        self
    }

    /// Takes the listening sockets again; a failure is logged (the
    /// listeners serve all the same; only a crash of the data plane before
    /// the next refresh would refuse connections).
    async fn keep_sockets(&self) {
        if let Some(keeper) = &self.keeper
            && let Err(e) = keeper.refresh(&self.client).await
        {
            tracing::warn!(
                "cannot keep the data plane's listening sockets: {}",
                crate::server::error_chain(&e)
            );
        }
    }

    /// The client, for health checks.
    pub fn client(&self) -> &ControlClient {
        &self.client
    }
}

fn unreachable(e: &ControlError) -> DataPlaneError {
    DataPlaneError::Unreachable(e.to_string())
}

#[async_trait]
impl DataPlane for RemoteDataPlane {
    async fn listen(&self, service: &str, addr: SocketAddr) -> Result<SocketAddr, DataPlaneError> {
        let bound = self
            .client
            .listen(service, addr)
            .await
            .map_err(|e| match e {
                ControlError::Refused { message, .. } => DataPlaneError::Listen {
                    service: service.to_owned(),
                    addr,
                    source: std::io::Error::other(message),
                },
                other => unreachable(&other),
            })?;
        self.keep_sockets().await;
        Ok(bound)
    }

    async fn route(&self, spec: RouteSpec) -> Result<(), DataPlaneError> {
        self.client.update(&spec).await.map_err(|e| match e {
            ControlError::Refused { message, .. } => DataPlaneError::Route {
                service: spec.service.clone(),
                message,
            },
            other => unreachable(&other),
        })
    }

    async fn drained(&self, addr: SocketAddr, timeout: Duration) -> DrainReport {
        self.client
            .drain(addr, timeout)
            .await
            .unwrap_or(DrainReport {
                done: false,
                open: None,
                left: None,
            })
    }

    async fn open_at(&self, addr: SocketAddr) -> Option<u32> {
        // A `drained` that waits for nothing answers what is open now; every
        // data plane since drains were counted knows it.
        self.client
            .drain(addr, Duration::ZERO)
            .await
            .ok()
            .and_then(|r| r.open)
    }

    async fn window(&self, service: &str, version: &str, window: Window) -> Option<WindowStats> {
        self.client
            .window(service, version, window)
            .await
            .ok()
            .flatten()
    }

    async fn totals(&self, service: &str, version: &str) -> Option<VersionTotals> {
        self.client.totals(service, version).await.ok().flatten()
    }

    async fn table(&self, service: &str) -> Option<RouteSpec> {
        let state = self.client.snapshot().await.ok()?;
        state.services.get(service).map(|e| e.route.clone())
    }

    async fn retain(&self, keep: &[String]) -> Result<(), DataPlaneError> {
        let hello = self.client.hello().await.map_err(|e| unreachable(&e))?;
        let mut closed = false;
        for service in hello.services.iter().filter(|s| !keep.contains(s)) {
            let done = self.client.close(service).await.map_err(|e| match e {
                ControlError::Refused { message, .. } => DataPlaneError::Route {
                    service: service.clone(),
                    message,
                },
                other => unreachable(&other),
            });
            // What was closed before a failure is let go of all the same.
            closed = true;
            if let Err(e) = done {
                self.keep_sockets().await;
                return Err(e);
            }
        }
        if closed {
            // The closed ports must refuse, not queue in the kept sockets.
            self.keep_sockets().await;
        }
        Ok(())
    }

    async fn set_retention(&self, metrics: Duration) {
        if let Err(e) = self.client.retention(metrics).await {
            tracing::warn!(
                "the data plane keeps its own metrics retention: {}",
                crate::server::error_chain(&e)
            );
        }
    }

    async fn shutdown(&self) {
        // Stopped for good: its ports must refuse once its listeners close,
        // not queue connections in sockets this process keeps.
        if let Some(keeper) = &self.keeper {
            keeper.clear();
        }
        // Its listeners finish their requests in flight before it exits.
        let _ = self
            .client
            .shutdown_and_wait(std::time::Duration::from_secs(60))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hatoba_metrics::Role;
    use hatoba_proxy::GroupSpec;

    fn table(version: &str, port: u16) -> RouteSpec {
        RouteSpec {
            service: "web".to_owned(),
            groups: vec![GroupSpec {
                role: Role::Stable,
                version: version.to_owned(),
                weight: 100,
                backends: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            }],
            sticky: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_in_process_data_plane_forgets_old_versions_after_the_retention() {
        let recorder = Arc::new(Recorder::new());
        let dp = LocalDataPlane::new(Arc::clone(&recorder), ProxyOptions::default(), 1);
        dp.listen("web", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        dp.route(table("v1", 1)).await.unwrap();
        dp.set_retention(Duration::from_millis(200)).await;
        dp.route(table("v2", 2)).await.unwrap();
        assert!(recorder.get("web", Role::Stable, "v1").is_some());
        hatoba_test_support::wait_for(Duration::from_secs(20), || {
            recorder.get("web", Role::Stable, "v1").is_none()
        })
        .expect("v1 is pruned once out of the table for the retention");
        assert!(recorder.get("web", Role::Stable, "v2").is_some());
        dp.shutdown().await;
    }
}
