//! Properties of the engine over random rules and event streams.
use proptest::prelude::*;
use voipwall_detect::rules::parse_rule;
use voipwall_detect::scenario::{BASE, parse_events, run};
use voipwall_detect::{Config, Engine, RuleSet, rules::RuleItem};

fn one_rule(count: u32, within_s: u64) -> Engine {
    let text = format!(
        "id = \"p\"\nkind = \"auth-failure\"\n[[threshold]]\ncount = {count}\nwithin = \"{within_s}s\"\nban = \"1h\"\n"
    );
    let RuleItem::Rule(r) = parse_rule("p.toml", &text).unwrap() else {
        unreachable!()
    };
    Engine::new(Config::new(RuleSet {
        rules: vec![r],
        recidive: None,
    }))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// count-1 events inside the window never ban; the count-th does, at its own time.
    #[test]
    fn fires_exactly_at_the_threshold(count in 1u32..40, within_s in 1u64..3600, spread in 0u64..1000) {
        let mut e = one_rule(count, within_s);
        // Spread the events over at most the window.
        let step = (within_s * 1000 * spread / 1000) / u64::from(count.max(2) - 1).max(1);
        let line = format!("0ms..{}ms/{}ms 203.0.113.9 auth-failed", step * u64::from(count - 1), step.max(1));
        let mut evs = parse_events(&line).unwrap();
        if step == 0 {
            evs = parse_events(&format!("0s*{count} 203.0.113.9 auth-failed")).unwrap();
        }
        prop_assert_eq!(evs.len(), count as usize);
        let last = evs.last().unwrap().at;
        let before = run(&mut one_rule(count, within_s), &evs[..evs.len() - 1]);
        prop_assert!(before.is_empty(), "{:?}", before);
        let out = run(&mut e, &evs);
        prop_assert_eq!(out.len(), 1);
        let at = voipwall_detect::time::format_duration(last.since(BASE));
        let at = if last == BASE { "0s".to_string() } else { at };
        prop_assert_eq!(&out[0], &format!("{at} ban 203.0.113.9/32 p 1h"));
    }

    /// Events further apart than the window never add up (for count >= 2).
    #[test]
    fn sparse_events_never_ban(count in 2u32..20, within_s in 1u64..600, n in 1usize..60) {
        let mut e = one_rule(count, within_s);
        let step = within_s + 1;
        let line = format!("0s..{}s/{}s 203.0.113.9 auth-failed", step * (n as u64 - 1), step);
        let out = run(&mut e, &parse_events(&line).unwrap());
        prop_assert!(out.is_empty(), "{:?}", out);
    }

    /// Any stream of events (random kinds, sources, times) never panics, and
    /// every ban or alert names an address that sent an event (shields name
    /// the account).
    #[test]
    fn random_streams_never_panic(lines in prop::collection::vec(
        (0u64..100_000, 0u8..4, prop::sample::select(vec![
            "auth-failed user=1", "auth-ok", "unknown-user user=9", "challenge", "call-rejected user=0044123456789",
            "registered expires=0", "flooding", "agent ua=sipvicious", "request REGISTER call=a auth=1",
            "request INVITE user=0044123456789 call=b", "response 401 call=a cseq=1", "response 404 call=b method=INVITE",
            "response 200 call=a cseq=1 expires=30", "response 407 call=b method=INVITE",
        ])), 0..200)) {
        let mut e = Engine::new(Config::new(RuleSet::builtin()));
        let mut evs = Vec::new();
        for (t, a, k) in &lines {
            evs.extend(parse_events(&format!("{t}ms 203.0.113.{a} {k}")).unwrap());
        }
        for l in run(&mut e, &evs) {
            if l.contains(" shield ") || l.contains(" shield-end ") {
                prop_assert!(l.ends_with(" 1 1h") || l.ends_with(" shield-end 1"), "{}", l);
                continue;
            }
            prop_assert!(l.contains(" 203.0.113."), "{}", l);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The call guard's counts stay true under any stream of INVITEs,
    /// answers, ends and time steps: each rule counts exactly the calls
    /// followed that it applies to, within the calls' bound.
    #[test]
    fn call_counts_stay_true(ops in prop::collection::vec(any::<u8>(), 0..600), max in 1usize..40) {
        let mut g = voipwall_detect::calls::test_guard(max);
        let r = g.run_ops(&ops, BASE);
        prop_assert!(r.is_ok(), "{:?}", r);
        prop_assert!(g.stats().calls <= max as u64);
    }
}
