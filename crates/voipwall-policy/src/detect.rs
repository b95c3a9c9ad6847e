//! The `[detect]` section: detection settings and per-rule overrides of the
//! built-in rules (`data/rules`), user-defined log formats, never-ban
//! networks. Validated here with spans like the rest of the policy; the
//! driver turns it into the engine's configuration.

use std::collections::BTreeMap;
use std::ops::Range;

use ipnet::IpNet;
use serde::Serialize;

use crate::diag::{Diagnostic, FileId, SourceMap};
use crate::model::{Provenance, parse_net};
use crate::walk::{Table, Value, Walker, get};

/// What detection does with its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DetectMode {
    /// Ban.
    #[default]
    Enforce,
    /// Detect and report; ban nothing.
    Observe,
}

/// One "count within window → ban" step, durations in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ThresholdSetting {
    /// Events that trigger.
    pub count: u32,
    /// Window, seconds.
    pub within: u64,
    /// Ban, seconds.
    pub ban: u64,
}

/// Overrides for one built-in rule; `None` keeps the rule file's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RuleOverride {
    /// On or off.
    pub enabled: Option<bool>,
    /// Replaces every threshold.
    pub thresholds: Option<Vec<ThresholdSetting>>,
    /// Scanner rule: replaces the user-agent list.
    pub agents: Option<Vec<String>>,
    /// Scanner rule: added to the user-agent list.
    pub extra_agents: Vec<String>,
    /// Toll-fraud rule: replaces the dialled prefixes.
    pub prefixes: Option<Vec<String>>,
    /// Registered endpoints spared (alert instead of ban).
    pub spare_known: Option<bool>,
    /// Unanswered challenge: time allowed for the retry, seconds.
    pub answer_within: Option<u64>,
    /// Account guessing: distinct sources that start a shield.
    pub sources: Option<u32>,
    /// Account guessing: how long a shield lasts after its last failure,
    /// seconds.
    pub shield: Option<u64>,
    /// Where it was written.
    pub origin: Provenance,
}

/// A log format written in the policy: one regex with named captures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserLogFormat {
    /// Name, used with `replay --format` and in evidence.
    pub id: String,
    /// Event the lines stand for (`auth-failed`, `unknown-user`, ...).
    pub event: String,
    /// The regex (`(?P<addr>...)` required).
    pub regex: String,
    /// Where it was written.
    pub origin: Provenance,
}

/// The `[detect]` section, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetectSettings {
    /// Enforce or observe.
    pub mode: DetectMode,
    /// IPv4 sources counted and banned per prefix of this length.
    pub group_v4: u8,
    /// IPv6 sources counted and banned per prefix of this length.
    pub group_v6: u8,
    /// IPv6: a rule ban first covers the offending address alone; once this
    /// many distinct addresses of one `group_v6` prefix were banned within
    /// `ipv6_escalate_within`, the prefix is banned. 1: the prefix at once.
    pub ipv6_escalate_after: u32,
    /// The window of `ipv6_escalate_after`, seconds.
    pub ipv6_escalate_within: u64,
    /// Endpoints that registered successfully within this long (seconds)
    /// are remembered (in the store, across restarts) and spared by prefix
    /// bans even when not registered at the moment; exact bans still hit
    /// them. 0: not remembered.
    pub remember_endpoints: u64,
    /// Most sources tracked at once.
    pub max_sources: usize,
    /// Most accounts whose failed authentications are counted at once
    /// (distributed guessing).
    pub max_accounts: usize,
    /// IPv4 neighbourhoods (off: `None`): once this many addresses of one
    /// `[bans] ipv4_prefix` network were banned by account shields within
    /// the rule's window, the network is banned (registered and remembered
    /// endpoints spared, as by every prefix ban).
    pub shield_v4_escalate_after: Option<u32>,
    /// Networks never banned, beyond own addresses, management, allow list
    /// and trusted networks (which the driver adds).
    pub never_ban: Vec<IpNet>,
    /// Per-rule overrides by rule id.
    pub rules: BTreeMap<String, RuleOverride>,
    /// Recidive window, seconds.
    pub recidive_within: Option<u64>,
    /// Recidive ladder, seconds.
    pub recidive_ladder: Option<Vec<u64>>,
    /// User-defined log formats.
    pub logformats: Vec<UserLogFormat>,
}

