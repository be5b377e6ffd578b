//! Operations that read the deployment history: `history`, `status`,
//! `analysis`, and `diagnosis` (the history around what runs now). They
//! change nothing.
//!
//! `history`, `status` and `analysis` are functions of a store alone, so
//! the CLI runs the very same operation over the store it opens itself
//! when no server runs (`hatoba history` works offline, also against
//! `--store URL`); the `Server` methods of the same names run them over
//! the server's store and add what only a running server knows (the
//! instances and problems of the services it runs).

use super::OpError;
use crate::api;
use crate::server::Server;
use hatoba_core::{DeploymentId, EnvName, Millis, ServiceName};
use hatoba_store::{HistoryFilter, Store};

/// The most deployments `status` looks through for the (service,
/// environment) pairs and the versions promoted without evidence.
const STATUS_SCAN: u32 = 10_000;

/// `hatoba history`: which deployments to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this service.
    pub service: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// `hatoba status`: which services to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusQuery {
    /// Only this service.
    pub service: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
}

fn service_arg(s: &str, field: &str) -> Result<ServiceName, OpError> {
    s.parse()
        .map_err(|e: hatoba_core::NameError| OpError::BadInput {
            message: e.to_string(),
            hint: None,
            field: Some(field.to_owned()),
        })
}

fn env_arg(s: &str, field: &str) -> Result<EnvName, OpError> {
    s.parse()
        .map_err(|e: hatoba_core::NameError| OpError::BadInput {
            message: e.to_string(),
            hint: None,
            field: Some(field.to_owned()),
        })
}

fn store_error(e: &hatoba_store::StoreError) -> OpError {
    OpError::store(e)
}

/// Past deployments, newest first.
pub async fn history(store: &dyn Store, q: &HistoryQuery) -> Result<hatoba_api::History, OpError> {
    let filter = HistoryFilter {
        service: q
            .service
            .as_deref()
            .map(|s| service_arg(s, "service"))
            .transpose()?,
        environment: q
            .environment
            .as_deref()
            .map(|e| env_arg(e, "environment"))
            .transpose()?,
        limit: q.limit,
    };
    let rows = store.history(&filter).await.map_err(|e| store_error(&e))?;
    Ok(hatoba_api::History {
        api_version: hatoba_api::API_VERSION.to_owned(),
        deployments: rows.iter().map(api::deployment).collect(),
    })
}

/// What serves and what is in progress for every (service, environment)
/// with a history, optionally narrowed; as of `now`. A service named that
/// has no history is not found.
pub async fn status(
    store: &dyn Store,
    q: &StatusQuery,
    now: Millis,
) -> Result<hatoba_api::Status, OpError> {
    let service = q
        .service
        .as_deref()
        .map(|s| service_arg(s, "service"))
        .transpose()?;
    let env = q
        .environment
        .as_deref()
        .map(|e| env_arg(e, "environment"))
        .transpose()?;
    let services = collect_status(store, service.as_ref(), env.as_ref(), now)
        .await
        .map_err(|e| store_error(&e))?;
    if let (true, Some(s)) = (services.is_empty(), &service) {
        return Err(OpError::not_found(format!(
            "service `{s}` has no deployment history{}",
            env.as_ref()
                .map(|e| format!(" in `{e}`"))
                .unwrap_or_default()
        ))
        .hint("`hatoba history` lists what has been deployed"));
    }
    Ok(hatoba_api::Status {
        api_version: hatoba_api::API_VERSION.to_owned(),
        services,
    })
}

