//! The local-process runtime: each instance is a child process in its own
//! process group, with a free port in `PORT`, the service's environment, its
//! working directory, and its stdout and stderr appended to
//! `LOG_DIR/<service>/<instance>.log`.
//!
//! Stopping sends SIGTERM to the whole group, waits up to the grace period,
//! then sends SIGKILL to the group, so a shell wrapper and its children go
//! together. Processes the instance left behind after its command returned
//! (a daemon it started, found by its `HATOBA_INSTANCE`) are ended the same
//! way, even when the command itself had already exited. An exit is observed by a waiter task and reported by `list`;
//! this runtime restarts nothing by itself (the controller decides).
//!
//! Ports: a free loopback port is found by binding port 0 and releasing it
//! just before the child starts; another process could take it in between,
//! in which case the instance fails to listen and the controller sees it
//! never becomes ready.
//!
//! # Outliving the controller: scope, adoption and the orphan sweep
//!
//! Instances are not killed when the runtime (or the whole controller) goes
//! away, even by SIGKILL: they lead their own process groups and nothing ties
//! their life to the controller's. Every instance carries two environment
//! variables: [`INSTANCE_ENV`] (`HATOBA_INSTANCE=<id>`) and [`SCOPE_ENV`]
//! (`HATOBA_SCOPE=<scope>`), where the scope names the controller that owns
//! it (the controller passes its state directory to
//! [`ProcessRuntime::with_scope`]; by default it is the absolute path of
//! the log directory). Each status also records the process's start time
//! ([`InstanceStatus::proc_start`], field 22 of `/proc/<pid>/stat`).
//!
//! A restarted controller builds a new runtime with the same scope and
//! calls [`Runtime::adopt`] with each status it recorded. The instance is
//! taken as still running only if `/proc/<pid>` exists, is not a zombie,
//! started at the recorded time, and its environment holds
//! `HATOBA_INSTANCE=<id>`; a record without a pid or a start time is never
//! adopted as running. The start time is what makes this safe: pids are
//! recycled, and after a reboot or a long outage the recorded pid may
//! belong to an unrelated process, which the runtime would otherwise signal
//! on `stop`. A pid together with its start time names one process for the
//! machine's whole uptime; the environment check guards against the
//! record itself being wrong. An adopted instance is not our child, so its
//! exit is noticed by polling `/proc/<pid>` and reported without exit code
//! or signal (only its parent could learn those). Before each signal, `stop`
//! checks the start time again.
//!
//! A controller can die between starting an instance and recording it.
//! [`Runtime::sweep`] finds such orphans: it reads the environment of every
//! process it may read, and ends (SIGTERM to the group, SIGKILL after a
//! short grace) those of its own scope whose id is neither kept by the
//! caller nor known to the runtime (an instance being started counts as
//! known). Processes of other scopes, and those whose `/proc` entries it
//! cannot read, are left alone.
//!
//! [`Runtime::usage`] sums resident memory (`/proc/<pid>/statm`) and CPU
//! time (`/proc/<pid>/stat`, including waited-for children) over the
//! instance's process group. [`ProcessRuntime::rotate_logs`] keeps the logs
//! within [`LogLimits`] by copy and truncate (see [`LogRotation`]); the
//! controller calls it periodically, the runtime runs nothing on its own.
//!
//! Over 800 lines, not yet split: starting, stopping, adopting and
//! sweeping share the instance table and the scope and start-time checks
//! (`/proc` reading and logs are out already, in `procfs` and `logs`). The
//! next split is the orphan sweep (`find_scoped`, `signal_orphans`,
//! `end_all`, `all_gone`) into a `sweep` module.

mod logs;
mod procfs;

pub use logs::{LogLimits, LogRotateError, LogRotation};

