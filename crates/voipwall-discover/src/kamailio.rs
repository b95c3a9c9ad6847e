//! Kamailio: `listen=` / `port=` / `enable_tls` in `kamailio.cfg` (and its
//! `include_file`s), the dispatcher `list_file` and the permissions module's
//! address table as a file (`address_file`, or the `address` table of a
//! `text://` db_url).

use voipwall_policy::{Proto, Provenance};

use crate::{
    Discovery, Files, Listener, Pbx, join, peer, port, prov, sip_uri_host, split_host_port,
};

struct Cfg {
    lines: Vec<(String, Provenance)>,
    notes: Vec<String>,
    /// `#!define`d names and their values.
    defines: std::collections::BTreeMap<String, String>,
    /// One entry per open `#!ifdef`: whether its current branch is on.
    active: Vec<bool>,
}

fn read_cfg(files: &dyn Files, dir: &str, path: &str, cfg: &mut Cfg, depth: usize) {
    let Some(text) = files.read(path) else {
        cfg.notes.push(format!("{path}: cannot be read"));
        return;
    };
    if depth > 8 {
        cfg.notes.push(format!("{path}: includes nested too deep"));
        return;
    }
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        // Preprocessor conditionals: lines in a branch that is off are skipped.
        if let Some(rest) = line.strip_prefix("#!") {
            let mut words = rest.split_whitespace();
            let word = words.next().unwrap_or("");
            let arg = words.next().unwrap_or("");
            let active = cfg.active.iter().all(|a| *a);
            let value = || {
                words
                    .clone()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_matches('"')
                    .to_string()
            };
            match word {
                "ifdef" => cfg.active.push(cfg.defines.contains_key(arg)),
                "ifndef" => cfg.active.push(!cfg.defines.contains_key(arg)),
                "else" => {
                    if let Some(top) = cfg.active.last_mut() {
                        *top = !*top;
                    }
                }
                "endif" => {
                    cfg.active.pop();
                }
                "define" | "substdef" if active => {
                    cfg.defines.insert(arg.to_string(), value());
                }
                "trydef" if active => {
                    cfg.defines.entry(arg.to_string()).or_insert_with(value);
                }
                "undef" if active => {
                    cfg.defines.remove(arg);
                }
                _ => {}
            }
        }
        if !cfg.active.iter().all(|a| *a) {
            continue;
        }
        for kw in [
            "include_file",
            "import_file",
            "#!include_file",
            "#!import_file",
        ] {
            if let Some(rest) = line.strip_prefix(kw) {
                let f = rest.trim().trim_matches('"');
                read_cfg(files, dir, &join(dir, f), cfg, depth + 1);
            }
        }
        // `#` starts a comment unless it is a `#!` directive.
        if line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let line = line.split(" #").next().unwrap_or(line).trim();
        if !line.is_empty() {
            cfg.lines.push((line.to_string(), prov(path, i + 1)));
        }
    }
}

/// `key = value` of a core parameter line.
fn core_param<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (k, v) = line.split_once('=')?;
    (k.trim() == key).then(|| v.trim().trim_end_matches(';').trim().trim_matches('"'))
}

/// `modparam("module", "param", "value")` → value.
fn modparam(line: &str, module: &str, param: &str) -> Option<String> {
    let rest = line.strip_prefix("modparam")?.trim().strip_prefix('(')?;
    let args: Vec<String> = rest
        .trim_end_matches(';')
        .trim_end()
        .trim_end_matches(')')
        .split(',')
        .map(|a| a.trim().trim_matches('"').to_string())
        .collect();
    (args.len() >= 3 && args[0] == module && args[1] == param).then(|| args[2..].join(","))
}

