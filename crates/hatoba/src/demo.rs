//! `hatoba demo`: the whole idea in a minute, with nothing installed.
//!
//! An embedded Hatoba in a temporary state directory: the quickstart spec,
//! the history store, Hatoba's proxy on a free loopback port, the local
//! process runtime running this very binary as the demo app
//! (`hatoba demo-app`, hidden), and live traffic through the proxy the
//! whole time. It deploys v1, promotes v2 through the canary, then deploys
//! a v3 that answers 20 % errors (caught by analysis and rolled back by
//! itself) and a v4 that never becomes ready (rolled back at its deadline),
//! prints what happened, and exits 0 only if every expectation held. It
//! leaves nothing running. With `--docker` the instances are containers of
//! the local Docker Engine instead, of an image made on the spot
//! (`demo_docker`); the phases and the expectations are the same.

use crate::exit::Exit;
use crate::http::Client;
use crate::output;
use comfy_table::{Table, presets};
use hatoba_core::{DeploymentStatus, EnvName, ServiceName};
use hatoba_metrics::Recorder;
use hatoba_proxy::{ProxyOptions, ProxyServer, RouteSpec, Router};
use hatoba_runtime::Runtime;
use hatoba_runtime_process::ProcessRuntime;
use hatoba_server::{DeployRequest, Deployed, Deployer, LocalDataPlane};
use hatoba_spec::{Runtime as RuntimeSpec, Step, Strategy};
use hatoba_store::{SqlStore, Store};
use sha2::Digest as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const QUICKSTART: &str = include_str!("../../../examples/quickstart/hatoba.yaml");

/// Live traffic counters, by who answered what.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    app_errors: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.app_errors.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// One deployment the demo makes, and how it must end.
struct Attempt {
    version: &'static str,
    what: &'static str,
    vars: &'static [(&'static str, &'static str)],
    expected: DeploymentStatus,
}

struct Phase {
    name: String,
    status: String,
    requests: u64,
    app_errors: u64,
    failed: u64,
    took: Duration,
    detect: Option<Duration>,
    rollback: Option<Duration>,
    ok: bool,
}

/// `hatoba demo-app`: the demo app on `PORT`, for the demo's instances.
pub(crate) fn serve_demo_app(version_label: String) -> anyhow::Result<Exit> {
    let port: u16 = std::env::var("PORT")
        .unwrap_or_default()
        .parse()
        .map_err(|_| anyhow::anyhow!("PORT is not set to a port"))?;
    let error_rate = std::env::var("DEMO_ERROR_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let ready_after = std::env::var("DEMO_READY_AFTER")
        .ok()
        .and_then(|v| hatoba_core::parse_duration(&v).ok())
        .unwrap_or_default();
    let crash_after = std::env::var("DEMO_CRASH_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0);
    let fail_health = std::env::var("DEMO_FAIL_HEALTH").is_ok_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on" | "y" | "t"
        )
    });
    let tick = std::env::var("DEMO_TICK")
        .ok()
        .and_then(|v| hatoba_core::parse_duration(&v).ok())
        .filter(|t| !t.is_zero());
    let mut cfg = hatoba_demo_app::Config {
        version_label,
        error_rate,
        ready_after,
        crash_after,
        fail_health,
        ..Default::default()
    };
    if let Some(tick) = tick {
        cfg.tick = tick;
    }
    // In a container the app must listen beyond its own loopback for the
    // published port to reach it: `DEMO_HOST=0.0.0.0`.
    let host: std::net::IpAddr = match std::env::var("DEMO_HOST") {
        Ok(h) => h
            .parse()
            .map_err(|_| anyhow::anyhow!("DEMO_HOST `{h}` is not an IP address"))?,
        Err(_) => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    output::stderr(&format!(
        "demo app {} listening on {}\n",
        cfg.version_label,
        std::net::SocketAddr::from((host, port))
    ));
    let stop = rt.block_on(hatoba_demo_app::serve_on_until_sigterm(host, port, cfg))?;
    output::stderr(&format!("demo app stopped: {stop:?}\n"));
    Ok(Exit::Ok)
}

