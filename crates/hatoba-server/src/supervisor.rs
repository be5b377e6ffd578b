//! Keeps what serves serving between rollouts: one loop per service that
//! drives the health policy (`hatoba_rollout::health`, with
//! `RestartPolicy::BETWEEN_ROLLOUTS`) and carries out its decisions:
//! probes readiness (only ready instances are in the route table) and
//! liveness, restarts an instance that exited or fails its liveness probe
//! when the policy's back-off (1 s, 2 s, 4 s ... at most 60 s) allows,
//! reports a crash loop (5 restarts within 5 minutes) in the events (over
//! once they have left the window, restarts or not), shows a runtime that
//! cannot list its instances as the service's problem (restarting nothing
//! for it), and samples each instance's memory and CPU for `status` and
//! `diagnose` (every 2 s, beside the rounds, not in them). The rules live in the policy; this loop must not count
//! streaks or restarts itself.
//!
//! While a rollout runs, its deployer drives the same policy instead (with
//! `RestartPolicy::DURING_ROLLOUT`: a new version that crashes or fails
//! liveness is rolled back, not restarted; a stable instance that dies is
//! started again, at most five times per rollout and without back-off),
//! and this loop stands aside. It takes over at its next round from what
//! the rollout left serving (routed, so taken as ready), whether or not a
//! round saw the rollout run: one that began and ended between two rounds
//! is noticed by its other instances.

use crate::dataplane::{preview_listen, route_serving};
use crate::deployer::{Deployed, ServiceRecord, ServingRecord, clock_now, instance_spec_for};
use crate::probe::{health_plan, listed_for_health, policy_result, probe_as_asked};
use crate::server::ServiceState;
use hatoba_core::{EnvName, Millis, ServiceName};
use hatoba_metrics::Role;
use hatoba_proxy::{GroupSpec, RouteSpec};
use hatoba_rollout::health::{self, Check, Death, Decision, Observation, RestartPolicy};
use hatoba_runtime::{InstanceId, InstanceStatus, Runtime, Usage};
use hatoba_spec::Service;
use hatoba_store::{NewEvent, Store};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// What one instance looks like to the operator, kept fresh by the loop.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observed {
    pub(crate) ready: bool,
    pub(crate) live_failures: u32,
    pub(crate) usage: Option<Usage>,
    pub(crate) last_probe: Option<String>,
}

/// The loop's view of one service, shared with the API.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub(crate) instances: HashMap<InstanceId, Observed>,
    pub(crate) restarts: usize,
    pub(crate) crash_loop: bool,
    pub(crate) next_restart: Option<Millis>,
}

/// What the loop needs.
pub(crate) struct Supervised {
    pub(crate) name: ServiceName,
    pub(crate) environment: EnvName,
    /// The spec what serves runs by (`ServiceState::serving_spec`, read
    /// again when a deployment changes it).
    pub(crate) svc: Arc<Service>,
    pub(crate) base_dir: PathBuf,
    pub(crate) state: Arc<ServiceState>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) store: Arc<dyn Store>,
}

/// How often each serving instance's memory and CPU are sampled: apart
/// from the rounds, which hold the service's `ops` lock a deploy or
/// rollback waits for, since Docker's stats API takes about a second per
/// container (a round of four took four seconds and held deploys that long).
const USAGE_EVERY: Duration = Duration::from_secs(2);

/// The latest usage of each serving instance, by the sampler.
type Sampled = Arc<std::sync::Mutex<HashMap<InstanceId, Usage>>>;

/// A task aborted when this is dropped (the supervisor's own end).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Samples the usage of what serves every [`USAGE_EVERY`], all instances
/// at once, into `sampled`, outside the rounds.
fn sample_usage(
    state: Arc<ServiceState>,
    runtime: Arc<dyn Runtime>,
    sampled: Sampled,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(USAGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ids: Vec<InstanceId> = state
                .serving
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|d| d.instances.iter().map(|i| i.id.clone()).collect())
                .unwrap_or_default();
            let mut asks = tokio::task::JoinSet::new();
            for id in ids {
                let rt = Arc::clone(&runtime);
                asks.spawn(async move {
                    let usage = rt.usage(&id).await;
                    (id, usage)
                });
            }
            let mut fresh = HashMap::new();
            while let Some(done) = asks.join_next().await {
                if let Ok((id, Some(usage))) = done {
                    fresh.insert(id, usage);
                }
            }
            *sampled.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        }
    }))
}

