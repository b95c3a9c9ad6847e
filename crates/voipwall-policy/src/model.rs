//! The resolved, validated policy: what the compiler consumes. No spans, but
//! every item keeps its [`Provenance`] for nft comments and `explain`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Where an item was written: file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// File name as given to the loader (`policy.toml`, `builtin:services/sip.toml`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The five zones (FreePBX semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// Everything rejected except RTP.
    Reject,
    /// Untrusted public traffic: only the services granted to it.
    Internet,
    /// Trusted external networks (VPN, DMZ, partners).
    Other,
    /// The LAN.
    Local,
    /// Everything accepted. Only networks may be trusted, never interfaces.
    Trusted,
}

impl Zone {
    /// All zones in a stable order.
    pub const ALL: [Self; 5] = [
        Self::Reject,
        Self::Internet,
        Self::Other,
        Self::Local,
        Self::Trusted,
    ];

    /// The lower-case name used in policies and nft chain names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Internet => "internet",
            Self::Other => "other",
            Self::Local => "local",
            Self::Trusted => "trusted",
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Zone {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|z| z.name() == s).ok_or(())
    }
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One port or an inclusive range on one protocol: `udp/5060`, `udp/10000-20000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// Protocol.
    pub proto: Proto,
    /// First port.
    pub lo: u16,
    /// Last port (equal to `lo` for a single port).
    pub hi: u16,
}

impl PortSpec {
    /// Whether `port` on `proto` is covered.
    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        self.proto == proto && self.lo <= port && port <= self.hi
    }

    /// Whether two specs share a port.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.proto == other.proto && self.lo <= other.hi && other.lo <= self.hi
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}/{}", self.proto, self.lo)
        } else {
            write!(f, "{}/{}-{}", self.proto, self.lo, self.hi)
        }
    }
}

/// Parses `tcp/22`, `udp/10000-20000`, `both/5060` (expands to two specs).
pub fn parse_port_specs(s: &str) -> Result<Vec<PortSpec>, String> {
    let (proto, ports) = s
        .split_once('/')
        .ok_or_else(|| "expected `proto/port` or `proto/lo-hi`, e.g. `udp/5060`".to_string())?;
    let protos: &[Proto] = match proto {
        "tcp" => &[Proto::Tcp],
        "udp" => &[Proto::Udp],
        "both" => &[Proto::Tcp, Proto::Udp],
        other => {
            return Err(format!(
                "unknown protocol `{other}`: expected tcp, udp or both"
            ));
        }
    };
    let (lo, hi) = parse_port_range(ports)?;
    Ok(protos
        .iter()
        .map(|&proto| PortSpec { proto, lo, hi })
        .collect())
}

/// Parses `5060` or `10000-20000` into an inclusive range.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("`{p}` is not a port number (1-65535)")),
            Ok(n) => Ok(n),
        }
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(format!("range `{s}` runs backwards"));
    }
    Ok((lo, hi))
}

/// A network as written in a policy: an address or prefix, a name to
/// resolve, or a country or autonomous system to look up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum NetSpec {
    /// A host or CIDR prefix (dotted masks are normalised to a prefix length).
    Net(IpNet),
    /// A hostname or DDNS name, resolved to A and AAAA by the driver.
    Host(String),
    /// Every network a `[geo]` database assigns to a country or an AS.
    Geo(GeoSel),
}

/// Read back from its written form (a generation's stored inputs): geo
/// selectors, then prefixes and addresses, else a name.
impl<'de> Deserialize<'de> for NetSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(g) = GeoSel::parse(&s) {
            return g.map(Self::Geo).map_err(serde::de::Error::custom);
        }
        if let Ok(n) = s.parse::<IpNet>() {
            return Ok(Self::Net(n));
        }
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(Self::Net(IpNet::from(a)));
        }
        Ok(Self::Host(s))
    }
}

impl fmt::Display for NetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net(n) => write!(f, "{}", display_net(n)),
            Self::Host(h) => f.write_str(h),
            Self::Geo(g) => write!(f, "{g}"),
        }
    }
}

/// A geographic selector: `country:ZZ` (ISO 3166-1 alpha-2, upper case) or
/// `asn:64500`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GeoSel {
    /// A country code, two upper-case letters.
    Country(String),
    /// An autonomous system number.
    Asn(u32),
}

impl fmt::Display for GeoSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Country(c) => write!(f, "country:{c}"),
            Self::Asn(n) => write!(f, "asn:{n}"),
        }
    }
}

impl Serialize for GeoSel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl GeoSel {
    /// Parses `country:XX` or `asn:N` (`asn:AS64500` too); `None` when `s`
    /// is neither kind, an error when it is one of them written wrong.
    pub fn parse(s: &str) -> Option<Result<Self, String>> {
        let (kind, value) = s.split_once(':')?;
        match kind.to_ascii_lowercase().as_str() {
            "country" => Some(
                if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Ok(Self::Country(value.to_ascii_uppercase()))
                } else {
                    Err(format!(
                        "`{value}` is not a country code: two letters (ISO 3166-1), e.g. `country:NL`"
                    ))
                },
            ),
            "asn" => {
                let digits = value
                    .strip_prefix("AS")
                    .or_else(|| value.strip_prefix("as"))
                    .unwrap_or(value);
                Some(
                    digits
                        .parse::<u32>()
                        .map(Self::Asn)
                        .map_err(|_| format!("`{value}` is not an AS number, e.g. `asn:64500`")),
                )
            }
            _ => None,
        }
    }
}

/// Where country and AS networks come from (`[geo]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GeoSettings {
    /// A MaxMind/DB-IP country database (mmdb): `country:XX`.
    pub database: Option<String>,
    /// An ASN database (mmdb): `asn:N`.
    pub asn_database: Option<String>,
}

