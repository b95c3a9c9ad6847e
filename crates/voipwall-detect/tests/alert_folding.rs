//! Alerts cannot be amplified (issue 19): 30,000 forged scanner packets
//! from a protected address within a minute are one alert, then one alert
//! that counts the other 29,999 when the window ends; another source or
//! rule has its own window; the number of open windows is bounded.
use std::net::IpAddr;

use voipwall_detect::scenario::BASE;
use voipwall_detect::{Action, Config, Engine, Event, EventKind, Request, RuleSet};

fn scanner(src: IpAddr, i: u64) -> (Vec<u8>, Event<'static>) {
    let _ = i;
    (
        Vec::new(),
        Event {
            src,
            kind: EventKind::Request(Request {
                method: b"OPTIONS",
                call_id: b"forged",
                cseq: 1,
                user_agent: Some(b"friendly-scanner"),
                ..Request::default()
            }),
            origin: "nflog",
        },
    )
}

fn alerts(e: &mut Engine) -> Vec<(String, u64)> {
    alerts_by_rule(e)
        .into_iter()
        .map(|(a, _, n)| (a, n))
        .collect()
}

fn alerts_by_rule(e: &mut Engine) -> Vec<(String, String, u64)> {
    let mut v = Vec::new();
    while let Some(a) = e.poll_action() {
        match a {
            Action::Alert {
                addr,
                rule,
                repeats,
                ..
            } => v.push((addr.to_string(), rule, repeats)),
            Action::Ban(b) => panic!("banned {}", b.target),
            _ => {}
        }
    }
    v
}

#[test]
fn a_forged_flood_from_a_protected_address_is_two_alerts_a_minute() {
    let mut cfg = Config::new(RuleSet::builtin());
    cfg.never_ban.push("192.0.2.0/24".parse().unwrap());
    let mut e = Engine::new(cfg);
    let mgmt: IpAddr = "192.0.2.10".parse().unwrap();
    let other: IpAddr = "192.0.2.11".parse().unwrap();
    for i in 0..30_000u64 {
        let (_, ev) = scanner(mgmt, i);
        e.handle_event(BASE.plus(i * 2), &ev);
    }
    let (_, ev) = scanner(other, 0);
    e.handle_event(BASE.plus(1000), &ev);
    // One alert per rule that fired (the scanner's User-Agent, and the
    // request flood the packets also are).
    let first = alerts_by_rule(&mut e);
    let rules: Vec<&str> = first
        .iter()
        .filter(|(a, _, _)| a == "192.0.2.10")
        .map(|(_, r, _)| r.as_str())
        .collect();
    assert!(rules.contains(&"scanner"), "{first:?}");
    assert!(first.iter().all(|(_, _, n)| *n == 0), "{first:?}");
    assert_eq!(rules.len(), first.len() - 1, "{first:?}");
    // The window ends: one alert per rule with its count; the other source
    // folded nothing, so it says nothing more.
    let end = e.poll_timeout().expect("a window's end is a deadline");
    assert_eq!(end, BASE.plus(60_000));
    e.handle_timeout(end.plus(1000));
    let summary = alerts_by_rule(&mut e);
    assert!(
        summary
            .iter()
            .any(|(a, r, n)| a == "192.0.2.10" && r == "scanner" && *n == 29_999),
        "{summary:?}"
    );
    assert!(
        summary.iter().all(|(a, _, _)| a == "192.0.2.10"),
        "{summary:?}"
    );
    assert_eq!(
        summary.iter().map(|(_, _, n)| n).sum::<u64>(),
        e.stats().alerts_folded,
        "every folded alert is counted in a summary"
    );
    // A new window starts with the next alert.
    let (_, ev) = scanner(mgmt, 0);
    e.handle_event(BASE.plus(70_000), &ev);
    assert!(
        alerts(&mut e)
            .iter()
            .all(|(a, n)| a == "192.0.2.10" && *n == 0)
    );
}

#[test]
fn open_windows_are_bounded_and_closed_early_ones_report_their_count() {
    let mut cfg = Config::new(RuleSet::builtin());
    cfg.never_ban.push("10.0.0.0/8".parse().unwrap());
    let mut e = Engine::new(cfg);
    // 5,000 protected sources, each alerting twice.
    for round in 0..2u64 {
        for i in 0..5_000u32 {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let (_, ev) = scanner(src, round);
            e.handle_event(BASE.plus(round * 10 + u64::from(i % 7)), &ev);
        }
    }
    let got = alerts(&mut e);
    let folded: u64 = got.iter().map(|(_, n)| n).sum();
    // Every alert is reported: as an alert of its own or counted in one.
    assert_eq!(
        got.iter().filter(|(_, n)| *n == 0).count() as u64 + folded,
        10_000
    );
    e.handle_timeout(BASE.plus(120_000));
    let rest: u64 = alerts(&mut e).iter().map(|(_, n)| n).sum();
    assert_eq!(
        got.iter().filter(|(_, n)| *n == 0).count() as u64 + folded + rest,
        10_000
    );
}

/// The driver's clock may step back: a window opened after the step ends
/// on time even though one opened before it ends later.
#[test]
fn a_clock_stepping_back_does_not_hold_windows_open() {
    let mut cfg = Config::new(RuleSet::builtin());
    cfg.never_ban.push("192.0.2.0/24".parse().unwrap());
    let mut e = Engine::new(cfg);
    let (a, b): (IpAddr, IpAddr) = ("192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap());
    e.handle_event(BASE.plus(100_000), &scanner(a, 0).1);
    // The clock steps back 100 s.
    e.handle_event(BASE, &scanner(b, 0).1);
    e.handle_event(BASE.plus(10), &scanner(b, 1).1);
    let _ = alerts(&mut e);
    assert_eq!(e.poll_timeout(), Some(BASE.plus(60_000)));
    e.handle_timeout(BASE.plus(60_000));
    assert_eq!(alerts(&mut e), [("192.0.2.11".to_string(), 1)]);
}
