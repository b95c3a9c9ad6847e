//! voipwall as CrowdSec's bouncer: the Local API's decisions stream pulled
//! every `update_frequency`, each decision in the sets of its origin
//! (`vw_cs_<origin>_*`: crowdsec, cscli, capi, lists, other) with its own
//! timeout. A full pull (`startup=true`) at start, every `resync` and after
//! any failure replaces what voipwall holds and re-asserts every timeout,
//! so they never drift from LAPI's. LAPI down: the kernel keeps what it
//! has, the status says so, pulls back off (doubling, at most a minute).
//! Decisions that would ban something protected are counted and reported,
//! never applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use voipwall_core::feeds::{BouncerStatus, FeedLink};
use voipwall_nft::sets::crowdsec_stem;
use voipwall_policy::feed::{Entry, Guard};
use voipwall_policy::{CROWDSEC_ORIGINS, CrowdsecSettings};
use voipwall_store::FeedRecord;

use crate::feeds::{Sets, blocking};
use crate::http;

/// The longest wait between pulls while LAPI cannot be reached.
const MAX_BACKOFF_MS: u64 = 60_000;

/// A decision held: what it bans, in which origin set, until when.
#[derive(Debug, Clone, Copy)]
struct Held {
    origin: &'static str,
    net: IpNet,
    until_ms: u64,
}

struct Bouncer {
    settings: CrowdsecSettings,
    /// By LAPI's id; restored ones (no id yet) have negative ids until the
    /// first full pull replaces them.
    held: HashMap<i64, Held>,
    next_ms: u64,
    full_due: bool,
    status: BouncerStatus,
}