/// Prints a host prefix (/32, /128) as a bare address.
pub fn display_net(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Parses a network: host (`203.0.113.7`, `2001:db8::1`), CIDR
/// (`203.0.113.0/24`), dotted mask (`41.202.0.0/255.255.0.0`) or hostname.
/// Host bits below the prefix are cleared (`10.1.2.3/8` means `10.0.0.0/8`).
pub fn parse_net_spec(s: &str) -> Result<NetSpec, String> {
    if let Some(g) = GeoSel::parse(s) {
        return g.map(NetSpec::Geo);
    }
    let looks_numeric =
        s.contains(':') || s.contains('/') || s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !looks_numeric {
        return if is_hostname(s) {
            Ok(NetSpec::Host(s.to_ascii_lowercase()))
        } else {
            Err("not an IP address, CIDR prefix or hostname".into())
        };
    }
    parse_net(s).map(NetSpec::Net)
}

/// Parses an address or prefix (no hostnames).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Some((addr, mask)) = s.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let len = if let Ok(len) = mask.parse::<u8>() {
            len
        } else if let (IpAddr::V4(_), Ok(IpAddr::V4(m))) = (addr, mask.parse::<IpAddr>()) {
            let bits = u32::from(m);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(format!("netmask `{mask}` is not contiguous"));
            }
            u8::try_from(bits.leading_ones()).expect("at most 32")
        } else {
            return Err(format!("`{mask}` is not a prefix length or dotted netmask"));
        };
        let net = IpNet::new(addr, len).map_err(|_| {
            format!(
                "prefix length /{len} is too long for an IPv{} address",
                if addr.is_ipv4() { 4 } else { 6 }
            )
        })?;
        Ok(net.trunc())
    } else {
        let addr: IpAddr = s
            .parse()
            .map_err(|_| "not an IP address or CIDR prefix".to_string())?;
        Ok(IpNet::from(addr))
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// The longest duration voipwall accepts anywhere (ten years). Bans are
/// kernel set timeouts: one out-of-range element makes the kernel refuse a
/// whole restore batch, so nothing longer ever reaches it; `permanent` is
/// how an operator asks for no end at all.
pub const MAX_DURATION_SECS: u64 = 3650 * 86_400;

/// The one duration grammar of policy files, rule files and the command
/// line: integers with `s`, `m`, `h`, `d` or `w`, joined (`90s`, `1h30m`,
/// `7d`). Zero, fractions of a second, negative and overlong durations are
/// refused with a message that says why. Returns seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!(
            "`{s}` is negative: a duration is e.g. `30s`, `1h30m`, `7d`"
        ));
    }
    let ms = voipwall_detect::time::parse_duration(s).map_err(|_| {
        let unit: String = s
            .chars()
            .skip_while(char::is_ascii_digit)
            .take_while(char::is_ascii_alphabetic)
            .collect();
        let known = ["ms", "s", "m", "h", "d", "w"].contains(&unit.as_str());
        if s.starts_with(|c: char| c.is_ascii_digit()) && !unit.is_empty() && !known {
            format!("unknown duration unit `{unit}`: use s, m, h, d or w (e.g. `1h30m`)")
        } else {
            format!("`{s}` is not a duration: expected e.g. `30s`, `10m`, `1h30m`, `7d`")
        }
    })?;
    if ms == 0 {
        return Err(format!(
            "`{s}` is zero: a duration must be longer than zero"
        ));
    }
    if !ms.is_multiple_of(1000) {
        return Err(format!("`{s}`: durations are whole seconds"));
    }
    let secs = ms / 1000;
    if secs > MAX_DURATION_SECS {
        return Err(format!(
            "`{s}` is too long: at most {}d (use `permanent` for no end)",
            MAX_DURATION_SECS / 86_400
        ));
    }
    Ok(secs)
}

