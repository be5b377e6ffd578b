//! The finder for outside parts (PostgreSQL, later Docker, Prometheus, ...):
//! use it when it is there, otherwise skip loudly, or fail under CI.
//!
//! It decides only skip-or-fail; starting the part is the caller's job.

use std::fmt::Display;
use std::io::Write;

/// Set to `1` to turn every skip into a failure (CI sets it).
pub const REQUIRE_EXTERNAL: &str = "HATOBA_REQUIRE_EXTERNAL";

/// True when `HATOBA_REQUIRE_EXTERNAL=1`: missing outside parts fail tests.
pub fn require_external() -> bool {
    std::env::var(REQUIRE_EXTERNAL).is_ok_and(|v| v == "1")
}

/// Hands over the part when `found` is `Ok`. Otherwise prints
/// `SKIP <test>: <what> unavailable: <reason>` to stderr (uncaptured, so it
/// shows even for a passing test) and returns `None`,
/// or panics with the reason under `HATOBA_REQUIRE_EXTERNAL=1`.
///
/// `<test>` is the running test's name (libtest names the test's thread).
pub fn external<T, E: Display>(what: &str, found: Result<T, E>) -> Option<T> {
    match found {
        Ok(part) => Some(part),
        Err(reason) => {
            let test = std::thread::current()
                .name()
                .filter(|name| *name != "main")
                .unwrap_or("this test")
                .to_owned();
            let line = skip_or_fail(require_external(), &test, what, &reason);
            // Straight to the stderr handle, not `eprintln!`: libtest captures
            // the macros' output of passing tests, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "{line}");
            None
        }
    }
}

/// The skip line, or a panic when outside parts are required.
fn skip_or_fail(require: bool, test: &str, what: &str, reason: &dyn Display) -> String {
    if require {
        panic!("{test}: {what} unavailable and {REQUIRE_EXTERNAL}=1: {reason}");
    }
    format!("SKIP {test}: {what} unavailable: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_by_default() {
        assert_eq!(
            skip_or_fail(false, "story::postgres", "PostgreSQL", &"no `initdb`"),
            "SKIP story::postgres: PostgreSQL unavailable: no `initdb`"
        );
        assert_eq!(external::<u8, &str>("PostgreSQL", Ok(7)), Some(7));
    }

    #[test]
    #[should_panic(
        expected = "story::postgres: PostgreSQL unavailable and HATOBA_REQUIRE_EXTERNAL=1: no `initdb`"
    )]
    fn fails_when_required() {
        skip_or_fail(true, "story::postgres", "PostgreSQL", &"no `initdb`");
    }
}
