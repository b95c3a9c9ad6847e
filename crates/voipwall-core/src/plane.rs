//! The one ban plane: every runtime verb (`ban`, `unban`, `block`,
//! `allow`, and their `--file` and `--delete` forms), whoever asks (the CLI
//! without a daemon, the daemon's control socket, the HTTP API), goes
//! protection check → placement → kernel here. The caller then records the
//! returned outcome through a `Ledger` (the store, and in the daemon the
//! engine too), so the CLI and the daemon take the same steps; the
//! namespace test `every_runtime_verb_leaves_the_same_state_with_or_without_a_daemon`
//! checks that they leave the same kernel, store and audit state. Feeds,
//! CrowdSec's decisions and the fleet's bans are origins of their own
//! (`crate::feeds`), not runtime verbs.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use voipwall_detect::Timestamp;
use voipwall_nft::protect::{HostProtection, Protected};
use voipwall_nft::sets::{Entry, Placement, Prefixes, Role, lift_candidates, place};
use voipwall_policy::{Policy, display_net, parse_net};
use voipwall_store::BanRecord;
use voipwall_sys::bans::Bans;

/// A runtime verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Ban,
    Unban,
    Block,
    Unblock,
    Allow,
    Disallow,
    /// Sets the remaining time of the active bans covering the target to
    /// the duration given, never shortening one.
    Extend,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Self::Ban => "ban",
            Self::Unban => "unban",
            Self::Block => "block",
            Self::Unblock => "unblock",
            Self::Allow => "allow",
            Self::Disallow => "disallow",
            Self::Extend => "extend",
        }
    }
}

/// One runtime operation: the control protocol's request and the CLI's
/// direct path take the same value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    pub verb: Verb,
    /// Addresses or networks, as typed (`file:line` labels in `labels`).
    pub targets: Vec<String>,
    /// Where each target came from, for errors (`abusers.txt:4`); empty for
    /// the command line.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Seconds; `None` is permanent.
    pub seconds: Option<u64>,
    /// Use the running policy's `[bans] default_ttl` instead of `seconds`
    /// (whoever executes the op knows the policy in force).
    #[serde(default)]
    pub default_ttl: bool,
    #[serde(default)]
    pub reason: String,
    /// IPv6 bans: the address alone, not its prefix.
    #[serde(default)]
    pub exact: bool,
    /// Override an overridable protection (allow entry, trusted network, peer).
    #[serde(default)]
    pub force: bool,
    /// Who asks, for the audit log: `cli (uid N)`, `api:<token name>`.
    #[serde(default = "cli")]
    pub actor: String,
}

/// The command line's name in the audit log and on lifted bans, the same
/// with or without a daemon (which names its socket peer's uid alike).
fn cli() -> String {
    cli_actor()
}

/// The command line as an actor: `cli (uid N)`.
pub fn cli_actor() -> String {
    format!("cli (uid {})", rustix::process::geteuid().as_raw())
}

impl Op {
    /// One target from the command line.
    pub fn simple(verb: Verb, target: &str, seconds: Option<u64>) -> Self {
        Self {
            verb,
            targets: vec![target.to_string()],
            labels: Vec::new(),
            seconds,
            reason: String::new(),
            exact: false,
            force: false,
            default_ttl: false,
            actor: cli(),
        }
    }
}

/// What one target became.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Done {
    /// Exactly what the kernel matches.
    pub covers: String,
    pub set: String,
    /// Registered endpoints inside it keep access (prefix bans).
    pub spares_known: bool,
    /// For unban: whether anything was lifted.
    pub changed: bool,
}

/// The reply of the control protocol for an [`Op`].
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    pub ok: bool,
    pub verb: Verb,
    pub done: Vec<Done>,
    pub seconds: Option<u64>,
    /// Set when `ok` is false: every problem, nothing was changed.
    #[serde(default)]
    pub error: Option<String>,
    /// Refused only because the target is not there (no ban to extend, no
    /// such list entry): the API answers 404.
    #[serde(default)]
    pub absent: bool,
}

/// What the caller records after the kernel took the operation.
#[derive(Default)]
pub struct Effects {
    pub bans: Vec<BanRecord>,
    /// Stored bans with their new end (`extend`).
    pub extended: Vec<BanRecord>,
    pub lifted: Vec<IpNet>,
    pub allowed: Vec<(IpNet, Option<Timestamp>)>,
    pub disallowed: Vec<IpNet>,
}