/// `hatoba demo`, with `docker` its instances as containers of the local
/// Docker Engine (`demo_docker`) instead of local processes.
pub(crate) async fn run(quick: bool, docker: bool) -> anyhow::Result<Exit> {
    let started = Instant::now();
    say(if docker {
        "Hatoba demo: deploy, canary, automatic rollback, under live traffic, in Docker containers.\n\n"
    } else {
        "Hatoba demo: deploy, canary, automatic rollback, under live traffic, with nothing installed.\n\n"
    });
    let parsed = hatoba_spec::parse(QUICKSTART);
    let Some(mut spec) = parsed.spec else {
        output::stderr(&hatoba_spec::render(
            "examples/quickstart/hatoba.yaml",
            QUICKSTART,
            &parsed.diagnostics,
        ));
        anyhow::bail!("the embedded quickstart spec is invalid");
    };
    let name: ServiceName = "web".parse()?;
    let mut svc = spec
        .services
        .get(&name)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the quickstart has no service `web`"))?;
    // The instances are this binary, as the demo app.
    let exe = std::env::current_exe()?;
    if let RuntimeSpec::Process(p) = &mut svc.runtime {
        p.command = exe.display().to_string();
        p.args = vec![
            "demo-app".to_owned(),
            "--version-label".to_owned(),
            "${VERSION}".to_owned(),
        ];
        p.env.insert(
            "DEMO_READY_AFTER".to_owned(),
            "${READY_AFTER:-0s}".to_owned(),
        );
    }
    // Shorter waits so the demo takes a minute (or a few seconds with --quick).
    let scale = if quick { 0.2 } else { 0.5 };
    if let Strategy::Canary(c) = &mut svc.strategy {
        for s in &mut c.steps {
            if let Step::Pause(p) = s {
                p.duration = p.duration.map(|d| d.mul_f64(scale));
            }
        }
    }
    for t in spec.analysis.templates.values_mut() {
        for m in &mut t.metrics {
            m.interval = Duration::from_secs(1);
        }
    }
    svc.progress_deadline = if quick {
        Duration::from_secs(4)
    } else {
        Duration::from_secs(10)
    };
    svc.drain = Duration::from_secs(2);

    let dir = tempfile::Builder::new().prefix("hatoba-demo-").tempdir()?;
    if !docker {
        let runtime = Arc::new(ProcessRuntime::new(dir.path().join(".hatoba/logs")));
        let instances = "local processes of this binary (`hatoba demo-app`)".to_owned();
        return play(started, spec, svc, &dir, runtime, &instances).await;
    }
    // The engine is asked first: without one, nothing else is done.
    let engine = Arc::new(crate::demo_docker::connect(dir.path()).await?);
    let image = crate::demo_docker::build_image(&engine, dir.path(), &exe).await?;
    svc.runtime = RuntimeSpec::Docker(crate::demo_docker::service(&image.tag));
    let instances = format!(
        "Docker containers of `{}`, built from this binary in {:.1}s \
         (FROM scratch with {} libraries), labelled hatoba.scope={}",
        image.tag,
        image.took.as_secs_f64(),
        image.libraries,
        dir.path().display()
    );
    // Containers outlive this process, so Ctrl-C ends the phases here and
    // the clean-up below still runs.
    let result = tokio::select! {
        r = play(started, spec, svc, &dir, engine.clone(), &instances) => r,
        _ = tokio::signal::ctrl_c() => {
            output::stderr("interrupted: removing the demo's containers and image\n");
            Ok(Exit::Failed)
        }
    };
    // However the demo ended: none of its containers left, nor its image.
    if let Ok(left) = engine.list(&name).await {
        for i in left {
            let _ = engine.stop(&i.id, Duration::from_secs(5)).await;
        }
    }
    let _ = engine.sweep(&[]).await;
    if let Err(e) = crate::demo_docker::remove_image(&engine, &image.tag).await {
        output::stderr(&format!("warning: {e}\n"));
    }
    result
}

