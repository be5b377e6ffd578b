//! `hatoba demo --docker`: the demo's phases with its instances as Docker
//! containers of the local engine.
//!
//! No registry is needed and nothing is pulled: the image is made here,
//! `FROM scratch` with this very binary and the shared libraries it needs
//! (as `ldd` lists them; none for a statically linked build), its
//! entrypoint `hatoba demo-app`, built through the Engine API like `hatoba
//! build` does. Every version runs that one image (versions differ by
//! their arguments and environment, as in the process demo). The image
//! and the containers (labelled with the demo's own scope) are removed
//! when the demo ends, however it ends.

use crate::exit::{CliError, Exit};
use hatoba_runtime_docker::{BuildSpec, DockerRuntime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The port the demo app listens on inside its container.
const APP_PORT: u16 = 8080;

/// The Dockerfile of the demo's image: the build context holds `rootfs/`
/// (the binary at `/hatoba`, each library at its own path).
const DOCKERFILE: &str = "FROM scratch
COPY rootfs/ /
# In a container the app listens beyond its own loopback, so that the port
# Hatoba publishes on the host's loopback reaches it.
ENV DEMO_HOST=0.0.0.0
USER 65534:65534
ENTRYPOINT [\"/hatoba\", \"demo-app\"]
";

/// The demo's image on the engine.
pub(crate) struct DemoImage {
    /// `hatoba-demo:<run>`.
    pub(crate) tag: String,
    /// How many shared libraries went in beside the binary.
    pub(crate) libraries: usize,
    /// How long the build took (the context's copy and the engine's build).
    pub(crate) took: Duration,
}

/// Connects the local Docker Engine for the demo's scope, or says that
/// none answers (exit 1, as `hatoba up` and `hatoba build` do).
pub(crate) async fn connect(scope: &Path) -> anyhow::Result<DockerRuntime> {
    let runtime = DockerRuntime::connect(scope.display().to_string())
        .await
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!(
                    "`hatoba demo --docker` runs the demo in Docker containers, but no Docker Engine answers: {}",
                    crate::server_cmd::chain(&e)
                ),
            )
            .hint(
                "start the engine (`systemctl start docker`) or point DOCKER_HOST at it; \
                 `hatoba demo` without --docker runs the same phases as local processes and needs nothing",
            )
        })?;
    Ok(runtime.with_labels(BTreeMap::from([
        ("app".to_owned(), "hatoba-demo".to_owned()),
        ("environment".to_owned(), "development".to_owned()),
    ])))
}

/// Builds the demo's image from `exe` in `dir/image`.
pub(crate) async fn build_image(
    docker: &DockerRuntime,
    dir: &Path,
    exe: &Path,
) -> anyhow::Result<DemoImage> {
    let started = Instant::now();
    let context = dir.join("image");
    let (ctx, bin) = (context.clone(), exe.to_path_buf());
    let (tar, libraries) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let libraries = libraries(&bin)?;
        let root = ctx.join("rootfs");
        copy_into(&root, &bin, Path::new("/hatoba"))?;
        for lib in &libraries {
            copy_into(&root, lib, lib)?;
        }
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
        let tar = hatoba_runtime_docker::context::context_tar(&ctx, "Dockerfile")?;
        Ok((tar, libraries.len()))
    })
    .await??;
    // A tag of this run only: the demo removes it when it ends, and
    // another demo running meanwhile has its own.
    let tag = format!("hatoba-demo:run-{}", std::process::id());
    let mut output = Vec::new();
    docker
        .build(
            tar,
            &BuildSpec {
                tag: tag.clone(),
                dockerfile: "Dockerfile".to_owned(),
                ..BuildSpec::default()
            },
            |line| output.push(line.to_owned()),
        )
        .await
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!(
                    "the demo's image `{tag}` was not built: {}\n{}",
                    crate::server_cmd::chain(&e),
                    output.join("\n")
                ),
            )
        })?;
    Ok(DemoImage {
        tag,
        libraries,
        took: started.elapsed(),
    })
}

/// The demo's service as containers of `image`: the demo app on
/// [`APP_PORT`], `${VERSION}` its label, `${ERROR_RATE}` and
/// `${READY_AFTER}` its knobs, as the process demo sets them.
pub(crate) fn service(image: &str) -> hatoba_spec::DockerRuntime {
    hatoba_spec::DockerRuntime {
        image: image.to_owned(),
        build: None,
        port: APP_PORT,
        command: None,
        args: Some(vec!["--version-label".to_owned(), "${VERSION}".to_owned()]),
        env: BTreeMap::from([
            ("DEMO_ERROR_RATE".to_owned(), "${ERROR_RATE:-0}".to_owned()),
            (
                "DEMO_READY_AFTER".to_owned(),
                "${READY_AFTER:-0s}".to_owned(),
            ),
        ]),
        user: None,
        memory: Some(128 * 1024 * 1024),
        cpus: None,
        read_only: true,
        volumes: Vec::new(),
        network: None,
        // The spec's default; every version runs the one image, removed
        // by the demo itself at the end.
        keep_images: 5,
    }
}

/// Removes the demo's image (its containers are gone by then).
pub(crate) async fn remove_image(docker: &DockerRuntime, tag: &str) -> anyhow::Result<()> {
    docker
        .client()
        .remove_image(
            tag,
            Some(bollard::query_parameters::RemoveImageOptions {
                force: true,
                ..Default::default()
            }),
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("could not remove the demo's image `{tag}`: {e}"))?;
    Ok(())
}

/// Copies `from` to `root` + `to` (an absolute path in the image).
fn copy_into(root: &Path, from: &Path, to: &Path) -> std::io::Result<()> {
    let dest = root.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, &dest).map(drop)
}

/// The shared libraries `exe` needs, as `ldd` lists them; none for a
/// statically linked binary.
fn libraries(exe: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!("cannot run `ldd` to find the libraries the demo's image needs: {e}"),
            )
            .hint("install it (Debian: `apt-get install libc-bin`), or use a statically linked hatoba")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if is_static(&text) || is_static(&errors) {
            return Ok(Vec::new());
        }
        return Err(CliError::new(
            Exit::Failed,
            format!("`ldd {}` failed: {}", exe.display(), errors.trim()),
        )
        .into());
    }
    Ok(if is_static(&text) {
        Vec::new()
    } else {
        parse_ldd(&text)
    })
}

fn is_static(text: &str) -> bool {
    text.contains("not a dynamic executable") || text.contains("statically linked")
}

/// The absolute paths of `ldd`'s output: `libc.so.6 => /lib/…/libc.so.6
/// (0x…)` and the loader's own `/lib64/ld-linux-x86-64.so.2 (0x…)`; the
/// kernel's `linux-vdso.so.1` has none.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd6a1f0000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f3c1a000000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3c19e00000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3c1a2b0000)
";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(is_static("\tnot a dynamic executable\n"));
        assert!(is_static("\tstatically linked\n"));
        assert!(!is_static(text));
    }

    #[test]
    fn the_service_runs_the_demo_app_with_the_demo_knobs() {
        let s = service("hatoba-demo:run-1");
        assert_eq!(s.port, APP_PORT);
        assert_eq!(
            s.args.as_deref(),
            Some(["--version-label".to_owned(), "${VERSION}".to_owned()].as_slice())
        );
        assert!(s.env.contains_key("DEMO_ERROR_RATE") && s.env.contains_key("DEMO_READY_AFTER"));
    }
}
