//! Durations as people write them in `hatoba.yaml` and on the command line:
//! `500ms`, `30s`, `5m`, `1h30m`, `2d`.

use std::time::Duration;

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to read.
    #[error("empty duration")]
    Empty,
    /// A number with no unit, such as `30`.
    #[error("`{input}` has no unit")]
    MissingUnit {
        /// The text as written.
        input: String,
    },
    /// A unit that is not one of ms, s, m, h, d.
    #[error("`{unit}` in `{input}` is not a unit")]
    UnknownUnit {
        /// The text as written.
        input: String,
        /// The offending unit.
        unit: String,
    },
    /// A unit with no number before it, or a stray character.
    #[error("`{input}` is not a duration")]
    Malformed {
        /// The text as written.
        input: String,
    },
    /// More than a duration can hold.
    #[error("`{input}` is too long a duration")]
    Overflow {
        /// The text as written.
        input: String,
    },
}

impl DurationError {
    /// What a person should write instead.
    pub fn hint(&self) -> &'static str {
        "write a number followed by a unit (ms, s, m, h, d), e.g. `500ms`, `30s`, `5m`, `1h30m`"
    }
}

/// Reads a duration such as `500ms`, `30s`, `5m`, `1h30m` or `1d12h`.
///
/// Parts are a whole number followed by a unit (`ms`, `s`, `m`, `h`, `d`);
/// several parts add up. A bare number is rejected: `30` could mean seconds
/// or milliseconds, and guessing wrong is worse than asking.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed {
        input: input.to_owned(),
    };
    let overflow = || DurationError::Overflow {
        input: input.to_owned(),
    };
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(malformed());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            if rest.is_empty() {
                return Err(DurationError::MissingUnit {
                    input: input.to_owned(),
                });
            }
            return Err(malformed());
        }
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        let part = number.checked_mul(factor).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration the way `parse_duration` reads it, largest units first:
/// `1h30m`, `500ms`, `0s`. Sub-millisecond parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, factor) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let n = ms / factor;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            ms %= factor;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn reads_what_people_write() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration(" 2m "), Ok(ms(120_000)));
        assert_eq!(parse_duration("0s"), Ok(ms(0)));
    }

    #[test]
    fn rejects_with_reason() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("30").unwrap_err().to_string(),
            "`30` has no unit"
        );
        assert_eq!(
            parse_duration("5min").unwrap_err().to_string(),
            "`min` in `5min` is not a unit"
        );
        assert_eq!(
            parse_duration("m").unwrap_err().to_string(),
            "`m` is not a duration"
        );
        assert_eq!(
            parse_duration("1.5s").unwrap_err().to_string(),
            "`1.5s` is not a duration"
        );
        assert_eq!(
            parse_duration("-5s").unwrap_err().to_string(),
            "`-5s` is not a duration"
        );
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("999999999999999d"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_duration(ms(5_400_000)), "1h30m");
        assert_eq!(format_duration(ms(500)), "500ms");
        assert_eq!(format_duration(ms(0)), "0s");
        assert_eq!(format_duration(ms(90_061_001)), "1d1h1m1s1ms");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(n in 0u64..(1u64 << 50)) {
            prop_assert_eq!(parse_duration(&format_duration(ms(n))), Ok(ms(n)));
        }

        #[test]
        fn parts_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, x in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{x}ms");
            prop_assert_eq!(parse_duration(&text), Ok(ms(h * 3_600_000 + m * 60_000 + s * 1000 + x)));
        }

        #[test]
        fn never_panics(text in "\\PC{0,20}") {
            let _ = parse_duration(&text);
        }
    }
}
