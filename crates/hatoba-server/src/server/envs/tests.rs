//! Unit tests of the environments' shared parts: address clashes, the
//! data plane's qualified keys and its one stop.

use super::{EnvDataPlane, EnvRuntime, StopTogether, listen_clash};
use crate::dataplane::{DataPlane, LocalDataPlane};
use hatoba_core::EnvName;
use hatoba_proxy::{GroupSpec, RouteSpec};
use std::sync::Arc;

fn spec(staging_listen: &str) -> hatoba_spec::Spec {
    let text = format!(
        "app: t\nservices:\n  web:\n    process: {{command: ./web}}\n    route: {{listen: 127.0.0.1:18080}}\n\
         environments:\n  staging:\n    services:\n      web:\n        route: {{listen: {staging_listen}}}\n\
         \x20 production:\n    services:\n      web:\n        route: {{listen: 127.0.0.1:18090}}\n"
    );
    let parsed = hatoba_spec::parse_bytes(text.as_bytes());
    parsed
        .spec
        .unwrap_or_else(|| panic!("{:?}", parsed.diagnostics))
}

fn envs(names: &[&str]) -> Vec<EnvName> {
    names.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn two_environments_on_one_address_are_named_and_distinct_ones_pass() {
    let clash = listen_clash(&spec("127.0.0.1:18090"), &envs(&["production", "staging"]));
    assert_eq!(
        clash,
        Some((
            "127.0.0.1:18090".parse().unwrap(),
            "production/web".to_owned(),
            "staging/web".to_owned()
        ))
    );
    assert_eq!(
        listen_clash(&spec("127.0.0.1:18085"), &envs(&["production", "staging"])),
        None
    );
    // `development` is the base services: its address is its own too.
    assert_eq!(
        listen_clash(&spec("127.0.0.1:18080"), &envs(&["development", "staging"]))
            .map(|c| (c.1, c.2)),
        Some(("development/web".to_owned(), "staging/web".to_owned()))
    );
}

fn one_stop(n: usize) -> Arc<StopTogether> {
    Arc::new(StopTogether {
        barrier: tokio::sync::Barrier::new(n),
        done: tokio::sync::OnceCell::new(),
    })
}

#[tokio::test]
async fn each_environment_has_its_own_listener_and_table_under_one_service_name() {
    let inner = Arc::new(LocalDataPlane::new(
        Arc::new(hatoba_metrics::Recorder::new()),
        hatoba_proxy::ProxyOptions::default(),
        1,
    ));
    let stop = one_stop(2);
    let plane = |env: &str| EnvDataPlane {
        inner: Arc::clone(&inner) as Arc<dyn DataPlane>,
        env: env.parse().unwrap(),
        stop: Arc::clone(&stop),
    };
    let (staging, production) = (plane("staging"), plane("production"));
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = staging.listen("web", any).await.unwrap();
    let b = production.listen("web", any).await.unwrap();
    assert_ne!(a, b);
    let table = |version: &str| RouteSpec {
        service: "web".to_owned(),
        groups: vec![GroupSpec {
            role: hatoba_metrics::Role::Stable,
            version: version.to_owned(),
            weight: 100,
            backends: vec!["127.0.0.1:9".parse().unwrap()],
        }],
        sticky: false,
    };
    staging.route(table("v2")).await.unwrap();
    production.route(table("v1")).await.unwrap();
    let shown = |t: Option<RouteSpec>| t.map(|t| (t.service, t.groups[0].version.clone()));
    assert_eq!(
        shown(staging.table("web").await),
        Some(("web".to_owned(), "v2".to_owned()))
    );
    assert_eq!(
        shown(production.table("web").await),
        Some(("web".to_owned(), "v1".to_owned()))
    );
    // The data plane itself knows them apart by their qualified keys.
    assert!(inner.router("staging/web").is_some());
    assert!(inner.router("production/web").is_some());
    assert!(inner.router("web").is_none());
    // One environment's stop waits for the other's; then both return.
    let first = tokio::spawn(async move {
        staging.shutdown().await;
    });
    tokio::task::yield_now().await;
    assert!(!first.is_finished(), "stopped before the other environment");
    production.shutdown().await;
    first.await.unwrap();
}

/// A runtime that keeps what it is given and records what it is asked.
#[derive(Debug, Default)]
struct Recording {
    instances: std::sync::Mutex<Vec<hatoba_runtime::InstanceStatus>>,
    asked: std::sync::Mutex<Vec<String>>,
}

impl Recording {
    fn ask(&self, what: String) {
        self.asked.lock().unwrap().push(what);
    }
}

#[async_trait::async_trait]
impl hatoba_runtime::Runtime for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn start(
        &self,
        _spec: &hatoba_runtime::InstanceSpec,
        _now: hatoba_core::Millis,
    ) -> Result<hatoba_runtime::InstanceStatus, hatoba_runtime::RuntimeError> {
        unreachable!("not started in these tests")
    }

    async fn stop(
        &self,
        id: &hatoba_runtime::InstanceId,
        _grace: std::time::Duration,
    ) -> Result<hatoba_runtime::InstanceStatus, hatoba_runtime::RuntimeError> {
        self.ask(format!("stop {id}"));
        let mut list = self.instances.lock().unwrap();
        let at = list.iter().position(|i| &i.id == id).unwrap();
        Ok(list.remove(at))
    }

    async fn list(
        &self,
        service: &hatoba_core::ServiceName,
    ) -> Result<Vec<hatoba_runtime::InstanceStatus>, hatoba_runtime::RuntimeError> {
        Ok(self
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| &i.service == service)
            .cloned()
            .collect())
    }

    async fn adopt(
        &self,
        known: &hatoba_runtime::InstanceStatus,
    ) -> Result<hatoba_runtime::InstanceStatus, hatoba_runtime::RuntimeError> {
        self.instances.lock().unwrap().push(known.clone());
        Ok(known.clone())
    }

    async fn sweep(
        &self,
        _keep: &[hatoba_runtime::InstanceId],
    ) -> Result<Vec<hatoba_runtime::InstanceId>, hatoba_runtime::RuntimeError> {
        self.ask("sweep".to_owned());
        Ok(Vec::new())
    }

    async fn signal(
        &self,
        id: &hatoba_runtime::InstanceId,
        signal: &str,
    ) -> Result<(), hatoba_runtime::RuntimeError> {
        self.ask(format!("signal {id} {signal}"));
        Ok(())
    }

    async fn check(
        &self,
        spec: &hatoba_runtime::InstanceSpec,
    ) -> Result<Option<String>, hatoba_runtime::RuntimeError> {
        self.ask(format!("check {}", spec.version));
        Ok(None)
    }
}

