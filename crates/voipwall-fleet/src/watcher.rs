//! voipwall as CrowdSec's watcher: each ban voipwall's detection makes is
//! posted to the Local API as an alert with its decision, and an
//! operator's unban deletes the decisions it posted for that target (scenario
//! `voipwall/<rule>`, the source, the number of events, the reason), so
//! every bouncer of the fleet enforces it. Alerts are queued in the store
//! first (bounded, oldest dropped and counted) and delivered in order;
//! while LAPI is down they wait, and go out when it is back. A decision
//! that came from LAPI is never posted back: it never becomes a ban of
//! voipwall's (it lives in the bouncer's own sets).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use voipwall_core::feeds::{FeedLink, WatcherStatus};
use voipwall_detect::Timestamp;
use voipwall_policy::CrowdsecSettings;
use voipwall_store::Store;

use crate::http;

/// The outbox's kind for alerts.
const KIND: &str = "crowdsec-alert";
/// The most alerts kept while LAPI is away.
const QUEUE_CAP: usize = 10_000;
/// Alerts per POST.
const BATCH: usize = 100;

/// What is queued for one ban: enough to build the alert when it goes out
/// (the decision's duration is what is left of the ban then).
fn queued(ban: &Value) -> Option<Value> {
    // An operator's unban: the decisions this watcher posted for the
    // target are deleted in LAPI too.
    if ban["kind"] == "lift" {
        return Some(json!({"lift": ban["target"].as_str()?}));
    }
    if ban["kind"] != "ban" {
        return None;
    }
    Some(json!({
        "target": ban["target"].as_str()?,
        "rule": ban["rule"].as_str()?,
        "reason": ban["reason"].as_str().unwrap_or(""),
        "at": ban["at"].as_str()?,
        "until_ms": ban["until_ms"].as_u64()?,
        "events": ban["events"].as_u64().unwrap_or(1).max(1),
    }))
}

/// The alert LAPI takes (`POST /v1/alerts`) for a queued ban at `now`;
/// `None` once the ban is over. LAPI counts a decision's time from the
/// alert's `stop_at`, so `stop_at` is now and the duration what is left.
pub fn alert(q: &Value, now_ms: u64) -> Option<Value> {
    let target: ipnet::IpNet = q["target"].as_str()?.parse().ok()?;
    let left_ms = q["until_ms"].as_u64()?.checked_sub(now_ms)?;
    if left_ms < 1000 {
        return None;
    }
    let (scope, value) = if target.prefix_len() == target.max_prefix_len() {
        ("Ip", target.addr().to_string())
    } else {
        ("Range", target.to_string())
    };
    let scenario = format!("voipwall/{}", q["rule"].as_str()?);
    let reason = q["reason"].as_str().unwrap_or("");
    let mut source = json!({"scope": scope, "value": value});
    if scope == "Ip" {
        source["ip"] = json!(value);
    } else {
        source["range"] = json!(value);
    }
    Some(json!({
        "scenario": scenario,
        "scenario_hash": "",
        "scenario_version": "",
        "message": format!("voipwall: {value} banned: {reason}"),
        "events_count": q["events"].as_u64().unwrap_or(1),
        "events": [],
        "start_at": q["at"],
        "stop_at": Timestamp(now_ms).to_string(),
        "capacity": 0,
        "leakspeed": "0",
        "simulated": false,
        "source": source,
        "decisions": [{
            "duration": format!("{}s", left_ms / 1000),
            "origin": "crowdsec",
            "scenario": scenario,
            "scope": scope,
            "type": "ban",
            "value": value,
        }],
    }))
}

struct Watcher {
    settings: CrowdsecSettings,
    store: Store,
    token: Option<(String, u64)>,
    status: WatcherStatus,
    next_ms: u64,
    failures: u32,
}

