//! Issue 23: how calls end in the engine's count. A BYE ends a call only
//! when the PBX accepts it (its 2xx): a caller sending a BYE the PBX
//! refuses (481) keeps talking, and must keep counting. The PBX's own BYE
//! ends its call at once; a CANCEL ends with the 487 to the INVITE.
use std::net::IpAddr;

use voipwall_detect::calls::{Act, CallConfig, CallRule};
use voipwall_detect::scenario::BASE;
use voipwall_detect::{Ban, Config, Engine, Event, EventKind, Request, Response, RuleSet};

/// An engine with detection rules off and one call rule.
fn engine_with(rule: CallRule) -> Engine {
    let mut rules = RuleSet::builtin();
    for r in &mut rules.rules {
        r.enabled = false;
    }
    let mut cfg = Config::new(rules);
    cfg.call = Some(CallConfig {
        rules: vec![rule],
        max_duration: 4 * 3_600_000,
        max_calls: 100,
    });
    Engine::new(cfg)
}

fn engine() -> Engine {
    engine_with(CallRule {
        max_concurrent: Some(10),
        ..voipwall_detect::calls::plain_rule("all")
    })
}

fn request<'a>(src: IpAddr, method: &'a [u8], call: &'a [u8], cseq: u64, tag: bool) -> Event<'a> {
    Event {
        src,
        kind: EventKind::Request(Request {
            method,
            ruri_user: Some(b"442079460000"),
            call_id: call,
            cseq,
            to_tag: tag,
            ..Request::default()
        }),
        origin: "test",
    }
}

fn response<'a>(dst: IpAddr, code: u16, method: &'a [u8], call: &'a [u8], cseq: u64) -> Event<'a> {
    Event {
        src: dst,
        kind: EventKind::Response(Response {
            code,
            call_id: call,
            cseq,
            method,
            ..Response::default()
        }),
        origin: "test",
    }
}

fn up(e: &Engine) -> u32 {
    e.call_stats().expect("call rules").rules[0].active
}

#[test]
fn a_bye_ends_a_call_when_the_pbx_accepts_it() {
    let mut e = engine();
    let caller: IpAddr = "203.0.113.2".parse().unwrap();
    let t = BASE;
    for call in [&b"a"[..], b"b", b"c"] {
        e.handle_event(t, &request(caller, b"INVITE", call, 1, false));
        e.handle_event(t, &response(caller, 200, b"INVITE", call, 1));
    }
    assert_eq!(up(&e), 3);
    // A BYE the PBX refuses: still up.
    e.handle_event(t, &request(caller, b"BYE", b"a", 2, true));
    e.handle_event(t, &response(caller, 481, b"BYE", b"a", 2));
    assert_eq!(up(&e), 3);
    // A BYE it accepts: ended.
    e.handle_event(t, &request(caller, b"BYE", b"a", 3, true));
    assert_eq!(up(&e), 3, "a BYE alone ends nothing");
    e.handle_event(t, &response(caller, 200, b"BYE", b"a", 3));
    assert_eq!(up(&e), 2);
    // The PBX hangs up call b itself.
    e.host_hangup(caller, b"b");
    assert_eq!(up(&e), 1);
    // A call cancelled before its answer: the 487 ends it.
    e.handle_event(t, &request(caller, b"INVITE", b"d", 1, false));
    assert_eq!(up(&e), 2);
    e.handle_event(t, &request(caller, b"CANCEL", b"d", 1, false));
    e.handle_event(t, &response(caller, 200, b"CANCEL", b"d", 1));
    e.handle_event(t, &response(caller, 487, b"INVITE", b"d", 1));
    assert_eq!(up(&e), 1);
}

/// A queued INVITE from a source the engine holds banned (the kernel let
/// it in: a prefix ban sparing an endpoint, a ban not in force yet) is
/// still judged by the call rules.
#[test]
fn a_queued_invite_from_a_banned_source_is_still_judged() {
    let mut e = engine_with(CallRule {
        deny_to: vec!["+882".into()],
        action: Act::Drop,
        ..voipwall_detect::calls::plain_rule("no-premium")
    });
    let src: IpAddr = "203.0.113.7".parse().unwrap();
    e.restore_ban(Ban {
        target: "203.0.113.0/24".parse().unwrap(),
        offender: "203.0.113.9".parse().unwrap(),
        rule: "scanner".into(),
        at: BASE,
        until: BASE.plus(3_600_000),
        ttl: 3_600_000,
        level: 0,
        reason: String::new(),
        account: None,
        evidence: Vec::new(),
        verified: true,
    });
    let ev = Event {
        src,
        kind: EventKind::Request(Request {
            method: b"INVITE",
            ruri_user: Some(b"0088212345"),
            call_id: b"x",
            cseq: 1,
            ..Request::default()
        }),
        origin: "nfqueue",
    };
    assert!(e.handle_queued(BASE.plus(60_000), &ev));
}

/// The INVITE whose request count bans its source (a flood) stops there:
/// the call rules never count it as a call.
#[test]
fn an_invite_that_bans_its_source_by_flood_is_no_call() {
    let mut rules = RuleSet::builtin();
    for r in &mut rules.rules {
        r.enabled = r.id == "request-flood";
    }
    let mut cfg = Config::new(rules);
    cfg.call = Some(CallConfig {
        rules: vec![CallRule {
            max_concurrent: Some(1000),
            ..voipwall_detect::calls::plain_rule("all")
        }],
        max_duration: 4 * 3_600_000,
        max_calls: 1000,
    });
    let mut e = Engine::new(cfg);
    let caller: IpAddr = "203.0.113.2".parse().unwrap();
    let calls: Vec<String> = (0..100).map(|i| format!("flood-{i}")).collect();
    for (ms, call) in (0u64..).zip(&calls) {
        e.handle_event(
            BASE.plus(ms),
            &request(caller, b"INVITE", call.as_bytes(), 1, false),
        );
    }
    let ban = e
        .ban_for(caller, BASE.plus(100))
        .expect("the 100th request bans");
    assert_eq!(ban.rule, "request-flood");
    assert_eq!(up(&e), 99, "the banning INVITE was counted as a call");
}
