//! `voipwall audit`: the host's exposure, judged. Listening sockets are run
//! through the compiled ruleset from an internet-zone source with the same
//! logic as `explain`; the PBX configuration is read for weak SIP secrets,
//! default management credentials and an odd RTP range. The judging is pure
//! ([`judge`]); the binary reads the sockets and files.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;
use voipwall_discover::{Discovery, Secret, weak};
use voipwall_nft::{NoDynamic, Packet, Ruleset, Verdict, explain};
use voipwall_policy::{NetSpec, Policy, PortSpec, Proto, Zone};

/// How bad a finding is. Ordered: `Info` < ... < `Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look.
    Low,
    /// Fix soon.
    Medium,
    /// Fix now: attackers look for this.
    High,
    /// Exploited as found.
    Critical,
}

impl Severity {
    /// `info` … `critical`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// The exit code `audit` ends with when this is the worst finding:
    /// 0 for nothing above info, then 3 (low) to 6 (critical), clear of 1
    /// (invalid input) and 2 (system failure).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Info => 0,
            Self::Low => 3,
            Self::Medium => 4,
            Self::High => 5,
            Self::Critical => 6,
        }
    }
}

/// One finding: what, why it matters, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// Stable identifier of the check (`db-exposed`, `weak-sip-secret`, ...).
    pub check: &'static str,
    /// The object: `tcp/3306 (MySQL)`, `pjsip 1001 (pjsip.auth.conf:11)`.
    pub what: String,
    /// Why it matters.
    pub reason: String,
    /// What to do.
    pub fix: String,
}

fn finding(
    severity: Severity,
    check: &'static str,
    what: impl Into<String>,
    reason: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        check,
        what: what.into(),
        reason: reason.into(),
        fix: fix.into(),
    }
}

/// A socket in the listening state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Listening {
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
    /// Bound address (unspecified for every address).
    pub addr: IpAddr,
}

/// Well-known ports and what exposing them means.
struct Known {
    proto: Proto,
    port: u16,
    name: &'static str,
    check: &'static str,
    severity: Severity,
    reason: &'static str,
    fix: &'static str,
}

const DB_FIX: &str =
    "grant it only to the application servers' network (zone other or local), never to internet";
const MGMT_FIX: &str = "restrict it to the management network (zone local) or bind it to 127.0.0.1";
const HTTP_FIX: &str =
    "serve it over HTTPS and only to local/VPN networks; remove the grant from zone internet";

