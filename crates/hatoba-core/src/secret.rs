//! `SecretValue`: a secret's plain value while Hatoba holds it in memory.
//!
//! Its `Debug` and `Display` print `‹secret›`, never the value, so a value
//! that ends up in a log line, an error message, a panic or a `{:?}` of a
//! larger struct shows nothing. It is deliberately not `Serialize`: the only
//! ways to the text are [`SecretValue::expose`] (to put it into an
//! instance's environment) and the store's encryption.

use std::fmt;

/// A secret's value. Printing it shows `‹secret›`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: String) -> SecretValue {
        SecretValue(value)
    }

    /// The value itself, for the one place that needs it (the process
    /// environment of an instance, or the encryption).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its length in bytes (for limits and messages; not the value).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(‹secret›)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("‹secret›")
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        // Best effort: zero the bytes before the allocation is freed, so a
        // freed page does not hand the value to the next allocation.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = SecretValue::new("s3cr3t-canary".to_owned());
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(!format!("{s}").contains("s3cr3t"));
        let wrapped = Some(vec![s.clone()]);
        assert!(!format!("{wrapped:?} {wrapped:#?}").contains("s3cr3t"));
        assert_eq!(s.expose(), "s3cr3t-canary");
    }
}
