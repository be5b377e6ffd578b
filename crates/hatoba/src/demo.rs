//! `hatoba demo`: what Hatoba can do today, for real, with nothing installed.
//!
//! It reads the quickstart spec embedded in the binary, opens a history
//! store in a temporary state directory, starts the demo app's instances
//! in-process on free loopback ports, probes their readiness as the spec
//! says, records every deployment and its events, and keeps live traffic on
//! the serving version while a broken version is tried and refused. It
//! prints what happened and exits 0 only if every expectation held.
//!
//! Traffic shifting through Hatoba's proxy, canary steps and automatic
//! rollback under traffic are not built yet; the demo says so rather than
//! imitate them.

use crate::exit::Exit;
use crate::http::Client;
use crate::output;
use comfy_table::{Table, presets};
use hatoba_core::{DeploymentStatus, EnvName, Millis, Version};
use hatoba_demo_app::{Config as AppConfig, Stop};
use hatoba_spec::{Probe, Service, Strategy};
use hatoba_store::{NewDeployment, NewEvent, SqlStore, Store};
use sha2::Digest as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const QUICKSTART: &str = include_str!("../../../examples/quickstart/hatoba.yaml");

/// The demo's knobs: `--quick` shortens what only waits.
struct Plan {
    traffic_time: Duration,
    broken_deadline: Duration,
    max_requests: u64,
    workers: usize,
    /// Live traffic is paced, like users, not a flood.
    rate_per_sec: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                traffic_time: Duration::from_secs(2),
                broken_deadline: Duration::from_secs(3),
                max_requests: 50_000,
                workers: 4,
                rate_per_sec: 1_000,
            }
        } else {
            Plan {
                traffic_time: Duration::from_secs(5),
                broken_deadline: Duration::from_secs(6),
                max_requests: 200_000,
                workers: 8,
                rate_per_sec: 2_000,
            }
        }
    }
}

struct Phase {
    name: &'static str,
    requests: u64,
    failed: u64,
    took: Duration,
    result: String,
    ok: bool,
}

