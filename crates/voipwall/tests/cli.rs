//! The CLI's contract without the kernel: exit codes, located errors,
//! `--json`, deterministic `compile`.
use std::process::{Command, Output};

fn run(policy: &str, args: &[&str]) -> Output {
    // One directory per call: tests run in parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("voipwall-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .arg("-c")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    out
}

const GOOD: &str = "preset = \"kamailio\"\n[interfaces]\neth0 = \"internet\"\n";
const BAD: &str = "preset = \"kamailo\"\n[interfaces]\neth0 = \"trusted\"\n";

#[test]
fn check_exit_codes_and_locations() {
    let ok = run(GOOD, &["check"]);
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok"));
    let bad = run(BAD, &["check"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("policy.toml:1:10"), "{err}");
    assert!(err.contains("policy.toml:3:8"), "{err}");
    assert!(err.contains("did you mean `kamailio`?"), "{err}");
    assert!(err.contains("2 errors; nothing was applied"), "{err}");
}

/// Issue 13: SIP open on a transport that packet copies cannot read (TLS
/// here) is pointed out by `check`, until HEP brings it.
#[test]
fn check_says_when_sip_is_open_where_no_copy_reads_it() {
    let tls =
        "[interfaces]\neth0 = \"internet\"\n[zones.internet]\nservices = [\"sip\", \"sip-tls\"]\n";
    let out = run(tls, &["check"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SIP on tcp/5061 (sip-tls) is TLS") && text.contains("needs HEP"),
        "{text}"
    );
    let json = run(tls, &["--json", "check"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v["notes"].to_string().contains("tcp/5061"), "{v}");
    let with_hep =
        format!("{tls}[hep]\nlisten = [\"127.0.0.1:9060\"]\nsenders = [\"127.0.0.1\"]\n");
    let out = run(&with_hep, &["check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("is TLS"));
}

/// Issue 14: a preset names its usual log sources; `check` lists them and
/// warns about a file that is not there yet (followed once it appears).
#[test]
fn check_lists_the_presets_sources_and_warns_about_missing_files() {
    let p = "preset = \"freepbx\"\n[interfaces]\neth0 = \"internet\"\n[[source]]\nformat = \"asterisk\"\npath = \"/var/log/asterisk/full\"\nenabled = false\n[[source]]\nformat = \"sshd\"\npath = \"/nonexistent/voipwall-test/auth.log\"\n";
    let out = run(p, &["--json", "check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["path"].as_str())
        .collect();
    assert!(paths.contains(&"/var/log/asterisk/security"), "{paths:?}");
    assert!(
        !paths.contains(&"/var/log/asterisk/full"),
        "enabled = false kept it: {paths:?}"
    );
    assert!(
        paths.contains(&"/nonexistent/voipwall-test/auth.log"),
        "{paths:?}"
    );
    assert!(
        v["missing_sources"]
            .to_string()
            .contains("/nonexistent/voipwall-test/auth.log"),
        "{v}"
    );
    let human = run(p, &["check"]);
    assert!(
        String::from_utf8_lossy(&human.stderr)
            .contains("warning: source sshd /nonexistent/voipwall-test/auth.log"),
        "{}",
        String::from_utf8_lossy(&human.stderr)
    );
}

#[test]
fn check_json_lists_every_diagnostic() {
    let bad = run(BAD, &["--json", "check"]);
    assert_eq!(bad.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let locs: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["location"].as_str().unwrap())
        .collect();
    assert_eq!(locs.len(), 2);
    assert!(
        locs[0].ends_with("policy.toml:1:10") && locs[1].ends_with("policy.toml:3:8"),
        "{locs:?}"
    );
}

#[test]
fn compile_is_deterministic_and_json_is_the_ir() {
    let a = run(GOOD, &["compile"]);
    let b = run(GOOD, &["compile"]);
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(text.contains("add table inet voipwall"));
    assert!(
        !text.contains("delete table"),
        "apply must never delete the table"
    );
    let j = run(GOOD, &["--json", "compile"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert!(
        v["chains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "vw_zone_internet")
    );
}

#[test]
fn bad_arguments_exit_1() {
    let out = run(GOOD, &["explain", "203.0.113.9", "udp/99999", "--offline"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(GOOD, &["catalog", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["services"].as_object().unwrap().len() >= 30);
    assert!(v["presets"].as_object().unwrap().contains_key("portsip"));
}

#[test]
fn explain_offline_names_the_policy_line() {
    let out = run(
        GOOD,
        &[
            "explain",
            "203.0.113.9",
            "udp/5060",
            "--iface",
            "eth0",
            "--offline",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ACCEPT"), "{text}");
    assert!(
        text.contains("zone internet / service sip / builtin:presets/kamailio.toml:"),
        "{text}"
    );
}

/// The systemd unit keeps CAP_NET_ADMIN through its hardening, orders the
/// firewall before the network, reloads with SIGHUP, and passes
/// `systemd-analyze verify` where systemd is installed.
#[test]
fn systemd_unit_is_valid_and_keeps_net_admin() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/voipwall.service"
    ))
    .unwrap();
    for line in [
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "Before=network-pre.target shutdown.target",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
        "Type=notify",
        "WatchdogSec=30s",
        "LimitNOFILE=4096",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing `{line}`");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let dir = std::env::temp_dir().join(format!("voipwall-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("voipwall.service");
        std::fs::write(
            &path,
            unit.replace("/usr/sbin/voipwall", env!("CARGO_BIN_EXE_voipwall")),
        )
        .unwrap();
        // --man=no: the page is checked by the package test, installed.
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let err = String::from_utf8_lossy(&out.stderr);
        // Only complaints about this unit count (the host's own units may be odd).
        let ours: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("voipwall.service"))
            .collect();
        assert!(ours.is_empty(), "systemd-analyze verify: {ours:?}");
    }
}

/// Issue 12: an `include` naming a FIFO or /dev/zero is refused at once
/// with its location, not a hang or a 2 GB read.
#[test]
fn an_include_of_a_fifo_or_a_device_is_refused_at_once() {
    let dir = std::env::temp_dir().join(format!("voipwall-cli-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.toml");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success(),
        "mkfifo"
    );
    for target in [fifo.to_str().unwrap(), "/dev/zero"] {
        let policy = format!("include = [\"{target}\"]\n{GOOD}");
        let started = std::time::Instant::now();
        let out = run(&policy, &["check"]);
        assert_eq!(out.status.code(), Some(1), "{target}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a regular file"),
            "{target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{target}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 25, item 10: a verb that only reads (or finds nothing to do) never
/// creates the store: `confirm`, `rollback`, `generations` and `token list`
/// against a state directory nothing was applied with say so and leave no
/// file behind.
#[test]
fn verbs_that_read_never_create_the_store() {
    let dir = std::env::temp_dir().join(format!("voipwall-cli-nostore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for args in [
        &["confirm"][..],
        &["rollback"],
        &["generations"],
        &["token", "list"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_voipwall"))
            .arg("--state-dir")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("there is no store"), "{args:?}: {err}");
        assert!(!dir.exists(), "{args:?} created {}", dir.display());
    }
}

/// Issue 25, item 15: the documents name only files the repository has
/// (the README once sent readers to a DESIGN.md that is not in it).
#[test]
fn the_documents_name_only_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut missing = Vec::new();
    for doc in [
        "README.md",
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
        "fuzz/README.md",
    ] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let base = root.join(doc).parent().unwrap().to_path_buf();
        // Markdown links to relative paths, and any `NAME.md` mentioned.
        let mut names: Vec<String> = text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
            .filter(|l| !l.contains("://") && !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split('#').next().unwrap_or(l).to_string())
            .collect();
        for word in text.split(|c: char| c.is_whitespace() || "`()[],;:'\"".contains(c)) {
            if word.len() > 3
                && word.ends_with(".md")
                && word[..word.len() - 3]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-/.".contains(c))
            {
                names.push(word.to_string());
            }
        }
        for n in names {
            let n = n.trim_start_matches("./");
            if !base.join(n).exists() && !root.join(n).exists() {
                missing.push(format!("{doc}: {n}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documents name missing files: {missing:?}"
    );
}

/// Issue 25, item 14: the man pages name no page that does not exist (no
/// voipwall-help(8)), a verb's synopsis is what one types (`voipwall ban`,
/// not `voipwall-ban`), the main verbs have EXAMPLES, and the completions
/// offer `export`'s targets.
#[test]
fn man_pages_and_completions_say_what_one_types() {
    let dir = std::env::temp_dir().join(format!("voipwall-assets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .args(["assets", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let man = dir.join("man8");
    let pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for p in &pages {
        let text = std::fs::read_to_string(man.join(p)).unwrap();
        // Every page a page refers to exists.
        for r in text.split("voipwall\\-").skip(1) {
            let name: String = r
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if text.contains(&format!("voipwall\\-{name}(8)")) {
                assert!(
                    pages.contains(&format!("voipwall-{name}.8")),
                    "{p} names voipwall-{name}(8)"
                );
            }
        }
    }
    let ban = std::fs::read_to_string(man.join("voipwall-ban.8")).unwrap();
    assert!(ban.contains(".SH SYNOPSIS\n\\fBvoipwall ban\\fR"), "{ban}");
    for p in [
        "voipwall.8",
        "voipwall-ban.8",
        "voipwall-replay.8",
        "voipwall-explain.8",
    ] {
        let text = std::fs::read_to_string(man.join(p)).unwrap();
        assert!(text.contains(".SH EXAMPLES"), "{p} has no EXAMPLES");
    }
    let bash = std::fs::read_to_string(dir.join("completions/voipwall.bash")).unwrap();
    assert!(
        bash.contains("aws gcp azure firewalld iptables"),
        "export's targets are not completed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 25, item 15: every verb that prints without a daemon or a store
/// prints one JSON document with `--json` (text targets and TOML included),
/// and the package's synopsis is what Debian asks of one (a short line, no
/// full stop).
#[test]
fn every_verb_that_prints_offline_prints_json() {
    let verbs: &[&[&str]] = &[
        &["check"],
        &["compile"],
        &["catalog"],
        &["audit"],
        &["discover"],
        &["init", "--dry-run"],
        &["export", "aws"],
        &["export", "gcp"],
        &["export", "azure"],
        &["export", "firewalld"],
        &["export", "iptables"],
    ];
    for args in verbs {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = run(GOOD, &full);
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&out.stdout);
        assert!(
            parsed.is_ok(),
            "voipwall {full:?} (exit {:?}) printed no JSON: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let manifest = include_str!("../Cargo.toml");
    let synopsis = manifest
        .lines()
        .find_map(|l| l.strip_prefix("description = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a description");
    assert!(
        synopsis.len() <= 80 && !synopsis.ends_with('.') && !synopsis.contains(". "),
        "package synopsis: {synopsis:?}"
    );
}