use async_trait::async_trait;
use hatoba_core::{Millis, ServiceName};
use hatoba_runtime::{
    InstanceId, InstanceSpec, InstanceState, InstanceStatus, Runtime, RuntimeError, Usage, Workload,
};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// The environment variable that carries an instance's id.
pub const INSTANCE_ENV: &str = "HATOBA_INSTANCE";
/// The environment variable that carries the scope of the runtime that
/// started an instance.
pub const SCOPE_ENV: &str = "HATOBA_SCOPE";

/// Stands for the instance's port in [`InstanceSpec`] arguments and
/// environment values; replaced when the instance starts.
pub const PORT_PLACEHOLDER: &str = "${PORT}";

/// Replaces `${PORT}` with the port and `${NAME}` of each secret with its
/// value, in one pass: a value is never searched again, so a secret that
/// contains `${PORT}` or another secret's name stays as it is.
fn fill_placeholders(
    text: &str,
    port: &str,
    secrets: &std::collections::BTreeMap<String, hatoba_core::SecretValue>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            let value = if name == "PORT" {
                Some(port)
            } else {
                secrets.get(name).map(hatoba_core::SecretValue::expose)
            };
            value.map(|v| (v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// After SIGKILL, how long to wait for the kernel to reap the group.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long swept orphans get between SIGTERM and SIGKILL, by default.
const SWEEP_GRACE: Duration = Duration::from_secs(2);
/// Versions of each service whose stopped instances keep their logs.
pub const DEFAULT_LOG_VERSIONS: usize = 5;
/// How often an adopted instance (not our child) is checked for its exit.
const ADOPTED_POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Entry {
    status: InstanceStatus,
    exited: watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct Registry {
    entries: HashMap<InstanceId, Entry>,
    /// Ids being started: already in a child's environment, not yet in
    /// `entries`; a concurrent sweep must not take them for orphans.
    starting: HashSet<InstanceId>,
}

/// Runs instances as local child processes.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    log_dir: PathBuf,
    scope: String,
    log_limits: LogLimits,
    log_versions: usize,
    sweep_grace: Duration,
    registry: Arc<Mutex<Registry>>,
    /// Variables of the controller's own environment that instances do
    /// not inherit (the secret key when it comes from the environment).
    withheld: Vec<String>,
}

impl ProcessRuntime {
    /// A runtime that writes instance logs under `log_dir`, with the
    /// default scope (the absolute path of `log_dir`) and log limits.
    pub fn new(log_dir: impl Into<PathBuf>) -> ProcessRuntime {
        let log_dir = log_dir.into();
        let scope = std::path::absolute(&log_dir)
            .unwrap_or_else(|_| log_dir.clone())
            .to_string_lossy()
            .into_owned();
        ProcessRuntime {
            log_dir,
            scope,
            log_limits: LogLimits::default(),
            log_versions: DEFAULT_LOG_VERSIONS,
            sweep_grace: SWEEP_GRACE,
            registry: Arc::new(Mutex::new(Registry::default())),
            withheld: Vec::new(),
        }
    }

    /// The same runtime, not passing these variables of its own
    /// environment on to instances (`HATOBA_SECRET_KEY`: an instance must
    /// not be able to open every secret).
    #[must_use]
    pub fn withholding_env(mut self, names: &[&str]) -> ProcessRuntime {
        self.withheld = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// The same runtime with another scope: the name of the controller that
    /// owns its instances (the controller's state directory). Runtimes of
    /// one scope adopt and sweep each other's instances; no other runtime
    /// touches them.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> ProcessRuntime {
        self.scope = scope.into();
        self
    }

    /// The same runtime with other log limits (see [`Self::rotate_logs`]).
    #[must_use]
    pub fn with_log_limits(mut self, limits: LogLimits) -> ProcessRuntime {
        self.log_limits = limits;
        self
    }

    /// The same runtime keeping the logs of stopped instances for the
    /// `versions` most recent versions of each service (5 by default, at
    /// least 1); older versions' logs are deleted when an instance stops
    /// and at rotation. A running instance's log is never deleted.
    #[must_use]
    pub fn with_log_versions(mut self, versions: usize) -> ProcessRuntime {
        self.log_versions = versions.max(1);
        self
    }

    /// Deletes the logs of stopped instances of `service` beyond the
    /// newest [`with_log_versions`](Self::with_log_versions) versions;
    /// returns the files deleted. Blocking file IO.
    pub fn prune_logs(&self, service: &ServiceName) -> std::io::Result<Vec<PathBuf>> {
        let running: HashSet<String> = self.with(|r| {
            r.entries
                .values()
                .filter(|e| {
                    &e.status.service == service
                        && !matches!(e.status.state, InstanceState::Exited { .. })
                })
                .map(|e| e.status.id.0.clone())
                .chain(r.starting.iter().map(|i| i.0.clone()))
                .collect()
        });
        logs::prune_versions(
            &self.log_dir.join(service.as_str()),
            self.log_versions,
            &running,
        )
    }

    /// The same runtime giving swept orphans `grace` between SIGTERM and
    /// SIGKILL (2 s by default).
    #[must_use]
    pub fn with_sweep_grace(mut self, grace: Duration) -> ProcessRuntime {
        self.sweep_grace = grace;
        self
    }

    /// The scope, as put in each instance's `HATOBA_SCOPE`.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The log limits.
    pub fn log_limits(&self) -> LogLimits {
        self.log_limits
    }

    /// Rotates the log of every instance this runtime knows (started or
    /// adopted, running or exited) that is over the size limit: older
    /// copies shift up (`<id>.log.1` → `.2`, ...; beyond the limit dropped),
    /// the log is copied to `<id>.log.1` and truncated. The instance keeps
    /// writing to the same file, now from its start, since its output was
    /// opened for appending. It does blocking file IO (up to a copy of
    /// `max_bytes` per log); from async code, call it in
    /// `tokio::task::spawn_blocking` (the runtime is cheap to clone).
    pub fn rotate_logs(&self) -> LogRotation {
        let paths: BTreeSet<PathBuf> = self.with(|r| {
            r.entries
                .values()
                .filter_map(|e| e.status.log.clone())
                .collect()
        });
        let mut out = LogRotation::default();
        let services: BTreeSet<ServiceName> = self.with(|r| {
            r.entries
                .values()
                .map(|e| e.status.service.clone())
                .collect()
        });
        for service in &services {
            // Best effort: a log that cannot be deleted now is tried again.
            let _ = self.prune_logs(service);
        }
        for path in paths {
            match logs::rotate(&path, self.log_limits) {
                Ok(true) => out.rotated.push(path),
                Ok(false) => {}
                Err(e) => out.failed.push(e),
            }
        }
        out
    }

    fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A fresh id, reserved in `starting`.
    fn reserve_id(&self, spec: &InstanceSpec) -> InstanceId {
        self.with(|r| {
            loop {
                let id = InstanceId(format!(
                    "{}-{}-{:04x}",
                    spec.service,
                    spec.version,
                    rand::random::<u16>()
                ));
                if !r.entries.contains_key(&id) && r.starting.insert(id.clone()) {
                    return id;
                }
            }
        })
    }

    /// Spawns the child for a reserved id; registering it is the caller's.
    fn spawn(
        &self,
        spec: &InstanceSpec,
        id: &InstanceId,
        now: Millis,
    ) -> Result<(InstanceStatus, tokio::process::Child), RuntimeError> {
        let Workload::Process {
            program: spec_program,
            args: spec_args,
        } = &spec.workload
        else {
            return Err(RuntimeError::Unsupported {
                runtime: "process",
                kind: spec.workload.kind(),
                service: spec.service.clone(),
            });
        };
        let port = free_port(&spec.service)?;
        let resources = |what: String| {
            let service = spec.service.clone();
            move |source| RuntimeError::Resources {
                service,
                what,
                source,
            }
        };
        let dir = self.log_dir.join(spec.service.as_str());
        logs::create_log_dir(&dir).map_err(resources(format!(
            "cannot create the log directory {}",
            dir.display()
        )))?;
        let log_path = dir.join(format!("{id}.log"));
        // Appending (each write goes to the end of the file as it is then,
        // which is what lets `rotate_logs` truncate it under the instance),
        // mode 0600.
        let log = logs::open_log(&log_path).map_err(resources(format!(
            "cannot open the log file {}",
            log_path.display()
        )))?;
        logs::write_version(&log_path, spec.version.as_str()).map_err(resources(format!(
            "cannot write the version beside the log file {}",
            log_path.display()
        )))?;
        let log_err = log.try_clone().map_err(resources(format!(
            "cannot open the log file {}",
            log_path.display()
        )))?;
        let program = if spec_program.contains('/') && !spec_program.starts_with('/') {
            spec.working_dir.join(spec_program).display().to_string()
        } else {
            spec_program.to_owned()
        };
        // `${PORT}` in arguments and environment values is the port chosen
        // here, for programs that take their port on the command line.
        let port_text = port.to_string();
        let fill = |s: &String| fill_placeholders(s, &port_text, &spec.secrets);
        let mut cmd = tokio::process::Command::new(&program);
        for name in &self.withheld {
            cmd.env_remove(name);
        }
        cmd.args(spec_args.iter().map(fill))
            .envs(spec.env.iter().map(|(k, v)| (k, fill(v))))
            .env("PORT", &port_text)
            .env(INSTANCE_ENV, &id.0)
            .env(SCOPE_ENV, &self.scope)
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Its own group, so a stop reaches its children too, and a Ctrl-C
            // on the terminal that runs Hatoba does not reach it.
            .process_group(0)
            // Instances outlive a restart of the controller.
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|source| {
            // A relative path with a slash runs from the working directory.
            let relative = Path::new(spec_program);
            let resolved = (relative.is_relative() && spec_program.contains('/'))
                .then(|| lexically_joined(&spec.working_dir, relative));
            // A bare name is looked up on the PATH `hatoba up` runs with,
            // which is not always the operator's shell's: say so.
            let source = if source.kind() == std::io::ErrorKind::NotFound
                && !spec_program.contains('/')
            {
                std::io::Error::new(
                    source.kind(),
                    format!(
                        "{source}: no `{spec_program}` in any directory of the PATH `hatoba up` runs with (give a full path, or start `hatoba up` with it on its PATH)"
                    ),
                )
            } else {
                source
            };
            RuntimeError::Spawn {
                service: spec.service.clone(),
                program: spec_program.to_owned(),
                resolved,
                source,
            }
        })?;
        let pid = child.id();
        // The child is not reaped before its waiter runs, so its entry is
        // there (perhaps as a zombie) to read the start time from.
        let proc_start = pid.and_then(procfs::stat).map(|s| s.start);
        let status = InstanceStatus {
            id: id.clone(),
            service: spec.service.clone(),
            version: spec.version.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid,
            proc_start,
            started_at: now,
            state: InstanceState::Running,
            log: Some(log_path),
            identity: None,
            oom_killed: false,
            memory_limit: None,
            own_health: None,
        };
        Ok((status, child))
    }
}

fn free_port(service: &ServiceName) -> Result<u16, RuntimeError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| RuntimeError::Resources {
            service: service.clone(),
            what: "no free loopback port".to_owned(),
            source,
        })
}

