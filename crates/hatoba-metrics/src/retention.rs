//! Bounded memory over time: the stats of versions (and instances) that no
//! route table has any more are forgotten once they have been out of every
//! table for the retention.
//!
//! The decision is a pure function, [`LastSeen::expire`], of what the
//! tables hold now ([`Present`]), what the recorder knows, when each key
//! was last in a table, `now` and the retention; [`Recorder::prune`] applies
//! it. The data plane calls that on a timer (`hatoba_proxy::Pruner`).
//!
//! A version is one key for all its roles: analysis sums a version's roles
//! ([`Recorder::version_window`]), so a version still routed under any role
//! keeps all of them. A group or instance still held by someone (a table,
//! a request in flight, a draining backend) is never removed, whatever the
//! decision says: it would go on counting into a detached copy.

use crate::outcome::Role;
use crate::recorder::Recorder;
use hatoba_core::Millis;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a version stays out of every route table before its groups
/// are frozen (totals kept, windows dropped: see
/// [`Recorder::freeze_unheld`]). Analysis reads windows only of versions
/// that are routed (a canary and its stable), so nothing reads these; the
/// wait only keeps a version that leaves a table for one update and comes
/// back in the next from being frozen and thawed.
pub const FREEZE_AFTER: Duration = Duration::from_secs(30);

/// A (service, version).
pub type VersionKey = (String, String);
/// A (service, role, version, instance `host:port`).
pub type InstanceKey = (String, Role, String, String);

/// What the route tables hold now, or what a recorder knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Present {
    /// Versions, by service.
    pub versions: BTreeSet<VersionKey>,
    /// Instances, by service, role and version.
    pub instances: BTreeSet<InstanceKey>,
}

impl Present {
    /// Adds one table group: `service`'s `version` under `role`, served by
    /// `instances`.
    pub fn add_group<'a>(
        &mut self,
        service: &str,
        role: Role,
        version: &str,
        instances: impl IntoIterator<Item = &'a str>,
    ) {
        self.versions
            .insert((service.to_owned(), version.to_owned()));
        for i in instances {
            self.instances
                .insert((service.to_owned(), role, version.to_owned(), i.to_owned()));
        }
    }
}

/// When each key the recorder knows was last in a route table. Keys the
/// recorder no longer knows are forgotten here too, so this stays as small
/// as the recorder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastSeen {
    versions: BTreeMap<VersionKey, Millis>,
    instances: BTreeMap<InstanceKey, Millis>,
}

/// What [`LastSeen::expire`] decided to forget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Versions out of every table for at least the retention.
    pub versions: BTreeSet<VersionKey>,
    /// Instances out of every table for at least the retention.
    pub instances: BTreeSet<InstanceKey>,
}

impl Expired {
    /// Nothing to forget.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty() && self.instances.is_empty()
    }
}

impl LastSeen {
    /// Nothing seen yet.
    pub fn new() -> LastSeen {
        LastSeen::default()
    }

    /// The decision, pure: every key of `known` that is in `present` is
    /// seen at `now`; one that is not was last seen at its recorded time
    /// (or, first noticed missing, at `now`), and is expired once `now` is
    /// at least `retention` past that.
    pub fn expire(
        &mut self,
        present: &Present,
        known: &Present,
        now: Millis,
        retention: Duration,
    ) -> Expired {
        Expired {
            versions: expire_keys(
                &present.versions,
                &known.versions,
                &mut self.versions,
                now,
                retention,
            ),
            instances: expire_keys(
                &present.instances,
                &known.instances,
                &mut self.instances,
                now,
                retention,
            ),
        }
    }

    /// When a version was last in a table, if it is tracked.
    pub fn version(&self, service: &str, version: &str) -> Option<Millis> {
        self.versions
            .get(&(service.to_owned(), version.to_owned()))
            .copied()
    }
}

