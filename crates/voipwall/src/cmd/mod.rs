//! One function per subcommand, grouped by what they touch.

mod apply;
mod bans;
mod explain;
mod policy;

use apply::*;
use bans::*;
use explain::*;
use policy::*;

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
use crate::{Cli, Cmd, Globals, Invalid};

/// Dispatches a parsed command line.
pub(crate) fn run(cli: &Cli) -> anyhow::Result<()> {
    let (g, cmd) = (&cli.g, &cli.cmd);
    match cmd {
        Cmd::Check { kernel } => check(g, *kernel),
        Cmd::Compile => compile_cmd(g),
        Cmd::Audit => audit_cmd(g),
        Cmd::Discover => discover_cmd(g),
        Cmd::Init(a) => crate::init::run(g, a),
        Cmd::Export { target } => export_cmd(g, target),
        Cmd::Apply { confirm, force } => apply(g, confirm.as_deref(), *force),
        Cmd::Confirm => out(&crate::safety::confirm(&g.state_dir)?),
        Cmd::Rollback { to } => out(&crate::safety::rollback(&g.state_dir, *to, "cli")?),
        Cmd::Generations { diff } => generations(g, *diff),
        Cmd::RollbackTimer {
            generation,
            deadline_ms,
        } => crate::safety::rollback_timer(&g.state_dir, *generation, *deadline_ms),
        Cmd::Disable => disable(g),
        Cmd::Explain {
            addr,
            to,
            iface,
            established,
            offline,
            policy,
        } => match to {
            Some(to) => explain_cmd(
                g,
                *addr,
                to,
                iface,
                *established,
                *offline,
                policy.as_deref(),
            ),
            None => crate::client::explain_detection(g, *addr),
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
                g,
                Op {
                    verb: Verb::Ban,
                    targets,
                    labels,
                    seconds: seconds.flatten(),
                    default_ttl: seconds.is_none(),
                    reason: reason.clone(),
                    exact: *exact,
                    force: *force,
                    actor: voipwall_core::plane::cli_actor(),
                },
            )
        }
        Cmd::Unban { target } => runtime(g, Op::simple(Verb::Unban, target, None)),
        Cmd::Extend { target, duration } => {
            let Some(secs) = for_duration(duration)? else {
                return Err(Invalid(
                    "error: extend takes a duration from now; `ban --for permanent` makes a ban permanent".into(),
                )
                .into());
            };
            runtime(g, Op::simple(Verb::Extend, target, Some(secs)))
        }
        Cmd::Allow {
            target,
            duration,
            delete,
        } => {
            let verb = if *delete { Verb::Disallow } else { Verb::Allow };
            let secs = duration.as_deref().map(for_duration).transpose()?.flatten();
            runtime(g, Op::simple(verb, target, secs))
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
            runtime(g, op)
        }
        Cmd::Bans { all, rule, kernel } => match crate::client::daemon().filter(|_| !kernel) {
            Some(mut c) => crate::client::bans(g, &mut c, *all, rule.clone()),
            None => bans(g),
        },
        Cmd::Status => crate::client::status(g),
        Cmd::Events { follow, limit } => crate::client::events(g, *follow, *limit),
        Cmd::Drops {
            minutes,
            top,
            follow,
        } => crate::client::drops(g, *minutes, *top, *follow),
        Cmd::Reload => crate::client::reload(g),
        Cmd::Fleet(crate::FleetCmd::Status) => crate::client::fleet_status(g),
        Cmd::Call(crate::CallCmd::Decide { from, user, to }) => {
            crate::client::call_decide(g, *from, user.clone(), to.clone())
        }
        Cmd::Catalog => catalog(g),
        Cmd::Assets { dir } => crate::assets::write(dir),
        Cmd::Replay(a) => crate::replay::replay(g, a),
        Cmd::Daemon(a) => {
            crate::logging::init();
            crate::daemon::run(
                &crate::daemon::Paths {
                    config: g.config.clone(),
                    catalog_dirs: g.catalog_dirs.clone(),
                    state_dir: g.state_dir.clone(),
                },
                &a.args(),
                crate::daemon::Starters {
                    api: Some(voipwall_api::start),
                    fleet: Some(voipwall_fleet::start),
                },
            )
        }
        Cmd::Token(t) => token(g, t),
    }
}

