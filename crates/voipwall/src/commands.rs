//! One function per subcommand.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;

use anyhow::{Context as _, bail};
use ipnet::IpNet;
use serde_json::json;
use voipwall_nft::{DynamicSets, NoDynamic, Packet, explain, render};
use voipwall_policy::{Policy, Severity, display_net, parse_duration, parse_net, parse_port_specs};
use voipwall_sys::netlink::{Elem, SetElements};
use voipwall_sys::nft;

use crate::context::{compile_policy, host_facts, load_policy};
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
        } => match to {
            Some(to) => explain_cmd(cli, *addr, to, iface, *established, *offline),
            None => crate::client::explain_detection(cli, *addr),
        },
        Cmd::Ban {
            target,
            file,
            duration,
            reason,
            exact,
        } => match (target, file) {
            (_, Some(f)) => ban_file(cli, f, duration.as_deref(), reason, *exact),
            (Some(t), None) => match crate::client::daemon() {
                Some(mut c) => {
                    let secs = match duration.as_deref() {
                        Some(d) => parse_duration(d)
                            .map_err(|e| Invalid(format!("error: --for {d}: {e}")))?,
                        None => policy_or_default(cli).map_or(3600, |p| p.bans.default_ttl),
                    };
                    crate::client::ban(cli, &mut c, t, secs, reason, *exact)
                }
                None => ban(cli, t, duration.as_deref(), reason, *exact),
            },
            (None, None) => Err(Invalid("error: give an address or --file".into()).into()),
        },
        Cmd::Unban { target } => match crate::client::daemon() {
            Some(mut c) => crate::client::unban(cli, &mut c, target),
            None => unban(cli, target),
        },
        Cmd::Allow {
            target,
            duration,
            delete,
        } => match crate::client::daemon() {
            Some(mut c) => {
                let secs = duration
                    .as_deref()
                    .map(parse_duration)
                    .transpose()
                    .map_err(|e| Invalid(format!("error: --for: {e}")))?;
                crate::client::allow(cli, &mut c, target, secs, *delete)
            }
            None => runtime_list(cli, "allowrt", target, duration.as_deref(), *delete),
        },
        Cmd::Block {
            target,
            duration,
            delete,
        } => runtime_list(cli, "bannet", target, duration.as_deref(), *delete),
        Cmd::Bans { all, rule, kernel } => match crate::client::daemon().filter(|_| !kernel) {
            Some(mut c) => crate::client::bans(cli, &mut c, *all, rule.clone()),
            None => bans(cli),
        },
        Cmd::Status => crate::client::status(cli),
        Cmd::Events { follow, limit } => crate::client::events(cli, *follow, *limit),
        Cmd::Reload => crate::client::reload(cli),
        Cmd::Catalog => catalog(cli),
        Cmd::Replay(a) => crate::replay::replay(cli, a),
        Cmd::Daemon(a) => crate::daemon::run(cli, a),
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
    let findings = crate::audit::judge(&l.policy, &rs, &crate::audit::listening(), &l.found, &sshd);
    if cli.json {
        out(&serde_json::to_string_pretty(&json!({
            "findings": findings,
            "worst": findings.iter().map(|f| f.severity).max(),
        }))?)?;
    } else {
        out(&crate::audit::render(&findings))?;
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
    out(&render(t, &intent(&l.policy, &resolved)))
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

/// Interfaces the policy names that this host does not have.
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

fn apply(cli: &Cli, confirm: Option<&str>, force: bool) -> anyhow::Result<()> {
    let facts = host_facts();
    let l = load_policy(&cli.config, &cli.catalog_dirs, &facts)?;
    let missing = missing_interfaces(&l.policy);
    if !missing.is_empty() {
        return Err(Invalid(format!("error: {}\nerror: policy refused; nothing was applied, the running ruleset is unchanged", missing.join("\nerror: "))).into());
    }
    let confirm = confirm
        .map(|c| parse_duration(c).map_err(|e| Invalid(format!("error: --confirm {c}: {e}"))))
        .transpose()?
        .map(std::time::Duration::from_secs);
    let rs = compile_policy(&l.policy);
    let sshd = facts.sshd_ports.clone().unwrap_or_else(|| vec![22]);
    let lockout = crate::safety::lockout_problems(&l.policy, &rs, &sshd);
    if !lockout.is_empty() {
        if !force {
            return Err(Invalid(format!(
                "error: {}\nerror: refused: this policy would lock the operator out; nothing was applied (--force applies it anyway, best with --confirm)",
                lockout.join("\nerror: ")
            ))
            .into());
        }
        for p in &lockout {
            eprintln!("warning (--force): {p}");
        }
    }
    let script = render(&rs);
    let generation = crate::safety::begin_apply(
        &cli.state_dir,
        &script,
        &cli.config.display().to_string(),
        confirm,
    )?;
    let started = std::time::Instant::now();
    let applied = nft::apply_script(&script);
    crate::safety::finish_apply(&cli.state_dir, generation, applied.is_ok())?;
    applied.context(
        "applying ruleset to table inet voipwall; the previous ruleset is still in place",
    )?;
    let took = started.elapsed();
    if let Some(c) = confirm {
        eprintln!(
            "generation {generation} applied; run `voipwall confirm` within {} or it is rolled back",
            voipwall_policy::format_duration(c.as_secs())
        );
    }
    let rules: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
    if cli.json {
        out(&json!({"applied": true, "rules": rules, "sets": rs.sets.len(), "notes": rs.notes, "seconds": took.as_secs_f64()}).to_string())
    } else {
        for n in &rs.notes {
            eprintln!("note: {n}");
        }
        for w in l
            .warnings
            .iter()
            .filter(|d| d.severity == Severity::Warning)
        {
            eprintln!("{}", w.render(&l.sources));
        }
        out(&format!(
            "applied table inet voipwall: {rules} rules, {} sets, in {:.0} ms; bans and known endpoints kept",
            rs.sets.len(),
            took.as_secs_f64() * 1000.0
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
        std::process::Command::new("nft")
            .args([
                "get",
                "element",
                "inet",
                "voipwall",
                set,
                &format!("{{ {addr} }}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

fn explain_cmd(
    cli: &Cli,
    addr: IpAddr,
    to: &str,
    iface: &str,
    established: bool,
    offline: bool,
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
    let l = load_policy(&cli.config, &cli.catalog_dirs, &host_facts())?;
    let rs = compile_policy(&l.policy);
    let p = Packet {
        src: addr,
        iif: iface.to_string(),
        proto: spec.proto,
        dport: spec.lo,
        established,
    };
    let use_kernel = !offline && nft::table_exists().unwrap_or(false);
    let ex = if use_kernel {
        explain(&rs, &p, &KernelSets)
    } else {
        explain(&rs, &p, &NoDynamic)
    };
    if cli.json {
        return out(&serde_json::to_string_pretty(
            &json!({"packet": p, "explanation": ex, "kernel_sets_consulted": use_kernel}),
        )?);
    }
    let mut s = format!(
        "{addr} -> {to}{}: {}\n",
        if iface.is_empty() {
            String::new()
        } else {
            format!(" on {iface}")
        },
        ex.verdict.name().to_uppercase()
    );
    if let Some(z) = &ex.zone {
        s.push_str(&format!("  zone:       {z}\n"));
    }
    s.push_str(&format!("  decided by: {}\n  path:\n", ex.decided_by));
    for st in &ex.trace {
        s.push_str(&format!("    {:<18} {}\n", st.chain, st.rule));
    }
    if !use_kernel {
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

fn parse_target(target: &str) -> anyhow::Result<IpNet> {
    parse_net(target).map_err(|e| Invalid(format!("error: `{target}`: {e}")).into())
}

/// The host's own addresses: configured ones plus those the policy names.
fn own_addresses(policy: Option<&Policy>) -> Vec<IpAddr> {
    let mut own = nft::host_addresses();
    if let Some(p) = policy {
        own.extend(p.host.addresses.iter().copied());
    }
    own
}

/// Refuses targets that would cut the host off or lock out the administrators.
/// The sources of live management sessions, read once per command.
fn session_sources(policy: Option<&Policy>) -> Vec<IpAddr> {
    let sshd = host_facts().sshd_ports.unwrap_or_else(|| vec![22]);
    crate::safety::session_sources(policy, &sshd)
}

fn refuse_protected(
    net: &IpNet,
    policy: Option<&Policy>,
    own: &[IpAddr],
    sessions: &[IpAddr],
) -> anyhow::Result<()> {
    if net.addr().is_loopback()
        || net.contains(&IpAddr::from([127, 0, 0, 1]))
        || net.contains(&"::1".parse::<IpAddr>().expect("valid"))
    {
        bail!(Invalid(format!(
            "error: refusing to ban {}: it covers loopback",
            display_net(net)
        )));
    }
    if let Some(ip) = voipwall_policy::covers_any(net, own) {
        bail!(Invalid(format!(
            "error: refusing to ban {}: it contains this host's own address {ip}",
            display_net(net)
        )));
    }
    if let Some(m) = policy
        .into_iter()
        .flat_map(|p| p.host.management.iter())
        .find(|m| net.contains(*m) || m.contains(net))
    {
        bail!(Invalid(format!(
            "error: refusing to ban {}: it overlaps management network {m}",
            display_net(net)
        )));
    }
    if let Some(a) = sessions.iter().find(|a| net.contains(*a)) {
        bail!(Invalid(format!(
            "error: refusing to ban {}: it covers {a}, the source of a live management session on this host",
            display_net(net)
        )));
    }
    Ok(())
}

fn require_table() -> anyhow::Result<()> {
    if !nft::table_exists()? {
        bail!("voipwall is not applied here (no table inet voipwall): run `voipwall apply` first");
    }
    Ok(())
}

fn fam(net: &IpNet) -> &'static str {
    if matches!(net, IpNet::V4(_)) {
        "v4"
    } else {
        "v6"
    }
}

/// Where a ban goes in the kernel.
enum Placement {
    /// A hash set keyed by one address (netlink, per-element timeout).
    Hash { set: String, key: IpAddr },
    /// An interval set (nft computes the start/end pair).
    Interval { set: String },
}

/// Chooses the set for a ban target and returns what the ban covers. A single
/// IPv6 address is banned by its prefix (`[bans] ipv6_prefix`, default /64)
/// unless `exact`: one attacker owns the whole /64, and prefix bans spare
/// registered endpoints (`vw_known_v6`).
fn placement(net: &IpNet, exact: bool, policy: Option<&Policy>) -> (Placement, IpNet) {
    if net.prefix_len() != net.max_prefix_len() {
        return (
            Placement::Interval {
                set: format!("vw_bannet_{}", fam(net)),
            },
            *net,
        );
    }
    match net.addr() {
        IpAddr::V6(_) if !exact => {
            let len = policy.map_or(64, |p| p.bans.ipv6_prefix);
            let covered = IpNet::new(net.addr(), len).map_or(*net, |n| n.trunc());
            (
                Placement::Hash {
                    set: "vw_banpfx_v6".into(),
                    key: covered.network(),
                },
                covered,
            )
        }
        addr => (
            Placement::Hash {
                set: format!("vw_ban_{}", fam(net)),
                key: addr,
            },
            *net,
        ),
    }
}

fn ban(
    cli: &Cli,
    target: &str,
    duration: Option<&str>,
    reason: &str,
    exact: bool,
) -> anyhow::Result<()> {
    let net = parse_target(target)?;
    let policy = policy_or_default(cli);
    let (place, covered) = placement(&net, exact, policy.as_ref());
    let sessions = session_sources(policy.as_ref());
    refuse_protected(
        &covered,
        policy.as_ref(),
        &own_addresses(policy.as_ref()),
        &sessions,
    )
    .map_err(|e| {
        if covered == net {
            e
        } else {
            Invalid(format!(
                "{e} (the /{} of {net}; --exact bans the address alone)",
                covered.prefix_len()
            ))
            .into()
        }
    })?;
    let secs = match duration {
        Some(d) => parse_duration(d).map_err(|e| Invalid(format!("error: --for {d}: {e}")))?,
        None => policy.as_ref().map_or(3600, |p| p.bans.default_ttl),
    };
    require_table()?;
    let started = std::time::Instant::now();
    let set = match place {
        Placement::Hash { set, key } => {
            let mut sock = SetElements::open("voipwall")?;
            sock.add(
                &set,
                &[Elem {
                    addr: key,
                    timeout_ms: Some(secs.saturating_mul(1000)),
                }],
            )?;
            set
        }
        Placement::Interval { set } => {
            nft::add_interval(&set, &covered, Some(secs))?;
            set
        }
    };
    let us = started.elapsed().as_micros();
    let spared = if set.starts_with("vw_banpfx") {
        "; registered endpoints in it are spared"
    } else {
        ""
    };
    if cli.json {
        out(&json!({"banned": display_net(&covered), "set": set, "seconds": secs, "reason": reason, "micros": us}).to_string())
    } else {
        out(&format!(
            "banned {} for {} ({reason}) in {set}{spared}",
            display_net(&covered),
            voipwall_policy::format_duration(secs)
        ))
    }
}

fn ban_file(
    cli: &Cli,
    path: &std::path::Path,
    duration: Option<&str>,
    reason: &str,
    exact: bool,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let policy = policy_or_default(cli);
    let secs = match duration {
        Some(d) => parse_duration(d).map_err(|e| Invalid(format!("error: --for {d}: {e}")))?,
        None => policy.as_ref().map_or(3600, |p| p.bans.default_ttl),
    };
    let mut hashes: std::collections::BTreeMap<String, Vec<Elem>> = Default::default();
    let mut intervals: std::collections::BTreeMap<String, Vec<(IpNet, Option<u64>)>> =
        Default::default();
    let mut errors = Vec::new();
    let own = own_addresses(policy.as_ref());
    let sessions = session_sources(policy.as_ref());
    for (i, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let net = match parse_net(t) {
            Ok(n) => n,
            Err(e) => {
                errors.push(format!("{}:{}: `{t}`: {e}", path.display(), i + 1));
                continue;
            }
        };
        let (place, covered) = placement(&net, exact, policy.as_ref());
        if let Err(e) = refuse_protected(&covered, policy.as_ref(), &own, &sessions) {
            errors.push(format!(
                "{}:{}: {}",
                path.display(),
                i + 1,
                e.to_string().trim_start_matches("error: ")
            ));
            continue;
        }
        match place {
            Placement::Hash { set, key } => {
                hashes.entry(set).or_default().push(Elem {
                    addr: key,
                    timeout_ms: Some(secs.saturating_mul(1000)),
                });
            }
            Placement::Interval { set } => intervals
                .entry(set)
                .or_default()
                .push((covered, Some(secs))),
        }
    }
    if !errors.is_empty() {
        return Err(Invalid(format!(
            "error: {}\nerror: nothing was banned",
            errors.join("\nerror: ")
        ))
        .into());
    }
    require_table()?;
    let started = std::time::Instant::now();
    let mut sock = SetElements::open("voipwall")?;
    for (set, elems) in &hashes {
        sock.add(set, elems)?;
    }
    for (set, nets) in &intervals {
        nft::add_intervals(set, nets)?;
    }
    let took = started.elapsed();
    let n = hashes.values().map(Vec::len).sum::<usize>()
        + intervals.values().map(Vec::len).sum::<usize>();
    if cli.json {
        out(&json!({"banned": n, "seconds": secs, "reason": reason, "elapsed_seconds": took.as_secs_f64()}).to_string())
    } else {
        out(&format!(
            "banned {n} entries for {} ({reason}) in {:.1} ms",
            voipwall_policy::format_duration(secs),
            took.as_secs_f64() * 1000.0
        ))
    }
}

fn unban(cli: &Cli, target: &str) -> anyhow::Result<()> {
    let net = parse_target(target)?;
    let policy = policy_or_default(cli);
    require_table()?;
    let mut removed = Vec::new();
    let mut sock = SetElements::open("voipwall")?;
    if net.prefix_len() == net.max_prefix_len() {
        let set = format!("vw_ban_{}", fam(&net));
        if sock.delete(&set, &[net.addr()]).is_ok() {
            removed.push(set);
        }
    }
    // The prefix ban covering an address, or the prefix itself.
    let prefix_len = match net {
        IpNet::V4(_) => policy.as_ref().map_or(24, |p| p.bans.ipv4_prefix),
        IpNet::V6(_) => policy.as_ref().map_or(64, |p| p.bans.ipv6_prefix),
    };
    if let (true, Ok(pfx)) = (
        net.prefix_len() >= prefix_len,
        IpNet::new(net.addr(), prefix_len),
    ) {
        let set = format!("vw_banpfx_{}", fam(&net));
        if sock.delete(&set, &[pfx.trunc().network()]).is_ok() {
            removed.push(format!("{set} ({})", pfx.trunc()));
        }
    }
    let set = format!("vw_bannet_{}", fam(&net));
    if nft::delete_interval(&set, &net).is_ok() {
        removed.push(set);
    }
    if removed.is_empty() {
        return Err(Invalid(format!("error: {} is not banned", display_net(&net))).into());
    }
    if cli.json {
        out(&json!({"unbanned": display_net(&net), "sets": removed}).to_string())
    } else {
        out(&format!(
            "unbanned {} (from {})",
            display_net(&net),
            removed.join(", ")
        ))
    }
}

fn runtime_list(
    cli: &Cli,
    kind: &str,
    target: &str,
    duration: Option<&str>,
    delete: bool,
) -> anyhow::Result<()> {
    let net = parse_target(target)?;
    let set = format!("vw_{kind}_{}", fam(&net));
    let verb = if kind == "allowrt" { "allow" } else { "block" };
    if verb == "block" && !delete {
        let policy = policy_or_default(cli);
        let sessions = session_sources(policy.as_ref());
        refuse_protected(
            &net,
            policy.as_ref(),
            &own_addresses(policy.as_ref()),
            &sessions,
        )?;
    }
    require_table()?;
    if delete {
        nft::delete_interval(&set, &net).map_err(|_| {
            Invalid(format!(
                "error: {} is not in the runtime {verb} list",
                display_net(&net)
            ))
        })?;
        return out(&format!(
            "removed {} from the runtime {verb} list",
            display_net(&net)
        ));
    }
    let secs = duration
        .map(parse_duration)
        .transpose()
        .map_err(|e| Invalid(format!("error: --for: {e}")))?;
    nft::add_interval(&set, &net, secs)?;
    if cli.json {
        out(&json!({verb: display_net(&net), "set": set, "seconds": secs}).to_string())
    } else {
        out(&format!(
            "{verb}ed {}{}",
            display_net(&net),
            secs.map(|s| format!(" for {}", voipwall_policy::format_duration(s)))
                .unwrap_or_else(|| " until removed".into())
        ))
    }
}

fn bans(cli: &Cli) -> anyhow::Result<()> {
    require_table()?;
    let policy = policy_or_default(cli);
    let mut rows = Vec::new();
    for set in [
        "vw_ban_v4",
        "vw_ban_v6",
        "vw_banpfx_v4",
        "vw_banpfx_v6",
        "vw_bannet_v4",
        "vw_bannet_v6",
    ] {
        for mut e in nft::list_set(set)? {
            // Prefix-ban keys are masked addresses: show them as the prefix they stand for.
            if set.starts_with("vw_banpfx") {
                let len = match e.net {
                    IpNet::V4(_) => policy.as_ref().map_or(24, |p| p.bans.ipv4_prefix),
                    IpNet::V6(_) => policy.as_ref().map_or(64, |p| p.bans.ipv6_prefix),
                };
                e.net = IpNet::new(e.net.addr(), len).map_or(e.net, |n| n.trunc());
            }
            rows.push((set, e));
        }
    }
    if cli.json {
        let v: Vec<_> = rows.iter().map(|(s, e)| json!({"set": s, "addr": display_net(&e.net), "timeout": e.timeout, "expires": e.expires})).collect();
        return out(&serde_json::to_string(&v)?);
    }
    let mut s = format!("{:<14} {:<40} {}\n", "SET", "ADDRESS", "EXPIRES IN");
    for (set, e) in &rows {
        let exp = e
            .expires
            .map_or_else(|| "never".to_string(), voipwall_policy::format_duration);
        s.push_str(&format!("{set:<14} {:<40} {exp}\n", display_net(&e.net)));
    }
    s.push_str(&format!("{} entries\n", rows.len()));
    out(&s)
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
