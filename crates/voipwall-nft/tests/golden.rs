//! Golden rulesets: every `tests/golden/<case>/policy.toml` compiles to the
//! snapshot next to it. Review diffs with `cargo insta review`.
// A test is a driver: it reads its golden files (the crate itself may not).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod common;

use voipwall_nft::{compile, render};

#[test]
fn golden_rulesets() {
    insta::glob!("golden/*/policy.toml", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let policy = common::policy(&text);
        let input = voipwall_nft::golden_input();
        let rs = compile(&policy, &input);
        insta::assert_snapshot!(render(&rs));
    });
}
