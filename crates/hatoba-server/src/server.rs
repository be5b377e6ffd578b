//! `hatoba up`: the long-running server for one environment of one spec.
//!
//! It owns a proxy listener per service (the spec's route), one `Deployer`
//! per service, the history store, and a small JSON API on loopback that the
//! CLI talks to (`POST /v1/deployments`, `GET /v1/deployments/{id}`,
//! `POST /v1/services/{name}/promote|promote-full|abort`, `GET /v1/health`,
//! `GET /v1/secrets`, `PUT|DELETE /v1/secrets/{name}`),
//! guarded by a bearer token kept in the state directory.
//!
//! One deployment per service at a time: a second is refused with 409 and
//! the id of the one in progress (not queued).
//!
//! Restart: [`Server::resume`] reads each service's saved controller
//! state, re-adopts the recorded instances through the runtime (pid and
//! process start time checked), stops orphans of this state directory,
//! rebuilds the route tables, and resumes a rollout that was in progress
//! where its record says.
//!
//! Not built yet: RBAC beyond the token.

use crate::api;
use crate::dataplane::DataPlane;
use crate::deployer::{
    DeployError, DeployRequest, Deployed, Deployer, Operator, RolloutRecord, ServiceRecord,
    ServingRecord,
};
use crate::secrets::{SecretEnv, SecretKey};
use bytes::Bytes;
use hatoba_core::{DeploymentId, EnvName, ServiceName, Version};
use hatoba_metrics::Role;
use hatoba_proxy::{GroupSpec, RouteSpec};
use hatoba_rollout::Input;
use hatoba_runtime::{InstanceState, InstanceStatus, Runtime};
use hatoba_spec::Spec;
use hatoba_store::Store;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// Largest API request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// API connections served at once; one more is closed at accept.
pub(crate) const MAX_API_CONNECTIONS: usize = 128;
/// How long a client may take to send a request's head after connecting.
pub(crate) const API_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one API connection may last, request and answer.
pub(crate) const API_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The pause after an accept that failed (out of file descriptors).
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

pub(crate) struct ServiceState {
    pub(crate) deployer: Deployer,
    pub(crate) serving: Mutex<Option<Deployed>>,
    /// The deployment in progress (its id once recorded) and its operator channel.
    pub(crate) live: Mutex<Option<(Option<DeploymentId>, mpsc::Sender<Operator>)>>,
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
}

/// The server's parts, shared by the API handlers.
pub struct Server {
    spec: Spec,
    environment: EnvName,
    base_dir: PathBuf,
    spec_digest: String,
    token: String,
    store: Arc<dyn Store>,
    runtime: Arc<dyn Runtime>,
    services: HashMap<ServiceName, Arc<ServiceState>>,
    data_plane: Arc<dyn DataPlane>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    supervisors: Mutex<Vec<tokio::task::AbortHandle>>,
    secret_key: Option<Arc<SecretKey>>,
    /// One secret write at a time: the next version is the newest plus one.
    secret_writes: tokio::sync::Mutex<()>,
    /// Set when [`Server::shutdown`] begins: work that waits for the store
    /// to come back gives up then.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The stored events, live (`events.rs`).
    events: Arc<crate::events::EventBus>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The environment is not in the spec.
    #[error("environment `{0}` is not declared in the spec (declared: {1})")]
    UnknownEnvironment(String, String),
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
    pub async fn start(mut cfg: ServerConfig) -> Result<Arc<Server>, StartError> {
        // Every event written through the server reaches the event stream.
        let events = crate::events::EventBus::new(cfg.store, crate::events::BROADCAST_CAPACITY);
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
        for name in services_spec.keys() {
            let deployer = Deployer::new(
                Arc::clone(&cfg.store),
                Arc::clone(&cfg.runtime),
                Arc::clone(&cfg.data_plane),
            );
            services.insert(
                name.clone(),
                Arc::new(ServiceState {
                    deployer,
                    serving: Mutex::new(None),
                    live: Mutex::new(None),
                    ops: tokio::sync::Mutex::new(()),
                    health: Mutex::new(crate::supervisor::Health::default()),
                    fresh: Mutex::new(std::collections::HashSet::new()),
                    problem: Mutex::new(None),
                }),
            );
        }
        Ok(Arc::new(Server {
            spec: cfg.spec,
            environment: cfg.environment,
            base_dir: cfg.base_dir,
            spec_digest: cfg.spec_digest,
            token: cfg.token,
            store: cfg.store,
            runtime: cfg.runtime,
            services,
            data_plane: cfg.data_plane,
            tasks: Mutex::new(Vec::new()),
            supervisors: Mutex::new(Vec::new()),
            stopping: tokio::sync::watch::Sender::new(false),
            secret_key: cfg.secret_key,
            secret_writes: tokio::sync::Mutex::new(()),
            events,
        }))
    }

