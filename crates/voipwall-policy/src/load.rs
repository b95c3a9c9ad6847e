//! Policy loading: every file (main plus includes) is walked, every problem is
//! collected with its location, and only a policy without errors resolves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;
use toml::de::DeTable;

use crate::catalog::{Catalog, rtp_ranges, service_from, source_from};
use crate::diag::{Diagnostic, FileId, Severity, SourceMap, did_you_mean};
use crate::model::*;
use crate::walk::{Table, Walker, get};

/// What the driver knows about the host, passed into the pure loader.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Addresses configured on the host's interfaces (never blocked).
    pub addresses: Vec<IpAddr>,
    /// Log format ids the driver knows (built-in formats); a `[[source]]`
    /// naming another one (and no `[[detect.logformat]]` of the policy) is
    /// an error. Empty: not checked.
    pub log_formats: Vec<String>,
    /// Ports sshd listens on, from sshd_config (`None` when unknown).
    pub sshd_ports: Option<Vec<u16>>,
}

/// Result of [`load`]: the policy when there were no errors, and every diagnostic.
#[derive(Debug)]
pub struct Loaded {
    /// The policy, when no error was found.
    pub policy: Option<Policy>,
    /// Errors and warnings, sorted by location.
    pub diagnostics: Vec<Diagnostic>,
    /// The text of every file, for rendering diagnostics.
    pub sources: SourceMap,
}

