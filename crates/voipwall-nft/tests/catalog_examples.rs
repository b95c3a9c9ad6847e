//! Every example in data/services and data/presets compiles, and `explain`
//! gives the verdict the example states.
mod common;

use voipwall_nft::{CompileInput, NoDynamic, Packet, compile, explain};

#[test]
fn every_data_file_example_holds() {
    let cat = common::catalog();
    assert!(cat.services.len() >= 30, "services: {}", cat.services.len());
    assert!(cat.presets.len() >= 15, "presets: {}", cat.presets.len());
    let mut checked = 0;
    let mut files_with_examples = std::collections::BTreeSet::new();
    for ex in &cat.examples {
        let policy = common::policy(&ex.policy);
        let rs = compile(&policy, &CompileInput::default());
        assert!(
            !ex.expect.is_empty(),
            "{}: example without expectations",
            ex.origin
        );
        for e in &ex.expect {
            let p = Packet {
                src: e.from,
                iif: e.iface.clone(),
                proto: e.proto,
                dport: e.port,
                established: false,
            };
            let got = explain(&rs, &p, &NoDynamic);
            assert_eq!(
                got.verdict.name(),
                e.verdict,
                "{}: {} from {} on {} — decided by {:?}",
                ex.origin,
                e.port,
                e.from,
                e.iface,
                got.decided_by
            );
            checked += 1;
        }
        files_with_examples.insert(ex.origin.file.clone());
    }
    // Every data file carries at least one example.
    let total = cat.services.len() + cat.presets.len();
    assert_eq!(files_with_examples.len(), total, "files without examples");
    assert!(checked > 60, "checked {checked}");
}
