//! The feeds' refresh loop: each `[[feed]]` fetched (HTTP(S) or a file) at
//! its interval, parsed and checked by `voipwall_policy::feed`, put into its
//! kernel sets by difference through `voipwall_core::feeds::FeedSets`, and
//! stored as the last good content. A fetch that fails or is refused
//! changes nothing in the kernel: the last good content stays, the status
//! says why, and the next try comes sooner (30 s, doubling, at most the
//! interval).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use voipwall_core::feeds::{FeedLink, FeedSets, FeedStatus};
use voipwall_nft::sets::feed_stem;
use voipwall_policy::feed::{self, ApibanPage, Entry, FeedFormat, Guard};
use voipwall_policy::{FeedSettings, FeedSource};
use voipwall_store::FeedRecord;

use crate::http::{self, Limits};

/// The largest body or file a feed may be (a million networks in CIDR
/// text is about 16 MB).
pub const MAX_BODY: u64 = 64 << 20;

/// How long APIBAN's entries are kept (the service's advice).
pub const APIBAN_KEEP_MS: u64 = 7 * 86_400_000;

/// The most APIBAN pages one refresh asks for.
const APIBAN_MAX_PAGES: usize = 1_000;
/// The largest APIBAN page (its pages list 250 addresses).
const APIBAN_MAX_PAGE: u64 = 4 << 20;
/// The most entries one feed holds (the kernel's set holds 4,194,304).
pub const MAX_ENTRIES: usize = 2_000_000;

/// The first retry after a failure (doubling up to the interval).
const RETRY_MS: u64 = 30_000;

struct Feed {
    settings: FeedSettings,
    /// What its sets hold (the last good content, guard applied).
    content: Vec<Entry>,
    cursor: Option<String>,
    status: FeedStatus,
    next_ms: u64,
    failures: u32,
}

/// The origins' kernel sets and store, shared by the feeds and the bouncer.
pub(crate) type Sets = Arc<Mutex<FeedSets>>;

