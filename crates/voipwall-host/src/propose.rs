//! The policy `voipwall init` proposes: from what the host shows
//! (interfaces, listening sockets, the operator's sessions, the PBX
//! configuration) to a commented policy. Pure: the binary gathers the view,
//! then loads and anti-lockout-checks the text before writing it.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use voipwall_policy::{Preset, Zone};

use crate::audit::Listening;
use crate::lockout::Session;

/// An interface and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Name.
    pub name: String,
    /// Addresses with their prefix lengths.
    pub addrs: Vec<IpNet>,
    /// Holds a default route (IPv4 or IPv6): the way to the internet,
    /// whatever its address class.
    pub default_route: bool,
}

/// Everything `init` looked at.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    /// Interfaces.
    pub interfaces: Vec<Iface>,
    /// Listening sockets.
    pub listening: Vec<Listening>,
    /// The operator's live sessions.
    pub sessions: Vec<Session>,
    /// What was read from the PBX.
    pub discovery: voipwall_discover::Discovery,
    /// The host's name.
    pub hostname: String,
    /// Which of [`KNOWN_LOGS`] (and of the chosen preset's sources) exist
    /// on this host, by path.
    pub existing_logs: Vec<String>,
    /// Another firewall in force (`table ip filter`, `iptables-legacy
    /// filter`): the policy proposed runs beside it, bans-only.
    pub other_firewall: Vec<String>,
}

/// Log files PBXs and the hosts around them usually write, with their
/// format: `init` writes a `[[source]]` for each one it finds that the
/// preset does not already follow.
pub const KNOWN_LOGS: &[(&str, &str)] = &[
    ("asterisk-security", "/var/log/asterisk/security"),
    ("asterisk", "/var/log/asterisk/full"),
    ("asterisk", "/var/log/asterisk/messages"),
    ("freepbx-gui", "/var/log/asterisk/freepbx_security.log"),
    ("freeswitch", "/var/log/freeswitch/freeswitch.log"),
    ("kamailio", "/var/log/kamailio.log"),
    ("opensips", "/var/log/opensips.log"),
    ("sshd", "/var/log/auth.log"),
    ("sshd", "/var/log/secure"),
];

/// Private, shared or link-local: the LAN side. Everything else (documentation
/// prefixes included, which the lab uses for "public") is internet.
pub fn is_private(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_private()
                || v.is_link_local()
                || v.is_loopback()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            v.is_loopback() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

/// What an address is, for the comments of the proposed policy.
pub fn kind_of(a: &IpAddr) -> &'static str {
    let doc = match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        }
        IpAddr::V6(v) => v.segments()[0] == 0x2001 && v.segments()[1] == 0x0db8,
    };
    if doc {
        "(documentation range: a lab, not the internet)"
    } else if is_private(a) {
        "(private)"
    } else {
        "(public)"
    }
}

/// The preset whose first detect path exists, scored by how many of its
/// paths exist; ties go to the preset with more paths (more specific).
pub fn pick_preset<'a>(
    presets: impl Iterator<Item = &'a Preset>,
    exists: &dyn Fn(&str) -> bool,
) -> Option<(&'a Preset, Vec<String>)> {
    presets
        .filter_map(|p| {
            let first = p.detect_paths.first()?;
            if !exists(first) {
                return None;
            }
            let hits: Vec<String> = p
                .detect_paths
                .iter()
                .filter(|x| exists(x))
                .cloned()
                .collect();
            Some((p, hits))
        })
        .max_by(|(a, ha), (b, hb)| {
            ha.len()
                .cmp(&hb.len())
                .then(a.detect_paths.len().cmp(&b.detect_paths.len()))
                .then(b.name.cmp(&a.name))
        })
}