/// Where a runtime verb's effects are recorded: the store itself (the CLI
/// without a daemon) or the daemon (its store thread, its engine, its event
/// stream). [`run`] decides what is recorded; a ledger only writes it, so
/// the same verb leaves the same store and audit state whichever way it
/// came.
pub trait Ledger {
    /// Bans in force at `now` (lifting and extending look them up).
    fn active_bans(&mut self, now: Timestamp) -> Vec<BanRecord>;
    /// New bans (and blocks).
    fn record_bans(&mut self, bans: &[BanRecord]);
    /// A target's stored bans end now, lifted by `by`.
    fn lift(&mut self, target: &IpNet, now: Timestamp, by: &str);
    /// A stored ban's end moved (`ban` as stored, with its new end).
    fn extend(&mut self, ban: &BanRecord);
    /// A runtime allow (the engine must not ban inside it).
    fn allowed(&mut self, _net: IpNet, _until: Option<Timestamp>) {}
    /// A runtime allow removed.
    fn disallowed(&mut self, _net: &IpNet) {}
    /// One audit line.
    fn audit(&mut self, now: Timestamp, actor: &str, action: &str, detail: &str);
    /// One event (history, followers).
    fn event(&mut self, now: Timestamp, kind: &str, addr: Option<String>, detail: String);
}

/// The CLI's side of a runtime verb without a daemon: the store itself.
/// A write that fails is kept and reported by [`StoreLedger::finish`] (the
/// kernel already has the change).
pub struct StoreLedger {
    store: voipwall_store::Store,
    error: Option<voipwall_store::StoreError>,
}

impl StoreLedger {
    pub fn new(store: voipwall_store::Store) -> Self {
        Self { store, error: None }
    }

    /// The first store write that failed, if one did.
    pub fn finish(self) -> Result<(), voipwall_store::StoreError> {
        self.error.map_or(Ok(()), Err)
    }

    fn keep<T>(&mut self, r: Result<T, voipwall_store::StoreError>) {
        if let Err(e) = r
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }
}

impl Ledger for StoreLedger {
    fn active_bans(&mut self, now: Timestamp) -> Vec<BanRecord> {
        let r = self.store.active_bans(now);
        match r {
            Ok(v) => v,
            Err(e) => {
                self.keep::<()>(Err(e));
                Vec::new()
            }
        }
    }

    fn record_bans(&mut self, bans: &[BanRecord]) {
        let r = self.store.record_bans(bans);
        self.keep(r);
    }

    fn lift(&mut self, target: &IpNet, now: Timestamp, by: &str) {
        let r = self.store.lift(target, now, by);
        self.keep(r);
    }

    fn extend(&mut self, ban: &BanRecord) {
        let r = self.store.set_ban_end(&ban.target, ban.start, ban.end);
        self.keep(r);
    }

    fn audit(&mut self, now: Timestamp, actor: &str, action: &str, detail: &str) {
        let r = self.store.audit(now, actor, action, detail);
        self.keep(r);
    }

    fn event(&mut self, now: Timestamp, kind: &str, addr: Option<String>, detail: String) {
        let r = self.store.record_events(&[voipwall_store::EventRecord {
            at: now,
            kind: kind.into(),
            addr,
            detail,
        }]);
        self.keep(r);
    }
}

/// A runtime verb, whoever asks: checked, placed and applied by
/// [`execute`]; then stored bans inside or around an unbanned target are
/// lifted too, `extend` moves the ends of the bans covering its target, and
/// everything is recorded in `ledger` with one audit line and one event.
pub fn run(
    op: &Op,
    policy: Option<&Policy>,
    guard: &Protected,
    bans: &mut Bans,
    ledger: &mut dyn Ledger,
    now: Timestamp,
) -> Outcome {
    let (mut outcome, fx) = if op.verb == Verb::Extend {
        extend_bans(op, policy, guard, bans, ledger, now)
    } else {
        execute(op, policy, guard, bans, now)
    };
    if !outcome.ok {
        return outcome;
    }
    let prefixes = prefixes(policy);
    // `unban`: stored bans inside or around a lifted target go too (a /24
    // unban lifts the detected /32s in it), in the kernel and the store;
    // runtime blocks are not bans (`block --delete` lifts those). `unblock`
    // lifts the block alone.
    let active = if op.verb == Verb::Unban && !fx.lifted.is_empty() {
        ledger.active_bans(now)
    } else {
        Vec::new()
    };
    for net in &fx.lifted {
        let covering = active.iter().filter(|b| {
            b.rule != "block"
                && b.target != *net
                && (b.target.contains(&net.addr()) || net.contains(&b.target.addr()))
        });
        for b in covering {
            if bans
                .delete(&place_record(b.target, prefixes))
                .unwrap_or(false)
                && let Some(d) = outcome.done.first_mut()
            {
                d.changed = true;
            }
            ledger.lift(&b.target, now, &op.actor);
        }
        ledger.lift(net, now, &op.actor);
    }
    if !fx.bans.is_empty() {
        ledger.record_bans(&fx.bans);
    }
    for b in &fx.extended {
        ledger.extend(b);
    }
    for (net, until) in &fx.allowed {
        ledger.allowed(*net, *until);
    }
    for net in &fx.disallowed {
        ledger.disallowed(net);
    }
    let word = op.verb.word();
    let detail = op.targets.join(" ");
    ledger.audit(now, &op.actor, word, &detail);
    let why = if op.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", op.reason)
    };
    ledger.event(
        now,
        word,
        op.targets.first().cloned(),
        format!("{word} {detail}{why}"),
    );
    outcome
}