impl Loaded {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

const TOP_KEYS: &[&str] = &[
    "preset",
    "include",
    "default_zone",
    "host",
    "interfaces",
    "networks",
    "zones",
    "services",
    "rtp",
    "sip",
    "bans",
    "allow",
    "block",
    "detect",
    "safe_mode",
    "discover",
    "dns",
    "hep",
    "api",
    "drops",
    "notify",
    "feed",
    "crowdsec",
    "fleet",
    "geo",
    "call",
    "source",
    "filter",
];

/// How deep includes may nest, and how many files one policy may have.
const MAX_INCLUDE_DEPTH: usize = 8;
const MAX_INCLUDED_FILES: usize = 64;

/// A place in a file.
type Located = (FileId, Range<usize>);

/// A value plus where it was written.
#[derive(Debug, Clone)]
struct At<T> {
    v: T,
    file: FileId,
    span: Range<usize>,
}

/// Everything read from all files, before resolution.
#[derive(Default)]
struct Raw {
    /// `[api] listen` entries not on loopback (where no zone grants the
    /// `voipwall-api` service, nobody can reach them).
    api_open: Vec<At<String>>,
    preset: Option<At<String>>,
    /// `[filter] mode` and `sip`.
    filter_mode: Option<At<FilterMode>>,
    filter_sip: Option<Vec<At<String>>>,
    default_zone: Option<At<String>>,
    host_addresses: Vec<At<String>>,
    /// `[host] firewall_off_for_everyone`: the named opt-in a policy needs
    /// to trust or allow every address (`0.0.0.0/0`, `::/0`).
    everyone: bool,
    management: Vec<At<String>>,
    interfaces: Vec<(At<String>, At<String>)>,
    networks: Vec<(At<String>, At<String>)>,
    zones: BTreeMap<Zone, Vec<At<String>>>,
    services: BTreeMap<String, (Service, FileId, Range<usize>)>,
    rtp: Option<(Vec<PortSpec>, FileId, Range<usize>)>,
    rtp_zones: Option<Vec<At<String>>>,
    nflog_group: Option<Option<u16>>,
    flood_l1: Option<At<u32>>,
    flood_l2: Option<At<u32>>,
    flood_ban: Option<u64>,
    responsive: Option<bool>,
    unknown_pps: Option<At<u32>>,
    aggregate_pps: Option<u32>,
    sip_at: Option<(FileId, Range<usize>)>,
    default_ttl: Option<u64>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
    allow: Vec<(At<String>, String, Option<i64>)>,
    block: Vec<(At<String>, String, Option<i64>)>,
    detect: crate::detect::RawDetect,
    safe_mode: SafeMode,
    discover: DiscoverSettings,
    dns: DnsSettings,
    hep: HepSettings,
    api: ApiSettings,
    drops: DropLogSettings,
    notify: Vec<NotifySettings>,
    feeds: Vec<FeedSettings>,
    crowdsec: Option<CrowdsecSettings>,
    fleet: Option<FleetSettings>,
    geo: GeoSettings,
    call: crate::call::CallSettings,
    /// Every `[[feed]] name` seen (also of feeds with errors).
    feed_names: Vec<String>,
    drops_group_at: Option<At<u16>>,
    /// Where each `[hep] senders` entry was written.
    hep_sender_at: Vec<(IpNet, At<String>)>,
    /// `[[source]]` entries: the source, whether enabled, where written.
    sources: Vec<(LogSource, bool, At<()>)>,
    /// Once-only sections already seen, for duplicate detection across includes.
    seen: BTreeMap<&'static str, (FileId, Range<usize>)>,
}

/// Loads `main` and its includes through `read` (the only I/O, supplied by
/// the caller), validates against the catalog and host facts, and resolves.
///
/// ```
/// use voipwall_policy::{Catalog, DataFile, HostFacts, SourceMap, load};
/// let mut sm = SourceMap::default();
/// let (catalog, _) = Catalog::load(&DataFile::builtin(), &mut sm);
/// let text = "[interfaces]\neth0 = \"internet\"\n[zones.internet]\nservices = [\"sip\"]\n";
/// let loaded = load("policy.toml", &mut |_| Ok(text.to_string()), &catalog, &HostFacts::default());
/// assert!(loaded.diagnostics.is_empty());
/// assert_eq!(loaded.policy.unwrap().sip_ports().len(), 2);
/// ```
pub fn load(
    main: &str,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
    catalog: &Catalog,
    facts: &HostFacts,
) -> Loaded {
    let mut sources = SourceMap::default();
    let mut diags = Vec::new();
    let mut raw = Raw::default();
    // Files still to read, each with the `include` that named it and its depth.
    let mut queue: Vec<(String, Option<Located>, usize)> = vec![(main.to_string(), None, 0)];
    let mut visited = BTreeSet::new();
    while let Some((path, from, depth)) = queue.pop() {
        // A file that includes `dir/itself` names a new, longer path every
        // time (dir/dir/itself, ...): the visited set alone never stops it.
        if let (Some((f, span)), true) = (
            &from,
            depth > MAX_INCLUDE_DEPTH || visited.len() >= MAX_INCLUDED_FILES,
        ) {
            diags.push(
                Diagnostic::error(
                    *f,
                    span.clone(),
                    format!("too many nested includes (at most {MAX_INCLUDE_DEPTH} levels and {MAX_INCLUDED_FILES} files)"),
                )
                .label("not loaded")
                .help("an include that names a directory relative to its own file can loop"),
            );
            break;
        }
        if !visited.insert(path.clone()) {
            if let Some((f, span)) = from {
                diags.push(
                    Diagnostic::error(
                        f,
                        span,
                        format!("`{path}` is included twice (or in a cycle)"),
                    )
                    .label("already loaded"),
                );
            }
            continue;
        }
        let text = match read(&path) {
            Ok(t) => t,
            Err(e) => {
                match from {
                    Some((f, span)) => diags.push(
                        Diagnostic::error(
                            f,
                            span,
                            format!("cannot read included file `{path}`: {e}"),
                        )
                        .label("included here"),
                    ),
                    None => {
                        let id = sources.add(path.clone(), String::new());
                        diags.push(Diagnostic::error(
                            id,
                            0..0,
                            format!("cannot read policy `{path}`: {e}"),
                        ));
                    }
                }
                continue;
            }
        };
        let id = sources.add(path.clone(), text);
        let text = sources.text(id).to_string();
        // Big allow/block lists are read from the text directly; should the
        // rest not parse, the whole file goes through the parser as it is,
        // so its errors are exactly the parser's.
        let (blank, mut lifted) = match crate::lists::lift(&text) {
            Some((b, l)) => (Some(b), l),
            None => (None, Vec::new()),
        };
        let fast = blank.as_deref().and_then(|blank| {
            let (doc, errs) = DeTable::parse_recoverable(blank);
            errs.is_empty().then_some(doc)
        });
        let (doc, errs) = match fast {
            Some(doc) => (doc, Vec::new()),
            None => {
                lifted.clear();
                DeTable::parse_recoverable(&text)
            }
        };
        for e in errs {
            diags.push(
                Diagnostic::error(id, e.span().unwrap_or(0..0), e.message().trim().to_string())
                    .label("invalid TOML"),
            );
        }
        let mut w = Walker {
            file: id,
            diags: &mut diags,
        };
        let (allow_before, block_before) = (raw.allow.len(), raw.block.len());
        let includes = read_file(&mut w, doc.get_ref(), &mut raw, &sources, &path);
        if !lifted.is_empty() {
            for e in lifted {
                let entry = (
                    At {
                        v: e.address,
                        file: id,
                        span: e.span,
                    },
                    e.description,
                    None,
                );
                if e.block {
                    raw.block.push(entry);
                } else {
                    raw.allow.push(entry);
                }
            }
            // In the file's order, as the parser would have given them.
            raw.allow[allow_before..].sort_by_key(|(a, _, _)| a.span.start);
            raw.block[block_before..].sort_by_key(|(a, _, _)| a.span.start);
        }
        for (inc, span) in includes.into_iter().rev() {
            queue.push((resolve_path(&path, &inc), Some((id, span)), depth + 1));
        }
    }
    let policy = resolve(&raw, catalog, facts, &sources, &mut diags);
    diags.sort_by_key(|d| (d.file, d.span.start, d.severity));
    let has_errors = diags.iter().any(|d| d.severity == Severity::Error);
    Loaded {
        policy: if has_errors { None } else { policy },
        diagnostics: diags,
        sources,
    }
}

/// Include paths are relative to the including file.
fn resolve_path(from: &str, inc: &str) -> String {
    if inc.starts_with('/') {
        return inc.to_string();
    }
    match from.rfind('/') {
        Some(i) => format!("{}/{inc}", &from[..i]),
        None => inc.to_string(),
    }
}

fn at<T>(w: &Walker<'_>, v: T, span: Range<usize>) -> At<T> {
    At {
        v,
        file: w.file,
        span,
    }
}

/// Records a once-only section; a second definition (in another file) is an error.
fn once(
    w: &mut Walker<'_>,
    raw: &mut Raw,
    key: &'static str,
    span: Range<usize>,
    sources: &SourceMap,
) -> bool {
    if let Some((f, s)) = raw.seen.get(key) {
        let (line, col) = sources.line_col(*f, s.start);
        w.push(
            Diagnostic::error(w.file, span, format!("`{key}` is defined twice"))
                .label("second definition")
                .help(format!(
                    "first defined at {}:{line}:{col}",
                    sources.name(*f)
                )),
        );
        return false;
    }
    raw.seen.insert(key, (w.file, span));
    true
}

fn read_file(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    raw: &mut Raw,
    sources: &SourceMap,
    path: &str,
) -> Vec<(String, Range<usize>)> {
    w.check_keys(t, TOP_KEYS, "the policy");
    let mut includes = Vec::new();
    for (k, v) in t.iter() {
        let key: &str = k.get_ref();
        match key {
            "include" => includes = w.str_list(v, "include"),
            "preset" if once(w, raw, "preset", k.span(), sources) => {
                raw.preset = w.str(v, "preset").map(|s| at(w, s.to_string(), v.span()));
            }
            "default_zone" if once(w, raw, "default_zone", k.span(), sources) => {
                raw.default_zone = w
                    .str(v, "default_zone")
                    .map(|s| at(w, s.to_string(), v.span()));
            }
            "host" => {
                let Some(h) = w.table(v, "[host]") else {
                    continue;
                };
                w.check_keys(
                    h,
                    &["addresses", "management", "firewall_off_for_everyone"],
                    "[host]",
                );
                if let Some(v) = get(h, "firewall_off_for_everyone") {
                    raw.everyone = w.bool(v, "firewall_off_for_everyone").unwrap_or(false);
                }
                if let Some(v) = get(h, "addresses") {
                    for (s, span) in w.str_list(v, "host addresses") {
                        raw.host_addresses.push(at(w, s, span));
                    }
                }
                if let Some(v) = get(h, "management") {
                    for (s, span) in w.str_list(v, "management networks") {
                        raw.management.push(at(w, s, span));
                    }
                }
            }
            "interfaces" | "networks" => {
                let Some(m) = w.table(v, key) else { continue };
                for (name, zone) in m.iter() {
                    let Some(z) = w.str(zone, &format!("the zone of `{}`", name.get_ref())) else {
                        continue;
                    };
                    let entry = (
                        at(w, name.get_ref().to_string(), name.span()),
                        at(w, z.to_string(), zone.span()),
                    );
                    if key == "interfaces" {
                        raw.interfaces.push(entry);
                    } else {
                        raw.networks.push(entry);
                    }
                }
            }
            "zones" => {
                let Some(m) = w.table(v, "[zones]") else {
                    continue;
                };
                for (zk, zv) in m.iter() {
                    let Ok(zone) = zk.get_ref().parse::<Zone>() else {
                        let mut d = Diagnostic::error(
                            w.file,
                            zk.span(),
                            format!("unknown zone `{}`", zk.get_ref()),
                        )
                        .label("not a zone");
                        if let Some(s) = did_you_mean(zk.get_ref(), Zone::ALL.map(Zone::name)) {
                            d = d.help(format!("did you mean `{s}`?"));
                        } else {
                            d = d.help("zones are reject, internet, other, local, trusted");
                        }
                        w.push(d);
                        continue;
                    };
                    let Some(zt) = w.table(zv, "a zone") else {
                        continue;
                    };
                    w.check_keys(zt, &["services"], &format!("[zones.{zone}]"));
                    if let Some(sv) = get(zt, "services") {
                        let list: Vec<At<String>> = w
                            .str_list(sv, "services")
                            .into_iter()
                            .map(|(s, sp)| at(w, s, sp))
                            .collect();
                        raw.zones.entry(zone).or_default().extend(list);
                    }
                }
            }
            "services" => {
                let Some(m) = w.table(v, "[services]") else {
                    continue;
                };
                for (name, sv) in m.iter() {
                    let Some(st) = w.table(sv, "a service") else {
                        continue;
                    };
                    if get(st, "ports").is_none() {
                        w.push(
                            Diagnostic::error(
                                w.file,
                                name.span(),
                                format!("service `{}` has no ports", name.get_ref()),
                            )
                            .label("add ports = [\"tcp/1234\"]"),
                        );
                    }
                    let origin = Provenance {
                        file: path.to_string(),
                        line: sources.line_col(w.file, name.span().start).0,
                    };
                    if let Some(mut s) = service_from(w, st, &origin, None) {
                        s.name = name.get_ref().to_string();
                        if raw.services.contains_key(&s.name) {
                            w.error(
                                name.span(),
                                format!("service `{}` is defined twice", s.name),
                                "second definition",
                            );
                        } else {
                            raw.services
                                .insert(s.name.clone(), (s, w.file, name.span()));
                        }
                    }
                }
            }
            "rtp" => {
                let Some(r) = w.table(v, "[rtp]") else {
                    continue;
                };
                if !once(w, raw, "rtp", k.span(), sources) {
                    continue;
                }
                w.check_keys(r, &["ranges", "zones"], "[rtp]");
                if let Some(rv) = get(r, "ranges") {
                    raw.rtp = Some((rtp_ranges(w, rv), w.file, rv.span()));
                }
                if let Some(zv) = get(r, "zones") {
                    raw.rtp_zones = Some(
                        w.str_list(zv, "rtp zones")
                            .into_iter()
                            .map(|(s, sp)| at(w, s, sp))
                            .collect(),
                    );
                }
            }
            "sip" => {
                let Some(s) = w.table(v, "[sip]") else {
                    continue;
                };
                if !once(w, raw, "sip", k.span(), sources) {
                    continue;
                }
                raw.sip_at = Some((w.file, k.span()));
                w.check_keys(
                    s,
                    &[
                        "nflog_group",
                        "flood_level1_pps",
                        "flood_level2_pps",
                        "flood_ban",
                        "responsive",
                        "unknown_pps",
                        "aggregate_pps",
                    ],
                    "[sip]",
                );
                if let Some(v) = get(s, "aggregate_pps") {
                    raw.aggregate_pps = w
                        .int(v, "aggregate_pps", 0, 1_000_000)
                        .map(|n| u32::try_from(n).expect("range checked"));
                }
                if let Some(v) = get(s, "responsive") {
                    raw.responsive = w.bool(v, "responsive");
                }
                if let Some(v) = get(s, "unknown_pps") {
                    raw.unknown_pps = w
                        .int(v, "unknown_pps", 1, 100_000)
                        .map(|n| at(w, u32::try_from(n).expect("range checked"), v.span()));
                }
                if let Some(v) = get(s, "nflog_group") {
                    raw.nflog_group = Some(if v.get_ref().as_bool() == Some(false) {
                        None
                    } else {
                        w.int(v, "nflog_group", 0, 65535)
                            .map(|n| u16::try_from(n).expect("range checked"))
                    });
                }
                for (key, slot) in [
                    ("flood_level1_pps", &mut raw.flood_l1),
                    ("flood_level2_pps", &mut raw.flood_l2),
                ] {
                    if let Some(v) = get(s, key) {
                        *slot = w
                            .int(v, key, 1, 10_000_000)
                            .map(|n| at(w, u32::try_from(n).expect("range checked"), v.span()));
                    }
                }
                if let Some(v) = get(s, "flood_ban") {
                    raw.flood_ban = duration(w, v, "flood_ban");
                }
            }
            "bans" => {
                let Some(b) = w.table(v, "[bans]") else {
                    continue;
                };
                if !once(w, raw, "bans", k.span(), sources) {
                    continue;
                }
                w.check_keys(b, &["default_ttl", "ipv4_prefix", "ipv6_prefix"], "[bans]");
                if let Some(v) = get(b, "default_ttl") {
                    raw.default_ttl = duration(w, v, "default_ttl");
                }
                if let Some(v) = get(b, "ipv4_prefix") {
                    raw.ipv4_prefix = w
                        .int(v, "ipv4_prefix", 8, 32)
                        .map(|n| u8::try_from(n).expect("range checked"));
                }
                if let Some(v) = get(b, "ipv6_prefix") {
                    raw.ipv6_prefix = w
                        .int(v, "ipv6_prefix", 16, 128)
                        .map(|n| u8::try_from(n).expect("range checked"));
                }
            }
            "safe_mode" => {
                let Some(t) = w.table(v, "[safe_mode]") else {
                    continue;
                };
                if !once(w, raw, "safe_mode", k.span(), sources) {
                    continue;
                }
                w.check_keys(t, &["enabled", "window", "hold"], "[safe_mode]");
                if let Some(v) = get(t, "enabled")
                    && let Some(b) = w.bool(v, "enabled")
                {
                    raw.safe_mode.enabled = b;
                }
                if let Some(v) = get(t, "window")
                    && let Some(d) = duration(w, v, "window")
                {
                    raw.safe_mode.window = d;
                }
                if let Some(v) = get(t, "hold")
                    && let Some(d) = duration(w, v, "hold")
                {
                    raw.safe_mode.hold = d;
                }
            }
            "dns" => {
                let Some(t) = w.table(v, "[dns]") else {
                    continue;
                };
                if !once(w, raw, "dns", k.span(), sources) {
                    continue;
                }
                w.check_keys(t, &["servers", "min_refresh", "max_refresh"], "[dns]");
                if let Some(v) = get(t, "servers") {
                    for (sv, span) in w.str_list(v, "servers") {
                        match sv.parse::<IpAddr>() {
                            Ok(a) => raw.dns.servers.push(a),
                            Err(_) => w.error(
                                span,
                                format!("`{sv}` is not an IP address"),
                                "name servers are addresses",
                            ),
                        }
                    }
                }
                if let Some(v) = get(t, "min_refresh")
                    && let Some(d) = duration(w, v, "min_refresh")
                {
                    raw.dns.min_refresh = d;
                }
                if let Some(v) = get(t, "max_refresh")
                    && let Some(d) = duration(w, v, "max_refresh")
                {
                    if d < raw.dns.min_refresh {
                        w.error(
                            v.span(),
                            "max_refresh is shorter than min_refresh",
                            "must be at least min_refresh",
                        );
                    }
                    raw.dns.max_refresh = d;
                }
            }
            "source" => {
                for e in w.array(v, "source") {
                    let Some(et) = w.table(e, "source") else {
                        continue;
                    };
                    let origin = prov(sources, w.file, &e.span());
                    if let Some((s, enabled)) = source_from(w, et, e.span(), &origin) {
                        let here = At {
                            v: (),
                            file: w.file,
                            span: get(et, "format").map_or(e.span(), |f| f.span()),
                        };
                        raw.sources.push((s, enabled, here));
                    }
                }
            }
            "api" => {
                let Some(t) = w.table(v, "[api]") else {
                    continue;
                };
                if !once(w, raw, "api", k.span(), sources) {
                    continue;
                }
                w.check_keys(
                    t,
                    &["listen", "insecure_http", "tls_cert", "tls_key"],
                    "[api]",
                );
                if let Some(v) = get(t, "insecure_http")
                    && let Some(b) = w.bool(v, "insecure_http")
                {
                    raw.api.insecure_http = b;
                }
                let mut tls_span = None;
                for key in ["tls_cert", "tls_key"] {
                    if let Some(v) = get(t, key)
                        && let Some(p) = w.str(v, key)
                    {
                        let span = v.span();
                        if !p.starts_with('/') {
                            w.error(
                                span.clone(),
                                format!("`{p}` is not an absolute path"),
                                "the daemon's working directory is `/`: give the full path of the PEM file",
                            );
                        }
                        if key == "tls_cert" {
                            raw.api.tls_cert = Some(p.to_string());
                        } else {
                            raw.api.tls_key = Some(p.to_string());
                        }
                        tls_span = Some(span);
                    }
                }
                if let Some(span) = tls_span
                    && (raw.api.tls_cert.is_none() || raw.api.tls_key.is_none())
                {
                    w.error(
                        span,
                        "TLS needs both `tls_cert` and `tls_key`",
                        "give the certificate chain and its private key (PEM files)",
                    );
                }
                let mut open: Vec<(String, Range<usize>)> = Vec::new();
                if let Some(v) = get(t, "listen") {
                    for (sv, span) in w.str_list(v, "listen") {
                        match sv.parse::<std::net::SocketAddr>() {
                            Ok(a) => {
                                if !a.ip().is_loopback() {
                                    raw.api_open.push(at(w, sv.to_string(), span.clone()));
                                    open.push((sv.to_string(), span));
                                }
                                raw.api.listen.push(a);
                            }
                            Err(_) => w.error(
                                span,
                                format!("`{sv}` is not an address and port"),
                                "expected e.g. 127.0.0.1:8787 or [::1]:8787",
                            ),
                        }
                    }
                }
                if !raw.api.insecure_http && raw.api.tls_cert.is_none() {
                    for (sv, span) in open {
                        w.error(
                            span,
                            format!("the API on `{sv}` would take tokens in plain HTTP from the network"),
                            "give `tls_cert` and `tls_key` (PEM files), listen on loopback behind your TLS proxy, or set `insecure_http = true`",
                        );
                    }
                }
            }
            "crowdsec" => {
                let Some(t) = w.table(v, "[crowdsec]") else {
                    continue;
                };
                if !once(w, raw, "crowdsec", k.span(), sources) {
                    continue;
                }
                let origin = prov(sources, w.file, &k.span());
                raw.crowdsec = crowdsec_from(w, t, k.span(), origin);
            }
            "fleet" => {
                let Some(t) = w.table(v, "[fleet]") else {
                    continue;
                };
                if !once(w, raw, "fleet", k.span(), sources) {
                    continue;
                }
                let origin = prov(sources, w.file, &k.span());
                raw.fleet = fleet_from(w, t, k.span(), origin);
            }
            "feed" => {
                for e in w.array(v, "feed") {
                    let Some(et) = w.table(e, "[[feed]]") else {
                        continue;
                    };
                    let origin = prov(sources, w.file, &e.span());
                    // A name written twice is an error even when either
                    // feed has other errors.
                    if let Some(v) = get(et, "name")
                        && let Some(n) = v.get_ref().as_str()
                    {
                        if raw.feed_names.iter().any(|x| x == n) {
                            w.error(
                                v.span(),
                                format!("a second feed named `{n}`"),
                                "each feed has its own sets: give it another name",
                            );
                            continue;
                        }
                        raw.feed_names.push(n.to_string());
                    }
                    if let Some(f) = feed_from(w, et, e.span(), origin) {
                        raw.feeds.push(f);
                    }
                }
            }
            "notify" => {
                for e in w.array(v, "notify") {
                    let Some(et) = w.table(e, "[[notify]]") else {
                        continue;
                    };
                    let origin = prov(sources, w.file, &e.span());
                    if let Some(n) = notify_from(w, et, e.span(), origin) {
                        raw.notify.push(n);
                    }
                }
            }
            "filter" => {
                let Some(t) = w.table(v, "[filter]") else {
                    continue;
                };
                if !once(w, raw, "filter", k.span(), sources) {
                    continue;
                }
                w.check_keys(t, &["mode", "sip"], "[filter]");
                if let Some(mv) = get(t, "mode")
                    && let Some(m) = w.str(mv, "mode")
                {
                    match m {
                        "full" => raw.filter_mode = Some(at(w, FilterMode::Full, mv.span())),
                        "bans-only" => {
                            raw.filter_mode = Some(at(w, FilterMode::BansOnly, mv.span()));
                        }
                        other => w.push(
                            Diagnostic::error(
                                w.file,
                                mv.span(),
                                format!("unknown [filter] mode `{other}`"),
                            )
                            .label("not a mode")
                            .help("modes: \"full\" (voipwall's zones decide what passes) or \"bans-only\" (another firewall decides; voipwall adds bans, blocks, flood guards and packet copies)"),
                        ),
                    }
                }
                if let Some(sv) = get(t, "sip") {
                    raw.filter_sip = Some(
                        w.str_list(sv, "sip services")
                            .into_iter()
                            .map(|(s, sp)| at(w, s, sp))
                            .collect(),
                    );
                }
            }
            "call" => {
                let Some(t) = w.table(v, "[call]") else {
                    continue;
                };
                if !once(w, raw, "call", k.span(), sources) {
                    continue;
                }
                crate::call::walk(w, t, sources, &mut raw.call);
            }
            "geo" => {
                let Some(t) = w.table(v, "[geo]") else {
                    continue;
                };
                if !once(w, raw, "geo", k.span(), sources) {
                    continue;
                }
                w.check_keys(t, &["database", "asn_database"], "[geo]");
                raw.geo.database = abs_path(w, t, "database");
                raw.geo.asn_database = abs_path(w, t, "asn_database");
            }
            "drops" => {
                let Some(t) = w.table(v, "[drops]") else {
                    continue;
                };
                if !once(w, raw, "drops", k.span(), sources) {
                    continue;
                }
                w.check_keys(t, &["log", "rate", "nflog_group"], "[drops]");
                if let Some(v) = get(t, "log")
                    && let Some(b) = w.bool(v, "log")
                {
                    raw.drops.log = b;
                }
                if let Some(v) = get(t, "rate")
                    && let Some(n) = w.int(v, "rate", 1, 10_000)
                {
                    raw.drops.rate = u32::try_from(n).expect("range checked");
                }
                if let Some(v) = get(t, "nflog_group")
                    && let Some(n) = w.int(v, "nflog_group", 0, 65535)
                {
                    let g = u16::try_from(n).expect("range checked");
                    raw.drops.nflog_group = g;
                    raw.drops_group_at = Some(at(w, g, v.span()));
                }
            }
            "hep" => {
                let Some(t) = w.table(v, "[hep]") else {
                    continue;
                };
                if !once(w, raw, "hep", k.span(), sources) {
                    continue;
                }
                w.check_keys(t, &["listen", "senders"], "[hep]");
                if let Some(v) = get(t, "listen") {
                    for (sv, span) in w.str_list(v, "listen") {
                        match sv.parse::<std::net::SocketAddr>() {
                            Ok(a) => raw.hep.listen.push(a),
                            Err(_) => w.error(
                                span,
                                format!("`{sv}` is not an address and port"),
                                "expected e.g. 127.0.0.1:9060 or [::1]:9060",
                            ),
                        }
                    }
                }
                if let Some(v) = get(t, "senders") {
                    for (sv, span) in w.str_list(v, "senders") {
                        match parse_net_spec(&sv) {
                            Ok(NetSpec::Net(n)) => {
                                raw.hep.senders.push(n);
                                raw.hep_sender_at.push((
                                    n,
                                    At {
                                        v: sv.to_string(),
                                        file: w.file,
                                        span,
                                    },
                                ));
                            }
                            _ => w.error(
                                span,
                                format!("`{sv}` is not an address or network"),
                                "HEP senders are addresses or networks",
                            ),
                        }
                    }
                }
                if !raw.hep.listen.is_empty() && raw.hep.senders.is_empty() {
                    w.error(
                        k.span(),
                        "[hep] listens but names no `senders`",
                        "HEP says whose SIP it carries: list the PBX addresses allowed to send it",
                    );
                }
            }
            "discover" => {
                let Some(t) = w.table(v, "[discover]") else {
                    continue;
                };
                if !once(w, raw, "discover", k.span(), sources) {
                    continue;
                }
                w.check_keys(
                    t,
                    &[
                        "enabled",
                        "asterisk",
                        "freeswitch",
                        "kamailio",
                        "sshd_config",
                        "peers",
                        "ports",
                    ],
                    "[discover]",
                );
                raw.discover.origin = Provenance {
                    file: path.to_string(),
                    line: sources.line_col(w.file, k.span().start).0,
                };
                for (key, slot) in [
                    ("enabled", &mut raw.discover.enabled),
                    ("peers", &mut raw.discover.peers),
                    ("ports", &mut raw.discover.ports),
                ] {
                    if let Some(v) = get(t, key)
                        && let Some(b) = w.bool(v, key)
                    {
                        *slot = b;
                    }
                }
                for (key, slot) in [
                    ("asterisk", &mut raw.discover.asterisk),
                    ("freeswitch", &mut raw.discover.freeswitch),
                    ("kamailio", &mut raw.discover.kamailio),
                    ("sshd_config", &mut raw.discover.sshd_config),
                ] {
                    let Some(v) = get(t, key) else { continue };
                    // A path, or `false` to skip that PBX.
                    if v.get_ref().as_bool() == Some(false) {
                        *slot = None;
                    } else if let Some(p) = w.str(v, key) {
                        if p.starts_with('/') {
                            *slot = Some(p.to_string());
                        } else {
                            w.error(
                                v.span(),
                                format!("{key} must be an absolute path or `false`"),
                                "relative path",
                            );
                        }
                    }
                }
            }
            "detect" => {
                let Some(d) = w.table(v, "[detect]") else {
                    continue;
                };
                if !once(w, raw, "detect", k.span(), sources) {
                    continue;
                }
                crate::detect::walk(w, d, sources, &mut raw.detect);
            }
            "allow" | "block" => {
                for e in w.array(v, key) {
                    let Some(et) = w.table(e, key) else { continue };
                    w.check_keys(
                        et,
                        &["address", "description", "expires"],
                        &format!("an [[{key}]] entry"),
                    );
                    let Some(av) = get(et, "address") else {
                        w.error(
                            e.span(),
                            format!("[[{key}]] entry has no `address`"),
                            "missing address",
                        );
                        continue;
                    };
                    let Some(addr) = w.str(av, "address") else {
                        continue;
                    };
                    let desc = get(et, "description")
                        .and_then(|v| w.str(v, "description"))
                        .unwrap_or("")
                        .to_string();
                    let expires = get(et, "expires").and_then(|v| w.timestamp(v, "expires"));
                    let entry = (at(w, addr.to_string(), av.span()), desc, expires);
                    if key == "allow" {
                        raw.allow.push(entry);
                    } else {
                        raw.block.push(entry);
                    }
                }
            }
            _ => {}
        }
    }
    includes
}

pub(crate) fn duration(w: &mut Walker<'_>, v: &crate::walk::Value<'_>, what: &str) -> Option<u64> {
    let s = w.str(v, what)?;
    match parse_duration(s) {
        Ok(0) => {
            w.error(
                v.span(),
                format!("{what} must be longer than zero"),
                "zero duration",
            );
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            w.error(v.span(), e, "invalid duration");
            None
        }
    }
}

fn prov(sources: &SourceMap, file: FileId, span: &Range<usize>) -> Provenance {
    Provenance {
        file: sources.name(file).to_string(),
        line: sources.line_col(file, span.start).0,
    }
}

fn err<T>(diags: &mut Vec<Diagnostic>, a: &At<T>, msg: impl Into<String>, label: &str) {
    diags.push(Diagnostic::error(a.file, a.span.clone(), msg).label(label));
}

fn resolve(
    raw: &Raw,
    catalog: &Catalog,
    facts: &HostFacts,
    sources: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<Policy> {
    let zone_of = |a: &At<String>, diags: &mut Vec<Diagnostic>| -> Option<Zone> {
        if let Ok(z) = a.v.parse() {
            return Some(z);
        }
        let mut d = Diagnostic::error(a.file, a.span.clone(), format!("unknown zone `{}`", a.v))
            .label("not a zone");
        d = match did_you_mean(&a.v, Zone::ALL.map(Zone::name)) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help("zones are reject, internet, other, local, trusted"),
        };
        diags.push(d);
        None
    };

    let preset = raw
        .preset
        .as_ref()
        .and_then(|p| match catalog.presets.get(&p.v) {
            Some(pr) => Some(pr),
            None => {
                let mut d =
                    Diagnostic::error(p.file, p.span.clone(), format!("unknown preset `{}`", p.v))
                        .label("no such preset");
                d = match did_you_mean(&p.v, catalog.presets.keys().map(String::as_str)) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("presets: {}", catalog.preset_names())),
                };
                diags.push(d);
                None
            }
        });

    let default_zone = match &raw.default_zone {
        Some(a) => zone_of(a, diags).unwrap_or(Zone::Internet),
        None => Zone::Internet,
    };
    if default_zone == Zone::Trusted {
        let a = raw.default_zone.as_ref().expect("set when trusted");
        err(
            diags,
            a,
            "the default zone cannot be `trusted`",
            "would trust every unlisted interface",
        );
    }

    // Interfaces.
    let mut interfaces = Vec::new();
    let mut seen_if = BTreeSet::new();
    for (name, zone) in &raw.interfaces {
        let Some(z) = zone_of(zone, diags) else {
            continue;
        };
        if z == Zone::Trusted {
            diags.push(
                Diagnostic::error(zone.file, zone.span.clone(), format!("interface `{}` cannot be in the trusted zone", name.v))
                    .label("only networks may be trusted")
                    .help("assign the interface to `local` and list the trusted networks under [networks]"),
            );
            continue;
        }
        if name.v.contains('*') {
            // nft would read a trailing `*` as a wildcard, but the apply
            // checks that each interface exists and explain matches names
            // exactly: refused here, so `check` and `apply` agree.
            err(
                diags,
                name,
                format!("`{}`: interface wildcards are not supported", name.v),
                "name each interface",
            );
            continue;
        }
        if !valid_ifname(&name.v) {
            err(
                diags,
                name,
                format!("`{}` is not a valid interface name", name.v),
                "1-15 characters, no spaces or slashes",
            );
            continue;
        }
        if !seen_if.insert(name.v.clone()) {
            err(
                diags,
                name,
                format!("interface `{}` is listed twice", name.v),
                "duplicate",
            );
            continue;
        }
        interfaces.push(InterfaceZone {
            name: name.v.clone(),
            zone: z,
            origin: prov(sources, name.file, &name.span),
        });
    }
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));

    // Networks.
    let mut networks = Vec::new();
    let mut seen_net = BTreeMap::new();
    let mut trusted_parts: Vec<(IpNet, &At<String>)> = Vec::new();
    for (net, zone) in &raw.networks {
        let z = zone_of(zone, diags);
        let spec = match parse_net_spec(&net.v) {
            Ok(s) => s,
            Err(e) => {
                err(diags, net, format!("invalid network `{}`", net.v), &e);
                continue;
            }
        };
        if !geo_known(&spec, &raw.geo, net, diags) {
            continue;
        }
        if let Some(prev) = seen_net.insert(spec.clone(), net.span.clone()) {
            let _ = prev;
            err(
                diags,
                net,
                format!("network `{spec}` is listed twice"),
                "duplicate (after normalisation)",
            );
            continue;
        }
        if let (NetSpec::Net(n), Some(Zone::Trusted), false) = (&spec, z, raw.everyone)
            && n.prefix_len() == 0
        {
            diags.push(
                Diagnostic::error(
                    net.file,
                    net.span.clone(),
                    format!("`{}` = \"trusted\" switches the firewall off for every source", net.v),
                )
                .label("every address")
                .help("if that is really meant, set `[host] firewall_off_for_everyone = true`; `voipwall disable` removes the table instead"),
            );
            continue;
        }
        if let (NetSpec::Net(n), Some(Zone::Trusted)) = (&spec, z) {
            trusted_parts.push((*n, net));
        }
        if let Some(z) = z {
            networks.push(NetworkZone {
                net: spec,
                zone: z,
                origin: prov(sources, net.file, &net.span),
            });
        }
    }

    if !raw.everyone {
        every_address_in_pieces(
            &trusted_parts,
            "trusted networks",
            "switch the firewall off for every source",
            false,
            diags,
        );
        // A HEP sender is never banned and reaches the HEP port past every
        // ban: "every address" there is the firewall off for detection.
        let senders: Vec<(IpNet, &At<String>)> =
            raw.hep_sender_at.iter().map(|(n, a)| (*n, a)).collect();
        every_address_in_pieces(
            &senders,
            "[hep] senders",
            "would never be banned and would pass every ban to the HEP port",
            true,
            diags,
        );
    }

    // Services: policy-defined beat preset-defined beat catalog.
    let lookup = |name: &str| -> Option<Service> {
        raw.services
            .get(name)
            .map(|(s, _, _)| s.clone())
            .or_else(|| preset.and_then(|p| p.services.get(name).cloned()))
            .or_else(|| catalog.services.get(name).cloned())
    };
    let mut grants: BTreeMap<Zone, Vec<Grant>> = BTreeMap::new();
    let mut services = BTreeMap::new();
    let all_names = || -> Vec<String> {
        let mut v: Vec<String> = catalog.services.keys().cloned().collect();
        v.extend(raw.services.keys().cloned());
        if let Some(p) = preset {
            v.extend(p.services.keys().cloned());
        }
        v
    };
    for zone in Zone::ALL {
        let from_policy = raw.zones.get(&zone);
        let names: Vec<(String, Provenance, Option<&At<String>>)> = match (from_policy, preset) {
            (Some(list), _) => list
                .iter()
                .map(|a| (a.v.clone(), prov(sources, a.file, &a.span), Some(a)))
                .collect(),
            (None, Some(p)) => p
                .zones
                .get(&zone)
                .map(|l| {
                    let origin = p.zone_origins.get(&zone).unwrap_or(&p.origin);
                    l.iter()
                        .map(|n| (n.clone(), origin.clone(), None))
                        .collect()
                })
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        for (name, origin, at_) in names {
            let Some(mut svc) = lookup(&name) else {
                let names = all_names();
                let hint = did_you_mean(&name, names.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"));
                match at_ {
                    Some(a) => {
                        let mut d = Diagnostic::error(
                            a.file,
                            a.span.clone(),
                            format!("unknown service `{name}`"),
                        )
                        .label("not in the catalog or [services]");
                        d = d.help(
                            hint.unwrap_or_else(|| "`voipwall catalog` lists the services".into()),
                        );
                        diags.push(d);
                    }
                    None => diags.push(Diagnostic::error(
                        0,
                        0..0,
                        format!("preset grants unknown service `{name}` ({origin})"),
                    )),
                }
                continue;
            };
            if let (Some(PortSource::SshdConfig), Some(ports)) = (svc.port_from, &facts.sshd_ports)
                && !ports.is_empty()
            {
                svc.ports = ports
                    .iter()
                    .map(|&p| PortSpec {
                        proto: Proto::Tcp,
                        lo: p,
                        hi: p,
                    })
                    .collect();
            }
            services.insert(name.clone(), svc);
            let list = grants.entry(zone).or_default();
            if !list.iter().any(|g| g.service == name) {
                list.push(Grant {
                    service: name,
                    origin,
                });
            }
        }
    }

    // Bans-only: another firewall decides what passes. What would open
    // or close ports here is refused, each where it is written.
    let mode = raw.filter_mode.as_ref().map_or(FilterMode::Full, |a| a.v);
    let mut filter = Filter {
        mode,
        sip: Vec::new(),
    };
    if mode == FilterMode::BansOnly {
        let refuse = |diags: &mut Vec<Diagnostic>,
                      file: FileId,
                      span: &Range<usize>,
                      what: String| {
            diags.push(
                Diagnostic::error(file, span.clone(), format!("{what} in a bans-only policy"))
                    .label("what passes is the other firewall's to decide")
                    .help("with [filter] mode = \"bans-only\" another firewall (ufw, firewalld, a cloud security group) decides what passes and voipwall holds only bans, blocks, flood guards and packet copies: remove this, or set mode = \"full\""),
            );
        };
        for (zone, list) in &raw.zones {
            if let Some(a) = list.first() {
                refuse(
                    diags,
                    a.file,
                    &a.span,
                    format!("[zones.{zone}] grants services"),
                );
            }
        }
        for (name, _) in &raw.interfaces {
            refuse(
                diags,
                name.file,
                &name.span,
                format!("interface `{}` is given a zone", name.v),
            );
        }
        for (net, _) in &raw.networks {
            refuse(
                diags,
                net.file,
                &net.span,
                format!("network `{}` is given a zone", net.v),
            );
        }
        if let Some(p) = &raw.preset {
            refuse(
                diags,
                p.file,
                &p.span,
                format!("preset `{}` grants services", p.v),
            );
        }
        if let Some(d) = &raw.default_zone {
            refuse(diags, d.file, &d.span, "a default zone".to_string());
        }
        if let Some((_, f, span)) = &raw.rtp {
            refuse(diags, *f, span, "an RTP range to open".to_string());
        }
        let named: Vec<(String, Option<&At<String>>)> = match &raw.filter_sip {
            Some(list) => list.iter().map(|a| (a.v.clone(), Some(a))).collect(),
            None => vec![("sip".to_string(), None)],
        };
        for (name, a) in named {
            match lookup(&name) {
                Some(svc) if svc.sip => {
                    services.insert(name.clone(), svc);
                    filter.sip.push(name);
                }
                found => {
                    let what = if found.is_some() {
                        format!("service `{name}` is not a SIP service")
                    } else {
                        format!("unknown service `{name}`")
                    };
                    match a {
                        Some(a) => err(diags, a, what, "[filter] sip names SIP services"),
                        None => diags.push(Diagnostic::error(0, 0..0, what)),
                    }
                }
            }
        }
    } else if let Some(a) = raw.filter_sip.as_ref().and_then(|l| l.first()) {
        diags.push(
            Diagnostic::error(a.file, a.span.clone(), "[filter] sip is for bans-only mode")
                .label("the zones' grants say which SIP ports exist")
                .help("set [filter] mode = \"bans-only\", or grant the service in a zone"),
        );
    }

    // RTP.
    let (rtp_ranges, rtp_origin) = match &raw.rtp {
        Some((r, f, span)) => (r.clone(), prov(sources, *f, span)),
        None => match preset.filter(|p| !p.rtp.is_empty()) {
            Some(p) => (p.rtp.clone(), p.origin.clone()),
            None => catalog
                .services
                .get("rtp")
                .map(|s| (s.ports.clone(), s.origin.clone()))
                .unwrap_or_else(|| {
                    (
                        vec![PortSpec {
                            proto: Proto::Udp,
                            lo: 10000,
                            hi: 20000,
                        }],
                        Provenance::default(),
                    )
                }),
        },
    };
    if let Some((_, f, span)) = &raw.rtp {
        for r in &rtp_ranges {
            for s in services.values() {
                if let Some(p) = s.ports.iter().find(|p| p.overlaps(r)) {
                    diags.push(
                        Diagnostic::error(
                            *f,
                            span.clone(),
                            format!("RTP range {r} overlaps service `{}` ({p})", s.name),
                        )
                        .label("overlapping ports")
                        .help("move the RTP range or the service's port"),
                    );
                }
            }
        }
    }
    let rtp_zones = match &raw.rtp_zones {
        Some(list) => list.iter().filter_map(|a| zone_of(a, diags)).collect(),
        None => vec![Zone::Reject, Zone::Internet, Zone::Other, Zone::Local],
    };

    // SIP guards.
    let l1 = raw.flood_l1.as_ref().map_or(500, |a| a.v);
    let l2 = raw.flood_l2.as_ref().map_or(2000, |a| a.v);
    if l1 >= l2
        && let Some(a) = raw.flood_l1.as_ref().or(raw.flood_l2.as_ref())
    {
        err(
            diags,
            a,
            format!("flood level 1 ({l1} pps) must be below level 2 ({l2} pps)"),
            "level 1 drops, level 2 bans",
        );
    }
    if let Some(a) = &raw.unknown_pps
        && a.v >= l1
    {
        err(
            diags,
            a,
            format!(
                "unknown_pps ({}) must be below flood level 1 ({l1} pps)",
                a.v
            ),
            "the tight limit for unknown sources",
        );
    }
    let sip_group = raw.nflog_group.unwrap_or(Some(5));
    let mut drops = raw.drops;
    if raw.drops_group_at.is_none() && sip_group == Some(drops.nflog_group) {
        // [sip] took the drop log's default group: the next one.
        drops.nflog_group = drops.nflog_group.wrapping_add(1);
    }
    if raw.drops.log
        && sip_group == Some(raw.drops.nflog_group)
        && let Some(a) = &raw.drops_group_at
    {
        err(
            diags,
            a,
            format!(
                "NFLOG group {} is [sip]'s: drop samples would be read as SIP",
                a.v
            ),
            "give the drop log a group of its own (the default is 6)",
        );
    }
    let sip = SipSettings {
        nflog_group: sip_group,
        flood_level1_pps: l1,
        flood_level2_pps: l2,
        flood_ban: raw.flood_ban.unwrap_or(3600),
        responsive: raw.responsive.unwrap_or(false),
        unknown_pps: raw.unknown_pps.as_ref().map_or(20, |a| a.v),
        aggregate_pps: raw.aggregate_pps.unwrap_or(2000),
        origin: raw
            .sip_at
            .as_ref()
            .map(|(f, s)| prov(sources, *f, s))
            .unwrap_or_default(),
    };
    let bans = BanSettings {
        default_ttl: raw.default_ttl.unwrap_or(3600),
        ipv4_prefix: raw.ipv4_prefix.unwrap_or(24),
        ipv6_prefix: raw.ipv6_prefix.unwrap_or(64),
    };

    // Host.
    let mut host = Host::default();
    for a in &raw.host_addresses {
        match a.v.parse::<IpAddr>() {
            Ok(ip) => host.addresses.push(ip),
            Err(_) => err(
                diags,
                a,
                format!("`{}` is not an IP address", a.v),
                "expected an address",
            ),
        }
    }
    for a in &raw.management {
        match parse_net(&a.v) {
            Ok(n) => host.management.push(n),
            Err(e) => err(
                diags,
                a,
                format!("invalid management network `{}`", a.v),
                &e,
            ),
        }
    }
    let mut own: Vec<IpAddr> = host.addresses.clone();
    own.extend(facts.addresses.iter().copied());

    // Allow and block lists.
    let list = |entries: &[(At<String>, String, Option<i64>)],
                kind: &str,
                diags: &mut Vec<Diagnostic>|
     -> Vec<ListEntry> {
        let mut out = Vec::new();
        for (a, desc, expires) in entries {
            match parse_net_spec(&a.v) {
                Ok(net) if !geo_known(&net, &raw.geo, a, diags) => {}
                Ok(net) => {
                    if kind == "block"
                        && let NetSpec::Net(n) = &net
                    {
                        if let Some(ip) = own.iter().find(|ip| n.contains(*ip)) {
                            err(
                                diags,
                                a,
                                format!(
                                    "block entry `{net}` contains this host's own address {ip}"
                                ),
                                "would cut the host off",
                            );
                            continue;
                        }
                        if let Some(m) = host
                            .management
                            .iter()
                            .find(|m| n.contains(*m) || m.contains(n))
                        {
                            err(
                                diags,
                                a,
                                format!("block entry `{net}` covers management network {m}"),
                                "would lock out the administrators",
                            );
                            continue;
                        }
                    }
                    out.push(ListEntry {
                        net,
                        description: desc.clone(),
                        expires: *expires,
                        origin: prov(sources, a.file, &a.span),
                    });
                }
                Err(e) => err(diags, a, format!("invalid {kind} entry `{}`", a.v), &e),
            }
        }
        out
    };
    let allow = list(&raw.allow, "allow", diags);
    if !raw.everyone {
        for (a, _, _) in &raw.allow {
            if let Ok(NetSpec::Net(n)) = parse_net_spec(&a.v)
                && n.prefix_len() == 0
            {
                diags.push(
                    Diagnostic::error(
                        a.file,
                        a.span.clone(),
                        format!("allow entry `{n}` skips every ban for every source"),
                    )
                    .label("every address")
                    .help("if that is really meant, set `[host] firewall_off_for_everyone = true`"),
                );
            }
        }
    }
    if !raw.everyone {
        let parts: Vec<(IpNet, &At<String>)> = raw
            .allow
            .iter()
            .filter_map(|(a, _, _)| match parse_net_spec(&a.v) {
                Ok(NetSpec::Net(n)) => Some((n, a)),
                _ => None,
            })
            .collect();
        every_address_in_pieces(
            &parts,
            "allow entries",
            "skip every ban for every source",
            false,
            diags,
        );
    }
    let block = list(&raw.block, "block", diags);

    // Grouped counting bans the group, and prefix bans use the kernel's
    // mask: the two must agree. Unset, IPv6 grouping follows the ban prefix.
    let mut detect = raw.detect.settings.clone();
    if raw.detect.group_at[1].is_none() {
        detect.group_v6 = bans.ipv6_prefix;
    }
    for (i, (group, prefix, full, key)) in [
        (detect.group_v4, bans.ipv4_prefix, 32, "ipv4_prefix"),
        (detect.group_v6, bans.ipv6_prefix, 128, "ipv6_prefix"),
    ]
    .into_iter()
    .enumerate()
    {
        if group != full && group != prefix {
            let (file, span) = raw.detect.group_at[i]
                .clone()
                .expect("only an explicit group can differ");
            diags.push(
                Diagnostic::error(
                    file,
                    span,
                    format!(
                        "[detect] group_v{} = {group} needs [bans] {key} = {group} (now {prefix}): prefix bans use the kernel's mask",
                        if i == 0 { 4 } else { 6 }
                    ),
                )
                .label("differs from the ban prefix")
                .help(format!("set [bans] {key} = {group}, or group_v{} = {prefix}", if i == 0 { 4 } else { 6 })),
            );
        }
    }
    if let Some((file, span)) = raw.detect.shield_v4_at.clone()
        && bans.ipv4_prefix == 32
    {
        diags.push(
            Diagnostic::error(
                file,
                span,
                "[detect] shield_v4_escalate_after bans the [bans] ipv4_prefix network around shield-banned addresses, and [bans] ipv4_prefix is 32",
            )
            .label("no neighbourhood to escalate to")
            .help("set [bans] ipv4_prefix = 24 (the default), or leave shield_v4_escalate_after out"),
        );
    }
    if !catalog.rule_ids.is_empty() {
        for (id, file, span) in &raw.detect.rule_keys {
            if !catalog.rule_ids.contains(id) {
                let mut d = Diagnostic::error(
                    *file,
                    span.clone(),
                    format!("unknown detection rule `{id}`"),
                )
                .label("not a rule");
                d = d.help(
                    match did_you_mean(id, catalog.rule_ids.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("rules are {}", catalog.rule_ids.join(", ")),
                    },
                );
                diags.push(d);
            }
        }
    }
    // An API listener on the network with no zone granting its service:
    // the firewall drops every client (listening opens no port by itself).
    let granted = grants
        .values()
        .flatten()
        .any(|g| g.service == "voipwall-api");
    if !granted && mode == FilterMode::Full {
        for a in &raw.api_open {
            diags.push(
                Diagnostic::warning(
                    a.file,
                    a.span.clone(),
                    format!(
                        "the API listens on `{}` but no zone grants the `voipwall-api` service",
                        a.v
                    ),
                )
                .label("unreachable through the firewall")
                .help("add \"voipwall-api\" to the services of the zone its clients are in"),
            );
        }
    }
    // Log sources: the preset's, then the policy's (same format and place:
    // the policy's entry wins; `enabled = false` drops it).
    let mut log_sources: Vec<LogSource> = preset.map(|p| p.sources.clone()).unwrap_or_default();
    for (s, enabled, here) in &raw.sources {
        let user = detect.logformats.iter().any(|f| f.id == s.format);
        if !facts.log_formats.is_empty() && !user && !facts.log_formats.contains(&s.format) {
            let mut d = Diagnostic::error(
                here.file,
                here.span.clone(),
                format!("unknown log format `{}`", s.format),
            )
            .label("not a log format");
            let known = facts
                .log_formats
                .iter()
                .map(String::as_str)
                .chain(detect.logformats.iter().map(|f| f.id.as_str()));
            d = match did_you_mean(&s.format, known.clone()) {
                Some(m) => d.help(format!("did you mean `{m}`?")),
                None => d.help(format!("formats: {}", known.collect::<Vec<_>>().join(", "))),
            };
            diags.push(d);
        }
        log_sources.retain(|x| x.key() != s.key());
        if *enabled {
            log_sources.push(s.clone());
        }
    }
    Some(Policy {
        preset: raw.preset.as_ref().map(|p| p.v.clone()),
        filter,
        default_zone,
        interfaces,
        networks,
        grants,
        services,
        rtp: Rtp {
            ranges: rtp_ranges,
            zones: rtp_zones,
            origin: rtp_origin,
            from_policy: raw.rtp.is_some(),
        },
        sip,
        bans,
        allow,
        block,
        host,
        detect,
        safe_mode: raw.safe_mode,
        discover: raw.discover.clone(),
        peers: Vec::new(),
        dns: raw.dns.clone(),
        hep: raw.hep.clone(),
        api: raw.api.clone(),
        drops,
        notify: raw.notify.clone(),
        feeds: raw.feeds.clone(),
        crowdsec: raw.crowdsec.clone(),
        fleet: raw.fleet.clone(),
        geo: raw.geo.clone(),
        call: raw.call.clone(),
        sources: log_sources,
    })
}

/// Whether a `country:` or `asn:` selector has its `[geo]` database (an
/// error at it when not); true for every other network.
fn geo_known(
    spec: &NetSpec,
    geo: &GeoSettings,
    at: &At<String>,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let (missing, key) = match spec {
        NetSpec::Geo(GeoSel::Country(_)) => (geo.database.is_none(), "database"),
        NetSpec::Geo(GeoSel::Asn(_)) => (geo.asn_database.is_none(), "asn_database"),
        _ => return true,
    };
    if missing {
        diags.push(
            Diagnostic::error(
                at.file,
                at.span.clone(),
                format!("`{spec}` needs a database to look it up, and [geo] {key} is not set"),
            )
            .label("no database")
            .help(format!(
                "add [geo] {key} = \"/var/lib/voipwall/{}.mmdb\" (a MaxMind or DB-IP mmdb file)",
                if key == "database" { "country" } else { "asn" }
            )),
        );
        return false;
    }
    true
}

/// An absolute path from `key`, or an error at it.
fn abs_path(w: &mut Walker<'_>, t: &Table<'_>, key: &str) -> Option<String> {
    let v = get(t, key)?;
    let p = w.str(v, key)?;
    if !p.starts_with('/') {
        w.error(
            v.span(),
            format!("`{p}` is not an absolute path"),
            "the daemon's working directory is `/`: give the full path",
        );
        return None;
    }
    Some(p.to_string())
}

/// A duration key of a section: seconds within `range`, or the default.
fn seconds(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
    hint: &str,
) -> Option<u64> {
    let Some(v) = get(t, key) else {
        return Some(default);
    };
    let s = w.str(v, key)?;
    match parse_duration(s) {
        Ok(n) if range.contains(&n) => Some(n),
        Ok(_) => {
            w.error(v.span(), format!("`{s}` is out of range for `{key}`"), hint);
            None
        }
        Err(e) => {
            w.error(v.span(), e, hint);
            None
        }
    }
}

/// `[crowdsec]`.
fn crowdsec_from(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    span: Range<usize>,
    origin: Provenance,
) -> Option<CrowdsecSettings> {
    w.check_keys(
        t,
        &[
            "lapi_url",
            "bouncer_key_file",
            "update_frequency",
            "resync",
            "machine_id",
            "machine_password_file",
        ],
        "[crowdsec]",
    );
    let mut ok = true;
    let lapi_url = match get(t, "lapi_url") {
        Some(v) => {
            let u = w.str(v, "lapi_url")?.trim_end_matches('/').to_string();
            if !http_url(&u) {
                w.error(
                    v.span(),
                    format!("`{}` is not an http:// or https:// URL", u.escape_debug()),
                    "e.g. http://127.0.0.1:8080 (the LAPI's listen_uri)",
                );
                ok = false;
            }
            u
        }
        None => {
            w.error(
                span.clone(),
                "[crowdsec] has no `lapi_url`",
                "e.g. lapi_url = \"http://127.0.0.1:8080\"",
            );
            return None;
        }
    };
    let bouncer_key_file = abs_path(w, t, "bouncer_key_file");
    let machine_password_file = abs_path(w, t, "machine_password_file");
    let machine_id = match get(t, "machine_id") {
        Some(v) => {
            let m = w.str(v, "machine_id")?.to_string();
            if m.is_empty()
                || m.len() > 64
                || m.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                w.error(
                    v.span(),
                    format!("`{}` is not a machine id", m.escape_debug()),
                    "the name given to `cscli machines add`",
                );
                ok = false;
            }
            Some(m)
        }
        None => None,
    };
    if machine_id.is_some() != (get(t, "machine_password_file").is_some()) {
        w.error(
            span.clone(),
            "the watcher needs both `machine_id` and `machine_password_file`",
            "give both (cscli machines add NAME --password ...), or neither",
        );
        ok = false;
    }
    if get(t, "bouncer_key_file").is_none() && machine_id.is_none() {
        w.error(
            span.clone(),
            "[crowdsec] has neither a bouncer key nor a watcher",
            "give `bouncer_key_file` (cscli bouncers add NAME -o raw) and/or `machine_id` with `machine_password_file`",
        );
        ok = false;
    }
    let update_frequency = seconds(w, t, "update_frequency", 1..=3600, 10, "1s to 1h, e.g. 10s");
    let resync = seconds(w, t, "resync", 60..=86_400, 600, "1m to 24h, e.g. 10m");
    if !ok {
        return None;
    }
    Some(CrowdsecSettings {
        lapi_url,
        bouncer_key_file,
        update_frequency: update_frequency?,
        resync: resync?,
        machine_id,
        machine_password_file,
        origin,
    })
}

