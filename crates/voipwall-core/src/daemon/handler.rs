//! The control socket's requests, answered on the engine thread: status,
//! bans, runtime verbs (through the one ban plane), explain, events.

use super::control::{
    Answer, BansReply, BrokenRule, CallDecideReply, EventsReply, ExplainReply, Latency,
    SafeModeState, StalledReply, StatusReply,
};
use super::*;

impl Daemon {
    /// A runtime verb from the control socket: the one ban plane
    /// (`plane::run`), recorded through the daemon's store thread, engine
    /// and event stream.
    pub(super) fn runtime(&mut self, op: &crate::plane::Op, t: Timestamp) -> Reply {
        let named = self
            .names
            .as_ref()
            .map(|n| {
                n.addresses()
                    .into_iter()
                    .map(|a| (a, "a trunk, peer or allow name".to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let guard = crate::plane::protected(Some(&self.policy), named);
        let Some(mut bans) = self.bans.take() else {
            return Reply::One(Answer::Runtime(crate::plane::Outcome {
                ok: false,
                verb: op.verb,
                done: Vec::new(),
                seconds: None,
                error: Some("the daemon has no netlink socket: nothing was changed".into()),
                absent: false,
            }));
        };
        let mut ledger = DaemonLedger {
            engine: &mut self.engine,
            counters: &mut self.counters,
            writer: &self.writer,
            store: &self.store,
            events: Vec::new(),
            shared: Vec::new(),
        };
        let outcome = crate::plane::run(op, Some(&self.policy), &guard, &mut bans, &mut ledger, t);
        let events = std::mem::take(&mut ledger.events);
        let shared = std::mem::take(&mut ledger.shared);
        self.bans = Some(bans);
        for v in shared {
            self.publish(v);
        }
        // What an operator just did shows in the next status.
        self.status_cache = None;
        for (kind, addr, detail) in events {
            self.event(&kind, addr, detail);
        }
        Reply::One(Answer::Runtime(outcome))
    }

    pub(super) fn control(&mut self, req: Request) -> Reply {
        self.flush_events();
        // Answers read from the store wait for the store thread to commit
        // what came before (`ban` then `bans` is consistent); `status` reads
        // nothing from it, so a scraper polling it never holds the packet
        // path for a commit (bench/api).
        if matches!(
            req,
            Request::Bans { .. } | Request::Explain { .. } | Request::Runtime(_)
        ) {
            self.sync_store();
        }
        let t = now();
        let err = |m: String| Reply::One(Answer::error(m));
        match req {
            Request::Status => {
                if let Some((at, r)) = &self.status_cache
                    && at.elapsed() < STATUS_FRESH
                {
                    return Reply::One(Answer::Status(r.clone()));
                }
                let mut prom: Vec<u64> =
                    self.counters.promotion_latency_us.iter().copied().collect();
                prom.sort_unstable();
                let mut lat: Vec<u64> = self.counters.ban_latency_us.iter().copied().collect();
                lat.sort_unstable();
                let latency = |v: &[u64], p99: bool| Latency {
                    samples: v.len(),
                    p50: v.get(v.len().saturating_sub(1) / 2).copied(),
                    p99: if p99 {
                        v.get(((v.len() as f64 - 1.0) * 0.99).round() as usize)
                            .copied()
                    } else {
                        None
                    },
                    max: v.last().copied(),
                };
                let r = StatusReply {
                    ok: true,
                    pid: std::process::id(),
                    uptime_s: self.started.elapsed().as_secs(),
                    mode: if self.observe { "observe" } else { "enforce" }.into(),
                    policy: self.cli_config.display().to_string(),
                    state_dir: self.state_dir.display().to_string(),
                    store: self.opened.clone(),
                    restored_bans: self.restored,
                    safe_mode: SafeModeState {
                        holding: false,
                        held_at_start_s: self.safe_mode_held,
                    },
                    imported_from_kernel: self.reconciled,
                    recompiled: self.recompiled.clone(),
                    dns: self.names.as_ref().map(names::Names::status),
                    nflog_group: self.nflog_group,
                    counters: self.counters.clone(),
                    store_errors: self.store_errors.load(Ordering::Relaxed),
                    engine: self.engine.stats(),
                    shields: self.engine.shields(now()),
                    calls: self.engine.call_stats(),
                    inline: self.inline.view(),
                    sources: self.sources.lock().map(|g| g.clone()).unwrap_or_default(),
                    tcp: self.capture.tcp_stats(),
                    active_bans: self.active.get(self.bans_made()),
                    ban_latency_us: latency(&lat, true),
                    ban_latency_by_rule_us: self
                        .counters
                        .ban_latency_by_rule
                        .iter()
                        .map(|(rule, v)| {
                            let mut v: Vec<u64> = v.iter().copied().collect();
                            v.sort_unstable();
                            (rule.clone(), latency(&v, true))
                        })
                        .collect(),
                    ban_latency_histogram: LATENCY_BUCKETS_US
                        .iter()
                        .map(|&u| Some(u))
                        .chain([None])
                        .zip(self.counters.ban_latency_histogram)
                        .collect(),
                    promotion_latency_us: latency(&prom, false),
                    rss_kb: rss_kb(),
                    cpu_ms: cpu_ms(),
                    api: self
                        .api_listeners
                        .lock()
                        .map(|l| l.clone())
                        .unwrap_or_default(),
                    feeds: self.feeds.statuses(),
                    crowdsec_bouncer: self
                        .feeds
                        .bouncer
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone(),
                    crowdsec_watcher: self
                        .feeds
                        .watcher
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone(),
                    fleet: self
                        .feeds
                        .fleet
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone(),
                    policy_file: None,
                };
                let r = Box::new(r);
                self.status_cache = Some((Instant::now(), r.clone()));
                Reply::One(Answer::Status(r))
            }
            Request::Bans {
                all,
                rule,
                net,
                limit,
            } => {
                let net = match net.as_deref().map(voipwall_policy::parse_net).transpose() {
                    Ok(n) => n,
                    Err(e) => return err(e),
                };
                let f = BanFilter {
                    active_at: (!all).then_some(t),
                    rule,
                    net,
                    limit,
                };
                match self.store.bans(&f) {
                    Ok(bans) => Reply::One(Answer::Bans(BansReply { ok: true, bans })),
                    Err(e) => err(e.to_string()),
                }
            }
            Request::Runtime(op) => self.runtime(&op, t),
            Request::Explain { addr } => {
                let Ok(a) = addr.parse::<IpAddr>() else {
                    return err(format!("`{addr}` is not an IP address"));
                };
                let x = self.engine.explain(a, t);
                let stored = self
                    .store
                    .bans(&BanFilter {
                        net: Some(IpNet::from(a)),
                        limit: Some(20),
                        ..BanFilter::default()
                    })
                    .unwrap_or_default();
                Reply::One(Answer::Explain(Box::new(ExplainReply {
                    ok: true,
                    engine: x,
                    stored_bans: stored,
                })))
            }
            Request::CallDecide { from, user, to } => {
                let Ok(a) = from.parse::<IpAddr>() else {
                    return err(format!("`{from}` is not an IP address"));
                };
                match self
                    .engine
                    .call_decide(t, a, user.as_deref(), to.as_bytes())
                {
                    None => err("the policy has no [call] rules".to_string()),
                    Some(broken) => Reply::One(Answer::CallDecide(CallDecideReply {
                        ok: true,
                        allow: broken.is_empty(),
                        broken: broken
                            .into_iter()
                            .map(|(rule, reason)| BrokenRule { rule, reason })
                            .collect(),
                    })),
                }
            }
            Request::Events { follow, limit } => {
                let n = limit.unwrap_or(50);
                let past: Vec<Value> = self.recent.iter().rev().take(n).rev().cloned().collect();
                let first = Answer::Events(EventsReply {
                    ok: true,
                    events: past,
                });
                if follow {
                    let (tx, rx) = mpsc::sync_channel(control::FOLLOW_QUEUE);
                    if self.followers.len() >= control::MAX_FOLLOWERS {
                        return err(format!(
                            "{} followers already; try again later",
                            control::MAX_FOLLOWERS
                        ));
                    }
                    self.followers.push(tx);
                    Reply::Stream(first, rx)
                } else {
                    Reply::One(first)
                }
            }
            Request::Drops {
                minutes,
                top,
                since,
            } => Reply::One(Answer::Drops(Box::new(self.drop_log.report(
                t.0,
                minutes.unwrap_or(voipwall_detect::drops::WINDOW_MINUTES),
                top.unwrap_or(20).min(1000),
                since.unwrap_or(u64::MAX),
            )))),
            Request::TestStall { ms } => {
                if std::env::var_os("VOIPWALL_TEST_HOOKS").is_none_or(|v| v != "1") {
                    return err("test hooks are off".into());
                }
                std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
                Reply::One(Answer::Stalled(StalledReply {
                    ok: true,
                    stalled_ms: ms,
                }))
            }
            Request::Reload => {
                // Answered by handle_input (the reload runs on its own thread).
                err("internal: reload is asynchronous".into())
            }
        }
    }
}

/// Resident memory of this process, from /proc.
pub(super) fn rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time used by this process (user + system), ms.
pub(super) fn cpu_ms() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10)
}

/// The daemon's side of a runtime verb: the store thread writes, the engine
/// learns (bans it must remember, allows it must honour), events are
/// published after.
struct DaemonLedger<'a> {
    engine: &'a mut Engine,
    counters: &'a mut Counters,
    writer: &'a Sender<StoreOp>,
    store: &'a Store,
    events: Vec<(String, Option<String>, String)>,
    /// Structured `manual-ban` and `lift` events (the fleet shares them).
    shared: Vec<Value>,
}

impl crate::plane::Ledger for DaemonLedger<'_> {
    fn active_bans(&mut self, now: Timestamp) -> Vec<BanRecord> {
        // `control` waited for the store thread before this request.
        self.store.active_bans(now).unwrap_or_default()
    }

