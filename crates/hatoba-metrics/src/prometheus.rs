//! The Prometheus text exposition (format 0.0.4) of every group's
//! cumulative counters. Families, each with one `# HELP` and `# TYPE`:
//!
//! - `http_requests_total{service,group,version,status}`: the seeds' name,
//!   so their PromQL works against Hatoba directly. `group` is the role;
//!   `status` is the code the client got (`Outcome::status`): a failure
//!   recorded without one counts as 502 (upstream), 499 (downstream, nginx's
//!   "client closed request") or 500 (internal); numbers outside 100-599 as
//!   `other`. Failures are also counted by kind below.
//! - `http_request_duration_seconds{service,group,version}`: a histogram
//!   with the default buckets 0.005 ... 10 s, derived exactly from the fine
//!   histogram; it holds the judged requests (all but downstream and
//!   internal failures). `+Inf` equals `_count`.
//! - `hatoba_proxy_failures_total{service,group,version,source}`.
//! - `hatoba_proxy_in_flight{service,group,version}`.
//! - `hatoba_proxy_instance_requests_total{service,group,version,instance,class}`
//!   with `class` in `1xx`..`5xx`.
//! - `hatoba_proxy_instance_failures_total{service,group,version,instance,source}`.
//! - `hatoba_proxy_instance_in_flight{service,group,version,instance}`.
//! - `hatoba_long_lived_opened_total{service,group,version}`: long-lived
//!   connections (WebSocket tunnels, event streams) opened. Their requests
//!   are in the families above with the time to their response head; their
//!   life only in these four.
//! - `hatoba_long_lived_ended_total{service,group,version,end}` with `end`
//!   `normal` (closed by either side, or the client went away), `abnormal`
//!   (reset or cut by the upstream while routed: against the version) or
//!   `stopped` (cut by Hatoba's own stop: the end of a drain, the proxy
//!   stopping; never against the version).
//! - `hatoba_long_lived_open{service,group,version}`: open now.
//! - `hatoba_long_lived_duration_seconds{service,group,version}`: a
//!   histogram of ended connections' lives, buckets 1 s ... 3 h
//!   (`LONG_LIVED_BOUNDS`); a connection cut by the proxy's own stop has no
//!   known duration and is only in `_ended_total`.
//!
//! Labels are bounded: statuses by the 501 codes, instances by the route
//! table. Values are cumulative since the group was created; windows are
//! never exposed. Must not print or do IO: it returns a `String`.

use crate::counts::Counts;
use crate::group::{GroupStats, InstanceCounts};
use crate::histogram::PROMETHEUS_BOUNDS;
use crate::long_lived::{LONG_LIVED_BOUNDS, LongLivedCounts, LongLivedEnd};
use crate::outcome::Failure;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// One group read once, so every family shows the same values.
struct Snapshot<'a> {
    group: &'a GroupStats,
    totals: Counts,
    statuses: Vec<(Option<u16>, u64)>,
    in_flight: u64,
    long_lived: LongLivedCounts,
    instances: Vec<(String, InstanceCounts, u64)>,
}

