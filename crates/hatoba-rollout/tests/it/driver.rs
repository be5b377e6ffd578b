//! Runs a script of timed inputs against a machine and renders the commands
//! it returns, with the simulated time at which it returned them.
//!
//! Script lines: `TIME INPUT`, where TIME is a duration (`0s`, `5m`) and
//! INPUT one of `start`, `ready STABLE CANARY`, `pass|fail|inconclusive
//! step N|background`, `promote`, `promote-full`, `abort REASON`,
//! `unhealthy REASON`, `evidence step N|background|preview` (every metric
//! has passed once), `missing step N|background|preview WHAT` (no evidence:
//! WHAT is missing), `tick`. Timers due before an input fire first, at
//! their own time.

use hatoba_core::{Millis, format_duration, parse_duration};
use hatoba_rollout::{AnalysisRun, Canary, Command, Input, Outcome, Track, Verdict};
use std::time::Duration;

pub(crate) fn parse_input(words: &[&str]) -> Option<Input> {
    let run = |w: &[&str]| match w {
        ["step", n] => AnalysisRun::Step(n.parse().unwrap()),
        ["background"] => AnalysisRun::Background,
        ["preview"] => AnalysisRun::PrePromotion,
        _ => panic!("bad analysis run {w:?}"),
    };
    Some(match words {
        ["start"] => Input::Start,
        ["ready", s, c] => Input::Ready {
            stable: s.parse().unwrap(),
            canary: c.parse().unwrap(),
        },
        ["pass", rest @ ..] => Input::Verdict(run(rest), Verdict::Pass),
        ["fail", rest @ ..] => Input::Verdict(run(rest), Verdict::Fail),
        ["inconclusive", rest @ ..] => Input::Verdict(run(rest), Verdict::Inconclusive),
        ["promote"] => Input::Promote,
        ["promote-full"] => Input::PromoteFull,
        ["abort", rest @ ..] => Input::Abort(rest.join(" ")),
        ["unhealthy", rest @ ..] => Input::Unhealthy(rest.join(" ")),
        ["evidence", rest @ ..] => Input::Evidence(run(rest), None),
        ["missing", "step", n, what @ ..] => {
            Input::Evidence(run(&["step", n]), Some(what.join(" ")))
        }
        ["missing", r, what @ ..] => Input::Evidence(run(&[r]), Some(what.join(" "))),
        ["tick"] => return None,
        _ => panic!("bad input {words:?}"),
    })
}

pub(crate) fn render(c: &Command) -> String {
    let track = |t: &Track| match t {
        Track::Stable => "stable",
        Track::Canary => "canary",
    };
    let run = |r: &AnalysisRun| match r {
        AnalysisRun::Step(n) => format!("step {n}"),
        AnalysisRun::Background => "background".to_owned(),
        AnalysisRun::PrePromotion => "preview".to_owned(),
    };
    match c {
        Command::Scale(t, n) => format!("scale {} {n}", track(t)),
        Command::SetWeight(w) => format!("weight {}", w.percent()),
        Command::StartAnalysis(r) => format!("start analysis {}", run(r)),
        Command::StopAnalysis(r) => format!("stop analysis {}", run(r)),
        Command::SetPreview(on) => format!("preview {}", if *on { "on" } else { "off" }),
        Command::Event(e) => format!("# {e}"),
        Command::Record(m) => format!("# {m}"),
        Command::PromotedWithoutEvidence(m) => format!("promoted without evidence: {m}"),
        Command::Serving { warm_until: None } => "serving".to_owned(),
        Command::Serving {
            warm_until: Some(t),
        } => format!("serving: previous version warm until {}", at(t.0)),
        Command::Finish(Outcome::Succeeded) => "finish: succeeded".to_owned(),
        Command::Finish(Outcome::Aborted(r)) => format!("finish: aborted: {r}"),
        Command::Finish(Outcome::RolledBack(r)) => format!("finish: rolled back: {r}"),
    }
}

fn at(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

/// The machines' common surface, for one driver.
pub(crate) trait Machine {
    fn handle(&mut self, now: Millis, input: Input);
    fn handle_timeout(&mut self, now: Millis);
    fn poll_timeout(&self) -> Option<Millis>;
    fn poll_command(&mut self) -> Option<Command>;
}

macro_rules! machine {
    ($t:ty) => {
        impl Machine for $t {
            fn handle(&mut self, now: Millis, input: Input) {
                <$t>::handle(self, now, input)
            }
            fn handle_timeout(&mut self, now: Millis) {
                <$t>::handle_timeout(self, now)
            }
            fn poll_timeout(&self) -> Option<Millis> {
                <$t>::poll_timeout(self)
            }
            fn poll_command(&mut self) -> Option<Command> {
                <$t>::poll_command(self)
            }
        }
    };
}
machine!(Canary);
machine!(hatoba_rollout::BlueGreen);
machine!(hatoba_rollout::Rolling);

/// Feeds the script to the machine; returns the trace.
pub(crate) fn run<M: Machine>(machine: &mut M, script: &str) -> String {
    let mut out = String::new();
    let drain = |m: &mut M, now: u64, out: &mut String| {
        while let Some(c) = m.poll_command() {
            out.push_str(&format!("{:<6}{}\n", at(now), render(&c)));
        }
    };
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let now = u64::try_from(parse_duration(words[0]).unwrap().as_millis()).unwrap();
        while let Some(t) = machine.poll_timeout().filter(|t| t.0 <= now) {
            machine.handle_timeout(t);
            drain(machine, t.0, &mut out);
        }
        if let Some(input) = parse_input(&words[1..]) {
            machine.handle(Millis(now), input);
        }
        drain(machine, now, &mut out);
    }
    out
}
