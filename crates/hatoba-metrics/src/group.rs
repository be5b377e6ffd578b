//! `GroupStats`, the traffic of one (service, role, version): cumulative
//! totals for Prometheus, two rings of time slots for the rolling windows,
//! an in-flight gauge, and the per-instance counters (`InstanceStats`) of
//! the backends serving it, and the counters of its long-lived connections
//! (WebSockets, event streams: the `long_lived` module), kept apart from
//! requests.
//!
//! `record` is the proxy's hot path: relaxed atomics only, no lock, no
//! allocation, no clock (the caller passes `now`). Only creating an
//! instance's stats takes a lock, and that happens when a route table is
//! built, not per request.
//!
//! A group whose version has been out of every route table for a while
//! (`retention::FREEZE_AFTER`, 30 s: analysis reads windows only of routed
//! versions) and that nobody holds is *frozen* by the recorder: replaced by
//! a copy with the same totals kept sparse and no rings, a few hundred
//! bytes instead of about 245 KB. So the memory of a data plane that keeps
//! old versions' counters for the retention (an hour by default) grows
//! with the versions routed now, not with every deployment of the hour. A frozen group
//! is never recorded into: [`Recorder::group`](crate::Recorder::group), the
//! only way a table gets a group, thaws it first.

use crate::counts::{Counts, Tally};
use crate::histogram::BUCKETS;
use crate::long_lived::{LongLived, LongLivedCounts, LongLivedStats};
use crate::outcome::{Failure, Outcome, Record, Role, STATUS_SLOTS, status_label};
use crate::window::{Ring, Window, WindowStats};
use hatoba_core::Millis;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

const FINE_SLOTS: usize = 10;
const COARSE_SLOTS: usize = 30;

/// The traffic of one (service, role, version). Obtained once from
/// [`Recorder::group`](crate::Recorder::group) and kept by the caller; it
/// keeps counting for as long as anyone holds it.
pub struct GroupStats {
    service: String,
    role: Role,
    version: String,
    totals: Tally,
    /// Cumulative count per status code 100-599, then "other".
    by_status: Box<[AtomicU64]>,
    /// Cumulative latency buckets of judged requests.
    latency: Box<[AtomicU64]>,
    in_flight: AtomicU64,
    /// Long-lived connections: never in `latency` nor in the rings.
    long_lived: LongLivedStats,
    /// `now + 1` of the newest record, 0 before the first.
    last_record: AtomicU64,
    /// 1 s slots: the 10 s window.
    fine: Ring,
    /// 10 s slots: the 1 min and 5 min windows.
    coarse: Ring,
    /// Set when frozen: `by_status` and `latency` as sparse `(index,
    /// count)` lists, and then those two and the rings are empty.
    frozen: Option<Box<Frozen>>,
    instances: RwLock<BTreeMap<String, Arc<InstanceStats>>>,
}

/// A frozen group's cumulative counts by status slot and latency bucket,
/// only those that are not zero.
#[derive(Clone, Debug)]
struct Frozen {
    by_status: Box<[(u16, u64)]>,
    latency: Box<[(u16, u64)]>,
}

fn sparse(dense: &[AtomicU64]) -> Box<[(u16, u64)]> {
    dense
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let n = c.load(Relaxed);
            Some((u16::try_from(i).ok()?, n)).filter(|_| n > 0)
        })
        .collect()
}

fn dense(sparse: &[(u16, u64)], len: usize) -> Box<[AtomicU64]> {
    let out: Box<[AtomicU64]> = (0..len).map(|_| AtomicU64::new(0)).collect();
    for (i, n) in sparse {
        if let Some(c) = out.get(usize::from(*i)) {
            c.store(*n, Relaxed);
        }
    }
    out
}

