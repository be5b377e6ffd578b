//! The supervisor's claims, as traces of (time, action) on a fake runtime
//! and a fake data plane with a paused clock (see `fake.rs`): an exited
//! instance is restarted with back-off 0, 1 s, 2 s, 4 s ... capped at 60 s;
//! five restarts within five minutes are a crash loop, which clears once
//! they leave the window; an instance failing readiness `failureThreshold`
//! times leaves the route table and comes back after `successThreshold`
//! passes; a liveness failure restarts the instance, out of the table first,
//! and a restart puts no unready instance back in the table; a runtime that
//! cannot list its instances is the service's problem until it can, and
//! restarts nothing; a rollout that no round saw running is taken over all
//! the same (its new instances stay routed); usage is sampled beside the
//! rounds, never in them.
//!
//! Not here: a probe that fails for the controller's own shortage
//! (`ProbeFailure::Controller`). Its only honest triggers are process-wide
//! (out of file descriptors, memory, local ports); starving this test
//! binary would break the tests running beside it. `Readiness` is checked
//! against it directly (`probe::a_probe_the_controller_could_not_make_changes_nothing`).

use crate::fake::{Action, Harness, spec};
use hatoba_runtime::InstanceId;

const READY_ONLY: &str = "      readiness: {path: /ready, period: 1s, timeout: 1s, successThreshold: 1, failureThreshold: 1}";

fn id(s: &str) -> InstanceId {
    InstanceId(s.to_owned())
}

/// The starts and stops of a trace.
fn runtime_calls(trace: &[(u64, Action)]) -> Vec<(u64, Action)> {
    trace
        .iter()
        .filter(|(_, a)| !matches!(a, Action::Route(_)))
        .cloned()
        .collect()
}

