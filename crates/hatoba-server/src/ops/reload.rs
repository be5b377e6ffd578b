//! `reload`: a running server reads its spec file again (`hatoba reload`,
//! `POST /api/v1/reload`, SIGHUP to `hatoba up`), as `nginx -s reload` or
//! `nomad job run` would: checked whole first, then applied whole.
//!
//! - The file is read and validated before anything changes. An invalid
//!   spec changes nothing and the answer is the diagnostics (file:line:col);
//!   what runs keeps running by the spec it had.
//! - Refused, changing nothing: an environment the server runs is no longer
//!   in the spec; a service the new spec drops still runs (a version serves
//!   or a deployment is in progress: there is no "stop a service" yet, and
//!   leaving its instances unsupervised would be worse); two environments
//!   on one address; a preview address dropped while a deployment of its
//!   service is in progress (the deployment routes it); a `docker:` service
//!   brought to a server started without the Docker Engine.
//! - Accepted: the new spec is the spec of the next operations. A changed
//!   strategy, analysis, probes, command, env or replicas of a service take
//!   effect at its next deployment: a deployment in progress keeps the spec
//!   it started with (its `DeployRequest` holds its own copy), and what
//!   serves is supervised (probed, restarted) by the spec it was deployed
//!   with until a deployment replaces it (`ServiceState::serving_spec`).
//! - A new service gets its listener (and its supervisor), nothing deployed
//!   until `deploy`. A removed service that does not run: its listener
//!   closes. A moved listener is opened on the new address before the old
//!   one stops accepting (the data plane's `listen` on a key that exists:
//!   same route table, the old sockets stop after the new ones listen), so
//!   no connection to the old address is refused during the switch; from
//!   then on the old address is closed. If the new address cannot be
//!   listened on, what was opened is undone and nothing changes.
//! - Every environment of the server reloads together, or none does.
//! - Recorded: the new digest is the one every deployment from now on
//!   records (`spec_digest`); the reload is in the audit log (action
//!   `reload`, the file, the `spec_reloaded` words) and the log, and the
//!   `spec_reloaded` event is stored once as a server event (tied to no
//!   deployment, concerning every environment of the server: on the event
//!   stream whether or not a deployment is in progress) and once more on
//!   each deployment in progress, whose timeline says it keeps its spec.

use super::OpError;
use crate::dataplane::{DataPlane, preview_key, preview_listen};
use crate::deployer::Deployer;
use crate::server::{Environments, Loaded, Server, ServiceState, error_chain, services_of};
use hatoba_core::ServiceName;
use hatoba_spec::{Listen, Service, Spec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError};

/// How the services of one environment differ between two specs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// In the new spec only.
    pub(crate) added: Vec<ServiceName>,
    /// In both, not equal.
    pub(crate) changed: Vec<ServiceName>,
    /// In the old spec only.
    pub(crate) removed: Vec<ServiceName>,
    /// Data-plane keys (a service, `SERVICE@preview`) to listen on: the
    /// address they had (none: a new key) and the new one.
    pub(crate) listen: Vec<(String, Option<Listen>, Listen)>,
    /// Every data-plane key before.
    pub(crate) old_keys: Vec<String>,
    /// Every data-plane key after.
    pub(crate) keys: Vec<String>,
}

/// The listeners of a set of services: key → address.
fn listeners(services: &BTreeMap<ServiceName, Service>) -> BTreeMap<String, Listen> {
    let mut out = BTreeMap::new();
    for (name, svc) in services {
        out.insert(name.to_string(), svc.route.listen.clone());
        if let Some(p) = preview_listen(svc) {
            out.insert(preview_key(name.as_str()), p.clone());
        }
    }
    out
}

