//! CLI commands that talk to a running daemon over the control socket, and
//! the routing of `ban`, `unban`, `bans` and `explain` through it when one
//! runs (so the store, the source of truth, records what an operator does).

use std::net::IpAddr;

use anyhow::Context as _;
use serde_json::Value;

use crate::daemon::{Client, Request, default_socket};
use crate::{Globals, Invalid};

/// A client when a daemon answers on the socket.
pub(crate) fn daemon() -> Option<Client> {
    Client::connect(&default_socket())
}

fn must() -> anyhow::Result<Client> {
    daemon().ok_or_else(|| {
        anyhow::anyhow!(
            "no daemon answers on {} (start `voipwall daemon`, or set VOIPWALL_SOCKET)",
            default_socket().display()
        )
    })
}

/// One line of output, through the CLI's one stdout writer.
fn print(s: &str) -> anyhow::Result<()> {
    crate::cmd::out(s.trim_end())
}

/// `voipwall status`.
pub(crate) fn status(cli: &Globals) -> anyhow::Result<()> {
    use crate::daemon::control::{PolicyFile, StatusAnswer};
    let mut r = match must()?.call_as::<StatusAnswer>(&Request::Status)? {
        StatusAnswer::Running(r) => r,
        StatusAnswer::Holding(h) => {
            return if cli.json {
                print(&serde_json::to_string(&h)?)
            } else {
                print(&format!(
                    "voipwall daemon pid {}: SAFE MODE, the policy is held back ({} s left)",
                    h.pid, h.safe_mode.apply_in_s
                ))
            };
        }
    };
    // Compared here, not in the daemon: compiling must not hold up the
    // packet path.
    r.policy_file = Some(
        match crate::safety::file_vs_running(
            std::path::Path::new(&r.policy),
            &cli.catalog_dirs,
            std::path::Path::new(&r.state_dir),
        ) {
            Ok(Some((g, same))) => PolicyFile {
                generation: Some(g),
                matches_running: Some(same),
                error: None,
            },
            Ok(None) => PolicyFile::default(),
            Err(e) => PolicyFile {
                error: Some(e.to_string().lines().next().unwrap_or("").to_string()),
                ..PolicyFile::default()
            },
        },
    );
    if cli.json {
        return print(&serde_json::to_string(&r)?);
    }
    let (c, e, l) = (&r.counters, &r.engine, &r.ban_latency_us);
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |x| x.to_string());
    print(&format!(
        "voipwall daemon pid {} up {} s, mode {}\n  policy {}\n  store {} ({} active bans; {} restored at start, {} imported from the kernel)\n  nflog group {}: {} packets, {} overflows, {} undecodable\n  logs: {} lines, {} events, {} ambiguous refused\n  engine: {} events, {} sources tracked ({} evicted), {} suppressed\n  bans {} (observed {}), alerts {}, promotions {}; kernel errors {}, bans put back {}, store errors {}\n  evidence → ban live: p50 {} µs, p99 {} µs over {} bans",
        r.pid,
        r.uptime_s,
        r.mode,
        r.policy,
        serde_json::to_value(&r.store)?["state"]
            .as_str()
            .unwrap_or("?"),
        r.active_bans,
        r.restored_bans,
        r.imported_from_kernel,
        r.nflog_group.map_or("none".to_string(), |g| g.to_string()),
        c.nflog_packets,
        c.nflog_enobufs,
        c.sip_undecodable,
        c.log_lines,
        c.log_events,
        c.log_ambiguous,
        e.events,
        e.tracked_sources,
        e.evicted_sources,
        e.suppressed,
        c.bans,
        c.bans_observed,
        c.alerts,
        c.promotions,
        c.kernel_errors,
        c.reasserted,
        r.store_errors,
        opt(l.p50),
        opt(l.p99),
        l.samples,
    ))?;
    if let Some(rc) = &r.recompiled {
        print(&format!("  upgrade: {}", rc.result))?;
    }
    for (rule, l) in &r.ban_latency_by_rule_us {
        print(&format!(
            "    {rule}: p50 {} µs, p99 {} µs, max {} µs over {}",
            opt(l.p50),
            opt(l.p99),
            opt(l.max),
            l.samples
        ))?;
    }
    if c.hep_packets + c.hep_refused + c.hep_malformed + c.hep_over_cap > 0 {
        print(&format!(
            "  hep: {} SIP messages, {} left to NFLOG, {} from senders not listed, {} malformed, {} connections over the cap of 32",
            c.hep_packets, c.hep_duplicates, c.hep_refused, c.hep_malformed, c.hep_over_cap
        ))?;
    }
    if r.tcp.opened > 0 {
        let t = &r.tcp;
        print(&format!(
            "  sip over tcp: {} flows now ({} kB held), {} opened, {} messages, {} evicted, {} idle-closed",
            t.flows,
            t.bytes / 1024,
            t.opened,
            t.messages,
            t.evicted,
            t.idle
        ))?;
    }
    match r.policy_file.as_ref() {
        Some(PolicyFile {
            generation: Some(g),
            matches_running: Some(true),
            ..
        }) => print(&format!("  policy file: same as generation {g} in force"))?,
        Some(PolicyFile {
            generation: Some(g),
            matches_running: Some(false),
            ..
        }) => print(&format!(
            "  policy file: DIFFERS from generation {g} in force (the file was edited since: `voipwall reload` applies it)"
        ))?,
        Some(PolicyFile { error: Some(e), .. }) => {
            print(&format!("  policy file: does not load ({e})"))?;
        }
        _ => {}
    }
    // Trunk and peer names: what they resolve to, and trouble.
    for n in r.dns.iter().flat_map(|d| &d.names) {
        let addrs: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
        print(&format!(
            "  name {}{}: {} (next lookup in {} s){}",
            n.host,
            if n.srv { " +SRV" } else { "" },
            if addrs.is_empty() {
                "no address".to_string()
            } else {
                addrs.join(", ")
            },
            n.next_in_ms / 1000,
            n.error
                .as_deref()
                .map(|e| format!("; ERROR {e}"))
                .unwrap_or_default()
        ))?;
    }
    // Call rules: calls followed, and each rule's count.
    if let Some(c) = &r.calls {
        let rules: Vec<String> = c
            .rules
            .iter()
            .map(|x| {
                let dropped = if x.dropped > 0 {
                    format!(", {} dropped", x.dropped)
                } else {
                    String::new()
                };
                format!(
                    "{}: {} up, {} broken{dropped}",
                    x.name, x.active, x.violations
                )
            })
            .collect();
        print(&format!(
            "  calls: {} followed ({} seen, {} never answered, {} ended by the maximum duration, {} kept past it by session refreshes); rules {}",
            c.calls,
            c.started,
            c.unanswered,
            c.timed_out,
            c.kept_by_refresh,
            rules.join("; ")
        ))?;
    }
    if let Some(q) = &r.inline {
        let state = match (&q.error, q.running) {
            (Some(e), _) => format!("NOT RUNNING ({e}): calls are checked passively"),
            (None, true) => "running".to_string(),
            (None, false) => "stopped".to_string(),
        };
        let lat = &q.verdict_latency_us;
        print(&format!(
            "  inline: queue {} {state}; {} INVITEs held, {} dropped; verdict p50 {} µs, p99 {} µs{}",
            q.queue,
            q.held,
            q.dropped,
            lat.p50.map_or("-".into(), |v| v.to_string()),
            lat.p99.map_or("-".into(), |v| v.to_string()),
            q.warning
                .as_deref()
                .map(|w| format!("; WARNING {w}"))
                .unwrap_or_default()
        ))?;
    }
    // Log sources: each says whether it delivers, and why not.
    for src in &r.sources {
        print(&format!(
            "  log source {} ({}): {}{}; {} {}{}",
            src.source,
            src.format,
            if src.delivering {
                ""
            } else {
                "NOT delivering: "
            },
            src.state,
            src.lines,
            if src.lines == 1 { "line" } else { "lines" },
            src.last_line_ms
                .map(|t| format!(
                    ", the last {} s ago",
                    crate::safety::now().0.saturating_sub(t) / 1000
                ))
                .unwrap_or_default()
        ))?;
    }
    // Accounts under attack from many addresses (distributed guessing).
    for sh in &r.shields {
        print(&format!(
            "  shielded account {}: since {}, until {} (extended by every failure); {} failures, {} sources banned, {} alerts",
            sh.account, sh.since, sh.until, sh.failures, sh.bans, sh.alerts
        ))?;
    }
    // The HTTP API's listeners; one that cannot bind yet is retried.
    for l in &r.api {
        print(&format!(
            "  api {}{}: {}{}",
            l.listen,
            if l.tls { " (https)" } else { "" },
            l.state,
            l.error
                .as_deref()
                .map(|e| format!(" ({e}; {} tries)", l.attempts))
                .unwrap_or_default()
        ))?;
    }
    // CrowdSec: the bouncer's pulls and what they hold.
    if let Some(b) = &r.crowdsec_bouncer {
        let held: Vec<String> = b
            .decisions
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(o, n)| format!("{n} {o}"))
            .collect();
        print(&format!(
            "  crowdsec bouncer {}: {}; decisions: {}{}{}",
            b.lapi_url,
            if b.connected {
                "connected"
            } else {
                "NOT connected"
            },
            if held.is_empty() {
                "none".to_string()
            } else {
                held.join(", ")
            },
            if b.protected > 0 {
                format!("; {} refused (protected)", b.protected)
            } else {
                String::new()
            },
            b.error
                .as_deref()
                .map(|e| format!("; ERROR {e} (what the kernel holds stays)"))
                .unwrap_or_default()
        ))?;
    }
    if let Some(f) = &r.fleet {
        print(&fleet_line(f))?;
    }
    // Blocklist feeds: what is enforced, from when, and trouble.
    let now = crate::daemon::now_ms();
    for f in &r.feeds {
        let age = f.fetched_ms.map_or_else(
            || "never fetched".to_string(),
            |t| format!("fetched {} s ago", now.saturating_sub(t) / 1000),
        );
        print(&format!(
            "  feed {} ({}, {}): {} networks, {age}{}{}",
            f.name,
            f.format,
            f.source,
            f.entries,
            if f.refused > 0 {
                format!(", {} refused", f.refused)
            } else {
                String::new()
            },
            f.error
                .as_deref()
                .map(|e| format!("; ERROR {e} (the last good content stays)"))
                .unwrap_or_default()
        ))?;
    }
    Ok(())
}

