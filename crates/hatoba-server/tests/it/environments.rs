//! The API of `hatoba up` running several environments
//! (`Environments::serve_api` over the fakes): a deployment's id names its
//! environment, so a `?env=` naming another one is not found, saying which
//! one it is in, by every route of a deployment; one the server does not
//! run is the bad input of every route.

use crate::api::error_body;
use crate::fake::call;
use std::net::SocketAddr;

/// `hatoba up --env staging --env production` over the fakes, `web` in
/// both, served on a loopback port with `token`.
async fn two_environments_api(token: &str, dir: &std::path::Path) -> SocketAddr {
    let yaml = r#"
app: test
services:
  web:
    process: {command: fake-app}
    replicas: 1
    route: {listen: "127.0.0.1:10"}
    health:
      readiness: {path: /ready}
environments:
  staging:
    services:
      web: {route: {listen: "127.0.0.1:11"}}
  production:
    services:
      web: {route: {listen: "127.0.0.1:12"}}
"#;
    let spec = hatoba_spec::parse(yaml).spec.unwrap();
    crate::fake::environments_api(token, dir, spec, &["staging", "production"]).await
}

#[tokio::test]
async fn a_deployment_asked_for_in_another_environment_is_not_found_naming_its_own() {
    let token = hatoba_server::new_token();
    let dir = tempfile::tempdir().unwrap();
    let up = two_environments_api(&token, dir.path()).await;
    let (code, answer) = call(
        up,
        "POST",
        "/api/v1/deployments",
        Some(&token),
        br#"{"service": "web", "version": "v1", "environment": "staging"}"#,
    )
    .await;
    assert_eq!(code, 202, "{answer}");
    let id = serde_json::from_str::<hatoba_api::Deployment>(&answer)
        .unwrap()
        .id;

    // Its id names its environment: asked without `?env=` or with its
    // own, it is answered.
    for path in [
        format!("/api/v1/deployments/{id}"),
        format!("/api/v1/deployments/{id}?env=staging"),
    ] {
        let (code, answer) = call(up, "GET", &path, Some(&token), b"").await;
        assert_eq!(code, 200, "{path}: {answer}");
        let d: hatoba_api::DeploymentDetail = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            (d.deployment.id.as_str(), d.deployment.environment.as_str()),
            (id.as_str(), "staging"),
            "{path}"
        );
    }
    // Asked for in the other environment: not found, saying where it is,
    // by each route of a deployment.
    for (method, path, body) in [
        (
            "GET",
            format!("/api/v1/deployments/{id}?env=production"),
            "",
        ),
        (
            "GET",
            format!("/api/v1/deployments/{id}/analysis?env=production"),
            "",
        ),
        (
            "POST",
            format!("/api/v1/deployments/{id}/approve?env=production"),
            r#"{"by": "bob"}"#,
        ),
    ] {
        let (code, answer) = call(up, method, &path, Some(&token), body.as_bytes()).await;
        let e = error_body(code, &answer);
        assert_eq!(code, 404, "{method} {path}: {answer}");
        assert_eq!(
            e.message,
            format!("deployment {id} is in environment `staging`, not `production`"),
            "{method} {path}"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("ask with `?env=staging`, or without `?env=`"),
            "{method} {path}"
        );
    }
    // An environment the server does not run is refused as on every route.
    let path = format!("/api/v1/deployments/{id}?env=qa");
    let (code, answer) = call(up, "GET", &path, Some(&token), b"").await;
    let e = error_body(code, &answer);
    assert_eq!(code, 400, "{answer}");
    assert!(
        e.message.contains("`staging`")
            && e.message.contains("`production`")
            && e.message.contains("`qa`"),
        "{answer}"
    );
    assert_eq!(e.field.as_deref(), Some("environment"), "{answer}");
    // An unknown deployment with an environment the server runs: the
    // route's own not found.
    let path = "/api/v1/deployments/d-01kbx2m3n4p5q6r7s8t9v0w1x2?env=production";
    let (code, answer) = call(up, "GET", path, Some(&token), b"").await;
    assert_eq!(code, 404, "{answer}");
    assert!(
        error_body(code, &answer).message.contains("no deployment"),
        "{answer}"
    );
}
