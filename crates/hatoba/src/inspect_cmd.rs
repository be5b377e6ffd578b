//! `hatoba approve`, `hatoba logs` and `hatoba diagnose`: the commands an
//! operator reaches for when a deployment waits or a service misbehaves.
//!
//! `logs` asks the server for its instances' output (`--server` too), and
//! with no server running reads every log of the service under the state
//! directory; `diagnose` asks the server what runs and how it is routed,
//! with the history, the latest deployment's events and the last log lines
//! (`GET /api/v1/services/{name}/diagnosis`).

use crate::cli::{Global, Output};
use crate::exit::{CliError, Exit};
use crate::output;
use crate::server_cmd::call;
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

/// Where `hatoba logs` reads from.
enum LogSource {
    /// A server's API: the instances' output, wherever they run.
    Api(crate::client::Server),
    /// No server runs: every log file of the service under the state
    /// directory.
    Files(PathBuf),
}

impl LogSource {
    /// The server named by `--server`, or the state directory's when it
    /// answers; else the files.
    async fn find(global: &Global, service: &str) -> anyhow::Result<LogSource> {
        match crate::client::locate(global)? {
            Some(s) if s.explicit || s.answers().await => Ok(LogSource::Api(s)),
            _ => Ok(LogSource::Files(
                global.state_dir.join("logs").join(service),
            )),
        }
    }
}

/// The log files of a service under the state directory.
fn log_files(dir: &Path, service: &str) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|err| {
            CliError::new(
                Exit::NotFound,
                format!(
                    "no server answers and there are no logs of `{service}` in {}: {err}",
                    dir.display()
                ),
            )
            .hint("start `hatoba up` (with the same --state-dir), or name a running server with --server URL")
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
    Ok(files)
}

/// `GET /api/v1/services/{service}/logs` with a query.
async fn api_logs(
    server: &crate::client::Server,
    service: &str,
    env: Option<&str>,
    query: &[(&str, Option<String>)],
) -> anyhow::Result<hatoba_api::Logs> {
    let mut query = query.to_vec();
    query.push(("env", env.map(str::to_owned)));
    let query = query.as_slice();
    server
        .get(&format!(
            "/api/v1/services/{service}/logs{}",
            crate::client::query(query)
        ))
        .await
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
    // Checked before anything is asked: the environment goes into a URL.
    crate::server_cmd::env_query(env)?;
    match LogSource::find(global, service).await? {
        LogSource::Api(server) => logs_from_api(global, &server, service, env, follow, lines).await,
        LogSource::Files(dir) => logs_from_files(&dir, service, follow, lines).await,
    }
}

/// How often `logs -f` looks for new lines, and for new instances.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
const REFRESH_EVERY: Duration = Duration::from_secs(2);

async fn logs_from_api(
    global: &Global,
    server: &crate::client::Server,
    service: &str,
    env: Option<&str>,
    follow: bool,
    lines: usize,
) -> anyhow::Result<Exit> {
    let first = api_logs(server, service, env, &[("lines", Some(lines.to_string()))]).await?;
    if first.instances.is_empty() && !follow {
        output::stderr(&format!("`{service}` has no running instance\n"));
        return Ok(Exit::Ok);
    }
    let mut shown = 0usize;
    // Where each followed instance's log is read on from.
    let mut offsets: std::collections::BTreeMap<String, Option<u64>> =
        std::collections::BTreeMap::new();
    for i in &first.instances {
        for l in &i.lines {
            output::stdout(&format!("[{}] {l}\n", i.instance));
            shown += 1;
        }
        offsets.insert(i.instance.clone(), i.offset);
    }
    // `-n 0` (as `tail -n 0 -f`: only what comes next) asked for no line.
    if shown == 0 && lines > 0 {
        // Silence would look like a broken command: say what was read.
        let files: Vec<&str> = first
            .instances
            .iter()
            .filter_map(|i| i.log.as_deref())
            .collect();
        output::stderr(&format!(
            "no log lines yet from the {} instance(s) of `{service}`{}\n",
            first.instances.len(),
            if files.is_empty() {
                String::new()
            } else {
                format!(
                    ": their output goes to {} (on the server's machine)",
                    files.join(", ")
                )
            }
        ));
    }
    if !follow {
        return Ok(Exit::Ok);
    }
    follow_api(global, server.clone(), service, env, offsets).await
}

