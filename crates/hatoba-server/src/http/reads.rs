//! The routes that read the history and the instances' output: history,
//! status, analysis, diagnosis, logs. Like every handler, each reads the
//! request (path, a strict query string), calls one operation of `ops` and
//! answers its result; `#[utoipa::path]` documents every answer.

use super::error::Failure;
use crate::ops::{HistoryQuery, LogsQuery, StatusQuery};
use crate::server::Server;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use hatoba_api::{AnalysisReport, ApiError, Diagnosis, ErrorKind, History, Logs, Status};
use std::sync::Arc;

type Shared = State<Arc<Server>>;

/// Deployments listed when the query does not say how many.
const DEFAULT_LIMIT: u32 = 20;
/// Lines of each instance given when the query does not say how many.
const DEFAULT_LINES: usize = 20;

/// A query string that does not decode, or names a parameter the route
/// does not take: a 400 with serde's words (they name it).
fn bad_query(r: &QueryRejection) -> Failure {
    Failure::new(
        ErrorKind::BadInput,
        format!("bad query string: {}", r.body_text()),
    )
}

/// `GET /api/v1/deployments?service=&environment=&limit=`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryParams {
    /// Only this service.
    service: Option<String>,
    /// Only this environment.
    environment: Option<String>,
    /// At most this many, newest first (default 20).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/deployments",
    tag = "deployments",
    summary = "past deployments, newest first (`hatoba history`)",
    params(HistoryParams),
    responses(
        (status = 200, description = "newest first", body = History),
        (status = 400, description = "an unknown parameter, a bad service or environment name or limit", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 503, description = "the history store cannot be read", body = ApiError),
    ),
)]
pub(crate) async fn history(
    State(s): Shared,
    q: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<History>, Failure> {
    let Query(q) = q.map_err(|r| bad_query(&r))?;
    let q = HistoryQuery {
        service: q.service,
        environment: q.environment,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT),
    };
    Ok(Json(s.history(&q).await?))
}

