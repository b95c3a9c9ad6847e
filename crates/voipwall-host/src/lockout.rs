//! Never lock the operator out, judged before anything is applied: each
//! live management session and each management network is run through the
//! new ruleset with the same logic as `explain`. The sessions and the
//! interface of each local address come in as arguments; the binary reads
//! them from the kernel.

use std::collections::HashMap;
use std::net::IpAddr;

use voipwall_nft::{NoDynamic, Packet, Ruleset, Verdict, explain};
use voipwall_policy::{Policy, Proto};

/// A live TCP session to this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The operator's side.
    pub remote: IpAddr,
    /// This host's address.
    pub local: IpAddr,
    /// This host's port.
    pub lport: u16,
    /// The operator's port.
    pub rport: u16,
}

/// Established TCP sessions whose local port is one of `ports`, from the
/// text of the kernel's socket tables (`/proc/net/tcp`, then `tcp6`).
pub fn sessions(tcp: &str, tcp6: &str, ports: &[u16]) -> Vec<Session> {
    let mut out = Vec::new();
    for (text, v6) in [(tcp, false), (tcp6, true)] {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != "01" {
                continue;
            }
            let (Some((la, lp)), Some((ra, rp))) = (hexaddr(f[1], v6), hexaddr(f[2], v6)) else {
                continue;
            };
            if ports.contains(&lp) {
                // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
                let unmap = |a: IpAddr| match a {
                    IpAddr::V6(v) => v.to_ipv4_mapped().map_or(a, IpAddr::V4),
                    v4 => v4,
                };
                out.push(Session {
                    remote: unmap(ra),
                    local: unmap(la),
                    lport: lp,
                    rport: rp,
                });
            }
        }
    }
    out
}

/// `0100007F:0016` (IPv4) or 32 hex digits (IPv6, four host-order words).
pub fn hexaddr(s: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    if v6 {
        if a.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for w in 0..4 {
            let word = u32::from_str_radix(&a[w * 8..w * 8 + 8], 16).ok()?;
            b[w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        Some((IpAddr::from(b), port))
    } else {
        let v = u32::from_str_radix(a, 16).ok()?;
        Some((IpAddr::from(v.to_le_bytes()), port))
    }
}

/// Ports whose live sessions are management: sshd's and the admin services'.
pub fn management_ports(policy: &Policy, sshd: &[u16]) -> Vec<u16> {
    let mut ports: Vec<u16> = sshd.to_vec();
    for name in ["ssh", "https-admin", "http-admin", "rest-api"] {
        if let Some(s) = policy.services.get(name) {
            for p in &s.ports {
                if p.proto == Proto::Tcp && p.lo == p.hi {
                    ports.push(p.lo);
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// What the new ruleset would do to the operator: each live management
/// session and each management network, simulated with the same logic as
/// `explain`. Returns one line per session or network it would cut.
///
/// `sessions` are the live sessions to `ports` ([`management_ports`]);
/// `iface_of` names the interface of each local address.
pub fn problems(
    policy: &Policy,
    rs: &Ruleset,
    ports: &[u16],
    sessions: &[Session],
    iface_of: &HashMap<IpAddr, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for s in sessions {
        if s.remote.is_loopback() {
            continue;
        }
        let iif = iface_of.get(&s.local).cloned().unwrap_or_default();
        for established in [true, false] {
            let p = Packet {
                src: s.remote,
                iif: iif.clone(),
                proto: Proto::Tcp,
                dport: s.lport,
                established,
            };
            let ex = explain(rs, &p, &NoDynamic);
            if ex.verdict != Verdict::Accept {
                problems.push(format!(
                    "the live session from {}:{} to tcp/{} (on {}) would be cut{}: {} by `{}`",
                    s.remote,
                    s.rport,
                    s.lport,
                    if iif.is_empty() { "?" } else { &iif },
                    if established {
                        ""
                    } else {
                        " at its next connection"
                    },
                    ex.verdict.name(),
                    ex.decided_by
                ));
                break;
            }
        }
    }
    for net in &policy.host.management {
        let Some(&port) = ports.first() else { break };
        let p = Packet {
            src: net.network(),
            iif: String::new(),
            proto: Proto::Tcp,
            dport: port,
            established: false,
        };
        let ex = explain(rs, &p, &NoDynamic);
        if ex.verdict != Verdict::Accept {
            problems.push(format!(
                "the management network {net} could not reach tcp/{port}: {} by `{}`",
                ex.verdict.name(),
                ex.decided_by
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        assert_eq!(
            hexaddr("0100007F:0016", false),
            Some(("127.0.0.1".parse().unwrap(), 22))
        );
        assert_eq!(
            hexaddr("0171CBCB:13C4", false),
            Some(("203.203.113.1".parse().unwrap(), 5060))
        );
        assert_eq!(
            hexaddr("B80D0120000000000000000001000000:0016", true),
            Some(("2001:db8::1".parse().unwrap(), 22))
        );
        assert_eq!(hexaddr("zz:1", false), None);
    }
}
