//! Never lock the operator out: the anti-lockout check before every apply,
//! commit-confirmed apply with a detached rollback timer, `rollback`, and
//! the lock file that makes `disable` refuse.
//!
//! Generations live in the store (`/var/lib/voipwall/state.db`, table
//! `generations`): each apply records the exact script it ran, so a rollback
//! re-runs the previous one (chains and static sets back as they were; bans
//! and known endpoints, in dynamic sets, untouched).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use voipwall_nft::Ruleset;
use voipwall_policy::Policy;
use voipwall_store::{NewGeneration, Store};
use voipwall_sys::nft;

use crate::Invalid;

/// Where the lock file is, unless `VOIPWALL_LOCK_FILE` says otherwise.
const LOCK_FILE: &str = "/etc/voipwall/locked";

/// Generations kept in the store.
pub const KEEP_GENERATIONS: u32 = 20;

pub fn lock_file() -> PathBuf {
    std::env::var_os("VOIPWALL_LOCK_FILE").map_or_else(|| PathBuf::from(LOCK_FILE), PathBuf::from)
}

/// `disable` refuses while the lock file exists; its text is the reason.
pub fn refuse_if_locked() -> anyhow::Result<()> {
    let p = lock_file();
    if let Ok(reason) = std::fs::read_to_string(&p) {
        let reason = reason.trim();
        return Err(Invalid(format!(
            "error: refused: {} exists{}; the firewall must stay on (remove the file to allow disable)",
            p.display(),
            if reason.is_empty() { String::new() } else { format!(" (\"{reason}\")") }
        ))
        .into());
    }
    Ok(())
}

/// Established TCP sessions to `ports`, from the kernel's socket tables.
pub fn sessions(ports: &[u16]) -> Vec<voipwall_host::lockout::Session> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    voipwall_host::lockout::sessions(&read("/proc/net/tcp"), &read("/proc/net/tcp6"), ports)
}

/// The interface of each local address (rtnetlink, read once).
fn interfaces_by_address() -> std::collections::HashMap<IpAddr, String> {
    voipwall_sys::link::interfaces()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| {
            let name = i.name;
            i.addrs.into_iter().map(move |n| (n.addr(), name.clone()))
        })
        .collect()
}

/// The anti-lockout check on this host's live sessions.
pub fn lockout_problems(policy: &Policy, rs: &Ruleset, sshd: &[u16]) -> Vec<String> {
    let ports = voipwall_host::lockout::management_ports(policy, sshd);
    let sessions = sessions(&ports);
    let ifaces = if sessions.is_empty() {
        Default::default()
    } else {
        interfaces_by_address()
    };
    voipwall_host::lockout::problems(policy, rs, &ports, &sessions, &ifaces)
}

/// The sources of live management sessions (a ban of one is refused).
pub fn session_sources(policy: Option<&Policy>, sshd: &[u16]) -> Vec<IpAddr> {
    let ports = match policy {
        Some(p) => voipwall_host::lockout::management_ports(p, sshd),
        None => sshd.to_vec(),
    };
    let mut v: Vec<IpAddr> = sessions(&ports)
        .into_iter()
        .map(|s| s.remote)
        .filter(|a| !a.is_loopback())
        .collect();
    v.sort();
    v.dedup();
    v
}

pub fn state_store(state_dir: &Path) -> anyhow::Result<Store> {
    let db = state_dir.join("state.db");
    let (s, opened) =
        Store::open(&db).with_context(|| format!("opening the store {}", db.display()))?;
    if let voipwall_store::Opened::Recovered { moved_to, reason } = opened {
        eprintln!(
            "warning: the store {} could not be read ({reason}); it was moved to {} and a fresh one started (earlier generations are gone)",
            db.display(),
            moved_to.display()
        );
    }
    Ok(s)
}

/// The store of `state_dir` for a verb that must not create one (reading
/// generations, confirming, rolling back): when there is none, a clear
/// error and nothing written.
pub fn existing_store(state_dir: &Path) -> anyhow::Result<Store> {
    let db = state_dir.join("state.db");
    if !db.exists() {
        return Err(Invalid(format!(
            "error: there is no store at {}: nothing was applied with this state directory (give the --state-dir that `apply` used)",
            db.display()
        ))
        .into());
    }
    state_store(state_dir)
}

pub use crate::clock::now;

