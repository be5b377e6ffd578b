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

/// A stop cuts no connection the kernel completed: clients that connected
/// and sent their request before the stop, still queued in the listener's
/// backlog (accepted by the kernel, not yet by the proxy), all get their
/// answer, none a reset; then the port refuses. The proxy is started on a
/// socket that already holds them and told to stop at once, so its threads
/// find the stop and the full backlog together, every time. Before the
/// fix it failed in about one run of three, all 64 reset (which branch of
/// the accept loop's `select!` wins is random): tokio had not yet been
/// told the socket was readable, and a connection taken at the stop was
/// closed before its request was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_every_connection_queued_on_the_listener() {
    use std::io::{Read as _, Write as _};
    const QUEUED: usize = 64;
    let backend = InProcess::start("v1", |_| {}).await;
    let router = std::sync::Arc::new(
        hatoba_proxy::Router::new(
            spec(vec![group(Role::Stable, "v1", 100, &[backend.addr])]),
            std::sync::Arc::new(hatoba_metrics::Recorder::new()),
        )
        .unwrap(),
    );
    // Listening, not yet served: connections complete and queue.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<std::net::TcpStream> = (0..QUEUED)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let server =
        hatoba_proxy::ProxyServer::adopt(vec![listener], router, ProxyOptions::default()).unwrap();
    // Joining its threads blocks until their connections are served.
    tokio::task::spawn_blocking(move || server.shutdown())
        .await
        .unwrap();
    let mut answers = Vec::new();
    for mut c in clients {
        let mut out = Vec::new();
        let read = c.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        answers.push(match read {
            Ok(_)
                if text.starts_with("HTTP/1.1 200")
                    && text.to_ascii_lowercase().contains("x-version: v1") =>
            {
                "answered".to_owned()
            }
            Ok(_) => format!("closed after {:?}", text.lines().next()),
            Err(e) => format!("cut: {e}"),
        });
    }
    // Stopped: a new connection is refused, not queued.
    crate::support::assert_every_queued_answered_then_refused(&answers, "connections", addr);
    backend.stop().await;
}

/// The stop under load, several times over: clients open a fresh
/// connection per request as fast as they can while the listener stops;
/// every connection must be answered or refused, none cut. Before the
/// listener stopped taking handshakes first, 38 of 60 stops cut a request;
/// since, 0 of 150. Five rounds here (about a second each: a client's SYN
/// dropped at the stop is retried after a second, and refused);
/// `HATOBA_STOP_ROUNDS=150 cargo test -p hatoba-proxy --test it
/// stops_under_load -- --nocapture` measures more. Bounded: rounds (at most
/// 200) and 20 s of load a round at most.
#[test]
fn stops_under_load_cut_nothing() {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let rounds: u64 = std::env::var("HATOBA_STOP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .min(200);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(InProcess::start("v1", |_| {}));
    let (mut cut_rounds, mut cut_total, mut answered_total) = (0u64, 0u64, 0u64);
    for round in 0..rounds {
        let proxy = hatoba_proxy::ProxyServer::start(
            "127.0.0.1:0".parse().unwrap(),
            std::sync::Arc::new(
                hatoba_proxy::Router::new(
                    spec(vec![group(Role::Stable, "v1", 100, &[backend.addr])]),
                    std::sync::Arc::new(hatoba_metrics::Recorder::new()),
                )
                .unwrap(),
            ),
            ProxyOptions::default(),
            2,
        )
        .unwrap();
        let addr = proxy.local_addr();
        let refused = std::sync::Arc::new(AtomicBool::new(false));
        let answered = std::sync::Arc::new(AtomicU64::new(0));
        let cuts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let started = std::time::Instant::now();
        let clients: Vec<_> = (0..6)
            .map(|_| {
                let (refused, answered, cuts) = (
                    std::sync::Arc::clone(&refused),
                    std::sync::Arc::clone(&answered),
                    std::sync::Arc::clone(&cuts),
                );
                std::thread::spawn(move || {
                    while !refused.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(20)
                    {
                        let mut s = match std::net::TcpStream::connect(addr) {
                            Ok(s) => s,
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                refused.store(true, Ordering::Relaxed);
                                break;
                            }
                            Err(e) => {
                                cuts.lock().unwrap().push(format!("connecting: {e}"));
                                continue;
                            }
                        };
                        let mut out = Vec::new();
                        let got = s
                            .set_read_timeout(Some(Duration::from_secs(10)))
                            .and_then(|()| {
                                s.write_all(
                                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                )
                            })
                            .and_then(|()| s.read_to_end(&mut out));
                        match got {
                            Ok(_) if out.starts_with(b"HTTP/1.1 200") => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => cuts.lock().unwrap().push(format!(
                                "answer: {:?}",
                                String::from_utf8_lossy(&out[..out.len().min(40)])
                            )),
                            Err(e) => cuts.lock().unwrap().push(format!("{e}")),
                        }
                    }
                })
            })
            .collect();
        // Load first, so the stop meets connections at every stage.
        hatoba_test_support::wait_for(Duration::from_secs(20), || {
            answered.load(Ordering::Relaxed) >= 200
        })
        .expect("the proxy answers under load");
        proxy.shutdown();
        for c in clients {
            c.join().unwrap();
        }
        let cuts = cuts.lock().unwrap().clone();
        let n = answered.load(Ordering::Relaxed);
        println!(
            "round {round}: {n} answered, {} cut {:?}",
            cuts.len(),
            cuts.first()
        );
        answered_total += n;
        if !cuts.is_empty() {
            cut_rounds += 1;
            cut_total += cuts.len() as u64;
        }
    }
    println!(
        "{rounds} stops under load: {cut_rounds} with a cut, {cut_total} cut in all, {answered_total} answered"
    );
    rt.block_on(backend.stop());
    assert_eq!(cut_total, 0, "{cut_rounds} of {rounds} stops cut a request");
}