/// Runs the feeds until `stop`.
pub(crate) async fn run(link: Arc<FeedLink>, sets: Sets, stop: Arc<AtomicBool>) {
    let mut version = 0;
    let mut resets = link.resets();
    let mut guard = Guard::default();
    let mut feeds: Vec<Feed> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if link.resets() != resets {
            // The table came back empty: every feed's content goes back.
            resets = link.resets();
            let now = voipwall_core::daemon::now_ms();
            for f in &mut feeds {
                let content = f.content.clone();
                put(f, content, &sets, now).await;
            }
            publish(&link, &feeds);
        }
        if link.version() != version {
            let (v, cfg) = link.get();
            version = v;
            let stems = cfg.stems();
            guard = cfg.guard;
            feeds = configure(std::mem::take(&mut feeds), cfg.feeds, stems, &sets, &guard).await;
            publish(&link, &feeds);
        }
        let now = voipwall_core::daemon::now_ms();
        for i in 0..feeds.len() {
            if feeds[i].next_ms <= now && !stop.load(Ordering::Relaxed) {
                refresh(&mut feeds[i], &sets, &guard).await;
                publish(&link, &feeds);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn publish(link: &FeedLink, feeds: &[Feed]) {
    *link.board.lock().unwrap_or_else(PoisonError::into_inner) =
        feeds.iter().map(|f| f.status.clone()).collect();
}

fn source(s: &FeedSettings) -> String {
    match &s.source {
        FeedSource::Url(u) => u.clone(),
        FeedSource::Path(p) => p.clone(),
    }
}

fn format_name(f: FeedFormat) -> &'static str {
    match f {
        FeedFormat::Apiban => "apiban",
        FeedFormat::Voipbl => "voipbl",
        FeedFormat::Plain => "plain",
    }
}

/// Runs blocking work (the kernel, the store) off the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    sets: &Sets,
    f: impl FnOnce(&mut FeedSets) -> T + Send + 'static,
) -> T {
    let sets = sets.clone();
    tokio::task::spawn_blocking(move || f(&mut sets.lock().unwrap_or_else(PoisonError::into_inner)))
        .await
        .expect("a feed's kernel work does not panic")
}

/// The feeds of a new configuration: unchanged ones keep running (their
/// content checked again against the guard, which may have changed); new
/// ones start from their last good content in the store, at once, before
/// any fetch; feeds taken out lose their sets and stored content.
async fn configure(
    mut old: Vec<Feed>,
    settings: Vec<FeedSettings>,
    stems: Vec<String>,
    sets: &Sets,
    guard: &Guard,
) -> Vec<Feed> {
    let gone = blocking(sets, move |s| s.forget_except(&stems)).await;
    if !gone.is_empty() {
        tracing::info!(sets = ?gone, "Feeds taken out of the policy: their sets are deleted.");
    }
    let now = voipwall_core::daemon::now_ms();
    let mut out = Vec::new();
    for st in settings {
        let kept = old
            .iter()
            .position(|f| {
                f.settings.name == st.name
                    && f.settings.source == st.source
                    && f.settings.format == st.format
            })
            .map(|i| old.swap_remove(i));
        let (content, cursor, fetched) = match kept {
            Some(f) => {
                let fetched = f.status.fetched_ms;
                (f.content, f.cursor, fetched)
            }
            None => {
                let stem = feed_stem(&st.name);
                match blocking(sets, move |s| s.last_good(&stem)).await {
                    Some(r) => (r.entries, r.cursor, Some(r.fetched.0)),
                    None => (Vec::new(), None, None),
                }
            }
        };
        let content: Vec<Entry> = content
            .into_iter()
            .filter(|(n, _)| guard.refuse(n).is_none())
            .collect();
        let mut f = Feed {
            status: FeedStatus {
                name: st.name.clone(),
                source: source(&st),
                format: format_name(st.format).into(),
                fetched_ms: fetched,
                ..FeedStatus::default()
            },
            next_ms: fetched.map_or(now, |t| (t + st.interval * 1000).max(now)),
            settings: st,
            content: Vec::new(),
            cursor,
            failures: 0,
        };
        if !put(&mut f, content.clone(), sets, now).await {
            // Not in the kernel (yet): kept as the feed's content, so an
            // incremental feed does not lose it, and tried again soon.
            f.content = content;
            f.next_ms = now + RETRY_MS.min(f.settings.interval * 1000);
        }
        out.push(f);
    }
    out
}

/// Puts `content` into the feed's sets; on success it is the feed's
/// content. Returns whether the kernel took it.
async fn put(f: &mut Feed, content: Vec<Entry>, sets: &Sets, now: u64) -> bool {
    let stem = feed_stem(&f.settings.name);
    // Collapsed once here (the heavy sort of a million entries); `put`
    // collapses again, a pass over entries already in order.
    let content = feed::collapse(
        content
            .into_iter()
            .filter(|e| e.1.is_none_or(|t| t > now + 1_000))
            .collect(),
    );
    let c = content.clone();
    let t = std::time::Instant::now();
    let r = blocking(sets, move |s| s.put(&stem, c, now)).await;
    f.status.kernel_ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
    match r {
        Ok((added, removed)) => {
            f.content = content;
            f.status.entries = f.content.len();
            f.status.added = added;
            f.status.removed = removed;
            true
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!(feed = %f.settings.name, error = %msg, "A feed's sets could not be changed.");
            f.status.error = Some(msg);
            false
        }
    }
}

/// What one fetch gave.
struct Fetched {
    entries: Vec<Entry>,
    cursor: Option<String>,
    refused: Vec<feed::Refused>,
    malformed: usize,
    /// APIBAN stopped early (rate limit): the rest comes next time.
    partial: bool,
}

async fn refresh(f: &mut Feed, sets: &Sets, guard: &Guard) {
    let started = voipwall_core::daemon::now_ms();
    let got = match f.settings.format {
        FeedFormat::Apiban => apiban(f, guard, started).await,
        FeedFormat::Voipbl | FeedFormat::Plain => list(&f.settings, guard).await,
    };
    let now = voipwall_core::daemon::now_ms();
    f.status.tried_ms = Some(now);
    let interval = f.settings.interval * 1000;
    match got {
        Ok(g) => {
            let content = match f.settings.format {
                // Incremental: what was there, and what is new.
                FeedFormat::Apiban => {
                    let mut c = f.content.clone();
                    c.extend(g.entries);
                    c
                }
                _ => g.entries,
            };
            if put(f, content, sets, now).await {
                f.cursor = g.cursor;
                f.status.error = g
                    .partial
                    .then(|| "APIBAN's rate limit: the rest comes with the next refresh".into());
                f.status.fetched_ms = Some(now);
                f.status.took_ms = voipwall_core::daemon::now_ms().saturating_sub(started);
                f.status.refused = g.refused.len();
                f.status.malformed = g.malformed;
                f.status.refusals = g
                    .refused
                    .iter()
                    .take(5)
                    .map(|r| format!("{}: {}", r.entry, r.reason))
                    .collect();
                f.failures = 0;
                f.next_ms = now + interval;
                let rec = FeedRecord {
                    name: feed_stem(&f.settings.name),
                    fetched: voipwall_detect::Timestamp(now),
                    cursor: f.cursor.clone(),
                    entries: f.content.clone(),
                };
                if let Err(e) = blocking(sets, move |s| s.save(&rec)).await {
                    tracing::warn!(feed = %f.settings.name, error = %format!("{e:#}"), "A feed's content could not be stored; it is in the kernel.");
                }
                // Said when something moved (a file feed may be read
                // every second).
                if f.status.added + f.status.removed > 0 {
                    tracing::info!(
                        feed = %f.settings.name,
                        entries = f.status.entries,
                        added = f.status.added,
                        removed = f.status.removed,
                        refused = f.status.refused,
                        malformed = f.status.malformed,
                        "Feed refreshed."
                    );
                } else {
                    tracing::debug!(feed = %f.settings.name, "Feed refreshed, unchanged.");
                }
            } else {
                f.failures += 1;
                f.next_ms = now + retry(f.failures, interval);
            }
        }
        Err(msg) => {
            f.failures += 1;
            let wait = retry(f.failures, interval);
            f.next_ms = now + wait;
            tracing::warn!(
                feed = %f.settings.name,
                error = %msg,
                retry_s = wait / 1000,
                entries = f.content.len(),
                "A feed could not be refreshed; its last good content stays."
            );
            f.status.error = Some(msg);
        }
    }
    f.status.next_ms = Some(f.next_ms);
}

fn retry(failures: u32, interval: u64) -> u64 {
    RETRY_MS
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(interval)
}

fn limits(s: &FeedSettings) -> Limits {
    Limits {
        max_body: MAX_BODY,
        connect: Duration::from_secs(s.timeout.min(10)),
        total: Duration::from_secs(s.timeout),
    }
}

/// A whole list (VoIPBL, plain), from its URL or file.
async fn list(s: &FeedSettings, guard: &Guard) -> Result<Fetched, String> {
    let body = match &s.source {
        FeedSource::Url(url) => {
            let r = http::fetch(
                &http::Request {
                    method: "GET",
                    url,
                    headers: Vec::new(),
                    body: None,
                },
                &limits(s),
            )
            .await
            .map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!("{url} answered HTTP {}", r.status));
            }
            r.body
        }
        FeedSource::Path(p) => read_file(Path::new(p)).await?,
    };
    let text = String::from_utf8(body).map_err(|_| "the list is not text (UTF-8)".to_string())?;
    let (format, guard) = (s.format, guard.clone());
    let parsed = tokio::task::spawn_blocking(move || feed::parse_list(format, &text, &guard))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(why) = parsed.refusal() {
        return Err(why);
    }
    if parsed.nets.len() > MAX_ENTRIES {
        return Err(format!(
            "the list has {} entries, more than a feed may hold ({MAX_ENTRIES}); nothing of it is applied",
            parsed.nets.len()
        ));
    }
    Ok(Fetched {
        entries: parsed.nets.iter().map(|n| (*n, None)).collect(),
        cursor: None,
        malformed: parsed.malformed.len(),
        refused: parsed.refused,
        partial: false,
    })
}

