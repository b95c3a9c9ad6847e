//! `Ruleset` → one nfnetlink batch: the messages `nft -f` sends for the
//! script [`crate::render`] prints, built here so an apply needs no `nft`
//! process, no text parse and no second evaluation of 100,000 elements.
//!
//! The batch is the same transaction as the script, message for message:
//! create what is missing, flush our chains and policy sets, refill them,
//! append the rules. The expressions are the ones nft 1.0 generates for
//! each statement, including its rewrites (a one-element anonymous set
//! becomes a comparison, a single port range two), so `nft list` prints
//! the same table whichever way it was loaded; a namespace test loads
//! every golden ruleset both ways and compares the listings.
//!
//! Pure: it builds bytes. Sending them is `voipwall_sys::netlink::apply_batch`.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use voipwall_policy::{PortSpec, Proto};

use crate::flatten::addr_int;
use crate::ir::*;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWOBJ: u16 = 18;

// Set flags.
const SET_ANONYMOUS: u32 = 0x1;
const SET_CONSTANT: u32 = 0x2;
const SET_INTERVAL: u32 = 0x4;
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;

// nft's data types (datatype.h), as the kernel stores them for listing.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP_TYPE: u32 = 14;
const TYPE_ICMP6_TYPE: u32 = 29;
const TYPE_IFNAME: u32 = 41;
const TYPE_VERDICT: u32 = 0xffff_ff00;

// Verdict codes.
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: u32 = (-3i32) as u32;
const NFT_GOTO: u32 = (-4i32) as u32;
const NFT_RETURN: u32 = (-5i32) as u32;

// cmp operators.
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;

const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;

/// Element lists are split so no attribute reaches its 64 KiB limit.
const ELEMS_BYTES: usize = 48 * 1024;

/// The netlink wire format's building blocks, on a byte buffer: the
/// message header, nfnetlink's generic header, attributes and nests. The
/// one writer for this batch and for the daemon's own netlink requests
/// (`voipwall-sys`: ban-set elements, NFLOG, the queue, queries). Lengths
/// are native-endian as netlink wants; a length past its field saturates
/// (the kernel then refuses the message) rather than panicking.
pub mod tlv {
    /// `NLA_F_NESTED`.
    pub const NESTED: u16 = 0x8000;