/// Before the first generation, keep what the kernel has, so that a
/// rollback can return to it: nothing (no table), or a snapshot.
fn ensure_baseline(store: &mut Store) -> anyhow::Result<()> {
    if !store.generations(1)?.is_empty() {
        return Ok(());
    }
    let script = if nft::table_exists().unwrap_or(false) {
        let listing = nft::list_table().context("listing table inet voipwall")?;
        format!("delete table inet voipwall\n{listing}")
    } else {
        "delete table inet voipwall\n".to_string()
    };
    store.add_generation(
        &NewGeneration {
            at: now(),
            script: &script,
            policy: "(before voipwall's first recorded apply)",
            status: "snapshot",
            deadline: None,
            ir: None,
            inputs: None,
        },
        KEEP_GENERATIONS,
    )?;
    Ok(())
}

/// Records the script about to be applied; with `confirm`, first starts a
/// detached timer that rolls back unless `voipwall confirm` comes in time.
/// The timer starts before the apply, so no moment exists in which the new
/// ruleset is in place and nothing will take it back. Returns the generation.
/// The caller holds the store open (opening one runs an integrity check
/// over the whole file, megabytes once a big policy is recorded).
#[allow(clippy::too_many_arguments)]
fn begin_apply_in(
    store: &mut Store,
    state_dir: &Path,
    script: &str,
    policy: &str,
    ir: Option<&str>,
    inputs: Option<&str>,
    confirm: Option<Duration>,
    actor: &str,
) -> anyhow::Result<i64> {
    ensure_baseline(store)?;
    let (status, deadline) = match confirm {
        Some(d) => (
            "pending",
            Some(now().plus(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        ),
        None => ("applied", None),
    };
    let id = store.add_generation(
        &NewGeneration {
            at: now(),
            script,
            policy,
            status,
            deadline,
            ir,
            inputs,
        },
        KEEP_GENERATIONS,
    )?;
    store.audit(
        now(),
        actor,
        "apply",
        &format!("generation {id} {status} from {policy}"),
    )?;
    if let Some(deadline) = deadline {
        // setsid -f: the timer survives the CLI being killed and the SSH
        // session (and its process group) going away.
        let exe = std::env::current_exe().context("finding voipwall's own path")?;
        std::process::Command::new("setsid")
            .arg("-f")
            .arg(exe)
            .args(["rollback-timer", "--state-dir"])
            .arg(state_dir)
            .args([
                "--generation",
                &id.to_string(),
                "--deadline-ms",
                &deadline.0.to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("starting the rollback timer (setsid)")?;
    }
    Ok(id)
}

/// After the apply: a failed one is marked so its timer stands down.
pub fn finish_apply(
    state_dir: &Path,
    generation: i64,
    ok: bool,
    took: Duration,
) -> anyhow::Result<()> {
    finish_apply_in(&mut state_store(state_dir)?, generation, ok, took)
}

/// [`finish_apply`] on a store the caller holds open.
fn finish_apply_in(
    store: &mut Store,
    generation: i64,
    ok: bool,
    took: Duration,
) -> anyhow::Result<()> {
    if ok {
        store.set_generation_took(
            generation,
            u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        )?;
    } else {
        store.set_generation_status(generation, "failed")?;
    }
    Ok(())
}

/// The detached timer: waits for the deadline; if the generation is still
/// pending, applies the one before it.
pub fn rollback_timer(state_dir: &Path, generation: i64, deadline_ms: u64) -> anyhow::Result<()> {
    // One connection for the whole wait: opening runs an integrity check.
    let mut store = state_store(state_dir)?;
    loop {
        let gens = store.generations(KEEP_GENERATIONS as usize)?;
        let Some(g) = gens.iter().find(|g| g.id == generation) else {
            return Ok(());
        };
        if g.status != "pending" {
            return Ok(());
        }
        if now().0 >= deadline_ms {
            return roll_back_from(&mut store, generation, None, "rolled-back", "timer")
                .map(|_| ());
        }
        std::thread::sleep(Duration::from_millis(100).min(Duration::from_millis(
            deadline_ms.saturating_sub(now().0).max(1),
        )));
    }
}

/// Applies the generation before `from` (or generation `to`) and marks
/// `from` with `status`.
fn roll_back_from(
    store: &mut Store,
    from: i64,
    to: Option<i64>,
    status: &str,
    actor: &str,
) -> anyhow::Result<i64> {
    let gens = store.generations(KEEP_GENERATIONS as usize)?;
    let prev = match to {
        Some(to) => {
            let Some(g) = gens.iter().find(|g| g.id == to) else {
                return Err(Invalid(format!(
                    "error: no generation {to} is recorded (voipwall generations lists them)"
                ))
                .into());
            };
            if to == from {
                return Err(Invalid(format!("error: generation {to} is the one in force")).into());
            }
            if g.status == "failed" {
                return Err(
                    Invalid(format!("error: generation {to} failed to apply; not again")).into(),
                );
            }
            g
        }
        None => {
            let Some(g) = gens.iter().find(|g| {
                g.id < from && !matches!(g.status.as_str(), "rolled-back" | "pending" | "failed")
            }) else {
                return Err(Invalid("error: no earlier generation to roll back to".into()).into());
            };
            g
        }
    };
    nft::apply_script(&prev.script).context("applying the previous generation")?;
    // The ban prefix the rolled-back generation had (a changed
    // `ipv6_prefix` under `apply --confirm` that was not confirmed): the
    // stored bans go back to the previous generation's placement.
    let prefixes =
        |g: &voipwall_store::Generation| generation_ruleset(g).map(|rs| rs.ban_prefixes());
    if let (Some(old), Some(new)) = (
        gens.iter().find(|g| g.id == from).and_then(prefixes),
        prefixes(prev),
    ) && old != new
    {
        rekey_bans(store, old, new);
    }
    store.set_generation_status(from, status)?;
    // Every generation between the one applied now and `from` is no longer
    // in force either (`--to N` over several): the store's reader of the
    // generation in force must name the one the kernel runs.
    for g in gens.iter().filter(|g| {
        g.id > prev.id
            && g.id < from
            && matches!(
                g.status.as_str(),
                "applied" | "confirmed" | "pending" | "snapshot"
            )
    }) {
        store.set_generation_status(g.id, status)?;
    }
    let new_status = if prev.status == "snapshot" {
        "snapshot"
    } else {
        "applied"
    };
    store.set_generation_status(prev.id, new_status)?;
    store.audit(
        now(),
        actor,
        "rollback",
        &format!("generation {from} {status}; generation {} back", prev.id),
    )?;
    Ok(prev.id)
}

/// What the daemon applies at start: the newest generation that was applied
/// or confirmed (a generation still pending, e.g. the box rebooted inside
/// its confirm window, counts as not confirmed and is marked rolled back).
/// `None` when there is none: the daemon compiles the policy instead.
pub fn boot_generation(store: &mut Store) -> anyhow::Result<Option<voipwall_store::Generation>> {
    // The generation in force, once every pending one before it was
    // marked rolled back (a pending generation is newest when it exists).
    while let Some(g) = store.in_force()? {
        match g.status.as_str() {
            "pending" => {
                store.set_generation_status(g.id, "rolled-back")?;
                store.audit(
                    now(),
                    "daemon",
                    "rollback",
                    &format!("generation {} was pending at start", g.id),
                )?;
            }
            "applied" | "confirmed" => return Ok(Some(g)),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The generation in force now (`Store::in_force`, the one reader).
pub fn running_generation(store: &Store) -> Option<voipwall_store::Generation> {
    store.in_force().ok().flatten()
}

/// The compiled ruleset a generation recorded, if it did.
pub fn generation_ruleset(g: &voipwall_store::Generation) -> Option<Ruleset> {
    serde_json::from_str(g.ir.as_deref()?).ok()
}

/// Whether the policy file compiles to the script of the generation in
/// force: `Some((generation, same))`, `None` when none is recorded. The
/// file's own errors are returned as errors.
pub fn file_vs_running(
    config: &Path,
    catalog_dirs: &[PathBuf],
    state_dir: &Path,
) -> anyhow::Result<Option<(i64, bool)>> {
    if !state_dir.join("state.db").exists() {
        return Ok(None);
    }
    let Some(g) = running_generation(&state_store(state_dir)?) else {
        return Ok(None);
    };
    let (id, script) = (g.id, g.script);
    let l = crate::context::load_policy(config, catalog_dirs, &crate::context::host_facts())?;
    let names = crate::context::resolve_names_or_last_good(&l.policy, state_dir);
    let ours = voipwall_nft::render(&crate::context::compile_resolved(&l.policy, names.resolved));
    Ok(Some((id, ours == script)))
}

/// `voipwall confirm`: keeps the pending generation.
pub fn confirm(state_dir: &Path) -> anyhow::Result<String> {
    confirm_as(state_dir, "cli")
}

/// `confirm` for `actor` (the audit log's name: `cli`, `api:NAME`).
pub fn confirm_as(state_dir: &Path, actor: &str) -> anyhow::Result<String> {
    let mut store = existing_store(state_dir)?;
    let Some(g) = store
        .generations(KEEP_GENERATIONS as usize)?
        .into_iter()
        .find(|g| g.status == "pending")
    else {
        return Err(Invalid("error: nothing is waiting for confirmation".into()).into());
    };
    if g.deadline.is_some_and(|d| now() >= d) {
        return Err(Invalid(format!(
            "error: generation {} was not confirmed in time and is being rolled back",
            g.id
        ))
        .into());
    }
    store.set_generation_status(g.id, "confirmed")?;
    store.audit(now(), actor, "confirm", &format!("generation {}", g.id))?;
    Ok(format!("confirmed generation {}; it stays", g.id))
}

/// `voipwall rollback`: back one generation now, or to generation `to`
/// (`--to N`), for `actor`.
pub fn rollback(state_dir: &Path, to: Option<i64>, actor: &str) -> anyhow::Result<String> {
    let mut store = existing_store(state_dir)?;
    let Some(cur) = store.in_force()? else {
        return Err(Invalid("error: no generation recorded".into()).into());
    };
    let back = roll_back_from(&mut store, cur.id, to, "rolled-back", actor)?;
    Ok(format!(
        "rolled back generation {}; generation {back} is applied",
        cur.id
    ))
}

/// What generation `id` changed against the one recorded before it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct GenerationDiff {
    /// The generation.
    pub generation: i64,
    /// The one it is compared with (none: the first recorded).
    pub against: Option<i64>,
    /// Lines of the nft script only in `against`.
    pub removed: Vec<String>,
    /// Lines only in `generation`.
    pub added: Vec<String>,
}

/// [`GenerationDiff`] of generation `id` (the CLI's `generations --diff`
/// and the API's).
pub fn generation_diff(store: &Store, id: i64) -> anyhow::Result<GenerationDiff> {
    let gens = store.generations(KEEP_GENERATIONS as usize)?;
    let Some(i) = gens.iter().position(|g| g.id == id) else {
        return Err(Invalid(format!(
            "error: no generation {id} (voipwall generations lists them)"
        ))
        .into());
    };
    let before = gens.get(i + 1);
    let (removed, added) = line_diff(before.map_or("", |g| g.script.as_str()), &gens[i].script);
    Ok(GenerationDiff {
        generation: id,
        against: before.map(|g| g.id),
        removed: removed.into_iter().map(str::to_string).collect(),
        added: added.into_iter().map(str::to_string).collect(),
    })
}

/// Lines only in `old` and lines only in `new` (scripts are sorted and
/// deterministic, so a line set comparison reads well), in script order.
pub fn line_diff<'a>(old: &'a str, new: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
    let o: std::collections::HashSet<&str> = old.lines().collect();
    let n: std::collections::HashSet<&str> = new.lines().collect();
    (
        old.lines().filter(|l| !n.contains(l)).collect(),
        new.lines().filter(|l| !o.contains(l)).collect(),
    )
}

/// Boots as the daemon saw them: (boot id, boot time in ms since the epoch).
type BootRecord = (String, u64);

/// Safe mode's decision, from the boot records (oldest first, the current
/// boot last) and the current uptime: how long to hold the policy back.
pub fn safe_mode_decision(
    sm: &voipwall_policy::SafeMode,
    boots: &[BootRecord],
    uptime_s: u64,
) -> Option<u64> {
    if !sm.enabled || boots.len() < 2 {
        return None;
    }
    let (cur, prev) = (&boots[boots.len() - 1], &boots[boots.len() - 2]);
    let gap_s = cur.1.saturating_sub(prev.1) / 1000;
    (gap_s < sm.window && uptime_s < sm.hold).then(|| sm.hold - uptime_s)
}

/// Records this boot (once per boot id) in `<state>/boots` and returns how
/// long safe mode holds the policy back, if it does. The boot id and uptime
/// come from /proc, or from `VOIPWALL_BOOT_ID_FILE` / `VOIPWALL_UPTIME_FILE`
/// (tests simulate boots with them).
pub fn safe_mode_hold(
    state_dir: &Path,
    sm: &voipwall_policy::SafeMode,
) -> anyhow::Result<Option<u64>> {
    let read = |var: &str, default: &str| {
        let p = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let boot_id = read("VOIPWALL_BOOT_ID_FILE", "/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string();
    let uptime: f64 = read("VOIPWALL_UPTIME_FILE", "/proc/uptime")?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("reading the uptime")?;
    let boot_ms = now().0.saturating_sub((uptime * 1000.0) as u64);
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let path = state_dir.join("boots");
    let mut boots: Vec<BootRecord> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, t) = l.split_once(' ')?;
            Some((id.to_string(), t.parse().ok()?))
        })
        .collect();
    if boots.last().is_none_or(|(id, _)| *id != boot_id) {
        boots.push((boot_id, boot_ms));
        let keep = &boots[boots.len().saturating_sub(10)..];
        let text: String = keep.iter().map(|(id, t)| format!("{id} {t}\n")).collect();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(safe_mode_decision(sm, &boots, uptime as u64))
}

/// What one pass through the apply path did.
pub struct Applied {
    pub loaded: crate::context::Loaded,
    pub ruleset: Ruleset,
    pub generation: i64,
    pub took: Duration,
    /// Lockout problems overridden by `force`.
    pub forced: Vec<String>,
    /// The file compiled to the script of the generation in force: the
    /// kernel was brought back to it, and no new generation was recorded.
    pub unchanged: bool,
}

/// How an apply was asked for.
pub struct ApplyRequest<'a> {
    pub config: &'a Path,
    pub catalog_dirs: &'a [PathBuf],
    pub state_dir: &'a Path,
    /// Roll back unless confirmed in time.
    pub confirm: Option<Duration>,
    /// Apply despite lockout problems.
    pub force: bool,
    /// `cli`, `daemon`, `reload`: for the generation's audit line.
    pub actor: &'static str,
}

/// The one apply path (`apply`, daemon start, `reload`, SIGHUP): load and
/// validate, refuse unknown interfaces, compile, the anti-lockout check,
/// record the generation, apply in one transaction. Nothing is applied
/// unless every step before it passed.
pub fn apply_path(r: &ApplyRequest<'_>) -> anyhow::Result<Applied> {
    let facts = crate::context::host_facts();
    let loaded = crate::context::load_policy(r.config, r.catalog_dirs, &facts)?;
    let missing = missing_interfaces(&loaded.policy);
    if !missing.is_empty() {
        return Err(Invalid(format!(
            "error: {}\nerror: policy refused; nothing was applied, the running ruleset is unchanged",
            missing.join("\nerror: ")
        ))
        .into());
    }
    // Names that do not resolve now keep their last good answer (the
    // resolver is unreachable at every boot before the network is up):
    // protection follows what the kernel held, never an empty set.
    let names = crate::context::resolve_names_or_last_good(&loaded.policy, r.state_dir);
    let mut ruleset = crate::context::compile_resolved(&loaded.policy, names.resolved.clone());
    for h in &names.kept {
        let n = names.resolved.get(h).map_or(0, Vec::len);
        tracing::warn!(host = %h, addresses = n, "Name lookup failed; its last good answer is applied.");
        ruleset.notes.push(format!(
            "`{h}` did not resolve now; its last good answer ({n} address(es), from the store) is applied"
        ));
    }
    let sshd = facts.sshd_ports.clone().unwrap_or_else(|| vec![22]);
    let lockout = lockout_problems(&loaded.policy, &ruleset, &sshd);
    if !lockout.is_empty() && !r.force {
        return Err(Invalid(format!(
            "error: {}\nerror: refused: this policy would lock the operator out; nothing was applied (--force applies it anyway, best with --confirm)",
            lockout.join("\nerror: ")
        ))
        .into());
    }
    let script = voipwall_nft::render(&ruleset);
    // One store handle for the whole apply: opening one checks the whole
    // file, which holds megabytes once a big policy is recorded.
    let mut store: Option<Store> = None;
    let in_force = if nft::table_exists().unwrap_or(false) && r.state_dir.join("state.db").exists()
    {
        store = state_store(r.state_dir).ok();
        store.as_ref().and_then(running_generation)
    } else {
        None
    };
    let running = in_force.as_ref().and_then(generation_ruleset);
    // The same script as the generation in force (a `reload` of a file
    // nobody edited): the kernel is brought back to it below, but no new
    // generation is recorded. An apply that waits for a confirm always
    // gets its own.
    let same = in_force
        .as_ref()
        .filter(|g| {
            r.confirm.is_none()
                && running.is_some()
                && g.script == script
                && matches!(g.status.as_str(), "applied" | "confirmed")
        })
        .map(|g| g.id);
    // The inputs (megabytes for a big policy) are written out only where
    // they are recorded: with a new generation, or on the generation in
    // force when it has the same script but was recorded without inputs
    // (by a voipwall that kept none) or by another version, so the next
    // start need not report or recompile.
    let current = in_force
        .as_ref()
        .and_then(crate::context::Inputs::of)
        .and_then(Result::ok)
        .is_some_and(|x| x.version == crate::context::VERSION);
    let inputs = (same.is_none() || !current)
        .then(|| {
            serde_json::to_string(&crate::context::Inputs {
                names: names.resolved.clone(),
                ..loaded.inputs.clone()
            })
            .ok()
        })
        .flatten();
    let mut store = match store {
        Some(s) => s,
        None => state_store(r.state_dir)?,
    };
    if let (Some(id), Some(i)) = (same, inputs.as_deref())
        && let Err(e) = store.set_generation_inputs(id, i)
    {
        tracing::error!(error = %format!("{e:#}"), "Could not record the inputs of the generation in force.");
    }
    let generation = match same {
        Some(id) => id,
        None => begin_apply_in(
            &mut store,
            r.state_dir,
            &script,
            &r.config.display().to_string(),
            serde_json::to_string(&ruleset).ok().as_deref(),
            inputs.as_deref(),
            r.confirm,
            r.actor,
        )?,
    };
    let started = std::time::Instant::now();
    // Unchanged policy sets stay as the kernel has them; should the kernel
    // refuse that (its state is not the generation's), the full ruleset
    // goes in instead, in its own transaction.
    let result = match running.as_ref() {
        // Only a policy set unchanged since `rs` is read back from the
        // kernel, not assumed: another tool may have changed it.
        Some(rs) => voipwall_nft::netlink::encode_changes(&ruleset, rs, &kernel_holds, 1)
            .map_err(nft::NftError::Output)
            .and_then(|b| nft::apply_batch(&b))
            .or_else(|e| {
                tracing::info!(error = %e, "The kernel's sets are not the generation's (the apply that keeps unchanged sets was refused); loading the whole ruleset.");
                load_ruleset(&ruleset, &script)
            }),
        None => load_ruleset(&ruleset, &script),
    };
    if same.is_none() {
        finish_apply_in(&mut store, generation, result.is_ok(), started.elapsed())?;
    }
    result.context(
        "applying ruleset to table inet voipwall; the previous ruleset is still in place",
    )?;
    if let Err(e) = store
        .record_name_answers(&names.fresh, now())
        .and_then(|()| store.keep_names(&loaded.policy.hostnames()))
    {
        tracing::error!(error = %format!("{e:#}"), "Could not record the names' answers in the store.");
    }
    if let Some(old) = running.as_ref().map(Ruleset::ban_prefixes) {
        let new = ruleset.ban_prefixes();
        if old != new {
            rekey_bans(&store, old, new);
        }
    }
    Ok(Applied {
        loaded,
        ruleset,
        generation,
        took: started.elapsed(),
        forced: lockout,
        unchanged: same.is_some(),
    })
}

/// Whether the kernel holds exactly the elements of policy set `set`.
fn kernel_holds(set: &voipwall_nft::Set) -> bool {
    voipwall_sys::query::set_elements("voipwall", &set.name).is_ok_and(|held| {
        let held: Vec<voipwall_nft::kernel::Held> = held
            .into_iter()
            .map(|e| voipwall_nft::kernel::Held {
                key: e.key,
                end: e.end,
                chain: e.chain,
            })
            .collect();
        voipwall_nft::kernel::same(set, &voipwall_nft::kernel::elements(set.interval, &held))
    })
}

/// Loads a compiled ruleset in one transaction: voipwall's own netlink
/// batch. Should the kernel refuse it, the same transaction goes through
/// `nft` as text (`script`), whose error names the statement.
fn load_ruleset(ruleset: &Ruleset, script: &str) -> Result<(), nft::NftError> {
    match voipwall_nft::netlink::encode(ruleset, 1).map(|b| nft::apply_batch(&b)) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "The kernel refused the ruleset as a netlink batch; loading it through nft.");
        }
        Err(e) => {
            tracing::warn!(error = %e, "The ruleset could not be encoded as a netlink batch; loading it through nft.");
        }
    }
    nft::apply_script(script)
}

/// The policy's interfaces this host does not have.
fn missing_interfaces(policy: &Policy) -> Vec<String> {
    let have = nft::interface_names();
    policy
        .interfaces
        .iter()
        .filter(|i| !have.contains(&i.name))
        .map(|i| {
            format!(
                "{}: interface `{}` does not exist on this host",
                i.origin, i.name
            )
        })
        .collect()
}

/// What the daemon did at start with a generation another voipwall
/// version compiled.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Recompiled {
    /// The generation in force at start.
    pub generation: i64,
    /// The version that compiled it (`None`: it did not keep its inputs).
    pub compiled_by: Option<String>,
    /// This version.
    pub version: String,
    /// The new generation, when the recompiled script differed and went in.
    pub applied: Option<i64>,
    /// What happened, for the operator.
    pub result: String,
}

