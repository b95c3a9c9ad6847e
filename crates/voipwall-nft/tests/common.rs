//! Shared test helpers: load a policy text against the built-in catalog.
#![allow(dead_code, unreachable_pub)]

use voipwall_policy::{Catalog, DataFile, HostFacts, Policy, SourceMap, load, render_all};

pub fn catalog() -> Catalog {
    let mut sm = SourceMap::default();
    let (cat, diags) = Catalog::load(&DataFile::builtin(), &mut sm);
    assert!(
        diags.is_empty(),
        "catalog diagnostics:\n{}",
        render_all(&diags, &sm)
    );
    cat
}

pub fn policy(text: &str) -> Policy {
    let cat = catalog();
    let loaded = load(
        "policy.toml",
        &mut |_| Ok(text.to_string()),
        &cat,
        &HostFacts::default(),
    );
    assert!(
        !loaded.has_errors(),
        "{}",
        render_all(&loaded.diagnostics, &loaded.sources)
    );
    loaded.policy.expect("no errors")
}
