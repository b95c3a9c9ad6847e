//! voipwall's log formats: a line a PBX, proxy, web GUI or sshd wrote, to a
//! detection [`Event`] with the line's own time.
//!
//! Formats are data (`data/logformats/*.toml`): line templates (see
//! [`template`]) with the event each stands for, and example lines that the
//! test suite checks. A user-defined format is a regex with named captures
//! (`addr`, `user`, `ua`, `expires`). Syslog-wrapped lines (RFC 3164 and
//! 5424) are recognised ([`prefix`]).
//!
//! The address always comes from the field the server wrote: templates
//! match the server-written tail of a line, and when attacker-supplied text
//! imitates the marker before the address, the line is refused as
//! ambiguous rather than trusted ([`LineError::Ambiguous`]).
//!
//! Pure: no files, no clock; malformed lines are errors to count, never panics.
//!
//! ```
//! use voipwall_logfmt::{Format, prefix::Context};
//! let f = Format::builtin("asterisk").unwrap();
//! let line = b"[2026-11-23 10:22:29] NOTICE[2284] chan_sip.c: Registration from '\"1001\" <sip:1001@pbx>' failed for '203.0.113.9:5087' - Wrong password";
//! let l = f.parse_line(line, &Context::default()).unwrap();
//! assert_eq!(l.event.src.to_string(), "203.0.113.9");
//! assert_eq!(l.at.unwrap().to_string(), "2026-11-23T10:22:29.000Z");
//! ```
#![warn(missing_docs)]

pub mod prefix;
pub mod template;

use std::net::IpAddr;

use aho_corasick::{AhoCorasick, MatchKind};
use serde::Deserialize;
use voipwall_detect::{Event, EventKind, Timestamp};

use crate::prefix::Context;
use crate::template::{Captures, Miss, Template};

/// Longest line looked at; longer lines are refused (counted by the caller).
pub const MAX_LINE: usize = 8192;

/// The event a pattern stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Wrong password, failed ACL.
    AuthFailed,
    /// Successful authentication.
    AuthOk,
    /// Unknown user or endpoint.
    UnknownUser,
    /// A digest challenge was sent.
    Challenge,
    /// A registration succeeded.
    Registered,
    /// An unauthenticated call was refused.
    CallRejected,
    /// The server's rate limiter flagged the client.
    Flooding,
    /// The server dropped a request from the client as malformed.
    Malformed,
    /// The line shows the client's user agent.
    Agent,
}

/// A log event's parts, borrowed: what a log line says about a source.
/// The one conversion between a log line's event and the engine's
/// [`EventKind`] both ways, exhaustive: a new kind on either side is a
/// compile error here, never a misreported event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEvent<'a> {
    /// What happened.
    pub kind: EventType,
    /// The user (extension, account), when the line names one.
    pub user: Option<&'a [u8]>,
    /// The user agent (`Agent` lines).
    pub agent: &'a [u8],
    /// Registration lifetime, seconds (`Registered` lines).
    pub expires: Option<u32>,
}