/// How `logs -f` follows one instance's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Following {
    /// Its log file, read on from this offset every FOLLOW_EVERY.
    File(u64),
    /// On the server's stream, in a task that says how it ended.
    Streamed,
    /// Its stream broke: opened again, after this cursor (the last line
    /// printed), once the server answers.
    Reopen(u64),
    /// Nothing more will come (stopped, or gone).
    Done,
}

/// How a followed stream ended: the instance stopped, or the connection
/// broke after the line at this cursor.
enum StreamEnd {
    Stopped,
    Broke(u64),
}

/// Whether the server answers, and since when it does not: `hatoba up`
/// restarting (an upgrade, a crash; it adopts the instances again) is not
/// the end of their output, so `logs -f` waits for it for up to
/// `RECONNECT_FOR`, as `deploy --wait` does.
#[derive(Default)]
struct Reach {
    lost: Option<tokio::time::Instant>,
}

impl Reach {
    /// The server answered: says so when it was lost.
    fn answered(&mut self) {
        if self.lost.take().is_some() {
            output::stderr("(the server is back: following on)\n");
        }
    }

    /// A request failed: `Ok` when it is the server not answering and
    /// worth waiting for (said the first time), else the error.
    fn failed(&mut self, e: anyhow::Error) -> anyhow::Result<()> {
        if crate::exit::exit_code(&e) != Exit::Unreachable {
            return Err(e);
        }
        let since = *self.lost.get_or_insert_with(|| {
            output::stderr(&format!(
                "(lost the server: {e:#}; waiting up to {}s for it to come back, Ctrl-C stops waiting)\n",
                crate::server_cmd::RECONNECT_FOR.as_secs()
            ));
            tokio::time::Instant::now()
        });
        if since.elapsed() > crate::server_cmd::RECONNECT_FOR {
            return Err(e);
        }
        Ok(())
    }
}

/// `logs -f` through the API from `offsets` (each instance's, after what
/// was printed): a container's output comes on the server's stream as it
/// is written, a log file's is read on every FOLLOW_EVERY; both go on
/// from where they were when the server comes back after going away
/// (the state directory's server found again: a new `hatoba up` listens
/// on a new port).
async fn follow_api(
    global: &Global,
    mut server: crate::client::Server,
    service: &str,
    env: Option<&str>,
    offsets: std::collections::BTreeMap<String, Option<u64>>,
) -> anyhow::Result<Exit> {
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let mut reach = Reach::default();
    let mut follows: std::collections::BTreeMap<String, Following> =
        std::collections::BTreeMap::new();
    for (id, offset) in offsets {
        let how = match offset {
            Some(from) => {
                match stream_instance(&server, service, env, &id, from, &ended_tx).await {
                    Ok(true) => Following::Streamed,
                    Ok(false) => Following::File(from),
                    Err(e) if crate::exit::exit_code(&e) == Exit::NotFound => Following::Done,
                    Err(e) => {
                        reach.failed(e)?;
                        Following::Reopen(from)
                    }
                }
            }
            None => Following::Done,
        };
        follows.insert(id, how);
    }
    let mut refresh = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
            // Pacing of a poll that runs until Ctrl-C: new lines of a log
            // file have no event.
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        if reach.lost.is_some()
            && !server.explicit
            && let Ok(Some(found)) = crate::client::locate(global)
        {
            server = found;
        }
        let server = &server;
        while let Ok((id, end)) = ended.try_recv() {
            let how = match end {
                StreamEnd::Stopped => Following::Done,
                StreamEnd::Broke(after) => Following::Reopen(after),
            };
            follows.insert(id, how);
        }
        if refresh.elapsed() > REFRESH_EVERY {
            refresh = tokio::time::Instant::now();
            match api_logs(server, service, env, &[("lines", Some("0".to_owned()))]).await {
                Ok(now) => {
                    reach.answered();
                    for i in now.instances {
                        if let std::collections::btree_map::Entry::Vacant(e) =
                            follows.entry(i.instance)
                        {
                            output::stdout(&format!("[{}] --- new instance ---\n", e.key()));
                            // From its first line.
                            e.insert(i.offset.map_or(Following::Done, |_| Following::Reopen(0)));
                        }
                    }
                }
                Err(e) => reach.failed(e)?,
            }
        }
        let due: Vec<(String, Following)> = follows
            .iter()
            .filter(|(_, how)| matches!(how, Following::File(_) | Following::Reopen(_)))
            .map(|(id, how)| (id.clone(), *how))
            .collect();
        for (id, how) in due {
            let next = match how {
                Following::Reopen(from) => {
                    match stream_instance(server, service, env, &id, from, &ended_tx).await {
                        Ok(streamed) => {
                            reach.answered();
                            if streamed {
                                Following::Streamed
                            } else {
                                Following::File(from)
                            }
                        }
                        // Gone (stopped and removed): nothing more to follow.
                        Err(e) if crate::exit::exit_code(&e) == Exit::NotFound => {
                            reach.answered();
                            Following::Done
                        }
                        Err(e) => {
                            reach.failed(e)?;
                            how
                        }
                    }
                }
                Following::File(from) => match read_on(server, service, env, &id, from).await {
                    Ok(next) => {
                        reach.answered();
                        next.map_or(Following::Done, Following::File)
                    }
                    Err(e) if crate::exit::exit_code(&e) == Exit::NotFound => {
                        reach.answered();
                        Following::Done
                    }
                    Err(e) => {
                        reach.failed(e)?;
                        how
                    }
                },
                Following::Streamed | Following::Done => how,
            };
            follows.insert(id, next);
        }
    }
}

