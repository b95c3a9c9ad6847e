//! `voipwall replay` end to end on files: logs with their own timestamps,
//! JSON output, the attacker-controlled From header, and a SIP capture.
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn replay(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .arg("replay")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn bans(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn asterisk_log_bans_at_the_fifth_failure_with_the_logs_own_time() {
    let mut log = String::new();
    // Four failures from the attacker, one from a phone whose address the
    // attacker wrote into its From header, then the fifth failure.
    for s in 0..4 {
        log += &format!(
            "[2026-11-23 10:22:{s:02}] NOTICE[1] chan_sip.c: Registration from '<sip:1001@198.51.100.20>' failed for '198.51.100.20:5060' - Wrong password' failed for '203.0.113.9:5060' - Wrong password\n"
        );
    }
    log += "[2026-11-23 10:22:30] VERBOSE[1] pbx.c: Executing [100@from-internal:1] Dial(\"PJSIP/1\")\n";
    log += "[2026-11-23 10:22:40] NOTICE[1] chan_sip.c: Registration from '<sip:1001@x>' failed for '203.0.113.9:5060' - Wrong password\n";
    let b = bans(&replay(&["--json", "--format", "asterisk"], log.as_bytes()));
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["addr"], "203.0.113.9/32");
    assert_eq!(b[0]["rule"], "auth-bruteforce");
    assert_eq!(b[0]["at"], "2026-11-23T10:22:40.000Z");
    assert_eq!(b[0]["until"], "2026-11-23T11:22:40.000Z");
    assert_eq!(b[0]["evidence"].as_array().unwrap().len(), 5);
    // Four failures only: nothing.
    let four: String = log.lines().take(4).map(|l| format!("{l}\n")).collect();
    assert!(
        bans(&replay(
            &["--json", "--format", "asterisk"],
            four.as_bytes()
        ))
        .is_empty()
    );
}

#[test]
fn user_regex_format_and_errors() {
    let log = "x 203.0.113.7 bad\n".repeat(5);
    let out = replay(
        &[
            "--json",
            "--regex",
            r"^x (?P<addr>\S+) bad$",
            "--event",
            "auth-failed",
        ],
        log.as_bytes(),
    );
    let b = bans(&out);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["addr"], "203.0.113.7/32");
    let e = replay(&["--regex", "(unclosed", "--event", "auth-failed"], b"");
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("invalid regex"));
    let e = replay(&["--format", "asterix"], b"");
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("unknown format `asterix`"));
}

fn udp_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&5060u16.to_be_bytes());
    p.extend_from_slice(&5060u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[test]
fn pcap_replay_matches_responses_to_requests() {
    // Classic pcap, raw-IP link type: the attacker's authenticated REGISTERs
    // each answered 401 by the PBX; the fifth crosses the threshold.
    let mut f = vec![
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0,
    ];
    let attacker = [203, 0, 113, 9];
    let pbx = [198, 51, 100, 1];
    for (t, i) in (1_795_400_000u32..).zip(0..5) {
        let req = format!(
            "REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK{i}\r\nFrom: <sip:1001@pbx>;tag=1\r\nTo: <sip:1001@pbx>\r\nCall-ID: c{i}\r\nCSeq: 2 REGISTER\r\nAuthorization: Digest username=\"1001\", realm=\"pbx\", nonce=\"n\", uri=\"sip:pbx\", response=\"r\"\r\nContent-Length: 0\r\n\r\n"
        );
        let resp = format!(
            "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK{i}\r\nFrom: <sip:1001@pbx>;tag=1\r\nTo: <sip:1001@pbx>;tag=2\r\nCall-ID: c{i}\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n"
        );
        for p in [
            udp_packet(attacker, pbx, req.as_bytes()),
            udp_packet(pbx, attacker, resp.as_bytes()),
        ] {
            f.extend_from_slice(&t.to_le_bytes());
            f.extend_from_slice(&0u32.to_le_bytes());
            f.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
            f.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
            f.extend_from_slice(&p);
        }
    }
    let path = std::env::temp_dir().join(format!("voipwall-replay-{}.pcap", std::process::id()));
    std::fs::write(&path, &f).unwrap();
    let out = replay(
        &[
            "--json",
            "--pcap",
            "--pbx",
            "198.51.100.1",
            path.to_str().unwrap(),
        ],
        b"",
    );
    // Issue 19: a family no --pbx names is not skipped silently.
    let other_family = replay(
        &[
            "--json",
            "--pcap",
            "--pbx",
            "2001:db8::1",
            path.to_str().unwrap(),
        ],
        b"",
    );
    let both = replay(
        &[
            "--json",
            "--pcap",
            "--pbx",
            "198.51.100.1",
            "--pbx",
            "2001:db8::1",
            path.to_str().unwrap(),
        ],
        b"",
    );
    std::fs::remove_file(&path).ok();
    let warned = String::from_utf8_lossy(&other_family.stderr);
    assert!(
        warned.contains("warning: 10 SIP messages over IPv4 were left out"),
        "{warned}"
    );
    assert!(bans(&other_family).is_empty());
    let quiet = String::from_utf8_lossy(&both.stderr);
    assert!(!quiet.contains("warning"), "{quiet}");
    assert_eq!(bans(&both).len(), 1);
    let b = bans(&out);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["addr"], "203.0.113.9/32");
    assert_eq!(b[0]["rule"], "auth-bruteforce");
    assert_eq!(b[0]["at"], "2026-11-23T02:13:24.000Z");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("\"sip_messages\":10"), "{summary}");
}

