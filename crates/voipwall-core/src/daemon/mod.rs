//! `voipwall daemon`: applies the policy, restores bans from the store,
//! reads NFLOG copies and log files, runs the detection engine, and puts
//! its decisions into the kernel sets and the store.
//!
//! Threads, not an async runtime: one **engine thread** owns the engine, the
//! NFLOG socket, the netlink ban socket and the store, and waits in `poll`
//! on the NFLOG socket and a wake-up socket; a packet goes from `recv` to a
//! ban element without crossing a thread or allocating. Log tailers (one
//! thread per file) parse lines and send batches over a channel; the control
//! socket (one thread per client) sends requests the same way. The engine is
//! the only writer of bans, so there are no locks around it.

pub mod control;
mod drops;
mod geo;
mod handler;
pub mod hep;
pub mod inline;
pub mod names;
mod restore;
use restore::{reconcile, watch_table};
pub mod tail;

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Instant;

use anyhow::Context as _;
use ipnet::IpNet;
use serde_json::{Value, json};
use voipwall_detect::packet::Seen;
use voipwall_detect::{Action, Engine, Timestamp};
use voipwall_nft::sets::{Entry, Prefixes, place};
use voipwall_policy::{DetectMode, Policy};
use voipwall_store::{BanFilter, BanRecord, EventRecord, Opened, Store};
use voipwall_sys::nflog::{NflogConfig, NflogReader, wait_readable};

use control::Reply;
pub use control::{Client, Request, default_socket};

use crate::Invalid;
pub use crate::owned::Parsed;

/// Where the daemon's policy, catalog layers and state are.
pub struct Paths {
    /// Policy file.
    pub config: PathBuf,
    /// Extra catalog directories.
    pub catalog_dirs: Vec<PathBuf>,
    /// State directory (the store, boots).
    pub state_dir: PathBuf,
}

/// Arguments of `voipwall daemon` (the binary parses them; a library
/// does not depend on a command-line parser).
#[derive(Debug, Clone, Default)]
pub struct DaemonArgs {
    /// Control socket.
    pub socket: PathBuf,
    /// Log files to follow, as FORMAT:PATH.
    pub logs: Vec<String>,
    /// Journals to follow, as FORMAT[:UNIT].
    pub journals: Vec<String>,
    /// Read followed logs from their start instead of their end.
    pub from_start: bool,
    /// Do not apply the policy at start (the ruleset is already in place).
    pub no_apply: bool,
    /// Demo mode: refuse to run in the host's own network namespace, and
    /// remove the table on exit.
    pub sandbox: bool,
}

/// Sent to the engine thread.
pub enum Input {
    /// Parsed lines of a followed log.
    Log {
        origin: Arc<str>,
        events: Parsed,
        counts: LineCounts,
        /// When the tailer read them (µs since the epoch): the arrival of
        /// this evidence, for the ban latency.
        read_us: u64,
    },
    /// A control request and where to answer.
    Control(Request, Sender<Reply>),
    /// Our table is gone from the kernel (another tool flushed the
    /// ruleset): put the running generation and every stored ban back.
    TableGone,
    /// A trunk or peer name moved: its new addresses are never banned, its
    /// old ones no longer protected.
    PeerMoved {
        add: Vec<IpAddr>,
        remove: Vec<IpAddr>,
    },
    /// The fleet's never-ban list changed (its central allow list and the
    /// other nodes' addresses): local detection alerts instead of banning.
    FleetAllow {
        add: Vec<IpNet>,
        remove: Vec<IpNet>,
        /// Everything the fleet said before is dropped first.
        replace: bool,
    },
    /// A reload prepared off the engine thread (policy applied, engine
    /// configured), or why it was refused; where to answer, if anyone asked.
    Reloaded(Box<Result<Prepared, String>>, Option<Sender<Reply>>),
    /// What the reconcile thread found in the kernel and not in the store.
    Imported(Vec<BanRecord>),
    /// SIP copies from the HEP listener, what it refused, and when it
    /// received the first of them (µs since the epoch).
    Hep(Vec<hep::HepPacket>, hep::HepCounts, u64),
    /// A wrong token presented to the HTTP API, from this source.
    ApiAuthFailed(IpAddr),
}

/// What a reload hands the engine thread: the applied policy and the new
/// engine's configuration. Everything slow (reading and compiling the
/// policy, resolving names, the nft transaction, the store) happened on the
/// reload thread, so packets kept flowing.
pub struct Prepared {
    applied: crate::safety::Applied,
    config: voipwall_detect::Config,
}

/// Lines read by a tailer, by outcome.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct LineCounts {
    pub lines: u64,
    pub ambiguous: u64,
    pub malformed: u64,
}

/// A write for the store thread: SQLite commits (and WAL checkpoints, which
/// fsync) never stall the packet path.
pub(crate) enum StoreOp {
    Bans(Vec<BanRecord>),
    Events(Vec<EventRecord>),
    Lift(IpNet, Timestamp, String),
    Audit(Timestamp, String, String, String),
    /// Prunes old rows, then counts the active bans: `(now, bans made so
    /// far)`, the second handed back with the count so the engine thread
    /// knows which of its bans the count includes.
    Prune(Timestamp, u64),
    /// Endpoints that registered, and when.
    Remember(Vec<IpAddr>, Timestamp),
    /// A stored ban with its new end (`extend`).
    Extend(BanRecord),
    /// Names' real answers: their last good addresses.
    NameAnswers(Vec<(String, Vec<IpAddr>)>, Timestamp),
    /// Answered once everything sent before it is committed.
    Flush(Sender<()>),
}

/// Active bans as the store thread last counted them, and how many bans
/// the engine thread had made when it asked (`StoreOp::Prune`): `status`
/// adds the bans made since, so it never counts on the packet path.
#[derive(Default)]
pub(crate) struct ActiveCount {
    counted: std::sync::atomic::AtomicU64,
    made_then: std::sync::atomic::AtomicU64,
}

impl ActiveCount {
    /// Active bans now, give or take those that ended since the last count
    /// (at most 10 s ago).
    pub(crate) fn get(&self, made_now: u64) -> u64 {
        let counted = self.counted.load(Ordering::Acquire);
        let then = self.made_then.load(Ordering::Acquire);
        counted + made_now.saturating_sub(then)
    }
}

fn store_writer(
    mut store: Store,
    rx: Receiver<StoreOp>,
    errors: Arc<std::sync::atomic::AtomicU64>,
    active: Arc<ActiveCount>,
) {
    for op in rx {
        let r = match op {
            StoreOp::Bans(b) => store.record_bans(&b).map(|_| ()),
            StoreOp::Events(e) => store.record_events(&e),
            StoreOp::Lift(t, at, by) => store.lift(&t, at, &by).map(|_| ()),
            StoreOp::Audit(at, actor, action, detail) => store.audit(at, &actor, &action, &detail),
            StoreOp::Extend(b) => store.set_ban_end(&b.target, b.start, b.end).map(drop),
            StoreOp::Remember(addrs, at) => store.remember_endpoints(&addrs, at),
            StoreOp::NameAnswers(answers, at) => store.record_name_answers(&answers, at),
            StoreOp::Prune(at, made) => store.prune(at, 100_000, 30 * 86_400_000).map(|()| {
                if let Ok(n) = store.active_count(at) {
                    active.made_then.store(made, Ordering::Release);
                    active.counted.store(n, Ordering::Release);
                }
            }),
            StoreOp::Flush(done) => {
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(e) = r {
            errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "Store write failed (bans stay in the kernel).");
        }
    }
}

/// Claims this network namespace for one daemon: an abstract Unix socket
/// (abstract names belong to the network namespace, not the file system,
/// and vanish with the process however it ends: no stale lock file). A
/// second daemon here, whatever its state directory, would run without
/// NFLOG (the group is taken) and, with `--sandbox`, remove the first one's
/// table when it stops. Abstract names carry no permissions, so a local
/// user could bind the name first to keep the firewall from starting at
/// boot: the name's holder is asked who it is (`SO_PEERCRED`), and only one
/// running as root or as this daemon's user counts; a squatter is logged
/// and ignored.
fn one_per_namespace() -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("voipwall-daemon/{}", voipwall_nft::Ruleset::TABLE);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    match std::os::unix::net::UnixListener::bind_addr(&addr) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let me = rustix::process::geteuid();
            let holder = UnixStream::connect_addr(&addr)
                .ok()
                .and_then(|c| rustix::net::sockopt::socket_peercred(&c).ok());
            match holder {
                Some(h) if !(h.uid.is_root() || h.uid == me) => {
                    tracing::warn!(
                        pid = h.pid.as_raw_nonzero().get(),
                        uid = h.uid.as_raw(),
                        "A process that is not root holds voipwall's per-namespace name; ignored (starting anyway)."
                    );
                    Ok(None)
                }
                _ => Err(Invalid(format!(
                    "error: another voipwall daemon already runs in this network namespace{} (it owns table inet {} and the NFLOG group); refusing to start a second one (stop it first, or run this one in another namespace)",
                    holder.map_or_else(String::new, |h| format!(" (pid {})", h.pid.as_raw_nonzero())),
                    voipwall_nft::Ruleset::TABLE
                ))
                .into()),
            }
        }
        Err(e) => {
            Err(anyhow::Error::from(e).context("claiming this network namespace for the daemon"))
        }
    }
}

