//! The policy for other layers: an AWS security group, GCP firewall rules,
//! an Azure NSG, firewalld zones, and `iptables-restore` + `ipset` for
//! hosts without nftables. Pure: the policy and resolved names come in,
//! text comes out, with notes saying what each target cannot express.
//!
//! Everything is built from one flattened [`Intent`]: who may reach which
//! ports. What no export carries: detection bans and kernel rate guards
//! (they live on the host), the allow list's "skip ban lookups" meaning,
//! and zones selected by interface in cloud targets (they see no
//! interfaces).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};
use voipwall_policy::{NetSpec, Policy, PortSpec, Proto, Zone, display_net};

/// The export targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `aws ec2 authorize-security-group-ingress --cli-input-json`.
    Aws,
    /// GCP firewall rules (API bodies, one per rule).
    Gcp,
    /// Azure NSG security rules (ARM `securityRules`).
    Azure,
    /// firewalld zone XML files.
    Firewalld,
    /// `ipset restore` + `iptables-restore` + `ip6tables-restore`.
    Iptables,
}

impl Target {
    /// Parses the command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "aws" => Self::Aws,
            "gcp" => Self::Gcp,
            "azure" => Self::Azure,
            "firewalld" => Self::Firewalld,
            "iptables" => Self::Iptables,
            _ => return None,
        })
    }
}

/// Ports of one allow: some ranges, or everything (zone trusted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// All protocols and ports.
    All,
    /// These.
    Some(Vec<PortSpec>),
}

/// One allow: sources (empty = anyone) to ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Short name for rule names (`internet-sip`, `peer-telco`).
    pub name: String,
    /// Source networks (see `any`).
    pub sources: Vec<IpNet>,
    /// From any address (zone internet, reached by interface or default).
    /// With `any` false and no sources, the zone is reached by interface
    /// only: firewalld and iptables carry it, cloud targets cannot.
    pub any: bool,
    /// Ports.
    pub ports: Ports,
    /// Zone it comes from (`None` for peers).
    pub zone: Option<Zone>,
    /// Where it comes from, for descriptions.
    pub why: String,
}

/// What the policy grants, flattened.
#[derive(Debug, Clone, Default)]
pub struct Intent {
    /// Allows in a stable order.
    pub allows: Vec<Allow>,
    /// Block list (denies).
    pub blocks: Vec<IpNet>,
    /// Interfaces and their zones (only firewalld and iptables use them).
    pub interfaces: Vec<(String, Zone)>,
    /// Networks and their zones, for targets that classify like voipwall.
    pub networks: Vec<(IpNet, Zone)>,
    /// Zone of traffic no network or interface claims.
    pub default_zone: Option<Zone>,
    /// What could not be carried over.
    pub notes: Vec<String>,
}

fn nets(
    spec: &NetSpec,
    resolved: &BTreeMap<String, Vec<IpAddr>>,
    notes: &mut Vec<String>,
) -> Vec<IpNet> {
    match spec {
        NetSpec::Net(n) => vec![*n],
        NetSpec::Geo(g) => {
            notes.push(format!(
                "`{g}` left out: exports are static lists of addresses (a country's networks change with its database)"
            ));
            Vec::new()
        }
        NetSpec::Host(h) => {
            match resolved.get(h) {
                Some(a) if !a.is_empty() => a.iter().map(|x| IpNet::from(*x)).collect(),
                _ => {
                    notes.push(format!("`{h}` did not resolve; left out (exports are static: re-export when it moves)"));
                    Vec::new()
                }
            }
        }
    }
}