fn fleet_line(f: &voipwall_core::feeds::FleetStatus) -> String {
    format!(
        "  fleet {} at {}: {}; {} bans of other nodes held, {} published, {} queued{}{}",
        f.node,
        f.redis,
        if f.connected {
            "connected"
        } else {
            "NOT connected"
        },
        f.held,
        f.published,
        f.queued,
        if f.allow > 0 {
            format!(", {} in the central allow list", f.allow)
        } else {
            String::new()
        },
        f.error
            .as_deref()
            .map(|e| format!("; ERROR {e} (the kernel keeps what it has)"))
            .unwrap_or_default()
    )
}

/// `voipwall fleet status`.
pub(crate) fn fleet_status(cli: &Globals) -> anyhow::Result<()> {
    use crate::daemon::control::StatusAnswer;
    let StatusAnswer::Running(r) = must()?.call_as::<StatusAnswer>(&Request::Status)? else {
        anyhow::bail!("the daemon is in safe mode: the fleet starts with the policy");
    };
    let Some(f) = r.fleet else {
        return Err(Invalid("error: this daemon's policy has no [fleet] section".into()).into());
    };
    if cli.json {
        return print(&serde_json::to_string(&f)?);
    }
    print(fleet_line(&f).trim_start())?;
    let now = crate::daemon::now_ms();
    for (name, n) in &f.nodes {
        print(&format!(
            "  node {name}: {} bans held, {} records read, {} refused, last {} ({}), lag {} ms",
            n.held,
            n.records,
            n.refused,
            if n.last_id.is_empty() {
                "-"
            } else {
                &n.last_id
            },
            n.last_seen_ms.map_or_else(
                || "never".to_string(),
                |t| format!("{} s ago", now.saturating_sub(t) / 1000)
            ),
            n.lag_ms
        ))?;
    }
    if let Some(r) = &f.last_refusal {
        print(&format!("  last refused: {r}"))?;
    }
    Ok(())
}

