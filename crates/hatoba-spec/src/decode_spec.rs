//! Decodes the YAML tree into a `Spec`, checking everything a spec can get
//! wrong on its own: types, ranges, unknown fields, names, addresses,
//! conditions, provider text (PromQL queries, `{{name}}` placeholders, JSON
//! paths: see `provider_syntax`), references between sections. Every mistake
//! becomes a diagnostic and decoding goes on, so one run reports them all.
//! No IO.
//!
//! Over 800 lines, not yet split: one decoder walks the whole spec with one
//! context (`Cx`: the diagnostics, the templates used, the secrets' names),
//! and the checks between sections need all of it. The next split follows
//! the spec's sections: runtimes (process, docker, build, memory, volumes),
//! strategies (rolling, blue-green, canary, steps), analysis (templates,
//! metrics, providers) and environments, each a module under `decode_spec/`
//! taking `Cx`.

use crate::condition::Condition;
use crate::decode::{
    Diags, Fields, boolean, duration, index, join, list, non_empty, string, string_list,
    string_map, suggest, u32_in,
};
use crate::diag::Diagnostic;
use crate::interpolate;
use crate::model::*;
use crate::provider_syntax::{self, TextError};
use crate::yaml::{self, Node, NodeKind, Span};
use hatoba_core::{EnvName, ServiceName, Weight};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a template was referenced, for the check that it exists.
struct TemplateUse {
    name: String,
    args: BTreeMap<String, String>,
    span: Span,
    path: String,
}

#[derive(Default)]
struct Cx {
    d: Diags,
    template_uses: Vec<TemplateUse>,
}

/// What a provider's text is checked with besides its own node: the source
/// by line, to point inside a scalar, and the template's argument names for
/// `{{name}}` placeholders (`None` when they could not be read: names are
/// then not checked, so one mistake is not reported twice).
struct ProviderCx<'a> {
    lines: &'a [&'a str],
    args: Option<Vec<String>>,
}

/// Decodes the tree read from `source` (the text is needed only to point
/// inside scalars, e.g. at the unbalanced `(` of a query).
pub(crate) fn decode(root: &Node, source: &str) -> (Option<Spec>, Vec<Diagnostic>) {
    let lines: Vec<&str> = source.lines().collect();
    let mut cx = Cx::default();
    let spec = decode_root(root, &lines, &mut cx);
    let Cx { d, .. } = cx;
    let mut diags = d.0;
    // Environment overrides re-decode the base service, so a mistake in the
    // base would be reported once per environment: keep the first.
    let mut seen = std::collections::HashSet::new();
    diags.retain(|d| seen.insert((d.span, d.message.clone())));
    diags.sort_by_key(|d| d.span.map(|s| (s.start.line, s.start.col)));
    let has_errors = diags
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error);
    (if has_errors { None } else { spec }, diags)
}

fn decode_root(root: &Node, lines: &[&str], cx: &mut Cx) -> Option<Spec> {
    let mut f = Fields::of(root, "", &mut cx.d, "a mapping with `app` and `services`")?;
    let app = f
        .required("app", &mut cx.d, "name the application: `app: shop`")
        .and_then(|n| non_empty(n, "app", &mut cx.d));
    let services_node = f.required(
        "services",
        &mut cx.d,
        "declare at least one service under `services:`",
    );
    let environments_node = f.get("environments");
    let analysis_node = f.get("analysis");
    let (top_secrets, secrets_ok) = match f.get("secrets") {
        Some(n) => secret_names(n, "secrets", &[], &mut cx.d),
        None => (Vec::new(), true),
    };
    let retention = f.get("retention").map_or(Some(Retention::default()), |n| {
        decode_retention(n, "retention", &mut cx.d)
    });
    f.finish(&mut cx.d);

    let mut service_nodes: BTreeMap<ServiceName, &Node> = BTreeMap::new();
    let mut services = BTreeMap::new();
    if let Some(node) = services_node {
        match &node.kind {
            NodeKind::Map(entries) if !entries.is_empty() => {
                for (key, value) in entries {
                    let path = join("services", key.as_scalar().unwrap_or(""));
                    let Some(name) = name_key::<ServiceName>(key, "services", &mut cx.d) else {
                        continue;
                    };
                    service_nodes.insert(name.clone(), value);
                    check_secret_uses(value, &path, &top_secrets, &mut cx.d);
                    if let Some(svc) = decode_service(value, &path, cx) {
                        services.insert(name, svc);
                    }
                }
            }
            _ => {
                cx.d.expected(node, "services", "a mapping of service names to services")
            }
        }
    }

    let (analysis, template_names) = match analysis_node {
        Some(n) => decode_analysis(n, lines, cx),
        None => (Some(Analysis::default()), Vec::new()),
    };

    let mut environments = BTreeMap::new();
    if let Some(node) = environments_node {
        match &node.kind {
            NodeKind::Map(entries) => {
                for (key, value) in entries {
                    let Some(name) = name_key::<EnvName>(key, "environments", &mut cx.d) else {
                        continue;
                    };
                    let path = join("environments", name.as_str());
                    if let Some(env) =
                        decode_environment(value, &path, &service_nodes, &top_secrets, cx)
                    {
                        environments.insert(name, env);
                    }
                }
            }
            NodeKind::Null => {}
            _ => cx.d.expected(
                node,
                "environments",
                "a mapping of environment names to environments",
            ),
        }
    }

    check_template_uses(analysis.as_ref(), &template_names, cx);
    check_listeners(&services, &service_nodes, cx);

    Some(Spec {
        app: app?,
        services,
        environments,
        analysis: analysis?,
        secrets: secrets_ok.then_some(top_secrets)?,
        retention: retention?,
    })
}

fn decode_retention(node: &Node, path: &str, d: &mut Diags) -> Option<Retention> {
    if matches!(node.kind, NodeKind::Null) {
        return Some(Retention::default());
    }
    let mut f = Fields::of(
        node,
        path,
        d,
        "a mapping with `metrics` (a duration) and `logVersions` (a count)",
    )?;
    let metrics = f
        .get("metrics")
        .map(|n| positive_duration(n, &f.path("metrics"), d));
    let log_versions = f
        .get("logVersions")
        .map(|n| u32_in(n, &f.path("logVersions"), d, 1, 1000));
    f.finish(d);
    Some(Retention {
        metrics: metrics.unwrap_or(Some(Retention::METRICS))?,
        log_versions: log_versions.unwrap_or(Some(Retention::LOG_VERSIONS))?,
    })
}

/// A `secrets:` list: variable names, each once, none that Hatoba sets
/// itself. `inherited` are the top-level names an environment adds to.
/// Returns the good names (to check their uses even when some are wrong)
/// and whether all were good.
fn secret_names(
    node: &Node,
    path: &str,
    inherited: &[String],
    d: &mut Diags,
) -> (Vec<String>, bool) {
    if matches!(node.kind, NodeKind::Null) {
        return (Vec::new(), true);
    }
    let NodeKind::Seq(items) = &node.kind else {
        d.push(
            Diagnostic::error(
                node.span,
                path,
                format!("expected a list of secret names, found {}", node.describe()),
            )
            .with_hint("write `secrets: [DB_PASSWORD, API_TOKEN]`"),
        );
        return (Vec::new(), false);
    };
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let at = index(path, i);
        let Some(name) = string(item, &at, d) else {
            ok = false;
            continue;
        };
        if !interpolate::is_variable_name(&name) {
            d.push(
                Diagnostic::error(
                    item.span,
                    &at,
                    format!("`{name}` is not a variable name"),
                )
                .with_hint("a secret is used as `${NAME}`: letters, digits and `_`, not starting with a digit"),
            );
            ok = false;
        } else if name == "PORT" || name == "VERSION" {
            d.push(
                Diagnostic::error(
                    item.span,
                    &at,
                    format!("`{name}` is set by Hatoba for each instance"),
                )
                .with_hint("choose another name for the secret"),
            );
            ok = false;
        } else if out.contains(&name) {
            d.push(
                Diagnostic::error(item.span, &at, format!("secret `{name}` is declared twice"))
                    .with_hint("remove one of them"),
            );
            ok = false;
        } else if inherited.contains(&name) {
            d.push(
                Diagnostic::warning(
                    item.span,
                    &at,
                    format!("secret `{name}` is already declared in the top-level `secrets`"),
                )
                .with_hint("every environment has the top-level secrets; remove it here"),
            );
        } else {
            out.push(name);
        }
    }
    (out, ok)
}

/// Where a service may use a secret: in `env` values, and in `args` with a
/// warning (the arguments of a process are readable by every local user).
/// Never in `command`, `workingDir` or a Docker `image`: those end up in
/// logs, the history and `diagnose`.
fn check_secret_uses(service: &Node, path: &str, secrets: &[String], d: &mut Diags) {
    if secrets.is_empty() {
        return;
    }
    let NodeKind::Map(entries) = &service.kind else {
        return;
    };
    let field = |map: &Node, key: &str| -> Option<Node> {
        let NodeKind::Map(e) = &map.kind else {
            return None;
        };
        e.iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map(|(_, v)| v.clone())
    };
    for (k, runtime) in entries {
        let Some(kind @ ("process" | "docker")) = k.as_scalar() else {
            continue;
        };
        let rpath = join(path, kind);
        // (text node, its path, whether it is in `args`)
        let mut texts: Vec<(Node, String, bool)> = Vec::new();
        for forbidden in ["command", "workingDir", "image"] {
            if let Some(n) = field(runtime, forbidden) {
                texts.push((n, join(&rpath, forbidden), false));
            }
        }
        // A container's `command` is as visible as its arguments.
        for list_key in ["args", "command"] {
            if let Some(n) = field(runtime, list_key)
                && let NodeKind::Seq(items) = &n.kind
            {
                for (i, a) in items.iter().enumerate() {
                    texts.push((a.clone(), index(&join(&rpath, list_key), i), true));
                }
            }
        }
        // Build arguments stay in the image's history for anyone to read.
        if let Some(b) = field(runtime, "build")
            && let Some(args) = field(&b, "args")
            && let NodeKind::Map(entries) = &args.kind
        {
            let apath = join(&join(&rpath, "build"), "args");
            for (k, v) in entries {
                texts.push((v.clone(), join(&apath, k.as_scalar().unwrap_or("")), false));
            }
        }
        for (node, at, in_args) in texts {
            let Some(text) = node.as_scalar() else {
                continue;
            };
            let Ok(uses) = interpolate::variables(text) else {
                continue;
            };
            for (name, _) in uses {
                if !secrets.contains(&name) {
                    continue;
                }
                if in_args {
                    d.push(
                        Diagnostic::warning(
                            node.span,
                            &at,
                            format!(
                                "secret `${{{name}}}` in `args`: every local user can read a process's arguments (`ps`)"
                            ),
                        )
                        .with_hint(format!("pass it in `env` instead: `env: {{{name}: \"${{{name}}}\"}}`")),
                    );
                } else {
                    d.push(
                        Diagnostic::error(
                            node.span,
                            &at,
                            format!("secret `${{{name}}}` can not be used here: it would be shown in logs and the history"),
                        )
                        .with_hint(format!("give it to the program in `env`: `env: {{{name}: \"${{{name}}}\"}}`")),
                    );
                }
            }
        }
    }
}