/// Wakes the engine thread out of `poll`.
#[derive(Clone)]
pub struct Waker(Arc<UnixStream>);

impl Waker {
    pub fn wake(&self) {
        let _ = (&*self.0).write(&[1]);
    }
}

// The one clock (`crate::clock`), under the names the daemon's threads,
// the API and the fleet have always used.
use crate::clock::now;
pub use crate::clock::{now_ms, now_us};

pub fn now_ms_civil_year() -> i64 {
    now().to_civil().0
}

/// Upper bounds (µs) of the ban-latency histogram's buckets.
pub const LATENCY_BUCKETS_US: [u64; 10] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
];

/// Counts `recs` in `bans_by` (by rule and origin kind: `fleet:NODE` as
/// `fleet`, `detect-unverified` as `detect`, so labels stay few).
pub(crate) fn count_bans(c: &mut Counters, recs: &[BanRecord]) {
    for r in recs {
        *c.bans_by
            .entry(r.rule.clone())
            .or_default()
            .entry(r.origin_kind().to_string())
            .or_default() += 1;
    }
}

/// The daemon's counters, as `status` reports them.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Counters {
    /// Bans made since start: rule → origin (`detect`, `manual` for the
    /// CLI and the API, `observe` for detection in observe mode, never in
    /// the kernel) → count. Rules and origins are few (never an address).
    pub bans_by: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// Packet copies read from NFLOG.
    pub nflog_packets: u64,
    /// Receive-buffer overflows (copies lost).
    pub nflog_enobufs: u64,
    /// Copies that did not decode as SIP.
    pub sip_undecodable: u64,
    /// Log lines read.
    pub log_lines: u64,
    /// Events found in them.
    pub log_events: u64,
    /// Lines refused as ambiguous (attacker text imitating the server's).
    pub log_ambiguous: u64,
    /// Bans made.
    pub bans: u64,
    /// Bans observe mode would have made.
    pub bans_observed: u64,
    /// Alerts (a rule fired against a protected source).
    pub alerts: u64,
    /// Promotions to registered endpoint.
    pub promotions: u64,
    /// Kernel refusals.
    pub kernel_errors: u64,
    /// Bans the kernel had lost (a banned source's packet got through), put back.
    pub reasserted: u64,
    /// SIP messages received over HEP.
    pub hep_packets: u64,
    /// HEP packets or connections from senders not listed in `[hep] senders`.
    pub hep_refused: u64,
    /// HEP connections from listed senders closed because 32 were open.
    pub hep_over_cap: u64,
    /// HEP packets that did not decode, or carried something other than SIP.
    pub hep_malformed: u64,
    /// HEP packets dropped because the engine thread was behind.
    pub hep_dropped: u64,
    /// HEP copies of SIP that NFLOG copies too (the same port and
    /// transport): left to NFLOG, so each message counts once.
    pub hep_duplicates: u64,
    /// Microseconds from the arrival of the evidence that crossed the
    /// threshold (the kernel's timestamp of the packet, else when the
    /// daemon read it: a response, a log line, a HEP packet) to the ban
    /// being live in the kernel, last 4096 bans.
    #[serde(skip)]
    ban_latency_us: VecDeque<u64>,
    /// The same, the last 1024 per rule.
    #[serde(skip)]
    ban_latency_by_rule: std::collections::BTreeMap<String, VecDeque<u64>>,
    /// Every ban since start, by latency: counts per bucket of
    /// [`LATENCY_BUCKETS_US`] (the last counts what is above them all).
    #[serde(skip)]
    ban_latency_histogram: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Packet arrival (or NFLOG read, for responses without a kernel
    /// timestamp) → known-set element in the kernel, per promotion.
    #[serde(skip)]
    promotion_latency_us: VecDeque<u64>,
}

struct Daemon {
    engine: Engine,
    /// systemd notifications (READY, WATCHDOG, STATUS, RELOADING).
    notify: voipwall_sys::notify::Notifier,
    /// This host's addresses (a HEP copy is NFLOG's too only when it was
    /// to or from one of them).
    own: Vec<IpAddr>,
    /// Whether the NFLOG socket is bound (the loop keeps it current).
    nflog_open: bool,
    /// HEP batches sent to this thread and not yet handled (the listener
    /// drops what would exceed its bound).
    hep_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Active bans, counted by the store thread.
    active: Arc<ActiveCount>,
    /// Packet copies to messages (TCP flows reassembled).
    capture: voipwall_detect::packet::Capture,
    /// Reads (the store thread has its own connection for writes).
    store: Store,
    writer: Sender<StoreOp>,
    store_errors: Arc<std::sync::atomic::AtomicU64>,
    bans: Option<voipwall_sys::bans::Bans>,
    policy: Policy,
    cli_config: PathBuf,
    catalog_dirs: Vec<PathBuf>,
    state_dir: PathBuf,
    /// A reload changed the NFLOG group: the loop rebinds.
    nflog_rebind: bool,
    observe: bool,
    counters: Counters,
    followers: Vec<mpsc::SyncSender<Value>>,
    /// The HTTP API's listeners, as its thread reports them.
    api_listeners: Arc<std::sync::Mutex<Vec<control::ApiListener>>>,
    /// The drop log (its reader thread fills the window).
    drop_log: Arc<drops::DropLog>,
    /// The fleet thread's configuration and the feeds' status.
    feeds: Arc<crate::feeds::FeedLink>,
    /// What the fleet says is never banned (kept across reloads, which
    /// build a new engine).
    fleet_allowed: std::collections::BTreeSet<IpNet>,
    recent: VecDeque<Value>,
    pending: Vec<EventRecord>,
    shutdown: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    /// Where reload threads send their result.
    inputs: Option<(Sender<Input>, Waker)>,
    /// The targets restored from the store at start, for the reconcile
    /// thread.
    known_at_start: std::collections::HashSet<IpNet>,
    /// A reload thread is running.
    reloading: bool,
    started: Instant,
    opened: Opened,
    restored: usize,
    reconciled: usize,
    nflog_group: Option<u16>,
    /// Seconds safe mode held the policy back at start.
    safe_mode_held: Option<u64>,
    /// What start did with a generation another version compiled.
    recompiled: Option<crate::safety::Recompiled>,
    /// The resolver thread for trunk and peer hostnames.
    names: Option<names::Names>,
    /// Keeps the `[geo]` sets current (none in `--no-apply`).
    geo: Option<geo::GeoWatch>,
    /// How each log source is doing.
    sources: tail::Health,
    /// The last `status` answer and when it was built: scrapers asking
    /// many times a second get it again for up to `STATUS_FRESH`.
    status_cache: Option<(Instant, Box<control::StatusReply>)>,
    /// The call guard's inline queue.
    inline: inline::Inline,
}

