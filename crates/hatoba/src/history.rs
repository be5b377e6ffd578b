//! `hatoba history`, `hatoba status` and `hatoba analysis`: reading the
//! deployment history.
//!
//! Each is an operation of `hatoba_server::ops`, asked of the server when
//! one runs (`--server`, or the state directory's `server.json` that
//! answers) and run here over the store when none does (`--store URL`, or
//! the state directory's SQLite file), so they work offline and answer the
//! same either way; the answer is printed as a table or JSON.

use crate::cli::{Global, HistoryArgs, Output, StatusArgs};
use crate::client;
use crate::exit::{CliError, Exit, op_error};
use crate::output;
use comfy_table::{Table, presets};
use hatoba_server::ops::{HistoryQuery, StatusQuery};
use hatoba_store::SqlStore;

/// Where the reads come from.
pub(crate) enum Source {
    /// A server's API.
    Api(client::Server),
    /// The store, read by this process.
    Store(SqlStore),
}

impl Source {
    /// The server named by `--server`; else the store named by `--store`;
    /// else the state directory's server when it answers; else the state
    /// directory's store.
    pub(crate) async fn find(global: &Global) -> anyhow::Result<Source> {
        let found = client::locate(global)?;
        if let Some(server) = found.as_ref().filter(|s| s.explicit) {
            return Ok(Source::Api(server.clone()));
        }
        if global.store.is_none()
            && let Some(server) = found
            && server.answers().await
        {
            return Ok(Source::Api(server));
        }
        Ok(Source::Store(crate::state::open_for_reading(global).await?))
    }

    pub(crate) async fn history(&self, q: &HistoryQuery) -> anyhow::Result<hatoba_api::History> {
        match self {
            Source::Api(s) => {
                s.get(&format!(
                    "/api/v1/deployments{}",
                    client::query(&[
                        ("service", q.service.clone()),
                        ("environment", q.environment.clone()),
                        ("limit", Some(q.limit.to_string())),
                    ])
                ))
                .await
            }
            Source::Store(store) => Ok(hatoba_server::ops::history(store, q)
                .await
                .map_err(op_error)?),
        }
    }

    async fn status(&self, q: &StatusQuery) -> anyhow::Result<hatoba_api::Status> {
        match self {
            Source::Api(s) => {
                s.get(&format!(
                    "/api/v1/status{}",
                    client::query(&[
                        ("service", q.service.clone()),
                        ("environment", q.environment.clone()),
                    ])
                ))
                .await
            }
            Source::Store(store) => {
                Ok(
                    hatoba_server::ops::status(store, q, hatoba_server::clock_now())
                        .await
                        .map_err(op_error)?,
                )
            }
        }
    }

    async fn analysis(&self, id: &str) -> anyhow::Result<hatoba_api::AnalysisReport> {
        match self {
            Source::Api(s) => {
                s.get(&format!(
                    "/api/v1/deployments/{}/analysis",
                    client::segment(id)
                ))
                .await
            }
            Source::Store(store) => Ok(hatoba_server::ops::analysis(store, id)
                .await
                .map_err(op_error)?),
        }
    }

    /// Lets go of the store, if one was opened.
    pub(crate) async fn close(self) {
        if let Source::Store(store) = self {
            store.close().await;
        }
    }
}

pub(crate) async fn history(global: &Global, args: &HistoryArgs) -> anyhow::Result<Exit> {
    let source = Source::find(global).await?;
    let h = source
        .history(&HistoryQuery {
            service: args.service.clone(),
            environment: args.env.clone(),
            limit: args.limit,
        })
        .await;
    source.close().await;
    let h = h?;
    match global.output {
        Output::Json => output::json(&h)?,
        Output::Text if h.deployments.is_empty() => output::stderr("no deployments match\n"),
        Output::Text => output::stdout(&history_table(&h.deployments)),
    }
    Ok(Exit::Ok)
}

pub(crate) async fn status(global: &Global, args: &StatusArgs) -> anyhow::Result<Exit> {
    let source = Source::find(global).await?;
    let status = source
        .status(&StatusQuery {
            service: args.service.clone(),
            environment: args.env.clone(),
        })
        .await;
    source.close().await;
    let status = status?;
    match global.output {
        Output::Json => output::json(&status)?,
        Output::Text if status.services.is_empty() => {
            // With --env, say so: "nothing has been deployed yet" read as if
            // the whole history were empty when only the filter matched
            // nothing (a misspelt environment, most often).
            match &args.env {
                Some(env) => output::stderr(&format!(
                    "nothing has been deployed to environment `{}` yet \
                     (`hatoba status` without --env shows every environment)\n",
                    hatoba_core::shown(env)
                )),
                None => output::stderr("nothing has been deployed yet\n"),
            }
        }
        Output::Text => output::stdout(&status_table(&status.services)),
    }
    Ok(Exit::Ok)
}

