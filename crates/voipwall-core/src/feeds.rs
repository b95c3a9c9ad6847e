//! Blocklist feeds (`[[feed]]`), the kernel and store side: each feed's
//! content lives in its own sets (single addresses in hash sets
//! `vw_feed_<name>_v4/_v6`, networks in interval sets
//! `vw_feed_<name>_net4/_net6`; one drop counter), is changed by difference (only networks that changed
//! move), and is kept in the store as the last good content, which is put
//! back at start before any fetch.
//!
//! A feed's content is not a ban: no store row, audit line or engine state
//! per entry (a million of them would drown all three). It is written by
//! the fleet thread through [`FeedSets`], its own netlink socket, so a
//! refresh of a million networks never passes through the engine loop.
//! What may never be listed (the host's own addresses, management, allow
//! list, trunks and peers, live sessions, protected infrastructure) is the
//! same [`voipwall_nft::protect::Protected`] list every ban is checked
//! against: [`guard`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use voipwall_nft::Family;
use voipwall_nft::sets::{origin_host_set, origin_net_set, origin_set, origin_set_of};
use voipwall_policy::Policy;
use voipwall_policy::feed::{Entry, Guard, changes, collapse};
use voipwall_store::{FeedRecord, Store};
use voipwall_sys::netlink::{Elem, SetElements};

/// How one feed is doing (`status`, metrics, `voipwall feeds`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FeedStatus {
    /// The feed's name.
    pub name: String,
    /// Where it comes from (URL or file).
    pub source: String,
    /// `apiban`, `voipbl` or `plain`.
    pub format: String,
    /// Networks in its kernel sets now.
    pub entries: usize,
    /// When the content in force was fetched (ms since the epoch).
    pub fetched_ms: Option<u64>,
    /// When the last attempt ended.
    pub tried_ms: Option<u64>,
    /// When the next attempt is due.
    pub next_ms: Option<u64>,
    /// Why the last attempt failed (the last good content stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Entries the last good fetch refused (too wide, own, protected).
    pub refused: usize,
    /// Lines of the last good fetch that were not an address or network.
    pub malformed: usize,
    /// Up to five refusals of the last good fetch, with their reasons.
    #[serde(default)]
    pub refusals: Vec<String>,
    /// What the last change added and removed in the kernel.
    pub added: usize,
    /// See `added`.
    pub removed: usize,
    /// How long the last good refresh took, fetch to kernel (ms).
    #[serde(default)]
    pub took_ms: u64,
    /// Of that, changing the kernel's sets (ms).
    #[serde(default)]
    pub kernel_ms: u64,
}

/// What a feed, a CrowdSec decision or a fleet record must never list,
/// from the policy and the host (the same protections a ban is checked
/// against) and `extra` (the fleet's central allow list and the other
/// nodes' addresses).
pub fn guard(policy: &Policy, own: &[IpAddr], extra: &[IpNet]) -> Guard {
    let host = crate::detection::engine_host(policy, own);
    let p = voipwall_nft::protect::Protected::new(Some(policy), &host);
    let mut protected = p.networks();
    protected.extend_from_slice(extra);
    protected.sort_unstable();
    protected.dedup();
    Guard {
        own: own.to_vec(),
        protected,
    }
}

/// The feeds' kernel sets and their last good content in the store.
pub struct FeedSets {
    sock: SetElements,
    store: Store,
    link: Arc<FeedLink>,
    /// `link.resets()` when `held` was last known to be right.
    seen_resets: u64,
    /// What each feed's sets hold, as far as voipwall knows (read from the
    /// kernel the first time, and again after a refused change).
    held: HashMap<String, Vec<Entry>>,
}

impl FeedSets {
    /// Opens the netlink socket (in the caller's network namespace) and
    /// the store.
    pub fn open(state_dir: &Path, link: Arc<FeedLink>) -> anyhow::Result<Self> {
        let db = state_dir.join("state.db");
        let store = Store::open_existing(&db)
            .with_context(|| format!("opening the store {}", db.display()))?;
        Ok(Self {
            sock: SetElements::open("voipwall").context("opening the netlink socket")?,
            store,
            seen_resets: link.resets(),
            link,
            held: HashMap::new(),
        })
    }

