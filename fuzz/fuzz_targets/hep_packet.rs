//! Any bytes as a HEP datagram, and as a HEP stream framed packet by
//! packet: decoded or refused, never a panic; a decoded payload goes
//! through the SIP decoder as the daemon would.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = voipwall_sip::hep::decode(data) {
        let _ = voipwall_sip::Message::parse_captured(h.payload);
    }
    let mut rest = data;
    while let Ok(Some(n)) = voipwall_sip::hep::frame(rest) {
        let _ = voipwall_sip::hep::decode(&rest[..n]);
        rest = &rest[n..];
    }
});
