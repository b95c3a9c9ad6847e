//! A spoofed-source flood cannot grow the engine without limit: one million
//! distinct sources, each sending a REGISTER that the PBX challenges, keep
//! the live heap (measured by a counting allocator) under a bound that
//! depends on `max_sources`, not on the number of sources.
use std::net::{IpAddr, Ipv4Addr};

use voipwall_detect::scenario::BASE;
use voipwall_detect::{Config, Engine, Event, EventKind, Request, Response, RuleSet};

mod common;

#[global_allocator]
static A: common::Counting = common::Counting;

#[test]
fn a_million_spoofed_sources_stay_under_the_configured_bound() {
    const SOURCES: u32 = 1_000_000;
    const MAX: usize = 20_000;
    let mut cfg = Config::new(RuleSet::builtin());
    cfg.max_sources = MAX;
    cfg.max_known = MAX;
    cfg.max_bans = MAX;
    let mut e = Engine::new(cfg);
    let base_live = common::start();
    for i in 0..SOURCES {
        // 100k packets per second of simulated time, every source new.
        let now = BASE.plus(u64::from(i) / 100);
        let src = IpAddr::V4(Ipv4Addr::from(
            0xC633_6400u32.wrapping_add(i).wrapping_add(0x0100_0000),
        ));
        while let Some(t) = e.poll_timeout().filter(|&t| t <= now) {
            e.handle_timeout(t);
        }
        let call = i.to_be_bytes();
        e.handle_event(
            now,
            &Event {
                src,
                kind: EventKind::Request(Request {
                    method: b"REGISTER",
                    call_id: &call,
                    cseq: 1,
                    to_user: Some(b"1001"),
                    ..Request::default()
                }),
                origin: "flood",
            },
        );
        e.handle_event(
            now,
            &Event {
                src,
                kind: EventKind::Response(Response {
                    code: 401,
                    call_id: &call,
                    cseq: 1,
                    method: b"REGISTER",
                    expires: None,
                    nonce: Some(&call),
                    stream: false,
                }),
                origin: "flood",
            },
        );
        while e.poll_action().is_some() {}
    }
    let s = e.stats();

    let peak = common::peak_since(base_live);
    eprintln!("stats {s:?}, peak live heap {} KiB", peak / 1024);
    assert!(s.tracked_sources <= MAX as u64);
    assert_eq!(s.evicted_sources, u64::from(SOURCES) - MAX as u64);
    assert!(s.timers <= 2 * MAX as u64 + 1024 + 1, "timers {}", s.timers);
    // ~1 KiB per tracked source is the budget (LRU node, state, one pending
    // challenge, its timer); a million sources must not show.
    assert!(
        peak < MAX * 1024,
        "peak live heap {peak} bytes for {MAX} sources"
    );
}
