//! The `hatoba` binary: parses the command line, runs one command, prints
//! its result and exits with a documented code. The only crate that writes
//! to stdout and stderr.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod backup_cmd;
mod build_cmd;
mod cli;
mod client;
mod dataplane_cmd;
mod demo;
mod demo_docker;
mod events_cmd;
mod exit;
mod history;
mod http;
mod inspect_cmd;
mod output;
mod proxy_cmd;
mod reload_cmd;
mod secret_cmd;
mod server_cmd;
mod spec_file;
mod state;
mod state_dir;
mod validate;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use exit::Exit;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version are successes; usage mistakes exit 2.
            let e = without_value_tip(e);
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::BadInput.code()
            } else {
                Exit::Ok.code()
            });
        }
    };
    let output = cli.global.output;
    match run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            let exit = exit::exit_code(&err);
            output::error(output, &err, exit);
            ExitCode::from(exit.code())
        }
    }
}

/// Clap's error for an unknown flag, without its tip "to pass '--bogus' as
/// a value, use '-- --bogus'": no argument of ours takes a value starting
/// with `-` (a service, version or environment name cannot), so the tip
/// only misleads; the usage line and `--help` say what the command takes.
/// Its other tips ("a similar argument exists: '--version'") stay.
fn without_value_tip(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    if let Some(ContextValue::StyledStrs(tips)) = e.remove(ContextKind::Suggested) {
        let kept: Vec<_> = tips
            .into_iter()
            .filter(|t| !t.to_string().starts_with("to pass "))
            .collect();
        if !kept.is_empty() {
            e.insert(ContextKind::Suggested, ContextValue::StyledStrs(kept));
        }
    }
    e
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    let g = cli.global;
    match cli.command {
        Command::Validate(f) => validate::run(&f.file, g.output),
        Command::Schema => {
            output::stdout(&hatoba_spec::json_schema());
            Ok(Exit::Ok)
        }
        Command::Openapi => {
            output::stdout(&hatoba_server::http::openapi::json());
            Ok(Exit::Ok)
        }
        Command::Proxy { routes } => proxy_cmd::run(&routes),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "hatoba", &mut buf);
            output::stdout(&String::from_utf8_lossy(&buf));
            Ok(Exit::Ok)
        }
        Command::History(args) => runtime()?.block_on(history::history(&g, &args)),
        Command::Status(args) => runtime()?.block_on(history::status(&g, &args)),
        Command::Up(args) => runtime()?.block_on(server_cmd::up(&g, &args)),
        Command::Build(args) => runtime()?.block_on(build_cmd::build(&g, &args)),
        Command::Deploy(args) => runtime()?.block_on(server_cmd::deploy(&g, &args)),
        Command::Promote { service, full, env } => runtime()?.block_on(server_cmd::operate(
            &g,
            &service,
            if full { "promote-full" } else { "promote" },
            env.as_deref(),
        )),
        Command::Abort { service, env } => {
            runtime()?.block_on(server_cmd::operate(&g, &service, "abort", env.as_deref()))
        }
        Command::Rollback {
            service,
            to,
            env,
            wait,
        } => runtime()?.block_on(server_cmd::rollback(
            &g,
            &service,
            to,
            env.as_deref(),
            wait.unwrap_or(cli::WaitUntil::Serving),
        )),
        Command::Reload => runtime()?.block_on(reload_cmd::reload(&g)),
        Command::Watch { service, env } => {
            runtime()?.block_on(server_cmd::watch(&g, &service, env.as_deref()))
        }
        Command::Approve { deployment, actor } => {
            runtime()?.block_on(inspect_cmd::approve(&g, &deployment, actor))
        }
        Command::Logs {
            service,
            follow,
            lines,
            env,
        } => runtime()?.block_on(inspect_cmd::logs(
            &g,
            &service,
            follow,
            lines,
            env.as_deref(),
        )),
        Command::Analysis { deployment } => runtime()?.block_on(history::analysis(&g, &deployment)),
        Command::Events(args) => runtime()?.block_on(events_cmd::events(&g, &args)),
        Command::Secret(c) => runtime()?.block_on(secret_cmd::run(&g, c)),
        Command::Diagnose { service, env } => {
            runtime()?.block_on(inspect_cmd::diagnose(&g, &service, env.as_deref()))
        }
        Command::Dataplane { metrics } => dataplane_cmd::run(&g.state_dir, metrics),
        Command::Backup(args) => runtime()?.block_on(backup_cmd::backup(&g, &args)),
        Command::Restore(args) => runtime()?.block_on(backup_cmd::restore(&g, &args)),
        Command::Demo { quick, docker } => runtime()?.block_on(demo::run(quick, docker)),
        Command::DemoApp { version_label } => demo::serve_demo_app(version_label),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cli::Output;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn output_flag_is_global() {
        let cli = Cli::try_parse_from(["hatoba", "validate", "--output", "json"]).unwrap();
        assert_eq!(cli.global.output, Output::Json);
    }
}
