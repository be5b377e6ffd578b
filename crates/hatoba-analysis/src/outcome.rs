//! What a judge concludes (`Outcome`), and the minimum evidence below which
//! it concludes nothing (`MinEvidence`).

/// A judge's conclusion about the canary, with the reason in words for the
/// history.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The canary is significantly worse than stable, by more than the
    /// tolerance: abort.
    Worse {
        /// The figures and the test that crossed its bound.
        evidence: String,
    },
    /// Enough evidence that the canary is not worse than stable by more
    /// than the tolerance: the only outcome on which a rollout may promote.
    NotWorse {
        /// The figures and the bound that shows it.
        evidence: String,
    },
    /// Neither yet: too little data, or a difference not yet significant
    /// either way. Never promote on it.
    Inconclusive {
        /// What is missing, e.g. "needs 12 more canary requests (8 of 20)".
        missing: String,
    },
}

impl Outcome {
    /// The reason, whichever the outcome.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Worse { evidence } | Outcome::NotWorse { evidence } => evidence,
            Outcome::Inconclusive { missing } => missing,
        }
    }

    /// `Worse`: abort.
    pub fn is_worse(&self) -> bool {
        matches!(self, Outcome::Worse { .. })
    }

    /// `NotWorse`: may promote.
    pub fn is_not_worse(&self) -> bool {
        matches!(self, Outcome::NotWorse { .. })
    }

    /// `Inconclusive`: wait.
    pub fn is_inconclusive(&self) -> bool {
        matches!(self, Outcome::Inconclusive { .. })
    }
}

/// The least data a metric needs, on each side (canary and stable), before
/// it is judged at all. Below it every judgement is `Inconclusive`, with how
/// much is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinEvidence {
    /// Requests per side, for the error-proportion judge. Default 20.
    pub requests: u64,
    /// Data points (latency samples) per side, for the latency judge.
    /// Default 20.
    pub points: u64,
}

impl Default for MinEvidence {
    fn default() -> MinEvidence {
        MinEvidence {
            requests: 20,
            points: 20,
        }
    }
}

/// "needs 12 more canary requests (8 of 20) and 30 more stable requests
/// (150 of 180)", or `None` when both sides have enough.
pub(crate) fn shortfall(unit: &str, canary: u64, stable: u64, need: u64) -> Option<String> {
    let side = |name: &str, have: u64| {
        (have < need).then(|| format!("{} more {name} {unit} ({have} of {need})", need - have))
    };
    match (side("canary", canary), side("stable", stable)) {
        (None, None) => None,
        (Some(c), None) => Some(format!("needs {c}")),
        (None, Some(s)) => Some(format!("needs {s}")),
        (Some(c), Some(s)) => Some(format!("needs {c} and {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortfall_names_each_missing_side() {
        assert_eq!(shortfall("requests", 20, 20, 20), None);
        assert_eq!(
            shortfall("requests", 8, 20, 20).as_deref(),
            Some("needs 12 more canary requests (8 of 20)")
        );
        assert_eq!(
            shortfall("data points", 0, 5, 20).as_deref(),
            Some(
                "needs 20 more canary data points (0 of 20) and 15 more stable data points (5 of 20)"
            )
        );
        assert_eq!(
            shortfall("requests", 50, 0, 20).as_deref(),
            Some("needs 20 more stable requests (0 of 20)")
        );
    }

    #[test]
    fn outcome_accessors() {
        let w = Outcome::Worse {
            evidence: "e".into(),
        };
        let n = Outcome::NotWorse {
            evidence: "n".into(),
        };
        let i = Outcome::Inconclusive {
            missing: "m".into(),
        };
        assert!(w.is_worse() && !w.is_not_worse() && !w.is_inconclusive());
        assert!(n.is_not_worse() && !n.is_worse());
        assert!(i.is_inconclusive());
        assert_eq!((w.reason(), n.reason(), i.reason()), ("e", "n", "m"));
    }
}