/// `extend TARGET --for D`: every active ban covering the target (its
/// address, or the network as typed) ends no sooner than `now + D`; a
/// longer one, or a permanent one, is left as it is.
fn extend_bans(
    op: &Op,
    policy: Option<&Policy>,
    guard: &Protected,
    bans: &mut Bans,
    ledger: &mut dyn Ledger,
    now: Timestamp,
) -> (Outcome, Effects) {
    let prefixes = prefixes(policy);
    let Some(secs) = op.seconds else {
        return (
            refuse(op.verb, &["extend needs a duration (--for)".into()]),
            Effects::default(),
        );
    };
    let until = now.plus(secs.saturating_mul(1000));
    let active = ledger.active_bans(now);
    let mut errors = Vec::new();
    let mut fx = Effects::default();
    let mut done = Vec::new();
    let mut kernel = Vec::new();
    let mut missing = 0;
    for t in &op.targets {
        let net = match parse_net(t) {
            Ok(n) => n,
            Err(e) => {
                errors.push(format!("`{t}`: {e}"));
                continue;
            }
        };
        // Observed bans (observe mode) were never in the kernel: extending
        // one must not make it real.
        let covering: Vec<&BanRecord> = active
            .iter()
            .filter(|b| {
                b.origin != "observe"
                    && b.target.contains(&net.addr())
                    && b.target.prefix_len() <= net.prefix_len()
            })
            .collect();
        if covering.is_empty() {
            errors.push(format!("no ban in force covers {}", display_net(&net)));
            missing += 1;
            continue;
        }
        for b in covering {
            let p = place_record(b.target, prefixes);
            // What is protected now (a trunk since the ban, an allow) is
            // not banned longer, as it would not be banned anew.
            if let Some(hit) = guard.hit(&p.covers)
                && !(op.force && hit.overridable)
            {
                errors.push(format!(
                    "refusing to extend the ban of {}: it covers {}",
                    display_net(&b.target),
                    hit.why
                ));
                continue;
            }
            let longer = b.is_permanent() || b.end >= until;
            if !longer {
                let mut nb = b.clone();
                nb.end = until;
                kernel.push((p, Some(secs.saturating_mul(1000))));
                fx.extended.push(nb);
            }
            done.push(Done {
                covers: display_net(&b.target),
                set: p.set().into(),
                spares_known: p.spares_known(),
                changed: !longer,
            });
        }
    }
    if !errors.is_empty() {
        let mut o = refuse(op.verb, &errors);
        o.absent = missing == errors.len();
        return (o, Effects::default());
    }
    if let Err(e) = bans.add_many(&kernel) {
        return (
            refuse(op.verb, &[format!("the kernel refused: {e}")]),
            Effects::default(),
        );
    }
    (
        Outcome {
            ok: true,
            verb: op.verb,
            done,
            seconds: Some(secs),
            error: None,
            absent: false,
        },
        fx,
    )
}

/// The prefixes the running policy masks prefix bans with.
pub fn prefixes(policy: Option<&Policy>) -> Prefixes {
    policy.map_or_else(Prefixes::default, |p| Prefixes {
        v4: p.bans.ipv4_prefix,
        v6: p.bans.ipv6_prefix,
    })
}

