//! Every example line of every built-in format matches as its file says.
use voipwall_logfmt::Format;
use voipwall_logfmt::prefix::Context;

#[test]
fn every_format_example_matches_as_stated() {
    let formats = Format::all_builtin();
    assert!(formats.len() >= 7, "{} formats", formats.len());
    let mut failures = Vec::new();
    let mut n = 0;
    for f in &formats {
        assert!(!f.examples.is_empty(), "{} has no examples", f.id);
        n += f.examples.len();
        failures.extend(f.check_examples(&Context::default()));
    }
    assert!(
        failures.is_empty(),
        "{} of {n} examples failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
