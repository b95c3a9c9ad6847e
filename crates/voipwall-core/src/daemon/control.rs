//! The control socket: one JSON request per line, one JSON response per
//! line (a stream of lines for `events --follow`). The socket is created
//! mode 0660 (root and the socket's group); the CLI uses it when a daemon
//! runs, so bans made by hand reach the store too.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Input, Waker};

/// A request from the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Daemon state and counters.
    Status,
    /// Bans from the store.
    Bans {
        /// Include ended and lifted bans.
        #[serde(default)]
        all: bool,
        /// Only this rule.
        #[serde(default)]
        rule: Option<String>,
        /// Only bans touching this network.
        #[serde(default)]
        net: Option<String>,
        /// At most this many.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// A runtime verb (ban, unban, block, allow and their removals),
    /// executed by the ban plane the CLI uses without a daemon.
    Runtime(crate::plane::Op),
    /// What detection knows about an address.
    Explain {
        /// The address.
        addr: String,
    },
    /// What the call rules say of a call about to be placed (dialplans
    /// ask), from the same counters, without counting it.
    CallDecide {
        /// The caller's address.
        from: String,
        /// The authenticated user, if the dialplan knows it.
        #[serde(default)]
        user: Option<String>,
        /// The number dialled.
        to: String,
    },
    /// Recent events; with `follow`, keep streaming.
    Events {
        /// Stream new events as they happen.
        #[serde(default)]
        follow: bool,
        /// How many past events first.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Re-read the policy and apply it; bans stay.
    Reload,
    /// The drop log: what the firewall refused, sampled.
    Drops {
        /// The window, minutes (1–60; default 60).
        #[serde(default)]
        minutes: Option<u64>,
        /// How many sources and ports (default 20, at most 1000).
        #[serde(default)]
        top: Option<usize>,
        /// Samples after this sequence number (0: the latest ones).
        #[serde(default)]
        since: Option<u64>,
    },
    /// Test hook: hold the engine thread this long (only when the daemon
    /// was started with `VOIPWALL_TEST_HOOKS=1`; refused otherwise). Shows
    /// that a stalled packet path stops the systemd watchdog pings.
    TestStall {
        /// Milliseconds.
        ms: u64,
    },
}

/// Packet → kernel latency, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Latency {
    /// How many were measured.
    pub samples: usize,
    /// Median.
    pub p50: Option<u64>,
    /// 99th percentile.
    #[serde(default)]
    pub p99: Option<u64>,
    /// Worst.
    pub max: Option<u64>,
}

/// Safe mode as the running daemon saw it at start.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SafeModeState {
    /// Whether the policy is held back now (never, once running).
    pub holding: bool,
    /// Seconds it was held back at start.
    pub held_at_start_s: Option<u64>,
}

/// The policy file against the generation in force (the CLI adds it:
/// compiling must not hold up the daemon's packet path).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PolicyFile {
    /// The generation in force.
    pub generation: Option<i64>,
    /// Whether the file compiles to its script.
    pub matches_running: Option<bool>,
    /// Why the file does not load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `status` from a running daemon. The CLI reads it through