/// Current and live deployment of every (service, environment) with a
/// history, optionally narrowed.
async fn collect_status(
    store: &dyn Store,
    service: Option<&ServiceName>,
    env: Option<&EnvName>,
    now: Millis,
) -> Result<Vec<hatoba_api::ServiceStatus>, hatoba_store::StoreError> {
    // Every pair that appears in the history, not only those with a success:
    // a service whose first deployment failed still has a status.
    let mut pairs: Vec<(ServiceName, EnvName)> = Vec::new();
    let filter = HistoryFilter {
        service: service.cloned(),
        environment: env.cloned(),
        limit: STATUS_SCAN,
    };
    for d in store.history(&filter).await? {
        let pair = (d.service, d.environment);
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    pairs.sort();
    let mut out = Vec::with_capacity(pairs.len());
    for (s, e) in pairs {
        let current = store.current(&s, &e).await?;
        let current_without_evidence = match &current {
            Some(c) => {
                let history = store
                    .history(&HistoryFilter {
                        service: Some(s.clone()),
                        environment: Some(e.clone()),
                        limit: STATUS_SCAN,
                    })
                    .await?;
                let succeeded: Vec<&hatoba_store::Deployment> = history
                    .iter()
                    .filter(|d| d.status == hatoba_core::DeploymentStatus::Succeeded)
                    .collect();
                super::without_evidence(store, &succeeded, &c.version).await?
            }
            None => None,
        };
        let live = store.live(&s, &e).await?;
        let live_events = match &live {
            Some(d) => store.events(&d.id).await?,
            None => Vec::new(),
        };
        let (analysis, live_phase) = match &live {
            Some(d) => (
                latest_per_metric(&store.measurements(&d.id).await?),
                phase(&live_events),
            ),
            None => (Vec::new(), None),
        };
        // A live deployment that serves all traffic is what serves, before
        // it is complete; the version it replaced stays warm meanwhile.
        let (serving, warm, current_without_evidence) =
            match live.as_ref().filter(|d| d.serving_at.is_some()) {
                Some(l) => (
                    Some(l),
                    api::warm_version(
                        last_of(&live_events, hatoba_store::event_kind::SERVING)
                            .and_then(|e| e.data.as_ref()),
                        current.as_ref(),
                        now,
                    ),
                    last_of(
                        &live_events,
                        hatoba_store::event_kind::PROMOTED_WITHOUT_EVIDENCE,
                    )
                    .map(|e| e.message.clone()),
                ),
                None => (current.as_ref(), None, current_without_evidence),
            };
        out.push(hatoba_api::ServiceStatus {
            analysis,
            instances: Vec::new(),
            service: s.to_string(),
            environment: e.to_string(),
            current_version: serving.map(|d| d.version.to_string()),
            current: serving.map(api::deployment),
            warm,
            live: live.as_ref().map(api::deployment),
            live_phase,
            current_without_evidence,
            problem: None,
        });
    }
    Ok(out)
}

/// A deployment's newest event of a kind.
fn last_of<'a>(events: &'a [hatoba_store::Event], kind: &str) -> Option<&'a hatoba_store::Event> {
    events.iter().rev().find(|e| e.kind == kind)
}

