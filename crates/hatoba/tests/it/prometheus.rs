//! A canary judged through a real Prometheus (Debian's) with the seeds'
//! PromQL: Prometheus scrapes the data plane's `/metrics` every second,
//! and the canary step's analysis asks it for the new version's success
//! rate and p95 latency.

use crate::support::{Sandbox, Traffic, hatoba};

fn spec(port: u16, prometheus: &str) -> String {
    let selector = r#"service="{{service}}",version="{{version}}""#;
    format!(
        r#"app: prometheus-test
services:
  web:
    process:
      command: {exe}
      args: ["demo-app", "--version-label", "${{VERSION}}"]
      env: {{DEMO_ERROR_RATE: "${{ERROR_RATE:-0}}"}}
    replicas: 2
    route: {{listen: "127.0.0.1:{port}"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    progressDeadline: 20s
    drain: 500ms
    strategy:
      canary:
        steps:
          - setWeight: 50
          - analysis: {{templates: [seeds]}}
analysis:
  templates:
    seeds:
      metrics:
        - name: success-rate
          interval: 1s
          count: 3
          # Prometheus needs a few seconds to scrape the new version twice.
          consecutiveErrorLimit: 90
          successCondition: result >= 0.95
          provider:
            prometheus:
              address: {prometheus}
              query: 'sum(rate(http_requests_total{{{selector},status=~"2.."}}[10s])) / sum(rate(http_requests_total{{{selector}}}[10s]))'
        - name: p95
          interval: 1s
          count: 3
          consecutiveErrorLimit: 90
          successCondition: result < 0.5
          provider:
            prometheus:
              address: {prometheus}
              query: 'histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket{{{selector}}}[10s])) by (le))'
"#,
        exe = env!("CARGO_BIN_EXE_hatoba")
    )
}

#[test]
fn a_canary_is_judged_by_prometheus_with_the_seeds_queries() {
    let metrics: std::net::SocketAddr =
        format!("127.0.0.1:{}", hatoba_test_support::free_port().unwrap())
            .parse()
            .unwrap();
    let Some(prom) = hatoba_test_support::prometheus(&[metrics]) else {
        return;
    };
    let sb = Sandbox::new(|port| spec(port, &prom.url()));
    let (state, port) = (sb.state.clone(), sb.port);
    hatoba(&state)
        .args(["validate", "-f"])
        .arg(&sb.file)
        .assert()
        .success();
    let _up = sb.up(&["--metrics", &metrics.to_string()]);
    sb.deploy_ok("v1");

    // Steady traffic, so Prometheus has rates to compute.
    let load = Traffic::start(port);
    let out = hatoba(&state)
        .args(["deploy", "web", "--version", "v2", "--wait", "-o", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        prom.log()
    );
    let detail: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = detail["deployment"]["id"].as_str().unwrap().to_owned();
    drop(load);

    // Every measurement is recorded: three passed ones per metric, with the
    // values Prometheus computed.
    let out = hatoba(&state)
        .args(["analysis", &id, "-o", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let passed = |metric: &str| -> Vec<f64> {
        report["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["metric"] == metric && m["verdict"] == "passed")
            .map(|m| m["value"].as_f64().unwrap())
            .collect()
    };
    let success = passed("success-rate");
    assert_eq!(success.len(), 3, "{report}");
    assert!(
        success.iter().all(|v| *v >= 0.95 && *v <= 1.0),
        "{success:?}"
    );
    let p95 = passed("p95");
    assert_eq!(p95.len(), 3, "{report}");
    assert!(p95.iter().all(|v| *v > 0.0 && *v < 0.5), "{p95:?}");
    // Before Prometheus had the new version's series, its answers were
    // provider errors, never passes.
    let text = hatoba(&state).args(["analysis", &id]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("success-rate"));
}
