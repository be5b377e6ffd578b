//! The `Runtime` trait: how Hatoba starts, stops and lists the instances of
//! a service, whatever runs them (local processes, Docker, later
//! Kubernetes).
//!
//! A runtime executes and observes; it never decides (invariant 2). It does
//! not probe readiness or restart anything on its own initiative: it
//! reports what it sees and the controller chooses. Every driver passes the
//! same conformance story (`hatoba_test_support::runtime_story`).
//!
//! Instances outlive the controller that started them. A restarted
//! controller hands the statuses it recorded to [`Runtime::adopt`], which
//! re-attaches to the instances that still run (checking that they really are
//! the same ones: a process id alone can have been recycled, so the process
//! driver also compares the start time it recorded in
//! [`InstanceStatus::proc_start`]; another driver proves identity with its
//! own opaque [`InstanceStatus::identity`], a container id for Docker), then calls [`Runtime::sweep`] to end the
//! instances a controller started but died before recording. Each runtime
//! object has a *scope* (for the process driver, the controller's state
//! directory) so that two controllers on one machine never sweep each
//! other's instances. [`Runtime::usage`] reports what an instance consumes.

use hatoba_core::{Millis, ServiceName, Version};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The id of one instance, unique within a runtime: `web-v2-3f9a`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to start: everything already interpolated (`${VERSION}` filled in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The service it belongs to.
    pub service: ServiceName,
    /// The version it runs.
    pub version: Version,
    /// What runs: a program or a container. A runtime refuses a workload
    /// it cannot run ([`RuntimeError::Unsupported`]).
    pub workload: Workload,
    /// Environment variables on top of the runtime's own; `PORT` is added.
    /// In the workload's arguments and in these values, `${PORT}` stands for the instance's
    /// port and is replaced by the runtime when it starts the instance.
    pub env: BTreeMap<String, String>,
    /// Where it runs (for a process; a container runs in its image's
    /// working directory).
    pub working_dir: PathBuf,
    /// Secret values by name. In `args` and `env` values, `${NAME}` of a
    /// secret is left as written and replaced by the runtime only in the
    /// process it starts (as `${PORT}` is), so the plain value lives in
    /// the instance's environment and nowhere else; `Debug` shows
    /// `‹secret›`.
    pub secrets: BTreeMap<String, hatoba_core::SecretValue>,
}

/// What an instance runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A local program (the process runtime).
    Process {
        /// The program (a path, relative to `working_dir` when it has a
        /// `/`, or a name looked up in `PATH`).
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A container made from a local image (the Docker runtime).
    Container(ContainerWorkload),
}

impl Workload {
    /// The program or the image: what an error about starting it names.
    pub fn what(&self) -> &str {
        match self {
            Workload::Process { program, .. } => program,
            Workload::Container(c) => &c.image,
        }
    }

    /// Its kind for messages: `process`, `container`.
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Process { .. } => "process",
            Workload::Container(_) => "container",
        }
    }
}

/// A container: only what the Engine API needs to create one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerWorkload {
    /// The image, by name and tag (`web:v2`) or id (`sha256:…`); it must
    /// be present locally (nothing is pulled).
    pub image: String,
    /// The exact image (`sha256:…`) the tag named when the deployment was
    /// recorded: when given, containers are made from it and never from
    /// whatever `image` names now (a tag built again, a rollback); `image`
    /// still names it in messages.
    pub image_id: Option<String>,
    /// Replaces the image's entrypoint when given.
    pub command: Option<Vec<String>>,
    /// Replaces the image's command (the arguments to the entrypoint) when
    /// given; `${PORT}` stands for `port`.
    pub args: Option<Vec<String>>,
    /// The port the app listens on inside the container (also given in
    /// `PORT`); the runtime publishes it on a loopback port of the host.
    pub port: u16,
    /// `user` or `user:group` inside the container; the image's own when
    /// not given.
    pub user: Option<String>,
    /// Memory limit, in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit, in thousandths of a CPU (1500 = one and a half).
    pub millicpus: Option<u64>,
    /// Whether the container's root filesystem is read-only.
    pub read_only: bool,
    /// Mounts as Docker's binds take them: `SOURCE:TARGET` or
    /// `SOURCE:TARGET:ro`, a host directory given by its absolute path or
    /// a named volume.
    pub binds: Vec<String>,
    /// A Docker network to join instead of the default bridge; the port is
    /// published on loopback either way.
    pub network: Option<String>,
    /// Identifying labels beyond the runtime's own (app, environment,
    /// deployment), added as `hatoba.<key>`.
    pub labels: BTreeMap<String, String>,
}

