//! Rolling windows on a simulated clock: what each window counts at chosen
//! instants, ageing out, gaps longer than a ring, and time going backwards.

use super::{T0, at, ms};
use hatoba_core::Millis;
use hatoba_metrics::{GroupStats, Outcome, Recorder, Role, Window};

/// `[S10, M1, M5]` request counts at `now`.
fn counts(g: &GroupStats, now: Millis) -> [u64; 3] {
    Window::ALL.map(|w| g.window(w, now).counts.requests)
}

fn ok(g: &GroupStats, now: Millis) {
    g.record(now, Outcome::Status(200), ms(20));
}

#[test]
fn records_age_out_of_each_window_on_time() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Canary, "v2");

    ok(&g, at(0));
    assert_eq!(counts(&g, at(0)), [1, 1, 1]);

    ok(&g, at(5_000));
    assert_eq!(counts(&g, at(5_000)), [2, 2, 2]);
    // The 10 s window holds the current 1 s slot and the nine before it.
    assert_eq!(counts(&g, at(9_999)), [2, 2, 2]);
    assert_eq!(counts(&g, at(10_000)), [1, 2, 2]);
    assert_eq!(counts(&g, at(14_999)), [1, 2, 2]);
    assert_eq!(counts(&g, at(15_000)), [0, 2, 2]);

    ok(&g, at(15_000));
    assert_eq!(counts(&g, at(15_000)), [1, 3, 3]);
    // The 1 min window holds the current 10 s slot and the five before it.
    assert_eq!(counts(&g, at(59_999)), [0, 3, 3]);
    assert_eq!(counts(&g, at(60_000)), [0, 1, 3]);
    assert_eq!(counts(&g, at(69_999)), [0, 1, 3]);

    ok(&g, at(70_000));
    assert_eq!(counts(&g, at(70_000)), [1, 1, 4]);
    // The 5 min window holds the current 10 s slot and the 29 before it.
    assert_eq!(counts(&g, at(299_999)), [0, 0, 4]);
    assert_eq!(counts(&g, at(300_000)), [0, 0, 2]);
    assert_eq!(counts(&g, at(310_000)), [0, 0, 1]);
    assert_eq!(counts(&g, at(369_999)), [0, 0, 1]);
    assert_eq!(counts(&g, at(370_000)), [0, 0, 0]);

    ok(&g, at(400_000));
    assert_eq!(counts(&g, at(400_000)), [1, 1, 1]);
    assert_eq!(g.totals().requests, 5);

    // A reader's window covers [start, now], start on a slot edge.
    let w = g.window(Window::M1, at(400_000));
    assert_eq!(w.start, at(350_000));
    assert_eq!(w.end, at(400_000));
    assert_eq!(w.span(), ms(50_001));
    let w = g.window(Window::S10, at(405_500));
    assert_eq!(w.start, at(396_000));
    assert!((w.rate_per_sec() - 1.0 / 9.501).abs() < 1e-9);
}

#[test]
fn a_gap_longer_than_every_ring_starts_clean() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    for i in 0..300 {
        ok(&g, at(i * 1_000));
    }
    assert_eq!(counts(&g, at(299_999)), [10, 60, 300]);
    let later = 10_000_000;
    assert_eq!(counts(&g, at(later)), [0, 0, 0]);
    let w = g.window(Window::M5, at(later));
    assert_eq!(w.success_rate(), None);
    assert_eq!(w.quantile(0.99), None);
    assert_eq!(w.rate_per_sec(), 0.0);
    g.record(at(later), Outcome::Status(503), ms(900));
    assert_eq!(counts(&g, at(later)), [1, 1, 1]);
    let w = g.window(Window::M5, at(later));
    assert_eq!(w.counts.by_class, [0, 0, 0, 0, 1]);
    assert_eq!(w.success_rate(), Some(0.0));
    assert_eq!(
        w.quantile(0.5),
        Some(std::time::Duration::from_micros(899_500))
    );
    assert_eq!(g.totals().requests, 301);
}