impl Default for DetectSettings {
    fn default() -> Self {
        Self {
            mode: DetectMode::Enforce,
            group_v4: 32,
            group_v6: 64,
            ipv6_escalate_after: 3,
            ipv6_escalate_within: 600,
            remember_endpoints: 30 * 86_400,
            max_sources: 100_000,
            max_accounts: 65_536,
            shield_v4_escalate_after: None,
            never_ban: Vec::new(),
            rules: BTreeMap::new(),
            recidive_within: None,
            recidive_ladder: None,
            logformats: Vec::new(),
        }
    }
}

/// What the walker read, before rule ids are checked against the catalog.
#[derive(Debug, Default)]
pub(crate) struct RawDetect {
    pub(crate) settings: DetectSettings,
    /// Rule ids as written, for the catalog check.
    pub(crate) rule_keys: Vec<(String, FileId, Range<usize>)>,
    /// Where `group_v4` / `group_v6` were written (absent: they follow
    /// `[bans] ipv4_prefix` / `ipv6_prefix` for IPv6, /32 for IPv4).
    pub(crate) group_at: [Option<(FileId, Range<usize>)>; 2],
    /// Where `shield_v4_escalate_after` was written.
    pub(crate) shield_v4_at: Option<(FileId, Range<usize>)>,
}

const EVENTS: &[&str] = &[
    "auth-failed",
    "auth-ok",
    "unknown-user",
    "challenge",
    "registered",
    "call-rejected",
    "flooding",
    "agent",
];

/// A duration in seconds (the policy's own syntax and checks).
fn secs(w: &mut Walker<'_>, v: &Value<'_>, what: &str) -> Option<u64> {
    crate::load::duration(w, v, what)
}

fn strings(w: &mut Walker<'_>, v: &Value<'_>, what: &str) -> Vec<String> {
    w.str_list(v, what).into_iter().map(|(s, _)| s).collect()
}

