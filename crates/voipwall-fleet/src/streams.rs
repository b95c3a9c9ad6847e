//! A Redis Streams fleet: each node `XADD`s every ban it makes (detection,
//! CLI, API) and every lift to its own stream `<stream>:<node>`, and
//! `XREAD`s the other nodes' streams from the last ids it applied (kept in
//! the store), into its `fleet` sets (`vw_fleet_*`) with the time each ban
//! has left. Redis's ACL users keep a node to writing its own stream; a
//! record that names another node than its stream's, bans something
//! protected or in the central allow list (`<stream>:allow`), or comes
//! from a node over its rate or count bound is reported, not obeyed. The
//! other nodes' addresses (carried by their records) and the central allow
//! list are never banned by local detection either (an alert instead).
//! Redis down: bans wait in the store's outbox, reads resume from the last
//! ids; what the kernel holds stays.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use voipwall_core::daemon::ControlHandle;
use voipwall_core::feeds::{FeedLink, FleetStatus};
use voipwall_detect::Timestamp;
use voipwall_policy::FleetSettings;
use voipwall_policy::feed::{Entry, Guard};
use voipwall_store::Store;

use crate::feeds::{Sets, blocking};
use crate::resp::{Conn, Reply, parse_addr};

/// The origin stem of the fleet's sets.
pub const STEM: &str = "fleet";
/// The outbox's kind for records waiting for Redis.
const KIND: &str = "fleet-record";
/// The most records kept while Redis is away.
const QUEUE_CAP: usize = 100_000;
/// How long one Redis call may take (XREAD blocks for at most 1 s).
const WAIT: Duration = Duration::from_secs(5);

/// What the reader and the writer share.
#[derive(Default)]
struct Shared {
    /// The central allow list.
    allow: Vec<IpNet>,
    /// The other nodes' addresses, from their records.
    nodes: BTreeMap<String, Vec<IpAddr>>,
    status: FleetStatus,
}

type State = Arc<Mutex<Shared>>;

fn lock(s: &State) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The record a ban or a lift becomes on this node's stream: field, value
/// pairs. `None` for events that are not shared.
pub fn record(ev: &Value, node: &str, own: &[IpAddr]) -> Option<Vec<(String, String)>> {
    let kind = match ev["kind"].as_str()? {
        "ban" | "manual-ban" => "ban",
        "lift" => "lift",
        _ => return None,
    };
    let target: IpNet = ev["target"].as_str()?.parse().ok()?;
    let mut f = vec![
        ("v".to_string(), "1".to_string()),
        ("kind".into(), kind.into()),
        ("target".into(), target.to_string()),
        ("node".into(), node.into()),
        (
            "addrs".into(),
            own.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    if kind == "ban" {
        let until = ev["until_ms"].as_u64()?;
        let rule = ev["rule"].as_str().unwrap_or("manual");
        let reason = ev["reason"].as_str().unwrap_or("");
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("{rule}\n{target}\n{reason}").as_bytes());
        f.push(("until_ms".into(), until.to_string()));
        // When the ban was live on this node (µs): the other nodes measure
        // propagation from it (one clock in the lab; NTP's error between
        // hosts).
        if let Some(at) = ev["live_us"].as_u64() {
            f.push(("at_us".into(), at.to_string()));
        }
        f.push(("rule".into(), rule.chars().take(64).collect()));
        f.push(("reason".into(), reason.chars().take(200).collect()));
        f.push((
            "digest".into(),
            digest.iter().take(8).map(|b| format!("{b:02x}")).collect(),
        ));
    }
    Some(f)
}

/// A record read from node `from`'s stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Ban `target` until `until_ms`.
    Ban {
        /// What.
        target: IpNet,
        /// Until when (ms since the epoch).
        until_ms: u64,
        /// When it was live on its node (µs since the epoch), if said.
        at_us: Option<u64>,
        /// The node's own addresses.
        addrs: Vec<IpAddr>,
    },
    /// Lift `target`.
    Lift {
        /// What.
        target: IpNet,
        /// The node's own addresses.
        addrs: Vec<IpAddr>,
    },
}

