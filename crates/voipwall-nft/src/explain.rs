//! `explain`: evaluates the ruleset IR for one packet, the way the kernel walks
//! the same rules, and says which rule decided and where it came from.

use std::net::IpAddr;

use serde::Serialize;
use voipwall_policy::Proto;

use crate::flatten::addr_int;
use crate::ir::*;

/// The packet to explain: a new inbound connection or datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Inbound interface name.
    pub iif: String,
    /// Protocol.
    pub proto: Proto,
    /// Destination port.
    pub dport: u16,
    /// Part of an established flow (conntrack says so).
    pub established: bool,
}

/// Final verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Reaches the listener.
    Accept,
    /// Silently dropped.
    Drop,
    /// Rejected with an ICMP error.
    Reject,
}

impl Verdict {
    /// `accept`, `drop`, `reject`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Drop => "drop",
            Self::Reject => "reject",
        }
    }
}

/// One rule the packet matched on its way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Chain.
    pub chain: String,
    /// The rule as nft prints it.
    pub rule: String,
    /// Its origin comment.
    pub comment: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// What happens to the packet.
    pub verdict: Verdict,
    /// Zone the packet was classified into, if it got that far.
    pub zone: Option<String>,
    /// The rule that decided (its comment names the policy line).
    pub decided_by: String,
    /// Every matching rule in order.
    pub trace: Vec<Step>,
}

/// Membership of addresses in dynamic sets (bans, known endpoints), which the
/// compiler cannot know: the caller asks the kernel or the store.
pub trait DynamicSets {
    /// Whether `addr` (already masked for prefix sets) is in set `name`.
    fn contains(&self, set: &str, addr: &IpAddr) -> bool;
}

/// No dynamic state: nothing banned, nothing known.
pub struct NoDynamic;

impl DynamicSets for NoDynamic {
    fn contains(&self, _: &str, _: &IpAddr) -> bool {
        false
    }
}

enum Flow {
    Verdict(Verdict),
    Continue,
}

/// Explains what the ruleset does with `p`. Rate meters are assumed not
/// exceeded.
pub fn explain(rs: &Ruleset, p: &Packet, dynamic: &dyn DynamicSets) -> Explanation {
    let mut ex = Explanation {
        verdict: Verdict::Accept,
        zone: None,
        decided_by: String::new(),
        trace: Vec::new(),
    };
    for base in ["vw_pre", "vw_input"] {
        let Some(chain) = rs.chain(base) else {
            continue;
        };
        let policy = chain.hook.as_ref().map_or("accept", |h| &*h.policy);
        match eval_chain(rs, base, p, dynamic, &mut ex, 0) {
            Flow::Verdict(Verdict::Accept) => {}
            Flow::Verdict(v) => {
                ex.verdict = v;
                return ex;
            }
            Flow::Continue => {
                if policy == "drop" {
                    ex.verdict = Verdict::Drop;
                    ex.decided_by = format!("policy drop of chain {base}");
                    return ex;
                }
            }
        }
    }
    ex.verdict = Verdict::Accept;
    ex
}