/// Reads `[detect]`.
pub(crate) fn walk(w: &mut Walker<'_>, t: &Table<'_>, sources: &SourceMap, raw: &mut RawDetect) {
    let prov = |span: &Range<usize>, file: FileId| Provenance {
        file: sources.name(file).to_string(),
        line: sources.line_col(file, span.start).0,
    };
    w.check_keys(
        t,
        &[
            "mode",
            "group_v4",
            "group_v6",
            "ipv6_escalate_after",
            "ipv6_escalate_within",
            "remember_endpoints",
            "max_sources",
            "max_accounts",
            "shield_v4_escalate_after",
            "never_ban",
            "rules",
            "recidive",
            "logformat",
        ],
        "[detect]",
    );
    let s = &mut raw.settings;
    if let Some(v) = get(t, "mode") {
        match w.str(v, "mode") {
            Some("enforce") => s.mode = DetectMode::Enforce,
            Some("observe") => s.mode = DetectMode::Observe,
            Some(other) => w.error(
                v.span(),
                format!("unknown mode `{other}`: expected \"enforce\" or \"observe\""),
                "unknown mode",
            ),
            None => {}
        }
    }
    if let Some(v) = get(t, "group_v4")
        && let Some(n) = w.int(v, "group_v4", 8, 32)
    {
        s.group_v4 = u8::try_from(n).expect("range checked");
        raw.group_at[0] = Some((w.file, v.span()));
    }
    if let Some(v) = get(t, "group_v6")
        && let Some(n) = w.int(v, "group_v6", 16, 128)
    {
        s.group_v6 = u8::try_from(n).expect("range checked");
        raw.group_at[1] = Some((w.file, v.span()));
    }
    if let Some(v) = get(t, "ipv6_escalate_after")
        && let Some(n) = w.int(v, "ipv6_escalate_after", 1, 1000)
    {
        s.ipv6_escalate_after = u32::try_from(n).expect("range checked");
    }
    if let Some(v) = get(t, "ipv6_escalate_within")
        && let Some(n) = secs(w, v, "ipv6_escalate_within")
    {
        s.ipv6_escalate_within = n;
    }
    if let Some(v) = get(t, "remember_endpoints") {
        if v.get_ref().as_bool() == Some(false) {
            s.remember_endpoints = 0;
        } else if let Some(n) = secs(w, v, "remember_endpoints") {
            s.remember_endpoints = n;
        }
    }
    if let Some(v) = get(t, "max_sources")
        && let Some(n) = w.int(v, "max_sources", 1000, 100_000_000)
    {
        s.max_sources = usize::try_from(n).expect("range checked");
    }
    if let Some(v) = get(t, "max_accounts")
        && let Some(n) = w.int(v, "max_accounts", 1000, 10_000_000)
    {
        s.max_accounts = usize::try_from(n).expect("range checked");
    }
    if let Some(v) = get(t, "shield_v4_escalate_after")
        && let Some(n) = w.int(v, "shield_v4_escalate_after", 2, 64)
    {
        s.shield_v4_escalate_after = Some(u32::try_from(n).expect("range checked"));
        raw.shield_v4_at = Some((w.file, v.span()));
    }
    if let Some(v) = get(t, "never_ban") {
        for (n, span) in w.str_list(v, "never_ban") {
            match parse_net(&n) {
                Ok(net) => s.never_ban.push(net),
                Err(e) => w.error(span, format!("never_ban `{n}`: {e}"), "not a network"),
            }
        }
    }
    if let Some(rv) = get(t, "recidive")
        && let Some(rt) = w.table(rv, "[detect.recidive]")
    {
        w.check_keys(rt, &["within", "ladder"], "[detect.recidive]");
        if let Some(v) = get(rt, "within") {
            s.recidive_within = secs(w, v, "recidive within");
        }
        if let Some(v) = get(rt, "ladder") {
            let steps: Vec<u64> = w
                .array(v, "ladder")
                .into_iter()
                .filter_map(|x| secs(w, x, "ladder step"))
                .collect();
            if steps.is_empty() || steps.windows(2).any(|p| p[0] >= p[1]) {
                w.error(
                    v.span(),
                    "the ladder must list ascending durations",
                    "not ascending",
                );
            } else {
                s.recidive_ladder = Some(steps);
            }
        }
    }
    if let Some(rv) = get(t, "rules")
        && let Some(rt) = w.table(rv, "[detect.rules]")
    {
        for (k, v) in rt.iter() {
            let id: &str = k.get_ref();
            raw.rule_keys.push((id.to_string(), w.file, k.span()));
            let Some(r) = w.table(v, "a rule override") else {
                continue;
            };
            let ctx = format!("[detect.rules.{id}]");
            w.check_keys(
                r,
                &[
                    "enabled",
                    "thresholds",
                    "agents",
                    "extra_agents",
                    "prefixes",
                    "spare_known",
                    "answer_within",
                    "sources",
                    "shield",
                ],
                &ctx,
            );
            let mut o = RuleOverride {
                origin: prov(&k.span(), w.file),
                ..RuleOverride::default()
            };
            if let Some(v) = get(r, "enabled") {
                o.enabled = w.bool(v, "enabled");
            }
            if let Some(v) = get(r, "spare_known") {
                o.spare_known = w.bool(v, "spare_known");
            }
            if let Some(v) = get(r, "answer_within") {
                o.answer_within = secs(w, v, "answer_within");
            }
            if let Some(v) = get(r, "sources") {
                o.sources = w
                    .int(v, "sources", 2, 1000)
                    .map(|n| u32::try_from(n).expect("range checked"));
            }
            if let Some(v) = get(r, "shield") {
                o.shield = secs(w, v, "shield");
            }
            if let Some(v) = get(r, "agents") {
                o.agents = Some(strings(w, v, "agents"));
            }
            if let Some(v) = get(r, "extra_agents") {
                o.extra_agents = strings(w, v, "extra_agents");
            }
            if let Some(v) = get(r, "prefixes") {
                o.prefixes = Some(strings(w, v, "prefixes"));
            }
            if let Some(v) = get(r, "thresholds") {
                let mut list = Vec::new();
                let items = w.array(v, "thresholds");
                let written = items.len();
                for item in items {
                    let Some(tt) = w.table(item, "a threshold") else {
                        continue;
                    };
                    w.check_keys(tt, &["count", "within", "ban"], "a threshold");
                    let count = match get(tt, "count") {
                        Some(c) => w
                            .int(c, "count", 1, 1000)
                            .map(|n| u32::try_from(n).expect("range checked")),
                        None => {
                            w.error(item.span(), "a threshold needs `count`", "missing count");
                            None
                        }
                    };
                    let within = match get(tt, "within") {
                        Some(x) => secs(w, x, "within"),
                        None => {
                            w.error(item.span(), "a threshold needs `within`", "missing within");
                            None
                        }
                    };
                    let ban = match get(tt, "ban") {
                        Some(x) => secs(w, x, "ban"),
                        None => {
                            w.error(item.span(), "a threshold needs `ban`", "missing ban");
                            None
                        }
                    };
                    if let (Some(count), Some(within), Some(ban)) = (count, within, ban) {
                        list.push(ThresholdSetting { count, within, ban });
                    }
                }
                if written == 0 {
                    w.error(
                        v.span(),
                        "thresholds must list at least one { count, within, ban }",
                        "empty",
                    );
                } else if list.len() == written {
                    o.thresholds = Some(list);
                }
            }
            s.rules.insert(id.to_string(), o);
        }
    }
    if let Some(lv) = get(t, "logformat") {
        for item in w.array(lv, "logformat") {
            let Some(lt) = w.table(item, "a [[detect.logformat]] entry") else {
                continue;
            };
            w.check_keys(
                lt,
                &["id", "event", "regex"],
                "a [[detect.logformat]] entry",
            );
            let id = get(lt, "id")
                .and_then(|v| w.str(v, "id"))
                .map(str::to_string);
            let event = get(lt, "event").and_then(|v| {
                let e = w.str(v, "event")?;
                if EVENTS.contains(&e) {
                    Some(e.to_string())
                } else {
                    let mut d = Diagnostic::error(w.file, v.span(), format!("unknown event `{e}`"))
                        .label("not an event");
                    d = d.help(match crate::did_you_mean(e, EVENTS.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("events are {}", EVENTS.join(", ")),
                    });
                    w.push(d);
                    None
                }
            });
            let regex = get(lt, "regex").and_then(|v| {
                let r = w.str(v, "regex")?;
                match regex::Regex::new(r) {
                    Ok(re) if re.capture_names().flatten().any(|n| n == "addr") => Some(r.to_string()),
                    Ok(_) => {
                        w.error(v.span(), "the regex needs a named capture `(?P<addr>...)` for the client address", "no addr capture");
                        None
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let last = msg.lines().last().unwrap_or("invalid regex").to_string();
                        w.error(v.span(), format!("invalid regex: {last}"), "invalid regex");
                        None
                    }
                }
            });
            for (key, val) in [
                ("id", id.is_none()),
                ("event", event.is_none()),
                ("regex", regex.is_none()),
            ] {
                if val && get(lt, key).is_none() {
                    w.error(
                        item.span(),
                        format!("[[detect.logformat]] entry has no `{key}`"),
                        "incomplete",
                    );
                }
            }
            if let (Some(id), Some(event), Some(regex)) = (id, event, regex) {
                s.logformats.push(UserLogFormat {
                    id,
                    event,
                    regex,
                    origin: prov(&item.span(), w.file),
                });
            }
        }
    }
}
