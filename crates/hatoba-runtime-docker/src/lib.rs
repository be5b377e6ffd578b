//! The Docker runtime: each instance is one container of the local Docker
//! Engine, made from an image already present (nothing is pulled: no
//! registry is assumed, even on one host).
//!
//! Over 800 lines, not yet split: the `Runtime` implementation (~400
//! lines) sits beside image builds, the followed output's line splitting
//! and the inspection helpers it shares with them. The next split is
//! `build.rs` (`DockerRuntime::build`, its stream and `built_here`) and
//! `inspect.rs` (state, health, ports and labels read from an inspect),
//! beside `context.rs` and `follow.rs`.
//!
//! It executes and observes, never decides (invariant 2): no restart
//! policy, no auto-remove, no HEALTHCHECK-driven action; the controller
//! probes and chooses. It must not touch a container it did not label with
//! its own scope.
//!
//! - **Start** creates and starts a container labelled `hatoba.scope`,
//!   `hatoba.service`, `hatoba.version`, `hatoba.instance` (plus the
//!   workload's own labels as `hatoba.<key>`: app, environment,
//!   deployment), named `<instance>-<scope hash>`; a container of that
//!   name made by someone else is never touched: another instance id is
//!   tried, three in all, then [`DockerError::NameClash`]. The app's port is
//!   published on `127.0.0.1` with the host port left to Docker and read
//!   back with an inspect: each instance gets its own loopback port, the
//!   proxy reaches it like a process instance, and nothing is exposed
//!   beyond the machine (a user-defined network would need the proxy inside
//!   Docker's network, which the process runtime's proxy is not). The
//!   container runs with Docker's init (`--init`) so that SIGTERM reaches an
//!   app that does not expect to be PID 1, and zombies are reaped.
//! - **The image**: `check` answers the id of the image a workload names
//!   (its pinned `image_id`, else its tag now), which the caller records;
//!   a workload with an `image_id` is made from that id, never from what
//!   the tag names by then, and a pinned id no longer present is
//!   [`DockerError::RecordedImageGone`]. `remove_images` removes images by
//!   id, unforced: the engine keeps one a container uses, or one another
//!   image is made from. `build` labels its image with the scope, the
//!   tag it was built as ([`IMAGE_LABEL`]), the service and the version;
//!   `built_images` lists the scope's images of a service by those labels
//!   (one still tagged as built, or no longer tagged at all), each with
//!   its build time and whether a container is made from it, for the
//!   deployer to prune those never deployed too.
//! - **An engine that does not answer** (refused, cut, timed out) is
//!   [`DockerError::Unreachable`]; a start or a stop that fails so is
//!   [`RuntimeError::Unreachable`], so the caller can wait (and try again)
//!   rather than blame the version.
//! - **Stop** sends SIGTERM, waits the grace period, sends SIGKILL, then
//!   removes the container (its exit is remembered by this runtime object).
//! - **Adoption** checks the recorded container id
//!   ([`InstanceStatus::identity`]) against the scope and instance labels:
//!   a container of the same name made anew has another id and is not
//!   adopted.
//! - **Sweep** ends and removes the scope's containers this object does not
//!   know and the caller does not keep.
//! - **Usage** comes from the one-shot stats API.
//! - **The image's HEALTHCHECK** verdict is shown in
//!   [`InstanceStatus::own_health`] (refreshed by `list`), never acted on.
//! - **Logs** are the container's output as Docker keeps it; the last
//!   lines are read just before a stopped container is removed, so why an
//!   instance ended stays readable from this runtime object.
//!   `follow_logs` reads the tail to its end, then follows from its last
//!   line's time on the engine's stream (`follow=true`): each line comes
//!   as written, stdout and stderr apart (a partial line waits for its end
//!   on its own stream), and the stream ends when the engine ends it (the
//!   container stopped or was removed); dropping it drops the request.
//!
//! Errors that call for a decision are [`DockerError`] variants, carried as
//! the source of the [`RuntimeError`] the trait returns.
//!
//! Secrets filled into the environment are visible to whoever may
//! `docker inspect` the container (as they are in `/proc/<pid>/environ` of
//! a process instance): the engine's socket is as sensitive as root.
//!
//! Its tests run the shared runtime story against the real engine with an
//! image `docker import`ed from the test binary and the shared libraries
//! `ldd` lists for it: no registry is reachable, a statically linked demo
//! app would be a full second build for another target on a small machine,
//! and busybox would be one more Debian package for CI.

