//! Any bytes as any PBX configuration file (the first byte picks which):
//! discovery reads it, includes and all, without panicking, and every
//! secret it finds is judged.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use voipwall_discover::{Roots, discover, weak};

const PATHS: [&str; 9] = [
    "/etc/asterisk/pjsip.conf",
    "/etc/asterisk/sip.conf",
    "/etc/asterisk/iax.conf",
    "/etc/asterisk/rtp.conf",
    "/etc/freeswitch/freeswitch.xml",
    "/etc/kamailio/kamailio.cfg",
    "/etc/kamailio/dispatcher.list",
    "/etc/kamailio/address.list",
    "/etc/ssh/sshd_config",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest).into_owned();
    let mut files = BTreeMap::new();
    files.insert(PATHS[usize::from(pick) % PATHS.len()].to_string(), text.clone());
    files.insert("/etc/asterisk/inc.conf".to_string(), text.clone());
    files.insert("/etc/freeswitch/inc.xml".to_string(), text.clone());
    files.entry("/etc/kamailio/kamailio.cfg".to_string()).or_insert_with(|| "port=5060\n".into());
    let d = discover(&files, &Roots::default());
    for s in &d.secrets {
        let _ = weak::check(&s.secret, &s.user);
    }
});