pub(crate) fn encode(groups: &[Arc<GroupStats>]) -> String {
    let snaps: Vec<Snapshot<'_>> = groups
        .iter()
        .map(|g| Snapshot {
            group: g,
            totals: g.totals(),
            statuses: g.status_totals(),
            in_flight: g.in_flight(),
            long_lived: g.long_lived(),
            instances: g
                .instances()
                .iter()
                .map(|i| (i.instance().to_owned(), i.totals(), i.in_flight()))
                .collect(),
        })
        .collect();
    let mut out = String::with_capacity(1024 + snaps.len() * 2048);

    family(
        &mut out,
        "http_requests_total",
        "counter",
        "Requests the proxy carried, by the status the client got.",
    );
    for s in &snaps {
        for (status, n) in &s.statuses {
            let code = status.map_or_else(|| "other".to_owned(), |c| c.to_string());
            sample(
                &mut out,
                "http_requests_total",
                &group_labels(s.group, &[("status", &code)]),
                *n,
            );
        }
    }

    family(
        &mut out,
        "http_request_duration_seconds",
        "histogram",
        "Time from receiving a request to its end, for requests judged against their version.",
    );
    for s in &snaps {
        let hist = &s.totals.latency;
        for (micros, le) in PROMETHEUS_BOUNDS {
            let n = hist.count_at_most(Duration::from_micros(micros));
            sample(
                &mut out,
                "http_request_duration_seconds_bucket",
                &group_labels(s.group, &[("le", le)]),
                n,
            );
        }
        let count = hist.count();
        sample(
            &mut out,
            "http_request_duration_seconds_bucket",
            &group_labels(s.group, &[("le", "+Inf")]),
            count,
        );
        let micros = hist.sum().as_micros();
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{} {}.{:06}",
            group_labels(s.group, &[]),
            micros / 1_000_000,
            micros % 1_000_000
        );
        sample(
            &mut out,
            "http_request_duration_seconds_count",
            &group_labels(s.group, &[]),
            count,
        );
    }

    family(
        &mut out,
        "hatoba_proxy_failures_total",
        "counter",
        "Failed requests by who caused them; only upstream failures count against a version.",
    );
    for s in &snaps {
        let t = &s.totals;
        let by_kind = [
            t.upstream_failures,
            t.downstream_failures,
            t.internal_failures,
        ];
        for (kind, n) in Failure::ALL.iter().zip(by_kind) {
            sample(
                &mut out,
                "hatoba_proxy_failures_total",
                &group_labels(s.group, &[("source", kind.as_str())]),
                n,
            );
        }
    }

    family(
        &mut out,
        "hatoba_proxy_in_flight",
        "gauge",
        "Requests in flight.",
    );
    for s in &snaps {
        sample(
            &mut out,
            "hatoba_proxy_in_flight",
            &group_labels(s.group, &[]),
            s.in_flight,
        );
    }

    family(
        &mut out,
        "hatoba_proxy_instance_requests_total",
        "counter",
        "Requests (or attempts) sent to an instance, by status class.",
    );
    for s in &snaps {
        for (name, counts, _) in &s.instances {
            for (class, n) in CLASSES.iter().zip(counts.by_class) {
                sample(
                    &mut out,
                    "hatoba_proxy_instance_requests_total",
                    &group_labels(s.group, &[("instance", name), ("class", class)]),
                    n,
                );
            }
        }
    }

    family(
        &mut out,
        "hatoba_proxy_instance_failures_total",
        "counter",
        "Failed requests (or attempts) sent to an instance, by who caused them.",
    );
    for s in &snaps {
        for (name, c, _) in &s.instances {
            let by_kind = [
                c.upstream_failures,
                c.downstream_failures,
                c.internal_failures,
            ];
            for (kind, n) in Failure::ALL.iter().zip(by_kind) {
                sample(
                    &mut out,
                    "hatoba_proxy_instance_failures_total",
                    &group_labels(s.group, &[("instance", name), ("source", kind.as_str())]),
                    n,
                );
            }
        }
    }

    family(
        &mut out,
        "hatoba_proxy_instance_in_flight",
        "gauge",
        "Requests in flight to an instance.",
    );
    for s in &snaps {
        for (name, _, in_flight) in &s.instances {
            sample(
                &mut out,
                "hatoba_proxy_instance_in_flight",
                &group_labels(s.group, &[("instance", name)]),
                *in_flight,
            );
        }
    }

    family(
        &mut out,
        "hatoba_long_lived_opened_total",
        "counter",
        "Long-lived connections (WebSockets, event streams) opened.",
    );
    for s in &snaps {
        sample(
            &mut out,
            "hatoba_long_lived_opened_total",
            &group_labels(s.group, &[]),
            s.long_lived.opened,
        );
    }

    family(
        &mut out,
        "hatoba_long_lived_ended_total",
        "counter",
        "Long-lived connections ended, by how; only abnormal ends count against a version.",
    );
    for s in &snaps {
        for how in LongLivedEnd::ALL {
            sample(
                &mut out,
                "hatoba_long_lived_ended_total",
                &group_labels(s.group, &[("end", how.as_str())]),
                s.long_lived.ended(how),
            );
        }
    }

    family(
        &mut out,
        "hatoba_long_lived_open",
        "gauge",
        "Long-lived connections open.",
    );
    for s in &snaps {
        sample(
            &mut out,
            "hatoba_long_lived_open",
            &group_labels(s.group, &[]),
            s.long_lived.open,
        );
    }

    family(
        &mut out,
        "hatoba_long_lived_duration_seconds",
        "histogram",
        "How long ended long-lived connections lived, from their response head to their end.",
    );
    for s in &snaps {
        let ll = &s.long_lived;
        let mut cumulative = 0u64;
        for (bound, n) in LONG_LIVED_BOUNDS.iter().zip(ll.durations.iter()) {
            cumulative = cumulative.saturating_add(*n);
            sample(
                &mut out,
                "hatoba_long_lived_duration_seconds_bucket",
                &group_labels(s.group, &[("le", &bound.to_string())]),
                cumulative,
            );
        }
        let count = ll.durations.iter().fold(0u64, |a, b| a.saturating_add(*b));
        sample(
            &mut out,
            "hatoba_long_lived_duration_seconds_bucket",
            &group_labels(s.group, &[("le", "+Inf")]),
            count,
        );
        let _ = writeln!(
            out,
            "hatoba_long_lived_duration_seconds_sum{} {}.{:03}",
            group_labels(s.group, &[]),
            ll.duration_sum_ms / 1000,
            ll.duration_sum_ms % 1000
        );
        sample(
            &mut out,
            "hatoba_long_lived_duration_seconds_count",
            &group_labels(s.group, &[]),
            count,
        );
    }

    out
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "{name}{labels} {value}");
}

/// `{service="..",group="..",version="..",extra..}` with escaped values.
fn group_labels(g: &GroupStats, extra: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(96);
    s.push('{');
    let base = [
        ("service", g.service()),
        ("group", g.role().as_str()),
        ("version", g.version()),
    ];
    for (i, (k, v)) in base.iter().chain(extra.iter()).enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        escape_into(&mut s, v);
        s.push('"');
    }
    s.push('}');
    s
}

/// Escapes a label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        let mut s = String::new();
        escape_into(&mut s, "a\\b\"c\nd");
        assert_eq!(s, "a\\\\b\\\"c\\nd");
    }
}
