//! The API v1, through `Server::serve_api` on a loopback port over the
//! fake runtime and data plane: every endpoint but `/api/v1/health` and
//! `/api/v1/openapi.json` answers a missing or wrong bearer token with 401
//! and does nothing; every error answer (an unknown path, a wrong method,
//! malformed JSON, an unknown field, an oversized body, an unknown or
//! malformed id) is the one JSON shape, `hatoba_api::ApiError`, whose kind
//! gives the status; the OpenAPI document is `docs/openapi.json` and lists
//! every route with its answers; a `?env=` naming an environment the
//! server does not run is refused as `hatoba up`'s own front refuses it.

use crate::fake::{Action, FakeDataPlane, FakeRuntime, Trace, call, call_raw, spec};
use hatoba_server::{Server, ServerConfig};
use hatoba_store::{SqlStore, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Every endpoint, with a body that would act if it were let through.
const ENDPOINTS: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/api/v1/deployments",
        r#"{"service": "web", "version": "v2"}"#,
    ),
    ("GET", "/api/v1/deployments/d-1", ""),
    ("GET", "/api/v1/deployments", ""),
    ("GET", "/api/v1/deployments/d-1/analysis", ""),
    ("GET", "/api/v1/status", ""),
    ("GET", "/api/v1/environments", ""),
    ("GET", "/api/v1/services", ""),
    ("GET", "/api/v1/services/web", ""),
    ("GET", "/api/v1/services/web/diagnosis", ""),
    ("GET", "/api/v1/services/web/logs", ""),
    (
        "POST",
        "/api/v1/deployments/d-1/approve",
        r#"{"by": "bob"}"#,
    ),
    ("POST", "/api/v1/services/web/rollback", "{}"),
    ("POST", "/api/v1/services/web/promote", "{}"),
    ("POST", "/api/v1/services/web/promote-full", "{}"),
    ("POST", "/api/v1/services/web/abort", "{}"),
    ("GET", "/api/v1/events?follow=false", ""),
    ("GET", "/api/v1/secrets", ""),
    ("PUT", "/api/v1/secrets/API_KEY", r#"{"value": "x"}"#),
    ("DELETE", "/api/v1/secrets/API_KEY", ""),
    ("POST", "/api/v1/reload", r#"{"by": "bob"}"#),
    ("GET", "/api/v1/no-such-thing", ""),
    ("GET", "/v1/services/web", ""),
    ("DELETE", "/api/v1/services/web", ""),
];

/// The endpoints that read a body.
const WITH_BODY: &[&str] = &[
    "/api/v1/deployments",
    "/api/v1/deployments/d-1/approve",
    "/api/v1/services/web/rollback",
    "/api/v1/services/web/promote",
    "/api/v1/services/web/promote-full",
    "/api/v1/services/web/abort",
    "/api/v1/secrets/API_KEY",
    "/api/v1/reload",
];

pub(crate) struct Api {
    pub(crate) addr: SocketAddr,
    pub(crate) token: String,
    trace: Trace,
    data_plane: Arc<FakeDataPlane>,
    _server: Arc<Server>,
    _dir: tempfile::TempDir,
}

/// A server (nothing deployed yet) serving its API.
pub(crate) async fn api() -> Api {
    api_with(hatoba_server::http::ApiLimits::default()).await
}

/// [`api`] served with `limits`.
pub(crate) async fn api_with(limits: hatoba_server::http::ApiLimits) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::open_sqlite(dir.path().join("hatoba.db"))
            .await
            .unwrap(),
    );
    let trace = Trace::default();
    let token = hatoba_server::new_token();
    let data_plane = Arc::new(FakeDataPlane::new(trace.clone()));
    let server = Server::start(ServerConfig {
        spec: spec(1, "      readiness: {path: /ready}"),
        spec_digest: "test".to_owned(),
        spec_path: None,
        environment: "development".parse().unwrap(),
        base_dir: dir.path().to_path_buf(),
        store,
        runtime: Arc::new(FakeRuntime::new(trace.clone())),
        data_plane: data_plane.clone(),
        token: token.clone(),
        secret_key: None,
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Arc::clone(&server).serve_api_with(listener, std::future::pending(), limits));
    Api {
        addr,
        token,
        trace,
        data_plane,
        _server: server,
        _dir: dir,
    }
}

