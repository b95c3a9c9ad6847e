//! The Redis Streams fleet (issue 22) on real parts: three voipwall daemons
//! in three namespaces and a real `redis-server` with one ACL user per
//! node, in a hub namespace that also holds the attackers; everything is
//! joined by a bridge in the hub (documentation addresses only, nothing
//! leaves the namespaces, every traffic loop bounded).
//!
//! ```text
//!   hub   192.0.2.1 (br0; redis on 6379), attackers 203.0.113.66-69, .99 on lo
//!   n1    192.0.2.11   n2 192.0.2.12   n3 192.0.2.13   (voipwall daemons)
//! ```
//!
//! Needs root, ip, nft, python3 and redis-server (`scripts/test` installs
//! them).

mod common;
use common::must;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const NODES: [&str; 3] = ["n1", "n2", "n3"];

fn node_addr(n: &str) -> String {
    format!("192.0.2.1{}", &n[1..])
}

fn probe_py() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/probe.py")
        .display()
        .to_string()
}

struct FleetLab {
    id: String,
    dir: PathBuf,
    redis: Option<Reap>,
    daemons: Vec<Option<Reap>>,
    listeners: Vec<Reap>,
}

impl FleetLab {
    fn ns(&self, n: &str) -> String {
        format!("vwf-{n}-{}", self.id)
    }

    fn new() -> Self {
        let id = common::lab_id();
        let dir = std::env::temp_dir().join(format!("voipwall-fleet-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Self {
            id,
            dir,
            redis: None,
            daemons: vec![None, None, None],
            listeners: Vec::new(),
        };
        let hub = lab.ns("hub");
        must(&["ip", "netns", "add", &hub]);
        must(&["ip", "-n", &hub, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must(&[
            "ip",
            "-n",
            &hub,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            "br0",
        ]);
        must(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for a in [
            "203.0.113.66",
            "203.0.113.67",
            "203.0.113.68",
            "203.0.113.69",
            "203.0.113.99",
        ] {
            must(&[
                "ip",
                "-n",
                &hub,
                "addr",
                "add",
                &format!("{a}/32"),
                "dev",
                "lo",
            ]);
        }
        for n in NODES {
            let ns = lab.ns(n);
            must(&["ip", "netns", "add", &ns]);
            let hub_end = format!("h{n}");
            must(&[
                "ip", "link", "add", "v0", "netns", &ns, "type", "veth", "peer", "name", &hub_end,
                "netns", &hub,
            ]);
            must(&["ip", "-n", &hub, "link", "set", &hub_end, "master", "br0"]);
            must(&["ip", "-n", &hub, "link", "set", &hub_end, "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", node_addr(n)),
                "dev",
                "v0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "v0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "203.0.113.0/24",
                "via",
                "192.0.2.1",
            ]);
            let l = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "python3",
                    &probe_py(),
                    "listen",
                    "udp/5060",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            lab.listeners.push(Reap(l));
        }
        lab
    }

    fn redis_conf(&self) -> PathBuf {
        let d = self.dir.join("redis");
        std::fs::create_dir_all(&d).unwrap();
        let mut conf = format!(
            "port 6379\nbind 0.0.0.0\nprotected-mode no\ndaemonize no\nsave \"\"\nappendonly yes\nappendfsync always\ndir {}\n\
             user default off\nuser admin on >admin-pw-for-tests ~* &* +@all\n",
            d.display()
        );
        for n in NODES {
            // A node writes only its own stream, reads every stream and
            // the allow list, and may run nothing else.
            conf.push_str(&format!(
                "user {n} on >pw-{n}-for-tests resetkeys %W~voipwall:bans:{n} %R~voipwall:bans:* resetchannels -@all +auth +hello +ping +xadd +xread +smembers\n"
            ));
        }
        let path = d.join("redis.conf");
        std::fs::write(&path, conf).unwrap();
        path
    }

    fn start_redis(&mut self) {
        let conf = self.redis_conf();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("hub"), "redis-server"])
            .arg(&conf)
            .stdout(std::fs::File::create(self.dir.join("redis.log")).unwrap())
            .spawn()
            .expect("redis-server");
        self.redis = Some(Reap(child));
        self.until("redis answers", || {
            self.redis_cli("hub", "admin", "admin-pw-for-tests", &["PING"])
                .contains("PONG")
        });
    }

    fn redis_cli(&self, ns: &str, user: &str, pw: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(ns),
                "redis-cli",
                "-h",
                "192.0.2.1",
                "--user",
                user,
                "--pass",
                pw,
                "--no-auth-warning",
            ])
            .args(args)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn policy(&self, n: &str) -> String {
        let others: Vec<String> = NODES
            .iter()
            .filter(|x| **x != n)
            .map(|x| format!("\"{x}\""))
            .collect();
        let pw = self.dir.join(format!("{n}.pass"));
        std::fs::write(&pw, format!("pw-{n}-for-tests\n")).unwrap();
        format!(
            r#"
[interfaces]
v0 = "internet"

[zones.internet]
services = ["sip"]

[fleet]
redis = "redis://192.0.2.1:6379"
node = "{n}"
password_file = "{}"
nodes = [{}]
"#,
            pw.display(),
            others.join(", ")
        )
    }