/// this type, so the daemon and the CLI cannot disagree about a field.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusReply {
    /// Always true.
    pub ok: bool,
    /// Process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_s: u64,
    /// `enforce` or `observe`.
    pub mode: String,
    /// The policy file it runs.
    pub policy: String,
    /// Its state directory.
    pub state_dir: String,
    /// How the store was found at start.
    pub store: voipwall_store::Opened,
    /// Bans restored from the store at start.
    pub restored_bans: usize,
    /// Safe mode at start.
    pub safe_mode: SafeModeState,
    /// At start, the generation in force had been compiled by another
    /// voipwall version (an upgrade): what was done about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recompiled: Option<crate::safety::Recompiled>,
    /// Bans the kernel held that the store did not.
    pub imported_from_kernel: usize,
    /// Trunk and peer names: what they resolve to.
    pub dns: Option<DnsStatus>,
    /// NFLOG group read.
    pub nflog_group: Option<u16>,
    /// Counters.
    pub counters: super::Counters,
    /// Store writes that failed.
    pub store_errors: u64,
    /// The engine's counters.
    pub engine: voipwall_detect::Stats,
    /// Accounts shielded now (distributed guessing).
    #[serde(default)]
    pub shields: Vec<voipwall_detect::ShieldView>,
    /// The call guard's counters (calls followed, per rule), when the
    /// policy has call rules.
    #[serde(default)]
    pub calls: Option<voipwall_detect::calls::CallStats>,
    /// The call guard's inline queue, in inline mode.
    #[serde(default)]
    pub inline: Option<super::inline::InlineView>,
    /// The log sources followed, and whether each delivers.
    #[serde(default)]
    pub sources: Vec<super::tail::SourceHealth>,
    /// SIP over TCP: flows reassembled from packet copies.
    #[serde(default)]
    pub tcp: voipwall_sip::tcp::TcpStats,
    /// Targets with a ban in force (counted by the store thread every
    /// 10 s, plus the bans made since: never counted on the packet path).
    pub active_bans: u64,
    /// Evidence arrival → ban in the kernel, all rules.
    pub ban_latency_us: Latency,
    /// The same per rule.
    #[serde(default)]
    pub ban_latency_by_rule_us: std::collections::BTreeMap<String, Latency>,
    /// Every ban since start by latency: `(upper bound µs, count)`, the
    /// last bucket unbounded (`None`).
    #[serde(default)]
    #[schemars(with = "Vec<Vec<Option<u64>>>")]
    pub ban_latency_histogram: Vec<(Option<u64>, u64)>,
    /// Packet arrival → known-set element in the kernel.
    pub promotion_latency_us: Latency,
    /// Resident memory, kB.
    pub rss_kb: Option<u64>,
    /// CPU time used, ms.
    pub cpu_ms: Option<u64>,
    /// The HTTP API's listeners (`[api] listen`).
    #[serde(default)]
    pub api: Vec<ApiListener>,
    /// Blocklist feeds (`[[feed]]`).
    #[serde(default)]
    pub feeds: Vec<crate::feeds::FeedStatus>,
    /// voipwall as CrowdSec's bouncer (`[crowdsec] bouncer_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec_bouncer: Option<crate::feeds::BouncerStatus>,
    /// voipwall as CrowdSec's watcher (`[crowdsec] machine_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec_watcher: Option<crate::feeds::WatcherStatus>,
    /// The Redis Streams fleet (`[fleet]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::feeds::FleetStatus>,
    /// Added by the CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<PolicyFile>,
}

/// One `[api] listen` address and how it is doing. An address that cannot
/// be bound at start (the unit starts before the network is up) is tried
/// again every few seconds until it can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiListener {
    /// The address and port.
    pub listen: String,
    /// `listening`, or `retrying` while it cannot be bound.
    pub state: String,
    /// HTTPS.
    pub tls: bool,
    /// Why the last bind failed (while retrying).
    pub error: Option<String>,
    /// Binds tried.
    pub attempts: u32,
}

/// The answer to `bans` (from the store).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BansReply {
    /// Always true.
    pub ok: bool,
    /// Newest first.
    pub bans: Vec<voipwall_store::BanRecord>,
}

/// The answer to `explain ADDR` (what detection knows).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExplainReply {
    /// Always true.
    pub ok: bool,
    /// The engine's view.
    pub engine: voipwall_detect::Explanation,
    /// Its bans in the store, newest first (at most 20).
    pub stored_bans: Vec<voipwall_store::BanRecord>,
}

/// Safe mode while it holds the policy back.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HoldingState {
    /// Always true.
    pub holding: bool,
    /// Seconds until the policy is applied.
    pub apply_in_s: u64,
}

/// The answer to `status` while safe mode holds the policy back.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HoldingReply {
    /// Always true.
    pub ok: bool,
    /// How long it still holds.
    pub safe_mode: HoldingState,
    /// Process id.
    pub pid: u32,
}