/// Records an exit in the registry (if it is still there) and wakes stops.
fn mark_exited(
    registry: &Mutex<Registry>,
    id: &InstanceId,
    state: InstanceState,
    tx: &watch::Sender<bool>,
) {
    if let Some(e) = registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entries
        .get_mut(id)
    {
        e.status.state = state;
    }
    let _ = tx.send(true);
}

/// Watches an adopted instance by polling `/proc`; ends with it, or when
/// the runtime it belongs to is gone.
fn watch_adopted(
    registry: Weak<Mutex<Registry>>,
    id: InstanceId,
    pid: u32,
    start: u64,
    tx: watch::Sender<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(ADOPTED_POLL).await;
            if registry.strong_count() == 0 {
                return;
            }
            if !procfs::alive(pid, start) {
                break;
            }
        }
        if let Some(registry) = registry.upgrade() {
            let state = InstanceState::Exited {
                code: None,
                signal: None,
            };
            mark_exited(&registry, &id, state, &tx);
        }
    });
}

/// Whether `known` names a live process that is that instance.
fn is_instance(known: &InstanceStatus) -> bool {
    let (Some(pid), Some(start)) = (known.pid, known.proc_start) else {
        return false;
    };
    procfs::alive(pid, start)
        && procfs::environ(pid)
            .is_some_and(|env| procfs::env_value(&env, INSTANCE_ENV) == Some(known.id.0.as_bytes()))
}

