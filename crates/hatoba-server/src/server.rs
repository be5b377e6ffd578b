//! `hatoba up`: the long-running server for one environment of one spec.
//!
//! It owns a proxy listener per service (the spec's route), one `Deployer`
//! per service, the history store, and a small JSON API on loopback that the
//! CLI talks to (`POST /v1/deployments`, `GET /v1/deployments/{id}`,
//! `POST /v1/services/{name}/promote|promote-full|abort`, `GET /v1/health`),
//! guarded by a bearer token kept in the state directory.
//!
//! One deployment per service at a time: a second is refused with 409 and
//! the id of the one in progress (not queued).
//!
//! Not built yet: re-adopting instances after a restart (services start
//! empty), the proxy as a separate process, RBAC beyond the token.

use crate::api;
use crate::deployer::{DeployRequest, Deployed, Deployer};
use bytes::Bytes;
use hatoba_core::{DeploymentId, EnvName, ServiceName, Version};
use hatoba_metrics::Recorder;
use hatoba_proxy::{ProxyOptions, ProxyServer, RouteSpec, Router};
use hatoba_rollout::Input;
use hatoba_runtime::Runtime;
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

struct ServiceState {
    deployer: Deployer,
    serving: Mutex<Option<Deployed>>,
    /// The deployment in progress (its id once recorded) and its operator channel.
    live: Mutex<Option<(Option<DeploymentId>, mpsc::Sender<Input>)>>,
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
    proxies: Mutex<Vec<ProxyServer>>,
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
    /// Shared by every proxy listener.
    pub recorder: Arc<Recorder>,
    /// The API's bearer token.
    pub token: String,
}

