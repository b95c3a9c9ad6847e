//! Discovery: what the PBX's own configuration says about the host.
//!
//! FreePBX Firewall's best idea is that it reads the PBX and needs no
//! per-trunk configuration. This crate does that for Asterisk (`pjsip.conf`,
//! `sip.conf`, `iax.conf`, `rtp.conf`, with `#include` and templates),
//! FreeSWITCH (sofia profiles and gateways, `switch.conf.xml`, the
//! directory, `X-PRE-PROCESS` includes and variables), Kamailio
//! (`kamailio.cfg` listen lines, `dispatcher.list`, the permissions
//! `address` table file) and sshd (`Port`).
//!
//! The parsers are pure: every file is read through [`Files`], so tests and
//! fuzz targets feed text from memory and the driver feeds the disk
//! ([`Disk`], the one adapter that does I/O). Nothing here resolves names:
//! hostnames and SRV names are reported as such and resolved by the driver.
//!
//! What comes out:
//! - [`Listener`]s: the ports each PBX component binds, which feed the
//!   `sip`, `sip-tls`, `chan-sip` and `iax2` services;
//! - [`Peer`]s: trunks and peers, each restricted to the ports of its own
//!   driver (an IAX peer gets the IAX port, never SIP);
//! - the RTP range; the SSH ports;
//! - [`Secret`]s for `voipwall audit`'s weak-secret check ([`weak`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use voipwall_policy::{NetSpec, PortSpec, Proto, Provenance};

mod apply;
mod asterisk;
mod freeswitch;
mod fs;
mod kamailio;
pub mod weak;
mod xml;

pub use apply::{apply, roots};
pub use asterisk::{Section, parse_ini};
pub use fs::Disk;
pub use xml::{Token, tokenize};

/// Read access to configuration files. The only way the parsers see files.
pub trait Files {
    /// The text of a file; `None` when it does not exist or cannot be read.
    fn read(&self, path: &str) -> Option<String>;
    /// Files matching `pattern`, where `*` and `?` may appear in the last
    /// path component only; sorted.
    fn glob(&self, pattern: &str) -> Vec<String>;
}

/// Files held in memory (tests, fuzzing, `--dry-run` of fixtures).
impl Files for BTreeMap<String, String> {
    fn read(&self, path: &str) -> Option<String> {
        self.get(path).cloned()
    }

    fn glob(&self, pattern: &str) -> Vec<String> {
        let (dir, pat) = split_dir(pattern);
        self.keys()
            .filter(|k| {
                let (kd, name) = split_dir(k);
                kd == dir && glob_match(pat, name)
            })
            .cloned()
            .collect()
    }
}

/// `("/etc/asterisk", "pjsip*.conf")`.
pub(crate) fn split_dir(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

/// Shell-style match of one path component: `*` any run, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with one backtrack point.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Joins a relative path to a directory; absolute paths stay as they are.
pub(crate) fn join(dir: &str, path: &str) -> String {
    if path.starts_with('/') || dir.is_empty() {
        path.to_string()
    } else {
        format!("{}/{path}", dir.trim_end_matches('/'))
    }
}

/// A PBX or proxy whose configuration was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pbx {
    /// Asterisk (also under FreePBX).
    Asterisk,
    /// FreeSWITCH (also under FusionPBX).
    FreeSwitch,
    /// Kamailio.
    Kamailio,
}

impl Pbx {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Asterisk => "asterisk",
            Self::FreeSwitch => "freeswitch",
            Self::Kamailio => "kamailio",
        }
    }
}

/// A port a PBX component binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// The catalog service it feeds: `sip`, `sip-tls`, `chan-sip`, `iax2`,
    /// `sip-ws`, `sip-wss`.
    pub service: String,
    /// The component: `pjsip`, `chan_sip`, `iax2`, `sofia/internal`, `kamailio`.
    pub driver: String,
    /// Protocol and port.
    pub port: PortSpec,
    /// Where it was configured (or the default it falls back to).
    pub origin: Provenance,
}

/// A trunk, peer or dispatcher destination: a source the PBX expects
/// traffic from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Section, gateway or set name.
    pub name: String,
    /// The component it talks to (same names as [`Listener::driver`]).
    pub driver: String,
    /// What made it a peer: `identify match`, `static contact`,
    /// `registration`, `sip peer`, `iax peer`, `gateway`, `dispatcher`,
    /// `permissions address`.
    pub role: String,
    /// Address, prefix or hostname.
    pub host: NetSpec,
    /// The name is looked up as SIP SRV records (`_sip._udp.<name>`) as well
    /// as A/AAAA: a SIP URI without a port, as Asterisk and FreeSWITCH do.
    pub srv: bool,
    /// The ports this peer may reach: its driver's listeners, filled in by
    /// [`discover`].
    pub ports: Vec<PortSpec>,
    /// Where it was written.
    pub origin: Provenance,
}

