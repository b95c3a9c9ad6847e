//! Ban-plane: set elements with per-element timeouts over raw nftables
//! netlink (NETLINK_NETFILTER), one transaction per call. About 6 µs per
//! element against ~3 ms for spawning `nft` (see BENCHMARKS.md).
//!
//! Message layout (include/uapi/linux/netfilter/nf_tables.h):
//! `BATCH_BEGIN, NFT_MSG_NEWSETELEM{TABLE, SET, ELEMENTS[ELEM{KEY{VALUE}, TIMEOUT}]}..., BATCH_END`.

use std::io;
use std::net::IpAddr;

use netlink_sys::{Socket, constants::NETLINK_NETFILTER};
// The one netlink writer, shared with the apply's batch.
pub(crate) use voipwall_nft::netlink::tlv::{
    attr, finish, header as push_nlmsghdr, nest_end, nest_start, nfgenmsg as push_nfgenmsg,
};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFTA_DATA_VALUE: u16 = 1;

/// Elements per NEWSETELEM message, and messages per transaction: keeps one
/// sendmsg well under the socket's send buffer.
const ELEMS_PER_MSG: usize = 1000;
const MSGS_PER_BATCH: usize = 3;

/// An element operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the transaction.
    #[error("kernel refused set `{set}` update: {source}")]
    Kernel {
        /// Set name.
        set: String,
        /// The errno the kernel returned.
        source: io::Error,
    },
    /// Fewer acknowledgements than messages came back.
    #[error("kernel acknowledged {got} of {want} messages for set `{set}`")]
    MissingAck {
        /// Set name.
        set: String,
        /// Received.
        got: usize,
        /// Expected.
        want: usize,
    },
}

/// One element: an address and an optional timeout in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elem {
    /// Key.
    pub addr: IpAddr,
    /// Per-element timeout; `None` uses the set's default (none: permanent).
    pub timeout_ms: Option<u64>,
}

/// A netlink socket bound to nftables, for one table in the current netns.
pub struct SetElements {
    sock: Socket,
    table: String,
    seq: u32,
    buf: Vec<u8>,
}