/// Reads one record of node `from`'s stream; an error says why it is not
/// obeyed (a record naming another node than its stream's is forged).
pub fn read(fields: &[(String, String)], from: &str) -> Result<Read, String> {
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    if get("v") != Some("1") {
        return Err("not a version-1 record".into());
    }
    let node = get("node").unwrap_or("");
    if node != from {
        return Err(format!("names node `{node}` on node `{from}`'s stream"));
    }
    let target: IpNet = get("target")
        .and_then(|t| t.parse().ok())
        .ok_or("no target")?;
    let target = target.trunc();
    let addrs = get("addrs")
        .unwrap_or("")
        .split(',')
        .filter_map(|a| a.parse().ok())
        .take(MAX_NODE_ADDRS)
        .collect();
    match get("kind") {
        Some("ban") => Ok(Read::Ban {
            target,
            until_ms: get("until_ms")
                .and_then(|u| u.parse().ok())
                .ok_or("no until_ms")?,
            at_us: get("at_us").and_then(|u| u.parse().ok()),
            addrs,
        }),
        Some("lift") => Ok(Read::Lift { target, addrs }),
        k => Err(format!("unknown kind {k:?}")),
    }
}

/// Runs the fleet until `stop`, following the configuration's changes.
pub(crate) async fn run(
    link: Arc<FeedLink>,
    sets: Sets,
    mut events: broadcast::Receiver<Value>,
    state_dir: PathBuf,
    control: ControlHandle,
    stop: Arc<AtomicBool>,
) {
    let mut version = 0;
    let mut resets = link.resets();
    let mut running: Option<Running> = None;
    let (tx, _) = broadcast::channel::<Value>(4096);
    while !stop.load(Ordering::Relaxed) {
        if link.resets() != resets {
            // The table came back empty: the reader places what it holds.
            resets = link.resets();
            if let Some(r) = &running {
                r.replace.store(true, Ordering::Relaxed);
            }
        }
        if link.version() != version {
            let (v, cfg) = link.get();
            version = v;
            let same = match (&running, &cfg.fleet) {
                (Some(r), Some(f)) => same_settings(&r.settings, f),
                (None, None) => true,
                _ => false,
            };
            if same {
                // A reload that kept [fleet]: the guard may have changed;
                // everything held is placed again against it.
                if let Some(r) = &running {
                    *r.guard.lock().unwrap_or_else(PoisonError::into_inner) = cfg.guard.clone();
                    r.replace.store(true, Ordering::Relaxed);
                }
            } else {
                if let Some(r) = running.take() {
                    r.halt.store(true, Ordering::Relaxed);
                }
                if let Some(s) = cfg.fleet.clone() {
                    let halt = Arc::new(AtomicBool::new(false));
                    let guard = Arc::new(Mutex::new(cfg.guard.clone()));
                    let replace = Arc::new(AtomicBool::new(false));
                    match Node::start(
                        s.clone(),
                        &state_dir,
                        guard.clone(),
                        replace.clone(),
                        &link,
                        &sets,
                        &control,
                    )
                    .await
                    {
                        Ok(node) => {
                            let state = node.state.clone();
                            tokio::spawn(reader(node, halt.clone(), stop.clone(), link.clone()));
                            tokio::spawn(writer(
                                s.clone(),
                                state_dir.clone(),
                                cfg.guard.own.clone(),
                                state,
                                tx.subscribe(),
                                halt.clone(),
                                stop.clone(),
                                link.clone(),
                            ));
                            running = Some(Running {
                                settings: s,
                                halt,
                                guard,
                                replace,
                            });
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "The fleet cannot start.");
                        }
                    }
                } else {
                    *link.fleet.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    // No fleet: nothing of it is never-banned any more.
                    control.fleet_allow_replace(Vec::new());
                }
            }
        }
        // The engine's bans and lifts, to the writer (if any), as they
        // come; the configuration is looked at again at least every 200 ms.
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Ok(v)) => {
                let _ = tx.send(v);
            }
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                tracing::warn!(missed = n, "The fleet missed bans (its queue was full).");
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {}
        }
    }
    if let Some(r) = running {
        r.halt.store(true, Ordering::Relaxed);
    }
}

/// A running fleet node: how it was configured and its handles.
struct Running {
    settings: FleetSettings,
    halt: Arc<AtomicBool>,
    guard: Arc<Mutex<Guard>>,
    replace: Arc<AtomicBool>,
}

