//! Any bytes as a SIP message, a TCP stream and an NFLOG packet: decoding,
//! framing and peeling never panic, and every accessor of a decoded message
//! stays inside the input; the quick header path reads as the general one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipwall_sip::{Message, frame, peel};

fn inside(outer: &[u8], inner: Option<&[u8]>) {
    if let Some(i) = inner {
        let (o, n) = (outer.as_ptr() as usize, i.as_ptr() as usize);
        assert!(i.is_empty() || (n >= o && n + i.len() <= o + outer.len()), "accessor left the input");
    }
}

fn check(data: &[u8]) {
    assert_eq!(Message::parse(data), Message::parse_general(data, false), "quick and general paths differ");
    assert_eq!(Message::parse_captured(data), Message::parse_general(data, true), "quick and general paths differ on a capture");
    if let Ok(m) = Message::parse(data) {
        assert!(m.head_len <= data.len());
        for v in [m.from_user(), m.to_user(), m.ruri_user(), m.via_sent_by(), m.via_branch(), m.auth_username(), m.agent(), m.method()] {
            inside(data, v);
        }
        let _ = (m.cseq_parts(), m.expires_secs(), m.content_len());
    }
    if let Ok(Some((skip, len))) = frame(data) {
        assert!(skip + len <= data.len());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(p) = peel(data) {
        inside(data, Some(p.payload));
        check(p.payload);
    }
});
