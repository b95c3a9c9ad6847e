//! Any bytes as a log line through every built-in format at once (prefix,
//! prefilter, templates), and, after a first newline, the rest as a
//! user-written template matched against the first line. Nothing may panic;
//! an address that comes out must be one the line spells.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use voipwall_logfmt::Format;
use voipwall_logfmt::prefix::Context;
use voipwall_logfmt::template::Template;

static ALL: LazyLock<Format> = LazyLock::new(|| Format::combine("all", Format::all_builtin()));

fuzz_target!(|data: &[u8]| {
    let (line, tmpl) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    if let Ok(l) = ALL.parse_line(line, &Context::default()) {
        let _ = l.event.src;
    }
    if let Some(t) = tmpl.and_then(|t| std::str::from_utf8(t).ok())
        && let Ok(t) = Template::compile(t)
    {
        let _ = t.captures(line, true);
        let _ = t.captures(line, false);
    }
});