    /// An origin's last good content, as stored (keyed by its stem,
    /// `voipwall_nft::sets::feed_stem`).
    pub fn last_good(&self, stem: &str) -> Option<FeedRecord> {
        self.store.feed(stem).ok().flatten()
    }

    /// Records an origin's last good content (`rec.name` is its stem).
    pub fn save(&mut self, rec: &FeedRecord) -> anyhow::Result<()> {
        self.store
            .save_feed(rec)
            .with_context(|| format!("storing feed {}", rec.name))
    }

    /// Makes the sets of origin `stem` hold exactly `entries` (expired ones left
    /// out), moving only what changed: removals first (a wider network may
    /// replace narrower ones), then additions. Returns (added, removed).
    /// When the kernel refuses a change (an element it had already timed
    /// out, a set changed by hand), what it holds is read again and the
    /// change made once more from there.
    pub fn put(
        &mut self,
        stem: &str,
        entries: Vec<Entry>,
        now_ms: u64,
    ) -> anyhow::Result<(usize, usize)> {
        // An element about to expire is not worth adding (and may be gone
        // from the kernel before a removal reaches it).
        let live = |e: &Entry| e.1.is_none_or(|t| t > now_ms + 1_000);
        let new = collapse(entries.into_iter().filter(live).collect());
        // The table came back empty since: nothing voipwall remembers of
        // the sets is true any more.
        let resets = self.link.resets();
        if resets != self.seen_resets {
            self.held.clear();
            self.seen_resets = resets;
        }
        for attempt in 0..2 {
            let old = match self.held.remove(stem) {
                Some(h) if attempt == 0 => h,
                _ => self.read_kernel(stem, now_ms)?,
            };
            let old: Vec<Entry> = old.into_iter().filter(live).collect();
            let (add, remove) = changes(&old, &new);
            match self.write(stem, &add, &remove, now_ms) {
                Ok(()) => {
                    let n = (add.len(), remove.len());
                    self.held.insert(stem.to_string(), new);
                    return Ok(n);
                }
                Err(e) if attempt == 0 => {
                    tracing::warn!(origin = stem, error = %format!("{e:#}"), "The kernel refused a change of an origin's sets; reading them again.");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the second attempt returns")
    }

    fn read_kernel(&mut self, stem: &str, now_ms: u64) -> anyhow::Result<Vec<Entry>> {
        let hint = "(is the policy with this feed or [crowdsec] applied?)";
        let mut out = Vec::new();
        for f in [Family::V4, Family::V6] {
            let set = origin_set(stem, f);
            let got = voipwall_sys::query::set_elements("voipwall", &set)
                .with_context(|| format!("reading {set} {hint}"))?;
            out.extend(
                got.into_iter()
                    .map(|e| (IpNet::from(e.key), e.expires_ms.map(|l| now_ms + l))),
            );
            let set = origin_net_set(stem, f);
            let got = voipwall_sys::query::interval_entries("voipwall", &set)
                .with_context(|| format!("reading {set} {hint}"))?;
            out.extend(
                got.into_iter()
                    .map(|(net, left)| (net, left.map(|l| now_ms + l))),
            );
        }
        Ok(collapse(out))
    }

    fn write(
        &mut self,
        stem: &str,
        add: &[Entry],
        remove: &[IpNet],
        now_ms: u64,
    ) -> anyhow::Result<()> {
        // Per set, in the order the batches must go: removals everywhere
        // first (a wider network may replace narrower ones).
        let mut gone: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        for n in remove {
            gone.entry(origin_set_of(stem, n)).or_default().push(*n);
        }
        for (set, nets) in &gone {
            let r = if origin_host_set(set) {
                let addrs: Vec<IpAddr> = nets.iter().map(IpNet::addr).collect();
                self.sock.delete(set, &addrs)
            } else {
                self.sock.delete_intervals(set, nets)
            };
            r.with_context(|| format!("removing {} entries from {set}", nets.len()))?;
        }
        let mut new: BTreeMap<String, Vec<(IpNet, Option<u64>)>> = BTreeMap::new();
        for (n, exp) in add {
            let t = voipwall_sys::bans::clamp_timeout(exp.map(|t| t.saturating_sub(now_ms)));
            new.entry(origin_set_of(stem, n)).or_default().push((*n, t));
        }
        for (set, nets) in &new {
            let r = if origin_host_set(set) {
                let elems: Vec<Elem> = nets
                    .iter()
                    .map(|(n, t)| Elem {
                        addr: n.addr(),
                        timeout_ms: *t,
                    })
                    .collect();
                self.sock.add(set, &elems)
            } else {
                self.sock.add_intervals(set, nets)
            };
            r.with_context(|| format!("adding {} entries to {set}", nets.len()))?;
        }
        Ok(())
    }

    /// Forgets origins the policy no longer has (`stems`: every feed and
    /// CrowdSec origin in force): their stored content, and their kernel
    /// sets once no rule uses them (after the apply that took them out).
    /// Returns the sets deleted.
    pub fn forget_except(&mut self, stems: &[String]) -> Vec<String> {
        if let Err(e) = self.store.keep_feeds(stems) {
            tracing::warn!(error = %e, "Cannot forget old origins in the store.");
        }
        self.held.retain(|k, _| stems.contains(k));
        let mut gone = Vec::new();
        for set in voipwall_sys::nft::set_names().unwrap_or_default() {
            let Some(stem) = voipwall_nft::sets::origin_of(&set) else {
                continue;
            };
            if stems.iter().any(|n| n == stem) {
                continue;
            }
            if voipwall_sys::nft::delete_set(&set).is_ok() {
                gone.push(set);
            }
        }
        gone
    }
}

/// What the fleet thread works from: the feeds and CrowdSec settings of
/// the policy in force and what they must never list.
#[derive(Debug, Clone, Default)]
pub struct FeedConfig {
    /// `[[feed]]`.
    pub feeds: Vec<voipwall_policy::FeedSettings>,
    /// `[crowdsec]`.
    pub crowdsec: Option<voipwall_policy::CrowdsecSettings>,
    /// `[fleet]`.
    pub fleet: Option<voipwall_policy::FleetSettings>,
    /// See [`guard`].
    pub guard: Guard,
}

impl FeedConfig {
    /// From a policy, the host's addresses and what the fleet says is
    /// never banned.
    pub fn of(policy: &Policy, own: &[IpAddr], extra: &[IpNet]) -> Self {
        Self {
            feeds: policy.feeds.clone(),
            crowdsec: policy.crowdsec.clone(),
            fleet: policy.fleet.clone(),
            guard: guard(policy, own, extra),
        }
    }

    /// The stems of every origin set this configuration has (the rest are
    /// left over from an earlier policy).
    pub fn stems(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .feeds
            .iter()
            .map(|f| voipwall_nft::sets::feed_stem(&f.name))
            .collect();
        if self
            .crowdsec
            .as_ref()
            .is_some_and(|c| c.bouncer_key_file.is_some())
        {
            v.extend(
                voipwall_policy::CROWDSEC_ORIGINS
                    .iter()
                    .map(|o| voipwall_nft::sets::crowdsec_stem(o)),
            );
        }
        if self.fleet.is_some() {
            v.push(voipwall_nft::sets::FLEET_STEM.to_string());
        }
        v
    }
}

/// voipwall as CrowdSec's bouncer, for `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BouncerStatus {
    /// The LAPI's URL.
    pub lapi_url: String,
    /// The last pull succeeded.
    pub connected: bool,
    /// When the last pull succeeded (ms since the epoch).
    pub last_pull_ms: Option<u64>,
    /// When the last full resync succeeded (every timeout re-asserted).
    pub last_full_ms: Option<u64>,
    /// Decisions enforced, by origin set.
    pub decisions: BTreeMap<String, usize>,
    /// Decisions left out since start: not a ban, not an address or range.
    pub skipped: u64,
    /// Decisions refused since start because they would ban something
    /// protected (management, allow list, trunks, this host...).
    pub protected: u64,
    /// The last few left out, with their reasons.
    #[serde(default)]
    pub skipped_examples: Vec<String>,
    /// Why the last pull failed (what is in the kernel stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Pulls failed in a row.
    pub failures: u32,
}

/// voipwall as CrowdSec's watcher, for `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WatcherStatus {
    /// The LAPI's URL.
    pub lapi_url: String,
    /// The machine id it logs in as.
    pub machine_id: String,
    /// Logged in, with a token in force.
    pub logged_in: bool,
    /// Alerts posted since start.
    pub posted: u64,
    /// Decisions deleted in LAPI since start (an operator's unban).
    #[serde(default)]
    pub lifted: u64,
    /// Alerts waiting (in the store) for LAPI.
    pub queued: usize,
    /// Alerts dropped because the queue was full (oldest first).
    pub dropped: u64,
    /// Why the last login or post failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One other node of a Redis Streams fleet, as this node sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetNode {
    /// The last record read from its stream.
    pub last_id: String,
    /// When it was read (ms since the epoch).
    pub last_seen_ms: Option<u64>,
    /// How far behind the record's own time the reading was (ms).
    pub lag_ms: u64,
    /// Records read since start.
    pub records: u64,
    /// Records not obeyed since start (protected, allow list, over a
    /// bound, forged).
    pub refused: u64,
    /// Its bans this node holds.
    pub held: usize,
}

/// The Redis Streams fleet, for `status` and `voipwall fleet status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetStatus {
    /// Where Redis is.
    pub redis: String,
    /// This node's name.
    pub node: String,
    /// Redis answered the last call.
    pub connected: bool,
    /// Records this node added to its stream since start.
    pub published: u64,
    /// Records waiting (in the store) for Redis.
    pub queued: usize,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// Entries of the central allow list.
    pub allow: usize,
    /// Bans from other nodes held in the kernel.
    pub held: usize,
    /// The other nodes.
    pub nodes: BTreeMap<String, FleetNode>,
    /// Propagation (a ban live on its node → in this node's kernel) over
    /// the last 10,000 bans from other nodes: how many, p50 and p99 (µs;
    /// across hosts, their clocks' difference is in it).
    #[serde(default)]
    pub propagation_samples: usize,
    /// See `propagation_samples`.
    #[serde(default)]
    pub propagation_p50_us: Option<u64>,
    /// See `propagation_samples`.
    #[serde(default)]
    pub propagation_p99_us: Option<u64>,
    /// The last record not obeyed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
    /// Why the last call to Redis failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The engine thread's side of the fleet thread: the configuration it
/// replaces on each reload (with a version the fleet thread watches) and
/// the feeds' status it reads for `status`.
#[derive(Debug, Default)]
pub struct FeedLink {
    config: Mutex<(u64, FeedConfig)>,
    /// Every feed's status.
    pub board: Mutex<Vec<FeedStatus>>,
    /// The CrowdSec bouncer's status.
    pub bouncer: Mutex<Option<BouncerStatus>>,
    /// The CrowdSec watcher's status.
    pub watcher: Mutex<Option<WatcherStatus>>,
    /// The Redis Streams fleet's status.
    pub fleet: Mutex<Option<FleetStatus>>,
    /// Bumped when the table vanished and came back with empty sets.
    resets: std::sync::atomic::AtomicU64,
}

impl FeedLink {
    /// A link holding `config` (version 1).
    pub fn new(config: FeedConfig) -> Arc<Self> {
        Arc::new(Self {
            config: Mutex::new((1, config)),
            board: Mutex::default(),
            bouncer: Mutex::default(),
            watcher: Mutex::default(),
            fleet: Mutex::default(),
            resets: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Replaces the configuration (a reload).
    pub fn set(&self, config: FeedConfig) {
        let mut c = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *c = (c.0 + 1, config);
    }

    /// The configuration and its version.
    pub fn get(&self) -> (u64, FeedConfig) {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The configuration's version only.
    pub fn version(&self) -> u64 {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// The table vanished and was put back: every origin's sets are
    /// empty, whatever voipwall remembers of them.
    pub fn table_gone(&self) {
        self.resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times the table came back empty (tasks that hold content
    /// put it back when this moves).
    pub fn resets(&self) -> u64 {
        self.resets.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every feed's status now.
    pub fn statuses(&self) -> Vec<FeedStatus> {
        self.board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
