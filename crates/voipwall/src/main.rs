//! `voipwall`: the CLI. Parse, dispatch, map errors to exit codes:
//! 0 ok, 1 invalid input (policy, arguments), 2 system failure (kernel, files).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod assets;
mod client;
mod cmd;
mod init;
mod logging;
mod replay;

// The driver library's modules, under the names the CLI has always used.
use voipwall_core::{ExitWith, Invalid};
#[allow(unused_imports)]
pub(crate) use voipwall_core::{context, daemon, detection, host, human, owned, plane, safety};

/// VoIP-aware host firewall: one nftables table, default-deny, IPv4 and IPv6.
#[derive(Parser)]
#[command(name = "voipwall", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) g: Globals,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// The flags every verb takes: the only part of the command line the
/// verbs see besides their own arguments.
#[derive(clap::Args)]
pub(crate) struct Globals {
    /// Policy file.
    #[arg(
        short,
        long,
        global = true,
        default_value = DEFAULT_CONFIG,
        env = "VOIPWALL_CONFIG"
    )]
    pub(crate) config: PathBuf,
    /// Extra catalog directory (with services/ and presets/), overriding the built-in data.
    #[arg(long = "catalog-dir", global = true)]
    pub(crate) catalog_dirs: Vec<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// State directory: the store with bans and policy generations.
    #[arg(
        long,
        global = true,
        env = "VOIPWALL_STATE_DIR",
        default_value = DEFAULT_STATE_DIR
    )]
    pub(crate) state_dir: PathBuf,
}

impl Globals {
    /// The command to run `verb` next with the same policy file and state
    /// directory as this one (the "next:" hints): `-c` and `--state-dir`
    /// only when they are not the defaults, so following a hint never
    /// talks to another policy or store.
    pub(crate) fn next(&self, verb: &str) -> String {
        let quote = |p: &std::path::Path| {
            let s = p.display().to_string();
            if s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
            {
                s
            } else {
                format!("'{}'", s.replace('\'', "'\\''"))
            }
        };
        let mut c = String::from("voipwall");
        if self.config != std::path::Path::new(DEFAULT_CONFIG) {
            c.push_str(&format!(" -c {}", quote(&self.config)));
        }
        if self.state_dir != std::path::Path::new(DEFAULT_STATE_DIR) {
            c.push_str(&format!(" --state-dir {}", quote(&self.state_dir)));
        }
        format!("{c} {verb}")
    }
}

