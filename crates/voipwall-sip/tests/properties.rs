//! Arbitrary bytes never panic the decoder, the framer or the peeler; and a
//! message rendered from random fields decodes back to those fields.
use proptest::prelude::*;
use voipwall_sip::{Message, frame, peel};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._+-]{0,15}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(&data);
        let _ = frame(&data);
        let _ = peel(&data);
        let _ = voipwall_sip::pcap::read(&data);
    }

    /// Capture-shaped input: a valid pcapng or pcap header, then random
    /// blocks of either byte order with plausible lengths.
    #[test]
    fn capture_shaped_input_never_panics(
        ng in any::<bool>(),
        be in any::<bool>(),
        blocks in prop::collection::vec((0u32..8, prop::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..12),
    ) {
        let w = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f: Vec<u8> = if ng {
            let mut h = vec![0x0a, 0x0d, 0x0d, 0x0a];
            h.extend_from_slice(&w(28));
            h.extend_from_slice(&w(0x1a2b_3c4d));
            h.extend_from_slice(&[0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
            h.extend_from_slice(&w(28));
            h
        } else {
            let mut h = w(0xa1b2_c3d4).to_vec();
            h.extend_from_slice(&[0; 16]);
            h.extend_from_slice(&w(101));
            h
        };
        for (kind, body, lie) in blocks {
            let len = if lie { body.len() as u32 } else { 12 + body.len() as u32 };
            f.extend_from_slice(&w(if ng { kind } else { kind * 1000 }));
            f.extend_from_slice(&w(len));
            f.extend_from_slice(&body);
            f.extend_from_slice(&w(len));
        }
        let _ = voipwall_sip::pcap::read(&f);
    }

    #[test]
    fn sip_shaped_input_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                Just("REGISTER sip:a@b SIP/2.0".to_string()), Just("SIP/2.0 401 x".to_string()),
                "[A-Za-z-]{1,12}: [ -~]{0,30}", "[fivtml]: [ -~]{0,30}", Just(String::new()), Just(" \tfolded".to_string()),
                "[ -~]{0,40}",
            ],
            0..20,
        ),
        crlf in any::<bool>(),
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let m = Message::parse(text.as_bytes());
        if let Ok(m) = m {
            let _ = (m.from_user(), m.to_user(), m.ruri_user(), m.cseq_parts(), m.via_sent_by(), m.via_branch(), m.auth_username(), m.expires_secs(), m.content_len());
        }
        let _ = frame(text.as_bytes());
    }

    #[test]
    fn rendered_message_decodes_back(
        method in "[A-Z]{3,9}", ruser in token(), fuser in token(), tuser in token(), host in "[a-z]{1,10}\\.example",
        call_id in "[A-Za-z0-9@.-]{1,30}", cseq in 1u32..1_000_000, agent in "[A-Za-z0-9 ./()-]{1,40}",
        auth_user in prop::option::of(token()), expires in prop::option::of(0u32..100_000),
        compact in any::<bool>(), body in "[ -~]{0,50}",
    ) {
        let (f, t, i, v, l) = if compact { ("f", "t", "i", "v", "l") } else { ("From", "To", "Call-ID", "Via", "Content-Length") };
        let mut s = format!("{method} sip:{ruser}@{host} SIP/2.0\r\n{v}: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK{cseq}\r\n");
        s += &format!("{f}: \"Display\" <sip:{fuser}@{host}>;tag=t1\r\n{t}: <sip:{tuser}@{host}>\r\n{i}: {call_id}\r\nCSeq: {cseq} {method}\r\n");
        s += &format!("User-Agent: {}\r\n", agent.trim());
        if let Some(u) = &auth_user {
            s += &format!("Authorization: Digest username=\"{u}\", realm=\"r\"\r\n");
        }
        if let Some(e) = expires {
            s += &format!("Expires: {e}\r\n");
        }
        s += &format!("{l}: {}\r\n\r\n{body}", body.len());
        let m = Message::parse(s.as_bytes()).unwrap();
        prop_assert_eq!(m.method(), Some(method.as_bytes()));
        prop_assert_eq!(m.ruri_user(), Some(ruser.as_bytes()));
        prop_assert_eq!(m.from_user(), Some(fuser.as_bytes()));
        prop_assert_eq!(m.to_user(), Some(tuser.as_bytes()));
        prop_assert_eq!(m.call_id, Some(call_id.as_bytes()));
        prop_assert_eq!(m.cseq_parts(), Some((u64::from(cseq), method.as_bytes())));
        prop_assert_eq!(m.agent(), Some(agent.trim().as_bytes()));
        prop_assert_eq!(m.auth_username(), auth_user.as_deref().map(str::as_bytes));
        prop_assert_eq!(m.expires_secs(), expires);
        prop_assert_eq!(m.via_sent_by(), Some(&b"203.0.113.9:5060"[..]));
        prop_assert_eq!(frame(s.as_bytes()).unwrap(), Some((0, s.len())));
    }
}
