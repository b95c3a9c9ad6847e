//! Man pages and shell completions, generated from the command line's own
//! definition (clap), so they never disagree with `--help`. `scripts/package`
//! runs the hidden `voipwall assets DIR`.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

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
    let page = |c: clap::Command, path: &Path| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).section("8").render(&mut buf)?;
        std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
    };
    page(cmd.clone(), &man.join("voipwall.8"))?;
    let mut pages = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("voipwall-{}", sub.get_name());
        page(
            sub.clone().name(name.clone()).bin_name(name.clone()),
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
