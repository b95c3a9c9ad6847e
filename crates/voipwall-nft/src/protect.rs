//! The one protection check: which addresses voipwall never bans or
//! blocks, and why. The CLI, the daemon's control socket and the detection
//! engine's never-ban list are all built from [`Protected`], so a ban the
//! CLI refuses is one the engine would never make, and the reverse.

use std::net::IpAddr;

use ipnet::IpNet;
use voipwall_policy::{NetSpec, Policy, Zone};

/// Why an address is protected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Protection {
    /// The protected network.
    pub net: IpNet,
    /// What protects it, for the operator (`management network 192.0.2.0/24
    /// (policy.toml:4:15)`).
    pub why: String,
    /// Whether `--force` may override it. Loopback, own addresses,
    /// management and live sessions never; allow entries, trusted networks
    /// and peers may be overridden on purpose.
    pub overridable: bool,
}

/// Everything that must never be banned or blocked.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Protected {
    /// In no particular order.
    pub list: Vec<Protection>,
}

/// What the host contributes (read by the driver).
#[derive(Debug, Clone, Default)]
pub struct HostProtection {
    /// Addresses configured on the host's interfaces.
    pub own: Vec<IpAddr>,
    /// Sources of live management sessions (SSH, admin API).
    pub sessions: Vec<IpAddr>,
    /// Runtime allow entries the kernel holds.
    pub runtime_allow: Vec<IpNet>,
    /// Current addresses of names the policy trusts (peers, allow entries,
    /// trusted networks given by name).
    pub named: Vec<(IpAddr, String)>,
    /// What the host depends on, with what it is: resolvers, default
    /// gateways, NTP servers (`(192.0.2.53, "resolver")`).
    pub infrastructure: Vec<(IpAddr, String)>,
}

impl Protected {
    /// Builds the list from the policy and the host.
    pub fn new(policy: Option<&Policy>, host: &HostProtection) -> Self {
        let mut list = Vec::new();
        let mut push = |net: IpNet, why: String, overridable: bool| {
            list.push(Protection {
                net,
                why,
                overridable,
            });
        };
        for n in ["127.0.0.0/8", "::1/128"] {
            push(n.parse().expect("valid"), "loopback".into(), false);
        }
        for a in &host.own {
            push(
                IpNet::from(*a),
                format!("this host's own address {a}"),
                false,
            );
        }
        for a in &host.sessions {
            push(
                IpNet::from(*a),
                format!("{a}, the source of a live management session on this host"),
                false,
            );
        }
        if let Some(policy) = policy {
            for a in &policy.host.addresses {
                push(
                    IpNet::from(*a),
                    format!("this host's own address {a}"),
                    false,
                );
            }
            for m in &policy.host.management {
                push(*m, format!("management network {m}"), false);
            }
            for e in &policy.allow {
                if let NetSpec::Net(n) = &e.net {
                    push(*n, format!("allow entry {n} ({})", e.origin), true);
                }
            }
            for n in &policy.networks {
                // Networks the policy names as its own side or as a peer: a
                // forged packet with such a source must not get it banned.
                if let (NetSpec::Net(net), Zone::Trusted | Zone::Local | Zone::Other) =
                    (&n.net, n.zone)
                {
                    push(
                        *net,
                        format!("{} network {net} ({})", n.zone, n.origin),
                        true,
                    );
                }
            }
            for p in &policy.peers {
                if let NetSpec::Net(n) = &p.net {
                    push(
                        *n,
                        format!("{} peer `{}` ({})", p.driver, p.name, p.origin),
                        true,
                    );
                }
            }
            // A HEP sender names other sources as the senders of the SIP it
            // copies; banned, its copies would be dropped and detection
            // through it would go blind.
            for n in &policy.hep.senders {
                push(*n, format!("HEP sender {n} ([hep] senders)"), true);
            }
            for n in &policy.detect.never_ban {
                push(*n, format!("[detect] never_ban entry {n}"), true);
            }
        }
        for n in &host.runtime_allow {
            push(
                *n,
                format!("runtime allow entry {n} (voipwall allow)"),
                true,
            );
        }
        for (a, what) in &host.infrastructure {
            push(IpNet::from(*a), format!("{a}, this host's {what}"), true);
        }
        for (a, name) in &host.named {
            push(
                IpNet::from(*a),
                format!("{a}, an address of `{name}`, which the policy trusts"),
                true,
            );
        }
        Self { list }
    }

    /// The first protection a ban or block covering `net` would hit: one
    /// that lies inside `net`, or one that contains it.
    pub fn hit(&self, net: &IpNet) -> Option<&Protection> {
        self.list
            .iter()
            .filter(|p| net.contains(&p.net.addr()) || p.net.contains(&net.addr()))
            .min_by_key(|p| p.overridable)
    }

    /// The networks the engine must never ban.
    pub fn networks(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self.list.iter().map(|p| p.net).collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_policy as policy;

    #[test]
    fn management_is_never_overridable_and_allow_entries_name_their_line() {
        let p = Protected::new(
            Some(&policy(
                "[host]\nmanagement = [\"192.0.2.0/24\"]\n[[allow]]\naddress = \"198.51.100.7\"\n",
            )),
            &HostProtection::default(),
        );
        let m = p.hit(&"192.0.2.9/32".parse().unwrap()).unwrap();
        assert!(m.why.contains("management network 192.0.2.0/24"));
        assert!(!m.overridable);
        let a = p.hit(&"198.51.100.0/24".parse().unwrap()).unwrap();
        assert!(
            a.why.starts_with("allow entry 198.51.100.7/32 (p.toml:"),
            "{}",
            a.why
        );
    }

    #[test]
    fn loopback_and_own_addresses_are_never_overridable() {
        let p = Protected::new(
            None,
            &HostProtection {
                own: vec!["203.0.113.1".parse().unwrap()],
                ..HostProtection::default()
            },
        );
        let hit = p.hit(&"203.0.113.0/24".parse().unwrap()).unwrap();
        assert!(hit.why.contains("own address"));
        assert!(!hit.overridable);
        assert!(p.hit(&"127.0.0.1/32".parse().unwrap()).is_some());
        assert!(p.hit(&"203.0.113.9/32".parse().unwrap()).is_none());
    }

    #[test]
    fn runtime_allow_names_itself() {
        let p = Protected::new(
            None,
            &HostProtection {
                runtime_allow: vec!["203.0.113.20/32".parse().unwrap()],
                ..HostProtection::default()
            },
        );
        let hit = p.hit(&"203.0.113.20/32".parse().unwrap()).unwrap();
        assert!(hit.why.contains("runtime allow"));
        assert!(hit.overridable);
    }
}
