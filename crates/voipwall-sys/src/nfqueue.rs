//! NFQUEUE: the packets the kernel holds for a verdict (the call guard's
//! inline mode: new INVITEs over UDP). Bound with copy mode "packet" and
//! the fail-open flag, so a full queue (or a message the socket could not
//! take) lets packets through instead of dropping them; with no listener at
//! all, the rule's `--queue-bypass` lets them through.
//!
//! Every packet read must get a verdict: [`NfqueueReader::drain`] hands
//! each one to the callback and sends the verdict it returns at once.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_sys::{Socket, constants::NETLINK_NETFILTER};

use crate::netlink::{attr, finish, nlmsg, push_nfgenmsg, push_nlmsghdr};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_TIMESTAMP: u16 = 4;
const NFQA_PAYLOAD: u16 = 10;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NLM_F_REQUEST: u16 = 0x1;

/// One packet held for a verdict.
#[derive(Debug, Clone, Copy)]
pub struct QueuedPacket<'a> {
    /// The packet from its IP header.
    pub payload: &'a [u8],
    /// Kernel timestamp (µs since the epoch), when the packet carried one.
    pub timestamp_us: Option<u64>,
}

/// What to do with a held packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it go on through the hooks.
    Accept,
    /// Drop it.
    Drop,
}

/// Counters of a reader.
#[derive(Debug, Clone, Copy, Default)]
pub struct NfqueueStats {
    /// Packets read (each got a verdict).
    pub packets: u64,
    /// Of them, dropped.
    pub dropped: u64,
    /// Verdicts the socket refused to take (the kernel holds the packet
    /// until the queue is unbound; with fail-open it never holds many).
    pub verdict_errors: u64,
    /// Messages that could not be walked.
    pub malformed: u64,
    /// Times the kernel reported a full receive buffer.
    pub enobufs: u64,
}

/// A socket bound to one queue in the current network namespace.
pub struct NfqueueReader {
    sock: Socket,
    queue: u16,
    buf: Vec<u8>,
    out: Vec<u8>,
    pending: Vec<(u32, Verdict)>,
    seq: u32,
    /// Counters.
    pub stats: NfqueueStats,
}

impl NfqueueReader {
    /// Binds the queue (copy mode packet, fail-open, `maxlen` packets held
    /// at most).
    pub fn open(queue: u16, maxlen: u32) -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        {
            use rustix::net::sockopt;
            if sockopt::set_socket_recv_buffer_size_force(&sock, 8 << 20).is_err() {
                let _ = sockopt::set_socket_recv_buffer_size(&sock, 8 << 20);
            }
        }
        let mut r = Self {
            sock,
            queue,
            buf: Vec::with_capacity(256 * 1024),
            out: Vec::with_capacity(64),
            pending: Vec::new(),
            seq: 1,
            stats: NfqueueStats::default(),
        };
        // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
        r.config(&[(NFQA_CFG_CMD, vec![NFQNL_CFG_CMD_BIND, 0, 0, 0])])?;
        // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; } (packed)
        let mut params = 0xffff_u32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_PACKET);
        r.config(&[
            (NFQA_CFG_PARAMS, params),
            (NFQA_CFG_QUEUE_MAXLEN, maxlen.to_be_bytes().to_vec()),
            (NFQA_CFG_FLAGS, NFQA_CFG_F_FAIL_OPEN.to_be_bytes().to_vec()),
            (NFQA_CFG_MASK, NFQA_CFG_F_FAIL_OPEN.to_be_bytes().to_vec()),
        ])?;
        r.sock.set_non_blocking(true)?;
        Ok(r)
    }

    /// The queue number.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    fn config(&mut self, attrs: &[(u16, Vec<u8>)]) -> io::Result<()> {
        let seq = self.seq;
        self.seq += 1;
        crate::netlink::request_ack(
            &self.sock,
            ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG, self.queue),
            seq,
            attrs,
        )
    }

    /// The socket, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads whatever is queued without blocking, asks `f` for each
    /// packet's verdict and sends it. Returns the number of packets.
    pub fn drain(&mut self, mut f: impl FnMut(QueuedPacket<'_>) -> Verdict) -> io::Result<usize> {
        let mut total = 0;
        loop {
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
            let mut verdicts = std::mem::take(&mut self.pending);
            self.stats.malformed += walk_messages(&self.buf, |id, packet| {
                // A packet without its bytes cannot be judged: let it go.
                let verdict = packet.map_or(Verdict::Accept, &mut f);
                verdicts.push((id, verdict));
            });
            for &(id, verdict) in &verdicts {
                self.stats.packets += 1;
                total += 1;
                if verdict == Verdict::Drop {
                    self.stats.dropped += 1;
                }
                if self.verdict(id, verdict).is_err() {
                    self.stats.verdict_errors += 1;
                }
            }
            verdicts.clear();
            self.pending = verdicts;
        }
        Ok(total)
    }

    fn verdict(&mut self, id: u32, v: Verdict) -> io::Result<()> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.out.clear();
        let start = push_nlmsghdr(
            &mut self.out,
            (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT,
            NLM_F_REQUEST,
            seq,
        );
        push_nfgenmsg(&mut self.out, 0, self.queue);
        let code = match v {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        };
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&code.to_be_bytes());
        hdr[4..].copy_from_slice(&id.to_be_bytes());
        attr(&mut self.out, NFQA_VERDICT_HDR, &hdr);
        finish(&mut self.out, start);
        self.sock.send(&self.out, 0).map(|_| ())
    }
}

