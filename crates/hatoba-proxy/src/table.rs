//! The route table: which groups of backends exist, with what weights, and
//! the router that swaps tables atomically.
//!
//! A table is immutable. A change (a new weight, an instance ready or
//! removed, a blue-green switch) builds a whole new table from a
//! [`RouteSpec`] and swaps it in with one atomic store; requests in flight
//! keep the table they started with, and the request path takes no lock.
//! Backends are shared between successive tables (looked up by address), so
//! their in-flight counts and ejection state survive a swap.

use arc_swap::ArcSwap;
use hatoba_metrics::{GroupStats, InstanceStats, Recorder, Role};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What the owner of a listener wants it to route: plain data, the input of
/// [`Router::update`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteSpec {
    /// The service name, for metrics and error messages.
    pub service: String,
    /// The groups; their weights should add up to 100 (see [`RouteSpec::validate`]).
    pub groups: Vec<GroupSpec>,
    /// Keep a client on the version it first got (a cookie), during a canary.
    pub sticky: bool,
}

/// One group of backends running one version in one role.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupSpec {
    /// Stable, canary or preview.
    pub role: Role,
    /// The version its backends run.
    pub version: String,
    /// Percent of the listener's traffic, 0-100.
    pub weight: u8,
    /// The ready backends (the controller lists only ready instances).
    pub backends: Vec<SocketAddr>,
}

/// A route spec that can not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Weights must add up to 100 (or all be 0 for a listener with nothing to serve).
    #[error("group weights add up to {total}, expected 100")]
    Weights {
        /// The sum found.
        total: u32,
    },
    /// A weight above 100.
    #[error("group `{role}` has weight {weight}, expected 0-100")]
    Weight {
        /// The group's role.
        role: &'static str,
        /// The weight found.
        weight: u8,
    },
    /// Two groups with one role.
    #[error("two groups have the role `{role}`")]
    DuplicateRole {
        /// The role.
        role: &'static str,
    },
    /// One backend in two groups.
    #[error("backend {addr} is in two groups")]
    DuplicateBackend {
        /// The backend.
        addr: SocketAddr,
    },
}

impl RouteSpec {
    /// Checks weights, roles and backends.
    pub fn validate(&self) -> Result<(), RouteError> {
        let mut total = 0u32;
        let mut roles = Vec::new();
        let mut seen = Vec::new();
        for g in &self.groups {
            if g.weight > 100 {
                return Err(RouteError::Weight {
                    role: g.role.as_str(),
                    weight: g.weight,
                });
            }
            total += u32::from(g.weight);
            if roles.contains(&g.role) {
                return Err(RouteError::DuplicateRole {
                    role: g.role.as_str(),
                });
            }
            roles.push(g.role);
            for b in &g.backends {
                if seen.contains(b) {
                    return Err(RouteError::DuplicateBackend { addr: *b });
                }
                seen.push(*b);
            }
        }
        if total != 100 && total != 0 {
            return Err(RouteError::Weights { total });
        }
        Ok(())
    }
}

/// A backend instance and what the proxy knows about it right now.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    pub(crate) in_flight: AtomicU32,
    pub(crate) consecutive_failures: AtomicU32,
    /// Ejected (not picked) until this many ms since the router's epoch.
    pub(crate) ejected_until_ms: AtomicU64,
    /// No longer in the current table: finish what runs, take nothing new,
    /// close its connections after their current request.
    pub(crate) removed: AtomicBool,
    pub(crate) idle: Notify,
    pub(crate) stats: Arc<InstanceStats>,
}

impl Backend {
    /// Requests it is serving now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }
}

/// A request's hold on a backend: counts it in flight until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(pub(crate) Arc<Backend>);

