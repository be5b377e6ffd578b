//! `hatoba up`: the long-running server for one environment of one spec.
//!
//! [`Server`] owns a proxy listener per service (the spec's route), one
//! `Deployer` per service, the history store, the secret key and the API's
//! token. This module holds the server's parts and its life: [`Server::start`]
//! opens the listeners, [`Server::shutdown`] stops without cutting a request
//! (invariant 12). `resume` brings back what a previous run left and takes
//! over a rollout whose task failed; the operations clients ask for are in
//! `ops`, and the HTTP API that translates them is in `http`.
//!
//! Restart: [`Server::resume`] reads each service's saved controller
//! state, re-adopts the recorded instances through the runtime (pid and
//! process start time checked), stops orphans of this state directory,
//! rebuilds the route tables, and resumes a rollout that was in progress
//! where its record says.
//!
//! Not built yet: RBAC beyond the token.

mod envs;
mod resume;

pub use envs::Environments;
pub(crate) use envs::{listen_clash, qualified, services_of};

use crate::dataplane::DataPlane;
use crate::deployer::{DeployError, Deployed, Deployer, Operator, ServiceRecord, ServingRecord};
use crate::secrets::SecretKey;
use hatoba_core::{DeploymentId, EnvName, ServiceName};
use hatoba_metrics::Role;
use hatoba_proxy::{GroupSpec, RouteSpec};
use hatoba_rollout::Input;
use hatoba_runtime::Runtime;
use hatoba_spec::Spec;
use hatoba_store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

pub(crate) struct ServiceState {
    pub(crate) deployer: Deployer,
    pub(crate) serving: Mutex<Option<Deployed>>,
    /// The deployment in progress (its id once recorded) and its operator channel.
    pub(crate) live: Mutex<Option<(Option<DeploymentId>, mpsc::Sender<Operator>)>>,
    /// Fired once a deployment's task lets go of `live` ([`Self::let_go`]):
    /// a deploy asked between a deployment's recorded end and that moment
    /// waits for it instead of being refused.
    pub(crate) let_go: tokio::sync::Notify,
    /// Held by the supervisor for one round and by a deploy while it takes
    /// over what serves, so the two never act on the instances at once.
    pub(crate) ops: tokio::sync::Mutex<()>,
    /// What the supervisor last observed.
    pub(crate) health: Mutex<crate::supervisor::Health>,
    /// Instances started outside a rollout (a start bringing the serving
    /// version back) that no probe has seen ready yet: the supervisor routes
    /// them once one does, instead of taking them as ready.
    pub(crate) fresh: Mutex<std::collections::HashSet<std::net::SocketAddr>>,
    /// A problem the service is recovering from (a rollout stopped by a
    /// store error), shown by `diagnose` until it is over.
    pub(crate) problem: Mutex<Option<String>>,
    /// The service's spec as what serves was deployed with (the spec at
    /// start until a deployment of this run succeeds): the supervisor
    /// probes and restarts by it, so a reload changes nothing of what
    /// runs until the next deployment.
    pub(crate) serving_spec: Mutex<Arc<hatoba_spec::Service>>,
}

impl ServiceState {
    /// The version that serves, as words (`None` before any).
    pub(crate) fn serving_version(&self) -> Option<String> {
        self.serving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|d| d.version.to_string())
    }

    pub(crate) fn new(deployer: Deployer, svc: hatoba_spec::Service) -> ServiceState {
        ServiceState {
            deployer,
            serving: Mutex::new(None),
            live: Mutex::new(None),
            let_go: tokio::sync::Notify::new(),
            ops: tokio::sync::Mutex::new(()),
            health: Mutex::new(crate::supervisor::Health::default()),
            fresh: Mutex::new(std::collections::HashSet::new()),
            problem: Mutex::new(None),
            serving_spec: Mutex::new(Arc::new(svc)),
        }
    }

    /// A deployment's task is done with the service: its end is recorded
    /// and `serving` says what serves after it. Frees `live` and wakes a
    /// deploy waiting for it.
    pub(crate) fn let_go(&self) {
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.let_go.notify_waiters();
    }

    /// The spec what serves runs by.
    pub(crate) fn serving_spec(&self) -> Arc<hatoba_spec::Service> {
        Arc::clone(
            &self
                .serving_spec
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// A rollout ended: `serving` serves now, and when it is the rollout's
    /// own version, so is the spec the rollout started with (`svc`).
    pub(crate) fn rollout_ended(
        &self,
        d: &hatoba_store::Deployment,
        serving: Option<Deployed>,
        svc: &hatoba_spec::Service,
    ) {
        if serving.as_ref().and_then(|s| s.deployment.as_ref()) == Some(&d.id) {
            *self
                .serving_spec
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Arc::new(svc.clone());
        }
        *self.serving.lock().unwrap_or_else(PoisonError::into_inner) = serving;
    }
}

/// The spec a server runs now and its digest, replaced whole by a reload
/// (`reload.rs`); an operation takes it once and keeps it.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) spec: Spec,
    pub(crate) digest: String,
}

