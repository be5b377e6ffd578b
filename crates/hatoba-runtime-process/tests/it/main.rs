//! The process runtime passes the runtime conformance story, with this test
//! binary re-executed as the programs it runs; plus what is particular to
//! processes: process groups, environment and log files, instances that
//! outlive a SIGKILLed controller and are adopted by the next one (its
//! orphans swept), usage from `/proc`, log rotation under a writing child.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use hatoba_runtime::{
    InstanceId, InstanceSpec, InstanceState, InstanceStatus, Runtime, RuntimeError, Workload,
};
use hatoba_runtime_process::{INSTANCE_ENV, LogLimits, ProcessRuntime, SCOPE_ENV};
use hatoba_test_support::{StoryPrograms, StoryRuntimes, http_ok, runtime_story, wait_for_async};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROLE: &str = "HATOBA_RUNTIME_TEST_ROLE";
/// For the `controller` role: where it writes what it started.
const RECORD: &str = "HATOBA_RUNTIME_TEST_RECORD";
/// For the `controller` role: its log directory.
const LOGS: &str = "HATOBA_RUNTIME_TEST_LOGS";
/// The arguments that make this binary run only [`child`].
const CHILD_ARGS: [&str; 4] = ["child", "--exact", "--nocapture", "--test-threads=1"];

/// When re-executed as an instance: serve the demo app on `PORT`.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "exit3" => std::process::exit(3),
        "chatty" => chatty(),
        "busy" => busy(),
        "forks" => forks(),
        "daemonizes" => daemonizes(),
        "controller" => controller(),
        _ => {}
    }
    if role == "ignore-sigterm" {
        // Ignore SIGTERM for the whole process.
        ignore_sigterm();
    }
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        eprintln!("child listening on {port}");
        let shutdown = async {
            if role == "ignore-sigterm" {
                std::future::pending::<()>().await;
            }
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
        };
        let _ =
            hatoba_demo_app::serve(listener, hatoba_demo_app::Config::default(), shutdown).await;
    });
    std::process::exit(0);
}

/// SIGTERM ignored through tokio: register a handler and never read it.
fn ignore_sigterm() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sig = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap()
    });
    std::mem::forget(sig);
    std::mem::forget(rt);
}

/// Writes `tick N` lines to stderr (the log), one `write` each, until killed.
fn chatty() -> ! {
    let mut err = std::io::stderr();
    for n in 0u64.. {
        let _ = err.write_all(format!("tick {n}\n").as_bytes());
        // Pacing of the child's own output, not a wait in a test.
        std::thread::sleep(Duration::from_millis(1));
    }
    std::process::exit(0)
}

/// Burns CPU until killed.
fn busy() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// Starts a `busy` child in its own process group and waits for it: the
/// leader is idle, the group is not.
fn forks() -> ! {
    let mut busy = std::process::Command::new(std::env::current_exe().unwrap())
        .args(CHILD_ARGS)
        .env(ROLE, "busy")
        .spawn()
        .unwrap();
    let _ = busy.wait();
    std::process::exit(0)
}

/// Starts a `busy` child and returns at once, the way a command that
/// starts a daemon does: the child keeps the instance's environment.
fn daemonizes() -> ! {
    let busy = std::process::Command::new(std::env::current_exe().unwrap())
        .args(CHILD_ARGS)
        .env(ROLE, "busy")
        .spawn()
        .unwrap();
    let _ = std::io::stderr().write_all(format!("daemon pid {}\n", busy.id()).as_bytes());
    std::process::exit(0)
}

