//! `Policy` → `Ruleset`: the table layout of DESIGN.md section 2.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use voipwall_policy::{GeoSel, ListEntry, NetSpec, Policy, PortSpec, Proto, Zone};

use crate::flatten::{flatten, to_addr};
use crate::ir::*;
use crate::sets::{Fixed, Role};

/// What the driver resolved or observed, passed in so compilation stays pure.
#[derive(Debug, Clone, Default)]
pub struct CompileInput {
    /// Hostname → addresses (A and AAAA).
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// Country or AS → its networks, read from the `[geo]` databases.
    pub geo: BTreeMap<GeoSel, Vec<IpNet>>,
    /// Unix seconds now, for allow/block expiry.
    pub now: i64,
}

/// Bytes of each SIP packet copied to NFLOG: a whole UDP datagram. PBXs
/// read heads far longer than 2 KB (kamailio up to 64 KB), so a shorter
/// copy let an attacker push the fields detection needs past the cut with
/// one padded header. Ordinary SIP packets are a few hundred bytes; only
/// their real length is copied.
pub const NFLOG_SNAPLEN: u32 = 65_535;
/// Per-source meter entries kept by the kernel (bounds memory under spoofed floods).
pub const METER_SIZE: u32 = 65_536;
/// Maximum elements of each ban and known set. The kernel's default for
/// dynamic sets is 65,535, far too small for a ban list; the hash grows on
/// demand, so a large bound costs nothing until it is used.
pub const BAN_SET_SIZE: u32 = 4_194_304;

/// Names of the named counters, exported as metrics.
pub mod counters {
    /// Packets dropped by the block list.
    pub const BLOCKED: &str = "vw_blocked";
    /// Packets dropped by a ban.
    pub const BANNED: &str = "vw_banned";
    /// Packets dropped by the level-1 flood guard.
    pub const FLOOD_DROPPED: &str = "vw_flood_dropped";
    /// Packets that triggered a level-2 flood ban.
    pub const FLOOD_BANNED: &str = "vw_flood_banned";
    /// Inbound SIP requests copied to NFLOG.
    pub const NFLOG_IN: &str = "vw_nflog_in";
    /// Outbound SIP responses copied to NFLOG.
    pub const NFLOG_OUT: &str = "vw_nflog_out";
    /// Inbound SIP over TCP segments copied to NFLOG.
    pub const NFLOG_IN_TCP: &str = "vw_nflog_in_tcp";
    /// Outbound SIP over TCP segments copied to NFLOG.
    pub const NFLOG_OUT_TCP: &str = "vw_nflog_out_tcp";
    /// Responsive mode: unknown sources banned by the tight per-source rate.
    pub const UNKNOWN_BANNED: &str = "vw_unknown_banned";
    /// SIP from unregistered sources dropped by the aggregate guard.
    pub const AGGREGATE_DROPPED: &str = "vw_aggregate_dropped";
}

/// Chain name of a zone.
pub fn zone_chain(z: Zone) -> String {
    format!("vw_zone_{z}")
}

fn zone_drop_counter(z: Zone) -> String {
    format!("vw_drop_{z}")
}

fn dynamic_set(name: &str, family: Family, comment: &str) -> Set {
    Set {
        name: name.into(),
        family,
        interval: false,
        timeout: true,
        dynamic: true,
        default_timeout: None,
        size: Some(BAN_SET_SIZE),
        verdict_map: false,
        plane: Plane::Dynamic,
        recreate: false,
        live: false,
        elements: Vec::new(),
        comment: comment.into(),
    }
}

fn static_set(name: &str, family: Family, comment: &str, elements: Vec<Element>) -> Set {
    Set {
        name: name.into(),
        family,
        interval: true,
        timeout: false,
        dynamic: false,
        default_timeout: None,
        size: None,
        verdict_map: false,
        plane: Plane::Policy,
        recreate: false,
        elements,
        comment: comment.into(),
        live: false,
    }
}

/// ICMP type names for a match.
fn icmp(types: &[&'static str]) -> Vec<std::borrow::Cow<'static, str>> {
    types
        .iter()
        .map(|t| std::borrow::Cow::Borrowed(*t))
        .collect()
}

/// The networks of one family, overlaps merged.
fn of_family(nets: &[IpNet], family: Family) -> Vec<IpNet> {
    IpNet::aggregate(
        &nets
            .iter()
            .copied()
            .filter(|n| (family == Family::V4) == matches!(n, IpNet::V4(_)))
            .collect(),
    )
}

/// Bytes of a dropped packet copied to the drop log: the IP header (with
/// IPv6 extension headers) and the ports.
pub(crate) const DROP_SNAPLEN: u32 = 128;

/// The NFLOG prefix of the drop log's samples: `vw:<kind>:<name>`, cut to
/// the kernel's 127 bytes (a blocked hostname may have 253: the whole
/// ruleset would be refused).
fn drop_prefix(kind: &str, name: &str) -> String {
    let mut p = format!("vw:{kind}:{name}");
    if p.len() > DROP_PREFIX_MAX {
        let mut end = DROP_PREFIX_MAX;
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        p.truncate(end);
    }
    p
}

/// The longest NFLOG prefix the kernel takes (128 with its NUL).
const DROP_PREFIX_MAX: usize = 127;

/// A sampling rule before a drop rule with the same matches, when the drop
/// log is on.
fn sample(policy: &Policy, matches: Vec<Match>, kind: &str, name: &str) -> Option<Rule> {
    let group = policy.drops.group()?;
    Some(rule(
        matches,
        Action::Sample {
            group,
            rate: policy.drops.rate,
            prefix: drop_prefix(kind, name),
        },
        format!("drop log: sample {kind} {name}"),
    ))
}

fn rule(matches: Vec<Match>, action: Action, comment: impl Into<String>) -> Rule {
    Rule {
        matches,
        counter: None,
        action,
        comment: comment.into(),
    }
}

fn counted(mut r: Rule, counter: &str) -> Rule {
    r.counter = Some(counter.into());
    r
}

/// One set pair per hostname, shared by every use of the name (peers,
/// networks, allow and block lists), filled with the compile-time answer;
/// the daemon's resolver keeps them current element by element.
struct Names<'a> {
    input: &'a CompileInput,
    list: Vec<NameSet>,
}

impl Names<'_> {
    fn get(
        &mut self,
        h: &str,
        srv: bool,
        protect: bool,
        sets: &mut Vec<Set>,
        notes: &mut Vec<String>,
        what: &str,
    ) -> NameSet {
        if let Some(n) = self.list.iter_mut().find(|n| n.host == h) {
            n.srv |= srv;
            n.protect |= protect;
            return n.clone();
        }
        let i = self.list.len();
        let ns = NameSet {
            host: h.to_string(),
            srv,
            protect,
            v4: format!("vw_name{i}_v4"),
            v6: format!("vw_name{i}_v6"),
        };
        let addrs = self.input.resolved.get(h).cloned().unwrap_or_default();
        if addrs.is_empty() {
            notes.push(format!(
                "{what}: `{h}` did not resolve; its sets stay empty until it does"
            ));
        }
        for (family, set) in [(Family::V4, &ns.v4), (Family::V6, &ns.v6)] {
            let elements = addrs
                .iter()
                .filter(|a| Family::of(a) == family)
                .map(|a| Element {
                    lo: *a,
                    hi: *a,
                    goto: None,
                })
                .collect();
            sets.push(host_set(
                set,
                family,
                &format!("addresses of {h}"),
                elements,
            ));
        }
        self.list.push(ns.clone());
        ns
    }
}

