//! One health policy for a service's instances, as a sans-IO machine:
//! readiness streaks, liveness failures, exits, restarts with back-off and
//! crash loops, and whether a restart is allowed at all. The supervisor
//! (between rollouts) and the deployer (during one) both drive it; it must
//! not probe, list, start, stop or read a clock itself (invariants 1 and 2).
//!
//! A *round* begins with what the runtime lists ([`Observation::Listed`],
//! or [`Observation::ListFailed`] when it cannot list). The machine then
//! asks for the liveness probes that are due ([`Decision::Probe`]), decides
//! on each result, and once none is pending asks for a readiness probe of
//! every instance that is not dead. The round is over when
//! [`Health::poll_action`] returns `None`.
//!
//! Rules:
//! - Readiness: `success_threshold` passes in a row make an instance ready,
//!   `failure_threshold` failures in a row unready ([`Decision::Route`] on
//!   each change). Without a readiness probe the driver checks that the
//!   port accepts, with thresholds of one. A probe the controller could not
//!   make ([`ProbeResult::NotMade`]) changes nothing.
//! - Liveness: alive until `failure_threshold` failures in a row; probed
//!   from `started_at + initial_delay` on, once per `period` (a tenth of
//!   the period early still counts: a driver's round comes a little late
//!   one time and on time the next).
//! - An instance that exited (or is missing from the runtime's list) or
//!   failed liveness is *dead*: out of the route table at once.
//!   [`RestartPolicy::BackOff`] (between rollouts) restarts it after a
//!   back-off that doubles from `first` with each restart still inside
//!   `window`, at most `max`; `crash_loop` restarts inside the window are a
//!   crash loop, over once they have left it. [`RestartPolicy::Capped`]
//!   (during a rollout) restarts a stable instance at once, at most `max`
//!   times, and reports a new-version instance as the new version's failure
//!   ([`Decision::NewVersionFailed`]), never restarting it.
//! - A runtime that cannot list its instances is a reported problem
//!   ([`Decision::ListingFailed`], [`Health::listing_problem`]), never read
//!   as "everything exited": nothing is restarted for it, probes go on, and
//!   it clears when a list works again ([`Decision::ListingRecovered`]).

use hatoba_core::Millis;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// A probe's thresholds and timing, from the spec's `Probe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbePlan {
    /// No probe before this long after the instance started.
    pub initial_delay: Duration,
    /// Time between probes.
    pub period: Duration,
    /// Passes in a row that make an instance ready.
    pub success_threshold: u32,
    /// Failures in a row that make it unready (or dead).
    pub failure_threshold: u32,
}

/// When a dead instance may be started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RestartPolicy {
    /// Between rollouts: always, after a back-off.
    BackOff {
        /// The wait before the second restart inside the window (the first
        /// is at once); it doubles with each further one.
        first: Duration,
        /// The longest wait.
        max: Duration,
        /// Restarts this recent count.
        window: Duration,
        /// This many restarts inside the window is a crash loop.
        crash_loop: u32,
    },
    /// During a rollout: a stable instance at once, at most `max` times; a
    /// new-version instance never (its death is the new version's failure).
    Capped {
        /// Restarts allowed in all.
        max: u32,
    },
}

impl RestartPolicy {
    /// Between rollouts: back-off 1 s, 2 s, 4 s ... at most 60 s; 5
    /// restarts within 5 minutes are a crash loop.
    pub const BETWEEN_ROLLOUTS: RestartPolicy = RestartPolicy::BackOff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(60),
        window: Duration::from_secs(300),
        crash_loop: 5,
    };
    /// During a rollout: at most five stable restarts, no back-off.
    pub const DURING_ROLLOUT: RestartPolicy = RestartPolicy::Capped { max: 5 };
}

/// The policy's parameters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthPlan {
    /// `None`: a port that accepts is ready (thresholds of one).
    pub readiness: Option<ProbePlan>,
    /// `None`: only exits make an instance dead.
    pub liveness: Option<ProbePlan>,
    /// Restarts.
    pub restarts: RestartPolicy,
}

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Check {
    /// May it take traffic?
    Readiness,
    /// Is it alive at all?
    Liveness,
}