/// A fleet node's name: 1-32 of a-z, 0-9 and `-` (it names a stream key
/// and an ACL user).
fn node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `[fleet]`.
fn fleet_from(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    span: Range<usize>,
    origin: Provenance,
) -> Option<FleetSettings> {
    w.check_keys(
        t,
        &[
            "redis",
            "node",
            "user",
            "password_file",
            "stream",
            "nodes",
            "trim",
            "keep",
            "max_per_minute",
            "max_active",
        ],
        "[fleet]",
    );
    let mut ok = true;
    let need = |w: &mut Walker<'_>, key: &str, hint: &str| -> Option<String> {
        match get(t, key) {
            Some(v) => w.str(v, key).map(str::to_string),
            None => {
                w.error(span.clone(), format!("[fleet] has no `{key}`"), hint);
                None
            }
        }
    };
    let redis = need(w, "redis", "e.g. redis = \"redis://192.0.2.10:6379\"");
    let node = need(w, "node", "this node's name, e.g. node = \"pbx1\"");
    let password_file = abs_path(w, t, "password_file");
    if get(t, "password_file").is_none() {
        w.error(
            span.clone(),
            "[fleet] has no `password_file`",
            "the file holding this node's Redis ACL password",
        );
        ok = false;
    }
    if let (Some(r), Some(v)) = (&redis, get(t, "redis")) {
        let rest = r
            .strip_prefix("redis://")
            .or_else(|| r.strip_prefix("rediss://"));
        let good = rest.is_some_and(|h| {
            !h.is_empty()
                && !h.contains('@')
                && !h.contains('/')
                && !h.chars().any(|c| c.is_control() || c.is_whitespace())
        });
        if !good {
            w.error(
                v.span(),
                format!("`{}` is not a redis:// or rediss:// address", r.escape_debug()),
                "redis://HOST:PORT (rediss:// for TLS); the user and password go in `user` and `password_file`",
            );
            ok = false;
        }
    }
    if let (Some(n), Some(v)) = (&node, get(t, "node"))
        && !node_name(n)
    {
        w.error(
            v.span(),
            format!("`{n}` is not a node name"),
            "1-32 of a-z, 0-9 and -",
        );
        ok = false;
    }
    let user = match get(t, "user") {
        Some(v) => w.str(v, "user").map(str::to_string),
        None => node.clone(),
    };
    let stream = match get(t, "stream") {
        Some(v) => {
            let s = w.str(v, "stream")?.to_string();
            if s.is_empty()
                || s.len() > 64
                || s.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                w.error(
                    v.span(),
                    format!("`{}` is not a stream name", s.escape_debug()),
                    "e.g. voipwall:bans",
                );
                ok = false;
            }
            s
        }
        None => "voipwall:bans".to_string(),
    };
    let mut nodes = Vec::new();
    if let Some(v) = get(t, "nodes") {
        for (n, sp) in w.str_list(v, "nodes") {
            if !node_name(&n) {
                w.error(
                    sp,
                    format!("`{n}` is not a node name"),
                    "1-32 of a-z, 0-9 and -",
                );
                ok = false;
            } else if Some(&n) == node.as_ref() {
                w.error(
                    sp,
                    format!("`{n}` is this node"),
                    "list the other nodes only",
                );
                ok = false;
            } else if nodes.contains(&n) {
                w.error(sp, format!("`{n}` is listed twice"), "list each node once");
                ok = false;
            } else {
                nodes.push(n);
            }
        }
    }
    let trim = match get(t, "trim") {
        Some(v) => w.bool(v, "trim")?,
        None => false,
    };
    let keep = seconds(
        w,
        t,
        "keep",
        3600..=90 * 86_400,
        7 * 86_400,
        "1h to 90d, e.g. 7d",
    );
    let count = |w: &mut Walker<'_>, key: &str, default: u32, max: u32| -> Option<u32> {
        match get(t, key) {
            Some(v) => w
                .int(v, key, 1, i64::from(max))
                .and_then(|n| u32::try_from(n).ok()),
            None => Some(default),
        }
    };
    let max_per_minute = count(w, "max_per_minute", 600, 1_000_000);
    let max_active = count(w, "max_active", 100_000, 10_000_000);
    if !ok {
        return None;
    }
    Some(FleetSettings {
        redis: redis?,
        node: node?,
        user: user?,
        password_file: password_file?,
        stream,
        nodes,
        trim,
        keep: keep?,
        max_per_minute: max_per_minute?,
        max_active: max_active?,
        origin,
    })
}

