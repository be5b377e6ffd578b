//! `hatoba up`, and the commands that talk to it: `deploy`, `promote`,
//! `abort`. The server writes `server.json` (its API address) and `token`
//! (mode 0600) into the state directory; the commands find it through the
//! same `--state-dir`, or talk to one named by `--server` (`client`).
//!
//! Over 800 lines, not yet split: `up` (starting the server, ~300 lines)
//! and the commands that follow a deployment (`deploy --wait`, `watch`,
//! their stream and polling paths, ~400) grew here together. The next
//! split is `up_cmd.rs` for `up` and `follow.rs` for following, leaving
//! this file the one-shot commands.

use crate::cli::{DeployArgs, Global, Output, UpArgs, WaitUntil};
use crate::exit::{CliError, Exit};
use crate::output;
use anyhow::Context as _;
use bytes::Bytes;
use hatoba_core::EnvName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn info_path(state: &Path) -> PathBuf {
    state.join("server.json")
}

/// Rewrites `server.json`'s `admin` after the data plane was started again
/// (its metrics port may have changed), so what it advertises stays true.
/// Only this controller's file: one another process wrote is left alone.
pub(crate) fn advertise_admin(state: &Path, admin: &str) -> anyhow::Result<()> {
    let path = info_path(state);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        // Not written yet: it will be, with the data plane's current address.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut info: hatoba_api::ServerInfo = serde_json::from_str(&text)?;
    if info.pid != std::process::id() || info.admin == admin {
        return Ok(());
    }
    info.admin = admin.to_owned();
    crate::state_dir::write_private(&path, serde_json::to_string_pretty(&info)?.as_bytes())
}

/// The services of the environment that run in Docker, sorted.
pub(crate) fn docker_services(spec: &hatoba_spec::Spec, env: &EnvName) -> Vec<String> {
    let services = spec
        .environments
        .get(env)
        .map_or(&spec.services, |e| &e.services);
    services
        .iter()
        .filter(|(_, s)| matches!(s.runtime, hatoba_spec::Runtime::Docker(_)))
        .map(|(n, _)| n.to_string())
        .collect()
}

fn token_path(state: &Path) -> PathBuf {
    state.join("token")
}

/// The environments `hatoba up --env` names: each once, `all` for every
/// one the spec declares (`development` when it declares none).
fn environments(spec: &hatoba_spec::Spec, asked: &[String]) -> Result<Vec<EnvName>, CliError> {
    let parse = |a: &str| {
        a.parse::<EnvName>()
            .map_err(|e| CliError::new(Exit::BadInput, e.to_string()))
    };
    let mut envs: Vec<EnvName> = Vec::new();
    for a in asked {
        if a == "all" {
            envs.extend(spec.environments.keys().cloned());
            if spec.environments.is_empty() {
                envs.push(parse("development")?);
            }
            continue;
        }
        envs.push(parse(a)?);
    }
    envs.sort();
    envs.dedup();
    if envs.is_empty() {
        envs.push(parse("development")?);
    }
    Ok(envs)
}

