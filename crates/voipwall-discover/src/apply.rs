//! Folding a [`Discovery`] into a loaded [`Policy`]. Pure.

use voipwall_policy::{Peer as PolicyPeer, Policy, PortSource};

use crate::Discovery;

/// Where to look, from the policy's `[discover]` section.
pub fn roots(policy: &Policy) -> crate::Roots {
    let s = &policy.discover;
    crate::Roots {
        asterisk: s.asterisk.clone(),
        freeswitch: s.freeswitch.clone(),
        kamailio: s.kamailio.clone(),
        sshd_config: s.sshd_config.clone(),
    }
}

/// Applies `d` to `policy`: trunks and peers become [`Policy::peers`]; the
/// ports of services marked `port_from = "pbx"` become the ports the PBX
/// binds; the RTP range becomes the PBX's unless the policy's `[rtp]` sets
/// one. Returns one line per change or refusal, for the operator.
pub fn apply(policy: &mut Policy, d: &Discovery) -> Vec<String> {
    let mut out = Vec::new();
    if !policy.discover.enabled {
        return out;
    }
    if policy.discover.ports {
        let bans_only = policy.bans_only();
        for (name, (ports, origin)) in d.service_ports() {
            match policy.services.get_mut(&name) {
                Some(svc) if svc.port_from == Some(PortSource::Pbx) => {
                    let mut have = svc.ports.clone();
                    have.sort();
                    if have != ports {
                        out.push(format!(
                            "service {name}: ports {} from the PBX ({origin}) instead of {}",
                            show(&ports),
                            show(&svc.ports)
                        ));
                        svc.ports = ports;
                        svc.origin = origin;
                    }
                    // Ports the PBX serves with TLS inside a plain service:
                    // said per port, so they are not copied as SIP text.
                    if svc.sip_transport == voipwall_policy::SipTransport::Plain {
                        svc.sip_transport_of = svc
                            .ports
                            .iter()
                            .filter(|p| d.tls_ports.contains(p))
                            .map(|p| (*p, voipwall_policy::SipTransport::Tls))
                            .collect();
                    }
                }
                Some(_) => {}
                // Management ports (AMI, event socket) are the audit's business.
                None if !SIGNALLING.contains(&name.as_str()) => {}
                // IAX is not SIP: bans-only mode has no guard to offer it.
                None if bans_only && name == "iax2" => {}
                None if bans_only => out.push(format!(
                    "the PBX listens on {} ({origin}) for `{name}`: in bans-only mode no flood guard or packet copy covers it unless [filter] sip names a SIP service with those ports",
                    show(&ports)
                )),
                None => out.push(format!(
                    "the PBX listens on {} ({origin}) but no zone grants service `{name}`",
                    show(&ports)
                )),
            }
        }
        if let (Some((range, origin)), true) = (&d.rtp, policy.rtp.from_policy)
            && policy.rtp.ranges != [*range]
        {
            out.push(format!(
                "warning: RTP mismatch: the policy opens {} ({}) but the PBX uses {range} ({origin}); calls may get one-way audio",
                show(&policy.rtp.ranges),
                policy.rtp.origin
            ));
        }
        if let (Some((range, origin)), false) = (&d.rtp, policy.rtp.from_policy) {
            if range.lo < 1024 {
                out.push(format!(
                    "RTP range {range} from {origin} starts below 1024; kept {}",
                    show(&policy.rtp.ranges)
                ));
            } else if policy.rtp.ranges != [*range] {
                out.push(format!(
                    "RTP {range} from the PBX ({origin}) instead of {}",
                    show(&policy.rtp.ranges)
                ));
                policy.rtp.ranges = vec![*range];
                policy.rtp.origin = origin.clone();
            }
        }
    }
    if policy.discover.peers {
        for p in &d.peers {
            if p.ports.is_empty() {
                continue;
            }
            policy.peers.push(PolicyPeer {
                name: p.name.clone(),
                driver: p.driver.clone(),
                role: p.role.clone(),
                net: p.host.clone(),
                srv: p.srv,
                ports: p.ports.clone(),
                origin: p.origin.clone(),
            });
        }
        if !d.peers.is_empty() {
            out.push(format!(
                "{} trunk/peer entries from the PBX, each limited to its own ports",
                policy.peers.len()
            ));
        }
    }
    out
}

/// Services that carry calls: a PBX listening on one that no zone grants is
/// worth a note.
const SIGNALLING: &[&str] = &["sip", "sip-tls", "chan-sip", "iax2", "sip-ws", "sip-wss"];

fn show(p: &[voipwall_policy::PortSpec]) -> String {
    p.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
