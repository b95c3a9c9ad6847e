//! Asterisk's configuration syntax and what `pjsip.conf`, `sip.conf`,
//! `iax.conf`, `rtp.conf` and `modules.conf` say.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use voipwall_policy::{PortSpec, Proto, Provenance};

use crate::{
    Discovery, Files, Listener, Pbx, Secret, builtin_rtp, join, peer, port, prov, sip_uri_host,
    split_host_port,
};

/// One section of an Asterisk configuration file, with templates applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    /// `[name]`.
    pub name: String,
    /// `[name](!)`: a template, not an object.
    pub template: bool,
    /// `key = value` / `key => value` in order, inherited ones first. Keys are
    /// lower-case; values trimmed.
    pub entries: Vec<(String, String, Provenance)>,
    /// Where the header was.
    pub origin: Provenance,
}

impl Section {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }

    /// Every value of `key`, each with its place.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (&'a str, &'a Provenance)> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _, _)| k == key)
            .map(|(_, v, p)| (v.as_str(), p))
    }
}

/// Files nested deeper than this are not followed (include loops).
const MAX_DEPTH: usize = 16;

struct Parser<'a> {
    files: &'a dyn Files,
    dir: &'a str,
    sections: Vec<Section>,
    /// Index of the section lines go to (a `(+)` section goes back to an
    /// earlier one); `None` before the first header.
    current: Option<usize>,
    /// Lines before any section header (Asterisk's own `[general]`-less
    /// files); kept as a section named "".
    notes: Vec<String>,
    in_block_comment: bool,
    stack: Vec<String>,
}

/// Parses `path` (relative to `dir`, Asterisk's configuration directory,
/// which is also where relative `#include`s are looked up). Returns the
/// sections (templates included, marked) and notes about includes that
/// could not be read.
pub fn parse_ini(files: &dyn Files, dir: &str, path: &str) -> Option<(Vec<Section>, Vec<String>)> {
    let full = join(dir, path);
    let text = files.read(&full)?;
    let mut p = Parser {
        files,
        dir,
        sections: Vec::new(),
        current: None,
        notes: Vec::new(),
        in_block_comment: false,
        stack: Vec::new(),
    };
    p.file(&full, &text);
    Some((p.sections, p.notes))
}

/// Removes a `;` comment (not `\;`), handling `;-- ... --;` blocks.
fn strip_comment(line: &str, in_block: &mut bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    loop {
        if *in_block {
            match rest.find("--;") {
                Some(i) => {
                    *in_block = false;
                    rest = &rest[i + 3..];
                }
                None => return out,
            }
        }
        let mut chars = rest.char_indices().peekable();
        let mut cut = None;
        while let Some((i, c)) = chars.next() {
            if c == '\\' && chars.peek().is_some_and(|&(_, n)| n == ';') {
                out.push(';');
                chars.next();
                continue;
            }
            if c == ';' {
                cut = Some(i);
                break;
            }
            out.push(c);
        }
        match cut {
            Some(i) if rest[i..].starts_with(";--") => {
                *in_block = true;
                rest = &rest[i + 3..];
            }
            _ => return out,
        }
    }
}

