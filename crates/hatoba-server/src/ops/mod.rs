//! The operations layer: every operation a client can ask of a running
//! server (deploy, rollback, approve, promote, abort, service and deployment
//! detail, history, status, analysis, diagnosis, logs, secrets, the event
//! stream, reloading the spec) as a method of [`Server`](crate::Server) with typed inputs,
//! returning `Result<T, OpError>`. The reads of the history alone
//! (`history`, `status`, `analysis`) are also functions of a store, which
//! the CLI runs itself when no server runs.
//!
//! This is the one place where the rules live: the HTTP API (`http`), and
//! later every other client, only translates. Nothing here knows HTTP: an
//! [`OpError`] is a decision (bad input, not found, conflict, forbidden,
//! unavailable, failed); [`OpError::kind`] names it on the wire, and
//! `hatoba_api::ErrorKind` maps that to an HTTP status and an exit code in
//! one place each.

mod deploy;
mod envs;
mod events;
mod history;
mod logs;
mod operate;
mod read;
mod reload;
mod secrets;

pub(crate) use deploy::log_end;
pub use deploy::without_evidence;
pub(crate) use envs::pick_environment;
pub use events::{DEFAULT_EVENT_PAGE, EventsQuery, MAX_EVENT_PAGE};
pub use history::{HistoryQuery, StatusQuery, analysis, history, status};
pub use logs::{LogsQuery, MAX_LINES, read_after, tail_file};
pub use operate::Action;

/// Why an operation did not happen, as a decision its caller acts on. The
/// message says what is wrong (expected vs found, naming the thing); the
/// hint, when there is one, says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The request is wrong: a malformed name or id, a value out of range,
    /// a variable the service does not use.
    #[error("{message}")]
    BadInput {
        /// What is wrong.
        message: String,
        /// What to do.
        hint: Option<String>,
        /// The request field at fault, when it is one.
        field: Option<String>,
    },
    /// No such service, deployment, version or secret.
    #[error("{message}")]
    NotFound {
        /// What was looked for.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// The state forbids it now: a deployment in progress, none in
    /// progress, nothing to roll back to.
    #[error("{message}")]
    Conflict {
        /// What stands in the way.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// Refused for who asks (a deployer approving their own deployment).
    #[error("{message}")]
    Forbidden {
        /// Why.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// Something the operation needs is not available now: the history
    /// store cannot be read or written.
    #[error("{message}")]
    Unavailable {
        /// What failed, with its causes.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// The operation was tried and failed: a variable without a value, a
    /// secret that cannot be opened, no secret key.
    #[error("{message}")]
    Failed {
        /// What failed, with its causes.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
}

impl OpError {
    /// A request that is wrong.
    pub fn bad_input(message: impl Into<String>) -> OpError {
        OpError::BadInput {
            message: message.into(),
            hint: None,
            field: None,
        }
    }

    /// Nothing by that name or id.
    pub fn not_found(message: impl Into<String>) -> OpError {
        OpError::NotFound {
            message: message.into(),
            hint: None,
        }
    }

    /// The state forbids it now.
    pub fn conflict(message: impl Into<String>) -> OpError {
        OpError::Conflict {
            message: message.into(),
            hint: None,
        }
    }

    /// Refused for who asks.
    pub fn forbidden(message: impl Into<String>) -> OpError {
        OpError::Forbidden {
            message: message.into(),
            hint: None,
        }
    }

    /// Something needed is not available now.
    pub fn unavailable(message: impl Into<String>) -> OpError {
        OpError::Unavailable {
            message: message.into(),
            hint: None,
        }
    }

    /// Tried and failed.
    pub fn failed(message: impl Into<String>) -> OpError {
        OpError::Failed {
            message: message.into(),
            hint: None,
        }
    }

    /// The same error with what to do about it.
    #[must_use]
    pub fn hint(mut self, text: impl Into<String>) -> OpError {
        let text = Some(text.into());
        match &mut self {
            OpError::BadInput { hint, .. }
            | OpError::NotFound { hint, .. }
            | OpError::Conflict { hint, .. }
            | OpError::Forbidden { hint, .. }
            | OpError::Unavailable { hint, .. }
            | OpError::Failed { hint, .. } => *hint = text,
        }
        self
    }

    /// The kind on the wire: it decides the HTTP status and the CLI's exit
    /// code (`hatoba_api::ErrorKind::http_status`, `exit_code`).
    pub fn kind(&self) -> hatoba_api::ErrorKind {
        use hatoba_api::ErrorKind;
        match self {
            OpError::BadInput { .. } => ErrorKind::BadInput,
            OpError::NotFound { .. } => ErrorKind::NotFound,
            OpError::Conflict { .. } => ErrorKind::Conflict,
            OpError::Forbidden { .. } => ErrorKind::Forbidden,
            OpError::Unavailable { .. } => ErrorKind::Unavailable,
            OpError::Failed { .. } => ErrorKind::Failed,
        }
    }

    /// The message, without the hint.
    pub fn message(&self) -> &str {
        match self {
            OpError::BadInput { message, .. }
            | OpError::NotFound { message, .. }
            | OpError::Conflict { message, .. }
            | OpError::Forbidden { message, .. }
            | OpError::Unavailable { message, .. }
            | OpError::Failed { message, .. } => message,
        }
    }

    /// What to do, when there is something to say.
    pub fn hint_text(&self) -> Option<&str> {
        match self {
            OpError::BadInput { hint, .. }
            | OpError::NotFound { hint, .. }
            | OpError::Conflict { hint, .. }
            | OpError::Forbidden { hint, .. }
            | OpError::Unavailable { hint, .. }
            | OpError::Failed { hint, .. } => hint.as_deref(),
        }
    }

    /// The error as every client sees it.
    pub fn to_wire(&self) -> hatoba_api::ApiError {
        hatoba_api::ApiError {
            kind: self.kind(),
            message: self.message().to_owned(),
            hint: self.hint_text().map(str::to_owned),
            field: match self {
                OpError::BadInput { field, .. } => field.clone(),
                _ => None,
            },
        }
    }

    /// The history store could not be read or written.
    pub(crate) fn store(e: &hatoba_store::StoreError) -> OpError {
        OpError::unavailable(crate::server::error_chain(e))
    }
}

#[cfg(test)]
mod tests {
    use super::OpError;

    /// Each decision has one HTTP status and one exit code; the table is
    /// the contract (`crates/hatoba/src/exit.rs` documents the codes).
    #[test]
    fn every_op_error_maps_to_one_status_and_one_exit_code() {
        let table: Vec<(OpError, u16, u8)> = vec![
            (OpError::bad_input("x"), 400, 2),
            (OpError::not_found("x"), 404, 4),
            (OpError::conflict("x"), 409, 5),
            (OpError::forbidden("x"), 403, 5),
            (OpError::unavailable("x"), 503, 1),
            (OpError::failed("x"), 422, 1),
        ];
        for (e, status, exit) in table {
            let kind = e.kind();
            assert_eq!(
                (kind.http_status(), kind.exit_code()),
                (status, exit),
                "{e:?}"
            );
            let wire = e.hint("do y").to_wire();
            assert_eq!(wire.kind, kind);
            assert_eq!(wire.message, "x");
            assert_eq!(wire.hint.as_deref(), Some("do y"));
        }
    }
}
