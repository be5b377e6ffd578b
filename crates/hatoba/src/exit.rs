//! Exit codes scripts can trust, and the one error type every command
//! returns them through.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | the operation failed (a deployment failed, the store could not be written, the history database is damaged: `hatoba restore` a backup) |
//! | 2 | bad input or usage: an invalid spec, an unknown flag, a bad argument, an unreadable file |
//! | 3 | the Hatoba server could not be reached |
//! | 4 | not found: no such service, environment, deployment or state directory |
//! | 5 | conflict or refused: another deployment of the service is in progress; `hatoba restore` while a server runs for the state directory; the server refused the token (`HATOBA_TOKEN`) or who asks |
//! | 6 | not built yet: the command exists but this version of Hatoba cannot do it |
//!
//! An error answer of the server's API carries a kind (`hatoba_api::ErrorKind`),
//! and the code is the kind's (`ErrorKind::exit_code`), never derived from the
//! HTTP status.

use std::fmt;

/// A documented exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "the whole table is the contract, also before every command that returns each code exists"
)]
pub(crate) enum Exit {
    Ok = 0,
    Failed = 1,
    BadInput = 2,
    Unreachable = 3,
    NotFound = 4,
    Conflict = 5,
    NotBuilt = 6,
}

impl Exit {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The code of an API error's kind (`ErrorKind::exit_code`, the one
    /// mapping every client uses).
    pub(crate) fn of_kind(kind: hatoba_api::ErrorKind) -> Exit {
        match kind.exit_code() {
            0 => Exit::Ok,
            2 => Exit::BadInput,
            3 => Exit::Unreachable,
            4 => Exit::NotFound,
            5 => Exit::Conflict,
            6 => Exit::NotBuilt,
            _ => Exit::Failed,
        }
    }
}

/// An operation's refusal, run by the CLI itself over the store (no server
/// runs), as the error a person reads: the same words and exit code the API
/// would give.
pub(crate) fn op_error(e: hatoba_server::OpError) -> CliError {
    let mut err = CliError::new(Exit::of_kind(e.kind()), e.message());
    if let Some(h) = e.hint_text() {
        err = err.hint(h);
    }
    err
}

/// A failure the user must read: what went wrong, what to do, and the exit
/// code that says which kind of failure it was.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit code for any error: a `CliError` says it; anything else is an
/// operation that failed.
pub(crate) fn exit_code(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|e| e.downcast_ref::<CliError>())
        .map_or(Exit::Failed, |e| e.exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API error's kind exits with the code `ErrorKind::exit_code` says.
    #[test]
    fn every_error_kind_exits_with_its_code() {
        for kind in hatoba_api::ErrorKind::ALL {
            assert_eq!(Exit::of_kind(kind).code(), kind.exit_code(), "{kind:?}");
        }
        assert_eq!(
            Exit::of_kind(hatoba_api::ErrorKind::Unauthorized),
            Exit::Conflict
        );
    }
}
