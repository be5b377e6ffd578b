//! The API of `hatoba up`, one environment or several (and of
//! `Server::serve_api`, one server on its own): every route of
//! `routes`, once per environment's server, and in front of them the
//! choice of which one answers a request (one environment: its server,
//! unless `?env=` names another, which is refused). The environment comes from the
//! request: `?env=ENV`, or the body's `environment` (deploy, secret set);
//! a deployment's id names its own (a `?env=` naming another is a 404
//! saying where the deployment is); the history (`GET /api/v1/deployments`)
//! is the shared store's and `status` is put together from every
//! environment (`reads::status_of_several`); otherwise the rule of
//! `ops::pick_environment` (the only environment with the named service,
//! or a bad input listing them). The token is checked first, so a request
//! without it learns nothing (the chosen server's guard answers it).

use super::MAX_BODY;
use super::auth::{PUBLIC, authorized};
use super::error::Failure;
use crate::server::Environments;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use std::convert::Infallible;
use std::sync::Arc;

/// The router of several environments.
pub(crate) fn app(
    environments: Arc<Environments>,
) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let apps: Arc<Vec<tower::util::BoxCloneSyncService<Request, Response, Infallible>>> = Arc::new(
        environments
            .servers()
            .iter()
            .map(|s| tower::util::BoxCloneSyncService::new(super::routes::app(Arc::clone(s))))
            .collect(),
    );
    tower::service_fn(move |req: Request| {
        let environments = Arc::clone(&environments);
        let apps = Arc::clone(&apps);
        async move {
            if req.method() == Method::GET
                && req.uri().path() == "/api/v1/environments"
                && environments
                    .servers()
                    .first()
                    .is_some_and(|s| authorized(req.headers(), &s.token))
            {
                return Ok(
                    axum::Json(super::routes::environment_list(environments.servers()))
                        .into_response(),
                );
            }
            // A reload is of every environment at once.
            if environments.several()
                && req.method() == Method::POST
                && req.uri().path() == "/api/v1/reload"
                && environments
                    .servers()
                    .first()
                    .is_some_and(|s| authorized(req.headers(), &s.token))
            {
                return Ok(
                    super::routes::reload_environments(&environments, req.into_body()).await,
                );
            }
            if super::reads::is_status_of_several(environments.servers(), &req) {
                let uri = req.uri().clone();
                return Ok(super::reads::status_of_several(environments.servers(), &uri).await);
            }
            let (req, target) = match choose(&environments, req).await {
                Ok(chosen) => chosen,
                Err(f) => return Ok(f.into_response()),
            };
            let Some(app) = apps.get(target).or_else(|| apps.first()).cloned() else {
                return Ok(
                    Failure::new(hatoba_api::ErrorKind::Failed, "no environment runs")
                        .into_response(),
                );
            };
            tower::ServiceExt::oneshot(app, req).await
        }
    })
}

/// What a request names: `?env=`, and in the body of a deploy or a secret
/// set, `environment` and `service`.
struct Named {
    env: Option<String>,
    service: Option<String>,
}