/// Walks a buffer of netlink messages as the queue socket receives them
/// and hands each held packet's id and bytes to `f` (`None` when the
/// message carries no payload). Other messages are skipped. Returns how
/// many packet messages could not be read (no id): the kernel holds those
/// packets until the queue is unbound; fail-open bounds how many.
pub fn walk_messages<'a>(buf: &'a [u8], mut f: impl FnMut(u32, Option<QueuedPacket<'a>>)) -> u64 {
    let mut malformed = 0;
    let mut off = 0;
    while let Some((ty, body, next)) = nlmsg(buf, off) {
        off = next;
        if ty != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            continue;
        }
        let Some(attrs) = body.get(4..) else {
            malformed += 1;
            continue;
        };
        let (mut id, mut payload, mut ts) = (None, None, None);
        let mut a = 0;
        while a + 4 <= attrs.len() {
            let len = usize::from(u16::from_ne_bytes([attrs[a], attrs[a + 1]]));
            let aty = u16::from_ne_bytes([attrs[a + 2], attrs[a + 3]]) & 0x3fff;
            if len < 4 || a + len > attrs.len() {
                break;
            }
            let v = &attrs[a + 4..a + len];
            match aty {
                NFQA_PACKET_HDR if v.len() >= 4 => {
                    id = Some(u32::from_be_bytes(v[..4].try_into().expect("4 bytes")));
                }
                NFQA_PAYLOAD => payload = Some(v),
                NFQA_TIMESTAMP if v.len() >= 16 => {
                    let sec = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                    let usec = u64::from_be_bytes(v[8..16].try_into().expect("8 bytes"));
                    ts = Some(sec.saturating_mul(1_000_000).saturating_add(usec));
                }
                _ => {}
            }
            a += (len + 3) & !3;
        }
        match id {
            Some(id) => f(
                id,
                payload.map(|p| QueuedPacket {
                    payload: p,
                    timestamp_us: ts,
                }),
            ),
            None => malformed += 1,
        }
    }
    malformed
}