/// The answer as the API's error shape, checked against its status: the
/// kind decides the status, always.
pub(crate) fn error_body(code: u16, answer: &str) -> hatoba_api::ApiError {
    let e: hatoba_api::ApiError = serde_json::from_str(answer)
        .unwrap_or_else(|e| panic!("not the JSON error shape ({e}): {answer}"));
    assert_eq!(e.kind.http_status(), code, "{answer}");
    e
}

#[tokio::test]
async fn every_endpoint_refuses_a_missing_or_wrong_token_and_does_nothing() {
    let a = api().await;
    let t = &a.token;
    let wrong = [
        String::new(),
        "Authorization: Bearer 0123\r\n".to_owned(),
        format!("Authorization: Bearer {t}0\r\n"),
        format!("Authorization: Bearer {}\r\n", &t[..t.len() - 1]),
        format!("Authorization: Basic {t}\r\n"),
        format!("Authorization: {t}\r\n"),
        "Authorization: Bearer \r\n".to_owned(),
    ];
    for (method, path, body) in ENDPOINTS {
        for auth in &wrong {
            let (code, answer) = call_raw(a.addr, method, path, auth, body.as_bytes()).await;
            assert_eq!(code, 401, "{method} {path} with {auth:?}: {answer}");
            let e = error_body(code, &answer);
            assert_eq!(e.kind, hatoba_api::ErrorKind::Unauthorized, "{answer}");
            assert_eq!(e.kind.exit_code(), 5, "{answer}");
            assert_eq!(e.message, "missing or wrong token", "{answer}");
            assert!(
                e.hint.as_deref().is_some_and(|h| h.contains("--state-dir")),
                "{answer}"
            );
        }
        // With the token the same request gets past the guard.
        if *path != "/api/v1/deployments" {
            let (code, answer) = call(a.addr, method, path, Some(t), body.as_bytes()).await;
            assert_ne!(code, 401, "{method} {path} with the token: {answer}");
        }
    }
    // Nothing was started or routed.
    assert_eq!(
        a.trace.since(hatoba_core::Millis(0)),
        Vec::<(u64, Action)>::new()
    );
}

#[tokio::test]
async fn health_and_the_document_need_no_token_and_an_unknown_path_is_a_json_404() {
    let a = api().await;
    let (code, answer) = call(a.addr, "GET", "/api/v1/health", None, b"").await;
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["status"], "ok", "{answer}");
    let (code, answer) = call(a.addr, "GET", "/api/v1/openapi.json", None, b"").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer, hatoba_server::http::openapi::json());
    for (method, path, says) in [
        (
            "GET",
            "/api/v1/no-such-thing",
            "no such endpoint: /api/v1/no-such-thing",
        ),
        ("GET", "/", "no such endpoint: /"),
        // The paths before v1 are gone, not kept as aliases.
        (
            "GET",
            "/v1/services/web",
            "no such endpoint: /v1/services/web",
        ),
        (
            "POST",
            "/api/v1/services/web/restart",
            "no such endpoint: /api/v1/services/web/restart",
        ),
    ] {
        let (code, answer) = call(a.addr, method, path, Some(&a.token), b"").await;
        assert_eq!(code, 404, "{method} {path}: {answer}");
        let e = error_body(code, &answer);
        assert_eq!(e.kind, hatoba_api::ErrorKind::NotFound, "{answer}");
        assert_eq!(e.kind.exit_code(), 4, "{answer}");
        assert!(e.message.contains(says), "{method} {path}: {answer}");
    }
}

#[tokio::test]
async fn the_environment_is_listed_with_its_services() {
    let a = api().await;
    let (code, answer) = call(a.addr, "GET", "/api/v1/environments", Some(&a.token), b"").await;
    assert_eq!(code, 200, "{answer}");
    let list: hatoba_api::EnvironmentList = serde_json::from_str(&answer).unwrap();
    assert_eq!(list.environments.len(), 1, "{answer}");
    assert_eq!(list.environments[0].name, "development", "{answer}");
    assert!(!list.environments[0].require_approval, "{answer}");
    let names: Vec<&str> = list.environments[0]
        .services
        .iter()
        .map(|s| s.service.as_str())
        .collect();
    assert_eq!(names, ["web"], "{answer}");
}