/// Whether it is still safe to signal `pid` as the instance that started
/// at `start` (an unknown start time cannot be checked and is trusted).
fn still_same(pid: u32, start: Option<u64>) -> bool {
    match start {
        Some(start) => procfs::stat(pid).is_some_and(|s| s.start == start),
        None => true,
    }
}

/// `dir` joined with `rel`, `.` and `..` folded away without asking the
/// file system (the path may not exist: that is what is being reported).
fn lexically_joined(dir: &Path, rel: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in dir.components().chain(rel.components()) {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A process of this runtime's scope that nobody knows.
#[derive(Debug, Clone)]
struct Orphan {
    id: InstanceId,
    pid: u32,
    start: u64,
    pgrp: i32,
}

/// The live processes carrying `scope` and an instance id `wanted` picks.
fn find_scoped(
    scope: &str,
    wanted: impl Fn(&InstanceId) -> bool,
) -> Result<Vec<Orphan>, RuntimeError> {
    let me = std::process::id();
    let pids = procfs::pids().map_err(|source| RuntimeError::Inspect {
        what: "cannot list /proc".to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for pid in pids {
        if pid == me {
            continue;
        }
        // Another user's process, or one that ended meanwhile: skipped.
        let Some(env) = procfs::environ(pid) else {
            continue;
        };
        if procfs::env_value(&env, SCOPE_ENV) != Some(scope.as_bytes()) {
            continue;
        }
        let Some(id) = procfs::env_value(&env, INSTANCE_ENV)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| InstanceId(v.to_owned()))
        else {
            continue;
        };
        if !wanted(&id) {
            continue;
        }
        let Some(stat) = procfs::stat(pid).filter(|s| !s.has_ended()) else {
            continue;
        };
        out.push(Orphan {
            id,
            pid,
            start: stat.start,
            pgrp: stat.pgrp,
        });
    }
    Ok(out)
}

/// Sends `signal` to the groups of `orphans` that still live: to the whole
/// group, unless that group is the controller's own (then to the process).
fn signal_orphans(orphans: &[Orphan], signal: Signal) -> Result<(), RuntimeError> {
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut groups = HashSet::new();
    for o in orphans.iter().filter(|o| procfs::alive(o.pid, o.start)) {
        let sent = if o.pgrp > 1 && o.pgrp != own_group {
            if !groups.insert(o.pgrp) {
                continue;
            }
            killpg(Pid::from_raw(o.pgrp), signal)
        } else {
            match i32::try_from(o.pid) {
                Ok(pid) => kill(Pid::from_raw(pid), signal),
                Err(_) => continue,
            }
        };
        match sent {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(RuntimeError::Stop {
                    id: o.id.clone(),
                    source: std::io::Error::from(e),
                });
            }
        }
    }
    Ok(())
}

/// Ends `procs`: SIGTERM to their groups, SIGKILL to what is left after
/// `grace`.
async fn end_all(procs: &[Orphan], grace: Duration) -> Result<(), RuntimeError> {
    if procs.is_empty() {
        return Ok(());
    }
    signal_orphans(procs, Signal::SIGTERM)?;
    if !all_gone(procs, grace).await {
        signal_orphans(procs, Signal::SIGKILL)?;
        let _ = all_gone(procs, KILL_WAIT).await;
    }
    Ok(())
}

/// Polls until none of `orphans` lives or `deadline` has passed; true if
/// all are gone.
async fn all_gone(orphans: &[Orphan], deadline: Duration) -> bool {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if !orphans.iter().any(|o| procfs::alive(o.pid, o.start)) {
            return true;
        }
        let waited = started.elapsed();
        if waited >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - waited)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
        now: Millis,
    ) -> Result<InstanceStatus, RuntimeError> {
        let id = self.reserve_id(spec);
        let spawned = self.spawn(spec, &id, now);
        let (tx, rx) = watch::channel(false);
        self.with(|r| {
            r.starting.remove(&id);
            if let Ok((status, _)) = &spawned {
                r.entries.insert(
                    id.clone(),
                    Entry {
                        status: status.clone(),
                        exited: rx,
                    },
                );
            }
        });
        let (status, mut child) = spawned?;
        let registry = Arc::clone(&self.registry);
        tokio::spawn(async move {
            let ended = child.wait().await;
            let state = match ended {
                Ok(s) => InstanceState::Exited {
                    code: s.code(),
                    signal: s.signal(),
                },
                Err(_) => InstanceState::Exited {
                    code: None,
                    signal: None,
                },
            };
            mark_exited(&registry, &id, state, &tx);
        });
        Ok(status)
    }

    async fn signal(&self, id: &InstanceId, signal: &str) -> Result<(), RuntimeError> {
        let bad = |why: String| RuntimeError::Stop {
            id: id.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
        };
        let signal: Signal = signal
            .parse()
            .map_err(|_| bad(format!("`{signal}` is not a signal")))?;
        let (pid, start, exited) = self
            .with(|r| {
                r.entries
                    .get(id)
                    .map(|e| (e.status.pid, e.status.proc_start, *e.exited.borrow()))
            })
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        match pid {
            // Like the termination signal: to the instance's process group.
            Some(pid) if !exited && still_same(pid, start) => signal_group(id, pid, signal),
            _ => Ok(()),
        }
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<InstanceStatus, RuntimeError> {
        let (pid, start, mut exited) = self
            .with(|r| {
                r.entries
                    .get(id)
                    .map(|e| (e.status.pid, e.status.proc_start, e.exited.clone()))
            })
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        let running = !*exited.borrow();
        if running && let Some(pid) = pid {
            if still_same(pid, start) {
                signal_group(id, pid, Signal::SIGTERM)?;
            }
            let gone = tokio::time::timeout(grace, exited.wait_for(|e| *e))
                .await
                .is_ok();
            if !gone {
                if still_same(pid, start) {
                    signal_group(id, pid, Signal::SIGKILL)?;
                }
                let _ = tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| *e)).await;
            }
        }
        // What the instance left behind: a command that started a daemon
        // and returned leaves it running, with the instance's environment.
        // Only after an exit this runtime saw (an instance whose adoption
        // was refused may be another controller's, alive).
        let seen_exit = self.with(|r| {
            r.entries.get(id).is_some_and(|e| {
                matches!(e.status.state, InstanceState::Exited { code, signal } if code.is_some() || signal.is_some())
            })
        });
        if seen_exit {
            let left = find_scoped(&self.scope, |i| i == id)?;
            end_all(&left, grace).await?;
        }
        let status = self
            .with(|r| r.entries.get(id).map(|e| e.status.clone()))
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        // Old versions' logs go once their instances are stopped. Best
        // effort: what cannot be deleted now is tried at the next stop.
        let me = self.clone();
        let service = status.service.clone();
        let _ = tokio::task::spawn_blocking(move || me.prune_logs(&service)).await;
        Ok(status)
    }

    async fn forget(&self, id: &InstanceId) {
        self.with(|m| {
            let stopped = m
                .entries
                .get(id)
                .is_some_and(|e| matches!(e.status.state, InstanceState::Exited { .. }));
            if stopped {
                m.entries.remove(id);
            }
        });
    }

    async fn list(&self, service: &ServiceName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut out: Vec<InstanceStatus> = self.with(|r| {
            r.entries
                .values()
                .filter(|e| &e.status.service == service)
                .map(|e| e.status.clone())
                .collect()
        });
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(out)
    }

    async fn adopt(&self, known: &InstanceStatus) -> Result<InstanceStatus, RuntimeError> {
        if let Some(s) = self.with(|r| r.entries.get(&known.id).map(|e| e.status.clone())) {
            return Ok(s);
        }
        let alive = is_instance(known);
        let mut status = known.clone();
        if alive {
            status.state = InstanceState::Running;
        } else if status.state == InstanceState::Running {
            status.state = InstanceState::Exited {
                code: None,
                signal: None,
            };
        }
        let (tx, rx) = watch::channel(!alive);
        let current = self.with(|r| {
            if let Some(e) = r.entries.get(&known.id) {
                // Adopted (or started) meanwhile by a concurrent call.
                return Some(e.status.clone());
            }
            r.entries.insert(
                known.id.clone(),
                Entry {
                    status: status.clone(),
                    exited: rx,
                },
            );
            None
        });
        if let Some(current) = current {
            return Ok(current);
        }
        if alive && let (Some(pid), Some(start)) = (status.pid, status.proc_start) {
            watch_adopted(
                Arc::downgrade(&self.registry),
                status.id.clone(),
                pid,
                start,
                tx,
            );
        }
        Ok(status)
    }

    async fn sweep(&self, keep: &[InstanceId]) -> Result<Vec<InstanceId>, RuntimeError> {
        let known: HashSet<InstanceId> = self.with(|r| {
            r.entries
                .keys()
                .chain(&r.starting)
                .chain(keep)
                .cloned()
                .collect()
        });
        let orphans = find_scoped(&self.scope, |id| !known.contains(id))?;
        end_all(&orphans, self.sweep_grace).await?;
        let ids: BTreeSet<InstanceId> = orphans.into_iter().map(|o| o.id).collect();
        Ok(ids.into_iter().collect())
    }

    async fn usage(&self, id: &InstanceId) -> Option<Usage> {
        let (pid, start) = self.with(|r| {
            r.entries
                .get(id)
                .filter(|e| e.status.state == InstanceState::Running)
                .map(|e| (e.status.pid, e.status.proc_start))
        })?;
        let pid = pid?;
        let leader = procfs::stat(pid).filter(|s| !s.has_ended())?;
        if start.is_some_and(|s| s != leader.start) {
            return None;
        }
        let group = i32::try_from(pid).ok()?;
        let page = procfs::page_size();
        let mut ticks = 0u64;
        let mut rss_bytes = 0u64;
        for p in procfs::pids().ok()? {
            let Some(stat) = procfs::stat(p).filter(|s| s.pgrp == group && !s.has_ended()) else {
                continue;
            };
            ticks = ticks.saturating_add(stat.ticks());
            let pages = procfs::resident_pages(p).unwrap_or(0);
            rss_bytes = rss_bytes.saturating_add(pages.saturating_mul(page));
        }
        Some(Usage {
            rss_bytes,
            cpu_seconds: ticks as f64 / procfs::ticks_per_second() as f64,
        })
    }
}

/// Signals a whole process group; a group that is already gone is fine.
fn signal_group(id: &InstanceId, pid: u32, signal: Signal) -> Result<(), RuntimeError> {
    let Ok(pid) = i32::try_from(pid) else {
        return Ok(());
    };
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(RuntimeError::Stop {
            id: id.clone(),
            source: std::io::Error::from(e),
        }),
    }
}
