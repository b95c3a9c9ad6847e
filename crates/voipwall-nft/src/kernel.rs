//! What the kernel holds in a set, read back as IR elements, so that apply
//! can tell whether a policy set is still exactly what the generation in
//! force put there (and leave it alone) or must be refilled.

use std::net::IpAddr;

use crate::flatten::{addr_int, to_addr};
use crate::ir::{Element, Set};

/// One element as a netlink dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Key.
    pub key: IpAddr,
    /// Ends a range (interval sets).
    pub end: bool,
    /// Verdict-map chain.
    pub chain: Option<String>,
}

/// The elements of a set from its kernel dump. A hash set's keys are one
/// address each; in an interval set every start element runs to the next
/// element (start or end) minus one, or to the end of the address space.
pub fn elements(interval: bool, held: &[Held]) -> Vec<Element> {
    if !interval {
        return held
            .iter()
            .map(|h| Element {
                lo: h.key,
                hi: h.key,
                goto: h.chain.clone(),
            })
            .collect();
    }
    let mut sorted: Vec<&Held> = held.iter().collect();
    sorted.sort_by_key(|h| (h.key.is_ipv6(), addr_int(&h.key), !h.end));
    let mut out = Vec::new();
    for (i, h) in sorted.iter().enumerate() {
        if h.end {
            continue;
        }
        let v4 = h.key.is_ipv4();
        let max = if v4 { u128::from(u32::MAX) } else { u128::MAX };
        let hi = sorted
            .get(i + 1)
            .filter(|n| n.key.is_ipv4() == v4)
            .map_or(max, |n| addr_int(&n.key).saturating_sub(1));
        out.push(Element {
            lo: h.key,
            hi: to_addr(hi, v4),
            goto: h.chain.clone(),
        });
    }
    out
}

/// Whether the kernel's elements are exactly the set's (order aside).
pub fn same(set: &Set, kernel: &[Element]) -> bool {
    if set.elements.len() != kernel.len() {
        return false;
    }
    let order = |x: &&Element, y: &&Element| {
        (addr_int(&x.lo), addr_int(&x.hi), &x.goto).cmp(&(
            addr_int(&y.lo),
            addr_int(&y.hi),
            &y.goto,
        ))
    };
    let mut a: Vec<&Element> = set.elements.iter().collect();
    let mut b: Vec<&Element> = kernel.iter().collect();
    a.sort_unstable_by(order);
    b.sort_unstable_by(order);
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(key: &str, end: bool, chain: Option<&str>) -> Held {
        Held {
            key: key.parse().unwrap(),
            end,
            chain: chain.map(Into::into),
        }
    }

    fn e(lo: &str, hi: &str, goto: Option<&str>) -> Element {
        Element {
            lo: lo.parse().unwrap(),
            hi: hi.parse().unwrap(),
            goto: goto.map(Into::into),
        }
    }

    #[test]
    fn intervals_are_rebuilt_from_start_and_end_elements() {
        // 10.0.10.0-10.0.10.130 → a, .131 → b, .132-.255 → a, a gap, then
        // 192.0.2.0/24 → b, and a range to the end of the space.
        let held = [
            h("10.0.11.0", true, None),
            h("10.0.10.131", false, Some("b")),
            h("10.0.10.0", false, Some("a")),
            h("10.0.10.132", false, Some("a")),
            h("192.0.2.0", false, Some("b")),
            h("192.0.3.0", true, None),
            h("240.0.0.0", false, Some("a")),
            h("0.0.0.0", true, None),
        ];
        assert_eq!(
            elements(true, &held),
            [
                e("10.0.10.0", "10.0.10.130", Some("a")),
                e("10.0.10.131", "10.0.10.131", Some("b")),
                e("10.0.10.132", "10.0.10.255", Some("a")),
                e("192.0.2.0", "192.0.2.255", Some("b")),
                e("240.0.0.0", "255.255.255.255", Some("a")),
            ]
        );
    }

    #[test]
    fn same_ignores_order_and_sees_one_missing_element() {
        let set = Set {
            name: "vw_blockhost_v4".into(),
            family: crate::ir::Family::V4,
            interval: false,
            timeout: false,
            dynamic: false,
            default_timeout: None,
            size: None,
            verdict_map: false,
            plane: crate::ir::Plane::Policy,
            recreate: true,
            live: false,
            elements: vec![
                e("192.0.2.1", "192.0.2.1", None),
                e("192.0.2.9", "192.0.2.9", None),
            ],
            comment: String::new(),
        };
        let k = elements(
            false,
            &[h("192.0.2.9", false, None), h("192.0.2.1", false, None)],
        );
        assert!(same(&set, &k));
        assert!(!same(&set, &k[..1]));
        let other = elements(
            false,
            &[h("192.0.2.9", false, None), h("192.0.2.2", false, None)],
        );
        assert!(!same(&set, &other));
    }
}