/// A refusal or a failure: every answer whose `ok` is false but a runtime
/// verb's (an [`crate::plane::Outcome`] says what it refused).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorReply {
    /// Always false.
    pub ok: bool,
    /// What went wrong, for the operator.
    pub error: String,
}

impl ErrorReply {
    /// A refusal saying `error`.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: error.into(),
        }
    }
}

/// The answer to `events`: the recent ones, oldest first (an event's own
/// fields stay free-form: detection, verbs and the daemon add their own).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventsReply {
    /// Always true.
    pub ok: bool,
    /// The events.
    pub events: Vec<Value>,
}

/// The answer to `reload`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReloadReply {
    /// Whether the policy was applied.
    pub ok: bool,
    /// What happened, for the operator.
    pub result: String,
}

/// The answer to the test hook `TestStall`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StalledReply {
    /// Always true.
    pub ok: bool,
    /// How long the engine thread was held.
    pub stalled_ms: u64,
}

/// One trunk or peer name, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NameStatus {
    /// The name.
    pub host: String,
    /// Also follows SIP SRV records.
    pub srv: bool,
    /// The addresses its sets hold.
    pub addresses: Vec<std::net::IpAddr>,
    /// TTL of the last good answer, seconds.
    pub ttl_s: Option<u32>,
    /// The last failure, while it lasts.
    pub error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// When it is asked next.
    pub next_in_ms: u64,
}

/// The resolver thread's view, for `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DnsStatus {
    /// Every name.
    pub names: Vec<NameStatus>,
    /// Set changes made.
    pub set_updates: u64,
    /// The servers asked.
    pub servers: Vec<std::net::SocketAddr>,
}

/// Every answer of the control socket, as the daemon builds it; the CLI
/// (and the HTTP API) read and serialize these same types.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// `status`, running.
    Status(Box<StatusReply>),
    /// `status`, safe mode holding.
    Holding(HoldingReply),
    /// `bans`.
    Bans(BansReply),
    /// A runtime verb.
    Runtime(crate::plane::Outcome),
    /// `explain ADDR`.
    Explain(Box<ExplainReply>),
    /// `events`.
    Events(EventsReply),
    /// `reload`.
    Reload(ReloadReply),
    /// `drops`.
    Drops(Box<voipwall_detect::drops::DropsReport>),
    /// `call decide`.
    CallDecide(CallDecideReply),
    /// The test hook.
    Stalled(StalledReply),
    /// A refusal.
    Error(ErrorReply),
}

impl Answer {
    /// A refusal saying `error`.
    pub fn error(error: impl Into<String>) -> Self {
        Self::Error(ErrorReply::new(error))
    }

    /// The line sent for it.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::to_string(&ErrorReply::new(format!("internal: {e}"))).unwrap_or_default()
        })
    }
}

/// What the call rules say of one call.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CallDecideReply {
    /// Always true (a refusal is an error answer).
    pub ok: bool,
    /// No rule is broken.
    pub allow: bool,
    /// The rules the call would break, each with why.
    pub broken: Vec<BrokenRule>,
}

/// One rule a call would break.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BrokenRule {
    /// Rule name.
    pub rule: String,
    /// Why.
    pub reason: String,
}

/// Either answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum StatusAnswer {
    /// Running.
    Running(Box<StatusReply>),
    /// Holding back (safe mode).
    Holding(HoldingReply),
}

