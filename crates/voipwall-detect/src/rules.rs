//! Rules as data (`data/rules/*.toml`): what each rule counts, its
//! thresholds, and the timestamped scenarios that test it. The kinds are a
//! closed enum: a rule that cannot be expressed is a change to this file,
//! made once, with a test.

use serde::{Deserialize, Serialize};

use crate::time::{format_duration, parse_duration};

/// What a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// Failed authentications (log lines, or a 401/403/407 to a request that
    /// carried credentials).
    AuthFailure,
    /// Digest challenges (401/407) not followed by an authenticated retry
    /// within `answer_within`.
    UnansweredChallenge,
    /// Requests whose User-Agent contains one of `agents` (case-insensitive).
    Scanner,
    /// Distinct unknown users asked for (404/484/604, "no matching endpoint").
    Enumeration,
    /// Unauthenticated calls to numbers starting with one of `prefixes`
    /// that were refused (403/404/...) or whose challenge went unanswered.
    TollFraud,
    /// Requests per source above a rate (for what the kernel meters do not
    /// see, e.g. SIP over TCP), or the PBX's own rate limiter firing.
    RequestFlood,
    /// Requests voipwall could not decode that the PBX answered anyway:
    /// a message shaped to hide from detection.
    Undecodable,
    /// Wrong tokens presented to voipwall's own HTTP API.
    ApiAuth,
    /// Failed authentications for one account from several sources
    /// (distributed guessing): the account is shielded, and sources that
    /// fail on it are banned at their first verified failure.
    AccountGuessing,
}

impl RuleKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 9] = [
        Self::AuthFailure,
        Self::UnansweredChallenge,
        Self::Scanner,
        Self::Enumeration,
        Self::TollFraud,
        Self::RequestFlood,
        Self::Undecodable,
        Self::ApiAuth,
        Self::AccountGuessing,
    ];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Self::AuthFailure => "auth-failure",
            Self::UnansweredChallenge => "unanswered-challenge",
            Self::Scanner => "scanner",
            Self::Enumeration => "enumeration",
            Self::TollFraud => "toll-fraud",
            Self::RequestFlood => "request-flood",
            Self::Undecodable => "undecodable",
            Self::ApiAuth => "api-auth",
            Self::AccountGuessing => "account-guessing",
        }
    }

    /// The kind named `s`.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One "N events within W → ban for B" step of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Threshold {
    /// Events that trigger the ban (the N-th event fires, not one before).
    pub count: u32,
    /// Window in milliseconds.
    pub within: u64,
    /// Ban length in milliseconds.
    pub ban: u64,
}

/// A detection rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Identifier (`auth-bruteforce`), used in bans, metrics and the policy.
    pub id: String,
    /// For operators.
    pub description: String,
    /// What is counted.
    pub kind: RuleKind,
    /// Off rules are loaded (and tested) but never fire.
    pub enabled: bool,
    /// Thresholds, evaluated together; the longest ban among those reached wins.
    pub thresholds: Vec<Threshold>,
    /// Registered endpoints are not banned by this rule (an alert instead).
    pub spare_known: bool,
    /// Scanner: User-Agent substrings.
    pub agents: Vec<String>,
    /// Toll fraud: dialled-number prefixes (international, premium).
    pub prefixes: Vec<String>,
    /// Toll fraud: shortest number that counts (extensions are shorter).
    pub min_digits: usize,
    /// Toll fraud and enumeration: response codes that count as refusals.
    pub codes: Vec<u16>,
    /// Unanswered challenge: time allowed for the authenticated retry, ms.
    pub answer_within: u64,
    /// Request flood: methods that count (empty: all).
    pub methods: Vec<String>,
    /// Account guessing: distinct sources among a threshold's failures
    /// that start a shield.
    pub sources: u32,
    /// Account guessing: how long a shield lasts after its last failure, ms.
    pub shield: u64,
    /// Data file the rule came from.
    pub file: String,
    /// Scenarios from the data file.
    pub tests: Vec<RuleTest>,
}

/// Ban escalation for sources banned again soon after a ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recidive {
    /// A ban counts as a repeat when it starts within this long (ms) after
    /// the previous ban of the same target ended.
    pub within: u64,
    /// Ban lengths in ms, ascending; a repeat gets the first step longer
    /// than the previous ban.
    pub ladder: Vec<u64>,
    /// Scenarios from the data file.
    pub tests: Vec<RuleTest>,
}

