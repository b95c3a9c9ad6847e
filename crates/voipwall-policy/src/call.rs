//! The `[call]` section: call rules (toll-fraud limits) checked against the
//! calls voipwall sees on the wire. Validated here with spans like the
//! rest of the policy; the driver resolves trunk names and time zones and
//! hands the engine its rules.

use serde::Serialize;

use crate::diag::SourceMap;
use crate::model::{Provenance, parse_net};
use crate::walk::{Table, Walker, get};

/// The NFQUEUE number inline mode uses unless `[call] queue` says.
pub const DEFAULT_QUEUE: u16 = 5060;

/// Named prefix lists a rule may use in `to` and `deny_to` (`data/call/`).
pub const PREFIX_LISTS: [&str; 2] = ["premium", "high-risk"];

/// Who a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum CallFrom {
    /// Calls from this network.
    Net(ipnet::IpNet),
    /// Calls from a trunk or peer the PBX configuration names.
    Trunk(String),
    /// Calls whose credentials name a user in this range (inclusive, as
    /// numbers when both ends are digits, else the one name).
    User(String, String),
}

/// What a rule does with a call that breaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallAction {
    /// Report it (log, event, notification).
    Alert,
    /// Ban the source that placed it.
    Ban,
    /// Drop its INVITE at the queue (`mode = "inline"`; an INVITE that
    /// came over TCP, TLS or WebSocket is only reported).
    Drop,
}

/// Office hours: days of the week and a daily window in a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hours {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after midnight, inclusive.
    pub start_min: u16,
    /// Minutes after midnight, exclusive.
    pub end_min: u16,
    /// IANA time zone name (checked against the system's database by the
    /// driver).
    pub tz: String,
    /// As written.
    pub text: String,
}

/// How a rule reads dialled numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Numbering {
    /// The country calling code of national numbers (`44`).
    pub country_code: Option<String>,
    /// The prefix of national numbers (`0`).
    pub national_prefix: String,
    /// The prefix of international numbers (`00`; `+` always is one).
    pub international_prefix: String,
}

impl Default for Numbering {
    fn default() -> Self {
        Self {
            country_code: None,
            national_prefix: "0".into(),
            international_prefix: "00".into(),
        }
    }
}

/// One `[[call.rule]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRule {
    /// Name, in alerts and bans (`call:<name>`).
    pub name: String,
    /// Which calls it applies to by origin; empty: all.
    pub from: Vec<CallFrom>,
    /// Which destinations it applies to (normalised prefixes `+44`, or a
    /// list name); empty: all.
    pub to: Vec<String>,
    /// Destinations a call may not reach.
    pub deny_to: Vec<String>,
    /// Calls at once.
    pub max_concurrent: Option<u32>,
    /// New calls per minute.
    pub max_per_minute: Option<u32>,
    /// When calls are allowed.
    pub hours: Option<Hours>,
    /// What happens to a call that breaks it.
    pub action: CallAction,
    /// Ban length for `action = "ban"`, seconds.
    pub ban: u64,
    /// How numbers are read.
    pub numbering: Numbering,
    /// Where it was written.
    pub origin: Provenance,
}

