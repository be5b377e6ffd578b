//! The local-process runtime: each instance is a child process in its own
//! process group, with a free port in `PORT`, the service's environment, its
//! working directory, and its stdout and stderr appended to
//! `LOG_DIR/<service>/<instance>.log`.
//!
//! Stopping sends SIGTERM to the whole group, waits up to the grace period,
//! then sends SIGKILL to the group, so a shell wrapper and its children go
//! together. An exit is observed by a waiter task and reported by `list`;
//! this runtime restarts nothing by itself (the controller decides).
//!
//! Ports: a free loopback port is found by binding port 0 and releasing it
//! just before the child starts; another process could take it in between,
//! in which case the instance fails to listen and the controller sees it
//! never becomes ready.

use async_trait::async_trait;
use hatoba_core::{Millis, ServiceName};
use hatoba_runtime::{
    InstanceId, InstanceSpec, InstanceState, InstanceStatus, Runtime, RuntimeError,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// After SIGKILL, how long to wait for the kernel to reap the group.
const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Entry {
    status: InstanceStatus,
    exited: watch::Receiver<bool>,
}

/// Runs instances as local child processes.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    log_dir: PathBuf,
    instances: Arc<Mutex<HashMap<InstanceId, Entry>>>,
}

impl ProcessRuntime {
    /// A runtime that writes instance logs under `log_dir`.
    pub fn new(log_dir: impl Into<PathBuf>) -> ProcessRuntime {
        ProcessRuntime {
            log_dir: log_dir.into(),
            instances: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<InstanceId, Entry>) -> T) -> T {
        f(&mut self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
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
        let id = InstanceId(format!(
            "{}-{}-{:04x}",
            spec.service,
            spec.version,
            rand::random::<u16>()
        ));
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
        std::fs::create_dir_all(&dir).map_err(resources(format!(
            "cannot create the log directory {}",
            dir.display()
        )))?;
        let log_path = dir.join(format!("{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(resources(format!(
                "cannot open the log file {}",
                log_path.display()
            )))?;
        let log_err = log.try_clone().map_err(resources(format!(
            "cannot open the log file {}",
            log_path.display()
        )))?;
        let program = if spec.program.contains('/') && !spec.program.starts_with('/') {
            spec.working_dir.join(&spec.program).display().to_string()
        } else {
            spec.program.clone()
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&spec.args)
            .envs(&spec.env)
            .env("PORT", port.to_string())
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Its own group, so a stop reaches its children too, and a Ctrl-C
            // on the terminal that runs Hatoba does not reach it.
            .process_group(0)
            // Instances outlive a restart of the controller.
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            service: spec.service.clone(),
            program: spec.program.clone(),
            source,
        })?;
        let pid = child.id();
        let status = InstanceStatus {
            id: id.clone(),
            service: spec.service.clone(),
            version: spec.version.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid,
            started_at: now,
            state: InstanceState::Running,
            log: Some(log_path),
        };
        let (tx, rx) = watch::channel(false);
        self.with(|m| {
            m.insert(
                id.clone(),
                Entry {
                    status: status.clone(),
                    exited: rx,
                },
            )
        });
        let instances = Arc::clone(&self.instances);
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
            if let Some(e) = instances
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(&id)
            {
                e.status.state = state;
            }
            let _ = tx.send(true);
        });
        Ok(status)
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<InstanceStatus, RuntimeError> {
        let (pid, mut exited) = self
            .with(|m| m.get(id).map(|e| (e.status.pid, e.exited.clone())))
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        let running = !*exited.borrow();
        if running && let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            signal_group(id, pid, Signal::SIGTERM)?;
            let gone = tokio::time::timeout(grace, exited.wait_for(|e| *e))
                .await
                .is_ok();
            if !gone {
                signal_group(id, pid, Signal::SIGKILL)?;
                let _ = tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| *e)).await;
            }
        }
        self.with(|m| m.get(id).map(|e| e.status.clone()))
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })
    }

    async fn list(&self, service: &ServiceName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut out: Vec<InstanceStatus> = self.with(|m| {
            m.values()
                .filter(|e| &e.status.service == service)
                .map(|e| e.status.clone())
                .collect()
        });
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(out)
    }
}

/// Signals a whole process group; a group that is already gone is fine.
fn signal_group(id: &InstanceId, pid: i32, signal: Signal) -> Result<(), RuntimeError> {
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(RuntimeError::Stop {
            id: id.clone(),
            source: std::io::Error::from(e),
        }),
    }
}