/// One probe's result, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProbeResult {
    /// 2xx or 3xx (or, without a readiness path, the port accepted).
    Pass,
    /// It failed, saying why; `refused`: nothing listens on the port.
    Fail {
        /// In words (`answered 503`).
        why: String,
        /// The connection was refused.
        refused: bool,
    },
    /// The controller could not probe (its own shortage): no observation.
    NotMade,
}

/// One instance as the runtime lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    /// The runtime's instance id.
    pub id: String,
    /// `Some(why)` once it has exited (`exited with code 3`).
    pub exited: Option<String>,
}

/// What the driver tells the machine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Observation {
    /// An instance to watch. `ready`: it is taken as ready until its
    /// readiness fails (it served before, e.g. before a restart of the
    /// controller). `new`: it runs the version a rollout brings.
    Added {
        /// The runtime's instance id.
        id: String,
        /// When it started.
        started_at: Millis,
        /// Taken as ready.
        ready: bool,
        /// Of the new version (during a rollout).
        new: bool,
    },
    /// Not to be watched any more (stopped by the rollout).
    Removed(String),
    /// None of the instances is watched any more: another set follows
    /// (a rollout took over and ended). Restarts, back-off and a crash
    /// loop carry over.
    AllRemoved,
    /// A round begins: the runtime's list of the service's instances. A
    /// watched instance missing from it is gone.
    Listed(Vec<Listed>),
    /// A round begins, but the runtime could not list (why).
    ListFailed(String),
    /// A probe asked for by [`Decision::Probe`] answered.
    Probed {
        /// The instance.
        id: String,
        /// Which probe.
        check: Check,
        /// What it said.
        result: ProbeResult,
    },
    /// A [`Decision::Restart`] was carried out: `old` is replaced by `new`.
    Restarted {
        /// The dead instance.
        old: String,
        /// Its replacement.
        new: String,
        /// When the replacement started.
        started_at: Millis,
    },
    /// A [`Decision::Restart`] could not start a replacement: `old` stays
    /// watched as dead, and is tried again when the policy allows.
    RestartFailed(String),
}

/// Why an instance is dead.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Death {
    /// It exited, or is missing from the runtime's list (the runtime's words).
    Exited(String),
    /// Its liveness probe failed `failures` times in a row, the last for `last`.
    Liveness {
        /// The threshold that was reached.
        failures: u32,
        /// Why the last probe failed.
        last: String,
    },
}

/// What the machine asks the driver to do or to report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Decision {
    /// Probe this instance now and report [`Observation::Probed`].
    Probe {
        /// The instance.
        id: String,
        /// Which probe.
        check: Check,
    },
    /// Route the instance (ready) or take it out of the route table.
    Route {
        /// The instance.
        id: String,
        /// Ready now.
        ready: bool,
    },
    /// Stop what is left of the instance and start a replacement; report
    /// [`Observation::Restarted`] or [`Observation::RestartFailed`].
    Restart {
        /// The dead instance.
        id: String,
        /// Why.
        why: Death,
        /// Restarts counted with this one (inside the window, or in all).
        count: u32,
        /// This restart makes a crash loop.
        crash_loop: bool,
    },
    /// The crash loop is over: its restarts have left the window.
    CrashLoopOver,
    /// A new-version instance died: the new version failed. Never
    /// restarted; reported once per instance.
    NewVersionFailed {
        /// The instance.
        id: String,
        /// Why.
        why: Death,
    },
    /// The runtime cannot list the instances (why): reported, nothing
    /// restarted for it.
    ListingFailed(String),
    /// Listing works again.
    ListingRecovered,
}

/// One watched instance.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Instance {
    started_at: Millis,
    new: bool,
    ready: bool,
    passes: u32,
    failures: u32,
    readiness_failure: Option<ProbeResult>,
    live_failures: u32,
    next_liveness: Millis,
    dead: Option<Death>,
    reported: bool,
}

