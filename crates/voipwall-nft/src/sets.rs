//! The ban plane's vocabulary: the kernel sets `compile` declares that
//! change at run time, and the one placement function that decides which
//! set a ban, block or runtime allow goes to and what it really covers.
//!
//! Every caller (CLI, daemon control socket, detection engine, restore,
//! and later the HTTP API, fleet and feeds) places through [`place`], so
//! what voipwall says it banned is what the kernel matches.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ir::Family;

/// The runtime sets of `table inet voipwall`, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Single-address bans (hash, per-element timeout).
    Ban,
    /// Prefix bans keyed by the masked network (hash); known endpoints skip them.
    BanPrefix,
    /// Network bans and runtime blocks (interval set, per-element timeout).
    BanNet,
    /// Runtime allow entries (interval set): skip every ban lookup.
    AllowRt,
    /// Registered endpoints (hash, timeout refreshed on each success).
    Known,
    /// Endpoints that registered within `[detect] remember_endpoints`
    /// (hash, timeout the rest of that time): prefix bans spare them.
    Remembered,
}

impl Role {
    /// Every role, in the order `bans` lists them.
    pub const ALL: [Self; 6] = [
        Self::Ban,
        Self::BanPrefix,
        Self::BanNet,
        Self::AllowRt,
        Self::Known,
        Self::Remembered,
    ];

    /// The roles that hold bans.
    pub const BANS: [Self; 3] = [Self::Ban, Self::BanPrefix, Self::BanNet];

    /// The kernel set's name for a family.
    pub const fn set(self, f: Family) -> &'static str {
        match (self, f) {
            (Self::Ban, Family::V4) => "vw_ban_v4",
            (Self::Ban, Family::V6) => "vw_ban_v6",
            (Self::BanPrefix, Family::V4) => "vw_banpfx_v4",
            (Self::BanPrefix, Family::V6) => "vw_banpfx_v6",
            (Self::BanNet, Family::V4) => "vw_bannet_v4",
            (Self::BanNet, Family::V6) => "vw_bannet_v6",
            (Self::AllowRt, Family::V4) => "vw_allowrt_v4",
            (Self::AllowRt, Family::V6) => "vw_allowrt_v6",
            (Self::Known, Family::V4) => "vw_known_v4",
            (Self::Known, Family::V6) => "vw_known_v6",
            (Self::Remembered, Family::V4) => "vw_remembered_v4",
            (Self::Remembered, Family::V6) => "vw_remembered_v6",
        }
    }

    /// Whether the set holds intervals (elements are networks) rather than
    /// single keys.
    pub const fn interval(self) -> bool {
        matches!(self, Self::BanNet | Self::AllowRt)
    }

    /// The role a set name belongs to.
    pub fn of(set: &str) -> Option<(Self, Family)> {
        Self::ALL.iter().find_map(|r| {
            [Family::V4, Family::V6]
                .into_iter()
                .find(|f| r.set(*f) == set)
                .map(|f| (*r, f))
        })
    }
}

/// The policy plane's sets (refilled by every apply from the policy) and
/// the kernel's per-source rate meters: their names live here too, so no
/// set name is spelled twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixed {
    /// The allow list's networks (interval).
    Allow,
    /// The allow list's single addresses (hash).
    AllowHost,
    /// The block list's networks (interval).
    Block,
    /// The block list's single addresses (hash).
    BlockHost,
    /// Zone by source network (interval verdict map).
    ZoneMap,
    /// SIP flood meter, level 1.
    Flood1,
    /// SIP flood meter, level 2.
    Flood2,
    /// Responsive mode's meter of unknown sources.
    Unknown,
}

