//! Any bytes as a HEP datagram, and as a HEP stream framed packet by
//! packet: decoded or refused, never a panic; a decoded payload goes
//! through the SIP decoder as the daemon would, and a decoded packet
//! encodes to one that decodes to the same; the same bytes as a TCP
//! stream cut in two give only whole packets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = voipwall_sip::hep::decode(data) {
        let _ = voipwall_sip::Message::parse_captured(h.payload);
        // The encoder round-trips what the decoder read (as version 3).
        let again = voipwall_sip::hep::encode_v3(&h);
        let h2 = voipwall_sip::hep::decode(&again).expect("an encoded packet decodes");
        assert_eq!(
            (h2.src, h2.dst, h2.sport, h2.dport, h2.ip_proto, h2.payload),
            (h.src, h.dst, h.sport, h.dport, h.ip_proto, h.payload)
        );
    }
    // As a TCP stream cut in two anywhere: the same packets, whole.
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut streams = voipwall_sip::hep::HepStreams::default();
    let key = (
        std::net::IpAddr::from([192, 0, 2, 1]),
        1,
        std::net::IpAddr::from([192, 0, 2, 2]),
        2,
    );
    for (seq, part) in [(1u32, &data[..cut]), (1 + cut as u32, &data[cut..])] {
        streams.segment(key, seq, false, part, &mut |p| {
            assert_eq!(voipwall_sip::hep::frame(p), Ok(Some(p.len())));
        });
    }
    let mut rest = data;
    while let Ok(Some(n)) = voipwall_sip::hep::frame(rest) {
        let _ = voipwall_sip::hep::decode(&rest[..n]);
        rest = &rest[n..];
    }
});