/// A scenario: timestamped events in, the exact list of actions out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    /// What it shows.
    pub name: String,
    /// Other rules enabled alongside the one under test.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Event lines: `<offset> <addr> <kind> [key=value ...]` (see `scenario`).
    pub events: Vec<String>,
    /// Action lines: `<offset> ban <net> <rule> <ttl>`, `<offset> alert <addr> <rule>`,
    /// `<offset> promote <addr>`.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Engine settings for this scenario (`group_v4 = 24`, `never_ban = [...]`).
    #[serde(default)]
    pub config: ScenarioConfig,
}

/// Engine settings a scenario may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// IPv4 grouping prefix.
    pub group_v4: Option<u8>,
    /// IPv6 grouping prefix.
    pub group_v6: Option<u8>,
    /// Networks never banned.
    #[serde(default)]
    pub never_ban: Vec<String>,
    /// IPv4 neighbourhoods of account shields: this many shield-banned
    /// addresses of one /24 ban the /24.
    pub shield_v4_after: Option<u32>,
}

/// All rules plus recidive.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RuleSet {
    /// Rules in file-name order.
    pub rules: Vec<Rule>,
    /// Escalation, if a recidive file was loaded.
    pub recidive: Option<Recidive>,
}

/// Why a rule file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RuleError {
    /// File name.
    pub file: String,
    /// What is wrong (TOML errors include line and column).
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    #[serde(default)]
    description: String,
    kind: String,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    threshold: Vec<ThresholdFile>,
    #[serde(default)]
    spare_known: bool,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    min_digits: Option<usize>,
    #[serde(default)]
    codes: Vec<u16>,
    #[serde(default)]
    answer_within: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    sources: Option<u32>,
    #[serde(default)]
    shield: Option<String>,
    // Recidive only.
    #[serde(default)]
    within: Option<String>,
    #[serde(default)]
    ladder: Vec<String>,
    #[serde(default)]
    test: Vec<RuleTest>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdFile {
    count: u32,
    within: String,
    ban: String,
}

/// Most timestamps a counting rule keeps per source; a bigger count would
/// let one source hold unbounded memory.
pub const MAX_COUNT: u32 = 1000;

/// One parsed data file: a rule or the recidive ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleItem {
    /// A detection rule.
    Rule(Rule),
    /// The escalation ladder.
    Recidive(Recidive),
}

/// Parses one rule file.
pub fn parse_rule(file: &str, text: &str) -> Result<RuleItem, RuleError> {
    let err = |message: String| RuleError {
        file: file.to_string(),
        message,
    };
    let raw: RuleFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    let dur = |what: &str, s: &str| {
        parse_duration(s)
            .and_then(|v| {
                if v == 0 {
                    Err(format!("{what} must be longer than zero"))
                } else {
                    Ok(v)
                }
            })
            .map_err(|e| err(format!("rule `{}`: {what}: {e}", raw.id)))
    };
    if raw.kind == "recidive" {
        let within = dur("within", raw.within.as_deref().unwrap_or("24h"))?;
        let ladder = raw
            .ladder
            .iter()
            .map(|s| dur("ladder", s))
            .collect::<Result<Vec<_>, _>>()?;
        if ladder.is_empty() || ladder.windows(2).any(|w| w[0] >= w[1]) {
            return Err(err(
                "recidive: `ladder` must be non-empty and ascending".into()
            ));
        }
        return Ok(RuleItem::Recidive(Recidive {
            within,
            ladder,
            tests: raw.test,
        }));
    }
    let kind = RuleKind::from_name(&raw.kind).ok_or_else(|| {
        err(format!(
            "rule `{}`: unknown kind `{}` (expected auth-failure, unanswered-challenge, scanner, enumeration, toll-fraud, request-flood, undecodable, api-auth, account-guessing or recidive)",
            raw.id, raw.kind
        ))
    })?;
    if raw.id.is_empty()
        || !raw
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(format!(
            "rule id `{}` must be lower-case letters, digits and dashes",
            raw.id
        )));
    }
    if raw.threshold.is_empty() {
        return Err(err(format!("rule `{}` has no [[threshold]]", raw.id)));
    }
    let mut thresholds = Vec::new();
    for t in &raw.threshold {
        if t.count == 0 || t.count > MAX_COUNT {
            return Err(err(format!(
                "rule `{}`: threshold count must be 1..={MAX_COUNT}, got {}",
                raw.id, t.count
            )));
        }
        thresholds.push(Threshold {
            count: t.count,
            within: dur("within", &t.within)?,
            ban: dur("ban", &t.ban)?,
        });
    }
    if kind == RuleKind::Scanner && raw.agents.iter().all(|a| a.trim().is_empty()) {
        return Err(err(format!(
            "rule `{}`: a scanner rule needs `agents`",
            raw.id
        )));
    }
    if kind == RuleKind::TollFraud && raw.prefixes.is_empty() {
        return Err(err(format!(
            "rule `{}`: a toll-fraud rule needs `prefixes`",
            raw.id
        )));
    }
    let sources = raw.sources.unwrap_or(3);
    if kind == RuleKind::AccountGuessing
        && (sources < 2 || thresholds.iter().any(|t| t.count < sources))
    {
        return Err(err(format!(
            "rule `{}`: `sources` must be at least 2 and at most each threshold's count (one source is the per-source rules' job)",
            raw.id
        )));
    }
    let codes = if raw.codes.is_empty() {
        match kind {
            RuleKind::TollFraud => vec![401, 403, 404, 407, 484, 603],
            _ => vec![404, 484, 604],
        }
    } else {
        raw.codes.clone()
    };
    Ok(RuleItem::Rule(Rule {
        id: raw.id.clone(),
        description: raw.description,
        kind,
        enabled: raw.enabled,
        thresholds,
        spare_known: raw.spare_known,
        agents: raw.agents,
        prefixes: raw.prefixes,
        min_digits: raw.min_digits.unwrap_or(8),
        codes,
        answer_within: dur(
            "answer_within",
            raw.answer_within.as_deref().unwrap_or("32s"),
        )?,
        methods: raw.methods,
        sources,
        shield: dur("shield", raw.shield.as_deref().unwrap_or("1h"))?,
        file: file.to_string(),
        tests: raw.test,
    }))
}

