//! Metric providers for canary analysis that measure outside Hatoba's own
//! proxy: [`prometheus`] (a PromQL instant query), [`webhook`] (an HTTP
//! call, a JSON path to the number) and [`command`] (a program's exit status
//! or the number it prints). The `builtin` provider reads the [`Recorder`]
//! in-process and is not here.
//!
//! Every provider is an async function that returns a [`Measurement`]: a
//! finite number, or [`Measurement::Inconclusive`] with a reason that names
//! what was wrong (which server, which HTTP status, a snippet of what it
//! answered). They never panic and never hang: each call is bounded by its
//! provider's `timeout` from the spec (a zero timeout, which the spec's
//! decoder never produces, falls back to the documented default), and every
//! answer read is bounded in size. Fail-safe rules, shared by all three:
//!
//! - An error, a timeout, an oversized answer, NaN or ±Inf, no data or more
//!   than one value is `Inconclusive`, never a number a condition could
//!   pass on.
//! - Placeholders `{{name}}` (see [`substitute`]) are replaced before
//!   anything is sent; an unknown or unclosed placeholder is `Inconclusive`
//!   and nothing is sent (never a query with a literal `{{`).
//!
//! Only plain `http://` is spoken for now; an `https://` address is
//! `Inconclusive` saying so.
//!
//! [`Recorder`]: crate::Recorder

mod command;
mod http;
mod prometheus;
mod webhook;

pub use command::{OUTPUT_LIMIT, command};
pub use prometheus::{ANSWER_LIMIT, prometheus};
pub use webhook::{JsonPath, JsonPathError, webhook};

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Default timeout of a Prometheus query when the spec gives none.
pub const DEFAULT_PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of a webhook call when the spec gives none.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of a command when the spec gives none.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What one measurement gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Measurement {
    /// A finite number, for the metric's conditions to judge.
    Value(f64),
    /// No number could be had; the reason says what was wrong. Analysis
    /// never promotes on it.
    Inconclusive(String),
    /// The check itself said it failed (a command's non-zero exit): the
    /// value 0, which may fail the metric's conditions but never passes
    /// them (a check that crashed must not read as "0 errors"). The text
    /// says how it ended.
    Failed(String),
}

impl Measurement {
    /// The number, if there is one.
    pub fn value(&self) -> Option<f64> {
        match self {
            Measurement::Value(v) => Some(*v),
            Measurement::Failed(_) => Some(0.0),
            Measurement::Inconclusive(_) => None,
        }
    }

    /// Why there is no number, if there is none.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Measurement::Value(_) | Measurement::Failed(_) => None,
            Measurement::Inconclusive(reason) => Some(reason),
        }
    }

    /// `Value(v)` for a finite `v`; NaN and ±Inf are inconclusive
    /// (`"value is NaN"`, `"value is +Inf"`, `"value is -Inf"`), prefixed
    /// with `who` when it is not empty.
    pub fn finite(v: f64, who: &str) -> Measurement {
        let what = if v.is_nan() {
            "NaN"
        } else if v == f64::INFINITY {
            "+Inf"
        } else if v == f64::NEG_INFINITY {
            "-Inf"
        } else {
            return Measurement::Value(v);
        };
        if who.is_empty() {
            Measurement::Inconclusive(format!("value is {what}"))
        } else {
            Measurement::Inconclusive(format!("{who}: value is {what}"))
        }
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measurement::Value(v) => write!(f, "{v}"),
            Measurement::Inconclusive(reason) => write!(f, "inconclusive: {reason}"),
            Measurement::Failed(how) => write!(f, "0 ({how})"),
        }
    }
}

/// The values substituted into queries, URLs, headers, bodies and command
/// arguments (see [`substitute`]), and given to commands as environment
/// variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `{{service}}`: the service being deployed.
    pub service: String,
    /// `{{version}}`: the version being deployed (during a canary, the
    /// canary's version).
    pub version: String,
    /// `{{canary_version}}`: the canary's version.
    pub canary_version: String,
    /// `{{stable_version}}`: the version serving users now; `None` on a
    /// first deployment, where using the placeholder is inconclusive.
    pub stable_version: Option<String>,
    /// `{{env}}`: the environment.
    pub env: String,
    /// The template's arguments, each `{{name}}`. A name that is also one
    /// of the five above is shadowed by it.
    pub template_args: BTreeMap<String, String>,
}

