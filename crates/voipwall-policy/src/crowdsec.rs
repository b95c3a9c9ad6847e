//! CrowdSec's Local API, the pure part (issue 22): the decisions stream's
//! answers (`GET /v1/decisions/stream`) read into decisions voipwall can
//! place, Go's duration strings, and which origin set a decision goes to.
//! What must never be applied is refused with the same [`Guard`] as a
//! feed's entries, one decision at a time (one bad decision does not void
//! the others: each is an operator's or a scenario's act of its own).

use ipnet::IpNet;
use serde::Deserialize;

use crate::feed::Guard;

/// One decision as the stream carries it.
#[derive(Debug, Clone, Deserialize)]
struct RawDecision {
    #[serde(default)]
    id: i64,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    value: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    scenario: String,
}

#[derive(Debug, Deserialize)]
struct RawStream {
    #[serde(default)]
    new: Option<Vec<RawDecision>>,
    #[serde(default)]
    deleted: Option<Vec<RawDecision>>,
}

/// A decision voipwall can place: a ban of an address or network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// LAPI's id.
    pub id: i64,
    /// Which origin set it goes to (one of `CROWDSEC_ORIGINS`).
    pub origin: &'static str,
    /// What it bans.
    pub net: IpNet,
    /// Time left, ms.
    pub left_ms: u64,
    /// The scenario that made it (`crowdsecurity/ssh-bf`, `voipwall/...`).
    pub scenario: String,
}

/// A decision left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// LAPI's id.
    pub id: i64,
    /// Its value as LAPI wrote it (cut to 80 characters).
    pub value: String,
    /// Why.
    pub reason: String,
    /// It would have banned something protected (counted and reported).
    pub protected: bool,
}

/// One answer of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// Decisions to apply.
    pub new: Vec<Decision>,
    /// Decisions to lift (ids; the value is not needed).
    pub deleted: Vec<i64>,
    /// Decisions of `new` not applied.
    pub skipped: Vec<Skipped>,
}

/// The origin set a LAPI origin goes to.
pub fn origin_set(origin: &str) -> &'static str {
    match origin.to_ascii_lowercase().as_str() {
        "crowdsec" => "crowdsec",
        "cscli" => "cscli",
        "capi" => "capi",
        "lists" => "lists",
        _ => "other",
    }
}