/// `voipwall events [--follow]`.
pub(crate) fn events(cli: &Globals, follow: bool, limit: usize) -> anyhow::Result<()> {
    let mut c = must()?;
    let first: crate::daemon::control::EventsReply = c.call_as(&Request::Events {
        follow,
        limit: Some(limit),
    })?;
    let show = |v: &Value| -> anyhow::Result<()> {
        if cli.json {
            print(&v.to_string())
        } else {
            let what = v
                .get("reason")
                .or_else(|| v.get("detail"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let who = v
                .get("target")
                .or_else(|| v.get("addr"))
                .and_then(Value::as_str)
                .unwrap_or("-");
            print(&format!(
                "{}  {:<10} {:<24} {what}",
                v["at"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or(""),
                who
            ))
        }
    };
    for e in &first.events {
        show(e)?;
    }
    if follow {
        while let Some(v) = c.next_value()? {
            show(&v)?;
        }
    }
    Ok(())
}

/// `voipwall drops [--follow]`.
pub(crate) fn drops(cli: &Globals, minutes: u64, top: usize, follow: bool) -> anyhow::Result<()> {
    use voipwall_detect::drops::{DropSample, DropsReport};
    let mut c = must()?;
    let ask = |c: &mut Client, since: Option<u64>| -> anyhow::Result<DropsReport> {
        c.call_as(&Request::Drops {
            minutes: Some(minutes),
            top: Some(top),
            since,
        })
    };
    let port = |proto: &str, port: Option<u16>| match port {
        Some(p) => format!("{proto}/{p}"),
        None => proto.to_string(),
    };
    let r = ask(&mut c, None)?;
    if !r.enabled {
        return Err(Invalid(
            "error: the drop log is off ([drops] log = false in the policy)".into(),
        )
        .into());
    }
    if !follow {
        if cli.json {
            return print(&serde_json::to_string(&r)?);
        }
        let now = voipwall_detect::Timestamp(
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(0),
        );
        let mut out = format!(
            "Refused in the last {} min: {} samples (the kernel samples {} a second per zone and per ban/block set){}\n",
            r.minutes,
            r.samples,
            r.rate,
            if r.others > 0 {
                format!("; {} from sources beyond the tracked ones", r.others)
            } else {
                String::new()
            }
        );
        if r.sources.is_empty() {
            out.push_str("Nothing refused was sampled.\n");
        } else {
            out.push_str(&format!(
                "\n{:<40} {:>8}  {:<24} {:<11} LAST SEEN\n",
                "SOURCE", "SAMPLES", "REFUSED BY", "LAST PORT"
            ));
            for s in &r.sources {
                out.push_str(&format!(
                    "{:<40} {:>8}  {:<24} {:<11} {}s ago\n",
                    s.src,
                    s.samples,
                    format!("{} {}", s.kind.as_str(), s.name),
                    port(&s.last_proto, s.last_port),
                    now.0.saturating_sub(s.last_ms) / 1000
                ));
            }
            out.push_str("\nPORTS  ");
            let ports: Vec<String> = r
                .ports
                .iter()
                .map(|p| format!("{} {}", port(&p.proto, p.port), p.samples))
                .collect();
            out.push_str(&ports.join(", "));
            out.push_str("\nBY     ");
            let by: Vec<String> = r
                .reasons
                .iter()
                .map(|z| format!("{} {} {}", z.kind.as_str(), z.name, z.samples))
                .collect();
            out.push_str(&by.join(", "));
        }
        return print(&out);
    }
    let show = |s: &DropSample| -> anyhow::Result<()> {
        if cli.json {
            print(&serde_json::to_string(s)?)
        } else {
            print(&format!(
                "{}  {:<40} {:<11} refused by {} {}",
                voipwall_detect::Timestamp(s.at_ms),
                s.src,
                port(&s.proto, s.port),
                s.kind.as_str(),
                s.name
            ))
        }
    };
    let mut next = r.next;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let r = ask(&mut c, Some(next))?;
        // The daemon keeps the latest 512 one by one: say so when more
        // came between two looks.
        if let Some((first, _)) = r.recent.first()
            && *first > next + 1
        {
            eprintln!("({} samples came faster than shown)", first - next - 1);
        }
        for (_, s) in &r.recent {
            show(s)?;
        }
        next = r.next;
    }
}

/// `voipwall reload`.
pub(crate) fn reload(cli: &Globals) -> anyhow::Result<()> {
    // A refused reload answers in the same shape, `ok` false.
    let v = must()?.call(&Request::Reload)?;
    let r: crate::daemon::control::ReloadReply = match serde_json::from_value(v.clone()) {
        Ok(r) => r,
        Err(_) => {
            let e = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the daemon refused");
            return Err(Invalid(format!("error: {e}")).into());
        }
    };
    if !r.ok {
        return Err(Invalid(format!("error: {}", r.result)).into());
    }
    print(&if cli.json {
        serde_json::to_string(&r)?
    } else {
        r.result
    })
}

/// `voipwall call decide`: what the call rules say of a call, from the
/// daemon's counters; exit status 1 when a rule would be broken.
pub(crate) fn call_decide(
    cli: &Globals,
    from: IpAddr,
    user: Option<String>,
    to: String,
) -> anyhow::Result<()> {
    let r: crate::daemon::control::CallDecideReply = must()?.call_as(&Request::CallDecide {
        from: from.to_string(),
        user,
        to,
    })?;
    if cli.json {
        print(&serde_json::to_string(&r)?)?;
    } else if r.allow {
        print("allow")?;
    } else {
        let mut s = String::from("deny\n");
        for b in &r.broken {
            s.push_str(&format!("  call:{}: {}\n", b.rule, b.reason));
        }
        print(s.trim_end())?;
    }
    if !r.allow {
        std::process::exit(1);
    }
    Ok(())
}

/// `voipwall bans` through the daemon: the store's view, with reasons.
pub(crate) fn bans(
    cli: &Globals,
    c: &mut Client,
    all: bool,
    rule: Option<String>,
) -> anyhow::Result<()> {
    let r: crate::daemon::control::BansReply = c.call_as(&Request::Bans {
        all,
        rule,
        net: None,
        limit: None,
    })?;
    if cli.json {
        return print(&serde_json::to_string(&r.bans)?);
    }
    let rows = r.bans;
    let now = crate::safety::now().0;
    let mut s = format!(
        "{:<24} {:<22} {:<46} {}\n",
        "TARGET", "RULE", "ENDS", "REASON"
    );
    for b in &rows {
        let ends = match &b.lifted {
            Some(at) => format!(
                "LIFTED {} by {}",
                crate::human::local_and_utc(at.0),
                b.lifted_by.as_deref().unwrap_or("an operator")
            ),
            None if b.end.0 <= now => format!("ended {}", crate::human::local_and_utc(b.end.0)),
            None => crate::human::until(b.end.0, now),
        };
        s.push_str(&format!(
            "{:<24} {:<22} {:<46} {}\n",
            b.target.to_string(),
            b.rule,
            ends,
            b.reason
        ));
    }
    s.push_str(&format!(
        "{} {}{}\n",
        rows.len(),
        if rows.len() == 1 { "ban" } else { "bans" },
        if all { "" } else { " in force" }
    ));
    print(&s)
}

/// `voipwall explain <addr>`: what detection knows (rule, events, ban end).
pub(crate) fn explain_detection(cli: &Globals, addr: IpAddr) -> anyhow::Result<()> {
    let r: crate::daemon::control::ExplainReply = must()?.call_as(&Request::Explain {
        addr: addr.to_string(),
    })?;
    if cli.json {
        return print(&serde_json::to_string(&r)?);
    }
    let e = &r.engine;
    let mut s = format!("{addr} (counted as {})\n", e.group);
    if e.protected {
        s.push_str("  never banned: own address, management, allow list, trusted or never_ban\n");
    }
    if let Some(k) = e.known_until {
        s.push_str(&format!("  registered endpoint until {k}\n"));
    }
    match &e.banned {
        Some(b) => {
            s.push_str(&format!(
                "  BANNED {} by {} until {}\n  why: {}\n  evidence:\n",
                b.target, b.rule, b.until, b.reason
            ));
            for ev in &b.evidence {
                s.push_str(&format!("    {}\n", evidence_line(ev)));
            }
        }
        None => s.push_str("  not banned\n"),
    }
    for c in &e.counters {
        let prog: Vec<String> = c
            .progress
            .iter()
            .map(|(n, of, within)| {
                format!(
                    "{n}/{of} in {}",
                    voipwall_detect::time::format_duration(*within)
                )
            })
            .collect();
        s.push_str(&format!("  {}: {}\n", c.rule, prog.join(", ")));
        for ev in &c.evidence {
            s.push_str(&format!("    {}\n", evidence_line(ev)));
        }
    }
    s.push_str(&format!(
        "  {} ban(s) of it in the store (voipwall bans --all)\n",
        r.stored_bans.len()
    ));
    print(&s).context("writing")
}

/// One evidence line: when, from where, what, which source, and for
/// authentication failures whether the source proved it receives at its
/// address (a forged UDP source cannot).
fn evidence_line(ev: &voipwall_detect::Evidence) -> String {
    let proof = match ev.verified {
        Some(true) => "  [verified: answered a nonce issued to it]",
        Some(false) => "  [unverified: no nonce issued to this source]",
        None => "",
    };
    format!("{}  {}  {} ({}){proof}", ev.at, ev.src, ev.what, ev.origin)
}