    /// Appends an `nlmsghdr` (length patched by [`finish`]); returns where
    /// the message starts.
    pub fn header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) -> usize {
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        start
    }

    /// Writes the length of the message that starts at `start`.
    pub fn finish(buf: &mut [u8], start: usize) {
        let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
        buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Appends nfnetlink's `nfgenmsg` (version 0).
    pub fn nfgenmsg(buf: &mut Vec<u8>, family: u8, res_id: u16) {
        buf.push(family);
        buf.push(0);
        buf.extend_from_slice(&res_id.to_be_bytes());
    }

    fn pad(buf: &mut Vec<u8>) {
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    /// Appends an attribute, padded to four bytes.
    pub fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        buf.extend_from_slice(&len.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(payload);
        pad(buf);
    }

    /// Appends a NUL-terminated string attribute.
    pub fn attr_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
        let len = u16::try_from(5 + s.len()).unwrap_or(u16::MAX);
        buf.extend_from_slice(&len.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(s.as_bytes());
        buf.push(0);
        pad(buf);
    }

    /// Opens a nested attribute; returns where it starts.
    pub fn nest_start(buf: &mut Vec<u8>, ty: u16) -> usize {
        let start = buf.len();
        buf.extend_from_slice(&0u16.to_ne_bytes());
        buf.extend_from_slice(&(ty | NESTED).to_ne_bytes());
        start
    }

    /// Closes the nest that starts at `start`.
    pub fn nest_end(buf: &mut [u8], start: usize) {
        let len = u16::try_from(buf.len() - start).unwrap_or(u16::MAX);
        buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// The bytes of one transaction and what each acknowledged message does.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `BATCH_BEGIN`, the messages, `BATCH_END`: one `sendmsg`.
    pub bytes: Vec<u8>,
    /// The sequence number of the first message; message `i` of
    /// [`Batch::what`] has `first_seq + i`.
    pub first_seq: u32,
    /// The last message's: the only one that asks for an acknowledgement
    /// of success. The kernel sends it only once the whole batch is
    /// committed, and an error for every message it refused.
    pub last_seq: u32,
    /// What each message does (`add rule to vw_input`), to name the one
    /// the kernel refuses.
    pub what: Vec<String>,
}

impl Batch {
    /// What the message with sequence number `seq` did.
    pub fn describe(&self, seq: u32) -> &str {
        seq.checked_sub(self.first_seq)
            .and_then(|i| self.what.get(i as usize))
            .map_or("the batch", String::as_str)
    }
}

/// The whole apply as one batch, like [`crate::render`].
pub fn encode(rs: &Ruleset, first_seq: u32) -> Result<Batch, String> {
    encode_over(rs, &|_| false, first_seq)
}

/// The apply leaving unchanged policy sets alone, like
/// [`crate::render_changes`].
pub fn encode_changes(
    rs: &Ruleset,
    running: &Ruleset,
    in_kernel: &dyn Fn(&Set) -> bool,
    first_seq: u32,
) -> Result<Batch, String> {
    encode_over(
        rs,
        &|s| running.sets.iter().any(|p| p.name == s.name && p == s) && in_kernel(s),
        first_seq,
    )
}

fn encode_over(rs: &Ruleset, keep: &dyn Fn(&Set) -> bool, first_seq: u32) -> Result<Batch, String> {
    let elements: usize = rs.sets.iter().map(|s| s.elements.len()).sum();
    let mut w = W {
        buf: Vec::with_capacity(16 * 1024 + elements * 40),
        rule: Vec::with_capacity(1024),
        in_rule: false,
        last: 0,
        seq: first_seq,
        what: Vec::new(),
        next_set_id: 1,
        set_ids: HashMap::new(),
    };
    w.marker(NFNL_MSG_BATCH_BEGIN);
    let first = w.seq;

    let m = w.msg(NFT_MSG_NEWTABLE, NLM_F_CREATE, "add table inet voipwall");
    w.str(1, Ruleset::TABLE);
    w.u32(2, 0);
    w.end_msg(m);
    for c in &rs.chains {
        let m = w.msg(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            &format!("add chain {}", c.name),
        );
        w.str(1, Ruleset::TABLE);
        w.str(3, &c.name);
        if let Some(h) = &c.hook {
            w.str(7, "filter");
            w.u32(5, verdict_code(&h.policy)?);
            let n = w.nest(4);
            w.u32(1, hooknum(&h.hook)?);
            w.u32(2, priority(&h.priority)? as u32);
            w.end(n);
        }
        w.end_msg(m);
    }
    for s in rs.sets.iter().filter(|s| !s.recreate) {
        w.declare(s, s.size);
    }
    for c in &rs.counters {
        let m = w.msg(NFT_MSG_NEWOBJ, NLM_F_CREATE, &format!("add counter {c}"));
        w.str(1, Ruleset::TABLE);
        w.str(2, c);
        w.u32(3, 1);
        let n = w.nest(4);
        w.u64(1, 0);
        w.u64(2, 0);
        w.end(n);
        w.end_msg(m);
    }
    for c in &rs.chains {
        let m = w.msg(NFT_MSG_DELRULE, 0, &format!("flush chain {}", c.name));
        w.str(1, Ruleset::TABLE);
        w.str(2, &c.name);
        w.end_msg(m);
    }
    for s in rs
        .sets
        .iter()
        .filter(|s| s.plane == Plane::Policy && !keep(s))
    {
        if s.recreate {
            w.declare(s, None);
            let m = w.msg(NFT_MSG_DELSET, 0, &format!("delete set {}", s.name));
            w.str(1, Ruleset::TABLE);
            w.str(2, &s.name);
            w.end_msg(m);
            w.declare(s, s.size);
        } else {
            let m = w.msg(NFT_MSG_DELSETELEM, 0, &format!("flush set {}", s.name));
            w.str(2, &s.name);
            w.str(1, Ruleset::TABLE);
            w.end_msg(m);
        }
        let elems = named_elements(s);
        w.elements(&s.name, None, &elems);
    }
    for c in &rs.chains {
        for r in &c.rules {
            w.rule(&c.name, r)?;
        }
    }
    // One acknowledgement for the whole batch: the kernel reports every
    // refused message anyway, and acknowledging each of hundreds could
    // overflow a receive buffer that cannot be raised (in a container)
    // after the kernel had committed.
    let last = w.last;
    let flags = u16::from_ne_bytes([w.buf[last + 6], w.buf[last + 7]]) | NLM_F_ACK;
    w.buf[last + 6..last + 8].copy_from_slice(&flags.to_ne_bytes());
    w.marker(NFNL_MSG_BATCH_END);
    let n = u32::try_from(w.what.len()).unwrap_or(u32::MAX);
    Ok(Batch {
        bytes: w.buf,
        first_seq: first,
        last_seq: first.wrapping_add(n.saturating_sub(1)),
        what: w.what,
    })
}

/// One element as the kernel takes it: key, interval end, verdict.
struct Elem {
    key: Vec<u8>,
    end: bool,
    goto: Option<String>,
}

fn addr_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One past `a`, `None` at the end of the address space.
fn next_addr(a: &IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(a) => u32::from(*a)
            .checked_add(1)
            .map(|x| IpAddr::from(std::net::Ipv4Addr::from(x))),
        IpAddr::V6(a) => u128::from(*a)
            .checked_add(1)
            .map(|x| IpAddr::from(std::net::Ipv6Addr::from(x))),
    }
}

/// A named set's elements: keys, or start/end pairs for interval sets
/// (the end one past the last address, none at the end of the space).
fn named_elements(s: &Set) -> Vec<Elem> {
    let mut v = Vec::with_capacity(s.elements.len() * if s.interval { 2 } else { 1 });
    for e in &s.elements {
        v.push(Elem {
            key: addr_bytes(&e.lo),
            end: false,
            goto: e.goto.clone(),
        });
        if s.interval
            && let Some(past) = next_addr(&e.hi)
        {
            v.push(Elem {
                key: addr_bytes(&past),
                end: true,
                goto: None,
            });
        }
    }
    v
}

/// An anonymous interval set's elements as nft sends them: the ranges
/// sorted and merged where they overlap or touch, a leading interval end
/// at zero when the first does not start there.
fn anon_intervals(mut ranges: Vec<(u128, u128)>, width: usize) -> Vec<Elem> {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let max = if width >= 16 {
        u128::MAX
    } else {
        (1u128 << (width * 8)) - 1
    };
    let key = |x: u128| x.to_be_bytes()[16 - width..].to_vec();
    let mut v = Vec::new();
    if merged.first().is_some_and(|r| r.0 != 0) {
        v.push(Elem {
            key: key(0),
            end: true,
            goto: None,
        });
    }
    for (lo, hi) in merged {
        v.push(Elem {
            key: key(lo),
            end: false,
            goto: None,
        });
        if hi < max {
            v.push(Elem {
                key: key(hi + 1),
                end: true,
                goto: None,
            });
        }
    }
    v
}

/// An interface name as the kernel compares it: 16 bytes, zero-padded.
fn ifname_key(name: &[u8]) -> u128 {
    let mut k = [0u8; 16];
    let n = name.len().min(16);
    k[..n].copy_from_slice(&name[..n]);
    u128::from_be_bytes(k)
}

/// An interval `iifname vmap`: `eth*` is every name from `eth` to the last
/// one it starts, an exact name just itself; in key order, a leading
/// interval end at zero, an end after each range.
fn ifname_intervals(entries: &[(String, String)]) -> Vec<Elem> {
    let mut ranges: Vec<(u128, u128, &str)> = entries
        .iter()
        .map(|(i, c)| match i.strip_suffix('*') {
            Some(prefix) => {
                let lo = ifname_key(prefix.as_bytes());
                let free = 8 * (16 - prefix.len().min(16));
                let hi = if free >= 128 {
                    u128::MAX
                } else {
                    lo | ((1u128 << free) - 1)
                };
                (lo, hi, c.as_str())
            }
            None => {
                let k = ifname_key(i.as_bytes());
                (k, k, c.as_str())
            }
        })
        .collect();
    ranges.sort_unstable();
    let mut v = Vec::with_capacity(ranges.len() * 2 + 1);
    if ranges.first().is_some_and(|r| r.0 != 0) {
        v.push(Elem {
            key: vec![0; 16],
            end: true,
            goto: None,
        });
    }
    for (lo, hi, chain) in ranges {
        v.push(Elem {
            key: lo.to_be_bytes().to_vec(),
            end: false,
            goto: Some(chain.to_string()),
        });
        if let Some(past) = hi.checked_add(1) {
            v.push(Elem {
                key: past.to_be_bytes().to_vec(),
                end: true,
                goto: None,
            });
        }
    }
    v
}

fn verdict_code(policy: &str) -> Result<u32, String> {
    match policy {
        "accept" => Ok(NF_ACCEPT),
        "drop" => Ok(NF_DROP),
        p => Err(format!("unknown chain policy `{p}`")),
    }
}

fn hooknum(hook: &str) -> Result<u32, String> {
    match hook {
        "prerouting" => Ok(0),
        "input" => Ok(1),
        "forward" => Ok(2),
        "output" => Ok(3),
        "postrouting" => Ok(4),
        h => Err(format!("unknown hook `{h}`")),
    }
}

fn priority(p: &str) -> Result<i32, String> {
    match p {
        "raw" => Ok(-300),
        "mangle" => Ok(-150),
        "dstnat" => Ok(-100),
        "filter" => Ok(0),
        "security" => Ok(50),
        "srcnat" => Ok(100),
        n => n.parse().map_err(|_| format!("unknown priority `{n}`")),
    }
}

fn icmp_type(name: &str) -> Result<u8, String> {
    Ok(match name {
        "echo-reply" => 0,
        "destination-unreachable" => 3,
        "source-quench" => 4,
        "redirect" => 5,
        "echo-request" => 8,
        "router-advertisement" => 9,
        "router-solicitation" => 10,
        "time-exceeded" => 11,
        "parameter-problem" => 12,
        "timestamp-request" => 13,
        "timestamp-reply" => 14,
        n => return Err(format!("unknown ICMP type `{n}`")),
    })
}

fn icmpv6_type(name: &str) -> Result<u8, String> {
    Ok(match name {
        "destination-unreachable" => 1,
        "packet-too-big" => 2,
        "time-exceeded" => 3,
        "parameter-problem" => 4,
        "echo-request" => 128,
        "echo-reply" => 129,
        "mld-listener-query" => 130,
        "mld-listener-report" => 131,
        "mld-listener-done" | "mld-listener-reduction" => 132,
        "nd-router-solicit" => 133,
        "nd-router-advert" => 134,
        "nd-neighbor-solicit" => 135,
        "nd-neighbor-advert" => 136,
        "nd-redirect" => 137,
        "router-renumbering" => 138,
        "ind-neighbor-solicit" => 141,
        "ind-neighbor-advert" => 142,
        "mld2-listener-report" => 143,
        n => return Err(format!("unknown ICMPv6 type `{n}`")),
    })
}

/// The user data nft attaches to an anonymous set keyed by a protocol
/// field (`udp dport`): the expression its key came from, for `nft list`.
fn typeof_payload(desc: u8, field: u8) -> Vec<u8> {
    let mut v = vec![3, 20, 0, 4];
    v.extend_from_slice(&7u32.to_ne_bytes());
    v.extend_from_slice(&[1, 12, 0, 4]);
    v.extend_from_slice(&u32::from(desc).to_ne_bytes());
    v.extend_from_slice(&[1, 4]);
    v.extend_from_slice(&u32::from(field).to_ne_bytes());
    v
}

/// The same for a raw `@th,64,32` key.
fn typeof_raw_th_64_32() -> Vec<u8> {
    let mut v = vec![3, 38, 0, 4];
    v.extend_from_slice(&7u32.to_ne_bytes());
    v.extend_from_slice(&[1, 30]);
    for (t, x) in [(0u8, 0u32), (1, 0), (2, 3), (3, 64), (4, 32)] {
        v.extend_from_slice(&[t, 4]);
        v.extend_from_slice(&x.to_ne_bytes());
    }
    v
}

/// The user data of nft's anonymous `iifname vmap { ... }`.
fn iifname_map_udata() -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend_from_slice(&1u32.to_ne_bytes());
    v.extend_from_slice(&[1, 4]);
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&[4, 8, 0, 4]);
    v.extend_from_slice(&1u32.to_ne_bytes());
    v.extend_from_slice(&[1, 0, 6, 4]);
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