/// A Go duration (`time.Duration.String()`: `1h2m3.5s`, `9m59.1s`,
/// `150ms`, `-3s`) in ms; negative ones are 0 (already over).
pub fn go_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    // In nanoseconds, exactly (Go prints up to nine decimals).
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..n];
        rest = &rest[n..];
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') || int.len() > 20 {
            return None;
        }
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..u] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        rest = &rest[u..];
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac = &frac[..frac.len().min(18)];
        let part: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
        total = total
            .saturating_add(whole.saturating_mul(unit))
            .saturating_add(part.saturating_mul(unit) / scale);
    }
    if neg {
        return Some(0);
    }
    // Up to ten years (the longest timeout voipwall gives the kernel).
    Some(u64::try_from((total / 1_000_000).min(315_360_000_000)).unwrap_or(u64::MAX))
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Reads one answer of `GET /v1/decisions/stream`. A body that is not the
/// stream's JSON is an error and nothing of it is applied.
pub fn parse_stream(body: &str, guard: &Guard) -> Result<Stream, String> {
    let raw: RawStream =
        serde_json::from_str(body).map_err(|e| format!("not a decisions stream: {e}"))?;
    let mut out = Stream::default();
    for d in raw.deleted.unwrap_or_default() {
        out.deleted.push(d.id);
    }
    for d in raw.new.unwrap_or_default() {
        let skip = |reason: String, protected: bool| Skipped {
            id: d.id,
            value: cut(&d.value),
            reason,
            protected,
        };
        if !d.kind.eq_ignore_ascii_case("ban") {
            out.skipped.push(skip(
                format!("type `{}` (voipwall enforces bans)", cut(&d.kind)),
                false,
            ));
            continue;
        }
        let net = match d.scope.to_ascii_lowercase().as_str() {
            "ip" => d.value.parse::<std::net::IpAddr>().map(IpNet::from).ok(),
            "range" => d.value.parse::<IpNet>().map(|n| n.trunc()).ok(),
            _ => {
                out.skipped.push(skip(
                    format!("scope `{}` (voipwall enforces Ip and Range)", cut(&d.scope)),
                    false,
                ));
                continue;
            }
        };
        let Some(net) = net else {
            out.skipped.push(skip(
                format!("`{}` is not an address or range", cut(&d.value)),
                false,
            ));
            continue;
        };
        if let Some(reason) = guard.refuse(&net) {
            out.skipped.push(skip(reason, true));
            continue;
        }
        let Some(left_ms) = go_duration_ms(&d.duration) else {
            out.skipped.push(skip(
                format!("`{}` is not a duration", cut(&d.duration)),
                false,
            ));
            continue;
        };
        out.new.push(Decision {
            id: d.id,
            origin: origin_set(&d.origin),
            net,
            left_ms,
            scenario: cut(&d.scenario),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_ms("9m59.1s"), Some(599_100));
        assert_eq!(go_duration_ms("3h59m58.123456789s"), Some(14_398_123));
        assert_eq!(go_duration_ms("150ms"), Some(150));
        assert_eq!(go_duration_ms("-1.5s"), Some(0));
        assert_eq!(go_duration_ms("0"), Some(0));
        assert_eq!(go_duration_ms("1µs"), Some(0));
        for bad in ["", "h", "5", "5x", "1.2.3s", "s5"] {
            assert_eq!(go_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_stream_places_bans_and_skips_the_rest_with_reasons() {
        let guard = Guard {
            own: vec!["203.0.113.1".parse().unwrap()],
            protected: vec!["198.51.100.0/24".parse().unwrap()],
        };
        // The shape LAPI answers (LAB-TIPS.md), plus what must be skipped.
        let body = r#"{"deleted":[{"id":3,"value":"192.0.2.9"}],"new":[
          {"duration":"9m59.1s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'x'","scope":"Ip","type":"ban","value":"203.0.113.77"},
          {"duration":"4h","id":2,"origin":"CAPI","scenario":"crowdsecurity/sip-bf","scope":"Range","type":"ban","value":"2001:db8:77::1/48"},
          {"duration":"1h","id":4,"origin":"crowdsec","scope":"Ip","type":"captcha","value":"203.0.113.78"},
          {"duration":"1h","id":5,"origin":"crowdsec","scope":"Country","type":"ban","value":"ZZ"},
          {"duration":"1h","id":6,"origin":"lists","scope":"Ip","type":"ban","value":"198.51.100.7"},
          {"duration":"1h","id":7,"origin":"lists","scope":"Range","type":"ban","value":"0.0.0.0/0"},
          {"duration":"1h","id":8,"origin":"console","scope":"Ip","type":"ban","value":"not-an-ip"},
          {"duration":"soon","id":9,"origin":"console","scope":"Ip","type":"ban","value":"203.0.113.79"}
        ]}"#;
        let s = parse_stream(body, &guard).unwrap();
        assert_eq!(s.deleted, [3]);
        let placed: Vec<(i64, &str, String, u64)> = s
            .new
            .iter()
            .map(|d| (d.id, d.origin, d.net.to_string(), d.left_ms))
            .collect();
        assert_eq!(
            placed,
            [
                (1, "cscli", "203.0.113.77/32".into(), 599_100),
                (2, "capi", "2001:db8:77::/48".into(), 14_400_000),
            ]
        );
        let skipped: Vec<(i64, bool)> = s.skipped.iter().map(|k| (k.id, k.protected)).collect();
        assert_eq!(
            skipped,
            [
                (4, false),
                (5, false),
                (6, true),
                (7, true),
                (8, false),
                (9, false)
            ]
        );
        assert!(s.skipped[2].reason.contains("198.51.100.0/24"));
        // LAPI answers `null` for empty lists.
        assert_eq!(
            parse_stream(r#"{"new":null,"deleted":null}"#, &guard),
            Ok(Stream::default())
        );
        assert!(parse_stream("<html>", &guard).is_err());
    }

    proptest! {
        #[test]
        fn any_body_parses_without_panic_and_places_nothing_protected(body in ".{0,300}") {
            let guard = Guard {
                own: vec!["203.0.113.1".parse().unwrap()],
                protected: vec!["198.51.100.0/24".parse().unwrap()],
            };
            if let Ok(s) = parse_stream(&body, &guard) {
                for d in &s.new {
                    prop_assert!(guard.refuse(&d.net).is_none());
                }
            }
            let _ = go_duration_ms(&body);
        }

        #[test]
        fn go_durations_of_seconds_round_trip(ms in 0u64..10_000_000_000) {
            let s = format!("{}.{:03}s", ms / 1000, ms % 1000);
            prop_assert_eq!(go_duration_ms(&s), Some(ms));
        }
    }
}