/// Where an instance is in its life, as last observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// The process runs.
    Running,
    /// It ended: by itself (`code`) or by a signal.
    Exited {
        /// Its exit code, when it exited normally.
        code: Option<i32>,
        /// The signal that ended it, when one did.
        signal: Option<i32>,
    },
}

impl std::fmt::Display for InstanceState {
    /// `running`, `exited with code 2`, `killed by signal 9`, `gone`. Code 0
    /// says why a server would return at all: it started a daemon.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstanceState::Running => f.write_str("running"),
            InstanceState::Exited { code: Some(0), .. } => f.write_str(
                "exited with code 0 (a server's command must keep running in the foreground, \
                 not start a daemon and return)",
            ),
            InstanceState::Exited { code: Some(c), .. } => write!(f, "exited with code {c}"),
            InstanceState::Exited {
                signal: Some(s), ..
            } => write!(f, "killed by signal {s}"),
            InstanceState::Exited { .. } => f.write_str("gone"),
        }
    }
}

/// One instance as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Its id.
    pub id: InstanceId,
    /// Its service.
    pub service: ServiceName,
    /// Its version.
    pub version: Version,
    /// Where it listens (the port given in `PORT`).
    pub addr: SocketAddr,
    /// The operating system's process id, when there is one.
    pub pid: Option<u32>,
    /// When the operating system started that process, in its own units
    /// (Linux: clock ticks since boot, field 22 of `/proc/<pid>/stat`), when
    /// known. With `pid` it names the process for good: a recycled pid has
    /// another start time, so adoption never mistakes it for the instance.
    pub proc_start: Option<u64>,
    /// When it was started, by the caller's clock.
    pub started_at: Millis,
    /// Running or exited.
    pub state: InstanceState,
    /// What proves, after a controller restart, that this is the very
    /// instance (for the Docker runtime: the container id). It belongs to
    /// the runtime that made it: opaque to the caller, who records it and
    /// hands it back to [`Runtime::adopt`]. The process runtime proves
    /// identity with `pid` and `proc_start` and leaves this `None`.
    pub identity: Option<String>,
    /// Whether the kernel's out-of-memory killer ended it (known to the
    /// Docker runtime; the process runtime cannot tell and says `false`).
    pub oom_killed: bool,
    /// The memory limit it runs under, in bytes, when the runtime sets one
    /// (a Docker service's `memory`).
    pub memory_limit: Option<u64>,
    /// Where its output goes.
    pub log: Option<PathBuf>,
    /// What the workload's own health check says (a Docker image's
    /// HEALTHCHECK), when it has one. Shown, never acted on: Hatoba's
    /// probes decide readiness whether or not the image has a check.
    pub own_health: Option<OwnHealth>,
}

impl InstanceStatus {
    /// Its state in words, saying when the out-of-memory killer ended it
    /// and under what limit: `killed by the OOM killer (memory limit
    /// 64 MiB)`, else as [`InstanceState`] says.
    pub fn state_words(&self) -> String {
        match (&self.state, self.oom_killed, self.memory_limit) {
            (InstanceState::Exited { .. }, true, Some(limit)) => format!(
                "killed by the OOM killer (memory limit {})",
                mebibytes(limit)
            ),
            (InstanceState::Exited { .. }, true, None) => "killed by the OOM killer".to_owned(),
            (state, ..) => state.to_string(),
        }
    }
}

/// `64 MiB`, `1.5 MiB`: an amount of memory as an operator reads it.
fn mebibytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
    }
}

/// Lines of an instance's output the runtime kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Whole lines, oldest first.
    pub lines: Vec<String>,
    /// Where to read on from (`after` of the next call): opaque to the
    /// caller (for Docker, the time of the last line in nanoseconds since
    /// 1970). `None`: nothing more will come (the instance is gone).
    pub cursor: Option<u64>,
}

/// One line of an output being followed ([`Runtime::follow_logs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The line, without its end.
    pub line: String,
    /// Written to stderr (else stdout).
    pub stderr: bool,
    /// Where to read on from after it (as [`Output::cursor`]), when the
    /// runtime knows: a follow that broke resumes with it as `after`.
    pub cursor: Option<u64>,
}

/// An instance's output as it is written: whole lines, oldest first. It
/// ends once the instance has stopped (or is gone) and everything it wrote
/// was given; dropping it stops reading.
pub type LogStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogLine, RuntimeError>> + Send>>;

/// An image a runtime's own builds made for a service (Docker: one
/// `hatoba build` labelled with the scope, the service and the version),
/// whether or not it was ever deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// Its id (`sha256:…`).
    pub id: String,
    /// The version it was built as, when its label says one.
    pub version: Option<String>,
    /// When it was built, in seconds since 1970.
    pub created: i64,
    /// A container (running or not) is made from it: it must stay.
    pub in_use: bool,
}

