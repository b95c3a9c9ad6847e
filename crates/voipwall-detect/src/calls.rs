//! The call guard: INVITE dialogs followed from the wire, and the call
//! rules of `[call]` checked against them (toll fraud: forbidden
//! destinations, office hours, concurrent calls, calls per minute).
//!
//! Sans-IO like the engine it lives in: requests the host received and
//! responses it sent, with their time, go in; verdicts come out. A call
//! counts from its first INVITE (no To-tag) until a final non-2xx answer,
//! a CANCEL or BYE from the caller, or the maximum duration; a retry after
//! a 401/407 with the same Call-ID is the same call. State is bounded:
//! calls live in an LRU (`max_calls`), evictions counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher as _;
use std::net::IpAddr;

use foldhash::fast::FixedState;
use hashlink::LruCache;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Who a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Calls from these networks (an address, a trunk's addresses).
    Nets(Vec<IpNet>),
    /// Calls whose credentials name a user in this range (numbers compared
    /// as numbers when both ends and the user are digits, else equal).
    User(String, String),
}

/// Office hours in a time zone the driver loaded.
#[derive(Debug, Clone)]
pub struct Hours {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after midnight, inclusive.
    pub start_min: u16,
    /// Minutes after midnight, exclusive.
    pub end_min: u16,
    /// The zone.
    pub tz: jiff::tz::TimeZone,
    /// As written, for messages.
    pub text: String,
}

/// How a rule reads dialled numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Numbering {
    /// Country calling code of national numbers (`44`).
    pub country_code: Option<String>,
    /// Prefix of national numbers (`0`).
    pub national_prefix: String,
    /// Prefix of international numbers (`00`; `+` always is one).
    pub international_prefix: String,
}

/// What a broken rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    /// Report it.
    Alert,
    /// Ban the source.
    Ban,
    /// Drop the INVITE (inline mode, an INVITE from the queue; one that
    /// came any other way is reported).
    Drop,
}

/// One call rule, ready for the engine (prefix lists expanded, trunks
/// resolved to networks, the time zone loaded).
#[derive(Debug, Clone)]
pub struct CallRule {
    /// Name (`call:<name>` in alerts and bans).
    pub name: String,
    /// Origins it applies to; empty: every call.
    pub from: Vec<Origin>,
    /// Destination prefixes (`+44`) it applies to; empty: every call.
    pub to: Vec<String>,
    /// Destination prefixes a call may not reach.
    pub deny_to: Vec<String>,
    /// Calls at once.
    pub max_concurrent: Option<u32>,
    /// New calls per minute.
    pub max_per_minute: Option<u32>,
    /// When calls are allowed.
    pub hours: Option<Hours>,
    /// What a broken rule does.
    pub action: Act,
    /// Ban length, ms.
    pub ban: u64,
    /// How numbers are read.
    pub numbering: Numbering,
}

/// The call guard's settings.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// The rules, in order.
    pub rules: Vec<CallRule>,
    /// Longest a call is counted, ms.
    pub max_duration: u64,
    /// Most calls followed at once.
    pub max_calls: usize,
}

/// A call that broke a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index of the rule.
    pub rule: usize,
    /// Why, for humans.
    pub reason: String,
}

/// One rule's counters, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleView {
    /// Rule name.
    pub name: String,
    /// Calls counted against it now.
    pub active: u32,
    /// Calls that broke it since start.
    pub violations: u64,
    /// INVITEs it dropped at the queue since start (inline mode).
    #[serde(default)]
    pub dropped: u64,
}

/// The guard's counters, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CallStats {
    /// Calls followed now.
    pub calls: u64,
    /// Calls seen since start.
    pub started: u64,
    /// Calls ended by the maximum duration (no BYE seen).
    pub timed_out: u64,
    /// Calls the host never answered (not even 100 Trying) within 32 s:
    /// the PBX never took them (a forged source, a request it discarded).
    #[serde(default)]
    pub unanswered: u64,
    /// Calls kept past the maximum duration because their caller was
    /// still refreshing its session timer (RFC 4028): alive, so counted.
    #[serde(default)]
    pub kept_by_refresh: u64,
    /// Calls evicted to respect `max_calls`.
    pub evicted: u64,
    /// Per rule.
    pub rules: Vec<RuleView>,
}

/// How long a challenged INVITE waits for its authenticated retry, ms.
const RETRY_WITHIN: u64 = 32_000;
const WINDOW: u64 = 60_000;
/// How long the host may take to answer an INVITE at all before the call
/// is taken as never placed, ms (RFC 3261's Timer B, 64 × T1).
const ANSWER_WITHIN: u64 = 32_000;
/// Past a session timer's interval before its call is taken as gone, ms.
const SESSION_GRACE: u64 = 32_000;
/// Dropped calls remembered, so that their retransmissions are dropped
/// without counting again.
const DROPPED_KEPT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Call {
    /// Rules counting this call (bit i: rule i; at most 64 rules count).
    rules: u64,
    started: Timestamp,
    /// When a 401/407 asked for credentials (a retry is due).
    challenged: Option<Timestamp>,
    has_user: bool,
    /// The host answered (any response, 100 Trying included).
    answered: bool,
    /// The dialled number (seeded hash): a retry that dials another is
    /// checked again for where it goes.
    dest: u64,
    /// Until when the caller's last session-timer refresh shows the call
    /// alive (its interval and a grace). Only ever keeps a call: silence
    /// ends nothing (the PBX may not enforce the timer, and a caller must
    /// not shed a call from the count by refreshing once and going
    /// quiet).
    session_until: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    MaxDuration,
    Retry,
    NoAnswer,
}

