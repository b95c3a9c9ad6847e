//! The host's interfaces and their addresses over rtnetlink
//! (`RTM_GETLINK`, `RTM_GETADDR` dumps), in the caller's network namespace:
//! no `ip -j addr` spawned and parsed.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_sys::constants::NETLINK_ROUTE;

use crate::netlink::{attr_list, finish, push_nlmsghdr, transact};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

/// An interface with its addresses and prefix lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel index.
    pub index: u32,
    /// Name (`eth0`).
    pub name: String,
    /// Addresses with their prefix lengths, IPv4 first, as configured.
    pub addrs: Vec<IpNet>,
}

/// Sends one dump request with a fixed-size header `hdr`, returns
/// (type, payload) of every reply until NLMSG_DONE.
fn dump(ty: u16, hdr: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(64);
    let start = push_nlmsghdr(&mut buf, ty, NLM_F_REQUEST | NLM_F_DUMP, 1);
    buf.extend_from_slice(hdr);
    finish(&mut buf, start);
    transact(NETLINK_ROUTE, &buf)
}

/// Every interface of this namespace with its addresses.
pub fn interfaces() -> io::Result<Vec<Interface>> {
    // struct ifinfomsg: family, pad, type, index, flags, change (16 bytes).
    let mut list: Vec<Interface> = Vec::new();
    for (t, body) in dump(RTM_GETLINK, &[0u8; 16])? {
        if t != RTM_NEWLINK || body.len() < 16 {
            continue;
        }
        let index = u32::from_ne_bytes(body[4..8].try_into().expect("4 bytes"));
        let name = attr_list(&body[16..])
            .into_iter()
            .find(|(ty, _)| *ty == IFLA_IFNAME)
            .map(|(_, v)| {
                String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
            })
            .unwrap_or_default();
        list.push(Interface {
            index,
            name,
            addrs: Vec::new(),
        });
    }
    // struct ifaddrmsg: family, prefixlen, flags, scope, index (8 bytes).
    for (t, body) in dump(RTM_GETADDR, &[0u8; 8])? {
        if t != RTM_NEWADDR || body.len() < 8 {
            continue;
        }
        let prefix = body[1];
        let index = u32::from_ne_bytes(body[4..8].try_into().expect("4 bytes"));
        let a = attr_list(&body[8..]);
        // IFA_LOCAL is the address itself; IFA_ADDRESS the peer on
        // point-to-point links (and the address elsewhere).
        let raw = a
            .iter()
            .find(|(ty, _)| *ty == IFA_LOCAL)
            .or_else(|| a.iter().find(|(ty, _)| *ty == IFA_ADDRESS))
            .map(|(_, v)| *v);
        let addr: Option<IpAddr> = match raw.map(<[u8]>::len) {
            Some(4) => raw
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(IpAddr::from),
            Some(16) => raw
                .and_then(|v| <[u8; 16]>::try_from(v).ok())
                .map(IpAddr::from),
            _ => None,
        };
        let (Some(addr), Some(i)) = (addr, list.iter_mut().find(|i| i.index == index)) else {
            continue;
        };
        if let Ok(net) = IpNet::new(addr, prefix) {
            i.addrs.push(net);
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test's own namespace has at least the loopback interface with
    /// 127.0.0.1/8 once it is up; reading it needs no privilege.
    #[test]
    fn loopback_is_listed_with_its_address() {
        let l = interfaces().expect("rtnetlink");
        let lo = l.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.index > 0);
        if !lo.addrs.is_empty() {
            assert!(
                lo.addrs.iter().any(|n| n.to_string() == "127.0.0.1/8"),
                "{lo:?}"
            );
        }
    }
}