/// The longest request line (a `ban --file` of ~3 million addresses fits);
/// a longer one is refused and the connection closed, never read into
/// memory whole.
pub const MAX_REQUEST: u64 = 64 << 20;
/// Connections from group members served at once; more are told so and
/// closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections kept for root (and the daemon's own user) beyond those:
/// members reconnecting as fast as they are closed cannot keep the
/// operator out.
pub const ROOT_CONNECTIONS: usize = 16;
/// Request bytes all members' connections may hold together: what one
/// connection reads counts until its request is answered. A connection
/// that would go beyond is refused at once (never waits: waiting for
/// memory that other connections hold could wait for ever).
pub const MEMBER_BYTES: u64 = 32 << 20;
/// A connection that sends no request for this long is closed (the CLI
/// sends its request at once).
pub const IDLE: Duration = Duration::from_secs(5);
/// How long one request line may take to arrive, however it trickles in
/// (each read also has `IDLE`): a client sending a byte every few seconds
/// cannot hold a connection slot for ever.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long a reply may wait for the client to read it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// `events --follow` streams at once, and the events each may have queued
/// before it is dropped for not reading.
pub const MAX_FOLLOWERS: usize = 16;
pub const FOLLOW_QUEUE: usize = 4096;

/// What the engine thread answers: one answer, or a first answer and a
/// stream of events.
pub enum Reply {
    /// One answer.
    One(Answer),
    /// An answer, then event lines until the receiver is dropped.
    Stream(Answer, mpsc::Receiver<Value>),
}

/// Listens on `path`; forwards requests to the engine thread.
pub fn serve(
    path: &Path,
    tx: Sender<Input>,
    waker: Waker,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a killed daemon: remove it if nobody answers. Any
    // other kind of file is the operator's, never ours to delete.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt as _;
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it (choose another --socket)",
                    path.display()
                ),
            ));
        }
        if UnixStream::connect(path).is_err() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    // Root and members of the `voipwall` group, when that group exists.
    if let Some(gid) = group_id("voipwall") {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    let lanes = Lanes {
        member: Lane::new(MAX_CONNECTIONS, MEMBER_BYTES, true),
        root: Lane::new(ROOT_CONNECTIONS, MAX_REQUEST + 1, false),
    };
    let me = rustix::process::geteuid().as_raw();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                // Root and the daemon's own user get their own slots and
                // request memory; everyone else the socket lets in (the
                // `voipwall` group) shares the members' lane.
                let privileged = rustix::net::sockopt::socket_peercred(&conn)
                    .is_ok_and(|c| c.uid.is_root() || c.uid.as_raw() == me);
                let lane = if privileged {
                    lanes.root.clone()
                } else {
                    lanes.member.clone()
                };
                if !lane.enter() {
                    let _ = writeln!(
                        conn,
                        "{}",
                        Answer::error(format!(
                            "{} control connections already open; try again",
                            lane.slots
                        ))
                        .to_line()
                    );
                    continue;
                }
                let tx = tx.clone();
                let waker = waker.clone();
                let mine = lane.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        handle(conn, &tx, &waker, &mine);
                        mine.leave();
                    });
                if spawned.is_err() {
                    // The thread (and its `leave`) never ran.
                    lane.leave();
                }
            }
        })
}

/// The connections and request memory one kind of peer may hold.
///
/// Request memory is a set of fixed 64 KiB chunks, allocated the first
/// time they are needed and then only ever lent and given back, never
/// freed: the lane's memory is bounded by its size however many
/// connections come and go (buffers that grow and are freed by thousands
/// of short-lived connection threads fragment the allocator's per-thread
/// arenas: a first version that did so peaked at 244 MB for 64 MiB of
/// budget).
struct Lane {
    slots: usize,
    live: std::sync::atomic::AtomicUsize,
    bytes: u64,
    /// Keep chunks given back for the next request (members: the memory a
    /// hostile member can make the daemon hold stays this lane's size for
    /// good), or hold each line in one buffer of its own, freed after
    /// (root: a rare big `ban --file` gives its memory back to the system,
    /// and is parsed without a second copy; `bytes` is then not shared
    /// across root's connections, only `MAX_REQUEST` per line).
    retain: bool,
    chunks: std::sync::Mutex<Chunks>,
}

#[derive(Default)]
struct Chunks {
    free: Vec<Box<[u8]>>,
    made: u64,
}

#[derive(Clone)]
struct Lanes {
    member: std::sync::Arc<Lane>,
    root: std::sync::Arc<Lane>,
}

