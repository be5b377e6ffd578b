//! A Docker service through `hatoba build` and `hatoba up`, with real
//! containers of the local Docker Engine: the image built from a Dockerfile
//! through the Engine API (its `.dockerignore` respected, a failing build
//! shown), a canary under load with no failed request, a `kill -9` of
//! `hatoba up` mid-canary after which the restarted one re-adopts the very
//! containers (same ids) and finishes the rollout, and a version whose
//! image was never built refused before anything starts; and the three
//! strategies on containers under load, in one `hatoba up` over one image
//! (built once, tagged for each version): a bad canary rolled back by its
//! analysis, blue-green with its preview and an instant rollback onto the
//! warm colour, rolling.
//!
//! No registry is reachable and no base image can be pulled, so the image
//! is `FROM scratch` with this build's `hatoba` binary (the demo app is
//! `hatoba demo-app`) and the shared libraries `ldd` lists for it, as the
//! Docker runtime's own tests do with `docker import`; a statically linked
//! build would be a second full build for another target.
//!
//! Without a Docker Engine the test skips with the reason, except under
//! `HATOBA_REQUIRE_EXTERNAL=1` where it fails. Its containers (by the
//! scope label) and images are removed when it ends, passed or not.

use crate::support::{Sandbox, Traffic, hatoba, latest, poll, served};
use predicates::prelude::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A Docker Engine answers `docker info`, or the test skips (fails under
/// `HATOBA_REQUIRE_EXTERNAL=1`).
pub(crate) fn engine() -> Option<()> {
    let found = match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(format!("cannot run `docker`: {e}")),
    };
    hatoba_test_support::external("Docker Engine", found)
}

/// Removes the scope's containers and the test's images when dropped.
pub(crate) struct Cleanup {
    pub(crate) scope: String,
    pub(crate) images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers(&self.scope).into_keys() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        for image in &self.images {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

/// The running containers of a scope: full id -> version label.
pub(crate) fn containers(scope: &str) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--no-trunc",
            "--filter",
            &format!("label=hatoba.scope={scope}"),
            "--format",
            "{{.ID}} {{.Label \"hatoba.version\"}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, v) = l.split_once(' ')?;
            Some((id.to_owned(), v.to_owned()))
        })
        .collect()
}

/// The shared libraries a binary needs, as `ldd` lists them.
pub(crate) fn libraries(exe: &Path) -> Vec<PathBuf> {
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

/// A build context: `rootfs/` with the hatoba binary and its libraries,
/// a Dockerfile, a file `.dockerignore` leaves out, and a Dockerfile that
/// copies it (a build that must fail).
pub(crate) fn context(dir: &Path) {
    let exe = Path::new(env!("CARGO_BIN_EXE_hatoba"));
    let root = dir.join("rootfs");
    let copy = |from: &Path, to: &Path| {
        let dest = root.join(to.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest).unwrap();
    };
    copy(exe, Path::new("/hatoba"));
    for lib in libraries(exe) {
        copy(&lib, &lib);
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV DEMO_HOST=0.0.0.0\nENTRYPOINT [\"/hatoba\", \"demo-app\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.secret"), "not for the image").unwrap();
    std::fs::write(dir.join(".dockerignore"), "*.secret\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile.bad"),
        "FROM scratch\nCOPY notes.secret /notes\n",
    )
    .unwrap();
}

