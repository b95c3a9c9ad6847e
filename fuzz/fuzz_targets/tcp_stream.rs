//! Any bytes as a sequence of TCP segments on a handful of flows, through
//! the reassembler with small limits: never a panic, never more held than
//! the limits allow, and every message handed out decodes or is counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipwall_sip::tcp::{FlowKey, Piece, Reassembler, TcpLimits};

fuzz_target!(|data: &[u8]| {
    let limits = TcpLimits {
        max_flows: 4,
        flow_bytes: 2048,
        total_bytes: 4096,
        max_out_of_order: 4,
        idle_ms: 100,
        max_syns: 4,
    };
    let mut r = Reassembler::new(limits, 1);
    // Flows from ports 3 to 5 are SIP over WebSocket.
    r.set_websocket_ports(vec![(3, 5)]);
    let mut rest = data;
    let mut now = 0u64;
    // Each segment: port (1 byte), seq (2), flags (1), length (1), payload.
    while rest.len() >= 5 {
        let (h, tail) = rest.split_at(5);
        let len = usize::from(h[4]).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        now += 7;
        let key = FlowKey {
            src: "203.0.113.9".parse().unwrap(),
            sport: u16::from(h[0] % 6),
            dst: "198.51.100.1".parse().unwrap(),
            dport: 5060,
        };
        let seq = u32::from(u16::from_be_bytes([h[1], h[2]]));
        r.segment(now, key, seq, h[3], payload, &mut |p| {
            if let Piece::Message(m) = p {
                let _ = voipwall_sip::Message::parse_captured(m);
            }
        });
        let s = r.stats();
        assert!(s.flows <= 4 && s.syns <= 4 && s.bytes <= 4096, "{s:?}");
        if h[3] & 0x80 != 0 {
            r.expire(now);
        }
    }
});