const KNOWN: &[Known] = &[
    Known {
        proto: Proto::Tcp,
        port: 3306,
        name: "MySQL/MariaDB",
        check: "db-exposed",
        severity: Severity::Critical,
        reason: "the PBX database (CDRs, extensions, secrets) is reachable from the internet",
        fix: DB_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 5432,
        name: "PostgreSQL",
        check: "db-exposed",
        severity: Severity::Critical,
        reason: "the database is reachable from the internet",
        fix: DB_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 6379,
        name: "Redis",
        check: "db-exposed",
        severity: Severity::Critical,
        reason: "Redis has no authentication by default and is reachable from the internet",
        fix: DB_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 27017,
        name: "MongoDB",
        check: "db-exposed",
        severity: Severity::Critical,
        reason: "the database is reachable from the internet",
        fix: DB_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 11211,
        name: "memcached",
        check: "db-exposed",
        severity: Severity::Critical,
        reason: "memcached is unauthenticated and reachable from the internet",
        fix: DB_FIX,
    },
    Known {
        proto: Proto::Udp,
        port: 11211,
        name: "memcached",
        check: "db-exposed",
        severity: Severity::Critical,
        reason: "memcached over UDP is an amplification source",
        fix: DB_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 5038,
        name: "Asterisk Manager Interface",
        check: "mgmt-exposed",
        severity: Severity::Critical,
        reason: "AMI controls the whole PBX (originate calls, read configs) and is reachable from the internet",
        fix: MGMT_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 8021,
        name: "FreeSWITCH event socket",
        check: "mgmt-exposed",
        severity: Severity::Critical,
        reason: "the event socket controls the whole switch and is reachable from the internet",
        fix: MGMT_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 8088,
        name: "Asterisk HTTP/ARI",
        check: "mgmt-exposed",
        severity: Severity::High,
        reason: "ARI and the Asterisk HTTP server are reachable from the internet in plain text",
        fix: MGMT_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 10000,
        name: "Webmin",
        check: "mgmt-exposed",
        severity: Severity::High,
        reason: "a root web console is reachable from the internet",
        fix: MGMT_FIX,
    },
    Known {
        proto: Proto::Udp,
        port: 161,
        name: "SNMP",
        check: "mgmt-exposed",
        severity: Severity::High,
        reason: "SNMP (community strings in clear) is reachable from the internet",
        fix: MGMT_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 80,
        name: "HTTP",
        check: "http-exposed",
        severity: Severity::High,
        reason: "the admin GUI or phone provisioning over plain HTTP sends passwords and SIP secrets in clear text",
        fix: HTTP_FIX,
    },
    Known {
        proto: Proto::Tcp,
        port: 8080,
        name: "HTTP (alternate)",
        check: "http-exposed",
        severity: Severity::High,
        reason: "an HTTP service in clear text (often provisioning or an admin GUI)",
        fix: HTTP_FIX,
    },
    Known {
        proto: Proto::Udp,
        port: 69,
        name: "TFTP provisioning",
        check: "http-exposed",
        severity: Severity::High,
        reason: "TFTP hands phone configs with SIP secrets to anyone who asks",
        fix: "serve provisioning over HTTPS with authentication, TFTP only on the phones' LAN",
    },
];

/// Sources that classify into the internet zone, one per family, with the
/// interface to pretend they arrive on. `None` when the policy puts no
/// traffic there.
fn internet_sources(policy: &Policy, rs: &Ruleset) -> Vec<(IpAddr, String)> {
    let ifaces: Vec<String> = policy
        .interfaces
        .iter()
        .filter(|i| i.zone == Zone::Internet)
        .map(|i| i.name.clone())
        .chain((policy.default_zone == Zone::Internet).then(String::new))
        .collect();
    let candidates: [&[&str]; 2] = [
        &[
            "192.0.2.250",
            "203.0.113.250",
            "198.51.100.250",
            "100.64.0.250",
        ],
        &["2001:db8:ffff::250", "2001:db8:fffe::250"],
    ];
    let mut out = Vec::new();
    for family in candidates {
        'family: for iface in &ifaces {
            for c in family {
                let src: IpAddr = c.parse().expect("literal");
                let p = Packet {
                    src,
                    iif: iface.clone(),
                    proto: Proto::Udp,
                    dport: 9,
                    established: false,
                };
                if explain(rs, &p, &NoDynamic).zone.as_deref() == Some("internet") {
                    out.push((src, iface.clone()));
                    break 'family;
                }
            }
        }
    }
    out
}

fn reachable(rs: &Ruleset, from: &[(IpAddr, String)], proto: Proto, port: u16) -> bool {
    from.iter().any(|(src, iif)| {
        let p = Packet {
            src: *src,
            iif: iif.clone(),
            proto,
            dport: port,
            established: false,
        };
        explain(rs, &p, &NoDynamic).verdict == Verdict::Accept
    })
}

fn ports_of(policy: &Policy, names: &[&str]) -> Vec<PortSpec> {
    names
        .iter()
        .filter_map(|n| policy.services.get(*n))
        .flat_map(|s| s.ports.iter().copied())
        .collect()
}

