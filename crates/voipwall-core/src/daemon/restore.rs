//! Putting the kernel back as the store says: bans at start and after a
//! foreign flush, the reconcile of kernel-held bans, and reload (prepared
//! off the engine thread, swapped in on it).

use super::*;

impl Daemon {
    /// Puts the store's active bans back into the kernel with their
    /// remaining time (at start, after a reload, after the table vanished).
    /// Returns how many.
    pub(super) fn restore_kernel(&mut self, active: &[BanRecord]) -> usize {
        let t = now();
        let prefixes = self.prefixes();
        let entries: Vec<_> = active
            .iter()
            .filter(|b| b.origin != "observe")
            .map(|b| {
                let ttl = (!b.is_permanent()).then(|| b.end.since(t));
                (crate::plane::place_record(b.target, prefixes), ttl)
            })
            .collect();
        self.kernel_add(&entries);
        entries.len()
    }

    /// Gives a new engine its memory of the store's active bans (recidive,
    /// suppression): at start and after a reload, not when only the kernel
    /// lost them. Without their evidence, which stays in the store (the
    /// engine keeps up to `max_bans` of them; explain reads the store's).
    pub(super) fn remember(&mut self, active: &[BanRecord]) {
        for b in active.iter().filter(|b| b.origin != "observe") {
            let mut ban = b.to_ban();
            ban.evidence = Vec::new();
            self.engine.restore_ban(ban);
        }
    }

