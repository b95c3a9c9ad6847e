//! Any bytes as a stream of call events (INVITEs with and without
//! credentials, answers, BYEs, time steps) through the call guard: its
//! counts must stay true after every step, and nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipwall_detect::Timestamp;

fuzz_target!(|data: &[u8]| {
    let mut g = voipwall_detect::calls::test_guard(8);
    if let Err(e) = g.run_ops(data, Timestamp(1_795_400_000_000)) {
        panic!("{e}");
    }
});