impl Fixed {
    /// The kernel set's name for a family.
    pub const fn set(self, f: Family) -> &'static str {
        match (self, f) {
            (Self::Allow, Family::V4) => "vw_allow_v4",
            (Self::Allow, Family::V6) => "vw_allow_v6",
            (Self::AllowHost, Family::V4) => "vw_allowhost_v4",
            (Self::AllowHost, Family::V6) => "vw_allowhost_v6",
            (Self::Block, Family::V4) => "vw_block_v4",
            (Self::Block, Family::V6) => "vw_block_v6",
            (Self::BlockHost, Family::V4) => "vw_blockhost_v4",
            (Self::BlockHost, Family::V6) => "vw_blockhost_v6",
            (Self::ZoneMap, Family::V4) => "vw_zone_v4",
            (Self::ZoneMap, Family::V6) => "vw_zone_v6",
            (Self::Flood1, Family::V4) => "vw_flood1_v4",
            (Self::Flood1, Family::V6) => "vw_flood1_v6",
            (Self::Flood2, Family::V4) => "vw_flood2_v4",
            (Self::Flood2, Family::V6) => "vw_flood2_v6",
            (Self::Unknown, Family::V4) => "vw_unknown_v4",
            (Self::Unknown, Family::V6) => "vw_unknown_v6",
        }
    }
}

/// The sets of an origin from outside the host (a `[[feed]]`, a CrowdSec
/// decision origin) are named by its stem: `feed_<name>` or `cs_<origin>`
/// (feed names are 1-16 of a-z, 0-9 and `-`; CrowdSec origins are
/// `voipwall_policy::CROWDSEC_ORIGINS`).
pub fn feed_stem(name: &str) -> String {
    format!("feed_{name}")
}

/// See [`feed_stem`].
pub fn crowdsec_stem(origin: &str) -> String {
    format!("cs_{origin}")
}

/// The stem of a Redis Streams fleet's sets (`vw_fleet_v4`...): the bans
/// of every other node, one origin (a set pair per node would cost every
/// packet a lookup per node).
pub const FLEET_STEM: &str = "fleet";

/// An origin's kernel set of single addresses for a family:
/// `vw_<stem>_v4` and `_v6`, hash sets with per-element timeouts. Most
/// entries are single addresses (all of APIBAN, most of VoIPBL and of
/// CrowdSec), and the kernel's interval sets take a million of them in
/// tens of seconds where a hash set takes one (bench/feeds).
pub fn origin_set(stem: &str, f: Family) -> String {
    match f {
        Family::V4 => format!("vw_{stem}_v4"),
        Family::V6 => format!("vw_{stem}_v6"),
    }
}

/// An origin's kernel set of networks for a family: `vw_<stem>_net4`
/// and `_net6`, interval sets (never overlapping, see
/// `voipwall_policy::feed::collapse`).
pub fn origin_net_set(stem: &str, f: Family) -> String {
    match f {
        Family::V4 => format!("vw_{stem}_net4"),
        Family::V6 => format!("vw_{stem}_net6"),
    }
}

/// The set an origin's entry goes to: single addresses to the hash set,
/// networks to the interval set.
pub fn origin_set_of(stem: &str, net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        origin_set(stem, family_of(net))
    } else {
        origin_net_set(stem, family_of(net))
    }
}

/// Whether an origin's set holds single addresses (a hash set).
pub fn origin_host_set(set: &str) -> bool {
    set.ends_with("_v4") || set.ends_with("_v6")
}

/// The stem of an origin's kernel set (`vw_feed_voipbl_net4` →
/// `feed_voipbl`), `None` for voipwall's other sets. Exactly one suffix
/// is taken off, so a feed named `net4` is still told apart.
pub fn origin_of(set: &str) -> Option<&str> {
    let rest = set.strip_prefix("vw_")?;
    if !(rest.starts_with("feed_") || rest.starts_with("cs_") || rest.starts_with("fleet_")) {
        return None;
    }
    ["_net4", "_net6", "_v4", "_v6"]
        .iter()
        .find_map(|sfx| rest.strip_suffix(sfx))
}

/// The counter of packets an origin's sets dropped (`vw_<stem>`).
pub fn origin_counter(stem: &str) -> String {
    format!("vw_{stem}")
}

/// The family of an address or network.
pub fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

/// The prefix lengths the compiled `vw_banpfx_*` rules mask with
/// (`[bans] ipv4_prefix` / `ipv6_prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixes {
    /// IPv4 prefix bans.
    pub v4: u8,
    /// IPv6 prefix bans.
    pub v6: u8,
}

impl Default for Prefixes {
    fn default() -> Self {
        Self { v4: 24, v6: 64 }
    }
}

