//! The API's one error shape: every error answer is a `hatoba_api::ApiError`
//! (kind, message, hint, field) with the status its kind says
//! ([`status`], the one mapping from a decision to an HTTP status). An
//! operation's [`OpError`] becomes one through `From`; what axum refuses on
//! its own (an unknown path, a method the path does not take, a path that
//! does not decode) is rewritten into it by [`one_shape`], so no answer of
//! the API is plain text.

use crate::ops::OpError;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hatoba_api::{ApiError, ErrorKind};

/// An error answer of the API.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) ApiError);

impl Failure {
    /// A failure of `kind` saying `message`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure(ApiError {
            kind,
            message: message.into(),
            hint: None,
            field: None,
        })
    }

    /// With what to do about it.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.0.hint = Some(hint.into());
        self
    }

    /// Naming the request field at fault.
    pub(crate) fn field(mut self, field: Option<String>) -> Failure {
        self.0.field = field;
        self
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Failure {
        Failure(e.to_wire())
    }
}

/// The HTTP status of an error kind: the one place a decision becomes a
/// status (the numbers are `ErrorKind::http_status`'s).
pub(crate) fn status(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let code = status(self.0.kind);
        (code, axum::Json(self.0)).into_response()
    }
}

/// The fallback of the router: a path the API does not have.
pub(crate) async fn no_such_endpoint(req: Request) -> Failure {
    Failure::new(
        ErrorKind::NotFound,
        format!("no such endpoint: {}", hatoba_core::shown(req.uri().path())),
    )
    .hint("the API's paths are in GET /api/v1/openapi.json")
}

/// One log line per API request: method, path, status and time; `info`
/// for what changes something (so the log says who deployed, rolled back
/// or set a secret, and when), `debug` for reads. A stream's line comes
/// when its head is sent.
pub(crate) async fn trace_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = hatoba_core::shown(req.uri().path()).to_string();
    let began = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        tracing::debug!(%method, path, status, ms, "api request");
    } else {
        tracing::info!(%method, path, status, ms, "api request");
    }
    resp
}

/// Rewrites an error answer that is not JSON (axum's own: 405 for a method
/// the path does not take, 400 for a path parameter that does not decode)
/// into the API's error shape. Answers that are already JSON pass as they
/// are.
pub(crate) async fn one_shape(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let code = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(code.is_client_error() || code.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (_, body) = resp.into_parts();
    let said = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let path = hatoba_core::shown(&path);
    let failure = match code {
        StatusCode::METHOD_NOT_ALLOWED => {
            let f = Failure::new(
                ErrorKind::MethodNotAllowed,
                format!("{method} is not allowed on {path}"),
            );
            match &allow {
                Some(a) => f.hint(format!("{path} takes: {a}")),
                None => f,
            }
        }
        StatusCode::NOT_FOUND => {
            Failure::new(ErrorKind::NotFound, format!("no such endpoint: {path}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => Failure::new(
            ErrorKind::TooLarge,
            format!("request body too large (at most {} bytes)", super::MAX_BODY),
        ),
        c if c.is_client_error() => Failure::new(
            ErrorKind::BadInput,
            if said.is_empty() {
                format!("bad request to {path}")
            } else {
                format!("bad request to {path}: {said}")
            },
        ),
        _ => Failure::new(
            ErrorKind::Unavailable,
            if said.is_empty() {
                format!("{path} could not be answered")
            } else {
                format!("{path} could not be answered: {said}")
            },
        ),
    };
    let mut out = failure.into_response();
    if let Some(a) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}