impl Parser<'_> {
    fn file(&mut self, path: &str, text: &str) {
        if self.stack.len() >= MAX_DEPTH || self.stack.iter().any(|s| s == path) {
            self.notes.push(format!(
                "{path}: include loop or nesting too deep; not read again"
            ));
            return;
        }
        self.stack.push(path.to_string());
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = strip_comment(raw, &mut self.in_block_comment);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                self.directive(path, line_no, rest);
                continue;
            }
            if line.starts_with('[') {
                self.header(path, line_no, line);
                continue;
            }
            let (k, v) = match line.split_once("=>") {
                Some((k, v)) if !k.contains('=') => (k, v),
                _ => match line.split_once('=') {
                    Some(kv) => kv,
                    None => {
                        self.notes
                            .push(format!("{path}:{line_no}: not `key = value`; ignored"));
                        continue;
                    }
                },
            };
            let idx = match self.current {
                Some(i) => i,
                None => {
                    self.sections.push(Section {
                        name: String::new(),
                        template: false,
                        entries: Vec::new(),
                        origin: prov(path, line_no),
                    });
                    self.current = Some(self.sections.len() - 1);
                    self.sections.len() - 1
                }
            };
            self.sections[idx].entries.push((
                k.trim().to_ascii_lowercase(),
                v.trim().to_string(),
                prov(path, line_no),
            ));
        }
        self.stack.pop();
    }

    fn directive(&mut self, path: &str, line_no: usize, rest: &str) {
        let (word, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let arg = arg
            .trim()
            .trim_matches('"')
            .trim_matches('<')
            .trim_matches('>');
        match word {
            "include" | "tryinclude" => {
                let pattern = join(self.dir, arg);
                let matches = if pattern.contains(['*', '?']) {
                    self.files.glob(&pattern)
                } else {
                    vec![pattern.clone()]
                };
                let mut any = false;
                for m in matches {
                    if let Some(text) = self.files.read(&m) {
                        any = true;
                        self.file(&m, &text);
                    }
                }
                if !any && word == "include" && !pattern.contains(['*', '?']) {
                    self.notes.push(format!(
                        "{path}:{line_no}: #include {arg}: cannot read `{pattern}`"
                    ));
                }
            }
            "exec" => self.notes.push(format!(
                "{path}:{line_no}: #exec output is not read (voipwall does not run programs)"
            )),
            _ => self
                .notes
                .push(format!("{path}:{line_no}: unknown directive `#{word}`")),
        }
    }

    fn header(&mut self, path: &str, line_no: usize, line: &str) {
        let Some(close) = line.find(']') else {
            self.notes
                .push(format!("{path}:{line_no}: section header without `]`"));
            return;
        };
        let name = line[1..close].trim().to_string();
        let opts = line[close + 1..]
            .trim()
            .strip_prefix('(')
            .and_then(|o| o.strip_suffix(')'))
            .unwrap_or("");
        let opts: Vec<&str> = opts
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if opts.contains(&"+") {
            if let Some(i) = self.sections.iter().rposition(|s| s.name == name) {
                self.current = Some(i);
                return;
            }
            self.notes.push(format!(
                "{path}:{line_no}: `[{name}](+)` adds to a section that does not exist yet"
            ));
        }
        let mut entries = Vec::new();
        for t in opts.iter().filter(|o| **o != "!" && **o != "+") {
            match self.sections.iter().rev().find(|s| s.name == *t) {
                Some(tpl) => entries.extend(tpl.entries.iter().cloned()),
                None => self.notes.push(format!(
                    "{path}:{line_no}: `[{name}]` inherits unknown template `{t}`"
                )),
            }
        }
        self.sections.push(Section {
            name,
            template: opts.contains(&"!"),
            entries,
            origin: prov(path, line_no),
        });
        self.current = Some(self.sections.len() - 1);
    }
}

fn yes(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "yes" | "true" | "y" | "t" | "1" | "on"
        )
    })
}

/// Reads one file into sections, adding its notes; `None` when absent.
fn sections(files: &dyn Files, dir: &str, name: &str, d: &mut Discovery) -> Option<Vec<Section>> {
    let (s, notes) = parse_ini(files, dir, name)?;
    d.notes.extend(notes);
    Some(s.into_iter().filter(|s| !s.template).collect())
}

/// Modules `modules.conf` says not to load (`noload => chan_sip.so`).
fn noload(files: &dyn Files, dir: &str, d: &mut Discovery) -> BTreeSet<String> {
    sections(files, dir, "modules.conf", d)
        .unwrap_or_default()
        .iter()
        .flat_map(|s| {
            s.all("noload")
                .map(|(v, _)| v.trim_end_matches(".so").to_string())
        })
        .collect()
}

pub(crate) fn discover(files: &dyn Files, dir: &str, d: &mut Discovery) {
    let marker = ["asterisk.conf", "pjsip.conf", "sip.conf", "iax.conf"]
        .iter()
        .any(|f| files.read(&join(dir, f)).is_some());
    if !marker {
        return;
    }
    d.found.push(Pbx::Asterisk);
    let skip = noload(files, dir, d);
    let before = d.listeners.len();
    if !skip.contains("res_pjsip")
        && let Some(secs) = sections(files, dir, "pjsip.conf", d)
    {
        pjsip(&secs, d);
    }
    let pjsip_listens = d.listeners.len() > before;
    if !skip.contains("chan_sip")
        && let Some(secs) = sections(files, dir, "sip.conf", d)
    {
        chan_sip(&secs, pjsip_listens, d);
    }
    if !skip.contains("chan_iax2")
        && let Some(secs) = sections(files, dir, "iax.conf", d)
    {
        iax(&secs, d);
    }
    if let Some(secs) = sections(files, dir, "manager.conf", d) {
        manager(&secs, d);
    }
    match sections(files, dir, "rtp.conf", d) {
        Some(secs) => rtp(&secs, &join(dir, "rtp.conf"), d),
        // What Asterisk binds without the file: the range must match it,
        // or calls get one-way audio.
        None => builtin_rtp(
            d,
            (5000, 31000),
            &join(dir, "rtp.conf"),
            "absent",
            "Asterisk",
        ),
    }
}

