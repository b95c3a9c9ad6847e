//! voipwall's embedded store: an SQLite database in WAL mode holding the
//! bans (target, rule, reason, evidence, start, end, origin), recent events
//! (bounded) and an audit log of every policy apply and manual action.
//!
//! It is the source of truth: at start the daemon rebuilds the kernel sets
//! from [`Store::active_bans`] with each ban's remaining time, because
//! reading a large ban set back from the kernel is slow (DESIGN.md section 2).
//!
//! A database that cannot be read (corrupt, not SQLite, a newer schema) is
//! moved aside and a fresh one is started; [`Opened`] says which happened so
//! the daemon can say so. Nothing here reads the clock: times are arguments.
//!
//! ```
//! use voipwall_store::{BanRecord, Store};
//! use voipwall_detect::Timestamp;
//! let mut s = Store::in_memory().unwrap();
//! let ban = BanRecord::manual("203.0.113.9/32".parse().unwrap(), "test", Timestamp(1000), 3_600_000);
//! s.record_bans(&[ban]).unwrap();
//! assert_eq!(s.active_bans(Timestamp(2000)).unwrap().len(), 1);
//! assert!(s.active_bans(Timestamp(3_601_001)).unwrap().is_empty());
//! ```
#![warn(missing_docs)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use voipwall_detect::{Ban, Evidence, Timestamp};

/// Generations that keep their compiled ruleset (the newest ones).
pub const KEEP_IR: i64 = 3;

/// Schema version kept in `PRAGMA user_version`.
const SCHEMA: i64 = 3;

/// A feed's last good content (`[[feed]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRecord {
    /// The feed's name.
    pub name: String,
    /// When the content was fetched.
    pub fetched: Timestamp,
    /// Where an incremental feed (APIBAN) asks from next.
    pub cursor: Option<String>,
    /// Networks, with when each expires (ms since the epoch).
    pub entries: Vec<(IpNet, Option<u64>)>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Written by a newer voipwall: refused, never discarded.
    #[error(
        "the store was written by a newer voipwall (schema {found}, this one reads up to {supported}); it is left untouched: run the newer voipwall, or move the file aside yourself"
    )]
    NewerSchema {
        /// The file's schema.
        found: i64,
        /// This build's.
        supported: i64,
    },
    /// Another process held the database locked for longer than the wait.
    #[error("the store is locked by {} (waited {waited_ms} ms); it is left untouched", holder.as_deref().unwrap_or("another process"))]
    Locked {
        /// How long was waited.
        waited_ms: u64,
        /// Who holds the lock (`pid 123 (python3)`), when /proc/locks says.
        holder: Option<String>,
    },
    /// The file could not be moved aside or created.
    #[error("store file {path}: {source}")]
    Io {
        /// The database path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// How [`Store::open`] found the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Opened {
    /// No database existed; a new one was created.
    Created,
    /// An existing database was opened.
    Existing,
    /// The database could not be used; it was moved aside and a new one created.
    Recovered {
        /// Where the old file went.
        moved_to: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// A ban as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct BanRecord {
    /// Row id (None before it is stored).
    pub id: Option<i64>,
    /// Address or prefix.
    #[schemars(with = "String")]
    pub target: IpNet,
    /// The address whose event crossed the threshold, when a rule banned.
    pub offender: Option<IpAddr>,
    /// Rule id, or `manual`, `kernel-flood`, ...
    pub rule: String,
    /// For humans.
    pub reason: String,
    /// Who made it: `detect`, `manual`, `kernel`, `fleet:<node>`.
    pub origin: String,
    /// Recidive level.
    pub level: u32,
    /// Start.
    pub start: Timestamp,
    /// End.
    pub end: Timestamp,
    /// The events behind it.
    pub evidence: Vec<Evidence>,
    /// When an operator lifted it early.
    pub lifted: Option<Timestamp>,
    /// Who lifted it (`cli (uid 0)`, `api:<token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted_by: Option<String>,
}

impl BanRecord {
    /// The end of a ban without one (`--for permanent`, `block`).
    pub const PERMANENT: Timestamp = Timestamp(0x7fff_ffff_ffff_ffff);

    /// Whether the ban has no end.
    pub fn is_permanent(&self) -> bool {
        self.end >= Self::PERMANENT
    }

    /// What kind of origin made it: `fleet:NODE` → `fleet`,
    /// `detect-unverified` → `detect` (metrics labels, the decision
    /// stream's origin filter).
    pub fn origin_kind(&self) -> &str {
        let kind = self.origin.split(':').next().unwrap_or(&self.origin);
        kind.strip_suffix("-unverified").unwrap_or(kind)
    }

    /// The record of a detection engine ban.
    pub fn from_ban(b: &Ban, origin: &str) -> Self {
        Self {
            id: None,
            target: b.target,
            offender: Some(b.offender),
            rule: b.rule.clone(),
            reason: b.reason.clone(),
            // An unverified ban is remembered as such: restored, it must not
            // count as a previous offence for recidive.
            origin: if b.verified {
                origin.to_string()
            } else {
                format!("{origin}-unverified")
            },
            level: b.level,
            start: b.at,
            end: b.until,
            evidence: b.evidence.clone(),
            lifted: None,
            lifted_by: None,
        }
    }

    /// An operator's ban.
    pub fn manual(target: IpNet, reason: &str, at: Timestamp, ttl_ms: u64) -> Self {
        Self {
            id: None,
            target,
            offender: None,
            rule: "manual".into(),
            reason: reason.to_string(),
            origin: "manual".into(),
            level: 0,
            start: at,
            end: at.plus(ttl_ms),
            evidence: Vec::new(),
            lifted: None,
            lifted_by: None,
        }
    }

    /// The engine's view, for restoring its memory of bans after a restart.
    pub fn to_ban(&self) -> Ban {
        Ban {
            target: self.target,
            offender: self.offender.unwrap_or_else(|| self.target.addr()),
            rule: self.rule.clone(),
            at: self.start,
            until: self.end,
            ttl: self.end.since(self.start),
            level: self.level,
            reason: self.reason.clone(),
            // The reason names it; the store keeps no column of its own.
            account: None,
            evidence: self.evidence.clone(),
            verified: !self.origin.ends_with("-unverified"),
        }
    }
}

/// An event kept for `events` and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    /// When.
    pub at: Timestamp,
    /// `ban`, `alert`, `promote`, `unban`, `apply`, ...
    pub kind: String,
    /// Address concerned, if any.
    pub addr: Option<String>,
    /// One line for humans.
    pub detail: String,
}

