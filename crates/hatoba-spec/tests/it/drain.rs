//! `drain:` of a service: a duration, or `{timeout, notify}` where `notify`
//! is `{path: /...}` or `{signal: SIG...}`; a mistake named with its line,
//! column and field path.

use hatoba_spec::DrainNotify;
use std::time::Duration;

/// A spec whose service `web` has `drain` as written (the rest of its line).
fn spec(drain: &str) -> String {
    format!(
        "app: t
services:
  web:
    process: {{command: ./web}}
    route: {{listen: 127.0.0.1:8080}}
    drain: {drain}
"
    )
}

fn rendered(text: &str) -> String {
    let parsed = hatoba_spec::parse(text);
    hatoba_spec::render("hatoba.yaml", text, &parsed.diagnostics)
}

fn drain_of(drain: &str) -> (Duration, Option<DrainNotify>) {
    let text = spec(drain);
    let parsed = hatoba_spec::parse(&text);
    assert!(parsed.diagnostics.is_empty(), "{}", rendered(&text));
    let svc = &parsed.spec.unwrap().services[&"web".parse().unwrap()];
    (svc.drain, svc.drain_notify.clone())
}

#[test]
fn a_drain_is_a_duration_or_a_timeout_with_a_notify() {
    assert_eq!(drain_of("5s"), (Duration::from_secs(5), None));
    assert_eq!(drain_of("{}"), (Duration::from_secs(30), None));
    assert_eq!(
        drain_of("{timeout: 1m, notify: {path: /drain}}"),
        (
            Duration::from_secs(60),
            Some(DrainNotify::Path("/drain".to_owned()))
        )
    );
    assert_eq!(
        drain_of("{notify: {signal: USR1}}"),
        (
            Duration::from_secs(30),
            Some(DrainNotify::Signal("SIGUSR1".to_owned()))
        )
    );
    assert_eq!(
        drain_of("{notify: {signal: SIGHUP}}").1,
        Some(DrainNotify::Signal("SIGHUP".to_owned()))
    );
}

#[test]
fn a_bad_drain_says_where_and_what() {
    for (drain, want) in [
        (
            "{timeout: 5}",
            "hatoba.yaml:6:22: error: services.web.drain.timeout: expected a duration",
        ),
        (
            "{notify: {path: drain}}",
            "hatoba.yaml:6:28: error: services.web.drain.notify.path: `drain` is not a path",
        ),
        (
            "{notify: {signal: SIGKILL}}",
            "hatoba.yaml:6:30: error: services.web.drain.notify.signal: `SIGKILL` is not a signal `notify` can send",
        ),
        (
            "{notify: {path: /a, signal: USR1}}",
            "hatoba.yaml:6:21: error: services.web.drain.notify: expected exactly one of path, signal",
        ),
        (
            "{timout: 5s}",
            "hatoba.yaml:6:13: error: services.web.drain.timout: unknown field",
        ),
        (
            "[5s]",
            "hatoba.yaml:6:12: error: services.web.drain: expected a duration such as `30s`, or a mapping",
        ),
    ] {
        let text = spec(drain);
        let parsed = hatoba_spec::parse(&text);
        assert!(parsed.spec.is_none(), "{drain} accepted");
        let out = rendered(&text);
        assert!(out.contains(want), "{drain}: missing {want:?} in:\n{out}");
    }
    // The signal (or path) written beside `timeout` instead of under
    // `notify` (as a reader may take `drain: {signal: SIGUSR1}`) is told
    // where it goes, not only that the field is unknown.
    for (drain, want) in [
        (
            "{signal: SIGUSR1}",
            "hatoba.yaml:6:13: error: services.web.drain.signal: `signal` belongs under `notify`",
        ),
        (
            "{timeout: 5s, path: /drain}",
            "hatoba.yaml:6:26: error: services.web.drain.path: `path` belongs under `notify`",
        ),
    ] {
        let text = spec(drain);
        assert!(hatoba_spec::parse(&text).spec.is_none(), "{drain} accepted");
        let out = rendered(&text);
        assert!(out.contains(want), "{drain}: missing {want:?} in:\n{out}");
        assert!(out.contains("notify: {"), "{drain}: no example in:\n{out}");
        assert!(
            !out.contains("unknown field"),
            "{drain}: reported twice:\n{out}"
        );
    }
    // A near-miss signal gets the right one suggested.
    let out = rendered(&spec("{notify: {signal: SIGUSR3}}"));
    assert!(out.contains("did you mean `SIGUSR1`"), "{out}");
}
