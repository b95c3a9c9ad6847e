//! The infrastructure this host depends on, read from configuration text:
//! default gateways, NTP servers. With the resolvers and the policy's
//! networks they are protected from bans made on unverifiable evidence: a
//! forged packet with a gateway's or a resolver's source address must not
//! cut the host off (issue 12).

use std::net::IpAddr;

/// The default routes in `/proc/net/route` and `/proc/net/ipv6_route`
/// text: (interface, next hop if any). Loopback entries (the kernel's
/// unreachable default in `ipv6_route`) are left out.
pub fn default_routes(route_v4: &str, route_v6: &str) -> Vec<(String, Option<IpAddr>)> {
    let mut out = Vec::new();
    for l in route_v4.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
            // The file prints the network-order bytes as a host integer.
            let gw = u32::from_str_radix(f[2], 16)
                .ok()
                .filter(|&g| g != 0)
                .map(|g| IpAddr::from(g.to_ne_bytes()));
            out.push((f[0].to_string(), gw));
        }
    }
    for l in route_v6.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo" {
            let gw = u128::from_str_radix(f[4], 16)
                .ok()
                .filter(|&g| g != 0)
                .map(|g| IpAddr::from(g.to_be_bytes()));
            out.push((f[9].to_string(), gw));
        }
    }
    out
}

/// The next hops of the default routes.
pub fn gateways(route_v4: &str, route_v6: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = default_routes(route_v4, route_v6)
        .into_iter()
        .filter_map(|(_, g)| g)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// NTP servers given as addresses in chrony, ntpd or systemd-timesyncd
/// configuration text (`server`/`pool`/`peer` lines; `NTP=` and
/// `FallbackNTP=`). Names are left out: they are not resolved here.
pub fn ntp_servers(texts: &[&str]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for text in texts {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("server" | "pool" | "peer") => {
                    if let Some(a) = words.next().and_then(|w| w.parse().ok()) {
                        out.push(a);
                    }
                }
                Some(w) if w.starts_with("NTP=") || w.starts_with("FallbackNTP=") => {
                    let first = w.split_once('=').map_or("", |(_, v)| v);
                    out.extend(
                        std::iter::once(first)
                            .chain(words)
                            .filter_map(|t| t.parse::<IpAddr>().ok()),
                    );
                }
                _ => {}
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_gateways_of_both_families() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100140A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000140A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
";
        if cfg!(target_endian = "little") {
            assert_eq!(
                gateways(v4, v6),
                [
                    "10.20.0.1".parse::<IpAddr>().unwrap(),
                    "fe80::1".parse().unwrap()
                ]
            );
        }
    }

    #[test]
    fn ntp_servers_by_address_only() {
        let chrony =
            "pool 2.debian.pool.ntp.org iburst\nserver 192.0.2.123 iburst\n# server 192.0.2.9\n";
        let timesyncd = "[Time]\nNTP=198.51.100.1 time.example.net\nFallbackNTP=2001:db8::123\n";
        assert_eq!(
            ntp_servers(&[chrony, timesyncd]),
            [
                "192.0.2.123".parse::<IpAddr>().unwrap(),
                "198.51.100.1".parse().unwrap(),
                "2001:db8::123".parse().unwrap()
            ]
        );
    }
}