/// Prints the lines of one instance's log written after `from`, and
/// answers where to read on from (`None`: nothing more will come).
async fn read_on(
    server: &crate::client::Server,
    service: &str,
    env: Option<&str>,
    id: &str,
    from: u64,
) -> anyhow::Result<Option<u64>> {
    let l = api_logs(
        server,
        service,
        env,
        &[
            ("lines", Some("0".to_owned())),
            ("instance", Some(id.to_owned())),
            ("after", Some(from.to_string())),
        ],
    )
    .await?;
    let mut next = None;
    for i in l.instances.iter().filter(|i| i.instance == id) {
        for line in &i.lines {
            output::stdout(&format!("[{}] {line}\n", i.instance));
        }
        next = i.offset;
    }
    Ok(next)
}

/// Follows one instance's output on the server's stream (`follow=true`)
/// after `from`, printing each line as it comes, in a task that ends with
/// the stream and says how on `ended`: the instance stopped, or the
/// connection broke after the last line printed (to open it again after
/// that line). False when the server does not stream it (a log file's
/// output, or an older server): the caller polls. An error when the
/// server does not answer, or the instance is gone.
async fn stream_instance(
    server: &crate::client::Server,
    service: &str,
    env: Option<&str>,
    instance: &str,
    from: u64,
    ended: &tokio::sync::mpsc::UnboundedSender<(String, StreamEnd)>,
) -> anyhow::Result<bool> {
    let q = [
        ("lines", Some("0".to_owned())),
        ("instance", Some(instance.to_owned())),
        ("after", Some(from.to_string())),
        ("follow", Some("true".to_owned())),
        ("env", env.map(str::to_owned)),
    ];
    let path = format!(
        "/api/v1/services/{service}/logs{}",
        crate::client::query(&q)
    );
    let accept = [("accept", hatoba_api::sse::CONTENT_TYPE.to_owned())];
    let resp = match server.open(&path, &accept).await {
        Ok(resp) => resp,
        Err(e)
            if matches!(
                crate::exit::exit_code(&e),
                Exit::Unreachable | Exit::NotFound
            ) =>
        {
            return Err(e);
        }
        Err(_) => return Ok(false),
    };
    let instance = instance.to_owned();
    let ended = ended.clone();
    tokio::spawn(async move {
        use http_body_util::BodyExt as _;
        let mut body = resp.into_body();
        let mut parser = hatoba_api::sse::Parser::new();
        // The cursor of the last line printed: where to open it again.
        let mut after = from;
        let end = loop {
            let data = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
                // The server ends the stream once the instance stopped.
                None => {
                    output::stdout(&format!("[{instance}] --- stopped ---\n"));
                    break StreamEnd::Stopped;
                }
                Some(Err(e)) => {
                    tracing::debug!(%instance, "the output's stream broke: {e}");
                    break StreamEnd::Broke(after);
                }
            };
            let Ok(messages) = parser.push(&data) else {
                output::stderr(&format!(
                    "the output of {instance} is no longer followed: the server's stream did not parse\n"
                ));
                break StreamEnd::Stopped;
            };
            for m in messages.iter().filter(|m| m.event == "line") {
                if let Ok(l) = serde_json::from_str::<hatoba_api::LogLine>(&m.data) {
                    output::stdout(&format!("[{instance}] {}\n", l.line));
                    after = l.offset.unwrap_or(after);
                }
            }
        };
        let _ = ended.send((instance, end));
    });
    Ok(true)
}