/// The key of an anonymous set: its nft type and width, and the user
/// data saying what expression it came from.
struct Key {
    ty: u32,
    len: u32,
    typeof_udata: Vec<u8>,
}

/// The batch under construction. Rule expressions are written aside
/// (`rule`), because the anonymous sets a rule looks up are messages that
/// must come before it.
struct W {
    buf: Vec<u8>,
    rule: Vec<u8>,
    in_rule: bool,
    /// Offset of the last message started.
    last: usize,
    seq: u32,
    what: Vec<String>,
    next_set_id: u32,
    set_ids: HashMap<String, u32>,
}

impl W {
    fn out(&mut self) -> &mut Vec<u8> {
        if self.in_rule {
            &mut self.rule
        } else {
            &mut self.buf
        }
    }

    fn marker(&mut self, ty: u16) {
        let start = self.header(ty, NLM_F_REQUEST);
        tlv::nfgenmsg(self.out(), 0, NFNL_SUBSYS_NFTABLES);
        self.finish(start);
    }

    fn header(&mut self, ty: u16, flags: u16) -> usize {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        tlv::header(self.out(), ty, flags, seq)
    }

    fn finish(&mut self, start: usize) {
        tlv::finish(self.out(), start);
    }

    /// Starts an nf_tables message. The kernel reports every refused one;
    /// only the last asks for an acknowledgement of success (see
    /// [`Batch::last_seq`]).
    fn msg(&mut self, ty: u16, flags: u16, what: &str) -> usize {
        let start = self.header((NFNL_SUBSYS_NFTABLES << 8) | ty, NLM_F_REQUEST | flags);
        self.what.push(what.to_string());
        self.last = start;
        tlv::nfgenmsg(self.out(), NFPROTO_INET, 0);
        start
    }

