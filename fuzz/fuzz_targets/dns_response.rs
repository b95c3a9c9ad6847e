//! Any bytes as a DNS response (what a resolver, or anyone who can spoof
//! one, sends back): parsed or refused, never a panic; answers feed the
//! re-resolution schedule without panicking either.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use voipwall_dns::{Rdata, Resolved, Settings, Tracker, parse_response};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = parse_response(data) else { return };
    let mut addrs = BTreeSet::new();
    let mut ttl = u32::MAX;
    for a in &r.answers {
        match a.data {
            Rdata::A(x) => { addrs.insert(std::net::IpAddr::V4(x)); }
            Rdata::Aaaa(x) => { addrs.insert(std::net::IpAddr::V6(x)); }
            _ => continue,
        }
        ttl = ttl.min(a.ttl);
    }
    let mut t = Tracker::new(Settings::default());
    t.set_names(0, vec![("n".into(), false, BTreeSet::new())]);
    let _ = t.record(0, "n", Ok(Resolved { addrs, ttl_s: ttl }));
    let _ = t.next_due();
});
