//! Property tests for the policy parser: arbitrary text never panics, and a
//! policy rendered from a random model parses back to that model.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use voipwall_policy::{Catalog, DataFile, HostFacts, NetSpec, SourceMap, Zone, load};

fn catalog() -> Catalog {
    let mut sm = SourceMap::default();
    Catalog::load(&DataFile::builtin(), &mut sm).0
}

fn zone() -> impl Strategy<Value = Zone> {
    prop::sample::select(vec![
        Zone::Reject,
        Zone::Internet,
        Zone::Other,
        Zone::Local,
        Zone::Trusted,
    ])
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 8u8..=32).prop_map(|(a, l)| IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), l)
            .unwrap()
            .trunc()),
        (any::<u128>(), 16u8..=128).prop_map(|(a, l)| IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), l)
            .unwrap()
            .trunc()),
    ]
}

const SERVICES: &[&str] = &[
    "sip",
    "sip-tls",
    "iax2",
    "ssh",
    "https-admin",
    "mysql",
    "ntp",
    "dns",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let cat = catalog();
        let _ = load("p.toml", &mut |_| Ok(text.clone()), &cat, &HostFacts::default());
    }

    #[test]
    fn toml_shaped_text_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                Just("[interfaces]".to_string()), Just("[networks]".to_string()), Just("[zones.internet]".to_string()),
                Just("[rtp]".to_string()), Just("[[block]]".to_string()), Just("[sip]".to_string()),
                "[a-z_]{1,12} = \"[a-z0-9./:-]{0,20}\"", "[a-z_]{1,12} = [0-9]{1,6}",
                "\"[0-9./:a-f]{1,30}\" = \"[a-z]{1,9}\"", "services = \\[\"[a-z0-9-]{1,10}\"\\]",
            ],
            0..30,
        )
    ) {
        let cat = catalog();
        let text = lines.join("\n");
        let _ = load("p.toml", &mut |_| Ok(text.clone()), &cat, &HostFacts::default());
    }

    #[test]
    fn rendered_policy_parses_back(
        nets in prop::collection::btree_map(net(), zone(), 0..12),
        ifaces in prop::collection::btree_map("[a-z]{2,5}[0-9]", zone().prop_filter("not trusted", |z| *z != Zone::Trusted), 0..4),
        grants in prop::collection::btree_map(
            zone().prop_filter("not trusted", |z| *z != Zone::Trusted),
            prop::sample::subsequence(SERVICES.to_vec(), 0..SERVICES.len()),
            0..4,
        ),
        blocks in prop::collection::vec(net(), 0..5),
        rtp_lo in 1024u16..30000, rtp_len in 0u16..5000,
    ) {
        let mut text = String::from("[interfaces]\n");
        for (i, z) in &ifaces { text.push_str(&format!("{i} = \"{z}\"\n")); }
        text.push_str("[networks]\n");
        for (n, z) in &nets { text.push_str(&format!("\"{n}\" = \"{z}\"\n")); }
        for (z, svcs) in &grants {
            let list: Vec<String> = svcs.iter().map(|s| format!("\"{s}\"")).collect();
            text.push_str(&format!("[zones.{z}]\nservices = [{}]\n", list.join(", ")));
        }
        // Keep RTP clear of the services' ports so the overlap check does not fire.
        let rtp_lo = rtp_lo.max(6000);
        let rtp_hi = rtp_lo.saturating_add(rtp_len);
        text.push_str(&format!("[rtp]\nranges = [\"{rtp_lo}-{rtp_hi}\"]\n"));
        for b in &blocks { text.push_str(&format!("[[block]]\naddress = \"{b}\"\n")); }
        let cat = catalog();
        let loaded = load("p.toml", &mut |_| Ok(text.clone()), &cat, &HostFacts::default());
        prop_assert!(!loaded.has_errors(), "{}\n{}", text, voipwall_policy::render_all(&loaded.diagnostics, &loaded.sources));
        let p = loaded.policy.unwrap();
        let got: Vec<(NetSpec, Zone)> = p.networks.iter().map(|n| (n.net.clone(), n.zone)).collect();
        let want: Vec<(NetSpec, Zone)> = nets.iter().map(|(n, z)| (NetSpec::Net(*n), *z)).collect();
        prop_assert_eq!(got, want);
        let got_if: Vec<(String, Zone)> = p.interfaces.iter().map(|i| (i.name.clone(), i.zone)).collect();
        let want_if: Vec<(String, Zone)> = ifaces.into_iter().collect();
        prop_assert_eq!(got_if, want_if);
        for (z, svcs) in &grants {
            let got: Vec<&str> = p.grants.get(z).map(|g| g.iter().map(|g| g.service.as_str()).collect()).unwrap_or_default();
            prop_assert_eq!(&got, svcs);
        }
        prop_assert_eq!(p.rtp.ranges.len(), 1);
        prop_assert_eq!((p.rtp.ranges[0].lo, p.rtp.ranges[0].hi), (rtp_lo, rtp_hi));
        let got_b: Vec<NetSpec> = p.block.iter().map(|b| b.net.clone()).collect();
        let want_b: Vec<NetSpec> = blocks.iter().map(|n| NetSpec::Net(*n)).collect();
        prop_assert_eq!(got_b, want_b);
    }
}