impl Server {
    /// Starts a proxy listener per service; no instance runs yet.
    pub fn start(cfg: ServerConfig) -> Result<Arc<Server>, StartError> {
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
        let mut services = HashMap::new();
        let mut proxies = Vec::new();
        for (name, svc) in &services_spec {
            let router = Arc::new(
                Router::new(
                    RouteSpec {
                        service: name.to_string(),
                        groups: vec![],
                        sticky: false,
                    },
                    Arc::clone(&cfg.recorder),
                )
                .map_err(|e| StartError::Listen {
                    service: name.to_string(),
                    addr: svc.route.listen.to_string(),
                    source: std::io::Error::other(e),
                })?,
            );
            let listen = svc.route.listen.to_string();
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&listen)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| StartError::Listen {
                    service: name.to_string(),
                    addr: listen.clone(),
                    source: std::io::Error::other("cannot resolve the address"),
                })?;
            let proxy = ProxyServer::start(addr, Arc::clone(&router), ProxyOptions::default(), 0)
                .map_err(|source| StartError::Listen {
                service: name.to_string(),
                addr: listen.clone(),
                source,
            })?;
            proxies.push(proxy);
            let deployer = Deployer::new(
                Arc::clone(&cfg.store),
                Arc::clone(&cfg.runtime),
                router,
                Arc::clone(&cfg.recorder),
            );
            services.insert(
                name.clone(),
                Arc::new(ServiceState {
                    deployer,
                    serving: Mutex::new(None),
                    live: Mutex::new(None),
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
            proxies: Mutex::new(proxies),
        }))
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
    pub async fn serve_api(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let me = Arc::clone(&self);
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let me = Arc::clone(&me);
                            async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
            }
        }
    }

    /// Stops every instance (gracefully) and every listener.
    pub async fn shutdown(&self, keep_running: bool) {
        for state in self.services.values() {
            if let Some((_, tx)) = state
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                let _ = tx.try_send(Input::Abort("the server is shutting down".to_owned()));
            }
        }
        if !keep_running {
            for (name, svc) in self.services_spec() {
                if let Ok(list) = self.runtime.list(&name).await {
                    for i in list {
                        let _ = self.runtime.stop(&i.id, svc.termination_grace_period).await;
                    }
                }
            }
        }
        let proxies =
            std::mem::take(&mut *self.proxies.lock().unwrap_or_else(PoisonError::into_inner));
        for p in proxies {
            p.shutdown();
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
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            2,
                            "request body too large",
                            None,
                        );
                    }
                };
                match serde_json::from_slice::<hatoba_api::DeployRequest>(&body) {
                    Ok(r) => self.deploy(r, None).await,
                    Err(e) => error(
                        StatusCode::BAD_REQUEST,
                        2,
                        &format!("bad deploy request: {e}"),
                        None,
                    ),
                }
            }
            (Method::GET, ["v1", "deployments", id]) => self.detail(id).await,
            (Method::POST, ["v1", "services", name, "rollback"]) => {
                let body = Limited::new(req.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let to = serde_json::from_slice::<hatoba_api::RollbackRequest>(&body)
                    .ok()
                    .and_then(|r| r.to);
                let name = (*name).to_owned();
                self.rollback(&name, to).await
            }
            (Method::POST, ["v1", "services", name, action]) => self.operate(name, action).await,
            _ => error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no such endpoint: {path}"),
                None,
            ),
        }
    }

    /// Deploys the previous succeeded version (or `to`) again, recorded as a
    /// rollback of the current deployment. It goes through the service's
    /// strategy like any deployment.
    async fn rollback(self: Arc<Self>, name: &str, to: Option<String>) -> Response<Full<Bytes>> {
        let Ok(service) = name.parse::<ServiceName>() else {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{name}` is not a service name"),
                None,
            );
        };
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
        let target = match &to {
            Some(v) => succeeded
                .iter()
                .find(|d| d.version.as_str() == v)
                .map(|d| d.version.clone()),
            None => succeeded
                .iter()
                .filter(|d| d.version != current.version)
                .max_by_key(|d| (d.finished_at, d.id.clone()))
                .map(|d| d.version.clone()),
        };
        let Some(target) = target else {
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
        let r = hatoba_api::DeployRequest {
            service: service.to_string(),
            environment: None,
            version: target.to_string(),
            vars: Default::default(),
            deployed_by: None,
        };
        self.deploy(r, Some(current.id.clone())).await
    }

    async fn deploy(
        self: Arc<Self>,
        r: hatoba_api::DeployRequest,
        rollback_of: Option<DeploymentId>,
    ) -> Response<Full<Bytes>> {
        let Ok(service) = r.service.parse::<ServiceName>() else {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{}` is not a service name", r.service),
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
        if self
            .spec
            .environments
            .get(&self.environment)
            .is_some_and(|e| e.require_approval)
        {
            // Never deploy past an approval rule that is not enforced yet.
            return error(
                StatusCode::NOT_IMPLEMENTED,
                6,
                &format!(
                    "environment `{}` requires approval, and approvals (`hatoba approve`) are not built yet",
                    self.environment
                ),
                Some(
                    "deploy to an environment without `requireApproval`, or remove it from the spec knowingly",
                ),
            );
        }
        let version = match r.version.parse::<Version>() {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, 2, &e.to_string(), None),
        };
        let Some(svc) = self.services_spec().get(&service).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no service `{service}`"),
                None,
            );
        };
        let (tx, rx) = mpsc::channel(8);
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
        vars.extend(r.vars);
        let current = state
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let req = DeployRequest {
            service: service.clone(),
            environment: self.environment.clone(),
            svc,
            spec: self.spec.clone(),
            version,
            vars,
            base_dir: self.base_dir.clone(),
            spec_digest: self.spec_digest.clone(),
            deployed_by: r.deployed_by.unwrap_or_else(|| "cli".to_owned()),
            current,
            rollback_of,
        };
        let (created_tx, created_rx) = tokio::sync::oneshot::channel();
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let result = st.deployer.deploy_with(&req, rx, Some(created_tx)).await;
            if let Ok((_, serving)) = &result {
                *st.serving.lock().unwrap_or_else(PoisonError::into_inner) = serving.clone();
            }
            *st.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
            result
        });
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
            Err(_) => match task.await {
                Ok(Err(crate::DeployError::Store(hatoba_store::StoreError::Conflict {
                    live,
                    ..
                }))) => error(
                    StatusCode::CONFLICT,
                    5,
                    &format!("service `{service}` already has a deployment in progress: {live}"),
                    None,
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

    async fn detail(&self, id: &str) -> Response<Full<Bytes>> {
        let Ok(id) = id.parse::<DeploymentId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                2,
                &format!("`{id}` is not a deployment id"),
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

    async fn operate(&self, name: &str, action: &str) -> Response<Full<Bytes>> {
        let Some(state) = name
            .parse::<ServiceName>()
            .ok()
            .and_then(|n| self.services.get(&n).cloned())
        else {
            return error(
                StatusCode::NOT_FOUND,
                4,
                &format!("no service `{name}`"),
                None,
            );
        };
        let input = match action {
            "promote" => Input::Promote,
            "promote-full" => Input::PromoteFull,
            "abort" => Input::Abort("aborted by an operator".to_owned()),
            other => {
                return error(
                    StatusCode::NOT_FOUND,
                    4,
                    &format!("no action `{other}` (promote, promote-full, abort)"),
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

fn error_chain(e: &dyn std::error::Error) -> String {
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
