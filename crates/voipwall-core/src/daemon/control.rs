//! The control socket: one JSON request per line, one JSON response per
//! line (a stream of lines for `events --follow`). The socket is created
//! mode 0660 (root and the socket's group); the CLI uses it when a daemon
//! runs, so bans made by hand reach the store too.

use std::io::{BufRead, BufReader, Read as _, Write};
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
    /// Test hook: hold the engine thread this long (only when the daemon
    /// was started with `VOIPWALL_TEST_HOOKS=1`; refused otherwise). Shows
    /// that a stalled packet path stops the systemd watchdog pings.
    TestStall {
        /// Milliseconds.
        ms: u64,
    },
}

/// Packet → kernel latency, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SafeModeState {
    /// Whether the policy is held back now (never, once running).
    pub holding: bool,
    /// Seconds it was held back at start.
    pub held_at_start_s: Option<u64>,
}

/// The policy file against the generation in force (the CLI adds it:
/// compiling must not hold up the daemon's packet path).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Bans the kernel held that the store did not.
    pub imported_from_kernel: usize,
    /// Trunk and peer names: what they resolve to.
    pub dns: Option<Value>,
    /// NFLOG group read.
    pub nflog_group: Option<u16>,
    /// Counters.
    pub counters: super::Counters,
    /// Store writes that failed.
    pub store_errors: u64,
    /// The engine's counters.
    pub engine: voipwall_detect::Stats,
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
    pub ban_latency_histogram: Vec<(Option<u64>, u64)>,
    /// Packet arrival → known-set element in the kernel.
    pub promotion_latency_us: Latency,
    /// Resident memory, kB.
    pub rss_kb: Option<u64>,
    /// CPU time used, ms.
    pub cpu_ms: Option<u64>,
    /// Added by the CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<PolicyFile>,
}

/// The answer to `bans` (from the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BansReply {
    /// Always true.
    pub ok: bool,
    /// Newest first.
    pub bans: Vec<voipwall_store::BanRecord>,
}

/// The answer to `explain ADDR` (what detection knows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainReply {
    /// Always true.
    pub ok: bool,
    /// The engine's view.
    pub engine: voipwall_detect::Explanation,
    /// Its bans in the store, newest first (at most 20).
    pub stored_bans: Vec<voipwall_store::BanRecord>,
}

/// The answer to `status` while safe mode holds the policy back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldingReply {
    /// Always true.
    pub ok: bool,
    /// `holding` and `apply_in_s`.
    pub safe_mode: Value,
    /// Process id.
    pub pid: u32,
}

/// Either answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
/// Connections served at once; more are told so and closed.
pub const MAX_CONNECTIONS: usize = 64;
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

/// What the engine thread answers: one value, or a stream.
pub enum Reply {
    /// One JSON value.
    One(Value),
    /// JSON lines until the receiver is dropped.
    Stream(Value, mpsc::Receiver<Value>),
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
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            use std::sync::atomic::Ordering;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    let _ = writeln!(
                        conn,
                        "{}",
                        serde_json::json!({"ok": false, "error": format!("{MAX_CONNECTIONS} control connections already open; try again")})
                    );
                    continue;
                }
                live.fetch_add(1, Ordering::Relaxed);
                let tx = tx.clone();
                let waker = waker.clone();
                let mine = live.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        handle(conn, &tx, &waker);
                        mine.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    // The thread (and its decrement) never ran.
                    live.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })
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

fn handle(conn: UnixStream, tx: &Sender<Input>, waker: &Waker) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let _ = read_half.set_read_timeout(Some(IDLE));
    // A client that stops reading (a long `bans`, a follower) is dropped
    // after this long instead of holding its thread and slot forever.
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut reader = BufReader::new(Deadline {
        inner: read_half,
        since: std::time::Instant::now(),
    });
    let mut w = conn;
    let mut line = String::new();
    loop {
        line.clear();
        reader.get_mut().since = std::time::Instant::now();
        match (&mut reader).take(MAX_REQUEST + 1).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) if n as u64 > MAX_REQUEST => {
                let _ = writeln!(
                    w,
                    "{}",
                    serde_json::json!({"ok": false, "error": format!("request longer than {} MiB; refused", MAX_REQUEST >> 20)})
                );
                return;
            }
            Ok(_) => {}
        }
        let req: Request = match serde_json::from_str(line.trim()) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(
                    w,
                    "{}",
                    serde_json::json!({"ok": false, "error": format!("bad request: {e}")})
                );
                line.clear();
                continue;
            }
        };
        line.clear();
        let (rtx, rrx) = mpsc::channel();
        if tx.send(Input::Control(req, rtx)).is_err() {
            return;
        }
        waker.wake();
        match rrx.recv_timeout(Duration::from_secs(60)) {
            Ok(Reply::One(v)) => {
                if writeln!(w, "{v}").is_err() {
                    return;
                }
            }
            Ok(Reply::Stream(first, rx)) => {
                if writeln!(w, "{first}").is_err() {
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
                    serde_json::json!({"ok": false, "error": "the daemon did not answer"})
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
