//! The `webhook` provider: an HTTP call (GET, or POST with a body) whose
//! JSON answer holds the number at a [`JsonPath`], for outside checks, load
//! tests and smoke tests.
//!
//! The number at the path may be a JSON number, a string holding a number
//! (`"0.97"`, as Prometheus writes them), or a boolean: `true` is 1 and
//! `false` is 0, so `successCondition: result == 1` reads "the check
//! passed". Inconclusive: an answer other than 2xx (its status and the
//! first 200 characters), an answer that is not JSON, a path that finds
//! nothing (which step missed) or finds something else (null, an object),
//! NaN or ±Inf, a failed connection, no answer within the timeout, an
//! answer over [`ANSWER_LIMIT`](super::ANSWER_LIMIT). Redirects are not
//! followed (a 3xx is inconclusive).
//!
//! Placeholders are replaced in the URL, the header values and the body.

use super::http::{self, Target, UrlError};
use super::{
    ANSWER_LIMIT, Args, DEFAULT_WEBHOOK_TIMEOUT, Measurement, or_default, snippet, substitute,
};
use hatoba_core::format_duration;
use hatoba_spec::WebhookProvider;
use hyper::Method;
use serde_json::Value;
use std::fmt;

/// Calls `p.url` (placeholders replaced from `args`) and reads the number
/// at `p.json_path` in its JSON answer, within `p.timeout` (10 s when
/// zero).
pub async fn webhook(p: &WebhookProvider, args: &Args) -> Measurement {
    let url = match substitute(&p.url, args) {
        Ok(url) => url,
        Err(e) => {
            return Measurement::Inconclusive(format!("webhook {}: not called: {e}", p.url));
        }
    };
    // The query string may hold a token: messages show the URL without it.
    let shown = url.split('?').next().unwrap_or(&url).to_owned();
    let who = format!("webhook {shown}");
    let inconclusive = |why: String| Measurement::Inconclusive(format!("{who}: {why}"));
    let path = match JsonPath::parse(&p.json_path) {
        Ok(path) => path,
        Err(e) => return inconclusive(format!("not called: {e}")),
    };
    let method = match p.method.trim() {
        "" | "GET" | "get" => Method::GET,
        "POST" | "post" => Method::POST,
        other => return inconclusive(format!("not called: method `{other}` is not GET or POST")),
    };
    let mut headers = Vec::with_capacity(p.headers.len());
    for (name, value) in &p.headers {
        match substitute(value, args) {
            Ok(value) => headers.push((name.clone(), value)),
            Err(e) => return inconclusive(format!("not called: header `{name}`: {e}")),
        }
    }
    let body = match p.body.as_deref().map(|b| substitute(b, args)).transpose() {
        Ok(body) => body,
        Err(e) => return inconclusive(format!("not called: body: {e}")),
    };
    let target = match Target::parse(&url) {
        Ok(t) => t,
        Err(UrlError::Https) => {
            return inconclusive("https is not supported for webhooks yet".to_owned());
        }
        Err(e) => return inconclusive(format!("not called: {e}")),
    };
    let timeout = or_default(p.timeout, DEFAULT_WEBHOOK_TIMEOUT);
    let call = http::fetch(&target, method, &headers, body, ANSWER_LIMIT);
    let answer = match tokio::time::timeout(timeout, call).await {
        Err(_) => return inconclusive(format!("no answer within {}", format_duration(timeout))),
        Ok(Err(e)) => return inconclusive(e.to_string()),
        Ok(Ok(answer)) => answer,
    };
    if !answer.status.is_success() {
        return inconclusive(format!(
            "answered HTTP {}: {}",
            answer.status.as_u16(),
            snippet(&answer.body, 200)
        ));
    }
    let Ok(json) = serde_json::from_slice::<Value>(&answer.body) else {
        return inconclusive(format!(
            "answered HTTP {} that is not JSON: {}",
            answer.status.as_u16(),
            snippet(&answer.body, 200)
        ));
    };
    let found = match path.find(&json) {
        Ok(found) => found,
        Err(e) => return inconclusive(e),
    };
    match number(found) {
        Some(v) => Measurement::finite(v, &who),
        None => inconclusive(format!(
            "`{path}` is {}, not a number",
            snippet(found.to_string().as_bytes(), 100)
        )),
    }
}

/// A number, a string holding one, or a boolean (1 or 0).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// A path into a JSON document: `$` and then steps, each `.key`, `["key"]`
/// (or `['key']`) or `[index]`, e.g. `$.data.result[0].value`. Nothing
/// else of JSONPath (no wildcards, filters or slices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A JSON path that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad JSON path `{path}` at character {offset}: {why}")]
pub struct JsonPathError {
    /// The path as written.
    pub path: String,
    /// Where it went wrong, in characters.
    pub offset: usize,
    /// What was expected.
    pub why: String,
}

