//! Diagnostics: what is wrong in a spec, where, and what to do about it.
//!
//! Decoding collects every diagnostic in one pass; `render` turns them into
//! the text `hatoba validate` prints, with the source line underlined. No IO.

use crate::yaml::Span;
use std::fmt::Write as _;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The spec cannot be used.
    Error,
    /// The spec works but probably not as meant.
    Warning,
}

/// One thing wrong with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where, when the problem has a place in the file.
    pub span: Option<Span>,
    /// The field path, e.g. `services.web.strategy.canary.steps[2].setWeight`;
    /// empty for the whole document.
    pub path: String,
    /// What is wrong: expected what, found what.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at a place.
    pub fn error(span: Span, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span: Some(span),
            path: path.to_owned(),
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at a place.
    pub fn warning(span: Span, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            span: Some(span),
            path: path.to_owned(),
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
}

/// The most diagnostics [`render`] shows: a file with thousands of the
/// same mistake would bury the summary; the JSON report has them all.
pub(crate) const MAX_RENDERED: usize = 100;

/// Renders diagnostics as `hatoba validate` prints them:
///
/// ```text
/// hatoba.yaml:14:22: error: services.web.strategy.canary.steps[2].setWeight: expected a weight from 0 to 100, found `120`
///    |
/// 14 |       - setWeight: 120
///    |                    ^^^
///    = hint: ...
/// ```
pub fn render(file: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    for d in diagnostics.iter().take(MAX_RENDERED) {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let place = match d.span {
            Some(s) => format!("{file}:{}:{}", s.start.line, s.start.col),
            None => file.to_owned(),
        };
        let path = if d.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", d.path)
        };
        let _ = writeln!(out, "{place}: {level}: {path}{}", d.message);
        if let Some(span) = d.span
            && let Some(text) = lines.get(span.start.line.saturating_sub(1))
        {
            let number = span.start.line.to_string();
            let pad = " ".repeat(number.len());
            let (text, at) = shown_line(text);
            let chars = at.len() - 1;
            let first = span.start.col.saturating_sub(1).min(chars);
            let last = first.saturating_add(span.len.max(1)).min(chars);
            let col = at[first];
            let len = (at[last] - col).max(1);
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {text}");
            let _ = writeln!(out, "{pad} | {}{}", " ".repeat(col), "^".repeat(len));
            if let Some(hint) = &d.hint {
                let _ = writeln!(out, "{pad} = hint: {hint}");
            }
        } else if let Some(hint) = &d.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
    }
    if diagnostics.len() > MAX_RENDERED {
        let _ = writeln!(
            out,
            "... and {} more (`hatoba validate -f {file} -o json` lists every one)",
            diagnostics.len() - MAX_RENDERED
        );
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    if !diagnostics.is_empty() {
        let plural = |n: usize, w: &str| {
            if n == 1 {
                format!("{n} {w}")
            } else {
                format!("{n} {w}s")
            }
        };
        let _ = writeln!(
            out,
            "{file}: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    }
    out
}

/// The first 200 characters of a source line as the terminal shows them,
/// and the column each character starts at (one more entry: where the
/// line ends), so the carets stand under the span. A tab is one space; a
/// control character is written as its escape (`\u{1b}`), so a spec cannot
/// drive the operator's terminal; a wide character takes two columns.
fn shown_line(line: &str) -> (String, Vec<usize>) {
    use unicode_width::UnicodeWidthChar as _;
    let mut text = String::new();
    let mut at = vec![0];
    let mut col = 0;
    for c in line.chars().take(200) {
        if c == '\t' {
            text.push(' ');
            col += 1;
        } else if c.is_control() {
            let escaped = c.escape_unicode().to_string();
            col += escaped.len();
            text.push_str(&escaped);
        } else {
            text.push(c);
            col += c.width().unwrap_or(0);
        }
        at.push(col);
    }
    (text, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_a_hundred_diagnostics_the_rest_are_counted_not_shown() {
        let d = |n: usize| Diagnostic {
            severity: Severity::Error,
            span: None,
            path: format!("services.s{n}"),
            message: "wrong".to_owned(),
            hint: None,
        };
        let many: Vec<Diagnostic> = (0..MAX_RENDERED + 50).map(d).collect();
        let text = render("hatoba.yaml", "", &many);
        assert!(text.contains("services.s99: wrong"), "{text}");
        assert!(!text.contains("services.s100: wrong"), "{text}");
        assert!(text.contains("... and 50 more"), "{text}");
        assert!(
            text.ends_with("hatoba.yaml: 150 errors, 0 warnings\n"),
            "{text}"
        );
        let few: Vec<Diagnostic> = (0..3).map(d).collect();
        assert!(!render("hatoba.yaml", "", &few).contains("more"));
    }

    /// The carets stand under the span when the line holds a control
    /// character (shown escaped, never sent raw to the terminal) or wide
    /// characters.
    #[test]
    fn carets_stand_under_the_span_past_escapes_and_wide_characters() {
        use crate::yaml::Pos;
        let d = |col: usize, len: usize| Diagnostic {
            severity: Severity::Error,
            span: Some(Span {
                start: Pos { line: 1, col },
                len,
            }),
            path: "name".to_owned(),
            message: "wrong".to_owned(),
            hint: None,
        };
        let source = "name: \u{1b}[31m红 bad";
        let text = render("s.yaml", source, &[d(14, 3)]);
        assert!(!text.contains('\u{1b}'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let shown = lines[2].strip_prefix("1 | ").unwrap();
        assert_eq!(shown, "name: \\u{1b}[31m红 bad");
        let carets = lines[3].strip_prefix("  | ").unwrap();
        // `bad` starts at column 6 + 6 (`\u{1b}`) + 4 (`[31m`) + 2 (红) + 1.
        assert_eq!(carets, format!("{}^^^", " ".repeat(19)));
        // A span past the end of the line points at its end.
        let text = render("s.yaml", "a: b", &[d(40, 3)]);
        assert!(text.contains("  |     ^\n"), "{text}");
    }
}
