//! The ruleset IR: what the compiler produces, what the renderer prints and
//! what `explain` evaluates. One structure, so the script and the explanation
//! cannot disagree.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use voipwall_policy::{PortSpec, Proto};

/// The NFLOG prefix of the copies of packets the host sends.
pub const OUTBOUND_PREFIX: &str = "vw-out";
/// Address family of a set or match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// `ip` or `ip6`, the nft payload keyword.
    pub fn kw(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        if addr.is_ipv4() { Self::V4 } else { Self::V6 }
    }
}

/// Whether the apply flushes and refills a set, or leaves it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Plane {
    /// Rebuilt on every apply (policy data).
    Policy,
    /// Created once, never flushed (bans, known hosts, meters).
    Dynamic,
}

/// An element of a set or verdict map: an inclusive address range.
///
/// Stored (in a generation's recorded ruleset) as one string, `lo`,
/// `lo-hi` or either with `>chain`: a 100,000-entry list is then a
/// fraction of the bytes the struct form takes. The struct form
/// (`{"lo": .., "hi": .., "goto": ..}`) written by earlier versions is still
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// First address.
    pub lo: IpAddr,
    /// Last address.
    pub hi: IpAddr,
    /// For verdict maps: the chain to `goto`.
    pub goto: Option<String>,
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.lo)?;
        if self.hi != self.lo {
            write!(f, "-{}", self.hi)?;
        }
        if let Some(c) = &self.goto {
            write!(f, ">{c}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Element {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (range, goto) = match s.split_once('>') {
            Some((r, c)) => (r, Some(c.to_string())),
            None => (s, None),
        };
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let addr = |a: &str| {
            a.parse::<IpAddr>()
                .map_err(|_| format!("`{a}` is not an address (element `{s}`)"))
        };
        Ok(Self {
            lo: addr(lo)?,
            hi: addr(hi)?,
            goto,
        })
    }
}