impl Prefixes {
    /// The configured prefix length for a family.
    pub const fn of(self, f: Family) -> u8 {
        match f {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// What the kernel is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// One key of a hash set (an address, or a masked network address).
    Addr(IpAddr),
    /// An interval `[network, broadcast]`.
    Interval(IpNet),
}

/// Where an entry goes and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Placement {
    /// The set's role.
    pub role: Role,
    /// The set's family.
    pub family: Family,
    /// The element.
    pub key: Key,
    /// Exactly the addresses the kernel will match.
    pub covers: IpNet,
}

impl Placement {
    /// The kernel set's name.
    pub const fn set(&self) -> &'static str {
        self.role.set(self.family)
    }

    /// Whether registered endpoints inside it are spared.
    pub const fn spares_known(&self) -> bool {
        matches!(self.role, Role::BanPrefix)
    }
}

/// What is being placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A ban. A single IPv6 address is widened to the configured prefix
    /// unless `exact` (one attacker owns the whole /64; prefix bans spare
    /// registered endpoints). A network whose length is the configured
    /// prefix is a prefix ban; any other network is an interval ban.
    Ban {
        /// Address or network.
        target: IpNet,
        /// Ban the address alone.
        exact: bool,
    },
    /// A runtime block: the exact network, dropped whatever it is.
    Block(IpNet),
    /// A runtime allow: the exact network.
    Allow(IpNet),
    /// A registered endpoint (known set, exact address).
    Known(IpAddr),
    /// A remembered endpoint (remembered set, exact address).
    Remembered(IpAddr),
}

/// The one placement function.
pub fn place(entry: Entry, prefixes: Prefixes) -> Placement {
    let interval = |role: Role, n: IpNet| Placement {
        role,
        family: family_of(&n),
        key: Key::Interval(n.trunc()),
        covers: n.trunc(),
    };
    match entry {
        Entry::Block(n) => interval(Role::BanNet, n),
        Entry::Allow(n) => interval(Role::AllowRt, n),
        Entry::Known(addr) | Entry::Remembered(addr) => {
            let covers = IpNet::from(addr);
            Placement {
                role: if matches!(entry, Entry::Known(_)) {
                    Role::Known
                } else {
                    Role::Remembered
                },
                family: family_of(&covers),
                key: Key::Addr(addr),
                covers,
            }
        }
        Entry::Ban { target, exact } => {
            let f = family_of(&target);
            let full = target.prefix_len() == target.max_prefix_len();
            let pfx = prefixes.of(f);
            let widened = if full && !exact && f == Family::V6 && pfx < target.max_prefix_len() {
                IpNet::new(target.addr(), pfx).map_or(target, |n| n.trunc())
            } else {
                target.trunc()
            };
            if widened.prefix_len() == widened.max_prefix_len() {
                Placement {
                    role: Role::Ban,
                    family: f,
                    key: Key::Addr(widened.addr()),
                    covers: widened,
                }
            } else if widened.prefix_len() == pfx {
                Placement {
                    role: Role::BanPrefix,
                    family: f,
                    key: Key::Addr(widened.network()),
                    covers: widened,
                }
            } else {
                interval(Role::BanNet, widened)
            }
        }
    }
}

/// What a kernel element found in a set stands for: prefix-set keys are
/// masked addresses and mean the configured prefix.
pub fn covered_by(role: Role, element: IpNet, prefixes: Prefixes) -> IpNet {
    if role == Role::BanPrefix {
        let len = prefixes.of(family_of(&element));
        IpNet::new(element.addr(), len).map_or(element, |n| n.trunc())
    } else {
        element
    }
}