/// A mapping key that must be a name (service, environment).
fn name_key<T: std::str::FromStr<Err = hatoba_core::NameError>>(
    key: &Node,
    parent: &str,
    d: &mut Diags,
) -> Option<T> {
    let text = key.as_scalar().unwrap_or("");
    match text.parse::<T>() {
        Ok(n) => Some(n),
        Err(e) => {
            d.push(
                Diagnostic::error(
                    key.span,
                    &join(parent, text),
                    format!("`{text}` is not a valid {}", e.what),
                )
                .with_hint(e.rule),
            );
            None
        }
    }
}

fn decode_service(node: &Node, path: &str, cx: &mut Cx) -> Option<Service> {
    let mut f = Fields::of(
        node,
        path,
        &mut cx.d,
        "a service (a mapping with `process` or `docker`, `route`, ...)",
    )?;
    let process = f.get("process");
    let docker = f.get("docker");
    let replicas = f
        .get("replicas")
        .map(|n| u32_in(n, &f.path("replicas"), &mut cx.d, 0, 1000));
    let route = f.required(
        "route",
        &mut cx.d,
        "add `route: {listen: 127.0.0.1:8080}`: the address the proxy serves the service on",
    );
    let route = route.map(|n| decode_route(n, &f.path("route"), &mut cx.d));
    let health = f
        .get("health")
        .map(|n| decode_health(n, &f.path("health"), &mut cx.d));
    let progress_deadline = f
        .get("progressDeadline")
        .map(|n| positive_duration(n, &f.path("progressDeadline"), &mut cx.d));
    let grace = f
        .get("terminationGracePeriod")
        .map(|n| duration(n, &f.path("terminationGracePeriod"), &mut cx.d));
    let drain = f
        .get("drain")
        .map(|n| decode_drain(n, &f.path("drain"), &mut cx.d));
    let watch = f
        .get("watch")
        .map(|n| duration(n, &f.path("watch"), &mut cx.d));
    let strategy = f
        .get("strategy")
        .map(|n| decode_strategy(n, &f.path("strategy"), cx));
    let runtime = match (process, docker) {
        (Some(p), None) => decode_process(p, &f.path("process"), &mut cx.d).map(Runtime::Process),
        (None, Some(dk)) => decode_docker(dk, &f.path("docker"), &mut cx.d).map(Runtime::Docker),
        (None, None) => {
            cx.d.push(
                Diagnostic::error(f.span(), path, "missing `process` or `docker`: how to run the service")
                    .with_hint("add `process: {command: ./my-app}` or `docker: {image: \"my-app:${VERSION}\"}`"),
            );
            None
        }
        (Some(_), Some(dk)) => {
            cx.d.push(
                Diagnostic::error(
                    dk.span,
                    &f.path("docker"),
                    "both `process` and `docker` are given",
                )
                .with_hint("a service runs one way: keep one of them"),
            );
            None
        }
    };
    f.finish(&mut cx.d);
    Some(Service {
        runtime: runtime?,
        replicas: replicas.unwrap_or(Some(1))?,
        route: route??,
        health: health.unwrap_or(Some(Health::default()))?,
        progress_deadline: progress_deadline.unwrap_or(Some(Duration::from_secs(600)))?,
        termination_grace_period: grace.unwrap_or(Some(Duration::from_secs(30)))?,
        drain: match &drain {
            Some(Some((timeout, _))) => *timeout,
            Some(None) => return None,
            None => DEFAULT_DRAIN,
        },
        drain_notify: drain.and_then(|d| d.and_then(|(_, notify)| notify)),
        watch: watch.unwrap_or(Some(Duration::ZERO))?,
        strategy: strategy.unwrap_or(Some(Strategy::default()))?,
    })
}

/// A string that may use `${...}`: the syntax is checked now, the values are
/// filled in at deploy time. A name one letter away from `VERSION` or `PORT`
/// (`${VERSON}`, `${Port}`) is a warning: it would fail every deployment
/// unless something sets it.
fn versioned(node: &Node, path: &str, d: &mut Diags) -> Option<String> {
    let s = string(node, path, d)?;
    match interpolate::variables(&s) {
        Ok(uses) => {
            for (name, has_default) in uses {
                if has_default || name == "VERSION" || name == "PORT" {
                    continue;
                }
                if let Some(meant) = suggest(&name, ["VERSION", "PORT"]) {
                    d.push(
                        Diagnostic::warning(
                            node.span,
                            path,
                            format!(
                                "`${{{name}}}` is not a variable Hatoba sets: a deployment fails \
                                 unless `--set {name}=...` or `hatoba up`'s environment gives it"
                            ),
                        )
                        .with_hint(format!("did you mean `${{{meant}}}`?")),
                    );
                }
            }
            Some(s)
        }
        Err(e) => {
            d.push(
                Diagnostic::error(node.span, path, format!("invalid interpolation: {e}"))
                    .with_hint("write `${NAME}` or `${NAME:-default}`; `$${` for a literal `${`"),
            );
            None
        }
    }
}

fn versioned_list(node: &Node, path: &str, d: &mut Diags) -> Option<Vec<String>> {
    list(node, path, d, "a list of strings", versioned)
}

fn versioned_map(node: &Node, path: &str, d: &mut Diags) -> Option<BTreeMap<String, String>> {
    let map = string_map(node, path, d)?;
    let NodeKind::Map(entries) = &node.kind else {
        return Some(map);
    };
    let mut ok = true;
    for (k, v) in entries {
        let key = k.as_scalar().unwrap_or("");
        if !crate::is_variable_name(key) {
            d.push(
                Diagnostic::error(
                    k.span,
                    &join(path, key),
                    format!("`{key}` is not a valid environment variable name"),
                )
                .with_hint("use letters, digits and `_`, not starting with a digit"),
            );
            ok = false;
        } else if key == "PORT" {
            d.push(
                Diagnostic::error(
                    k.span,
                    &join(path, key),
                    "`PORT` is set by Hatoba for each instance",
                )
                .with_hint("remove it; the instance reads its port from `PORT`"),
            );
            ok = false;
        }
        if !matches!(v.kind, NodeKind::Null) && versioned(v, &join(path, key), d).is_none() {
            ok = false;
        }
    }
    ok.then_some(map)
}

fn decode_process(node: &Node, path: &str, d: &mut Diags) -> Option<ProcessRuntime> {
    let mut f = Fields::of(node, path, d, "a mapping with `command`")?;
    let command = f.required(
        "command",
        d,
        "the program to run, e.g. `command: ./target/release/my-app`",
    );
    let command = command.and_then(|n| {
        non_empty(n, &f.path("command"), d).and_then(|_| versioned(n, &f.path("command"), d))
    });
    let args = f.get("args").map(|n| versioned_list(n, &f.path("args"), d));
    let env = f.get("env").map(|n| versioned_map(n, &f.path("env"), d));
    let working_dir = f
        .get("workingDir")
        .map(|n| versioned(n, &f.path("workingDir"), d));
    f.finish(d);
    Some(ProcessRuntime {
        command: command?,
        args: args.unwrap_or(Some(Vec::new()))?,
        env: env.unwrap_or(Some(BTreeMap::new()))?,
        working_dir: match working_dir {
            Some(w) => Some(w?),
            None => None,
        },
    })
}

fn decode_docker(node: &Node, path: &str, d: &mut Diags) -> Option<DockerRuntime> {
    let mut f = Fields::of(node, path, d, "a mapping with `image`")?;
    let image = f.required(
        "image",
        d,
        "the image to run, e.g. `image: \"shop/web:${VERSION}\"`",
    );
    let image = image.and_then(|n| {
        let p = f.path("image");
        let text = non_empty(n, &p, d).and_then(|_| versioned(n, &p, d))?;
        image_name_ok(n, &p, &text, d).then_some(text)
    });
    let build = f
        .get("build")
        .map(|n| decode_docker_build(n, &f.path("build"), d));
    let command = f
        .get("command")
        .map(|n| non_empty_versioned_list(n, &f.path("command"), d));
    let args = f.get("args").map(|n| versioned_list(n, &f.path("args"), d));
    let env = f.get("env").map(|n| versioned_map(n, &f.path("env"), d));
    let port = f
        .get("port")
        .map(|n| u32_in(n, &f.path("port"), d, 1, 65535).and_then(|p| u16::try_from(p).ok()));
    let user = f.get("user").map(|n| non_empty(n, &f.path("user"), d));
    let memory = f.get("memory").map(|n| memory(n, &f.path("memory"), d));
    let cpus = f.get("cpus").map(|n| cpus(n, &f.path("cpus"), d));
    let read_only = f
        .get("readOnly")
        .map(|n| boolean(n, &f.path("readOnly"), d));
    let volumes = f.get("volumes").map(|n| {
        list(
            n,
            &f.path("volumes"),
            d,
            "a list of `SOURCE:TARGET[:ro]`",
            volume,
        )
    });
    let network = f
        .get("network")
        .map(|n| non_empty(n, &f.path("network"), d));
    let keep_images = f
        .get("keepImages")
        .map(|n| u32_in(n, &f.path("keepImages"), d, 1, 1000));
    f.finish(d);
    Some(DockerRuntime {
        image: image?,
        build: opt(build)?,
        port: port.unwrap_or(Some(8080))?,
        command: opt(command)?,
        args: opt(args)?,
        env: env.unwrap_or(Some(BTreeMap::new()))?,
        user: opt(user)?,
        memory: opt(memory)?,
        cpus: opt(cpus)?,
        read_only: read_only.unwrap_or(Some(false))?,
        volumes: volumes.unwrap_or(Some(Vec::new()))?,
        network: opt(network)?,
        keep_images: keep_images.unwrap_or(Some(DEFAULT_KEEP_IMAGES))?,
    })
}

