//! `check`, `compile`, `audit`, `export`, `discover`, `catalog`: the policy without applying it.

use super::*;

pub(super) fn check(cli: &Globals, kernel: bool) -> anyhow::Result<()> {
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
                for w in foreign_warnings(rs.bans_only()) {
                    eprintln!("{w}");
                }
            }
            // Log sources: a file not there yet is followed once it appears,
            // so it is a warning, not an error.
            let missing: Vec<String> = l
                .policy
                .sources
                .iter()
                .filter_map(|s| {
                    let p = s.path.as_deref()?;
                    (!std::path::Path::new(p).exists()).then(|| {
                        format!(
                            "source {} {p} ({}): no such file yet; the daemon follows it once it appears",
                            s.format, s.origin
                        )
                    })
                })
                .collect();
            if cli.json {
                let warnings: Vec<_> = l
                    .warnings
                    .iter()
                    .map(|d| json!({"severity": d.severity, "location": d.location(&l.sources), "message": d.message, "label": d.label, "help": d.help}))
                    .collect();
                out(
                    &json!({"ok": true, "diagnostics": warnings, "discovery": l.discovery, "notes": rs.notes,
                            "sources": l.policy.sources, "missing_sources": missing})
                        .to_string(),
                )
            } else {
                for d in &l.discovery {
                    out(&format!("discovery: {d}"))?;
                }
                // What the compiler noticed: SIP that no packet copy reads,
                // expired list entries, carved-out port ranges.
                for n in &rs.notes {
                    out(&format!("note: {n}"))?;
                }
                for m in &missing {
                    eprintln!("warning: {m}");
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

pub(super) fn compile_cmd(cli: &Globals) -> anyhow::Result<()> {
    let l = load_policy(&cli.config, &cli.catalog_dirs, &host_facts())?;
    let rs = compile_policy(&l.policy);
    if cli.json {
        out(&serde_json::to_string_pretty(&rs)?)
    } else {
        out(&render(&rs))
    }
}

pub(super) fn audit_cmd(cli: &Globals) -> anyhow::Result<()> {
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

pub(super) fn export_cmd(cli: &Globals, target: &str) -> anyhow::Result<()> {
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
    // `--json` with a text target: the text and the notes in one object.
    if cli.json && matches!(t, Target::Firewalld | Target::Iptables) {
        return out(&json!({"target": target, "text": e.body, "notes": e.notes}).to_string());
    }
    // JSON targets carry only what their client accepts: the notes go to
    // stderr (text targets also have them as comments).
    if matches!(t, Target::Aws | Target::Gcp | Target::Azure) {
        for n in &e.notes {
            eprintln!("note: {n}");
        }
    }
    out(&e.body)
}

pub(super) fn discover_cmd(cli: &Globals) -> anyhow::Result<()> {
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

pub(super) fn catalog(cli: &Globals) -> anyhow::Result<()> {
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
