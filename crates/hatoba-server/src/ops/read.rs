//! Operations that read: a service as it runs now (instances, route table,
//! health) and a deployment with its events. They change nothing.

use super::OpError;
use crate::api;
use crate::server::Server;
use hatoba_core::{DeploymentId, ServiceName};
use hatoba_runtime::InstanceState;
use std::sync::PoisonError;

impl Server {
    /// The services this server runs, by name, with what serves and what
    /// is in progress.
    pub fn list_services(&self) -> hatoba_api::ServiceList {
        let services = self
            .services_spec()
            .iter()
            .map(|(name, svc)| {
                let state = self.service(name);
                hatoba_api::ServiceSummary {
                    service: name.to_string(),
                    listen: svc.route.listen.to_string(),
                    serving_version: state.as_ref().and_then(|s| s.serving_version()),
                    live_deployment: state.as_ref().and_then(|s| {
                        s.live
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .as_ref()
                            .and_then(|(id, _)| id.as_ref().map(ToString::to_string))
                    }),
                }
            })
            .collect();
        hatoba_api::ServiceList {
            api_version: hatoba_api::API_VERSION.to_owned(),
            environment: self.environment.to_string(),
            services,
        }
    }

    /// The instances a live deployment drains now: when each drain began
    /// and how long it may take (from its `instance_draining` event, until
    /// `instance_drained`). Empty when the store cannot say.
    async fn draining(
        &self,
        id: &hatoba_core::DeploymentId,
    ) -> std::collections::HashMap<String, (hatoba_core::Millis, std::time::Duration)> {
        let mut draining = std::collections::HashMap::new();
        for e in self.store.events(id).await.unwrap_or_default() {
            match e.typed() {
                hatoba_core::Event::InstanceDraining {
                    instance, drain_ms, ..
                } => {
                    draining.insert(instance, (e.at, std::time::Duration::from_millis(drain_ms)));
                }
                hatoba_core::Event::InstanceDrained { instance, .. }
                | hatoba_core::Event::InstanceStopped { instance, .. } => {
                    draining.remove(&instance);
                }
                _ => {}
            }
        }
        draining
    }

    /// This server's environment with its services.
    pub fn environment_info(&self) -> hatoba_api::EnvironmentInfo {
        hatoba_api::EnvironmentInfo {
            name: self.environment.to_string(),
            require_approval: self
                .current()
                .spec
                .environments
                .get(&self.environment)
                .is_some_and(|e| e.require_approval),
            services: self.list_services().services,
        }
    }