/// What is protected right now: the policy, the host's addresses, live
/// management sessions, runtime allow entries, and the current addresses
/// of names the policy trusts.
pub fn protected(policy: Option<&Policy>, named: Vec<(IpAddr, String)>) -> Protected {
    let sshd = crate::context::host_facts()
        .sshd_ports
        .unwrap_or_else(|| vec![22]);
    let host = HostProtection {
        own: voipwall_sys::nft::host_addresses(),
        sessions: crate::safety::session_sources(policy, &sshd),
        runtime_allow: voipwall_sys::bans::runtime_allows(),
        named,
        infrastructure: crate::host::infrastructure(policy),
    };
    Protected::new(policy, &host)
}

fn refuse(verb: Verb, errors: &[String]) -> Outcome {
    Outcome {
        ok: false,
        verb,
        done: Vec::new(),
        seconds: None,
        error: Some(format!("{}\nnothing was changed", errors.join("\n"))),
        absent: false,
    }
}

/// Checks, places and applies `op`. All targets are checked first; one
/// refusal changes nothing.
pub fn execute(
    op: &Op,
    policy: Option<&Policy>,
    guard: &Protected,
    bans: &mut Bans,
    now: Timestamp,
) -> (Outcome, Effects) {
    let prefixes = prefixes(policy);
    let seconds = if op.default_ttl {
        Some(policy.map_or(3600, |p| p.bans.default_ttl))
    } else {
        op.seconds
    };
    let mut errors = Vec::new();
    let mut placed: Vec<(IpNet, Placement)> = Vec::new();
    // Unban lifts every placement the kernel may hold (see lift_candidates).
    let mut unbans: Vec<IpNet> = Vec::new();
    for (i, t) in op.targets.iter().enumerate() {
        let at = op
            .labels
            .get(i)
            .map(|l| format!("{l}: "))
            .unwrap_or_default();
        let net = match parse_net(t) {
            Ok(n) => n,
            Err(e) => {
                errors.push(format!("{at}`{t}`: {e}"));
                continue;
            }
        };
        let entry = match op.verb {
            Verb::Ban => Entry::Ban {
                target: net,
                exact: op.exact,
            },
            Verb::Block | Verb::Unblock => Entry::Block(net),
            Verb::Allow | Verb::Disallow => Entry::Allow(net),
            Verb::Unban | Verb::Extend => {
                unbans.push(net);
                continue;
            }
        };
        let p = place(entry, prefixes);
        if matches!(op.verb, Verb::Ban | Verb::Block)
            && let Some(hit) = guard.hit(&p.covers)
            && !(op.force && hit.overridable)
        {
            let widened = if p.covers == net {
                String::new()
            } else {
                format!(
                    " (the /{} of {}; --exact bans the address alone)",
                    p.covers.prefix_len(),
                    display_net(&net)
                )
            };
            errors.push(format!(
                "{at}refusing to {} {}{widened}: it covers {}{}",
                op.verb.word(),
                display_net(&p.covers),
                hit.why,
                if hit.overridable {
                    " (--force overrides)"
                } else {
                    ""
                }
            ));
            continue;
        }
        if op.verb == Verb::Allow && p.covers.prefix_len() == 0 {
            errors.push(format!(
                "{at}refusing to allow {}: every address would skip every ban and detection (use `voipwall disable` to switch voipwall off)",
                display_net(&p.covers)
            ));
            continue;
        }
        placed.push((net, p));
    }
    if !errors.is_empty() {
        return (refuse(op.verb, &errors), Effects::default());
    }
    let ttl_ms = seconds.map(|s| s.saturating_mul(1000));
    let mut effects = Effects::default();
    let mut done = Vec::new();
    let result = match op.verb {
        Verb::Ban | Verb::Block | Verb::Allow => {
            let entries: Vec<(Placement, Option<u64>)> =
                placed.iter().map(|(_, p)| (*p, ttl_ms)).collect();
            bans.add_many(&entries).map(|()| {
                for (_, p) in &placed {
                    done.push(Done {
                        covers: display_net(&p.covers),
                        set: p.set().into(),
                        spares_known: p.spares_known(),
                        changed: true,
                    });
                    match op.verb {
                        Verb::Allow => effects
                            .allowed
                            .push((p.covers, ttl_ms.map(|ms| now.plus(ms)))),
                        _ => {
                            let mut r =
                                BanRecord::manual(p.covers, &op.reason, now, ttl_ms.unwrap_or(0));
                            if ttl_ms.is_none() {
                                r.end = BanRecord::PERMANENT;
                            }
                            if op.verb == Verb::Block {
                                r.rule = "block".into();
                            }
                            effects.bans.push(r);
                        }
                    }
                }
            })
        }
        // Extend goes through `run` (it needs the stored bans).
        Verb::Extend => Ok(()),
        Verb::Unban => {
            let mut r = Ok(());
            for net in &unbans {
                let mut sets = Vec::new();
                for c in lift_candidates(*net, prefixes) {
                    match bans.delete(&c) {
                        Ok(true) => sets.push(format!("{} ({})", c.set(), display_net(&c.covers))),
                        Ok(false) => {}
                        Err(e) => r = Err(e),
                    }
                }
                effects.lifted.push(*net);
                done.push(Done {
                    covers: display_net(net),
                    set: sets.join(", "),
                    spares_known: false,
                    changed: !sets.is_empty(),
                });
            }
            r
        }
        Verb::Unblock | Verb::Disallow => {
            let mut r = Ok(());
            for (net, p) in &placed {
                match bans.delete(p) {
                    Ok(held) => {
                        if op.verb == Verb::Disallow {
                            effects.disallowed.push(p.covers);
                        } else {
                            effects.lifted.push(p.covers);
                        }
                        done.push(Done {
                            covers: display_net(net),
                            set: p.set().into(),
                            spares_known: false,
                            changed: held,
                        });
                    }
                    Err(e) => r = Err(e),
                }
            }
            r
        }
    };
    if let Err(e) = result {
        return (
            refuse(op.verb, &[format!("the kernel refused: {e}")]),
            Effects::default(),
        );
    }
    if matches!(op.verb, Verb::Unblock | Verb::Disallow) && done.iter().all(|d| !d.changed) {
        let list = if op.verb == Verb::Disallow {
            "runtime allow"
        } else {
            "runtime block"
        };
        let mut o = refuse(
            op.verb,
            &[format!(
                "{} is not in the {list} list",
                op.targets.join(", ")
            )],
        );
        o.absent = true;
        return (o, Effects::default());
    }
    (
        Outcome {
            ok: true,
            verb: op.verb,
            done,
            seconds,
            error: None,
            absent: false,
        },
        effects,
    )
}