/// A ban or list duration: [`parse_duration`], or `permanent` (`None`).
pub fn parse_ban_duration(s: &str) -> Result<Option<u64>, String> {
    if s.trim().eq_ignore_ascii_case("permanent") {
        return Ok(None);
    }
    parse_duration(s).map(Some)
}

/// Renders seconds the way nft writes timeouts (`1h`, `1d`, `90s`).
pub fn format_duration(secs: u64) -> String {
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// How SIP travels on a service's ports, which says whether voipwall can
/// read it from packet copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SipTransport {
    /// SIP text in UDP datagrams or a TCP stream: read from packet copies.
    #[default]
    Plain,
    /// SIP over plain WebSocket (RFC 7118): read from packet copies
    /// (the HTTP upgrade, then frames).
    Ws,
    /// SIP over TLS: encrypted; detection needs HEP or a PBX log.
    Tls,
    /// SIP over secure WebSocket: encrypted, as TLS.
    Wss,
}

impl SipTransport {
    /// The name used in service files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Ws => "ws",
            Self::Tls => "tls",
            Self::Wss => "wss",
        }
    }
}

/// Where a service's port comes from when the host says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSource {
    /// `Port` lines of `/etc/ssh/sshd_config`.
    SshdConfig,
    /// The ports the PBX binds for this service (`[discover]`).
    Pbx,
}

/// A service: a named set of ports, from the catalog, a preset or the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Short name (`sip`, `iax2`).
    pub name: String,
    /// Human description, written for the dashboard.
    pub description: String,
    /// Ports.
    pub ports: Vec<PortSpec>,
    /// SIP signalling: gets flood guards and NFLOG copies, never the
    /// `ct state established` shortcut.
    pub sip: bool,
    /// How SIP travels on its ports (`plain` unless the file says).
    pub sip_transport: SipTransport,
    /// Ports whose transport differs from `sip_transport`.
    pub sip_transport_of: Vec<(PortSpec, SipTransport)>,
    /// The host may override the ports (the SSH port from sshd_config).
    pub port_from: Option<PortSource>,
    /// Where it was defined.
    pub origin: Provenance,
}

impl Service {
    /// How SIP travels on `port` of this service.
    pub fn transport_of(&self, port: &PortSpec) -> SipTransport {
        self.sip_transport_of
            .iter()
            .find(|(p, _)| p == port)
            .map_or(self.sip_transport, |(_, t)| *t)
    }
}

/// A service granted to a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Service name (a key of [`Policy::services`]).
    pub service: String,
    /// Where the grant was written.
    pub origin: Provenance,
}

/// An interface assigned to a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceZone {
    /// Interface name (`eth0`).
    pub name: String,
    /// Zone.
    pub zone: Zone,
    /// Where it was written.
    pub origin: Provenance,
}

/// A network assigned to a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkZone {
    /// The network.
    pub net: NetSpec,
    /// Zone.
    pub zone: Zone,
    /// Where it was written.
    pub origin: Provenance,
}

