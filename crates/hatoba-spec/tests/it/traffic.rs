//! `traffic:` of an analysis template (minimum requests, generated
//! traffic for quiet services): read into the model, and every mistake
//! named with its line, column and field path.

/// A spec whose only template has `traffic` as written (YAML lines at the
/// template's indentation).
fn spec(traffic: &str) -> String {
    format!(
        "app: t
services:
  web:
    process: {{command: ./web}}
    route: {{listen: 127.0.0.1:8080}}
    strategy:
      canary:
        steps: [{{setWeight: 50}}]
        analysis: {{templates: [quiet]}}
analysis:
  templates:
    quiet:
{traffic}
      metrics:
        - name: success-rate
          interval: 5s
          successCondition: result >= 0.95
          provider: {{builtin: {{metric: success-rate}}}}
"
    )
}

fn rendered(text: &str) -> String {
    let parsed = hatoba_spec::parse(text);
    hatoba_spec::render("hatoba.yaml", text, &parsed.diagnostics)
}

#[test]
fn traffic_is_read_into_the_template() {
    let text = spec(
        "      traffic:\n        minRequests: 50\n        generate: {path: /health, rate: 10}",
    );
    let parsed = hatoba_spec::parse(&text);
    assert!(parsed.diagnostics.is_empty(), "{}", rendered(&text));
    let read = parsed.spec.unwrap();
    let traffic = read.analysis.templates["quiet"].traffic.clone().unwrap();
    assert_eq!(traffic.min_requests, Some(50));
    let generate = traffic.generate.unwrap();
    assert_eq!((generate.path.as_str(), generate.rate), ("/health", 10));
    // Without `traffic`, nothing is generated.
    let plain = hatoba_spec::parse(&spec("")).spec.unwrap();
    assert_eq!(plain.analysis.templates["quiet"].traffic, None);
}

#[test]
fn traffic_mistakes_say_where_and_what() {
    let text =
        spec("      traffic:\n        minRequest: 5\n        generate: {path: health, rate: 0}");
    let out = rendered(&text);
    for want in [
        "hatoba.yaml:14:9: error: analysis.templates.quiet.traffic.minRequest: unknown field",
        "did you mean `minRequests`",
        "hatoba.yaml:15:26: error: analysis.templates.quiet.traffic.generate.path: expected an HTTP path starting with `/`",
        "hatoba.yaml:15:40: error: analysis.templates.quiet.traffic.generate.rate: expected a whole number from 1 to 1000, found 0",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let text = spec("      traffic:\n        generate: {rate: 10}");
    let out = rendered(&text);
    assert!(
        out.contains(
            "hatoba.yaml:14:19: error: analysis.templates.quiet.traffic.generate: missing required field `path`"
        ),
        "{out}"
    );
}

#[test]
fn long_lived_builtins_are_read() {
    for (name, want) in [
        ("long-lived-open", hatoba_spec::BuiltinMetric::LongLivedOpen),
        (
            "long-lived-abnormal",
            hatoba_spec::BuiltinMetric::LongLivedAbnormal,
        ),
    ] {
        let text = spec("").replace("metric: success-rate", &format!("metric: {name}"));
        let parsed = hatoba_spec::parse(&text);
        assert!(parsed.diagnostics.is_empty(), "{}", rendered(&text));
        let read = parsed.spec.unwrap();
        let metric = &read.analysis.templates["quiet"].metrics[0];
        match &metric.provider {
            hatoba_spec::Provider::Builtin(b) => assert_eq!(b.metric, want),
            other => panic!("{other:?}"),
        }
    }
}
