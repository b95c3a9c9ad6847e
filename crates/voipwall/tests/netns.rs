//! Real-kernel tests: two network namespaces joined by a veth pair, real nft,
//! real TCP and UDP traffic between them (documentation and benchmarking
//! addresses only, never leaving the namespaces). Needs root, `ip`, `nft` and
//! python3 (the traffic helper). `scripts/test` installs them.
//!
//! The firewall namespace `fw` listens on several ports; the `peer` namespace
//! probes them from several source addresses; every observed outcome is
//! compared with the verdict `voipwall explain` gives for the same packet.

mod common;
use common::{must, run};

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FW_V4: &str = "203.0.113.1";
const FW_V6: &str = "2001:db8:1::1";
const LISTEN: &[&str] = &[
    "tcp/22",
    "tcp/443",
    "tcp/5060",
    "udp/5060",
    "udp/4569",
    "udp/10005",
];

/// Two namespaces and a listener; removed on drop, whatever happened.
struct Lab {
    fw: String,
    peer: String,
    dir: PathBuf,
    listener: Option<Child>,
    daemon: Option<Child>,
}

impl Lab {
    fn new() -> Self {
        let id = common::lab_id();
        let dir = std::env::temp_dir().join(format!("voipwall-test-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let lab = Self {
            fw: format!("vwt-fw-{id}"),
            peer: format!("vwt-peer-{id}"),
            dir,
            listener: None,
            daemon: None,
        };
        must(&["ip", "netns", "add", &lab.fw]);
        must(&["ip", "netns", "add", &lab.peer]);
        // No duplicate address detection in the lab: otherwise link-local
        // addresses stay tentative for a second after link-up and the first
        // neighbour solicitations go unanswered. ND itself still runs.
        for ns in [&lab.fw, &lab.peer] {
            for key in [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ] {
                must(&["ip", "netns", "exec", ns, "sysctl", "-qw", key]);
            }
        }
        must(&[
            "ip", "link", "add", "vw0", "netns", &lab.fw, "type", "veth", "peer", "name", "vp0",
            "netns", &lab.peer,
        ]);
        for (ns, dev, addrs) in [
            (
                &lab.fw,
                "vw0",
                vec!["203.0.113.1/24", "198.51.100.1/24", "2001:db8:1::1/64"],
            ),
            (
                &lab.peer,
                "vp0",
                vec![
                    "203.0.113.2/24",
                    "203.0.113.7/24",
                    "203.0.113.100/24",
                    "198.51.100.2/24",
                    "198.51.100.7/24",
                    "198.18.5.5/16",
                    "2001:db8:1::2/64",
                    "2001:db8:1::7/64",
                    "2001:db8:5::2/64",
                    "2001:db8:5::7/64",
                ],
            ),
        ] {
            for a in addrs {
                let mut args = vec![
                    "ip", "netns", "exec", ns, "ip", "addr", "add", a, "dev", dev,
                ];
                if a.contains(':') {
                    args.push("nodad");
                }
                must(&args);
            }
            must(&["ip", "netns", "exec", ns, "ip", "link", "set", dev, "up"]);
            must(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
        }
        must(&[
            "ip",
            "netns",
            "exec",
            &lab.fw,
            "ip",
            "route",
            "add",
            "198.18.0.0/16",
            "dev",
            "vw0",
        ]);
        // A second IPv6 /64 behind the link, so that prefix bans of the
        // attackers' /64 do not cover the firewall's own.
        must(&[
            "ip",
            "netns",
            "exec",
            &lab.fw,
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:5::/64",
            "dev",
            "vw0",
        ]);
        // Warm the neighbour caches from every source address before any
        // policy: the kernel sometimes leaves the first solicitation for a
        // freshly added address unanswered (seen with and without voipwall),
        // which would cost a probe its timeout. Two rounds, results unused.
        for _ in 0..2 {
            let mut args = vec!["python3".to_string(), helper(), "probe".to_string()];
            for (src, dst) in [
                ("203.0.113.2", FW_V4),
                ("203.0.113.7", FW_V4),
                ("203.0.113.100", FW_V4),
                ("198.51.100.2", "198.51.100.1"),
                ("198.51.100.7", "198.51.100.1"),
                ("2001:db8:1::2", FW_V6),
                ("2001:db8:1::7", FW_V6),
                ("2001:db8:5::2", FW_V6),
                ("2001:db8:5::7", FW_V6),
            ] {
                args.extend([src.to_string(), "udp/9".to_string(), dst.to_string()]);
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.exec(&lab.peer, &refs);
        }
        lab
    }

    /// A lab with the listener up and `policy` applied on the firewall.
    fn running(policy: &str) -> Self {
        let mut lab = Self::new();
        lab.listen();
        lab.apply(policy);
        lab
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs voipwall on the firewall with `policy` as its file. The CLI
    /// finds the lab's daemon (when one runs) on the lab's socket.
    fn voipwall(&self, policy: &str, args: &[&str]) -> Output {
        let path = self.dir.join("policy.toml");
        std::fs::write(&path, policy).expect("write policy");
        Command::new("ip")
            .args(["netns", "exec", &self.fw, env!("CARGO_BIN_EXE_voipwall")])
            .env("VOIPWALL_SOCKET", self.dir.join("sock"))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("-c")
            .arg(&path)
            .args(args)
            .output()
            .expect("run voipwall")
    }

    /// One HTTP request with curl in namespace `ns`: `(status, body)`
    /// (status `000` when nothing answered). `opts` are more curl
    /// arguments (headers, `--cacert`; a later `-m` overrides the 10 s).
    fn curl(
        &self,
        ns: &str,
        method: &str,
        url: &str,
        opts: &[&str],
        body: Option<&str>,
    ) -> (String, String) {
        let mut args = vec![
            "curl",
            "-s",
            "-m",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(opts);
        if let Some(b) = body {
            args.extend(["--data-binary", b]);
        }
        args.push(url);
        let out = self.exec(ns, &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), body.to_string())
    }

    /// A new API token of `role` named `name` (`voipwall token create`).
    fn api_token(&self, policy: &str, role: &str, name: &str) -> String {
        let out = self.voipwall(
            policy,
            &["--json", "token", "create", "--role", role, "--name", name],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token json");
        v["token"].as_str().expect("token").to_string()
    }

    /// Starts the daemon on the firewall with `policy` (the lab's state
    /// directory and socket) and waits until it answers.
    fn start_daemon(&mut self, policy: &str) {
        let path = self.dir.join("policy.toml");
        std::fs::write(&path, policy).expect("write policy");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("daemon log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.fw, env!("CARGO_BIN_EXE_voipwall")])
            .env("VOIPWALL_BOOT_ID_FILE", self.dir.join("boot_id"))
            .env("VOIPWALL_UPTIME_FILE", self.dir.join("uptime"))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("-c")
            .arg(&path)
            .args(["daemon", "--socket"])
            .arg(self.dir.join("sock"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        std::fs::write(self.dir.join("boot_id"), "test-boot\n").expect("boot id");
        std::fs::write(self.dir.join("uptime"), "86400.00 1.00\n").expect("uptime");
        self.daemon = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while self.voipwall(policy, &["status"]).status.code() != Some(0) {
            assert!(
                Instant::now() < until,
                "daemon did not start: {}",
                std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon (SIGTERM) and waits for it.
    fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = run(&["kill", "-TERM", &c.id().to_string()]);
            let until = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `count` UDP SIP datagrams to udp/5060 from `src`, as fast as the
    /// helper can send (bounded in count and time).
    fn flood(&self, src: &str, count: u32) {
        let dst = fw_for(src);
        let n = count.to_string();
        let out = self.exec(
            &self.peer,
            &["python3", &helper(), "flood", src, dst, "5060", &n],
        );
        assert!(
            out.status.success(),
            "flood: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs voipwall on the firewall, fails the test with its stderr unless
    /// it succeeds, and returns its stdout.
    fn voipwall_ok(&self, policy: &str, args: &[&str]) -> String {
        let out = self.voipwall(policy, args);
        assert!(
            out.status.success(),
            "voipwall {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, policy: &str) {
        self.voipwall_ok(policy, &["apply"]);
    }

    fn nft(&self, args: &[&str]) -> String {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        let out = self.exec(&self.fw, &full);
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn listen(&mut self) {
        self.listen_on(LISTEN);
    }

    fn listen_on(&mut self, specs: &[&str]) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.fw, "python3", &helper(), "listen"])
            .args(specs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn listener");
        await_line(&mut child, "ready", "listener output");
        self.listener = Some(child);
    }

    /// Probes (source, "proto/port") towards the firewall; returns outcomes in order.
    fn probe(&self, cases: &[(&str, &str)]) -> Vec<String> {
        let mut args = vec!["python3".to_string(), helper(), "probe".to_string()];
        for (src, to) in cases {
            let dst = fw_for(src);
            args.extend([src.to_string(), to.to_string(), dst.to_string()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.exec(&self.peer, &refs);
        assert!(
            out.status.success(),
            "probe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let res: Vec<String> = text
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(res.len(), cases.len(), "probe output: {text}");
        res
    }

    /// `voipwall explain` for the same packet (kernel sets consulted).
    fn explain(&self, policy: &str, src: &str, to: &str) -> String {
        let out = self.voipwall(policy, &["--json", "explain", src, to, "--iface", "vw0"]);
        assert!(
            out.status.success(),
            "explain: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("explain json");
        v["explanation"]["verdict"]
            .as_str()
            .expect("verdict")
            .to_string()
    }

    /// Probes, checks every outcome against `expected` and against `explain`.
    fn assert_traffic(&self, policy: &str, cases: &[(&str, &str, &str)]) {
        let probes: Vec<(&str, &str)> = cases.iter().map(|(s, t, _)| (*s, *t)).collect();
        let got = self.probe(&probes);
        let mut failures = Vec::new();
        for ((src, to, want), got) in cases.iter().zip(&got) {
            let explained = self.explain(policy, src, to);
            let kernel = if got == "pass" { "accept" } else { "drop" };
            let explained_class = if explained == "accept" {
                "accept"
            } else {
                "drop"
            };
            if got != want {
                failures.push(format!("{src} -> {to}: kernel {got}, expected {want}"));
            }
            if kernel != explained_class {
                failures.push(format!(
                    "{src} -> {to}: kernel {got} but explain says {explained}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "traffic mismatches:\n{}",
            failures.join("\n")
        );
    }

    fn count_set(&self, set: &str) -> usize {
        let out = self.nft(&["-j", "list", "set", "inet", "voipwall", set]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|x| x["set"]["elem"].as_array())
            .map(Vec::len)
            .sum()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_daemon();
        if let Some(mut c) = self.listener.take() {
            drop(c.stdin.take());
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run(&["ip", "netns", "del", &self.fw]);
        let _ = run(&["ip", "netns", "del", &self.peer]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The firewall's address in the source's own subnet: the UDP listener
/// answers from the address routing picks for the source.
fn fw_for(src: &str) -> &'static str {
    if src.contains(':') {
        FW_V6
    } else if src.starts_with("198.51.100.") {
        "198.51.100.1"
    } else {
        FW_V4
    }
}

/// A child process (a peer service of a test) killed and reaped when the
/// test ends, however it ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn helper() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/probe.py")
        .display()
        .to_string()
}

const POLICY: &str = r#"
[interfaces]
vw0 = "internet"

[networks]
"198.51.100.0/24" = "trusted"
"198.51.100.7" = "internet"
"2001:db8:1::7" = "local"

[zones.internet]
services = ["sip"]

[zones.local]
services = ["sip", "ssh"]

[rtp]
ranges = ["10000-10010"]

[[block]]
address = "198.18.0.0/255.255.0.0"
description = "a /16 written with a dotted mask"
"#;

#[test]
fn zones_overrides_blocks_and_explain_agree_with_the_kernel() {
    let mut lab = Lab::new();
    lab.listen();
    // Before voipwall: everything reaches the listener.
    assert_eq!(
        lab.probe(&[("203.0.113.2", "tcp/22"), ("2001:db8:1::2", "udp/4569")]),
        vec!["pass", "pass"]
    );
    lab.apply(POLICY);
    lab.assert_traffic(
        POLICY,
        &[
            // Interface zone internet: SIP and RTP only.
            ("203.0.113.2", "udp/5060", "pass"),
            ("203.0.113.2", "tcp/5060", "pass"),
            ("203.0.113.2", "udp/10005", "pass"),
            ("203.0.113.2", "tcp/22", "drop"),
            ("203.0.113.2", "tcp/443", "drop"),
            ("203.0.113.2", "udp/4569", "drop"),
            ("2001:db8:1::2", "udp/5060", "pass"),
            ("2001:db8:1::2", "tcp/22", "drop"),
            // A /128 in local overrides the interface.
            ("2001:db8:1::7", "tcp/22", "pass"),
            ("2001:db8:1::7", "tcp/443", "drop"),
            // A trusted /24 ...
            ("198.51.100.2", "tcp/22", "pass"),
            ("198.51.100.2", "tcp/443", "pass"),
            ("198.51.100.2", "udp/4569", "pass"),
            // ... with a more specific /32 back in internet.
            ("198.51.100.7", "tcp/22", "drop"),
            ("198.51.100.7", "udp/5060", "pass"),
            // A /16 blocked with a dotted mask.
            ("198.18.5.5", "udp/5060", "drop"),
            ("198.18.5.5", "tcp/22", "drop"),
        ],
    );
    let blocked = lab.nft(&["list", "counter", "inet", "voipwall", "vw_blocked"]);
    assert!(
        !blocked.contains("packets 0 "),
        "block counter did not move: {blocked}"
    );

    // Neighbour discovery keeps working under the policy: forget the
    // neighbours on both sides, then IPv6 must still get through.
    lab.exec(&lab.peer, &["ip", "-6", "neigh", "flush", "dev", "vp0"]);
    lab.exec(&lab.fw, &["ip", "-6", "neigh", "flush", "dev", "vw0"]);
    assert_eq!(lab.probe(&[("2001:db8:1::2", "udp/5060")]), vec!["pass"]);
    let ping = lab.exec(&lab.peer, &["ping", "-6", "-c", "1", "-W", "2", FW_V6]);
    assert!(ping.status.success(), "ping6 after neighbour flush failed");
    let neigh = String::from_utf8_lossy(
        &lab.exec(&lab.fw, &["ip", "-6", "neigh", "show", "dev", "vw0"])
            .stdout,
    )
    .into_owned();
    assert!(
        neigh.contains("2001:db8:1::2"),
        "fw did not resolve the peer: {neigh}"
    );
}

#[test]
fn a_ban_drops_and_expires_and_explain_sees_it() {
    let lab = Lab::running(POLICY);
    assert_eq!(
        lab.probe(&[("203.0.113.2", "udp/5060"), ("2001:db8:5::2", "udp/5060")]),
        vec!["pass", "pass"]
    );
    for target in ["203.0.113.2", "2001:db8:5::2"] {
        lab.voipwall_ok(POLICY, &["ban", target, "--for", "3s", "--reason", "test"]);
    }
    let banned_at = Instant::now();
    lab.assert_traffic(
        POLICY,
        &[
            ("203.0.113.2", "udp/5060", "drop"),
            ("2001:db8:5::2", "udp/5060", "drop"),
            ("203.0.113.7", "udp/5060", "pass"),
        ],
    );
    // IPv4 address bans are exact; an IPv6 address ban covers its /64.
    let bans =
        String::from_utf8_lossy(&lab.voipwall(POLICY, &["--json", "bans"]).stdout).into_owned();
    assert!(
        bans.contains("203.0.113.2") && bans.contains("2001:db8:5::/64"),
        "{bans}"
    );
    // Wait for the kernel to expire them (3 s timeout), bounded.
    while banned_at.elapsed() < Duration::from_millis(3300) {
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.assert_traffic(
        POLICY,
        &[
            ("203.0.113.2", "udp/5060", "pass"),
            ("2001:db8:5::2", "udp/5060", "pass"),
        ],
    );

    // Refusals: own address, a network containing it, loopback.
    for target in [FW_V4, "203.0.113.0/24", "127.0.0.1"] {
        let out = lab.voipwall(POLICY, &["ban", target]);
        assert_eq!(out.status.code(), Some(1), "ban {target} should be refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refusing"),
            "{target}"
        );
    }
}

#[test]
fn hundred_thousand_bans_survive_a_changed_policy() {
    let lab = Lab::running(POLICY);
    let file = lab.dir.join("bans.txt");
    let mut f = std::fs::File::create(&file).expect("bans file");
    // 100,000 addresses of the benchmarking range 198.18.0.0/15 (set elements only, no traffic).
    for i in 0..100_000u32 {
        let a = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + 1 + i;
        writeln!(f, "{}", std::net::Ipv4Addr::from(a)).expect("write");
    }
    writeln!(f, "203.0.113.2").expect("write");
    drop(f);
    lab.voipwall_ok(
        POLICY,
        &["ban", "--file", file.to_str().expect("utf8"), "--for", "1h"],
    );
    assert_eq!(lab.count_set("vw_ban_v4"), 100_001);
    assert_eq!(lab.probe(&[("203.0.113.2", "udp/5060")]), vec!["drop"]);

    // A changed policy: SSH opened to the internet, RTP range moved.
    let changed = POLICY
        .replace("services = [\"sip\"]", "services = [\"sip\", \"ssh\"]")
        .replace("10000-10010", "10000-10020");
    lab.apply(&changed);
    assert_eq!(lab.count_set("vw_ban_v4"), 100_001, "bans lost on re-apply");
    lab.assert_traffic(
        &changed,
        &[
            ("203.0.113.2", "udp/5060", "drop"),
            ("203.0.113.7", "tcp/22", "pass"),
        ],
    );
    // Timeouts were kept, not reset to zero or to forever.
    let listing = lab.nft(&["list", "set", "inet", "voipwall", "vw_ban_v4"]);
    assert!(
        listing.contains("203.0.113.2 timeout 1h expires"),
        "timeout lost"
    );
}

#[test]
fn an_ipv6_ban_covers_the_64_but_spares_registered_endpoints() {
    let lab = Lab::running(POLICY);
    // ::7 stands for a phone that registered: the daemon (issue 4) puts it in
    // vw_known_v6; here the test does, through nft.
    lab.nft(&[
        "add",
        "element",
        "inet",
        "voipwall",
        "vw_known_v6",
        "{ 2001:db8:5::7 timeout 1h }",
    ]);
    let banned = lab.voipwall_ok(POLICY, &["ban", "2001:db8:5::2", "--for", "1h"]);
    assert!(banned.contains("2001:db8:5::/64"), "{banned}");
    lab.assert_traffic(
        POLICY,
        &[
            ("2001:db8:5::2", "udp/5060", "drop"),
            // Same /64, registered: spared by the prefix ban.
            ("2001:db8:5::7", "udp/5060", "pass"),
            ("203.0.113.2", "udp/5060", "pass"),
        ],
    );
    // An exact ban is not spared, known or not.
    lab.voipwall_ok(POLICY, &["ban", "2001:db8:5::7", "--exact", "--for", "1h"]);
    lab.assert_traffic(POLICY, &[("2001:db8:5::7", "udp/5060", "drop")]);
    // Unbanning an address inside the prefix lifts the prefix ban.
    let out = lab.voipwall(POLICY, &["unban", "2001:db8:5::99"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("vw_banpfx_v6"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    lab.assert_traffic(POLICY, &[("2001:db8:5::2", "udp/5060", "pass")]);
    // A prefix ban that would cover this host's own address is refused.
    let out = lab.voipwall(POLICY, &["ban", "2001:db8:1::5"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("own address") && err.contains("--exact"),
        "{err}"
    );
}

const FOREIGN: &str = "table inet foreign {
\tchain input {
\t\ttype filter hook input priority 10; policy accept;
\t\ttcp dport 9999 counter packets 0 bytes 0 accept comment \"someone else's rule\"
\t}
}
table ip foreignnat {
\tchain post {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip daddr 192.0.2.0/24 masquerade
\t}
}
";

#[test]
fn foreign_tables_are_byte_identical_after_apply_and_disable() {
    let lab = Lab::new();
    let path = lab.dir.join("foreign.nft");
    std::fs::write(&path, FOREIGN).expect("write");
    lab.nft(&["-f", path.to_str().expect("utf8")]);
    let before = lab.nft(&["list", "ruleset"]);
    lab.apply(POLICY);
    let during = lab.nft(&["list", "ruleset"]);
    assert!(
        during.starts_with(&before) || during.contains(before.trim_end()),
        "foreign tables changed by apply:\n{during}"
    );
    let foreign_during = lab.nft(&["list", "table", "inet", "foreign"])
        + &lab.nft(&["list", "table", "ip", "foreignnat"]);
    lab.voipwall_ok(POLICY, &["disable"]);
    let after = lab.nft(&["list", "ruleset"]);
    assert_eq!(
        before, after,
        "ruleset after disable differs from before apply"
    );
    assert_eq!(
        foreign_during,
        lab.nft(&["list", "table", "inet", "foreign"])
            + &lab.nft(&["list", "table", "ip", "foreignnat"])
    );
    // Disabling twice is harmless.
    let again = lab.voipwall_ok(POLICY, &["disable"]);
    assert!(again.contains("not active"), "{again}");
}

#[test]
fn a_failed_apply_leaves_the_previous_ruleset_running() {
    let lab = Lab::running(POLICY);
    let before = lab.nft(&["list", "table", "inet", "voipwall"]);

    // 1. A policy naming an interface this host does not have: refused (exit 1).
    let bad = POLICY
        .replace("vw0 = \"internet\"", "vw0 = \"internet\"\neth9 = \"local\"")
        .replace("services = [\"sip\"]", "services = [\"sip\", \"ssh\"]");
    let out = lab.voipwall(&bad, &["apply"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interface `eth9` does not exist"));
    assert_eq!(before, lab.nft(&["list", "table", "inet", "voipwall"]));
    // Proven by traffic: SSH (which the refused policy would open) is still dropped.
    lab.assert_traffic(
        POLICY,
        &[
            ("203.0.113.2", "tcp/22", "drop"),
            ("203.0.113.2", "udp/5060", "pass"),
        ],
    );

    // 2. The kernel refuses the transaction (a set left by an incompatible
    //    layout): exit 2, and the table nft rejected the change to is intact.
    lab.voipwall(POLICY, &["disable"]);
    lab.nft(&["add", "table", "inet", "voipwall"]);
    lab.nft(&[
        "add",
        "set",
        "inet",
        "voipwall",
        "vw_ban_v4",
        "{ type ipv4_addr; flags interval; }",
    ]);
    let old = lab.nft(&["list", "table", "inet", "voipwall"]);
    let out = lab.voipwall(POLICY, &["apply"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("previous ruleset is still in place") && err.contains("vw_ban_v4"),
        "{err}"
    );
    assert_eq!(old, lab.nft(&["list", "table", "inet", "voipwall"]));
    // Nothing of the new policy took effect: SSH still reaches the listener.
    assert_eq!(lab.probe(&[("203.0.113.2", "tcp/22")]), vec!["pass"]);
}

/// Discovery end to end: a PBX configuration on disk makes a SIP trunk able
/// to send SIP and not IAX, an IAX peer able to send IAX and not SIP, and
/// an unknown host neither, with no per-trunk line in the policy.
#[test]
fn discovered_trunks_reach_only_their_own_protocol() {
    let lab = Lab::new();
    let ast = lab.dir.join("asterisk");
    std::fs::create_dir_all(&ast).expect("asterisk dir");
    for (name, text) in [
        (
            "pjsip.conf",
            "[udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n\
             #include pjsip.trunks.conf\n",
        ),
        (
            "pjsip.trunks.conf",
            "[trunk-tpl](!)\ntype=identify\n\n\
             [carrier](trunk-tpl)\nendpoint=carrier\nmatch=203.0.113.7,2001:db8:1::7\n",
        ),
        (
            "iax.conf",
            "[general]\nbindport=4569\n\n[branch]\ntype=peer\nhost=198.51.100.7\nsecret=Xk29vLq7p\n",
        ),
    ] {
        std::fs::write(ast.join(name), text).expect("write config");
    }
    let policy = format!(
        "[interfaces]\nvw0 = \"internet\"\n[zones.internet]\nservices = []\n\
         [zones.other]\nservices = [\"sip\", \"iax2\"]\n\
         [discover]\nasterisk = \"{}\"\nfreeswitch = false\nkamailio = false\n",
        ast.display()
    );
    let mut lab = lab;
    lab.listen();
    let checked = lab.voipwall_ok(&policy, &["check"]);
    assert!(
        checked.contains("3 trunk/peer entries"),
        "check reports discovery: {checked}"
    );
    lab.apply(&policy);
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.7", "udp/5060", "pass"),
            ("203.0.113.7", "udp/4569", "drop"),
            ("2001:db8:1::7", "udp/5060", "pass"),
            ("2001:db8:1::7", "udp/4569", "drop"),
            ("198.51.100.7", "udp/4569", "pass"),
            ("198.51.100.7", "udp/5060", "drop"),
            ("203.0.113.2", "udp/5060", "drop"),
            ("203.0.113.2", "udp/4569", "drop"),
            ("2001:db8:1::2", "udp/5060", "drop"),
            ("198.51.100.2", "udp/4569", "drop"),
        ],
    );
    // The rule that let the trunk in names the PBX file and line.
    let out = lab.voipwall(
        &policy,
        &["explain", "203.0.113.7", "udp/5060", "--iface", "vw0"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("peer carrier (pjsip identify match) / pjsip.trunks.conf:6"),
        "explain names the trunk's line: {text}"
    );
}

/// `voipwall audit` on a host with deliberately bad exposures: a database,
/// AMI with FreePBX's default password, plain-HTTP admin and TFTP
/// provisioning open to the internet, SSH on 22 open to the internet, SIP
/// without TLS, a weak extension secret, an RTP range below 1024 in the PBX
/// config and a trusted network of half the address space. Each is found,
/// with the severity and exit code the documentation promises.
#[test]
fn audit_finds_each_deliberate_exposure() {
    let mut lab = Lab::new();
    lab.listen_on(&[
        "tcp/22", "tcp/80", "tcp/3306", "tcp/5038", "udp/5060", "udp/69", "tcp/7777",
    ]);
    let ast = lab.dir.join("asterisk");
    std::fs::create_dir_all(&ast).expect("asterisk dir");
    for (name, text) in [
        (
            "pjsip.conf",
            "[udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n\n\
             [1001]\ntype=endpoint\nauth=1001\n[1001]\ntype=auth\nusername=1001\npassword=1001\n\n\
             [1002]\ntype=endpoint\nauth=1002\n[1002]\ntype=auth\nusername=1002\npassword=Hq7w3Nz5Kd\n",
        ),
        (
            "manager.conf",
            "[general]\nenabled = yes\nport = 5038\n\n[admin]\nsecret = amp111\n",
        ),
        ("rtp.conf", "[general]\nrtpstart=500\nrtpend=20000\n"),
    ] {
        std::fs::write(ast.join(name), text).expect("write config");
    }
    let sshd = lab.dir.join("sshd_config");
    std::fs::write(&sshd, "Port 22\n").expect("sshd_config");
    let policy = format!(
        "[interfaces]\nvw0 = \"internet\"\n\
         [networks]\n\"10.0.0.0/7\" = \"trusted\"\n\
         [services.ami]\nports = [\"tcp/5038\"]\n\
         [zones.internet]\nservices = [\"sip\", \"ssh\", \"mysql\", \"ami\", \"http-admin\", \"provisioning-tftp\"]\n\
         [discover]\nasterisk = \"{}\"\nfreeswitch = false\nkamailio = false\nsshd_config = \"{}\"\n",
        ast.display(),
        sshd.display()
    );
    let out = lab.voipwall(&policy, &["--json", "audit"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "critical findings exit 6: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("audit json");
    assert_eq!(v["worst"], "critical");
    let findings: Vec<(String, String, String)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap_or("").to_string(),
                f["check"].as_str().unwrap_or("").to_string(),
                f["what"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let has = |sev: &str, check: &str, what: &str| {
        findings
            .iter()
            .any(|(s, c, w)| s == sev && c == check && w.contains(what))
    };
    let expected = [
        ("critical", "db-exposed", "tcp/3306"),
        ("critical", "mgmt-exposed", "tcp/5038"),
        ("critical", "default-credentials", "ami `admin`"),
        ("high", "http-exposed", "tcp/80"),
        ("high", "http-exposed", "udp/69"),
        ("high", "weak-sip-secret", "pjsip `1001`"),
        ("high", "rtp-range", "udp/500-20000"),
        ("high", "trusted-too-wide", "10.0.0.0/7"),
        ("medium", "ssh-22-exposed", "tcp/22"),
        ("medium", "sip-no-tls", "udp/5060"),
        ("info", "listening-not-granted", "tcp/7777"),
    ];
    let missing: Vec<_> = expected.iter().filter(|(s, c, w)| !has(s, c, w)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in {findings:#?}");
    assert!(
        !findings.iter().any(|(_, _, w)| w.contains("1002")),
        "a strong secret is not reported: {findings:#?}"
    );
    assert_eq!(
        findings.len(),
        expected.len(),
        "nothing else: {findings:#?}"
    );
    // The human table says the same, and the secret itself is never printed.
    let human = lab.voipwall(&policy, &["audit"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("11 findings: 3 critical, 5 high, 2 medium, 0 low, 1 info"),
        "{text}"
    );
    assert!(
        !text.contains("amp111"),
        "secrets are judged, never shown: {text}"
    );
}

/// The iptables + ipset export, loaded with the real `ipset restore`,
/// `iptables-restore` and `ip6tables-restore` in a namespace (no nftables
/// table of ours), gives the same verdicts as voipwall's own ruleset on the
/// same probes: zones by most specific network, interface fallback, block
/// list, IPv6.
#[test]
fn iptables_export_gives_the_same_verdicts_as_the_ruleset() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = "[interfaces]\nvw0 = \"internet\"\n\
        [networks]\n\"198.51.100.0/24\" = \"local\"\n\"198.51.100.7\" = \"trusted\"\n\
        [zones.internet]\nservices = [\"sip\"]\n[zones.local]\nservices = [\"ssh\"]\n\
        [[block]]\naddress = \"203.0.113.7\"\n\
        [discover]\nenabled = false\n";
    let cases: &[(&str, &str, &str)] = &[
        ("203.0.113.2", "udp/5060", "pass"),
        ("203.0.113.2", "tcp/22", "drop"),
        ("203.0.113.7", "udp/5060", "drop"),
        ("198.51.100.2", "tcp/22", "pass"),
        ("198.51.100.2", "tcp/443", "drop"),
        ("198.51.100.7", "tcp/443", "pass"),
        ("2001:db8:1::2", "udp/5060", "pass"),
        ("2001:db8:1::2", "tcp/22", "drop"),
    ];
    let export = lab.voipwall_ok(policy, &["export", "iptables"]);
    let part = |name: &str| -> String {
        let start = export.find(&format!("### {name}")).expect("part");
        let rest = &export[start..];
        let body = &rest[rest.find('\n').unwrap() + 1..];
        body[..body.find("\n### ").unwrap_or(body.len())].to_string()
    };
    for (cmd, name) in [
        ("ipset restore", "part 1"),
        ("iptables-restore", "part 2"),
        ("ip6tables-restore", "part 3"),
    ] {
        let path = lab.dir.join(format!("{}.txt", name.replace(' ', "")));
        std::fs::write(&path, part(name)).unwrap();
        let mut args = vec!["sh", "-c"];
        let line = format!("{cmd} < {}", path.display());
        args.push(&line);
        let out = lab.exec(&lab.fw, &args);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let probes: Vec<(&str, &str)> = cases.iter().map(|(s, t, _)| (*s, *t)).collect();
    let by_iptables = lab.probe(&probes);
    // Now voipwall's own ruleset, iptables removed.
    for flush in [
        "iptables -F; iptables -X; iptables -P INPUT ACCEPT",
        "ip6tables -F; ip6tables -X; ip6tables -P INPUT ACCEPT",
    ] {
        lab.exec(&lab.fw, &["sh", "-c", flush]);
    }
    lab.apply(policy);
    let by_nft = lab.probe(&probes);
    for (i, (src, to, want)) in cases.iter().enumerate() {
        assert_eq!(&by_nft[i], want, "nft: {src} -> {to}");
        assert_eq!(&by_iptables[i], want, "iptables export: {src} -> {to}");
    }
}

// ---- One truth (issue 11): what voipwall says is what the kernel does ----

const TRUTH: &str = r#"
[interfaces]
vw0 = "internet"

[networks]
"198.51.100.7" = "trusted"

[host]
management = ["198.51.100.7/32"]

[zones.internet]
services = ["sip"]

[[allow]]
address = "203.0.113.2"
description = "a partner"
"#;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// With the daemon running, a /28 ban covers exactly the /28: .100
/// (inside 203.0.113.96/28) is dropped, .2 (outside, same /24) passes; the
/// daemon's store has it.
#[test]
fn a_network_ban_through_the_daemon_covers_exactly_that_network() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    let out = lab.voipwall(TRUTH, &["ban", "203.0.113.96/28", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("203.0.113.96/28") && said.contains("vw_bannet_v4"),
        "{said}"
    );
    lab.assert_traffic(
        TRUTH,
        &[
            ("203.0.113.100", "udp/5060", "drop"),
            ("203.0.113.2", "udp/5060", "pass"),
        ],
    );
    let stored =
        String::from_utf8_lossy(&lab.voipwall(TRUTH, &["--json", "bans"]).stdout).into_owned();
    assert!(stored.contains("203.0.113.96/28"), "{stored}");
    // Unban through the daemon lifts it from the kernel too.
    let out = lab.voipwall(TRUTH, &["unban", "203.0.113.96/28"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.probe(&[("203.0.113.100", "udp/5060")]), vec!["pass"]);
}

/// A 3,000-packet SIP burst from a management address (also trusted) is
/// neither rate-limited nor banned by the kernel flood guard: SSH stays up.
/// The same burst from an internet address is banned by the guard, and
/// `unban` of that kernel-made ban lets it through again.
#[test]
fn management_survives_a_flood_and_unban_lifts_a_flood_guard_ban() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    lab.flood("198.51.100.7", 3000);
    lab.flood("203.0.113.7", 3000);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        lab.probe(&[
            ("198.51.100.7", "tcp/22"),
            ("198.51.100.7", "udp/5060"),
            ("203.0.113.7", "udp/5060"),
        ]),
        vec!["pass", "pass", "drop"],
        "management must pass, the flooding internet host must be banned"
    );
    let out = lab.voipwall(TRUTH, &["unban", "203.0.113.7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unbanned 203.0.113.7"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["pass"]);
}

/// Refusals, with and without the daemon: a zero or overlong duration, a
/// ban or block of an allowed address (named), of management; nothing
/// reaches the kernel.
#[test]
fn refused_verbs_exit_1_and_change_nothing() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    for with_daemon in [false, true] {
        if with_daemon {
            lab.start_daemon(TRUTH);
        }
        for (args, says) in [
            (vec!["ban", "203.0.113.7", "--for", "0s"], "zero"),
            (
                vec!["ban", "203.0.113.7", "--for", "18446744073709552s"],
                "duration",
            ),
            (vec!["ban", "203.0.113.7", "--for", "100000w"], "too long"),
            (vec!["ban", "203.0.113.2"], "allow entry 203.0.113.2/32"),
            (vec!["block", "203.0.113.2"], "allow entry 203.0.113.2/32"),
            (vec!["ban", "198.51.100.7"], "management network"),
            (vec!["allow", "0.0.0.0/0"], "every address"),
        ] {
            let out = lab.voipwall(TRUTH, &args);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} (daemon: {with_daemon})"
            );
            assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        }
        assert_eq!(
            lab.probe(&[("203.0.113.2", "udp/5060"), ("203.0.113.7", "udp/5060")]),
            vec!["pass", "pass"]
        );
    }
    // A runtime allow protects too, and --force overrides an allow entry.
    let out = lab.voipwall(TRUTH, &["allow", "203.0.113.100"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.voipwall(TRUTH, &["ban", "203.0.113.100"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("runtime allow entry"),
        "{}",
        stderr(&out)
    );
    let out = lab.voipwall(
        TRUTH,
        &["ban", "203.0.113.100", "--force", "--for", "permanent"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `reload` goes through the apply path and records a generation: after
/// a restart the daemon applies the reloaded policy, not an older one.
#[test]
fn reload_then_restart_keeps_the_reloaded_policy() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    assert_eq!(lab.probe(&[("203.0.113.2", "tcp/443")]), vec!["drop"]);
    let reloaded = TRUTH.replace(
        "services = [\"sip\"]",
        "services = [\"sip\", \"https-admin\"]",
    );
    let out = lab.voipwall(&reloaded, &["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.probe(&[("203.0.113.2", "tcp/443")]), vec!["pass"]);
    lab.stop_daemon();
    lab.start_daemon(&reloaded);
    assert_eq!(
        lab.probe(&[("203.0.113.2", "tcp/443")]),
        vec!["pass"],
        "the restart undid the reload"
    );
    // status compares the file with the generation in force.
    let st = |policy: &str| -> serde_json::Value {
        let out = lab.voipwall(policy, &["--json", "status"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status json")
    };
    assert_eq!(st(&reloaded)["policy_file"]["matches_running"], true);
    let text = String::from_utf8_lossy(&lab.voipwall(TRUTH, &["status"]).stdout).into_owned();
    assert!(
        text.contains("policy file: DIFFERS from generation"),
        "{text}"
    );
}

/// Another tool flushes the whole ruleset: within a second or so the daemon
/// puts the running generation and every stored ban back (shown by
/// traffic: the banned address is dropped again, SIP passes for others).
#[test]
fn the_daemon_restores_its_table_and_bans_after_a_foreign_flush() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    let out = lab.voipwall(TRUTH, &["ban", "203.0.113.7", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["drop"]);
    lab.nft(&["flush", "ruleset"]);
    let flushed = Instant::now();
    // Bounded wait for the table to come back.
    while lab
        .exec(&lab.fw, &["nft", "list", "table", "inet", "voipwall"])
        .status
        .code()
        != Some(0)
    {
        assert!(
            flushed.elapsed() < Duration::from_secs(5),
            "the table did not come back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let back_after = flushed.elapsed();
    eprintln!("table back {back_after:?} after the flush");
    // The bans follow the table in the same pass.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        lab.probe(&[
            ("203.0.113.7", "udp/5060"),
            ("203.0.113.2", "udp/5060"),
            ("203.0.113.2", "tcp/443")
        ]),
        vec!["drop", "pass", "drop"],
        "policy and bans restored after {back_after:?}"
    );
    assert!(
        back_after < Duration::from_millis(1500),
        "took {back_after:?}"
    );
}

/// `explain` answers from what runs, not from the file: after an apply
/// with `--confirm` rolled back, the file opens tcp/443 but the kernel
/// drops it, and explain (interface found from the route) says drop. A
/// foreign `table inet filter` with policy drop drops SIP that voipwall
/// accepts: explain names it and says DROP, apply warns about it, and
/// audit reports it.
#[test]
fn explain_after_a_rollback_and_with_a_foreign_drop_table_agrees_with_traffic() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    let https = TRUTH.replace(
        "services = [\"sip\"]",
        "services = [\"sip\", \"https-admin\"]",
    );
    let out = lab.voipwall(&https, &["apply", "--confirm", "2s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.probe(&[("203.0.113.2", "tcp/443")]), vec!["pass"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.probe(&[("203.0.113.2", "tcp/443")]) != vec!["drop"] {
        assert!(
            Instant::now() < deadline,
            "the unconfirmed apply was not rolled back"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The file on disk still opens tcp/443; the kernel does not.
    let ex = |policy: &str, args: &[&str]| -> serde_json::Value {
        let mut full = vec!["--json", "explain"];
        full.extend_from_slice(args);
        let out = lab.voipwall(policy, &full);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("explain json")
    };
    let v = ex(&https, &["203.0.113.2", "tcp/443"]);
    assert_eq!(v["verdict"], "drop", "{v:#}");
    assert_eq!(v["packet"]["iif"], "vw0", "interface from the route: {v:#}");
    assert!(v["generation"].is_i64(), "{v:#}");
    let path = lab.dir.join("policy.toml");
    let v = ex(
        &https,
        &[
            "203.0.113.2",
            "tcp/443",
            "--policy",
            path.to_str().expect("utf8"),
        ],
    );
    assert_eq!(v["verdict"], "accept", "--policy explains the file: {v:#}");
    // Another firewall drops what voipwall accepts.
    assert_eq!(lab.probe(&[("203.0.113.2", "udp/5060")]), vec!["pass"]);
    let foreign = lab.dir.join("filter.nft");
    std::fs::write(
        &foreign,
        "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t}\n}\n",
    )
    .expect("write");
    lab.nft(&["-f", foreign.to_str().expect("utf8")]);
    assert_eq!(lab.probe(&[("203.0.113.2", "udp/5060")]), vec!["drop"]);
    let v = ex(TRUTH, &["203.0.113.2", "udp/5060"]);
    assert_eq!(v["explanation"]["verdict"], "accept", "{v:#}");
    assert_eq!(v["verdict"], "drop", "{v:#}");
    assert_eq!(v["also_evaluated"][0]["chain"]["table"], "filter", "{v:#}");
    let text = lab.voipwall_ok(TRUTH, &["explain", "203.0.113.2", "udp/5060"]);
    assert!(
        text.contains("also evaluated: table inet filter chain input")
            && text.contains("final: DROP"),
        "{text}"
    );
    let out = lab.voipwall(TRUTH, &["apply"]);
    assert!(
        out.status.success() && stderr(&out).contains("table inet filter chain input"),
        "{}",
        stderr(&out)
    );
    let out = lab.voipwall(TRUTH, &["--json", "audit"]);
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains("foreign-table") && audit.contains("table inet filter chain input"),
        "{audit}"
    );
}

/// Another tool deletes a ban from the kernel behind the daemon's back. The
/// next SIP request from that source reaches detection, which proves the
/// kernel no longer holds the ban: the daemon puts it back instead of
/// silently suppressing the source, and the address is dropped again.
#[test]
fn a_ban_deleted_behind_the_daemons_back_is_put_back_by_the_next_packet() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    let out = lab.voipwall(TRUTH, &["ban", "203.0.113.7", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["drop"]);
    // Past the in-flight grace, then the foreign delete.
    std::thread::sleep(Duration::from_millis(2_100));
    lab.nft(&[
        "delete",
        "element",
        "inet",
        "voipwall",
        "vw_ban_v4",
        "{ 203.0.113.7 }",
    ]);
    assert_eq!(
        lab.probe(&[("203.0.113.7", "udp/5060")]),
        vec!["pass"],
        "the kernel lost the ban"
    );
    lab.flood("203.0.113.7", 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab
        .nft(&["list", "set", "inet", "voipwall", "vw_ban_v4"])
        .contains("203.0.113.7")
    {
        assert!(Instant::now() < deadline, "the ban was not put back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["drop"]);
    let st: serde_json::Value =
        serde_json::from_slice(&lab.voipwall(TRUTH, &["--json", "status"]).stdout)
            .expect("status json");
    assert_eq!(st["counters"]["reasserted"], 1, "{st:#}");
}

/// Apply leaves a policy set alone only when it is unchanged since the
/// generation in force and the kernel, read back, still holds exactly
/// that: a changed block list is refilled, and one that another tool
/// edited behind voipwall's back is put right by the next apply.
#[test]
fn apply_refills_changed_or_tampered_policy_sets_and_keeps_the_rest() {
    let mut lab = Lab::new();
    lab.listen();
    let with_blocks = |blocks: &[&str]| -> String {
        let mut p = TRUTH.to_string();
        for b in blocks {
            p.push_str(&format!("\n[[block]]\naddress = \"{b}\"\n"));
        }
        p
    };
    let a = with_blocks(&["203.0.113.7", "203.0.113.96/28"]);
    let b = with_blocks(&["198.51.100.2", "203.0.113.96/28"]);
    lab.apply(&a);
    lab.assert_traffic(
        &a,
        &[
            ("203.0.113.7", "udp/5060", "drop"),
            ("198.51.100.2", "udp/5060", "pass"),
            ("203.0.113.100", "udp/5060", "drop"),
        ],
    );
    lab.apply(&b);
    lab.assert_traffic(
        &b,
        &[
            ("203.0.113.7", "udp/5060", "pass"),
            ("198.51.100.2", "udp/5060", "drop"),
            ("203.0.113.100", "udp/5060", "drop"),
        ],
    );
    // Another tool empties both block sets; the same policy applied again
    // must notice and refill them.
    lab.nft(&["flush", "set", "inet", "voipwall", "vw_blockhost_v4"]);
    lab.nft(&["flush", "set", "inet", "voipwall", "vw_block_v4"]);
    assert_eq!(
        lab.probe(&[("198.51.100.2", "udp/5060"), ("203.0.113.100", "udp/5060")]),
        vec!["pass", "pass"],
        "the kernel lost the block list"
    );
    lab.apply(&b);
    lab.assert_traffic(
        &b,
        &[
            ("198.51.100.2", "udp/5060", "drop"),
            ("203.0.113.100", "udp/5060", "drop"),
            ("203.0.113.7", "udp/5060", "pass"),
        ],
    );
}

/// At start the store is locked by another process (a backup, a second
/// voipwall) and holds a row another tool wrote badly: the daemon waits for
/// the lock, skips the bad row, and every good ban is back in the kernel,
/// shown by traffic.
#[test]
fn a_locked_store_is_waited_for_and_a_bad_row_costs_only_itself() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    for a in ["203.0.113.7", "203.0.113.100"] {
        let out = lab.voipwall(TRUTH, &["ban", a, "--for", "1h"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // The kernel forgets (as after a reboot); only the store remembers.
    lab.nft(&["flush", "set", "inet", "voipwall", "vw_ban_v4"]);
    assert_eq!(
        lab.probe(&[("203.0.113.7", "udp/5060"), ("203.0.113.100", "udp/5060")]),
        vec!["pass", "pass"]
    );
    let db = lab.dir.join("state").join("state.db");
    let locker = r#"
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("INSERT INTO bans (target, rule, reason, origin, level, start_ms, end_ms, evidence) "
          "VALUES ('not-a-network', 'x', 'x', 'x', 0, 1, 9999999999999, '[]')")
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(3)
c.execute("COMMIT")
"#;
    let mut hold = Command::new("python3")
        .args(["-c", locker])
        .arg(&db)
        .stdout(Stdio::piped())
        .spawn()
        .expect("locker");
    await_line(&mut hold, "locked", "locker output");
    let started = Instant::now();
    lab.start_daemon(TRUTH);
    let waited = started.elapsed();
    let _ = hold.wait();
    assert!(
        waited >= Duration::from_secs(2),
        "the daemon answered in {waited:?}: it did not wait for the lock"
    );
    assert_eq!(
        lab.probe(&[("203.0.113.7", "udp/5060"), ("203.0.113.100", "udp/5060")]),
        vec!["drop", "drop"],
        "every good ban is back in the kernel"
    );
    let log = std::fs::read_to_string(lab.dir.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("cannot be read and were skipped"), "{log}");
}

/// Removes /etc/netns/<ns> (what `ip netns exec` bind-mounts over /etc).
struct EtcNetns(PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Issue 12: one forged OPTIONS with a scanner's User-Agent, sent with the
/// source address of the host's DNS resolver or of a trunk declared as an
/// `other` network, bans neither (the engine alerts); the same packet from
/// an ordinary internet address is banned. `ban` of the resolver is refused
/// naming it.
#[test]
fn forged_scanner_packets_do_not_ban_the_resolver_or_a_declared_trunk() {
    let mut lab = Lab::new();
    lab.listen();
    let etc = PathBuf::from(format!("/etc/netns/{}", lab.fw));
    std::fs::create_dir_all(&etc).expect("/etc/netns");
    let _etc = EtcNetns(etc.clone());
    std::fs::write(etc.join("resolv.conf"), "nameserver 203.0.113.7\n").expect("resolv.conf");
    let policy = format!("{TRUTH}\n[zones.other]\nservices = [\"sip\"]\n");
    let policy = policy.replace(
        "[networks]\n",
        "[networks]\n\"203.0.113.100\" = \"other\"\n",
    );
    lab.apply(&policy);
    lab.start_daemon(&policy);
    let scanner = |src: &str| {
        let dst = fw_for(src);
        let script = format!(
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{src}',5070))\ns.sendto(b'OPTIONS sip:100@{dst} SIP/2.0\\r\\nVia: SIP/2.0/UDP {src}:5070;branch=z9hG4bKf\\r\\nFrom: <sip:100@{src}>;tag=1\\r\\nTo: <sip:100@{dst}>\\r\\nCall-ID: forged@{src}\\r\\nCSeq: 1 OPTIONS\\r\\nUser-Agent: friendly-scanner\\r\\nContent-Length: 0\\r\\n\\r\\n',('{dst}',5060))\n"
        );
        let out = lab.exec(&lab.peer, &["python3", "-c", &script]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    for src in ["203.0.113.7", "203.0.113.100", "198.51.100.2"] {
        scanner(src);
    }
    std::thread::sleep(Duration::from_millis(300));
    let bans: serde_json::Value =
        serde_json::from_slice(&lab.voipwall(&policy, &["--json", "bans"]).stdout).expect("bans");
    let banned: Vec<String> = bans
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["target"].as_str().map(str::to_string))
        .collect();
    assert!(
        banned.contains(&"198.51.100.2/32".to_string()),
        "control not banned: {banned:?}"
    );
    assert!(
        !banned.iter().any(|t| t.starts_with("203.0.113.7/")),
        "resolver banned: {banned:?}"
    );
    assert!(
        !banned.iter().any(|t| t.starts_with("203.0.113.100/")),
        "trunk banned: {banned:?}"
    );
    assert_eq!(
        lab.probe(&[("203.0.113.7", "udp/5060"), ("203.0.113.100", "udp/5060")]),
        vec!["pass", "pass"]
    );
    let out = lab.voipwall(&policy, &["ban", "203.0.113.7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("DNS resolver"), "{}", stderr(&out));
}

/// Issue 12: a SIP flood from 100 forged sources, each far under the
/// per-source limits, is cut by the aggregate guard ([sip] aggregate_pps),
/// while a registered endpoint is served throughout; an unregistered
/// source shares the flood's budget.
#[test]
fn a_distributed_flood_is_capped_and_registered_endpoints_are_served_first() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = format!(
        "{TRUTH}\n[sip]\naggregate_pps = 200\nflood_level1_pps = 5000\nflood_level2_pps = 10000\n"
    );
    lab.apply(&policy);
    // 203.0.113.7 registered (what the daemon's promotion does).
    lab.nft(&[
        "add",
        "element",
        "inet",
        "voipwall",
        "vw_known_v4",
        "{ 203.0.113.7 timeout 1h }",
    ]);
    // The forged sources answer ARP (the peer holds them): otherwise the
    // replies the guard lets through queue on unresolved neighbours and
    // fill the test listener's send buffer, which is not what is measured.
    let batch = lab.dir.join("addrs.batch");
    std::fs::write(
        &batch,
        (130..=229)
            .map(|h| format!("addr add 203.0.113.{h}/32 dev vp0\n"))
            .collect::<String>(),
    )
    .expect("batch");
    let out = lab.exec(&lab.peer, &["ip", "-batch", batch.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/spoof_flood.py");
    let flood = Command::new("ip")
        .args([
            "netns", "exec", &lab.peer, "python3", helper, FW_V4, "6", "200000", "130", "229",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("flood");
    std::thread::sleep(Duration::from_millis(500));
    let known = lab.probe(&[
        ("203.0.113.7", "udp/5060"),
        ("203.0.113.7", "udp/5060"),
        ("203.0.113.7", "udp/5060"),
        ("203.0.113.7", "udp/5060"),
    ]);
    let sent = String::from_utf8_lossy(&flood.wait_with_output().expect("flood").stdout)
        .trim()
        .to_string();
    let counters = lab.nft(&[
        "list",
        "counter",
        "inet",
        "voipwall",
        "vw_aggregate_dropped",
    ]);
    let dropped: u64 = counters
        .split("packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let sent_n: u64 = sent.parse().unwrap_or(0);
    assert_eq!(
        known,
        vec!["pass"; 4],
        "a registered endpoint starved (flood sent {sent})"
    );
    assert!(
        sent_n > 10_000 && dropped * 10 > sent_n * 8,
        "the guard dropped {dropped} of {sent_n} flood packets (200 pps budget)"
    );
    eprintln!(
        "flood: {sent_n} packets from 100 forged sources (at most 6 s); the aggregate guard dropped {dropped}; a registered endpoint passed 4 of 4 probes"
    );
}

/// Issue 12: requests detection cannot read but the PBX answers (the
/// stand-in PBX answers anything; kamailio, tested in e2e.rs, answers no
/// shape voipwall cannot decode) are evidence: after 10 such answered
/// requests the sender is banned by the `undecodable` rule, for 10 minutes
/// (unverified), shown by traffic.
#[test]
fn answered_requests_detection_cannot_read_ban_their_sender() {
    let mut lab = Lab::new();
    let child = stand_in_pbx(&lab);
    lab.listener = Some(child);
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('203.0.113.7',5070))\ns.settimeout(0.5)\nn=0\nfor i in range(20):\n  s.sendto(('REGISTER sip:pbx SIP/2.0\\r\\nVia: SIP/2.0/UDP 203.0.113.7:5070;branch=z9hG4bKu%d\\r\\nFrom: <sip:1002@pbx>;tag=%d\\r\\nTo: <sip:1002@pbx>\\r\\nCall-ID: u%d\\r\\nCSeq: 1 REGISTER\\r\\nX-Broken header without a colon\\r\\nContent-Length: 0\\r\\n\\r\\n' % (i,i,i)).encode(),('{FW_V4}',5060))\n  try:\n    s.recv(4096); n+=1\n  except Exception:\n    pass\n  time.sleep(0.02)\nprint(n)\n"
    );
    let out = lab.exec(&lab.peer, &["python3", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answered: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(300));
    let bans: serde_json::Value =
        serde_json::from_slice(&lab.voipwall(TRUTH, &["--json", "bans"]).stdout).expect("bans");
    let ban = bans
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["target"] == "203.0.113.7/32")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        ban["rule"], "undecodable",
        "answered {answered}; bans {bans:#}"
    );
    assert!(
        (10..20).contains(&answered),
        "the PBX answered {answered} of 20 before the ban"
    );
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["drop"]);
    eprintln!("the stand-in PBX answered {answered} of 20 undecodable requests before the ban");
}

/// Issue 12: a reload whose names cannot be resolved (the resolver does
/// not answer) takes seconds; detection does not wait for it. A scanner
/// packet sent while the reload runs is banned within a second, before the
/// reload answers.
#[test]
fn detection_keeps_banning_while_a_slow_reload_runs() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    // 203.0.113.53 is on the link but nobody answers there: every query
    // waits for its timeout.
    let slow = TRUTH.replace(
        "[networks]\n",
        "[networks]\n\"trunk1.example.net\" = \"other\"\n\"trunk2.example.net\" = \"other\"\n",
    ) + "\n[dns]\nservers = [\"203.0.113.53\"]\n";
    let path = lab.dir.join("policy.toml");
    std::fs::write(&path, &slow).expect("write");
    let started = Instant::now();
    let mut reload = Command::new("ip")
        .args(["netns", "exec", &lab.fw, env!("CARGO_BIN_EXE_voipwall")])
        .env("VOIPWALL_SOCKET", lab.dir.join("sock"))
        .arg("-c")
        .arg(&path)
        .arg("reload")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("reload");
    std::thread::sleep(Duration::from_millis(300));
    let script = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.51.100.2',5070))\ns.sendto(b'OPTIONS sip:100@198.51.100.1 SIP/2.0\\r\\nVia: SIP/2.0/UDP 198.51.100.2:5070;branch=z9hG4bKr\\r\\nFrom: <sip:100@198.51.100.2>;tag=1\\r\\nTo: <sip:100@198.51.100.1>\\r\\nCall-ID: during-reload\\r\\nCSeq: 1 OPTIONS\\r\\nUser-Agent: friendly-scanner\\r\\nContent-Length: 0\\r\\n\\r\\n',('198.51.100.1',5060))\n";
    let out = lab.exec(&lab.peer, &["python3", "-c", script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let banned_at = loop {
        let set = lab.nft(&["list", "set", "inet", "voipwall", "vw_ban_v4"]);
        if set.contains("198.51.100.2") {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the scanner was not banned during the reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let reload_running = reload.try_wait().expect("wait").is_none();
    let _ = reload.wait();
    let reload_took = started.elapsed();
    assert!(
        reload_running,
        "the reload finished before the ban ({banned_at:?}); the test did not make it slow"
    );
    eprintln!("banned {banned_at:?} after the reload started; the reload took {reload_took:?}");
}

impl Lab {
    /// The targets of the bans the store lists.
    fn banned(&self, policy: &str) -> Vec<String> {
        let out = self.voipwall(policy, &["--json", "bans"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["target"].as_str().map(str::to_string))
            .collect()
    }

    /// One forged OPTIONS with a scanner's User-Agent from `src` (an
    /// address of the peer namespace) to udp/5060 of the firewall.
    fn scanner_packet(&self, src: &str, tag: &str) {
        let dst = fw_for(src);
        let (fam, host) = if src.contains(':') {
            ("AF_INET6", format!("[{src}]"))
        } else {
            ("AF_INET", src.to_string())
        };
        let script = format!(
            "import socket\ns=socket.socket(socket.{fam},socket.SOCK_DGRAM)\ns.bind(('{src}',5070))\ns.sendto(b'OPTIONS sip:100@x SIP/2.0\\r\\nVia: SIP/2.0/UDP {host}:5070;branch=z9hG4bK{tag}\\r\\nFrom: <sip:100@x>;tag=1\\r\\nTo: <sip:100@x>\\r\\nCall-ID: {tag}@x\\r\\nCSeq: 1 OPTIONS\\r\\nUser-Agent: friendly-scanner\\r\\nContent-Length: 0\\r\\n\\r\\n',('{dst}',5060))\n"
        );
        let out = self.exec(&self.peer, &["python3", "-c", &script]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// `count` HEP v3 packets over UDP from `sender` (an address of the
    /// peer namespace) to `to:9060`, each carrying a scanner's OPTIONS
    /// whose source HEP gives as `sip_src`, to a PBX on another host
    /// (192.0.2.10: NFLOG here cannot have seen it, so it is not a duplicate).
    fn hep_scanner(&self, sender: &str, to: &str, sip_src: &str, count: u32) {
        let script = format!(
            "import socket,struct\n\
def c(t,v): return struct.pack('!HHH',0,t,len(v)+6)+v\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
s.bind(('{sender}',0))\n\
for i in range({count}):\n\x20 sip=('OPTIONS sip:100@x SIP/2.0\\r\\nVia: SIP/2.0/UDP {sip_src}:5070;branch=z9hG4bKh%d\\r\\nFrom: <sip:100@x>;tag=1\\r\\nTo: <sip:100@x>\\r\\nCall-ID: hep%d-{sip_src}@x\\r\\nCSeq: 1 OPTIONS\\r\\nUser-Agent: friendly-scanner\\r\\nContent-Length: 0\\r\\n\\r\\n' % (i,i)).encode()\n\x20 b=c(1,b'\\x02')+c(2,b'\\x11')+c(3,socket.inet_aton('{sip_src}'))+c(4,socket.inet_aton('192.0.2.10'))+c(7,struct.pack('!H',5070))+c(8,struct.pack('!H',5060))+c(11,b'\\x01')+c(15,sip)\n\x20 s.sendto(b'HEP3'+struct.pack('!H',len(b)+6)+b,('{to}',9060))\n"
        );
        let out = self.exec(&self.peer, &["python3", "-c", &script]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// The CLI against the running daemon (its socket), without a policy.
    fn voipwall_ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_voipwall"))
            .env("VOIPWALL_SOCKET", self.dir.join("sock"))
            .env("VOIPWALL_STATE_DIR", self.dir.join("state"))
            .args(args)
            .output()
            .expect("run voipwall")
    }

    /// Waits (bounded) until `what` holds.
    fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(15);
        while !f() {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}\n{}\n{}",
                std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default(),
                String::from_utf8_lossy(&self.voipwall_ctl(&["--json", "status"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Issue 19: a listed HEP sender is protected infrastructure. HEP (and a
/// spoofed UDP HEP packet) naming the sender itself as a scanner gets it
/// an alert, not a ban; its later HEP still reaches the daemon, so the
/// scanner behind it is banned; even a ban forced by the operator leaves
/// its HEP port open, while its SIP is dropped.
#[test]
fn a_hep_sender_is_never_banned_and_its_hep_port_is_never_behind_a_ban() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = format!(
        "{TRUTH}\n[zones.internet]\nservices = [\"sip\", \"hep\"]\n[hep]\nlisten = [\"198.51.100.1:9060\"]\nsenders = [\"198.51.100.2\"]\n"
    )
    .replace("[zones.internet]\nservices = [\"sip\"]\n", "");
    lab.apply(&policy);
    lab.start_daemon(&policy);
    // The sender named as the scanner in its own HEP.
    lab.hep_scanner("198.51.100.2", "198.51.100.1", "198.51.100.2", 3);
    // A spoofed UDP packet with the sender's address (the kernel cannot
    // tell them apart).
    lab.scanner_packet("198.51.100.2", "spoof");
    std::thread::sleep(Duration::from_millis(500));
    let banned = lab.banned(&policy);
    assert!(
        !banned.iter().any(|t| t.starts_with("198.51.100.2/")),
        "the HEP sender was banned: {banned:?}"
    );
    let why = lab.voipwall(&policy, &["ban", "198.51.100.2"]);
    assert_eq!(why.status.code(), Some(1), "{}", stderr(&why));
    assert!(stderr(&why).contains("HEP sender"), "{}", stderr(&why));
    // Detection through it keeps working.
    lab.hep_scanner("198.51.100.2", "198.51.100.1", "203.0.113.50", 1);
    lab.until("the scanner behind the sender to be banned", || {
        lab.banned(&policy).contains(&"203.0.113.50/32".to_string())
    });
    // Forced by the operator: its SIP is dropped, its HEP still arrives.
    let forced = lab.voipwall(&policy, &["ban", "198.51.100.2", "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(lab.probe(&[("198.51.100.2", "udp/5060")]), vec!["drop"]);
    lab.hep_scanner("198.51.100.2", "198.51.100.1", "203.0.113.51", 1);
    lab.until(
        "the next scanner behind the banned sender to be banned",
        || lab.banned(&policy).contains(&"203.0.113.51/32".to_string()),
    );
    // 40 TCP connections from the listed sender: those over the cap of 32
    // are counted as such, not as senders not listed.
    let conns = "import socket,time\ncs=[]\nfor i in range(40):\n  s=socket.socket(); s.bind(('198.51.100.2',0)); s.connect(('198.51.100.1',9060)); cs.append(s)\ntime.sleep(1.5)\n";
    let out = lab.exec(&lab.peer, &["python3", "-c", conns]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st: serde_json::Value =
        serde_json::from_slice(&lab.voipwall_ctl(&["--json", "status"]).stdout).expect("status");
    assert_eq!(st["counters"]["hep_refused"], 0, "{}", st["counters"]);
    assert!(
        st["counters"]["hep_over_cap"].as_u64() >= Some(8),
        "{}",
        st["counters"]
    );
}

/// Issue 19: changing `[bans] ipv6_prefix` by reload never widens a ban.
/// 2001:db8:200::5 is banned as its /64; with the prefix changed to 48 the
/// /64 stays a /64 (an interval now), 2001:db8:200:1::5 outside it passes,
/// and explain agrees with the kernel.
#[test]
fn a_changed_ipv6_ban_prefix_never_widens_an_existing_ban() {
    let mut lab = Lab::new();
    lab.listen();
    for a in ["2001:db8:200::5/128", "2001:db8:200:1::5/128"] {
        lab.exec(&lab.peer, &["ip", "addr", "add", a, "dev", "vp0", "nodad"]);
    }
    lab.exec(
        &lab.fw,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:200::/48",
            "dev",
            "vw0",
        ],
    );
    let both = [
        ("2001:db8:200::5", "udp/5060"),
        ("2001:db8:200:1::5", "udp/5060"),
    ];
    // Warm the neighbour caches (the first solicitation may go unanswered).
    let _ = lab.probe(&both);
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    let out = lab.voipwall(TRUTH, &["ban", "2001:db8:200::5", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.probe(&both), vec!["drop", "pass"]);
    let wider = format!("{TRUTH}\n[bans]\nipv6_prefix = 48\n");
    let out = lab.voipwall(&wider, &["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    lab.assert_traffic(
        &wider,
        &[
            ("2001:db8:200::5", "udp/5060", "drop"),
            ("2001:db8:200:1::5", "udp/5060", "pass"),
        ],
    );
    let banned = lab.banned(&wider);
    assert_eq!(banned, vec!["2001:db8:200::/64".to_string()]);
}

/// A scanner packet from the trunk (203.0.113.100) and one from `control`:
/// the control is banned, the trunk is not.
fn spared_while_control_banned(lab: &Lab, policy: &str, tag: &str, control: &str) {
    lab.scanner_packet("203.0.113.100", tag);
    lab.scanner_packet(control, &format!("control-{tag}"));
    lab.until("the control scanner to be banned", || {
        lab.banned(policy).contains(&format!("{control}/32"))
    });
    let banned = lab.banned(policy);
    assert!(
        !banned.iter().any(|t| t.starts_with("203.0.113.100/")),
        "the trunk was banned ({tag}, during the outage): {banned:?}"
    );
}

/// Issue 19: a resolver outage never forgets a name's addresses. A trunk
/// named by hostname (an `other` network); its resolver is taken down, then
/// the policy is reloaded and later the daemon restarted during the outage:
/// the name's set keeps the last good address, explain keeps it in zone
/// `other`, and a scanner packet from the trunk's address is an alert, never
/// a ban, while the same packet from an ordinary address is banned.
#[test]
fn a_resolver_outage_never_forgets_a_trunks_address() {
    let mut lab = Lab::new();
    lab.listen();
    let mut dns =
        common::Dnsmasq::start(&lab.fw, &lab.dir, "203.0.113.100 trunk.lab.example\n", &[]);
    let policy = TRUTH.replace(
        "[networks]\n",
        "[networks]\n\"trunk.lab.example\" = \"other\"\n",
    ) + "\n[zones.other]\nservices = [\"sip\"]\n\n[dns]\nservers = [\"127.0.0.1\"]\nmin_refresh = \"1s\"\nmax_refresh = \"5s\"\n";
    lab.apply(&policy);
    lab.start_daemon(&policy);
    let name_set = |lab: &Lab| lab.nft(&["list", "set", "inet", "voipwall", "vw_name0_v4"]);
    assert!(
        name_set(&lab).contains("203.0.113.100"),
        "{}",
        name_set(&lab)
    );
    let zone = |lab: &Lab| {
        let out = lab.voipwall(
            &policy,
            &[
                "--json",
                "explain",
                "203.0.113.100",
                "udp/5060",
                "--iface",
                "vw0",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(zone(&lab).contains("zone other"), "{}", zone(&lab));

    dns.stop();
    let out = lab.voipwall(&policy, &["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        name_set(&lab).contains("203.0.113.100"),
        "the reload during the outage emptied the name's set: {}",
        name_set(&lab)
    );
    assert!(zone(&lab).contains("zone other"), "{}", zone(&lab));
    spared_while_control_banned(&lab, &policy, "after-reload", "198.51.100.2");

    lab.stop_daemon();
    let started = Instant::now();
    lab.start_daemon(&policy);
    eprintln!(
        "the daemon answered {:?} after its start during the outage",
        started.elapsed()
    );
    assert!(
        name_set(&lab).contains("203.0.113.100"),
        "the restart during the outage emptied the name's set: {}",
        name_set(&lab)
    );
    lab.until("the failed lookup to keep the last good address", || {
        let st: serde_json::Value =
            serde_json::from_slice(&lab.voipwall_ctl(&["--json", "status"]).stdout)
                .unwrap_or_default();
        st["dns"]["names"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("keeping the last good 1"))
    });
    spared_while_control_banned(&lab, &policy, "after-restart", "203.0.113.7");
    assert!(zone(&lab).contains("zone other"), "{}", zone(&lab));
}

/// Issue 19: alerts cannot be amplified. 3,000 forged scanner packets with
/// a management address (never banned, so each would be an alert) are one
/// alert per rule in the log and the event history, the rest counted; the
/// history keeps its earlier ban.
#[test]
fn forged_packets_from_a_protected_address_cannot_amplify_alerts() {
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(TRUTH);
    lab.start_daemon(TRUTH);
    lab.scanner_packet("198.51.100.2", "before");
    lab.until("the control scanner to be banned", || {
        lab.banned(TRUTH).contains(&"198.51.100.2/32".to_string())
    });
    let script = "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.51.100.7',5070))\nfor i in range(3000):\n  s.sendto(b'OPTIONS sip:100@x SIP/2.0\\r\\nVia: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK%d\\r\\nFrom: <sip:100@x>;tag=1\\r\\nTo: <sip:100@x>\\r\\nCall-ID: f%d@x\\r\\nCSeq: 1 OPTIONS\\r\\nUser-Agent: friendly-scanner\\r\\nContent-Length: 0\\r\\n\\r\\n' % (i, i),('198.51.100.1',5060))\n  if i % 100 == 99: time.sleep(0.01)\n";
    let out = lab.exec(&lab.peer, &["python3", "-c", script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = || -> serde_json::Value {
        serde_json::from_slice(&lab.voipwall_ctl(&["--json", "status"]).stdout).unwrap_or_default()
    };
    lab.until("the forged packets to reach detection", || {
        status()["engine"]["events"].as_u64().unwrap_or(0) >= 2_500
    });
    let st = status();
    let folded = st["engine"]["alerts_folded"].as_u64().unwrap_or(0);
    let log = std::fs::read_to_string(lab.dir.join("daemon.log")).unwrap_or_default();
    let warn_lines = log
        .lines()
        .filter(|l| l.contains("Alert") && l.contains("198.51.100.7"))
        .count();
    let events = lab.voipwall_ctl(&["--json", "events", "--limit", "10000"]);
    let events = String::from_utf8_lossy(&events.stdout);
    let alert_rows = events
        .lines()
        .filter(|l| l.contains("\"alert\"") && l.contains("198.51.100.7"))
        .count();
    eprintln!(
        "3,000 forged packets: {warn_lines} alert lines, {alert_rows} alert events, {folded} folded; counters {}",
        st["engine"]
    );
    assert!(warn_lines <= 3, "{warn_lines} alert lines");
    assert!(alert_rows <= 3, "{alert_rows} alert events");
    assert!(folded >= 2_400, "{folded} folded");
    assert!(
        events.contains("198.51.100.2"),
        "the earlier ban's event was flushed"
    );
}

/// Issue 20 (foundation): one effect path for every runtime verb. The same
/// verbs, through the CLI without a daemon and through the daemon, leave the
/// same kernel sets (elements and, to the minute, their time left), the same
/// store rows, the same audit lines and the same events. `extend` sets the
/// time left and never shortens a ban; `unban` of a network lifts the
/// stored bans inside it whichever way it came.
#[test]
fn every_runtime_verb_leaves_the_same_state_with_or_without_a_daemon() {
    let verbs: &[&[&str]] = &[
        &["ban", "203.0.113.7", "--for", "1h"],
        &["ban", "203.0.113.97", "--for", "2h"],
        &["ban", "203.0.113.98", "--for", "2h"],
        &["extend", "203.0.113.7", "--for", "3h"],
        &["extend", "203.0.113.97", "--for", "10m"],
        &["block", "198.51.100.16/28", "--for", "1h"],
        &["allow", "203.0.113.100", "--for", "1h"],
        &["unban", "203.0.113.96/28"],
        &["block", "198.51.100.16/28", "--delete"],
        &["ban", "2001:db8:5::7", "--for", "1h"],
    ];
    let state = |daemon: bool| -> Vec<String> {
        let mut lab = Lab::new();
        lab.apply(TRUTH);
        if daemon {
            lab.start_daemon(TRUTH);
        }
        for v in verbs {
            let out = lab.voipwall(TRUTH, v);
            assert!(out.status.success(), "{v:?}: {}", stderr(&out));
        }
        if daemon {
            // `bans` is answered once the store thread committed what came
            // before.
            let _ = lab.voipwall(TRUTH, &["bans"]);
        }
        let mut rows = Vec::new();
        for set in [
            "vw_ban_v4",
            "vw_banpfx_v6",
            "vw_bannet_v4",
            "vw_allowrt_v4",
            "vw_bannet_v6",
        ] {
            let j: serde_json::Value =
                serde_json::from_str(&lab.nft(&["-j", "list", "set", "inet", "voipwall", set]))
                    .expect("nft json");
            for e in j["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x["set"]["elem"].as_array())
                .flatten()
            {
                let el = &e["elem"];
                let minutes = el["expires"]
                    .as_u64()
                    .map_or(-1, |s| ((s + 30) / 60) as i64);
                let val = if el.is_object() {
                    el["val"].clone()
                } else {
                    e.clone()
                };
                rows.push(format!("kernel {set} {val} {minutes} min"));
            }
        }
        let db = lab.dir.join("state").join("state.db");
        let q = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nfor r in c.execute(\"SELECT target, rule, origin, reason, (end_ms - start_ms + 30000) / 60000, lifted_ms IS NOT NULL FROM bans ORDER BY target\"): print('store', *r)\nfor r in c.execute(\"SELECT actor, action, detail FROM audit WHERE action IN ('ban','unban','block','unblock','allow','disallow','extend') ORDER BY id\"): print('audit', *r)\nfor r in c.execute(\"SELECT kind, addr, detail FROM events WHERE kind IN ('ban','unban','block','unblock','allow','disallow','extend') ORDER BY id\"): print('event', *r)\n";
        let out = run(&["python3", "-c", q, db.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        rows.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
        rows
    };
    let direct = state(false);
    let through = state(true);
    assert_eq!(direct, through, "the CLI alone and the daemon disagree");
    let text = direct.join("\n");
    // extend: 203.0.113.7 now ends in 3 h; .97's longer ban was not shortened,
    // and it is lifted with the /28.
    assert!(
        text.contains("store 203.0.113.7/32 manual manual manual 180 0"),
        "{text}"
    );
    assert!(
        text.contains("kernel vw_ban_v4 \"203.0.113.7\" 180 min"),
        "{text}"
    );
    assert!(
        text.contains("store 203.0.113.97/32 manual manual manual 120 1"),
        "{text}"
    );
    assert!(!text.contains("203.0.113.98\" "), "{text}");
    assert!(
        text.contains("audit cli (uid 0) extend 203.0.113.7"),
        "{text}"
    );
    assert!(text.contains("event unban 203.0.113.96/28"), "{text}");
}

/// schemathesis (PyPI) fuzzes every operation of the served OpenAPI
/// document, at least 50 examples each, once with an admin token and once
/// with a read token: no 5xx, no status or body the document does not
/// declare.
#[test]
fn schemathesis_finds_no_answer_the_openapi_document_does_not_declare() {
    let st = run(&["sh", "-c", "command -v schemathesis"]);
    assert!(
        st.status.success(),
        "schemathesis is installed by scripts/deps"
    );
    let st = String::from_utf8_lossy(&st.stdout).trim().to_string();
    let mut lab = Lab::new();
    lab.listen();
    let policy = format!("{TRUTH}\n[api]\nlisten = [\"127.0.0.1:8787\"]\n");
    lab.apply(&policy);
    let token = |role: &str, name: &str| lab.api_token(&policy, role, name);
    let (admin, read) = (token("admin", "fuzz-admin"), token("read", "fuzz-read"));
    lab.start_daemon(&policy);
    for (role, t) in [("admin", &admin), ("read", &read)] {
        let report = lab.dir.join(format!("schemathesis-{role}.json"));
        let header = format!("Authorization: Bearer {t}");
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.fw])
            .arg(&st)
            .args(["run", "http://127.0.0.1:8787/api/openapi.json"])
            .args(["-H", &header])
            .args(["--max-examples", "60", "--seed", "20261206"])
            // Every check but one: a request valid by the schema may still
            // be refused (422: anti-lockout, an address that is not one),
            // which is the point of the plane. The coverage phase is left
            // out: it needs more than five minutes here.
            .args(["--checks", "all", "--continue-on-failure"])
            .args(["--exclude-checks", "positive_data_acceptance"])
            // An endless stream: each case would wait for the timeout. The
            // HTTP API test reads it.
            .args(["--exclude-path", "/api/v1/events/stream"])
            .args(["--request-timeout", "15"])
            .args(["--phases", "examples,fuzzing"])
            .arg("--suppress-health-check=all")
            .arg("--report-junit-path")
            .arg(&report)
            .arg("--report=junit")
            .env("NO_COLOR", "1")
            // Its example database goes with the lab.
            .current_dir(&lab.dir)
            .output()
            .expect("run schemathesis");
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "schemathesis ({role}): {}",
            text.lines().last().unwrap_or("")
        );
        assert!(
            out.status.success(),
            "schemathesis with the {role} token:\n{text}\n{}",
            stderr(&out)
        );
        // It tested every operation (a document it could not read would
        // pass with nothing tested).
        let count = |key: &str| -> usize {
            let rest = text.split(key).nth(1).unwrap_or_default().trim_start();
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            n.parse().unwrap_or(0)
        };
        let operations = count("Tested: ");
        assert!(operations >= 14, "{text}");
        assert!(text.contains(" passed"), "{text}");
    }
    // The daemon outlived it.
    let out = lab.voipwall(&policy, &["--json", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Issue 20: the HTTP API, with traffic. No token → 401; a read token may
/// read, not change (403); an admin token's ban is dropped by the kernel,
/// audited as `api:<name>` and offered to a CrowdSec bouncer on the
/// decisions stream, and its unban is the stream's `deleted`; a revoked
/// token stops working at once.
#[test]
fn the_http_api_bans_through_the_one_plane_with_tokens_by_role() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = format!("{TRUTH}\n[api]\nlisten = [\"127.0.0.1:8787\"]\n");
    lab.apply(&policy);
    let token = |role: &str, name: &str| lab.api_token(&policy, role, name);
    let (admin, read, bouncer) = (
        token("admin", "ops"),
        token("read", "grafana"),
        token("bouncer", "edge"),
    );
    lab.start_daemon(&policy);
    // (code, body) of one request from inside the firewall's namespace.
    let http = |method: &str, path: &str, auth: Option<(&str, &str)>, body: Option<&str>| {
        let h = auth.map(|(k, v)| format!("{k}: {v}"));
        let opts: Vec<&str> = h.iter().flat_map(|h| ["-H", h.as_str()]).collect();
        let url = format!("http://127.0.0.1:8787{path}");
        lab.curl(&lab.fw, method, &url, &opts, body)
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let (admin_h, read_h) = (bearer(&admin), bearer(&read));
    assert_eq!(http("GET", "/api/v1/status", None, None).0, "401");
    let (code, body) = http(
        "GET",
        "/api/v1/status",
        Some(("Authorization", &read_h)),
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"mode\":\"enforce\""), "{body}");
    let ban = r#"{"target":"203.0.113.7","duration":"1h","reason":"from the api"}"#;
    let (code, body) = http(
        "POST",
        "/api/v1/bans",
        Some(("Authorization", &read_h)),
        Some(ban),
    );
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("application/problem+json") || body.contains("\"status\":403"),
        "{body}"
    );
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["pass"]);
    let huge = format!(
        "{{\"target\":\"203.0.113.7\",\"reason\":\"{}\"}}",
        "x".repeat(80_000)
    );
    let (code, _) = http(
        "POST",
        "/api/v1/bans",
        Some(("Authorization", &admin_h)),
        Some(&huge),
    );
    assert_eq!(code, "413", "a body over 64 KiB is refused");
    // A read token follows the events as Server-Sent Events while the ban
    // is made: the ban arrives on the open stream.
    let sse = Command::new("ip")
        .args(["netns", "exec", &lab.fw, "curl", "-sN", "-m", "6", "-H"])
        .arg(format!("Authorization: {read_h}"))
        .arg("http://127.0.0.1:8787/api/v1/events/stream?limit=0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(700));
    let (code, body) = http(
        "POST",
        "/api/v1/bans",
        Some(("Authorization", &admin_h)),
        Some(ban),
    );
    assert_eq!(code, "200", "{body}");
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["drop"]);
    let sse = sse.wait_with_output().expect("curl");
    let sse = String::from_utf8_lossy(&sse.stdout);
    assert!(
        sse.contains("event: ban") && sse.contains("\"addr\":\"203.0.113.7\""),
        "the stream carried the ban: {sse}"
    );
    // A protected address is refused (the same plane as the CLI).
    let (code, body) = http(
        "POST",
        "/api/v1/bans",
        Some(("Authorization", &admin_h)),
        Some(r#"{"target":"198.51.100.7"}"#),
    );
    assert_eq!(code, "422", "{body}");
    assert!(body.contains("management"), "{body}");
    let (code, body) = http(
        "GET",
        "/v1/decisions/stream?startup=true",
        Some(("X-Api-Key", &bouncer)),
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains("\"value\":\"203.0.113.7\"") && body.contains("\"scope\":\"Ip\""),
        "{body}"
    );
    // Live mode and the plain list.
    let (code, body) = http(
        "GET",
        "/v1/decisions?ip=203.0.113.7",
        Some(("X-Api-Key", &bouncer)),
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"value\":\"203.0.113.7\""), "{body}");
    let (code, body) = http(
        "GET",
        "/v1/decisions?ip=203.0.113.9",
        Some(("X-Api-Key", &bouncer)),
        None,
    );
    assert_eq!((code.as_str(), body.as_str()), ("200", "null"));
    let (code, body) = http(
        "GET",
        "/v1/banlist.txt",
        Some(("X-Api-Key", &bouncer)),
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert!(body.lines().any(|l| l == "203.0.113.7"), "{body}");
    assert_eq!(
        http(
            "GET",
            "/api/v1/status",
            Some(("Authorization", &bearer(&bouncer))),
            None
        )
        .0,
        "403",
        "a bouncer token reads the decisions only"
    );
    let (code, body) = http(
        "DELETE",
        "/api/v1/bans/203.0.113.7",
        Some(("Authorization", &admin_h)),
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["pass"]);
    let (_, body) = http(
        "GET",
        "/v1/decisions/stream",
        Some(("X-Api-Key", &bouncer)),
        None,
    );
    assert!(
        body.contains("\"deleted\":[") && body.contains("203.0.113.7"),
        "{body}"
    );
    let db = lab.dir.join("state").join("state.db");
    let q = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nfor r in c.execute(\"SELECT actor, action, detail FROM audit ORDER BY id\"): print(*r)\n";
    let audit = String::from_utf8_lossy(&run(&["python3", "-c", q, db.to_str().unwrap()]).stdout)
        .into_owned();
    assert!(
        audit.contains("api:ops ban 203.0.113.7") && audit.contains("api:ops unban 203.0.113.7"),
        "{audit}"
    );
    let (code, body) = http(
        "GET",
        "/api/v1/generations",
        Some(("Authorization", &read_h)),
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"in_force\":true"), "{body}");
    let (code, body) = http("GET", "/metrics", Some(("Authorization", &read_h)), None);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("voipwall_active_bans "), "{body}");
    // Runtime block and explain, through the same plane.
    let (code, body) = http(
        "POST",
        "/api/v1/block",
        Some(("Authorization", &admin_h)),
        Some(r#"{"target":"203.0.113.100","duration":"1h"}"#),
    );
    assert_eq!(code, "200", "{body}");
    assert_eq!(lab.probe(&[("203.0.113.100", "udp/5060")]), vec!["drop"]);
    let (code, body) = http(
        "DELETE",
        "/api/v1/block/203.0.113.100",
        Some(("Authorization", &admin_h)),
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert_eq!(lab.probe(&[("203.0.113.100", "udp/5060")]), vec!["pass"]);
    let (code, body) = http(
        "GET",
        "/api/v1/explain/203.0.113.7",
        Some(("Authorization", &read_h)),
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains("\"stored_bans\"") && body.contains("from the api"),
        "the stored ban with its reason: {body}"
    );
    // The control socket says who asks, never the request: a forged actor
    // is audited as the CLI.
    let forge = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(b'{\"cmd\":\"runtime\",\"verb\":\"ban\",\"targets\":[\"203.0.113.2\"],\"seconds\":60,\"actor\":\"api:forged\",\"force\":true}\\n')\nprint(s.recv(4096).decode())\n";
    let out = run(&[
        "python3",
        "-c",
        forge,
        lab.dir.join("sock").to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let audit = String::from_utf8_lossy(&run(&["python3", "-c", q, db.to_str().unwrap()]).stdout)
        .into_owned();
    assert!(
        audit.contains("cli (uid 0) ban 203.0.113.2") && !audit.contains("api:forged"),
        "{audit}"
    );
    // 140 connections (over the cap of 128) trickling a request a byte
    // every 2 s cannot keep a reader out: a connection with no answer for
    // 15 s is closed, however much it trickles.
    let mut idle = Command::new("ip")
        .args(["netns", "exec", &lab.fw, "python3", "-c"])
        .arg("import socket,time\ncs=[socket.create_connection(('127.0.0.1',8787)) for _ in range(140)]\nprint('open',flush=True)\nreq=b'GET /api/v1/status HTTP/1.1\\r\\nHost: x\\r\\n'\nfor i in range(13):\n  for c in cs:\n    try: c.send(req[i:i+1])\n    except OSError: pass\n  time.sleep(2)\n")
        .stdout(Stdio::piped())
        .spawn()
        .expect("idle clients");
    await_line(&mut idle, "open", "idle clients");
    let t = Instant::now();
    let mut args = vec![
        "curl",
        "-s",
        "-m",
        "40",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
    ];
    let h = format!("Authorization: {read_h}");
    args.push(&h);
    args.push("http://127.0.0.1:8787/api/v1/status");
    let code = String::from_utf8_lossy(&lab.exec(&lab.fw, &args).stdout).into_owned();
    let _ = idle.kill();
    let _ = idle.wait();
    assert_eq!(code, "200", "a reader behind 140 trickling connections");
    eprintln!(
        "answered {:?} behind 140 trickling connections",
        t.elapsed()
    );
    let out = lab.voipwall(&policy, &["token", "revoke", "ops"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        http(
            "GET",
            "/api/v1/status",
            Some(("Authorization", &admin_h)),
            None
        )
        .0,
        "401"
    );
}

/// Issue 20: the API on the network serves HTTPS with the operator's
/// certificate (`tls_cert`, `tls_key`): a client in the peer namespace that
/// trusts it gets answers; plain HTTP gets nothing. Through it, a posted
/// policy is checked (every error with its line and column, nothing
/// applied), a generation's diff is read, the ruleset is rolled back to a
/// chosen generation (`rollback --to N`: the kernel runs it again) and a
/// confirm with nothing pending is a 409.
#[test]
fn the_api_serves_https_checks_policies_and_rolls_back_generations() {
    let mut lab = Lab::new();
    lab.listen();
    let (cert, key) = (lab.dir.join("api.crt"), lab.dir.join("api.key"));
    let out = run(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=voipwall-test",
        "-addext",
        "subjectAltName=IP:198.51.100.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let api = format!(
        "\n[api]\nlisten = [\"198.51.100.1:8787\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let granted = TRUTH.replace(
        "services = [\"sip\"]",
        "services = [\"sip\", \"voipwall-api\"]",
    );
    // Generation 1 without SSH for the internet, generation 2 with it.
    let first = granted.clone() + &api;
    lab.apply(&first);
    let policy = granted.replace(
        "services = [\"sip\", \"voipwall-api\"]",
        "services = [\"sip\", \"voipwall-api\", \"ssh\"]",
    ) + &api;
    lab.apply(&policy);
    let auth = format!(
        "Authorization: Bearer {}",
        lab.api_token(&policy, "admin", "ops")
    );
    lab.start_daemon(&policy);
    let https = |method: &str, path: &str, body: Option<&str>| -> (String, String) {
        let url = format!("https://198.51.100.1:8787{path}");
        let opts = ["--cacert", cert.to_str().unwrap(), "-H", &auth];
        lab.curl(&lab.peer, method, &url, &opts, body)
    };
    let (code, body) = https("GET", "/api/v1/status", None);
    assert_eq!(code, "200", "{body}");
    // Plain HTTP on the same port: no answer.
    let out = lab.exec(
        &lab.peer,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://198.51.100.1:8787/api/v1/status",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
    // A policy with two errors: both, located.
    let (code, body) = https(
        "POST",
        "/api/v1/policy/check",
        Some("[zones.internet]\nservices = [\"sipp\"]\n[bans]\ndefault_ttl = \"soon\"\n"),
    );
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ok"], false, "{body}");
    let locations: Vec<&str> = v["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .filter(|d| d["severity"] == "error")
        .filter_map(|d| d["location"].as_str())
        .collect();
    assert!(
        locations.contains(&"policy.toml:2:13")
            && locations.iter().any(|l| l.starts_with("policy.toml:4:")),
        "{body}"
    );
    // The newest generation's diff is the SSH grant.
    let out = lab.voipwall(&policy, &["--json", "generations"]);
    let gens: serde_json::Value = serde_json::from_slice(&out.stdout).expect("generations");
    let (new, old) = (
        gens[0]["id"].as_i64().expect("id"),
        gens[1]["id"].as_i64().expect("id"),
    );
    let (code, body) = https("GET", &format!("/api/v1/generations/{new}/diff"), None);
    assert_eq!(code, "200", "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).expect("diff");
    assert_eq!(d["against"], old, "{body}");
    assert!(
        d["added"].to_string().contains("tcp dport { 22 }"),
        "{body}"
    );
    let ssh = || lab.probe(&[("203.0.113.7", "tcp/22")]);
    assert_eq!(ssh(), vec!["pass"], "the newest generation grants SSH");
    let (code, body) = https(
        "POST",
        "/api/v1/generations/rollback",
        Some(&format!("{{\"to\":{old}}}")),
    );
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains(&format!("generation {old} is applied")),
        "{body}"
    );
    assert_eq!(ssh(), vec!["drop"], "the older generation runs again");
    let (code, body) = https("POST", "/api/v1/generations/rollback", Some(r#"{"to":99}"#));
    assert_eq!(code, "409", "{body}");
    let (code, body) = https("POST", "/api/v1/generations/confirm", None);
    assert_eq!(code, "409", "{body}");
    let out = lab.voipwall(&policy, &["--json", "generations"]);
    let gens = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(gens.contains("\"rolled-back\""), "{gens}");
    let db = lab.dir.join("state").join("state.db");
    let q = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nfor r in c.execute(\"SELECT actor, action, detail FROM audit ORDER BY id\"): print(*r)\n";
    let audit = String::from_utf8_lossy(&run(&["python3", "-c", q, db.to_str().unwrap()]).stdout)
        .into_owned();
    assert!(
        audit.contains(&format!("api:ops rollback generation {new}")),
        "{audit}"
    );
    // Two generations on (SSH again, then SSH and HTTP), back to `old` in
    // one step: the kernel runs it and the store says so (the generation
    // in force is `old`, the two newer ones are rolled back).
    lab.apply(&policy);
    let third = policy.replace("\"ssh\"]", "\"ssh\", \"http\"]");
    assert_ne!(third, policy);
    lab.apply(&third);
    assert_eq!(ssh(), vec!["pass"]);
    let (code, body) = https(
        "POST",
        "/api/v1/generations/rollback",
        Some(&format!("{{\"to\":{old}}}")),
    );
    assert_eq!(code, "200", "{body}");
    assert_eq!(ssh(), vec!["drop"], "two steps back");
    let (code, body) = https("GET", "/api/v1/generations", None);
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("generations");
    let rows = v["generations"].as_array().expect("rows");
    let in_force: Vec<i64> = rows
        .iter()
        .filter(|g| g["in_force"] == true)
        .filter_map(|g| g["id"].as_i64())
        .collect();
    assert_eq!(in_force, vec![old], "{body}");
    assert!(
        rows.iter()
            .filter(|g| g["id"].as_i64() > Some(old))
            .all(|g| g["status"] != "applied" && g["status"] != "confirmed"),
        "{body}"
    );
    // Listening opens no port: a generation whose zone does not grant
    // `voipwall-api` drops the same client.
    let closed = policy.replace("\"voipwall-api\", ", "");
    assert_ne!(closed, policy);
    lab.apply(&closed);
    let (code, _) = lab.curl(
        &lab.peer,
        "GET",
        "https://198.51.100.1:8787/api/v1/status",
        &["-m", "3", "--cacert", cert.to_str().unwrap(), "-H", &auth],
        None,
    );
    assert_eq!(code, "000", "no zone grants voipwall-api");
}

/// Issue 20: Debian's crowdsec-firewall-bouncer in the peer namespace,
/// pointed at voipwall's decisions stream (no CrowdSec installed): a ban
/// made on voipwall is in the bouncer's nft set within its update interval,
/// and gone after the unban.
#[test]
fn a_crowdsec_firewall_bouncer_enforces_voipwalls_bans() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = TRUTH.replace(
        "services = [\"sip\"]",
        "services = [\"sip\", \"voipwall-api\"]",
    ) + "\n[api]\nlisten = [\"198.51.100.1:8787\"]\ninsecure_http = true\n";
    lab.apply(&policy);
    let key = lab.api_token(&policy, "bouncer", "edge");
    lab.start_daemon(&policy);
    let cfg = lab.dir.join("bouncer.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mode: nftables\nupdate_frequency: 1s\ndaemonize: false\nlog_mode: stdout\nlog_level: info\napi_url: http://198.51.100.1:8787/\napi_key: {key}\ninsecure_skip_verify: false\ndisable_ipv6: true\ndeny_action: DROP\ndeny_log: false\nsupported_decisions_types:\n  - ban\nblacklists_ipv4: crowdsec-blacklists\nblacklists_ipv6: crowdsec6-blacklists\nnftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    chain: crowdsec-chain\n  ipv6:\n    enabled: false\n    set-only: false\n    table: crowdsec6\n    chain: crowdsec6-chain\n"
        ),
    )
    .expect("bouncer config");
    let log = std::fs::File::create(lab.dir.join("bouncer.log")).expect("log");
    let mut bouncer = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.peer,
            "crowdsec-firewall-bouncer",
            "-c",
        ])
        .arg(&cfg)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("crowdsec-firewall-bouncer (apt-get install crowdsec-firewall-bouncer)");
    let _ = bouncer.try_wait();
    let _stop = Reap(bouncer);
    let held = || {
        let out = lab.exec(
            &lab.peer,
            &[
                "nft",
                "list",
                "set",
                "ip",
                "crowdsec",
                "crowdsec-blacklists",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bouncer_log = || std::fs::read_to_string(lab.dir.join("bouncer.log")).unwrap_or_default();
    // Its first (startup) pull done, and one more: the ban arrives as a delta.
    let until = Instant::now() + Duration::from_secs(20);
    while !lab
        .exec(&lab.peer, &["nft", "list", "table", "ip", "crowdsec"])
        .status
        .success()
    {
        assert!(
            Instant::now() < until,
            "the bouncer did not start\n{}",
            bouncer_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let out = lab.voipwall(&policy, &["ban", "203.0.113.77", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(20);
    while !held().contains("203.0.113.77") {
        assert!(
            Instant::now() < until,
            "the bouncer never held the ban\n{}",
            bouncer_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("in the bouncer's set {:?} after the ban", t0.elapsed());
    let out = lab.voipwall(&policy, &["unban", "203.0.113.77"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t1 = Instant::now();
    let until = t1 + Duration::from_secs(20);
    while held().contains("203.0.113.77") {
        assert!(
            Instant::now() < until,
            "the bouncer kept the lifted ban\n{}",
            bouncer_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "gone from the bouncer's set {:?} after the unban",
        t1.elapsed()
    );
}

/// Issue 20: a real Prometheus (Debian's) scrapes `/metrics` with a read
/// token; a PromQL query through its HTTP API shows the ban counter rising
/// with an attack in the lab.
#[test]
fn prometheus_scrapes_the_ban_counter_rising_with_an_attack() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = format!("{TRUTH}\n[api]\nlisten = [\"127.0.0.1:8787\"]\n");
    lab.apply(&policy);
    let out = lab.voipwall(
        &policy,
        &[
            "--json",
            "token",
            "create",
            "--role",
            "read",
            "--name",
            "prometheus",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token json");
    let token = v["token"].as_str().expect("token").to_string();
    lab.start_daemon(&policy);
    let cfg = lab.dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: voipwall\n    authorization:\n      type: Bearer\n      credentials: {token}\n    static_configs:\n      - targets: ['127.0.0.1:8787']\n"
        ),
    )
    .expect("prometheus config");
    let log = std::fs::File::create(lab.dir.join("prometheus.log")).expect("log");
    let tsdb = lab.dir.join("tsdb");
    let prom = Command::new("ip")
        .args(["netns", "exec", &lab.fw, "prometheus"])
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .args(["--web.listen-address=127.0.0.1:9090"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("prometheus (apt-get install prometheus)");
    let _stop = Reap(prom);
    let query = |q: &str| -> Option<f64> {
        let q = format!("query={q}");
        let out = lab.exec(
            &lab.fw,
            &[
                "curl",
                "-s",
                "-m",
                "5",
                "-G",
                "--data-urlencode",
                &q,
                "http://127.0.0.1:9090/api/v1/query",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let prom_log = || std::fs::read_to_string(lab.dir.join("prometheus.log")).unwrap_or_default();
    let until = Instant::now() + Duration::from_secs(30);
    let before = loop {
        if let Some(v) = query("voipwall_bans_total") {
            break v;
        }
        assert!(
            Instant::now() < until,
            "prometheus never scraped voipwall\n{}",
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for (i, src) in ["203.0.113.7", "198.51.100.2"].iter().enumerate() {
        lab.scanner_packet(src, &format!("prom{i}"));
    }
    let until = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let v = query("voipwall_bans_total").unwrap_or(before);
        if v >= before + 2.0 {
            break v;
        }
        assert!(
            Instant::now() < until,
            "the scraped counter stayed at {v}\n{}",
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("voipwall_bans_total through PromQL: {before} → {after}");
    assert_eq!(query("up"), Some(1.0), "the scrape is healthy");
    // By rule and origin; and the banned source's next packet is counted
    // by the kernel as a drop for a ban.
    assert!(
        query(r#"sum(voipwall_bans_issued_total{origin="detect"})"#).unwrap_or(0.0) >= 2.0,
        "bans by rule and origin"
    );
    // The apply the lab made (CLI) is timed in the store.
    let took = query("voipwall_apply_duration_seconds").unwrap_or(0.0);
    assert!(took > 0.0 && took < 30.0, "apply duration {took}");
    lab.scanner_packet("203.0.113.7", "prom-again");
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let v = query(r#"voipwall_kernel_dropped_packets_total{reason="banned"}"#).unwrap_or(0.0);
        if v >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the kernel's drop counter never showed the banned packet ({v})\n{}",
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The Grafana dashboard (contrib/grafana): every query parses in this
    // Prometheus and every metric it names is scraped.
    let dash = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/grafana/voipwall.json"),
    )
    .expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&dash).expect("dashboard JSON");
    let series = |m: &str| -> bool {
        let q = format!("match[]={m}");
        let out = lab.exec(
            &lab.fw,
            &[
                "curl",
                "-s",
                "-m",
                "5",
                "-G",
                "--data-urlencode",
                &q,
                "http://127.0.0.1:9090/api/v1/series",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["data"].as_array().is_some_and(|a| !a.is_empty())
    };
    let mut exprs = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let e = t["expr"].as_str().expect("expr").replace("$instance", ".*");
            let q = format!("query={e}");
            let out = lab.exec(
                &lab.fw,
                &[
                    "curl",
                    "-s",
                    "-m",
                    "5",
                    "-G",
                    "--data-urlencode",
                    &q,
                    "http://127.0.0.1:9090/api/v1/query",
                ],
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            assert_eq!(v["status"], "success", "{e}: {v}");
            for m in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if m.starts_with("voipwall_") {
                    assert!(series(m), "the dashboard's {m} is not scraped");
                }
            }
            exprs += 1;
        }
    }
    assert!(exprs >= 10);
}

/// Issue 20: an API address the host does not have yet (the unit starts
/// before the network) does not stop the daemon: `status` shows it
/// retrying, and once the address appears the API answers on it.
#[test]
fn an_api_address_that_cannot_be_bound_yet_is_retried_and_shown_in_status() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = TRUTH.replace(
        "services = [\"sip\"]",
        "services = [\"sip\", \"voipwall-api\"]",
    ) + "\n[api]\nlisten = [\"127.0.0.1:8787\", \"192.0.2.1:8787\"]\ninsecure_http = true\n";
    lab.apply(&policy);
    let auth = format!(
        "Authorization: Bearer {}",
        lab.api_token(&policy, "read", "grafana")
    );
    lab.start_daemon(&policy);
    let listener = |state: &str| -> bool {
        let out = lab.voipwall(&policy, &["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["api"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["listen"] == "192.0.2.1:8787" && l["state"] == state)
    };
    assert!(listener("retrying"), "192.0.2.1 is not on the host yet");
    let out = lab.voipwall(&policy, &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("api 192.0.2.1:8787: retrying"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let get = |url: &str| -> String {
        lab.curl(&lab.fw, "GET", url, &["-m", "5", "-H", &auth], None)
            .0
    };
    assert_eq!(
        get("http://127.0.0.1:8787/api/v1/status"),
        "200",
        "the other listener serves meanwhile"
    );
    let out = lab.exec(&lab.fw, &["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let until = Instant::now() + Duration::from_secs(15);
    while !listener("listening") {
        assert!(Instant::now() < until, "the address was never bound");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get("http://192.0.2.1:8787/api/v1/status"), "200");
}

/// Issue 20: a source guessing API tokens is banned by voipwall itself
/// (rule `api-auth`, at the tenth wrong token within a minute); its
/// traffic is then dropped by the kernel. A missing token is not a guess.
#[test]
fn a_source_guessing_api_tokens_is_banned() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = TRUTH.replace(
        "services = [\"sip\"]",
        "services = [\"sip\", \"voipwall-api\"]",
    ) + "\n[api]\nlisten = [\"198.51.100.1:8787\"]\ninsecure_http = true\n";
    lab.apply(&policy);
    lab.start_daemon(&policy);
    let get = |auth: Option<&str>| -> String {
        let h = auth.map(|t| format!("Authorization: Bearer {t}"));
        let mut opts = vec!["-m", "3", "--interface", "198.51.100.2"];
        opts.extend(h.iter().flat_map(|h| ["-H", h.as_str()]));
        let url = "http://198.51.100.1:8787/api/v1/status";
        lab.curl(&lab.peer, "GET", url, &opts, None).0
    };
    for _ in 0..12 {
        assert_eq!(get(None), "401");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !lab.banned(&policy)
            .iter()
            .any(|t| t.starts_with("198.51.100.2/")),
        "requests without a token are not guesses"
    );
    let mut codes = Vec::new();
    for i in 0..12 {
        codes.push(get(Some(&format!("vwt_guess{i}"))));
    }
    lab.until("the token guesser to be banned", || {
        lab.banned(&policy).contains(&"198.51.100.2/32".to_string())
    });
    let bans = lab.voipwall(&policy, &["--json", "bans"]);
    assert!(String::from_utf8_lossy(&bans.stdout).contains("api-auth"));
    assert!(
        codes.iter().filter(|c| *c == "401").count() >= 10,
        "{codes:?}"
    );
    assert_eq!(lab.probe(&[("198.51.100.2", "udp/5060")]), vec!["drop"]);
    eprintln!("answers to the 12 guesses: {codes:?}");
}

/// Issue 21: the drop log. A source's packets to closed ports are refused
/// by its zone; `voipwall drops` names the source with the zone and the
/// port, a banned source's packets are named with their ban set, and the
/// kernel's sample rate holds: 2,000 refused datagrams as fast as the
/// helper sends them give about the rate's burst, not thousands.
#[test]
fn the_drop_log_names_refused_sources_by_zone_and_port_and_holds_its_rate() {
    let policy = r#"
[interfaces]
vw0 = "internet"

[zones.internet]
services = ["sip"]

[zones.local]
services = ["ssh"]

[drops]
rate = 5

[api]
listen = ["127.0.0.1:8787"]
"#;
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(policy);
    let rules = lab.nft(&["list", "chain", "inet", "voipwall", "vw_zone_internet"]);
    assert!(
        rules.contains("log prefix \"vw:zone:internet\" group 6"),
        "{rules}"
    );
    lab.start_daemon(policy);
    // Two refused ports from one source (nothing grants them), one SIP
    // probe that passes (and must not be in the log).
    let got = lab.probe(&[
        ("203.0.113.7", "udp/9999"),
        ("203.0.113.7", "tcp/23"),
        ("203.0.113.7", "tcp/22"),
        ("203.0.113.2", "udp/5060"),
    ]);
    assert_eq!(got, vec!["drop", "drop", "drop", "pass"]);
    let report = |lab: &Lab| -> serde_json::Value {
        let out = lab.voipwall_ctl(&["--json", "drops"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("drops json")
    };
    let mut r = serde_json::Value::Null;
    lab.until("the drop log names 203.0.113.7", || {
        r = report(&lab);
        r["sources"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["src"] == "203.0.113.7" && s["kind"] == "zone")
        })
    });
    let src = r["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["src"] == "203.0.113.7")
        .unwrap()
        .clone();
    assert_eq!(src["name"], "internet", "{r}");
    assert!(src["samples"].as_u64().unwrap() >= 2, "{r}");
    let ports: Vec<String> = r["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}/{}", p["proto"].as_str().unwrap(), p["port"]))
        .collect();
    assert!(
        ports.contains(&"udp/9999".to_string()) && ports.contains(&"tcp/23".to_string()),
        "{ports:?}"
    );
    assert!(
        !r["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["src"] == "203.0.113.2"),
        "an accepted SIP packet is not a drop: {r}"
    );
    // The text form names the same.
    let text = String::from_utf8_lossy(&lab.voipwall_ctl(&["drops"]).stdout).into_owned();
    assert!(
        text.contains("203.0.113.7") && text.contains("zone internet"),
        "{text}"
    );
    // The API answers the same report; the metrics count samples by zone
    // and service (ssh is granted elsewhere, so it has a name here).
    let token = lab.api_token(policy, "read", "drops");
    let auth = format!("Authorization: Bearer {token}");
    let (code, body) = lab.curl(
        &lab.fw,
        "GET",
        "http://127.0.0.1:8787/api/v1/drops?minutes=5&top=3",
        &["-H", &auth],
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("203.0.113.7"), "{body}");
    let (code, body) = lab.curl(
        &lab.fw,
        "GET",
        "http://127.0.0.1:8787/metrics",
        &["-H", &auth],
        None,
    );
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains(
            r#"voipwall_drop_log_samples_total{kind="zone",name="internet",service="ssh"} 1"#
        ),
        "{body}"
    );
    // A banned source is sampled under its ban set.
    let out = lab.voipwall(policy, &["ban", "203.0.113.100", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.probe(&[("203.0.113.100", "udp/5060")]), vec!["drop"]);
    lab.until("the ban's drop is sampled", || {
        report(&lab)["sources"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["src"] == "203.0.113.100" && s["kind"] == "ban" && s["name"] == "vw_ban_v4"
            })
        })
    });
    // --follow prints each new sample as it comes.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .env("VOIPWALL_SOCKET", lab.dir.join("sock"))
        .args(["--json", "drops", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("drops --follow");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/4444")]), vec!["drop"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = follow.kill();
    let out = follow.wait_with_output().expect("follow output");
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        lines
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["src"] == "203.0.113.7" && v["port"] == 4444),
        "--follow did not print the new sample: {lines}"
    );
    // The rate: 2,000 refused datagrams in well under a second.
    let before = report(&lab)["samples"].as_u64().unwrap();
    let t = Instant::now();
    let out = lab.exec(
        &lab.peer,
        &[
            "python3",
            &helper(),
            "flood",
            "203.0.113.2",
            FW_V4,
            "9999",
            "2000",
        ],
    );
    let took = t.elapsed();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000");
    std::thread::sleep(Duration::from_millis(700));
    let after = report(&lab)["samples"].as_u64().unwrap();
    // Burst 5, then 5 a second while the flood and the wait last.
    let allowed = 5 + 5 * (took.as_secs_f64() + 1.0).ceil() as u64;
    eprintln!(
        "2000 refused datagrams in {took:?}: {} samples (at most {allowed})",
        after - before
    );
    assert!(
        after > before && after - before <= allowed,
        "{before} -> {after}"
    );
    assert_eq!(report(&lab)["lost"], 0, "no sample lost to a full buffer");
}

/// Issue 21: notifications. A webhook receiver and an SMTP sink in the
/// peer namespace; three scanners banned within a minute make a ban storm
/// (`ban_storm = 3`): the receiver gets it signed (HMAC-SHA256 over
/// "<timestamp>.<body>" with the key from the file, checked by the
/// receiver), the sink gets the e-mail (that entry asks for storms only, so
/// it alone); the webhook was told the daemon started, and is told of a
/// rollback the CLI makes.
#[test]
fn a_ban_storm_reaches_a_signed_webhook_and_an_email() {
    let mut lab = Lab::new();
    let key = lab.dir.join("hook.key");
    std::fs::write(&key, "lab-secret-not-a-default\n").expect("key");
    let out_dir = lab.dir.join("sink");
    std::fs::create_dir_all(&out_dir).expect("sink dir");
    let policy = format!(
        r#"
[interfaces]
vw0 = "internet"

[zones.internet]
services = ["sip"]

[[notify]]
kind = "webhook"
url = "http://203.0.113.2:8099/voipwall"
secret_file = "{}"
ban_storm = 3

[[notify]]
kind = "email"
server = "203.0.113.2:2525"
tls = "none"
from = "voipwall@pbx.example.org"
to = ["ops@example.org"]
events = ["ban_storm"]
ban_storm = 3
"#,
        key.display()
    );
    let sink = Command::new("ip")
        .args(["netns", "exec", &lab.peer, "python3"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/notify_sink.py"))
        .args(["203.0.113.2", "8099", "2525"])
        .arg(&key)
        .arg(&out_dir)
        .spawn()
        .expect("notify sink");
    let _stop = Reap(sink);
    lab.until("the sink is ready", || out_dir.join("ready").exists());
    lab.apply(&policy);
    lab.start_daemon(&policy);
    let hooks = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(out_dir.join("webhook.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    lab.until("the webhook is told the daemon started", || {
        hooks().iter().any(|h| h["body"]["event"] == "started")
    });
    for (i, src) in ["203.0.113.7", "203.0.113.100", "198.18.5.5"]
        .iter()
        .enumerate()
    {
        lab.scanner_packet(src, &format!("storm{i}"));
    }
    lab.until("the webhook gets the ban storm", || {
        hooks().iter().any(|h| h["body"]["event"] == "ban_storm")
    });
    for h in hooks() {
        assert_eq!(
            h["verified"], true,
            "a notification failed its signature: {h}"
        );
    }
    let storm = hooks()
        .into_iter()
        .find(|h| h["body"]["event"] == "ban_storm")
        .unwrap();
    assert!(
        storm["body"]["summary"]
            .as_str()
            .unwrap()
            .contains("ban storm"),
        "{storm}"
    );
    lab.until("the SMTP sink gets the e-mail", || {
        out_dir.join("mail-1.txt").exists()
    });
    let mail = std::fs::read_to_string(out_dir.join("mail-1.txt")).unwrap();
    assert!(
        mail.contains("Subject: [voipwall] ban storm") && mail.contains("ops@example.org"),
        "{mail}"
    );
    // The e-mail entry asked for storms only: one e-mail, not the start.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!out_dir.join("mail-2.txt").exists());
    // A rollback (the CLI, another process) is told too: the notifier
    // reads the generations in the store.
    lab.apply(&policy);
    let out = lab.voipwall(&policy, &["rollback"]);
    assert!(out.status.success(), "{}", stderr(&out));
    lab.until("the webhook is told of the rollback", || {
        hooks()
            .iter()
            .any(|h| h["body"]["event"] == "apply" && h["verified"] == true)
    });
}

/// A WebDriver session in Debian's headless Chromium (through Debian's
/// chromedriver), both in namespace `ns`; every call is plain WebDriver
/// HTTP with curl. Quits and stops the driver when dropped.
struct Browser<'a> {
    lab: &'a Lab,
    driver: Child,
    session: String,
    shots: PathBuf,
}

const WEB_ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl<'a> Browser<'a> {
    fn start(lab: &'a Lab) -> Self {
        let driver = Command::new("ip")
            .args(["netns", "exec", &lab.fw, "chromedriver", "--port=9515"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)");
        let mut b = Self {
            lab,
            driver,
            session: String::new(),
            shots: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots"),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while b.call("GET", "/status", None)["value"]["ready"] != true {
            assert!(Instant::now() < until, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        let profile = lab.dir.join("chromium");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = b.call("POST", "/session", Some(&caps));
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        std::fs::create_dir_all(&b.shots).expect("screenshots dir");
        b
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> serde_json::Value {
        let text = body.map(ToString::to_string);
        let (code, out) = self.lab.curl(
            &self.lab.fw,
            method,
            &format!("http://127.0.0.1:9515{path}"),
            &["-H", "Content-Type: application/json", "-m", "60"],
            text.as_deref(),
        );
        serde_json::from_str(&out).unwrap_or_else(|_| serde_json::json!({"http": code, "raw": out}))
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn go(&self, url: &str) {
        let v = self.call(
            "POST",
            &self.s("/url"),
            Some(&serde_json::json!({ "url": url })),
        );
        assert!(v["value"].is_null(), "navigating to {url}: {v}");
    }

    fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)["value"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)["value"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(&serde_json::json!({"using": "css selector", "value": css})),
        );
        v["value"][WEB_ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{css}` on the page: {v}\n{}", self.source()))
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        let v = self.call(
            "POST",
            &self.s(&format!("/element/{e}/click")),
            Some(&serde_json::json!({})),
        );
        assert!(v["value"].is_null(), "clicking {css}: {v}");
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        let v = self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(&serde_json::json!({ "text": text })),
        );
        assert!(v["value"].is_null(), "typing into {css}: {v}");
    }

    fn cookie(&self, name: &str) -> String {
        self.call("GET", &self.s(&format!("/cookie/{name}")), None)["value"]["value"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Keeps the page as `target/screenshots/<name>.png`.
    fn shot(&self, name: &str) {
        let v = self.call("GET", &self.s("/screenshot"), None);
        let b64 = v["value"].as_str().expect("screenshot");
        let tmp = self.lab.dir.join(format!("{name}.b64"));
        std::fs::write(&tmp, b64).expect("b64");
        let png = self.shots.join(format!("{name}.png"));
        let out = Command::new("base64")
            .arg("-d")
            .arg(&tmp)
            .output()
            .expect("base64");
        std::fs::write(&png, out.stdout).expect("png");
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Issue 21: the dashboard, in Chromium. Log in with an admin token, see
/// the ban a real attack just caused, unban it from the page (the kernel
/// lets the address through again), roll back a generation from the page
/// (the port it granted is closed again), and a change without the CSRF
/// token is refused; a read session sees no change buttons, a bouncer token
/// cannot log in, and a logged-out session is gone.
#[test]
fn the_dashboard_in_chromium_unbans_and_rolls_back_with_csrf() {
    let base = r#"
[interfaces]
vw0 = "internet"

[zones.internet]
services = ["sip"]

[api]
listen = ["127.0.0.1:8787"]
"#;
    let with_ssh = base.replace("services = [\"sip\"]", "services = [\"sip\", \"ssh\"]");
    let mut lab = Lab::new();
    lab.listen();
    lab.apply(base);
    lab.apply(&with_ssh);
    let ssh = |lab: &Lab| lab.probe(&[("203.0.113.2", "tcp/22")]);
    assert_eq!(ssh(&lab), vec!["pass"], "the newest generation grants SSH");
    lab.start_daemon(&with_ssh);
    let admin = lab.api_token(&with_ssh, "admin", "ops");
    let read = lab.api_token(&with_ssh, "read", "viewer");
    let bouncer = lab.api_token(&with_ssh, "bouncer", "edge");
    let ui = "http://127.0.0.1:8787/ui";
    let b = Browser::start(&lab);
    // Nothing but the login page without a session.
    b.go(&format!("{ui}/bans"));
    assert!(b.url().ends_with("/ui/login"), "{}", b.url());
    b.type_in("input[name=token]", &admin);
    b.click("button[type=submit]");
    assert!(b.url().ends_with("/ui/"), "{}", b.url());
    assert!(b.source().contains("Bans now"), "{}", b.source());
    b.shot("dashboard-overview");
    // A real attack: a scanner's OPTIONS; the page shows its ban.
    lab.scanner_packet("203.0.113.7", "ui-scan");
    lab.until("the page shows the ban", || {
        b.go(&format!("{ui}/bans"));
        b.source().contains("203.0.113.7/32")
    });
    assert_eq!(lab.probe(&[("203.0.113.7", "udp/5060")]), vec!["drop"]);
    b.shot("dashboard-bans");
    b.go(&format!("{ui}/"));
    assert!(b.source().contains("scanner"), "the overview's top rules");
    b.shot("dashboard-overview-after-attack");
    // A change without the CSRF token, with the browser's own session.
    let cookie = format!("Cookie: vw_session={}", b.cookie("vw_session"));
    assert_eq!(cookie.len(), "Cookie: vw_session=".len() + 64, "{cookie}");
    let (code, _) = lab.curl(
        &lab.fw,
        "POST",
        &format!("{ui}/bans/unban"),
        &["-H", &cookie],
        Some("target=203.0.113.7%2F32"),
    );
    assert_eq!(code, "403", "an unban without the CSRF token");
    let (code, _) = lab.curl(
        &lab.fw,
        "POST",
        &format!("{ui}/bans/unban"),
        &["-H", &cookie],
        Some("target=203.0.113.7%2F32&csrf=00"),
    );
    assert_eq!(code, "403", "an unban with a wrong CSRF token");
    assert_eq!(
        lab.probe(&[("203.0.113.7", "udp/5060")]),
        vec!["drop"],
        "still banned"
    );
    // Unban from the page: the kernel lets it through.
    b.go(&format!("{ui}/bans"));
    b.click("tr[data-target=\"203.0.113.7/32\"] form.unban button");
    assert!(b.source().contains("Done."), "{}", b.source());
    assert_eq!(
        lab.probe(&[("203.0.113.7", "udp/5060")]),
        vec!["pass"],
        "unbanned from the page"
    );
    // The address page: explain and the timeline.
    b.go(&format!("{ui}/address/203.0.113.7"));
    let page = b.source();
    assert!(
        page.contains("scanner") && page.contains("Timeline"),
        "{page}"
    );
    b.shot("dashboard-address");
    // The zones × services matrix names the policy line.
    b.go(&format!("{ui}/zones"));
    assert!(b.source().contains("policy.toml:"), "{}", b.source());
    b.shot("dashboard-zones");
    // Roll back from the page to the generation before: SSH closes.
    b.go(&format!("{ui}/generations"));
    b.shot("dashboard-generations");
    let rows: Vec<i64> = b
        .source()
        .match_indices("data-generation=\"")
        .filter_map(|(i, m)| {
            b.source()[i + m.len()..]
                .split('"')
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect();
    let newest = *rows.iter().max().expect("generations");
    b.click(&format!(
        "tr[data-generation=\"{}\"] form.rollback button",
        newest - 1
    ));
    assert!(
        b.source()
            .contains(&format!("generation {} is applied", newest - 1)),
        "{}",
        b.source()
    );
    assert_eq!(ssh(&lab), vec!["drop"], "rolled back from the page");
    b.go(&format!("{ui}/drops"));
    b.shot("dashboard-drops");
    // A read session sees everything and changes nothing; a bouncer token
    // cannot log in.
    let login = |token: &str| {
        let jar = lab.dir.join(format!("jar-{}", &token[..12]));
        let (code, _) = lab.curl(
            &lab.fw,
            "POST",
            &format!("{ui}/login"),
            &["-c", jar.to_str().unwrap()],
            Some(&format!("token={token}")),
        );
        (code, jar)
    };
    let out = lab.voipwall(&with_ssh, &["ban", "203.0.113.100", "--for", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, jar) = login(&read);
    assert_eq!(code, "303");
    let (code, body) = lab.curl(
        &lab.fw,
        "GET",
        &format!("{ui}/bans"),
        &["-b", jar.to_str().unwrap()],
        None,
    );
    assert_eq!(code, "200");
    assert!(
        body.contains("203.0.113.100") && !body.contains("Unban") && body.contains("viewer"),
        "{body}"
    );
    let (code, admin_view) = lab.curl(
        &lab.fw,
        "GET",
        &format!("{ui}/bans"),
        &["-H", &cookie],
        None,
    );
    assert_eq!(code, "200");
    assert!(
        admin_view.contains("Unban"),
        "the admin's page has the button the read page lacks"
    );
    // The server refuses a read session's change even with its own valid
    // CSRF token (the missing button is not the only guard).
    let read_csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the read page's CSRF token")
        .to_string();
    let (code, _) = lab.curl(
        &lab.fw,
        "POST",
        &format!("{ui}/bans/unban"),
        &["-b", jar.to_str().unwrap()],
        Some(&format!("target=203.0.113.100&csrf={read_csrf}")),
    );
    assert_eq!(code, "403", "a read session's unban");
    assert_eq!(
        lab.probe(&[("203.0.113.100", "udp/5060")]),
        vec!["drop"],
        "still banned"
    );
    let (code, _) = login(&bouncer);
    assert_eq!(code, "403", "a bouncer token may not log in");
    // Logging out ends the session on the server.
    b.click("header form button");
    assert!(b.url().ends_with("/ui/login"), "{}", b.url());
    let (code, _) = lab.curl(
        &lab.fw,
        "GET",
        &format!("{ui}/bans"),
        &["-H", &cookie],
        None,
    );
    assert_eq!(code, "303", "the old cookie names no session");
    // Revoking a token ends its sessions at once.
    let (code, _) = lab.curl(
        &lab.fw,
        "GET",
        &format!("{ui}/bans"),
        &["-b", jar.to_str().unwrap()],
        None,
    );
    assert_eq!(code, "200", "the read session is still alive");
    let out = lab.voipwall(&with_ssh, &["token", "revoke", "viewer"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, _) = lab.curl(
        &lab.fw,
        "GET",
        &format!("{ui}/bans"),
        &["-b", jar.to_str().unwrap()],
        None,
    );
    assert_eq!(code, "303", "a revoked token's session is gone");
}

/// Issue 25 (item 6): the engine's never-ban list has one builder, and it
/// includes the live management sessions, as `protect.rs` promises. An
/// operator's SSH session from 203.0.113.7 is open when the daemon starts;
/// a scanner packet from that address is an alert, not a ban (a ban would
/// cut the operator off); the same packet from 203.0.113.100 is banned.
#[test]
fn an_operators_live_ssh_session_is_never_banned_by_detection() {
    let policy = r#"
[interfaces]
vw0 = "internet"

[zones.internet]
services = ["sip", "ssh"]
"#;
    let mut lab = Lab::new();
    // An "sshd" on the firewall that answers `ok` and keeps each
    // connection open, as a login shell does.
    let sshd = format!(
        "import socket,time\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\nl.bind(('{FW_V4}',22))\nl.listen(8)\nprint('ready',flush=True)\nkeep=[]\nl.settimeout(60)\nwhile True:\n  c,_=l.accept(); c.send(b'ok'); keep.append(c)\n"
    );
    let mut server = Command::new("ip")
        .args(["netns", "exec", &lab.fw, "python3", "-c", &sshd])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sshd stand-in");
    await_line(&mut server, "ready", "sshd output");
    let _server = Reap(server);
    lab.apply(policy);
    // An SSH session from 203.0.113.7, held open for the test.
    let script = format!(
        "import socket,time\ns=socket.socket()\ns.bind(('203.0.113.7',0))\ns.connect(('{FW_V4}',22))\nprint('up',flush=True)\ntime.sleep(60)\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.peer, "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("session");
    await_line(&mut child, "up", "session output");
    let _session = Reap(child);
    lab.until("the firewall sees the session", || {
        let out = lab.exec(&lab.fw, &["ss", "-Htn", "state", "established"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains(&format!("{FW_V4}:22")) && l.contains("203.0.113.7:"))
    });
    lab.start_daemon(policy);
    lab.scanner_packet("203.0.113.100", "no-session");
    lab.scanner_packet("203.0.113.7", "session");
    lab.until("the control address is banned", || {
        lab.banned(policy)
            .iter()
            .any(|t| t.starts_with("203.0.113.100"))
    });
    let events =
        String::from_utf8_lossy(&lab.voipwall_ctl(&["--json", "events"]).stdout).into_owned();
    lab.until("the session's address raises an alert", || {
        String::from_utf8_lossy(&lab.voipwall_ctl(&["--json", "events"]).stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["kind"] == "alert" && v["addr"] == "203.0.113.7")
    });
    assert!(
        !lab.banned(policy)
            .iter()
            .any(|t| t.starts_with("203.0.113.7/")),
        "the operator's address was banned: {events}"
    );
    assert_eq!(
        lab.probe(&[("203.0.113.7", "tcp/22")]),
        vec!["pass"],
        "the operator still reaches SSH"
    );
}

/// Issue 22: blocklist feeds from local HTTP servers in VoIPBL's and
/// APIBAN's shapes and from a file, each in its own sets with its own
/// counter; a protected entry is left out and said; a hostile list (the
/// whole address space, the host's own address), an error page, a body
/// that never ends or claims 2 GB and a server that never answers are
/// refused with a clear error and nothing of them is applied; a file feed
/// refreshed by difference; after a restart with the table gone and the
/// server down, the last good content is enforced again.
#[test]
fn feeds_drop_what_they_list_refuse_hostile_lists_and_survive_restart() {
    let mut lab = Lab::new();
    lab.listen();
    let srv = lab.dir.join("feeds");
    std::fs::create_dir_all(&srv).unwrap();
    let voipbl = include_str!("../../voipwall-policy/tests/feeds/voipbl-update.txt");
    std::fs::write(srv.join("voipbl.txt"), format!("{voipbl}203.0.113.7/32\n")).unwrap();
    std::fs::write(srv.join("apiban.key"), "k3y-for-tests\n").unwrap();
    // Page 1 lists the peer's IPv6 address and the management address
    // (protected: left out, counted); page 2, then the end of the list.
    std::fs::write(
        srv.join("apiban-100.json"),
        r#"{"ipaddress":["203.0.113.41","2001:db8:1::7","198.51.100.7"],"ID":"1764000000"}"#,
    )
    .unwrap();
    std::fs::write(
        srv.join("apiban-1764000000.json"),
        include_str!("../../voipwall-policy/tests/feeds/apiban-page2.json"),
    )
    .unwrap();
    std::fs::write(srv.join("hostile.txt"), "0.0.0.0/0\n198.51.100.2\n").unwrap();
    std::fs::write(srv.join("own.txt"), "203.0.113.1\n198.51.100.2\n").unwrap();
    let local = lab.dir.join("local.txt");
    std::fs::write(&local, "# a local list\n203.0.113.100\n").unwrap();
    let server = Command::new("ip")
        .args(["netns", "exec", &lab.peer, "python3"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/feed_server.py"))
        .args(["203.0.113.2", "8098"])
        .arg(&srv)
        .spawn()
        .expect("feed server");
    let server = Reap(server);
    lab.until("the feed server is ready", || srv.join("ready").exists());
    let url = |p: &str| format!("http://203.0.113.2:8098/{p}");
    let policy = format!(
        r#"
[interfaces]
vw0 = "internet"

[networks]
"198.51.100.7" = "trusted"

[host]
management = ["198.51.100.7/32"]

[zones.internet]
services = ["sip"]

[[feed]]
name = "voipbl"
format = "voipbl"
url = "{}"

[[feed]]
name = "apiban"
format = "apiban"
url = "{}"
key_file = "{}"

[[feed]]
name = "local"
format = "plain"
path = "{}"
interval = "1s"

[[feed]]
name = "hostile"
format = "plain"
url = "{}"

[[feed]]
name = "own"
format = "plain"
url = "{}"

[[feed]]
name = "html"
format = "plain"
url = "{}"

[[feed]]
name = "huge"
format = "plain"
url = "{}"

[[feed]]
name = "endless"
format = "plain"
url = "{}"

[[feed]]
name = "hang"
format = "plain"
url = "{}"
timeout = "2s"
"#,
        url("voipbl"),
        url("apiban"),
        srv.join("apiban.key").display(),
        local.display(),
        url("hostile"),
        url("own"),
        url("html"),
        url("huge"),
        url("endless"),
        url("hang"),
    );
    lab.apply(&policy);
    lab.start_daemon(&policy);
    let feeds = |lab: &Lab| -> Vec<serde_json::Value> {
        let out = lab.voipwall_ctl(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["feeds"].as_array().cloned().unwrap_or_default()
    };
    let feed = |all: &[serde_json::Value], name: &str| -> serde_json::Value {
        all.iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let mut all = Vec::new();
    lab.until("every feed tried once", || {
        all = feeds(&lab);
        all.len() == 9 && all.iter().all(|f| f["tried_ms"].is_u64())
    });
    // What was applied.
    assert_eq!(feed(&all, "voipbl")["entries"], 6, "{all:?}");
    assert!(feed(&all, "voipbl")["error"].is_null(), "{all:?}");
    let apiban = feed(&all, "apiban");
    assert_eq!(apiban["entries"], 4, "{apiban}");
    assert_eq!(apiban["refused"], 1, "{apiban}");
    assert!(
        apiban["refusals"][0]
            .as_str()
            .is_some_and(|r| r.contains("198.51.100.7") && r.contains("protected")),
        "{apiban}"
    );
    assert_eq!(feed(&all, "local")["entries"], 1, "{all:?}");
    // What was refused, each with its reason, and nothing of it applied.
    for (name, says) in [
        ("hostile", "0.0.0.0/0"),
        ("own", "own address 203.0.113.1"),
        ("html", "no line is an address"),
        ("huge", "larger than"),
        ("endless", "larger than"),
        ("hang", "took longer than 2 s"),
    ] {
        let f = feed(&all, name);
        assert!(
            f["error"].as_str().is_some_and(|e| e.contains(says)),
            "feed {name} should say `{says}`: {f}"
        );
        assert_eq!(f["entries"], 0, "{f}");
        assert_eq!(lab.count_set(&format!("vw_feed_{name}_v4")), 0);
    }
    let text = lab.voipwall_ok(&policy, &["status"]);
    assert!(
        text.contains("feed voipbl (voipbl, http://203.0.113.2:8098/voipbl): 6 networks")
            && text.contains("feed hostile")
            && text.contains("ERROR"),
        "{text}"
    );
    // Traffic: what the feeds list is dropped (and explain says so, from
    // the kernel's sets); what the refused lists named passes.
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.7", "udp/5060", "drop"),
            ("2001:db8:1::7", "udp/5060", "drop"),
            ("203.0.113.100", "udp/5060", "drop"),
            ("198.51.100.2", "udp/5060", "pass"),
            ("198.51.100.7", "udp/5060", "pass"),
        ],
    );
    let why = lab.voipwall_ok(
        &policy,
        &["explain", "203.0.113.7", "udp/5060", "--iface", "vw0"],
    );
    assert!(why.contains("listed by feed voipbl"), "{why}");
    let counter = lab.nft(&["list", "counter", "inet", "voipwall", "vw_feed_voipbl"]);
    assert!(!counter.contains("packets 0 "), "{counter}");
    // The file changes: only the difference moves.
    std::fs::write(&local, "198.51.100.2\n").unwrap();
    lab.until("the local feed moved", || {
        let f = feed(&feeds(&lab), "local");
        f["added"] == 1 && f["removed"] == 1
    });
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.100", "udp/5060", "pass"),
            ("198.51.100.2", "udp/5060", "drop"),
        ],
    );
    // Another tool deletes the table under the running daemon: the daemon
    // puts it back, and the feeds' content with it (unchanged lists move
    // nothing on their own, so this must not wait for a refresh).
    lab.nft(&["delete", "table", "inet", "voipwall"]);
    lab.until("the feeds are back in the kernel", || {
        lab.exec(
            &lab.fw,
            &[
                "nft",
                "list",
                "set",
                "inet",
                "voipwall",
                "vw_feed_voipbl_v4",
            ],
        )
        .status
        .success()
            && lab.count_set("vw_feed_voipbl_v4") == 3
            && lab.count_set("vw_feed_voipbl_net4") == 3
            && lab.count_set("vw_feed_apiban_v6") == 1
    });
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.7", "udp/5060", "drop"),
            ("2001:db8:1::7", "udp/5060", "drop"),
        ],
    );
    // Restart as after a reboot: the table gone, the servers down. The
    // last good content is back in the kernel before any fetch succeeds.
    lab.stop_daemon();
    drop(server);
    lab.nft(&["delete", "table", "inet", "voipwall"]);
    lab.start_daemon(&policy);
    lab.until("the stored feeds are back", || {
        let all = feeds(&lab);
        feed(&all, "voipbl")["entries"] == 6 && feed(&all, "apiban")["entries"] == 4
    });
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.7", "udp/5060", "drop"),
            ("2001:db8:1::7", "udp/5060", "drop"),
            ("198.51.100.2", "udp/5060", "drop"),
            ("203.0.113.100", "udp/5060", "pass"),
        ],
    );
    // A feed fetched within its interval waits for it; one never fetched
    // tries at once, fails, and says so.
    lab.until("the failed fetch is said", || {
        feed(&feeds(&lab), "hostile")["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect to 203.0.113.2:8098"))
    });
    let v = feed(&feeds(&lab), "voipbl");
    assert_eq!(v["entries"], 6, "the last good content stays: {v}");
    // A feed taken out of the policy loses its sets at the reload.
    let (kept, _) = policy.split_once("[[feed]]\nname = \"hang\"").unwrap();
    std::fs::write(lab.dir.join("policy.toml"), kept).unwrap();
    let out = lab.voipwall_ctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    lab.until("the hang feed and its sets are gone", || {
        !lab.nft(&["-t", "list", "sets", "table", "inet", "voipwall"])
            .contains("vw_feed_hang_")
            && feeds(&lab).len() == 8
    });
}

/// A real CrowdSec Local API (Debian's `crowdsec`, offline: no Central
/// API) in the firewall's namespace on 127.0.0.1:8080, with its own
/// configuration, database and logs in the lab's directory.
struct Lapi {
    ns: String,
    dir: PathBuf,
    child: Option<Reap>,
}

impl Lapi {
    fn start(lab: &Lab) -> Self {
        let dir = lab.dir.join("crowdsec");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        let stock =
            std::fs::read_to_string("/etc/crowdsec/config.yaml").expect("crowdsec installed");
        let mut cfg = String::new();
        let mut skip_indented = false;
        for line in stock.lines() {
            // No Central API: the `online_client` block goes.
            if line.trim_start().starts_with("online_client:") {
                skip_indented = true;
                continue;
            }
            if skip_indented && line.starts_with("      ") {
                continue;
            }
            skip_indented = false;
            let d = dir.display();
            let line = line
                .replace("daemonize: true", "daemonize: false")
                .replace(
                    "/var/lib/crowdsec/data/crowdsec.db",
                    &format!("{d}/data/crowdsec.db"),
                )
                .replace("log_dir: /var/log/", &format!("log_dir: {d}/log/"))
                .replace(
                    "/etc/crowdsec/local_api_credentials.yaml",
                    &format!("{d}/local_api_credentials.yaml"),
                );
            cfg.push_str(&line);
            cfg.push('\n');
        }
        // No metrics listener (port 6060 is nobody's business here).
        let cfg = cfg.replace(
            "prometheus:\n  enabled: true",
            "prometheus:\n  enabled: false",
        );
        std::fs::write(dir.join("config.yaml"), cfg).unwrap();
        std::fs::write(
            dir.join("local_api_credentials.yaml"),
            "url: http://127.0.0.1:8080\nlogin: vwlab\npassword: vwlab-password-for-tests\n",
        )
        .unwrap();
        let mut l = Self {
            ns: lab.fw.clone(),
            dir,
            child: None,
        };
        l.run();
        l.cscli(&[
            "machines",
            "add",
            "vwlab",
            "--password",
            "vwlab-password-for-tests",
            "-f",
            "/dev/null",
        ]);
        l
    }

    /// Starts (or restarts) the LAPI and waits for `/health`.
    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("crowdsec.out")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "crowdsec", "-c"])
            .arg(self.dir.join("config.yaml"))
            .arg("-no-cs")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("crowdsec");
        self.child = Some(Reap(child));
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns,
                    "curl",
                    "-sf",
                    "http://127.0.0.1:8080/health",
                ])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < until,
                "the LAPI did not come up: {}",
                std::fs::read_to_string(self.dir.join("crowdsec.out")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill(&mut self) {
        self.child = None;
    }

    fn cscli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "cscli", "-c"])
            .arg(self.dir.join("config.yaml"))
            .args(args)
            .output()
            .expect("cscli");
        assert!(out.status.success(), "cscli {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Issue 22: voipwall as a bouncer of a real CrowdSec LAPI. A decision
/// made with cscli is dropped by voipwall's kernel within an update
/// interval (traffic), in the set of its origin with LAPI's timeout, and
/// passes again once deleted; decisions against the management network or
/// the host itself are counted and never applied; with LAPI killed the
/// kernel keeps enforcing, a restart (table gone) puts the decisions back
/// from the store, and the bouncer reconnects when LAPI returns.
#[test]
fn crowdsec_decisions_are_enforced_per_origin_and_survive_lapi_outages() {
    let mut lab = Lab::new();
    lab.listen();
    let mut lapi = Lapi::start(&lab);
    let key = lapi.cscli(&["bouncers", "add", "voipwall-fw", "-o", "raw"]);
    let key_file = lab.dir.join("bouncer.key");
    std::fs::write(&key_file, key.trim()).unwrap();
    let password_file = lab.dir.join("machine.pass");
    std::fs::write(&password_file, "fw-watcher-password-for-tests\n").unwrap();
    lapi.cscli(&[
        "machines",
        "add",
        "voipwall-fw",
        "--password",
        "fw-watcher-password-for-tests",
        "-f",
        "/dev/null",
    ]);
    let policy = format!(
        r#"
[interfaces]
vw0 = "internet"

[networks]
"198.51.100.7" = "trusted"

[host]
management = ["198.51.100.7/32"]

[zones.internet]
services = ["sip"]

[crowdsec]
lapi_url = "http://127.0.0.1:8080"
bouncer_key_file = "{}"
update_frequency = "1s"
machine_id = "voipwall-fw"
machine_password_file = "{}"

[[source]]
format = "asterisk"
path = "{}"
"#,
        key_file.display(),
        password_file.display(),
        lab.dir.join("full").display()
    );
    lab.apply(&policy);
    lab.start_daemon(&policy);
    let bouncer = |lab: &Lab| -> serde_json::Value {
        let out = lab.voipwall_ctl(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["crowdsec_bouncer"].clone()
    };
    lab.until("the bouncer is connected", || {
        bouncer(&lab)["connected"] == true
    });
    let t = Instant::now();
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "203.0.113.7",
        "--duration",
        "10m",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.7",
        "--duration",
        "10m",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "2001:db8:1::/64",
        "--duration",
        "10m",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.18.0.0/16",
        "--duration",
        "1h",
    ]);
    lab.until("the decisions are in the kernel", || {
        lab.count_set("vw_cs_cscli_v4") == 1 && lab.count_set("vw_cs_cscli_net4") == 1
    });
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "one update interval (1 s) plus the pull: took {took:?}"
    );
    // LAPI's timeout, not a default: about ten minutes left.
    let set = lab.nft(&["list", "set", "inet", "voipwall", "vw_cs_cscli_v4"]);
    assert!(
        set.contains("203.0.113.7 timeout 10m") || set.contains("203.0.113.7 timeout 9m"),
        "{set}"
    );
    let b = bouncer(&lab);
    assert_eq!(b["decisions"]["cscli"], 2, "{b}");
    assert_eq!(
        b["protected"], 2,
        "management and the host's own network: {b}"
    );
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.7", "udp/5060", "drop"),
            ("198.18.5.5", "udp/5060", "drop"),
            ("203.0.113.100", "udp/5060", "pass"),
            ("198.51.100.7", "udp/5060", "pass"),
            ("2001:db8:1::7", "udp/5060", "pass"),
        ],
    );
    let why = lab.voipwall_ok(
        &policy,
        &["explain", "203.0.113.7", "udp/5060", "--iface", "vw0"],
    );
    assert!(why.contains("CrowdSec decisions of origin cscli"), "{why}");
    // The watcher: a brute force voipwall bans (five wrong passwords in
    // the PBX's log) is an alert with its decision in LAPI, for every
    // other bouncer; the bouncer brings the decision back too.
    let in_lapi = |lapi: &Lapi, what: &str, value: &str| -> bool {
        let out = lapi.cscli(&[what, "list", "-o", "json"]);
        out.contains(value) && out.contains("voipwall/")
    };
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab.dir.join("full"))
            .unwrap();
        for i in 0..5 {
            writeln!(
                f,
                "[2026-12-06 10:22:{i:02}] NOTICE[2284] chan_sip.c: Registration from '<sip:1001@pbx>' failed for '203.0.113.2:5060' - Wrong password"
            )
            .unwrap();
        }
    }
    lab.until("voipwall's ban is an alert in LAPI", || {
        in_lapi(&lapi, "alerts", "203.0.113.2") && in_lapi(&lapi, "decisions", "203.0.113.2")
    });
    let w = lab.voipwall_ctl(&["--json", "status"]);
    let w: serde_json::Value = serde_json::from_slice(&w.stdout).unwrap();
    assert_eq!(
        w["crowdsec_watcher"]["posted"], 1,
        "{}",
        w["crowdsec_watcher"]
    );
    lab.until("the bouncer holds voipwall's own decision", || {
        lab.count_set("vw_cs_crowdsec_v4") == 1
    });
    // An operator's unban lifts it in voipwall, in LAPI (the decisions this
    // watcher posted; nobody else's) and so in the bouncer's sets.
    let out = lab.voipwall_ctl(&["unban", "203.0.113.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    lab.until("the decision is gone from LAPI and the kernel", || {
        !in_lapi(&lapi, "decisions", "203.0.113.2") && lab.count_set("vw_cs_crowdsec_v4") == 0
    });
    lab.assert_traffic(&policy, &[("203.0.113.2", "udp/5060", "pass")]);
    // Deleted in LAPI: passes again.
    lapi.cscli(&["decisions", "delete", "--ip", "203.0.113.7"]);
    lab.until("the deletion reached the kernel", || {
        lab.count_set("vw_cs_cscli_v4") == 0
    });
    lab.assert_traffic(&policy, &[("203.0.113.7", "udp/5060", "pass")]);
    // LAPI down: what the kernel holds stays, and status says so.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "203.0.113.100",
        "--duration",
        "10m",
    ]);
    lab.until("the new decision is in", || {
        lab.count_set("vw_cs_cscli_v4") == 1
    });
    lapi.kill();
    lab.until("the bouncer says LAPI is gone", || {
        let b = bouncer(&lab);
        b["connected"] == false
            && b["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot connect"))
    });
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.100", "udp/5060", "drop"),
            ("198.18.5.5", "udp/5060", "drop"),
        ],
    );
    let text = lab.voipwall_ok(&policy, &["status"]);
    assert!(
        text.contains("crowdsec bouncer http://127.0.0.1:8080: NOT connected"),
        "{text}"
    );
    // A ban made while LAPI is away waits in the store.
    lab.scanner_packet("198.51.100.2", "watch2");
    lab.until("the alert is queued", || {
        let out = lab.voipwall_ctl(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["crowdsec_watcher"]["queued"] == 1 && v["crowdsec_watcher"]["error"].is_string()
    });
    // A restart as after a reboot, LAPI still down: the store puts the
    // decisions back before any pull.
    lab.stop_daemon();
    lab.nft(&["delete", "table", "inet", "voipwall"]);
    lab.start_daemon(&policy);
    lab.until("the stored decisions are back", || {
        lab.count_set("vw_cs_cscli_v4") == 1 && lab.count_set("vw_cs_cscli_net4") == 1
    });
    lab.assert_traffic(&policy, &[("203.0.113.100", "udp/5060", "drop")]);
    // LAPI back: connected again, and a decision deleted while it was
    // away... is only learnt from the full pull that follows.
    lapi.run();
    lapi.cscli(&["decisions", "delete", "--ip", "203.0.113.100"]);
    lab.until("reconnected and resynced", || {
        bouncer(&lab)["connected"] == true && lab.count_set("vw_cs_cscli_v4") == 0
    });
    lab.assert_traffic(&policy, &[("203.0.113.100", "udp/5060", "pass")]);
    // The alert queued before the restart arrives now.
    lab.until("the queued alert reached LAPI", || {
        in_lapi(&lapi, "alerts", "198.51.100.2")
    });
}

/// Issue 23, geography: `country:ZZ` in a block list drops the addresses a
/// test mmdb (written here, nothing downloaded) gives ZZ, over IPv4 and
/// IPv6, and lets the others through; `explain` names the country; when
/// the database file is replaced the daemon's sets follow it without a
/// reload; `check` refuses `country:` without a `[geo] database`.
#[test]
fn countries_from_an_mmdb_are_blocked_and_follow_the_file_without_a_reload() {
    let mut lab = Lab::new();
    lab.listen();
    let db = lab.dir.join("country.mmdb");
    let write_db = |pairs: &[&str]| {
        let out = Command::new("python3")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/mmdb_write.py"))
            .arg(&db)
            .arg("country")
            .args(pairs)
            .output()
            .expect("mmdb_write.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    write_db(&[
        "203.0.113.4/30=ZZ",
        "2001:db8:5::/48=ZZ",
        "198.51.100.0/24=XA",
    ]);
    let policy = format!(
        r#"
[interfaces]
vw0 = "internet"

[zones.internet]
services = ["sip"]

[geo]
database = "{}"

[[block]]
address = "country:ZZ"
description = "nobody calls from there"
"#,
        db.display()
    );
    // Without a database, `country:` is refused at its line.
    let without = policy.replace(&format!("[geo]\ndatabase = \"{}\"\n", db.display()), "");
    let out = lab.voipwall(&without, &["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`country:ZZ` needs a database") && err.contains("policy.toml:10:"),
        "{err}"
    );
    lab.apply(&policy);
    lab.start_daemon(&policy);
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.7", "udp/5060", "drop"),
            ("2001:db8:5::7", "udp/5060", "drop"),
            ("203.0.113.2", "udp/5060", "pass"),
            ("198.51.100.2", "udp/5060", "pass"),
            ("2001:db8:1::2", "udp/5060", "pass"),
        ],
    );
    let why = lab.voipwall_ok(
        &policy,
        &["explain", "203.0.113.7", "udp/5060", "--iface", "vw0"],
    );
    assert!(why.contains("block list country:ZZ"), "{why}");
    // A new database: ZZ moves from 203.0.113.4/30 to 203.0.113.0/30. The
    // daemon sees the file change and the kernel follows, no reload. (Its
    // watcher first reads the file a few seconds after start.)
    let daemon_log = || std::fs::read_to_string(lab.dir.join("daemon.log")).unwrap_or_default();
    lab.until("the geo watcher's first look", || {
        daemon_log().contains("[geo] sets loaded from the database")
    });
    write_db(&["203.0.113.0/30=ZZ", "198.51.100.0/24=XA"]);
    lab.until("the ZZ set follows the new database", || {
        lab.probe(&[("203.0.113.2", "udp/5060"), ("203.0.113.7", "udp/5060")]) == ["drop", "pass"]
    });
    lab.assert_traffic(
        &policy,
        &[
            ("203.0.113.2", "udp/5060", "drop"),
            ("203.0.113.7", "udp/5060", "pass"),
            ("2001:db8:5::7", "udp/5060", "pass"),
        ],
    );
    let log = std::fs::read_to_string(lab.dir.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("A [geo] database changed"), "{log}");
    assert!(!log.contains("Reload"), "a reload happened: {log}");
}

/// Issue 25, item 12: `bans --all` says a ban was lifted, when and by
/// whom, and the operator's `ban` and `unban` are in the daemon's log; the
/// count reads "1 ban", not "1 bans". Traffic: the ban drops, the unban
/// lets through again.
#[test]
fn a_lifted_ban_says_who_lifted_it_and_operator_verbs_are_in_the_daemon_log() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = "[interfaces]\nvw0 = \"internet\"\n\n[zones.internet]\nservices = [\"sip\"]\n";
    lab.apply(policy);
    lab.start_daemon(policy);
    let run = |lab: &Lab, args: &[&str]| -> String {
        let out = lab.voipwall_ctl(args);
        assert!(
            out.status.success(),
            "voipwall {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(
        &lab,
        &["ban", "203.0.113.7", "--for", "1h", "--reason", "test"],
    );
    lab.assert_traffic(policy, &[("203.0.113.7", "udp/5060", "drop")]);
    let one = run(&lab, &["bans"]);
    assert!(one.contains("\n1 ban in force"), "{one}");
    run(&lab, &["unban", "203.0.113.7"]);
    lab.assert_traffic(policy, &[("203.0.113.7", "udp/5060", "pass")]);
    let all = run(&lab, &["bans", "--all"]);
    let row = all
        .lines()
        .find(|l| l.starts_with("203.0.113.7"))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(
        row.contains("LIFTED") && row.contains("by cli (uid 0)"),
        "{all}"
    );
    let json = run(&lab, &["--json", "bans", "--all"]);
    assert!(json.contains("\"lifted_by\":\"cli (uid 0)\""), "{json}");
    let log = std::fs::read_to_string(lab.dir.join("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("Operator: ban 203.0.113.7 (by cli (uid 0))")
            && log.contains("Operator: unban 203.0.113.7 (by cli (uid 0))"),
        "{log}"
    );
}

/// Issue 25, item 15: `reload` of a file nobody edited records no new
/// generation (it used to add one per reload); an edit does, and traffic
/// follows it.
#[test]
fn reload_of_an_unchanged_file_records_no_new_generation() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = "[interfaces]\nvw0 = \"internet\"\n\n[zones.internet]\nservices = [\"sip\"]\n";
    lab.apply(policy);
    lab.start_daemon(policy);
    let count = |lab: &Lab| -> usize {
        let out = lab.voipwall_ctl(&["--json", "generations"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array().map_or(0, Vec::len)
    };
    let before = count(&lab);
    assert!(before >= 1);
    for _ in 0..2 {
        let out = lab.voipwall_ctl(&["reload"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("no new generation"),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        count(&lab),
        before,
        "reloads of an unchanged file added generations"
    );
    lab.assert_traffic(policy, &[("203.0.113.7", "tcp/22", "drop")]);
    let edited = policy.replace("[\"sip\"]", "[\"sip\", \"ssh\"]");
    std::fs::write(lab.dir.join("policy.toml"), &edited).unwrap();
    let out = lab.voipwall_ctl(&["reload"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applied as generation"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(count(&lab), before + 1);
    lab.assert_traffic(&edited, &[("203.0.113.7", "tcp/22", "pass")]);
}

/// Waits for the first line a helper process prints on its stdout and
/// requires it to be `want` (its "ready"), naming `what` if it is not.
fn await_line(child: &mut Child, want: &str, what: &str) {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(line.trim(), want, "{what}");
}

/// The stand-in PBX (tests/support/pbx.py) on the firewall's address,
/// started and ready.
fn stand_in_pbx(lab: &Lab) -> Child {
    let pbx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pbx.py");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.fw, "python3", pbx, FW_V4])
        .stdout(Stdio::piped())
        .spawn()
        .expect("pbx.py");
    await_line(&mut child, "ready", "pbx output");
    child
}

/// Every file under a directory with its bytes, sorted by path: to show a
/// directory was left as it was.
fn tree_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Issue 25, item 17: beside Debian's ufw (its configuration copied into
/// the lab's directory: the host's /etc/ufw is neither used nor changed),
/// in force in the firewall's namespace with input policy drop and SSH and
/// SIP allowed, voipwall in bans-only mode bans a SIP brute force at its
/// threshold (the fifth wrong password is the last the PBX answers), while
/// ufw's rules stay byte for byte as ufw wrote them and still decide the
/// rest: SSH passes, an unopened port stays closed, explain names ufw's
/// table as the one that decides.
#[test]
fn beside_ufw_bans_only_bans_a_brute_force_and_leaves_ufw_deciding() {
    let host_ufw = tree_bytes(Path::new("/etc/ufw"));
    assert!(
        !host_ufw.is_empty(),
        "Debian's ufw is not installed (scripts/deps installs it)"
    );
    let mut lab = Lab::new();
    let child = stand_in_pbx(&lab);
    let _pbx = Reap(child);
    lab.listen_on(&["tcp/22", "tcp/443"]);
    // ufw with its root in the lab: rules for this namespace only.
    let root = lab.dir.join("ufw-root");
    for (from, to) in [
        ("/etc/ufw", "etc/ufw"),
        ("/lib/ufw", "lib/ufw"),
        ("/etc/default/ufw", "etc/default/ufw"),
    ] {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        must(&["cp", "-a", from, &to.display().to_string()]);
    }
    let rootdir = format!("--rootdir={}", root.display());
    let datadir = format!("--datadir={}", root.display());
    for args in [
        &["allow", "22/tcp"][..],
        &["allow", "5060/udp"],
        &["--force", "enable"],
    ] {
        let mut full = vec!["ufw", rootdir.as_str(), datadir.as_str()];
        full.extend_from_slice(args);
        let out = lab.exec(&lab.fw, &full);
        assert!(out.status.success(), "ufw {args:?}: {}", stderr(&out));
    }
    let ufw_rules = |lab: &Lab| lab.nft(&["-s", "list", "table", "ip", "filter"]);
    let before = ufw_rules(&lab);
    assert!(
        before.contains("chain ufw-user-input") && before.contains("policy drop"),
        "{before}"
    );
    let sip_answers = |lab: &Lab, src: &str, n: u32, auth: bool| -> u32 {
        let script = format!(
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{src}',5070))\ns.settimeout(0.5)\nn=0\nfor i in range({n}):\n  m='REGISTER' if {auth} else 'OPTIONS'\n  a='Authorization: Digest username=\"1001\", realm=\"pbx\", nonce=\"x%d\", uri=\"sip:pbx\", response=\"00000000000000000000000000000000\"\\r\\n' % i if {auth} else ''\n  s.sendto(('%s sip:pbx SIP/2.0\\r\\nVia: SIP/2.0/UDP {src}:5070;branch=z9hG4bKb%d\\r\\nFrom: <sip:1001@pbx>;tag=%d\\r\\nTo: <sip:1001@pbx>\\r\\nCall-ID: b%d-{src}\\r\\nCSeq: 1 %s\\r\\n%sContent-Length: 0\\r\\n\\r\\n' % (m,i,i,i,m,a)).encode(),('{FW_V4}',5060))\n  try:\n    s.recv(4096); n+=1\n  except Exception:\n    pass\n  time.sleep(0.1)\nprint(n)\n",
            auth = if auth { "True" } else { "False" }
        );
        let out = lab.exec(&lab.peer, &["python3", "-c", &script]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    // ufw alone: SIP and SSH pass, 443 does not.
    assert_eq!(sip_answers(&lab, "203.0.113.100", 1, false), 1);
    assert_eq!(
        lab.probe(&[("203.0.113.100", "tcp/22"), ("203.0.113.100", "tcp/443")]),
        vec!["pass", "drop"]
    );
    // init, run where ufw is in force, proposes bans-only beside it.
    let init: serde_json::Value =
        serde_json::from_slice(&lab.voipwall("", &["--json", "init", "--dry-run"]).stdout)
            .expect("init json");
    let proposed = init["policy"].as_str().unwrap_or_default();
    assert!(
        proposed.contains("another firewall in force: table ip filter")
            && proposed.contains("mode = \"bans-only\""),
        "{proposed}"
    );
    // From voipwall's own zones (ssh closed by them) to bans-only: the
    // input chain stops deciding.
    let full = "[interfaces]\nvw0 = \"internet\"\n\n[zones.internet]\nservices = [\"sip\"]\n";
    lab.apply(full);
    assert_eq!(lab.probe(&[("203.0.113.100", "tcp/22")]), vec!["drop"]);
    let policy = "[filter]\nmode = \"bans-only\"\n";
    let out = lab.voipwall(policy, &["apply"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: table ip filter chain INPUT")
            && !stderr(&out).contains("can drop what voipwall accepts"),
        "beside ufw by design, not a warning: {}",
        stderr(&out)
    );
    lab.start_daemon(policy);
    // Wrong passwords one after another: the PBX answers five (each a
    // 403), the fifth bans, the rest meet the ban.
    let answered = sip_answers(&lab, "203.0.113.7", 10, true);
    lab.until("the brute force is banned", || {
        let b = lab.voipwall_ctl(&["--json", "bans"]);
        String::from_utf8_lossy(&b.stdout).contains("auth-bruteforce")
    });
    assert_eq!(answered, 5, "the PBX answered {answered} wrong passwords");
    assert_eq!(
        sip_answers(&lab, "203.0.113.7", 1, false),
        0,
        "banned: no answer"
    );
    assert_eq!(
        sip_answers(&lab, "203.0.113.100", 1, false),
        1,
        "others pass"
    );
    assert_eq!(
        lab.probe(&[
            ("203.0.113.100", "tcp/22"),
            ("203.0.113.100", "tcp/443"),
            ("203.0.113.7", "tcp/22"),
        ]),
        vec!["pass", "drop", "drop"],
        "ufw decides SSH and 443; the ban covers every port"
    );
    assert_eq!(ufw_rules(&lab), before, "ufw's rules changed");
    let explain = |lab: &Lab, src: &str, to: &str| -> serde_json::Value {
        let out = lab.voipwall(policy, &["--json", "explain", src, to, "--iface", "vw0"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("explain json")
    };
    let free = explain(&lab, "203.0.113.100", "tcp/443");
    assert_eq!(free["bans_only"], true, "{free}");
    assert!(
        free["decided_by_table"]
            .as_str()
            .is_some_and(|t| t.contains("table ip filter")),
        "{free}"
    );
    let banned = explain(&lab, "203.0.113.7", "udp/5060");
    assert_eq!(banned["verdict"], "drop", "{banned}");
    assert_eq!(
        banned["decided_by_table"], "table inet voipwall",
        "{banned}"
    );
    let text = String::from_utf8_lossy(
        &lab.voipwall(
            policy,
            &["explain", "203.0.113.100", "tcp/22", "--iface", "vw0"],
        )
        .stdout,
    )
    .into_owned();
    assert!(
        text.contains("mode:       bans-only") && text.contains("decides:    table ip filter"),
        "{text}"
    );
    // audit claims no exposure it cannot know: ufw decides it.
    let audit: serde_json::Value =
        serde_json::from_slice(&lab.voipwall(policy, &["--json", "audit"]).stdout)
            .expect("audit json");
    let checks: Vec<&str> = audit["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["check"].as_str())
        .collect();
    assert!(checks.contains(&"bans-only"), "{audit}");
    assert!(
        !checks.contains(&"listening-not-granted") && !checks.contains(&"ssh-22-exposed"),
        "{audit}"
    );
    // A bans-only policy with a zone is refused, and nothing changes.
    let zoned = format!("{policy}\n[zones.internet]\nservices = [\"sip\"]\n");
    let out = lab.voipwall(&zoned, &["apply"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("in a bans-only policy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ufw_rules(&lab), before);
    assert_eq!(
        tree_bytes(Path::new("/etc/ufw")),
        host_ufw,
        "the host's /etc/ufw changed"
    );
}

/// Issue 25, item 17 (from its review): a trunk known by name, switched
/// from full mode to bans-only and back. Each applied script re-creates the
/// name's sets; an old peers chain still pointing at them would make the
/// kernel refuse that, so every mode flushes every chain the other has
/// (the daemon's start applies the whole script). In bans-only mode
/// nothing else filters here, so ports no zone grants pass too.
#[test]
fn a_trunk_known_by_name_survives_switching_to_bans_only_and_back() {
    let mut lab = Lab::new();
    lab.listen();
    let _dns = common::Dnsmasq::start(&lab.fw, &lab.dir, "203.0.113.100 trunk.lab.example\n", &[]);
    let ast = lab.dir.join("asterisk");
    std::fs::create_dir_all(&ast).unwrap();
    std::fs::write(
        ast.join("iax.conf"),
        "[general]\nbindport=4569\n\n[branch]\ntype=peer\nhost=trunk.lab.example\n",
    )
    .unwrap();
    let common = format!(
        "[discover]\nasterisk = \"{}\"\nfreeswitch = false\nkamailio = false\n\n[dns]\nservers = [\"127.0.0.1\"]\n",
        ast.display()
    );
    let full =
        format!("[interfaces]\nvw0 = \"internet\"\n\n[zones.internet]\nservices = []\n\n{common}");
    let bans_only = format!("[filter]\nmode = \"bans-only\"\n\n{common}");
    lab.apply(&full);
    assert_eq!(
        lab.probe(&[("203.0.113.100", "udp/4569"), ("203.0.113.2", "udp/4569")]),
        vec!["pass", "drop"],
        "full mode: the trunk reaches its own port, nobody else does"
    );
    lab.apply(&bans_only);
    lab.start_daemon(&bans_only);
    assert_eq!(
        lab.probe(&[("203.0.113.100", "udp/4569"), ("203.0.113.2", "tcp/443")]),
        vec!["pass", "pass"]
    );
    lab.stop_daemon();
    lab.apply(&full);
    lab.start_daemon(&full);
    assert_eq!(
        lab.probe(&[("203.0.113.100", "udp/4569"), ("203.0.113.2", "tcp/443")]),
        vec!["pass", "drop"]
    );
}

/// A policy file broken by an edit nobody applied (or gone) does not keep
/// the daemon down after a restart: the generation in force runs from the
/// inputs it stored (SIP passes, SSH stays closed, a scanner is banned),
/// the log says why, `status` shows the file's error, and `reload` refuses
/// the file and changes nothing.
#[test]
fn a_broken_policy_file_does_not_keep_the_daemon_down() {
    let mut lab = Lab::new();
    lab.listen();
    let policy = "[interfaces]\nvw0 = \"internet\"\n\n[zones.internet]\nservices = [\"sip\"]\n";
    lab.apply(policy);
    let broken = format!("{policy}\n[zones.elsewhere]\nservices = [\"ssh\"]\n");
    assert!(!lab.voipwall(&broken, &["check"]).status.success());
    lab.start_daemon(&broken);
    assert_eq!(
        lab.probe(&[("203.0.113.2", "udp/5060"), ("203.0.113.2", "tcp/22")]),
        vec!["pass", "drop"]
    );
    lab.scanner_packet("203.0.113.7", "broken-file");
    lab.until("the scanner is banned", || {
        lab.probe(&[("203.0.113.7", "udp/5060")]) == vec!["drop"]
    });
    let log = std::fs::read_to_string(lab.dir.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("The policy file does not load"), "{log}");
    let st: serde_json::Value =
        serde_json::from_slice(&lab.voipwall(&broken, &["--json", "status"]).stdout)
            .expect("status json");
    assert!(
        st["policy_file"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("elsewhere")),
        "{st}"
    );
    let out = lab.voipwall_ctl(&["reload"]);
    assert!(!out.status.success());
    assert_eq!(
        lab.probe(&[("203.0.113.2", "udp/5060"), ("203.0.113.2", "tcp/22")]),
        vec!["pass", "drop"]
    );
}

/// Issue 25, item 18: after an upgrade the daemon compiles the generation's
/// stored inputs again, never the policy file on disk. The store is made to
/// look as an older voipwall left it: the generation in force holds a script
/// that also opened tcp/443 (the compiler bug the upgrade fixes) and names
/// version 0.0.1. The file on disk holds an edit nobody applied (ssh). At
/// start, tcp/443 is closed again, ssh stays closed, SIP passes; the new
/// generation says "recompiled by", status and the log say what happened,
/// and the next start compiles nothing. A generation that kept no inputs
/// (an older voipwall still) is applied as recorded, and status says why.
#[test]
fn an_upgrade_compiles_the_stored_inputs_again_never_the_file_on_disk() {
    let host_tables = || run(&["nft", "list", "tables"]).stdout;
    let host_before = host_tables();
    let mut lab = Lab::new();
    lab.listen();
    let policy = "[interfaces]\nvw0 = \"internet\"\n\n[zones.internet]\nservices = [\"sip\"]\n";
    lab.apply(policy);
    let buggy = lab.voipwall_ok(
        &policy.replace("[\"sip\"]", "[\"sip\", \"https-admin\"]"),
        &["compile"],
    );
    let db = lab.dir.join("state").join("state.db");
    let in_force = "(SELECT max(id) FROM generations WHERE status IN ('applied', 'confirmed'))";
    let tamper = |sql: &str| {
        let c = rusqlite::Connection::open(&db).expect("open the store");
        let n = c
            .execute(&format!("{sql} WHERE id = {in_force}"), [&buggy])
            .expect("rewrite the generation");
        assert_eq!(n, 1);
    };
    tamper("UPDATE generations SET script = ?1, inputs = json_set(inputs, '$.version', '0.0.1')");
    let edited = policy.replace("[\"sip\"]", "[\"sip\", \"ssh\"]");
    lab.start_daemon(&edited);
    lab.assert_traffic(
        policy,
        &[
            ("203.0.113.7", "tcp/443", "drop"),
            ("203.0.113.7", "tcp/22", "drop"),
            ("203.0.113.7", "udp/5060", "pass"),
        ],
    );
    let json = |lab: &Lab, args: &[&str]| -> serde_json::Value {
        let out = lab.voipwall_ctl(args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let gens = json(&lab, &["--json", "generations"]);
    let newest = &gens[0];
    assert!(
        newest["policy"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!(
                "recompiled by {} from generation",
                env!("CARGO_PKG_VERSION")
            ))),
        "{gens}"
    );
    let st = json(&lab, &["--json", "status"]);
    let rc = &st["recompiled"];
    assert_eq!(rc["compiled_by"], "0.0.1", "{st}");
    assert_eq!(rc["applied"], newest["id"], "{st}");
    let text = String::from_utf8_lossy(&lab.voipwall_ctl(&["status"]).stdout).into_owned();
    assert!(text.contains("upgrade: generation"), "{text}");
    let log = std::fs::read_to_string(lab.dir.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("compiled again by"), "{log}");
    // The next start: this version compiled it; nothing to do.
    lab.stop_daemon();
    lab.start_daemon(&edited);
    assert!(
        json(&lab, &["--json", "status"])
            .get("recompiled")
            .is_none()
    );
    assert_eq!(
        json(&lab, &["--json", "generations"])[0]["id"],
        newest["id"]
    );
    // The operator rolls back to the old generation: the next start keeps
    // it as recorded (tcp/443 open again) and records nothing new.
    // In the firewall's namespace: rollback applies where the CLI runs.
    let out = lab.voipwall(&edited, &["rollback"]);
    assert!(out.status.success(), "{}", stderr(&out));
    lab.stop_daemon();
    lab.start_daemon(&edited);
    assert_eq!(lab.probe(&[("203.0.113.7", "tcp/443")]), vec!["pass"]);
    let st = json(&lab, &["--json", "status"]);
    assert!(
        st["recompiled"]["result"]
            .as_str()
            .is_some_and(|r| r.contains("a rollback")),
        "{st}"
    );
    assert_eq!(
        json(&lab, &["--json", "generations"])[0]["id"],
        newest["id"]
    );
    // A generation an even older voipwall applied, with no inputs kept:
    // applied as recorded (tcp/443 open), and status says why.
    lab.stop_daemon();
    tamper("UPDATE generations SET script = ?1, inputs = NULL");
    lab.start_daemon(&edited);
    assert_eq!(
        lab.probe(&[("203.0.113.7", "tcp/443"), ("203.0.113.7", "tcp/22")]),
        vec!["pass", "drop"]
    );
    let st = json(&lab, &["--json", "status"]);
    assert!(st["recompiled"]["compiled_by"].is_null(), "{st}");
    assert!(
        st["recompiled"]["result"]
            .as_str()
            .is_some_and(|r| r.contains("did not keep its inputs")),
        "{st}"
    );
    assert_eq!(
        host_tables(),
        host_before,
        "the host's own namespace was touched"
    );
}

/// Issue 25, item 13: a log file that does not exist and a journal this
/// host does not keep are not silent: `status` (text and JSON) says each
/// delivers nothing and why; once the file appears, it delivers, and a
/// brute force in it is banned (traffic dropped).
#[test]
fn log_sources_that_deliver_nothing_say_so_in_status() {
    let mut lab = Lab::new();
    lab.listen();
    let log = lab.dir.join("later/full");
    let policy = format!(
        "[interfaces]\nvw0 = \"internet\"\n\n[zones.internet]\nservices = [\"sip\"]\n\n[[source]]\nformat = \"asterisk\"\npath = \"{}\"\n\n[[source]]\nformat = \"kamailio\"\njournal = \"kamailio.service\"\n",
        log.display()
    );
    lab.apply(&policy);
    lab.start_daemon(&policy);
    let sources = |lab: &Lab| -> Vec<serde_json::Value> {
        let out = lab.voipwall_ctl(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["sources"].as_array().cloned().unwrap_or_default()
    };
    let find = |all: &[serde_json::Value], kind: &str| -> serde_json::Value {
        all.iter()
            .find(|s| s["source"].as_str().is_some_and(|x| x.starts_with(kind)))
            .cloned()
            .unwrap_or_default()
    };
    let journal_ends = std::fs::read_dir("/var/log/journal")
        .map_or(true, |mut d| d.next().is_none())
        && !Path::new("/run/log/journal").exists();
    lab.until("both sources report", || {
        let all = sources(&lab);
        let file = find(&all, "file");
        let journal = find(&all, "journal");
        file["state"]
            .as_str()
            .is_some_and(|s| s.contains("does not exist"))
            && (!journal_ends
                || journal["state"]
                    .as_str()
                    .is_some_and(|s| s.contains("keeps no journal")))
    });
    let text = lab.voipwall_ok(&policy, &["status"]);
    assert!(
        text.contains(&format!(
            "log source file {} (asterisk): NOT delivering: the file does not exist",
            log.display()
        )),
        "{text}"
    );
    if journal_ends {
        assert!(
            text.contains("log source journal kamailio.service (kamailio): NOT delivering: this host keeps no journal"),
            "{text}"
        );
    }
    // The file appears: it delivers, and what it says is acted on.
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "").unwrap();
    lab.until("the file is followed", || {
        find(&sources(&lab), "file")["delivering"] == true
    });
    let mut lines = String::new();
    for s in 0..5 {
        lines += &format!(
            "[2026-12-06 10:22:{s:02}] NOTICE[1] chan_sip.c: Registration from '<sip:1001@x>' failed for '203.0.113.7:5060' - Wrong password\n"
        );
    }
    std::fs::write(&log, lines).unwrap();
    lab.until("the lines are counted", || {
        find(&sources(&lab), "file")["lines"] == 5
    });
    lab.until("the brute force in the log is banned", || {
        lab.probe(&[("203.0.113.7", "udp/5060")]) == ["drop"]
    });
}

/// A sipp run in `ns` (`ip netns exec` execs sipp, so killing the child
/// kills sipp); every caller bounds it with sipp's own `-timeout`.
/// Office hours (UTC, every day) that exclude the current hour: a call
/// placed now is outside them.
fn hours_excluding_now() -> &'static str {
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600)
        % 24;
    if hour < 12 {
        "Mon-Sun 13:00-23:00 UTC"
    } else {
        "Mon-Sun 01:00-11:00 UTC"
    }
}

/// A sipp UAS for the PBX on the firewall's udp/5060 (the built-in one,
/// or a scenario of tests/support), given time to bind.
fn sipp_uas(lab: &Lab, scenario: Option<&str>) -> Reap {
    let support = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let sf = scenario.map(|s| support.join(s).display().to_string());
    let mut args = match &sf {
        Some(f) => vec!["-sf", f.as_str()],
        None => vec!["-sn", "uas"],
    };
    args.extend(["-i", "203.0.113.1", "-p", "5060", "-timeout", "120s"]);
    let uas = sipp(&lab.fw, &args)
        .spawn()
        .expect("sipp (apt-get install sip-tester)");
    std::thread::sleep(Duration::from_millis(300));
    Reap(uas)
}

fn sipp(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "sipp", "-nostdin"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Issue 23, call guard (passive): a sipp UAS stands for the PBX, a sipp
/// UAC from a trunk's address (the trunk named by the PBX's pjsip.conf, the
/// rule says `trunk:carrier`) places 5 calls held 10 s with
/// `max_concurrent = 3`: all 5 connect and two break the rule (alerts name
/// it); after the BYEs a new call breaks nothing. A source dialling a
/// premium-rate number is banned (rule `action = "ban"`); a call outside
/// office hours is alerted.
#[test]
fn call_rules_follow_calls_on_the_wire() {
    let mut lab = Lab::new();
    let ast = lab.dir.join("asterisk");
    std::fs::create_dir_all(&ast).expect("asterisk dir");
    std::fs::write(
        ast.join("pjsip.conf"),
        "[udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n\n[carrier]\ntype=identify\nendpoint=carrier\nmatch=203.0.113.2\n",
    )
    .expect("pjsip.conf");
    // Office hours that exclude now (UTC), on every day.
    let hours = hours_excluding_now();
    let policy = format!(
        r#"
[interfaces]
vw0 = "internet"

[zones.internet]
services = ["sip"]

[discover]
asterisk = "{ast}"
freeswitch = false
kamailio = false

[call]
max_duration = "1h"

[[call.rule]]
name = "trunk-a"
from = ["trunk:carrier"]
max_concurrent = 3

[[call.rule]]
name = "no-premium"
from = ["203.0.113.7/32"]
deny_to = ["premium"]
action = "ban"

[[call.rule]]
name = "office"
from = ["203.0.113.100/32"]
hours = "{hours}"

[[call.rule]]
name = "users"
from = ["user:1000-1099"]
max_concurrent = 1

[api]
listen = ["127.0.0.1:8787"]
"#,
        ast = ast.display()
    );
    // A trunk the PBX does not name is refused, with the names it has.
    let out = lab.voipwall(&policy.replace("trunk:carrier", "trunk:nope"), &["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("no trunk or peer named `nope`")
            && err.contains("known: carrier"),
        "{err}"
    );
    lab.apply(&policy);
    lab.start_daemon(&policy);
    let uas = sipp_uas(&lab, None);
    let uac = |src: &str, service: &str, calls: &str, hold_ms: &str| {
        sipp(
            &lab.peer,
            &[
                "-sn",
                "uac",
                "-s",
                service,
                "-i",
                src,
                "-p",
                "5070",
                "-m",
                calls,
                "-l",
                calls,
                "-r",
                "20",
                "-d",
                hold_ms,
                "-timeout",
                "40s",
                "203.0.113.1:5060",
            ],
        )
        .output()
        .expect("sipp uac")
    };
    let calls = |lab: &Lab| -> serde_json::Value {
        let out = lab.voipwall_ctl(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["calls"].clone()
    };
    let rule = |c: &serde_json::Value, name: &str| -> serde_json::Value {
        c["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    // Five calls at once, held 10 s: all connect (passive), two break the
    // rule. While they are up, a dialplan asking is told no.
    let held = sipp(
        &lab.peer,
        &[
            "-sn",
            "uac",
            "-s",
            "442079460000",
            "-i",
            "203.0.113.2",
            "-p",
            "5070",
            "-m",
            "5",
            "-l",
            "5",
            "-r",
            "20",
            "-d",
            "10000",
            "-timeout",
            "40s",
            "203.0.113.1:5060",
        ],
    )
    .spawn()
    .expect("sipp uac");
    lab.until("five calls are up", || {
        rule(&calls(&lab), "trunk-a")["active"] == 5
    });
    // A reload keeps the calls in progress counted.
    let out = lab.voipwall_ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = calls(&lab);
    assert_eq!(rule(&c, "trunk-a")["active"], 5, "{c}");
    let decide =
        |from: &str, to: &str| lab.voipwall_ctl(&["call", "decide", "--from", from, "--to", to]);
    let d = decide("203.0.113.2", "442079460000");
    assert_eq!(
        d.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&d.stdout)
    );
    // The same answer over HTTP, with a read token (what a dialplan uses).
    let token = lab.api_token(&policy, "read", "dialplan");
    let auth = format!("Authorization: Bearer {token}");
    let (code, body) = lab.curl(
        &lab.fw,
        "POST",
        "http://127.0.0.1:8787/api/v1/call/decide",
        &["-H", &auth, "-H", "Content-Type: application/json"],
        Some(r#"{"from":"203.0.113.2","to":"442079460000"}"#),
    );
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["allow"], false, "{body}");
    assert_eq!(v["broken"][0]["rule"], "trunk-a", "{body}");
    assert!(
        String::from_utf8_lossy(&d.stdout)
            .contains("call:trunk-a: a call to 442079460000 while 5 calls are up"),
        "{}",
        String::from_utf8_lossy(&d.stdout)
    );
    let out = held.wait_with_output().expect("sipp uac");
    let log = lab.dir.join("daemon.log");
    let report = |c: &serde_json::Value| {
        format!(
            "{c}\nsipp: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    let c = calls(&lab);
    assert!(
        out.status.success(),
        "not every call connected: {}",
        report(&c)
    );
    assert_eq!(rule(&c, "trunk-a")["violations"], 2, "{}", report(&c));
    // The BYEs reach the daemon through NFLOG as sipp sees their answers.
    lab.until("the BYEs are seen", || {
        rule(&calls(&lab), "trunk-a")["active"] == 0
    });
    let events = lab.voipwall_ctl(&["--json", "events", "--limit", "100"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("call:trunk-a") && events.contains("max_concurrent = 3"),
        "{events}"
    );
    // After the BYEs, a new call breaks nothing, and the dialplan is told so.
    let d = decide("203.0.113.2", "442079460000");
    assert!(d.status.success() && String::from_utf8_lossy(&d.stdout).trim() == "allow");
    let d = decide("203.0.113.7", "0088212345678");
    assert!(String::from_utf8_lossy(&d.stdout).contains("call:no-premium"));
    let out = uac("203.0.113.2", "442079460000", "1", "200");
    assert!(out.status.success());
    assert_eq!(rule(&calls(&lab), "trunk-a")["violations"], 2);
    // Premium-rate: the caller is banned, and its next INVITE is dropped.
    let _ = uac("203.0.113.7", "0088212345678", "1", "200");
    let bans = lab.voipwall_ctl(&["--json", "bans"]);
    let bans = String::from_utf8_lossy(&bans.stdout);
    assert!(
        bans.contains("203.0.113.7/32") && bans.contains("call:no-premium"),
        "{bans}\n{}",
        report(&calls(&lab))
    );
    assert_eq!(lab.count_set("vw_ban_v4"), 1, "{bans}");
    // Outside office hours.
    let _ = uac("203.0.113.100", "442079460000", "1", "200");
    assert_eq!(
        rule(&calls(&lab), "office")["violations"],
        1,
        "{}",
        report(&calls(&lab))
    );
    let text = lab.voipwall_ok(&policy, &["status"]);
    assert!(text.contains("trunk-a: 0 up, 2 broken"), "{text}");
    // By authenticated user: a PBX that challenges every call; two calls
    // at once as user 1042 (in 1000-1099, max_concurrent = 1): the second
    // breaks the rule, seen at its authenticated retry. User 2000's do not.
    drop(uas);
    let support = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let _uas = sipp_uas(&lab, Some("uas_auth.xml"));
    let auth_uac = |user: &str| {
        sipp(
            &lab.peer,
            &[
                "-sf",
                support.join("uac_auth.xml").to_str().unwrap(),
                "-au",
                user,
                "-ap",
                "x",
                "-s",
                "442079460000",
                "-i",
                "198.51.100.2",
                "-p",
                "5071",
                "-m",
                "2",
                "-l",
                "2",
                "-r",
                "20",
                "-d",
                "3000",
                "-timeout",
                "40s",
                "203.0.113.1:5060",
            ],
        )
        .output()
        .expect("sipp uac")
    };
    let out = auth_uac("2000");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rule(&calls(&lab), "users")["violations"], 0);
    let out = auth_uac("1042");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = calls(&lab);
    assert_eq!(rule(&c, "users")["violations"], 1, "{c}");
    lab.until("user 1042's BYEs are seen", || {
        rule(&calls(&lab), "users")["active"] == 0
    });
}

/// Issue 23, call guard inline: new INVITEs over UDP wait at an NFQUEUE
/// (an iptables-nft rule in the security table, after voipwall's input
/// chain) for the engine's verdict. Five concurrent calls from the trunk
/// with max_concurrent = 3: exactly three INVITEs reach the UAS (counted
/// by the kernel after the queue), the 4th and 5th never do; after the
/// BYEs a new call connects. Forbidden destinations and calls outside
/// office hours are dropped. With the daemon killed, calls still connect
/// (queue bypass); a clean stop removes the queue rule.
#[test]
fn inline_call_rules_drop_invites_at_the_queue() {
    let mut lab = Lab::new();
    let hours = hours_excluding_now();
    let policy = format!(
        r#"
[interfaces]
vw0 = "internet"

[zones.internet]
services = ["sip"]

[call]
mode = "inline"
max_duration = "1h"

[[call.rule]]
name = "trunk-a"
from = ["203.0.113.2/32"]
max_concurrent = 3
action = "drop"

[[call.rule]]
name = "no-premium"
from = ["203.0.113.7/32"]
deny_to = ["premium"]
action = "drop"

[[call.rule]]
name = "office"
from = ["203.0.113.100/32"]
hours = "{hours}"
action = "drop"
"#
    );
    // `drop` without inline mode is refused at its line.
    let out = lab.voipwall(
        &policy.replace("mode = \"inline\"", "mode = \"passive\""),
        &["check"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`drop` needs `mode = \"inline\"`"),
        "{err}"
    );
    lab.apply(&policy);
    // INVITEs that got past every input hook (the queue's is at 150).
    lab.nft(&["add", "table", "inet", "probe"]);
    lab.nft(&["add chain inet probe in { type filter hook input priority 200; policy accept; }"]);
    lab.nft(&["add rule inet probe in udp dport 5060 @th,64,48 0x494e56495445 counter"]);
    let reached = |lab: &Lab| -> u64 {
        let text = lab.nft(&["list", "chain", "inet", "probe", "in"]);
        text.split("packets ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let queue_rules = |lab: &Lab| -> String {
        let out = lab.exec(&lab.fw, &["iptables-nft", "-t", "security", "-S", "INPUT"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    lab.start_daemon(&policy);
    assert!(
        queue_rules(&lab).contains("voipwall call guard"),
        "{}",
        queue_rules(&lab)
    );
    // The queue rule is voipwall's own: audit names no other firewall.
    // (Its exit status is the worst finding's: this policy has some.)
    let audit = lab.voipwall(&policy, &["audit"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("judged against") && !audit.contains("table ip security"),
        "{audit}"
    );
    let _uas = sipp_uas(&lab, None);
    let uac = |src: &str, port: &str, service: &str, calls: &str, hold_ms: &str| {
        sipp(
            &lab.peer,
            &[
                "-sn",
                "uac",
                "-s",
                service,
                "-i",
                src,
                "-p",
                port,
                "-m",
                calls,
                "-l",
                calls,
                "-r",
                "20",
                "-d",
                hold_ms,
                "-max_invite_retrans",
                "2",
                "-timeout",
                "40s",
                "203.0.113.1:5060",
            ],
        )
    };
    let status = |lab: &Lab| -> serde_json::Value {
        let out = lab.voipwall_ctl(&["--json", "status"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let rule = |v: &serde_json::Value, name: &str| -> serde_json::Value {
        v["calls"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let log = lab.dir.join("daemon.log");
    let report = |v: &serde_json::Value| {
        format!("{v}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
    };
    assert_eq!(
        status(&lab)["inline"]["running"],
        true,
        "{}",
        report(&status(&lab))
    );
    // Five calls at once, held 10 s: three connect, two are dropped.
    let five = uac("203.0.113.2", "5070", "442079460000", "5", "10000")
        .output()
        .expect("sipp uac");
    let v = status(&lab);
    assert!(
        !five.status.success(),
        "every call connected: {}",
        report(&v)
    );
    assert_eq!(reached(&lab), 3, "{}", report(&v));
    assert_eq!(rule(&v, "trunk-a")["dropped"], 2, "{}", report(&v));
    assert_eq!(rule(&v, "trunk-a")["violations"], 2, "{}", report(&v));
    assert_eq!(
        rule(&v, "trunk-a")["active"],
        0,
        "the held calls ended: {}",
        report(&v)
    );
    assert!(
        v["inline"]["held"].as_u64().unwrap_or(0) >= 5,
        "{}",
        report(&v)
    );
    assert!(
        v["inline"]["verdict_latency_us"]["p99"].as_u64().is_some(),
        "{}",
        report(&v)
    );
    eprintln!("inline verdicts: {}", v["inline"]);
    // After the BYEs a new call connects.
    let one = uac("203.0.113.2", "5070", "442079460000", "1", "200")
        .output()
        .expect("sipp uac");
    assert!(one.status.success(), "{}", report(&status(&lab)));
    assert_eq!(reached(&lab), 4);
    // A forbidden destination and a call outside office hours: dropped.
    let premium = uac("203.0.113.7", "5071", "0088212345678", "1", "200")
        .output()
        .expect("sipp uac");
    let late = uac("203.0.113.100", "5072", "442079460000", "1", "200")
        .output()
        .expect("sipp uac");
    let v = status(&lab);
    assert!(
        !premium.status.success() && !late.status.success(),
        "{}",
        report(&v)
    );
    assert_eq!(reached(&lab), 4, "{}", report(&v));
    assert_eq!(rule(&v, "no-premium")["dropped"], 1, "{}", report(&v));
    assert_eq!(rule(&v, "office")["dropped"], 1, "{}", report(&v));
    // SIP methods are case-sensitive, but a PBX may read `invite` as an
    // INVITE: the queue holds it too.
    let py = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('203.0.113.7',5075))\n\
              s.sendto(b'invite sip:0088212345678@203.0.113.1 SIP/2.0\\r\\nVia: SIP/2.0/UDP 203.0.113.7:5075;branch=z9hG4bKlc1\\r\\n\
              From: <sip:x@203.0.113.7>;tag=1\\r\\nTo: <sip:0088212345678@203.0.113.1>\\r\\nCall-ID: lower-1\\r\\n\
              CSeq: 1 INVITE\\r\\nContent-Length: 0\\r\\n\\r\\n',('203.0.113.1',5060))\n";
    let out = lab.exec(&lab.peer, &["python3", "-c", py]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.until("the lower-case INVITE is dropped at the queue", || {
        rule(&status(&lab), "no-premium")["dropped"] == 2
    });
    // Another tool flushes the chain: the daemon puts the rules back.
    let out = lab.exec(&lab.fw, &["iptables-nft", "-t", "security", "-F", "INPUT"]);
    assert!(out.status.success());
    assert!(!queue_rules(&lab).contains("voipwall call guard"));
    lab.until("the queue rules are put back", || {
        queue_rules(&lab).contains("voipwall call guard")
            && status(&lab)["inline"]["rules_restored"] == 1
    });
    let events = lab.voipwall_ctl(&["--json", "events", "--limit", "100"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("call:no-premium") && events.contains("INVITE dropped"),
        "{events}"
    );
    let text = lab.voipwall_ctl(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("trunk-a: 0 up, 2 broken, 2 dropped")
            && text.contains("inline: queue 5060 running"),
        "{text}"
    );
    // The daemon killed during calls: the rule stays, the queue has no
    // listener, and calls connect (bypass), more than the rule allows.
    let held = uac("203.0.113.2", "5070", "442079460000", "2", "4000")
        .spawn()
        .expect("sipp uac");
    lab.until("two calls are up", || {
        rule(&status(&lab), "trunk-a")["active"] == 2
    });
    if let Some(mut d) = lab.daemon.take() {
        let _ = d.kill();
        let _ = d.wait();
    }
    assert!(queue_rules(&lab).contains("voipwall call guard"));
    let four = uac("203.0.113.2", "5073", "442079460000", "4", "200")
        .output()
        .expect("sipp uac");
    assert!(
        four.status.success(),
        "calls did not connect without the daemon: {}",
        String::from_utf8_lossy(&four.stderr)
    );
    assert!(held.wait_with_output().expect("sipp").status.success());
    assert_eq!(reached(&lab), 4 + 2 + 4);
    // Restarted, the daemon binds the queue again; stopped, it removes
    // the rule.
    lab.start_daemon(&policy);
    assert_eq!(status(&lab)["inline"]["running"], true);
    lab.stop_daemon();
    assert!(
        !queue_rules(&lab).contains("voipwall call guard"),
        "{}",
        queue_rules(&lab)
    );
}

/// Issue 23: a call the PBX hangs up stops counting at its BYE. The BYE is
/// a request the host sends; the ruleset copies outbound BYEs with the
/// responses, and the daemon ends the call it names (before, such calls
/// counted until max_duration, here an hour).
#[test]
fn calls_the_pbx_hangs_up_stop_counting() {
    let mut lab = Lab::new();
    let policy = r#"
[interfaces]
vw0 = "internet"

[zones.internet]
services = ["sip"]

[call]
max_duration = "1h"

[[call.rule]]
name = "trunk-a"
from = ["203.0.113.2/32"]
max_concurrent = 10
"#;
    lab.apply(policy);
    lab.start_daemon(policy);
    let support = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let _uas = sipp_uas(&lab, Some("uas_hangup.xml"));
    let active = |lab: &Lab| -> serde_json::Value {
        let out = lab.voipwall_ctl(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["calls"]["rules"][0]["active"].clone()
    };
    let uac = sipp(
        &lab.peer,
        &[
            "-sf",
            support.join("uac_hungup.xml").to_str().unwrap(),
            "-s",
            "442079460000",
            "-i",
            "203.0.113.2",
            "-p",
            "5070",
            "-m",
            "3",
            "-l",
            "3",
            "-r",
            "20",
            "-timeout",
            "30s",
            "203.0.113.1:5060",
        ],
    )
    .spawn()
    .expect("sipp uac");
    lab.until("three calls are up", || active(&lab) == 3);
    let out = uac.wait_with_output().expect("sipp uac");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.until("the PBX's BYEs end the calls", || active(&lab) == 0);
    let copied = lab.nft(&["list", "counter", "inet", "voipwall", "vw_nflog_out"]);
    assert!(!copied.contains("packets 0 "), "{copied}");
}
