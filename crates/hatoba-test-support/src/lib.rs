//! Test harness shared by Hatoba's crates (a dev-dependency only).
//!
//! - [`external`]: the finder for outside parts. A test that needs one
//!   (PostgreSQL today) asks for it; when it cannot be had the test prints
//!   `SKIP <test>: <reason>` and returns, unless `HATOBA_REQUIRE_EXTERNAL=1`
//!   (CI), where it fails instead.
//! - [`postgres`] / [`TempPostgres`]: a throw-away PostgreSQL cluster on a
//!   free loopback port, a fresh database per caller, stopped on drop.
//! - [`prometheus()`] / [`TempPrometheus`]: a throw-away Prometheus on a free
//!   loopback port scraping given targets every second, killed on drop.
//! - [`wait_for`], [`wait_for_async`]: poll a condition with a deadline
//!   (tests never sleep a fixed time hoping something is ready).
//! - [`free_port`]: a free port on 127.0.0.1.
//! - [`ScopeReaper`]: kills a runtime scope's processes (instances and
//!   what they started) when dropped, so a test that panics leaves none.
//! - [`runtime_story`]: the conformance story every `Runtime` driver passes
//!   (with [`StoryRuntimes`]: the runtime, a twin of its scope, a
//!   neighbour of another scope); [`http_ok`] for checks of one's own.
//!
//! Panicking is how this crate fails a test; it must never be a dependency
//! of production code.

mod external;
mod postgres;
mod prometheus;
mod reap;
mod runtime_story;
mod wait;
mod watchdog;

pub use external::{REQUIRE_EXTERNAL, external, require_external};
pub use postgres::{PostgresUnavailable, TempPostgres, postgres};
pub use prometheus::{PrometheusUnavailable, TempPrometheus, prometheus};
pub use reap::{ScopeReaper, alive, kill_and_wait, processes_in_scope};
pub use runtime_story::{StoryPrograms, StoryRuntimes, http_ok, runtime_story};
pub use wait::{TimedOut, free_port, wait_for, wait_for_async};