/// What changes from `old` to `new` (pure).
pub(crate) fn diff(
    old: &BTreeMap<ServiceName, Service>,
    new: &BTreeMap<ServiceName, Service>,
) -> Diff {
    let (was, will) = (listeners(old), listeners(new));
    Diff {
        added: new
            .keys()
            .filter(|n| !old.contains_key(*n))
            .cloned()
            .collect(),
        changed: new
            .iter()
            .filter(|(n, s)| old.get(*n).is_some_and(|o| o != *s))
            .map(|(n, _)| n.clone())
            .collect(),
        removed: old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect(),
        listen: will
            .iter()
            .filter(|(k, l)| was.get(*k) != Some(*l))
            .map(|(k, l)| (k.clone(), was.get(k).cloned(), l.clone()))
            .collect(),
        old_keys: was.into_keys().collect(),
        keys: will.into_keys().collect(),
    }
}

/// The spec file read and checked: the spec, its digest, its warnings.
struct Read {
    spec: Spec,
    digest: String,
    warnings: Option<String>,
}

/// Reads and parses the spec file; any problem is a bad input that names
/// the file (and, for a spec that does not validate, line and column).
fn read_spec(path: &Path) -> Result<Read, OpError> {
    use std::io::Read as _;
    let shown = path.display().to_string();
    let nothing = "nothing changed: the server runs the spec it had";
    let cannot = |e: std::io::Error| {
        OpError::bad_input(format!("cannot read `{shown}`: {e}; {nothing}"))
            .hint("the server reads the file it was started with (`hatoba up -f PATH`)")
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let limit = hatoba_spec::MAX_SPEC_BYTES as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > limit {
        return Err(OpError::bad_input(format!(
            "`{shown}` is larger than {limit} bytes, the most a spec may be; {nothing}"
        )));
    }
    let parsed = hatoba_spec::parse_bytes(&bytes);
    let rendered = || {
        hatoba_spec::render(
            &shown,
            &String::from_utf8_lossy(&bytes),
            &parsed.diagnostics,
        )
        .trim_end()
        .to_owned()
    };
    let Some(spec) = parsed.spec.clone() else {
        return Err(OpError::bad_input(format!(
            "`{shown}` is not a valid spec; {nothing}\n{}",
            rendered()
        ))
        .hint(format!(
            "fix it (`hatoba validate -f {shown}` shows the same), then `hatoba reload`"
        )));
    };
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    let warnings = (!parsed.diagnostics.is_empty()).then(rendered);
    Ok(Read {
        spec,
        digest,
        warnings,
    })
}

/// One environment's part of a reload.
struct Plan {
    server: Arc<Server>,
    services: BTreeMap<ServiceName, Service>,
    diff: Diff,
    /// The resolved addresses of `diff.listen`, in its order.
    addrs: Vec<SocketAddr>,
}

fn resolve(key: &str, listen: &Listen) -> Result<SocketAddr, OpError> {
    let text = listen.to_string();
    std::net::ToSocketAddrs::to_socket_addrs(&text)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            OpError::bad_input(format!(
                "`{text}` (the address of `{key}`) does not resolve; nothing changed"
            ))
        })
}

impl Server {
    /// `hatoba reload` for a server of one environment run alone: reads
    /// the spec file again and applies it (see the module's words). A
    /// server that is one of several is reloaded with the others, by
    /// [`Environments::reload`] (the API and SIGHUP do so).
    pub async fn reload(
        self: &Arc<Self>,
        r: hatoba_api::ReloadRequest,
    ) -> Result<hatoba_api::SpecReload, OpError> {
        reload(
            std::slice::from_ref(self),
            Arc::clone(&self.data_plane),
            false,
            r.by,
        )
        .await
    }
}

impl Environments {
    /// `hatoba reload`: every environment at once, or none.
    pub async fn reload(
        &self,
        r: hatoba_api::ReloadRequest,
    ) -> Result<hatoba_api::SpecReload, OpError> {
        reload(self.servers(), self.data_plane(), self.several(), r.by).await
    }
}

/// A data-plane key as the shared data plane knows it.
fn plane_key(several: bool, server: &Server, key: &str) -> String {
    if several {
        crate::server::qualified(&server.environment, key)
    } else {
        key.to_owned()
    }
}