/// The generation in force and the policy its stored inputs load to
/// (with this version's loader): what the daemon runs when the policy file
/// on disk does not load. `None` without a store, a generation in force or
/// inputs that load.
pub fn policy_in_force(state_dir: &Path, catalog_dirs: &[PathBuf]) -> Option<(i64, Policy)> {
    if !state_dir.join("state.db").exists() {
        return None;
    }
    // What boot applies: the newest applied or confirmed (a pending one is
    // rolled back at start).
    let g = state_store(state_dir)
        .ok()?
        .generations(KEEP_GENERATIONS as usize)
        .ok()?
        .into_iter()
        .find(|g| matches!(g.status.as_str(), "applied" | "confirmed"))?;
    let inputs = crate::context::Inputs::of(&g)?.ok()?;
    let l = crate::context::load_inputs(&inputs, catalog_dirs).ok()?;
    Some((g.id, l.policy))
}

/// What [`boot_apply`] put in the kernel.
pub struct Booted {
    /// What it did about another version's generation (`None`: this
    /// version compiled it).
    pub recompiled: Option<Recompiled>,
    /// The ruleset in the kernel, when known.
    pub ruleset: Option<Ruleset>,
    /// The policy it was compiled from, when it was compiled again.
    pub policy: Option<Policy>,
}

