//! The judge: events and a clock in, actions and the next deadline out.
//!
//! Sans-IO in the quinn manner: [`Engine::handle_event`] and
//! [`Engine::handle_timeout`] feed it, [`Engine::poll_action`] and
//! [`Engine::poll_timeout`] drain it. `now` is always an argument, so a log
//! replay (the log's timestamps), live traffic (packet time) and a test (a
//! scripted clock) run the same code.
//!
//! Memory is bounded: per-source state, known endpoints and ban records live
//! in LRU maps of configured size; eviction is counted. Per-source state is
//! itself bounded (timestamps up to the largest threshold, a few outstanding
//! transactions and challenges, a few evidence items).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use foldhash::fast::FixedState;
use hashlink::LruCache;
use ipnet::IpNet;
use serde::Serialize;

use crate::event::{Event, EventKind, Request, Response};
use crate::rules::{Recidive, Rule, RuleKind, RuleSet};
use crate::time::{Timestamp, format_duration};

/// Engine settings beyond the rules.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rules and recidive ladder.
    pub rules: RuleSet,
    /// IPv4 sources are counted and banned per prefix of this length (32: per address).
    pub group_v4: u8,
    /// IPv6 sources are counted and banned per prefix of this length (64 by default).
    pub group_v6: u8,
    /// IPv6 bans cover the offending address alone until this many distinct
    /// addresses of one `group_v6` prefix were banned within
    /// `v6_escalate_within` (ms); then the prefix. 1: the prefix at once.
    pub v6_escalate_after: u32,
    /// See `v6_escalate_after`, ms.
    pub v6_escalate_within: u64,
    /// Never banned: own addresses, loopback, allow list, trusted networks,
    /// management networks, trunks. A would-be ban becomes an alert.
    pub never_ban: Vec<IpNet>,
    /// Most sources (groups) tracked at once; the least recently seen is evicted.
    pub max_sources: usize,
    /// Most ban records kept for recidive and explain (the kernel and the
    /// store hold bans regardless).
    pub max_bans: usize,
    /// Most registered endpoints remembered.
    pub max_known: usize,
    /// Registration lifetime assumed when neither request nor response says (ms).
    pub known_default_ttl: u64,
    /// Longest registration lifetime honoured (ms); longer ones are cut.
    pub known_max_ttl: u64,
    /// How long a request waits for its response before it is forgotten (ms).
    pub transaction_timeout: u64,
    /// Seed for hashing attacker-chosen values (Call-IDs, users). The driver
    /// passes a random one; tests a fixed one.
    pub hash_seed: u64,
    /// Most accounts whose failed authentications are counted at once (the
    /// least recently failed is evicted, counted).
    pub max_accounts: usize,
    /// How long an endpoint that registered is remembered after its
    /// registration (ms): account shields alert instead of banning it.
    pub remember_ms: u64,
    /// IPv4 neighbourhoods (off: `None`): once this many addresses of one
    /// prefix of this length were banned by account shields within the
    /// rule's window, the prefix is banned (remembered endpoints spared
    /// by the kernel, as for every prefix ban).
    pub shield_v4: Option<(u8, u32)>,
    /// Call rules (`[call]`); `None`: calls are not followed.
    pub call: Option<crate::calls::CallConfig>,
}

impl Config {
    /// The built-in rules with the defaults of DESIGN.md section 3.
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules,
            group_v4: 32,
            group_v6: 64,
            v6_escalate_after: 3,
            v6_escalate_within: 600_000,
            never_ban: ["127.0.0.0/8", "::1/128"]
                .iter()
                .map(|s| s.parse().expect("literal network"))
                .collect(),
            max_sources: 100_000,
            max_bans: 100_000,
            max_known: 100_000,
            known_default_ttl: 3_600_000,
            known_max_ttl: 86_400_000,
            transaction_timeout: 32_000,
            hash_seed: 0x5eed_f00d,
            max_accounts: 65_536,
            remember_ms: 0,
            shield_v4: None,
            call: None,
        }
    }
}

/// How long after a ban starts (and before it ends) a packet from its
/// source may still be in flight (queued in NFLOG) rather than proof that
/// the kernel lost the ban, ms.
pub const REASSERT_GRACE: u64 = 2_000;
/// At most one [`Action::Reassert`] per ban this often, ms.
pub const REASSERT_EVERY: u64 = 10_000;

/// What the engine asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Ban a source address or prefix.
    Ban(Ban),
    /// Mark an address as a registered endpoint until `until` (it skips the
    /// prefix-ban lookup and the rules with `spare_known`).
    Promote {
        /// The endpoint.
        addr: IpAddr,
        /// When it happened.
        at: Timestamp,
        /// Registration end.
        until: Timestamp,
    },
    /// The endpoint unregistered (Expires: 0).
    Demote {
        /// The endpoint.
        addr: IpAddr,
        /// When it happened.
        at: Timestamp,
    },
    /// A packet from a source the engine holds banned reached detection:
    /// the kernel does not hold the ban any more (another tool removed it).
    /// The driver puts it back; only [`Engine::handle_packet`] emits this.
    Reassert(Ban),
    /// An account crossed the account-guessing threshold: it is shielded
    /// until `until` (extended while failures continue).
    Shield(ShieldView),
    /// A shield ended (no failure on the account for the shield's length).
    ShieldEnd(ShieldView),
    /// A rule fired against a source that must not be banned.
    Alert {
        /// The source.
        addr: IpAddr,
        /// Rule id.
        rule: String,
        /// When it happened.
        at: Timestamp,
        /// Why no ban was made.
        message: String,
        /// Alerts of the same source and rule folded into this one: 0 for
        /// the first of a window; at the window's end, one alert reports
        /// how many more there were (so a forged flood from a protected
        /// address is two log lines a minute, not one per packet).
        repeats: u64,
    },
}

/// A ban decision, with everything `explain` and the store need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Ban {
    /// Address (full-length prefix) or prefix banned.
    #[schemars(with = "String")]
    pub target: IpNet,
    /// The address whose event crossed the threshold.
    pub offender: IpAddr,
    /// Rule id.
    pub rule: String,
    /// When the threshold was crossed.
    pub at: Timestamp,
    /// When the ban ends.
    pub until: Timestamp,
    /// `until - at`, ms.
    pub ttl: u64,
    /// 0 for a first ban; n for the n-th repeat within the recidive window.
    pub level: u32,
    /// One sentence for humans.
    pub reason: String,
    /// The shielded account whose failures led to the ban (account
    /// guessing): the digest username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The events that led to it, oldest first.
    pub evidence: Vec<Evidence>,
    /// Whether the evidence proves the source receives at its address (a
    /// failed authentication answering a nonce issued to it). An unverified
    /// ban is short and never escalates recidive.
    #[serde(default = "yes")]
    pub verified: bool,
}

fn yes() -> bool {
    true
}

/// One event kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Evidence {
    /// When.
    pub at: Timestamp,
    /// From which address.
    pub src: IpAddr,
    /// What (`auth failed for 1001`).
    pub what: String,
    /// Which source reported it (`nflog`, `asterisk-security`).
    pub origin: String,
    /// For failed authentications and undecodable requests: whether the
    /// event proves the source receives at its address (its credentials
    /// answered a nonce issued to it). `None` where that does not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

/// Counters for metrics and tests.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Stats {
    /// Events handled.
    pub events: u64,
    /// Events from currently banned sources (the kernel would have dropped them).
    pub suppressed: u64,
    /// Responses that matched no outstanding request.
    pub unmatched_responses: u64,
    /// Bans issued.
    pub bans: u64,
    /// Alerts issued.
    pub alerts: u64,
    /// Alerts folded into an earlier one of the same source and rule
    /// (reported once per window, with their count).
    #[serde(default)]
    pub alerts_folded: u64,
    /// Promotions to known.
    pub promotions: u64,
    /// Sources evicted to respect `max_sources`.
    pub evicted_sources: u64,
    /// Sources tracked now.
    pub tracked_sources: u64,
    /// Timers waiting now.
    pub timers: u64,
    /// Times the timer heap was compacted (a flood of challenged sources).
    pub timer_compactions: u64,
    /// Bans found missing from the kernel (a packet from a banned source
    /// arrived) and asked back.
    pub reasserted: u64,
    /// Accounts whose failures are being counted now.
    #[serde(default)]
    pub tracked_accounts: u64,
    /// INVITEs the call guard dropped at the inline queue.
    #[serde(default)]
    pub calls_dropped: u64,
    /// Accounts evicted to respect `max_accounts`.
    #[serde(default)]
    pub evicted_accounts: u64,
    /// Account shields started.
    #[serde(default)]
    pub shields: u64,
    /// Account shields active now.
    #[serde(default)]
    pub shields_active: u64,
}

/// A shielded account, for `status`, events and notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ShieldView {
    /// The digest username (the realm is the client's to write), or
    /// `(several credentials)` for requests carrying more than one.
    pub account: String,
    /// When the shield started.
    pub since: Timestamp,
    /// When it ends unless failures continue.
    pub until: Timestamp,
    /// Failed authentications on the account since the threshold's window
    /// began (those that started the shield, and every one since).
    pub failures: u64,
    /// Distinct sources among the failures that started it.
    pub sources: u32,
    /// Sources banned under it.
    pub bans: u64,
    /// Failures under it that only alerted (unverified, or from a source
    /// that must not be banned).
    pub alerts: u64,
}

/// What the engine knows about an address, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Explanation {
    /// The address asked about.
    pub addr: IpAddr,
    /// The group it is counted in.
    #[schemars(with = "String")]
    pub group: IpNet,
    /// The ban that applies to it now, if any.
    pub banned: Option<Ban>,
    /// Registered until, if it is a known endpoint now.
    pub known_until: Option<Timestamp>,
    /// Whether it is in a never-ban network.
    pub protected: bool,
    /// Ban records (current and past) for its address and group.
    pub bans: Vec<Ban>,
    /// Per rule: events currently inside each threshold's window.
    pub counters: Vec<CounterView>,
}

/// A rule's progress for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CounterView {
    /// Rule id.
    pub rule: String,
    /// `(events in window, threshold count, window ms)` per threshold.
    pub progress: Vec<(u32, u32, u64)>,
    /// Recent events.
    pub evidence: Vec<Evidence>,
}

/// A user name or number kept inline (truncated at 30 bytes): no allocation
/// per event.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Short {
    len: u8,
    buf: [u8; 30],
}