impl InFlight {
    pub(crate) fn new(b: Arc<Backend>) -> InFlight {
        b.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(b)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A group in a built table.
#[derive(Debug)]
pub struct Group {
    /// Its role.
    pub role: Role,
    /// Its version.
    pub version: String,
    /// Its weight, 0-100.
    pub weight: u8,
    pub(crate) backends: Vec<Arc<Backend>>,
    pub(crate) stats: Arc<GroupStats>,
}

/// An immutable routing table.
#[derive(Debug)]
pub struct RouteTable {
    /// The service.
    pub service: String,
    /// The groups, in spec order.
    pub groups: Vec<Group>,
    /// Cumulative weights for picking: group `i` takes `r < cumulative[i]`.
    cumulative: Vec<u32>,
    /// Sticky sessions on.
    pub sticky: bool,
    /// The spec it was built from.
    pub spec: RouteSpec,
}

impl RouteTable {
    /// The group for a random number in 0..100, by weight.
    pub(crate) fn by_weight(&self, r: u32) -> Option<&Group> {
        let i = self.cumulative.iter().position(|c| r < *c)?;
        self.groups.get(i)
    }

    /// The group with this role.
    pub(crate) fn by_role(&self, role: Role) -> Option<&Group> {
        self.groups.iter().find(|g| g.role == role)
    }

    /// The group running this version.
    pub(crate) fn by_version(&self, version: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.version == version && g.weight > 0)
    }
}

/// Passive ejection: after this many consecutive connect failures a backend
/// is skipped for [`EJECTION`].
pub(crate) const EJECT_AFTER: u32 = 3;
pub(crate) const EJECTION: Duration = Duration::from_secs(5);

/// Owns the current table of one listener and swaps it.
#[derive(Debug)]
pub struct Router {
    table: ArcSwap<RouteTable>,
    /// Backends by address, reused across tables. Only the update path locks it.
    backends: Mutex<HashMap<SocketAddr, Arc<Backend>>>,
    recorder: Arc<Recorder>,
    epoch: tokio::time::Instant,
}

impl Router {
    /// A router with an initial table.
    pub fn new(spec: RouteSpec, recorder: Arc<Recorder>) -> Result<Router, RouteError> {
        spec.validate()?;
        let empty = RouteTable {
            service: spec.service.clone(),
            groups: Vec::new(),
            cumulative: Vec::new(),
            sticky: false,
            spec: spec.clone(),
        };
        let router = Router {
            table: ArcSwap::from_pointee(empty),
            backends: Mutex::new(HashMap::new()),
            recorder,
            epoch: tokio::time::Instant::now(),
        };
        router.update(spec)?;
        Ok(router)
    }

    /// The table requests use now.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The recorder this router's traffic is measured into.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Builds a table from `spec` and swaps it in. Backends that are not in
    /// the new table are marked removed: they get no new request, finish
    /// what they serve, and their connections close after their current
    /// request. Use [`Router::drained`] to wait for that.
    pub fn update(&self, spec: RouteSpec) -> Result<(), RouteError> {
        spec.validate()?;
        let mut registry = self
            .backends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut groups = Vec::with_capacity(spec.groups.len());
        let mut cumulative = Vec::with_capacity(spec.groups.len());
        let mut total = 0u32;
        let mut keep = Vec::new();
        for g in &spec.groups {
            let stats = self.recorder.group(&spec.service, g.role, &g.version);
            let mut backends = Vec::with_capacity(g.backends.len());
            for addr in &g.backends {
                let backend = match registry.get(addr) {
                    Some(b) if !b.is_removed() => Arc::clone(b),
                    _ => Arc::new(Backend {
                        addr: *addr,
                        in_flight: AtomicU32::new(0),
                        consecutive_failures: AtomicU32::new(0),
                        ejected_until_ms: AtomicU64::new(0),
                        removed: AtomicBool::new(false),
                        idle: Notify::new(),
                        stats: self.recorder.instance(&stats, &addr.to_string()),
                    }),
                };
                registry.insert(*addr, Arc::clone(&backend));
                keep.push(*addr);
                backends.push(backend);
            }
            total += u32::from(g.weight);
            cumulative.push(total);
            groups.push(Group {
                role: g.role,
                version: g.version.clone(),
                weight: g.weight,
                backends,
                stats,
            });
        }
        registry.retain(|addr, b| {
            let stays = keep.contains(addr);
            if !stays {
                b.removed.store(true, Ordering::Relaxed);
                b.idle.notify_waiters();
            }
            stays
        });
        let table = RouteTable {
            service: spec.service.clone(),
            groups,
            cumulative,
            sticky: spec.sticky,
            spec,
        };
        self.table.store(Arc::new(table));
        Ok(())
    }