pub(crate) fn discover(files: &dyn Files, dir: &str, d: &mut Discovery) {
    let main = join(dir, "kamailio.cfg");
    if files.read(&main).is_none() {
        return;
    }
    d.found.push(Pbx::Kamailio);
    let mut cfg = Cfg {
        lines: Vec::new(),
        notes: Vec::new(),
        defines: std::collections::BTreeMap::new(),
        active: Vec::new(),
    };
    read_cfg(files, dir, &main, &mut cfg, 0);
    d.notes.append(&mut cfg.notes);

    let mut listens = Vec::new();
    let mut port_no: Option<(u16, Provenance)> = None;
    let mut tls_port: Option<u16> = None;
    let mut tls_on: Option<Provenance> = None;
    let mut tcp_off = false;
    let mut list_file = None;
    let mut address_file = None;
    for (l, at) in &cfg.lines {
        if let Some(v) = core_param(l, "listen") {
            // proto:host:port, host:port, proto:host (each maybe with `advertise`).
            let v = v.split_whitespace().next().unwrap_or(v);
            let (proto, rest) = match v.split_once(':') {
                Some((p, r)) if matches!(p, "udp" | "tcp" | "tls" | "sctp" | "ws" | "wss") => {
                    (Some(p), r)
                }
                _ => (None, v),
            };
            let (_, p) = split_host_port(rest);
            listens.push((proto.map(str::to_string), p, at.clone()));
        }
        if let Some(v) = core_param(l, "port") {
            port_no = v.parse().ok().map(|p| (p, at.clone()));
        }
        if let Some(v) = core_param(l, "tls_port_no") {
            tls_port = v.parse().ok();
        }
        if let Some(v) = core_param(l, "enable_tls")
            && matches!(v, "yes" | "1" | "on" | "true")
        {
            tls_on = Some(at.clone());
        }
        if let Some(v) = core_param(l, "disable_tcp") {
            tcp_off = matches!(v, "yes" | "1" | "on" | "true");
        }
        if let Some(v) = modparam(l, "dispatcher", "list_file") {
            list_file = Some(v);
        }
        if let Some(v) = modparam(l, "permissions", "address_file") {
            address_file = Some(v);
        }
        if let Some(v) =
            modparam(l, "permissions", "db_url").map(|v| cfg.defines.get(&v).cloned().unwrap_or(v))
            && let Some(p) = v.strip_prefix("text://")
        {
            address_file = Some(format!("{}/address", p.trim_end_matches('/')));
        }
    }
    let default_port = port_no.as_ref().map_or(5060, |(p, _)| *p);
    let default_at = port_no
        .as_ref()
        .map_or(prov(&main, 0), |(_, at)| at.clone());
    let mut push = |service: &str, proto: Proto, p: u16, origin: Provenance| {
        d.listeners.push(Listener {
            service: service.into(),
            driver: "kamailio".into(),
            port: port(proto, p),
            origin,
        });
    };
    if listens.is_empty() {
        push("sip", Proto::Udp, default_port, default_at.clone());
        if !tcp_off {
            push("sip", Proto::Tcp, default_port, default_at.clone());
        }
        if let Some(at) = tls_on {
            push("sip-tls", Proto::Tcp, tls_port.unwrap_or(5061), at);
        }
    }
    for (proto, p, at) in listens {
        match proto.as_deref() {
            Some("udp") => push("sip", Proto::Udp, p.unwrap_or(default_port), at),
            Some("tcp") => push("sip", Proto::Tcp, p.unwrap_or(default_port), at),
            Some("tls") => push(
                "sip-tls",
                Proto::Tcp,
                p.unwrap_or(tls_port.unwrap_or(5061)),
                at,
            ),
            Some("ws") => push("sip-ws", Proto::Tcp, p.unwrap_or(80), at),
            Some("wss") => push("sip-wss", Proto::Tcp, p.unwrap_or(443), at),
            Some(_) => {}
            None => {
                push("sip", Proto::Udp, p.unwrap_or(default_port), at.clone());
                if !tcp_off {
                    push("sip", Proto::Tcp, p.unwrap_or(default_port), at);
                }
            }
        }
    }

    let list = list_file.unwrap_or_else(|| join(dir, "dispatcher.list"));
    if let Some(text) = files.read(&list) {
        dispatcher(&text, &list, d);
    }
    let addr = address_file.unwrap_or_else(|| join(dir, "address.list"));
    if let Some(text) = files.read(&addr) {
        address_table(&text, &addr, d);
    }
}

/// `setid destination [flags [priority [attributes]]]`, `#` comments.
pub(crate) fn dispatcher(text: &str, path: &str, d: &mut Discovery) {
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut cols = line.split_whitespace();
        let (Some(set), Some(uri)) = (cols.next(), cols.next()) else {
            d.notes.push(format!(
                "{path}:{}: expected `setid sip:host[:port]`",
                i + 1
            ));
            continue;
        };
        match sip_uri_host(uri) {
            Some((host, p, _)) => peer(
                d,
                &format!("set {set}"),
                "kamailio",
                "dispatcher",
                &host,
                p.is_none(),
                prov(path, i + 1),
            ),
            None => d
                .notes
                .push(format!("{path}:{}: `{uri}` is not a SIP URI", i + 1)),
        }
    }
}

/// The permissions `address` table: db_text (header line with typed
/// columns, `:`-separated rows, `\:` escapes) or whitespace columns
/// `grp address[/mask] [mask] [port] [tag]`.
pub(crate) fn address_table(text: &str, path: &str, d: &mut Discovery) {
    let mut columns: Option<Vec<String>> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if i == 0 && line.contains("(int") {
            columns = Some(
                line.split_whitespace()
                    .map(|c| c.split('(').next().unwrap_or(c).to_string())
                    .collect(),
            );
            continue;
        }
        let at = prov(path, i + 1);
        let (grp, addr, mask) = if let Some(cols) = &columns {
            // db_text row: split on unescaped ':'.
            let mut fields = vec![String::new()];
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            fields.last_mut().expect("non-empty").push(n);
                        }
                    }
                    ':' => fields.push(String::new()),
                    c => fields.last_mut().expect("non-empty").push(c),
                }
            }
            let col = |n: &str| {
                cols.iter()
                    .position(|c| c == n)
                    .and_then(|ix| fields.get(ix).cloned())
            };
            (
                col("grp").unwrap_or_default(),
                col("ip_addr").unwrap_or_default(),
                col("mask"),
            )
        } else {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 2 {
                d.notes.push(format!(
                    "{path}:{}: expected `group address [mask] ...`",
                    i + 1
                ));
                continue;
            }
            (
                cols[0].to_string(),
                cols[1].to_string(),
                cols.get(2).map(|s| (*s).to_string()),
            )
        };
        let host = match mask.filter(|m| !addr.contains('/') && m.parse::<u8>().is_ok()) {
            Some(m) => format!("{addr}/{m}"),
            None => addr,
        };
        peer(
            d,
            &format!("group {grp}"),
            "kamailio",
            "permissions address",
            &host,
            false,
            at,
        );
    }
}