pub(crate) async fn run(quick: bool) -> anyhow::Result<Exit> {
    let plan = Plan::new(quick);
    let started = Instant::now();
    say("Hatoba demo: the quickstart spec, a real history store, the demo app on loopback.\n");

    // 1. The spec.
    let parsed = hatoba_spec::parse(QUICKSTART);
    let Some(spec) = parsed.spec else {
        output::stderr(&hatoba_spec::render(
            "examples/quickstart/hatoba.yaml",
            QUICKSTART,
            &parsed.diagnostics,
        ));
        anyhow::bail!("the embedded quickstart spec is invalid");
    };
    let (name, web) = spec
        .services
        .iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the quickstart spec has no service"))?;
    say(&format!(
        "spec      examples/quickstart/hatoba.yaml is valid: service `{name}`, {} replicas, {}\n",
        web.replicas,
        describe_strategy(web)
    ));
    let readiness = web
        .health
        .readiness
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the quickstart service has no readiness probe"))?;

    // 2. A state directory of its own, removed at the end.
    let dir = tempfile::Builder::new().prefix("hatoba-demo-").tempdir()?;
    let store = SqlStore::open_sqlite(dir.path().join(".hatoba/hatoba.db")).await?;
    say(&format!("store     history in {}\n", store.location()));

    let env: EnvName = "development".parse()?;
    let digest = hex::encode(sha2::Sha256::digest(QUICKSTART.as_bytes()));
    let mut phases = Vec::new();

    // 3. v1: start, probe, record.
    let t = Instant::now();
    let v1: Version = "v1".parse()?;
    let d1 = record_start(&store, name, &env, &v1, web, &digest).await?;
    let v1_instances = start_instances(
        &v1,
        AppConfig {
            version_label: v1.to_string(),
            ..AppConfig::default()
        },
        web.replicas,
    )
    .await?;
    for i in &v1_instances {
        event(
            &store,
            &d1.id,
            "instance_started",
            format!("instance of v1 listening on {}", i.addr),
        )
        .await?;
    }
    let ready = wait_ready(&v1_instances, &readiness, web.progress_deadline).await;
    let v1_ok = ready.is_ok();
    let (status, reason) = match &ready {
        Ok(took) => (
            DeploymentStatus::Succeeded,
            format!(
                "{} instances ready in {}ms",
                v1_instances.len(),
                took.as_millis()
            ),
        ),
        Err(why) => (DeploymentStatus::Failed, why.clone()),
    };
    store
        .transition(&d1.id, status, Some(reason.clone()), now())
        .await?;
    say(&format!("deploy    v1 as {}: {status} ({reason})\n", d1.id));
    phases.push(Phase {
        name: "deploy v1",
        requests: 0,
        failed: 0,
        took: t.elapsed(),
        result: status.to_string(),
        ok: v1_ok,
    });
    if !v1_ok {
        stop_instances(v1_instances).await;
        return finish(&store, phases, dir, started).await;
    }
    let targets: Vec<SocketAddr> = v1_instances.iter().map(|i| i.addr).collect();

    // 4. Live traffic on v1.
    let report = traffic(targets.clone(), &plan, plan.traffic_time).await;
    say(&format!(
        "traffic   {} requests to v1 in {:.1}s ({} req/s), {} failed, p50 {:.2}ms, p99 {:.2}ms\n",
        report.requests,
        report.took.as_secs_f64(),
        plan.rate_per_sec,
        report.failed,
        report.p50_ms,
        report.p99_ms
    ));
    phases.push(Phase {
        name: "live traffic on v1",
        requests: report.requests,
        failed: report.failed,
        took: report.took,
        result: format!("p99 {:.2}ms", report.p99_ms),
        ok: report.failed == 0 && report.requests > 0,
    });

    // 5. v3 never becomes ready: refused before it gets traffic, while v1 keeps serving.
    let t = Instant::now();
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let background = {
        let (targets, stop) = (targets.clone(), Arc::clone(&stop_traffic));
        let plan = Plan::new(quick);
        tokio::spawn(
            async move { traffic_until(targets, &plan, plan.broken_deadline * 3, stop).await },
        )
    };
    let v3: Version = "v3".parse()?;
    let d3 = record_start(&store, name, &env, &v3, web, &digest).await?;
    let broken = AppConfig {
        version_label: v3.to_string(),
        ready_after: Duration::from_secs(3600),
        ..AppConfig::default()
    };
    let v3_instances = start_instances(&v3, broken, web.replicas).await?;
    for i in &v3_instances {
        event(
            &store,
            &d3.id,
            "instance_started",
            format!("instance of v3 listening on {}", i.addr),
        )
        .await?;
    }
    say(&format!(
        "deploy    v3 as {}: never becomes ready; progress deadline shortened to {}s for the demo\n",
        d3.id,
        plan.broken_deadline.as_secs()
    ));
    let refused = wait_ready(&v3_instances, &readiness, plan.broken_deadline).await;
    stop_instances(v3_instances).await;
    let (status, reason) = match refused {
        Ok(_) => (
            DeploymentStatus::Succeeded,
            "became ready (unexpected)".to_owned(),
        ),
        Err(why) => (DeploymentStatus::Failed, why),
    };
    store
        .transition(&d3.id, status, Some(reason.clone()), now())
        .await?;
    stop_traffic.store(true, Ordering::Relaxed);
    let during = background.await?;
    say(&format!(
        "          v3: {status} ({reason}); v1 served {} requests meanwhile, {} failed\n",
        during.requests, during.failed
    ));
    phases.push(Phase {
        name: "broken v3 refused",
        requests: during.requests,
        failed: during.failed,
        took: t.elapsed(),
        result: status.to_string(),
        ok: status == DeploymentStatus::Failed && during.failed == 0 && during.requests > 0,
    });

    // 6. What the history says now.
    let current = store.current(name, &env).await?;
    let current_ok = current.as_ref().is_some_and(|d| d.version == v1);
    phases.push(Phase {
        name: "current version is v1",
        requests: 0,
        failed: 0,
        took: Duration::ZERO,
        result: current.map_or_else(|| "none".to_owned(), |d| d.version.to_string()),
        ok: current_ok,
    });
    stop_instances(v1_instances).await;
    finish(&store, phases, dir, started).await
}