async fn read_file(p: &Path) -> Result<Vec<u8>, String> {
    let meta = tokio::fs::metadata(p)
        .await
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if meta.len() > MAX_BODY {
        return Err(format!(
            "{} is larger than {MAX_BODY} bytes: refused",
            p.display()
        ));
    }
    let mut body = tokio::fs::read(p)
        .await
        .map_err(|e| format!("{}: {e}", p.display()))?;
    // It may have grown since.
    body.truncate(usize::try_from(MAX_BODY).unwrap_or(usize::MAX));
    Ok(body)
}

/// APIBAN: the pages after the last id, until `none`.
async fn apiban(f: &Feed, guard: &Guard, now: u64) -> Result<Fetched, String> {
    let s = &f.settings;
    let FeedSource::Url(url) = &s.source else {
        return Err("an APIBAN feed needs a url".into());
    };
    let key_file = s.key_file.as_deref().unwrap_or_default();
    let key = tokio::fs::read_to_string(key_file)
        .await
        .map_err(|e| format!("the APIBAN key {key_file}: {e}"))?;
    let key = key.trim();
    if key.is_empty() || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "the APIBAN key in {key_file} is empty or not one word"
        ));
    }
    let mut cursor = f.cursor.clone().unwrap_or_else(|| "100".into());
    let mut out = Fetched {
        entries: Vec::new(),
        cursor: None,
        refused: Vec::new(),
        malformed: 0,
        partial: false,
    };
    for _ in 0..APIBAN_MAX_PAGES {
        let body = serde_json::json!({"set": "sip", "id": cursor}).to_string();
        let r = http::fetch(
            &http::Request {
                method: "POST",
                url,
                headers: vec![
                    ("authorization", format!("Bearer {key}")),
                    ("content-type", "application/json".into()),
                ],
                body: Some(body.into_bytes()),
            },
            &Limits {
                max_body: APIBAN_MAX_PAGE,
                ..limits(s)
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&r.body);
        match feed::parse_apiban(&text, guard)
            .map_err(|e| format!("{url} (HTTP {}): {e}", r.status))?
        {
            ApibanPage::Page { parsed, next } => {
                if let Some(why) = parsed.refusal() {
                    return Err(why);
                }
                out.entries
                    .extend(parsed.nets.iter().map(|n| (*n, Some(now + APIBAN_KEEP_MS))));
                out.malformed += parsed.malformed.len();
                out.refused.extend(parsed.refused.into_iter().take(1_000));
                cursor = next;
                if out.entries.len() + f.content.len() > MAX_ENTRIES {
                    // The rest waits: the feed is over what it may hold.
                    out.partial = true;
                    out.cursor = Some(cursor);
                    return Ok(out);
                }
            }
            ApibanPage::Done => {
                out.cursor = Some(cursor);
                return Ok(out);
            }
            ApibanPage::Unauthorized => {
                return Err(format!("APIBAN refused the key in {key_file}"));
            }
            ApibanPage::RateLimited if out.entries.is_empty() => {
                return Err("APIBAN's rate limit: nothing new this time".into());
            }
            ApibanPage::RateLimited => {
                out.partial = true;
                out.cursor = Some(cursor);
                return Ok(out);
            }
        }
    }
    out.partial = true;
    out.cursor = Some(cursor);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_30_s_up_to_the_interval() {
        let i = 3_600_000;
        assert_eq!(retry(1, i), 30_000);
        assert_eq!(retry(2, i), 60_000);
        assert_eq!(retry(8, i), i);
        assert_eq!(retry(u32::MAX, i), i);
        // Never later than the next refresh would have come.
        assert_eq!(retry(1, 5_000), 5_000);
    }
}