impl Args {
    /// The value of `{{name}}`.
    pub fn get(&self, name: &str) -> Result<&str, SubstituteError> {
        match name {
            "service" => Ok(&self.service),
            "version" => Ok(&self.version),
            "canary_version" => Ok(&self.canary_version),
            "env" => Ok(&self.env),
            "stable_version" => self
                .stable_version
                .as_deref()
                .ok_or(SubstituteError::NoStableVersion),
            _ => self
                .template_args
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| SubstituteError::Unknown {
                    name: name.to_owned(),
                }),
        }
    }
}

/// A placeholder that cannot be replaced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    /// `{{name}}` names no argument.
    #[error(
        "unknown placeholder `{{{{{name}}}}}`: known are service, version, canary_version, stable_version, env and the template's arguments"
    )]
    Unknown {
        /// The name between the braces.
        name: String,
    },
    /// `{{stable_version}}` on a deployment with no stable version.
    #[error("`{{{{stable_version}}}}` has no value: there is no stable version yet")]
    NoStableVersion,
    /// `{{` without its `}}`.
    #[error("`{{{{` at character {offset} is never closed with `}}}}`")]
    Unclosed {
        /// Where the `{{` starts, in characters from the start (the first is 0).
        offset: usize,
    },
}

/// Replaces every `{{name}}` in `text` (spaces inside the braces are
/// allowed: `{{ name }}`) with its value from `args`. Values are inserted
/// as they are, not escaped for PromQL, JSON or URLs. A single `{` or `}`
/// is left alone.
pub fn substitute(text: &str, args: &Args) -> Result<String, SubstituteError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            let offset = text[..text.len() - rest.len() + start].chars().count();
            return Err(SubstituteError::Unclosed { offset });
        };
        out.push_str(args.get(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The first `max` characters of `bytes` (lossy UTF-8) on one line, runs of
/// whitespace as one space, with `…` when cut; `(empty)` for nothing.
pub(crate) fn snippet(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut count = 0;
    for word in text.split_whitespace() {
        for c in (if out.is_empty() { "" } else { " " })
            .chars()
            .chain(word.chars())
        {
            if count == max {
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
    }
    if out.is_empty() {
        "(empty)".to_owned()
    } else {
        out
    }
}

/// `timeout`, or `default` when it is zero.
pub(crate) fn or_default(timeout: Duration, default: Duration) -> Duration {
    if timeout.is_zero() { default } else { timeout }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        Args {
            service: "web".into(),
            version: "v2".into(),
            canary_version: "v2".into(),
            stable_version: None,
            env: "prod".into(),
            template_args: [("instance".to_owned(), "127.0.0.1:80".to_owned())].into(),
        }
    }

    #[test]
    fn substitutes_known_names_and_refuses_the_rest() {
        let a = args();
        assert_eq!(
            substitute(
                r#"up{service="{{service}}",v="{{ version }}",e="{{env}}",i="{{instance}}"}"#,
                &a
            )
            .unwrap(),
            r#"up{service="web",v="v2",e="prod",i="127.0.0.1:80"}"#
        );
        assert_eq!(substitute("{a} }} {", &a).unwrap(), "{a} }} {");
        assert_eq!(
            substitute("x{{nope}}", &a),
            Err(SubstituteError::Unknown {
                name: "nope".into()
            })
        );
        assert_eq!(
            substitute("x{{nope}}", &a).unwrap_err().to_string(),
            "unknown placeholder `{{nope}}`: known are service, version, canary_version, \
             stable_version, env and the template's arguments"
        );
        assert_eq!(
            substitute("é{{service}} {{env", &a),
            Err(SubstituteError::Unclosed { offset: 13 })
        );
        assert_eq!(
            substitute("{{stable_version}}", &a),
            Err(SubstituteError::NoStableVersion)
        );
        let a = Args {
            stable_version: Some("v1".into()),
            ..a
        };
        assert_eq!(substitute("{{stable_version}}", &a).unwrap(), "v1");
    }

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(
            snippet(b"<html>\n  <b>oops</b>\n</html>", 200),
            "<html> <b>oops</b> </html>"
        );
        assert_eq!(snippet(b"abcdef", 3), "abc…");
        assert_eq!(snippet(b" \n ", 3), "(empty)");
        assert_eq!(snippet(&[0xff, b'a'], 10), "\u{fffd}a");
    }

    #[test]
    fn only_finite_numbers_are_values() {
        assert_eq!(Measurement::finite(0.5, "x"), Measurement::Value(0.5));
        assert_eq!(
            Measurement::finite(f64::NAN, ""),
            Measurement::Inconclusive("value is NaN".into())
        );
        assert_eq!(
            Measurement::finite(f64::NEG_INFINITY, "p").reason(),
            Some("p: value is -Inf")
        );
        assert_eq!(Measurement::Value(1.0).to_string(), "1");
    }
}