impl RuleSet {
    /// Loads rule files (`(name, text)`), later files replacing earlier ones
    /// with the same id (that is how /etc overrides the built-in data).
    /// Every file's error is returned, not only the first.
    pub fn load<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, Vec<RuleError>> {
        let mut set = Self::default();
        let mut errors = Vec::new();
        for (name, text) in files {
            match parse_rule(name, text) {
                Ok(RuleItem::Rule(r)) => match set.rules.iter_mut().find(|x| x.id == r.id) {
                    Some(slot) => *slot = r,
                    None => set.rules.push(r),
                },
                Ok(RuleItem::Recidive(r)) => set.recidive = Some(r),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// The rules shipped with voipwall (`data/rules/`).
    pub fn builtin() -> Self {
        Self::load(BUILTIN_RULES.iter().copied()).expect("built-in rules are valid (tested)")
    }

    /// A rule by id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// A rule by id, for changing its settings.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Rule> {
        self.rules.iter_mut().find(|r| r.id == id)
    }
}

impl Rule {
    /// One line for listings: `auth-bruteforce: 5 in 60s → 1h; 20 in 1d → 1d`.
    pub fn summary(&self) -> String {
        let steps: Vec<String> = self
            .thresholds
            .iter()
            .map(|t| {
                format!(
                    "{} in {} → ban {}",
                    t.count,
                    format_duration(t.within),
                    format_duration(t.ban)
                )
            })
            .collect();
        format!("{} ({}): {}", self.id, self.kind.name(), steps.join("; "))
    }
}

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_problem() {
        let e = parse_rule("x.toml", "id = \"a\"\nkind = \"nope\"\n[[threshold]]\ncount = 1\nwithin = \"1s\"\nban = \"1h\"\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("x.toml: rule `a`: unknown kind `nope`"),
            "{e}"
        );
        let e = parse_rule("y.toml", "id = \"a\"\nkind = \"scanner\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = parse_rule(
            "z.toml",
            "id = \"a\"\nkind = \"auth-failure\"\n[[threshold]]\ncount = 5\nwithin = \"soon\"\nban = \"1h\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid duration `soon`"), "{e}");
        let e = parse_rule(
            "r.toml",
            "id = \"r\"\nkind = \"recidive\"\nladder = [\"1d\", \"1h\"]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("ascending"), "{e}");
    }

    #[test]
    fn later_file_overrides_earlier_and_all_errors_are_reported() {
        let a = "id = \"a\"\nkind = \"auth-failure\"\n[[threshold]]\ncount = 5\nwithin = \"60s\"\nban = \"1h\"\n";
        let a2 = "id = \"a\"\nkind = \"auth-failure\"\n[[threshold]]\ncount = 3\nwithin = \"60s\"\nban = \"1h\"\n";
        let set = RuleSet::load([("builtin/a.toml", a), ("/etc/a.toml", a2)]).unwrap();
        assert_eq!(set.rules.len(), 1);
        assert_eq!(set.rules[0].thresholds[0].count, 3);
        let errs = RuleSet::load([("b1", "id = 1"), ("b2", "kind = \"x\"")]).unwrap_err();
        assert_eq!(errs.len(), 2);
    }
}
