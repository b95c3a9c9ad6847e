//! Any bytes as a feed's body, in each format: parse, refuse what must not
//! be applied, the kernel's changes from the last list. Nothing may panic, and nothing
//! taken may be wide, the host's own or protected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipwall_policy::feed::{ApibanPage, FeedFormat, Guard, changes, collapse, parse_apiban, parse_list};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let guard = Guard {
        own: vec!["203.0.113.1".parse().unwrap()],
        protected: vec!["198.51.100.0/24".parse().unwrap()],
    };
    let mut last = Vec::new();
    for f in [FeedFormat::Plain, FeedFormat::Voipbl] {
        let p = parse_list(f, &text, &guard);
        for n in &p.nets {
            assert!(guard.refuse(n).is_none());
        }
        let content = collapse(p.nets.iter().map(|n| (*n, None)).collect());
        let _ = changes(&last, &content);
        last = content;
    }
    if let Ok(ApibanPage::Page { parsed, .. }) = parse_apiban(&text, &guard) {
        for n in &parsed.nets {
            assert!(guard.refuse(n).is_none());
        }
    }
});
