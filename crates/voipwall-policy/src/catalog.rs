//! The service and preset catalog: small TOML data files (`data/services`,
//! `data/presets`) embedded in the binary and overridable, file by file, from
//! `/usr/share/voipwall` and `/etc/voipwall`. Every file carries examples that
//! a test compiles and checks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use toml::de::DeTable;

use crate::diag::{Diagnostic, SourceMap};
use crate::model::{
    LogSource, PortSource, PortSpec, Proto, Provenance, Service, SipTransport, Zone,
    parse_port_range, parse_port_specs,
};
use crate::walk::{Table, Walker, get};

include!(concat!(env!("OUT_DIR"), "/builtin_data.rs"));

/// One file of catalog data: its kind is taken from its directory.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// `services/sip.toml`, `presets/freepbx.toml`.
    pub path: String,
    /// Layer it came from: `builtin`, `/usr/share/voipwall`, `/etc/voipwall`.
    pub layer: String,
    /// Contents.
    pub text: String,
}

impl DataFile {
    /// The embedded data files.
    pub fn builtin() -> Vec<Self> {
        BUILTIN_DATA
            .iter()
            .map(|(path, text)| Self {
                path: (*path).to_string(),
                layer: "builtin".into(),
                text: (*text).to_string(),
            })
            .collect()
    }
}

/// What a preset says about a host: which zones get which services, and RTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preset {
    /// Name (`freepbx`).
    pub name: String,
    /// Human description.
    pub description: String,
    /// How to recognise the software on a host (systemd units, paths).
    pub detect_units: Vec<String>,
    /// Paths whose presence suggests this preset.
    pub detect_paths: Vec<String>,
    /// RTP ranges; empty means the catalog's `rtp` service default.
    pub rtp: Vec<PortSpec>,
    /// Services granted per zone.
    pub zones: BTreeMap<Zone, Vec<String>>,
    /// Where each zone's list is written in the preset file.
    pub zone_origins: BTreeMap<Zone, Provenance>,
    /// Services the preset defines itself.
    pub services: BTreeMap<String, Service>,
    /// The logs this software usually writes (`[[source]]`).
    pub sources: Vec<LogSource>,
    /// Where it was defined.
    pub origin: Provenance,
}

/// Reads one `[[source]]` table; `None` (with an error) when it names no
/// format or not exactly one of `path` and `journal`. The second value is
/// `enabled` (a policy turns a preset's source off with `false`).
pub(crate) fn source_from(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    span: std::ops::Range<usize>,
    origin: &Provenance,
) -> Option<(LogSource, bool)> {
    w.check_keys(
        t,
        &["format", "path", "journal", "transports", "enabled"],
        "a [[source]] entry",
    );
    let format = match get(t, "format") {
        Some(v) => w.str(v, "format")?.to_string(),
        None => {
            w.error(
                span,
                "[[source]] has no `format`",
                "e.g. format = \"asterisk-security\"",
            );
            return None;
        }
    };
    let path = get(t, "path")
        .and_then(|v| w.str(v, "path"))
        .map(str::to_string);
    let journal = get(t, "journal")
        .and_then(|v| w.str(v, "journal"))
        .map(str::to_string);
    if path.is_some() == journal.is_some() {
        w.error(
            span,
            "[[source]] needs exactly one of `path` and `journal`",
            "path = \"/var/log/...\" or journal = \"unit.service\"",
        );
        return None;
    }
    if let Some(p) = &path
        && !p.starts_with('/')
    {
        w.error(
            span,
            format!("source path `{p}` is not absolute"),
            "an absolute path",
        );
        return None;
    }
    let mut transports = Vec::new();
    if let Some(v) = get(t, "transports") {
        for (tr, sp) in w.str_list(v, "transports") {
            if ["udp", "tcp", "tls", "ws", "wss"].contains(&tr.as_str()) {
                transports.push(tr);
            } else {
                w.error(
                    sp,
                    format!("unknown transport `{tr}`"),
                    "udp, tcp, tls, ws or wss",
                );
            }
        }
    }
    let enabled = get(t, "enabled")
        .and_then(|v| w.bool(v, "enabled"))
        .unwrap_or(true);
    Some((
        LogSource {
            format,
            path,
            journal,
            transports,
            origin: origin.clone(),
        },
        enabled,
    ))
}

