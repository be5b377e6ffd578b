//! Zero failed requests while traffic moves: every response under a steady
//! load from many keep-alive clients is counted, and any connection error or
//! non-200 answer fails the test.

use crate::support::{Child, InProcess, Load, Proxy, group, spec};
use hatoba_metrics::Role;
use hatoba_proxy::ProxyOptions;
use std::time::Duration;

const CLIENTS: usize = 32;

fn assert_no_failures(t: &crate::support::Tally) {
    assert!(
        t.failed.is_empty(),
        "{} failed of {}: {:?}",
        t.failed.len(),
        t.ok + t.failed.len() as u64,
        &t.failed[..t.failed.len().min(10)]
    );
    assert!(t.ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weight_changes_0_10_50_100_0_fail_nothing() {
    let (s1, s2) = (
        InProcess::start("v1", |_| {}).await,
        InProcess::start("v1", |_| {}).await,
    );
    let (c1, c2) = (
        InProcess::start("v2", |_| {}).await,
        InProcess::start("v2", |_| {}).await,
    );
    let stable = [s1.addr, s2.addr];
    let canary = [c1.addr, c2.addr];
    let split = |w: u8| {
        spec(vec![
            group(Role::Stable, "v1", 100 - w, &stable),
            group(Role::Canary, "v2", w, &canary),
        ])
    };
    let proxy = Proxy::start(split(0), ProxyOptions::default());
    let load = Load::start(proxy.addr, CLIENTS);
    load.pass(2_000).await;
    let mut seen = Vec::new();
    for w in [10u8, 50, 100, 0] {
        proxy.router.update(split(w)).unwrap();
        let before = load.versions();
        load.pass(4_000).await;
        let after = load.versions();
        let v2 = after.get("v2").copied().unwrap_or(0) - before.get("v2").copied().unwrap_or(0);
        let v1 = after.get("v1").copied().unwrap_or(0) - before.get("v1").copied().unwrap_or(0);
        seen.push((w, v1, v2));
    }
    let tally = load.finish().await;
    assert_no_failures(&tally);
    // At 100 % the stable version gets (almost) nothing: only requests that
    // were already in flight when the table swapped. At 0 % likewise for v2.
    let at = |w: u8| seen.iter().find(|s| s.0 == w).copied().unwrap();
    let (_, v1_at_100, v2_at_100) = at(100);
    assert!(v1_at_100 * 20 < v2_at_100, "{seen:?}");
    let (_, v1_at_0, v2_at_0) = at(0);
    assert!(v2_at_0 * 20 < v1_at_0, "{seen:?}");
    let (_, v1_at_50, v2_at_50) = at(50);
    let share = v2_at_50 as f64 / (v1_at_50 + v2_at_50) as f64;
    assert!((0.35..0.65).contains(&share), "{seen:?}");
    for b in [s1, s2, c1, c2] {
        b.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blue_green_swap_is_atomic_and_fails_nothing() {
    let blue = [
        InProcess::start("blue", |_| {}).await,
        InProcess::start("blue", |_| {}).await,
    ];
    let green = [
        InProcess::start("green", |_| {}).await,
        InProcess::start("green", |_| {}).await,
    ];
    let blue_addrs: Vec<_> = blue.iter().map(|b| b.addr).collect();
    let green_addrs: Vec<_> = green.iter().map(|b| b.addr).collect();
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "blue", 100, &blue_addrs)]),
        ProxyOptions::default(),
    );
    let load = Load::start(proxy.addr, CLIENTS);
    load.pass(3_000).await;
    // One swap: all traffic to green; blue's backends are drained, then stopped.
    let old: Vec<_> = blue_addrs
        .iter()
        .map(|a| proxy.router.backend(*a).unwrap())
        .collect();
    proxy
        .router
        .update(spec(vec![group(Role::Stable, "green", 100, &green_addrs)]))
        .unwrap();
    for b in &old {
        assert!(proxy.router.drained(b, Duration::from_secs(10)).await);
    }
    for b in blue {
        b.stop().await;
    }
    // Answers the proxy finished before the drain may still be on their way
    // to the clients' tallies; after these they are all counted.
    load.pass(500).await;
    let blue_after_drain = load.versions().get("blue").copied().unwrap_or(0);
    load.pass(3_000).await;
    let tally = load.finish().await;
    assert_no_failures(&tally);
    assert_eq!(
        tally.by_version.get("blue").copied().unwrap_or(0),
        blue_after_drain,
        "blue served after it was drained and stopped"
    );
    assert!(tally.by_version["green"] >= 3_000);
    for g in green {
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_instance_finishes_in_flight_requests_then_stops() {
    // Slow answers, so requests are in flight when the instance is removed.
    let a = InProcess::start("v1", |c| c.latency = Duration::from_millis(150)).await;
    let b = InProcess::start("v1", |c| c.latency = Duration::from_millis(150)).await;
    let proxy = Proxy::start(
        spec(vec![group(Role::Stable, "v1", 100, &[a.addr, b.addr])]),
        ProxyOptions::default(),
    );
    let load = Load::start(proxy.addr, CLIENTS);
    load.pass(200).await;
    let leaving = proxy.router.backend(a.addr).unwrap();
    assert!(
        leaving.in_flight() > 0,
        "the test needs requests in flight on the leaving instance"
    );
    proxy
        .router
        .update(spec(vec![group(Role::Stable, "v1", 100, &[b.addr])]))
        .unwrap();
    assert!(
        proxy
            .router
            .drained(&leaving, Duration::from_secs(10))
            .await
    );
    a.stop().await;
    load.pass(200).await;
    let tally = load.finish().await;
    assert_no_failures(&tally);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_instance_costs_users_nothing() {
    let mut victim = Child::start("v1");
    let survivor = Child::start("v1");
    let proxy = Proxy::start(
        spec(vec![group(
            Role::Stable,
            "v1",
            100,
            &[victim.addr, survivor.addr],
        )]),
        ProxyOptions::default(),
    );
    let load = Load::start(proxy.addr, CLIENTS);
    load.pass(5_000).await;
    victim.sigkill();
    // The controller has not noticed yet: the dead instance is still in the table.
    load.pass(10_000).await;
    let tally = load.finish().await;
    assert_no_failures(&tally);
    drop(survivor);
}
