//! The Prometheus text, parsed back by a small line parser: every sample
//! belongs to a family declared once with HELP and TYPE, families are
//! contiguous, histograms are cumulative and monotone with `+Inf` equal to
//! `_count`, values match what was recorded, label values round-trip
//! through escaping.

use super::{at, ms};
use hatoba_core::Millis;
use hatoba_metrics::{Failure, LongLivedEnd, Outcome, Recorder, Role};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

type Labels = BTreeMap<String, String>;
/// `(le, cumulative count)` of one histogram, in text order.
type Buckets = Vec<(f64, f64)>;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// Families (name → type) and samples, checking the structure on the way.
fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let mut help: HashSet<String> = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap();
            assert!(!doc.is_empty());
            assert!(help.insert(name.to_owned()), "HELP twice for {name}");
            assert!(!types.contains_key(name), "HELP after TYPE for {name}");
            if let Some(prev) = current.replace(name.to_owned()) {
                finished.insert(prev);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(help.contains(name), "TYPE without HELP for {name}");
            assert_eq!(current.as_deref(), Some(name), "TYPE away from its HELP");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected line {line:?}"
        );
        let sample = parse_sample(line);
        let family = family_of(&sample.name, &types);
        assert!(!finished.contains(&family), "{family} is not contiguous");
        assert_eq!(current.as_deref(), Some(family.as_str()), "{line}");
        samples.push(sample);
    }
    (types, samples)
}

fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    if types.contains_key(name) {
        return name.to_owned();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            return base.to_owned();
        }
    }
    panic!("sample {name} belongs to no declared family");
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap();
    let name = line[..name_end].to_owned();
    assert!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "{name}"
    );
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        loop {
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().unwrap().1 {
                    '\\' => match chars.next().unwrap().1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("bad escape \\{other} in {line}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in {line}"),
                    c => value.push(c),
                }
            }
            assert!(labels.insert(key, value).is_none(), "label twice in {line}");
            let (i, c) = chars.next().unwrap();
            if c == '}' {
                rest = &inner[i + 1..];
                break;
            }
            assert_eq!(c, ',', "{line}");
        }
    }
    let value = rest.strip_prefix(' ').unwrap();
    assert!(!value.contains(' '), "no timestamps: {line}");
    Sample {
        name,
        labels,
        value: value.parse().unwrap(),
    }
}

fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, want);
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
    found[0].value
}

