//! The routes of the API v1 and their handlers. A handler reads the
//! request (path, strict JSON body), calls one operation of `ops` and
//! answers its result; it decides nothing. Each carries its
//! `#[utoipa::path]`, the source of `docs/openapi.json`: what it takes and
//! every answer it can give, errors included.

use super::MAX_BODY;
use super::auth::require_token;
use super::error::{Failure, no_such_endpoint, one_shape, trace_request};
use super::reads;
use crate::ops::Action;
use crate::server::Server;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use hatoba_api::{
    ApiError, Approval, ApproveRequest, DeployRequest, Deployment, DeploymentDetail,
    EnvironmentList, ErrorKind, Health, OperatorAction, PromoteRequest, ReloadRequest,
    RollbackRequest, SecretChange, SecretList, SecretRemoveRequest, SecretSetRequest,
    ServiceDetail, ServiceList, SpecReload,
};
use std::sync::Arc;

type Shared = State<Arc<Server>>;

/// The API: its router, every route behind the token check (but
/// `auth::PUBLIC`), and around all of it the rewriting of every error
/// answer into the one shape (outside the router, so it sees what axum
/// adds on its own, such as a 405's `Allow`).
pub(crate) fn app(
    server: Arc<Server>,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let shaped = tower::Layer::layer(&axum::middleware::from_fn(one_shape), router(&server));
    tower::Layer::layer(&axum::middleware::from_fn(trace_request), shaped)
}

/// The routes, behind the token check.
fn router(server: &Arc<Server>) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi_document))
        .route("/api/v1/deployments", get(reads::history).post(deploy))
        .route("/api/v1/deployments/{id}", get(deployment))
        .route("/api/v1/deployments/{id}/analysis", get(reads::analysis))
        .route("/api/v1/status", get(reads::status))
        .route("/api/v1/services/{name}/diagnosis", get(reads::diagnosis))
        .route("/api/v1/services/{name}/logs", get(reads::logs))
        .route("/api/v1/deployments/{id}/approve", post(approve))
        .route("/api/v1/environments", get(environments))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{name}", get(service))
        .route("/api/v1/services/{name}/rollback", post(rollback))
        .route("/api/v1/services/{name}/promote", post(promote))
        .route("/api/v1/services/{name}/promote-full", post(promote_full))
        .route("/api/v1/services/{name}/abort", post(abort))
        .route("/api/v1/events", get(super::stream::events))
        .route("/api/v1/secrets", get(list_secrets))
        .route(
            "/api/v1/secrets/{name}",
            put(set_secret).delete(remove_secret),
        )
        .fallback(no_such_endpoint)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(server),
            require_token,
        ))
        .with_state(Arc::clone(server))
}

/// Reads a request body of at most [`MAX_BODY`] bytes; `too_large` is the
/// message of a longer one.
async fn read_body(body: Body, too_large: impl FnOnce() -> String) -> Result<Vec<u8>, Failure> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| Failure::new(ErrorKind::TooLarge, too_large()))
}

/// Reads a request's JSON body strictly: too large is 413, and a body that
/// is not valid JSON or names a field the request does not have is 400
/// with serde's words (they name the field and where). `empty_ok`: no body
/// at all means the request's defaults.
async fn read_json<T: serde::de::DeserializeOwned + Default>(
    body: Body,
    what: &str,
    empty_ok: bool,
) -> Result<T, Failure> {
    let body = read_body(body, || {
        format!("{what} request body too large (at most {MAX_BODY} bytes)")
    })
    .await?;
    if empty_ok && body.is_empty() {
        return Ok(T::default());
    }
    an_object(&body, what)?;
    serde_json::from_slice::<T>(&body).map_err(|e| {
        Failure::new(ErrorKind::BadInput, format!("bad {what} request: {e}")).field(field_of(&e))
    })
}

/// serde reads a struct from an array too (`[]` as all defaults): the
/// API's bodies are objects, as its document says, and anything else is
/// refused before serde sees it.
fn an_object(body: &[u8], what: &str) -> Result<(), Failure> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(());
    }
    Err(Failure::new(
        ErrorKind::BadInput,
        format!("bad {what} request: the body must be a JSON object (`{{...}}`)"),
    ))
}

/// The field serde's error names, when it names one.
fn field_of(e: &serde_json::Error) -> Option<String> {
    let text = e.to_string();
    ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned)
}

