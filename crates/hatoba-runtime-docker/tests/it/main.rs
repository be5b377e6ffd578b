//! The Docker runtime against the real Docker Engine: the shared runtime
//! conformance story, plus what is particular to containers (labels, limits,
//! the missing-image error).
//!
//! The test image is made without a registry and without a second build:
//! this very test binary (dynamically linked against glibc) and the shared
//! libraries `ldd` lists are laid out in a directory, tarred and given to
//! `docker import` as a `FROM scratch`-like image. The binary re-executes
//! itself as the instances (the `child` test below, steered by an
//! environment variable), as the process runtime's tests do. Why not a
//! statically linked demo app: that is a full second build of the
//! workspace for another target on a 2-core machine; why not busybox: it is
//! not installed here and `.ci/run` would need another package.
//!
//! Without a Docker Engine the tests skip with the reason, except under
//! `HATOBA_REQUIRE_EXTERNAL=1` where they fail. Every container and image a
//! test makes carries the label `hatoba.test=<run>`; a guard removes them
//! all when the test ends, passing or not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod built;
mod clash;
mod follow;
mod pinned;

use hatoba_runtime::{
    ContainerWorkload, InstanceSpec, InstanceState, OwnHealth, Runtime, RuntimeError, Workload,
};
use hatoba_runtime_docker::{DockerRuntime, SCOPE_LABEL};
use hatoba_test_support::{StoryPrograms, StoryRuntimes, external, http_ok, runtime_story};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ROLE: &str = "HATOBA_DOCKER_TEST_ROLE";
const APP_PORT: u16 = 8080;
const TEST_LABEL: &str = "hatoba.test";

/// When run inside a container as an instance: act out `ROLE`.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    if role == "exit3" {
        eprintln!("giving up: no database at db:5432");
        std::process::exit(3);
    }
    if role == "hog" {
        // Touch far more memory than the limit allows.
        let mut held = Vec::new();
        loop {
            held.push(vec![1u8; 8 << 20]);
            if held.len() > 64 {
                std::process::exit(0);
            }
        }
    }
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Installing a handler is what makes SIGTERM ignorable.
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .unwrap();
        println!("listening on {port}");
        let serve = async {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let say = role == "say";
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    if say {
                        // One line on each stream per request: what a
                        // follow of the output must see as it is written.
                        use std::sync::atomic::{AtomicU64, Ordering};
                        static SAID: AtomicU64 = AtomicU64::new(0);
                        let n = SAID.fetch_add(1, Ordering::SeqCst);
                        println!("said {n}");
                        eprintln!("warned {n}");
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        };
        if role == "ignore-sigterm" {
            serve.await;
        } else {
            tokio::select! {
                () = serve => {}
                _ = term.recv() => {}
            }
        }
    });
    std::process::exit(0);
}

/// The image's HEALTHCHECK, run inside a container: healthy when the role
/// is `serve`, failing otherwise.
#[test]
fn healthcheck() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    std::process::exit(i32::from(role != "serve"));
}

