//! The OpenAPI 3.1 document of the API v1, generated from the handlers'
//! `#[utoipa::path]` and the wire types' `ToSchema` (never written by
//! hand). Served at `GET /api/v1/openapi.json`, printed by `hatoba openapi`,
//! and kept in `docs/openapi.json`, which a test checks for staleness.

use super::{reads, routes};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hatoba API",
        version = "1",
        description = "The control plane of `hatoba up`: deployments, services and secrets of one environment. Every request but `health` and this document carries `Authorization: Bearer TOKEN` (the token is in the state directory). Every error answer is an `ApiError`; its `kind` decides the status and the CLI's exit code.",
    ),
    paths(
        routes::health,
        routes::openapi_document,
        routes::deploy,
        routes::deployment,
        routes::approve,
        routes::environments,
        routes::reload,
        routes::services,
        routes::service,
        routes::rollback,
        routes::promote,
        routes::promote_full,
        routes::abort,
        super::stream::events,
        routes::list_secrets,
        routes::set_secret,
        routes::remove_secret,
        reads::history,
        reads::status,
        reads::analysis,
        reads::diagnosis,
        reads::logs,
    ),
    components(schemas(
        hatoba_api::ApiError,
        hatoba_api::ErrorKind,
        hatoba_api::EventPage,
        hatoba_api::LogLine
    )),
    modifiers(&BearerToken),
    security(("token" = [])),
    tags(
        (name = "server", description = "the server itself"),
        (name = "deployments", description = "deployments, their events and analysis, and the history"),
        (name = "services", description = "services as they run (status, diagnosis, output), and operations on their deployment in progress"),
        (name = "events", description = "what happens to deployments: a live stream of server-sent events, resumable by id"),
        (name = "secrets", description = "sealed secrets: names and versions, never values"),
    ),
)]
struct ApiDoc;

/// Adds the bearer token scheme every operation but the public ones needs.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as data.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON with a final newline, as served and as
/// checked in at `docs/openapi.json`.
pub fn json() -> String {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document().to_pretty_json().unwrap_or_default();
        text.push('\n');
        text
    })
    .clone()
}
