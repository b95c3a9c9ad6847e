//! The drop log: samples of what the firewall refused, in a window.
//!
//! The kernel takes the samples (a token bucket per zone and per ban/block
//! set, `[drops] rate`, copied over NFLOG with a `vw:<kind>:<name>`
//! prefix); this module turns each copy into a [`DropSample`] and keeps the
//! last hour: running totals per source, port and reason (added when a
//! sample arrives, taken away when its minute leaves the window), so a
//! report costs a sort of at most [`MAX_SOURCES`] entries whatever the
//! traffic was. Sans-IO: the caller gives the time.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The window, in minutes.
pub const WINDOW_MINUTES: u64 = 60;
/// Distinct (source, reason) pairs the window tracks; samples of others
/// are counted as `others`.
pub const MAX_SOURCES: usize = 4096;
/// Samples kept one by one for `--follow`.
pub const RECENT: usize = 512;

/// What refused the packet.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DropKind {
    /// The zone's "everything else" (nothing granted the port).
    Zone,
    /// A ban set.
    Ban,
    /// A block set (the policy's block list or a blocked name).
    Block,
    /// An origin from outside the host (a feed, CrowdSec's decisions),
    /// named by its stem (`feed_voipbl`, `cs_cscli`).
    Origin,
}

impl DropKind {
    /// The prefix word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zone => "zone",
            Self::Ban => "ban",
            Self::Block => "block",
            Self::Origin => "origin",
        }
    }
}

/// One sampled refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DropSample {
    /// When, ms since the epoch (the kernel's timestamp when it gave one).
    pub at_ms: u64,
    /// Source address (from the IP header).
    pub src: IpAddr,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub proto: String,
    /// Destination port (TCP and UDP).
    pub port: Option<u16>,
    /// What refused it.
    pub kind: DropKind,
    /// Which zone or set.
    pub name: String,
    /// The service the port belongs to, when the policy names one.
    pub service: Option<String>,
}

/// Reads one NFLOG copy: its prefix (`vw:<kind>:<name>`) and the packet
/// from its IP header. `None` for a prefix that is not the drop log's or a
/// packet too short to name its source.
pub fn parse_sample(prefix: &[u8], ip: &[u8], at_ms: u64) -> Option<DropSample> {
    let prefix = std::str::from_utf8(prefix).ok()?.trim_end_matches('\0');
    let mut parts = prefix.splitn(3, ':');
    if parts.next()? != "vw" {
        return None;
    }
    let kind = match parts.next()? {
        "zone" => DropKind::Zone,
        "ban" => DropKind::Ban,
        "block" => DropKind::Block,
        "origin" => DropKind::Origin,
        _ => return None,
    };
    let name = parts.next()?.to_string();
    if name.is_empty() {
        return None;
    }
    let (src, proto, l4) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < 20 || ip.len() < 20 {
                return None;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
            // A later fragment carries no ports.
            let l4 = if frag == 0 { ip.get(ihl..) } else { None };
            (src, ip[9], l4)
        }
        6 => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(s)), ip[6], ip.get(40..))
        }
        _ => return None,
    };
    let port = match proto {
        6 | 17 => l4
            .and_then(|l| l.get(2..4))
            .map(|p| u16::from_be_bytes([p[0], p[1]])),
        _ => None,
    };
    Some(DropSample {
        at_ms,
        src,
        proto: proto_name(proto),
        port,
        kind,
        name,
        service: None,
    })
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// A source and what refused it.
type SourceKey = (IpAddr, DropKind, String);
/// A protocol and port.
type PortKey = (String, Option<u16>);
/// A reason (kind, zone or set).
type ReasonKey = (DropKind, String);

#[derive(Debug, Default)]
struct Minute {
    /// Which minute (ms since the epoch / 60,000).
    at: u64,
    sources: HashMap<SourceKey, u64>,
    others: u64,
    ports: HashMap<PortKey, u64>,
    reasons: HashMap<ReasonKey, u64>,
}

#[derive(Debug, Clone)]
struct Last {
    at_ms: u64,
    proto: String,
    port: Option<u16>,
}

