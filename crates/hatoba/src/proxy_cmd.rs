//! `hatoba proxy --routes FILE`: the proxy alone over fixed backends.
//! Reloads the file on SIGHUP, drains on SIGTERM / Ctrl-C. With a `[tls]`
//! table it serves HTTPS; its certificate and key paths are relative to the
//! routes file's directory and are read once, at start (a reload keeps them).

use crate::exit::{CliError, Exit};
use crate::output;
use hatoba_proxy::{AdminServer, ProxyOptions, ProxyServer, Router, RoutesFile, TlsSettings};
use std::path::Path;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};

fn load(path: &Path) -> Result<RoutesFile, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
            Exit::BadInput,
            format!("cannot read routes file `{}`: {e}", path.display()),
        )
    })?;
    RoutesFile::parse(&text).map_err(|e| {
        CliError::new(
            Exit::BadInput,
            format!("routes file `{}`: {e}", path.display()),
        )
    })
}

/// Loads the certificate and key the file's `[tls]` table names, if any.
fn load_tls(path: &Path, file: &RoutesFile) -> Result<Option<TlsSettings>, CliError> {
    let Some(tls) = &file.tls else {
        return Ok(None);
    };
    // A bare `routes.toml` has an empty parent: its paths stay relative to
    // the working directory, as the file itself is.
    let dir = path.parent().unwrap_or(Path::new(""));
    tls.relative_to(dir).load().map(Some).map_err(|e| {
        CliError::new(
            Exit::BadInput,
            format!("routes file `{}`: [tls]: {e}", path.display()),
        )
    })
}

pub(crate) fn run(path: &Path) -> anyhow::Result<Exit> {
    let file = load(path)?;
    let tls = load_tls(path, &file)?;
    let https = tls.is_some();
    let recorder = Arc::new(hatoba_metrics::Recorder::new());
    let router = Arc::new(
        Router::new(file.route_spec(), Arc::clone(&recorder))
            .map_err(|e| CliError::new(Exit::BadInput, e.to_string()))?,
    );
    let server = ProxyServer::start(
        file.listen,
        Arc::clone(&router),
        ProxyOptions {
            tls,
            ..ProxyOptions::default()
        },
        file.threads,
    )
    .map_err(|e| {
        CliError::new(
            Exit::Failed,
            format!("cannot listen on {}: {e}", file.listen),
        )
    })?;
    let admin = match file.admin {
        Some(a) => Some(
            AdminServer::start(a, Arc::clone(&recorder), vec![Arc::clone(&router)]).map_err(
                |e| CliError::new(Exit::Failed, format!("cannot listen on {a} (admin): {e}")),
            )?,
        ),
        None => None,
    };
    // Signal handlers before the "listening" line: a SIGHUP sent as soon as
    // it appears must reload, not kill the process (SIGHUP's default).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut hup, mut term, mut int) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::hangup())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    output::stderr(&format!(
        "listening on {}{}\n",
        server.local_addr(),
        if https { " (TLS)" } else { "" }
    ));
    if let Some(a) = &admin {
        output::stderr(&format!(
            "admin on {} (/metrics, /routes, /healthz)\n",
            a.local_addr()
        ));
    }
    rt.block_on(async {
        loop {
            tokio::select! {
                _ = hup.recv() => match load(path) {
                    Ok(f) => match router.update(f.route_spec()) {
                        Ok(()) if f.tls != file.tls => output::stderr("routes reloaded; [tls] changes take effect on restart\n"),
                        Ok(()) => output::stderr("routes reloaded\n"),
                        Err(e) => output::stderr(&format!("routes not reloaded, keeping the running table: {e}\n")),
                    },
                    Err(e) => output::stderr(&format!("routes not reloaded, keeping the running table: {e}\n")),
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    output::stderr("stopping: finishing requests in flight\n");
    server.shutdown();
    if let Some(a) = admin {
        a.shutdown();
    }
    Ok(Exit::Ok)
}