impl<'a> LogEvent<'a> {
    /// The engine's event kind.
    pub fn kind(&self) -> EventKind<'a> {
        let user = self.user;
        match self.kind {
            EventType::AuthFailed => EventKind::AuthFailed { user },
            EventType::AuthOk => EventKind::AuthSucceeded { user },
            EventType::UnknownUser => EventKind::UnknownUser { user },
            EventType::Challenge => EventKind::ChallengeSent { user },
            EventType::Registered => EventKind::Registered {
                user,
                expires: self.expires,
            },
            EventType::CallRejected => EventKind::CallRejected { user },
            EventType::Flooding => EventKind::Flooding,
            EventType::Malformed => EventKind::Malformed,
            EventType::Agent => EventKind::Agent { agent: self.agent },
        }
    }

    /// The log event an engine event kind is, if it is one (packet-only
    /// kinds are not: requests, responses, undecodable packets, API token
    /// guesses).
    pub fn of(k: &EventKind<'a>) -> Option<Self> {
        let e = |kind, user| Self {
            kind,
            user,
            agent: &[],
            expires: None,
        };
        Some(match *k {
            EventKind::AuthFailed { user } => e(EventType::AuthFailed, user),
            EventKind::AuthSucceeded { user } => e(EventType::AuthOk, user),
            EventKind::UnknownUser { user } => e(EventType::UnknownUser, user),
            EventKind::ChallengeSent { user } => e(EventType::Challenge, user),
            EventKind::Registered { user, expires } => Self {
                expires,
                ..e(EventType::Registered, user)
            },
            EventKind::CallRejected { user } => e(EventType::CallRejected, user),
            EventKind::Flooding => e(EventType::Flooding, None),
            EventKind::Malformed => e(EventType::Malformed, None),
            EventKind::Agent { agent } => Self {
                agent,
                ..e(EventType::Agent, None)
            },
            EventKind::Request(_)
            | EventKind::Response(_)
            | EventKind::Undecodable
            | EventKind::ApiAuthFailed => return None,
        })
    }
}

impl EventType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auth-failed" => Self::AuthFailed,
            "auth-ok" => Self::AuthOk,
            "unknown-user" => Self::UnknownUser,
            "challenge" => Self::Challenge,
            "registered" => Self::Registered,
            "call-rejected" => Self::CallRejected,
            "flooding" => Self::Flooding,
            "malformed" => Self::Malformed,
            "agent" => Self::Agent,
            _ => return None,
        })
    }

    /// The name used in format files.
    pub fn name(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth-failed",
            Self::AuthOk => "auth-ok",
            Self::UnknownUser => "unknown-user",
            Self::Challenge => "challenge",
            Self::Registered => "registered",
            Self::CallRejected => "call-rejected",
            Self::Flooding => "flooding",
            Self::Malformed => "malformed",
            Self::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    Template(Template),
    Regex(regex::bytes::Regex),
}

/// One line shape.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// For humans.
    pub name: String,
    /// The event it stands for.
    pub event: EventType,
    matcher: Matcher,
    /// Everything after `{addr}` is server-written, so a greedy match is
    /// exact and the marker need not be unique.
    tail_anchored: bool,
}

/// An example line from a format file, checked by the tests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// The line.
    pub line: String,
    /// Expected event name, or `none` for a line that must not match.
    pub event: String,
    /// Expected client address.
    #[serde(default)]
    pub addr: Option<String>,
    /// Expected user.
    #[serde(default)]
    pub user: Option<String>,
    /// Expected user agent.
    #[serde(default)]
    pub ua: Option<String>,
    /// Expected time (RFC 3339, as `Timestamp` displays it).
    #[serde(default)]
    pub at: Option<String>,
}

/// A log format: patterns, tried in order, with a literal prefilter.
#[derive(Debug, Clone)]
pub struct Format {
    /// Identifier (`asterisk`, `asterisk-security`, ...).
    pub id: String,
    /// For humans.
    pub description: String,
    /// Line shapes.
    pub patterns: Vec<Pattern>,
    /// Example lines.
    pub examples: Vec<Example>,
    /// One literal per pattern (the longest); a line is only matched
    /// against patterns whose literal it contains.
    prefilter: Option<Prefilter>,
}

/// Which patterns a line could match, found without reading its prefix.
/// Exact: a pattern left out cannot match the line, so trying the rest in
/// order gives what trying every pattern in order gives.
#[derive(Debug, Clone)]
struct Prefilter {
    /// Patterns that end with a literal (every line they match ends with
    /// it), by the literal's last byte: the literal and its patterns.
    tails: Vec<Vec<(Vec<u8>, Patterns)>>,
    /// Patterns that end with a field: their longest literals, every
    /// occurrence searched for (overlapping, so no key hides another).
    open: Option<OpenKeys>,
}

#[derive(Debug, Clone)]
struct OpenKeys {
    ac: AhoCorasick,
    /// Per distinct key, the patterns that have it.
    groups: Vec<Patterns>,
    /// No key holds a line break (keys can be searched for over many lines).
    single_line: bool,
}

