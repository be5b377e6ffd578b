//! A Docker service's image identity, clean-up and faults, with real
//! containers of the local Docker Engine: a rollback runs the exact image
//! recorded when the version was first deployed (its tag built again since
//! changes nothing), old versions' containers and images are removed,
//! and so are images built and never deployed beyond the newest builds
//! kept, and `hatoba diagnose` says so; a container that exits at once is rolled
//! back with the old version serving; one that ignores SIGTERM is killed
//! after its grace period and said to be; one past its `memory` limit is
//! killed by the OOM killer, said so, and rolled back; `hatoba logs -f`
//! prints what a container writes after it began, from the server's
//! stream, which ends (said) when the container stops, and goes on after
//! the last line printed across a restart of `hatoba up` (`logs_restart`); an engine that stops answering
//! mid-rollout (a Unix-socket relay the test cuts, never the real daemon)
//! leaves the running version serving while the rollout waits for it, and
//! an abort then waits to stop the canary rather than failing.
//!
//! Images are built `FROM scratch` by `hatoba build` from the context of
//! `docker::context` (this build's `hatoba` binary and its libraries): no
//! registry is reachable. Without an engine each test skips with the
//! reason (fails under `HATOBA_REQUIRE_EXTERNAL=1`); its containers and
//! images are removed when it ends, passed or not.

mod logs_restart;