#[tokio::test]
async fn services_are_listed_with_their_address() {
    let a = api().await;
    let (code, answer) = call(a.addr, "GET", "/api/v1/services", Some(&a.token), b"").await;
    assert_eq!(code, 200, "{answer}");
    let list: hatoba_api::ServiceList = serde_json::from_str(&answer).unwrap();
    assert_eq!(list.environment, "development");
    let names: Vec<&str> = list.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["web"], "{answer}");
    assert_eq!(list.services[0].serving_version, None, "{answer}");
    assert_eq!(list.services[0].live_deployment, None, "{answer}");
}

#[tokio::test]
async fn a_method_a_path_does_not_take_is_a_json_405_naming_the_ones_it_does() {
    let a = api().await;
    for (method, path, allowed) in [
        ("DELETE", "/api/v1/services/web", "GET"),
        ("DELETE", "/api/v1/deployments", "POST"),
        ("POST", "/api/v1/secrets", "GET"),
    ] {
        let (code, answer) = call(a.addr, method, path, Some(&a.token), b"").await;
        assert_eq!(code, 405, "{method} {path}: {answer}");
        let e = error_body(code, &answer);
        assert_eq!(e.kind, hatoba_api::ErrorKind::MethodNotAllowed, "{answer}");
        assert_eq!(e.message, format!("{method} is not allowed on {path}"));
        assert!(
            e.hint.as_deref().is_some_and(|h| h.contains(allowed)),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413_by_every_endpoint_that_takes_one() {
    let a = api().await;
    // JSON padded with spaces: 64 KiB is read, one byte more is refused.
    let padded = |len: usize| {
        let mut b = b"{}".to_vec();
        b.resize(len, b' ');
        b
    };
    for path in WITH_BODY {
        let method = if path.starts_with("/api/v1/secrets") {
            "PUT"
        } else {
            "POST"
        };
        let (code, answer) = call(a.addr, method, path, Some(&a.token), &padded(65_537)).await;
        assert_eq!(code, 413, "{path}: {answer}");
        let e = error_body(code, &answer);
        assert_eq!(e.kind, hatoba_api::ErrorKind::TooLarge, "{answer}");
        assert_eq!(e.kind.exit_code(), 2, "{answer}");
        assert!(
            e.message.contains("too large") || e.message.contains("at most"),
            "{path}: {answer}"
        );
        let (code, answer) = call(a.addr, method, path, Some(&a.token), &padded(65_536)).await;
        assert_ne!(code, 413, "{path}: {answer}");
    }
    assert_eq!(
        a.trace.since(hatoba_core::Millis(0)),
        Vec::<(u64, Action)>::new()
    );
}

/// Malformed JSON and unknown fields are a 400 naming the problem (the
/// field, when it is one), and nothing is done.
#[tokio::test]
async fn malformed_json_and_unknown_fields_are_json_400s_naming_the_problem() {
    let a = api().await;
    for (method, path, body, says, field) in [
        (
            "POST",
            "/api/v1/services/web/promote",
            r#"{"by": "#,
            "bad promote request",
            None,
        ),
        (
            "POST",
            "/api/v1/services/web/rollback",
            r#"{"too": "v1"}"#,
            "unknown field `too`",
            Some("too"),
        ),
        (
            "POST",
            "/api/v1/deployments",
            r#"{"service": "web", "version": "v9", "varz": {}}"#,
            "unknown field `varz`",
            Some("varz"),
        ),
        (
            "POST",
            "/api/v1/deployments",
            r#"{"service": "web"}"#,
            "missing field `version`",
            Some("version"),
        ),
        (
            "POST",
            "/api/v1/deployments/d-1/approve",
            "",
            "bad approve request",
            None,
        ),
        (
            "PUT",
            "/api/v1/secrets/API_KEY",
            r#"{"value": "hunter2", "rotat": true}"#,
            "bad secret request",
            None,
        ),
        (
            "DELETE",
            "/api/v1/secrets/API_KEY",
            r#"{"who": "bob"}"#,
            "unknown field `who`",
            Some("who"),
        ),
        // serde would read these arrays as structs of defaults.
        (
            "POST",
            "/api/v1/reload",
            "[]",
            "must be a JSON object",
            None,
        ),
        (
            "POST",
            "/api/v1/services/web/rollback",
            " []",
            "must be a JSON object",
            None,
        ),
        (
            "POST",
            "/api/v1/deployments",
            r#"["web", "v9"]"#,
            "must be a JSON object",
            None,
        ),
        (
            "PUT",
            "/api/v1/secrets/API_KEY",
            r#"["hunter2"]"#,
            "must be a JSON object",
            None,
        ),
        // No body means the defaults; a body of blanks is not JSON (found
        // by schemathesis: a tab reloaded).
        ("POST", "/api/v1/reload", "\t", "bad reload request", None),
        (
            "POST",
            "/api/v1/services/web/rollback",
            " \n",
            "bad rollback request",
            None,
        ),
    ] {
        let (code, answer) = call(a.addr, method, path, Some(&a.token), body.as_bytes()).await;
        assert_eq!(code, 400, "{method} {path} {body}: {answer}");
        let e = error_body(code, &answer);
        assert_eq!(e.kind, hatoba_api::ErrorKind::BadInput, "{answer}");
        assert!(e.message.contains(says), "{method} {path} {body}: {answer}");
        assert_eq!(e.field.as_deref(), field, "{answer}");
        // A secret's value is never quoted back.
        assert!(!answer.contains("hunter2"), "{answer}");
    }
    assert_eq!(
        a.trace.since(hatoba_core::Millis(0)),
        Vec::<(u64, Action)>::new()
    );
}

/// Unknown services and deployments are a 404 naming them; a malformed id
/// or name is a 400 saying what it is not.
#[tokio::test]
async fn unknown_and_malformed_names_and_ids_are_named_in_the_error() {
    let a = api().await;
    let cases = [
        (
            "GET",
            "/api/v1/services/nope".to_owned(),
            "",
            404,
            "no service `nope`".to_owned(),
        ),
        (
            "POST",
            "/api/v1/services/nope/promote".to_owned(),
            "",
            404,
            "no service `nope`".to_owned(),
        ),
        (
            "POST",
            "/api/v1/deployments".to_owned(),
            r#"{"service": "nope", "version": "v2"}"#,
            404,
            "no service `nope` in the spec".to_owned(),
        ),
        (
            "POST",
            "/api/v1/deployments".to_owned(),
            r#"{"service": "web", "version": "v 2"}"#,
            400,
            "version".to_owned(),
        ),
        (
            "GET",
            "/api/v1/deployments/not_an.id".to_owned(),
            "",
            400,
            "`not_an.id` is not a deployment id".to_owned(),
        ),
        (
            "POST",
            "/api/v1/deployments/not_an.id/approve".to_owned(),
            r#"{"by": "bob"}"#,
            400,
            "`not_an.id` is not a deployment id".to_owned(),
        ),
        (
            "POST",
            "/api/v1/services/web/promote".to_owned(),
            "",
            409,
            "service `web` has no deployment in progress".to_owned(),
        ),
        (
            "PUT",
            "/api/v1/secrets/not-a-name".to_owned(),
            r#"{"value": "x"}"#,
            400,
            "`not-a-name` is not a secret name".to_owned(),
        ),
        (
            "DELETE",
            "/api/v1/secrets/API_KEY".to_owned(),
            "",
            404,
            "no secret `API_KEY` is stored in `development`".to_owned(),
        ),
        (
            "GET",
            "/api/v1/deployments/d-1".to_owned(),
            "",
            404,
            "no deployment d-1".to_owned(),
        ),
        (
            "GET",
            "/api/v1/deployments/d-1/analysis".to_owned(),
            "",
            404,
            "no deployment d-1".to_owned(),
        ),
        (
            "GET",
            "/api/v1/deployments/not_an.id/analysis".to_owned(),
            "",
            400,
            "`not_an.id` is not a deployment id".to_owned(),
        ),
        (
            "GET",
            "/api/v1/deployments?service=Not%20A%20Name".to_owned(),
            "",
            400,
            "service".to_owned(),
        ),
        (
            "GET",
            "/api/v1/deployments?limit=many".to_owned(),
            "",
            400,
            "bad query string".to_owned(),
        ),
        (
            "GET",
            "/api/v1/deployments?colour=blue".to_owned(),
            "",
            400,
            "unknown field `colour`".to_owned(),
        ),
        (
            "GET",
            "/api/v1/status?service=web".to_owned(),
            "",
            404,
            "service `web` has no deployment history".to_owned(),
        ),
        (
            "GET",
            "/api/v1/services/nope/diagnosis".to_owned(),
            "",
            404,
            "no service `nope`".to_owned(),
        ),
        (
            "GET",
            "/api/v1/services/nope/logs".to_owned(),
            "",
            404,
            "no service `nope`".to_owned(),
        ),
        (
            "GET",
            "/api/v1/services/web/logs?instance=web-v9-0000".to_owned(),
            "",
            404,
            "no instance `web-v9-0000` of `web`".to_owned(),
        ),
        (
            "GET",
            "/api/v1/services/web/logs?after=3".to_owned(),
            "",
            400,
            "needs `instance`".to_owned(),
        ),
        (
            "GET",
            "/api/v1/services/web/logs?lines=10001".to_owned(),
            "",
            400,
            "lines 10001 is over 10000".to_owned(),
        ),
    ];
    for (method, path, body, status, says) in cases {
        let (code, answer) = call(a.addr, method, &path, Some(&a.token), body.as_bytes()).await;
        assert_eq!(code, status, "{method} {path}: {answer}");
        let e = error_body(code, &answer);
        assert!(e.message.contains(&says), "{method} {path}: {answer}");
    }
    assert_eq!(
        a.trace.since(hatoba_core::Millis(0)),
        Vec::<(u64, Action)>::new()
    );
}

/// `docs/openapi.json` is the document the code generates (`UPDATE_EXPECT=1`
/// rewrites it), and it lists every route the router serves with its error
/// answers in the one shape.
#[test]
fn the_openapi_document_is_fresh_and_lists_every_route() {
    let actual = hatoba_server::http::openapi::json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == actual,
        "docs/openapi.json is stale: run `UPDATE_EXPECT=1 cargo test -p hatoba-server --test it openapi` (or `hatoba openapi > docs/openapi.json`)"
    );
    let doc: serde_json::Value = serde_json::from_str(&actual).unwrap();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    for (method, path) in ENDPOINTS
        .iter()
        .map(|(m, p, _)| (m.to_ascii_lowercase(), *p))
        .filter(|(_, p)| p.starts_with("/api/v1/") && !p.contains("no-such"))
        .chain([
            ("get".to_owned(), "/api/v1/health"),
            ("get".to_owned(), "/api/v1/openapi.json"),
        ])
    {
        let path = path.split('?').next().unwrap_or(path);
        let templated = path
            .replace("/d-1", "/{id}")
            .replace("/web", "/{name}")
            .replace("/API_KEY", "/{name}");
        if method == "delete" && templated == "/api/v1/services/{name}" {
            continue;
        }
        let op = &doc["paths"][&templated][&method];
        assert!(
            op.is_object(),
            "{method} {templated} is not in the document"
        );
        let responses = op["responses"].as_object().unwrap();
        for (status, r) in responses {
            if status.starts_with('2') {
                continue;
            }
            assert_eq!(
                r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ApiError",
                "{method} {templated} {status}"
            );
        }
        let public = templated == "/api/v1/health" || templated == "/api/v1/openapi.json";
        assert_eq!(
            responses.contains_key("401"),
            !public,
            "{method} {templated}: {responses:?}"
        );
    }
}

/// The service as the API shows it now.
async fn web(a: &Api) -> hatoba_api::ServiceDetail {
    let (code, answer) = call(a.addr, "GET", "/api/v1/services/web", Some(&a.token), b"").await;
    assert_eq!(code, 200, "{answer}");
    serde_json::from_str(&answer).unwrap()
}

#[tokio::test]
async fn a_draining_instance_shows_its_connections_and_time_left_and_what_comes_after() {
    let a = api().await;
    let deploy = |version: &'static str| {
        let body = format!(r#"{{"service": "web", "version": "{version}"}}"#);
        let (addr, token) = (a.addr, a.token.clone());
        async move {
            let (code, answer) = call(
                addr,
                "POST",
                "/api/v1/deployments",
                Some(&token),
                body.as_bytes(),
            )
            .await;
            assert_eq!(code, 202, "{answer}");
        }
    };
    deploy("v1").await;
    hatoba_test_support::wait_for_async(Duration::from_secs(20), || async {
        web(&a).await.serving_version.as_deref() == Some("v1")
    })
    .await
    .unwrap();
    a.data_plane.hold_drains(true);
    deploy("v2").await;
    tokio::time::timeout(Duration::from_secs(20), a.data_plane.drains_held(1))
        .await
        .expect("v1's instance never drained");
    let detail = web(&a).await;
    let draining: Vec<&str> = detail
        .instances
        .iter()
        .filter_map(|i| i.draining.as_deref())
        .collect();
    assert_eq!(draining.len(), 1, "{detail:#?}");
    assert!(
        draining[0].starts_with("draining: 1 connection left, up to ")
            && draining[0].ends_with(" left, then SIGTERM, SIGKILL 30s later"),
        "{draining:?}"
    );
    let v1 = detail
        .instances
        .iter()
        .find(|i| i.draining.is_some())
        .unwrap();
    assert_eq!(
        (v1.version.as_str(), v1.in_route, v1.connections_left),
        ("v1", false, Some(1)),
        "{detail:#?}"
    );
    // Once drained and stopped, nothing says draining any more.
    a.data_plane.hold_drains(false);
    hatoba_test_support::wait_for_async(Duration::from_secs(20), || async {
        let d = web(&a).await;
        d.serving_version.as_deref() == Some("v2")
            && d.instances
                .iter()
                .all(|i| i.draining.is_none() && i.connections_left.is_none())
    })
    .await
    .unwrap();
}

/// `hatoba up`'s API of one environment (`Environments::serve_api`) over
/// the fakes, with `token`.
async fn up_api(token: &str, dir: &std::path::Path) -> SocketAddr {
    let spec = spec(1, "      readiness: {path: /ready}");
    crate::fake::environments_api(token, dir, spec, &["development"]).await
}

#[tokio::test]
async fn an_environment_named_that_the_server_does_not_run_is_refused_as_hatoba_up_refuses_it() {
    let a = api().await;
    let dir = tempfile::tempdir().unwrap();
    let up = up_api(&a.token, dir.path()).await;
    for (method, path, body) in [
        ("GET", "/api/v1/services/web?env=production", ""),
        ("GET", "/api/v1/services?env=production", ""),
        ("GET", "/api/v1/services/web/diagnosis?env=production", ""),
        (
            "POST",
            "/api/v1/deployments?env=production",
            r#"{"service": "web", "version": "v2"}"#,
        ),
        ("GET", "/api/v1/secrets?env=production", ""),
        (
            "GET",
            "/api/v1/deployments/d-01kbx2m3n4p5q6r7s8t9v0w1x2?env=production",
            "",
        ),
    ] {
        let (code, answer) = call(a.addr, method, path, Some(&a.token), body.as_bytes()).await;
        let e = error_body(code, &answer);
        assert_eq!(code, 400, "{method} {path}: {answer}");
        assert!(
            e.message.contains("`development`") && e.message.contains("`production`"),
            "{method} {path}: {answer}"
        );
        let by_up = call(up, method, path, Some(&a.token), body.as_bytes()).await;
        assert_eq!(
            by_up,
            (code, answer),
            "{method} {path}: `hatoba up` answers otherwise"
        );
    }
    assert!(
        a.trace.since(hatoba_core::Millis(0)).is_empty(),
        "nothing was started"
    );
    // Its own environment named: served.
    let path = "/api/v1/services/web?env=development";
    let (code, answer) = call(a.addr, "GET", path, Some(&a.token), b"").await;
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = call(up, "GET", path, Some(&a.token), b"").await;
    assert_eq!(code, 200, "{answer}");
}
