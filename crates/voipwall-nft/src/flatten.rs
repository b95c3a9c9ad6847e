//! Turning overlapping prefixes into disjoint intervals where the most specific
//! prefix wins, so zone classification is one verdict-map lookup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An inclusive interval of addresses of one family (as integers) with a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval<T> {
    /// First address.
    pub lo: u128,
    /// Last address.
    pub hi: u128,
    /// Label (a zone, a chain name).
    pub label: T,
}

/// Integer range of a prefix.
pub fn net_range(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Address of an integer in the family of `v4`.
pub fn to_addr(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// Integer of an address.
pub fn addr_int(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// Flattens prefixes of one family (nested or disjoint, never partially
/// overlapping, which CIDR guarantees) into disjoint sorted intervals: each
/// address gets the label of the most specific prefix containing it. Equal
/// prefixes: the first one given wins. Adjacent intervals with equal labels merge.
pub fn flatten<T: Clone + PartialEq>(items: &[(IpNet, T)]) -> Vec<Interval<T>> {
    let mut sorted: Vec<(u128, u128, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            let (lo, hi) = net_range(n);
            (lo, hi, i)
        })
        .collect();
    // Parents (wider) before children; equal prefixes keep input order.
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    sorted.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1);

    let mut out: Vec<Interval<T>> = Vec::new();
    // Stack of open prefixes: (hi, index, cursor = next address not yet emitted).
    let mut stack: Vec<(u128, usize, Option<u128>)> = Vec::new();
    let emit = |out: &mut Vec<Interval<T>>, lo: u128, hi: u128, idx: usize| {
        let label = items[idx].1.clone();
        if let Some(last) = out.last_mut()
            && last.label == label
            && last.hi.checked_add(1) == Some(lo)
        {
            last.hi = hi;
            return;
        }
        out.push(Interval { lo, hi, label });
    };
    let close = |out: &mut Vec<Interval<T>>, top: (u128, usize, Option<u128>)| {
        if let Some(c) = top.2
            && c <= top.0
        {
            emit(out, c, top.0, top.1);
        }
    };
    for (lo, hi, idx) in sorted {
        while let Some(top) = stack.last().copied() {
            if top.0 < lo {
                stack.pop();
                close(&mut out, top);
            } else {
                break;
            }
        }
        if let Some(top) = stack.last_mut() {
            if let Some(c) = top.2
                && c < lo
            {
                let parent = top.1;
                emit(&mut out, c, lo - 1, parent);
            }
            top.2 = hi.checked_add(1).filter(|n| *n <= top.0);
        }
        stack.push((hi, idx, Some(lo)));
    }
    while let Some(top) = stack.pop() {
        close(&mut out, top);
    }
    out
}

/// Renders an interval as a prefix when it is one, else as `lo-hi`.
pub fn render_interval(lo: &IpAddr, hi: &IpAddr) -> String {
    let mut s = String::new();
    write_interval(&mut s, lo, hi);
    s
}

/// Appends an address; IPv4 without the formatting machinery (a 100,000
/// entry list prints 100,000 of them).
pub(crate) fn write_addr(o: &mut String, a: &IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            for (i, b) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    o.push('.');
                }
                if b >= 100 {
                    o.push(char::from(b'0' + b / 100));
                }
                if b >= 10 {
                    o.push(char::from(b'0' + b / 10 % 10));
                }
                o.push(char::from(b'0' + b % 10));
            }
        }
        IpAddr::V6(_) => {
            use std::fmt::Write as _;
            let _ = write!(o, "{a}");
        }
    }
}

/// [`render_interval`], appended to `o`.
pub(crate) fn write_interval(o: &mut String, lo: &IpAddr, hi: &IpAddr) {
    use std::fmt::Write as _;
    if lo == hi {
        write_addr(o, lo);
        return;
    }
    let (l, h) = (addr_int(lo), addr_int(hi));
    let bits: u32 = if lo.is_ipv4() { 32 } else { 128 };
    let span = h - l;
    if span.checked_add(1).is_some_and(u128::is_power_of_two) || span == u128::MAX {
        let host_bits = if span == u128::MAX {
            128
        } else {
            (span + 1).trailing_zeros()
        };
        if l.trailing_zeros() >= host_bits || l == 0 {
            let len = u8::try_from(bits - host_bits).unwrap_or(0);
            if IpNet::new(*lo, len).is_ok() {
                write_addr(o, lo);
                let _ = write!(o, "/{len}");
                return;
            }
        }
    }
    write_addr(o, lo);
    o.push('-');
    write_addr(o, hi);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_print_as_display_prints_them() {
        for b in 0..=255u8 {
            for a in [
                IpAddr::from([b, 0, 255, b.wrapping_mul(7)]),
                IpAddr::from([10, b, 9, 100]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0xffff, u16::from(b), 1]),
            ] {
                let mut o = String::new();
                write_addr(&mut o, &a);
                assert_eq!(o, a.to_string());
            }
        }
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn show(v: &[Interval<&str>]) -> Vec<String> {
        v.iter()
            .map(|i| {
                let v4 = i.hi <= u128::from(u32::MAX);
                format!(
                    "{}={}",
                    render_interval(&to_addr(i.lo, v4), &to_addr(i.hi, v4)),
                    i.label
                )
            })
            .collect()
    }

    #[test]
    fn most_specific_wins() {
        let items = vec![
            (n("198.51.100.0/24"), "trusted"),
            (n("198.51.100.7/32"), "internet"),
            (n("203.0.113.0/24"), "local"),
        ];
        assert_eq!(
            show(&flatten(&items)),
            vec![
                "198.51.100.0-198.51.100.6=trusted",
                "198.51.100.7=internet",
                "198.51.100.8-198.51.100.255=trusted",
                "203.0.113.0/24=local",
            ]
        );
    }

    #[test]
    fn nested_three_deep_and_merge() {
        let items = vec![
            (n("10.0.0.0/8"), "a"),
            (n("10.1.0.0/16"), "b"),
            (n("10.1.2.0/24"), "a"),
            (n("10.2.0.0/16"), "a"),
        ];
        assert_eq!(
            show(&flatten(&items)),
            vec![
                "10.0.0.0/16=a",
                "10.1.0.0/23=b",
                "10.1.2.0/24=a",
                "10.1.3.0-10.1.255.255=b",
                "10.2.0.0-10.255.255.255=a",
            ]
        );
    }

    #[test]
    fn full_space_no_overflow() {
        let items = vec![
            (n("::/0"), "x"),
            (n("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), "y"),
        ];
        let f = flatten(&items);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].lo, u128::MAX);
        let items = vec![(n("0.0.0.0/0"), "x"), (n("255.255.255.255/32"), "y")];
        assert_eq!(
            show(&flatten(&items)),
            vec!["0.0.0.0-255.255.255.254=x", "255.255.255.255=y"]
        );
    }
}