use crate::docker::{Cleanup, containers, context, engine, libraries};
use crate::support::{Sandbox, Traffic, hatoba, latest, poll, poll_explained, served};
use predicates::prelude::*;
use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A Docker service `web` of one container per version change, rolled
/// out as `strategy` says, with `docker` added to its `docker:` block and
/// `extra` to the service.
fn spec(image: &str, port: u16, strategy: &str, docker: &str, extra: &str) -> String {
    format!(
        "app: docker-faults
services:
  web:
    docker:
      image: \"{image}:${{VERSION}}\"
      build: {{context: ctx}}
      port: 8080
      args: [\"--version-label\", \"${{VERSION}}\"]
      keepImages: 2
{docker}{extra}    route: {{listen: \"127.0.0.1:{port}\"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    drain: 0s
    terminationGracePeriod: 2s
    strategy: {strategy}
"
    )
}

const ROLLING: &str = "{rolling: {maxSurge: 1, maxUnavailable: 0}}";

/// The demo app under a shell that passes SIGTERM on to it (it exits)
/// or, with `IGNORE_TERM=yes`, ignores it (so the container runs on until
/// it is killed); `HOST` is the address the app listens on (one that is
/// none makes it exit at once); with `HOG=yes` the shell first doubles a
/// string without end, past any memory limit. The demo app run by
/// `hatoba demo-app` has no slow-shutdown or memory knob, and the image
/// has no shell of its own (`add_shell`).
const SHELL: &str = "      command: [/bin/sh, -c, \"if [ ${HOG:-no} = yes ]; then a=x; while :; do a=$a$a; done; fi; if [ ${IGNORE_TERM:-no} = yes ]; then trap '' TERM; else trap 'kill $!; wait; exit 0' TERM; fi; DEMO_HOST=${HOST:-0.0.0.0} /hatoba demo-app --version-label ${VERSION} & wait $!\"]\n";

/// Puts the machine's `/bin/sh` and its libraries into the image's files.
fn add_shell(ctx: &Path) {
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let root = ctx.join("rootfs");
    for (from, to) in libraries(&sh)
        .into_iter()
        .map(|l| (l.clone(), l))
        .chain([(sh, PathBuf::from("/bin/sh"))])
    {
        let dest = root.join(to.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&from, &dest).unwrap();
    }
}

/// A test's service: its sandbox, scope, image name, and what to clean.
struct Docker {
    sb: Sandbox,
    scope: String,
    image: String,
    cleanup: Cleanup,
}

impl Docker {
    fn new(name: &str, strategy: &str, docker: &str, extra: &str) -> Docker {
        let image = format!("hatoba-{name}-{}", std::process::id());
        let sb = Sandbox::new(|port| spec(&image, port, strategy, docker, extra));
        let scope = std::path::absolute(&sb.state)
            .unwrap()
            .display()
            .to_string();
        let ctx = sb.file.with_file_name("ctx");
        context(&ctx);
        // The tests run side by side and remove their images by id: the
        // same files would build the same image id in two tests, and one
        // test's clean-up would remove the other's image.
        std::fs::write(ctx.join("rootfs").join("test"), &image).unwrap();
        Docker {
            cleanup: Cleanup {
                scope: scope.clone(),
                images: ["v1", "v2", "v3"]
                    .iter()
                    .map(|v| format!("{image}:{v}"))
                    .collect(),
            },
            sb,
            scope,
            image,
        }
    }

    /// Writes `flavour` into the image's files (so that each build differs)
    /// and runs `hatoba build web --version V`: the image id it printed.
    fn build(&mut self, version: &str, flavour: &str) -> String {
        let root = self.sb.file.with_file_name("ctx").join("rootfs");
        std::fs::write(root.join("flavour"), flavour).unwrap();
        let out = hatoba(&self.sb.state)
            .args(["build", "web", "--version", version, "-f"])
            .arg(&self.sb.file)
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(id.starts_with("sha256:"), "{id}");
        // Removed by id too: a tag built again leaves the first image
        // untagged.
        self.cleanup.images.push(id.clone());
        id
    }

    /// The image ids of the running containers of `version`.
    fn images_of(&self, version: &str) -> Vec<String> {
        let ids: Vec<String> = containers(&self.scope)
            .into_iter()
            .filter(|(_, v)| v == version)
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let out = Command::new("docker")
            .args(["inspect", "--format", "{{.Image}}"])
            .args(&ids)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every container of the scope, running or not, as `docker ps -a` finds
    /// them by a label filter: full id -> version.
    fn all_containers(&self, filter: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-a", "--no-trunc", "--filter"])
            .arg(format!("label=hatoba.scope={}", self.scope))
            .args(["--filter", filter, "--format", "{{.ID}}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn diagnose(&self) -> String {
        let out = hatoba(&self.sb.state)
            .args(["diagnose", "web"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Docker's short form of an image id.
fn short(id: &str) -> &str {
    &id["sha256:".len().."sha256:".len() + 12]
}

fn image_exists(id: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", id])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_rollback_runs_the_image_recorded_and_old_containers_and_images_are_removed() {
    if engine().is_none() {
        return;
    }
    let mut d = Docker::new("identity", ROLLING, "", "");
    let v1 = d.build("v1", "first");
    let up = d.sb.up(&[]);
    d.sb.deploy_ok("v1");
    assert_eq!(d.images_of("v1"), [v1.as_str()]);
    // Every container carries its deployment, as `docker ps` filters see it.
    let first = latest(&d.sb.state)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        d.all_containers(&format!("label=hatoba.deployment={first}"))
            .len(),
        1
    );
    let v2 = d.build("v2", "second");
    hatoba(&d.sb.state)
        .args(["deploy", "web", "--version", "v2", "--wait=complete"])
        .assert()
        .success();
    // The replaced version's container is removed, not merely stopped.
    assert!(
        d.all_containers("label=hatoba.version=v1").is_empty(),
        "v1's container removed"
    );

    // The tag v1 built again, with other content: another image.
    let v1_again = d.build("v1", "rebuilt");
    assert_ne!(v1, v1_again);
    hatoba(&d.sb.state)
        .args(["rollback", "web"])
        .assert()
        .success();
    poll(
        "the rollback to v1 complete",
        Duration::from_secs(60),
        || {
            let l = latest(&d.sb.state);
            (l["status"] == "succeeded" && l["rollback_of"].is_string()).then_some(l)
        },
    );
    // The very image v1 ran first, not what its tag names now.
    assert_eq!(d.images_of("v1"), [v1.as_str()]);
    assert_eq!(served(d.sb.port).as_deref(), Ok("v1"));
    let rollback = latest(&d.sb.state);
    assert_eq!(
        rollback["image_id"].as_str(),
        Some(v1.as_str()),
        "recorded on the rollback"
    );
    // Its timeline says so, and that the tag names another image now.
    let page = crate::support::api_get(
        &d.sb.state,
        &format!(
            "/api/v1/events?follow=false&deployment={}",
            rollback["id"].as_str().unwrap()
        ),
    );
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains(&format!(
            "runs image {}, recorded for v1; `{}:v1` names {} now",
            short(&v1),
            d.image,
            short(&v1_again)
        )),
        "{page}"
    );
    let status = hatoba(&d.sb.state).args(["status"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains(&format!("v1 {}", short(&v1))), "{status}");
    // A stop and a start of `hatoba up` restores what served from its
    // saved state: the same image again, not the tag's.
    assert!(up.terminate(), "a clean stop");
    let up = d.sb.up(&[]);
    poll("v1 restored", Duration::from_secs(60), || {
        (served(d.sb.port).as_deref() == Ok("v1")).then_some(())
    });
    // The container the stop removed is recorded on the deployment that
    // made v1 serve, as a rollout records those it removes.
    let page = crate::support::api_get(
        &d.sb.state,
        &format!(
            "/api/v1/events?follow=false&deployment={}",
            rollback["id"].as_str().unwrap()
        ),
    );
    let page = String::from_utf8_lossy(&page);
    assert_eq!(page.matches("(v1) removed").count(), 1, "{page}");
    assert_eq!(d.images_of("v1"), [v1.as_str()]);
    let history = hatoba(&d.sb.state).args(["history"]).output().unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains(&format!("v1 {}", short(&v1))) && history.contains(short(&v2)),
        "{history}"
    );

    // A third version: with `keepImages: 2` (v3 and v1 kept), v2's image
    // goes, and `diagnose` says what was removed.
    let v3 = d.build("v3", "third");
    hatoba(&d.sb.state)
        .args(["deploy", "web", "--version", "v3", "--wait=complete"])
        .assert()
        .success();
    poll("v2's image pruned", Duration::from_secs(30), || {
        (!image_exists(&v2)).then_some(())
    });
    assert!(image_exists(&v1) && image_exists(&v3), "the kept versions");
    let diagnosis = d.diagnose();
    assert!(
        diagnosis.contains(&format!("image {} of v2 removed", short(&v2)))
            && diagnosis.contains("removed:")
            && diagnosis.contains("container "),
        "{diagnosis}"
    );
    // Deploying v2 again needs its recorded image, now gone: refused
    // before anything is recorded, saying why; v3 serves on.
    let last = latest(&d.sb.state)["id"].clone();
    hatoba(&d.sb.state)
        .args(["deploy", "web", "--version", "v2", "--wait"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is no longer present"));
    assert_eq!(latest(&d.sb.state)["id"], last, "nothing recorded");
    assert_eq!(served(d.sb.port).as_deref(), Ok("v3"));

    // Built and never deployed: v4, v5, then v6 deployed. With
    // `keepImages: 2` the newest builds v6 and v5 stay, and so does v3
    // (the history's last two versions are v6 and v3); v4 and the second
    // build of v1 were never deployed and go, said so; v1's first image
    // (deployed, now out of the last two versions) goes as before.
    let v4 = d.build("v4", "fourth");
    let v5 = d.build("v5", "fifth");
    let v6 = d.build("v6", "sixth");
    hatoba(&d.sb.state)
        .args(["deploy", "web", "--version", "v6", "--wait=complete"])
        .assert()
        .success();
    poll(
        "the builds never deployed pruned",
        Duration::from_secs(30),
        || (!image_exists(&v4) && !image_exists(&v1_again) && !image_exists(&v1)).then_some(()),
    );
    assert!(
        image_exists(&v5) && image_exists(&v6) && image_exists(&v3),
        "the newest builds and the history's last versions stay"
    );
    let diagnosis = d.diagnose();
    for (id, version) in [(&v4, "v4"), (&v1_again, "v1")] {
        assert!(
            diagnosis.contains(&format!(
                "image {} of {version} removed (built, never deployed",
                short(id)
            )),
            "{diagnosis}"
        );
    }
    assert!(
        diagnosis.contains(&format!(
            "image {} of v1 removed (older than the versions kept)",
            short(&v1)
        )),
        "{diagnosis}"
    );
    assert!(up.terminate(), "a clean stop");
}

#[test]
fn a_container_that_exits_at_once_is_rolled_back_and_one_ignoring_sigterm_is_killed() {
    if engine().is_none() {
        return;
    }
    let mut d = Docker::new("exits", ROLLING, SHELL, "    progressDeadline: 30s\n");
    add_shell(&d.sb.file.with_file_name("ctx"));
    d.build("v1", "one");
    d.build("v2", "two");
    d.build("v3", "three");
    let up = d.sb.up(&[]);
    // v1 waits a minute after SIGTERM before it exits.
    hatoba(&d.sb.state)
        .args([
            "deploy",
            "web",
            "--version",
            "v1",
            "--set",
            "IGNORE_TERM=yes",
            "--wait",
        ])
        .assert()
        .success();
    let load = Traffic::start(d.sb.port);
    load.wait_answered(20);

    // v2 is told to listen on an address that is none and exits at once:
    // rolled back, v1 serving throughout, the failed container removed.
    d.sb.deploy_fails("v2", "HOST=nowhere", "exited with code 1");
    assert_eq!(latest(&d.sb.state)["status"], "rolled_back");
    assert_eq!(served(d.sb.port).as_deref(), Ok("v1"));
    assert!(
        d.all_containers("label=hatoba.version=v2").is_empty(),
        "v2's container removed"
    );

    // v3 replaces v1, whose container ignores SIGTERM past its 2 s grace:
    // killed, and said so.
    hatoba(&d.sb.state)
        .args(["deploy", "web", "--version", "v3", "--wait=complete"])
        .assert()
        .success();
    assert_eq!(served(d.sb.port).as_deref(), Ok("v3"));
    let diagnosis = d.diagnose();
    assert!(
        diagnosis.contains("ignored SIGTERM for its grace period: killed (SIGKILL)"),
        "{diagnosis}"
    );
    assert!(d.all_containers("label=hatoba.version=v1").is_empty());
    let summary = load.finish();
    summary.assert_no_failed(100);
    // Nothing lost from the history.
    let out = hatoba(&d.sb.state)
        .args(["history", "-o", "json"])
        .output()
        .unwrap();
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = h["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "rolled_back", "succeeded"]);
    assert!(up.terminate(), "a clean stop");
}

#[test]
fn a_container_past_its_memory_limit_is_oom_killed_said_so_and_rolled_back() {
    if engine().is_none() {
        return;
    }
    let mut d = Docker::new(
        "oom",
        ROLLING,
        &format!("{SHELL}      memory: 64m\n"),
        "    progressDeadline: 30s\n",
    );
    add_shell(&d.sb.file.with_file_name("ctx"));
    d.build("v1", "one");
    d.build("v2", "two");
    let up = d.sb.up(&[]);
    d.sb.deploy_ok("v1");
    let load = Traffic::start(d.sb.port);
    load.wait_answered(20);

    // v2's shell grows past 64 MiB as it starts: the kernel kills it.
    let says = "killed by the OOM killer (memory limit 64 MiB)";
    d.sb.deploy_fails("v2", "HOG=yes", says);
    let last = latest(&d.sb.state);
    assert_eq!(last["status"], "rolled_back");
    assert!(
        last["reason"].as_str().is_some_and(|r| r.contains(says)),
        "{last}"
    );
    assert_eq!(served(d.sb.port).as_deref(), Ok("v1"));
    assert!(
        d.all_containers("label=hatoba.version=v2").is_empty(),
        "v2's container removed"
    );
    let diagnosis = d.diagnose();
    assert!(diagnosis.contains(says), "{diagnosis}");
    let history = hatoba(&d.sb.state).args(["history"]).output().unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains(says), "{history}");
    load.finish().assert_no_failed(20);
    let out = hatoba(&d.sb.state)
        .args(["history", "-o", "json"])
        .output()
        .unwrap();
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = h["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["rolled_back", "succeeded"], "newest first");
    assert!(up.terminate(), "a clean stop");
}

#[test]
fn logs_follow_prints_what_a_container_writes_after_it_began() {
    if engine().is_none() {
        return;
    }
    let mut d = Docker::new("follow", ROLLING, SHELL, "");
    add_shell(&d.sb.file.with_file_name("ctx"));
    d.build("v1", "one");
    let up = d.sb.up(&[]);
    d.sb.deploy_ok("v1");
    let follow = Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .arg("--state-dir")
        .arg(&d.sb.state)
        .args(["logs", "web", "-f", "-n", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut follow = crate::support::Reaped(follow);
    let seen = Arc::new(Mutex::new(String::new()));
    {
        let seen = Arc::clone(&seen);
        let out = follow.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut s = seen.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
    }
    poll("logs -f to print the tail", Duration::from_secs(20), || {
        seen.lock()
            .unwrap()
            .contains("demo app v1 listening on")
            .then_some(())
    });
    // The container writes a line (its first process's output, as the
    // engine keeps it) after `logs -f` began: printed, the tail not again.
    let (container, _) = containers(&d.scope).into_iter().next().unwrap();
    let exec = Command::new("docker")
        .args(["exec", &container, "/bin/sh", "-c"])
        .arg("echo a line written after the follow began >/proc/1/fd/2")
        .output()
        .unwrap();
    assert!(exec.status.success(), "{exec:?}");
    poll_explained(
        "logs -f to print the new line",
        Duration::from_secs(20),
        || {
            seen.lock()
                .unwrap()
                .contains("] a line written after the follow began")
                .then_some(())
        },
        || seen.lock().unwrap().clone(),
    );
    let s = seen.lock().unwrap().clone();
    assert_eq!(s.matches("demo app v1 listening on").count(), 1, "{s}");
    // The output came on the server's stream (not a poll), which ends
    // when v2 replaces v1: said, and v2's new instance followed from its
    // first line.
    d.build("v2", "two");
    hatoba(&d.sb.state)
        .args(["deploy", "web", "--version", "v2", "--wait=complete"])
        .assert()
        .success();
    poll_explained(
        "logs -f to say v1's instance stopped and follow v2's",
        Duration::from_secs(30),
        || {
            let s = seen.lock().unwrap();
            (s.contains("--- stopped ---") && s.contains("demo app v2 listening on")).then_some(())
        },
        || seen.lock().unwrap().clone(),
    );
    let s = seen.lock().unwrap().clone();
    let v1_instance = s
        .lines()
        .find(|l| l.contains("demo app v1 listening on"))
        .and_then(|l| l.split(']').next())
        .unwrap()
        .to_owned();
    assert!(
        s.contains(&format!("{v1_instance}] --- stopped ---")),
        "{s}"
    );
    drop(follow);
    assert!(up.terminate(), "a clean stop");
}

/// A Unix-socket relay to the real engine that the test can cut (every
/// connection closed, new ones closed at once) and restore.
struct Relay {
    path: PathBuf,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<UnixStream>>>,
}

impl Relay {
    fn start(path: &Path, engine: PathBuf) -> Relay {
        let listener = UnixListener::bind(path).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (c, o) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(upstream) = UnixStream::connect(&engine) else {
                    continue;
                };
                let mut held = o.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(upstream.try_clone().unwrap());
                drop(held);
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Relay {
            path: path.to_path_buf(),
            cut,
            open,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` into `to` on a thread of its own until either closes.
fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let mut buf = [0_u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// The engine's socket as the tests reach it: `DOCKER_HOST`'s
/// `unix://` path, else Docker's default.
fn engine_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// Cuts the engine off, then asks `ask`: the rollout `says` so and stays
/// in progress while the data plane answers 200 more requests; once the
/// engine answers again it ends `ends`, with v2's two containers only.
fn through_an_outage(
    d: &Docker,
    relay: &Relay,
    load: &Traffic,
    ask: &[&str],
    says: &str,
    ends: &str,
) {
    relay.cut();
    hatoba(&d.sb.state).args(ask).assert().success();
    poll_explained(
        &format!("the rollout says `{says}`"),
        Duration::from_secs(30),
        || d.diagnose().contains(says).then_some(()),
        || d.diagnose(),
    );
    let answered = load.so_far().answered();
    load.wait_answered(answered + 200);
    assert_eq!(latest(&d.sb.state)["status"], "in_progress");
    relay.restore();
    poll_explained(
        &format!("the deployment {ends}"),
        Duration::from_secs(90),
        || {
            (latest(&d.sb.state)["status"] == ends
                && containers(&d.scope).values().all(|v| v == "v2")
                && containers(&d.scope).len() == 2)
                .then_some(())
        },
        || format!("{} {:?}", latest(&d.sb.state), containers(&d.scope)),
    );
}

#[test]
fn an_engine_unreachable_mid_rollout_leaves_the_old_version_serving_and_the_rollout_waiting() {
    if engine().is_none() {
        return;
    }
    let canary = "
      canary:
        steps:
          - setWeight: 50
          - pause: {}";
    let mut d = Docker::new(
        "unreachable",
        canary,
        "",
        "    replicas: 2\n    progressDeadline: 5m\n",
    );
    d.build("v1", "one");
    d.build("v2", "two");
    let relay = Relay::start(&d.sb.file.with_file_name("engine.sock"), engine_socket());
    let host = format!("unix://{}", relay.path.display());
    let up = crate::support::Up::start_with_env(
        &d.sb.state,
        &d.sb.file,
        &[],
        &[("DOCKER_HOST", host.as_str())],
    );
    d.sb.deploy_ok("v1");
    let load = Traffic::start(d.sb.port);
    load.wait_answered(20);
    hatoba(&d.sb.state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    poll("v2 serving its share", Duration::from_secs(60), || {
        (load.so_far().ok.get("v2").copied().unwrap_or(0) >= 10).then_some(())
    });

    // The engine stops answering Hatoba; a promote asks for one more v2:
    // the rollout waits, both versions keep serving, and it goes on to its
    // end once the engine answers again.
    through_an_outage(
        &d,
        &relay,
        &load,
        &["promote", "web"],
        "the rollout waits for the runtime",
        "succeeded",
    );

    // v1 again as a canary, aborted while the engine does not answer: its
    // instance, out of the route at once, cannot be stopped; the rollback
    // waits for the engine (saying so) instead of failing, v2 serving.
    hatoba(&d.sb.state)
        .args(["deploy", "web", "--version", "v1"])
        .assert()
        .success();
    let before = load.so_far().ok.get("v1").copied().unwrap_or(0);
    poll("v1 serving its share", Duration::from_secs(60), || {
        (load.so_far().ok.get("v1").copied().unwrap_or(0) >= before + 10).then_some(())
    });
    through_an_outage(
        &d,
        &relay,
        &load,
        &["abort", "web"],
        "and stopped once the runtime answers again",
        "aborted",
    );
    assert_eq!(served(d.sb.port).as_deref(), Ok("v2"));
    let summary = load.finish();
    summary.assert_no_failed(300);
    assert!(up.terminate(), "a clean stop");
}