/// Everything the audit concludes. Pure: sockets, discovery and the
/// compiled ruleset come in.
/// Other firewalls that see the same inbound packets: a table that drops
/// what voipwall accepts makes opened services unreachable; one with rules
/// of its own makes voipwall's explanation incomplete.
pub fn foreign(chains: &[voipwall_nft::foreign::ForeignChain], legacy: &[String]) -> Vec<Finding> {
    use voipwall_nft::foreign::Effect;
    let mut out: Vec<Finding> = chains
        .iter()
        .filter(|c| {
            c.sees_inbound(voipwall_nft::Family::V4) || c.sees_inbound(voipwall_nft::Family::V6)
        })
        .filter_map(|c| {
            let (sev, reason) = match c.effect() {
                Effect::Drops => (
                    Severity::High,
                    "drops every inbound packet: services voipwall opens are unreachable",
                ),
                Effect::MayDrop => (
                    Severity::Medium,
                    "filters the same inbound packets with rules voipwall does not evaluate",
                ),
                Effect::Nothing => return None,
            };
            Some(finding(
                sev,
                "foreign-table",
                c.describe(),
                reason,
                format!(
                    "remove it (`nft delete table {} {}`) or disable the tool that made it (ufw, firewalld, docker's iptables)",
                    c.family, c.table
                ),
            ))
        })
        .collect();
    if !legacy.is_empty() {
        out.push(finding(
            Severity::Medium,
            "iptables-legacy",
            format!("iptables-legacy tables: {}", legacy.join(", ")),
            "they filter the same packets and voipwall cannot inspect them",
            "migrate them into the policy, then `iptables-legacy -F` and unload",
        ));
    }
    out
}