async fn reload(
    servers: &[Arc<Server>],
    plane: Arc<dyn DataPlane>,
    several: bool,
    by: Option<String>,
) -> Result<hatoba_api::SpecReload, OpError> {
    let Some(first) = servers.first() else {
        return Err(OpError::unavailable("no environment runs"));
    };
    let Some(path) = first.spec_path.clone() else {
        return Err(OpError::unavailable(
            "this server was started without a spec file: there is nothing to read again",
        ));
    };
    let _one = first.reloading.lock().await;
    let file = path.display().to_string();
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || read_spec(&path))
            .await
            .map_err(|e| OpError::failed(format!("reading `{file}` failed: {e}")))??
    };
    let previous = first.current().digest.clone();
    let named = |s: &Server, n: &str| plane_key(several, s, n);

    // Everything is checked before anything changes.
    let mut plans = Vec::new();
    for s in servers {
        let Some(services) = services_of(&read.spec, &s.environment) else {
            return Err(OpError::bad_input(format!(
                "environment `{}` is no longer in `{file}`, and this server runs it; nothing changed",
                s.environment
            ))
            .hint("keep it in the spec, or restart `hatoba up` without `--env` naming it"));
        };
        let diff = diff(&s.services_spec(), &services);
        // Containers need the Docker Engine, connected only when `hatoba
        // up` started with a `docker:` service.
        let docker = s.runtime.name().contains("docker");
        if let Some(name) = diff.added.iter().chain(&diff.changed).find(|n| {
            !docker
                && services
                    .get(*n)
                    .is_some_and(|svc| matches!(svc.runtime, hatoba_spec::Runtime::Docker(_)))
        }) {
            return Err(OpError::bad_input(format!(
                "`{file}` runs `{}` as a Docker container, and this `hatoba up` started without the Docker Engine (no `docker:` service then); nothing changed",
                named(s, name.as_str())
            ))
            .hint("restart `hatoba up` with this spec: it connects the Docker Engine at start"));
        }
        let addrs = diff
            .listen
            .iter()
            .map(|(key, _, l)| resolve(&named(s, key), l))
            .collect::<Result<Vec<_>, _>>()?;
        plans.push(Plan {
            server: Arc::clone(s),
            services,
            diff,
            addrs,
        });
    }
    if several {
        let envs: Vec<hatoba_core::EnvName> =
            servers.iter().map(|s| s.environment.clone()).collect();
        if let Some((addr, a, b)) = crate::server::listen_clash(&read.spec, &envs) {
            return Err(OpError::bad_input(format!(
                "{a} and {b} both listen on {addr} in `{file}`: each environment needs its own addresses; nothing changed"
            )));
        }
    }
    // A removed service must not run, and no deployment may start on it
    // while the reload goes on: its `ops` lock is held to the end (a deploy
    // takes it before it begins, and checks the service is still there).
    let removed: Vec<(Arc<Server>, ServiceName, Arc<ServiceState>)> = plans
        .iter()
        .flat_map(|p| {
            p.diff.removed.iter().filter_map(|n| {
                p.server
                    .service(n)
                    .map(|st| (Arc::clone(&p.server), n.clone(), st))
            })
        })
        .collect();
    let mut held = Vec::new();
    for (s, name, state) in &removed {
        held.push(state.ops.lock().await);
        let serving = state.serving_version();
        let live = state
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let who = named(s, name.as_str());
        if live {
            return Err(OpError::conflict(format!(
                "`{file}` removes service `{who}`, which has a deployment in progress; nothing changed"
            ))
            .hint("let it end (or `hatoba abort`), then reload; a service is removed only when it runs nothing"));
        }
        if let Some(v) = serving {
            return Err(OpError::conflict(format!(
                "`{file}` removes service `{who}`, which still runs ({v} serves); nothing changed"
            ))
            .hint("keep it in the spec for now: a running service is not stopped by a reload; `hatoba up` started again with the new spec stops it"));
        }
    }
    for p in &plans {
        for key in p.diff.old_keys.iter().filter(|k| !p.diff.keys.contains(k)) {
            let Some(service) = key.strip_suffix("@preview") else {
                continue;
            };
            let live = service
                .parse::<ServiceName>()
                .ok()
                .and_then(|n| p.server.service(&n))
                .is_some_and(|st| {
                    st.live
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_some()
                });
            if live {
                return Err(OpError::conflict(format!(
                    "`{file}` drops the preview address of `{}` while a deployment of it is in progress; nothing changed",
                    named(&p.server, service)
                ))
                .hint("reload once the deployment has ended"));
            }
        }
    }

    // Listeners: new ones opened, moved ones opened on their new address
    // (the old one accepts until then). Undone on the first failure.
    let mut opened: Vec<(&Plan, String, Option<SocketAddr>)> = Vec::new();
    let mut failure = None;
    'listen: for p in &plans {
        for ((key, old, _), addr) in p.diff.listen.iter().zip(&p.addrs) {
            match p.server.data_plane.listen(key, *addr).await {
                Ok(_) => {
                    let old = old.as_ref().and_then(|l| resolve(key, l).ok());
                    opened.push((p, key.clone(), old));
                }
                Err(e) => {
                    failure = Some(OpError::failed(format!(
                        "{}; nothing changed",
                        error_chain(&e)
                    )));
                    break 'listen;
                }
            }
        }
    }
    if let Some(e) = failure {
        for (p, key, old) in opened.iter().rev() {
            if let Some(old) = old {
                let _ = p.server.data_plane.listen(key, *old).await;
            }
        }
        let before: Vec<String> = plans
            .iter()
            .flat_map(|p| p.diff.old_keys.iter().map(|k| named(&p.server, k)))
            .collect();
        let _ = plane.retain(&before).await;
        return Err(e);
    }

    // Now the spec changes, at once for every environment.
    let loaded = Arc::new(Loaded {
        spec: read.spec.clone(),
        digest: read.digest.clone(),
    });
    let mut answer = hatoba_api::SpecReload {
        file: file.clone(),
        digest: read.digest.clone(),
        previous_digest: previous.clone(),
        warnings: read.warnings.clone(),
        ..Default::default()
    };
    for p in &plans {
        let s = &p.server;
        *s.loaded.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&loaded);
        for name in &p.diff.removed {
            s.services
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name);
            s.unsupervise(name);
        }
        for name in &p.diff.added {
            let Some(svc) = p.services.get(name) else {
                continue;
            };
            let deployer = Deployer::new(
                Arc::clone(&s.store),
                Arc::clone(&s.runtime),
                Arc::clone(&s.data_plane),
            );
            let state = Arc::new(ServiceState::new(deployer, svc.clone()));
            s.services
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.clone(), Arc::clone(&state));
            s.supervise_one(name, &state);
        }
        // A preview address opened for a service that serves shows what
        // serves, as it does between rollouts.
        for (key, old, _) in &p.diff.listen {
            let (None, Some(service)) = (old, key.strip_suffix("@preview")) else {
                continue;
            };
            if let Some(table) = s.data_plane.table(service).await {
                let _ = s
                    .data_plane
                    .route(hatoba_proxy::RouteSpec {
                        service: key.clone(),
                        ..table
                    })
                    .await;
            }
        }
        answer
            .added
            .extend(p.diff.added.iter().map(|n| named(s, n.as_str())));
        answer
            .changed
            .extend(p.diff.changed.iter().map(|n| named(s, n.as_str())));
        answer
            .removed
            .extend(p.diff.removed.iter().map(|n| named(s, n.as_str())));
        answer
            .rebound
            .extend(p.diff.listen.iter().filter_map(|(k, old, new)| {
                old.as_ref()
                    .map(|o| format!("{}: {o} -> {new}", named(s, k)))
            }));
    }
    drop(held);
    // What no environment listens on any more closes (removed services,
    // dropped previews), once, over every environment's keys.
    let keys: Vec<String> = plans
        .iter()
        .flat_map(|p| p.diff.keys.iter().map(|k| named(&p.server, k)))
        .collect();
    if let Err(e) = plane.retain(&keys).await {
        tracing::warn!(error = %error_chain(&e), "reload: a listener the spec no longer has could not be closed");
    }
    plane.set_retention(read.spec.retention.metrics).await;

    let event = hatoba_core::Event::SpecReloaded {
        digest: read.digest.clone(),
        previous,
        added: answer.added.clone(),
        changed: answer.changed.clone(),
        removed: answer.removed.clone(),
        by: by.clone(),
    };
    let now = crate::clock_now();
    // The server's own: what the next deployment of any service does has
    // changed, whether or not one is in progress.
    if let Err(e) = first
        .store
        .append_server_event(None, hatoba_store::NewEvent::of(now, &event, None))
        .await
    {
        tracing::warn!(error = %error_chain(&e), "reload: the spec_reloaded event could not be stored; the reload stands");
    }
    for p in &plans {
        for (name, state) in p.server.service_states() {
            let live = state
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .and_then(|(id, _)| id.clone());
            if let Some(id) = live {
                answer
                    .in_progress
                    .push(format!("{}: {id}", named(&p.server, name.as_str())));
                let _ = p
                    .server
                    .store
                    .append_event(
                        &id,
                        hatoba_store::NewEvent::of(now, &event, Some(name.as_str())),
                    )
                    .await;
            }
        }
    }
    let message = event.message(None);
    tracing::info!(
        kind = "spec_reloaded",
        file = %file,
        digest = %read.digest,
        "{message}"
    );
    let _ = first
        .store
        .record_audit(hatoba_store::NewAudit {
            at: now,
            actor: by.unwrap_or_else(|| "cli".to_owned()),
            action: "reload".to_owned(),
            target: file,
            outcome: hatoba_store::AuditOutcome::Ok,
            detail: Some(message),
        })
        .await;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::diff;

    fn services(
        yaml: &str,
    ) -> std::collections::BTreeMap<hatoba_core::ServiceName, hatoba_spec::Service> {
        let parsed = hatoba_spec::parse(yaml);
        parsed
            .spec
            .unwrap_or_else(|| panic!("{yaml}\n{:#?}", parsed.diagnostics))
            .services
    }

    const BASE: &str = r#"