fn pjsip(secs: &[Section], d: &mut Discovery) {
    let mut auths: BTreeMap<&str, &Section> = BTreeMap::new();
    for s in secs {
        if s.get("type") == Some("auth") {
            auths.insert(&s.name, s);
        }
    }
    for s in secs {
        match s.get("type").unwrap_or("") {
            "transport" => {
                let proto = s.get("protocol").unwrap_or("udp").to_ascii_lowercase();
                let default = if proto == "tls" { 5061 } else { 5060 };
                let (bind_port, at) = match s.all("bind").last() {
                    Some((b, p)) => (split_host_port(b).1.unwrap_or(default), p.clone()),
                    None => (default, s.origin.clone()),
                };
                let (service, l4) = match proto.as_str() {
                    "udp" => ("sip", Proto::Udp),
                    "tcp" => ("sip", Proto::Tcp),
                    "tls" => ("sip-tls", Proto::Tcp),
                    "ws" | "wss" => {
                        d.notes.push(format!(
                            "{}: pjsip transport `{}` ({proto}) is served by Asterisk's HTTP server (http.conf); its port is not read",
                            s.origin, s.name
                        ));
                        continue;
                    }
                    other => {
                        d.notes.push(format!(
                            "{}: pjsip transport `{}` has unknown protocol `{other}`",
                            s.origin, s.name
                        ));
                        continue;
                    }
                };
                d.listeners.push(Listener {
                    service: service.into(),
                    driver: "pjsip".into(),
                    port: port(l4, bind_port),
                    origin: at,
                });
            }
            "endpoint" => {
                for a in s.get("auth").into_iter().flat_map(|a| a.split(',')) {
                    let a = a.trim();
                    let Some(auth) = auths.get(a) else { continue };
                    if let Some(pw) = auth.get("password") {
                        let at = auth
                            .all("password")
                            .last()
                            .map_or(auth.origin.clone(), |(_, p)| p.clone());
                        d.secrets.push(Secret {
                            driver: "pjsip".into(),
                            section: s.name.clone(),
                            user: auth.get("username").unwrap_or(&s.name).to_string(),
                            secret: pw.to_string(),
                            origin: at,
                        });
                    }
                }
            }
            "aor" => {
                for (v, at) in s.all("contact") {
                    for c in v.split(',') {
                        if let Some((host, port, _)) = sip_uri_host(c) {
                            peer(
                                d,
                                &s.name,
                                "pjsip",
                                "static contact",
                                &host,
                                port.is_none(),
                                at.clone(),
                            );
                        }
                    }
                }
            }
            "identify" => {
                let name = s.get("endpoint").unwrap_or(&s.name).to_string();
                for (v, at) in s.all("match") {
                    for m in v.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                        // `match` takes addresses, prefixes and hostnames
                        // (looked up as A/AAAA and SRV by Asterisk).
                        let (host, _) = if m.contains('/') {
                            (m, None)
                        } else {
                            split_host_port(m)
                        };
                        peer(d, &name, "pjsip", "identify match", host, true, at.clone());
                    }
                }
            }
            "registration" => {
                if let Some((v, at)) = s.all("server_uri").last()
                    && let Some((host, port, _)) = sip_uri_host(v)
                {
                    peer(
                        d,
                        &s.name,
                        "pjsip",
                        "registration",
                        &host,
                        port.is_none(),
                        at.clone(),
                    );
                }
            }
            _ => {}
        }
    }
}

/// `register => user[:secret[:authuser]]@host[:port][/extension]` (sip.conf, iax.conf).
fn register_host(v: &str) -> Option<(String, Option<u16>)> {
    let v = v.split_once("://").map_or(v, |(_, r)| r); // transport prefix `tcp://`
    let at = v.rfind('@')?;
    let hostpart = v[at + 1..].split('/').next().unwrap_or("");
    let hostpart = hostpart.split('~').next().unwrap_or(hostpart);
    let (h, p) = split_host_port(hostpart);
    (!h.is_empty()).then(|| (h.to_string(), p))
}

