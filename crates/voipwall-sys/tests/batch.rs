//! The netlink batch voipwall builds loads the same table as `nft -f` of
//! the script it prints. Every golden ruleset, and a policy with each
//! statement shape, goes into a fresh network namespace once through nft
//! and once as voipwall's own batch; `nft list` and `nft -j list` of the
//! two must be identical, on an empty kernel and over a table a previous
//! apply left (flush and refill, recreated sets, kept sets).
//!
//! Each test unshares a network namespace for its own thread; the `nft`
//! children it spawns inherit it and it disappears with the thread.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::process::Command;

use voipwall_nft::{
    Action, Chain, CtMatch, Element, Family, Hook, Match, Plane, Rule, Ruleset, Set, compile,
    netlink, render, render_changes,
};
use voipwall_policy::{Catalog, DataFile, HostFacts, SourceMap, load};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn policy(text: &str) -> voipwall_policy::Policy {
    let mut sm = SourceMap::default();
    let (cat, _) = Catalog::load(&DataFile::builtin(), &mut sm);
    load(
        "policy.toml",
        &mut |_| Ok(text.to_string()),
        &cat,
        &HostFacts::default(),
    )
    .policy
    .expect("valid policy")
}

fn ruleset(text: &str) -> Ruleset {
    compile(&policy(text), &voipwall_nft::golden_input())
}

fn nft(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft runs");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The table as nft lists it, text and JSON (handles included: the rules
/// must also come in the same order).
fn listing() -> (String, String) {
    (
        nft(&["-a", "list", "table", "inet", "voipwall"], None),
        nft(&["-j", "list", "table", "inet", "voipwall"], None),
    )
}

fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // Only the network namespace: the safe (deprecated) form is
            // enough, and the workspace forbids `unsafe`.
            #[allow(deprecated)]
            rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNET).expect("unshare");
            Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip");
            f()
        })
        .join()
        .expect("test thread")
    })
}

/// Loads `steps` in order in a fresh namespace, step `i` through the batch
/// when `batch(i)` says so and through `nft -f` otherwise (each over what
/// the step before left, as an apply over the generation in force does),
/// and lists the table after every step.
fn load_steps(
    name: &str,
    steps: &[Ruleset],
    batch: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<(String, String)> {
    in_new_netns(|| {
        let mut out = Vec::new();
        let mut prev: Option<&Ruleset> = None;
        for (i, rs) in steps.iter().enumerate() {
            if batch(i) {
                let b = match prev {
                    Some(p) => netlink::encode_changes(rs, p, &|_| true, 1),
                    None => netlink::encode(rs, 1),
                }
                .expect("encodes");
                if let Ok(dir) = std::env::var("VOIPWALL_BATCH_DUMP") {
                    std::fs::write(Path::new(&dir).join(format!("{name}-{i}.bin")), &b.bytes)
                        .unwrap();
                }
                voipwall_sys::nft::apply_batch(&b)
                    .unwrap_or_else(|e| panic!("{name}, step {i}: {e}"));
            } else {
                let script = match prev {
                    Some(p) => render_changes(rs, p, &|_| true),
                    None => render(rs),
                };
                nft(&["-f", "-"], Some(&script));
            }
            out.push(listing());
            prev = Some(rs);
        }
        out
    })
}

/// Loads `steps` through nft only, through the batch only, and through
/// both in turn (nft's table under the batch, the batch's under nft: an
/// upgrade, a rollback to a recorded script), and compares the listings
/// after every step.
fn same_both_ways(name: &str, steps: &[Ruleset]) {
    let by_nft = load_steps(name, steps, &|_| false);
    for (how, pick) in [
        ("batch", &(|_| true) as &(dyn Fn(usize) -> bool + Sync)),
        ("batch over nft", &|i| i % 2 == 1),
        ("nft over the batch", &|i| i % 2 == 0),
    ] {
        let other = load_steps(name, steps, pick);
        for (i, (a, b)) in by_nft.iter().zip(&other).enumerate() {
            if a.0 != b.0 {
                let diff: Vec<String> =
                    a.0.lines()
                        .zip(b.0.lines())
                        .filter(|(x, y)| x != y)
                        .take(10)
                        .map(|(x, y)| format!("nft:   {x}\n{how}: {y}"))
                        .collect();
                panic!(
                    "{name} ({how}), step {i}: listings differ\n{}",
                    diff.join("\n")
                );
            }
            assert_eq!(a.1, b.1, "{name} ({how}), step {i}: JSON listings differ");
        }
    }
}

#[test]
fn every_golden_ruleset_loads_the_same_table_as_nft() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../voipwall-nft/tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "golden cases: {cases:?}");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(case.join("policy.toml")).unwrap();
        let rs = ruleset(&text);
        // Cold, then the same again over it (sets kept), then again with
        // every policy set refilled.
        let mut refill = rs.clone();
        for s in &mut refill.sets {
            s.comment.push('.');
        }
        same_both_ways(&name, &[rs.clone(), rs, refill]);
    }
}

