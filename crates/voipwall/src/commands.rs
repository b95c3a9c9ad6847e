//! One function per subcommand.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;

use anyhow::{Context as _, bail};
use serde_json::json;
use voipwall_nft::{DynamicSets, NoDynamic, Packet, explain, render};
use voipwall_policy::{
    Policy, Severity, display_net, parse_ban_duration, parse_duration, parse_port_specs,
};
use voipwall_sys::nft;

use crate::context::{compile_policy, host_facts, load_policy};
use crate::plane::{Op, Verb};
use crate::{Cli, Cmd, Invalid};

/// Dispatches a parsed command line.
pub(crate) fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::Check { kernel } => check(cli, *kernel),
        Cmd::Compile => compile_cmd(cli),
        Cmd::Audit => audit_cmd(cli),
        Cmd::Discover => discover_cmd(cli),
        Cmd::Init(a) => crate::init::run(cli, a),
        Cmd::Export { target } => export_cmd(cli, target),
        Cmd::Apply { confirm, force } => apply(cli, confirm.as_deref(), *force),
        Cmd::Confirm => out(&crate::safety::confirm(&cli.state_dir)?),
        Cmd::Rollback => out(&crate::safety::rollback(&cli.state_dir)?),
        Cmd::Generations { diff } => generations(cli, *diff),
        Cmd::RollbackTimer {
            generation,
            deadline_ms,
        } => crate::safety::rollback_timer(&cli.state_dir, *generation, *deadline_ms),
        Cmd::Disable => disable(cli),
        Cmd::Explain {
            addr,
            to,
            iface,
            established,
            offline,
            policy,
        } => match to {
            Some(to) => explain_cmd(
                cli,
                *addr,
                to,
                iface,
                *established,
                *offline,
                policy.as_deref(),
            ),
            None => crate::client::explain_detection(cli, *addr),
        },
        Cmd::Ban {
            target,
            file,
            duration,
            reason,
            exact,
            force,
        } => {
            let (targets, labels) = match (target, file) {
                (_, Some(f)) => read_targets(f)?,
                (Some(t), None) => (vec![t.clone()], Vec::new()),
                (None, None) => {
                    return Err(Invalid("error: give an address or --file".into()).into());
                }
            };
            let seconds = duration.as_deref().map(for_duration).transpose()?;
            runtime(
                cli,
                Op {
                    verb: Verb::Ban,
                    targets,
                    labels,
                    seconds: seconds.flatten(),
                    default_ttl: seconds.is_none(),
                    reason: reason.clone(),
                    exact: *exact,
                    force: *force,
                },
            )
        }
        Cmd::Unban { target } => runtime(cli, Op::simple(Verb::Unban, target, None)),
        Cmd::Allow {
            target,
            duration,
            delete,
        } => {
            let verb = if *delete { Verb::Disallow } else { Verb::Allow };
            let secs = duration.as_deref().map(for_duration).transpose()?.flatten();
            runtime(cli, Op::simple(verb, target, secs))
        }
        Cmd::Block {
            target,
            duration,
            delete,
            force,
        } => {
            let verb = if *delete { Verb::Unblock } else { Verb::Block };
            let secs = duration.as_deref().map(for_duration).transpose()?.flatten();
            let mut op = Op::simple(verb, target, secs);
            op.force = *force;
            op.reason = "block".into();
            runtime(cli, op)
        }
        Cmd::Bans { all, rule, kernel } => match crate::client::daemon().filter(|_| !kernel) {
            Some(mut c) => crate::client::bans(cli, &mut c, *all, rule.clone()),
            None => bans(cli),
        },
        Cmd::Status => crate::client::status(cli),
        Cmd::Events { follow, limit } => crate::client::events(cli, *follow, *limit),
        Cmd::Reload => crate::client::reload(cli),
        Cmd::Catalog => catalog(cli),
        Cmd::Replay(a) => crate::replay::replay(cli, a),
        Cmd::Daemon(a) => crate::daemon::run(
            &crate::daemon::Paths {
                config: cli.config.clone(),
                catalog_dirs: cli.catalog_dirs.clone(),
                state_dir: cli.state_dir.clone(),
            },
            a,
        ),
    }
}