/// Whether `u` is an http:// or https:// URL with a host and nothing a
/// request line or header could be broken with.
fn http_url(u: &str) -> bool {
    let authority = u
        .split_once("://")
        .map_or("", |(_, r)| r.split('/').next().unwrap_or(""));
    (u.starts_with("http://") || u.starts_with("https://"))
        && !u.chars().any(|c| c.is_control() || c.is_whitespace())
        && !authority.is_empty()
        && !authority.contains('@')
        && (authority.starts_with('[') || authority.matches(':').count() <= 1)
}

/// One `[[feed]]`.
fn feed_from(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    span: Range<usize>,
    origin: Provenance,
) -> Option<FeedSettings> {
    use crate::feed::FeedFormat;
    w.check_keys(
        t,
        &[
            "name", "format", "url", "path", "key_file", "interval", "timeout",
        ],
        "[[feed]]",
    );
    let mut ok = true;
    let name = match get(t, "name") {
        Some(v) => {
            let n = w.str(v, "name")?.to_string();
            if n.is_empty()
                || n.len() > 16
                || !n.starts_with(|c: char| c.is_ascii_lowercase())
                || !n
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                w.error(
                    v.span(),
                    format!("`{n}` is not a feed name"),
                    "1-16 of a-z, 0-9 and -, starting with a letter (it names kernel sets)",
                );
                ok = false;
            }
            n
        }
        None => {
            w.error(
                span.clone(),
                "this [[feed]] has no `name`",
                "e.g. name = \"voipbl\"",
            );
            return None;
        }
    };
    let format = match get(t, "format") {
        Some(v) => {
            let f = w.str(v, "format")?;
            match FeedFormat::parse(f) {
                Some(x) => Some(x),
                None => {
                    let hint = did_you_mean(f, ["apiban", "voipbl", "plain"]).map_or_else(
                        || "apiban, voipbl or plain".to_string(),
                        |m| format!("did you mean `{m}`?"),
                    );
                    w.error(v.span(), format!("`{f}` is not a feed format"), &hint);
                    None
                }
            }
        }
        None => {
            w.error(
                span.clone(),
                "this [[feed]] has no `format`",
                "apiban, voipbl or plain",
            );
            None
        }
    };
    let url = match get(t, "url") {
        Some(v) => {
            let u = w.str(v, "url")?.to_string();
            if !http_url(&u) {
                w.error(
                    v.span(),
                    format!("`{}` is not an http:// or https:// URL", u.escape_debug()),
                    "e.g. https://apiban.org/api/get",
                );
                ok = false;
            }
            Some(u)
        }
        None => None,
    };
    let path = abs_path(w, t, "path");
    let key_file = abs_path(w, t, "key_file");
    let source = match (url, path, get(t, "path").is_some()) {
        (Some(_), _, true) => {
            w.error(
                span.clone(),
                "a feed has a `url` or a `path`, not both",
                "keep one",
            );
            return None;
        }
        (Some(u), _, false) => FeedSource::Url(u),
        (None, Some(p), _) => FeedSource::Path(p),
        (None, None, true) => return None,
        (None, None, false) => {
            w.error(
                span.clone(),
                "this [[feed]] has no `url` or `path`",
                "where the list comes from",
            );
            return None;
        }
    };
    if format == Some(FeedFormat::Apiban) {
        if get(t, "key_file").is_none() {
            w.error(
                span.clone(),
                "an APIBAN feed needs `key_file`",
                "the file holding your APIBAN key",
            );
            ok = false;
        }
        if matches!(source, FeedSource::Path(_)) {
            w.error(
                span.clone(),
                "an APIBAN feed is fetched: give its `url`",
                "https://apiban.org/api/get",
            );
            ok = false;
        }
    }
    let min = if matches!(source, FeedSource::Url(_)) {
        60
    } else {
        1
    };
    let interval = match get(t, "interval") {
        Some(v) => {
            let s = w.str(v, "interval")?;
            match parse_duration(s) {
                Ok(n) if n >= min => n,
                Ok(_) => {
                    w.error(
                        v.span(),
                        format!("`{s}` is too often"),
                        &format!("at least {min} s (a feed's server must not be hammered)"),
                    );
                    ok = false;
                    0
                }
                Err(e) => {
                    w.error(v.span(), e, "e.g. 15m, 4h");
                    ok = false;
                    0
                }
            }
        }
        None => match format {
            Some(FeedFormat::Apiban) => 15 * 60,
            Some(FeedFormat::Voipbl) => 4 * 3600,
            _ => 3600,
        },
    };
    let timeout = match get(t, "timeout") {
        Some(v) => {
            let s = w.str(v, "timeout")?;
            match parse_duration(s) {
                Ok(n) if (1..=600).contains(&n) => n,
                Ok(_) => {
                    w.error(
                        v.span(),
                        format!("`{s}` is not a feed timeout"),
                        "1s to 10m",
                    );
                    ok = false;
                    0
                }
                Err(e) => {
                    w.error(v.span(), e, "e.g. 30s");
                    ok = false;
                    0
                }
            }
        }
        None => 60,
    };
    if !ok {
        return None;
    }
    Some(FeedSettings {
        name,
        format: format?,
        source,
        key_file,
        interval,
        timeout,
        origin,
    })
}