/// How long a built `status` answer is served again (bench/api: the
/// engine thread builds it at most ten times a second however often it is
/// asked).
const STATUS_FRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// What the HTTP API (its own crate, its own async runtime thread) gets
/// from the daemon: where to listen, the store, and the control channel.
pub struct ApiContext {
    /// `[api]` of the policy in force at start.
    pub settings: voipwall_policy::ApiSettings,
    /// The state directory (tokens are looked up in its store).
    pub state_dir: PathBuf,
    /// Extra catalog directories (`policy/check` loads as `check` does).
    pub catalog_dirs: Vec<PathBuf>,
    /// The engine thread, asked as a control-socket client would.
    pub control: ControlHandle,
    /// Set when the daemon stops.
    pub stop: Arc<AtomicBool>,
    /// Where the API says how its listeners are doing (`status`).
    pub listeners: Arc<std::sync::Mutex<Vec<control::ApiListener>>>,
    /// `[[notify]]` of the policy in force at start.
    pub notify: Vec<voipwall_policy::NotifySettings>,
}

/// Starts the HTTP API (the binary passes `voipwall-api`'s).
pub type ApiStarter = fn(ApiContext) -> anyhow::Result<()>;

/// What the fleet thread (its own crate, its own async runtime) gets from
/// the daemon: the feeds and what they must never list (replaced on each
/// reload), where their status goes, the state directory.
pub struct FleetContext {
    /// The state directory (the feeds' last good content is in its store).
    pub state_dir: PathBuf,
    /// Configuration in, status out.
    pub link: Arc<crate::feeds::FeedLink>,
    /// Set when the daemon stops.
    pub stop: Arc<AtomicBool>,
    /// The engine thread, for the bans the CrowdSec watcher posts.
    pub control: ControlHandle,
}

/// Starts the fleet thread (the binary passes `voipwall-fleet`'s); the
/// daemon waits for it (bounded) when it stops, so its store connections
/// are closed before the process ends.
pub type FleetStarter = fn(FleetContext) -> anyhow::Result<std::thread::JoinHandle<()>>;

/// The threads the binary brings from crates the daemon does not depend on.
#[derive(Default, Clone, Copy)]
pub struct Starters {
    /// The HTTP API.
    pub api: Option<ApiStarter>,
    /// The fleet: feeds (CrowdSec, Redis later).
    pub fleet: Option<FleetStarter>,
}

/// The engine thread's control channel, for the HTTP API: the same
/// requests and typed answers as the control socket, no second path.
#[derive(Clone)]
pub struct ControlHandle {
    tx: Sender<Input>,
    waker: Waker,
}

impl ControlHandle {
    /// A wrong token was presented to the HTTP API from `src`: an engine
    /// event (rule `api-auth`), so a source guessing tokens is banned by
    /// voipwall itself. Not a control-socket request: nobody else can
    /// report failures in someone's name.
    pub fn api_auth_failed(&self, src: IpAddr) {
        if self.tx.send(Input::ApiAuthFailed(src)).is_ok() {
            self.waker.wake();
        }
    }

    /// The fleet's never-ban list changed: `add` is never banned by local
    /// detection from now on (an alert instead), `remove` no longer.
    pub fn fleet_allow(&self, add: Vec<IpNet>, remove: Vec<IpNet>) {
        let msg = Input::FleetAllow {
            add,
            remove,
            replace: false,
        };
        if self.tx.send(msg).is_ok() {
            self.waker.wake();
        }
    }

    /// The fleet's never-ban list is `nets`, whatever it said before (a
    /// fleet node starting, or the fleet taken out of the policy).
    pub fn fleet_allow_replace(&self, nets: Vec<IpNet>) {
        let msg = Input::FleetAllow {
            add: nets,
            remove: Vec::new(),
            replace: true,
        };
        if self.tx.send(msg).is_ok() {
            self.waker.wake();
        }
    }

    /// Asks the engine thread; `None` when it did not answer within
    /// `timeout` (or the daemon is stopping). A stream's first answer only.
    pub fn call(&self, req: Request, timeout: std::time::Duration) -> Option<control::Answer> {
        let (rtx, rrx) = mpsc::channel();
        self.tx.send(Input::Control(req, rtx)).ok()?;
        self.waker.wake();
        match rrx.recv_timeout(timeout).ok()? {
            Reply::One(a) | Reply::Stream(a, _) => Some(a),
        }
    }

