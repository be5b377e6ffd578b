//! Secrets as operations: list, set (and rotate), remove, and the secrets
//! a deployment runs with. The server is the only writer of the store
//! (invariant 3) and seals every value before the store sees it
//! (invariant 16); no value is ever put in an answer, an error, an event,
//! the audit log or a message.

use super::OpError;
use super::deploy::variable_uses;
use crate::secrets::SecretEnv;
use crate::server::{Server, error_chain};
use hatoba_core::{DeploymentId, ServiceName};
use std::sync::{Arc, PoisonError};

/// Secrets: `hatoba secret set|rotate|rm|list` through the API (the server
/// is the only writer of the store), and the secrets a deployment runs
/// with. No value is ever put in an answer, an event, the audit log or a
/// message.
impl Server {
    /// The services of this environment whose spec uses `name`.
    pub(crate) fn secret_users(&self, name: &str) -> Vec<ServiceName> {
        let mut users: Vec<ServiceName> = self
            .services_spec()
            .into_iter()
            .filter(|(_, svc)| variable_uses(svc).contains_key(name))
            .map(|(n, _)| n)
            .collect();
        users.sort();
        users
    }

    /// Opens recorded secret versions again after a restart; what fails is
    /// reported and left without values (a restart of such an instance
    /// then fails, saying which variable is missing).
    pub(crate) async fn reopen_secrets(
        &self,
        service: &ServiceName,
        versions: &std::collections::BTreeMap<String, u64>,
        report: &mut Vec<String>,
    ) -> SecretEnv {
        let without_values = || SecretEnv {
            versions: versions.clone(),
            values: std::collections::BTreeMap::new(),
        };
        if versions.is_empty() {
            return SecretEnv::default();
        }
        let Some(key) = &self.secret_key else {
            report.push(format!(
                "{service}: runs with secrets but this server has no secret key; its instances can not be started again"
            ));
            return without_values();
        };
        match SecretEnv::open(key, &*self.store, &self.environment, versions).await {
            Ok(s) => s,
            Err(e) => {
                report.push(format!(
                    "{service}: cannot open its secrets ({}); its instances can not be started again",
                    error_chain(&e)
                ));
                without_values()
            }
        }
    }

    /// The secrets a deployment of `svc` runs with: of the declared ones it
    /// uses, the pinned version (a rollback: the one it ran with) or the
    /// newest, opened.
    pub(crate) async fn deploy_secrets(
        &self,
        svc: &hatoba_spec::Service,
        declared: &std::collections::BTreeSet<String>,
        pinned: Option<&std::collections::BTreeMap<String, u64>>,
    ) -> Result<SecretEnv, OpError> {
        let used: Vec<(String, bool)> = variable_uses(svc)
            .into_iter()
            .filter(|(n, _)| declared.contains(n))
            .collect();
        if used.is_empty() {
            return Ok(SecretEnv::default());
        }
        let env = &self.environment;
        let Some(key) = &self.secret_key else {
            return Err(OpError::failed(
                "the service uses secrets, but this server has no secret key",
            )
            .hint(
                "start it with `hatoba up` (it creates STATE/secret.key) or set HATOBA_SECRET_KEY",
            ));
        };
        let stored = match self.store.secret_versions(Some(env)).await {
            Ok(v) => v,
            Err(e) => {
                return Err(OpError::store(&e));
            }
        };
        let mut chosen: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for v in stored {
            chosen.insert(v.name, v.version);
        }
        if let Some(p) = pinned {
            chosen.extend(p.iter().map(|(k, v)| (k.clone(), *v)));
        }
        let mut versions = std::collections::BTreeMap::new();
        for (name, optional) in used {
            match chosen.get(&name) {
                Some(v) => {
                    versions.insert(name, *v);
                }
                None if optional => {}
                None => {
                    return Err(OpError::bad_input(format!("secret `{name}` has no value in `{env}`")).hint(format!(
                            "store one with `hatoba secret set {name}` (the value on stdin or --from-file)"
                        )));
                }
            }
        }
        SecretEnv::open(key, &*self.store, env, &versions)
            .await
            .map_err(|e| {
                let hint = match e {
                    crate::SecretError::WrongKey { .. } => {
                        "use the key it was stored with (STATE/secret.key or HATOBA_SECRET_KEY), or store the secret again"
                    }
                    crate::SecretError::Missing { .. } => {
                        "it was removed with `hatoba secret rm`; store it again, or deploy with the newest version"
                    }
                    _ => "store the secret again with `hatoba secret set`",
                };
                OpError::failed(error_chain(&e)).hint(hint)
            })
    }