/// The sets of the countries and ASes the policy names, one pair each.
struct Geos<'a> {
    input: &'a CompileInput,
    list: Vec<GeoSet>,
}

impl Geos<'_> {
    fn get(
        &mut self,
        g: &GeoSel,
        sets: &mut Vec<Set>,
        notes: &mut Vec<String>,
        what: &str,
    ) -> GeoSet {
        let selector = g.to_string();
        if let Some(gs) = self.list.iter().find(|x| x.selector == selector) {
            return gs.clone();
        }
        let i = self.list.len();
        let gs = GeoSet {
            selector: selector.clone(),
            v4: format!("vw_geo{i}_v4"),
            v6: format!("vw_geo{i}_v6"),
        };
        let nets = self.input.geo.get(g).cloned().unwrap_or_default();
        if nets.is_empty() {
            notes.push(format!(
                "{what}: the [geo] database lists no network for `{selector}`; its sets stay empty until it does"
            ));
        }
        let agg = IpNet::aggregate(&nets);
        for (family, set) in [(Family::V4, &gs.v4), (Family::V6, &gs.v6)] {
            let elements = agg
                .iter()
                .filter(|n| Family::of(&n.addr()) == family)
                .map(|n| Element {
                    lo: n.network(),
                    hi: n.broadcast(),
                    goto: None,
                })
                .collect();
            let mut s = static_set(set, family, &format!("networks of {selector}"), elements);
            s.live = true;
            sets.push(s);
        }
        self.list.push(gs.clone());
        gs
    }
}

/// `ip saddr @geoN_v4` and `ip6 saddr @geoN_v6`.
fn geo_matches(gs: &GeoSet) -> [Match; 2] {
    [
        Match::SaddrIn {
            family: Family::V4,
            set: gs.v4.clone(),
            negate: false,
        },
        Match::SaddrIn {
            family: Family::V6,
            set: gs.v6.clone(),
            negate: false,
        },
    ]
}

/// `ip saddr @name_v4` and `ip6 saddr @name_v6`.
fn name_matches(ns: &NameSet) -> [Match; 2] {
    [
        Match::SaddrIn {
            family: Family::V4,
            set: ns.v4.clone(),
            negate: false,
        },
        Match::SaddrIn {
            family: Family::V6,
            set: ns.v6.clone(),
            negate: false,
        },
    ]
}

/// List entries per family, split into single addresses (hash set) and
/// aggregated prefixes (interval set): `[hosts_v4, hosts_v6, nets_v4, nets_v6]`.
/// 100,000 single addresses load in about a quarter of the time as hash
/// elements than as intervals (BENCHMARKS.md).
fn list_elements<'p>(
    entries: &'p [ListEntry],
    input: &CompileInput,
    notes: &mut Vec<String>,
    kind: &str,
    hosts: &mut Vec<&'p ListEntry>,
) -> [Vec<Element>; 4] {
    let mut nets = Vec::new();
    for e in entries {
        if e.expires.is_some_and(|t| t <= input.now) {
            notes.push(format!(
                "{kind} entry `{}` ({}) expired; skipped",
                e.net, e.origin
            ));
            continue;
        }
        match &e.net {
            NetSpec::Net(n) => nets.push(*n),
            // Names, countries and ASes get their own sets (kept current
            // by the daemon).
            NetSpec::Host(_) | NetSpec::Geo(_) => hosts.push(e),
        }
    }
    let agg = IpNet::aggregate(&nets);
    let mut out: [Vec<Element>; 4] = Default::default();
    for n in agg {
        let v6 = usize::from(!matches!(n, IpNet::V4(_)));
        let host = n.prefix_len() == n.max_prefix_len();
        out[v6 + if host { 0 } else { 2 }].push(Element {
            lo: n.network(),
            hi: n.broadcast(),
            goto: None,
        });
    }
    out
}

/// Declared size of a re-created host set: room to spare, a power of two.
fn host_set_size(n: usize) -> u32 {
    u32::try_from((n.max(512) * 2).next_power_of_two()).unwrap_or(u32::MAX)
}

fn host_set(name: &str, family: Family, comment: &str, elements: Vec<Element>) -> Set {
    let mut s = static_set(name, family, comment, elements);
    s.interval = false;
    s.size = Some(host_set_size(s.elements.len()));
    s.recreate = true;
    s
}

/// Compiles a policy into the ruleset IR. Pure and deterministic.
pub fn compile(policy: &Policy, input: &CompileInput) -> Ruleset {
    let mut b = Build {
        policy,
        names: Names {
            input,
            list: Vec::new(),
        },
        geos: Geos {
            input,
            list: Vec::new(),
        },
        sets: runtime_sets(policy),
        notes: Vec::new(),
    };
    let lists = b.policy_sets(input);
    let ports = SipPorts::of(policy);
    // The order of the parts is the order of the names' sets: prerouting
    // (allow, peer and block names) before input (network names).
    let (pre, peer_chain) = b.prerouting(&ports, &lists);
    if policy.bans_only() {
        // Another firewall decides what passes: prerouting's bans, blocks
        // and flood guards drop; input only copies SIP for detection and
        // accepts the rest, which the other table's chains then judge.
        let mut input = nflog_copy(policy, Copy::In, Proto::Udp, &ports.read_udp)
            .into_iter()
            .chain(nflog_copy(policy, Copy::In, Proto::Tcp, &ports.read_tcp))
            .collect::<Vec<Rule>>();
        input.push(rule(
            vec![],
            Action::Accept,
            "bans-only: what is not banned, blocked or flooding is the other firewall's to judge",
        ));
        b.notes_on_unread(&ports);
        let mut chains = base_chains(policy, &ports, pre, input, "accept");
        // The chains full mode has, empty: applied over a full-mode table,
        // they are flushed, so no old rule keeps a name set busy (a set
        // the script deletes and re-creates).
        for name in ["vw_established".to_string(), "vw_peers".to_string()]
            .into_iter()
            .chain(Zone::ALL.into_iter().map(zone_chain))
        {
            chains.push(Chain {
                name,
                hook: None,
                rules: Vec::new(),
            });
        }
        return Ruleset {
            sets: b.sets,
            counters: used_counters(policy, &ports),
            chains,
            notes: b.notes,
            names: b.names.list,
            geo: b.geos.list,
        };
    }
    let input_rules = b.input(&ports, &lists, !peer_chain.is_empty());
    let mut chains = base_chains(policy, &ports, pre, input_rules, "drop");
    chains.push(Chain {
        name: "vw_established".into(),
        hook: None,
        rules: established_rules(&ports),
    });
    // Always there, empty without peers: a policy that loses its last
    // peer must flush the old rules, which reference the peers' name sets.
    chains.push(Chain {
        name: "vw_peers".into(),
        hook: None,
        rules: peer_chain,
    });
    b.notes_on_unread(&ports);
    let mut used_counters = used_counters(policy, &ports);
    chains.extend(b.zone_chains(&mut used_counters));
    Ruleset {
        sets: b.sets,
        counters: used_counters,
        chains,
        notes: b.notes,
        names: b.names.list,
        geo: b.geos.list,
    }
}