/// An allow-list or block-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    /// The network.
    pub net: NetSpec,
    /// Why it is there.
    pub description: String,
    /// Unix seconds after which the entry no longer applies.
    pub expires: Option<i64>,
    /// Where it was written.
    pub origin: Provenance,
}

/// RTP media ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rtp {
    /// UDP ranges.
    pub ranges: Vec<PortSpec>,
    /// Zones that accept RTP (all but trusted-by-default, which accepts everything anyway).
    pub zones: Vec<Zone>,
    /// Where the ranges came from.
    pub origin: Provenance,
    /// Written in the policy's `[rtp]` (discovery does not override it).
    pub from_policy: bool,
}

/// A trunk or peer: a source the PBX expects, allowed to reach exactly the
/// ports of its own component (an IAX peer gets the IAX port, never SIP).
/// Peers skip ban lookups and are never banned by detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Section, gateway or dispatcher set name.
    pub name: String,
    /// Component: `pjsip`, `chan_sip`, `iax2`, `sofia/external`, `kamailio`.
    pub driver: String,
    /// Why it is a peer (`identify match`, `registration`, `gateway`, ...).
    pub role: String,
    /// Address, prefix or hostname.
    pub net: NetSpec,
    /// Also look the name up as SIP SRV records.
    pub srv: bool,
    /// Ports it may reach.
    pub ports: Vec<PortSpec>,
    /// Where the PBX configuration says so.
    pub origin: Provenance,
}

/// How hostnames are resolved and re-resolved (`[dns]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsSettings {
    /// Name servers; empty means those of /etc/resolv.conf.
    pub servers: Vec<IpAddr>,
    /// Never re-resolve sooner than this after an answer, seconds.
    pub min_refresh: u64,
    /// Never later than this, seconds (a long TTL does not hide a move).
    pub max_refresh: u64,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            min_refresh: 10,
            max_refresh: 300,
        }
    }
}

/// A log the daemon follows for detection (`[[source]]`, or a preset's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogSource {
    /// Log format id (`asterisk`, `asterisk-security`, `kamailio`, ... or
    /// one of the policy's `[[detect.logformat]]`).
    pub format: String,
    /// A file to follow (waited for when it does not exist yet).
    pub path: Option<String>,
    /// Or a journald unit (`ssh.service`); `""` for the whole journal.
    pub journal: Option<String>,
    /// SIP transports whose failures it reports (`udp`, `tcp`, `tls`,
    /// `ws`, `wss`): a hint for the coverage check.
    pub transports: Vec<String>,
    /// Where it was written.
    pub origin: Provenance,
}

impl LogSource {
    /// What makes two entries the same source: the format and where.
    pub fn key(&self) -> (String, Option<String>, Option<String>) {
        (self.format.clone(), self.path.clone(), self.journal.clone())
    }
}

/// HEP input (`[hep]`): SIP copies a PBX sends after decrypting TLS or
/// WebSocket (Kamailio siptrace, Asterisk res_hep, FreeSWITCH
/// capture-server, OpenSIPS proto_hep).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HepSettings {
    /// Where to listen, UDP and TCP on each; empty: no HEP input.
    pub listen: Vec<std::net::SocketAddr>,
    /// Who may send: HEP names the source of the SIP it carries, so a
    /// sender not listed could forge evidence against anyone.
    pub senders: Vec<IpNet>,
}

/// The drop log (`[drops]`): samples of what the firewall refused, taken
/// in the kernel (a token bucket per zone and per ban/block set) and copied
/// to the daemon over NFLOG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DropLogSettings {
    /// On (the default) or off.
    pub log: bool,
    /// Samples per second per zone and per ban/block set.
    pub rate: u32,
    /// The NFLOG group the samples go to (not the SIP copies' group).
    pub nflog_group: u16,
}

impl Default for DropLogSettings {
    fn default() -> Self {
        Self {
            log: true,
            rate: 20,
            nflog_group: 6,
        }
    }
}

impl DropLogSettings {
    /// The group samples go to, when the drop log is on.
    pub fn group(&self) -> Option<u16> {
        self.log.then_some(self.nflog_group)
    }
}

