//! The proxy under load and under attack, with real backends on loopback:
//! zero failed requests through weight changes, a blue-green swap, a drain
//! and a SIGKILL; clean answers to bad input; TLS termination.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod bad_input;
mod control;
mod features;
mod framing;
mod long_lived;
mod support;
mod tls;
mod zero_downtime;
