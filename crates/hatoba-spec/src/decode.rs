//! The small toolkit the spec decoder is built from: read a mapping's fields
//! (remembering which keys were asked for, so unknown keys are reported with
//! a "did you mean"), and read typed scalars with "expected X, found Y"
//! messages. Every reader records a diagnostic and returns `None` on bad
//! input, so decoding goes on and reports every mistake in one pass. No IO.

use crate::diag::Diagnostic;
use crate::yaml::{Node, NodeKind, Span};
use std::collections::BTreeMap;
use std::time::Duration;

/// Diagnostics collected while decoding.
#[derive(Default)]
pub(crate) struct Diags(pub(crate) Vec<Diagnostic>);

impl Diags {
    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub(crate) fn error(&mut self, span: Span, path: &str, message: impl Into<String>) {
        self.0.push(Diagnostic::error(span, path, message));
    }

    pub(crate) fn expected(&mut self, node: &Node, path: &str, what: &str) {
        self.error(
            node.span,
            path,
            format!("expected {what}, found {}", node.describe()),
        );
    }
}

/// `path.key`, or `key` at the top.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The closest candidate to a misspelt word, if one is close enough to be
/// what was meant: same letters ignoring case, `_` and `-` (`max_surge` for
/// `maxSurge`), or a small edit distance.
pub fn suggest<'c>(found: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let found_norm = norm(found);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        if norm(c) == found_norm {
            return Some(c);
        }
        let distance = strsim::damerau_levenshtein(&found_norm, &norm(c));
        let limit = (c.len().max(found.len()) / 3).clamp(1, 3);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, c));
        }
    }
    best.map(|(_, c)| c)
}

/// The fields of one mapping. Keys asked for with `get` are the known keys;
/// `finish` reports the rest as unknown.
pub(crate) struct Fields<'n> {
    span: Span,
    entries: &'n [(Node, Node)],
    path: String,
    known: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    /// Opens a mapping; `what` names it in "expected ..." messages. A null
    /// node (`key:` with nothing after it) reads as an empty mapping.
    pub(crate) fn of(node: &'n Node, path: &str, d: &mut Diags, what: &str) -> Option<Fields<'n>> {
        match &node.kind {
            NodeKind::Map(entries) => Some(Fields {
                span: node.span,
                entries,
                path: path.to_owned(),
                known: Vec::new(),
            }),
            NodeKind::Null => Some(Fields {
                span: node.span,
                entries: &[],
                path: path.to_owned(),
                known: Vec::new(),
            }),
            _ => {
                d.expected(node, path, what);
                None
            }
        }
    }

    /// The value of `key`, if present and not null.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        self.entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map(|(_, v)| v)
            .filter(|v| !matches!(v.kind, NodeKind::Null))
    }

    /// The value of `key`, or an error naming the missing field.
    pub(crate) fn required(
        &mut self,
        key: &'static str,
        d: &mut Diags,
        hint: &str,
    ) -> Option<&'n Node> {
        let found = self.get(key);
        // A misspelt key (`comand`) is reported once, as unknown with a
        // "did you mean", not also as a missing field.
        let misspelt = self.entries.iter().any(|(k, _)| {
            let name = k.as_scalar().unwrap_or("");
            name != key && suggest(name, [key]).is_some()
        });
        if found.is_none() && !misspelt {
            d.push(
                Diagnostic::error(
                    self.span,
                    &self.path,
                    format!("missing required field `{key}`"),
                )
                .with_hint(hint.to_owned()),
            );
        }
        found
    }

    /// The path of a field of this mapping.
    pub(crate) fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Where this mapping starts.
    pub(crate) fn span(&self) -> Span {
        self.span
    }

    /// Reports every key that was never asked for.
    pub(crate) fn finish(self, d: &mut Diags) {
        for (key, _) in self.entries {
            let name = key.as_scalar().unwrap_or("");
            if self.known.contains(&name) {
                continue;
            }
            let mut diag = Diagnostic::error(
                key.span,
                &join(&self.path, name),
                format!("unknown field `{name}`"),
            );
            diag = match suggest(name, self.known.iter().copied()) {
                Some(s) => diag.with_hint(format!("did you mean `{s}`?")),
                None => diag.with_hint(format!("expected one of: {}", self.known.join(", "))),
            };
            d.push(diag);
        }
    }
}