fn chan_sip(secs: &[Section], pjsip_listens: bool, d: &mut Discovery) {
    let sip_service = if pjsip_listens { "chan-sip" } else { "sip" };
    let tls_service = if pjsip_listens { "chan-sip" } else { "sip-tls" };
    let mut srvlookup = true;
    for s in secs.iter().filter(|s| s.name == "general") {
        let bindport = s
            .get("bindport")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(5060);
        let udp = s
            .get("udpbindaddr")
            .and_then(|a| split_host_port(a).1)
            .unwrap_or(bindport);
        let at = |key: &str| {
            s.all(key)
                .last()
                .map_or(s.origin.clone(), |(_, p)| p.clone())
        };
        d.listeners.push(Listener {
            service: sip_service.into(),
            driver: "chan_sip".into(),
            port: port(Proto::Udp, udp),
            origin: if s.get("udpbindaddr").is_some() {
                at("udpbindaddr")
            } else {
                at("bindport")
            },
        });
        if yes(s.get("tcpenable")) {
            let tcp = s
                .get("tcpbindaddr")
                .and_then(|a| split_host_port(a).1)
                .unwrap_or(bindport);
            d.listeners.push(Listener {
                service: sip_service.into(),
                driver: "chan_sip".into(),
                port: port(Proto::Tcp, tcp),
                origin: at("tcpenable"),
            });
        }
        if yes(s.get("tlsenable")) {
            let tls = s
                .get("tlsbindaddr")
                .and_then(|a| split_host_port(a).1)
                .unwrap_or(5061);
            d.listeners.push(Listener {
                service: tls_service.into(),
                driver: "chan_sip".into(),
                port: port(Proto::Tcp, tls),
                origin: at("tlsenable"),
            });
            d.tls_ports.push(port(Proto::Tcp, tls));
        }
        if let Some(v) = s.get("srvlookup") {
            srvlookup = yes(Some(v));
        }
        for (v, at) in s.all("register") {
            if let Some((h, p)) = register_host(v) {
                peer(
                    d,
                    &h,
                    "chan_sip",
                    "registration",
                    &h,
                    srvlookup && p.is_none(),
                    at.clone(),
                );
            }
        }
    }
    peers(secs, "chan_sip", "sip peer", srvlookup, d);
}

/// `type=peer|friend` sections with a fixed `host=` become peers; secrets of
/// all peers, users and friends are kept for the audit.
fn peers(secs: &[Section], driver: &str, role: &str, srv: bool, d: &mut Discovery) {
    for s in secs
        .iter()
        .filter(|s| s.name != "general" && !s.name.is_empty())
    {
        let ty = s.get("type").unwrap_or("");
        if !matches!(ty, "peer" | "friend" | "user") {
            continue;
        }
        if let Some(secret) = s.get("secret") {
            let at = s
                .all("secret")
                .last()
                .map_or(s.origin.clone(), |(_, p)| p.clone());
            d.secrets.push(Secret {
                driver: driver.into(),
                section: s.name.clone(),
                user: s
                    .get("defaultuser")
                    .or_else(|| s.get("username"))
                    .unwrap_or(&s.name)
                    .to_string(),
                secret: secret.to_string(),
                origin: at,
            });
        }
        if ty == "user" {
            continue;
        }
        if let Some((host, at)) = s.all("host").last()
            && !host.eq_ignore_ascii_case("dynamic")
        {
            let has_port = s.get("port").is_some();
            peer(d, &s.name, driver, role, host, srv && !has_port, at.clone());
        }
    }
}

