//! Issue 24: spraying account names cannot grow the engine without limit.
//! One million distinct account names, each failing once (verified), from
//! 1,000 sources: the per-account table holds at most `max_accounts` (the
//! least recently failed evicted, counted), the live heap (a counting
//! allocator) stays under a bound set by `max_accounts`, not by the names,
//! and an attack on one account interleaved with the spray still shields it.
use std::net::{IpAddr, Ipv4Addr};

use voipwall_detect::scenario::BASE;
use voipwall_detect::{Action, Config, Engine, Event, EventKind, Request, Response, RuleSet};

mod common;

#[global_allocator]
static A: common::Counting = common::Counting;

#[test]
fn a_million_account_names_from_a_thousand_sources_stay_under_the_bound() {
    const NAMES: u32 = 1_000_000;
    const SOURCES: u32 = 1_000;
    let mut rules = RuleSet::builtin();
    // Per-source rules would ban the 1,000 sources long before a million
    // failures (and their events would stop counting): only the account
    // table is under test here.
    for r in &mut rules.rules {
        r.enabled = r.id == "account-guessing";
    }
    let cfg = Config::new(rules);
    let max = cfg.max_accounts;
    let mut e = Engine::new(cfg);
    let base_live = common::start();
    let mut name = Vec::with_capacity(24);
    let mut call = Vec::with_capacity(24);
    let mut shields = 0;
    for i in 0..NAMES {
        // 10,000 failures per second of simulated time: every name new,
        // each refused over TCP (verified: the connection proves the
        // source), so each enters the big table. Every 5,000th failure is
        // a real attack on 1001 from a source of its own: it must still
        // reach the shield through the spray.
        let now = BASE.plus(u64::from(i) / 10);
        let attack = i % 5_000 == 0;
        let src = if attack {
            IpAddr::V4(Ipv4Addr::from(0xC633_6400u32 + i / 5_000))
        } else {
            IpAddr::V4(Ipv4Addr::from(0xCB00_7100u32 + (i % SOURCES) * 7))
        };
        name.clear();
        if attack {
            name.extend_from_slice(b"1001");
        } else {
            name.extend_from_slice(format!("spray{i:07}").as_bytes());
        }
        call.clear();
        call.extend_from_slice(format!("c{i}").as_bytes());
        e.handle_event(
            now,
            &Event {
                src,
                kind: EventKind::Request(Request {
                    method: b"REGISTER",
                    call_id: &call,
                    cseq: 2,
                    to_user: Some(&name),
                    has_auth: true,
                    auth_user: Some(&name),
                    auth_nonce: Some(b"n"),
                    stream: true,
                    ..Request::default()
                }),
                origin: "spray",
            },
        );
        e.handle_event(
            now,
            &Event {
                src,
                kind: EventKind::Response(Response {
                    code: 403,
                    call_id: &call,
                    cseq: 2,
                    method: b"REGISTER",
                    stream: true,
                    ..Response::default()
                }),
                origin: "spray",
            },
        );
        while let Some(a) = e.poll_action() {
            shields += u32::from(matches!(a, Action::Shield(_)));
        }
    }
    let s = e.stats();
    let peak = common::peak_since(base_live);
    eprintln!(
        "stats {s:?}, peak live heap {} KiB for {max} accounts ({} bytes per account)",
        peak / 1024,
        peak / max
    );
    assert_eq!(s.tracked_accounts, max as u64);
    assert!(
        s.evicted_accounts >= u64::from(NAMES) - max as u64 - 200,
        "{s:?}"
    );
    // The ten failures on 1001 from ten sources over 9 minutes of spray.
    assert_eq!(
        shields, 1,
        "the attack on 1001 was lost in the spray: {s:?}"
    );
    // The budget: 256 bytes per tracked account (LRU node, the name inline,
    // one failure), plus the per-source state of 1,000 sources.
    assert!(
        peak < max * 256 + 1_000 * 1024,
        "peak live heap {peak} bytes for {max} accounts"
    );
}