/// One `[[notify]]` entry.
fn notify_from(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    span: Range<usize>,
    origin: Provenance,
) -> Option<NotifySettings> {
    w.check_keys(
        t,
        &[
            "kind",
            "url",
            "secret_file",
            "server",
            "tls",
            "from",
            "to",
            "username",
            "password_file",
            "events",
            "ban_storm",
        ],
        "[[notify]]",
    );
    let mut events: Vec<String> = NOTIFY_EVENTS.iter().map(|e| (*e).to_string()).collect();
    if let Some(v) = get(t, "events") {
        events.clear();
        for (e, sp) in w.str_list(v, "events") {
            if NOTIFY_EVENTS.contains(&e.as_str()) {
                events.push(e);
            } else {
                w.error(
                    sp,
                    format!("`{e}` is not a notification event"),
                    &format!("one of {}", NOTIFY_EVENTS.join(", ")),
                );
            }
        }
    }
    let ban_storm = match get(t, "ban_storm") {
        Some(v) => u32::try_from(w.int(v, "ban_storm", 1, 1_000_000)?).ok()?,
        None => 100,
    };
    let need = |w: &mut Walker<'_>, key: &str, what: &str| -> Option<String> {
        match get(t, key) {
            Some(v) => w.str(v, key).map(str::to_string),
            None => {
                w.error(
                    span.clone(),
                    format!("this [[notify]] entry has no `{key}`"),
                    what,
                );
                None
            }
        }
    };
    let kind = need(w, "kind", "`kind = \"webhook\"` or `kind = \"email\"`")?;
    // An entry's mistakes are all reported before it is dropped.
    let mut ok = true;
    let target = match kind.as_str() {
        "webhook" => {
            let url = need(w, "url", "the URL the JSON is POSTed to")?;
            let authority = url
                .split_once("://")
                .map_or("", |(_, r)| r.split('/').next().unwrap_or(""));
            let bare_v6 = !authority.starts_with('[') && authority.matches(':').count() > 1;
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.chars().any(|c| c.is_control() || c.is_whitespace())
                || authority.is_empty()
                || bare_v6
            {
                let sp = get(t, "url").map_or(span.clone(), |v| v.span());
                w.error(
                    sp,
                    format!("`{}` is not an http:// or https:// URL", url.escape_debug()),
                    "e.g. https://hooks.example.org/voipwall (an IPv6 address in brackets: http://[2001:db8::1]:8080/)",
                );
                ok = false;
            }
            if get(t, "secret_file").is_none() {
                w.error(
                    span,
                    "a webhook needs `secret_file`",
                    "the key that signs every notification (HMAC-SHA256), in a file only root reads",
                );
                return None;
            }
            let secret_file = abs_path(w, t, "secret_file");
            NotifyTarget::Webhook {
                url,
                secret_file: secret_file.filter(|_| ok)?,
            }
        }
        "email" => {
            let server = need(w, "server", "the SMTP server as host:port")?;
            if server
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                let sp = get(t, "server").map_or(span.clone(), |v| v.span());
                w.error(
                    sp,
                    format!("`{server}` is not host:port"),
                    "e.g. mail.example.org:587",
                );
                ok = false;
            }
            let tls = match get(t, "tls") {
                Some(v) => {
                    let s = w.str(v, "tls")?.to_string();
                    if !["starttls", "tls", "none"].contains(&s.as_str()) {
                        w.error(
                            v.span(),
                            format!("`{s}` is not a TLS mode"),
                            "starttls, tls or none",
                        );
                        return None;
                    }
                    s
                }
                None => "starttls".into(),
            };
            let from = need(w, "from", "the sender address")?;
            let to: Vec<String> = match get(t, "to") {
                Some(v) => w.str_list(v, "to").into_iter().map(|(s, _)| s).collect(),
                None => Vec::new(),
            };
            if to.is_empty() {
                w.error(span, "an e-mail entry needs `to`", "one or more recipients");
                return None;
            }
            let username = match get(t, "username") {
                Some(v) => Some(w.str(v, "username")?.to_string()),
                None => None,
            };
            if username.is_some() && get(t, "password_file").is_none() {
                w.error(
                    span,
                    "`username` without `password_file`",
                    "give the file holding the SMTP password",
                );
                return None;
            }
            if username.is_some() && tls == "none" {
                let sp = get(t, "tls").map_or(span.clone(), |v| v.span());
                w.error(
                    sp,
                    "a password would cross the network in plain text",
                    "use tls = \"starttls\" or \"tls\" with a login, or no login",
                );
                return None;
            }
            let password_file = abs_path(w, t, "password_file");
            if !ok {
                return None;
            }
            NotifyTarget::Email {
                server,
                tls,
                from,
                to,
                username,
                password_file,
            }
        }
        other => {
            let sp = get(t, "kind").map_or(span, |v| v.span());
            w.error(
                sp,
                format!("`{other}` is not a notification kind"),
                "webhook or email",
            );
            return None;
        }
    };
    Some(NotifySettings {
        target,
        events,
        ban_storm,
        origin,
    })
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != '"' && c != '\\')
}