/// Every finding for this host: each listening service judged by whether
/// an internet source reaches it through `rs`, then the PBX's secrets,
/// credentials and RTP range from `d`, and SSH on `sshd_ports`.
pub fn judge(
    policy: &Policy,
    rs: &Ruleset,
    listening: &[Listening],
    d: &Discovery,
    sshd_ports: &[u16],
) -> Vec<Finding> {
    let mut f = Vec::new();
    // Bans-only: another firewall decides what is reachable, and voipwall
    // cannot evaluate it; no exposure is simulated or claimed.
    let bans_only = policy.bans_only();
    let from = if bans_only {
        Vec::new()
    } else {
        internet_sources(policy, rs)
    };
    if bans_only {
        f.push(finding(Severity::Info, "bans-only", "policy", "voipwall runs bans-only: another firewall decides what is reachable, so exposure was not simulated", "audit that firewall's rules; `voipwall explain` names the table that decides"));
    } else if from.is_empty() {
        f.push(finding(Severity::Info, "no-internet-zone", "policy", "no interface or default zone puts traffic in zone internet; exposure was not simulated", "assign the public interface to zone internet"));
    }
    // Distinct (proto, port) of sockets that are not loopback-only.
    let mut open: Vec<(Proto, u16)> = listening
        .iter()
        .filter(|l| !l.addr.is_loopback())
        .map(|l| (l.proto, l.port))
        .collect();
    open.sort();
    open.dedup();
    let sip = ports_of(policy, &["sip", "chan-sip"]);
    let tls = ports_of(policy, &["sip-tls"]);
    let mut sip_exposed = Vec::new();
    for &(proto, port) in &open {
        let exposed = reachable(rs, &from, proto, port);
        let spec = PortSpec {
            proto,
            lo: port,
            hi: port,
        };
        if let Some(k) = KNOWN.iter().find(|k| k.proto == proto && k.port == port) {
            if exposed {
                f.push(finding(
                    k.severity,
                    k.check,
                    format!("{spec} ({})", k.name),
                    k.reason,
                    k.fix,
                ));
            }
            continue;
        }
        if proto == Proto::Tcp && sshd_ports.contains(&port) {
            if exposed {
                f.push(if port == 22 {
                    finding(Severity::Medium, "ssh-22-exposed", format!("{spec} (SSH)"), "SSH on port 22 is open to the internet: every scanner tries passwords there", "allow SSH only from the management network (or a VPN); keys only, PasswordAuthentication no")
                } else {
                    finding(Severity::Low, "ssh-exposed", format!("{spec} (SSH)"), "SSH is open to the internet (on a non-standard port, which only slows scanners)", "allow SSH only from the management network (or a VPN)")
                });
            }
            continue;
        }
        if sip.iter().any(|s| s.contains(proto, port)) {
            if exposed {
                sip_exposed.push(spec);
            }
            continue;
        }
        if !exposed
            && !bans_only
            && !policy
                .services
                .values()
                .any(|s| s.ports.iter().any(|p| p.contains(proto, port)))
            && !policy.rtp.ranges.iter().any(|r| r.contains(proto, port))
        {
            f.push(finding(Severity::Info, "listening-not-granted", spec.to_string(), "a program listens here but no service of the policy covers the port (default deny drops it)", "nothing if that is intended; otherwise add the service to the zone that needs it"));
        }
    }
    if !sip_exposed.is_empty() {
        let tls_offered = tls
            .iter()
            .any(|t| open.contains(&(t.proto, t.lo)) && reachable(rs, &from, t.proto, t.lo));
        let what = sip_exposed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        f.push(if tls_offered {
            finding(Severity::Info, "sip-exposed", format!("{what} (SIP)"), "SIP is open to the internet; TLS is offered beside it", "move phones to TLS and consider closing UDP/TCP to the internet (responsive mode limits unknown sources)")
        } else {
            finding(Severity::Medium, "sip-no-tls", format!("{what} (SIP)"), "SIP over UDP/TCP is open to the internet and no TLS port is: credentials digests and call metadata travel in clear", "offer SIP over TLS (tcp/5061, service sip-tls) and move remote phones to it")
        });
    }
    // RTP: the policy's range and the PBX's own.
    let mut ranges: Vec<(PortSpec, String)> = policy
        .rtp
        .ranges
        .iter()
        .map(|r| (*r, format!("policy ({})", policy.rtp.origin)))
        .collect();
    if let Some((r, at)) = &d.rtp
        && !policy.rtp.ranges.contains(r)
    {
        ranges.push((*r, format!("PBX ({at})")));
    }
    for (r, from) in ranges {
        let width = u32::from(r.hi) - u32::from(r.lo) + 1;
        if r.lo < 1024 {
            f.push(finding(
                Severity::High,
                "rtp-range",
                format!("RTP {r} from the {from}"),
                "the RTP range reaches below 1024, into system services' ports",
                "use 10000-20000 (Asterisk) or 16384-32768 (FreeSWITCH)",
            ));
        } else if !(100..=40_000).contains(&width) {
            f.push(finding(Severity::Low, "rtp-range", format!("RTP {r} from the {from}"), format!("an unusual RTP range ({width} ports): too few drop calls, too many open the host wide"), "use 10000-20000 (Asterisk) or 16384-32768 (FreeSWITCH)"));
        }
    }
    // Trusted networks that trust half the world.
    for n in policy.networks.iter().filter(|n| n.zone == Zone::Trusted) {
        if let NetSpec::Net(net) = &n.net {
            let wide = if net.addr().is_ipv4() {
                net.prefix_len() < 8
            } else {
                net.prefix_len() < 32
            };
            if wide {
                f.push(finding(Severity::High, "trusted-too-wide", format!("network {} ({})", n.net, n.origin), "a network this wide in zone trusted accepts everything from a large part of the internet", "trust only the hosts and small networks you run; use zone other for partners"));
            }
        }
    }
    // Secrets.
    for s in &d.secrets {
        f.extend(secret_finding(s, rs, &from));
    }
    f.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.check.cmp(b.check))
            .then(a.what.cmp(&b.what))
    });
    f
}