/// The size of one chunk of request memory.
const CHUNK: usize = 64 << 10;

impl Lane {
    fn new(slots: usize, bytes: u64, retain: bool) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            slots,
            live: std::sync::atomic::AtomicUsize::new(0),
            bytes,
            retain,
            chunks: std::sync::Mutex::new(Chunks::default()),
        })
    }

    fn enter(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.slots).then_some(n + 1)
            })
            .is_ok()
    }

    fn leave(&self) {
        self.live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Lends a chunk, if the lane has one free (or may make one).
    fn lend(&self) -> Option<Box<[u8]>> {
        let mut c = self
            .chunks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = c.free.pop() {
            return Some(b);
        }
        if (c.made + 1) * CHUNK as u64 > self.bytes {
            return None;
        }
        c.made += 1;
        Some(vec![0u8; CHUNK].into_boxed_slice())
    }

    fn give_back(&self, chunks: impl Iterator<Item = Box<[u8]>>) {
        let mut c = self
            .chunks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.retain {
            c.free.extend(chunks);
        } else {
            c.made -= chunks.count() as u64;
        }
    }
}

/// One request line, held in chunks lent by a lane; given back when
/// dropped.
struct Held<'a> {
    lane: &'a Lane,
    chunks: Vec<Box<[u8]>>,
    /// Bytes used in the last chunk.
    last: usize,
    /// A lane that does not retain (root) holds its line in one buffer:
    /// parsed where it is, with no second copy of a 60 MiB `ban --file`.
    whole: Vec<u8>,
}

impl Held<'_> {
    fn len(&self) -> u64 {
        if !self.lane.retain {
            return self.whole.len() as u64;
        }
        (self.chunks.len().saturating_sub(1) * CHUNK + self.last) as u64
    }

    /// Appends `bytes`, borrowing chunks as needed; false when the lane
    /// has none left.
    fn push(&mut self, mut bytes: &[u8]) -> bool {
        if !self.lane.retain {
            self.whole.extend_from_slice(bytes);
            return true;
        }
        while !bytes.is_empty() {
            if self.chunks.is_empty() || self.last == CHUNK {
                let Some(c) = self.lane.lend() else {
                    return false;
                };
                self.chunks.push(c);
                self.last = 0;
            }
            let Some(c) = self.chunks.last_mut() else {
                return false;
            };
            let n = bytes.len().min(CHUNK - self.last);
            c[self.last..self.last + n].copy_from_slice(&bytes[..n]);
            self.last += n;
            bytes = &bytes[n..];
        }
        true
    }

    /// Parses the line: straight from the chunk when it fits in one (almost
    /// every request), else from one copy of the chunks (serde_json reads a
    /// `Read` byte by byte, ~20 MB/s: a 48 MiB line took seconds).
    fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        if !self.lane.retain {
            return serde_json::from_slice(&self.whole);
        }
        match self.chunks.as_slice() {
            [] => serde_json::from_slice(b""),
            [one] => serde_json::from_slice(&one[..self.last]),
            many => {
                let n = many.len();
                let mut whole = Vec::with_capacity(self.len() as usize);
                for (i, c) in many.iter().enumerate() {
                    whole.extend_from_slice(if i + 1 == n { &c[..self.last] } else { c });
                }
                serde_json::from_slice(&whole)
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.lane.give_back(self.chunks.drain(..));
    }
}

/// How reading one request line ended.
enum Line {
    /// A whole line is in the buffer.
    Whole,
    /// The peer closed (or timed out) before a whole line.
    Closed,
    /// Longer than `MAX_REQUEST`.
    TooLong,
    /// The lane's request memory is held by other connections.
    NoMemory,
}

/// Reads one line into `req`, never holding more than its lane lends.
fn read_line<R: BufRead>(r: &mut R, req: &mut Held<'_>) -> Line {
    loop {
        let avail = match r.fill_buf() {
            Ok([]) | Err(_) => return Line::Closed,
            Ok(a) => a,
        };
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if req.len() + take as u64 > MAX_REQUEST {
            return Line::TooLong;
        }
        if !req.push(&avail[..take]) {
            return Line::NoMemory;
        }
        r.consume(take);
        if done {
            return Line::Whole;
        }
    }
}