/// Digits of a dialled number in `+E.164` form when it is one, else as
/// dialled (an extension, a short code: no international prefix matches
/// it).
pub fn normalise(number: &[u8], n: &Numbering) -> String {
    let s: String = number
        .iter()
        .take_while(|&&b| b != b';' && b != b'@')
        .filter(|b| b.is_ascii_digit() || **b == b'+' || **b == b'*' || **b == b'#')
        .map(|&b| char::from(b))
        .collect();
    if let Some(rest) = s.strip_prefix('+') {
        return format!("+{}", rest.replace('+', ""));
    }
    if !n.international_prefix.is_empty()
        && let Some(rest) = s.strip_prefix(n.international_prefix.as_str())
    {
        return format!("+{rest}");
    }
    if let Some(cc) = &n.country_code
        && !n.national_prefix.is_empty()
        && let Some(rest) = s.strip_prefix(n.national_prefix.as_str())
        && !rest.is_empty()
    {
        return format!("+{cc}{rest}");
    }
    s
}

fn user_in(user: &str, lo: &str, hi: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() < 20 && s.bytes().all(|b| b.is_ascii_digit());
    if digits(user) && digits(lo) && digits(hi) {
        let (u, l, h) = (
            user.parse::<u64>().unwrap_or(0),
            lo.parse::<u64>().unwrap_or(0),
            hi.parse::<u64>().unwrap_or(0),
        );
        return (l..=h).contains(&u);
    }
    user == lo && lo == hi
}

impl Hours {
    /// Whether `at` falls inside.
    pub fn contains(&self, at: Timestamp) -> bool {
        let Ok(t) = jiff::Timestamp::from_millisecond(i64::try_from(at.0).unwrap_or(i64::MAX))
        else {
            return false;
        };
        let z = t.to_zoned(self.tz.clone());
        let day = usize::try_from(z.weekday().to_monday_zero_offset()).unwrap_or(0);
        let min =
            u16::try_from(z.hour()).unwrap_or(0) * 60 + u16::try_from(z.minute()).unwrap_or(0);
        self.days[day.min(6)] && (self.start_min..self.end_min).contains(&min)
    }
}

/// The call guard.
pub struct CallGuard {
    cfg: CallConfig,
    calls: LruCache<(IpAddr, u64), Call, FixedState>,
    active: Vec<u32>,
    recent: Vec<VecDeque<Timestamp>>,
    violations: Vec<u64>,
    dropped_by: Vec<u64>,
    /// Calls whose INVITE was dropped: their retransmissions are dropped
    /// too, without counting again.
    dropped: LruCache<(IpAddr, u64), (), FixedState>,
    hasher: FixedState,
    timers: BinaryHeap<Reverse<(Timestamp, IpAddr, u64, Due)>>,
    stats: CallStats,
}

