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