#[test]
fn the_exposition_parses_and_adds_up() {
    let rec = Recorder::new();
    let stable = rec.group("web", Role::Stable, "v1");
    let canary = rec.group("web", Role::Canary, "v1\"x\\y\nz");
    let _api = rec.group("api", Role::Preview, "2.0.0+build.7");
    let inst = rec.instance(&stable, "127.0.0.1:9001");
    let _idle = rec.instance(&canary, "10.0.0.2:80");

    let latencies = [
        Duration::from_micros(5_000),
        Duration::from_micros(5_001),
        ms(80),
        ms(999),
        ms(1_000),
        ms(2_600),
        ms(30_000),
        ms(200_000),
    ];
    for (i, l) in latencies.iter().enumerate() {
        stable.record(at(i as u64), Outcome::Status(200), *l);
        inst.record(Outcome::Status(200));
    }
    stable.record(at(9), Outcome::Status(503), ms(3));
    stable.record(at(9), Outcome::Failed(Failure::Upstream), ms(3));
    stable.record(at(9), Outcome::Failed(Failure::Downstream), ms(3));
    stable.record(
        at(9),
        Outcome::FailedWithStatus(Failure::Internal, 503),
        ms(3),
    );
    stable.record(at(9), Outcome::Status(42), ms(3));
    inst.record(Outcome::Failed(Failure::Upstream));
    canary.record(at(9), Outcome::Status(204), ms(12));
    let _busy = canary.start();
    let _busy_instance = inst.start();

    let text = rec.encode_prometheus(at(10));
    let (types, samples) = parse(&text);

    let expect_types = [
        ("http_requests_total", "counter"),
        ("http_request_duration_seconds", "histogram"),
        ("hatoba_proxy_failures_total", "counter"),
        ("hatoba_proxy_in_flight", "gauge"),
        ("hatoba_proxy_instance_requests_total", "counter"),
        ("hatoba_proxy_instance_failures_total", "counter"),
        ("hatoba_proxy_instance_in_flight", "gauge"),
        ("hatoba_long_lived_opened_total", "counter"),
        ("hatoba_long_lived_ended_total", "counter"),
        ("hatoba_long_lived_open", "gauge"),
        ("hatoba_long_lived_duration_seconds", "histogram"),
    ];
    assert_eq!(types.len(), expect_types.len());
    for (name, kind) in expect_types {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }

    // Every sample carries the group's labels; escaping round-trips.
    for s in &samples {
        for key in ["service", "group", "version"] {
            assert!(s.labels.contains_key(key), "{s:?}");
        }
    }
    assert!(text.contains(r#"version="v1\"x\\y\nz""#));
    let canary_samples = find(
        &samples,
        "http_requests_total",
        &[("version", "v1\"x\\y\nz")],
    );
    assert_eq!(canary_samples.len(), 1);
    assert_eq!(canary_samples[0].labels["group"], "canary");
    assert_eq!(canary_samples[0].labels["status"], "204");

    // Requests by status, failures by source.
    let web = [("service", "web"), ("group", "stable"), ("version", "v1")];
    let with = |extra: (&'static str, &'static str)| {
        let mut v = web.to_vec();
        v.push(extra);
        v
    };
    assert_eq!(
        value(&samples, "http_requests_total", &with(("status", "200"))),
        8.0
    );
    assert_eq!(
        value(&samples, "http_requests_total", &with(("status", "503"))),
        2.0
    );
    assert_eq!(
        value(&samples, "http_requests_total", &with(("status", "502"))),
        1.0
    );
    assert_eq!(
        value(&samples, "http_requests_total", &with(("status", "499"))),
        1.0
    );
    assert_eq!(
        value(&samples, "http_requests_total", &with(("status", "other"))),
        1.0
    );
    assert_eq!(find(&samples, "http_requests_total", &web).len(), 5);
    for (source, n) in [("upstream", 1.0), ("downstream", 1.0), ("internal", 1.0)] {
        assert_eq!(
            value(
                &samples,
                "hatoba_proxy_failures_total",
                &with(("source", source))
            ),
            n
        );
    }
    assert_eq!(
        value(
            &samples,
            "hatoba_proxy_in_flight",
            &[("service", "web"), ("group", "canary")]
        ),
        1.0
    );
    assert_eq!(value(&samples, "hatoba_proxy_in_flight", &web), 0.0);
    assert_eq!(
        find(&samples, "hatoba_proxy_in_flight", &[("service", "api")]).len(),
        1,
        "an idle group is listed"
    );

    // Instances.
    let i = [("service", "web"), ("instance", "127.0.0.1:9001")];
    let with_i = |extra: (&'static str, &'static str)| {
        let mut v = i.to_vec();
        v.push(extra);
        v
    };
    assert_eq!(
        value(
            &samples,
            "hatoba_proxy_instance_requests_total",
            &with_i(("class", "2xx"))
        ),
        8.0
    );
    assert_eq!(
        value(
            &samples,
            "hatoba_proxy_instance_requests_total",
            &with_i(("class", "5xx"))
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "hatoba_proxy_instance_requests_total",
            &with_i(("class", "1xx"))
        ),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            "hatoba_proxy_instance_failures_total",
            &with_i(("source", "upstream"))
        ),
        1.0
    );
    assert_eq!(value(&samples, "hatoba_proxy_instance_in_flight", &i), 1.0);
    assert_eq!(
        find(
            &samples,
            "hatoba_proxy_instance_requests_total",
            &[("instance", "10.0.0.2:80")]
        )
        .len(),
        5
    );

    // Histograms: cumulative, monotone, +Inf == _count, exact at the edges.
    let mut histograms: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "http_request_duration_seconds_bucket")
    {
        let mut key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        key.sort();
        let le = &s.labels["le"];
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        histograms.entry(key).or_default().push((bound, s.value));
    }
    assert_eq!(histograms.len(), 3, "one histogram per group");
    for (key, buckets) in &histograms {
        let labels: Vec<(&str, &str)> = key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(buckets.len(), 12, "{key:?}");
        for pair in buckets.windows(2) {
            assert!(pair[0].0 < pair[1].0, "le increasing in {key:?}");
            assert!(pair[0].1 <= pair[1].1, "cumulative in {key:?}");
        }
        let (last_le, last) = buckets[buckets.len() - 1];
        assert_eq!(last_le, f64::INFINITY);
        assert_eq!(
            last,
            value(&samples, "http_request_duration_seconds_count", &labels)
        );
        value(&samples, "http_request_duration_seconds_sum", &labels);
    }
    let le = |bound: &'static str| {
        value(
            &samples,
            "http_request_duration_seconds_bucket",
            &with(("le", bound)),
        )
    };
    // Judged: the 8 latencies, and 3 ms each for the 503, the upstream
    // failure and the odd status 42 (downstream and internal are not judged).
    assert_eq!(le("0.005"), 4.0); // 3 ms ×3, exactly 5 ms
    assert_eq!(le("0.01"), 5.0); // 5.001 ms
    assert_eq!(le("0.1"), 6.0);
    assert_eq!(le("1"), 8.0); // 999 ms and exactly 1 s
    assert_eq!(le("2.5"), 8.0);
    assert_eq!(le("5"), 9.0);
    assert_eq!(le("10"), 9.0);
    assert_eq!(le("+Inf"), 11.0);
    let sum = value(&samples, "http_request_duration_seconds_sum", &web);
    let want = 0.005 + 0.005_001 + 0.08 + 0.999 + 1.0 + 2.6 + 30.0 + 200.0 + 0.009;
    assert!((sum - want).abs() < 1e-9, "{sum} vs {want}");
}

