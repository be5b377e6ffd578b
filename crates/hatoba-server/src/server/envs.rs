//! Several environments in one `hatoba up`: one [`Server`] per
//! environment, side by side, sharing the store (and its event bus), the
//! data plane and the runtime.
//!
//! With one environment this is the [`Server`] alone, exactly as before:
//! same data-plane keys, same runtime, same API. With several, each
//! environment's server sees its own slice of what is shared:
//!
//! - [`EnvDataPlane`] qualifies every data-plane key as `ENV/SERVICE`
//!   (`ENV/SERVICE@preview`), so the listeners, route tables, saved state
//!   (`dataplane.json`), kept sockets and metrics labels of `staging/web`
//!   and `production/web` never meet. The listeners are kept or closed once,
//!   over every environment's keys, by [`Environments::start`]; the data
//!   plane stops once, when every environment's shutdown has reached it.
//! - [`EnvRuntime`] lists only the instances its environment started or
//!   adopted. The runtime itself (one registry, one scope: the state
//!   directory) is shared, so instance ids stay unique, and the orphan
//!   sweep runs once, after every environment has re-adopted its
//!   instances ([`Environments::resume`]): one environment's sweep can
//!   never stop another's instances.
//! - Two environments may not listen on one address: [`listen_clash`]
//!   refuses it at start, naming both.

use super::{Server, ServerConfig, StartError};
use crate::dataplane::{DataPlane, DataPlaneError};
use async_trait::async_trait;
use hatoba_core::{EnvName, Millis, ServiceName};
use hatoba_metrics::{Window, WindowStats};
use hatoba_proxy::RouteSpec;
use hatoba_proxy::control::VersionTotals;
use hatoba_runtime::{InstanceId, InstanceSpec, InstanceStatus, Runtime, RuntimeError, Usage};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The environments one `hatoba up` runs: one [`Server`] each, by name.
#[derive(Debug)]
pub struct Environments {
    servers: Vec<Arc<Server>>,
    /// The data plane they share (unqualified keys): a reload closes
    /// listeners on it once, over every environment's keys.
    data_plane: Arc<dyn DataPlane>,
    /// The runtime the environments share (the orphan sweep runs on it).
    runtime: Arc<dyn Runtime>,
}

/// The services of an environment of the spec (`development` is the base
/// services when the spec does not declare it), or `None` when the spec
/// does not have it.
pub(crate) fn services_of(
    spec: &hatoba_spec::Spec,
    env: &EnvName,
) -> Option<BTreeMap<ServiceName, hatoba_spec::Service>> {
    match spec.environments.get(env) {
        Some(e) => Some(e.services.clone()),
        None if env.as_str() == "development" => Some(spec.services.clone()),
        None => None,
    }
}

/// The first address two environments both listen on, with who listens:
/// `(address, "staging/web", "production/web")`. A blue-green preview
/// address counts as its service's. Addresses that do not resolve are left
/// to the start, which says so.
pub(crate) fn listen_clash(
    spec: &hatoba_spec::Spec,
    envs: &[EnvName],
) -> Option<(SocketAddr, String, String)> {
    let mut owners: HashMap<SocketAddr, (EnvName, String)> = HashMap::new();
    for env in envs {
        let Some(services) = services_of(spec, env) else {
            continue;
        };
        for (name, svc) in &services {
            let preview = crate::dataplane::preview_listen(svc)
                .map(|l| (crate::dataplane::preview_key(name.as_str()), l));
            for (key, listen) in
                std::iter::once((name.to_string(), &svc.route.listen)).chain(preview)
            {
                let Some(addr) = std::net::ToSocketAddrs::to_socket_addrs(&listen.to_string())
                    .ok()
                    .and_then(|mut a| a.next())
                else {
                    continue;
                };
                // Port 0: any free port, never the same one twice.
                if addr.port() == 0 {
                    continue;
                }
                match owners.get(&addr) {
                    Some((other, who)) if other != env => {
                        return Some((addr, format!("{other}/{who}"), format!("{env}/{key}")));
                    }
                    Some(_) => {}
                    None => {
                        owners.insert(addr, (env.clone(), key));
                    }
                }
            }
        }
    }
    None
}