/// At start: the generation in force was compiled by another version (a
/// package upgrade). Its stored inputs — never the policy file on disk,
/// which may hold edits nobody applied — are compiled again; a script that
/// differs passes the anti-lockout check and goes in as a new generation
/// ("recompiled by …"). Whatever fails on the way (inputs that do not load,
/// a refusal, the kernel, the store), the generation's own script is
/// applied instead and the reason reported: the daemon starts either way.
pub fn boot_apply(
    g: &voipwall_store::Generation,
    catalog_dirs: &[PathBuf],
    state_dir: &Path,
) -> anyhow::Result<Booted> {
    let version = crate::context::VERSION;
    let report = |compiled_by: Option<String>, applied: Option<i64>, result: String| Recompiled {
        generation: g.id,
        compiled_by,
        version: version.to_string(),
        applied,
        result,
    };
    let as_recorded = |r: Option<Recompiled>| -> anyhow::Result<Booted> {
        nft::apply_script(&g.script).context("applying the last confirmed generation")?;
        Ok(Booted {
            recompiled: r,
            ruleset: generation_ruleset(g),
            policy: None,
        })
    };
    let inputs = match crate::context::Inputs::of(g) {
        None => {
            return as_recorded(Some(report(
                None,
                None,
                format!(
                    "generation {} was applied as recorded: the voipwall that compiled it did not keep its inputs, so this version ({version}) cannot compile them again; `voipwall apply` compiles the policy file with it",
                    g.id
                ),
            )));
        }
        Some(Err(e)) => {
            return as_recorded(Some(report(
                None,
                None,
                format!(
                    "generation {} was applied as recorded: its stored inputs cannot be read by this version ({version}): {e}",
                    g.id
                ),
            )));
        }
        Some(Ok(i)) => i,
    };
    if inputs.version == version {
        return as_recorded(None);
    }
    let by = Some(inputs.version.clone());
    let kept = |why: String| {
        as_recorded(Some(report(
            by.clone(),
            None,
            format!(
                "generation {} (compiled by {}) was applied as recorded: {why}",
                g.id, inputs.version
            ),
        )))
    };
    // An operator who went back to this generation after this version
    // compiled a newer one (a rollback) chose its script as it is.
    if let Ok(Some(newer)) =
        state_store(state_dir).and_then(|s| Ok(s.newer_generation_by(g.id, version)?))
    {
        return kept(format!(
            "this version compiled generation {newer} after it, and it was put back in force since (a rollback, or a confirm window that ran out)"
        ));
    }
    match recompile(g, &inputs, catalog_dirs, state_dir) {
        Err(why) => kept(why),
        Ok(Recompile::Same(ruleset, policy)) => {
            nft::apply_script(&g.script).context("applying the last confirmed generation")?;
            // This version need not compile them again at the next start.
            if let Err(e) = state_store(state_dir).and_then(|mut s| {
                s.set_generation_inputs(g.id, &serde_json::to_string(&inputs.by_this_version())?)?;
                Ok(())
            }) {
                tracing::error!(error = %format!("{e:#}"), "Could not record that this version compiles the generation in force to the same script.");
            }
            Ok(Booted {
                recompiled: Some(report(
                    by,
                    None,
                    format!(
                        "generation {} (compiled by {}) compiles to the same script with {version}; applied as recorded",
                        g.id, inputs.version
                    ),
                )),
                ruleset: Some(ruleset),
                policy: Some(policy),
            })
        }
        Ok(Recompile::Applied(id, ruleset, policy)) => Ok(Booted {
            recompiled: Some(report(
                by,
                Some(id),
                format!(
                    "generation {} (compiled by {}) was compiled again by {version} from its stored inputs and applied as generation {id}",
                    g.id, inputs.version
                ),
            )),
            ruleset: Some(ruleset),
            policy: Some(policy),
        }),
    }
}