pub mod context;
mod follow;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use hatoba_core::{Millis, ServiceName};
use hatoba_runtime::{
    BuiltImage, ContainerWorkload, InstanceId, InstanceSpec, InstanceState, InstanceStatus,
    LogLine, LogStream, Output, OwnHealth, Runtime, RuntimeError, Usage, Workload,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The label naming the controller scope a container belongs to.
pub const SCOPE_LABEL: &str = "hatoba.scope";
/// The label naming the service.
pub const SERVICE_LABEL: &str = "hatoba.service";
/// The label naming the version.
pub const VERSION_LABEL: &str = "hatoba.version";
/// The label naming the instance id.
pub const INSTANCE_LABEL: &str = "hatoba.instance";
/// The label an image built by [`DockerRuntime::build`] carries with the
/// tag it was built as: an image made `FROM` it inherits the scope and
/// service labels, but is tagged otherwise, and so is never taken for one
/// of ours.
pub const IMAGE_LABEL: &str = "hatoba.image";

/// How long the sweep lets an orphan end on SIGTERM before killing it.
const SWEEP_GRACE: Duration = Duration::from_secs(5);
/// How many lines of a container's output are kept when it is removed, so
/// that why it ended can still be read.
const KEPT_LINES: usize = 200;
/// How many names a start tries when a container of that name exists.
const NAME_ATTEMPTS: u32 = 3;
/// How long to wait for a killed container to be reported ended.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What went wrong with the Docker Engine, one variant per decision.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No Docker Engine answers: start it, or check `DOCKER_HOST`.
    #[error("the docker engine is unreachable (is dockerd running? DOCKER_HOST is honoured): {0}")]
    Unreachable(#[source] bollard::errors::Error),
    /// The image is not present locally, and nothing is pulled.
    #[error(
        "image `{image}` is not present on this docker engine (nothing is pulled): build it first, \
         with `hatoba build {service} --version {version}` (the service's `docker.build`), \
         or e.g. `docker build -t {image} .` or `docker import`"
    )]
    ImageMissing {
        /// The image as given.
        image: String,
        /// The service that runs it.
        service: String,
        /// The version it is the image of.
        version: String,
    },
    /// The image recorded for a version when it was deployed is no longer
    /// on the engine (removed by hand, or pruned): a rollback never runs
    /// whatever the tag names now instead.
    #[error(
        "image {id} (`{image}` when it was deployed) is no longer present on this docker engine, \
         and a rollback runs only the exact image recorded, never what the tag names now: \
         build the version anew under a new version name (`hatoba build {service} --version NEW`) \
         and deploy that"
    )]
    RecordedImageGone {
        /// The recorded id.
        id: String,
        /// The image as the spec names it.
        image: String,
        /// The service.
        service: String,
    },
    /// `docker build` failed: the Dockerfile's own error, after its output.
    #[error("the image build failed: {message}")]
    BuildFailed {
        /// What the engine said.
        message: String,
    },
    /// A container of that name already exists (made by someone else).
    #[error(
        "a container named `{name}` already exists, not made by this hatoba (and so did the other \
         names tried): remove the containers named like it (`docker ps -a --filter name=...`)"
    )]
    NameClash {
        /// The name.
        name: String,
    },
    /// The host port could not be bound.
    #[error("the host port for `{name}` could not be published: {message}")]
    PortClash {
        /// The container's name.
        name: String,
        /// What the engine said.
        message: String,
    },
    /// The container was made but its port was not published.
    #[error("container `{name}` publishes no host port for {port}/tcp")]
    NoPort {
        /// The container's name.
        name: String,
        /// The app's port inside.
        port: u16,
    },
    /// Any other refusal of the engine.
    #[error("the docker engine refused to {what}")]
    Api {
        /// What was asked.
        what: String,
        /// Its answer.
        #[source]
        source: bollard::errors::Error,
    },
}

impl DockerError {
    fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        let what = what.into();
        move |source| {
            if is_unreachable(&source) {
                DockerError::Unreachable(source)
            } else {
                DockerError::Api { what, source }
            }
        }
    }
}

fn is_unreachable(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::IOError { .. }
            | E::HyperResponseError { .. }
            // The connection pool's errors: refused, cut, closed early.
            | E::HyperLegacyError { .. }
            | E::SocketNotFoundError(_)
            | E::RequestTimeoutError
    )
}

fn status_code(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn io(e: DockerError) -> std::io::Error {
    std::io::Error::other(e)
}

/// One instance this runtime object started or adopted.
#[derive(Debug)]
struct Entry {
    status: InstanceStatus,
    /// The container's id (also in `status.identity`).
    container: String,
    /// The container no longer exists (removed, or never was ours).
    gone: bool,
    /// Registration order, so `list` shows instances in start order.
    seq: u64,
    /// Its last lines of output, read just before it was removed.
    last_output: Vec<String>,
}

#[derive(Debug, Default)]
struct Registry {
    entries: BTreeMap<InstanceId, Entry>,
    next: u64,
    /// The suffixes the next instance ids take before random ones (a test
    /// seam: [`DockerRuntime::with_id_suffixes`]).
    suffixes: std::collections::VecDeque<u16>,
}

/// What to build: the tag, the Dockerfile (relative to the context),
/// build arguments and the stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildSpec {
    /// `name:tag` given to the image.
    pub tag: String,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// `ARG` values.
    pub args: BTreeMap<String, String>,
    /// The stage of a multi-stage Dockerfile; the last when `None`.
    pub target: Option<String>,
    /// The service it is the image of ([`SERVICE_LABEL`]): what
    /// [`Runtime::built_images`] finds it by, to prune it once it is
    /// older than the versions the service keeps, deployed or not.
    pub service: Option<String>,
    /// The version it is built as ([`VERSION_LABEL`]).
    pub version: Option<String>,
}

/// The Docker runtime of one controller scope.
#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    scope: String,
    /// Labels every container of this runtime carries (app, environment),
    /// as `hatoba.<key>`, after the workload's own.
    labels: BTreeMap<String, String>,
    registry: Mutex<Registry>,
}

impl DockerRuntime {
    /// Connects to the local Docker Engine (`DOCKER_HOST` or the default
    /// socket), agrees on an API version and checks that it answers.
    pub async fn connect(scope: impl Into<String>) -> Result<DockerRuntime, DockerError> {
        let docker = Docker::connect_with_local_defaults().map_err(DockerError::Unreachable)?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(DockerError::Unreachable)?;
        docker.ping().await.map_err(DockerError::Unreachable)?;
        Ok(DockerRuntime {
            docker,
            scope: scope.into(),
            labels: BTreeMap::new(),
            registry: Mutex::new(Registry::default()),
        })
    }

    /// Adds labels every container it makes carries, as `hatoba.<key>`
    /// (`app`, `environment`): what `docker ps --filter` finds them by.
    #[must_use]
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> DockerRuntime {
        self.labels = labels;
        self
    }

