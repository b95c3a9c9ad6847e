//! Never lock the operator out, against the real kernel: an "admin"
//! namespace holds a live TCP session to the firewall's port 22 (a stand-in
//! for SSH, `tests/support/session.py`). A policy that would cut it is
//! refused, naming it; forced with `--confirm 5s` and never confirmed (the
//! CLI killed with SIGKILL), the old ruleset is back within a second of the
//! deadline and the session works again; confirmed, the new ruleset stays.
//! The lock file makes `disable` refuse; without it, `disable` removes only
//! our table. A ban of the session's source is refused.

mod common;
use common::must;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FW: &str = "203.0.113.1";
const ADMIN: &str = "203.0.113.5";

struct Lab {
    fw: String,
    admin: String,
    dir: std::path::PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn new() -> Self {
        let id = common::lab_id();
        let lab = Self {
            fw: format!("vwt-s{id}-fw"),
            admin: format!("vwt-s{id}-adm"),
            dir: std::env::temp_dir().join(format!("voipwall-safety-{id}")),
            children: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir).unwrap();
        must(&["ip", "netns", "add", &lab.fw]);
        must(&["ip", "netns", "add", &lab.admin]);
        must(&[
            "ip", "link", "add", "v0", "netns", &lab.fw, "type", "veth", "peer", "name", "v0",
            "netns", &lab.admin,
        ]);
        must(&[
            "ip",
            "-n",
            &lab.fw,
            "addr",
            "add",
            &format!("{FW}/24"),
            "dev",
            "v0",
        ]);
        must(&[
            "ip",
            "-n",
            &lab.admin,
            "addr",
            "add",
            &format!("{ADMIN}/24"),
            "dev",
            "v0",
        ]);
        for n in [&lab.fw, &lab.admin] {
            must(&["ip", "-n", n, "link", "set", "v0", "up"]);
            must(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn policy(&self, name: &str, extra: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(
            &p,
            format!("[host]\nmanagement = [\"198.51.100.0/26\"]\n[interfaces]\nv0 = \"internet\"\n[zones.internet]\nservices = [\"ssh\", \"sip\"]\n{extra}"),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    }

    fn voipwall(&self, policy: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.fw,
                env!("CARGO_BIN_EXE_voipwall"),
                "--state-dir",
            ])
            .arg(self.dir.join("state"))
            .args(["-c", policy])
            .args(args)
            .env("VOIPWALL_LOCK_FILE", self.dir.join("locked"))
            .env("VOIPWALL_SOCKET", self.dir.join("no-daemon.sock"))
            .output()
            .unwrap()
    }

    fn spawn(&mut self, ns: &str, args: &[&str]) -> (ChildStdin, BufReader<ChildStdout>) {
        let mut c = Command::new("ip")
            .args(["netns", "exec", ns, "python3"])
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/session.py"
            ))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (i, o) = (
            c.stdin.take().unwrap(),
            BufReader::new(c.stdout.take().unwrap()),
        );
        self.children.push(c);
        (i, o)
    }

    /// A TCP echo server on the firewall's port 22 and one long-lived
    /// client session to it from the admin namespace: the SSH stand-in.
    /// Returns the client and its source port.
    fn session(&mut self) -> ((ChildStdin, BufReader<ChildStdout>), String) {
        let (_i, mut o) = self.spawn(&self.fw.clone(), &["server", FW, "22"]);
        let mut l = String::new();
        o.read_line(&mut l).unwrap();
        let mut s = self.spawn(&self.admin.clone(), &["client", ADMIN, FW, "22"]);
        let mut l = String::new();
        s.1.read_line(&mut l).unwrap();
        let port = l.split_whitespace().nth(1).unwrap().to_string();
        (s, port)
    }

