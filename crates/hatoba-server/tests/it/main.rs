//! Deployments for real: the local-process runtime starts instances (this
//! test binary re-executed as the demo app), the proxy carries a steady
//! load, the store records everything. A good version goes through a canary
//! with no failed request; a version that answers errors is caught by the
//! builtin analysis and rolled back; one that never gets ready is rolled
//! back at its deadline; the serving version keeps serving throughout.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod api;
mod deploy_after_end;
mod environments;
mod event_stream;
mod fake;
mod reload;
mod rollout_health;
mod supervisor;

use hatoba_core::DeploymentStatus;
use hatoba_metrics::Recorder;
use hatoba_proxy::{ProxyOptions, ProxyServer, RouteSpec, Router};
use hatoba_runtime_process::ProcessRuntime;
use hatoba_server::{DeployRequest, Deployer, LocalDataPlane};
use hatoba_store::{SqlStore, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// When re-executed as an instance: the demo app on `PORT`, its knobs from
/// the environment.
#[test]
fn child() {
    let Ok(version) = std::env::var("CHILD_VERSION") else {
        return;
    };
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let cfg = hatoba_demo_app::Config {
        version_label: version,
        error_rate: std::env::var("CHILD_ERROR_RATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        ready_after: Duration::from_millis(
            std::env::var("CHILD_READY_AFTER_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _ = rt.block_on(hatoba_demo_app::serve_until_sigterm(port, cfg));
    std::process::exit(0);
}

fn spec_yaml() -> String {
    let exe = std::env::current_exe().unwrap();
    format!(
        r#"
app: test
services:
  web:
    process:
      command: {exe}
      args: ["child", "--exact", "--nocapture", "--test-threads=1"]
      env:
        CHILD_VERSION: "${{VERSION}}"
        CHILD_ERROR_RATE: "${{ERROR_RATE:-0}}"
        CHILD_READY_AFTER_MS: "${{READY_AFTER_MS:-0}}"
    replicas: 2
    route: {{listen: "127.0.0.1:1"}}
    health:
      readiness: {{path: /ready, period: 100ms, timeout: 1s}}
    progressDeadline: 5s
    terminationGracePeriod: 5s
    drain: 2s
    strategy:
      canary:
        steps:
          - setWeight: 50
          - pause: {{duration: 2s}}
        analysis: {{templates: [success]}}
analysis:
  templates:
    success:
      metrics:
        - name: success-rate
          interval: 1s
          successCondition: result >= 0.95
          provider: {{builtin: {{metric: success-rate, window: 10s}}}}
"#,
        exe = exe.display()
    )
}

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Keep-alive clients through the proxy, bounded in time; counts every answer.
fn load(addr: std::net::SocketAddr) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = tokio::time::Instant::now();
    let tasks = (0..8)
        .map(|_| {
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                use http_body_util::BodyExt;
                let mut conn: Option<
                    hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
                > = None;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120)
                {
                    if conn.as_ref().is_none_or(|c| c.is_closed()) {
                        let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let (send, c) =
                            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                                .await
                                .unwrap();
                        tokio::spawn(c);
                        conn = Some(send);
                    }
                    let send = conn.as_mut().unwrap();
                    if send.ready().await.is_err() {
                        conn = None;
                        continue;
                    }
                    let req = hyper::Request::get("/")
                        .header("host", "x")
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    match send.send_request(req).await {
                        Ok(r) => {
                            let status = r.status();
                            let _ = r.into_body().collect().await;
                            // The errors the broken version answers itself are
                            // its own (counted by analysis); the proxy's own
                            // failures (502/503/504) and broken connections are not allowed.
                            if [502, 503, 504].contains(&status.as_u16()) {
                                failed.fetch_add(1, Ordering::Relaxed);
                            } else {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    Load {
        stop,
        ok,
        failed,
        tasks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_promotes_a_good_version_and_rolls_back_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::open_sqlite(dir.path().join("hatoba.db"))
            .await
            .unwrap(),
    );
    let recorder = Arc::new(Recorder::new());
    let router = Arc::new(
        Router::new(
            RouteSpec {
                service: "web".to_owned(),
                groups: vec![],
                sticky: false,
            },
            Arc::clone(&recorder),
        )
        .unwrap(),
    );
    let proxy = ProxyServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&router),
        ProxyOptions::default(),
        2,
    )
    .unwrap();
    // Instances of a scope of this test's own, ended however the test ends.
    let scope = dir.path().display().to_string();
    let _reaper = hatoba_test_support::ScopeReaper(scope.clone());
    let runtime = Arc::new(ProcessRuntime::new(dir.path().join("logs")).with_scope(scope));
    let deployer = Deployer::new(
        Arc::clone(&store),
        runtime.clone(),
        Arc::new(LocalDataPlane::attached(Arc::clone(&router))),
    );
    let spec = hatoba_spec::parse(&spec_yaml()).spec.unwrap();
    let svc = spec.services[&"web".parse().unwrap()].clone();
    let request = |version: &str, vars: &[(&str, &str)], current| DeployRequest {
        service: "web".parse().unwrap(),
        environment: "development".parse().unwrap(),
        svc: svc.clone(),
        spec: spec.clone(),
        version: version.parse().unwrap(),
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        secrets: Default::default(),
        base_dir: dir.path().to_path_buf(),
        spec_digest: "test".to_owned(),
        deployed_by: "test".to_owned(),
        current,
        rollback_of: None,
        require_approval: false,
        image_id: None,
    };

    // v1: the first deployment goes straight to full size.
    let (d1, serving) = deployer.deploy(&request("v1", &[], None)).await.unwrap();
    assert_eq!(d1.status, DeploymentStatus::Succeeded, "{d1:?}");
    let serving = serving.unwrap();
    assert_eq!(serving.instances.len(), 2);

    let traffic = load(proxy.local_addr());
    // v2: a good canary, promoted under load.
    let (d2, serving) = deployer
        .deploy(&request("v2", &[], Some(serving)))
        .await
        .unwrap();
    assert_eq!(d2.status, DeploymentStatus::Succeeded, "{d2:?}");
    let serving = serving.unwrap();
    assert_eq!(serving.version.as_str(), "v2");

    // v3 answers errors: analysis catches it, traffic goes back to v2.
    let (d3, serving) = deployer
        .deploy(&request("v3", &[("ERROR_RATE", "1")], Some(serving)))
        .await
        .unwrap();
    assert_eq!(d3.status, DeploymentStatus::RolledBack, "{d3:?}");
    assert_eq!(d3.reason.as_deref(), Some("background analysis failed"));
    let serving = serving.unwrap();
    assert_eq!(serving.version.as_str(), "v2");

    // v4 never gets ready: rolled back at the progress deadline.
    let (d4, serving) = deployer
        .deploy(&request(
            "v4",
            &[("READY_AFTER_MS", "3600000")],
            Some(serving),
        ))
        .await
        .unwrap();
    assert_eq!(d4.status, DeploymentStatus::RolledBack, "{d4:?}");
    let reason = d4.reason.as_deref().unwrap();
    assert!(reason.starts_with("canary not ready within 5s"), "{d4:?}");
    // The reason says what the readiness probe saw, not only that it failed.
    assert!(
        reason.contains("not ready: GET /ready answered 503"),
        "{d4:?}"
    );
    let serving = serving.unwrap();

    traffic.stop.store(true, Ordering::Relaxed);
    for t in traffic.tasks {
        t.await.unwrap();
    }
    let (ok, failed) = (
        traffic.ok.load(Ordering::Relaxed),
        traffic.failed.load(Ordering::Relaxed),
    );
    assert!(ok > 500, "only {ok} requests went through");
    assert_eq!(failed, 0, "{failed} requests failed at the proxy ({ok} ok)");

    // History: current is v2; every attempt is recorded with its reason.
    let current = store
        .current(&"web".parse().unwrap(), &"development".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.version.as_str(), "v2");
    let events = store.events(&d3.id).await.unwrap();
    assert!(
        events.iter().any(|e| match e.typed() {
            hatoba_core::Event::Verdict { verdict, .. } => verdict == "fail",
            hatoba_core::Event::AnalysisFailed { .. } => true,
            _ => false,
        }),
        "{events:#?}"
    );
    for s in serving.instances {
        runtime_stop(&runtime, &s).await;
    }
    proxy.shutdown();
}

async fn runtime_stop(rt: &ProcessRuntime, s: &hatoba_runtime::InstanceStatus) {
    use hatoba_runtime::Runtime;
    rt.stop(&s.id, Duration::from_secs(5)).await.unwrap();
}
