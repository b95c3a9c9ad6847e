//! Every `[[test]]` of every built-in rule file runs here, with a scripted
//! clock: thresholds, windows, expiry and escalation as the data files state.
use voipwall_detect::RuleSet;
use voipwall_detect::scenario::check;

#[test]
fn every_rule_file_scenario_passes() {
    let set = RuleSet::builtin();
    let mut failures = Vec::new();
    let mut ran = 0;
    for rule in &set.rules {
        assert!(!rule.tests.is_empty(), "{} has no [[test]]", rule.file);
        for t in &rule.tests {
            ran += 1;
            if let Err(e) = check(&set, Some(&rule.id), t) {
                failures.push(format!("{}: {e}", rule.file));
            }
        }
    }
    let rec = set.recidive.as_ref().expect("recidive.toml is built in");
    assert!(!rec.tests.is_empty());
    for t in &rec.tests {
        ran += 1;
        if let Err(e) = check(&set, None, t) {
            failures.push(format!("rules/recidive.toml: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} scenarios failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran >= 20, "only {ran} scenarios");
}

#[test]
fn builtin_rules_cover_every_kind_with_design_defaults() {
    use voipwall_detect::RuleKind;
    let set = RuleSet::builtin();
    for kind in RuleKind::ALL {
        assert!(
            set.rules.iter().any(|r| r.kind == kind),
            "no rule of kind {kind:?}"
        );
    }
    let t = |id: &str| {
        set.get(id)
            .unwrap_or_else(|| panic!("rule {id}"))
            .thresholds
            .iter()
            .map(|t| (t.count, t.within / 1000, t.ban / 1000))
            .collect::<Vec<_>>()
    };
    // DESIGN.md section 3.
    assert_eq!(t("auth-bruteforce"), [(5, 60, 3600), (20, 86_400, 86_400)]);
    assert_eq!(t("unanswered-challenge"), [(20, 300, 3600)]);
    assert_eq!(t("scanner"), [(1, 1, 86_400)]);
    assert_eq!(t("enumeration"), [(10, 60, 86_400)]);
    assert_eq!(t("toll-fraud"), [(3, 600, 86_400)]);
    let rec = set.recidive.unwrap();
    assert_eq!(rec.within, 86_400_000);
    assert_eq!(
        rec.ladder,
        [3_600_000, 86_400_000, 7 * 86_400_000, 30 * 86_400_000]
    );
}