pub(crate) fn out(s: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    if !s.ends_with('\n') {
        o.write_all(b"\n")?;
    }
    Ok(())
}

fn check(cli: &Cli, kernel: bool) -> anyhow::Result<()> {
    let facts = host_facts();
    match load_policy(&cli.config, &cli.catalog_dirs, &facts) {
        Ok(l) => {
            let sshd = facts.sshd_ports.clone().unwrap_or_else(|| vec![22]);
            // Compiled once: compiling resolves the policy's hostnames.
            let rs = compile_policy(&l.policy);
            let lockout = crate::safety::lockout_problems(&l.policy, &rs, &sshd);
            if !lockout.is_empty() {
                return Err(Invalid(format!(
                    "error: {}\nerror: apply would refuse this policy: it would lock the operator out",
                    lockout.join("\nerror: ")
                ))
                .into());
            }
            if kernel {
                let script = render(&rs);
                nft::check_script(&script).context(
                    "the running kernel refused the compiled ruleset (nothing was changed)",
                )?;
                for w in foreign_warnings() {
                    eprintln!("warning: {w}");
                }
            }
            if cli.json {
                let warnings: Vec<_> = l
                    .warnings
                    .iter()
                    .map(|d| json!({"severity": d.severity, "location": d.location(&l.sources), "message": d.message, "label": d.label, "help": d.help}))
                    .collect();
                out(
                    &json!({"ok": true, "diagnostics": warnings, "discovery": l.discovery})
                        .to_string(),
                )
            } else {
                for d in &l.discovery {
                    out(&format!("discovery: {d}"))?;
                }
                let grants: usize = l.policy.grants.values().map(Vec::len).sum();
                out(&format!(
                    "{}: ok ({} interfaces, {} networks, {} service grants, {} allow, {} block{})",
                    cli.config.display(),
                    l.policy.interfaces.len(),
                    l.policy.networks.len(),
                    grants,
                    l.policy.allow.len(),
                    l.policy.block.len(),
                    l.policy
                        .preset
                        .as_ref()
                        .map(|p| format!(", preset {p}"))
                        .unwrap_or_default()
                ))
            }
        }
        Err(e) if cli.json && e.downcast_ref::<Invalid>().is_some() => {
            // Re-run the load to get structured diagnostics for JSON.
            let (catalog, _) = crate::context::catalog(&cli.catalog_dirs)?;
            let mut read = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
            let loaded = voipwall_policy::load(
                &cli.config.display().to_string(),
                &mut read,
                &catalog,
                &facts,
            );
            let diags: Vec<_> = loaded
                .diagnostics
                .iter()
                .map(|d| json!({"severity": d.severity, "location": d.location(&loaded.sources), "message": d.message, "label": d.label, "help": d.help}))
                .collect();
            out(&json!({"ok": false, "diagnostics": diags}).to_string())?;
            Err(Invalid(String::new()).into())
        }
        Err(e) => Err(e),
    }
}

fn audit_cmd(cli: &Cli) -> anyhow::Result<()> {
    let facts = host_facts();
    let l = load_policy(&cli.config, &cli.catalog_dirs, &facts)?;
    let rs = compile_policy(&l.policy);
    // The sshd_config [discover] points at, else the host's.
    let sshd: Vec<u16> = if l.found.ssh_ports.is_empty() {
        facts.sshd_ports.clone().unwrap_or_else(|| vec![22])
    } else {
        l.found.ssh_ports.iter().map(|(p, _)| *p).collect()
    };
    // Reachability is judged against what the kernel runs, when voipwall
    // is applied and its generation recorded its ruleset.
    let applied = nft::table_exists().unwrap_or(false);
    let running = explain_source(cli, None, applied)?;
    let (rs, judged) = match running.generation {
        Some(_) => (running.ruleset, running.from),
        None => (rs, format!("policy file {}", cli.config.display())),
    };
    let mut findings =
        voipwall_host::audit::judge(&l.policy, &rs, &crate::host::listening(), &l.found, &sshd);
    findings.extend(voipwall_host::audit::foreign(
        &nft::foreign_chains().unwrap_or_default(),
        &nft::legacy_iptables(),
    ));
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    if cli.json {
        out(&serde_json::to_string_pretty(&json!({
            "judged_against": judged,
            "findings": findings,
            "worst": findings.iter().map(|f| f.severity).max(),
        }))?)?;
    } else {
        out(&format!("judged against: {judged}"))?;
        out(&voipwall_host::audit::render(&findings))?;
    }
    match findings.iter().map(|f| f.severity).max() {
        Some(w) if w.exit_code() != 0 => Err(crate::ExitWith(w.exit_code()).into()),
        _ => Ok(()),
    }
}

