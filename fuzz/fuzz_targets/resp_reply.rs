//! Any bytes as a Redis reply: nothing may panic, and a reply decoded
//! never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipwall_fleet::resp::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, used))) = decode(data) {
        assert!(used <= data.len());
    }
});