/// A SIP or IAX secret found in the configuration, for the weak-secret audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The component.
    pub driver: String,
    /// Section or user id (`1001`, `trunk-auth`).
    pub section: String,
    /// The user name the secret goes with (the extension for phones).
    pub user: String,
    /// The secret itself (never printed by the audit, only judged).
    #[serde(skip)]
    pub secret: String,
    /// Where it was written.
    pub origin: Provenance,
}

/// Where to look. `None` skips that PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// Asterisk configuration directory (`/etc/asterisk`).
    pub asterisk: Option<String>,
    /// FreeSWITCH configuration directory (`/etc/freeswitch`).
    pub freeswitch: Option<String>,
    /// Kamailio configuration directory (`/etc/kamailio`).
    pub kamailio: Option<String>,
    /// sshd configuration file (`/etc/ssh/sshd_config`).
    pub sshd_config: Option<String>,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            asterisk: Some("/etc/asterisk".into()),
            freeswitch: Some("/etc/freeswitch".into()),
            kamailio: Some("/etc/kamailio".into()),
            sshd_config: Some("/etc/ssh/sshd_config".into()),
        }
    }
}

/// Everything discovered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Which PBX configurations were found.
    pub found: Vec<Pbx>,
    /// Bound ports.
    pub listeners: Vec<Listener>,
    /// Listener ports that speak TLS inside a service that is otherwise
    /// plain (chan_sip's TLS port beside pjsip, in service `chan-sip`):
    /// packet copies cannot read them.
    #[serde(default)]
    pub tls_ports: Vec<PortSpec>,
    /// Trunks and peers.
    pub peers: Vec<Peer>,
    /// RTP range (`rtp.conf`, `switch.conf.xml`).
    pub rtp: Option<(PortSpec, Provenance)>,
    /// sshd ports.
    pub ssh_ports: Vec<(u16, Provenance)>,
    /// Secrets, for the audit.
    pub secrets: Vec<Secret>,
    /// Things the operator should know: unreadable includes, values that
    /// could not be understood, defaults assumed.
    pub notes: Vec<String>,
}

impl Discovery {
    /// Ports discovered per catalog service, sorted and deduplicated, with
    /// where the first of them was configured.
    pub fn service_ports(&self) -> BTreeMap<String, (Vec<PortSpec>, Provenance)> {
        let mut out: BTreeMap<String, (Vec<PortSpec>, Provenance)> = BTreeMap::new();
        for l in &self.listeners {
            let e = out
                .entry(l.service.clone())
                .or_insert_with(|| (Vec::new(), l.origin.clone()));
            e.0.push(l.port);
        }
        for (ports, _) in out.values_mut() {
            ports.sort();
            ports.dedup();
        }
        out
    }

    fn listener_ports(&self, driver: &str) -> Vec<PortSpec> {
        let mut v: Vec<PortSpec> = self
            .listeners
            .iter()
            .filter(|l| l.driver == driver)
            .map(|l| l.port)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// A PBX whose configuration sets no RTP range binds its built-in one:
/// that is the range the policy must open (or calls get one-way audio).
pub(crate) fn builtin_rtp(
    d: &mut Discovery,
    (lo, hi): (u16, u16),
    path: &str,
    why: &str,
    pbx: &str,
) {
    d.notes.push(format!(
        "{path}: {why}; {pbx}'s built-in RTP range {lo}-{hi} applies"
    ));
    d.rtp = Some((
        PortSpec {
            proto: Proto::Udp,
            lo,
            hi,
        },
        prov(&format!("{path} ({why}: {pbx}'s built-in default)"), 0),
    ));
}

pub(crate) fn prov(file: &str, line: usize) -> Provenance {
    Provenance {
        file: file.to_string(),
        line,
    }
}

pub(crate) fn port(proto: Proto, p: u16) -> PortSpec {
    PortSpec {
        proto,
        lo: p,
        hi: p,
    }
}

/// Splits `host[:port]`, `[v6]:port` and bare IPv6 addresses.
pub(crate) fn split_host_port(s: &str) -> (&str, Option<u16>) {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h, port);
        }
        return (rest, None);
    }
    if s.matches(':').count() > 1 {
        return (s, None); // bare IPv6
    }
    match s.split_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (s, None),
    }
}