/// The `[call]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallSettings {
    /// `mode = "inline"`: new INVITEs over UDP to SIP ports wait for the
    /// daemon's verdict at an NFQUEUE (bypassed when no daemon listens).
    pub inline: bool,
    /// The queue number of inline mode.
    pub queue: u16,
    /// Longest a call is counted (a BYE that was never seen).
    pub max_duration: u64,
    /// The rules, in order.
    pub rules: Vec<CallRule>,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self {
            inline: false,
            queue: DEFAULT_QUEUE,
            max_duration: 4 * 3600,
            rules: Vec::new(),
        }
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `Mon-Fri 08:00-18:00 Europe/London` (days: one, a range, or a
/// comma list; the window may not wrap midnight).
pub fn parse_hours(s: &str) -> Result<Hours, String> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [days, window, tz] = parts[..] else {
        return Err(format!(
            "`{s}`: expected days, a time window and a time zone, e.g. `Mon-Fri 08:00-18:00 Europe/London`"
        ));
    };
    let day = |d: &str| {
        DAYS.iter()
            .position(|x| x.eq_ignore_ascii_case(d))
            .ok_or_else(|| format!("`{d}` is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
    };
    let mut set = [false; 7];
    for piece in days.split(',') {
        match piece.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return Err(format!("`{piece}` runs backwards: write it Monday first"));
                }
                for d in set.iter_mut().take(b + 1).skip(a) {
                    *d = true;
                }
            }
            None => set[day(piece)?] = true,
        }
    }
    let time = |t: &str| -> Result<u16, String> {
        let (h, m) = t
            .split_once(':')
            .ok_or_else(|| format!("`{t}` is not a time (HH:MM)"))?;
        let (h, m): (u16, u16) = (
            h.parse()
                .map_err(|_| format!("`{t}` is not a time (HH:MM)"))?,
            m.parse()
                .map_err(|_| format!("`{t}` is not a time (HH:MM)"))?,
        );
        if h > 24 || m > 59 || (h == 24 && m > 0) {
            return Err(format!("`{t}` is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let (a, b) = window
        .split_once('-')
        .ok_or_else(|| format!("`{window}` is not a window (HH:MM-HH:MM)"))?;
    let (start_min, end_min) = (time(a)?, time(b)?);
    if start_min >= end_min {
        return Err(format!(
            "`{window}` is empty or wraps midnight: write two rules' hours instead"
        ));
    }
    if !tz.contains('/') && tz != "UTC" {
        return Err(format!(
            "`{tz}` is not a time zone name (e.g. `Europe/London`, `UTC`)"
        ));
    }
    Ok(Hours {
        days: set,
        start_min,
        end_min,
        tz: tz.to_string(),
        text: s.to_string(),
    })
}

/// A destination prefix as written: `+44`, `0044` → `+44`; a list name.
fn prefix(s: &str) -> Result<String, String> {
    if PREFIX_LISTS.contains(&s) {
        return Ok(s.to_string());
    }
    let digits = s
        .strip_prefix('+')
        .or_else(|| s.strip_prefix("00"))
        .ok_or_else(|| {
            format!(
                "`{s}`: a destination is an international prefix (`+44`, `0044`) or {}",
                PREFIX_LISTS.join(" or ")
            )
        })?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a number prefix"));
    }
    Ok(format!("+{digits}"))
}

fn from_entry(s: &str) -> Result<CallFrom, String> {
    if let Some(t) = s.strip_prefix("trunk:") {
        if t.is_empty() {
            return Err("`trunk:` needs a name".into());
        }
        return Ok(CallFrom::Trunk(t.to_string()));
    }
    if let Some(u) = s.strip_prefix("user:") {
        let (a, b) = u.split_once('-').unwrap_or((u, u));
        if a.is_empty() || b.is_empty() {
            return Err(format!("`{s}`: expected `user:NAME` or `user:FIRST-LAST`"));
        }
        let numeric =
            a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit());
        if a != b && !numeric {
            return Err(format!(
                "`{s}`: a range of users is numbers (`user:1000-1099`)"
            ));
        }
        if numeric && a.len() < 20 && b.len() < 20 && a.parse::<u64>().ok() > b.parse::<u64>().ok()
        {
            return Err(format!("`{s}` runs backwards"));
        }
        return Ok(CallFrom::User(a.to_string(), b.to_string()));
    }
    parse_net(s)
        .map(CallFrom::Net)
        .map_err(|e| format!("`{s}`: {e} (or `trunk:NAME`, `user:1000-1099`)"))
}

/// Reads `[call]`.
pub(crate) fn walk(w: &mut Walker<'_>, t: &Table<'_>, sources: &SourceMap, out: &mut CallSettings) {
    w.check_keys(t, &["mode", "queue", "max_duration", "rule"], "[call]");
    if let Some(v) = get(t, "mode") {
        match w.str(v, "mode") {
            Some("passive") | None => {}
            Some("inline") => out.inline = true,
            Some(other) => w.error(
                v.span(),
                format!("unknown mode `{other}`: expected \"passive\" or \"inline\""),
                "unknown mode",
            ),
        }
    }
    if let Some(v) = get(t, "queue")
        && let Some(n) = w.int(v, "queue", 0, 65_535)
    {
        out.queue = u16::try_from(n).expect("range checked");
    }
    if let Some(v) = get(t, "max_duration")
        && let Some(n) = crate::load::duration(w, v, "max_duration")
    {
        out.max_duration = n;
    }
    let Some(rv) = get(t, "rule") else { return };
    let mut names: Vec<String> = Vec::new();
    for item in w.array(rv, "rule") {
        let Some(rt) = w.table(item, "[[call.rule]]") else {
            continue;
        };
        w.check_keys(
            rt,
            &[
                "name",
                "from",
                "to",
                "deny_to",
                "max_concurrent",
                "max_per_minute",
                "hours",
                "action",
                "ban",
                "country_code",
                "national_prefix",
                "international_prefix",
            ],
            "[[call.rule]]",
        );
        let origin = Provenance {
            file: sources.name(w.file).to_string(),
            line: sources.line_col(w.file, item.span().start).0,
        };
        let name = match get(rt, "name")
            .and_then(|v| w.str(v, "name").map(|s| (s.to_string(), v.span())))
        {
            Some((n, span)) => {
                if n.is_empty()
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    w.error(
                        span,
                        format!("rule name `{n}`: letters, digits, `-` and `_`"),
                        "bad name",
                    );
                    continue;
                }
                if names.contains(&n) {
                    w.error(span, format!("rule `{n}` is defined twice"), "duplicate");
                    continue;
                }
                names.push(n.clone());
                n
            }
            None => {
                w.error(item.span(), "a [[call.rule]] needs a `name`", "no name");
                continue;
            }
        };
        let mut ok = true;
        let mut from = Vec::new();
        if let Some(v) = get(rt, "from") {
            for (s, span) in w.str_list(v, "from") {
                match from_entry(&s) {
                    Ok(f) => from.push(f),
                    Err(e) => {
                        w.error(span, e, "not a network, trunk or user");
                        ok = false;
                    }
                }
            }
        }
        let mut prefixes = |w: &mut Walker<'_>, key: &str| -> Vec<String> {
            let mut list = Vec::new();
            if let Some(v) = get(rt, key) {
                for (s, span) in w.str_list(v, key) {
                    match prefix(&s) {
                        Ok(p) => list.push(p),
                        Err(e) => {
                            w.error(span, e, "not a destination");
                            ok = false;
                        }
                    }
                }
            }
            list
        };
        let to = prefixes(w, "to");
        let deny_to = prefixes(w, "deny_to");
        let count = |w: &mut Walker<'_>, key: &str| {
            get(rt, key)
                .and_then(|v| w.int(v, key, 1, 100_000))
                .map(|n| u32::try_from(n).expect("range checked"))
        };
        let max_concurrent = count(w, "max_concurrent");
        let max_per_minute = count(w, "max_per_minute");
        let hours = get(rt, "hours").and_then(|v| {
            let s = w.str(v, "hours")?;
            match parse_hours(s) {
                Ok(h) => Some(h),
                Err(e) => {
                    w.error(v.span(), e, "not office hours");
                    ok = false;
                    None
                }
            }
        });
        let action = match get(rt, "action").map(|v| (w.str(v, "action"), v.span())) {
            None | Some((Some("alert"), _)) => CallAction::Alert,
            Some((Some("ban"), _)) => CallAction::Ban,
            Some((Some("drop"), span)) => {
                if !out.inline {
                    w.error(
                        span,
                        "`drop` needs `mode = \"inline\"` in [call] (passive mode sees calls, it cannot stop them): use \"alert\" or \"ban\", or set the mode",
                        "needs inline mode",
                    );
                    ok = false;
                }
                CallAction::Drop
            }
            Some((Some(other), span)) => {
                w.error(
                    span,
                    format!("unknown action `{other}`: expected \"alert\", \"ban\" or \"drop\""),
                    "unknown action",
                );
                ok = false;
                CallAction::Alert
            }
            Some((None, _)) => {
                ok = false;
                CallAction::Alert
            }
        };
        let ban = get(rt, "ban")
            .and_then(|v| crate::load::duration(w, v, "ban"))
            .unwrap_or(3600);
        let mut numbering = Numbering::default();
        if let Some(v) = get(rt, "country_code")
            && let Some(s) = w.str(v, "country_code")
        {
            let cc = s.trim_start_matches('+');
            if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) {
                w.error(
                    v.span(),
                    format!("`{s}` is not a country calling code (1 to 3 digits)"),
                    "not a calling code",
                );
                ok = false;
            } else {
                numbering.country_code = Some(cc.to_string());
            }
        }
        for (key, slot) in [
            ("national_prefix", &mut numbering.national_prefix),
            ("international_prefix", &mut numbering.international_prefix),
        ] {
            if let Some(v) = get(rt, key)
                && let Some(s) = w.str(v, key)
            {
                if s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    w.error(
                        v.span(),
                        format!("`{s}` is not a dialling prefix"),
                        "digits only",
                    );
                    ok = false;
                } else {
                    *slot = s.to_string();
                }
            }
        }
        if deny_to.is_empty()
            && max_concurrent.is_none()
            && max_per_minute.is_none()
            && hours.is_none()
        {
            w.error(
                item.span(),
                format!("rule `{name}` limits nothing: give it deny_to, max_concurrent, max_per_minute or hours"),
                "limits nothing",
            );
            ok = false;
        }
        if ok {
            out.rules.push(CallRule {
                name,
                from,
                to,
                deny_to,
                max_concurrent,
                max_per_minute,
                hours,
                action,
                ban,
                numbering,
                origin,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_parse_and_refuse() {
        let h = parse_hours("Mon-Fri 08:00-18:00 Europe/London").unwrap();
        assert_eq!(h.days, [true, true, true, true, true, false, false]);
        assert_eq!((h.start_min, h.end_min), (480, 1080));
        let h = parse_hours("Sat,Sun 10:00-12:30 UTC").unwrap();
        assert_eq!(h.days, [false, false, false, false, false, true, true]);
        for bad in [
            "Mon-Fri 08:00-18:00",
            "Fri-Mon 08:00-18:00 UTC",
            "Mon 18:00-08:00 UTC",
            "Mon 25:00-26:00 UTC",
            "Monday 08:00-18:00 UTC",
            "Mon 08:00-18:00 London",
        ] {
            assert!(parse_hours(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destinations_and_origins() {
        assert_eq!(prefix("+44").unwrap(), "+44");
        assert_eq!(prefix("00882").unwrap(), "+882");
        assert_eq!(prefix("premium").unwrap(), "premium");
        assert!(prefix("44").is_err());
        assert!(prefix("+4a").is_err());
        assert_eq!(
            from_entry("user:1000-1099").unwrap(),
            CallFrom::User("1000".into(), "1099".into())
        );
        assert_eq!(
            from_entry("trunk:carrier").unwrap(),
            CallFrom::Trunk("carrier".into())
        );
        assert!(from_entry("user:1099-1000").is_err());
        assert!(from_entry("user:alice-bob").is_err());
        assert!(matches!(
            from_entry("203.0.113.20/32").unwrap(),
            CallFrom::Net(_)
        ));
        assert!(from_entry("nowhere").is_err());
    }
}