/// The policy text. Pure: the host view and the chosen preset come in.
pub fn render(view: &HostView, preset: Option<(&Preset, String)>, sshd_ports: &[u16]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# voipwall policy written by `voipwall init` on {}.",
        if view.hostname.is_empty() {
            "this host"
        } else {
            &view.hostname
        }
    );
    o.push_str("# Review it, then: voipwall check && voipwall apply --confirm 60s && voipwall confirm\n#\n");
    o.push_str("# What init found:\n");
    if view.discovery.found.is_empty() {
        o.push_str("#   PBX: none found under /etc/asterisk, /etc/freeswitch, /etc/kamailio\n");
    }
    for p in &view.discovery.found {
        let _ = writeln!(o, "#   PBX: {}", p.name());
    }
    let _ = writeln!(
        o,
        "#   trunks/peers in its configuration: {} (allowed to their own ports only, re-read at every apply)",
        view.discovery.peers.len()
    );
    if let Some((r, at)) = &view.discovery.rtp {
        let _ = writeln!(o, "#   RTP range: {r} ({at})");
    }
    let mut ports: Vec<String> = view
        .listening
        .iter()
        .filter(|l| !l.addr.is_loopback())
        .map(|l| format!("{}/{}", l.proto, l.port))
        .collect();
    ports.sort();
    ports.dedup();
    let _ = writeln!(
        o,
        "#   listening (not loopback): {}",
        if ports.is_empty() {
            "nothing".to_string()
        } else {
            ports.join(" ")
        }
    );
    for s in &view.sessions {
        let _ = writeln!(
            o,
            "#   your session: {} -> tcp/{} (kept reachable below)",
            s.remote, s.lport
        );
    }
    let bans_only = !view.other_firewall.is_empty();
    if bans_only {
        let _ = writeln!(
            o,
            "#   another firewall in force: {}",
            view.other_firewall.join(", ")
        );
    }
    o.push('\n');

    let preset_ref = preset.as_ref().map(|(p, _)| *p);
    match &preset {
        Some((p, why)) if bans_only => {
            let _ = writeln!(
                o,
                "# {} ({why}): its zones are left to the other firewall; its logs are followed below.\n",
                p.description
            );
        }
        Some((p, why)) => {
            let _ = writeln!(o, "# {} ({why})", p.description);
            let _ = writeln!(o, "preset = \"{}\"\n", p.name);
        }
        None => o.push_str("# No preset matched this host; zones are spelled out below.\n\n"),
    }

    // Sessions: their sources become management networks and reach SSH
    // through zone local (or trusted, if the preset's local lacks ssh).
    let local_has_ssh = preset_ref.is_none_or(|p| {
        p.zones
            .get(&Zone::Local)
            .is_some_and(|l| l.iter().any(|s| s == "ssh"))
    });
    let mut sources: Vec<IpAddr> = view
        .sessions
        .iter()
        .map(|s| s.remote)
        .filter(|a| !a.is_loopback())
        .collect();
    sources.sort();
    sources.dedup();
    if !sources.is_empty() {
        o.push_str(
            "[host]\n# Never blocked or banned; every apply checks they can still reach SSH.\n",
        );
        let list: Vec<String> = sources
            .iter()
            .map(|a| format!("\"{}\"", IpNet::from(*a)))
            .collect();
        let _ = writeln!(o, "management = [{}]\n", list.join(", "));
    }
    if bans_only {
        let sip = if view.discovery.found.is_empty() {
            "\"sip\""
        } else {
            "\"sip\", \"sip-tls\""
        };
        let _ = writeln!(
            o,
            "[filter]\n# The firewall found above decides what passes; voipwall runs beside it:\n# bans, blocks and flood guards drop before it, and SIP is copied for\n# detection. Zones and services stay that firewall's job. For voipwall's\n# own zones and default deny instead, remove it and run `voipwall init` again.\nmode = \"bans-only\"\n# The SIP services the PBX offers (nothing is opened):\nsip = [{sip}]\n"
        );
        render_logs(&mut o, view, None);
        render_tail(&mut o);
        return o;
    }

    o.push_str("[interfaces]\n");
    let mut any_internet = false;
    for i in &view.interfaces {
        if i.name == "lo" {
            continue;
        }
        if i.addrs.is_empty() {
            let _ = writeln!(o, "# {}: no address; left to the default zone", i.name);
            continue;
        }
        let public = i.addrs.iter().any(|a| !is_private(&a.addr()));
        // Clouds NAT public addresses onto private NICs: the interface of
        // the default route faces the internet whatever its addresses are.
        let internet = public || i.default_route;
        any_internet |= internet;
        let zone = if internet { "internet" } else { "local" };
        // Each address says what it is (a documentation or private range
        // is not a "public address").
        let addrs: Vec<String> = i
            .addrs
            .iter()
            .map(|a| format!("{a} {}", kind_of(&a.addr())))
            .collect();
        let line = format!("{} = \"{zone}\"", toml_key(&i.name));
        let _ = writeln!(
            o,
            "{line:<24}  # {}{}",
            addrs.join(", "),
            match (public, i.default_route) {
                (true, _) => "",
                (false, true) =>
                    "; it holds the default route: traffic from the internet arrives here (cloud NAT); say \"local\" only if it does not",
                (false, false) => "",
            }
        );
    }
    if !any_internet {
        o.push_str("# No interface has a public address; traffic from unlisted interfaces is zone internet.\n");
    }
    o.push('\n');

    if !sources.is_empty() {
        let zone = if local_has_ssh { "local" } else { "trusted" };
        let _ = writeln!(
            o,
            "[networks]\n# Where your SSH session comes from: zone {zone} grants ssh{}.",
            if local_has_ssh {
                ""
            } else {
                " (the preset's local zone does not)"
            }
        );
        for a in &sources {
            let _ = writeln!(o, "\"{a}\" = \"{zone}\"");
        }
        o.push('\n');
    }

    if preset.is_none() {
        let sip = !view.discovery.found.is_empty();
        o.push_str("[zones.internet]\n");
        let _ = writeln!(
            o,
            "services = [{}]",
            if sip { "\"sip\", \"sip-tls\"" } else { "" }
        );
        o.push_str("[zones.local]\n");
        let _ = writeln!(
            o,
            "services = [\"ssh\"{}]\n",
            if sip { ", \"sip\", \"sip-tls\"" } else { "" }
        );
    }
    if sshd_ports.iter().any(|p| *p != 22) {
        let _ = writeln!(
            o,
            "# sshd listens on {}: the ssh service follows /etc/ssh/sshd_config.\n",
            sshd_ports
                .iter()
                .map(|p| format!("tcp/{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    render_logs(&mut o, view, preset_ref);
    render_tail(&mut o);
    o
}

/// Log sources: what the preset follows, whether it is here yet, and a
/// `[[source]]` for every other known log found on this host (without a
/// preset, also for the logs the detected preset would follow).
fn render_logs(o: &mut String, view: &HostView, preset_ref: Option<&Preset>) {
    let preset_sources = preset_ref.map(|p| p.sources.as_slice()).unwrap_or_default();
    if !preset_sources.is_empty() {
        o.push_str(
            "# Logs the preset follows (a file not here yet is followed once it appears):\n",
        );
        for s in preset_sources {
            let (place, here) = match (&s.path, &s.journal) {
                (Some(p), _) => (
                    p.clone(),
                    if view.existing_logs.contains(p) {
                        "found"
                    } else {
                        "not on this host yet"
                    },
                ),
                (None, Some(u)) => (format!("journal {u}"), "journal"),
                (None, None) => continue,
            };
            let _ = writeln!(o, "#   {} {place} ({here})", s.format);
        }
        o.push('\n');
    }
    let mut wrote = false;
    for (format, path) in KNOWN_LOGS {
        let followed = preset_sources
            .iter()
            .any(|s| s.path.as_deref() == Some(*path));
        if followed || !view.existing_logs.iter().any(|p| p == path) {
            continue;
        }
        if !wrote {
            o.push_str("# Found on this host: followed for detection.\n");
            wrote = true;
        }
        let _ = writeln!(o, "[[source]]\nformat = \"{format}\"\npath = \"{path}\"\n");
    }
}

/// `[discover]` and `[detect]`, the end of every proposed policy.
fn render_tail(o: &mut String) {
    o.push_str("[discover]\n# Trunks, peers, SIP ports and the RTP range are read from the PBX at every apply.\n");
    o.push_str("# Point these elsewhere, or set one to false to skip it.\n");
    o.push_str("asterisk = \"/etc/asterisk\"\nfreeswitch = \"/etc/freeswitch\"\nkamailio = \"/etc/kamailio\"\n\n");
    o.push_str("[detect]\n# \"observe\" logs what would be banned and bans nothing; \"enforce\" bans.\nmode = \"enforce\"\n");
}

fn toml_key(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        s.to_string()
    } else {
        format!("\"{s}\"")
    }
}

/// Interfaces that hold a default route, from the kernel's route tables
/// (`/proc/net/route`: destination and mask 0; `/proc/net/ipv6_route`:
/// destination ::/0).
pub fn default_route_interfaces(v4: &str, v6: &str) -> Vec<String> {
    let mut out: Vec<String> = crate::infra::default_routes(v4, v6)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `init` (issue 14): the preset's sources are listed with whether they
    /// are here, and a known log found on the host that the preset does not
    /// follow becomes a `[[source]]` the policy loads.
    #[test]
    fn init_lists_the_presets_sources_and_adds_the_logs_it_finds() {
        let mut sm = voipwall_policy::SourceMap::default();
        let (cat, _) =
            voipwall_policy::Catalog::load(&voipwall_policy::DataFile::builtin(), &mut sm);
        let preset = cat.presets.get("freepbx").unwrap();
        let view = HostView {
            interfaces: Vec::new(),
            listening: Vec::new(),
            sessions: Vec::new(),
            discovery: voipwall_discover::Discovery::default(),
            hostname: "pbx".into(),
            existing_logs: vec!["/var/log/asterisk/full".into(), "/var/log/auth.log".into()],
            other_firewall: Vec::new(),
        };
        let text = render(&view, Some((preset, "test".into())), &[22]);
        assert!(
            text.contains("#   asterisk /var/log/asterisk/full (found)"),
            "{text}"
        );
        assert!(
            text.contains(
                "#   asterisk-security /var/log/asterisk/security (not on this host yet)"
            ),
            "{text}"
        );
        assert!(
            text.contains("[[source]]\nformat = \"sshd\"\npath = \"/var/log/auth.log\""),
            "{text}"
        );
        // Only the one the preset does not follow is written out.
        assert_eq!(text.matches("[[source]]").count(), 1, "{text}");
    }

    /// Issue 25, item 17: with another firewall in force, init proposes a
    /// bans-only policy that loads: no zones, interfaces or preset, the
    /// session's source as management, the logs it found followed.
    #[test]
    fn beside_another_firewall_init_proposes_bans_only() {
        let mut sm = voipwall_policy::SourceMap::default();
        let (cat, _) =
            voipwall_policy::Catalog::load(&voipwall_policy::DataFile::builtin(), &mut sm);
        let preset = cat.presets.get("freepbx").unwrap();
        let view = HostView {
            interfaces: vec![Iface {
                name: "eth0".into(),
                addrs: vec!["203.0.113.5/24".parse().unwrap()],
                default_route: true,
            }],
            sessions: vec![Session {
                remote: "198.51.100.20".parse().unwrap(),
                local: "203.0.113.5".parse().unwrap(),
                lport: 22,
                rport: 50022,
            }],
            hostname: "pbx".into(),
            existing_logs: vec!["/var/log/asterisk/full".into()],
            other_firewall: vec!["table ip filter".into(), "table ip6 filter".into()],
            ..HostView::default()
        };
        let text = render(&view, Some((preset, "test".into())), &[22]);
        assert!(
            text.contains("another firewall in force: table ip filter, table ip6 filter"),
            "{text}"
        );
        assert!(
            text.contains("[filter]") && text.contains("mode = \"bans-only\""),
            "{text}"
        );
        for refused in ["[interfaces]", "[networks]", "[zones.", "preset = "] {
            assert!(!text.contains(refused), "{refused} in {text}");
        }
        assert!(
            text.contains("management = [\"198.51.100.20/32\"]"),
            "{text}"
        );
        assert!(text.contains("path = \"/var/log/asterisk/full\""), "{text}");
        let mut read = |_: &str| Ok(text.clone());
        let l = voipwall_policy::load(
            "policy.toml",
            &mut read,
            &cat,
            &voipwall_policy::HostFacts::default(),
        );
        assert!(!l.has_errors(), "{:?}\n{text}", l.diagnostics);
        let p = l.policy.unwrap();
        assert!(p.bans_only());
        assert_eq!(p.filter.sip, ["sip"]);
    }

    #[test]
    fn private_or_public() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(&a.parse().unwrap()), "{a}");
        }
        for a in [
            "203.0.113.1",
            "8.8.8.8",
            "100.128.0.1",
            "2001:db8::1",
            "2a00::1",
        ] {
            assert!(!is_private(&a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn presets_detected_by_their_first_path() {
        let mut sm = voipwall_policy::SourceMap::default();
        let (cat, _) =
            voipwall_policy::Catalog::load(&voipwall_policy::DataFile::builtin(), &mut sm);
        let pick = |paths: &[&str]| {
            pick_preset(cat.presets.values(), &|p| paths.contains(&p)).map(|(p, _)| p.name.clone())
        };
        assert_eq!(
            pick(&[
                "/etc/freepbx.conf",
                "/etc/asterisk/pjsip.conf",
                "/etc/asterisk/asterisk.conf"
            ])
            .as_deref(),
            Some("freepbx")
        );
        assert_eq!(
            pick(&["/etc/asterisk/asterisk.conf", "/etc/asterisk/pjsip.conf"]).as_deref(),
            Some("asterisk")
        );
        assert_eq!(
            pick(&["/etc/kamailio/kamailio.cfg"]).as_deref(),
            Some("kamailio")
        );
        assert_eq!(pick(&[]), None);
    }
}
