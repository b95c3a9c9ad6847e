//! SIP over TCP from packet copies: per-flow reassembly of the byte stream
//! and message framing (Content-Length, RFC 3261 section 18.3).
//!
//! Each direction of a connection is its own flow. Segments may arrive
//! retransmitted, overlapping, out of order or split anywhere (inside a
//! header line, inside the body); a segment may carry several messages.
//! What a flow holds is bounded ([`TcpLimits::flow_bytes`]), the table is
//! an LRU ([`TcpLimits::max_flows`]) and every flow shares one byte budget
//! ([`TcpLimits::total_bytes`]): the least recently used flows go first,
//! counted. A SYN is remembered apart, in a small LRU of its own (key and
//! initial sequence number), so that the stream's first byte is known even
//! when the first data segments arrive out of order; a SYN flood only
//! cycles that table, and with the flow table full a new flow (even with
//! its SYN) only replaces one that never carried a whole message. Without a
//! SYN (its memo evicted, or the daemon started mid-connection) a flow
//! starts at its first data segment and finds the next start line. Pure:
//! the caller passes the time (milliseconds, any epoch) and a hash seed.

use std::hash::Hash;
use std::net::IpAddr;

use foldhash::fast::FixedState;
use hashlink::LruCache;

use crate::ws;
use crate::{MAX_HEAD, Message, SipError};

/// How many of the least recently used flows a full table looks through
/// for one to give up.
const EVICT_SCAN: usize = 64;

/// How a flow's bytes carry SIP.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// SIP text, framed by Content-Length.
    #[default]
    Sip,
    /// SIP over WebSocket, before the HTTP upgrade's blank line.
    WsHandshake,
    /// SIP over WebSocket: frames.
    WsFrames,
}

/// TCP FIN flag.
pub const FIN: u8 = 0x01;
/// TCP SYN flag.
pub const SYN: u8 = 0x02;
/// TCP RST flag.
pub const RST: u8 = 0x04;

/// One direction of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Sender's address.
    pub src: IpAddr,
    /// Sender's port.
    pub sport: u16,
    /// Receiver's address.
    pub dst: IpAddr,
    /// Receiver's port.
    pub dport: u16,
}

/// Bounds of the reassembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Flows tracked at once (least recently used evicted beyond).
    pub max_flows: usize,
    /// Bytes one flow may hold: its unframed stream plus out-of-order
    /// segments. A message longer than this is delivered as far as it fits
    /// (the head always does: [`MAX_HEAD`] is smaller) and the rest skipped.
    pub flow_bytes: usize,
    /// Bytes all flows may hold together.
    pub total_bytes: usize,
    /// Out-of-order segments one flow keeps (each also counts 64 bytes
    /// against `flow_bytes`).
    pub max_out_of_order: usize,
    /// A flow silent this long (ms) is forgotten.
    pub idle_ms: u64,
    /// SYNs remembered (connections opened but without data yet).
    pub max_syns: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_flows: 16_384,
            flow_bytes: MAX_HEAD + 32 * 1024,
            total_bytes: 64 * 1024 * 1024,
            max_out_of_order: 1024,
            idle_ms: 120_000,
            max_syns: 65_536,
        }
    }
}

/// What the reassembler has done, for `status` and the benches.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct TcpStats {
    /// Flows tracked now.
    pub flows: usize,
    /// Bytes held now (streams and out-of-order segments).
    pub bytes: usize,
    /// SYNs remembered now (connections without data yet).
    pub syns: usize,
    /// Flows created (first segment with payload).
    pub opened: u64,
    /// Flows created without their SYN (started at the first data seen).
    pub without_syn: u64,
    /// Flows closed by FIN or RST.
    pub closed: u64,
    /// Flows forgotten after `idle_ms`.
    pub idle: u64,
    /// Flows evicted for the flow limit or the byte budget.
    pub evicted: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Messages longer than a flow may hold (delivered cut, rest skipped).
    pub oversize: u64,
    /// Holes given up: out-of-order data beyond what a flow keeps; the
    /// stream resumes after the hole, out of step (reported as evasion).
    pub dropped_segments: u64,
    /// Retransmitted or overlapping bytes that differ from what the flow
    /// already holds (a way to show the PBX other bytes than detection;
    /// reported as evasion).
    pub conflicts: u64,
    /// Gaps skipped quietly after the capture lost copies.
    pub loss_resyncs: u64,
    /// Flows not created because the table was full and the segment came
    /// without a remembered SYN (so spoofed mid-stream segments cannot
    /// push out flows that are in step).
    pub refused: u64,
    /// Bytes skipped because they did not start a SIP message (a stream
    /// picked up in the middle, or not SIP).
    pub skipped_bytes: u64,
    /// Message parses attempted (a few per message, however it is cut).
    pub parses: u64,
}

/// A piece of a stream handed to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// One SIP message (head and as much of the body as was kept).
    Message(&'a [u8]),
    /// Bytes that do not start a SIP message, on a flow seen from its SYN
    /// or that already carried a message (so the stream is known to be in
    /// step): the peer sends something that is not SIP. Once per run.
    Garbage,
}

