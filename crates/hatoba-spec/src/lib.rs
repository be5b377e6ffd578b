//! `hatoba.yaml`: the one declarative file that describes an application's
//! services, environments, rollout strategies and analysis.
//!
//! Reading goes in three steps, all pure: text → YAML tree with positions
//! (`yaml`) → typed `Spec` with every mistake collected as a `Diagnostic`
//! (`decode_spec`) → rendered text (`diag::render`). Nothing here touches the
//! file system, the network or a clock; the binary reads the file and prints.

mod condition;
mod decode;
mod decode_spec;
mod diag;
mod interpolate;
mod model;
mod provider_syntax;
mod schema;
mod yaml;

pub use condition::{CmpOp, Condition, ConditionError, Operand};
pub use decode::suggest;
pub use diag::{Diagnostic, Severity, render};
pub use interpolate::{InterpolationError, interpolate, is_variable_name, variables};
pub use model::*;
pub use schema::json_schema;
pub use yaml::{Pos, Span};

/// The largest spec we read. Real specs are a few kilobytes; a bigger file
/// is almost surely the wrong file, and refusing it keeps memory bounded.
pub const MAX_SPEC_BYTES: usize = 4 * 1024 * 1024;

/// The outcome of reading a spec: the spec when there was no error, and
/// every diagnostic (errors and warnings) in file order.
#[derive(Debug)]
pub struct Parsed {
    /// Present when no diagnostic is an error.
    pub spec: Option<Spec>,
    /// Everything found, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads a spec from raw bytes: refuses oversized, binary and non-UTF-8
/// input with one clear diagnostic, then parses the text.
pub fn parse_bytes(bytes: &[u8]) -> Parsed {
    if bytes.len() > MAX_SPEC_BYTES {
        return whole_file_error(
            format!(
                "the file is {} bytes; a spec may be at most {} bytes",
                bytes.len(),
                MAX_SPEC_BYTES
            ),
            "is this the right file? hatoba.yaml is usually a few kilobytes",
        );
    }
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        let span = span_of_byte(bytes, at);
        return Parsed {
            spec: None,
            diagnostics: vec![
                Diagnostic::error(
                    span,
                    "",
                    "this is a binary file (a NUL byte), not YAML text",
                )
                .with_hint("point `-f` at your hatoba.yaml"),
            ],
        };
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let span = span_of_byte(bytes, e.valid_up_to());
            Parsed {
                spec: None,
                diagnostics: vec![
                    Diagnostic::error(span, "", "the file is not UTF-8 text")
                        .with_hint("save it as UTF-8"),
                ],
            }
        }
    }
}

/// Reads a spec from text.
pub fn parse(source: &str) -> Parsed {
    if source.len() > MAX_SPEC_BYTES {
        return parse_bytes(source.as_bytes());
    }
    match yaml::parse(source) {
        Err(e) => {
            let mut d = Diagnostic::error(e.span, "", e.message);
            d.hint = e.hint;
            Parsed {
                spec: None,
                diagnostics: vec![d],
            }
        }
        Ok(None) => whole_file_error(
            "the file is empty".to_owned(),
            "start from `examples/quickstart/hatoba.yaml`, or run `hatoba schema` for the full format",
        ),
        Ok(Some(root)) => {
            let (spec, diagnostics) = decode_spec::decode(&root, source);
            Parsed { spec, diagnostics }
        }
    }
}

fn whole_file_error(message: String, hint: &str) -> Parsed {
    let d = Diagnostic {
        severity: Severity::Error,
        span: None,
        path: String::new(),
        message,
        hint: Some(hint.to_owned()),
    };
    Parsed {
        spec: None,
        diagnostics: vec![d],
    }
}

/// The line and column of a byte offset, for errors found before the text
/// could be decoded.
fn span_of_byte(bytes: &[u8], at: usize) -> Span {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Span {
        start: Pos { line, col },
        len: 1,
    }
}
