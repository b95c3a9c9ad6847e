//! Following a log file: starts at the end (or the start with
//! `--from-start`), waits for a file that does not exist yet, and follows
//! rotation by rename (a new inode at the path: the old file is read to its
//! end first) and by copytruncate (the file shrinks: read from the start).
//! Polls every 100 ms; lines are parsed here, on the tailer's thread, and
//! sent to the engine thread in batches.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use voipwall_logfmt::Format;
use voipwall_logfmt::prefix::Context;

use super::{Input, Parsed, Waker};

/// Parses a batch of whole lines, each ending in `\n` (a CR before it is
/// dropped), into what the engine thread is sent: the events, and counts
/// of the lines that gave none.
fn batch(format: &Format, ctx: &Context, origin: &Arc<str>, text: &[u8]) -> Input {
    let mut counts = super::LineCounts::default();
    let mut events = Parsed::default();
    format.parse_lines(text, ctx, |r| {
        counts.lines += 1;
        match r {
            Ok(l) => events.push(&l),
            Err(voipwall_logfmt::LineError::Ambiguous) => counts.ambiguous += 1,
            Err(voipwall_logfmt::LineError::NoMatch) => {}
            Err(_) => counts.malformed += 1,
        }
    });
    Input::Log {
        origin: origin.clone(),
        events,
        counts,
        read_us: super::now_us(),
    }
}

/// What to follow.
/// How one log source is doing, for `status`: a source that delivers
/// nothing (a file that never appeared, a journal this host does not keep)
/// says so instead of staying silent.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct SourceHealth {
    /// `file /var/log/asterisk/full` or `journal kamailio.service`.
    pub source: String,
    /// The log format.
    pub format: String,
    /// Whether it is being read now.
    pub delivering: bool,
    /// What it is doing, or why it delivers nothing.
    pub state: String,
    /// Lines read since start.
    pub lines: u64,
    /// When the last line was read (ms since the epoch).
    pub last_line_ms: Option<u64>,
}

/// Every source's health, shared with the daemon's `status`.
pub type Health = Arc<std::sync::Mutex<Vec<SourceHealth>>>;

/// Registers a source; returns its slot.
pub fn register(health: &Health, source: String, format: &str) -> usize {
    let mut g = health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    g.push(SourceHealth {
        source,
        format: format.to_string(),
        delivering: false,
        state: "starting".into(),
        lines: 0,
        last_line_ms: None,
    });
    g.len() - 1
}

fn set_state(health: &Health, slot: usize, delivering: bool, state: &str) {
    let mut g = health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = g.get_mut(slot) {
        h.delivering = delivering;
        h.state = state.to_string();
    }
}

fn count_lines(health: &Health, slot: usize, input: &Input) {
    if let Input::Log { counts, .. } = input {
        let mut g = health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = g.get_mut(slot) {
            h.lines += counts.lines;
            h.last_line_ms = Some(super::now_us() / 1000);
        }
    }
}

pub struct TailSpec {
    pub path: PathBuf,
    pub format: Format,
    pub from_start: bool,
}

