//! Rollout machines on a simulated clock: data-driven traces (script in,
//! commands out, `UPDATE_EXPECT=1` to accept changes) and property tests
//! over random sequences of observations and operator commands.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod blue_green;
mod canary;
mod driver;
mod evidence;
mod health;
mod resume;
mod rolling;
mod serving;