    /// Waits until the backend at `addr` serves no request, up to `timeout`.
    /// True when it drained (or was never known), false on timeout. Call
    /// after removing it with [`Router::update`], before stopping it.
    pub async fn drained(&self, backend: &Arc<Backend>, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = backend.idle.notified();
                if backend.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// The backend at `addr` in the current table, for [`Router::drained`]
    /// and inspection. Removed backends are returned by the update that
    /// removed them: keep the Arc from [`Router::backend`] before updating.
    pub fn backend(&self, addr: SocketAddr) -> Option<Arc<Backend>> {
        self.table()
            .groups
            .iter()
            .flat_map(|g| g.backends.iter())
            .find(|b| b.addr == addr)
            .cloned()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.ms_at(tokio::time::Instant::now())
    }

    /// `at` as ms since the router's epoch (for a time already read).
    pub(crate) fn ms_at(&self, at: tokio::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes a failed connect; ejects the backend after [`EJECT_AFTER`] in a row.
    pub(crate) fn connect_failed(&self, b: &Backend) {
        let n = b.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= EJECT_AFTER {
            let until = self.now_ms() + u64::try_from(EJECTION.as_millis()).unwrap_or(u64::MAX);
            b.ejected_until_ms.store(until, Ordering::Relaxed);
        }
    }

    pub(crate) fn connect_succeeded(&self, b: &Backend) {
        if b.consecutive_failures.load(Ordering::Relaxed) != 0 {
            b.consecutive_failures.store(0, Ordering::Relaxed);
            b.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_ejected(&self, b: &Backend, now_ms: u64) -> bool {
        b.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn spec(weights: &[(Role, u8, &[u16])]) -> RouteSpec {
        RouteSpec {
            service: "web".to_owned(),
            sticky: false,
            groups: weights
                .iter()
                .map(|(role, w, ports)| GroupSpec {
                    role: *role,
                    version: format!("v-{}", role.as_str()),
                    weight: *w,
                    backends: ports.iter().map(|p| addr(*p)).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn validation() {
        assert_eq!(
            spec(&[(Role::Stable, 90, &[1]), (Role::Canary, 20, &[2])]).validate(),
            Err(RouteError::Weights { total: 110 })
        );
        assert_eq!(
            spec(&[(Role::Stable, 50, &[1]), (Role::Stable, 50, &[2])]).validate(),
            Err(RouteError::DuplicateRole { role: "stable" })
        );
        assert_eq!(
            spec(&[(Role::Stable, 50, &[1]), (Role::Canary, 50, &[1])]).validate(),
            Err(RouteError::DuplicateBackend { addr: addr(1) })
        );
        assert!(
            spec(&[(Role::Stable, 90, &[1]), (Role::Canary, 10, &[2])])
                .validate()
                .is_ok()
        );
        assert!(spec(&[]).validate().is_ok());
    }

    #[test]
    fn weights_split_0_to_100() {
        let router = Router::new(
            spec(&[(Role::Stable, 90, &[1]), (Role::Canary, 10, &[2])]),
            Arc::new(Recorder::new()),
        )
        .unwrap();
        let t = router.table();
        let canary = (0..100)
            .filter(|r| t.by_weight(*r).is_some_and(|g| g.role == Role::Canary))
            .count();
        assert_eq!(canary, 10);
        assert!(t.by_weight(100).is_none());
    }

    #[test]
    fn backends_survive_swaps_and_removed_ones_are_marked() {
        let router = Router::new(
            spec(&[(Role::Stable, 100, &[1, 2])]),
            Arc::new(Recorder::new()),
        )
        .unwrap();
        let b1 = router.backend(addr(1)).unwrap();
        let b2 = router.backend(addr(2)).unwrap();
        let hold = InFlight::new(Arc::clone(&b1));
        router
            .update(spec(&[(Role::Stable, 100, &[1, 3])]))
            .unwrap();
        assert!(Arc::ptr_eq(&router.backend(addr(1)).unwrap(), &b1));
        assert_eq!(b1.in_flight(), 1);
        assert!(b2.is_removed());
        assert!(!b1.is_removed());
        drop(hold);
        assert_eq!(b1.in_flight(), 0);
        // A backend that comes back after removal starts fresh.
        router.update(spec(&[(Role::Stable, 100, &[2])])).unwrap();
        assert!(!Arc::ptr_eq(&router.backend(addr(2)).unwrap(), &b2));
    }

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_in_flight_requests() {
        let router = Arc::new(
            Router::new(
                spec(&[(Role::Stable, 100, &[1])]),
                Arc::new(Recorder::new()),
            )
            .unwrap(),
        );
        let b = router.backend(addr(1)).unwrap();
        let hold = InFlight::new(Arc::clone(&b));
        assert!(!router.drained(&b, Duration::from_millis(100)).await);
        let waiter = {
            let (router, b) = (Arc::clone(&router), Arc::clone(&b));
            tokio::spawn(async move { router.drained(&b, Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        drop(hold);
        assert!(waiter.await.unwrap());
    }
}
