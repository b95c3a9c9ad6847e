//! Any bytes as a capture file (`replay --pcap`): read or refused, never a
//! panic; every packet read is decoded as the daemon would.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = voipwall_sip::pcap::read(data) else { return };
    for p in &c.packets {
        if let Ok(d) = voipwall_detect::packet::decode(p.ip) {
            let _ = d.event("fuzz");
        }
    }
});
