//! What the host's resolver configuration says, read from its text (the
//! caller reads the file).

use std::net::{IpAddr, SocketAddr};

/// `nameserver` lines of a resolv.conf.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let a: IpAddr = w.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(a, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let s = resolv_conf_servers(
            "# c\nnameserver 198.51.100.53\nnameserver fe80::1%eth0\nsearch x\nnameserver bad\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].to_string(), "198.51.100.53:53");
    }
}
