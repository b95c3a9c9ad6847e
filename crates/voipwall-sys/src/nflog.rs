//! NFLOG: the packet copies the ruleset sends to a log group (inbound SIP
//! requests, outbound SIP responses), read from a netfilter netlink socket.
//!
//! The group is bound with copy mode "packet" and a queue threshold, so the
//! kernel batches many packets into one message train (about 9× less CPU
//! than one recv per packet, STACK.md). Messages are walked in place: the
//! payload handed to the callback borrows the receive buffer. A full
//! receive buffer (ENOBUFS) means packets were lost; it is counted and
//! reported, never silent.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_sys::{Socket, constants::NETLINK_NETFILTER};

use crate::netlink::{attr, finish, nlmsg, push_nfgenmsg, push_nlmsghdr};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_CFG_CMD_UNBIND: u8 = 2;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_TIMESTAMP: u16 = 3;
const NFULA_PREFIX: u16 = 10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;

/// Settings of a bound group.
#[derive(Debug, Clone, Copy)]
pub struct NflogConfig {
    /// Log group (the ruleset's `log group N`).
    pub group: u16,
    /// Bytes of each packet copied.
    pub copy_range: u32,
    /// Packets the kernel queues before sending a batch.
    pub qthresh: u32,
    /// Longest a queued packet waits, in 1/100 s.
    pub flush_timeout_cs: u32,
    /// Kernel-side batch buffer, bytes.
    pub nlbufsiz: u32,
    /// Socket receive buffer, bytes (SO_RCVBUFFORCE).
    pub rcvbuf: usize,
}

impl NflogConfig {
    /// Latency first: every packet is sent to userspace at once (a queue
    /// threshold above 1 waits for the flush timer, whose shortest period is
    /// 10 ms, or a kernel tick with 0: 4 ms at HZ=250). A 64 MiB receive
    /// buffer absorbs bursts; throughput is measured in BENCHMARKS.md.
    pub fn new(group: u16) -> Self {
        Self {
            group,
            copy_range: 65_535,
            qthresh: 1,
            flush_timeout_cs: 0,
            nlbufsiz: 128 * 1024,
            rcvbuf: 64 << 20,
        }
    }
}

/// One packet copy.
#[derive(Debug, Clone, Copy)]
pub struct NflogPacket<'a> {
    /// The packet from its IP header, cut at the copy range.
    pub payload: &'a [u8],
    /// Kernel timestamp (µs since the epoch), when the packet carried one.
    pub timestamp_us: Option<u64>,
    /// The rule's `log prefix`, when it has one.
    pub prefix: Option<&'a [u8]>,
}

/// Counters of a reader.
#[derive(Debug, Clone, Copy, Default)]
pub struct NflogStats {
    /// Packets handed to the callback.
    pub packets: u64,
    /// Times the kernel reported a full receive buffer (packets lost).
    pub enobufs: u64,
    /// Messages that could not be walked.
    pub malformed: u64,
}

/// A socket bound to one NFLOG group in the current network namespace.
pub struct NflogReader {
    sock: Socket,
    group: u16,
    buf: Vec<u8>,
    seq: u32,
    /// Counters.
    pub stats: NflogStats,
}