    fn record_bans(&mut self, bans: &[BanRecord]) {
        for r in bans {
            self.engine.restore_ban(r.to_ban());
            // For the fleet: an operator's ban travels like a detected one.
            self.shared.push(serde_json::json!({
                "kind": "manual-ban", "target": r.target.to_string(), "rule": r.rule,
                "until_ms": r.end.0, "reason": r.reason, "events": r.evidence.len(),
            }));
        }
        count_bans(self.counters, bans);
        let _ = self.writer.send(StoreOp::Bans(bans.to_vec()));
    }

    fn lift(&mut self, target: &IpNet, now: Timestamp, by: &str) {
        self.engine.forget_ban(target);
        self.shared
            .push(serde_json::json!({"kind": "lift", "target": target.to_string()}));
        let _ = self
            .writer
            .send(StoreOp::Lift(*target, now, by.to_string()));
    }

    fn extend(&mut self, ban: &BanRecord) {
        self.engine.restore_ban(ban.to_ban());
        let _ = self.writer.send(StoreOp::Extend(ban.clone()));
    }

    fn allowed(&mut self, net: IpNet, until: Option<Timestamp>) {
        self.engine.allow(net, until);
    }

    fn disallowed(&mut self, net: &IpNet) {
        self.engine.disallow(net);
    }

    fn audit(&mut self, now: Timestamp, actor: &str, action: &str, detail: &str) {
        // An operator's verb is in the daemon's log as well as the audit
        // table (journalctl shows who banned or lifted what, and when).
        tracing::info!(
            actor,
            action,
            targets = detail,
            "Operator: {action} {detail} (by {actor})."
        );
        let _ = self.writer.send(StoreOp::Audit(
            now,
            actor.to_string(),
            action.to_string(),
            detail.to_string(),
        ));
    }

    fn event(&mut self, _now: Timestamp, kind: &str, addr: Option<String>, detail: String) {
        self.events.push((kind.to_string(), addr, detail));
    }
}