async fn logs_from_files(
    dir: &Path,
    service: &str,
    follow: bool,
    lines: usize,
) -> anyhow::Result<Exit> {
    let mut files = log_files(dir, service)?;
    output::stderr("no server answers: showing every log of the service\n");
    if files.is_empty() && !follow {
        output::stderr(&format!("`{service}` has no running instance\n"));
        return Ok(Exit::Ok);
    }
    let mut offsets: std::collections::HashMap<PathBuf, u64> = std::collections::HashMap::new();
    let mut shown = 0usize;
    for (id, path) in &files {
        let (tail, offset) = hatoba_server::ops::tail_file(path, lines);
        for l in tail {
            output::stdout(&format!("[{id}] {l}\n"));
            shown += 1;
        }
        offsets.insert(path.clone(), offset);
    }
    // `-n 0` (as `tail -n 0 -f`: only what comes next) asked for no line.
    if shown == 0 && lines > 0 {
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
            // Pacing of a poll that runs until Ctrl-C: new lines have no event.
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        if refresh.elapsed() > REFRESH_EVERY {
            refresh = tokio::time::Instant::now();
            if let Ok(now) = log_files(dir, service) {
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
            let from = offsets.get(path).copied().unwrap_or(0);
            let (lines, next) = hatoba_server::ops::read_after(path, from);
            for l in lines {
                output::stdout(&format!("[{id}] {l}\n"));
            }
            offsets.insert(path.clone(), next);
        }
    }
}

pub(crate) async fn diagnose(
    global: &Global,
    service: &str,
    env: Option<&str>,
) -> anyhow::Result<Exit> {
    let service = service_name(service)?;
    let query = crate::server_cmd::env_query(env)?;
    let d: hatoba_api::Diagnosis = crate::client::require(global)?
        .get(&format!("/api/v1/services/{service}/diagnosis{query}"))
        .await?;
    if global.output == Output::Json {
        output::json(&d)?;
        return Ok(Exit::Ok);
    }
    let detail = &d.service;
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
    if let Some(why) = &d.serving_without_evidence {
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
        if let Some(d) = &i.draining {
            out.push_str(&format!("      {d}\n"));
        }
        if let Some(p) = &i.last_probe {
            out.push_str(&format!("      last probe: {p}\n"));
        }
        for l in d
            .logs
            .iter()
            .filter(|l| l.instance == i.id)
            .flat_map(|l| &l.lines)
        {
            out.push_str(&format!("      | {l}\n"));
        }
    }
    if let Some(latest) = d.history.first() {
        out.push_str(&format!(
            "\nlatest deployment {} ({} {}, {}):\n",
            latest.id,
            latest.version,
            output::strategy(&latest.strategy),
            latest.status
        ));
        for e in d.events.iter().skip(d.events.len().saturating_sub(12)) {
            out.push_str(&format!("  {} {}\n", e.at, e.message));
        }
    }
    if !d.removed.is_empty() {
        out.push_str("\nremoved:\n");
        for e in &d.removed {
            out.push_str(&format!("  {} {}\n", e.at, e.message));
        }
    }
    if !d.history.is_empty() {
        out.push_str("\nhistory:\n");
        out.push_str(&crate::history::history_table(&d.history));
    }
    output::stdout(&out);
    Ok(Exit::Ok)
}
