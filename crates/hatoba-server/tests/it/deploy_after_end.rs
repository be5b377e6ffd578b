//! A deploy asked just after the previous deployment's end is recorded,
//! on the fake runtime and data plane (real time: the fake instances
//! answer at once). The previous deployment's task still holds the service
//! for a moment then (it saves the service's state, then says what
//! serves); a store that holds that save ([`Gate`]) keeps the test in that
//! moment for as long as it likes: the deploy waits for the task instead of
//! being refused, and runs over what the task left serving; a rollback
//! waits too, and rolls the ended deployment back instead of answering it
//! as the one in progress.

use crate::fake::{FakeRuntime, Trace, call, serve_api};
use async_trait::async_trait;
use hatoba_core::{DeploymentId, DeploymentStatus, EnvName, Millis, ServiceName};
use hatoba_server::{Server, ServerConfig};
use hatoba_store::{
    AuditEntry, Deployment, Event, EventFilter, HistoryFilter, Measurement, NewAudit,
    NewDeployment, NewEvent, NewMeasurement, SealedSecret, SecretVersion, SqlStore, Store,
    StoreError,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A store that, once armed, holds the first controller-state save after a
/// deployment's terminal transition until released, and counts the reads
/// of that deployment meanwhile.
#[derive(Debug)]
struct Gate {
    inner: Arc<dyn Store>,
    armed: Mutex<bool>,
    /// The deployment whose end was just recorded (armed).
    ended: Mutex<Option<DeploymentId>>,
    /// The deployment whose task is held in its save.
    held: watch::Sender<Option<DeploymentId>>,
    released: watch::Sender<bool>,
    /// Reads of the held deployment while it is held.
    asked: watch::Sender<u32>,
}

impl Gate {
    fn new(inner: Arc<dyn Store>) -> Gate {
        Gate {
            inner,
            armed: Mutex::new(false),
            ended: Mutex::new(None),
            held: watch::Sender::new(None),
            released: watch::Sender::new(false),
            asked: watch::Sender::new(0),
        }
    }

    fn arm(&self) {
        *self.armed.lock().unwrap() = true;
    }

    fn release(&self) {
        self.released.send_replace(true);
    }
}

#[async_trait]
impl Store for Gate {
    async fn create_deployment(&self, new: NewDeployment) -> Result<Deployment, StoreError> {
        self.inner.create_deployment(new).await
    }

    async fn transition(
        &self,
        id: &DeploymentId,
        to: DeploymentStatus,
        reason: Option<String>,
        at: Millis,
    ) -> Result<Deployment, StoreError> {
        let d = self.inner.transition(id, to, reason, at).await?;
        if d.status.is_terminal() && std::mem::take(&mut *self.armed.lock().unwrap()) {
            *self.ended.lock().unwrap() = Some(d.id.clone());
        }
        Ok(d)
    }

    async fn mark_serving(
        &self,
        id: &DeploymentId,
        at: Millis,
        message: String,
        data: Option<serde_json::Value>,
    ) -> Result<Deployment, StoreError> {
        self.inner.mark_serving(id, at, message, data).await
    }

    async fn append_event(&self, id: &DeploymentId, event: NewEvent) -> Result<Event, StoreError> {
        self.inner.append_event(id, event).await
    }

    async fn append_server_event(
        &self,
        environment: Option<&EnvName>,
        event: NewEvent,
    ) -> Result<Event, StoreError> {
        self.inner.append_server_event(environment, event).await
    }

    async fn deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError> {
        if self.held.borrow().as_ref() == Some(id) && !*self.released.borrow() {
            self.asked.send_modify(|n| *n += 1);
        }
        self.inner.deployment(id).await
    }

    async fn events(&self, id: &DeploymentId) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id).await
    }

    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.events_after(after, filter, limit).await
    }

    async fn events_before(
        &self,
        before: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.events_before(before, filter, limit).await
    }

    async fn last_event_id(&self) -> Result<u64, StoreError> {
        self.inner.last_event_id().await
    }

    async fn record_measurement(
        &self,
        id: &DeploymentId,
        measurement: NewMeasurement,
    ) -> Result<Measurement, StoreError> {
        self.inner.record_measurement(id, measurement).await
    }

    async fn measurements(&self, id: &DeploymentId) -> Result<Vec<Measurement>, StoreError> {
        self.inner.measurements(id).await
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<Deployment>, StoreError> {
        self.inner.history(filter).await
    }

    async fn current(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<Deployment>, StoreError> {
        self.inner.current(service, environment).await
    }

    async fn current_all(&self) -> Result<Vec<Deployment>, StoreError> {
        self.inner.current_all().await
    }

    async fn live(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<Deployment>, StoreError> {
        self.inner.live(service, environment).await
    }

    async fn record_audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError> {
        self.inner.record_audit(entry).await
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(limit).await
    }

    async fn save_controller_state(
        &self,
        service: &ServiceName,
        environment: &EnvName,
        state: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        let ended = self.ended.lock().unwrap().take();
        if let Some(id) = ended {
            self.held.send_replace(Some(id));
            let mut released = self.released.subscribe();
            let _ = released.wait_for(|r| *r).await;
        }
        self.inner
            .save_controller_state(service, environment, state, at)
            .await
    }

    async fn controller_state(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<String>, StoreError> {
        self.inner.controller_state(service, environment).await
    }

    async fn put_secret(&self, secret: SealedSecret) -> Result<(), StoreError> {
        self.inner.put_secret(secret).await
    }

    async fn secret_versions(
        &self,
        environment: Option<&EnvName>,
    ) -> Result<Vec<SecretVersion>, StoreError> {
        self.inner.secret_versions(environment).await
    }

    async fn secret(
        &self,
        environment: &EnvName,
        name: &str,
        version: u64,
    ) -> Result<Option<SealedSecret>, StoreError> {
        self.inner.secret(environment, name, version).await
    }

    async fn remove_secret(&self, environment: &EnvName, name: &str) -> Result<u64, StoreError> {
        self.inner.remove_secret(environment, name).await
    }
}

const SPEC: &str = r#"
app: test
services:
  web:
    process:
      command: fake-app
    replicas: 1
    route: {listen: "127.0.0.1:1"}
    health:
      readiness: {path: /ready, period: 100ms, timeout: 1s, successThreshold: 1, failureThreshold: 1}
    strategy: {rolling: {maxSurge: 1, maxUnavailable: 0}}
"#;

const DEADLINE: Duration = Duration::from_secs(20);

/// `POST /api/v1/deployments` of `web` at `version`: the answer.
async fn deploy(api: std::net::SocketAddr, token: &str, version: &str) -> (u16, String) {
    let body = serde_json::to_vec(&hatoba_api::DeployRequest {
        service: "web".to_owned(),
        version: version.to_owned(),
        ..Default::default()
    })
    .unwrap();
    call(api, "POST", "/api/v1/deployments", Some(token), &body).await
}

/// Waits (with a deadline) until the deployment `id` has ended as
/// succeeded and its task let go of the service.
async fn until_done(server: &Server, store: &dyn Store, id: &str) {
    let id: DeploymentId = id.parse().unwrap();
    let done = hatoba_test_support::wait_for_async(DEADLINE, || async {
        let ended = store
            .deployment(&id)
            .await
            .ok()
            .flatten()
            .is_some_and(|d| d.status == DeploymentStatus::Succeeded);
        ended
            && server
                .list_services()
                .services
                .iter()
                .all(|s| s.live_deployment.is_none())
    })
    .await;
    let d = store.deployment(&id).await.unwrap();
    assert!(done.is_ok(), "{id} did not succeed and let go: {d:?}");
}

/// A server over the fakes and a gated store, serving its API.
struct World {
    server: Arc<Server>,
    /// The store under the gate: the test's own reads leave the gate's
    /// count alone.
    sql: Arc<dyn Store>,
    gate: Arc<Gate>,
    runtime: Arc<FakeRuntime>,
    api: std::net::SocketAddr,
    token: String,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let sql: Arc<dyn Store> = Arc::new(
            SqlStore::open_sqlite(dir.path().join("hatoba.db"))
                .await
                .unwrap(),
        );
        let gate = Arc::new(Gate::new(Arc::clone(&sql)));
        let trace = Trace::default();
        let runtime = Arc::new(FakeRuntime::new(trace.clone()));
        let token = hatoba_server::new_token();
        let server = Server::start(ServerConfig {
            spec: hatoba_spec::parse(SPEC).spec.unwrap(),
            spec_digest: "test".to_owned(),
            spec_path: None,
            environment: "development".parse().unwrap(),
            base_dir: dir.path().to_path_buf(),
            store: gate.clone(),
            runtime: runtime.clone(),
            data_plane: Arc::new(crate::fake::FakeDataPlane::new(trace)),
            token: token.clone(),
            secret_key: None,
        })
        .await
        .unwrap();
        server.resume().await.unwrap();
        let api = serve_api(&server).await;
        World {
            server,
            sql,
            gate,
            runtime,
            api,
            token,
            _dir: dir,
        }
    }

    /// Deploys `version` and waits until it succeeded and let go.
    async fn deployed(&self, version: &str) -> hatoba_api::Deployment {
        let (code, body) = deploy(self.api, &self.token, version).await;
        assert_eq!(code, 202, "{body}");
        let d: hatoba_api::Deployment = serde_json::from_str(&body).unwrap();
        until_done(&self.server, self.sql.as_ref(), &d.id).await;
        d
    }

    /// Deploys `version` with the gate armed, and returns once its end is
    /// recorded and its task is held before it lets go of `web`.
    async fn ended_and_held(&self, version: &str) -> hatoba_api::Deployment {
        self.gate.arm();
        let (code, body) = deploy(self.api, &self.token, version).await;
        assert_eq!(code, 202, "{body}");
        let d: hatoba_api::Deployment = serde_json::from_str(&body).unwrap();
        let mut held = self.gate.held.subscribe();
        tokio::time::timeout(DEADLINE, held.wait_for(|h| h.is_some()))
            .await
            .expect("the task never reached its last save")
            .unwrap();
        let ended = self.sql.deployment(&d.id.parse().unwrap()).await.unwrap();
        assert_eq!(
            ended.map(|d| d.status),
            Some(DeploymentStatus::Succeeded),
            "a client sees {version}'s end"
        );
        assert_eq!(
            self.server.list_services().services[0]
                .live_deployment
                .as_deref(),
            Some(d.id.as_str()),
            "{version}'s task still holds the service"
        );
        d
    }

    /// Asks `method path` while the task is held: the operation looks at
    /// the held deployment's recorded end, then waits for its task (it is
    /// not answered before the task lets go); released, its answer.
    async fn asked_while_held(
        &self,
        method: &'static str,
        path: &'static str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let (api, token) = (self.api, self.token.clone());
        let mut asking =
            tokio::spawn(async move { call(api, method, path, Some(&token), &body).await });
        let mut asked = self.gate.asked.subscribe();
        tokio::select! {
            answer = &mut asking => {
                panic!("{method} {path} was answered while the task held the service: {answer:?}")
            }
            seen = tokio::time::timeout(DEADLINE, asked.wait_for(|n| *n > 0)) => {
                seen.expect("the operation never looked at the held deployment's end").unwrap();
            }
        }
        self.gate.release();
        asking.await.unwrap()
    }

    /// The versions of the running instances.
    fn running(&self) -> Vec<String> {
        self.runtime
            .running()
            .iter()
            .map(|i| i.version.to_string())
            .collect()
    }
}

#[tokio::test]
async fn a_deploy_asked_as_the_last_one_ends_waits_for_it_and_runs_over_what_it_left() {
    let w = World::new().await;
    w.deployed("v1").await;
    w.ended_and_held("v2").await;
    let body = serde_json::to_vec(&hatoba_api::DeployRequest {
        service: "web".to_owned(),
        version: "v3".to_owned(),
        ..Default::default()
    })
    .unwrap();
    let (code, body) = w
        .asked_while_held("POST", "/api/v1/deployments", body)
        .await;
    assert_eq!(code, 202, "{body}");
    let d3: hatoba_api::Deployment = serde_json::from_str(&body).unwrap();
    until_done(&w.server, w.sql.as_ref(), &d3.id).await;
    assert_eq!(
        w.running(),
        ["v3"],
        "v3 replaced v2 (a deploy that read what served before v2 ended would leave v2 running)"
    );
}

#[tokio::test]
async fn a_rollback_asked_as_the_last_deployment_ends_rolls_it_back() {
    let w = World::new().await;
    w.deployed("v1").await;
    let d2 = w.ended_and_held("v2").await;
    let (code, body) = w
        .asked_while_held(
            "POST",
            "/api/v1/services/web/rollback",
            br#"{"by": "test"}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let back: hatoba_api::Deployment = serde_json::from_str(&body).unwrap();
    assert_ne!(
        back.id, d2.id,
        "the rollback answered the ended deployment itself"
    );
    assert_eq!(back.version, "v1", "{body}");
    assert_eq!(back.rollback_of.as_deref(), Some(d2.id.as_str()), "{body}");
    until_done(&w.server, w.sql.as_ref(), &back.id).await;
    assert_eq!(w.running(), ["v1"]);
}