/// Any scalar as text (`8080` and `true` are fine as strings).
pub(crate) fn string(node: &Node, path: &str, d: &mut Diags) -> Option<String> {
    match &node.kind {
        NodeKind::Scalar { text, .. } => Some(text.clone()),
        _ => {
            d.expected(node, path, "a string");
            None
        }
    }
}

/// A non-empty string.
pub(crate) fn non_empty(node: &Node, path: &str, d: &mut Diags) -> Option<String> {
    let s = string(node, path, d)?;
    if s.trim().is_empty() {
        d.expected(node, path, "a non-empty string");
        return None;
    }
    Some(s)
}

/// A whole number within `lo..=hi`.
pub(crate) fn int_in(node: &Node, path: &str, d: &mut Diags, lo: i64, hi: i64) -> Option<i64> {
    let parsed = match &node.kind {
        NodeKind::Scalar {
            text,
            quoted: false,
        } => text.parse::<i64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if (lo..=hi).contains(&n) => Some(n),
        Some(n) => {
            d.error(
                node.span,
                path,
                format!("expected a whole number from {lo} to {hi}, found {n}"),
            );
            None
        }
        None => {
            d.expected(node, path, &format!("a whole number from {lo} to {hi}"));
            None
        }
    }
}

/// A count that fits in u32 within `lo..=hi`.
pub(crate) fn u32_in(node: &Node, path: &str, d: &mut Diags, lo: u32, hi: u32) -> Option<u32> {
    int_in(node, path, d, i64::from(lo), i64::from(hi)).and_then(|n| u32::try_from(n).ok())
}

/// `true` or `false`.
pub(crate) fn boolean(node: &Node, path: &str, d: &mut Diags) -> Option<bool> {
    match &node.kind {
        NodeKind::Scalar {
            text,
            quoted: false,
        } if text == "true" => Some(true),
        NodeKind::Scalar {
            text,
            quoted: false,
        } if text == "false" => Some(false),
        _ => {
            d.expected(node, path, "`true` or `false`");
            None
        }
    }
}

/// A duration such as `30s` or `1h30m`.
pub(crate) fn duration(node: &Node, path: &str, d: &mut Diags) -> Option<Duration> {
    let NodeKind::Scalar { text, .. } = &node.kind else {
        d.expected(node, path, "a duration such as `30s`");
        return None;
    };
    match hatoba_core::parse_duration(text) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut diag = Diagnostic::error(
                node.span,
                path,
                format!(
                    "expected a duration such as `30s`, found {}",
                    node.describe()
                ),
            );
            if let hatoba_core::DurationError::MissingUnit { .. } = e {
                diag = diag.with_hint(format!(
                    "add a unit: `{text}s` for seconds, `{text}ms` for milliseconds"
                ));
            } else {
                diag = diag.with_hint(e.hint());
            }
            d.push(diag);
            None
        }
    }
}

/// A list of strings.
pub(crate) fn string_list(node: &Node, path: &str, d: &mut Diags) -> Option<Vec<String>> {
    let NodeKind::Seq(items) = &node.kind else {
        d.expected(node, path, "a list of strings");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match string(item, &index(path, i), d) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A mapping of strings to strings (environment variables, headers).
pub(crate) fn string_map(
    node: &Node,
    path: &str,
    d: &mut Diags,
) -> Option<BTreeMap<String, String>> {
    let NodeKind::Map(entries) = &node.kind else {
        if matches!(node.kind, NodeKind::Null) {
            return Some(BTreeMap::new());
        }
        d.expected(node, path, "a mapping of names to values");
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in entries {
        let key = k.as_scalar().unwrap_or("").to_owned();
        let value = match &v.kind {
            NodeKind::Null => Some(String::new()),
            _ => string(v, &join(path, &key), d),
        };
        match value {
            Some(value) => {
                out.insert(key, value);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Reads a list, decoding each item with `item`.
pub(crate) fn list<T>(
    node: &Node,
    path: &str,
    d: &mut Diags,
    what: &str,
    mut item: impl FnMut(&Node, &str, &mut Diags) -> Option<T>,
) -> Option<Vec<T>> {
    let NodeKind::Seq(items) = &node.kind else {
        d.expected(node, path, what);
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, n) in items.iter().enumerate() {
        match item(n, &index(path, i), d) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let known = ["maxSurge", "maxUnavailable", "steps", "failureLimit"];
        assert_eq!(suggest("max_surge", known), Some("maxSurge"));
        assert_eq!(suggest("failureLimt", known), Some("failureLimit"));
        assert_eq!(suggest("step", known), Some("steps"));
        assert_eq!(suggest("banana", known), None);
    }
}