    /// Asks for a stream (`events` with `follow`): the first answer and
    /// the events after it, until the receiver is dropped. A refusal comes
    /// with no stream.
    pub fn follow(
        &self,
        req: Request,
        timeout: std::time::Duration,
    ) -> Option<(control::Answer, Option<Receiver<Value>>)> {
        let (rtx, rrx) = mpsc::channel();
        self.tx.send(Input::Control(req, rtx)).ok()?;
        self.waker.wake();
        match rrx.recv_timeout(timeout).ok()? {
            Reply::One(a) => Some((a, None)),
            Reply::Stream(a, rx) => Some((a, Some(rx))),
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(cli: &Paths, a: &DaemonArgs, starters: Starters) -> anyhow::Result<()> {
    if a.sandbox && in_host_namespace() {
        return Err(Invalid(
            "error: --sandbox runs only inside a network namespace other than the host's (ip netns exec ...)".into(),
        )
        .into());
    }
    // One daemon per network namespace (one table, one NFLOG group): held
    // until the process ends, whatever its state directory.
    let _one = one_per_namespace()?;
    let facts = crate::context::host_facts();
    let mut policy = match crate::context::load_policy(&cli.config, &cli.catalog_dirs, &facts) {
        Ok(l) => l.policy,
        // A policy file broken by edits nobody applied must not leave the
        // host without its firewall after a reboot: the generation in
        // force runs, from what it stored, and the file's errors are said.
        Err(e) => match crate::safety::policy_in_force(&cli.state_dir, &cli.catalog_dirs) {
            Some((id, p)) => {
                tracing::error!(
                    generation = id,
                    error = %format!("{e:#}").lines().next().unwrap_or(""),
                    "The policy file does not load; the generation in force runs with the policy it was compiled from. `voipwall check` shows every error; `voipwall reload` applies the file once it loads."
                );
                p
            }
            None => return Err(e),
        },
    };
    let db = cli.state_dir.join("state.db");
    let (mut store, opened) =
        Store::open(&db).with_context(|| format!("opening the store {}", db.display()))?;
    match &opened {
        Opened::Recovered { moved_to, reason } => tracing::error!(
            path = %db.display(), moved_to = %moved_to.display(), reason = %reason,
            "The store could not be read; it was moved aside and a fresh one started. Bans still in the kernel are imported."
        ),
        Opened::Created => tracing::info!(path = %db.display(), "Created a new store."),
        Opened::Existing => tracing::info!(path = %db.display(), "Opened the store."),
    }
    let hold = if a.no_apply {
        None
    } else {
        crate::safety::safe_mode_hold(&cli.state_dir, &policy.safe_mode)?
    };
    if let Some(secs) = hold {
        hold_back(secs, &a.socket)?;
    }
    let mut applied = None;
    let mut recompiled = None;
    if !a.no_apply {
        // The last applied or confirmed generation, exactly as it ran; the
        // policy file is only compiled when there is none (a policy edited
        // but never applied does not go live at boot).
        match crate::safety::boot_generation(&mut store)? {
            Some(g) => {
                // After an upgrade, the generation's stored inputs are
                // compiled again by this version (never the file on disk).
                let b = crate::safety::boot_apply(&g, &cli.catalog_dirs, &cli.state_dir)?;
                match &b.recompiled {
                    None => tracing::info!(
                        generation = g.id,
                        "Applied the last confirmed generation (bans and known endpoints kept)."
                    ),
                    Some(r) if r.applied.is_some() => {
                        tracing::warn!(generation = g.id, new = r.applied, "{}.", r.result);
                    }
                    Some(r) => tracing::warn!(generation = g.id, "{}.", r.result),
                }
                recompiled = b.recompiled;
                // What the generation put in the name sets is what the
                // kernel holds now: the resolver starts from it.
                applied = b.ruleset;
                if let Some(p) = b.policy {
                    // Detection follows what the kernel runs.
                    policy = p;
                }
            }
            None => {
                // The one apply path: validated, lockout-checked, recorded
                // as a generation like `voipwall apply`.
                let a = crate::safety::apply_path(&crate::safety::ApplyRequest {
                    config: &cli.config,
                    catalog_dirs: &cli.catalog_dirs,
                    state_dir: &cli.state_dir,
                    confirm: None,
                    force: false,
                    actor: "daemon",
                })?;
                tracing::info!(
                    generation = a.generation,
                    "Applied the policy (no earlier generation; bans and known endpoints kept)."
                );
                policy = a.loaded.policy;
                applied = Some(a.ruleset);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    // The sets of countries and ASes: read from the files at the first
    // look (the recorded generation may predate the files).
    let geo = if a.no_apply {
        None
    } else {
        let g = geo::GeoWatch::start(stop.clone()).context("starting the geo thread")?;
        match applied.as_ref() {
            Some(rs) => g.update(&policy, rs, false),
            None => g.update(
                &policy,
                &crate::context::compile_resolved(&policy, Default::default()),
                false,
            ),
        }
        Some(g)
    };
    let names = if a.no_apply {
        None
    } else {
        let n = names::Names::start(stop.clone()).context("starting the resolver thread")?;
        // What the compiler resolved is what the sets hold now. Without a
        // recorded ruleset, the store's last good answers stand in (no
        // lookup here: at boot the resolver is often not reachable yet, and
        // the resolver thread asks at once anyway).
        let last_good = crate::context::last_good_names(&cli.state_dir);
        let rs =
            applied.unwrap_or_else(|| crate::context::compile_resolved(&policy, last_good.clone()));
        n.update(&policy, &rs);
        // Answers recorded after that generation (a trunk that moved) go
        // into the kernel now, before any lookup.
        n.seed(&last_good);
        Some(n)
    };
    let bans = match voipwall_sys::bans::Bans::open() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "Cannot open the netlink ban socket; bans will be stored but not enforced.");
            None
        }
    };
    let rules = crate::detection::rules(&cli.catalog_dirs)?;
    let mut cfg = crate::detection::engine_config(
        &policy,
        rules,
        &crate::detection::engine_host(&policy, &facts.addresses),
    );
    cfg.hash_seed = crate::detection::random_seed();
    let (writer, writer_rx) = mpsc::channel();
    let store_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut capture = voipwall_detect::packet::Capture::new(
        voipwall_sip::tcp::TcpLimits::default(),
        crate::detection::random_seed(),
    );
    capture.set_websocket_ports(policy.sip_websocket_ports());
    let feeds =
        crate::feeds::FeedLink::new(crate::feeds::FeedConfig::of(&policy, &facts.addresses, &[]));
    let mut d = Daemon {
        engine: Engine::new(cfg),
        notify: voipwall_sys::notify::Notifier::from_env(),
        own: facts.addresses.clone(),
        nflog_open: false,
        hep_pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        active: Arc::new(ActiveCount::default()),
        capture,
        store,
        writer,
        store_errors: store_errors.clone(),
        bans,
        observe: policy.detect.mode == DetectMode::Observe,
        nflog_group: policy.sip.nflog_group,
        policy,
        cli_config: cli.config.clone(),
        catalog_dirs: cli.catalog_dirs.clone(),
        state_dir: cli.state_dir.clone(),
        nflog_rebind: false,
        counters: Counters::default(),
        followers: Vec::new(),
        api_listeners: Arc::default(),
        drop_log: Arc::default(),
        feeds,
        fleet_allowed: std::collections::BTreeSet::new(),
        recent: VecDeque::new(),
        pending: Vec::new(),
        shutdown: Arc::new(AtomicBool::new(false)),
        reload: Arc::new(AtomicBool::new(false)),
        inputs: None,
        known_at_start: std::collections::HashSet::new(),
        reloading: false,
        started: Instant::now(),
        opened,
        restored: 0,
        reconciled: 0,
        safe_mode_held: hold,
        recompiled,
        names,
        geo,
        sources: tail::Health::default(),
        status_cache: None,
        inline: inline::Inline::new(!a.no_apply),
    };
    d.restore();
    let (write_store, _) =
        Store::open(&db).with_context(|| format!("opening the store {}", db.display()))?;
    let writer_thread = std::thread::Builder::new().name("store".into()).spawn({
        let active = d.active.clone();
        move || store_writer(write_store, writer_rx, store_errors, active)
    })?;
    // The first count of the active bans (restored ones included).
    let _ = d.writer.send(StoreOp::Prune(now(), d.bans_made()));
    let nflog = match d.nflog_group {
        Some(g) => match NflogReader::open(&NflogConfig::new(g)) {
            Ok(r) => {
                tracing::info!(group = g, "Reading SIP packet copies from NFLOG.");
                Some(r)
            }
            Err(e) => {
                tracing::error!(group = g, error = %e, "Cannot bind the NFLOG group; detection runs on logs only.");
                None
            }
        },
        None => None,
    };
    let (wake_rx, wake_tx) = UnixStream::pair().context("wake-up socket")?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let waker = Waker(Arc::new(wake_tx));
    let (tx, rx) = mpsc::channel::<Input>();
    d.inputs = Some((tx.clone(), waker.clone()));
    if !a.no_apply {
        let known = std::mem::take(&mut d.known_at_start);
        let prefixes = d.prefixes();
        let (tx, waker) = (tx.clone(), waker.clone());
        std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || {
                let imported = reconcile(&known, prefixes, now());
                if tx.send(Input::Imported(imported)).is_ok() {
                    waker.wake();
                }
            })?;
    }
    if let Some(n) = &d.names {
        n.connect(tx.clone(), waker.clone(), d.writer.clone());
        for a in n.addresses() {
            d.engine.allow(IpNet::from(a), None);
        }
    }
    if !a.no_apply {
        watch_table(tx.clone(), waker.clone(), stop.clone())?;
    }
    if !a.no_apply {
        d.drop_log.configure(&d.policy);
        drops::start(d.drop_log.clone(), stop.clone())?;
    }
    install_signal_handlers(&d.shutdown, &d.reload);
    let _control = control::serve(&a.socket, tx.clone(), waker.clone())
        .with_context(|| format!("listening on {}", a.socket.display()))?;
    tracing::info!(socket = %a.socket.display(), "Control socket ready.");
    if !d.policy.api.listen.is_empty() || !d.policy.notify.is_empty() {
        match starters.api {
            Some(start) => {
                if let Err(e) = start(ApiContext {
                    settings: d.policy.api.clone(),
                    state_dir: cli.state_dir.clone(),
                    catalog_dirs: cli.catalog_dirs.clone(),
                    control: ControlHandle {
                        tx: tx.clone(),
                        waker: waker.clone(),
                    },
                    stop: stop.clone(),
                    listeners: d.api_listeners.clone(),
                    notify: d.policy.notify.clone(),
                }) {
                    tracing::error!(error = %format!("{e:#}"), "The HTTP API could not start; everything else runs.");
                }
            }
            None => tracing::warn!("[api] is set but this build has no HTTP API."),
        }
    }
    let mut fleet_thread = None;
    if !a.no_apply {
        // Always started: a reload may add the first feed.
        match starters.fleet {
            Some(start) => match start(FleetContext {
                state_dir: cli.state_dir.clone(),
                link: d.feeds.clone(),
                stop: stop.clone(),
                control: ControlHandle {
                    tx: tx.clone(),
                    waker: waker.clone(),
                },
            }) {
                Ok(h) => fleet_thread = Some(h),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "The fleet thread could not start; feeds are not refreshed.");
                }
            },
            None if !d.policy.feeds.is_empty() => {
                tracing::warn!("[[feed]] is set but this build has no fleet thread.");
            }
            None => {}
        }
    }
    if !d.policy.hep.listen.is_empty() {
        hep::serve(
            d.policy.hep.listen.clone(),
            d.policy.hep.senders.clone(),
            tx.clone(),
            waker.clone(),
            stop.clone(),
            d.hep_pending.clone(),
        )?;
        tracing::info!(
            listen = ?d.policy.hep.listen,
            senders = ?d.policy.hep.senders,
            "Reading SIP copies over HEP."
        );
    }
    let mut tailers = Vec::new();
    let pick_format = |fmt: &str, what: &str| -> anyhow::Result<voipwall_logfmt::Format> {
        let mut formats = voipwall_logfmt::Format::all_builtin();
        formats.extend(crate::detection::user_formats(&d.policy)?);
        if fmt == "auto" {
            return Ok(voipwall_logfmt::Format::combine("auto", formats));
        }
        Ok(formats
            .into_iter()
            .find(|f| f.id == fmt)
            .ok_or_else(|| Invalid(format!("error: {what}: unknown format `{fmt}`")))?)
    };
    // Files: the policy's sources (its [[source]] entries and its
    // preset's), then --log flags; the same file and format once.
    let mut files: Vec<(String, String, String)> = Vec::new();
    let mut journals: Vec<(String, Option<String>, String)> = Vec::new();
    for s in &d.policy.sources {
        let what = format!("source {} ({})", s.format, s.origin);
        if let Some(p) = &s.path {
            files.push((s.format.clone(), p.clone(), what));
        } else if let Some(u) = &s.journal {
            journals.push((
                s.format.clone(),
                Some(u.clone()).filter(|u| !u.is_empty()),
                what,
            ));
        }
    }
    for spec in &a.logs {
        let (fmt, path) = spec
            .split_once(':')
            .ok_or_else(|| Invalid(format!("error: --log {spec}: expected FORMAT:PATH")))?;
        files.push((fmt.to_string(), path.to_string(), format!("--log {spec}")));
    }
    for spec in &a.journals {
        let (fmt, unit) = match spec.split_once(':') {
            Some((f, u)) => (f, Some(u.to_string())),
            None => (spec.as_str(), None),
        };
        journals.push((fmt.to_string(), unit, format!("--journal {spec}")));
    }
    files.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    files.dedup_by(|x, y| x.0 == y.0 && x.1 == y.1);
    journals.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    journals.dedup_by(|x, y| x.0 == y.0 && x.1 == y.1);
    for (fmt, path, what) in files {
        let spec = tail::TailSpec {
            path: PathBuf::from(&path),
            format: pick_format(&fmt, &what)?,
            from_start: a.from_start,
        };
        let slot = tail::register(&d.sources, format!("file {path}"), &fmt);
        let h = (d.sources.clone(), slot);
        let (tx, waker, stop) = (tx.clone(), waker.clone(), stop.clone());
        tailers.push(
            std::thread::Builder::new()
                .name("tail".into())
                .spawn(move || tail::follow(spec, tx, waker, stop, h))?,
        );
    }
    for (fmt, unit, what) in journals {
        let format = pick_format(&fmt, &what)?;
        let slot = tail::register(
            &d.sources,
            format!("journal {}", unit.as_deref().unwrap_or("(every unit)")),
            &fmt,
        );
        let h = (d.sources.clone(), slot);
        let (tx, waker, stop) = (tx.clone(), waker.clone(), stop.clone());
        tailers.push(
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || tail::follow_journal(unit, format, tx, waker, stop, h))?,
        );
    }
    drop(tx);
    tracing::info!(
        mode = if d.observe { "observe" } else { "enforce" },
        rules = d
            .engine
            .config()
            .rules
            .rules
            .iter()
            .filter(|r| r.enabled)
            .count(),
        "voipwall daemon started."
    );
    d.event(
        "start",
        None,
        format!("daemon started ({} bans restored)", d.restored),
    );
    // Ready: the ruleset is in the kernel, stored bans are back, packets
    // and the control socket are read.
    d.notify_state("READY=1\n");
    // Bound last: from here on the loop gives each held INVITE its verdict.
    d.inline.set(inline::Want::of(&d.policy));
    d.run_loop(nflog, &wake_rx, &rx);
    // Calls flow without the daemon either way (bypass); the rules go
    // with it when it stops cleanly.
    d.inline.close();
    stop.store(true, Ordering::Relaxed);
    tail::stop_journals();
    let (done, wait) = mpsc::channel();
    let _ = d.writer.send(StoreOp::Flush(done));
    let _ = wait.recv_timeout(std::time::Duration::from_secs(10));
    drop(d);
    let _ = writer_thread.join();
    // The fleet thread ends within its own bound (2 s for blocking work);
    // waited for at most 3 s.
    if let Some(h) = fleet_thread {
        let until = Instant::now() + std::time::Duration::from_secs(3);
        while !h.is_finished() && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
    let _ = std::fs::remove_file(&a.socket);
    if a.sandbox {
        let _ = voipwall_sys::nft::delete_table();
        tracing::info!("voipwall daemon stopped; sandbox: table removed.");
    } else {
        tracing::info!("voipwall daemon stopped; bans stay in the kernel and the store.");
    }
    Ok(())
}