#[derive(Debug, Default)]
struct Flow {
    /// Sequence number of the next byte expected.
    next: u32,
    /// In-order bytes not yet framed.
    buf: Vec<u8>,
    /// Segments beyond `next`: (sequence number, bytes), unsorted.
    ooo: Vec<(u32, Vec<u8>)>,
    ooo_bytes: usize,
    /// Body bytes still to discard from an oversize message.
    skip: usize,
    /// Started at its SYN, or a message was framed: the stream is in step
    /// with message boundaries.
    synced: bool,
    /// Garbage already reported since the last message.
    garbage_told: bool,
    /// The message at the front: bytes of it already searched for the
    /// blank line that ends its head, whether its first line was judged,
    /// and its whole length once its head is read (0: not yet). Each new
    /// segment is scanned once, so a message sent a byte at a time costs
    /// a few parses, not one per byte.
    scanned: usize,
    first_judged: bool,
    need: usize,
    /// SIP text or WebSocket.
    framing: Framing,
    /// Where the stream ends (a FIN seen, maybe ahead of holes).
    fin_at: Option<u32>,
    /// The copy-loss epoch this flow has caught up with.
    epoch: u32,
    /// How far the WebSocket upgrade was searched for its blank line.
    ws_scanned: usize,
    /// A whole SIP message was framed on it: a real connection (a spoofer
    /// cannot complete the handshake that carries one). A full table never
    /// gives up a proven flow for a new one.
    proven: bool,
    /// A WebSocket message being assembled from its frames, unmasked.
    msg: Vec<u8>,
    last_ms: u64,
}

impl Flow {
    /// The message at the front changed: start judging it afresh.
    fn next_message(&mut self) {
        self.scanned = 0;
        self.first_judged = false;
        self.need = 0;
    }
}

/// Whether `m[from..]`, looked at with a 2-byte overlap, holds the blank
/// line that ends a head (`\n\n` or `\n\r\n`).
fn blank_line_after(m: &[u8], from: usize) -> bool {
    let w = &m[from.saturating_sub(2).min(m.len())..];
    w.windows(2).enumerate().any(|(i, p)| {
        p[0] == b'\n' && (p[1] == b'\n' || (p[1] == b'\r' && w.get(i + 2) == Some(&b'\n')))
    })
}

impl Flow {
    fn held(&self) -> usize {
        self.buf.len() + self.ooo_bytes + self.msg.len()
    }

    /// Gives up the stream before `at`: what is buffered goes, the flow
    /// resumes at `at` out of step (the next start line re-synchronises).
    fn resume_at(&mut self, at: u32, stats: &mut TcpStats) {
        stats.skipped_bytes += self.buf.len() as u64;
        self.buf = Vec::new();
        self.msg = Vec::new();
        self.next = at;
        self.skip = 0;
        self.synced = false;
        self.ws_scanned = 0;
        self.next_message();
    }
}

/// The flow table.
pub struct Reassembler {
    flows: LruCache<FlowKey, Flow, FixedState>,
    /// Connections seen opening, by the sequence number of their first byte.
    syns: LruCache<FlowKey, u32, FixedState>,
    limits: TcpLimits,
    held: usize,
    stats: TcpStats,
    /// Port ranges where SIP travels over WebSocket (either end).
    ws_ports: Vec<(u16, u16)>,
    /// Bumped when the capture lost copies (NFLOG overflow).
    loss_epoch: u32,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Signed distance from `b` to `a` in sequence space.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

impl Reassembler {
    /// An empty table; `seed` keys its hash (pass a random one).
    pub fn new(limits: TcpLimits, seed: u64) -> Self {
        Self {
            flows: LruCache::with_hasher(limits.max_flows.max(1), FixedState::with_seed(seed)),
            syns: LruCache::with_hasher(limits.max_syns.max(1), FixedState::with_seed(seed ^ 1)),
            limits,
            held: 0,
            stats: TcpStats::default(),
            ws_ports: Vec::new(),
            loss_epoch: 0,
        }
    }

    /// The capture lost packet copies (the NFLOG socket overflowed): a flow
    /// whose next segment leaves a gap skips it quietly, out of step,
    /// instead of waiting for bytes that will never come (and reporting
    /// the gap as evasion).
    pub fn copies_lost(&mut self) {
        self.loss_epoch = self.loss_epoch.wrapping_add(1);
    }

    /// Port ranges (inclusive) where SIP travels over plain WebSocket
    /// (RFC 7118): flows to or from them are read as an HTTP upgrade, then
    /// frames, each SIP message one WebSocket message. Applies to flows
    /// created after the call.
    pub fn set_websocket_ports(&mut self, ports: Vec<(u16, u16)>) {
        self.ws_ports = ports;
    }

    /// Counters, with the current flow count and bytes held.
    pub fn stats(&self) -> TcpStats {
        TcpStats {
            flows: self.flows.len(),
            bytes: self.held,
            syns: self.syns.len(),
            ..self.stats
        }
    }

