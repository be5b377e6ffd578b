//! What `hatoba up` does after a restart, and after a rollout that stopped
//! on an error of its own: re-adopt what the previous run left, restore
//! what served, resume a rollout from its saved machine
//! ([`Server::resume`]), and put traffic back on what served when a
//! rollout's task fails ([`Server::after_failed_rollout`], invariant 13).
//! Operations that clients ask for are in `ops`, not here.

use super::{Server, ServiceState, StartError, error_chain, serving_route};
use crate::deployer::{
    DeployError, DeployRequest, Deployed, RolloutRecord, ServiceRecord, ServingRecord,
};
use crate::ops::log_end;
use crate::secrets::SecretEnv;
use hatoba_core::{DeploymentId, ServiceName};
use hatoba_runtime::{InstanceState, InstanceStatus};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use tokio::sync::mpsc;

impl Server {
    /// Brings back what the previous run of the server left: re-adopts the
    /// recorded instances, stops orphans, rebuilds the route tables and
    /// resumes rollouts in progress. Returns one line per thing done, for
    /// the operator.
    pub async fn resume(self: &Arc<Self>) -> Result<Vec<String>, StartError> {
        let mut report = Vec::new();
        for name in self.current().spec.secret_names(&self.environment) {
            if std::env::var_os(&name).is_some() {
                report.push(format!(
                    "`{name}` is in hatoba up's environment but declared a secret: that value is \
                     not used (store it with `hatoba secret set {name}`, value on stdin)"
                ));
            }
        }
        let mut loaded = Vec::new();
        let mut keep = Vec::new();
        for (name, state) in self.service_states() {
            let name = &name;
            let resume_err = |source| StartError::Resume {
                service: name.to_string(),
                source,
            };
            let record = state
                .deployer
                .load(name, &self.environment)
                .await
                .map_err(resume_err)?
                .unwrap_or_default();
            let mut adopted: HashMap<String, InstanceStatus> = HashMap::new();
            for r in record.instances() {
                let status = match self.runtime.adopt(&r.status(name)).await {
                    Ok(s) => s,
                    Err(e) => {
                        report.push(format!("{name}: instance {} not adopted: {e}", r.id));
                        let mut s = r.status(name);
                        s.state = InstanceState::Exited {
                            code: None,
                            signal: None,
                        };
                        s
                    }
                };
                if status.state == InstanceState::Running {
                    keep.push(status.id.clone());
                }
                adopted.insert(r.id.clone(), status);
            }
            let alive = adopted
                .values()
                .filter(|s| s.state == InstanceState::Running)
                .count();
            if !adopted.is_empty() {
                report.push(format!(
                    "{name}: re-adopted {alive} of {} recorded instances",
                    adopted.len()
                ));
            }
            loaded.push((name.clone(), record, adopted));
        }
        report.extend(sweep_orphans(self.runtime.as_ref(), &keep).await);
        for (name, record, adopted) in loaded {
            let Some(state) = self.service(&name) else {
                continue;
            };
            self.resume_service(&name, &state, record, adopted, &mut report)
                .await
                .map_err(|source| StartError::Resume {
                    service: name.to_string(),
                    source,
                })?;
        }
        self.supervise();
        Ok(report)
    }

    /// Starts each service's supervisor loop (health, restarts, usage).
    fn supervise(self: &Arc<Self>) {
        for (name, state) in self.service_states() {
            self.supervise_one(&name, &state);
        }
    }