/// The last hour of samples, the totals since start and the latest
/// samples one by one.
#[derive(Debug, Default)]
pub struct DropWindow {
    minutes: VecDeque<Minute>,
    sources: HashMap<SourceKey, u64>,
    last: HashMap<SourceKey, Last>,
    others: u64,
    ports: HashMap<PortKey, u64>,
    reasons: HashMap<ReasonKey, u64>,
    recent: VecDeque<(u64, DropSample)>,
    seq: u64,
    /// Since start: (kind, name, service) → samples, for the metrics.
    totals: HashMap<(DropKind, String, String), u64>,
}

/// A source in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DropSource {
    /// Address.
    pub src: IpAddr,
    /// What refused it.
    pub kind: DropKind,
    /// Which zone or set.
    pub name: String,
    /// Samples in the window.
    pub samples: u64,
    /// Its latest sample, ms since the epoch.
    pub last_ms: u64,
    /// The latest sample's protocol.
    pub last_proto: String,
    /// The latest sample's port.
    pub last_port: Option<u16>,
}

/// A port in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DropPort {
    /// Protocol.
    pub proto: String,
    /// Port (TCP and UDP).
    pub port: Option<u16>,
    /// Samples in the window.
    pub samples: u64,
}

/// A zone or set in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DropReason {
    /// Zone, ban or block.
    pub kind: DropKind,
    /// Which zone or set.
    pub name: String,
    /// Samples in the window.
    pub samples: u64,
}

/// Samples since start by zone or set and service (the metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DropTotal {
    /// Zone, ban or block.
    pub kind: DropKind,
    /// Which zone or set.
    pub name: String,
    /// The port's service, `other` when the policy names none.
    pub service: String,
    /// Samples since the daemon started.
    pub samples: u64,
}

/// What `voipwall drops` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DropsReport {
    /// The drop log is on (`[drops] log`).
    pub enabled: bool,
    /// Samples per second per zone and per set, the kernel's limit.
    pub rate: u32,
    /// The window, minutes.
    pub minutes: u64,
    /// Samples in the window.
    pub samples: u64,
    /// Samples of sources beyond the tracked ones.
    pub others: u64,
    /// The most refused sources, most first.
    pub sources: Vec<DropSource>,
    /// The most refused ports.
    pub ports: Vec<DropPort>,
    /// Samples by zone and set.
    pub reasons: Vec<DropReason>,
    /// Samples since start by zone or set and service.
    pub totals: Vec<DropTotal>,
    /// Samples after the `since` asked for (at most [`RECENT`]), oldest
    /// first, each with its sequence number.
    pub recent: Vec<(u64, DropSample)>,
    /// The sequence number to ask `since` next time.
    pub next: u64,
    /// Copies the daemon read from the kernel since it bound the group.
    #[serde(default)]
    pub copies: u64,
    /// Times the receive buffer overflowed (copies lost).
    #[serde(default)]
    pub lost: u64,
}

fn add<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u64>, k: K, n: u64) {
    *m.entry(k).or_default() += n;
}

fn sub<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u64>, k: &K, n: u64) {
    if let Some(v) = m.get_mut(k) {
        *v = v.saturating_sub(n);
        if *v == 0 {
            m.remove(k);
        }
    }
}

fn top<K, T>(m: &HashMap<K, u64>, n: usize, f: impl Fn(&K, u64) -> T) -> Vec<T>
where
    K: Ord,
{
    let mut v: Vec<(&K, u64)> = m.iter().map(|(k, c)| (k, *c)).collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    v.into_iter().take(n).map(|(k, c)| f(k, c)).collect()
}

