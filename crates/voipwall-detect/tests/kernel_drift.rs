//! The engine never silently suppresses a source the kernel does not hold:
//! a request that reached detection from a banned source means the kernel
//! lost the ban, and the engine asks it back — after the in-flight grace,
//! not near the ban's end, and at most once per interval. And the request
//! that bans its source stops there: it counts toward no other rule.
use std::net::IpAddr;

use voipwall_detect::scenario::BASE;
use voipwall_detect::{
    Action, Ban, Config, Engine, Event, EventKind, REASSERT_EVERY, REASSERT_GRACE, Request,
    RuleSet, Timestamp,
};

fn request(src: IpAddr) -> Event<'static> {
    Event {
        src,
        kind: EventKind::Request(Request {
            method: b"OPTIONS",
            call_id: b"c1",
            cseq: 1,
            ..Request::default()
        }),
        origin: "nflog",
    }
}

fn reasserts(e: &mut Engine) -> Vec<String> {
    let mut v = Vec::new();
    while let Some(a) = e.poll_action() {
        if let Action::Reassert(b) = a {
            v.push(b.target.to_string());
        }
    }
    v
}

#[test]
fn a_packet_from_a_banned_source_asks_the_ban_back() {
    let mut e = Engine::new(Config::new(RuleSet::builtin()));
    let src: IpAddr = "203.0.113.7".parse().unwrap();
    let start = BASE;
    e.restore_ban(Ban {
        target: src.into(),
        offender: src,
        rule: "manual".into(),
        at: start,
        until: start.plus(3_600_000),
        ttl: 3_600_000,
        level: 0,
        reason: "test".into(),
        account: None,
        evidence: Vec::new(),
        verified: true,
    });
    let at = |ms: u64| -> Timestamp { start.plus(ms) };
    // In flight: queued before the kernel had the ban.
    e.handle_packet(at(REASSERT_GRACE - 1), &request(src));
    assert!(reasserts(&mut e).is_empty());
    // Later: the kernel let it through, so it lost the ban.
    e.handle_packet(at(REASSERT_GRACE), &request(src));
    assert_eq!(reasserts(&mut e), ["203.0.113.7/32"]);
    // Not again at once; again after the interval.
    e.handle_packet(at(REASSERT_GRACE + 1), &request(src));
    assert!(reasserts(&mut e).is_empty());
    e.handle_packet(at(REASSERT_GRACE + REASSERT_EVERY), &request(src));
    assert_eq!(reasserts(&mut e), ["203.0.113.7/32"]);
    // Log events prove nothing about the kernel (they may lag).
    e.handle_event(at(3 * REASSERT_EVERY), &request(src));
    assert!(reasserts(&mut e).is_empty());
    // Near the end the kernel's own timeout may have run out first.
    e.handle_packet(at(3_600_000 - REASSERT_GRACE + 1), &request(src));
    assert!(reasserts(&mut e).is_empty());
    assert_eq!(e.stats().reasserted, 2);
    // An unbanned source asks nothing.
    e.handle_packet(at(10_000), &request("203.0.113.8".parse().unwrap()));
    assert!(reasserts(&mut e).is_empty());
}

/// The bans an engine asked for since the last call, as `target rule`.
fn bans(e: &mut Engine) -> Vec<String> {
    let mut v = Vec::new();
    while let Some(a) = e.poll_action() {
        if let Action::Ban(b) = a {
            v.push(format!("{} {}", b.target, b.rule));
        }
    }
    v
}

#[test]
fn the_request_that_bans_its_source_counts_toward_nothing_else() {
    let mut e = Engine::new(Config::new(RuleSet::builtin()));
    let src: IpAddr = "203.0.113.7".parse().unwrap();
    let at = |ms: u64| -> Timestamp { BASE.plus(ms) };
    let scan = Event {
        src,
        kind: EventKind::Request(Request {
            method: b"OPTIONS",
            call_id: b"scan",
            cseq: 1,
            user_agent: Some(b"friendly-scanner"),
            ..Request::default()
        }),
        origin: "nflog",
    };
    e.handle_packet(at(0), &scan);
    assert_eq!(bans(&mut e), ["203.0.113.7/32 scanner"]);
    // The operator lifts the ban. The source's next 99 requests in the same
    // second stay under the flood rule's 100: the scanner's request, stopped
    // at its ban, was not one of the requests counted.
    e.forget_ban(&src.into());
    for ms in 1..=99 {
        e.handle_packet(at(ms), &request(src));
    }
    assert_eq!(bans(&mut e), Vec::<String>::new());
    // The 100th is.
    e.handle_packet(at(100), &request(src));
    assert_eq!(bans(&mut e), ["203.0.113.7/32 request-flood"]);
}