    /// Brings back what the previous run of the server left: re-adopts the
    /// recorded instances, stops orphans, rebuilds the route tables and
    /// resumes rollouts in progress. Returns one line per thing done, for
    /// the operator.
    pub async fn resume(self: &Arc<Self>) -> Result<Vec<String>, StartError> {
        let mut report = Vec::new();
        for name in self.spec.secret_names(&self.environment) {
            if std::env::var_os(&name).is_some() {
                report.push(format!(
                    "`{name}` is in hatoba up's environment but declared a secret: that value is \
                     not used (store it with `hatoba secret set {name}`, value on stdin)"
                ));
            }
        }
        let mut loaded = Vec::new();
        let mut keep = Vec::new();
        let mut names: Vec<&ServiceName> = self.services.keys().collect();
        names.sort();
        for name in names {
            let state = &self.services[name];
            let resume_err = |source| StartError::Resume {
                service: name.to_string(),
                source,
            };
            let record = state
                .deployer
                .load(name, &self.environment)
                .await
                .map_err(resume_err)?
                .unwrap_or_default();
            let mut adopted: HashMap<String, InstanceStatus> = HashMap::new();
            for r in record.instances() {
                let status = match self.runtime.adopt(&r.status(name)).await {
                    Ok(s) => s,
                    Err(e) => {
                        report.push(format!("{name}: instance {} not adopted: {e}", r.id));
                        let mut s = r.status(name);
                        s.state = InstanceState::Exited {
                            code: None,
                            signal: None,
                        };
                        s
                    }
                };
                if status.state == InstanceState::Running {
                    keep.push(status.id.clone());
                }
                adopted.insert(r.id.clone(), status);
            }
            let alive = adopted
                .values()
                .filter(|s| s.state == InstanceState::Running)
                .count();
            if !adopted.is_empty() {
                report.push(format!(
                    "{name}: re-adopted {alive} of {} recorded instances",
                    adopted.len()
                ));
            }
            loaded.push((name.clone(), record, adopted));
        }
        match self.runtime.sweep(&keep).await {
            Ok(orphans) if !orphans.is_empty() => report.push(format!(
                "stopped {} orphaned instance(s): {}",
                orphans.len(),
                orphans
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Ok(_) => {}
            Err(e) => report.push(format!("could not look for orphaned instances: {e}")),
        }
        for (name, record, adopted) in loaded {
            let state = Arc::clone(&self.services[&name]);
            self.resume_service(&name, &state, record, adopted, &mut report)
                .await
                .map_err(|source| StartError::Resume {
                    service: name.to_string(),
                    source,
                })?;
        }
        self.supervise();
        Ok(report)
    }

    /// Starts each service's supervisor loop (health, restarts, usage).
    fn supervise(self: &Arc<Self>) {
        let specs = self.services_spec();
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, state) in &self.services {
            let Some(svc) = specs.get(name).cloned() else {
                continue;
            };
            let task = tokio::spawn(crate::supervisor::run(crate::supervisor::Supervised {
                name: name.clone(),
                environment: self.environment.clone(),
                svc,
                base_dir: self.base_dir.clone(),
                state: Arc::clone(state),
                runtime: Arc::clone(&self.runtime),
                store: Arc::clone(&self.store),
            }));
            self.supervisors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(task.abort_handle());
            tasks.push(task);
        }
    }

    async fn resume_service(
        self: &Arc<Self>,
        name: &ServiceName,
        state: &Arc<ServiceState>,
        record: ServiceRecord,
        adopted: HashMap<String, InstanceStatus>,
        report: &mut Vec<String>,
    ) -> Result<(), DeployError> {
        let running = |s: &ServingRecord| Deployed {
            version: s.version.clone(),
            vars: s.vars.clone(),
            secrets: SecretEnv {
                versions: s.secrets.clone(),
                values: std::collections::BTreeMap::new(),
            },
            deployment: s.deployment.clone(),
            instances: s
                .instances
                .iter()
                .filter_map(|r| adopted.get(&r.id))
                .filter(|s| s.state == InstanceState::Running)
                .cloned()
                .collect(),
        };
        let live = self
            .store
            .live(name, &self.environment)
            .await
            .map_err(DeployError::from)?;
        match (record.rollout, live) {
            (Some(rollout), Some(live)) if live.id == rollout.deployment => {
                report.push(format!(
                    "{name}: resuming deployment {} of {}",
                    rollout.deployment, rollout.version
                ));
                self.resume_rollout(name, state, rollout, adopted, report)
                    .await?;
                return Ok(());
            }
            (rollout, live) => {
                if let Some(live) = live {
                    // Recorded, but the controller stopped before its first
                    // step: nothing of it runs.
                    let _ = self
                        .store
                        .transition(
                            &live.id,
                            hatoba_core::DeploymentStatus::Failed,
                            Some("the controller stopped before the rollout began".to_owned()),
                            crate::clock_now(),
                        )
                        .await;
                    report.push(format!(
                        "{name}: deployment {} never began: failed",
                        live.id
                    ));
                }
                let serving = match rollout {
                    // The rollout ended just before the controller stopped.
                    Some(r) => self.finished_rollout(r).await?,
                    None => record.serving,
                };
                let mut serving = serving.as_ref().map(running);
                if let Some(s) = serving.as_mut() {
                    s.secrets = self.reopen_secrets(name, &s.secrets.versions, report).await;
                }
                // Routed now: what was adopted running (it served before).
                let route = serving_route(name, serving.as_ref());
                if let Some(s) = &mut serving {
                    let adopted_running = s.instances.len();
                    let started = self.restore(name, state, s).await;
                    report.push(if started.is_empty() {
                        format!("{name}: {} serves on {adopted_running} instance(s)", s.version)
                    } else {
                        format!(
                            "{name}: {} serves on {adopted_running} instance(s); started {} again{}, routed as they become ready",
                            s.version,
                            started.len(),
                            if adopted_running == 0 {
                                " (the last `hatoba up` stopped them)"
                            } else {
                                ""
                            }
                        )
                    });
                }
                self.data_plane
                    .route(route)
                    .await
                    .map_err(DeployError::from)?;
                state
                    .deployer
                    .save(
                        name,
                        &self.environment,
                        &ServiceRecord {
                            serving: serving.as_ref().map(ServingRecord::of),
                            rollout: None,
                        },
                    )
                    .await?;
                *state.serving.lock().unwrap_or_else(PoisonError::into_inner) = serving;
            }
        }
        Ok(())
    }

    /// Brings the serving version back to its size after a start: the
    /// instances a stop ended (or that died with the machine) are started
    /// again with the variables the version ran with. They are added to
    /// what serves but not routed: the supervisor routes each once its
    /// readiness probe passes. Returns what was started.
    async fn restore(
        &self,
        name: &ServiceName,
        state: &ServiceState,
        serving: &mut Deployed,
    ) -> Vec<InstanceStatus> {
        let Some(svc) = self.services_spec().get(name).cloned() else {
            return Vec::new();
        };
        let missing = usize::try_from(svc.replicas)
            .unwrap_or(usize::MAX)
            .saturating_sub(serving.instances.len());
        let mut started = Vec::new();
        for _ in 0..missing {
            let Ok(spec) = crate::deployer::instance_spec_for(
                name,
                &svc,
                &serving.version,
                &serving.vars,
                &serving.secrets,
                &self.base_dir,
            ) else {
                break;
            };
            match self.runtime.start(&spec, crate::clock_now()).await {
                Ok(inst) => started.push(inst),
                // The supervisor reports what it cannot start.
                Err(_) => break,
            }
        }
        {
            let mut fresh = state.fresh.lock().unwrap_or_else(PoisonError::into_inner);
            fresh.extend(started.iter().map(|i| i.addr));
        }
        serving.instances.extend(started.iter().cloned());
        started
    }

    /// What serves after a rollout whose end was recorded in the history
    /// but not yet in the controller's state.
    async fn finished_rollout(
        &self,
        r: RolloutRecord,
    ) -> Result<Option<ServingRecord>, DeployError> {
        let status = self
            .store
            .deployment(&r.deployment)
            .await?
            .map(|d| d.status);
        let new_serves = status == Some(hatoba_core::DeploymentStatus::Succeeded);
        Ok(if new_serves {
            Some(ServingRecord {
                version: r.version.clone(),
                instances: r.new_instances().to_vec(),
                vars: r.vars.clone(),
                secrets: r.secrets.clone(),
                deployment: Some(r.deployment.clone()),
            })
        } else {
            r.current.clone().map(|c| ServingRecord {
                instances: r.old_instances().to_vec(),
                ..c
            })
        })
    }

    async fn resume_rollout(
        self: &Arc<Self>,
        name: &ServiceName,
        state: &Arc<ServiceState>,
        record: RolloutRecord,
        adopted: HashMap<String, InstanceStatus>,
        report: &mut Vec<String>,
    ) -> Result<(), DeployError> {
        let Some(svc) = self.services_spec().get(name).cloned() else {
            return Err(DeployError::Unsupported(format!(
                "service `{name}` left the spec"
            )));
        };
        let current_secrets = match &record.current {
            Some(c) => self.reopen_secrets(name, &c.secrets, report).await,
            None => SecretEnv::default(),
        };
        let secrets = self.reopen_secrets(name, &record.secrets, report).await;
        let current = record.current.as_ref().map(|c| Deployed {
            version: c.version.clone(),
            vars: c.vars.clone(),
            secrets: current_secrets,
            deployment: c.deployment.clone(),
            instances: c
                .instances
                .iter()
                .map(|r| {
                    adopted
                        .get(&r.id)
                        .cloned()
                        .unwrap_or_else(|| r.status(name))
                })
                .collect(),
        });
        let req = DeployRequest {
            service: name.clone(),
            environment: self.environment.clone(),
            svc,
            spec: self.spec.clone(),
            version: record.version.clone(),
            vars: record.vars.clone(),
            secrets,
            base_dir: self.base_dir.clone(),
            spec_digest: self.spec_digest.clone(),
            deployed_by: record.deployed_by.clone(),
            current,
            rollback_of: record.rollback_of.clone(),
            require_approval: record.awaiting_approval,
        };
        let (tx, rx) = mpsc::channel(8);
        *state.live.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Some(record.deployment.clone()), tx));
        let st = Arc::clone(state);
        let me = Arc::clone(self);
        let id = record.deployment.clone();
        let task = tokio::spawn(async move {
            let result = st.deployer.resume(&req, record, &adopted, rx).await;
            match &result {
                Ok((d, serving)) => {
                    log_end(d);
                    *st.serving.lock().unwrap_or_else(PoisonError::into_inner) = serving.clone();
                }
                Err(e) => me.after_failed_rollout(&req.service, &st, id, e).await,
            }
            *st.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
        });
        self.keep_task(task);
        Ok(())
    }

    /// Keeps a deployment's task for the shutdown to await, forgetting
    /// those that ended.
    fn keep_task(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// A rollout that stopped on an error of its own (the history store
    /// could not be written, the data plane refused a table) would leave its
    /// deployment `in_progress` with nothing driving it, and the service
    /// split between versions. Instead: all traffic goes back to what
    /// served, the rollout's own instances are stopped, the problem is
    /// logged and shown by `diagnose`, and the deployment is recorded as
    /// failed with the reason, retried with back-off until the store takes
    /// it. Nothing here needs the store to act.
    async fn after_failed_rollout(
        &self,
        name: &ServiceName,
        state: &ServiceState,
        id: DeploymentId,
        e: &DeployError,
    ) {
        let why = error_chain(e);
        let serving = state
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tracing::error!(
            deployment = %id,
            service = %name,
            error = %why,
            "rollout stopped by an error: traffic back on what served"
        );
        *state.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
            "deployment {id} stopped: {why}; traffic is back on {}; it is recorded as failed once the history store can be written",
            serving
                .as_ref()
                .map_or_else(|| "nothing".to_owned(), |d| d.version.to_string())
        ));
        let _ = self
            .data_plane
            .route(serving_route(name, serving.as_ref()))
            .await;
        let keep: std::collections::HashSet<&hatoba_runtime::InstanceId> = serving
            .iter()
            .flat_map(|d| d.instances.iter().map(|i| &i.id))
            .collect();
        let grace = self
            .services_spec()
            .get(name)
            .map_or(std::time::Duration::from_secs(10), |s| {
                s.termination_grace_period
            });
        if let Ok(list) = self.runtime.list(name).await {
            for i in list.iter().filter(|i| !keep.contains(&i.id)) {
                let _ = self.runtime.stop(&i.id, grace).await;
                self.runtime.forget(&i.id).await;
            }
        }
        let reason = format!("stopped by an error: {why}");
        let mut pause = std::time::Duration::from_millis(500);
        loop {
            match self
                .store
                .transition(
                    &id,
                    hatoba_core::DeploymentStatus::Failed,
                    Some(reason.clone()),
                    crate::clock_now(),
                )
                .await
            {
                Ok(_) | Err(hatoba_store::StoreError::Terminal { .. }) => break,
                Err(e) => {
                    tracing::warn!(deployment = %id, error = %error_chain(&e), "cannot record the failed deployment yet; retrying");
                    let mut stopping = self.stopping.subscribe();
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        // The server stops: the deployment stays as saved,
                        // and the next start resumes or ends it.
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    pause = (pause * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
        let _ = state
            .deployer
            .save(
                name,
                &self.environment,
                &ServiceRecord {
                    serving: serving.as_ref().map(ServingRecord::of),
                    rollout: None,
                },
            )
            .await;
        *state.problem.lock().unwrap_or_else(PoisonError::into_inner) = None;
        tracing::info!(deployment = %id, service = %name, "recorded as failed");
    }

    /// Waits until no supervisor is in the middle of a round (one holds its
    /// service's `ops` lock for a round). A seam for tests on a paused
    /// clock: they advance it only between rounds, so every action of a
    /// round carries the round's time.
    #[doc(hidden)]
    pub async fn between_rounds(&self) {
        for state in self.services.values() {
            drop(state.ops.lock().await);
        }
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

    fn services_spec(&self) -> std::collections::BTreeMap<ServiceName, hatoba_spec::Service> {
        self.spec
            .environments
            .get(&self.environment)
            .map_or_else(|| self.spec.services.clone(), |e| e.services.clone())
    }

    /// Serves the API on `listener` until `shutdown` resolves.
    ///
    /// Limits, like the proxy's, so no client (the API needs a token, but
    /// connecting does not) can starve the controller: at most
    /// [`MAX_API_CONNECTIONS`] at once, one request per connection (the CLI
    /// opens one per call), its head within [`API_HEADER_TIMEOUT`] of
    /// connecting and the whole exchange within [`API_REQUEST_TIMEOUT`],
    /// bodies of at most 64 KiB. When all the places are taken, the oldest
    /// connection that has not sent a request yet (idle, or a slowloris
    /// trickling its head) is closed to make room, so an operator's
    /// `hatoba status` is served even under a flood of silent connections;
    /// only when every place is busy answering is a new one closed. Out of
    /// file descriptors, accepting pauses instead of spinning.
    pub async fn serve_api(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        struct Open {
            /// A request head arrived on it.
            asked: Arc<std::sync::atomic::AtomicBool>,
            task: tokio::task::AbortHandle,
        }
        let mut shutdown = std::pin::pin!(shutdown);
        let mut open: std::collections::VecDeque<Open> = std::collections::VecDeque::new();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // EMFILE and the like: the next accept would fail
                            // the same way at once.
                            if !matches!(
                                e.kind(),
                                std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                            ) {
                                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                            }
                            continue;
                        }
                    };
                    open.retain(|o| !o.task.is_finished());
                    if open.len() >= MAX_API_CONNECTIONS {
                        let silent = open
                            .iter()
                            .position(|o| !o.asked.load(std::sync::atomic::Ordering::Relaxed));
                        match silent.and_then(|i| open.remove(i)) {
                            Some(oldest) => oldest.task.abort(),
                            None => {
                                // Every place is answering a request.
                                drop(stream);
                                continue;
                            }
                        }
                    }
                    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let me = Arc::clone(&self);
                    let flag = Arc::clone(&asked);
                    let task = tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            flag.store(true, std::sync::atomic::Ordering::Relaxed);
                            let me = Arc::clone(&me);
                            async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(API_HEADER_TIMEOUT)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), svc);
                        let _ = tokio::time::timeout(API_REQUEST_TIMEOUT, conn).await;
                    });
                    open.push_back(Open {
                        asked,
                        task: task.abort_handle(),
                    });
                }
            }
        }
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
            s.abort();
        }
        if keep_running {
            return;
        }
        for state in self.services.values() {
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
                    stops.spawn(async move {
                        let _ = runtime.stop(&i.id, grace).await;
                    });
                }
            }
        }
        while stops.join_next().await.is_some() {}
        for name in specs.keys() {
            if let Some(state) = self.services.get(name) {
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

    async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let authorized = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), self.token.as_bytes()));
        let path = req.uri().path().to_owned();
        if path == "/v1/health" {
            return json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
        }
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                2,
                "missing or wrong token",
                Some(
                    "commands find the token in the state directory: use the same --state-dir as `hatoba up`",
                ),
            );
        }
        let method = req.method().clone();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            (Method::POST, ["v1", "deployments"]) => {
                match body_json::<hatoba_api::DeployRequest>(req, "deploy", false).await {
                    Ok(r) => self.deploy(r, None, None).await,
                    Err(resp) => resp,
                }
            }
            (Method::GET, ["v1", "deployments", id]) => self.detail(id).await,
            (Method::GET, ["v1", "services", name]) => self.service_detail(name).await,
            (Method::POST, ["v1", "deployments", id, "approve"]) => {
                let id = (*id).to_owned();
                match body_json::<hatoba_api::ApproveRequest>(req, "approve", false).await {
                    Ok(a) => self.approve(&id, a.by).await,
                    Err(resp) => resp,
                }
            }
            (Method::POST, ["v1", "services", name, "rollback"]) => {
                let name = (*name).to_owned();
                match body_json::<hatoba_api::RollbackRequest>(req, "rollback", true).await {
                    Ok(r) => {
                        let by = r.by.unwrap_or_else(|| "cli".to_owned());
                        self.rollback(&name, r.to, by).await
                    }
                    Err(resp) => resp,
                }
            }
            (Method::POST, ["v1", "services", name, action]) => {
                // Read like every other body: one over 64 KiB, or one that is
                // not the request, is refused rather than ignored.
                let (name, action) = ((*name).to_owned(), (*action).to_owned());
                match body_json::<hatoba_api::PromoteRequest>(req, &action, true).await {
                    Ok(r) => {
                        let by = r.by.unwrap_or_else(|| "cli".to_owned());
                        self.operate(&name, &action, by).await
                    }
                    Err(resp) => resp,
                }
            }
            (Method::GET, ["v1", "secrets"]) => self.list_secrets().await,
            (Method::PUT, ["v1", "secrets", name]) => {
                let name = (*name).to_owned();
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            2,
                            &format!(
                                "a secret may be at most {} bytes",
                                crate::secrets::MAX_SECRET_BYTES
                            ),
                            None,
                        );
                    }
                };
                // serde's message may quote the body: say where, not what.
                match serde_json::from_slice::<hatoba_api::SecretSetRequest>(&body) {
                    Ok(r) => self.set_secret(&name, r).await,
                    Err(e) => error(
                        StatusCode::BAD_REQUEST,
                        2,
                        &format!(
                            "bad secret request ({:?} at line {} column {})",
                            e.classify(),
                            e.line(),
                            e.column()
                        ),
                        None,
                    ),
                }
            }
            (Method::DELETE, ["v1", "secrets", name]) => {
                let name = (*name).to_owned();
                let body = Limited::new(req.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let by = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("by").and_then(|b| b.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| "cli".to_owned());
                self.remove_secret(&name, by).await
            }
            _ => error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no such endpoint: {}", hatoba_core::shown(&path)),
                None,
            ),
        }
    }

    /// Deploys the previous succeeded version (or `to`) again, recorded as a
    /// rollback of the current deployment. It goes through the service's
    /// strategy like any deployment.
    async fn rollback(
        self: Arc<Self>,
        name: &str,
        to: Option<String>,
        by: String,
    ) -> Response<Full<Bytes>> {
        let Ok(service) = name.parse::<ServiceName>() else {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{}` is not a service name", hatoba_core::shown(name)),
                None,
            );
        };
        // A deployment in progress (a canary, a blue-green switch whose old
        // colour is still warm, a watch after promotion): the previous
        // version still runs, so going back is aborting it, at once.
        if let Some(state) = self.services.get(&service).cloned() {
            let live = state
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some((Some(id), tx)) = live {
                let serving = state
                    .serving
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(|d| d.version.to_string());
                if let Some(v) = &to
                    && Some(v) != serving.as_ref()
                {
                    return error(
                        StatusCode::CONFLICT,
                        5,
                        &format!(
                            "deployment {id} of `{service}` is in progress; a rollback now can only return to {}",
                            serving.as_deref().unwrap_or("nothing")
                        ),
                        Some("`hatoba rollback SERVICE` without --to, or wait for it to end"),
                    );
                }
                let _ = tx
                    .send(Operator::Input(Input::Abort(format!(
                        "rolled back by {by} with `hatoba rollback`"
                    ))))
                    .await;
                return match self.store.deployment(&id).await {
                    Ok(Some(d)) => json(StatusCode::ACCEPTED, &api::deployment(&d)),
                    Ok(None) => error(
                        StatusCode::NOT_FOUND,
                        4,
                        &format!("no deployment {id}"),
                        None,
                    ),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None),
                };
            }
        }
        let history = match self
            .store
            .history(&hatoba_store::HistoryFilter {
                service: Some(service.clone()),
                environment: Some(self.environment.clone()),
                limit: 10_000,
            })
            .await
        {
            Ok(h) => h,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None),
        };
        let succeeded: Vec<&hatoba_store::Deployment> = history
            .iter()
            .filter(|d| d.status == hatoba_core::DeploymentStatus::Succeeded)
            .collect();
        let Some(current) = succeeded
            .iter()
            .max_by_key(|d| (d.finished_at, d.id.clone()))
            .copied()
        else {
            return error(
                StatusCode::CONFLICT,
                5,
                &format!("service `{service}` has no succeeded deployment to roll back from"),
                None,
            );
        };
        // The newest succeeded deployment of the version: a rollback runs it
        // with the variables it ran with.
        let mut skipped: Vec<String> = Vec::new();
        let target = match &to {
            Some(v) => succeeded
                .iter()
                .filter(|d| d.version.as_str() == v)
                .max_by_key(|d| (d.finished_at, d.id.clone())),
            // The previous version promoted on evidence: one a person
            // promoted past missing evidence is skipped (`--to` may still
            // name it).
            None => {
                let mut earlier: Vec<&&hatoba_store::Deployment> = succeeded
                    .iter()
                    .filter(|d| d.version != current.version)
                    .collect();
                earlier.sort_by_key(|d| std::cmp::Reverse((d.finished_at, d.id.clone())));
                let mut found = None;
                for d in earlier {
                    if skipped.iter().any(|v| v == d.version.as_str()) {
                        continue;
                    }
                    match without_evidence(self.store.as_ref(), &succeeded, &d.version).await {
                        Ok(None) => {
                            found = Some(d);
                            break;
                        }
                        Ok(Some(_)) => skipped.push(d.version.to_string()),
                        Err(e) => {
                            return error(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                1,
                                &error_chain(&e),
                                None,
                            );
                        }
                    }
                }
                found
            }
        };
        let Some(target) = target else {
            if let (None, Some(v)) = (&to, skipped.first()) {
                return error(
                    StatusCode::CONFLICT,
                    5,
                    &format!(
                        "`{service}` has no earlier version promoted on evidence: {} promoted without evidence",
                        skipped.join(", ")
                    ),
                    Some(
                        format!("`hatoba rollback {service} --to {v}` returns to it anyway")
                            .as_str(),
                    ),
                );
            }
            return match to {
                Some(v) => error(
                    StatusCode::NOT_FOUND,
                    4,
                    &format!("version `{v}` of `{service}` never succeeded here"),
                    Some("`hatoba history SERVICE` lists the versions"),
                ),
                None => error(
                    StatusCode::CONFLICT,
                    5,
                    &format!(
                        "`{service}` has no earlier version than {}",
                        current.version
                    ),
                    None,
                ),
            };
        };
        // A name declared a secret since then is not taken from `vars`:
        // the secret's version it ran with (or the newest) is.
        let secret_names = self.spec.secret_names(&self.environment);
        let r = hatoba_api::DeployRequest {
            service: service.to_string(),
            environment: None,
            version: target.version.to_string(),
            vars: target
                .vars
                .iter()
                .filter(|(k, _)| !secret_names.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            deployed_by: Some(by),
        };
        self.deploy(r, Some(current.id.clone()), Some(target.secrets.clone()))
            .await
    }

    async fn deploy(
        self: Arc<Self>,
        r: hatoba_api::DeployRequest,
        rollback_of: Option<DeploymentId>,
        pinned_secrets: Option<std::collections::BTreeMap<String, u64>>,
    ) -> Response<Full<Bytes>> {
        let Ok(service) = r.service.parse::<ServiceName>() else {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{}` is not a service name", hatoba_core::shown(&r.service)),
                None,
            );
        };
        let Some(state) = self.services.get(&service).cloned() else {
            let names: Vec<String> = self.services.keys().map(ToString::to_string).collect();
            return error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no service `{service}` in the spec"),
                Some(&format!("services: {}", names.join(", "))),
            );
        };
        if let Some(env) = &r.environment
            && env != self.environment.as_str()
        {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!(
                    "this server runs environment `{}`, not `{env}`",
                    self.environment
                ),
                Some("start `hatoba up --env ENV` for that environment"),
            );
        }
        let version = match r.version.parse::<Version>() {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, 2, &e.to_string(), None),
        };
        if let Some(bad) = r.vars.keys().find(|k| !hatoba_spec::is_variable_name(k)) {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!(
                    "`{}` is not a variable name (in `--set NAME=VALUE`)",
                    hatoba_core::shown(bad)
                ),
                Some("use letters, digits and `_`, not starting with a digit"),
            );
        }
        let secret_names = self.spec.secret_names(&self.environment);
        if let Some(name) = r.vars.keys().find(|k| secret_names.contains(*k)) {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!(
                    "`{name}` is declared a secret: `--set` would keep its value in plain text \
                     in the history"
                ),
                Some(&format!(
                    "store it with `hatoba secret set {name}` (the value on stdin), then deploy \
                     without `--set {name}=...`"
                )),
            );
        }
        let Some(svc) = self.services_spec().get(&service).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no service `{service}`"),
                None,
            );
        };
        // A value for a name the service never uses would be recorded and
        // do nothing: most often a misspelling. A rollback reruns what a
        // deployment recorded, whatever the spec uses now.
        if rollback_of.is_none() {
            let used = named_variables(&svc);
            if let Some(unused) = r.vars.keys().find(|k| !used.contains(*k)) {
                let near = hatoba_spec::suggest(unused, used.iter().map(String::as_str));
                let hint = match near {
                    Some(n) => format!("did you mean `{n}`?"),
                    None if used.is_empty() => format!("service `{service}` uses no ${{NAME}}"),
                    None => format!(
                        "`{service}` uses: {}",
                        used.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                return error(
                    StatusCode::BAD_REQUEST,
                    2,
                    &format!(
                        "`--set {}`: service `{service}` uses no ${{{}}} in its command, args, env or workingDir",
                        hatoba_core::shown(unused),
                        hatoba_core::shown(unused)
                    ),
                    Some(&hint),
                );
            }
        }
        let secrets = match self
            .deploy_secrets(&svc, &secret_names, pinned_secrets.as_ref())
            .await
        {
            Ok(s) => s,
            Err(answer) => return answer,
        };
        let (tx, rx) = mpsc::channel(8);
        // The supervisor finishes its round (a restart in progress) first.
        let ops = state.ops.lock().await;
        {
            let mut live = state.live.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((id, _)) = live.as_ref() {
                let id = id
                    .as_ref()
                    .map_or_else(|| "(being recorded)".to_owned(), ToString::to_string);
                return error(
                    StatusCode::CONFLICT,
                    5,
                    &format!("service `{service}` already has a deployment in progress: {id}"),
                    Some("wait for it (`hatoba status`), promote it or abort it"),
                );
            }
            *live = Some((None, tx));
        }
        let mut vars = self
            .spec
            .environments
            .get(&self.environment)
            .map(|e| e.variables.clone())
            .unwrap_or_default();
        // `hatoba up`'s own environment comes over the spec's variables, as
        // a shell's does for docker compose, and `--set` over both. Only the
        // names the service uses are taken, so a deployment records what it
        // ran with (a rollback reuses it) and nothing else.
        for name in named_variables(&svc) {
            if secret_names.contains(&name) {
                continue;
            }
            if let Ok(value) = std::env::var(&name) {
                vars.insert(name, value);
            }
        }
        vars.extend(r.vars);
        let current = state
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        drop(ops);
        let req = DeployRequest {
            service: service.clone(),
            environment: self.environment.clone(),
            svc,
            spec: self.spec.clone(),
            version,
            vars,
            secrets,
            base_dir: self.base_dir.clone(),
            spec_digest: self.spec_digest.clone(),
            deployed_by: r.deployed_by.unwrap_or_else(|| "cli".to_owned()),
            current,
            rollback_of,
            require_approval: self.requires_approval(),
        };
        let (created_tx, created_rx) = tokio::sync::oneshot::channel();
        let st = Arc::clone(&state);
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let me = Arc::clone(&self);
        let task = tokio::spawn(async move {
            // The row, once created, is passed on and remembered: an error
            // after it must still end the deployment in the history.
            let (recorded_tx, recorded_rx) = tokio::sync::oneshot::channel();
            let recorded = async {
                let d: Option<hatoba_store::Deployment> = recorded_rx.await.ok();
                let id = d.as_ref().map(|d| d.id.clone());
                if let Some(d) = d {
                    let _ = created_tx.send(d);
                }
                id
            };
            let (result, id) = tokio::join!(
                st.deployer.deploy_with(&req, rx, Some(recorded_tx)),
                recorded
            );
            match (&result, id) {
                (Ok((d, serving)), _) => {
                    log_end(d);
                    *st.serving.lock().unwrap_or_else(PoisonError::into_inner) = serving.clone();
                }
                (Err(e), Some(id)) => me.after_failed_rollout(&req.service, &st, id, e).await,
                (Err(_), None) => {}
            }
            *st.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
            let _ = result_tx.send(result);
        });
        self.keep_task(task);
        match created_rx.await {
            Ok(d) => {
                if let Some((id, _)) = state
                    .live
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    *id = Some(d.id.clone());
                }
                json(StatusCode::ACCEPTED, &api::deployment(&d))
            }
            Err(_) => match result_rx.await {
                Ok(Err(crate::DeployError::Store(hatoba_store::StoreError::Conflict {
                    live,
                    ..
                }))) => error(
                    StatusCode::CONFLICT,
                    5,
                    &format!("service `{service}` already has a deployment in progress: {live}"),
                    None,
                ),
                Ok(Err(e @ crate::DeployError::Interpolation(_))) => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    1,
                    &error_chain(&e),
                    Some(
                        "values come from `hatoba deploy --set NAME=VALUE`, `hatoba up`'s environment \
                         and the environment's `variables`; `hatoba validate` points at misspelt names",
                    ),
                ),
                Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, 1, &error_chain(&e), None),
                _ => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    1,
                    "the deployment ended before it was recorded",
                    None,
                ),
            },
        }
    }

    fn requires_approval(&self) -> bool {
        self.spec
            .environments
            .get(&self.environment)
            .is_some_and(|e| e.require_approval)
    }

    /// `hatoba approve`: starts a deployment that waits for approval, when
    /// the approver is not the one who deployed it. Audited either way.
    async fn approve(&self, id: &str, by: String) -> Response<Full<Bytes>> {
        let Ok(id) = id.parse::<DeploymentId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{}` is not a deployment id", hatoba_core::shown(id)),
                None,
            );
        };
        let deployment = match self.store.deployment(&id).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    4,
                    &format!("no deployment {id}"),
                    None,
                );
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None),
        };
        let audit = |outcome: hatoba_store::AuditOutcome, detail: String| hatoba_store::NewAudit {
            at: crate::clock_now(),
            actor: by.clone(),
            action: "approve".to_owned(),
            target: id.to_string(),
            outcome,
            detail: Some(detail),
        };
        if deployment.status != hatoba_core::DeploymentStatus::Pending {
            return error(
                StatusCode::CONFLICT,
                5,
                &format!(
                    "deployment {id} is {}, not waiting for approval",
                    deployment.status
                ),
                None,
            );
        }
        if deployment.deployed_by == by {
            let _ = self
                .store
                .record_audit(audit(
                    hatoba_store::AuditOutcome::Denied,
                    "the deployer cannot approve their own deployment".to_owned(),
                ))
                .await;
            return error(
                StatusCode::FORBIDDEN,
                5,
                &format!("{by} deployed {id} and cannot also approve it"),
                Some("someone else approves: `hatoba approve ID --as NAME`"),
            );
        }
        let tx = self.services.get(&deployment.service).and_then(|s| {
            s.live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .filter(|(live, _)| live.as_ref() == Some(&id))
                .map(|(_, tx)| tx.clone())
        });
        let Some(tx) = tx else {
            return error(
                StatusCode::CONFLICT,
                5,
                &format!("deployment {id} is not run by this server"),
                None,
            );
        };
        let _ = tx.send(Operator::Approve { by: by.clone() }).await;
        let _ = self
            .store
            .record_audit(audit(hatoba_store::AuditOutcome::Ok, "approved".to_owned()))
            .await;
        json(
            StatusCode::ACCEPTED,
            &serde_json::json!({"deployment": id.to_string(), "approved_by": by}),
        )
    }

    async fn service_detail(&self, name: &str) -> Response<Full<Bytes>> {
        let Some((service, state)) = name
            .parse::<ServiceName>()
            .ok()
            .and_then(|n| self.services.get(&n).cloned().map(|s| (n, s)))
        else {
            let names: Vec<String> = self.services.keys().map(ToString::to_string).collect();
            return error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no service `{}`", hatoba_core::shown(name)),
                Some(&format!("services: {}", names.join(", "))),
            );
        };
        let route = self.data_plane.table(service.as_str()).await;
        let in_route: std::collections::HashSet<std::net::SocketAddr> = route
            .iter()
            .flat_map(|r| r.groups.iter())
            .filter(|g| g.weight > 0)
            .flat_map(|g| g.backends.iter().copied())
            .collect();
        let (observed, restarts, crash_loop, next) = crate::supervisor::snapshot(&state);
        let listed = self.runtime.list(&service).await.unwrap_or_default();
        let instances = listed
            .iter()
            .map(|i| {
                let o = observed.get(&i.id.0);
                hatoba_api::InstanceInfo {
                    id: i.id.to_string(),
                    version: i.version.to_string(),
                    addr: i.addr.to_string(),
                    pid: i.pid,
                    state: i.state.to_string(),
                    in_route: in_route.contains(&i.addr),
                    ready: o.map(|o| o.ready),
                    last_probe: o.and_then(|o| o.last_probe.clone()),
                    rss_bytes: o.and_then(|o| o.usage).map(|u| u.rss_bytes),
                    cpu_seconds: o.and_then(|o| o.usage).map(|u| u.cpu_seconds),
                    log: i.log.as_ref().map(|p| p.display().to_string()),
                    started_at: i.started_at.to_rfc3339(),
                }
            })
            .collect();
        let serving = state
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|d| d.version.to_string());
        let live = state
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|(id, _)| id.as_ref().map(ToString::to_string));
        json(
            StatusCode::OK,
            &hatoba_api::ServiceDetail {
                api_version: hatoba_api::API_VERSION.to_owned(),
                service: service.to_string(),
                environment: self.environment.to_string(),
                serving_version: serving,
                live_deployment: live,
                instances,
                route: route
                    .map(|r| {
                        r.groups
                            .iter()
                            .map(|g| hatoba_api::RouteGroup {
                                role: g.role.as_str().to_owned(),
                                version: g.version.clone(),
                                weight: g.weight,
                                backends: g.backends.iter().map(ToString::to_string).collect(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                recent_restarts: restarts,
                problem: state
                    .problem
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
                crash_loop,
                next_restart: next.map(|m| m.to_rfc3339()),
            },
        )
    }

    async fn detail(&self, id: &str) -> Response<Full<Bytes>> {
        let Ok(id) = id.parse::<DeploymentId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{}` is not a deployment id", hatoba_core::shown(id)),
                None,
            );
        };
        match (
            self.store.deployment(&id).await,
            self.store.events(&id).await,
        ) {
            (Ok(Some(d)), Ok(events)) => json(
                StatusCode::OK,
                &hatoba_api::DeploymentDetail {
                    api_version: hatoba_api::API_VERSION.to_owned(),
                    deployment: api::deployment(&d),
                    events: events.iter().map(api::event).collect(),
                },
            ),
            (Ok(None), _) => error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no deployment {id}"),
                None,
            ),
            (Err(e), _) | (_, Err(e)) => {
                error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None)
            }
        }
    }

    async fn operate(&self, name: &str, action: &str, by: String) -> Response<Full<Bytes>> {
        let Some(state) = name
            .parse::<ServiceName>()
            .ok()
            .and_then(|n| self.services.get(&n).cloned())
        else {
            return error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no service `{}`", hatoba_core::shown(name)),
                None,
            );
        };
        let input = match action {
            "promote" => Operator::Promote { full: false, by },
            "promote-full" => Operator::Promote { full: true, by },
            "abort" => Operator::Input(Input::Abort(format!("aborted by {by}"))),
            other => {
                return error(
                    StatusCode::NOT_FOUND,
                    4,
                    &format!(
                        "no action `{}` (promote, promote-full, abort)",
                        hatoba_core::shown(other)
                    ),
                    None,
                );
            }
        };
        let live = state
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match live {
            Some((id, tx)) => {
                let _ = tx.send(input).await;
                let id = id.map(|i| i.to_string()).unwrap_or_default();
                json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({"deployment": id, "action": action}),
                )
            }
            None => error(
                StatusCode::CONFLICT,
                5,
                &format!("service `{name}` has no deployment in progress"),
                Some("`hatoba history` lists past deployments"),
            ),
        }
    }
}

