//! `Server::reload` on the fake runtime and data plane (real time: the
//! fake instances answer at once): an invalid spec is refused with its
//! file:line:col and changes nothing; a changed strategy is used by the
//! next deployment while the one in progress keeps the spec it started
//! with (and records its digest); a new service listens and can be
//! deployed; a spec that removes a service still running is refused, one
//! that removes an idle service removes it; what serves is probed by the
//! spec it was deployed with until a deployment brings the new one;
//! several environments reload together or not at all (one server event
//! for all of them); the in-process data plane moves a listener without
//! refusing a connection meanwhile. With no deployment in progress, the
//! event stream still carries the reload (a server event), and a stream
//! resumed from before it replays it once.

use crate::event_stream::Sse;
use crate::fake::{FakeDataPlane, FakeRuntime, Trace};
use hatoba_api::{DeployRequest, ReloadRequest};
use hatoba_core::{DeploymentId, DeploymentStatus, Event};
use hatoba_server::{DataPlane, OpError, Server, ServerConfig};
use hatoba_store::{SqlStore, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A service `NAME` of the fake runtime, on `127.0.0.1:PORT`, with `strategy`.
fn service(name: &str, port: u16, strategy: &str) -> String {
    format!(
        r#"  {name}:
    process:
      command: fake-app
    replicas: 1
    route: {{listen: "127.0.0.1:{port}"}}
    health:
      readiness: {{path: /ready, period: 100ms, timeout: 1s, successThreshold: 1, failureThreshold: 1}}
    strategy: {strategy}
"#
    )
}

const ROLLING: &str = "{rolling: {maxSurge: 1, maxUnavailable: 0}}";
/// Stops at 50 % until promoted.
const CANARY: &str = "{canary: {steps: [{setWeight: 50}, {pause: {}}]}}";

fn spec_of(services: &[String]) -> String {
    format!("app: test\nservices:\n{}", services.concat())
}

struct World {
    server: Arc<Server>,
    runtime: Arc<FakeRuntime>,
    store: Arc<dyn Store>,
    data_plane: Arc<FakeDataPlane>,
    file: PathBuf,
    token: String,
    _dir: tempfile::TempDir,
}

fn digest(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

impl World {
    async fn new(yaml: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hatoba.yaml");
        std::fs::write(&file, yaml).unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::open_sqlite(dir.path().join("hatoba.db"))
                .await
                .unwrap(),
        );
        let trace = Trace::default();
        let data_plane = Arc::new(FakeDataPlane::new(trace.clone()));
        let runtime = Arc::new(FakeRuntime::new(trace));
        let token = hatoba_server::new_token();
        let server = Server::start(ServerConfig {
            spec: hatoba_spec::parse(yaml).spec.unwrap(),
            spec_digest: digest(yaml),
            spec_path: Some(file.clone()),
            environment: "development".parse().unwrap(),
            base_dir: dir.path().to_path_buf(),
            store: Arc::clone(&store),
            runtime: runtime.clone(),
            data_plane: data_plane.clone(),
            token: token.clone(),
            secret_key: None,
        })
        .await
        .unwrap();
        server.resume().await.unwrap();
        World {
            server,
            runtime,
            store,
            data_plane,
            file,
            token,
            _dir: dir,
        }
    }

    async fn reload(&self, yaml: &str) -> Result<hatoba_api::SpecReload, OpError> {
        std::fs::write(&self.file, yaml).unwrap();
        self.server
            .reload(ReloadRequest {
                by: Some("test".to_owned()),
            })
            .await
    }

    async fn deploy(&self, service: &str, version: &str) -> Result<DeploymentId, OpError> {
        let d = self
            .server
            .deploy(DeployRequest {
                service: service.to_owned(),
                environment: None,
                version: version.to_owned(),
                vars: Default::default(),
                deployed_by: Some("test".to_owned()),
            })
            .await?;
        Ok(d.id.parse().unwrap())
    }

    /// Waits (with a deadline) until the deployment has `status`.
    async fn until(&self, id: &DeploymentId, status: DeploymentStatus) {
        let store = Arc::clone(&self.store);
        let reached = hatoba_test_support::wait_for_async(Duration::from_secs(20), || {
            let store = Arc::clone(&store);
            async move {
                store
                    .deployment(id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|d| d.status == status)
            }
        })
        .await;
        let d = self.store.deployment(id).await.unwrap();
        assert!(reached.is_ok(), "{id} never became {status}: {d:?}");
        // Its task lets go of the service just after it records the end.
        let id = id.to_string();
        let idle = hatoba_test_support::wait_for_async(Duration::from_secs(20), || async {
            self.server
                .list_services()
                .services
                .iter()
                .all(|s| s.live_deployment.as_deref() != Some(id.as_str()))
        })
        .await;
        assert!(idle.is_ok(), "{id} ended but still holds its service");
    }

    /// The typed events of a deployment.
    async fn events(&self, id: &DeploymentId) -> Vec<Event> {
        self.store
            .events(id)
            .await
            .unwrap()
            .iter()
            .map(hatoba_store::Event::typed)
            .collect()
    }

    /// The backends a service's table sends traffic to, by version.
    async fn backends(&self, service: &str) -> Vec<(String, std::net::SocketAddr)> {
        let mut out: Vec<(String, std::net::SocketAddr)> = self
            .data_plane
            .table(service)
            .await
            .into_iter()
            .flat_map(|t| t.groups)
            .filter(|g| g.weight > 0)
            .flat_map(|g| g.backends.into_iter().map(move |b| (g.version.clone(), b)))
            .collect();
        out.sort();
        out
    }

    fn services(&self) -> Vec<String> {
        self.server
            .list_services()
            .services
            .into_iter()
            .map(|s| s.service)
            .collect()
    }
}

/// The strategy a deployment was recorded with.
fn strategy(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Created { strategy, .. } => Some(strategy.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn an_invalid_spec_is_refused_with_its_place_and_changes_nothing() {
    let yaml = spec_of(&[service("web", 1, ROLLING)]);
    let w = World::new(&yaml).await;
    let d1 = w.deploy("web", "v1").await.unwrap();
    w.until(&d1, DeploymentStatus::Succeeded).await;
    let backends = w.backends("web").await;
    assert_eq!(backends.len(), 1, "v1 is routed");

    // `replicas` of the wrong type, on line 6 of the file.
    let bad = yaml.replace("replicas: 1", "replicas: many");
    let e = w.reload(&bad).await.unwrap_err();
    assert_eq!(e.kind(), hatoba_api::ErrorKind::BadInput, "{e:?}");
    let file = w.file.display().to_string();
    assert!(
        e.message().contains(&format!("{file}:6:15")),
        "the file, line and column: {e:?}"
    );
    assert!(e.message().contains("nothing changed"), "{e:?}");
    // A file that cannot be read is refused alike.
    std::fs::remove_file(&w.file).unwrap();
    let gone = w.server.reload(ReloadRequest::default()).await.unwrap_err();
    assert_eq!(gone.kind(), hatoba_api::ErrorKind::BadInput, "{gone:?}");
    assert!(gone.message().contains(&file), "{gone:?}");

    assert_eq!(w.server.spec_digest(), digest(&yaml));
    assert_eq!(w.services(), ["web"]);
    assert_eq!(w.backends("web").await, backends, "the routes stay");
    // The next deployment still runs by the spec it had.
    let d2 = w.deploy("web", "v2").await.unwrap();
    w.until(&d2, DeploymentStatus::Succeeded).await;
    let recorded = w.store.deployment(&d2).await.unwrap().unwrap();
    assert_eq!(recorded.spec_digest, digest(&yaml));
}

#[tokio::test]
async fn a_changed_strategy_is_for_the_next_deployment_and_one_in_progress_keeps_its_own() {
    let canary = spec_of(&[service("web", 1, CANARY)]);
    let w = World::new(&canary).await;
    let d1 = w.deploy("web", "v1").await.unwrap();
    w.until(&d1, DeploymentStatus::Succeeded).await;
    // v2 waits at its pause, half of the traffic on it.
    let d2 = w.deploy("web", "v2").await.unwrap();
    let store = Arc::clone(&w.store);
    let paused = hatoba_test_support::wait_for_async(Duration::from_secs(20), || {
        let store = Arc::clone(&store);
        let d2 = d2.clone();
        async move {
            store.events(&d2).await.is_ok_and(|e| {
                e.iter()
                    .any(|e| matches!(e.typed(), Event::StepPaused { .. }))
            })
        }
    })
    .await;
    assert!(paused.is_ok(), "{:#?}", w.events(&d2).await);

    let rolling = spec_of(&[service("web", 1, ROLLING)]);
    let r = w.reload(&rolling).await.unwrap();
    assert_eq!(r.changed, ["web"]);
    assert!(r.added.is_empty() && r.removed.is_empty(), "{r:?}");
    assert_eq!(r.digest, digest(&rolling));
    assert_eq!(r.previous_digest, digest(&canary));
    assert_eq!(r.in_progress, [format!("web: {d2}")]);
    assert_eq!(w.server.spec_digest(), digest(&rolling));
    // The deployment in progress is told, and goes on as a canary.
    let told = w.events(&d2).await;
    assert!(
        told.iter().any(|e| matches!(e,
            Event::SpecReloaded { digest: d, changed, .. } if *d == digest(&rolling) && changed == &["web"])),
        "{told:#?}"
    );
    w.server
        .operate("web", hatoba_server::Action::Promote, "test".to_owned())
        .await
        .unwrap();
    w.until(&d2, DeploymentStatus::Succeeded).await;
    let d2_events = w.events(&d2).await;
    assert_eq!(strategy(&d2_events).as_deref(), Some("canary"));
    assert!(
        !d2_events
            .iter()
            .any(|e| matches!(e, Event::RollingStarted { .. })),
        "{d2_events:#?}"
    );
    let recorded = w.store.deployment(&d2).await.unwrap().unwrap();
    assert_eq!(recorded.spec_digest, digest(&canary), "its own spec");

    // The next one rolls, and records the new spec.
    let d3 = w.deploy("web", "v3").await.unwrap();
    w.until(&d3, DeploymentStatus::Succeeded).await;
    let d3_events = w.events(&d3).await;
    assert_eq!(strategy(&d3_events).as_deref(), Some("rolling"));
    assert!(
        d3_events
            .iter()
            .any(|e| matches!(e, Event::RollingStarted { .. })),
        "{d3_events:#?}"
    );
    let recorded = w.store.deployment(&d3).await.unwrap().unwrap();
    assert_eq!(recorded.spec_digest, digest(&rolling));
    // The reload is in the audit log with its words.
    let audit = w.store.audit(10).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "reload"
            && a.actor == "test"
            && a.detail
                .as_deref()
                .is_some_and(|d| d.contains("changed web"))),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn with_no_deployment_in_progress_a_subscriber_gets_the_reload_and_a_resumed_stream_replays_it_once()
 {
    let rolling = spec_of(&[service("web", 1, ROLLING)]);
    let w = World::new(&rolling).await;
    let d1 = w.deploy("web", "v1").await.unwrap();
    w.until(&d1, DeploymentStatus::Succeeded).await;
    let before = w.store.last_event_id().await.unwrap();
    let api = crate::fake::serve_api(&w.server).await;
    // Following live, all of it and one service's; nothing is in progress.
    let mut all = Sse::open(api, &w.token, "/api/v1/events", Some(before)).await;
    let mut web = Sse::open(
        api,
        &w.token,
        "/api/v1/events?service=web&environment=development",
        Some(before),
    )
    .await;

    let one_at_a_time = spec_of(&[service(
        "web",
        1,
        "{rolling: {maxSurge: 0, maxUnavailable: 1}}",
    )]);
    let r = w.reload(&one_at_a_time).await.unwrap();
    assert!(r.in_progress.is_empty(), "{r:?}");
    let expected = Event::SpecReloaded {
        digest: digest(&one_at_a_time),
        previous: digest(&rolling),
        added: vec![],
        changed: vec!["web".to_owned()],
        removed: vec![],
        by: Some("test".to_owned()),
    };
    let live = all.next().await;
    assert_eq!(live.kind, "spec_reloaded", "{live:?}");
    assert!(live.id > before, "{live:?}");
    assert_eq!(
        (
            live.deployment.as_str(),
            live.service.as_str(),
            live.environment.as_str()
        ),
        ("", "", ""),
        "a server event: no deployment, every environment"
    );
    let typed = Event::from_stored(&live.kind, &live.message, live.data.as_ref());
    assert_eq!(typed, expected, "with the new digest");
    assert_eq!(web.next().await, live, "a service's stream has it too");

    // The next deployment's events follow it, in id order.
    let d2 = w.deploy("web", "v2").await.unwrap();
    let created = all.next().await;
    assert_eq!(
        (created.kind.as_str(), created.deployment.as_str()),
        ("created", d2.to_string().as_str())
    );
    assert!(created.id > live.id);
    w.until(&d2, DeploymentStatus::Succeeded).await;
    let last = w.store.last_event_id().await.unwrap();

    // Resumed from before the reload (after a restart of the client): it
    // comes back once, at its place; resumed after it, not again.
    let mut resumed = Sse::open(api, &w.token, "/api/v1/events", Some(before)).await;
    let mut replayed = vec![resumed.next().await];
    while replayed.last().is_some_and(|e| e.id < last) {
        replayed.push(resumed.next().await);
    }
    let reloads: Vec<&hatoba_api::Event> = replayed
        .iter()
        .filter(|e| e.kind == "spec_reloaded")
        .collect();
    assert_eq!(reloads, [&live], "exactly once");
    assert_eq!(replayed[0], live, "first, as it was stored");
    assert!(
        replayed.windows(2).all(|p| p[0].id < p[1].id),
        "in id order"
    );
    let mut after_it = Sse::open(api, &w.token, "/api/v1/events", Some(live.id)).await;
    assert_eq!(after_it.next().await, created);
    // A page without a cursor (`hatoba events`) shows it too; a
    // deployment's own timeline does not (none was in progress).
    let page = w
        .server
        .stored_events(&hatoba_server::ops::EventsQuery {
            after: Some(before),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events[0], live);
    let deployment_only = w
        .server
        .stored_events(&hatoba_server::ops::EventsQuery {
            after: Some(before),
            deployment: Some(d2.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        deployment_only
            .events
            .iter()
            .all(|e| e.kind != "spec_reloaded"),
        "{deployment_only:?}"
    );
    assert!(
        !w.events(&d1)
            .await
            .iter()
            .any(|e| matches!(e, Event::SpecReloaded { .. }))
    );
}

#[tokio::test]
async fn a_new_service_listens_and_is_deployed_when_asked() {
    let one = spec_of(&[service("web", 1, ROLLING)]);
    let w = World::new(&one).await;
    assert!(w.deploy("api", "v1").await.is_err(), "no api yet");

    let two = spec_of(&[service("api", 2, ROLLING), service("web", 1, ROLLING)]);
    let r = w.reload(&two).await.unwrap();
    assert_eq!(r.added, ["api"]);
    assert!(r.changed.is_empty() && r.removed.is_empty(), "{r:?}");
    assert_eq!(w.services(), ["api", "web"]);
    // Listening, nothing deployed.
    let summary = w.server.list_services();
    let api = summary
        .services
        .iter()
        .find(|s| s.service == "api")
        .unwrap();
    assert_eq!(api.listen, "127.0.0.1:2");
    assert_eq!(api.serving_version, None);

    let d = w.deploy("api", "v1").await.unwrap();
    w.until(&d, DeploymentStatus::Succeeded).await;
    let api = w.backends("api").await;
    assert_eq!(api.len(), 1, "{api:?}");
    assert_eq!(api[0].0, "v1");
    // Reloading the same file again changes nothing.
    let again = w.reload(&two).await.unwrap();
    assert_eq!(again.digest, again.previous_digest);
    assert!(
        again.added.is_empty() && again.changed.is_empty(),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_spec_that_removes_a_running_service_is_refused_and_an_idle_one_goes() {
    let both = spec_of(&[service("api", 2, ROLLING), service("web", 1, ROLLING)]);
    let w = World::new(&both).await;
    let d1 = w.deploy("web", "v1").await.unwrap();
    w.until(&d1, DeploymentStatus::Succeeded).await;

    let without_web = spec_of(&[service("api", 2, ROLLING)]);
    let e = w.reload(&without_web).await.unwrap_err();
    assert_eq!(e.kind(), hatoba_api::ErrorKind::Conflict, "{e:?}");
    assert!(
        e.message().contains("service `web`") && e.message().contains("v1 serves"),
        "{e:?}"
    );
    assert_eq!(w.server.spec_digest(), digest(&both), "nothing changed");
    assert_eq!(w.services(), ["api", "web"]);

    // `api` never ran: it goes, and cannot be deployed any more.
    let without_api = spec_of(&[service("web", 1, ROLLING)]);
    let r = w.reload(&without_api).await.unwrap();
    assert_eq!(r.removed, ["api"]);
    assert_eq!(w.services(), ["web"]);
    let gone = w.deploy("api", "v1").await.unwrap_err();
    assert_eq!(gone.kind(), hatoba_api::ErrorKind::NotFound, "{gone:?}");
    // What serves is untouched.
    let web = w.server.list_services();
    assert_eq!(web.services[0].serving_version.as_deref(), Some("v1"));
}

/// A backend that answers every request `200 ok` and closes.
async fn backend() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

/// One `GET /` on a fresh connection: the status line, or why none came.
async fn get(addr: std::net::SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// The in-process data plane moves a listener as a reload asks: the new
/// address serves the same table, and the old one answers every request
/// until the move is done (no connection refused during the switch); after
/// it, the old address is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_listener_opens_its_new_address_before_the_old_one_stops() {
    let dp = hatoba_server::LocalDataPlane::new(
        Arc::new(hatoba_metrics::Recorder::new()),
        hatoba_proxy::ProxyOptions::default(),
        1,
    );
    let free = || {
        let port = hatoba_test_support::free_port().unwrap();
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    };
    let old = dp.listen("web", free()).await.unwrap();
    dp.route(hatoba_proxy::RouteSpec {
        service: "web".to_owned(),
        groups: vec![hatoba_proxy::GroupSpec {
            role: hatoba_metrics::Role::Stable,
            version: "v1".to_owned(),
            weight: 100,
            backends: vec![backend().await],
        }],
        sticky: false,
    })
    .await
    .unwrap();
    assert_eq!(get(old).await.as_deref(), Ok("HTTP/1.1 200 OK"));

    // Requests to the old address while the listener moves.
    let moving = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let load = {
        let moving = Arc::clone(&moving);
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut first = Some(first_tx);
            // Bounded: the move takes milliseconds.
            for _ in 0..10_000 {
                if !moving.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                answers.push(get(old).await);
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
            answers
        })
    };
    first_rx.await.unwrap();
    let new = free();
    assert_eq!(dp.listen("web", new).await.unwrap(), new);
    moving.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut answers = load.await.unwrap();
    // The one in flight when the move ended may meet the old listener
    // stopping, as it is meant to from then on; every earlier one was
    // answered.
    answers.pop();
    let failed: Vec<&Result<String, String>> = answers
        .iter()
        .filter(|a| a.as_deref() != Ok("HTTP/1.1 200 OK"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {}: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert_eq!(get(new).await.as_deref(), Ok("HTTP/1.1 200 OK"));
    // The old address closes once its listener has stopped.
    let closed = hatoba_test_support::wait_for_async(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(old).await.is_err()
    })
    .await;
    assert!(closed.is_ok(), "the old address still accepts");
    dp.shutdown().await;
}

/// `web` (and with `api_ports`, `api`) in staging and production, each
/// environment on its own addresses.
fn two_environments(api_ports: Option<(u16, u16)>) -> String {
    let mut text = spec_of(&[service("web", 10, ROLLING)]);
    if api_ports.is_some() {
        text.push_str(&service("api", 20, ROLLING));
    }
    let api = |port: Option<u16>| {
        port.map_or_else(String::new, |p| {
            format!("      api: {{route: {{listen: \"127.0.0.1:{p}\"}}}}\n")
        })
    };
    text.push_str(&format!(
        "environments:\n  staging:\n    services:\n      web: {{route: {{listen: \"127.0.0.1:11\"}}}}\n{}  \
         production:\n    services:\n      web: {{route: {{listen: \"127.0.0.1:12\"}}}}\n{}",
        api(api_ports.map(|p| p.0)),
        api(api_ports.map(|p| p.1)),
    ));
    text
}

#[tokio::test]
async fn several_environments_reload_together_or_not_at_all() {
    let yaml = two_environments(None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hatoba.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let trace = Trace::default();
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::open_sqlite(dir.path().join("hatoba.db"))
            .await
            .unwrap(),
    );
    let envs = hatoba_server::Environments::start(
        ServerConfig {
            spec: hatoba_spec::parse(&yaml).spec.unwrap(),
            spec_digest: digest(&yaml),
            spec_path: Some(file.clone()),
            environment: "staging".parse().unwrap(),
            base_dir: dir.path().to_path_buf(),
            store: Arc::clone(&store),
            runtime: Arc::new(FakeRuntime::new(trace.clone())),
            data_plane: Arc::new(FakeDataPlane::new(trace)),
            token: hatoba_server::new_token(),
            secret_key: None,
        },
        &["staging".parse().unwrap(), "production".parse().unwrap()],
    )
    .await
    .unwrap();
    envs.resume().await.unwrap();
    let names = |envs: &hatoba_server::Environments| {
        envs.servers()
            .iter()
            .map(|s| {
                let services: Vec<String> = s
                    .list_services()
                    .services
                    .into_iter()
                    .map(|x| x.service)
                    .collect();
                (s.spec_digest(), services)
            })
            .collect::<Vec<_>>()
    };
    let before = names(&envs);
    assert_eq!(before.len(), 2);

    // `api` of both environments on one address: neither changes.
    let clash = two_environments(Some((22, 22)));
    std::fs::write(&file, &clash).unwrap();
    let e = envs.reload(ReloadRequest::default()).await.unwrap_err();
    assert_eq!(e.kind(), hatoba_api::ErrorKind::BadInput, "{e:?}");
    assert!(
        e.message().contains("production/api") && e.message().contains("staging/api"),
        "{e:?}"
    );
    assert_eq!(names(&envs), before);

    let good = two_environments(Some((21, 22)));
    std::fs::write(&file, &good).unwrap();
    let r = envs.reload(ReloadRequest::default()).await.unwrap();
    assert_eq!(r.added, ["production/api", "staging/api"]);
    for (d, services) in names(&envs) {
        assert_eq!(d, digest(&good));
        assert_eq!(services, ["api", "web"]);
    }
    // One server event for the reload of both (the refused one has none),
    // on each environment's stream.
    for environment in [None, Some("staging"), Some("production")] {
        let filter = hatoba_store::EventFilter {
            environment: environment.map(|e| e.parse().unwrap()),
            ..Default::default()
        };
        let reloads: Vec<Event> = store
            .events_after(0, &filter, 1000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.is_server_event())
            .map(hatoba_store::Event::typed)
            .collect();
        assert!(
            matches!(reloads.as_slice(), [Event::SpecReloaded { digest: d, added, .. }]
                if *d == digest(&good) && added == &["production/api", "staging/api"]),
            "{environment:?}: {reloads:#?}"
        );
    }
}

#[tokio::test]
async fn what_serves_is_probed_by_its_own_spec_until_a_deployment_brings_the_new_one() {
    use hatoba_runtime::Runtime as _;
    let yaml = spec_of(&[service("web", 1, ROLLING)]);
    let w = World::new(&yaml).await;
    let d1 = w.deploy("web", "v1").await.unwrap();
    w.until(&d1, DeploymentStatus::Succeeded).await;
    let web: hatoba_core::ServiceName = "web".parse().unwrap();
    let instance = |version: &'static str| {
        let runtime = Arc::clone(&w.runtime);
        let web = web.clone();
        async move {
            runtime
                .list(&web)
                .await
                .unwrap()
                .into_iter()
                .find(|i| {
                    i.version.as_str() == version
                        && i.state == hatoba_runtime::InstanceState::Running
                })
                .unwrap()
        }
    };

    // The new spec probes readiness on `/other` (the fake answers it 200).
    let other = yaml.replace("path: /ready", "path: /other");
    w.reload(&other).await.unwrap();
    // v1 runs by its own spec: `/ready` failing takes it out of the route.
    let v1 = instance("v1").await;
    w.runtime.set_ready(&v1.id, 503);
    let out = hatoba_test_support::wait_for_async(Duration::from_secs(20), || async {
        w.backends("web").await.is_empty()
    })
    .await;
    assert!(
        out.is_ok(),
        "v1 stayed routed: {:?}",
        w.backends("web").await
    );
    w.runtime.set_ready(&v1.id, 200);

    // v2 is deployed by the new spec, and supervised by it: its `/ready`
    // failing changes nothing, `/other` is what is asked.
    let d2 = w.deploy("web", "v2").await.unwrap();
    w.until(&d2, DeploymentStatus::Succeeded).await;
    let v2 = instance("v2").await;
    w.runtime.set_ready(&v2.id, 503);
    let lists = w.runtime.lists();
    let rounds = hatoba_test_support::wait_for_async(Duration::from_secs(20), || async {
        w.runtime.lists() >= lists + 5
    })
    .await;
    assert!(rounds.is_ok(), "the supervisor ran no rounds");
    assert_eq!(
        w.backends("web").await,
        [("v2".to_owned(), v2.addr)],
        "v2 is probed on /other"
    );
}
