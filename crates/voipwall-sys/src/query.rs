//! Questions to nftables over netlink, without `nft`: does our table exist,
//! which base chains do other tables hook, how many rules do they hold.
//!
//! `nft list …` builds its cache from the whole ruleset, set elements
//! included: with a 100,000-entry block list every listing costs ~300 ms,
//! and the daemon asks whether its table exists twice a second. A
//! `NFT_MSG_GETTABLE` for one table costs microseconds whatever the sets
//! hold.

use std::io;

use netlink_sys::constants::NETLINK_NETFILTER;
use voipwall_nft::foreign::ForeignChain;

use crate::netlink::{
    attr, attr_list as attrs, cstr, finish, nest_end, nest_start, push_nfgenmsg, push_nlmsghdr,
    transact,
};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_GETOBJ: u16 = 19;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;

fn msg_type(m: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | m
}

fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

fn family_number(name: &str) -> u8 {
    match name {
        "inet" => 1,
        "ip" => 2,
        "arp" => 3,
        "netdev" => 5,
        "bridge" => 7,
        "ip6" => 10,
        _ => NFPROTO_UNSPEC,
    }
}

fn hook_name(family: u8, n: u32) -> String {
    match (family, n) {
        (5, 0) => "ingress".into(),
        (5, 1) => "egress".into(),
        (_, 0) => "prerouting".into(),
        (_, 1) => "input".into(),
        (_, 2) => "forward".into(),
        (_, 3) => "output".into(),
        (_, 4) => "postrouting".into(),
        (_, 5) => "ingress".into(),
        (_, n) => format!("hook{n}"),
    }
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
}

/// One request, every reply message until the ack or the end of the dump:
/// (type, family, payload after the nfgenmsg header). A kernel error is
/// returned as an `io::Error` (ENOENT when the object does not exist).
fn ask(build: impl FnOnce(&mut Vec<u8>)) -> io::Result<Vec<(u16, u8, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(256);
    build(&mut buf);
    Ok(transact(NETLINK_NETFILTER, &buf)?
        .into_iter()
        .filter(|(_, body)| body.len() >= 4)
        .map(|(ty, body)| (ty & 0xff, body[0], body[4..].to_vec()))
        .collect())
}