fn export_cmd(cli: &Cli, target: &str) -> anyhow::Result<()> {
    use voipwall_nft::export::{Target, intent, render};
    let t = Target::parse(target).ok_or_else(|| {
        Invalid(format!(
            "unknown export target `{target}`: aws, gcp, azure, firewalld or iptables"
        ))
    })?;
    let l = load_policy(&cli.config, &cli.catalog_dirs, &host_facts())?;
    // Names resolved once, as the compiler does: exports are static.
    let resolved = crate::context::resolve_names(&l.policy);
    let e = render(t, &intent(&l.policy, &resolved));
    // JSON targets carry only what their client accepts: the notes go to
    // stderr (text targets also have them as comments).
    if matches!(t, Target::Aws | Target::Gcp | Target::Azure) {
        for n in &e.notes {
            eprintln!("note: {n}");
        }
    }
    out(&e.body)
}

fn discover_cmd(cli: &Cli) -> anyhow::Result<()> {
    let l = load_policy(&cli.config, &cli.catalog_dirs, &host_facts())?;
    let d = &l.found;
    if cli.json {
        return out(&serde_json::to_string_pretty(&json!({
            "discovery": d,
            "applied": l.discovery,
        }))?);
    }
    let mut o = String::new();
    if d.found.is_empty() {
        o.push_str("no PBX configuration found (see [discover] in the policy)\n");
    }
    for p in &d.found {
        let _ = writeln!(o, "found {}", p.name());
    }
    for x in &d.listeners {
        let _ = writeln!(
            o,
            "listens  {:<14} {:<10} {:<18} {}",
            x.service,
            x.port.to_string(),
            x.driver,
            x.origin
        );
    }
    for p in &d.peers {
        let ports: Vec<String> = p.ports.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            o,
            "peer     {:<14} {:<28} {}{} -> {}  ({})",
            p.driver,
            format!("{} [{}]", p.name, p.role),
            p.host,
            if p.srv { " (+SRV)" } else { "" },
            ports.join(","),
            p.origin
        );
    }
    if let Some((r, at)) = &d.rtp {
        let _ = writeln!(o, "rtp      {r}  ({at})");
    }
    for (p, at) in &d.ssh_ports {
        let _ = writeln!(o, "ssh      tcp/{p}  ({at})");
    }
    let _ = writeln!(
        o,
        "secrets  {} found (judged by `voipwall audit`)",
        d.secrets.len()
    );
    for n in &l.discovery {
        let _ = writeln!(o, "{n}");
    }
    out(&o)
}

fn compile_cmd(cli: &Cli) -> anyhow::Result<()> {
    let l = load_policy(&cli.config, &cli.catalog_dirs, &host_facts())?;
    let rs = compile_policy(&l.policy);
    if cli.json {
        out(&serde_json::to_string_pretty(&rs)?)
    } else {
        out(&render(&rs))
    }
}