/// A reader that refuses to read once a deadline has passed.
struct Deadline<R> {
    inner: R,
    since: std::time::Instant,
}

impl<R: std::io::Read> std::io::Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since.elapsed() > REQUEST_DEADLINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request line took too long",
            ));
        }
        self.inner.read(buf)
    }
}

fn handle(conn: UnixStream, tx: &Sender<Input>, waker: &Waker, lane: &Lane) {
    // Who is on the other end, for the audit log and `bans --all`.
    let actor = match rustix::net::sockopt::socket_peercred(&conn) {
        Ok(c) => format!("cli (uid {})", c.uid.as_raw()),
        Err(_) => "cli".to_string(),
    };
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let _ = read_half.set_read_timeout(Some(IDLE));
    // A client that stops reading (a long `bans`, a follower) is dropped
    // after this long instead of holding its thread and slot forever.
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut reader = BufReader::with_capacity(
        64 << 10,
        Deadline {
            inner: read_half,
            since: std::time::Instant::now(),
        },
    );
    let mut w = conn;
    loop {
        reader.get_mut().since = std::time::Instant::now();
        // One request's memory at a time: given back once it is parsed.
        // The line's memory stays lent until the request is answered: what
        // it parses into (a `ban --file`'s targets) lives that long too, so
        // the lane's bound is on requests in flight, not only on reading.
        let mut line = Held {
            lane,
            chunks: Vec::new(),
            last: 0,
            whole: Vec::new(),
        };
        let parsed = {
            match read_line(&mut reader, &mut line) {
                Line::Closed => return,
                Line::TooLong => {
                    let _ = writeln!(
                        w,
                        "{}",
                        Answer::error(format!(
                            "request longer than {} MiB; refused",
                            MAX_REQUEST >> 20
                        ))
                        .to_line()
                    );
                    return;
                }
                Line::NoMemory => {
                    let _ = writeln!(
                        w,
                        "{}",
                        Answer::error(format!("the control socket's request memory ({} MiB for this kind of client) is held by other connections; refused, try again", lane.bytes >> 20)).to_line()
                    );
                    return;
                }
                Line::Whole => line.parse::<Request>(),
            }
        };
        let mut req: Request = match parsed {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(
                    w,
                    "{}",
                    Answer::error(format!("bad request: {e}")).to_line()
                );
                continue;
            }
        };
        // Who asks is the socket's to say, never the request's: only the
        // HTTP API (through `ControlHandle`) acts as `api:<token>`.
        if let Request::Runtime(op) = &mut req {
            op.actor.clone_from(&actor);
        }
        let (rtx, rrx) = mpsc::channel();
        if tx.send(Input::Control(req, rtx)).is_err() {
            return;
        }
        waker.wake();
        match rrx.recv_timeout(Duration::from_secs(60)) {
            Ok(Reply::One(a)) => {
                if writeln!(w, "{}", a.to_line()).is_err() {
                    return;
                }
            }
            Ok(Reply::Stream(first, rx)) => {
                if writeln!(w, "{}", first.to_line()).is_err() {
                    return;
                }
                for v in rx {
                    if writeln!(w, "{v}").is_err() {
                        return;
                    }
                }
                return;
            }
            Err(_) => {
                let _ = writeln!(
                    w,
                    "{}",
                    Answer::error("the daemon did not answer").to_line()
                );
                return;
            }
        }
    }
}

/// The id of a group from /etc/group.
fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
        })
}

/// The default socket path.
pub fn default_socket() -> PathBuf {
    std::env::var_os("VOIPWALL_SOCKET").map_or_else(
        || PathBuf::from("/run/voipwall/control.sock"),
        PathBuf::from,
    )
}