/// Whether `version` was promoted without evidence: its latest judged
/// deployment (the newest succeeded one that is not a rollback; a rollback
/// skips the steps and judges nothing) carries a `promoted_without_evidence`
/// event. Returns what was missing.
pub async fn without_evidence(
    store: &dyn hatoba_store::Store,
    succeeded: &[&hatoba_store::Deployment],
    version: &hatoba_core::Version,
) -> Result<Option<String>, hatoba_store::StoreError> {
    let judged = succeeded
        .iter()
        .filter(|d| &d.version == version && d.rollback_of.is_none())
        .max_by_key(|d| (d.finished_at, d.id.clone()));
    let Some(d) = judged else {
        return Ok(None);
    };
    Ok(store
        .events(&d.id)
        .await?
        .into_iter()
        .find(|e| e.kind == hatoba_store::event_kind::PROMOTED_WITHOUT_EVIDENCE)
        .map(|e| e.message))
}

/// A deployment's end, as one log line with its facts as fields.
fn log_end(d: &hatoba_store::Deployment) {
    let reason = d.reason.as_deref().unwrap_or("");
    if d.status == hatoba_core::DeploymentStatus::Succeeded {
        tracing::info!(
            deployment = %d.id,
            service = %d.service,
            environment = %d.environment,
            version = %d.version,
            status = %d.status,
            "deployment ended"
        );
    } else {
        tracing::warn!(
            deployment = %d.id,
            service = %d.service,
            environment = %d.environment,
            version = %d.version,
            status = %d.status,
            reason,
            "deployment ended"
        );
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

/// Reads a request's JSON body strictly: too large is 413, and a body that
/// is not valid JSON or names a field the request does not have is 400
/// with serde's words (they name the field and where). `empty_ok`: no body
/// at all means the request's defaults.
async fn body_json<T: serde::de::DeserializeOwned + Default>(
    req: Request<hyper::body::Incoming>,
    what: &str,
    empty_ok: bool,
) -> Result<T, Response<Full<Bytes>>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                2,
                &format!("{what} request body too large (at most {MAX_BODY} bytes)"),
                None,
            ));
        }
    };
    if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<T>(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            2,
            &format!("bad {what} request: {e}"),
            None,
        )
    })
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(
    status: StatusCode,
    exit_code: u8,
    message: &str,
    hint: Option<&str>,
) -> Response<Full<Bytes>> {
    json(
        status,
        &hatoba_api::ErrorBody {
            exit_code,
            error: message.to_owned(),
            hint: hint.map(str::to_owned),
        },
    )
}