/// The verdict of a workload's own health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnHealth {
    /// Not yet decided (within the check's start period).
    Starting,
    /// The last checks passed.
    Healthy,
    /// As many checks in a row failed as the check allows.
    Unhealthy,
}

impl fmt::Display for OwnHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OwnHealth::Starting => "starting",
            OwnHealth::Healthy => "healthy",
            OwnHealth::Unhealthy => "unhealthy",
        })
    }
}

/// What an instance consumes, summed over its processes (for the process
/// runtime: its whole process group).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// CPU time used so far (user and system), in seconds.
    pub cpu_seconds: f64,
}

/// What went wrong, one variant per decision the caller makes.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The program could not be started (missing, not executable, ...).
    #[error("cannot start `{program}`{} for service `{service}`", resolved.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Spawn {
        /// The service.
        service: ServiceName,
        /// The program as given.
        program: String,
        /// Where a relative path led (`./bin/web` from the spec's directory).
        resolved: Option<std::path::PathBuf>,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No free port, no log file, and other resources of the machine.
    #[error("cannot prepare an instance of `{service}`: {what}")]
    Resources {
        /// The service.
        service: ServiceName,
        /// What could not be had.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No instance has this id.
    #[error("no instance `{id}`")]
    NotFound {
        /// The id asked for.
        id: InstanceId,
    },
    /// Stopping failed (the signal could not be sent).
    #[error("cannot stop instance `{id}`")]
    Stop {
        /// The instance.
        id: InstanceId,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// This runtime cannot run this kind of workload (a container given to
    /// the process runtime).
    #[error("the {runtime} runtime cannot run a {kind} (service `{service}`)")]
    Unsupported {
        /// The runtime's name.
        runtime: &'static str,
        /// The workload's kind.
        kind: &'static str,
        /// The service.
        service: ServiceName,
    },
    /// The runtime itself does not answer (the Docker Engine is
    /// unreachable): nothing was learnt about the instance or its version,
    /// and asking again later may work.
    #[error("the {runtime} runtime is unreachable")]
    Unreachable {
        /// The runtime's name.
        runtime: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime could not look at the machine (for the process runtime:
    /// `/proc` could not be listed), so it cannot tell what runs.
    #[error("cannot inspect the machine: {what}")]
    Inspect {
        /// What could not be read.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A place that runs instances.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + fmt::Debug {
    /// A short name for messages: `process`, `docker`.
    fn name(&self) -> &'static str;

    /// Starts one instance with a free port in `PORT`; returns at once with
    /// its status (running, or already exited if it died immediately).
    async fn start(&self, spec: &InstanceSpec, now: Millis)
    -> Result<InstanceStatus, RuntimeError>;

    /// Checks, before a deployment records anything, that this runtime
    /// could start `spec` (for Docker: its image is present), so a
    /// deployment that could never start fails before it begins; returns
    /// the exact artifact it would run (for Docker: the image id its
    /// `image_id`, else its tag, names now), which the caller records and
    /// gives back in the workload so every later start of the version runs
    /// that very artifact. The default has nothing to check or pin.
    async fn check(&self, spec: &InstanceSpec) -> Result<Option<String>, RuntimeError> {
        let _ = spec;
        Ok(None)
    }

    /// Removes images no longer needed (Docker: by id), each only if no
    /// container uses it; returns those removed. The default, for a
    /// runtime without images, removes nothing.
    async fn remove_images(&self, ids: &[String]) -> Result<Vec<String>, RuntimeError> {
        let _ = ids;
        Ok(Vec::new())
    }

    /// The images this runtime's builds made for `service` (see
    /// [`BuiltImage`]), deployed or not, so that those never deployed are
    /// pruned too. Only the scope's own: never an image someone else
    /// built. The default, for a runtime without images, has none.
    async fn built_images(&self, service: &ServiceName) -> Result<Vec<BuiltImage>, RuntimeError> {
        let _ = service;
        Ok(Vec::new())
    }

    /// Stops an instance: SIGTERM (or the runtime's equivalent), then after
    /// `grace` SIGKILL. Returns once it is gone. Stopping a stopped instance
    /// is fine (idempotent).
    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<InstanceStatus, RuntimeError>;

    /// The instances of a service this runtime knows, running or exited
    /// (started or adopted by this runtime object).
    async fn list(&self, service: &ServiceName) -> Result<Vec<InstanceStatus>, RuntimeError>;

    /// Forgets a stopped instance: it leaves `list` (a long-lived server
    /// would otherwise keep every instance it ever ran). Forgetting a
    /// running or unknown instance does nothing.
    async fn forget(&self, id: &InstanceId) {
        let _ = id;
    }

    /// Re-attaches to an instance that a previous controller started, from
    /// the status it recorded. When that very instance still runs (same
    /// process and same start time, not merely the same pid), it is
    /// registered as running and watched for its exit; otherwise it is
    /// registered as exited (keeping the recorded exit when there was one)
    /// and the returned status says so. Either way `stop` and `list` then
    /// treat it like an instance this runtime started. Adopting an id this
    /// runtime already knows returns its current status.
    ///
    /// The default, for a runtime that cannot re-attach, reports the
    /// instance as exited without registering it.
    async fn adopt(&self, known: &InstanceStatus) -> Result<InstanceStatus, RuntimeError> {
        let mut status = known.clone();
        if status.state == InstanceState::Running {
            status.state = InstanceState::Exited {
                code: None,
                signal: None,
            };
        }
        Ok(status)
    }

    /// Ends the orphans of this runtime's scope: every instance on the
    /// machine that a runtime of the same scope started, that is neither in
    /// `keep` nor known to this runtime object (started or adopted). They
    /// get the runtime's termination signal, then after a short grace a
    /// forced kill. Returns their ids, sorted. Instances of other scopes are
    /// never touched.
    ///
    /// The default, for a runtime that cannot find such instances, ends
    /// nothing.
    async fn sweep(&self, keep: &[InstanceId]) -> Result<Vec<InstanceId>, RuntimeError> {
        let _ = keep;
        Ok(Vec::new())
    }

    /// The last `tail` lines of an instance's output (stdout and stderr
    /// interleaved as the runtime kept them), oldest first, or with
    /// `after` (an earlier answer's [`Output::cursor`]) every line written
    /// since. `Ok(None)` means this runtime keeps output in the file named
    /// by [`InstanceStatus::log`] and the caller reads it there (the
    /// default, the process runtime). An unknown id is
    /// [`RuntimeError::NotFound`].
    async fn logs(
        &self,
        id: &InstanceId,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Option<Output>, RuntimeError> {
        let _ = (id, tail, after);
        Ok(None)
    }

    /// Follows an instance's output: first what [`Runtime::logs`] with the
    /// same `tail` and `after` gives, then each line as it is written,
    /// with no polling, stdout and stderr told apart; the stream ends once
    /// the instance has stopped (or was removed) and what it wrote was
    /// given, and dropping it stops the reading. An instance already gone
    /// gives what was kept of it and ends. `Ok(None)`: this runtime keeps
    /// output in the file named by [`InstanceStatus::log`] (the default,
    /// the process runtime), to be followed there. An unknown id is
    /// [`RuntimeError::NotFound`].
    async fn follow_logs(
        &self,
        id: &InstanceId,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Option<LogStream>, RuntimeError> {
        let _ = (id, tail, after);
        Ok(None)
    }

    /// Sends `signal` (`SIGUSR1`, `SIGHUP`, ...: a name from the spec's
    /// `drain.notify`) to a running instance, as the runtime sends its
    /// termination signal. The default, for a runtime that cannot, says so.
    async fn signal(&self, id: &InstanceId, signal: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Stop {
            id: id.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("the {} runtime cannot send {signal}", self.name()),
            ),
        })
    }

    /// What a running instance consumes now; `None` when it is unknown, no
    /// longer runs, or the runtime cannot tell (the default).
    async fn usage(&self, id: &InstanceId) -> Option<Usage> {
        let _ = id;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oom_kill_is_said_with_its_limit() {
        let mut s = InstanceStatus {
            id: InstanceId("web-1".into()),
            service: ServiceName::new("web").unwrap(),
            version: Version::new("v1").unwrap(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            pid: None,
            proc_start: None,
            started_at: Millis(0),
            state: InstanceState::Exited {
                code: Some(137),
                signal: None,
            },
            identity: None,
            oom_killed: false,
            memory_limit: Some(64 << 20),
            log: None,
            own_health: None,
        };
        assert_eq!(s.state_words(), "exited with code 137");
        s.oom_killed = true;
        assert_eq!(
            s.state_words(),
            "killed by the OOM killer (memory limit 64 MiB)"
        );
        s.memory_limit = Some(3 << 19);
        assert_eq!(
            s.state_words(),
            "killed by the OOM killer (memory limit 1.5 MiB)"
        );
        s.memory_limit = None;
        assert_eq!(s.state_words(), "killed by the OOM killer");
        s.state = InstanceState::Running;
        assert_eq!(s.state_words(), "running");
    }
}