/// A live deployment's latest traffic change and latest rollout step.
fn phase(events: &[hatoba_store::Event]) -> Option<String> {
    let typed: Vec<(&hatoba_store::Event, hatoba_core::Event)> =
        events.iter().map(|e| (e, e.typed())).collect();
    let last = |is: fn(&hatoba_core::Event) -> bool| {
        typed
            .iter()
            .rev()
            .find(|(_, t)| is(t))
            .map(|(e, _)| e.message.as_str())
    };
    // A deployment that waits for approval says so (and whose `approve`
    // moves it on) until it is approved: `pending` alone explains nothing.
    let waiting = last(|t| {
        matches!(
            t,
            hatoba_core::Event::ApprovalRequested { .. } | hatoba_core::Event::ApprovalGiven { .. }
        )
    })
    .filter(|m| m.starts_with("waiting for approval"));
    let parts: Vec<&str> = [
        waiting,
        last(|t| t.weight().is_some()),
        last(hatoba_core::Event::is_rollout),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The newest measurement of each (run, metric), in first-seen order.
fn latest_per_metric(all: &[hatoba_store::Measurement]) -> Vec<hatoba_api::MeasurementInfo> {
    let mut out: Vec<hatoba_api::MeasurementInfo> = Vec::new();
    for m in all {
        let info = api::measurement(m);
        match out
            .iter_mut()
            .find(|o| o.run == info.run && o.metric == info.metric)
        {
            Some(o) => *o = info,
            None => out.push(info),
        }
    }
    out
}

/// Every analysis measurement of a deployment, in order.
pub async fn analysis(store: &dyn Store, id: &str) -> Result<hatoba_api::AnalysisReport, OpError> {
    let Ok(id) = id.parse::<DeploymentId>() else {
        return Err(OpError::bad_input(format!(
            "`{}` is not a deployment id",
            hatoba_core::shown(id)
        )));
    };
    let Some(d) = store.deployment(&id).await.map_err(|e| store_error(&e))? else {
        return Err(OpError::not_found(format!("no deployment {id}"))
            .hint("`hatoba history` lists deployments"));
    };
    let measurements = store
        .measurements(&d.id)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(hatoba_api::AnalysisReport {
        api_version: hatoba_api::API_VERSION.to_owned(),
        deployment: api::deployment(&d),
        measurements: measurements.iter().map(api::measurement).collect(),
    })
}

impl Server {
    /// [`history`] over this server's store.
    pub async fn history(&self, q: &HistoryQuery) -> Result<hatoba_api::History, OpError> {
        history(self.store.as_ref(), q).await
    }

    /// [`status`] over this server's store, with the running instances and
    /// the problem of each service this server runs.
    pub async fn status(&self, q: &StatusQuery) -> Result<hatoba_api::Status, OpError> {
        let mut status = status(self.store.as_ref(), q, crate::clock_now()).await?;
        self.add_running(&mut status).await;
        Ok(status)
    }

    /// The running instances and the problem of each service of `status`
    /// that this server runs (in its environment).
    pub async fn add_running(&self, status: &mut hatoba_api::Status) {
        for s in &mut status.services {
            if s.environment != self.environment.as_str() {
                continue;
            }
            // Only services of the spec this server runs have a detail.
            if let Ok(d) = self.service_detail(&s.service).await {
                s.instances = d
                    .instances
                    .into_iter()
                    .filter(|i| i.state == "running")
                    .collect();
                s.problem = d.problem;
            }
        }
    }

    /// [`analysis`] over this server's store.
    pub async fn analysis(&self, id: &str) -> Result<hatoba_api::AnalysisReport, OpError> {
        analysis(self.store.as_ref(), id).await
    }

    /// `hatoba diagnose`: what runs for a service now, its latest five
    /// deployments in this server's environment, the newest one's events,
    /// a warning when what serves was promoted past missing evidence, and
    /// the last lines of each running instance's output.
    pub async fn diagnosis(&self, name: &str) -> Result<hatoba_api::Diagnosis, OpError> {
        let detail = self.service_detail(name).await?;
        let service = service_arg(name, "name")?;
        let history = self
            .store
            .history(&HistoryFilter {
                service: Some(service.clone()),
                environment: Some(self.environment.clone()),
                limit: 5,
            })
            .await
            .map_err(|e| store_error(&e))?;
        let events = match history.first() {
            Some(d) => self
                .store
                .events(&d.id)
                .await
                .map_err(|e| store_error(&e))?,
            None => Vec::new(),
        };
        let succeeded: Vec<&hatoba_store::Deployment> = history
            .iter()
            .filter(|d| d.status == hatoba_core::DeploymentStatus::Succeeded)
            .collect();
        let serving_without_evidence = match succeeded.first() {
            Some(current) => {
                super::without_evidence(self.store.as_ref(), &succeeded, &current.version)
                    .await
                    .map_err(|e| store_error(&e))?
                    .map(|why| format!("{}: {why}", current.version))
            }
            None => None,
        };
        let logs = self.tails(&service, DIAGNOSIS_LINES).await;
        let mut removed = Vec::new();
        for d in &history {
            let all = self
                .store
                .events(&d.id)
                .await
                .map_err(|e| store_error(&e))?;
            removed.extend(all.into_iter().filter(|e| {
                matches!(
                    e.typed(),
                    hatoba_core::Event::ContainerRemoved { .. }
                        | hatoba_core::Event::ImagePruned { .. }
                )
            }));
        }
        removed.sort_by_key(|e| e.id);
        let removed = removed.split_off(removed.len().saturating_sub(DIAGNOSIS_REMOVED));
        Ok(hatoba_api::Diagnosis {
            api_version: hatoba_api::API_VERSION.to_owned(),
            service: detail,
            history: history.iter().map(api::deployment).collect(),
            events: events.iter().map(api::event).collect(),
            serving_without_evidence,
            logs,
            removed: removed.iter().map(api::event).collect(),
        })
    }
}

/// Lines of each instance's output in a diagnosis.
const DIAGNOSIS_LINES: usize = 5;
/// Removals (containers, images) a diagnosis shows, the newest.
const DIAGNOSIS_REMOVED: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use hatoba_store::SqlStore;

    async fn store() -> (tempfile::TempDir, SqlStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open_sqlite(dir.path().join("hatoba.db"))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn reads_of_an_empty_history_answer_empty_or_not_found() {
        let (_dir, store) = store().await;
        let h = history(
            &store,
            &HistoryQuery {
                limit: 20,
                ..HistoryQuery::default()
            },
        )
        .await
        .unwrap();
        assert!(h.deployments.is_empty());
        let s = status(&store, &StatusQuery::default(), Millis(0))
            .await
            .unwrap();
        assert!(s.services.is_empty());
        let e = status(
            &store,
            &StatusQuery {
                service: Some("web".to_owned()),
                environment: Some("production".to_owned()),
            },
            Millis(0),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), hatoba_api::ErrorKind::NotFound, "{e:?}");
        assert!(
            e.message()
                .contains("`web` has no deployment history in `production`"),
            "{e:?}"
        );
        let e = analysis(&store, "d-1").await.unwrap_err();
        assert_eq!(e.kind(), hatoba_api::ErrorKind::NotFound, "{e:?}");
    }

    /// A deployment of `version` of `web` in `production` at `at`, taken
    /// to `end`.
    async fn deployed(
        store: &SqlStore,
        version: &str,
        at: u64,
        end: hatoba_core::DeploymentStatus,
    ) -> hatoba_store::Deployment {
        let d = store
            .create_deployment(hatoba_store::NewDeployment {
                service: "web".parse().unwrap(),
                environment: "production".parse().unwrap(),
                version: version.parse().unwrap(),
                commit_sha: None,
                strategy: "rolling".to_owned(),
                deployed_by: "alice".to_owned(),
                rollback_of: None,
                spec_digest: "digest".to_owned(),
                vars: Default::default(),
                secrets: Default::default(),
                image_id: None,
                at: Millis(at),
            })
            .await
            .unwrap();
        store
            .transition(
                &d.id,
                hatoba_core::DeploymentStatus::InProgress,
                None,
                Millis(at + 1),
            )
            .await
            .unwrap();
        if end != hatoba_core::DeploymentStatus::InProgress {
            store
                .transition(&d.id, end, None, Millis(at + 2))
                .await
                .unwrap();
        }
        d
    }

    #[tokio::test]
    async fn history_status_and_analysis_read_what_the_store_holds() {
        let (_dir, store) = store().await;
        let v1 = deployed(
            &store,
            "v1",
            1_000,
            hatoba_core::DeploymentStatus::Succeeded,
        )
        .await;
        let v2 = deployed(
            &store,
            "v2",
            2_000,
            hatoba_core::DeploymentStatus::InProgress,
        )
        .await;
        let h = history(
            &store,
            &HistoryQuery {
                service: Some("web".to_owned()),
                environment: Some("production".to_owned()),
                limit: 1,
            },
        )
        .await
        .unwrap();
        let ids: Vec<&str> = h.deployments.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [v2.id.as_str()]);
        let s = status(&store, &StatusQuery::default(), Millis(3_000))
            .await
            .unwrap();
        assert_eq!(s.services.len(), 1, "{s:?}");
        let web = &s.services[0];
        assert_eq!(web.current_version.as_deref(), Some("v1"), "{web:?}");
        assert_eq!(
            web.live.as_ref().map(|d| d.id.as_str()),
            Some(v2.id.as_str()),
            "{web:?}"
        );
        let a = analysis(&store, v1.id.as_str()).await.unwrap();
        assert_eq!(a.deployment.id, v1.id.as_str());
        assert_eq!(a.deployment.status, "succeeded");
        assert!(a.measurements.is_empty());
    }

    #[tokio::test]
    async fn malformed_names_and_ids_are_bad_input_naming_the_field() {
        let (_dir, store) = store().await;
        let e = history(
            &store,
            &HistoryQuery {
                service: Some("Not A Name".to_owned()),
                limit: 5,
                ..HistoryQuery::default()
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, OpError::BadInput { field: Some(f), .. } if f == "service"),
            "{e:?}"
        );
        let e = history(
            &store,
            &HistoryQuery {
                environment: Some("prod uction".to_owned()),
                limit: 5,
                ..HistoryQuery::default()
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, OpError::BadInput { field: Some(f), .. } if f == "environment"),
            "{e:?}"
        );
        let e = analysis(&store, "not an id").await.unwrap_err();
        assert_eq!(e.kind(), hatoba_api::ErrorKind::BadInput, "{e:?}");
    }
}
