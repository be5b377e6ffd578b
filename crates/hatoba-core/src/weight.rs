//! `Weight`: a share of traffic in percent, always within 0..=100.

use std::fmt;

/// A share of a service's traffic, in whole percent (0..=100).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Weight(u8);

impl TryFrom<i64> for Weight {
    type Error = WeightError;
    fn try_from(percent: i64) -> Result<Weight, WeightError> {
        Weight::new(percent)
    }
}

impl From<Weight> for i64 {
    fn from(w: Weight) -> i64 {
        i64::from(w.0)
    }
}

/// A number that is not a valid weight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("weight {found} is out of range 0..=100")]
pub struct WeightError {
    /// The rejected value.
    pub found: i64,
}

impl Weight {
    /// No traffic.
    pub const ZERO: Weight = Weight(0);
    /// All traffic.
    pub const FULL: Weight = Weight(100);

    /// Builds a weight, rejecting values above 100 or below 0.
    pub fn new(percent: i64) -> Result<Weight, WeightError> {
        match u8::try_from(percent) {
            Ok(p) if p <= 100 => Ok(Weight(p)),
            _ => Err(WeightError { found: percent }),
        }
    }

    /// The weight in percent.
    pub fn percent(self) -> u8 {
        self.0
    }

    /// What is left for the other side of a two-way split.
    pub fn complement(self) -> Weight {
        Weight(100 - self.0)
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(Weight::new(0).unwrap(), Weight::ZERO);
        assert_eq!(Weight::new(100).unwrap(), Weight::FULL);
        assert_eq!(Weight::new(101), Err(WeightError { found: 101 }));
        assert_eq!(Weight::new(-1), Err(WeightError { found: -1 }));
        assert_eq!(Weight::new(30).unwrap().complement().percent(), 70);
        assert_eq!(
            Weight::new(256).unwrap_err().to_string(),
            "weight 256 is out of range 0..=100"
        );
    }
}
