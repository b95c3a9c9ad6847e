//! Every policy under examples/policies loads without errors, and injecting a
//! bogus key into any table of it is rejected (so a typo never silently turns
//! a setting off).
// A driver (test, example, benchmark): it may read files and the clock;
// the crate's library code may not (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use voipwall_policy::{Catalog, DataFile, HostFacts, SourceMap, load, render_all};

fn examples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(v.len() >= 4);
    v
}

#[test]
fn example_policies_load() {
    let cat = Catalog::load(&DataFile::builtin(), &mut SourceMap::default()).0;
    for (name, text) in examples() {
        let l = load(
            &name,
            &mut |_| Ok(text.clone()),
            &cat,
            &HostFacts::default(),
        );
        assert!(
            !l.has_errors(),
            "{name}:\n{}",
            render_all(&l.diagnostics, &l.sources)
        );
    }
}

#[test]
fn a_bogus_key_in_any_table_is_rejected() {
    let cat = Catalog::load(&DataFile::builtin(), &mut SourceMap::default()).0;
    let mut injected = 0;
    for (name, text) in examples() {
        let lines: Vec<&str> = text.lines().collect();
        // After every table header (and at the top), insert a key nobody defines.
        let headers: Vec<(usize, bool)> = std::iter::once((0, false))
            .chain(
                lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.starts_with('['))
                    .map(|(i, l)| {
                        // In [interfaces] and [networks] every key is a name: the bogus
                        // key becomes an interface or network with an invalid zone.
                        (i + 1, *l == "[interfaces]" || *l == "[networks]")
                    }),
            )
            .collect();
        for (at, is_map) in headers {
            let mut copy = lines.clone();
            copy.insert(at, "bogus_setting = 1");
            let text = copy.join("\n");
            let l = load(
                &name,
                &mut |_| Ok(text.clone()),
                &cat,
                &HostFacts::default(),
            );
            let msgs: Vec<&str> = l.diagnostics.iter().map(|d| d.message.as_str()).collect();
            assert!(
                l.has_errors() && l.policy.is_none(),
                "{name} line {at}: accepted"
            );
            let want = if is_map {
                "the zone of `bogus_setting` must be a string"
            } else {
                "unknown key `bogus_setting`"
            };
            assert!(
                msgs.iter().any(|m| m.contains(want)),
                "{name} line {at}: {msgs:?}"
            );
            injected += 1;
        }
    }
    assert!(injected > 15, "{injected}");
}
