//! Names and identifiers: services, environments, versions, deployments.
//!
//! Service and environment names become parts of paths, metric labels, log
//! fields and (later) Kubernetes objects, so they follow the DNS label rule:
//! lowercase letters, digits and `-`, at most 63 characters, starting with a
//! letter and not ending with `-`.

use std::fmt;

/// A name or id that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a valid {what}: {rule}", shown(found))]
pub struct NameError {
    /// What kind of name it was meant to be (`service name`, `version`, ...).
    pub what: &'static str,
    /// The rejected text.
    pub found: String,
    /// The rule it breaks, in words.
    pub rule: &'static str,
}

/// Rejected input as a message shows it: control characters escaped, and
/// cut after 64 characters (saying how long it was), so a hostile or
/// mistaken value cannot flood a terminal or a log.
pub fn shown(found: &str) -> String {
    const MAX: usize = 64;
    let count = found.chars().count();
    let head: String = found.chars().take(MAX).collect::<String>();
    let mut out: String = head.escape_debug().collect();
    if count > MAX {
        out.push_str(&format!("… ({count} characters)"));
    }
    out
}

const LABEL_RULE: &str = "use lowercase letters, digits and `-`, start with a letter, end with a letter or digit, at most 63 characters";

fn check_label(what: &'static str, s: &str) -> Result<(), NameError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_lowercase()
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            found: s.to_owned(),
            rule: LABEL_RULE,
        })
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<$name, NameError> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl $name {
            /// Checks the rule and wraps the text.
            pub fn new(s: impl Into<String>) -> Result<$name, NameError> {
                let s = s.into();
                let check: fn(&'static str, &str) -> Result<(), NameError> = $check;
                check($what, &s)?;
                Ok($name(s))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// The name of a service in `hatoba.yaml` (`web`, `api`), a DNS label.
    ServiceName,
    "service name",
    check_label
);

string_newtype!(
    /// The name of an environment (`staging`, `production`), a DNS label.
    EnvName,
    "environment name",
    check_label
);

string_newtype!(
    /// A version of a service as the user names it: `v2`, `1.4.0`, a commit
    /// sha, `2026-11-23.1`. At most 128 characters of letters, digits, `.`,
    /// `_`, `+` and `-`, starting with a letter or digit, so it is safe in an
    /// image tag, a file name and a metric label.
    Version,
    "version",
    |what, s| {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
        if ok {
            Ok(())
        } else {
            Err(NameError {
                what,
                found: s.to_owned(),
                rule: "use letters, digits, `.`, `_`, `+` and `-`, start with a letter or digit, at most 128 characters",
            })
        }
    }
);

string_newtype!(
    /// The id of a deployment, as the store hands it out (`d-01k2...`).
    DeploymentId,
    "deployment id",
    |what, s| {
        let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(NameError { what, found: s.to_owned(), rule: "use letters, digits and `-`, at most 64 characters" })
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_input_is_shown_short_and_escaped() {
        let long = "a".repeat(5000);
        let e = long.parse::<Version>().unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
        assert!(e.contains("… (5000 characters)"), "{e}");
        let e = "v1\n\u{1b}[31m".parse::<Version>().unwrap_err().to_string();
        assert!(
            e.starts_with("`v1\\n\\u{1b}[31m` is not a valid version"),
            "{e}"
        );
        assert_eq!(shown("web"), "web");
    }

    #[test]
    fn labels() {
        for good in ["web", "api-v2", "a", &"a".repeat(63)] {
            assert!(ServiceName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Web",
            "1web",
            "web-",
            "we_b",
            "web.api",
            &"a".repeat(64),
            "wéb",
        ] {
            assert!(ServiceName::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            EnvName::new("Prod").unwrap_err().to_string(),
            "`Prod` is not a valid environment name: use lowercase letters, digits and `-`, start with a letter, end with a letter or digit, at most 63 characters"
        );
    }

    #[test]
    fn versions() {
        for good in [
            "v1",
            "1.4.0",
            "1.4.0-rc.1+build.5",
            "abc123def",
            "2026-11-23.1",
        ] {
            assert!(Version::new(good).is_ok(), "{good}");
        }
        for bad in ["", "-v1", "v 1", "v1/2", "${VERSION}", &"1".repeat(129)] {
            assert!(Version::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deployment_ids() {
        assert!(DeploymentId::new("d-01k2abc").is_ok());
        assert!(DeploymentId::new("d 1").is_err());
        assert!(DeploymentId::new("").is_err());
    }
}