/// Versions of a Docker service whose images are kept by default.
const DEFAULT_KEEP_IMAGES: u32 = 5;

/// An optional field: absent is `Some(None)`, present and broken `None`.
fn opt<T>(v: Option<Option<T>>) -> Option<Option<T>> {
    match v {
        None => Some(None),
        Some(Some(t)) => Some(Some(t)),
        Some(None) => None,
    }
}

/// A list that must name something: `command: []` would start nothing.
fn non_empty_versioned_list(node: &Node, path: &str, d: &mut Diags) -> Option<Vec<String>> {
    let items = versioned_list(node, path, d)?;
    if items.is_empty() {
        d.push(
            Diagnostic::error(
                node.span,
                path,
                "expected at least the program, found an empty list",
            )
            .with_hint("leave `command` out to keep the image's entrypoint"),
        );
        return None;
    }
    Some(items)
}

/// An image reference Docker would accept, `${...}` aside: no spaces, no
/// upper case in the name (Docker refuses `Shop/web`), a tag after the
/// last `:` of the last path part.
fn image_name_ok(node: &Node, path: &str, text: &str, d: &mut Diags) -> bool {
    // The variables are filled in at deploy time; check what is around them.
    let shape: String = {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            out.push('x');
            let after = match rest[i..].find('}') {
                Some(j) => &rest[i + j + 1..],
                None => "",
            };
            rest = after;
        }
        out.push_str(rest);
        out
    };
    let name = match shape.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => shape.as_str(),
    };
    let bad = shape.chars().any(char::is_whitespace)
        || (!name.starts_with("sha256") && name.chars().any(|c| c.is_ascii_uppercase()));
    if bad {
        d.push(
            Diagnostic::error(
                node.span,
                path,
                format!("`{text}` is not an image name Docker accepts"),
            )
            .with_hint("lowercase letters, digits, `.`, `_`, `-` and `/`, then `:TAG`, e.g. `shop/web:${VERSION}`"),
        );
    }
    !bad
}

fn decode_docker_build(node: &Node, path: &str, d: &mut Diags) -> Option<DockerBuild> {
    let mut f = Fields::of(
        node,
        path,
        d,
        "a mapping with `context`, `dockerfile`, `args`, `target`",
    )?;
    let context = f
        .get("context")
        .map(|n| non_empty(n, &f.path("context"), d));
    let dockerfile = f
        .get("dockerfile")
        .map(|n| non_empty(n, &f.path("dockerfile"), d));
    let args = f.get("args").map(|n| {
        let p = f.path("args");
        let map = string_map(n, &p, d)?;
        if let NodeKind::Map(entries) = &n.kind {
            for (k, v) in entries {
                let key = k.as_scalar().unwrap_or("");
                if !matches!(v.kind, NodeKind::Null) {
                    versioned(v, &join(&p, key), d)?;
                }
            }
        }
        Some(map)
    });
    let target = f.get("target").map(|n| non_empty(n, &f.path("target"), d));
    f.finish(d);
    Some(DockerBuild {
        context: context.unwrap_or_else(|| Some(".".to_owned()))?,
        dockerfile: dockerfile.unwrap_or_else(|| Some("Dockerfile".to_owned()))?,
        args: args.unwrap_or(Some(BTreeMap::new()))?,
        target: opt(target)?,
    })
}

/// `256m`, `1g`, `1048576`: bytes, at least 6 MiB (Docker's own minimum).
fn memory(node: &Node, path: &str, d: &mut Diags) -> Option<u64> {
    let text = match &node.kind {
        NodeKind::Scalar { text, .. } => text.trim().to_owned(),
        _ => String::new(),
    };
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], Some(c.to_ascii_lowercase())),
        _ => (text.as_str(), None),
    };
    let scale: Option<u64> = match unit {
        None => Some(1),
        Some('k') => Some(1 << 10),
        Some('m') => Some(1 << 20),
        Some('g') => Some(1 << 30),
        Some(_) => None,
    };
    let bytes = match (digits.parse::<u64>(), scale) {
        (Ok(n), Some(s)) if !digits.is_empty() => n.checked_mul(s),
        _ => None,
    };
    match bytes {
        Some(b) if b >= 6 << 20 => Some(b),
        Some(_) => {
            d.push(
                Diagnostic::error(
                    node.span,
                    path,
                    format!("memory `{text}` is below Docker's minimum of 6m"),
                )
                .with_hint("give at least `6m`; an app usually needs `64m` or more"),
            );
            None
        }
        None => {
            d.push(
                Diagnostic::error(
                    node.span,
                    path,
                    format!(
                        "expected an amount of memory such as `256m`, found {}",
                        node.describe()
                    ),
                )
                .with_hint("a number with `k`, `m` or `g` (powers of 1024), e.g. `512m`, `1g`"),
            );
            None
        }
    }
}

/// `0.5`, `2`: CPUs, kept in thousandths.
fn cpus(node: &Node, path: &str, d: &mut Diags) -> Option<u64> {
    let parsed = match &node.kind {
        NodeKind::Scalar {
            text,
            quoted: false,
        } => text.parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in range, checked
        Some(c) if c.is_finite() && (0.001..=1024.0).contains(&c) => {
            Some((c * 1000.0).round() as u64)
        }
        _ => {
            d.push(
                Diagnostic::error(
                    node.span,
                    path,
                    format!(
                        "expected a number of CPUs from 0.001 to 1024, found {}",
                        node.describe()
                    ),
                )
                .with_hint("e.g. `cpus: 0.5` for half a CPU, `cpus: 2` for two"),
            );
            None
        }
    }
}

/// `SOURCE:TARGET` or `SOURCE:TARGET:ro`.
fn volume(node: &Node, path: &str, d: &mut Diags) -> Option<Volume> {
    let text = non_empty(node, path, d)?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => ("", "", None),
    };
    let problem = if source.is_empty() || target.is_empty() {
        Some(format!(
            "expected `SOURCE:TARGET` or `SOURCE:TARGET:ro`, found `{text}`"
        ))
    } else if !target.starts_with('/') {
        Some(format!(
            "the target `{target}` must be an absolute path inside the container"
        ))
    } else if !matches!(mode, None | Some("ro" | "rw")) {
        Some(format!(
            "unknown mount mode `{}`: `ro` or `rw`",
            mode.unwrap_or_default()
        ))
    } else {
        None
    };
    if let Some(message) = problem {
        d.push(
            Diagnostic::error(node.span, path, message)
                .with_hint("e.g. `./data:/var/lib/app`, `/etc/app:/etc/app:ro` or `cache:/cache`"),
        );
        return None;
    }
    Some(Volume {
        source: source.to_owned(),
        target: target.to_owned(),
        read_only: mode == Some("ro"),
    })
}

fn decode_route(node: &Node, path: &str, d: &mut Diags) -> Option<Route> {
    let mut f = Fields::of(node, path, d, "a mapping with `listen`")?;
    let listen = f
        .required("listen", d, "add `listen: 127.0.0.1:8080`")
        .map(|n| decode_listen(n, &f.path("listen"), d));
    let tls = f.get("tls").map(|n| decode_tls(n, &f.path("tls"), d));
    f.finish(d);
    Some(Route {
        listen: listen??,
        tls: match tls {
            Some(t) => Some(t?),
            None => None,
        },
    })
}

fn decode_tls(node: &Node, path: &str, d: &mut Diags) -> Option<Tls> {
    let mut f = Fields::of(node, path, d, "a mapping with `cert` and `key`")?;
    let cert = f
        .required("cert", d, "the certificate chain, a PEM file")
        .and_then(|n| non_empty(n, &f.path("cert"), d));
    let key = f
        .required("key", d, "the private key, a PEM file")
        .and_then(|n| non_empty(n, &f.path("key"), d));
    f.finish(d);
    Some(Tls {
        cert: cert?,
        key: key?,
    })
}

/// Reads `host:port`.
pub(crate) fn parse_listen(text: &str) -> Result<Listen, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| "an IPv6 address is written `[::1]:8080`".to_owned())?;
        if h.parse::<core::net::Ipv6Addr>().is_err() {
            return Err(format!("`{h}` is not an IPv6 address"));
        }
        (h, p)
    } else {
        let (h, p) = text
            .rsplit_once(':')
            .ok_or_else(|| "write `host:port`, e.g. `127.0.0.1:8080`".to_owned())?;
        if h.contains(':') {
            return Err("an IPv6 address is written in brackets: `[::1]:8080`".to_owned());
        }
        (h, p)
    };
    if host.is_empty() {
        return Err("the host is missing: `0.0.0.0:PORT` listens on every interface, `127.0.0.1:PORT` on this machine only".to_owned());
    }
    let looks_ipv4 = host.chars().all(|c| c.is_ascii_digit() || c == '.');
    if looks_ipv4 && host.parse::<core::net::Ipv4Addr>().is_err() {
        return Err(format!("`{host}` is not an IPv4 address"));
    }
    if !host.contains(':')
        && !host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    {
        // On one line, as `Node::describe` shows values: a block scalar's
        // line break would break the rendered hint.
        let host = host.replace('\n', "\\n");
        return Err(format!("`{host}` is not a host name or address"));
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(Listen {
            host: host.to_owned(),
            port: u16::try_from(p).unwrap_or(0),
        }),
        Ok(p) => Err(format!("port {p} is out of range 1..=65535")),
        Err(_) => Err(format!(
            "`{}` is not a port number",
            port.replace('\n', "\\n")
        )),
    }
}

fn decode_listen(node: &Node, path: &str, d: &mut Diags) -> Option<Listen> {
    let text = string(node, path, d)?;
    match parse_listen(&text) {
        Ok(l) => Some(l),
        Err(why) => {
            d.push(
                Diagnostic::error(
                    node.span,
                    path,
                    format!("expected `host:port`, found {}", node.describe()),
                )
                .with_hint(why),
            );
            None
        }
    }
}

