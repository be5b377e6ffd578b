//! The typed spec: what `hatoba.yaml` means once it has been read and checked.
//!
//! These types are the file format's single definition. The decoder in
//! `decode_spec.rs` builds them; `hatoba schema` derives the JSON Schema from
//! them (the doc comments become the schema's descriptions), so the two can
//! not drift. They are not `Serialize`: nothing else writes this format.
//!
//! Over 800 lines, not yet split: the file format's types are in one file
//! so the whole format reads top to bottom, in the order `hatoba.yaml` is
//! written. The next split is by section: strategies (rolling, blue-green,
//! canary, steps) and analysis (templates, metrics, providers) into modules
//! of their own, re-exported here.

use crate::condition::Condition;
use crate::schema::{
    ConditionText, DurationText, ListenText, MemoryText, NameText, VariableNameText, VersionedText,
    VolumeText, WeightNumber,
};
use hatoba_core::{EnvName, ServiceName, Weight};
use schemars::JsonSchema;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A whole `hatoba.yaml`.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "hatoba.yaml")]
pub struct Spec {
    /// The application's name, shown in the dashboard and notifications.
    pub app: String,
    /// The services of the application, by name (lowercase letters, digits, `-`).
    #[schemars(with = "BTreeMap<NameText, Service>")]
    pub services: BTreeMap<ServiceName, Service>,
    /// Environments (development, staging, production or any names), each with
    /// overrides of service fields. A service deployed to an environment uses
    /// the merged result, available in `Environment::services`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<NameText, Environment>")]
    pub environments: BTreeMap<EnvName, Environment>,
    /// Analysis templates referenced by canary steps.
    #[serde(default)]
    pub analysis: Analysis,
    /// Names of secrets: variables whose values are never written in the
    /// spec, given to `--set` or kept in plain text. `hatoba secret set NAME`
    /// stores a value encrypted, per environment; a service uses it as
    /// `${NAME}` in `env` (or `args`, which other local users can read in
    /// `ps`), and it reaches the instance's environment only. An
    /// environment may declare more under its own `secrets`.
    #[serde(default)]
    #[schemars(with = "Vec<VariableNameText>")]
    pub secrets: Vec<String>,
    /// How long what old versions leave behind is kept: their traffic
    /// metrics in the data plane, their instances' logs.
    #[serde(default)]
    pub retention: Retention,
}

/// How long what old versions leave behind is kept.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// How long the data plane keeps the traffic metrics (`/metrics`, the
    /// windows analysis reads) of a version that no route table has any
    /// more, counted from when it left the last one. Default `1h`.
    #[serde(default)]
    #[schemars(with = "DurationText", extend("default" = "1h"))]
    pub metrics: Duration,
    /// How many versions of each service keep the logs of their stopped
    /// instances; older versions' logs are deleted when an instance stops.
    /// A running instance's log is never deleted. Default 5 (at least 1).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000), extend("default" = 5))]
    pub log_versions: u32,
}

impl Retention {
    /// The default metrics retention: one hour.
    pub const METRICS: Duration = Duration::from_secs(3600);
    /// The default number of versions whose logs are kept: 5.
    pub const LOG_VERSIONS: u32 = 5;
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            metrics: Retention::METRICS,
            log_versions: Retention::LOG_VERSIONS,
        }
    }
}

impl Spec {
    /// The secrets declared for an environment: the top-level ones and the
    /// environment's own (an undeclared environment has the top-level ones).
    pub fn secret_names(&self, environment: &EnvName) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> = self.secrets.iter().cloned().collect();
        if let Some(e) = self.environments.get(environment) {
            names.extend(e.secrets.iter().cloned());
        }
        names
    }
}