/// `hatoba analysis DEPLOYMENT|SERVICE`: every measurement of a deployment,
/// or of a service's newest one.
pub(crate) async fn analysis(global: &Global, target: &str) -> anyhow::Result<Exit> {
    let source = Source::find(global).await?;
    let report = analysis_of(&source, target).await;
    source.close().await;
    let report = report?;
    let deployment = &report.deployment;
    let measurements = &report.measurements;
    match global.output {
        Output::Json => output::json(&report)?,
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
                let start = hatoba_core::Millis::parse_rfc3339(&deployment.started_at);
                let mut t = table(&["AT", "RUN", "METRIC", "VALUE", "VERDICT", "DETAIL"]);
                for m in measurements {
                    let at = match (start, hatoba_core::Millis::parse_rfc3339(&m.at)) {
                        (Some(s), Some(at)) => {
                            format!("+{:.1}s", at.0.saturating_sub(s.0) as f64 / 1000.0)
                        }
                        _ => m.at.clone(),
                    };
                    t.add_row(vec![
                        at,
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

/// The analysis of a deployment; a name that is no deployment but a
/// service's means that service's newest deployment (the one in progress,
/// if any), as `hatoba analysis web` suggests.
async fn analysis_of(source: &Source, target: &str) -> anyhow::Result<hatoba_api::AnalysisReport> {
    let not_found = |e: &anyhow::Error| crate::exit::exit_code(e) == Exit::NotFound;
    match source.analysis(target).await {
        Err(e) if not_found(&e) && target.parse::<hatoba_core::ServiceName>().is_ok() => {
            let newest = source
                .history(&HistoryQuery {
                    service: Some(target.to_owned()),
                    environment: None,
                    limit: 1,
                })
                .await?;
            match newest.deployments.first() {
                Some(d) => source.analysis(&d.id).await,
                None => Err(CliError::new(
                    Exit::NotFound,
                    format!("no deployment {target}, and no service `{target}` with a deployment"),
                )
                .hint("`hatoba history` lists deployments")
                .into()),
            }
        }
        r => r,
    }
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
            version_cell(&d.version, d.image_id.as_deref()),
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
            live.push_str(&format!("\n  {}", measurement_words(m)));
        }
        let mut version = s.current_version.clone().unwrap_or_else(|| "-".to_owned());
        if let Some(image) = s
            .current
            .as_ref()
            .filter(|d| Some(&d.version) == s.current_version.as_ref())
            .and_then(|d| d.image_id.as_deref())
        {
            version = version_cell(&version, Some(image));
        }
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

/// A version with the image it ran, as Docker shortens ids: `v1
/// 3f2a1b9c0d12`; a process's version alone.
fn version_cell(version: &str, image_id: Option<&str>) -> String {
    match image_id {
        Some(id) => {
            let hex = id.strip_prefix("sha256:").unwrap_or(id);
            format!("{version} {}", hex.get(..12).unwrap_or(hex))
        }
        None => version.to_owned(),
    }
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

/// `2/2 in route, 24.3 MiB, 0.4s CPU`, then a line per draining instance
/// (`web-v1-3f9a draining: 3 connections left, up to 6s left, ...`), or `-`
/// when no server answered.
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
    for i in instances {
        if let Some(d) = &i.draining {
            out.push_str(&format!("\n  {} {d}", i.id));
        }
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

/// A measurement in `status`: its value, or without one why not (the
/// provider's error: "error" alone sends the reader to `hatoba analysis`).
fn measurement_words(m: &hatoba_api::MeasurementInfo) -> String {
    let why = match (m.value, &m.detail) {
        (Some(v), _) => format!(" ({v:.4})"),
        (None, Some(d)) if !d.is_empty() => {
            const MOST: usize = 160;
            let d = match d.char_indices().nth(MOST) {
                Some((at, _)) => format!("{}…", &d[..at]),
                None => d.clone(),
            };
            format!(" ({d})")
        }
        (None, _) => String::new(),
    };
    format!("{} {}: {}{why}", m.run, m.metric, m.verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(value: Option<f64>, detail: Option<&str>) -> hatoba_api::MeasurementInfo {
        hatoba_api::MeasurementInfo {
            seq: 1,
            at: "2026-01-01T00:00:00Z".to_owned(),
            run: "background".to_owned(),
            metric: "success-rate".to_owned(),
            value,
            verdict: if value.is_some() { "passed" } else { "error" }.to_owned(),
            detail: detail.map(str::to_owned),
        }
    }

    #[test]
    fn a_measurement_without_a_value_says_why() {
        assert_eq!(
            measurement_words(&m(Some(0.99), Some("30 requests"))),
            "background success-rate: passed (0.9900)"
        );
        assert_eq!(
            measurement_words(&m(
                None,
                Some("prometheus: cannot connect to 127.0.0.1:9090")
            )),
            "background success-rate: error (prometheus: cannot connect to 127.0.0.1:9090)"
        );
        assert_eq!(
            measurement_words(&m(None, None)),
            "background success-rate: error"
        );
        let long = "é".repeat(400);
        let words = measurement_words(&m(None, Some(&long)));
        assert!(
            words.ends_with("…)") && words.chars().count() < 200,
            "{words}"
        );
    }
}
