//! Statistical judges for canary analysis: the canary against stable on the
//! same window, designed to be asked every second on growing, cumulative
//! data with a bound on false aborts that holds however often it is asked.
//!
//! - Error proportions: a mixture SPRT conditioned on the errors
//!   (`ErrorJudge`).
//! - Latency: a sequential Mann-Whitney U on histograms (`LatencyJudge`).
//! - Minimum evidence: below `MinEvidence` every judgement is
//!   `Inconclusive`, saying how much data is missing.
//! - The facade: `Judge::new(config)?.judge(&sample)` combines both into a
//!   `Judgement` with the reasons in words for the history.
//!
//! `Worse` means abort, `NotWorse` is the only outcome a rollout may
//! promote on, `Inconclusive` means wait (and never promote). With the
//! defaults, the probability that a canary as good as stable is ever called
//! `Worse` over one growing sample is at most `errors.alpha +
//! latency.alpha` = 1e-3. `docs/analysis.md` explains the method.
//!
//! Pure: no IO, no clock, no randomness; the caller passes the counts.

mod latency;
mod math;
mod outcome;
mod proportions;
pub mod run;

pub use latency::{Histogram, HistogramError, LatencyConfig, LatencyJudge};
pub use outcome::{MinEvidence, Outcome};
pub use proportions::{Counts, ErrorConfig, ErrorJudge};
pub use run::{MetricRules, MetricSummary, Observation, RunTracker, RunVerdict};

/// A configuration the judges cannot work with.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A number outside its range.
    #[error("{field} must be {expected}, got {value}")]
    OutOfRange {
        /// Which parameter, e.g. `errors.alpha`.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        value: f64,
    },
    /// `errors.risks` is empty.
    #[error("errors.risks must list at least one relative risk above 1")]
    NoRisks,
}

fn check_probability(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            expected: "a probability strictly between 0 and 1",
            value,
        })
    }
}

/// Everything the facade judges with.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    /// The least data per side, for metrics that do not set their own.
    pub min_evidence: MinEvidence,
    /// The error-proportion judge.
    pub errors: ErrorConfig,
    /// The latency judge; `None` judges errors only.
    pub latency: Option<LatencyConfig>,
}

impl Config {
    /// The defaults, latency included.
    pub fn new() -> Config {
        Config {
            latency: Some(LatencyConfig::default()),
            ..Config::default()
        }
    }

    /// The bound on ever calling a canary as good as stable `Worse` over
    /// one growing sample: the sum of the judges' `alpha`s (a union bound).
    pub fn false_abort_bound(&self) -> f64 {
        self.errors.alpha + self.latency.as_ref().map_or(0.0, |l| l.alpha)
    }
}

/// What one side of the comparison served in the window, cumulative.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Arm {
    /// Requests that ended.
    pub requests: u64,
    /// Of those, errors.
    pub errors: u64,
    /// Their latencies (or the successful ones': the caller chooses, the
    /// same way on both sides).
    pub latency: Histogram,
}

impl Arm {
    /// The window that starts at `baseline`: what this arm's totals added
    /// since `baseline`, the totals of the same version read earlier (at
    /// the start of an analysis run). A counter that went backwards means
    /// the totals began again from zero after `baseline` (the data plane
    /// restarted): then everything counted now came after it, and this
    /// arm is the window as it is.
    pub fn since(&self, baseline: &Arm) -> Arm {
        let requests = self.requests.checked_sub(baseline.requests);
        let errors = self.errors.checked_sub(baseline.errors);
        match (requests, errors, self.latency.since(&baseline.latency)) {
            (Some(requests), Some(errors), Some(latency)) => Arm {
                requests,
                // Counters read one at a time may be a request apart.
                errors: errors.min(requests),
                latency,
            },
            _ => self.clone(),
        }
    }
}

/// The canary and stable on the same window.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// The new version.
    pub canary: Arm,
    /// The version serving users before the rollout.
    pub stable: Arm,
}

impl Sample {
    /// Both arms since `baseline` (see [`Arm::since`]): cumulative
    /// totals read now and at the start of the window give the window.
    pub fn since(&self, baseline: &Sample) -> Sample {
        Sample {
            canary: self.canary.since(&baseline.canary),
            stable: self.stable.since(&baseline.stable),
        }
    }
}

/// The facade's answer: the combined outcome and each metric's.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// `Worse` if any metric is worse, `NotWorse` if every metric is,
    /// `Inconclusive` otherwise; its text joins the deciding metrics'
    /// reasons.
    pub outcome: Outcome,
    /// The error-proportion judge's outcome.
    pub errors: Outcome,
    /// The latency judge's outcome, when configured.
    pub latency: Option<Outcome>,
}

impl Judgement {
    /// One line per metric, `"errors: ..."`, `"latency: ..."`.
    pub fn reasons(&self) -> Vec<String> {
        self.metrics()
            .map(|(name, o)| format!("{name}: {}", o.reason()))
            .collect()
    }

    fn metrics(&self) -> impl Iterator<Item = (&'static str, &Outcome)> {
        std::iter::once(("errors", &self.errors))
            .chain(self.latency.as_ref().map(|l| ("latency", l)))
    }
}

/// The statistical judge: both metrics, validated configuration.
#[derive(Clone, Debug)]
pub struct Judge {
    errors: ErrorJudge,
    latency: Option<LatencyJudge>,
}

impl Judge {
    /// Validates `config`.
    pub fn new(config: Config) -> Result<Judge, ConfigError> {
        let errors = ErrorJudge::new(config.errors, config.min_evidence.requests)?;
        let latency = config
            .latency
            .map(|l| LatencyJudge::new(l, config.min_evidence.points))
            .transpose()?;
        Ok(Judge { errors, latency })
    }

    /// Judges one sample: cumulative counts for the canary and stable over
    /// the same window. Ask as often as you like; see the crate docs for
    /// what the bounds assume.
    pub fn judge(&self, sample: &Sample) -> Judgement {
        let (c, s) = (&sample.canary, &sample.stable);
        let errors = self.errors.judge(
            Counts::new(c.requests, c.errors),
            Counts::new(s.requests, s.errors),
        );
        let latency = self
            .latency
            .as_ref()
            .map(|l| l.judge(&c.latency, &s.latency));
        let mut judgement = Judgement {
            outcome: Outcome::Inconclusive {
                missing: String::new(),
            },
            errors,
            latency,
        };
        judgement.outcome = combine(&judgement);
        judgement
    }
}

fn combine(j: &Judgement) -> Outcome {
    let join = |keep: fn(&Outcome) -> bool| {
        j.metrics()
            .filter(|(_, o)| keep(o))
            .map(|(name, o)| format!("{name}: {}", o.reason()))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if j.metrics().any(|(_, o)| o.is_worse()) {
        Outcome::Worse {
            evidence: join(Outcome::is_worse),
        }
    } else if j.metrics().all(|(_, o)| o.is_not_worse()) {
        Outcome::NotWorse {
            evidence: join(Outcome::is_not_worse),
        }
    } else {
        Outcome::Inconclusive {
            missing: join(Outcome::is_inconclusive),
        }
    }
}
