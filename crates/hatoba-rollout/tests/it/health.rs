//! The health policy on a simulated clock: a scripted world of instances
//! (what each one's probes answer, whether it exited) and a driver that
//! runs the machine's rounds against it and renders its decisions with the
//! time. `UPDATE_EXPECT=1` accepts changes. Then properties over random
//! worlds: the back-off never shrinks while restarts stay in the window and
//! never exceeds its maximum, a restart always follows a death, a crash
//! loop is exactly "at least N restarts in the window", and a runtime that
//! cannot list makes nothing restart.
//!
//! Script lines: `TIME WORD ...` with
//! `add ID [ready] [new]`, `remove ID`, `remove-all`, `round`, `rounds EVERY UNTIL`,
//! `ready ID pass|refused|notmade|fail WHY`, `live ID pass|notmade|fail WHY`,
//! `exit ID WHY`, `crash-on-start on|off`, `start-fails on|off`,
//! `list-fails WHY`, `list-works`, `tick`.

use expect_test::{Expect, expect};
use hatoba_core::{Millis, format_duration, parse_duration};
use hatoba_rollout::health::{
    Check, Death, Decision, Health, HealthPlan, Listed, Observation, ProbePlan, ProbeResult,
    RestartPolicy,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

struct Inst {
    ready: ProbeResult,
    live: ProbeResult,
    exited: Option<String>,
}

#[derive(Default)]
struct World {
    insts: BTreeMap<String, Inst>,
    next: u32,
    crash_on_start: bool,
    start_fails: bool,
    list_fails: Option<String>,
}

impl World {
    fn add(&mut self, id: &str) {
        self.insts.insert(
            id.to_owned(),
            Inst {
                ready: ProbeResult::Pass,
                live: ProbeResult::Pass,
                exited: None,
            },
        );
    }
}

struct Driver {
    m: Health,
    world: World,
    out: String,
    show_probes: bool,
    /// (time, restarted id) of every restart, for the properties.
    restarts: Vec<(u64, String)>,
    /// Ids the world has seen die (exit or a failed liveness probe).
    deaths: Vec<String>,
    /// Ids whose liveness probe failed.
    live_deaths: Vec<String>,
}

fn at(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

fn death(d: &Death) -> String {
    match d {
        Death::Exited(why) => why.clone(),
        Death::Liveness { failures, last } => format!("liveness failed {failures}x ({last})"),
    }
}

fn fail(why: &str) -> ProbeResult {
    ProbeResult::Fail {
        why: why.to_owned(),
        refused: false,
    }
}

impl Driver {
    fn new(plan: HealthPlan, show_probes: bool) -> Driver {
        Driver {
            m: Health::new(plan),
            world: World::default(),
            out: String::new(),
            show_probes,
            restarts: Vec::new(),
            deaths: Vec::new(),
            live_deaths: Vec::new(),
        }
    }

    fn line(&mut self, now: u64, text: &str) {
        self.out.push_str(&format!("{:<8}{text}\n", at(now)));
    }

    fn round(&mut self, now: u64) {
        let obs = match &self.world.list_fails {
            Some(why) => Observation::ListFailed(why.clone()),
            None => Observation::Listed(
                self.world
                    .insts
                    .iter()
                    .map(|(id, i)| Listed {
                        id: id.clone(),
                        exited: i.exited.clone(),
                    })
                    .collect(),
            ),
        };
        self.m.handle(Millis(now), obs);
        self.drain(now);
    }

    fn drain(&mut self, now: u64) {
        while let Some(d) = self.m.poll_action() {
            match d {
                Decision::Probe { id, check } => {
                    let Some(inst) = self.world.insts.get(&id) else {
                        panic!("probe of {id}, which the world does not have");
                    };
                    let result = match (check, &inst.exited) {
                        (_, Some(_)) => ProbeResult::Fail {
                            why: "connection refused".to_owned(),
                            refused: true,
                        },
                        (Check::Readiness, None) => inst.ready.clone(),
                        (Check::Liveness, None) => inst.live.clone(),
                    };
                    if self.show_probes {
                        let what = match check {
                            Check::Readiness => "ready",
                            Check::Liveness => "live",
                        };
                        let res = match &result {
                            ProbeResult::Pass => "pass".to_owned(),
                            ProbeResult::Fail { why, .. } => format!("fail: {why}"),
                            ProbeResult::NotMade => "not made".to_owned(),
                        };
                        self.line(now, &format!("probe {what} {id}: {res}"));
                    }
                    if check == Check::Liveness && matches!(result, ProbeResult::Fail { .. }) {
                        self.deaths.push(id.clone());
                        self.live_deaths.push(id.clone());
                    }
                    self.m
                        .handle(Millis(now), Observation::Probed { id, check, result });
                }
                Decision::Route { id, ready } => {
                    let verb = if ready { "route" } else { "unroute" };
                    self.line(now, &format!("{verb} {id}"));
                }
                Decision::Restart {
                    id,
                    why,
                    count,
                    crash_loop,
                } => {
                    self.restarts.push((now, id.clone()));
                    let looping = if crash_loop { ", crash loop" } else { "" };
                    let text = format!("restart {id} ({}) #{count}{looping}", death(&why));
                    if self.world.start_fails {
                        self.line(now, &format!("{text}: start failed"));
                        self.world.insts.remove(&id);
                        self.m.handle(Millis(now), Observation::RestartFailed(id));
                        continue;
                    }
                    self.world.next += 1;
                    let new = format!("r{}", self.world.next);
                    self.line(now, &format!("{text} as {new}"));
                    self.world.insts.remove(&id);
                    self.world.add(&new);
                    if self.world.crash_on_start
                        && let Some(i) = self.world.insts.get_mut(&new)
                    {
                        i.exited = Some("exited with code 1".to_owned());
                        self.deaths.push(new.clone());
                    }
                    self.m.handle(
                        Millis(now),
                        Observation::Restarted {
                            old: id,
                            new,
                            started_at: Millis(now),
                        },
                    );
                }
                Decision::CrashLoopOver => self.line(now, "crash loop over"),
                Decision::NewVersionFailed { id, why } => {
                    self.line(now, &format!("new version failed: {id} {}", death(&why)));
                }
                Decision::ListingFailed(why) => self.line(now, &format!("listing failed: {why}")),
                Decision::ListingRecovered => self.line(now, "listing works again"),
            }
        }
    }

    fn step(&mut self, now: u64, words: &[&str]) {
        self.m.handle_timeout(Millis(now));
        self.drain(now);
        let probe = |w: &[&str]| match w {
            ["pass"] => ProbeResult::Pass,
            ["refused"] => ProbeResult::Fail {
                why: "connection refused".to_owned(),
                refused: true,
            },
            ["notmade"] => ProbeResult::NotMade,
            ["fail", why @ ..] => fail(&why.join(" ")),
            _ => panic!("bad probe result {w:?}"),
        };
        match words {
            ["add", id, flags @ ..] => {
                self.world.add(id);
                self.m.handle(
                    Millis(now),
                    Observation::Added {
                        id: (*id).to_owned(),
                        started_at: Millis(now),
                        ready: flags.contains(&"ready"),
                        new: flags.contains(&"new"),
                    },
                );
            }
            ["remove", id] => {
                self.world.insts.remove(*id);
                self.m
                    .handle(Millis(now), Observation::Removed((*id).to_owned()));
            }
            ["remove-all"] => {
                self.world.insts.clear();
                self.m.handle(Millis(now), Observation::AllRemoved);
            }
            ["round"] => self.round(now),
            ["ready", id, rest @ ..] => {
                self.world.insts.get_mut(*id).unwrap().ready = probe(rest);
            }
            ["live", id, rest @ ..] => {
                self.world.insts.get_mut(*id).unwrap().live = probe(rest);
            }
            ["exit", id, why @ ..] => {
                self.world.insts.get_mut(*id).unwrap().exited = Some(why.join(" "));
                self.deaths.push((*id).to_owned());
            }
            ["crash-on-start", on] => self.world.crash_on_start = *on == "on",
            ["start-fails", on] => self.world.start_fails = *on == "on",
            ["list-fails", why @ ..] => self.world.list_fails = Some(why.join(" ")),
            ["list-works"] => self.world.list_fails = None,
            ["tick"] => {}
            _ => panic!("bad script line {words:?}"),
        }
        self.drain(now);
    }

    fn run(&mut self, script: &str) {
        for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let now = ms(words[0]);
            if let ["rounds", every, until] = &words[1..] {
                let (every, until) = (ms(every), ms(until));
                let mut t = now;
                while t <= until {
                    self.step(t, &["round"]);
                    t += every;
                }
                continue;
            }
            self.step(now, &words[1..]);
        }
    }
}

fn ms(text: &str) -> u64 {
    u64::try_from(parse_duration(text).unwrap().as_millis()).unwrap()
}

fn probe_plan(success: u32, failure: u32) -> ProbePlan {
    ProbePlan {
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(1),
        success_threshold: success,
        failure_threshold: failure,
    }
}

fn serving(readiness: Option<ProbePlan>, liveness: Option<ProbePlan>) -> HealthPlan {
    HealthPlan {
        readiness,
        liveness,
        restarts: RestartPolicy::BETWEEN_ROLLOUTS,
    }
}

fn rollout(liveness: Option<ProbePlan>) -> HealthPlan {
    HealthPlan {
        readiness: Some(probe_plan(1, 1)),
        liveness,
        restarts: RestartPolicy::DURING_ROLLOUT,
    }
}

fn check(plan: HealthPlan, script: &str, expect: Expect) {
    let mut d = Driver::new(plan, false);
    d.run(script);
    expect.assert_eq(&d.out);
}

fn check_probes(plan: HealthPlan, script: &str, expect: Expect) {
    let mut d = Driver::new(plan, true);
    d.run(script);
    expect.assert_eq(&d.out);
}

#[test]
fn readiness_streaks_route_and_unroute() {
    check(
        serving(Some(probe_plan(2, 3)), None),
        "0s add a
         0s add b ready
         0s rounds 1s 2s
         3s ready a fail answered 503
         3s rounds 1s 6s
         7s ready a pass
         7s rounds 1s 9s",
        expect![[r#"
            1s      route a
            5s      unroute a
            8s      route a
        "#]],
    );
}

#[test]
fn a_probe_the_controller_could_not_make_changes_nothing() {
    check(
        serving(Some(probe_plan(1, 1)), Some(probe_plan(1, 1))),
        "0s add a ready
         0s ready a notmade
         0s live a notmade
         0s rounds 1s 5s
         6s add b
         6s ready b notmade
         6s rounds 1s 8s
         9s ready b pass
         9s round",
        expect![[r#"
            9s      route b
        "#]],
    );
}

#[test]
fn an_exit_restarts_with_back_off_doubling_to_a_minute() {
    check(
        serving(Some(probe_plan(1, 1)), None),
        "0s add a ready
         0s round
         0s crash-on-start on
         0s exit a exited with code 3
         1s rounds 1s 200s",
        expect![[r#"
            1s      unroute a
            1s      restart a (exited with code 3) #1 as r1
            2s      restart r1 (exited with code 1) #2 as r2
            4s      restart r2 (exited with code 1) #3 as r3
            8s      restart r3 (exited with code 1) #4 as r4
            16s     restart r4 (exited with code 1) #5, crash loop as r5
            32s     restart r5 (exited with code 1) #6 as r6
            1m4s    restart r6 (exited with code 1) #7 as r7
            2m4s    restart r7 (exited with code 1) #8 as r8
            3m4s    restart r8 (exited with code 1) #9 as r9
        "#]],
    );
}

#[test]
fn a_crash_loop_is_over_when_its_restarts_leave_the_window() {
    let plan = serving(Some(probe_plan(1, 1)), None);
    let mut d = Driver::new(plan, false);
    d.run(
        "0s add a ready
         0s crash-on-start on
         0s exit a exited with code 1
         1s rounds 1s 16s",
    );
    assert_eq!((d.m.restarts(), d.m.crash_loop()), (5, true));
    d.run(
        "17s crash-on-start off
         17s rounds 1s 40s",
    );
    // Restarts at 1, 2, 4, 8, 16 and 32 s; the one at 1 s left at 301 s.
    assert_eq!((d.m.restarts(), d.m.crash_loop()), (6, true));
    d.run("5m1s tick");
    assert_eq!((d.m.restarts(), d.m.crash_loop()), (5, true));
    d.run("5m2s tick");
    assert_eq!((d.m.restarts(), d.m.crash_loop()), (4, false));
    expect![[r#"
        1s      unroute a
        1s      restart a (exited with code 1) #1 as r1
        2s      restart r1 (exited with code 1) #2 as r2
        4s      restart r2 (exited with code 1) #3 as r3
        8s      restart r3 (exited with code 1) #4 as r4
        16s     restart r4 (exited with code 1) #5, crash loop as r5
        32s     restart r5 (exited with code 1) #6 as r6
        33s     route r6
        5m2s    crash loop over
    "#]]
    .assert_eq(&d.out);
}

#[test]
fn restarts_carry_over_to_the_next_set_of_instances() {
    check(
        serving(Some(probe_plan(1, 1)), None),
        "0s add a ready
         0s crash-on-start on
         0s exit a exited with code 1
         1s rounds 1s 4s
         5s remove-all
         5s crash-on-start off
         5s add b ready
         5s exit b exited with code 1
         6s rounds 1s 10s",
        expect![[r#"
            1s      unroute a
            1s      restart a (exited with code 1) #1 as r1
            2s      restart r1 (exited with code 1) #2 as r2
            4s      restart r2 (exited with code 1) #3 as r3
            6s      unroute b
            8s      restart b (exited with code 1) #4 as r4
            9s      route r4
        "#]],
    );
}

#[test]
fn the_next_restart_is_known_while_the_back_off_runs() {
    let mut d = Driver::new(serving(None, None), false);
    d.run(
        "0s add a ready
         0s crash-on-start on
         0s exit a exited with code 1
         1s rounds 1s 3s",
    );
    // Restarts at 1 and 2 s: the third waits 2 s after the second.
    assert_eq!(d.m.next_restart(), Some(Millis(4_000)));
    assert_eq!(d.m.poll_timeout(), Some(Millis(4_000)));
    assert_eq!(d.m.backoff(), Duration::from_secs(2));
}

#[test]
fn a_failed_liveness_probe_restarts_out_of_the_table_first() {
    check_probes(
        serving(Some(probe_plan(1, 1)), Some(probe_plan(1, 2))),
        "0s add a ready
         0s round
         1s live a fail answered 500
         1s rounds 1s 3s",
        expect![[r#"
            0s      probe live a: pass
            0s      probe ready a: pass
            1s      probe live a: fail: answered 500
            1s      probe ready a: pass
            2s      probe live a: fail: answered 500
            2s      unroute a
            2s      restart a (liveness failed 2x (answered 500)) #1 as r1
            3s      probe live r1: pass
            3s      probe ready r1: pass
            3s      route r1
        "#]],
    );
}

#[test]
fn liveness_waits_for_its_initial_delay_and_keeps_its_period() {
    let live = ProbePlan {
        initial_delay: Duration::from_secs(2),
        period: Duration::from_secs(2),
        success_threshold: 1,
        failure_threshold: 1,
    };
    check_probes(
        serving(None, Some(live)),
        "0s add a ready
         0s rounds 1s 5s",
        expect![[r#"
            0s      probe ready a: pass
            1s      probe ready a: pass
            2s      probe live a: pass
            2s      probe ready a: pass
            3s      probe ready a: pass
            4s      probe live a: pass
            4s      probe ready a: pass
            5s      probe ready a: pass
        "#]],
    );
}

#[test]
fn a_round_a_little_late_then_on_time_still_probes_liveness() {
    check_probes(
        serving(None, Some(probe_plan(1, 1))),
        "0s add a ready
         50ms round
         1s round
         2s round",
        expect![[r#"
            50ms    probe live a: pass
            50ms    probe ready a: pass
            1s      probe live a: pass
            1s      probe ready a: pass
            2s      probe live a: pass
            2s      probe ready a: pass
        "#]],
    );
}

#[test]
fn alive_again_before_the_back_off_ends_is_not_restarted() {
    check(
        serving(Some(probe_plan(1, 1)), Some(probe_plan(1, 1))),
        "0s add a ready
         0s crash-on-start on
         0s exit a exited with code 1
         1s round
         1500ms crash-on-start off
         2s round
         3s live r2 fail answered 500
         3s round
         3s live r2 pass
         4s rounds 1s 10s",
        expect![[r#"
            1s      unroute a
            1s      restart a (exited with code 1) #1 as r1
            2s      restart r1 (exited with code 1) #2 as r2
            4s      route r2
        "#]],
    );
}

#[test]
fn during_a_rollout_stable_restarts_are_capped_and_new_instances_are_reported() {
    check(
        rollout(Some(probe_plan(1, 2))),
        "0s add s1 ready
         0s add n1 new
         0s round
         1s exit s1 exited with code 2
         1s rounds 500ms 2s
         3s live n1 fail answered 500
         3s rounds 1s 6s",
        expect![[r#"
            0s      route n1
            1s      unroute s1
            1s      restart s1 (exited with code 2) #1 as r1
            1s500ms route r1
            4s      unroute n1
            4s      new version failed: n1 liveness failed 2x (answered 500)
        "#]],
    );
}

#[test]
fn during_a_rollout_five_stable_restarts_at_most_and_no_back_off() {
    check(
        rollout(None),
        "0s add s1 ready
         0s crash-on-start on
         0s exit s1 exited with code 2
         1s rounds 1s 8s",
        expect![[r#"
            1s      unroute s1
            1s      restart s1 (exited with code 2) #1 as r1
            2s      restart r1 (exited with code 1) #2 as r2
            3s      restart r2 (exited with code 1) #3 as r3
            4s      restart r3 (exited with code 1) #4 as r4
            5s      restart r4 (exited with code 1) #5 as r5
        "#]],
    );
}

#[test]
fn a_new_instance_that_exits_is_reported_once_and_never_restarted() {
    check(
        rollout(None),
        "0s add n1 new
         0s round
         1s exit n1 exited with code 1
         1s rounds 1s 4s",
        expect![[r#"
            0s      route n1
            1s      unroute n1
            1s      new version failed: n1 exited with code 1
        "#]],
    );
}

#[test]
fn an_instance_missing_from_the_list_is_gone() {
    check(
        serving(None, None),
        "0s add a ready
         0s add b ready
         1s remove b
         1s round
         2s add c
         2s round",
        expect![[r#"
            2s      route c
        "#]],
    );
    let mut d = Driver::new(serving(None, None), false);
    d.run("0s add a ready");
    d.world.insts.clear();
    d.run("1s round");
    expect![[r#"
        1s      unroute a
        1s      restart a (is gone) #1 as r1
    "#]]
    .assert_eq(&d.out);
}

#[test]
fn a_runtime_that_cannot_list_is_reported_and_restarts_nothing() {
    check_probes(
        serving(Some(probe_plan(1, 1)), None),
        "0s add a ready
         0s add b ready
         1s list-fails cannot read /proc: permission denied
         1s rounds 1s 3s
         4s list-works
         4s round",
        expect![[r#"
            1s      listing failed: cannot read /proc: permission denied
            1s      probe ready a: pass
            1s      probe ready b: pass
            2s      probe ready a: pass
            2s      probe ready b: pass
            3s      probe ready a: pass
            3s      probe ready b: pass
            4s      listing works again
            4s      probe ready a: pass
            4s      probe ready b: pass
        "#]],
    );
}

#[test]
fn a_restart_that_cannot_start_is_tried_again_after_the_back_off() {
    check(
        serving(None, None),
        "0s add a ready
         0s start-fails on
         0s exit a exited with code 1
         1s rounds 1s 4s",
        expect![[r#"
            1s      unroute a
            1s      restart a (exited with code 1) #1: start failed
            2s      restart a (is gone) #2: start failed
            4s      restart a (is gone) #3: start failed
        "#]],
    );
}

#[test]
fn the_machine_is_saved_and_resumed_as_is() {
    let mut d = Driver::new(serving(None, None), false);
    d.run(
        "0s add a ready
         0s crash-on-start on
         0s exit a exited with code 1
         1s rounds 1s 2s",
    );
    let text = serde_json::to_string(&d.m).unwrap();
    let back: Health = serde_json::from_str(&text).unwrap();
    assert_eq!(back.restarts(), 2);
    assert_eq!(back.next_restart(), d.m.next_restart());
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
}

/// One random event of a world with two instances.
#[derive(Clone, Debug)]
enum Event {
    Exit(usize),
    LiveFails(usize, bool),
    ReadyFails(usize, bool),
    CrashOnStart(bool),
    ListFails(bool),
    Wait(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..2usize).prop_map(Event::Exit),
        (0..2usize, any::<bool>()).prop_map(|(i, f)| Event::LiveFails(i, f)),
        (0..2usize, any::<bool>()).prop_map(|(i, f)| Event::ReadyFails(i, f)),
        any::<bool>().prop_map(Event::CrashOnStart),
        any::<bool>().prop_map(Event::ListFails),
        (1..90_000u64).prop_map(Event::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn restarts_follow_the_policy(events in proptest::collection::vec(event(), 1..120)) {
        let plan = serving(Some(probe_plan(1, 2)), Some(probe_plan(1, 2)));
        let RestartPolicy::BackOff { max, window, crash_loop, .. } = plan.restarts else {
            unreachable!()
        };
        let mut d = Driver::new(plan, false);
        d.run("0s add a ready\n0s add b ready");
        let mut now = 0u64;
        let mut last_backoff = Duration::ZERO;
        let mut last_window: Vec<u64> = Vec::new();
        let mut seen = 0usize;
        let mut list_failing = false;
        for e in events {
            // Whatever the world holds now, by position.
            let ids: Vec<String> = d.world.insts.keys().cloned().collect();
            let pick = |i: usize| ids.get(i % ids.len().max(1)).cloned();
            match e {
                Event::Exit(i) => if let Some(id) = pick(i) {
                    d.step(now, &["exit", &id, "exited", "with", "code", "1"]);
                },
                Event::LiveFails(i, f) => if let Some(id) = pick(i) {
                    let r = if f { ProbeResult::Fail { why: "500".into(), refused: false } } else { ProbeResult::Pass };
                    d.world.insts.get_mut(&id).unwrap().live = r;
                },
                Event::ReadyFails(i, f) => if let Some(id) = pick(i) {
                    let r = if f { fail("503") } else { ProbeResult::Pass };
                    d.world.insts.get_mut(&id).unwrap().ready = r;
                },
                Event::CrashOnStart(on) => d.world.crash_on_start = on,
                Event::ListFails(on) => {
                    list_failing = on;
                    d.world.list_fails = on.then(|| "no".to_owned());
                }
                Event::Wait(ms) => {
                    // Rounds every second through the wait.
                    let until = now + ms;
                    while now + 1000 <= until {
                        now += 1000;
                        let before = d.restarts.len();
                        d.step(now, &["round"]);
                        if list_failing {
                            // Only a failed liveness probe may restart
                            // while listing fails.
                            for (_, id) in &d.restarts[before..] {
                                prop_assert!(d.live_deaths.contains(id));
                            }
                        }
                        prop_assert_eq!(d.m.listing_problem().is_some(), list_failing);
                    }
                    now = until;
                    d.step(now, &["tick"]);
                }
            }
            // Every restart is of an instance that died.
            for (_, id) in &d.restarts[seen..] {
                prop_assert!(d.deaths.contains(id), "restart of {} which never died", id);
            }
            // The back-off: counted restarts inside the window only, never
            // above the maximum, never shorter while restarts only grow.
            let in_window: Vec<u64> = d.restarts.iter().map(|(t, _)| *t)
                .filter(|t| now.saturating_sub(*t) < u64::try_from(window.as_millis()).unwrap())
                .collect();
            prop_assert_eq!(d.m.restarts(), in_window.len());
            prop_assert_eq!(d.m.crash_loop(), in_window.len() >= crash_loop as usize);
            let b = d.m.backoff();
            prop_assert!(b <= max);
            if last_window.iter().all(|t| in_window.contains(t)) {
                prop_assert!(b >= last_backoff, "back-off shrank from {:?} to {:?}", last_backoff, b);
            }
            // Consecutive restarts inside the window are at least the
            // back-off of the time apart.
            for pair in in_window.windows(2) {
                prop_assert!(pair[1] >= pair[0] + 1000 || pair[1] == pair[0]);
            }
            last_backoff = b;
            last_window = in_window;
            seen = d.restarts.len();
        }
    }
}
