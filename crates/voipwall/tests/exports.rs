//! Every export is what its target takes, checked offline against the
//! target's own client model (crates/voipwall/tests/support/validate_export.py):
//! botocore's EC2 model, the compute v1 discovery document, the
//! azure-mgmt-network models and firewalld's zone reader. Each check is
//! also shown to fail on a broken body, so a pass means something.
use std::path::PathBuf;
use std::process::Command;

const POLICY: &str = r#"
[interfaces]
eth0 = "internet"
eth1 = "local"

[networks]
"198.51.100.0/24" = "local"
"198.51.100.7" = "trusted"
"2001:db8:5::/48" = "other"

[zones.internet]
services = ["sip", "sip-tls"]

[zones.local]
services = ["sip", "ssh", "https-admin"]

[zones.other]
services = ["sip"]

[[allow]]
address = "192.0.2.10"
description = "carrier \"A\" -- signalling"

[[block]]
address = "203.0.113.0/26"
"#;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("voipwall-exports-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn export(target: &str) -> String {
    let path = dir().join("policy.toml");
    std::fs::write(&path, POLICY).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .arg("-c")
        .arg(&path)
        .args(["export", target])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the validator on `body`; (passed, what it printed).
fn validate(target: &str, body: &str) -> (bool, String) {
    let file = dir().join(format!("{target}.export"));
    std::fs::write(&file, body).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/validate_export.py"
    );
    let wheels = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pydeps");
    // Debian's Python: it sees python3-botocore and python3-firewall.
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(target)
        .arg(&file)
        .env("VOIPWALL_WHEELS", wheels)
        .output()
        .expect("run /usr/bin/python3 (scripts/deps installs the models)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn accepted_and_a_broken_one_refused(target: &str, break_it: impl Fn(&str) -> String) {
    let body = export(target);
    let (ok, said) = validate(target, &body);
    assert!(
        ok,
        "{target} export refused by its client model:\n{said}\n{body}"
    );
    let broken = break_it(&body);
    assert_ne!(broken, body, "the breaking edit changed nothing");
    let (ok, said) = validate(target, &broken);
    assert!(!ok, "a broken {target} body passed the check:\n{said}");
}

fn json_edit(body: &str, f: impl Fn(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
    f(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn aws_takes_the_body_botocore_validates() {
    accepted_and_a_broken_one_refused("aws", |b| {
        json_edit(b, |v| v["voipwall_notes"] = "what round 1 sent".into())
    });
}

#[test]
fn gcp_rules_are_firewall_resources() {
    accepted_and_a_broken_one_refused("gcp", |b| {
        json_edit(b, |v| v["rules"][0]["direction"] = "INBOUND".into())
    });
}

#[test]
fn azure_rules_are_security_rules() {
    accepted_and_a_broken_one_refused("azure", |b| {
        json_edit(b, |v| {
            v["securityRules"][0]["properties"]["protocol"] = "Sctp".into()
        })
    });
}

#[test]
fn firewalld_zones_load_in_firewalld() {
    accepted_and_a_broken_one_refused("firewalld", |b| {
        b.replacen("<zone target=\"", "<zone target=\"EXPLODE", 1)
    });
}

/// Issue 25, item 15: `--json` on a text target gives the text and the
/// notes in one JSON object (the text is the same as without `--json`).
#[test]
fn json_export_of_a_text_target_is_one_object() {
    let path = dir().join("policy-json.toml");
    std::fs::write(&path, POLICY).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .arg("-c")
        .arg(&path)
        .args(["--json", "export", "iptables"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["target"], "iptables");
    assert_eq!(
        v["text"].as_str().unwrap_or("").trim_end(),
        export("iptables").trim_end()
    );
    assert!(v["notes"].is_array(), "{v}");
}
