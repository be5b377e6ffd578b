//! `hatoba approve`, `hatoba logs` and `hatoba diagnose`: the commands an
//! operator reaches for when a deployment waits or a service misbehaves.
//!
//! `logs` reads the instances' log files directly (it works with the server
//! down: then it reads every log of the service under the state directory);
//! `diagnose` asks the server what runs and how it is routed, and adds the
//! history, the latest deployment's events and the last log lines.

use crate::cli::{Global, Output};
use crate::exit::{CliError, Exit};
use crate::output;
use crate::server_cmd::call;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A service name as typed, checked before it goes into a path or a URL.
fn service_name(s: &str) -> Result<hatoba_core::ServiceName, CliError> {
    s.parse()
        .map_err(|e: hatoba_core::NameError| CliError::new(Exit::BadInput, e.to_string()))
}

/// Who acts: `--as`, else $USER, else $LOGNAME, else the account's name.
pub(crate) fn actor(given: Option<String>) -> String {
    let var = |name| std::env::var(name).ok().filter(|u: &String| !u.is_empty());
    given
        .filter(|a| !a.trim().is_empty())
        .or_else(|| var("USER"))
        .or_else(|| var("LOGNAME"))
        .unwrap_or_else(|| {
            // Containers and cron often set neither: the account's name.
            let uid = nix::unistd::getuid();
            match nix::unistd::User::from_uid(uid) {
                Ok(Some(user)) => user.name,
                _ => format!("uid {uid}"),
            }
        })
}

pub(crate) async fn approve(
    global: &Global,
    deployment: &str,
    who: Option<String>,
) -> anyhow::Result<Exit> {
    let deployment = deployment
        .parse::<hatoba_core::DeploymentId>()
        .map_err(|e| CliError::new(Exit::BadInput, e.to_string()))?;
    let by = actor(who);
    let body = serde_json::to_vec(&hatoba_api::ApproveRequest { by: by.clone() })?;
    let bytes = call(
        global,
        hyper::Method::POST,
        &format!("/api/v1/deployments/{deployment}/approve"),
        Some(body),
    )
    .await?;
    match global.output {
        Output::Json => output::stdout(&format!("{}\n", String::from_utf8_lossy(&bytes))),
        Output::Text => output::stdout(&format!(
            "deployment {deployment} approved by {by}: it starts now\n"
        )),
    }
    Ok(Exit::Ok)
}

