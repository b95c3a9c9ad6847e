//! Scripted scenarios: the line syntax of the `[[test]]` blocks in
//! `data/rules/*.toml`, and a runner that drives an [`Engine`] through them
//! with a scripted clock.
//!
//! Event lines: `<at> <addr> <kind> [key=value ...]`, where `<at>` is an
//! offset from the scenario start (`90s`, `1h5m`) or a series
//! `<from>..<to>/<step>` (`0s..40s/10s` is five events), or `<at>*<n>` (n
//! events at one instant). Kinds:
//!
//! | kind | keys |
//! | --- | --- |
//! | `auth-failed`, `auth-ok`, `unknown-user`, `challenge`, `call-rejected` | `user` |
//! | `registered` | `user`, `expires` (s) |
//! | `flooding`, `undecodable` | – |
//! | `agent` | `ua` |
//! | `request` `<METHOD>` | `user`, `call`, `cseq`, `auth` (digest username), `credentials` (how many credentials headers; default 1), `nonce` (the one the credentials answer; default `n`), `ua`, `expires` |
//! | `response` `<code>` | `call`, `cseq`, `method`, `expires`, `nonce` (issued by a 401/407; default `n`), `transport` (`udp` by default; `tcp`: sent over a connection) |
//!
//! Requests take `transport` too.
//!
//! Any value (and the address) may contain `{n}`, replaced by the index
//! within a series, so one line can stand for many calls or sources. Values with spaces are double-quoted.
//!
//! Action lines (`<at>` may be a series too): `<at> ban <net> <rule> <ttl>`, `<at> alert <addr> <rule>`,
//! `<at> promote <addr> <ttl>`, `<at> demote <addr>`, `<at> shield <account> <ttl>`,
//! `<at> shield-end <account>`.

use std::net::IpAddr;

use crate::engine::{Action, Config, Engine};
use crate::event::{Event, EventKind, Request, Response};
use crate::rules::{RuleSet, RuleTest};
use crate::time::{Timestamp, format_duration, parse_duration};

/// Scenario time zero: 2026-01-01T00:00:00Z (any fixed instant works; a
/// realistic one keeps the arithmetic honest).
pub const BASE: Timestamp = Timestamp(1_767_225_600_000);

/// An event with owned fields, parsed from a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedEvent {
    /// When.
    pub at: Timestamp,
    /// Client address.
    pub src: IpAddr,
    kind: String,
    arg: String,
    user: Option<String>,
    ua: Option<String>,
    call: String,
    cseq: u64,
    auth: Option<String>,
    expires: Option<u32>,
    method: String,
    nonce: String,
    credentials: u32,
    transport: String,
}

impl ScriptedEvent {
    /// The borrowed event the engine takes.
    pub fn event(&self) -> Event<'_> {
        let user = self.user.as_deref().map(str::as_bytes);
        let kind = match self.kind.as_str() {
            "auth-failed" => EventKind::AuthFailed { user },
            "auth-ok" => EventKind::AuthSucceeded { user },
            "unknown-user" => EventKind::UnknownUser { user },
            "challenge" => EventKind::ChallengeSent { user },
            "call-rejected" => EventKind::CallRejected { user },
            "registered" => EventKind::Registered {
                user,
                expires: self.expires,
            },
            "flooding" => EventKind::Flooding,
            "undecodable" => EventKind::Undecodable,
            "api-auth-failed" => EventKind::ApiAuthFailed,
            "malformed" => EventKind::Malformed,
            "agent" => EventKind::Agent {
                agent: self.ua.as_deref().unwrap_or_default().as_bytes(),
            },
            "request" => EventKind::Request(Request {
                method: self.arg.as_bytes(),
                ruri_user: user,
                to_user: user,
                from_user: user,
                user_agent: self.ua.as_deref().map(str::as_bytes),
                call_id: self.call.as_bytes(),
                cseq: self.cseq,
                has_auth: self.auth.is_some(),
                auth_user: self.auth.as_deref().map(str::as_bytes),
                auth_nonce: self.auth.is_some().then_some(self.nonce.as_bytes()),
                several_credentials: self.credentials > 1,
                stream: self.transport == "tcp",
                to_tag: false,
                expires: self.expires,
                session_expires: None,
            }),
            _ => EventKind::Response(Response {
                code: self.arg.parse().unwrap_or(0),
                call_id: self.call.as_bytes(),
                cseq: self.cseq,
                method: self.method.as_bytes(),
                expires: self.expires,
                nonce: matches!(self.arg.as_str(), "401" | "407").then_some(self.nonce.as_bytes()),
                stream: self.transport == "tcp",
            }),
        };
        Event {
            src: self.src,
            kind,
            origin: "scenario",
        }
    }
}

fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err(format!("unclosed quote in `{line}`"));
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

/// Parses one event line into one or more events (a series).
pub fn parse_events(line: &str) -> Result<Vec<ScriptedEvent>, String> {
    let w = words(line)?;
    let bad = |why: &str| format!("event line `{line}`: {why}");
    // `{n}` outside `call=` (an address, a user, a nonce): one line per
    // event of the series, each with its own index.
    if w.len() >= 3
        && w[1..]
            .iter()
            .any(|x| x.contains("{n}") && !x.starts_with("call="))
    {
        let mut out = Vec::new();
        for (n, at) in series(&w[0]).map_err(|e| bad(&e))?.into_iter().enumerate() {
            let rest: Vec<String> = w[1..]
                .iter()
                .map(|x| {
                    let x = x.replace("{n}", &n.to_string());
                    if x.contains(char::is_whitespace) {
                        format!("\"{x}\"")
                    } else {
                        x
                    }
                })
                .collect();
            out.extend(parse_events(&format!("{at}ms {}", rest.join(" ")))?);
        }
        return Ok(out);
    }
    if w.len() < 3 {
        return Err(bad("expected `<at> <addr> <kind> [key=value ...]`"));
    }
    let times = series(&w[0]).map_err(|e| bad(&e))?;
    let src: IpAddr = w[1].parse().map_err(|_| bad("not an IP address"))?;
    let kind = w[2].clone();
    let known = [
        "auth-failed",
        "auth-ok",
        "unknown-user",
        "challenge",
        "call-rejected",
        "registered",
        "flooding",
        "undecodable",
        "api-auth-failed",
        "malformed",
        "agent",
        "request",
        "response",
    ];
    if !known.contains(&kind.as_str()) {
        return Err(bad(&format!("unknown kind `{kind}`")));
    }
    let mut rest = &w[3..];
    let mut arg = String::new();
    if kind == "request" || kind == "response" {
        arg = rest
            .first()
            .cloned()
            .ok_or_else(|| bad("needs a method or code"))?;
        rest = &rest[1..];
    }
    let mut ev = ScriptedEvent {
        at: BASE,
        src,
        kind,
        arg,
        user: None,
        ua: None,
        call: "c".into(),
        cseq: 1,
        auth: None,
        expires: None,
        method: "REGISTER".into(),
        nonce: "n".into(),
        credentials: 1,
        transport: "udp".into(),
    };
    for kv in rest {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(&format!("`{kv}` is not key=value")))?;
        let v = v.to_string();
        match k {
            "user" => ev.user = Some(v),
            "ua" => ev.ua = Some(v),
            "call" => ev.call = v,
            "cseq" => ev.cseq = v.parse().map_err(|_| bad("cseq is not a number"))?,
            "auth" => ev.auth = Some(v),
            "expires" => ev.expires = Some(v.parse().map_err(|_| bad("expires is not a number"))?),
            "method" => ev.method = v,
            "nonce" => ev.nonce = v,
            "credentials" => {
                ev.credentials = v.parse().map_err(|_| bad("credentials is not a number"))?;
            }
            "transport" => ev.transport = v,
            _ => return Err(bad(&format!("unknown key `{k}`"))),
        }
    }
    Ok(times
        .into_iter()
        .enumerate()
        .map(|(n, at)| {
            let mut e = ev.clone();
            e.at = BASE.plus(at);
            e.call = e.call.replace("{n}", &n.to_string());
            e
        })
        .collect())
}

