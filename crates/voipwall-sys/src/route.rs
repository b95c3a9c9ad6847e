//! Which interface the kernel routes an address to, from `/proc/net/route`
//! and `/proc/net/ipv6_route` (the namespace's main and local tables): a
//! packet from that address arrives there unless routing is asymmetric.
//! `explain` uses it when no `--iface` is given.

use std::net::IpAddr;

const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// The interface of the most specific usable route to `addr`, lowest
/// metric first among equals; `None` without one. Pure: takes the two files'
/// text.
pub fn lookup(addr: IpAddr, v4_table: &str, v6_table: &str) -> Option<String> {
    let mut best: Option<(u8, u32, String)> = None;
    let mut consider = |len: u8, metric: u32, iface: &str| {
        let better = best
            .as_ref()
            .is_none_or(|(l, m, _)| len > *l || (len == *l && metric < *m));
        if better {
            best = Some((len, metric, iface.to_string()));
        }
    };
    match addr {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            for l in v4_table.lines().skip(1) {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 8 {
                    continue;
                }
                let hex = |s: &str| u32::from_str_radix(s, 16).ok();
                let (Some(dst), Some(flags), Some(mask)) = (hex(f[1]), hex(f[3]), hex(f[7])) else {
                    continue;
                };
                // The file prints the network-order bytes as a host integer.
                let net = |v: u32| u32::from_be_bytes(v.to_ne_bytes());
                let (dst, mask) = (net(dst), net(mask));
                if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || a & mask != dst & mask {
                    continue;
                }
                let metric = f[6].parse().unwrap_or(u32::MAX);
                consider(mask.count_ones() as u8, metric, f[0]);
            }
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            for l in v6_table.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() != 10 {
                    continue;
                }
                let (Ok(dst), Ok(len), Ok(metric), Ok(flags)) = (
                    u128::from_str_radix(f[0], 16),
                    u8::from_str_radix(f[1], 16),
                    u32::from_str_radix(f[5], 16),
                    u32::from_str_radix(f[8], 16),
                ) else {
                    continue;
                };
                if len > 128 || flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
                    continue;
                }
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                if a & mask != dst & mask {
                    continue;
                }
                consider(len, metric, f[9]);
            }
        }
    }
    best.map(|(_, _, i)| i)
}

/// [`lookup`] on this namespace's routing tables.
pub fn interface_for(addr: IpAddr) -> Option<String> {
    lookup(
        addr,
        &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        &std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Taken from a namespace with 10.20.0.5/24 on eth0, a default route via
    // 10.20.0.1, and 203.0.113.0/24 on veth1 (metric 100) and eth0 (200).
    const V4: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100140A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000140A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
veth1\t007100CB\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth0\t007100CB\t00000000\t0001\t0\t0\t200\t00FFFFFF\t0\t0\t0
";
    const V6: &str = "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001  veth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn longest_prefix_then_lowest_metric() {
        let l = |a: &str| lookup(a.parse().unwrap(), V4, V6);
        assert_eq!(l("10.20.0.9").as_deref(), Some("eth0"));
        assert_eq!(l("198.51.100.1").as_deref(), Some("eth0"), "default");
        assert_eq!(l("203.0.113.7").as_deref(), Some("veth1"), "metric");
        assert_eq!(l("2001:db8::5").as_deref(), Some("veth1"));
        assert_eq!(l("2001:db9::5"), None, "reject route skipped");
        assert_eq!(lookup("192.0.2.1".parse().unwrap(), "", ""), None);
    }
}
