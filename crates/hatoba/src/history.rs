//! `hatoba history` and `hatoba status`: reading the deployment history.
//!
//! Rows come from `hatoba-store`; they are converted to `hatoba-api` types
//! here (the one place that knows both) and printed as a table or JSON.

use crate::cli::{Global, HistoryArgs, Output, StatusArgs};
use crate::exit::{CliError, Exit};
use crate::output;
use comfy_table::{Table, presets};
use hatoba_core::{EnvName, ServiceName};
use hatoba_store::{HistoryFilter, Store};

pub(crate) async fn history(global: &Global, args: &HistoryArgs) -> anyhow::Result<Exit> {
    let filter = HistoryFilter {
        service: args.service.as_deref().map(parse_service).transpose()?,
        environment: args.env.as_deref().map(parse_env).transpose()?,
        limit: args.limit,
    };
    let store = crate::state::open_for_reading(global).await?;
    let rows = store.history(&filter).await?;
    store.close().await;
    let deployments: Vec<hatoba_api::Deployment> =
        rows.iter().map(hatoba_server::api::deployment).collect();
    match global.output {
        Output::Json => output::json(&hatoba_api::History {
            api_version: hatoba_api::API_VERSION.to_owned(),
            deployments,
        })?,
        Output::Text if deployments.is_empty() => output::stderr("no deployments match\n"),
        Output::Text => output::stdout(&history_table(&deployments)),
    }
    Ok(Exit::Ok)
}

pub(crate) async fn status(global: &Global, args: &StatusArgs) -> anyhow::Result<Exit> {
    let service = args.service.as_deref().map(parse_service).transpose()?;
    let env = args.env.as_deref().map(parse_env).transpose()?;
    let store = crate::state::open_for_reading(global).await?;
    let statuses = collect_status(&store, service.as_ref(), env.as_ref()).await;
    store.close().await;
    let mut statuses = statuses?;
    // What runs now, from the server when one answers (status works
    // without one: the rest comes from the history).
    if crate::server_cmd::server_info(global).is_some() {
        for s in &mut statuses {
            let Ok(bytes) = crate::server_cmd::call(
                global,
                hyper::Method::GET,
                &format!("/api/v1/services/{}?env={}", s.service, s.environment),
                None,
            )
            .await
            else {
                continue;
            };
            if let Ok(d) = serde_json::from_slice::<hatoba_api::ServiceDetail>(&bytes)
                && d.environment == s.environment
            {
                s.instances = d
                    .instances
                    .into_iter()
                    .filter(|i| i.state == "running")
                    .collect();
                s.problem = d.problem;
            }
        }
    }
    if statuses.is_empty() && service.is_some() {
        return Err(CliError::new(
            Exit::NotFound,
            format!(
                "service `{}` has no deployment history{}",
                args.service.as_deref().unwrap_or_default(),
                match &env {
                    Some(e) => format!(" in `{e}`"),
                    None => String::new(),
                }
            ),
        )
        .hint("`hatoba history` lists what has been deployed")
        .into());
    }
    match global.output {
        Output::Json => output::json(&hatoba_api::Status {
            api_version: hatoba_api::API_VERSION.to_owned(),
            services: statuses,
        })?,
        Output::Text if statuses.is_empty() => output::stderr("nothing has been deployed yet\n"),
        Output::Text => output::stdout(&status_table(&statuses)),
    }
    Ok(Exit::Ok)
}