/// Whether the kernel's queue rules hold `packet` (from its IP header):
/// UDP, and for IPv4 a payload starting with `INVITE` after the header its
/// IHL gives, or `INVITE` in any case at offset 28 (a 20-byte header); for
/// IPv6, `INVITE` in any case at offset 48 (UDP right after the fixed
/// header). Methods are case-sensitive in SIP, but a PBX that reads
/// `invite` as INVITE must not let it past the queue. The
/// daemon uses it to skip the NFLOG copy of a packet it also gets from the
/// queue; it says what the rules [`queue_rules`] writes match.
pub fn held_by_queue(packet: &[u8]) -> bool {
    let any_case_at = |at: usize| {
        packet
            .get(at..at + 6)
            .is_some_and(|m| m.eq_ignore_ascii_case(b"INVITE"))
    };
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if packet.get(9) != Some(&17) || ihl < 20 {
                return false;
            }
            packet
                .get(ihl + 8..)
                .is_some_and(|p| p.starts_with(b"INVITE"))
                || any_case_at(28)
        }
        Some(6) => packet.get(6) == Some(&17) && any_case_at(48),
        _ => false,
    }
}

/// The comment that marks voipwall's queue rules.
pub const QUEUE_COMMENT: &str = "voipwall call guard";

/// The `iptables-nft` / `ip6tables-nft` arguments that add the queue rules
/// for `ports` (UDP) and queue `queue`, in the `security` table's INPUT
/// chain (priority 150: after voipwall's input chain accepted the packet):
/// what [`held_by_queue`] says they hold.
pub fn queue_rules(ports: &[(u16, u16)], queue: u16) -> Vec<(&'static str, Vec<String>)> {
    let ports: Vec<String> = ports
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect();
    // multiport takes 15 ports, a range counting two: 7 entries a rule.
    let mut out = Vec::new();
    for chunk in ports.chunks(7) {
        out.push(("iptables-nft", rule(chunk, queue, Leading::ExactAfterIhl)));
        out.push(("iptables-nft", rule(chunk, queue, Leading::AnyCaseAt(28))));
        out.push(("ip6tables-nft", rule(chunk, queue, Leading::AnyCaseAt(48))));
    }
    out
}

/// What a queue rule matches in the packet (from its IP header).
#[derive(Clone, Copy)]
enum Leading {
    /// `INVITE` after the IPv4 header's own length (u32).
    ExactAfterIhl,
    /// `INVITE` in any case at a fixed offset (string --icase).
    AnyCaseAt(u16),
}