fn series(s: &str) -> Result<Vec<u64>, String> {
    if let Some((at, n)) = s.split_once('*') {
        let n: usize = n
            .parse()
            .map_err(|_| format!("`{s}`: `<at>*<n>` needs a count"))?;
        if n > 10_000_000 {
            return Err(format!("`{s}`: huge series"));
        }
        return Ok(vec![parse_duration(at)?; n]);
    }
    let Some((range, step)) = s.split_once('/') else {
        return Ok(vec![parse_duration(s)?]);
    };
    let (from, to) = range
        .split_once("..")
        .ok_or_else(|| format!("`{s}`: a series is `<from>..<to>/<step>`"))?;
    let (from, to, step) = (
        parse_duration(from)?,
        parse_duration(to)?,
        parse_duration(step)?,
    );
    if step == 0 || to < from || (to - from) / step > 10_000_000 {
        return Err(format!("`{s}`: empty or huge series"));
    }
    Ok((0..=(to - from) / step).map(|i| from + i * step).collect())
}

/// Renders an action as an action line, time relative to [`BASE`].
pub fn action_line(a: &Action) -> String {
    let off = |t: Timestamp| format_offset(t.since(BASE));
    match a {
        Action::Ban(b) => format!(
            "{} ban {} {} {}",
            off(b.at),
            b.target,
            b.rule,
            format_duration(b.ttl)
        ),
        Action::Alert { addr, rule, at, .. } => format!("{} alert {addr} {rule}", off(*at)),
        Action::Reassert(b) => format!("reassert {}", b.target),
        Action::Promote { addr, at, until } => {
            format!(
                "{} promote {addr} {}",
                off(*at),
                format_duration(until.since(*at))
            )
        }
        Action::Demote { addr, at } => format!("{} demote {addr}", off(*at)),
        Action::Shield(v) => format!(
            "{} shield {} {}",
            off(v.since),
            v.account,
            format_duration(v.until.since(v.since))
        ),
        Action::ShieldEnd(v) => format!("{} shield-end {}", off(v.until), v.account),
    }
}

fn format_offset(ms: u64) -> String {
    if ms == 0 {
        "0s".into()
    } else {
        format_duration(ms)
    }
}

/// Normalises an expect line (a series gives several).
fn normalise_expect(line: &str) -> Result<Vec<String>, String> {
    let w = words(line)?;
    let at = w
        .first()
        .ok_or_else(|| format!("empty expect line `{line}`"))?;
    series(at)?
        .into_iter()
        .map(|t| normalise_one(line, &w, &format_offset(t)))
        .collect()
}

fn normalise_one(line: &str, w: &[String], at: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "expect line `{line}`: expected `<at> ban <net> <rule> <ttl>`, `<at> alert <addr> <rule>`, `<at> promote <addr> <ttl>`, `<at> demote <addr>`, `<at> shield <account> <ttl>` or `<at> shield-end <account>`"
        )
    };
    let net = |s: &str| -> Result<String, String> {
        if s.contains('/') {
            s.parse::<ipnet::IpNet>()
                .map(|n| n.to_string())
                .map_err(|_| bad())
        } else {
            s.parse::<IpAddr>()
                .map(|a| ipnet::IpNet::from(a).to_string())
                .map_err(|_| bad())
        }
    };
    let addr = |s: &str| {
        s.parse::<IpAddr>()
            .map(|a| a.to_string())
            .map_err(|_| bad())
    };
    match (w.get(1).map(String::as_str), w.len()) {
        (Some("ban"), 5) => Ok(format!(
            "{at} ban {} {} {}",
            net(&w[2])?,
            w[3],
            format_duration(parse_duration(&w[4])?)
        )),
        (Some("alert"), 4) => Ok(format!("{at} alert {} {}", addr(&w[2])?, w[3])),
        (Some("promote"), 4) => Ok(format!(
            "{at} promote {} {}",
            addr(&w[2])?,
            format_duration(parse_duration(&w[3])?)
        )),
        (Some("demote"), 3) => Ok(format!("{at} demote {}", addr(&w[2])?)),
        (Some("shield"), 4) => Ok(format!(
            "{at} shield {} {}",
            w[2],
            format_duration(parse_duration(&w[3])?)
        )),
        (Some("shield-end"), 3) => Ok(format!("{at} shield-end {}", w[2])),
        _ => Err(bad()),
    }
}

