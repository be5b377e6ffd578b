//! A deployment's health rules on the fake runtime and data plane (real
//! time: the fake instances answer at once): a runtime that cannot list
//! its instances during a rollout is recorded as a problem and read as
//! nothing crashed, and a new version whose instances die at once is rolled
//! back, not restarted.

use crate::fake::{FakeDataPlane, FakeRuntime, Trace, spec};
use hatoba_core::DeploymentStatus;
use hatoba_server::{DeployRequest, Deployed, Deployer};
use hatoba_store::{SqlStore, Store};
use std::sync::Arc;

const READY_ONLY: &str = "      readiness: {path: /ready, period: 100ms, timeout: 1s, successThreshold: 1, failureThreshold: 1}";

struct World {
    store: Arc<dyn Store>,
    runtime: Arc<FakeRuntime>,
    deployer: Deployer,
    spec: hatoba_spec::Spec,
    dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::open_sqlite(dir.path().join("hatoba.db"))
                .await
                .unwrap(),
        );
        let trace = Trace::default();
        let runtime = Arc::new(FakeRuntime::new(trace.clone()));
        let deployer = Deployer::new(
            Arc::clone(&store),
            runtime.clone(),
            Arc::new(FakeDataPlane::new(trace)),
        );
        World {
            store,
            runtime,
            deployer,
            spec: spec(2, READY_ONLY),
            dir,
        }
    }

    fn request(&self, version: &str, current: Option<Deployed>) -> DeployRequest {
        DeployRequest {
            service: "web".parse().unwrap(),
            environment: "development".parse().unwrap(),
            svc: self.spec.services[&"web".parse().unwrap()].clone(),
            spec: self.spec.clone(),
            version: version.parse().unwrap(),
            vars: Default::default(),
            secrets: Default::default(),
            base_dir: self.dir.path().to_path_buf(),
            spec_digest: "test".to_owned(),
            deployed_by: "test".to_owned(),
            current,
            rollback_of: None,
            require_approval: false,
        }
    }
}

#[tokio::test]
async fn a_runtime_that_cannot_list_mid_rollout_is_recorded_and_crashes_nothing() {
    let w = World::new().await;
    let (d1, serving) = w.deployer.deploy(&w.request("v1", None)).await.unwrap();
    assert_eq!(d1.status, DeploymentStatus::Succeeded, "{d1:?}");
    w.runtime.fail_list(Some("/proc: permission denied"));
    let (d2, serving) = w.deployer.deploy(&w.request("v2", serving)).await.unwrap();
    assert_eq!(d2.status, DeploymentStatus::Succeeded, "{d2:?}");
    assert_eq!(serving.unwrap().version.as_str(), "v2");
    let events = w.store.events(&d2.id).await.unwrap();
    let problems: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "listing_failed" || e.kind == "listing_recovered")
        .map(|e| e.message.as_str())
        .collect();
    // Said once, not at every round.
    assert_eq!(
        problems,
        vec![
            "the runtime cannot list the instances (cannot inspect the machine: /proc: permission denied): nothing is restarted until it can"
        ],
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e.kind == "instance_restarted"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_new_version_that_dies_at_once_is_rolled_back_not_restarted() {
    let w = World::new().await;
    let (_, serving) = w.deployer.deploy(&w.request("v1", None)).await.unwrap();
    w.runtime.crash_on_start(Some(3));
    let (d2, serving) = w.deployer.deploy(&w.request("v2", serving)).await.unwrap();
    assert_eq!(d2.status, DeploymentStatus::RolledBack, "{d2:?}");
    assert_eq!(
        d2.reason.as_deref(),
        Some("instance web-v2-2 of v2 exited with code 3"),
        "{d2:?}"
    );
    assert_eq!(serving.unwrap().version.as_str(), "v1");
    let events = w.store.events(&d2.id).await.unwrap();
    assert!(
        !events.iter().any(|e| e.kind == "instance_restarted"),
        "{events:#?}"
    );
}