/// Flattens the policy.
pub fn intent(policy: &Policy, resolved: &BTreeMap<String, Vec<IpAddr>>) -> Intent {
    let mut it = Intent::default();
    let mut zone_nets: BTreeMap<Zone, Vec<IpNet>> = BTreeMap::new();
    for n in &policy.networks {
        for net in nets(&n.net, resolved, &mut it.notes) {
            zone_nets.entry(n.zone).or_default().push(net);
            it.networks.push((net, n.zone));
        }
    }
    it.interfaces = policy
        .interfaces
        .iter()
        .map(|i| (i.name.clone(), i.zone))
        .collect();
    it.default_zone = Some(policy.default_zone);
    let internet_any = policy.default_zone == Zone::Internet
        || policy.interfaces.iter().any(|i| i.zone == Zone::Internet);
    for zone in Zone::ALL {
        let sources = zone_nets.get(&zone).cloned().unwrap_or_default();
        let any = zone == Zone::Internet && internet_any;
        let by_iface =
            policy.interfaces.iter().any(|i| i.zone == zone) || policy.default_zone == zone;
        if let Some(i) = policy
            .interfaces
            .iter()
            .find(|i| i.zone == zone && zone != Zone::Internet)
        {
            it.notes.push(format!(
                "interface {} is in zone {zone}: cloud targets see no interfaces; list its network under [networks] to export it",
                i.name
            ));
        }
        if !any && !by_iface && sources.is_empty() {
            continue;
        }
        let sources = if any { Vec::new() } else { sources };
        let mut push = |name: String, ports: Ports, why: String| {
            it.allows.push(Allow {
                name,
                sources: sources.clone(),
                any,
                ports,
                zone: Some(zone),
                why,
            });
        };
        if zone == Zone::Trusted {
            push("trusted".into(), Ports::All, "zone trusted".into());
            continue;
        }
        if zone != Zone::Reject {
            for g in policy.grants.get(&zone).into_iter().flatten() {
                let Some(svc) = policy.services.get(&g.service) else {
                    continue;
                };
                push(
                    format!("{zone}-{}", g.service),
                    Ports::Some(svc.ports.clone()),
                    format!("zone {zone} / service {} / {}", g.service, g.origin),
                );
            }
        }
        if policy.rtp.zones.contains(&zone) && !policy.rtp.ranges.is_empty() {
            push(
                format!("{zone}-rtp"),
                Ports::Some(policy.rtp.ranges.clone()),
                format!("zone {zone} / rtp / {}", policy.rtp.origin),
            );
        }
    }
    for p in &policy.peers {
        let sources = nets(&p.net, resolved, &mut it.notes);
        if sources.is_empty() {
            continue;
        }
        let name: String = p
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        it.allows.push(Allow {
            name: format!("peer-{name}"),
            sources,
            any: false,
            ports: Ports::Some(p.ports.clone()),
            zone: None,
            why: format!("peer {} ({} {}) / {}", p.name, p.driver, p.role, p.origin),
        });
    }
    for e in &policy.block {
        it.blocks.extend(nets(&e.net, resolved, &mut it.notes));
    }
    if !policy.allow.is_empty() {
        it.notes.push("the allow list only skips ban lookups on the host; it grants no ports and is not exported".into());
    }
    it.notes.push("detection bans, flood guards and responsive-mode limits stay on the host (voipwall daemon)".into());
    it
}

fn v4(n: &IpNet) -> bool {
    matches!(n, IpNet::V4(_))
}

/// A protocol (`None`: all) and a port range (`None`: all).
type PortGroup = (Option<Proto>, Option<(u16, u16)>);

fn port_groups(p: &Ports) -> Vec<PortGroup> {
    match p {
        Ports::All => vec![(None, None)],
        Ports::Some(v) => v
            .iter()
            .map(|s| (Some(s.proto), Some((s.lo, s.hi))))
            .collect(),
    }
}

fn any_nets() -> Vec<IpNet> {
    vec![
        "0.0.0.0/0".parse().expect("literal"),
        "::/0".parse().expect("literal"),
    ]
}

/// An export: exactly what the target's client takes, and the notes on
/// what it cannot express (comments inside text targets; for the JSON
/// targets only here, since their clients refuse unknown keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The file for the target.
    pub body: String,
    /// For the operator (the CLI prints them on stderr).
    pub notes: Vec<String>,
}