/// The three base chains: prerouting, input (its policy: `drop` in full
/// mode, `accept` in bans-only mode) and output.
fn base_chains(
    policy: &Policy,
    ports: &SipPorts,
    pre: Vec<Rule>,
    input: Vec<Rule>,
    input_policy: &'static str,
) -> Vec<Chain> {
    vec![
        base_chain("vw_pre", "prerouting", "raw", "accept", pre),
        base_chain("vw_input", "input", "filter", input_policy, input),
        base_chain(
            "vw_output",
            "output",
            "filter",
            "accept",
            output_rules(policy, ports),
        ),
    ]
}

/// What compiling one policy gathers as the parts are built.
struct Build<'a> {
    policy: &'a Policy,
    names: Names<'a>,
    geos: Geos<'a>,
    sets: Vec<Set>,
    notes: Vec<String>,
}

/// The policy's list and network entries given by hostname, for the rules
/// that match their name sets.
struct Lists<'a> {
    allow_hosts: Vec<&'a ListEntry>,
    block_hosts: Vec<&'a ListEntry>,
    zone_hosts: Vec<(&'a str, Zone, String)>,
    zone_geos: Vec<(&'a GeoSel, Zone, String)>,
}

/// The SIP ports the rules match: every SIP port (flood guards, the
/// established shortcut) and those packet copies can read (not TLS, not
/// secure WebSocket), per protocol.
struct SipPorts {
    udp: Vec<PortSpec>,
    tcp: Vec<PortSpec>,
    read_udp: Vec<PortSpec>,
    read_tcp: Vec<PortSpec>,
    /// Some SIP port is readable at all.
    readable: bool,
}

impl SipPorts {
    fn of(policy: &Policy) -> Self {
        let by = |v: &[PortSpec], proto: Proto| -> Vec<PortSpec> {
            v.iter().copied().filter(|p| p.proto == proto).collect()
        };
        let all = policy.sip_ports();
        let readable = policy.sip_readable_ports();
        Self {
            udp: by(&all, Proto::Udp),
            tcp: by(&all, Proto::Tcp),
            read_udp: by(&readable, Proto::Udp),
            read_tcp: by(&readable, Proto::Tcp),
            readable: !readable.is_empty(),
        }
    }
}

/// `Match::SaddrIn` of a named set.
fn in_set(family: Family, set: &str) -> Match {
    Match::SaddrIn {
        family,
        set: set.into(),
        negate: false,
    }
}

fn base_chain(
    name: &str,
    hook: &'static str,
    priority: &'static str,
    policy: &'static str,
    rules: Vec<Rule>,
) -> Chain {
    Chain {
        name: name.into(),
        hook: Some(Hook {
            hook: hook.into(),
            priority: priority.into(),
            policy: policy.into(),
        }),
        rules,
    }
}

/// Which way a packet copy goes to NFLOG.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// Inbound SIP: requests over UDP, every segment over TCP.
    In,
    /// Outbound SIP: responses over UDP, every segment over TCP.
    Out,
}

/// The one NFLOG rule builder: a copy of SIP on `ports` of `proto` in one
/// direction to the policy's NFLOG group, counted; `None` when there is no
/// group or no such port.
fn nflog_copy(policy: &Policy, dir: Copy, proto: Proto, ports: &[PortSpec]) -> Option<Rule> {
    let group = policy.sip.nflog_group?;
    if ports.is_empty() {
        return None;
    }
    let ports = ports.to_vec();
    let (matches, what, counter) = match (dir, proto) {
        (Copy::In, Proto::Udp) => (
            vec![Match::Dport(proto, ports), Match::SipResponse(false)],
            "inbound SIP requests",
            counters::NFLOG_IN,
        ),
        // Every segment of the stream (SYNs tell where it starts; the
        // daemon reassembles and frames the messages).
        (Copy::In, Proto::Tcp) => (
            vec![Match::Dport(proto, ports)],
            "inbound SIP over TCP",
            counters::NFLOG_IN_TCP,
        ),
        (Copy::Out, Proto::Udp) => (
            vec![Match::Sport(proto, ports), Match::SipResponseOrBye],
            "outbound SIP responses and BYEs",
            counters::NFLOG_OUT,
        ),
        (Copy::Out, Proto::Tcp) => (
            vec![Match::Sport(proto, ports)],
            "outbound SIP over TCP",
            counters::NFLOG_OUT_TCP,
        ),
    };
    Some(counted(
        rule(
            matches,
            Action::Nflog {
                group,
                snaplen: NFLOG_SNAPLEN,
                outbound: dir == Copy::Out,
            },
            format!("copy {what} to NFLOG group {group}"),
        ),
        counter,
    ))
}

/// The runtime sets (bans, runtime allows, endpoints, meters): created
/// once, never flushed, so bans survive every apply.
fn runtime_sets(policy: &Policy) -> Vec<Set> {
    let mut sets = Vec::new();
    for f in [Family::V4, Family::V6] {
        sets.push(dynamic_set(
            Role::Ban.set(f),
            f,
            "bans of single addresses (timeouts per element)",
        ));
        sets.push(dynamic_set(
            Role::BanPrefix.set(f),
            f,
            &format!(
                "prefix bans keyed by the /{} network; known endpoints skip them",
                if f == Family::V4 {
                    policy.bans.ipv4_prefix
                } else {
                    policy.bans.ipv6_prefix
                }
            ),
        ));
        for (role, comment) in [
            (Role::BanNet, "manual bans and blocks of networks"),
            (Role::AllowRt, "runtime allow entries (voipwall allow)"),
        ] {
            let mut interval = dynamic_set(role.set(f), f, comment);
            interval.interval = true;
            interval.dynamic = false;
            interval.size = None;
            sets.push(interval);
        }
        sets.push(dynamic_set(
            Role::Known.set(f),
            f,
            "registered endpoints (refreshed on each success)",
        ));
        sets.push(dynamic_set(
            Role::Remembered.set(f),
            f,
            "endpoints that registered lately ([detect] remember_endpoints): prefix bans spare them",
        ));
        let meter = |fixed: Fixed, comment: &str| {
            let mut m = dynamic_set(fixed.set(f), f, comment);
            m.default_timeout = Some(60);
            m.size = Some(METER_SIZE);
            m
        };
        if policy.sip.responsive {
            sets.push(meter(
                Fixed::Unknown,
                "responsive mode: rate meter of unknown SIP sources",
            ));
        }
        sets.push(meter(Fixed::Flood1, "SIP flood meter, level 1"));
        sets.push(meter(Fixed::Flood2, "SIP flood meter, level 2"));
        for (stem, what) in origins(policy) {
            let mut hosts = dynamic_set(
                &crate::sets::origin_set(&stem, f),
                f,
                &format!("{what}: addresses"),
            );
            hosts.dynamic = false;
            sets.push(hosts);
            let mut nets = dynamic_set(
                &crate::sets::origin_net_set(&stem, f),
                f,
                &format!("{what}: networks"),
            );
            nets.interval = true;
            nets.dynamic = false;
            nets.size = None;
            sets.push(nets);
        }
    }
    sets
}