/// Whether this process is outside every named network namespace (those
/// `ip netns add` bind-mounts under /run/netns): then it may be the host's.
/// (PID 1's namespace cannot be read from inside some containers.)
fn in_host_namespace() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(me) = std::fs::metadata("/proc/self/ns/net") else {
        return true;
    };
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .any(|m| m.ino() == me.ino() && m.dev() == me.dev());
    !named
}

impl Daemon {
    fn run_loop(
        &mut self,
        mut nflog: Option<NflogReader>,
        wake: &UnixStream,
        rx: &Receiver<Input>,
    ) {
        let mut last_housekeeping = Instant::now();
        let mut pkt_at: Vec<u64> = Vec::new();
        // Adaptive NFLOG batching: one packet per message while traffic is
        // light (latency); above 10k packets/s, batches that fill in about
        // 0.2 ms (throughput without holding a ban back).
        let mut window_start = Instant::now();
        let mut window_packets = 0u64;
        let mut batched = 1u32;
        // The systemd watchdog is pinged from this loop only: a packet path
        // that stops turning stops the pings, and systemd restarts it.
        let watchdog = self.notify.watchdog();
        let mut last_ping = Instant::now();
        while !self.shutdown.load(Ordering::Relaxed) {
            if let Some(w) = watchdog
                && last_ping.elapsed() >= w / 2
            {
                last_ping = Instant::now();
                let _ = self.notify.send("WATCHDOG=1");
            }
            if window_start.elapsed().as_millis() >= 100 {
                if let Some(n) = nflog.as_mut() {
                    // A batch of q fills in q / rate: sized so that it fills
                    // in about 0.2 ms (6 at 30k/s, 20 at 100k/s, at most 32),
                    // changed only when it is off by half or double.
                    let fit = u32::try_from(window_packets / 500)
                        .unwrap_or(32)
                        .clamp(1, 32);
                    let want = if fit >= 2 * batched || fit <= batched / 2 {
                        fit
                    } else {
                        batched
                    };
                    if want != batched {
                        batched = want;
                        let q = batched;
                        match n.set_qthresh(q) {
                            Ok(()) => tracing::debug!(
                                qthresh = q,
                                packets_per_100ms = window_packets,
                                "NFLOG batching changed."
                            ),
                            Err(e) => {
                                tracing::warn!(error = %e, "Could not change NFLOG batching.")
                            }
                        }
                    }
                }
                window_start = Instant::now();
                window_packets = 0;
            }
            if self.reload.swap(false, Ordering::Relaxed) {
                tracing::info!("SIGHUP: reload.");
                self.start_reload(None);
            }
            if std::mem::take(&mut self.nflog_rebind) {
                // The old group's copies stop with the old ruleset: bind
                // the new one (or none) before the next packet.
                nflog = self.nflog_group.and_then(|g| {
                    NflogReader::open(&NflogConfig::new(g))
                        .inspect(|_| tracing::info!(group = g, "Reading SIP packet copies from the new NFLOG group."))
                        .inspect_err(|e| tracing::error!(group = g, error = %e, "Cannot bind the new NFLOG group; detection runs on logs only."))
                        .ok()
                });
                batched = 1;
            }
            self.nflog_open = nflog.is_some();
            let t = now();
            let longest = watchdog.map_or(1000, |w| {
                u64::try_from(w.as_millis() / 4)
                    .unwrap_or(1000)
                    .clamp(1, 1000)
            });
            let timeout = self
                .engine
                .poll_timeout()
                .map_or(longest, |d| d.since(t).min(longest))
                .max(1);
            // The queue first: an INVITE held in the kernel waits for it.
            let queued = self.inline.reader.as_ref().map(|q| q.fd());
            let mut fds = vec![wake.as_fd()];
            if let Some(n) = nflog.as_ref() {
                fds.push(n.fd());
            }
            let queue_at = fds.len();
            fds.extend(queued);
            let ready =
                wait_readable(&fds, u32::try_from(timeout).unwrap_or(1000)).unwrap_or_default();
            if ready.get(queue_at).copied().unwrap_or(false) {
                self.drain_queue();
            }
            // Index 1 is NFLOG's only when it is bound (else the queue's).
            let nflog_ready = nflog.is_some() && ready.get(1).copied().unwrap_or(false);
            if nflog_ready && let Some(n) = nflog.as_mut() {
                let at = now();
                let read_us = now_us();
                let engine = &mut self.engine;
                let capture = &mut self.capture;
                let mut undecodable = 0;
                pkt_at.clear();
                // What the queue holds reaches the engine from the queue.
                let inline = &self.inline;
                // A slice at a time: INVITEs held at the queue wait
                // while a flood of copies is read.
                let res = n.drain_at_most(64, |p| {
                    if inline.holds(p.payload) {
                        return;
                    }
                    // The copy says its direction (the out rules' prefix);
                    // a source address from outside can claim to be ours.
                    let outbound = p
                        .prefix
                        .is_some_and(|x| x.starts_with(voipwall_nft::OUTBOUND_PREFIX.as_bytes()));
                    capture.packet(at.0, p.payload, "nflog", &mut |seen| match seen {
                        Seen::Sip(d) if outbound && d.is_request() => {
                            if let Some((peer, call_id)) = d.hangup() {
                                engine.host_hangup(peer, call_id);
                            }
                        }
                        Seen::Sip(d) => match d.engine_event("nflog") {
                            Some((ev, false)) => {
                                engine.handle_packet(at, &ev);
                                pkt_at.push(p.timestamp_us.unwrap_or(0));
                            }
                            Some((ev, true)) => {
                                undecodable += 1;
                                engine.handle_packet(at, &ev);
                            }
                            None => {}
                        },
                        Seen::Undecodable(ev) => {
                            undecodable += 1;
                            if let Some(ev) = ev {
                                engine.handle_packet(at, &ev);
                            }
                        }
                    });
                });
                match res {
                    Ok(got) => window_packets += got as u64,
                    Err(e) => tracing::warn!(error = %e, "NFLOG receive failed."),
                }
                self.counters.nflog_packets = n.stats.packets;
                if n.stats.enobufs > self.counters.nflog_enobufs {
                    self.capture.copies_lost();
                    tracing::warn!(
                        lost_batches = n.stats.enobufs - self.counters.nflog_enobufs,
                        "NFLOG receive buffer overflowed: packets were lost."
                    );
                }
                self.counters.nflog_enobufs = n.stats.enobufs;
                self.counters.sip_undecodable += undecodable;
                let first_pkt_us = pkt_at.iter().copied().filter(|&t| t > 0).min();
                self.apply_actions(first_pkt_us, Some(read_us));
            }
            if ready.first().copied().unwrap_or(false) {
                let mut sink = [0u8; 256];
                while (&*wake).read(&mut sink).is_ok_and(|n| n > 0) {}
            }
            while let Ok(input) = rx.try_recv() {
                self.handle_input(input);
            }
            self.engine.handle_timeout(now());
            self.apply_actions(None, None);
            if last_housekeeping.elapsed().as_secs() >= 10 {
                last_housekeeping = Instant::now();
                self.notify_state("");
                self.inline.check_rules();
                self.capture.expire(now().0);
                self.flush_events();
                let _ = self.writer.send(StoreOp::Prune(now(), self.bans_made()));
            }
        }
        self.flush_events();
    }