    /// A secret name from a URL, checked.
    fn secret_name(&self, name: &str) -> Result<String, OpError> {
        if hatoba_spec::is_variable_name(name) {
            Ok(name.to_owned())
        } else {
            Err(OpError::bad_input(format!(
                "`{}` is not a secret name",
                hatoba_core::shown(name)
            ))
            .hint("secrets are variable names: letters, digits and `_`"))
        }
    }

    async fn audit_secret(&self, by: &str, action: &str, name: &str, detail: String) {
        let _ = self
            .store
            .record_audit(hatoba_store::NewAudit {
                at: crate::clock_now(),
                actor: by.to_owned(),
                action: action.to_owned(),
                target: format!("secret {name} in {}", self.environment),
                outcome: hatoba_store::AuditOutcome::Ok,
                detail: Some(detail),
            })
            .await;
    }

    /// The environment's secrets, declared or stored, with their versions.
    pub async fn list_secrets(&self) -> Result<hatoba_api::SecretList, OpError> {
        let stored = match self.store.secret_versions(Some(&self.environment)).await {
            Ok(v) => v,
            Err(e) => return Err(OpError::store(&e)),
        };
        let declared = self.current().spec.secret_names(&self.environment);
        let mut names: std::collections::BTreeSet<String> = declared.clone();
        names.extend(stored.iter().map(|v| v.name.clone()));
        let secrets = names
            .into_iter()
            .map(|name| hatoba_api::SecretInfo {
                declared: declared.contains(&name),
                used_by: self
                    .secret_users(&name)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                versions: stored
                    .iter()
                    .filter(|v| v.name == name)
                    .map(|v| hatoba_api::SecretVersionInfo {
                        version: v.version,
                        created_at: v.created_at.to_rfc3339(),
                        created_by: v.created_by.clone(),
                    })
                    .collect(),
                name,
            })
            .collect();
        Ok(hatoba_api::SecretList {
            api_version: hatoba_api::API_VERSION.to_owned(),
            environment: self.environment.to_string(),
            secrets,
        })
    }

