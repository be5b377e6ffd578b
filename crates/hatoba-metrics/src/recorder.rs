//! `Recorder`, the registry of every group's stats in one proxy process:
//! get-or-create by (service, role, version), lookups and windows for
//! analysis, listing, forgetting, and the Prometheus exposition.
//!
//! The registry's lock is taken only to find or create a group (when a route
//! table is built) and to list them (reads, scrapes); the record path goes
//! straight to the `Arc<GroupStats>` the caller keeps, and must stay that way.

use crate::group::{GroupStats, InstanceStats};
use crate::outcome::Role;
use crate::prometheus;
use crate::window::{Window, WindowStats};
use hatoba_core::Millis;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    service: String,
    role: Role,
    version: String,
}

impl GroupKey {
    fn new(service: &str, role: Role, version: &str) -> GroupKey {
        GroupKey {
            service: service.to_owned(),
            role,
            version: version.to_owned(),
        }
    }
}

/// Every group's stats in one process. `Send + Sync`; share it in an `Arc`.
///
/// A group is keyed by (service, role, version): the same version under two
/// roles (a blue-green preview that becomes stable) has two groups, and
/// [`version_window`](Recorder::version_window) sums them.
#[derive(Debug, Default)]
pub struct Recorder {
    groups: RwLock<BTreeMap<GroupKey, Arc<GroupStats>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Get-or-create the stats of one (service, role, version). The `Arc`
    /// stays valid and keeps counting across route-table swaps; creating a
    /// group allocates about [`GroupStats::memory_bytes`].
    ///
    /// A frozen group (see [`freeze_unheld`](Self::freeze_unheld)) is
    /// thawed first: the caller gets a live copy with the same totals.
    pub fn group(&self, service: &str, role: Role, version: &str) -> Arc<GroupStats> {
        if let Some(found) = self.get(service, role, version)
            && !found.is_frozen()
        {
            return found;
        }
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        let slot = groups
            .entry(GroupKey::new(service, role, version))
            .or_insert_with(|| Arc::new(GroupStats::new(service, role, version)));
        if slot.is_frozen() {
            *slot = Arc::new(slot.thawed_copy());
        }
        Arc::clone(slot)
    }

    /// Replaces the groups `freeze` says yes to that nobody else holds by
    /// frozen copies: the same totals, no windows, a few hundred bytes
    /// instead of about [`GroupStats::memory_bytes`]. For groups of versions
    /// no table routes to, whose windows nobody reads. Checked under the
    /// write lock, like
    /// [`remove_unheld`](Self::remove_unheld); returns how many it froze.
    pub fn freeze_unheld(&self, mut freeze: impl FnMut(&GroupStats) -> bool) -> usize {
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        let mut frozen = 0;
        for g in groups.values_mut() {
            if !g.is_frozen() && Arc::strong_count(g) == 1 && freeze(g) {
                *g = Arc::new(g.frozen_copy());
                frozen += 1;
            }
        }
        frozen
    }

    /// Get-or-create the counters of one instance (`host:port`) inside a
    /// group; the same as [`GroupStats::instance`].
    pub fn instance(&self, group: &Arc<GroupStats>, instance: &str) -> Arc<InstanceStats> {
        group.instance(instance)
    }

    /// The stats of one (service, role, version), if it was ever created.
    pub fn get(&self, service: &str, role: Role, version: &str) -> Option<Arc<GroupStats>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&GroupKey::new(service, role, version))
            .cloned()
    }

    /// One group's window ending at `now`; `None` if the group was never
    /// created.
    pub fn window(
        &self,
        service: &str,
        role: Role,
        version: &str,
        window: Window,
        now: Millis,
    ) -> Option<WindowStats> {
        self.get(service, role, version)
            .map(|g| g.window(window, now))
    }

    /// One version's window ending at `now`, summed over every role it has
    /// served under; `None` if it never served under any.
    pub fn version_window(
        &self,
        service: &str,
        version: &str,
        window: Window,
        now: Millis,
    ) -> Option<WindowStats> {
        let mut sum: Option<WindowStats> = None;
        for role in Role::ALL {
            if let Some(w) = self.window(service, role, version, window, now) {
                match &mut sum {
                    Some(s) => s.merge(&w),
                    None => sum = Some(w),
                }
            }
        }
        sum
    }

    /// Every group, ordered by service, role, version.
    pub fn groups(&self) -> Vec<Arc<GroupStats>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Forgets one group: it leaves the exposition (its series end) and
    /// frees its memory once no one holds it. Holders of its `Arc` keep
    /// counting into a detached copy; a later `group` call creates a fresh
    /// one.
    pub fn remove(&self, service: &str, role: Role, version: &str) -> Option<Arc<GroupStats>> {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&GroupKey::new(service, role, version))
    }

    /// Keeps only the groups `keep` says yes to (e.g. those recorded into
    /// recently, by [`GroupStats::last_record`]); see [`remove`](Self::remove).
    pub fn retain(&self, mut keep: impl FnMut(&GroupStats) -> bool) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, g| keep(g));
    }

    /// Forgets the groups `forget` says yes to that nobody else holds (no
    /// table, no request in flight); a held one stays, so nothing counts
    /// into a detached copy. Checked under the write lock, which every new
    /// holder must pass through, so the check cannot go stale.
    pub fn remove_unheld(&self, mut forget: impl FnMut(&GroupStats) -> bool) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, g| Arc::strong_count(g) > 1 || !forget(g));
    }

    /// The Prometheus text exposition (format 0.0.4) of every group's
    /// cumulative counters (see the `prometheus` module for the families).
    ///
    /// `now` is not used today: every value exposed is cumulative, which is
    /// what Prometheus wants (it takes rates itself). It is kept so callers
    /// need not change if a time-dependent value is ever added.
    pub fn encode_prometheus(&self, _now: Millis) -> String {
        prometheus::encode(&self.groups())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Recorder>();
        check::<GroupStats>();
        check::<InstanceStats>();
        check::<crate::InFlight>();
    }
}
