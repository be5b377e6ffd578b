//! The images `build` makes carry the scope, the service, the version and
//! the tag they were built as, and `built_images` lists exactly those of
//! one service of one scope: not another service's, not another scope's,
//! not a user's image made `FROM` one of ours; an image a container is
//! made from is said to be in use.

use super::*;
use hatoba_runtime_docker::BuildSpec;

/// Removes images by id (or tag), forced, on drop: the last made first,
/// since the engine never removes an image another is made `FROM` (the
/// user's image here), even forced, and the base was left behind.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(self.0.iter().rev())
                .output();
        }
    }
}

/// A context whose Dockerfile is `FROM scratch` (nothing pulled) with a
/// file saying `what`, so that each build is another image.
fn context(what: &str, run: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM scratch\nLABEL {TEST_LABEL}={run}\nCOPY said /said\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("said"), what).unwrap();
    hatoba_runtime_docker::context::context_tar(dir.path(), "Dockerfile").unwrap()
}

async fn build(rt: &DockerRuntime, run: &str, service: &str, version: &str) -> String {
    let spec = BuildSpec {
        tag: format!("hatoba-built-test-{run}-{service}:{version}"),
        dockerfile: "Dockerfile".to_owned(),
        service: Some(service.to_owned()),
        version: Some(version.to_owned()),
        ..BuildSpec::default()
    };
    let what = format!("{service} {version} {}", rt.scope());
    rt.build(context(&what, run), &spec, |_| {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_this_scopes_builds_of_the_service_are_listed_as_built() {
    let run = run_id();
    let Some(rt) = engine(&format!("test-{run}")).await else {
        return;
    };
    let other_scope = engine(&format!("test-{run}-other")).await.unwrap();
    let mut made = Images(Vec::new());
    let v1 = build(&rt, &run, "web", "v1").await;
    made.0.push(v1.clone());
    let v2 = build(&rt, &run, "web", "v2").await;
    made.0.push(v2.clone());
    let api = build(&rt, &run, "api", "v1").await;
    made.0.push(api.clone());
    let elsewhere = build(&other_scope, &run, "web", "v3").await;
    made.0.push(elsewhere.clone());
    // A user's image made FROM ours: it inherits our labels, and is not ours.
    let users = format!("hatoba-built-test-{run}-users:1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {v1}\nCOPY mine /mine\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("mine"), "mine").unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", &users])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    made.0.push(users.clone());
    let users_id = rt.image_id(&users).await.unwrap().unwrap();
    let inspected = rt.client().inspect_image(&users_id).await.unwrap();
    let labels = inspected.config.unwrap().labels.unwrap();
    assert_eq!(
        labels.get("hatoba.service").map(String::as_str),
        Some("web"),
        "the user's image does inherit our labels: {labels:?}"
    );

    let web: hatoba_core::ServiceName = "web".parse().unwrap();
    let mut listed = rt.built_images(&web).await.unwrap();
    listed.sort_by(|a, b| a.version.cmp(&b.version));
    let ids: Vec<&str> = listed.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, [v1.as_str(), v2.as_str()], "{listed:?}");
    assert_eq!(listed[0].version.as_deref(), Some("v1"));
    assert_eq!(listed[1].version.as_deref(), Some("v2"));
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert!(
        listed
            .iter()
            .all(|b| (now - 600..=now + 5).contains(&b.created)),
        "built just now: {listed:?}"
    );
    assert!(listed.iter().all(|b| !b.in_use), "{listed:?}");

    // A container made from v2 (not even started): in use.
    let out = Command::new("docker")
        .args([
            "create",
            "--label",
            &format!("{TEST_LABEL}={run}"),
            &v2,
            "/said",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let container = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let listed = rt.built_images(&web).await.unwrap();
    let used: Vec<&str> = listed
        .iter()
        .filter(|b| b.in_use)
        .map(|b| b.id.as_str())
        .collect();
    assert_eq!(used, [v2.as_str()], "{listed:?}");
    // The engine keeps both: v2 a container uses, v1 the user's image is
    // made from (nothing is forced).
    assert!(
        rt.remove_images(&[v1.clone(), v2.clone()])
            .await
            .unwrap()
            .is_empty()
    );
    let _ = Command::new("docker")
        .args(["rm", "-f", &container])
        .output();
    assert_eq!(
        rt.remove_images(&[v1.clone(), v2.clone()]).await.unwrap(),
        [v2.as_str()]
    );
    assert!(rt.image_id(&users).await.unwrap().is_some());
    let left: Vec<String> = rt
        .built_images(&web)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(left, [v1.as_str()]);
}
