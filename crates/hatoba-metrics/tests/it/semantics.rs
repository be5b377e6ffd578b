//! What counts as what: status classes, failure kinds, the success rate
//! (only upstream failures and relayed 5xx count against a version;
//! downstream and internal failures count neither way), latency of judged
//! requests only, instance counters, in-flight guards, the registry.

use super::{at, ms};
use hatoba_metrics::{Failure, GroupStats, InstanceCounts, Outcome, Recorder, Role, Window};
use std::sync::Arc;

fn record_n(g: &GroupStats, n: usize, outcome: Outcome) {
    for _ in 0..n {
        g.record(at(0), outcome, ms(40));
    }
}

#[test]
fn success_rate_counts_only_what_the_version_caused() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Canary, "v2");
    record_n(&g, 90, Outcome::Status(200));
    record_n(&g, 5, Outcome::Status(503));
    record_n(&g, 3, Outcome::Failed(Failure::Upstream));
    record_n(&g, 1, Outcome::FailedWithStatus(Failure::Upstream, 200));
    record_n(&g, 50, Outcome::Failed(Failure::Downstream));
    record_n(&g, 7, Outcome::FailedWithStatus(Failure::Internal, 503));
    record_n(&g, 10, Outcome::Status(404));
    record_n(&g, 2, Outcome::Status(301));
    record_n(&g, 1, Outcome::Status(101));

    for counts in [g.totals(), g.window(Window::S10, at(0)).counts] {
        assert_eq!(counts.requests, 169);
        // 2xx: 90 relayed + 1 whose body broke off; 4xx: 10 + 50 downstream
        // failures counted as 499; 5xx: 5 relayed + 3 upstream (502) + 7 internal.
        assert_eq!(counts.by_class, [1, 91, 2, 60, 15]);
        assert_eq!(counts.upstream_failures, 4);
        assert_eq!(counts.downstream_failures, 50);
        assert_eq!(counts.internal_failures, 7);
        assert_eq!(counts.judged(), 112);
        assert_eq!(counts.against, 9);
        assert_eq!(counts.latency.count(), 112);
        assert_eq!(counts.success_rate(), Some(103.0 / 112.0));
    }
    let statuses = g.status_totals();
    assert_eq!(
        statuses,
        vec![
            (Some(101), 1),
            (Some(200), 91),
            (Some(301), 2),
            (Some(404), 10),
            (Some(499), 50),
            (Some(502), 3),
            (Some(503), 12),
        ]
    );
}

#[test]
fn success_rate_needs_a_judged_request() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    assert_eq!(g.totals().success_rate(), None);
    record_n(&g, 3, Outcome::Failed(Failure::Downstream));
    record_n(&g, 2, Outcome::Failed(Failure::Internal));
    let t = g.totals();
    assert_eq!(t.requests, 5);
    assert_eq!(t.success_rate(), None);
    assert_eq!(t.quantile(0.5), None);
    record_n(&g, 1, Outcome::Status(500));
    assert_eq!(g.totals().success_rate(), Some(0.0));
    record_n(&g, 3, Outcome::Status(200));
    assert_eq!(g.totals().success_rate(), Some(0.75));
}

#[test]
fn odd_status_numbers_count_as_5xx_and_other() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    record_n(&g, 1, Outcome::Status(0));
    record_n(&g, 1, Outcome::Status(999));
    let t = g.totals();
    assert_eq!(t.by_class, [0, 0, 0, 0, 2]);
    assert_eq!(t.against, 2);
    assert_eq!(g.status_totals(), vec![(None, 2)]);
}

#[test]
fn instances_count_classes_failures_and_in_flight() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    let a = rec.instance(&g, "127.0.0.1:8001");
    let b = g.instance("127.0.0.1:8002");
    assert!(Arc::ptr_eq(&a, &rec.instance(&g, "127.0.0.1:8001")));
    a.record(Outcome::Status(200));
    a.record(Outcome::Status(200));
    a.record(Outcome::Failed(Failure::Upstream));
    b.record(Outcome::FailedWithStatus(Failure::Downstream, 200));
    assert_eq!(
        a.totals(),
        InstanceCounts {
            requests: 3,
            by_class: [0, 2, 0, 0, 1],
            upstream_failures: 1,
            downstream_failures: 0,
            internal_failures: 0,
        }
    );
    assert_eq!(b.totals().by_class, [0, 1, 0, 0, 0]);
    assert_eq!(b.totals().downstream_failures, 1);
    let names: Vec<String> = g
        .instances()
        .iter()
        .map(|i| i.instance().to_owned())
        .collect();
    assert_eq!(names, ["127.0.0.1:8001", "127.0.0.1:8002"]);

    let one = a.start();
    let two = a.start();
    let grp = g.start();
    assert_eq!((a.in_flight(), g.in_flight()), (2, 1));
    drop(one);
    drop(grp);
    assert_eq!((a.in_flight(), g.in_flight()), (1, 0));
    drop(two);
    assert_eq!(a.in_flight(), 0);

    assert!(g.remove_instance("127.0.0.1:8002").is_some());
    assert_eq!(g.instances().len(), 1);
    // A holder of a removed instance keeps counting without panicking.
    b.record(Outcome::Status(200));
}

#[test]
fn groups_are_shared_listed_and_forgotten() {
    let rec = Recorder::new();
    let g1 = rec.group("web", Role::Stable, "v1");
    let g2 = rec.group("api", Role::Canary, "v2");
    let g3 = rec.group("api", Role::Stable, "v1");
    assert!(Arc::ptr_eq(&g1, &rec.group("web", Role::Stable, "v1")));
    assert_eq!(
        (g2.service(), g2.role(), g2.version()),
        ("api", Role::Canary, "v2")
    );
    let listed: Vec<(String, Role)> = rec
        .groups()
        .iter()
        .map(|g| (g.service().to_owned(), g.role()))
        .collect();
    assert_eq!(
        listed,
        [
            ("api".to_owned(), Role::Stable),
            ("api".to_owned(), Role::Canary),
            ("web".to_owned(), Role::Stable)
        ]
    );
    assert_eq!(g3.last_record(), None);
    g3.record(at(5), Outcome::Status(200), ms(1));
    g3.record(at(2), Outcome::Status(200), ms(1));
    assert_eq!(g3.last_record(), Some(at(5)));

    // The same Arc keeps counting; a removed group leaves the registry.
    assert!(rec.remove("web", Role::Stable, "v1").is_some());
    g1.record(at(0), Outcome::Status(200), ms(1));
    assert_eq!(g1.totals().requests, 1);
    assert!(rec.get("web", Role::Stable, "v1").is_none());
    assert_eq!(rec.group("web", Role::Stable, "v1").totals().requests, 0);
    rec.retain(|g| g.last_record().is_some());
    assert_eq!(rec.groups().len(), 1);
    assert_eq!(rec.groups()[0].version(), "v1");
}

#[test]
fn memory_per_group_is_bounded() {
    let bytes = GroupStats::memory_bytes();
    assert!(bytes < 300 * 1024, "{bytes} bytes per group");
    assert!(bytes > 200 * 1024, "{bytes} bytes per group");
}

#[test]
fn names_for_labels() {
    assert_eq!(Role::ALL.map(Role::as_str), ["stable", "canary", "preview"]);
    assert_eq!(
        Failure::ALL.map(Failure::as_str),
        ["upstream", "downstream", "internal"]
    );
    assert_eq!(Window::ALL.map(Window::as_str), ["10s", "1m", "5m"]);
    assert_eq!(Role::Canary.to_string(), "canary");
    assert_eq!(Window::M5.length(), ms(300_000));
}