fn instance(id: &str) -> hatoba_runtime::InstanceStatus {
    hatoba_runtime::InstanceStatus {
        id: hatoba_runtime::InstanceId(id.to_owned()),
        service: "web".parse().unwrap(),
        version: "v1".parse().unwrap(),
        addr: "127.0.0.1:9".parse().unwrap(),
        pid: None,
        proc_start: None,
        started_at: hatoba_core::Millis(0),
        state: hatoba_runtime::InstanceState::Running,
        identity: None,
        oom_killed: false,
        memory_limit: None,
        log: None,
        own_health: None,
    }
}

#[tokio::test]
async fn each_environment_lists_its_own_instances_and_sweeps_none() {
    use hatoba_runtime::Runtime as _;
    let shared = Arc::new(Recording::default());
    let staging = EnvRuntime::new(Arc::clone(&shared) as Arc<dyn hatoba_runtime::Runtime>);
    let production = EnvRuntime::new(Arc::clone(&shared) as Arc<dyn hatoba_runtime::Runtime>);
    staging.adopt(&instance("web-v1-0001")).await.unwrap();
    production.adopt(&instance("web-v1-0002")).await.unwrap();
    let web: hatoba_core::ServiceName = "web".parse().unwrap();
    let ids = |l: Vec<hatoba_runtime::InstanceStatus>| -> Vec<String> {
        l.into_iter().map(|i| i.id.0).collect()
    };
    assert_eq!(ids(staging.list(&web).await.unwrap()), ["web-v1-0001"]);
    assert_eq!(ids(production.list(&web).await.unwrap()), ["web-v1-0002"]);
    // The sweep is not an environment's to run; the rest is passed on.
    assert!(staging.sweep(&[]).await.unwrap().is_empty());
    let id = hatoba_runtime::InstanceId("web-v1-0001".to_owned());
    staging.signal(&id, "SIGUSR1").await.unwrap();
    staging.stop(&id, std::time::Duration::ZERO).await.unwrap();
    let spec = hatoba_runtime::InstanceSpec {
        service: web.clone(),
        version: "v2".parse().unwrap(),
        workload: hatoba_runtime::Workload::Process {
            program: "app".to_owned(),
            args: Vec::new(),
        },
        env: Default::default(),
        working_dir: std::path::PathBuf::from("."),
        secrets: Default::default(),
    };
    staging.check(&spec).await.unwrap();
    assert_eq!(
        *shared.asked.lock().unwrap(),
        ["signal web-v1-0001 SIGUSR1", "stop web-v1-0001", "check v2"]
    );
    assert!(staging.list(&web).await.unwrap().is_empty());
    assert_eq!(ids(production.list(&web).await.unwrap()), ["web-v1-0002"]);
}
