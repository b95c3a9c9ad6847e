//! The runtime verbs (`ban`, `unban`, `block`, `allow`, `bans --kernel`): one ban plane, through the daemon when one runs.

use super::*;

pub(super) fn bans(cli: &Globals) -> anyhow::Result<()> {
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
    s.push_str(&format!(
        "{} {}\n",
        rows.len(),
        if rows.len() == 1 { "entry" } else { "entries" }
    ));
    out(&s)
}

/// `--for` of the runtime verbs: the one duration grammar, or `permanent`.
pub(super) fn for_duration(d: &str) -> anyhow::Result<Option<u64>> {
    parse_ban_duration(d).map_err(|e| Invalid(format!("error: --for {d}: {e}")).into())
}

/// `ban --file`: one address or network per line, `#` comments.
pub(super) fn read_targets(path: &std::path::Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
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
pub(super) fn runtime(cli: &Globals, op: Op) -> anyhow::Result<()> {
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
            let mut ledger =
                crate::plane::StoreLedger::new(crate::safety::state_store(&cli.state_dir)?);
            let o = crate::plane::run(&op, policy.as_ref(), &guard, &mut bans, &mut ledger, now);
            ledger.finish()?;
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