fn eval_chain(
    rs: &Ruleset,
    name: &str,
    p: &Packet,
    d: &dyn DynamicSets,
    ex: &mut Explanation,
    depth: u8,
) -> Flow {
    let Some(chain) = rs.chain(name) else {
        return Flow::Continue;
    };
    if depth > 16 {
        return Flow::Continue;
    }
    if name.starts_with("vw_zone_") {
        ex.zone = Some(name.trim_start_matches("vw_zone_").to_string());
    }
    for r in &chain.rules {
        if !r.matches.iter().all(|m| matches(rs, m, p, d)) {
            continue;
        }
        let step = Step {
            chain: name.to_string(),
            rule: crate::render::rule_text(r),
            comment: r.comment.clone(),
        };
        let target = match &r.action {
            Action::Nflog { .. } | Action::Sample { .. } => {
                ex.trace.push(step);
                continue;
            }
            // Meters: assumed under their rate.
            Action::MeterDrop { .. } | Action::MeterBan { .. } | Action::LimitOverDrop(_) => {
                continue;
            }
            Action::SaddrVmap(f, map) => {
                if Family::of(&p.src) != *f {
                    continue;
                }
                match lookup_vmap(rs, map, &p.src) {
                    Some(c) => c,
                    None => continue,
                }
            }
            Action::IifVmap(entries) => match entries.iter().find(|(i, _)| *i == p.iif) {
                Some((_, c)) => c.clone(),
                None => continue,
            },
            Action::Goto(c) | Action::Jump(c) => c.clone(),
            Action::Accept | Action::LimitAccept(_) => return decide(ex, step, Verdict::Accept),
            Action::Drop => return decide(ex, step, Verdict::Drop),
            Action::Reject => return decide(ex, step, Verdict::Reject),
            Action::Return => {
                ex.trace.push(step);
                return Flow::Continue;
            }
        };
        ex.trace.push(step);
        match eval_chain(rs, &target, p, d, ex, depth + 1) {
            Flow::Verdict(v) => return Flow::Verdict(v),
            Flow::Continue => {
                if matches!(r.action, Action::Jump(_)) {
                    continue;
                }
                // goto / vmap goto: falling off the end returns to the base chain's caller.
                return Flow::Continue;
            }
        }
    }
    Flow::Continue
}

fn decide(ex: &mut Explanation, step: Step, v: Verdict) -> Flow {
    ex.decided_by = step.comment.clone();
    ex.trace.push(step);
    Flow::Verdict(v)
}

fn lookup_vmap(rs: &Ruleset, map: &str, addr: &IpAddr) -> Option<String> {
    let set = rs.set(map)?;
    let a = addr_int(addr);
    set.elements
        .iter()
        .find(|e| addr_int(&e.lo) <= a && a <= addr_int(&e.hi))
        .and_then(|e| e.goto.clone())
}

fn in_set(rs: &Ruleset, set: &str, addr: &IpAddr, d: &dyn DynamicSets) -> bool {
    match rs.set(set) {
        // Sets the daemon keeps current after the apply are asked live.
        Some(s) if s.plane == Plane::Policy && !s.live => {
            let a = addr_int(addr);
            s.elements
                .iter()
                .any(|e| addr_int(&e.lo) <= a && a <= addr_int(&e.hi))
        }
        Some(_) => d.contains(set, addr),
        None => false,
    }
}

fn matches(rs: &Ruleset, m: &Match, p: &Packet, d: &dyn DynamicSets) -> bool {
    match m {
        Match::Loopback => p.iif == "lo",
        Match::ToLocal => true,
        Match::Ct(CtMatch::Invalid) => false,
        Match::Ct(CtMatch::EstablishedRelated) => p.established,
        Match::SaddrIn {
            family,
            set,
            negate,
        } => Family::of(&p.src) == *family && (in_set(rs, set, &p.src, d) != *negate),
        Match::SaddrPrefixIn {
            family,
            prefix,
            set,
        } => {
            Family::of(&p.src) == *family
                && ipnet::IpNet::new(p.src, *prefix).is_ok_and(|n| in_set(rs, set, &n.network(), d))
        }
        Match::SaddrNets { family, nets } => {
            Family::of(&p.src) == *family && nets.iter().any(|n| n.contains(&p.src))
        }
        Match::Dport(proto, ports) => {
            *proto == p.proto && ports.iter().any(|s| s.contains(p.proto, p.dport))
        }
        Match::Sport(..) => false,
        // Explained packets are requests, not responses.
        Match::SipResponse(is_response) => !is_response && p.proto == Proto::Udp,
        Match::SipResponseOrBye => false,
        Match::Icmp(_) | Match::Icmpv6(_) => false,
    }
}
