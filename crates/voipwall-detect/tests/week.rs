//! Long scripted-clock runs: a legitimate phone over a simulated week next to
//! attackers in its own /24 and /64, and what `explain` says afterwards.
use std::net::IpAddr;

use voipwall_detect::scenario::BASE;
use voipwall_detect::{
    Action, Config, Engine, Event, EventKind, Request, Response, RuleSet, Timestamp,
};

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Drives the engine's timers up to `now`, then feeds `ev`; returns the actions.
fn feed(e: &mut Engine, now: Timestamp, ev: &Event<'_>, out: &mut Vec<Action>) {
    while let Some(t) = e.poll_timeout().filter(|&t| t <= now) {
        e.handle_timeout(t);
    }
    e.handle_event(now, ev);
    while let Some(a) = e.poll_action() {
        out.push(a);
    }
}

fn request<'a>(
    src: IpAddr,
    method: &'a [u8],
    user: &'a [u8],
    call: &'a [u8],
    cseq: u64,
    auth: bool,
    ua: &'a [u8],
) -> Event<'a> {
    Event {
        src,
        kind: EventKind::Request(Request {
            method,
            ruri_user: Some(user),
            to_user: Some(user),
            from_user: Some(user),
            user_agent: Some(ua),
            call_id: call,
            cseq,
            has_auth: auth,
            auth_user: auth.then_some(user),
            auth_nonce: auth.then_some(b"n"),
            several_credentials: false,
            stream: false,
            to_tag: false,
            expires: Some(60),
            session_expires: None,
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
            expires: (code == 200).then_some(60),
            nonce: matches!(code, 401 | 407).then_some(b"n"),
            stream: false,
        }),
        origin: "test",
    }
}

/// The phone registers every 30 s (challenge, authenticated retry, 200 OK)
/// for seven simulated days. Attackers in its IPv4 /24 and its IPv6 /64
/// guess passwords, ignore challenges, scan and flood throughout. With both
/// families counted by prefix, the IPv4 attacker's /24 is banned again and
/// again; the IPv6 attacker, one address, is banned by its address (its /64
/// would follow only after three of its addresses); the phones are never
/// banned at any instant.
#[test]
fn phones_registering_for_a_week_are_never_banned_while_their_prefix_is() {
    let mut cfg = Config::new(RuleSet::builtin());
    cfg.group_v4 = 24;
    cfg.group_v6 = 64;
    let mut e = Engine::new(cfg);
    let phone4 = addr("198.51.100.20");
    let phone6 = addr("2001:db8:a:1::20");
    let attacker4 = addr("198.51.100.66");
    let attacker6 = addr("2001:db8:a:1::66");
    let mut actions = Vec::new();
    let week = 7 * 86_400_000u64;
    let mut t = 0u64;
    let mut n = 0u32;
    let mut phone_checks = 0u64;
    while t < week {
        let now = BASE.plus(t);
        for (i, phone) in [phone4, phone6].into_iter().enumerate() {
            let call = format!("phone{i}-{n}");
            let call = call.as_bytes();
            feed(
                &mut e,
                now,
                &request(phone, b"REGISTER", b"1001", call, 1, false, b"Yealink T46U"),
                &mut actions,
            );
            feed(
                &mut e,
                now.plus(5),
                &response(phone, 401, b"REGISTER", call, 1),
                &mut actions,
            );
            feed(
                &mut e,
                now.plus(20),
                &request(phone, b"REGISTER", b"1001", call, 2, true, b"Yealink T46U"),
                &mut actions,
            );
            feed(
                &mut e,
                now.plus(25),
                &response(phone, 200, b"REGISTER", call, 2),
                &mut actions,
            );
        }
        // Every 10 minutes, each attacker makes a burst: wrong passwords,
        // then (after a pause) scanner requests.
        if t.is_multiple_of(600_000) {
            for (k, attacker) in [attacker4, attacker6].into_iter().enumerate() {
                for j in 0..6u64 {
                    let call = format!("a{k}-{n}-{j}");
                    let at = now.plus(1000 + j * 100);
                    feed(
                        &mut e,
                        at,
                        &request(
                            attacker,
                            b"REGISTER",
                            b"1001",
                            call.as_bytes(),
                            2,
                            true,
                            b"pbx",
                        ),
                        &mut actions,
                    );
                    feed(
                        &mut e,
                        at.plus(5),
                        &response(attacker, 403, b"REGISTER", call.as_bytes(), 2),
                        &mut actions,
                    );
                }
                feed(
                    &mut e,
                    now.plus(9000),
                    &request(
                        attacker,
                        b"OPTIONS",
                        b"100",
                        b"scan",
                        1,
                        false,
                        b"friendly-scanner",
                    ),
                    &mut actions,
                );
            }
        }
        for phone in [phone4, phone6] {
            for dt in [0, 30, 1000, 9000, 29_999] {
                phone_checks += 1;
                assert!(
                    e.ban_for(phone, now.plus(dt)).is_none(),
                    "phone {phone} banned at +{}ms: {:?}",
                    t + dt,
                    e.ban_for(phone, now.plus(dt))
                );
            }
        }
        t += 30_000;
        n += 1;
    }
    let bans: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Ban(b) => Some(b),
            _ => None,
        })
        .collect();
    assert!(phone_checks > 80_000);
    for b in &bans {
        assert!(
            b.offender == attacker4 || b.offender == attacker6,
            "banned a non-attacker: {b:?}"
        );
    }
    let v4: Vec<_> = bans
        .iter()
        .filter(|b| b.target.to_string() == "198.51.100.0/24")
        .collect();
    let v6: Vec<_> = bans
        .iter()
        .filter(|b| b.target.to_string() == "2001:db8:a:1::66/128")
        .collect();
    assert!(
        !bans
            .iter()
            .any(|b| b.target.to_string() == "2001:db8:a:1::/64"),
        "one IPv6 address escalated to its /64"
    );
    assert!(
        !v4.is_empty() && !v6.is_empty(),
        "attackers banned: {} v4 prefix, {} v6 address",
        v4.len(),
        v6.len()
    );
    // Recidive escalated: the prefix is banned again soon after each ban ends.
    assert!(
        v4.iter().any(|b| b.ttl >= 7 * 86_400_000),
        "no escalation: {:?}",
        v4.iter().map(|b| b.ttl).collect::<Vec<_>>()
    );
    // The attackers are banned (prefix) right now, the phones are not.
    let end = BASE.plus(week);
    assert!(e.ban_for(attacker4, end).is_some());
    assert!(e.ban_for(attacker6, end).is_some());
    assert!(e.ban_for(phone4, end).is_none() && e.is_known(phone4, end));
    // Promotions kept the phones known all week.
    let promotions = actions
        .iter()
        .filter(|a| matches!(a, Action::Promote { .. }))
        .count();
    assert_eq!(promotions, 2 * usize::try_from(n).unwrap());
}

