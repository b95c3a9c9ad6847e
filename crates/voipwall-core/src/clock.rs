//! The one wall clock of the driver: the daemon, the CLI, the API and the
//! fleet read the time here (the pure crates never do: they take it as an
//! argument).

use voipwall_detect::Timestamp;

fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Wall-clock milliseconds, as the engine and the store count time.
pub fn now() -> Timestamp {
    Timestamp(now_ms())
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock microseconds since the epoch (ban latencies, fleet
/// propagation).
pub fn now_us() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX)
}

/// Unix seconds now (what the compiler's expiry and the names' ages use).
pub fn unix_secs() -> i64 {
    i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX)
}

/// Nanoseconds of the current second: the random source's last resort.
pub(crate) fn subsec_nanos() -> u32 {
    since_epoch().subsec_nanos()
}