impl CallGuard {
    /// A guard for `cfg` (at most 64 rules take part).
    pub fn new(cfg: CallConfig, hasher: FixedState) -> Self {
        let n = cfg.rules.len().min(64);
        Self {
            calls: LruCache::with_hasher(cfg.max_calls.max(1), hasher.clone()),
            active: vec![0; n],
            recent: vec![VecDeque::new(); n],
            violations: vec![0; n],
            dropped_by: vec![0; n],
            dropped: LruCache::with_hasher(DROPPED_KEPT, hasher.clone()),
            hasher,
            timers: BinaryHeap::new(),
            stats: CallStats::default(),
            cfg,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[CallRule] {
        &self.cfg.rules
    }

    /// Takes over the calls `old` follows (a reload built this guard): a
    /// call keeps counting toward each rule of the same name whose scope
    /// (`from`, `to`, numbering) is unchanged, with that rule's counters;
    /// a rule that is new or changed starts from the calls placed after
    /// the reload. Without this a reload would free every slot of
    /// `max_concurrent` while the calls go on.
    pub fn adopt(&mut self, old: Self) {
        let map: Vec<Option<usize>> = old
            .cfg
            .rules
            .iter()
            .take(64)
            .map(|o| {
                self.cfg.rules.iter().take(64).position(|n| {
                    n.name == o.name
                        && n.from == o.from
                        && n.to == o.to
                        && n.numbering == o.numbering
                })
            })
            .collect();
        let bits = |rules: u64| {
            map.iter().enumerate().fold(0u64, |acc, (j, i)| match i {
                Some(i) if rules & (1 << j) != 0 => acc | (1 << i),
                _ => acc,
            })
        };
        for (j, i) in map.iter().enumerate() {
            if let Some(i) = *i {
                self.violations[i] = old.violations[j];
                self.dropped_by[i] = old.dropped_by[j];
                self.recent[i].clone_from(&old.recent[j]);
            }
        }
        // Oldest first, so that the LRU keeps the same order.
        let calls: Vec<((IpAddr, u64), Call)> = old.calls.iter().map(|(k, c)| (*k, *c)).collect();
        for (key, mut c) in calls {
            c.rules = bits(c.rules);
            if self.calls.len() >= self.calls.capacity()
                && let Some((_, gone)) = self.calls.remove_lru()
            {
                self.release(gone.rules);
                self.stats.evicted += 1;
            }
            for i in 0..self.active.len() {
                if c.rules & (1 << i) != 0 {
                    self.active[i] += 1;
                }
            }
            self.calls.insert(key, c);
        }
        for (key, ()) in old.dropped.iter() {
            self.dropped.insert(*key, ());
        }
        self.timers = old.timers;
        self.compact_timers();
        self.stats = CallStats {
            rules: Vec::new(),
            ..old.stats
        };
    }

    fn applies(rule: &CallRule, src: IpAddr, user: Option<&str>, dest: &str) -> bool {
        let from = rule.from.is_empty()
            || rule.from.iter().any(|o| match o {
                Origin::Nets(nets) => nets.iter().any(|n| n.contains(&src)),
                Origin::User(lo, hi) => user.is_some_and(|u| user_in(u, lo, hi)),
            });
        from && (rule.to.is_empty() || rule.to.iter().any(|p| dest.starts_with(p.as_str())))
    }

    /// What `rule` says of a new call now (not counting it). `active` is
    /// the count the call would join.
    fn check(&self, i: usize, now: Timestamp, dest: &str, counts: bool) -> Option<String> {
        let rule = &self.cfg.rules[i];
        if let Some(p) = rule.deny_to.iter().find(|p| dest.starts_with(p.as_str())) {
            return Some(format!("a call to {dest}: {p} is a forbidden destination"));
        }
        if let Some(h) = &rule.hours
            && !h.contains(now)
        {
            return Some(format!(
                "a call to {dest} outside office hours ({})",
                h.text
            ));
        }
        if counts
            && let Some(max) = rule.max_concurrent
            && self.active.get(i).copied().unwrap_or(0) >= max
        {
            return Some(format!(
                "a call to {dest} while {} calls are up (max_concurrent = {max})",
                self.active[i]
            ));
        }
        if counts && let Some(max) = rule.max_per_minute {
            let n = self
                .recent
                .get(i)
                .map_or(0, |r| r.iter().filter(|t| now.since(**t) < WINDOW).count());
            if n >= max as usize {
                return Some(format!(
                    "a call to {dest}: the {}th new call within a minute (max_per_minute = {max})",
                    n + 1
                ));
            }
        }
        None
    }

    /// What the rules say of a call that would be placed now, without
    /// counting it (the decision endpoint for dialplans).
    pub fn decide(
        &self,
        now: Timestamp,
        src: IpAddr,
        user: Option<&str>,
        number: &[u8],
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        for (i, rule) in self.cfg.rules.iter().enumerate().take(64) {
            let dest = normalise(number, &rule.numbering);
            if Self::applies(rule, src, user, &dest)
                && let Some(reason) = self.check(i, now, &dest, true)
            {
                out.push(Violation { rule: i, reason });
            }
        }
        out
    }

    /// An INVITE the host received. `in_dialog`: it carries a To-tag (a
    /// re-INVITE: not a new call). Returns the rules the call breaks.
    pub fn invite(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        call: u64,
        number: Option<&[u8]>,
        user: Option<&[u8]>,
        in_dialog: bool,
    ) -> Vec<Violation> {
        self.invite_at(now, src, call, (number, user), in_dialog, false)
            .0
    }

    /// An INVITE, from the queue when `queued` (inline mode): besides the
    /// rules it breaks, whether to drop it. A dropped INVITE starts no call
    /// and counts toward nothing (it never reached the PBX); its
    /// retransmissions are dropped too, without breaking the rules again.
    pub fn invite_at(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        call: u64,
        (number, user): (Option<&[u8]>, Option<&[u8]>),
        in_dialog: bool,
        queued: bool,
    ) -> (Vec<Violation>, bool) {
        if in_dialog || self.cfg.rules.is_empty() {
            return (Vec::new(), false);
        }
        let key = (src, call);
        if queued && self.dropped.get(&key).is_some() {
            return (Vec::new(), true);
        }
        let user = user.map(|u| String::from_utf8_lossy(u).into_owned());
        let number = number.unwrap_or_default();
        let existing = self.calls.get(&key).copied();
        let dest_key = self.hasher.hash_one(number);
        // A retry that dials somewhere else (100, challenged, then +882...
        // with the same Call-ID) is checked again for where it goes.
        let changed = existing.is_some_and(|c| c.dest != dest_key);
        let counting = |i: usize| existing.is_some_and(|c| c.rules & (1 << i) != 0);
        if queued {
            let user = user.as_deref();
            let broken: Vec<Violation> = self
                .cfg
                .rules
                .iter()
                .enumerate()
                .take(64)
                .filter(|&(i, rule)| {
                    rule.action == Act::Drop
                        && (changed || !counting(i))
                        && Self::applies(rule, src, user, &normalise(number, &rule.numbering))
                })
                .filter_map(|(i, rule)| {
                    let dest = normalise(number, &rule.numbering);
                    self.check(i, now, &dest, !counting(i))
                        .map(|reason| Violation { rule: i, reason })
                })
                .collect();
            if !broken.is_empty() {
                for v in &broken {
                    self.violations[v.rule] += 1;
                    self.dropped_by[v.rule] += 1;
                }
                // A retry after a challenge that is dropped ends its call.
                if existing.is_some() {
                    self.end(src, call);
                }
                self.dropped.insert(key, ());
                return (broken, true);
            }
        }
        let mut c = match existing {
            // The retry after a challenge: the same call.
            Some(mut c) => {
                c.challenged = None;
                c.dest = dest_key;
                c
            }
            None => {
                if self.calls.len() >= self.calls.capacity()
                    && let Some((_, old)) = self.calls.remove_lru()
                {
                    self.release(old.rules);
                    self.stats.evicted += 1;
                }
                self.stats.started += 1;
                self.timers.push(Reverse((
                    now.plus(self.cfg.max_duration),
                    src,
                    call,
                    Due::MaxDuration,
                )));
                self.timers
                    .push(Reverse((now.plus(ANSWER_WITHIN), src, call, Due::NoAnswer)));
                self.compact_timers();
                Call {
                    rules: 0,
                    started: now,
                    challenged: None,
                    has_user: false,
                    answered: false,
                    dest: dest_key,
                    session_until: None,
                }
            }
        };
        let mut out = Vec::new();
        // Rules not yet counting this call that apply now (a `user:` rule
        // starts applying at the retry that carries the credentials).
        for (i, rule) in self.cfg.rules.iter().enumerate().take(64) {
            if counting(i) && !changed {
                continue;
            }
            let dest = normalise(number, &rule.numbering);
            if !Self::applies(rule, src, user.as_deref(), &dest) {
                continue;
            }
            // A rule already counting the call is asked only about the new
            // destination (its own count holds this call already).
            if let Some(reason) = self.check(i, now, &dest, !counting(i)) {
                out.push(Violation { rule: i, reason });
            }
            c.rules |= 1 << i;
        }
        for v in &out {
            self.violations[v.rule] += 1;
        }
        for i in 0..self.active.len() {
            if c.rules & (1 << i) != 0 && existing.is_none_or(|e| e.rules & (1 << i) == 0) {
                self.active[i] += 1;
                let r = &mut self.recent[i];
                while r.front().is_some_and(|t| now.since(*t) >= WINDOW) {
                    r.pop_front();
                }
                if r.len() < 10_000 {
                    r.push_back(now);
                }
            }
        }
        c.has_user |= user.is_some();
        self.calls.insert(key, c);
        (out, false)
    }

    /// Any response the host sent to the call's INVITE (100 Trying, 180
    /// Ringing included): the PBX took the call.
    pub fn provisional(&mut self, src: IpAddr, call: u64) {
        if let Some(c) = self.calls.get_mut(&(src, call)) {
            c.answered = true;
        }
    }

    /// A session-timer refresh from the caller (an in-dialog INVITE or
    /// UPDATE carrying `Session-Expires`): the call is alive for that
    /// interval (plus a grace for the network), even past the maximum
    /// duration.
    pub fn refresh(&mut self, now: Timestamp, src: IpAddr, call: u64, secs: u32) {
        let Some(c) = self.calls.get_mut(&(src, call)) else {
            return;
        };
        // RFC 4028's minimum is 90 s; one refresh keeps a call at most a
        // maximum duration (the PBX has not accepted it yet).
        let cap = (self.cfg.max_duration / 1000).clamp(90, 86_400);
        let secs = u64::from(secs).clamp(90, cap);
        let until = now.plus(secs * 1000 + SESSION_GRACE);
        c.session_until = Some(until);
    }

    /// A final answer the host sent to an INVITE of `src`.
    pub fn answer(&mut self, now: Timestamp, src: IpAddr, call: u64, code: u16) {
        let key = (src, call);
        self.provisional(src, call);
        match code {
            200..=299 => {}
            401 | 407 => {
                if let Some(c) = self.calls.get_mut(&key) {
                    c.challenged = Some(now);
                    self.timers
                        .push(Reverse((now.plus(RETRY_WITHIN), src, call, Due::Retry)));
                }
            }
            300.. => self.end(src, call),
            _ => {}
        }
    }

    /// The call ended (BYE, CANCEL, a final refusal).
    pub fn end(&mut self, src: IpAddr, call: u64) {
        if let Some(c) = self.calls.remove(&(src, call)) {
            self.release(c.rules);
        }
    }

    fn release(&mut self, rules: u64) {
        for i in 0..self.active.len() {
            if rules & (1 << i) != 0 {
                self.active[i] = self.active[i].saturating_sub(1);
            }
        }
    }

    /// Timers due at `now`: calls past the maximum duration, challenges
    /// never retried.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&Reverse((due, src, call, kind))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.calls.peek(&(src, call)).copied() else {
                continue;
            };
            match kind {
                Due::MaxDuration if now.since(c.started) >= self.cfg.max_duration => {
                    match c.session_until {
                        // Refreshed lately: alive; looked at again when
                        // that runs out.
                        Some(until) if until > now => {
                            self.stats.kept_by_refresh += 1;
                            self.timers
                                .push(Reverse((until, src, call, Due::MaxDuration)));
                        }
                        _ => {
                            self.stats.timed_out += 1;
                            self.end(src, call);
                        }
                    }
                }
                Due::Retry if c.challenged.is_some_and(|t| now.since(t) >= RETRY_WITHIN) => {
                    self.end(src, call);
                }
                Due::NoAnswer if !c.answered => {
                    self.stats.unanswered += 1;
                    self.end(src, call);
                }
                _ => {}
            }
        }
        self.compact_timers();
    }

    /// Timers of evicted or ended calls stay in the heap until due (hours
    /// for the maximum duration): under a flood of new calls that is many.
    /// Compacted when it outgrows what the followed calls can hold.
    fn compact_timers(&mut self) {
        if self.timers.len() > 4 * self.calls.capacity() + 1024 {
            let calls = &self.calls;
            self.timers
                .retain(|Reverse((_, s, c, _))| calls.peek(&(*s, *c)).is_some());
        }
    }

    /// When [`CallGuard::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.peek().map(|Reverse((t, ..))| *t)
    }

    /// The guard's own bookkeeping agrees with itself: each rule's count
    /// is the number of followed calls it counts, and the calls fit their
    /// bound (property tests and the fuzz target check it after every
    /// step).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.calls.len() > self.calls.capacity() {
            return Err(format!(
                "{} calls over the bound {}",
                self.calls.len(),
                self.calls.capacity()
            ));
        }
        for (i, &n) in self.active.iter().enumerate() {
            let held = self
                .calls
                .iter()
                .filter(|(_, c)| c.rules & (1 << i) != 0)
                .count();
            if held != n as usize {
                return Err(format!("rule {i}: count {n}, calls holding it {held}"));
            }
        }
        Ok(())
    }

    /// Drives the guard with an op stream read from bytes (the fuzz target
    /// and the property test share it): invites, answers, ends, time
    /// steps, from a few sources and calls. Returns after the bytes end.
    pub fn run_ops(&mut self, bytes: &[u8], mut now: Timestamp) -> Result<(), String> {
        let numbers: [&[u8]; 4] = [b"+442079460000", b"0088212345", b"1001", b"+15551234"];
        let users: [Option<&[u8]>; 3] = [None, Some(b"1042"), Some(b"2000")];
        for op in bytes.chunks(3) {
            let &[kind, a, b] = op else { break };
            let src = IpAddr::from([203, 0, 113, a % 8]);
            let call = u64::from(b % 16);
            match kind % 6 {
                0 | 1 => {
                    // Half the INVITEs come from the inline queue.
                    let _ = self.invite_at(
                        now,
                        src,
                        call,
                        (Some(numbers[usize::from(b % 4)]), users[usize::from(a % 3)]),
                        kind % 6 == 1 && a % 5 == 0,
                        kind & 0x40 != 0,
                    );
                }
                2 => self.answer(
                    now,
                    src,
                    call,
                    [200, 401, 407, 486, 603, 180][usize::from(a % 6)],
                ),
                3 => self.end(src, call),
                4 => {
                    now = now.plus(u64::from(a) * 1000 + u64::from(b));
                    self.handle_timeout(now);
                }
                _ if a & 1 == 1 => self.refresh(now, src, call, 90 + u32::from(b)),
                _ => now = now.plus(u64::from(a)),
            }
            self.check_invariants()?;
        }
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> CallStats {
        CallStats {
            calls: self.calls.len() as u64,
            rules: self
                .cfg
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| RuleView {
                    name: r.name.clone(),
                    active: self.active.get(i).copied().unwrap_or(0),
                    violations: self.violations.get(i).copied().unwrap_or(0),
                    dropped: self.dropped_by.get(i).copied().unwrap_or(0),
                })
                .collect(),
            ..self.stats.clone()
        }
    }
}

