//! From the policy and the rule files to the engine's configuration: rule
//! overrides of `[detect.rules.<id>]`, never-ban networks (own addresses,
//! management, allow list, trusted networks, `[detect] never_ban`), and the
//! log formats the policy defines.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use voipwall_detect::{Config, RuleSet, Threshold};
use voipwall_logfmt::Format;
use voipwall_policy::Policy;

use crate::Invalid;

/// Built-in rules, then `rules/*.toml` of each layer and catalog directory
/// (a file with the same rule id replaces the earlier one).
pub fn rules(extra: &[PathBuf]) -> anyhow::Result<RuleSet> {
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

/// What the host adds to the engine's never-ban list, read now: its own
/// addresses, the sources of live management sessions (SSH, the admin
/// ports: an operator connected while the daemon starts or reloads is never
/// banned for what their address also sends), and the protected
/// infrastructure. The one builder for the daemon's start and its reloads.
pub fn engine_host(
    policy: &Policy,
    own: &[std::net::IpAddr],
) -> voipwall_nft::protect::HostProtection {
    let sshd = crate::context::host_facts()
        .sshd_ports
        .unwrap_or_else(|| vec![22]);
    voipwall_nft::protect::HostProtection {
        own: own.to_vec(),
        sessions: crate::safety::session_sources(Some(policy), &sshd),
        infrastructure: crate::host::infrastructure(Some(policy)),
        ..Default::default()
    }
}

/// The engine configuration a policy asks for.
pub fn engine_config(
    policy: &Policy,
    mut rules: RuleSet,
    host: &voipwall_nft::protect::HostProtection,
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
        if let Some(n) = o.sources {
            r.sources = n;
        }
        if let Some(s) = o.shield {
            r.shield = s * 1000;
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
    cfg.v6_escalate_after = d.ipv6_escalate_after;
    cfg.v6_escalate_within = d.ipv6_escalate_within * 1000;
    cfg.max_sources = d.max_sources;
    cfg.max_accounts = d.max_accounts;
    cfg.remember_ms = d.remember_endpoints.saturating_mul(1000);
    cfg.shield_v4 = d
        .shield_v4_escalate_after
        .map(|n| (policy.bans.ipv4_prefix, n));
    // The one protection list (the CLI and the control socket refuse the
    // same addresses the engine never bans).
    cfg.call = call_config(policy);
    let guard = voipwall_nft::protect::Protected::new(Some(policy), host);
    cfg.never_ban.extend(guard.networks());
    cfg.never_ban.sort();
    cfg.never_ban.dedup();
    cfg
}

/// The named prefix lists (`premium`, `high-risk`): the built-in ones,
/// each replaced by a file of the same name under `call/` of a layer.
pub fn prefix_lists() -> Vec<voipwall_detect::calls::PrefixList> {
    let mut lists = voipwall_detect::calls::builtin_lists();
    for dir in crate::context::LAYERS.iter().map(PathBuf::from) {
        for p in crate::context::toml_files(&dir.join("call")) {
            match std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| voipwall_detect::calls::parse_list(&t))
            {
                Ok(l) => {
                    lists.retain(|x| x.name != l.name);
                    lists.push(l);
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "A prefix list cannot be read; the built-in one stays.")
                }
            }
        }
    }
    lists
}

/// The engine's call rules: prefix lists expanded, trunks resolved to
/// their addresses, time zones loaded. `None` without rules.
pub fn call_config(policy: &Policy) -> Option<voipwall_detect::calls::CallConfig> {
    use voipwall_detect::calls::{Act, CallConfig, CallRule, Hours, Numbering, Origin};
    use voipwall_policy::{CallAction, CallFrom, NetSpec};
    if policy.call.rules.is_empty() {
        return None;
    }
    let lists = prefix_lists();
    let expand = |v: &[String]| -> Vec<String> {
        v.iter()
            .flat_map(|p| match lists.iter().find(|l| l.name == *p) {
                Some(l) => l.prefixes.clone(),
                None => vec![p.clone()],
            })
            .collect()
    };
    let rules = policy
        .call
        .rules
        .iter()
        .map(|r| CallRule {
            name: r.name.clone(),
            from: r
                .from
                .iter()
                .map(|f| match f {
                    CallFrom::Net(n) => Origin::Nets(vec![*n]),
                    CallFrom::User(a, b) => Origin::User(a.clone(), b.clone()),
                    CallFrom::Trunk(t) => Origin::Nets(
                        policy
                            .peers
                            .iter()
                            .filter(|p| p.name == *t)
                            .filter_map(|p| match &p.net {
                                NetSpec::Net(n) => Some(*n),
                                _ => None,
                            })
                            .collect(),
                    ),
                })
                .collect(),
            to: expand(&r.to),
            deny_to: expand(&r.deny_to),
            max_concurrent: r.max_concurrent,
            max_per_minute: r.max_per_minute,
            hours: r.hours.as_ref().map(|h| Hours {
                days: h.days,
                start_min: h.start_min,
                end_min: h.end_min,
                tz: jiff::tz::TimeZone::get(&h.tz).unwrap_or(jiff::tz::TimeZone::UTC),
                text: h.text.clone(),
            }),
            action: match r.action {
                CallAction::Alert => Act::Alert,
                CallAction::Ban => Act::Ban,
                CallAction::Drop => Act::Drop,
            },
            ban: r.ban * 1000,
            numbering: Numbering {
                country_code: r.numbering.country_code.clone(),
                national_prefix: r.numbering.national_prefix.clone(),
                international_prefix: r.numbering.international_prefix.clone(),
            },
        })
        .collect();
    Some(CallConfig {
        rules,
        max_duration: policy.call.max_duration * 1000,
        max_calls: 100_000,
    })
}

/// The policy's own log formats.
pub fn user_formats(policy: &Policy) -> anyhow::Result<Vec<Format>> {
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
pub fn is_default_policy(path: &Path) -> bool {
    path == Path::new("/etc/voipwall/voipwall.toml")
}

/// The daemon's engine hash seed, new at every start and reload: nobody
/// can read it off the source and aim hash collisions at the engine's
/// per-source tables (replay keeps the fixed one: same input, same output).
/// Eight bytes from the kernel's random source (the clock and pid as a
/// last resort, which still differ per start).
pub fn random_seed() -> u64 {
    crate::random::seed()
}