/// Whether two `[fleet]` sections ask for the same fleet (where they were
/// written does not matter: an edit elsewhere in the file must not
/// restart it).
fn same_settings(a: &FleetSettings, b: &FleetSettings) -> bool {
    let mut b = b.clone();
    b.origin = a.origin.clone();
    *a == b
}

/// The widest target a fleet record may ban: an IPv4 /16, an IPv6 /32
/// (a node may ban networks by hand, but one record must not drop a whole
/// provider on every node).
fn too_wide(t: &IpNet) -> bool {
    match t {
        IpNet::V4(n) => n.prefix_len() < 16,
        IpNet::V6(n) => n.prefix_len() < 32,
    }
}

/// The most entries of the central allow list taken, and the most
/// addresses a node's records may declare for it.
const MAX_ALLOW: usize = 10_000;
const MAX_NODE_ADDRS: usize = 16;

/// The reader's side: what it holds and where it is.
struct Node {
    s: FleetSettings,
    store: Store,
    sets: Sets,
    guard: Arc<Mutex<Guard>>,
    /// Set when the guard changed: place everything again.
    replace: Arc<AtomicBool>,
    /// Bans held per node (the `max_active` bound).
    counts: HashMap<String, usize>,
    control: ControlHandle,
    state: State,
    /// (node, target) → until.
    held: HashMap<(String, IpNet), u64>,
    cursors: BTreeMap<String, String>,
    /// node → (minute, records that minute).
    rate: HashMap<String, (u64, u32)>,
    /// What local detection was last told is never banned.
    told: BTreeSet<IpNet>,
    /// `held` changed since it was stored.
    dirty: bool,
    /// When the bans of the batch being applied were live on their nodes.
    arrived: Vec<u64>,
    /// Propagation times (µs): their node's ban live → this node's kernel.
    propagation: std::collections::VecDeque<u64>,
    /// `cursors` moved since they were stored.
    cursors_dirty: bool,
    persisted_ms: u64,
}

/// A connection as this node's ACL user (its password read from its file
/// each time: a rotated password needs no restart).
async fn connect(s: &FleetSettings, addr: &crate::resp::Addr) -> Result<Conn, String> {
    let password = std::fs::read_to_string(&s.password_file)
        .map(|p| p.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("the Redis password {}: {e}", s.password_file))?;
    Conn::open(addr, &s.user, &password, WAIT).await
}