async fn finish(
    store: &SqlStore,
    phases: Vec<Phase>,
    dir: tempfile::TempDir,
    started: Instant,
) -> anyhow::Result<Exit> {
    let history = store.history(&hatoba_store::HistoryFilter::all(10)).await?;
    store.close().await;
    drop(dir);
    say("\nhistory (hatoba history):\n");
    let rows: Vec<_> = history.iter().map(crate::history::to_api).collect();
    say(&crate::history::history_table(&rows));
    let mut t = Table::new();
    t.load_style(presets::ASCII_BORDERS_ONLY_CONDENSED);
    t.set_header(vec![
        "PHASE", "REQUESTS", "FAILED", "TIME", "RESULT", "EXPECTED",
    ]);
    let all_ok = phases.iter().all(|p| p.ok);
    for p in &phases {
        t.add_row(vec![
            p.name.to_owned(),
            p.requests.to_string(),
            p.failed.to_string(),
            format!("{:.1}s", p.took.as_secs_f64()),
            p.result.clone(),
            if p.ok {
                "yes".to_owned()
            } else {
                "NO".to_owned()
            },
        ]);
    }
    say(&format!("\n{t}\n"));
    say(&format!(
        "\n{} in {:.1}s. Not shown yet: Hatoba's proxy shifting traffic step by step, canary analysis and\n\
         automatic rollback under live traffic; they arrive with the controller and `hatoba up`.\n",
        if all_ok {
            "Every expectation held"
        } else {
            "Some expectations did NOT hold"
        },
        started.elapsed().as_secs_f64()
    ));
    Ok(if all_ok { Exit::Ok } else { Exit::Failed })
}

fn say(text: &str) {
    output::stdout(text);
}

fn now() -> Millis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn describe_strategy(svc: &Service) -> String {
    match &svc.strategy {
        Strategy::Canary(c) => {
            let steps: Vec<String> = c
                .steps
                .iter()
                .map(|s| match s {
                    hatoba_spec::Step::SetWeight(w) => w.to_string(),
                    hatoba_spec::Step::Pause(p) => p.duration.map_or("pause".to_owned(), |d| {
                        format!("pause {}", hatoba_core::format_duration(d))
                    }),
                    hatoba_spec::Step::Analysis(_) => "analysis".to_owned(),
                })
                .collect();
            format!("canary {} → 100%", steps.join(" → "))
        }
        other => other.kind().to_owned(),
    }
}

async fn record_start(
    store: &SqlStore,
    service: &hatoba_core::ServiceName,
    env: &EnvName,
    version: &Version,
    svc: &Service,
    digest: &str,
) -> anyhow::Result<hatoba_store::Deployment> {
    let d = store
        .create_deployment(NewDeployment {
            service: service.clone(),
            environment: env.clone(),
            version: version.clone(),
            commit_sha: None,
            strategy: svc.strategy.kind().to_owned(),
            deployed_by: "hatoba-demo".to_owned(),
            rollback_of: None,
            spec_digest: digest.to_owned(),
            at: now(),
        })
        .await?;
    Ok(store
        .transition(&d.id, DeploymentStatus::InProgress, None, now())
        .await?)
}