/// A Docker service `web` on `port`, and beside it a process service
/// `api` (the same demo app, as a local process) on `api_port`.
fn spec(image: &str, port: u16, api_port: u16, dockerfile: &str) -> String {
    let exe = env!("CARGO_BIN_EXE_hatoba");
    format!(
        "app: docker-e2e
services:
  api:
    process: {{command: {exe}, args: [demo-app, --version-label, \"${{VERSION}}\"]}}
    route: {{listen: \"127.0.0.1:{api_port}\"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    drain: 1s
  web:
    docker:
      image: \"{image}:${{VERSION}}\"
      build: {{context: ctx, dockerfile: {dockerfile}}}
      port: 8080
      args: [\"--version-label\", \"${{VERSION}}\"]
      memory: 256m
    replicas: 2
    route: {{listen: \"127.0.0.1:{port}\"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    drain: 1s
    terminationGracePeriod: 5s
    strategy:
      canary:
        steps:
          - setWeight: 50
          - pause: {{}}
"
    )
}

/// `hatoba build web --version V -f FILE`, which must print the image id.
fn build_ok(sb: &Sandbox, file: &Path, version: &str) {
    hatoba(&sb.state)
        .args(["build", "web", "--version", version, "-f"])
        .arg(file)
        .timeout(Duration::from_secs(300))
        .assert()
        .success()
        .stdout(predicate::str::starts_with("sha256:"))
        .stderr(predicate::str::contains("FROM scratch"));
}

#[test]
fn a_docker_service_is_built_deployed_by_canary_and_readopted_after_kill_9() {
    if engine().is_none() {
        return;
    }
    let image = format!("hatoba-e2e-{}", std::process::id());
    let api_port = hatoba_test_support::free_port().unwrap();
    let sb = Sandbox::new(|port| spec(&image, port, api_port, "Dockerfile"));
    let dir = sb.file.parent().unwrap().to_path_buf();
    let scope = std::path::absolute(&sb.state)
        .unwrap()
        .display()
        .to_string();
    let _cleanup = Cleanup {
        scope: scope.clone(),
        images: ["v1", "v2", "bad"]
            .iter()
            .map(|v| format!("{image}:{v}"))
            .collect(),
    };
    context(&dir.join("ctx"));

    // The images, through the Engine API.
    build_ok(&sb, &sb.file, "v1");
    build_ok(&sb, &sb.file, "v2");
    // A Dockerfile that copies what `.dockerignore` leaves out fails, and
    // shows its own output.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, spec(&image, sb.port, api_port, "Dockerfile.bad")).unwrap();
    hatoba(&sb.state)
        .args(["build", "web", "--version", "bad", "-f"])
        .arg(&bad)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("COPY notes.secret"))
        .stderr(predicate::str::contains("was not built"));

    let up = sb.up(&[]);
    sb.deploy_ok("v1");
    assert_eq!(served(sb.port).as_deref(), Ok("v1"));
    // Side by side in one spec: `api` runs as a process, no container.
    hatoba(&sb.state)
        .args(["deploy", "api", "--version", "a1", "--wait"])
        .assert()
        .success();
    assert_eq!(served(api_port).as_deref(), Ok("a1"));
    let v1 = containers(&scope);
    assert_eq!(v1.len(), 2, "two v1 containers: {v1:?}");
    let labels = Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Labels}}"])
        .args(v1.keys())
        .output()
        .unwrap();
    let labels = String::from_utf8_lossy(&labels.stdout);
    assert!(
        labels.contains(r#""hatoba.app":"docker-e2e""#)
            && labels.contains(r#""hatoba.environment":"development""#)
            && labels.contains(r#""hatoba.service":"web""#),
        "{labels}"
    );
    assert!(v1.values().all(|v| v == "v1"), "{v1:?}");

    // Under load from here: a canary, a kill -9 of `up`, a restart, a
    // promote; not one request may fail.
    let load = Traffic::start(sb.port);
    load.wait_answered(20);
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v2"])
        .assert()
        .success();
    poll("v2 serving its share", Duration::from_secs(60), || {
        (load.so_far().ok.get("v2").copied().unwrap_or(0) >= 10).then_some(())
    });
    let before = containers(&scope);
    assert_eq!(
        before.values().filter(|v| *v == "v2").count(),
        1,
        "{before:?}"
    );
    up.kill9();
    let answered = load.so_far().answered();
    load.wait_answered(answered + 50);

    // The restarted controller re-adopts the very containers (same ids):
    // none started again, none swept.
    let up = sb.up(&[]);
    let after = containers(&scope);
    assert_eq!(
        after.keys().collect::<BTreeSet<_>>(),
        before.keys().collect::<BTreeSet<_>>(),
        "re-adopted by id"
    );
    hatoba(&sb.state)
        .args(["promote", "web"])
        .assert()
        .success();
    poll("v2 complete", Duration::from_secs(60), || {
        (latest(&sb.state)["status"] == "succeeded"
            && containers(&scope).values().all(|v| v == "v2")
            && containers(&scope).len() == 2)
            .then_some(())
    });
    // The process service came through the same restart.
    assert_eq!(served(api_port).as_deref(), Ok("a1"));
    let summary = load.finish();
    summary.assert_no_failed(200);
    assert!(summary.ok.contains_key("v1") && summary.ok.contains_key("v2"));

    // A version whose image was never built: refused before anything is
    // recorded or started, saying how to build it.
    let last = latest(&sb.state)["id"].clone();
    hatoba(&sb.state)
        .args(["deploy", "web", "--version", "v3", "--wait"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("hatoba build web --version v3"));
    assert_eq!(latest(&sb.state)["id"], last, "nothing recorded");
    assert!(containers(&scope).values().all(|v| v == "v2"));
    assert_eq!(served(sb.port).as_deref(), Ok("v2"));
    assert!(up.terminate(), "a clean stop");
    assert!(
        containers(&scope).is_empty(),
        "stopped containers are removed"
    );
}

/// What `hatoba build` refuses before it needs an engine, and `hatoba up`
/// of a Docker service with no engine answering: clear words, documented
/// exit codes.
#[test]
fn build_and_up_say_what_is_wrong_without_an_engine() {
    let api_port = hatoba_test_support::free_port().unwrap();
    let sb = Sandbox::new(|port| spec("hatoba-e2e-none", port, api_port, "Dockerfile"));
    let process = sb.file.with_file_name("process.yaml");
    std::fs::write(
        &process,
        "app: p\nservices:\n  web:\n    process: {command: ./web}\n    route: {listen: 127.0.0.1:1}\n",
    )
    .unwrap();
    hatoba(&sb.state)
        .args(["build", "nope", "--version", "v1", "-f"])
        .arg(&sb.file)
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no service `nope`"));
    hatoba(&sb.state)
        .args(["build", "web", "--version", "v1", "-f"])
        .arg(&process)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("runs as a process"));
    // The context directory does not exist: no Dockerfile to build from.
    hatoba(&sb.state)
        .args(["build", "web", "--version", "v1", "-f"])
        .arg(&sb.file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no Dockerfile at"));
    std::fs::create_dir_all(sb.file.with_file_name("ctx")).unwrap();
    std::fs::write(
        sb.file.with_file_name("ctx").join("Dockerfile"),
        "FROM scratch\n",
    )
    .unwrap();
    let nowhere = "unix:///nonexistent/docker.sock";
    hatoba(&sb.state)
        .env("DOCKER_HOST", nowhere)
        .args(["build", "web", "--version", "v1", "-f"])
        .arg(&sb.file)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no Docker Engine answers"));
    hatoba(&sb.state)
        .env("DOCKER_HOST", nowhere)
        .args(["up", "-f"])
        .arg(&sb.file)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "service `web` runs in Docker, but no Docker Engine answers",
        ));
}

/// Three Docker services on one image, one per strategy, each on its own
/// route port: `canary` (50 % judged on its success rate, then a long
/// pause), `bluegreen` (a preview address, promoted by hand, the old
/// colour kept warm 10 minutes), `rolling` (one at a time).
fn strategies_spec(image: &str, ports: [u16; 4]) -> String {
    let [canary, bluegreen, preview, rolling] = ports;
    let service = |name: &str, port: u16, strategy: &str| {
        format!(
            "  {name}:
    docker:
      image: \"{image}:${{VERSION}}\"
      build: {{context: ctx}}
      port: 8080
      args: [\"--version-label\", \"${{VERSION}}\"]
      env: {{DEMO_ERROR_RATE: \"${{ERROR_RATE:-0}}\"}}
    replicas: 2
    route: {{listen: \"127.0.0.1:{port}\"}}
    health:
      readiness: {{path: /ready, period: 100ms}}
    progressDeadline: 1m
    drain: 1s
    terminationGracePeriod: 5s
    strategy:
{strategy}
"
        )
    };
    format!(
        "app: docker-strategies\nservices:\n{}{}{}analysis:
  templates:
    success:
      metrics:
        - name: success-rate
          interval: 1s
          successCondition: result >= 0.95
          provider: {{builtin: {{metric: success-rate, window: 10s}}}}
",
        service(
            "canary",
            canary,
            "      canary:
        steps:
          - setWeight: 50
          - pause: {duration: 5m}
        analysis: {templates: [success]}",
        ),
        service(
            "bluegreen",
            bluegreen,
            &format!(
                "      blueGreen: {{previewListen: \"127.0.0.1:{preview}\", \
                 autoPromotionEnabled: false, scaleDownDelay: 10m}}"
            ),
        ),
        service(
            "rolling",
            rolling,
            "      rolling: {maxSurge: 1, maxUnavailable: 0}",
        ),
    )
}

/// The versions the running containers of one service of a scope carry.
fn versions_of(scope: &str, service: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("label=hatoba.scope={scope}"),
            "--filter",
            &format!("label=hatoba.service={service}"),
            "--format",
            "{{.Label \"hatoba.version\"}}",
        ])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// `hatoba deploy SERVICE --version V` with extra arguments.
fn deploy(
    sb: &Sandbox,
    service: &str,
    version: &str,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    hatoba(&sb.state)
        .args(["deploy", service, "--version", version])
        .args(extra)
        .assert()
}

/// The status of the newest deployment of a service.
fn latest_of(sb: &Sandbox, service: &str) -> serde_json::Value {
    let out = hatoba(&sb.state)
        .args(["history", service, "-o", "json", "--limit", "1"])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .map(|v| v["deployments"][0].clone())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn containers_roll_back_a_bad_canary_switch_blue_green_back_at_once_and_roll() {
    if engine().is_none() {
        return;
    }
    let image = format!("hatoba-e2e-strategies-{}", std::process::id());
    let ports = [0; 3].map(|_| hatoba_test_support::free_port().unwrap());
    let sb = Sandbox::new(|port| strategies_spec(&image, [port, ports[0], ports[1], ports[2]]));
    let [bluegreen, preview, rolling] = ports;
    let dir = sb.file.parent().unwrap().to_path_buf();
    let scope = std::path::absolute(&sb.state)
        .unwrap()
        .display()
        .to_string();
    let _cleanup = Cleanup {
        scope: scope.clone(),
        images: ["v1", "v2"]
            .iter()
            .map(|v| format!("{image}:{v}"))
            .collect(),
    };
    context(&dir.join("ctx"));
    // One image for every service and version: built once through the
    // Engine API, then only tagged (the versions differ by their
    // arguments and environment, which is what the strategies act on).
    hatoba(&sb.state)
        .args(["build", "canary", "--version", "v1", "-f"])
        .arg(&sb.file)
        .timeout(Duration::from_secs(300))
        .assert()
        .success();
    let tagged = Command::new("docker")
        .args(["tag", &format!("{image}:v1"), &format!("{image}:v2")])
        .status()
        .unwrap();
    assert!(tagged.success());

    let _up = sb.up(&[]);
    for service in ["canary", "bluegreen", "rolling"] {
        deploy(&sb, service, "v1", &["--wait"]).success();
        assert_eq!(versions_of(&scope, service), ["v1", "v1"], "{service}");
    }
    assert_eq!(served(sb.port).as_deref(), Ok("v1"));

    // A bad canary: half its answers are errors; its analysis fails it and
    // it is rolled back by itself, with no request failed by Hatoba (the
    // canary's own 500s are the app's, counted apart).
    let load = Traffic::start(sb.port);
    load.wait_answered(20);
    deploy(
        &sb,
        "canary",
        "v2",
        &["--set", "ERROR_RATE=0.5", "--wait=complete"],
    )
    .code(1)
    .stdout(predicate::str::contains("rolled_back"));
    assert_eq!(latest_of(&sb, "canary")["status"], "rolled_back");
    poll(
        "the bad canary's container removed",
        Duration::from_secs(30),
        || (versions_of(&scope, "canary") == ["v1", "v1"]).then_some(()),
    );
    let answered = load.so_far().answered();
    load.wait_answered(answered + 20);
    let summary = load.finish();
    summary.assert_no_failed(100);
    assert!(
        summary.app_errors.get("v2").copied().unwrap_or(0) > 0,
        "the canary had traffic and failed some of it: {summary}"
    );
    assert_eq!(summary.app_errors.get("v1"), None, "{summary}");
    assert_eq!(served(sb.port).as_deref(), Ok("v1"));

    // Blue-green: the preview address shows the new colour until it is
    // promoted; then every request goes to it at once, and a rollback
    // while the old colour is warm is one weight change back: under 1 s
    // from the command to the old version answering.
    let load = Traffic::start(bluegreen);
    let on_preview = Traffic::start(preview);
    load.wait_answered(20);
    on_preview.wait_answered(20);
    deploy(&sb, "bluegreen", "v2", &[]).success();
    poll("v2 on the preview address", Duration::from_secs(60), || {
        (served(preview).as_deref() == Ok("v2")).then_some(())
    });
    assert_eq!(served(bluegreen).as_deref(), Ok("v1"));
    hatoba(&sb.state)
        .args(["promote", "bluegreen"])
        .assert()
        .success();
    poll("v2 serving", Duration::from_secs(30), || {
        (served(bluegreen).as_deref() == Ok("v2")).then_some(())
    });
    assert_eq!(
        versions_of(&scope, "bluegreen"),
        ["v1", "v1", "v2", "v2"],
        "the old colour is warm"
    );
    let answered = load.so_far().answered();
    load.wait_answered(answered + 20);
    // The command returns once the aborted deployment is complete (the
    // new colour drained and stopped); the switch back comes before that,
    // so it is timed from the load's side while the command runs.
    let started = std::time::Instant::now();
    let mut rollback = crate::support::Reaped(
        Command::new(env!("CARGO_BIN_EXE_hatoba"))
            .arg("--state-dir")
            .arg(&sb.state)
            .args(["rollback", "bluegreen"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    poll("v1 answering again", Duration::from_secs(5), || {
        (served(bluegreen).as_deref() == Ok("v1")).then_some(())
    });
    let took = started.elapsed();
    eprintln!("blue-green warm rollback: {took:?} from the command to v1 answering");
    assert!(
        took < Duration::from_secs(1),
        "the warm rollback took {took:?}"
    );
    let exited = poll("`hatoba rollback` to end", Duration::from_secs(30), || {
        rollback.0.try_wait().unwrap()
    });
    assert!(exited.success(), "hatoba rollback: {exited}");
    poll(
        "the new colour's containers removed",
        Duration::from_secs(30),
        || (versions_of(&scope, "bluegreen") == ["v1", "v1"]).then_some(()),
    );
    let answered = load.so_far().answered();
    load.wait_answered(answered + 20);
    let (summary, previewed) = (load.finish(), on_preview.finish());
    summary.assert_no_failed(100);
    previewed.assert_no_failed(50);
    assert!(
        summary.ok.contains_key("v2") && previewed.ok.contains_key("v2"),
        "{summary}"
    );
    assert_eq!(
        served(bluegreen).as_deref(),
        Ok("v1"),
        "only v1 serves after the rollback"
    );

    // Rolling: one new container at a time, never below two ready.
    let load = Traffic::start(rolling);
    load.wait_answered(20);
    deploy(&sb, "rolling", "v2", &["--wait=complete"]).success();
    assert_eq!(served(rolling).as_deref(), Ok("v2"));
    poll("only v2 containers", Duration::from_secs(30), || {
        (versions_of(&scope, "rolling") == ["v2", "v2"]).then_some(())
    });
    let answered = load.so_far().answered();
    load.wait_answered(answered + 20);
    let summary = load.finish();
    summary.assert_no_failed(100);
    assert!(
        summary.ok.contains_key("v1") && summary.ok.contains_key("v2"),
        "{summary}"
    );
}

/// `examples/seeds-canary` as its header says, with its own Dockerfile,
/// `.dockerignore` and `stage.sh` (this build's binary staged), in its
/// `staging` environment: `hatoba build`, `hatoba up`, `hatoba deploy`,
/// and the API answers through the proxy from two containers. Only the
/// route's address (a free port) and the image's name (this run's) differ.
#[test]
fn the_seeds_canary_example_is_built_and_deployed_as_containers() {
    if engine().is_none() {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seeds-canary");
    let image = format!("hatoba-e2e-seeds-{}", std::process::id());
    let sb = Sandbox::new(|port| {
        let text = std::fs::read_to_string(example.join("hatoba.yaml")).unwrap();
        let ours = text
            .replace(
                "listen: 127.0.0.1:8000",
                &format!("listen: 127.0.0.1:{port}"),
            )
            .replace("image: moai-adk/api:", &format!("image: {image}:"));
        assert!(ours.contains(&format!("127.0.0.1:{port}")) && ours.contains(&image));
        ours
    });
    let dir = sb.file.parent().unwrap().to_path_buf();
    let scope = std::path::absolute(&sb.state)
        .unwrap()
        .display()
        .to_string();
    let _cleanup = Cleanup {
        scope: scope.clone(),
        images: vec![format!("{image}:v1")],
    };
    for name in ["Dockerfile", ".dockerignore", "stage.sh"] {
        std::fs::copy(example.join(name), dir.join(name)).unwrap();
    }
    let staged = Command::new("bash")
        .arg(dir.join("stage.sh"))
        .arg(env!("CARGO_BIN_EXE_hatoba"))
        .output()
        .unwrap();
    assert!(
        staged.status.success(),
        "{}",
        String::from_utf8_lossy(&staged.stderr)
    );
    assert!(dir.join("rootfs/hatoba").is_file());

    hatoba(&sb.state)
        .args(["build", "api", "--version", "v1", "-f"])
        .arg(&sb.file)
        .timeout(Duration::from_secs(300))
        .assert()
        .success()
        .stdout(predicate::str::starts_with("sha256:"));
    let up = sb.up(&["--env", "staging"]);
    hatoba(&sb.state)
        .args(["deploy", "api", "--version", "v1", "--wait"])
        .assert()
        .success();
    assert_eq!(served(sb.port).as_deref(), Ok("v1"));
    let running = containers(&scope);
    assert_eq!(running.len(), 2, "staging runs 2 replicas: {running:?}");
    assert!(running.values().all(|v| v == "v1"), "{running:?}");
    assert!(up.terminate(), "a clean stop");
    assert!(
        containers(&scope).is_empty(),
        "stopped containers are removed"
    );
}