/// Current and live deployment of every (service, environment) with a
/// history, optionally narrowed.
async fn collect_status(
    store: &dyn Store,
    service: Option<&ServiceName>,
    env: Option<&EnvName>,
) -> anyhow::Result<Vec<hatoba_api::ServiceStatus>> {
    // Every pair that appears in the history, not only those with a success:
    // a service whose first deployment failed still has a status.
    let mut pairs: Vec<(ServiceName, EnvName)> = Vec::new();
    let filter = HistoryFilter {
        service: service.cloned(),
        environment: env.cloned(),
        limit: 10_000,
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
                        limit: 10_000,
                    })
                    .await?;
                let succeeded: Vec<&hatoba_store::Deployment> = history
                    .iter()
                    .filter(|d| d.status == hatoba_core::DeploymentStatus::Succeeded)
                    .collect();
                hatoba_server::without_evidence(store, &succeeded, &c.version).await?
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
                    hatoba_server::api::warm_version(
                        last_of(&live_events, hatoba_store::event_kind::SERVING)
                            .and_then(|e| e.data.as_ref()),
                        current.as_ref(),
                        hatoba_server::clock_now(),
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
            current: serving.map(hatoba_server::api::deployment),
            warm,
            live: live.as_ref().map(hatoba_server::api::deployment),
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
    let parts: Vec<&str> = [
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
        let info = hatoba_server::api::measurement(m);
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

/// `hatoba analysis DEPLOYMENT`: every measurement of a deployment.
pub(crate) async fn analysis(global: &Global, id: &str) -> anyhow::Result<Exit> {
    let id: hatoba_core::DeploymentId = id
        .parse()
        .map_err(|e: hatoba_core::NameError| CliError::new(Exit::BadInput, e.to_string()))?;
    let store = crate::state::open_for_reading(global).await?;
    let mut d = store.deployment(&id).await;
    // Not a deployment id: a service's name means its newest deployment
    // (the one in progress, if any), as `hatoba analysis web` suggests.
    if matches!(d, Ok(None))
        && let Ok(service) = id.as_str().parse::<hatoba_core::ServiceName>()
    {
        d = store
            .history(&HistoryFilter {
                service: Some(service),
                environment: None,
                limit: 1,
            })
            .await
            .map(|h| h.into_iter().next());
    }
    let ms = match &d {
        Ok(Some(found)) => store.measurements(&found.id).await,
        _ => Ok(Vec::new()),
    };
    store.close().await;
    let Some(d) = d? else {
        return Err(CliError::new(
            Exit::NotFound,
            format!("no deployment {id}, and no service `{id}` with a deployment"),
        )
        .hint("`hatoba history` lists deployments")
        .into());
    };
    let ms = ms?;
    let deployment = hatoba_server::api::deployment(&d);
    let measurements: Vec<hatoba_api::MeasurementInfo> =
        ms.iter().map(hatoba_server::api::measurement).collect();
    match global.output {
        Output::Json => output::json(&hatoba_api::AnalysisReport {
            api_version: hatoba_api::API_VERSION.to_owned(),
            deployment,
            measurements,
        })?,
        Output::Text => {
            let mut text = format!(
                "deployment {} of `{}` {} ({}): {}{}\n",
                deployment.id,
                deployment.service,
                deployment.version,
                output::strategy(&deployment.strategy),
                deployment.status,
                deployment
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            if measurements.is_empty() {
                text.push_str("no analysis measurement was taken\n");
            } else {
                let start = d.started_at.0;
                let mut t = table(&["AT", "RUN", "METRIC", "VALUE", "VERDICT", "DETAIL"]);
                for (m, raw) in measurements.iter().zip(&ms) {
                    t.add_row(vec![
                        format!("+{:.1}s", raw.at.0.saturating_sub(start) as f64 / 1000.0),
                        m.run.clone(),
                        m.metric.clone(),
                        m.value
                            .map_or_else(|| "-".to_owned(), |v| format!("{v:.4}")),
                        m.verdict.clone(),
                        m.detail.clone().unwrap_or_default(),
                    ]);
                }
                text.push_str(&format!("{}\n", trim_lines(&t.to_string())));
            }
            output::stdout(&text);
        }
    }
    Ok(Exit::Ok)
}

fn parse_service(s: &str) -> Result<ServiceName, CliError> {
    s.parse()
        .map_err(|e: hatoba_core::NameError| CliError::new(Exit::BadInput, e.to_string()))
}

fn parse_env(s: &str) -> Result<EnvName, CliError> {
    s.parse()
        .map_err(|e: hatoba_core::NameError| CliError::new(Exit::BadInput, e.to_string()))
}

/// `2026-11-23T12:15:13.000Z` → `2026-11-23 12:15:13`.
fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..19).unwrap_or(rfc3339).replace('T', " ")
}

fn short_duration(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| hatoba_core::format_duration(std::time::Duration::from_millis(ms)),
    )
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

pub(crate) fn history_table(deployments: &[hatoba_api::Deployment]) -> String {
    let mut t = table(&[
        "ID",
        "SERVICE",
        "ENV",
        "VERSION",
        "STRATEGY",
        "STATUS",
        "STARTED (UTC)",
        "SERVING AFTER",
        "TOOK",
        "BY",
        "REASON",
    ]);
    for d in deployments {
        t.add_row(vec![
            d.id.clone(),
            d.service.clone(),
            d.environment.clone(),
            d.version.clone(),
            output::strategy(&d.strategy).to_owned(),
            d.status.clone(),
            short_time(&d.started_at),
            short_duration(d.serving_after_ms),
            short_duration(d.duration_ms),
            d.deployed_by.clone(),
            d.reason.clone().unwrap_or_default(),
        ]);
    }
    format!("{}\n", trim_lines(&t.to_string()))
}

fn status_table(statuses: &[hatoba_api::ServiceStatus]) -> String {
    let mut t = table(&[
        "SERVICE",
        "ENV",
        "VERSION",
        "SINCE (UTC)",
        "DEPLOYMENT",
        "INSTANCES",
        "IN PROGRESS",
    ]);
    for s in statuses {
        let mut live = s.live.as_ref().map_or_else(
            || "-".to_owned(),
            |d| match (&d.serving_at, &s.warm) {
                (Some(_), Some(w)) => format!(
                    "{} serving, complete when {} stops ({})",
                    d.version, w.version, d.id
                ),
                (Some(_), None) => format!("{} serving, completing ({})", d.version, d.id),
                (None, _) => format!("{} {} ({})", d.version, d.status, d.id),
            },
        );
        if let Some(p) = &s.live_phase {
            live.push_str(&format!("\n  {p}"));
        }
        if let Some(p) = &s.problem {
            live.push_str(&format!("\n  PROBLEM: {p}"));
        }
        for m in &s.analysis {
            live.push_str(&format!(
                "\n  {} {}: {}{}",
                m.run,
                m.metric,
                m.verdict,
                m.value.map(|v| format!(" ({v:.4})")).unwrap_or_default()
            ));
        }
        let mut version = s.current_version.clone().unwrap_or_else(|| "-".to_owned());
        if let Some(w) = &s.warm {
            version.push_str(&format!("\n  {}", warm_words(w)));
        }
        if s.current_without_evidence.is_some() {
            version.push_str("\n  promoted without evidence");
        }
        t.add_row(vec![
            s.service.clone(),
            s.environment.clone(),
            version,
            s.current
                .as_ref()
                .and_then(|d| d.serving_at.as_deref().or(d.finished_at.as_deref()))
                .map_or_else(|| "-".to_owned(), short_time),
            s.current
                .as_ref()
                .map_or_else(|| "-".to_owned(), |d| d.id.clone()),
            instances_cell(&s.instances),
            live,
        ]);
    }
    format!("{}\n", trim_lines(&t.to_string()))
}

/// `v1 warm, instant rollback for 4m12s`.
pub(crate) fn warm_words(w: &hatoba_api::WarmVersion) -> String {
    match w.remaining_ms {
        Some(0) => format!("{} warm, due to stop", w.version),
        Some(ms) => format!(
            "{} warm, instant rollback for {}",
            w.version,
            hatoba_core::format_duration(std::time::Duration::from_secs(ms.div_ceil(1000)))
        ),
        None => format!("{} warm, instant rollback until it stops", w.version),
    }
}

/// `2/2 in route, 24.3 MiB, 0.4s CPU`, or `-` when no server answered.
fn instances_cell(instances: &[hatoba_api::InstanceInfo]) -> String {
    if instances.is_empty() {
        return "-".to_owned();
    }
    let routed = instances.iter().filter(|i| i.in_route).count();
    let rss: u64 = instances.iter().filter_map(|i| i.rss_bytes).sum();
    let cpu: f64 = instances.iter().filter_map(|i| i.cpu_seconds).sum();
    let mut out = format!("{routed}/{} in route", instances.len());
    if rss > 0 {
        out.push_str(&format!(
            ", {:.1} MiB, {cpu:.1}s CPU",
            rss as f64 / 1_048_576.0
        ));
    }
    out
}

/// comfy-table pads the last column and starts rows with a space; trim both.
fn trim_lines(s: &str) -> String {
    s.lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}