/// The demo's phases on `runtime`, from the store's creation to the table.
async fn play(
    started: Instant,
    spec: hatoba_spec::Spec,
    svc: hatoba_spec::Service,
    dir: &tempfile::TempDir,
    runtime: Arc<dyn Runtime>,
    instances: &str,
) -> anyhow::Result<Exit> {
    let name: ServiceName = "web".parse()?;
    let store: Arc<dyn Store> =
        Arc::new(SqlStore::open_sqlite(dir.path().join(".hatoba/hatoba.db")).await?);
    let recorder = Arc::new(Recorder::new());
    let router = Arc::new(Router::new(
        RouteSpec {
            service: name.to_string(),
            groups: vec![],
            sticky: false,
        },
        Arc::clone(&recorder),
    )?);
    let proxy = ProxyServer::start(
        "127.0.0.1:0".parse()?,
        Arc::clone(&router),
        ProxyOptions::default(),
        1,
    )?;
    let deployer = Deployer::new(
        Arc::clone(&store),
        Arc::clone(&runtime),
        Arc::new(LocalDataPlane::attached(Arc::clone(&router))),
    );
    say(&format!(
        "spec      examples/quickstart/hatoba.yaml, its waits shortened for the demo: service `web`, {} replicas, {}, progress deadline {}\n",
        svc.replicas,
        describe(&svc.strategy),
        hatoba_core::format_duration(svc.progress_deadline)
    ));
    say(&format!(
        "proxy     http://{} (Hatoba's proxy)\ninstances {instances}\n",
        proxy.local_addr()
    ));
    say(&format!(
        "history   {}\n\n",
        dir.path().join(".hatoba/hatoba.db").display()
    ));

    let env: EnvName = "development".parse()?;
    let digest = hex::encode(sha2::Sha256::digest(QUICKSTART.as_bytes()));
    let request = |version: &str,
                   vars: &[(&str, &str)],
                   current: Option<Deployed>|
     -> anyhow::Result<DeployRequest> {
        Ok(DeployRequest {
            service: name.clone(),
            environment: env.clone(),
            svc: svc.clone(),
            spec: spec.clone(),
            version: version.parse()?,
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            secrets: Default::default(),
            base_dir: dir.path().to_path_buf(),
            spec_digest: digest.clone(),
            deployed_by: "hatoba-demo".to_owned(),
            current,
            rollback_of: None,
            require_approval: false,
            image_id: None,
        })
    };

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut phases = Vec::new();
    let mut serving: Option<Deployed> = None;
    let mut traffic = None;
    let plan = [
        Attempt {
            version: "v1",
            what: "first deployment",
            vars: &[],
            expected: DeploymentStatus::Succeeded,
        },
        Attempt {
            version: "v2",
            what: "a good version through the canary",
            vars: &[],
            expected: DeploymentStatus::Succeeded,
        },
        Attempt {
            version: "v3",
            what: "a version answering 20% errors",
            vars: &[("ERROR_RATE", "0.2")],
            expected: DeploymentStatus::RolledBack,
        },
        Attempt {
            version: "v4",
            what: "a version that never gets ready",
            vars: &[("READY_AFTER", "1h")],
            expected: DeploymentStatus::RolledBack,
        },
    ];
    for Attempt {
        version,
        what,
        vars,
        expected,
    } in plan
    {
        say(&format!("deploy    {version}: {what} ...\n"));
        let before = counts.snapshot();
        let t = Instant::now();
        let (d, now_serving) = deployer
            .deploy(&request(version, vars, serving.clone())?)
            .await?;
        let took = t.elapsed();
        let after = counts.snapshot();
        let (detect, rollback) = timings(store.as_ref(), &d).await;
        let reason = d
            .reason
            .clone()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        say(&format!(
            "          {} in {:.1}s{reason}\n",
            d.status,
            took.as_secs_f64()
        ));
        phases.push(Phase {
            name: format!("{version} ({what})"),
            status: d.status.to_string(),
            requests: (after.0 + after.1 + after.2) - (before.0 + before.1 + before.2),
            app_errors: after.1 - before.1,
            failed: after.2 - before.2,
            took,
            detect,
            rollback,
            ok: d.status == expected && after.2 == before.2,
        });
        serving = now_serving;
        if traffic.is_none() {
            // Live traffic from the moment something serves.
            say(&format!(
                "traffic   live traffic through the proxy from now on ({} clients)\n",
                4
            ));
            traffic = Some(start_traffic(
                proxy.local_addr(),
                Arc::clone(&counts),
                Arc::clone(&stop),
            ));
            // Let some traffic flow on v1 before the next rollout (bounded wait).
            let seen = Instant::now();
            while counts.snapshot().0 < 50 && seen.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = traffic {
        for h in t {
            let _ = h.await;
        }
    }
    let current = store.current(&name, &env).await?;
    let current_ok = current.as_ref().is_some_and(|d| d.version.as_str() == "v2");
    // Stop everything the demo started.
    if let Some(s) = serving {
        for i in s.instances {
            let _ = runtime.stop(&i.id, Duration::from_secs(5)).await;
        }
    }
    for i in runtime.list(&name).await? {
        let _ = runtime.stop(&i.id, Duration::from_secs(5)).await;
    }
    proxy.shutdown();
    let history = store.history(&hatoba_store::HistoryFilter::all(10)).await?;
    drop(store);

    say("\nhistory (hatoba history):\n");
    let rows: Vec<_> = history.iter().map(hatoba_server::api::deployment).collect();
    say(&crate::history::history_table(&rows));
    let mut t = Table::new();
    t.load_style(presets::ASCII_BORDERS_ONLY_CONDENSED);
    t.set_header(vec![
        "PHASE",
        "RESULT",
        "REQUESTS",
        "FAILED",
        "ERRORS FROM THE APP",
        "DETECTED IN",
        "BACK ON STABLE IN",
        "EXPECTED",
    ]);
    let secs =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()));
    for p in &phases {
        t.add_row(vec![
            p.name.clone(),
            format!("{} ({:.1}s)", p.status, p.took.as_secs_f64()),
            p.requests.to_string(),
            p.failed.to_string(),
            p.app_errors.to_string(),
            secs(p.detect),
            secs(p.rollback),
            if p.ok {
                "yes".to_owned()
            } else {
                "NO".to_owned()
            },
        ]);
    }
    say(&format!("\n{t}\n"));
    let all_ok = phases.iter().all(|p| p.ok) && current_ok;
    say(&format!(
        "\ncurrent version: {} (expected v2). FAILED counts requests the proxy could not serve (connection errors, 502/503/504);\n\
         ERRORS FROM THE APP are the 500s the bad version itself answered before it was caught.\n\
         {} in {:.1}s; nothing is left running{}.\n",
        current.map_or("none".to_owned(), |d| d.version.to_string()),
        if all_ok {
            "Every expectation held"
        } else {
            "Some expectations did NOT hold"
        },
        started.elapsed().as_secs_f64(),
        if runtime.name() == "docker" {
            " (the containers and the image are removed)"
        } else {
            ""
        }
    ));
    Ok(if all_ok { Exit::Ok } else { Exit::Failed })
}