#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "server",
    summary = "whether the server answers",
    security(()),
    responses((status = 200, description = "the server runs", body = Health)),
)]
pub(crate) async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "server",
    summary = "this document",
    security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document of the API", content_type = "application/json", body = Object)),
)]
pub(crate) async fn openapi_document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::json(),
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/deployments",
    tag = "deployments",
    summary = "deploy a version of a service through its strategy",
    request_body = DeployRequest,
    responses(
        (status = 202, description = "recorded; the rollout runs on", body = Deployment),
        (status = 400, description = "a malformed body, an unknown field, a bad name or version, a variable the service does not use, an environment the server does not run or none when it is ambiguous", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such service", body = ApiError),
        (status = 409, description = "a deployment of the service is in progress (one whose end is already recorded is waited for, up to 5 s, while its task lets go of the service)", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
        (status = 422, description = "the deployment could not start (a variable without a value, a secret that cannot be opened)", body = ApiError),
        (status = 503, description = "the history store cannot be read or written", body = ApiError),
    ),
)]
pub(crate) async fn deploy(
    State(s): Shared,
    body: Body,
) -> Result<(StatusCode, Json<Deployment>), Failure> {
    let r = read_json::<DeployRequest>(body, "deploy", false).await?;
    Ok((StatusCode::ACCEPTED, Json(s.deploy(r).await?)))
}