const DEFAULT_CONFIG: &str = "/etc/voipwall/voipwall.toml";
const DEFAULT_STATE_DIR: &str = "/var/lib/voipwall";

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Validate the policy; report every error with file:line:col. Changes nothing.
    Check {
        /// Also have the running kernel check the compiled script (`nft -c`).
        #[arg(long)]
        kernel: bool,
    },
    /// Print the exact nft script `apply` would run (or the IR with --json).
    Compile,
    /// Validate, compile, check the operator cannot be locked out, apply
    /// atomically (bans survive), and record the generation.
    Apply {
        /// Roll back to the previous ruleset unless `voipwall confirm` comes
        /// within this long (e.g. 60s); the timer survives this process.
        #[arg(long)]
        confirm: Option<String>,
        /// Apply even if a live management session or network would be cut.
        #[arg(long)]
        force: bool,
    },
    /// Keep the generation a `apply --confirm` is waiting on.
    Confirm,
    /// Go back one generation now (the ruleset applied before the current
    /// one), or to any recorded generation with `--to N`.
    Rollback {
        /// The generation to apply (`voipwall generations` lists them).
        #[arg(long, value_name = "N")]
        to: Option<i64>,
    },
    /// List the recorded generations (newest first).
    Generations {
        /// Show what generation N changed against the one before it (lines
        /// of the nft script removed `-` and added `+`).
        #[arg(long)]
        diff: Option<i64>,
    },
    /// (internal) The detached timer of `apply --confirm`.
    #[command(hide = true)]
    RollbackTimer {
        #[arg(long)]
        generation: i64,
        #[arg(long)]
        deadline_ms: u64,
    },
    /// Remove the voipwall table (and nothing else).
    Disable,
    /// Explain what the firewall does with a packet (zone, rule, policy line)
    /// given a destination; without one, what detection knows (daemon).
    ///
    /// Answers from the generation in force and the live ban and known sets,
    /// and names every other table on the same hooks (ufw, firewalld,
    /// iptables-nft, docker) that could drop the packet.
    Explain {
        /// Source address.
        addr: std::net::IpAddr,
        /// Destination, e.g. udp/5060.
        to: Option<String>,
        /// Inbound interface. Default: the one the kernel routes the source to.
        #[arg(long, default_value = "")]
        iface: String,
        /// Explain as part of an established flow.
        #[arg(long)]
        established: bool,
        /// Explain the policy file alone: no kernel, no store, no other tables.
        #[arg(long)]
        offline: bool,
        /// Explain this policy file instead of the generation in force.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Ban an address (netlink, per-element timeout) or a network.
    Ban {
        /// Address or CIDR (dotted masks accepted).
        #[arg(required_unless_present = "file")]
        target: Option<String>,
        /// Read addresses and networks from a file, one per line (# comments), batched.
        #[arg(long, conflicts_with = "target")]
        file: Option<PathBuf>,
        /// Duration, e.g. 30m, 1h30m, 7d, or `permanent`. Default: [bans] default_ttl.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Why (shown in logs).
        #[arg(long, default_value = "manual")]
        reason: String,
        /// Ban an IPv6 address alone instead of its prefix ([bans] ipv6_prefix, default /64).
        #[arg(long)]
        exact: bool,
        /// Ban even though an allow entry, trusted network or peer covers it
        /// (own addresses, management and live sessions are never banned).
        #[arg(long)]
        force: bool,
    },
    /// Lift a ban.
    Unban {
        /// Address or CIDR.
        target: String,
    },
    /// Set the remaining time of the bans in force covering an address or
    /// network to a duration; a ban that already lasts longer (or is
    /// permanent) is left as it is.
    Extend {
        /// Address or CIDR (the bans covering it).
        target: String,
        /// Duration from now, e.g. 1h, 7d.
        #[arg(long = "for")]
        duration: String,
    },
    /// Allow an address or network at runtime (skips ban lookups).
    Allow {
        /// Address or CIDR.
        target: String,
        /// Duration; permanent when omitted.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Remove the entry instead.
        #[arg(long)]
        delete: bool,
    },
    /// Block an address or network at runtime (dropped before conntrack).
    Block {
        /// Address or CIDR.
        target: String,
        /// Duration; permanent when omitted.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Remove the entry instead.
        #[arg(long)]
        delete: bool,
        /// Block even though an allow entry, trusted network or peer covers it.
        #[arg(long)]
        force: bool,
    },
    /// List bans: the daemon's store (with rule and reason) when it runs,
    /// else what the kernel holds.
    Bans {
        /// Include ended and lifted bans (daemon).
        #[arg(long)]
        all: bool,
        /// Only bans of this rule (daemon).
        #[arg(long)]
        rule: Option<String>,
        /// Read the kernel sets even when a daemon runs.
        #[arg(long)]
        kernel: bool,
    },
    /// The daemon's state and counters.
    Status,
    /// Recent detection events from the daemon; --follow streams them.
    Events {
        /// Keep streaming new events.
        #[arg(long, short)]
        follow: bool,
        /// Past events shown first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// What the firewall refused: sampled drops (the kernel keeps `[drops]
    /// rate` per second per zone and per ban/block set), top sources, ports
    /// and zones over the last hour; --follow streams new samples.
    Drops {
        /// The window, minutes (1-60).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=60))]
        minutes: u64,
        /// How many sources and ports.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Keep printing new samples (Ctrl-C ends).
        #[arg(long, short)]
        follow: bool,
    },
    /// Have the daemon re-read and apply the policy (bans stay).
    Reload,
    /// The Redis Streams fleet (`[fleet]`): `status` shows the nodes seen,
    /// their lag, the bans held by node, what was published and refused.
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// The call rules (`[call]`): `decide` asks what they say of a call
    /// about to be placed (for dialplans), from the daemon's counters.
    #[command(subcommand)]
    Call(CallCmd),
    /// HTTP API tokens: create (shown once, stored hashed), list, revoke.
    #[command(subcommand)]
    Token(TokenCmd),
    /// List the services and presets of the catalog.
    Catalog,
    /// Judge the host's exposure: listening sockets against the policy,
    /// weak SIP secrets and default credentials in the PBX configuration,
    /// the RTP range. Exit code by the worst finding: 0 none (or info),
    /// 3 low, 4 medium, 5 high, 6 critical.
    Audit,
    /// Render the policy for another layer: aws (security group ingress
    /// JSON), gcp (firewall rules), azure (NSG securityRules), firewalld
    /// (zone XML), iptables (ipset + iptables-restore + ip6tables-restore).
    /// Each output says what its target cannot express.
    Export {
        /// aws, gcp, azure, firewalld or iptables.
        #[arg(value_parser = ["aws", "gcp", "azure", "firewalld", "iptables"])]
        target: String,
    },
    /// Look at this host (PBX, listening sockets, interfaces, your SSH
    /// session), pick a preset and write a commented policy that keeps your
    /// session reachable.
    Init(init::InitArgs),
    /// Show what the PBX configuration says: listening ports, trunks and
    /// peers with the ports they may reach, the RTP range, notes.
    Discover,
    /// Run logs (or a SIP packet capture) through the detection engine with
    /// their own timestamps and print the bans that would have been made.
    Replay(replay::ReplayArgs),
    /// The service: applies the policy, restores bans, reads NFLOG and logs,
    /// bans within milliseconds, serves the control socket.
    Daemon(DaemonCli),
    /// Write the man pages (voipwall.8 and one per verb) and the bash, zsh
    /// and fish completions into DIR/man8 and DIR/completions (packaging).
    #[command(hide = true)]
    Assets {
        /// Output directory.
        dir: PathBuf,
    },
}

/// Arguments of `voipwall daemon`.
#[derive(clap::Args, Debug)]
pub(crate) struct DaemonCli {
    /// Control socket.
    #[arg(
        long,
        env = "VOIPWALL_SOCKET",
        default_value = "/run/voipwall/control.sock"
    )]
    pub(crate) socket: PathBuf,
    /// A log file to follow, as FORMAT:PATH (e.g. asterisk:/var/log/asterisk/full); repeatable.
    #[arg(long = "log")]
    pub(crate) logs: Vec<String>,
    /// Follow the systemd journal as FORMAT[:UNIT] (e.g. sshd:ssh.service); repeatable.
    #[arg(long = "journal")]
    pub(crate) journals: Vec<String>,
    /// Read followed logs from their start instead of their end.
    #[arg(long)]
    pub(crate) from_start: bool,
    /// Do not apply the policy at start (the ruleset is already in place).
    #[arg(long)]
    pub(crate) no_apply: bool,
    /// Demo mode: refuse to run in the host's own network namespace (so the
    /// host firewall is never touched), and remove the table on exit.
    #[arg(long)]
    pub(crate) sandbox: bool,
}