    /// Starts one service's supervisor loop (also for a service a reload
    /// added).
    pub(crate) fn supervise_one(self: &Arc<Self>, name: &ServiceName, state: &Arc<ServiceState>) {
        let task = tokio::spawn(crate::supervisor::run(crate::supervisor::Supervised {
            name: name.clone(),
            environment: self.environment.clone(),
            svc: state.serving_spec(),
            base_dir: self.base_dir.clone(),
            state: Arc::clone(state),
            runtime: Arc::clone(&self.runtime),
            store: Arc::clone(&self.store),
        }));
        self.supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.clone(), task.abort_handle()));
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Stops the supervisor loop of a service a reload removed.
    pub(crate) fn unsupervise(&self, name: &ServiceName) {
        self.supervisors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(n, s)| {
                if n == name {
                    s.abort();
                }
                n != name
            });
    }

    async fn resume_service(
        self: &Arc<Self>,
        name: &ServiceName,
        state: &Arc<ServiceState>,
        record: ServiceRecord,
        adopted: HashMap<String, InstanceStatus>,
        report: &mut Vec<String>,
    ) -> Result<(), DeployError> {
        let running = |s: &ServingRecord| Deployed {
            version: s.version.clone(),
            vars: s.vars.clone(),
            secrets: SecretEnv {
                versions: s.secrets.clone(),
                values: std::collections::BTreeMap::new(),
            },
            deployment: s.deployment.clone(),
            image_id: s.image_id.clone(),
            instances: s
                .instances
                .iter()
                .filter_map(|r| adopted.get(&r.id))
                .filter(|s| s.state == InstanceState::Running)
                .cloned()
                .collect(),
        };
        let live = self
            .store
            .live(name, &self.environment)
            .await
            .map_err(DeployError::from)?;
        match (record.rollout, live) {
            (Some(rollout), Some(live)) if live.id == rollout.deployment => {
                report.push(format!(
                    "{name}: resuming deployment {} of {}",
                    rollout.deployment, rollout.version
                ));
                self.resume_rollout(name, state, rollout, adopted, report)
                    .await?;
                return Ok(());
            }
            (rollout, live) => {
                if let Some(live) = live {
                    // Recorded, but the controller stopped before its first
                    // step: nothing of it runs.
                    let _ = self
                        .store
                        .transition(
                            &live.id,
                            hatoba_core::DeploymentStatus::Failed,
                            Some("the controller stopped before the rollout began".to_owned()),
                            crate::clock_now(),
                        )
                        .await;
                    report.push(format!(
                        "{name}: deployment {} never began: failed",
                        live.id
                    ));
                }
                let serving = match rollout {
                    // The rollout ended just before the controller stopped.
                    Some(r) => self.finished_rollout(r).await?,
                    None => record.serving,
                };
                let mut serving = serving.as_ref().map(running);
                if let Some(s) = serving.as_mut() {
                    s.secrets = self.reopen_secrets(name, &s.secrets.versions, report).await;
                }
                // Routed now: what was adopted running (it served before).
                let route = serving_route(name, serving.as_ref());
                if let Some(s) = &mut serving {
                    let adopted_running = s.instances.len();
                    let started = self.restore(name, state, s).await;
                    report.push(if started.is_empty() {
                        format!("{name}: {} serves on {adopted_running} instance(s)", s.version)
                    } else {
                        format!(
                            "{name}: {} serves on {adopted_running} instance(s); started {} again{}, routed as they become ready",
                            s.version,
                            started.len(),
                            if adopted_running == 0 {
                                " (the last `hatoba up` stopped them)"
                            } else {
                                ""
                            }
                        )
                    });
                }
                self.data_plane
                    .route(route)
                    .await
                    .map_err(DeployError::from)?;
                state
                    .deployer
                    .save(
                        name,
                        &self.environment,
                        &ServiceRecord {
                            serving: serving.as_ref().map(ServingRecord::of),
                            rollout: None,
                        },
                    )
                    .await?;
                *state.serving.lock().unwrap_or_else(PoisonError::into_inner) = serving;
            }
        }
        Ok(())
    }

    /// Brings the serving version back to its size after a start: the
    /// instances a stop ended (or that died with the machine) are started
    /// again with the variables the version ran with. They are added to
    /// what serves but not routed: the supervisor routes each once its
    /// readiness probe passes. Returns what was started.
    async fn restore(
        &self,
        name: &ServiceName,
        state: &ServiceState,
        serving: &mut Deployed,
    ) -> Vec<InstanceStatus> {
        let Some(svc) = self.services_spec().get(name).cloned() else {
            return Vec::new();
        };
        let missing = usize::try_from(svc.replicas)
            .unwrap_or(usize::MAX)
            .saturating_sub(serving.instances.len());
        let mut started = Vec::new();
        for _ in 0..missing {
            let Ok(mut spec) = crate::deployer::instance_spec_for(
                name,
                &svc,
                &serving.version,
                &serving.vars,
                &serving.secrets,
                &self.base_dir,
            ) else {
                break;
            };
            crate::deployer::pin(
                &mut spec,
                serving.image_id.as_deref(),
                serving.deployment.as_ref(),
            );
            match self.runtime.start(&spec, crate::clock_now()).await {
                Ok(inst) => started.push(inst),
                // The supervisor reports what it cannot start.
                Err(_) => break,
            }
        }
        {
            let mut fresh = state.fresh.lock().unwrap_or_else(PoisonError::into_inner);
            fresh.extend(started.iter().map(|i| i.addr));
        }
        serving.instances.extend(started.iter().cloned());
        started
    }

    /// What serves after a rollout whose end was recorded in the history
    /// but not yet in the controller's state.
    async fn finished_rollout(
        &self,
        r: RolloutRecord,
    ) -> Result<Option<ServingRecord>, DeployError> {
        let status = self
            .store
            .deployment(&r.deployment)
            .await?
            .map(|d| d.status);
        let new_serves = status == Some(hatoba_core::DeploymentStatus::Succeeded);
        Ok(if new_serves {
            Some(ServingRecord {
                version: r.version.clone(),
                instances: r.new_instances().to_vec(),
                vars: r.vars.clone(),
                secrets: r.secrets.clone(),
                deployment: Some(r.deployment.clone()),
                image_id: r.image_id.clone(),
            })
        } else {
            r.current.clone().map(|c| ServingRecord {
                instances: r.old_instances().to_vec(),
                ..c
            })
        })
    }

    async fn resume_rollout(
        self: &Arc<Self>,
        name: &ServiceName,
        state: &Arc<ServiceState>,
        record: RolloutRecord,
        adopted: HashMap<String, InstanceStatus>,
        report: &mut Vec<String>,
    ) -> Result<(), DeployError> {
        let Some(svc) = self.services_spec().get(name).cloned() else {
            return Err(DeployError::Unsupported(format!(
                "service `{name}` left the spec"
            )));
        };
        let current_secrets = match &record.current {
            Some(c) => self.reopen_secrets(name, &c.secrets, report).await,
            None => SecretEnv::default(),
        };
        let secrets = self.reopen_secrets(name, &record.secrets, report).await;
        let current = record.current.as_ref().map(|c| Deployed {
            version: c.version.clone(),
            vars: c.vars.clone(),
            secrets: current_secrets,
            deployment: c.deployment.clone(),
            image_id: c.image_id.clone(),
            instances: c
                .instances
                .iter()
                .map(|r| {
                    adopted
                        .get(&r.id)
                        .cloned()
                        .unwrap_or_else(|| r.status(name))
                })
                .collect(),
        });
        let req = DeployRequest {
            service: name.clone(),
            environment: self.environment.clone(),
            svc,
            spec: self.current().spec.clone(),
            version: record.version.clone(),
            vars: record.vars.clone(),
            secrets,
            base_dir: self.base_dir.clone(),
            spec_digest: self.current().digest.clone(),
            deployed_by: record.deployed_by.clone(),
            current,
            rollback_of: record.rollback_of.clone(),
            require_approval: record.awaiting_approval,
            image_id: record.image_id.clone(),
        };
        let (tx, rx) = mpsc::channel(8);
        *state.live.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Some(record.deployment.clone()), tx));
        let st = Arc::clone(state);
        let me = Arc::clone(self);
        let id = record.deployment.clone();
        let task = tokio::spawn(async move {
            let result = st.deployer.resume(&req, record, &adopted, rx).await;
            match &result {
                Ok((d, serving)) => {
                    log_end(d);
                    st.rollout_ended(d, serving.clone(), &req.svc);
                }
                Err(e) => me.after_failed_rollout(&req.service, &st, id, e).await,
            }
            st.let_go();
        });
        self.keep_task(task);
        Ok(())
    }
    /// A rollout that stopped on an error of its own (the history store
    /// could not be written, the data plane refused a table) would leave its
    /// deployment `in_progress` with nothing driving it, and the service
    /// split between versions. Instead: all traffic goes back to what
    /// served, the rollout's own instances are stopped, the problem is
    /// logged and shown by `diagnose`, and the deployment is recorded as
    /// failed with the reason, retried with back-off until the store takes
    /// it. Nothing here needs the store to act.
    pub(crate) async fn after_failed_rollout(
        &self,
        name: &ServiceName,
        state: &ServiceState,
        id: DeploymentId,
        e: &DeployError,
    ) {
        let why = error_chain(e);
        let serving = state
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tracing::error!(
            deployment = %id,
            service = %name,
            error = %why,
            "rollout stopped by an error: traffic back on what served"
        );
        *state.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
            "deployment {id} stopped: {why}; traffic is back on {}; it is recorded as failed once the history store can be written",
            serving
                .as_ref()
                .map_or_else(|| "nothing".to_owned(), |d| d.version.to_string())
        ));
        let _ = self
            .data_plane
            .route(serving_route(name, serving.as_ref()))
            .await;
        let keep: std::collections::HashSet<&hatoba_runtime::InstanceId> = serving
            .iter()
            .flat_map(|d| d.instances.iter().map(|i| &i.id))
            .collect();
        let grace = self
            .services_spec()
            .get(name)
            .map_or(std::time::Duration::from_secs(10), |s| {
                s.termination_grace_period
            });
        if let Ok(list) = self.runtime.list(name).await {
            for i in list.iter().filter(|i| !keep.contains(&i.id)) {
                let _ = self.runtime.stop(&i.id, grace).await;
                self.runtime.forget(&i.id).await;
            }
        }
        let reason = format!("stopped by an error: {why}");
        let mut pause = std::time::Duration::from_millis(500);
        loop {
            match self
                .store
                .transition(
                    &id,
                    hatoba_core::DeploymentStatus::Failed,
                    Some(reason.clone()),
                    crate::clock_now(),
                )
                .await
            {
                Ok(_) | Err(hatoba_store::StoreError::Terminal { .. }) => break,
                Err(e) => {
                    tracing::warn!(deployment = %id, error = %error_chain(&e), "cannot record the failed deployment yet; retrying");
                    let mut stopping = self.stopping.subscribe();
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        // The server stops: the deployment stays as saved,
                        // and the next start resumes or ends it.
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    pause = (pause * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
        let _ = state
            .deployer
            .save(
                name,
                &self.environment,
                &ServiceRecord {
                    serving: serving.as_ref().map(ServingRecord::of),
                    rollout: None,
                },
            )
            .await;
        *state.problem.lock().unwrap_or_else(PoisonError::into_inner) = None;
        tracing::info!(deployment = %id, service = %name, "recorded as failed");
    }
}

/// Ends the orphans of the runtime's scope (all but `keep`) and says what
/// it did, for the resume report: nothing when there were none.
pub(crate) async fn sweep_orphans(
    runtime: &dyn hatoba_runtime::Runtime,
    keep: &[hatoba_runtime::InstanceId],
) -> Option<String> {
    match runtime.sweep(keep).await {
        Ok(orphans) if !orphans.is_empty() => Some(format!(
            "stopped {} orphaned instance(s): {}",
            orphans.len(),
            orphans
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(_) => None,
        Err(e) => Some(format!("could not look for orphaned instances: {e}")),
    }
}