/// Renders `intent` for `target`.
pub fn render(target: Target, it: &Intent) -> Export {
    let text = |body: String| Export {
        body,
        notes: it.notes.clone(),
    };
    match target {
        Target::Aws => aws(it),
        Target::Gcp => gcp(it),
        Target::Azure => azure(it),
        Target::Firewalld => text(firewalld(it)),
        Target::Iptables => text(iptables(it)),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The allows a cloud target can carry, with their sources spelled out.
fn cloud(it: &Intent) -> impl Iterator<Item = (&Allow, Vec<IpNet>)> {
    it.allows.iter().filter_map(|a| {
        if a.any {
            Some((a, any_nets()))
        } else if a.sources.is_empty() {
            None
        } else {
            Some((a, a.sources.clone()))
        }
    })
}

fn aws(it: &Intent) -> Export {
    let mut perms = Vec::new();
    for (a, srcs) in cloud(it) {
        let desc: String = a
            .why
            .chars()
            .filter(|c| c.is_ascii() && *c != '"')
            .take(255)
            .collect();
        let v4r: Vec<Value> = srcs
            .iter()
            .filter(|n| v4(n))
            .map(|n| json!({"CidrIp": n.to_string(), "Description": desc}))
            .collect();
        let v6r: Vec<Value> = srcs
            .iter()
            .filter(|n| !v4(n))
            .map(|n| json!({"CidrIpv6": n.to_string(), "Description": desc}))
            .collect();
        for (proto, range) in port_groups(&a.ports) {
            let mut p = json!({
                "IpProtocol": proto.map_or("-1", |p| p.name()),
                "IpRanges": v4r,
                "Ipv6Ranges": v6r,
            });
            if let Some((lo, hi)) = range {
                p["FromPort"] = json!(lo);
                p["ToPort"] = json!(hi);
            }
            perms.push(p);
        }
    }
    let mut notes = it.notes.clone();
    if !it.blocks.is_empty() {
        notes.push(format!(
            "security groups cannot deny: the block list ({} entries) is not exported; use a network ACL",
            it.blocks.len()
        ));
    }
    notes.push("security groups allow the union of their rules: a more specific network in a less trusted zone cannot take access away".into());
    Export {
        body: pretty(&json!({"GroupId": "sg-REPLACE-ME", "IpPermissions": perms})),
        notes,
    }
}

fn gcp(it: &Intent) -> Export {
    let mut rules = Vec::new();
    for (i, n) in it.blocks.iter().enumerate() {
        rules.push(json!({
            "name": format!("vw-block-{i}"), "direction": "INGRESS", "priority": 100,
            "sourceRanges": [n.to_string()], "denied": [{"IPProtocol": "all"}],
            "description": "voipwall block list",
        }));
    }
    for (a, srcs) in cloud(it) {
        let allowed: Vec<Value> = match &a.ports {
            Ports::All => vec![json!({"IPProtocol": "all"})],
            Ports::Some(v) => [Proto::Tcp, Proto::Udp]
                .iter()
                .filter_map(|proto| {
                    let ports: Vec<String> = v
                        .iter()
                        .filter(|s| s.proto == *proto)
                        .map(|s| {
                            if s.lo == s.hi {
                                s.lo.to_string()
                            } else {
                                format!("{}-{}", s.lo, s.hi)
                            }
                        })
                        .collect();
                    (!ports.is_empty()).then(|| json!({"IPProtocol": proto.name(), "ports": ports}))
                })
                .collect(),
        };
        // A GCP rule takes IPv4 or IPv6 sources, not both.
        for (fam, list) in [
            ("v4", srcs.iter().filter(|n| v4(n)).collect::<Vec<_>>()),
            ("v6", srcs.iter().filter(|n| !v4(n)).collect()),
        ] {
            if list.is_empty() {
                continue;
            }
            // More specific sources first, like voipwall's longest prefix.
            let prio =
                1000 - u32::from(list.iter().map(|n| n.prefix_len()).min().unwrap_or(0)).min(128);
            rules.push(json!({
                "name": format!("vw-{}-{fam}", a.name).chars().take(63).collect::<String>(),
                "direction": "INGRESS",
                "priority": prio,
                "sourceRanges": list.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "allowed": allowed,
                "description": a.why.chars().take(2048).collect::<String>(),
            }));
        }
    }
    let mut notes = it.notes.clone();
    notes.push("GCP's implied rules deny other ingress; targetTags are not set: add the instance's tag before creating the rules".into());
    Export {
        body: pretty(&json!({"rules": rules})),
        notes,
    }
}

fn azure(it: &Intent) -> Export {
    let mut rules = Vec::new();
    let mut prio = 100;
    for n in &it.blocks {
        rules.push(json!({"name": format!("vw-block-{prio}"), "properties": {
            "priority": prio, "direction": "Inbound", "access": "Deny", "protocol": "*",
            "sourceAddressPrefix": n.to_string(), "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": "*",
            "description": "voipwall block list"}}));
        prio += 1;
    }
    // More specific sources first (Azure evaluates by priority).
    let mut allows: Vec<(&Allow, Vec<IpNet>)> = cloud(it).collect();
    allows.sort_by_key(|(a, _)| {
        std::cmp::Reverse(a.sources.iter().map(|n| n.prefix_len()).max().unwrap_or(0))
    });
    prio = prio.max(1000);
    for (a, nets) in allows {
        for (proto, range) in port_groups(&a.ports) {
            let srcs: Vec<String> = if a.any {
                vec!["Internet".into()]
            } else {
                nets.iter().map(ToString::to_string).collect()
            };
            rules.push(json!({"name": format!("vw-{}-{prio}", a.name).chars().take(80).collect::<String>(), "properties": {
                "priority": prio, "direction": "Inbound", "access": "Allow",
                "protocol": proto.map_or("*", |p| if p == Proto::Tcp { "Tcp" } else { "Udp" }),
                "sourceAddressPrefixes": srcs, "sourcePortRange": "*",
                "destinationAddressPrefix": "*",
                "destinationPortRange": range.map_or("*".to_string(), |(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }),
                "description": a.why.chars().take(140).collect::<String>()}}));
            prio += 1;
        }
    }
    let mut notes = it.notes.clone();
    if prio > 4096 {
        notes.push(format!(
            "{} rules exceed Azure's priority range (100-4096): merge networks first",
            rules.len()
        ));
    }
    Export {
        body: pretty(&json!({"securityRules": rules})),
        notes,
    }
}

fn ports_attr(s: &PortSpec) -> String {
    if s.lo == s.hi {
        s.lo.to_string()
    } else {
        format!("{}-{}", s.lo, s.hi)
    }
}

fn firewalld(it: &Intent) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<!-- voipwall export for firewalld: one zone file per voipwall zone (write each to /etc/firewalld/zones/NAME.xml). -->"
    );
    for n in &it.notes {
        let _ = writeln!(o, "<!-- note: {} -->", n.replace("--", "-"));
    }
    let _ = writeln!(
        o,
        "<!-- note: firewalld picks a source's zone by its own rules, not voipwall's longest prefix; peers become rich rules in vw-internet -->"
    );
    for zone in Zone::ALL {
        let allows: Vec<&Allow> = it.allows.iter().filter(|a| a.zone == Some(zone)).collect();
        let ifaces: Vec<&String> = it
            .interfaces
            .iter()
            .filter(|(_, z)| *z == zone)
            .map(|(n, _)| n)
            .collect();
        let srcs: Vec<&IpNet> = it
            .networks
            .iter()
            .filter(|(_, z)| *z == zone)
            .map(|(n, _)| n)
            .collect();
        let peers: Vec<&Allow> = if zone == Zone::Internet {
            it.allows.iter().filter(|a| a.zone.is_none()).collect()
        } else {
            Vec::new()
        };
        if allows.is_empty() && ifaces.is_empty() && srcs.is_empty() && peers.is_empty() {
            continue;
        }
        let target = match zone {
            Zone::Trusted => "ACCEPT",
            Zone::Reject => "%%REJECT%%",
            _ => "DROP",
        };
        let _ = writeln!(
            o,
            "\n<!-- file: vw-{zone}.xml -->\n<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone target=\"{target}\">\n  <short>vw-{zone}</short>\n  <description>voipwall zone {zone}</description>"
        );
        for i in ifaces {
            let _ = writeln!(o, "  <interface name=\"{i}\"/>");
        }
        for s in srcs {
            let _ = writeln!(o, "  <source address=\"{s}\"/>");
        }
        for a in allows {
            if let Ports::Some(v) = &a.ports {
                for s in v {
                    let _ = writeln!(
                        o,
                        "  <port protocol=\"{}\" port=\"{}\"/>",
                        s.proto,
                        ports_attr(s)
                    );
                }
            }
        }
        for p in peers {
            for src in &p.sources {
                let fam = if v4(src) { "ipv4" } else { "ipv6" };
                if let Ports::Some(v) = &p.ports {
                    for s in v {
                        let _ = writeln!(
                            o,
                            "  <rule family=\"{fam}\"><source address=\"{src}\"/><port protocol=\"{}\" port=\"{}\"/><accept/></rule>",
                            s.proto,
                            ports_attr(s)
                        );
                    }
                }
            }
        }
        for b in &it.blocks {
            if zone == Zone::Internet {
                let fam = if v4(b) { "ipv4" } else { "ipv6" };
                let _ = writeln!(
                    o,
                    "  <rule family=\"{fam}\" priority=\"-100\"><source address=\"{b}\"/><drop/></rule>"
                );
            }
        }
        o.push_str("</zone>\n");
    }
    o
}