impl fmt::Debug for GroupStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupStats")
            .field("service", &self.service)
            .field("role", &self.role)
            .field("version", &self.version)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl GroupStats {
    pub(crate) fn new(service: &str, role: Role, version: &str) -> GroupStats {
        GroupStats {
            service: service.to_owned(),
            role,
            version: version.to_owned(),
            totals: Tally::default(),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            in_flight: AtomicU64::new(0),
            long_lived: LongLivedStats::default(),
            last_record: AtomicU64::new(0),
            fine: Ring::new(Window::S10.slot(), FINE_SLOTS),
            coarse: Ring::new(Window::M5.slot(), COARSE_SLOTS),
            frozen: None,
            instances: RwLock::new(BTreeMap::new()),
        }
    }

    /// Whether this is a frozen copy (see the module docs).
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// A frozen copy: the same totals, counts by status and latency kept
    /// sparse, instances shared, no rings. Only for a group nobody records
    /// into any more (the recorder checks that nobody holds it).
    pub(crate) fn frozen_copy(&self) -> GroupStats {
        GroupStats {
            frozen: Some(Box::new(self.sparse_counts())),
            ..self.copy_rest()
        }
    }

    /// A live copy of a frozen group: the same totals, dense again, and
    /// empty rings, ready to be recorded into.
    pub(crate) fn thawed_copy(&self) -> GroupStats {
        let counts = self.sparse_counts();
        GroupStats {
            by_status: dense(&counts.by_status, STATUS_SLOTS),
            latency: dense(&counts.latency, BUCKETS),
            fine: Ring::new(Window::S10.slot(), FINE_SLOTS),
            coarse: Ring::new(Window::M5.slot(), COARSE_SLOTS),
            ..self.copy_rest()
        }
    }

    /// The cumulative counts by status and latency bucket, sparse: a frozen
    /// group's own, or read from a live one's.
    fn sparse_counts(&self) -> Frozen {
        match &self.frozen {
            Some(f) => Frozen::clone(f),
            None => Frozen {
                by_status: sparse(&self.by_status),
                latency: sparse(&self.latency),
            },
        }
    }

    /// Names, totals, gauges, long-lived counters and instances copied;
    /// counts by status, latency buckets and rings empty, not frozen (a
    /// frozen copy is that plus its sparse counts; a thawed one fills them).
    fn copy_rest(&self) -> GroupStats {
        GroupStats {
            service: self.service.clone(),
            role: self.role,
            version: self.version.clone(),
            totals: self.totals.copy(),
            by_status: Box::new([]),
            latency: Box::new([]),
            in_flight: AtomicU64::new(self.in_flight.load(Relaxed)),
            long_lived: self.long_lived.copy(),
            last_record: AtomicU64::new(self.last_record.load(Relaxed)),
            fine: Ring::none(Window::S10.slot()),
            coarse: Ring::none(Window::M5.slot()),
            frozen: None,
            instances: RwLock::new(
                self.instances
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            ),
        }
    }

    /// Approximate bytes one group holds (counters, buckets and both rings;
    /// not its names or instances): about 245 KB.
    pub fn memory_bytes() -> usize {
        size_of::<GroupStats>()
            + STATUS_SLOTS * size_of::<AtomicU64>()
            + BUCKETS * size_of::<AtomicU64>()
            + Ring::memory_bytes(FINE_SLOTS)
            + Ring::memory_bytes(COARSE_SLOTS)
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The role the version plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Records one finished request: how it ended and how long it took (from
    /// receiving the request to its end), at `now`. Lock-free and
    /// allocation-free; see the crate docs for what concurrent calls
    /// guarantee.
    pub fn record(&self, now: Millis, outcome: Outcome, latency: Duration) {
        let rec = Record::new(outcome, latency);
        self.totals.add(&rec);
        // Empty only in a frozen copy, which nobody records into.
        if let Some(c) = self.by_status.get(rec.status_slot) {
            c.fetch_add(1, Relaxed);
        }
        if let Some((bucket, _)) = rec.latency
            && let Some(c) = self.latency.get(bucket)
        {
            c.fetch_add(1, Relaxed);
        }
        self.fine.record(now, &rec);
        self.coarse.record(now, &rec);
        let stamp = now.0.saturating_add(1);
        if self.last_record.load(Relaxed) < stamp {
            self.last_record.fetch_max(stamp, Relaxed);
        }
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(Gauge::Group(Arc::clone(self)))
    }

    /// Requests in flight now (started and not yet dropped).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Counts one long-lived connection (a WebSocket tunnel, an event
    /// stream) open until the guard is ended or dropped. Its request is
    /// recorded apart, with [`record`](Self::record) and the time to its
    /// response head; its life goes only to these counters.
    pub fn open_long_lived(self: &Arc<Self>) -> LongLived {
        LongLived::new(Arc::clone(self))
    }

    pub(crate) fn long_lived_stats(&self) -> &LongLivedStats {
        &self.long_lived
    }

    /// The long-lived connections' counters since the group was created.
    pub fn long_lived(&self) -> LongLivedCounts {
        self.long_lived.counts()
    }

    /// The `now` of the newest record so far, if any.
    pub fn last_record(&self) -> Option<Millis> {
        self.last_record.load(Relaxed).checked_sub(1).map(Millis)
    }

    /// Everything recorded since the group was created.
    pub fn totals(&self) -> Counts {
        let mut out = Counts::default();
        self.totals.add_to(&mut out);
        for (o, b) in out.latency.counts_mut().iter_mut().zip(self.latency.iter()) {
            *o = b.load(Relaxed);
        }
        if let Some(f) = &self.frozen {
            let counts = out.latency.counts_mut();
            for (i, n) in f.latency.iter() {
                if let Some(o) = counts.get_mut(usize::from(*i)) {
                    *o = *n;
                }
            }
        }
        out
    }

    /// Cumulative count per status code, for codes seen at least once, in
    /// code order; `None` stands for numbers outside 100-599.
    pub fn status_totals(&self) -> Vec<(Option<u16>, u64)> {
        if let Some(f) = &self.frozen {
            return f
                .by_status
                .iter()
                .map(|(i, n)| (status_label(usize::from(*i)), *n))
                .collect();
        }
        self.by_status
            .iter()
            .enumerate()
            .map(|(i, c)| (status_label(i), c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The requests recorded in `window` up to `now` (see the `window`
    /// module for what a window covers). Reading never changes the group.
    pub fn window(&self, window: Window, now: Millis) -> WindowStats {
        let mut stats = WindowStats::empty(window, now);
        let mut scratch = Counts::default();
        let ring = match window {
            Window::S10 => &self.fine,
            Window::M1 | Window::M5 => &self.coarse,
        };
        ring.read(now, window.slots(), &mut stats.counts, &mut scratch);
        stats
    }

    /// Get-or-create the counters of one instance (a backend's `host:port`)
    /// serving this group. Takes a lock; call it when building a route
    /// table and keep the `Arc`.
    pub fn instance(&self, instance: &str) -> Arc<InstanceStats> {
        if let Some(found) = self
            .instances
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(instance)
        {
            return Arc::clone(found);
        }
        let mut map = self
            .instances
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(instance.to_owned())
                .or_insert_with(|| Arc::new(InstanceStats::new(instance))),
        )
    }

    /// The instances seen so far, by name.
    pub fn instances(&self) -> Vec<Arc<InstanceStats>> {
        self.instances
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Forgets an instance's counters (e.g. once it is gone from every route
    /// table); holders of its `Arc` keep counting into a detached copy.
    pub fn remove_instance(&self, instance: &str) -> Option<Arc<InstanceStats>> {
        self.instances
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(instance)
    }

    /// Forgets the instances `forget` says yes to (by name) that nobody
    /// else holds (no backend of a table, no request in flight).
    pub fn remove_unheld_instances(&self, mut forget: impl FnMut(&str) -> bool) {
        self.instances
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, i| Arc::strong_count(i) > 1 || !forget(name));
    }
}

/// Counters of one instance inside a group: requests by class and failures
/// by kind since start, and requests in flight. No histograms, no windows.
#[derive(Debug)]
pub struct InstanceStats {
    instance: String,
    by_class: [AtomicU64; 5],
    failures: [AtomicU64; 3],
    in_flight: AtomicU64,
}

/// What an instance's counters add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceCounts {
    /// Every outcome recorded (`by_class` summed).
    pub requests: u64,
    /// Outcomes by status class 1xx..5xx (see `Outcome::status`).
    pub by_class: [u64; 5],
    /// Upstream failures.
    pub upstream_failures: u64,
    /// Downstream failures.
    pub downstream_failures: u64,
    /// Internal failures.
    pub internal_failures: u64,
}

impl InstanceStats {
    fn new(instance: &str) -> InstanceStats {
        InstanceStats {
            instance: instance.to_owned(),
            by_class: Default::default(),
            failures: Default::default(),
            in_flight: AtomicU64::new(0),
        }
    }

    /// The instance's name (`host:port`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Records one outcome of a request (or of one attempt, if the caller
    /// retries) sent to this instance. Lock-free, allocation-free.
    pub fn record(&self, outcome: Outcome) {
        let rec = Record::new(outcome, Duration::ZERO);
        self.by_class[rec.class].fetch_add(1, Relaxed);
        if let Some(f) = rec.failure {
            self.failures[f].fetch_add(1, Relaxed);
        }
    }

    /// Counts one request in flight to this instance until the guard is
    /// dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(Gauge::Instance(Arc::clone(self)))
    }

    /// Requests in flight to this instance now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Everything recorded since the instance's counters were created.
    pub fn totals(&self) -> InstanceCounts {
        let mut by_class = [0u64; 5];
        for (o, c) in by_class.iter_mut().zip(self.by_class.iter()) {
            *o = c.load(Relaxed);
        }
        let f = |k: Failure| self.failures[k.index()].load(Relaxed);
        InstanceCounts {
            requests: by_class.iter().fold(0u64, |a, b| a.saturating_add(*b)),
            by_class,
            upstream_failures: f(Failure::Upstream),
            downstream_failures: f(Failure::Downstream),
            internal_failures: f(Failure::Internal),
        }
    }
}

/// A request in flight, counted in its group's or instance's gauge until
/// dropped (answered, failed or abandoned).
#[must_use = "the request counts as in flight only while the guard lives"]
#[derive(Debug)]
pub struct InFlight(Gauge);

#[derive(Debug)]
enum Gauge {
    Group(Arc<GroupStats>),
    Instance(Arc<InstanceStats>),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let gauge = match &self.0 {
            Gauge::Group(g) => &g.in_flight,
            Gauge::Instance(i) => &i.in_flight,
        };
        gauge.fetch_sub(1, Relaxed);
    }
}