/// Runs the watcher until `stop`, following the configuration's changes.
pub(crate) async fn run(
    link: Arc<FeedLink>,
    mut bans: tokio::sync::broadcast::Receiver<Value>,
    state_dir: PathBuf,
    stop: Arc<AtomicBool>,
) {
    let mut version = 0;
    let mut w: Option<Watcher> = None;
    while !stop.load(Ordering::Relaxed) {
        if link.version() != version {
            let (v, cfg) = link.get();
            version = v;
            let want = cfg.crowdsec.filter(|c| c.machine_id.is_some());
            if w.as_ref().map(|w| &w.settings) != want.as_ref() {
                w = match want {
                    Some(s) => match Store::open_existing(&state_dir.join("state.db")) {
                        Ok(store) => Some(Watcher {
                            status: WatcherStatus {
                                lapi_url: s.lapi_url.clone(),
                                machine_id: s.machine_id.clone().unwrap_or_default(),
                                queued: store.outbox_len(KIND).unwrap_or(0),
                                ..WatcherStatus::default()
                            },
                            settings: s,
                            store,
                            token: None,
                            next_ms: 0,
                            failures: 0,
                        }),
                        Err(e) => {
                            tracing::error!(error = %e, "The CrowdSec watcher cannot open the store.");
                            None
                        }
                    },
                    None => None,
                };
                publish(&link, w.as_ref());
            }
        }
        // New bans into the queue (dropped when no watcher is configured).
        let mut got = false;
        loop {
            let b = match bans.try_recv() {
                Ok(b) => b,
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "The CrowdSec watcher missed bans.");
                    continue;
                }
                Err(_) => break,
            };
            if let (Some(w), Some(q)) = (w.as_mut(), queued(&b)) {
                match w.store.outbox_push(
                    KIND,
                    &q.to_string(),
                    Timestamp(voipwall_core::daemon::now_ms()),
                    QUEUE_CAP,
                ) {
                    Ok(dropped) => w.status.dropped += dropped as u64,
                    Err(e) => tracing::warn!(error = %e, "A ban could not be queued for CrowdSec."),
                }
                got = true;
            }
        }
        if let Some(w) = w.as_mut() {
            if got && w.failures == 0 {
                // A new ban goes at once (but not past a back-off).
                w.next_ms = w.next_ms.min(voipwall_core::daemon::now_ms());
            }
            if w.next_ms <= voipwall_core::daemon::now_ms() {
                w.deliver().await;
                publish(&link, Some(w));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn publish(link: &FeedLink, w: Option<&Watcher>) {
    *link.watcher.lock().unwrap_or_else(PoisonError::into_inner) = w.map(|w| w.status.clone());
}

impl Watcher {
    fn limits() -> http::Limits {
        http::Limits {
            max_body: 1 << 20,
            connect: Duration::from_secs(5),
            total: Duration::from_secs(15),
        }
    }

    /// A JWT in force: the one held, or a new login.
    async fn token(&mut self) -> Result<String, String> {
        let now = voipwall_core::daemon::now_ms();
        if let Some((t, until)) = &self.token
            && *until > now + 60_000
        {
            return Ok(t.clone());
        }
        let file = self
            .settings
            .machine_password_file
            .as_deref()
            .unwrap_or_default();
        let password = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| format!("the machine password {file}: {e}"))?;
        let body = json!({
            "machine_id": self.settings.machine_id,
            "password": password.trim_end_matches(['\n', '\r']),
            "scenarios": [],
        })
        .to_string();
        let url = format!("{}/v1/watchers/login", self.settings.lapi_url);
        let r = http::fetch(
            &http::Request {
                method: "POST",
                url: &url,
                headers: vec![("content-type", "application/json".into())],
                body: Some(body.into_bytes()),
            },
            &Self::limits(),
        )
        .await
        .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!(
                "LAPI refused the login of machine {} (HTTP {})",
                self.status.machine_id, r.status
            ));
        }
        let v: Value =
            serde_json::from_slice(&r.body).map_err(|e| format!("LAPI's login answer: {e}"))?;
        let token = v["token"]
            .as_str()
            .ok_or("no token in LAPI's login answer")?;
        // LAPI's tokens last an hour; renewed ten minutes early at most
        // (the expiry it states is not trusted beyond that).
        self.token = Some((token.to_string(), now + 50 * 60_000));
        self.status.logged_in = true;
        Ok(token.to_string())
    }

    /// Posts what is queued, oldest first, in batches.
    async fn deliver(&mut self) {
        loop {
            let batch = match self.store.outbox_peek(KIND, BATCH) {
                Ok(b) => b,
                Err(e) => {
                    self.fail(format!("reading the queue: {e}"));
                    return;
                }
            };
            self.status.queued = self.store.outbox_len(KIND).unwrap_or(0);
            if batch.is_empty() {
                self.next_ms = u64::MAX;
                return;
            }
            let now = voipwall_core::daemon::now_ms();
            let items: Vec<Value> = batch
                .iter()
                .filter_map(|(_, b)| serde_json::from_str(b).ok())
                .collect();
            let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
            // In order: alerts in batches, a lift after the alerts before it.
            let mut alerts: Vec<Value> = Vec::new();
            for q in &items {
                if let Some(target) = q["lift"].as_str() {
                    if !alerts.is_empty() {
                        if let Err(e) = self.post(&alerts).await {
                            self.fail(e);
                            return;
                        }
                        self.status.posted += alerts.len() as u64;
                        alerts.clear();
                    }
                    if let Err(e) = self.lift(target).await {
                        self.fail(e);
                        return;
                    }
                } else if let Some(a) = alert(q, now) {
                    alerts.push(a);
                }
            }
            if !alerts.is_empty() {
                if let Err(e) = self.post(&alerts).await {
                    self.fail(e);
                    return;
                }
                self.status.posted += alerts.len() as u64;
            }
            // Bans already over are not posted: they are done with too.
            if let Err(e) = self.store.outbox_done(&ids) {
                self.fail(format!("updating the queue: {e}"));
                return;
            }
            self.failures = 0;
            self.status.error = None;
            self.status.queued = self.store.outbox_len(KIND).unwrap_or(0);
        }
    }

    /// Deletes, in LAPI, the decisions this machine posted for `target`
    /// (its alerts' `voipwall/` decisions only: an operator's `cscli`
    /// decision or CAPI's on the same address stays).
    async fn lift(&mut self, target: &str) -> Result<(), String> {
        let net: ipnet::IpNet = target
            .parse()
            .map_err(|_| format!("`{target}` is not a target"))?;
        let query = if net.prefix_len() == net.max_prefix_len() {
            format!("ip={}", net.addr())
        } else {
            format!("range={net}")
        };
        let token = self.token().await?;
        let url = format!("{}/v1/alerts?{query}", self.settings.lapi_url);
        let r = http::fetch(
            &http::Request {
                method: "GET",
                url: &url,
                headers: vec![("authorization", format!("Bearer {token}"))],
                body: None,
            },
            &http::Limits {
                max_body: 8 << 20,
                ..Self::limits()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!(
                "LAPI refused the alerts of {target} (HTTP {})",
                r.status
            ));
        }
        let alerts: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("LAPI's alerts of {target}: {e}"))?;
        let machine = self.status.machine_id.clone();
        let ids: Vec<i64> = alerts
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["machine_id"] == machine.as_str())
            .flat_map(|a| a["decisions"].as_array().cloned().unwrap_or_default())
            .filter(|d| {
                d["scenario"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("voipwall/"))
            })
            .filter_map(|d| d["id"].as_i64())
            .collect();
        for id in ids {
            let url = format!("{}/v1/decisions/{id}", self.settings.lapi_url);
            let r = http::fetch(
                &http::Request {
                    method: "DELETE",
                    url: &url,
                    headers: vec![("authorization", format!("Bearer {token}"))],
                    body: None,
                },
                &Self::limits(),
            )
            .await
            .map_err(|e| e.to_string())?;
            // Gone already (expired, deleted by hand) is as good.
            if !matches!(r.status, 200 | 204 | 404) {
                return Err(format!(
                    "LAPI refused to delete decision {id} (HTTP {})",
                    r.status
                ));
            }
            self.status.lifted += 1;
        }
        Ok(())
    }

    async fn post(&mut self, alerts: &[Value]) -> Result<(), String> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let url = format!("{}/v1/alerts", self.settings.lapi_url);
            let r = http::fetch(
                &http::Request {
                    method: "POST",
                    url: &url,
                    headers: vec![
                        ("authorization", format!("Bearer {token}")),
                        ("content-type", "application/json".into()),
                    ],
                    body: Some(Value::from(alerts.to_vec()).to_string().into_bytes()),
                },
                &Self::limits(),
            )
            .await
            .map_err(|e| e.to_string())?;
            match r.status {
                200 | 201 => return Ok(()),
                // An expired or revoked token: log in again, once.
                401 | 403 if attempt == 0 => {
                    self.token = None;
                    self.status.logged_in = false;
                }
                s => {
                    return Err(format!(
                        "LAPI refused the alerts (HTTP {s}): {}",
                        String::from_utf8_lossy(&r.body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ));
                }
            }
        }
        Err("LAPI refused the alerts after a new login".into())
    }

    fn fail(&mut self, msg: String) {
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(lapi = %self.settings.lapi_url, error = %msg, queued = self.status.queued, "CrowdSec alerts wait for LAPI.");
        }
        self.status.error = Some(msg);
        self.status.logged_in = self.token.is_some();
        let wait = 1000u64
            .saturating_mul(1 << self.failures.min(6))
            .min(60_000);
        self.next_ms = voipwall_core::daemon::now_ms() + wait;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_becomes_an_alert_with_what_is_left_of_it() {
        let ban = json!({"kind": "ban", "at": "2026-12-06T13:50:00.000Z", "target": "203.0.113.66/32",
                         "offender": "203.0.113.66", "rule": "auth-bruteforce", "until": "x",
                         "until_ms": 1_000_000_u64, "reason": "5 failed authentications", "events": 5});
        let q = queued(&ban).unwrap();
        let a = alert(&q, 400_000).unwrap();
        assert_eq!(a["scenario"], "voipwall/auth-bruteforce");
        assert_eq!(a["source"]["scope"], "Ip");
        assert_eq!(a["source"]["ip"], "203.0.113.66");
        assert_eq!(a["events_count"], 5);
        assert_eq!(a["decisions"][0]["duration"], "600s");
        assert_eq!(a["decisions"][0]["value"], "203.0.113.66");
        // A prefix ban is a Range.
        let mut p = q.clone();
        p["target"] = json!("2001:db8:bad::/64");
        let a = alert(&p, 400_000).unwrap();
        assert_eq!(a["source"]["scope"], "Range");
        assert_eq!(a["decisions"][0]["value"], "2001:db8:bad::/64");
        // Over: nothing to post.
        assert!(alert(&q, 999_500).is_none());
        assert!(queued(&json!({"kind": "would-ban"})).is_none());
    }
}