/// How to run one service and how to roll out a new version of it.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// What runs: a local process or a Docker container (exactly one).
    #[serde(flatten)]
    pub runtime: Runtime,
    /// How many instances serve the stable version. Default 1.
    #[serde(default)]
    pub replicas: u32,
    /// The public address the proxy listens on for this service.
    pub route: Route,
    /// Readiness and liveness probes.
    #[serde(default)]
    pub health: Health,
    /// How long a new version may take to become ready before the deployment
    /// is rolled back. Default `10m`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub progress_deadline: Duration,
    /// How long an instance has between SIGTERM and SIGKILL. Default `30s`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub termination_grace_period: Duration,
    /// Pre-stop drain: after an instance is taken out of the proxy, how long
    /// to wait at most for its in-flight requests and long-lived connections
    /// (WebSockets, event streams) before stopping it. Default `30s`.
    /// Either a duration (`drain: 30s`) or `{timeout: 30s, notify: ...}`,
    /// where `notify` tells the instance it left the route so it can ask
    /// its clients to reconnect (they land on the new version):
    /// `notify: {path: /drain}` sends `POST /drain` to the instance,
    /// `notify: {signal: SIGUSR1}` sends it a signal.
    #[serde(default)]
    #[schemars(with = "crate::schema::DrainText")]
    pub drain: Duration,
    /// The drain's `notify`, if any (written inside `drain`).
    #[schemars(skip)]
    pub drain_notify: Option<DrainNotify>,
    /// Watch after promotion: once a new version has 100 % of the traffic,
    /// the previous one stays warm this long while health and background
    /// analysis keep being checked; a regression moves traffic back at once.
    /// Only then is the previous version stopped. Canary and blue-green
    /// (rolling replaces instances one by one and keeps none warm).
    /// Default `0s`: no watch.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub watch: Duration,
    /// How a new version replaces the old one. Default `rolling: {}`.
    #[serde(default)]
    pub strategy: Strategy,
}

/// What runs. Strings may use `${VERSION}`, `${NAME}` and `${NAME:-default}`.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(
    clippy::large_enum_variant,
    reason = "one per service, read once from the file: a box would only add noise to every match"
)]
pub enum Runtime {
    /// A local process. Each instance gets a free port in `PORT`.
    Process(ProcessRuntime),
    /// A Docker container from a locally built image.
    Docker(DockerRuntime),
}

/// A local process.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessRuntime {
    /// The program to run (a path, or a name looked up in `PATH`).
    #[schemars(with = "VersionedText")]
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    #[schemars(with = "Vec<VersionedText>")]
    pub args: Vec<String>,
    /// Environment variables, added to `PORT`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, VersionedText>")]
    pub env: BTreeMap<String, String>,
    /// The working directory, relative to the spec file. Default: the spec's directory.
    #[serde(default)]
    #[schemars(with = "Option<VersionedText>")]
    pub working_dir: Option<String>,
}

/// A Docker container, one per instance, made from an image on the local
/// Docker Engine (nothing is pulled: `hatoba build` makes it from `build`).
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerRuntime {
    /// The image, usually with `${VERSION}` in its tag: `shop/web:${VERSION}`.
    #[schemars(with = "VersionedText")]
    pub image: String,
    /// How `hatoba build SERVICE --version V` makes the image (tagged
    /// `image` with `${VERSION}` = V). Without it, the image must be made
    /// some other way (`docker build`, `docker import`).
    #[serde(default)]
    pub build: Option<DockerBuild>,
    /// The port the application listens on inside the container; `PORT` is
    /// set to it, and it is published on a loopback port of the host for
    /// the proxy. Default 8080.
    #[serde(default)]
    pub port: u16,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    #[schemars(with = "Option<Vec<VersionedText>>")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's command (the arguments after the entrypoint);
    /// `${PORT}` is the port inside the container.
    #[serde(default)]
    #[schemars(with = "Option<Vec<VersionedText>>")]
    pub args: Option<Vec<String>>,
    /// Environment variables, added to `PORT`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, VersionedText>")]
    pub env: BTreeMap<String, String>,
    /// `user` or `user:group` (names or numbers) inside the container.
    /// Default: the image's.
    #[serde(default)]
    pub user: Option<String>,
    /// Memory limit: bytes with a unit, `256m`, `1g` (`k`, `m`, `g`;
    /// powers of 1024). Past it the container is killed (OOM), not swapped.
    #[serde(default)]
    #[schemars(with = "Option<MemoryText>")]
    pub memory: Option<u64>,
    /// CPU limit in CPUs, `0.5`, `2` (to the thousandth).
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub cpus: Option<Millicpus>,
    /// Whether the container's root filesystem is read-only. Default false.
    #[serde(default)]
    pub read_only: bool,
    /// Mounts: `SOURCE:TARGET` or `SOURCE:TARGET:ro`. A SOURCE starting
    /// with `/` or `.` is a directory of the host (`.` relative to the spec
    /// file), any other a named Docker volume.
    #[serde(default)]
    #[schemars(with = "Vec<VolumeText>")]
    pub volumes: Vec<Volume>,
    /// A Docker network the container joins (it must exist). Default:
    /// Docker's bridge. The app's port is published on loopback either way.
    #[serde(default)]
    pub network: Option<String>,
    /// How many of the service's latest deployed versions keep their
    /// image on the engine (1 to 1000); older versions' images are
    /// removed after each deployment, never the image of what runs or of
    /// a version kept warm for an instant rollback. Default 5.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000), extend("default" = 5))]
    pub keep_images: u32,
}

