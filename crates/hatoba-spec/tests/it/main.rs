//! Integration tests for `hatoba-spec`: the examples are valid, every broken
//! spec under `tests/data/invalid` renders exactly its expected diagnostics
//! (`UPDATE_EXPECT=1 cargo test -p hatoba-spec` rewrites the `.txt` files)
//! with each caret under the value its message says it found,
//! bad bytes are refused cleanly, and the checked-in JSON Schema is fresh.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod drain;
mod judge;
mod traffic;

use std::path::{Path, PathBuf};
use std::time::Duration;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn update() -> bool {
    std::env::var_os("UPDATE_EXPECT").is_some()
}

/// Compares `actual` with the file's content, or rewrites it under UPDATE_EXPECT.
fn expect_file(path: &Path, actual: &str) -> Result<(), String> {
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    if update() {
        std::fs::write(path, actual).unwrap();
        return Ok(());
    }
    Err(format!(
        "{} is stale (rerun with UPDATE_EXPECT=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    ))
}

/// Every `examples/*/hatoba.yaml` parses without a diagnostic, and the
/// examples the README names are among them (a renamed or lost one fails).
#[test]
fn examples_are_valid() {
    const NAMED: [&str; 6] = [
        "quickstart",
        "docker",
        "docker-python",
        "rolling",
        "blue-green",
        "seeds-canary",
    ];
    let dir = workspace_root().join("examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let file = entry.path().join("hatoba.yaml");
        if !file.exists() {
            continue;
        }
        seen.push(entry.file_name().to_string_lossy().into_owned());
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed = hatoba_spec::parse(&text);
        assert!(
            parsed.diagnostics.is_empty(),
            "{}",
            hatoba_spec::render(&file.display().to_string(), &text, &parsed.diagnostics)
        );
        assert!(parsed.spec.is_some());
    }
    for name in NAMED {
        assert!(
            seen.iter().any(|s| s == name),
            "examples/{name}/hatoba.yaml was not found (validated: {seen:?})"
        );
    }
}

/// Specs under `tests/data/valid` read without a single diagnostic.
#[test]
fn valid_specs_have_no_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/valid");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed = hatoba_spec::parse(&text);
        assert!(
            parsed.diagnostics.is_empty(),
            "{}",
            hatoba_spec::render(&file.display().to_string(), &text, &parsed.diagnostics)
        );
        assert!(parsed.spec.is_some());
    }
    assert!(seen >= 1, "no valid specs in {}", dir.display());
}

/// The seeds' two queries, exactly as written, are kept as they are.
#[test]
fn seed_queries_are_valid_and_kept() {
    use hatoba_spec::Provider;
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/valid/prometheus-queries.yaml"),
    )
    .unwrap();
    let spec = hatoba_spec::parse(&text).spec.unwrap();
    let queries: Vec<&str> = spec.analysis.templates["seeds"]
        .metrics
        .iter()
        .map(|m| match &m.provider {
            Provider::Prometheus(p) => p.query.as_str(),
            other => panic!("not prometheus: {other:?}"),
        })
        .collect();
    assert_eq!(
        queries,
        [
            r#"sum(rate(http_requests_total{service="{{service}}",version="{{version}}",status=~"2.."}[1m])) / sum(rate(http_requests_total{service="{{service}}",version="{{version}}"}[1m]))"#,
            r#"histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket{version="{{version}}"}[5m])) by (le))"#,
        ]
    );
}

/// A mistake in a query written over several folded lines cannot be given
/// an exact column: the diagnostic points at the query and says where in it.
#[test]
fn query_mistakes_in_folded_text_say_where() {
    let text = "app: shop
services:
  web:
    process: {command: ./web}
    route: {listen: 127.0.0.1:8080}
analysis:
  templates:
    t:
      metrics:
        - name: m
          successCondition: result > 0
          provider:
            prometheus:
              address: http://127.0.0.1:9090
              query: >
                sum(rate(x[5m]))
                / sum(rate(y{a=b}[5m]))
";
    let parsed = hatoba_spec::parse(text);
    let rendered = hatoba_spec::render("f.yaml", text, &parsed.diagnostics);
    assert!(
        rendered.starts_with(
            "f.yaml:16:17: error: analysis.templates.t.metrics[0].provider.prometheus.query: \
             expected a label matcher like name=\"value\", found `a=b` (at character 31 of the text)\n"
        ),
        "{rendered}"
    );
}

