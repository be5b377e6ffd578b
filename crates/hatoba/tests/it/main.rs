//! The `hatoba` binary as a user runs it: exit codes, stdout and stderr.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod cli;
mod demo;
mod faults;
mod history;
mod prometheus;
mod proxy;
mod proxy_tls;
mod restart;
mod secrets;
mod support;
mod up;