impl DropWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the minutes that left the window at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let now = now_ms / 60_000;
        while let Some(m) = self.minutes.front() {
            if m.at + WINDOW_MINUTES > now {
                break;
            }
            let m = self.minutes.pop_front().expect("front exists");
            for (k, n) in &m.sources {
                sub(&mut self.sources, k, *n);
                if !self.sources.contains_key(k) {
                    self.last.remove(k);
                }
            }
            self.others = self.others.saturating_sub(m.others);
            for (k, n) in &m.ports {
                sub(&mut self.ports, k, *n);
            }
            for (k, n) in &m.reasons {
                sub(&mut self.reasons, k, *n);
            }
        }
    }

    /// Adds one sample.
    pub fn push(&mut self, s: DropSample) {
        self.expire(s.at_ms);
        let minute = s.at_ms / 60_000;
        if self.minutes.back().is_none_or(|m| m.at < minute) {
            self.minutes.push_back(Minute {
                at: minute,
                ..Minute::default()
            });
        }
        let m = self.minutes.back_mut().expect("a minute");
        let key: SourceKey = (s.src, s.kind, s.name.clone());
        if self.sources.contains_key(&key) || self.sources.len() < MAX_SOURCES {
            add(&mut m.sources, key.clone(), 1);
            add(&mut self.sources, key.clone(), 1);
            self.last.insert(
                key,
                Last {
                    at_ms: s.at_ms,
                    proto: s.proto.clone(),
                    port: s.port,
                },
            );
        } else {
            m.others += 1;
            self.others += 1;
        }
        let pk: PortKey = (s.proto.clone(), s.port);
        add(&mut m.ports, pk.clone(), 1);
        add(&mut self.ports, pk, 1);
        let rk: ReasonKey = (s.kind, s.name.clone());
        add(&mut m.reasons, rk.clone(), 1);
        add(&mut self.reasons, rk, 1);
        add(
            &mut self.totals,
            (
                s.kind,
                s.name.clone(),
                s.service.clone().unwrap_or_else(|| "other".into()),
            ),
            1,
        );
        self.seq += 1;
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((self.seq, s));
    }

    /// The report over the last `minutes` (at most the window) with the
    /// `top` most refused sources and ports, and the samples after `since`.
    /// A window shorter than the hour counts only its minutes.
    pub fn report(&mut self, now_ms: u64, minutes: u64, top_n: usize, since: u64) -> DropsReport {
        self.expire(now_ms);
        let minutes = minutes.clamp(1, WINDOW_MINUTES);
        let full = minutes == WINDOW_MINUTES;
        // The whole hour is kept as running totals; a shorter window is
        // summed from its minutes.
        let from = (now_ms / 60_000 + 1).saturating_sub(minutes);
        let (sources, others, ports, reasons);
        if full {
            sources = top(&self.sources, top_n, |k, c| self.source(k, c));
            others = self.others;
            ports = top(&self.ports, top_n, port);
            reasons = top(&self.reasons, usize::MAX, reason);
        } else {
            let mut s: HashMap<SourceKey, u64> = HashMap::new();
            let mut p: HashMap<PortKey, u64> = HashMap::new();
            let mut r: HashMap<ReasonKey, u64> = HashMap::new();
            let mut o = 0;
            for m in self.minutes.iter().filter(|m| m.at >= from) {
                for (k, n) in &m.sources {
                    add(&mut s, k.clone(), *n);
                }
                for (k, n) in &m.ports {
                    add(&mut p, k.clone(), *n);
                }
                for (k, n) in &m.reasons {
                    add(&mut r, k.clone(), *n);
                }
                o += m.others;
            }
            sources = top(&s, top_n, |k, c| self.source(k, c));
            others = o;
            ports = top(&p, top_n, port);
            reasons = top(&r, usize::MAX, reason);
        }
        let mut totals: Vec<DropTotal> = self
            .totals
            .iter()
            .map(|((kind, name, service), n)| DropTotal {
                kind: *kind,
                name: name.clone(),
                service: service.clone(),
                samples: *n,
            })
            .collect();
        totals.sort_by(|a, b| (a.kind, &a.name, &a.service).cmp(&(b.kind, &b.name, &b.service)));
        DropsReport {
            enabled: true,
            rate: 0,
            minutes,
            samples: reasons.iter().map(|r: &DropReason| r.samples).sum(),
            others,
            sources,
            ports,
            reasons,
            totals,
            recent: self
                .recent
                .iter()
                .filter(|(n, _)| *n > since)
                .cloned()
                .collect(),
            next: self.seq,
            copies: 0,
            lost: 0,
        }
    }

    fn source(&self, k: &SourceKey, samples: u64) -> DropSource {
        let last = self.last.get(k);
        DropSource {
            src: k.0,
            kind: k.1,
            name: k.2.clone(),
            samples,
            last_ms: last.map_or(0, |l| l.at_ms),
            last_proto: last.map(|l| l.proto.clone()).unwrap_or_default(),
            last_port: last.and_then(|l| l.port),
        }
    }
}