#[test]
fn seeds_canary_means_what_the_seeds_say() {
    use hatoba_spec::{Provider, Step, Strategy};
    let text = std::fs::read_to_string(workspace_root().join("examples/seeds-canary/hatoba.yaml"))
        .unwrap();
    let spec = hatoba_spec::parse(&text).spec.unwrap();
    let api = &spec.services[&"api".parse().unwrap()];
    let Strategy::Canary(canary) = &api.strategy else {
        panic!("not a canary")
    };
    let steps: Vec<String> = canary
        .steps
        .iter()
        .map(|s| match s {
            Step::SetWeight(w) => w.percent().to_string(),
            Step::Pause(p) => format!(
                "pause {}",
                hatoba_core::format_duration(p.duration.unwrap())
            ),
            Step::Analysis(_) => "analysis".to_owned(),
        })
        .collect();
    assert_eq!(
        steps.join(" → "),
        "10 → pause 5m → 25 → pause 5m → 50 → pause 10m → 75 → pause 5m → 100"
    );
    let background = canary.analysis.as_ref().unwrap();
    assert_eq!(background.templates, ["success-rate", "latency"]);
    for name in &background.templates {
        let metric = &spec.analysis.templates[name].metrics[0];
        assert_eq!(metric.interval, std::time::Duration::from_secs(60));
        assert_eq!(metric.failure_limit, 3);
        assert!(matches!(metric.provider, Provider::Prometheus(_)));
    }
    let success = spec.analysis.templates["success-rate"].metrics[0]
        .success_condition
        .as_ref()
        .unwrap();
    assert!(success.eval(0.95) && !success.eval(0.949));
    let latency = spec.analysis.templates["latency"].metrics[0]
        .success_condition
        .as_ref()
        .unwrap();
    assert!(latency.eval(500.0) && !latency.eval(500.1));
    // Environment overrides merge over the base service.
    let staging = &spec.environments[&"staging".parse().unwrap()];
    assert_eq!(staging.services[&"api".parse().unwrap()].replicas, 2);
    assert_eq!(staging.services[&"api".parse().unwrap()].route, api.route);
    assert!(spec.environments[&"production".parse().unwrap()].require_approval);
}

#[test]
fn broken_specs_render_expected_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 25,
        "expected at least 25 broken specs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut distinct = std::collections::BTreeSet::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let parsed = hatoba_spec::parse(&text);
        if parsed.spec.is_some() || parsed.diagnostics.is_empty() {
            failures.push(format!("{name}: accepted, but it is broken"));
            continue;
        }
        let rendered = hatoba_spec::render(&name, &text, &parsed.diagnostics);
        distinct.insert(parsed.diagnostics[0].message.clone());
        for d in &parsed.diagnostics {
            if let Err(e) = caret_covers_found(&text, d) {
                failures.push(format!("{name}: {e}"));
            }
        }
        if let Err(e) = expect_file(&file.with_extension("txt"), &rendered) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        distinct.len() >= 25,
        "broken specs should each show a different mistake, got {} distinct",
        distinct.len()
    );
}

/// What a diagnostic's "found …" may name that is not text of the file but
/// a kind or a count of things: the caret then marks the node so described,
/// and nothing is checked against its text. Anything else after "found"
/// must be a value written in the file, in backticks or a bare number.
const FOUND_A_KIND: &[&str] = &[
    "a list",
    "a mapping",
    "an empty list",
    "an empty mapping",
    "nothing",
    "the end",
];

/// Whether `found` describes a kind (see [`FOUND_A_KIND`]) or counts keys
/// or items (`2 keys`), rather than quoting the file.
fn found_describes_a_kind(found: &str) -> bool {
    FOUND_A_KIND.contains(&found)
        || found
            .split_once(' ')
            .is_some_and(|(n, what)| n.parse::<usize>().is_ok() && !what.is_empty())
}