/// `GET /api/v1/status?service=&environment=`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatusParams {
    /// Only this service.
    service: Option<String>,
    /// Only this environment.
    environment: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "services",
    summary = "what serves and what is in progress, per service and environment with a history (`hatoba status`)",
    params(StatusParams),
    responses(
        (status = 200, description = "by service, then environment", body = Status),
        (status = 400, description = "an unknown parameter, a bad service or environment name", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "the service named has no deployment history", body = ApiError),
        (status = 503, description = "the history store cannot be read", body = ApiError),
    ),
)]
pub(crate) async fn status(
    State(s): Shared,
    q: Result<Query<StatusParams>, QueryRejection>,
) -> Result<Json<Status>, Failure> {
    let Query(q) = q.map_err(|r| bad_query(&r))?;
    let q = StatusQuery {
        service: q.service,
        environment: q.environment,
    };
    Ok(Json(s.status(&q).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/deployments/{id}/analysis",
    tag = "deployments",
    summary = "every analysis measurement of a deployment (`hatoba analysis`)",
    params(
        ("id" = String, Path, description = "a deployment id, `d-...`"),
        ("env" = Option<String>, Query, description = "the environment the deployment is in; none needed (its id names it)"),
    ),
    responses(
        (status = 200, description = "the deployment and its measurements, in order", body = AnalysisReport),
        (status = 400, description = "not a deployment id, or `env` names an environment the server does not run", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such deployment, or it is in another environment than `env` (named in the message)", body = ApiError),
        (status = 503, description = "the history store cannot be read", body = ApiError),
    ),
)]
pub(crate) async fn analysis(
    State(s): Shared,
    Path(id): Path<String>,
) -> Result<Json<AnalysisReport>, Failure> {
    Ok(Json(s.analysis(&id).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{name}/diagnosis",
    tag = "services",
    summary = "what runs for a service, its recent history and output (`hatoba diagnose`)",
    params(
        ("name" = String, Path, description = "a service of the spec"),
        ("env" = Option<String>, Query, description = "the environment; needed when the server runs several that have the service"),
    ),
    responses(
        (status = 200, description = "the diagnosis", body = Diagnosis),
        (status = 400, description = "the service runs in several environments and the request names none, or names one the server does not run", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such service", body = ApiError),
        (status = 503, description = "the history store cannot be read", body = ApiError),
    ),
)]
pub(crate) async fn diagnosis(
    State(s): Shared,
    Path(name): Path<String>,
) -> Result<Json<Diagnosis>, Failure> {
    Ok(Json(s.diagnosis(&name).await?))
}

/// Whether `req` is a `GET /api/v1/status` with the token to a `hatoba up`
/// that runs several environments: then [`status_of_several`] answers it
/// (one without the token is left to the guard of the first server).
pub(crate) fn is_status_of_several(servers: &[Arc<Server>], req: &Request) -> bool {
    servers.len() > 1
        && req.method() == axum::http::Method::GET
        && req.uri().path() == "/api/v1/status"
        && super::auth::authorized(req.headers(), &servers[0].token)
}

/// `GET /api/v1/status` of a `hatoba up` that runs several environments:
/// the history's status once, with the running instances of each
/// environment from its own server.
pub(crate) async fn status_of_several(servers: &[Arc<Server>], uri: &axum::http::Uri) -> Response {
    let Some(first) = servers.first() else {
        return Failure::new(ErrorKind::Failed, "no environment runs").into_response();
    };
    let q = match Query::<StatusParams>::try_from_uri(uri) {
        Ok(Query(q)) => StatusQuery {
            service: q.service,
            environment: q.environment,
        },
        Err(r) => return bad_query(&r).into_response(),
    };
    let mut status = match crate::ops::status(first.store.as_ref(), &q, crate::clock_now()).await {
        Ok(s) => s,
        Err(e) => return Failure::from(e).into_response(),
    };
    for s in servers {
        s.add_running(&mut status).await;
    }
    Json(status).into_response()
}

/// `GET /api/v1/services/{name}/logs?lines=&instance=&after=`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsParams {
    /// The last this many lines of each instance (default 20, at most 10000).
    #[param(minimum = 0, maximum = 10000.0)]
    lines: Option<usize>,
    /// Only this instance (running or not).
    instance: Option<String>,
    /// With `instance`: the whole lines written after this point (an
    /// earlier answer's `offset`: a byte offset in a log file, a time for
    /// a container) instead of a tail.
    after: Option<u64>,
    /// With `instance`: follow its output, as server-sent events (one
    /// `line` message per line, its data a `LogLine`, a comment as a
    /// heartbeat) that end when the instance stops: its tail (`lines`,
    /// default 20) or what came `after`, then each line as it is written.
    /// A 400 when its runtime keeps output in a file (the process
    /// runtime): read on with `after` instead.
    follow: Option<bool>,
    /// The environment; needed when the server runs several that have the
    /// service (it chooses the environment's server, see `http::envs`).
    #[allow(dead_code, reason = "read by the router of several environments")]
    env: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{name}/logs",
    tag = "services",
    summary = "the output of a service's running instances (`hatoba logs`)",
    params(("name" = String, Path, description = "a service of the spec"), LogsParams),
    responses(
        (status = 200, description = "one entry per instance; with `follow=true`, server-sent events: `line` messages whose data is a LogLine", body = Logs),
        (status = 400, description = "an unknown parameter, lines over 10000, `after` or `follow` without `instance`, `follow` of an output kept in a file, an environment the server does not run or none when it is ambiguous", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such service or instance", body = ApiError),
        (status = 503, description = "the runtime cannot list the instances", body = ApiError),
    ),
)]
pub(crate) async fn logs(
    State(s): Shared,
    Path(name): Path<String>,
    conn: Option<axum::Extension<Arc<super::stream::ConnState>>>,
    q: Result<Query<LogsParams>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(q) = q.map_err(|r| bad_query(&r))?;
    let follow = q.follow == Some(true);
    let q = LogsQuery {
        lines: q.lines.unwrap_or(DEFAULT_LINES),
        instance: q.instance,
        after: q.after,
    };
    if follow {
        return super::stream::follow_logs(&s, &name, &q, conn.map(|c| c.0)).await;
    }
    Ok(Json(s.logs(&name, &q).await?).into_response())
}
