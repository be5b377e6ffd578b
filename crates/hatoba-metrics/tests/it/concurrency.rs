//! Several threads recording into one group: totals are always exact;
//! windows are exact when the threads' `now`s stay within a ring's span,
//! including many threads racing to recycle the same slots; under a moving
//! shared clock with a concurrent reader, windows never exceed totals.

use super::{at, ms};
use hatoba_metrics::{Failure, GroupStats, Outcome, Recorder, Role, Window};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

const THREADS: u64 = 4;
const PER_THREAD: u64 = 100_000;

/// Outcome and latency of the `i`-th record of a thread: 1 in 10 a 503,
/// 1 in 50 a downstream failure, latencies cycling 1..=1000 ms.
fn nth(i: u64) -> (Outcome, std::time::Duration) {
    let outcome = if i % 50 == 7 {
        Outcome::Failed(Failure::Downstream)
    } else if i % 10 == 3 {
        Outcome::Status(503)
    } else {
        Outcome::Status(200)
    };
    (outcome, ms(i % 1000 + 1))
}

fn run(g: &Arc<GroupStats>, now_of: fn(u64, u64) -> u64) {
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let g = Arc::clone(g);
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let (outcome, latency) = nth(i);
                    g.record(at(now_of(t, i)), outcome, latency);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn expected_per_thread() -> (u64, u64, u64) {
    let downstream = (0..PER_THREAD).filter(|i| i % 50 == 7).count() as u64;
    let against = (0..PER_THREAD)
        .filter(|i| i % 50 != 7 && i % 10 == 3)
        .count() as u64;
    (PER_THREAD, downstream, against)
}

fn assert_exact(c: &hatoba_metrics::Counts) {
    let (n, downstream, against) = expected_per_thread();
    assert_eq!(c.requests, THREADS * n);
    assert_eq!(c.downstream_failures, THREADS * downstream);
    assert_eq!(c.against, THREADS * against);
    assert_eq!(c.by_class[4], THREADS * against);
    assert_eq!(c.latency.count(), THREADS * (n - downstream));
}

#[test]
fn four_threads_at_one_instant() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    run(&g, |_, _| 0);
    assert_exact(&g.totals());
    for w in Window::ALL {
        assert_exact(&g.window(w, at(0)).counts);
    }
}

#[test]
fn four_threads_racing_to_recycle_slots() {
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    // Every thread walks the same 5 s, so every 1 s slot is first touched
    // by several threads at once.
    run(&g, |t, i| (i * 7 + t * 13) % 5_000);
    assert_exact(&g.totals());
    for w in Window::ALL {
        assert_exact(&g.window(w, at(5_000)).counts);
    }
}

#[test]
fn threads_in_step_recycle_every_slot_exactly() {
    const PHASES: u64 = 45;
    const PER_PHASE: u64 = 2_000;
    let rec = Recorder::new();
    let g = rec.group("svc", Role::Stable, "v1");
    let barrier = Arc::new(Barrier::new(THREADS as usize + 1));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (g, barrier) = (Arc::clone(&g), Arc::clone(&barrier));
            thread::spawn(move || {
                for phase in 0..PHASES {
                    barrier.wait();
                    // All threads enter a new second together: the first
                    // records of each phase race to recycle its slot.
                    for i in 0..PER_PHASE {
                        let now = phase * 1_000 + (i * 31 + t) % 1_000;
                        g.record(at(now), Outcome::Status(200), ms(i % 700));
                    }
                    barrier.wait();
                }
            })
        })
        .collect();
    let per_second = THREADS * PER_PHASE;
    for phase in 0..PHASES {
        barrier.wait();
        barrier.wait();
        let now = at(phase * 1_000 + 999);
        let seconds = |slots: u64, slot_s: u64| {
            let first = (phase / slot_s).saturating_sub(slots - 1) * slot_s;
            phase + 1 - first
        };
        let got = Window::ALL.map(|w| g.window(w, now));
        let want = [seconds(10, 1), seconds(6, 10), seconds(30, 10)].map(|s| s * per_second);
        for (w, n) in got.iter().zip(want) {
            assert_eq!(w.counts.requests, n, "{} after second {phase}", w.window);
            assert_eq!(
                w.counts.latency.count(),
                n,
                "{} after second {phase}",
                w.window
            );
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(g.totals().requests, PHASES * per_second);
}

#[test]
fn a_moving_clock_with_a_concurrent_reader() {
    let rec = Arc::new(Recorder::new());
    let g = rec.group("svc", Role::Stable, "v1");
    let clock = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (g, clock, done) = (Arc::clone(&g), Arc::clone(&clock), Arc::clone(&done));
        thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                let now = at(clock.load(Ordering::Relaxed));
                for w in Window::ALL {
                    let s = g.window(w, now);
                    let total = g.totals();
                    assert!(s.counts.requests <= total.requests);
                    if let Some(r) = s.success_rate() {
                        assert!((0.0..=1.0).contains(&r));
                    }
                    let q = [0.5, 0.95, 0.99].map(|q| s.quantile(q));
                    assert!(q[0] <= q[1] && q[1] <= q[2]);
                }
                let _ = rec.encode_prometheus(now);
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (g, clock) = (Arc::clone(&g), Arc::clone(&clock));
            thread::spawn(move || {
                for i in 0..PER_THREAD / 2 {
                    let (outcome, latency) = nth(i);
                    g.record(at(clock.load(Ordering::Relaxed)), outcome, latency);
                    if i % 64 == 0 {
                        clock.fetch_add(97, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in writers {
        h.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let total = g.totals();
    assert_eq!(total.requests, THREADS * PER_THREAD / 2);
    let now = at(clock.load(Ordering::Relaxed));
    let [s10, m1, m5] = Window::ALL.map(|w| g.window(w, now).counts.requests);
    assert!(s10 <= m1 && m1 <= m5 && m5 <= total.requests);
    assert!(s10 > 0);
}
