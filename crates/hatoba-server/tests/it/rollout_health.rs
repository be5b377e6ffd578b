//! A deployment's health rules on the fake runtime and data plane (real
//! time: the fake instances answer at once): a runtime that cannot list
//! its instances during a rollout is recorded as a problem and read as
//! nothing crashed, and a new version whose instances die at once is rolled
//! back, not restarted; old instances drain side by side while the
//! rollout goes on.

use crate::fake::{Action, FakeDataPlane, FakeRuntime, Trace, spec};
use hatoba_core::DeploymentStatus;
use hatoba_server::{DeployRequest, Deployed, Deployer};
use hatoba_store::{SqlStore, Store};
use std::sync::Arc;
use std::time::Duration;

const READY_ONLY: &str = "      readiness: {path: /ready, period: 100ms, timeout: 1s, successThreshold: 1, failureThreshold: 1}";

struct World {
    store: Arc<dyn Store>,
    runtime: Arc<FakeRuntime>,
    data_plane: Arc<FakeDataPlane>,
    trace: Trace,
    deployer: Arc<Deployer>,
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
        let data_plane = Arc::new(FakeDataPlane::new(trace.clone()));
        let deployer = Arc::new(Deployer::new(
            Arc::clone(&store),
            runtime.clone(),
            data_plane.clone(),
        ));
        World {
            store,
            runtime,
            data_plane,
            trace,
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
            image_id: None,
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

#[tokio::test]
async fn old_instances_drain_side_by_side_while_the_rollout_goes_on() {
    let mut w = World::new().await;
    w.spec = spec(3, READY_ONLY);
    let (_, serving) = w.deployer.deploy(&w.request("v1", None)).await.unwrap();
    // Every old instance keeps a long-lived client until released: a
    // rollout that waited for each drain before its next step would stop
    // after the first old instance left the route.
    w.data_plane.hold_drains(true);
    let deployer = Arc::clone(&w.deployer);
    let request = w.request("v2", serving);
    let rollout = tokio::spawn(async move { deployer.deploy(&request).await });
    // All three old instances drain at once: a rollout that waited for each
    // drain before its next step would never have more than one held.
    tokio::time::timeout(Duration::from_secs(20), w.data_plane.drains_held(3))
        .await
        .expect("the three old instances never drained at once");
    let id = w
        .store
        .history(&hatoba_store::HistoryFilter::all(10))
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.version.as_str() == "v2")
        .map(|d| d.id)
        .expect("v2 recorded");
    let events = w.store.events(&id).await.unwrap();
    let draining = events
        .iter()
        .filter(|e| e.kind == "instance_draining")
        .count();
    assert_eq!(draining, 3, "{events:#?}");
    assert!(
        !events.iter().any(|e| e.kind == "instance_drained"),
        "{events:#?}"
    );
    assert!(
        !rollout.is_finished(),
        "complete before its old instances stopped"
    );
    w.data_plane.hold_drains(false);
    let (d2, serving) = rollout.await.unwrap().unwrap();
    assert_eq!(d2.id, id);
    assert_eq!(d2.status, DeploymentStatus::Succeeded, "{d2:?}");
    assert_eq!(serving.unwrap().instances.len(), 3);
    let events = w.store.events(&id).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let drained = events
        .iter()
        .filter(|e| e.kind == "instance_drained")
        .collect::<Vec<_>>();
    assert_eq!(drained.len(), 3, "{kinds:?}");
    // Each had its one long-lived client when its drain began.
    assert!(
        drained
            .iter()
            .all(|e| e.message.contains(" of v1 drained in ")
                && e.message.ends_with(" (1 open when it began)")),
        "{drained:#?}"
    );
    let stopped = kinds.iter().filter(|k| **k == "instance_stopped").count();
    assert_eq!(stopped, 3, "{kinds:?}");
    // Completed after the stops, not before.
    let last_stop = kinds
        .iter()
        .rposition(|k| *k == "instance_stopped")
        .unwrap();
    let done = kinds.iter().rposition(|k| *k == "status_changed").unwrap();
    assert!(last_stop < done, "{kinds:?}");
}

#[tokio::test]
async fn each_old_instance_is_told_it_drains_before_it_is_stopped() {
    for notify in [
        hatoba_spec::DrainNotify::Path("/drain".to_owned()),
        hatoba_spec::DrainNotify::Signal("SIGUSR1".to_owned()),
    ] {
        let mut w = World::new().await;
        w.spec
            .services
            .get_mut(&"web".parse().unwrap())
            .unwrap()
            .drain_notify = Some(notify.clone());
        let (_, serving) = w.deployer.deploy(&w.request("v1", None)).await.unwrap();
        let old: Vec<String> = serving
            .as_ref()
            .unwrap()
            .instances
            .iter()
            .map(|i| i.id.0.clone())
            .collect();
        let (d2, _) = w.deployer.deploy(&w.request("v2", serving)).await.unwrap();
        assert_eq!(d2.status, DeploymentStatus::Succeeded, "{d2:?}");
        let trace: Vec<Action> = w
            .trace
            .since(hatoba_core::Millis(0))
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        for id in &old {
            let told = trace.iter().position(|a| match (a, &notify) {
                (Action::Request(i, what), hatoba_spec::DrainNotify::Path(_)) => {
                    i == id && what == "POST /drain"
                }
                (Action::Signal(i, s), hatoba_spec::DrainNotify::Signal(_)) => {
                    i == id && s == "SIGUSR1"
                }
                _ => false,
            });
            let stopped = trace.iter().position(|a| *a == Action::Stop(id.clone()));
            match (told, stopped) {
                (Some(t), Some(s)) => {
                    assert!(t < s, "{notify:?}: {id} told after its stop: {trace:?}")
                }
                _ => panic!("{notify:?}: {id} told {told:?}, stopped {stopped:?}: {trace:?}"),
            }
        }
        // New instances are never told.
        let told_new = trace.iter().any(|a| match a {
            Action::Request(i, _) | Action::Signal(i, _) => !old.contains(i),
            _ => false,
        });
        assert!(!told_new, "{trace:?}");
        let events = w.store.events(&d2.id).await.unwrap();
        assert!(
            events
                .iter()
                .filter(|e| e.kind == "instance_drained")
                .all(|e| !e.message.contains("drain.notify failed")),
            "{events:#?}"
        );
    }
}

#[tokio::test]
async fn an_old_instance_that_had_to_be_killed_is_said_so() {
    let w = World::new().await;
    let (_, serving) = w.deployer.deploy(&w.request("v1", None)).await.unwrap();
    w.runtime.ignore_sigterm();
    let (d2, _) = w.deployer.deploy(&w.request("v2", serving)).await.unwrap();
    assert_eq!(d2.status, DeploymentStatus::Succeeded, "{d2:?}");
    let events = w.store.events(&d2.id).await.unwrap();
    let stops: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "instance_stopped")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(stops.len(), 2, "{events:#?}");
    assert!(
        stops
            .iter()
            .all(|m| m.ends_with("of v1 ignored SIGTERM for its grace period: killed (SIGKILL)")),
        "{stops:#?}"
    );
}