/// Runs the bouncer until `stop`, following the configuration's changes.
pub(crate) async fn run(link: Arc<FeedLink>, sets: Sets, stop: Arc<AtomicBool>) {
    let mut version = 0;
    let mut resets = link.resets();
    let mut guard = Guard::default();
    let mut bouncer: Option<Bouncer> = None;
    while !stop.load(Ordering::Relaxed) {
        if link.resets() != resets {
            // The table came back empty: what is held goes back now, and
            // the next pull is a full one.
            resets = link.resets();
            if let Some(b) = bouncer.as_mut() {
                b.full_due = true;
                b.place(&sets, &guard, voipwall_core::daemon::now_ms(), false)
                    .await;
            }
        }
        if link.version() != version {
            let (v, cfg) = link.get();
            version = v;
            guard = cfg.guard;
            let want = cfg.crowdsec.filter(|c| c.bouncer_key_file.is_some());
            let same = match (&bouncer, &want) {
                (Some(b), Some(w)) => b.settings == *w,
                (None, None) => true,
                _ => false,
            };
            if !same {
                bouncer = match want {
                    Some(w) => Some(Bouncer::restore(w, &sets, &guard).await),
                    None => None,
                };
            } else if let Some(b) = bouncer.as_mut() {
                // The guard may have changed: place everything again.
                b.place(&sets, &guard, voipwall_core::daemon::now_ms(), false)
                    .await;
            }
            publish(&link, bouncer.as_ref());
        }
        if let Some(b) = bouncer.as_mut()
            && b.next_ms <= voipwall_core::daemon::now_ms()
        {
            b.pull(&sets, &guard).await;
            publish(&link, Some(b));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn publish(link: &FeedLink, b: Option<&Bouncer>) {
    *link.bouncer.lock().unwrap_or_else(PoisonError::into_inner) = b.map(|b| b.status.clone());
}

impl Bouncer {
    /// A bouncer starting from what the store kept (enforced at once,
    /// before LAPI answers: it may be down, or the network not up yet).
    async fn restore(settings: CrowdsecSettings, sets: &Sets, guard: &Guard) -> Self {
        let now = voipwall_core::daemon::now_ms();
        let mut b = Self {
            status: BouncerStatus {
                lapi_url: settings.lapi_url.clone(),
                ..BouncerStatus::default()
            },
            settings,
            held: HashMap::new(),
            next_ms: now,
            full_due: true,
        };
        let mut id = 0;
        for origin in CROWDSEC_ORIGINS {
            let stem = crowdsec_stem(origin);
            let rec = blocking(sets, move |s| s.last_good(&stem)).await;
            for (net, until) in rec.map(|r| r.entries).unwrap_or_default() {
                if let Some(until_ms) = until.filter(|t| *t > now) {
                    id -= 1;
                    b.held.insert(
                        id,
                        Held {
                            origin,
                            net,
                            until_ms,
                        },
                    );
                }
            }
        }
        b.place(sets, guard, now, false).await;
        b
    }

    /// Puts every origin's decisions into its sets (only the difference
    /// moves; a full pull gives every decision a new time, so every
    /// timeout is set again) and stores them.
    async fn place(&mut self, sets: &Sets, guard: &Guard, now: u64, store: bool) {
        self.held.retain(|_, h| h.until_ms > now);
        for origin in CROWDSEC_ORIGINS {
            // Collapsed once here: the count, the store and the kernel
            // take the same list (collapsing it again in `put` is a pass
            // over sorted entries).
            let entries: Vec<Entry> = voipwall_policy::feed::collapse(
                self.held
                    .values()
                    .filter(|h| h.origin == origin && guard.refuse(&h.net).is_none())
                    .map(|h| (h.net, Some(h.until_ms)))
                    .collect(),
            );
            let stem = crowdsec_stem(origin);
            let (s2, e2) = (stem.clone(), entries.clone());
            match blocking(sets, move |s| s.put(&s2, e2, now)).await {
                Ok((added, removed)) => {
                    self.status
                        .decisions
                        .insert(origin.to_string(), entries.len());
                    if store && (added > 0 || removed > 0) {
                        let rec = FeedRecord {
                            name: stem,
                            fetched: voipwall_detect::Timestamp(now),
                            cursor: None,
                            entries,
                        };
                        if let Err(e) = blocking(sets, move |s| s.save(&rec)).await {
                            tracing::warn!(error = %format!("{e:#}"), "CrowdSec decisions could not be stored; they are in the kernel.");
                        }
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::error!(origin, error = %msg, "CrowdSec decisions could not be placed.");
                    self.status.error = Some(msg);
                }
            }
        }
    }

    async fn pull(&mut self, sets: &Sets, guard: &Guard) {
        let full = self.full_due
            || self
                .status
                .last_full_ms
                .is_none_or(|t| voipwall_core::daemon::now_ms() >= t + self.settings.resync * 1000);
        match self.ask(full, guard).await {
            Ok(stream) => {
                let now = voipwall_core::daemon::now_ms();
                if full {
                    self.held.clear();
                }
                for id in &stream.deleted {
                    self.held.remove(id);
                }
                for d in stream.new {
                    self.held.insert(
                        d.id,
                        Held {
                            origin: d.origin,
                            net: d.net,
                            until_ms: now + d.left_ms,
                        },
                    );
                }
                for k in &stream.skipped {
                    if k.protected {
                        self.status.protected += 1;
                        tracing::warn!(id = k.id, value = %k.value, reason = %k.reason, "A CrowdSec decision would ban something protected: not applied.");
                    } else {
                        self.status.skipped += 1;
                    }
                    self.status
                        .skipped_examples
                        .push(format!("{} (decision {}): {}", k.value, k.id, k.reason));
                }
                let keep = self.status.skipped_examples.len().saturating_sub(5);
                self.status.skipped_examples.drain(..keep);
                self.status.error = None;
                self.place(sets, guard, now, true).await;
                if self.status.error.is_none() {
                    self.status.connected = true;
                    self.status.failures = 0;
                    self.status.last_pull_ms = Some(now);
                    if full {
                        self.status.last_full_ms = Some(now);
                        self.full_due = false;
                    }
                }
                self.next_ms = now + self.settings.update_frequency * 1000;
            }
            Err(msg) => {
                let now = voipwall_core::daemon::now_ms();
                self.status.failures += 1;
                if self.status.connected || self.status.failures == 1 {
                    tracing::warn!(lapi = %self.settings.lapi_url, error = %msg, "CrowdSec's LAPI cannot be pulled; what the kernel holds stays enforced.");
                }
                self.status.connected = false;
                self.status.error = Some(msg);
                // Deltas may have been missed: the next good pull is full.
                self.full_due = true;
                let freq = self.settings.update_frequency * 1000;
                let wait = freq
                    .saturating_mul(1 << self.status.failures.min(16))
                    .min(MAX_BACKOFF_MS.max(freq));
                self.next_ms = now + wait;
            }
        }
    }

    async fn ask(
        &self,
        full: bool,
        guard: &Guard,
    ) -> Result<voipwall_policy::crowdsec::Stream, String> {
        let key_file = self
            .settings
            .bouncer_key_file
            .as_deref()
            .unwrap_or_default();
        let key = tokio::fs::read_to_string(key_file)
            .await
            .map_err(|e| format!("the bouncer key {key_file}: {e}"))?;
        let key = key.trim();
        if key.is_empty() || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "the bouncer key in {key_file} is empty or not one word"
            ));
        }
        let url = format!(
            "{}/v1/decisions/stream?startup={full}",
            self.settings.lapi_url
        );
        let wait = Duration::from_secs(self.settings.update_frequency.clamp(5, 30));
        let r = http::fetch(
            &http::Request {
                method: "GET",
                url: &url,
                headers: vec![("x-api-key", key.to_string())],
                body: None,
            },
            &http::Limits {
                max_body: 64 << 20,
                connect: wait.min(Duration::from_secs(10)),
                total: wait.max(Duration::from_secs(30)),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        match r.status {
            200 => {}
            401 | 403 => {
                return Err(format!(
                    "LAPI refused the bouncer key in {key_file} (HTTP {})",
                    r.status
                ));
            }
            s => return Err(format!("LAPI answered HTTP {s}")),
        }
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let guard = guard.clone();
        tokio::task::spawn_blocking(move || voipwall_policy::crowdsec::parse_stream(&body, &guard))
            .await
            .map_err(|e| e.to_string())?
    }
}