/// The origins from outside the host the policy has, each with its own
/// sets and counter: `(stem, what it is)`.
fn origins(policy: &Policy) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = policy
        .feeds
        .iter()
        .map(|f| {
            (
                crate::sets::feed_stem(&f.name),
                format!("feed {} / {}", f.name, f.origin),
            )
        })
        .collect();
    if let Some(f) = &policy.fleet {
        v.push((
            crate::sets::FLEET_STEM.to_string(),
            format!("the fleet's bans (other nodes' streams) / {}", f.origin),
        ));
    }
    if let Some(cs) = policy
        .crowdsec
        .as_ref()
        .filter(|c| c.bouncer_key_file.is_some())
    {
        v.extend(voipwall_policy::CROWDSEC_ORIGINS.iter().map(|o| {
            (
                crate::sets::crowdsec_stem(o),
                format!("CrowdSec decisions of origin {o} / {}", cs.origin),
            )
        }));
    }
    v
}

/// The counters the ruleset names, but the zones' drop counters.
fn used_counters(policy: &Policy, ports: &SipPorts) -> Vec<String> {
    let mut used = vec![
        counters::BLOCKED.to_string(),
        counters::BANNED.to_string(),
        counters::FLOOD_DROPPED.to_string(),
        counters::FLOOD_BANNED.to_string(),
        counters::NFLOG_IN.to_string(),
        counters::NFLOG_OUT.to_string(),
    ];
    if policy.sip.nflog_group.is_some() && !ports.read_tcp.is_empty() {
        used.push(counters::NFLOG_IN_TCP.to_string());
        used.push(counters::NFLOG_OUT_TCP.to_string());
    }
    if policy.sip.responsive {
        used.push(counters::UNKNOWN_BANNED.to_string());
    }
    if policy.sip.aggregate_pps > 0 {
        used.push(counters::AGGREGATE_DROPPED.to_string());
    }
    used.extend(
        origins(policy)
            .into_iter()
            .map(|(stem, _)| crate::sets::origin_counter(&stem)),
    );
    used
}