/// CPUs in thousandths: `0.5` is 500.
pub type Millicpus = u64;

/// How `hatoba build` makes a service's image.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerBuild {
    /// The build context, a directory relative to the spec file; its
    /// `.dockerignore` is respected. Default `.`.
    #[serde(default)]
    pub context: String,
    /// The Dockerfile, relative to the context. Default `Dockerfile`.
    #[serde(default)]
    pub dockerfile: String,
    /// Build arguments (`ARG` in the Dockerfile); may use `${VERSION}`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, VersionedText>")]
    pub args: BTreeMap<String, String>,
    /// The stage to build, in a multi-stage Dockerfile. Default: the last.
    #[serde(default)]
    pub target: Option<String>,
}

/// A mount of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// A host directory (starting with `/` or `.`) or a named volume.
    pub source: String,
    /// The absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Volume {
    /// Whether the source is a directory of the host rather than a named volume.
    pub fn is_host_path(&self) -> bool {
        self.source.starts_with('/') || self.source.starts_with('.')
    }
}

/// The public side of a service.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// `host:port` the proxy listens on, e.g. `127.0.0.1:8080` or `0.0.0.0:80`.
    #[schemars(with = "ListenText")]
    pub listen: Listen,
    /// TLS termination; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// A certificate and its key, PEM files relative to the spec file.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain (PEM).
    pub cert: String,
    /// The private key (PEM).
    pub key: String,
}

/// A listening address: a host (name, IPv4 or bracketed IPv6) and a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listen {
    /// `127.0.0.1`, `0.0.0.0`, `::1`, `localhost`.
    pub host: String,
    /// 1-65535.
    pub port: u16,
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Probes that tell whether an instance may get traffic and whether it lives.
#[derive(Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// Traffic goes to an instance only after this probe passes.
    #[serde(default)]
    pub readiness: Option<Probe>,
    /// An instance that fails this probe is restarted.
    #[serde(default)]
    pub liveness: Option<Probe>,
}

/// An HTTP probe: a GET on the instance's port; 2xx and 3xx pass.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// The path, starting with `/`.
    pub path: String,
    /// Wait this long after start before the first probe. Default `0s`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub initial_delay: Duration,
    /// Time between probes. Default `1s`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub period: Duration,
    /// A probe slower than this fails. Default `1s`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Consecutive failures that make the instance unready (or dead). Default 3.
    #[serde(default)]
    pub failure_threshold: u32,
    /// Consecutive successes that make it ready again. Default 1.
    #[serde(default)]
    pub success_threshold: u32,
}

/// How a new version replaces the old one (exactly one of these keys).
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// Replace instances a few at a time.
    Rolling(Rolling),
    /// Start the new colour beside the old, switch all traffic at once.
    BlueGreen(BlueGreen),
    /// Shift traffic in steps, pausing and analysing between them.
    Canary(Canary),
}

impl Default for Strategy {
    fn default() -> Strategy {
        Strategy::Rolling(Rolling {
            max_surge: IntOrPercent::Percent(25),
            max_unavailable: IntOrPercent::Count(0),
        })
    }
}