#[test]
fn every_second_of_a_long_run_is_counted_exactly() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    // Three requests a second for 20 minutes, checking every 7 s.
    for s in 0..1_200u64 {
        for k in 0..3 {
            ok(&g, at(s * 1_000 + k * 300));
        }
        if s % 7 == 0 {
            let now = at(s * 1_000 + 999);
            let full = |slots: u64, slot_s: u64| {
                let first = (s / slot_s).saturating_sub(slots - 1) * slot_s;
                3 * (s + 1 - first)
            };
            assert_eq!(
                counts(&g, now),
                [full(10, 1), full(6, 10), full(30, 10)],
                "at {s} s"
            );
        }
    }
}

#[test]
fn time_going_backwards_never_panics_or_overcounts() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    ok(&g, at(100_000));
    // A second late: lands in its own slot of both rings.
    ok(&g, at(99_000));
    assert_eq!(counts(&g, at(100_000)), [2, 2, 2]);
    // 50 s late: too old for the 1 s ring (its slot holds a newer second),
    // inside the 10 s slots' 5 min span, so it lands in its own 10 s slot.
    ok(&g, at(50_000));
    assert_eq!(counts(&g, at(100_000)), [2, 3, 3]);
    // Far in the past: kept only where its slot is free, and only a reader
    // in that past sees it.
    g.record(Millis(0), Outcome::Status(200), ms(1));
    assert_eq!(counts(&g, at(100_000)), [2, 3, 3]);
    assert_eq!(counts(&g, Millis(5)), [0, 1, 1]);
    // A reader before every record sees nothing newer than its now.
    assert_eq!(counts(&g, at(0)), [0, 0, 0]);
    assert_eq!(counts(&g, at(50_000)), [0, 1, 1]);
    // Every record counts in the totals once.
    assert_eq!(g.totals().requests, 4);
    // Forward again: the slots carry on.
    ok(&g, at(100_500));
    assert_eq!(counts(&g, at(100_500)), [3, 4, 4]);
    // The ends of the clock.
    g.record(Millis(u64::MAX), Outcome::Status(200), ms(1));
    assert_eq!(counts(&g, Millis(u64::MAX)), [1, 1, 1]);
    // That far-future record recycled the 10 s slot holding the record at
    // 50 s (same ring position): the past it overwrote is forgotten by the
    // windows, never double counted.
    ok(&g, at(100_600));
    assert_eq!(counts(&g, at(100_600)), [4, 4, 4]);
    assert_eq!(g.totals().requests, 7);
    for w in Window::ALL {
        let s = g.window(w, Millis(u64::MAX));
        assert!(s.counts.requests <= 7);
        assert!(s.span() > ms(0));
    }
    let _ = g.window(Window::M5, Millis(0));
    assert_eq!(T0 % 10_000, 0);
}

#[test]
fn version_window_sums_roles() {
    let rec = Recorder::new();
    let preview = rec.group("svc", Role::Preview, "v2");
    let stable = rec.group("svc", Role::Stable, "v2");
    let other = rec.group("svc", Role::Stable, "v1");
    preview.record(at(0), Outcome::Status(200), ms(10));
    stable.record(at(1_000), Outcome::Status(500), ms(30));
    stable.record(at(1_000), Outcome::Status(200), ms(30));
    other.record(at(1_000), Outcome::Status(200), ms(30));
    let w = rec
        .version_window("svc", "v2", Window::M1, at(2_000))
        .unwrap();
    assert_eq!(w.counts.requests, 3);
    assert_eq!(w.counts.latency.count(), 3);
    assert!((w.success_rate().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(rec.version_window("svc", "v9", Window::M1, at(2_000)), None);
    assert_eq!(
        rec.window("svc", Role::Canary, "v2", Window::M1, at(2_000)),
        None
    );
    let w = rec
        .window("svc", Role::Stable, "v2", Window::M1, at(2_000))
        .unwrap();
    assert_eq!(w.counts.requests, 2);
}