/// A rule that limits nothing yet and applies to every call, reading
/// numbers the UK way (tests, the fuzz target, the memory test build on it).
pub fn plain_rule(name: &str) -> CallRule {
    CallRule {
        name: name.into(),
        from: Vec::new(),
        to: Vec::new(),
        deny_to: Vec::new(),
        max_concurrent: None,
        max_per_minute: None,
        hours: None,
        action: Act::Alert,
        ban: 3_600_000,
        numbering: Numbering {
            country_code: Some("44".into()),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
        },
    }
}

/// A guard with a few rules of every kind, small bounds (the fuzz target
/// and the property test).
pub fn test_guard(max_calls: usize) -> CallGuard {
    let rule = plain_rule;
    let mut all = rule("all");
    all.max_concurrent = Some(3);
    let mut users = rule("users");
    users.from = vec![Origin::User("1000".into(), "1099".into())];
    users.max_per_minute = Some(2);
    let mut premium = rule("premium");
    premium.deny_to = vec!["+882".into()];
    premium.to = vec!["+8".into()];
    let mut nets = rule("nets");
    nets.from = vec![Origin::Nets(vec![
        "203.0.113.0/30".parse().expect("literal"),
    ])];
    nets.max_concurrent = Some(1);
    let mut drop = rule("drop");
    drop.from = vec![Origin::Nets(vec![
        "203.0.113.4/30".parse().expect("literal"),
    ])];
    drop.max_concurrent = Some(2);
    drop.action = Act::Drop;
    CallGuard::new(
        CallConfig {
            rules: vec![all, users, premium, nets, drop],
            max_duration: 120_000,
            max_calls,
        },
        FixedState::with_seed(7),
    )
}

