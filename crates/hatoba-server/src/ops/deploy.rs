//! Operations that start a deployment: `deploy` (with its checks of the
//! request against the spec) and `rollback` (which picks the version to
//! return to, or aborts the deployment in progress). The deployment itself
//! runs in a task of its own (the `Deployer`); these return once it is
//! recorded. No HTTP here: answers are wire types or an [`OpError`].

use super::OpError;
use crate::api;
use crate::deployer::{DeployRequest, Operator};
use crate::server::{Server, error_chain};
use hatoba_core::{DeploymentId, ServiceName, Version};
use hatoba_rollout::Input;
use std::sync::{Arc, PoisonError};
use tokio::sync::mpsc;

/// How long a deploy waits for a deployment whose end is recorded to let
/// go of its service (its task saves the service's state and says what
/// serves: one store write, or the cleanup after a rollout's own error).
const FINISHING: std::time::Duration = std::time::Duration::from_secs(5);

impl Server {
    /// Deploys a version of a service through its strategy; returns the
    /// deployment once it is recorded. One at a time per service: a second
    /// is a conflict naming the one in progress (one whose end is recorded
    /// is waited for while its task lets go of the service).
    pub async fn deploy(
        self: &Arc<Self>,
        r: hatoba_api::DeployRequest,
    ) -> Result<hatoba_api::Deployment, OpError> {
        Arc::clone(self).deploy_as(r, None, None, None).await
    }

