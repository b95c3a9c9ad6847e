//! Every broken policy under tests/errors/ is refused with all of its
//! problems at once; the rendered diagnostics are snapshot-tested, so the
//! messages themselves are reviewed like code.
// A driver (test, example, benchmark): it may read files and the clock;
// the crate's library code may not (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use voipwall_policy::{Catalog, DataFile, HostFacts, SourceMap, load, render_all};

#[test]
fn broken_policies_render_every_error() {
    let mut sm = SourceMap::default();
    let (mut catalog, diags) = Catalog::load(&DataFile::builtin(), &mut sm);
    assert!(diags.is_empty());
    // The driver fills these from data/rules; the policy crate checks
    // `[detect.rules.<id>]` against them.
    catalog.rule_ids = [
        "auth-bruteforce",
        "scanner",
        "enumeration",
        "account-guessing",
    ]
    .map(String::from)
    .to_vec();
    let facts = HostFacts {
        addresses: vec!["203.0.113.1".parse().unwrap()],
        sshd_ports: None,
        // The driver fills these from the built-in log formats.
        log_formats: ["asterisk", "asterisk-security", "kamailio", "sshd"]
            .map(String::from)
            .to_vec(),
    };
    insta::glob!("errors/*.toml", |path| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "include-part.toml" {
            return; // only ever read through include-main.toml
        }
        let dir = path.parent().unwrap().to_path_buf();
        let mut read = |p: &str| {
            std::fs::read_to_string(dir.join(p.rsplit('/').next().unwrap_or(p)))
                .map_err(|e| e.to_string())
        };
        let loaded = load(&name, &mut read, &catalog, &facts);
        assert!(loaded.has_errors(), "{name} should be refused");
        assert!(loaded.policy.is_none());
        insta::assert_snapshot!(render_all(&loaded.diagnostics, &loaded.sources));
    });
}