/// What compiling a generation's inputs again gave.
enum Recompile {
    /// The generation's own script: nothing new to apply.
    Same(Ruleset, Policy),
    /// A new generation, applied.
    Applied(i64, Ruleset, Policy),
}

/// [`boot_apply`]'s recompile; `Err` says why the recorded script stays.
fn recompile(
    g: &voipwall_store::Generation,
    inputs: &crate::context::Inputs,
    catalog_dirs: &[PathBuf],
    state_dir: &Path,
) -> Result<Recompile, String> {
    let version = crate::context::VERSION;
    let flat = |e: anyhow::Error| format!("{e:#}").replace('\n', "; ");
    let loaded = crate::context::load_inputs(inputs, catalog_dirs)
        .map_err(|e| format!("its stored inputs do not load with {version}: {}", flat(e)))?;
    let missing = missing_interfaces(&loaded.policy);
    if !missing.is_empty() {
        return Err(missing.join("; "));
    }
    let ruleset = crate::context::compile_resolved(&loaded.policy, inputs.names.clone());
    let script = voipwall_nft::render(&ruleset);
    if script == g.script {
        return Ok(Recompile::Same(ruleset, loaded.policy));
    }
    let sshd = inputs.sshd_ports.clone().unwrap_or_else(|| vec![22]);
    let lockout = lockout_problems(&loaded.policy, &ruleset, &sshd);
    if !lockout.is_empty() {
        return Err(format!(
            "its recompiled script was refused by the anti-lockout check: {}",
            lockout.join("; ")
        ));
    }
    let id = state_store(state_dir)
        .and_then(|mut store| {
            begin_apply_in(
                &mut store,
                state_dir,
                &script,
                &format!(
                    "recompiled by {version} from generation {} ({})",
                    g.id, inputs.main
                ),
                serde_json::to_string(&ruleset).ok().as_deref(),
                serde_json::to_string(&inputs.by_this_version())
                    .ok()
                    .as_deref(),
                None,
                "daemon",
            )
        })
        .map_err(|e| format!("the store did not record the new generation: {}", flat(e)))?;
    let started = std::time::Instant::now();
    let result = load_ruleset(&ruleset, &script);
    if let Err(e) = finish_apply(state_dir, id, result.is_ok(), started.elapsed()) {
        tracing::error!(error = %format!("{e:#}"), generation = id, "Could not record how the recompiled generation's apply went.");
    }
    if let Err(e) = result {
        return Err(format!(
            "the kernel refused its recompiled script (generation {id}, marked failed): {}",
            flat(e.into())
        ));
    }
    Ok(Recompile::Applied(id, ruleset, loaded.policy))
}