    /// Gives each INVITE held at the queue its verdict from the engine.
    fn drain_queue(&mut self) {
        let Some(q) = self.inline.reader.as_mut() else {
            return;
        };
        let at = now();
        let read_us = now_us();
        let engine = &mut self.engine;
        let capture = &mut self.capture;
        // Observe mode reports what it would drop and drops nothing.
        let observe = self.observe;
        let mut lat = Vec::new();
        let mut undecodable = 0;
        let res = q.drain(|p| {
            let mut verdict = voipwall_sys::nfqueue::Verdict::Accept;
            capture.packet(at.0, p.payload, "nfqueue", &mut |seen| match seen {
                Seen::Sip(d) => {
                    if let Some((ev, undecoded)) = d.engine_event("nfqueue") {
                        undecodable += u64::from(undecoded);
                        if observe {
                            engine.handle_packet(at, &ev);
                        } else if engine.handle_queued(at, &ev) {
                            verdict = voipwall_sys::nfqueue::Verdict::Drop;
                        }
                    }
                }
                Seen::Undecodable(ev) => {
                    undecodable += 1;
                    if let Some(ev) = ev {
                        engine.handle_packet(at, &ev);
                    }
                }
            });
            let done = now_us();
            lat.push(done.saturating_sub(p.timestamp_us.unwrap_or(read_us)));
            verdict
        });
        if let Err(e) = res {
            tracing::warn!(error = %e, "NFQUEUE receive failed.");
        }
        self.counters.sip_undecodable += undecodable;
        self.inline.record(&lat);
        self.apply_actions(None, Some(read_us));
    }

