//! Issue 23: the call guard's memory stays bounded under a million
//! unanswered INVITEs from spoofed sources (each a new call that never
//! ends): calls live in an LRU of `max_calls`, evictions counted; the live
//! heap (a counting allocator) stays under a bound set by `max_calls`. The
//! time per INVITE through the whole engine is printed (the INVITE verdict
//! latency of passive mode; BENCHMARKS.md).
use std::net::{IpAddr, Ipv4Addr};

use voipwall_detect::calls::{CallConfig, CallRule};
use voipwall_detect::scenario::BASE;
use voipwall_detect::{Config, Engine, Event, EventKind, Request, RuleSet};

mod common;

#[global_allocator]
static A: common::Counting = common::Counting;

#[test]
fn a_million_unanswered_invites_stay_under_the_bound() {
    const INVITES: u32 = 1_000_000;
    const MAX_CALLS: usize = 20_000;
    let mut rules = RuleSet::builtin();
    for r in &mut rules.rules {
        r.enabled = false;
    }
    let mut cfg = Config::new(rules);
    cfg.max_sources = MAX_CALLS;
    cfg.call = Some(CallConfig {
        rules: vec![CallRule {
            deny_to: vec!["+882".into()],
            max_concurrent: Some(100),
            max_per_minute: Some(1000),
            ..voipwall_detect::calls::plain_rule("all")
        }],
        max_duration: 4 * 3_600_000,
        max_calls: MAX_CALLS,
    });
    let mut e = Engine::new(cfg);
    let base_live = common::start();
    let mut call = Vec::with_capacity(16);
    let mut ns: Vec<u64> = Vec::with_capacity(1000);
    for i in 0..INVITES {
        let now = BASE.plus(u64::from(i) / 100);
        let src = IpAddr::V4(Ipv4Addr::from(0xC612_0000u32.wrapping_add(i)));
        while let Some(t) = e.poll_timeout().filter(|&t| t <= now) {
            e.handle_timeout(t);
        }
        call.clear();
        call.extend_from_slice(&i.to_be_bytes());
        let ev = Event {
            src,
            kind: EventKind::Request(Request {
                method: b"INVITE",
                ruri_user: Some(b"02079460000"),
                call_id: &call,
                cseq: 1,
                ..Request::default()
            }),
            origin: "flood",
        };
        // One INVITE in a thousand is timed (the clock read is the test's,
        // not the engine's).
        if i % 1000 == 0 {
            #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
            let t = std::time::Instant::now();
            e.handle_event(now, &ev);
            ns.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        } else {
            e.handle_event(now, &ev);
        }
        while e.poll_action().is_some() {}
    }
    let c = e.call_stats().expect("call rules");
    let peak = common::peak_since(base_live);
    ns.sort_unstable();
    eprintln!(
        "calls {c:?}\npeak live heap {} KiB for {MAX_CALLS} calls ({} bytes per call); INVITE through the engine: p50 {} ns, p99 {} ns",
        peak / 1024,
        peak / MAX_CALLS,
        ns[ns.len() / 2],
        ns[ns.len() * 99 / 100]
    );
    assert_eq!(c.calls, MAX_CALLS as u64);
    assert_eq!(c.evicted, u64::from(INVITES) - MAX_CALLS as u64);
    assert_eq!(c.rules[0].active, MAX_CALLS as u32, "{c:?}");
    // The budget: 1 KiB per followed call (the call, its LRU node, its
    // timer, the engine's per-source state the INVITE also makes).
    assert!(
        peak < MAX_CALLS * 1024,
        "peak live heap {peak} bytes for {MAX_CALLS} calls"
    );
}