    /// Takes one segment of `key`'s direction: `seq` is the sequence number
    /// of its first byte (of the SYN when `flags` has [`SYN`]). Every
    /// message it completes is passed to `out`, in stream order.
    pub fn segment(
        &mut self,
        now_ms: u64,
        key: FlowKey,
        seq: u32,
        flags: u8,
        payload: &[u8],
        out: &mut dyn FnMut(Piece<'_>),
    ) {
        let start = if flags & SYN != 0 {
            seq.wrapping_add(1)
        } else {
            seq
        };
        if flags & SYN != 0 {
            // Remembered apart, whatever flow exists: a SYN inside a live
            // connection is answered with a challenge ACK and ignored by
            // the kernel (RFC 5961), so it must not reset the flow. The
            // flow is replaced only when data follows this SYN rather than
            // the flow (below). Data on a SYN (TCP Fast Open) is not read.
            self.syns.insert(key, start);
            return;
        }
        if flags & RST != 0 {
            // Only a reset at the exact next byte ends the connection; the
            // kernel challenges and ignores any other (RFC 5961).
            if self.flows.peek(&key).is_some_and(|f| f.next == seq) {
                self.remove(&key, true);
            } else if self.syns.peek(&key) == Some(&seq) {
                self.syns.remove(&key);
            }
            return;
        }
        // A new connection on this 4-tuple: data that continues the
        // remembered SYN and not the flow.
        if let (Some(&isn), Some(f)) = (self.syns.peek(&key), self.flows.peek(&key))
            && start == isn
            && f.next != isn
            && let Some(f) = self.flows.remove(&key)
        {
            self.held -= f.held();
            self.stats.closed += 1;
        }
        if !self.flows.contains_key(&key) {
            if payload.is_empty() {
                return;
            }
            let first = self.syns.remove(&key);
            if self.flows.len() >= self.limits.max_flows.max(1) {
                // A flow without its SYN starts out of step; it never
                // pushes out one that is in step (spoofed mid-stream
                // segments would otherwise flush the table).
                if first.is_none() {
                    self.stats.refused += 1;
                    return;
                }
                // Even with its SYN, a new flow only replaces one that never
                // carried a message (looked for among the least recently
                // used, bounded): spoofed SYN+data pairs cycle the unproven
                // flows, never the connections detection is reading.
                let victim = self
                    .flows
                    .iter()
                    .take(EVICT_SCAN)
                    .find(|(_, f)| !f.proven)
                    .map(|(k, _)| *k);
                let Some(victim) = victim else {
                    self.stats.refused += 1;
                    return;
                };
                if let Some(f) = self.flows.remove(&victim) {
                    self.held -= f.held();
                    self.stats.evicted += 1;
                }
            }
            if first.is_none() {
                self.stats.without_syn += 1;
            }
            let ws = self
                .ws_ports
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&key.dport) || (lo..=hi).contains(&key.sport));
            // A WebSocket flow seen from its start begins with the HTTP
            // upgrade; one picked up later is assumed to be at a frame.
            let framing = match (
                ws,
                first.is_some() || payload.starts_with(b"GET ") || payload.starts_with(b"HTTP/"),
            ) {
                (false, _) => Framing::Sip,
                (true, true) => Framing::WsHandshake,
                (true, false) => Framing::WsFrames,
            };
            self.flows.insert(
                key,
                Flow {
                    next: first.unwrap_or(start),
                    synced: first.is_some(),
                    framing,
                    epoch: self.loss_epoch,
                    ..Flow::default()
                },
            );
            self.stats.opened += 1;
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_ms = now_ms;
        let before = flow.held();
        if flow.epoch != self.loss_epoch {
            flow.epoch = self.loss_epoch;
            if !payload.is_empty() && seq_diff(start, flow.next) > 0 {
                self.stats.loss_resyncs += 1;
                flow.ooo.clear();
                flow.ooo_bytes = 0;
                flow.resume_at(start, &mut self.stats);
            }
        }
        if accept(flow, &self.limits, &mut self.stats, start, payload) {
            // Bytes that differ from what was already read, or a hole that
            // will not be filled: the PBX may read what detection did not.
            out(Piece::Garbage);
        }
        if flags & FIN != 0 {
            flow.fin_at = Some(start.wrapping_add(payload.len() as u32));
        }
        let framed = self.stats.messages;
        if flow.framing == Framing::Sip {
            deliver(flow, &self.limits, &mut self.stats, out);
        } else {
            deliver_ws(flow, &self.limits, &mut self.stats, out);
        }
        if self.stats.messages != framed {
            flow.proven = true;
        }
        let after = flow.held();
        let ended = flow.fin_at == Some(flow.next);
        self.held = self.held + after - before;
        if ended {
            // The stream reached its FIN (one ahead of a hole waits).
            self.remove(&key, true);
        }
        // The shared budget: drop the least recently used flows.
        while self.held > self.limits.total_bytes {
            let Some((_, f)) = self.flows.remove_lru() else {
                break;
            };
            self.held -= f.held();
            self.stats.evicted += 1;
        }
    }

    /// Forgets flows silent for longer than `idle_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((_, f)) = self.flows.iter().next() {
            if now_ms.saturating_sub(f.last_ms) < self.limits.idle_ms {
                break;
            }
            if let Some((_, f)) = self.flows.remove_lru() {
                self.held -= f.held();
                self.stats.idle += 1;
            }
        }
    }

    fn remove(&mut self, key: &FlowKey, closed: bool) {
        self.syns.remove(key);
        if let Some(f) = self.flows.remove(key) {
            self.held -= f.held();
            if closed {
                self.stats.closed += 1;
            }
        }
    }
}