impl Serialize for Element {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The struct form earlier versions recorded.
        #[derive(Deserialize)]
        struct Old {
            lo: IpAddr,
            hi: IpAddr,
            #[serde(default)]
            goto: Option<String>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an element (`lo-hi>chain`) or {lo, hi, goto}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Element, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Element, A::Error> {
                let o = Old::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(Element {
                    lo: o.lo,
                    hi: o.hi,
                    goto: o.goto,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A named set or verdict map in our table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    /// `vw_ban_v4`.
    pub name: String,
    /// Key family.
    pub family: Family,
    /// `flags interval`.
    pub interval: bool,
    /// `flags timeout`.
    pub timeout: bool,
    /// `flags dynamic` (updated from the packet path).
    pub dynamic: bool,
    /// Entry lifetime for meters.
    pub default_timeout: Option<u64>,
    /// Maximum number of elements (meters).
    pub size: Option<u32>,
    /// A verdict map rather than a set.
    pub verdict_map: bool,
    /// Flushed on apply or not.
    pub plane: Plane,
    /// Deleted and created again on every apply, sized to its elements (fixed
    /// hash sets allocate their buckets from the declared size).
    pub recreate: bool,
    /// Static elements.
    pub elements: Vec<Element>,
    /// Human purpose.
    pub comment: String,
    /// Kept current by the daemon after the apply (a `[geo]` database that
    /// changed): `explain` asks the kernel, not the recorded elements.
    #[serde(default)]
    pub live: bool,
}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// `prerouting`, `input`, `output`.
    pub hook: Cow<'static, str>,
    /// `raw`, `filter`.
    pub priority: Cow<'static, str>,
    /// `accept` or `drop`.
    pub policy: Cow<'static, str>,
}

/// A chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Name.
    pub name: String,
    /// Hook for base chains.
    pub hook: Option<Hook>,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// Connection-tracking states a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtMatch {
    /// `ct state invalid`.
    Invalid,
    /// `ct state established,related`.
    EstablishedRelated,
}

/// One condition of a rule. All must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Match {
    /// `iif "lo"`.
    Loopback,
    /// `fib daddr type local`: addressed to this host.
    ToLocal,
    /// Connection-tracking state.
    Ct(CtMatch),
    /// `ip saddr @set` / `ip saddr != @set`.
    SaddrIn {
        /// Family.
        family: Family,
        /// Set name.
        set: String,
        /// Negated.
        negate: bool,
    },
    /// `ip saddr and <mask> @set`: the source's prefix is in the set.
    SaddrPrefixIn {
        /// Family.
        family: Family,
        /// Prefix length of the mask.
        prefix: u8,
        /// Set name.
        set: String,
    },
    /// `ip saddr { 192.0.2.1, 198.51.100.0/24 }`: an anonymous set.
    SaddrNets {
        /// Family.
        family: Family,
        /// Addresses and prefixes (all of `family`).
        nets: Vec<IpNet>,
    },
    /// `udp dport { ... }`.
    Dport(Proto, Vec<PortSpec>),
    /// `udp sport { ... }`.
    Sport(Proto, Vec<PortSpec>),
    /// UDP payload starts (or does not start) with `SIP/`, i.e. a response.
    SipResponse(bool),
    /// UDP payload starts with `SIP/` or `BYE `: what the host sends that
    /// detection reads (its responses, and the BYEs that end calls).
    SipResponseOrBye,
    /// ICMP types (IPv4).
    Icmp(Vec<Cow<'static, str>>),
    /// ICMPv6 types.
    Icmpv6(Vec<Cow<'static, str>>),
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Accept.
    Accept,
    /// Drop.
    Drop,
    /// `reject with icmpx admin-prohibited`.
    Reject,
    /// Return to the calling chain.
    Return,
    /// Jump (come back on return).
    Jump(String),
    /// Goto (no coming back).
    Goto(String),
    /// `ip saddr vmap @map`.
    SaddrVmap(Family, String),
    /// `iifname vmap { "eth0" : goto chain, ... }`.
    IifVmap(Vec<(String, String)>),
    /// `log group N snaplen S` (non-terminal); `log prefix "vw-out" ...`
    /// for what the host sends.
    Nflog {
        /// NFLOG group.
        group: u16,
        /// Bytes copied per packet.
        snaplen: u32,
        /// A copy of a packet the host sends: prefixed [`OUTBOUND_PREFIX`]
        /// so the daemon reads the direction from the copy, not from a
        /// source address a packet from outside can claim.
        #[serde(default)]
        outbound: bool,
    },
    /// `limit rate N/second burst N packets log prefix "P" group G snaplen
    /// S` (non-terminal): a sample of what the next rule drops, for the
    /// drop log; over the rate the rule does not match and nothing is
    /// copied.
    Sample {
        /// NFLOG group.
        group: u16,
        /// Samples per second (and burst).
        rate: u32,
        /// What the drop is (`vw:zone:internet`, `vw:ban:vw_ban_v4`).
        prefix: String,
    },
    /// `limit rate N/second accept`.
    LimitAccept(u32),
    /// `limit rate over N/second burst N packets drop`: one budget for every
    /// packet the rule matches.
    LimitOverDrop(u32),
    /// `update @meter { ip saddr limit rate over N/second } drop`.
    MeterDrop {
        /// Family.
        family: Family,
        /// Meter set.
        meter: String,
        /// Packets per second.
        pps: u32,
    },
    /// `update @meter { ip saddr limit rate over N/second } add @ban { ip saddr timeout T } drop`.
    MeterBan {
        /// Family.
        family: Family,
        /// Meter set.
        meter: String,
        /// Packets per second.
        pps: u32,
        /// Ban set.
        ban_set: String,
        /// Ban seconds.
        timeout: u64,
    },
}

impl Action {
    /// Whether evaluation stops at this rule (inside the current chain).
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Nflog { .. } | Self::Sample { .. })
    }
}

/// A rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Conditions.
    pub matches: Vec<Match>,
    /// Named counter to update, or an anonymous counter when `Some("")`.
    pub counter: Option<String>,
    /// Action.
    pub action: Action,
    /// Origin, printed as the nft comment.
    pub comment: String,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// Sets and maps, in declaration order.
    pub sets: Vec<Set>,
    /// Named counters.
    pub counters: Vec<String>,
    /// Chains, base chains first.
    pub chains: Vec<Chain>,
    /// Non-fatal notes from compilation (unresolved hostnames, expired entries).
    pub notes: Vec<String>,
    /// Sets that hold the addresses of one hostname: the resolver updates
    /// them element by element when the name's records change.
    pub names: Vec<NameSet>,
    /// Sets that hold the networks of one country or AS: the daemon
    /// replaces their content when the `[geo]` database file changes.
    #[serde(default)]
    pub geo: Vec<GeoSet>,
}