/// A set of patterns by index (at most 128).
type Patterns = [u64; 2];

impl Prefilter {
    /// The patterns ending with a literal that `line` ends with.
    fn tail(&self, line: &[u8]) -> Patterns {
        let mut set = [0; 2];
        if let Some(&last) = line.last() {
            for (lit, pats) in &self.tails[usize::from(last)] {
                if template::ends_with(line, lit) {
                    set[0] |= pats[0];
                    set[1] |= pats[1];
                }
            }
        }
        set
    }
}

/// Each line of `text`: split at `\n`, a `\r` before it dropped, a last
/// line without one included.
fn for_each_line<'a>(text: &'a [u8], mut each: impl FnMut(&'a [u8])) {
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', text) {
        let line = &text[start..nl];
        each(line.strip_suffix(b"\r").unwrap_or(line));
        start = nl + 1;
    }
    if start < text.len() {
        let line = &text[start..];
        each(line.strip_suffix(b"\r").unwrap_or(line));
    }
}

/// Why a line produced no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// No pattern matches (most lines of a PBX log).
    #[error("no pattern matches")]
    NoMatch,
    /// The marker before the address occurs more than once.
    #[error("ambiguous: the line repeats the text before the address")]
    Ambiguous,
    /// The address field is not an IP address.
    #[error("the address field is not an IP address")]
    BadAddress,
    /// Longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// A matched line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// The line's time, if its prefix has one.
    pub at: Option<Timestamp>,
    /// The event.
    pub event: Event<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatFile {
    id: String,
    #[serde(default)]
    description: String,
    pattern: Vec<PatternFile>,
    #[serde(default)]
    example: Vec<Example>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    name: String,
    event: String,
    #[serde(rename = "match")]
    template: String,
    #[serde(default)]
    tail_anchored: bool,
}

/// Why a format file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FormatError {
    /// File name.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

include!(concat!(env!("OUT_DIR"), "/builtin_formats.rs"));

impl Format {
    /// Parses a format file.
    pub fn parse(file: &str, text: &str) -> Result<Self, FormatError> {
        let err = |message: String| FormatError {
            file: file.to_string(),
            message,
        };
        let raw: FormatFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let mut patterns = Vec::new();
        for p in raw.pattern {
            let event = EventType::parse(&p.event)
                .ok_or_else(|| err(format!("pattern `{}`: unknown event `{}`", p.name, p.event)))?;
            let t = Template::compile(&p.template)
                .map_err(|e| err(format!("pattern `{}`: {e}", p.name)))?;
            patterns.push(Pattern {
                name: p.name,
                event,
                matcher: Matcher::Template(t),
                tail_anchored: p.tail_anchored,
            });
        }
        if patterns.is_empty() {
            return Err(err("a format needs at least one [[pattern]]".into()));
        }
        Ok(Self::assemble(
            raw.id,
            raw.description,
            patterns,
            raw.example,
        ))
    }

    /// A user-defined format: one regex with named captures (`addr` required;
    /// `user`, `ua`, `expires` optional) for one event.
    pub fn from_regex(id: &str, event: &str, re: &str) -> Result<Self, String> {
        let event = EventType::parse(event).ok_or_else(|| {
            format!("unknown event `{event}` (auth-failed, auth-ok, unknown-user, challenge, registered, call-rejected, flooding, agent)")
        })?;
        let re = regex::bytes::Regex::new(re).map_err(|e| format!("invalid regex: {e}"))?;
        if !re.capture_names().flatten().any(|n| n == "addr") {
            return Err("the regex needs a named capture `(?P<addr>...)`".into());
        }
        let p = Pattern {
            name: id.to_string(),
            event,
            matcher: Matcher::Regex(re),
            tail_anchored: true,
        };
        Ok(Self::assemble(
            id.to_string(),
            "user-defined regex".into(),
            vec![p],
            Vec::new(),
        ))
    }