/// Where a ban the engine or the store holds goes in the kernel.
pub fn place_record(target: IpNet, prefixes: Prefixes) -> Placement {
    place(
        Entry::Ban {
            target,
            exact: true,
        },
        prefixes,
    )
}

/// What re-keying the stored bans for a changed ban prefix does.
#[derive(Debug, Default)]
pub struct Rekey {
    /// Each moved ban at its new place, with its remaining time.
    pub add: Vec<(Placement, Option<u64>)>,
    /// The elements the moved bans leave that no active ban still needs.
    pub stale: Vec<Placement>,
}

/// The ban prefix changed (`[bans] ipv4_prefix` / `ipv6_prefix`): every
/// active ban whose placement moves goes to its new place, and the element
/// it leaves is deleted unless another ban's new placement is the same
/// element (same set, same key: `2001:db8:200::/48` under a /48 prefix is
/// the element `2001:db8:200::` that `2001:db8:200::/64` had under /64). A
/// prefix-set element keyed by the old mask would otherwise be read with the
/// new one: a wider prefix would widen the ban.
pub fn rekey(active: &[BanRecord], old: Prefixes, new: Prefixes, t: Timestamp) -> Rekey {
    let live: Vec<&BanRecord> = active.iter().filter(|b| b.origin != "observe").collect();
    let keep: std::collections::HashSet<(&'static str, voipwall_nft::sets::Key)> = live
        .iter()
        .map(|b| {
            let p = place_record(b.target, new);
            (p.set(), p.key)
        })
        .collect();
    let mut r = Rekey::default();
    for b in live {
        let (from, to) = (place_record(b.target, old), place_record(b.target, new));
        if from != to {
            r.add
                .push((to, (!b.is_permanent()).then(|| b.end.since(t))));
            if !keep.contains(&(from.set(), from.key)) {
                r.stale.push(from);
            }
        }
    }
    r
}

/// Carries out a [`Rekey`]: the new elements first; the stale ones only
/// when the kernel took the new ones (a ban is never lifted by a failed
/// re-key). Returns how many stale elements were deleted.
pub fn apply_rekey(bans: &mut Bans, r: &Rekey) -> usize {
    if let Err(e) = bans.add_many(&r.add) {
        tracing::error!(error = %e, "Re-keyed bans were refused by the kernel; their old elements stay.");
        return 0;
    }
    let mut deleted = 0;
    for p in &r.stale {
        match bans.delete(p) {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, set = p.set(), "A ban's old element could not be deleted.");
            }
        }
    }
    tracing::info!(
        moved = r.add.len(),
        deleted,
        "The ban prefix changed: stored bans were re-keyed and their old elements deleted."
    );
    deleted
}

