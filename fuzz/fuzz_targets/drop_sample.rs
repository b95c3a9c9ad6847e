//! Any bytes as a drop-log copy: the first byte says how long the NFLOG
//! prefix is, the rest is the packet. Parse it, keep it in a window, report.
//! Nothing may panic.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use voipwall_detect::drops::{DropWindow, parse_sample};

static WINDOW: Mutex<Option<DropWindow>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n).min(rest.len());
    let (prefix, pkt) = rest.split_at(n);
    let at = 1_795_400_000_000 + u64::from(n as u8) * 7_000;
    if let Some(s) = parse_sample(prefix, pkt, at) {
        let mut w = WINDOW.lock().unwrap();
        let w = w.get_or_insert_with(DropWindow::new);
        w.push(s);
        let _ = w.report(at, 60, 10, 0);
        let _ = w.report(at, 5, 10, 0);
    }
});