    fn assemble(
        id: String,
        description: String,
        patterns: Vec<Pattern>,
        examples: Vec<Example>,
    ) -> Self {
        let templates: Option<Vec<&Template>> = patterns
            .iter()
            .map(|p| match &p.matcher {
                Matcher::Template(t) => Some(t),
                Matcher::Regex(_) => None,
            })
            .collect();
        let prefilter = templates.filter(|t| t.len() <= 128).map(|templates| {
            let bit = |i: usize| {
                let mut set = [0u64; 2];
                set[i / 64] |= 1 << (i % 64);
                set
            };
            let add = |set: &mut Patterns, i: usize| set[i / 64] |= bit(i)[i / 64];
            let mut tails: Vec<Vec<(Vec<u8>, Patterns)>> = vec![Vec::new(); 256];
            // Patterns often share their longest literal ("Registration
            // from '"): each distinct key is searched for once.
            let mut keys: Vec<Vec<u8>> = Vec::new();
            let mut groups: Vec<Patterns> = Vec::new();
            for (i, t) in templates.into_iter().enumerate() {
                match t.last_literal() {
                    Some(lit) => {
                        let slot = &mut tails[usize::from(lit[lit.len() - 1])];
                        match slot.iter_mut().find(|(l, _)| l == lit) {
                            Some((_, set)) => add(set, i),
                            None => slot.push((lit.to_vec(), bit(i))),
                        }
                    }
                    None => match keys.iter().position(|k| *k == t.key) {
                        Some(g) => add(&mut groups[g], i),
                        None => {
                            keys.push(t.key.clone());
                            groups.push(bit(i));
                        }
                    },
                }
            }
            let open = (!keys.is_empty()).then(|| OpenKeys {
                single_line: !keys.iter().flatten().any(|&b| b == b'\n' || b == b'\r'),
                ac: AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(keys)
                    .expect("literal keys always build"),
                groups,
            });
            Prefilter { tails, open }
        });
        Self {
            id,
            description,
            patterns,
            examples,
            prefilter,
        }
    }

    /// A built-in format by id.
    pub fn builtin(id: &str) -> Option<Self> {
        Self::all_builtin().into_iter().find(|f| f.id == id)
    }

    /// Every built-in format.
    pub fn all_builtin() -> Vec<Self> {
        BUILTIN_FORMATS
            .iter()
            .map(|(file, text)| {
                Self::parse(file, text).expect("built-in formats are valid (tested)")
            })
            .collect()
    }

    /// One format holding the patterns of several (for logs of mixed origin).
    pub fn combine(id: &str, formats: Vec<Self>) -> Self {
        let mut patterns = Vec::new();
        let mut examples = Vec::new();
        for f in formats {
            patterns.extend(f.patterns);
            examples.extend(f.examples);
        }
        Self::assemble(id.into(), "combined".into(), patterns, examples)
    }