    /// Its scope: containers carry it in [`SCOPE_LABEL`].
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The client, for callers that build images or clean up.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The id of a local image (`sha256:…`), or `None` when it is absent.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(DockerError::api(format!("inspect image `{image}`"))(e)),
        }
    }

    /// Builds an image from a context archive ([`context::context_tar`])
    /// and tags it `tag`, labelled with the scope ([`SCOPE_LABEL`]), the
    /// tag ([`IMAGE_LABEL`]) and the spec's service and version, passing
    /// each line of the build's output to
    /// `out` as it comes; returns the image's id. Nothing is pulled that
    /// is not already there: a `FROM` of a missing image fails the build.
    pub async fn build(
        &self,
        tar: Vec<u8>,
        build: &BuildSpec,
        mut out: impl FnMut(&str) + Send,
    ) -> Result<String, DockerError> {
        let mut labels = HashMap::from([
            (SCOPE_LABEL.to_owned(), self.scope.clone()),
            (IMAGE_LABEL.to_owned(), build.tag.clone()),
        ]);
        for (key, value) in [
            (SERVICE_LABEL, &build.service),
            (VERSION_LABEL, &build.version),
        ] {
            if let Some(v) = value {
                labels.insert(key.to_owned(), v.clone());
            }
        }
        let mut opts = bollard::query_parameters::BuildImageOptionsBuilder::default()
            .dockerfile(&build.dockerfile)
            .t(&build.tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .buildargs(&build.args.iter().collect::<HashMap<_, _>>());
        if let Some(t) = &build.target {
            opts = opts.target(t);
        }
        let mut stream =
            self.docker
                .build_image(opts.build(), None, Some(bollard::body_full(tar.into())));
        let mut partial = String::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(i) => i,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(DockerError::BuildFailed { message: error });
                }
                Err(e) if status_code(&e).is_some_and(|c| c < 500) => {
                    return Err(DockerError::BuildFailed {
                        message: e.to_string(),
                    });
                }
                Err(e) => return Err(DockerError::api(format!("build `{}`", build.tag))(e)),
            };
            if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                partial.push_str(text);
                while let Some(i) = partial.find('\n') {
                    out(partial[..i].trim_end_matches('\r'));
                    partial.drain(..=i);
                }
            }
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                if !partial.is_empty() {
                    out(&std::mem::take(&mut partial));
                }
                return Err(DockerError::BuildFailed { message: detail });
            }
        }
        if !partial.is_empty() {
            out(&partial);
        }
        self.image_id(&build.tag)
            .await?
            .ok_or_else(|| DockerError::BuildFailed {
                message: format!(
                    "the engine reported no image `{}` after the build",
                    build.tag
                ),
            })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn register(&self, status: InstanceStatus, container: String, gone: bool) -> InstanceStatus {
        self.with(|r| {
            let seq = r.next;
            r.next += 1;
            r.entries.insert(
                status.id.clone(),
                Entry {
                    status: status.clone(),
                    container,
                    gone,
                    seq,
                    last_output: Vec::new(),
                },
            );
        });
        status
    }

    /// A seam for tests: the next instance ids end in these suffixes (in
    /// order) instead of random ones, so a test can know a container's
    /// name before it is made. Production never calls it.
    #[doc(hidden)]
    #[must_use]
    pub fn with_id_suffixes(self, suffixes: impl IntoIterator<Item = u16>) -> DockerRuntime {
        self.with(|r| r.suffixes.extend(suffixes));
        self
    }

    /// The container name of an instance: its id and a hash of the scope,
    /// so that two scopes never clash.
    /// An instance's container, and the output kept of it once it is
    /// gone (`None` while it runs: read it from the engine).
    fn output_of(&self, id: &InstanceId) -> Result<(String, Option<Vec<String>>), RuntimeError> {
        self.with(|r| {
            r.entries
                .get(id)
                .map(|e| (e.container.clone(), e.gone.then(|| e.last_output.clone())))
        })
        .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })
    }

    pub fn container_name(&self, id: &InstanceId) -> String {
        format!("{id}-{:08x}", fnv1a(self.scope.as_bytes()))
    }

    fn fresh_id(&self, spec: &InstanceSpec) -> InstanceId {
        self.with(|r| {
            loop {
                let suffix = r.suffixes.pop_front().unwrap_or_else(rand::random::<u16>);
                let id = InstanceId(format!("{}-{}-{suffix:04x}", spec.service, spec.version));
                if !r.entries.contains_key(&id) {
                    return id;
                }
            }
        })
    }

    async fn inspect(
        &self,
        container: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => Ok(Some(i)),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(DockerError::api(format!("inspect container `{container}`"))(e)),
        }
    }

    async fn send_signal(&self, container: &str, signal: &str) -> Result<(), DockerError> {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(container, Some(opts)).await {
            // 404: gone; 409: not running. Both mean there is nothing to end.
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            r => r.map_err(DockerError::api(format!("send {signal} to `{container}`"))),
        }
    }

    /// Waits up to `limit` for the container to stop running; true if it did.
    async fn wait_ended(&self, container: &str, limit: Duration) -> bool {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(container, Some(opts));
        // The first item, Ok or an error carrying a non-zero exit code,
        // says it has ended (or is gone).
        tokio::time::timeout(limit, wait.next()).await.is_ok()
    }

    /// SIGTERM, `grace`, SIGKILL; then the final state, and the container
    /// removed.
    async fn end(
        &self,
        id: Option<&InstanceId>,
        container: &str,
        grace: Duration,
    ) -> Result<(InstanceState, bool), DockerError> {
        self.send_signal(container, "SIGTERM").await?;
        if !self.wait_ended(container, grace).await {
            self.send_signal(container, "SIGKILL").await?;
            self.wait_ended(container, KILL_WAIT).await;
        }
        let ended = match self.inspect(container).await? {
            Some(i) => state_of(&i),
            None => (gone_state(), false),
        };
        self.keep_output_and_remove(id, container).await?;
        Ok(ended)
    }

    /// The last `tail` lines of a container's output; empty when it is gone.
    async fn output(&self, container: &str, tail: usize) -> Result<Vec<String>, DockerError> {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(opts));
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => text.extend_from_slice(&c.into_bytes()),
                Err(e) if status_code(&e) == Some(404) => return Ok(Vec::new()),
                Err(e) => {
                    return Err(DockerError::api(format!(
                        "read the output of `{container}`"
                    ))(e));
                }
            }
        }
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// A running container's output with the engine's timestamps: the last
    /// `tail` lines, or every line after `after` (nanoseconds since 1970),
    /// and the time of the last line read (else `after`, else 0).
    async fn output_since(
        &self,
        container: &str,
        tail: usize,
        after: Option<u64>,
    ) -> Result<(Vec<String>, u64), DockerError> {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true);
        let opts = match after {
            // The engine's `since` is in whole seconds: the lines of that
            // second up to `after` are dropped below.
            Some(ns) => opts.since(i32::try_from(ns / 1_000_000_000).unwrap_or(i32::MAX)),
            // One line at least, for the time to read on from.
            None => opts.tail(&tail.max(1).to_string()),
        };
        let mut stream = self.docker.logs(container, Some(opts.build()));
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => text.extend_from_slice(&c.into_bytes()),
                Err(e) if status_code(&e) == Some(404) => break,
                Err(e) => {
                    return Err(DockerError::api(format!(
                        "read the output of `{container}`"
                    ))(e));
                }
            }
        }
        let mut cursor = after.unwrap_or(0);
        let mut lines = Vec::new();
        for line in String::from_utf8_lossy(&text).lines() {
            let (at, line) = stamped(line);
            if let Some(at) = at {
                if after.is_some_and(|a| at <= a) {
                    continue;
                }
                cursor = cursor.max(at);
            }
            lines.push(line.to_owned());
        }
        if after.is_none() {
            let skip = lines.len().saturating_sub(tail);
            lines.drain(..skip);
        }
        Ok((lines, cursor))
    }

    /// Keeps the container's last lines in its entry, then removes it.
    async fn keep_output_and_remove(
        &self,
        id: Option<&InstanceId>,
        container: &str,
    ) -> Result<(), DockerError> {
        if let Some(id) = id {
            let lines = self.output(container, KEPT_LINES).await.unwrap_or_default();
            self.with(|r| {
                if let Some(e) = r.entries.get_mut(id) {
                    e.last_output = lines;
                }
            });
        }
        self.remove(container).await
    }

    async fn remove(&self, container: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(container, Some(opts)).await {
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            r => r.map_err(DockerError::api(format!("remove container `{container}`"))),
        }
    }

    async fn create_and_start(
        &self,
        spec: &InstanceSpec,
        c: &ContainerWorkload,
        id: &InstanceId,
        now: Millis,
    ) -> Result<InstanceStatus, DockerError> {
        let name = self.container_name(id);
        let port_text = c.port.to_string();
        let fill = |s: &String| fill_placeholders(s, &port_text, &spec.secrets);
        let mut env: Vec<String> = spec
            .env
            .iter()
            .filter(|(k, _)| k.as_str() != "PORT")
            .map(|(k, v)| format!("{k}={}", fill(v)))
            .collect();
        env.push(format!("PORT={port_text}"));
        let mut labels = HashMap::from([
            (SCOPE_LABEL.to_owned(), self.scope.clone()),
            (SERVICE_LABEL.to_owned(), spec.service.to_string()),
            (VERSION_LABEL.to_owned(), spec.version.to_string()),
            (INSTANCE_LABEL.to_owned(), id.to_string()),
        ]);
        for (k, v) in c.labels.iter().chain(&self.labels) {
            labels
                .entry(format!("hatoba.{k}"))
                .or_insert_with(|| v.clone());
        }
        let port_key = format!("{}/tcp", c.port);
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    // Empty: Docker picks a free host port.
                    host_port: Some(String::new()),
                }]),
            )])),
            memory: c.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            // Swap equal to the limit: past it the container is OOM-killed
            // (and says so) rather than crawling through swap.
            memory_swap: c.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            nano_cpus: c
                .millicpus
                .and_then(|m| i64::try_from(m.saturating_mul(1_000_000)).ok()),
            readonly_rootfs: Some(c.read_only),
            init: Some(true),
            binds: (!c.binds.is_empty()).then(|| c.binds.clone()),
            network_mode: c.network.clone(),
            ..HostConfig::default()
        };
        let body = ContainerCreateBody {
            // The recorded id when there is one: a tag built again since
            // never changes what a version runs.
            image: Some(c.image_id.clone().unwrap_or_else(|| c.image.clone())),
            entrypoint: c.command.as_ref().map(|a| a.iter().map(fill).collect()),
            cmd: c.args.as_ref().map(|a| a.iter().map(fill).collect()),
            env: Some(env),
            user: c.user.clone(),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key.clone()]),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self.docker.create_container(Some(opts), body).await {
            Ok(c) => c,
            Err(e) if status_code(&e) == Some(404) => {
                if let Some(id) = &c.image_id {
                    return Err(DockerError::RecordedImageGone {
                        id: id.clone(),
                        image: c.image.clone(),
                        service: spec.service.to_string(),
                    });
                }
                return Err(DockerError::ImageMissing {
                    image: c.image.clone(),
                    service: spec.service.to_string(),
                    version: spec.version.to_string(),
                });
            }
            Err(e) if status_code(&e) == Some(409) => return Err(DockerError::NameClash { name }),
            Err(e) => return Err(DockerError::api(format!("create container `{name}`"))(e)),
        };
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            let message = e.to_string();
            return Err(
                if message.contains("port is already allocated")
                    || message.contains("address already in use")
                {
                    DockerError::PortClash { name, message }
                } else {
                    DockerError::api(format!("start container `{name}`"))(e)
                },
            );
        }
        let inspected = self.inspect(&created.id).await?;
        let (state, oom_killed) = inspected.as_ref().map_or((gone_state(), false), state_of);
        let host_port = inspected.as_ref().and_then(|i| host_port(i, &port_key));
        let addr = match (host_port, &state) {
            (Some(p), _) => SocketAddr::from(([127, 0, 0, 1], p)),
            // Ended before its port was published: there is nothing to reach.
            (None, InstanceState::Exited { .. }) => SocketAddr::from(([127, 0, 0, 1], 0)),
            (None, InstanceState::Running) => {
                let _ = self.end(None, &created.id, Duration::ZERO).await;
                return Err(DockerError::NoPort { name, port: c.port });
            }
        };
        Ok(InstanceStatus {
            id: id.clone(),
            service: spec.service.clone(),
            version: spec.version.clone(),
            addr,
            pid: None,
            proc_start: None,
            started_at: now,
            state,
            log: None,
            identity: Some(created.id),
            oom_killed,
            memory_limit: c.memory_bytes,
            own_health: inspected.as_ref().and_then(own_health),
        })
    }
}

