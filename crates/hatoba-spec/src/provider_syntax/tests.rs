//! Unit tests of the providers' syntax checks: PromQL, placeholders,
//! JSON paths.

use super::*;

fn args() -> Vec<String> {
    vec!["service-name".to_owned(), "interval".to_owned()]
}

/// `ok` or `offset+len: message | hint`.
fn promql(text: &str) -> String {
    match check_promql(text, Some(&args())) {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{}+{}: {} | {}", e.offset, e.len, e.message, e.hint),
    }
}

fn first(text: &str) -> String {
    let full = promql(text);
    full.split(" | ").next().unwrap_or("").to_owned()
}

#[test]
fn real_queries_pass() {
    for q in [
        r#"sum(rate(http_requests_total{service="{{service}}",version="{{version}}",status=~"2.."}[1m])) / sum(rate(http_requests_total{service="{{service}}",version="{{version}}"}[1m]))"#,
        r#"histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket{version="{{version}}"}[5m])) by (le))"#,
        "sum(rate(http_requests_total{service=\"{{args.service-name}}\", status=~\"2..\"}[5m]))\n/\nsum(rate(http_requests_total{service=\"{{args.service-name}}\"}[5m]))\n",
        "histogram_quantile(0.95,\n  sum(rate(http_request_duration_seconds_bucket{service=\"{{args.service-name}}\"}[5m])) by (le)\n) * 1000\n",
        "sum(rate(\n  http_requests_total{\n    service=\"{{args.service-name}}\",\n    status=~\"2..\"\n  }[5m]\n)) /\nsum(rate(\n  http_requests_total{\n    service=\"{{args.service-name}}\"\n  }[5m]\n))\n",
        "up == 0",
        "0.5",
        "42",
        r#"rate(http_requests_total{status=~"5.."}[5m]) / rate(http_requests_total[5m]) > 0.05"#,
        r#"100 - (avg by(instance) (irate(node_cpu_seconds_total{mode="idle"}[5m])) * 100) > 85"#,
        "rate(kube_pod_container_status_restarts_total[15m]) > 0",
        "max_over_time(rate(x[5m])[30m:1m])",
        "max_over_time(rate(x[5m])[30m:])",
        "rate(x[1h30m]) offset 1w",
        "rate(x[{{interval}}])",
        "rate(x[{{ interval }}])",
        "rate(x[300])",
        "rate(x[ 5m ])",
        r#"{__name__=~"job:.*", job!~'a\'b'}"#,
        r#"{"my.metric", env="prod"}"#,
        "x{a=`raw\nstring`}",
        "x{}",
        r#"x{a="b",}"#,
        "# the success rate\nsum(up) # all of it\n",
        r#"label_replace(up, "dst", "$1", "src", "(.*)")"#,
        "up{{{service}}}",
    ] {
        let got = promql(q);
        if q == "up{{{service}}}" {
            // `substitute` reads `{{{service}}` as the name `{service`.
            assert!(got.contains("unknown placeholder `{{{service}}`"), "{got}");
            continue;
        }
        assert_eq!(got, "ok", "{q}");
    }
}

