//! voipwall's compiler: a validated [`voipwall_policy::Policy`] becomes a
//! [`Ruleset`] IR, the IR becomes one deterministic nft script ([`render`]),
//! and [`explain`] evaluates the same IR for one packet, so what `explain`
//! says and what the kernel does come from one structure.
//!
//! Pure: no I/O, no clock (expiry uses [`CompileInput::now`]), no `nft`.
#![warn(missing_docs)]

mod compile;
mod explain;
pub mod export;
pub mod flatten;
pub mod foreign;
mod ir;
pub mod kernel;
pub mod netlink;
pub mod protect;
mod render;
pub mod sets;

pub use compile::{
    BAN_SET_SIZE, CompileInput, METER_SIZE, NFLOG_SNAPLEN, compile, counters, zone_chain,
};
pub use explain::{DynamicSets, Explanation, NoDynamic, Packet, Step, Verdict, explain};
pub use ir::*;
pub use render::{render, render_changes, rule_text, set_decl};

/// The compile input the golden rulesets are pinned with (a fixed clock,
/// the names and `[geo]` selectors the golden policies use): one place for
/// the golden test and the test that loads the same rulesets into the
/// kernel as netlink batches.
#[doc(hidden)]
pub fn golden_input() -> CompileInput {
    use voipwall_policy::GeoSel;
    let mut input = CompileInput {
        now: 1_800_000_000,
        ..Default::default()
    };
    let addr = |s: &str| s.parse().expect("literal address");
    let net = |s: &str| s.parse().expect("literal network");
    input.resolved.insert(
        "trunk.example.net".into(),
        vec![addr("203.0.113.50"), addr("2001:db8:50::1")],
    );
    input.geo.insert(
        GeoSel::Country("ZZ".into()),
        vec![net("203.0.113.0/25"), net("2001:db8:bad::/48")],
    );
    input
        .geo
        .insert(GeoSel::Country("XA".into()), vec![net("198.51.100.0/23")]);
    input
        .geo
        .insert(GeoSel::Asn(64500), vec![net("192.0.2.0/24")]);
    input
}

/// Unit tests' one way to load a policy text against the built-in catalog.
#[cfg(test)]
pub(crate) fn test_policy(text: &str) -> voipwall_policy::Policy {
    use voipwall_policy::{Catalog, DataFile, HostFacts, SourceMap, load};
    let mut sm = SourceMap::default();
    let (cat, _) = Catalog::load(&DataFile::builtin(), &mut sm);
    load(
        "p.toml",
        &mut |_| Ok(text.to_string()),
        &cat,
        &HostFacts::default(),
    )
    .policy
    .expect("valid policy")
}