/// `vw_output`: copies of outbound SIP for detection.
fn output_rules(policy: &Policy, ports: &SipPorts) -> Vec<Rule> {
    [
        nflog_copy(policy, Copy::Out, Proto::Udp, &ports.read_udp),
        nflog_copy(policy, Copy::Out, Proto::Tcp, &ports.read_tcp),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `vw_established`: established flows are accepted, but SIP goes back to
/// be classified by zone (UDP conntrack makes an attacker "established"
/// after the PBX's first reply).
fn established_rules(ports: &SipPorts) -> Vec<Rule> {
    let mut established = Vec::new();
    for (proto, p) in [(Proto::Udp, &ports.udp), (Proto::Tcp, &ports.tcp)] {
        if !p.is_empty() {
            established.push(rule(
                vec![Match::Dport(proto, p.clone())],
                Action::Return,
                "SIP is classified by zone even when established",
            ));
        }
    }
    established.push(rule(vec![], Action::Accept, "established, related"));
    established
}

impl<'a> Build<'a> {
    /// The policy plane's sets: allow and block lists (hosts and
    /// networks) and the zone maps; entries given by name come back for
    /// their rules.
    fn policy_sets(&mut self, input: &CompileInput) -> Lists<'a> {
        let policy = self.policy;
        let mut lists = Lists {
            allow_hosts: Vec::new(),
            block_hosts: Vec::new(),
            zone_hosts: Vec::new(),
            zone_geos: Vec::new(),
        };
        let [allowh4, allowh6, allow4, allow6] = list_elements(
            &policy.allow,
            input,
            &mut self.notes,
            "allow",
            &mut lists.allow_hosts,
        );
        let [blockh4, blockh6, block4, block6] = list_elements(
            &policy.block,
            input,
            &mut self.notes,
            "block",
            &mut lists.block_hosts,
        );
        for (host, net, what, h4, h6, n4, n6) in [
            (
                Fixed::AllowHost,
                Fixed::Allow,
                "allow",
                allowh4,
                allowh6,
                allow4,
                allow6,
            ),
            (
                Fixed::BlockHost,
                Fixed::Block,
                "block",
                blockh4,
                blockh6,
                block4,
                block6,
            ),
        ] {
            let hosts = format!("{what} list addresses (policy)");
            let nets = format!("{what} list networks (policy)");
            self.sets
                .push(host_set(host.set(Family::V4), Family::V4, &hosts, h4));
            self.sets
                .push(host_set(host.set(Family::V6), Family::V6, &hosts, h6));
            self.sets
                .push(static_set(net.set(Family::V4), Family::V4, &nets, n4));
            self.sets
                .push(static_set(net.set(Family::V6), Family::V6, &nets, n6));
        }
        let mut zone_nets: [Vec<(IpNet, Zone)>; 2] = [Vec::new(), Vec::new()];
        for n in &policy.networks {
            match &n.net {
                NetSpec::Net(net) => {
                    let idx = usize::from(!matches!(net, IpNet::V4(_)));
                    zone_nets[idx].push((*net, n.zone));
                }
                NetSpec::Host(h) => lists.zone_hosts.push((h, n.zone, n.origin.to_string())),
                NetSpec::Geo(g) => lists.zone_geos.push((g, n.zone, n.origin.to_string())),
            }
        }
        for (idx, f) in [Family::V4, Family::V6].into_iter().enumerate() {
            let v4 = f == Family::V4;
            let elements = flatten(&zone_nets[idx])
                .into_iter()
                .map(|i| Element {
                    lo: to_addr(i.lo, v4),
                    hi: to_addr(i.hi, v4),
                    goto: Some(zone_chain(i.label)),
                })
                .collect();
            let mut m = static_set(
                Fixed::ZoneMap.set(f),
                f,
                "zone by source network, most specific prefix wins",
                elements,
            );
            m.verdict_map = true;
            self.sets.push(m);
        }
        lists
    }

    /// `vw_pre` (prerouting, priority raw: before conntrack): loopback,
    /// management, HEP senders, allow lists, peers, block lists, bans,
    /// flood guards, the aggregate guard. Returns it and `vw_peers`.
    fn prerouting(&mut self, ports: &SipPorts, lists: &Lists<'_>) -> (Vec<Rule>, Vec<Rule>) {
        let policy = self.policy;
        let mut pre = vec![rule(vec![Match::Loopback], Action::Accept, "loopback")];
        // Management is never banned, flood-limited or rate-limited: it skips
        // every ban, block and meter here (zones still decide what it reaches).
        for family in [Family::V4, Family::V6] {
            let nets = of_family(&policy.host.management, family);
            if !nets.is_empty() {
                pre.push(rule(
                    vec![Match::SaddrNets { family, nets }],
                    Action::Accept,
                    "management networks skip bans, blocks and flood guards ([host] management)",
                ));
            }
        }
        // HEP senders reach the HEP listener past every ban, block and flood
        // guard: a ban of a sender (by an operator's --force, or a kernel flood
        // guard) must not blind detection through it.
        let mut hep_ports: Vec<u16> = policy.hep.listen.iter().map(|a| a.port()).collect();
        hep_ports.sort_unstable();
        hep_ports.dedup();
        for family in [Family::V4, Family::V6] {
            let nets = of_family(&policy.hep.senders, family);
            if nets.is_empty() || hep_ports.is_empty() {
                continue;
            }
            for proto in [Proto::Udp, Proto::Tcp] {
                pre.push(rule(
                    vec![
                        Match::SaddrNets {
                            family,
                            nets: nets.clone(),
                        },
                        Match::Dport(
                            proto,
                            hep_ports
                                .iter()
                                .map(|&p| PortSpec { proto, lo: p, hi: p })
                                .collect(),
                        ),
                    ],
                    Action::Accept,
                    "HEP senders reach the HEP listener past bans, blocks and flood guards ([hep] senders)",
                ));
            }
        }
        for f in [Family::V4, Family::V6] {
            for (set, comment) in [
                (Fixed::Allow.set(f), "allow list skips ban lookups"),
                (Fixed::AllowHost.set(f), "allow list skips ban lookups"),
                (Role::AllowRt.set(f), "runtime allow skips ban lookups"),
            ] {
                pre.push(rule(vec![in_set(f, set)], Action::Accept, comment));
            }
        }
        for e in &lists.allow_hosts {
            let NetSpec::Host(h) = &e.net else { continue };
            let ns = self.names.get(
                h,
                false,
                true,
                &mut self.sets,
                &mut self.notes,
                &format!("allow {}", e.origin),
            );
            for m in name_matches(&ns) {
                pre.push(rule(
                    vec![m],
                    Action::Accept,
                    format!("allow list {h} skips ban lookups / {}", e.origin),
                ));
            }
        }
        for e in &lists.allow_hosts {
            let NetSpec::Geo(g) = &e.net else { continue };
            let gs = self.geos.get(
                g,
                &mut self.sets,
                &mut self.notes,
                &format!("allow {}", e.origin),
            );
            for m in geo_matches(&gs) {
                pre.push(rule(
                    vec![m],
                    Action::Accept,
                    format!("allow list {g} skips ban lookups / {}", e.origin),
                ));
            }
        }
        let (peer_chain, peer_skip) =
            peers(policy, &mut self.names, &mut self.notes, &mut self.sets);
        pre.extend(peer_skip);
        for f in [Family::V4, Family::V6] {
            for set in [Fixed::BlockHost.set(f), Fixed::Block.set(f)] {
                pre.extend(sample(policy, vec![in_set(f, set)], "block", set));
                pre.push(counted(
                    rule(vec![in_set(f, set)], Action::Drop, "block list"),
                    counters::BLOCKED,
                ));
            }
        }
        for e in &lists.block_hosts {
            let NetSpec::Host(h) = &e.net else { continue };
            let ns = self.names.get(
                h,
                false,
                false,
                &mut self.sets,
                &mut self.notes,
                &format!("block {}", e.origin),
            );
            for m in name_matches(&ns) {
                pre.extend(sample(policy, vec![m.clone()], "block", h));
                pre.push(counted(
                    rule(
                        vec![m],
                        Action::Drop,
                        format!("block list {h} / {}", e.origin),
                    ),
                    counters::BLOCKED,
                ));
            }
        }
        for e in &lists.block_hosts {
            let NetSpec::Geo(g) = &e.net else { continue };
            let gs = self.geos.get(
                g,
                &mut self.sets,
                &mut self.notes,
                &format!("block {}", e.origin),
            );
            let what = g.to_string();
            for m in geo_matches(&gs) {
                pre.extend(sample(policy, vec![m.clone()], "block", &what));
                pre.push(counted(
                    rule(
                        vec![m],
                        Action::Drop,
                        format!("block list {g} / {}", e.origin),
                    ),
                    counters::BLOCKED,
                ));
            }
        }
        for f in [Family::V4, Family::V6] {
            for (set, comment) in [
                (Role::Ban.set(f), "banned address"),
                (Role::BanNet.set(f), "banned network"),
            ] {
                pre.extend(sample(policy, vec![in_set(f, set)], "ban", set));
                pre.push(counted(
                    rule(vec![in_set(f, set)], Action::Drop, comment),
                    counters::BANNED,
                ));
            }
            let prefix = if f == Family::V4 {
                policy.bans.ipv4_prefix
            } else {
                policy.bans.ipv6_prefix
            };
            let spared = vec![
                Match::SaddrIn {
                    family: f,
                    set: Role::Known.set(f).into(),
                    negate: true,
                },
                Match::SaddrIn {
                    family: f,
                    set: Role::Remembered.set(f).into(),
                    negate: true,
                },
                Match::SaddrPrefixIn {
                    family: f,
                    prefix,
                    set: Role::BanPrefix.set(f).into(),
                },
            ];
            pre.extend(sample(
                policy,
                spared.clone(),
                "ban",
                Role::BanPrefix.set(f),
            ));
            pre.push(counted(
                rule(
                    spared,
                    Action::Drop,
                    format!("banned /{prefix} prefix, known and remembered endpoints spared"),
                ),
                counters::BANNED,
            ));
        }
        // Origins from outside (feeds, CrowdSec) after the bans, so a
        // source both banned and listed counts as banned; after the allow
        // list and peers like every ban.
        for (stem, what) in origins(policy) {
            for f in [Family::V4, Family::V6] {
                for set in [
                    crate::sets::origin_set(&stem, f),
                    crate::sets::origin_net_set(&stem, f),
                ] {
                    pre.extend(sample(policy, vec![in_set(f, &set)], "origin", &stem));
                    pre.push(counted(
                        rule(
                            vec![in_set(f, &set)],
                            Action::Drop,
                            format!("listed by {what}"),
                        ),
                        &crate::sets::origin_counter(&stem),
                    ));
                }
            }
        }
        if !ports.udp.is_empty() {
            pre.extend(flood_guards(policy, &ports.udp));
        }
        (pre, peer_chain)
    }

    /// `vw_input`: the fixed prologue, NFLOG copies, the established
    /// shortcut (SIP excluded), peers, networks by name, the zone maps, the
    /// interfaces, the default zone.
    fn input(&mut self, ports: &SipPorts, lists: &Lists<'_>, peers: bool) -> Vec<Rule> {
        let zone_hosts = &lists.zone_hosts;
        let policy = self.policy;
        let mut input = prologue();
        input.extend(nflog_copy(policy, Copy::In, Proto::Udp, &ports.read_udp));
        input.extend(nflog_copy(policy, Copy::In, Proto::Tcp, &ports.read_tcp));
        input.push(rule(
            vec![Match::Ct(CtMatch::EstablishedRelated)],
            Action::Jump("vw_established".into()),
            "established flows, except SIP ports",
        ));
        if peers {
            input.push(rule(
                vec![],
                Action::Jump("vw_peers".into()),
                "trunks and peers from the PBX: their own ports only",
            ));
        }
        // Networks given by name: their own sets, before the map (a name's
        // addresses are single hosts, the most specific prefix there is).
        for (h, zone, origin) in zone_hosts {
            // The same zones protect a network given by address
            // (`protect::Protected`): the policy's own side and its peers.
            let ns = self.names.get(
                h,
                false,
                matches!(zone, Zone::Trusted | Zone::Local | Zone::Other),
                &mut self.sets,
                &mut self.notes,
                &format!("network {origin}"),
            );
            for m in name_matches(&ns) {
                input.push(rule(
                    vec![m],
                    Action::Goto(zone_chain(*zone)),
                    format!("network {h} = {zone} / {origin}"),
                ));
            }
        }
        for (f, what) in [(Family::V4, "IPv4"), (Family::V6, "IPv6")] {
            input.push(rule(
                vec![],
                Action::SaddrVmap(f, Fixed::ZoneMap.set(f).into()),
                format!("zone by source network ({what})"),
            ));
        }
        // Countries and ASes: after the networks given by address (more
        // specific: a network in [networks] wins over its country), before
        // the interfaces.
        for (g, zone, origin) in &lists.zone_geos {
            let gs = self.geos.get(
                g,
                &mut self.sets,
                &mut self.notes,
                &format!("network {origin}"),
            );
            for m in geo_matches(&gs) {
                input.push(rule(
                    vec![m],
                    Action::Goto(zone_chain(*zone)),
                    format!("network {g} = {zone} / {origin}"),
                ));
            }
        }
        if !policy.interfaces.is_empty() {
            input.push(rule(
                vec![],
                Action::IifVmap(
                    policy
                        .interfaces
                        .iter()
                        .map(|i| (i.name.clone(), zone_chain(i.zone)))
                        .collect(),
                ),
                "zone by interface",
            ));
        }
        input.push(rule(
            vec![],
            Action::Goto(zone_chain(policy.default_zone)),
            format!("default zone {}", policy.default_zone),
        ));
        input
    }

    /// SIP that packet copies cannot read: say so, unless HEP brings it,
    /// since detection there depends on a source the ruleset does not
    /// provide; and say when no SIP is copied at all.
    fn notes_on_unread(&mut self, ports: &SipPorts) {
        let policy = self.policy;
        let unread = if policy.hep.listen.is_empty() {
            policy.sip_unreadable_ports()
        } else {
            Vec::new()
        };
        for (port, service, transport) in unread {
            self.notes.push(format!(
                "SIP on {port} ({service}) is {}: packet copies cannot read it; detection there needs HEP or the PBX's log",
                if transport == voipwall_policy::SipTransport::Tls {
                    "TLS"
                } else {
                    "secure WebSocket"
                }
            ));
        }
        if policy.sip.nflog_group.is_none() && ports.readable {
            self.notes.push(
                "[sip] nflog_group = false: no SIP packet is copied to detection; it depends on logs or HEP"
                    .to_string(),
            );
        }
    }

    /// One chain per zone: a rule per granted service and protocol, RTP,
    /// then a counted drop (`reject` for the reject zone); `trusted`
    /// accepts. The drop counters join `used`.
    fn zone_chains(&mut self, used: &mut Vec<String>) -> Vec<Chain> {
        let policy = self.policy;
        let rtp = rtp_ranges(policy, &mut self.notes);
        let mut chains = Vec::new();
        for zone in Zone::ALL {
            let mut rules = Vec::new();
            if zone == Zone::Trusted {
                rules.push(counted(
                    rule(vec![], Action::Accept, "zone trusted accepts everything"),
                    "",
                ));
                chains.push(Chain {
                    name: zone_chain(zone),
                    hook: None,
                    rules,
                });
                continue;
            }
            if zone != Zone::Reject {
                for g in policy.grants.get(&zone).into_iter().flatten() {
                    let Some(svc) = policy.services.get(&g.service) else {
                        continue;
                    };
                    for proto in [Proto::Udp, Proto::Tcp] {
                        let ports: Vec<PortSpec> = svc
                            .ports
                            .iter()
                            .copied()
                            .filter(|p| p.proto == proto)
                            .collect();
                        if ports.is_empty() {
                            continue;
                        }
                        rules.push(counted(
                            rule(
                                vec![Match::Dport(proto, ports)],
                                Action::Accept,
                                format!("zone {zone} / service {} / {}", g.service, g.origin),
                            ),
                            "",
                        ));
                    }
                }
            }
            if policy.rtp.zones.contains(&zone) && !rtp.is_empty() {
                rules.push(counted(
                    rule(
                        vec![Match::Dport(Proto::Udp, rtp.clone())],
                        Action::Accept,
                        format!("zone {zone} / rtp / {}", policy.rtp.origin),
                    ),
                    "",
                ));
            }
            let c = zone_drop_counter(zone);
            rules.extend(sample(policy, vec![], "zone", &zone.to_string()));
            let last = if zone == Zone::Reject {
                Action::Reject
            } else {
                Action::Drop
            };
            rules.push(counted(
                rule(vec![], last, format!("zone {zone}: everything else")),
                &c,
            ));
            used.push(c);
            chains.push(Chain {
                name: zone_chain(zone),
                hook: None,
                rules,
            });
        }
        chains
    }
}

/// `vw_input`'s fixed prologue: loopback, ICMP essentials, conntrack
/// invalid.
fn prologue() -> Vec<Rule> {
    vec![
        rule(vec![Match::Loopback], Action::Accept, "loopback"),
        rule(
            vec![Match::Icmpv6(icmp(&[
                "destination-unreachable",
                "packet-too-big",
                "time-exceeded",
                "parameter-problem",
                "nd-router-solicit",
                "nd-router-advert",
                "nd-neighbor-solicit",
                "nd-neighbor-advert",
                "mld-listener-query",
                "mld2-listener-report",
            ]))],
            Action::Accept,
            "ICMPv6 essentials: neighbour discovery, PMTU, errors",
        ),
        rule(
            vec![Match::Icmpv6(icmp(&["echo-request"]))],
            Action::LimitAccept(20),
            "ICMPv6 echo, rate limited",
        ),
        rule(
            vec![Match::Icmp(icmp(&[
                "destination-unreachable",
                "time-exceeded",
                "parameter-problem",
            ]))],
            Action::Accept,
            "ICMP errors (PMTU discovery)",
        ),
        rule(
            vec![Match::Icmp(icmp(&["echo-request"]))],
            Action::LimitAccept(20),
            "ICMP echo, rate limited",
        ),
        rule(
            vec![Match::Ct(CtMatch::Invalid)],
            Action::Drop,
            "conntrack invalid",
        ),
    ]
}

/// The kernel's guards on UDP SIP in `vw_pre`: per-source flood levels 2
/// (ban) and 1 (drop the excess), responsive mode's meter of unknown
/// sources, and the aggregate guard with those it never limits.
fn flood_guards(policy: &Policy, sip_udp: &[PortSpec]) -> Vec<Rule> {
    let mut pre = Vec::new();
    let origin = if policy.sip.origin.file.is_empty() {
        "defaults".to_string()
    } else {
        policy.sip.origin.to_string()
    };
    let sip = || Match::Dport(Proto::Udp, sip_udp.to_vec());
    for f in [Family::V4, Family::V6] {
        pre.push(counted(
            rule(
                vec![Match::ToLocal, sip()],
                Action::MeterBan {
                    family: f,
                    meter: Fixed::Flood2.set(f).into(),
                    pps: policy.sip.flood_level2_pps,
                    ban_set: Role::Ban.set(f).into(),
                    timeout: policy.sip.flood_ban,
                },
                format!("SIP flood level 2: ban / {origin}"),
            ),
            counters::FLOOD_BANNED,
        ));
        pre.push(counted(
            rule(
                vec![Match::ToLocal, sip()],
                Action::MeterDrop {
                    family: f,
                    meter: Fixed::Flood1.set(f).into(),
                    pps: policy.sip.flood_level1_pps,
                },
                format!("SIP flood level 1: drop excess / {origin}"),
            ),
            counters::FLOOD_DROPPED,
        ));
        if policy.sip.responsive {
            pre.push(counted(
                rule(
                    vec![
                        Match::ToLocal,
                        sip(),
                        Match::SaddrIn {
                            family: f,
                            set: Role::Known.set(f).into(),
                            negate: true,
                        },
                    ],
                    Action::MeterBan {
                        family: f,
                        meter: Fixed::Unknown.set(f).into(),
                        pps: policy.sip.unknown_pps,
                        ban_set: Role::Ban.set(f).into(),
                        timeout: policy.sip.flood_ban,
                    },
                    format!(
                        "responsive: unknown source over {} pps banned, registered endpoints exempt / {origin}",
                        policy.sip.unknown_pps
                    ),
                ),
                counters::UNKNOWN_BANNED,
            ));
        }
    }
    if policy.sip.aggregate_pps > 0 {
        // Those the aggregate guard never limits: registered endpoints
        // (served first under a flood), and the networks the policy
        // names as its own or its peers (management and allow entries
        // were accepted above).
        for f in [Family::V4, Family::V6] {
            pre.push(rule(
                vec![Match::ToLocal, sip(), in_set(f, Role::Known.set(f))],
                Action::Accept,
                "registered endpoints skip the aggregate SIP guard",
            ));
            let own: Vec<IpNet> = policy
                .networks
                .iter()
                .filter(|n| matches!(n.zone, Zone::Trusted | Zone::Local | Zone::Other))
                .filter_map(|n| match &n.net {
                    NetSpec::Net(net) => Some(*net),
                    _ => None,
                })
                .chain(policy.peers.iter().filter_map(|p| match &p.net {
                    NetSpec::Net(net) => Some(*net),
                    _ => None,
                }))
                .collect();
            let nets = of_family(&own, f);
            if !nets.is_empty() {
                pre.push(rule(
                    vec![Match::ToLocal, sip(), Match::SaddrNets { family: f, nets }],
                    Action::Accept,
                    "trusted, local and other networks and peers skip the aggregate SIP guard",
                ));
            }
        }
        pre.push(counted(
            rule(
                vec![Match::ToLocal, sip()],
                Action::LimitOverDrop(policy.sip.aggregate_pps),
                format!(
                    "aggregate SIP guard: over {} pps from unregistered sources in all, the excess is dropped / {origin}",
                    policy.sip.aggregate_pps
                ),
            ),
            counters::AGGREGATE_DROPPED,
        ));
    }
    pre
}

/// The RTP ranges with every UDP port of a granted service carved out: a
/// wide media range (Asterisk's built-in 5000-31000) covers udp/5060 and
/// udp/4569, and must not open signalling to zones that were not granted it.
fn rtp_ranges(policy: &Policy, notes: &mut Vec<String>) -> Vec<PortSpec> {
    let mut carve: Vec<(u16, u16, &str)> = policy
        .services
        .values()
        .flat_map(|s| {
            s.ports
                .iter()
                .filter(|p| p.proto == Proto::Udp)
                .map(move |p| (p.lo, p.hi, s.name.as_str()))
        })
        .collect();
    carve.sort_unstable();
    let mut out = Vec::new();
    let mut carved = Vec::new();
    for r in &policy.rtp.ranges {
        let mut lo = u32::from(r.lo);
        let hi = u32::from(r.hi);
        for &(clo, chi, name) in &carve {
            let (clo, chi) = (u32::from(clo), u32::from(chi));
            if chi < lo || clo > hi {
                continue;
            }
            carved.push(format!(
                "udp/{}{} ({name})",
                clo,
                if chi > clo {
                    format!("-{chi}")
                } else {
                    String::new()
                }
            ));
            if clo > lo {
                out.push((lo, clo - 1));
            }
            lo = lo.max(chi + 1);
        }
        if lo <= hi {
            out.push((lo, hi));
        }
    }
    if !carved.is_empty() {
        carved.dedup();
        notes.push(format!(
            "the RTP range overlaps {}: carved out of RTP, so only zones granted the service reach it",
            carved.join(", ")
        ));
    }
    out.into_iter()
        .filter_map(|(lo, hi)| {
            Some(PortSpec {
                proto: Proto::Udp,
                lo: u16::try_from(lo).ok()?,
                hi: u16::try_from(hi).ok()?,
            })
        })
        .collect()
}

/// Trunks and peers: the rules of the `vw_peers` chain (each peer reaches
/// its own ports only) and the prerouting rules that let them skip ban
/// lookups. Peer hostnames get their set pair from `names`.
fn peers(
    policy: &Policy,
    names: &mut Names<'_>,
    notes: &mut Vec<String>,
    sets: &mut Vec<Set>,
) -> (Vec<Rule>, Vec<Rule>) {
    let mut chain = Vec::new();
    let mut by_name: Vec<NameSet> = Vec::new();
    let mut static_nets: [Vec<IpNet>; 2] = [Vec::new(), Vec::new()];
    for p in &policy.peers {
        // The file name only: nft comments hold 127 bytes.
        let file = p.origin.file.rsplit('/').next().unwrap_or(&p.origin.file);
        let comment = format!(
            "peer {} ({} {}) / {file}:{}",
            p.name, p.driver, p.role, p.origin.line
        );
        let sources: Vec<Match> = match &p.net {
            NetSpec::Net(n) => {
                let family = if matches!(n, IpNet::V4(_)) {
                    Family::V4
                } else {
                    Family::V6
                };
                static_nets[usize::from(family == Family::V6)].push(*n);
                vec![Match::SaddrNets {
                    family,
                    nets: vec![*n],
                }]
            }
            NetSpec::Host(h) => {
                let ns = names.get(
                    h,
                    p.srv,
                    true,
                    sets,
                    notes,
                    &format!("peer {} ({})", p.name, p.origin),
                );
                if !by_name.iter().any(|n| n.host == ns.host) {
                    by_name.push(ns.clone());
                }
                name_matches(&ns).to_vec()
            }
            // Peers come from the PBX's configuration: addresses and names.
            NetSpec::Geo(g) => {
                notes.push(format!(
                    "peer {} ({}): `{g}` is not an address; left out",
                    p.name, p.origin
                ));
                continue;
            }
        };
        for src in sources {
            for proto in [Proto::Udp, Proto::Tcp] {
                let ports: Vec<PortSpec> = p
                    .ports
                    .iter()
                    .copied()
                    .filter(|x| x.proto == proto)
                    .collect();
                if !ports.is_empty() {
                    chain.push(counted(
                        rule(
                            vec![src.clone(), Match::Dport(proto, ports)],
                            Action::Accept,
                            comment.clone(),
                        ),
                        "",
                    ));
                }
            }
        }
    }
    let mut skip = Vec::new();
    for (i, family) in [Family::V4, Family::V6].into_iter().enumerate() {
        let nets = IpNet::aggregate(&static_nets[i]);
        if !nets.is_empty() {
            skip.push(rule(
                vec![Match::SaddrNets { family, nets }],
                Action::Accept,
                "trunks and peers skip ban lookups",
            ));
        }
    }
    for n in &by_name {
        for m in name_matches(n) {
            skip.push(rule(
                vec![m],
                Action::Accept,
                format!("peer {} skips ban lookups", n.host),
            ));
        }
    }
    (chain, skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blocked hostname may have 253 characters; the kernel takes a log
    /// prefix of 127 bytes at most and would refuse the whole ruleset.
    #[test]
    fn drop_log_prefixes_fit_the_kernels_limit() {
        let long = format!("{}.example.org", "a".repeat(240));
        let p = drop_prefix("block", &long);
        assert_eq!(p.len(), DROP_PREFIX_MAX);
        assert!(p.starts_with("vw:block:aaaa"));
        // Cut at a character, not inside one.
        let p = drop_prefix("block", &"é".repeat(100));
        assert!(p.len() <= DROP_PREFIX_MAX && p.ends_with('é'));
        assert_eq!(drop_prefix("zone", "internet"), "vw:zone:internet");
    }

    /// Asterisk's built-in RTP range covers udp/5060: it is carved out, so
    /// zones without SIP cannot reach it as "RTP".
    #[test]
    fn a_wide_rtp_range_does_not_open_signalling_ports() {
        let text = "[interfaces]\neth0 = \"internet\"\n[zones.internet]\nservices = []\n\
            [zones.other]\nservices = [\"sip\", \"iax2\"]\n";
        let mut policy = crate::test_policy(text);
        // As discovery sets it (a policy's own [rtp] may not overlap at all).
        policy.rtp.ranges = vec![PortSpec {
            proto: Proto::Udp,
            lo: 5000,
            hi: 31000,
        }];
        let mut notes = Vec::new();
        let r: Vec<(u16, u16)> = rtp_ranges(&policy, &mut notes)
            .iter()
            .map(|p| (p.lo, p.hi))
            .collect();
        assert_eq!(r, [(5000, 5059), (5061, 31000)]);
        assert!(notes[0].contains("udp/5060 (sip)"), "{notes:?}");
    }

    /// Every use of a hostname shares one set pair; allow names skip ban
    /// lookups, block names drop, network names go to their zone before the
    /// map; allow, peer and trusted/local/other network names are protected
    /// from detection (as those networks are when given by address).
    #[test]
    fn hostnames_get_one_set_pair_each_with_the_right_rules() {
        let text = "[interfaces]\neth0 = \"internet\"\n\
            [networks]\n\"home.dyn.example\" = \"trusted\"\n\"branch.dyn.example\" = \"other\"\n\
            [[allow]]\naddress = \"noc.example\"\n\
            [[block]]\naddress = \"bad.example\"\n\
            [[allow]]\naddress = \"home.dyn.example\"\n";
        let policy = crate::test_policy(text);
        let mut resolved = BTreeMap::new();
        resolved.insert(
            "noc.example".to_string(),
            vec!["192.0.2.10".parse().unwrap()],
        );
        resolved.insert(
            "home.dyn.example".to_string(),
            vec!["2001:db8::10".parse().unwrap()],
        );
        let rs = compile(
            &policy,
            &CompileInput {
                resolved,
                geo: Default::default(),
                now: 0,
            },
        );
        let hosts: Vec<(&str, bool)> = rs
            .names
            .iter()
            .map(|n| (n.host.as_str(), n.protect))
            .collect();
        assert_eq!(
            hosts,
            [
                ("noc.example", true),
                ("home.dyn.example", true),
                ("bad.example", false),
                ("branch.dyn.example", true)
            ]
        );
        let script = crate::render(&rs);
        assert!(script.contains("add element inet voipwall vw_name0_v4 { 192.0.2.10 }"));
        assert!(script.contains("add element inet voipwall vw_name1_v6 { 2001:db8::10 }"));
        assert!(script.contains("vw_pre ip saddr @vw_name0_v4 accept"));
        assert!(script.contains("vw_pre ip saddr @vw_name2_v4 counter name vw_blocked drop"));
        assert!(script.contains("vw_input ip6 saddr @vw_name1_v6 goto vw_zone_trusted"));
        assert!(script.contains("vw_input ip saddr @vw_name3_v4 goto vw_zone_other"));
        assert!(
            rs.notes
                .iter()
                .any(|n| n.contains("`bad.example` did not resolve"))
        );
    }
}