/// CrowdSec's Local API (`[crowdsec]`): voipwall as a bouncer (its
/// decisions into voipwall's kernel sets, one origin set per decision
/// origin) and as a watcher (voipwall's own bans posted as alerts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrowdsecSettings {
    /// The LAPI's URL (`http://127.0.0.1:8080`).
    pub lapi_url: String,
    /// The bouncer's API key (a file): the bouncer runs when it is set.
    pub bouncer_key_file: Option<String>,
    /// Seconds between decision pulls (default 10).
    pub update_frequency: u64,
    /// Seconds between full resyncs (`startup=true`, every timeout
    /// re-asserted; default 600).
    pub resync: u64,
    /// The watcher's machine id: the watcher runs when it and the
    /// password file are set.
    pub machine_id: Option<String>,
    /// The watcher's password (a file).
    pub machine_password_file: Option<String>,
    /// Where it was written.
    pub origin: Provenance,
}

/// A Redis Streams fleet (`[fleet]`): each node adds its bans to its own
/// stream and applies the other nodes' to its `fleet` sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetSettings {
    /// `redis://HOST:PORT` or `rediss://HOST:PORT` (TLS).
    pub redis: String,
    /// This node's name (its stream is `<stream>:<node>`).
    pub node: String,
    /// The Redis ACL user (default: the node's name).
    pub user: String,
    /// Its password (a file).
    pub password_file: String,
    /// The streams' prefix (default `voipwall:bans`); the central allow
    /// list is the set `<stream>:allow`.
    pub stream: String,
    /// The other nodes, whose streams this node reads.
    pub nodes: Vec<String>,
    /// This node trims every stream (its ACL user may `XTRIM` them all).
    pub trim: bool,
    /// Records older than this are trimmed (seconds, default 7 days).
    pub keep: u64,
    /// The most bans one node may send in a minute; above it, its records
    /// are reported, not obeyed (default 600).
    pub max_per_minute: u32,
    /// The most bans of one node held at once (default 100,000).
    pub max_active: u32,
    /// Where it was written.
    pub origin: Provenance,
}

/// The decision origins the bouncer keeps apart, each in its own sets
/// (`vw_cs_<origin>_*`); any other origin goes to `other`.
pub const CROWDSEC_ORIGINS: [&str; 5] = ["crowdsec", "cscli", "capi", "lists", "other"];

/// Where a feed's list comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedSource {
    /// Fetched over HTTP(S).
    Url(String),
    /// Read from a file (absolute path).
    Path(String),
}

/// One `[[feed]]`: a blocklist kept in its own kernel sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedSettings {
    /// Its name (`vw_feed_<name>_v4`, the origin `feed:<name>`).
    pub name: String,
    /// The body's format.
    pub format: crate::feed::FeedFormat,
    /// Where the list comes from.
    pub source: FeedSource,
    /// The API key's file (APIBAN).
    pub key_file: Option<String>,
    /// Seconds between refreshes.
    pub interval: u64,
    /// Seconds one fetch may take, connecting included (default 60).
    pub timeout: u64,
    /// Where it was written.
    pub origin: Provenance,
}

/// What a notification is about.
pub const NOTIFY_EVENTS: [&str; 6] = [
    "ban_storm",
    "protected",
    "apply",
    "safe_mode",
    "started",
    "shield",
];

/// Where a `[[notify]]` entry sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NotifyTarget {
    /// A JSON POST signed with HMAC-SHA256.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// The signing key's file (absolute path).
        secret_file: String,
    },
    /// E-mail over SMTP.
    Email {
        /// `host:port` of the SMTP server.
        server: String,
        /// `starttls` (default), `tls` or `none`.
        tls: String,
        /// Sender address.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// SMTP user, when the server wants a login.
        username: Option<String>,
        /// Its password's file (absolute path).
        password_file: Option<String>,
    },
}

/// One `[[notify]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifySettings {
    /// Where it goes.
    pub target: NotifyTarget,
    /// Which of [`NOTIFY_EVENTS`] it gets (all unless the entry says).
    pub events: Vec<String>,
    /// Bans per minute that make a ban storm.
    pub ban_storm: u32,
    /// Where it was written.
    pub origin: Provenance,
}