/// The route tables of a trace, each only where it differs from the one
/// before.
fn tables(trace: &[(u64, Action)]) -> Vec<(u64, Vec<std::net::SocketAddr>)> {
    let mut out: Vec<(u64, Vec<std::net::SocketAddr>)> = Vec::new();
    for (t, a) in trace {
        if let Action::Route(b) = a
            && out.last().is_none_or(|(_, last)| last != b)
        {
            out.push((*t, b.clone()));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn an_exited_instance_is_restarted_with_exponential_back_off_capped_at_a_minute() {
    let h = Harness::start(spec(1, READY_ONLY)).await;
    let first = h.runtime.running()[0].clone();
    assert_eq!(first.id, id("web-v1-0"));
    // From now on every replacement dies at once, so the supervisor keeps
    // restarting.
    h.runtime.crash_on_start(Some(3));
    h.runtime.exit(&first.id, 3);
    h.step_to(200).await;
    let calls = runtime_calls(&h.trace.since(h.t0));
    let mut expected = vec![(0, Action::Start("web-v1-0".to_owned()))];
    // Noticed at the next round (1 s) and restarted at once; then each
    // replacement waits 1, 2, 4, 8, 16, 32 s, and 60 s from then on.
    let at = [1, 2, 4, 8, 16, 32, 64, 124, 184];
    for (n, t) in at.iter().enumerate() {
        expected.push((*t, Action::Stop(format!("web-v1-{n}"))));
        expected.push((*t, Action::Start(format!("web-v1-{}", n + 1))));
    }
    assert_eq!(calls, expected);
}

#[tokio::test(start_paused = true)]
async fn five_restarts_within_five_minutes_are_a_crash_loop_until_they_leave_the_window() {
    let h = Harness::start(spec(1, READY_ONLY)).await;
    let api = h.api().await;
    h.runtime.crash_on_start(Some(1));
    h.runtime.exit(&id("web-v1-0"), 1);
    // Restarts at 1, 2, 4 and 8 s: four, no crash loop yet.
    h.step_to(15).await;
    let d = h.service_detail(api).await;
    assert_eq!((d.recent_restarts, d.crash_loop), (4, false), "{d:?}");
    // The next is due 8 s after the one at 8 s, and says so.
    let due = hatoba_core::Millis(h.t0.0 + 16_000).to_rfc3339();
    assert_eq!(d.next_restart.as_deref(), Some(due.as_str()), "{d:?}");
    // The fifth, at 16 s, makes it one.
    h.step_to(16).await;
    let d = h.service_detail(api).await;
    assert_eq!((d.recent_restarts, d.crash_loop), (5, true), "{d:?}");
    // The sixth (at 32 s) starts an instance that stays up.
    h.runtime.crash_on_start(None);
    h.step_to(40).await;
    assert_eq!(h.runtime.running().len(), 1);
    assert_eq!(h.runtime.running()[0].id, id("web-v1-6"));
    // Restarts at 2, 4, 8, 16 and 32 s are still within five minutes at
    // 301 s; at 302 s the one at 2 s has left the window.
    h.step_to(301).await;
    let d = h.service_detail(api).await;
    assert_eq!((d.recent_restarts, d.crash_loop), (5, true), "{d:?}");
    h.step_to(302).await;
    let d = h.service_detail(api).await;
    assert_eq!((d.recent_restarts, d.crash_loop), (4, false), "{d:?}");
    h.step_to(400).await;
    let d = h.service_detail(api).await;
    assert_eq!((d.recent_restarts, d.crash_loop), (0, false), "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unready_instance_leaves_the_route_table_and_returns_after_its_passes() {
    let health = "      readiness: {path: /ready, period: 1s, timeout: 1s, successThreshold: 2, failureThreshold: 3}";
    let h = Harness::start(spec(2, health)).await;
    let [a, b] = [
        h.runtime.running()[0].clone(),
        h.runtime.running()[1].clone(),
    ];
    let mut both = vec![a.addr, b.addr];
    both.sort_unstable();
    // Started again at 0 s, passed once at 0 s and twice at 1 s: routed.
    h.step_to(2).await;
    h.runtime.set_ready(&a.id, 503);
    // Fails at 3, 4 and 5 s: out at the third.
    h.step_to(8).await;
    h.runtime.set_ready(&a.id, 200);
    // Passes at 9 and 10 s: back at the second.
    h.step_to(12).await;
    assert_eq!(
        tables(&h.trace.since(h.t0)),
        vec![
            (0, vec![]),
            (1, both.clone()),
            (5, vec![b.addr]),
            (10, both)
        ]
    );
    // Nothing was restarted for it.
    assert_eq!(runtime_calls(&h.trace.since(h.t0)).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_restarts_the_instance_out_of_the_table_first() {
    let health = "      readiness: {path: /ready, period: 1s, timeout: 1s, successThreshold: 1, failureThreshold: 1}
      liveness: {path: /live, period: 1s, timeout: 1s, failureThreshold: 2}";
    let h = Harness::start(spec(1, health)).await;
    let a = h.runtime.running()[0].clone();
    h.step_to(1).await;
    h.runtime.set_live(&a.id, 500);
    // Fails at 2 and 3 s: restarted at the second.
    h.step_to(5).await;
    let b = h.runtime.running()[0].clone();
    assert_eq!(b.id, id("web-v1-1"));
    let trace: Vec<(u64, Action)> = h
        .trace
        .since(h.t0)
        .into_iter()
        .filter(|(t, _)| *t >= 1)
        .collect();
    assert_eq!(
        trace,
        vec![
            // Taken out of the table, then stopped, then replaced.
            (3, Action::Route(vec![])),
            (3, Action::Stop(a.id.0.clone())),
            (3, Action::Start(b.id.0.clone())),
            // The round's own table: the replacement is not ready yet.
            (3, Action::Route(vec![])),
            // The replacement is routed once its readiness passes.
            (4, Action::Route(vec![b.addr])),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn restarting_one_instance_puts_no_unready_one_back_in_the_table() {
    let h = Harness::start(spec(2, READY_ONLY)).await;
    let [a, b] = [
        h.runtime.running()[0].clone(),
        h.runtime.running()[1].clone(),
    ];
    h.step_to(1).await;
    // `a` fails readiness at 2 s and leaves the table.
    h.runtime.set_ready(&a.id, 503);
    h.step_to(2).await;
    // `b` exits: restarted at 3 s, while `a` is still not ready.
    h.runtime.exit(&b.id, 1);
    h.step_to(5).await;
    let c = h.runtime.running()[1].clone();
    assert_eq!(c.id, id("web-v1-2"));
    let mut both = vec![a.addr, b.addr];
    both.sort_unstable();
    assert_eq!(
        tables(&h.trace.since(h.t0)),
        vec![
            (0, vec![]),
            (0, both),
            (2, vec![b.addr]),
            // Out of the table, and `a` not back in it.
            (3, vec![]),
            (4, vec![c.addr]),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_runtime_that_cannot_list_is_a_problem_not_a_crash_of_everything() {
    let h = Harness::start(spec(2, READY_ONLY)).await;
    let api = h.api().await;
    let [a, b] = [
        h.runtime.running()[0].clone(),
        h.runtime.running()[1].clone(),
    ];
    let mut both = vec![a.addr, b.addr];
    both.sort_unstable();
    h.step_to(1).await;
    h.runtime.fail_list(Some("/proc: permission denied"));
    h.step_to(5).await;
    let d = h.service_detail(api).await;
    assert_eq!(
        d.problem.as_deref(),
        Some(
            "the runtime cannot list the instances (cannot inspect the machine: /proc: permission denied): nothing is restarted until it can"
        ),
        "{d:?}"
    );
    assert_eq!((d.recent_restarts, d.crash_loop), (0, false), "{d:?}");
    // Listing works again: the problem is gone, and so is nothing else.
    h.runtime.fail_list(None);
    h.step_to(7).await;
    let d = h.service_detail(api).await;
    assert_eq!(d.problem, None, "{d:?}");
    let trace = h.trace.since(h.t0);
    // Nothing was stopped or started but the two first instances, and
    // both stayed in the table throughout.
    assert_eq!(runtime_calls(&trace).len(), 2, "{trace:?}");
    assert_eq!(tables(&trace), vec![(0, vec![]), (0, both)]);
}

/// A rollout that starts and ends between two of the supervisor's rounds
/// (a short one, or a loaded machine that runs the supervisor late) hands
/// over all the same: the supervisor's next round routes the new version's
/// instances the rollout left routed, never an empty table because its
/// policy still watches the old ones and has never probed the new.
#[tokio::test(start_paused = true)]
async fn a_rollout_between_two_rounds_is_handed_over_without_an_empty_table() {
    let health = "      readiness: {path: /ready, period: 1s, timeout: 1s, successThreshold: 1, failureThreshold: 3}";
    let h = Harness::start(spec(1, health)).await;
    let api = h.api().await;
    let a = h.runtime.running()[0].clone();
    h.step_to(1).await;
    // The whole rolling update runs at one instant of the paused clock:
    // no supervisor round sees it live.
    let (code, body) = crate::fake::call(
        api,
        "POST",
        "/api/v1/deployments",
        Some(&h.token),
        br#"{"service": "web", "version": "v2"}"#,
    )
    .await;
    assert!(code < 300, "{code} {body}");
    let start = std::time::Instant::now();
    loop {
        let d = h.service_detail(api).await;
        if d.live_deployment.is_none() && d.serving_version.as_deref() == Some("v2") {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the rollout did not end: {d:?}"
        );
        tokio::task::yield_now().await;
    }
    let b = h.runtime.running()[0].clone();
    assert_eq!(b.id, id("web-v2-1"));
    // Rounds at 2 and 3 s after the rollout.
    h.step_to(3).await;
    assert_eq!(
        tables(&h.trace.since(h.t0)),
        vec![
            (0, vec![]),
            (0, vec![a.addr]),
            // The rollout moves the traffic onto the new instance once ready.
            (1, vec![b.addr]),
            // The supervisor's rounds at 2 and 3 s keep it there: no
            // empty table from a policy that never watched it.
        ]
    );
    // Nothing restarted for the old instance the rollout stopped.
    assert_eq!(
        runtime_calls(&h.trace.since(h.t0)),
        vec![
            (0, Action::Start(a.id.0.clone())),
            (1, Action::Start(b.id.0.clone())),
            (1, Action::Stop(a.id.0.clone())),
        ]
    );
}

/// Docker's stats API takes about a second per container: the usage is
/// sampled beside the rounds, so a round (which holds the service's
/// operations lock a deploy or rollback waits for) never waits for it,
/// and the API still shows it. Were a round to wait for a sample, it
/// would not end here: the clock only moves between rounds.
#[tokio::test(start_paused = true)]
async fn usage_is_sampled_beside_the_rounds_never_in_them() {
    let h = Harness::start(spec(2, READY_ONLY)).await;
    let api = h.api().await;
    h.runtime.slow_usage(std::time::Duration::from_secs(1));
    h.step_to(6).await;
    let detail = h.service_detail(api).await;
    assert_eq!(detail.instances.len(), 2, "{detail:?}");
    for i in &detail.instances {
        assert_eq!(i.rss_bytes, Some(42 << 20), "{detail:?}");
        assert_eq!(i.cpu_seconds, Some(1.5), "{detail:?}");
    }
}