fn set(name: &str, family: Family, interval: bool, elements: Vec<Element>) -> Set {
    Set {
        name: name.into(),
        family,
        interval,
        timeout: false,
        dynamic: false,
        default_timeout: None,
        size: None,
        verdict_map: false,
        plane: Plane::Policy,
        recreate: false,
        elements,
        comment: format!("test set {name}"),
        live: false,
    }
}

fn el(lo: &str, hi: &str) -> Element {
    Element {
        lo: lo.parse().unwrap(),
        hi: hi.parse().unwrap(),
        goto: None,
    }
}

fn rule(matches: Vec<Match>, action: Action, counter: Option<&str>) -> Rule {
    Rule {
        matches,
        counter: counter.map(str::to_string),
        action,
        comment: "shape \"quoted\" and long ".repeat(8),
    }
}

/// Every match and action the IR has, in the shapes nft rewrites (one
/// value, one range, prefixes not on a byte boundary, ranges to the end of
/// the space), and a set large enough to span many element messages.
fn shapes(big: usize) -> Ruleset {
    use voipwall_policy::{PortSpec, Proto};
    let p = |proto, lo, hi| PortSpec { proto, lo, hi };
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    let mut sets = vec![
        set(
            "hosts4",
            Family::V4,
            false,
            vec![el("192.0.2.1", "192.0.2.1")],
        ),
        set(
            "nets4",
            Family::V4,
            true,
            vec![
                el("0.0.0.0", "0.255.255.255"),
                el("192.0.2.0", "192.0.2.127"),
                el("198.51.100.7", "198.51.100.7"),
                el("240.0.0.0", "255.255.255.255"),
            ],
        ),
        set(
            "nets6",
            Family::V6,
            true,
            vec![
                el("2001:db8::", "2001:db8::ffff"),
                el("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ],
        ),
        set(
            "big4",
            Family::V4,
            false,
            (0..big)
                .map(|i| {
                    let a = std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32 * 3).to_string();
                    el(&a, &a)
                })
                .collect(),
        ),
        set(
            "bignets6",
            Family::V6,
            true,
            (0..big / 10)
                .map(|i| {
                    let n = net(&format!("2001:db8:{:x}::/48", i + 1));
                    el(&n.network().to_string(), &n.broadcast().to_string())
                })
                .collect(),
        ),
    ];
    let mut vmap = set(
        "zones4",
        Family::V4,
        true,
        vec![
            Element {
                goto: Some("c_a".into()),
                ..el("198.51.100.0", "198.51.100.63")
            },
            Element {
                goto: Some("c_b".into()),
                ..el("198.51.100.64", "198.51.100.64")
            },
        ],
    );
    vmap.verdict_map = true;
    sets.push(vmap);
    let mut meter = set("meter4", Family::V4, false, vec![]);
    meter.dynamic = true;
    meter.plane = Plane::Dynamic;
    meter.default_timeout = Some(60);
    meter.size = Some(1024);
    sets.push(meter);
    let mut dynamic = set("dyn6", Family::V6, false, vec![]);
    dynamic.dynamic = true;
    dynamic.plane = Plane::Dynamic;
    sets.push(dynamic);
    let mut timed = set("timed4", Family::V4, true, vec![]);
    timed.default_timeout = Some(90);
    sets.push(timed);
    let mut bans = set("bans4", Family::V4, false, vec![]);
    bans.timeout = true;
    bans.dynamic = true;
    bans.plane = Plane::Dynamic;
    bans.size = Some(65536);
    sets.push(bans);
    let mut sized = set(
        "sized6",
        Family::V6,
        false,
        vec![el("2001:db8::1", "2001:db8::1")],
    );
    sized.recreate = true;
    sized.size = Some(16);
    sets.push(sized);
    let rules = vec![
        rule(vec![Match::Loopback], Action::Accept, None),
        rule(
            vec![Match::ToLocal, Match::Ct(CtMatch::Invalid)],
            Action::Drop,
            Some(""),
        ),
        rule(
            vec![Match::Ct(CtMatch::EstablishedRelated)],
            Action::Jump("c_a".into()),
            None,
        ),
        rule(
            vec![Match::SaddrIn {
                family: Family::V4,
                set: "hosts4".into(),
                negate: true,
            }],
            Action::Return,
            Some("n1"),
        ),
        rule(
            vec![Match::SaddrPrefixIn {
                family: Family::V6,
                prefix: 56,
                set: "sized6".into(),
            }],
            Action::Reject,
            None,
        ),
        rule(
            vec![Match::SaddrPrefixIn {
                family: Family::V4,
                prefix: 20,
                set: "nets4".into(),
            }],
            Action::Goto("c_b".into()),
            None,
        ),
        rule(
            vec![Match::SaddrNets {
                family: Family::V4,
                nets: vec![net("0.0.0.0/0")],
            }],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::SaddrNets {
                family: Family::V6,
                nets: vec![net("::/0")],
            }],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::SaddrNets {
                family: Family::V4,
                nets: vec![net("192.0.2.9/32")],
            }],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::SaddrNets {
                family: Family::V4,
                nets: vec![net("10.16.0.0/12")],
            }],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::SaddrNets {
                family: Family::V6,
                nets: vec![net("2001:db8:a::/48")],
            }],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::SaddrNets {
                family: Family::V6,
                nets: vec![net("2001:db8:a::/61")],
            }],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::SaddrNets {
                family: Family::V4,
                nets: vec![
                    net("198.51.100.0/25"),
                    net("198.51.100.128/25"),
                    net("192.0.2.7/32"),
                    net("0.0.0.0/8"),
                ],
            }],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::SaddrNets {
                family: Family::V6,
                nets: vec![
                    net("2001:db8:b::/48"),
                    net("2001:db8:a::/48"),
                    net("ffff::/16"),
                ],
            }],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::Dport(Proto::Udp, vec![p(Proto::Udp, 5060, 5060)])],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::Dport(Proto::Tcp, vec![p(Proto::Tcp, 1000, 2000)])],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::Dport(
                Proto::Tcp,
                vec![
                    p(Proto::Tcp, 5061, 5061),
                    p(Proto::Tcp, 443, 443),
                    p(Proto::Tcp, 22, 22),
                ],
            )],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::Dport(
                Proto::Udp,
                vec![
                    p(Proto::Udp, 60000, 65535),
                    p(Proto::Udp, 5060, 5062),
                    p(Proto::Udp, 5063, 5063),
                ],
            )],
            Action::Accept,
            None,
        ),
        rule(
            vec![
                Match::Sport(
                    Proto::Udp,
                    vec![p(Proto::Udp, 5060, 5060), p(Proto::Udp, 5080, 5080)],
                ),
                Match::Dport(Proto::Udp, vec![p(Proto::Udp, 0, 1023)]),
                Match::SipResponse(true),
            ],
            Action::Accept,
            None,
        ),
        rule(
            vec![
                Match::Dport(Proto::Udp, vec![p(Proto::Udp, 5060, 5060)]),
                Match::SipResponse(false),
            ],
            Action::Drop,
            None,
        ),
        rule(
            vec![
                Match::Sport(Proto::Udp, vec![p(Proto::Udp, 5060, 5060)]),
                Match::SipResponseOrBye,
            ],
            Action::Nflog {
                group: 5,
                snaplen: 2048,
                outbound: true,
            },
            None,
        ),
        rule(
            vec![Match::Icmp(vec!["echo-request".into()])],
            Action::LimitAccept(20),
            None,
        ),
        rule(
            vec![Match::Icmp(vec![
                "destination-unreachable".into(),
                "time-exceeded".into(),
            ])],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::Icmpv6(vec![
                "nd-neighbor-solicit".into(),
                "mld2-listener-report".into(),
                "packet-too-big".into(),
            ])],
            Action::Accept,
            None,
        ),
        rule(
            vec![Match::Icmpv6(vec!["echo-request".into()])],
            Action::Drop,
            None,
        ),
        rule(vec![], Action::SaddrVmap(Family::V4, "zones4".into()), None),
        rule(
            vec![],
            Action::IifVmap(vec![
                ("eth1".into(), "c_b".into()),
                ("eth0".into(), "c_a".into()),
            ]),
            Some(""),
        ),
        // A wildcard makes nft build an interval map.
        rule(
            vec![],
            Action::IifVmap(vec![
                ("veth*".into(), "c_b".into()),
                ("lo".into(), "c_a".into()),
                ("e*".into(), "c_a".into()),
                ("abcdefghijklmno".into(), "c_b".into()),
            ]),
            None,
        ),
        rule(
            vec![Match::Dport(Proto::Udp, vec![p(Proto::Udp, 5060, 5060)])],
            Action::Nflog {
                group: 5,
                snaplen: 512,
                outbound: false,
            },
            None,
        ),
        rule(
            vec![],
            Action::Sample {
                group: 6,
                rate: 20,
                prefix: "vw:zone:x".into(),
            },
            None,
        ),
        rule(
            vec![Match::Dport(Proto::Udp, vec![p(Proto::Udp, 5060, 5060)])],
            Action::LimitOverDrop(4000),
            Some("n1"),
        ),
        rule(
            vec![Match::Dport(Proto::Udp, vec![p(Proto::Udp, 5060, 5060)])],
            Action::MeterDrop {
                family: Family::V4,
                meter: "meter4".into(),
                pps: 50,
            },
            Some("n1"),
        ),
        rule(
            vec![Match::SaddrIn {
                family: Family::V4,
                set: "hosts4".into(),
                negate: false,
            }],
            Action::MeterBan {
                family: Family::V4,
                meter: "meter4".into(),
                pps: 500,
                ban_set: "bans4".into(),
                timeout: 3600,
            },
            None,
        ),
    ];
    Ruleset {
        sets,
        counters: vec!["n1".into()],
        chains: vec![
            Chain {
                name: "base".into(),
                hook: Some(Hook {
                    hook: "input".into(),
                    priority: "filter".into(),
                    policy: "drop".into(),
                }),
                rules,
            },
            Chain {
                name: "pre".into(),
                hook: Some(Hook {
                    hook: "prerouting".into(),
                    priority: "raw".into(),
                    policy: "accept".into(),
                }),
                rules: vec![],
            },
            Chain {
                name: "c_a".into(),
                hook: None,
                rules: vec![rule(vec![], Action::Accept, None)],
            },
            Chain {
                name: "c_b".into(),
                hook: None,
                rules: vec![],
            },
        ],
        notes: vec![],
        names: vec![],
        geo: vec![],
    }
}

#[test]
fn every_statement_shape_loads_the_same_table_as_nft() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let a = shapes(20_000);
    let mut b = shapes(20_001);
    b.chains[0].rules.reverse();
    same_both_ways("shapes", &[a.clone(), b, a]);
}