impl Short {
    fn new(v: Option<&[u8]>) -> Self {
        let mut s = Self::default();
        if let Some(v) = v {
            let n = v.len().min(s.buf.len());
            s.buf[..n].copy_from_slice(&v[..n]);
            s.len = u8::try_from(n).expect("at most 30");
        }
        s
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    fn show(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    AuthFailed,
    Challenge,
    Scanner,
    Unknown,
    Toll,
    Flood,
    Requests,
    Undecodable,
    Malformed,
    ApiToken,
}

#[derive(Clone)]
struct Ev {
    at: Timestamp,
    src: IpAddr,
    what: What,
    user: Short,
    /// Index into `Engine::origins`.
    origin: u8,
    /// Verified or not, where the rule weighs it.
    proof: Option<bool>,
}

impl Ev {
    fn render(&self, origins: &[String]) -> Evidence {
        let user = self.user.show();
        let what = match self.what {
            What::AuthFailed if user.is_empty() => "authentication failed".to_string(),
            What::AuthFailed => format!("authentication failed for {user}"),
            What::Challenge if user.is_empty() => "challenge not answered".to_string(),
            What::Challenge => format!("challenge for {user} not answered"),
            What::Scanner => format!("scanner user agent {user:?}"),
            What::Unknown => format!("unknown user {user}"),
            What::Toll => format!("unauthenticated call to {user} refused"),
            What::Flood => "the PBX's rate limiter flagged it".to_string(),
            What::Requests => format!("request {user}"),
            What::Undecodable => "undecodable request the PBX answered".to_string(),
            What::Malformed => "the PBX dropped a malformed request".to_string(),
            What::ApiToken => "a wrong token to voipwall's HTTP API".to_string(),
        };
        Evidence {
            at: self.at,
            src: self.src,
            what,
            origin: origins
                .get(usize::from(self.origin))
                .cloned()
                .unwrap_or_else(|| "other".into()),
            verified: self.proof,
        }
    }
}

/// A counting rule's state for one group.
struct Counter {
    rule: u8,
    /// Timestamps of counted events (distinct users for enumeration), newest last.
    times: VecDeque<(Timestamp, u64)>,
    evidence: VecDeque<Ev>,
}

/// A request waiting for the host's final response.
#[derive(Clone, Copy)]
struct Txn {
    src: IpAddr,
    call: u64,
    cseq: u64,
    method: u64,
    register: bool,
    invite: bool,
    has_auth: bool,
    /// Credentials answering a nonce the host issued to this source.
    verified: bool,
    user: Short,
    toll: bool,
    at: Timestamp,
    expires: Option<u32>,
    /// The account the credentials name (a hash of the user; 0: none) and
    /// how it is shown.
    account: u64,
    account_name: Short,
    /// The request came over a connection (TCP, TLS, WebSocket).
    stream: bool,
}

/// A challenge waiting for the authenticated retry.
#[derive(Clone, Copy)]
struct Pending {
    src: IpAddr,
    call: u64,
    /// When the challenge was sent.
    at: Timestamp,
    deadline: Timestamp,
    /// Counted already by the early check; an answer retracts the count.
    early: bool,
    user: Short,
    toll: bool,
}

#[derive(Default)]
struct Group {
    counters: Vec<Counter>,
    txns: Vec<Txn>,
    pending: Vec<Pending>,
    /// When a source of this group last answered a challenge.
    last_answered: Option<Timestamp>,
    /// The first request counted for request floods (see `count`).
    first_request: Option<Timestamp>,
}

/// One failed authentication for an account.
#[derive(Clone, Copy)]
struct Failure {
    at: Timestamp,
    src: IpAddr,
    verified: bool,
    origin: u8,
}

/// An account's recent failed authentications, across sources.
struct Account {
    name: Short,
    failures: VecDeque<Failure>,
}

/// A shielded account.
struct Shield {
    view: ShieldView,
    /// Ban length for a source failing on it.
    ban: u64,
}

/// Most accounts shielded at once (one that banned nobody is ended early
/// first).
const MAX_SHIELDS: usize = 4096;
/// Most accounts whose failures are all unverified, counted at once.
const MAX_UNPROVEN_ACCOUNTS: usize = 4096;
/// The pseudo-account of failures whose request carried several
/// credentials headers.
const SEVERAL_CREDENTIALS: &[u8] = b"(several credentials)";

/// Alerts of one source and rule within this long (ms) are one alert and a
/// count.
pub(crate) const ALERT_WINDOW: u64 = 60_000;
/// Alert windows open at once; the oldest is closed (and reported) early
/// beyond this.
const MAX_ALERT_WINDOWS: usize = 4096;

/// One open alert window.
#[derive(Debug, Clone)]
struct AlertWindow {
    end: Timestamp,
    message: String,
    folded: u64,
}

const MAX_TXNS: usize = 16;
/// A failed authentication seen in packets and in a log within this long of
/// each other, from the same source, is one failure (ms).
pub(crate) const SAME_FAILURE: u64 = 2_000;

/// Recent failed authentications of one source not yet paired with their
/// other sighting: by packet, by log.
#[derive(Default)]
struct Sightings {
    packet: VecDeque<Timestamp>,
    log: VecDeque<Timestamp>,
}

/// How soon after an undecodable request the PBX's answer must follow to
/// count it (ms).
const UNDECODABLE_ANSWER: u64 = 2_000;
/// How long an issued challenge nonce verifies credentials (ms).
const NONCE_TTL: u64 = 5 * 60_000;
/// The longest ban unverified evidence can make (ms), and it never
/// escalates: a forger must not be able to lock a source out for days.
pub const UNVERIFIED_BAN_TTL: u64 = 10 * 60_000;
const MAX_PENDING: usize = 32;
const MAX_EVIDENCE: usize = 8;

/// A timer: challenge `call` from `src` is due.
/// A timer: the challenge `call` from `src` is due; `true` for the early
/// check of a source that answers no challenges.
type Timer = (Timestamp, IpAddr, u64, bool);

/// A challenge a source has not answered after this long, while it has
/// answered none recently, counts at once: a phone answers within a round
/// trip, so a source that lets every challenge lapse is not a phone and
/// need not be given the whole `answer_within` per challenge.
const EARLY_GRACE_MS: u64 = 50;

/// Ids of challenges reported by logs (no Call-ID) have this bit set.
const LOG_CHALLENGE: u64 = 1 << 63;

/// The detection engine.
pub struct Engine {
    cfg: Config,
    agents: Option<(usize, AhoCorasick)>,
    groups: LruCache<IpNet, Group, FixedState>,
    known: LruCache<IpAddr, Timestamp, FixedState>,
    bans: LruCache<IpNet, Ban, FixedState>,
    /// Nonces the host issued in 401/407 challenges: hash → (to whom, when,
    /// whether it also went to another address). kamailio's and Asterisk's
    /// nonces are derived from the time, not the client: the same nonce
    /// goes to everyone challenged in the same second, so a nonce seen by
    /// two addresses proves neither receives anything.
    nonces: LruCache<u64, (IpAddr, Timestamp, bool), FixedState>,
    /// When each ban was last asked back into the kernel.
    reasserted: LruCache<IpNet, Timestamp, FixedState>,
    /// Sources whose last request could not be decoded, and when.
    undecodable: LruCache<IpAddr, Timestamp, FixedState>,
    /// Failed authentications per source, to count one seen twice once.
    sightings: LruCache<IpAddr, Sightings, FixedState>,
    /// IPv6: the addresses of each prefix banned recently (escalation).
    offenders: LruCache<IpNet, Vec<(IpAddr, Timestamp)>, FixedState>,
    timers: BinaryHeap<Reverse<Timer>>,
    actions: VecDeque<Action>,
    hasher: FixedState,
    /// Ids for challenges reported by logs.
    log_challenge_id: u64,
    /// Networks an operator allowed at runtime, with their end.
    allowed: Vec<(IpNet, Option<Timestamp>)>,
    /// Event origins seen (`nflog`, `asterisk-security`), interned so that
    /// evidence holds one byte per item instead of a string.
    origins: Vec<String>,
    /// Open alert windows per (source, rule), and their ends in order.
    alert_windows: LruCache<(IpAddr, String), AlertWindow, FixedState>,
    /// Window ends, earliest first (a heap: the driver's clock may step
    /// back); entries of windows closed early stay until compacted.
    alert_ends: BinaryHeap<Reverse<(Timestamp, IpAddr, String)>>,
    /// Failed authentications per account (keyed by a seeded hash of user
    /// and realm), across sources: distributed guessing.
    accounts: LruCache<u64, Account, FixedState>,
    /// Accounts with unverified failures only (a small table of their own).
    unproven: LruCache<u64, Account, FixedState>,
    /// Shielded accounts.
    shields: LruCache<u64, Shield, FixedState>,
    /// Shield ends, earliest first; an extended shield's old end is
    /// re-queued when it comes due.
    shield_ends: BinaryHeap<Reverse<(Timestamp, u64)>>,
    /// Endpoints that registered within `remember_ms`, with when that ends.
    remembered: LruCache<IpAddr, Timestamp, FixedState>,
    /// The call guard, when the policy has call rules.
    calls: Option<crate::calls::CallGuard>,
    /// While a queued INVITE is handled: `Some(true)` once it is to be
    /// dropped.
    queued: Option<bool>,
    stats: Stats,
}

impl Engine {
    /// Builds an engine. Disabled rules are kept (for `explain`) but never count.
    pub fn new(cfg: Config) -> Self {
        let hasher = FixedState::with_seed(cfg.hash_seed);
        let agents = cfg
            .rules
            .rules
            .iter()
            .position(|r| r.enabled && r.kind == RuleKind::Scanner)
            .map(|i| {
                let pats: Vec<&str> = cfg.rules.rules[i]
                    .agents
                    .iter()
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .collect();
                let ac = AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(pats)
                    .expect("a few short literal patterns always build");
                (i, ac)
            });
        let cap = |n: usize| n.max(1);
        Self {
            agents,
            groups: LruCache::with_hasher(cap(cfg.max_sources), hasher.clone()),
            known: LruCache::with_hasher(cap(cfg.max_known), hasher.clone()),
            bans: LruCache::with_hasher(cap(cfg.max_bans), hasher.clone()),
            reasserted: LruCache::with_hasher(1024, hasher.clone()),
            undecodable: LruCache::with_hasher(4096, hasher.clone()),
            sightings: LruCache::with_hasher(4096, hasher.clone()),
            offenders: LruCache::with_hasher(4096, hasher.clone()),
            nonces: LruCache::with_hasher(cap(cfg.max_sources.min(65_536)), hasher.clone()),
            timers: BinaryHeap::new(),
            actions: VecDeque::new(),
            alert_windows: LruCache::with_hasher(MAX_ALERT_WINDOWS, hasher.clone()),
            accounts: LruCache::with_hasher(cap(cfg.max_accounts), hasher.clone()),
            unproven: LruCache::with_hasher(MAX_UNPROVEN_ACCOUNTS, hasher.clone()),
            shields: LruCache::with_hasher(MAX_SHIELDS, hasher.clone()),
            shield_ends: BinaryHeap::new(),
            remembered: LruCache::with_hasher(cap(cfg.max_known), hasher.clone()),
            queued: None,
            calls: cfg
                .call
                .clone()
                .map(|c| crate::calls::CallGuard::new(c, hasher.clone())),
            hasher,
            log_challenge_id: 0,
            allowed: Vec::new(),
            origins: Vec::new(),
            alert_ends: BinaryHeap::new(),
            stats: Stats::default(),
            cfg,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This host hung up a call (its BYE or CANCEL to `peer`): the call
    /// guard stops counting it.
    pub fn host_hangup(&mut self, peer: IpAddr, call_id: &[u8]) {
        let call = self.hasher.hash_one(call_id);
        if let Some(g) = self.calls.as_mut() {
            g.end(peer, call);
        }
    }

    /// An INVITE held at the inline queue: handled like any packet, and
    /// the verdict: `true` drops it (a `drop` call rule broke). Bans are
    /// the kernel's to enforce, from the next packet on.
    pub fn handle_queued(&mut self, now: Timestamp, ev: &Event<'_>) -> bool {
        self.queued = Some(false);
        let was_banned = self.is_banned(ev.src, now);
        self.handle_packet(now, ev);
        // The kernel let in a source the engine holds banned (an endpoint
        // a prefix ban spares, a ban not in force yet): detection
        // suppresses it, but the call rules still judge its INVITE.
        if was_banned
            && self.calls.is_some()
            && let EventKind::Request(ref r) = ev.kind
        {
            let call = self.hasher.hash_one(r.call_id);
            let invite = r.method.eq_ignore_ascii_case(b"INVITE");
            self.call_request(now, ev.src, r, call, invite, ev.origin);
        }
        self.queued.take() == Some(true)
    }

    /// Feeds one event taken from a packet the kernel let in (NFLOG). A
    /// request from a source the engine holds banned means the kernel no
    /// longer drops it: the engine never silently suppresses such a source;
    /// it asks the ban back ([`Action::Reassert`], at most once per
    /// [`REASSERT_EVERY`] per ban). Packets within [`REASSERT_GRACE`] of the
    /// ban's start or end are in flight, not evidence.
    pub fn handle_packet(&mut self, now: Timestamp, ev: &Event<'_>) {
        if matches!(ev.kind, EventKind::Request(_))
            && let Some(b) = self.ban_for(ev.src, now)
            && now.since(b.at) >= REASSERT_GRACE
            && b.until.since(now) >= REASSERT_GRACE
        {
            let (target, ban) = (b.target, b.clone());
            let due = self
                .reasserted
                .peek(&target)
                .is_none_or(|&t| now.since(t) >= REASSERT_EVERY);
            if due {
                self.reasserted.insert(target, now);
                self.stats.reasserted += 1;
                self.actions.push_back(Action::Reassert(ban));
            }
        }
        self.handle_event(now, ev);
    }

    /// Feeds one event observed at `now`.
    pub fn handle_event(&mut self, now: Timestamp, ev: &Event<'_>) {
        self.stats.events += 1;
        let src = ev.src;
        if self.is_banned(src, now) {
            self.stats.suppressed += 1;
            return;
        }
        match ev.kind {
            EventKind::Request(ref r) => self.on_request(now, src, r, ev.origin),
            EventKind::Response(ref r) => self.on_response(now, src, r, ev.origin),
            EventKind::AuthFailed { user } => {
                self.answer_log_challenge(now, src);
                // A log line carries no nonce the engine can check: against
                // a registered endpoint it is unverified (a forger's UDP
                // REGISTERs produce the same line), against anyone else it
                // counts as before.
                let verified = !self.is_known(src, now);
                if !self.first_sighting(now, src, false) {
                    return;
                }
                // For an account's shield a log line is never proof: it
                // names no nonce, and one forged packet would frame its
                // source address.
                if let Some(u) = user.filter(|u| !u.is_empty()) {
                    let key = self.account_key(u);
                    if self.account_failure(now, src, key, Short::new(Some(u)), false, ev.origin) {
                        return;
                    }
                }
                self.count_kind(
                    now,
                    src,
                    RuleKind::AuthFailure,
                    What::AuthFailed,
                    user,
                    ev.origin,
                    None,
                    verified,
                );
            }
            EventKind::AuthSucceeded { .. } => {
                self.answer_log_challenge(now, src);
                self.promote(now, src, None);
            }
            EventKind::Registered { expires, .. } => self.promote(now, src, expires),
            EventKind::UnknownUser { user } => {
                let h = self.hasher.hash_one(user.unwrap_or_default());
                self.count_kind(
                    now,
                    src,
                    RuleKind::Enumeration,
                    What::Unknown,
                    user,
                    ev.origin,
                    Some(h),
                    true,
                );
            }
            EventKind::ChallengeSent { user } => {
                // Log lines carry no Call-ID: each challenge gets its own id.
                self.log_challenge_id = self.log_challenge_id.wrapping_add(1);
                let id = LOG_CHALLENGE | self.log_challenge_id;
                self.add_pending(now, src, id, Short::new(user), false);
            }
            EventKind::CallRejected { user } => {
                if self.toll_rule(user).is_some() {
                    self.count_kind(
                        now,
                        src,
                        RuleKind::TollFraud,
                        What::Toll,
                        user,
                        ev.origin,
                        None,
                        true,
                    );
                }
            }
            EventKind::Flooding => {
                if let Some(i) = self.rule_index(RuleKind::RequestFlood) {
                    let e = self.ev(now, src, What::Flood, None, ev.origin);
                    let ban = self.cfg.rules.rules[i]
                        .thresholds
                        .iter()
                        .map(|t| t.ban)
                        .max();
                    if let Some(ttl) = ban {
                        let evidence = vec![e.render(&self.origins)];
                        self.decide(now, src, i, ttl, evidence, (false, true), None);
                    }
                }
            }
            EventKind::Agent { agent } => {
                self.check_agent(now, src, agent, ev.origin);
            }
            // voipwall saw it itself, over a TCP connection: the source is
            // the connection's, not a forgeable claim.
            EventKind::ApiAuthFailed => self.count_kind(
                now,
                src,
                RuleKind::ApiAuth,
                What::ApiToken,
                None,
                ev.origin,
                None,
                true,
            ),
            // Evidence only once the PBX answers it (see on_response).
            EventKind::Undecodable => {
                self.undecodable.insert(src, now);
            }
            // Unverified like an undecodable packet: the PBX logs the UDP
            // source, which can be forged.
            EventKind::Malformed => self.count_kind(
                now,
                src,
                RuleKind::Undecodable,
                What::Malformed,
                None,
                ev.origin,
                None,
                false,
            ),
        }
    }

    /// Runs the timers due at `now` (unanswered challenges).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.allowed
            .retain(|(_, until)| until.is_none_or(|u| u > now));
        if let Some(g) = self.calls.as_mut() {
            g.handle_timeout(now);
        }
        while let Some(&Reverse((end, key))) = self.shield_ends.peek()
            && end <= now
        {
            self.shield_ends.pop();
            match self.shields.peek(&key).map(|s| s.view.until) {
                // Extended since: due later (each shield has one entry).
                Some(until) if until > now => self.shield_ends.push(Reverse((until, key))),
                Some(_) => {
                    if let Some(sh) = self.shields.remove(&key) {
                        self.actions.push_back(Action::ShieldEnd(sh.view));
                    }
                }
                None => {}
            }
        }
        while let Some(Reverse((end, _, _))) = self.alert_ends.peek()
            && *end <= now
        {
            let Some(Reverse((end, addr, rule))) = self.alert_ends.pop() else {
                break;
            };
            let key = (addr, rule);
            // A window closed early (or replaced) has another end, or none.
            if self.alert_windows.peek(&key).is_some_and(|w| w.end == end) {
                self.close_alert_window(&key, end);
            }
        }
        while let Some(&Reverse((due, src, call, early))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let key = self.group_of(src);
            let answer_within = self
                .rule_index(RuleKind::UnansweredChallenge)
                .map_or(32_000, |i| self.cfg.rules.rules[i].answer_within);
            let Some(g) = self.groups.peek_mut(&key) else {
                continue;
            };
            // Early check: challenges of a source that answers none are
            // counted now and kept, so a late answer can retract the count.
            // Deadline: a challenge not counted early is counted now.
            let lapsed: Vec<Pending> = if early {
                if g.last_answered
                    .is_some_and(|t| due.since(t) <= answer_within)
                {
                    continue;
                }
                let mut out = Vec::new();
                for p in g.pending.iter_mut() {
                    if p.src == src && !p.early && p.at.plus(EARLY_GRACE_MS) <= due {
                        p.early = true;
                        out.push(*p);
                    }
                }
                out
            } else {
                match g
                    .pending
                    .iter()
                    .position(|p| p.src == src && p.call == call && p.deadline <= now)
                {
                    Some(i) => {
                        let p = g.pending.swap_remove(i);
                        if p.early {
                            continue;
                        }
                        vec![p]
                    }
                    None => continue,
                }
            };
            for p in lapsed {
                if self.is_banned(src, due) {
                    break;
                }
                let user = Some(p.user.bytes()).filter(|u| !u.is_empty());
                let user = user.map(<[u8]>::to_vec);
                self.count_kind(
                    due,
                    src,
                    RuleKind::UnansweredChallenge,
                    What::Challenge,
                    user.as_deref(),
                    "timer",
                    Some(p.call),
                    true,
                );
                if p.toll {
                    self.count_kind(
                        due,
                        src,
                        RuleKind::TollFraud,
                        What::Toll,
                        user.as_deref(),
                        "timer",
                        Some(p.call),
                        true,
                    );
                }
            }
        }
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Engine::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let timer = self.timers.peek().map(|Reverse((t, _, _, _))| *t);
        let alert = self.alert_ends.peek().map(|Reverse((t, _, _))| *t);
        let shield = self.shield_ends.peek().map(|Reverse((t, _))| *t);
        let calls = self
            .calls
            .as_ref()
            .and_then(crate::calls::CallGuard::poll_timeout);
        [timer, alert, shield, calls].into_iter().flatten().min()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            tracked_sources: self.groups.len() as u64,
            timers: self.timers.len() as u64,
            tracked_accounts: (self.accounts.len() + self.unproven.len()) as u64,
            shields_active: self.shields.len() as u64,
            ..self.stats
        }
    }

    /// Whether traffic from `addr` is banned at `now`, with the same logic
    /// as the kernel: an exact ban always applies; a prefix ban applies
    /// unless `addr` is a registered endpoint.
    pub fn ban_for(&self, addr: IpAddr, now: Timestamp) -> Option<&Ban> {
        let exact = IpNet::from(addr);
        if let Some(b) = self.bans.peek(&exact).filter(|b| b.until > now) {
            return Some(b);
        }
        let group = self.group_of(addr);
        if group != exact
            && !self.is_known(addr, now)
            && let Some(b) = self.bans.peek(&group).filter(|b| b.until > now)
        {
            return Some(b);
        }
        // An IPv4 neighbourhood banned by account shields (spares
        // registered and remembered endpoints, like the kernel).
        if let (Some((len, _)), IpAddr::V4(_)) = (self.cfg.shield_v4, addr)
            && let Ok(net) = IpNet::new(addr, len).map(|n| n.trunc())
            && net != group
            && !self.is_known(addr, now)
            && !self.is_remembered(addr, now)
        {
            return self.bans.peek(&net).filter(|b| b.until > now);
        }
        None
    }

    fn is_banned(&self, addr: IpAddr, now: Timestamp) -> bool {
        self.ban_for(addr, now).is_some()
    }

    /// The seed of the engine's hashes (a reload keeps it, so that the
    /// calls it hands over keep their keys).
    pub fn hash_seed(&self) -> u64 {
        self.cfg.hash_seed
    }

    /// The call guard and the calls it follows, taken out (a reload hands
    /// them to the new engine).
    pub fn take_calls(&mut self) -> Option<crate::calls::CallGuard> {
        self.calls.take()
    }

    /// Takes over the calls a previous engine followed (a reload): see
    /// [`crate::calls::CallGuard::adopt`]. Nothing when this engine has no
    /// call rules.
    pub fn adopt_calls(&mut self, old: crate::calls::CallGuard) {
        if let Some(g) = self.calls.as_mut() {
            g.adopt(old);
        }
    }

    /// The call guard's counters, when the policy has call rules.
    pub fn call_stats(&self) -> Option<crate::calls::CallStats> {
        self.calls.as_ref().map(crate::calls::CallGuard::stats)
    }

    /// What the call rules say of a call `src` (authenticated as `user`)
    /// would place to `number` now, without counting it. `None`: no call
    /// rules. Each entry: the rule's name and why it breaks.
    pub fn call_decide(
        &self,
        now: Timestamp,
        src: IpAddr,
        user: Option<&str>,
        number: &[u8],
    ) -> Option<Vec<(String, String)>> {
        let g = self.calls.as_ref()?;
        Some(
            g.decide(now, src, user, number)
                .into_iter()
                .map(|v| (g.rules()[v.rule].name.clone(), v.reason))
                .collect(),
        )
    }

    /// The accounts shielded at `now`, longest-running first.
    pub fn shields(&self, now: Timestamp) -> Vec<ShieldView> {
        let mut v: Vec<ShieldView> = self
            .shields
            .iter()
            .map(|(_, s)| s.view.clone())
            .filter(|v| v.until > now)
            .collect();
        v.sort_by_key(|v| (v.since, v.account.clone()));
        v
    }

    /// An endpoint that registered at `last` (restored from the store):
    /// remembered until `last + remember_ms`.
    pub fn remember_endpoint(&mut self, addr: IpAddr, last: Timestamp) {
        let until = last.plus(self.cfg.remember_ms);
        if self.remembered.peek(&addr).is_none_or(|&u| u < until) {
            self.remembered.insert(addr, until);
        }
    }

    fn is_remembered(&self, addr: IpAddr, now: Timestamp) -> bool {
        self.remembered.peek(&addr).is_some_and(|&u| u > now)
    }

    /// Whether `addr` is a registered endpoint at `now`.
    pub fn is_known(&self, addr: IpAddr, now: Timestamp) -> bool {
        self.known.peek(&addr).is_some_and(|&until| until > now)
    }

    /// Everything the engine knows about `addr`.
    pub fn explain(&self, addr: IpAddr, now: Timestamp) -> Explanation {
        let group = self.group_of(addr);
        let exact = IpNet::from(addr);
        let mut bans: Vec<Ban> = [exact, group]
            .iter()
            .filter_map(|k| self.bans.peek(k).cloned())
            .collect();
        bans.dedup();
        let counters = self
            .groups
            .peek(&group)
            .map(|g| {
                g.counters
                    .iter()
                    .map(|c| {
                        let rule = &self.cfg.rules.rules[usize::from(c.rule)];
                        CounterView {
                            rule: rule.id.clone(),
                            progress: rule
                                .thresholds
                                .iter()
                                .map(|t| (in_window(&c.times, now, t.within), t.count, t.within))
                                .collect(),
                            evidence: c.evidence.iter().map(|e| e.render(&self.origins)).collect(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Explanation {
            addr,
            group,
            banned: self.ban_for(addr, now).cloned(),
            known_until: self.known.peek(&addr).copied().filter(|&u| u > now),
            protected: self.protected(addr),
            bans,
            counters,
        }
    }

    /// Drops what the engine remembers of bans of `target` (an operator's
    /// unban): the next offence starts afresh.
    pub fn forget_ban(&mut self, target: &IpNet) {
        self.bans.remove(target);
    }

    /// An operator's runtime allow entry: never banned until `until` (or
    /// until [`Engine::disallow`]); bans the engine holds inside it are forgotten.
    pub fn allow(&mut self, net: IpNet, until: Option<Timestamp>) {
        self.allowed.retain(|(n, _)| *n != net);
        self.allowed.push((net, until));
        let inside: Vec<IpNet> = self
            .bans
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| net.contains(&k.addr()))
            .collect();
        for k in inside {
            self.bans.remove(&k);
        }
    }

    /// Removes a runtime allow entry.
    pub fn disallow(&mut self, net: &IpNet) {
        self.allowed.retain(|(n, _)| n != net);
    }

    /// Tells the engine about a ban it did not make (restored from the store,
    /// or an operator's), so events from it are suppressed and recidive sees it.
    pub fn restore_ban(&mut self, ban: Ban) {
        self.bans.insert(ban.target, ban);
    }

    // ---- requests and responses -------------------------------------------------

    fn on_request(&mut self, now: Timestamp, src: IpAddr, r: &Request<'_>, origin: &str) {
        debug_assert!(
            !self.is_banned(src, now),
            "on_request is for unbanned sources (handle_event checks)"
        );
        // The source was not banned when the event came (handle_event): only
        // a count that reached a threshold (and so decided) can change that.
        if let Some(ua) = r.user_agent
            && self.check_agent(now, src, ua, origin)
            && self.is_banned(src, now)
        {
            return;
        }
        if let Some(i) = self.rule_index(RuleKind::RequestFlood) {
            let rule = &self.cfg.rules.rules[i];
            if rule.methods.is_empty()
                || rule
                    .methods
                    .iter()
                    .any(|m| m.as_bytes().eq_ignore_ascii_case(r.method))
            {
                let decided = self.count(
                    now,
                    src,
                    i,
                    What::Requests,
                    Some(r.method),
                    origin,
                    None,
                    true,
                );
                if decided && self.is_banned(src, now) {
                    return;
                }
            }
        }
        let call = self.hasher.hash_one(r.call_id);
        let method = self.hasher.hash_one(r.method);
        let register = r.method.eq_ignore_ascii_case(b"REGISTER");
        let invite = r.method.eq_ignore_ascii_case(b"INVITE");
        if self.calls.is_some() {
            self.call_request(now, src, r, call, invite, origin);
            if self.is_banned(src, now) {
                return;
            }
        }
        let user = if register {
            r.to_user
        } else {
            r.ruri_user.or(r.to_user)
        };
        let toll = invite && !r.has_auth && self.toll_rule(user).is_some();
        let ttl = self.cfg.transaction_timeout;
        let key = self.group_of(src);
        let g = self.group_mut(key);
        if r.has_auth
            && let Some(i) = g
                .pending
                .iter()
                .position(|p| p.src == src && p.call == call)
        {
            // The authenticated retry answers the challenge of this call.
            let p = g.pending.swap_remove(i);
            g.last_answered = Some(now);
            if p.early {
                self.retract(key, call);
            }
        }
        let (account, account_name) = if r.has_auth {
            self.request_account(r.auth_user.or(user), r.several_credentials)
        } else {
            (0, Short::default())
        };
        let verified = self.nonce_proves(r.auth_nonce, src, now);
        let g = self.group_mut(key);
        // A retransmission replaces its transaction; expired ones are swept
        // only when the list is full (it is short, and this runs per packet).
        if let Some(i) = g
            .txns
            .iter()
            .position(|t| t.call == call && t.src == src && t.cseq == r.cseq && t.method == method)
        {
            g.txns.remove(i);
        }
        if g.txns.len() >= MAX_TXNS {
            g.txns.retain(|t| now.since(t.at) < ttl);
        }
        push_bounded(
            &mut g.txns,
            MAX_TXNS,
            Txn {
                src,
                call,
                cseq: r.cseq,
                method,
                register,
                invite,
                has_auth: r.has_auth,
                verified,
                user: Short::new(if r.has_auth {
                    r.auth_user.or(user)
                } else {
                    user
                }),
                toll,
                at: now,
                expires: r.expires,
                stream: r.stream,
                account,
                account_name,
            },
        );
    }

    fn on_response(&mut self, now: Timestamp, dst: IpAddr, r: &Response<'_>, origin: &str) {
        if r.code < 200 {
            // The PBX took the call (100 Trying, 180 Ringing): it counts
            // however long it rings.
            if r.method.eq_ignore_ascii_case(b"INVITE")
                && let Some(guard) = self.calls.as_mut()
            {
                guard.provisional(dst, self.hasher.hash_one(r.call_id));
            }
            return;
        }
        let call = self.hasher.hash_one(r.call_id);
        let method = self.hasher.hash_one(r.method);
        let key = self.group_of(dst);
        let matched = self.groups.get_mut(&key).and_then(|g| {
            g.txns.iter().position(|t| {
                t.src == dst && t.call == call && t.cseq == r.cseq && t.method == method
            })
        });
        let Some(i) = matched else {
            self.stats.unmatched_responses += 1;
            // A final answer to a request we could not read: the PBX read
            // it. Evidence like a failure (unverified: UDP sources forge).
            if let Some(at) = self.undecodable.remove(&dst)
                && now.since(at) <= UNDECODABLE_ANSWER
            {
                self.count_kind(
                    now,
                    dst,
                    RuleKind::Undecodable,
                    What::Undecodable,
                    None,
                    origin,
                    None,
                    false,
                );
            }
            return;
        };
        let g = self.groups.get_mut(&key).expect("matched above");
        let t = g.txns.swap_remove(i);
        if let Some(guard) = self.calls.as_mut() {
            if t.invite {
                guard.answer(now, dst, call, r.code);
            } else if (200..300).contains(&r.code) && r.method.eq_ignore_ascii_case(b"BYE") {
                guard.end(dst, call);
            }
        }
        let g = self.groups.get_mut(&key).expect("matched above");
        if g.txns.is_empty() {
            g.txns = Vec::new();
        }
        if matches!(r.code, 401 | 407)
            && let Some(n) = r.nonce
        {
            let h = self.hasher.hash_one(n);
            let entry = match self.nonces.peek(&h) {
                Some(&(to, at, shared)) if now.since(at) <= NONCE_TTL => {
                    (to, now, shared || to != dst)
                }
                _ => (dst, now, false),
            };
            self.nonces.insert(h, entry);
        }
        let user = (t.user.len > 0).then_some(t.user);
        let user_bytes = user.as_ref().map(Short::bytes);
        let toll_codes = self
            .rule_index(RuleKind::TollFraud)
            .map(|i| self.cfg.rules.rules[i].codes.contains(&r.code))
            .unwrap_or(false);
        match r.code {
            200..=299 => {
                if t.register {
                    let expires = r.expires.or(t.expires);
                    if expires == Some(0) {
                        self.demote(now, dst);
                    } else {
                        self.promote(now, dst, expires);
                    }
                }
            }
            // A refused retry that carried credentials: a failed authentication.
            401 | 403 | 407 if t.has_auth => {
                // Proven by the nonce, or by the connection both the
                // request and the answer travelled on.
                let verified = t.verified || (t.stream && r.stream);
                if !self.first_sighting(now, dst, true) {
                    // Its log line came first (unverified there): under a
                    // shield the proof still bans.
                    if verified && t.account != 0 && self.shielded(t.account, now) {
                        self.shielded_failure_seen_again(now, dst, t.account, origin);
                    }
                    return;
                }
                if t.account != 0
                    && self.account_failure(now, dst, t.account, t.account_name, verified, origin)
                {
                    return;
                }
                self.count_kind(
                    now,
                    dst,
                    RuleKind::AuthFailure,
                    What::AuthFailed,
                    user_bytes,
                    origin,
                    None,
                    verified,
                );
            }
            401 | 407 => self.add_pending(now, dst, call, t.user, t.toll),
            code => {
                let unknown = self
                    .rule_index(RuleKind::Enumeration)
                    .is_some_and(|i| self.cfg.rules.rules[i].codes.contains(&code));
                let toll = t.toll && toll_codes;
                // A refused INVITE to a foreign number is a toll probe, not enumeration.
                if unknown && !(t.invite && toll) {
                    let h = self.hasher.hash_one(user_bytes.unwrap_or_default());
                    let (what, kind) = (What::Unknown, RuleKind::Enumeration);
                    self.count_kind(now, dst, kind, what, user_bytes, origin, Some(h), true);
                }
                if toll {
                    let (what, kind) = (What::Toll, RuleKind::TollFraud);
                    self.count_kind(now, dst, kind, what, user_bytes, origin, None, true);
                }
            }
        }
    }

    fn add_pending(&mut self, now: Timestamp, src: IpAddr, call: u64, user: Short, toll: bool) {
        let Some(i) = self
            .rule_index(RuleKind::UnansweredChallenge)
            .or_else(|| toll.then(|| self.rule_index(RuleKind::TollFraud)).flatten())
        else {
            return;
        };
        let deadline = now.plus(self.cfg.rules.rules[i].answer_within);
        let key = self.group_of(src);
        let g = self.group_mut(key);
        if let Some(p) = g
            .pending
            .iter_mut()
            .find(|p| p.src == src && p.call == call && call & LOG_CHALLENGE == 0)
        {
            // A retransmitted challenge for the same call: keep the first deadline.
            p.toll |= toll;
            return;
        }
        push_bounded(
            &mut g.pending,
            MAX_PENDING,
            Pending {
                src,
                call,
                at: now,
                deadline,
                early: false,
                user,
                toll,
            },
        );
        self.timers.push(Reverse((deadline, src, call, false)));
        self.timers.push(Reverse((
            now.plus(EARLY_GRACE_MS.min(deadline.since(now))),
            src,
            call,
            true,
        )));
        // Timers of evicted sources stay in the heap until due; under a
        // spoofed flood that is many. Compact when it outgrows what live
        // sources can hold, so the heap stays bounded too.
        if self.timers.len() > 2 * self.groups.capacity() + 1024 {
            let groups = &self.groups;
            let group_of = |a: IpAddr| {
                let len = match a {
                    IpAddr::V4(_) => self.cfg.group_v4,
                    IpAddr::V6(_) => self.cfg.group_v6,
                };
                IpNet::new(a, len).map_or(IpNet::from(a), |n| n.trunc())
            };
            self.timers.retain(|Reverse((due, src, call, early))| {
                groups.peek(&group_of(*src)).is_some_and(|g| {
                    g.pending
                        .iter()
                        .any(|p| p.src == *src && p.call == *call && (*early || p.deadline == *due))
                })
            });
            self.stats.timer_compactions += 1;
        }
    }

    /// A log line showing an authentication attempt answers the oldest
    /// challenge the logs reported for that source.
    /// Whether a failed authentication of `src` is new, or the other
    /// sighting (packet vs log) of one counted within [`SAME_FAILURE`].
    /// With NFLOG and the PBX's log both on, each failure arrives twice.
    fn first_sighting(&mut self, now: Timestamp, src: IpAddr, by_packet: bool) -> bool {
        if !self.sightings.contains_key(&src) {
            self.sightings.insert(src, Sightings::default());
        }
        let s = self.sightings.get_mut(&src).expect("inserted");
        let (mine, other) = if by_packet {
            (&mut s.packet, &mut s.log)
        } else {
            (&mut s.log, &mut s.packet)
        };
        other.retain(|t| now.since(*t) <= SAME_FAILURE);
        if other.pop_front().is_some() {
            return false;
        }
        if mine.len() >= 64 {
            mine.pop_front();
        }
        mine.push_back(now);
        true
    }

    fn answer_log_challenge(&mut self, now: Timestamp, src: IpAddr) {
        let key = self.group_of(src);
        if let Some(g) = self.groups.peek_mut(&key)
            && let Some(i) = g
                .pending
                .iter()
                .position(|p| p.src == src && p.call & LOG_CHALLENGE != 0)
        {
            let p = g.pending.remove(i);
            g.last_answered = Some(now);
            if p.early {
                self.retract(key, p.call);
            }
        }
    }

    /// Takes back the early count of a challenge that was answered after all.
    fn retract(&mut self, key: IpNet, call: u64) {
        let rules: Vec<u8> = [RuleKind::UnansweredChallenge, RuleKind::TollFraud]
            .into_iter()
            .filter_map(|k| self.rule_index(k))
            .filter_map(|i| u8::try_from(i).ok())
            .collect();
        if let Some(g) = self.groups.peek_mut(&key) {
            for c in g.counters.iter_mut().filter(|c| rules.contains(&c.rule)) {
                if let Some(i) = c.times.iter().position(|&(_, tag)| tag == call) {
                    c.times.remove(i);
                }
            }
        }
    }

    /// Counts a scanner's user agent. Returns whether a threshold was
    /// reached (see [`Engine::count`]).
    fn check_agent(&mut self, now: Timestamp, src: IpAddr, agent: &[u8], origin: &str) -> bool {
        let Some((i, ac)) = &self.agents else {
            return false;
        };
        let i = *i;
        ac.is_match(agent)
            && self.count(now, src, i, What::Scanner, Some(agent), origin, None, true)
    }

    fn toll_rule(&self, user: Option<&[u8]>) -> Option<usize> {
        let i = self.rule_index(RuleKind::TollFraud)?;
        let rule = &self.cfg.rules.rules[i];
        let user = user?;
        let digits = user.iter().filter(|b| b.is_ascii_digit()).count();
        (digits >= rule.min_digits && rule.prefixes.iter().any(|p| user.starts_with(p.as_bytes())))
            .then_some(i)
    }

    fn promote(&mut self, now: Timestamp, addr: IpAddr, expires: Option<u32>) {
        let ttl = expires
            .map_or(self.cfg.known_default_ttl, |s| u64::from(s) * 1000)
            .min(self.cfg.known_max_ttl);
        let until = now.plus(ttl);
        self.known.insert(addr, until);
        if self.cfg.remember_ms > 0 {
            self.remember_endpoint(addr, now);
        }
        self.stats.promotions += 1;
        self.actions.push_back(Action::Promote {
            addr,
            at: now,
            until,
        });
    }

    fn demote(&mut self, now: Timestamp, addr: IpAddr) {
        if self.known.remove(&addr).is_some() {
            self.actions.push_back(Action::Demote { addr, at: now });
        }
    }

    // ---- counting and deciding --------------------------------------------------

    fn rule_index(&self, kind: RuleKind) -> Option<usize> {
        self.cfg
            .rules
            .rules
            .iter()
            .position(|r| r.enabled && r.kind == kind)
    }

    fn group_of(&self, addr: IpAddr) -> IpNet {
        let len = match addr {
            IpAddr::V4(_) => self.cfg.group_v4,
            IpAddr::V6(_) => self.cfg.group_v6,
        };
        IpNet::new(addr, len).map_or(IpNet::from(addr), |n| n.trunc())
    }

    fn group_mut(&mut self, key: IpNet) -> &mut Group {
        if !self.groups.contains_key(&key) {
            if self.groups.len() >= self.groups.capacity() {
                self.groups.remove_lru();
                self.stats.evicted_sources += 1;
            }
            self.groups.insert(key, Group::default());
        }
        self.groups.get_mut(&key).expect("inserted above")
    }

    fn ev(
        &mut self,
        at: Timestamp,
        src: IpAddr,
        what: What,
        user: Option<&[u8]>,
        origin: &str,
    ) -> Ev {
        Ev {
            at,
            src,
            what,
            user: Short::new(user),
            origin: self.origin_index(origin),
            proof: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn count_kind(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        kind: RuleKind,
        what: What,
        user: Option<&[u8]>,
        origin: &str,
        distinct: Option<u64>,
        verified: bool,
    ) {
        if let Some(i) = self.rule_index(kind) {
            self.count(now, src, i, what, user, origin, distinct, verified);
        }
    }

    /// Counts one event for rule `i`; bans (or alerts) when a threshold is
    /// reached. Returns whether one was: only then can bans, known or
    /// remembered endpoints have changed, so a caller that knew the source
    /// unbanned before need not look again otherwise.
    #[allow(clippy::too_many_arguments)]
    fn count(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        i: usize,
        what: What,
        user: Option<&[u8]>,
        origin: &str,
        distinct: Option<u64>,
        verified: bool,
    ) -> bool {
        let mut e = self.ev(now, src, what, user, origin);
        let key = self.group_of(src);
        if !self.groups.contains_key(&key) {
            self.group_mut(key);
        }
        if matches!(
            self.cfg.rules.rules[i].kind,
            RuleKind::AuthFailure | RuleKind::Undecodable
        ) {
            e.proof = Some(verified);
        }
        // Disjoint field borrows: the rule (config), the group map, the origin names.
        let rule = &self.cfg.rules.rules[i];
        let rule_no = u8::try_from(i).unwrap_or(u8::MAX);
        let max_within = rule.thresholds.iter().map(|t| t.within).max().unwrap_or(0);
        let max_count = rule.thresholds.iter().map(|t| t.count).max().unwrap_or(1);
        let flood = rule.kind == RuleKind::RequestFlood;
        let thresholds = &rule.thresholds;
        let origins = &self.origins;
        let g = self.groups.get_mut(&key).expect("inserted above");
        let pos = g.counters.iter().position(|c| c.rule == rule_no);
        // Most sources send one request now and then: their first request is
        // remembered inline, and the counter (timestamps, evidence) is only
        // allocated for a second one.
        if flood && pos.is_none() && max_count > 1 {
            match g.first_request {
                Some(t0) if now.since(t0) <= max_within => {}
                _ => {
                    g.first_request = Some(now);
                    return false;
                }
            }
        }
        let c = match pos {
            Some(p) => &mut g.counters[p],
            None => {
                let mut times = VecDeque::with_capacity(2);
                if flood && let Some(t0) = g.first_request.take() {
                    times.push_back((t0, 0));
                }
                push_bounded(
                    &mut g.counters,
                    usize::MAX,
                    Counter {
                        rule: rule_no,
                        times,
                        evidence: VecDeque::new(),
                    },
                );
                g.counters.last_mut().expect("pushed")
            }
        };
        if c.evidence.len() >= MAX_EVIDENCE {
            c.evidence.pop_front();
        }
        // Request floods keep one evidence item per second, not one per
        // request, and none until the source is halfway to a threshold.
        if !flood
            || (c.times.len() * 2 >= max_count as usize
                && c.evidence
                    .back()
                    .is_none_or(|b| b.what != What::Requests || now.since(b.at) > 1000))
        {
            c.evidence.push_back(e.clone());
        }
        let oldest_kept = now.0.saturating_sub(max_within);
        while c.times.front().is_some_and(|&(t, _)| t.0 < oldest_kept) {
            c.times.pop_front();
        }
        match distinct {
            Some(h) => {
                // Distinct values: refresh the time of a repeated one.
                if let Some(p) = c.times.iter().position(|&(_, x)| x == h) {
                    c.times.remove(p);
                }
                c.times.push_back((now, h));
            }
            // Without distinct values the slot says whether the event was
            // verified (1) or not (0).
            None => c.times.push_back((now, u64::from(verified))),
        }
        while c.times.len() > max_count as usize {
            c.times.pop_front();
        }
        let mut fired: Option<u64> = None;
        for t in thresholds {
            if in_window(&c.times, now, t.within) >= t.count {
                fired = Some(fired.map_or(t.ban, |b: u64| b.max(t.ban)));
            }
        }
        let Some(ttl) = fired else { return false };
        // Failed authentications prove a guesser only when they answer a
        // nonce the host issued to that source. A registered endpoint needs
        // a full threshold of such proof; another source, one proven
        // failure among them (a forger cannot produce one for an address it
        // does not receive at, and mixing in unproven ones must not dodge
        // recidive). The other rules count what the host saw and answered.
        let proven = |need_all: bool| {
            thresholds.iter().any(|t| {
                let v = in_window_verified(&c.times, now, t.within);
                if need_all { v >= t.count } else { v >= 1 }
            })
        };
        let verified = match rule.kind {
            RuleKind::AuthFailure | RuleKind::Undecodable => {
                let strict = proven(true);
                (strict, strict || proven(false))
            }
            _ => (false, true),
        };
        let evidence: Vec<Evidence> = c.evidence.iter().map(|e| e.render(origins)).collect();
        // Banned by address only (IPv6 before escalation, or narrowed around
        // a never-ban network): the rest of the group starts over, so a
        // neighbour's first failure is not the attacker's sixth. Alerted
        // instead of banned: re-arm so the next alert needs as many events.
        if self.decide(now, src, i, ttl, evidence, verified, None)
            && (self.bans.peek(&key).is_some_and(|b| b.until > now) || key == IpNet::from(src))
        {
            return true;
        }
        if let Some(g) = self.groups.peek_mut(&key)
            && let Some(c) = g.counters.iter_mut().find(|c| c.rule == rule_no)
        {
            c.times.clear();
        }
        true
    }

    /// Bans the group of `src` for `ttl` (escalated by recidive), or alerts
    /// when `src` is protected. Returns whether a ban was made.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        i: usize,
        ttl: u64,
        evidence: Vec<Evidence>,
        (proven_for_known, verified): (bool, bool),
        account: Option<&str>,
    ) -> bool {
        let rule = &self.cfg.rules.rules[i];
        let rule_id = rule.id.clone();
        let single_packet = rule.thresholds.iter().all(|t| t.count <= 1);
        if self.protected(src) {
            self.alert(now, src, rule_id, "the source is in a never-ban network (own address, allow list, trusted, management or trunk)".into());
            return false;
        }
        if rule.kind == RuleKind::AccountGuessing
            && !self.is_known(src, now)
            && self.is_remembered(src, now)
        {
            self.alert(
                now,
                src,
                rule_id,
                "the source registered recently (a remembered endpoint); account shields do not ban those".into(),
            );
            return false;
        }
        if rule.spare_known && self.is_known(src, now) {
            self.alert(
                now,
                src,
                rule_id,
                "the source is a registered endpoint; this rule spares those".into(),
            );
            return false;
        }
        // A registered endpoint has proven it receives at its address; UDP
        // evidence against it can be forged (a spoofed REGISTER gets a 401
        // nobody answers, a spoofed INVITE a 404): only a full threshold of
        // proven failed authentications bans it.
        if !proven_for_known && self.is_known(src, now) {
            self.alert(
                now,
                src,
                rule_id,
                "the evidence does not prove the source sent it (no nonce this host issued to it alone was answered): a registered endpoint is not banned on it".into(),
            );
            return false;
        }
        if single_packet && self.is_known(src, now) {
            self.alert(
                now,
                src,
                rule_id,
                "one packet, whose source address can be forged, does not ban a registered endpoint".into(),
            );
            return false;
        }
        let mut target = self.group_of(src);
        let mut note = String::new();
        // IPv6: the address alone first; its prefix once enough of the
        // prefix's addresses misbehaved (a phone that shares the /64 of an
        // attacker is not locked out by one ban).
        if src.is_ipv6() && target != IpNet::from(src) && self.cfg.v6_escalate_after > 1 {
            // Only verified bans move a prefix towards its ban (a forger
            // must not get a /64 of not-yet-registered devices banned).
            let within = self.cfg.v6_escalate_within;
            if !self.offenders.contains_key(&target) {
                self.offenders.insert(target, Vec::new());
            }
            let list = self.offenders.get_mut(&target).expect("inserted");
            list.retain(|&(a, t)| now.since(t) <= within && a != src);
            if verified {
                list.push((src, now));
            }
            if list.len() > 16 {
                list.remove(0);
            }
            let distinct = list.len();
            if distinct >= self.cfg.v6_escalate_after as usize {
                note = format!(
                    " (escalated: {distinct} addresses of {target} within {})",
                    format_duration(within)
                );
            } else {
                note = format!(
                    " (this address only; {target} after {} of its addresses)",
                    self.cfg.v6_escalate_after
                );
                target = IpNet::from(src);
            }
        }
        if target != IpNet::from(src)
            && self
                .cfg
                .never_ban
                .iter()
                .any(|n| n.contains(&target.network()) || target.contains(n))
        {
            note = format!(" (narrowed from {target}: it holds a never-ban network)");
            target = IpNet::from(src);
        }
        let (ttl, level) = if verified {
            escalate(
                self.cfg.rules.recidive.as_ref(),
                self.bans.peek(&target),
                now,
                ttl,
            )
        } else {
            note.push_str(
                " (unverified: no nonce issued to the source was answered; short, no recidive)",
            );
            (ttl.min(UNVERIFIED_BAN_TTL), 0)
        };
        let summary = match account {
            Some(a) => format!("a failed authentication for the shielded account {a}"),
            None => rule_summary(rule),
        };
        let reason = format!(
            "{}: {} → ban {}{}{}",
            rule_id,
            summary,
            format_duration(ttl),
            if level > 0 {
                format!(" (repeat offence {level})")
            } else {
                String::new()
            },
            note
        );
        let ban = Ban {
            target,
            offender: src,
            rule: rule_id,
            at: now,
            until: now.plus(ttl),
            ttl,
            level,
            reason,
            account: account.map(str::to_string),
            evidence,
            verified,
        };
        self.bans.insert(target, ban.clone());
        self.stats.bans += 1;
        self.actions.push_back(Action::Ban(ban));
        // The offender's outstanding state is moot while it is banned.
        if let Some(g) = self.groups.peek_mut(&target) {
            g.txns.clear();
            g.pending.clear();
        }
        true
    }

    // ---- calls -----------------------------------------------------------------

    /// A request for the call guard: a new INVITE is checked against the
    /// call rules (alert, ban or drop per rule); a session refresh keeps
    /// its call alive.
    fn call_request(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        r: &Request<'_>,
        call: u64,
        invite: bool,
        origin: &str,
    ) {
        let Some(guard) = self.calls.as_mut() else {
            return;
        };
        // A BYE or CANCEL ends nothing by itself: a caller could send one
        // the PBX refuses (481: wrong tags) and keep talking with the
        // call gone from the count. The PBX's 2xx to the BYE ends it
        // (`on_response`); a CANCEL the PBX honours ends with the 487 to
        // the INVITE.
        let refresh = invite || r.method.eq_ignore_ascii_case(b"UPDATE");
        if refresh
            && r.to_tag
            && let Some(secs) = r.session_expires
        {
            guard.refresh(now, src, call, secs);
        }
        if !invite {
            return;
        }
        let user = if r.has_auth { r.auth_user } else { None };
        let number = r.ruri_user.or(r.to_user);
        let queued = self.queued.is_some();
        let (violations, drop) = guard.invite_at(now, src, call, (number, user), r.to_tag, queued);
        if drop {
            self.queued = Some(true);
            self.stats.calls_dropped += 1;
        }
        if violations.is_empty() {
            return;
        }
        // A UDP source can be forged: one INVITE proves its sender only
        // over a connection or with credentials answering a nonce issued to
        // that source alone.
        let verified = r.stream || self.nonce_proves(r.auth_nonce, src, now);
        for v in violations {
            let rule = &guard_rules(self)[v.rule];
            let (name, action, ttl) = (format!("call:{}", rule.name), rule.action, rule.ban);
            match action {
                crate::calls::Act::Alert => self.alert(now, src, name, v.reason),
                crate::calls::Act::Drop if drop => {
                    self.alert(now, src, name, format!("{} → INVITE dropped", v.reason));
                }
                crate::calls::Act::Drop => self.alert(
                    now,
                    src,
                    name,
                    format!(
                        "{}; not dropped: {}",
                        v.reason,
                        if queued {
                            "the call had already started"
                        } else {
                            "only INVITEs over UDP wait at the queue (this one came another way)"
                        }
                    ),
                ),
                crate::calls::Act::Ban => {
                    self.call_ban(now, src, (name, ttl, v.reason), verified, origin);
                }
            }
        }
    }

    /// Bans the source of a call that broke a rule with `action = "ban"`
    /// (an alert for a protected source).
    fn call_ban(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        (rule, ttl, reason): (String, u64, String),
        verified: bool,
        origin: &str,
    ) {
        if self.protected(src) {
            self.alert(now, src, rule, format!("{reason}; the source is in a never-ban network (own address, allow list, trusted, management or trunk)"));
            return;
        }
        if !verified && self.is_known(src, now) {
            self.alert(now, src, rule, format!("{reason}; one INVITE whose source address can be forged does not ban a registered endpoint"));
            return;
        }
        if self.is_banned(src, now) {
            return;
        }
        let (ttl, note) = if verified {
            (ttl, "")
        } else {
            (
                ttl.min(UNVERIFIED_BAN_TTL),
                " (unverified: a UDP source can be forged; short)",
            )
        };
        let e = self.ev(now, src, What::Requests, Some(b"INVITE"), origin);
        let target = IpNet::from(src);
        let ban = Ban {
            target,
            offender: src,
            rule: rule.clone(),
            at: now,
            until: now.plus(ttl),
            ttl,
            level: 0,
            reason: format!("{rule}: {reason} → ban {}{note}", format_duration(ttl)),
            account: None,
            evidence: vec![e.render(&self.origins)],
            verified,
        };
        self.bans.insert(target, ban.clone());
        self.stats.bans += 1;
        self.actions.push_back(Action::Ban(ban));
    }

    // ---- accounts: distributed guessing ------------------------------------------

    /// The account key of a user: a seeded hash (attackers choose the
    /// names), never 0 (0 is "no account"). The realm is left out: it is
    /// the client's to write, and a different spelling per guess must not
    /// make a different account.
    fn account_key(&self, user: &[u8]) -> u64 {
        self.hasher.hash_one(user).max(1)
    }

    /// The account of a request's credentials: the digest username; with
    /// several credentials headers (the PBX reads the one for its realm,
    /// not necessarily the first), one pseudo-account for all such
    /// failures, so decoy headers gather instead of scattering.
    fn request_account(&self, user: Option<&[u8]>, several: bool) -> (u64, Short) {
        match user {
            _ if several => (
                self.account_key(SEVERAL_CREDENTIALS),
                Short::new(Some(SEVERAL_CREDENTIALS)),
            ),
            Some(u) if !u.is_empty() => (self.account_key(u), Short::new(Some(u))),
            _ => (0, Short::default()),
        }
    }

    /// Whether credentials answering `nonce` prove `src` receives at its
    /// address: the host issued the nonce to `src` alone, recently.
    fn nonce_proves(&self, nonce: Option<&[u8]>, src: IpAddr, now: Timestamp) -> bool {
        nonce.map(|n| self.hasher.hash_one(n)).is_some_and(|h| {
            self.nonces
                .peek(&h)
                .is_some_and(|&(to, at, shared)| to == src && !shared && now.since(at) <= NONCE_TTL)
        })
    }

    /// The index of `origin` in the interned origin names (255 once 255
    /// are known: "other").
    fn origin_index(&mut self, origin: &str) -> u8 {
        match self.origins.iter().position(|o| o == origin) {
            Some(i) => u8::try_from(i).unwrap_or(u8::MAX),
            None if self.origins.len() < 255 => {
                self.origins.push(origin.to_string());
                u8::try_from(self.origins.len() - 1).unwrap_or(u8::MAX)
            }
            None => u8::MAX,
        }
    }

    fn failure_evidence(&self, f: &Failure, name: &Short) -> Evidence {
        Ev {
            at: f.at,
            src: f.src,
            what: What::AuthFailed,
            user: *name,
            origin: f.origin,
            proof: Some(f.verified),
        }
        .render(&self.origins)
    }

    /// Whether the account `key` is shielded at `now`.
    fn shielded(&self, key: u64, now: Timestamp) -> bool {
        self.shields.peek(&key).is_some_and(|s| s.view.until > now)
    }

    /// A verified failure on a shielded account, already counted by its
    /// other sighting (a log line read before the packet): the source is
    /// banned as if the packet had come first.
    fn shielded_failure_seen_again(&mut self, now: Timestamp, src: IpAddr, key: u64, origin: &str) {
        let Some(i) = self.rule_index(RuleKind::AccountGuessing) else {
            return;
        };
        let shield_ms = self.cfg.rules.rules[i].shield;
        let Some(sh) = self.shields.peek_mut(&key).filter(|s| s.view.until > now) else {
            return;
        };
        sh.view.until = sh.view.until.max(now.plus(shield_ms));
        let (ttl, account) = (sh.ban, sh.view.account.clone());
        let name = Short::new(Some(account.as_bytes()));
        let origin = self.origin_index(origin);
        let f = Failure {
            at: now,
            src,
            verified: true,
            origin,
        };
        let evidence = vec![self.failure_evidence(&f, &name)];
        let banned = self.shield_ban(now, src, i, ttl, evidence, &account);
        if let Some(sh) = self.shields.peek_mut(&key)
            && banned
        {
            sh.view.bans += 1;
            sh.view.alerts = sh.view.alerts.saturating_sub(1);
        }
    }

    /// A failed authentication for the account `key` from `src`. Counts it
    /// across sources; starts the account's shield at the threshold (the
    /// sources whose verified failures built it are banned); under a
    /// shield, bans a source at its first verified failure. Returns whether
    /// `src` was banned (its per-source counting is then moot).
    fn account_failure(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        key: u64,
        name: Short,
        verified: bool,
        origin: &str,
    ) -> bool {
        let Some(i) = self.rule_index(RuleKind::AccountGuessing) else {
            return false;
        };
        let origin = self.origin_index(origin);
        let f = Failure {
            at: now,
            src,
            verified,
            origin,
        };
        let rule = &self.cfg.rules.rules[i];
        let (shield_ms, min_sources) = (rule.shield, rule.sources as usize);
        let max_within = rule.thresholds.iter().map(|t| t.within).max().unwrap_or(0);
        let max_count = rule.thresholds.iter().map(|t| t.count).max().unwrap_or(1) as usize;
        let rule_id = rule.id.clone();
        // A shield whose end passed before its timer ran ends now.
        if self.shields.peek(&key).is_some_and(|s| s.view.until <= now)
            && let Some(sh) = self.shields.remove(&key)
        {
            self.actions.push_back(Action::ShieldEnd(sh.view));
        }
        if let Some(sh) = self.shields.get_mut(&key) {
            sh.view.failures += 1;
            let (ttl, account) = (sh.ban, sh.view.account.clone());
            if !verified {
                // Forged packets neither ban anyone under a shield nor keep
                // it up: only verified failures extend it.
                sh.view.alerts += 1;
                self.alert(
                    now,
                    src,
                    rule_id,
                    format!("a failed authentication for the shielded account {account} that nothing proves came from the source (no nonce issued to it alone, no connection): alert only"),
                );
                return false;
            }
            sh.view.until = sh.view.until.max(now.plus(shield_ms));
            let evidence = vec![self.failure_evidence(&f, &name)];
            let banned = self.shield_ban(now, src, i, ttl, evidence, &account);
            if let Some(sh) = self.shields.peek_mut(&key) {
                if banned {
                    sh.view.bans += 1;
                } else {
                    sh.view.alerts += 1;
                }
            }
            return banned;
        }
        // Accounts enter the big table only on a verified failure; forged
        // (unverified) failures of accounts not there yet go to a small one
        // of their own, so a forged spray of names cannot evict the
        // accounts real guessers are working on.
        let table = if self.accounts.contains_key(&key) {
            &mut self.accounts
        } else if verified {
            let moved = self.unproven.remove(&key);
            if self.accounts.len() >= self.accounts.capacity() {
                self.accounts.remove_lru();
                self.stats.evicted_accounts += 1;
            }
            self.accounts.insert(
                key,
                moved.unwrap_or_else(|| Account {
                    name,
                    failures: VecDeque::with_capacity(1),
                }),
            );
            &mut self.accounts
        } else {
            if !self.unproven.contains_key(&key) {
                if self.unproven.len() >= self.unproven.capacity() {
                    self.unproven.remove_lru();
                    self.stats.evicted_accounts += 1;
                }
                self.unproven.insert(
                    key,
                    Account {
                        name,
                        failures: VecDeque::with_capacity(1),
                    },
                );
            }
            &mut self.unproven
        };
        let acc = table.get_mut(&key).expect("inserted above");
        let oldest_kept = now.0.saturating_sub(max_within);
        while acc.failures.front().is_some_and(|f| f.at.0 < oldest_kept) {
            acc.failures.pop_front();
        }
        acc.failures.push_back(f);
        while acc.failures.len() > max_count {
            acc.failures.pop_front();
        }
        // The threshold reached with enough distinct sources; the longest
        // ban (and its window) among those reached.
        let mut fired: Option<(u64, u64)> = None;
        for t in &self.cfg.rules.rules[i].thresholds {
            let from = now.0.saturating_sub(t.within);
            let mut srcs: Vec<IpAddr> = acc
                .failures
                .iter()
                .filter(|f| f.at.0 >= from)
                .map(|f| f.src)
                .collect();
            if srcs.len() < t.count as usize {
                continue;
            }
            srcs.sort_unstable();
            srcs.dedup();
            if srcs.len() >= min_sources && fired.is_none_or(|(b, _)| t.ban > b) {
                fired = Some((t.ban, t.within));
            }
        }
        let Some((ttl, within)) = fired else {
            return false;
        };
        let acc = table.remove(&key).expect("present");
        let from = now.0.saturating_sub(within);
        let window: Vec<Failure> = acc
            .failures
            .into_iter()
            .filter(|f| f.at.0 >= from)
            .collect();
        // Sources in the order of their first failure.
        let mut sources: Vec<IpAddr> = Vec::new();
        for f in &window {
            if !sources.contains(&f.src) {
                sources.push(f.src);
            }
        }
        let account = acc.name.show();
        let view = ShieldView {
            account: account.clone(),
            since: now,
            until: now.plus(shield_ms),
            failures: window.len() as u64,
            sources: u32::try_from(sources.len()).unwrap_or(u32::MAX),
            bans: 0,
            alerts: 0,
        };
        if self.shields.len() >= MAX_SHIELDS {
            // Room: the least recently failed shield that banned nobody
            // (forged ones), else the least recently failed of all.
            let victim = self
                .shields
                .iter()
                .find(|(_, s)| s.view.bans == 0)
                .map(|(k, _)| *k);
            let old = match victim {
                Some(k) => self.shields.remove(&k),
                None => self.shields.remove_lru().map(|(_, s)| s),
            };
            if let Some(old) = old {
                self.actions.push_back(Action::ShieldEnd(old.view));
            }
        }
        self.shields.insert(
            key,
            Shield {
                view: view.clone(),
                ban: ttl,
            },
        );
        if self.shield_ends.len() > 2 * MAX_SHIELDS {
            // Ends of shields ended early or replaced: rebuilt from the live ones.
            self.shield_ends = self
                .shields
                .iter()
                .map(|(k, s)| Reverse((s.view.until, *k)))
                .collect();
        } else {
            self.shield_ends.push(Reverse((view.until, key)));
        }
        self.stats.shields += 1;
        self.actions.push_back(Action::Shield(view));
        let mut src_banned = false;
        let (mut bans, mut alerts) = (0, 0);
        for s in sources {
            let mine: Vec<&Failure> = window.iter().filter(|f| f.src == s).collect();
            if mine.iter().any(|f| f.verified) {
                let skip = mine.len().saturating_sub(MAX_EVIDENCE);
                let evidence: Vec<Evidence> = mine
                    .iter()
                    .skip(skip)
                    .map(|f| self.failure_evidence(f, &acc.name))
                    .collect();
                if self.shield_ban(now, s, i, ttl, evidence, &account) {
                    bans += 1;
                    src_banned |= s == src;
                    continue;
                }
            } else {
                self.alert(
                    now,
                    s,
                    rule_id.clone(),
                    format!("its failed authentications for the account {account}, now shielded, are unverified (no nonce issued to it alone was answered, no connection): alert only"),
                );
            }
            alerts += 1;
        }
        if let Some(sh) = self.shields.peek_mut(&key) {
            sh.view.bans += bans;
            sh.view.alerts += alerts;
        }
        src_banned
    }

    /// Bans `src` for a verified failure on a shielded account, or alerts
    /// when it must not be banned (`decide`: protected, registered,
    /// remembered); with IPv4 neighbourhoods on, enough addresses of one
    /// prefix banned by shields ban the prefix (the rule's own ban length,
    /// no recidive: a neighbourhood is not a repeat offender).
    fn shield_ban(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        i: usize,
        ttl: u64,
        evidence: Vec<Evidence>,
        account: &str,
    ) -> bool {
        if self.is_banned(src, now) {
            return true;
        }
        // One failure is never a full threshold: a registered endpoint is
        // spared even where a policy turned `spare_known` off.
        if !self.decide(now, src, i, ttl, evidence, (false, true), Some(account)) {
            return false;
        }
        let Some((len, after)) = self.cfg.shield_v4 else {
            return true;
        };
        let IpAddr::V4(_) = src else { return true };
        let Ok(net) = IpNet::new(src, len).map(|n| n.trunc()) else {
            return true;
        };
        let within = self.cfg.rules.rules[i]
            .thresholds
            .iter()
            .map(|t| t.within)
            .max()
            .unwrap_or(0);
        if !self.offenders.contains_key(&net) {
            self.offenders.insert(net, Vec::new());
        }
        let list = self.offenders.get_mut(&net).expect("inserted");
        list.retain(|&(a, t)| now.since(t) <= within && a != src);
        list.push((src, now));
        let keep = (after as usize).max(1);
        if list.len() > keep {
            list.drain(..list.len() - keep);
        }
        let n = list.len();
        let protected = self
            .cfg
            .never_ban
            .iter()
            .chain(self.allowed.iter().map(|(n, _)| n))
            .any(|p| p.contains(&net.network()) || net.contains(p));
        if n < after as usize || protected || self.bans.peek(&net).is_some_and(|b| b.until > now) {
            return true;
        }
        let Some(mut ban) = self.bans.peek(&IpNet::from(src)).cloned() else {
            return true;
        };
        ban.target = net;
        ban.ttl = ttl;
        ban.until = now.plus(ttl);
        ban.level = 0;
        ban.reason = format!(
            "{}: a failed authentication for the shielded account {account} → ban {} (neighbourhood: {n} addresses of {net} banned by account shields within {}; registered and remembered endpoints spared)",
            ban.rule,
            format_duration(ttl),
            format_duration(within)
        );
        self.bans.insert(net, ban.clone());
        self.stats.bans += 1;
        self.actions.push_back(Action::Ban(ban));
        true
    }

    fn alert(&mut self, now: Timestamp, addr: IpAddr, rule: String, message: String) {
        let key = (addr, rule);
        if let Some(w) = self.alert_windows.get_mut(&key) {
            if now < w.end {
                w.folded += 1;
                self.stats.alerts_folded += 1;
                return;
            }
            let end = w.end;
            self.close_alert_window(&key, end);
        }
        if self.alert_windows.len() >= MAX_ALERT_WINDOWS
            && let Some(k) = self.alert_windows.iter().next().map(|(k, _)| k.clone())
        {
            // The least recently used window, closed early, now.
            self.close_alert_window(&k, now);
        }
        if self.alert_ends.len() > 2 * MAX_ALERT_WINDOWS {
            // Ends of windows closed early: rebuilt from the open ones.
            self.alert_ends = self
                .alert_windows
                .iter()
                .map(|(k, w)| Reverse((w.end, k.0, k.1.clone())))
                .collect();
        }
        let end = now.plus(ALERT_WINDOW);
        self.alert_windows.insert(
            key.clone(),
            AlertWindow {
                end,
                message: message.clone(),
                folded: 0,
            },
        );
        self.alert_ends.push(Reverse((end, key.0, key.1.clone())));
        self.stats.alerts += 1;
        self.actions.push_back(Action::Alert {
            addr: key.0,
            rule: key.1,
            at: now,
            message,
            repeats: 0,
        });
    }

    /// Ends an alert window at `at`: when alerts were folded into it, one
    /// alert says how many.
    fn close_alert_window(&mut self, key: &(IpAddr, String), at: Timestamp) {
        let Some(w) = self.alert_windows.remove(key) else {
            return;
        };
        if w.folded > 0 {
            self.stats.alerts += 1;
            self.actions.push_back(Action::Alert {
                addr: key.0,
                rule: key.1.clone(),
                at,
                message: format!(
                    "{} more like this within {}: {}",
                    w.folded,
                    format_duration(ALERT_WINDOW),
                    w.message
                ),
                repeats: w.folded,
            });
        }
    }

    fn protected(&self, addr: IpAddr) -> bool {
        self.cfg.never_ban.iter().any(|n| n.contains(&addr))
            || self.allowed.iter().any(|(n, _)| n.contains(&addr))
    }
}

fn guard_rules(e: &Engine) -> &[crate::calls::CallRule] {
    e.calls.as_ref().map_or(&[], crate::calls::CallGuard::rules)
}

/// Pushes onto a per-source list holding at most `max` items, dropping the
/// oldest when full. Such lists are usually empty or hold one item, so the
/// first push allocates room for one, not four (per-source memory under a
/// flood).
fn push_bounded<T>(v: &mut Vec<T>, max: usize, x: T) {
    if v.len() >= max {
        v.remove(0);
    }
    if v.capacity() == 0 {
        *v = Vec::with_capacity(1);
    }
    v.push(x);
}

fn rule_summary(rule: &Rule) -> String {
    match rule.kind {
        RuleKind::Scanner => "scanner user agent".into(),
        _ => rule
            .thresholds
            .iter()
            .map(|t| format!("{} in {}", t.count, format_duration(t.within)))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// Verified events (slot 1) in the window `[now - within, now]`.
fn in_window_verified(times: &VecDeque<(Timestamp, u64)>, now: Timestamp, within: u64) -> u32 {
    let from = now.0.saturating_sub(within);
    let n = times
        .iter()
        .rev()
        .take_while(|&&(t, _)| t.0 >= from)
        .filter(|&&(_, v)| v == 1)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Events in the window `[now - within, now]`.
fn in_window(times: &VecDeque<(Timestamp, u64)>, now: Timestamp, within: u64) -> u32 {
    let from = now.0.saturating_sub(within);
    let n = times
        .iter()
        .rev()
        .take_while(|&&(t, _)| t.0 >= from)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Recidive: a target banned again within `within` of its previous ban's end
/// gets the first ladder step longer than that ban.
fn escalate(rec: Option<&Recidive>, prev: Option<&Ban>, now: Timestamp, ttl: u64) -> (u64, u32) {
    // An unverified ban is no previous offence.
    let (Some(rec), Some(prev)) = (rec, prev.filter(|p| p.verified)) else {
        return (ttl, 0);
    };
    if now.since(prev.until) > rec.within {
        return (ttl, 0);
    }
    let next = rec
        .ladder
        .iter()
        .copied()
        .find(|&step| step > prev.ttl)
        .unwrap_or_else(|| rec.ladder.last().copied().unwrap_or(ttl).max(prev.ttl));
    (ttl.max(next), prev.level + 1)
}