fn positive_duration(node: &Node, path: &str, d: &mut Diags) -> Option<Duration> {
    let v = duration(node, path, d)?;
    if v.is_zero() {
        d.error(
            node.span,
            path,
            "expected a duration above zero, found `0s`",
        );
        return None;
    }
    Some(v)
}

fn decode_health(node: &Node, path: &str, d: &mut Diags) -> Option<Health> {
    let mut f = Fields::of(
        node,
        path,
        d,
        "a mapping with `readiness` and/or `liveness`",
    )?;
    let readiness = f
        .get("readiness")
        .map(|n| decode_probe(n, &f.path("readiness"), d));
    let liveness = f
        .get("liveness")
        .map(|n| decode_probe(n, &f.path("liveness"), d));
    f.finish(d);
    Some(Health {
        readiness: match readiness {
            Some(p) => Some(p?),
            None => None,
        },
        liveness: match liveness {
            Some(p) => Some(p?),
            None => None,
        },
    })
}

fn decode_probe(node: &Node, path: &str, d: &mut Diags) -> Option<Probe> {
    let mut f = Fields::of(node, path, d, "a probe (a mapping with `path`)")?;
    let probe_path = f.required("path", d, "the HTTP path to GET, e.g. `path: /ready`");
    let probe_path = probe_path.and_then(|n| {
        let p = string(n, &f.path("path"), d)?;
        if !p.starts_with('/') || p.chars().any(char::is_whitespace) {
            d.push(
                Diagnostic::error(
                    n.span,
                    &f.path("path"),
                    format!(
                        "expected an HTTP path starting with `/`, found {}",
                        n.describe()
                    ),
                )
                .with_hint("e.g. `/ready` or `/healthz`"),
            );
            return None;
        }
        Some(p)
    });
    let initial_delay = f
        .get("initialDelay")
        .map(|n| duration(n, &f.path("initialDelay"), d));
    let period = f
        .get("period")
        .map(|n| positive_duration(n, &f.path("period"), d));
    let timeout = f
        .get("timeout")
        .map(|n| positive_duration(n, &f.path("timeout"), d));
    let failure = f
        .get("failureThreshold")
        .map(|n| u32_in(n, &f.path("failureThreshold"), d, 1, 1000));
    let success = f
        .get("successThreshold")
        .map(|n| u32_in(n, &f.path("successThreshold"), d, 1, 1000));
    f.finish(d);
    Some(Probe {
        path: probe_path?,
        initial_delay: initial_delay.unwrap_or(Some(Duration::ZERO))?,
        period: period.unwrap_or(Some(Duration::from_secs(1)))?,
        timeout: timeout.unwrap_or(Some(Duration::from_secs(1)))?,
        failure_threshold: failure.unwrap_or(Some(3))?,
        success_threshold: success.unwrap_or(Some(1))?,
    })
}

/// How long an instance drains when the spec does not say.
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// `drain: 30s`, or `drain: {timeout: 30s, notify: {path: /drain}}` /
/// `notify: {signal: SIGUSR1}`.
fn decode_drain(node: &Node, path: &str, d: &mut Diags) -> Option<(Duration, Option<DrainNotify>)> {
    if node.as_scalar().is_some() {
        return duration(node, path, d).map(|t| (t, None));
    }
    let mut f = Fields::of(
        node,
        path,
        d,
        "a duration such as `30s`, or a mapping with `timeout` and `notify`",
    )?;
    let timeout = f.get("timeout").map(|n| duration(n, &f.path("timeout"), d));
    let notify = f.get("notify").map(|n| {
        let at = f.path("notify");
        let (key, value) = one_of(n, &at, d, &["path", "signal"], "`path` or `signal`")?;
        let at = join(&at, key);
        let text = non_empty(value, &at, d)?;
        match key {
            "path" if !text.starts_with('/') => {
                d.push(
                    Diagnostic::error(value.span, &at, format!("`{text}` is not a path"))
                        .with_hint(format!(
                            "write `path: /{text}`: the instance gets `POST /{text}`"
                        )),
                );
                None
            }
            "path" => Some(DrainNotify::Path(text)),
            _ => {
                let name = if text.starts_with("SIG") {
                    text.clone()
                } else {
                    format!("SIG{text}")
                };
                if DRAIN_SIGNALS.contains(&name.as_str()) {
                    Some(DrainNotify::Signal(name))
                } else {
                    let mut diag = Diagnostic::error(
                        value.span,
                        &at,
                        format!("`{text}` is not a signal `notify` can send"),
                    );
                    diag = match suggest(&name, DRAIN_SIGNALS.iter().copied()) {
                        Some(s) => diag.with_hint(format!("did you mean `{s}`?")),
                        None => diag.with_hint(format!("one of: {}", DRAIN_SIGNALS.join(", "))),
                    };
                    d.push(diag);
                    None
                }
            }
        }
    });
    // `drain: {signal: SIGUSR1}` reads naturally but the signal (or path)
    // goes under `notify`: say so rather than only "unknown field".
    if let NodeKind::Map(entries) = &node.kind {
        for (key, value) in entries {
            let Some(name @ ("path" | "signal")) = key.as_scalar() else {
                continue;
            };
            let example =
                value
                    .as_scalar()
                    .unwrap_or(if name == "path" { "/drain" } else { "SIGUSR1" });
            d.push(
                Diagnostic::error(
                    key.span,
                    &join(path, name),
                    format!("`{name}` belongs under `notify`"),
                )
                .with_hint(format!(
                    "write `drain: {{timeout: 10s, notify: {{{name}: {example}}}}}`"
                )),
            );
        }
        let _ = f.get("path");
        let _ = f.get("signal");
    }
    f.finish(d);
    let timeout = timeout.unwrap_or(Some(DEFAULT_DRAIN))?;
    let notify = match notify {
        Some(n) => Some(n?),
        None => None,
    };
    Some((timeout, notify))
}

/// A mapping with exactly one of `keys`; returns the key and its value.
fn one_of<'n>(
    node: &'n Node,
    path: &str,
    d: &mut Diags,
    keys: &[&'static str],
    what: &str,
) -> Option<(&'static str, &'n Node)> {
    let NodeKind::Map(entries) = &node.kind else {
        if let Some(text) = node.as_scalar()
            && let Some(k) = keys.iter().find(|k| **k == text)
        {
            d.push(
                Diagnostic::error(
                    node.span,
                    path,
                    format!("expected {what}, found {}", node.describe()),
                )
                .with_hint(format!("write `{k}: {{}}` (a mapping), not `{k}`")),
            );
            return None;
        }
        d.push(
            Diagnostic::error(
                node.span,
                path,
                format!("expected {what}, found {}", node.describe()),
            )
            .with_hint(format!("one of: {}", keys.join(", "))),
        );
        return None;
    };
    if entries.len() != 1 {
        let msg = if entries.is_empty() {
            format!("expected {what}, found an empty mapping")
        } else {
            format!(
                "expected exactly one of {}, found {} keys",
                keys.join(", "),
                entries.len()
            )
        };
        d.push(
            Diagnostic::error(node.span, path, msg).with_hint("split them into separate entries"),
        );
        return None;
    }
    let (k, v) = &entries[0];
    let name = k.as_scalar().unwrap_or("");
    match keys.iter().find(|key| **key == name) {
        Some(key) => Some((key, v)),
        None => {
            let mut diag =
                Diagnostic::error(k.span, &join(path, name), format!("unknown field `{name}`"));
            diag = match suggest(name, keys.iter().copied()) {
                Some(s) => diag.with_hint(format!("did you mean `{s}`?")),
                None => diag.with_hint(format!("expected one of: {}", keys.join(", "))),
            };
            d.push(diag);
            None
        }
    }
}

fn decode_strategy(node: &Node, path: &str, cx: &mut Cx) -> Option<Strategy> {
    let (key, value) = one_of(
        node,
        path,
        &mut cx.d,
        &["rolling", "blueGreen", "canary"],
        "a strategy (`rolling`, `blueGreen` or `canary`)",
    )?;
    let path = join(path, key);
    match key {
        "rolling" => decode_rolling(value, &path, &mut cx.d).map(Strategy::Rolling),
        "blueGreen" => decode_blue_green(value, &path, &mut cx.d).map(Strategy::BlueGreen),
        _ => decode_canary(value, &path, cx).map(Strategy::Canary),
    }
}

fn int_or_percent(node: &Node, path: &str, d: &mut Diags) -> Option<IntOrPercent> {
    let text = node.as_scalar().unwrap_or("");
    if let Some(p) = text.strip_suffix('%') {
        return match p.parse::<u8>() {
            Ok(p) if p <= 100 => Some(IntOrPercent::Percent(p)),
            _ => {
                d.expected(node, path, "a count or a percent from 0% to 100%");
                None
            }
        };
    }
    match &node.kind {
        NodeKind::Scalar { quoted: false, .. } => match text.parse::<u32>() {
            Ok(n) if n <= 1000 => Some(IntOrPercent::Count(n)),
            _ => {
                d.expected(node, path, "a count (0-1000) or a percent such as `25%`");
                None
            }
        },
        _ => {
            d.expected(node, path, "a count (0-1000) or a percent such as `25%`");
            None
        }
    }
}

fn decode_rolling(node: &Node, path: &str, d: &mut Diags) -> Option<Rolling> {
    let mut f = Fields::of(
        node,
        path,
        d,
        "a mapping with `maxSurge` and `maxUnavailable`",
    )?;
    let surge = f
        .get("maxSurge")
        .map(|n| int_or_percent(n, &f.path("maxSurge"), d));
    let unavailable = f
        .get("maxUnavailable")
        .map(|n| int_or_percent(n, &f.path("maxUnavailable"), d));
    let span = f.span();
    f.finish(d);
    let rolling = Rolling {
        max_surge: surge.unwrap_or(Some(IntOrPercent::Percent(25)))?,
        max_unavailable: unavailable.unwrap_or(Some(IntOrPercent::Count(0)))?,
    };
    let zero = |v: IntOrPercent| matches!(v, IntOrPercent::Count(0) | IntOrPercent::Percent(0));
    if zero(rolling.max_surge) && zero(rolling.max_unavailable) {
        d.push(
            Diagnostic::error(
                span,
                path,
                "`maxSurge` and `maxUnavailable` are both 0: the update could never make progress",
            )
            .with_hint(
                "allow one extra instance (`maxSurge: 1`) or one missing (`maxUnavailable: 1`)",
            ),
        );
        return None;
    }
    Some(rolling)
}

