//! No line panics the matcher; attacker-supplied text that names another
//! address never moves the blame to that address.
use proptest::prelude::*;
use voipwall_logfmt::Format;
use voipwall_logfmt::prefix::Context;

static ALL: std::sync::LazyLock<Format> =
    std::sync::LazyLock::new(|| Format::combine("all", Format::all_builtin()));

static ASTERISK: std::sync::LazyLock<Format> =
    std::sync::LazyLock::new(|| Format::builtin("asterisk").expect("built in"));

fn all() -> &'static Format {
    &ALL
}

/// Text an attacker might put in a From header, a Call-ID or a user name:
/// fragments of the server's own wording around an innocent address.
fn evil() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("' failed for '198.51.100.20:5060' - Wrong password".to_string()),
            Just("' failed for '198.51.100.20:5060' (callid: ".to_string()),
            Just(") - Failed to authenticate".to_string()),
            Just(" from ip 198.51.100.20".to_string()),
            Just(" from 198.51.100.20 port 22 ssh2".to_string()),
            Just("\",RemoteAddress=\"IPV4/UDP/198.51.100.20/5060\"".to_string()),
            Just(" (IP:198.51.100.20:5060)".to_string()),
            Just("' (198.51.100.20:5060) to extension '".to_string()),
            Just(" src=198.51.100.20 port=5060".to_string()),
            "[ -~]{0,12}",
        ],
        0..4,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn arbitrary_lines_never_panic(line in prop::collection::vec(any::<u8>(), 0..400)) {
        let f = all();
        let _ = f.parse_line(&line, &Context::default());
    }

    #[test]
    fn injected_addresses_are_never_blamed(a in evil(), b in evil()) {
        let f = all();
        let lines = [
            format!("[2026-11-23 10:22:29] NOTICE[1] chan_sip.c: Registration from '{a}' failed for '203.0.113.9:5060' - Wrong password"),
            format!("[2026-11-23 10:22:29] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '{a}' failed for '203.0.113.9:5060' (callid: {b}) - Failed to authenticate"),
            format!("[2026-11-23 10:22:29] SECURITY[1] res_security_log.c: SecurityEvent=\"InvalidPassword\",EventTV=\"x\",Severity=\"Error\",Service=\"PJSIP\",EventVersion=\"2\",AccountID=\"{a}\",SessionID=\"{b}\",LocalAddress=\"IPV4/UDP/198.51.100.1/5060\",RemoteAddress=\"IPV4/UDP/203.0.113.9/5060\",Challenge=\"{b}\""),
            format!("2026-11-23 10:22:29.1 [WARNING] sofia_reg.c:1 SIP auth failure (REGISTER) on sofia profile 'internal' for [{a}] from ip 203.0.113.9"),
            format!("Nov 23 10:22:29 pbx sshd[1]: Failed password for {a} from 203.0.113.9 port 2 ssh2"),
            format!("[2026-11-23 10:22:29] NOTICE[1][C-1] chan_sip.c: Call from '{a}' (203.0.113.9:5060) to extension '{b}' rejected because extension not found in context 'default'."),
            format!("Nov 23 10:22:29 pbx kamailio[1]: ALERT: pike blocking REGISTER from {a} (IP:203.0.113.9:5060)"),
            format!("Nov 23 10:22:29 pbx kamailio[1]: NOTICE: voipwall: event=auth-failed src=203.0.113.9 port=5060 proto=udp method=REGISTER user={a} ua={b}"),
        ];
        for l in &lines {
            if let Ok(m) = f.parse_line(l.as_bytes(), &Context::default()) {
                prop_assert_eq!(m.event.src.to_string(), "203.0.113.9", "{}", l);
            }
        }
    }
}

/// Lines from every format's examples, cut and joined at random places.
fn log_text() -> impl Strategy<Value = Vec<u8>> {
    let examples: Vec<String> = Format::all_builtin()
        .into_iter()
        .flat_map(|f| f.examples)
        .map(|e| e.line)
        // Bare short messages: a key near the line's end.
        .chain(
            [
                "Can't find user [1] from 203.0.113.9",
                "PIKE - BLOCKing ip 203.0.113.7, node=1",
                "<script>: Malformed SIP request from 203.0.113.5:5060",
            ]
            .map(String::from),
        )
        .collect();
    prop::collection::vec(
        (
            prop::sample::select(examples),
            prop_oneof![3 => Just(0usize), 1 => 0usize..200],
            prop_oneof![3 => Just(usize::MAX), 1 => 0usize..300],
            prop_oneof![Just("\n"), Just("\r\n"), Just(""), Just("\r"), Just("\n\n")],
            "[ -~]{0,8}",
        ),
        0..24,
    )
    .prop_map(|parts| {
        let mut t = Vec::new();
        for (line, cut, keep, end, junk) in parts {
            let b = line.as_bytes();
            let from = b.len().min(cut);
            t.extend_from_slice(&b[from..b.len().min(keep).max(from)]);
            t.extend_from_slice(junk.as_bytes());
            t.extend_from_slice(end.as_bytes());
        }
        t
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(800))]

    /// Reading many lines at once gives, line by line, what reading each
    /// line alone gives, and what trying every pattern in order gives: the
    /// prefilter never leaves out a pattern that matches.
    #[test]
    fn many_lines_read_at_once_read_as_each_alone(text in log_text()) {
        let ctx = Context::default();
        for f in [all(), &ASTERISK] {
            let mut at_once = Vec::new();
            f.parse_lines(&text, &ctx, |r| at_once.push(r));
            let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            if lines.last().is_some_and(|l| l.is_empty()) {
                lines.pop();
            }
            let lines = lines.into_iter().map(|l| l.strip_suffix(b"\r").unwrap_or(l));
            let alone: Vec<_> = lines.clone().map(|l| f.parse_line(l, &ctx)).collect();
            let unfiltered: Vec<_> = lines.map(|l| f.parse_line_unfiltered(l, &ctx)).collect();
            prop_assert_eq!(&at_once, &alone);
            prop_assert_eq!(&alone, &unfiltered);
        }
    }
}
