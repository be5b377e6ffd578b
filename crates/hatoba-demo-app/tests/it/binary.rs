//! The built `hatoba-demo-app` binary: prints its address, serves, exits 0 on
//! SIGTERM, 1 after `--crash-after`, 2 on an invalid knob.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::http::{Reply, parse};

const DEADLINE: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_hatoba-demo-app");

/// The binary with no knob set by the environment the tests run in.
fn demo_app() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "PORT",
        "VERSION",
        "DEMO_HOST",
        "DEMO_ERROR_RATE",
        "DEMO_LATENCY",
        "DEMO_JITTER",
        "DEMO_STARTUP_DELAY",
        "DEMO_READY_AFTER",
        "DEMO_CRASH_AFTER",
        "DEMO_SLOW_SHUTDOWN",
        "DEMO_FAIL_HEALTH",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A started demo app, killed (if it still runs) and reaped when dropped,
/// however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads the address it printed on stderr.
fn spawn(cmd: &mut Command) -> (Running, SocketAddr) {
    let mut child = Running(cmd.spawn().expect("spawn the demo app"));
    let stderr = child.0.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(DEADLINE)
        .expect("`listening on ADDR` on stderr")
        .parse()
        .expect("a socket address");
    (child, addr)
}

fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo app did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    parse(&raw)
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM");
}

#[test]
fn serves_on_port_zero_and_exits_zero_on_sigterm() {
    // The flag wins over PORT (port 1 would fail, or be port 1 as root).
    let (mut child, addr) = spawn(
        demo_app()
            .env("PORT", "1")
            .env("VERSION", "v9")
            .args(["--port", "0"]),
    );
    assert_ne!(addr.port(), 1);
    assert!(addr.ip().is_loopback());
    let reply = get(addr, "/");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hatoba-demo-app v9\n");
    assert_eq!(reply.header("x-version"), Some("v9"));

    sigterm(&child.0);
    assert_eq!(wait(&mut child.0).code(), Some(0));
}

#[test]
fn reads_port_and_knobs_from_the_environment() {
    let (mut child, addr) = spawn(
        demo_app()
            .env("PORT", "0")
            .env("DEMO_ERROR_RATE", "1")
            .env("DEMO_FAIL_HEALTH", "true"),
    );
    assert_eq!(get(addr, "/").status, 500);
    assert_eq!(get(addr, "/health").status, 500);
    sigterm(&child.0);
    assert_eq!(wait(&mut child.0).code(), Some(0));
}

#[test]
fn crash_after_exits_one() {
    let (mut child, addr) = spawn(demo_app().args(["--port", "0", "--crash-after", "2"]));
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(wait(&mut child.0).code(), Some(1));
}

fn rejected(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the demo app");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

#[test]
fn invalid_knobs_exit_two_naming_the_flag() {
    let stderr = rejected(demo_app().args(["--port", "0", "--error-rate", "1.5"]));
    assert!(stderr.contains("--error-rate"), "{stderr}");
    assert!(stderr.contains("between 0.0 and 1.0"), "{stderr}");

    let stderr = rejected(demo_app().args(["--port", "0"]).env("DEMO_LATENCY", "5x"));
    assert!(stderr.contains("--latency"), "{stderr}");
    assert!(stderr.contains("not a unit"), "{stderr}");

    let stderr = rejected(demo_app().args(["--port", "0", "--crash-after", "0"]));
    assert!(stderr.contains("--crash-after"), "{stderr}");
}
