//! `DeploymentStatus`: where a deployment is in its life.
//!
//! The lowercase names (`in_progress`, `rolled_back`) are a user contract:
//! they appear in `--output json`, in the store and in scripts.

use std::fmt;
use std::str::FromStr;

/// The life of a deployment. `Pending`, `InProgress` and `Paused` are live;
/// the others are terminal and never change again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeploymentStatus {
    /// Recorded, not started yet (waiting for the controller or an approval).
    Pending,
    /// Instances are starting or traffic is moving.
    InProgress,
    /// Waiting for a person (`hatoba promote`) or a timed pause.
    Paused,
    /// The new version serves all traffic.
    Succeeded,
    /// Stopped by an error before any traffic moved to the new version.
    Failed,
    /// Stopped by an operator; traffic back on the previous version.
    Aborted,
    /// Stopped by a failed check; traffic back on the previous version.
    RolledBack,
}

/// Text that is not a deployment status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{found}` is not a deployment status (expected one of: {})", DeploymentStatus::NAMES.join(", "))]
pub struct ParseStatusError {
    /// The rejected text.
    pub found: String,
}

impl DeploymentStatus {
    /// Every status, in life order.
    pub const ALL: [DeploymentStatus; 7] = [
        DeploymentStatus::Pending,
        DeploymentStatus::InProgress,
        DeploymentStatus::Paused,
        DeploymentStatus::Succeeded,
        DeploymentStatus::Failed,
        DeploymentStatus::Aborted,
        DeploymentStatus::RolledBack,
    ];

    const NAMES: [&'static str; 7] = [
        "pending",
        "in_progress",
        "paused",
        "succeeded",
        "failed",
        "aborted",
        "rolled_back",
    ];

    /// The contract name, e.g. `rolled_back`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Pending => "pending",
            DeploymentStatus::InProgress => "in_progress",
            DeploymentStatus::Paused => "paused",
            DeploymentStatus::Succeeded => "succeeded",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Aborted => "aborted",
            DeploymentStatus::RolledBack => "rolled_back",
        }
    }

    /// True once the deployment can never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            DeploymentStatus::Pending | DeploymentStatus::InProgress | DeploymentStatus::Paused
        )
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeploymentStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeploymentStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ParseStatusError {
                found: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in DeploymentStatus::ALL {
            assert_eq!(st.as_str().parse::<DeploymentStatus>(), Ok(st));
        }
        assert_eq!(
            DeploymentStatus::NAMES.map(|n| n.parse::<DeploymentStatus>().unwrap()),
            DeploymentStatus::ALL
        );
        assert_eq!(
            "done".parse::<DeploymentStatus>().unwrap_err().to_string(),
            "`done` is not a deployment status (expected one of: pending, in_progress, paused, succeeded, failed, aborted, rolled_back)"
        );
    }

    #[test]
    fn terminal() {
        let live: Vec<_> = DeploymentStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        assert_eq!(
            live,
            [
                DeploymentStatus::Pending,
                DeploymentStatus::InProgress,
                DeploymentStatus::Paused
            ]
        );
    }
}
