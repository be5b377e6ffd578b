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
    let state = std::path::absolute(&sb.state)
        .unwrap()
        .display()
        .to_string();
    let data_plane = || -> Option<i32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline);
            (text.contains(&state) && text.split('\0').any(|a| a == "dataplane"))
                .then(|| e.file_name().to_str()?.parse().ok())?
        })
    };
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
