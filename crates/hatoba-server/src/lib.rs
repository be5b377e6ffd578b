//! The imperative shell: the only place that reads the clock and acts.
//!
//! `Deployer` runs one deployment of one service: it turns the spec's
//! strategy into a rollout machine, feeds it what it observes (readiness
//! from HTTP probes, analysis verdicts from the proxy's metrics, the time)
//! and executes the commands it returns — start and stop instances through
//! the `Runtime`, swap the proxy's route table, record every transition in
//! the store before acting on it.
//!
//! `Server` is `hatoba up`: a proxy listener per service, a `Deployer` per
//! service, a supervisor per service between rollouts (readiness-gated
//! routes, restarts with back-off, crash loops), re-adoption and resume
//! after a restart (`server`). `ops` is every operation a client can ask
//! of it, typed, returning `Result<T, OpError>`; `http` is the API v1 on
//! loopback (axum, one JSON error shape, an OpenAPI document) that only
//! translates requests into operations.

mod analysis;
pub mod api;
pub mod dataplane;
mod deployer;
pub mod events;
pub mod http;
pub mod ops;
mod probe;
mod runtimes;
pub mod secrets;
mod server;
mod supervisor;
mod traffic;

pub use dataplane::{DataPlane, DataPlaneError, LocalDataPlane, RemoteDataPlane};
pub use deployer::{
    DeployError, DeployRequest, Deployed, Deployer, InstanceRecord, Operator, RolloutRecord,
    STATE_FORMAT, ServiceRecord, ServingRecord, StateError, clock_now, follow_tokio_clock,
};
pub use events::{EventBus, Subscription};
pub use ops::{Action, OpError, without_evidence};
pub use runtimes::Runtimes;
pub use secrets::{KeyError, SecretEnv, SecretError, SecretKey};
pub use server::{Environments, Server, ServerConfig, StartError, new_token};