/// A fresh API token: 32 random bytes, hex.
pub fn new_token() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The variables (`${NAME}`) a service's runtime fields use, `VERSION` and
/// `PORT` aside (Hatoba sets those).
fn named_variables(svc: &hatoba_spec::Service) -> std::collections::BTreeSet<String> {
    variable_uses(svc)
        .into_keys()
        .filter(|n| n != "VERSION" && n != "PORT")
        .collect()
}

/// The variables a service's runtime fields use, each with whether every
/// use has a default (`${NAME:-...}`), so a missing value is no error.
fn variable_uses(svc: &hatoba_spec::Service) -> std::collections::BTreeMap<String, bool> {
    let texts: Vec<&String> = match &svc.runtime {
        hatoba_spec::Runtime::Process(p) => std::iter::once(&p.command)
            .chain(&p.args)
            .chain(p.env.values())
            .chain(&p.working_dir)
            .collect(),
        hatoba_spec::Runtime::Docker(d) => std::iter::once(&d.image)
            .chain(&d.args)
            .chain(d.env.values())
            .collect(),
    };
    let mut uses = std::collections::BTreeMap::new();
    for (name, has_default) in texts
        .into_iter()
        .filter_map(|t| hatoba_spec::variables(t).ok())
        .flatten()
    {
        let all = uses.entry(name).or_insert(true);
        *all = *all && has_default;
    }
    uses
}

