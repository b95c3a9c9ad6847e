//! What this host shows, read from the kernel for the pure judgments in
//! `voipwall-host`: listening sockets.

use voipwall_host::audit::Listening;

/// Sockets in the listening state, from /proc/net/{tcp,tcp6,udp,udp6}.
pub fn listening() -> Vec<Listening> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    voipwall_host::audit::listening(
        &read("/proc/net/tcp"),
        &read("/proc/net/tcp6"),
        &read("/proc/net/udp"),
        &read("/proc/net/udp6"),
    )
}

/// What this host depends on, with what it is: its resolvers (`[dns]
/// servers`, else /etc/resolv.conf), default gateways and NTP servers
/// given by address (chrony, ntpd, systemd-timesyncd).
pub fn infrastructure(policy: Option<&voipwall_policy::Policy>) -> Vec<(std::net::IpAddr, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut out: Vec<(std::net::IpAddr, String)> = Vec::new();
    let resolvers: Vec<std::net::IpAddr> = match policy.map(|p| &p.dns.servers) {
        Some(s) if !s.is_empty() => s.clone(),
        _ => voipwall_dns::resolv_conf_servers(&read("/etc/resolv.conf"))
            .iter()
            .map(std::net::SocketAddr::ip)
            .collect(),
    };
    out.extend(
        resolvers
            .into_iter()
            .map(|a| (a, "DNS resolver".to_string())),
    );
    out.extend(
        voipwall_host::infra::gateways(&read("/proc/net/route"), &read("/proc/net/ipv6_route"))
            .into_iter()
            .map(|a| (a, "default gateway".to_string())),
    );
    let ntp = [
        read("/etc/chrony/chrony.conf"),
        read("/etc/chrony.conf"),
        read("/etc/ntp.conf"),
        read("/etc/ntpsec/ntp.conf"),
        read("/etc/systemd/timesyncd.conf"),
    ];
    let texts: Vec<&str> = ntp.iter().map(String::as_str).collect();
    out.extend(
        voipwall_host::infra::ntp_servers(&texts)
            .into_iter()
            .map(|a| (a, "NTP server".to_string())),
    );
    out
}