async fn service_detail(
    global: &Global,
    service: &str,
    env: Option<&str>,
) -> anyhow::Result<hatoba_api::ServiceDetail> {
    let query = crate::server_cmd::env_query(env)?;
    let bytes = call(
        global,
        hyper::Method::GET,
        &format!("/api/v1/services/{service}{query}"),
        None,
    )
    .await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The log files to show: the live instances' (from the server), or every
/// log of the service when no server answers.
async fn log_files(
    global: &Global,
    service: &str,
    env: Option<&str>,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    match service_detail(global, service, env).await {
        Ok(d) => Ok(d
            .instances
            .iter()
            .filter(|i| i.state == "running")
            .filter_map(|i| i.log.as_ref().map(|l| (i.id.clone(), PathBuf::from(l))))
            .collect()),
        Err(e) => {
            let exit = e.downcast_ref::<CliError>().map(|c| c.exit);
            if exit != Some(Exit::Unreachable) {
                return Err(e);
            }
            let dir = global.state_dir.join("logs").join(service);
            let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
                .map_err(|err| {
                    CliError::new(
                        Exit::NotFound,
                        format!(
                            "no server answers and there are no logs of `{service}` in {}: {err}",
                            dir.display()
                        ),
                    )
                })?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .map(|p| {
                    let id = p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (id, p)
                })
                .collect();
            files.sort();
            output::stderr("no server answers: showing every log of the service\n");
            Ok(files)
        }
    }
}

/// The last `n` lines of a file (reads at most its last 1 MiB).
fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(1 << 20);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(1 << 20).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

pub(crate) async fn logs(
    global: &Global,
    service: &str,
    follow: bool,
    lines: usize,
    env: Option<&str>,
) -> anyhow::Result<Exit> {
    let service = service_name(service)?;
    let service = service.as_str();
    let mut files = log_files(global, service, env).await?;
    if files.is_empty() && !follow {
        output::stderr(&format!("`{service}` has no running instance\n"));
        return Ok(Exit::Ok);
    }
    let mut offsets: std::collections::HashMap<PathBuf, u64> = std::collections::HashMap::new();
    let mut shown = 0usize;
    for (id, path) in &files {
        for l in tail(path, lines) {
            output::stdout(&format!("[{id}] {l}\n"));
            shown += 1;
        }
        offsets.insert(
            path.clone(),
            std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        );
    }
    if shown == 0 {
        // Silence would look like a broken command: say what was read.
        output::stderr(&format!(
            "no log lines yet from the {} instance(s) of `{service}`: their output goes to {}\n",
            files.len(),
            files
                .iter()
                .map(|(_, p)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !follow {
        return Ok(Exit::Ok);
    }
    let mut refresh = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if refresh.elapsed() > Duration::from_secs(2) {
            refresh = tokio::time::Instant::now();
            if let Ok(now) = log_files(global, service, env).await {
                for (id, path) in &now {
                    if !offsets.contains_key(path) {
                        output::stdout(&format!("[{id}] --- new instance ---\n"));
                        offsets.insert(path.clone(), 0);
                    }
                }
                files = now;
            }
        }
        for (id, path) in &files {
            let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
                continue;
            };
            let from = offsets.get(path).copied().unwrap_or(0);
            // Rotated (copy-then-truncate): start again from the top.
            let from = if len < from { 0 } else { from };
            if len == from {
                continue;
            }
            let Ok(mut f) = std::fs::File::open(path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(from)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            let _ = f.take(len - from).read_to_end(&mut buf);
            // Only whole lines; a partial last line waits for its end.
            let upto = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            for l in String::from_utf8_lossy(&buf[..upto]).lines() {
                output::stdout(&format!("[{id}] {l}\n"));
            }
            offsets.insert(path.clone(), from + upto as u64);
        }
    }
}

pub(crate) async fn diagnose(
    global: &Global,
    service: &str,
    env: Option<&str>,
) -> anyhow::Result<Exit> {
    let service = service_name(service)?;
    let service = service.as_str();
    let detail = service_detail(global, service, env).await?;
    let store = crate::state::open_for_reading(global).await?;
    let history = {
        use hatoba_store::Store as _;
        store
            .history(&hatoba_store::HistoryFilter {
                service: service.parse().ok(),
                environment: detail.environment.parse().ok(),
                limit: 5,
            })
            .await?
    };
    let latest = history.first().map(|d| d.id.clone());
    let events = match &latest {
        Some(id) => {
            use hatoba_store::Store as _;
            store.events(id).await.unwrap_or_default()
        }
        None => Vec::new(),
    };
    // The version serving was promoted past missing evidence: say so first.
    let without_evidence = match history
        .iter()
        .find(|d| d.status == hatoba_core::DeploymentStatus::Succeeded)
    {
        Some(current) => {
            let succeeded: Vec<&hatoba_store::Deployment> = history
                .iter()
                .filter(|d| d.status == hatoba_core::DeploymentStatus::Succeeded)
                .collect();
            hatoba_server::without_evidence(&store, &succeeded, &current.version)
                .await
                .ok()
                .flatten()
                .map(|why| format!("{}: {why}", current.version))
        }
        None => None,
    };
    store.close().await;
    let deployments: Vec<hatoba_api::Deployment> =
        history.iter().map(hatoba_server::api::deployment).collect();
    if global.output == Output::Json {
        output::json(&serde_json::json!({
            "api_version": hatoba_api::API_VERSION,
            "service": detail,
            "history": deployments,
            "events": events.iter().map(hatoba_server::api::event).collect::<Vec<_>>(),
        }))?;
        return Ok(Exit::Ok);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "service `{}` in `{}`: {}{}\n",
        detail.service,
        detail.environment,
        detail
            .serving_version
            .as_deref()
            .map_or_else(|| "nothing serves".to_owned(), |v| format!("{v} serves")),
        detail
            .live_deployment
            .as_deref()
            .map(|d| format!(", deployment {d} in progress"))
            .unwrap_or_default()
    ));
    if let Some(p) = &detail.problem {
        out.push_str(&format!("problem: {p}\n"));
    }
    if let Some(why) = &without_evidence {
        out.push_str(&format!(
            "WARNING: {why}; a rollback without --to skips this version\n"
        ));
    }
    if detail.crash_loop || detail.recent_restarts > 0 {
        out.push_str(&format!(
            "restarts: {} in the last 5m{}{}\n",
            detail.recent_restarts,
            if detail.crash_loop {
                " — CRASH LOOP"
            } else {
                ""
            },
            detail
                .next_restart
                .as_deref()
                .map(|t| format!(", next restart not before {t}"))
                .unwrap_or_default()
        ));
    }
    out.push_str("\nroute:\n");
    if detail.route.is_empty() {
        out.push_str("  (no table: the proxy answers 503)\n");
    }
    for g in &detail.route {
        out.push_str(&format!(
            "  {:<7} {:<12} {:>3}%  {}\n",
            g.role,
            g.version,
            g.weight,
            if g.backends.is_empty() {
                "no ready instance".to_owned()
            } else {
                g.backends.join(", ")
            }
        ));
    }
    out.push_str("\ninstances:\n");
    if detail.instances.is_empty() {
        out.push_str("  (none)\n");
    }
    for i in &detail.instances {
        out.push_str(&format!(
            "  {} {} on {} pid {} — {}{}{}{}\n",
            i.id,
            i.version,
            i.addr,
            i.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            i.state,
            if i.in_route {
                ", in the route"
            } else {
                ", out of the route"
            },
            i.ready
                .map(|r| if r { ", ready" } else { ", NOT ready" })
                .unwrap_or_default(),
            match (i.rss_bytes, i.cpu_seconds) {
                (Some(m), Some(c)) => format!(", {:.1} MiB, {c:.1}s CPU", m as f64 / 1048576.0),
                _ => String::new(),
            }
        ));
        if let Some(p) = &i.last_probe {
            out.push_str(&format!("      last probe: {p}\n"));
        }
        if let Some(log) = &i.log {
            for l in tail(Path::new(log), 5) {
                out.push_str(&format!("      | {l}\n"));
            }
        }
    }
    if let Some(d) = history.first() {
        out.push_str(&format!(
            "\nlatest deployment {} ({} {}, {}):\n",
            d.id,
            d.version,
            output::strategy(&d.strategy),
            d.status
        ));
        for e in events
            .iter()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            out.push_str(&format!("  {} {}\n", e.at.to_rfc3339(), e.message));
        }
    }
    if !deployments.is_empty() {
        out.push_str("\nhistory:\n");
        out.push_str(&crate::history::history_table(&deployments));
    }
    output::stdout(&out);
    Ok(Exit::Ok)
}
