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
        let rs = compile(&policy, &input);
        insta::assert_snapshot!(render(&rs));
    });
}
