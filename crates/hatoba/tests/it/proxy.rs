//! `hatoba proxy --routes FILE`: serves, reloads on SIGHUP (keeping the
//! running table when the new file is bad), drains and exits 0 on SIGTERM.

use assert_cmd::Command;
use predicates::prelude::*;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;

fn get_version(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("x-version: "))
        .unwrap_or("")
        .to_owned()
}

fn routes(listen: SocketAddr, groups: &[(&str, &str, u8, SocketAddr)]) -> String {
    let mut s = format!("listen = \"{listen}\"\nservice = \"web\"\nthreads = 1\n");
    for (role, version, weight, backend) in groups {
        s.push_str(&format!("[[group]]\nrole = \"{role}\"\nversion = \"{version}\"\nweight = {weight}\nbackends = [\"{backend}\"]\n"));
    }
    s
}

#[test]
fn serves_reloads_and_drains() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = |v: &str| {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = hatoba_demo_app::Config {
            version_label: v.to_owned(),
            ..Default::default()
        };
        rt.spawn(hatoba_demo_app::serve(
            listener,
            cfg,
            std::future::pending(),
        ));
        addr
    };
    let (v1, v2) = (start("v1"), start("v2"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    let listen: SocketAddr = format!("127.0.0.1:{}", hatoba_test_support::free_port().unwrap())
        .parse()
        .unwrap();
    std::fs::write(&file, routes(listen, &[("stable", "v1", 100, v1)])).unwrap();

    let mut child = crate::support::Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
            .args(["proxy", "--routes"])
            .arg(&file)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("listening on {listen}"));
    assert_eq!(get_version(listen), "v1");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    std::fs::write(&file, routes(listen, &[("stable", "v2", 100, v2)])).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    line.clear();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "routes reloaded");
    assert_eq!(get_version(listen), "v2");

    std::fs::write(&file, "listen = \"nonsense\"\n").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    line.clear();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("routes not reloaded, keeping the running table"),
        "{line}"
    );
    assert_eq!(get_version(listen), "v2");

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_bad_routes_file_exits_2_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nservice = \"web\"\n[[group]]\nrole = \"stable\"\nversion = \"v1\"\nwieght = 100\nbackends = []\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["proxy", "--routes"])
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown field `wieght`"))
        .stderr(predicate::str::contains("line 6"));
}