#[test]
fn explain_names_the_rule_the_events_and_the_ban_end() {
    let mut e = Engine::new(Config::new(RuleSet::builtin()));
    let a = addr("203.0.113.9");
    let mut out = Vec::new();
    for i in 0..5u64 {
        let ev = Event {
            src: a,
            kind: EventKind::AuthFailed {
                user: Some(b"1001"),
            },
            origin: "asterisk-security",
        };
        feed(&mut e, BASE.plus(i * 2000), &ev, &mut out);
    }
    let x = e.explain(a, BASE.plus(10_000));
    let ban = x.banned.expect("banned");
    assert_eq!(ban.rule, "auth-bruteforce");
    assert_eq!(ban.until, BASE.plus(8000 + 3_600_000));
    assert_eq!(ban.evidence.len(), 5);
    assert_eq!(ban.evidence[0].at, BASE);
    assert_eq!(ban.evidence[4].at, BASE.plus(8000));
    assert_eq!(ban.evidence[0].what, "authentication failed for 1001");
    assert_eq!(ban.evidence[0].origin, "asterisk-security");
    assert!(ban.reason.contains("5 in 1m"), "{}", ban.reason);
    assert_eq!(x.counters[0].rule, "auth-bruteforce");
    assert_eq!(x.counters[0].progress[0], (5, 5, 60_000));
    // After the ban ends it is history, not a ban.
    let later = e.explain(a, BASE.plus(8000 + 3_600_000));
    assert!(later.banned.is_none());
    assert_eq!(later.bans.len(), 1);
    assert_eq!(e.stats().bans, 1);
}

#[test]
fn a_from_header_naming_another_address_does_not_move_the_blame() {
    // The packet's source is the offender; an IP inside From/To/Contact is
    // just a string to the engine.
    let mut e = Engine::new(Config::new(RuleSet::builtin()));
    let attacker = addr("203.0.113.9");
    let mut out = Vec::new();
    for i in 0..5u32 {
        let call = format!("c{i}");
        feed(
            &mut e,
            BASE.plus(u64::from(i)),
            &request(
                attacker,
                b"REGISTER",
                b"1001@198.51.100.20",
                call.as_bytes(),
                2,
                true,
                b"x",
            ),
            &mut out,
        );
        feed(
            &mut e,
            BASE.plus(u64::from(i) + 1),
            &response(attacker, 401, b"REGISTER", call.as_bytes(), 2),
            &mut out,
        );
    }
    let Some(Action::Ban(b)) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(b.target.to_string(), "203.0.113.9/32");
    assert!(e.ban_for(addr("198.51.100.20"), BASE.plus(10)).is_none());
}