fn expire_keys<K: Ord + Clone>(
    present: &BTreeSet<K>,
    known: &BTreeSet<K>,
    seen: &mut BTreeMap<K, Millis>,
    now: Millis,
    retention: Duration,
) -> BTreeSet<K> {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    seen.retain(|k, _| known.contains(k));
    let mut expired = BTreeSet::new();
    for k in known {
        let last = if present.contains(k) {
            seen.insert(k.clone(), now);
            now
        } else {
            *seen.entry(k.clone()).or_insert(now)
        };
        if now.0.saturating_sub(last.0) >= retention_ms && !present.contains(k) {
            expired.insert(k.clone());
        }
    }
    expired
}

impl Recorder {
    /// Every version and instance this recorder has stats for.
    pub fn known(&self) -> Present {
        let mut known = Present::default();
        for g in self.groups() {
            let names: Vec<String> = g
                .instances()
                .iter()
                .map(|i| i.instance().to_owned())
                .collect();
            known.add_group(
                g.service(),
                g.role(),
                g.version(),
                names.iter().map(String::as_str),
            );
        }
        known
    }

    /// Decides with `seen` what has been out of every table (`present`)
    /// for `retention` at `now`, and forgets it: expired versions (every
    /// role) leave the recorder, expired instances their group. Versions
    /// out of every table for [`FREEZE_AFTER`] are frozen before that:
    /// totals kept, windows dropped. Anything
    /// still held elsewhere (a table, a request in flight) stays and is
    /// tried again next time. Returns what was decided.
    pub fn prune(
        &self,
        seen: &mut LastSeen,
        present: &Present,
        now: Millis,
        retention: Duration,
    ) -> Expired {
        let expired = seen.expire(present, &self.known(), now, retention);
        // Out of every table for a while: analysis judges only versions
        // that are routed, so only its totals are read any more.
        let quiet_ms = u64::try_from(FREEZE_AFTER.as_millis()).unwrap_or(u64::MAX);
        self.freeze_unheld(|g| {
            let key = (g.service().to_owned(), g.version().to_owned());
            !present.versions.contains(&key)
                && seen
                    .versions
                    .get(&key)
                    .is_some_and(|at| now.0.saturating_sub(at.0) >= quiet_ms)
        });
        if expired.is_empty() {
            return expired;
        }
        self.remove_unheld(|g| {
            expired
                .versions
                .contains(&(g.service().to_owned(), g.version().to_owned()))
        });
        for g in self.groups() {
            g.remove_unheld_instances(|name| {
                expired.instances.contains(&(
                    g.service().to_owned(),
                    g.role(),
                    g.version().to_owned(),
                    name.to_owned(),
                ))
            });
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;

    const HOUR: Duration = Duration::from_secs(3600);

    fn table(groups: &[(&str, Role, &str, &[&str])]) -> Present {
        let mut p = Present::default();
        for (service, role, version, instances) in groups {
            p.add_group(service, *role, version, instances.iter().copied());
        }
        p
    }

    #[test]
    fn a_version_out_of_every_table_expires_after_the_retention_and_not_before() {
        let mut seen = LastSeen::new();
        let known = table(&[
            ("web", Role::Stable, "v1", &["a:1"]),
            ("web", Role::Stable, "v2", &["a:2"]),
        ]);
        let v1 = table(&[("web", Role::Stable, "v1", &["a:1"])]);
        let v2 = table(&[("web", Role::Stable, "v2", &["a:2"])]);
        assert!(seen.expire(&v1, &known, Millis(0), HOUR).is_empty());
        // v2 replaces v1 at 10 s: v1 was last seen at the tick before.
        assert!(seen.expire(&v2, &known, Millis(10_000), HOUR).is_empty());
        assert_eq!(seen.version("web", "v1"), Some(Millis(0)));
        let just_before = seen.expire(&v2, &known, Millis(3_599_999), HOUR);
        assert!(just_before.is_empty(), "{just_before:?}");
        let at = seen.expire(&v2, &known, Millis(3_600_000), HOUR);
        assert_eq!(
            at.versions,
            BTreeSet::from([("web".to_owned(), "v1".to_owned())])
        );
        assert_eq!(
            at.instances,
            BTreeSet::from([(
                "web".to_owned(),
                Role::Stable,
                "v1".to_owned(),
                "a:1".to_owned()
            )])
        );
    }

    #[test]
    fn a_version_back_in_a_table_starts_over_and_any_role_keeps_it() {
        let mut seen = LastSeen::new();
        let known = table(&[
            ("web", Role::Canary, "v2", &[]),
            ("web", Role::Stable, "v2", &[]),
            ("web", Role::Stable, "v1", &[]),
        ]);
        let v1 = table(&[("web", Role::Stable, "v1", &[])]);
        let promoted = table(&[("web", Role::Stable, "v2", &[])]);
        seen.expire(&promoted, &known, Millis(0), HOUR);
        // Back to v1 (a rollback) until 3 000 s, then v2 again.
        seen.expire(&v1, &known, Millis(1_000), HOUR);
        seen.expire(&v1, &known, Millis(3_000_000), HOUR);
        seen.expire(&promoted, &known, Millis(3_001_000), HOUR);
        let later = seen.expire(&promoted, &known, Millis(3_601_000), HOUR);
        // v1 was last routed at 3 000 s: not yet. v2 is in a table (its canary group
        // is not, but the version is): never.
        assert!(later.versions.is_empty(), "{later:?}");
        let v1_gone = seen.expire(&promoted, &known, Millis(6_600_000), HOUR);
        assert_eq!(
            v1_gone.versions,
            BTreeSet::from([("web".to_owned(), "v1".to_owned())])
        );
    }

    #[test]
    fn first_noticed_missing_counts_from_then_and_unknown_keys_are_forgotten() {
        let mut seen = LastSeen::new();
        let known = table(&[("web", Role::Stable, "old", &[])]);
        let empty = Present::default();
        assert!(seen.expire(&empty, &known, Millis(50_000), HOUR).is_empty());
        assert_eq!(seen.version("web", "old"), Some(Millis(50_000)));
        assert!(
            !seen
                .expire(&empty, &known, Millis(3_650_000), HOUR)
                .is_empty()
        );
        seen.expire(&empty, &Present::default(), Millis(3_700_000), HOUR);
        assert_eq!(seen.version("web", "old"), None);
    }

    #[test]
    fn prune_forgets_old_versions_and_instances_but_nothing_still_held() {
        let rec = Recorder::new();
        let v1 = rec.group("web", Role::Stable, "v1");
        let _i1 = rec.instance(&v1, "127.0.0.1:1");
        v1.record(Millis(0), Outcome::Status(200), Duration::from_millis(1));
        drop(v1);
        let v2 = rec.group("web", Role::Stable, "v2");
        let gone = rec.instance(&v2, "127.0.0.1:2");
        let kept = rec.instance(&v2, "127.0.0.1:3");
        drop(gone);
        let mut seen = LastSeen::new();
        let before = table(&[("web", Role::Stable, "v1", &["127.0.0.1:1"])]);
        rec.prune(&mut seen, &before, Millis(0), HOUR);
        let now = table(&[("web", Role::Stable, "v2", &["127.0.0.1:3"])]);
        rec.prune(&mut seen, &now, Millis(1_000), HOUR);
        // Held by `_i1`: an instance of v1 someone still counts into does
        // not keep v1 itself.
        let text = rec.encode_prometheus(Millis(0));
        assert!(text.contains("version=\"v1\""), "{text}");
        rec.prune(&mut seen, &now, Millis(3_601_000), HOUR);
        assert!(rec.get("web", Role::Stable, "v1").is_none());
        assert!(rec.get("web", Role::Stable, "v2").is_some());
        let names: Vec<String> = v2
            .instances()
            .iter()
            .map(|i| i.instance().to_owned())
            .collect();
        assert_eq!(names, ["127.0.0.1:3"]);
        drop(kept);
        // A group still held (a table has it) is kept even when expired.
        let held = rec.group("web", Role::Canary, "v3");
        rec.prune(&mut seen, &now, Millis(3_602_000), HOUR);
        rec.prune(&mut seen, &now, Millis(7_300_000), HOUR);
        assert!(rec.get("web", Role::Canary, "v3").is_some());
        drop(held);
        rec.prune(&mut seen, &now, Millis(7_301_000), HOUR);
        assert!(rec.get("web", Role::Canary, "v3").is_none());
        let text = rec.encode_prometheus(Millis(0));
        assert!(!text.contains("version=\"v1\""), "{text}");
    }

    #[test]
    fn a_version_out_of_every_table_for_a_while_is_frozen_with_its_totals() {
        let rec = Recorder::new();
        let v1 = rec.group("web", Role::Stable, "v1");
        for i in 0..50u64 {
            let status = if i % 10 == 0 { 503 } else { 200 };
            v1.record(
                Millis(i * 100),
                Outcome::Status(status),
                Duration::from_millis(i + 1),
            );
        }
        let before = (v1.totals(), v1.status_totals());
        drop(v1);
        let mut seen = LastSeen::new();
        let old = table(&[("web", Role::Stable, "v1", &[])]);
        let new = table(&[("web", Role::Stable, "v2", &[])]);
        rec.prune(&mut seen, &old, Millis(5_000), HOUR);
        // v2 replaces v1 at 6 s; v1 was last in a table at 5 s.
        rec.prune(&mut seen, &new, Millis(6_000), HOUR);
        let quiet = 5_000 + 30_000;
        rec.prune(&mut seen, &new, Millis(quiet - 1), HOUR);
        let g = rec.get("web", Role::Stable, "v1").expect("kept");
        assert!(!g.is_frozen(), "frozen too early");
        drop(g);
        rec.prune(&mut seen, &new, Millis(quiet), HOUR);
        let g = rec.get("web", Role::Stable, "v1").expect("kept");
        assert!(g.is_frozen());
        assert_eq!((g.totals(), g.status_totals()), before);
        assert_eq!(
            g.window(crate::Window::M5, Millis(quiet)).counts.requests,
            0
        );
        let text = rec.encode_prometheus(Millis(quiet));
        assert!(text.contains("version=\"v1\""), "{text}");
        drop(g);
        // Routed again (a rollback to v1): a live copy with the same totals
        // that counts on.
        let again = rec.group("web", Role::Stable, "v1");
        assert!(!again.is_frozen());
        assert_eq!((again.totals(), again.status_totals()), before);
        again.record(
            Millis(quiet + 1),
            Outcome::Status(200),
            Duration::from_millis(2),
        );
        assert_eq!(again.totals().requests, before.0.requests + 1);
        assert_eq!(
            again
                .window(crate::Window::S10, Millis(quiet + 1))
                .counts
                .requests,
            1
        );
        // Held (a table has it): never frozen, however long it is out.
        rec.prune(&mut seen, &new, Millis(quiet + 40_000), HOUR);
        assert!(
            !rec.get("web", Role::Stable, "v1")
                .expect("kept")
                .is_frozen()
        );
        drop(again);
        // Still out of every table (last seen at 5 s): frozen on the next
        // prune, then expired at the retention like any other.
        rec.prune(&mut seen, &new, Millis(quiet + 41_000), HOUR);
        assert!(
            rec.get("web", Role::Stable, "v1")
                .expect("kept")
                .is_frozen()
        );
        rec.prune(&mut seen, &new, Millis(5_000 + 3_600_000), HOUR);
        assert!(rec.get("web", Role::Stable, "v1").is_none());
    }
}
