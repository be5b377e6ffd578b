//! Where `hatoba up` connects the local Docker Engine, only when a service
//! runs in Docker (`docker:`).

use crate::exit::{CliError, Exit};
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