app: t
services:
  web:
    process: {command: app}
    route: {listen: "127.0.0.1:8080"}
  api:
    process: {command: app}
    route: {listen: "127.0.0.1:8081"}
"#;

    #[test]
    fn the_same_spec_changes_nothing() {
        let d = diff(&services(BASE), &services(BASE));
        assert!(d.added.is_empty() && d.changed.is_empty() && d.removed.is_empty());
        assert!(d.listen.is_empty(), "{d:?}");
        assert_eq!(d.keys, d.old_keys);
    }

    #[test]
    fn added_changed_removed_and_moved_are_told_apart() {
        let new = r#"
app: t
services:
  web:
    process: {command: app2}
    route: {listen: "127.0.0.1:9090"}
  worker:
    process: {command: app}
    route: {listen: "127.0.0.1:8082"}
    strategy:
      blueGreen: {previewListen: "127.0.0.1:8083"}
"#;
        let d = diff(&services(BASE), &services(new));
        let names =
            |v: &[hatoba_core::ServiceName]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(&d.added), ["worker"]);
        assert_eq!(names(&d.changed), ["web"]);
        assert_eq!(names(&d.removed), ["api"]);
        let listen: Vec<(String, Option<String>, String)> = d
            .listen
            .iter()
            .map(|(k, o, n)| {
                (
                    k.clone(),
                    o.as_ref().map(ToString::to_string),
                    n.to_string(),
                )
            })
            .collect();
        assert_eq!(
            listen,
            [
                (
                    "web".to_owned(),
                    Some("127.0.0.1:8080".to_owned()),
                    "127.0.0.1:9090".to_owned()
                ),
                ("worker".to_owned(), None, "127.0.0.1:8082".to_owned()),
                (
                    "worker@preview".to_owned(),
                    None,
                    "127.0.0.1:8083".to_owned()
                ),
            ]
        );
        assert_eq!(d.keys, ["web", "worker", "worker@preview"]);
        assert_eq!(d.old_keys, ["api", "web"]);
    }
}