#[test]
fn brackets_pair_up() {
    assert_eq!(
        promql("sum(rate(x[5m])"),
        "3+1: `(` is never closed | add the `)` that closes it"
    );
    assert_eq!(first("a(b(c"), "1+1: `(` is never closed");
    assert_eq!(first("sum(x))"), "6+1: `)` has no matching `(`");
    assert_eq!(first("x}"), "1+1: `}` has no matching `{`");
    assert_eq!(first("x]"), "1+1: `]` has no matching `[`");
    assert_eq!(first("rate(x[5m)"), "6+1: `[` is never closed");
    assert_eq!(first("rate(x[5m"), "6+1: `[` is never closed");
    assert_eq!(first(r#"rate(x{a="b"[5m])"#), "6+1: `{` is never closed");
    assert_eq!(first(r#"x{a="b""#), "1+1: `{` is never closed");
    assert_eq!(first("x{"), "1+1: `{` is never closed");
    // Brackets inside strings and comments do not count.
    assert_eq!(promql(r#"x{a=~"(("} # )"#), "ok");
}

#[test]
fn strings_close() {
    assert_eq!(
        promql(r#"x{a="b}"#),
        "4+1: a string opened with `\"` is never closed | close it with `\"` on the same line; write `\\\"` for a `\"` inside it"
    );
    assert_eq!(
        first("x{a='b\n'}"),
        "4+1: a string opened with `'` is never closed"
    );
    assert_eq!(
        first(r#"x{a="b\"}"#),
        "4+1: a string opened with `\"` is never closed"
    );
    assert_eq!(
        first("x{a=`b}"),
        "4+1: a string opened with a backtick is never closed"
    );
    assert_eq!(promql(r#"x{a="b\\"}"#), "ok");
    // A placeholder inside a string is replaced first, quotes and all.
    assert_eq!(promql(r#"x{a="{{ service }}"}"#), "ok");
}

#[test]
fn matchers_are_name_op_value() {
    assert_eq!(
        promql("x{service}"),
        "2+7: expected a label matcher like name=\"value\", found `service` | a matcher is a label name, `=`, `!=`, `=~` or `!~`, and a quoted value, e.g. `status=~\"5..\"`"
    );
    assert_eq!(
        promql("x{job=api}"),
        "2+7: expected a label matcher like name=\"value\", found `job=api` | quote the value: `job=\"api\"`"
    );
    assert_eq!(
        promql("x{version={{version}}}"),
        "2+19: expected a label matcher like name=\"value\", found `version={{version}}` | quote the value: `version=\"{{version}}\"`"
    );
    assert_eq!(
        promql(r#"x{status=="200"}"#),
        "2+13: expected a label matcher like name=\"value\", found `status==\"200\"` | label matchers compare with one `=` (or `!=`, `=~`, `!~`), not `==`"
    );
    assert_eq!(
        first(r#"x{a="1" b="2"}"#),
        "8+5: expected `,` or `}` after a label matcher, found `b=\"2\"`"
    );
    assert_eq!(
        first(r#"x{,a="1"}"#),
        "2+1: expected a label matcher like name=\"value\", found `,`"
    );
    assert_eq!(
        first(r#"x{a~"1"}"#),
        "2+5: expected a label matcher like name=\"value\", found `a~\"1\"`"
    );
    assert_eq!(
        first(r#"x{a=}"#),
        "2+2: expected a label matcher like name=\"value\", found `a=`"
    );
}

#[test]
fn ranges_are_durations() {
    assert_eq!(
        promql("rate(x[5min])"),
        "7+4: expected a duration like `5m` or `1h30m` in `[...]`, found `5min` | a duration is numbers with units ms, s, m, h, d, w or y, largest first, each unit once; or a placeholder: `[{{interval}}]`"
    );
    assert_eq!(
        first("rate(x[30m1h])"),
        "7+5: expected a duration like `5m` or `1h30m` in `[...]`, found `30m1h`"
    );
    assert_eq!(
        first("rate(x[5m5m])"),
        "7+4: expected a duration like `5m` or `1h30m` in `[...]`, found `5m5m`"
    );
    assert_eq!(
        first("rate(x[])"),
        "7+1: expected a duration like `5m` or `1h30m` in `[...]`, found nothing"
    );
    assert_eq!(
        first("rate(x[m])"),
        "7+1: expected a duration like `5m` or `1h30m` in `[...]`, found `m`"
    );
    assert_eq!(
        first("rate(x[-5m])"),
        "7+1: expected a duration like `5m` or `1h30m` in `[...]`, found `-`"
    );
    assert_eq!(
        first("rate(x[5m 1m])"),
        "10+2: expected a duration like `5m` or `1h30m` in `[...]`, found `1m`"
    );
    assert_eq!(
        first("x[(5m)]"),
        "2+1: expected a duration like `5m` or `1h30m` in `[...]`, found `(`"
    );
    assert_eq!(first("x[5m) + y[1m]"), "1+1: `[` is never closed");
    assert_eq!(first("x[("), "1+1: `[` is never closed");
    assert_eq!(
        first("x[5m:1x]"),
        "5+2: expected a duration like `5m` or `1h30m` in `[...]`, found `1x`"
    );
    for ok in ["250ms", "1y2w3d4h5m6s7ms", "0", "1.5", "90s"] {
        assert_eq!(promql(&format!("rate(x[{ok}])")), "ok", "{ok}");
    }
}

#[test]
fn placeholders_are_known() {
    assert_eq!(
        promql("up{s=\"{{sevice}}\"}"),
        "6+10: unknown placeholder `{{sevice}}`: known are service, version, canary_version, stable_version and env, and the template's arguments service-name, interval | did you mean `{{service}}`?"
    );
    assert_eq!(
        first("up{s=\"{{args.service_name}}\"}"),
        "6+21: unknown placeholder `{{args.service_name}}`: known are service, version, canary_version, stable_version and env, and the template's arguments service-name, interval"
    );
    assert!(
        promql("up{s=\"{{args.service_name}}\"}")
            .ends_with("did you mean `{{args.service-name}}`?")
    );
    assert_eq!(
        check_placeholders("{{region}}", Some(&[])).map_err(|e| format!("{} | {}", e.message, e.hint)),
        Err("unknown placeholder `{{region}}`: known are service, version, canary_version, stable_version and env | to pass a value of your own, declare it in the template: `args: [{name: region}]`".to_owned())
    );
    assert_eq!(
        check_placeholders("a {{ }}", Some(&[])).map_err(|e| e.hint),
        Err("write a name between the braces, e.g. `{{service}}`".to_owned())
    );
    assert_eq!(
        first("é{{service}} {{env"),
        "13+2: `{{` is never closed with `}}`"
    );
    // Unknown argument names pass when the template's arguments could not be read.
    assert_eq!(check_placeholders("{{anything}}", None), Ok(()));
    assert_eq!(check_promql("up{a=\"{{anything}}\"}", None), Ok(()));
    for name in BUILTIN_PLACEHOLDERS {
        assert_eq!(
            check_placeholders(&format!("{{{{{name}}}}}"), Some(&[])),
            Ok(())
        );
    }
}

#[test]
fn empty_queries_are_refused() {
    assert_eq!(first(""), "0+1: the query is empty");
    assert_eq!(first(" \n\t"), "0+1: the query is empty");
    assert_eq!(
        first("# nothing yet\n"),
        "0+1: the query has no expression, only comments"
    );
}

#[test]
fn json_paths_follow_the_webhook_provider() {
    let check = |p: &str| match check_json_path(p) {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{}+{}: {}", e.offset, e.len, e.message),
    };
    for ok in [
        "$",
        "$.a.b[0].c",
        r#"$.a.b[1]["c d"]"#,
        "$['x']",
        " $.data.my-key ",
        "$.a[ 2 ]",
    ] {
        assert_eq!(check(ok), "ok", "{ok}");
    }
    assert_eq!(
        check("a.b"),
        "0+1: invalid JSON path `a.b`: a path starts with `$`"
    );
    assert_eq!(
        check("$."),
        "1+1: invalid JSON path `$.`: expected a key after `.`"
    );
    assert_eq!(
        check("$..a"),
        "1+1: invalid JSON path `$..a`: expected a key after `.`"
    );
    assert_eq!(
        check("$[x]"),
        "1+3: invalid JSON path `$[x]`: expected an index (0, 1, ...) or a quoted key in `[...]`"
    );
    assert_eq!(
        check("$[0"),
        "1+1: invalid JSON path `$[0`: `[` is never closed"
    );
    assert_eq!(
        check("$a"),
        "1+1: invalid JSON path `$a`: expected `.key` or `[...]`"
    );
    assert_eq!(
        check("  $.a[-1]"),
        "5+4: invalid JSON path `$.a[-1]`: expected an index (0, 1, ...) or a quoted key in `[...]`"
    );
}

#[test]
fn no_input_panics() {
    let alphabet = [
        "{", "}", "{{", "}}", "[", "]", "(", ")", "\"", "'", "`", "\\", "\n", "=", "!", "~", ",",
        ":", "5m", "x", "é", "日本", "#", "$", ".", " ", "service",
    ];
    // Every string of up to four pieces.
    let mut texts = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for t in &texts {
            for a in alphabet {
                next.push(format!("{t}{a}"));
            }
        }
        texts.extend(next);
        texts.sort();
        texts.dedup();
    }
    for t in &texts {
        let n = t.chars().count();
        for e in [
            check_promql(t, Some(&args())).err(),
            check_promql(t, None).err(),
            check_placeholders(t, Some(&[])).err(),
            check_json_path(t).err(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(e.len >= 1, "{t:?}: {e:?}");
            assert!(e.offset <= n, "{t:?}: {e:?}");
        }
    }
}
