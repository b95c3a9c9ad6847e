//! From the policy and the rule files to the engine's configuration: rule
//! overrides of `[detect.rules.<id>]`, never-ban networks (own addresses,
//! management, allow list, trusted networks, `[detect] never_ban`), and the
//! log formats the policy defines.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ipnet::IpNet;
use voipwall_detect::{Config, RuleSet, Threshold};
use voipwall_logfmt::Format;
use voipwall_policy::{NetSpec, Policy, Zone};

use crate::Invalid;

/// Built-in rules, then `rules/*.toml` of each layer and catalog directory
/// (a file with the same rule id replaces the earlier one).
pub(crate) fn rules(extra: &[PathBuf]) -> anyhow::Result<RuleSet> {
    let mut texts: Vec<(String, String)> = voipwall_detect::rules::BUILTIN_RULES
        .iter()
        .map(|(n, t)| (format!("builtin:{n}"), (*t).to_string()))
        .collect();
    for dir in crate::context::LAYERS
        .iter()
        .map(PathBuf::from)
        .chain(extra.iter().cloned())
    {
        for p in crate::context::toml_files(&dir.join("rules")) {
            let t =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            texts.push((p.display().to_string(), t));
        }
    }
    RuleSet::load(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
        .map_err(|errs| Invalid(errs.iter().map(|e| format!("error: {e}\n")).collect()).into())
}

/// The engine configuration a policy asks for.
pub(crate) fn engine_config(
    policy: &Policy,
    mut rules: RuleSet,
    own: &[std::net::IpAddr],
) -> Config {
    let d = &policy.detect;
    for (id, o) in &d.rules {
        let Some(r) = rules.get_mut(id) else { continue };
        if let Some(e) = o.enabled {
            r.enabled = e;
        }
        if let Some(t) = &o.thresholds {
            r.thresholds = t
                .iter()
                .map(|t| Threshold {
                    count: t.count,
                    within: t.within * 1000,
                    ban: t.ban * 1000,
                })
                .collect();
        }
        if let Some(a) = &o.agents {
            r.agents.clone_from(a);
        }
        r.agents.extend(o.extra_agents.iter().cloned());
        if let Some(p) = &o.prefixes {
            r.prefixes.clone_from(p);
        }
        if let Some(s) = o.spare_known {
            r.spare_known = s;
        }
        if let Some(s) = o.answer_within {
            r.answer_within = s * 1000;
        }
    }
    if let Some(rec) = rules.recidive.as_mut() {
        if let Some(w) = d.recidive_within {
            rec.within = w * 1000;
        }
        if let Some(l) = &d.recidive_ladder {
            rec.ladder = l.iter().map(|s| s * 1000).collect();
        }
    }
    let mut cfg = Config::new(rules);
    cfg.group_v4 = d.group_v4;
    cfg.group_v6 = d.group_v6;
    cfg.max_sources = d.max_sources;
    let nets = policy
        .allow
        .iter()
        .map(|e| &e.net)
        .chain(
            policy
                .networks
                .iter()
                .filter(|n| n.zone == Zone::Trusted)
                .map(|n| &n.net),
        )
        .chain(policy.peers.iter().map(|p| &p.net))
        .filter_map(|n| match n {
            NetSpec::Net(n) => Some(*n),
            NetSpec::Host(_) => None,
        });
    cfg.never_ban.extend(nets);
    cfg.never_ban.extend(policy.host.management.iter().copied());
    cfg.never_ban
        .extend(policy.host.addresses.iter().map(|&a| IpNet::from(a)));
    cfg.never_ban.extend(own.iter().map(|&a| IpNet::from(a)));
    cfg.never_ban.extend(d.never_ban.iter().copied());
    cfg.never_ban.sort();
    cfg.never_ban.dedup();
    cfg
}

/// The policy's own log formats.
pub(crate) fn user_formats(policy: &Policy) -> anyhow::Result<Vec<Format>> {
    policy
        .detect
        .logformats
        .iter()
        .map(|u| {
            Format::from_regex(&u.id, &u.event, &u.regex).map_err(|e| {
                Invalid(format!("error: {}: logformat `{}`: {e}", u.origin, u.id)).into()
            })
        })
        .collect()
}

/// Whether `path` names the default policy location (absent is fine there).
pub(crate) fn is_default_policy(path: &Path) -> bool {
    path == Path::new("/etc/voipwall/voipwall.toml")
}