/// The ban prefix changed: re-key the stored bans (see `plane::rekey`).
fn rekey_bans(store: &Store, old: voipwall_nft::sets::Prefixes, new: voipwall_nft::sets::Prefixes) {
    let t = now();
    let active = match store.active_bans(t) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "The ban prefix changed but the stored bans could not be read to re-key them.");
            return;
        }
    };
    let r = crate::plane::rekey(&active, old, new, t);
    if r.add.is_empty() {
        return;
    }
    match voipwall_sys::bans::Bans::open() {
        Ok(mut bans) => {
            crate::plane::apply_rekey(&mut bans, &r);
        }
        Err(e) => {
            tracing::error!(error = %e, "The ban prefix changed but netlink could not be opened to re-key the bans.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_mode_needs_two_boots_within_the_window_and_ends_with_the_hold() {
        let sm = voipwall_policy::SafeMode {
            enabled: true,
            window: 300,
            hold: 300,
        };
        let b = |t: u64| (format!("id{t}"), t * 1000);
        assert_eq!(
            safe_mode_decision(&sm, &[b(1000)], 10),
            None,
            "a single boot"
        );
        assert_eq!(safe_mode_decision(&sm, &[b(1000), b(1200)], 10), Some(290));
        assert_eq!(
            safe_mode_decision(&sm, &[b(1000), b(1200)], 300),
            None,
            "hold over"
        );
        assert_eq!(
            safe_mode_decision(&sm, &[b(1000), b(1300)], 10),
            None,
            "boots 5 min apart"
        );
        assert_eq!(safe_mode_decision(&sm, &[b(1000), b(1299)], 0), Some(300));
        let off = voipwall_policy::SafeMode {
            enabled: false,
            ..sm
        };
        assert_eq!(
            safe_mode_decision(&off, &[b(1000), b(1200)], 10),
            None,
            "turned off"
        );
    }

    #[test]
    fn diff_lists_removed_then_added_lines() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nc\nd\n"), (vec!["b"], vec!["d"]));
    }
}