    /// The event a line stands for, with the line's time.
    pub fn parse_line<'a>(
        &'a self,
        line: &'a [u8],
        ctx: &Context,
    ) -> Result<LogLine<'a>, LineError> {
        let Some(pf) = self.prefilter.as_ref().filter(|_| line.len() <= MAX_LINE) else {
            return self.parse_among(line, None, ctx);
        };
        // Most lines of a PBX log can match no pattern: they are refused by
        // their last bytes and one search for the other patterns' keys,
        // before their prefix is read.
        let mut set = pf.tail(line);
        if let Some(open) = &pf.open {
            for m in open.ac.find_overlapping_iter(line) {
                let g = open.groups[m.pattern().as_usize()];
                set[0] |= g[0];
                set[1] |= g[1];
            }
        }
        self.parse_among(line, Some(set), ctx)
    }

    /// Every line of `text` (lines end at `\n`; a `\r` before it is
    /// dropped; a last line without one counts) with what it gave, in
    /// order: the same as [`Format::parse_line`] of each line, faster. The
    /// keys of patterns that end with a field are searched for once over
    /// the whole text, so a line that can match nothing costs little more
    /// than finding its end.
    pub fn parse_lines<'a>(
        &'a self,
        text: &'a [u8],
        ctx: &Context,
        mut each: impl FnMut(Result<LogLine<'a>, LineError>),
    ) {
        // Without a prefilter, or with keys that span lines: line by line.
        let Some(pf) = self
            .prefilter
            .as_ref()
            .filter(|pf| pf.open.as_ref().is_none_or(|o| o.single_line))
        else {
            for_each_line(text, |line| each(self.parse_line(line, ctx)));
            return;
        };
        let open = pf.open.as_ref();
        // Keys hold no line break, so each occurrence lies in one line.
        let mut found = open.map(|o| o.ac.find_overlapping_iter(text).peekable());
        let mut start = 0;
        for_each_line(text, |line| {
            let end = start + line.len();
            let mut set = pf.tail(line);
            if let (Some(found), Some(open)) = (found.as_mut(), open) {
                while let Some(m) = found.next_if(|m| m.start() < end) {
                    let g = open.groups[m.pattern().as_usize()];
                    set[0] |= g[0];
                    set[1] |= g[1];
                }
            }
            // Past the line and any `\r` and `\n` after it.
            start = end;
            while start < text.len() && text[start] != b'\n' {
                start += 1;
            }
            start += 1;
            each(self.parse_among(line, Some(set), ctx));
        });
    }

    /// What trying every pattern in order gives, without a prefilter: the
    /// reference the prefilter is tested against.
    #[doc(hidden)]
    pub fn parse_line_unfiltered<'a>(
        &'a self,
        line: &'a [u8],
        ctx: &Context,
    ) -> Result<LogLine<'a>, LineError> {
        self.parse_among(line, None, ctx)
    }

    /// The event of a line: the first of the patterns in `set` (all of
    /// them: `None`), in pattern order, that matches it. A line longer
    /// than [`MAX_LINE`] is refused before any.
    fn parse_among<'a>(
        &'a self,
        line: &'a [u8],
        set: Option<Patterns>,
        ctx: &Context,
    ) -> Result<LogLine<'a>, LineError> {
        if line.len() > MAX_LINE {
            return Err(LineError::TooLong);
        }
        if set == Some([0, 0]) {
            return Err(LineError::NoMatch);
        }
        let (at, msg) = prefix::split(line, ctx);
        let mut last_err = LineError::NoMatch;
        for (i, p) in self.patterns.iter().enumerate() {
            if let Some(set) = set
                && set[i / 64] & (1 << (i % 64)) == 0
            {
                continue;
            }
            let caps = match &p.matcher {
                Matcher::Template(t) => match t.captures(msg, !p.tail_anchored) {
                    Ok(c) => c,
                    Err(Miss::NoMatch) => continue,
                    Err(Miss::Ambiguous) => {
                        last_err = LineError::Ambiguous;
                        continue;
                    }
                },
                Matcher::Regex(re) => {
                    let Some(c) = re.captures(msg) else { continue };
                    let g = |n: &str| c.name(n).map(|m| m.as_bytes());
                    Captures {
                        addr: g("addr"),
                        user: g("user"),
                        ua: g("ua"),
                        expires: g("expires"),
                    }
                }
            };
            return build(p.event, caps, self.id.as_str()).map(|event| LogLine { at, event });
        }
        Err(last_err)
    }

    /// Checks every example line; returns one message per failure.
    pub fn check_examples(&self, ctx: &Context) -> Vec<String> {
        let mut out = Vec::new();
        for ex in &self.examples {
            let got = self.parse_line(ex.line.as_bytes(), ctx);
            let fail = |why: String| format!("{}: example `{}`: {why}", self.id, ex.line);
            match (&got, ex.event.as_str()) {
                (Err(_), "none") => {}
                (Ok(l), "none") => {
                    out.push(fail(format!("expected no event, got {:?}", l.event.kind)))
                }
                (Err(e), _) => out.push(fail(format!("expected {}, got error: {e}", ex.event))),
                (Ok(l), want) => {
                    let (name, user, ua) = describe(&l.event.kind);
                    if name != want {
                        out.push(fail(format!("expected event {want}, got {name}")));
                    }
                    if let Some(a) = &ex.addr
                        && l.event.src.to_string() != *a
                    {
                        out.push(fail(format!("expected addr {a}, got {}", l.event.src)));
                    }
                    if let Some(u) = &ex.user
                        && user.as_deref() != Some(u.as_str())
                    {
                        out.push(fail(format!("expected user {u:?}, got {user:?}")));
                    }
                    if let Some(u) = &ex.ua
                        && ua.as_deref() != Some(u.as_str())
                    {
                        out.push(fail(format!("expected ua {u:?}, got {ua:?}")));
                    }
                    if let Some(t) = &ex.at {
                        let got = l.at.map(|t| t.to_string());
                        if got.as_deref() != Some(t.as_str()) {
                            out.push(fail(format!("expected time {t}, got {got:?}")));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Event name, user and user agent of a log event, for examples and output.
pub fn describe(k: &EventKind<'_>) -> (&'static str, Option<String>, Option<String>) {
    let s = |v: Option<&[u8]>| v.map(|b| String::from_utf8_lossy(b).into_owned());
    match *k {
        EventKind::AuthFailed { user } => ("auth-failed", s(user), None),
        EventKind::AuthSucceeded { user } => ("auth-ok", s(user), None),
        EventKind::UnknownUser { user } => ("unknown-user", s(user), None),
        EventKind::ChallengeSent { user } => ("challenge", s(user), None),
        EventKind::Registered { user, .. } => ("registered", s(user), None),
        EventKind::CallRejected { user } => ("call-rejected", s(user), None),
        EventKind::Flooding => ("flooding", None, None),
        EventKind::Malformed => ("malformed", None, None),
        EventKind::Agent { agent } => ("agent", None, s(Some(agent))),
        _ => ("sip", None, None),
    }
}

fn build<'a>(ev: EventType, c: Captures<'a>, origin: &'a str) -> Result<Event<'a>, LineError> {
    let src = parse_addr(c.addr.ok_or(LineError::BadAddress)?).ok_or(LineError::BadAddress)?;
    let user = c.user.map(normalise_user).filter(|u| !u.is_empty());
    let kind = LogEvent {
        kind: ev,
        user,
        agent: c.ua.unwrap_or_default(),
        expires: c
            .expires
            .and_then(|e| std::str::from_utf8(e).ok())
            .and_then(|e| e.parse().ok()),
    }
    .kind();
    Ok(Event { src, kind, origin })
}

/// `203.0.113.9`, `203.0.113.9:5060`, `[2001:db8::1]:5060`, `2001:db8::1`,
/// `UDP:203.0.113.9:5060`, `IPV4/UDP/...` handled by the template.
pub fn parse_addr(v: &[u8]) -> Option<IpAddr> {
    match ipv4_with_port(v) {
        Some(a) => Some(IpAddr::V4(a)),
        None => parse_addr_general(v),
    }
}

/// The common shape, `203.0.113.9` or `203.0.113.9:5060`, read without
/// UTF-8 checks or a second parse; `None` for anything else (then the
/// general reader decides). Accepts exactly what the general reader
/// accepts for this shape: four decimal octets without leading zeros.
fn ipv4_with_port(v: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, o) in octets.iter_mut().enumerate() {
        if n > 0 {
            if v.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut val = 0u32;
        while i < v.len() && i - start < 3 && v[i].is_ascii_digit() {
            val = val * 10 + u32::from(v[i] - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || (len > 1 && v[start] == b'0') {
            return None;
        }
        *o = u8::try_from(val).ok()?;
    }
    match &v[i..] {
        [] => Some(octets.into()),
        [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => Some(octets.into()),
        _ => None,
    }
}

fn parse_addr_general(v: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(v).ok()?.trim();
    // A transport prefix ("UDP:", "TLS:") before the address.
    let s = match s.split_once(':') {
        Some((t, rest))
            if !t.is_empty()
                && t.len() <= 4
                && t.bytes().all(|b| b.is_ascii_alphabetic())
                && !t.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            rest
        }
        _ => s,
    };
    if let Some(inner) = s.strip_prefix('[') {
        return inner.split(']').next()?.parse().ok();
    }
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    if port.bytes().all(|b| b.is_ascii_digit()) && host.contains('.') {
        return host.parse().ok();
    }
    None
}

/// The user part of `"1001" <sip:1001@host>`, `sip:1001@host`, `1001@host`
/// or a quoted name; otherwise the value with quotes trimmed.
fn normalise_user(v: &[u8]) -> &[u8] {
    let v = voipwall_sip::trim(v);
    if let Some(u) = voipwall_sip::addr_user(v) {
        return u;
    }
    let v = v.strip_prefix(b"\"").unwrap_or(v);
    let v = v.strip_suffix(b"\"").unwrap_or(v);
    match v.iter().position(|&b| b == b'@') {
        Some(at) if at > 0 => &v[..at],
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_event_round_trips_through_the_engines_kind() {
        for kind in [
            EventType::AuthFailed,
            EventType::AuthOk,
            EventType::UnknownUser,
            EventType::Challenge,
            EventType::Registered,
            EventType::CallRejected,
            EventType::Flooding,
            EventType::Malformed,
            EventType::Agent,
        ] {
            let (user, agent, expires) = match kind {
                EventType::Flooding | EventType::Malformed => (None, &b""[..], None),
                EventType::Agent => (None, &b"friendly-scanner"[..], None),
                EventType::Registered => (Some(&b"1001"[..]), &b""[..], Some(300)),
                _ => (Some(&b"1001"[..]), &b""[..], None),
            };
            let e = LogEvent {
                kind,
                user,
                agent,
                expires,
            };
            assert_eq!(LogEvent::of(&e.kind()), Some(e), "{kind:?}");
        }
        assert_eq!(LogEvent::of(&EventKind::Undecodable), None);
    }

    #[test]
    fn addresses() {
        for (s, want) in [
            ("203.0.113.9", "203.0.113.9"),
            ("203.0.113.9:5060", "203.0.113.9"),
            ("[2001:db8::1]:5060", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("UDP:203.0.113.9:5060", "203.0.113.9"),
            ("TLS:[2001:db8::9]:5061", "2001:db8::9"),
        ] {
            assert_eq!(
                parse_addr(s.as_bytes()).map(|a| a.to_string()).as_deref(),
                Some(want),
                "{s}"
            );
        }
        assert_eq!(parse_addr(b"pbx.example:5060"), None);
        assert_eq!(parse_addr(b""), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// The IPv4 shortcut reads exactly what the general reader reads.
        #[test]
        fn the_ipv4_shortcut_agrees_with_the_general_reader(
            v in "[0-9.:a-fA-FUDP\\[\\] ]{0,24}|(0|00|1|01|9|25|255|256|300|1234)(\\.(0|00|1|01|9|25|255|256|300|1234)){2,4}(:[0-9]{0,6}|::1|:x)?",
        ) {
            let b = v.as_bytes();
            if let Some(fast) = ipv4_with_port(b) {
                proptest::prop_assert_eq!(Some(IpAddr::V4(fast)), parse_addr_general(b), "{}", v);
            }
            proptest::prop_assert_eq!(parse_addr(b), parse_addr_general(b), "{}", v);
        }
    }

    #[test]
    fn users() {
        assert_eq!(normalise_user(b"\"1001\" <sip:1001@pbx>"), b"1001");
        assert_eq!(normalise_user(b"sip:1002@pbx"), b"1002");
        assert_eq!(normalise_user(b"1003@10.0.0.1"), b"1003");
        assert_eq!(normalise_user(b"\"admin\""), b"admin");
    }
}
