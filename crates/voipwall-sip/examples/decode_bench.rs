//! SIP decode throughput, voipwall-sip and rsip side by side on the same
//! messages in one run, single thread. Each parser must yield method or
//! status and the Call-ID; voipwall-sip also extracts From user, CSeq and
//! User-Agent (what detection uses).
//!
//! Usage: decode_bench [seconds-per-round] [rounds]; prints JSON.
// A driver (test, example, benchmark): it may read files and the clock;
// the crate's library code may not (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::hint::black_box;

use rsip::message::HasHeaders as _;
use std::time::{Duration, Instant};

const MSGS: [&[u8]; 3] = [
    b"REGISTER sip:pbx.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5062;rport;branch=z9hG4bK-524287-1\r\nMax-Forwards: 70\r\nFrom: \"1001\" <sip:1001@pbx.example.net>;tag=4a2b\r\nTo: <sip:1001@pbx.example.net>\r\nCall-ID: 8d1c3f@203.0.113.9\r\nCSeq: 2 REGISTER\r\nContact: <sip:1001@203.0.113.9:5062>\r\nAuthorization: Digest username=\"1001\", realm=\"pbx\", nonce=\"abc\", uri=\"sip:pbx.example.net\", response=\"0123456789abcdef\"\r\nExpires: 3600\r\nUser-Agent: Yealink SIP-T46S 66.86.0.15\r\nContent-Length: 0\r\n\r\n",
    b"INVITE sip:00442071234567@pbx.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nTo: <sip:00442071234567@pbx.example.net>\r\nFrom: \"100\" <sip:100@pbx.example.net>;tag=1928301774\r\nCall-ID: a84b4c76e66710@198.51.100.7\r\nCSeq: 314159 INVITE\r\nContact: <sip:100@198.51.100.7>\r\nUser-Agent: friendly-scanner\r\nContent-Type: application/sdp\r\nContent-Length: 142\r\n\r\nv=0\r\no=100 2890844526 2890844526 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
    b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 203.0.113.9:5062;rport=5062;branch=z9hG4bK-524287-1;received=203.0.113.9\r\nFrom: \"1001\" <sip:1001@pbx.example.net>;tag=4a2b\r\nTo: <sip:1001@pbx.example.net>;tag=as5f3c\r\nCall-ID: 8d1c3f@203.0.113.9\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest algorithm=MD5, realm=\"pbx\", nonce=\"5f3c1a2b\"\r\nServer: FPBX-16.0.40(18.20.0)\r\nContent-Length: 0\r\n\r\n",
];

fn ours() -> usize {
    let mut n = 0;
    for raw in MSGS {
        let m = voipwall_sip::Message::parse(raw).expect("valid");
        black_box((
            m.method(),
            m.status(),
            m.call_id,
            m.from_user(),
            m.cseq_parts(),
            m.agent(),
        ));
        n += 1;
    }
    n
}

fn theirs() -> usize {
    let mut n = 0;
    for raw in MSGS {
        let m = rsip::SipMessage::try_from(raw).expect("valid");
        let call_id = m
            .headers()
            .iter()
            .find(|h| matches!(h, rsip::Header::CallId(_)))
            .cloned();
        match &m {
            rsip::SipMessage::Request(r) => {
                black_box((&r.method, call_id));
            }
            rsip::SipMessage::Response(r) => {
                black_box((&r.status_code, call_id));
            }
        }
        n += 1;
    }
    n
}

fn rate(f: fn() -> usize, secs: f64) -> f64 {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < budget {
        for _ in 0..100 {
            n += f();
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(rate(ours, secs));
        b.push(rate(theirs, secs));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (ma, mb) = (a[rounds / 2], b[rounds / 2]);
    println!(
        "{{\"voipwall_sip_msgs_per_s\":{ma:.0},\"rsip_msgs_per_s\":{mb:.0},\"ratio\":{:.1},\"rounds\":{rounds},\"seconds_per_round\":{secs}}}",
        ma / mb
    );
}
