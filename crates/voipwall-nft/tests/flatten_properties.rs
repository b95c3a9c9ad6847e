//! Flattening against a brute-force longest-prefix match, and the renderer's
//! determinism.
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use voipwall_nft::flatten::{addr_int, flatten, to_addr};

fn v4net() -> impl Strategy<Value = IpNet> {
    // A small corner of the space so prefixes overlap often.
    (0u32..4096, 20u8..=32).prop_map(|(a, l)| {
        IpNet::new(IpAddr::V4(Ipv4Addr::from(0xC612_0000 | a)), l)
            .unwrap()
            .trunc()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn flattened_intervals_match_longest_prefix(
        items in prop::collection::btree_map(v4net(), 0u8..5, 1..16),
        probes in prop::collection::vec(0u32..4096, 64),
    ) {
        let items: Vec<(IpNet, u8)> = items.into_iter().collect();
        let flat = flatten(&items);
        // Sorted, disjoint, non-adjacent when labels are equal.
        for w in flat.windows(2) {
            prop_assert!(w[0].hi < w[1].lo);
            if w[0].label == w[1].label {
                prop_assert!(w[0].hi + 1 < w[1].lo, "adjacent equal labels not merged");
            }
        }
        for p in probes {
            let addr = IpAddr::V4(Ipv4Addr::from(0xC612_0000 | p));
            let want = items.iter().filter(|(n, _)| n.contains(&addr)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, l)| *l);
            let a = addr_int(&addr);
            let got = flat.iter().find(|i| i.lo <= a && a <= i.hi).map(|i| i.label);
            prop_assert_eq!(got, want, "address {}", addr);
        }
        // Every interval renders to a valid address pair.
        for i in &flat {
            prop_assert!(to_addr(i.lo, true) <= to_addr(i.hi, true));
        }
    }
}