    fn blocked(&self) -> bool {
        must(&[
            "ip", "netns", "exec", &self.fw, "nft", "list", "table", "inet", "voipwall",
        ])
        .contains(ADMIN)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.fw]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.admin])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ask(session: &mut (ChildStdin, BufReader<ChildStdout>), token: &str, secs: f64) -> bool {
    writeln!(session.0, "{token} {secs}").unwrap();
    let mut line = String::new();
    session.1.read_line(&mut line).unwrap();
    line.trim() == format!("ok {token}")
}

#[test]
fn lockout_is_refused_unconfirmed_apply_rolls_back_and_lock_keeps_the_table() {
    let mut lab = Lab::new();
    let good = lab.policy("good.toml", "");
    let cuts = lab.policy(
        "cuts.toml",
        &format!("[[block]]\naddress = \"{ADMIN}\"\ndescription = \"oops\"\n"),
    );
    let out = lab.voipwall(&good, &["apply"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut s, port) = lab.session();
    assert!(
        ask(&mut s, "t1", 2.0),
        "the admin session does not work to begin with"
    );

    // 1. Refused, naming the session and the rule.
    let out = lab.voipwall(&cuts, &["apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{ADMIN}:{port} to tcp/22")), "{err}");
    assert!(err.contains("block list"), "{err}");
    assert!(!lab.blocked());
    // `check` says the same.
    assert_eq!(lab.voipwall(&cuts, &["check"]).status.code(), Some(1));
    // A ban of the session's source is refused too, and of the host's own
    // address, a management network member, or a network containing them.
    let out = lab.voipwall(&good, &["ban", ADMIN, "--for", "1m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("live management session"));
    for (target, why) in [
        (FW, "own address"),
        ("198.51.100.7", "management network"),
        ("198.51.100.0/24", "management network"),
        ("203.0.113.0/24", "own address"),
    ] {
        let out = lab.voipwall(&good, &["ban", target, "--for", "1m"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "ban {target}: {err}");
        assert!(err.contains(why), "ban {target}: {err}");
    }

    // 2. Forced with --confirm 5s, the CLI killed: rolled back after the window.
    let mut cli = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.fw,
            env!("CARGO_BIN_EXE_voipwall"),
            "--state-dir",
        ])
        .arg(lab.dir.join("state"))
        .args(["-c", &cuts, "apply", "--force", "--confirm", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !lab.blocked() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the forced apply did not happen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = cli.kill(); // SIGKILL, as soon as the new ruleset is in
    let _ = cli.wait();
    let applied = Instant::now();
    assert!(
        !ask(&mut s, "t2", 0.5),
        "the session should be cut by the new ruleset"
    );
    let gens: serde_json::Value =
        serde_json::from_slice(&lab.voipwall(&good, &["--json", "generations"]).stdout).unwrap();
    assert_eq!(gens[0]["status"], "pending", "{gens}");
    while lab.blocked() {
        assert!(
            applied.elapsed() < Duration::from_secs(5 + 2),
            "not rolled back within a second of the window"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let back_after = applied.elapsed();
    assert!(
        back_after >= Duration::from_millis(4500) && back_after <= Duration::from_secs(6),
        "rolled back after {back_after:?}"
    );
    // The same TCP session works again (its queued data is retransmitted).
    assert!(
        ask(&mut s, "t3", 8.0),
        "the admin session did not come back"
    );
    let gens: serde_json::Value =
        serde_json::from_slice(&lab.voipwall(&good, &["--json", "generations"]).stdout).unwrap();
    assert_eq!(gens[0]["status"], "rolled-back", "{gens}");
    assert_eq!(gens[1]["status"], "applied", "{gens}");
    // What the rolled-back generation changed: the block of the admin.
    let id = gens[0]["id"].as_i64().unwrap().to_string();
    let diff =
        String::from_utf8_lossy(&lab.voipwall(&good, &["generations", "--diff", &id]).stdout)
            .into_owned();
    assert!(
        diff.lines()
            .any(|l| l.starts_with('+') && l.contains(ADMIN)),
        "{diff}"
    );

    // 3. Confirmed in time: the new ruleset stays past the window.
    let out = lab.voipwall(&cuts, &["apply", "--force", "--confirm", "3s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.voipwall(&cuts, &["confirm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(lab.blocked(), "a confirmed generation was rolled back");
    // `rollback` goes back one generation on demand.
    let out = lab.voipwall(&good, &["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lab.blocked());
    assert!(ask(&mut s, "t4", 8.0));

    // 4. The lock file: disable refuses and the table stays; without it,
    // disable removes only our table.
    must(&[
        "ip", "netns", "exec", &lab.fw, "nft", "add", "table", "inet", "other",
    ]);
    must(&[
        "ip",
        "netns",
        "exec",
        &lab.fw,
        "nft",
        "add",
        "chain",
        "inet",
        "other",
        "c",
        "{ type filter hook input priority 10 ; }",
    ]);
    let other = must(&[
        "ip", "netns", "exec", &lab.fw, "nft", "list", "table", "inet", "other",
    ]);
    std::fs::write(lab.dir.join("locked"), "PCI audit: keep it on\n").unwrap();
    let out = lab.voipwall(&good, &["disable"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PCI audit: keep it on"));
    assert!(
        must(&["ip", "netns", "exec", &lab.fw, "nft", "list", "tables"]).contains("inet voipwall")
    );
    std::fs::remove_file(lab.dir.join("locked")).unwrap();
    let out = lab.voipwall(&good, &["disable"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = must(&["ip", "netns", "exec", &lab.fw, "nft", "list", "tables"]);
    assert!(!tables.contains("inet voipwall"), "{tables}");
    assert_eq!(
        must(&[
            "ip", "netns", "exec", &lab.fw, "nft", "list", "table", "inet", "other"
        ]),
        other
    );
}

/// `voipwall init` in a namespace host with a public interface, a private
/// one and a live session to port 22: the policy it writes puts each
/// interface in the right zone, keeps the session's source reachable (and
/// never banned), passes `check`, and applies without `--force` with the
/// session still working.
#[test]
fn init_writes_a_policy_that_keeps_the_operator_in() {
    let mut lab = Lab::new();
    for args in [
        vec![
            "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p",
        ],
        vec!["addr", "add", "10.20.0.1/24", "dev", "lan0"],
        vec!["link", "set", "lan0", "up"],
    ] {
        let mut full = vec!["ip", "-n", &lab.fw];
        full.extend(args);
        must(&full);
    }
    let (mut s, _) = lab.session();
    assert!(ask(&mut s, "i1", 2.0), "the session works to begin with");

    // An admin interface on tcp/2024 that no service of the proposed
    // policy grants (issue 25, item 11): init says applying cuts it.
    let mut admin = Command::new("ip")
        .args(["netns", "exec", &lab.fw, "python3", "-c"])
        .arg("import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',2024))\ns.listen()\ntime.sleep(30)\n")
        .spawn()
        .expect("python3");
    std::thread::sleep(Duration::from_millis(300));
    let path = lab.dir.join("init.toml");
    let p = path.to_str().unwrap();
    let out = lab.voipwall(p, &["init", "--dry-run", "--preset", "asterisk"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("WARNING: listening here, and granted to no zone")
            && text.contains("tcp/2024")
            && String::from_utf8_lossy(&out.stderr).contains("tcp/2024"),
        "init does not say the policy cuts tcp/2024:\n{text}"
    );
    // `--json`: the same policy in one object, with what it cuts.
    let j = lab.voipwall(p, &["--json", "init", "--dry-run", "--preset", "asterisk"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("init --json is JSON");
    assert_eq!(v["policy"].as_str(), Some(text.as_str()));
    assert_eq!(v["written"], false);
    assert!(v["not_granted"].to_string().contains("tcp/2024"), "{v}");
    // Documentation and private ranges are called what they are.
    assert!(!text.contains("public address"), "{text}");
    assert!(text.contains("(documentation range"), "{text}");
    assert!(text.contains("10.20.0.1/24 (private)"), "{text}");
    assert!(!path.exists(), "--dry-run writes nothing");
    for want in [
        "preset = \"asterisk\"",
        "v0 = \"internet\"",
        "lan0 = \"local\"",
        &format!("management = [\"{ADMIN}/32\"]"),
        &format!("\"{ADMIN}\" = \"local\""),
        &format!("your session: {ADMIN} -> tcp/22"),
    ] {
        assert!(text.contains(want), "init output lacks `{want}`:\n{text}");
    }
    let out = lab.voipwall(p, &["init", "--preset", "asterisk"]);
    let _ = admin.kill();
    let _ = admin.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "writes what it printed"
    );
    let again = lab.voipwall(p, &["init", "--preset", "asterisk"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing policy is not overwritten"
    );

    // Issue 25, item 10: the "next:" hints keep the -c and --state-dir the
    // operator gave, so following them word for word works: init's check
    // and apply --confirm, then apply's confirm.
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let next = said
        .split("next: ")
        .nth(1)
        .expect("a next: hint")
        .trim()
        .to_string();
    assert!(
        next.contains(&format!("-c {p}")) && next.contains("--state-dir"),
        "{next}"
    );
    let follow = |cmd: &str| -> Output {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(words[0], "voipwall", "{cmd}");
        Command::new("ip")
            .args(["netns", "exec", &lab.fw, env!("CARGO_BIN_EXE_voipwall")])
            .args(&words[1..])
            .env("VOIPWALL_LOCK_FILE", lab.dir.join("locked"))
            .env("VOIPWALL_SOCKET", lab.dir.join("no-daemon.sock"))
            .output()
            .unwrap()
    };
    let mut confirm = String::new();
    for cmd in next.split(" && ") {
        let out = follow(cmd);
        assert!(
            out.status.success(),
            "`{cmd}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(c) = err.split('`').nth(1).filter(|c| c.ends_with("confirm")) {
            confirm = c.to_string();
        }
    }
    assert!(confirm.contains("--state-dir"), "apply's hint: {confirm}");
    let out = follow(&confirm);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("confirmed generation"),
        "`{confirm}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ask(&mut s, "i2", 2.0),
        "the session still works after apply"
    );
    // The internet zone does not get SSH: the same port from another
    // source is dropped (explain, offline).
    let out = lab.voipwall(
        p,
        &[
            "explain",
            "203.0.113.77",
            "tcp/22",
            "--iface",
            "v0",
            "--offline",
        ],
    );
    let ex = String::from_utf8_lossy(&out.stdout);
    assert!(ex.contains("drop"), "{ex}");
}

/// A cloud-style VM: the only NIC has a private address (10.20.0.5/24) and
/// holds the default route. `init` puts it in zone internet and says why,
/// so SSH and the admin services are not opened to the whole internet.
#[test]
fn init_puts_the_default_route_interface_in_internet_whatever_its_address() {
    let lab = Lab::new();
    for args in [
        vec![
            "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p",
        ],
        vec!["addr", "add", "10.20.0.5/24", "dev", "eth9"],
        vec!["link", "set", "eth9", "up"],
        vec!["link", "set", "eth9p", "up"],
        vec!["route", "add", "default", "via", "10.20.0.1", "dev", "eth9"],
    ] {
        let mut full = vec!["ip", "-n", &lab.fw];
        full.extend(args);
        must(&full);
    }
    let path = lab.dir.join("cloud.toml");
    let p = path.to_str().unwrap();
    let out = lab.voipwall(p, &["init", "--dry-run", "--preset", "freepbx"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("eth9 "))
        .unwrap_or_else(|| panic!("no eth9 line:\n{text}"));
    assert!(line.contains("\"internet\""), "{line}");
    assert!(line.contains("default route"), "{line}");
}