/// Follows `spec` until `stop` is set; sends parsed events to the engine.
pub fn follow(
    spec: TailSpec,
    tx: std::sync::mpsc::Sender<Input>,
    waker: Waker,
    stop: Arc<AtomicBool>,
    (health, slot): (Health, usize),
) {
    let origin: Arc<str> = Arc::from(format!("log:{}", spec.format.id));
    let ctx = Context {
        year: super::now_ms_civil_year(),
        utc_offset: local_utc_offset(),
    };
    let mut file: Option<(File, u64, u64)> = None; // (file, inode, offset)
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    // Start at the end only of a file that exists when the daemon starts: a
    // file that appears later is all new.
    let mut first_open = spec.path.exists();
    let mut missing_reported = false;
    while !stop.load(Ordering::Relaxed) {
        let meta = std::fs::metadata(&spec.path).ok();
        match (&mut file, &meta) {
            (None, None) if !missing_reported => {
                tracing::warn!(path = %spec.path.display(), "Log file does not exist yet; waiting for it (this source delivers nothing until it does).");
                set_state(
                    &health,
                    slot,
                    false,
                    "the file does not exist; waiting for it",
                );
                missing_reported = true;
            }
            (None, Some(m)) => {
                if let Ok(mut f) = File::open(&spec.path) {
                    let start = if first_open && !spec.from_start {
                        m.len()
                    } else {
                        0
                    };
                    let _ = f.seek(SeekFrom::Start(start));
                    tracing::info!(path = %spec.path.display(), format = %spec.format.id, offset = start, "Following log file.");
                    set_state(&health, slot, true, "following the file");
                    missing_reported = false;
                    file = Some((f, m.ino(), start));
                    first_open = false;
                }
            }
            (Some((_, ino, off)), Some(m)) if m.ino() == *ino && m.len() < *off => {
                // copytruncate: the same file, shorter than what we read.
                tracing::info!(path = %spec.path.display(), "Log file was truncated; reading from its start.");
                if let Some((f, _, off)) = file.as_mut() {
                    let _ = f.seek(SeekFrom::Start(0));
                    *off = 0;
                }
                carry.clear();
            }
            _ => {}
        }
        let mut sent = false;
        if let Some((f, ino, off)) = file.as_mut() {
            // Read to the current end.
            loop {
                let n: usize = f.read(&mut buf).unwrap_or_default();
                if n == 0 {
                    break;
                }
                *off += n as u64;
                carry.extend_from_slice(&buf[..n]);
                if let Some(last_nl) = memchr::memrchr(b'\n', &carry) {
                    let input = batch(&spec.format, &ctx, &origin, &carry[..=last_nl]);
                    count_lines(&health, slot, &input);
                    carry.drain(..=last_nl);
                    if tx.send(input).is_err() {
                        return;
                    }
                    sent = true;
                }
                // A line longer than 1 MiB without a newline is dropped.
                if carry.len() > 1 << 20 {
                    carry.clear();
                }
            }
            // Rotation by rename: a new file at the path; the old one was
            // read to its end above.
            if meta.as_ref().is_some_and(|m| m.ino() != *ino) || meta.is_none() {
                if meta.is_some() {
                    tracing::info!(path = %spec.path.display(), "Log file was rotated; following the new one.");
                }
                file = None;
                carry.clear();
            }
        }
        if sent {
            waker.wake();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The local time zone's offset from UTC in seconds, for log times written
/// in local time (from `date +%z`-style data: /etc/localtime via `TZ` is not
/// parsed here; the daemon's logs are usually UTC on servers).
fn local_utc_offset() -> i64 {
    std::env::var("VOIPWALL_LOG_UTC_OFFSET")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0)
}

/// Follows the systemd journal through `journalctl -f -o short-iso` (only
/// new entries; `unit` narrows it to one service), parsing each line with
/// `format`. Ends when journalctl does or `stop` is set. The lab machines
/// keep no journal: the suite exercises the "no journal" state, not lines.
/// The journalctl processes journal sources run, stopped with the daemon
/// (they would otherwise wait for the next journal line to notice).
static JOURNAL_CHILDREN: std::sync::Mutex<Vec<std::process::Child>> =
    std::sync::Mutex::new(Vec::new());

/// Stops every journalctl a journal source started.
pub fn stop_journals() {
    if let Ok(mut v) = JOURNAL_CHILDREN.lock() {
        for mut c in v.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn follow_journal(
    unit: Option<String>,
    format: Format,
    tx: std::sync::mpsc::Sender<Input>,
    waker: Waker,
    stop: Arc<AtomicBool>,
    (health, slot): (Health, usize),
) {
    use std::io::BufRead as _;
    let mut cmd = std::process::Command::new("journalctl");
    cmd.args(["-f", "-n", "0", "-q", "-o", "short-iso"]);
    if let Some(u) = &unit {
        cmd.args(["-u", u]);
    }
    let mut child = match cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Cannot run journalctl; the journal source is off.");
            set_state(&health, slot, false, &format!("cannot run journalctl: {e}"));
            return;
        }
    };
    let Some(out) = child.stdout.take() else {
        return;
    };
    if let Ok(mut v) = JOURNAL_CHILDREN.lock() {
        v.push(child);
    }
    let origin: Arc<str> = Arc::from(format!("journal:{}", format.id));
    let ctx = Context {
        year: super::now_ms_civil_year(),
        utc_offset: local_utc_offset(),
    };
    tracing::info!(unit = unit.as_deref().unwrap_or("(all)"), format = %format.id, "Following the journal.");
    // journalctl -f waits quietly where the host keeps no journal (a
    // container, a system without journald): say so, not nothing.
    let kept = ["/var/log/journal", "/run/log/journal"]
        .iter()
        .any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()));
    if kept {
        set_state(&health, slot, true, "following the journal");
    } else {
        tracing::warn!(
            unit = unit.as_deref().unwrap_or("(all)"),
            "This host keeps no journal (nothing in /var/log/journal or /run/log/journal): the journal source delivers nothing until journald writes one."
        );
        set_state(
            &health,
            slot,
            false,
            "this host keeps no journal (nothing in /var/log/journal or /run/log/journal)",
        );
    }
    let mut delivering = kept;
    for line in std::io::BufReader::new(out).split(b'\n') {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut line) = line else { break };
        line.push(b'\n');
        if !delivering {
            set_state(&health, slot, true, "following the journal");
            delivering = true;
        }
        let input = batch(&format, &ctx, &origin, &line);
        count_lines(&health, slot, &input);
        if tx.send(input).is_err() {
            return;
        }
        waker.wake();
    }
    if !stop.load(Ordering::Relaxed) {
        // journalctl ends at once where the host keeps no journal (a
        // container, a system without journald): say so, not nothing.
        tracing::warn!(
            unit = unit.as_deref().unwrap_or("(all)"),
            "journalctl ended: this host keeps no journal (or journald stopped); the journal source delivers nothing."
        );
        set_state(
            &health,
            slot,
            false,
            "journalctl ended: this host keeps no journal (or journald stopped)",
        );
    }
}
