//! Inputs the fuzzer found (fuzz/README.md): each must load quickly, with
//! bounded work, and be refused or accepted without panicking.
// A driver (test, example, benchmark): it may read files and the clock;
// the crate's library code may not (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use voipwall_policy::{Catalog, DataFile, HostFacts, SourceMap, load};

#[test]
fn fuzz_regressions_stay_bounded() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");
    let cat = Catalog::load(&DataFile::builtin(), &mut SourceMap::default()).0;
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let mut reads = 0;
        // Like the fuzz target, every path "exists" and has the same text.
        let loaded = load(
            "fuzz.toml",
            &mut |_| {
                reads += 1;
                Ok(text.clone())
            },
            &cat,
            &HostFacts::default(),
        );
        assert!(reads <= 64, "{}: {reads} files read", path.display());
        assert!(
            loaded.diagnostics.len() < 5_000,
            "{}: {} diagnostics",
            path.display(),
            loaded.diagnostics.len()
        );
        seen += 1;
    }
    assert!(seen >= 1);
}

#[test]
fn self_including_relative_directory_is_refused() {
    let text = "include = [\"conf.d/p.toml\"]\n";
    let cat = Catalog::load(&DataFile::builtin(), &mut SourceMap::default()).0;
    let mut reads = 0;
    let loaded = load(
        "p.toml",
        &mut |_| {
            reads += 1;
            Ok(text.to_string())
        },
        &cat,
        &HostFacts::default(),
    );
    assert!(reads <= 10, "{reads}");
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.message.contains("too many nested includes"))
    );
}