/// A controller that starts two instances, records one (in `RECORD`, the
/// way a controller would persist it) and not the other (its line is
/// written apart, for the test to check, as if never recorded), then waits
/// to be killed.
fn controller() -> ! {
    let record = PathBuf::from(std::env::var(RECORD).unwrap());
    let logs = PathBuf::from(std::env::var(LOGS).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = ProcessRuntime::new(logs);
        let kept = runtime
            .start(&spec("serve"), hatoba_core::Millis(7))
            .await
            .unwrap();
        let orphan = runtime
            .start(&spec("serve"), hatoba_core::Millis(8))
            .await
            .unwrap();
        let line = |s: &InstanceStatus| {
            format!(
                "{} {} {} {} {}\n",
                s.id,
                s.pid.unwrap(),
                s.proc_start.unwrap(),
                s.addr.port(),
                s.log.as_ref().unwrap().display()
            )
        };
        write_atomically(&record.with_extension("orphan"), &line(&orphan));
        write_atomically(&record, &line(&kept));
        std::future::pending::<()>().await;
    });
    std::process::exit(0)
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Reads back a line written by [`controller`] as the status it stood for.
fn parse_record(text: &str) -> InstanceStatus {
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 5, "{text:?}");
    InstanceStatus {
        id: InstanceId(f[0].to_owned()),
        service: "web".parse().unwrap(),
        version: "v1".parse().unwrap(),
        addr: ([127, 0, 0, 1], f[3].parse().unwrap()).into(),
        pid: Some(f[1].parse().unwrap()),
        proc_start: Some(f[2].parse().unwrap()),
        started_at: hatoba_core::Millis(7),
        state: InstanceState::Running,
        log: Some(PathBuf::from(f[4])),
        identity: None,
        oom_killed: false,
        memory_limit: None,
        own_health: None,
    }
}

fn spec(role: &str) -> InstanceSpec {
    let exe = std::env::current_exe().unwrap();
    InstanceSpec {
        service: "web".parse().unwrap(),
        version: "v1".parse().unwrap(),
        workload: Workload::Process {
            program: exe.display().to_string(),
            args: CHILD_ARGS.map(String::from).to_vec(),
        },
        env: BTreeMap::from([(ROLE.to_owned(), role.to_owned())]),
        working_dir: std::env::temp_dir(),
        secrets: BTreeMap::new(),
    }
}