fn iax(secs: &[Section], d: &mut Discovery) {
    for s in secs.iter().filter(|s| s.name == "general") {
        let mut p = s
            .get("bindport")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(4569);
        if let Some(a) = s.get("bindaddr").and_then(|a| split_host_port(a).1) {
            p = a;
        }
        let origin = s
            .all("bindport")
            .chain(s.all("bindaddr"))
            .last()
            .map_or(s.origin.clone(), |(_, p)| p.clone());
        d.listeners.push(Listener {
            service: "iax2".into(),
            driver: "iax2".into(),
            port: port(Proto::Udp, p),
            origin,
        });
        for (v, at) in s.all("register") {
            if let Some((h, _)) = register_host(v) {
                peer(d, &h, "iax2", "registration", &h, false, at.clone());
            }
        }
    }
    if !secs.iter().any(|s| s.name == "general") {
        d.listeners.push(Listener {
            service: "iax2".into(),
            driver: "iax2".into(),
            port: port(Proto::Udp, 4569),
            origin: secs.first().map(|s| s.origin.clone()).unwrap_or_default(),
        });
    }
    peers(secs, "iax2", "iax peer", false, d);
}

/// The Asterisk Manager Interface: its port when enabled and its users'
/// secrets (for the audit's default-credential check).
fn manager(secs: &[Section], d: &mut Discovery) {
    let Some(g) = secs.iter().find(|s| s.name == "general") else {
        return;
    };
    if !yes(g.get("enabled")) {
        return;
    }
    let p = g.get("port").and_then(|p| p.parse().ok()).unwrap_or(5038);
    d.listeners.push(Listener {
        service: "ami".into(),
        driver: "manager".into(),
        port: port(Proto::Tcp, p),
        origin: g
            .all("port")
            .last()
            .map_or(g.origin.clone(), |(_, o)| o.clone()),
    });
    for s in secs
        .iter()
        .filter(|s| s.name != "general" && !s.name.is_empty())
    {
        if let Some((secret, at)) = s.all("secret").last() {
            d.secrets.push(Secret {
                driver: "ami".into(),
                section: s.name.clone(),
                user: s.name.clone(),
                secret: secret.to_string(),
                origin: at.clone(),
            });
        }
    }
}

fn rtp(secs: &[Section], path: &str, d: &mut Discovery) {
    let general = secs.iter().find(|s| s.name == "general");
    let get = |k: &str| {
        general.and_then(|g| {
            g.all(k)
                .last()
                .and_then(|(v, p)| v.parse::<u16>().ok().map(|n| (n, p.clone())))
        })
    };
    let (start, at) = get("rtpstart").unwrap_or((5000, prov(path, 0)));
    let (end, _) = get("rtpend").unwrap_or((31000, prov(path, 0)));
    if start == 0 || start > end {
        d.notes.push(format!(
            "{path}: rtpstart {start} / rtpend {end} is not a range; ignored"
        ));
        return;
    }
    d.rtp = Some((
        PortSpec {
            proto: Proto::Udp,
            lo: start,
            hi: end,
        },
        at,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn comments_templates_includes_and_append() {
        let f = mem(&[
            (
                "/a/pjsip.conf",
                "; comment\n[tpl](!)\ntype=endpoint ; trailing\ncontext=from\\;x\n;-- block\n[hidden]\n--;\n#include pjsip.more.conf\n[1001](tpl)\nauth=1001\n[1001](+)\nallow=ulaw\n",
            ),
            ("/a/pjsip.more.conf", "[x]\ntype => aor\n"),
        ]);
        let (secs, notes) = parse_ini(&f, "/a", "pjsip.conf").unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let names: Vec<&str> = secs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["tpl", "x", "1001"]);
        assert!(secs[0].template);
        assert_eq!(secs[0].get("context"), Some("from;x"));
        assert_eq!(secs[1].get("type"), Some("aor"));
        assert_eq!(secs[1].origin.file, "/a/pjsip.more.conf");
        let ext = &secs[2];
        assert_eq!(ext.get("type"), Some("endpoint"), "inherited");
        assert_eq!(ext.get("allow"), Some("ulaw"), "appended by (+)");
        assert_eq!(ext.all("auth").next().unwrap().1.line, 10);
    }

    #[test]
    fn include_loops_and_missing_files_are_notes() {
        let f = mem(&[(
            "/a/x.conf",
            "#include x.conf\n#include gone.conf\n[s]\nk=v\n",
        )]);
        let (secs, notes) = parse_ini(&f, "/a", "x.conf").unwrap();
        assert_eq!(secs.len(), 1);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn register_lines() {
        assert_eq!(
            register_host("tcp://trunk:s3cret@sip.example.net:5062/1000"),
            Some(("sip.example.net".into(), Some(5062)))
        );
        assert_eq!(
            register_host("user@provider.example.com"),
            Some(("provider.example.com".into(), None))
        );
        assert_eq!(register_host("nohost"), None);
    }
}
