//! Nothing outlives a test of `hatoba up`. The data plane is started
//! detached and outlives its controller by design, so: a test that fails
//! leaves no process of its state directory behind (the sandbox's sweep),
//! and a `hatoba dataplane` left without a state directory (its control
//! socket gone, nobody can reach it) stops by itself instead of holding its
//! ports until the machine restarts (the leftover the test suite once left).

use crate::support::{Reaped, Sandbox, Sweep, Traffic, data_plane_pid, poll, processes_of};
use std::time::Duration;

/// One service of one instance of this binary as the demo app.
fn spec(port: u16) -> String {
    format!(
        "app: leftovers\nservices:\n  web:\n    process: {{command: {exe}, args: [demo-app]}}\n    \
         replicas: 1\n    route: {{listen: \"127.0.0.1:{port}\"}}\n    \
         strategy: {{rolling: {{maxSurge: 1, maxUnavailable: 0}}}}\n",
        exe = env!("CARGO_BIN_EXE_hatoba")
    )
}

/// A test that panics after its `hatoba up` was killed with SIGKILL (the
/// data plane and the instance running on, as designed) leaves nothing
/// running: dropping its sandbox ends them.
#[test]
fn a_test_that_fails_leaves_no_process_of_its_state_directory() {
    let sb = Sandbox::new(spec);
    let state = sb.state.clone();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let sb = sb;
        let server = sb.up(&[]);
        sb.deploy_ok("v1");
        server.kill9();
        // The data plane and the instance.
        let left = processes_of(&sb.state);
        assert_eq!(left.len(), 2, "{left:?}");
        panic!("a test failing with its data plane and instance running");
    }));
    assert!(failed.is_err());
    let left = processes_of(&state);
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn a_data_plane_whose_state_directory_is_removed_stops_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _sweep = Sweep(state.clone());
    let mut child = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_hatoba"))
            .arg("--state-dir")
            .arg(&state)
            .arg("dataplane")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    // It serves a service's port, as one that `hatoba up` drove does.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = state.join("dataplane.sock");
    let listening = poll("the data plane to answer", Duration::from_secs(30), || {
        rt.block_on(async {
            let c = hatoba_proxy::control::ControlClient::connect(&socket)
                .await
                .ok()?;
            c.listen("web", "127.0.0.1:0".parse().unwrap()).await.ok()
        })
    });
    assert!(std::net::TcpStream::connect(listening).is_ok());

    std::fs::remove_dir_all(&state).unwrap();
    // Its check runs every second; the deadline only bounds a failure.
    let status = poll(
        "the data plane to stop by itself",
        Duration::from_secs(30),
        || child.0.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(1), "pid {pid}: {status:?}");
    assert!(
        std::net::TcpStream::connect(listening).is_err(),
        "{listening} still accepts"
    );
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut said).unwrap();
    assert!(
        said.contains(&format!("{} was removed", socket.display())),
        "{said}"
    );
}

/// Kills the data plane of `state` with SIGKILL under `load` and waits
/// until another one has served `extra` more requests; it is the `nth`
/// data plane restarted in `state`.
fn kill_data_plane_under(state: &std::path::Path, load: &Traffic, extra: u64, nth: usize) {
    let first = data_plane_pid(state).expect("a data plane process");
    let before = load.so_far().answered();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    poll("another data plane", Duration::from_secs(30), || {
        data_plane_pid(state).filter(|p| *p != first)
    });
    load.wait_answered(before + extra);
    // It accepts on the sockets `hatoba up` kept, not on new ones.
    let log = std::fs::read_to_string(state.join("dataplane.log")).unwrap();
    let took = log
        .lines()
        .filter(|l| l.starts_with("service `web`: accepting on the "))
        .count();
    assert_eq!(took, nth, "{log}");
}

/// A `hatoba up` of one service of two instances, with `v1` deployed and
/// four clients sending to it on fresh connections.
fn serving_under_load() -> (Sandbox, crate::support::Up, Traffic) {
    let sb = crate::up::rolling_web(&crate::up::demo_process("${VERSION}"), 2);
    let server = sb.up(&[]);
    sb.deploy_ok("v1");
    let load = Traffic::clients(sb.port, 4);
    load.wait_answered(100);
    (sb, server, load)
}

/// The data plane killed with SIGKILL under steady load refuses no
/// connection: its supervisor keeps a duplicate of every listening socket,
/// so the kernel keeps queuing connections while no data plane runs, and
/// the restarted one accepts on those very sockets. Requests that were in
/// flight on the killed process may be cut (it is gone mid-answer); they
/// are counted apart.
#[test]
fn a_killed_data_plane_refuses_no_connection() {
    let (sb, _server, load) = serving_under_load();
    for nth in 1..=2 {
        kill_data_plane_under(&sb.state, &load, 100, nth);
    }
    let counts = load.finish();
    eprintln!("data plane killed twice under load: {counts}");
    assert_eq!(counts.refused, 0, "{counts}");
    assert_eq!(counts.proxy_errors + counts.unexplained, 0, "{counts}");
    assert!(counts.answered() >= 300, "{counts}");
}

/// A controller killed and started again takes the listening sockets back
/// from the data plane that outlived it, so a data-plane crash after that
/// refuses no connection either.
#[test]
fn after_a_controller_restart_a_killed_data_plane_refuses_no_connection() {
    let (sb, server, load) = serving_under_load();
    server.kill9();
    let _server = sb.up(&[]);
    kill_data_plane_under(&sb.state, &load, 100, 1);
    let counts = load.finish();
    eprintln!("controller restarted, then data plane killed under load: {counts}");
    assert_eq!(counts.refused, 0, "{counts}");
    assert_eq!(counts.proxy_errors + counts.unexplained, 0, "{counts}");
    assert!(counts.answered() >= 200, "{counts}");
}
