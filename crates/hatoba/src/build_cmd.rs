//! `hatoba build SERVICE --version V`: makes a Docker service's image on
//! the local Docker Engine from the spec's `docker.build`, with no registry:
//! the context directory goes to the engine as a tar (its `.dockerignore`
//! respected), the build's output is streamed to stderr as it comes, the
//! image is tagged `docker.image` with `${VERSION}` = V, and its id is
//! printed on stdout. Also the one place `hatoba up` connects the engine.

use crate::cli::{BuildArgs, Global, Output};
use crate::exit::{CliError, Exit};
use crate::output;
use hatoba_core::EnvName;
use std::collections::BTreeMap;
use std::path::Path;

/// Connects the Docker Engine for a controller of `state`, or says that
/// none answers (exit 1, as the API's `unavailable`).
pub(crate) async fn connect(
    state: &Path,
    service: &str,
) -> anyhow::Result<hatoba_runtime_docker::DockerRuntime> {
    let scope = std::path::absolute(state)?.display().to_string();
    hatoba_runtime_docker::DockerRuntime::connect(scope)
        .await
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!(
                    "service `{service}` runs in Docker, but no Docker Engine answers: {}",
                    crate::server_cmd::chain(&e)
                ),
            )
            .hint("start the engine (`systemctl start docker`) or point DOCKER_HOST at it; a service with `process:` needs none")
            .into()
        })
}

/// `--set NAME=VALUE` pairs.
fn parse_sets(sets: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut vars = BTreeMap::new();
    for kv in sets {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CliError::new(
                Exit::BadInput,
                format!("`--set {kv}`: expected NAME=VALUE"),
            ));
        };
        vars.insert(k.to_owned(), v.to_owned());
    }
    Ok(vars)
}

pub(crate) async fn build(global: &Global, args: &BuildArgs) -> anyhow::Result<Exit> {
    let file = &args.file.file;
    let bytes = crate::spec_file::read(file)?;
    let parsed = hatoba_spec::parse_bytes(&bytes);
    let shown = file.display().to_string();
    let Some(spec) = parsed.spec else {
        output::stderr(&hatoba_spec::render(
            &shown,
            &String::from_utf8_lossy(&bytes),
            &parsed.diagnostics,
        ));
        return Err(CliError::new(Exit::BadInput, format!("`{shown}` is not a valid spec")).into());
    };
    let env: EnvName = args
        .env
        .parse()
        .map_err(|e: hatoba_core::NameError| CliError::new(Exit::BadInput, e.to_string()))?;
    let version: hatoba_core::Version = args
        .version
        .parse()
        .map_err(|e: hatoba_core::NameError| CliError::new(Exit::BadInput, e.to_string()))?;
    let services = spec
        .environments
        .get(&env)
        .map_or(&spec.services, |e| &e.services);
    let svc = args
        .service
        .parse::<hatoba_core::ServiceName>()
        .ok()
        .and_then(|n| services.get(&n))
        .ok_or_else(|| {
            CliError::new(
                Exit::NotFound,
                format!("no service `{}` in `{shown}`", args.service),
            )
        })?;
    let hatoba_spec::Runtime::Docker(docker) = &svc.runtime else {
        return Err(CliError::new(
            Exit::BadInput,
            format!(
                "service `{}` runs as a process, there is no image to build",
                args.service
            ),
        )
        .hint("give the service `docker: {image: ..., build: {}}` to run it in a container")
        .into());
    };
    let Some(b) = &docker.build else {
        return Err(CliError::new(
            Exit::BadInput,
            format!(
                "service `{}` has no `docker.build`: hatoba does not know how to make its image",
                args.service
            ),
        )
        .hint("add `build: {}` (the spec's directory, its Dockerfile) or `build: {context: ./app, dockerfile: Dockerfile}`")
        .into());
    };
    // `${VERSION}` is the version; other names from --set, then the
    // environment's variables, then this process's environment.
    let mut vars = spec
        .environments
        .get(&env)
        .map(|e| e.variables.clone())
        .unwrap_or_default();
    vars.extend(parse_sets(&args.set)?);
    let lookup = |name: &str| -> Option<String> {
        if name == "VERSION" {
            return Some(version.to_string());
        }
        vars.get(name).cloned().or_else(|| std::env::var(name).ok())
    };
    let interpolate = |what: &str, text: &str| {
        hatoba_spec::interpolate(text, lookup).map_err(|e| {
            CliError::new(Exit::BadInput, format!("{what}: {e}"))
                .hint("give the value with `--set NAME=VALUE`")
        })
    };
    let tag = interpolate("docker.image", &docker.image)?;
    let mut build_args = BTreeMap::new();
    for (k, v) in &b.args {
        build_args.insert(
            k.clone(),
            interpolate(&format!("docker.build.args.{k}"), v)?,
        );
    }
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let context = base.join(&b.context);
    if !context.join(&b.dockerfile).is_file() {
        return Err(CliError::new(
            Exit::BadInput,
            format!(
                "no Dockerfile at `{}` (the service's `docker.build`: context `{}`, dockerfile `{}`)",
                context.join(&b.dockerfile).display(),
                b.context,
                b.dockerfile
            ),
        )
        .into());
    }
    let tar = {
        let (dir, dockerfile) = (context.clone(), b.dockerfile.clone());
        tokio::task::spawn_blocking(move || {
            hatoba_runtime_docker::context::context_tar(&dir, &dockerfile)
        })
        .await?
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!("cannot read the build context `{}`: {e}", context.display()),
            )
        })?
    };
    let docker = connect(&global.state_dir, &args.service).await?;
    output::stderr(&format!(
        "building `{tag}` from `{}` ({} KiB of context)\n",
        context.display(),
        tar.len() / 1024
    ));
    let spec = hatoba_runtime_docker::BuildSpec {
        tag: tag.clone(),
        dockerfile: b.dockerfile.clone(),
        args: build_args,
        target: b.target.clone(),
        // Labelled so: pruned with the service's images once older than
        // its newest `keepImages` builds, even if never deployed.
        service: Some(args.service.clone()),
        version: Some(version.to_string()),
    };
    let quiet = matches!(global.output, Output::Json);
    let id = docker
        .build(tar, &spec, |line| {
            if !quiet {
                output::stderr(&format!("  {line}\n"));
            }
        })
        .await
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!(
                    "the image `{tag}` was not built: {}",
                    crate::server_cmd::chain(&e)
                ),
            )
            .hint("the Dockerfile's output above says which step failed")
        })?;
    if quiet {
        output::json(&serde_json::json!({"image": tag, "id": id}))?;
    } else {
        output::stderr(&format!(
            "built `{tag}`: deploy it with `hatoba deploy {} --version {version}`\n",
            args.service
        ));
        output::stdout(&format!("{id}\n"));
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_need_a_name_and_a_value() {
        let ok = parse_sets(&["A=1".to_owned(), "B=x=y".to_owned()]).unwrap();
        assert_eq!(ok["A"], "1");
        assert_eq!(ok["B"], "x=y");
        let bad = parse_sets(&["A".to_owned()]).unwrap_err();
        assert_eq!(bad.exit, Exit::BadInput);
    }
}
