//! `Millis`: a point in time as milliseconds since the Unix epoch.
//!
//! The pure layer never reads a clock; the shell reads it once and passes a
//! `Millis` in. Tests advance a `Millis` by hand.

use std::fmt;
use std::time::Duration;

/// Milliseconds since 1970-01-01T00:00:00Z. Supplied by the caller, never read here.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// This instant plus a duration, saturating instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Millis {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(add))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Renders the instant as RFC 3339 in UTC with millisecond precision,
    /// e.g. `2026-11-23T12:15:13.000Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0 / 1000;
        let ms = self.0 % 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

impl Millis {
    /// Reads back what [`Millis::to_rfc3339`] writes (`2026-11-23T12:15:13.000Z`;
    /// the fraction may be absent or of 1 to 3 digits). None for anything
    /// else, a time before 1970 included.
    pub fn parse_rfc3339(s: &str) -> Option<Millis> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<u64> {
            let part = s.get(r)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        let rest = s.get(19..)?;
        let ms = match rest.strip_suffix('Z')? {
            "" => 0,
            f => {
                let digits = f.strip_prefix('.')?;
                if digits.is_empty() || digits.len() > 3 {
                    return None;
                }
                num(20..20 + digits.len())? * 10u64.pow(3 - u32::try_from(digits.len()).ok()?)
            }
        };
        let days = days_from_civil(y, m, d)?;
        Some(Millis(
            ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms,
        ))
    }
}

/// Days since 1970-01-01 of a date on or after it (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (non-negative).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_reads_back_what_it_writes() {
        for ms in [
            0,
            951_782_400_123,
            1_795_436_113_000,
            1_795_436_113_999,
            4_102_444_800_001,
        ] {
            assert_eq!(
                Millis::parse_rfc3339(&Millis(ms).to_rfc3339()),
                Some(Millis(ms)),
                "{ms}"
            );
        }
        assert_eq!(
            Millis::parse_rfc3339("2026-11-23T12:15:13Z"),
            Some(Millis(1_795_436_113_000))
        );
        assert_eq!(
            Millis::parse_rfc3339("2026-11-23T12:15:13.5Z"),
            Some(Millis(1_795_436_113_500))
        );
        for bad in [
            "",
            "2026-11-23 12:15:13.000Z",
            "2026-11-23T12:15:13.000",
            "2026-13-23T12:15:13.000Z",
            "2026-11-23T12:15:13.0000Z",
            "2026-11-23T12:15:13.Z",
            "1969-12-31T23:59:59.000Z",
            "+026-11-23T12:15:13.000Z",
            "2026-11-23T12:15:13.000Z ",
        ] {
            assert_eq!(Millis::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(Millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Millis(951_782_400_123).to_rfc3339(),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            Millis(1_795_436_113_000).to_rfc3339(),
            "2026-11-23T12:15:13.000Z"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(5).since(Millis(10)), Duration::ZERO);
        assert_eq!(
            Millis(u64::MAX).saturating_add(Duration::from_secs(1)),
            Millis(u64::MAX)
        );
        assert_eq!(
            Millis(1000).saturating_add(Duration::from_millis(500)),
            Millis(1500)
        );
    }
}