    fn node_dir(&self, n: &str) -> PathBuf {
        let d = self.dir.join(n);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn voipwall(&self, n: &str, args: &[&str]) -> Output {
        let d = self.node_dir(n);
        Command::new("ip")
            .args(["netns", "exec", &self.ns(n), env!("CARGO_BIN_EXE_voipwall")])
            .env("VOIPWALL_SOCKET", d.join("sock"))
            .arg("--state-dir")
            .arg(d.join("state"))
            .arg("-c")
            .arg(d.join("policy.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    fn start(&mut self, i: usize) {
        let n = NODES[i];
        let d = self.node_dir(n);
        std::fs::write(d.join("policy.toml"), self.policy(n)).unwrap();
        std::fs::write(d.join("boot_id"), "fleet-test\n").unwrap();
        std::fs::write(d.join("uptime"), "86400.00 1.00\n").unwrap();
        if self.daemons[i].is_none() {
            let out = self.voipwall(n, &["apply"]);
            assert!(
                out.status.success(),
                "{n} apply: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("daemon.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(n), env!("CARGO_BIN_EXE_voipwall")])
            .env("VOIPWALL_BOOT_ID_FILE", d.join("boot_id"))
            .env("VOIPWALL_UPTIME_FILE", d.join("uptime"))
            .arg("--state-dir")
            .arg(d.join("state"))
            .arg("-c")
            .arg(d.join("policy.toml"))
            .args(["daemon", "--socket"])
            .arg(d.join("sock"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemons[i] = Some(Reap(child));
        self.until(&format!("{n} answers"), || {
            self.voipwall(n, &["status"]).status.success()
        });
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut r) = self.daemons[i].take() {
            let c = &mut r.0;
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn fleet(&self, n: &str) -> serde_json::Value {
        let out = self.voipwall(n, &["--json", "fleet", "status"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// One scanner OPTIONS from `src` (an attacker address of the hub) to
    /// node `n`.
    fn scan(&self, src: &str, n: &str) {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{src}',5070))\ns.sendto(b'OPTIONS sip:100@x SIP/2.0\\r\\nVia: SIP/2.0/UDP {src}:5070;branch=z9hG4bK{n}\\r\\nFrom: <sip:100@x>;tag=1\\r\\nTo: <sip:100@x>\\r\\nCall-ID: {n}-{src}@x\\r\\nCSeq: 1 OPTIONS\\r\\nUser-Agent: friendly-scanner\\r\\nContent-Length: 0\\r\\n\\r\\n',('{}',5060))\n",
            node_addr(n)
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("hub"), "python3", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// "pass" or "drop" for a SIP datagram from `src` to node `n`.
    fn probe(&self, src: &str, n: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("hub"),
                "python3",
                &probe_py(),
                "probe",
                src,
                "udp/5060",
                &node_addr(n),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().last().unwrap_or("").to_string()
    }

    fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !f() {
            if Instant::now() > until {
                let logs: Vec<String> = NODES
                    .iter()
                    .map(|n| {
                        format!(
                            "--- {n}\n{}",
                            std::fs::read_to_string(self.dir.join(n).join("daemon.log"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                panic!("timed out waiting for {what}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        for i in 0..NODES.len() {
            self.stop(i);
        }
        self.redis = None;
        self.listeners.clear();
        for n in NODES.iter().chain(&["hub"]) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three nodes and a real Redis: Redis's ACL keeps a node to its own
/// stream and off the allow list (shown by redis-cli as that node); a
/// scanner banned on node 1 is dropped on nodes 2 and 3 (traffic); an
/// operator's unban on node 1 lifts it everywhere; an address of the
/// central allow list is never applied on another node; node 3 stopped
/// during an attack catches up when restarted; Redis killed and restarted
/// loses no ban.
#[test]
fn a_ban_on_one_node_is_dropped_on_the_others_through_redis_streams() {
    let mut lab = FleetLab::new();
    lab.start_redis();
    // The ACL, as node 1 sees it.
    let forged = lab.redis_cli(
        "n1",
        "n1",
        "pw-n1-for-tests",
        &["XADD", "voipwall:bans:n2", "*", "v", "1"],
    );
    assert!(forged.contains("NOPERM"), "{forged}");
    let allow = lab.redis_cli(
        "n1",
        "n1",
        "pw-n1-for-tests",
        &["SADD", "voipwall:bans:allow", "203.0.113.66"],
    );
    assert!(allow.contains("NOPERM"), "{allow}");
    // The central allow list, by the admin.
    let added = lab.redis_cli(
        "hub",
        "admin",
        "admin-pw-for-tests",
        &["SADD", "voipwall:bans:allow", "203.0.113.99"],
    );
    assert!(added.contains('1'), "{added}");
    for i in 0..3 {
        lab.start(i);
    }
    for n in NODES {
        lab.until(&format!("{n} reached Redis"), || {
            let f = lab.fleet(n);
            f["connected"] == true && f["allow"] == 1
        });
    }
    // A scanner on node 1: dropped on 2 and 3.
    lab.scan("203.0.113.66", "n1");
    for n in ["n2", "n3"] {
        lab.until(&format!("{n} drops 203.0.113.66"), || {
            lab.probe("203.0.113.66", n) == "drop"
        });
    }
    let f2 = lab.fleet("n2");
    assert_eq!(f2["nodes"]["n1"]["held"], 1, "{f2}");
    let why = lab.voipwall(
        "n2",
        &["explain", "203.0.113.66", "udp/5060", "--iface", "v0"],
    );
    let why = String::from_utf8_lossy(&why.stdout).into_owned();
    assert!(why.contains("the fleet's bans"), "{why}");
    // The central allow list wins over an operator's ban on node 1.
    let out = lab.voipwall("n1", &["ban", "203.0.113.99", "--for", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.until("node 2 refused the allow-listed ban", || {
        lab.fleet("n2")["last_refusal"]
            .as_str()
            .is_some_and(|r| r.contains("203.0.113.99") || r.contains("central allow list"))
    });
    assert_eq!(lab.probe("203.0.113.99", "n2"), "pass");
    assert_eq!(lab.probe("203.0.113.99", "n1"), "drop");
    // Node 3 away during an attack catches up.
    lab.stop(2);
    lab.scan("203.0.113.67", "n1");
    lab.until("node 2 drops 203.0.113.67", || {
        lab.probe("203.0.113.67", "n2") == "drop"
    });
    lab.start(2);
    lab.until("node 3 caught up", || {
        lab.probe("203.0.113.67", "n3") == "drop"
    });
    // Redis killed: bans wait on node 1 and arrive after Redis restarts;
    // nothing Redis held before is lost (append-only file).
    lab.redis = None;
    lab.scan("203.0.113.68", "n1");
    lab.until("node 1 queued the ban", || {
        let f = lab.fleet("n1");
        f["connected"] == false && f["queued"].as_u64().is_some_and(|q| q >= 1)
    });
    lab.start_redis();
    for n in ["n2", "n3"] {
        lab.until(&format!("{n} drops 203.0.113.68"), || {
            lab.probe("203.0.113.68", n) == "drop"
        });
    }
    let len = lab.redis_cli(
        "hub",
        "admin",
        "admin-pw-for-tests",
        &["XLEN", "voipwall:bans:n1"],
    );
    assert!(len.trim().parse::<u32>().unwrap_or(0) >= 4, "{len}");
    // An operator's unban on node 1 travels too.
    let out = lab.voipwall("n1", &["unban", "203.0.113.66"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in ["n2", "n3"] {
        lab.until(&format!("{n} lifted 203.0.113.66"), || {
            lab.probe("203.0.113.66", n) == "pass"
        });
    }
    let text = lab.voipwall("n2", &["fleet", "status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("node n1:") && text.contains("connected"),
        "{text}"
    );
}