fn rule(ports: &[String], queue: u16, leading: Leading) -> Vec<String> {
    // Loopback is the host talking to itself (a proxy and a PBX on one
    // box): voipwall's input chain accepts it before any copy, and a call
    // counted on both legs would halve every limit.
    let mut a: Vec<String> = [
        "-t", "security", "-I", "INPUT", "1", "!", "-i", "lo", "-p", "udp",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    a.extend(["-m".into(), "multiport".into(), "--dports".into()]);
    a.push(ports.join(","));
    match leading {
        Leading::ExactAfterIhl => a.extend(
            [
                "-m",
                "u32",
                "--u32",
                "0>>22&0x3C@8=0x494E5649&&0>>22&0x3C@12>>16=0x5445",
            ]
            .map(String::from),
        ),
        Leading::AnyCaseAt(from) => {
            a.extend(["-m", "string", "--algo", "bm", "--icase", "--from"].map(String::from));
            a.push(from.to_string());
            a.push("--to".into());
            a.push((from + 6).to_string());
            a.extend(["--string", "INVITE"].map(String::from));
        }
    }
    a.extend(["-m", "comment", "--comment", QUEUE_COMMENT].map(String::from));
    a.extend(["-j", "NFQUEUE", "--queue-num"].map(String::from));
    a.push(queue.to_string());
    a.push("--queue-bypass".into());
    a
}

/// Puts the queue rules in place (after removing any left by an earlier
/// run). An IPv6 failure is returned as a warning with the IPv4 rule kept.
pub fn install_queue_rules(ports: &[(u16, u16)], queue: u16) -> Result<Option<String>, String> {
    remove_queue_rules()?;
    let mut warning = None;
    for (bin, args) in queue_rules(ports, queue) {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .map_err(|e| {
                format!("{bin}: {e} (inline mode needs iptables-nft: apt-get install iptables)")
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if bin.starts_with("ip6") {
                warning = Some(format!("{bin}: {err}: IPv6 INVITEs are checked passively"));
            } else {
                return Err(format!("{bin} {}: {err}", args.join(" ")));
            }
        }
    }
    Ok(warning)
}

/// Removes voipwall's queue rules (those with [`QUEUE_COMMENT`]); returns
/// how many were removed. A host without iptables-nft has none.
pub fn remove_queue_rules() -> Result<usize, String> {
    let mut removed = 0;
    for bin in ["iptables-nft", "ip6tables-nft"] {
        let Ok(out) = std::process::Command::new(bin)
            .args(["-t", "security", "-L", "INPUT", "-n", "--line-numbers"])
            .output()
        else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let marker = format!("/* {QUEUE_COMMENT} */");
        let mut numbers: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&marker))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        for n in numbers {
            let out = std::process::Command::new(bin)
                .args(["-t", "security", "-D", "INPUT", &n.to_string()])
                .output()
                .map_err(|e| format!("{bin}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{bin} -t security -D INPUT {n}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_queue_holds() {
        let mut v4 = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        v4.resize(28, 0);
        v4.extend_from_slice(b"INVITE sip:1@x SIP/2.0\r\n");
        assert!(held_by_queue(&v4));
        let mut opts = v4.clone();
        opts[0] = 0x46;
        opts.splice(20..20, [1, 1, 1, 1]);
        assert!(held_by_queue(&opts));
        let mut lower = v4.clone();
        lower[28..34].copy_from_slice(b"iNvItE");
        assert!(held_by_queue(&lower));
        let mut tcp = v4.clone();
        tcp[9] = 6;
        assert!(!held_by_queue(&tcp));
        let mut options = v4[..28].to_vec();
        options.extend_from_slice(b"OPTIONS sip:x SIP/2.0\r\n");
        assert!(!held_by_queue(&options));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        v6.resize(48, 0);
        v6.extend_from_slice(b"INVITE sip:1@x SIP/2.0\r\n");
        assert!(held_by_queue(&v6));
        v6[6] = 0; // hop-by-hop options first: not queued
        assert!(!held_by_queue(&v6));
        assert!(!held_by_queue(&[]));
        assert!(!held_by_queue(&[0x45]));
    }

    /// A packet message as the kernel writes it: nlmsghdr, nfgenmsg,
    /// attributes.
    fn message(id: Option<u32>, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let start = push_nlmsghdr(&mut m, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET, 0, 0);
        push_nfgenmsg(&mut m, 0, 5060);
        if let Some(id) = id {
            let mut hdr = id.to_be_bytes().to_vec();
            hdr.extend_from_slice(&[0x08, 0x00, 1]);
            attr(&mut m, NFQA_PACKET_HDR, &hdr);
        }
        attr(&mut m, NFQA_PAYLOAD, payload);
        finish(&mut m, start);
        m
    }

    #[test]
    fn messages_are_walked_whole_and_cut_ones_refused() {
        let mut buf = message(Some(7), b"INVITE x");
        buf.extend(message(None, b"no id"));
        buf.extend(message(Some(9), b"OPTIONS"));
        let mut seen = Vec::new();
        let bad = walk_messages(&buf, |id, p| seen.push((id, p.map(|p| p.payload.to_vec()))));
        assert_eq!(bad, 1);
        assert_eq!(
            seen,
            vec![
                (7, Some(b"INVITE x".to_vec())),
                (9, Some(b"OPTIONS".to_vec()))
            ]
        );
        // Any cut of the buffer: whole messages before the cut, no panic.
        for cut in 0..buf.len() {
            let mut n = 0;
            let _ = walk_messages(&buf[..cut], |_, _| n += 1);
            assert!(n <= 2);
        }
        // Any byte changed: no panic.
        for i in 0..buf.len() {
            for b in [0u8, 0x7f, 0xff] {
                let mut m = buf.clone();
                m[i] = b;
                let _ = walk_messages(&m, |_, p| {
                    if let Some(p) = p {
                        let _ = held_by_queue(p.payload);
                    }
                });
            }
        }
    }
}