/// Which bans to list.
#[derive(Debug, Clone, Default)]
pub struct BanFilter {
    /// Only bans active at this time.
    pub active_at: Option<Timestamp>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only targets containing this address or inside this network.
    pub net: Option<IpNet>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

/// A generation to record.
#[derive(Debug, Clone, Copy)]
pub struct NewGeneration<'a> {
    /// When it is applied.
    pub at: Timestamp,
    /// The nft script.
    pub script: &'a str,
    /// Where the policy came from, for humans.
    pub policy: &'a str,
    /// See [`Generation::status`].
    pub status: &'a str,
    /// For `pending`: when it rolls back.
    pub deadline: Option<Timestamp>,
    /// The compiled ruleset as JSON.
    pub ir: Option<&'a str>,
    /// What it was compiled from, as JSON (policy texts, catalog
    /// overrides, host facts, resolved names, the compiler's version).
    pub inputs: Option<&'a str>,
}

/// One applied ruleset: what `apply` ran, so `rollback` and commit-confirmed
/// can put it back exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generation {
    /// Number, increasing.
    pub id: i64,
    /// When it was applied.
    pub at: Timestamp,
    /// The nft script (policy plane; dynamic sets untouched).
    pub script: String,
    /// Where the policy came from, for humans.
    pub policy: String,
    /// `pending` (awaiting confirm), `applied`, `confirmed`, `rolled-back`,
    /// `snapshot` (the ruleset found before voipwall's first generation).
    pub status: String,
    /// For `pending`: when it rolls back.
    pub deadline: Option<Timestamp>,
    /// The compiled ruleset as JSON, when the generation came from a
    /// policy (not for the `snapshot` of what was there before).
    pub ir: Option<String>,
    /// What it was compiled from, as JSON, when the voipwall that applied
    /// it kept them: after an upgrade the daemon compiles these again, never
    /// the file on disk.
    #[serde(skip)]
    pub inputs: Option<String>,
}

/// An API token as stored (its hash is not shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    /// Its name (the audit log's actor is `api:<name>`).
    pub name: String,
    /// `admin`, `read` or `bouncer`.
    pub role: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it was revoked.
    pub revoked: Option<Timestamp>,
}

/// Row counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Ban rows.
    pub bans: u64,
    /// Event rows.
    pub events: u64,
    /// Audit rows.
    pub audit: u64,
}

/// How long opening waits for a store another process holds.
const LOCK_WAIT_MS: u64 = 30_000;

/// Who holds a POSIX lock on the database or its WAL index, from
/// /proc/locks (`pid 123 (python3)`); `None` when it cannot tell.
fn lock_holder(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/locks names a file `MAJOR:MINOR:INODE` (device numbers in hex).
    let files: Vec<String> = ["", "-shm", "-wal"]
        .iter()
        .filter_map(|ext| std::fs::metadata(format!("{}{ext}", path.display())).ok())
        .map(|m| {
            let dev = m.dev();
            let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
            let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
            format!("{major:02x}:{minor:02x}:{}", m.ino())
        })
        .collect();
    let me = std::process::id();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        // `1: POSIX  ADVISORY  WRITE 4242 08:01:1234567 0 EOF`; waiters
        // (`1: -> POSIX ...`) are not holders.
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) == Some(&"->") {
            return None;
        }
        let pid: u32 = f.get(4)?.parse().ok()?;
        let file = f.get(5)?;
        (pid != me && files.iter().any(|x| x == file)).then(|| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("pid {pid} ({})", comm.trim())
        })
    })
}

fn generation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Generation> {
    let ts = |v: i64| Timestamp(u64::try_from(v).unwrap_or(0));
    Ok(Generation {
        id: r.get(0)?,
        at: ts(r.get(1)?),
        script: r.get(2)?,
        policy: r.get(3)?,
        status: r.get(4)?,
        deadline: r.get::<_, Option<i64>>(5)?.map(ts),
        ir: r.get(6)?,
        inputs: r.get(7)?,
    })
}

/// The store.
pub struct Store {
    conn: Connection,
}

/// Bans in force above which a limited listing walks the start index
/// (below, they are read through the end index and sorted here).
const WALK_FROM: usize = 5_000;

impl Store {
    /// Opens (or creates) the database at `path`. A database that cannot be
    /// used is moved to `<path>.corrupt-<n>` and a fresh one is created.
    pub fn open(path: &Path) -> Result<(Self, Opened), StoreError> {
        Self::open_waiting(path, std::time::Duration::from_millis(LOCK_WAIT_MS))
    }

