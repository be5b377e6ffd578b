//! `judge:` of an analysis template, the switch for the statistical
//! canary-vs-stable judge: on unless a template says `judge: false`,
//! anything but `true`/`false` named with its line, column and field path.

/// A spec whose only template has `judge` as written (a YAML line at the
/// template's indentation, or nothing).
fn spec(judge: &str) -> String {
    format!(
        "app: t
services:
  web:
    process: {{command: ./web}}
    route: {{listen: 127.0.0.1:8080}}
    strategy:
      canary:
        steps: [{{setWeight: 50}}]
        analysis: {{templates: [own]}}
analysis:
  templates:
    own:
{judge}
      metrics:
        - name: success-rate
          interval: 5s
          successCondition: result >= 0.95
          provider: {{prometheus: {{address: 'http://127.0.0.1:9090', query: 'up'}}}}
"
    )
}

fn rendered(text: &str) -> String {
    let parsed = hatoba_spec::parse(text);
    hatoba_spec::render("hatoba.yaml", text, &parsed.diagnostics)
}

fn judge_of(text: &str) -> bool {
    let parsed = hatoba_spec::parse(text);
    assert!(parsed.diagnostics.is_empty(), "{}", rendered(text));
    parsed.spec.unwrap().analysis.templates["own"].judge
}

#[test]
fn the_judge_is_on_unless_a_template_switches_it_off() {
    assert!(judge_of(&spec("")));
    assert!(judge_of(&spec("      judge: true")));
    assert!(!judge_of(&spec("      judge: false")));
}

#[test]
fn a_judge_that_is_not_a_boolean_says_where_and_what() {
    for (value, col) in [("no", 14), ("\"false\"", 14), ("[false]", 14)] {
        let text = spec(&format!("      judge: {value}"));
        let parsed = hatoba_spec::parse(&text);
        assert!(parsed.spec.is_none(), "{value} accepted");
        let out = rendered(&text);
        let want = format!(
            "hatoba.yaml:13:{col}: error: analysis.templates.own.judge: expected `true` or `false`"
        );
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    // A misspelt key is unknown, with the right one suggested.
    let out = rendered(&spec("      jugde: false"));
    assert!(
        out.contains("hatoba.yaml:13:7: error: analysis.templates.own.jugde: unknown field")
            && out.contains("did you mean `judge`"),
        "{out}"
    );
}