fn apply(cli: &Cli, confirm: Option<&str>, force: bool) -> anyhow::Result<()> {
    let confirm = confirm
        .map(|c| parse_duration(c).map_err(|e| Invalid(format!("error: --confirm {c}: {e}"))))
        .transpose()?
        .map(std::time::Duration::from_secs);
    let a = crate::safety::apply_path(&crate::safety::ApplyRequest {
        config: &cli.config,
        catalog_dirs: &cli.catalog_dirs,
        state_dir: &cli.state_dir,
        confirm,
        force,
        actor: "cli",
    })?;
    for p in &a.forced {
        eprintln!("warning (--force): {p}");
    }
    for w in foreign_warnings() {
        eprintln!("warning: {w}");
    }
    if let Some(c) = confirm {
        eprintln!(
            "generation {} applied; run `voipwall confirm` within {} or it is rolled back",
            a.generation,
            voipwall_policy::format_duration(c.as_secs())
        );
    }
    let rs = &a.ruleset;
    let rules: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
    if cli.json {
        out(&json!({"applied": true, "generation": a.generation, "rules": rules, "sets": rs.sets.len(), "notes": rs.notes, "seconds": a.took.as_secs_f64()}).to_string())
    } else {
        for n in &rs.notes {
            eprintln!("note: {n}");
        }
        for w in a
            .loaded
            .warnings
            .iter()
            .filter(|d| d.severity == Severity::Warning)
        {
            eprintln!("{}", w.render(&a.loaded.sources));
        }
        out(&format!(
            "applied table inet voipwall (generation {}): {rules} rules, {} sets, in {:.0} ms; bans and known endpoints kept",
            a.generation,
            rs.sets.len(),
            a.took.as_secs_f64() * 1000.0
        ))
    }
}

fn generations(cli: &Cli, diff: Option<i64>) -> anyhow::Result<()> {
    let store = crate::safety::state_store(&cli.state_dir)?;
    let gens = store.generations(50)?;
    if let Some(id) = diff {
        let Some(i) = gens.iter().position(|g| g.id == id) else {
            return Err(Invalid(format!(
                "error: no generation {id} (voipwall generations lists them)"
            ))
            .into());
        };
        let new = &gens[i].script;
        let old = gens.get(i + 1).map_or("", |g| g.script.as_str());
        let (removed, added) = crate::safety::line_diff(old, new);
        if cli.json {
            return out(&json!({"generation": id, "removed": removed, "added": added}).to_string());
        }
        let mut s = String::new();
        for l in &removed {
            s.push_str(&format!("- {l}\n"));
        }
        for l in &added {
            s.push_str(&format!("+ {l}\n"));
        }
        s.push_str(&format!(
            "generation {id}: {} lines removed, {} added\n",
            removed.len(),
            added.len()
        ));
        return out(&s);
    }
    if cli.json {
        let v: Vec<_> = gens
            .iter()
            .map(|g| json!({"id": g.id, "at": g.at.to_string(), "status": g.status, "policy": g.policy, "deadline": g.deadline.map(|d| d.to_string())}))
            .collect();
        return out(&serde_json::to_string(&v)?);
    }
    let mut s = format!(
        "{:<6} {:<26} {:<12} {}\n",
        "GEN", "APPLIED", "STATUS", "POLICY"
    );
    for g in &gens {
        s.push_str(&format!(
            "{:<6} {:<26} {:<12} {}\n",
            g.id,
            g.at.to_string(),
            g.status,
            g.policy
        ));
    }
    out(&s)
}

fn disable(cli: &Cli) -> anyhow::Result<()> {
    crate::safety::refuse_if_locked()?;
    let existed = nft::delete_table().context("removing table inet voipwall")?;
    if cli.json {
        out(&json!({"removed": existed}).to_string())
    } else if existed {
        out("removed table inet voipwall; no other table was touched")
    } else {
        out("voipwall was not active (no table inet voipwall)")
    }
}

/// Asks the kernel whether an address is in one of our dynamic sets.
struct KernelSets;

impl DynamicSets for KernelSets {
    fn contains(&self, set: &str, addr: &IpAddr) -> bool {
        use voipwall_nft::sets::Role;
        let interval = Role::ALL.iter().any(|r| {
            r.interval()
                && [voipwall_nft::Family::V4, voipwall_nft::Family::V6]
                    .iter()
                    .any(|f| r.set(*f) == set)
        });
        if interval {
            // Few entries (network bans, runtime allows): read them all.
            nft::list_set(set, true).is_ok_and(|v| v.iter().any(|e| e.net.contains(addr)))
        } else {
            voipwall_sys::query::has_key("voipwall", set, *addr).unwrap_or(false)
        }
    }
}