    fn end_msg(&mut self, start: usize) {
        self.finish(start);
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        tlv::attr(self.out(), ty, payload);
    }

    fn str(&mut self, ty: u16, s: &str) {
        tlv::attr_str(self.out(), ty, s);
    }

    fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn nest(&mut self, ty: u16) -> usize {
        tlv::nest_start(self.out(), ty)
    }

    fn end(&mut self, start: usize) {
        tlv::nest_end(self.out(), start);
    }

    /// `NFTA_DATA_VALUE` inside attribute `ty`.
    fn data(&mut self, ty: u16, value: &[u8]) {
        let n = self.nest(ty);
        self.attr(1, value);
        self.end(n);
    }

    /// A verdict inside attribute `ty` (`NFTA_DATA_VERDICT`).
    fn verdict(&mut self, ty: u16, code: u32, chain: Option<&str>) {
        let n = self.nest(ty);
        let v = self.nest(2);
        self.u32(1, code);
        if let Some(c) = chain {
            self.str(2, c);
        }
        self.end(v);
        self.end(n);
    }

    fn new_set_id(&mut self) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        id
    }

    /// `add set` / `add map` of a named set.
    fn declare(&mut self, s: &Set, size: Option<u32>) {
        let kind = if s.verdict_map { "map" } else { "set" };
        let m = self.msg(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            &format!("add {kind} {}", s.name),
        );
        self.str(1, Ruleset::TABLE);
        self.str(2, &s.name);
        let mut flags = 0;
        if s.dynamic {
            flags |= SET_EVAL;
        }
        if s.interval {
            flags |= SET_INTERVAL;
        }
        // nft sets the timeout flag for a default timeout too.
        if s.timeout || s.default_timeout.is_some() {
            flags |= SET_TIMEOUT;
        }
        if s.verdict_map {
            flags |= SET_MAP;
        }
        self.u32(3, flags);
        let (ty, len) = match s.family {
            Family::V4 => (TYPE_IPADDR, 4),
            Family::V6 => (TYPE_IP6ADDR, 16),
        };
        self.u32(4, ty);
        self.u32(5, len);
        if s.verdict_map {
            self.u32(6, TYPE_VERDICT);
            self.u32(7, 0);
        }
        let id = self.new_set_id();
        self.u32(10, id);
        self.set_ids.insert(s.name.clone(), id);
        if let Some(t) = s.default_timeout {
            self.u64(11, t.saturating_mul(1000));
        }
        if let Some(size) = size {
            let n = self.nest(9);
            self.u32(1, size);
            self.end(n);
        }
        let mut ud = vec![0u8, 4];
        ud.extend_from_slice(&2u32.to_ne_bytes());
        let c = crate::render::comment(&s.comment);
        ud.push(7);
        ud.push(u8::try_from(c.len() + 1).unwrap_or(u8::MAX));
        ud.extend_from_slice(c.as_bytes());
        ud.push(0);
        self.attr(13, &ud);
        self.end_msg(m);
    }

    /// `add element`: as many messages as the list needs; an interval's
    /// end travels with its start.
    fn elements(&mut self, set: &str, set_id: Option<u32>, elems: &[Elem]) {
        let mut i = 0;
        while i < elems.len() {
            let m = self.msg(
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                &format!("add element {set}"),
            );
            self.str(1, Ruleset::TABLE);
            self.str(2, set);
            if let Some(id) = set_id {
                self.u32(4, id);
            }
            let list = self.nest(3);
            let list_start = self.out().len();
            let mut n = 0u16;
            while i < elems.len() {
                let e = &elems[i];
                if self.out().len() - list_start > ELEMS_BYTES && !e.end {
                    break;
                }
                n = n.wrapping_add(1);
                let el = self.nest(n);
                if e.end {
                    self.u32(3, 1);
                }
                self.data(1, &e.key);
                if let Some(c) = &e.goto {
                    self.verdict(2, NFT_GOTO, Some(c));
                }
                self.end(el);
                i += 1;
            }
            self.end(list);
            self.end_msg(m);
        }
    }

    /// An anonymous set (or verdict map) of constant elements, declared and
    /// filled in the batch ahead of the rule being built. Returns its id.
    fn anon(&mut self, key: &Key, interval: bool, map: bool, elems: &[Elem], udata: &[u8]) -> u32 {
        let in_rule = std::mem::replace(&mut self.in_rule, false);
        let name = if map { "__map%d" } else { "__set%d" };
        let m = self.msg(NFT_MSG_NEWSET, NLM_F_CREATE, "add anonymous set");
        self.str(1, Ruleset::TABLE);
        self.str(2, name);
        let mut flags = SET_ANONYMOUS | SET_CONSTANT;
        if interval {
            flags |= SET_INTERVAL;
        }
        if map {
            flags |= SET_MAP;
        }
        self.u32(3, flags);
        self.u32(4, key.ty);
        self.u32(5, key.len);
        if map {
            self.u32(6, TYPE_VERDICT);
            self.u32(7, 0);
        }
        let id = self.new_set_id();
        self.u32(10, id);
        let n = self.nest(9);
        self.u32(1, u32::try_from(elems.len()).unwrap_or(u32::MAX));
        self.end(n);
        self.attr(13, udata);
        self.end_msg(m);
        self.elements(name, Some(id), elems);
        self.in_rule = in_rule;
        id
    }

    fn expr(&mut self, name: &str) -> (usize, usize) {
        let e = self.nest(1);
        self.str(1, name);
        let d = self.nest(2);
        (e, d)
    }

    fn end_expr(&mut self, (e, d): (usize, usize)) {
        self.end(d);
        self.end(e);
    }

    fn meta(&mut self, key: u32) {
        let x = self.expr("meta");
        self.u32(2, key);
        self.u32(1, REG_1);
        self.end_expr(x);
    }

    fn cmp(&mut self, op: u32, value: &[u8]) {
        let x = self.expr("cmp");
        self.u32(1, REG_1);
        self.u32(2, op);
        self.data(3, value);
        self.end_expr(x);
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        let x = self.expr("payload");
        self.u32(1, REG_1);
        self.u32(2, base);
        self.u32(3, offset);
        self.u32(4, len);
        self.end_expr(x);
    }

    fn bitwise(&mut self, mask: &[u8], with_op: bool) {
        let x = self.expr("bitwise");
        self.u32(1, REG_1);
        self.u32(2, REG_1);
        if with_op {
            self.u32(6, 0);
        }
        self.u32(3, u32::try_from(mask.len()).unwrap_or(0));
        self.data(4, mask);
        self.data(5, &vec![0; mask.len()]);
        self.end_expr(x);
    }

    fn lookup(&mut self, set: &str, id: Option<u32>, invert: bool, vmap: bool) {
        let x = self.expr("lookup");
        self.u32(2, REG_1);
        self.str(1, set);
        if let Some(id) = id {
            self.u32(4, id);
        }
        if vmap {
            self.u32(3, REG_VERDICT);
        }
        if invert {
            self.u32(5, 1);
        }
        self.end_expr(x);
    }

    fn named_lookup(&mut self, set: &str, invert: bool, vmap: bool) {
        let id = self.set_ids.get(set).copied();
        self.lookup(set, id, invert, vmap);
    }

    fn immediate(&mut self, code: u32, chain: Option<&str>) {
        let x = self.expr("immediate");
        self.u32(1, REG_VERDICT);
        self.verdict(2, code, chain);
        self.end_expr(x);
    }

    fn limit(&mut self, rate: u32, burst: u32, over: bool) {
        let x = self.expr("limit");
        self.limit_body(rate, burst, over);
        self.end_expr(x);
    }

    fn limit_body(&mut self, rate: u32, burst: u32, over: bool) {
        self.u64(1, u64::from(rate));
        self.u64(2, 1);
        self.u32(3, burst);
        self.u32(4, 0);
        self.u32(5, u32::from(over));
    }

    fn log(&mut self, prefix: Option<&str>, group: u16, snaplen: u32) {
        let x = self.expr("log");
        if let Some(p) = prefix {
            self.str(2, p);
        }
        self.attr(1, &group.to_be_bytes());
        self.u32(3, snaplen);
        self.end_expr(x);
    }

    fn counter(&mut self, counter: Option<&str>) {
        match counter {
            None => {}
            Some("") => {
                let x = self.expr("counter");
                self.end_expr(x);
            }
            Some(name) => {
                let x = self.expr("objref");
                self.u32(1, 1);
                self.str(2, name);
                self.end_expr(x);
            }
        }
    }

    /// `meta nfproto ipv4|ipv6`, once per rule.
    fn nfproto(&mut self, st: &mut RuleState, f: Family) {
        if st.nfproto == Some(f) {
            return;
        }
        st.nfproto = Some(f);
        self.meta(15);
        self.cmp(CMP_EQ, &[if f == Family::V4 { 2 } else { 10 }]);
    }

    /// `meta l4proto udp|tcp|icmp|icmpv6`, once per rule.
    fn l4proto(&mut self, st: &mut RuleState, p: u8) {
        if st.l4proto == Some(p) {
            return;
        }
        st.l4proto = Some(p);
        self.meta(16);
        self.cmp(CMP_EQ, &[p]);
    }

    fn saddr(&mut self, f: Family) {
        match f {
            Family::V4 => self.payload(1, 12, 4),
            Family::V6 => self.payload(1, 8, 16),
        }
    }

    /// A match on a value list: a comparison for one value, two for one
    /// range, an anonymous set otherwise (what nft makes of `{ ... }`).
    fn values(&mut self, key: &Key, ranges: &[(u128, u128)]) {
        let w = key.len as usize;
        let bytes = |x: u128| x.to_be_bytes()[16 - w..].to_vec();
        match ranges {
            [(lo, hi)] if lo == hi => self.cmp(CMP_EQ, &bytes(*lo)),
            [(lo, hi)] => {
                self.cmp(CMP_GTE, &bytes(*lo));
                self.cmp(CMP_LTE, &bytes(*hi));
            }
            _ => {
                let interval = ranges.iter().any(|(lo, hi)| lo != hi);
                let elems: Vec<Elem> = if interval {
                    anon_intervals(ranges.to_vec(), w)
                } else {
                    ranges
                        .iter()
                        .map(|(lo, _)| Elem {
                            key: bytes(*lo),
                            end: false,
                            goto: None,
                        })
                        .collect()
                };
                let mut ud = vec![0u8, 4];
                ud.extend_from_slice(&2u32.to_ne_bytes());
                if interval {
                    ud.extend_from_slice(&[2, 4]);
                    ud.extend_from_slice(&1u32.to_ne_bytes());
                }
                ud.extend_from_slice(&key.typeof_udata);
                let id = self.anon(key, interval, false, &elems, &ud);
                self.lookup("__set%d", Some(id), false, false);
            }
        }
    }

    fn ports(&mut self, st: &mut RuleState, proto: Proto, offset: u32, ports: &[PortSpec]) {
        let (p, desc) = match proto {
            Proto::Udp => (17, 6),
            Proto::Tcp => (6, 8),
        };
        self.l4proto(st, p);
        self.payload(2, offset, 2);
        let ranges: Vec<(u128, u128)> = ports
            .iter()
            .map(|p| (u128::from(p.lo), u128::from(p.hi)))
            .collect();
        let field = if offset == 2 { 2 } else { 1 };
        let key = Key {
            ty: TYPE_INET_SERVICE,
            len: 2,
            typeof_udata: typeof_payload(desc, field),
        };
        self.values(&key, &ranges);
    }

    fn icmp(
        &mut self,
        st: &mut RuleState,
        v6: bool,
        types: &[std::borrow::Cow<'static, str>],
    ) -> Result<(), String> {
        self.l4proto(st, if v6 { 58 } else { 1 });
        self.payload(2, 0, 1);
        let mut r = Vec::with_capacity(types.len());
        for t in types {
            let v = u128::from(if v6 { icmpv6_type(t)? } else { icmp_type(t)? });
            r.push((v, v));
        }
        let key = Key {
            ty: if v6 { TYPE_ICMP6_TYPE } else { TYPE_ICMP_TYPE },
            len: 1,
            typeof_udata: typeof_payload(if v6 { 0xe } else { 4 }, 1),
        };
        self.values(&key, &r);
        Ok(())
    }

    fn matches(&mut self, st: &mut RuleState, m: &Match) -> Result<(), String> {
        match m {
            Match::Loopback => {
                self.meta(4);
                self.cmp(CMP_EQ, &1u32.to_ne_bytes());
            }
            Match::ToLocal => {
                let x = self.expr("fib");
                self.u32(3, 2);
                self.u32(2, 3);
                self.u32(1, REG_1);
                self.end_expr(x);
                self.cmp(CMP_EQ, &2u32.to_ne_bytes());
            }
            Match::Ct(c) => {
                let x = self.expr("ct");
                self.u32(2, 0);
                self.u32(1, REG_1);
                self.end_expr(x);
                let bits: u32 = match c {
                    CtMatch::Invalid => 1,
                    CtMatch::EstablishedRelated => 2 | 4,
                };
                self.bitwise(&bits.to_ne_bytes(), false);
                self.cmp(CMP_NEQ, &0u32.to_ne_bytes());
            }
            Match::SaddrIn {
                family,
                set,
                negate,
            } => {
                self.nfproto(st, *family);
                self.saddr(*family);
                self.named_lookup(set, *negate, false);
            }
            Match::SaddrPrefixIn {
                family,
                prefix,
                set,
            } => {
                self.nfproto(st, *family);
                self.saddr(*family);
                self.bitwise(&addr_bytes(&mask_addr(*family, *prefix)), true);
                self.named_lookup(set, false, false);
            }
            Match::SaddrNets { family, nets } => {
                self.nfproto(st, *family);
                self.nets(*family, nets);
            }
            Match::Dport(proto, p) => self.ports(st, *proto, 2, p),
            Match::Sport(proto, p) => self.ports(st, *proto, 0, p),
            Match::SipResponse(yes) => {
                self.payload(2, 8, 4);
                self.cmp(if *yes { CMP_EQ } else { CMP_NEQ }, b"SIP/");
            }
            Match::SipResponseOrBye => {
                self.payload(2, 8, 4);
                let bye = u128::from(u32::from_be_bytes(*b"BYE "));
                let sip = u128::from(u32::from_be_bytes(*b"SIP/"));
                let key = Key {
                    ty: TYPE_INTEGER,
                    len: 4,
                    typeof_udata: typeof_raw_th_64_32(),
                };
                self.values(&key, &[(bye, bye), (sip, sip)]);
            }
            Match::Icmp(types) => self.icmp(st, false, types)?,
            Match::Icmpv6(types) => self.icmp(st, true, types)?,
        }
        Ok(())
    }

    /// `ip saddr { ... }`: one address or prefix is a comparison on the
    /// bytes it covers (the masked address when the prefix is not whole
    /// bytes), more are an anonymous interval set.
    fn nets(&mut self, family: Family, nets: &[IpNet]) {
        let width: u32 = if family == Family::V4 { 4 } else { 16 };
        let base_off = if family == Family::V4 { 12 } else { 8 };
        if let [net] = nets {
            let bits = usize::from(net.prefix_len());
            let bytes = bits.div_ceil(8);
            let addr = addr_bytes(&net.network());
            // A zero-length prefix compares nothing: nft loads the whole
            // address and masks it to zero, as for an unaligned prefix.
            if bits > 0 && bits.is_multiple_of(8) {
                self.payload(1, base_off, u32::try_from(bytes).unwrap_or(0));
                self.cmp(CMP_EQ, &addr[..bytes]);
            } else {
                self.saddr(family);
                self.bitwise(&addr_bytes(&net.netmask()), true);
                self.cmp(CMP_EQ, &addr);
            }
            return;
        }
        self.saddr(family);
        let ranges: Vec<(u128, u128)> = nets
            .iter()
            .map(|n| (addr_int(&n.network()), addr_int(&n.broadcast())))
            .collect();
        let key = Key {
            ty: if family == Family::V4 {
                TYPE_IPADDR
            } else {
                TYPE_IP6ADDR
            },
            len: width,
            typeof_udata: if family == Family::V4 {
                typeof_payload(0xc, 0xb)
            } else {
                typeof_payload(0xd, 0xa)
            },
        };
        let elems = anon_intervals(ranges, width as usize);
        let mut ud = vec![0u8, 4];
        ud.extend_from_slice(&2u32.to_ne_bytes());
        ud.extend_from_slice(&[2, 4]);
        ud.extend_from_slice(&1u32.to_ne_bytes());
        ud.extend_from_slice(&key.typeof_udata);
        let id = self.anon(&key, true, false, &elems, &ud);
        self.lookup("__set%d", Some(id), false, false);
    }

    fn action(&mut self, st: &mut RuleState, r: &Rule) -> Result<(), String> {
        let counter = r.counter.as_deref();
        match &r.action {
            Action::Accept => {
                self.counter(counter);
                self.immediate(NF_ACCEPT, None);
            }
            Action::Drop => {
                self.counter(counter);
                self.immediate(NF_DROP, None);
            }
            Action::Return => {
                self.counter(counter);
                self.immediate(NFT_RETURN, None);
            }
            Action::Jump(c) => {
                self.counter(counter);
                self.immediate(NFT_JUMP, Some(c));
            }
            Action::Goto(c) => {
                self.counter(counter);
                self.immediate(NFT_GOTO, Some(c));
            }
            Action::Reject => {
                self.counter(counter);
                let x = self.expr("reject");
                self.u32(1, 2);
                self.attr(2, &[3]);
                self.end_expr(x);
            }
            Action::SaddrVmap(f, map) => {
                self.counter(counter);
                self.nfproto(st, *f);
                self.saddr(*f);
                self.named_lookup(map, false, true);
            }
            Action::IifVmap(entries) => {
                self.counter(counter);
                self.meta(6);
                // A name ending in `*` matches every name it starts: nft
                // makes the map an interval map, each name a range.
                let wildcard = entries.iter().any(|(i, _)| i.ends_with('*'));
                let elems: Vec<Elem> = if wildcard {
                    ifname_intervals(entries)
                } else {
                    entries
                        .iter()
                        .map(|(i, c)| Elem {
                            key: ifname_key(i.as_bytes()).to_be_bytes().to_vec(),
                            end: false,
                            goto: Some(c.clone()),
                        })
                        .collect()
                };
                let key = Key {
                    ty: TYPE_IFNAME,
                    len: 16,
                    typeof_udata: Vec::new(),
                };
                let id = self.anon(&key, wildcard, true, &elems, &iifname_map_udata());
                self.lookup("__map%d", Some(id), false, true);
            }
            Action::Nflog {
                group,
                snaplen,
                outbound,
            } => {
                self.counter(counter);
                self.log(outbound.then_some(OUTBOUND_PREFIX), *group, *snaplen);
            }
            Action::Sample {
                group,
                rate,
                prefix,
            } => {
                self.counter(counter);
                self.limit(*rate, *rate, false);
                self.log(Some(prefix), *group, crate::compile::DROP_SNAPLEN);
            }
            Action::LimitAccept(n) => {
                self.counter(counter);
                self.limit(*n, 5, false);
                self.immediate(NF_ACCEPT, None);
            }
            Action::LimitOverDrop(pps) => {
                self.limit(*pps, *pps, true);
                self.counter(counter);
                self.immediate(NF_DROP, None);
            }
            Action::MeterDrop { family, meter, pps } => {
                self.meter(st, *family, meter, *pps);
                self.counter(counter);
                self.immediate(NF_DROP, None);
            }
            Action::MeterBan {
                family,
                meter,
                pps,
                ban_set,
                timeout,
            } => {
                self.meter(st, *family, meter, *pps);
                self.saddr(*family);
                let x = self.expr("dynset");
                self.u32(4, REG_1);
                self.u32(3, 0);
                self.u64(6, timeout.saturating_mul(1000));
                self.str(1, ban_set);
                if let Some(id) = self.set_ids.get(ban_set.as_str()).copied() {
                    self.u32(2, id);
                }
                self.end_expr(x);
                self.counter(counter);
                self.immediate(NF_DROP, None);
            }
        }
        Ok(())
    }

    /// `update @meter { ip saddr limit rate over N/second burst N packets }`.
    fn meter(&mut self, st: &mut RuleState, family: Family, meter: &str, pps: u32) {
        self.nfproto(st, family);
        self.saddr(family);
        let x = self.expr("dynset");
        self.u32(4, REG_1);
        self.u32(3, 1);
        self.str(1, meter);
        if let Some(id) = self.set_ids.get(meter).copied() {
            self.u32(2, id);
        }
        let e = self.nest(7);
        self.str(1, "limit");
        let d = self.nest(2);
        self.limit_body(pps, pps, true);
        self.end(d);
        self.end(e);
        self.end_expr(x);
    }

    fn rule(&mut self, chain: &str, r: &Rule) -> Result<(), String> {
        self.rule.clear();
        self.in_rule = true;
        let mut st = RuleState::default();
        let mut result = Ok(());
        for m in &r.matches {
            result = self.matches(&mut st, m);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.action(&mut st, r);
        }
        self.in_rule = false;
        result?;
        let m = self.msg(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            &format!("add rule to {chain} ({})", r.comment),
        );
        self.str(1, Ruleset::TABLE);
        self.str(2, chain);
        let n = self.nest(4);
        let exprs = std::mem::take(&mut self.rule);
        self.buf.extend_from_slice(&exprs);
        self.rule = exprs;
        self.end(n);
        let c = crate::render::comment(&r.comment);
        let mut ud = vec![0u8, u8::try_from(c.len() + 1).unwrap_or(u8::MAX)];
        ud.extend_from_slice(c.as_bytes());
        ud.push(0);
        self.attr(7, &ud);
        self.end_msg(m);
        Ok(())
    }
}

