//! Any bytes as an answer of CrowdSec's decisions stream, and as a Go
//! duration: nothing may panic, and no decision placed may be wide, the
//! host's own or protected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipwall_policy::crowdsec::{go_duration_ms, parse_stream};
use voipwall_policy::feed::Guard;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let guard = Guard {
        own: vec!["203.0.113.1".parse().unwrap()],
        protected: vec!["198.51.100.0/24".parse().unwrap()],
    };
    if let Ok(s) = parse_stream(&text, &guard) {
        for d in &s.new {
            assert!(guard.refuse(&d.net).is_none());
        }
    }
    let _ = go_duration_ms(&text);
});