/// Builds the engine a scenario runs against: only `rule` (and the rules the
/// test names) enabled, with the test's settings.
pub fn scenario_engine(
    set: &RuleSet,
    rule: Option<&str>,
    test: &RuleTest,
) -> Result<Engine, String> {
    let mut set = set.clone();
    for r in &mut set.rules {
        r.enabled = Some(r.id.as_str()) == rule || test.rules.contains(&r.id);
    }
    for id in &test.rules {
        if id != "recidive" && set.get(id).is_none() {
            return Err(format!("test `{}` names unknown rule `{id}`", test.name));
        }
    }
    if rule.is_some() && !test.rules.iter().any(|r| r == "recidive") {
        set.recidive = None;
    }
    let mut cfg = Config::new(set);
    if let Some(p) = test.config.group_v4 {
        cfg.group_v4 = p;
    }
    if let Some(p) = test.config.group_v6 {
        cfg.group_v6 = p;
    }
    cfg.shield_v4 = test.config.shield_v4_after.map(|n| (24, n));
    for n in &test.config.never_ban {
        cfg.never_ban.push(
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("test `{}`: never_ban `{n}` is not a network", test.name))?,
        );
    }
    Ok(Engine::new(cfg))
}

/// Runs a scenario; returns the action lines produced (drained up to a day
/// after the last event).
pub fn run(engine: &mut Engine, events: &[ScriptedEvent]) -> Vec<String> {
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.at);
    let mut out = Vec::new();
    let drive = |engine: &mut Engine, until: Timestamp, out: &mut Vec<String>| {
        while let Some(t) = engine.poll_timeout().filter(|&t| t <= until) {
            engine.handle_timeout(t);
            while let Some(a) = engine.poll_action() {
                out.push(action_line(&a));
            }
        }
    };
    for e in &events {
        drive(engine, e.at, &mut out);
        engine.handle_event(e.at, &e.event());
        while let Some(a) = engine.poll_action() {
            out.push(action_line(&a));
        }
    }
    let end = events.last().map_or(BASE, |e| e.at).plus(86_400_000);
    drive(engine, end, &mut out);
    out
}

/// Runs one `[[test]]` of a rule file: the actions must equal `expect`
/// exactly (nothing missing, nothing extra, same times).
pub fn check(set: &RuleSet, rule: Option<&str>, test: &RuleTest) -> Result<(), String> {
    let mut engine = scenario_engine(set, rule, test)?;
    let mut events = Vec::new();
    for l in &test.events {
        events.extend(parse_events(l)?);
    }
    let got = run(&mut engine, &events);
    let mut want = Vec::new();
    for l in &test.expect {
        want.extend(normalise_expect(l)?);
    }
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "test `{}`:\n  expected:\n    {}\n  got:\n    {}",
            test.name,
            want.join("\n    "),
            got.join("\n    ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_and_quotes() {
        let evs = parse_events(
            "0s..20s/10s 203.0.113.9 request REGISTER call=c{n} ua=\"friendly scanner\"",
        )
        .unwrap();
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[2].at, BASE.plus(20_000));
        assert_eq!(evs[2].call, "c2");
        assert_eq!(evs[0].ua.as_deref(), Some("friendly scanner"));
        assert!(parse_events("0s 203.0.113.9 bogus").is_err());
        assert!(parse_events("0s nothost auth-failed").is_err());
        assert!(parse_events("0s 203.0.113.9 auth-failed usr=1").is_err());
        assert_eq!(
            normalise_expect("60s ban 203.0.113.9 auth-bruteforce 60m").unwrap(),
            ["1m ban 203.0.113.9/32 auth-bruteforce 1h"]
        );
    }
}