/// `voipwall token create|list|revoke`: API tokens in the store, hashed.
fn token(g: &Globals, t: &crate::TokenCmd) -> anyhow::Result<()> {
    use crate::TokenCmd;
    // Only `create` may start a store; listing and revoking read one.
    let mut store = if matches!(t, TokenCmd::Create { .. }) {
        crate::safety::state_store(&g.state_dir)?
    } else {
        crate::safety::existing_store(&g.state_dir)?
    };
    match t {
        TokenCmd::Create { role, name } => {
            let role = voipwall_core::tokens::Role::parse(role)
                .ok_or_else(|| Invalid(format!("error: --role {role}: admin, read or bouncer")))?;
            let token = voipwall_core::tokens::create(&mut store, name, role)?;
            if g.json {
                out(&json!({"name": name, "role": role.name(), "token": token}).to_string())
            } else {
                out(&format!(
                    "{token}\n(the {} token `{name}`; shown once, stored hashed: keep it now)",
                    role.name()
                ))
            }
        }
        TokenCmd::List => {
            let rows = store.tokens()?;
            if g.json {
                return out(&serde_json::to_string(&rows)?);
            }
            let mut s = format!("{:<24} {:<8} {}\n", "NAME", "ROLE", "STATE");
            for r in &rows {
                s.push_str(&format!(
                    "{:<24} {:<8} {}\n",
                    r.name,
                    r.role,
                    r.revoked.map_or_else(
                        || format!("created {}", r.created),
                        |t| format!("revoked {t}")
                    )
                ));
            }
            out(&s)
        }
        TokenCmd::Revoke { name } => {
            let at = crate::safety::now();
            if !store.revoke_token(name, at)? {
                return Err(Invalid(format!("error: no token named `{name}` is in force")).into());
            }
            store.audit(at, "cli", "token-revoke", name)?;
            out(&format!("revoked the token `{name}`"))
        }
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

/// Other firewalls on the same hooks (nft tables, iptables-legacy), one
/// line each: `apply` and `check --kernel` print them. In bans-only mode
/// they decide what passes by design: said as a note, not a warning.
fn foreign_warnings(bans_only: bool) -> Vec<String> {
    if bans_only {
        return nft::foreign_chains()
            .unwrap_or_default()
            .iter()
            .filter(|c| {
                (c.sees_inbound(voipwall_nft::Family::V4) || c.sees_inbound(voipwall_nft::Family::V6))
                    && c.effect() != voipwall_nft::foreign::Effect::Nothing
            })
            .map(|c| {
                format!(
                    "note: {}: decides what passes beyond voipwall's bans, blocks and flood guards (bans-only mode)",
                    c.describe()
                )
            })
            .chain(nft::legacy_iptables().into_iter().filter(|t| t.contains("filter")).map(|t| {
                format!("note: iptables-legacy table {t}: decides what passes beyond voipwall's bans (bans-only mode)")
            }))
            .collect();
    }
    let mut w = voipwall_nft::foreign::warnings(&nft::foreign_chains().unwrap_or_default());
    let legacy = nft::legacy_iptables();
    if !legacy.is_empty() {
        w.push(format!(
            "iptables-legacy tables are loaded ({}): they filter the same packets and voipwall cannot inspect them",
            legacy.join(", ")
        ));
    }
    w.into_iter().map(|w| format!("warning: {w}")).collect()
}

/// What `explain` evaluates: the generation in force, or a policy file.
struct ExplainSource {
    ruleset: voipwall_nft::Ruleset,
    /// For humans: where the rules came from.
    from: String,
    /// The generation in force, when that is what is explained.
    generation: Option<i64>,
}

/// Policy for runtime commands; a missing or broken policy falls back to defaults.
fn policy_or_default(cli: &Globals) -> Option<Policy> {
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