/// A named prefix list (`data/call/<name>.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixList {
    /// `premium`, `high-risk`.
    pub name: String,
    /// For humans.
    #[serde(default)]
    pub description: String,
    /// `+E.164` prefixes.
    pub prefixes: Vec<String>,
    /// Numbers and whether the list holds them (tested).
    #[serde(default)]
    pub example: Vec<ListExample>,
}

/// A number and whether its list holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListExample {
    /// The number, `+E.164`.
    pub number: String,
    /// Whether a prefix of the list matches it.
    pub listed: bool,
}

include!(concat!(env!("OUT_DIR"), "/builtin_call.rs"));

/// Parses a prefix list file; every prefix must be `+` and digits.
pub fn parse_list(text: &str) -> Result<PrefixList, String> {
    let l: PrefixList = toml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(p) = l
        .prefixes
        .iter()
        .find(|p| p.len() < 2 || !p.starts_with('+') || !p[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "list `{}`: `{p}` is not a `+` and digits prefix",
            l.name
        ));
    }
    Ok(l)
}

/// The built-in prefix lists.
pub fn builtin_lists() -> Vec<PrefixList> {
    BUILTIN_CALL_LISTS
        .iter()
        .filter_map(|(_, text)| parse_list(text).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> CallRule {
        plain_rule(name)
    }

    fn guard(rules: Vec<CallRule>) -> CallGuard {
        CallGuard::new(
            CallConfig {
                rules,
                max_duration: 4 * 3_600_000,
                max_calls: 1000,
            },
            FixedState::with_seed(1),
        )
    }

    const T0: Timestamp = Timestamp(1_767_225_600_000); // 2026-01-01 00:00 UTC, a Thursday

    #[test]
    fn refreshes_keep_a_call_past_the_maximum_duration_and_silence_ends_nothing_early() {
        let mut r = rule("trunk");
        r.max_concurrent = Some(5);
        let mut g = CallGuard::new(
            CallConfig {
                rules: vec![r],
                max_duration: 600_000,
                max_calls: 100,
            },
            FixedState::with_seed(1),
        );
        let src: IpAddr = "203.0.113.2".parse().unwrap();
        let _ = g.invite(T0, src, 1, Some(b"+442079460000"), None, false);
        let _ = g.invite(T0, src, 2, Some(b"+442079460000"), None, false);
        g.answer(T0, src, 1, 200);
        g.answer(T0, src, 2, 200);
        // Call 2's caller refreshes once (90 s) and goes quiet: it still
        // counts until the maximum duration. Call 1's refreshes every
        // 45 s for 15 minutes: it counts past the maximum duration.
        g.refresh(T0.plus(10_000), src, 2, 90);
        let mut t = T0;
        for _ in 0..20 {
            t = t.plus(45_000);
            g.refresh(t, src, 1, 90);
            g.handle_timeout(t);
            if t.since(T0) < 600_000 {
                assert_eq!(g.stats().rules[0].active, 2, "at {}", t.since(T0));
            }
        }
        let s = g.stats();
        assert_eq!((s.rules[0].active, s.timed_out), (1, 1));
        assert!(s.kept_by_refresh >= 1);
        // The refreshes stop: once their interval and the grace pass, the
        // maximum duration ends it.
        g.handle_timeout(t.plus(90_000 + SESSION_GRACE - 1));
        assert_eq!(g.stats().rules[0].active, 1);
        g.handle_timeout(t.plus(90_000 + SESSION_GRACE));
        let s = g.stats();
        assert_eq!((s.rules[0].active, s.timed_out, s.calls), (0, 2, 0));
        g.check_invariants().unwrap();
    }

    #[test]
    fn a_reload_keeps_the_calls_of_unchanged_rules() {
        let mut a = rule("trunk-a");
        a.max_concurrent = Some(3);
        let mut b = rule("office");
        b.max_concurrent = Some(10);
        let mut g = guard(vec![a.clone(), b.clone()]);
        let src: IpAddr = "203.0.113.2".parse().unwrap();
        for c in 0..4 {
            let _ = g.invite(T0, src, c, Some(b"+44"), None, false);
            g.provisional(src, c);
        }
        // The new policy: trunk-a unchanged (now second), office scoped
        // to other destinations, a new rule.
        b.to = vec!["+1".into()];
        let new = rule("new");
        let mut n = guard(vec![new, a, b]);
        n.adopt(g);
        let s = n.stats();
        let by = |name: &str| s.rules.iter().find(|r| r.name == name).unwrap().clone();
        assert_eq!((by("trunk-a").active, by("trunk-a").violations), (4, 1));
        assert_eq!((by("office").active, by("new").active), (0, 0));
        assert_eq!((s.calls, s.started), (4, 4));
        n.check_invariants().unwrap();
        // The next call still breaks trunk-a, and a BYE still frees a slot.
        assert_eq!(n.invite(T0, src, 9, Some(b"+44"), None, false).len(), 1);
        n.end(src, 0);
        assert_eq!(n.stats().rules[1].active, 4);
        n.check_invariants().unwrap();
    }

    #[test]
    fn a_retry_that_dials_elsewhere_is_checked_again() {
        let mut deny = rule("no-premium");
        deny.deny_to = vec!["+882".into()];
        deny.max_concurrent = Some(1);
        deny.action = Act::Drop;
        let mut g = guard(vec![deny]);
        let src: IpAddr = "203.0.113.2".parse().unwrap();
        let (ok, premium) = (Some(&b"100"[..]), Some(&b"0088212345"[..]));
        assert_eq!(
            g.invite_at(T0, src, 1, (ok, None), false, true),
            (vec![], false)
        );
        g.answer(T0, src, 1, 407);
        // The authenticated retry dials a premium number: dropped, and
        // its own count (one call, itself) is no violation.
        let (v, drop) = g.invite_at(T0, src, 1, (premium, Some(b"1000")), false, true);
        assert!(
            drop && v.len() == 1 && v[0].reason.contains("forbidden"),
            "{v:?}"
        );
        assert_eq!(g.stats().rules[0].active, 0);
        // Passive: the same shape is reported.
        assert!(g.invite(T0, src, 2, ok, None, false).is_empty());
        g.answer(T0, src, 2, 407);
        let v = g.invite(T0, src, 2, premium, Some(b"1000"), false);
        assert!(v.len() == 1 && v[0].reason.contains("forbidden"), "{v:?}");
        assert_eq!(g.stats().rules[0].active, 1);
        // A plain retry to the same number is not checked again.
        assert!(
            g.invite(T0, src, 2, premium, Some(b"1000"), false)
                .is_empty()
        );
        g.check_invariants().unwrap();
    }

    #[test]
    fn a_call_the_host_never_answers_ends_after_32_seconds() {
        let mut r = rule("trunk");
        r.max_concurrent = Some(2);
        let mut g = guard(vec![r]);
        let src: IpAddr = "203.0.113.2".parse().unwrap();
        // Forged INVITEs the PBX never answers; one it rings for a minute.
        let _ = g.invite(T0, src, 1, Some(b"+44"), None, false);
        let _ = g.invite(T0, src, 2, Some(b"+44"), None, false);
        g.provisional(src, 2);
        g.handle_timeout(T0.plus(ANSWER_WITHIN - 1));
        assert_eq!(g.stats().rules[0].active, 2);
        g.handle_timeout(T0.plus(ANSWER_WITHIN));
        let s = g.stats();
        assert_eq!((s.rules[0].active, s.unanswered), (1, 1));
        // Ringing still, then answered: it counts throughout.
        g.handle_timeout(T0.plus(60_000));
        g.answer(T0.plus(60_000), src, 2, 200);
        assert_eq!(g.stats().rules[0].active, 1);
        g.check_invariants().unwrap();
    }

    #[test]
    fn inline_drops_count_nothing_and_stay_dropped() {
        let mut r = rule("trunk");
        r.max_concurrent = Some(1);
        r.action = Act::Drop;
        let mut g = guard(vec![r]);
        let src: IpAddr = "203.0.113.2".parse().unwrap();
        let to = (Some(&b"+442079460000"[..]), None);
        assert_eq!(g.invite_at(T0, src, 1, to, false, true), (vec![], false));
        let (v, drop) = g.invite_at(T0, src, 2, to, false, true);
        assert!(drop && v.len() == 1 && v[0].reason.contains("max_concurrent = 1"));
        // Its retransmission: dropped, not counted again.
        assert_eq!(g.invite_at(T0, src, 2, to, false, true), (vec![], true));
        let s = g.stats();
        assert_eq!((s.calls, s.rules[0].active), (1, 1));
        assert_eq!((s.rules[0].violations, s.rules[0].dropped), (1, 1));
        // A re-INVITE of the call that is up is never held.
        assert_eq!(g.invite_at(T0, src, 1, to, true, true), (vec![], false));
        // The same INVITE seen another way (TCP) breaks the rule, counts,
        // and is not dropped.
        let (v, drop) = g.invite_at(T0, src, 3, to, false, false);
        assert!(!drop && v.len() == 1);
        assert_eq!(g.stats().rules[0].active, 2);
        g.end(src, 1);
        g.end(src, 3);
        // After the BYEs a new call goes through.
        assert_eq!(g.invite_at(T0, src, 4, to, false, true), (vec![], false));
        g.check_invariants().unwrap();
    }

    #[test]
    fn numbers_normalise_to_e164() {
        let n = rule("x").numbering;
        assert_eq!(normalise(b"+44 20 7946 0000", &n), "+442079460000");
        assert_eq!(normalise(b"00882123", &n), "+882123");
        assert_eq!(normalise(b"02079460000", &n), "+442079460000");
        assert_eq!(normalise(b"1001", &n), "1001");
        assert_eq!(normalise(b"+1-555;phone-context=x", &n), "+1555");
    }

    #[test]
    fn the_fourth_concurrent_call_breaks_max_concurrent_and_a_bye_frees_a_slot() {
        let mut r = rule("trunk-a");
        r.max_concurrent = Some(3);
        let mut g = guard(vec![r]);
        let src: IpAddr = "203.0.113.20".parse().unwrap();
        for c in 0..3 {
            assert!(g.invite(T0, src, c, Some(b"+4420"), None, false).is_empty());
            g.provisional(src, c);
        }
        let v = g.invite(T0, src, 3, Some(b"+4420"), None, false);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].reason.contains("max_concurrent = 3"));
        // A retransmission of the same INVITE is the same call.
        assert_eq!(g.invite(T0, src, 3, Some(b"+4420"), None, false).len(), 0);
        assert_eq!(g.stats().rules[0].active, 4);
        g.end(src, 0);
        g.end(src, 3);
        assert!(g.invite(T0, src, 9, Some(b"+4420"), None, false).is_empty());
        // A refused call frees its slot; a challenge does not until it lapses.
        g.answer(T0, src, 9, 486);
        assert_eq!(g.stats().rules[0].active, 2);
        g.answer(T0, src, 1, 407);
        g.handle_timeout(T0.plus(RETRY_WITHIN));
        assert_eq!(g.stats().rules[0].active, 1);
        assert_eq!(g.stats().rules[0].violations, 1);
    }

    #[test]
    fn forbidden_destinations_hours_per_minute_and_users() {
        let mut deny = rule("no-premium");
        deny.deny_to = vec!["+882".into()];
        let mut hours = rule("office");
        hours.hours = Some(Hours {
            days: [true, true, true, true, true, false, false],
            start_min: 8 * 60,
            end_min: 18 * 60,
            tz: jiff::tz::TimeZone::UTC,
            text: "Mon-Fri 08:00-18:00 UTC".into(),
        });
        hours.from = vec![Origin::User("1000".into(), "1099".into())];
        let mut rate = rule("rate");
        rate.max_per_minute = Some(2);
        rate.to = vec!["+1".into()];
        let mut g = guard(vec![deny, hours, rate]);
        let src: IpAddr = "198.51.100.9".parse().unwrap();
        let v = g.invite(T0, src, 1, Some(b"00882123"), None, false);
        assert_eq!(v.iter().map(|v| v.rule).collect::<Vec<_>>(), [0]);
        // 00:00 on a Thursday: outside office hours, for users 1000-1099
        // only, known at the authenticated retry.
        assert!(g.invite(T0, src, 2, Some(b"+4420"), None, false).is_empty());
        g.answer(T0, src, 2, 407);
        let v = g.invite(T0, src, 2, Some(b"+4420"), Some(b"1042"), false);
        assert_eq!(v.iter().map(|v| v.rule).collect::<Vec<_>>(), [1]);
        let noon = T0.plus(12 * 3_600_000);
        assert!(
            g.invite(noon, src, 3, Some(b"+4420"), Some(b"1042"), false)
                .is_empty()
        );
        assert!(
            g.invite(noon, src, 4, Some(b"+4420"), Some(b"2000"), false)
                .is_empty()
        );
        // Saturday noon.
        let sat = T0.plus(2 * 86_400_000 + 12 * 3_600_000);
        assert_eq!(
            g.invite(sat, src, 5, Some(b"+4420"), Some(b"1001"), false)
                .len(),
            1
        );
        // Per minute, for calls to +1 only.
        for c in 10..12 {
            assert!(
                g.invite(noon, src, c, Some(b"+15551234"), None, false)
                    .is_empty()
            );
        }
        assert_eq!(
            g.invite(noon, src, 12, Some(b"+15551234"), None, false)
                .len(),
            1
        );
        assert!(
            g.invite(noon.plus(WINDOW), src, 13, Some(b"+15551234"), None, false)
                .is_empty()
        );
        // A re-INVITE inside a dialog is no new call.
        assert!(
            g.invite(noon, src, 14, Some(b"00882"), None, true)
                .is_empty()
        );
    }

    #[test]
    fn calls_never_ended_are_bounded_by_the_maximum_duration_and_the_lru() {
        let mut r = rule("all");
        r.max_concurrent = Some(1_000_000);
        let mut g = CallGuard::new(
            CallConfig {
                rules: vec![r],
                max_duration: 60_000,
                max_calls: 100,
            },
            FixedState::with_seed(1),
        );
        for c in 0..1000u64 {
            let src = IpAddr::from([203, 0, 113, u8::try_from(c % 200).unwrap()]);
            g.invite(T0, src, c, Some(b"+44"), None, false);
            g.provisional(src, c);
        }
        let s = g.stats();
        assert_eq!((s.calls, s.evicted, s.rules[0].active), (100, 900, 100));
        g.handle_timeout(T0.plus(60_000));
        let s = g.stats();
        assert_eq!((s.calls, s.timed_out, s.rules[0].active), (0, 100, 0));
    }

    #[test]
    fn the_builtin_lists_hold_their_examples() {
        let lists = builtin_lists();
        assert_eq!(
            lists.len(),
            BUILTIN_CALL_LISTS.len(),
            "a list did not parse"
        );
        for l in &lists {
            for e in &l.example {
                let hit = l.prefixes.iter().any(|p| e.number.starts_with(p.as_str()));
                assert_eq!(hit, e.listed, "{}: {}", l.name, e.number);
            }
            assert!(l.prefixes.iter().all(|p| p.starts_with('+')), "{}", l.name);
        }
    }
}