impl NflogReader {
    /// Binds the group and configures copying and batching.
    pub fn open(cfg: &NflogConfig) -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        set_rcvbuf_force(&sock, cfg.rcvbuf);
        let mut r = Self {
            sock,
            group: cfg.group,
            buf: Vec::with_capacity(1 << 20),
            seq: 1,
            stats: NflogStats::default(),
        };
        // A stale binding by a previous instance of the daemon (killed) is
        // released by the kernel with the socket; unbinding first also
        // covers a second reader in the same process.
        let _ = r.config(&[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_UNBIND])]);
        r.config(&[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])])?;
        let mut mode = cfg.copy_range.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        let res = r.config(&[
            (NFULA_CFG_MODE, mode),
            (NFULA_CFG_QTHRESH, cfg.qthresh.to_be_bytes().to_vec()),
            (
                NFULA_CFG_TIMEOUT,
                cfg.flush_timeout_cs.to_be_bytes().to_vec(),
            ),
            (NFULA_CFG_NLBUFSIZ, cfg.nlbufsiz.to_be_bytes().to_vec()),
        ]);
        res?;
        // Reads never block: the caller waits in poll.
        r.sock.set_non_blocking(true)?;
        Ok(r)
    }

    fn config(&mut self, attrs: &[(u16, Vec<u8>)]) -> io::Result<()> {
        let seq = self.seq;
        self.seq += 1;
        crate::netlink::request_ack(
            &self.sock,
            ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, self.group),
            seq,
            attrs,
        )
    }

    /// Changes the queue threshold while running: 1 delivers each packet at
    /// once (lowest latency); more lets the kernel batch packets into one
    /// message train under load (far fewer system calls). Sent without an
    /// acknowledgement, because packets queued ahead of it on this socket
    /// must not be read and thrown away while waiting for one.
    pub fn set_qthresh(&mut self, qthresh: u32) -> io::Result<()> {
        let mut m = Vec::with_capacity(64);
        let seq = self.seq;
        self.seq += 1;
        let start = push_nlmsghdr(
            &mut m,
            (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
            NLM_F_REQUEST,
            seq,
        );
        push_nfgenmsg(&mut m, 0, self.group);
        attr(&mut m, NFULA_CFG_QTHRESH, &qthresh.to_be_bytes());
        finish(&mut m, start);
        self.sock.send(&m, 0)?;
        Ok(())
    }

    /// The socket, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads whatever is queued without blocking and hands each packet to
    /// `f`. Returns the number of packets; 0 when nothing was queued.
    pub fn drain(&mut self, f: impl FnMut(NflogPacket<'_>)) -> io::Result<usize> {
        self.drain_at_most(usize::MAX, f)
    }

    /// As [`Self::drain`], reading at most `receives` message trains: the
    /// caller can look at other sockets (the call guard's queue, whose
    /// INVITEs wait) between slices of a flood.
    pub fn drain_at_most(
        &mut self,
        receives: usize,
        mut f: impl FnMut(NflogPacket<'_>),
    ) -> io::Result<usize> {
        let mut total = 0;
        for _ in 0..receives {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => {
                    self.stats.enobufs += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let mut off = 0;
            while let Some((ty, body, next)) = nlmsg(&self.buf, off) {
                off = next;
                if ty == NLMSG_DONE || ty == NLMSG_ERROR {
                    continue;
                }
                if ty != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                    continue;
                }
                // nfgenmsg (4 bytes), then attributes.
                let Some(attrs) = body.get(4..) else {
                    self.stats.malformed += 1;
                    continue;
                };
                let mut payload = None;
                let mut ts = None;
                let mut prefix = None;
                let mut a = 0;
                while a + 4 <= attrs.len() {
                    let len = usize::from(u16::from_ne_bytes([attrs[a], attrs[a + 1]]));
                    let aty = u16::from_ne_bytes([attrs[a + 2], attrs[a + 3]]) & 0x3fff;
                    if len < 4 || a + len > attrs.len() {
                        break;
                    }
                    let v = &attrs[a + 4..a + len];
                    match aty {
                        NFULA_PAYLOAD => payload = Some(v),
                        NFULA_PREFIX => prefix = Some(v),
                        NFULA_TIMESTAMP if v.len() >= 16 => {
                            let sec = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                            let usec = u64::from_be_bytes(v[8..16].try_into().expect("8 bytes"));
                            ts = Some(sec.saturating_mul(1_000_000).saturating_add(usec));
                        }
                        _ => {}
                    }
                    a += (len + 3) & !3;
                }
                match payload {
                    Some(p) => {
                        self.stats.packets += 1;
                        total += 1;
                        f(NflogPacket {
                            payload: p,
                            timestamp_us: ts,
                            prefix,
                        });
                    }
                    None => self.stats.malformed += 1,
                }
            }
        }
        Ok(total)
    }
}

/// Raises the receive buffer past `rmem_max` (needs CAP_NET_ADMIN); falls
/// back to the plain option, whose cap the kernel applies silently.
fn set_rcvbuf_force(fd: impl AsFd, bytes: usize) {
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(&fd, bytes).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(&fd, bytes);
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passes; returns
/// which are readable.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout_ms: u32) -> io::Result<Vec<bool>> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut p: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let timeout = Timespec {
        tv_sec: i64::from(timeout_ms / 1000),
        tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
    };
    match poll(&mut p, Some(&timeout)) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(vec![false; fds.len()]),
        Err(e) => return Err(e.into()),
    }
    Ok(p.iter()
        .map(|x| x.revents().intersects(PollFlags::IN | PollFlags::ERR))
        .collect())
}