/// The words the runtime's listing problem is shown with in `diagnose`.
fn listing_problem(why: &str) -> String {
    format!("the runtime cannot list the instances ({why}): nothing is restarted until it can")
}

/// Runs until the task is aborted. When a deployment changes the spec what
/// serves runs by (a reload took effect), the loop starts again with it:
/// its probes, period and restarts follow that spec, and what serves is
/// taken over as a rollout's end is.
pub(crate) async fn run(mut s: Supervised) {
    loop {
        run_with(&s).await;
        s.svc = s.state.serving_spec();
    }
}

/// The loop by `s.svc`, until what serves runs by another spec.
async fn run_with(s: &Supervised) {
    let period = s
        .svc
        .health
        .liveness
        .as_ref()
        .or(s.svc.health.readiness.as_ref())
        .map_or(Duration::from_secs(1), |p| p.period)
        .max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sampled = Sampled::default();
    let _sampler = sample_usage(
        Arc::clone(&s.state),
        Arc::clone(&s.runtime),
        Arc::clone(&sampled),
    );
    let mut policy = health::Health::new(health_plan(&s.svc, RestartPolicy::BETWEEN_ROLLOUTS));
    let mut routed: Option<(String, Vec<SocketAddr>)> = None;
    let mut was_live = true;
    // The instances the policy watches, as of the end of the last round.
    let mut watched: Vec<InstanceId> = Vec::new();
    loop {
        tick.tick().await;
        let _ops = s.state.ops.lock().await;
        let live = s
            .state
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if live {
            was_live = true;
            continue;
        }
        if !Arc::ptr_eq(&s.svc, &s.state.serving_spec()) {
            return;
        }
        let serving = s
            .state
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(mut serving) = serving else {
            continue;
        };
        // A rollout that began and ended between two rounds (a short one,
        // or this loop run late on a loaded machine) was never seen live:
        // other instances serve than the policy watches. Its new instances
        // are handed over all the same, else the policy never probes them
        // and the table stays empty.
        let handed_over = !serving.instances.iter().map(|i| &i.id).eq(watched.iter());
        if was_live || handed_over {
            // Fresh after a rollout or a start: what the rollout (or the
            // previous run) routed was ready. Restarts before the rollout
            // still count towards back-off and crash loops.
            was_live = false;
            policy.handle(clock_now(), Observation::AllRemoved);
            let fresh =
                std::mem::take(&mut *s.state.fresh.lock().unwrap_or_else(PoisonError::into_inner));
            for i in &serving.instances {
                policy.handle(
                    clock_now(),
                    Observation::Added {
                        id: i.id.0.clone(),
                        started_at: i.started_at,
                        ready: !fresh.contains(&i.addr),
                        new: false,
                    },
                );
            }
            routed = None;
        }
        // What the data plane routes now, as far as this loop knows: a
        // restart takes its instance out and puts nothing back in.
        let mut in_table: Vec<SocketAddr> = match &routed {
            Some((_, r)) => r.clone(),
            None => serving
                .instances
                .iter()
                .filter(|i| policy.is_ready(&i.id.0))
                .map(|i| i.addr)
                .collect(),
        };
        let listed = s.runtime.list(&s.name).await;
        let now = clock_now();
        // A crash loop is over once its restarts have left the window, even
        // with no restart since to notice it.
        policy.handle_timeout(now);
        policy.handle(
            now,
            match &listed {
                Ok(l) => Observation::Listed(listed_for_health(l)),
                Err(e) => Observation::ListFailed(e.to_string()),
            },
        );
        let mut replaced = false;
        let mut observed: HashMap<InstanceId, Observed> = HashMap::new();
        while let Some(decision) = policy.poll_action() {
            match decision {
                Decision::Probe { id, check } => {
                    let Some(inst) = serving.instances.iter().find(|i| i.id.0 == id) else {
                        continue;
                    };
                    let Some(result) = probe_as_asked(check, inst.addr, &s.svc.health).await else {
                        continue;
                    };
                    let obs = observed.entry(inst.id.clone()).or_default();
                    match (check, &s.svc.health.readiness, &s.svc.health.liveness) {
                        (Check::Liveness, _, Some(p)) => {
                            obs.last_probe = Some(match &result {
                                Ok(()) => format!("liveness {} passed", p.path),
                                Err(why) => format!("liveness {} failed: {why}", p.path),
                            });
                            if result.is_err() {
                                obs.live_failures = 1;
                            }
                        }
                        (Check::Readiness, Some(p), _) => {
                            if let (Err(why), None) = (&result, &obs.last_probe) {
                                obs.last_probe =
                                    Some(format!("readiness {} failed: {why}", p.path));
                            }
                        }
                        _ => {}
                    }
                    policy.handle(
                        now,
                        Observation::Probed {
                            id,
                            check,
                            result: policy_result(&result),
                        },
                    );
                }
                Decision::Route { id, ready: false } => {
                    if let Some(inst) = serving.instances.iter().find(|i| i.id.0 == id) {
                        in_table.retain(|a| *a != inst.addr);
                    }
                }
                Decision::Route { ready: true, .. } | Decision::NewVersionFailed { .. } => {}
                Decision::Restart {
                    id,
                    why,
                    count,
                    crash_loop,
                } => {
                    let Some(idx) = serving.instances.iter().position(|i| i.id.0 == id) else {
                        continue;
                    };
                    let inst = serving.instances[idx].clone();
                    in_table.retain(|a| *a != inst.addr);
                    observed.remove(&inst.id);
                    let why = match why {
                        Death::Exited(why) => why,
                        Death::Liveness { failures, last } => format!(
                            "liveness probe {} failed {failures} times in a row (last: {last})",
                            s.svc
                                .health
                                .liveness
                                .as_ref()
                                .map_or("", |p| p.path.as_str()),
                        ),
                    };
                    let restarted =
                        restart(s, &serving, &inst, &why, (count, crash_loop), &in_table).await;
                    match restarted {
                        Some(new) => {
                            policy.handle(
                                now,
                                Observation::Restarted {
                                    old: id,
                                    new: new.id.0.clone(),
                                    started_at: new.started_at,
                                },
                            );
                            serving.instances[idx] = new;
                            replaced = true;
                        }
                        None => policy.handle(now, Observation::RestartFailed(id)),
                    }
                }
                Decision::CrashLoopOver => {
                    tracing::info!(
                        service = %s.name,
                        environment = %s.environment,
                        "crash loop over: its restarts have left the window"
                    );
                }
                Decision::ListingFailed(why) => {
                    let problem = listing_problem(&why);
                    tracing::warn!(service = %s.name, environment = %s.environment, "{problem}");
                    *s.state
                        .problem
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(problem);
                }
                Decision::ListingRecovered => {
                    tracing::info!(
                        service = %s.name,
                        environment = %s.environment,
                        "the runtime lists the instances again"
                    );
                    let mut problem = s
                        .state
                        .problem
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if problem
                        .as_deref()
                        .is_some_and(|p| p.starts_with("the runtime cannot list"))
                    {
                        *problem = None;
                    }
                }
            }
        }
        // Only instances probed for readiness this round are shown (a
        // dead one or its fresh replacement waits for the next).
        let mut ready: Vec<SocketAddr> = Vec::new();
        for inst in &serving.instances {
            if policy.is_ready(&inst.id.0) {
                ready.push(inst.addr);
            }
            if let Some(obs) = observed.get_mut(&inst.id) {
                obs.ready = policy.is_ready(&inst.id.0);
                obs.usage = sampled
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&inst.id)
                    .cloned();
            }
        }
        observed.retain(|id, _| !policy.is_dead(&id.0));
        {
            let mut h = s
                .state
                .health
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            h.instances = observed;
            h.restarts = policy.restarts();
            h.crash_loop = policy.crash_loop();
            h.next_restart = policy.next_restart();
        }
        watched = serving.instances.iter().map(|i| i.id.clone()).collect();
        if replaced {
            *s.state
                .serving
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(serving.clone());
            let _ = s
                .state
                .deployer
                .save(
                    &s.name,
                    &s.environment,
                    &ServiceRecord {
                        serving: Some(ServingRecord::of(&serving)),
                        rollout: None,
                    },
                )
                .await;
        }
        ready.sort_unstable();
        let key = (serving.version.to_string(), ready.clone());
        if routed.as_ref() != Some(&key)
            && route_stable(s, serving.version.to_string(), ready).await
        {
            routed = Some(key);
        }
    }
}