impl Environments {
    /// Starts a server per environment (`cfg.environment` is ignored; the
    /// environments come in `environments`, each once). One environment is
    /// [`Server::start`] as it always was.
    pub async fn start(
        cfg: ServerConfig,
        environments: &[EnvName],
    ) -> Result<Environments, StartError> {
        let mut envs: Vec<EnvName> = environments.to_vec();
        envs.sort();
        envs.dedup();
        let runtime = Arc::clone(&cfg.runtime);
        let data_plane = Arc::clone(&cfg.data_plane);
        if envs.len() <= 1 {
            let environment = envs.pop().unwrap_or(cfg.environment.clone());
            let server = Server::start(ServerConfig { environment, ..cfg }).await?;
            return Ok(Environments {
                servers: vec![server],
                runtime,
                data_plane,
            });
        }
        let declared = || {
            let mut d: Vec<String> = cfg
                .spec
                .environments
                .keys()
                .map(ToString::to_string)
                .collect();
            d.sort();
            d.join(", ")
        };
        let mut keys = Vec::new();
        for env in &envs {
            let Some(services) = services_of(&cfg.spec, env) else {
                return Err(StartError::UnknownEnvironment(env.to_string(), declared()));
            };
            for (name, svc) in &services {
                keys.push(qualified(env, name.as_str()));
                if crate::dataplane::preview_listen(svc).is_some() {
                    keys.push(qualified(
                        env,
                        &crate::dataplane::preview_key(name.as_str()),
                    ));
                }
            }
        }
        if let Some((addr, first, second)) = listen_clash(&cfg.spec, &envs) {
            return Err(StartError::AddressClash {
                addr: addr.to_string(),
                first,
                second,
            });
        }
        // Listeners of services (or environments) no longer run stop, once,
        // over every environment's keys; each server's own `retain` is
        // then a no-op.
        cfg.data_plane.retain(&keys).await?;
        let events =
            crate::events::EventBus::new(Arc::clone(&cfg.store), crate::events::BROADCAST_CAPACITY);
        let stop = Arc::new(StopTogether {
            barrier: tokio::sync::Barrier::new(envs.len()),
            done: tokio::sync::OnceCell::new(),
        });
        let mut servers = Vec::new();
        for env in envs {
            let server = Server::start_on(
                ServerConfig {
                    spec: cfg.spec.clone(),
                    spec_digest: cfg.spec_digest.clone(),
                    spec_path: cfg.spec_path.clone(),
                    environment: env.clone(),
                    base_dir: cfg.base_dir.clone(),
                    store: Arc::clone(&cfg.store),
                    runtime: Arc::new(EnvRuntime::new(Arc::clone(&cfg.runtime))),
                    data_plane: Arc::new(EnvDataPlane {
                        inner: Arc::clone(&cfg.data_plane),
                        env,
                        stop: Arc::clone(&stop),
                    }),
                    token: cfg.token.clone(),
                    secret_key: cfg.secret_key.clone(),
                },
                Arc::clone(&events),
            )
            .await?;
            servers.push(server);
        }
        Ok(Environments {
            servers,
            runtime,
            data_plane,
        })
    }

    /// One server on its own, as [`Environments::start`] makes it for one
    /// environment: its API then answers as `hatoba up`'s does.
    pub(crate) fn of_one(server: Arc<Server>) -> Environments {
        Environments {
            runtime: Arc::clone(&server.runtime),
            data_plane: Arc::clone(&server.data_plane),
            servers: vec![server],
        }
    }

    /// The servers, one per environment, by environment name.
    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    /// The data plane every environment shares, its keys unqualified.
    pub(crate) fn data_plane(&self) -> Arc<dyn DataPlane> {
        Arc::clone(&self.data_plane)
    }