/// When a diagnostic's message ends in `found X` with X a value from the
/// file, the caret underlines X: the characters its span covers on its
/// line contain X (or X's first line, for a value over several lines; or
/// as much of it as the message shows). A quoted value is compared as
/// written (`''` for `'`, `\"` for `"`).
///
/// One more exception: a mistake inside a scalar whose place in the source
/// cannot be known exactly (folded text) is marked at the scalar, and the
/// message says where in its text: `(at character N of the text)`.
fn caret_covers_found(text: &str, d: &hatoba_spec::Diagnostic) -> Result<(), String> {
    let Some((_, found)) = d.message.rsplit_once("found ") else {
        return Ok(());
    };
    if found.ends_with(" of the text)") {
        return Ok(());
    }
    let found = found.trim_end_matches('.');
    let value = if let Some(quoted) = found.strip_prefix('`').and_then(|f| f.strip_suffix('`')) {
        quoted
    } else if found.parse::<f64>().is_ok() {
        found
    } else if found_describes_a_kind(found) {
        return Ok(());
    } else {
        return Err(format!(
            "`{}`: \"found {found}\" is neither a value in backticks, a number, \
             nor a kind listed in FOUND_A_KIND",
            d.message
        ));
    };
    // Values are shown as `Node::describe` does: cut after 40 characters
    // with `…`, line breaks written `\n`.
    let shown = value.strip_suffix('…').unwrap_or(value);
    let first_line = shown.split("\\n").next().unwrap_or("");
    let Some(span) = d.span else {
        return Err(format!("`{}` names a value but has no place", d.message));
    };
    let line = text.lines().nth(span.start.line - 1).unwrap_or("");
    let underlined: String = line
        .chars()
        .skip(span.start.col - 1)
        .take(span.len)
        .collect();
    let as_written = first_line.replace('\'', "''");
    let escaped = first_line.replace('\\', "\\\\").replace('"', "\\\"");
    if underlined.contains(first_line)
        || (underlined.starts_with('\'') && underlined.contains(&as_written))
        || (underlined.starts_with('"') && underlined.contains(&escaped))
    {
        Ok(())
    } else {
        Err(format!(
            "`{}`: the caret at {}:{} underlines `{underlined}`, not `{first_line}`",
            d.message, span.start.line, span.start.col
        ))
    }
}

#[test]
fn all_mistakes_are_reported_in_one_pass() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid/30-many-mistakes.yaml"),
    )
    .unwrap();
    let parsed = hatoba_spec::parse(&text);
    assert!(parsed.diagnostics.len() >= 6, "{:#?}", parsed.diagnostics);
    // In file order, each with a line.
    let lines: Vec<usize> = parsed
        .diagnostics
        .iter()
        .map(|d| d.span.unwrap().start.line)
        .collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn bad_bytes_are_refused_with_one_message() {
    let check = |bytes: &[u8], expect: &str| {
        let parsed = hatoba_spec::parse_bytes(bytes);
        assert!(parsed.spec.is_none());
        assert_eq!(parsed.diagnostics.len(), 1, "{:?}", parsed.diagnostics);
        let rendered = hatoba_spec::render(
            "f.yaml",
            &String::from_utf8_lossy(bytes),
            &parsed.diagnostics,
        );
        assert!(rendered.contains(expect), "{rendered}");
    };
    check(b"", "f.yaml: error: the file is empty");
    check(b"   \n# nothing\n", "f.yaml: error: the file is empty");
    check(
        b"app: x\nservices:\n  w\x00eb: {}\n",
        "f.yaml:3:4: error: this is a binary file",
    );
    check(
        b"app: \xff\xfe\n",
        "f.yaml:1:6: error: the file is not UTF-8 text",
    );
    check(
        &vec![b'a'; hatoba_spec::MAX_SPEC_BYTES + 1],
        "error: the file is 4194305 bytes; a spec may be at most 4194304 bytes",
    );
    check(
        b"just a string",
        "expected a mapping with `app` and `services`, found `just a string`",
    );
    check(
        b"[1, 2",
        "f.yaml:2:1: error: invalid YAML: while parsing a flow sequence",
    );
}

