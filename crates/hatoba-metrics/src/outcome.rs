//! What the caller tells the recorder about one request: the role of the
//! version that served it and how it ended (`Outcome`, `Failure`), and the
//! classification of an outcome into the counters it touches (`Record`).
//!
//! Classification is pure arithmetic on small values: it must not allocate,
//! lock or read a clock, because it runs on the proxy's hot path.

use crate::histogram;
use std::fmt;
use std::time::Duration;

/// The part a version plays for a service in the route table. On the wire
/// (serde) it is its [`as_str`](Role::as_str) name: `"stable"`, `"canary"`,
/// `"preview"`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The version that serves users now.
    Stable,
    /// The new version receiving a share of traffic during a canary.
    Canary,
    /// The idle colour of a blue-green rollout, reachable on a preview address.
    Preview,
}

impl Role {
    /// Every role, in the order the exposition lists them.
    pub const ALL: [Role; 3] = [Role::Stable, Role::Canary, Role::Preview];

    /// `"stable"`, `"canary"` or `"preview"`: the `group` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
            Role::Preview => "preview",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused a failed request. Only `Upstream` counts against a version:
/// a client that hangs up, or a fault in the proxy itself, says nothing
/// about the version that was (or would have been) serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// The instance failed: refused or reset the connection, timed out,
    /// broke off its body.
    Upstream,
    /// The client failed: went away before the answer was complete.
    Downstream,
    /// The proxy failed on its own (no instance to send to, a bug).
    Internal,
}

impl Failure {
    /// Every failure kind, in index order.
    pub const ALL: [Failure; 3] = [Failure::Upstream, Failure::Downstream, Failure::Internal];

    /// `"upstream"`, `"downstream"` or `"internal"`: the `source` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Upstream => "upstream",
            Failure::Downstream => "downstream",
            Failure::Internal => "internal",
        }
    }

    /// The status counted in `http_requests_total` for an
    /// [`Outcome::Failed`] that does not say which status the client got:
    /// 502 for upstream, 499 (nginx's "client closed request", never
    /// actually sent) for downstream, 500 for internal.
    pub fn default_status(self) -> u16 {
        match self {
            Failure::Upstream => 502,
            Failure::Downstream => 499,
            Failure::Internal => 500,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Failure::Upstream => 0,
            Failure::Downstream => 1,
            Failure::Internal => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream's response was relayed to the end; the client got this
    /// status. A 5xx here counts against the version.
    Status(u16),
    /// The request failed; the client's status is taken to be
    /// [`Failure::default_status`]. Prefer [`Outcome::FailedWithStatus`]
    /// when the status the client got is known.
    Failed(Failure),
    /// The request failed and the client got this status: the proxy's own
    /// error answer (502, 503, 504, ...), or the upstream's status when its
    /// body broke off after the head was sent.
    FailedWithStatus(Failure, u16),
}

impl Outcome {
    /// The status counted for this outcome (see the variants).
    pub fn status(self) -> u16 {
        match self {
            Outcome::Status(s) | Outcome::FailedWithStatus(_, s) => s,
            Outcome::Failed(f) => f.default_status(),
        }
    }

    /// The failure, if the request failed.
    pub fn failure(self) -> Option<Failure> {
        match self {
            Outcome::Status(_) => None,
            Outcome::Failed(f) | Outcome::FailedWithStatus(f, _) => Some(f),
        }
    }

    /// Whether this request says something about the version: everything
    /// except downstream and internal failures. Judged requests are the
    /// denominator of the success rate and the only ones whose latency is
    /// kept in the histograms.
    pub fn is_judged(self) -> bool {
        !matches!(
            self.failure(),
            Some(Failure::Downstream | Failure::Internal)
        )
    }

    /// Whether this request counts against the version: an upstream
    /// failure, or a relayed 5xx answer (statuses outside 100-599 count as
    /// 5xx).
    pub fn is_against(self) -> bool {
        match self {
            Outcome::Status(s) => status_class(s) == 4,
            Outcome::Failed(f) | Outcome::FailedWithStatus(f, _) => f == Failure::Upstream,
        }
    }
}

/// Index of a status's class in `by_class` (0 for 1xx ... 4 for 5xx).
/// A number outside 100-599 is not a valid answer and counts as 5xx.
pub(crate) fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 4,
    }
}

/// Number of per-status counters: one per code 100-599 and one "other".
pub(crate) const STATUS_SLOTS: usize = 501;

/// Index of a status in the per-status counters; the last one is "other".
pub(crate) fn status_slot(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status - 100),
        _ => STATUS_SLOTS - 1,
    }
}

/// The label text of a per-status counter: the code, or `other`.
pub(crate) fn status_label(slot: usize) -> Option<u16> {
    (slot < STATUS_SLOTS - 1).then(|| 100 + slot as u16)
}

/// One request classified into the counters it touches, computed once and
/// applied to the totals and to every ring.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    pub(crate) class: usize,
    pub(crate) status_slot: usize,
    pub(crate) failure: Option<usize>,
    pub(crate) against: bool,
    /// `Some((bucket, micros))` when the latency is kept (judged requests).
    pub(crate) latency: Option<(usize, u64)>,
}

impl Record {
    pub(crate) fn new(outcome: Outcome, latency: Duration) -> Record {
        let status = outcome.status();
        let latency = outcome.is_judged().then(|| {
            let micros = histogram::micros_ceil(latency);
            (histogram::bucket_index(micros), micros)
        });
        Record {
            class: status_class(status),
            status_slot: status_slot(status),
            failure: outcome.failure().map(Failure::index),
            against: outcome.is_against(),
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_slots() {
        assert_eq!(status_class(100), 0);
        assert_eq!(status_class(204), 1);
        assert_eq!(status_class(399), 2);
        assert_eq!(status_class(404), 3);
        assert_eq!(status_class(599), 4);
        assert_eq!(status_class(0), 4);
        assert_eq!(status_class(600), 4);
        assert_eq!(status_slot(100), 0);
        assert_eq!(status_slot(599), 499);
        assert_eq!(status_slot(42), 500);
        assert_eq!(status_label(0), Some(100));
        assert_eq!(status_label(499), Some(599));
        assert_eq!(status_label(500), None);
    }

    #[test]
    fn judged_and_against() {
        let cases = [
            (Outcome::Status(200), true, false),
            (Outcome::Status(404), true, false),
            (Outcome::Status(503), true, true),
            (Outcome::Failed(Failure::Upstream), true, true),
            (Outcome::Failed(Failure::Downstream), false, false),
            (Outcome::Failed(Failure::Internal), false, false),
            (
                Outcome::FailedWithStatus(Failure::Upstream, 200),
                true,
                true,
            ),
            (
                Outcome::FailedWithStatus(Failure::Downstream, 503),
                false,
                false,
            ),
            (
                Outcome::FailedWithStatus(Failure::Internal, 503),
                false,
                false,
            ),
        ];
        for (outcome, judged, against) in cases {
            assert_eq!(outcome.is_judged(), judged, "{outcome:?}");
            assert_eq!(outcome.is_against(), against, "{outcome:?}");
        }
        assert_eq!(Outcome::Failed(Failure::Upstream).status(), 502);
        assert_eq!(
            Outcome::FailedWithStatus(Failure::Internal, 503).status(),
            503
        );
    }
}
