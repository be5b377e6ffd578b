//! Keeps what serves serving between rollouts: one loop per service that
//! probes readiness (only ready instances are in the route table) and
//! liveness, restarts an instance that exited or fails its liveness probe
//! with exponential back-off (1 s, 2 s, 4 s ... at most 60 s), reports a
//! crash loop (5 restarts within 5 minutes) in the events (over once they
//! have left the window, restarts or not), and samples each
//! instance's memory and CPU for `status` and `diagnose`.
//!
//! While a rollout runs, its deployer watches the instances instead (a new
//! version that crashes or fails liveness is rolled back, not restarted; a
//! stable instance that exits is started again, at most five times per
//! rollout and without back-off), and this loop stands aside.

use crate::dataplane::{preview_listen, route_serving};
use crate::deployer::{Deployed, ServiceRecord, ServingRecord, clock_now, instance_spec_for};
use crate::probe::{Readiness, http_probe, tcp_probe};
use crate::server::ServiceState;
use hatoba_core::{EnvName, Millis, ServiceName};
use hatoba_metrics::Role;
use hatoba_proxy::{GroupSpec, RouteSpec};
use hatoba_runtime::{InstanceId, InstanceState, InstanceStatus, Runtime, Usage};
use hatoba_spec::Service;
use hatoba_store::{NewEvent, Store};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// Restarts within this window count towards back-off and crash loops.
const CRASH_WINDOW: Duration = Duration::from_secs(300);
/// This many restarts within the window is a crash loop.
const CRASH_LOOP: usize = 5;
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

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
    pub(crate) restarts: Vec<Millis>,
    pub(crate) crash_loop: bool,
    pub(crate) next_restart: Option<Millis>,
}

impl Health {
    /// Forgets the restarts that left the window; the crash loop is what
    /// remains.
    fn forget_old_restarts(&mut self, now: Millis) {
        self.restarts
            .retain(|t| now.0.saturating_sub(t.0) < duration_ms(CRASH_WINDOW));
        self.crash_loop = self.restarts.len() >= CRASH_LOOP;
    }
}

/// What the loop needs.
pub(crate) struct Supervised {
    pub(crate) name: ServiceName,
    pub(crate) environment: EnvName,
    pub(crate) svc: Service,
    pub(crate) base_dir: PathBuf,
    pub(crate) state: Arc<ServiceState>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) store: Arc<dyn Store>,
}

