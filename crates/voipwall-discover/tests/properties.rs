//! Arbitrary configuration text never panics any reader, and secrets found
//! are always judged without panicking.

use std::collections::BTreeMap;

use proptest::prelude::*;
use voipwall_discover::{Roots, discover, tokenize, weak};

/// Text built from the syntax the readers care about, so the generator
/// reaches deep into them rather than stopping at the first character.
fn config_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[".to_string()),
        Just("](!)".to_string()),
        Just("(+)".to_string()),
        Just("type=".to_string()),
        Just("transport\n".to_string()),
        Just("endpoint\n".to_string()),
        Just("identify\nmatch=".to_string()),
        Just("#include ".to_string()),
        Just(";--".to_string()),
        Just("--;".to_string()),
        Just("<profile name=\"p\">".to_string()),
        Just("<gateway name=\"g\">".to_string()),
        Just("<param name=\"sip-port\" value=\"$${x}\"/>".to_string()),
        Just("<X-PRE-PROCESS cmd=\"include\" data=\"*.xml\"/>".to_string()),
        Just("</".to_string()),
        Just("listen=udp:[".to_string()),
        Just("sip:".to_string()),
        Just(":".to_string()),
        Just("\\".to_string()),
        "[ -~]{0,12}",
        "\\PC{0,4}",
        Just("\n".to_string()),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn readers_never_panic(text in config_text(), which in 0usize..9) {
        let paths = [
            "/etc/asterisk/pjsip.conf", "/etc/asterisk/sip.conf", "/etc/asterisk/iax.conf",
            "/etc/asterisk/rtp.conf", "/etc/freeswitch/freeswitch.xml",
            "/etc/kamailio/kamailio.cfg", "/etc/kamailio/dispatcher.list",
            "/etc/kamailio/address.list", "/etc/ssh/sshd_config",
        ];
        let mut files = BTreeMap::new();
        files.insert(paths[which].to_string(), text.clone());
        // A second file the first can include, by name or glob.
        files.insert("/etc/freeswitch/a.xml".to_string(), text.clone());
        files.insert("/etc/kamailio/kamailio.cfg".to_string(), format!("listen=udp:1.2.3.4:5060\n{text}"));
        let d = discover(&files, &Roots::default());
        for s in &d.secrets {
            let _ = weak::check(&s.secret, &s.user);
        }
        let _ = tokenize(&text);
    }

    #[test]
    fn weak_check_never_panics(secret in "\\PC{0,40}", user in "\\PC{0,8}") {
        let w = weak::check(&secret, &user);
        let mut sorted = w.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(w, sorted, "reported once each, in order");
    }
}