/// The index of the server that answers `req` (with `req`, its body read
/// back in when it had to be looked at).
async fn choose(environments: &Environments, req: Request) -> Result<(Request, usize), Failure> {
    let servers = environments.servers();
    let path = req.uri().path().to_owned();
    let Some(first) = servers.first() else {
        return Ok((req, 0));
    };
    if PUBLIC.contains(&path.as_str()) || !authorized(req.headers(), &first.token) {
        return Ok((req, 0));
    }
    // A path or method no route takes is the router's 404 or 405, whatever
    // environment it names.
    if !has_route(req.method(), &path) {
        return Ok((req, 0));
    }
    let query_env = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "env")
            .map(|(_, v)| v.to_owned())
    });
    // One environment: its operations check the body's own.
    let with_body = servers.len() > 1
        && ((req.method() == Method::POST && path == "/api/v1/deployments")
            || (req.method() == Method::PUT && path.starts_with("/api/v1/secrets/")));
    let (req, body) = if with_body {
        read_some(req).await
    } else {
        (
            req,
            Named {
                env: None,
                service: None,
            },
        )
    };
    let named = match (query_env, body.env) {
        (Some(q), Some(b)) if q != b => {
            return Err(Failure::new(
                hatoba_api::ErrorKind::BadInput,
                format!(
                    "the request names two environments: `{}` (?env=) and `{}` (environment)",
                    hatoba_core::shown(&q),
                    hatoba_core::shown(&b)
                ),
            ));
        }
        (q, b) => q.or(b),
    };
    let segments: Vec<&str> = path
        .strip_prefix("/api/v1/")
        .unwrap_or("")
        .split('/')
        .collect();
    match segments.as_slice() {
        // A deployment names its environment; a request that names one
        // too must name the same (and one the server runs).
        ["deployments", id, ..] => {
            let run = runs(servers);
            let named_at = named
                .as_deref()
                .map(|n| crate::ops::pick_environment(&run, Some(n), None))
                .transpose()?;
            let recorded = match id.parse::<hatoba_core::DeploymentId>() {
                Ok(id) => first
                    .store
                    .deployment(&id)
                    .await
                    .ok()
                    .flatten()
                    .map(|d| d.environment),
                Err(_) => None,
            };
            match (named_at, recorded) {
                (Some(at), Some(env)) if servers[at].environment != env => {
                    Err(crate::ops::OpError::not_found(format!(
                        "deployment {} is in environment `{env}`, not `{}`",
                        hatoba_core::shown(id),
                        servers[at].environment
                    ))
                    .hint(format!("ask with `?env={env}`, or without `?env=`"))
                    .into())
                }
                (Some(at), _) => Ok((req, at)),
                (None, env) => Ok((
                    req,
                    env.and_then(|e| servers.iter().position(|s| s.environment == e))
                        .unwrap_or(0),
                )),
            }
        }
        // The history is the store's, which every environment shares.
        ["deployments"] if req.method() == Method::GET => Ok((req, 0)),
        ["deployments"] | ["services", ..] | ["secrets", ..] => {
            let service = match segments.as_slice() {
                ["services", name, ..] => Some((*name).to_owned()),
                _ => body.service,
            };
            let target =
                crate::ops::pick_environment(&runs(servers), named.as_deref(), service.as_deref())?;
            Ok((req, target))
        }
        _ => Ok((req, 0)),
    }
}

/// Each environment the servers run, with its services: what
/// `ops::pick_environment` chooses from.
fn runs(
    servers: &[Arc<crate::Server>],
) -> Vec<(hatoba_core::EnvName, Vec<hatoba_core::ServiceName>)> {
    servers
        .iter()
        .map(|s| (s.environment.clone(), s.service_names()))
        .collect()
}

/// Whether the API has a route for `method` on `path`, from its OpenAPI
/// document (generated from the handlers, so it lists every route).
fn has_route(method: &Method, path: &str) -> bool {
    type Routes = Vec<(Vec<String>, Vec<String>)>;
    static ROUTES: std::sync::OnceLock<Routes> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let doc: serde_json::Value =
            serde_json::from_str(&super::openapi::json()).unwrap_or_default();
        doc["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(template, ops)| {
                        (
                            template.split('/').map(str::to_owned).collect(),
                            ops.as_object()
                                .map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect())
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let segments: Vec<&str> = path.split('/').collect();
    routes.iter().any(|(template, methods)| {
        template.len() == segments.len()
            && template
                .iter()
                .zip(&segments)
                .all(|(t, s)| (t.starts_with('{') && t.ends_with('}')) || t == s)
            && methods.iter().any(|m| m == method.as_str())
    })
}

/// Reads the body (up to one byte more than the API takes, so the handler
/// still sees one too large) and what it names; the request goes on with
/// the same bytes.
async fn read_some(req: Request) -> (Request, Named) {
    let (parts, mut body) = req.into_parts();
    let mut bytes = Vec::new();
    while bytes.len() <= MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            // A body that breaks off: the handler reads what came, and
            // says what is wrong with it.
            Some(Err(_)) | None => break,
        }
    }
    let value: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let named = Named {
        env: field("environment"),
        service: field("service"),
    };
    (Request::from_parts(parts, Body::from(bytes)), named)
}