impl Strategy {
    /// `rolling`, `blue_green` or `canary`, as recorded in the history.
    pub fn kind(&self) -> &'static str {
        match self {
            Strategy::Rolling(_) => "rolling",
            Strategy::BlueGreen(_) => "blue_green",
            Strategy::Canary(_) => "canary",
        }
    }
}

/// Rolling update.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rolling {
    /// Instances above `replicas` during the update, a count or a percent
    /// (rounded up). Default `25%`.
    #[serde(default)]
    pub max_surge: IntOrPercent,
    /// Instances below `replicas` during the update, a count or a percent
    /// (rounded down). Default 0: capacity never drops.
    #[serde(default)]
    pub max_unavailable: IntOrPercent,
}

/// A count (`1`) or a percent of replicas (`25%`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOrPercent {
    /// A number of instances.
    Count(u32),
    /// A percent of `replicas`, 0-100.
    Percent(u8),
}

impl Default for IntOrPercent {
    fn default() -> IntOrPercent {
        IntOrPercent::Count(0)
    }
}

impl IntOrPercent {
    /// The number of instances for `replicas`, rounding percents up or down.
    pub fn resolve(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            IntOrPercent::Count(n) => n,
            IntOrPercent::Percent(p) => {
                let scaled = u64::from(replicas) * u64::from(p);
                let n = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Count(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Blue-green.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreen {
    /// An address that serves the new colour before the switch, for smoke
    /// tests, and the serving version otherwise. None: no preview listener.
    #[serde(default)]
    #[schemars(with = "Option<ListenText>")]
    pub preview_listen: Option<Listen>,
    /// When to switch once the new colour is ready.
    #[serde(flatten)]
    pub promotion: Promotion,
    /// How long the old colour stays up after the switch, so a rollback is
    /// instant. Default `30s`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub scale_down_delay: Duration,
}

/// When blue-green switches traffic. Written as `autoPromotionEnabled: false`
/// (wait for `hatoba promote`) or `autoPromotionSeconds: N` (switch N seconds
/// after the new colour is ready). Default: switch as soon as it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Promotion {
    /// Switch this long after the new colour is ready (0: at once).
    #[schemars(with = "u32")]
    AutoPromotionSeconds(Duration),
    /// `false`: wait for `hatoba promote`.
    AutoPromotionEnabled(bool),
}

impl Promotion {
    /// None means a person must promote.
    pub fn delay(self) -> Option<Duration> {
        match self {
            Promotion::AutoPromotionSeconds(d) => Some(d),
            Promotion::AutoPromotionEnabled(true) => Some(Duration::ZERO),
            Promotion::AutoPromotionEnabled(false) => None,
        }
    }
}

fn full_weight() -> Weight {
    Weight::FULL
}

/// Canary.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canary {
    /// The steps, in order. After the last one the canary is promoted to 100 %.
    pub steps: Vec<Step>,
    /// The highest weight a step may give the canary before promotion. Default 100.
    #[serde(default = "full_weight")]
    #[schemars(with = "WeightNumber")]
    pub max_weight: Weight,
    /// Analysis that runs in the background for the whole rollout.
    #[serde(default)]
    pub analysis: Option<AnalysisRef>,
}

/// One canary step (exactly one key).
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Send this percent of traffic to the canary.
    SetWeight(#[schemars(with = "WeightNumber")] Weight),
    /// Wait: `{duration: 5m}` for a time, `{}` until `hatoba promote`.
    Pause(Pause),
    /// Run analysis templates; the step passes when they succeed.
    Analysis(AnalysisRef),
}

/// A pause step.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    /// How long; absent means until `hatoba promote`.
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub duration: Option<Duration>,
}

/// A use of analysis templates.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisRef {
    /// Names of templates under `analysis.templates`.
    pub templates: Vec<String>,
    /// Values for the templates' arguments.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

/// Analysis templates.
#[derive(Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Analysis {
    /// Templates by name.
    #[serde(default)]
    pub templates: BTreeMap<String, AnalysisTemplate>,
}