    /// Deploys the previous succeeded version (or `to`) again, recorded as a
    /// rollback of the current deployment. It goes through the service's
    /// strategy like any deployment.
    pub async fn rollback(
        self: &Arc<Self>,
        name: &str,
        to: Option<String>,
        by: String,
    ) -> Result<hatoba_api::Deployment, OpError> {
        // The name's rule is in the error: `Web!` alone says not what to type.
        let service = match name.parse::<ServiceName>() {
            Ok(service) => service,
            Err(e) => return Err(OpError::bad_input(e.to_string())),
        };
        // A deployment in progress (a canary, a blue-green switch whose old
        // colour is still warm, a watch after promotion): the previous
        // version still runs, so going back is aborting it, at once.
        if let Some(state) = self.service(&service) {
            // One whose end is recorded is over: the rollback is of it.
            self.ended_let_go(&state).await?;
            let live = state
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some((Some(id), tx)) = live {
                let serving = state.serving_version();
                if let Some(v) = &to
                    && Some(v) != serving.as_ref()
                {
                    return Err(OpError::conflict(format!(
                            "deployment {id} of `{service}` is in progress; a rollback now can only return to {}",
                            serving.as_deref().unwrap_or("nothing")
                        )).hint("`hatoba rollback SERVICE` without --to, or wait for it to end"));
                }
                let _ = tx
                    .send(Operator::Input(Input::Abort(format!(
                        "rolled back by {by} with `hatoba rollback`"
                    ))))
                    .await;
                return match self.store.deployment(&id).await {
                    Ok(Some(d)) => Ok(api::deployment(&d)),
                    Ok(None) => Err(OpError::not_found(format!("no deployment {id}"))),
                    Err(e) => Err(OpError::store(&e)),
                };
            }
        }
        let history = match self.service_history(&service).await {
            Ok(h) => h,
            Err(e) => return Err(OpError::store(&e)),
        };
        let succeeded: Vec<&hatoba_store::Deployment> = history
            .iter()
            .filter(|d| d.status == hatoba_core::DeploymentStatus::Succeeded)
            .collect();
        let Some(current) = succeeded
            .iter()
            .max_by_key(|d| (d.finished_at, d.id.clone()))
            .copied()
        else {
            return Err(OpError::conflict(format!(
                "service `{service}` has no succeeded deployment to roll back from"
            )));
        };
        // The newest succeeded deployment of the version: a rollback runs it
        // with the variables it ran with.
        let mut skipped: Vec<String> = Vec::new();
        let target = match &to {
            Some(v) => succeeded
                .iter()
                .filter(|d| d.version.as_str() == v)
                .max_by_key(|d| (d.finished_at, d.id.clone())),
            // The previous version promoted on evidence: one a person
            // promoted past missing evidence is skipped (`--to` may still
            // name it).
            None => {
                let mut earlier: Vec<&&hatoba_store::Deployment> = succeeded
                    .iter()
                    .filter(|d| d.version != current.version)
                    .collect();
                earlier.sort_by_key(|d| std::cmp::Reverse((d.finished_at, d.id.clone())));
                let mut found = None;
                for d in earlier {
                    if skipped.iter().any(|v| v == d.version.as_str()) {
                        continue;
                    }
                    match without_evidence(self.store.as_ref(), &succeeded, &d.version).await {
                        Ok(None) => {
                            found = Some(d);
                            break;
                        }
                        Ok(Some(_)) => skipped.push(d.version.to_string()),
                        Err(e) => {
                            return Err(OpError::store(&e));
                        }
                    }
                }
                found
            }
        };
        let Some(target) = target else {
            if let (None, Some(v)) = (&to, skipped.first()) {
                return Err(OpError::conflict(format!(
                        "`{service}` has no earlier version promoted on evidence: {} promoted without evidence",
                        skipped.join(", ")
                    )).hint(
                        format!("`hatoba rollback {service} --to {v}` returns to it anyway")
                            .as_str(),
                    ));
            }
            return match to {
                Some(v) => Err(OpError::not_found(format!(
                    "version `{v}` of `{service}` never succeeded here"
                ))
                .hint("`hatoba history SERVICE` lists the versions")),
                None => Err(OpError::conflict(format!(
                    "`{service}` has no earlier version than {}",
                    current.version
                ))),
            };
        };
        // A name declared a secret since then is not taken from `vars`:
        // the secret's version it ran with (or the newest) is.
        let secret_names = self.current().spec.secret_names(&self.environment);
        let r = hatoba_api::DeployRequest {
            service: service.to_string(),
            environment: None,
            version: target.version.to_string(),
            vars: target
                .vars
                .iter()
                .filter(|(k, _)| !secret_names.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            deployed_by: Some(by),
        };
        Arc::clone(self)
            .deploy_as(
                r,
                Some(current.id.clone()),
                Some(target.secrets.clone()),
                target.image_id.clone(),
            )
            .await
    }

    /// Makes the deployment in `tx` the service's one in progress, and
    /// returns holding `ops` (the supervisor finishes its round, a restart
    /// in progress, first). A deployment whose end is recorded may still
    /// hold the service for a moment (its task saves the service's state,
    /// then says what serves): a deploy asked then, by a client that saw
    /// the end, waits for it (at most [`FINISHING`]) rather than being
    /// refused, and reads what serves only after it. One still running is
    /// a conflict naming it.
    async fn take_slot<'a>(
        &self,
        service: &ServiceName,
        state: &'a Arc<crate::server::ServiceState>,
        tx: mpsc::Sender<Operator>,
    ) -> Result<tokio::sync::MutexGuard<'a, ()>, OpError> {
        let deadline = tokio::time::Instant::now() + FINISHING;
        let mut tx = Some(tx);
        loop {
            // Listening before looking: a let-go after the look wakes it.
            let freed = state.let_go.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let ops = state.ops.lock().await;
            // A reload may have removed the service meanwhile (it holds
            // this lock while it does).
            if !self
                .service(service)
                .is_some_and(|s| Arc::ptr_eq(&s, state))
            {
                return Err(OpError::not_found(format!(
                    "service `{service}` was removed from the spec by a reload"
                )));
            }
            let holder = {
                let mut live = state.live.lock().unwrap_or_else(PoisonError::into_inner);
                match live.as_ref() {
                    Some((id, _)) => Some(id.clone()),
                    None => {
                        *live = tx.take().map(|tx| (None, tx));
                        None
                    }
                }
            };
            let Some(holder) = holder else {
                return Ok(ops);
            };
            drop(ops);
            if !self.has_ended(holder.as_ref()).await?
                || tokio::time::timeout_at(deadline, freed).await.is_err()
            {
                let id = holder
                    .as_ref()
                    .map_or_else(|| "(being recorded)".to_owned(), ToString::to_string);
                return Err(OpError::conflict(format!(
                    "service `{service}` already has a deployment in progress: {id}"
                ))
                .hint("wait for it (`hatoba status`), promote it or abort it"));
            }
        }
    }

    /// Whether the deployment holding a service (`None`: not recorded yet)
    /// has its end recorded.
    async fn has_ended(&self, holder: Option<&DeploymentId>) -> Result<bool, OpError> {
        match holder {
            Some(id) => match self.store.deployment(id).await {
                Ok(d) => Ok(d.is_some_and(|d| d.status.is_terminal())),
                Err(e) => Err(OpError::store(&e)),
            },
            None => Ok(false),
        }
    }

    /// Waits (at most [`FINISHING`]) until a deployment whose end is
    /// recorded has let go of the service; returns at once when none holds
    /// it or the one holding it still runs.
    async fn ended_let_go(&self, state: &crate::server::ServiceState) -> Result<(), OpError> {
        let deadline = tokio::time::Instant::now() + FINISHING;
        loop {
            let freed = state.let_go.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let holder = state
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|(id, _)| id.clone());
            let Some(holder) = holder else {
                return Ok(());
            };
            if !self.has_ended(holder.as_ref()).await?
                || tokio::time::timeout_at(deadline, freed).await.is_err()
            {
                return Ok(());
            }
        }
    }

    /// [`Server::deploy`], also as a rollback of a deployment (`rollback_of`)
    /// with the secrets' versions it ran with (`pinned_secrets`) and the
    /// exact image it ran (`pinned_image`). A deployment of a version that
    /// once succeeded here runs the image recorded then, never what its
    /// tag names now.
    pub(crate) async fn deploy_as(
        self: Arc<Self>,
        r: hatoba_api::DeployRequest,
        rollback_of: Option<DeploymentId>,
        pinned_secrets: Option<std::collections::BTreeMap<String, u64>>,
        pinned_image: Option<String>,
    ) -> Result<hatoba_api::Deployment, OpError> {
        // The name's rule is in the error: `Web!` alone says not what to type.
        let service = match r.service.parse::<ServiceName>() {
            Ok(service) => service,
            Err(e) => return Err(OpError::bad_input(e.to_string())),
        };
        // One spec for the whole request: a reload meanwhile is for the
        // next deployment, and this one records the spec it runs with.
        let loaded = self.current();
        let Some(state) = self.service(&service) else {
            let names: Vec<String> = self
                .service_names()
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(
                OpError::not_found(format!("no service `{service}` in the spec"))
                    .hint(format!("services: {}", names.join(", "))),
            );
        };
        if let Some(env) = &r.environment
            && env != self.environment.as_str()
        {
            return Err(OpError::bad_input(format!(
                "this server runs environment `{}`, not `{env}`",
                self.environment
            ))
            .hint(
                "start `hatoba up --env ENV` for that environment (repeat --env to run several)",
            ));
        }
        let version = match r.version.parse::<Version>() {
            Ok(v) => v,
            Err(e) => return Err(OpError::bad_input(e.to_string())),
        };
        if let Some(bad) = r.vars.keys().find(|k| !hatoba_spec::is_variable_name(k)) {
            return Err(OpError::bad_input(format!(
                "`{}` is not a variable name (in `--set NAME=VALUE`)",
                hatoba_core::shown(bad)
            ))
            .hint("use letters, digits and `_`, not starting with a digit"));
        }
        // Hatoba sets these itself: a value given for them would be ignored
        // (and the check below would say the service does not use them,
        // even when it does).
        if let Some(own) = r.vars.keys().find(|k| *k == "VERSION" || *k == "PORT") {
            let what = if own == "VERSION" {
                "the version deployed: give it with `--version`"
            } else {
                "each instance's port, chosen by Hatoba"
            };
            return Err(OpError::bad_input(format!(
                "`--set {own}`: ${{{own}}} is set by Hatoba, not by `--set`"
            ))
            .hint(format!("${{{own}}} is {what}")));
        }
        let secret_names = loaded.spec.secret_names(&self.environment);
        if let Some(name) = r.vars.keys().find(|k| secret_names.contains(*k)) {
            return Err(OpError::bad_input(format!(
                "`{name}` is declared a secret: `--set` would keep its value in plain text \
                     in the history"
            ))
            .hint(format!(
                "store it with `hatoba secret set {name}` (the value on stdin), then deploy \
                     without `--set {name}=...`"
            )));
        }
        let Some(svc) = crate::server::services_of(&loaded.spec, &self.environment)
            .and_then(|s| s.get(&service).cloned())
        else {
            return Err(OpError::not_found(format!("no service `{service}`")));
        };
        // A value for a name the service never uses would be recorded and
        // do nothing: most often a misspelling. A rollback reruns what a
        // deployment recorded, whatever the spec uses now.
        if rollback_of.is_none() {
            let used = named_variables(&svc);
            if let Some(unused) = r.vars.keys().find(|k| !used.contains(*k)) {
                let near = hatoba_spec::suggest(unused, used.iter().map(String::as_str));
                let hint = match near {
                    Some(n) => format!("did you mean `{n}`?"),
                    None if used.is_empty() => format!("service `{service}` uses no ${{NAME}}"),
                    None => format!(
                        "`{service}` uses: {}",
                        used.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                return Err(OpError::bad_input(format!(
                        "`--set {}`: service `{service}` uses no ${{{}}} in its command, args, env or workingDir",
                        hatoba_core::shown(unused),
                        hatoba_core::shown(unused)
                    )).hint(hint));
            }
        }
        let secrets = self
            .deploy_secrets(&svc, &secret_names, pinned_secrets.as_ref())
            .await?;
        let image_id = match pinned_image {
            Some(id) => Some(id),
            None => self.recorded_image(&service, &version).await?,
        };
        let (tx, rx) = mpsc::channel(8);
        let ops = self.take_slot(&service, &state, tx).await?;
        let mut vars = loaded
            .spec
            .environments
            .get(&self.environment)
            .map(|e| e.variables.clone())
            .unwrap_or_default();
        // `hatoba up`'s own environment comes over the spec's variables, as
        // a shell's does for docker compose, and `--set` over both. Only the
        // names the service uses are taken, so a deployment records what it
        // ran with (a rollback reuses it) and nothing else.
        for name in named_variables(&svc) {
            if secret_names.contains(&name) {
                continue;
            }
            if let Ok(value) = std::env::var(&name) {
                vars.insert(name, value);
            }
        }
        vars.extend(r.vars);
        let current = state
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        drop(ops);
        let req = DeployRequest {
            service: service.clone(),
            environment: self.environment.clone(),
            svc,
            spec: loaded.spec.clone(),
            version,
            vars,
            secrets,
            base_dir: self.base_dir.clone(),
            spec_digest: loaded.digest.clone(),
            deployed_by: r.deployed_by.unwrap_or_else(|| "cli".to_owned()),
            current,
            rollback_of,
            require_approval: loaded
                .spec
                .environments
                .get(&self.environment)
                .is_some_and(|e| e.require_approval),
            image_id,
        };
        let (created_tx, created_rx) = tokio::sync::oneshot::channel();
        let st = Arc::clone(&state);
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        let me = Arc::clone(&self);
        let task = tokio::spawn(async move {
            // The row, once created, is passed on and remembered: an error
            // after it must still end the deployment in the history.
            let (recorded_tx, recorded_rx) = tokio::sync::oneshot::channel();
            let recorded = async {
                let d: Option<hatoba_store::Deployment> = recorded_rx.await.ok();
                let id = d.as_ref().map(|d| d.id.clone());
                if let Some(d) = d {
                    let _ = created_tx.send(d);
                }
                id
            };
            let (result, id) = tokio::join!(
                st.deployer.deploy_with(&req, rx, Some(recorded_tx)),
                recorded
            );
            match (&result, id) {
                (Ok((d, serving)), _) => {
                    log_end(d);
                    st.rollout_ended(d, serving.clone(), &req.svc);
                }
                (Err(e), Some(id)) => me.after_failed_rollout(&req.service, &st, id, e).await,
                (Err(_), None) => {}
            }
            st.let_go();
            let _ = result_tx.send(result);
        });
        self.keep_task(task);
        match created_rx.await {
            Ok(d) => {
                if let Some((id, _)) = state
                    .live
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    *id = Some(d.id.clone());
                }
                Ok(api::deployment(&d))
            }
            Err(_) => match result_rx.await {
                Ok(Err(crate::DeployError::Store(hatoba_store::StoreError::Conflict {
                    live,
                    ..
                }))) => Err(OpError::conflict(format!("service `{service}` already has a deployment in progress: {live}"))),
                Ok(Err(e @ crate::DeployError::Interpolation(_))) => Err(OpError::failed(error_chain(&e)).hint(
                        "values come from `hatoba deploy --set NAME=VALUE`, `hatoba up`'s environment \
                         and the environment's `variables`; `hatoba validate` points at misspelt names",
                    )),
                Ok(Err(e)) => Err(OpError::failed(error_chain(&e))),
                _ => Err(OpError::failed("the deployment ended before it was recorded")),
            },
        }
    }
}

