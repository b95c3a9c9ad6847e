//! Times and durations for people: local time with UTC beside it, and
//! "1h 2m" rather than "3725s".

/// The two largest units of a duration: `1h 2m`, `3d 4h`, `45s`.
pub fn remaining(secs: u64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let i = units.iter().position(|(_, n)| secs >= *n).unwrap_or(3);
    let (u, n) = units[i];
    let mut s = format!("{}{u}", secs / n);
    if let Some((u2, n2)) = units.get(i + 1) {
        let next = secs % n / n2;
        if next > 0 {
            s.push_str(&format!(" {next}{u2}"));
        }
    }
    s
}

/// `2026-11-27 07:12:05 CET (06:12:05Z)`: the host's local time (the
/// system zone, `TZ` honoured) and UTC. Milliseconds since the epoch.
pub fn local_and_utc(ms: u64) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX)) else {
        return voipwall_detect::Timestamp(ms).to_string();
    };
    let local = ts.to_zoned(jiff::tz::TimeZone::system());
    let utc = ts.to_zoned(jiff::tz::TimeZone::UTC);
    if local.offset() == utc.offset() {
        format!("{} UTC", utc.strftime("%Y-%m-%d %H:%M:%S"))
    } else {
        format!(
            "{} ({}Z)",
            local.strftime("%Y-%m-%d %H:%M:%S %Z"),
            utc.strftime("%H:%M:%S")
        )
    }
}

/// When a ban ends, for the `bans` listings: `permanent`, or
/// `in 1h 2m, 2026-11-27 07:12:05 CET (06:12:05Z)`.
pub fn until(end_ms: u64, now_ms: u64) -> String {
    if end_ms >= voipwall_store::BanRecord::PERMANENT.0 {
        return "permanent".into();
    }
    format!(
        "in {}, {}",
        remaining(end_ms.saturating_sub(now_ms) / 1000),
        local_and_utc(end_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_units_at_most() {
        assert_eq!(remaining(0), "0s");
        assert_eq!(remaining(45), "45s");
        assert_eq!(remaining(3_600), "1h");
        assert_eq!(remaining(3_725), "1h 2m");
        assert_eq!(remaining(90_061), "1d 1h");
        assert_eq!(remaining(86_405), "1d");
    }

    #[test]
    fn permanent_and_utc() {
        assert_eq!(
            until(voipwall_store::BanRecord::PERMANENT.0, 0),
            "permanent"
        );
        // The zone of the test host is not known; UTC always appears.
        let s = until(1_800_000_000_000 + 3_725_000, 1_800_000_000_000);
        assert!(s.starts_with("in 1h 2m, 2027-01-15 "), "{s}");
        assert!(s.contains("09:02:05"), "{s}");
    }
}