    fn handle_input(&mut self, input: Input) {
        match input {
            Input::Control(Request::Reload, reply) => self.start_reload(Some(reply)),
            Input::Reloaded(result, reply) => {
                self.reloading = false;
                let (ok, msg) = match *result {
                    Ok(p) => (true, self.finish_reload(p)),
                    Err(e) => (false, e),
                };
                tracing::info!(result = %msg, "Reload.");
                // Whatever the outcome, the daemon runs (a refused reload
                // keeps the policy in force).
                self.notify_state("READY=1\n");
                if let Some(reply) = reply {
                    let _ = reply.send(Reply::One(control::Answer::Reload(control::ReloadReply {
                        ok,
                        result: msg,
                    })));
                }
            }
            Input::Imported(imported) => self.import(imported),
            Input::Hep(packets, counts, read_us) => self.hep(&packets, counts, read_us),
            Input::TableGone => self.reassert_table(),
            Input::ApiAuthFailed(src) => {
                let ev = voipwall_detect::Event {
                    src,
                    kind: voipwall_detect::EventKind::ApiAuthFailed,
                    origin: "api",
                };
                self.engine.handle_event(now(), &ev);
                self.apply_actions(None, Some(now_us()));
            }
            Input::FleetAllow {
                add,
                mut remove,
                replace,
            } => {
                if replace {
                    remove.extend(self.fleet_allowed.iter().copied());
                }
                for n in &remove {
                    self.engine.disallow(n);
                    self.fleet_allowed.remove(n);
                }
                for n in add {
                    self.engine.allow(n, None);
                    self.fleet_allowed.insert(n);
                }
                // Feeds and CrowdSec's decisions never list them either.
                let extra: Vec<IpNet> = self.fleet_allowed.iter().copied().collect();
                self.feeds.set(crate::feeds::FeedConfig::of(
                    &self.policy,
                    &self.own,
                    &extra,
                ));
            }
            Input::PeerMoved { add, remove } => {
                for a in remove {
                    self.engine.disallow(&IpNet::from(a));
                }
                for a in add {
                    self.engine.allow(IpNet::from(a), None);
                }
            }
            Input::Log {
                origin,
                events,
                counts,
                read_us,
            } => {
                self.counters.log_lines += counts.lines;
                self.counters.log_ambiguous += counts.ambiguous;
                self.counters.log_events += events.len() as u64;
                let at = now();
                for (_, ev) in events.iter(&origin) {
                    // Live logs: the daemon's clock, not the line's (a PBX
                    // with a wrong clock must not stretch or shrink windows).
                    self.engine.handle_event(at, &ev);
                }
                self.apply_actions(None, Some(read_us));
            }
            Input::Control(req, reply) => {
                let r = self.control(req);
                let _ = reply.send(r);
            }
        }
    }

    /// Sends `extra` (e.g. `READY=1\n`) and a STATUS line to systemd.
    fn notify_state(&self, extra: &str) {
        if !self.notify.enabled() {
            return;
        }
        let msg = format!(
            "{extra}STATUS={}: {} active bans, {} bans made, {} packet copies read",
            if self.observe { "observe" } else { "enforce" },
            self.active.get(self.bans_made()),
            self.bans_made(),
            self.counters.nflog_packets
        );
        if let Err(e) = self.notify.send(&msg) {
            tracing::warn!(error = %e, "Could not notify systemd.");
        }
    }

    /// Bans this daemon has put in the kernel and the store so far.
    fn bans_made(&self) -> u64 {
        self.counters.bans
    }

    /// SIP from HEP, into the engine like a packet copy. A message NFLOG
    /// also copies (its port and transport are read from packets) is left
    /// to NFLOG: each message counts once.
    fn hep(&mut self, packets: &[hep::HepPacket], counts: hep::HepCounts, read_us: u64) {
        self.counters.hep_refused += counts.refused;
        self.counters.hep_over_cap += counts.over_cap;
        self.counters.hep_malformed += counts.malformed;
        self.counters.hep_dropped += counts.dropped;
        self.hep_pending.fetch_sub(1, Ordering::Relaxed);
        // NFLOG saw it too only if NFLOG is read and the message was to or
        // from this host (a PBX on another host sends HEP of its own SIP).
        let copied = if self.nflog_open {
            self.policy.sip_readable_ports()
        } else {
            Vec::new()
        };
        let at = now();
        for p in packets {
            let Ok(d) = voipwall_detect::packet::from_hep(&p.hep()) else {
                self.counters.hep_malformed += 1;
                continue;
            };
            let local_port = if d.is_request() { p.dport } else { p.sport };
            let ours = self.own.contains(&d.local());
            let proto = match p.ip_proto {
                17 => Some(voipwall_policy::Proto::Udp),
                6 => Some(voipwall_policy::Proto::Tcp),
                _ => None,
            };
            if ours
                && copied
                    .iter()
                    .any(|s| Some(s.proto) == proto && (s.lo..=s.hi).contains(&local_port))
            {
                self.counters.hep_duplicates += 1;
                continue;
            }
            self.counters.hep_packets += 1;
            if d.sent_by_host(&self.own) {
                if let Some((peer, call_id)) = d.hangup() {
                    self.engine.host_hangup(peer, call_id);
                }
                continue;
            }
            if let Some((ev, undecodable)) = d.engine_event("hep") {
                self.counters.sip_undecodable += u64::from(undecodable);
                self.engine.handle_packet(at, &ev);
            }
        }
        self.apply_actions(None, Some(read_us));
    }

    /// Drains the engine's actions into the kernel (batched per set), the
    /// store (one transaction) and the log.
    /// `pkt_us`: the kernel's arrival time of the batch's first timestamped
    /// packet; `read_us`: when the batch was read from NFLOG (outbound
    /// responses, which promote, carry no kernel timestamp).
    fn apply_actions(&mut self, pkt_us: Option<u64>, read_us: Option<u64>) {
        let mut bans: Vec<voipwall_detect::Ban> = Vec::new();
        let mut known: Vec<(IpAddr, u64)> = Vec::new();
        let mut demote: Vec<IpAddr> = Vec::new();
        let mut reassert: Vec<voipwall_detect::Ban> = Vec::new();
        while let Some(a) = self.engine.poll_action() {
            match a {
                Action::Ban(b) => bans.push(b),
                Action::Reassert(b) => reassert.push(b),
                Action::Promote { addr, at, until } => {
                    self.counters.promotions += 1;
                    known.push((addr, until.since(at)));
                }
                Action::Demote { addr, .. } => demote.push(addr),
                Action::Shield(v) => {
                    tracing::warn!(
                        account = %v.account, failures = v.failures, sources = v.sources,
                        "Account shielded (distributed guessing): {} failed authentications from {} sources; until {}, any source failing on it is banned at its first verified failure.",
                        v.failures, v.sources, v.until
                    );
                    self.event(
                        "shield",
                        None,
                        format!(
                            "account {} shielded until {}: {} failed authentications from {} sources within the window; sources failing on it are banned at their first verified failure",
                            v.account, v.until, v.failures, v.sources
                        ),
                    );
                }
                Action::ShieldEnd(v) => {
                    tracing::info!(
                        account = %v.account, bans = v.bans, alerts = v.alerts, failures = v.failures,
                        "Account shield ended: no failure on it for the shield's length."
                    );
                    self.event(
                        "shield-end",
                        None,
                        format!(
                            "account {} no longer shielded (since {}): {} failures, {} sources banned, {} alerts",
                            v.account, v.since, v.failures, v.bans, v.alerts
                        ),
                    );
                }
                Action::Alert {
                    addr,
                    rule,
                    message,
                    repeats,
                    ..
                } => {
                    self.counters.alerts += 1;
                    tracing::warn!(src_ip = %addr, rule_id = %rule, repeats, "Alert: {message}");
                    self.event(
                        "alert",
                        Some(addr.to_string()),
                        format!("{rule}: {message}"),
                    );
                }
            }
        }
        if !reassert.is_empty() && !self.observe {
            self.kernel_add_bans(&reassert);
            self.counters.reasserted += reassert.len() as u64;
            for b in &reassert {
                tracing::warn!(
                    target = %b.target, rule_id = %b.rule,
                    "A packet from a banned source got through: the kernel no longer held its ban (removed by another tool?). The ban is back in the kernel."
                );
                self.event(
                    "reassert",
                    Some(b.target.to_string()),
                    "the kernel had lost this ban; put back".into(),
                );
            }
        }
        if bans.is_empty() && known.is_empty() && demote.is_empty() {
            return;
        }
        let mut live_at: Option<u64> = None;
        if !bans.is_empty() {
            if self.observe {
                self.counters.bans_observed += bans.len() as u64;
            } else {
                self.kernel_add_bans(&bans);
                let live = now_us();
                live_at = Some(live);
                // From the evidence's arrival: the kernel's timestamp of
                // the batch's first packet, else when it was read; a ban a
                // timer decided (a challenge left unanswered) from the
                // decision itself (its millisecond, so up to 1 ms more).
                {
                    let c = &mut self.counters;
                    for b in &bans {
                        let from = pkt_us.or(read_us).unwrap_or(b.at.0.saturating_mul(1000));
                        let l = live.saturating_sub(from);
                        if c.ban_latency_us.len() >= 4096 {
                            c.ban_latency_us.pop_front();
                        }
                        c.ban_latency_us.push_back(l);
                        let per = c.ban_latency_by_rule.entry(b.rule.clone()).or_default();
                        if per.len() >= 1024 {
                            per.pop_front();
                        }
                        per.push_back(l);
                        let i = LATENCY_BUCKETS_US
                            .iter()
                            .position(|&u| l <= u)
                            .unwrap_or(LATENCY_BUCKETS_US.len());
                        c.ban_latency_histogram[i] += 1;
                    }
                }
                self.counters.bans += bans.len() as u64;
            }
            let origin = if self.observe { "observe" } else { "detect" };
            let recs: Vec<BanRecord> = bans
                .iter()
                .map(|b| BanRecord::from_ban(b, origin))
                .collect();
            count_bans(&mut self.counters, &recs);
            let _ = self.writer.send(StoreOp::Bans(recs));
            let live_us = live_at.unwrap_or_else(now_us);
            if bans.len() > 20 {
                tracing::info!(count = bans.len(), "Bans issued (flood: summarised).");
            }
            for b in &bans {
                if bans.len() <= 20 {
                    tracing::info!(
                        src_ip = %b.offender, target = %b.target, rule_id = %b.rule, ban_ttl = b.ttl / 1000,
                        observe = self.observe, "{}", b.reason
                    );
                }
                let kind = if self.observe { "would-ban" } else { "ban" };
                let v = json!({"kind": kind, "at": b.at.to_string(), "target": b.target.to_string(), "offender": b.offender,
                               "rule": b.rule, "until": b.until.to_string(), "until_ms": b.until.0, "reason": b.reason,
                               "events": b.evidence.len(), "live_us": live_us});
                self.publish(v.clone());
                self.pending.push(EventRecord {
                    at: b.at,
                    kind: kind.into(),
                    addr: Some(b.target.to_string()),
                    detail: b.reason.clone(),
                });
            }
        }
        if !known.is_empty() && !self.observe {
            let mut entries: Vec<_> = known
                .iter()
                .map(|(addr, ttl)| (place(Entry::Known(*addr), self.prefixes()), Some(*ttl)))
                .collect();
            // Remembered for `[detect] remember_endpoints` after: a prefix
            // ban spares them when their registration has lapsed.
            let remember_ms = self.policy.detect.remember_endpoints.saturating_mul(1000);
            if remember_ms > 0 {
                entries.extend(known.iter().map(|(addr, _)| {
                    (
                        place(Entry::Remembered(*addr), self.prefixes()),
                        Some(remember_ms),
                    )
                }));
                let _ = self.writer.send(StoreOp::Remember(
                    known.iter().map(|(a, _)| *a).collect(),
                    now(),
                ));
            }
            self.kernel_add(&entries);
            if let Some(p) = pkt_us.or(read_us) {
                let l = now_us().saturating_sub(p);
                for _ in &known {
                    if self.counters.promotion_latency_us.len() >= 4096 {
                        self.counters.promotion_latency_us.pop_front();
                    }
                    self.counters.promotion_latency_us.push_back(l);
                }
            }
        }
        let prefixes = self.prefixes();
        for addr in demote {
            if let Some(s) = self.bans.as_mut() {
                let _ = s.delete(&place(Entry::Known(addr), prefixes));
            }
        }
    }