impl Node {
    /// Opens the store and puts back, before any network, what the fleet
    /// held and its central allow list.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        s: FleetSettings,
        state_dir: &std::path::Path,
        guard: Arc<Mutex<Guard>>,
        replace: Arc<AtomicBool>,
        link: &FeedLink,
        sets: &Sets,
        control: &ControlHandle,
    ) -> Result<Self, String> {
        let store = Store::open_existing(&state_dir.join("state.db")).map_err(|e| e.to_string())?;
        let now = voipwall_core::daemon::now_ms();
        let state: State = Arc::default();
        {
            let mut st = lock(&state);
            st.status.redis = s.redis.clone();
            st.status.node = s.node.clone();
            st.nodes = store
                .kv(&format!("fleet:nodes:{}", s.stream))
                .ok()
                .flatten()
                .map(|t| {
                    t.lines()
                        .filter_map(|l| {
                            let (n, a) = l.split_once(' ')?;
                            let addrs: Vec<IpAddr> = a
                                .split(',')
                                .filter_map(|x| x.parse().ok())
                                .take(MAX_NODE_ADDRS)
                                .collect();
                            Some((n.to_string(), addrs))
                        })
                        .filter(|(n, _)| s.nodes.contains(n))
                        .collect()
                })
                .unwrap_or_default();
            st.allow = store
                .kv(&format!("fleet:allow:{}", s.stream))
                .ok()
                .flatten()
                .map(|t| t.split(' ').filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_default();
        }
        let mut cursors = BTreeMap::new();
        for n in &s.nodes {
            let id = store
                .kv(&format!("fleet:last:{}:{n}", s.stream))
                .ok()
                .flatten()
                .unwrap_or_else(|| "0-0".into());
            cursors.insert(n.clone(), id);
        }
        let mut node = Self {
            held: HashMap::new(),
            s,
            store,
            sets: sets.clone(),
            guard,
            replace,
            counts: HashMap::new(),
            control: control.clone(),
            state,
            cursors,
            rate: HashMap::new(),
            told: BTreeSet::new(),
            dirty: false,
            arrived: Vec::new(),
            propagation: std::collections::VecDeque::new(),
            cursors_dirty: false,
            persisted_ms: 0,
        };
        // The bans the fleet held, by node, as stored: enforced again
        // before Redis is reached (it may be down, or the network not up).
        if let Ok(Some(text)) = node.store.kv(&node.held_key()) {
            for l in text.lines() {
                let mut it = l.split(' ');
                if let (Some(n), Some(t), Some(u)) = (it.next(), it.next(), it.next())
                    && let (Ok(t), Ok(u)) = (t.parse::<IpNet>(), u.parse::<u64>())
                    && u > now
                {
                    node.held.insert((n.to_string(), t), u);
                }
            }
        }
        node.place(now).await;
        // What detection was told by an earlier fleet is replaced whole.
        node.control.fleet_allow_replace(Vec::new());
        node.tell_detection();
        *link.fleet.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(lock(&node.state).status.clone());
        Ok(node)
    }

    /// The fleet's never-ban list to local detection, when it changed.
    fn tell_detection(&mut self) {
        let now: BTreeSet<IpNet> = {
            let st = lock(&self.state);
            st.allow
                .iter()
                .copied()
                .chain(st.nodes.values().flatten().map(|a| IpNet::from(*a)))
                .collect()
        };
        let add: Vec<IpNet> = now.difference(&self.told).copied().collect();
        let remove: Vec<IpNet> = self.told.difference(&now).copied().collect();
        if !add.is_empty() || !remove.is_empty() {
            self.control.fleet_allow(add, remove);
            self.told = now;
        }
    }

    /// Why a ban from the stream is not obeyed, if it is not.
    fn refuse(&self, target: &IpNet) -> Option<String> {
        if too_wide(target) {
            return Some(format!(
                "/{} is wider than a fleet ban may be (IPv4 /16, IPv6 /32)",
                target.prefix_len()
            ));
        }
        if let Some(r) = self
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refuse(target)
        {
            return Some(r);
        }
        let st = lock(&self.state);
        if let Some(a) = st
            .allow
            .iter()
            .find(|a| a.contains(&target.addr()) || target.contains(&a.addr()))
        {
            return Some(format!("it overlaps {a} of the central allow list"));
        }
        for (n, addrs) in &st.nodes {
            if let Some(a) = addrs.iter().find(|a| target.contains(*a)) {
                return Some(format!("it covers {a}, fleet node {n}"));
            }
        }
        None
    }

    /// Puts what the fleet holds into its sets and the store.
    async fn place(&mut self, now: u64) {
        self.held.retain(|_, u| *u > now);
        self.counts.clear();
        for (n, _) in self.held.keys() {
            *self.counts.entry(n.clone()).or_default() += 1;
        }
        let entries: Vec<Entry> = self
            .held
            .iter()
            .filter(|((_, t), _)| self.refuse(t).is_none())
            .map(|((_, t), u)| (*t, Some(*u)))
            .collect();
        match blocking(&self.sets, move |s| s.put(STEM, entries, now)).await {
            Ok(_) => {
                self.dirty = true;
                let live = voipwall_core::daemon::now_us();
                for at in self.arrived.drain(..) {
                    if self.propagation.len() >= 10_000 {
                        self.propagation.pop_front();
                    }
                    self.propagation.push_back(live.saturating_sub(at));
                }
                let mut v: Vec<u64> = self.propagation.iter().copied().collect();
                v.sort_unstable();
                let p = |q: f64| v.get(((v.len() - 1) as f64 * q).round() as usize).copied();
                let mut st = lock(&self.state);
                st.status.propagation_samples = v.len();
                if !v.is_empty() {
                    st.status.propagation_p50_us = p(0.5);
                    st.status.propagation_p99_us = p(0.99);
                }
            }
            Err(e) => {
                lock(&self.state).status.error = Some(format!("{e:#}"));
            }
        }
        let mut st = lock(&self.state);
        st.status.held = self.held.len();
        for n in st.status.nodes.values_mut() {
            n.held = 0;
        }
        for (node, _) in self.held.keys() {
            st.status.nodes.entry(node.clone()).or_default().held += 1;
        }
    }

    fn held_key(&self) -> String {
        format!("fleet:held:{}", self.s.stream)
    }

    /// Stores what the fleet holds, by node, and the ids read so far (at
    /// most once a second: a crash reads at most that much again, and
    /// applying a record twice changes nothing).
    fn persist(&mut self, now: u64, force: bool) {
        if !(self.dirty || self.cursors_dirty) || (!force && now < self.persisted_ms + 1_000) {
            return;
        }
        use std::fmt::Write as _;
        let mut text = String::with_capacity(self.held.len() * 40);
        for ((n, t), u) in &self.held {
            let _ = writeln!(text, "{n} {t} {u}");
        }
        let key = self.held_key();
        let nodes: String = lock(&self.state)
            .nodes
            .iter()
            .map(|(n, a)| {
                let a: Vec<String> = a.iter().map(ToString::to_string).collect();
                format!("{n} {}\n", a.join(","))
            })
            .collect();
        let nodes_key = format!("fleet:nodes:{}", self.s.stream);
        let r = self.store.set_kv(&key, &text).and_then(|()| {
            self.store.set_kv(&nodes_key, &nodes)?;
            for (n, id) in &self.cursors {
                self.store
                    .set_kv(&format!("fleet:last:{}:{n}", self.s.stream), id)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                self.dirty = false;
                self.cursors_dirty = false;
                self.persisted_ms = now;
            }
            Err(e) => tracing::warn!(error = %e, "The fleet's state could not be stored."),
        }
    }

    /// Applies one batch of records; returns whether anything changed.
    fn apply(&mut self, from: &str, id: &str, fields: &[(String, String)], now: u64) -> bool {
        let id_ms: u64 = id
            .split('-')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        // The rate is counted in the records' own minutes (Redis's ids):
        // a node read again after an outage is not over its rate for
        // having been away.
        let minute = id_ms / 60_000;
        let verdict = match read(fields, from) {
            Ok(rec) => {
                let addrs = match &rec {
                    Read::Ban { addrs, .. } | Read::Lift { addrs, .. } => addrs.clone(),
                };
                if !addrs.is_empty() {
                    let mut st = lock(&self.state);
                    if st.nodes.get(from) != Some(&addrs) {
                        st.nodes.insert(from.to_string(), addrs);
                        self.dirty = true;
                    }
                }
                match rec {
                    Read::Lift { target, .. } => {
                        if self.held.remove(&(from.to_string(), target)).is_some()
                            && let Some(c) = self.counts.get_mut(from)
                        {
                            *c = c.saturating_sub(1);
                        }
                        Ok(true)
                    }
                    Read::Ban {
                        target,
                        until_ms,
                        at_us,
                        ..
                    } => {
                        if until_ms <= now {
                            // Over already (a node read again after a
                            // while): nothing to do, nothing counted.
                            return self.note(from, id, id_ms, now, Ok(false));
                        }
                        let count = self.counts.get(from).copied().unwrap_or(0);
                        let sent = {
                            let r = self.rate.entry(from.to_string()).or_insert((minute, 0));
                            if r.0 != minute {
                                *r = (minute, 0);
                            }
                            r.1 += 1;
                            r.1
                        };
                        if sent > self.s.max_per_minute {
                            Err(format!(
                                "node {from} sent more than {} bans this minute",
                                self.s.max_per_minute
                            ))
                        } else if count >= self.s.max_active as usize {
                            Err(format!(
                                "node {from} holds {} bans already (max_active)",
                                self.s.max_active
                            ))
                        } else if let Some(why) = self.refuse(&target) {
                            Err(why)
                        } else {
                            if self
                                .held
                                .insert((from.to_string(), target), until_ms)
                                .is_none()
                            {
                                *self.counts.entry(from.to_string()).or_default() += 1;
                            }
                            if let Some(at) = at_us {
                                self.arrived.push(at);
                            }
                            Ok(true)
                        }
                    }
                }
            }
            Err(e) => Err(e),
        };
        self.note(from, id, id_ms, now, verdict)
    }

    /// Counts a record in its node's status; returns whether it changed
    /// what the fleet holds.
    fn note(
        &mut self,
        from: &str,
        id: &str,
        id_ms: u64,
        now: u64,
        verdict: Result<bool, String>,
    ) -> bool {
        let mut st = lock(&self.state);
        let n = st.status.nodes.entry(from.to_string()).or_default();
        n.last_id = id.to_string();
        n.last_seen_ms = Some(now);
        n.lag_ms = now.saturating_sub(id_ms);
        n.records += 1;
        match verdict {
            Ok(changed) => changed,
            Err(why) => {
                n.refused += 1;
                if n.refused <= 10 || n.refused.is_power_of_two() {
                    tracing::warn!(node = from, id, reason = %why, "A fleet record is not obeyed.");
                }
                st.status.last_refusal = Some(format!("{from} {id}: {why}"));
                false
            }
        }
    }
}

/// Reads the other nodes' streams until `halt` or `stop`.
async fn reader(mut node: Node, halt: Arc<AtomicBool>, stop: Arc<AtomicBool>, link: Arc<FeedLink>) {
    let addr = match parse_addr(&node.s.redis) {
        Ok(a) => a,
        Err(e) => {
            lock(&node.state).status.error = Some(e);
            return;
        }
    };
    let mut conn: Option<Conn> = None;
    let mut failures = 0u32;
    while !halt.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        if node.cursors.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if conn.is_none() {
            match connect(&node.s, &addr).await {
                Ok(c) => {
                    conn = Some(c);
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    note_error(&node.state, &link, e, failures == 1);
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        node.persist(voipwall_core::daemon::now_ms(), false);
        if node.replace.swap(false, Ordering::Relaxed) {
            node.place(voipwall_core::daemon::now_ms()).await;
        }
        let mut args: Vec<Vec<u8>> = vec![
            b"XREAD".to_vec(),
            b"COUNT".to_vec(),
            b"1000".to_vec(),
            b"BLOCK".to_vec(),
            b"1000".to_vec(),
            b"STREAMS".to_vec(),
        ];
        let names: Vec<String> = node.cursors.keys().cloned().collect();
        for n in &names {
            args.push(format!("{}:{n}", node.s.stream).into_bytes());
        }
        for n in &names {
            args.push(node.cursors[n].clone().into_bytes());
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let reply = c.call(&refs, WAIT).await;
        let reply = match reply {
            Ok(Reply::Error(e)) => Err(format!("Redis refused XREAD: {e}")),
            Ok(r) => Ok(r),
            Err(e) => Err(e),
        };
        match reply {
            Ok(r) => {
                let now = voipwall_core::daemon::now_ms();
                let mut changed = false;
                let mut moved = false;
                for stream in r.items() {
                    let key = stream
                        .items()
                        .first()
                        .and_then(Reply::text)
                        .unwrap_or_default();
                    let Some(from) = key
                        .strip_prefix(&format!("{}:", node.s.stream))
                        .map(str::to_string)
                    else {
                        continue;
                    };
                    for entry in stream.items().get(1).map(Reply::items).unwrap_or_default() {
                        let id = entry
                            .items()
                            .first()
                            .and_then(Reply::text)
                            .unwrap_or_default();
                        let flat: Vec<String> = entry
                            .items()
                            .get(1)
                            .map(Reply::items)
                            .unwrap_or_default()
                            .iter()
                            .filter_map(Reply::text)
                            .collect();
                        let fields: Vec<(String, String)> = flat
                            .chunks(2)
                            .filter(|c| c.len() == 2)
                            .map(|c| (c[0].clone(), c[1].clone()))
                            .collect();
                        changed |= node.apply(&from, &id, &fields, now);
                        node.cursors.insert(from.clone(), id);
                        moved = true;
                    }
                }
                if changed {
                    node.place(now).await;
                }
                node.tell_detection();
                // The ids are stored with what they brought, after the
                // kernel has it.
                if moved {
                    node.cursors_dirty = true;
                }
                node.persist(now, false);
                {
                    let mut st = lock(&node.state);
                    st.status.connected = true;
                    st.status.error = None;
                }
                publish(&node.state, &link);
            }
            Err(e) => {
                conn = None;
                failures += 1;
                note_error(&node.state, &link, e, failures == 1);
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
    node.persist(voipwall_core::daemon::now_ms(), true);
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << failures.min(8)).min(30_000))
}

fn note_error(state: &State, link: &FeedLink, e: String, log: bool) {
    if log {
        tracing::warn!(error = %e, "The fleet cannot reach Redis; the kernel keeps what it has, bans wait in the store.");
    }
    {
        let mut st = lock(state);
        st.status.connected = false;
        st.status.error = Some(e);
    }
    publish(state, link);
}

fn publish(state: &State, link: &FeedLink) {
    let s = lock(state).status.clone();
    *link.fleet.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
}

/// Sends this node's bans and lifts, reads the central allow list, trims.
#[allow(clippy::too_many_arguments)]
async fn writer(
    s: FleetSettings,
    state_dir: PathBuf,
    own: Vec<IpAddr>,
    state: State,
    mut events: broadcast::Receiver<Value>,
    halt: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    link: Arc<FeedLink>,
) {
    let Ok(mut store) = Store::open_existing(&state_dir.join("state.db")) else {
        tracing::error!("The fleet's writer cannot open the store.");
        return;
    };
    let addr = match parse_addr(&s.redis) {
        Ok(a) => a,
        Err(e) => {
            lock(&state).status.error = Some(e);
            return;
        }
    };
    let key = format!("{}:{}", s.stream, s.node);
    let allow_key = format!("{}:allow", s.stream);
    let mut conn: Option<Conn> = None;
    let mut failures = 0u32;
    let mut next_try = 0u64;
    let mut next_allow = 0u64;
    let mut next_trim = 0u64;
    let mut pending: Option<Value> = None;
    while !halt.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        // Every ban and lift goes to the store first.
        let mut got = false;
        loop {
            let next = match pending.take() {
                Some(v) => Ok(v),
                None => events.try_recv(),
            };
            match next {
                Ok(v) => {
                    if let Some(f) = record(&v, &s.node, &own) {
                        let body = json!(f).to_string();
                        match store.outbox_push(
                            KIND,
                            &body,
                            Timestamp(voipwall_core::daemon::now_ms()),
                            QUEUE_CAP,
                        ) {
                            Ok(d) => lock(&state).status.dropped += d as u64,
                            Err(e) => {
                                tracing::warn!(error = %e, "A ban could not be queued for the fleet.")
                            }
                        }
                        got = true;
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "The fleet's writer missed bans.");
                }
                Err(_) => break,
            }
        }
        let now = voipwall_core::daemon::now_ms();
        let due = got && failures == 0 || now >= next_try || now >= next_allow;
        if due {
            if conn.is_none() && now >= next_try {
                match connect(&s, &addr).await {
                    Ok(c) => {
                        conn = Some(c);
                        failures = 0;
                    }
                    Err(e) => {
                        failures += 1;
                        next_try = now + backoff(failures).as_millis() as u64;
                        note_error(&state, &link, e, failures == 1);
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                let r = async {
                    send_queued(c, &mut store, &key, &state).await?;
                    if now >= next_allow {
                        read_allow(c, &mut store, &allow_key, &s.stream, &state).await?;
                        next_allow = now + 5_000;
                    }
                    if s.trim && now >= next_trim {
                        trim(c, &s).await?;
                        next_trim = now + 60_000;
                    }
                    Ok::<(), String>(())
                }
                .await;
                match r {
                    Ok(()) => {
                        failures = 0;
                        next_try = now + 1_000;
                        lock(&state).status.queued = store.outbox_len(KIND).unwrap_or(0);
                        publish(&state, &link);
                    }
                    Err(e) => {
                        conn = None;
                        failures += 1;
                        next_try = now + backoff(failures).as_millis() as u64;
                        lock(&state).status.queued = store.outbox_len(KIND).unwrap_or(0);
                        note_error(&state, &link, e, failures == 1);
                    }
                }
            } else {
                lock(&state).status.queued = store.outbox_len(KIND).unwrap_or(0);
                publish(&state, &link);
            }
        }
        // Until the next ban (or 50 ms: the retry and allow-list clocks).
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_millis(50), events.recv()).await {
            pending = Some(v);
        }
    }
}

async fn send_queued(
    c: &mut Conn,
    store: &mut Store,
    key: &str,
    state: &State,
) -> Result<(), String> {
    loop {
        let batch = store.outbox_peek(KIND, 100).map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(());
        }
        for (id, body) in &batch {
            let fields: Vec<(String, String)> = serde_json::from_str(body).unwrap_or_default();
            let mut args: Vec<&[u8]> = vec![b"XADD", key.as_bytes(), b"*"];
            for (f, v) in &fields {
                args.push(f.as_bytes());
                args.push(v.as_bytes());
            }
            if fields.is_empty() {
                store.outbox_done(&[*id]).map_err(|e| e.to_string())?;
                continue;
            }
            match c.call(&args, WAIT).await? {
                Reply::Error(e) => return Err(format!("Redis refused XADD to {key}: {e}")),
                _ => {
                    store.outbox_done(&[*id]).map_err(|e| e.to_string())?;
                    lock(state).status.published += 1;
                }
            }
        }
    }
}

async fn read_allow(
    c: &mut Conn,
    store: &mut Store,
    allow_key: &str,
    stream: &str,
    state: &State,
) -> Result<(), String> {
    let r = c.call(&[b"SMEMBERS", allow_key.as_bytes()], WAIT).await?;
    if let Reply::Error(e) = r {
        return Err(format!("Redis refused SMEMBERS {allow_key}: {e}"));
    }
    let mut nets: Vec<IpNet> = r
        .items()
        .iter()
        .filter_map(Reply::text)
        .filter_map(|t| {
            let t = t.trim();
            t.parse::<IpNet>()
                .ok()
                .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .map(|n| n.trunc())
        // The whole address space, or a provider's worth, is not an allow
        // entry: the same widths a feed may not list.
        .filter(|n| match n {
            IpNet::V4(n) => n.prefix_len() >= 8,
            IpNet::V6(n) => n.prefix_len() >= 16,
        })
        .collect();
    nets.sort_unstable();
    nets.dedup();
    if nets.len() > MAX_ALLOW {
        tracing::warn!(
            entries = nets.len(),
            kept = MAX_ALLOW,
            "The central allow list is longer than voipwall takes."
        );
        nets.truncate(MAX_ALLOW);
    }
    let mut st = lock(state);
    if st.allow != nets {
        let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
        let _ = store.set_kv(&format!("fleet:allow:{stream}"), &text.join(" "));
        st.allow = nets;
    }
    st.status.allow = st.allow.len();
    Ok(())
}

async fn trim(c: &mut Conn, s: &FleetSettings) -> Result<(), String> {
    let min = voipwall_core::daemon::now_ms().saturating_sub(s.keep * 1000);
    let minid = format!("{min}-0");
    for n in s.nodes.iter().chain(std::iter::once(&s.node)) {
        let key = format!("{}:{n}", s.stream);
        if let Reply::Error(e) = c
            .call(
                &[b"XTRIM", key.as_bytes(), b"MINID", minid.as_bytes()],
                WAIT,
            )
            .await?
        {
            return Err(format!("Redis refused XTRIM {key}: {e}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_travel_and_forged_ones_are_refused() {
        let own: Vec<IpAddr> = vec!["192.0.2.2".parse().unwrap()];
        let ban = json!({"kind": "ban", "target": "203.0.113.66/32", "rule": "scanner",
                         "until_ms": 5_000u64, "reason": "friendly-scanner", "live_us": 4_000_000u64});
        let f = record(&ban, "pbx1", &own).unwrap();
        assert_eq!(
            read(&f, "pbx1"),
            Ok(Read::Ban {
                target: "203.0.113.66/32".parse().unwrap(),
                until_ms: 5_000,
                at_us: Some(4_000_000),
                addrs: own.clone()
            })
        );
        // The same record on another node's stream is forged.
        assert!(read(&f, "pbx2").unwrap_err().contains("names node `pbx1`"));
        let lift = record(
            &json!({"kind": "lift", "target": "2001:db8::/64"}),
            "pbx1",
            &own,
        )
        .unwrap();
        assert!(matches!(read(&lift, "pbx1"), Ok(Read::Lift { .. })));
        assert!(record(&json!({"kind": "alert"}), "pbx1", &own).is_none());
        assert!(read(&[("v".into(), "2".into())], "pbx1").is_err());
    }
}
