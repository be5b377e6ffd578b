//! Canaries judged through a real Prometheus (Debian's) scraping the data
//! plane's `/metrics` every second (`hatoba up --metrics ADDR`): a good
//! canary passes the seeds' PromQL; a bad one (the demo app's
//! `ERROR_RATE`) is rolled back by a Prometheus condition alone
//! (`judge: false`), naming the metric and its value; and a canary whose
//! Prometheus stops mid-analysis is held, never promoted on the missing
//! answers.

use crate::evidence::{current, events, wait_for_event};
use crate::support::{Sandbox, Traffic, hatoba, latest, poll_explained};
use std::path::Path;
use std::time::Duration;

fn spec(port: u16, prometheus: &str) -> String {
    let selector = r#"service="{{service}}",version="{{version}}""#;
    let templates = format!(
        r#"    seeds:
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
"#
    );
    crate::support::CanaryWeb {
        app: "prometheus-test",
        replicas: 2,
        progress_deadline: "20s",
        drain: "500ms",
        canary: "        steps:\n          - setWeight: 50\n          - analysis: {templates: [seeds]}",
        templates: &templates,
    }
    .spec(port)
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
    // provider errors, never passes nor failures.
    for m in report["measurements"].as_array().unwrap() {
        let verdict = m["verdict"].as_str().unwrap_or_default();
        let detail = m["detail"].as_str().unwrap_or_default();
        assert!(
            verdict == "passed" || (verdict == "error" && m["value"].is_null()),
            "{m}"
        );
        assert!(detail.contains("prometheus"), "{m}");
    }
    let text = hatoba(&state).args(["analysis", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("success-rate") && text.contains("p95"),
        "{text}"
    );
}

/// A canary 50 % → one analysis step judged only by the new version's
/// success rate in Prometheus (`judge: false`: the statistical judge stays
/// out), `count` measurements a second apart; `errors` provider errors in
/// a row are allowed, since Prometheus needs a few seconds to scrape a new
/// version twice.
fn slo_spec(port: u16, prometheus: &str, count: u32, errors: u32) -> String {
    let selector = r#"service="{{service}}",version="{{version}}""#;
    let templates = format!(
        r#"    slo:
      judge: false
      metrics:
        - name: success-rate
          interval: 1s
          count: {count}
          consecutiveErrorLimit: {errors}
          successCondition: result >= 0.95
          provider:
            prometheus:
              address: {prometheus}
              query: 'sum(rate(http_requests_total{{{selector},status=~"2.."}}[10s])) / sum(rate(http_requests_total{{{selector}}}[10s]))'
"#
    );
    crate::support::CanaryWeb {
        app: "prometheus-slo",
        replicas: 1,
        progress_deadline: "5m",
        drain: "500ms",
        canary: "        steps:\n          - setWeight: 50\n          - analysis: {templates: [slo]}",
        templates: &templates,
    }
    .spec(port)
}

/// The measurements of deployment `id` (`hatoba analysis ID -o json`).
fn measurements(state: &Path, id: &str) -> Vec<serde_json::Value> {
    let out = hatoba(state)
        .args(["analysis", id, "-o", "json"])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|r| r["measurements"].as_array().cloned())
        .unwrap_or_default()
}

/// A free loopback address for `hatoba up --metrics`.
fn metrics_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from((
        std::net::Ipv4Addr::LOCALHOST,
        hatoba_test_support::free_port().unwrap(),
    ))
}

