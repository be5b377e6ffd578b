//! `${NAME}`, `${NAME:-default}` and `$${` (a literal `${`) in spec strings,
//! expanded at deploy time with `VERSION`, `--set` values, `hatoba up`'s
//! environment and the spec environment's variables (the server decides).
//!
//! Values are interpolated after parsing, never the raw YAML text, so a
//! variable can not inject structure into the spec. No IO: the caller passes
//! a lookup function.

/// Why a string could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// `${` with no closing `}`.
    #[error("`${{` at character {offset} is never closed")]
    Unclosed {
        /// 0-based character offset of the `$`.
        offset: usize,
    },
    /// `${}` or `${1ABC}`.
    #[error("`{name}` at character {offset} is not a variable name")]
    BadName {
        /// 0-based character offset of the `$`.
        offset: usize,
        /// The text between the braces.
        name: String,
    },
    /// `${A:-${B}}`: a default is plain text. It was read up to the first
    /// `}`, so the value came out as the text `${B}` (and `${A:-${B:-x}}`
    /// as `${B:-x}`), never B's value.
    #[error(
        "`${{{name}:-...}}` at character {offset} has `${{` in its default: a default is plain text, not another variable"
    )]
    NestedDefault {
        /// 0-based character offset of the `$`.
        offset: usize,
        /// The variable whose default it is.
        name: String,
    },
    /// A variable with no value and no default.
    #[error("variable `{name}` is not set and has no default")]
    Unset {
        /// The variable.
        name: String,
    },
}

/// Checks the syntax of every `${...}` without expanding anything; returns
/// the variable names used, with whether each has a default.
pub fn variables(text: &str) -> Result<Vec<(String, bool)>, InterpolationError> {
    let mut used = Vec::new();
    expand_with(text, |name, default| {
        used.push((name.to_owned(), default.is_some()));
        Some(String::new())
    })?;
    Ok(used)
}

/// Whether `name` can be a variable (and environment variable) name:
/// letters, digits and `_`, not starting with a digit.
pub fn is_variable_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands `${NAME}` and `${NAME:-default}` with `lookup`; `$${` stays a
/// literal `${`. A variable that `lookup` does not know and that has no
/// default is an error, so a typo never becomes an empty string.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolationError> {
    expand_with(text, |name, default| {
        lookup(name).or_else(|| default.map(str::to_owned))
    })
}

fn expand_with(
    text: &str,
    mut resolve: impl FnMut(&str, Option<&str>) -> Option<String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && chars.get(i + 1) == Some(&'$') && chars.get(i + 2) == Some(&'{') {
            out.push_str("${");
            i += 3;
            continue;
        }
        if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
            let Some(close) = chars[i + 2..].iter().position(|c| *c == '}') else {
                return Err(InterpolationError::Unclosed { offset: i });
            };
            let inner: String = chars[i + 2..i + 2 + close].iter().collect();
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner.as_str(), None),
            };
            if !is_variable_name(name) {
                return Err(InterpolationError::BadName {
                    offset: i,
                    name: name.to_owned(),
                });
            }
            if default.is_some_and(|d| d.contains("${")) {
                return Err(InterpolationError::NestedDefault {
                    offset: i,
                    name: name.to_owned(),
                });
            }
            match resolve(name, default) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(InterpolationError::Unset {
                        name: name.to_owned(),
                    });
                }
            }
            i += close + 3;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "VERSION" => Some("v2".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands() {
        assert_eq!(
            interpolate("shop/web:${VERSION}", vars).unwrap(),
            "shop/web:v2"
        );
        assert_eq!(interpolate("${LEVEL:-info}", vars).unwrap(), "info");
        assert_eq!(interpolate("${EMPTY:-x}", vars).unwrap(), "");
        assert_eq!(
            interpolate("$${VERSION} $VERSION", vars).unwrap(),
            "${VERSION} $VERSION"
        );
        assert_eq!(interpolate("${A:-a:-b}", vars).unwrap(), "a:-b");
    }

    #[test]
    fn errors() {
        assert_eq!(
            interpolate("${NOPE}", vars).unwrap_err().to_string(),
            "variable `NOPE` is not set and has no default"
        );
        assert_eq!(
            interpolate("x ${VERSION", vars).unwrap_err().to_string(),
            "`${` at character 2 is never closed"
        );
        assert_eq!(
            interpolate("${1X}", vars).unwrap_err().to_string(),
            "`1X` at character 0 is not a variable name"
        );
        assert_eq!(
            interpolate("${}", vars).unwrap_err().to_string(),
            "`` at character 0 is not a variable name"
        );
        // A default is plain text: a variable in it is refused, not
        // expanded to the text `${B}`.
        assert_eq!(
            interpolate("x ${A:-${VERSION}}", vars)
                .unwrap_err()
                .to_string(),
            "`${A:-...}` at character 2 has `${` in its default: a default is plain text, not another variable"
        );
        assert!(variables("${A:-${B:-x}}").is_err());
        assert_eq!(
            variables("${A} ${B:-1}").unwrap(),
            [("A".to_owned(), false), ("B".to_owned(), true)]
        );
    }

    proptest! {
        #[test]
        fn text_without_dollar_is_unchanged(s in "[^$]{0,40}") {
            prop_assert_eq!(interpolate(&s, vars).unwrap(), s);
        }

        #[test]
        fn escaped_text_round_trips(s in "\\PC{0,30}") {
            // Escaping every `${` as `$${` gives back the text untouched:
            // escaped text has no variable left to fail on.
            let escaped = s.replace("${", "$${");
            prop_assert_eq!(interpolate(&escaped, vars), Ok(s));
        }

        #[test]
        fn defaults_apply_only_when_unset(name in "[A-Z_][A-Z0-9_]{0,8}", default in "[a-z0-9.]{0,10}") {
            let text = format!("${{{name}:-{default}}}");
            let expected = vars(&name).unwrap_or(default.clone());
            prop_assert_eq!(interpolate(&text, vars).unwrap(), expected);
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = interpolate(&s, vars);
        }
    }
}