/// The ban sets, with the role each holds (for listing and import).
pub fn ban_sets() -> impl Iterator<Item = (Role, &'static str)> {
    Role::BANS.into_iter().flat_map(|r| {
        [voipwall_nft::Family::V4, voipwall_nft::Family::V6]
            .into_iter()
            .map(move |f| (r, r.set(f)))
    })
}

/// Prints an outcome for the operator (both paths).
pub fn render(o: &Outcome, reason: &str) -> String {
    let dur = o.seconds.map_or_else(
        || "permanently".to_string(),
        |s| format!("for {}", voipwall_policy::format_duration(s)),
    );
    let mut s = String::new();
    match o.verb {
        Verb::Ban | Verb::Block if o.done.len() > 1 => {
            s.push_str(&format!(
                "{}ed {} entries {dur} ({reason})\n",
                if o.verb == Verb::Ban { "bann" } else { "block" },
                o.done.len()
            ));
        }
        Verb::Ban | Verb::Block | Verb::Allow => {
            for d in &o.done {
                s.push_str(&format!(
                    "{} {} {dur}{} in {}{}\n",
                    match o.verb {
                        Verb::Ban => "banned",
                        Verb::Block => "blocked",
                        _ => "allowed",
                    },
                    d.covers,
                    if o.verb == Verb::Allow {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    },
                    d.set,
                    if d.spares_known {
                        "; registered endpoints in it are spared"
                    } else {
                        ""
                    }
                ));
            }
        }
        Verb::Extend => {
            for d in &o.done {
                if d.changed {
                    s.push_str(&format!(
                        "extended the ban of {} to end {dur} from now\n",
                        d.covers
                    ));
                } else {
                    s.push_str(&format!(
                        "the ban of {} already lasts longer; left as it is\n",
                        d.covers
                    ));
                }
            }
        }
        Verb::Unban => {
            for d in &o.done {
                if d.changed {
                    s.push_str(&format!("unbanned {} (from {})\n", d.covers, d.set));
                } else {
                    s.push_str(&format!("no ban in the kernel covers {}\n", d.covers));
                }
            }
        }
        Verb::Unblock | Verb::Disallow => {
            for d in &o.done {
                s.push_str(&format!(
                    "removed {} from the runtime {} list\n",
                    d.covers,
                    if o.verb == Verb::Disallow {
                        "allow"
                    } else {
                        "block"
                    }
                ));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19 (review): a /64 and a /48 of the same addresses, the prefix
    /// changed from 64 to 48. The /64 leaves the prefix set for an interval
    /// of exactly itself; its old element is the /48's new one, so it is
    /// kept; the /48 leaves its interval, which is deleted.
    #[test]
    fn a_rekey_never_deletes_an_element_another_ban_now_holds() {
        let t = Timestamp(1_000_000);
        let ban = |n: &str| BanRecord::manual(n.parse().unwrap(), "test", t, 3_600_000);
        let active = [
            ban("2001:db8:200::/64"),
            ban("2001:db8:200::/48"),
            ban("203.0.113.9/32"),
        ];
        let r = rekey(
            &active,
            Prefixes { v4: 24, v6: 64 },
            Prefixes { v4: 24, v6: 48 },
            t,
        );
        let added: Vec<(Role, String)> = r
            .add
            .iter()
            .map(|(p, _)| (p.role, p.covers.to_string()))
            .collect();
        assert_eq!(
            added,
            [
                (Role::BanNet, "2001:db8:200::/64".to_string()),
                (Role::BanPrefix, "2001:db8:200::/48".to_string())
            ]
        );
        assert!(r.add.iter().all(|(_, ttl)| *ttl == Some(3_600_000)));
        let stale: Vec<(Role, String)> = r
            .stale
            .iter()
            .map(|p| (p.role, p.covers.to_string()))
            .collect();
        assert_eq!(stale, [(Role::BanNet, "2001:db8:200::/48".to_string())]);
        // Nothing moves when the prefix does not change.
        let same = rekey(&active, Prefixes::default(), Prefixes::default(), t);
        assert!(same.add.is_empty() && same.stale.is_empty());
    }
}