/// The machine. Serializable, like the rollout machines.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Health {
    plan: HealthPlan,
    instances: BTreeMap<String, Instance>,
    /// Restart times: inside the window (back-off) or all of them (capped).
    restarts: Vec<Millis>,
    crash_loop: bool,
    /// A dead instance waits for its back-off until then.
    next_restart: Option<Millis>,
    /// Why the runtime could not list, while it cannot.
    listing: Option<String>,
    /// Liveness probes asked for this round and not answered yet.
    pending: BTreeSet<String>,
    /// The instances of this round whose readiness probes are still to be
    /// asked for (a replacement started during the round waits for the next).
    round: Option<BTreeSet<String>>,
    out: VecDeque<Decision>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Health {
    /// A machine watching nothing yet.
    pub fn new(plan: HealthPlan) -> Health {
        Health {
            plan,
            instances: BTreeMap::new(),
            restarts: Vec::new(),
            crash_loop: false,
            next_restart: None,
            listing: None,
            pending: BTreeSet::new(),
            round: None,
            out: VecDeque::new(),
        }
    }

    /// The policy's parameters.
    pub fn plan(&self) -> &HealthPlan {
        &self.plan
    }

    /// Feeds one observation.
    pub fn handle(&mut self, now: Millis, observation: Observation) {
        self.forget_old_restarts(now);
        match observation {
            Observation::Added {
                id,
                started_at,
                ready,
                new,
            } => {
                let next_liveness = started_at.saturating_add(
                    self.plan
                        .liveness
                        .map_or(Duration::ZERO, |p| p.initial_delay),
                );
                self.instances.insert(
                    id,
                    Instance {
                        started_at,
                        new,
                        ready,
                        passes: 0,
                        failures: 0,
                        readiness_failure: None,
                        live_failures: 0,
                        next_liveness,
                        dead: None,
                        reported: false,
                    },
                );
            }
            Observation::Removed(id) => {
                self.instances.remove(&id);
                self.pending.remove(&id);
            }
            Observation::AllRemoved => {
                self.instances.clear();
                self.pending.clear();
                self.round = None;
                self.next_restart = None;
            }
            Observation::Listed(listed) => {
                // Whoever still waits for a back-off says so again below.
                self.next_restart = None;
                if self.listing.take().is_some() {
                    self.out.push_back(Decision::ListingRecovered);
                }
                let ids: Vec<String> = self.instances.keys().cloned().collect();
                for id in &ids {
                    let exited = match listed.iter().find(|l| &l.id == id) {
                        Some(l) => l.exited.clone(),
                        None => Some("is gone".to_owned()),
                    };
                    if let Some(why) = exited {
                        self.died(now, id, Death::Exited(why));
                    }
                }
                self.begin_round(now);
            }
            Observation::ListFailed(why) => {
                if self.listing.is_none() {
                    self.out.push_back(Decision::ListingFailed(why.clone()));
                }
                self.listing = Some(why);
                self.begin_round(now);
            }
            Observation::Probed { id, check, result } => {
                match check {
                    Check::Liveness => {
                        self.pending.remove(&id);
                        self.liveness(now, &id, result);
                    }
                    Check::Readiness => self.readiness(&id, result),
                }
                self.maybe_readiness_round();
            }
            Observation::Restarted {
                old,
                new,
                started_at,
            } => {
                let was_new = self.instances.remove(&old).is_some_and(|i| i.new);
                self.handle(
                    now,
                    Observation::Added {
                        id: new,
                        started_at,
                        ready: false,
                        new: was_new,
                    },
                );
            }
            Observation::RestartFailed(_) => {}
        }
    }

    /// Lets time pass: restarts leave the window (a crash loop may end).
    pub fn handle_timeout(&mut self, now: Millis) {
        self.forget_old_restarts(now);
    }

    /// When [`Health::handle_timeout`] has something to do: a crash loop
    /// ends, or a back-off is over (the driver's next round restarts).
    pub fn poll_timeout(&self) -> Option<Millis> {
        let leaves = match self.plan.restarts {
            RestartPolicy::BackOff { window, .. } if self.crash_loop => {
                self.restarts.first().map(|t| t.saturating_add(window))
            }
            _ => None,
        };
        [leaves, self.next_restart].into_iter().flatten().min()
    }

    /// The next decision, if any.
    pub fn poll_action(&mut self) -> Option<Decision> {
        self.out.pop_front()
    }

    /// Whether the instance is ready (routed) as last observed.
    pub fn is_ready(&self, id: &str) -> bool {
        self.instances.get(id).is_some_and(|i| i.ready)
    }

    /// Whether the instance is dead (exited or failed liveness).
    pub fn is_dead(&self, id: &str) -> bool {
        self.instances.get(id).is_some_and(|i| i.dead.is_some())
    }

    /// Why the instance's latest readiness probe failed, until one passes.
    pub fn readiness_failure(&self, id: &str) -> Option<(&str, bool)> {
        match self.instances.get(id)?.readiness_failure.as_ref()? {
            ProbeResult::Fail { why, refused } => Some((why.as_str(), *refused)),
            _ => None,
        }
    }

    /// Restarts counted now (inside the window, or in all when capped).
    pub fn restarts(&self) -> usize {
        self.restarts.len()
    }

    /// Whether the service is in a crash loop.
    pub fn crash_loop(&self) -> bool {
        self.crash_loop
    }

    /// When a dead instance waiting for its back-off may be restarted.
    pub fn next_restart(&self) -> Option<Millis> {
        self.next_restart
    }

    /// Why the runtime cannot list the instances, while it cannot.
    pub fn listing_problem(&self) -> Option<&str> {
        self.listing.as_deref()
    }

    /// The wait before the next restart, as the restarts counted now make
    /// it (zero after none).
    pub fn backoff(&self) -> Duration {
        match self.plan.restarts {
            RestartPolicy::BackOff { first, max, .. } => {
                let n = self.restarts.len();
                if n == 0 {
                    return Duration::ZERO;
                }
                let shift = u32::try_from(n - 1).unwrap_or(u32::MAX).min(20);
                first.saturating_mul(1u32 << shift).min(max)
            }
            RestartPolicy::Capped { .. } => Duration::ZERO,
        }
    }

    fn forget_old_restarts(&mut self, now: Millis) {
        let RestartPolicy::BackOff {
            window, crash_loop, ..
        } = self.plan.restarts
        else {
            return;
        };
        self.restarts
            .retain(|t| now.0.saturating_sub(t.0) < ms(window));
        let looping = self.restarts.len() >= usize::try_from(crash_loop).unwrap_or(usize::MAX);
        if self.crash_loop && !looping {
            self.out.push_back(Decision::CrashLoopOver);
        }
        self.crash_loop = looping;
    }

    /// Asks for the liveness probes that are due; the readiness probes
    /// follow once they are answered.
    fn begin_round(&mut self, now: Millis) {
        self.round = Some(self.instances.keys().cloned().collect());
        self.pending.clear();
        if let Some(p) = self.plan.liveness {
            let early = ms(p.period) / 10;
            for (id, i) in &mut self.instances {
                let exited = matches!(i.dead, Some(Death::Exited(_)));
                if exited || i.reported || now.0.saturating_add(early) < i.next_liveness.0 {
                    continue;
                }
                i.next_liveness = now.saturating_add(p.period);
                self.pending.insert(id.clone());
                self.out.push_back(Decision::Probe {
                    id: id.clone(),
                    check: Check::Liveness,
                });
            }
        }
        self.maybe_readiness_round();
    }

    fn maybe_readiness_round(&mut self) {
        if !self.pending.is_empty() {
            return;
        }
        let Some(round) = self.round.take() else {
            return;
        };
        for (id, i) in &self.instances {
            if i.dead.is_none() && round.contains(id) {
                self.out.push_back(Decision::Probe {
                    id: id.clone(),
                    check: Check::Readiness,
                });
            }
        }
    }

    fn liveness(&mut self, now: Millis, id: &str, result: ProbeResult) {
        let Some(p) = self.plan.liveness else {
            return;
        };
        let Some(i) = self.instances.get_mut(id) else {
            return;
        };
        match result {
            ProbeResult::NotMade => {}
            ProbeResult::Pass => {
                i.live_failures = 0;
                // Alive again before its restart came: nothing to restart.
                if matches!(i.dead, Some(Death::Liveness { .. })) && !i.reported {
                    i.dead = None;
                    if !self.instances.values().any(|i| i.dead.is_some()) {
                        self.next_restart = None;
                    }
                }
            }
            ProbeResult::Fail { why, .. } => {
                i.live_failures = i.live_failures.saturating_add(1);
                if i.live_failures >= p.failure_threshold {
                    let death = Death::Liveness {
                        failures: p.failure_threshold,
                        last: why,
                    };
                    self.died(now, id, death);
                }
            }
        }
    }

    fn readiness(&mut self, id: &str, result: ProbeResult) {
        let (ok, bad) = self
            .plan
            .readiness
            .map_or((1, 1), |p| (p.success_threshold, p.failure_threshold));
        let Some(i) = self.instances.get_mut(id) else {
            return;
        };
        if i.dead.is_some() {
            return;
        }
        let was = i.ready;
        match result {
            ProbeResult::NotMade => return,
            ProbeResult::Pass => {
                i.readiness_failure = None;
                i.passes = i.passes.saturating_add(1);
                i.failures = 0;
                if i.passes >= ok {
                    i.ready = true;
                }
            }
            fail @ ProbeResult::Fail { .. } => {
                i.readiness_failure = Some(fail);
                i.failures = i.failures.saturating_add(1);
                i.passes = 0;
                if i.failures >= bad {
                    i.ready = false;
                }
            }
        }
        if i.ready != was {
            self.out.push_back(Decision::Route {
                id: id.to_owned(),
                ready: i.ready,
            });
        }
    }

    /// The instance is dead: out of the table, then restarted, reported or
    /// left, as the policy says.
    fn died(&mut self, now: Millis, id: &str, why: Death) {
        let Some(i) = self.instances.get_mut(id) else {
            return;
        };
        if i.reported {
            return;
        }
        i.dead = Some(why.clone());
        i.passes = 0;
        i.failures = 0;
        if i.ready {
            i.ready = false;
            self.out.push_back(Decision::Route {
                id: id.to_owned(),
                ready: false,
            });
        }
        match self.plan.restarts {
            RestartPolicy::Capped { .. } if i.new => {
                i.reported = true;
                self.out.push_back(Decision::NewVersionFailed {
                    id: id.to_owned(),
                    why,
                });
            }
            RestartPolicy::Capped { max } => {
                if self.restarts.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
                    return;
                }
                self.restarts.push(now);
                self.out.push_back(Decision::Restart {
                    id: id.to_owned(),
                    why,
                    count: u32::try_from(self.restarts.len()).unwrap_or(u32::MAX),
                    crash_loop: false,
                });
            }
            RestartPolicy::BackOff { crash_loop, .. } => {
                let last = self.restarts.last().copied().unwrap_or(Millis(0));
                let wait_until = last.saturating_add(self.backoff());
                if wait_until > now {
                    self.next_restart = Some(wait_until);
                    return;
                }
                self.next_restart = None;
                self.restarts.push(now);
                let looping =
                    self.restarts.len() >= usize::try_from(crash_loop).unwrap_or(usize::MAX);
                let newly = looping && !self.crash_loop;
                self.crash_loop = looping;
                self.out.push_back(Decision::Restart {
                    id: id.to_owned(),
                    why,
                    count: u32::try_from(self.restarts.len()).unwrap_or(u32::MAX),
                    crash_loop: newly,
                });
            }
        }
    }
}