/// Routes all of the service's traffic (and its preview's) to `backends`
/// of `version`; false when the data plane did not take it.
async fn route_stable(s: &Supervised, version: String, backends: Vec<SocketAddr>) -> bool {
    let spec = RouteSpec {
        service: s.name.to_string(),
        groups: vec![GroupSpec {
            role: Role::Stable,
            version,
            weight: 100,
            backends,
        }],
        sticky: false,
    };
    let preview = preview_listen(&s.svc).is_some();
    route_serving(&**s.state.deployer.data_plane(), spec, preview)
        .await
        .is_ok()
}

/// Stops what is left of an instance and starts a replacement, as the
/// health policy decided (`count`: its restart number in the window;
/// `newly_looping`: this one makes a crash loop). `in_table`: what stays
/// routed meanwhile (what was routed, without it). Returns the replacement.
async fn restart(
    s: &Supervised,
    serving: &Deployed,
    inst: &InstanceStatus,
    why: &str,
    (count, newly_looping): (u32, bool),
    in_table: &[SocketAddr],
) -> Option<InstanceStatus> {
    let RestartPolicy::BackOff {
        max: max_backoff,
        window,
        ..
    } = RestartPolicy::BETWEEN_ROLLOUTS
    else {
        return None;
    };
    // Out of the table first, then stopped (a failed liveness probe leaves
    // a process behind; an exited one is already gone).
    route_stable(s, serving.version.to_string(), in_table.to_vec()).await;
    let stopped = s
        .runtime
        .stop(&inst.id, s.svc.termination_grace_period)
        .await;
    s.runtime.forget(&inst.id).await;
    if let (Ok(_), Some(removed), Some(id)) = (
        &stopped,
        crate::deployer::container_removed(inst),
        &serving.deployment,
    ) {
        let _ = s
            .store
            .append_event(
                id,
                NewEvent::of(clock_now(), &removed, Some(s.name.as_str())),
            )
            .await;
    }
    let mut spec = instance_spec_for(
        &s.name,
        &s.svc,
        &serving.version,
        &serving.vars,
        &serving.secrets,
        &s.base_dir,
    )
    .ok()?;
    crate::deployer::pin(
        &mut spec,
        serving.image_id.as_deref(),
        serving.deployment.as_ref(),
    );
    let started = s.runtime.start(&spec, clock_now()).await;
    let restarted = hatoba_core::Event::InstanceRestarted {
        instance: inst.id.to_string(),
        version: inst.version.to_string(),
        reason: why.to_string(),
        during_rollout: false,
        restarted_as: started.as_ref().ok().map(|n| n.id.to_string()),
        addr: None,
        error: started.as_ref().err().map(ToString::to_string),
        count: Some(count),
        window_ms: Some(hatoba_core::event::millis_of(window)),
        crash_loop_backoff_ms: newly_looping.then(|| hatoba_core::event::millis_of(max_backoff)),
    };
    let new = NewEvent::of(clock_now(), &restarted, Some(s.name.as_str()));
    tracing::warn!(
        service = %s.name,
        environment = %s.environment,
        instance = %inst.id,
        version = %inst.version,
        restart = count,
        crash_loop = newly_looping,
        kind = %new.kind,
        "{}",
        new.message
    );
    if let Some(id) = &serving.deployment {
        let _ = s.store.append_event(id, new).await;
    }
    started.ok()
}

/// The instances' observed state, for the API.
pub(crate) fn snapshot(
    state: &ServiceState,
) -> (BTreeMap<String, Observed>, usize, bool, Option<Millis>) {
    let h = state.health.lock().unwrap_or_else(PoisonError::into_inner);
    let map = h
        .instances
        .iter()
        .map(|(k, v)| (k.0.clone(), v.clone()))
        .collect();
    (map, h.restarts, h.crash_loop, h.next_restart)
}