/// A named set of metrics judged together.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplate {
    /// Arguments the template takes, used as `{{name}}` in queries.
    #[serde(default)]
    pub args: Vec<TemplateArg>,
    /// The metrics.
    pub metrics: Vec<Metric>,
    /// The traffic the template's `builtin` metrics need, and synthetic
    /// traffic for a quiet service.
    #[serde(default)]
    pub traffic: Option<AnalysisTraffic>,
    /// Whether the statistical canary-vs-stable judge runs beside this
    /// template's metrics (default true). `judge: false` leaves the
    /// verdict to the template's own conditions (e.g. Prometheus queries);
    /// a run judges when any of its templates asks for it.
    #[serde(default = "yes")]
    pub judge: bool,
}

fn yes() -> bool {
    true
}

/// `traffic:` of an analysis template: how much traffic its `builtin`
/// metrics need, and requests Hatoba sends itself so that a quiet service
/// is still judged (no promotion without evidence).
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTraffic {
    /// Least requests in the window before a `builtin` metric of the
    /// template is judged, where the metric does not say (`minSamples`).
    /// Default 20.
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// Synthetic requests to both versions while the template's analysis
    /// runs.
    #[serde(default)]
    pub generate: Option<GenerateTraffic>,
}

/// Synthetic requests: `GET path` through Hatoba's proxy, pinned to each
/// version in turn with `X-Hatoba-Route: canary` / `stable`.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateTraffic {
    /// The HTTP path to GET, e.g. `/`; it should be cheap and answer 2xx.
    pub path: String,
    /// Requests per second to each version (1 to 1000).
    pub rate: u32,
}

/// A template argument.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateArg {
    /// Its name.
    pub name: String,
    /// The value when a step gives none; without one, steps must give a value.
    #[serde(default)]
    pub value: Option<String>,
}

/// One measurement, taken every `interval` and judged by its conditions.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metric {
    /// Unique within its template.
    pub name: String,
    /// Where the value comes from.
    pub provider: Provider,
    /// Time between measurements. Default `1m`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub interval: Duration,
    /// How many measurements; absent means until the step or rollout ends.
    #[serde(default)]
    pub count: Option<u32>,
    /// A measurement succeeds when this holds, e.g. `result >= 0.95`.
    #[serde(default)]
    #[schemars(with = "Option<ConditionText>")]
    pub success_condition: Option<Condition>,
    /// A measurement fails when this holds, e.g. `result > 0.5`.
    #[serde(default)]
    #[schemars(with = "Option<ConditionText>")]
    pub failure_condition: Option<Condition>,
    /// Failed measurements tolerated; one more fails the analysis. Default 0.
    #[serde(default)]
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated before the rollout pauses. Default 0.
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// Consecutive provider errors tolerated. Default 4.
    #[serde(default)]
    pub consecutive_error_limit: u32,
    /// Minimum evidence: for `builtin`, the requests the canary must have
    /// served in the window before the metric is judged (default 20);
    /// below it the measurement is "insufficient", shown with what is
    /// missing, and never passes. An analysis short of evidence for 5
    /// minutes is inconclusive.
    #[serde(default)]
    pub min_samples: Option<u64>,
}

/// Where a metric's value comes from (exactly one key).
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// Measured by Hatoba's own proxy.
    Builtin(BuiltinProvider),
    /// A PromQL instant query.
    Prometheus(PrometheusProvider),
    /// An HTTP call whose JSON answer holds the value.
    Webhook(WebhookProvider),
    /// A command: its exit status, or a number on its stdout.
    Command(CommandProvider),
}

/// A metric Hatoba measures itself.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuiltinProvider {
    /// `success-rate`, `error-rate`, `latency-p50`, `latency-p95`, `latency-p99`
    /// (milliseconds), `request-rate` (per second), `long-lived-open`
    /// (WebSockets and event streams open now) or `long-lived-abnormal`
    /// (those the version reset or cut since it started serving).
    pub metric: BuiltinMetric,
    /// Over how much recent traffic: `10s`, `1m` or `5m`, the windows the
    /// proxy keeps (another length is read as the next of them, at most
    /// `5m`, with a warning). Default: the metric's interval, read the same way.
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub window: Option<Duration>,
}