impl SetElements {
    /// Opens a socket in the caller's network namespace.
    pub fn open(table: &str) -> Result<Self, NetlinkError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        // Errors carry only the header of the refused message, not all of it.
        sock.set_cap_ack(true)?;
        sock.set_ext_ack(true)?;
        Ok(Self {
            sock,
            table: table.to_string(),
            seq: 1,
            buf: Vec::with_capacity(160 * 1024),
        })
    }

    /// Adds (or refreshes: re-adding replaces the timeout) elements, in as
    /// few transactions as fit the socket buffer.
    pub fn add(&mut self, set: &str, elems: &[Elem]) -> Result<(), NetlinkError> {
        self.op(set, elems, NFT_MSG_NEWSETELEM, NLM_F_CREATE)
    }

    /// Deletes elements. Deleting an absent element is an error (ENOENT).
    pub fn delete(&mut self, set: &str, addrs: &[IpAddr]) -> Result<(), NetlinkError> {
        let elems: Vec<Elem> = addrs
            .iter()
            .map(|&addr| Elem {
                addr,
                timeout_ms: None,
            })
            .collect();
        self.op(set, &elems, NFT_MSG_DELSETELEM, 0)
    }

    /// Adds networks to an interval set (start and end elements, the
    /// timeout on the start), in one transaction per batch.
    pub fn add_intervals(
        &mut self,
        set: &str,
        nets: &[(ipnet::IpNet, Option<u64>)],
    ) -> Result<(), NetlinkError> {
        // A network's two elements always travel in the same transaction.
        for chunk in nets.chunks(ELEMS_PER_MSG * MSGS_PER_BATCH / 2) {
            let raw: Vec<_> = chunk
                .iter()
                .flat_map(|(n, t)| interval_elems(n, *t))
                .collect();
            self.raw_op(set, &raw, NFT_MSG_NEWSETELEM, NLM_F_CREATE)?;
        }
        Ok(())
    }

    /// Deletes networks from an interval set. Deleting one the set does not
    /// hold exactly is an error (ENOENT).
    pub fn delete_intervals(
        &mut self,
        set: &str,
        nets: &[ipnet::IpNet],
    ) -> Result<(), NetlinkError> {
        for chunk in nets.chunks(ELEMS_PER_MSG * MSGS_PER_BATCH / 2) {
            let raw: Vec<_> = chunk.iter().flat_map(|n| interval_elems(n, None)).collect();
            self.raw_op(set, &raw, NFT_MSG_DELSETELEM, 0)?;
        }
        Ok(())
    }

    fn raw_op(
        &mut self,
        set: &str,
        elems: &[(IpAddr, Option<u64>, bool)],
        msg: u16,
        extra_flags: u16,
    ) -> Result<(), NetlinkError> {
        // One transaction: a start element without its end is refused.
        // Callers keep it under the socket's send buffer (3,000 elements).
        self.buf.clear();
        let first_seq = self.seq;
        let seq = self.next_seq();
        push_batch_marker(&mut self.buf, NFNL_MSG_BATCH_BEGIN, seq);
        let mut msgs = 0;
        for chunk in elems.chunks(ELEMS_PER_MSG) {
            let seq = self.next_seq();
            push_raw_setelem_msg(
                &mut self.buf,
                msg,
                extra_flags,
                seq,
                &self.table,
                set,
                chunk,
            );
            msgs += 1;
        }
        let seq = self.next_seq();
        push_batch_marker(&mut self.buf, NFNL_MSG_BATCH_END, seq);
        self.sock.send(&self.buf, 0)?;
        self.read_acks(set, msgs, first_seq)
    }

    fn op(
        &mut self,
        set: &str,
        elems: &[Elem],
        msg: u16,
        extra_flags: u16,
    ) -> Result<(), NetlinkError> {
        for batch in elems.chunks(ELEMS_PER_MSG * MSGS_PER_BATCH) {
            let raw: Vec<_> = batch
                .iter()
                .map(|e| (e.addr, e.timeout_ms, false))
                .collect();
            self.raw_op(set, &raw, msg, extra_flags)?;
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// The kernel processes the batch inside sendmsg, so every ack is queued
    /// by the time send returns; read them without blocking.
    fn read_acks(&mut self, set: &str, want: usize, first_seq: u32) -> Result<(), NetlinkError> {
        let mut got = 0;
        let mut err: Option<io::Error> = None;
        let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
        self.sock.set_non_blocking(true)?;
        let result = loop {
            if got >= want {
                break Ok(());
            }
            rbuf.clear();
            match self.sock.recv(&mut rbuf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(NetlinkError::Io(e)),
            }
            let mut off = 0;
            while off + 16 <= rbuf.len() {
                let len =
                    u32::from_ne_bytes(rbuf[off..off + 4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes(rbuf[off + 4..off + 6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(rbuf[off + 8..off + 12].try_into().expect("4 bytes"));
                if len < 16 || off + len > rbuf.len() {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 && seq.wrapping_sub(first_seq) < 1 << 20 {
                    let code =
                        i32::from_ne_bytes(rbuf[off + 16..off + 20].try_into().expect("4 bytes"));
                    got += 1;
                    if code != 0 && err.is_none() {
                        err = Some(io::Error::from_raw_os_error(-code));
                    }
                }
                off += (len + 3) & !3;
            }
        };
        self.sock.set_non_blocking(false)?;
        result?;
        if let Some(source) = err {
            return Err(NetlinkError::Kernel {
                set: set.to_string(),
                source,
            });
        }
        if got < want {
            return Err(NetlinkError::MissingAck {
                set: set.to_string(),
                got,
                want,
            });
        }
        Ok(())
    }
}

/// Sends one request on a new socket of `protocol` and returns every reply
/// message, (type, body), until the end of a dump or the acknowledgement. A
/// kernel error comes back as an `io::Error` (ENOENT: no such object).
pub(crate) fn transact(protocol: isize, request: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let mut sock = Socket::new(protocol)?;
    sock.bind_auto()?;
    sock.send(request, 0)?;
    let mut out = Vec::new();
    let mut rbuf: Vec<u8> = Vec::with_capacity(256 * 1024);
    loop {
        rbuf.clear();
        sock.recv(&mut rbuf, 0)?;
        let mut off = 0;
        while off + 16 <= rbuf.len() {
            let len = u32::from_ne_bytes(rbuf[off..off + 4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes(rbuf[off + 4..off + 6].try_into().expect("2 bytes"));
            if len < 16 || off + len > rbuf.len() {
                return Err(io::Error::other("malformed netlink reply"));
            }
            let body = &rbuf[off + 16..off + len];
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = body
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                    return if code == 0 {
                        Ok(out)
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                _ => out.push((ty, body.to_vec())),
            }
            off += (len + 3) & !3;
        }
    }
}

/// Attributes of a netlink payload, (type without the nested/byte-order
/// bits, payload); a length that runs past the buffer ends the walk.
pub(crate) fn attr_list(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn push_batch_marker(buf: &mut Vec<u8>, ty: u16, seq: u32) {
    let start = push_nlmsghdr(buf, ty, NLM_F_REQUEST, seq);
    push_nfgenmsg(buf, 0, NFNL_SUBSYS_NFTABLES);
    finish(buf, start);
}

pub(crate) fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

#[cfg(test)]
fn push_setelem_msg(
    buf: &mut Vec<u8>,
    msg: u16,
    extra_flags: u16,
    seq: u32,
    table: &str,
    set: &str,
    elems: &[Elem],
) {
    let raw: Vec<(IpAddr, Option<u64>, bool)> = elems
        .iter()
        .map(|e| (e.addr, e.timeout_ms, false))
        .collect();
    push_raw_setelem_msg(buf, msg, extra_flags, seq, table, set, &raw);
}

/// One NEWSETELEM/DELSETELEM message; each element is (key, timeout,
/// interval end).
fn push_raw_setelem_msg(
    buf: &mut Vec<u8>,
    msg: u16,
    extra_flags: u16,
    seq: u32,
    table: &str,
    set: &str,
    elems: &[(IpAddr, Option<u64>, bool)],
) {
    let start = push_nlmsghdr(
        buf,
        (NFNL_SUBSYS_NFTABLES << 8) | msg,
        NLM_F_REQUEST | NLM_F_ACK | extra_flags,
        seq,
    );
    push_nfgenmsg(buf, NFPROTO_INET, 0);
    attr(buf, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attr(buf, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    let list = nest_start(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
    for &(addr, timeout, end) in elems {
        let el = nest_start(buf, NFTA_LIST_ELEM);
        let key = nest_start(buf, NFTA_SET_ELEM_KEY);
        match addr {
            IpAddr::V4(a) => attr(buf, NFTA_DATA_VALUE, &a.octets()),
            IpAddr::V6(a) => attr(buf, NFTA_DATA_VALUE, &a.octets()),
        }
        nest_end(buf, key);
        if end {
            attr(
                buf,
                NFTA_SET_ELEM_FLAGS,
                &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
            );
        }
        if let Some(ms) = timeout {
            attr(buf, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
        }
        nest_end(buf, el);
    }
    nest_end(buf, list);
    finish(buf, start);
}

/// The kernel's form of an interval: a start element (with the timeout)
/// and an end element one past the last address, unless the range runs to
/// the end of the address space.
fn interval_elems(net: &ipnet::IpNet, timeout: Option<u64>) -> Vec<(IpAddr, Option<u64>, bool)> {
    let mut v = vec![(net.network(), timeout, false)];
    let past = match net.broadcast() {
        IpAddr::V4(b) => u32::from(b)
            .checked_add(1)
            .map(|x| IpAddr::from(std::net::Ipv4Addr::from(x))),
        IpAddr::V6(b) => u128::from(b)
            .checked_add(1)
            .map(|x| IpAddr::from(std::net::Ipv6Addr::from(x))),
    };
    if let Some(p) = past {
        v.push((p, None, true));
    }
    v
}

/// The netlink message at `off` of a receive buffer: (type, body, offset
/// of the next one); `None` past the last whole message.
pub(crate) fn nlmsg(buf: &[u8], off: usize) -> Option<(u16, &[u8], usize)> {
    let h = buf.get(off..off + 16)?;
    let len = u32::from_ne_bytes(h[..4].try_into().ok()?) as usize;
    let ty = u16::from_ne_bytes(h[4..6].try_into().ok()?);
    if len < 16 || off + len > buf.len() {
        return None;
    }
    Some((ty, &buf[off + 16..off + len], off + ((len + 3) & !3)))
}

/// Sends a netfilter configuration request (message type `ty`, resource
/// `res_id`: the NFLOG group or NFQUEUE number, `attrs`) with NLM_F_ACK
/// and waits for its acknowledgement (the error message answering `seq`;
/// other messages read meanwhile are skipped).
pub(crate) fn request_ack(
    sock: &Socket,
    (ty, res_id): (u16, u16),
    seq: u32,
    attrs: &[(u16, Vec<u8>)],
) -> io::Result<()> {
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    let mut msg = Vec::with_capacity(128);
    let start = push_nlmsghdr(&mut msg, ty, NLM_F_REQUEST | NLM_F_ACK, seq);
    push_nfgenmsg(&mut msg, 0, res_id);
    for (t, v) in attrs {
        attr(&mut msg, *t, v);
    }
    finish(&mut msg, start);
    sock.send(&msg, 0)?;
    let mut rbuf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        rbuf.clear();
        sock.recv(&mut rbuf, 0)?;
        let mut off = 0;
        while let Some((ty, body, next)) = nlmsg(&rbuf, off) {
            if ty == NLMSG_ERROR && body.len() >= 12 {
                let code = i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                let eseq =
                    u32::from_ne_bytes(body[12..16.min(body.len())].try_into().unwrap_or([0; 4]));
                if eseq == seq || body.len() < 16 {
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
            }
            off = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let mut buf = Vec::new();
        let e = Elem {
            addr: "198.51.100.7".parse().unwrap(),
            timeout_ms: Some(3_600_000),
        };
        push_setelem_msg(
            &mut buf,
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            7,
            "voipwall",
            "vw_ban_v4",
            &[e],
        );
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len());
        assert_eq!(len % 4, 0);
        assert_eq!(u16::from_ne_bytes(buf[4..6].try_into().unwrap()), 0x0a0c);
        // nfgenmsg: inet family.
        assert_eq!(buf[16], NFPROTO_INET);
        // The address and the big-endian timeout appear in the payload.
        let hay = &buf[20..];
        assert!(hay.windows(4).any(|w| w == [198, 51, 100, 7]));
        assert!(hay.windows(8).any(|w| w == 3_600_000u64.to_be_bytes()));
    }
}