/// Default credentials of management interfaces (published in vendors'
/// install guides, so every scanner tries them).
const DEFAULTS: &[(&str, &str, &str)] = &[
    ("ami", "amp111", "FreePBX's default AMI password"),
    (
        "esl",
        "ClueCon",
        "FreeSWITCH's default event-socket password",
    ),
];

fn secret_finding(s: &Secret, rs: &Ruleset, from: &[(IpAddr, String)]) -> Option<Finding> {
    let file = s.origin.file.rsplit('/').next().unwrap_or(&s.origin.file);
    let place = format!("{file}:{}", s.origin.line);
    if let Some((_, _, what)) = DEFAULTS
        .iter()
        .find(|(drv, pw, _)| *drv == s.driver && *pw == s.secret)
    {
        let port = if s.driver == "ami" { 5038 } else { 8021 };
        let exposed = reachable(rs, from, Proto::Tcp, port);
        return Some(finding(
            if exposed {
                Severity::Critical
            } else {
                Severity::High
            },
            "default-credentials",
            format!("{} `{}` ({place})", s.driver, s.section),
            format!(
                "{what} is still set{}",
                if exposed {
                    " and the port is reachable from the internet"
                } else {
                    ""
                }
            ),
            "set a long random secret and restart the service",
        ));
    }
    if matches!(s.driver.as_str(), "ami" | "esl") {
        return None;
    }
    let weak = weak::check(&s.secret, &s.user);
    if weak.is_empty() {
        return None;
    }
    Some(finding(
        Severity::High,
        "weak-sip-secret",
        format!("{} `{}` ({place})", s.driver, s.section),
        format!(
            "secret of {}: {}",
            if s.user.is_empty() {
                &s.section
            } else {
                &s.user
            },
            weak.iter()
                .map(|w| w.describe())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        "use a random secret of 12 or more letters and digits (brute force tries short and patterned ones first)",
    ))
}

/// Sockets in the listening state, from the text of `/proc/net/tcp`,
/// `tcp6`, `udp` and `udp6`.
pub fn listening(tcp: &str, tcp6: &str, udp: &str, udp6: &str) -> Vec<Listening> {
    let mut out = Vec::new();
    for (text, proto, v6, state) in [
        (tcp, Proto::Tcp, false, "0A"),
        (tcp6, Proto::Tcp, true, "0A"),
        (udp, Proto::Udp, false, "07"),
        (udp6, Proto::Udp, true, "07"),
    ] {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != state {
                continue;
            }
            // UDP "listening": unconnected sockets (remote port 0).
            if proto == Proto::Udp && !f[2].ends_with(":0000") {
                continue;
            }
            if let Some((addr, port)) = crate::lockout::hexaddr(f[1], v6) {
                out.push(Listening { proto, port, addr });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The human table.
pub fn render(findings: &[Finding]) -> String {
    let mut o = String::new();
    if findings.is_empty() {
        o.push_str("no findings\n");
        return o;
    }
    let w_what = findings
        .iter()
        .map(|f| f.what.len())
        .max()
        .unwrap_or(4)
        .min(48);
    let _ = writeln!(
        o,
        "{:<8}  {:<22}  {:<w_what$}  REASON / FIX",
        "SEVERITY", "CHECK", "WHAT"
    );
    for f in findings {
        let _ = writeln!(
            o,
            "{:<8}  {:<22}  {:<w_what$}  {}",
            f.severity.name(),
            f.check,
            f.what,
            f.reason
        );
        let _ = writeln!(o, "{:<8}  {:<22}  {:<w_what$}  fix: {}", "", "", "", f.fix);
    }
    let worst = findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Info);
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(
        o,
        "\n{} findings: {} critical, {} high, {} medium, {} low, {} info (worst: {})",
        findings.len(),
        count(Severity::Critical),
        count(Severity::High),
        count(Severity::Medium),
        count(Severity::Low),
        count(Severity::Info),
        worst.name()
    );
    o
}