/// The environment a process was started with. Read as soon as `start`
/// returns it can still be empty: the parent resumes when the child's exec
/// has begun, a moment before the kernel has laid out the new environment.
fn environ(pid: u32) -> Vec<String> {
    let read = || {
        let bytes = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .split('\0')
            .filter(|kv| !kv.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    hatoba_test_support::wait_for(DEADLINE, || !read().is_empty()).unwrap();
    read()
}

/// When dropped, kills every process that carries one of `scopes` (and the
/// process `extra`): a test that fails half-way leaves nothing running.
struct Cleanup {
    scopes: Vec<String>,
    extra: Option<u32>,
}

impl Cleanup {
    fn scopes(scopes: &[&str]) -> Cleanup {
        Cleanup {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            extra: None,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let kill = |pid: u32| {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        };
        if let Some(pid) = self.extra.take() {
            kill(pid);
        }
        let wanted: Vec<String> = self
            .scopes
            .iter()
            .map(|s| format!("{SCOPE_ENV}={s}"))
            .collect();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env
                .split(|b| *b == 0)
                .any(|kv| wanted.iter().any(|w| kv == w.as_bytes()))
            {
                kill(pid);
            }
        }
    }
}

const DEADLINE: Duration = Duration::from_secs(30);

/// A runtime in a fresh directory with a scope of its own; what it started
/// is killed when the returned [`Cleanup`] drops, even if the test fails.
fn scoped_runtime(name: &str) -> (tempfile::TempDir, ProcessRuntime, String, Cleanup) {
    let dir = tempfile::tempdir().unwrap();
    let scope = format!("{name}-{}", dir.path().display());
    let rt = ProcessRuntime::new(dir.path().join("logs")).with_scope(&scope);
    let cleanup = Cleanup::scopes(&[&scope]);
    (dir, rt, scope, cleanup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_runtime_story() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs"));
    // A restarted controller: same log directory, so the same scope.
    let twin = ProcessRuntime::new(dir.path().join("logs"));
    assert_eq!(twin.scope(), rt.scope());
    let neighbour = ProcessRuntime::new(dir.path().join("logs"))
        .with_scope(format!("{}-elsewhere", dir.path().display()));
    let _cleanup = Cleanup::scopes(&[rt.scope(), neighbour.scope()]);
    let missing = InstanceSpec {
        workload: Workload::Process {
            program: "./no-such-program".to_owned(),
            args: Vec::new(),
        },
        ..spec("serve")
    };
    runtime_story(
        StoryRuntimes {
            main: &rt,
            same_scope: &twin,
            other_scope: &neighbour,
        },
        StoryPrograms {
            serve: spec("serve"),
            exit_at_once: spec("exit3"),
            ignores_sigterm: spec("ignore-sigterm"),
            missing,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_get_their_own_group_port_env_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs"));
    let _cleanup = Cleanup::scopes(&[rt.scope()]);
    let s = rt
        .start(&spec("serve"), hatoba_core::Millis(0))
        .await
        .unwrap();
    let pid = s.pid.unwrap();
    // Field 5 of /proc/PID/stat is the process group.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgrp: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid, "an instance leads its own process group");
    let environ = environ(pid);
    assert!(
        environ.contains(&format!("PORT={}", s.addr.port())),
        "PORT not set"
    );
    assert!(environ.contains(&format!("{ROLE}=serve")));
    assert!(environ.contains(&format!("{INSTANCE_ENV}={}", s.id)));
    let scope = std::path::absolute(dir.path().join("logs")).unwrap();
    assert_eq!(rt.scope(), scope.to_str().unwrap(), "the default scope");
    assert!(environ.contains(&format!("{SCOPE_ENV}={}", scope.display())));
    // Field 22 is the start time.
    let start: u64 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(s.proc_start, Some(start));
    let log = s.log.clone().unwrap();
    assert!(log.starts_with(dir.path().join("logs").join("web")));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&log), 0o600, "an instance's log is its owner's only");
        assert_eq!(mode(log.parent().unwrap()), 0o700);
    }
    hatoba_test_support::wait_for_async(std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains(&format!("child listening on {}", s.addr.port())) }
    })
    .await
    .unwrap();
    rt.stop(&s.id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
}

/// A secret reaches the process's environment and arguments only when it
/// starts: the spec handed to the runtime holds `${NAME}`, and its `Debug`
/// shows no value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_filled_in_only_in_the_started_process() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs"));
    let _cleanup = Cleanup::scopes(&[rt.scope()]);
    let out = dir.path().join("seen");
    let canary = "s3cr3t-canary-${PORT}-9c1e";
    let spec = InstanceSpec {
        workload: Workload::Process {
            program: "/bin/sh".to_owned(),
            args: vec![
                "-c".to_owned(),
                // The instance's program: it writes what it saw, then stays running
                // until the test stops it (`exec sleep`, not a wait of the test).
                "printf '%s|%s' \"$DB_URL\" \"$1\" > \"$OUT\"; exec sleep 30".to_owned(),
                "sh".to_owned(),
                "${TOKEN}:${NOT_A_SECRET}".to_owned(),
            ],
        },
        env: [
            ("DB_URL".to_owned(), "pg://u:${TOKEN}@db:${PORT}".to_owned()),
            ("OUT".to_owned(), out.display().to_string()),
        ]
        .into(),
        secrets: [(
            "TOKEN".to_owned(),
            hatoba_core::SecretValue::new(canary.to_owned()),
        )]
        .into(),
        ..spec("serve")
    };
    assert!(!format!("{spec:?}").contains("s3cr3t"));
    let s = rt.start(&spec, hatoba_core::Millis(0)).await.unwrap();
    let port = s.addr.port();
    hatoba_test_support::wait_for_async(std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        async move { text.contains('|') }
    })
    .await
    .unwrap();
    // The value is put in as it is: its own `${PORT}` is not filled in.
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("pg://u:{canary}@db:{port}|{canary}:${{NOT_A_SECRET}}")
    );
    rt.stop(&s.id, std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_placeholders_in_args_and_env_become_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs"));
    let _cleanup = Cleanup::scopes(&[rt.scope()]);
    let spec = InstanceSpec {
        workload: Workload::Process {
            program: "/bin/sh".to_owned(),
            args: vec![
                "-c".to_owned(),
                // The instance's program: it writes what it saw, then stays running
                // until the test stops it (`exec sleep`, not a wait of the test).
                "echo \"arg=$1 env=$LISTEN\"; exec sleep 30".to_owned(),
                "sh".to_owned(),
                "--port=${PORT}".to_owned(),
            ],
        },
        env: [("LISTEN".to_owned(), "127.0.0.1:${PORT}".to_owned())].into(),
        ..spec("serve")
    };
    let s = rt.start(&spec, hatoba_core::Millis(0)).await.unwrap();
    let port = s.addr.port();
    let log = s.log.clone().unwrap();
    hatoba_test_support::wait_for_async(std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains(&format!("arg=--port={port} env=127.0.0.1:{port}")) }
    })
    .await
    .unwrap();
    // A running instance is not forgotten; a stopped one is.
    rt.forget(&s.id).await;
    assert_eq!(rt.list(&s.service).await.unwrap().len(), 1);
    rt.stop(&s.id, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    rt.forget(&s.id).await;
    assert!(rt.list(&s.service).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_outlive_a_killed_controller_then_are_adopted_or_swept() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let record = dir.path().join("record");
    let scope = std::path::absolute(&logs).unwrap();
    let mut cleanup = Cleanup::scopes(&[scope.to_str().unwrap()]);
    let mut controller = std::process::Command::new(std::env::current_exe().unwrap())
        .args(CHILD_ARGS)
        .env(ROLE, "controller")
        .env(RECORD, &record)
        .env(LOGS, &logs)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cleanup.extra = Some(controller.id());
    wait_for_async(DEADLINE, || {
        let there = record.exists();
        async move { there }
    })
    .await
    .unwrap();
    let kept = parse_record(&std::fs::read_to_string(&record).unwrap());
    let orphan = parse_record(&std::fs::read_to_string(record.with_extension("orphan")).unwrap());
    for s in [&kept, &orphan] {
        wait_for_async(DEADLINE, || http_ok(s.addr)).await.unwrap();
    }

    controller.kill().unwrap(); // SIGKILL: no chance to clean up
    cleanup.extra = None;
    controller.wait().unwrap();
    assert!(
        http_ok(kept.addr).await,
        "an instance died with its controller"
    );
    assert!(
        http_ok(orphan.addr).await,
        "an instance died with its controller"
    );

    // The next controller: same log directory, so same scope.
    let rt = ProcessRuntime::new(&logs);
    let adopted = rt.adopt(&kept).await.unwrap();
    assert_eq!(adopted.state, InstanceState::Running, "{adopted:?}");
    assert_eq!(
        (adopted.pid, adopted.proc_start),
        (kept.pid, kept.proc_start)
    );

    // The instance it never recorded is swept; the adopted one is known.
    let swept = rt.sweep(&[]).await.unwrap();
    assert_eq!(swept, std::slice::from_ref(&orphan.id));
    assert!(!http_ok(orphan.addr).await, "the orphan still serves");
    assert!(
        http_ok(kept.addr).await,
        "the sweep ended an adopted instance"
    );
    let orphan_pid = orphan.pid.unwrap();
    let gone = std::fs::read_to_string(format!("/proc/{orphan_pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true);
    assert!(gone, "the orphan's process still runs");

    let usage = rt
        .usage(&kept.id)
        .await
        .expect("usage of an adopted instance");
    assert!(usage.rss_bytes > 0, "{usage:?}");

    // It is no child of ours, yet a stop is as prompt as for one.
    let grace = Duration::from_secs(10);
    let started = tokio::time::Instant::now();
    let stopped = rt.stop(&kept.id, grace).await.unwrap();
    assert!(started.elapsed() < grace, "waited the whole grace period");
    assert_eq!(
        stopped.state,
        InstanceState::Exited {
            code: None,
            signal: None
        }
    );
    assert!(
        !http_ok(kept.addr).await,
        "a stopped adopted instance serves"
    );
    assert_eq!(rt.list(&kept.service).await.unwrap(), [stopped]);
    assert_eq!(rt.usage(&kept.id).await, None);

    // A later controller finds it gone.
    let later = ProcessRuntime::new(&logs).adopt(&kept).await.unwrap();
    assert!(
        matches!(later.state, InstanceState::Exited { .. }),
        "{later:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_summed_over_the_process_group() {
    let (_dir, rt, scope, _cleanup) = scoped_runtime("usage");
    let s = rt
        .start(&spec("forks"), hatoba_core::Millis(0))
        .await
        .unwrap();
    let pid = s.pid.unwrap();
    assert!(
        environ(pid).contains(&format!("{SCOPE_ENV}={scope}")),
        "the scope given is the one passed on"
    );
    let first = rt.usage(&s.id).await.expect("usage of a running instance");
    assert!(first.rss_bytes > 0, "{first:?}");
    // The leader only waits; the CPU time is its busy child's, in its group.
    wait_for_async(DEADLINE, || async {
        rt.usage(&s.id)
            .await
            .is_some_and(|u| u.cpu_seconds >= first.cpu_seconds + 0.3)
    })
    .await
    .unwrap_or_else(|e| panic!("CPU time does not grow: {e}"));
    let hz = 100.0; // USER_HZ, what /proc counts in on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let leader: Vec<u64> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    let leader_seconds = (leader[0] + leader[1]) as f64 / hz;
    let group = rt.usage(&s.id).await.unwrap();
    assert!(
        group.cpu_seconds > leader_seconds + 0.2,
        "the group's {group:?} is not more than the idle leader's {leader_seconds} s"
    );
    rt.stop(&s.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(rt.usage(&s.id).await, None, "usage of a stopped instance");
}

/// An instance whose command started a daemon and returned has exited, but
/// its stop ends what it left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_what_an_exited_instance_left_running() {
    let (_dir, rt, _scope, _cleanup) = scoped_runtime("daemon");
    let s = rt
        .start(&spec("daemonizes"), hatoba_core::Millis(0))
        .await
        .unwrap();
    let log = s.log.clone().unwrap();
    let mut daemon = None;
    hatoba_test_support::wait_for(DEADLINE, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        daemon = text
            .lines()
            .find_map(|l| l.split("daemon pid ").nth(1))
            .and_then(|p| p.trim().parse::<u32>().ok());
        daemon.is_some()
    })
    .unwrap();
    let daemon = daemon.unwrap();
    wait_for_async(DEADLINE, || async {
        let listed = rt.list(&s.service).await.unwrap();
        listed
            .iter()
            .any(|i| i.id == s.id && i.state != InstanceState::Running)
    })
    .await
    .unwrap();
    let alive = || std::path::Path::new(&format!("/proc/{daemon}")).exists();
    assert!(alive(), "the daemon runs after its starter returned");
    rt.stop(&s.id, Duration::from_secs(10)).await.unwrap();
    let gone = !std::fs::read_to_string(format!("/proc/{daemon}/stat")).is_ok_and(|st| {
        !st.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    });
    assert!(gone, "the daemon {daemon} still runs after stop");
}

/// The last complete `tick N` line's number in `text`, and the first's.
fn ticks(text: &str) -> (Option<u64>, Option<u64>) {
    let nums: Vec<u64> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim_end().strip_prefix("tick ")?.parse().ok())
        .collect();
    (nums.first().copied(), nums.last().copied())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_under_a_writing_child() {
    let dir = tempfile::tempdir().unwrap();
    let limits = LogLimits {
        max_bytes: 1024,
        keep: 2,
    };
    let rt = ProcessRuntime::new(dir.path().join("logs")).with_log_limits(limits);
    let _cleanup = Cleanup::scopes(&[rt.scope()]);
    assert_eq!(rt.log_limits(), limits);
    let s = rt
        .start(&spec("chatty"), hatoba_core::Millis(0))
        .await
        .unwrap();
    let log = s.log.clone().unwrap();
    let copy = |n: usize| PathBuf::from(format!("{}.{n}", log.display()));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut last_copied = 0;
    for round in 1..=3 {
        wait_for_async(DEADLINE, || {
            let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            async move { len > limits.max_bytes }
        })
        .await
        .unwrap();
        let r = rt.rotate_logs();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(r.rotated, std::slice::from_ref(&log), "round {round}");
        let (first, last) = ticks(&read(&copy(1)));
        let last = last.unwrap_or_else(|| panic!("round {round}: no ticks in .1"));
        if round == 1 {
            // (The test harness's own output shares the first line.)
            assert!(
                read(&copy(1)).contains("tick 0\n"),
                "the first copy starts at the start"
            );
        } else {
            assert!(
                first.unwrap() > last_copied,
                "round {round}: .1 is not newer"
            );
        }
        // The child goes on writing, at the start of the emptied file: its
        // output was opened for appending (otherwise the next write would
        // land at the old offset, after a hole of NULs).
        wait_for_async(DEADLINE, || {
            let (first, _) = ticks(&read(&log));
            async move { first.is_some() }
        })
        .await
        .unwrap();
        let text = read(&log);
        assert!(
            text.starts_with("tick "),
            "round {round}: {:?}",
            &text[..text.len().min(40)]
        );
        assert!(!text.contains('\0'), "round {round}: a hole in the log");
        let (new_first, _) = ticks(&text);
        assert!(
            new_first.unwrap() > last,
            "round {round}: the log's lines are not newer than .1's"
        );
        last_copied = last;
    }
    // keep: 2 => .1 and .2, each older than the next.
    assert!(!copy(3).exists(), "more copies than kept");
    let (_, last2) = ticks(&read(&copy(2)));
    let (first1, _) = ticks(&read(&copy(1)));
    assert!(last2.unwrap() < first1.unwrap());
    rt.stop(&s.id, Duration::from_secs(10)).await.unwrap();
    // Whatever the child wrote last, then a log under its limit is left alone.
    let _ = rt.rotate_logs();
    assert_eq!(rt.rotate_logs().rotated, Vec::<PathBuf>::new());
}

fn assert_resources_error(result: Result<InstanceStatus, RuntimeError>, path: &Path) {
    match result {
        Err(e @ RuntimeError::Resources { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        other => panic!(
            "expected a resources error naming {}, got {other:?}",
            path.display()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_log_dir_is_a_resources_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // The log directory is a file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let rt = ProcessRuntime::new(&file);
    let _cleanup = Cleanup::scopes(&[rt.scope()]);
    let started = rt.start(&spec("serve"), hatoba_core::Millis(0)).await;
    assert_resources_error(started, &file.join("web"));
    assert!(rt.list(&"web".parse().unwrap()).await.unwrap().is_empty());

    // The log directory cannot be created (not even by root).
    let nowhere = Path::new("/proc/hatoba-no-such-dir/logs");
    let rt = ProcessRuntime::new(nowhere);
    let _cleanup2 = Cleanup::scopes(&[rt.scope()]);
    let started = rt.start(&spec("serve"), hatoba_core::Millis(0)).await;
    assert_resources_error(started, &nowhere.join("web"));

    // The service's log directory exists but cannot be written to (root
    // writes anyway: then there is nothing to check).
    use std::os::unix::fs::PermissionsExt as _;
    let logs = dir.path().join("logs");
    let web = logs.join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::set_permissions(&web, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(web.join("probe"), "").is_err() {
        let rt = ProcessRuntime::new(&logs);
        let _cleanup = Cleanup::scopes(&[rt.scope()]);
        let started = rt.start(&spec("serve"), hatoba_core::Millis(0)).await;
        assert_resources_error(started, &web);
    }
    std::fs::set_permissions(&web, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A relative program that is not there is reported with where it led
/// from the working directory (the spec's), `..` folded away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_relative_program_names_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs"));
    let work = dir.path().join("examples").join("web");
    std::fs::create_dir_all(&work).unwrap();
    let spec = InstanceSpec {
        workload: Workload::Process {
            program: "../../target/release/web".to_owned(),
            args: Vec::new(),
        },
        working_dir: work,
        ..spec("serve")
    };
    let err = rt
        .start(&spec, hatoba_core::Millis(0))
        .await
        .unwrap_err()
        .to_string();
    let looked = dir.path().join("target").join("release").join("web");
    assert!(
        err.contains(&format!(
            "`../../target/release/web` ({})",
            looked.display()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_instance_deletes_the_logs_of_versions_beyond_the_newest_ones() {
    use hatoba_runtime::Runtime as _;
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs")).with_log_versions(2);
    let _cleanup = Cleanup::scopes(&[rt.scope()]);
    // v1 keeps running throughout; v2, v3, v4 each start and stop in turn.
    let v1 = rt
        .start(&spec("serve"), hatoba_core::Millis(0))
        .await
        .unwrap();
    let mut logs = Vec::new();
    for v in ["v2", "v3", "v4"] {
        let spec = InstanceSpec {
            version: v.parse().unwrap(),
            ..spec("serve")
        };
        let s = rt.start(&spec, hatoba_core::Millis(0)).await.unwrap();
        rt.stop(&s.id, std::time::Duration::from_secs(10))
            .await
            .unwrap();
        logs.push(s.log.unwrap());
    }
    let exists = |p: &Path| p.exists();
    // The newest two versions with logs are v4 and v3 (v1 runs, so its
    // file keeps changing too, but a running instance is never touched).
    assert!(!exists(&logs[0]), "v2's log is deleted: {:?}", logs[0]);
    assert!(!exists(&logs[0].with_extension("version")));
    let v1_log = v1.log.clone().unwrap();
    assert!(exists(&v1_log), "a running instance keeps its log");
    assert!(exists(&logs[2]), "the newest stopped version keeps its log");
    rt.stop(&v1.id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
}

/// `drain.notify: {signal}`: the signal reaches the instance, which keeps
/// running; a name that is no signal, or an unknown instance, is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_reaches_a_running_instance() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(dir.path().join("logs"));
    let _cleanup = Cleanup::scopes(&[rt.scope()]);
    let spec = InstanceSpec {
        workload: Workload::Process {
            program: "/bin/sh".to_owned(),
            // `sleep 1` in a loop, not `exec sleep`: the shell stays to run its trap.
            args: vec![
                "-c".to_owned(),
                "trap 'echo got-usr1' USR1; echo armed; while :; do sleep 1; done".to_owned(),
            ],
        },
        ..spec("serve")
    };
    let s = rt.start(&spec, hatoba_core::Millis(0)).await.unwrap();
    let log = s.log.clone().unwrap();
    let seen = |what: &'static str| {
        let log = log.clone();
        hatoba_test_support::wait_for_async(std::time::Duration::from_secs(30), move || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { text.contains(what) }
        })
    };
    seen("armed").await.unwrap();
    rt.signal(&s.id, "SIGUSR1").await.unwrap();
    seen("got-usr1").await.unwrap();
    let listed = rt.list(&s.service).await.unwrap();
    assert_eq!(listed[0].state, InstanceState::Running, "{listed:?}");
    let bad = rt.signal(&s.id, "SIGNOPE").await.unwrap_err();
    let why = std::error::Error::source(&bad).map(ToString::to_string);
    assert_eq!(why.as_deref(), Some("`SIGNOPE` is not a signal"), "{bad:?}");
    let unknown = InstanceId("web-v9-9".to_owned());
    assert!(matches!(
        rt.signal(&unknown, "SIGUSR1").await,
        Err(RuntimeError::NotFound { .. })
    ));
    rt.stop(&s.id, std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_not_on_the_path_says_so() {
    let (_dir, rt, _scope, _cleanup) = scoped_runtime("not-on-path");
    let missing = InstanceSpec {
        workload: Workload::Process {
            program: "hatoba-no-such-program-xyz".to_owned(),
            args: Vec::new(),
        },
        ..spec("serve")
    };
    let err = rt
        .start(&missing, hatoba_core::Millis(0))
        .await
        .expect_err("a missing program started");
    let words = format!(
        "{err}: {}",
        std::error::Error::source(&err).map_or_else(String::new, ToString::to_string)
    );
    assert!(
        words.contains("no `hatoba-no-such-program-xyz` in any directory of the PATH"),
        "{words}"
    );
}
