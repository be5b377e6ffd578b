//! The runtime chosen per service: [`Runtimes`] is one [`Runtime`] made of
//! the process runtime and, when the spec has a `docker:` service, the
//! Docker runtime, so process and Docker services run side by side under
//! one server and every caller (deployer, supervisor, resume) keeps talking
//! to one runtime.
//!
//! What goes where is decided by the instance, never by a table that could
//! drift from it: a start by its workload (a container goes to Docker, a
//! program to the process runtime); an adoption by the identity the record
//! carries (a container id is Docker's; the process runtime proves identity
//! with pid and start time and records none); every other call by the
//! runtime that started or adopted the instance, or else by asking each in
//! turn. A service's list and the sweep are the union of both.

use hatoba_core::{Millis, ServiceName};
use hatoba_runtime::{
    InstanceId, InstanceSpec, InstanceStatus, Runtime, RuntimeError, Usage, Workload,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Process,
    Docker,
}

/// The process runtime, and the Docker runtime when a spec needs it.
#[derive(Debug)]
pub struct Runtimes {
    process: Arc<dyn Runtime>,
    docker: Option<Arc<dyn Runtime>>,
    owner: Mutex<HashMap<InstanceId, Which>>,
}

impl Runtimes {
    /// Processes only, until [`Runtimes::with_docker`].
    pub fn new(process: Arc<dyn Runtime>) -> Runtimes {
        Runtimes {
            process,
            docker: None,
            owner: Mutex::new(HashMap::new()),
        }
    }

    /// Containers go to `docker`.
    #[must_use]
    pub fn with_docker(mut self, docker: Arc<dyn Runtime>) -> Runtimes {
        self.docker = Some(docker);
        self
    }

    fn get(&self, which: Which) -> Option<&Arc<dyn Runtime>> {
        match which {
            Which::Process => Some(&self.process),
            Which::Docker => self.docker.as_ref(),
        }
    }

    fn note(&self, id: &InstanceId, which: Which) {
        self.owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), which);
    }

    /// The runtimes to ask about an instance: its owner when known, else all.
    fn candidates(&self, id: &InstanceId) -> Vec<&Arc<dyn Runtime>> {
        let known = self
            .owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied();
        match known.and_then(|w| self.get(w)) {
            Some(rt) => vec![rt],
            None => std::iter::once(&self.process)
                .chain(self.docker.as_ref())
                .collect(),
        }
    }
}

/// The Docker runtime was asked for but none is connected: a spec without
/// a `docker:` service never starts a container.
fn no_docker(service: &ServiceName) -> RuntimeError {
    RuntimeError::Unsupported {
        runtime: "process",
        kind: "container",
        service: service.clone(),
    }
}