/// Whether an image listed by the scope and service labels is one that
/// [`DockerRuntime::build`] made for them: labelled so, and still tagged
/// as it was built (or no longer tagged at all: built again since). An
/// image someone made `FROM` ours inherits our labels but carries its own
/// tag, and is not ours.
fn built_here(
    labels: &HashMap<String, String>,
    tags: &[String],
    scope: &str,
    service: &str,
) -> bool {
    let is = |key: &str, want: &str| labels.get(key).map(String::as_str) == Some(want);
    let Some(built_as) = labels.get(IMAGE_LABEL) else {
        return false;
    };
    let untagged = tags.iter().all(|t| t == "<none>:<none>");
    is(SCOPE_LABEL, scope) && is(SERVICE_LABEL, service) && (untagged || tags.contains(built_as))
}

/// The state of an instance whose container has gone without a trace.
/// The last `tail` of the lines kept of a container that is gone; none
/// when read on from a cursor (nothing new will come).
fn kept_lines(mut kept: Vec<String>, tail: usize, after: Option<u64>) -> Vec<String> {
    if after.is_some() {
        return Vec::new();
    }
    let skip = kept.len().saturating_sub(tail);
    kept.drain(..skip);
    kept
}

fn gone_state() -> InstanceState {
    InstanceState::Exited {
        code: None,
        signal: None,
    }
}