/// Secrets: `hatoba secret set|rotate|rm|list` through the API (the server
/// is the only writer of the store), and the secrets a deployment runs
/// with. No value is ever put in an answer, an event, the audit log or a
/// message.
impl Server {
    /// The services of this environment whose spec uses `name`.
    fn secret_users(&self, name: &str) -> Vec<ServiceName> {
        let mut users: Vec<ServiceName> = self
            .services_spec()
            .into_iter()
            .filter(|(_, svc)| variable_uses(svc).contains_key(name))
            .map(|(n, _)| n)
            .collect();
        users.sort();
        users
    }

    /// Opens recorded secret versions again after a restart; what fails is
    /// reported and left without values (a restart of such an instance
    /// then fails, saying which variable is missing).
    async fn reopen_secrets(
        &self,
        service: &ServiceName,
        versions: &std::collections::BTreeMap<String, u64>,
        report: &mut Vec<String>,
    ) -> SecretEnv {
        let without_values = || SecretEnv {
            versions: versions.clone(),
            values: std::collections::BTreeMap::new(),
        };
        if versions.is_empty() {
            return SecretEnv::default();
        }
        let Some(key) = &self.secret_key else {
            report.push(format!(
                "{service}: runs with secrets but this server has no secret key; its instances can not be started again"
            ));
            return without_values();
        };
        match SecretEnv::open(key, &*self.store, &self.environment, versions).await {
            Ok(s) => s,
            Err(e) => {
                report.push(format!(
                    "{service}: cannot open its secrets ({}); its instances can not be started again",
                    error_chain(&e)
                ));
                without_values()
            }
        }
    }