async fn event(
    store: &SqlStore,
    id: &hatoba_core::DeploymentId,
    kind: &str,
    message: String,
) -> anyhow::Result<()> {
    store
        .append_event(
            id,
            NewEvent {
                at: now(),
                kind: kind.to_owned(),
                message,
                data: None,
            },
        )
        .await?;
    Ok(())
}

struct Instance {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<Stop>>,
}

async fn start_instances(
    version: &Version,
    cfg: AppConfig,
    n: u32,
) -> anyhow::Result<Vec<Instance>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let cfg = AppConfig {
            version_label: version.to_string(),
            ..cfg.clone()
        };
        let task = tokio::spawn(hatoba_demo_app::serve(listener, cfg, async move {
            let _ = stopped.await;
        }));
        out.push(Instance { addr, stop, task });
    }
    Ok(out)
}

async fn stop_instances(instances: Vec<Instance>) {
    for i in instances {
        let _ = i.stop.send(());
        let _ = i.task.await;
    }
}

/// Probes every instance's readiness path as the spec says (period,
/// timeout, success threshold) until all are ready or the deadline passes.
async fn wait_ready(
    instances: &[Instance],
    probe: &Probe,
    deadline: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut client = Client::default();
    let mut streak = vec![0u32; instances.len()];
    tokio::time::sleep(probe.initial_delay).await;
    loop {
        for (i, inst) in instances.iter().enumerate() {
            if streak[i] >= probe.success_threshold {
                continue;
            }
            let passed = client
                .get(inst.addr, &probe.path, probe.timeout)
                .await
                .is_ok_and(|a| (200..400).contains(&a.status));
            streak[i] = if passed { streak[i] + 1 } else { 0 };
        }
        let ready = streak
            .iter()
            .filter(|s| **s >= probe.success_threshold)
            .count();
        if ready == instances.len() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= deadline {
            return Err(format!(
                "readiness not reached within {}: {ready}/{} instances ready on {}",
                hatoba_core::format_duration(deadline),
                instances.len(),
                probe.path
            ));
        }
        tokio::time::sleep(probe.period).await;
    }
}

struct Report {
    requests: u64,
    failed: u64,
    took: Duration,
    p50_ms: f64,
    p99_ms: f64,
}

async fn traffic(targets: Vec<SocketAddr>, plan: &Plan, time: Duration) -> Report {
    traffic_until(targets, plan, time, Arc::new(AtomicBool::new(false))).await
}

/// Sends `GET /` round-robin from several keep-alive workers until `stop`,
/// the time limit or the request limit; every answer other than 200 and
/// every connection error counts as failed.
async fn traffic_until(
    targets: Vec<SocketAddr>,
    plan: &Plan,
    time: Duration,
    stop: Arc<AtomicBool>,
) -> Report {
    let start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..plan.workers {
        let (targets, sent, failed, stop) = (
            targets.clone(),
            Arc::clone(&sent),
            Arc::clone(&failed),
            Arc::clone(&stop),
        );
        let max = plan.max_requests;
        let period =
            Duration::from_micros(1_000_000 * plan.workers as u64 / plan.rate_per_sec.max(1));
        workers.push(tokio::spawn(async move {
            let mut client = Client::default();
            let mut latencies = Vec::new();
            let mut n = w;
            let mut pace = tokio::time::interval(period);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed)
                && start.elapsed() < time
                && sent.fetch_add(1, Ordering::Relaxed) < max
            {
                pace.tick().await;
                let addr = targets[n % targets.len()];
                n += 1;
                let t = Instant::now();
                let ok = client
                    .get(addr, "/", Duration::from_secs(2))
                    .await
                    .is_ok_and(|a| a.status == 200 && !a.body.is_empty());
                latencies.push(t.elapsed().as_micros());
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap_or_default());
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let idx = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[idx] as f64 / 1000.0
    };
    Report {
        requests: all.len() as u64,
        failed: failed.load(Ordering::Relaxed),
        took: start.elapsed(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}
