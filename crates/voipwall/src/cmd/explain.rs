//! `explain ADDR PROTO/PORT`: what the generation in force, the live sets and the other tables do with a packet.

use super::*;

/// Asks the kernel whether an address is in one of our dynamic sets.
pub(super) struct KernelSets;

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
            // Hash sets, and the feeds' interval sets (up to a million
            // networks, never dumped): a single-key GETSETELEM on an
            // interval set answers with the interval holding the key.
            voipwall_sys::query::has_key("voipwall", set, *addr).unwrap_or(false)
        }
    }
}

/// The ruleset `explain` answers from: `--policy FILE` or `--offline` → the
/// file; otherwise the generation in force (recorded with its compiled
/// ruleset at apply), falling back to the file, said so, when voipwall is not
/// applied or the generation predates the record.
pub(super) fn explain_source(
    cli: &Globals,
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
        crate::safety::running_generation(&crate::safety::state_store(&cli.state_dir)?)
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
pub(super) fn explain_cmd(
    cli: &Globals,
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
    // Which table decides: voipwall's for a drop, or in full mode; in
    // bans-only mode the other tables decide what voipwall accepts.
    let bans_only = src.ruleset.bans_only();
    let others: Vec<String> = foreign
        .iter()
        .filter(|c| c.effect() != Effect::Nothing)
        .map(|c| format!("table {} {}", c.family, c.table))
        .chain(
            legacy
                .iter()
                .filter(|t| t.contains("filter"))
                .map(|t| format!("iptables-legacy table {t}")),
        )
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let decides = if !bans_only || ex.verdict != voipwall_nft::Verdict::Accept {
        "table inet voipwall".to_string()
    } else if offline {
        "the other firewall's tables (not inspected with --offline)".to_string()
    } else if others.is_empty() {
        "nothing: voipwall runs bans-only and no other table filters this packet, so it passes"
            .to_string()
    } else {
        others.join(", ")
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
            "bans_only": bans_only,
            "decided_by_table": decides,
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
    if bans_only {
        s.push_str(&format!(
            "  mode:       bans-only (voipwall drops bans, blocks and floods; other tables decide the rest)\n  decides:    {decides}\n"
        ));
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