    /// The secrets a deployment of `svc` runs with: of the declared ones it
    /// uses, the pinned version (a rollback: the one it ran with) or the
    /// newest, opened.
    async fn deploy_secrets(
        &self,
        svc: &hatoba_spec::Service,
        declared: &std::collections::BTreeSet<String>,
        pinned: Option<&std::collections::BTreeMap<String, u64>>,
    ) -> Result<SecretEnv, Response<Full<Bytes>>> {
        let used: Vec<(String, bool)> = variable_uses(svc)
            .into_iter()
            .filter(|(n, _)| declared.contains(n))
            .collect();
        if used.is_empty() {
            return Ok(SecretEnv::default());
        }
        let env = &self.environment;
        let Some(key) = &self.secret_key else {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                1,
                "the service uses secrets, but this server has no secret key",
                Some(
                    "start it with `hatoba up` (it creates STATE/secret.key) or set HATOBA_SECRET_KEY",
                ),
            ));
        };
        let stored = match self.store.secret_versions(Some(env)).await {
            Ok(v) => v,
            Err(e) => {
                return Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    1,
                    &error_chain(&e),
                    None,
                ));
            }
        };
        let mut chosen: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for v in stored {
            chosen.insert(v.name, v.version);
        }
        if let Some(p) = pinned {
            chosen.extend(p.iter().map(|(k, v)| (k.clone(), *v)));
        }
        let mut versions = std::collections::BTreeMap::new();
        for (name, optional) in used {
            match chosen.get(&name) {
                Some(v) => {
                    versions.insert(name, *v);
                }
                None if optional => {}
                None => {
                    return Err(error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        2,
                        &format!("secret `{name}` has no value in `{env}`"),
                        Some(&format!(
                            "store one with `hatoba secret set {name}` (the value on stdin or --from-file)"
                        )),
                    ));
                }
            }
        }
        SecretEnv::open(key, &*self.store, env, &versions)
            .await
            .map_err(|e| {
                let hint = match e {
                    crate::SecretError::WrongKey { .. } => {
                        "use the key it was stored with (STATE/secret.key or HATOBA_SECRET_KEY), or store the secret again"
                    }
                    crate::SecretError::Missing { .. } => {
                        "it was removed with `hatoba secret rm`; store it again, or deploy with the newest version"
                    }
                    _ => "store the secret again with `hatoba secret set`",
                };
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    1,
                    &error_chain(&e),
                    Some(hint),
                )
            })
    }

    /// A secret name from a URL, checked.
    fn secret_name(&self, name: &str) -> Result<String, Box<Response<Full<Bytes>>>> {
        if hatoba_spec::is_variable_name(name) {
            Ok(name.to_owned())
        } else {
            Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{}` is not a secret name", hatoba_core::shown(name)),
                Some("secrets are variable names: letters, digits and `_`"),
            )))
        }
    }

    async fn audit_secret(&self, by: &str, action: &str, name: &str, detail: String) {
        let _ = self
            .store
            .record_audit(hatoba_store::NewAudit {
                at: crate::clock_now(),
                actor: by.to_owned(),
                action: action.to_owned(),
                target: format!("secret {name} in {}", self.environment),
                outcome: hatoba_store::AuditOutcome::Ok,
                detail: Some(detail),
            })
            .await;
    }

    /// `GET /v1/secrets`.
    async fn list_secrets(&self) -> Response<Full<Bytes>> {
        let stored = match self.store.secret_versions(Some(&self.environment)).await {
            Ok(v) => v,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None),
        };
        let declared = self.spec.secret_names(&self.environment);
        let mut names: std::collections::BTreeSet<String> = declared.clone();
        names.extend(stored.iter().map(|v| v.name.clone()));
        let secrets = names
            .into_iter()
            .map(|name| hatoba_api::SecretInfo {
                declared: declared.contains(&name),
                used_by: self
                    .secret_users(&name)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                versions: stored
                    .iter()
                    .filter(|v| v.name == name)
                    .map(|v| hatoba_api::SecretVersionInfo {
                        version: v.version,
                        created_at: v.created_at.to_rfc3339(),
                        created_by: v.created_by.clone(),
                    })
                    .collect(),
                name,
            })
            .collect();
        json(
            StatusCode::OK,
            &hatoba_api::SecretList {
                api_version: hatoba_api::API_VERSION.to_owned(),
                environment: self.environment.to_string(),
                secrets,
            },
        )
    }

    /// `PUT /v1/secrets/{name}`: a new version; with `rotate`, the
    /// services that use it are deployed again (same version, new secret)
    /// through their strategy.
    async fn set_secret(
        self: Arc<Self>,
        name: &str,
        r: hatoba_api::SecretSetRequest,
    ) -> Response<Full<Bytes>> {
        let name = match self.secret_name(name) {
            Ok(n) => n,
            Err(answer) => return *answer,
        };
        let env = self.environment.clone();
        if let Some(e) = &r.environment
            && e != env.as_str()
        {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("this server runs environment `{env}`, not `{e}`"),
                Some("use the --state-dir of the `hatoba up --env ENV` for that environment"),
            );
        }
        if !self.spec.secret_names(&env).contains(&name) {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{name}` is not declared a secret for `{env}`"),
                Some(
                    "add it to `secrets:` in the spec (top level, or the environment's), then restart `hatoba up`",
                ),
            );
        }
        let value = hatoba_core::SecretValue::new(r.value);
        if value.is_empty() || value.len() > crate::secrets::MAX_SECRET_BYTES {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!(
                    "a secret's value is 1 to {} bytes; found {}",
                    crate::secrets::MAX_SECRET_BYTES,
                    value.len()
                ),
                Some("give the value on stdin or with --from-file"),
            );
        }
        if value.expose().contains('\0') {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                "a secret's value can not contain a NUL byte (it goes into an environment variable)",
                None,
            );
        }
        let Some(key) = self.secret_key.clone() else {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                1,
                "this server has no secret key",
                Some("`hatoba up` creates STATE/secret.key, or set HATOBA_SECRET_KEY"),
            );
        };
        let by = r.by.clone().unwrap_or_else(|| "cli".to_owned());
        let version = {
            let _one = self.secret_writes.lock().await;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let newest = match self.store.secret_versions(Some(&env)).await {
                    Ok(v) => v
                        .iter()
                        .filter(|v| v.name == name)
                        .map(|v| v.version)
                        .max()
                        .unwrap_or(0),
                    Err(e) => {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None);
                    }
                };
                let version = newest + 1;
                let sealed = match key.seal(&env, &name, version, &value, crate::clock_now(), &by) {
                    Ok(s) => s,
                    Err(e) => {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None);
                    }
                };
                match self.store.put_secret(sealed).await {
                    Ok(()) => break version,
                    Err(hatoba_store::StoreError::SecretVersionTaken { .. }) if attempt < 3 => {}
                    Err(e) => {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None);
                    }
                }
            }
        };
        drop(value);
        let action = if r.rotate {
            "secret rotate"
        } else {
            "secret set"
        };
        self.audit_secret(&by, action, &name, format!("version {version}"))
            .await;
        let users = self.secret_users(&name);
        let mut change = hatoba_api::SecretChange {
            name: name.clone(),
            environment: env.to_string(),
            version: Some(version),
            removed: None,
            deployments: Vec::new(),
            next_deploy: Vec::new(),
        };
        for service in users {
            let Some(state) = self.services.get(&service).cloned() else {
                continue;
            };
            let serving = state
                .serving
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let live = state
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some();
            let (true, Some(serving), false) = (r.rotate, serving, live) else {
                change.next_deploy.push(service.to_string());
                continue;
            };
            let declared = self.spec.secret_names(&env);
            let request = hatoba_api::DeployRequest {
                service: service.to_string(),
                environment: None,
                version: serving.version.to_string(),
                vars: serving
                    .vars
                    .iter()
                    .filter(|(k, _)| !declared.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                deployed_by: Some(by.clone()),
            };
            let answer = Arc::clone(&self).deploy(request, None, None).await;
            let ok = answer.status().is_success();
            let body = answer
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            match serde_json::from_slice::<hatoba_api::Deployment>(&body) {
                Ok(d) if ok => {
                    // Why the same version is deployed again (names and
                    // versions only).
                    if let Ok(id) = d.id.parse::<DeploymentId>() {
                        let _ = self
                            .store
                            .append_event(
                                &id,
                                hatoba_store::NewEvent::of(
                                    crate::clock_now(),
                                    &hatoba_core::Event::SecretRotated {
                                        secret: name.to_string(),
                                        version,
                                        by: Some(by.clone()),
                                    },
                                    None,
                                ),
                            )
                            .await;
                    }
                    change.deployments.push(d);
                }
                _ => {
                    let why = serde_json::from_slice::<hatoba_api::ErrorBody>(&body)
                        .map(|e| e.error)
                        .unwrap_or_else(|_| "the deployment did not start".to_owned());
                    change.next_deploy.push(format!("{service} ({why})"));
                }
            }
        }
        json(StatusCode::OK, &change)
    }

    /// `DELETE /v1/secrets/{name}`: every version of it in this environment.
    async fn remove_secret(&self, name: &str, by: String) -> Response<Full<Bytes>> {
        let name = match self.secret_name(name) {
            Ok(n) => n,
            Err(answer) => return *answer,
        };
        let removed = {
            let _one = self.secret_writes.lock().await;
            match self.store.remove_secret(&self.environment, &name).await {
                Ok(n) => n,
                Err(e) => {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, 1, &error_chain(&e), None);
                }
            }
        };
        if removed == 0 {
            return error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no secret `{name}` is stored in `{}`", self.environment),
                Some("`hatoba secret list` shows what is stored"),
            );
        }
        self.audit_secret(&by, "secret rm", &name, format!("{removed} version(s)"))
            .await;
        json(
            StatusCode::OK,
            &hatoba_api::SecretChange {
                name: name.clone(),
                environment: self.environment.to_string(),
                version: None,
                removed: Some(removed),
                deployments: Vec::new(),
                next_deploy: self
                    .secret_users(&name)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
        )
    }
}
