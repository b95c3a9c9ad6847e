//! `/metrics`: the daemon's status, the generation in force and the
//! table's named counters, as OpenMetrics text (prometheus-client). Labels
//! are rules, origins, reasons, zones, families: never an address.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use voipwall_core::daemon::control::{Answer, StatusReply};

/// Labels of a ban count.
type RuleOrigin = Vec<(&'static str, String)>;

/// The ban-latency histogram as the daemon counted it (buckets in µs).
#[derive(Debug)]
struct Buckets {
    /// `(upper bound in seconds, count in that bucket alone)`.
    buckets: Vec<(f64, u64)>,
    count: u64,
}

impl EncodeMetric for Buckets {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // The daemon keeps counts per bucket, not the sum of latencies: the
        // sum is given as 0 (rates of `_count` and the buckets are right).
        encoder.encode_histogram::<NoLabelSet>(0.0, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(
        name,
        help,
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
    );
}

/// What a named counter of the table counts: `(reason, zone)` of a drop,
/// or `None` for the packet-copy counters.
fn drop_reason(name: &str) -> Option<(&'static str, String)> {
    Some(match name {
        "vw_banned" => ("banned", String::new()),
        "vw_blocked" => ("blocked", String::new()),
        "vw_flood_dropped" => ("flood", String::new()),
        "vw_flood_banned" => ("flood_banned", String::new()),
        "vw_aggregate_dropped" => ("aggregate_guard", String::new()),
        n => ("zone", n.strip_prefix("vw_drop_")?.to_string()),
    })
}

/// The exposition. `status` is the daemon's answer (safe mode holding
/// gives only the safe-mode and build families).
pub(crate) fn exposition(
    status: &Answer,
    generation: Option<(i64, Option<u64>)>,
    kernel: &[(String, u64, u64)],
    drops: &[voipwall_detect::drops::DropTotal],
) -> Result<String, String> {
    let mut r = Registry::with_prefix("voipwall");
    r.register(
        "build",
        "The running voipwall",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    match status {
        Answer::Status(s) => {
            running(&mut r, s, generation, kernel);
            drop_log(&mut r, drops);
        }
        Answer::Holding(h) => {
            gauge(
                &mut r,
                "safe_mode",
                "1 while safe mode holds the policy back",
                1,
            );
            gauge(
                &mut r,
                "safe_mode_apply_in_seconds",
                "Seconds until safe mode applies the policy",
                h.safe_mode.apply_in_s,
            );
        }
        _ => return Err("the daemon's answer was not a status".into()),
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The drop log's samples since start, by zone or set and service (the
/// services are the policy's, `other` for the rest: no port numbers, no
/// addresses).
fn drop_log(r: &mut Registry, drops: &[voipwall_detect::drops::DropTotal]) {
    let samples: Family<Vec<(&'static str, String)>, prometheus_client::metrics::counter::Counter> =
        Family::default();
    for t in drops {
        samples
            .get_or_create(&vec![
                ("kind", t.kind.as_str().to_string()),
                ("name", t.name.clone()),
                ("service", t.service.clone()),
            ])
            .inc_by(t.samples);
    }
    r.register(
        "drop_log_samples",
        "Refused packets the kernel sampled into the drop log ([drops] rate a second per zone and set), by kind (zone, ban, block), zone or set, and service",
        samples,
    );
}

fn running(
    r: &mut Registry,
    s: &StatusReply,
    generation: Option<(i64, Option<u64>)>,
    kernel: &[(String, u64, u64)],
) {
    let c = &s.counters;
    gauge(r, "safe_mode", "1 while safe mode holds the policy back", 0);
    let issued: Family<RuleOrigin, prometheus_client::metrics::counter::Counter> =
        Family::default();
    for (rule, origins) in &c.bans_by {
        for (origin, n) in origins {
            issued
                .get_or_create(&vec![("rule", rule.clone()), ("origin", origin.clone())])
                .inc_by(*n);
        }
    }
    r.register(
        "bans_issued",
        "Bans made since the daemon started, by rule and origin (detect; manual: the CLI and the API; observe: detection in observe mode, never in the kernel)",
        issued,
    );
    counter(
        r,
        "bans",
        "Bans detection made since the daemon started",
        c.bans,
    );
    counter(
        r,
        "alerts",
        "Alerts (would-be bans of protected sources) since start",
        c.alerts,
    );
    gauge(
        r,
        "active_bans",
        "Targets with a ban in force",
        s.active_bans,
    );
    gauge(
        r,
        "generation",
        "The generation (recorded ruleset) in force",
        generation
            .and_then(|(g, _)| u64::try_from(g).ok())
            .unwrap_or(0),
    );
    if let Some(ms) = generation.and_then(|(_, took)| took) {
        r.register_with_unit(
            "apply_duration",
            "How long the apply of the generation in force took (read, validate, compile, load)",
            Unit::Seconds,
            ConstGauge::new(ms as f64 / 1000.0),
        );
    }
    counter(
        r,
        "nflog_packets",
        "SIP packet copies read from NFLOG",
        c.nflog_packets,
    );
    counter(
        r,
        "nflog_overflows",
        "NFLOG receive-buffer overflows (copies lost)",
        c.nflog_enobufs,
    );
    counter(
        r,
        "sip_undecodable",
        "SIP requests that could not be decoded",
        c.sip_undecodable,
    );
    counter(
        r,
        "hep_packets",
        "SIP messages received over HEP",
        c.hep_packets,
    );
    counter(
        r,
        "hep_refused",
        "HEP packets or connections from senders not listed",
        c.hep_refused,
    );
    counter(r, "log_lines", "Log lines read", c.log_lines);
    counter(r, "log_events", "Events found in log lines", c.log_events);
    gauge(
        r,
        "tcp_flows",
        "SIP over TCP: flows tracked now",
        s.tcp.flows as u64,
    );
    gauge(
        r,
        "engine_sources_tracked",
        "Sources the engine tracks now",
        s.engine.tracked_sources,
    );
    counter(
        r,
        "engine_sources_evicted",
        "Sources evicted to bound memory",
        s.engine.evicted_sources,
    );
    gauge(
        r,
        "engine_accounts_tracked",
        "Accounts whose failed authentications the engine counts now",
        s.engine.tracked_accounts,
    );
    counter(
        r,
        "engine_accounts_evicted",
        "Accounts evicted to bound memory",
        s.engine.evicted_accounts,
    );
    counter(
        r,
        "account_shields",
        "Account shields started (distributed guessing)",
        s.engine.shields,
    );
    gauge(
        r,
        "account_shields_active",
        "Accounts shielded now",
        s.engine.shields_active,
    );
    counter(
        r,
        "engine_events",
        "Events the engine handled",
        s.engine.events,
    );
    counter(
        r,
        "kernel_errors",
        "Set operations the kernel refused",
        c.kernel_errors,
    );
    counter(
        r,
        "store_errors",
        "Store writes that failed",
        s.store_errors,
    );
    if let Some(kb) = s.rss_kb {
        r.register_with_unit(
            "resident_memory",
            "Resident memory of the daemon",
            Unit::Bytes,
            ConstGauge::new(i64::try_from(kb.saturating_mul(1024)).unwrap_or(i64::MAX)),
        );
    }
    let mut buckets = Vec::new();
    let mut count = 0;
    for (bound, n) in &s.ban_latency_histogram {
        count += n;
        buckets.push((bound.map_or(f64::MAX, |us| us as f64 / 1e6), *n));
    }
    r.register_with_unit(
        "ban_latency",
        "Evidence arrival to ban live in the kernel",
        Unit::Seconds,
        Buckets { buckets, count },
    );
    let packets: Family<Vec<(&'static str, String)>, prometheus_client::metrics::counter::Counter> =
        Family::default();
    let bytes: Family<Vec<(&'static str, String)>, prometheus_client::metrics::counter::Counter> =
        Family::default();
    for (name, p, b) in kernel {
        if let Some((reason, zone)) = drop_reason(name) {
            let labels = vec![("reason", reason.to_string()), ("zone", zone)];
            packets.get_or_create(&labels).inc_by(*p);
            bytes.get_or_create(&labels).inc_by(*b);
        }
    }
    r.register(
        "kernel_dropped_packets",
        "Packets the table dropped, by reason (banned, blocked, flood, flood_banned, aggregate_guard, zone) and zone",
        packets,
    );
    r.register_with_unit(
        "kernel_dropped",
        "Bytes the table dropped, by reason and zone",
        Unit::Bytes,
        bytes,
    );
}