/// What the image's own HEALTHCHECK says, when it has one.
fn own_health(i: &ContainerInspectResponse) -> Option<OwnHealth> {
    use bollard::models::HealthStatusEnum as H;
    match i.state.as_ref()?.health.as_ref()?.status? {
        H::STARTING => Some(OwnHealth::Starting),
        H::HEALTHY => Some(OwnHealth::Healthy),
        H::UNHEALTHY => Some(OwnHealth::Unhealthy),
        H::NONE | H::EMPTY => None,
    }
}

/// Running or exited (with its code), and whether the OOM killer ended it.
fn state_of(i: &ContainerInspectResponse) -> (InstanceState, bool) {
    let Some(s) = &i.state else {
        return (gone_state(), false);
    };
    let oom = s.oom_killed.unwrap_or(false);
    if s.running.unwrap_or(false) || s.restarting.unwrap_or(false) || s.paused.unwrap_or(false) {
        return (InstanceState::Running, oom);
    }
    // Made but never started: no exit code to speak of (the engine says 0).
    if s.status == Some(bollard::models::ContainerStateStatusEnum::CREATED) {
        return (gone_state(), oom);
    }
    let code = s.exit_code.and_then(|c| i32::try_from(c).ok());
    (InstanceState::Exited { code, signal: None }, oom)
}

/// A line the engine gave with `timestamps`: its time in nanoseconds since
/// 1970 (`2026-12-06T15:55:34.123456789Z message`), and the line.
fn stamped(line: &str) -> (Option<u64>, &str) {
    let Some((stamp, rest)) = line.split_once(' ') else {
        return (None, line);
    };
    let at = (|| {
        let whole = hatoba_core::Millis::parse_rfc3339(&format!("{}Z", stamp.get(..19)?))?;
        let fraction = stamp.get(19..)?.strip_suffix('Z')?;
        let digits = fraction.strip_prefix('.').unwrap_or(fraction);
        if digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let nanos = if digits.is_empty() {
            0
        } else {
            digits.parse::<u64>().ok()? * 10u64.pow(9 - u32::try_from(digits.len()).ok()?)
        };
        Some(whole.0 / 1000 * 1_000_000_000 + nanos)
    })();
    match at {
        Some(at) => (Some(at), rest),
        None => (None, line),
    }
}

/// The container's memory limit, when it has one (the engine says 0 for
/// none).
fn memory_limit(i: &ContainerInspectResponse) -> Option<u64> {
    let m = i.host_config.as_ref()?.memory?;
    u64::try_from(m).ok().filter(|m| *m > 0)
}

fn host_port(i: &ContainerInspectResponse, key: &str) -> Option<u16> {
    i.network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(key)?
        .as_ref()?
        .iter()
        .filter_map(|b| b.host_port.as_deref()?.parse().ok())
        .next()
}

fn label<'a>(i: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    i.config
        .as_ref()?
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// `${PORT}` becomes the port, `${NAME}` of a secret its value; nothing
/// else is touched.
fn fill_placeholders(
    s: &str,
    port: &str,
    secrets: &BTreeMap<String, hatoba_core::SecretValue>,
) -> String {
    let mut out = s.replace("${PORT}", port);
    for (name, value) in secrets {
        out = out.replace(&format!("${{{name}}}"), value.expose());
    }
    out
}