fn iptables(it: &Intent) -> String {
    let mut o = String::new();
    o.push_str("# voipwall export for hosts without nftables: three parts, applied in order:\n#   ipset restore < part 1;  iptables-restore < part 2;  ip6tables-restore < part 3\n");
    for n in &it.notes {
        let _ = writeln!(o, "# note: {n}");
    }
    o.push_str("# Zones by source: networks are tried most specific first (voipwall's longest prefix), then interfaces.\n");
    o.push_str("\n### part 1: ipset\n");
    let blocks4: Vec<&IpNet> = it.blocks.iter().filter(|n| v4(n)).collect();
    let blocks6: Vec<&IpNet> = it.blocks.iter().filter(|n| !v4(n)).collect();
    o.push_str("create vw_block_v4 hash:net family inet -exist\nflush vw_block_v4\n");
    for b in &blocks4 {
        let _ = writeln!(o, "add vw_block_v4 {b}");
    }
    o.push_str("create vw_block_v6 hash:net family inet6 -exist\nflush vw_block_v6\n");
    for b in &blocks6 {
        let _ = writeln!(o, "add vw_block_v6 {b}");
    }
    for (part, is_v4) in [
        ("part 2: iptables-restore", true),
        ("part 3: ip6tables-restore", false),
    ] {
        let _ = writeln!(
            o,
            "\n### {part}\n*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]"
        );
        for z in Zone::ALL {
            let _ = writeln!(o, ":vw_{z} - [0:0]");
        }
        o.push_str("-A INPUT -i lo -j ACCEPT\n");
        let _ = writeln!(
            o,
            "-A INPUT -m set --match-set {} src -j DROP",
            if is_v4 { "vw_block_v4" } else { "vw_block_v6" }
        );
        o.push_str("-A INPUT -m conntrack --ctstate INVALID -j DROP\n");
        o.push_str("-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
        if is_v4 {
            o.push_str("-A INPUT -p icmp -j ACCEPT\n");
        } else {
            o.push_str("-A INPUT -p ipv6-icmp -j ACCEPT\n");
        }
        for p in it.allows.iter().filter(|a| a.zone.is_none()) {
            for src in p.sources.iter().filter(|n| v4(n) == is_v4) {
                if let Ports::Some(v) = &p.ports {
                    for s in v {
                        let _ = writeln!(
                            o,
                            "-A INPUT -s {} -p {} --dport {} -m comment --comment \"{}\" -j ACCEPT",
                            display_net(src),
                            s.proto,
                            ports_attr(s).replace('-', ":"),
                            p.name
                        );
                    }
                }
            }
        }
        let mut nets: Vec<&(IpNet, Zone)> =
            it.networks.iter().filter(|(n, _)| v4(n) == is_v4).collect();
        nets.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        for (n, z) in nets {
            let _ = writeln!(o, "-A INPUT -s {n} -j vw_{z}");
        }
        for (i, z) in &it.interfaces {
            let _ = writeln!(o, "-A INPUT -i {i} -j vw_{z}");
        }
        let _ = writeln!(
            o,
            "-A INPUT -j vw_{}",
            it.default_zone.unwrap_or(Zone::Internet)
        );
        for z in Zone::ALL {
            for a in it.allows.iter().filter(|a| a.zone == Some(z)) {
                match &a.ports {
                    Ports::All => {
                        let _ = writeln!(o, "-A vw_{z} -j ACCEPT");
                    }
                    Ports::Some(v) => {
                        for s in v {
                            let _ = writeln!(
                                o,
                                "-A vw_{z} -p {} --dport {} -m comment --comment \"{}\" -j ACCEPT",
                                s.proto,
                                ports_attr(s).replace('-', ":"),
                                a.name
                            );
                        }
                    }
                }
            }
            let last = if z == Zone::Reject { "REJECT" } else { "DROP" };
            let _ = writeln!(o, "-A vw_{z} -j {last}");
        }
        o.push_str("COMMIT\n");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_policy as policy;

    const P: &str = "[interfaces]\neth0 = \"internet\"\n[networks]\n\"198.51.100.0/24\" = \"local\"\n\"192.0.2.9\" = \"trusted\"\n[zones.internet]\nservices = [\"sip\"]\n[zones.local]\nservices = [\"ssh\"]\n[[block]]\naddress = \"203.0.113.66\"\n";

    #[test]
    fn intent_has_each_zone_grant_rtp_and_block() {
        let it = intent(&policy(P), &BTreeMap::new());
        let names: Vec<&str> = it.allows.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "internet-sip",
                "internet-rtp",
                "local-ssh",
                "local-rtp",
                "trusted"
            ]
        );
        assert!(it.allows[0].sources.is_empty(), "internet: anyone");
        assert_eq!(it.blocks, vec!["203.0.113.66/32".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn every_target_renders_and_json_targets_parse() {
        let it = intent(&policy(P), &BTreeMap::new());
        for t in [Target::Aws, Target::Gcp, Target::Azure] {
            let e = render(t, &it);
            let v: Value = serde_json::from_str(&e.body).expect("json");
            assert!(!e.notes.is_empty());
            assert!(
                !e.body.contains("voipwall_notes"),
                "clients refuse unknown keys"
            );
            assert!(v.as_object().is_some_and(|o| o.len() <= 2));
        }
        let aws: Value = serde_json::from_str(&render(Target::Aws, &it).body).unwrap();
        // Only the members of botocore's AuthorizeSecurityGroupIngress
        // input and IpPermission shapes.
        let top: Vec<&String> = aws.as_object().unwrap().keys().collect();
        assert_eq!(top, ["GroupId", "IpPermissions"]);
        for p in aws["IpPermissions"].as_array().unwrap() {
            for k in p.as_object().unwrap().keys() {
                assert!(
                    [
                        "IpProtocol",
                        "FromPort",
                        "ToPort",
                        "IpRanges",
                        "Ipv6Ranges",
                        "UserIdGroupPairs",
                        "PrefixListIds"
                    ]
                    .contains(&k.as_str()),
                    "{k}"
                );
            }
        }
        let sip = &aws["IpPermissions"][0];
        assert_eq!(sip["IpProtocol"], "udp");
        assert_eq!(sip["FromPort"], 5060);
        assert_eq!(sip["IpRanges"][0]["CidrIp"], "0.0.0.0/0");
        assert_eq!(sip["Ipv6Ranges"][0]["CidrIpv6"], "::/0");
        let fw = render(Target::Firewalld, &it).body;
        assert!(fw.contains("<source address=\"198.51.100.0/24\"/>"));
        assert!(fw.contains("<port protocol=\"tcp\" port=\"22\"/>"));
        assert!(fw.contains("<drop/>"));
        let ipt = render(Target::Iptables, &it).body;
        // The /32 in trusted is tried before the /24 in local.
        let t = ipt.find("-A INPUT -s 192.0.2.9/32 -j vw_trusted").unwrap();
        let l = ipt.find("-A INPUT -s 198.51.100.0/24 -j vw_local").unwrap();
        assert!(t < l);
        assert!(ipt.contains("add vw_block_v4 203.0.113.66/32"));
        assert!(ipt.contains("-A vw_internet -p udp --dport 10000:20000"));
    }
}