/// Other firewalls on the same hooks (nft tables, iptables-legacy), one
/// line each: `apply` and `check --kernel` print them.
fn foreign_warnings() -> Vec<String> {
    let mut w = voipwall_nft::foreign::warnings(&nft::foreign_chains().unwrap_or_default());
    let legacy = nft::legacy_iptables();
    if !legacy.is_empty() {
        w.push(format!(
            "iptables-legacy tables are loaded ({}): they filter the same packets and voipwall cannot inspect them",
            legacy.join(", ")
        ));
    }
    w
}

/// What `explain` evaluates: the generation in force, or a policy file.
struct ExplainSource {
    ruleset: voipwall_nft::Ruleset,
    /// For humans: where the rules came from.
    from: String,
    /// The generation in force, when that is what is explained.
    generation: Option<i64>,
}

/// The ruleset `explain` answers from: `--policy FILE` or `--offline` → the
/// file; otherwise the generation in force (recorded with its compiled
/// ruleset at apply), falling back to the file, said so, when voipwall is not
/// applied or the generation predates the record.
fn explain_source(
    cli: &Cli,
    policy_file: Option<&std::path::Path>,
    applied: bool,
) -> anyhow::Result<ExplainSource> {
    let file = |path: &std::path::Path, why: &str| -> anyhow::Result<ExplainSource> {
        let l = load_policy(path, &cli.catalog_dirs, &host_facts())?;
        Ok(ExplainSource {
            ruleset: compile_policy(&l.policy),
            from: format!("policy file {}{why}", path.display()),
            generation: None,
        })
    };
    if let Some(p) = policy_file {
        return file(p, "");
    }
    if !applied {
        return file(
            &cli.config,
            " (voipwall is not applied here: this is what the file would do)",
        );
    }
    let db = cli.state_dir.join("state.db");
    let running = if db.exists() {
        crate::safety::state_store(&cli.state_dir)?
            .generations(crate::safety::KEEP_GENERATIONS as usize)?
            .into_iter()
            .find(|g| {
                matches!(
                    g.status.as_str(),
                    "applied" | "confirmed" | "pending" | "snapshot"
                )
            })
    } else {
        None
    };
    match running {
        Some(g) if g.status != "snapshot" => match g.ir.as_deref().map(serde_json::from_str) {
            Some(Ok(ruleset)) => Ok(ExplainSource {
                ruleset,
                from: format!(
                    "generation {} in force ({}, applied {}) and the live ban and known sets",
                    g.id, g.status, g.at
                ),
                generation: Some(g.id),
            }),
            _ => file(
                &cli.config,
                &format!(
                    " (generation {} in force was recorded without its ruleset: run `voipwall apply` once to record it)",
                    g.id
                ),
            ),
        },
        _ => file(
            &cli.config,
            " (no generation is recorded for the running table)",
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn explain_cmd(
    cli: &Cli,
    addr: IpAddr,
    to: &str,
    iface: &str,
    established: bool,
    offline: bool,
    policy_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let spec = match parse_port_specs(to) {
        Ok(v) if v.len() == 1 && v[0].lo == v[0].hi => v[0],
        _ => {
            return Err(Invalid(format!(
                "error: `{to}` is not a destination like udp/5060 or tcp/22"
            ))
            .into());
        }
    };
    let (iface, routed) = if iface.is_empty() && !offline {
        match voipwall_sys::route::interface_for(addr) {
            Some(i) => (i, true),
            None => (String::new(), false),
        }
    } else {
        (iface.to_string(), false)
    };
    if !offline && !iface.is_empty() && !nft::interface_names().contains(&iface) {
        return Err(Invalid(format!(
            "error: interface `{iface}` does not exist on this host (--offline explains for another host)"
        ))
        .into());
    }
    let applied = !offline && nft::table_exists().unwrap_or(false);
    let src = explain_source(
        cli,
        policy_file.or(offline.then_some(cli.config.as_path())),
        applied,
    )?;
    let p = Packet {
        src: addr,
        iif: iface.clone(),
        proto: spec.proto,
        dport: spec.lo,
        established,
    };
    let ex = if applied {
        explain(&src.ruleset, &p, &KernelSets)
    } else {
        explain(&src.ruleset, &p, &NoDynamic)
    };
    // Other tables on the same hooks: a drop there is final.
    let family = voipwall_nft::Family::of(&addr);
    let foreign: Vec<voipwall_nft::foreign::ForeignChain> = if offline {
        Vec::new()
    } else {
        nft::foreign_chains()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.sees_inbound(family))
            .collect()
    };
    let legacy = if offline {
        Vec::new()
    } else {
        nft::legacy_iptables()
    };
    use voipwall_nft::foreign::Effect;
    let dropped_by = foreign.iter().find(|c| c.effect() == Effect::Drops);
    let may_drop: Vec<&voipwall_nft::foreign::ForeignChain> = foreign
        .iter()
        .filter(|c| c.effect() == Effect::MayDrop)
        .collect();
    let verdict = match (ex.verdict, dropped_by) {
        (voipwall_nft::Verdict::Accept, Some(_)) => voipwall_nft::Verdict::Drop,
        (v, _) => v,
    };
    if cli.json {
        return out(&serde_json::to_string_pretty(&json!({
            "packet": p,
            "verdict": verdict,
            "explanation": ex,
            "source": src.from,
            "generation": src.generation,
            "interface_from_route": routed,
            "kernel_sets_consulted": applied,
            "also_evaluated": foreign.iter().map(|c| json!({"chain": c, "effect": c.effect(), "describe": c.describe()})).collect::<Vec<_>>(),
            "iptables_legacy_tables": legacy,
        }))?);
    }
    let mut s = format!(
        "{addr} -> {to}{}: {}\n",
        match (iface.is_empty(), routed) {
            (true, _) => String::new(),
            (false, true) => format!(" on {iface} (the interface the kernel routes {addr} to)"),
            (false, false) => format!(" on {iface}"),
        },
        verdict.name().to_uppercase()
    );
    s.push_str(&format!("  from:       {}\n", src.from));
    if let Some(z) = &ex.zone {
        s.push_str(&format!("  zone:       {z}\n"));
    }
    s.push_str(&format!(
        "  voipwall:   {} — decided by: {}\n  path:\n",
        ex.verdict.name(),
        ex.decided_by
    ));
    for st in &ex.trace {
        s.push_str(&format!("    {:<18} {}\n", st.chain, st.rule));
    }
    for c in &foreign {
        let what = match c.effect() {
            Effect::Drops => "drops this packet",
            Effect::MayDrop => "has rules voipwall does not evaluate: it may drop this packet",
            Effect::Nothing => "accepts it (no rules)",
        };
        s.push_str(&format!("  also evaluated: {}: {what}\n", c.describe()));
    }
    if let Some(c) = dropped_by.filter(|_| ex.verdict == voipwall_nft::Verdict::Accept) {
        s.push_str(&format!(
            "  final: DROP — voipwall accepts, but table {} {} drops it\n",
            c.family, c.table
        ));
    } else if !may_drop.is_empty() && ex.verdict == voipwall_nft::Verdict::Accept {
        s.push_str("  final: ACCEPT by voipwall, unless a table named above drops it\n");
    }
    if !legacy.is_empty() {
        s.push_str(&format!(
            "  also loaded: iptables-legacy tables ({}): they filter too and are not inspected\n",
            legacy.join(", ")
        ));
    }
    if !applied {
        s.push_str("  (ban and known sets not consulted: offline or voipwall not applied)\n");
    }
    out(&s)
}

/// Policy for runtime commands; a missing or broken policy falls back to defaults.
fn policy_or_default(cli: &Cli) -> Option<Policy> {
    match load_policy(&cli.config, &cli.catalog_dirs, &host_facts()) {
        Ok(l) => Some(l.policy),
        Err(e) => {
            eprintln!(
                "warning: policy not loaded ({}); using defaults",
                e.to_string().lines().next().unwrap_or("")
            );
            None
        }
    }
}

fn require_table() -> anyhow::Result<()> {
    if !nft::table_exists()? {
        bail!("voipwall is not applied here (no table inet voipwall): run `voipwall apply` first");
    }
    Ok(())
}

fn bans(cli: &Cli) -> anyhow::Result<()> {
    require_table()?;
    let prefixes = crate::plane::prefixes(policy_or_default(cli).as_ref());
    let mut rows = Vec::new();
    for (role, set) in crate::plane::ban_sets() {
        for mut e in nft::list_set(set, role.interval())? {
            e.net = voipwall_nft::sets::covered_by(role, e.net, prefixes);
            rows.push((set, e));
        }
    }
    if cli.json {
        let v: Vec<_> = rows.iter().map(|(s, e)| json!({"set": s, "addr": display_net(&e.net), "timeout": e.timeout, "expires": e.expires})).collect();
        return out(&serde_json::to_string(&v)?);
    }
    let mut s = format!("{:<14} {:<40} {}\n", "SET", "ADDRESS", "ENDS");
    let now = crate::safety::now().0;
    for (set, e) in &rows {
        let exp = e.expires.map_or_else(
            || "permanent".to_string(),
            |secs| crate::human::until(now.saturating_add(secs.saturating_mul(1000)), now),
        );
        s.push_str(&format!("{set:<14} {:<40} {exp}\n", display_net(&e.net)));
    }
    s.push_str(&format!("{} entries\n", rows.len()));
    out(&s)
}

/// `--for` of the runtime verbs: the one duration grammar, or `permanent`.
fn for_duration(d: &str) -> anyhow::Result<Option<u64>> {
    parse_ban_duration(d).map_err(|e| Invalid(format!("error: --for {d}: {e}")).into())
}

/// `ban --file`: one address or network per line, `#` comments.
fn read_targets(path: &std::path::Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut targets = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if !t.is_empty() {
            targets.push(t.to_string());
            labels.push(format!("{}:{}", path.display(), i + 1));
        }
    }
    Ok((targets, labels))
}

/// Every runtime verb: through the daemon when one runs (so its store,
/// engine and audit log see it), else the same plane directly, recorded
/// in the same store.
fn runtime(cli: &Cli, op: Op) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let outcome = match crate::client::daemon() {
        Some(mut c) => {
            let v = c.call(&crate::daemon::Request::Runtime(op.clone()))?;
            serde_json::from_value::<crate::plane::Outcome>(v)
                .context("reading the daemon's answer")?
        }
        None => {
            let policy = policy_or_default(cli);
            require_table()?;
            let guard = crate::plane::protected(policy.as_ref(), Vec::new());
            let mut bans = voipwall_sys::bans::Bans::open()?;
            let now = crate::safety::now();
            let (o, fx) = crate::plane::execute(&op, policy.as_ref(), &guard, &mut bans, now);
            if o.ok {
                let mut store = crate::safety::state_store(&cli.state_dir)?;
                store.record_bans(&fx.bans)?;
                for n in &fx.lifted {
                    store.lift(n, now)?;
                }
                store.audit(
                    now,
                    "cli",
                    &format!("{:?}", op.verb).to_lowercase(),
                    &op.targets.join(" "),
                )?;
            }
            o
        }
    };
    if !outcome.ok {
        return Err(Invalid(format!(
            "error: {}",
            outcome
                .error
                .as_deref()
                .unwrap_or("refused")
                .replace('\n', "\nerror: ")
        ))
        .into());
    }
    if cli.json {
        let mut v = serde_json::to_value(&outcome)?;
        v["micros"] = json!(started.elapsed().as_micros());
        return out(&v.to_string());
    }
    out(&crate::plane::render(&outcome, &op.reason))
}

fn catalog(cli: &Cli) -> anyhow::Result<()> {
    let (cat, _) = crate::context::catalog(&cli.catalog_dirs)?;
    if cli.json {
        return out(&serde_json::to_string_pretty(
            &json!({"services": cat.services, "presets": cat.presets}),
        )?);
    }
    let mut s = String::from("SERVICES\n");
    for svc in cat.services.values() {
        let ports: Vec<String> = svc.ports.iter().map(ToString::to_string).collect();
        s.push_str(&format!(
            "  {:<20} {:<40} {}\n",
            svc.name,
            ports.join(" "),
            svc.description
        ));
    }
    s.push_str("PRESETS\n");
    for p in cat.presets.values() {
        s.push_str(&format!("  {:<24} {}\n", p.name, p.description));
    }
    out(&s)
}