fn port(k: &PortKey, samples: u64) -> DropPort {
    DropPort {
        proto: k.0.clone(),
        port: k.1,
        samples,
    }
}

fn reason(k: &ReasonKey, samples: u64) -> DropReason {
    DropReason {
        kind: k.0,
        name: k.1.clone(),
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn udp4(src: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&[203, 0, 113, 1]);
        p.extend_from_slice(&[0x13, 0x88]);
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    #[test]
    fn a_sample_names_its_source_port_and_zone() {
        let s = parse_sample(b"vw:zone:internet\0", &udp4([198, 51, 100, 7], 9999), 1_000).unwrap();
        assert_eq!(s.src, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!((s.proto.as_str(), s.port), ("udp", Some(9999)));
        assert_eq!((s.kind, s.name.as_str()), (DropKind::Zone, "internet"));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 6, 64];
        v6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x9c, 0x40, 0, 23]);
        let s = parse_sample(b"vw:ban:vw_ban_v6", &v6, 1).unwrap();
        assert_eq!(
            (s.proto.as_str(), s.port, s.kind),
            ("tcp", Some(23), DropKind::Ban)
        );
        assert_eq!(
            parse_sample(b"other prefix", &udp4([1, 2, 3, 4], 1), 1),
            None
        );
        assert_eq!(parse_sample(b"vw:zone:", &udp4([1, 2, 3, 4], 1), 1), None);
        assert_eq!(parse_sample(b"vw:zone:internet", &[0x45, 0], 1), None);
    }

    #[test]
    fn the_window_ranks_sources_and_forgets_the_hour_before() {
        let mut w = DropWindow::new();
        let t0 = 1_000 * 60_000;
        for i in 0..5 {
            w.push(
                parse_sample(b"vw:zone:internet", &udp4([198, 51, 100, 7], 23), t0 + i).unwrap(),
            );
        }
        w.push(parse_sample(b"vw:ban:vw_ban_v4", &udp4([203, 0, 113, 9], 5060), t0 + 10).unwrap());
        let r = w.report(t0 + 20, 60, 10, 0);
        assert_eq!(r.samples, 6);
        assert_eq!(r.sources[0].src.to_string(), "198.51.100.7");
        assert_eq!(
            (r.sources[0].samples, r.sources[0].last_port),
            (5, Some(23))
        );
        assert_eq!(
            r.ports[0],
            DropPort {
                proto: "udp".into(),
                port: Some(23),
                samples: 5
            }
        );
        assert_eq!(r.recent.len(), 6);
        assert_eq!(w.report(t0 + 20, 60, 10, r.next).recent.len(), 0);
        // Ten minutes on, the last five minutes are empty; an hour on,
        // the window is.
        assert_eq!(w.report(t0 + 10 * 60_000, 5, 10, 0).samples, 0);
        assert_eq!(w.report(t0 + 10 * 60_000, 60, 10, 0).samples, 6);
        let r = w.report(t0 + 61 * 60_000, 60, 10, 0);
        assert_eq!((r.samples, r.sources.len()), (0, 0));
        // Totals since start stay for the metrics.
        assert_eq!(r.totals.iter().map(|t| t.samples).sum::<u64>(), 6);
    }

    #[test]
    fn sources_beyond_the_cap_are_counted_not_tracked() {
        let mut w = DropWindow::new();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let a = (100u32 << 24) | i;
            w.push(parse_sample(b"vw:zone:internet", &udp4(a.to_be_bytes(), 23), 60_000).unwrap());
        }
        let r = w.report(60_001, 60, 5, 0);
        assert_eq!(
            (r.samples, r.others, r.sources.len()),
            (MAX_SOURCES as u64 + 100, 100, 5)
        );
        assert_eq!(w.sources.len(), MAX_SOURCES);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(prefix in proptest::collection::vec(any::<u8>(), 0..40),
                                         pkt in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_sample(&prefix, &pkt, 0);
            let mut p = b"vw:zone:x".to_vec();
            p.extend_from_slice(&prefix);
            if let Some(s) = parse_sample(&p, &pkt, 0) {
                let mut w = DropWindow::new();
                w.push(s);
                prop_assert_eq!(w.report(1, 60, 10, 0).samples, 1);
            }
        }
    }
}
