//! `hatoba secret set|rotate|list|rm`: secrets through the running server's
//! API (the server is the only writer of the store and holds the key).
//!
//! A value is read from stdin or `--from-file`, never from the command
//! line, and is never printed: the answers carry names, versions and dates.

use crate::cli::{Global, Output, SecretCommand, SecretValueArgs};
use crate::exit::{CliError, Exit};
use crate::output;

use hatoba_core::SecretValue;

/// [`crate::server_cmd::call`], saying why a secret needs the server when
/// none answers.
async fn call(
    global: &Global,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<bytes::Bytes> {
    crate::server_cmd::call(global, method, path, body)
        .await
        .map_err(|e| match e.downcast::<CliError>() {
            Ok(c) if c.exit == Exit::Unreachable => CliError {
                hint: Some(
                    "secrets are stored and read by the running server, the only writer of the \
                     store and the holder of the key: start `hatoba up -f hatoba.yaml` with the \
                     same --state-dir, then run this again"
                        .to_owned(),
                ),
                ..c
            }
            .into(),
            Ok(c) => c.into(),
            Err(e) => e,
        })
}

pub(crate) async fn run(global: &Global, command: SecretCommand) -> anyhow::Result<Exit> {
    match command {
        SecretCommand::Set(args) => set(global, &args, false).await,
        SecretCommand::Rotate(args) => set(global, &args, true).await,
        SecretCommand::List { env } => list(global, env.as_deref()).await,
        SecretCommand::Rm { name, env } => remove(global, &name, env.as_deref()).await,
    }
}

/// A secret's name as typed, checked before it goes into a URL.
fn check_name(name: &str) -> Result<(), CliError> {
    if hatoba_spec::is_variable_name(name) {
        Ok(())
    } else {
        Err(CliError::new(
            Exit::BadInput,
            format!("`{}` is not a secret name", hatoba_core::shown(name)),
        )
        .hint("secrets are variable names: letters, digits and `_`, not starting with a digit"))
    }
}

/// `--env` must name an environment the server runs; a mismatch is said
/// before anything is sent.
fn check_env(global: &Global, env: Option<&str>) -> Result<(), CliError> {
    if let (Some(env), Some(info)) = (env, crate::server_cmd::server_info(global)) {
        // A server.json written before one server could run several
        // environments names one in `environment`.
        let run = if info.environments.is_empty() {
            vec![info.environment.clone()]
        } else {
            info.environments.clone()
        };
        if !run.iter().any(|e| e == env) {
            return Err(CliError::new(
                Exit::BadInput,
                format!(
                    "the server for `{}` runs environment{} `{}`, not `{env}`",
                    global.state_dir.display(),
                    if run.len() > 1 { "s" } else { "" },
                    run.join("`, `")
                ),
            )
            .hint(
                "start `hatoba up --env ENV` for that environment (repeat --env to run several)",
            ));
        }
    }
    Ok(())
}

/// The value from `--from-file` or stdin, one final newline dropped.
fn read_value(args: &SecretValueArgs) -> Result<SecretValue, CliError> {
    use std::io::{IsTerminal as _, Read as _};
    let mut bytes = Vec::new();
    match &args.from_file {
        Some(path) => {
            bytes = std::fs::read(path).map_err(|e| {
                CliError::new(
                    Exit::BadInput,
                    format!(
                        "cannot read the secret's value from `{}`: {e}",
                        path.display()
                    ),
                )
            })?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                output::stderr(&format!(
                    "value of {} (then Enter and Ctrl-D; it shows as you type — pipe it or use --from-file to avoid that):\n",
                    args.name
                ));
            }
            let limit =
                u64::try_from(hatoba_server::secrets::MAX_SECRET_BYTES + 2).unwrap_or(u64::MAX);
            stdin
                .lock()
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(|e| {
                    CliError::new(
                        Exit::BadInput,
                        format!("cannot read the secret's value from stdin: {e}"),
                    )
                })?;
        }
    }
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let mut b = e.into_bytes();
        b.fill(0);
        CliError::new(Exit::BadInput, "the secret's value is not UTF-8 text")
            .hint("a binary secret can be stored base64-encoded")
    })?;
    let value = SecretValue::new(text);
    if value.is_empty() {
        return Err(CliError::new(Exit::BadInput, "the secret's value is empty")
            .hint("give it on stdin (`printf %s \"$VALUE\" | hatoba secret set NAME`) or with --from-file"));
    }
    if value.len() > hatoba_server::secrets::MAX_SECRET_BYTES {
        return Err(CliError::new(
            Exit::BadInput,
            format!(
                "the secret's value is larger than {} bytes",
                hatoba_server::secrets::MAX_SECRET_BYTES
            ),
        ));
    }
    Ok(value)
}