/// Per-rule protocol dependencies already matched.
#[derive(Default)]
struct RuleState {
    nfproto: Option<Family>,
    l4proto: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(blocks: usize) -> Ruleset {
        let mut text = String::from("[interfaces]\neth0 = \"internet\"\n");
        for i in 0..blocks {
            text.push_str(&format!(
                "[[block]]\naddress = \"10.{}.{}.1\"\n",
                i / 256,
                i % 256
            ));
        }
        crate::compile(
            &crate::test_policy(&text),
            &crate::CompileInput {
                now: 0,
                ..Default::default()
            },
        )
    }

    /// (type, flags, seq) of every message, walking the lengths.
    fn messages(b: &[u8]) -> Vec<(u16, u16, u32)> {
        let mut v = Vec::new();
        let mut off = 0;
        while off < b.len() {
            let len = u32::from_ne_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            assert!(len >= 20 && off + len <= b.len(), "message at {off}: {len}");
            let ty = u16::from_ne_bytes(b[off + 4..off + 6].try_into().unwrap());
            let flags = u16::from_ne_bytes(b[off + 6..off + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(b[off + 8..off + 12].try_into().unwrap());
            v.push((ty, flags, seq));
            off += len.next_multiple_of(4);
        }
        assert_eq!(off, b.len());
        v
    }

    #[test]
    fn one_transaction_whose_messages_are_named_and_acknowledged_once() {
        let rs = ruleset(5000);
        let b = encode(&rs, 7).unwrap();
        let m = messages(&b.bytes);
        assert_eq!(m.first().unwrap().0, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(m.last().unwrap().0, NFNL_MSG_BATCH_END);
        assert_eq!(m.len(), b.what.len() + 2);
        // Consecutive sequence numbers, so a refusal names its message.
        for (i, x) in m[1..m.len() - 1].iter().enumerate() {
            assert_eq!(x.2, b.first_seq + i as u32);
        }
        // Only the last message asks for an acknowledgement of success.
        let acked: Vec<_> = m.iter().filter(|x| x.1 & NLM_F_ACK != 0).collect();
        assert_eq!(acked.len(), 1);
        assert_eq!(acked[0].2, b.last_seq);
        assert_eq!(b.last_seq, b.first_seq + b.what.len() as u32 - 1);
        assert_eq!(b.describe(b.first_seq), "add table inet voipwall");
        assert!(
            b.describe(b.first_seq + b.what.len() as u32 - 1)
                .starts_with("add rule to ")
        );
        assert_eq!(b.describe(0), "the batch");
        // 5,000 block entries do not fit one attribute: several messages.
        let fills = b
            .what
            .iter()
            .filter(|w| *w == "add element vw_blockhost_v4")
            .count();
        assert!(fills >= 2, "{fills} element messages");
    }

    #[test]
    fn kept_sets_are_neither_flushed_nor_refilled() {
        let rs = ruleset(10);
        let full = encode(&rs, 1).unwrap();
        let same = encode_changes(&rs, &rs, &|_| true, 1).unwrap();
        let has = |b: &Batch, w: &str| b.what.iter().any(|x| x == w);
        // Host lists are recreated at their size, networks flushed.
        assert!(
            has(&full, "delete set vw_blockhost_v4") && has(&full, "add element vw_blockhost_v4")
        );
        assert!(has(&full, "flush set vw_block_v4"));
        assert!(
            !has(&same, "delete set vw_blockhost_v4") && !has(&same, "add element vw_blockhost_v4")
        );
        assert!(!has(&same, "flush set vw_block_v4"));
        assert!(has(&same, "flush chain vw_input"));
        let refused = encode_changes(&rs, &rs, &|_| false, 1).unwrap();
        assert!(has(&refused, "add element vw_blockhost_v4"));
    }

    #[test]
    fn anonymous_intervals_merge_and_start_with_an_end_at_zero() {
        let e = anon_intervals(vec![(5060, 5062), (5063, 5063), (60000, 65535)], 2);
        let keys: Vec<(Vec<u8>, bool)> = e.into_iter().map(|e| (e.key, e.end)).collect();
        assert_eq!(
            keys,
            vec![
                (vec![0, 0], true),
                (5060u16.to_be_bytes().to_vec(), false),
                (5064u16.to_be_bytes().to_vec(), true),
                (60000u16.to_be_bytes().to_vec(), false),
            ]
        );
    }
}