/// Runs until the task is aborted.
pub(crate) async fn run(s: Supervised) {
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
    let mut readiness = Readiness::default();
    let mut liveness = Readiness::default();
    let mut routed: Option<(String, Vec<SocketAddr>)> = None;
    let mut was_live = true;
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
        let serving = s
            .state
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(mut serving) = serving else {
            continue;
        };
        if was_live {
            // Fresh after a rollout or a start: what the rollout (or the
            // previous run) routed was ready.
            was_live = false;
            readiness = Readiness::default();
            liveness = Readiness::default();
            let fresh =
                std::mem::take(&mut *s.state.fresh.lock().unwrap_or_else(PoisonError::into_inner));
            for i in serving
                .instances
                .iter()
                .filter(|i| !fresh.contains(&i.addr))
            {
                readiness.assume_ready(i.addr);
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
                .map(|i| i.addr)
                .filter(|a| readiness.is_ready(*a))
                .collect(),
        };
        let listed = s.runtime.list(&s.name).await.unwrap_or_default();
        let now = clock_now();
        // A crash loop is over once its restarts have left the window, even
        // with no restart since to notice it.
        s.state
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget_old_restarts(now);
        let mut replaced = false;
        let mut ready: Vec<SocketAddr> = Vec::new();
        let mut observed: HashMap<InstanceId, Observed> = HashMap::new();
        for idx in 0..serving.instances.len() {
            let inst = serving.instances[idx].clone();
            let exited = listed
                .iter()
                .find(|l| l.id == inst.id)
                .is_none_or(|l| matches!(l.state, InstanceState::Exited { .. }));
            let mut obs = Observed::default();
            let mut dead = exited.then(|| describe_exit(&listed, &inst));
            if dead.is_none()
                && let Some(p) = &s.svc.health.liveness
                && now.0 >= inst.started_at.0 + duration_ms(p.initial_delay)
            {
                let result = http_probe(inst.addr, &p.path, p.timeout).await;
                obs.last_probe = Some(match &result {
                    Ok(()) => format!("liveness {} passed", p.path),
                    Err(why) => format!("liveness {} failed: {why}", p.path),
                });
                let ok = result.is_ok();
                // Reuses the streak counter: "ready" here means "alive";
                // an instance is alive until proven otherwise.
                if !liveness.knows(inst.addr) {
                    liveness.assume_ready(inst.addr);
                }
                let alive = liveness.observe_probe(inst.addr, result, 1, p.failure_threshold);
                if !ok {
                    obs.live_failures = 1;
                }
                if !alive && let Some(why) = liveness.failure(inst.addr) {
                    dead = Some(format!(
                        "liveness probe {} failed {} times in a row (last: {why})",
                        p.path, p.failure_threshold
                    ));
                }
            }
            if let Some(why) = dead {
                in_table.retain(|a| *a != inst.addr);
                if let Some(new) = restart(&s, &serving, &inst, &why, now, &in_table).await {
                    readiness.forget(inst.addr);
                    liveness.forget(inst.addr);
                    serving.instances[idx] = new;
                    replaced = true;
                }
                continue;
            }
            let is_ready = match &s.svc.health.readiness {
                Some(p) => {
                    let result = http_probe(inst.addr, &p.path, p.timeout).await;
                    if let (Err(why), None) = (&result, &obs.last_probe) {
                        obs.last_probe = Some(format!("readiness {} failed: {why}", p.path));
                    }
                    readiness.observe_probe(
                        inst.addr,
                        result,
                        p.success_threshold,
                        p.failure_threshold,
                    )
                }
                // Thresholds of one: a pass is ready, a refusal is not, and a
                // probe the controller could not make changes nothing.
                None => readiness.observe_probe(inst.addr, tcp_probe(inst.addr).await, 1, 1),
            };
            if is_ready {
                ready.push(inst.addr);
            }
            obs.ready = is_ready;
            obs.usage = s.runtime.usage(&inst.id).await;
            observed.insert(inst.id.clone(), obs);
        }
        {
            let mut h = s
                .state
                .health
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            h.instances = observed;
        }
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
            && route_stable(&s, serving.version.to_string(), ready).await
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

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn describe_exit(listed: &[InstanceStatus], inst: &InstanceStatus) -> String {
    match listed.iter().find(|l| l.id == inst.id).map(|l| &l.state) {
        Some(state @ InstanceState::Exited { code, signal })
            if code.is_some() || signal.is_some() =>
        {
            state.to_string()
        }
        _ => "is gone".to_owned(),
    }
}

/// Stops what is left of an instance and starts a replacement, unless the
/// back-off says to wait. `in_table`: what stays routed meanwhile (what was
/// routed, without it). Returns the replacement.
async fn restart(
    s: &Supervised,
    serving: &Deployed,
    inst: &InstanceStatus,
    why: &str,
    now: Millis,
    in_table: &[SocketAddr],
) -> Option<InstanceStatus> {
    let (count, newly_looping) = {
        let mut h = s
            .state
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        h.forget_old_restarts(now);
        let n = h.restarts.len();
        let backoff = if n == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1u64 << (n - 1).min(6)).min(MAX_BACKOFF)
        };
        let last = h.restarts.last().copied().unwrap_or(Millis(0));
        let wait_until = last.saturating_add(backoff);
        if wait_until > now {
            h.next_restart = Some(wait_until);
            return None;
        }
        h.next_restart = None;
        h.restarts.push(now);
        let looping = h.restarts.len() >= CRASH_LOOP;
        let newly = looping && !h.crash_loop;
        h.crash_loop = looping;
        (h.restarts.len(), newly)
    };
    // Out of the table first, then stopped (a failed liveness probe leaves
    // a process behind; an exited one is already gone).
    route_stable(s, serving.version.to_string(), in_table.to_vec()).await;
    let _ = s
        .runtime
        .stop(&inst.id, s.svc.termination_grace_period)
        .await;
    s.runtime.forget(&inst.id).await;
    let spec = instance_spec_for(
        &s.name,
        &s.svc,
        &serving.version,
        &serving.vars,
        &serving.secrets,
        &s.base_dir,
    )
    .ok()?;
    let started = s.runtime.start(&spec, clock_now()).await;
    let restarted = hatoba_core::Event::InstanceRestarted {
        instance: inst.id.to_string(),
        version: inst.version.to_string(),
        reason: why.to_string(),
        during_rollout: false,
        restarted_as: started.as_ref().ok().map(|n| n.id.to_string()),
        addr: None,
        error: started.as_ref().err().map(ToString::to_string),
        count: u32::try_from(count).ok(),
        window_ms: Some(hatoba_core::event::millis_of(CRASH_WINDOW)),
        crash_loop_backoff_ms: newly_looping.then(|| hatoba_core::event::millis_of(MAX_BACKOFF)),
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
    (map, h.restarts.len(), h.crash_loop, h.next_restart)
}