async fn set(global: &Global, args: &SecretValueArgs, rotate: bool) -> anyhow::Result<Exit> {
    check_name(&args.name)?;
    check_env(global, args.env.as_deref())?;
    let value = read_value(args)?;
    let request = hatoba_api::SecretSetRequest {
        value: value.expose().to_owned(),
        environment: args.env.clone(),
        by: Some(crate::inspect_cmd::actor(args.actor.clone())),
        rotate,
    };
    drop(value);
    let mut body = serde_json::to_vec(&request)?;
    drop(request);
    let sent = call(
        global,
        hyper::Method::PUT,
        &format!("/api/v1/secrets/{}", args.name),
        Some(std::mem::take(&mut body)),
    )
    .await;
    body.fill(0);
    let change: hatoba_api::SecretChange = serde_json::from_slice(&sent?)?;
    match global.output {
        Output::Json => output::json(&change)?,
        Output::Text => {
            let mut text = format!(
                "stored {} version {} in `{}`\n",
                change.name,
                change.version.unwrap_or_default(),
                change.environment
            );
            for d in &change.deployments {
                text.push_str(&format!(
                    "  redeploying `{}` {} with it: deployment {} ({})\n",
                    d.service,
                    d.version,
                    d.id,
                    output::strategy(&d.strategy)
                ));
            }
            if !change.next_deploy.is_empty() {
                text.push_str(&format!(
                    "  takes effect at the next deployment of: {}{}\n",
                    change.next_deploy.join(", "),
                    if rotate {
                        ""
                    } else {
                        " (`hatoba secret rotate` redeploys them now)"
                    }
                ));
            }
            output::stdout(&text);
        }
    }
    Ok(Exit::Ok)
}

async fn list(global: &Global, env: Option<&str>) -> anyhow::Result<Exit> {
    check_env(global, env)?;
    let query = crate::server_cmd::env_query(env)?;
    let bytes = call(
        global,
        hyper::Method::GET,
        &format!("/api/v1/secrets{query}"),
        None,
    )
    .await?;
    let list: hatoba_api::SecretList = serde_json::from_slice(&bytes)?;
    match global.output {
        Output::Json => output::json(&list)?,
        Output::Text if list.secrets.is_empty() => output::stderr(&format!(
            "no secrets declared or stored in `{}`\n",
            list.environment
        )),
        Output::Text => {
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::NOTHING);
            table.set_header(["NAME", "VERSION", "VERSIONS", "SET AT", "BY", "USED BY"]);
            for s in &list.secrets {
                let newest = s.versions.last();
                let mut name = s.name.clone();
                if !s.declared {
                    name.push_str(" (not declared)");
                }
                table.add_row([
                    name,
                    newest.map_or_else(|| "not set".to_owned(), |v| v.version.to_string()),
                    s.versions.len().to_string(),
                    newest.map_or_else(String::new, |v| v.created_at.clone()),
                    newest.map_or_else(String::new, |v| v.created_by.clone()),
                    s.used_by.join(", "),
                ]);
            }
            output::stdout(&format!("{table}\n"));
        }
    }
    Ok(Exit::Ok)
}

async fn remove(global: &Global, name: &str, env: Option<&str>) -> anyhow::Result<Exit> {
    check_name(name)?;
    check_env(global, env)?;
    let body = serde_json::json!({ "by": crate::inspect_cmd::actor(None) });
    let bytes = call(
        global,
        hyper::Method::DELETE,
        &format!(
            "/api/v1/secrets/{name}{}",
            crate::server_cmd::env_query(env)?
        ),
        Some(serde_json::to_vec(&body)?),
    )
    .await?;
    let change: hatoba_api::SecretChange = serde_json::from_slice(&bytes)?;
    match global.output {
        Output::Json => output::json(&change)?,
        Output::Text => {
            let mut text = format!(
                "removed {} version(s) of {} in `{}`\n",
                change.removed.unwrap_or_default(),
                change.name,
                change.environment
            );
            if !change.next_deploy.is_empty() {
                text.push_str(&format!(
                    "  running instances keep their value; the next deployment of {} fails until it is set again\n",
                    change.next_deploy.join(", ")
                ));
            }
            output::stdout(&text);
        }
    }
    Ok(Exit::Ok)
}
