//! The API's guard, through `Server::serve_api` on a loopback port over the
//! fake runtime and data plane: every endpoint but `/v1/health` answers a
//! missing or wrong bearer token with 401 and a JSON error (exit code 2)
//! and does nothing; an unknown path is a JSON 404; a body over 64 KiB is
//! a 413 on every endpoint that takes one.

use crate::fake::{Action, FakeDataPlane, FakeRuntime, Trace, call, call_raw, serve_api, spec};
use hatoba_server::{Server, ServerConfig};
use hatoba_store::{SqlStore, Store};
use std::net::SocketAddr;
use std::sync::Arc;

/// Every endpoint, with a body that would act if it were let through.
const ENDPOINTS: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/v1/deployments",
        r#"{"service": "web", "version": "v2"}"#,
    ),
    ("GET", "/v1/deployments/d-1", ""),
    ("GET", "/v1/services/web", ""),
    ("POST", "/v1/deployments/d-1/approve", r#"{"by": "bob"}"#),
    ("POST", "/v1/services/web/rollback", "{}"),
    ("POST", "/v1/services/web/promote", "{}"),
    ("POST", "/v1/services/web/promote-full", "{}"),
    ("POST", "/v1/services/web/abort", "{}"),
    ("GET", "/v1/no-such-thing", ""),
];

/// The endpoints that read a body.
const WITH_BODY: &[&str] = &[
    "/v1/deployments",
    "/v1/deployments/d-1/approve",
    "/v1/services/web/rollback",
    "/v1/services/web/promote",
    "/v1/services/web/promote-full",
    "/v1/services/web/abort",
];

struct Api {
    addr: SocketAddr,
    token: String,
    trace: Trace,
    _server: Arc<Server>,
    _dir: tempfile::TempDir,
}

/// A server (nothing deployed yet) serving its API.
async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::open_sqlite(dir.path().join("hatoba.db"))
            .await
            .unwrap(),
    );
    let trace = Trace::default();
    let token = hatoba_server::new_token();
    let server = Server::start(ServerConfig {
        spec: spec(1, "      readiness: {path: /ready}"),
        spec_digest: "test".to_owned(),
        environment: "development".parse().unwrap(),
        base_dir: dir.path().to_path_buf(),
        store,
        runtime: Arc::new(FakeRuntime::new(trace.clone())),
        data_plane: Arc::new(FakeDataPlane::new(trace.clone())),
        token: token.clone(),
        secret_key: None,
    })
    .await
    .unwrap();
    let addr = serve_api(&server).await;
    Api {
        addr,
        token,
        trace,
        _server: server,
        _dir: dir,
    }
}

fn error_body(answer: &str) -> hatoba_api::ErrorBody {
    serde_json::from_str(answer).unwrap_or_else(|e| panic!("not a JSON error ({e}): {answer}"))
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
            let e = error_body(&answer);
            assert_eq!(e.exit_code, 2, "{answer}");
            assert_eq!(e.error, "missing or wrong token", "{answer}");
            assert!(
                e.hint.as_deref().is_some_and(|h| h.contains("--state-dir")),
                "{answer}"
            );
        }
        // With the token the same request gets past the guard.
        if *path != "/v1/deployments" {
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
async fn health_needs_no_token_and_an_unknown_path_is_a_json_404() {
    let a = api().await;
    let (code, answer) = call(a.addr, "GET", "/v1/health", None, b"").await;
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["status"], "ok", "{answer}");
    for (method, path, says) in [
        (
            "GET",
            "/v1/no-such-thing",
            "no such endpoint: /v1/no-such-thing",
        ),
        ("GET", "/", "no such endpoint: /"),
        ("DELETE", "/v1/services/web", "no such endpoint"),
        ("POST", "/v1/services/web/restart", "no action `restart`"),
    ] {
        let (code, answer) = call(a.addr, method, path, Some(&a.token), b"").await;
        assert_eq!(code, 404, "{method} {path}: {answer}");
        let e = error_body(&answer);
        assert_eq!(e.exit_code, 4, "{answer}");
        assert!(e.error.contains(says), "{method} {path}: {answer}");
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
        let (code, answer) = call(a.addr, "POST", path, Some(&a.token), &padded(65_537)).await;
        assert_eq!(code, 413, "{path}: {answer}");
        let e = error_body(&answer);
        assert_eq!(e.exit_code, 2, "{answer}");
        assert!(e.error.contains("too large"), "{path}: {answer}");
        let (code, answer) = call(a.addr, "POST", path, Some(&a.token), &padded(65_536)).await;
        assert_ne!(code, 413, "{path}: {answer}");
    }
    // A promote's body is read as strictly as the others.
    let (code, answer) = call(
        a.addr,
        "POST",
        "/v1/services/web/promote",
        Some(&a.token),
        br#"{"by": "#,
    )
    .await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        error_body(&answer).error.contains("bad promote request"),
        "{answer}"
    );
    assert_eq!(
        a.trace.since(hatoba_core::Millis(0)),
        Vec::<(u64, Action)>::new()
    );
}