/// The placements that could hold a ban affecting `net`, for `unban`: the
/// exact address, the prefix around it, and the network itself. The caller
/// deletes each that the kernel holds.
pub fn lift_candidates(net: IpNet, prefixes: Prefixes) -> Vec<Placement> {
    let f = family_of(&net);
    let mut v = Vec::new();
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        v.push(place(
            Entry::Ban {
                target: net,
                exact: true,
            },
            prefixes,
        ));
    }
    let pfx = prefixes.of(f);
    if net.prefix_len() >= pfx
        && let Ok(p) = IpNet::new(net.addr(), pfx)
    {
        v.push(Placement {
            role: Role::BanPrefix,
            family: f,
            key: Key::Addr(p.trunc().network()),
            covers: p.trunc(),
        });
    }
    if net.prefix_len() != net.max_prefix_len() {
        v.push(place(Entry::Block(net), prefixes));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_sets_name_their_origin() {
        for stem in [
            feed_stem("voipbl"),
            feed_stem("net"),
            feed_stem("a-net"),
            feed_stem("v4"),
            feed_stem("net4"),
            feed_stem("x-net4"),
            crowdsec_stem("cscli"),
            FLEET_STEM.to_string(),
        ] {
            for f in [Family::V4, Family::V6] {
                assert_eq!(origin_of(&origin_set(&stem, f)), Some(stem.as_str()));
                assert_eq!(origin_of(&origin_net_set(&stem, f)), Some(stem.as_str()));
                assert!(origin_host_set(&origin_set(&stem, f)));
                assert!(!origin_host_set(&origin_net_set(&stem, f)));
            }
        }
        assert_eq!(origin_of("vw_ban_v4"), None);
        assert_eq!(origin_of("vw_bannet_v6"), None);
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let x = feed_stem("x");
        assert_eq!(origin_set_of(&x, &n("192.0.2.1/32")), "vw_feed_x_v4");
        assert_eq!(origin_set_of(&x, &n("192.0.2.0/24")), "vw_feed_x_net4");
        assert_eq!(origin_set_of(&x, &n("2001:db8::/48")), "vw_feed_x_net6");
    }

    fn n(s: &str) -> IpNet {
        voipwall_policy::parse_net(s).unwrap()
    }

    fn ban(s: &str, exact: bool) -> Placement {
        place(
            Entry::Ban {
                target: n(s),
                exact,
            },
            Prefixes::default(),
        )
    }

    #[test]
    fn a_slash_28_is_an_interval_ban_of_exactly_sixteen_addresses() {
        let p = ban("203.0.113.0/28", false);
        assert_eq!(p.set(), "vw_bannet_v4");
        assert_eq!(p.covers, n("203.0.113.0/28"));
        assert!(
            !p.covers
                .contains(&"203.0.113.100".parse::<IpAddr>().unwrap())
        );
        let p = ban("10.0.0.0/8", false);
        assert_eq!((p.set(), p.covers), ("vw_bannet_v4", n("10.0.0.0/8")));
    }

    #[test]
    fn the_configured_prefix_is_a_prefix_ban_that_spares_known_endpoints() {
        let p = ban("203.0.113.0/24", false);
        assert_eq!(p.set(), "vw_banpfx_v4");
        assert_eq!(p.key, Key::Addr("203.0.113.0".parse().unwrap()));
        assert!(p.spares_known());
        let p = ban("2001:db8:1:2::7", false);
        assert_eq!(
            (p.set(), p.covers),
            ("vw_banpfx_v6", n("2001:db8:1:2::/64"))
        );
        let p = ban("2001:db8:1:2::7", true);
        assert_eq!((p.set(), p.covers), ("vw_ban_v6", n("2001:db8:1:2::7/128")));
        assert_eq!(ban("203.0.113.9", false).set(), "vw_ban_v4");
    }

    #[test]
    fn host_bits_are_cleared_and_names_round_trip() {
        let p = ban("203.0.113.77/28", false);
        assert_eq!(p.covers, n("203.0.113.64/28"));
        for r in Role::ALL {
            for f in [Family::V4, Family::V6] {
                assert_eq!(Role::of(r.set(f)), Some((r, f)));
            }
        }
    }

    #[test]
    fn unban_candidates_include_the_covering_prefix() {
        let c = lift_candidates(n("203.0.113.9"), Prefixes::default());
        let sets: Vec<_> = c.iter().map(Placement::set).collect();
        assert_eq!(sets, ["vw_ban_v4", "vw_banpfx_v4"]);
        let c = lift_candidates(n("203.0.113.0/28"), Prefixes::default());
        let sets: Vec<_> = c.iter().map(Placement::set).collect();
        assert_eq!(sets, ["vw_banpfx_v4", "vw_bannet_v4"]);
    }
}