/// The HTTP API (`[api]`): off unless it names where to listen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApiSettings {
    /// Addresses and ports; empty: no API.
    pub listen: Vec<std::net::SocketAddr>,
    /// Plain HTTP on a non-loopback address, spelled out.
    pub insecure_http: bool,
    /// HTTPS: the certificate chain (PEM file); every listener serves TLS.
    pub tls_cert: Option<String>,
    /// Its private key (PEM file, read once at start).
    pub tls_key: Option<String>,
}

/// Where discovery reads the PBX configuration (`[discover]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoverSettings {
    /// Read the PBX at all (default on).
    pub enabled: bool,
    /// Asterisk configuration directory; `None` skips Asterisk.
    pub asterisk: Option<String>,
    /// FreeSWITCH configuration directory.
    pub freeswitch: Option<String>,
    /// Kamailio configuration directory.
    pub kamailio: Option<String>,
    /// sshd configuration file.
    pub sshd_config: Option<String>,
    /// Turn trunks and peers into allow rules (default on).
    pub peers: bool,
    /// Take the services' ports and the RTP range from the PBX (default on).
    pub ports: bool,
    /// Where the section was written.
    pub origin: Provenance,
}

impl Default for DiscoverSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            asterisk: Some("/etc/asterisk".into()),
            freeswitch: Some("/etc/freeswitch".into()),
            kamailio: Some("/etc/kamailio".into()),
            sshd_config: Some("/etc/ssh/sshd_config".into()),
            peers: true,
            ports: true,
            origin: Provenance::default(),
        }
    }
}

/// SIP-specific kernel settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SipSettings {
    /// NFLOG group the ruleset copies SIP packets to; `None` disables copies.
    pub nflog_group: Option<u16>,
    /// Level 1: packets per second per source above which excess SIP packets are dropped.
    pub flood_level1_pps: u32,
    /// Level 2: packets per second per source above which the source is banned.
    pub flood_level2_pps: u32,
    /// Ban time for a level-2 flood, seconds.
    pub flood_ban: u64,
    /// Responsive mode: SIP open to unknown sources, which get a tight
    /// per-source rate; registered endpoints (`vw_known_*`) are exempt.
    pub responsive: bool,
    /// Responsive mode: packets per second per unknown source above which
    /// the source is banned from the kernel (for `flood_ban`).
    pub unknown_pps: u32,
    /// UDP SIP packets per second, all sources together, that are not from
    /// a registered endpoint, a management network, an allow entry, a
    /// peer or a trusted/local/other network; beyond it the excess is
    /// dropped, so a flood from many spoofed sources (each under the
    /// per-source limits) cannot starve the phones. 0: no aggregate limit.
    pub aggregate_pps: u32,
    /// Where the settings came from.
    pub origin: Provenance,
}

/// Ban-set settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BanSettings {
    /// Ban time when none is given, seconds.
    pub default_ttl: u64,
    /// Prefix length for IPv4 prefix bans.
    pub ipv4_prefix: u8,
    /// Prefix length for IPv6 prefix bans (default /64).
    pub ipv6_prefix: u8,
}

/// Safe mode (FreePBX semantics): after two boots within `window`, the
/// policy is held back for the first `hold` of uptime, so a ruleset that
/// locked the operator out can be escaped by rebooting twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SafeMode {
    /// On (the default) or off.
    pub enabled: bool,
    /// Two boots closer than this trigger it, seconds.
    pub window: u64,
    /// How long the policy is held back, seconds of uptime.
    pub hold: u64,
}

impl Default for SafeMode {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 300,
            hold: 300,
        }
    }
}

/// Facts about the host that the policy is validated against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Host {
    /// The host's own addresses: never blocked or banned.
    pub addresses: Vec<IpAddr>,
    /// Management networks: never blocked or banned.
    pub management: Vec<IpNet>,
}

/// What voipwall's table decides (`[filter] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterMode {
    /// voipwall's input chain decides what passes (zones, services,
    /// default deny).
    #[default]
    Full,
    /// Another firewall (ufw, firewalld, FreePBX's, a cloud security group)
    /// decides what passes; voipwall's table holds the ban, block and allow
    /// sets, the flood guards and the packet copies, and no default deny.
    BansOnly,
}