/// Removes every container and image labelled with this run, on drop.
struct Cleanup {
    run: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={TEST_LABEL}={}", self.run);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// The shared libraries the test binary needs, as `ldd` lists them.
fn libraries(exe: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(exe).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

/// Imports the test image (this binary and its libraries); returns its tag.
fn import_image(run: &str) -> String {
    import_image_with(run, "plain", &[])
}

/// The test image under tag `<run>-<name>`, with `changes` (Dockerfile
/// instructions) on top.
fn import_image_with(run: &str, name: &str, changes: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let root = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        let dest = root.path().join(to.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest).unwrap();
    };
    copy(&exe, Path::new("/app"));
    for lib in libraries(&exe) {
        copy(&lib, &lib);
    }
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    let tar = root.path().with_extension("tar");
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(root.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success(), "tar failed");
    let image = format!("hatoba-rt-test:{run}-{name}");
    let out = Command::new("docker")
        .arg("import")
        .args(["--change", &format!("LABEL {TEST_LABEL}={run}")])
        .args(["--change", r#"ENTRYPOINT ["/app"]"#])
        .args(changes.iter().flat_map(|c| ["--change", c]))
        .arg(&tar)
        .arg(&image)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tar);
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// A Docker runtime, or a skip (a failure under HATOBA_REQUIRE_EXTERNAL=1).
async fn engine(scope: &str) -> Option<DockerRuntime> {
    external("Docker Engine", DockerRuntime::connect(scope).await)
}

fn spec(image: &str, run: &str, role: &str) -> InstanceSpec {
    InstanceSpec {
        service: "web".parse().unwrap(),
        version: "v1".parse().unwrap(),
        workload: Workload::Container(ContainerWorkload {
            image: image.to_owned(),
            command: None,
            args: Some(
                ["child", "--exact", "--nocapture", "--test-threads=1"]
                    .map(String::from)
                    .to_vec(),
            ),
            port: APP_PORT,
            labels: BTreeMap::from([("test".to_owned(), run.to_owned())]),
            ..ContainerWorkload::default()
        }),
        env: BTreeMap::from([(ROLE.to_owned(), role.to_owned())]),
        working_dir: std::env::temp_dir(),
        secrets: BTreeMap::new(),
    }
}

fn run_id() -> String {
    format!("{}-{:04x}", std::process::id(), rand_u16())
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() % 65_521) as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_runtime_story() {
    let run = run_id();
    let scope = format!("test-{run}");
    let Some(rt) = engine(&scope).await else {
        return;
    };
    let twin = DockerRuntime::connect(&scope).await.unwrap();
    let neighbour = DockerRuntime::connect(format!("{scope}-elsewhere"))
        .await
        .unwrap();
    let image = import_image(&run);
    let _cleanup = Cleanup {
        run: run.clone(),
        image: image.clone(),
    };
    let missing = spec(&format!("hatoba-no-such-image:{run}"), &run, "serve");
    runtime_story(
        StoryRuntimes {
            main: &rt,
            same_scope: &twin,
            other_scope: &neighbour,
        },
        StoryPrograms {
            serve: spec(&image, &run, "serve"),
            exit_at_once: spec(&image, &run, "exit3"),
            ignores_sigterm: spec(&image, &run, "ignore-sigterm"),
            missing,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_carry_labels_limits_and_a_loopback_port() {
    let run = run_id();
    let scope = format!("test-{run}");
    let Some(rt) = engine(&scope).await else {
        return;
    };
    let rt = rt.with_labels(BTreeMap::from([
        ("environment".to_owned(), "staging".to_owned()),
        ("app".to_owned(), "not-this-one".to_owned()),
    ]));
    let image = import_image(&run);
    let _cleanup = Cleanup {
        run: run.clone(),
        image: image.clone(),
    };
    let mount = tempfile::tempdir().unwrap();
    let mut s = spec(&image, &run, "serve");
    if let Workload::Container(c) = &mut s.workload {
        c.memory_bytes = Some(64 << 20);
        c.millicpus = Some(500);
        c.read_only = true;
        c.labels.insert("app".to_owned(), "shop".to_owned());
        c.binds = vec![format!("{}:/data:ro", mount.path().display())];
    }
    let started = rt.start(&s, hatoba_core::Millis(1)).await.unwrap();
    assert_eq!(started.state, InstanceState::Running);
    assert!(started.addr.ip().is_loopback());
    hatoba_test_support::wait_for_async(Duration::from_secs(30), || http_ok(started.addr))
        .await
        .unwrap();
    let id = started.identity.clone().unwrap();
    let i = rt.client().inspect_container(&id, None).await.unwrap();
    let labels = i.config.unwrap().labels.unwrap();
    assert_eq!(labels.get(SCOPE_LABEL), Some(&scope));
    assert_eq!(
        labels.get("hatoba.app").map(String::as_str),
        Some("shop"),
        "the workload's own label first"
    );
    assert_eq!(
        labels.get("hatoba.environment").map(String::as_str),
        Some("staging")
    );
    assert_eq!(
        labels.get("hatoba.instance").map(String::as_str),
        Some(started.id.0.as_str())
    );
    let hc = i.host_config.unwrap();
    assert_eq!(hc.memory, Some(64 << 20));
    assert_eq!(hc.memory_swap, Some(64 << 20), "no swap beyond the limit");
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(
        hc.binds,
        Some(vec![format!("{}:/data:ro", mount.path().display())])
    );
    // A drain's notify signal reaches the app through Docker's init: the
    // test app has no handler for SIGUSR1, so it ends.
    rt.signal(&started.id, "SIGUSR1").await.unwrap();
    hatoba_test_support::wait_for_async(Duration::from_secs(30), || async {
        rt.list(&started.service)
            .await
            .unwrap()
            .iter()
            .any(|l| l.id == started.id && matches!(l.state, InstanceState::Exited { .. }))
    })
    .await
    .unwrap_or_else(|e| panic!("SIGUSR1 did not reach the app: {e}"));
    let stopped = rt.stop(&started.id, Duration::from_secs(10)).await.unwrap();
    assert!(matches!(stopped.state, InstanceState::Exited { .. }));
    assert!(matches!(
        rt.signal(&hatoba_runtime::InstanceId("nope".to_owned()), "SIGUSR1")
            .await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(
        rt.client().inspect_container(&id, None).await.is_err(),
        "a stopped container is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_says_how_to_build_it() {
    let run = run_id();
    let Some(rt) = engine(&format!("test-{run}")).await else {
        return;
    };
    let err = rt
        .start(
            &spec("hatoba-absent:v9", &run, "serve"),
            hatoba_core::Millis(0),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Spawn { .. }), "{err:?}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains("docker build -t hatoba-absent:v9"),
        "{chain}"
    );
    // The same is known before anything starts.
    let err = rt
        .check(&spec("hatoba-absent:v9", &run, "serve"))
        .await
        .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("hatoba build web --version v1"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_workload_is_refused() {
    let run = run_id();
    let Some(rt) = engine(&format!("test-{run}")).await else {
        return;
    };
    let s = InstanceSpec {
        workload: Workload::Process {
            program: "/bin/true".to_owned(),
            args: Vec::new(),
        },
        ..spec("x", &run, "serve")
    };
    let err = rt.start(&s, hatoba_core::Millis(0)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_of_a_container_is_readable_even_after_it_was_removed() {
    let run = run_id();
    let Some(rt) = engine(&format!("test-{run}")).await else {
        return;
    };
    let image = import_image(&run);
    let _cleanup = Cleanup {
        run: run.clone(),
        image: image.clone(),
    };
    let dead = rt
        .start(&spec(&image, &run, "exit3"), hatoba_core::Millis(0))
        .await
        .unwrap();
    let said = |lines: &[String]| lines.iter().any(|l| l.contains("no database at db:5432"));
    hatoba_test_support::wait_for_async(Duration::from_secs(30), || async {
        said(&rt.logs(&dead.id, 50, None).await.unwrap().unwrap().lines)
    })
    .await
    .unwrap();
    // Stopping removes the container; its last words stay readable.
    rt.stop(&dead.id, Duration::from_secs(5)).await.unwrap();
    let kept = rt.logs(&dead.id, 50, None).await.unwrap().unwrap().lines;
    assert!(said(&kept), "{kept:?}");
    assert!(
        rt.logs(&dead.id, 0, None)
            .await
            .unwrap()
            .unwrap()
            .lines
            .is_empty()
    );
    assert!(matches!(
        rt.logs(&hatoba_runtime::InstanceId("nope".to_owned()), 5, None)
            .await,
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_reported_in_the_status() {
    let run = run_id();
    let Some(rt) = engine(&format!("test-{run}")).await else {
        return;
    };
    let image = import_image(&run);
    let _cleanup = Cleanup {
        run: run.clone(),
        image: image.clone(),
    };
    let mut s = spec(&image, &run, "hog");
    if let Workload::Container(c) = &mut s.workload {
        c.memory_bytes = Some(32 << 20);
    }
    let hog = rt.start(&s, hatoba_core::Millis(0)).await.unwrap();
    hatoba_test_support::wait_for_async(Duration::from_secs(30), || async {
        rt.list(&hog.service)
            .await
            .unwrap()
            .iter()
            .any(|l| l.id == hog.id && l.oom_killed)
    })
    .await
    .unwrap_or_else(|e| panic!("no OOM kill reported: {e}"));
    let listed = rt.list(&hog.service).await.unwrap();
    let l = listed.iter().find(|l| l.id == hog.id).unwrap();
    assert!(
        matches!(
            l.state,
            InstanceState::Exited {
                code: Some(137),
                ..
            }
        ),
        "{l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_own_healthcheck_is_shown_in_the_status() {
    let run = run_id();
    let Some(rt) = engine(&format!("test-{run}")).await else {
        return;
    };
    let image = import_image_with(
        &run,
        "checked",
        &[
            r#"HEALTHCHECK --interval=1s --timeout=5s --retries=1 CMD ["/app", "healthcheck", "--exact", "--test-threads=1"]"#,
        ],
    );
    let _cleanup = Cleanup {
        run: run.clone(),
        image: image.clone(),
    };
    let healthy = rt
        .start(&spec(&image, &run, "serve"), hatoba_core::Millis(0))
        .await
        .unwrap();
    let sick = rt
        .start(
            &spec(&image, &run, "ignore-sigterm"),
            hatoba_core::Millis(1),
        )
        .await
        .unwrap();
    let shows = |id: hatoba_runtime::InstanceId, want: OwnHealth| {
        let rt = &rt;
        async move {
            rt.list(&"web".parse().unwrap())
                .await
                .unwrap()
                .iter()
                .any(|l| l.id == id && l.own_health == Some(want))
        }
    };
    hatoba_test_support::wait_for_async(Duration::from_secs(30), || {
        shows(healthy.id.clone(), OwnHealth::Healthy)
    })
    .await
    .unwrap_or_else(|e| panic!("never healthy: {e}"));
    hatoba_test_support::wait_for_async(Duration::from_secs(30), || {
        shows(sick.id.clone(), OwnHealth::Unhealthy)
    })
    .await
    .unwrap_or_else(|e| panic!("never unhealthy: {e}"));
    // Without a HEALTHCHECK there is no verdict to show.
    let plain = import_image(&run);
    let _plain = Cleanup {
        run: run.clone(),
        image: plain.clone(),
    };
    let unchecked = rt
        .start(&spec(&plain, &run, "serve"), hatoba_core::Millis(2))
        .await
        .unwrap();
    assert_eq!(unchecked.own_health, None);
    for id in [&healthy.id, &sick.id, &unchecked.id] {
        rt.stop(id, Duration::from_millis(300)).await.unwrap();
    }
}
