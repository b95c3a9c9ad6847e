//! SIP over TCP ingest, the reassembler alone (no kernel, no daemon): many
//! flows, each carrying REGISTERs cut into segments of a fixed size, fed
//! interleaved (every flow's next message in turn, as a busy PBX sees
//! them). Prints messages per second, and the memory the table holds for
//! 10,000 flows each stopped half-way through a message (what a slow or
//! malicious client leaves behind). BENCHMARKS.md quotes it.
//!
//! Usage: tcp_bench [flows] [messages-per-flow] [segment-bytes]
//!        (default 10000 20 100)
// A bench, not the library: it reads the clock and /proc.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use voipwall_sip::tcp::{FlowKey, Piece, Reassembler, SYN, TcpLimits};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn key(f: u32) -> FlowKey {
    FlowKey {
        src: IpAddr::V4(Ipv4Addr::from(0xc612_0000 + f)),
        sport: 40_000 + (f % 20_000) as u16,
        dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
        dport: 5060,
    }
}

fn message(f: u32, i: u32) -> Vec<u8> {
    format!(
        "REGISTER sip:pbx.example SIP/2.0\r\nVia: SIP/2.0/TCP 198.18.{}.{}:5070;branch=z9hG4bK{f}x{i}\r\n\
         From: <sip:1001@pbx.example>;tag={i}\r\nTo: <sip:1001@pbx.example>\r\nCall-ID: {f}-{i}@bench\r\n\
         CSeq: {i} REGISTER\r\nContact: <sip:1001@198.18.0.1:5070;transport=tcp>\r\nExpires: 60\r\n\
         User-Agent: Yealink SIP-T46U 66.86.0.15\r\nContent-Length: 0\r\n\r\n",
        f >> 8 & 255,
        f & 255
    )
    .into_bytes()
}

fn main() {
    let a: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let flows = a.first().copied().unwrap_or(10_000) as u32;
    let per = a.get(1).copied().unwrap_or(20) as u32;
    let seg = a.get(2).copied().unwrap_or(100) as usize;

    // Memory first, in a fresh process: a table, 10,000 flows each holding half a message.
    let before = rss_kb();
    let mut held = Reassembler::new(TcpLimits::default(), 0x5eed);
    for f in 0..10_000u32 {
        let m = message(f, 0);
        held.segment(0, key(f), 1000, 0, &m[..m.len() / 2], &mut |_| {});
    }
    let after = rss_kb();
    let s = held.stats();
    drop(held);

    let mut r = Reassembler::new(TcpLimits::default(), 0x5eed);
    let mut seq = vec![1000u32; flows as usize];
    for f in 0..flows {
        r.segment(0, key(f), 999, SYN, &[], &mut |_| {});
    }
    let (mut messages, mut bytes, mut segments) = (0u64, 0u64, 0u64);
    let mut busy = std::time::Duration::ZERO;
    for i in 0..per {
        // The round's messages are built before the clock runs.
        let round: Vec<Vec<u8>> = (0..flows).map(|f| message(f, i)).collect();
        let t = Instant::now();
        for (f, m) in round.iter().enumerate() {
            for c in m.chunks(seg) {
                r.segment(1, key(f as u32), seq[f], 0, c, &mut |p| {
                    if let Piece::Message(_) = p {
                        messages += 1;
                    }
                });
                seq[f] = seq[f].wrapping_add(c.len() as u32);
                segments += 1;
            }
            bytes += m.len() as u64;
        }
        busy += t.elapsed();
    }
    let secs = busy.as_secs_f64();
    let want = u64::from(flows) * u64::from(per);
    assert_eq!(messages, want, "every message framed");

    println!(
        "{{\"flows\": {flows}, \"messages\": {messages}, \"segments\": {segments}, \"segment_bytes\": {seg}, \
         \"seconds\": {secs:.3}, \"messages_per_s\": {:.0}, \"mb_per_s\": {:.1}, \
         \"half_messages_10k_flows\": {{\"flows\": {}, \"bytes_held\": {}, \"rss_growth_kb\": {}}}}}",
        messages as f64 / secs,
        bytes as f64 / secs / 1e6,
        s.flows,
        s.bytes,
        after.saturating_sub(before)
    );
}