pub(crate) async fn up(global: &Global, args: &UpArgs) -> anyhow::Result<Exit> {
    init_logs(args.log_format);
    let bytes = crate::spec_file::read(&args.file.file)?;
    let parsed = hatoba_spec::parse_bytes(&bytes);
    let Some(spec) = parsed.spec else {
        let shown = args.file.file.display().to_string();
        output::stderr(&hatoba_spec::render(
            &shown,
            &String::from_utf8_lossy(&bytes),
            &parsed.diagnostics,
        ));
        return Err(CliError::new(Exit::BadInput, format!("`{shown}` is not a valid spec")).into());
    };
    // Warnings do not stop the server, but they are said before it starts.
    if !parsed.diagnostics.is_empty() {
        say(
            args.log_format,
            &hatoba_spec::render(
                &args.file.file.display().to_string(),
                &String::from_utf8_lossy(&bytes),
                &parsed.diagnostics,
            ),
        );
    }
    let envs = environments(&spec, &args.env)?;
    let env_words = envs
        .iter()
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let state = &global.state_dir;
    crate::state_dir::prepare(state)?;
    // One controller per state directory, taken before anything else is
    // touched (the store's migrations included), held until `up` returns.
    let _lock = crate::state_dir::ControllerLock::acquire(state)?;
    crate::state_dir::raise_fd_limit();
    let store: Arc<dyn hatoba_store::Store> =
        Arc::new(hatoba_store::SqlStore::open_sqlite(state.join("hatoba.db")).await?);
    // Secrets are sealed with a key kept outside the database.
    let secret_key = hatoba_server::SecretKey::load(state)
        .map_err(|e| CliError::new(Exit::Failed, chain(&e)).hint(e.hint()))?;
    let token = hatoba_server::new_token();
    crate::state_dir::write_private(&token_path(state), token.as_bytes())?;
    let recorder = Arc::new(hatoba_metrics::Recorder::new());
    let base_dir = args
        .file
        .file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = std::path::absolute(&base_dir)?;
    use sha2::Digest as _;
    // The proxy runs as its own process unless asked otherwise, so users'
    // traffic outlives this one (see `dataplane_cmd`).
    let runtime = Arc::new(
        hatoba_runtime_process::ProcessRuntime::new(state.join("logs"))
            .with_scope(std::path::absolute(state)?.display().to_string())
            .withholding_env(&[hatoba_server::secrets::KEY_ENV])
            .with_log_versions(usize::try_from(spec.retention.log_versions).unwrap_or(usize::MAX)),
    );
    // Services with `docker:` run as containers: the engine is connected
    // only when the spec has one, and its absence stops `up` at once.
    let runtimes =
        hatoba_server::Runtimes::new(Arc::clone(&runtime) as Arc<dyn hatoba_runtime::Runtime>);
    let docker_services: Vec<String> = envs
        .iter()
        .flat_map(|e| docker_services(&spec, e))
        .collect();
    let runtimes = match docker_services.first() {
        None => runtimes,
        Some(first) => {
            // One engine connection for every environment run here; the
            // label names them all (`staging,production`).
            let env_label = envs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let docker = crate::build_cmd::connect(state, first).await?.with_labels(
                std::collections::BTreeMap::from([
                    ("app".to_owned(), spec.app.clone()),
                    ("environment".to_owned(), env_label),
                ]),
            );
            runtimes.with_docker(Arc::new(docker))
        }
    };
    // Instance logs rotate by size (copy, then truncate: the instances keep
    // writing to the same file); the runtime only does it when asked.
    let rotation = {
        let runtime = Arc::clone(&runtime);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let rt = Arc::clone(&runtime);
                if let Ok(r) = tokio::task::spawn_blocking(move || rt.rotate_logs()).await {
                    for f in r.failed {
                        tracing::warn!("log rotation: {f}");
                    }
                }
            }
        })
    };
    let mut supervisor = None;
    let mut started_data_plane = None;
    // Serves the kept listening sockets to a restarted data plane while
    // this process runs.
    let mut _keeper_server = None;
    let (data_plane, remote_admin): (Arc<dyn hatoba_server::DataPlane>, Option<String>) =
        if args.in_process_proxy {
            let local = hatoba_server::LocalDataPlane::new(
                Arc::clone(&recorder),
                hatoba_proxy::ProxyOptions::default(),
                0,
            );
            (Arc::new(local), None)
        } else {
            let c = crate::dataplane_cmd::ensure(state, args.metrics).await?;
            let kept = crate::dataplane_cmd::keep_sockets(state, &c.client).await;
            supervisor = Some(tokio::spawn(crate::dataplane_cmd::supervise(
                state.to_path_buf(),
                c.client.clone(),
                args.metrics,
                Arc::clone(&kept.0),
            )));
            _keeper_server = kept.1;
            let remote = hatoba_server::RemoteDataPlane::new(c.client).with_keeper(kept.0);
            let remote = Arc::new(remote);
            if c.started {
                started_data_plane = Some(Arc::clone(&remote));
            }
            (remote, Some(c.admin))
        };
    let server = hatoba_server::Environments::start(
        hatoba_server::ServerConfig {
            spec,
            spec_digest: hex::encode(sha2::Sha256::digest(&bytes)),
            // A spec read from standard input (`-f -`) has no file to read
            // again: a reload says so instead of reading a file named `-`.
            spec_path: if args.file.file.as_os_str() == "-" {
                None
            } else {
                Some(std::path::absolute(&args.file.file)?)
            },
            environment: envs[0].clone(),
            base_dir,
            store,
            runtime: Arc::new(runtimes),
            data_plane,
            token,
            secret_key: Some(Arc::new(secret_key)),
        },
        &envs,
    )
    .await
    .map(Arc::new);
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            // Leave nothing behind that this run started.
            if let Some(s) = supervisor.take() {
                s.abort();
            }
            if let Some(dp) = started_data_plane.take() {
                use hatoba_server::DataPlane as _;
                dp.shutdown().await;
            }
            let exit = if matches!(
                e,
                hatoba_server::StartError::UnknownEnvironment(..)
                    | hatoba_server::StartError::AddressClash { .. }
            ) {
                Exit::BadInput
            } else {
                Exit::Failed
            };
            return Err(CliError::new(exit, crate::server_cmd::chain(&e)).into());
        }
    };
    // From here a failure stops what this run started (the data plane, if
    // it was not already serving) and leaves what it found as it was.
    let ready = async {
        let resumed = server
            .resume()
            .await
            .map_err(|e| CliError::new(Exit::Failed, crate::server_cmd::chain(&e)))?;
        let admin_addr = match (args.in_process_proxy, args.metrics) {
            (true, Some(m)) => m,
            _ => "127.0.0.1:0".parse()?,
        };
        let admin = hatoba_proxy::AdminServer::start(admin_addr, recorder, Vec::new())?;
        let api_addr = args
            .api
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let api = tokio::net::TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot listen for the API on {api_addr} (--api)"))?;
        if let Some(warning) = api_warning(api_addr) {
            say(args.log_format, &warning);
        }
        // Handlers before server.json exists: a SIGTERM right after it stops cleanly.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // SIGHUP reads the spec file again, as `hatoba reload` does.
        let hup = crate::reload_cmd::on_sighup(Arc::clone(&server))?;
        let info = hatoba_api::ServerInfo {
            api_version: hatoba_api::API_VERSION.to_owned(),
            api: reachable_here(api.local_addr()?).to_string(),
            // Read now: the data plane may have been started again since.
            admin: remote_admin
                .as_ref()
                .map(|_| crate::dataplane_cmd::admin_addr(state))
                .unwrap_or_else(|| admin.local_addr().to_string()),
            pid: std::process::id(),
            environment: server.names().join(","),
            environments: server.names(),
        };
        crate::state_dir::write_private(
            &info_path(state),
            serde_json::to_string_pretty(&info)?.as_bytes(),
        )?;
        anyhow::Ok((resumed, admin, api, term, hup, info))
    }
    .await;
    let (resumed, admin, api, mut term, hup, info) = match ready {
        Ok(v) => v,
        Err(e) => {
            if let Some(s) = supervisor.take() {
                s.abort();
            }
            server.shutdown(true).await;
            if let Some(dp) = started_data_plane.take() {
                use hatoba_server::DataPlane as _;
                dp.shutdown().await;
            }
            return Err(e);
        }
    };
    let mut lines = format!(
        "hatoba up: environment{} {env_words}, state in `{}`\n",
        if server.several() { "s" } else { "" },
        state.display()
    );
    for (name, listen) in server.routes() {
        lines.push_str(&format!("  service `{name}` on http://{listen}\n"));
    }
    // Where it listens (`0.0.0.0:7400` says it is open to others), not
    // where this machine reaches it.
    let listening = api
        .local_addr()
        .map_or_else(|_| info.api.clone(), |a| a.to_string());
    lines.push_str(&format!(
        "  API {listening} · metrics http://{}/metrics\n",
        info.admin
    ));
    if resumed.is_empty() {
        lines.push_str("  services start with no instance: `hatoba deploy SERVICE --version V --wait` (Ctrl-C stops)\n");
    }
    for line in &resumed {
        lines.push_str(&format!("  {line}\n"));
    }
    say(args.log_format, &lines);
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    Arc::clone(&server).serve_api(api, stop).await;
    say(
        args.log_format,
        if args.keep_running {
            "stopping: instances and the data plane keep serving for the next `hatoba up` (--keep-running)\n"
        } else {
            "stopping: new connections are refused, requests in flight finish, then instances get their grace period\n"
        },
    );
    if let Some(s) = supervisor {
        s.abort();
    }
    hup.abort();
    rotation.abort();
    server.shutdown(args.keep_running).await;
    admin.shutdown();
    // The WAL folded in: `hatoba.db` alone holds the history after a clean stop.
    crate::backup_cmd::checkpoint_at_stop(state).await;
    let _ = std::fs::remove_file(info_path(state));
    Ok(Exit::Ok)
}

