//! Time as data: a [`Timestamp`] is milliseconds since the Unix epoch, handed
//! in by the caller (packet time, log line time, or the daemon's clock).
//! Nothing here reads a clock.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// From a civil UTC date and time (proleptic Gregorian).
    pub fn from_civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> Option<Self> {
        if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 {
            return None;
        }
        // Leap seconds (:60) are folded into the next second.
        if s > 60 || ms > 999 {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
        let ms = secs.checked_mul(1000)?.checked_add(i64::from(ms))?;
        u64::try_from(ms).ok().map(Self)
    }

    /// (year, month, day, hour, minute, second, millisecond) in UTC.
    pub fn to_civil(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let days = i64::try_from(secs / 86_400).expect("u64 seconds / 86400 fits i64");
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let narrow = |v: u64| u32::try_from(v).expect("below 86400");
        (
            y,
            m,
            d,
            narrow(rem / 3600),
            narrow(rem % 3600 / 60),
            narrow(rem % 60),
            narrow(ms),
        )
    }
}

/// RFC 3339 in UTC with milliseconds: `2026-11-23T10:22:29.123Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s, ms) = self.to_civil();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

/// Whether `y` is a leap year.
pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` (1-12) of year `y`.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let narrow = |v: i64| u32::try_from(v).expect("day and month are small");
    (y, narrow(m), narrow(d))
}

/// Parses a duration: an integer followed by `ms`, `s`, `m`, `h`, `d` or `w`
/// (`"500ms"`, `"60s"`, `"1h"`, `"7d"`); several may be joined (`"1h30m"`).
/// Returns milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration `{s}`: expected e.g. \"60s\", \"5m\", \"1h\", \"1d\"");
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Renders milliseconds in the largest unit that divides them (`3600000` → `1h`).
pub fn format_duration(ms: u64) -> String {
    for (unit, name) in [
        (7 * 86_400_000, "w"),
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ] {
        if ms >= unit && ms.is_multiple_of(unit) {
            // Weeks only when it reads better than days (7d, not 1w).
            if name == "w" {
                continue;
            }
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        let t = Timestamp::from_civil(2026, 11, 23, 10, 22, 29, 123).unwrap();
        assert_eq!(t.to_string(), "2026-11-23T10:22:29.123Z");
        assert_eq!(t.0, 1_795_429_349_123);
        assert_eq!(
            Timestamp::from_civil(1970, 1, 1, 0, 0, 0, 0),
            Some(Timestamp(0))
        );
        assert_eq!(Timestamp::from_civil(2024, 2, 30, 0, 0, 0, 0), None);
        assert!(Timestamp::from_civil(2024, 2, 29, 0, 0, 0, 0).is_some());
        assert_eq!(Timestamp::from_civil(1969, 12, 31, 0, 0, 0, 0), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(60_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400_000));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(3_600_000), "1h");
        assert_eq!(format_duration(7 * 86_400_000), "7d");
        assert_eq!(format_duration(90_000), "90s");
        assert_eq!(format_duration(1500), "1500ms");
    }

    proptest::proptest! {
        #[test]
        fn civil_is_a_bijection(ms in 0u64..8_000_000_000_000) {
            let t = Timestamp(ms);
            let (y, mo, d, h, mi, s, milli) = t.to_civil();
            proptest::prop_assert_eq!(Timestamp::from_civil(y, mo, d, h, mi, s, milli), Some(t));
        }
    }
}