/// From the deployment's events: how long the new version had traffic
/// before the rollback began, and how long until its weight was 0.
async fn timings(
    store: &dyn Store,
    d: &hatoba_store::Deployment,
) -> (Option<Duration>, Option<Duration>) {
    let Ok(events) = store.events(&d.id).await else {
        return (None, None);
    };
    let typed: Vec<(hatoba_core::Millis, hatoba_core::Event)> =
        events.iter().map(|e| (e.at, e.typed())).collect();
    let first_traffic = typed
        .iter()
        .find(|(_, e)| e.weight().is_some_and(|w| w > 0))
        .map(|(at, _)| *at);
    let decided = typed
        .iter()
        .find(|(_, e)| matches!(e, hatoba_core::Event::RollbackStarted { .. }))
        .map(|(at, _)| *at);
    let back = typed
        .iter()
        .rev()
        .find(|(_, e)| e.weight() == Some(0))
        .map(|(at, _)| *at);
    let detect = match (first_traffic, decided) {
        (Some(a), Some(b)) => Some(b.since(a)),
        (None, Some(b)) => Some(b.since(d.started_at)),
        _ => None,
    };
    let rollback = match (decided, back) {
        (Some(a), Some(b)) => Some(b.since(a)),
        (Some(_), None) => Some(Duration::ZERO),
        _ => None,
    };
    (detect, rollback)
}

fn start_traffic(
    proxy: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let started = Instant::now();
    (0..4)
        .map(|_| {
            let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut client = Client::default();
                let mut pace = tokio::time::interval(Duration::from_millis(10));
                // Bounded: at most 10 minutes, whatever happens.
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600)
                {
                    pace.tick().await;
                    match client.get(proxy, "/", Duration::from_secs(5)).await {
                        Ok(a) if a.status == 200 => counts.ok.fetch_add(1, Ordering::Relaxed),
                        Ok(a) if a.status == 500 => {
                            counts.app_errors.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => counts.failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect()
}

fn say(text: &str) {
    output::stdout(text);
}

fn describe(strategy: &Strategy) -> String {
    match strategy {
        Strategy::Canary(c) => {
            let steps: Vec<String> = c
                .steps
                .iter()
                .map(|s| match s {
                    Step::SetWeight(w) => w.to_string(),
                    Step::Pause(p) => p.duration.map_or("pause".to_owned(), |d| {
                        format!("pause {}", hatoba_core::format_duration(d))
                    }),
                    Step::Analysis(_) => "analysis".to_owned(),
                })
                .collect();
            let analysis = c
                .analysis
                .as_ref()
                .map(|a| format!(", analysis: {}", a.templates.join(", ")))
                .unwrap_or_default();
            format!("canary {} → 100%{analysis}", steps.join(" → "))
        }
        other => other.kind().to_owned(),
    }
}
