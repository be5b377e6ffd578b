//! The API's guard: every request but those of [`PUBLIC`] carries
//! `Authorization: Bearer TOKEN` with the token of the state directory,
//! compared in constant time; anything else is a 401 in the API's error
//! shape, before routing, so an unknown path without the token says
//! nothing about which paths exist.

use super::error::Failure;
use crate::server::Server;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Paths served without the token: liveness and the API's own document.
pub(crate) const PUBLIC: &[&str] = &["/api/v1/health", "/api/v1/openapi.json"];

/// Lets a request through when it is public or carries the token.
pub(crate) async fn require_token(
    State(server): State<Arc<Server>>,
    req: Request,
    next: Next,
) -> Response {
    if PUBLIC.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    if !authorized(req.headers(), &server.token) {
        return Failure::new(hatoba_api::ErrorKind::Unauthorized, "missing or wrong token")
            .hint(
                "commands find the token in the state directory: use the same --state-dir as `hatoba up`",
            )
            .into_response();
    }
    next.run(req).await
}

/// Whether the request carries `token`.
pub(crate) fn authorized(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