/// Whether `version` was promoted without evidence: its latest judged
/// deployment (the newest succeeded one that is not a rollback; a rollback
/// skips the steps and judges nothing) carries a `promoted_without_evidence`
/// event. Returns what was missing.
pub async fn without_evidence(
    store: &dyn hatoba_store::Store,
    succeeded: &[&hatoba_store::Deployment],
    version: &hatoba_core::Version,
) -> Result<Option<String>, hatoba_store::StoreError> {
    let judged = succeeded
        .iter()
        .filter(|d| &d.version == version && d.rollback_of.is_none())
        .max_by_key(|d| (d.finished_at, d.id.clone()));
    let Some(d) = judged else {
        return Ok(None);
    };
    Ok(store
        .events(&d.id)
        .await?
        .into_iter()
        .find(|e| e.kind == hatoba_store::event_kind::PROMOTED_WITHOUT_EVIDENCE)
        .map(|e| e.message))
}

/// A deployment's end, as one log line with its facts as fields.
pub(crate) fn log_end(d: &hatoba_store::Deployment) {
    let reason = d.reason.as_deref().unwrap_or("");
    if d.status == hatoba_core::DeploymentStatus::Succeeded {
        tracing::info!(
            deployment = %d.id,
            service = %d.service,
            environment = %d.environment,
            version = %d.version,
            status = %d.status,
            "deployment ended"
        );
    } else {
        tracing::warn!(
            deployment = %d.id,
            service = %d.service,
            environment = %d.environment,
            version = %d.version,
            status = %d.status,
            reason,
            "deployment ended"
        );
    }
}