    /// The store's bans in force at `t`, page by page (a few thousand
    /// records at a time, never every one at once: a million stored bans
    /// would hold hundreds of megabytes), each page handed to `f`. Returns
    /// how many were read.
    pub(super) fn each_active_page(
        &mut self,
        t: Timestamp,
        mut f: impl FnMut(&mut Self, &[BanRecord]),
    ) -> usize {
        const PAGE: usize = 4096;
        let mut after = String::new();
        let mut n = 0;
        loop {
            let (page, next) = match self.store.active_bans_page(t, &after, PAGE) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "Could not read bans from the store.");
                    break;
                }
            };
            n += page.len();
            f(self, &page);
            match next {
                Some(c) => after = c,
                None => break,
            }
        }
        n
    }

    /// At start: active bans from the store go back into the kernel with
    /// their remaining time and into the engine's memory (recidive,
    /// suppression); bans the kernel holds that the store does not (kernel
    /// flood guards, a lost store) are imported.
    pub(super) fn restore(&mut self) {
        let t = now();
        match self.store.unreadable_bans() {
            Ok(0) | Err(_) => {}
            Ok(n) => tracing::warn!(
                rows = n,
                "Ban rows in the store cannot be read and were skipped; every other ban is restored."
            ),
        }
        let mut known = std::collections::HashSet::new();
        let mut restored = 0;
        self.each_active_page(t, |d, page| {
            d.remember(page);
            restored += d.restore_kernel(page);
            known.extend(page.iter().map(|b| b.target));
        });
        self.restored = restored;
        self.restore_remembered(t);
        tracing::info!(
            bans = self.restored,
            "Restored bans from the store with their remaining time."
        );
        // Reconcile (what the kernel holds and the store does not) on its
        // own thread: dumping a set of 500,000 bans takes the kernel
        // seconds, and the daemon must be ready before that.
        self.known_at_start = known;
    }

    /// Endpoints that registered within `[detect] remember_endpoints` of
    /// `t`, with when they last did (none when remembering is off or the
    /// store cannot say, logged).
    fn remembered_list(&mut self, t: Timestamp) -> Vec<(IpAddr, Timestamp)> {
        let keep = self.policy.detect.remember_endpoints.saturating_mul(1000);
        if keep == 0 {
            return Vec::new();
        }
        match self
            .store
            .remembered_endpoints(Timestamp(t.0.saturating_sub(keep)))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "Could not read remembered endpoints from the store.");
                Vec::new()
            }
        }
    }

    /// Endpoints that registered within `[detect] remember_endpoints` go
    /// back into the kernel's remembered set for the rest of that time, so
    /// prefix bans spare a phone that rebooted or let its registration
    /// lapse while the daemon was down.
    pub(super) fn restore_remembered(&mut self, t: Timestamp) {
        let keep = self.policy.detect.remember_endpoints.saturating_mul(1000);
        let list = self.remembered_list(t);
        if list.is_empty() {
            return;
        }
        // The engine remembers them too: account shields alert instead of
        // banning an endpoint that registered recently.
        for (a, last) in &list {
            self.engine.remember_endpoint(*a, *last);
        }
        let prefixes = self.prefixes();
        let entries: Vec<_> = list
            .iter()
            .map(|(a, last)| {
                let left = (last.0 + keep).saturating_sub(t.0).max(1000);
                (place(Entry::Remembered(*a), prefixes), Some(left))
            })
            .collect();
        self.kernel_add(&entries);
        if !entries.is_empty() {
            tracing::info!(
                endpoints = entries.len(),
                "Remembered endpoints back in the kernel: prefix bans spare them."
            );
        }
    }

    /// Bans the kernel held that the store did not (kernel flood guards, a
    /// lost store), found by the reconcile thread: into the engine's memory
    /// and the store.
    pub(super) fn import(&mut self, imported: Vec<BanRecord>) {
        for r in &imported {
            self.engine.restore_ban(r.to_ban());
        }
        self.reconciled = imported.len();
        if !imported.is_empty() {
            tracing::info!(
                bans = imported.len(),
                "Imported bans the kernel held and the store did not."
            );
            if let Err(e) = self.store.record_bans(&imported) {
                tracing::error!(error = %e, "Could not store imported bans.");
            }
        }
    }

    /// The table vanished under us: apply the generation in force again and
    /// put every stored ban back, loudly.
    pub(super) fn reassert_table(&mut self) {
        let running = crate::safety::running_generation(&self.store);
        let applied = match &running {
            Some(g) => voipwall_sys::nft::apply_script(&g.script).map_err(anyhow::Error::from),
            None => crate::safety::apply_path(&crate::safety::ApplyRequest {
                config: &self.cli_config,
                catalog_dirs: &self.catalog_dirs,
                state_dir: &self.state_dir,
                confirm: None,
                force: false,
                actor: "daemon",
            })
            .map(drop),
        };
        if let Err(e) = applied {
            self.counters.kernel_errors += 1;
            tracing::error!(error = %format!("{e:#}"), "Table inet voipwall vanished and could not be restored.");
            return;
        }
        // The script put the generation's name answers back; the resolver's
        // are newer.
        if let Some(n) = &self.names {
            let ir = running.as_ref().and_then(crate::safety::generation_ruleset);
            n.reassert(ir.as_ref());
        }
        let mut n = 0;
        self.each_active_page(now(), |d, page| n += d.restore_kernel(page));
        self.restore_remembered(now());
        // The origins' sets came back empty: the fleet thread puts their
        // content back (feeds, CrowdSec's decisions, the fleet's bans).
        self.feeds.table_gone();
        let msg = format!(
            "table inet voipwall vanished from the kernel (another tool flushed it?); restored {} and {n} bans",
            running.map_or_else(
                || "the policy".to_string(),
                |g| format!("generation {}", g.id)
            )
        );
        tracing::error!("{msg}");
        self.event("table-restored", None, msg);
    }

    /// `reload` and SIGHUP: the one apply path (validation, anti-lockout,
    /// a recorded generation), then a new engine, and every stored ban put
    /// back into the kernel under the new policy's placement (a changed ban
    /// prefix re-keys them).
    /// Starts a reload on its own thread; its result comes back as
    /// `Input::Reloaded`. One at a time: a second request while one runs is
    /// told so.
    pub(super) fn start_reload(&mut self, reply: Option<Sender<Reply>>) {
        let Some((tx, waker)) = self.inputs.clone() else {
            return;
        };
        if self.reloading {
            if let Some(reply) = reply {
                let _ = reply.send(Reply::One(control::Answer::Reload(control::ReloadReply {
                    ok: false,
                    result: "a reload is already running".into(),
                })));
            }
            return;
        }
        self.reloading = true;
        let _ = self.notify.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the policy",
            voipwall_sys::notify::monotonic_usec()
        ));
        let (config, catalog_dirs, state_dir) = (
            self.cli_config.clone(),
            self.catalog_dirs.clone(),
            self.state_dir.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                let result = prepare_reload(&config, &catalog_dirs, &state_dir);
                let _ = tx.send(Input::Reloaded(Box::new(result), reply));
                waker.wake();
            });
        if spawned.is_err() {
            self.reloading = false;
            tracing::error!("Could not start the reload thread.");
        }
    }

    /// The engine-thread half of a reload: swap in the new engine, remember
    /// and re-assert the stored bans, rebind NFLOG if its group changed.
    pub(super) fn finish_reload(&mut self, p: Prepared) -> String {
        let policy = p.applied.loaded.policy;
        if let Some(n) = &self.names {
            n.update(&policy, &p.applied.ruleset);
        }
        if let Some(g) = &self.geo {
            g.update(&policy, &p.applied.ruleset, true);
        }
        self.capture
            .set_websocket_ports(policy.sip_websocket_ports());
        // A new engine with the new settings; what it remembers of bans
        // (recidive, suppression) comes back from the store.
        // Calls in progress stay counted (a reload must not free every
        // slot of max_concurrent while they go on).
        let calls = self.engine.take_calls();
        let mut config = p.config;
        config.hash_seed = self.engine.hash_seed();
        self.engine = Engine::new(config);
        if let Some(c) = calls {
            self.engine.adopt_calls(c);
        }
        self.observe = policy.detect.mode == DetectMode::Observe;
        if policy.sip.nflog_group != self.nflog_group {
            self.nflog_group = policy.sip.nflog_group;
            self.nflog_rebind = true;
        }
        self.inline.set(inline::Want::of(&policy));
        // The HEP listener and the log followers were started with the
        // daemon: their changes need a restart (said, not hidden).
        let restart = if policy.hep != self.policy.hep || policy.sources != self.policy.sources {
            tracing::warn!(
                "[hep] or the log sources changed: they take effect when the daemon restarts."
            );
            "; [hep] or log sources changed: restart the daemon for them"
        } else {
            ""
        };
        let old_prefixes = self.prefixes();
        self.policy = policy;
        self.drop_log.configure(&self.policy);
        let extra: Vec<IpNet> = self.fleet_allowed.iter().copied().collect();
        self.feeds.set(crate::feeds::FeedConfig::of(
            &self.policy,
            &self.own,
            &extra,
        ));
        self.status_cache = None;
        let new_prefixes = self.prefixes();
        if old_prefixes != new_prefixes {
            // Bans made while the reload ran were placed under the old
            // prefix, after the apply path re-keyed what the store held:
            // every one must be committed before the stored bans are read.
            self.sync_store();
        }
        let restored = if old_prefixes == new_prefixes {
            let mut n = 0;
            self.each_active_page(now(), |d, page| {
                d.remember(page);
                n += d.restore_kernel(page);
            });
            n
        } else {
            // A changed ban prefix re-keys every ban at once (rare: an
            // edit of [bans] ipv4_prefix/ipv6_prefix).
            let active = self.store.active_bans(now()).unwrap_or_default();
            self.remember(&active);
            if let Some(bans) = self.bans.as_mut() {
                let r = crate::plane::rekey(&active, old_prefixes, new_prefixes, now());
                if !r.add.is_empty() {
                    crate::plane::apply_rekey(bans, &r);
                }
            }
            self.restore_kernel(&active)
        };
        for (a, last) in self.remembered_list(now()) {
            self.engine.remember_endpoint(a, last);
        }
        // Trunks and peers known by name are never banned either, nor what
        // the fleet says is never banned.
        if let Some(n) = &self.names {
            for a in n.addresses() {
                self.engine.allow(IpNet::from(a), None);
            }
        }
        for n in &self.fleet_allowed {
            self.engine.allow(*n, None);
        }
        let msg = if p.applied.unchanged {
            format!(
                "policy applied; its ruleset is that of generation {}, which stays in force (no new generation); {restored} bans re-asserted in the kernel{restart}",
                p.applied.generation
            )
        } else {
            format!(
                "policy applied as generation {}; {restored} bans re-asserted in the kernel{restart}",
                p.applied.generation
            )
        };
        self.event("reload", None, msg.clone());
        msg
    }
}