#[async_trait::async_trait]
impl Runtime for Runtimes {
    fn name(&self) -> &'static str {
        if self.docker.is_some() {
            "process+docker"
        } else {
            "process"
        }
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
        now: Millis,
    ) -> Result<InstanceStatus, RuntimeError> {
        let which = match spec.workload {
            Workload::Process { .. } => Which::Process,
            Workload::Container(_) => Which::Docker,
        };
        let rt = self.get(which).ok_or_else(|| no_docker(&spec.service))?;
        let status = rt.start(spec, now).await?;
        self.note(&status.id, which);
        Ok(status)
    }

    async fn check(&self, spec: &InstanceSpec) -> Result<Option<String>, RuntimeError> {
        match spec.workload {
            Workload::Process { .. } => self.process.check(spec).await,
            Workload::Container(_) => match &self.docker {
                Some(d) => d.check(spec).await,
                None => Err(no_docker(&spec.service)),
            },
        }
    }

    async fn remove_images(&self, ids: &[String]) -> Result<Vec<String>, RuntimeError> {
        match &self.docker {
            Some(d) => d.remove_images(ids).await,
            None => Ok(Vec::new()),
        }
    }

    async fn built_images(
        &self,
        service: &ServiceName,
    ) -> Result<Vec<hatoba_runtime::BuiltImage>, RuntimeError> {
        match &self.docker {
            Some(d) => d.built_images(service).await,
            None => Ok(Vec::new()),
        }
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<InstanceStatus, RuntimeError> {
        let mut last = RuntimeError::NotFound { id: id.clone() };
        for rt in self.candidates(id) {
            match rt.stop(id, grace).await {
                Err(e @ RuntimeError::NotFound { .. }) => last = e,
                r => return r,
            }
        }
        Err(last)
    }

    async fn signal(&self, id: &InstanceId, signal: &str) -> Result<(), RuntimeError> {
        let mut last = RuntimeError::NotFound { id: id.clone() };
        for rt in self.candidates(id) {
            match rt.signal(id, signal).await {
                Err(e @ RuntimeError::NotFound { .. }) => last = e,
                r => return r,
            }
        }
        Err(last)
    }

    async fn list(&self, service: &ServiceName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut all = self.process.list(service).await?;
        if let Some(d) = &self.docker {
            all.extend(d.list(service).await?);
        }
        Ok(all)
    }

    async fn forget(&self, id: &InstanceId) {
        for rt in self.candidates(id) {
            rt.forget(id).await;
        }
    }

    async fn adopt(&self, known: &InstanceStatus) -> Result<InstanceStatus, RuntimeError> {
        let which = if known.identity.is_some() {
            Which::Docker
        } else {
            Which::Process
        };
        let status = match self.get(which) {
            Some(rt) => rt.adopt(known).await?,
            // A container recorded by a run whose spec had Docker services,
            // resumed with no engine connected: it cannot be re-attached.
            None => {
                let mut s = known.clone();
                s.state = hatoba_runtime::InstanceState::Exited {
                    code: None,
                    signal: None,
                };
                return Ok(s);
            }
        };
        self.note(&status.id, which);
        Ok(status)
    }

    async fn sweep(&self, keep: &[InstanceId]) -> Result<Vec<InstanceId>, RuntimeError> {
        let mut swept = self.process.sweep(keep).await?;
        if let Some(d) = &self.docker {
            swept.extend(d.sweep(keep).await?);
        }
        swept.sort();
        Ok(swept)
    }

    async fn logs(
        &self,
        id: &InstanceId,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Option<hatoba_runtime::Output>, RuntimeError> {
        let mut last = RuntimeError::NotFound { id: id.clone() };
        // Docker first: it says NotFound for an instance it does not know,
        // where the process runtime answers "read the log file" for any id.
        for rt in self.candidates(id).into_iter().rev() {
            match rt.logs(id, tail, after).await {
                Err(e @ RuntimeError::NotFound { .. }) => last = e,
                r => return r,
            }
        }
        Err(last)
    }

    async fn follow_logs(
        &self,
        id: &InstanceId,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Option<hatoba_runtime::LogStream>, RuntimeError> {
        let mut last = RuntimeError::NotFound { id: id.clone() };
        // Docker first, as for `logs`.
        for rt in self.candidates(id).into_iter().rev() {
            match rt.follow_logs(id, tail, after).await {
                Err(e @ RuntimeError::NotFound { .. }) => last = e,
                r => return r,
            }
        }
        Err(last)
    }

    async fn usage(&self, id: &InstanceId) -> Option<Usage> {
        for rt in self.candidates(id) {
            if let Some(u) = rt.usage(id).await {
                return Some(u);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail by panicking

    use super::*;
    use hatoba_runtime::{ContainerWorkload, InstanceState};
    use std::collections::BTreeMap;

    /// A runtime that runs nothing and says what it was asked, by name.
    #[derive(Debug)]
    struct Named {
        name: &'static str,
        known: Mutex<Vec<InstanceStatus>>,
    }

    impl Named {
        fn new(name: &'static str) -> Arc<Named> {
            Arc::new(Named {
                name,
                known: Mutex::new(Vec::new()),
            })
        }
        fn status(&self, id: &str, identity: Option<&str>) -> InstanceStatus {
            InstanceStatus {
                id: InstanceId(id.to_owned()),
                service: "web".parse().unwrap(),
                version: "v1".parse().unwrap(),
                addr: "127.0.0.1:1".parse().unwrap(),
                pid: None,
                proc_start: None,
                started_at: Millis(0),
                state: InstanceState::Running,
                identity: identity.map(str::to_owned),
                oom_killed: false,
                memory_limit: None,
                log: None,
                own_health: None,
            }
        }
    }

    #[async_trait::async_trait]
    impl Runtime for Named {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn start(&self, _: &InstanceSpec, _: Millis) -> Result<InstanceStatus, RuntimeError> {
            let s = self.status(&format!("{}-1", self.name), None);
            self.known.lock().unwrap().push(s.clone());
            Ok(s)
        }
        async fn stop(&self, id: &InstanceId, _: Duration) -> Result<InstanceStatus, RuntimeError> {
            let known = self.known.lock().unwrap();
            let s = known.iter().find(|s| &s.id == id).cloned();
            s.ok_or_else(|| RuntimeError::NotFound { id: id.clone() })
        }
        async fn list(&self, _: &ServiceName) -> Result<Vec<InstanceStatus>, RuntimeError> {
            Ok(self.known.lock().unwrap().clone())
        }
        async fn adopt(&self, known: &InstanceStatus) -> Result<InstanceStatus, RuntimeError> {
            let mut s = known.clone();
            s.log = Some(self.name.into());
            self.known.lock().unwrap().push(s.clone());
            Ok(s)
        }
        async fn sweep(&self, _: &[InstanceId]) -> Result<Vec<InstanceId>, RuntimeError> {
            Ok(vec![InstanceId(format!("{}-orphan", self.name))])
        }
        async fn signal(&self, id: &InstanceId, _: &str) -> Result<(), RuntimeError> {
            self.stop(id, Duration::ZERO).await.map(|_| ())
        }
    }

    fn spec(workload: Workload) -> InstanceSpec {
        InstanceSpec {
            service: "web".parse().unwrap(),
            version: "v1".parse().unwrap(),
            workload,
            env: BTreeMap::new(),
            working_dir: std::env::temp_dir(),
            secrets: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn each_instance_goes_to_the_runtime_of_its_kind() {
        let (process, docker) = (Named::new("process"), Named::new("docker"));
        let rt = Runtimes::new(process.clone()).with_docker(docker.clone());
        let container = spec(Workload::Container(ContainerWorkload::default()));
        let program = spec(Workload::Process {
            program: "web".to_owned(),
            args: Vec::new(),
        });
        assert_eq!(
            rt.start(&container, Millis(0)).await.unwrap().id.0,
            "docker-1"
        );
        assert_eq!(
            rt.start(&program, Millis(0)).await.unwrap().id.0,
            "process-1"
        );
        // Side by side: the service lists both.
        assert_eq!(rt.list(&"web".parse().unwrap()).await.unwrap().len(), 2);
        // A drain's signal reaches the runtime that started it.
        rt.signal(&InstanceId("process-1".to_owned()), "SIGUSR1")
            .await
            .unwrap();
        assert!(matches!(
            rt.signal(&InstanceId("nobody".to_owned()), "SIGUSR1").await,
            Err(RuntimeError::NotFound { .. })
        ));
        // Stop finds the one that started it.
        let stopped = rt
            .stop(&InstanceId("docker-1".to_owned()), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(stopped.id.0, "docker-1");
        assert!(matches!(
            rt.stop(&InstanceId("nobody".to_owned()), Duration::ZERO)
                .await,
            Err(RuntimeError::NotFound { .. })
        ));
        // A record with an identity is a container's; without, a process's.
        let c = rt
            .adopt(&process.status("web-v1-a", Some("c0ffee")))
            .await
            .unwrap();
        assert_eq!(c.log.as_deref(), Some(std::path::Path::new("docker")));
        let p = rt.adopt(&process.status("web-v1-b", None)).await.unwrap();
        assert_eq!(p.log.as_deref(), Some(std::path::Path::new("process")));
        // The sweep is both runtimes'.
        let swept: Vec<String> = rt
            .sweep(&[])
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.0)
            .collect();
        assert_eq!(swept, ["docker-orphan", "process-orphan"]);
    }

    #[tokio::test]
    async fn without_docker_a_container_is_refused_and_a_recorded_one_is_gone() {
        let process = Named::new("process");
        let rt = Runtimes::new(process.clone());
        let err = rt
            .start(
                &spec(Workload::Container(ContainerWorkload::default())),
                Millis(0),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err:?}");
        let err = rt
            .check(&spec(Workload::Container(ContainerWorkload::default())))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err:?}");
        let adopted = rt
            .adopt(&process.status("web-v1-a", Some("c0ffee")))
            .await
            .unwrap();
        assert!(matches!(adopted.state, InstanceState::Exited { .. }));
        assert!(
            process.known.lock().unwrap().is_empty(),
            "not handed to the process runtime"
        );
    }
}