/// What `hatoba up --api ADDR` says when ADDR is reachable beyond this
/// machine: the API is plain HTTP.
fn api_warning(addr: std::net::SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "WARNING: the API listens on {addr}, beyond this machine: it is plain HTTP, so its token (and any secret value sent to it) travels in clear; prefer loopback with an SSH tunnel, or a TLS proxy in front\n"
        )
    })
}

/// The address this machine's commands reach a listener on: an unspecified
/// one (`0.0.0.0`, `::`) is reached on loopback.
fn reachable_here(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// The server's own log lines (what it does between API calls, and the
/// problems it recovers from) go to stderr, filtered by `HATOBA_LOG`
/// (`info` by default; `warn`, `debug`, or per target), as text or as one
/// JSON object per line.
fn init_logs(format: crate::cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HATOBA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours only on a terminal, and never under NO_COLOR.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        );
    let _ = match format {
        crate::cli::LogFormat::Text => builder.try_init(),
        crate::cli::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// What `hatoba up` tells its operator: as written on a terminal, or one
/// log line per line of text under `--log-format json`, so a collector
/// reads nothing but JSON.
fn say(format: crate::cli::LogFormat, text: &str) {
    match format {
        crate::cli::LogFormat::Text => output::stderr(text),
        crate::cli::LogFormat::Json => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!("{}", line.trim_end());
            }
        }
    }
}

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A service name as typed, checked before it goes into a URL.
fn check_service(s: &str) -> Result<(), CliError> {
    s.parse::<hatoba_core::ServiceName>()
        .map(|_| ())
        .map_err(|e| CliError::new(Exit::BadInput, e.to_string()))
}