/// Bytes that are not SIP: reported once per run on a flow in step (one
/// picked up mid-stream skips to its first start line silently), or every
/// time when `always` (a refused request line the PBX may answer). Takes
/// the two flags, not the flow, so callers may hold a slice of its buffer.
fn report_garbage(synced: bool, told: &mut bool, always: bool, out: &mut dyn FnMut(Piece<'_>)) {
    if always || (synced && !*told) {
        out(Piece::Garbage);
        *told = true;
    }
}

/// Bytes an out-of-order segment costs besides its data.
const OOO_OVERHEAD: usize = 64;

/// Adds a segment's bytes: in order to the stream, ahead of it to the
/// out-of-order list (kept sorted), behind it (a retransmission) trimmed to
/// what is new. Returns whether it saw evasion: bytes that differ from
/// those already held for the same sequence numbers, or a hole given up
/// because the flow cannot hold what lies beyond it.
fn accept(
    flow: &mut Flow,
    limits: &TcpLimits,
    stats: &mut TcpStats,
    start: u32,
    data: &[u8],
) -> bool {
    if data.is_empty() {
        return false;
    }
    let mut evasion = false;
    let rel = seq_diff(start, flow.next);
    if rel > 0 {
        // Compare with queued segments it overlaps; the later one wins (as
        // Linux's out-of-order queue lets a covering segment replace).
        let end = rel + data.len() as i64;
        let next = flow.next;
        let mut i = 0;
        while i < flow.ooo.len() {
            let (s, d) = &flow.ooo[i];
            let (a, b) = (seq_diff(*s, next), seq_diff(*s, next) + d.len() as i64);
            let (lo, hi) = (a.max(rel), b.min(end));
            if lo < hi {
                let mine = &data[(lo - rel) as usize..(hi - rel) as usize];
                let theirs = &d[(lo - a) as usize..(hi - a) as usize];
                if mine != theirs {
                    evasion = true;
                    stats.conflicts += 1;
                }
                if a >= rel && b <= end {
                    let (_, d) = flow.ooo.remove(i);
                    flow.ooo_bytes -= d.len() + OOO_OVERHEAD;
                    continue;
                }
            }
            i += 1;
        }
        let fits = rel as usize <= limits.flow_bytes
            && flow.ooo.len() < limits.max_out_of_order
            && flow.held() + data.len() + OOO_OVERHEAD <= limits.flow_bytes;
        let at = flow
            .ooo
            .iter()
            .position(|(s, _)| seq_diff(*s, next) > rel)
            .unwrap_or(flow.ooo.len());
        flow.ooo.insert(at, (start, data.to_vec()));
        flow.ooo_bytes += data.len() + OOO_OVERHEAD;
        if fits {
            return evasion;
        }
        // The hole will not be filled within bounds: give it up and
        // resume at the first segment held, out of step.
        stats.dropped_segments += 1;
        let lowest = flow.ooo[0].0;
        flow.resume_at(lowest, stats);
        evasion = true;
    } else {
        evasion |= append(flow, start, data, stats);
    }
    // Whatever the gap was waiting for may now fit.
    while let Some((s, _)) = flow.ooo.first() {
        if seq_diff(*s, flow.next) > 0 {
            break;
        }
        let (s, d) = flow.ooo.remove(0);
        flow.ooo_bytes -= d.len() + OOO_OVERHEAD;
        evasion |= append(flow, s, &d, stats);
    }
    // Everything left is ahead of `next`. After giving up a hole the
    // queue may still hold more than the flow may: the farthest goes.
    while flow.held() > limits.flow_bytes || flow.ooo.len() > limits.max_out_of_order {
        let Some((_, d)) = flow.ooo.pop() else { break };
        flow.ooo_bytes -= d.len() + OOO_OVERHEAD;
        stats.dropped_segments += 1;
        evasion = true;
    }
    evasion
}

/// Appends the part of `data` (starting at `start`, not after `next`) that
/// is new, comparing the part already held with what `buf` has for it.
/// Returns whether they differ. The stream may exceed `flow_bytes` by one
/// segment until [`deliver`] handles it.
fn append(flow: &mut Flow, start: u32, data: &[u8], stats: &mut TcpStats) -> bool {
    let old = (-seq_diff(start, flow.next)) as usize;
    // The retransmitted part still in `buf`: `buf` always ends at `next`
    // (bytes are drained from its front), so data[j] is buf[len - old + j].
    let held = flow.buf.len();
    let (d_lo, d_hi) = (old.saturating_sub(held), old.min(data.len()));
    let mut differs = false;
    if d_lo < d_hi {
        let b_lo = held - (old - d_lo);
        if flow.buf[b_lo..b_lo + (d_hi - d_lo)] != data[d_lo..d_hi] {
            differs = true;
            stats.conflicts += 1;
        }
    }
    if old >= data.len() {
        return differs;
    }
    let mut new = &data[old..];
    flow.next = flow.next.wrapping_add(new.len() as u32);
    if flow.skip > 0 {
        let n = flow.skip.min(new.len());
        flow.skip -= n;
        new = &new[n..];
    }
    flow.buf.extend_from_slice(new);
    differs
}

/// Frames and hands out every complete message at the front of the stream.
fn deliver(
    flow: &mut Flow,
    limits: &TcpLimits,
    stats: &mut TcpStats,
    out: &mut dyn FnMut(Piece<'_>),
) {
    let mut pos = 0;
    loop {
        let s = &flow.buf[pos..];
        let lead = s
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(s.len());
        let m = &s[lead..];
        if m.is_empty() {
            pos += lead;
            break;
        }
        // Parse only when it can tell something new: the body it waits for
        // is here; the head's blank line arrived; the first line ended and
        // was not judged yet (garbage is skipped promptly); the head is
        // past what any PBX reads (the parse says so).
        if flow.need == 0 && m.len() >= MAX_HEAD && !blank_line_after(&m[..MAX_HEAD], 0) {
            // A head longer than any PBX reads, or no SIP at all: skip it
            // and find the next start line (some PBXs drop such a buffer
            // and read on).
            report_garbage(flow.synced, &mut flow.garbage_told, false, out);
            stats.skipped_bytes += (lead + m.len()) as u64;
            pos += lead + m.len();
            flow.synced = false;
            flow.next_message();
            break;
        }
        let ready = if flow.need > 0 {
            m.len() >= flow.need || flow.need > limits.flow_bytes
        } else {
            blank_line_after(m, flow.scanned)
                || m.len() >= MAX_HEAD
                || (!flow.first_judged && m[flow.scanned.min(m.len())..].contains(&b'\n'))
        };
        if !ready {
            flow.scanned = m.len();
            break;
        }
        stats.parses += 1;
        match Message::parse(m) {
            Ok(msg) => {
                let body = msg.content_len().unwrap_or(0);
                let total = msg.head_len.saturating_add(body);
                if m.len() >= total {
                    out(Piece::Message(&m[..total]));
                    stats.messages += 1;
                    flow.synced = true;
                    flow.garbage_told = false;
                    flow.next_message();
                    pos += lead + total;
                    continue;
                }
                if total > limits.flow_bytes {
                    // It will never fit: hand out what is here (the head
                    // and the start of the body), skip the rest.
                    out(Piece::Message(m));
                    stats.messages += 1;
                    stats.oversize += 1;
                    // Skipped only as far as a flow may hold: a declared
                    // length is the sender's word; past it the flow
                    // looks for the next start line.
                    flow.skip = (total - m.len()).min(limits.flow_bytes);
                    pos += lead + m.len();
                    flow.garbage_told = false;
                    flow.synced = false;
                    flow.next_message();
                } else {
                    flow.need = total;
                }
                break;
            }
            Err(SipError::Truncated) => {
                // The first line is a start line; the head goes on.
                flow.first_judged = true;
                flow.scanned = m.len();
                break;
            }
            Err(_) => {
                // Not the start of a message: skip to the next line and
                // look again (a stream picked up mid-message finds the
                // next start line this way).
                let line = m
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(m.len(), |i| i + 1);
                // A request line the decoder refused (or whose headers it
                // refused) is reported every time: the PBX may read each
                // one. Other bytes once per run, on a flow in step.
                let request_like = crate::trim(&m[..line]).ends_with(b"SIP/2.0");
                report_garbage(flow.synced, &mut flow.garbage_told, request_like, out);
                stats.skipped_bytes += (lead + line) as u64;
                pos += lead + line;
                let partial = line == m.len() && m.last() != Some(&b'\n');
                flow.next_message();
                if partial {
                    break;
                }
            }
        }
    }
    flow.buf.drain(..pos);
    if flow.buf.is_empty() && flow.buf.capacity() > 4096 {
        flow.buf = Vec::new();
    } else if flow.buf.capacity() > 4096 && flow.buf.capacity() > 4 * flow.buf.len() {
        flow.buf.shrink_to(flow.buf.len().max(1024));
    }
}

/// The WebSocket side of [`deliver`]: skip the HTTP upgrade, then take
/// whole frames, unmask data frames into the flow's message and hand the
/// message out at its last frame. A frame or message longer than the flow
/// may hold is skipped (counted); bytes that are not a frame put the flow
/// out of step: they are dropped (counted) and the flow waits for its end.
fn deliver_ws(
    flow: &mut Flow,
    limits: &TcpLimits,
    stats: &mut TcpStats,
    out: &mut dyn FnMut(Piece<'_>),
) {
    loop {
        if flow.framing == Framing::WsHandshake {
            // Searched once per byte: from where the last look stopped.
            let from = flow.ws_scanned.saturating_sub(3).min(flow.buf.len());
            let Some(end) = flow.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
                flow.ws_scanned = flow.buf.len();
                if flow.buf.len() > MAX_HEAD {
                    stats.skipped_bytes += flow.buf.len() as u64;
                    flow.buf = Vec::new();
                    flow.ws_scanned = 0;
                    flow.framing = Framing::WsFrames;
                }
                return;
            };
            flow.buf.drain(..from + end + 4);
            flow.ws_scanned = 0;
            flow.framing = Framing::WsFrames;
            continue;
        }
        let f = match ws::frame(&flow.buf) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(_) => {
                report_garbage(flow.synced, &mut flow.garbage_told, false, out);
                stats.skipped_bytes += flow.buf.len() as u64;
                flow.buf.clear();
                flow.msg.clear();
                return;
            }
        };
        let total = (f.header as u64).saturating_add(f.len);
        if f.len > limits.flow_bytes as u64 {
            // Never held whole: skip it (and the message it belongs to).
            stats.oversize += 1;
            let here = flow.buf.len() as u64;
            flow.skip = usize::try_from(total.saturating_sub(here)).unwrap_or(usize::MAX);
            let take = usize::try_from(total.min(here)).unwrap_or(flow.buf.len());
            flow.buf.drain(..take);
            flow.msg.clear();
            continue;
        }
        let Ok(total) = usize::try_from(total) else {
            return;
        };
        if flow.buf.len() < total {
            return;
        }
        if f.is_data() {
            if f.opcode != 0 {
                flow.msg.clear();
            }
            ws::unmask_into(&mut flow.msg, &flow.buf[f.header..total], f.mask, 0);
            if flow.msg.len() > limits.flow_bytes {
                stats.oversize += 1;
                flow.msg.clear();
            } else if f.fin {
                out(Piece::Message(&flow.msg));
                stats.messages += 1;
                flow.synced = true;
                flow.garbage_told = false;
                flow.msg.clear();
            }
            if flow.msg.is_empty() && flow.msg.capacity() > 8192 {
                flow.msg = Vec::new();
            }
        }
        flow.buf.drain(..total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: "203.0.113.7".parse().unwrap(),
            sport: port,
            dst: "198.51.100.1".parse().unwrap(),
            dport: 5060,
        }
    }

    fn msg(n: u32, body: &str) -> Vec<u8> {
        format!(
            "REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.7;branch=z9hG4bK{n}\r\nCall-ID: c{n}\r\nCSeq: {n} REGISTER\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Feeds segments, collecting what comes out.
    fn run(r: &mut Reassembler, segs: &[(u32, u8, &[u8])]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for &(seq, flags, data) in segs {
            r.segment(0, key(40000), seq, flags, data, &mut |p| {
                if let Piece::Message(m) = p {
                    got.push(m.to_vec());
                }
            });
        }
        got
    }

    #[test]
    fn byte_by_byte_retransmitted_and_reordered() {
        let a = msg(1, "");
        let b = msg(2, "v=0\r\n");
        let stream = [a.clone(), b.clone()].concat();
        let isn = u32::MAX - 10; // the stream wraps the sequence space
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let mut segs: Vec<(u32, u8, &[u8])> = vec![(isn, SYN, &[])];
        for (i, byte) in stream.chunks(1).enumerate() {
            segs.push((isn.wrapping_add(1 + i as u32), 0, byte));
        }
        // Swap two neighbours and repeat one: reordering and retransmission.
        segs.swap(30, 31);
        let again = segs[50];
        segs.insert(70, again);
        assert_eq!(run(&mut r, &segs), vec![a, b]);
        assert_eq!(r.stats().flows, 1);
    }

    /// SIP over WebSocket: the HTTP upgrade is skipped, a message split in
    /// a text frame and a continuation (a ping between them), masked and
    /// cut into 7-byte segments, comes out whole; so does the server's
    /// unmasked answer on the other direction.
    #[test]
    fn websocket_frames_carry_whole_messages() {
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        r.set_websocket_ports(vec![(5066, 5066)]);
        let ws_key = |sport, dport| FlowKey {
            src: "203.0.113.7".parse().unwrap(),
            sport,
            dst: "198.51.100.1".parse().unwrap(),
            dport,
        };
        let m = msg(1, "");
        let (a, b) = m.split_at(50);
        let k = Some([0x11, 0x22, 0x33, 0x44]);
        let mut stream = b"GET / HTTP/1.1\r\nHost: pbx\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: sip\r\n\r\n".to_vec();
        stream.extend(ws::encode(1, false, k, a));
        stream.extend(ws::encode(9, true, k, b"ping"));
        stream.extend(ws::encode(0, true, k, b));
        let mut got = Vec::new();
        r.segment(0, ws_key(40000, 5066), 99, SYN, &[], &mut |_| {});
        for (i, c) in stream.chunks(7).enumerate() {
            r.segment(0, ws_key(40000, 5066), 100 + 7 * i as u32, 0, c, &mut |p| {
                if let Piece::Message(x) = p {
                    got.push(x.to_vec());
                }
            });
        }
        assert_eq!(got, vec![m.clone()]);
        // The answer, unmasked, picked up mid-stream at a frame.
        let resp = b"SIP/2.0 401 Unauthorized\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let mut back = Vec::new();
        r.segment(
            0,
            ws_key(5066, 40000),
            500,
            0,
            &ws::encode(1, true, None, resp),
            &mut |p| {
                if let Piece::Message(x) = p {
                    back.push(x.to_vec());
                }
            },
        );
        assert_eq!(back, vec![resp.to_vec()]);
        // Not a frame: dropped and counted, no panic.
        r.segment(
            0,
            ws_key(40000, 5066),
            100 + stream.len() as u32,
            0,
            b"\x83\x00junk",
            &mut |_| {},
        );
        assert!(r.stats().skipped_bytes >= 6);
    }

    /// A head sent one byte per segment is parsed a few times, not once
    /// per byte (which would make a 60 KB head cost gigabytes of scanning).
    #[test]
    fn a_message_cut_into_bytes_is_parsed_a_few_times() {
        let pad = "X-Pad: a\r\n".repeat(6000);
        let m = format!(
            "REGISTER sip:pbx SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n{pad}Content-Length: 4\r\n\r\nbody"
        );
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let mut got = 0;
        for (i, b) in m.as_bytes().chunks(1).enumerate() {
            r.segment(0, key(1), 1 + i as u32, 0, b, &mut |p| {
                got += usize::from(matches!(p, Piece::Message(_)))
            });
        }
        assert_eq!(got, 1);
        assert!(r.stats().parses <= 4, "{:?}", r.stats());
    }

    #[test]
    fn overlapping_segments_and_two_messages_in_one() {
        let a = msg(1, "");
        let b = msg(2, "");
        let s = [a.clone(), b.clone()].concat();
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let got = run(
            &mut r,
            &[(100, 0, &s[..40]), (120, 0, &s[20..]), (100, 0, &s)],
        );
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn a_syn_flood_holds_nothing_and_fin_rst_close() {
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        for p in 0..10_000u16 {
            r.segment(0, key(p), 1, SYN, &[], &mut |_| {});
        }
        assert_eq!(r.stats().flows, 0);
        let m = msg(1, "");
        r.segment(0, key(1), 1, 0, &m[..10], &mut |_| {});
        assert_eq!(r.stats().flows, 1);
        r.segment(0, key(1), 11, FIN, &m[10..], &mut |_| {});
        assert_eq!(
            (r.stats().flows, r.stats().messages, r.stats().closed),
            (0, 1, 1)
        );
        r.segment(0, key(2), 1, 0, &m[..10], &mut |_| {});
        r.segment(0, key(2), 11, RST, &[], &mut |_| {});
        assert_eq!((r.stats().flows, r.stats().bytes), (0, 0));
    }

    #[test]
    fn mid_stream_pickup_finds_the_next_message() {
        let a = msg(1, "");
        let b = msg(2, "");
        let s = [a.clone(), b.clone()].concat();
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        // The copy starts in the middle of the first message's Via line.
        let mut pieces = Vec::new();
        r.segment(0, key(1), 1, 0, &s[30..], &mut |p| {
            pieces.push(match p {
                Piece::Message(m) => m.to_vec(),
                Piece::Garbage => b"garbage".to_vec(),
            })
        });
        assert_eq!(pieces, vec![b]);
        assert!(r.stats().skipped_bytes > 0);
    }

    #[test]
    fn an_oversize_body_is_cut_and_the_next_message_still_found() {
        let limits = TcpLimits {
            flow_bytes: 1024,
            ..TcpLimits::default()
        };
        let big = msg(1, &"x".repeat(1500));
        let next = msg(2, "");
        let s = [big.clone(), next.clone()].concat();
        let mut r = Reassembler::new(limits, 7);
        let segs: Vec<(u32, u8, &[u8])> = s
            .chunks(700)
            .enumerate()
            .map(|(i, c)| (1 + 700 * i as u32, 0, c))
            .collect();
        let got = run(&mut r, &segs);
        assert_eq!(got.len(), 2, "{:?}", r.stats());
        assert!(big.starts_with(&got[0]));
        assert_eq!(got[1], next);
        assert_eq!(r.stats().oversize, 1);
    }

    fn collect(
        r: &mut Reassembler,
        k: FlowKey,
        segs: &[(u32, u8, &[u8])],
    ) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut garbage) = (Vec::new(), 0);
        for &(seq, flags, data) in segs {
            r.segment(0, k, seq, flags, data, &mut |p| match p {
                Piece::Message(m) => got.push(m.to_vec()),
                Piece::Garbage => garbage += 1,
            });
        }
        (got, garbage)
    }

    /// Tricks the kernel ignores must not blind the reassembler: a SYN
    /// inside the connection, a reset off the next byte, a FIN ahead of a
    /// hole (the review of issue 13's change found each one).
    #[test]
    fn a_stray_syn_rst_or_early_fin_does_not_blind_a_flow() {
        let (a, b) = (msg(1, ""), msg(2, ""));
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let k = key(1);
        let n = a.len() as u32;
        let (got, _) = collect(
            &mut r,
            k,
            &[
                (99, SYN, &[]),
                (100, 0, &a[..10]),
                (777_777, SYN, &[]),    // a SYN inside the connection
                (100 + 5, RST, &[]),    // a reset off the next byte
                (100 + n, FIN, &b[..]), // the FIN, ahead of the hole
                (110, 0, &a[10..]),     // the hole filled
            ],
        );
        assert_eq!(got, vec![a.clone(), b.clone()]);
        assert_eq!(r.stats().flows, 0, "closed at its FIN");
    }

    /// After the capture lost copies, a flow skips the gap it finds next
    /// quietly (no evasion report, nothing held waiting for it).
    #[test]
    fn a_gap_after_lost_copies_is_skipped_quietly() {
        let (a, b) = (msg(1, ""), msg(2, ""));
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let k = key(1);
        let n = a.len() as u32;
        let (got, _) = collect(&mut r, k, &[(99, SYN, &[]), (100, 0, &a[..10])]);
        assert!(got.is_empty());
        r.copies_lost();
        let (got, garbage) = collect(&mut r, k, &[(100 + n, 0, &b)]);
        assert_eq!((got, garbage), (vec![b], 0));
        assert_eq!((r.stats().loss_resyncs, r.stats().dropped_segments), (1, 0));
    }

    /// Reordering far beyond what a stack does: a message sent as one-byte
    /// segments in reverse order is still read (each segment costs 64
    /// bytes besides its data, within the flow's bound).
    #[test]
    fn a_message_in_reversed_one_byte_segments_is_read() {
        let a = msg(1, "");
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let mut segs: Vec<(u32, u8, &[u8])> = vec![(99, SYN, &[])];
        segs.extend(
            a.chunks(1)
                .enumerate()
                .rev()
                .map(|(i, c)| (100 + i as u32, 0, c)),
        );
        let (got, garbage) = collect(&mut r, key(1), &segs);
        assert_eq!((got, garbage), (vec![a], 0));
    }

    /// A hole the flow cannot hold what lies beyond is given up and
    /// reported as evasion; so are retransmitted or overlapping bytes that
    /// differ from what was read.
    #[test]
    fn holes_given_up_and_conflicting_bytes_are_reported() {
        let limits = TcpLimits {
            max_out_of_order: 8,
            ..TcpLimits::default()
        };
        let a = msg(1, "");
        let mut r = Reassembler::new(limits, 7);
        let mut segs: Vec<(u32, u8, &[u8])> = vec![(99, SYN, &[])];
        segs.extend(
            a.chunks(1)
                .enumerate()
                .skip(1)
                .rev()
                .map(|(i, c)| (100 + i as u32, 0, c)),
        );
        let (_, garbage) = collect(&mut r, key(1), &segs);
        assert!(
            garbage >= 1 && r.stats().dropped_segments >= 1,
            "{:?}",
            r.stats()
        );

        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let mut forged = a.clone();
        forged[5] = b'X';
        let (got, garbage) = collect(
            &mut r,
            key(2),
            &[
                (99, SYN, &[]),
                (100, 0, &a[..20]),
                (100, 0, &forged[..20]),
                (120, 0, &a[20..]),
            ],
        );
        assert_eq!((got, garbage, r.stats().conflicts), (vec![a.clone()], 1, 1));
        // Out of order: junk queued first, the real bytes later at the
        // same place: the later wins, and it is reported.
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let junk = vec![b'z'; a.len() - 10];
        let (got, garbage) = collect(
            &mut r,
            key(3),
            &[
                (99, SYN, &[]),
                (110, 0, &junk),
                (110, 0, &a[10..]),
                (100, 0, &a[..10]),
            ],
        );
        assert_eq!((got, garbage), (vec![a], 1));
    }

    /// A line that never ends (or a head past what any PBX reads) is
    /// skipped, not held: the flow stays within its bound and is parsed a
    /// handful of times.
    #[test]
    fn an_endless_line_stays_within_the_flow_bound() {
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let k = key(1);
        r.segment(0, k, 99, SYN, &[], &mut |_| {});
        let chunk = vec![b'A'; 1000];
        let mut seq = 100u32;
        let first = b"REGISTER sip:pbx SIP/2.0\r\nX: ";
        r.segment(0, k, seq, 0, first, &mut |_| {});
        seq += first.len() as u32;
        for _ in 0..200 {
            r.segment(0, k, seq, 0, &chunk, &mut |_| {});
            seq += 1000;
            assert!(
                r.stats().bytes <= TcpLimits::default().flow_bytes,
                "{:?}",
                r.stats()
            );
        }
        assert!(r.stats().parses <= 10, "{:?}", r.stats());
        assert!(r.stats().skipped_bytes >= 100_000);
    }

    /// With the table full, a segment without a remembered SYN does not
    /// push out a flow that is in step.
    #[test]
    fn spoofed_mid_stream_segments_do_not_flush_the_table() {
        let limits = TcpLimits {
            max_flows: 4,
            ..TcpLimits::default()
        };
        let mut r = Reassembler::new(limits, 7);
        let a = msg(1, "");
        for p in 0..4 {
            r.segment(0, key(p), 99, SYN, &[], &mut |_| {});
            r.segment(0, key(p), 100, 0, &a[..10], &mut |_| {});
        }
        for p in 100..1100 {
            r.segment(0, key(p), 5, 0, b"xx", &mut |_| {});
        }
        assert_eq!((r.stats().flows, r.stats().refused), (4, 1000));
        let (got, _) = collect(&mut r, key(0), &[(110, 0, &a[10..])]);
        assert_eq!(got, vec![a]);
    }

    /// With the table full of connections that carried messages, spoofed
    /// SYN+data pairs (a SYN, then data continuing it, from addresses that
    /// never completed a handshake) are refused and counted: none of the
    /// real connections is pushed out.
    #[test]
    fn spoofed_syn_and_data_pairs_do_not_evict_connections_that_carried_messages() {
        let limits = TcpLimits {
            max_flows: 4,
            ..TcpLimits::default()
        };
        let mut r = Reassembler::new(limits, 7);
        let a = msg(1, "");
        for p in 0..4 {
            r.segment(0, key(p), 99, SYN, &[], &mut |_| {});
            r.segment(0, key(p), 100, 0, &a, &mut |_| {});
        }
        assert_eq!(r.stats().messages, 4);
        for p in 100..1100 {
            r.segment(0, key(p), 9, SYN, &[], &mut |_| {});
            r.segment(0, key(p), 10, 0, b"REGISTER sip:x SIP/2.0\r\n", &mut |_| {});
        }
        assert_eq!(
            (r.stats().flows, r.stats().refused, r.stats().evicted),
            (4, 1000, 0)
        );
        // Every real connection is still read, in step.
        let b = msg(2, "");
        for p in 0..4 {
            let (got, _) = collect(&mut r, key(p), &[(100 + a.len() as u32, 0, &b[..])]);
            assert_eq!(got, vec![b.clone()], "flow {p}");
        }
        // An unproven flow (a head that never ended) is still given up for
        // a new connection with its SYN.
        let mut r = Reassembler::new(limits, 7);
        for p in 0..4 {
            r.segment(0, key(p), 99, SYN, &[], &mut |_| {});
            r.segment(
                0,
                key(p),
                100,
                0,
                b"REGISTER sip:x SIP/2.0\r\n",
                &mut |_| {},
            );
        }
        r.segment(0, key(9), 99, SYN, &[], &mut |_| {});
        r.segment(0, key(9), 100, 0, &a, &mut |_| {});
        assert_eq!((r.stats().evicted, r.stats().refused), (1, 0));
    }

    /// A Content-Length far beyond what a flow holds is the sender's word:
    /// the skip stops at what a flow holds, and the messages after it are
    /// found again by their start lines.
    #[test]
    fn an_absurd_content_length_does_not_hide_what_follows() {
        let limits = TcpLimits {
            flow_bytes: 1024,
            ..TcpLimits::default()
        };
        let liar = b"REGISTER sip:pbx SIP/2.0\r\nCall-ID: l\r\nCSeq: 1 REGISTER\r\nContent-Length: 999999999\r\n\r\n".to_vec();
        let filler = b"junk\r\n".repeat(300);
        let next = msg(2, "");
        let s = [liar, filler, next.clone(), msg(3, "")].concat();
        let mut r = Reassembler::new(limits, 7);
        let segs: Vec<(u32, u8, &[u8])> = s
            .chunks(500)
            .enumerate()
            .map(|(i, c)| (1 + 500 * i as u32, 0, c))
            .collect();
        let got = run(&mut r, &segs);
        assert!(got.contains(&next), "{:?}", r.stats());
        assert!(r.stats().bytes <= 1024 + 500);
    }

    #[test]
    fn the_byte_budget_and_idle_timeout_bound_memory() {
        let limits = TcpLimits {
            total_bytes: 100_000,
            max_flows: 1000,
            ..TcpLimits::default()
        };
        let mut r = Reassembler::new(limits, 7);
        // Slow-loris: each flow sends a head that never ends.
        let partial = b"REGISTER sip:pbx SIP/2.0\r\nX-Pad: ";
        for p in 0..5000u16 {
            r.segment(u64::from(p), key(p), 1, 0, partial, &mut |_| {});
            let pad = vec![b'a'; 500];
            r.segment(
                u64::from(p),
                key(p),
                1 + partial.len() as u32,
                0,
                &pad,
                &mut |_| {},
            );
            let s = r.stats();
            assert!(s.bytes <= 100_000 && s.flows <= 1000, "{s:?}");
        }
        assert!(r.stats().evicted > 0);
        r.expire(5000 + 120_000);
        assert_eq!((r.stats().flows, r.stats().bytes), (0, 0));
    }

    /// Each request the decoder refuses is reported (the PBX may answer
    /// every one; the `undecodable` rule counts them), not once per run.
    #[test]
    fn every_refused_request_line_is_reported() {
        let bad = b"REGISTER sip:pbx SIP/2.0\r\nVia SIP/2.0/TCP no-colon\r\n\r\n";
        let s = bad.repeat(5);
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let mut garbage = 0;
        r.segment(0, key(1), 99, SYN, &[], &mut |_| {});
        r.segment(0, key(1), 100, 0, &s, &mut |p| {
            garbage += usize::from(p == Piece::Garbage)
        });
        assert_eq!(garbage, 5);
    }

    #[test]
    fn garbage_after_a_message_is_reported_once() {
        let a = msg(1, "");
        let s = [a.clone(), b"\x16\x03\x01 not sip\r\nstill not\r\n".to_vec()].concat();
        let mut r = Reassembler::new(TcpLimits::default(), 7);
        let mut garbage = 0;
        r.segment(0, key(1), 1, 0, &s, &mut |p| {
            garbage += usize::from(p == Piece::Garbage)
        });
        assert_eq!(garbage, 1);
    }
}
