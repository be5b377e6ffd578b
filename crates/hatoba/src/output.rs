//! Printing: results on stdout, errors on stderr, as text for people or JSON
//! for scripts. Colours only when the stream is a terminal (anstream strips
//! them otherwise and honours NO_COLOR).

use crate::cli::Output;
use crate::exit::{CliError, Exit};
use owo_colors::OwoColorize;
use std::io::Write;

/// Writes text to stdout. A closed pipe (`hatoba history | head`) is not an error.
pub(crate) fn stdout(text: &str) {
    let mut out = anstream::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes text to stderr.
pub(crate) fn stderr(text: &str) {
    let mut err = anstream::stderr();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Prints a value as pretty JSON on stdout.
/// A strategy as the spec spells it (`blueGreen`), for text output; the
/// JSON keeps the wire's `blue_green`.
pub(crate) fn strategy(kind: &str) -> &str {
    match kind {
        "blue_green" => "blueGreen",
        other => other,
    }
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    stdout(&text);
    Ok(())
}

/// Prints a failed command's error: `error: ...` and `hint: ...` lines, or
/// an `ErrorBody` as JSON on stderr.
pub(crate) fn error(output: Output, err: &anyhow::Error, exit: Exit) {
    let hint = err
        .chain()
        .find_map(|e| e.downcast_ref::<CliError>())
        .and_then(|e| e.hint.clone());
    let message = format!("{err:#}");
    match output {
        Output::Json => {
            let body = hatoba_api::ErrorBody {
                exit_code: exit.code(),
                error: message,
                hint,
            };
            let text = serde_json::to_string(&body).unwrap_or_default();
            stderr(&format!("{text}\n"));
        }
        Output::Text => {
            let mut text = format!("{} {message}\n", "error:".red().bold());
            if let Some(h) = hint {
                text.push_str(&format!("{} {h}\n", "hint:".cyan().bold()));
            }
            stderr(&text);
        }
    }
}