/// The variables (`${NAME}`) a service's runtime fields use, `VERSION` and
/// `PORT` aside (Hatoba sets those).
pub(crate) fn named_variables(svc: &hatoba_spec::Service) -> std::collections::BTreeSet<String> {
    variable_uses(svc)
        .into_keys()
        .filter(|n| n != "VERSION" && n != "PORT")
        .collect()
}

/// The variables a service's runtime fields use, each with whether every
/// use has a default (`${NAME:-...}`), so a missing value is no error.
pub(crate) fn variable_uses(
    svc: &hatoba_spec::Service,
) -> std::collections::BTreeMap<String, bool> {
    let texts: Vec<&String> = match &svc.runtime {
        hatoba_spec::Runtime::Process(p) => std::iter::once(&p.command)
            .chain(&p.args)
            .chain(p.env.values())
            .chain(&p.working_dir)
            .collect(),
        hatoba_spec::Runtime::Docker(d) => std::iter::once(&d.image)
            .chain(d.command.iter().flatten())
            .chain(d.args.iter().flatten())
            .chain(d.env.values())
            .collect(),
    };
    let mut uses = std::collections::BTreeMap::new();
    for (name, has_default) in texts
        .into_iter()
        .filter_map(|t| hatoba_spec::variables(t).ok())
        .flatten()
    {
        let all = uses.entry(name).or_insert(true);
        *all = *all && has_default;
    }
    uses
}

impl Server {
    /// The image recorded by the newest succeeded deployment of `version`
    /// here, if any: deploying that version again runs that very image (a
    /// tag built again since names another one). A version that never
    /// succeeded is resolved from its tag again, so fixing a failed build
    /// under the same version still works.
    /// Every deployment of `service` in this environment, newest first.
    async fn service_history(
        &self,
        service: &ServiceName,
    ) -> Result<Vec<hatoba_store::Deployment>, hatoba_store::StoreError> {
        self.store
            .history(&hatoba_store::HistoryFilter {
                service: Some(service.clone()),
                environment: Some(self.environment.clone()),
                limit: 10_000,
            })
            .await
    }

    async fn recorded_image(
        &self,
        service: &ServiceName,
        version: &Version,
    ) -> Result<Option<String>, OpError> {
        let history = self
            .service_history(service)
            .await
            .map_err(|e| OpError::store(&e))?;
        Ok(history
            .iter()
            .filter(|d| {
                &d.version == version
                    && d.status == hatoba_core::DeploymentStatus::Succeeded
                    && d.image_id.is_some()
            })
            .max_by_key(|d| (d.finished_at, d.id.clone()))
            .and_then(|d| d.image_id.clone()))
    }
}
