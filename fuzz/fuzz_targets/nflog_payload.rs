//! Any bytes as an NFLOG packet copy, all the way through: peel the IP and
//! UDP/TCP headers, decode SIP, build the event and feed the detection
//! engine, as the daemon does. Nothing may panic.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use voipwall_detect::{Config, Engine, Event, RuleSet, Timestamp};
use voipwall_sip::{Message, peel};

static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let at = Timestamp(1_795_400_000_000 + u64::from(u16::from_le_bytes([data[0], data[1]])) * 100);
    let Ok(p) = peel(&data[2..]) else { return };
    let Ok(m) = Message::parse(p.payload) else { return };
    let remote = if m.status().is_none() { p.src } else { p.dst };
    if let Some(ev) = Event::from_message(remote, &m, "fuzz") {
        let mut g = ENGINE.lock().unwrap();
        let e = g.get_or_insert_with(|| {
            let mut cfg = Config::new(RuleSet::builtin());
            cfg.max_sources = 1000;
            Engine::new(cfg)
        });
        e.handle_timeout(at);
        e.handle_event(at, &ev);
        while e.poll_action().is_some() {}
        let _ = e.explain(remote, at);
    }
});