impl DaemonCli {
    pub(crate) fn args(&self) -> daemon::DaemonArgs {
        daemon::DaemonArgs {
            socket: self.socket.clone(),
            logs: self.logs.clone(),
            journals: self.journals.clone(),
            from_start: self.from_start,
            no_apply: self.no_apply,
            sandbox: self.sandbox,
        }
    }
}

/// `voipwall fleet ...`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum FleetCmd {
    /// Nodes seen, lag, bans by node, Redis's state (`--json` for all of it).
    Status,
}

/// `voipwall call ...`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum CallCmd {
    /// Whether a call may be placed: prints `allow`, or `deny` and each
    /// broken rule with why (exit status 1). Nothing is counted.
    Decide {
        /// The caller's address.
        #[arg(long)]
        from: std::net::IpAddr,
        /// The authenticated user (digest username), if known.
        #[arg(long)]
        user: Option<String>,
        /// The number dialled.
        #[arg(long)]
        to: String,
    },
}

/// `voipwall token ...`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Create a token and print it once.
    Create {
        /// admin (read and change), read, or bouncer (the decisions stream only).
        #[arg(long)]
        role: String,
        /// A name for the audit log (`api:<name>`).
        #[arg(long)]
        name: String,
    },
    /// The tokens, without their secrets.
    List,
    /// Revoke a token: it stops working at once.
    Revoke {
        /// Its name.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cmd::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ExitWith(code)) = e.downcast_ref::<ExitWith>() {
                ExitCode::from(*code)
            } else if let Some(inv) = e.downcast_ref::<Invalid>() {
                eprintln!("{inv}");
                ExitCode::from(1)
            } else if e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    }
}