fn decode_blue_green(node: &Node, path: &str, d: &mut Diags) -> Option<BlueGreen> {
    let mut f = Fields::of(node, path, d, "a mapping (may be empty: `blueGreen: {}`)")?;
    let preview = f
        .get("previewListen")
        .map(|n| decode_listen(n, &f.path("previewListen"), d));
    let enabled_node = f.get("autoPromotionEnabled");
    let enabled = enabled_node.map(|n| boolean(n, &f.path("autoPromotionEnabled"), d));
    let seconds_node = f.get("autoPromotionSeconds");
    let seconds = seconds_node.map(|n| u32_in(n, &f.path("autoPromotionSeconds"), d, 0, 86_400));
    let delay = f
        .get("scaleDownDelay")
        .map(|n| duration(n, &f.path("scaleDownDelay"), d));
    f.finish(d);
    let promotion = match (enabled, seconds) {
        (Some(Some(false)), Some(_)) => {
            if let Some(n) = seconds_node {
                d.push(
                    Diagnostic::error(n.span, &join(path, "autoPromotionSeconds"), "`autoPromotionSeconds` with `autoPromotionEnabled: false`")
                        .with_hint("keep one: a delay to promote automatically, or `false` to wait for `hatoba promote`"),
                );
            }
            None
        }
        (_, Some(s)) => {
            s.map(|s| Promotion::AutoPromotionSeconds(Duration::from_secs(u64::from(s))))
        }
        (Some(e), None) => e.map(Promotion::AutoPromotionEnabled),
        (None, None) => Some(Promotion::AutoPromotionEnabled(true)),
    };
    Some(BlueGreen {
        preview_listen: match preview {
            Some(p) => Some(p?),
            None => None,
        },
        promotion: promotion?,
        scale_down_delay: delay.unwrap_or(Some(Duration::from_secs(30)))?,
    })
}

fn decode_canary(node: &Node, path: &str, cx: &mut Cx) -> Option<Canary> {
    let mut f = Fields::of(node, path, &mut cx.d, "a mapping with `steps`")?;
    let steps_node = f.required(
        "steps",
        &mut cx.d,
        "e.g. `steps: [{setWeight: 10}, {pause: {duration: 5m}}, {setWeight: 50}]`",
    );
    let max_weight = f
        .get("maxWeight")
        .map(|n| weight(n, &f.path("maxWeight"), &mut cx.d));
    let analysis = f
        .get("analysis")
        .map(|n| decode_analysis_ref(n, &f.path("analysis"), cx));
    f.finish(&mut cx.d);
    let max_weight = max_weight.unwrap_or(Some(Weight::FULL))?;
    let steps_path = join(path, "steps");
    let steps = steps_node.and_then(|n| {
        let NodeKind::Seq(items) = &n.kind else {
            cx.d.expected(n, &steps_path, "a list of steps");
            return None;
        };
        let mut steps = Vec::new();
        let mut ok = true;
        let mut last: Option<(Weight, usize)> = None;
        for (i, item) in items.iter().enumerate() {
            let p = index(&steps_path, i);
            match decode_step(item, &p, cx) {
                Some((step, span)) => {
                    if let Step::SetWeight(w) = step {
                        if w > max_weight {
                            cx.d.push(
                                Diagnostic::error(
                                    span,
                                    &join(&p, "setWeight"),
                                    format!(
                                        "weight {} is above `maxWeight` {}",
                                        w.percent(),
                                        max_weight.percent()
                                    ),
                                )
                                .with_hint("raise `maxWeight` or lower the step"),
                            );
                            ok = false;
                        }
                        if let Some((prev, at)) = last
                            && w < prev
                        {
                            cx.d.push(
                                Diagnostic::error(
                                    span,
                                    &join(&p, "setWeight"),
                                    format!(
                                        "weight {} is below the {} set by steps[{at}]",
                                        w.percent(),
                                        prev.percent()
                                    ),
                                )
                                .with_hint(
                                    "canary weights only go up; to go back, abort the rollout",
                                ),
                            );
                            ok = false;
                        }
                        last = Some((w, i));
                    }
                    steps.push(step);
                }
                None => ok = false,
            }
        }
        ok.then_some(steps)
    });
    Some(Canary {
        steps: steps?,
        max_weight,
        analysis: match analysis {
            Some(a) => Some(a?),
            None => None,
        },
    })
}

fn weight(node: &Node, path: &str, d: &mut Diags) -> Option<Weight> {
    let n = match &node.kind {
        NodeKind::Scalar {
            text,
            quoted: false,
        } => text.parse::<i64>().ok(),
        _ => None,
    };
    match n.map(Weight::new) {
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            d.push(
                Diagnostic::error(
                    node.span,
                    path,
                    format!("expected a weight from 0 to 100, found {}", e.found),
                )
                .with_hint("weights are percents of traffic"),
            );
            None
        }
        None => {
            let hint = node
                .as_scalar()
                .filter(|t| t.ends_with('%'))
                .map(|t| format!("write `{}` without `%`", t.trim_end_matches('%')));
            let diag = Diagnostic::error(
                node.span,
                path,
                format!("expected a weight from 0 to 100, found {}", node.describe()),
            );
            d.push(match hint {
                Some(h) => diag.with_hint(h),
                None => diag,
            });
            None
        }
    }
}

fn decode_step(node: &Node, path: &str, cx: &mut Cx) -> Option<(Step, Span)> {
    let (key, value) = one_of(
        node,
        path,
        &mut cx.d,
        &["setWeight", "pause", "analysis"],
        "a step (`setWeight`, `pause` or `analysis`)",
    )?;
    let p = join(path, key);
    let step = match key {
        "setWeight" => Step::SetWeight(weight(value, &p, &mut cx.d)?),
        "pause" => match &value.kind {
            NodeKind::Null => Step::Pause(Pause { duration: None }),
            NodeKind::Scalar { .. } => Step::Pause(Pause {
                duration: Some(duration(value, &p, &mut cx.d)?),
            }),
            _ => {
                let mut f = Fields::of(
                    value,
                    &p,
                    &mut cx.d,
                    "a mapping: `{duration: 5m}`, or `{}` to wait for `hatoba promote`",
                )?;
                let dur = f
                    .get("duration")
                    .map(|n| duration(n, &f.path("duration"), &mut cx.d));
                f.finish(&mut cx.d);
                Step::Pause(Pause {
                    duration: match dur {
                        Some(v) => Some(v?),
                        None => None,
                    },
                })
            }
        },
        _ => Step::Analysis(decode_analysis_ref(value, &p, cx)?),
    };
    Some((step, value.span))
}

fn decode_analysis_ref(node: &Node, path: &str, cx: &mut Cx) -> Option<AnalysisRef> {
    let mut f = Fields::of(node, path, &mut cx.d, "a mapping with `templates`")?;
    let templates_node = f.required(
        "templates",
        &mut cx.d,
        "name templates from `analysis.templates`, e.g. `templates: [success-rate]`",
    );
    let args = f
        .get("args")
        .map(|n| string_map(n, &f.path("args"), &mut cx.d));
    let tpath = f.path("templates");
    f.finish(&mut cx.d);
    let args = args.unwrap_or(Some(BTreeMap::new()))?;
    let templates_node = templates_node?;
    let templates = string_list(templates_node, &tpath, &mut cx.d)?;
    if templates.is_empty() {
        cx.d.error(
            templates_node.span,
            &tpath,
            "expected at least one template, found an empty list",
        );
        return None;
    }
    if let NodeKind::Seq(items) = &templates_node.kind {
        for (i, (name, item)) in templates.iter().zip(items).enumerate() {
            cx.template_uses.push(TemplateUse {
                name: name.clone(),
                args: args.clone(),
                span: item.span,
                path: index(&tpath, i),
            });
        }
    }
    Some(AnalysisRef { templates, args })
}

/// The templates, and the names of all templates written (also those that
/// failed to decode, so references to them are not reported as unknown).
fn decode_analysis(node: &Node, lines: &[&str], cx: &mut Cx) -> (Option<Analysis>, Vec<String>) {
    let d = &mut cx.d;
    let Some(mut f) = Fields::of(node, "analysis", d, "a mapping with `templates`") else {
        return (None, Vec::new());
    };
    let templates_node = f.get("templates");
    f.finish(d);
    let mut templates = BTreeMap::new();
    let mut names = Vec::new();
    let mut ok = true;
    if let Some(node) = templates_node {
        let NodeKind::Map(entries) = &node.kind else {
            d.expected(
                node,
                "analysis.templates",
                "a mapping of template names to templates",
            );
            return (None, names);
        };
        for (k, v) in entries {
            let name = k.as_scalar().unwrap_or("").to_owned();
            names.push(name.clone());
            match decode_template(v, &join("analysis.templates", &name), lines, d) {
                Some(t) => {
                    templates.insert(name, t);
                }
                None => ok = false,
            }
        }
    }
    (ok.then_some(Analysis { templates }), names)
}