/// One `[[allow]]`/`[[block]]` entry in the shapes policies use: some the
/// list fast path reads itself, some it leaves to the TOML parser.
fn list_entry() -> impl Strategy<Value = String> {
    let addr = prop_oneof![
        net().prop_map(|n| n.to_string()),
        net().prop_map(|n| n.addr().to_string()),
        Just("not-an-ip".to_string()),
        Just("203.0.113.1".to_string()),
        Just("0.0.0.0/0".to_string()),
        Just("198.51.100.0/24".to_string()),
    ];
    (
        prop::sample::select(vec!["block", "allow"]),
        addr,
        prop::option::of(prop::sample::select(vec!["scanner", "a # hash", "ünï", ""])),
        prop::sample::select(vec![
            "",
            "expires = 2027-01-31\n",
            "expires = \"tomorrow\"\n",
            "# a comment\n",
            "\n",
            "note = \"x\"\n",
            "address = \"192.0.2.9\"\n",
        ]),
        prop::sample::select(vec!["", "  ", " # trailing", "\t", "\u{a0}", " # \u{c}"]),
        any::<bool>(),
    )
        .prop_map(|(list, a, desc, extra, tail, no_addr)| {
            let mut e = format!("[[{list}]]{tail}\n");
            if !no_addr {
                e.push_str(&format!("address = \"{a}\"{tail}\n"));
            }
            if let Some(d) = desc {
                e.push_str(&format!("description = \"{d}\"\n"));
            }
            e.push_str(extra);
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Issue 25, item 1: the allow/block fast path changes nothing a policy
    /// means or reports. The same text with a `"""` in a closing comment
    /// (which switches the fast path off and means nothing) loads to the
    /// same policy with the same diagnostics, word for word.
    #[test]
    fn the_list_fast_path_loads_what_the_parser_loads(
        entries in prop::collection::vec(list_entry(), 0..12),
        split in 0usize..12,
        crlf in any::<bool>(),
    ) {
        let mut text = String::from("[interfaces]\neth0 = \"internet\"\n[host]\naddresses = [\"203.0.113.1\"]\nmanagement = [\"198.51.100.0/26\"]\n");
        for (i, e) in entries.iter().enumerate() {
            if i == split {
                text.push_str("[zones.internet]\nservices = [\"sip\"]\n");
            }
            text.push_str(e);
        }
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        let cat = catalog();
        let fast = load("p.toml", &mut |_| Ok(text.clone()), &cat, &HostFacts::default());
        let slow_text = format!("{text}# \"\"\"\n");
        let slow = load("p.toml", &mut |_| Ok(slow_text.clone()), &cat, &HostFacts::default());
        prop_assert_eq!(&fast.policy, &slow.policy);
        prop_assert_eq!(
            voipwall_policy::render_all(&fast.diagnostics, &fast.sources),
            voipwall_policy::render_all(&slow.diagnostics, &slow.sources)
        );
    }
}