/// `[filter]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Filter {
    /// Full or bans-only.
    pub mode: FilterMode,
    /// In bans-only mode, the SIP services the PBX offers (their ports get
    /// packet copies and flood guards; nothing is opened): `["sip"]`
    /// unless set.
    pub sip: Vec<String>,
}

/// The validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Preset it builds on.
    pub preset: Option<String>,
    /// What the table decides (`[filter]`).
    pub filter: Filter,
    /// Zone of traffic that arrives on an interface with no zone.
    pub default_zone: Zone,
    /// Interfaces, sorted by name.
    pub interfaces: Vec<InterfaceZone>,
    /// Networks in the order written.
    pub networks: Vec<NetworkZone>,
    /// Services granted per zone.
    pub grants: BTreeMap<Zone, Vec<Grant>>,
    /// Every service referenced by a grant, by name.
    pub services: BTreeMap<String, Service>,
    /// RTP.
    pub rtp: Rtp,
    /// SIP kernel guards.
    pub sip: SipSettings,
    /// Ban settings.
    pub bans: BanSettings,
    /// Allow list: never banned, skips ban lookups.
    pub allow: Vec<ListEntry>,
    /// Block list: dropped before conntrack.
    pub block: Vec<ListEntry>,
    /// Own addresses and management networks.
    pub host: Host,
    /// Detection settings (`[detect]`).
    pub detect: crate::detect::DetectSettings,
    /// Safe mode at boot (`[safe_mode]`).
    pub safe_mode: SafeMode,
    /// Where to read the PBX (`[discover]`).
    pub discover: DiscoverSettings,
    /// Trunks and peers, filled in from discovery by the driver.
    pub peers: Vec<Peer>,
    /// Name resolution (`[dns]`).
    pub dns: DnsSettings,
    /// HEP input (`[hep]`).
    pub hep: HepSettings,
    /// The HTTP API (`[api]`).
    pub api: ApiSettings,
    /// The drop log (`[drops]`).
    pub drops: DropLogSettings,
    /// Notifications (`[[notify]]`).
    pub notify: Vec<NotifySettings>,
    /// Blocklist feeds (`[[feed]]`).
    pub feeds: Vec<FeedSettings>,
    /// CrowdSec's Local API (`[crowdsec]`).
    pub crowdsec: Option<CrowdsecSettings>,
    /// A Redis Streams fleet (`[fleet]`).
    pub fleet: Option<FleetSettings>,
    /// Country and AS databases (`[geo]`).
    pub geo: GeoSettings,
    /// Call rules (`[call]`).
    pub call: crate::call::CallSettings,
    /// Logs the daemon follows: the preset's, then the policy's
    /// `[[source]]` (same format and place: the policy's wins;
    /// `enabled = false` drops one).
    pub sources: Vec<LogSource>,
}