/// Whether table `inet <name>` exists in this network namespace.
pub fn table_exists(name: &str) -> io::Result<bool> {
    let r = ask(|buf| {
        let start = push_nlmsghdr(
            buf,
            msg_type(NFT_MSG_GETTABLE),
            NLM_F_REQUEST | NLM_F_ACK,
            1,
        );
        push_nfgenmsg(buf, NFPROTO_INET, 0);
        attr(buf, NFTA_TABLE_NAME, &cstr(name));
        finish(buf, start);
    });
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(2) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The named counters of table `inet <name>`: (name, packets, bytes), in
/// the kernel's order. One dump of counter objects, filtered by the kernel
/// to this table: no rules, sets or elements cross.
pub fn counters(name: &str) -> io::Result<Vec<(String, u64, u64)>> {
    let replies = ask(|buf| {
        let start = push_nlmsghdr(buf, msg_type(NFT_MSG_GETOBJ), NLM_F_REQUEST | NLM_F_DUMP, 1);
        push_nfgenmsg(buf, NFPROTO_INET, 0);
        attr(buf, NFTA_OBJ_TABLE, &cstr(name));
        attr(buf, NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes());
        finish(buf, start);
    })?;
    let be64 = |b: &[u8]| {
        b.get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let mut out = Vec::new();
    for (ty, family, payload) in replies {
        if ty != NFT_MSG_NEWOBJ || family != NFPROTO_INET {
            continue;
        }
        let a = attrs(&payload);
        let get = |t: u16| a.iter().find(|(x, _)| *x == t).map(|(_, v)| *v);
        if get(NFTA_OBJ_TABLE).map(text).as_deref() != Some(name)
            || get(NFTA_OBJ_TYPE).and_then(be32) != Some(NFT_OBJECT_COUNTER)
        {
            continue;
        }
        let data = get(NFTA_OBJ_DATA).map(attrs).unwrap_or_default();
        let dget = |t: u16| {
            data.iter()
                .find(|(x, _)| *x == t)
                .and_then(|(_, v)| be64(v))
        };
        out.push((
            get(NFTA_OBJ_NAME).map(text).unwrap_or_default(),
            dget(NFTA_COUNTER_PACKETS).unwrap_or(0),
            dget(NFTA_COUNTER_BYTES).unwrap_or(0),
        ));
    }
    Ok(out)
}

/// Every base chain of every table but `inet <ours>`, with its rules
/// counted (voipwall's own queue rules left out).
pub fn foreign_chains(ours: &str) -> io::Result<Vec<ForeignChain>> {
    let replies = ask(|buf| {
        let start = push_nlmsghdr(
            buf,
            msg_type(NFT_MSG_GETCHAIN),
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
        );
        push_nfgenmsg(buf, NFPROTO_UNSPEC, 0);
        finish(buf, start);
    })?;
    let mut out = Vec::new();
    for (ty, family, payload) in replies {
        if ty != NFT_MSG_NEWCHAIN {
            continue;
        }
        let a = attrs(&payload);
        let get = |t: u16| a.iter().find(|(x, _)| *x == t).map(|(_, v)| *v);
        let table = get(NFTA_CHAIN_TABLE).map(text).unwrap_or_default();
        if family == NFPROTO_INET && table == ours {
            continue;
        }
        let Some(hook) = get(NFTA_CHAIN_HOOK) else {
            continue;
        };
        let h = attrs(hook);
        let hget = |t: u16| h.iter().find(|(x, _)| *x == t).and_then(|(_, v)| be32(v));
        out.push(ForeignChain {
            family: family_name(family).into(),
            table,
            chain: get(NFTA_CHAIN_NAME).map(text).unwrap_or_default(),
            hook: hook_name(family, hget(NFTA_HOOK_HOOKNUM).unwrap_or(u32::MAX)),
            priority: i64::from(hget(NFTA_HOOK_PRIORITY).unwrap_or(0) as i32),
            policy: match get(NFTA_CHAIN_POLICY).and_then(be32) {
                Some(0) => "drop".into(),
                _ => "accept".into(),
            },
            rules: 0,
        });
    }
    for c in &mut out {
        c.rules = rule_count(&c.family, &c.table, &c.chain)?;
    }
    out.sort_by(|a, b| {
        (a.hook.as_str(), a.priority, &a.family, &a.table).cmp(&(
            b.hook.as_str(),
            b.priority,
            &b.family,
            &b.table,
        ))
    });
    Ok(out)
}

/// One element of a set as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelElem {
    /// The key: an address (4 or 16 bytes, network order).
    pub key: std::net::IpAddr,
    /// In an interval set: this element ends a range (the range before it
    /// stops at `key - 1`).
    pub end: bool,
    /// For verdict maps: the chain of the element's `goto`/`jump`.
    pub chain: Option<String>,
    /// Timeout it was added with, ms.
    pub timeout_ms: Option<u64>,
    /// Time left, ms.
    pub expires_ms: Option<u64>,
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

fn addr(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// The head of a GETSETELEM request for set `set` of `inet <table>`;
/// returns where the message starts, for [`finish`].
fn setelem_request(buf: &mut Vec<u8>, flags: u16, table: &str, set: &str) -> usize {
    let start = push_nlmsghdr(buf, msg_type(NFT_MSG_GETSETELEM), NLM_F_REQUEST | flags, 1);
    push_nfgenmsg(buf, NFPROTO_INET, 0);
    attr(buf, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attr(buf, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    start
}

/// Every element of set `set` in table `inet <table>` (`NFT_MSG_GETSETELEM`
/// dump): what `nft list set` prints, without building nft's cache of the
/// whole ruleset.
pub fn set_elements(table: &str, set: &str) -> io::Result<Vec<KernelElem>> {
    let replies = ask(|buf| {
        let start = setelem_request(buf, NLM_F_DUMP, table, set);
        finish(buf, start);
    })?;
    let mut out = Vec::new();
    for (ty, _, payload) in &replies {
        if *ty != NFT_MSG_NEWSETELEM {
            continue;
        }
        for (t, list) in attrs(payload) {
            if t != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for (_, elem) in attrs(list) {
                let a = attrs(elem);
                let get = |t: u16| a.iter().find(|(x, _)| *x == t).map(|(_, v)| *v);
                let Some(key) = get(NFTA_SET_ELEM_KEY)
                    .and_then(|k| attrs(k).into_iter().find(|(t, _)| *t == NFTA_DATA_VALUE))
                    .and_then(|(_, v)| addr(v))
                else {
                    continue;
                };
                let chain = get(NFTA_SET_ELEM_DATA)
                    .and_then(|d| attrs(d).into_iter().find(|(t, _)| *t == NFTA_DATA_VERDICT))
                    .and_then(|(_, v)| {
                        attrs(v)
                            .into_iter()
                            .find(|(t, _)| *t == NFTA_VERDICT_CHAIN)
                            .map(|(_, c)| text(c))
                    });
                out.push(KernelElem {
                    key,
                    end: get(NFTA_SET_ELEM_FLAGS)
                        .and_then(be32)
                        .is_some_and(|f| f & NFT_SET_ELEM_INTERVAL_END != 0),
                    chain,
                    timeout_ms: get(NFTA_SET_ELEM_TIMEOUT).and_then(be64),
                    expires_ms: get(NFTA_SET_ELEM_EXPIRATION).and_then(be64),
                });
            }
        }
    }
    Ok(out)
}

/// The networks interval set `set` of `inet <table>` holds, with the time
/// each has left (ms), from one dump: each start element with the end
/// element after it is one range (a range up to the last address has no
/// end element); a range that is not one network is given by its first
/// address.
pub fn interval_entries(table: &str, set: &str) -> io::Result<Vec<(ipnet::IpNet, Option<u64>)>> {
    let mut elems = set_elements(table, set)?;
    // Ends sort before starts at the same key (one range ending where the
    // next begins).
    elems.sort_by(|a, b| a.key.cmp(&b.key).then(b.end.cmp(&a.end)));
    let mut out = Vec::new();
    for (i, e) in elems.iter().enumerate() {
        if e.end {
            continue;
        }
        let hi = match elems.get(i + 1) {
            Some(n) if n.end => match n.key {
                std::net::IpAddr::V4(a) => u32::from(a)
                    .checked_sub(1)
                    .map(|x| std::net::IpAddr::from(std::net::Ipv4Addr::from(x))),
                std::net::IpAddr::V6(a) => u128::from(a)
                    .checked_sub(1)
                    .map(|x| std::net::IpAddr::from(std::net::Ipv6Addr::from(x))),
            },
            _ => Some(match e.key {
                std::net::IpAddr::V4(_) => std::net::IpAddr::from(std::net::Ipv4Addr::BROADCAST),
                std::net::IpAddr::V6(_) => {
                    std::net::IpAddr::from(std::net::Ipv6Addr::from(u128::MAX))
                }
            }),
        };
        if let Some(hi) = hi {
            out.push((crate::nft::range_net(e.key, hi), e.expires_ms));
        }
    }
    Ok(out)
}

/// Whether hash set `set` holds `key` (a single-element GETSETELEM: the
/// kernel looks it up, nothing is dumped).
pub fn has_key(table: &str, set: &str, key: std::net::IpAddr) -> io::Result<bool> {
    let r = ask(|buf| {
        let start = setelem_request(buf, NLM_F_ACK, table, set);
        let list = nest_start(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
        let elem = nest_start(buf, 1); // NFTA_LIST_ELEM
        let k = nest_start(buf, NFTA_SET_ELEM_KEY);
        match key {
            std::net::IpAddr::V4(a) => attr(buf, NFTA_DATA_VALUE, &a.octets()),
            std::net::IpAddr::V6(a) => attr(buf, NFTA_DATA_VALUE, &a.octets()),
        }
        nest_end(buf, k);
        nest_end(buf, elem);
        nest_end(buf, list);
        finish(buf, start);
    });
    match r {
        Ok(replies) => Ok(replies.iter().any(|(ty, _, _)| *ty == NFT_MSG_NEWSETELEM)),
        Err(e) if e.raw_os_error() == Some(2) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The rules of one chain, each message's bytes (a dump filtered by table
/// and chain).
fn rules_of(family: &str, table: &str, chain: &str) -> io::Result<Vec<Vec<u8>>> {
    let replies = ask(|buf| {
        let start = push_nlmsghdr(
            buf,
            msg_type(NFT_MSG_GETRULE),
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
        );
        push_nfgenmsg(buf, family_number(family), 0);
        attr(buf, NFTA_RULE_TABLE, &cstr(table));
        attr(buf, NFTA_RULE_CHAIN, &cstr(chain));
        finish(buf, start);
    })?;
    Ok(replies
        .into_iter()
        .filter(|(ty, _, _)| *ty == NFT_MSG_NEWRULE)
        .map(|(_, _, payload)| payload)
        .collect())
}

fn carries(payload: &[u8], marker: &[u8]) -> bool {
    payload.windows(marker.len()).any(|w| w == marker)
}

/// Rules in one chain. voipwall's own queue rules (the call guard's inline
/// mode: iptables-nft rules in the security table marked by their comment)
/// are not another firewall's and are left out.
fn rule_count(family: &str, table: &str, chain: &str) -> io::Result<usize> {
    let ours = crate::nfqueue::QUEUE_COMMENT.as_bytes();
    Ok(rules_of(family, table, chain)?
        .iter()
        .filter(|p| !(table == "security" && carries(p, ours)))
        .count())
}

/// How many rules of `family table chain` carry `marker` in their bytes
/// (their comment): 0 when the chain does not exist.
pub fn marked_rules(family: &str, table: &str, chain: &str, marker: &[u8]) -> usize {
    rules_of(family, table, chain).map_or(0, |r| r.iter().filter(|p| carries(p, marker)).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_walked_with_padding_and_bounds() {
        // NAME "ab\0" (len 7, padded to 8), then a nested HOOK {HOOKNUM 1}.
        let mut b = vec![7, 0, 3, 0, b'a', b'b', 0, 0];
        b.extend_from_slice(&[12, 0, 4, 0x80]);
        b.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 1]);
        let a = attrs(&b);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].0, text(a[0].1).as_str()), (3, "ab"));
        assert_eq!(a[1].0, 4);
        assert_eq!(be32(attrs(a[1].1)[0].1), Some(1));
        // A length beyond the buffer stops the walk instead of panicking.
        assert!(attrs(&[200, 0, 1, 0, 1]).is_empty());
        assert_eq!(hook_name(5, 0), "ingress");
        assert_eq!(hook_name(1, 1), "input");
    }
}
