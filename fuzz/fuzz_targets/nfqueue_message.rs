//! Any bytes as what the NFQUEUE socket receives: walked as netlink
//! messages, each held packet's bytes asked whether the queue holds them,
//! as the daemon does. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipwall_sys::nfqueue::{held_by_queue, walk_messages};

fuzz_target!(|data: &[u8]| {
    let _ = walk_messages(data, |_, p| {
        if let Some(p) = p {
            let _ = held_by_queue(p.payload);
        }
    });
    let _ = held_by_queue(data);
});
