//! FreeSWITCH: `freeswitch.xml` with its `X-PRE-PROCESS` includes (relative
//! to the including file, globs allowed) and variables (`$${name}`), read
//! for sofia profiles and their gateways, `switch.conf`'s RTP range and the
//! directory's user passwords.

use std::collections::BTreeMap;

use voipwall_policy::{PortSpec, Proto, Provenance};

use crate::xml::{Token, tokenize};
use crate::{
    Discovery, Files, Listener, Pbx, Secret, builtin_rtp, join, peer, port, prov, split_dir,
    split_host_port,
};

/// A tag with where it came from, after includes are spliced in.
struct Tag {
    start: Option<(String, BTreeMap<String, String>, bool)>,
    end: bool,
    origin: Provenance,
}

struct Pre<'a> {
    files: &'a dyn Files,
    vars: BTreeMap<String, String>,
    out: Vec<Tag>,
    stack: Vec<String>,
    notes: Vec<String>,
}

/// Removes `.` and `..` components.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Pre<'_> {
    fn expand(&self, v: &str) -> String {
        let mut out = String::new();
        let mut rest = v;
        while let Some(i) = rest.find("$${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 3..];
            match after.find('}') {
                Some(e) => {
                    let name = &after[..e];
                    out.push_str(self.vars.get(name).map_or("", String::as_str));
                    rest = &after[e + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn file(&mut self, path: &str, text: &str) {
        if self.stack.len() >= 16 || self.stack.iter().any(|s| s == path) {
            self.notes.push(format!(
                "{path}: include loop or nesting too deep; not read again"
            ));
            return;
        }
        self.stack.push(path.to_string());
        let (tokens, complete) = tokenize(text);
        if !complete {
            self.notes
                .push(format!("{path}: malformed XML; read up to the error"));
        }
        let dir = split_dir(path).0.to_string();
        for t in tokens {
            match t {
                Token::Start {
                    name,
                    attrs,
                    empty,
                    line,
                } => {
                    let origin = prov(path, line);
                    if name == "X-PRE-PROCESS" {
                        let get = |k: &str| {
                            attrs
                                .iter()
                                .find(|(a, _)| a == k)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        let data = get("data");
                        match get("cmd").as_str() {
                            "set" => {
                                if let Some((k, v)) = data.split_once('=') {
                                    let v = self.expand(v.trim());
                                    self.vars.insert(k.trim().to_string(), v);
                                }
                            }
                            "include" => {
                                let pattern = normalize(&join(&dir, &self.expand(&data)));
                                let paths = if pattern.contains(['*', '?']) {
                                    self.files.glob(&pattern)
                                } else {
                                    vec![pattern.clone()]
                                };
                                for p in paths {
                                    match self.files.read(&p) {
                                        Some(text) => self.file(&p, &text),
                                        None => self.notes.push(format!(
                                            "{origin}: include `{p}` cannot be read"
                                        )),
                                    }
                                }
                            }
                            _ => {}
                        }
                        continue;
                    }
                    let attrs = attrs
                        .into_iter()
                        .map(|(k, v)| (k, self.expand(&v)))
                        .collect();
                    self.out.push(Tag {
                        start: Some((name, attrs, empty)),
                        end: false,
                        origin,
                    });
                }
                Token::End { name } => {
                    if name == "X-PRE-PROCESS" {
                        continue;
                    }
                    self.out.push(Tag {
                        start: None,
                        end: true,
                        origin: prov(path, 0),
                    });
                }
            }
        }
        self.stack.pop();
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "true" | "yes" | "on" | "1" | "enabled"
    )
}

/// Parameters by lower-case name: value and where it was set.
type Params = BTreeMap<String, (String, Provenance)>;

#[derive(Default)]
struct Profile {
    name: String,
    params: Params,
    origin: Provenance,
}

pub(crate) fn discover(files: &dyn Files, dir: &str, d: &mut Discovery) {
    let root = join(dir, "freeswitch.xml");
    let Some(text) = files.read(&root) else {
        return;
    };
    d.found.push(Pbx::FreeSwitch);
    let mut pre = Pre {
        files,
        vars: BTreeMap::new(),
        out: Vec::new(),
        stack: Vec::new(),
        notes: Vec::new(),
    };
    pre.file(&normalize(&root), &text);
    d.notes.append(&mut pre.notes);

    // Walk the spliced tag stream with a stack of element names.
    let mut path: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut profiles: Vec<Profile> = Vec::new();
    // (gateway name, profile name, params, where).
    let mut gateway: Option<(String, String, Params, Provenance)> = None;
    let mut rtp: (Option<(u16, Provenance)>, Option<u16>) = (None, None);
    let mut user: Option<(String, Provenance)> = None;
    let in_config = |path: &[(String, BTreeMap<String, String>)], name: &str| {
        path.iter()
            .any(|(n, a)| n == "configuration" && a.get("name").is_some_and(|v| v == name))
    };
    for tag in &pre.out {
        if tag.end {
            if let Some((name, _)) = path.pop() {
                match name.as_str() {
                    "gateway" => {
                        if let Some((gw, profile, params, origin)) = gateway.take() {
                            gateway_peer(d, &gw, &profile, &params, origin);
                        }
                    }
                    "user" => user = None,
                    _ => {}
                }
            }
            continue;
        }
        let Some((name, attrs, empty)) = &tag.start else {
            continue;
        };
        match name.as_str() {
            "profile" if in_config(&path, "sofia.conf") => profiles.push(Profile {
                name: attrs.get("name").cloned().unwrap_or_default(),
                params: BTreeMap::new(),
                origin: tag.origin.clone(),
            }),
            "gateway" => {
                if let Some(p) = profiles.last() {
                    gateway = Some((
                        attrs.get("name").cloned().unwrap_or_default(),
                        p.name.clone(),
                        BTreeMap::new(),
                        tag.origin.clone(),
                    ));
                }
            }
            "user" if path.iter().any(|(n, _)| n == "domain") => {
                user = attrs.get("id").map(|id| (id.clone(), tag.origin.clone()));
            }
            "param" => {
                let (Some(k), Some(v)) = (attrs.get("name"), attrs.get("value")) else {
                    continue;
                };
                if let Some(g) = gateway.as_mut() {
                    g.2.insert(k.to_ascii_lowercase(), (v.clone(), tag.origin.clone()));
                } else if in_config(&path, "event_socket.conf") {
                    match k.as_str() {
                        "password" => d.secrets.push(Secret {
                            driver: "esl".into(),
                            section: "event_socket".into(),
                            user: String::new(),
                            secret: v.clone(),
                            origin: tag.origin.clone(),
                        }),
                        "listen-port" => {
                            if let Ok(p) = v.parse() {
                                d.listeners.push(Listener {
                                    service: "freeswitch-esl".into(),
                                    driver: "esl".into(),
                                    port: port(Proto::Tcp, p),
                                    origin: tag.origin.clone(),
                                });
                            }
                        }
                        _ => {}
                    }
                } else if in_config(&path, "switch.conf") {
                    match k.as_str() {
                        "rtp-start-port" => {
                            rtp.0 = v.parse().ok().map(|p| (p, tag.origin.clone()));
                        }
                        "rtp-end-port" => rtp.1 = v.parse().ok(),
                        _ => {}
                    }
                } else if let (Some((id, _)), "password") = (&user, k.as_str()) {
                    d.secrets.push(Secret {
                        driver: "freeswitch".into(),
                        section: id.clone(),
                        user: id.clone(),
                        secret: v.clone(),
                        origin: tag.origin.clone(),
                    });
                } else if let Some(p) = profiles.last_mut().filter(|_| {
                    path.iter().any(|(n, _)| n == "profile")
                        && path.last().is_some_and(|(n, _)| n == "settings")
                }) {
                    p.params
                        .insert(k.to_ascii_lowercase(), (v.clone(), tag.origin.clone()));
                }
            }
            _ => {}
        }
        if !empty {
            path.push((name.clone(), attrs.clone()));
        }
    }
    for p in &profiles {
        profile_listeners(d, p);
    }
    match rtp {
        (Some((lo, origin)), hi) => {
            let hi = hi.unwrap_or(32768);
            if lo > 0 && lo <= hi {
                d.rtp = Some((
                    PortSpec {
                        proto: Proto::Udp,
                        lo,
                        hi,
                    },
                    origin,
                ));
            }
        }
        (None, _) => builtin_rtp(
            d,
            (16384, 32768),
            &format!("{root}/autoload_configs/switch.conf.xml"),
            "sets no rtp-start-port",
            "FreeSWITCH",
        ),
    }
}

fn profile_listeners(d: &mut Discovery, p: &Profile) {
    let driver = format!("sofia/{}", p.name);
    let param = |k: &str| p.params.get(k);
    let at = |k: &str| param(k).map_or(p.origin.clone(), |(_, o)| o.clone());
    let sip_port = param("sip-port")
        .and_then(|(v, _)| v.parse::<u16>().ok())
        .unwrap_or(5060);
    for proto in [Proto::Udp, Proto::Tcp] {
        d.listeners.push(Listener {
            service: "sip".into(),
            driver: driver.clone(),
            port: port(proto, sip_port),
            origin: at("sip-port"),
        });
    }
    if param("tls").is_some_and(|(v, _)| truthy(v)) {
        let tls = param("tls-sip-port")
            .and_then(|(v, _)| v.parse::<u16>().ok())
            .unwrap_or(5061);
        d.listeners.push(Listener {
            service: "sip-tls".into(),
            driver: driver.clone(),
            port: port(Proto::Tcp, tls),
            origin: at("tls-sip-port"),
        });
    }
    for (key, service) in [("ws-binding", "sip-ws"), ("wss-binding", "sip-wss")] {
        if let Some((v, o)) = param(key)
            // `:7443`, `0.0.0.0:7443`, `[::]:7443`: the port follows the last colon.
            && let Some(pn) = v.rsplit(':').next().and_then(|s| s.trim().parse().ok())
        {
            d.listeners.push(Listener {
                service: service.into(),
                driver: driver.clone(),
                port: port(Proto::Tcp, pn),
                origin: o.clone(),
            });
        }
    }
}

/// A gateway's far end: `proxy`, else `realm`, else its name (FreeSWITCH's
/// own defaults); `register-proxy` and `outbound-proxy` too when set.
fn gateway_peer(d: &mut Discovery, name: &str, profile: &str, params: &Params, origin: Provenance) {
    let driver = format!("sofia/{profile}");
    let main = params
        .get("proxy")
        .or_else(|| params.get("realm"))
        .cloned()
        .unwrap_or((name.to_string(), origin));
    let mut hosts = vec![main];
    for k in ["register-proxy", "outbound-proxy"] {
        if let Some(v) = params.get(k) {
            hosts.push(v.clone());
        }
    }
    for (h, at) in hosts {
        let h = h.trim_start_matches("sip:");
        let (host, port) = split_host_port(h);
        peer(d, name, &driver, "gateway", host, port.is_none(), at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            normalize("/etc/fs/autoload_configs/../sip_profiles/*.xml"),
            "/etc/fs/sip_profiles/*.xml"
        );
        assert_eq!(normalize("/a/./b//c"), "/a/b/c");
    }
}