impl Policy {
    /// Every hostname the policy mentions (networks, allow, block), sorted and
    /// deduplicated, for the driver to resolve.
    pub fn hostnames(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .networks
            .iter()
            .map(|n| &n.net)
            .chain(self.allow.iter().map(|e| &e.net))
            .chain(self.block.iter().map(|e| &e.net))
            .chain(self.peers.iter().map(|p| &p.net))
            .filter_map(|n| match n {
                NetSpec::Host(h) => Some(h.clone()),
                NetSpec::Net(_) | NetSpec::Geo(_) => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every country and AS the policy mentions (networks, allow, block),
    /// sorted and deduplicated, for the driver to look up.
    pub fn geo_selectors(&self) -> Vec<GeoSel> {
        let mut out: Vec<GeoSel> = self
            .networks
            .iter()
            .map(|n| &n.net)
            .chain(self.allow.iter().map(|e| &e.net))
            .chain(self.block.iter().map(|e| &e.net))
            .filter_map(|n| match n {
                NetSpec::Geo(g) => Some(g.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// All SIP signalling ports granted in any zone.
    pub fn sip_ports(&self) -> Vec<PortSpec> {
        self.sip_ports_where(|_| true)
    }

    /// The SIP ports whose packets voipwall can read (transports `plain`
    /// and `ws`).
    pub fn sip_readable_ports(&self) -> Vec<PortSpec> {
        self.sip_ports_where(|t| matches!(t, SipTransport::Plain | SipTransport::Ws))
    }

    /// The TCP port ranges (inclusive) where SIP travels over plain
    /// WebSocket: what the packet path reads as WebSocket.
    pub fn sip_websocket_ports(&self) -> Vec<(u16, u16)> {
        self.sip_ports_where(|t| t == SipTransport::Ws)
            .iter()
            .filter(|p| p.proto == Proto::Tcp)
            .map(|p| (p.lo, p.hi))
            .collect()
    }

    /// Granted SIP ports that packet copies cannot read (TLS, secure WebSocket),
    /// each with its service and transport: detection sees them only
    /// through HEP or a PBX log.
    pub fn sip_unreadable_ports(&self) -> Vec<(PortSpec, &str, SipTransport)> {
        let mut out: Vec<(PortSpec, &str, SipTransport)> = self
            .granted_sip()
            .flat_map(|s| {
                s.ports
                    .iter()
                    .map(move |p| (*p, s.name.as_str(), s.transport_of(p)))
            })
            .filter(|(_, _, t)| matches!(t, SipTransport::Tls | SipTransport::Wss))
            .collect();
        out.sort_by_key(|(p, n, _)| (*p, n.to_string()));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// The SIP services granted in a zone, or in bans-only mode those
    /// `[filter] sip` names (which open nothing).
    fn granted_sip(&self) -> impl Iterator<Item = &Service> {
        self.grants
            .values()
            .flatten()
            .map(|g| &g.service)
            .chain(&self.filter.sip)
            .filter_map(|name| self.services.get(name))
            .filter(|s| s.sip)
    }

    /// Whether another firewall decides what passes (`[filter] mode =
    /// "bans-only"`).
    pub fn bans_only(&self) -> bool {
        self.filter.mode == FilterMode::BansOnly
    }

    fn sip_ports_where(&self, keep: impl Fn(SipTransport) -> bool) -> Vec<PortSpec> {
        let mut out: Vec<PortSpec> = self
            .granted_sip()
            .flat_map(|s| s.ports.iter().filter(|p| keep(s.transport_of(p))).copied())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets() {
        assert_eq!(
            parse_net_spec("41.202.0.0/255.255.0.0").unwrap(),
            NetSpec::Net("41.202.0.0/16".parse().unwrap())
        );
        assert_eq!(
            parse_net_spec("10.1.2.3/8").unwrap(),
            NetSpec::Net("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_net_spec("2001:db8::1").unwrap(),
            NetSpec::Net("2001:db8::1/128".parse().unwrap())
        );
        assert_eq!(
            parse_net_spec("Trunk.Example.NET").unwrap(),
            NetSpec::Host("trunk.example.net".into())
        );
        assert!(parse_net_spec("192.168.1.300/24").is_err());
        assert!(parse_net_spec("10.0.0.0/255.0.255.0").is_err());
        assert!(parse_net_spec("10.0.0.0/33").is_err());
        assert!(parse_net_spec("1.2.3").is_err());
        assert!(parse_net_spec("bad host!").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(
            parse_port_specs("both/5060").unwrap().len(),
            2,
            "both expands to tcp and udp"
        );
        assert_eq!(
            parse_port_specs("udp/10000-20000").unwrap()[0],
            PortSpec {
                proto: Proto::Udp,
                lo: 10000,
                hi: 20000
            }
        );
        assert!(parse_port_specs("udp/0").is_err());
        assert!(parse_port_specs("udp/20-10").is_err());
        assert!(parse_port_specs("sctp/1").is_err());
        assert!(parse_port_specs("5060").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), 3600);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(format_duration(86400), "1d");
        assert_eq!(format_duration(90), "90s");
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(parse_duration("-5m").unwrap_err().contains("negative"));
        assert!(parse_duration("100000w").unwrap_err().contains("too long"));
        assert!(parse_duration("18446744073709552s").is_err());
        assert!(parse_duration("500ms").is_err());
        assert_eq!(parse_ban_duration("permanent").unwrap(), None);
        assert_eq!(parse_ban_duration("2h").unwrap(), Some(7200));
    }
}