impl BuiltinProvider {
    /// The windows the proxy keeps per version, shortest first.
    pub const WINDOWS: [Duration; 3] = [
        Duration::from_secs(10),
        Duration::from_secs(60),
        Duration::from_secs(300),
    ];

    /// The window the proxy answers for a wanted one (`window`, else the
    /// metric's interval): the shortest kept window that covers it, or the
    /// longest (5 minutes) beyond that. The analysis reads this one.
    pub fn kept_window(wanted: Duration) -> Duration {
        Self::WINDOWS
            .into_iter()
            .find(|w| wanted <= *w)
            .unwrap_or(Self::WINDOWS[2])
    }
}

/// The metrics the proxy measures per version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltinMetric {
    /// Share of requests not answered 5xx or failed upstream, 0-1.
    SuccessRate,
    /// 1 - success rate.
    ErrorRate,
    /// Median latency, ms.
    LatencyP50,
    /// 95th percentile latency, ms.
    LatencyP95,
    /// 99th percentile latency, ms.
    LatencyP99,
    /// Requests per second.
    RequestRate,
    /// Long-lived connections (WebSockets, event streams) open now.
    LongLivedOpen,
    /// Long-lived connections reset or cut by the version while it was
    /// routed, since it started serving (a drain's end never counts).
    LongLivedAbnormal,
}

impl BuiltinMetric {
    /// Every builtin metric with its name in the spec.
    pub const ALL: [(&'static str, BuiltinMetric); 8] = [
        ("success-rate", BuiltinMetric::SuccessRate),
        ("error-rate", BuiltinMetric::ErrorRate),
        ("latency-p50", BuiltinMetric::LatencyP50),
        ("latency-p95", BuiltinMetric::LatencyP95),
        ("latency-p99", BuiltinMetric::LatencyP99),
        ("request-rate", BuiltinMetric::RequestRate),
        ("long-lived-open", BuiltinMetric::LongLivedOpen),
        ("long-lived-abnormal", BuiltinMetric::LongLivedAbnormal),
    ];
}

/// A Prometheus query.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusProvider {
    /// The server, e.g. `http://127.0.0.1:9090`.
    pub address: String,
    /// A PromQL instant query returning one number; may use `{{service}}`,
    /// `{{version}}`, `{{canary_version}}`, `{{stable_version}}`, `{{env}}`
    /// and template arguments (`{{name}}` or `{{args.name}}`).
    pub query: String,
    /// Default `10s`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
}

/// An HTTP call.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookProvider {
    /// The URL (http or https).
    pub url: String,
    /// `GET` (default) or `POST`.
    #[serde(default)]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body (POST).
    #[serde(default)]
    pub body: Option<String>,
    /// Where the number is in the JSON answer, e.g. `$.data.ok`.
    pub json_path: String,
    /// Default `10s`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
}

/// A command.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandProvider {
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Default `30s`.
    #[serde(default)]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
}

/// One environment.
#[derive(Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Environment {
    /// Deployments wait for `hatoba approve` by another person. Default false.
    #[serde(default)]
    pub require_approval: bool,
    /// Variables for `${NAME}` in this environment's services.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Secrets this environment declares besides the top-level `secrets`
    /// (values: `hatoba secret set NAME --env ENV`).
    #[serde(default)]
    #[schemars(with = "Vec<VariableNameText>")]
    pub secrets: Vec<String>,
    /// Overrides of any service field, merged over `services.<name>`: maps
    /// merge key by key, lists and scalars replace. After decoding this holds
    /// the merged service for every service of the spec.
    #[serde(default)]
    #[schemars(with = "BTreeMap<NameText, serde_json::Value>")]
    pub services: BTreeMap<ServiceName, Service>,
}

/// How an instance is told that it left the route and drains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainNotify {
    /// `POST` to this path of the instance (starts with `/`).
    Path(String),
    /// This signal to the instance (`SIGUSR1`, `SIGUSR2`, `SIGHUP`, ...).
    Signal(String),
}

/// The signals `drain.notify` may send: those an app can catch and that do
/// not mean "stop" or "stopped" by default elsewhere.
pub const DRAIN_SIGNALS: &[&str] = &[
    "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT", "SIGWINCH",
];