/// `?env=ENV` for a request about a service, or nothing: the server then
/// picks the environment (the only one it runs, or the only one with the
/// service).
pub(crate) fn env_query(env: Option<&str>) -> Result<String, CliError> {
    match env {
        None => Ok(String::new()),
        Some(e) => e
            .parse::<EnvName>()
            .map(|e| format!("?env={e}"))
            .map_err(|e| CliError::new(Exit::BadInput, e.to_string())),
    }
}

/// The running server's address file, if there is one (none when
/// `--server` names the server to talk to: this file is another one's).
pub(crate) fn server_info(global: &Global) -> Option<hatoba_api::ServerInfo> {
    if global.server.is_some() {
        return None;
    }
    std::fs::read_to_string(info_path(&global.state_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// One API call to the server this command talks to (`--server`, else the
/// state directory's): [`crate::client::call`].
pub(crate) async fn call(
    global: &Global,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<Bytes> {
    crate::client::call(global, method, path, body).await
}

pub(crate) async fn deploy(global: &Global, args: &DeployArgs) -> anyhow::Result<Exit> {
    let mut vars = std::collections::BTreeMap::new();
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CliError::new(
                Exit::BadInput,
                format!("`--set {kv}`: expected NAME=VALUE"),
            )
            .into());
        };
        vars.insert(k.to_owned(), v.to_owned());
    }
    let body = hatoba_api::DeployRequest {
        service: args.service.clone(),
        environment: args.env.clone(),
        version: args.version.clone(),
        vars,
        deployed_by: Some(crate::inspect_cmd::actor(args.actor.clone())),
    };
    let json = serde_json::to_vec(&body)?;
    if json.len() > hatoba_server::http::MAX_BODY {
        // The server would answer 413 about a "request body" the operator
        // never wrote: say it in the command's words.
        let set: usize = body.vars.iter().map(|(k, v)| k.len() + v.len()).sum();
        return Err(CliError::new(
            Exit::BadInput,
            format!(
                "the --set values take {set} bytes; a deploy carries at most {} bytes in all",
                hatoba_server::http::MAX_BODY
            ),
        )
        .hint("keep large values off the command line: a secret (`hatoba secret set NAME`) or a file the app reads")
        .into());
    }
    let bytes = call(
        global,
        hyper::Method::POST,
        "/api/v1/deployments",
        Some(json),
    )
    .await?;
    let d: hatoba_api::Deployment = serde_json::from_slice(&bytes)?;
    if global.output == Output::Text {
        if d.status == "pending" {
            output::stdout(&format!(
                "deployment {} of `{}` {} waits for approval: someone other than {} runs `hatoba approve {}`\n",
                d.id, d.service, d.version, d.deployed_by, d.id
            ));
        } else {
            output::stdout(&format!(
                "deployment {} of `{}` {} started ({})\n",
                d.id,
                d.service,
                d.version,
                output::strategy(&d.strategy)
            ));
        }
    }
    let Some(until) = args.wait else {
        if global.output == Output::Json {
            output::json(&d)?;
        }
        return Ok(Exit::Ok);
    };
    follow(global, &d, until).await
}

/// Prints a deployment's events as they come until it ends; exit 0 only
/// when it succeeded. On a terminal, a status line under the events shows
/// the elapsed time, the weights and the ready instances as they change;
/// elsewhere the output is plain lines only.
/// `hatoba watch SERVICE`: follows the deployment in progress, if any.
pub(crate) async fn watch(
    global: &Global,
    service: &str,
    env: Option<&str>,
) -> anyhow::Result<Exit> {
    check_service(service)?;
    let query = env_query(env)?;
    let bytes = call(
        global,
        hyper::Method::GET,
        &format!("/api/v1/services/{service}{query}"),
        None,
    )
    .await?;
    let detail: hatoba_api::ServiceDetail = serde_json::from_slice(&bytes)?;
    let Some(id) = detail.live_deployment else {
        output::stdout(&format!(
            "no deployment of `{service}` in progress; {}\n",
            detail
                .serving_version
                .map_or_else(|| "nothing serves".to_owned(), |v| format!("{v} serves"))
        ));
        return Ok(Exit::Ok);
    };
    let bytes = call(
        global,
        hyper::Method::GET,
        &format!("/api/v1/deployments/{id}"),
        None,
    )
    .await?;
    let d: hatoba_api::DeploymentDetail = serde_json::from_slice(&bytes)?;
    if global.output == Output::Text {
        output::stdout(&format!(
            "following deployment {} of `{}` {} ({})\n",
            d.deployment.id,
            d.deployment.service,
            d.deployment.version,
            output::strategy(&d.deployment.strategy)
        ));
    }
    follow(global, &d.deployment, WaitUntil::Complete).await
}

/// How long `deploy --wait` waits for a server that went away to answer
/// again before it gives up (exit 3).
pub(crate) const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// `until`: `Serving` returns (exit 0) as soon as the new version serves
/// all traffic while the previous one stays warm; the end is followed when
/// it comes at once (nothing stays warm) or with `Complete`.
///
/// Follows the deployment's events on the server's event stream, opened
/// again after the last event printed when it drops (`hatoba up`
/// restarting); a server that has no stream is polled instead.
async fn follow(
    global: &Global,
    d: &hatoba_api::Deployment,
    until: WaitUntil,
) -> anyhow::Result<Exit> {
    use crate::events_cmd::{Filter, Lost, Stream};
    use std::io::IsTerminal as _;
    let live = global.output == Output::Text && std::io::stdout().is_terminal();
    let started = tokio::time::Instant::now();
    let filter = Filter {
        deployment: Some(d.id.clone()),
        ..Filter::default()
    };
    let mut last = 0;
    let mut printed = 0;
    let mut opened = false;
    let mut status_line = false;
    // `hatoba up` restarting (an upgrade, a crash) is not the end of the
    // deployment: it resumes it, so following goes on once the server
    // answers again, for up to RECONNECT_FOR.
    let mut lost: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let why = match Stream::open(global, &filter, last).await {
            Err(Lost::Refused(e)) if !opened => {
                // An older server without the stream, or no place for one.
                tracing::debug!("no event stream ({e:#}): polling");
                return follow_polling(global, d, until, printed, started).await;
            }
            Err(Lost::Refused(e)) => return Err(e),
            Err(Lost::Connection(e)) => e,
            Ok(mut stream) => {
                let again = std::mem::replace(&mut opened, true);
                if lost.take().is_some() && global.output == Output::Text {
                    output::stdout("  (the server is back: following on)\n");
                }
                // What ended it may have been printed before the connection
                // dropped and not acted on.
                if again {
                    let seen = Seen {
                        last,
                        started,
                        status_line: &mut status_line,
                    };
                    match ended(global, d, until, seen).await {
                        Ok(Some(exit)) => return Ok(exit),
                        Ok(None) => {}
                        Err(e) if crate::exit::exit_code(&e) == Exit::Unreachable => {
                            lost_at(&mut lost, global, &mut status_line, &e);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                loop {
                    tokio::select! {
                        next = stream.next() => match next {
                            Ok(e) => {
                                last = e.id;
                                printed += 1;
                                print_event(global, d, &e, started, &mut status_line);
                                // Only a status change or serving can end the wait.
                                if matches!(e.kind.as_str(), "status_changed" | "serving") {
                                    let seen = Seen { last, started, status_line: &mut status_line };
                                    match ended(global, d, until, seen).await {
                                        Ok(Some(exit)) => return Ok(exit),
                                        Ok(None) => {}
                                        Err(e) if crate::exit::exit_code(&e) == Exit::Unreachable => break e,
                                        Err(e) => return Err(e),
                                    }
                                }
                            }
                            Err(e) => break e,
                        },
                        _ = tick.tick(), if live => {
                            let line = progress_line(global, d, started.elapsed()).await;
                            output::stdout(&line);
                            status_line = true;
                        }
                    }
                }
            }
        };
        if lost_at(&mut lost, global, &mut status_line, &why).elapsed() > RECONNECT_FOR {
            return Err(why);
        }
        // The pause between attempts to reach a server that went away.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Seconds from the deployment's start to an event, by the times the
/// server recorded: a follower that joins late (`watch`, `rollback` of a
/// deployment in progress, `deploy --wait` after a restart) prints the
/// events it catches up on at the time they happened, not all at 0.0s.
/// Falls back to the time since following began when either time does
/// not parse.
fn since_start(d: &hatoba_api::Deployment, at: &str, started: tokio::time::Instant) -> f64 {
    match (
        hatoba_core::Millis::parse_rfc3339(&d.started_at),
        hatoba_core::Millis::parse_rfc3339(at),
    ) {
        (Some(start), Some(at)) => at.since(start).as_secs_f64(),
        _ => started.elapsed().as_secs_f64(),
    }
}

/// Since when the server is lost, saying so the first time.
fn lost_at(
    lost: &mut Option<tokio::time::Instant>,
    global: &Global,
    status_line: &mut bool,
    why: &anyhow::Error,
) -> tokio::time::Instant {
    *lost.get_or_insert_with(|| {
        if global.output == Output::Text {
            if std::mem::take(status_line) {
                output::stdout("\r\x1b[2K");
            }
            output::stdout(&format!(
                "  (lost the server: {why:#}; waiting up to {}s for it to come back, Ctrl-C stops waiting)\n",
                RECONNECT_FOR.as_secs()
            ));
        }
        tokio::time::Instant::now()
    })
}

/// One event of a followed deployment, as `deploy --wait` prints it.
fn print_event(
    global: &Global,
    d: &hatoba_api::Deployment,
    e: &hatoba_api::Event,
    started: tokio::time::Instant,
    status_line: &mut bool,
) {
    if global.output != Output::Text {
        return;
    }
    if std::mem::take(status_line) {
        // Clear the status line before more output.
        output::stdout("\r\x1b[2K");
    }
    output::stdout(&format!(
        "  [{:>6.1}s] {}\n",
        since_start(d, &e.at, started),
        e.message
    ));
}

/// What [`follow`] printed so far: the last event's id, when following
/// began, and whether a status line is on screen.
struct Seen<'a> {
    last: u64,
    started: tokio::time::Instant,
    status_line: &'a mut bool,
}

/// Whether following a deployment is over, said as [`follow`] says it:
/// it ended (exit 0 when it succeeded), or with `Serving` it serves all
/// traffic while the previous version stays warm (exit 0). A deployment
/// that ended before the stream delivered all its events (one failing
/// within a tenth of a second) has the rest printed, from its stored
/// timeline, before the line that says how it ended.
async fn ended(
    global: &Global,
    d: &hatoba_api::Deployment,
    until: WaitUntil,
    seen: Seen<'_>,
) -> anyhow::Result<Option<Exit>> {
    let bytes = call(
        global,
        hyper::Method::GET,
        &format!("/api/v1/deployments/{}", d.id),
        None,
    )
    .await?;
    let detail: hatoba_api::DeploymentDetail = serde_json::from_slice(&bytes)?;
    if !matches!(
        detail.deployment.status.as_str(),
        "pending" | "in_progress" | "paused"
    ) {
        for e in detail.events.iter().filter(|e| e.id > seen.last) {
            print_event(global, d, e, seen.started, seen.status_line);
        }
    }
    let exit = ended_as(global, &detail, until)?;
    if exit.is_some()
        && !matches!(
            detail.deployment.status.as_str(),
            "pending" | "in_progress" | "paused"
        )
    {
        settled(global, d).await;
    }
    Ok(exit)
}

/// Waits (at most [`SETTLE_FOR`]) until the server has let go of a
/// deployment that ended: the stream tells its end the moment it is
/// stored, a little before the deployment's task is over and says what
/// serves after it. A deploy asked in between waits for the task on the
/// server's side now; this wait is kept so that `hatoba status` right
/// after `deploy --wait` shows what serves (`serving_version`) and no
/// deployment in progress, not the moment before.
async fn settled(global: &Global, d: &hatoba_api::Deployment) {
    let deadline = tokio::time::Instant::now() + SETTLE_FOR;
    while tokio::time::Instant::now() < deadline {
        let live = call(
            global,
            hyper::Method::GET,
            &format!("/api/v1/services/{}?env={}", d.service, d.environment),
            None,
        )
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<hatoba_api::ServiceDetail>(&b).ok())
        .map(|s| s.live_deployment);
        match live {
            Some(Some(id)) if id == d.id => {}
            _ => return,
        }
        // The poll interval of a wait with a deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long `deploy --wait` waits for the server to let go of a
/// deployment that ended.
const SETTLE_FOR: Duration = Duration::from_secs(5);

fn ended_as(
    global: &Global,
    detail: &hatoba_api::DeploymentDetail,
    until: WaitUntil,
) -> anyhow::Result<Option<Exit>> {
    let status = detail.deployment.status.as_str();
    if !matches!(status, "pending" | "in_progress" | "paused") {
        match global.output {
            Output::Json => output::json(detail)?,
            Output::Text => output::stdout(&format!(
                "deployment {} {status}{}\n",
                detail.deployment.id,
                detail
                    .deployment
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
        }
        return Ok(Some(if status == "succeeded" {
            Exit::Ok
        } else {
            Exit::Failed
        }));
    }
    if until == WaitUntil::Serving
        && let Some(warm) = warm_while_serving(detail)
    {
        match global.output {
            Output::Json => output::json(detail)?,
            Output::Text => output::stdout(&serving_words(&detail.deployment, &warm)),
        }
        return Ok(Some(Exit::Ok));
    }
    Ok(None)
}

/// [`follow`] by asking for the deployment again and again: for a server
/// without the event stream. `seen`: events printed already.
async fn follow_polling(
    global: &Global,
    d: &hatoba_api::Deployment,
    until: WaitUntil,
    mut seen: usize,
    started: tokio::time::Instant,
) -> anyhow::Result<Exit> {
    use std::io::IsTerminal as _;
    let live = global.output == Output::Text && std::io::stdout().is_terminal();
    let mut status_line = false;
    let mut lost: Option<tokio::time::Instant> = None;
    loop {
        let bytes = match call(
            global,
            hyper::Method::GET,
            &format!("/api/v1/deployments/{}", d.id),
            None,
        )
        .await
        {
            Ok(bytes) => {
                if lost.take().is_some() && global.output == Output::Text {
                    output::stdout("  (the server is back: following on)\n");
                }
                bytes
            }
            Err(e) if crate::exit::exit_code(&e) == Exit::Unreachable => {
                let since = *lost.get_or_insert_with(|| {
                    if global.output == Output::Text {
                        output::stdout(&format!(
                            "  (lost the server: {e:#}; waiting up to {}s for it to come back, Ctrl-C stops waiting)\n",
                            RECONNECT_FOR.as_secs()
                        ));
                    }
                    tokio::time::Instant::now()
                });
                if since.elapsed() > RECONNECT_FOR {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let detail: hatoba_api::DeploymentDetail = serde_json::from_slice(&bytes)?;
        if global.output == Output::Text {
            let fresh = detail.events.iter().skip(seen);
            let mut text = String::new();
            for e in fresh {
                text.push_str(&format!(
                    "  [{:>6.1}s] {}\n",
                    since_start(d, &e.at, started),
                    e.message
                ));
            }
            if status_line {
                // Clear the status line before more output.
                output::stdout("\r\x1b[2K");
                status_line = false;
            }
            output::stdout(&text);
        }
        seen = detail.events.len();
        if let Some(exit) = ended_as(global, &detail, until)? {
            return Ok(exit);
        }
        if live {
            let line = progress_line(global, d, started.elapsed()).await;
            output::stdout(&line);
            status_line = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The previous version a deployment that serves all traffic keeps warm,
/// from its `serving` event; None while it does not serve yet, or when
/// nothing stays warm (then it completes at once).
fn warm_while_serving(detail: &hatoba_api::DeploymentDetail) -> Option<hatoba_api::WarmVersion> {
    detail.deployment.serving_at.as_ref()?;
    let serving = detail.events.iter().rev().find(|e| e.kind == "serving")?;
    let warm =
        hatoba_server::api::warm_version(serving.data.as_ref(), None, hatoba_server::clock_now())?;
    warm.until.is_some().then_some(warm)
}

/// `deployment d-… serves: v2 takes all traffic; v1 stays warm until …`.
fn serving_words(d: &hatoba_api::Deployment, warm: &hatoba_api::WarmVersion) -> String {
    let until = warm
        .until
        .as_deref()
        .and_then(|t| t.get(11..19))
        .map_or_else(String::new, |t| format!(" until {t} UTC"));
    format!(
        "deployment {} serves: {} takes all traffic; {} stays warm{until} (`hatoba rollback {}` returns to it at once), then the deployment completes (`--wait=complete` waits for that)\n",
        d.id, d.version, warm.version, d.service
    )
}

/// `⏵ 12.3s · stable v1 50% (2 ready) · canary v2 50% (1 ready)`.
async fn progress_line(global: &Global, d: &hatoba_api::Deployment, elapsed: Duration) -> String {
    let mut line = format!("  \u{23f5} {:.1}s {}", elapsed.as_secs_f64(), d.status);
    if let Ok(bytes) = call(
        global,
        hyper::Method::GET,
        &format!("/api/v1/services/{}?env={}", d.service, d.environment),
        None,
    )
    .await
        && let Ok(s) = serde_json::from_slice::<hatoba_api::ServiceDetail>(&bytes)
    {
        line = format!("  \u{23f5} {:.1}s", elapsed.as_secs_f64());
        for g in &s.route {
            line.push_str(&format!(
                " \u{b7} {} {} {}% ({} ready)",
                g.role,
                g.version,
                g.weight,
                g.backends.len()
            ));
        }
        let starting = s
            .instances
            .iter()
            .filter(|i| i.state == "running" && !i.in_route)
            .count();
        if starting > 0 {
            line.push_str(&format!(" \u{b7} {starting} out of the route"));
        }
    }
    line
}

pub(crate) async fn rollback(
    global: &Global,
    service: &str,
    to: Option<String>,
    env: Option<&str>,
    wait: WaitUntil,
) -> anyhow::Result<Exit> {
    check_service(service)?;
    let query = env_query(env)?;
    let body = serde_json::to_vec(&hatoba_api::RollbackRequest {
        to,
        by: Some(crate::inspect_cmd::actor(None)),
    })?;
    let bytes = call(
        global,
        hyper::Method::POST,
        &format!("/api/v1/services/{service}/rollback{query}"),
        Some(body),
    )
    .await?;
    let d: hatoba_api::Deployment = serde_json::from_slice(&bytes)?;
    if d.rollback_of.is_none() {
        // A deployment was in progress: the rollback aborts it, traffic
        // goes back to the version that still runs.
        if global.output == Output::Text {
            output::stdout(&format!(
                "deployment {} of `{}` {} was in progress: aborting it, traffic goes back to the previous version\n",
                d.id, d.service, d.version
            ));
        }
        let exit = follow(global, &d, WaitUntil::Complete).await?;
        let end = call(
            global,
            hyper::Method::GET,
            &format!("/api/v1/deployments/{}", d.id),
            None,
        )
        .await?;
        let end: hatoba_api::DeploymentDetail = serde_json::from_slice(&end)?;
        return Ok(if end.deployment.status == "aborted" {
            Exit::Ok
        } else {
            exit
        });
    }
    if global.output == Output::Text {
        output::stdout(&format!(
            "rolling `{}` back to {} as deployment {} ({})\n",
            d.service,
            d.version,
            d.id,
            output::strategy(&d.strategy)
        ));
    }
    follow(global, &d, wait).await
}

pub(crate) async fn operate(
    global: &Global,
    service: &str,
    action: &str,
    env: Option<&str>,
) -> anyhow::Result<Exit> {
    check_service(service)?;
    let query = env_query(env)?;
    // Who acts: a promote past missing evidence is recorded with it.
    let body = serde_json::to_vec(&hatoba_api::PromoteRequest {
        by: Some(crate::inspect_cmd::actor(None)),
    })?;
    let bytes = call(
        global,
        hyper::Method::POST,
        &format!("/api/v1/services/{service}/{action}{query}"),
        Some(body),
    )
    .await?;
    match global.output {
        Output::Json => output::stdout(&format!("{}\n", String::from_utf8_lossy(&bytes))),
        Output::Text => output::stdout(&format!(
            "{action}: sent to the deployment of `{service}` in progress\n"
        )),
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::{api_warning, reachable_here};

    /// Only an API address beyond loopback is warned about.
    #[test]
    fn an_api_beyond_loopback_is_warned_about() {
        for quiet in ["127.0.0.1:0", "127.0.0.2:7400", "[::1]:7400"] {
            assert_eq!(api_warning(quiet.parse().unwrap()), None, "{quiet}");
        }
        for loud in ["0.0.0.0:7400", "[::]:7400", "192.0.2.1:80"] {
            let w = api_warning(loud.parse().unwrap()).unwrap_or_default();
            assert!(w.contains("plain HTTP") && w.contains(loud), "{loud}: {w}");
        }
    }

    /// server.json names an address this machine's commands can connect to.
    #[test]
    fn an_unspecified_api_address_is_reached_on_loopback() {
        for (bound, reached) in [
            ("0.0.0.0:7400", "127.0.0.1:7400"),
            ("[::]:7400", "[::1]:7400"),
            ("127.0.0.1:9", "127.0.0.1:9"),
            ("192.0.2.1:80", "192.0.2.1:80"),
        ] {
            let bound: std::net::SocketAddr = bound.parse().unwrap();
            assert_eq!(reachable_here(bound).to_string(), reached);
        }
    }
}