/// A connection to a running daemon, if one answers at `path`.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects, or `None` when no daemon listens.
    pub fn connect(path: &Path) -> Option<Self> {
        let s = UnixStream::connect(path).ok()?;
        let r = s.try_clone().ok()?;
        Some(Self {
            reader: BufReader::new(r),
            writer: s,
        })
    }

    /// Sends one request and reads its answer as `T`; a refusal (`ok`
    /// false, an [`ErrorReply`]) is an error saying why.
    pub fn call_as<T: serde::de::DeserializeOwned>(&mut self, req: &Request) -> anyhow::Result<T> {
        let v = self.call(req)?;
        if v.get("ok").and_then(Value::as_bool) != Some(true)
            && let Ok(e) = serde_json::from_value::<ErrorReply>(v.clone())
        {
            return Err(crate::Invalid(format!("error: {}", e.error)).into());
        }
        serde_json::from_value(v)
            .map_err(|e| anyhow::anyhow!("the daemon's answer does not match this voipwall ({e})"))
    }

    /// Sends one request and reads one response line.
    pub fn call(&mut self, req: &Request) -> anyhow::Result<Value> {
        if let Err(e) = writeln!(self.writer, "{}", serde_json::to_string(req)?) {
            // A daemon that refuses the connection (all slots taken) says
            // why and closes before the request is written: read that.
            // Never pass the socket's broken pipe on as an io::Error: the
            // CLI treats a broken pipe as its own stdout closing, silently.
            return match self.next_value() {
                Ok(Some(v)) => Ok(v),
                _ => Err(anyhow::anyhow!("control socket: {e}")),
            };
        }
        match self.next_value() {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(anyhow::anyhow!("the daemon closed the connection")),
            Err(e) => Err(anyhow::anyhow!("control socket: {e:#}")),
        }
    }

    /// The next line of a stream.
    pub fn next_value(&mut self) -> anyhow::Result<Option<Value>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&line)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines cut at any place, in a lane that retains chunks and one that
    /// does not, read back as the same requests; a lane's memory is lent,
    /// refused beyond its size and given back when a request is done.
    #[test]
    fn lines_in_chunks_read_back_whole_and_memory_is_bounded_and_returned() {
        let pad = " ".repeat(3 * CHUNK + 17);
        let text = format!(
            "{{\"cmd\":\"status\"}}\n{{\"cmd\":\"explain\",{pad}\"addr\":\"192.0.2.1\"}}\n"
        );
        for retain in [true, false] {
            let lane = Lane::new(4, (8 * CHUNK) as u64, retain);
            for cut in [1, 7, 4096, CHUNK - 1, CHUNK, CHUNK + 3] {
                let mut r = BufReader::with_capacity(cut, text.as_bytes());
                let mut got = Vec::new();
                loop {
                    let mut h = Held {
                        lane: &lane,
                        chunks: Vec::new(),
                        last: 0,
                        whole: Vec::new(),
                    };
                    match read_line(&mut r, &mut h) {
                        Line::Whole => got.push(h.parse::<Request>().expect("parses")),
                        Line::Closed => break,
                        Line::TooLong | Line::NoMemory => panic!("refused"),
                    }
                }
                assert!(
                    matches!(got.as_slice(), [Request::Status, Request::Explain { addr }] if addr == "192.0.2.1")
                );
            }
            if retain {
                let c = lane.chunks.lock().unwrap();
                assert_eq!(c.free.len() as u64, c.made, "every chunk given back");
            }
        }
        let lane = Lane::new(4, (2 * CHUNK) as u64, true);
        let long = "x".repeat(3 * CHUNK);
        let mut h = Held {
            lane: &lane,
            chunks: Vec::new(),
            last: 0,
            whole: Vec::new(),
        };
        assert!(matches!(
            read_line(&mut long.as_bytes(), &mut h),
            Line::NoMemory
        ));
        assert!(lane.lend().is_none(), "the lane is spent while held");
        drop(h);
        assert!(lane.lend().is_some(), "given back");
    }
}