/// The host part of a SIP URI (`sip:user@host:port;params`), its port and
/// transport parameter.
pub(crate) fn sip_uri_host(uri: &str) -> Option<(String, Option<u16>, Option<String>)> {
    let uri = uri.trim().trim_matches(|c| c == '<' || c == '>');
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .unwrap_or(uri);
    let (hostpart, params) = match rest.split_once(';') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let hostpart = hostpart.rsplit_once('@').map_or(hostpart, |(_, h)| h);
    let hostpart = hostpart.split('?').next().unwrap_or(hostpart);
    let (host, port) = split_host_port(hostpart);
    if host.is_empty() {
        return None;
    }
    let transport = params.and_then(|p| {
        p.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("transport")
                .then(|| v.trim().to_ascii_lowercase())
        })
    });
    Some((host.to_string(), port, transport))
}

/// Makes a peer from a host string; `None` (with a note) for values that
/// are neither an address, a prefix nor a hostname.
pub(crate) fn peer(
    d: &mut Discovery,
    name: &str,
    driver: &str,
    role: &str,
    host: &str,
    srv: bool,
    origin: Provenance,
) {
    match voipwall_policy::parse_net_spec(host.trim()) {
        Ok(spec) => {
            let srv = srv && matches!(spec, NetSpec::Host(_));
            d.peers.push(Peer {
                name: name.to_string(),
                driver: driver.to_string(),
                role: role.to_string(),
                host: spec,
                srv,
                ports: Vec::new(),
                origin,
            });
        }
        Err(e) => d.notes.push(format!(
            "{origin}: {driver} {role} `{name}`: host `{host}` skipped: {e}"
        )),
    }
}

/// Reads everything under `roots` through `files`.
pub fn discover(files: &dyn Files, roots: &Roots) -> Discovery {
    let mut d = Discovery::default();
    if let Some(dir) = &roots.asterisk {
        asterisk::discover(files, dir, &mut d);
    }
    if let Some(dir) = &roots.freeswitch {
        freeswitch::discover(files, dir, &mut d);
    }
    if let Some(dir) = &roots.kamailio {
        kamailio::discover(files, dir, &mut d);
    }
    if let Some(path) = &roots.sshd_config
        && let Some(text) = files.read(path)
    {
        for (i, line) in text.lines().enumerate() {
            let mut parts = line.split_whitespace();
            if parts.next().is_some_and(|k| k.eq_ignore_ascii_case("port"))
                && let Some(p) = parts.next().and_then(|p| p.parse::<u16>().ok())
                && p != 0
            {
                d.ssh_ports.push((p, prov(path, i + 1)));
            }
        }
    }
    // Each peer reaches exactly its own driver's ports.
    let by_driver: BTreeMap<String, Vec<PortSpec>> = d
        .peers
        .iter()
        .map(|p| p.driver.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|drv| {
            let ports = d.listener_ports(&drv);
            (drv, ports)
        })
        .collect();
    for p in &mut d.peers {
        p.ports = by_driver.get(&p.driver).cloned().unwrap_or_default();
    }
    let empty: Vec<String> = d
        .peers
        .iter()
        .filter(|p| p.ports.is_empty())
        .map(|p| {
            format!(
                "{}: {} `{}` has no port to reach",
                p.origin, p.driver, p.name
            )
        })
        .collect();
    d.notes.extend(empty);
    d.peers.sort_by(|a, b| {
        (&a.driver, &a.name, &a.host, &a.origin).cmp(&(&b.driver, &b.name, &b.host, &b.origin))
    });
    d.peers
        .dedup_by(|a, b| a.driver == b.driver && a.name == b.name && a.host == b.host);
    d.found.sort();
    d.found.dedup();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob_match("*.xml", "a.xml"));
        assert!(glob_match("pjsip*.conf", "pjsip.endpoint.conf"));
        assert!(!glob_match("*.xml", "a.xml.bak"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b*c", "acb"));
    }

    #[test]
    fn uris() {
        assert_eq!(
            sip_uri_host("sip:trunk@sip.example.net:5062;transport=tcp"),
            Some(("sip.example.net".into(), Some(5062), Some("tcp".into())))
        );
        assert_eq!(
            sip_uri_host("sip:[2001:db8::5]:5060"),
            Some(("2001:db8::5".into(), Some(5060), None))
        );
        assert_eq!(
            sip_uri_host("sip:provider.example.com"),
            Some(("provider.example.com".into(), None, None))
        );
        assert_eq!(split_host_port("2001:db8::1"), ("2001:db8::1", None));
        assert_eq!(split_host_port("0.0.0.0:5160"), ("0.0.0.0", Some(5160)));
        assert_eq!(sip_uri_host("sip:"), None);
    }
}
