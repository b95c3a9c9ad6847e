//! `apply`, `generations`, `disable`: the one apply path, its history, and removing the table.

use super::*;

pub(super) fn apply(cli: &Globals, confirm: Option<&str>, force: bool) -> anyhow::Result<()> {
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
    for w in foreign_warnings(a.ruleset.bans_only()) {
        eprintln!("{w}");
    }
    if let Some(c) = confirm {
        eprintln!(
            "generation {} applied; run `{}` within {} or it is rolled back",
            a.generation,
            cli.next("confirm"),
            voipwall_policy::format_duration(c.as_secs())
        );
    }
    let rs = &a.ruleset;
    let rules: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
    if cli.json {
        out(&json!({"applied": true, "generation": a.generation, "unchanged": a.unchanged, "rules": rules, "sets": rs.sets.len(), "notes": rs.notes, "seconds": a.took.as_secs_f64()}).to_string())
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
            "applied table inet voipwall (generation {}{}): {rules} rules, {} sets, in {:.0} ms; bans and known endpoints kept",
            a.generation,
            if a.unchanged {
                ", unchanged: the policy compiles to the generation in force"
            } else {
                ""
            },
            rs.sets.len(),
            a.took.as_secs_f64() * 1000.0
        ))
    }
}

pub(super) fn generations(cli: &Globals, diff: Option<i64>) -> anyhow::Result<()> {
    let store = crate::safety::existing_store(&cli.state_dir)?;
    let gens = store.generations(50)?;
    if let Some(id) = diff {
        let d = crate::safety::generation_diff(&store, id)?;
        if cli.json {
            return out(
                &json!({"generation": id, "removed": d.removed, "added": d.added}).to_string(),
            );
        }
        let mut s = String::new();
        for l in &d.removed {
            s.push_str(&format!("- {l}\n"));
        }
        for l in &d.added {
            s.push_str(&format!("+ {l}\n"));
        }
        s.push_str(&format!(
            "generation {id}: {} lines removed, {} added\n",
            d.removed.len(),
            d.added.len()
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

pub(super) fn disable(cli: &Globals) -> anyhow::Result<()> {
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
