//! `voipwall init`: look at the host (PBX configuration, listening sockets,
//! interfaces and their addresses, the operator's own SSH session), pick a
//! preset, and write a commented policy that would not lock that session
//! out. The generated text is loaded, compiled and run through the
//! anti-lockout check before it is written or printed.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use voipwall_host::propose::{HostView, Iface, default_route_interfaces, pick_preset, render};

use crate::Invalid;

/// Interfaces with their prefixes (rtnetlink) and whether each holds a
/// default route.
pub(crate) fn interfaces() -> Vec<Iface> {
    let defaults = default_route_interfaces(
        &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        &std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    );
    voipwall_sys::link::interfaces()
        .unwrap_or_default()
        .into_iter()
        .map(|i| Iface {
            default_route: defaults.contains(&i.name),
            addrs: i
                .addrs
                .into_iter()
                // Link-local IPv6 is on every interface and says nothing.
                .filter(
                    |n| !matches!(n.addr(), IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80),
                )
                .collect(),
            name: i.name,
        })
        .collect()
}

/// Arguments of `voipwall init`.
#[derive(clap::Args, Debug)]
pub(crate) struct InitArgs {
    /// Use this preset instead of the one detected.
    #[arg(long)]
    preset: Option<String>,
    /// Print the policy instead of writing it.
    #[arg(long)]
    dry_run: bool,
    /// Overwrite an existing policy file.
    #[arg(long)]
    force: bool,
}

/// Other firewalls in force for inbound packets: nft tables with chains
/// on the input hook that hold rules or drop (ufw's and firewalld's, as
/// iptables-nft or nft), and iptables-legacy tables. The proposed policy
/// then runs beside them, bans-only.
fn other_firewall() -> Vec<String> {
    use voipwall_nft::{Family, foreign::Effect};
    let mut out: Vec<String> = voipwall_sys::nft::foreign_chains()
        .unwrap_or_default()
        .into_iter()
        // The input hook only: NAT and forwarding chains (docker,
        // libvirt) decide nothing about what reaches this host.
        .filter(|c| {
            c.hook == "input"
                && (c.sees_inbound(Family::V4) || c.sees_inbound(Family::V6))
                && c.effect() != Effect::Nothing
        })
        .map(|c| format!("table {} {}", c.family, c.table))
        .chain(
            voipwall_sys::nft::legacy_iptables()
                .into_iter()
                .filter(|t| t.contains("filter"))
                .map(|t| format!("iptables-legacy {t}")),
        )
        .collect();
    out.sort();
    out.dedup();
    out
}

pub(crate) fn run(cli: &crate::Globals, a: &InitArgs) -> anyhow::Result<()> {
    let (catalog, _) = crate::context::catalog(&cli.catalog_dirs)?;
    let facts = crate::context::host_facts();
    let sshd = facts.sshd_ports.clone().unwrap_or_else(|| vec![22]);
    let discovery = voipwall_discover::discover(
        &voipwall_discover::Disk,
        &voipwall_discover::Roots::default(),
    );
    let mut view = HostView {
        interfaces: interfaces(),
        listening: crate::host::listening(),
        sessions: crate::safety::sessions(&sshd),
        discovery,
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        existing_logs: Vec::new(),
        other_firewall: other_firewall(),
    };
    let preset = match &a.preset {
        Some(name) => match catalog.presets.get(name) {
            Some(p) => Some((p, "chosen with --preset".to_string())),
            None => {
                return Err(Invalid(format!(
                    "unknown preset `{name}`; presets: {}",
                    catalog.preset_names()
                ))
                .into());
            }
        },
        None => pick_preset(catalog.presets.values(), &|p| Path::new(p).exists())
            .map(|(p, hits)| (p, format!("detected: {} exists", hits.join(", ")))),
    };
    view.existing_logs = voipwall_host::propose::KNOWN_LOGS
        .iter()
        .map(|(_, p)| (*p).to_string())
        .chain(
            preset
                .iter()
                .flat_map(|(p, _)| p.sources.iter().filter_map(|s| s.path.clone())),
        )
        .filter(|p| Path::new(p).exists())
        .collect();
    let mut text = render(&view, preset, &sshd);

    // The generated policy must load, and must keep every live session.
    let tmp = std::env::temp_dir().join(format!("voipwall-init-{}.toml", std::process::id()));
    std::fs::write(&tmp, &text).with_context(|| format!("write {}", tmp.display()))?;
    let loaded = crate::context::load_policy(&tmp, &cli.catalog_dirs, &facts);
    let _ = std::fs::remove_file(&tmp);
    let l = loaded.context("the generated policy does not load (a bug in init)")?;
    let rs = crate::context::compile_policy(&l.policy);
    let problems = crate::safety::lockout_problems(&l.policy, &rs, &sshd);
    if !problems.is_empty() {
        return Err(Invalid(format!(
            "the generated policy would lock you out (a bug in init):\n{}",
            problems.join("\n")
        ))
        .into());
    }
    // Ports something listens on that the policy grants to no zone: the
    // default deny cuts them. Said in the policy and on the terminal, not
    // only listed.
    let cut: Vec<String> =
        voipwall_host::audit::judge(&l.policy, &rs, &view.listening, &l.found, &sshd)
            .into_iter()
            .filter(|f| f.check == "listening-not-granted")
            .map(|f| f.what)
            .collect();
    if !cut.is_empty() {
        text.push_str(&format!(
            "\n# WARNING: listening here, and granted to no zone by this policy (the\n# default deny will cut it once applied): {}.\n# An admin or web interface? Give it a service in the zone that needs it, e.g.\n#   [services.admin]\n#   ports = [\"{}\"]\n# and add \"admin\" to [zones.local] services (or trusted).\n",
            cut.join(", "),
            cut[0]
        ));
        eprintln!(
            "warning: listening and granted to no zone by the proposed policy (applying it cuts them): {}; see the WARNING at the end of the policy",
            cut.join(", ")
        );
    }
    let preset_name = l.policy.preset.clone();
    if a.dry_run {
        if cli.json {
            return crate::cmd::out(
                &serde_json::json!({"policy": text, "preset": preset_name, "not_granted": cut, "written": false})
                    .to_string(),
            );
        }
        return crate::cmd::out(&text);
    }
    if cli.config.exists() && !a.force {
        return Err(Invalid(format!(
            "{} exists; use --force to overwrite it or --dry-run to print",
            cli.config.display()
        ))
        .into());
    }
    if let Some(dir) = cli.config.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&cli.config, &text)
        .with_context(|| format!("write {}", cli.config.display()))?;
    if cli.json {
        return crate::cmd::out(
            &serde_json::json!({"policy": text, "preset": preset_name, "not_granted": cut, "written": true,
                                "path": cli.config.display().to_string(),
                                "next": [cli.next("check"), cli.next("apply --confirm 60s")]})
            .to_string(),
        );
    }
    eprintln!(
        "wrote {} ({} interfaces, preset {}); next: {} && {}",
        cli.config.display(),
        view.interfaces.iter().filter(|i| i.name != "lo").count(),
        l.policy.preset.as_deref().unwrap_or("none"),
        cli.next("check"),
        cli.next("apply --confirm 60s")
    );
    Ok(())
}