#[test]
fn an_empty_recorder_still_declares_its_families() {
    let text = Recorder::new().encode_prometheus(Millis(0));
    let (types, samples) = parse(&text);
    assert_eq!(types.len(), 11);
    assert!(samples.is_empty());
}

#[test]
fn long_lived_connections_are_counted_apart_from_requests() {
    let rec = Recorder::new();
    let g = rec.group("web", Role::Stable, "v1");
    // The stream's request: its time to the response head.
    g.record(
        Millis(1_000),
        Outcome::Status(200),
        Duration::from_millis(3),
    );
    let normal = g.open_long_lived();
    let cut = g.open_long_lived();
    let stopped = g.open_long_lived();
    let still_open = g.open_long_lived();
    assert_eq!(g.long_lived().open, 4);
    normal.end(LongLivedEnd::Normal, Duration::from_secs(700));
    cut.end(LongLivedEnd::Abnormal, Duration::from_millis(1_500));
    drop(stopped);
    let c = g.long_lived();
    assert_eq!(c.opened, 4);
    assert_eq!(c.open, 1);
    assert_eq!(c.ended(LongLivedEnd::Normal), 1);
    assert_eq!(c.ended(LongLivedEnd::Abnormal), 1);
    assert_eq!(c.ended(LongLivedEnd::Stopped), 1);
    // The request latency saw only the head.
    let t = g.totals();
    assert_eq!(t.latency.count(), 1);
    assert_eq!(t.latency.count_at_most(Duration::from_millis(10)), 1);

    let (_, samples) = parse(&rec.encode_prometheus(Millis(2_000)));
    let web = [("service", "web"), ("group", "stable"), ("version", "v1")];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = web.to_vec();
        l.push(extra);
        l
    };
    assert_eq!(value(&samples, "hatoba_long_lived_opened_total", &web), 4.0);
    assert_eq!(value(&samples, "hatoba_long_lived_open", &web), 1.0);
    for (end, n) in [("normal", 1.0), ("abnormal", 1.0), ("stopped", 1.0)] {
        assert_eq!(
            value(
                &samples,
                "hatoba_long_lived_ended_total",
                &with(("end", end))
            ),
            n,
            "{end}"
        );
    }
    let le = |b: &'static str| {
        value(
            &samples,
            "hatoba_long_lived_duration_seconds_bucket",
            &with(("le", b)),
        )
    };
    assert_eq!(le("1"), 0.0);
    assert_eq!(le("10"), 1.0);
    assert_eq!(le("900"), 2.0);
    assert_eq!(le("+Inf"), 2.0);
    assert_eq!(
        value(&samples, "hatoba_long_lived_duration_seconds_count", &web),
        2.0
    );
    let sum = value(&samples, "hatoba_long_lived_duration_seconds_sum", &web);
    assert!((sum - 701.5).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(&samples, "http_request_duration_seconds_count", &web),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "http_request_duration_seconds_bucket",
            &with(("le", "0.005"))
        ),
        1.0
    );
    drop(still_open);
}

#[test]
fn frozen_and_thawed_groups_keep_their_long_lived_counts() {
    let rec = Recorder::new();
    let g = rec.group("web", Role::Canary, "v2");
    g.open_long_lived()
        .end(LongLivedEnd::Abnormal, Duration::from_secs(5));
    g.open_long_lived()
        .end(LongLivedEnd::Normal, Duration::from_secs(50));
    let before = g.long_lived();
    drop(g);
    assert_eq!(rec.freeze_unheld(|_| true), 1);
    let frozen = rec
        .groups()
        .into_iter()
        .find(|g| g.version() == "v2")
        .unwrap();
    assert!(frozen.is_frozen());
    assert_eq!(frozen.long_lived(), before);
    drop(frozen);
    let thawed = rec.group("web", Role::Canary, "v2");
    assert!(!thawed.is_frozen());
    assert_eq!(thawed.long_lived(), before);
    assert_eq!(before.ended(LongLivedEnd::Abnormal), 1);
    assert_eq!(before.opened, 2);
}

#[test]
fn an_open_connection_keeps_its_group_from_freezing() {
    let rec = Recorder::new();
    let g = rec.group("web", Role::Stable, "v1");
    let open = g.open_long_lived();
    drop(g);
    assert_eq!(rec.freeze_unheld(|_| true), 0);
    drop(open);
    assert_eq!(rec.freeze_unheld(|_| true), 1);
}