/// An example a data file carries: a policy and what must happen to traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    /// The data file it belongs to.
    pub origin: Provenance,
    /// Policy text.
    pub policy: String,
    /// Expected verdicts.
    pub expect: Vec<Expect>,
}

/// One expected verdict: traffic from `from` on `iface` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expect {
    /// Source address.
    pub from: IpAddr,
    /// Inbound interface.
    pub iface: String,
    /// Protocol.
    pub proto: Proto,
    /// Destination port.
    pub port: u16,
    /// `accept` or `drop`.
    pub verdict: String,
}

/// The loaded catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Presets by name.
    pub presets: BTreeMap<String, Preset>,
    /// Examples from every file.
    pub examples: Vec<Example>,
    /// Which layer each file name won from.
    pub layers: BTreeMap<String, String>,
    /// Ids of the detection rules the driver knows (`data/rules`), so that
    /// `[detect.rules.<id>]` can be checked; empty skips the check.
    pub rule_ids: Vec<String>,
}

impl Catalog {
    /// The preset names, comma-separated, for messages.
    pub fn preset_names(&self) -> String {
        self.presets.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Loads data files in order; a later file with the same path replaces an
    /// earlier one (the `/etc` layer beats the built-in one).
    pub fn load(files: &[DataFile], sources: &mut SourceMap) -> (Self, Vec<Diagnostic>) {
        let mut winners: BTreeMap<&str, &DataFile> = BTreeMap::new();
        for f in files {
            winners.insert(f.path.as_str(), f);
        }
        let mut cat = Self::default();
        let mut diags = Vec::new();
        for (path, f) in winners {
            let name = if f.layer == "builtin" {
                format!("builtin:{path}")
            } else {
                format!("{}/{path}", f.layer.trim_end_matches('/'))
            };
            let id = sources.add(name.clone(), f.text.clone());
            let (doc, errs) = DeTable::parse_recoverable(&f.text);
            for e in errs {
                diags.push(
                    Diagnostic::error(id, e.span().unwrap_or(0..0), e.message().to_string())
                        .label("TOML syntax"),
                );
            }
            let mut w = Walker {
                file: id,
                diags: &mut diags,
            };
            let stem = path
                .rsplit('/')
                .next()
                .unwrap_or(path)
                .trim_end_matches(".toml")
                .to_string();
            let line_of = |span: std::ops::Range<usize>, sm: &SourceMap| Provenance {
                file: name.clone(),
                line: sm.line_col(id, span.start).0,
            };
            let origin = line_of(0..0, sources);
            cat.layers.insert(path.to_string(), f.layer.clone());
            if path.starts_with("services/") {
                if let Some(s) = service_from(&mut w, doc.get_ref(), &origin, Some(&stem)) {
                    cat.services.insert(s.name.clone(), s);
                }
            } else if path.starts_with("presets/") {
                if let Some(p) = preset_from(&mut w, doc.get_ref(), &origin, &stem, sources) {
                    cat.presets.insert(p.name.clone(), p);
                }
            } else {
                w.error(
                    0..0,
                    format!("`{path}` is not under services/ or presets/"),
                    "unknown data kind",
                );
                continue;
            }
            if let Some(v) = get(doc.get_ref(), "example") {
                for ex in w.array(v, "example") {
                    if let Some(t) = w.table(ex, "example")
                        && let Some(e) = example_from(&mut w, t, &line_of(ex.span(), sources))
                    {
                        cat.examples.push(e);
                    }
                }
            }
        }
        (cat, diags)
    }
}

const SERVICE_KEYS: &[&str] = &[
    "name",
    "description",
    "ports",
    "sip",
    "sip_transport",
    "port_from",
    "example",
];

/// Reads a service definition table. `expect_name` is the file stem for
/// catalog files (the name must equal it); `None` for inline definitions.
pub(crate) fn service_from(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    origin: &Provenance,
    expect_name: Option<&str>,
) -> Option<Service> {
    let mut keys = SERVICE_KEYS.to_vec();
    if expect_name.is_none() {
        keys.retain(|k| *k != "example" && *k != "name");
    }
    w.check_keys(t, &keys, "a service");
    let name = match (expect_name, get(t, "name")) {
        (Some(stem), Some(v)) => {
            let n = w.str(v, "name")?;
            if n != stem {
                w.error(
                    v.span(),
                    format!("service name `{n}` differs from its file name `{stem}.toml`"),
                    "must equal the file name",
                );
            }
            n.to_string()
        }
        (Some(stem), None) => stem.to_string(),
        (None, _) => String::new(),
    };
    let description = get(t, "description")
        .and_then(|v| w.str(v, "description"))
        .unwrap_or("")
        .to_string();
    let mut ports = Vec::new();
    match get(t, "ports") {
        Some(v) => {
            for (p, span) in w.str_list(v, "ports") {
                match parse_port_specs(&p) {
                    Ok(specs) => ports.extend(specs),
                    Err(e) => w.error(
                        span,
                        format!("invalid port `{p}`: {e}"),
                        "expected e.g. udp/5060 or udp/10000-20000",
                    ),
                }
            }
        }
        // Inline services are reported by the caller, which knows the name's span.
        None if expect_name.is_some() => w.error(
            0..0,
            format!("service `{name}` has no `ports`"),
            "missing ports",
        ),
        None => {}
    }
    let sip = get(t, "sip")
        .and_then(|v| w.bool(v, "sip"))
        .unwrap_or(false);
    // `sip_transport = "tls"` for every port, or a table naming the ports
    // that are not plain: `sip_transport = { "tcp/5061" = "tls" }`.
    let mut sip_transport = SipTransport::Plain;
    let mut sip_transport_of = Vec::new();
    if let Some(v) = get(t, "sip_transport") {
        let one = |w: &mut Walker<'_>, v: &toml::Spanned<toml::de::DeValue<'_>>| match v
            .get_ref()
            .as_str()
        {
            Some("plain") => Some(SipTransport::Plain),
            Some("ws") => Some(SipTransport::Ws),
            Some("tls") => Some(SipTransport::Tls),
            Some("wss") => Some(SipTransport::Wss),
            other => {
                w.error(
                    v.span(),
                    match other {
                        Some(o) => format!("unknown SIP transport `{o}`"),
                        None => "a SIP transport must be a string".to_string(),
                    },
                    "expected `plain`, `ws`, `tls` or `wss`",
                );
                None
            }
        };
        if let Some(table) = v.get_ref().as_table() {
            for (k, tv) in table {
                let Some(tr) = one(w, tv) else { continue };
                match parse_port_specs(k.get_ref()) {
                    Ok(specs) => {
                        for p in specs {
                            if !ports.contains(&p) {
                                w.error(
                                    k.span(),
                                    format!("`{}` is not one of this service's ports", k.get_ref()),
                                    "name a port listed in `ports`",
                                );
                            }
                            sip_transport_of.push((p, tr));
                        }
                    }
                    Err(e) => w.error(
                        k.span(),
                        format!("invalid port `{}`: {e}", k.get_ref()),
                        "expected e.g. tcp/5061",
                    ),
                }
            }
        } else if let Some(tr) = one(w, v) {
            sip_transport = tr;
        }
    }
    let port_from = match get(t, "port_from") {
        Some(v) => match w.str(v, "port_from") {
            Some("sshd_config") => Some(PortSource::SshdConfig),
            Some("pbx") => Some(PortSource::Pbx),
            Some(other) => {
                w.error(
                    v.span(),
                    format!("unknown port source `{other}`"),
                    "expected `sshd_config` or `pbx`",
                );
                None
            }
            None => None,
        },
        None => None,
    };
    Some(Service {
        name,
        description,
        ports,
        sip,
        sip_transport,
        sip_transport_of,
        port_from,
        origin: origin.clone(),
    })
}

const PRESET_KEYS: &[&str] = &[
    "name",
    "description",
    "detect",
    "rtp",
    "zones",
    "services",
    "source",
    "example",
];

fn preset_from(
    w: &mut Walker<'_>,
    t: &Table<'_>,
    origin: &Provenance,
    stem: &str,
    sources: &SourceMap,
) -> Option<Preset> {
    w.check_keys(t, PRESET_KEYS, "a preset");
    if let Some(v) = get(t, "name")
        && let Some(n) = w.str(v, "name")
        && n != stem
    {
        w.error(
            v.span(),
            format!("preset name `{n}` differs from its file name `{stem}.toml`"),
            "must equal the file name",
        );
    }
    let description = get(t, "description")
        .and_then(|v| w.str(v, "description"))
        .unwrap_or("")
        .to_string();
    let (mut detect_units, mut detect_paths) = (Vec::new(), Vec::new());
    if let Some(d) = get(t, "detect").and_then(|v| w.table(v, "detect")) {
        w.check_keys(d, &["units", "paths"], "[detect]");
        if let Some(v) = get(d, "units") {
            detect_units = w.str_list(v, "units").into_iter().map(|x| x.0).collect();
        }
        if let Some(v) = get(d, "paths") {
            detect_paths = w.str_list(v, "paths").into_iter().map(|x| x.0).collect();
        }
    }
    let mut log_sources = Vec::new();
    if let Some(v) = get(t, "source") {
        for e in w.array(v, "source") {
            if let Some(et) = w.table(e, "source")
                && let Some((s, _)) = source_from(w, et, e.span(), origin)
            {
                log_sources.push(s);
            }
        }
    }
    let rtp = get(t, "rtp").map(|v| rtp_ranges(w, v)).unwrap_or_default();
    let mut zones = BTreeMap::new();
    let mut zone_origins = BTreeMap::new();
    if let Some(zt) = get(t, "zones").and_then(|v| w.table(v, "zones")) {
        for (k, v) in zt.iter() {
            let Ok(zone) = k.get_ref().parse::<Zone>() else {
                w.error(
                    k.span(),
                    format!("unknown zone `{}`", k.get_ref()),
                    "not a zone",
                );
                continue;
            };
            zone_origins.insert(
                zone,
                Provenance {
                    file: origin.file.clone(),
                    line: sources.line_col(w.file, k.span().start).0,
                },
            );
            zones.insert(
                zone,
                w.str_list(v, "zone services")
                    .into_iter()
                    .map(|x| x.0)
                    .collect(),
            );
        }
    }
    let mut services = BTreeMap::new();
    if let Some(st) = get(t, "services").and_then(|v| w.table(v, "services")) {
        for (k, v) in st.iter() {
            if let Some(svc_t) = w.table(v, "a service") {
                let origin = Provenance {
                    file: origin.file.clone(),
                    line: sources.line_col(w.file, k.span().start).0,
                };
                if let Some(mut s) = service_from(w, svc_t, &origin, None) {
                    s.name = k.get_ref().to_string();
                    services.insert(s.name.clone(), s);
                }
            }
        }
    }
    Some(Preset {
        name: stem.to_string(),
        description,
        detect_units,
        detect_paths,
        rtp,
        zones,
        zone_origins,
        services,
        sources: log_sources,
        origin: origin.clone(),
    })
}

/// Parses RTP ranges: `"10000-20000"` or a list of them (UDP implied).
pub(crate) fn rtp_ranges(w: &mut Walker<'_>, v: &crate::walk::Value<'_>) -> Vec<PortSpec> {
    let mut out = Vec::new();
    for (s, span) in w.str_list(v, "rtp ranges") {
        let s2 = s.strip_prefix("udp/").unwrap_or(&s);
        match parse_port_range(s2) {
            Ok((lo, hi)) => {
                if lo < 1024 {
                    w.error(
                        span,
                        format!("RTP range `{s}` starts below 1024"),
                        "privileged ports are refused for RTP",
                    );
                } else {
                    out.push(PortSpec {
                        proto: Proto::Udp,
                        lo,
                        hi,
                    });
                }
            }
            Err(e) => w.error(
                span,
                format!("invalid RTP range `{s}`: {e}"),
                "expected e.g. 10000-20000",
            ),
        }
    }
    out
}

fn example_from(w: &mut Walker<'_>, t: &Table<'_>, origin: &Provenance) -> Option<Example> {
    w.check_keys(t, &["description", "policy", "expect"], "an example");
    let policy = get(t, "policy")
        .and_then(|v| w.str(v, "policy"))?
        .to_string();
    let mut expect = Vec::new();
    if let Some(v) = get(t, "expect") {
        for e in w.array(v, "expect") {
            let Some(et) = w.table(e, "expect") else {
                continue;
            };
            w.check_keys(et, &["from", "iface", "to", "verdict"], "an expectation");
            let from = get(et, "from").and_then(|v| {
                let s = w.str(v, "from")?;
                s.parse::<IpAddr>()
                    .map_err(|_| {
                        w.error(
                            v.span(),
                            format!("`{s}` is not an address"),
                            "expected an IP address",
                        )
                    })
                    .ok()
            });
            let iface = get(et, "iface")
                .and_then(|v| w.str(v, "iface"))
                .unwrap_or("eth0")
                .to_string();
            let to = get(et, "to").and_then(|v| {
                let s = w.str(v, "to")?;
                match parse_port_specs(s) {
                    Ok(p) if p.len() == 1 && p[0].lo == p[0].hi => Some(p[0]),
                    _ => {
                        w.error(
                            v.span(),
                            format!("`{s}` is not a single port"),
                            "expected e.g. udp/5060",
                        );
                        None
                    }
                }
            });
            let verdict = get(et, "verdict").and_then(|v| {
                let s = w.str(v, "verdict")?;
                if matches!(s, "accept" | "drop" | "reject") {
                    Some(s.to_string())
                } else {
                    w.error(
                        v.span(),
                        format!("unknown verdict `{s}`"),
                        "expected accept, drop or reject",
                    );
                    None
                }
            });
            if let (Some(from), Some(to), Some(verdict)) = (from, to, verdict) {
                expect.push(Expect {
                    from,
                    iface,
                    proto: to.proto,
                    port: to.lo,
                    verdict,
                });
            }
        }
    }
    Some(Example {
        origin: origin.clone(),
        policy,
        expect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_layer_replaces_a_builtin_file() {
        let mut files = DataFile::builtin();
        files.push(DataFile {
            path: "services/sip.toml".into(),
            layer: "/etc/voipwall".into(),
            text: "name = \"sip\"\ndescription = \"SIP moved to 5080\"\nports = [\"udp/5080\"]\nsip = true\n\
                   [[example]]\npolicy = \"[zones.internet]\\nservices = [\\\"sip\\\"]\"\n\
                   expect = [{ from = \"203.0.113.9\", to = \"udp/5080\", verdict = \"accept\" }]\n"
                .into(),
        });
        let mut sm = SourceMap::default();
        let (cat, diags) = Catalog::load(&files, &mut sm);
        assert!(diags.is_empty(), "{diags:?}");
        let sip = &cat.services["sip"];
        assert_eq!(sip.ports.len(), 1);
        assert_eq!(sip.ports[0].lo, 5080);
        assert_eq!(cat.layers["services/sip.toml"], "/etc/voipwall");
        assert!(sip.origin.file.starts_with("/etc/voipwall/"));
        // The replaced file's examples are gone with it; the new one is there.
        let sip_examples: Vec<_> = cat
            .examples
            .iter()
            .filter(|e| e.origin.file.ends_with("services/sip.toml"))
            .collect();
        assert_eq!(sip_examples.len(), 1);
        assert_eq!(sip_examples[0].expect[0].port, 5080);
    }

    #[test]
    fn a_data_file_with_a_wrong_name_is_refused() {
        let files = vec![DataFile {
            path: "services/foo.toml".into(),
            layer: "/etc/voipwall".into(),
            text: "name = \"bar\"\nports = [\"tcp/1\"]\n".into(),
        }];
        let mut sm = SourceMap::default();
        let (_, diags) = Catalog::load(&files, &mut sm);
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("differs from its file name"));
    }
}