/// A country or AS whose networks live in their own pair of interval sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoSet {
    /// `country:ZZ`, `asn:64500`.
    pub selector: String,
    /// The IPv4 set.
    pub v4: String,
    /// The IPv6 set.
    pub v6: String,
}

/// A hostname whose addresses live in their own pair of sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameSet {
    /// The name.
    pub host: String,
    /// Also follow its SIP SRV records.
    pub srv: bool,
    /// Detection must never ban its addresses (a peer, an allow-list entry,
    /// a trusted, local or other network); false for block-list names and
    /// the internet and reject zones.
    pub protect: bool,
    /// The IPv4 set.
    pub v4: String,
    /// The IPv6 set.
    pub v6: String,
}

impl Ruleset {
    /// Compiled in bans-only mode (`[filter] mode = "bans-only"`): the input
    /// chain accepts what prerouting did not drop, and another table
    /// decides what passes.
    pub fn bans_only(&self) -> bool {
        self.chains
            .iter()
            .any(|c| c.name == "vw_input" && c.hook.as_ref().is_some_and(|h| h.policy == "accept"))
    }

    /// The table name voipwall owns.
    pub const TABLE: &'static str = "voipwall";

    /// A chain by name.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// A set by name.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// The prefix lengths its `vw_banpfx_*` rules mask with: what an element
    /// of those sets covers while this ruleset is in force.
    pub fn ban_prefixes(&self) -> crate::sets::Prefixes {
        let mut p = crate::sets::Prefixes::default();
        for m in self
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .flat_map(|r| &r.matches)
        {
            if let Match::SaddrPrefixIn {
                family,
                prefix,
                set,
            } = m
                && set.starts_with("vw_banpfx_")
            {
                match family {
                    Family::V4 => p.v4 = *prefix,
                    Family::V6 => p.v6 = *prefix,
                }
            }
        }
        p
    }
}

/// Mask of `prefix` bits for the family, as an address (`255.255.255.0`).
pub fn mask_addr(family: Family, prefix: u8) -> IpAddr {
    match family {
        Family::V4 => IpNet::new(IpAddr::from([0u8; 4]), prefix.min(32))
            .map(|n| n.netmask())
            .unwrap_or(IpAddr::from([255u8; 4])),
        Family::V6 => IpNet::new(IpAddr::from([0u16; 8]), prefix.min(128))
            .map(|n| n.netmask())
            .unwrap_or(IpAddr::from([0xffffu16; 8])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_recorded_as_strings_and_the_old_struct_form_still_reads() {
        let e = |lo: &str, hi: &str, goto: Option<&str>| Element {
            lo: lo.parse().unwrap(),
            hi: hi.parse().unwrap(),
            goto: goto.map(str::to_string),
        };
        let all = vec![
            e("192.0.2.1", "192.0.2.1", None),
            e("198.51.100.0", "198.51.100.63", Some("vw_zone_local")),
            e("2001:db8::", "2001:db8::ffff", None),
            e("::", "::", Some("vw_zone_internet")),
        ];
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(
            json,
            r#"["192.0.2.1","198.51.100.0-198.51.100.63>vw_zone_local","2001:db8::-2001:db8::ffff","::>vw_zone_internet"]"#
        );
        assert_eq!(serde_json::from_str::<Vec<Element>>(&json).unwrap(), all);
        let old = r#"[{"lo":"192.0.2.1","hi":"192.0.2.1"},{"lo":"198.51.100.0","hi":"198.51.100.63","goto":"vw_zone_local"}]"#;
        assert_eq!(serde_json::from_str::<Vec<Element>>(old).unwrap(), all[..2]);
        for bad in [r#""192.0.2.1-x""#, r#""""#, "7"] {
            assert!(serde_json::from_str::<Element>(bad).is_err(), "{bad}");
        }
    }
}