    /// What runs for a service and how it is routed, now.
    pub async fn service_detail(&self, name: &str) -> Result<hatoba_api::ServiceDetail, OpError> {
        let Some((service, state)) = name
            .parse::<ServiceName>()
            .ok()
            .and_then(|n| self.service(&n).map(|s| (n, s)))
        else {
            let names: Vec<String> = self
                .service_names()
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(
                OpError::not_found(format!("no service `{}`", hatoba_core::shown(name)))
                    .hint(format!("services: {}", names.join(", "))),
            );
        };
        let route = self.data_plane.table(service.as_str()).await;
        let in_route: std::collections::HashSet<std::net::SocketAddr> = route
            .iter()
            .flat_map(|r| r.groups.iter())
            .filter(|g| g.weight > 0)
            .flat_map(|g| g.backends.iter().copied())
            .collect();
        let (observed, restarts, crash_loop, next) = crate::supervisor::snapshot(&state);
        let live = state
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|(id, _)| id.clone());
        let grace = self
            .services_spec()
            .get(&service)
            .map(|s| s.termination_grace_period);
        let now = crate::deployer::clock_now();
        let listed = self.runtime.list(&service).await.unwrap_or_default();
        // Only a running instance out of the route can be draining: the
        // live deployment's events are read only when there is one.
        let maybe_draining = listed
            .iter()
            .any(|i| i.state == InstanceState::Running && !in_route.contains(&i.addr));
        let draining = match &live {
            Some(id) if maybe_draining => self.draining(id).await,
            _ => std::collections::HashMap::new(),
        };
        let mut left = std::collections::HashMap::new();
        for i in listed.iter().filter(|i| draining.contains_key(&i.id.0)) {
            if let Some(n) = self.data_plane.open_at(i.addr).await {
                left.insert(i.id.0.clone(), n);
            }
        }
        let instances = listed
            .iter()
            .map(|i| {
                let o = observed.get(&i.id.0);
                let connections_left = left.get(&i.id.0).copied();
                hatoba_api::InstanceInfo {
                    id: i.id.to_string(),
                    version: i.version.to_string(),
                    addr: i.addr.to_string(),
                    pid: i.pid,
                    state: i.state_words(),
                    in_route: in_route.contains(&i.addr),
                    ready: o.map(|o| o.ready),
                    last_probe: o.and_then(|o| o.last_probe.clone()),
                    rss_bytes: o.and_then(|o| o.usage).map(|u| u.rss_bytes),
                    cpu_seconds: o.and_then(|o| o.usage).map(|u| u.cpu_seconds),
                    log: i.log.as_ref().map(|p| p.display().to_string()),
                    started_at: i.started_at.to_rfc3339(),
                    draining: draining
                        .get(&i.id.0)
                        .map(|(at, drain)| drain_words(*at, *drain, connections_left, grace, now)),
                    connections_left,
                }
            })
            .collect();
        let serving = state.serving_version();
        let live = live.as_ref().map(ToString::to_string);
        Ok(hatoba_api::ServiceDetail {
            api_version: hatoba_api::API_VERSION.to_owned(),
            service: service.to_string(),
            environment: self.environment.to_string(),
            serving_version: serving,
            live_deployment: live,
            instances,
            route: route
                .map(|r| {
                    r.groups
                        .iter()
                        .map(|g| hatoba_api::RouteGroup {
                            role: g.role.as_str().to_owned(),
                            version: g.version.clone(),
                            weight: g.weight,
                            backends: g.backends.iter().map(ToString::to_string).collect(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            recent_restarts: restarts,
            problem: state
                .problem
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            crash_loop,
            next_restart: next.map(|m| m.to_rfc3339()),
        })
    }

    /// A deployment and its events so far.
    pub async fn deployment_detail(
        &self,
        id: &str,
    ) -> Result<hatoba_api::DeploymentDetail, OpError> {
        let Ok(id) = id.parse::<DeploymentId>() else {
            return Err(OpError::bad_input(format!(
                "`{}` is not a deployment id",
                hatoba_core::shown(id)
            )));
        };
        match (
            self.store.deployment(&id).await,
            self.store.events(&id).await,
        ) {
            (Ok(Some(d)), Ok(events)) => Ok(hatoba_api::DeploymentDetail {
                api_version: hatoba_api::API_VERSION.to_owned(),
                deployment: api::deployment(&d),
                events: events.iter().map(api::event).collect(),
            }),
            (Ok(None), _) => Err(OpError::not_found(format!("no deployment {id}"))),
            (Err(e), _) | (_, Err(e)) => Err(OpError::store(&e)),
        }
    }
}

/// `draining: 3 connections left, up to 6s left, then SIGTERM, SIGKILL 30s
/// later` for a drain that began `at` and may take `drain`, with `open`
/// connections left (when known), seen at `now`.
fn drain_words(
    at: hatoba_core::Millis,
    drain: std::time::Duration,
    open: Option<u32>,
    grace: Option<std::time::Duration>,
    now: hatoba_core::Millis,
) -> String {
    let spent = std::time::Duration::from_millis(now.0.saturating_sub(at.0));
    let left = drain.saturating_sub(spent);
    // Whole seconds, rounded up: "0s left" only once it is over.
    let left = std::time::Duration::from_secs(left.as_millis().div_ceil(1000) as u64);
    let then = match grace {
        Some(g) => format!(
            "then SIGTERM, SIGKILL {} later",
            hatoba_core::format_duration(g)
        ),
        None => "then SIGTERM".to_owned(),
    };
    let connections = match open {
        Some(1) => "1 connection left, ".to_owned(),
        Some(n) => format!("{n} connections left, "),
        None => String::new(),
    };
    format!(
        "draining: {connections}up to {} left, {then}",
        hatoba_core::format_duration(left)
    )
}

#[cfg(test)]
mod drain_tests {
    use super::drain_words;
    use hatoba_core::Millis;
    use std::time::Duration;

    #[test]
    fn a_drain_says_the_time_left_and_what_comes_after() {
        let d = Duration::from_secs(30);
        let g = Some(Duration::from_secs(10));
        assert_eq!(
            drain_words(Millis(1_000), d, Some(3), g, Millis(1_000)),
            "draining: 3 connections left, up to 30s left, then SIGTERM, SIGKILL 10s later"
        );
        assert_eq!(
            drain_words(Millis(1_000), d, Some(1), g, Millis(25_500)),
            "draining: 1 connection left, up to 6s left, then SIGTERM, SIGKILL 10s later"
        );
        // Past its end (the stop is under way), and a clock that went back.
        assert_eq!(
            drain_words(Millis(1_000), d, Some(0), None, Millis(99_000)),
            "draining: 0 connections left, up to 0s left, then SIGTERM"
        );
        assert_eq!(
            drain_words(Millis(9_000), d, None, None, Millis(1_000)),
            "draining: up to 30s left, then SIGTERM"
        );
    }
}