/// The kernel's ban sets against the targets the store restored: every
/// element the store did not know, as a record to import.
pub(super) fn reconcile(
    known: &std::collections::HashSet<IpNet>,
    prefixes: Prefixes,
    t: Timestamp,
) -> Vec<BanRecord> {
    let mut imported = Vec::new();
    for (role, set) in crate::plane::ban_sets() {
        let Ok(entries) = voipwall_sys::nft::list_set(set, role.interval()) else {
            continue;
        };
        for e in entries {
            let target = voipwall_nft::sets::covered_by(role, e.net, prefixes);
            if known.contains(&target) {
                continue;
            }
            let left = e.expires.map_or(3_600_000, |s| s.saturating_mul(1000));
            let mut r = BanRecord::manual(
                target,
                "found in the kernel at start (kernel flood guard or a lost store)",
                t,
                left,
            );
            r.rule = "kernel".into();
            r.origin = "kernel".into();
            if e.expires.is_none() {
                r.end = BanRecord::PERMANENT;
            }
            imported.push(r);
        }
    }
    imported
}

/// `reload` and SIGHUP, off the engine thread: the one apply path
/// (validation, anti-lockout, generation, one transaction), then the new
/// engine's configuration.
pub(super) fn prepare_reload(
    config: &std::path::Path,
    catalog_dirs: &[PathBuf],
    state_dir: &std::path::Path,
) -> Result<Prepared, String> {
    let applied = crate::safety::apply_path(&crate::safety::ApplyRequest {
        config,
        catalog_dirs,
        state_dir,
        confirm: None,
        force: false,
        actor: "reload",
    })
    .map_err(|e| format!("policy refused, nothing changed: {e:#}"))?;
    let rules =
        crate::detection::rules(catalog_dirs).map_err(|e| format!("rules refused: {e:#}"))?;
    let facts = crate::context::host_facts();
    let mut cfg = crate::detection::engine_config(
        &applied.loaded.policy,
        rules,
        &crate::detection::engine_host(&applied.loaded.policy, &facts.addresses),
    );
    cfg.hash_seed = crate::detection::random_seed();
    Ok(Prepared {
        applied,
        config: cfg,
    })
}

/// Checks twice a second that our table is still in the kernel (one
/// `nft list tables`, a few ms, off the packet path); when it is gone the
/// engine thread restores it.
pub(super) fn watch_table(
    tx: Sender<Input>,
    waker: Waker,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("table-watch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if matches!(voipwall_sys::nft::table_exists(), Ok(false)) {
                    if tx.send(Input::TableGone).is_err() {
                        return;
                    }
                    waker.wake();
                    // Give the restore time before looking again.
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        })?;
    Ok(())
}
