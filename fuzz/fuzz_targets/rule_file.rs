//! Any bytes as a rule data file: refused with an error or loaded; a loaded
//! rule drives an engine through its own scenarios without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipwall_detect::RuleSet;
use voipwall_detect::rules::{RuleItem, parse_rule};
use voipwall_detect::scenario::check;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(RuleItem::Rule(r)) = parse_rule("fuzz.toml", text) {
        let set = RuleSet { rules: vec![r.clone()], recidive: None };
        for t in r.tests.iter().take(4) {
            // Scenario lines may ask for huge series; only short ones run.
            if t.events.iter().all(|e| e.len() < 80) && t.events.len() < 20 {
                let _ = check(&set, Some(&r.id), t);
            }
        }
    }
});