/// The server's parts, shared by the operations and the API.
pub struct Server {
    /// The spec and its digest, now.
    pub(crate) loaded: std::sync::RwLock<Arc<Loaded>>,
    /// The file the spec is read from again on a reload (none: the demo).
    pub(crate) spec_path: Option<PathBuf>,
    pub(crate) environment: EnvName,
    pub(crate) base_dir: PathBuf,
    pub(crate) token: String,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runtime: Arc<dyn Runtime>,
    /// Grows and shrinks with a reload.
    pub(crate) services: std::sync::RwLock<HashMap<ServiceName, Arc<ServiceState>>>,
    pub(crate) data_plane: Arc<dyn DataPlane>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    supervisors: Mutex<Vec<(ServiceName, tokio::task::AbortHandle)>>,
    /// One reload at a time.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    pub(crate) secret_key: Option<Arc<SecretKey>>,
    /// One secret write at a time: the next version is the newest plus one.
    pub(crate) secret_writes: tokio::sync::Mutex<()>,
    /// Set when [`Server::shutdown`] begins: work that waits for the store
    /// to come back gives up then.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The stored events, live (`events.rs`).
    pub(crate) events: Arc<crate::events::EventBus>,
    /// The places of the API's event streams (`http::stream`).
    pub(crate) event_streams: Arc<tokio::sync::Semaphore>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The environment is not in the spec.
    #[error("environment `{0}` is not declared in the spec (declared: {1})")]
    UnknownEnvironment(String, String),
    /// Two environments run by one server listen on one address.
    #[error(
        "{first} and {second} both listen on {addr}: each environment needs its own addresses \
         (set `route.listen` under `environments.ENV.services.SERVICE`)"
    )]
    AddressClash {
        /// The address.
        addr: String,
        /// One listener, `ENV/SERVICE`.
        first: String,
        /// The other.
        second: String,
    },
    /// A route's address could not be listened on.
    #[error("cannot listen on {addr} for service `{service}`")]
    Listen {
        /// The service.
        service: String,
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data plane refused a listener.
    #[error(transparent)]
    DataPlane(#[from] crate::DataPlaneError),
    /// The saved state could not be read or acted on.
    #[error("cannot resume service `{service}`")]
    Resume {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: DeployError,
    },
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

/// What `Server::start` needs.
pub struct ServerConfig {
    /// The parsed spec.
    pub spec: Spec,
    /// Its digest, for the history.
    pub spec_digest: String,
    /// The file it was read from, read again by a reload (`hatoba reload`,
    /// SIGHUP); `None` refuses reloads.
    pub spec_path: Option<PathBuf>,
    /// The environment to run (`development` may be implicit: the base services).
    pub environment: EnvName,
    /// Where relative paths in the spec start.
    pub base_dir: PathBuf,
    /// The history.
    pub store: Arc<dyn Store>,
    /// Where instances run.
    pub runtime: Arc<dyn Runtime>,
    /// Where traffic is routed.
    pub data_plane: Arc<dyn DataPlane>,
    /// The API's bearer token.
    pub token: String,
    /// The key secrets are sealed with; without one, secrets can be
    /// neither stored nor used.
    pub secret_key: Option<Arc<SecretKey>>,
}

impl Server {
    /// The stored events, live: [`EventBus::subscribe`](crate::EventBus::subscribe).
    pub fn events(&self) -> &Arc<crate::events::EventBus> {
        &self.events
    }

    /// Opens a listener per service on the data plane; no instance runs
    /// yet ([`Server::resume`] brings back what a previous run left).
    pub async fn start(cfg: ServerConfig) -> Result<Arc<Server>, StartError> {
        // Every event written through the server reaches the event stream.
        let events =
            crate::events::EventBus::new(Arc::clone(&cfg.store), crate::events::BROADCAST_CAPACITY);
        Server::start_on(cfg, events).await
    }

    /// [`Server::start`] with the event bus given: the environments of one
    /// `hatoba up` share one (`envs.rs`).
    pub(crate) async fn start_on(
        mut cfg: ServerConfig,
        events: Arc<crate::events::EventBus>,
    ) -> Result<Arc<Server>, StartError> {
        cfg.store = events.store();
        let services_spec = match cfg.spec.environments.get(&cfg.environment) {
            Some(e) => e.services.clone(),
            None if cfg.environment.as_str() == "development" => cfg.spec.services.clone(),
            None => {
                let declared: Vec<String> = cfg
                    .spec
                    .environments
                    .keys()
                    .map(ToString::to_string)
                    .collect();
                return Err(StartError::UnknownEnvironment(
                    cfg.environment.to_string(),
                    declared.join(", "),
                ));
            }
        };
        // A service the spec dropped stops being served (before the others
        // listen: a new service may want its address).
        // A blue-green service's preview address is a listener of its own.
        let listeners: Vec<(String, &hatoba_spec::Listen)> = services_spec
            .iter()
            .flat_map(|(name, svc)| {
                let preview = crate::dataplane::preview_listen(svc)
                    .map(|l| (crate::dataplane::preview_key(name.as_str()), l));
                std::iter::once((name.to_string(), &svc.route.listen)).chain(preview)
            })
            .collect();
        let names: Vec<String> = listeners.iter().map(|(k, _)| k.clone()).collect();
        cfg.data_plane.retain(&names).await?;
        cfg.data_plane
            .set_retention(cfg.spec.retention.metrics)
            .await;
        for (key, listen) in &listeners {
            let text = listen.to_string();
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&text)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| StartError::Listen {
                    service: key.clone(),
                    addr: text.clone(),
                    source: std::io::Error::other("cannot resolve the address"),
                })?;
            cfg.data_plane.listen(key, addr).await?;
        }
        let mut services = HashMap::new();
        for (name, svc) in &services_spec {
            let deployer = Deployer::new(
                Arc::clone(&cfg.store),
                Arc::clone(&cfg.runtime),
                Arc::clone(&cfg.data_plane),
            );
            services.insert(
                name.clone(),
                Arc::new(ServiceState::new(deployer, svc.clone())),
            );
        }
        Ok(Arc::new(Server {
            loaded: std::sync::RwLock::new(Arc::new(Loaded {
                spec: cfg.spec,
                digest: cfg.spec_digest,
            })),
            spec_path: cfg.spec_path,
            environment: cfg.environment,
            base_dir: cfg.base_dir,
            token: cfg.token,
            store: cfg.store,
            runtime: cfg.runtime,
            services: std::sync::RwLock::new(services),
            data_plane: cfg.data_plane,
            tasks: Mutex::new(Vec::new()),
            supervisors: Mutex::new(Vec::new()),
            reloading: tokio::sync::Mutex::new(()),
            stopping: tokio::sync::watch::Sender::new(false),
            secret_key: cfg.secret_key,
            secret_writes: tokio::sync::Mutex::new(()),
            events,
            event_streams: Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_EVENT_STREAMS)),
        }))
    }

    /// Keeps a deployment's task for the shutdown to await, forgetting
    /// those that ended.
    pub(crate) fn keep_task(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits until no supervisor is in the middle of a round (one holds its
    /// service's `ops` lock for a round). A seam for tests on a paused
    /// clock: they advance it only between rounds, so every action of a
    /// round carries the round's time.
    #[doc(hidden)]
    pub async fn between_rounds(&self) {
        for (_, state) in self.service_states() {
            drop(state.ops.lock().await);
        }
    }

    /// The spec and its digest, now: an operation takes it once.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The digest of the spec the server runs now (SHA-256 of its file, hex).
    pub fn spec_digest(&self) -> String {
        self.current().digest.clone()
    }

    /// A service of the spec as the server runs it.
    pub(crate) fn service(&self, name: &ServiceName) -> Option<Arc<ServiceState>> {
        self.services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The services run, by name.
    pub(crate) fn service_names(&self) -> Vec<ServiceName> {
        let mut names: Vec<ServiceName> = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// The services run, by name, with their state.
    pub(crate) fn service_states(&self) -> Vec<(ServiceName, Arc<ServiceState>)> {
        let mut all: Vec<(ServiceName, Arc<ServiceState>)> = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(n, s)| (n.clone(), Arc::clone(s)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The proxy listeners' addresses, by service.
    pub fn routes(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .services_spec()
            .iter()
            .map(|(n, s)| (n.to_string(), s.route.listen.to_string()))
            .collect();
        out.sort();
        out
    }

    pub(crate) fn services_spec(
        &self,
    ) -> std::collections::BTreeMap<ServiceName, hatoba_spec::Service> {
        services_of(&self.current().spec, &self.environment).unwrap_or_default()
    }

    /// Stops cleanly. With `keep_running`, instances, the data plane and
    /// any rollout in progress are left as they are, recorded, for the next
    /// `hatoba up` to take over. Otherwise, in this order, so that no
    /// request is cut: rollouts in progress are aborted (traffic back on
    /// stable, recorded as aborted); the listeners stop accepting and their
    /// requests in flight finish; then every instance gets its grace period,
    /// all at once. What served is still recorded (version and variables,
    /// no instances), so the next `hatoba up` starts it again.
    pub async fn shutdown(&self, keep_running: bool) {
        self.stopping.send_replace(true);
        for s in std::mem::take(
            &mut *self
                .supervisors
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ) {
            s.1.abort();
        }
        if keep_running {
            return;
        }
        for (_, state) in self.service_states() {
            let live = state
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some((_, tx)) = live {
                let _ = tx.try_send(Operator::Input(Input::Abort(
                    "the server is shutting down".to_owned(),
                )));
            }
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            // An abort ends within the drain and grace periods; do not wait forever.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), t).await;
        }
        // No new connection from here; the requests in flight finish on
        // instances that still run.
        self.data_plane.shutdown().await;
        let specs = self.services_spec();
        let mut stops = tokio::task::JoinSet::new();
        for (name, svc) in &specs {
            if let Ok(list) = self.runtime.list(name).await {
                for i in list {
                    let runtime = Arc::clone(&self.runtime);
                    let grace = svc.termination_grace_period;
                    let name = name.clone();
                    stops.spawn(async move {
                        let stopped = runtime.stop(&i.id, grace).await;
                        (name, i, stopped.is_ok())
                    });
                }
            }
        }
        while let Some(done) = stops.join_next().await {
            // A container stopped is removed: recorded on the deployment
            // that made its version serve, as a rollout records it.
            let Ok((name, i, true)) = done else { continue };
            let serving = self.service(&name).and_then(|state| {
                state
                    .serving
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .and_then(|d| d.deployment.clone())
            });
            if let (Some(id), Some(removed)) = (serving, crate::deployer::container_removed(&i)) {
                let new = hatoba_store::NewEvent::of(
                    crate::deployer::clock_now(),
                    &removed,
                    Some(name.as_str()),
                );
                let _ = self.store.append_event(&id, new).await;
            }
        }
        for name in specs.keys() {
            if let Some(state) = self.service(name) {
                let serving = state
                    .serving
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let record = ServiceRecord {
                    serving: serving.map(|d| ServingRecord {
                        instances: Vec::new(),
                        ..ServingRecord::of(&d)
                    }),
                    rollout: None,
                };
                let _ = state.deployer.save(name, &self.environment, &record).await;
            }
        }
    }
}

/// The table of a service that is not being deployed: all on what serves.
fn serving_route(name: &ServiceName, serving: Option<&Deployed>) -> RouteSpec {
    RouteSpec {
        service: name.to_string(),
        groups: serving
            .map(|d| {
                vec![GroupSpec {
                    role: Role::Stable,
                    version: d.version.to_string(),
                    weight: 100,
                    backends: d.instances.iter().map(|i| i.addr).collect(),
                }]
            })
            .unwrap_or_default(),
        sticky: false,
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A fresh API token: 32 random bytes, hex.
pub fn new_token() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