/// FNV-1a, 32 bits: a short stable name for a scope.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn inspect_error(e: DockerError) -> RuntimeError {
    RuntimeError::Inspect {
        what: "the docker engine".to_owned(),
        source: io(e),
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(
        &self,
        spec: &InstanceSpec,
        now: Millis,
    ) -> Result<InstanceStatus, RuntimeError> {
        let Workload::Container(c) = &spec.workload else {
            return Err(RuntimeError::Unsupported {
                runtime: "docker",
                kind: spec.workload.kind(),
                service: spec.service.clone(),
            });
        };
        // A container of that name made by someone else is left alone:
        // another name is tried, a few times.
        let mut attempt = 0;
        let made = loop {
            let id = self.fresh_id(spec);
            match self.create_and_start(spec, c, &id, now).await {
                Err(DockerError::NameClash { .. }) if attempt < NAME_ATTEMPTS - 1 => {
                    attempt += 1;
                }
                other => break other,
            }
        };
        match made {
            Ok(status) => {
                let container = status.identity.clone().unwrap_or_default();
                Ok(self.register(status, container, false))
            }
            // Not the version's fault: the caller may wait for the engine.
            Err(e @ DockerError::Unreachable(_)) => Err(RuntimeError::Unreachable {
                runtime: "docker",
                source: io(e),
            }),
            Err(e) => Err(RuntimeError::Spawn {
                service: spec.service.clone(),
                program: c.image.clone(),
                resolved: None,
                source: io(e),
            }),
        }
    }

    async fn check(&self, spec: &InstanceSpec) -> Result<Option<String>, RuntimeError> {
        let Workload::Container(c) = &spec.workload else {
            return Err(RuntimeError::Unsupported {
                runtime: "docker",
                kind: spec.workload.kind(),
                service: spec.service.clone(),
            });
        };
        let spawn = |e: DockerError| RuntimeError::Spawn {
            service: spec.service.clone(),
            program: c.image.clone(),
            resolved: None,
            source: io(e),
        };
        if let Some(id) = &c.image_id {
            // The image recorded for this version: that one, never what the
            // tag names now.
            return match self.image_id(id).await.map_err(spawn)? {
                Some(found) => Ok(Some(found)),
                None => Err(spawn(DockerError::RecordedImageGone {
                    id: id.clone(),
                    image: c.image.clone(),
                    service: spec.service.to_string(),
                })),
            };
        }
        match self.image_id(&c.image).await.map_err(spawn)? {
            Some(id) => Ok(Some(id)),
            None => Err(spawn(DockerError::ImageMissing {
                image: c.image.clone(),
                service: spec.service.to_string(),
                version: spec.version.to_string(),
            })),
        }
    }

    async fn remove_images(&self, ids: &[String]) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        for id in ids {
            // Not forced: an image a container still uses (ours or anyone's)
            // is refused by the engine and kept.
            let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(false)
                .noprune(false)
                .build();
            match self.docker.remove_image(id, Some(opts), None).await {
                Ok(_) => removed.push(id.clone()),
                Err(e) if matches!(status_code(&e), Some(404 | 409)) => {}
                Err(e) => {
                    return Err(inspect_error(DockerError::api(format!(
                        "remove image `{id}`"
                    ))(e)));
                }
            }
        }
        Ok(removed)
    }

    async fn built_images(&self, service: &ServiceName) -> Result<Vec<BuiltImage>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{SCOPE_LABEL}={}", self.scope),
                format!("{SERVICE_LABEL}={service}"),
            ],
        )]);
        let opts = ListImagesOptionsBuilder::default()
            .all(false)
            .filters(&filters)
            .build();
        let images = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| inspect_error(DockerError::api("list the service's images")(e)))?;
        // What any container is made from, running or not, ours or not:
        // the engine would refuse to remove it; it is said so beforehand.
        let opts = ListContainersOptionsBuilder::default().all(true).build();
        let used: std::collections::BTreeSet<String> = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| inspect_error(DockerError::api("list the containers")(e)))?
            .into_iter()
            .filter_map(|c| c.image_id)
            .collect();
        Ok(images
            .into_iter()
            .filter(|i| built_here(&i.labels, &i.repo_tags, &self.scope, service.as_str()))
            .map(|i| BuiltImage {
                in_use: used.contains(&i.id),
                version: i.labels.get(VERSION_LABEL).cloned(),
                created: i.created,
                id: i.id,
            })
            .collect())
    }

    async fn signal(&self, id: &InstanceId, signal: &str) -> Result<(), RuntimeError> {
        let (container, gone) = self
            .with(|r| r.entries.get(id).map(|e| (e.container.clone(), e.gone)))
            .ok_or_else(|| RuntimeError::NotFound { id: id.clone() })?;
        if gone {
            return Ok(());
        }
        // Through Docker's init, which passes it on to the app.
        self.send_signal(&container, signal)
            .await
            .map_err(|e| RuntimeError::Stop {
                id: id.clone(),
                source: io(e),
            })
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<InstanceStatus, RuntimeError> {
        let Some((container, gone, status)) = self.with(|r| {
            r.entries
                .get(id)
                .map(|e| (e.container.clone(), e.gone, e.status.clone()))
        }) else {
            return Err(RuntimeError::NotFound { id: id.clone() });
        };
        if gone {
            return Ok(status);
        }
        let (state, oom) = self
            .end(Some(id), &container, grace)
            .await
            .map_err(|e| match e {
                // The caller may wait for the engine and stop it again.
                e @ DockerError::Unreachable(_) => RuntimeError::Unreachable {
                    runtime: "docker",
                    source: io(e),
                },
                e => RuntimeError::Stop {
                    id: id.clone(),
                    source: io(e),
                },
            })?;
        Ok(self.with(|r| match r.entries.get_mut(id) {
            Some(e) => {
                e.gone = true;
                e.status.state = state;
                e.status.oom_killed |= oom;
                e.status.clone()
            }
            None => status,
        }))
    }

    async fn list(&self, service: &ServiceName) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let known: Vec<(InstanceId, String)> = self.with(|r| {
            r.entries
                .iter()
                .filter(|(_, e)| &e.status.service == service && !e.gone)
                .map(|(id, e)| (id.clone(), e.container.clone()))
                .collect()
        });
        for (id, container) in known {
            let seen = self.inspect(&container).await.map_err(inspect_error)?;
            self.with(|r| {
                if let Some(e) = r.entries.get_mut(&id) {
                    match &seen {
                        Some(i) => {
                            let (state, oom) = state_of(i);
                            e.status.state = state;
                            e.status.oom_killed |= oom;
                            e.status.own_health = own_health(i);
                        }
                        None => {
                            e.gone = true;
                            if e.status.state == InstanceState::Running {
                                e.status.state = gone_state();
                            }
                        }
                    }
                }
            });
        }
        Ok(self.with(|r| {
            let mut all: Vec<&Entry> = r
                .entries
                .values()
                .filter(|e| &e.status.service == service)
                .collect();
            all.sort_by_key(|e| e.seq);
            all.into_iter().map(|e| e.status.clone()).collect()
        }))
    }

    async fn forget(&self, id: &InstanceId) {
        let exited = self.with(|r| {
            r.entries
                .get(id)
                .filter(|e| matches!(e.status.state, InstanceState::Exited { .. }))
                .map(|e| (e.container.clone(), e.gone))
        });
        if let Some((container, gone)) = exited {
            if !gone && self.keep_output_and_remove(None, &container).await.is_err() {
                return;
            }
            self.with(|r| r.entries.remove(id));
        }
    }

    async fn adopt(&self, known: &InstanceStatus) -> Result<InstanceStatus, RuntimeError> {
        if let Some(current) = self.with(|r| r.entries.get(&known.id).map(|e| e.status.clone())) {
            return Ok(current);
        }
        let refused = |status: InstanceStatus| {
            let mut status = status;
            status.state = gone_state();
            let container = status.identity.clone().unwrap_or_default();
            self.register(status, container, true)
        };
        let Some(container) = known.identity.clone() else {
            return Ok(refused(known.clone()));
        };
        let Some(i) = self.inspect(&container).await.map_err(inspect_error)? else {
            return Ok(refused(known.clone()));
        };
        let ours = label(&i, SCOPE_LABEL) == Some(self.scope.as_str())
            && label(&i, INSTANCE_LABEL) == Some(known.id.0.as_str())
            && i.id.as_deref() == Some(container.as_str());
        if !ours {
            return Ok(refused(known.clone()));
        }
        let (state, oom) = state_of(&i);
        let mut status = known.clone();
        status.state = state;
        status.oom_killed |= oom;
        status.memory_limit = memory_limit(&i);
        status.own_health = own_health(&i);
        Ok(self.register(status, container, false))
    }

    async fn sweep(&self, keep: &[InstanceId]) -> Result<Vec<InstanceId>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{SCOPE_LABEL}={}", self.scope)],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| inspect_error(DockerError::api("list the scope's containers")(e)))?;
        let mut swept = Vec::new();
        for c in found {
            let (Some(container), Some(labels)) = (c.id, c.labels) else {
                continue;
            };
            // Only the exact scope: the label filter matches it already,
            // checked again so a filter quirk never ends another's.
            if labels.get(SCOPE_LABEL) != Some(&self.scope) {
                continue;
            }
            let Some(instance) = labels.get(INSTANCE_LABEL).map(|i| InstanceId(i.clone())) else {
                continue;
            };
            if keep.contains(&instance) || self.with(|r| r.entries.contains_key(&instance)) {
                continue;
            }
            let running = self
                .inspect(&container)
                .await
                .map_err(inspect_error)?
                .is_some_and(|i| state_of(&i).0 == InstanceState::Running);
            self.end(None, &container, SWEEP_GRACE)
                .await
                .map_err(|e| RuntimeError::Stop {
                    id: instance.clone(),
                    source: io(e),
                })?;
            if running {
                swept.push(instance);
            }
        }
        swept.sort();
        Ok(swept)
    }

    async fn logs(
        &self,
        id: &InstanceId,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Option<Output>, RuntimeError> {
        let (container, kept) = self.output_of(id)?;
        if let Some(kept) = kept {
            // Nothing more will come: what was kept, once.
            let lines = kept_lines(kept, tail, after);
            return Ok(Some(Output {
                lines,
                cursor: None,
            }));
        }
        let (lines, cursor) = self
            .output_since(&container, tail, after)
            .await
            .map_err(inspect_error)?;
        Ok(Some(Output {
            lines,
            cursor: Some(cursor),
        }))
    }

    async fn follow_logs(
        &self,
        id: &InstanceId,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Option<LogStream>, RuntimeError> {
        let (container, kept) = self.output_of(id)?;
        if let Some(kept) = kept {
            // Nothing more will come: what was kept, as `logs` gives it.
            let lines = kept_lines(kept, tail, after).into_iter().map(|line| {
                Ok(LogLine {
                    line,
                    stderr: false,
                    cursor: None,
                })
            });
            return Ok(Some(Box::pin(futures_util::stream::iter(lines))));
        }
        // The tail first, read to its end: its last line's time is where
        // the follow begins, so a line written after this call is given
        // however late the engine gets the follow's request (and a line
        // already given is not given twice).
        let (past, from) = match after {
            Some(from) => (Vec::new(), from),
            None => {
                let opts = LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .timestamps(true)
                    // One line at least, for the time to follow from.
                    .tail(&tail.max(1).to_string())
                    .build();
                let engine = Box::pin(self.docker.logs(&container, Some(opts)));
                let mut past = follow::follow(engine, container.clone(), None)
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<Vec<LogLine>, RuntimeError>>()?;
                // Nothing written yet: from the start.
                let from = past.iter().filter_map(|l| l.cursor).max().unwrap_or(0);
                let skip = past.len().saturating_sub(tail);
                past.drain(..skip);
                (past, from)
            }
        };
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            // Whole seconds, as in `output_since`: the lines of that second
            // up to `from` are dropped as they come.
            .since(i32::try_from(from / 1_000_000_000).unwrap_or(i32::MAX))
            .build();
        let engine = Box::pin(self.docker.logs(&container, Some(opts)));
        let rest = follow::follow(engine, container, Some(from));
        Ok(Some(Box::pin(
            futures_util::stream::iter(past.into_iter().map(Ok)).chain(rest),
        )))
    }

    async fn usage(&self, id: &InstanceId) -> Option<Usage> {
        let container = self.with(|r| {
            r.entries
                .get(id)
                .filter(|e| !e.gone && e.status.state == InstanceState::Running)
                .map(|e| e.container.clone())
        })?;
        let opts = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self
            .docker
            .stats(&container, Some(opts))
            .next()
            .await?
            .ok()?;
        let rss_bytes = stats.memory_stats.as_ref()?.usage?;
        if rss_bytes == 0 {
            // An ended container reports empty stats.
            return None;
        }
        let cpu_ns = stats
            .cpu_stats
            .as_ref()
            .and_then(|c| c.cpu_usage.as_ref()?.total_usage)
            .unwrap_or(0);
        #[allow(clippy::cast_precision_loss)] // nanoseconds to seconds
        let cpu_seconds = cpu_ns as f64 / 1e9;
        Some(Usage {
            rss_bytes,
            cpu_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_port_and_secrets_only() {
        let secrets = BTreeMap::from([(
            "TOKEN".to_owned(),
            hatoba_core::SecretValue::new("s3".to_owned()),
        )]);
        assert_eq!(
            fill_placeholders("${PORT}:${TOKEN}:${OTHER}", "8080", &secrets),
            "8080:s3:${OTHER}"
        );
    }

    #[test]
    fn a_stamped_line_gives_its_time_in_nanoseconds() {
        assert_eq!(
            stamped("1970-01-01T00:00:02.000000123Z hello there"),
            (Some(2_000_000_123), "hello there")
        );
        assert_eq!(
            stamped("1970-01-01T00:00:01.5Z x"),
            (Some(1_500_000_000), "x")
        );
        assert_eq!(stamped("1970-01-01T00:00:01Z "), (Some(1_000_000_000), ""));
        assert_eq!(stamped("no stamp here"), (None, "no stamp here"));
        assert_eq!(stamped("plain"), (None, "plain"));
    }

    #[test]
    fn a_build_is_ours_only_with_our_labels_and_tagged_as_built_or_not_at_all() {
        let labels = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let ours = labels(&[
            (SCOPE_LABEL, "/srv/state"),
            (SERVICE_LABEL, "web"),
            (IMAGE_LABEL, "shop/web:v1"),
        ]);
        let tags = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(built_here(
            &ours,
            &tags(&["shop/web:v1"]),
            "/srv/state",
            "web"
        ));
        // Also tagged otherwise: still the build (its removal is refused
        // by the engine while another tag names it, never forced).
        assert!(built_here(
            &ours,
            &tags(&["shop/web:v1", "x:1"]),
            "/srv/state",
            "web"
        ));
        // Built again under the tag: the old one is untagged, still ours.
        assert!(built_here(
            &ours,
            &tags(&["<none>:<none>"]),
            "/srv/state",
            "web"
        ));
        assert!(built_here(&ours, &[], "/srv/state", "web"));
        // A user's image made FROM ours: our labels, its own tag.
        assert!(!built_here(&ours, &tags(&["mine:1"]), "/srv/state", "web"));
        // Another scope or service, or no tag label (not built by us).
        assert!(!built_here(
            &ours,
            &tags(&["shop/web:v1"]),
            "/srv/other",
            "web"
        ));
        assert!(!built_here(
            &ours,
            &tags(&["shop/web:v1"]),
            "/srv/state",
            "api"
        ));
        let mut unlabelled = ours.clone();
        unlabelled.remove(IMAGE_LABEL);
        assert!(!built_here(
            &unlabelled,
            &tags(&["shop/web:v1"]),
            "/srv/state",
            "web"
        ));
    }

    #[test]
    fn scope_hash_is_stable_and_tells_scopes_apart() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_ne!(fnv1a(b"/var/a"), fnv1a(b"/var/b"));
    }

    fn inspected(state: bollard::models::ContainerState) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(state),
            ..ContainerInspectResponse::default()
        }
    }

    #[test]
    fn the_engines_state_becomes_the_instance_state() {
        use bollard::models::{ContainerState, Health, HealthStatusEnum};
        let running = inspected(ContainerState {
            running: Some(true),
            health: Some(Health {
                status: Some(HealthStatusEnum::UNHEALTHY),
                ..Health::default()
            }),
            ..ContainerState::default()
        });
        assert_eq!(state_of(&running), (InstanceState::Running, false));
        assert_eq!(own_health(&running), Some(OwnHealth::Unhealthy));
        let oom = inspected(ContainerState {
            running: Some(false),
            exit_code: Some(137),
            oom_killed: Some(true),
            ..ContainerState::default()
        });
        assert_eq!(
            state_of(&oom),
            (
                InstanceState::Exited {
                    code: Some(137),
                    signal: None
                },
                true
            )
        );
        assert_eq!(own_health(&oom), None);
        // Made but never started (a controller died in between): not
        // running, so it is replaced, and swept.
        let created = inspected(ContainerState {
            status: Some(bollard::models::ContainerStateStatusEnum::CREATED),
            running: Some(false),
            exit_code: Some(0),
            ..ContainerState::default()
        });
        assert_eq!(state_of(&created), (gone_state(), false));
    }

    #[test]
    fn image_missing_says_how_to_build_it() {
        let e = DockerError::ImageMissing {
            image: "shop/web:v2".to_owned(),
            service: "web".to_owned(),
            version: "v2".to_owned(),
        };
        assert!(e.to_string().contains("docker build -t shop/web:v2"), "{e}");
        assert!(
            e.to_string().contains("hatoba build web --version v2"),
            "{e}"
        );
    }
}