    /// A second connection to a store another part of the process opened
    /// (the fleet thread, the HTTP API): never creates one, never moves a
    /// file aside. A store that cannot be read is an error here; deciding
    /// that a file is corrupt is the daemon's first open's job alone, or a
    /// passing error (no file descriptors left, a full disk) on a second
    /// connection would move the live database away under the daemon.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Self::try_open(path, std::time::Duration::from_millis(LOCK_WAIT_MS))
    }

    /// [`Store::open`], waiting at most `wait` for a lock another process
    /// holds.
    pub fn open_waiting(
        path: &Path,
        wait: std::time::Duration,
    ) -> Result<(Self, Opened), StoreError> {
        let existed = path.exists();
        match Self::try_open(path, wait) {
            Ok(s) => Ok((
                s,
                if existed {
                    Opened::Existing
                } else {
                    Opened::Created
                },
            )),
            Err(e @ (StoreError::NewerSchema { .. } | StoreError::Locked { .. })) => Err(e),
            Err(e) if existed => {
                let reason = e.to_string();
                let mut n = 0;
                let moved_to = loop {
                    let p = PathBuf::from(format!("{}.corrupt-{n}", path.display()));
                    if !p.exists() {
                        break p;
                    }
                    n += 1;
                };
                std::fs::rename(path, &moved_to).map_err(|source| StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                for ext in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{ext}", path.display()));
                    if side.exists() {
                        let _ = std::fs::rename(&side, format!("{}{ext}", moved_to.display()));
                    }
                }
                let s = Self::try_open(path, wait)?;
                Ok((s, Opened::Recovered { moved_to, reason }))
            }
            Err(e) => Err(e),
        }
    }

    /// A database in memory (tests, `--sandbox` without a state directory).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        Self::init(conn)
    }

    fn try_open(path: &Path, wait: std::time::Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        // A store another process holds (a CLI mid-write, a backup) is
        // waited for, never taken for corrupt: up to LOCK_WAIT_MS for the
        // whole of opening, and what was really waited is what is said.
        let started = std::time::Instant::now();
        conn.busy_timeout(wait)?;
        let busy = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Locked {
                    waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    holder: lock_holder(path),
                }
            }
            _ => StoreError::Sql(e),
        };
        // Each step waits only what is left of `wait` (SQLite's busy
        // timeout counts per statement).
        let left = || wait.saturating_sub(started.elapsed());
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(busy)?;
        conn.busy_timeout(left())?;
        if check != "ok" {
            return Err(StoreError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("quick_check: {check}")),
            )));
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(busy)?;
        conn.busy_timeout(left())?;
        if version > SCHEMA {
            return Err(StoreError::NewerSchema {
                found: version,
                supported: SCHEMA,
            });
        }
        // Only root reads bans, evidence and the audit log (set once the
        // file is known to be ours to change: a newer schema's file is left
        // exactly as it was).
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let store = Self::init(conn).map_err(|e| match e {
            StoreError::Sql(se) => busy(se),
            o => o,
        })?;
        // Once open, a write waits at most 5 s for a lock.
        store
            .conn
            .busy_timeout(std::time::Duration::from_millis(5000))?;
        Ok(store)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        // WAL: readers (the CLI, the API) never block the daemon's writes.
        // synchronous=NORMAL: a committed transaction survives the daemon
        // being killed; only a power cut may lose the last ones, and the
        // kernel holds the bans meanwhile.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bans (
                id INTEGER PRIMARY KEY,
                target TEXT NOT NULL,
                offender TEXT,
                rule TEXT NOT NULL,
                reason TEXT NOT NULL,
                origin TEXT NOT NULL,
                level INTEGER NOT NULL,
                start_ms INTEGER NOT NULL,
                end_ms INTEGER NOT NULL,
                evidence TEXT NOT NULL,
                lifted_ms INTEGER,
                UNIQUE (target, start_ms)
             );
             CREATE INDEX IF NOT EXISTS bans_end ON bans (end_ms);
             CREATE INDEX IF NOT EXISTS bans_target ON bans (target);
             CREATE INDEX IF NOT EXISTS bans_start ON bans (start_ms);
             CREATE TABLE IF NOT EXISTS events (
                id INTEGER PRIMARY KEY,
                at_ms INTEGER NOT NULL,
                kind TEXT NOT NULL,
                addr TEXT,
                detail TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
             CREATE TABLE IF NOT EXISTS generations (
                id INTEGER PRIMARY KEY,
                at_ms INTEGER NOT NULL,
                script TEXT NOT NULL,
                policy TEXT NOT NULL,
                status TEXT NOT NULL,
                deadline_ms INTEGER,
                ir TEXT
             );
             CREATE TABLE IF NOT EXISTS generation_took (
                id INTEGER PRIMARY KEY,
                took_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS endpoints (
                addr TEXT PRIMARY KEY,
                last_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS tokens (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                hash TEXT NOT NULL UNIQUE,
                created_ms INTEGER NOT NULL,
                revoked_ms INTEGER
             );
             CREATE TABLE IF NOT EXISTS names (
                host TEXT PRIMARY KEY,
                addrs TEXT NOT NULL,
                at_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS kv (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY,
                kind TEXT NOT NULL,
                at_ms INTEGER NOT NULL,
                body TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
             CREATE TABLE IF NOT EXISTS feeds (
                name TEXT PRIMARY KEY,
                fetched_ms INTEGER NOT NULL,
                cursor TEXT,
                entries TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS audit (
                id INTEGER PRIMARY KEY,
                at_ms INTEGER NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                detail TEXT NOT NULL
             );",
        )?;
        // Schema 1 → 2: generations keep the compiled ruleset (JSON) so that
        // `explain` can answer from what is in force, not from the file.
        let has_ir: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('generations') WHERE name = 'ir'")?
            .exists([])?;
        if !has_ir {
            conn.execute_batch("ALTER TABLE generations ADD COLUMN ir TEXT")?;
        }
        // How long each apply took (read, validate, compile, load), for
        // the metrics.
        let has_took: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('generations') WHERE name = 'took_ms'")?
            .exists([])?;
        if !has_took {
            conn.execute_batch("ALTER TABLE generations ADD COLUMN took_ms INTEGER")?;
        }
        // What each generation was compiled from, so that a new version
        // can compile the same inputs again after an upgrade.
        let has_inputs: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('generations') WHERE name = 'inputs'")?
            .exists([])?;
        if !has_inputs {
            conn.execute_batch("ALTER TABLE generations ADD COLUMN inputs TEXT")?;
        }
        // Who lifted a ban (`bans --all` says so).
        let has_by: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('bans') WHERE name = 'lifted_by'")?
            .exists([])?;
        if !has_by {
            conn.execute_batch("ALTER TABLE bans ADD COLUMN lifted_by TEXT")?;
        }
        conn.pragma_update(None, "user_version", SCHEMA)?;
        Ok(Self { conn })
    }

    /// Remembers endpoints that registered successfully, at `at` (schema 3:
    /// prefix bans spare them for `[detect] remember_endpoints` after).
    pub fn remember_endpoints(
        &mut self,
        addrs: &[IpAddr],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO endpoints (addr, last_ms) VALUES (?1, ?2)
                 ON CONFLICT (addr) DO UPDATE SET last_ms = MAX(last_ms, excluded.last_ms)",
            )?;
            for a in addrs {
                st.execute(rusqlite::params![a.to_string(), ms(at)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the last good answer for each name (a non-empty address
    /// list from a real lookup): used at start and apply while the resolver
    /// cannot be reached, so an outage never empties a name's sets.
    pub fn record_name_answers(
        &mut self,
        answers: &[(String, Vec<IpAddr>)],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO names (host, addrs, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (host) DO UPDATE SET addrs = excluded.addrs, at_ms = excluded.at_ms",
            )?;
            for (host, addrs) in answers.iter().filter(|(_, a)| !a.is_empty()) {
                let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
                st.execute(rusqlite::params![host, list.join(" "), ms(at)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores an API token's hash (never the token) under `name`. A name
    /// in use (even revoked) is refused: names are what the audit log
    /// shows.
    pub fn add_token(
        &mut self,
        name: &str,
        role: &str,
        hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO tokens (name, role, hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name, role, hash, ms(at)],
        )? == 1)
    }

    /// Every token: name, role, created, revoked.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT name, role, created_ms, revoked_ms FROM tokens ORDER BY name")?;
        let rows = st.query_map([], |r| {
            let ts = |v: i64| Timestamp(u64::try_from(v).unwrap_or(0));
            Ok(TokenRow {
                name: r.get(0)?,
                role: r.get(1)?,
                created: ts(r.get(2)?),
                revoked: r.get::<_, Option<i64>>(3)?.map(ts),
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Into::into)
    }

    /// Revokes the token `name`; returns whether one was in force.
    pub fn revoke_token(&mut self, name: &str, at: Timestamp) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE tokens SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
            params![name, ms(at)],
        )? == 1)
    }

    /// The token in force with this hash: `(name, role)`.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, role FROM tokens WHERE hash = ?1 AND revoked_ms IS NULL",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Remembers a small value (the fleet's last stream ids, its central
    /// allow list).
    pub fn set_kv(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// A value [`Store::set_kv`] remembered.
    pub fn kv(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Queues a message of `kind` for a peer that may be down (CrowdSec
    /// alerts while LAPI is away), keeping at most `cap` of that kind: the
    /// oldest go first. Returns how many were dropped to make room.
    pub fn outbox_push(
        &mut self,
        kind: &str,
        body: &str,
        at: Timestamp,
        cap: usize,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO outbox (kind, at_ms, body) VALUES (?1, ?2, ?3)",
            params![kind, ms(at), body],
        )?;
        let dropped = tx.execute(
            "DELETE FROM outbox WHERE kind = ?1 AND id NOT IN
               (SELECT id FROM outbox WHERE kind = ?1 ORDER BY id DESC LIMIT ?2)",
            params![kind, i64::try_from(cap).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(dropped)
    }

    /// The oldest `limit` queued messages of `kind`: (id, body).
    pub fn outbox_peek(&self, kind: &str, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, body FROM outbox WHERE kind = ?1 ORDER BY id LIMIT ?2")?;
        let rows = st.query_map(
            params![kind, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Into::into)
    }

    /// Forgets delivered messages.
    pub fn outbox_done(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in ids {
                st.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Messages of `kind` waiting.
    pub fn outbox_len(&self, kind: &str) -> Result<usize, StoreError> {
        let n: i64 =
            self.conn
                .query_row("SELECT COUNT(*) FROM outbox WHERE kind = ?1", [kind], |r| {
                    r.get(0)
                })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Records a feed's last good content (replacing the one before):
    /// the networks with when each expires (`None`: until the feed drops
    /// it), and where an incremental feed goes on from.
    pub fn save_feed(&mut self, feed: &FeedRecord) -> Result<(), StoreError> {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(feed.entries.len() * 24);
        for (net, exp) in &feed.entries {
            let _ = match exp {
                Some(t) => writeln!(text, "{net} {t}"),
                None => writeln!(text, "{net}"),
            };
        }
        self.conn.execute(
            "INSERT INTO feeds (name, fetched_ms, cursor, entries) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET fetched_ms = excluded.fetched_ms,
                cursor = excluded.cursor, entries = excluded.entries",
            params![feed.name, ms(feed.fetched), feed.cursor, text],
        )?;
        Ok(())
    }

    /// A feed's last good content; lines that do not parse are skipped.
    pub fn feed(&self, name: &str) -> Result<Option<FeedRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT fetched_ms, cursor, entries FROM feeds WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.map(|(at, cursor, text)| FeedRecord {
            name: name.to_string(),
            fetched: Timestamp(u64::try_from(at).unwrap_or(0)),
            cursor,
            entries: text
                .lines()
                .filter_map(|l| {
                    let mut it = l.split(' ');
                    let net = it.next()?.parse().ok()?;
                    let exp = match it.next() {
                        Some(t) => Some(t.parse().ok()?),
                        None => None,
                    };
                    Some((net, exp))
                })
                .collect(),
        }))
    }

    /// Forgets the content of feeds not in `names` (a feed taken out of
    /// the policy).
    pub fn keep_feeds(&mut self, names: &[String]) -> Result<usize, StoreError> {
        let all: Vec<String> = {
            let mut st = self.conn.prepare("SELECT name FROM feeds")?;
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?
        };
        let mut n = 0;
        for f in all.iter().filter(|f| !names.contains(f)) {
            n += self
                .conn
                .execute("DELETE FROM feeds WHERE name = ?1", [f])?;
        }
        Ok(n)
    }

    /// Forgets the answers of names not in `hosts` (a name the policy no
    /// longer has must not come back with an old address).
    pub fn keep_names(&mut self, hosts: &[String]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut rows = tx.prepare("SELECT host FROM names")?;
            let all: Vec<String> = rows
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            drop(rows);
            let mut del = tx.prepare_cached("DELETE FROM names WHERE host = ?1")?;
            for h in all.iter().filter(|h| !hosts.contains(h)) {
                del.execute([h])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The last good answer of every name recorded, with when it came;
    /// addresses that do not parse are skipped.
    pub fn name_answers(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (Vec<IpAddr>, Timestamp)>, StoreError> {
        let mut st = self.conn.prepare("SELECT host, addrs, at_ms FROM names")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = std::collections::BTreeMap::new();
        for row in rows {
            let (host, addrs, at) = row?;
            let addrs: Vec<IpAddr> = addrs.split(' ').filter_map(|a| a.parse().ok()).collect();
            if !addrs.is_empty() {
                out.insert(host, (addrs, Timestamp(u64::try_from(at).unwrap_or(0))));
            }
        }
        Ok(out)
    }

    /// Endpoints that registered at or after `since`, with when they last
    /// did; rows that do not parse are skipped. Rows older than `since`
    /// are deleted.
    pub fn remembered_endpoints(
        &mut self,
        since: Timestamp,
    ) -> Result<Vec<(IpAddr, Timestamp)>, StoreError> {
        self.conn
            .execute("DELETE FROM endpoints WHERE last_ms < ?1", [ms(since)])?;
        let mut st = self
            .conn
            .prepare("SELECT addr, last_ms FROM endpoints ORDER BY addr")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (a, t) = row?;
            if let (Ok(a), Ok(t)) = (a.parse(), u64::try_from(t)) {
                out.push((a, Timestamp(t)));
            }
        }
        Ok(out)
    }

    /// Stores bans in one transaction; a ban already stored (same target
    /// and start) is not duplicated. Returns how many rows were added.
    pub fn record_bans(&mut self, bans: &[BanRecord]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO bans (target, offender, rule, reason, origin, level, start_ms, end_ms, evidence)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for b in bans {
                added += st.execute(params![
                    b.target.to_string(),
                    b.offender.map(|o| o.to_string()),
                    b.rule,
                    b.reason,
                    b.origin,
                    b.level,
                    ms(b.start),
                    ms(b.end),
                    serde_json::to_string(&b.evidence).unwrap_or_else(|_| "[]".into()),
                ])?;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// Bans in force at `now` (not ended, not lifted), one per target (the
    /// one that ends last).
    pub fn active_bans(&self, now: Timestamp) -> Result<Vec<BanRecord>, StoreError> {
        self.bans(&BanFilter {
            active_at: Some(now),
            ..BanFilter::default()
        })
    }

    /// Bans started since `since`, counted per `bucket_ms` and rule:
    /// (bucket start, rule, count), oldest first (the dashboard's chart).
    pub fn ban_counts(
        &self,
        since: Timestamp,
        bucket_ms: u64,
    ) -> Result<Vec<(Timestamp, String, u64)>, StoreError> {
        let bucket = i64::try_from(bucket_ms.max(1)).unwrap_or(i64::MAX);
        let mut st = self.conn.prepare_cached(
            "SELECT start_ms / ?2, rule, COUNT(*) FROM bans WHERE start_ms >= ?1
             GROUP BY start_ms / ?2, rule ORDER BY 1, 2",
        )?;
        let rows = st.query_map(params![ms(since), bucket], |r| {
            Ok((
                Timestamp(u64::try_from(r.get::<_, i64>(0)?.saturating_mul(bucket)).unwrap_or(0)),
                r.get::<_, String>(1)?,
                u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            ))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Bans matching `f`, newest first. With `active_at`, one per target:
    /// the one that ends last (an escalated ban may have started earlier).
    pub fn bans(&self, f: &BanFilter) -> Result<Vec<BanRecord>, StoreError> {
        // The newest few bans in force, the common question (a page of
        // the dashboard, `GET /api/v1/bans`, a bouncer's decisions): SQLite
        // walks the start index newest first and stops at the limit,
        // instead of every ban in force being read and sorted here (0.4 s
        // with 100,000 of them).
        // The walk pays off when many bans are in force; when few are
        // (a long history, a quiet day), reading just those through the
        // end index is cheaper than walking every stored row by start.
        if let (Some(now), None, Some(limit)) = (f.active_at, &f.net, f.limit)
            && self.rows_in_force(now)? > WALK_FROM.max(limit)
        {
            return self.newest_active(now, f.rule.as_deref(), limit);
        }
        self.bans_scanned(f)
    }

    /// One page of the bans in force at `now`, one per target (the one
    /// that ends last, the lowest id among equal ends, as
    /// [`Store::active_bans`]), in target order after the target text
    /// `after` (`""`: from the first), at most about `limit` targets.
    /// Returns the page and the cursor for the next one (`None`: this was
    /// the last). Restoring a million bans reads them page by page instead
    /// of holding every record at once. A row whose target is not text
    /// cannot be a ban ([`Store::unreadable_bans`] counts it) and is left
    /// out; the walk goes through every stored row's target once, expired
    /// history included.
    pub fn active_bans_page(
        &self,
        now: Timestamp,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<BanRecord>, Option<String>), StoreError> {
        let limit = limit.max(1);
        let mut st = self.conn.prepare_cached(
            "SELECT id, target, offender, rule, reason, origin, level, start_ms, end_ms, evidence, lifted_ms, lifted_by
             FROM bans INDEXED BY bans_target
             WHERE target > ?2 AND end_ms > ?1 AND lifted_ms IS NULL AND typeof(target) = 'text'
             ORDER BY target, end_ms DESC, id LIMIT ?3",
        )?;
        let rows = st.query_map(
            params![ms(now), after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| Ok((r.get::<_, String>(1)?, row_to_ban(r))),
        )?;
        let mut page: Vec<(String, Option<BanRecord>)> = Vec::new();
        for row in rows {
            let (target, ban) = row?;
            let ban = match ban {
                Ok(b) => Some(b),
                Err(e) if unreadable_row(&e) => None,
                Err(e) => return Err(e.into()),
            };
            page.push((target, ban));
        }
        let full = page.len() == limit;
        // A full page may end inside a target's rows: those wait for the
        // next page, unless the page holds nothing else.
        if full
            && let Some(last) = page.last().map(|(t, _)| t.clone())
            && page.iter().any(|(t, _)| *t != last)
        {
            page.retain(|(t, _)| *t != last);
        }
        let cursor = if full {
            page.last().map(|(t, _)| t.clone())
        } else {
            None
        };
        let mut out = Vec::with_capacity(page.len());
        let mut prev: Option<String> = None;
        for (target, ban) in page {
            if prev.as_deref() == Some(target.as_str()) {
                continue;
            }
            if let Some(b) = ban {
                prev = Some(target);
                out.push(b);
            }
        }
        Ok((out, cursor))
    }

    /// Rows of bans in force at `now` (the end index's range: cheap).
    fn rows_in_force(&self, now: Timestamp) -> Result<usize, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM bans WHERE end_ms > ?1 AND lifted_ms IS NULL",
            [ms(now)],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// [`Store::bans`] for the bans in force without a network, newest
    /// first, at most `limit`: the same rows as reading them all (one per
    /// target: the one that ends last, the lowest id among equal ends).
    fn newest_active(
        &self,
        now: Timestamp,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BanRecord>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, target, offender, rule, reason, origin, level, start_ms, end_ms, evidence, lifted_ms, lifted_by
             FROM bans b INDEXED BY bans_start
             WHERE end_ms > ?1 AND lifted_ms IS NULL AND (?2 IS NULL OR rule = ?2)
               AND NOT EXISTS (SELECT 1 FROM bans c INDEXED BY bans_target
                               WHERE c.target = b.target AND c.lifted_ms IS NULL AND c.end_ms > ?1
                                 AND (c.end_ms > b.end_ms OR (c.end_ms = b.end_ms AND c.id < b.id)))
             ORDER BY start_ms DESC, id DESC LIMIT ?3",
        )?;
        readable(st.query_map(
            params![ms(now), rule, i64::try_from(limit).unwrap_or(i64::MAX)],
            row_to_ban,
        )?)
    }

    /// [`Store::bans`] by reading every candidate row.
    fn bans_scanned(&self, f: &BanFilter) -> Result<Vec<BanRecord>, StoreError> {
        let mut rows: Vec<BanRecord> = match f.active_at {
            Some(now) => {
                let mut st = self.conn.prepare_cached(
                    "SELECT id, target, offender, rule, reason, origin, level, start_ms, end_ms, evidence, lifted_ms, lifted_by
                     FROM bans WHERE end_ms > ?1 AND lifted_ms IS NULL",
                )?;
                let all = readable(st.query_map([ms(now)], row_to_ban)?)?;
                let mut by_target: std::collections::BTreeMap<IpNet, BanRecord> =
                    std::collections::BTreeMap::new();
                for b in all {
                    match by_target.get(&b.target) {
                        Some(x) if x.end >= b.end => {}
                        _ => {
                            by_target.insert(b.target, b);
                        }
                    }
                }
                by_target.into_values().collect()
            }
            None => {
                let mut st = self.conn.prepare_cached(
                    "SELECT id, target, offender, rule, reason, origin, level, start_ms, end_ms, evidence, lifted_ms, lifted_by FROM bans",
                )?;
                readable(st.query_map([], row_to_ban)?)?
            }
        };
        rows.retain(|b| {
            f.rule.as_ref().is_none_or(|r| *r == b.rule)
                && f.net
                    .as_ref()
                    .is_none_or(|n| n.contains(&b.target.addr()) || b.target.contains(&n.addr()))
        });
        rows.sort_by(|a, b| b.start.cmp(&a.start).then(b.id.cmp(&a.id)));
        if let Some(l) = f.limit {
            rows.truncate(l);
        }
        Ok(rows)
    }

    /// How many targets have a ban in force at `now`: counted by SQLite,
    /// without reading the rows (`status` asks on the daemon's engine
    /// thread).
    pub fn active_count(&self, now: Timestamp) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(DISTINCT target) FROM bans WHERE end_ms > ?1 AND lifted_ms IS NULL",
            [ms(now)],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// How many ban rows cannot be read (and are skipped by every listing).
    pub fn unreadable_bans(&self) -> Result<usize, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, target, offender, rule, reason, origin, level, start_ms, end_ms, evidence, lifted_ms, lifted_by FROM bans",
        )?;
        let mut bad = 0;
        for r in st.query_map([], row_to_ban)? {
            match r {
                Ok(_) => {}
                Err(e) if unreadable_row(&e) => bad += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(bad)
    }

    /// Marks the bans of `target` lifted at `now` by `by`. Returns how many.
    pub fn lift(&mut self, target: &IpNet, now: Timestamp, by: &str) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE bans SET lifted_ms = ?1, lifted_by = ?3 WHERE target = ?2 AND end_ms > ?1 AND lifted_ms IS NULL",
            params![ms(now), target.to_string(), by],
        )?)
    }

    /// Moves the end of the active ban of `target` that started at `start`
    /// to `end` (`extend`); returns how many rows changed.
    pub fn set_ban_end(
        &mut self,
        target: &IpNet,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE bans SET end_ms = ?3 WHERE target = ?1 AND start_ms = ?2 AND lifted_ms IS NULL",
            params![target.to_string(), ms(start), ms(end)],
        )?)
    }

    /// Appends events in one transaction.
    pub fn record_events(&mut self, evs: &[EventRecord]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO events (at_ms, kind, addr, detail) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for e in evs {
                st.execute(params![ms(e.at), e.kind, e.addr, e.detail])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The newest `limit` events, oldest first.
    pub fn events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT at_ms, kind, addr, detail FROM events ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(EventRecord {
                at: Timestamp(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
                kind: r.get(1)?,
                addr: r.get(2)?,
                detail: r.get(3)?,
            })
        })?;
        let mut v = rows.collect::<Result<Vec<_>, _>>()?;
        v.reverse();
        Ok(v)
    }

    /// Appends to the audit log.
    pub fn audit(
        &mut self,
        at: Timestamp,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO audit (at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            params![ms(at), actor, action, detail],
        )?;
        Ok(())
    }

    /// The newest `limit` audit entries, oldest first: (time, actor, action, detail).
    pub fn audit_log(
        &self,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String, String, String)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT at_ms, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok((
                Timestamp(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })?;
        let mut v = rows.collect::<Result<Vec<_>, _>>()?;
        v.reverse();
        Ok(v)
    }

    /// Retention: keeps the newest `keep_events` events, and bans that ended
    /// less than `keep_bans_ms` ago.
    pub fn prune(
        &mut self,
        now: Timestamp,
        keep_events: u64,
        keep_bans_ms: u64,
    ) -> Result<(), StoreError> {
        // Each kind has its own share, so a flood of one (alerts about a
        // forged source) cannot flush the others (the bans): alerts 40 %,
        // bans 40 %, everything else (operator verbs, reloads, restores)
        // 20 %.
        for (filter, share) in [
            ("kind = 'alert'", 40),
            ("kind IN ('ban', 'would-ban')", 40),
            ("kind NOT IN ('alert', 'ban', 'would-ban')", 20),
        ] {
            let keep = i64::try_from(keep_events.saturating_mul(share) / 100).unwrap_or(i64::MAX);
            self.conn.execute(
                &format!(
                    "DELETE FROM events WHERE {filter} AND id < (SELECT id FROM events WHERE {filter} ORDER BY id DESC LIMIT 1 OFFSET ?1)"
                ),
                [keep.max(1) - 1],
            )?;
        }
        self.conn.execute(
            "DELETE FROM bans WHERE end_ms < ?1",
            [ms(Timestamp(now.0.saturating_sub(keep_bans_ms)))],
        )?;
        // Remembered endpoints: the daemon forgets those past
        // `[detect] remember_endpoints` when it reads them; rows older than
        // a year go here whatever it is set to.
        self.conn.execute(
            "DELETE FROM endpoints WHERE last_ms < ?1",
            [ms(Timestamp(now.0.saturating_sub(366 * 86_400_000)))],
        )?;
        Ok(())
    }

    /// Row counts.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let n = |t: &str| -> Result<u64, StoreError> {
            let v: i64 = self
                .conn
                .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        Ok(Counts {
            bans: n("bans")?,
            events: n("events")?,
            audit: n("audit")?,
        })
    }

    /// Records a generation; keeps the newest `keep`.
    pub fn add_generation(&mut self, g: &NewGeneration<'_>, keep: u32) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO generations (at_ms, script, policy, status, deadline_ms, ir, inputs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![ms(g.at), g.script, g.policy, g.status, g.deadline.map(ms), g.ir, g.inputs],
        )?;
        let id = self.conn.last_insert_rowid();
        self.conn.execute(
            "DELETE FROM generations WHERE id <= ?1 - ?2",
            params![id, keep],
        )?;
        self.conn.execute(
            "DELETE FROM generation_took WHERE id <= ?1 - ?2",
            params![id, keep],
        )?;
        // The compiled ruleset is as big as the policy's lists (megabytes
        // for 100,000 entries): kept for the generations explain and a
        // rollback can reach, not for the whole history. The two newest
        // applied or confirmed keep theirs whatever failed after them: the
        // one in force (explain, an upgrade's recompile) and the one before.
        self.conn.execute(
            "UPDATE generations SET ir = NULL, inputs = NULL
             WHERE id <= ?1 - ?2 AND (ir IS NOT NULL OR inputs IS NOT NULL)
               AND id NOT IN (SELECT id FROM generations WHERE status IN ('applied', 'confirmed')
                              AND id <> ?1 ORDER BY id DESC LIMIT 2)",
            params![id, KEEP_IR],
        )?;
        Ok(id)
    }

    /// Changes a generation's status.
    pub fn set_generation_status(&mut self, id: i64, status: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE generations SET status = ?1 WHERE id = ?2",
            params![status, id],
        )?;
        Ok(())
    }

    /// Replaces generation `id`'s recorded inputs (a new version compiled
    /// them to the same script: it need not do so again at the next start).
    pub fn set_generation_inputs(&mut self, id: i64, inputs: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE generations SET inputs = ?2 WHERE id = ?1",
            params![id, inputs],
        )?;
        Ok(())
    }

    /// The newest generation after `id` that voipwall `version` compiled
    /// (its stored inputs say so) and that did not fail: after an upgrade,
    /// a sign that `id` was put back in force since (by `rollback`, a
    /// confirm timer or a start inside a confirm window).
    pub fn newer_generation_by(&self, id: i64, version: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM generations
                 WHERE id > ?1 AND status <> 'failed' AND inputs IS NOT NULL
                   AND json_valid(inputs) AND json_extract(inputs, '$.version') = ?2
                 ORDER BY id DESC LIMIT 1",
                params![id, version],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records how long generation `id`'s apply took.
    pub fn set_generation_took(&mut self, id: i64, took_ms: u64) -> Result<(), StoreError> {
        self.conn.execute(
            // In a table of its own: an UPDATE of the generation's row
            // rewrites all of it, megabytes of script and inputs for a big
            // policy, to change one number.
            "INSERT OR REPLACE INTO generation_took (id, took_ms) VALUES (?1, ?2)",
            params![id, i64::try_from(took_ms).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    /// The generation in force without its script: its number and how
    /// long its apply took (for metrics: cheap whatever the policy's size).
    pub fn in_force_summary(&self) -> Result<Option<(i64, Option<u64>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT g.id, COALESCE(t.took_ms, g.took_ms) FROM generations g
                 LEFT JOIN generation_took t ON t.id = g.id
                 WHERE g.status IN ('applied', 'confirmed', 'pending', 'snapshot')
                 ORDER BY g.id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?
                            .and_then(|t| u64::try_from(t).ok()),
                    ))
                },
            )
            .optional()?)
    }

    /// Generations, newest first, without their scripts and compiled
    /// rulesets (`script` empty, `ir` none): a listing stays cheap whatever
    /// the policy's size.
    pub fn generation_list(&self, limit: usize) -> Result<Vec<Generation>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, at_ms, '', policy, status, deadline_ms, NULL, NULL FROM generations ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], generation_row)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Into::into)
    }

    /// Generations, newest first.
    pub fn generations(&self, limit: usize) -> Result<Vec<Generation>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, at_ms, script, policy, status, deadline_ms, ir, inputs FROM generations ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], generation_row)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Into::into)
    }

    /// The generation in force: the newest applied, confirmed, pending (it
    /// runs until its timer rolls it back) or snapshot (what was there
    /// before voipwall's first generation, after a rollback to it) one.
    /// The one reader of "what runs now": restore, status, explain, apply
    /// and the re-key of bans all ask this.
    pub fn in_force(&self) -> Result<Option<Generation>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, at_ms, script, policy, status, deadline_ms, ir, inputs FROM generations
                 WHERE status IN ('applied', 'confirmed', 'pending', 'snapshot')
                 ORDER BY id DESC LIMIT 1",
                [],
                generation_row,
            )
            .optional()?)
    }

    /// The last ban recorded for `target`, if any.
    pub fn last_ban(&self, target: &IpNet) -> Result<Option<BanRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, target, offender, rule, reason, origin, level, start_ms, end_ms, evidence, lifted_ms, lifted_by
                 FROM bans WHERE target = ?1 ORDER BY start_ms DESC LIMIT 1",
                [target.to_string()],
                row_to_ban,
            )
            .optional()?)
    }
}

fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

/// The rows that read as bans. A row another tool (or a bug) wrote badly —
/// a target that is not a network, a number where text belongs — is
/// skipped, so that one bad row never costs the others; `unreadable_bans`
/// counts them. A failure to read the file itself is still an error.
fn readable(
    rows: impl Iterator<Item = rusqlite::Result<BanRecord>>,
) -> Result<Vec<BanRecord>, StoreError> {
    let mut out = Vec::new();
    for r in rows {
        match r {
            Ok(b) => out.push(b),
            Err(e) if unreadable_row(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// A row that does not read as a ban (as opposed to the file failing).
fn unreadable_row(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    )
}

fn row_to_ban(r: &rusqlite::Row<'_>) -> rusqlite::Result<BanRecord> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            what.to_string().into(),
        )
    };
    let target: String = r.get(1)?;
    let offender: Option<String> = r.get(2)?;
    let evidence: String = r.get(9)?;
    let lifted: Option<i64> = r.get(10)?;
    let lifted_by: Option<String> = r.get(11)?;
    let ts = |v: i64| Timestamp(u64::try_from(v).unwrap_or(0));
    Ok(BanRecord {
        id: Some(r.get(0)?),
        target: target
            .parse()
            .map_err(|_| bad(1, "target is not a network"))?,
        offender: offender.and_then(|o| o.parse().ok()),
        rule: r.get(3)?,
        reason: r.get(4)?,
        origin: r.get(5)?,
        level: r.get(6)?,
        start: ts(r.get(7)?),
        end: ts(r.get(8)?),
        evidence: serde_json::from_str(&evidence).unwrap_or_default(),
        lifted: lifted.map(ts),
        lifted_by,
    })
}
