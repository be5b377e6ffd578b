//! The `hatoba` binary as a user runs it: exit codes, stdout and stderr.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod backup;
mod cli;
mod dataplane;
mod demo;
mod docker;
mod docker_faults;
mod environments;
mod events;
mod evidence;
mod faults;
mod hardening;
mod history;
mod long_lived;
mod memory;
mod prometheus;
mod proxy;
mod proxy_tls;
mod reload;
mod remote;
mod restart;
mod secrets;
mod support;
mod up;
mod usability;