fn decode_template(
    node: &Node,
    path: &str,
    lines: &[&str],
    d: &mut Diags,
) -> Option<AnalysisTemplate> {
    let mut f = Fields::of(node, path, d, "a template (a mapping with `metrics`)")?;
    let args = f.get("args").map(|n| {
        list(
            n,
            &f.path("args"),
            d,
            "a list of `{name: ..., value: ...}`",
            |item, p, d| {
                let mut af = Fields::of(item, p, d, "a mapping with `name`")?;
                let name = af
                    .required("name", d, "the argument's name")
                    .and_then(|n| non_empty(n, &af.path("name"), d));
                let value = af.get("value").map(|n| string(n, &af.path("value"), d));
                af.finish(d);
                Some(TemplateArg {
                    name: name?,
                    value: match value {
                        Some(v) => Some(v?),
                        None => None,
                    },
                })
            },
        )
    });
    let metrics_node = f.required("metrics", d, "a template measures at least one metric");
    let metrics_path = f.path("metrics");
    let traffic = f
        .get("traffic")
        .map(|n| decode_traffic(n, &f.path("traffic"), d));
    let judge = f.get("judge").map(|n| boolean(n, &f.path("judge"), d));
    f.finish(d);
    let pcx = ProviderCx {
        lines,
        args: match &args {
            None => Some(Vec::new()),
            Some(Some(args)) => Some(args.iter().map(|a| a.name.clone()).collect()),
            Some(None) => None,
        },
    };
    let metrics = metrics_node.and_then(|n| {
        let metrics = list(n, &metrics_path, d, "a list of metrics", |n, p, d| {
            decode_metric(n, p, d, &pcx)
        })?;
        if metrics.is_empty() {
            d.error(
                n.span,
                &metrics_path,
                "expected at least one metric, found an empty list",
            );
            return None;
        }
        if let NodeKind::Seq(items) = &n.kind {
            for (i, m) in metrics.iter().enumerate() {
                if let Some(j) = metrics[..i].iter().position(|o| o.name == m.name) {
                    d.push(
                        Diagnostic::error(
                            items[i].span,
                            &index(&metrics_path, i),
                            format!(
                                "metric name `{}` is used twice (first at metrics[{j}])",
                                m.name
                            ),
                        )
                        .with_hint("metric names are unique within a template"),
                    );
                    return None;
                }
            }
        }
        Some(metrics)
    });
    Some(AnalysisTemplate {
        args: args.unwrap_or(Some(Vec::new()))?,
        metrics: metrics?,
        traffic: match traffic {
            Some(t) => Some(t?),
            None => None,
        },
        judge: match judge {
            Some(j) => j?,
            None => true,
        },
    })
}

/// `traffic: {minRequests: 20, generate: {path: /, rate: 10}}`.
fn decode_traffic(node: &Node, path: &str, d: &mut Diags) -> Option<AnalysisTraffic> {
    let mut f = Fields::of(
        node,
        path,
        d,
        "a mapping with `minRequests` and/or `generate`",
    )?;
    let min_requests = f
        .get("minRequests")
        .map(|n| u32_in(n, &f.path("minRequests"), d, 1, 100_000_000));
    let generate = f.get("generate").map(|n| {
        let gpath = f.path("generate");
        let mut g = Fields::of(n, &gpath, d, "a mapping with `path` and `rate`")?;
        let req_path = g
            .required("path", d, "the HTTP path to GET, e.g. `path: /`")
            .and_then(|n| {
                let p = string(n, &g.path("path"), d)?;
                if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    d.push(
                        Diagnostic::error(
                            n.span,
                            &g.path("path"),
                            format!(
                                "expected an HTTP path starting with `/`, found {}",
                                n.describe()
                            ),
                        )
                        .with_hint("e.g. `/` or `/health`: a cheap path that answers 2xx"),
                    );
                    return None;
                }
                Some(p)
            });
        let rate = g
            .required(
                "rate",
                d,
                "requests per second to each version, e.g. `rate: 10`",
            )
            .and_then(|n| u32_in(n, &g.path("rate"), d, 1, 1000));
        g.finish(d);
        Some(GenerateTraffic {
            path: req_path?,
            rate: rate?,
        })
    });
    f.finish(d);
    Some(AnalysisTraffic {
        min_requests: match min_requests {
            Some(m) => Some(u64::from(m?)),
            None => None,
        },
        generate: match generate {
            Some(g) => Some(g?),
            None => None,
        },
    })
}

fn condition(node: &Node, path: &str, lines: &[&str], d: &mut Diags) -> Option<Condition> {
    let text = string(node, path, d)?;
    match Condition::parse(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            // The token it found, underlined whole where its place in the
            // source is exact; else the scalar, with the place in its text
            // in the message (a folded or multi-line condition, its end).
            let message = format!("invalid condition `{text}`: {}", e.message);
            let hint = "conditions compare `result` with numbers, e.g. `result >= 0.95`; combine with `&&`, `||`, `!`";
            // Found the end: just past the last character, when that is exact.
            if e.offset > 0
                && e.offset == text.chars().count()
                && let Some(mut span) = yaml::locate(lines, node, e.offset - 1, 1)
            {
                span.start.col += 1;
                d.push(Diagnostic::error(span, path, message).with_hint(hint));
                return None;
            }
            let error = TextError {
                offset: e.offset,
                len: e.len,
                message,
                hint: hint.to_owned(),
            };
            text_error(node, path, lines, error, d);
            None
        }
    }
}

fn decode_metric(node: &Node, path: &str, d: &mut Diags, pcx: &ProviderCx<'_>) -> Option<Metric> {
    let mut f = Fields::of(
        node,
        path,
        d,
        "a metric (a mapping with `name` and `provider`)",
    )?;
    let name = f
        .required(
            "name",
            d,
            "a name for the metric, e.g. `name: success-rate`",
        )
        .and_then(|n| non_empty(n, &f.path("name"), d));
    let provider = f.required(
        "provider",
        d,
        "where the value comes from: `builtin`, `prometheus`, `webhook` or `command`",
    );
    let provider = provider.map(|n| decode_provider(n, &f.path("provider"), d, pcx));
    let interval = f
        .get("interval")
        .map(|n| positive_duration(n, &f.path("interval"), d));
    let count = f
        .get("count")
        .map(|n| u32_in(n, &f.path("count"), d, 1, 1_000_000));
    let success = f
        .get("successCondition")
        .map(|n| condition(n, &f.path("successCondition"), pcx.lines, d));
    let failure = f
        .get("failureCondition")
        .map(|n| condition(n, &f.path("failureCondition"), pcx.lines, d));
    let failure_limit = f
        .get("failureLimit")
        .map(|n| u32_in(n, &f.path("failureLimit"), d, 0, 1_000_000));
    let inconclusive_limit = f
        .get("inconclusiveLimit")
        .map(|n| u32_in(n, &f.path("inconclusiveLimit"), d, 0, 1_000_000));
    let error_limit = f
        .get("consecutiveErrorLimit")
        .map(|n| u32_in(n, &f.path("consecutiveErrorLimit"), d, 0, 1_000_000));
    let min_samples = f
        .get("minSamples")
        .map(|n| u32_in(n, &f.path("minSamples"), d, 1, 100_000_000));
    let span = f.span();
    f.finish(d);
    let provider = provider??;
    if success.is_none() && failure.is_none() && !matches!(provider, Provider::Command(_)) {
        d.push(
            Diagnostic::error(
                span,
                path,
                "a metric needs `successCondition` or `failureCondition`",
            )
            .with_hint("e.g. `successCondition: result >= 0.95`"),
        );
        return None;
    }
    Some(Metric {
        name: name?,
        provider,
        interval: interval.unwrap_or(Some(Duration::from_secs(60)))?,
        count: match count {
            Some(c) => Some(c?),
            None => None,
        },
        success_condition: match success {
            Some(c) => Some(c?),
            None => None,
        },
        failure_condition: match failure {
            Some(c) => Some(c?),
            None => None,
        },
        failure_limit: failure_limit.unwrap_or(Some(0))?,
        inconclusive_limit: inconclusive_limit.unwrap_or(Some(0))?,
        consecutive_error_limit: error_limit.unwrap_or(Some(4))?,
        min_samples: match min_samples {
            Some(m) => Some(u64::from(m?)),
            None => None,
        },
    })
}

fn http_url(node: &Node, path: &str, d: &mut Diags) -> Option<String> {
    let url = non_empty(node, path, d)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        d.push(
            Diagnostic::error(
                node.span,
                path,
                format!(
                    "expected an http:// or https:// URL, found {}",
                    node.describe()
                ),
            )
            .with_hint("e.g. `http://127.0.0.1:9090`"),
        );
        return None;
    }
    Some(url)
}

/// Records a mistake found inside a scalar's text: at its exact place when
/// that can be computed (see `yaml::locate`), else at the scalar's start,
/// with the place in the text added to the message.
fn text_error(node: &Node, path: &str, lines: &[&str], e: TextError, d: &mut Diags) {
    let (span, message) = match yaml::locate(lines, node, e.offset, e.len) {
        Some(span) => (span, e.message),
        None if e.offset == 0 => (node.span, e.message),
        None => {
            // Not exact (a folded or multi-line quoted scalar, an alias):
            // point at the scalar's start and say where in its text.
            let before: Vec<char> = node
                .as_scalar()
                .unwrap_or("")
                .chars()
                .take(e.offset)
                .collect();
            let line = before.iter().filter(|c| **c == '\n').count() + 1;
            let col = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
            let place = if line == 1 {
                format!("character {col} of the text")
            } else {
                format!("line {line}, character {col} of the text")
            };
            (node.span, format!("{} (at {place})", e.message))
        }
    };
    d.push(Diagnostic::error(span, path, message).with_hint(e.hint));
}

/// Checks the `{{name}}` placeholders of a provider's string; false (with
/// a diagnostic) when one is unclosed or unknown.
fn placeholders_ok(
    node: &Node,
    text: &str,
    path: &str,
    d: &mut Diags,
    pcx: &ProviderCx<'_>,
) -> bool {
    match provider_syntax::check_placeholders(text, pcx.args.as_deref()) {
        Ok(()) => true,
        Err(e) => {
            text_error(node, path, pcx.lines, e, d);
            false
        }
    }
}

/// A provider's string that may use `{{name}}` placeholders.
fn placeholder_string(
    node: &Node,
    path: &str,
    d: &mut Diags,
    pcx: &ProviderCx<'_>,
) -> Option<String> {
    let s = string(node, path, d)?;
    placeholders_ok(node, &s, path, d, pcx).then_some(s)
}