impl JsonPath {
    /// Reads `$.a.b[0]["c d"]`.
    pub fn parse(text: &str) -> Result<JsonPath, JsonPathError> {
        let chars: Vec<char> = text.trim().chars().collect();
        let err = |offset: usize, why: &str| JsonPathError {
            path: text.to_owned(),
            offset,
            why: why.to_owned(),
        };
        if chars.first() != Some(&'$') {
            return Err(err(0, "a path starts with `$`"));
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len() && chars[end] != '.' && chars[end] != '[' {
                        end += 1;
                    }
                    if end == start {
                        return Err(err(start, "expected a key after `.`"));
                    }
                    steps.push(Step::Key(chars[start..end].iter().collect()));
                    i = end;
                }
                '[' => {
                    let start = i + 1;
                    let close = chars[start..]
                        .iter()
                        .position(|c| *c == ']')
                        .map(|p| start + p)
                        .ok_or_else(|| err(i, "`[` is never closed"))?;
                    let inner: String = chars[start..close].iter().collect();
                    let inner = inner.trim();
                    let quoted = inner.len() >= 2
                        && ((inner.starts_with('"') && inner.ends_with('"'))
                            || (inner.starts_with('\'') && inner.ends_with('\'')));
                    if quoted {
                        steps.push(Step::Key(inner[1..inner.len() - 1].to_owned()));
                    } else {
                        let index = inner.parse().map_err(|_| {
                            err(
                                start,
                                "expected an index (0, 1, ...) or a quoted key in `[...]`",
                            )
                        })?;
                        steps.push(Step::Index(index));
                    }
                    i = close + 1;
                }
                _ => return Err(err(i, "expected `.key` or `[...]`")),
            }
        }
        Ok(JsonPath { steps })
    }

    /// What the path points at in `doc`, or which step found nothing.
    pub fn find<'a>(&self, doc: &'a Value) -> Result<&'a Value, String> {
        let mut here = doc;
        for (n, step) in self.steps.iter().enumerate() {
            let next = match step {
                Step::Key(key) => here.as_object().and_then(|o| o.get(key)),
                Step::Index(i) => here.as_array().and_then(|a| a.get(*i)),
            };
            here = next.ok_or_else(|| {
                let so_far = JsonPath {
                    steps: self.steps[..n].to_vec(),
                };
                format!(
                    "`{self}` found nothing: `{so_far}` is {}, with no {}",
                    snippet(here.to_string().as_bytes(), 100),
                    match step {
                        Step::Key(k) => format!("key `{k}`"),
                        Step::Index(i) => format!("element [{i}]"),
                    }
                )
            })?;
        }
        Ok(here)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for step in &self.steps {
            match step {
                Step::Key(k)
                    if !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '-') =>
                {
                    write!(f, ".{k}")?;
                }
                Step::Key(k) => write!(f, "[{k:?}]")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_keys_and_indexes() {
        let doc: Value =
            serde_json::from_str(r#"{"a":{"b":[{"c":0.5},{"c d":true}]},"x":"7"}"#).unwrap();
        let get = |p: &str| JsonPath::parse(p).unwrap().find(&doc).cloned();
        assert_eq!(get("$.a.b[0].c"), Ok(Value::from(0.5)));
        assert_eq!(get(r#"$.a.b[1]["c d"]"#), Ok(Value::Bool(true)));
        assert_eq!(get("$['x']"), Ok(Value::from("7")));
        assert_eq!(get("$"), Ok(doc.clone()));
        assert_eq!(
            get("$.a.b[2].c"),
            Err(
                r#"`$.a.b[2].c` found nothing: `$.a.b` is [{"c":0.5},{"c d":true}], with no element [2]"#
                    .to_owned()
            )
        );
        assert!(get("$.a.nope").unwrap_err().contains("with no key `nope`"));
        assert_eq!(
            JsonPath::parse(r#"$.a["c d"][3]"#).unwrap().to_string(),
            r#"$.a["c d"][3]"#
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for (bad, offset) in [
            ("a.b", 0),
            ("$.", 2),
            ("$..a", 2),
            ("$[x]", 2),
            ("$[0", 1),
            ("$a", 1),
        ] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert_eq!(e.offset, offset, "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_strings_and_booleans_count() {
        assert_eq!(number(&Value::from(2)), Some(2.0));
        assert_eq!(number(&Value::from(" 0.25 ")), Some(0.25));
        assert_eq!(number(&Value::Bool(true)), Some(1.0));
        assert_eq!(number(&Value::Bool(false)), Some(0.0));
        assert_eq!(number(&Value::Null), None);
        assert_eq!(number(&Value::from("ok")), None);
    }
}
