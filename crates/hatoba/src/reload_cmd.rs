//! `hatoba reload`, a client of `POST /api/v1/reload`: the running `hatoba
//! up` (or the one `--server URL` names) reads its spec file again. The
//! same reload runs when `hatoba up` gets SIGHUP ([`on_sighup`]), which logs
//! the outcome since nobody waits for an answer. The rules are the server's
//! (`hatoba_server::ops` reload): an invalid spec changes nothing and comes
//! back as its diagnostics (exit 2); a deployment in progress keeps the
//! spec it started with.

use crate::cli::{Global, Output};
use crate::exit::Exit;
use crate::output;
use std::sync::Arc;

/// `hatoba reload`.
pub(crate) async fn reload(global: &Global) -> anyhow::Result<Exit> {
    let body = serde_json::to_vec(&hatoba_api::ReloadRequest {
        by: Some(crate::inspect_cmd::actor(None)),
    })?;
    let bytes =
        crate::client::call(global, hyper::Method::POST, "/api/v1/reload", Some(body)).await?;
    match global.output {
        Output::Json => output::stdout(&format!("{}\n", String::from_utf8_lossy(&bytes))),
        Output::Text => {
            let answer: hatoba_api::SpecReload = serde_json::from_slice(&bytes)?;
            output::stdout(&render(&answer));
        }
    }
    Ok(Exit::Ok)
}

/// What a reload changed, in words.
pub(crate) fn render(r: &hatoba_api::SpecReload) -> String {
    let short = |d: &str| d.chars().take(12).collect::<String>();
    let mut out = if r.digest == r.previous_digest {
        format!(
            "reloaded `{}`: unchanged (digest {})\n",
            r.file,
            short(&r.digest)
        )
    } else {
        format!(
            "reloaded `{}`: digest {} (was {})\n",
            r.file,
            short(&r.digest),
            short(&r.previous_digest)
        )
    };
    let lines: [(&str, &[String]); 5] = [
        (
            "added (listening; nothing runs until `hatoba deploy`)",
            &r.added,
        ),
        ("changed (used from their next deployment)", &r.changed),
        ("removed (listeners closed)", &r.removed),
        ("moved", &r.rebound),
        (
            "in progress (keeping the spec they started with)",
            &r.in_progress,
        ),
    ];
    for (what, names) in lines {
        if !names.is_empty() {
            out.push_str(&format!("  {what}: {}\n", names.join(", ")));
        }
    }
    if let Some(w) = &r.warnings {
        out.push_str(w);
        if !w.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Reloads on every SIGHUP until `hatoba up` stops, logging each outcome.
pub(crate) fn on_sighup(
    server: Arc<hatoba_server::Environments>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let asked = hatoba_api::ReloadRequest {
                by: Some("SIGHUP".to_owned()),
            };
            match server.reload(asked).await {
                // The reload logs what changed itself (`spec_reloaded`).
                Ok(r) => {
                    if let Some(w) = &r.warnings {
                        tracing::warn!("SIGHUP: the reloaded spec has warnings:\n{w}");
                    }
                }
                Err(e) => match e.hint_text() {
                    Some(hint) => tracing::error!(
                        kind = %e.kind().as_str(),
                        hint,
                        "SIGHUP: reload refused: {}",
                        e.message()
                    ),
                    None => tracing::error!(
                        kind = %e.kind().as_str(),
                        "SIGHUP: reload refused: {}",
                        e.message()
                    ),
                },
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn a_reload_is_told_in_words() {
        let r = hatoba_api::SpecReload {
            file: "/srv/hatoba.yaml".to_owned(),
            digest: "ab".repeat(32),
            previous_digest: "cd".repeat(32),
            added: vec!["api".to_owned()],
            changed: vec!["web".to_owned()],
            in_progress: vec!["web: d-1".to_owned()],
            ..Default::default()
        };
        assert_eq!(
            render(&r),
            "reloaded `/srv/hatoba.yaml`: digest abababababab (was cdcdcdcdcdcd)\n\
             \x20 added (listening; nothing runs until `hatoba deploy`): api\n\
             \x20 changed (used from their next deployment): web\n\
             \x20 in progress (keeping the spec they started with): web: d-1\n"
        );
        let same = hatoba_api::SpecReload {
            previous_digest: r.digest.clone(),
            ..r.clone()
        };
        assert!(render(&same).contains(": unchanged"), "{}", render(&same));
    }
}