fn decode_provider(
    node: &Node,
    path: &str,
    d: &mut Diags,
    pcx: &ProviderCx<'_>,
) -> Option<Provider> {
    let (key, value) = one_of(
        node,
        path,
        d,
        &["builtin", "prometheus", "webhook", "command"],
        "a provider (`builtin`, `prometheus`, `webhook` or `command`)",
    )?;
    let path = join(path, key);
    let mut f = Fields::of(value, &path, d, "a mapping")?;
    let provider = match key {
        "builtin" => {
            let metric = f.required("metric", d, "one of: success-rate, error-rate, latency-p50, latency-p95, latency-p99, request-rate, long-lived-open, long-lived-abnormal");
            let metric = metric.and_then(|n| {
                let text = string(n, &f.path("metric"), d)?;
                let found = BuiltinMetric::ALL
                    .iter()
                    .find(|(name, _)| *name == text)
                    .map(|(_, m)| *m);
                if found.is_none() {
                    let names = BuiltinMetric::ALL.map(|(n, _)| n);
                    let hint = match suggest(&text, names) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("one of: {}", names.join(", ")),
                    };
                    d.push(
                        Diagnostic::error(
                            n.span,
                            &f.path("metric"),
                            format!("unknown builtin metric `{text}`"),
                        )
                        .with_hint(hint),
                    );
                }
                found
            });
            let window = f.get("window").map(|n| {
                let w = positive_duration(n, &f.path("window"), d)?;
                // Any other length would be silently read as the next kept
                // window (`30s` as `1m`, `1h` as `5m`).
                let kept = BuiltinProvider::kept_window(w);
                if kept != w {
                    d.push(
                        Diagnostic::warning(
                            n.span,
                            &f.path("window"),
                            format!(
                                "the proxy keeps 10s, 1m and 5m windows: `{}` is read as `{}`",
                                hatoba_core::format_duration(w),
                                hatoba_core::format_duration(kept)
                            ),
                        )
                        .with_hint("write `10s`, `1m` or `5m`"),
                    );
                }
                Some(w)
            });
            f.finish(d);
            Provider::Builtin(BuiltinProvider {
                metric: metric?,
                window: match window {
                    Some(w) => Some(w?),
                    None => None,
                },
            })
        }
        "prometheus" => {
            let address = f
                .required(
                    "address",
                    d,
                    "the Prometheus server, e.g. `http://127.0.0.1:9090`",
                )
                .and_then(|n| http_url(n, &f.path("address"), d));
            let query = f
                .required("query", d, "a PromQL query returning one number")
                .and_then(|n| {
                    let path = f.path("query");
                    let q = string(n, &path, d)?;
                    match provider_syntax::check_promql(&q, pcx.args.as_deref()) {
                        Ok(()) => Some(q),
                        Err(e) => {
                            text_error(n, &path, pcx.lines, e, d);
                            None
                        }
                    }
                });
            let timeout = f
                .get("timeout")
                .map(|n| positive_duration(n, &f.path("timeout"), d));
            f.finish(d);
            Provider::Prometheus(PrometheusProvider {
                address: address?,
                query: query?,
                timeout: timeout.unwrap_or(Some(Duration::from_secs(10)))?,
            })
        }
        "webhook" => {
            let url = f.required("url", d, "the URL to call").and_then(|n| {
                let url = http_url(n, &f.path("url"), d)?;
                placeholders_ok(n, &url, &f.path("url"), d, pcx).then_some(url)
            });
            let method = f.get("method").map(|n| {
                let m = string(n, &f.path("method"), d)?;
                if m != "GET" && m != "POST" {
                    d.expected(n, &f.path("method"), "`GET` or `POST`");
                    return None;
                }
                Some(m)
            });
            let headers = f.get("headers").map(|n| {
                let path = f.path("headers");
                let map = string_map(n, &path, d)?;
                let mut ok = true;
                if let NodeKind::Map(entries) = &n.kind {
                    for (k, v) in entries {
                        if let Some(value) = v.as_scalar() {
                            let p = join(&path, k.as_scalar().unwrap_or(""));
                            ok &= placeholders_ok(v, value, &p, d, pcx);
                        }
                    }
                }
                ok.then_some(map)
            });
            let body = f
                .get("body")
                .map(|n| placeholder_string(n, &f.path("body"), d, pcx));
            let json_path = f.required(
                "jsonPath",
                d,
                "where the number is in the answer, e.g. `jsonPath: $.result`",
            );
            let json_path = json_path.and_then(|n| {
                let p = non_empty(n, &f.path("jsonPath"), d)?;
                if !p.trim_start().starts_with('$') {
                    d.push(
                        Diagnostic::error(
                            n.span,
                            &f.path("jsonPath"),
                            format!(
                                "expected a JSON path starting with `$`, found {}",
                                n.describe()
                            ),
                        )
                        .with_hint("e.g. `$.data.value`"),
                    );
                    return None;
                }
                if let Err(e) = provider_syntax::check_json_path(&p) {
                    text_error(n, &f.path("jsonPath"), pcx.lines, e, d);
                    return None;
                }
                Some(p)
            });
            let timeout = f
                .get("timeout")
                .map(|n| positive_duration(n, &f.path("timeout"), d));
            f.finish(d);
            Provider::Webhook(WebhookProvider {
                url: url?,
                method: method.unwrap_or(Some("GET".to_owned()))?,
                headers: headers.unwrap_or(Some(BTreeMap::new()))?,
                body: match body {
                    Some(b) => Some(b?),
                    None => None,
                },
                json_path: json_path?,
                timeout: timeout.unwrap_or(Some(Duration::from_secs(10)))?,
            })
        }
        _ => {
            let command = f
                .required("command", d, "the program to run")
                .and_then(|n| {
                    let command = non_empty(n, &f.path("command"), d)?;
                    placeholders_ok(n, &command, &f.path("command"), d, pcx).then_some(command)
                });
            let args = f.get("args").map(|n| {
                list(n, &f.path("args"), d, "a list of strings", |item, p, d| {
                    placeholder_string(item, p, d, pcx)
                })
            });
            let timeout = f
                .get("timeout")
                .map(|n| positive_duration(n, &f.path("timeout"), d));
            f.finish(d);
            Provider::Command(CommandProvider {
                command: command?,
                args: args.unwrap_or(Some(Vec::new()))?,
                timeout: timeout.unwrap_or(Some(Duration::from_secs(30)))?,
            })
        }
    };
    Some(provider)
}

fn decode_environment(
    node: &Node,
    path: &str,
    service_nodes: &BTreeMap<ServiceName, &Node>,
    top_secrets: &[String],
    cx: &mut Cx,
) -> Option<Environment> {
    let mut f = Fields::of(node, path, &mut cx.d, "an environment (a mapping)")?;
    let approval = f
        .get("requireApproval")
        .map(|n| boolean(n, &f.path("requireApproval"), &mut cx.d));
    let variables_node = f.get("variables");
    let variables = variables_node.map(|n| string_map(n, &f.path("variables"), &mut cx.d));
    let (secrets, mut secrets_ok) = match f.get("secrets") {
        Some(n) => secret_names(n, &f.path("secrets"), top_secrets, &mut cx.d),
        None => (Vec::new(), true),
    };
    let all_secrets: Vec<String> = top_secrets.iter().chain(&secrets).cloned().collect();
    if let Some(NodeKind::Map(entries)) = variables_node.map(|n| &n.kind) {
        for (k, _) in entries {
            let key = k.as_scalar().unwrap_or("");
            if all_secrets.iter().any(|s| s == key) {
                cx.d.push(
                    Diagnostic::error(
                        k.span,
                        &join(&f.path("variables"), key),
                        format!("`{key}` is declared a secret: its value can not be written in the spec"),
                    )
                    .with_hint(format!(
                        "remove it here and store it with `hatoba secret set {key} --env {}` (the value on stdin)",
                        path.rsplit('.').next().unwrap_or("ENV")
                    )),
                );
                secrets_ok = false;
            }
        }
    }
    let overrides = f.get("services");
    let services_path = f.path("services");
    f.finish(&mut cx.d);
    let mut override_nodes: BTreeMap<ServiceName, &Node> = BTreeMap::new();
    let mut ok = true;
    if let Some(node) = overrides {
        match &node.kind {
            NodeKind::Map(entries) => {
                for (k, v) in entries {
                    let text = k.as_scalar().unwrap_or("");
                    let known = text
                        .parse::<ServiceName>()
                        .ok()
                        .filter(|n| service_nodes.contains_key(n));
                    match known {
                        Some(name) => {
                            override_nodes.insert(name, v);
                        }
                        None => {
                            let names: Vec<&str> =
                                service_nodes.keys().map(ServiceName::as_str).collect();
                            let hint = match suggest(text, names.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("services are: {}", names.join(", ")),
                            };
                            cx.d.push(
                                Diagnostic::error(
                                    k.span,
                                    &join(&services_path, text),
                                    format!("override of unknown service `{text}`"),
                                )
                                .with_hint(hint),
                            );
                            ok = false;
                        }
                    }
                }
            }
            _ => {
                cx.d.expected(
                    node,
                    &services_path,
                    "a mapping of service names to overrides",
                );
                ok = false;
            }
        }
    }
    let mut services = BTreeMap::new();
    for (name, base) in service_nodes {
        let merged = match override_nodes.get(name) {
            Some(o) => merge(base, o),
            None => (*base).clone(),
        };
        check_secret_uses(
            &merged,
            &join(&services_path, name.as_str()),
            &all_secrets,
            &mut cx.d,
        );
        match decode_service(&merged, &join(&services_path, name.as_str()), cx) {
            Some(s) => {
                services.insert(name.clone(), s);
            }
            None => ok = false,
        }
    }
    let env = Environment {
        require_approval: approval.unwrap_or(Some(false))?,
        variables: variables.unwrap_or(Some(BTreeMap::new()))?,
        secrets,
        services,
    };
    (ok && secrets_ok).then_some(env)
}

/// Merges an override over a base: mappings key by key (recursively), lists
/// and scalars replace. Spans stay those of the side each node came from.
fn merge(base: &Node, over: &Node) -> Node {
    match (&base.kind, &over.kind) {
        (NodeKind::Map(b), NodeKind::Map(o)) => {
            let mut entries: Vec<(Node, Node)> = b.clone();
            for (ok, ov) in o {
                match entries
                    .iter_mut()
                    .find(|(bk, _)| bk.as_scalar() == ok.as_scalar())
                {
                    Some((_, bv)) => *bv = merge(bv, ov),
                    None => entries.push((ok.clone(), ov.clone())),
                }
            }
            Node {
                span: over.span,
                kind: NodeKind::Map(entries),
            }
        }
        _ => over.clone(),
    }
}

