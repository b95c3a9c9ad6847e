//! Man pages and shell completions, generated from the command line's own
//! definition (clap), so they never disagree with `--help`. `scripts/package`
//! runs the hidden `voipwall assets DIR`.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

/// Escapes text for roff (backslashes and leading dots).
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The main page's examples: (what it does, the command).
const EXAMPLES_MAIN: &[(&str, &str)] = &[
    (
        "Write a policy from this host that keeps your SSH session",
        "voipwall init",
    ),
    (
        "Check it, then apply it with a 2-minute rollback unless confirmed",
        "voipwall check && voipwall apply --confirm 2m",
    ),
    ("Keep it", "voipwall confirm"),
    (
        "What the firewall does with a packet, and why",
        "voipwall explain 203.0.113.7 udp/5060",
    ),
    (
        "The daemon's state: bans, detection, sources, shields, calls",
        "voipwall status",
    ),
];

/// Each verb's examples.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "ban",
        &[
            (
                "Ban an address for a day",
                "voipwall ban 203.0.113.7 --for 1d --reason \"guessing passwords\"",
            ),
            (
                "Ban every address of a file, one per line",
                "voipwall ban --file /root/attackers.txt --for 7d",
            ),
        ],
    ),
    (
        "unban",
        &[(
            "Lift a ban (and the bans inside a network)",
            "voipwall unban 203.0.113.0/24",
        )],
    ),
    (
        "bans",
        &[
            ("Bans in force, with their reasons", "voipwall bans"),
            (
                "Every ban, lifted and ended ones too, as JSON",
                "voipwall --json bans --all",
            ),
        ],
    ),
    (
        "apply",
        &[(
            "Apply, rolled back in 2 minutes unless confirmed",
            "voipwall apply --confirm 2m",
        )],
    ),
    (
        "check",
        &[(
            "Every error at once, and the kernel's own check",
            "voipwall check --kernel",
        )],
    ),
    (
        "explain",
        &[(
            "What happens to SIP from an address, and what detection knows of it",
            "voipwall explain 203.0.113.7 udp/5060",
        )],
    ),
    (
        "replay",
        &[
            (
                "Which bans an Asterisk log would have made",
                "voipwall replay --format asterisk /var/log/asterisk/full",
            ),
            (
                "The same for a packet capture",
                "voipwall replay --pcap /tmp/sip.pcap",
            ),
        ],
    ),
    (
        "export",
        &[(
            "The policy as iptables-restore input",
            "voipwall export iptables > rules.v4",
        )],
    ),
    (
        "status",
        &[("Everything, for a script", "voipwall --json status")],
    ),
    (
        "call",
        &[(
            "Whether a call may be placed now (exit status 1 when not)",
            "voipwall call decide --from 203.0.113.20 --user 1042 --to 0088212345",
        )],
    ),
    (
        "token",
        &[(
            "A read-only token for a dashboard",
            "voipwall token create grafana --role read",
        )],
    ),
];

/// Writes `DIR/man8/voipwall.8`, `DIR/man8/voipwall-<verb>.8` for every
/// visible verb, and `DIR/completions/{voipwall.bash,_voipwall,voipwall.fish}`.
pub(crate) fn write(dir: &Path) -> anyhow::Result<()> {
    let man = dir.join("man8");
    let comp = dir.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let cmd = crate::Cli::command()
        .version(env!("CARGO_PKG_VERSION"))
        .after_long_help(
            "Files: /etc/voipwall/voipwall.toml (the policy), /var/lib/voipwall/state.db \
             (bans, generations, audit log), /run/voipwall/control.sock, /usr/share/voipwall \
             (the catalog). Exit status: 0 ok, 1 invalid input, 2 system failure; audit: 3-6 by \
             the worst finding. See voipwall-<verb>(8) for each verb.",
        );
    let page = |c: clap::Command, examples: &[(&str, &str)], path: &Path| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).section("8").render(&mut buf)?;
        if !examples.is_empty() {
            buf.extend_from_slice(b".SH EXAMPLES\n");
            for (what, line) in examples {
                buf.extend_from_slice(
                    format!(".TP\n\\fB{}\\fR\n{}\n", roff(line), roff(what)).as_bytes(),
                );
            }
        }
        std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
    };
    // No `help` subcommand in the pages: there is no voipwall-help(8).
    let cmd = cmd.disable_help_subcommand(true);
    page(cmd.clone(), EXAMPLES_MAIN, &man.join("voipwall.8"))?;
    let mut pages = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("voipwall-{}", sub.get_name());
        // The page is voipwall-ban(8); its synopsis is what one types.
        let typed = format!("voipwall {}", sub.get_name());
        let examples = EXAMPLES
            .iter()
            .find(|(verb, _)| *verb == sub.get_name())
            .map_or(&[][..], |(_, e)| *e);
        page(
            sub.clone()
                .name(name.clone())
                .bin_name(typed)
                .disable_help_subcommand(true),
            examples,
            &man.join(format!("{name}.8")),
        )?;
        pages += 1;
    }
    let mut cmd = cmd;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "voipwall.bash"),
        (clap_complete::Shell::Zsh, "_voipwall"),
        (clap_complete::Shell::Fish, "voipwall.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "voipwall", &mut buf);
        std::fs::write(comp.join(file), buf)?;
    }
    eprintln!(
        "wrote {pages} man pages to {} and 3 completions to {}",
        man.display(),
        comp.display()
    );
    Ok(())
}
