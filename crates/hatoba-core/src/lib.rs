//! Hatoba's vocabulary: the small types every other crate speaks in.
//!
//! Each type enforces its invariant at construction (a `Weight` is 0-100, a
//! `ServiceName` is a DNS label), so code holding one never re-checks it.
//! This crate does no IO, reads no clock and has no async: time is a number
//! (`Millis`) that the caller supplies.

mod duration;
pub mod event;
mod name;
mod secret;
mod status;
mod time;
mod weight;

pub use duration::{DurationError, format_duration, parse_duration};
pub use event::Event;
pub use name::{DeploymentId, EnvName, NameError, ServiceName, Version, shown};
pub use secret::SecretValue;
pub use status::{DeploymentStatus, ParseStatusError};
pub use time::Millis;
pub use weight::{Weight, WeightError};