fn check_template_uses(analysis: Option<&Analysis>, names: &[String], cx: &mut Cx) {
    let uses = std::mem::take(&mut cx.template_uses);
    for u in uses {
        if !names.contains(&u.name) {
            let hint = match suggest(&u.name, names.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.is_empty() => "define it under `analysis.templates`".to_owned(),
                None => format!("templates are: {}", names.join(", ")),
            };
            cx.d.push(
                Diagnostic::error(
                    u.span,
                    &u.path,
                    format!("unknown analysis template `{}`", u.name),
                )
                .with_hint(hint),
            );
            continue;
        }
        match analysis.and_then(|a| a.templates.get(&u.name)) {
            None => {}
            Some(t) => {
                for arg in &t.args {
                    if arg.value.is_none() && !u.args.contains_key(&arg.name) {
                        cx.d.push(
                            Diagnostic::error(
                                u.span,
                                &u.path,
                                format!(
                                    "template `{}` needs argument `{}`, which is not given",
                                    u.name, arg.name
                                ),
                            )
                            .with_hint(format!(
                                "add `args: {{{}: ...}}` beside `templates`",
                                arg.name
                            )),
                        );
                    }
                }
            }
        }
    }
}

/// Two services (or a preview) on one address can not both listen.
fn check_listeners(
    services: &BTreeMap<ServiceName, Service>,
    nodes: &BTreeMap<ServiceName, &Node>,
    cx: &mut Cx,
) {
    let mut seen: Vec<(Listen, String)> = Vec::new();
    for (name, svc) in services {
        let mut addrs = vec![(
            svc.route.listen.clone(),
            join(&join("services", name.as_str()), "route.listen"),
        )];
        if let Strategy::BlueGreen(bg) = &svc.strategy
            && let Some(p) = &bg.preview_listen
        {
            addrs.push((
                p.clone(),
                join(
                    &join("services", name.as_str()),
                    "strategy.blueGreen.previewListen",
                ),
            ));
        }
        for (addr, path) in addrs {
            if let Some((_, first)) = seen.iter().find(|(a, _)| {
                a.port == addr.port
                    && (a.host == addr.host || is_any(&a.host) || is_any(&addr.host))
            }) {
                let span = nodes
                    .get(name)
                    .map(|n| find_span(n, &path))
                    .unwrap_or_default();
                cx.d.push(
                    Diagnostic::error(
                        span,
                        &path,
                        format!("address {addr} is already used by {first}"),
                    )
                    .with_hint("every route and preview needs its own port"),
                );
            } else {
                seen.push((addr, path));
            }
        }
    }
}

fn is_any(host: &str) -> bool {
    host == "0.0.0.0" || host == "::"
}

/// The span of the node at a dotted path below a service node (best effort:
/// falls back to the service's own span).
fn find_span(service: &Node, path: &str) -> Span {
    let mut node = service;
    for part in path.split('.').skip(2) {
        let NodeKind::Map(entries) = &node.kind else {
            break;
        };
        match entries.iter().find(|(k, _)| k.as_scalar() == Some(part)) {
            Some((_, v)) => node = v,
            None => break,
        }
    }
    node.span
}

#[cfg(test)]
mod tests {
    use crate::parse;
    use hatoba_core::EnvName;

    fn docker_service(fields: &str) -> String {
        format!(
            "app: shop\nservices:\n  web:\n    docker:\n{fields}    route: {{listen: 127.0.0.1:8080}}\n"
        )
    }

    #[test]
    fn a_docker_service_reads_every_field() {
        let text = docker_service(
            "      image: \"shop/web:${VERSION}\"\n      build: {context: ./app, dockerfile: Dockerfile.prod, args: {GIT: \"${VERSION}\"}, target: runtime}\n      port: 3000\n      command: [/bin/web]\n      args: [--port, \"${PORT}\"]\n      env: {LOG: info}\n      user: \"1000:1000\"\n      memory: 256m\n      cpus: 0.5\n      readOnly: true\n      volumes: [\"./data:/data\", \"cache:/cache:ro\"]\n      network: shop-net\n      keepImages: 3\n",
        );
        let parsed = parse(&text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let spec = parsed.spec.unwrap();
        let crate::Runtime::Docker(d) = &spec.services[&"web".parse().unwrap()].runtime else {
            panic!("not docker");
        };
        assert_eq!(d.image, "shop/web:${VERSION}");
        let b = d.build.as_ref().unwrap();
        assert_eq!(
            (b.context.as_str(), b.dockerfile.as_str()),
            ("./app", "Dockerfile.prod")
        );
        assert_eq!(b.args["GIT"], "${VERSION}");
        assert_eq!(b.target.as_deref(), Some("runtime"));
        assert_eq!(d.port, 3000);
        assert_eq!(d.command.as_deref(), Some(&["/bin/web".to_owned()][..]));
        assert_eq!(d.args.as_ref().unwrap().len(), 2);
        assert_eq!(d.user.as_deref(), Some("1000:1000"));
        assert_eq!(d.memory, Some(256 << 20));
        assert_eq!(d.cpus, Some(500));
        assert!(d.read_only);
        assert_eq!(
            d.volumes,
            vec![
                crate::Volume {
                    source: "./data".into(),
                    target: "/data".into(),
                    read_only: false
                },
                crate::Volume {
                    source: "cache".into(),
                    target: "/cache".into(),
                    read_only: true
                },
            ]
        );
        assert!(d.volumes[0].is_host_path() && !d.volumes[1].is_host_path());
        assert_eq!(d.network.as_deref(), Some("shop-net"));
        assert_eq!(d.keep_images, 3);
    }

    #[test]
    fn a_docker_service_has_defaults() {
        let parsed = parse(&docker_service("      image: web:v1\n      build: {}\n"));
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let spec = parsed.spec.unwrap();
        let crate::Runtime::Docker(d) = &spec.services[&"web".parse().unwrap()].runtime else {
            panic!("not docker");
        };
        assert_eq!(d.port, 8080);
        assert_eq!((d.command.clone(), d.args.clone()), (None, None));
        let b = d.build.as_ref().unwrap();
        assert_eq!(
            (b.context.as_str(), b.dockerfile.as_str()),
            (".", "Dockerfile")
        );
        assert!(!d.read_only && d.volumes.is_empty() && d.memory.is_none() && d.cpus.is_none());
        assert_eq!(d.keep_images, 5, "the default");
    }

    /// Each broken field is reported at its own line and column, and the
    /// spec is refused.
    #[test]
    fn bad_docker_fields_say_where_and_why() {
        let cases: [(&str, &str); 11] = [
            (
                "      image: web:v1\n      memory: lots\n",
                "6:15: error: services.web.docker.memory: expected an amount of memory such as `256m`",
            ),
            (
                "      image: web:v1\n      memory: 1k\n",
                "6:15: error: services.web.docker.memory: memory `1k` is below Docker's minimum",
            ),
            (
                "      image: web:v1\n      cpus: 0\n",
                "6:13: error: services.web.docker.cpus: expected a number of CPUs from 0.001 to 1024",
            ),
            (
                "      image: web:v1\n      volumes: [data]\n",
                "6:17: error: services.web.docker.volumes[0]: expected `SOURCE:TARGET`",
            ),
            (
                "      image: web:v1\n      volumes: [\"data:rel\"]\n",
                "6:17: error: services.web.docker.volumes[0]: the target `rel` must be an absolute path",
            ),
            (
                "      image: Shop/Web:v1\n",
                "5:14: error: services.web.docker.image: `Shop/Web:v1` is not an image name Docker accepts",
            ),
            (
                "      image: web:v1\n      command: []\n",
                "6:16: error: services.web.docker.command: expected at least the program",
            ),
            (
                "      image: web:v1\n      build: {contxt: .}\n",
                "6:15: error: services.web.docker.build.contxt: unknown field",
            ),
            (
                "      image: web:v1\n      readOnly: yes\n",
                "6:17: error: services.web.docker.readOnly: expected `true` or `false`",
            ),
            (
                "      image: web:v1\n      keepImages: 0\n",
                "6:19: error: services.web.docker.keepImages: expected a whole number from 1 to 1000",
            ),
            (
                "      image: web:v1\n      keepImages: all\n",
                "6:19: error: services.web.docker.keepImages: expected a whole number from 1 to 1000",
            ),
        ];
        for (fields, want) in cases {
            let text = docker_service(fields);
            let parsed = parse(&text);
            let shown = crate::render("f.yaml", &text, &parsed.diagnostics);
            assert!(
                shown.contains(&format!("f.yaml:{want}")),
                "want {want}\n{shown}"
            );
            assert!(parsed.spec.is_none(), "{shown}");
        }
    }

    #[test]
    fn a_secret_in_a_build_argument_is_refused() {
        let text = "app: shop\nsecrets: [S]\nservices:\n  web:\n    docker:\n      image: web:v1\n      build: {args: {TOKEN: \"${S}\"}}\n    route: {listen: 127.0.0.1:8080}\n";
        let parsed = parse(text);
        let shown = crate::render("f.yaml", text, &parsed.diagnostics);
        assert!(
            shown.contains(
                "f.yaml:7:29: error: services.web.docker.build.args.TOKEN: secret `${S}`"
            ),
            "{shown}"
        );
    }

    #[test]
    fn secrets_are_declared_at_the_top_and_per_environment() {
        let text = "app: shop\nsecrets: [DB_PASSWORD]\nservices:\n  web:\n    process:\n      command: ./web\n      env: {DB: \"${DB_PASSWORD}\", T: \"${API_TOKEN}\"}\n    route: {listen: 127.0.0.1:8080}\nenvironments:\n  production:\n    secrets: [API_TOKEN]\n  staging: {}\n";
        let parsed = parse(text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let spec = parsed.spec.unwrap();
        let names = |e: &str| -> Vec<String> {
            spec.secret_names(&e.parse::<EnvName>().unwrap())
                .into_iter()
                .collect()
        };
        assert_eq!(names("production"), ["API_TOKEN", "DB_PASSWORD"]);
        assert_eq!(names("staging"), ["DB_PASSWORD"]);
        assert_eq!(names("development"), ["DB_PASSWORD"]);
    }

    #[test]
    fn a_secret_in_args_is_a_warning_and_in_command_an_error() {
        let base = "app: shop\nsecrets: [S]\nservices:\n  web:\n    process:\n      command: ./web\n      args: [\"${S}\"]\n    route: {listen: 127.0.0.1:8080}\n";
        let parsed = parse(base);
        assert!(parsed.spec.is_some());
        assert_eq!(parsed.diagnostics.len(), 1);
        assert!(parsed.diagnostics[0].message.contains("every local user"));
        let parsed = parse(&base.replace("./web", "./web-${S}"));
        assert!(parsed.spec.is_none());
        assert!(
            parsed.diagnostics[0]
                .message
                .contains("can not be used here"),
            "{:?}",
            parsed.diagnostics
        );
    }
}
