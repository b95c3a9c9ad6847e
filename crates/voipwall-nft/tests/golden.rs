//! Golden rulesets: every `tests/golden/<case>/policy.toml` compiles to the
//! snapshot next to it. Review diffs with `cargo insta review`.
// A test is a driver: it reads its golden files (the crate itself may not).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod common;

use voipwall_nft::{CompileInput, compile, render};

#[test]
fn golden_rulesets() {
    insta::glob!("golden/*/policy.toml", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let policy = common::policy(&text);
        let mut input = CompileInput {
            now: 1_800_000_000,
            ..Default::default()
        };
        input.resolved.insert(
            "trunk.example.net".into(),
            vec![
                "203.0.113.50".parse().unwrap(),
                "2001:db8:50::1".parse().unwrap(),
            ],
        );
        use voipwall_policy::GeoSel;
        input.geo.insert(
            GeoSel::Country("ZZ".into()),
            vec![
                "203.0.113.0/25".parse().unwrap(),
                "2001:db8:bad::/48".parse().unwrap(),
            ],
        );
        input.geo.insert(
            GeoSel::Country("XA".into()),
            vec!["198.51.100.0/23".parse().unwrap()],
        );
        input
            .geo
            .insert(GeoSel::Asn(64500), vec!["192.0.2.0/24".parse().unwrap()]);
        let rs = compile(&policy, &input);
        insta::assert_snapshot!(render(&rs));
    });
}