fn tcp_packet(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let total = 20 + 20 + payload.len();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    p
}

fn pcap_file(name: &str, packets: &[Vec<u8>]) -> std::path::PathBuf {
    let mut f = vec![
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0,
    ];
    for (i, p) in packets.iter().enumerate() {
        let t = 1_795_400_000u32 + u32::try_from(i / 4).unwrap();
        f.extend_from_slice(&t.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
        f.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
        f.extend_from_slice(p);
    }
    let path = std::env::temp_dir().join(format!(
        "voipwall-replay-{name}-{}.pcap",
        std::process::id()
    ));
    std::fs::write(&path, &f).unwrap();
    path
}

/// Five wrong-password attempts, each a REGISTER with credentials and the
/// PBX's 401, as (request, response) text.
fn attempts() -> Vec<(String, String)> {
    (0..5)
        .map(|i| {
            (
                format!("REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.9;branch=z9hG4bK{i}\r\nFrom: <sip:1001@pbx>;tag=1\r\nTo: <sip:1001@pbx>\r\nCall-ID: c{i}\r\nCSeq: 2 REGISTER\r\nAuthorization: Digest username=\"1001\", realm=\"pbx\", nonce=\"n\", uri=\"sip:pbx\", response=\"r\"\r\nContent-Length: 0\r\n\r\n"),
                format!("SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/TCP 203.0.113.9;branch=z9hG4bK{i}\r\nFrom: <sip:1001@pbx>;tag=1\r\nTo: <sip:1001@pbx>;tag=2\r\nCall-ID: c{i}\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n"),
            )
        })
        .collect()
}

/// Issue 13: `replay --pcap` reassembles SIP over TCP (each message split
/// in two segments mid-header) and over WebSocket (on the policy's ws
/// port), and `replay --hep` reads the SIP inside HEP packets with the
/// addresses HEP gives, over UDP and over TCP with each packet cut across
/// segments (issue 25, item 8); each bans the guesser at the fifth
/// failure, as the daemon would.
#[test]
fn pcap_replay_reassembles_tcp_and_reads_hep() {
    let (att, pbx, collector) = ([203, 0, 113, 9], [198, 51, 100, 1], [198, 51, 100, 50]);
    let mut tcp = Vec::new();
    let mut hep = Vec::new();
    let (mut up, mut down) = (1000u32, 5000u32);
    for (req, resp) in attempts() {
        let (a, b) = req.as_bytes().split_at(40);
        tcp.push(tcp_packet(att, pbx, 40000, 5060, up, a));
        tcp.push(tcp_packet(att, pbx, 40000, 5060, up + 40, b));
        up += u32::try_from(req.len()).unwrap();
        tcp.push(tcp_packet(pbx, att, 5060, 40000, down, resp.as_bytes()));
        down += u32::try_from(resp.len()).unwrap();
        for (m, (src, dst, sport, dport)) in [
            (&req, (att, pbx, 40000, 5061)),
            (&resp, (pbx, att, 5061, 40000)),
        ] {
            let h = voipwall_sip::hep::Hep {
                version: 3,
                src: std::net::IpAddr::from(src),
                dst: std::net::IpAddr::from(dst),
                sport,
                dport,
                ip_proto: 22,
                payload_type: Some(1),
                capture_id: Some(1),
                time: None,
                payload: m.as_bytes(),
            };
            hep.push(udp_packet(
                pbx,
                collector,
                &voipwall_sip::hep::encode_v3(&h),
            ));
        }
    }
    // The same HEP packets over one TCP connection to the collector, each
    // packet cut across two segments, one segment sent twice.
    let mut hep_tcp = Vec::new();
    let mut seq = 7000u32;
    for p in &hep {
        let payload = &p[28..];
        let (a, b) = payload.split_at(payload.len() / 2);
        hep_tcp.push(tcp_packet(pbx, collector, 41000, 9060, seq, a));
        hep_tcp.push(tcp_packet(pbx, collector, 41000, 9060, seq, a));
        hep_tcp.push(tcp_packet(
            pbx,
            collector,
            41000,
            9060,
            seq + u32::try_from(a.len()).unwrap(),
            b,
        ));
        seq += u32::try_from(payload.len()).unwrap();
    }
    // SIP over WebSocket on the port the policy's sip-ws service names:
    // the upgrade, then masked frames, each request cut across segments.
    let mut ws = Vec::new();
    let (mut up, mut down) = (1000u32, 5000u32);
    let upgrade = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    ws.push(tcp_packet(att, pbx, 40001, 5066, up, upgrade));
    up += u32::try_from(upgrade.len()).unwrap();
    for (req, resp) in attempts() {
        let f = voipwall_sip::ws::encode(1, true, Some([7, 7, 7, 7]), req.as_bytes());
        let (a, b) = f.split_at(30);
        ws.push(tcp_packet(att, pbx, 40001, 5066, up, a));
        ws.push(tcp_packet(att, pbx, 40001, 5066, up + 30, b));
        up += u32::try_from(f.len()).unwrap();
        let r = voipwall_sip::ws::encode(1, true, None, resp.as_bytes());
        ws.push(tcp_packet(pbx, att, 5066, 40001, down, &r));
        down += u32::try_from(r.len()).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("voipwall-replay-ws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[interfaces]\neth0 = \"internet\"\n[zones.internet]\nservices = [\"sip\", \"sip-ws\"]\n[discover]\nasterisk = false\nfreeswitch = false\nkamailio = false\n",
    )
    .unwrap();
    for (flag, packets) in [
        ("--pcap", tcp),
        ("--hep", hep),
        ("--hep", hep_tcp),
        ("--pcap", ws),
    ] {
        let path = pcap_file(&flag[2..], &packets);
        let out = replay(
            &[
                "-c",
                policy.to_str().unwrap(),
                "--json",
                flag,
                "--pbx",
                "198.51.100.1",
                path.to_str().unwrap(),
            ],
            b"",
        );
        std::fs::remove_file(&path).ok();
        let b = bans(&out);
        let summary = String::from_utf8_lossy(&out.stderr);
        assert_eq!(b.len(), 1, "{flag}: {b:?} {summary}");
        assert_eq!(b[0]["addr"], "203.0.113.9/32", "{flag}");
        assert_eq!(b[0]["rule"], "auth-bruteforce", "{flag}");
        assert!(summary.contains("\"sip_messages\":10"), "{flag}: {summary}");
    }
}

#[test]
fn the_policys_detect_section_tunes_replay() {
    let dir = std::env::temp_dir().join(format!("voipwall-replay-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        r#"
[interfaces]
eth0 = "internet"

[[allow]]
address = "198.51.100.7"
description = "NOC"

[detect.rules.auth-bruteforce]
thresholds = [{ count = 3, within = "60s", ban = "2h" }]

[[detect.logformat]]
id = "portal"
event = "auth-failed"
regex = 'portal: login failed from (?P<addr>\S+)$'
"#,
    )
    .unwrap();
    let log = "portal: login failed from 203.0.113.5\n".repeat(3)
        + &"portal: login failed from 198.51.100.7\n".repeat(3);
    let out = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .args([
            "-c",
            policy.to_str().unwrap(),
            "replay",
            "--json",
            "--format",
            "portal",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(log.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let v = bans(&out);
    // The third failure bans for two hours (policy threshold); the allow-listed
    // NOC address is never banned: an alert says so.
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["addr"], "203.0.113.5/32");
    assert_eq!(v[0]["ttl_s"], 7200);
    assert_eq!(v[1]["alert"], true);
    assert_eq!(v[1]["addr"], "198.51.100.7");
}

#[test]
fn a_missing_explicit_policy_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .args(["-c", "/nonexistent/voipwall.toml", "replay"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// Issue 24: `replay` shows an account's shield and the bans it caused,
/// with the capture's times. Twelve sources of one /24 each try one wrong
/// password for 1001 (a challenge with a nonce of its own, then the
/// refused retry), a second apart: the tenth shields the account and bans
/// its ten sources, the eleventh and twelfth are banned at their first. A
/// log (no nonce to check) shows the shield and alerts, no bans.
#[test]
fn replay_shows_account_shields_and_their_bans() {
    let pbx = [198, 51, 100, 1];
    let mut packets = Vec::new();
    for i in 0..12u8 {
        let src = [203, 0, 113, 10 + i];
        let ip = format!("203.0.113.{}", 10 + i);
        let head = |cseq: u32, auth: &str| {
            format!(
                "REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP {ip};branch=z9hG4bK{i}{cseq}\r\nFrom: <sip:1001@pbx>;tag=1\r\nTo: <sip:1001@pbx>\r\nCall-ID: s{i}\r\nCSeq: {cseq} REGISTER\r\n{auth}Content-Length: 0\r\n\r\n"
            )
        };
        let answer = |cseq: u32, code: &str, extra: &str| {
            format!(
                "SIP/2.0 {code}\r\nVia: SIP/2.0/UDP {ip};branch=z9hG4bK{i}{cseq}\r\nFrom: <sip:1001@pbx>;tag=1\r\nTo: <sip:1001@pbx>;tag=2\r\nCall-ID: s{i}\r\nCSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
            )
        };
        packets.push(udp_packet(src, pbx, head(1, "").as_bytes()));
        packets.push(udp_packet(
            pbx,
            src,
            answer(
                1,
                "401 Unauthorized",
                &format!("WWW-Authenticate: Digest realm=\"pbx\", nonce=\"nonce{i}\"\r\n"),
            )
            .as_bytes(),
        ));
        packets.push(udp_packet(
            src,
            pbx,
            head(
                2,
                &format!("Authorization: Digest username=\"1001\", realm=\"pbx\", nonce=\"nonce{i}\", uri=\"sip:pbx\", response=\"r\"\r\n"),
            )
            .as_bytes(),
        ));
        packets.push(udp_packet(
            pbx,
            src,
            answer(2, "403 Forbidden", "").as_bytes(),
        ));
    }
    let path = pcap_file("shield", &packets);
    let out = replay(&["--json", "--pcap", path.to_str().unwrap()], b"");
    std::fs::remove_file(&path).ok();
    let lines = bans(&out);
    let shield: Vec<_> = lines.iter().filter(|l| l["shield"] == true).collect();
    assert_eq!(shield.len(), 1, "{lines:?}");
    assert_eq!(shield[0]["account"], "1001");
    assert_eq!(shield[0]["sources"], 10);
    // The tenth failure's time in the capture (one attempt a second).
    assert_eq!(shield[0]["at"], "2026-11-23T02:13:29.000Z");
    let banned: Vec<&str> = lines
        .iter()
        .filter(|l| l["rule"] == "account-guessing" && l["addr"].is_string())
        .map(|l| l["addr"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (10..22).map(|i| format!("203.0.113.{i}/32")).collect();
    assert_eq!(banned, want, "{lines:?}");
    let last = lines
        .iter()
        .find(|l| l["addr"] == "203.0.113.21/32")
        .unwrap();
    assert_eq!(last["at"], "2026-11-23T02:13:31.000Z");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("shielded account 1001")),
        "{last}"
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("\"shields\":1"), "{summary}");

    // From a log: the shield with the log's time, alerts, no bans.
    let mut log = String::new();
    for i in 0..10 {
        log += &format!(
            "[2026-11-23 10:22:{i:02}] NOTICE[1] chan_sip.c: Registration from '<sip:1001@x>' failed for '203.0.113.{}:5060' - Wrong password\n",
            10 + i
        );
    }
    let lines = bans(&replay(&["--json", "--format", "asterisk"], log.as_bytes()));
    assert!(
        lines.iter().any(|l| l["shield"] == true
            && l["account"] == "1001"
            && l["at"] == "2026-11-23T10:22:09.000Z"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["addr"].is_null() || l["alert"] == true),
        "{lines:?}"
    );
}

/// Issue 25, item 2: a file split across parser threads gives exactly the
/// bans (and alerts, in the same order, at the same times) one thread
/// gives. The log is the benchmark's generated Asterisk log, 60,000 lines
/// (about 10 MB: ten chunks), attack-heavy.
#[test]
fn every_thread_count_gives_the_bans_of_one_thread() {
    let dir = std::env::temp_dir().join(format!("vw-replay-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("full");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/gen-asterisk-log.py"
    );
    let ok = Command::new("python3")
        .args([script, "60000"])
        .arg(&log)
        .arg("7")
        .status()
        .unwrap()
        .success();
    assert!(ok, "generating the log");
    let run = |threads: &str| -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_voipwall"))
            .args([
                "replay",
                "--format",
                "asterisk",
                "--json",
                "--threads",
                threads,
            ])
            .arg(&log)
            .output()
            .unwrap();
        bans(&out)
    };
    let one = run("1");
    assert!(
        one.len() > 100,
        "an attack-heavy log bans many sources: {}",
        one.len()
    );
    for threads in ["2", "3", "8"] {
        assert_eq!(run(threads), one, "--threads {threads}");
    }
    // A regular file is read by the parser threads themselves; a pipe is
    // read in order by one thread: the same bans either way.
    let piped = Command::new(env!("CARGO_BIN_EXE_voipwall"))
        .args(["replay", "--format", "asterisk", "--json", "--threads", "2"])
        .stdin(std::fs::File::open(&log).unwrap())
        .output()
        .unwrap();
    assert_eq!(bans(&piped), one, "read from standard input");
    let _ = std::fs::remove_dir_all(&dir);
}
