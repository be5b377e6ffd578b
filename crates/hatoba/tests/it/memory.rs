//! Bounded memory and true addresses under `hatoba up`: after a data plane
//! is killed and started again, `server.json` advertises the new data
//! plane's metrics address.

use crate::support::poll;
use crate::up::{demo_process, rolling_web};
use std::io::{Read as _, Write as _};
use std::time::Duration;

/// The `admin` address `server.json` advertises.
fn advertised(state: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(state.join("server.json")).ok()?;
    let info: serde_json::Value = serde_json::from_str(&text).ok()?;
    info["admin"].as_str().map(str::to_owned)
}

/// The body of `GET /metrics` at `addr`, if it answers 200.
fn metrics(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

#[test]
fn after_the_data_plane_is_killed_server_json_advertises_the_new_metrics_address() {
    let sb = rolling_web(&demo_process("${VERSION}"), 1);
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    let before = advertised(&sb.state).expect("server.json names the metrics address");
    assert!(metrics(&before).is_some(), "{before} answers /metrics");
    let data_plane = || crate::support::data_plane_pid(&sb.state);
    let first = data_plane().expect("a data plane process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    poll("another data plane", Duration::from_secs(30), || {
        data_plane().filter(|p| *p != first)
    });
    // The new data plane serves the saved table, so v1's series are there
    // once server.json points at it.
    let text = poll(
        "server.json's admin answers /metrics with v1",
        Duration::from_secs(30),
        || {
            let admin = advertised(&sb.state)?;
            metrics(&admin).filter(|t| t.contains("version=\"v1\""))
        },
    );
    assert!(text.contains("service=\"web\""), "{text}");
}

/// A canary at 50 % waiting at a pause; readiness every 2 s, so the
/// supervisor (which routes at that period between rollouts) is slow to
/// tidy a table the rollout left behind.
fn canary_web(port: u16) -> String {
    format!(
        r#"app: web-test
services:
  web:
    process: {process}
    replicas: 1
    route: {{listen: "127.0.0.1:{port}"}}
    health:
      readiness: {{path: /ready, period: 2s}}
    drain: 1s
    strategy:
      canary:
        steps:
          - setWeight: 50
          - pause: {{}}
"#,
        process = demo_process("${VERSION}")
    )
}

#[test]
fn an_aborted_canary_leaves_no_group_in_the_route_once_the_abort_is_recorded() {
    use crate::support::{hatoba, latest};
    let sb = crate::support::Sandbox::new(canary_web);
    let _server = sb.up(&[]);
    sb.deploy_ok("v1");
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    let route = || crate::up::diagnose(&sb.state)["service"]["route"].clone();
    poll("v2 at 50 %", Duration::from_secs(60), || {
        route()
            .as_array()?
            .iter()
            .any(|g| g["version"] == "v2" && g["weight"] == 50)
            .then_some(())
    });
    hatoba(&sb.state).args(["abort", "web"]).assert().success();
    poll("v2 aborted", Duration::from_secs(30), || {
        (latest(&sb.state)["status"] == "aborted").then_some(())
    });
    let groups = route();
    let groups = groups.as_array().expect("a route table");
    assert!(
        groups.iter().all(|g| g["version"] == "v1"),
        "only v1 is routed once the abort is recorded: {groups:?}"
    );
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["weight"], 100, "{groups:?}");
}