    /// The engine's bans into the kernel, each placed as the plane places
    /// it, with the time it has left.
    fn kernel_add_bans(&mut self, bans: &[voipwall_detect::Ban]) {
        let t = now();
        let prefixes = self.prefixes();
        let entries: Vec<_> = bans
            .iter()
            .map(|b| {
                (
                    crate::plane::place_record(b.target, prefixes),
                    Some(b.until.since(t)),
                )
            })
            .collect();
        self.kernel_add(&entries);
    }

    fn kernel_add(&mut self, entries: &[(voipwall_nft::sets::Placement, Option<u64>)]) {
        let Some(s) = self.bans.as_mut() else { return };
        if entries.is_empty() {
            return;
        }
        if let Err(e) = s.add_many(entries) {
            self.counters.kernel_errors += 1;
            tracing::error!(error = %e, "The kernel refused set elements.");
        }
    }

    fn prefixes(&self) -> Prefixes {
        crate::plane::prefixes(Some(&self.policy))
    }

    fn publish(&mut self, v: Value) {
        // A follower that does not keep up is dropped (its queue is full),
        // never buffered without bound.
        self.followers.retain(|f| f.try_send(v.clone()).is_ok());
        if self.recent.len() >= 10_000 {
            self.recent.pop_front();
        }
        self.recent.push_back(v);
    }

    fn event(&mut self, kind: &str, addr: Option<String>, detail: String) {
        let at = now();
        self.publish(json!({"kind": kind, "at": at.to_string(), "addr": addr, "detail": detail}));
        self.pending.push(EventRecord {
            at,
            kind: kind.into(),
            addr,
            detail,
        });
    }

    fn flush_events(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let evs = std::mem::take(&mut self.pending);
        let _ = self.writer.send(StoreOp::Events(evs));
    }

    /// Waits until the store thread has committed what was sent before.
    fn sync_store(&self) {
        let (done, wait) = mpsc::channel();
        if self.writer.send(StoreOp::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// Safe mode: nothing is applied while the hold lasts (management stays
/// reachable); the control socket answers `status` with the time left.
fn hold_back(secs: u64, socket: &std::path::Path) -> anyhow::Result<()> {
    let until = Instant::now() + std::time::Duration::from_secs(secs);
    tracing::error!(
        hold_s = secs,
        "SAFE MODE: this host booted twice within the safe-mode window; the policy is held back until the hold ends. Fix or roll back the policy now if it locked you out."
    );
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    drop(wake_rx);
    let waker = Waker(Arc::new(wake_tx));
    let (tx, rx) = mpsc::channel::<Input>();
    let server = control::serve(socket, tx, waker)?;
    // Started, as far as systemd is concerned: the hold is deliberate and
    // outlasts the start timeout; the watchdog is pinged meanwhile.
    let notify = voipwall_sys::notify::Notifier::from_env();
    let _ = notify.send(&format!(
        "READY=1\nSTATUS=SAFE MODE: policy held back for {secs} s (two boots within the window)"
    ));
    let mut last_warning = Instant::now();
    while Instant::now() < until {
        if notify.watchdog().is_some() {
            let _ = notify.send("WATCHDOG=1");
        }
        if let Ok(Input::Control(req, reply)) =
            rx.recv_timeout(std::time::Duration::from_millis(200))
        {
            let left = until.saturating_duration_since(Instant::now()).as_secs();
            let v = match req {
                Request::Status => control::Answer::Holding(control::HoldingReply {
                    ok: true,
                    safe_mode: control::HoldingState {
                        holding: true,
                        apply_in_s: left,
                    },
                    pid: std::process::id(),
                }),
                _ => control::Answer::error(format!(
                    "safe mode: the policy is held back for {left} s more; only status answers"
                )),
            };
            let _ = reply.send(Reply::One(v));
        }
        if last_warning.elapsed().as_secs() >= 30 {
            last_warning = Instant::now();
            tracing::error!(
                apply_in_s = until.saturating_duration_since(Instant::now()).as_secs(),
                "SAFE MODE: policy still held back."
            );
        }
    }
    drop(server);
    // The listener thread keeps the socket; the daemon's own server replaces it.
    let _ = std::fs::remove_file(socket);
    tracing::warn!("Safe mode hold over: applying the policy.");
    Ok(())
}

/// SIGTERM/SIGINT stop the loop (a signal interrupts `poll`); SIGHUP
/// reloads the policy.
fn install_signal_handlers(shutdown: &Arc<AtomicBool>, reload: &Arc<AtomicBool>) {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, shutdown.clone());
    }
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone());
}
