//! The daemon's per-message work without the kernel: IPv4/UDP copies of
//! REGISTERs from 5,000 sources (the `bench/daemon` ingest mix) through
//! `Capture::packet`, `Decoded::engine_event` and `Engine::handle_packet`,
//! with the engine's timers run every 64 messages, on a simulated clock of
//! 100,000 messages a second. Prints one JSON line per run.
//!
//! Usage: `packet_path [messages] [runs]` (default 2,000,000 and 5). With
//! 0 messages only the setup runs (what `bench/packet-path` subtracts from an
//! instruction count).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a timing harness reads the clock

use std::net::Ipv4Addr;
use std::time::Instant;

use voipwall_detect::packet::{Capture, Seen};
use voipwall_detect::{Config, Engine, RuleSet, Timestamp};

/// An IPv4/UDP datagram from `src`:5070 to `dst`:5060 (UDP checksum 0).
fn datagram(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(28 + payload.len()).expect("a small datagram");
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum: u32 = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let check = !(sum as u16);
    p[10..12].copy_from_slice(&check.to_be_bytes());
    p.extend_from_slice(&5070u16.to_be_bytes());
    p.extend_from_slice(&5060u16.to_be_bytes());
    p.extend_from_slice(&(total - 20).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map_or(2_000_000, |a| a.parse().expect("messages"));
    let runs: u32 = args.next().map_or(5, |a| a.parse().expect("runs"));
    let dst = Ipv4Addr::new(203, 0, 113, 1);
    let first = u32::from(Ipv4Addr::new(198, 19, 0, 1));
    let packets: Vec<Vec<u8>> = (0..5000u32)
        .map(|i| {
            let src = Ipv4Addr::from(first + i);
            let sip = format!(
                "REGISTER sip:{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5070;branch=z9hG4bK{i}\r\n\
                 From: <sip:1001@{dst}>;tag=1\r\nTo: <sip:1001@{dst}>\r\nCall-ID: c{i}@{src}\r\n\
                 CSeq: 1 REGISTER\r\nContact: <sip:1001@{src}:5070>\r\nExpires: 60\r\n\
                 User-Agent: Yealink SIP-T46U 66.86.0.15\r\nContent-Length: 0\r\n\r\n"
            );
            datagram(src, dst, sip.as_bytes())
        })
        .collect();
    for _ in 0..runs {
        let mut engine = Engine::new(Config::new(RuleSet::builtin()));
        let mut capture = Capture::new(Default::default(), 7);
        let started = Instant::now();
        let mut events = 0u64;
        for k in 0..n {
            let at = Timestamp(1_800_000_000_000 + k / 100);
            let p = &packets[(k % 5000) as usize];
            capture.packet(at.0, p, "nflog", &mut |seen| {
                if let Seen::Sip(d) = seen
                    && let Some((ev, _)) = d.engine_event("nflog")
                {
                    engine.handle_packet(at, &ev);
                    events += 1;
                }
            });
            if k % 64 == 0 {
                engine.handle_timeout(at);
                while engine.poll_action().is_some() {}
            }
        }
        let s = started.elapsed().as_secs_f64();
        println!(
            "{{\"messages\":{n},\"events\":{events},\"bans\":{},\"seconds\":{s:.4},\"ns_per_msg\":{:.1}}}",
            engine.stats().bans,
            if n > 0 { s * 1e9 / n as f64 } else { 0.0 }
        );
    }
}