/// Ports from the `Port` lines of an sshd_config (empty when none are set).
pub fn sshd_ports(text: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = text
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let key = parts.next()?;
            if !key.eq_ignore_ascii_case("port") {
                return None;
            }
            parts.next()?.parse::<u16>().ok().filter(|p| *p != 0)
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Whether `net` covers any of `addrs` (used by callers that refuse bans).
pub fn covers_any(net: &IpNet, addrs: &[IpAddr]) -> Option<IpAddr> {
    addrs.iter().copied().find(|a| net.contains(a))
}

/// "Every address" spelled in pieces (`0.0.0.0/1` + `128.0.0.0/1`): the
/// union of `parts` is judged per family, not each entry. A single /0 is
/// refused where it is written; this catches the rest, at the entry that
/// completes the cover, naming the others. With `whole_too`, a single /0 is
/// judged here as well.
fn every_address_in_pieces(
    parts: &[(IpNet, &At<String>)],
    what: &str,
    effect: &str,
    whole_too: bool,
    diags: &mut Vec<Diagnostic>,
) {
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        let mine: Vec<&(IpNet, &At<String>)> = parts
            .iter()
            .filter(|(n, _)| matches!(n, IpNet::V4(_)) == v4 && (whole_too || n.prefix_len() > 0))
            .collect();
        let nets: Vec<IpNet> = mine.iter().map(|(n, _)| *n).collect();
        if !IpNet::aggregate(&nets).iter().any(|n| n.prefix_len() == 0) {
            continue;
        }
        let Some((_, last)) = mine.last() else {
            continue;
        };
        let listed: Vec<String> = mine.iter().map(|(n, _)| format!("`{n}`")).collect();
        diags.push(
            Diagnostic::error(
                last.file,
                last.span.clone(),
                format!(
                    "{what} {} {} every {family} address: {} {effect}",
                    listed.join(" + "),
                    if listed.len() == 1 {
                        "covers"
                    } else {
                        "together cover"
                    },
                    if listed.len() == 1 { "it" } else { "they" },
                ),
            )
            .label(format!("completes every {family} address"))
            .help("if that is really meant, set `[host] firewall_off_for_everyone = true`"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd() {
        assert_eq!(
            sshd_ports("# Port 99\nPort 2222\n  port 22\nListenAddress 0.0.0.0\n"),
            vec![22, 2222]
        );
        assert!(sshd_ports("").is_empty());
    }

    #[test]
    fn include_paths() {
        assert_eq!(
            resolve_path("/etc/voipwall/voipwall.toml", "nets.toml"),
            "/etc/voipwall/nets.toml"
        );
        assert_eq!(resolve_path("p.toml", "a/b.toml"), "a/b.toml");
        assert_eq!(resolve_path("x/p.toml", "/abs.toml"), "/abs.toml");
    }
}