    /// A new version of a secret; with `rotate`, the
    /// services that use it are deployed again (same version, new secret)
    /// through their strategy.
    pub async fn set_secret(
        self: &Arc<Self>,
        name: &str,
        r: hatoba_api::SecretSetRequest,
    ) -> Result<hatoba_api::SecretChange, OpError> {
        let name = self.secret_name(name)?;
        let env = self.environment.clone();
        if let Some(e) = &r.environment
            && e != env.as_str()
        {
            return Err(OpError::bad_input(format!(
                "this server runs environment `{env}`, not `{e}`"
            ))
            .hint("use the --state-dir of the `hatoba up --env ENV` for that environment"));
        }
        if !self.current().spec.secret_names(&env).contains(&name) {
            return Err(OpError::bad_input(format!("`{name}` is not declared a secret for `{env}`")).hint(
                    "add it to `secrets:` in the spec (top level, or the environment's), then `hatoba reload`",
                ));
        }
        let value = hatoba_core::SecretValue::new(r.value);
        if value.is_empty() || value.len() > crate::secrets::MAX_SECRET_BYTES {
            return Err(OpError::bad_input(format!(
                "a secret's value is 1 to {} bytes; found {}",
                crate::secrets::MAX_SECRET_BYTES,
                value.len()
            ))
            .hint("give the value on stdin or with --from-file"));
        }
        if value.expose().contains('\0') {
            return Err(OpError::bad_input(
                "a secret's value can not contain a NUL byte (it goes into an environment variable)",
            ));
        }
        let Some(key) = self.secret_key.clone() else {
            return Err(OpError::failed("this server has no secret key")
                .hint("`hatoba up` creates STATE/secret.key, or set HATOBA_SECRET_KEY"));
        };
        let by = r.by.clone().unwrap_or_else(|| "cli".to_owned());
        let version = {
            let _one = self.secret_writes.lock().await;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let newest = match self.store.secret_versions(Some(&env)).await {
                    Ok(v) => v
                        .iter()
                        .filter(|v| v.name == name)
                        .map(|v| v.version)
                        .max()
                        .unwrap_or(0),
                    Err(e) => {
                        return Err(OpError::store(&e));
                    }
                };
                let version = newest + 1;
                let sealed = match key.seal(&env, &name, version, &value, crate::clock_now(), &by) {
                    Ok(s) => s,
                    Err(e) => {
                        return Err(OpError::failed(error_chain(&e)));
                    }
                };
                match self.store.put_secret(sealed).await {
                    Ok(()) => break version,
                    Err(hatoba_store::StoreError::SecretVersionTaken { .. }) if attempt < 3 => {}
                    Err(e) => {
                        return Err(OpError::store(&e));
                    }
                }
            }
        };
        drop(value);
        let action = if r.rotate {
            "secret rotate"
        } else {
            "secret set"
        };
        self.audit_secret(&by, action, &name, format!("version {version}"))
            .await;
        let users = self.secret_users(&name);
        let mut change = hatoba_api::SecretChange {
            name: name.clone(),
            environment: env.to_string(),
            version: Some(version),
            removed: None,
            deployments: Vec::new(),
            next_deploy: Vec::new(),
        };
        for service in users {
            let Some(state) = self.service(&service) else {
                continue;
            };
            let serving = state
                .serving
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let live = state
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some();
            let (true, Some(serving), false) = (r.rotate, serving, live) else {
                change.next_deploy.push(service.to_string());
                continue;
            };
            let declared = self.current().spec.secret_names(&env);
            let request = hatoba_api::DeployRequest {
                service: service.to_string(),
                environment: None,
                version: serving.version.to_string(),
                vars: serving
                    .vars
                    .iter()
                    .filter(|(k, _)| !declared.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                deployed_by: Some(by.clone()),
            };
            match self.deploy(request).await {
                Ok(d) => {
                    // Why the same version is deployed again (names and
                    // versions only).
                    if let Ok(id) = d.id.parse::<DeploymentId>() {
                        let _ = self
                            .store
                            .append_event(
                                &id,
                                hatoba_store::NewEvent::of(
                                    crate::clock_now(),
                                    &hatoba_core::Event::SecretRotated {
                                        secret: name.to_string(),
                                        version,
                                        by: Some(by.clone()),
                                    },
                                    None,
                                ),
                            )
                            .await;
                    }
                    change.deployments.push(d);
                }
                Err(e) => {
                    change
                        .next_deploy
                        .push(format!("{service} ({})", e.message()));
                }
            }
        }
        Ok(change)
    }

    /// Removes every version of a secret in this environment.
    pub async fn remove_secret(
        &self,
        name: &str,
        by: String,
    ) -> Result<hatoba_api::SecretChange, OpError> {
        let name = self.secret_name(name)?;
        let removed = {
            let _one = self.secret_writes.lock().await;
            match self.store.remove_secret(&self.environment, &name).await {
                Ok(n) => n,
                Err(e) => {
                    return Err(OpError::store(&e));
                }
            }
        };
        if removed == 0 {
            return Err(OpError::not_found(format!(
                "no secret `{name}` is stored in `{}`",
                self.environment
            ))
            .hint("`hatoba secret list` shows what is stored"));
        }
        self.audit_secret(&by, "secret rm", &name, format!("{removed} version(s)"))
            .await;
        Ok(hatoba_api::SecretChange {
            name: name.clone(),
            environment: self.environment.to_string(),
            version: None,
            removed: Some(removed),
            deployments: Vec::new(),
            next_deploy: self
                .secret_users(&name)
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
    }
}