    /// The environments run, by name.
    pub fn names(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| s.environment.to_string())
            .collect()
    }

    /// Whether several environments run (their names then qualify services).
    pub fn several(&self) -> bool {
        self.servers.len() > 1
    }

    /// The stored events, live (one bus for every environment).
    pub fn events(&self) -> Option<&Arc<crate::events::EventBus>> {
        self.servers.first().map(|s| s.events())
    }

    /// Each environment's [`Server::resume`], then (several environments)
    /// one orphan sweep over what all of them re-adopted. Lines are
    /// prefixed with the environment when several run.
    pub async fn resume(&self) -> Result<Vec<String>, StartError> {
        let mut report = Vec::new();
        for s in &self.servers {
            let lines = s.resume().await?;
            if self.several() {
                report.extend(lines.into_iter().map(|l| format!("{}: {l}", s.environment)));
            } else {
                report.extend(lines);
            }
        }
        if self.several() {
            // Every environment's instances are known to the shared
            // runtime now (adopted, or started since): anything else of
            // this state directory's scope is an orphan.
            report.extend(super::resume::sweep_orphans(self.runtime.as_ref(), &[]).await);
        }
        Ok(report)
    }

    /// The proxy listeners' addresses: `SERVICE` (one environment) or
    /// `ENV/SERVICE` (several), with the address.
    pub fn routes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in &self.servers {
            for (name, listen) in s.routes() {
                let name = if self.several() {
                    qualified(&s.environment, &name)
                } else {
                    name
                };
                out.push((name, listen));
            }
        }
        out
    }

    /// Stops every environment at once ([`Server::shutdown`]); the shared
    /// data plane stops when all of them have aborted their rollouts.
    pub async fn shutdown(&self, keep_running: bool) {
        let mut stops = tokio::task::JoinSet::new();
        for s in &self.servers {
            let s = Arc::clone(s);
            stops.spawn(async move { s.shutdown(keep_running).await });
        }
        while stops.join_next().await.is_some() {}
    }

    /// Serves the API on `listener` until `shutdown` resolves, through
    /// `http::envs`, which sends each request to its environment's server
    /// (and refuses a `?env=` this server does not run, one environment
    /// or several).
    pub async fn serve_api(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        crate::http::serve_environments(self, listener, shutdown).await;
    }
}

/// A data-plane key of one of several environments.
pub(crate) fn qualified(env: &EnvName, key: &str) -> String {
    format!("{env}/{key}")
}

/// One stop of the shared data plane, when every environment asks for it.
#[derive(Debug)]
struct StopTogether {
    barrier: tokio::sync::Barrier,
    done: tokio::sync::OnceCell<()>,
}

/// The shared data plane as one of several environments sees it: its keys
/// qualified with the environment.
#[derive(Debug)]
pub(crate) struct EnvDataPlane {
    inner: Arc<dyn DataPlane>,
    env: EnvName,
    stop: Arc<StopTogether>,
}

impl EnvDataPlane {
    fn key(&self, key: &str) -> String {
        qualified(&self.env, key)
    }
}

#[async_trait]
impl DataPlane for EnvDataPlane {
    async fn listen(&self, service: &str, addr: SocketAddr) -> Result<SocketAddr, DataPlaneError> {
        self.inner.listen(&self.key(service), addr).await
    }

    async fn route(&self, spec: RouteSpec) -> Result<(), DataPlaneError> {
        let service = self.key(&spec.service);
        self.inner.route(RouteSpec { service, ..spec }).await
    }

    async fn drained(&self, addr: SocketAddr, timeout: Duration) -> hatoba_proxy::DrainReport {
        self.inner.drained(addr, timeout).await
    }

    async fn window(&self, service: &str, version: &str, window: Window) -> Option<WindowStats> {
        self.inner.window(&self.key(service), version, window).await
    }

    async fn totals(&self, service: &str, version: &str) -> Option<VersionTotals> {
        self.inner.totals(&self.key(service), version).await
    }

    async fn table(&self, service: &str) -> Option<RouteSpec> {
        let prefix = self.key("");
        self.inner
            .table(&self.key(service))
            .await
            .map(|t| RouteSpec {
                service: t
                    .service
                    .strip_prefix(&prefix)
                    .map_or_else(|| t.service.clone(), str::to_owned),
                ..t
            })
    }