#[test]
fn json_schema_is_fresh() {
    let path = workspace_root().join("docs/hatoba.schema.json");
    let actual = hatoba_spec::json_schema();
    // The schema mentions every top-level section and the strategies.
    for word in [
        "\"services\"",
        "\"environments\"",
        "\"canary\"",
        "\"blueGreen\"",
        "\"rolling\"",
        "\"setWeight\"",
        "\"successCondition\"",
    ] {
        assert!(actual.contains(word), "schema lacks {word}");
    }
    if let Err(e) = expect_file(&path, &actual) {
        panic!("{e}");
    }
}

/// The fuzz target's property on the fuzz seed corpus and on cheap mutations
/// of it (every truncation point and byte flips), so `cargo test` keeps
/// checking what `cargo fuzz` explores.
#[test]
fn fuzz_corpus_and_mutations_never_panic() {
    let dir = workspace_root().join("fuzz/corpus/spec_parse");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        seeds += 1;
        for cut in (0..bytes.len()).step_by(3) {
            let parsed = hatoba_spec::parse_bytes(&bytes[..cut]);
            let _ = hatoba_spec::render(
                "f",
                &String::from_utf8_lossy(&bytes[..cut]),
                &parsed.diagnostics,
            );
        }
        for (i, flip) in [
            b'{', b'[', b':', b'-', b'"', b'\'', b'&', b'*', b'!', b'\t', b'\n', 0xff,
        ]
        .iter()
        .enumerate()
        {
            let mut m = bytes.clone();
            for pos in (i * 7..m.len()).step_by(97) {
                m[pos] = *flip;
            }
            let parsed = hatoba_spec::parse_bytes(&m);
            assert!(parsed.spec.is_some() || !parsed.diagnostics.is_empty());
        }
    }
    assert!(seeds >= 25, "the seed corpus has {seeds} files");
}

#[test]
fn a_misspelt_version_or_port_variable_is_a_warning_with_the_fix() {
    let spec = |args: &str| {
        format!(
            "app: a\nservices:\n  web:\n    process:\n      command: ${{APP_BIN}}\n      \
             args: {args}\n    route: {{listen: 127.0.0.1:8080}}\n"
        )
    };
    let text = spec(r#"["--port", "${PROT}", "--v", "${VERSON}", "${Version:-x}"]"#);
    let parsed = hatoba_spec::parse(&text);
    assert!(parsed.spec.is_some(), "warnings do not make a spec invalid");
    let rendered = hatoba_spec::render("hatoba.yaml", &text, &parsed.diagnostics);
    assert_eq!(parsed.diagnostics.len(), 2, "{rendered}");
    assert!(rendered.contains("did you mean `${PORT}`?"), "{rendered}");
    assert!(
        rendered.contains("did you mean `${VERSION}`?"),
        "{rendered}"
    );
    assert!(
        rendered.contains("warning: services.web.process.args"),
        "{rendered}"
    );
    // Names of the app's own, and the two Hatoba sets, are left alone.
    let fine = hatoba_spec::parse(&spec(r#"["${PORT}", "${VERSION}", "${LOG_LEVEL}"]"#));
    assert!(fine.diagnostics.is_empty(), "{:?}", fine.diagnostics);
}

#[test]
fn retention_is_read_and_defaults_to_an_hour_and_five_versions() {
    let base = "app: a\nservices:\n  web:\n    process: {command: ./web}\n    route: {listen: 127.0.0.1:8080}\n";
    let default = hatoba_spec::parse(base).spec.expect("a valid spec");
    assert_eq!(default.retention.metrics, Duration::from_secs(3600));
    assert_eq!(default.retention.log_versions, 5);
    let set = hatoba_spec::parse(&format!(
        "{base}retention:\n  metrics: 90s\n  logVersions: 2\n"
    ));
    let spec = set.spec.expect("a valid spec");
    assert_eq!(spec.retention.metrics, Duration::from_secs(90));
    assert_eq!(spec.retention.log_versions, 2);
    let only_metrics = hatoba_spec::parse(&format!("{base}retention: {{metrics: 2h}}\n"));
    let spec = only_metrics.spec.expect("a valid spec");
    assert_eq!(spec.retention.metrics, Duration::from_secs(7200));
    assert_eq!(spec.retention.log_versions, 5);
}