#[utoipa::path(
    get,
    path = "/api/v1/deployments/{id}",
    tag = "deployments",
    summary = "a deployment and its events",
    params(
        ("id" = String, Path, description = "a deployment id, `d-...`"),
        ("env" = Option<String>, Query, description = "the environment the deployment is in; none needed (its id names it)"),
    ),
    responses(
        (status = 200, description = "the deployment", body = DeploymentDetail),
        (status = 400, description = "not a deployment id, or `env` names an environment the server does not run", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such deployment, or it is in another environment than `env` (named in the message)", body = ApiError),
        (status = 503, description = "the history store cannot be read", body = ApiError),
    ),
)]
pub(crate) async fn deployment(
    State(s): Shared,
    Path(id): Path<String>,
) -> Result<Json<DeploymentDetail>, Failure> {
    Ok(Json(s.deployment_detail(&id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/deployments/{id}/approve",
    tag = "deployments",
    summary = "approve a deployment that waits for it",
    params(
        ("id" = String, Path, description = "a deployment id, `d-...`"),
        ("env" = Option<String>, Query, description = "the environment the deployment is in; none needed (its id names it)"),
    ),
    request_body = ApproveRequest,
    responses(
        (status = 202, description = "the approval was passed on; the deployment starts", body = Approval),
        (status = 400, description = "a malformed body or id, or `env` names an environment the server does not run", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "the deployer cannot approve their own deployment", body = ApiError),
        (status = 404, description = "no such deployment, or it is in another environment than `env` (named in the message)", body = ApiError),
        (status = 409, description = "the deployment does not wait for approval here", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
        (status = 503, description = "the history store cannot be read", body = ApiError),
    ),
)]
pub(crate) async fn approve(
    State(s): Shared,
    Path(id): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Approval>), Failure> {
    let a = read_json::<ApproveRequest>(body, "approve", false).await?;
    Ok((StatusCode::ACCEPTED, Json(s.approve(&id, a.by).await?)))
}

#[utoipa::path(
    post,
    path = "/api/v1/reload",
    tag = "server",
    summary = "read the spec file again; the next operations run by it",
    description = "Checked whole, then applied to every environment the server runs, or to none. Deployments in progress keep the spec they started with; what serves is supervised by the spec it was deployed with until its next deployment. New services listen (nothing deployed); a moved listener opens on its new address before the old one stops accepting. The new digest is recorded with every deployment from now on, and the reload in the audit log.",
    request_body(content = Option<ReloadRequest>, description = "may be absent"),
    responses(
        (status = 200, description = "the new spec runs; what changed", body = SpecReload),
        (status = 400, description = "the file cannot be read or is not a valid spec (the message has the diagnostics with file:line:col), drops an environment the server runs, puts two environments on one address, or has an address that does not resolve; a malformed body. Nothing changed", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 409, description = "the spec removes a service that still runs, or drops a preview address during a deployment of its service. Nothing changed", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
        (status = 422, description = "a new or moved listener could not be opened (what was opened is closed again). Nothing changed", body = ApiError),
        (status = 503, description = "the server was started without a spec file", body = ApiError),
    ),
)]
pub(crate) async fn reload(State(s): Shared, body: Body) -> Result<Json<SpecReload>, Failure> {
    let r = read_json::<ReloadRequest>(body, "reload", true).await?;
    Ok(Json(s.reload(r).await?))
}

/// `POST /api/v1/reload` for a server of several environments: all of
/// them together ([`crate::Environments::reload`]).
pub(crate) async fn reload_environments(
    environments: &crate::Environments,
    body: Body,
) -> axum::response::Response {
    let r = match read_json::<ReloadRequest>(body, "reload", true).await {
        Ok(r) => r,
        Err(f) => return f.into_response(),
    };
    match environments.reload(r).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => Failure::from(e).into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/environments",
    tag = "services",
    summary = "the environments this server runs, each with its services",
    responses(
        (status = 200, description = "in the order `hatoba up --env` named them", body = EnvironmentList),
        (status = 401, description = "missing or wrong token", body = ApiError),
    ),
)]
pub(crate) async fn environments(State(s): Shared) -> Json<EnvironmentList> {
    Json(environment_list(std::slice::from_ref(&s)))
}

/// The environments of `servers`, one server each.
pub(crate) fn environment_list(servers: &[Arc<Server>]) -> EnvironmentList {
    EnvironmentList {
        api_version: hatoba_api::API_VERSION.to_owned(),
        environments: servers.iter().map(|s| s.environment_info()).collect(),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "services",
    summary = "the services this server runs",
    params(("env" = Option<String>, Query, description = "the environment; needed when the server runs several")),
    responses(
        (status = 400, description = "the server runs several environments and the request names none, or one it does not run", body = ApiError),
        (status = 200, description = "by name", body = ServiceList),
        (status = 401, description = "missing or wrong token", body = ApiError),
    ),
)]
pub(crate) async fn services(State(s): Shared) -> Json<ServiceList> {
    Json(s.list_services())
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{name}",
    tag = "services",
    summary = "what runs for a service and how it is routed, now",
    params(
        ("name" = String, Path, description = "a service of the spec"),
        ("env" = Option<String>, Query, description = "the environment; needed when the server runs several that have the service"),
    ),
    responses(
        (status = 200, description = "the service", body = ServiceDetail),
        (status = 400, description = "the service runs in several environments and the request names none, or names one the server does not run", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such service", body = ApiError),
    ),
)]
pub(crate) async fn service(
    State(s): Shared,
    Path(name): Path<String>,
) -> Result<Json<ServiceDetail>, Failure> {
    Ok(Json(s.service_detail(&name).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{name}/rollback",
    tag = "services",
    summary = "return to the previous (or a named) succeeded version",
    params(
        ("name" = String, Path, description = "a service of the spec"),
        ("env" = Option<String>, Query, description = "the environment; needed when the server runs several that have the service"),
    ),
    request_body(content = Option<RollbackRequest>, description = "may be absent"),
    responses(
        (status = 202, description = "the rollback deployment, or the deployment in progress being aborted", body = Deployment),
        (status = 400, description = "a malformed body, an unknown field, a bad name, an environment the server does not run or none when it is ambiguous", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such service, or the version never succeeded", body = ApiError),
        (status = 409, description = "nothing to roll back to, or a deployment in progress", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
        (status = 422, description = "the rollback could not start", body = ApiError),
        (status = 503, description = "the history store cannot be read or written", body = ApiError),
    ),
)]
pub(crate) async fn rollback(
    State(s): Shared,
    Path(name): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Deployment>), Failure> {
    let r = read_json::<RollbackRequest>(body, "rollback", true).await?;
    let by = r.by.unwrap_or_else(|| "cli".to_owned());
    Ok((
        StatusCode::ACCEPTED,
        Json(s.rollback(&name, r.to, by).await?),
    ))
}

/// An operator's action on the deployment in progress.
async fn operate(
    s: &Server,
    name: &str,
    action: Action,
    body: Body,
) -> Result<(StatusCode, Json<OperatorAction>), Failure> {
    // Read like every other body: one over 64 KiB, or one that is not the
    // request, is refused rather than ignored.
    let r = read_json::<PromoteRequest>(body, action.as_str(), true).await?;
    let by = r.by.unwrap_or_else(|| "cli".to_owned());
    Ok((
        StatusCode::ACCEPTED,
        Json(s.operate(name, action, by).await?),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{name}/promote",
    tag = "services",
    summary = "move the deployment in progress to its next step",
    params(
        ("name" = String, Path, description = "a service of the spec"),
        ("env" = Option<String>, Query, description = "the environment; needed when the server runs several that have the service"),
    ),
    request_body(content = Option<PromoteRequest>, description = "may be absent"),
    responses(
        (status = 202, description = "passed to the deployment", body = OperatorAction),
        (status = 400, description = "a malformed body, an environment the server does not run or none when it is ambiguous", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such service", body = ApiError),
        (status = 409, description = "no deployment in progress", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
    ),
)]
pub(crate) async fn promote(
    State(s): Shared,
    Path(name): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<OperatorAction>), Failure> {
    operate(&s, &name, Action::Promote, body).await
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{name}/promote-full",
    tag = "services",
    summary = "put all traffic on the new version now",
    params(
        ("name" = String, Path, description = "a service of the spec"),
        ("env" = Option<String>, Query, description = "the environment; needed when the server runs several that have the service"),
    ),
    request_body(content = Option<PromoteRequest>, description = "may be absent"),
    responses(
        (status = 202, description = "passed to the deployment", body = OperatorAction),
        (status = 400, description = "a malformed body, an environment the server does not run or none when it is ambiguous", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such service", body = ApiError),
        (status = 409, description = "no deployment in progress", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
    ),
)]
pub(crate) async fn promote_full(
    State(s): Shared,
    Path(name): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<OperatorAction>), Failure> {
    operate(&s, &name, Action::PromoteFull, body).await
}

#[utoipa::path(
    post,
    path = "/api/v1/services/{name}/abort",
    tag = "services",
    summary = "abort the deployment in progress: traffic back on what served",
    params(
        ("name" = String, Path, description = "a service of the spec"),
        ("env" = Option<String>, Query, description = "the environment; needed when the server runs several that have the service"),
    ),
    request_body(content = Option<PromoteRequest>, description = "may be absent"),
    responses(
        (status = 202, description = "passed to the deployment", body = OperatorAction),
        (status = 400, description = "a malformed body, an environment the server does not run or none when it is ambiguous", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such service", body = ApiError),
        (status = 409, description = "no deployment in progress", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
    ),
)]
pub(crate) async fn abort(
    State(s): Shared,
    Path(name): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<OperatorAction>), Failure> {
    operate(&s, &name, Action::Abort, body).await
}

#[utoipa::path(
    get,
    path = "/api/v1/secrets",
    tag = "secrets",
    summary = "the environment's secrets: names and versions, never values",
    params(("env" = Option<String>, Query, description = "the environment; needed when the server runs several")),
    responses(
        (status = 400, description = "the server runs several environments and the request names none, or one it does not run", body = ApiError),
        (status = 200, description = "declared or stored, by name", body = SecretList),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 503, description = "the history store cannot be read", body = ApiError),
    ),
)]
pub(crate) async fn list_secrets(State(s): Shared) -> Result<Json<SecretList>, Failure> {
    Ok(Json(s.list_secrets().await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/secrets/{name}",
    tag = "secrets",
    summary = "store a new version of a secret (and with `rotate`, redeploy its users)",
    params(
        ("name" = String, Path, description = "a secret declared in the spec"),
        ("env" = Option<String>, Query, description = "the environment; needed when the server runs several"),
    ),
    request_body = SecretSetRequest,
    responses(
        (status = 200, description = "stored", body = SecretChange),
        (status = 400, description = "a malformed body, a bad name or value, a secret not declared, an environment the server does not run or none when it is ambiguous", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
        (status = 422, description = "this server has no secret key", body = ApiError),
        (status = 503, description = "the history store cannot be read or written", body = ApiError),
    ),
)]
pub(crate) async fn set_secret(
    State(s): Shared,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<SecretChange>, Failure> {
    let body = read_body(body, || {
        format!(
            "a secret may be at most {} bytes",
            crate::secrets::MAX_SECRET_BYTES
        )
    })
    .await?;
    an_object(&body, "secret")?;
    // serde's message may quote the body: say where, not what.
    let r = serde_json::from_slice::<SecretSetRequest>(&body).map_err(|e| {
        Failure::new(
            ErrorKind::BadInput,
            format!(
                "bad secret request ({:?} at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })?;
    Ok(Json(s.set_secret(&name, r).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/secrets/{name}",
    tag = "secrets",
    summary = "remove every version of a secret",
    params(
        ("name" = String, Path, description = "a secret name"),
        ("env" = Option<String>, Query, description = "the environment; needed when the server runs several"),
    ),
    request_body(content = Option<SecretRemoveRequest>, description = "may be absent"),
    responses(
        (status = 200, description = "removed", body = SecretChange),
        (status = 400, description = "a malformed body or name, an environment the server does not run or none when it is ambiguous", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such secret is stored", body = ApiError),
        (status = 413, description = "body over 64 KiB", body = ApiError),
        (status = 503, description = "the history store cannot be written", body = ApiError),
    ),
)]
pub(crate) async fn remove_secret(
    State(s): Shared,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<SecretChange>, Failure> {
    let r = read_json::<SecretRemoveRequest>(body, "secret removal", true).await?;
    let by = r.by.unwrap_or_else(|| "cli".to_owned());
    Ok(Json(s.remove_secret(&name, by).await?))
}