#[test]
fn a_bad_canary_is_rolled_back_by_a_prometheus_condition_alone() {
    let metrics = metrics_addr();
    let Some(prom) = hatoba_test_support::prometheus(&[metrics]) else {
        return;
    };
    let sb = Sandbox::new(|port| slo_spec(port, &prom.url(), 3, 90));
    let state = sb.state.clone();
    hatoba(&state)
        .args(["validate", "-f"])
        .arg(&sb.file)
        .assert()
        .success();
    let _up = sb.up(&["--metrics", &metrics.to_string()]);
    sb.deploy_ok("v1");

    // v2 fails 30 % of its requests; steady traffic so Prometheus has
    // rates to compute.
    let load = Traffic::start(sb.port);
    let out = hatoba(&state)
        .args([
            "deploy",
            "web",
            "--version",
            "v2",
            "--set",
            "ERROR_RATE=0.3",
            "--wait",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    drop(load);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        prom.log()
    );
    let detail: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(detail["deployment"]["status"], "rolled_back", "{detail}");
    let id = detail["deployment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(current(&state).as_deref(), Some("v1"));

    // Prometheus decided: one failed measurement of its metric, with the
    // value it computed (about 0.7), and nothing from the judge.
    let all = measurements(&state, &id);
    let failed: Vec<&serde_json::Value> = all.iter().filter(|m| m["verdict"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{all:?}");
    let m = failed[0];
    assert_eq!(m["metric"], "success-rate", "{m}");
    let value = m["value"].as_f64().unwrap();
    assert!(value > 0.4 && value < 0.95, "{m}");
    assert!(
        m["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("prometheus: ")),
        "{m}"
    );
    assert!(
        all.iter().all(|m| m["metric"] == "success-rate"),
        "the statistical judge is switched off: {all:?}"
    );
    // The deployment's timeline names the metric, its value and the rule.
    let events = events(&state);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with(&format!("success-rate = {value:.4}: failed (prometheus: "))),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("fail: metric success-rate: 1 failed measurements, limit 0")),
        "{events:?}"
    );
    let reason = latest(&state)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("analysis failed"), "{reason}");
}

#[test]
fn a_canary_whose_prometheus_stops_mid_analysis_is_held_not_promoted() {
    let metrics = metrics_addr();
    let Some(prom) = hatoba_test_support::prometheus(&[metrics]) else {
        return;
    };
    let prom_url = prom.url();
    // Thirty measurements to pass; more than twenty errors in a row (a
    // few while Prometheus first scrapes v2, then every one after the
    // stop) make the step inconclusive.
    let sb = Sandbox::new(|port| slo_spec(port, &prom_url, 30, 20));
    let state = sb.state.clone();
    let _up = sb.up(&["--metrics", &metrics.to_string()]);
    sb.deploy_ok("v1");
    let load = Traffic::start(sb.port);
    hatoba(&state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    let id = latest(&state)["id"].as_str().unwrap().to_owned();
    // Prometheus answers for v2 once it has scraped it twice ...
    poll_explained(
        "a measurement passed through Prometheus",
        Duration::from_secs(60),
        || {
            measurements(&state, &id)
                .iter()
                .any(|m| m["verdict"] == "passed")
                .then_some(())
        },
        || format!("{:?}\n{}", measurements(&state, &id), prom.log()),
    );
    // ... and then stops answering at all.
    drop(prom);
    wait_for_event(
        &state,
        "the step inconclusive",
        "analysis inconclusive: waiting for `hatoba promote",
    );
    // Held, not promoted: v1 still serves, the deployment goes on, and the
    // measurements after the stop are errors naming Prometheus, not passes.
    assert_eq!(latest(&state)["status"], "in_progress");
    assert_eq!(current(&state).as_deref(), Some("v1"));
    let all = measurements(&state, &id);
    let passed = all.iter().filter(|m| m["verdict"] == "passed").count();
    assert!((1..30).contains(&passed), "{all:?}");
    let last = all.last().unwrap();
    assert_eq!(last["verdict"], "error", "{all:?}");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&prom_url.replace("http://", ""))),
        "{last}"
    );
    drop(load);
    hatoba(&state).args(["abort", "web"]).assert().success();
    poll_explained(
        "v2 aborted",
        Duration::from_secs(30),
        || (latest(&state)["status"] == "aborted").then_some(()),
        String::new,
    );
    assert_eq!(current(&state).as_deref(), Some("v1"));
}