    /// Done once for every environment by [`Environments::start`].
    async fn retain(&self, _keep: &[String]) -> Result<(), DataPlaneError> {
        Ok(())
    }

    async fn set_retention(&self, metrics: Duration) {
        self.inner.set_retention(metrics).await;
    }

    /// Waits for every environment to get here (their rollouts aborted),
    /// then the data plane stops once.
    async fn shutdown(&self) {
        self.stop.barrier.wait().await;
        self.stop
            .done
            .get_or_init(|| async { self.inner.shutdown().await })
            .await;
    }
}

/// The shared runtime as one of several environments sees it: `list`
/// shows the instances this environment started or adopted; the orphan
/// sweep is left to [`Environments::resume`]. Every other method of
/// `Runtime` is passed on (a new one must be too: its default would
/// answer for the runtime underneath).
#[derive(Debug)]
pub(crate) struct EnvRuntime {
    inner: Arc<dyn Runtime>,
    /// This environment's instances, with their service.
    owned: Mutex<HashMap<InstanceId, ServiceName>>,
}

impl EnvRuntime {
    pub(crate) fn new(inner: Arc<dyn Runtime>) -> EnvRuntime {
        EnvRuntime {
            inner,
            owned: Mutex::new(HashMap::new()),
        }
    }

    fn own(&self, status: &InstanceStatus) {
        self.owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(status.id.clone(), status.service.clone());
    }
}

#[async_trait]
impl Runtime for EnvRuntime {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
        now: Millis,
    ) -> Result<InstanceStatus, RuntimeError> {
        let status = self.inner.start(spec, now).await?;
        self.own(&status);
        Ok(status)
    }

    async fn check(&self, spec: &InstanceSpec) -> Result<Option<String>, RuntimeError> {
        self.inner.check(spec).await
    }

    async fn remove_images(&self, ids: &[String]) -> Result<Vec<String>, RuntimeError> {
        self.inner.remove_images(ids).await
    }

    async fn built_images(
        &self,
        service: &ServiceName,
    ) -> Result<Vec<hatoba_runtime::BuiltImage>, RuntimeError> {
        self.inner.built_images(service).await
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<InstanceStatus, RuntimeError> {
        self.inner.stop(id, grace).await
    }

    async fn list(&self, service: &ServiceName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let all = self.inner.list(service).await?;
        let mut owned = self.owned.lock().unwrap_or_else(PoisonError::into_inner);
        // What the runtime forgot leaves this environment's list too.
        owned.retain(|id, s| s != service || all.iter().any(|i| &i.id == id));
        Ok(all
            .into_iter()
            .filter(|i| owned.contains_key(&i.id))
            .collect())
    }

    async fn forget(&self, id: &InstanceId) {
        self.inner.forget(id).await;
    }

    async fn adopt(&self, known: &InstanceStatus) -> Result<InstanceStatus, RuntimeError> {
        let status = self.inner.adopt(known).await?;
        self.own(&status);
        Ok(status)
    }

    /// Nothing here: the sweep runs once over every environment.
    async fn sweep(&self, _keep: &[InstanceId]) -> Result<Vec<InstanceId>, RuntimeError> {
        Ok(Vec::new())
    }

    async fn logs(
        &self,
        id: &InstanceId,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Option<hatoba_runtime::Output>, RuntimeError> {
        self.inner.logs(id, tail, after).await
    }

    async fn follow_logs(
        &self,
        id: &InstanceId,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Option<hatoba_runtime::LogStream>, RuntimeError> {
        self.inner.follow_logs(id, tail, after).await
    }

    async fn signal(&self, id: &InstanceId, signal: &str) -> Result<(), RuntimeError> {
        self.inner.signal(id, signal).await
    }

    async fn usage(&self, id: &InstanceId) -> Option<Usage> {
        self.inner.usage(id).await
    }
}

#[cfg(test)]
mod tests;
